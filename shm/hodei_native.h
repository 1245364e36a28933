/*
 * hodei_native.h — native (sparse exponential) histograms as Prometheus defines them:
 * recording, a consistent copy across threads, and a compact position-independent encoding
 * with a validator for untrusted copies.
 *
 * Buckets.  At schema s the base is 2^(2^-s); bucket k holds the observations v with
 * base^(k-1) < v <= base^k.  The bounds are Prometheus's own (client_golang and the server
 * share one table of 2^(i/8)/2 values, 0 <= i < 8, scaled by frexp's exponent), so a value at
 * or next to a bound lands in the bucket Prometheus puts it in, also at the three doubles per
 * octave where that table and exact arithmetic disagree.  A power of two 2^j is the upper
 * bound of bucket j * 2^s.  Observations v <= zero_threshold go to the zero bucket.
 *
 * Recording starts at schema 3 (growth factor 2^(1/8), at most 4.4% relative error for a
 * quantile taken at a bucket's geometric middle).  The populated buckets always lie inside a
 * window of HODEI_NATIVE_BUCKETS_MAX consecutive bucket indexes.  An observation that would
 * widen the window past that lowers the schema by one, as often as needed: bucket k of the
 * old schema merges into bucket ceil(k/2) of the new one (buckets 2j-1 and 2j become j), so
 * count, sum and every bound that remains keep their meaning.  The resolution is never
 * raised again (that would need a counter reset).  At schema -4 the whole range of positive
 * doubles spans 132 buckets, so the reduction always ends.
 *
 * Threads.  One writer thread calls hodei_native_observe(); any other thread may call
 * hodei_native_read() at any time and gets a consistent copy (count == zero_count + every
 * bucket, sum of exactly those observations).  The writer never waits: it brackets each
 * change with a sequence number (odd while changing, release/acquire fences as in a seqlock;
 * every field is accessed with relaxed atomics), and a reader that saw the sequence move
 * retries, a bounded number of times.
 *
 * Encoding (hodei_native_encode, hodei_native_validate): little-endian host layout, no
 * pointers, any alignment (every field is read with memcpy):
 *
 *   off  0  u16  magic          HODEI_NATIVE_MAGIC
 *   off  2  i8   schema         HODEI_NATIVE_SCHEMA_MIN .. HODEI_NATIVE_SCHEMA (what recording
 *                               produces; Prometheus would take up to 8)
 *   off  3  u8   reserved       0
 *   off  4  u16  nspans         <= nbuckets
 *   off  6  u16  nbuckets       <= HODEI_NATIVE_BUCKETS_MAX, = sum of the span lengths
 *   off  8  f64  zero_threshold finite, >= 0
 *   off 16  u64  zero_count
 *   off 24  u64  count          = zero_count + sum of bucket counts (no overflow)
 *   off 32  f64  sum            finite, >= 0
 *   off 40  span[nspans]        { i32 offset; u32 length }: offset is the first bucket's index
 *                               for span 0, the gap (>= 1 empty buckets) after the previous
 *                               span otherwise; length >= 1; every bucket lies above the zero
 *                               bucket, below DBL_MAX's, and all within a window of
 *                               HODEI_NATIVE_BUCKETS_MAX indexes
 *           u64 count[nbuckets] absolute count of each bucket, spans' buckets in order
 *
 * Size: 40 + 8 * (nspans + nbuckets) bytes, at most HODEI_NATIVE_ENCODED_MAX.  Span and bucket
 * layout is what the protobuf exposition carries (there as deltas); runs of up to two empty
 * buckets stay inside a span, since a new span costs more bytes than they do.  Only positive
 * buckets exist: the histograms Hodei records are durations.
 */
#ifndef HODEI_NATIVE_H
#define HODEI_NATIVE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define HODEI_NATIVE_SCHEMA      3       /* where recording starts */
#define HODEI_NATIVE_SCHEMA_MIN  (-4)    /* the lowest exponential schema Prometheus knows */
/* Width of the bucket window: 160 indexes cover 20 doublings (a ratio of about 1:10^6) at
 * schema 3, e.g. 60 ns .. 62 ms or 1 us .. 1 s, before any resolution is given up; it is also
 * the OpenTelemetry SDKs' default for the same kind of histogram.  It bounds what a series
 * costs everywhere: 1,280 bytes recorded, HODEI_NATIVE_ENCODED_MAX encoded, 160 buckets in a
 * scrape. */
