/*
 * ngx_http_hodei_module.h — what the module's three parts share: the configuration, the
 * HTTP zone (log phase → shared counters) and the scrape handler (segment + zone → exposition).
 */
#ifndef NGX_HTTP_HODEI_MODULE_H
#define NGX_HTTP_HODEI_MODULE_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "hodei_schema.h"
#include "hodei_snapshot.h"


/* The method label: index 0 is OTHER, index i names the method whose nginx bit is 1 << i. */
#define NGX_HTTP_HODEI_METHODS  17

/* Requests faster than this many ms find their duration bucket in a table. */
#define NGX_HTTP_HODEI_MS_TABLE 1024


typedef struct ngx_http_hodei_zone_sh_s  ngx_http_hodei_zone_sh_t;

/* One per hodei_http_zone and configuration cycle; shm_zone->data. */
typedef struct {
    ngx_http_hodei_zone_sh_t   *sh;
    ngx_slab_pool_t            *shpool;
    ngx_shm_zone_t             *shm_zone;
    ngx_uint_t                  nbuckets;
    double                      buckets[HODEI_BUCKETS_MAX];   /* seconds */
    /* the largest request time, in ms, that each bucket holds: $request_time <= bound */
    ngx_msec_int_t              bucket_ms[HODEI_BUCKETS_MAX];
    uint64_t                    fingerprint;                  /* of the bucket layout */
    /* the bucket of each request time below NGX_HTTP_HODEI_MS_TABLE ms */
    uint8_t                     ms_bucket[NGX_HTTP_HODEI_MS_TABLE];
} ngx_http_hodei_zone_t;

#if (HODEI_BUCKETS_MAX > 255)
#error "ngx_http_hodei_zone_t.ms_bucket holds bucket indexes in one byte"
#endif


typedef struct {
    ngx_str_t                   segment;       /* NUL-terminated */
    ngx_msec_t                  stale_after;
    ngx_http_hodei_zone_t      *zone;          /* NULL: no HTTP metrics */
    ngx_array_t                *buckets;       /* of double; NULL: the schema's */
} ngx_http_hodei_main_conf_t;


/*
 * Per worker and location: the zone slots its requests were last counted into, so that a
 * location with a fixed label skips the table probe.  Slot keys never change once set; the
 * zone's generation tells cached slots from ones re-initialised by a reload.  The key is
 * made of the request's own status and method bit: a hit needs no method label index.
 */
#define NGX_HTTP_HODEI_CACHE    8

typedef struct {
    uint64_t                    key;           /* status << 32 | r->method */
    void                       *series;
} ngx_http_hodei_cache_t;


typedef struct {
    ngx_flag_t                  metrics;       /* hodei_http_metrics */
    ngx_flag_t                  native_histograms;  /* hodei_native_histograms */
    ngx_http_hodei_zone_t      *zone;          /* NULL: requests here are not counted */
    /* hodei_http_endpoint with variables; NULL when the label is known at configuration */
    ngx_http_complex_value_t   *endpoint;
    ngx_str_t                   endpoint_label; /* sanitised; data NULL until known */
    uint32_t                    endpoint_hash;
    ngx_uint_t                  endpoint_configured; /* set by hodei_http_endpoint, inherited */
    /* fixed labels only: the zone generation the slots belong to; 0 (none) until used */
    uint32_t                    cache_generation;
    ngx_http_hodei_cache_t      cache[NGX_HTTP_HODEI_CACHE];
} ngx_http_hodei_loc_conf_t;


extern ngx_module_t  ngx_http_hodei_module;
extern const char   *ngx_http_hodei_method_names[NGX_HTTP_HODEI_METHODS];


/* ngx_http_hodei_module.c */
size_t ngx_http_hodei_label_sanitise(u_char *dst, u_char *src, size_t len);
uint32_t ngx_http_hodei_label_hash(u_char *label, size_t len);

/* ngx_http_hodei_zone.c */
ngx_int_t ngx_http_hodei_zone_init(ngx_shm_zone_t *shm_zone, void *data);
void ngx_http_hodei_zone_set_buckets(ngx_http_hodei_zone_t *zone, double *buckets,
    ngx_uint_t n);
ngx_int_t ngx_http_hodei_log_handler(ngx_http_request_t *r);
/* The zone's live series (acquire): a snapshot of that many needs at most the bound. */
ngx_uint_t ngx_http_hodei_zone_nseries(ngx_http_hodei_zone_t *zone);
size_t ngx_http_hodei_zone_snapshot_bound(ngx_http_hodei_zone_t *zone, ngx_uint_t nseries);
/* Builds and validates a snapshot of the first nseries series into buf. */
ngx_int_t ngx_http_hodei_zone_snapshot(ngx_http_hodei_zone_t *zone, ngx_uint_t nseries,
    void *buf, size_t size, struct hodei_snapshot *snap, ngx_log_t *log);

/* ngx_http_hodei_scrape.c */
ngx_int_t ngx_http_hodei_scrape_handler(ngx_http_request_t *r);
void ngx_http_hodei_scrape_exit(void);

#endif /* NGX_HTTP_HODEI_MODULE_H */
