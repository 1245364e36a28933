/*
 * Unit tests of native histograms (shm/hodei_native.c) and of the protobuf exposition's
 * framing (shm/hodei_protobuf.c through hodei_render): bucket indexes against exact
 * arithmetic, the zero bucket, resolution reduction, quantile error, the encoding and every
 * corruption of it, copies taken while the writer observes, streaming, negotiation.
 */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "hodei_fill.h"
#include "hodei_native.h"
#include "hodei_render.h"
#include "hodei_snapshot.h"
#include "shm_test_util.h"

/* ---- references, computed without the code under test ------------------------------- */

/* The smallest k with v <= 2^(k / 2^schema), in long double.  Its 64-bit mantissa decides
 * every comparison: no double lies closer to a bucket bound than 1.7e-17 relative, a hundred
 * times what exp2l may be off by. */
static int64_t exact_key(double v, int schema)
{
    long double scale = ldexpl(1, schema);
    int64_t k = (int64_t) ceill(log2l(v) * scale);
    while (v <= exp2l((long double) (k - 1) / scale))
        k--;
    while (v > exp2l((long double) k / scale))
        k++;
    return k;
}

/* Prometheus's bounds of one octave at schema 3 (its published table, 2^(i/8)/2). */
static const double prometheus_octave[8] = {
    0.5, 0.5452538663326288, 0.5946035575013605, 0.6484197773255048,
    0.7071067811865475, 0.7711054127039704, 0.8408964152537144, 0.9170040432046711,
};

/* Upper bound of bucket k at schema 3 as Prometheus computes it. */
static double prometheus_bound(int64_t k)
{
    int64_t octave = k >= 0 ? k / 8 : -((-k + 7) / 8);      /* floor(k / 8) */
    return ldexp(prometheus_octave[k - 8 * octave], (int) octave + 1);
}

static uint64_t xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* uniform in [0, 1) */
static double uniform(uint64_t *x)
{
    return (double) (xorshift(x) >> 11) / 9007199254740992.0;
}

/* A value strictly inside bucket k of schema 3. */
static double in_bucket(int k)
{
    return exp2((k - 0.5) / 8);
}

/* ---- bucket index ------------------------------------------------------------------- */

static void expect_key(double v, int schema, int64_t want)
{
    int32_t got = hodei_native_key(v, schema);
    if (got != want)
        fail_msg("key(%.17g, schema %d) = %d, want %lld", v, schema, got, (long long) want);
}

static void test_key_powers_of_two(void **state)
{
    (void) state;
    for (int j = -1074; j <= 1023; j++) {
        double v = ldexp(1, j);
        for (int s = HODEI_NATIVE_SCHEMA_MIN; s <= HODEI_NATIVE_SCHEMA; s++) {
            /* 2^j is the upper bound of bucket j * 2^s (or ceil(j / 2^-s) below schema 0) */
            int64_t k = s >= 0 ? (int64_t) j << s
                               : (j >= 0 ? (j + (1 << -s) - 1) / (1 << -s) : -((-j) / (1 << -s)));
            expect_key(v, s, k);
            expect_key(v, s, exact_key(v, s));
            if (j < 1023)
                expect_key(nextafter(v, INFINITY), s, exact_key(nextafter(v, INFINITY), s));
            if (j > -1074)
                expect_key(nextafter(v, 0), s, exact_key(nextafter(v, 0), s));
        }
        if (j >= DBL_MIN_EXP) {                /* normal: the next double is just above */
            expect_key(nextafter(v, INFINITY), 3, 8 * (int64_t) j + 1);
            expect_key(nextafter(v, 0), 3, 8 * (int64_t) j);
        }
    }
}

/* Every bound of schema 3 from 2^-40 to 2^40: the bound itself, and its neighbours. */
static void test_key_at_bucket_bounds(void **state)
{
    (void) state;
    for (int64_t k = -320; k <= 320; k++) {
        double b = prometheus_bound(k), up = nextafter(b, INFINITY), down = nextafter(b, 0);
        long double exact = exp2l((long double) k / 8);
        long double ulp = (long double) (up - b);
        if (fabsl((long double) b - exact) > 2 * ulp)
            fail_msg("bound %lld: table %.17g, 2^(k/8) %.21Lg", (long long) k, b, exact);
        expect_key(b, 3, k);
        expect_key(up, 3, k + 1);
        expect_key(down, 3, k);
        /* Prometheus's table and exact arithmetic part at one double per octave: entry 1 is
         * rounded up, so that double is above 2^(1/8)/2 yet in bucket 8j+1; entries 6 and 7
         * lie two doubles below, so the double between is below 2^(i/8)/2 yet in bucket
         * 8j+i+1.  We follow Prometheus. */
        int64_t m = ((k % 8) + 8) % 8;
        expect_key(b, 3, exact_key(b, 3) - (m == 1));
        expect_key(up, 3, exact_key(up, 3) + (m == 6 || m == 7));
        expect_key(down, 3, exact_key(down, 3));
        /* lower schemas share every 2^(3-s)-th bound, and its quirk */
        for (int s = 2; s >= HODEI_NATIVE_SCHEMA_MIN; s--) {
            int shared = k % (1 << (3 - s)) == 0;
            expect_key(b, s, exact_key(b, s) - (shared && m == 1));
            expect_key(up, s, exact_key(up, s) + (shared && (m == 6 || m == 7)));
            expect_key(down, s, exact_key(down, s));
        }
    }
}

