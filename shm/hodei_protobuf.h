/*
 * hodei_protobuf.h — Prometheus's protobuf exposition: io.prometheus.client.MetricFamily
 * messages (field numbers from client_model's metrics.proto), each preceded by its length as
 * a varint ("encoding=delimited"), written straight into a hodei_sink.
 *
 * Nothing is built in memory: every length prefix is computed from the same inputs as the
 * bytes it announces (hodei_pb_*_size), then the bytes are written piece by piece, each piece
 * smaller than HODEI_SINK_MIN.  The renderer (hodei_render.c) walks the families; this file
 * knows the messages.
 *
 * What a histogram carries: sample_count, sample_sum, the classic buckets (cumulative counts
 * and upper bounds; +Inf only when it has an exemplar, Prometheus adds it from the count),
 * each with its exemplar when there is one, created_timestamp, and with a native part: schema,
 * zero_threshold, zero_count, positive_span and positive_delta (packed).  Counters carry value
 * and created_timestamp, gauges their value.  The wire format is little-endian; so is every
 * host Hodei builds for (checked below).
 */
#ifndef HODEI_PROTOBUF_H
#define HODEI_PROTOBUF_H

#include <stddef.h>
#include <stdint.h>
#include "hodei_native.h"
#include "hodei_render.h"
#include "hodei_schema.h"
#include "hodei_snapshot.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the protobuf writer stores doubles as they lie in memory: little-endian hosts only"
#endif

/* One series as the exposition sees it; pointers into a validated snapshot and the extras. */
struct hodei_pb_metric {
    enum hodei_metric_type type;
    unsigned nlabels;
    const char *label_name[HODEI_LABELS_MAX];
    size_t      label_name_len[HODEI_LABELS_MAX];
    const char *label_value[HODEI_LABELS_MAX];
    size_t      label_value_len[HODEI_LABELS_MAX];
    double   value;                 /* counter, gauge */
    double   created;               /* counter, histogram: unix seconds; 0: unknown */
    /* histograms */
    double   sum;
    unsigned nbuckets;              /* finite classic buckets */
    const unsigned char *bounds;    /* double[nbuckets], any alignment */
    const unsigned char *counts;    /* u64[nbuckets + 1], per bucket (not cumulative), +Inf last */
    const struct hodei_exemplar *exemplars;    /* NULL or nbuckets + 1 (nlabels 0: none) */
    const struct hodei_native_view *native;    /* NULL: classic buckets only */
};

/* Bytes of the Metric message m (without the tag and length that introduce it). */
size_t hodei_pb_metric_size(const struct hodei_pb_metric *m);

/* Bytes of a MetricFamily of family f whose Metric messages take metrics_bytes in all
 * (each with its tag and length), without the delimiting length. */
size_t hodei_pb_family_size(const struct hodei_family *f, size_t metrics_bytes);

/* The writers add what they wrote to *written, so the caller can check it against the sizes
 * it announced.  They return 0, or -1 when the sink's flush failed. */

/* The family's delimiting length (family_size), name, help and type. */
int hodei_pb_put_family_head(struct hodei_sink *s, const struct hodei_family *f,
                             size_t family_size, size_t *written);
/* MetricFamily field 4: tag, length (metric_size, from hodei_pb_metric_size) and m. */
int hodei_pb_put_metric(struct hodei_sink *s, const struct hodei_pb_metric *m,
                        size_t metric_size, size_t *written);

/* Bytes of a varint; exported for tests and for the delimiting length of a family. */
static inline size_t hodei_pb_varint_size(uint64_t v)
{
    return 1 + (size_t) (63 - __builtin_clzll(v | 1)) / 7;
}

#endif
