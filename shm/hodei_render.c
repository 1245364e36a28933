/* hodei_render.c — text 0.0.4, OpenMetrics 1.0 and protobuf renderings of validated snapshots. */
#include "hodei_render.h"
#include "hodei_protobuf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- numbers ------------------------------------------------------------------------- */

static const char digit_pairs[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

size_t hodei_fmt_u64(char *dst, uint64_t v)
{
    char tmp[24];
    char *p = tmp + sizeof(tmp);
    while (v >= 100) {
        unsigned r = (unsigned) (v % 100);
        v /= 100;
        p -= 2;
        memcpy(p, digit_pairs + 2 * r, 2);
    }
    if (v >= 10) {
        p -= 2;
        memcpy(p, digit_pairs + 2 * v, 2);
    } else {
        *--p = (char) ('0' + v);
    }
    size_t n = (size_t) (tmp + sizeof(tmp) - p);
    memcpy(dst, p, n);
    return n;
}

static const double pow10_table[] = { 1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9 };

/* n / 10^k with n < 2^53 as a decimal: exact because both are exact doubles and division is
 * correctly rounded, so it round-trips iff (double) n / 10^k == v, which the caller checked. */
static size_t fmt_scaled(char *dst, uint64_t n, unsigned k)
{
    char digits[24];
    size_t len = hodei_fmt_u64(digits, n);
    char *p = dst;
    if (len <= k) {
        *p++ = '0';
        *p++ = '.';
        memset(p, '0', k - len);
        p += k - len;
        memcpy(p, digits, len);
        return (size_t) (p + len - dst);
    }
    memcpy(p, digits, len - k);
    p += len - k;
    *p++ = '.';
    memcpy(p, digits + len - k, k);
    return (size_t) (p + k - dst);
}

size_t hodei_fmt_double(char *dst, double v)
{
    if (isnan(v)) {
        memcpy(dst, "NaN", 3);
        return 3;
    }
    if (isinf(v)) {
        memcpy(dst, v > 0 ? "+Inf" : "-Inf", 4);
        return 4;
    }
    char *p = dst;
    double a = v;
    if (signbit(v) && v != 0) {
        *p++ = '-';
        a = -v;
    }
    if (a < 9007199254740992.0 && a == (double) (uint64_t) a)   /* integers, 0 included */
        return (size_t) (p - dst) + hodei_fmt_u64(p, (uint64_t) a);
    /* Fast paths cover what metrics mostly hold: integers and short decimals.  The range
     * matches where Go's strconv 'g' format (Prometheus's own) uses plain notation. */
    if (a < 1e15 && a >= 1e-4) {
        for (unsigned k = 1; k < sizeof(pow10_table) / sizeof(pow10_table[0]); k++) {
            double scaled = a * pow10_table[k];
            if (scaled >= 9007199254740992.0)
                break;
            /* a*10^k may round to a neighbour of the integer: take the nearest, then check */
            uint64_t n = (uint64_t) (scaled + 0.5);
            if ((double) n / pow10_table[k] != a)
                continue;
            while (k > 0 && n % 10 == 0) {    /* 0.50 -> 0.5 */
                n /= 10;
                k--;
            }
            return (size_t) (p - dst) + (k ? fmt_scaled(p, n, k) : hodei_fmt_u64(p, n));
        }
    }
    /* General case: the fewest significant digits that parse back exactly. */
    for (int prec = 15; prec <= 17; prec++) {
        int n = snprintf(dst, HODEI_NUM_MAX, "%.*g", prec, v);
        if (prec == 17 || strtod(dst, NULL) == v)
            return (size_t) n;
    }
    return 0; /* not reached */
}

/* Non-zero when any byte of x equals b (the classic SWAR zero-byte test). */
static inline uint64_t has_byte(uint64_t x, unsigned char b)
{
    uint64_t y = x ^ (0x0101010101010101ull * b);
    return (y - 0x0101010101010101ull) & ~y & 0x8080808080808080ull;
}

size_t hodei_escape_label(char *dst, const char *src, size_t len)
{
    size_t i = 0;
    /* label values rarely need escaping: copy 8 clean bytes at a time */
    for (; i + 8 <= len; i += 8) {
        uint64_t x;
        memcpy(&x, src + i, 8);
        if (has_byte(x, '"') | has_byte(x, '\\') | has_byte(x, '\n'))
            break;
        memcpy(dst + i, &x, 8);
    }
    char *p = dst + i;
    for (; i < len; i++) {
        char c = src[i];
        if (c == '\\' || c == '"') {
            *p++ = '\\';
            *p++ = c;
        } else if (c == '\n') {
            *p++ = '\\';
            *p++ = 'n';
        } else {
            *p++ = c;
        }
    }
    return (size_t) (p - dst);
}

/* HELP text: 0.0.4 escapes \ and newline; OpenMetrics also escapes ". */
static size_t escape_help(char *dst, const char *src, enum hodei_format fmt)
{
    char *p = dst;
    for (; *src; src++) {
        if (*src == '\\' || (*src == '"' && fmt == HODEI_FMT_OPENMETRICS)) {
            *p++ = '\\';
            *p++ = *src;
        } else if (*src == '\n') {
            *p++ = '\\';
            *p++ = 'n';
        } else {
            *p++ = *src;
        }
    }
    return (size_t) (p - dst);
}

/* ---- sink ---------------------------------------------------------------------------- */

static inline void put(struct hodei_sink *s, const void *src, size_t n)
{
    memcpy(s->pos, src, n);
    s->pos += n;
}

#define PUT_LIT(s, lit) put(s, lit, sizeof(lit) - 1)

/* ---- families ------------------------------------------------------------------------ */

struct family_ctx {
    struct hodei_sink *s;
    enum hodei_format fmt;
    const struct hodei_family *f;
    size_t base_len;            /* name as exposed in TYPE/HELP for this format */
    size_t label_len[HODEI_LABELS_MAX];
};

static const char *const type_names[] = { "counter", "gauge", "histogram" };

static void put_metadata(struct family_ctx *c)
{
    char help[2 * 512];
    struct hodei_sink *s = c->s;
    PUT_LIT(s, "# HELP ");
    put(s, c->f->name, c->base_len);
    *s->pos++ = ' ';
    put(s, help, escape_help(help, c->f->help, c->fmt));
    PUT_LIT(s, "\n# TYPE ");
    put(s, c->f->name, c->base_len);
    *s->pos++ = ' ';
    const char *t = type_names[c->f->type];
    put(s, t, strlen(t));
    *s->pos++ = '\n';
}

/* Writes `{a="x",b="y"` (no closing brace) into buf; returns its length, 0 with no labels. */
static size_t format_labels(char *buf, const struct family_ctx *c,
                            const struct hodei_snapshot *snap, const unsigned char *rec)
{
    char *p = buf;
    for (unsigned i = 0; i < c->f->nlabels; i++) {
        size_t len;
        const char *v = hodei_series_label(snap, rec, i, &len);
        *p++ = i ? ',' : '{';
        memcpy(p, hodei_label_name(c->f, i), c->label_len[i]);
        p += c->label_len[i];
        *p++ = '=';
        *p++ = '"';
        p += hodei_escape_label(p, v, len);
        *p++ = '"';
    }
    return (size_t) (p - buf);
}

/* name + suffix + labels [+ extra label] + ' ' + value + '\n' */
static void put_sample(struct family_ctx *c, const char *suffix, size_t suffix_len,
                       const char *labels, size_t labels_len, const char *extra, size_t extra_len,
                       const char *value, size_t value_len)
{
    struct hodei_sink *s = c->s;
    put(s, c->f->name, c->base_len);
    put(s, suffix, suffix_len);
    if (labels_len || extra_len) {
        put(s, labels, labels_len);
        if (extra_len) {
            *s->pos++ = labels_len ? ',' : '{';
            put(s, extra, extra_len);
        }
        *s->pos++ = '}';
    }
    *s->pos++ = ' ';
    put(s, value, value_len);
    *s->pos++ = '\n';
}

#define SUFFIX(lit) lit, sizeof(lit) - 1

static int put_scalar_series(struct family_ctx *c, const char *labels, size_t labels_len,
                             const double *v)
{
    char num[HODEI_NUM_MAX];
    if (hodei_sink_reserve(c->s) != 0)
        return -1;
    size_t n = hodei_fmt_double(num, v[1]);
    if (c->f->type == HODEI_COUNTER && c->fmt == HODEI_FMT_OPENMETRICS) {
        put_sample(c, SUFFIX("_total"), labels, labels_len, NULL, 0, num, n);
        n = hodei_fmt_double(num, v[0]);
        put_sample(c, SUFFIX("_created"), labels, labels_len, NULL, 0, num, n);
    } else {
        put_sample(c, "", 0, labels, labels_len, NULL, 0, num, n);
    }
    return 0;
}

struct bounds_text {
    unsigned n;
    char le[HODEI_BUCKETS_MAX + 1][HODEI_NUM_MAX + 8];    /* `le="0.005"` */
    size_t len[HODEI_BUCKETS_MAX + 1];
};

static void format_bounds(struct bounds_text *b, const struct hodei_snapshot *snap,
                          const struct hodei_snap_family *fam)
{
    b->n = fam->nbuckets;
    for (unsigned k = 0; k <= fam->nbuckets; k++) {
        char *p = b->le[k];
        memcpy(p, "le=\"", 4);
        p += 4;
        if (k < fam->nbuckets) {
            double le;
            memcpy(&le, snap->base + fam->bounds_off + 8 * k, 8);
            p += hodei_fmt_double(p, le);
        } else {
            memcpy(p, "+Inf", 4);
            p += 4;
        }
        *p++ = '"';
        b->len[k] = (size_t) (p - b->le[k]);
    }
}

/* ` # {a="x",b="y"} value timestamp` after a _bucket sample (OpenMetrics' exemplar; the
 * timestamp only when known); the line stays well below HODEI_SINK_MIN: at most 128 bytes of
 * labels, escaped to twice that. */
static char *put_exemplar(char *p, const struct hodei_exemplar *e)
{
    memcpy(p, " # {", 4);
    p += 4;
    for (unsigned i = 0; i < e->nlabels; i++) {
        if (i)
            *p++ = ',';
        memcpy(p, e->label[i].name, e->label[i].name_len);
        p += e->label[i].name_len;
        *p++ = '=';
        *p++ = '"';
        p += hodei_escape_label(p, e->label[i].value, e->label[i].value_len);
        *p++ = '"';
    }
    *p++ = '}';
    *p++ = ' ';
    p += hodei_fmt_double(p, e->value);
    if (e->timestamp > 0) {
        *p++ = ' ';
        p += hodei_fmt_double(p, e->timestamp);
    }
    return p;
}

static int put_histogram_series(struct family_ctx *c, const struct bounds_text *b,
                                 const char *labels, size_t labels_len,
                                 const struct hodei_snapshot *snap,
                                 const struct hodei_snap_family *fam, const unsigned char *rec)
{
    char num[HODEI_NUM_MAX];
    const unsigned char *values = rec + hodei_series_values_off(fam->nlabels);
    uint64_t cumulative = 0;
    for (unsigned k = 0; k <= b->n; k++) {
        uint64_t count;
        struct hodei_exemplar e;
        if (hodei_sink_reserve(c->s) != 0)
            return -1;
        memcpy(&count, values + 16 + 8 * k, 8);
        cumulative += count;
        size_t n = hodei_fmt_u64(num, cumulative);
        put_sample(c, SUFFIX("_bucket"), labels, labels_len, b->le[k], b->len[k], num, n);
        if (c->fmt == HODEI_FMT_OPENMETRICS && hodei_series_exemplar(snap, fam, rec, k, &e)) {
            c->s->pos--;                                    /* before the newline */
            c->s->pos = put_exemplar(c->s->pos, &e);
            *c->s->pos++ = '\n';
        }
    }
    double sum, created;
    memcpy(&created, values, 8);
    memcpy(&sum, values + 8, 8);
    if (hodei_sink_reserve(c->s) != 0)
        return -1;
    size_t n = hodei_fmt_u64(num, cumulative);
    put_sample(c, SUFFIX("_count"), labels, labels_len, NULL, 0, num, n);
    n = hodei_fmt_double(num, sum);
    put_sample(c, SUFFIX("_sum"), labels, labels_len, NULL, 0, num, n);
    if (c->fmt == HODEI_FMT_OPENMETRICS) {
        n = hodei_fmt_double(num, created);
        put_sample(c, SUFFIX("_created"), labels, labels_len, NULL, 0, num, n);
    }
    return 0;
}

static int put_snapshot_family(struct family_ctx *c, const struct hodei_snapshot *snap,
                               const struct hodei_snap_family *fam)
{
    char labels[HODEI_LABELS_MAX * (32 + 2 * HODEI_LABEL_VALUE_MAX)];
    struct bounds_text bounds;
    size_t voff = hodei_series_values_off(fam->nlabels);

    int one_line = c->f->type == HODEI_GAUGE
                   || (c->f->type == HODEI_COUNTER && c->fmt == HODEI_FMT_TEXT);

    if (c->f->type == HODEI_HISTOGRAM)
        format_bounds(&bounds, snap, fam);
    for (uint32_t i = 0; i < fam->nseries; i++) {
        const unsigned char *rec = hodei_series_at(snap, fam, i);
        double v[2];                            /* created, value */
        memcpy(v, rec + voff, sizeof(v));
        if (one_line) {                         /* the common case, written in place */
            if (hodei_sink_reserve(c->s) != 0)
                return -1;
            char *p = c->s->pos;
            memcpy(p, c->f->name, c->base_len);
            p += c->base_len;
            if (c->f->nlabels) {
                p += format_labels(p, c, snap, rec);
                *p++ = '}';
            }
            *p++ = ' ';
            p += hodei_fmt_double(p, v[1]);
            *p++ = '\n';
            c->s->pos = p;
            continue;
        }
        size_t labels_len = format_labels(labels, c, snap, rec);
        int rc = c->f->type == HODEI_HISTOGRAM
                     ? put_histogram_series(c, &bounds, labels, labels_len, snap, fam, rec)
                     : put_scalar_series(c, labels, labels_len, v);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int put_header_family(struct family_ctx *c, enum hodei_family_id id,
                             const struct hodei_render_input *in)
{
    double v[2] = { in->created, NAN };
    if (id == HODEI_F_SCHEDULER_UP)
        v[1] = in->scheduler_up ? 1 : 0;
    else if (id == HODEI_F_METRICS_SNAPSHOT_AGE_SECONDS)
        v[1] = in->snapshot_age;
    if (isnan(v[1]))
        return 0;
    return put_scalar_series(c, NULL, 0, v);
}

/* ---- protobuf ------------------------------------------------------------------------ */

/* Series i of fam in snap as the protobuf writer sees it: labels, values, and a histogram's
 * exemplars (into ex) and native part (into native). */
static void pb_series(struct hodei_pb_metric *m, const struct hodei_snapshot *snap,
                      const struct hodei_snap_family *fam, uint32_t i,
                      struct hodei_exemplar *ex, struct hodei_native_view *native)
{
    const unsigned char *rec = hodei_series_at(snap, fam, i);
    const unsigned char *v = rec + hodei_series_values_off(fam->nlabels);
    for (unsigned l = 0; l < m->nlabels; l++)
        m->label_value[l] = hodei_series_label(snap, rec, l, &m->label_value_len[l]);
    memcpy(&m->created, v, 8);
    memcpy(&m->value, v + 8, 8);
    if (m->type != HODEI_HISTOGRAM)
        return;
    m->sum = m->value;
    m->nbuckets = fam->nbuckets;
    m->bounds = snap->base + fam->bounds_off;
    m->counts = v + 16;
    for (unsigned k = 0; k <= fam->nbuckets; k++)
        hodei_series_exemplar(snap, fam, rec, k, &ex[k]);
    m->exemplars = ex;
    m->native = hodei_series_native(snap, fam, rec, native) ? native : NULL;
}

/* Sizes (sink NULL) or writes one Metric field; adds its bytes to *bytes. */
static int pb_metric(struct hodei_sink *sink, const struct hodei_pb_metric *m, size_t *bytes)
{
    size_t n = hodei_pb_metric_size(m);
    if (sink == NULL) {
        *bytes += 1 + hodei_pb_varint_size(n) + n;        /* tag, length, message */
        return 0;
    }
    return hodei_pb_put_metric(sink, m, n, bytes);
}

/* Sizes (sink NULL) or writes the Metric fields of every series of family id; adds their
 * bytes to *bytes.  Returns 0, or -1 if the sink failed. */
static int pb_metrics(struct hodei_sink *sink, enum hodei_family_id id,
                      const struct hodei_render_input *in, size_t *bytes)
{
    const struct hodei_family *f = &hodei_families[id];
    struct hodei_pb_metric m = { .type = f->type, .nlabels = f->nlabels };
    for (unsigned l = 0; l < f->nlabels; l++) {
        m.label_name[l] = hodei_label_name(f, l);
        m.label_name_len[l] = strlen(m.label_name[l]);
    }
    if (f->source == HODEI_SRC_HEADER) {
        m.value = id == HODEI_F_SCHEDULER_UP ? (in->scheduler_up ? 1 : 0)
                  : id == HODEI_F_METRICS_SNAPSHOT_AGE_SECONDS ? in->snapshot_age : NAN;
        return isnan(m.value) ? 0 : pb_metric(sink, &m, bytes);
    }
    struct hodei_exemplar ex[HODEI_BUCKETS_MAX + 1];
    struct hodei_native_view native;
    for (size_t k = 0; k < in->nsnapshots; k++) {
        const struct hodei_snapshot *snap = in->snapshots[k];
        const struct hodei_snap_family *fam = snap ? snap->family[id] : NULL;
        for (uint32_t i = 0; fam && i < fam->nseries; i++) {
            pb_series(&m, snap, fam, i, ex, &native);
            if (pb_metric(sink, &m, bytes) != 0)
                return -1;
        }
    }
    return 0;
}

/* One length-delimited MetricFamily per family, empty ones included (HELP and TYPE for every
 * family, as in the text formats; Prometheus skips them). */
static int render_protobuf(struct hodei_sink *sink, const struct hodei_render_input *in)
{
    for (int id = 0; id < HODEI_F_COUNT; id++) {
        const struct hodei_family *f = &hodei_families[id];
        size_t metrics = 0, written = 0;
        pb_metrics(NULL, (enum hodei_family_id) id, in, &metrics);
        size_t size = hodei_pb_family_size(f, metrics);
        if (hodei_pb_put_family_head(sink, f, size, &written) != 0
            || pb_metrics(sink, (enum hodei_family_id) id, in, &written) != 0)
            return -1;
        /* a length that disagrees with its bytes would garble every family after it */
        if (written != hodei_pb_varint_size(size) + size)
            return -1;
    }
    return 0;
}

int hodei_render(struct hodei_sink *sink, enum hodei_format fmt,
                 const struct hodei_render_input *in)
{
    if (fmt == HODEI_FMT_PROTOBUF)
        return render_protobuf(sink, in);
    for (int id = 0; id < HODEI_F_COUNT; id++) {
        const struct hodei_family *f = &hodei_families[id];
        struct family_ctx c = { .s = sink, .fmt = fmt, .f = f, .base_len = f->name_len };
        for (unsigned l = 0; l < f->nlabels; l++)
            c.label_len[l] = strlen(hodei_label_name(f, l));
        if (fmt == HODEI_FMT_OPENMETRICS && f->type == HODEI_COUNTER)
            c.base_len -= sizeof("_total") - 1;   /* OpenMetrics names the family without it */
        if (hodei_sink_reserve(sink) != 0)
            return -1;
        put_metadata(&c);
        if (f->source == HODEI_SRC_HEADER) {
            if (put_header_family(&c, (enum hodei_family_id) id, in) != 0)
                return -1;
            continue;
        }
        for (size_t k = 0; k < in->nsnapshots; k++) {
            const struct hodei_snapshot *snap = in->snapshots[k];
            if (snap && snap->family[id] && put_snapshot_family(&c, snap, snap->family[id]) != 0)
                return -1;
        }
    }
    if (fmt == HODEI_FMT_OPENMETRICS) {
        if (hodei_sink_reserve(sink) != 0)
            return -1;
        PUT_LIT(sink, "# EOF\n");
    }
    return 0;
}

/* ---- content negotiation ------------------------------------------------------------- */

/* [p, end) without the spaces and tabs around it */
static void trim(const char **p, const char **end)
{
    while (*p < *end && (**p == ' ' || **p == '\t'))
        (*p)++;
    while (*end > *p && ((*end)[-1] == ' ' || (*end)[-1] == '\t'))
        (*end)--;
}

struct media_range {
    const char *type;
    size_t   type_len;
    double   q;
    int      metric_family;          /* proto=io.prometheus.client.MetricFamily */
    int      delimited;              /* encoding=delimited */
};

/* Parses one element of an Accept list: type/subtype *(; name=value). */
static void parse_media_range(const char *p, const char *end, struct media_range *r)
{
    const char *semi = memchr(p, ';', (size_t) (end - p));
    const char *type_end = semi ? semi : end;
    trim(&p, &type_end);
    *r = (struct media_range) { .type = p, .type_len = (size_t) (type_end - p), .q = 1 };
    for (const char *a = semi; a && a < end;) {
        const char *next = memchr(a + 1, ';', (size_t) (end - a - 1));
        const char *param_end = next ? next : end;
        const char *name = a + 1;
        const char *eq = memchr(name, '=', (size_t) (param_end - name));
        a = next;
        if (eq == NULL)
            continue;
        const char *name_end = eq, *value = eq + 1, *value_end = param_end;
        trim(&name, &name_end);
        trim(&value, &value_end);
        if (value_end - value >= 2 && *value == '"' && value_end[-1] == '"') {
            value++;
            value_end--;
        }
        size_t nlen = (size_t) (name_end - name), vlen = (size_t) (value_end - value);
#define EQ(s, len, lit) ((len) == sizeof(lit) - 1 && strncasecmp(s, lit, len) == 0)
        if (EQ(name, nlen, "q") && vlen > 0) {
            char qbuf[16];
            size_t ql = vlen < sizeof(qbuf) - 1 ? vlen : sizeof(qbuf) - 1;
            memcpy(qbuf, value, ql);
            qbuf[ql] = '\0';
            r->q = strtod(qbuf, NULL);
        } else if (EQ(name, nlen, "proto")) {
            r->metric_family = EQ(value, vlen, "io.prometheus.client.MetricFamily");
        } else if (EQ(name, nlen, "encoding")) {
            r->delimited = EQ(value, vlen, "delimited");
        }
    }
}

enum hodei_format hodei_format_negotiate(const char *accept, size_t len, unsigned allow)
{
    double om_q = 0, text_q = 0, pb_q = 0;
    const char *p = accept, *end = accept ? accept + len : NULL;

    while (p && p < end) {
        const char *comma = memchr(p, ',', (size_t) (end - p));
        const char *item_end = comma ? comma : end;
        struct media_range r;
        parse_media_range(p, item_end, &r);
        if (EQ(r.type, r.type_len, "application/openmetrics-text"))
            om_q = r.q > om_q ? r.q : om_q;
        else if (EQ(r.type, r.type_len, "application/vnd.google.protobuf"))
            pb_q = r.metric_family && r.delimited && r.q > pb_q ? r.q : pb_q;
        else if (EQ(r.type, r.type_len, "text/plain") || EQ(r.type, r.type_len, "text/*")
                 || EQ(r.type, r.type_len, "*/*"))
            text_q = r.q > text_q ? r.q : text_q;
#undef EQ
        p = comma ? comma + 1 : end;
    }
    if ((allow & HODEI_ALLOW_PROTOBUF) && pb_q > 0 && pb_q >= om_q && pb_q >= text_q)
        return HODEI_FMT_PROTOBUF;
    return om_q > 0 && om_q >= text_q ? HODEI_FMT_OPENMETRICS : HODEI_FMT_TEXT;
}