static void test_key_microseconds(void **state)
{
    (void) state;
    /* 1 us: 8 * log2(1e-6) = -159.45; 10 us: -132.88; both far above the zero bucket */
    expect_key(1e-6, 3, -159);
    expect_key(1e-5, 3, -132);
    expect_key(1e-6, 3, exact_key(1e-6, 3));
    expect_key(1e-5, 3, exact_key(1e-5, 3));
    assert_true(1e-6 > 16 * HODEI_NATIVE_ZERO_THRESHOLD);
    for (double v = 1e-7; v < 1e-4; v *= 1.0137)
        for (int s = HODEI_NATIVE_SCHEMA_MIN; s <= HODEI_NATIVE_SCHEMA; s++)
            expect_key(v, s, exact_key(v, s));
}

static void test_key_random_values(void **state)
{
    (void) state;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 400000; i++) {
        double v;
        if (i % 2) {
            v = exp2(-40 + 80 * uniform(&x));          /* log-uniform, 2^-40 .. 2^40 */
        } else {
            uint64_t bits = xorshift(&x) & 0x7fffffffffffffffull;
            memcpy(&v, &bits, 8);                      /* any positive double */
            if (!isfinite(v) || v == 0)
                continue;
        }
        int s = HODEI_NATIVE_SCHEMA - (int) (xorshift(&x) % 8);
        expect_key(v, s, exact_key(v, s));
    }
}

/* ---- recording ------------------------------------------------------------------------- */

/* The populated buckets of h as (key, count) pairs, checking the window's invariants. */
static unsigned populated(const struct hodei_native *h, int64_t *keys, uint64_t *counts)
{
    unsigned n = 0;
    assert_true(h->nkeys <= HODEI_NATIVE_BUCKETS_MAX);
    for (unsigned i = 0; i < HODEI_NATIVE_BUCKETS_MAX; i++) {
        if (i >= h->nkeys) {
            assert_int_equal(h->bucket[i], 0);
            continue;
        }
        if (h->bucket[i]) {
            keys[n] = h->first_key + (int64_t) i;
            counts[n++] = h->bucket[i];
        }
    }
    return n;
}

/* Records values[0..n) into h and checks the result against an independent recount at the
 * schema the histogram ended at, which must be the finest whose window holds every value. */
static void record_and_check(struct hodei_native *h, const double *values, size_t n)
{
    double sum = 0;
    uint64_t zeros = 0;
    assert_int_equal(hodei_native_init(h, HODEI_NATIVE_ZERO_THRESHOLD), 0);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(hodei_native_observe(h, values[i]), 0);
        sum += values[i];
        zeros += values[i] <= HODEI_NATIVE_ZERO_THRESHOLD;
    }
    /* the finest schema whose window holds every value, and each value's bucket there */
    static int64_t key[100000];
    assert_true(n <= 100000);
    int want_schema = HODEI_NATIVE_SCHEMA + 1;
    int64_t lo, hi;
    do {
        want_schema--;
        lo = INT64_MAX;
        hi = INT64_MIN;
        for (size_t i = 0; i < n; i++) {
            if (values[i] <= HODEI_NATIVE_ZERO_THRESHOLD)
                continue;
            key[i] = exact_key(values[i], want_schema);
            lo = key[i] < lo ? key[i] : lo;
            hi = key[i] > hi ? key[i] : hi;
        }
    } while (lo <= hi && hi - lo + 1 > HODEI_NATIVE_BUCKETS_MAX);
    assert_int_equal(h->schema, want_schema);
    assert_int_equal(h->count, n);
    assert_int_equal(h->zero_count, zeros);
    assert_true(h->sum == sum);

    uint64_t want[HODEI_NATIVE_BUCKETS_MAX] = { 0 };
    for (size_t i = 0; i < n; i++)
        if (values[i] > HODEI_NATIVE_ZERO_THRESHOLD)
            want[key[i] - lo]++;
    int64_t keys[HODEI_NATIVE_BUCKETS_MAX];
    uint64_t counts[HODEI_NATIVE_BUCKETS_MAX];
    unsigned np = populated(h, keys, counts), nwant = 0;
    uint64_t total = zeros;
    for (unsigned b = 0; b < np; b++) {
        if (keys[b] < lo || keys[b] > hi || counts[b] != want[keys[b] - lo])
            fail_msg("schema %d bucket %lld holds %llu, a recount says %llu", want_schema,
                     (long long) keys[b], (unsigned long long) counts[b],
                     (unsigned long long) (keys[b] < lo || keys[b] > hi ? 0 : want[keys[b] - lo]));
        total += counts[b];
    }
    for (unsigned b = 0; lo <= hi && b < HODEI_NATIVE_BUCKETS_MAX; b++)
        nwant += want[b] != 0;
    assert_int_equal(np, nwant);
    assert_int_equal(total, n);            /* nothing lost: every value is in some bucket */
}

