/*
 * hodei_render.h — the one Prometheus renderer.  Every exposition Hodei serves (nginx's
 * /api/v1/metrics, build/hodei-metrics) comes from hodei_render().
 *
 * Input: validated snapshots (the daemon's from the segment, nginx's from its HTTP zone) and
 * the scheduler's state read from the segment header.  Families come out in schema order, each
 * with HELP and TYPE exactly once, even when no source has samples for it; samples of a family
 * present in several sources are concatenated (their label sets never collide).
 *
 * Formats: text 0.0.4, OpenMetrics 1.0, and Prometheus's protobuf exposition (one
 * length-delimited io.prometheus.client.MetricFamily per family, see hodei_protobuf.h).
 * What a histogram series carries beyond its classic buckets comes from the snapshot: its
 * exemplars go into OpenMetrics (after each _bucket sample) and protobuf, its native part into
 * protobuf alone; text 0.0.4 has neither.
 *
 * Output goes to a caller's sink so that nginx can render straight into its own buffers.
 */
#ifndef HODEI_RENDER_H
#define HODEI_RENDER_H

#include <stddef.h>
#include <stdint.h>
#include "hodei_native.h"
#include "hodei_snapshot.h"

/* The largest single write the renderer makes; flush must leave at least this much room. */
#define HODEI_SINK_MIN 4096

struct hodei_sink {
    char *pos;
    char *end;
    /* Called when fewer than HODEI_SINK_MIN bytes are left.  Must consume or move the data
     * in [start, pos) as it likes and leave pos/end with >= HODEI_SINK_MIN bytes of room.
     * Returns 0, or -1 to abort the rendering. */
    int (*flush)(struct hodei_sink *s);
    void *ctx;
    size_t total;   /* bytes handed to flush so far; the caller adds what is left at the end */
};

/* Makes sure HODEI_SINK_MIN bytes are free at pos.  Returns 0, or -1 if flush failed. */
static inline int hodei_sink_reserve(struct hodei_sink *s)
{
    return s->end - s->pos >= HODEI_SINK_MIN ? 0 : s->flush(s);
}

enum hodei_format { HODEI_FMT_TEXT, HODEI_FMT_OPENMETRICS, HODEI_FMT_PROTOBUF };

#define HODEI_CONTENT_TYPE_TEXT "text/plain; version=0.0.4; charset=utf-8"
#define HODEI_CONTENT_TYPE_OPENMETRICS \
    "application/openmetrics-text; version=1.0.0; charset=utf-8"
#define HODEI_CONTENT_TYPE_PROTOBUF \
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"

struct hodei_render_input {
    const struct hodei_snapshot *const *snapshots;   /* validated; NULL entries are skipped */
    size_t   nsnapshots;
    int      scheduler_up;          /* hodei_scheduler_up */
    double   snapshot_age;          /* hodei_metrics_snapshot_age_seconds; NaN: no sample */
    double   created;               /* _created of header-derived families; unused today */
};

/* Renders everything.  Returns 0, or -1 if the sink's flush failed. */
int hodei_render(struct hodei_sink *sink, enum hodei_format fmt,
                 const struct hodei_render_input *in);

/* Chooses the format from an Accept header value (NULL: text).  OpenMetrics only when
 * application/openmetrics-text is acceptable with a q at least that of text/plain.  The
 * protobuf format only when allow has HODEI_ALLOW_PROTOBUF and the header accepts
 * application/vnd.google.protobuf with proto=io.prometheus.client.MetricFamily and
 * encoding=delimited at a q at least those of the other two (what Prometheus sends when its
 * native-histograms feature is on). */
#define HODEI_ALLOW_PROTOBUF 1u
enum hodei_format hodei_format_negotiate(const char *accept, size_t len, unsigned allow);

/* ---- pieces, exported for tests and for anyone formatting a sample ------------------- */

#define HODEI_NUM_MAX 32
/* Shortest text that parses back to exactly v; "+Inf", "-Inf", "NaN".  Returns its length. */
size_t hodei_fmt_double(char *dst, double v);
size_t hodei_fmt_u64(char *dst, uint64_t v);
/* Escapes a label value (\\ \" \n); dst must hold 2*len bytes.  Returns the length. */
size_t hodei_escape_label(char *dst, const char *src, size_t len);

#endif
