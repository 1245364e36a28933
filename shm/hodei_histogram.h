/*
 * hodei_histogram.h — a histogram recorded as the snapshot carries it: classic buckets, a native
 * histogram (hodei_native.h) and, per classic bucket, the exemplar of its most recent
 * observation, all from the same observations.
 *
 * Threads.  One writer thread calls hodei_histogram_observe(); any other thread may call
 * hodei_histogram_read() at any time.  One sequence number brackets each observation as a
 * whole (classic bucket, sum, exemplar and native part), so a copy's classic buckets, native
 * buckets, count and sum describe exactly the same observations: Prometheus rejects a native
 * histogram whose buckets add up to more than its count, and the snapshot's validator refuses
 * a series whose classic and native parts disagree.  The writer never waits; every field is
 * stored and loaded with relaxed atomics between release/acquire fences, as in a seqlock, and
 * a reader that saw the sequence move retries, a bounded number of times.  (The native part
 * keeps its own sequence inside; a copy of it is taken within the outer bracket.)
 *
 * Observations must be finite and >= 0 (durations): anything else is refused and changes
 * nothing, in the classic and the native part alike.
 */
#ifndef HODEI_HISTOGRAM_H
#define HODEI_HISTOGRAM_H

#include <stdint.h>
#include "hodei_native.h"
#include "hodei_schema.h"
#include "hodei_snapshot.h"

#define HODEI_HISTOGRAM_READ_TRIES 1000

/* An exemplar held by value: its label names and values packed into text. */
struct hodei_exemplar_slot {
    double   value;
    double   timestamp;
    uint32_t nlabels;            /* 0: none yet */
    uint8_t  name_len[HODEI_EXEMPLAR_LABELS_MAX];
    uint8_t  value_len[HODEI_EXEMPLAR_LABELS_MAX];
    uint64_t text[HODEI_EXEMPLAR_LABELS_BYTES / 8];   /* name 0, value 0, name 1, value 1 */
};

struct hodei_histogram {
    uint64_t seq;                /* even: stable; odd: the writer is inside an observation */
    const double *bounds;        /* nbuckets finite upper bounds, set by init, never changed */
    unsigned nbuckets;
    double   sum;
    uint64_t count[HODEI_BUCKETS_MAX + 1];             /* per bucket, +Inf last */
    struct hodei_exemplar_slot exemplar[HODEI_BUCKETS_MAX + 1];
    struct hodei_native native;
};

/* Empty histogram with classic bounds[0..nbuckets) (strictly increasing, finite; the array
 * must outlive h) and a native part for seconds (HODEI_NATIVE_ZERO_THRESHOLD).  Returns 0, or
 * -1 for bad bounds.  Not concurrent with anything else on h. */
int hodei_histogram_init(struct hodei_histogram *h, const double *bounds, unsigned nbuckets);

/* Records v.  Writer thread only.  ex (may be NULL) names what produced it: its labels and
 * timestamp become the exemplar of v's classic bucket (its value is v).  An exemplar whose
 * labels an exemplar cannot carry (hodei_snapshot.h) is dropped: v is counted without it.
 * Returns 0, or -1 (nothing changed) when v is NaN, negative or infinite. */
int hodei_histogram_observe(struct hodei_histogram *h, double v, const struct hodei_exemplar *ex);

/* The exemplar of a job's observation, as the daemon's histograms carry it:
 * {job_id, tenant_id} at unix time timestamp.  The strings must outlive *e. */
void hodei_job_exemplar(struct hodei_exemplar *e, const char *job_id, const char *tenant_id,
                        double timestamp);

/* Makes h (initialised, not yet read by any other thread) hold what was recorded before a
 * restart: classic sum and per-bucket counts[0..nbuckets] and the native part v (validated).
 * Exemplars start empty.  Returns 0, or -1 (h unchanged) when the parts disagree: a count or
 * a sum that differs, or a native part that fits no window. */
int hodei_histogram_restore(struct hodei_histogram *h, double sum, const uint64_t *counts,
                            const struct hodei_native_view *v);

/* Copies live into *copy consistently, from any thread.  Returns 0, or -1 when the writer
 * changed it during every try: *copy is then left as it was, so an older copy (or a freshly
 * initialised histogram) stays consistent and usable.  *copy is private afterwards. */
int hodei_histogram_read(const struct hodei_histogram *live, struct hodei_histogram *copy);

/* Appends h (a copy, or a histogram no thread is changing) as a series of the builder's
 * current family, which must be a histogram family with h's buckets: classic buckets, sum,
 * native part and exemplars.  Returns 0, or -1 (sticky builder error). */
int hodei_builder_histogram(struct hodei_builder *b, const char *const *labels, double created,
                            const struct hodei_histogram *h);

#endif