static void test_zero_bucket_and_refusals(void **state)
{
    (void) state;
    struct hodei_native h, before;
    const double zt = HODEI_NATIVE_ZERO_THRESHOLD;
    double values[] = { 0, zt, nextafter(zt, 0), nextafter(zt, INFINITY), 1e-6, 2e-6, 5e-7 };
    record_and_check(&h, values, 7);
    assert_int_equal(h.zero_count, 3);
    assert_int_equal(h.first_key, exact_key(nextafter(zt, INFINITY), 3));   /* -191 */
    assert_int_equal(h.first_key, -191);

    assert_int_equal(hodei_native_init(&h, -1), -1);
    assert_int_equal(hodei_native_init(&h, NAN), -1);
    assert_int_equal(hodei_native_init(&h, INFINITY), -1);
    assert_int_equal(hodei_native_init(&h, zt), 0);
    hodei_native_observe(&h, 1e-3);
    before = h;
    double bad[] = { -1e-9, -0.0 - 1, NAN, INFINITY, -INFINITY };
    for (int i = 0; i < 5; i++) {
        assert_int_equal(hodei_native_observe(&h, bad[i]), -1);
        assert_memory_equal(&h, &before, sizeof(h));
    }
}

/* Buckets 2j-1 and 2j of schema 3 become bucket j of schema 2. */
static void test_reduction_merges_pairs(void **state)
{
    (void) state;
    struct hodei_native h;
    double values[64];
    size_t n = 0;
    /* values inside each bucket -3 .. 8 of schema 3, bucket k holding 1 + (k + 3) % 4 */
    for (int k = -3; k <= 8; k++)
        for (int c = 0; c < 1 + (k + 3) % 4; c++)
            values[n++] = in_bucket(k);
    assert_true(n <= 64);
    record_and_check(&h, values, n);
    assert_int_equal(h.schema, 3);
    struct hodei_native at3 = h;
    /* one far value: keys -3 .. 8 plus 200 is wider than the window */
    assert_int_equal(hodei_native_observe(&h, in_bucket(200)), 0);
    assert_int_equal(h.schema, 2);
    assert_int_equal(h.count, at3.count + 1);
    assert_true(h.sum == at3.sum + in_bucket(200));
    for (int j = -1; j <= 4; j++) {
        uint64_t want = 0;
        for (int k = 2 * j - 1; k <= 2 * j; k++)
            if (k >= -3 && k <= 8)
                want += (uint64_t) (1 + (k + 3) % 4);
        if (h.bucket[j - h.first_key] != want)
            fail_msg("schema 2 bucket %d holds %llu, want buckets %d and %d of schema 3: %llu",
                     j, (unsigned long long) h.bucket[j - h.first_key], 2 * j - 1, 2 * j,
                     (unsigned long long) want);
    }
    assert_int_equal(h.bucket[100 - h.first_key], 1);        /* 200 -> 100 */
}

static void test_reduction_wide_ranges(void **state)
{
    (void) state;
    static struct hodei_native h;
    static double values[20000];
    uint64_t x = 42;
    /* several doublings at once: 1 us and 10^9 s */
    double two[] = { 1e-6, 1e9 };
    record_and_check(&h, two, 2);
    assert_int_equal(h.schema, 1);
    /* the whole range of doubles */
    double extremes[] = { DBL_MAX, nextafter(HODEI_NATIVE_ZERO_THRESHOLD, 1), 1 };
    record_and_check(&h, extremes, 3);
    assert_int_equal(h.schema, -3);
    /* random ranges, in random order */
    for (int round = 0; round < 40; round++) {
        double lo = -30 + 20 * uniform(&x), width = 5 + 60 * uniform(&x);
        size_t n = 1000 + xorshift(&x) % 19000;
        for (size_t i = 0; i < n; i++)
            values[i] = i % 50 == 0 ? 0 : exp2(lo + width * uniform(&x));
        record_and_check(&h, values, n);
    }
}

/* ---- quantiles ------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return (x > y) - (x < y);
}

/* The q-quantile as the geometric middle of the bucket holding the ceil(q*count)-th value. */
static double bucket_quantile(const struct hodei_native_view *v, double q)
{
    uint64_t rank = (uint64_t) ceil(q * (double) v->count), seen = v->zero_count;
    if (seen >= rank)
        return 0;
    long double scale = ldexpl(1, v->schema);
    int64_t key = 0;
    unsigned b = 0;
    for (unsigned s = 0; s < v->nspans; s++) {
        int32_t offset;
        uint32_t length;
        hodei_native_span(v, s, &offset, &length);
        key = s == 0 ? offset : key + offset;
        for (uint32_t i = 0; i < length; i++, key++, b++) {
            seen += hodei_native_count(v, b);
            if (seen >= rank)
                return (double) sqrtl(exp2l((key - 1) / scale) * exp2l(key / scale));
        }
    }
    fail_msg("rank %llu beyond the buckets", (unsigned long long) rank);
    return NAN;
}

