/* hodei_protobuf.c — io.prometheus.client messages, sized and streamed (see hodei_protobuf.h). */
#include "hodei_protobuf.h"

#include <math.h>
#include <string.h>

/* ---- the wire format ------------------------------------------------------------------ */

enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2 };

/* Field numbers of client_model's io/prometheus/client/metrics.proto.  All are below 16, so
 * every tag is one byte. */
enum { MF_NAME = 1, MF_HELP = 2, MF_TYPE = 3, MF_METRIC = 4 };
enum { TYPE_COUNTER = 0, TYPE_GAUGE = 1, TYPE_HISTOGRAM = 4 };
enum { METRIC_LABEL = 1, METRIC_GAUGE = 2, METRIC_COUNTER = 3, METRIC_HISTOGRAM = 7 };
enum { LABEL_NAME = 1, LABEL_VALUE = 2 };
enum { GAUGE_VALUE = 1 };
enum { COUNTER_VALUE = 1, COUNTER_CREATED = 3 };
enum { HIST_SAMPLE_COUNT = 1, HIST_SAMPLE_SUM = 2, HIST_BUCKET = 3, HIST_SCHEMA = 5,
       HIST_ZERO_THRESHOLD = 6, HIST_ZERO_COUNT = 7, HIST_POSITIVE_SPAN = 12,
       HIST_POSITIVE_DELTA = 13, HIST_CREATED = 15 };
enum { BUCKET_CUMULATIVE_COUNT = 1, BUCKET_UPPER_BOUND = 2, BUCKET_EXEMPLAR = 3 };
enum { SPAN_OFFSET = 1, SPAN_LENGTH = 2 };
enum { EXEMPLAR_LABEL = 1, EXEMPLAR_VALUE = 2, EXEMPLAR_TIMESTAMP = 3 };
enum { TIMESTAMP_SECONDS = 1, TIMESTAMP_NANOS = 2 };

#define TAG(field, wire) ((unsigned char) ((field) << 3 | (wire)))

static const unsigned char metric_type[] = {
    [HODEI_COUNTER] = TYPE_COUNTER, [HODEI_GAUGE] = TYPE_GAUGE,
    [HODEI_HISTOGRAM] = TYPE_HISTOGRAM };

static inline uint64_t zigzag(int64_t v)
{
    return ((uint64_t) v << 1) ^ (uint64_t) (v >> 63);
}

/* tag + varint, tag + double, tag + length + bytes */
static inline size_t varint_field_size(uint64_t v) { return 1 + hodei_pb_varint_size(v); }
#define DOUBLE_FIELD_SIZE 9
static inline size_t len_field_size(size_t n) { return 1 + hodei_pb_varint_size(n) + n; }

static inline unsigned char *put_varint(unsigned char *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (unsigned char) (v | 0x80);
        v >>= 7;
    }
    *p++ = (unsigned char) v;
    return p;
}

static inline unsigned char *put_varint_field(unsigned char *p, unsigned field, uint64_t v)
{
    *p++ = TAG(field, WIRE_VARINT);
    return put_varint(p, v);
}

static inline unsigned char *put_double_field(unsigned char *p, unsigned field, double v)
{
    *p++ = TAG(field, WIRE_I64);
    memcpy(p, &v, 8);
    return p + 8;
}

static inline unsigned char *put_len(unsigned char *p, unsigned field, size_t n)
{
    *p++ = TAG(field, WIRE_LEN);
    return put_varint(p, n);
}

static inline unsigned char *put_bytes_field(unsigned char *p, unsigned field, const void *src,
                                             size_t n)
{
    p = put_len(p, field, n);
    memcpy(p, src, n);
    return p + n;
}

/* ---- pieces: each is written after a reserve, so it must stay below HODEI_SINK_MIN ------ */

struct out {
    struct hodei_sink *s;
    size_t *written;
};

static inline unsigned char *piece_begin(struct out *o)
{
    return hodei_sink_reserve(o->s) == 0 ? (unsigned char *) o->s->pos : NULL;
}

static inline void piece_end(struct out *o, unsigned char *p)
{
    *o->written += (size_t) ((char *) p - o->s->pos);
    o->s->pos = (char *) p;
}

/* ---- google.protobuf.Timestamp -------------------------------------------------------- */

struct timestamp {
    uint64_t seconds;
    uint32_t nanos;
};

