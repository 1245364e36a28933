/*
 * ngx_http_hodei_zone.c — the HTTP zone and the log-phase handler that counts into it:
 * hodei_http_requests_total and hodei_http_request_duration_seconds, shared by every worker.
 *
 * A fixed open-addressing table of series in an nginx shared zone.  A request whose series
 * exists costs three atomic adds after finding its slot: in its location's per-worker cache
 * when the endpoint label is fixed, else by a lock-free probe.  Only the first request of a
 * new series takes the zone's mutex, to claim a free slot.  A slot's label key is written before
 * its state is published and never changes afterwards, so readers need no lock.  Past the
 * table's capacity requests fold into the __overflow__ series instead of failing.
 *
 * Beside the table, an append-only index lists the occupied slots in the order they were
 * claimed: a scrape walks only the live series, so its cost follows them and not the zone's
 * size.  The claimer writes the entry, then publishes it by raising nseries (release); a
 * reader loads nseries (acquire) and reads that many entries.
 */
#include "ngx_http_hodei_module.h"


#define NGX_HTTP_HODEI_ZONE_MAGIC    0x454e4f5a49444f48ull   /* "HODIZONE" */
/* bump when ngx_http_hodei_zone_sh_t or ngx_http_hodei_series_t change */
#define NGX_HTTP_HODEI_ZONE_VERSION  2


/* What the log phase counts for one request. */
typedef struct {
    ngx_uint_t                  method;        /* method label index */
    ngx_uint_t                  status;
    u_char                     *endpoint;      /* sanitised, 1..HODEI_LABEL_VALUE_MAX bytes */
    size_t                      endpoint_len;
    uint32_t                    endpoint_hash;
} ngx_http_hodei_request_t;


typedef struct {
    ngx_atomic_t                state;          /* 0 free, 1 in use */
    ngx_atomic_t                count;
    double                      created;        /* unix seconds */
    uint32_t                    hash;
    uint16_t                    status;
    uint8_t                     method;
    uint8_t                     endpoint_len;
    u_char                      endpoint[HODEI_LABEL_VALUE_MAX];
} ngx_http_hodei_series_t;


struct ngx_http_hodei_zone_sh_s {
    uint64_t                    magic;
    uint32_t                    version;
    uint32_t                    nslots;
    uint64_t                    fingerprint;    /* bucket layout the counters below use */
    uint32_t                    max_series;     /* slots that may be used: 3/4 of them */
    uint32_t                    generation;     /* changes when a reload re-initialises */
    double                      created;
    ngx_atomic_t                nseries;        /* entries of the index in use */
    ngx_atomic_t                duration_sum_ms;
    ngx_atomic_t                duration_bucket[HODEI_BUCKETS_MAX + 1];
    ngx_http_hodei_series_t     overflow;       /* every label "__overflow__" */
    ngx_http_hodei_series_t     series[1];      /* nslots, then uint32_t index[nslots] */
};


/* The occupied slots' numbers, in the order they were claimed. */
#define ngx_http_hodei_zone_index(sh)  ((uint32_t *) &(sh)->series[(sh)->nslots])


#if (HODEI_LABEL_VALUE_MAX > 255)
#error "ngx_http_hodei_series_t.endpoint_len is one byte"
#endif


#if defined(__ATOMIC_ACQUIRE)

#define ngx_http_hodei_load_acquire(p)   __atomic_load_n(p, __ATOMIC_ACQUIRE)

#else

static ngx_inline ngx_atomic_uint_t
ngx_http_hodei_load_acquire(ngx_atomic_t *p)
{
    ngx_atomic_uint_t  v;

    v = *p;
    ngx_memory_barrier();

    return v;
}

#endif


static double
ngx_http_hodei_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (double) tp->sec + tp->msec / 1000.0;
}


/* ---- configuration ------------------------------------------------------------------- */

