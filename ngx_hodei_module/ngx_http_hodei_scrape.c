/*
 * ngx_http_hodei_scrape.c — the hodei_metrics content handler.
 *
 * Each scrape opens the daemon's segment, copies one consistent snapshot into the private
 * buffer the worker keeps, and closes the file again: a segment the daemon replaced (a
 * restart, or growth) is simply the file found next time, and nothing a file does under the
 * reader (truncated, rewritten, a FIFO planted at the path) can fault or block the worker
 * (shm/hodei_segment.h says how).  The scrape builds a snapshot of the HTTP zone, touching only
 * its live series, and renders both with the one renderer of shm/ straight into output blocks
 * that the worker keeps between scrapes: fresh
 * heap memory for every scrape would cost a page fault per 4 KiB, several milliseconds for a
 * large exposition, and glibc returns it to the kernel after each request.  A segment that is missing,
 * invalid or stale leaves the daemon's families without samples and hodei_scheduler_up at 0:
 * the numbers of a dead daemon are never served as current.
 */
#include "ngx_http_hodei_module.h"
#include "hodei_render.h"
#include "hodei_segment.h"

#include <math.h>


#define NGX_HTTP_HODEI_OUTPUT_BUF   65536

/* Output blocks kept for reuse per worker: enough for a ~4 MiB exposition. */
#define NGX_HTTP_HODEI_FREE_BLOCKS  64

/* Besides enum hodei_seg_status: the segment reads fine but its heartbeat is too old. */
#define NGX_HTTP_HODEI_SEG_STALE    HODEI_SEG_STATUS_COUNT


typedef struct ngx_http_hodei_block_s  ngx_http_hodei_block_t;

struct ngx_http_hodei_block_s {
    ngx_http_hodei_block_t     *next;
};


/* Per worker process: survives between scrapes. */
typedef struct {
    ngx_http_hodei_block_t     *free;           /* output blocks ready for reuse */
    ngx_uint_t                  nfree;
    struct hodei_seg_reader     reader;         /* its buffer is kept between scrapes */
    ngx_uint_t                  state;          /* last state logged; starts at HODEI_SEG_OK */
    void                       *zone_buf;       /* the HTTP zone's snapshot is built here; */
    size_t                      zone_buf_size;  /* it grows with the zone's live series */
} ngx_http_hodei_scrape_t;


typedef struct {
    struct hodei_sink           sink;
    ngx_http_request_t         *r;
    ngx_chain_t                *out;
    ngx_chain_t               **last;
    ngx_buf_t                  *buf;
} ngx_http_hodei_output_t;


static ngx_http_hodei_scrape_t  ngx_http_hodei_scrape;


/* ---- the daemon's segment ------------------------------------------------------------ */

static void
ngx_http_hodei_log_state(ngx_http_request_t *r, ngx_http_hodei_main_conf_t *mcf,
    ngx_uint_t state, const char *why, double age)
{
    if (state == ngx_http_hodei_scrape.state) {
        return;
    }

    ngx_http_hodei_scrape.state = state;

    if (state == HODEI_SEG_OK) {
        ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                      "hodei_segment \"%V\": readable and fresh again", &mcf->segment);

    } else if (state == NGX_HTTP_HODEI_SEG_STALE) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "hodei_segment \"%V\": stale, last heartbeat %.3f s ago "
                      "(hodei_stale_after %M ms); scheduler reported down",
                      &mcf->segment, age, mcf->stale_after);

    } else {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "hodei_segment \"%V\": %s%s%s; scheduler reported down",
                      &mcf->segment, hodei_seg_strerror(state),
                      why ? ": " : "", why ? why : "");
    }
}


/*
 * Fills in's scheduler fields and returns the daemon's snapshot, or NULL when it must not
 * be served (unreadable or stale).
 */
static struct hodei_snapshot *
ngx_http_hodei_read_segment(ngx_http_request_t *r, ngx_http_hodei_main_conf_t *mcf,
    struct hodei_snapshot *snap, struct hodei_render_input *in)
{
    double                    age;
    const char               *why;
    ngx_uint_t                state;
    enum hodei_seg_status     st;
    struct hodei_seg_reader  *reader;

    reader = &ngx_http_hodei_scrape.reader;

    st = hodei_seg_load(reader, (const char *) mcf->segment.data, snap, NULL, &why);

    /* NaN unless the header was read and checked: then its heartbeat and start time count */
    age = hodei_seg_age(reader);
    in->created = 0;

    if (!isnan(age)) {
        age = ngx_max(age, 0);
        in->created = hodei_seg_start_time(reader);
    }

    state = st;