#define HODEI_NATIVE_BUCKETS_MAX 160
/* Zero threshold for durations in seconds: 2^-24 s, about 60 ns.  Anything shorter is below
 * what two CLOCK_MONOTONIC reads resolve (each costs 20-30 ns), while 1 us lies 4 doublings
 * (32 buckets) above it.  A power of two is a bucket bound at every schema, so the zero
 * bucket never splits a bucket, before or after a reduction. */
#define HODEI_NATIVE_ZERO_THRESHOLD 0x1p-24
#define HODEI_NATIVE_READ_TRIES  1000

#define HODEI_NATIVE_MAGIC       0x484eu   /* "NH" */
#define HODEI_NATIVE_HEADER_SIZE 40u
#define HODEI_NATIVE_ENCODED_MAX \
    (HODEI_NATIVE_HEADER_SIZE + 8u * 2u * HODEI_NATIVE_BUCKETS_MAX)   /* 2,600 bytes */

/* ---- recording ------------------------------------------------------------------------ */

struct hodei_native {
    uint64_t seq;              /* even: stable; odd: the writer is changing the fields */
    int32_t  schema;
    int32_t  first_key;        /* bucket index of bucket[0] */
    uint32_t nkeys;            /* bucket[0..nkeys) hold first_key ..; the rest are 0 */
    uint32_t reserved;
    double   zero_threshold;
    uint64_t zero_count;
    uint64_t count;
    double   sum;
    uint64_t bucket[HODEI_NATIVE_BUCKETS_MAX];
};

/* Empty histogram at HODEI_NATIVE_SCHEMA.  zero_threshold must be finite and >= 0
 * (HODEI_NATIVE_ZERO_THRESHOLD for seconds).  Returns 0, or -1 for a bad threshold.
 * Not concurrent with anything else on h. */
int hodei_native_init(struct hodei_native *h, double zero_threshold);

/* Records v.  Writer thread only (one writer per histogram).  v must be finite and >= 0 —
 * durations from a monotonic clock always are; anything else is refused with -1 and changes
 * nothing, so the caller counts the same observations in its classic buckets.  Returns 0. */
int hodei_native_observe(struct hodei_native *h, double v);

/* Copies live into *copy, consistently, from any thread (also while the writer observes).
 * Returns 0, or -1 when the writer changed it during each of HODEI_NATIVE_READ_TRIES tries
 * (then *copy is unspecified: keep using the previous copy).  *copy is private afterwards. */
int hodei_native_read(const struct hodei_native *live, struct hodei_native *copy);

/* Bucket index of a finite v > 0 at schema (HODEI_NATIVE_SCHEMA_MIN .. HODEI_NATIVE_SCHEMA),
 * the same index Prometheus computes. */
int32_t hodei_native_key(double v, int schema);

/* ---- encoding ------------------------------------------------------------------------- */

/* Encodes h, which no thread may be changing (a copy from hodei_native_read, or a histogram
 * the caller alone writes), into dst[0..cap).  Returns the encoded size, 0 if cap is too small
 * (HODEI_NATIVE_ENCODED_MAX always suffices). */
size_t hodei_native_encode(const struct hodei_native *h, void *dst, size_t cap);

/* A validated encoding.  Spans and counts stay in the encoded bytes: read them with the two
 * accessors below. */
struct hodei_native_view {
    int      schema;
    double   zero_threshold;
    uint64_t zero_count;
    uint64_t count;
    double   sum;
    unsigned nspans;
    unsigned nbuckets;
    const unsigned char *spans;    /* nspans x { i32 offset, u32 length } */
    const unsigned char *counts;   /* nbuckets x u64 */
};

/* Checks every field and bound of p[0..len), which must be exactly one encoding, and fills
 * *out.  Returns 0, or -1 with *why pointing at a static description of the first defect. */
int hodei_native_validate(const void *p, size_t len, struct hodei_native_view *out,
                          const char **why);

/* Makes h (which no other thread may be using yet) the histogram a validated encoding v
 * describes: how a stored histogram comes back after a restart.  Recording goes on from there,
 * at v's schema.  Returns 0, or -1 (h unchanged) if v's buckets fit no window. */
int hodei_native_restore(struct hodei_native *h, const struct hodei_native_view *v);

/* Span i (< nspans) and the count of bucket i (< nbuckets) of a validated encoding. */
static inline void hodei_native_span(const struct hodei_native_view *v, unsigned i,
                                     int32_t *offset, uint32_t *length)
{
    memcpy(offset, v->spans + 8 * (size_t) i, 4);
    memcpy(length, v->spans + 8 * (size_t) i + 4, 4);
}

static inline uint64_t hodei_native_count(const struct hodei_native_view *v, unsigned i)
{
    uint64_t c;
    memcpy(&c, v->counts + 8 * (size_t) i, 8);
    return c;
}

#endif