void
ngx_http_hodei_zone_set_buckets(ngx_http_hodei_zone_t *zone, double *buckets,
    ngx_uint_t n)
{
    uint64_t        h;
    ngx_uint_t      i, k;
    ngx_msec_int_t  ms;

    zone->nbuckets = n;

    /* FNV-1a over the bounds: a reload with other buckets must not reuse the counters */
    h = 0xcbf29ce484222325ull ^ n;

    for (i = 0; i < n; i++) {
        zone->buckets[i] = buckets[i];

        for (k = 0; k < sizeof(double); k++) {
            h = (h ^ ((u_char *) &buckets[i])[k]) * 0x100000001b3ull;
        }

        /* the largest whole number of ms that "ms / 1000.0 <= bound" still admits */
        ms = (ngx_msec_int_t) (buckets[i] * 1000);

        while (ms >= 0 && ms / 1000.0 > buckets[i]) {
            ms--;
        }

        while ((ms + 1) / 1000.0 <= buckets[i]) {
            ms++;
        }

        zone->bucket_ms[i] = ms;
    }

    zone->fingerprint = h;

    /* bounds increase: each ms's bucket is at or after the previous ms's */
    for (ms = 0, i = 0; ms < NGX_HTTP_HODEI_MS_TABLE; ms++) {

        while (i < n && ms > zone->bucket_ms[i]) {
            i++;
        }

        zone->ms_bucket[ms] = (uint8_t) i;
    }
}


ngx_int_t
ngx_http_hodei_zone_init(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_hodei_zone_t  *ozone = data;

    size_t                     size;
    uint32_t                   generation;
    ngx_uint_t                 nslots;
    ngx_slab_pool_t           *shpool;
    ngx_http_hodei_zone_t     *zone;
    ngx_http_hodei_zone_sh_t  *sh;

    zone = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;
    zone->shpool = shpool;
    generation = 1;

    if (ozone) {
        /* a reload kept the zone (same name and size) */
        sh = ozone->sh;

        if (sh->magic == NGX_HTTP_HODEI_ZONE_MAGIC
            && sh->version == NGX_HTTP_HODEI_ZONE_VERSION
            && sh->fingerprint == zone->fingerprint)
        {
            zone->sh = sh;
            return NGX_OK;
        }

        ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                      "hodei_http_zone \"%V\": the bucket layout changed, "
                      "HTTP counters start again from zero", &shm_zone->shm.name);

        if (sh->magic == NGX_HTTP_HODEI_ZONE_MAGIC) {
            /* never 0: a location's cache starts out as generation 0 */
            generation = (sh->generation + 1) ? sh->generation + 1 : 1;
        }

        ngx_slab_free(shpool, sh);
    }

    if (shm_zone->shm.exists) {
        zone->sh = shpool->data;
        return NGX_OK;
    }

    /* the whole zone is one table: everything the slab allocator has left */
    size = shpool->pfree * ngx_pagesize;

    if (size < offsetof(ngx_http_hodei_zone_sh_t, series)
               + 4 * (sizeof(ngx_http_hodei_series_t) + sizeof(uint32_t)))
    {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "hodei_http_zone \"%V\" is too small", &shm_zone->shm.name);
        return NGX_ERROR;
    }

    sh = ngx_slab_alloc(shpool, size);
    if (sh == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(sh, size);

    nslots = (size - offsetof(ngx_http_hodei_zone_sh_t, series))
             / (sizeof(ngx_http_hodei_series_t) + sizeof(uint32_t));

    sh->magic = NGX_HTTP_HODEI_ZONE_MAGIC;
    sh->version = NGX_HTTP_HODEI_ZONE_VERSION;
    sh->nslots = (uint32_t) nslots;
    sh->fingerprint = zone->fingerprint;
    /* a quarter of the slots stays free: probes stay short and always end */
    sh->max_series = (uint32_t) (nslots - nslots / 4);
    sh->generation = generation;
    sh->created = ngx_http_hodei_now();
    sh->overflow.created = sh->created;

    shpool->data = sh;
    zone->sh = sh;

    ngx_log_error(NGX_LOG_INFO, shm_zone->shm.log, 0,
                  "hodei_http_zone \"%V\": room for %uD series",
                  &shm_zone->shm.name, sh->max_series);

    return NGX_OK;
}