    if (st == HODEI_SEG_OK && age * 1000 > mcf->stale_after) {
        state = NGX_HTTP_HODEI_SEG_STALE;
    }

    ngx_http_hodei_log_state(r, mcf, state, why, age);

    in->scheduler_up = (state == HODEI_SEG_OK);
    in->snapshot_age = age;

    return in->scheduler_up ? snap : NULL;
}


/* ---- the HTTP zone ------------------------------------------------------------------- */

static struct hodei_snapshot *
ngx_http_hodei_read_zone(ngx_http_request_t *r, ngx_http_hodei_main_conf_t *mcf,
    struct hodei_snapshot *snap)
{
    void                     *buf;
    size_t                    size;
    ngx_uint_t                nseries;
    ngx_http_hodei_scrape_t  *scrape;

    if (mcf->zone == NULL) {
        return NULL;
    }

    scrape = &ngx_http_hodei_scrape;

    /* the series counted so far: those the snapshot will hold, whatever is added meanwhile */
    nseries = ngx_http_hodei_zone_nseries(mcf->zone);
    size = ngx_http_hodei_zone_snapshot_bound(mcf->zone, nseries);

    if (scrape->zone_buf_size < size) {
        /* room for a quarter more series than now: the buffer follows the zone's growth */
        size += size / 4;

        buf = ngx_alloc(size, r->connection->log);
        if (buf == NULL) {
            return NULL;
        }

        if (scrape->zone_buf) {
            ngx_free(scrape->zone_buf);
        }

        scrape->zone_buf = buf;
        scrape->zone_buf_size = size;
    }

    if (ngx_http_hodei_zone_snapshot(mcf->zone, nseries, scrape->zone_buf,
                                     scrape->zone_buf_size, snap, r->connection->log)
        != NGX_OK)
    {
        return NULL;
    }

    return snap;
}


void
ngx_http_hodei_scrape_exit(void)
{
    ngx_http_hodei_block_t  *block;

    hodei_seg_reader_free(&ngx_http_hodei_scrape.reader);

    while (ngx_http_hodei_scrape.free) {
        block = ngx_http_hodei_scrape.free;
        ngx_http_hodei_scrape.free = block->next;
        ngx_free(block);
    }

    ngx_http_hodei_scrape.nfree = 0;

    if (ngx_http_hodei_scrape.zone_buf) {
        ngx_free(ngx_http_hodei_scrape.zone_buf);
        ngx_http_hodei_scrape.zone_buf = NULL;
    }
}


/* ---- output -------------------------------------------------------------------------- */

static u_char *
ngx_http_hodei_block_get(ngx_log_t *log)
{
    ngx_http_hodei_block_t  *block;

    block = ngx_http_hodei_scrape.free;

    if (block == NULL) {
        return ngx_alloc(NGX_HTTP_HODEI_OUTPUT_BUF, log);
    }

    ngx_http_hodei_scrape.free = block->next;
    ngx_http_hodei_scrape.nfree--;

    return (u_char *) block;
}


static void
ngx_http_hodei_block_put(u_char *p)
{
    ngx_http_hodei_block_t  *block;

    if (ngx_http_hodei_scrape.nfree >= NGX_HTTP_HODEI_FREE_BLOCKS) {
        ngx_free(p);
        return;
    }

    block = (ngx_http_hodei_block_t *) p;
    block->next = ngx_http_hodei_scrape.free;
    ngx_http_hodei_scrape.free = block;
    ngx_http_hodei_scrape.nfree++;
}


/* The request's pool is going away, and the response with it: its blocks are free again. */
static void
ngx_http_hodei_output_cleanup(void *data)
{
    ngx_http_hodei_output_t  *o = data;

    ngx_chain_t  *cl;

    for (cl = o->out; cl; cl = cl->next) {
        if (cl->buf->start) {
            ngx_http_hodei_block_put(cl->buf->start);
            cl->buf->start = NULL;
        }
    }
}


