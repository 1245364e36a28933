/*
 * hodei_snapshot.h — the snapshot payload: one self-contained, position-independent blob of
 * metric series, built by a producer (daemon, nginx HTTP zone, hodei-shm-fill) and rendered by
 * a reader.  Offsets only, never pointers; every offset is relative to the payload start.
 *
 *   payload  := header | family[nfamilies] | series records ... | string area
 *   family   := { id, nlabels, nbuckets, nseries, series_off, stride, bounds_off }
 *               ids strictly increasing; histograms carry their finite upper bounds
 *               (double[nbuckets], strictly increasing): nginx may configure its own, every
 *               other family's are exactly the schema's
 *   series   := label_ref[nlabels] (u32, into the string area), pad to 8,
 *               double created (unix seconds),
 *               counter/gauge:  double value
 *               histogram:      double sum, u64 bucket[nbuckets + 1]   (per bucket, NOT cumulative;
 *                                                                      the last one is +Inf)
 *                               u32 native      blob ref, or HODEI_SNAP_NONE
 *                               u32 exemplars   blob ref, or HODEI_SNAP_NONE
 *   string   := u16 len, len bytes of UTF-8 (no NUL, 1..HODEI_LABEL_VALUE_MAX)
 *   blob     := u16 len, len bytes (in the string area too; read with memcpy, any alignment)
 *
 * A histogram's native blob is a native histogram as hodei_native.h encodes it, describing the
 * same observations as the classic buckets: its count is theirs, its sum is the series' sum.
 * Within a family, every series has a native part or none has (Prometheus decides by the first
 * one).  The exemplars blob holds nbuckets + 1 records of HODEI_SNAP_EXEMPLAR_SIZE bytes, one
 * per classic bucket, +Inf last:
 *
 *   exemplar := f64 value, f64 timestamp (unix seconds), u32 nlabels (0: this bucket has none),
 *               u32 label_ref[2 * HODEI_EXEMPLAR_LABELS_MAX] (name, value, name, value; unused
 *               ones 0; the records of one blob may share a label name's string), u32 reserved (0)
 *
 * An exemplar is the most recent observation of its bucket: its value lies in the bucket, the
 * bucket is not empty, its label names are Prometheus label names and names and values
 * together take at most HODEI_EXEMPLAR_LABELS_BYTES bytes (OpenMetrics' limit of 128
 * characters).  A bucket without an exemplar is all zeros.
 *
 * The layout is that of HODEI_SEG_VERSION (hodei_segment.h): a change here is a new version.
 *
 * Storing per-bucket counts makes "+Inf bucket == _count" and monotone buckets true by
 * construction; the renderer accumulates.  A reader trusts nothing it has not validated:
 * hodei_snapshot_validate() checks every offset, length, count and string before a view is
 * handed out, and the renderer only ever reads through a validated view.
 */
#ifndef HODEI_SNAPSHOT_H
#define HODEI_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>
#include "hodei_native.h"
#include "hodei_schema.h"

#define HODEI_SNAP_MAGIC 0x504e5348u   /* "HSNP" */
#define HODEI_SNAP_NONE  0xffffffffu   /* a histogram's blob ref when it has no such part */
#define HODEI_SNAP_EXEMPLAR_SIZE 40u

/* The most recent observation of a classic bucket, with what produced it (e.g. job_id and
 * tenant_id).  Names and values together at most HODEI_EXEMPLAR_LABELS_BYTES bytes of valid
 * UTF-8, names Prometheus label names: OpenMetrics allows 128 characters. */
#define HODEI_EXEMPLAR_LABELS_MAX   2
#define HODEI_EXEMPLAR_LABELS_BYTES 128
struct hodei_exemplar {
    unsigned nlabels;               /* 0: no exemplar */
    struct {
        const char *name, *value;   /* not NUL-terminated */
        size_t      name_len, value_len;
    } label[HODEI_EXEMPLAR_LABELS_MAX];
    double   value;                 /* the observation */
    double   timestamp;             /* unix seconds it was made */
};

/* 1 when e's labels are what an exemplar may carry (at most HODEI_EXEMPLAR_LABELS_MAX, names
 * [a-zA-Z_][a-zA-Z0-9_]*, values non-empty UTF-8, all together within
 * HODEI_EXEMPLAR_LABELS_BYTES), else 0. */
int hodei_exemplar_labels_valid(const struct hodei_exemplar *e);

struct hodei_snap_header {
    uint32_t magic;
    uint16_t nfamilies;
    uint16_t reserved;
    uint32_t strings_off;
    uint32_t strings_len;
    double   timestamp;        /* unix seconds the producer built it */
    uint64_t reserved2;
};