/* Unix seconds to a Timestamp; 0 when t is not a time worth sending (unknown, negative, huge). */
static int split_time(double t, struct timestamp *ts)
{
    if (!(t > 0 && t < 1e15))
        return 0;
    ts->seconds = (uint64_t) t;                               /* t > 0: truncation is floor */
    ts->nanos = (uint32_t) ((t - (double) ts->seconds) * 1e9 + 0.5);
    if (ts->nanos >= 1000000000u) {
        ts->seconds++;
        ts->nanos -= 1000000000u;
    }
    return 1;
}

static size_t timestamp_size(const struct timestamp *ts)
{
    return (ts->seconds ? varint_field_size(ts->seconds) : 0)
           + (ts->nanos ? varint_field_size(ts->nanos) : 0);
}

/* field: tag, length and the Timestamp message */
static unsigned char *put_timestamp(unsigned char *p, unsigned field, const struct timestamp *ts)
{
    p = put_len(p, field, timestamp_size(ts));
    if (ts->seconds)
        p = put_varint_field(p, TIMESTAMP_SECONDS, ts->seconds);
    if (ts->nanos)
        p = put_varint_field(p, TIMESTAMP_NANOS, ts->nanos);
    return p;
}

/* ---- LabelPair ------------------------------------------------------------------------ */

static size_t label_pair_size(size_t name_len, size_t value_len)
{
    return len_field_size(name_len) + len_field_size(value_len);
}

static unsigned char *put_label_pair(unsigned char *p, unsigned field, const char *name,
                                     size_t name_len, const char *value, size_t value_len)
{
    p = put_len(p, field, label_pair_size(name_len, value_len));
    p = put_bytes_field(p, LABEL_NAME, name, name_len);
    return put_bytes_field(p, LABEL_VALUE, value, value_len);
}

/* ---- Exemplar ------------------------------------------------------------------------- */

/* The exemplar of classic bucket k, when there is one (the snapshot's validator has checked
 * its labels against OpenMetrics' limit). */
static const struct hodei_exemplar *exemplar_of(const struct hodei_pb_metric *m, unsigned k)
{
    const struct hodei_exemplar *e = m->exemplars ? &m->exemplars[k] : NULL;
    return e && e->nlabels ? e : NULL;
}

static size_t exemplar_size(const struct hodei_exemplar *e)
{
    struct timestamp ts;
    size_t n = DOUBLE_FIELD_SIZE;
    for (unsigned i = 0; i < e->nlabels; i++)
        n += len_field_size(label_pair_size(e->label[i].name_len, e->label[i].value_len));
    if (split_time(e->timestamp, &ts))
        n += len_field_size(timestamp_size(&ts));
    return n;
}

static unsigned char *put_exemplar(unsigned char *p, unsigned field,
                                   const struct hodei_exemplar *e)
{
    struct timestamp ts;
    p = put_len(p, field, exemplar_size(e));
    for (unsigned i = 0; i < e->nlabels; i++)
        p = put_label_pair(p, EXEMPLAR_LABEL, e->label[i].name, e->label[i].name_len,
                           e->label[i].value, e->label[i].value_len);
    p = put_double_field(p, EXEMPLAR_VALUE, e->value);
    if (split_time(e->timestamp, &ts))
        p = put_timestamp(p, EXEMPLAR_TIMESTAMP, &ts);
    return p;
}

/* ---- Histogram ------------------------------------------------------------------------ */

static uint64_t classic_count(const struct hodei_pb_metric *m, unsigned k)
{
    uint64_t c;
    memcpy(&c, m->counts + 8 * (size_t) k, 8);
    return c;
}

static double classic_bound(const struct hodei_pb_metric *m, unsigned k)
{
    double le;
    memcpy(&le, m->bounds + 8 * (size_t) k, 8);
    return le;
}

/* Bucket k (k == nbuckets: the +Inf bucket) with its cumulative count. */
static size_t bucket_size(const struct hodei_pb_metric *m, unsigned k, uint64_t cumulative)
{
    const struct hodei_exemplar *e = exemplar_of(m, k);
    return varint_field_size(cumulative) + DOUBLE_FIELD_SIZE
           + (e ? len_field_size(exemplar_size(e)) : 0);
}

static unsigned char *put_bucket(unsigned char *p, const struct hodei_pb_metric *m, unsigned k,
                                 uint64_t cumulative)
{
    const struct hodei_exemplar *e = exemplar_of(m, k);
    p = put_len(p, HIST_BUCKET, bucket_size(m, k, cumulative));
    p = put_varint_field(p, BUCKET_CUMULATIVE_COUNT, cumulative);
    p = put_double_field(p, BUCKET_UPPER_BOUND, k < m->nbuckets ? classic_bound(m, k) : INFINITY);
    return e ? put_exemplar(p, BUCKET_EXEMPLAR, e) : p;
}