static ngx_int_t
ngx_http_hodei_output_next(ngx_http_hodei_output_t *o)
{
    u_char       *p;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    b = ngx_calloc_buf(o->r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    cl = ngx_alloc_chain_link(o->r->pool);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    p = ngx_http_hodei_block_get(o->r->connection->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    b->start = p;
    b->pos = p;
    b->last = p;
    b->end = p + NGX_HTTP_HODEI_OUTPUT_BUF;
    b->temporary = 1;

    cl->buf = b;
    cl->next = NULL;

    *o->last = cl;
    o->last = &cl->next;
    o->buf = b;

    o->sink.pos = (char *) b->pos;
    o->sink.end = (char *) b->end;

    return NGX_OK;
}


static int
ngx_http_hodei_output_flush(struct hodei_sink *sink)
{
    ngx_http_hodei_output_t  *o = sink->ctx;

    o->buf->last = (u_char *) sink->pos;
    sink->total += o->buf->last - o->buf->pos;

    return ngx_http_hodei_output_next(o) == NGX_OK ? 0 : -1;
}


static ngx_int_t
ngx_http_hodei_render(ngx_http_request_t *r, ngx_http_hodei_output_t *o,
    enum hodei_format fmt, struct hodei_render_input *in)
{
    ngx_buf_t           *b;
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_hodei_output_cleanup;
    cln->data = o;

    o->r = r;
    o->out = NULL;
    o->last = &o->out;
    o->sink.flush = ngx_http_hodei_output_flush;
    o->sink.ctx = o;
    o->sink.total = 0;

    if (ngx_http_hodei_output_next(o) != NGX_OK) {
        return NGX_ERROR;
    }

    if (hodei_render(&o->sink, fmt, in) != 0) {
        return NGX_ERROR;
    }

    b = o->buf;
    b->last = (u_char *) o->sink.pos;
    o->sink.total += b->last - b->pos;

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    if (b->pos == b->last) {
        /* an empty buffer may only end the response as a special one */
        b->temporary = 0;
    }

    return NGX_OK;
}


/* ---- the handler --------------------------------------------------------------------- */

static ngx_int_t
ngx_http_hodei_add_header(ngx_http_request_t *r, ngx_str_t *key, ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key = *key;
    h->value = *value;

    return NGX_OK;
}


static ngx_int_t
ngx_http_hodei_not_allowed(ngx_http_request_t *r)
{
    static ngx_str_t  allow = ngx_string("Allow");
    static ngx_str_t  methods = ngx_string("GET, HEAD");

    if (ngx_http_hodei_add_header(r, &allow, &methods) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_HTTP_NOT_ALLOWED;
}


static void
ngx_http_hodei_set_content_type(ngx_http_request_t *r, enum hodei_format fmt)
{
    u_char  *semicolon;

    switch (fmt) {

    case HODEI_FMT_OPENMETRICS:
        ngx_str_set(&r->headers_out.content_type, HODEI_CONTENT_TYPE_OPENMETRICS);
        break;

    case HODEI_FMT_PROTOBUF:
        ngx_str_set(&r->headers_out.content_type, HODEI_CONTENT_TYPE_PROTOBUF);
        break;

    default: /* HODEI_FMT_TEXT */
        ngx_str_set(&r->headers_out.content_type, HODEI_CONTENT_TYPE_TEXT);
    }

    /* the bare type, without parameters, is what gzip_types and friends match */
    semicolon = ngx_strlchr(r->headers_out.content_type.data,
                            r->headers_out.content_type.data
                            + r->headers_out.content_type.len, ';');

    r->headers_out.content_type_len = semicolon - r->headers_out.content_type.data;
    r->headers_out.content_type_lowcase = NULL;
}


ngx_int_t
ngx_http_hodei_scrape_handler(ngx_http_request_t *r)
{
    static ngx_str_t             vary = ngx_string("Vary");
    static ngx_str_t             vary_accept = ngx_string("Accept");
    ngx_int_t                    rc;
    ngx_table_elt_t             *accept;
    enum hodei_format            fmt;
    struct hodei_snapshot        daemon, nginx;
    ngx_http_hodei_output_t     *o;
    struct hodei_render_input    in;
    const struct hodei_snapshot *snaps[2];
    ngx_http_hodei_loc_conf_t   *hlcf;
    ngx_http_hodei_main_conf_t  *mcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_hodei_not_allowed(r);
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_hodei_module);

    ngx_memzero(&in, sizeof(struct hodei_render_input));

    snaps[0] = ngx_http_hodei_read_segment(r, mcf, &daemon, &in);
    snaps[1] = ngx_http_hodei_read_zone(r, mcf, &nginx);

    in.snapshots = snaps;
    in.nsnapshots = 2;

    /* protobuf only where the operator turned native histograms on */
    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_hodei_module);
    accept = r->headers_in.accept;
    fmt = accept ? hodei_format_negotiate((const char *) accept->value.data,
                                          accept->value.len,
                                          hlcf->native_histograms ? HODEI_ALLOW_PROTOBUF : 0)
                 : HODEI_FMT_TEXT;

    o = ngx_palloc(r->pool, sizeof(ngx_http_hodei_output_t));
    if (o == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_hodei_render(r, o, fmt, &in) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = o->sink.total;
    ngx_http_hodei_set_content_type(r, fmt);

    /* the body's format follows Accept: caches must not hand one client's to another */
    if (ngx_http_hodei_add_header(r, &vary, &vary_accept) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, o->out);
}