struct hodei_snap_family {
    uint16_t id;               /* enum hodei_family_id */
    uint8_t  nlabels;          /* must equal the schema's */
    uint8_t  nbuckets;         /* histograms: 1..HODEI_BUCKETS_MAX; others 0 */
    uint32_t nseries;
    uint32_t series_off;       /* 8-aligned */
    uint32_t stride;           /* must equal hodei_series_stride(id, nbuckets) */
    uint32_t bounds_off;       /* histograms: 8-aligned double[nbuckets]; others 0 */
    uint32_t reserved;
};

/* Bytes of one series record of family id with nbuckets finite buckets. */
size_t hodei_series_stride(enum hodei_family_id id, unsigned nbuckets);

/* Upper bound of a payload holding caps[f] series of every family f (label values at most
 * HODEI_LABEL_VALUE_MAX bytes).  Families whose cap is 0 are left out of the bound. */
size_t hodei_payload_bound(const uint32_t caps[HODEI_F_COUNT]);
void   hodei_default_caps(uint32_t caps[HODEI_F_COUNT]);

/* ---- building (producers) ------------------------------------------------------------- */

struct hodei_builder {
    unsigned char *buf;
    size_t         cap;
    size_t         series_end;    /* next free byte of the series area */
    size_t         strings_used;  /* string area grows down from buf + cap */
    struct hodei_snap_family *cur;
    size_t         last_series;   /* offset of the record the last series call appended */
    int            last_id;
    int            error;         /* sticky: set when something did not fit or was invalid */
};

/* buf must be 8-aligned.  timestamp: unix seconds. */
void hodei_builder_init(struct hodei_builder *b, void *buf, size_t cap, double timestamp);
/* Families must be begun in increasing id order; a family may be empty.  Histograms get the
 * schema's buckets; hodei_builder_family_buckets() gives them others. */
void hodei_builder_family(struct hodei_builder *b, enum hodei_family_id id);
void hodei_builder_family_buckets(struct hodei_builder *b, enum hodei_family_id id,
                                  const double *bounds, unsigned nbuckets);
/* Appends a series to the current family.  labels[i] are label values in schema order.
 * Returns the record's value area (double *value for counters/gauges; for histograms
 * double sum followed by uint64_t bucket[nbuckets+1]), zeroed (a histogram's native and
 * exemplars refs: none); NULL on error (sticky). */
void *hodei_builder_series(struct hodei_builder *b, const char *const *labels, double created);
/* A histogram series just appended gets its native part (h: no other thread may change it,
 * e.g. a copy from hodei_native_read), or its exemplars: ex[0..nbuckets], +Inf last, nlabels 0
 * where a bucket has none.  Each may be attached once.  Returns 0, or -1 (sticky) when the
 * last series is not a histogram's, something does not fit or is invalid. */
int hodei_builder_native(struct hodei_builder *b, const struct hodei_native *h);
int hodei_builder_exemplars(struct hodei_builder *b, const struct hodei_exemplar *ex);
/* Convenience for scalar series. */
int hodei_builder_scalar(struct hodei_builder *b, const char *const *labels, double created,
                         double value);
/* Compacts the payload; returns its length, or 0 when b->error is set. */
size_t hodei_builder_finish(struct hodei_builder *b);

/* ---- reading (after copying out of the segment) ---------------------------------------- */

struct hodei_snapshot {
    const unsigned char *base;
    size_t               len;
    double               timestamp;
    const struct hodei_snap_family *family[HODEI_F_COUNT];   /* NULL when absent */
};

/* Validates payload[0..len) completely.  On success fills *out and returns 0; otherwise
 * returns -1 and points *why at a static description of the first defect found.
 * payload must be 8-aligned. */
int hodei_snapshot_validate(const void *payload, size_t len, struct hodei_snapshot *out,
                            const char **why);

/* Accessors over a validated snapshot. */
static inline const unsigned char *
hodei_series_at(const struct hodei_snapshot *s, const struct hodei_snap_family *f, uint32_t i)
{
    return s->base + f->series_off + (size_t) i * f->stride;
}

/* Label i of a series record: sets *len, returns the bytes (not NUL-terminated). */
const char *hodei_series_label(const struct hodei_snapshot *s, const unsigned char *series,
                               unsigned i, size_t *len);

/* The native part of histogram series rec of family f: 1 with *out filled, 0 when it has
 * none. */
int hodei_series_native(const struct hodei_snapshot *s, const struct hodei_snap_family *f,
                        const unsigned char *rec, struct hodei_native_view *out);
/* The exemplar of classic bucket k (0..nbuckets, +Inf last) of histogram series rec: 1 with
 * *out pointing into the snapshot, 0 when the bucket has none. */
int hodei_series_exemplar(const struct hodei_snapshot *s, const struct hodei_snap_family *f,
                          const unsigned char *rec, unsigned k, struct hodei_exemplar *out);

/* Offset of the created/value fields inside a record with nlabels labels. */
static inline size_t hodei_series_values_off(unsigned nlabels)
{
    return ((size_t) nlabels * 4 + 7) & ~(size_t) 7;
}

#endif