static size_t span_size(int32_t offset, uint32_t length)
{
    return (offset ? varint_field_size(zigzag(offset)) : 0)
           + (length ? varint_field_size(length) : 0);
}

/* Without any span or zero threshold Prometheus would take a native histogram for a classic
 * one: client_model's convention is then one span of offset 0 and length 0. */
static int needs_noop_span(const struct hodei_native_view *n)
{
    return n->nspans == 0 && n->zero_threshold == 0;
}

static size_t deltas_size(const struct hodei_native_view *n)
{
    size_t bytes = 0;
    uint64_t prev = 0;
    for (unsigned i = 0; i < n->nbuckets; i++) {
        uint64_t c = hodei_native_count(n, i);
        bytes += hodei_pb_varint_size(zigzag((int64_t) (c - prev)));
        prev = c;
    }
    return bytes;
}

static size_t native_size(const struct hodei_native_view *n)
{
    size_t bytes = varint_field_size(zigzag(n->schema)) + DOUBLE_FIELD_SIZE
                   + varint_field_size(n->zero_count);
    for (unsigned i = 0; i < n->nspans; i++) {
        int32_t offset;
        uint32_t length;
        hodei_native_span(n, i, &offset, &length);
        bytes += len_field_size(span_size(offset, length));
    }
    if (needs_noop_span(n))
        bytes += len_field_size(0);
    if (n->nbuckets)
        bytes += len_field_size(deltas_size(n));
    return bytes;
}

/* sample_count and sample_sum: the native histogram's when there is one (its buckets must add
 * up to the count Prometheus is given), else the classic buckets'. */
static uint64_t sample_count(const struct hodei_pb_metric *m)
{
    if (m->native)
        return m->native->count;
    uint64_t total = 0;
    for (unsigned k = 0; k <= m->nbuckets; k++)
        total += classic_count(m, k);
    return total;
}

static size_t histogram_size(const struct hodei_pb_metric *m)
{
    struct timestamp ts;
    size_t bytes = varint_field_size(sample_count(m)) + DOUBLE_FIELD_SIZE;
    uint64_t cumulative = 0;
    for (unsigned k = 0; k <= m->nbuckets; k++) {
        cumulative += classic_count(m, k);
        if (k < m->nbuckets || exemplar_of(m, k))
            bytes += len_field_size(bucket_size(m, k, cumulative));
    }
    if (split_time(m->created, &ts))
        bytes += len_field_size(timestamp_size(&ts));
    if (m->native)
        bytes += native_size(m->native);
    return bytes;
}

/* The largest varint run written as one piece (each delta takes at most 10 bytes). */
#define DELTAS_PER_PIECE 256

static int put_native(struct out *o, const struct hodei_native_view *n)
{
    unsigned char *p = piece_begin(o);
    if (p == NULL)
        return -1;
    p = put_varint_field(p, HIST_SCHEMA, zigzag(n->schema));
    p = put_double_field(p, HIST_ZERO_THRESHOLD, n->zero_threshold);
    p = put_varint_field(p, HIST_ZERO_COUNT, n->zero_count);
    if (needs_noop_span(n))
        p = put_len(p, HIST_POSITIVE_SPAN, 0);
    piece_end(o, p);
    for (unsigned i = 0; i < n->nspans; i++) {
        int32_t offset;
        uint32_t length;
        hodei_native_span(n, i, &offset, &length);
        if ((p = piece_begin(o)) == NULL)
            return -1;
        p = put_len(p, HIST_POSITIVE_SPAN, span_size(offset, length));
        if (offset)
            p = put_varint_field(p, SPAN_OFFSET, zigzag(offset));
        if (length)
            p = put_varint_field(p, SPAN_LENGTH, length);
        piece_end(o, p);
    }
    if (n->nbuckets == 0)
        return 0;
    if ((p = piece_begin(o)) == NULL)
        return -1;
    p = put_len(p, HIST_POSITIVE_DELTA, deltas_size(n));    /* packed */
    uint64_t prev = 0;
    for (unsigned i = 0; i < n->nbuckets; i++) {
        if (i % DELTAS_PER_PIECE == 0) {
            piece_end(o, p);
            if ((p = piece_begin(o)) == NULL)
                return -1;
        }
        uint64_t c = hodei_native_count(n, i);
        p = put_varint(p, zigzag((int64_t) (c - prev)));
        prev = c;
    }
    piece_end(o, p);
    return 0;
}