/* ---- counting ---------------------------------------------------------------------------- */

static ngx_inline uint32_t
ngx_http_hodei_key_hash(ngx_http_hodei_request_t *req)
{
    uint32_t  h;

    h = req->endpoint_hash
        ^ (uint32_t) ((req->status << 5 | req->method) * 0x9e3779b1u);

    /* murmur3's finaliser: the slot index takes the high bits */
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;

    return h;
}


/* The slot holding the request's series, or the free slot where it belongs. */
static ngx_http_hodei_series_t *
ngx_http_hodei_zone_probe(ngx_http_hodei_zone_sh_t *sh, uint32_t hash,
    ngx_http_hodei_request_t *req)
{
    uint32_t                  i;
    ngx_http_hodei_series_t  *s;

    i = (uint32_t) (((uint64_t) hash * sh->nslots) >> 32);

    for ( ;; ) {
        s = &sh->series[i];

        if (ngx_http_hodei_load_acquire(&s->state) == 0) {
            return s;
        }

        if (s->hash == hash
            && s->method == req->method
            && s->status == req->status
            && s->endpoint_len == req->endpoint_len
            && ngx_memcmp(s->endpoint, req->endpoint, req->endpoint_len) == 0)
        {
            return s;
        }

        /* at most max_series < nslots slots are in use: a free one ends the loop */
        i = (i + 1 == sh->nslots) ? 0 : i + 1;
    }
}


