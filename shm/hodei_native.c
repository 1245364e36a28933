/* hodei_native.c — native histograms: recording, copying, encoding (see hodei_native.h). */
#include "hodei_native.h"
#include "hodei_relaxed.h"

#include <float.h>
#include <math.h>
#include <sched.h>

/* Prometheus's bounds of schema 3 within one octave: 2^(i/8)/2 as its table spells them
 * (client_golang's nativeHistogramBounds[3], the server's exponentialBounds[3]).  The table is
 * the definition, and it is not exact: entry 1 is the double just above 2^(1/8)/2, entries 6
 * and 7 are two doubles below 2^(i/8)/2, so at three doubles per octave Prometheus's bucket
 * differs from exact arithmetic's.  We put them where Prometheus does. */
static const double octave_bounds[8] = {
    0.5, 0.5452538663326288, 0.5946035575013605, 0.6484197773255048,
    0.7071067811865475, 0.7711054127039704, 0.8408964152537144, 0.9170040432046711,
};

/* ceil(k / 2^d), d >= 0, without relying on the sign behaviour of >> */
static int64_t ceil_shift(int64_t k, int d)
{
    return k >= 0 ? (k + ((int64_t) 1 << d) - 1) >> d : -((-k) >> d);
}

static int32_t key_schema3(double v)
{
    int exp;
    double frac = frexp(v, &exp);              /* v = frac * 2^exp, frac in [0.5, 1) */
    int i = 0;
    for (int j = 0; j < 8; j++)                /* i = first j with octave_bounds[j] >= frac */
        i += frac > octave_bounds[j];
    return (int32_t) (i + (exp - 1) * 8);
}

int32_t hodei_native_key(double v, int schema)
{
    /* the bounds of a lower schema are every 2^(3-schema)-th bound of schema 3 */
    return (int32_t) ceil_shift(key_schema3(v), HODEI_NATIVE_SCHEMA - schema);
}

/* ---- recording ------------------------------------------------------------------------ */

int hodei_native_init(struct hodei_native *h, double zero_threshold)
{
    if (!(zero_threshold >= 0) || !isfinite(zero_threshold))
        return -1;
    memset(h, 0, sizeof(*h));
    h->schema = HODEI_NATIVE_SCHEMA;
    h->zero_threshold = zero_threshold;
    return 0;
}

/* Moves the buckets to (schema, first_key .. first_key + nkeys - 1), which must hold every
 * populated bucket after merging: old bucket k lands in ceil(k / 2^(old - new schema)). */
static void rebase(struct hodei_native *h, int schema, int64_t first_key, uint32_t nkeys)
{
    uint64_t merged[HODEI_NATIVE_BUCKETS_MAX] = { 0 };
    int shift = h->schema - schema;
    for (uint32_t i = 0; i < h->nkeys; i++)
        if (h->bucket[i])
            merged[ceil_shift(h->first_key + (int64_t) i, shift) - first_key] += h->bucket[i];
    for (unsigned i = 0; i < HODEI_NATIVE_BUCKETS_MAX; i++)
        if (h->bucket[i] != merged[i])
            STORE(h->bucket[i], merged[i]);
    STORE(h->schema, schema);
    STORE(h->first_key, (int32_t) first_key);
    STORE(h->nkeys, nkeys);
}

static void count_in_bucket(struct hodei_native *h, double v)
{
    int64_t key = hodei_native_key(v, h->schema);
    int64_t first = h->first_key, last = first + (int64_t) h->nkeys - 1;
    if (h->nkeys == 0) {
        STORE(h->first_key, (int32_t) key);
        STORE(h->nkeys, 1);
    } else if (key < first || key > last) {
        int64_t lo = key < first ? key : first;
        int64_t hi = key > last ? key : last;
        int schema = h->schema;
        while (hi - lo + 1 > HODEI_NATIVE_BUCKETS_MAX && schema > HODEI_NATIVE_SCHEMA_MIN) {
            schema--;                          /* halve the resolution: pairs merge */
            lo = ceil_shift(lo, 1);
            hi = ceil_shift(hi, 1);
        }
        rebase(h, schema, lo, (uint32_t) (hi - lo + 1));
        key = hodei_native_key(v, schema);
    }
    uint64_t *b = &h->bucket[key - h->first_key];
    STORE(*b, *b + 1);
}

int hodei_native_observe(struct hodei_native *h, double v)
{
    if (!(v >= 0) || isinf(v))                 /* NaN, negative or infinite */
        return -1;
    uint64_t seq = h->seq;
    STORE(h->seq, seq + 1);
    __atomic_thread_fence(__ATOMIC_RELEASE);   /* the odd sequence before any field */
    if (v <= h->zero_threshold)
        STORE(h->zero_count, h->zero_count + 1);
    else
        count_in_bucket(h, v);
    STORE(h->count, h->count + 1);
    store_double(&h->sum, h->sum + v);
    __atomic_store_n(&h->seq, seq + 2, __ATOMIC_RELEASE);   /* every field before the even one */
    return 0;
}

