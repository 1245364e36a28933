/*
 * ngx_http_hodei_module.c — directives, configuration and the log-phase handler.
 *
 * The scrape handler (ngx_http_hodei_scrape.c) serves the daemon's segment and the HTTP zone
 * through the one renderer of shm/; the zone (ngx_http_hodei_zone.c) holds the counters every
 * worker adds to.  Everything the log phase needs is worked out here, at configuration time.
 */
#include "ngx_http_hodei_module.h"

#include <math.h>
#include <stdlib.h>


#define NGX_HTTP_HODEI_SEGMENT_DEFAULT   "/dev/shm/hodei-metrics"
#define NGX_HTTP_HODEI_STALE_DEFAULT     10000
/* Bucket bounds above this many seconds cannot be told apart from +Inf by any request. */
#define NGX_HTTP_HODEI_BUCKET_MAX_SEC    1e9


static ngx_int_t ngx_http_hodei_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_hodei_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_hodei_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_hodei_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_hodei_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child);
static char *ngx_http_hodei_zone_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_hodei_buckets_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_hodei_endpoint_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_hodei_metrics_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_hodei_set_label(ngx_conf_t *cf,
    ngx_http_hodei_loc_conf_t *hlcf, ngx_str_t *value);
static void ngx_http_hodei_exit_process(ngx_cycle_t *cycle);


const char  *ngx_http_hodei_method_names[NGX_HTTP_HODEI_METHODS] = {
    "OTHER", "GET", "HEAD", "POST", "PUT", "DELETE", "MKCOL", "COPY", "MOVE",
    "OPTIONS", "PROPFIND", "PROPPATCH", "LOCK", "UNLOCK", "PATCH", "TRACE",
    "CONNECT"
};