static int put_histogram(struct out *o, const struct hodei_pb_metric *m)
{
    struct timestamp ts;
    unsigned char *p = piece_begin(o);
    if (p == NULL)
        return -1;
    p = put_len(p, METRIC_HISTOGRAM, histogram_size(m));
    p = put_varint_field(p, HIST_SAMPLE_COUNT, sample_count(m));
    p = put_double_field(p, HIST_SAMPLE_SUM, m->native ? m->native->sum : m->sum);
    piece_end(o, p);
    uint64_t cumulative = 0;
    for (unsigned k = 0; k <= m->nbuckets; k++) {
        cumulative += classic_count(m, k);
        if (k == m->nbuckets && exemplar_of(m, k) == NULL)
            break;
        if ((p = piece_begin(o)) == NULL)
            return -1;
        piece_end(o, put_bucket(p, m, k, cumulative));
    }
    if (split_time(m->created, &ts)) {
        if ((p = piece_begin(o)) == NULL)
            return -1;
        piece_end(o, put_timestamp(p, HIST_CREATED, &ts));
    }
    return m->native ? put_native(o, m->native) : 0;
}

/* ---- Metric, MetricFamily ------------------------------------------------------------- */

/* Size of the Metric's value message (Counter, Gauge or Histogram). */
static size_t value_size(const struct hodei_pb_metric *m)
{
    struct timestamp ts;
    switch (m->type) {
    case HODEI_COUNTER:
        return DOUBLE_FIELD_SIZE
               + (split_time(m->created, &ts) ? len_field_size(timestamp_size(&ts)) : 0);
    case HODEI_GAUGE:
        return DOUBLE_FIELD_SIZE;
    case HODEI_HISTOGRAM:
        return histogram_size(m);
    }
    return 0;
}

size_t hodei_pb_metric_size(const struct hodei_pb_metric *m)
{
    size_t bytes = len_field_size(value_size(m));
    for (unsigned i = 0; i < m->nlabels; i++)
        bytes += len_field_size(label_pair_size(m->label_name_len[i], m->label_value_len[i]));
    return bytes;
}

/* The head of a Metric (its labels) is one piece, and so is a whole counter or gauge: at most
 * HODEI_LABELS_MAX label pairs of a schema name and a value of HODEI_LABEL_VALUE_MAX bytes, and
 * 30 bytes of value. */
_Static_assert(HODEI_LABELS_MAX * (6 + 64 + HODEI_LABEL_VALUE_MAX) + 64 < HODEI_SINK_MIN,
               "a scalar Metric must fit in one piece");

int hodei_pb_put_metric(struct hodei_sink *s, const struct hodei_pb_metric *m,
                        size_t metric_size, size_t *written)
{
    struct out o = { s, written };
    struct timestamp ts;
    unsigned char *p = piece_begin(&o);
    if (p == NULL)
        return -1;
    p = put_len(p, MF_METRIC, metric_size);
    for (unsigned i = 0; i < m->nlabels; i++)
        p = put_label_pair(p, METRIC_LABEL, m->label_name[i], m->label_name_len[i],
                           m->label_value[i], m->label_value_len[i]);
    if (m->type == HODEI_HISTOGRAM) {
        piece_end(&o, p);
        return put_histogram(&o, m);
    }
    if (m->type == HODEI_GAUGE) {
        p = put_len(p, METRIC_GAUGE, value_size(m));
        p = put_double_field(p, GAUGE_VALUE, m->value);
    } else {
        p = put_len(p, METRIC_COUNTER, value_size(m));
        p = put_double_field(p, COUNTER_VALUE, m->value);
        if (split_time(m->created, &ts))
            p = put_timestamp(p, COUNTER_CREATED, &ts);
    }
    piece_end(&o, p);
    return 0;
}

size_t hodei_pb_family_size(const struct hodei_family *f, size_t metrics_bytes)
{
    return len_field_size(f->name_len) + len_field_size(strlen(f->help))
           + varint_field_size(metric_type[f->type]) + metrics_bytes;
}

int hodei_pb_put_family_head(struct hodei_sink *s, const struct hodei_family *f,
                             size_t family_size, size_t *written)
{
    struct out o = { s, written };
    unsigned char *p = piece_begin(&o);
    if (p == NULL)
        return -1;
    p = put_varint(p, family_size);
    p = put_bytes_field(p, MF_NAME, f->name, f->name_len);
    p = put_bytes_field(p, MF_HELP, f->help, strlen(f->help));
    p = put_varint_field(p, MF_TYPE, metric_type[f->type]);
    piece_end(&o, p);
    return 0;
}