int hodei_native_read(const struct hodei_native *live, struct hodei_native *copy)
{
    for (int tries = 0; tries < HODEI_NATIVE_READ_TRIES; tries++) {
        uint64_t seq = __atomic_load_n(&live->seq, __ATOMIC_ACQUIRE);
        if (seq & 1) {
            sched_yield();                     /* a preempted writer may share this core */
            continue;
        }
        copy->seq = 0;
        copy->schema = LOAD(live->schema);
        copy->first_key = LOAD(live->first_key);
        copy->nkeys = LOAD(live->nkeys);
        copy->reserved = 0;
        copy->zero_threshold = live->zero_threshold;     /* set before sharing, never changed */
        copy->zero_count = LOAD(live->zero_count);
        copy->count = LOAD(live->count);
        copy->sum = load_double(&live->sum);
        uint32_t n = copy->nkeys <= HODEI_NATIVE_BUCKETS_MAX ? copy->nkeys : 0;
        for (uint32_t i = 0; i < n; i++)
            copy->bucket[i] = LOAD(live->bucket[i]);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);   /* the fields before the second look */
        if (__atomic_load_n(&live->seq, __ATOMIC_RELAXED) == seq
            && copy->nkeys <= HODEI_NATIVE_BUCKETS_MAX) {
            memset(copy->bucket + n, 0, sizeof(copy->bucket) - n * sizeof(copy->bucket[0]));
            return 0;
        }
    }
    return -1;
}

/* ---- encoding ------------------------------------------------------------------------- */

/* A new span starts after more than this many empty buckets: an empty bucket costs one
 * byte in the exposition (a zero delta), a span two to six. */
#define SPAN_GAP_MAX 2

struct span_walk {
    unsigned nspans, nbuckets;
};

/* Counts the spans and their buckets (empty ones inside a span included) and, when spans is
 * not NULL, writes them in the encoding's form: the first span's offset is its first
 * bucket's index, every other one the number of empty buckets before it. */
static struct span_walk walk_spans(const struct hodei_native *h, unsigned char *spans)
{
    struct span_walk w = { 0, 0 };
    int64_t last = -1;                         /* index of the last populated bucket so far */
    int64_t span_start = 0;
    for (uint32_t i = 0; i < h->nkeys; i++) {
        if (h->bucket[i] == 0)
            continue;
        if (last >= 0 && i - last - 1 <= SPAN_GAP_MAX) {
            last = i;
            continue;
        }
        if (last >= 0 && spans) {              /* close the previous span */
            uint32_t len = (uint32_t) (last - span_start + 1);
            memcpy(spans + 8 * (w.nspans - 1) + 4, &len, 4);
        }
        if (last >= 0)
            w.nbuckets += (unsigned) (last - span_start + 1);
        if (spans) {
            int32_t offset = last < 0 ? (int32_t) (h->first_key + (int64_t) i)
                                      : (int32_t) (i - last - 1);
            memcpy(spans + 8 * w.nspans, &offset, 4);
        }
        w.nspans++;
        span_start = i;
        last = i;
    }
    if (last >= 0) {
        uint32_t len = (uint32_t) (last - span_start + 1);
        if (spans)
            memcpy(spans + 8 * (w.nspans - 1) + 4, &len, 4);
        w.nbuckets += len;
    }
    return w;
}

size_t hodei_native_encode(const struct hodei_native *h, void *dst, size_t cap)
{
    if (h->nkeys > HODEI_NATIVE_BUCKETS_MAX)
        return 0;
    struct span_walk w = walk_spans(h, NULL);
    size_t size = HODEI_NATIVE_HEADER_SIZE + 8 * ((size_t) w.nspans + w.nbuckets);
    if (size > cap)
        return 0;
    unsigned char *p = dst;
    uint16_t magic = HODEI_NATIVE_MAGIC, nspans = (uint16_t) w.nspans,
             nbuckets = (uint16_t) w.nbuckets;
    int8_t schema = (int8_t) h->schema;
    memset(p, 0, HODEI_NATIVE_HEADER_SIZE);
    memcpy(p, &magic, 2);
    memcpy(p + 2, &schema, 1);
    memcpy(p + 4, &nspans, 2);
    memcpy(p + 6, &nbuckets, 2);
    memcpy(p + 8, &h->zero_threshold, 8);
    memcpy(p + 16, &h->zero_count, 8);
    memcpy(p + 24, &h->count, 8);
    memcpy(p + 32, &h->sum, 8);
    unsigned char *spans = p + HODEI_NATIVE_HEADER_SIZE;
    walk_spans(h, spans);
    /* the counts: every bucket from each span's first to its last */
    unsigned char *counts = spans + 8 * (size_t) w.nspans;
    int64_t i = 0;
    for (unsigned s = 0; s < w.nspans; s++) {
        int32_t offset;
        uint32_t len;
        memcpy(&offset, spans + 8 * s, 4);
        memcpy(&len, spans + 8 * s + 4, 4);
        i = s == 0 ? offset - (int64_t) h->first_key : i + offset;
        for (uint32_t k = 0; k < len; k++, i++, counts += 8)
            memcpy(counts, &h->bucket[i], 8);
    }
    return size;
}