static ngx_command_t  ngx_http_hodei_commands[] = {

    { ngx_string("hodei_segment"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hodei_main_conf_t, segment),
      NULL },

    { ngx_string("hodei_http_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_hodei_zone_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hodei_http_duration_buckets"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_hodei_buckets_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hodei_stale_after"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hodei_main_conf_t, stale_after),
      NULL },

    { ngx_string("hodei_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_hodei_metrics_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hodei_http_metrics"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_hodei_loc_conf_t, metrics),
      NULL },

    { ngx_string("hodei_native_histograms"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_hodei_loc_conf_t, native_histograms),
      NULL },

    { ngx_string("hodei_http_endpoint"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_hodei_endpoint_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_hodei_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_hodei_postconfiguration,      /* postconfiguration */

    ngx_http_hodei_create_main_conf,       /* create main configuration */
    ngx_http_hodei_init_main_conf,         /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_hodei_create_loc_conf,        /* create location configuration */
    ngx_http_hodei_merge_loc_conf          /* merge location configuration */
};


ngx_module_t  ngx_http_hodei_module = {
    NGX_MODULE_V1,
    &ngx_http_hodei_module_ctx,            /* module context */
    ngx_http_hodei_commands,               /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_hodei_exit_process,           /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* ---- configuration ------------------------------------------------------------------ */

static void *
ngx_http_hodei_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_hodei_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_hodei_main_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mcf->segment = { 0, NULL };
     *     mcf->zone = NULL;
     *     mcf->buckets = NULL;
     */

    mcf->stale_after = NGX_CONF_UNSET_MSEC;

    return mcf;
}


static char *
ngx_http_hodei_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_hodei_main_conf_t *mcf = conf;

    const struct hodei_family  *f;

    if (mcf->segment.data == NULL) {
        ngx_str_set(&mcf->segment, NGX_HTTP_HODEI_SEGMENT_DEFAULT);
    }

    ngx_conf_init_msec_value(mcf->stale_after, NGX_HTTP_HODEI_STALE_DEFAULT);

    if (mcf->zone == NULL) {
        if (mcf->buckets) {
            ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                               "hodei_http_duration_buckets has no effect "
                               "without hodei_http_zone");
        }
        return NGX_CONF_OK;
    }

    if (mcf->buckets) {
        ngx_http_hodei_zone_set_buckets(mcf->zone, mcf->buckets->elts,
                                        mcf->buckets->nelts);

    } else {
        f = &hodei_families[HODEI_F_HTTP_REQUEST_DURATION_SECONDS];
        ngx_http_hodei_zone_set_buckets(mcf->zone, (double *) f->buckets,
                                        f->nbuckets);
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_hodei_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_hodei_loc_conf_t  *hlcf;

    hlcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_hodei_loc_conf_t));
    if (hlcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     hlcf->zone = NULL;
     *     hlcf->endpoint = NULL;
     *     hlcf->endpoint_label = { 0, NULL };
     *     hlcf->endpoint_hash = 0;
     *     hlcf->endpoint_configured = 0;
     *     hlcf->cache_generation = 0;
     *     hlcf->cache = { { 0, NULL }, ... };
     */

    hlcf->metrics = NGX_CONF_UNSET;
    hlcf->native_histograms = NGX_CONF_UNSET;

    return hlcf;
}


static char *
ngx_http_hodei_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_hodei_loc_conf_t *prev = parent;
    ngx_http_hodei_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t    *clcf;
    ngx_http_hodei_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_hodei_module);

    if (conf->metrics == 1 && mcf->zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hodei_http_metrics on\" requires hodei_http_zone");
        return NGX_CONF_ERROR;
    }

    ngx_conf_merge_value(conf->metrics, prev->metrics, mcf->zone != NULL);
    ngx_conf_merge_value(conf->native_histograms, prev->native_histograms, 0);

    /* the log phase asks this one pointer whether, and where, to count */
    conf->zone = conf->metrics ? mcf->zone : NULL;

    if (conf->endpoint_configured) {
        return NGX_CONF_OK;
    }

    if (prev->endpoint_configured) {
        conf->endpoint = prev->endpoint;
        conf->endpoint_label = prev->endpoint_label;
        conf->endpoint_hash = prev->endpoint_hash;
        conf->endpoint_configured = 1;
        return NGX_CONF_OK;
    }

    /* the default label: the name of the location the request matched */

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->noname && prev->endpoint_label.data) {
        /* "if" and "limit_except" blocks belong to their enclosing location */
        conf->endpoint_label = prev->endpoint_label;
        conf->endpoint_hash = prev->endpoint_hash;
        return NGX_CONF_OK;
    }

    if (ngx_http_hodei_set_label(cf, conf, &clcf->name) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_hodei_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt         *h;
    ngx_http_hodei_loc_conf_t   *hlcf;
    ngx_http_core_main_conf_t   *cmcf;
    ngx_http_hodei_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_hodei_module);

    if (mcf->zone == NULL) {
        /* the http{} level is never merged: check it here */
        hlcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_hodei_module);

        if (hlcf->metrics == 1) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"hodei_http_metrics on\" requires hodei_http_zone");
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_hodei_log_handler;

    return NGX_OK;
}


static void
ngx_http_hodei_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_hodei_scrape_exit();
}


/* ---- directives ---------------------------------------------------------------------- */

static char *
ngx_http_hodei_zone_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hodei_main_conf_t *mcf = conf;

    ssize_t                 size;
    ngx_str_t              *value;
    ngx_shm_zone_t         *shm_zone;
    ngx_http_hodei_zone_t  *zone;

    if (mcf->zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    size = ngx_parse_size(&value[2]);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    if (size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is too small (at least %uzk)",
                           &value[1], 8 * ngx_pagesize / 1024);
        return NGX_CONF_ERROR;
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_hodei_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    shm_zone = ngx_shared_memory_add(cf, &value[1], size, &ngx_http_hodei_module);
    if (shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is already used", &value[1]);
        return NGX_CONF_ERROR;
    }

    shm_zone->init = ngx_http_hodei_zone_init;
    shm_zone->data = zone;
    zone->shm_zone = shm_zone;
    mcf->zone = zone;

    return NGX_CONF_OK;
}