static void check_quantiles(double *values, size_t n, int want_schema, double bound)
{
    static struct hodei_native h;
    unsigned char enc[HODEI_NATIVE_ENCODED_MAX];
    struct hodei_native_view view;
    const char *why;
    record_and_check(&h, values, n);
    assert_int_equal(h.schema, want_schema);
    size_t len = hodei_native_encode(&h, enc, sizeof(enc));
    assert_int_equal(hodei_native_validate(enc, len, &view, &why), 0);
    qsort(values, n, sizeof(double), cmp_double);
    const double qs[] = { 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999 };
    for (unsigned i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        double truth = values[(size_t) ceil(qs[i] * (double) n) - 1];
        double est = bucket_quantile(&view, qs[i]);
        double err = fabs(est - truth) / truth;
        if (err > bound)
            fail_msg("q%.3f: estimate %.9g, true %.9g, relative error %.4f > %.4f", qs[i], est,
                     truth, err, bound);
    }
}

static void test_quantile_error(void **state)
{
    (void) state;
    static double values[100000];
    uint64_t x = 7;
    /* decision latencies: log-uniform 0.5 us .. 50 ms, at schema 3: 2^(1/16) - 1 = 4.43% */
    for (size_t i = 0; i < 100000; i++)
        values[i] = 5e-7 * pow(1e5, uniform(&x));
    check_quantiles(values, 100000, 3, exp2(1.0 / 16) - 1);
    /* 1 us .. 10 us only */
    for (size_t i = 0; i < 100000; i++)
        values[i] = 1e-6 + 9e-6 * uniform(&x);
    check_quantiles(values, 100000, 3, exp2(1.0 / 16) - 1);
    /* 1 us .. 10^4 s: too wide for schema 3, at schema 2 the bound is 2^(1/8) - 1 = 9.05% */
    for (size_t i = 0; i < 100000; i++)
        values[i] = 1e-6 * pow(1e10, uniform(&x));
    check_quantiles(values, 100000, 2, exp2(1.0 / 8) - 1);
}

/* ---- encoding ---------------------------------------------------------------------------- */