#define REJECT(msg) do { *why = (msg); return -1; } while (0)

int hodei_native_validate(const void *data, size_t len, struct hodei_native_view *out,
                          const char **why)
{
    const unsigned char *p = data;
    uint16_t magic, nspans, nbuckets;
    int8_t schema;

    memset(out, 0, sizeof(*out));
    if (len < HODEI_NATIVE_HEADER_SIZE)
        REJECT("native histogram shorter than its header");
    memcpy(&magic, p, 2);
    memcpy(&schema, p + 2, 1);
    memcpy(&nspans, p + 4, 2);
    memcpy(&nbuckets, p + 6, 2);
    if (magic != HODEI_NATIVE_MAGIC)
        REJECT("native histogram magic is wrong");
    if (p[3] != 0)
        REJECT("native histogram reserved byte is not 0");
    if (schema < HODEI_NATIVE_SCHEMA_MIN || schema > HODEI_NATIVE_SCHEMA)
        REJECT("native histogram schema out of range");
    if (nbuckets > HODEI_NATIVE_BUCKETS_MAX)
        REJECT("native histogram has too many buckets");
    if (nspans > nbuckets)
        REJECT("native histogram has more spans than buckets");
    if (len != HODEI_NATIVE_HEADER_SIZE + 8 * ((size_t) nspans + nbuckets))
        REJECT("native histogram length disagrees with its span and bucket counts");
    memcpy(&out->zero_threshold, p + 8, 8);
    memcpy(&out->zero_count, p + 16, 8);
    memcpy(&out->count, p + 24, 8);
    memcpy(&out->sum, p + 32, 8);
    if (!isfinite(out->zero_threshold) || out->zero_threshold < 0)
        REJECT("native histogram zero threshold is not a finite non-negative number");
    if (!isfinite(out->sum) || out->sum < 0)
        REJECT("native histogram sum is not a finite non-negative number");

    out->schema = schema;
    out->nspans = nspans;
    out->nbuckets = nbuckets;
    out->spans = p + HODEI_NATIVE_HEADER_SIZE;
    out->counts = out->spans + 8 * (size_t) nspans;

    /* every bucket above the zero bucket and at most DBL_MAX's; one window wide */
    int64_t highest = hodei_native_key(DBL_MAX, schema);
    int64_t lowest = out->zero_threshold == 0 ? hodei_native_key(DBL_TRUE_MIN, schema)
                     : out->zero_threshold < DBL_MAX
                         ? hodei_native_key(nextafter(out->zero_threshold, INFINITY), schema)
                         : highest + 1;                 /* no bucket can lie above it */
    int64_t key = 0, first = 0;
    uint64_t total = 0;
    for (unsigned s = 0; s < nspans; s++) {
        int32_t offset;
        uint32_t length;
        hodei_native_span(out, s, &offset, &length);
        if (length == 0 || length > nbuckets)
            REJECT("native histogram span is empty or longer than the bucket count");
        if (s > 0 && offset < 1)
            REJECT("native histogram span gap is not positive");
        key = s == 0 ? (first = offset) : key + offset;   /* offset < 2^31, key stays small */
        if (key < lowest || key > highest)
            REJECT("native histogram bucket outside the range of its schema and zero bucket");
        total += length;
        if (total > nbuckets)
            REJECT("native histogram spans hold more buckets than it has");
        key += length - 1;
        if (key > highest || key - first + 1 > HODEI_NATIVE_BUCKETS_MAX)
            REJECT("native histogram buckets span more than the bucket window");
        key++;
    }
    if (total != nbuckets)
        REJECT("native histogram spans hold fewer buckets than it has");

    uint64_t sum = out->zero_count;
    for (unsigned i = 0; i < nbuckets; i++) {
        uint64_t c = hodei_native_count(out, i);
        if (c > UINT64_MAX - sum)
            REJECT("native histogram bucket counts overflow");
        sum += c;
    }
    if (sum != out->count)
        REJECT("native histogram count is not the zero count plus every bucket");
    return 0;
}

int hodei_native_restore(struct hodei_native *h, const struct hodei_native_view *v)
{
    struct hodei_native r;
    memset(&r, 0, sizeof(r));
    r.schema = v->schema;
    r.zero_threshold = v->zero_threshold;
    r.zero_count = v->zero_count;
    r.count = v->count;
    r.sum = v->sum;
    int64_t key = 0;
    unsigned b = 0;
    for (unsigned s = 0; s < v->nspans; s++) {
        int32_t offset;
        uint32_t length;
        hodei_native_span(v, s, &offset, &length);
        key = s == 0 ? (r.first_key = offset) : key + offset;
        for (uint32_t k = 0; k < length; k++, key++) {
            if (key - r.first_key >= HODEI_NATIVE_BUCKETS_MAX || b >= v->nbuckets)
                return -1;
            r.bucket[key - r.first_key] = hodei_native_count(v, b++);
        }
    }
    r.nkeys = v->nspans ? (uint32_t) (key - r.first_key) : 0;
    *h = r;
    return 0;
}