static char *
ngx_http_hodei_buckets_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hodei_main_conf_t *mcf = conf;

    char        *end;
    double       bound, *b;
    ngx_str_t   *value;
    ngx_uint_t   i;

    if (mcf->buckets) {
        return "is duplicate";
    }

    if (cf->args->nelts - 1 > HODEI_BUCKETS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "at most %d buckets are allowed", HODEI_BUCKETS_MAX);
        return NGX_CONF_ERROR;
    }

    mcf->buckets = ngx_array_create(cf->pool, cf->args->nelts - 1, sizeof(double));
    if (mcf->buckets == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        /* configuration words are NUL-terminated */
        bound = strtod((char *) value[i].data, &end);

        if (value[i].len == 0 || end != (char *) value[i].data + value[i].len
            || !isfinite(bound) || bound <= 0
            || bound > NGX_HTTP_HODEI_BUCKET_MAX_SEC)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid bucket bound \"%V\" (seconds, > 0)",
                               &value[i]);
            return NGX_CONF_ERROR;
        }

        if (i > 1 && bound <= ((double *) mcf->buckets->elts)[i - 2]) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "bucket bounds must be strictly increasing: "
                               "\"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        b = ngx_array_push(mcf->buckets);
        if (b == NULL) {
            return NGX_CONF_ERROR;
        }

        *b = bound;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_hodei_endpoint_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hodei_loc_conf_t *hlcf = conf;

    ngx_str_t                         *value;
    ngx_http_complex_value_t          *cv;
    ngx_http_compile_complex_value_t   ccv;

    if (hlcf->endpoint_configured) {
        return "is duplicate";
    }

    value = cf->args->elts;

    cv = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (cv == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[1];
    ccv.complex_value = cv;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    hlcf->endpoint_configured = 1;

    if (cv->lengths) {
        hlcf->endpoint = cv;
        return NGX_CONF_OK;
    }

    if (ngx_http_hodei_set_label(cf, hlcf, &cv->value) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_hodei_metrics_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_hodei_scrape_handler;

    return NGX_CONF_OK;
}


/* ---- labels -------------------------------------------------------------------------- */

static ngx_int_t
ngx_http_hodei_set_label(ngx_conf_t *cf, ngx_http_hodei_loc_conf_t *hlcf,
    ngx_str_t *value)
{
    u_char  *p;

    p = ngx_pnalloc(cf->pool, HODEI_LABEL_VALUE_MAX);
    if (p == NULL) {
        return NGX_ERROR;
    }

    hlcf->endpoint_label.data = p;
    hlcf->endpoint_label.len = ngx_http_hodei_label_sanitise(p, value->data,
                                                             value->len);
    hlcf->endpoint_hash = ngx_http_hodei_label_hash(p, hlcf->endpoint_label.len);

    return NGX_OK;
}


/*
 * Copies src into dst (HODEI_LABEL_VALUE_MAX bytes) as a valid label value: well-formed
 * UTF-8 without NUL, every invalid byte replaced by U+FFFD, cut at a character boundary
 * when too long, "-" when empty (as nginx logs an empty value).  Returns the length.
 */
size_t
ngx_http_hodei_label_sanitise(u_char *dst, u_char *src, size_t len)
{
    static u_char  replacement[] = "\xef\xbf\xbd";

    u_char  *p, *last, c;
    size_t   i, n;

    p = dst;
    last = dst + HODEI_LABEL_VALUE_MAX;
    i = 0;

    while (i < len) {
        c = src[i];

        if (c != '\0' && c < 0x80) {
            if (p == last) {
                break;
            }

            *p++ = c;
            i++;
            continue;
        }

        n = (c >= 0xc2 && c <= 0xdf) ? 2
            : (c >= 0xe0 && c <= 0xef) ? 3
            : (c >= 0xf0 && c <= 0xf4) ? 4 : 0;

        if (n == 0 || len - i < n || !hodei_utf8_valid(src + i, n)) {
            n = 1;
            if ((size_t) (last - p) < sizeof(replacement) - 1) {
                break;
            }

            p = ngx_cpymem(p, replacement, sizeof(replacement) - 1);

        } else {
            if ((size_t) (last - p) < n) {
                break;
            }

            p = ngx_cpymem(p, src + i, n);
        }

        i += n;
    }

    if (p == dst) {
        *p++ = '-';
    }

    return p - dst;
}


uint32_t
ngx_http_hodei_label_hash(u_char *label, size_t len)
{
    return ngx_murmur_hash2(label, len);
}