static size_t encode_values(const double *values, size_t n, unsigned char *enc)
{
    struct hodei_native h;
    assert_int_equal(hodei_native_init(&h, HODEI_NATIVE_ZERO_THRESHOLD), 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(hodei_native_observe(&h, values[i]), 0);
    size_t len = hodei_native_encode(&h, enc, HODEI_NATIVE_ENCODED_MAX);
    assert_true(len >= HODEI_NATIVE_HEADER_SIZE);
    assert_int_equal(hodei_native_encode(&h, enc, len - 1), 0);     /* refused, not cut */
    return len;
}

static void expect_spans(const unsigned char *enc, size_t len, unsigned nspans,
                         const int32_t *offsets, const uint32_t *lengths)
{
    struct hodei_native_view v;
    const char *why;
    assert_int_equal(hodei_native_validate(enc, len, &v, &why), 0);
    assert_int_equal(v.nspans, nspans);
    for (unsigned s = 0; s < nspans; s++) {
        int32_t o;
        uint32_t l;
        hodei_native_span(&v, s, &o, &l);
        if (o != offsets[s] || l != lengths[s])
            fail_msg("span %u is {%d, %u}, want {%d, %u}", s, o, l, offsets[s], lengths[s]);
    }
}

static void test_encoding_layout(void **state)
{
    (void) state;
    unsigned char enc[HODEI_NATIVE_ENCODED_MAX];
    struct hodei_native_view v;
    const char *why;
    /* empty: a header alone */
    size_t len = encode_values(NULL, 0, enc);
    assert_int_equal(len, HODEI_NATIVE_HEADER_SIZE);
    assert_int_equal(hodei_native_validate(enc, len, &v, &why), 0);
    assert_int_equal(v.count, 0);
    assert_int_equal(v.schema, 3);
    assert_true(v.zero_threshold == HODEI_NATIVE_ZERO_THRESHOLD);

    /* buckets 1 and 4 (two empty between): one span of 4, counts 2 0 0 1 */
    double a[] = { in_bucket(1), in_bucket(1), in_bucket(4), 0 };
    len = encode_values(a, 4, enc);
    expect_spans(enc, len, 1, (int32_t[]) { 1 }, (uint32_t[]) { 4 });
    assert_int_equal(hodei_native_validate(enc, len, &v, &why), 0);
    assert_int_equal(len, HODEI_NATIVE_HEADER_SIZE + 8 * (1 + 4));
    uint64_t want[] = { 2, 0, 0, 1 };
    for (unsigned i = 0; i < 4; i++)
        assert_int_equal(hodei_native_count(&v, i), want[i]);
    assert_int_equal(v.zero_count, 1);
    assert_int_equal(v.count, 4);

    /* buckets -10 and -6 .. -5 (three empty between): two spans, the second after a gap of 3 */
    double b[] = { in_bucket(-10), in_bucket(-6), in_bucket(-6), in_bucket(-5) };
    len = encode_values(b, 4, enc);
    expect_spans(enc, len, 2, (int32_t[]) { -10, 3 }, (uint32_t[]) { 1, 2 });

    /* the size bound: a full window with every other bucket empty */
    double c[HODEI_NATIVE_BUCKETS_MAX];
    for (int k = 0; k < HODEI_NATIVE_BUCKETS_MAX; k++)
        c[k] = in_bucket(k);
    len = encode_values(c, HODEI_NATIVE_BUCKETS_MAX, enc);
    assert_int_equal(len, HODEI_NATIVE_HEADER_SIZE + 8 * (1 + HODEI_NATIVE_BUCKETS_MAX));
    assert_true(len <= HODEI_NATIVE_ENCODED_MAX);
}

struct enc {
    unsigned char buf[HODEI_NATIVE_ENCODED_MAX + 8];
    size_t len;
};

/* 2 zeros; 5 in bucket -170, 2 in -100, 1 in -99, 1 in -20: three spans of four buckets
 * (gaps 69 and 78), inside a window of 151 */
static void fresh_encoding(struct enc *e)
{
    double values[] = { 0, 0, in_bucket(-170), in_bucket(-170), in_bucket(-170),
                        in_bucket(-170), in_bucket(-170), in_bucket(-100), in_bucket(-100),
                        in_bucket(-99), in_bucket(-20) };
    e->len = encode_values(values, 11, e->buf);
}

static void expect_invalid(const struct enc *e, const char *reason)
{
    struct hodei_native_view v;
    const char *why = NULL;
    assert_int_equal(hodei_native_validate(e->buf, e->len, &v, &why), -1);
    assert_non_null(why);
    if (strstr(why, reason) == NULL)
        fail_msg("rejected for \"%s\", expected \"%s\"", why, reason);
}

#define FIELD(e, off, type) (*(type *) ((e)->buf + (off)))
#define SPAN_OFFSET(e, i) FIELD(e, HODEI_NATIVE_HEADER_SIZE + 8 * (i), int32_t)
#define SPAN_LENGTH(e, i) FIELD(e, HODEI_NATIVE_HEADER_SIZE + 8 * (i) + 4, uint32_t)
#define COUNT(e, i) FIELD(e, HODEI_NATIVE_HEADER_SIZE + 8 * (3 + (i)), uint64_t)

static void test_validator_rejects_corruption(void **state)
{
    (void) state;
    static struct enc e;
    struct hodei_native_view v;
    const char *why;

    fresh_encoding(&e);
    assert_int_equal(hodei_native_validate(e.buf, e.len, &v, &why), 0);
    assert_int_equal(v.nspans, 3);
    assert_int_equal(v.nbuckets, 4);
    assert_int_equal(e.len, HODEI_NATIVE_HEADER_SIZE + 8 * 7);

    for (size_t n = 0; n < e.len; n++) {       /* every truncation */
        struct enc t = e;
        t.len = n;
        expect_invalid(&t, n < HODEI_NATIVE_HEADER_SIZE ? "shorter than its header" : "length");
    }
#define CASE(stmt, reason) do { fresh_encoding(&e); stmt; expect_invalid(&e, reason); } while (0)
    CASE(e.len++, "length disagrees");
    CASE(FIELD(&e, 0, uint16_t) ^= 1, "magic");
    CASE(e.buf[3] = 1, "reserved");
    CASE(FIELD(&e, 2, int8_t) = 4, "schema");
    CASE(FIELD(&e, 2, int8_t) = 8, "schema");
    CASE(FIELD(&e, 2, int8_t) = -5, "schema");
    CASE(FIELD(&e, 6, uint16_t) = HODEI_NATIVE_BUCKETS_MAX + 1, "too many buckets");
    CASE(FIELD(&e, 4, uint16_t) = 5, "more spans than buckets");
    CASE((FIELD(&e, 4, uint16_t) = 4, e.len += 8), "span");            /* a 4th span of 0s */
    CASE((FIELD(&e, 6, uint16_t) = 5, e.len += 8), "fewer buckets");   /* counts not spanned */
    CASE((FIELD(&e, 6, uint16_t) = 3, e.len -= 8), "more buckets");
    CASE(FIELD(&e, 8, double) = NAN, "zero threshold");
    CASE(FIELD(&e, 8, double) = -1e-9, "zero threshold");
    CASE(FIELD(&e, 8, double) = INFINITY, "zero threshold");
    CASE(FIELD(&e, 32, double) = NAN, "sum");
    CASE(FIELD(&e, 32, double) = -1, "sum");
    CASE(FIELD(&e, 32, double) = INFINITY, "sum");
    CASE(SPAN_LENGTH(&e, 1) = 0, "span is empty");
    CASE(SPAN_LENGTH(&e, 1) = 0xffffffffu, "longer than the bucket count");
    CASE(SPAN_LENGTH(&e, 1) = 3, "spans hold more buckets");
    CASE(SPAN_LENGTH(&e, 1) = 1, "spans hold fewer buckets");
    CASE(SPAN_OFFSET(&e, 1) = 0, "gap is not positive");
    CASE(SPAN_OFFSET(&e, 2) = -5, "gap is not positive");
    CASE(SPAN_OFFSET(&e, 2) = INT32_MAX, "outside the range");
    CASE(SPAN_OFFSET(&e, 0) = -192, "outside the range");   /* inside the zero bucket */
    CASE(FIELD(&e, 8, double) = 0x1p-20, "outside the range");  /* zero bucket grew over it */
    CASE(SPAN_OFFSET(&e, 0) = INT32_MIN, "outside the range");
    CASE(SPAN_OFFSET(&e, 0) = 8193, "outside the range");     /* above DBL_MAX's bucket */
    CASE(SPAN_OFFSET(&e, 2) = 88, "window");                   /* -170 .. -10 */
    CASE(COUNT(&e, 0) = UINT64_MAX, "overflow");
    CASE(FIELD(&e, 16, uint64_t) = UINT64_MAX, "overflow");
    CASE(COUNT(&e, 1)++, "count is not");
    CASE(FIELD(&e, 24, uint64_t)--, "count is not");
    CASE(FIELD(&e, 16, uint64_t)++, "count is not");
#undef CASE
    /* a lower schema moves the bounds of the range: -170 is below the zero bucket at 2 */
    fresh_encoding(&e);
    FIELD(&e, 2, int8_t) = 2;
    expect_invalid(&e, "outside the range");

    /* every single-bit flip: rejected, or still a consistent histogram */
    for (size_t byte = 0; byte < e.len; byte++) {
        for (int bit = 0; bit < 8; bit++) {
            fresh_encoding(&e);
            e.buf[byte] ^= (unsigned char) (1u << bit);
            if (hodei_native_validate(e.buf, e.len, &v, &why) != 0)
                continue;
            uint64_t total = v.zero_count;
            for (unsigned i = 0; i < v.nbuckets; i++)
                total += hodei_native_count(&v, i);
            assert_int_equal(total, v.count);
            assert_true(isfinite(v.sum) && isfinite(v.zero_threshold));
        }
    }
}

/* ---- copies taken while the writer observes ---------------------------------------- */

#define RACE_VALUES 50000
#define RACE_COPIES 256

struct race {
    struct hodei_native live;
    double values[RACE_VALUES];
    pthread_barrier_t start;
    struct hodei_native copies[RACE_COPIES];
    unsigned ncopies, failed_reads;
};

static void *race_writer(void *arg)
{
    struct race *r = arg;
    pthread_barrier_wait(&r->start);
    for (size_t i = 0; i < RACE_VALUES; i++) {
        hodei_native_observe(&r->live, r->values[i]);
        /* a scheduler does other work between two observations (a placement takes about
         * 1 us): leave readers room, or a copy (160 buckets) would rarely get through */
        for (int k = 0; k < 2000; k++)
            __asm__ volatile("" ::: "memory");
    }
    return NULL;
}

/* Copies taken while the writer runs; each must be the histogram of exactly its first
 * `count` observations, which a replay after the run checks. */
static void test_copy_while_observing(void **state)
{
    (void) state;
    static struct race r;
    static struct hodei_native copy, replay;
    pthread_t t;
    uint64_t x = 99;
    /* 2^-22 .. 2^8: the window overflows along the way, so the layout changes under readers */
    for (size_t i = 0; i < RACE_VALUES; i++)
        r.values[i] = i % 97 == 0 ? 0 : exp2(-22 + 30 * uniform(&x) * (double) i / RACE_VALUES);
    assert_int_equal(hodei_native_init(&r.live, HODEI_NATIVE_ZERO_THRESHOLD), 0);
    assert_int_equal(pthread_barrier_init(&r.start, NULL, 2), 0);
    assert_int_equal(pthread_create(&t, NULL, race_writer, &r), 0);
    pthread_barrier_wait(&r.start);
    uint64_t seen = 0;
    while (seen < RACE_VALUES) {
        if (hodei_native_read(&r.live, &copy) != 0) {
            r.failed_reads++;
            continue;
        }
        assert_true(copy.count >= seen);               /* copies never go back in time */
        if (copy.count > seen && r.ncopies < RACE_COPIES)
            r.copies[r.ncopies++] = copy;
        seen = copy.count;
    }
    pthread_join(t, NULL);
    pthread_barrier_destroy(&r.start);

    hodei_native_init(&replay, HODEI_NATIVE_ZERO_THRESHOLD);
    size_t done = 0;
    for (unsigned c = 0; c < r.ncopies; c++) {
        while (done < r.copies[c].count)
            hodei_native_observe(&replay, r.values[done++]);
        replay.seq = 0;
        if (memcmp(&replay, &r.copies[c], sizeof(replay)) != 0)
            fail_msg("copy %u at count %llu (schema %d, %u buckets) is not the histogram of the "
                     "first %llu observations (schema %d, %u buckets)", c,
                     (unsigned long long) r.copies[c].count, r.copies[c].schema,
                     r.copies[c].nkeys, (unsigned long long) done, replay.schema, replay.nkeys);
    }
    assert_true(r.ncopies >= 1);
    assert_true(copy.schema < HODEI_NATIVE_SCHEMA);    /* the reduction happened meanwhile */
    print_message("# %u copies checked, %u reads gave up\n", r.ncopies, r.failed_reads);
}

/* A writer stopped inside an observation (odd sequence): the reader gives up, cleanly. */
static void test_read_gives_up_on_writer_inside(void **state)
{
    (void) state;
    static struct hodei_native live, copy;
    hodei_native_init(&live, HODEI_NATIVE_ZERO_THRESHOLD);
    hodei_native_observe(&live, 1e-6);
    live.seq++;
    assert_int_equal(hodei_native_read(&live, &copy), -1);
    live.seq++;
    assert_int_equal(hodei_native_read(&live, &copy), 0);
    assert_int_equal(copy.count, 1);
    assert_int_equal(copy.bucket[0], 1);
}

/* ---- the protobuf exposition's framing ------------------------------------------- */

static char *render_with(const struct hodei_snapshot *snap, enum hodei_format fmt, size_t *len)
{
    struct mem_sink m;
    const struct hodei_snapshot *snaps[1] = { snap };
    struct hodei_render_input in = { .snapshots = snaps, .nsnapshots = 1, .scheduler_up = 1,
                                     .snapshot_age = 0.5 };
    mem_sink_init(&m);
    assert_int_equal(hodei_render(&m.sink, fmt, &in), 0);
    char *out = mem_sink_done(&m);
    *len = m.len;
    return out;
}

/* A sink that never holds more than HODEI_SINK_MIN bytes: everything is streamed. */
struct narrow_sink {
    struct hodei_sink sink;
    char   window[HODEI_SINK_MIN];
    char  *out;
    size_t len, flushes;
};

static int narrow_flush(struct hodei_sink *s)
{
    struct narrow_sink *n = (struct narrow_sink *) s;
    size_t used = (size_t) (s->pos - n->window);
    n->out = realloc(n->out, n->len + used + 1);
    memcpy(n->out + n->len, n->window, used);
    n->len += used;
    n->flushes++;
    s->pos = n->window;
    s->end = n->window + sizeof(n->window);
    return 0;
}

/* Takes every histogram's native part and exemplars out of a validated payload (their refs
 * become none; the blobs stay, unreferenced). */
static void strip_extras(const struct hodei_snapshot *snap)
{
    for (int id = 0; id < HODEI_F_COUNT; id++) {
        const struct hodei_snap_family *f = snap->family[id];
        for (uint32_t i = 0; f && f->nbuckets && i < f->nseries; i++) {
            unsigned char *rec = (unsigned char *) hodei_series_at(snap, f, i);
            uint32_t none[2] = { HODEI_SNAP_NONE, HODEI_SNAP_NONE };
            memcpy(rec + hodei_series_values_off(f->nlabels) + 16 + 8 * (f->nbuckets + 1), none,
                   8);
        }
    }
}

/* OpenMetrics without the exemplars that follow bucket samples. */
static void drop_exemplars(char *text, size_t *len)
{
    char *out = text;
    for (char *p = text; *p;) {
        char *nl = strchr(p, '\n'), *ex = strstr(p, " # {");
        size_t keep = (size_t) ((ex && ex < nl ? ex : nl) - p);
        memmove(out, p, keep);
        out += keep;
        *out++ = '\n';
        p = nl + 1;
    }
    *out = '\0';
    *len = (size_t) (out - text);
}

static void test_render_streams_and_checks_itself(void **state)
{
    (void) state;
    static unsigned char payload[1 << 20], stripped[1 << 20];
    struct hodei_fill_params p = HODEI_FILL_DEFAULTS;
    struct hodei_snapshot snap, plain_snap;
    const char *why;
    size_t len, plain_len;
    p.tenants = 40;
    p.workers = 60;
    size_t plen = hodei_fill_build(payload, sizeof(payload), &p);
    assert_int_equal(hodei_snapshot_validate(payload, plen, &snap, &why), 0);
    memcpy(stripped, payload, plen);
    assert_int_equal(hodei_snapshot_validate(stripped, plen, &plain_snap, &why), 0);
    strip_extras(&plain_snap);
    assert_int_equal(hodei_snapshot_validate(stripped, plen, &plain_snap, &why), 0);

    /* text 0.0.4 does not change with native parts and exemplars present; OpenMetrics only
     * by the exemplars after bucket samples */
    char *plain = render_with(&plain_snap, HODEI_FMT_TEXT, &plain_len);
    char *with = render_with(&snap, HODEI_FMT_TEXT, &len);
    assert_int_equal(len, plain_len);
    assert_memory_equal(plain, with, len);
    free(plain);
    free(with);
    plain = render_with(&plain_snap, HODEI_FMT_OPENMETRICS, &plain_len);
    with = render_with(&snap, HODEI_FMT_OPENMETRICS, &len);
    assert_true(len > plain_len + 3 * 13 * 40);     /* three histograms' exemplars */
    if ((why = exposition_problem(with, HODEI_FMT_OPENMETRICS)) != NULL)
        fail_msg("OpenMetrics with exemplars: %s", why);
    drop_exemplars(with, &len);
    assert_int_equal(len, plain_len);
    assert_memory_equal(plain, with, len);
    free(plain);
    free(with);

    /* protobuf: the same bytes into a sink that holds one piece at a time */
    char *whole = render_with(&snap, HODEI_FMT_PROTOBUF, &len);
    char *classic = render_with(&plain_snap, HODEI_FMT_PROTOBUF, &plain_len);
    struct hodei_native_view native;
    const struct hodei_snap_family *lat = snap.family[HODEI_F_SCHEDULING_LATENCY_SECONDS];
    assert_int_equal(hodei_series_native(&snap, lat, hodei_series_at(&snap, lat, 0), &native), 1);
    assert_true(len > plain_len + native.nbuckets);      /* the native parts are in it */
    static struct narrow_sink n;
    n.sink.pos = n.window;
    n.sink.end = n.window + sizeof(n.window);
    n.sink.flush = narrow_flush;
    const struct hodei_snapshot *snaps[1] = { &snap };
    struct hodei_render_input in = { .snapshots = snaps, .nsnapshots = 1, .scheduler_up = 1,
                                     .snapshot_age = 0.5 };
    assert_int_equal(hodei_render(&n.sink, HODEI_FMT_PROTOBUF, &in), 0);
    narrow_flush(&n.sink);
    assert_int_equal(n.len, len);
    assert_memory_equal(n.out, whole, len);
    assert_true(n.flushes > 10);

    /* every family is one delimited message, in schema order */
    size_t pos = 0;
    for (int id = 0; id < HODEI_F_COUNT; id++) {
        uint64_t size = 0;
        for (int shift = 0; ; shift += 7) {
            unsigned char c = (unsigned char) whole[pos++];
            size |= (uint64_t) (c & 0x7f) << shift;
            if (c < 0x80)
                break;
        }
        const struct hodei_family *f = &hodei_families[id];
        assert_int_equal((unsigned char) whole[pos], 0x0a);          /* name, field 1 */
        assert_int_equal((unsigned char) whole[pos + 1], f->name_len);
        assert_memory_equal(whole + pos + 2, f->name, f->name_len);
        pos += size;
    }
    assert_int_equal(pos, len);
    free(whole);
    free(classic);
    free(n.out);
}

static void test_negotiation(void **state)
{
    (void) state;
    const char *prometheus_native =
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
        "encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,"
        "application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,"
        "*/*;q=0.1";
#define NEG(s, allow) hodei_format_negotiate(s, strlen(s), allow)
    const unsigned pb = HODEI_ALLOW_PROTOBUF;
    assert_int_equal(NEG(prometheus_native, pb), HODEI_FMT_PROTOBUF);
    assert_int_equal(NEG(prometheus_native, 0), HODEI_FMT_OPENMETRICS);
    assert_int_equal(hodei_format_negotiate(NULL, 0, pb), HODEI_FMT_TEXT);
    assert_int_equal(NEG("*/*", pb), HODEI_FMT_TEXT);
    assert_int_equal(NEG("application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily;"
                         " encoding=delimited", pb), HODEI_FMT_PROTOBUF);
    assert_int_equal(NEG("Application/Vnd.Google.Protobuf;PROTO=\"io.prometheus.client."
                         "MetricFamily\";Encoding=\"delimited\"", pb), HODEI_FMT_PROTOBUF);
    /* another encoding, another message, or none said: not what we write */
    assert_int_equal(NEG("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
                         "encoding=text", pb), HODEI_FMT_TEXT);
    assert_int_equal(NEG("application/vnd.google.protobuf;proto=other.Message;encoding=delimited",
                         pb), HODEI_FMT_TEXT);
    assert_int_equal(NEG("application/vnd.google.protobuf", pb), HODEI_FMT_TEXT);
    assert_int_equal(NEG("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
                         "encoding=delimited;q=0", pb), HODEI_FMT_TEXT);
    /* preferred less than the others */
    assert_int_equal(NEG("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
                         "encoding=delimited;q=0.5,application/openmetrics-text", pb),
                     HODEI_FMT_OPENMETRICS);
    assert_int_equal(NEG("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
                         "encoding=delimited;q=0.5,text/plain;q=0.6", pb), HODEI_FMT_TEXT);
    assert_int_equal(NEG("text/plain;q=0.5,application/vnd.google.protobuf;"
                         "proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5", pb),
                     HODEI_FMT_PROTOBUF);
    /* what Prometheus sends without native histograms is unchanged */
    assert_int_equal(NEG("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                         "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", pb),
                     HODEI_FMT_OPENMETRICS);
    assert_int_equal(NEG(";;;,,,q=,=;proto=;encoding", pb), HODEI_FMT_TEXT);
#undef NEG
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_powers_of_two),
        cmocka_unit_test(test_key_at_bucket_bounds),
        cmocka_unit_test(test_key_microseconds),
        cmocka_unit_test(test_key_random_values),
        cmocka_unit_test(test_zero_bucket_and_refusals),
        cmocka_unit_test(test_reduction_merges_pairs),
        cmocka_unit_test(test_reduction_wide_ranges),
        cmocka_unit_test(test_quantile_error),
        cmocka_unit_test(test_encoding_layout),
        cmocka_unit_test(test_validator_rejects_corruption),
        cmocka_unit_test(test_copy_while_observing),
        cmocka_unit_test(test_read_gives_up_on_writer_inside),
        cmocka_unit_test(test_render_streams_and_checks_itself),
        cmocka_unit_test(test_negotiation),
    };
    return cmocka_run_group_tests_name("shm_native", tests, NULL, NULL);
}