static ngx_http_hodei_series_t *
ngx_http_hodei_zone_insert(ngx_http_hodei_zone_t *zone, uint32_t hash,
    ngx_http_hodei_request_t *req)
{
    ngx_http_hodei_series_t   *s;
    ngx_http_hodei_zone_sh_t  *sh;

    sh = zone->sh;

    /* once full, stay lock-free: nseries only grows */
    if (sh->nseries >= sh->max_series) {
        return &sh->overflow;
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    /* only lock holders fill slots: a free slot found now stays free until we fill it */
    s = ngx_http_hodei_zone_probe(sh, hash, req);

    if (s->state == 0) {
        if (sh->nseries >= sh->max_series) {
            s = &sh->overflow;

        } else {
            s->hash = hash;
            s->method = (uint8_t) req->method;
            s->status = (uint16_t) req->status;
            s->endpoint_len = (uint8_t) req->endpoint_len;
            ngx_memcpy(s->endpoint, req->endpoint, req->endpoint_len);
            s->created = ngx_http_hodei_now();
            s->count = 0;

            ngx_memory_barrier();
            s->state = 1;

            ngx_http_hodei_zone_index(sh)[sh->nseries] = (uint32_t) (s - sh->series);
            ngx_memory_barrier();
            sh->nseries++;
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return s;
}


/* The request's series: found in the table, or put in a free slot. */
static ngx_http_hodei_series_t *
ngx_http_hodei_zone_find(ngx_http_hodei_zone_t *zone, ngx_http_hodei_request_t *req)
{
    uint32_t                  hash;
    ngx_http_hodei_series_t  *s;

    hash = ngx_http_hodei_key_hash(req);

    s = ngx_http_hodei_zone_probe(zone->sh, hash, req);

    if (s->state == 0) {
        s = ngx_http_hodei_zone_insert(zone, hash, req);
    }

    return s;
}


/* The request's duration bucket: the index of the first bound that holds ms (ms >= 0). */
static ngx_inline ngx_uint_t
ngx_http_hodei_zone_bucket(ngx_http_hodei_zone_t *zone, ngx_msec_int_t ms)
{
    ngx_uint_t  i;

    if (ms < NGX_HTTP_HODEI_MS_TABLE) {
        return zone->ms_bucket[ms];
    }

    /* a slow request: on from where the table ends */
    for (i = zone->ms_bucket[NGX_HTTP_HODEI_MS_TABLE - 1]; i < zone->nbuckets; i++) {
        if (ms <= zone->bucket_ms[i]) {
            break;
        }
    }

    return i;
}


/* Counts request r into series s and its duration, as $request_time, into the histogram. */
static ngx_inline void
ngx_http_hodei_zone_observe(ngx_http_hodei_zone_t *zone, ngx_http_hodei_series_t *s,
    ngx_http_request_t *r)
{
    ngx_time_t                *tp;
    ngx_msec_int_t             ms;
    ngx_http_hodei_zone_sh_t  *sh;

    tp = ngx_timeofday();
    ms = (ngx_msec_int_t)
             ((tp->sec - r->start_sec) * 1000 + (tp->msec - r->start_msec));
    ms = ngx_max(ms, 0);

    sh = zone->sh;

    (void) ngx_atomic_fetch_add(&s->count, 1);
    (void) ngx_atomic_fetch_add(&sh->duration_bucket[ngx_http_hodei_zone_bucket(zone, ms)],
                                1);
    (void) ngx_atomic_fetch_add(&sh->duration_sum_ms, ms);
}


/*
 * The method label index.  nginx sets exactly one bit in r->method (NGX_HTTP_UNKNOWN is
 * 1 << 0, OTHER's index): the bit's position is the index, bits past the known methods are
 * OTHER.
 */
static ngx_inline ngx_uint_t
ngx_http_hodei_method_index(ngx_uint_t method)
{
    ngx_uint_t  i;

    /* the extra bit keeps the count defined for 0 and ends it at the first unknown bit */
    i = __builtin_ctzll((unsigned long long) method
                        | 1ull << NGX_HTTP_HODEI_METHODS);

    return (i < NGX_HTTP_HODEI_METHODS) ? i : 0;
}


/* ---- the log phase ---------------------------------------------------------------------- */

/*
 * The log handler's fast path is a cache hit: the rare paths below are functions of their
 * own, reached by tail calls, so that the handler keeps no stack frame of its own.
 */
#if defined(__GNUC__)
#define ngx_http_hodei_noinline  __attribute__((noinline))
#else
#define ngx_http_hodei_noinline
#endif


static ngx_inline ngx_http_hodei_cache_t *
ngx_http_hodei_cache_slot(ngx_http_hodei_loc_conf_t *hlcf, uint64_t key)
{
    /* Fibonacci hashing: the top bits mix status and method */
    return &hlcf->cache[(key * 0x9e3779b97f4a7c15ull) >> 61];
}


#if (NGX_HTTP_HODEI_CACHE != 8)
#error "ngx_http_hodei_cache_slot() takes the hash's top 3 bits"
#endif

/* the key of an empty cache slot: no request has a status of 2^32 - 1 */
#define NGX_HTTP_HODEI_NO_KEY  ((uint64_t) -1)


/* Counts a request whose endpoint label has variables. */
static ngx_http_hodei_noinline ngx_int_t
ngx_http_hodei_count_dynamic(ngx_http_request_t *r, ngx_http_hodei_loc_conf_t *hlcf,
    ngx_uint_t status)
{
    u_char                     buf[HODEI_LABEL_VALUE_MAX];
    ngx_str_t                  value;
    ngx_http_hodei_series_t   *s;
    ngx_http_hodei_request_t   req;

    if (ngx_http_complex_value(r, hlcf->endpoint, &value) != NGX_OK) {
        value.len = 0;
    }

    req.method = ngx_http_hodei_method_index(r->method);
    req.status = status;
    req.endpoint = buf;
    req.endpoint_len = ngx_http_hodei_label_sanitise(buf, value.data, value.len);
    req.endpoint_hash = ngx_http_hodei_label_hash(buf, req.endpoint_len);

    s = ngx_http_hodei_zone_find(hlcf->zone, &req);

    ngx_http_hodei_zone_observe(hlcf->zone, s, r);

    return NGX_OK;
}


/* Counts a request with the location's fixed label that its cache does not hold. */
static ngx_http_hodei_noinline ngx_int_t
ngx_http_hodei_count_uncached(ngx_http_request_t *r, ngx_http_hodei_loc_conf_t *hlcf,
    uint64_t key, ngx_uint_t status)
{
    uint32_t                   generation;
    ngx_uint_t                 i;
    ngx_http_hodei_cache_t    *c;
    ngx_http_hodei_series_t   *s;
    ngx_http_hodei_request_t   req;

    /*
     * Read before the probe: should a reload re-initialise the zone meanwhile, the slot is
     * cached under the old generation and probed for again.
     */
    generation = hlcf->zone->sh->generation;
    ngx_memory_barrier();

    if (hlcf->cache_generation != generation) {
        /* slots of another generation, or none yet */
        for (i = 0; i < NGX_HTTP_HODEI_CACHE; i++) {
            hlcf->cache[i].key = NGX_HTTP_HODEI_NO_KEY;
        }

        hlcf->cache_generation = generation;
    }

    req.method = ngx_http_hodei_method_index(r->method);
    req.status = status;
    req.endpoint = hlcf->endpoint_label.data;
    req.endpoint_len = hlcf->endpoint_label.len;
    req.endpoint_hash = hlcf->endpoint_hash;

    s = ngx_http_hodei_zone_find(hlcf->zone, &req);

    c = ngx_http_hodei_cache_slot(hlcf, key);
    c->series = s;
    c->key = key;

    ngx_http_hodei_zone_observe(hlcf->zone, s, r);

    return NGX_OK;
}


ngx_int_t
ngx_http_hodei_log_handler(ngx_http_request_t *r)
{
    uint64_t                    key;
    ngx_uint_t                  status;
    ngx_http_hodei_cache_t     *c;
    ngx_http_hodei_zone_t      *zone;
    ngx_http_hodei_loc_conf_t  *hlcf;

    if (r != r->main) {
        return NGX_OK;
    }

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_hodei_module);
    zone = hlcf->zone;

    if (zone == NULL) {
        return NGX_OK;
    }

    /* as ngx_http_log_module's $status */

    if (r->err_status) {
        status = r->err_status;

    } else if (r->headers_out.status) {
        status = r->headers_out.status;

    } else if (r->http_version == NGX_HTTP_VERSION_9) {
        status = 9;

    } else {
        status = 0;
    }

    if (hlcf->endpoint) {
        return ngx_http_hodei_count_dynamic(r, hlcf, status);
    }

    /* a status is below 1000 and a method bit below 1 << 32: the key is exact */
    key = (uint64_t) status << 32 | (uint32_t) r->method;
    c = ngx_http_hodei_cache_slot(hlcf, key);

    /* the zone's generation is never 0: a location's first request goes past this */
    if (c->key != key || hlcf->cache_generation != zone->sh->generation) {
        return ngx_http_hodei_count_uncached(r, hlcf, key, status);
    }

    ngx_http_hodei_zone_observe(zone, c->series, r);

    return NGX_OK;
}


/* ---- the scrape ------------------------------------------------------------------------ */

ngx_uint_t
ngx_http_hodei_zone_nseries(ngx_http_hodei_zone_t *zone)
{
    return ngx_http_hodei_load_acquire(&zone->sh->nseries);
}


size_t
ngx_http_hodei_zone_snapshot_bound(ngx_http_hodei_zone_t *zone, ngx_uint_t nseries)
{
    uint32_t  caps[HODEI_F_COUNT];

    ngx_memzero(caps, sizeof(caps));

    caps[HODEI_F_HTTP_REQUESTS_TOTAL] = nseries + 1;
    caps[HODEI_F_HTTP_REQUEST_DURATION_SECONDS] = 1;
    caps[HODEI_F_METRICS_LABEL_OVERFLOW_TOTAL] = 1;

    return hodei_payload_bound(caps);
}


/* Adds the first nseries series of the index to the current family. */
static void
ngx_http_hodei_zone_add_requests(ngx_http_hodei_zone_sh_t *sh, ngx_uint_t nseries,
    struct hodei_builder *b)
{
    u_char                    endpoint[HODEI_LABEL_VALUE_MAX + 1];
    u_char                    status[NGX_INT_T_LEN + 1];
    size_t                    len;
    uint32_t                  slot, *index;
    ngx_uint_t                i;
    const char               *labels[3];
    ngx_http_hodei_series_t  *s;

    labels[1] = (const char *) endpoint;
    labels[2] = (const char *) status;

    index = ngx_http_hodei_zone_index(sh);

    for (i = 0; i < nseries; i++) {
        slot = index[i];

        /* never let one damaged entry cost the whole family */
        if (slot >= sh->nslots) {
            continue;
        }

        s = &sh->series[slot];
        len = s->endpoint_len;

        if (len == 0 || len > HODEI_LABEL_VALUE_MAX
            || s->method >= NGX_HTTP_HODEI_METHODS
            || !hodei_utf8_valid(s->endpoint, len))
        {
            continue;
        }

        ngx_memcpy(endpoint, s->endpoint, len);
        endpoint[len] = '\0';

        /* as $status prints it */
        ngx_sprintf(status, "%03ui%Z", (ngx_uint_t) s->status);

        labels[0] = ngx_http_hodei_method_names[s->method];

        (void) hodei_builder_scalar(b, labels, s->created, (double) s->count);
    }
}


ngx_int_t
ngx_http_hodei_zone_snapshot(ngx_http_hodei_zone_t *zone, ngx_uint_t nseries, void *buf,
    size_t size, struct hodei_snapshot *snap, ngx_log_t *log)
{
    double                     sum;
    size_t                     len;
    uint64_t                   n, *bucket;
    ngx_uint_t                 i;
    const char                *why, *labels[3];
    struct hodei_builder       b;
    ngx_http_hodei_zone_sh_t  *sh;

    sh = zone->sh;

    hodei_builder_init(&b, buf, size, ngx_http_hodei_now());

    hodei_builder_family(&b, HODEI_F_HTTP_REQUESTS_TOTAL);

    ngx_http_hodei_zone_add_requests(sh, nseries, &b);

    n = sh->overflow.count;

    if (n) {
        labels[0] = HODEI_OVERFLOW_LABEL;
        labels[1] = HODEI_OVERFLOW_LABEL;
        labels[2] = HODEI_OVERFLOW_LABEL;

        (void) hodei_builder_scalar(&b, labels, sh->overflow.created, (double) n);
    }

    hodei_builder_family_buckets(&b, HODEI_F_HTTP_REQUEST_DURATION_SECONDS,
                                 zone->buckets, zone->nbuckets);

    bucket = hodei_builder_series(&b, NULL, sh->created);

    if (bucket) {
        /* the record holds double sum, then u64 bucket[nbuckets + 1] */
        sum = sh->duration_sum_ms / 1000.0;
        ngx_memcpy(bucket, &sum, sizeof(double));
        bucket++;

        for (i = 0; i <= zone->nbuckets; i++) {
            bucket[i] = sh->duration_bucket[i];
        }
    }

    if (n) {
        labels[0] = hodei_families[HODEI_F_HTTP_REQUESTS_TOTAL].name;

        hodei_builder_family(&b, HODEI_F_METRICS_LABEL_OVERFLOW_TOTAL);
        (void) hodei_builder_scalar(&b, labels, sh->overflow.created, (double) n);
    }

    len = hodei_builder_finish(&b);

    if (len == 0) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "hodei_http_zone \"%V\": snapshot does not fit in %uz bytes",
                      &zone->shm_zone->shm.name, size);
        return NGX_ERROR;
    }

    if (hodei_snapshot_validate(buf, len, snap, &why) != 0) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "hodei_http_zone \"%V\": invalid snapshot: %s",
                      &zone->shm_zone->shm.name, why);
        return NGX_ERROR;
    }

    return NGX_OK;
}
