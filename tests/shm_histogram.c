/*
 * Unit tests of recorded histograms (shm/hodei_histogram.c) and of what they put in a snapshot
 * (shm/hodei_snapshot.c): classic and native parts from the same observations, the exemplar of
 * each bucket's most recent observation, refusals that change nothing, copies taken while the
 * writer observes, the payload's native and exemplar parts and every corruption of them, and
 * exemplars in OpenMetrics.
 */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "hodei_histogram.h"
#include "hodei_render.h"
#include "hodei_snapshot.h"
#include "shm_test_util.h"

#define LATENCY HODEI_F_SCHEDULING_LATENCY_SECONDS

static const struct hodei_family *latency(void)
{
    return &hodei_families[LATENCY];
}

static void init_latency(struct hodei_histogram *h)
{
    assert_int_equal(hodei_histogram_init(h, latency()->buckets, latency()->nbuckets), 0);
}

/* An exemplar of job job_id (a decimal) for tenant at time t. */
static struct hodei_exemplar job(const char *job_id, const char *tenant, double t)
{
    struct hodei_exemplar e = { .nlabels = 2, .timestamp = t };
    e.label[0].name = "job_id";
    e.label[0].name_len = 6;
    e.label[0].value = job_id;
    e.label[0].value_len = strlen(job_id);
    e.label[1].name = "tenant_id";
    e.label[1].name_len = 9;
    e.label[1].value = tenant;
    e.label[1].value_len = strlen(tenant);
    return e;
}

/* The exemplar slot of bucket k as text: "job_id=7,tenant_id=acme value timestamp". */
static const char *slot_text(const struct hodei_histogram *h, unsigned k)
{
    static char buf[512];
    const struct hodei_exemplar_slot *s = &h->exemplar[k];
    const char *t = (const char *) s->text;
    char *p = buf;
    for (unsigned i = 0; i < s->nlabels; i++) {
        p += sprintf(p, "%s%.*s=", i ? "," : "", s->name_len[i], t);
        t += s->name_len[i];
        p += sprintf(p, "%.*s", s->value_len[i], t);
        t += s->value_len[i];
    }
    sprintf(p, " %.17g %.17g", s->value, s->timestamp);
    return buf;
}

/* ---- recording ------------------------------------------------------------------------- */

static void test_classic_and_native_agree(void **state)
{
    (void) state;
    static struct hodei_histogram h;
    init_latency(&h);
    const double v[] = { 0, 3e-7, 1e-6, 9.9e-4, 0.001, 0.0011, 0.3, 10, 11, 1e4 };
    double sum = 0;
    for (unsigned i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        assert_int_equal(hodei_histogram_observe(&h, v[i], NULL), 0);
        sum += v[i];
    }
    /* classic: le 0.001 takes 0 .. 0.001 (bounds inclusive), le 0.005 takes 0.0011 */
    uint64_t want[HODEI_BUCKETS_MAX + 1] = { 5, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 2 };
    assert_memory_equal(h.count, want, 13 * sizeof(uint64_t));
    assert_true(h.sum == sum);
    assert_int_equal(h.native.count, 10);
    assert_true(h.native.sum == sum);
    assert_int_equal(h.native.zero_count, 1);
    for (unsigned k = 0; k <= h.nbuckets; k++)
        assert_int_equal(h.exemplar[k].nlabels, 0);
}

static void test_refusals_change_nothing(void **state)
{
    (void) state;
    static struct hodei_histogram h, before;
    struct hodei_exemplar e = job("1", "acme", 1700000000);
    init_latency(&h);
    hodei_histogram_observe(&h, 0.002, &e);
    before = h;
    const double bad[] = { NAN, -NAN, -1e-9, -1, INFINITY, -INFINITY };
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(hodei_histogram_observe(&h, bad[i], &e), -1);
        assert_memory_equal(&h, &before, sizeof(h));
    }
    /* bad bounds */
    const double unsorted[] = { 1, 0.5 }, nan_bound[] = { NAN };
    assert_int_equal(hodei_histogram_init(&h, unsorted, 2), -1);
    assert_int_equal(hodei_histogram_init(&h, nan_bound, 1), -1);
    assert_int_equal(hodei_histogram_init(&h, unsorted, 0), -1);
    assert_int_equal(hodei_histogram_init(&h, latency()->buckets, HODEI_BUCKETS_MAX + 1), -1);
}

static void test_exemplar_is_the_latest_of_its_bucket(void **state)
{
    (void) state;
    static struct hodei_histogram h;
    init_latency(&h);
    struct hodei_exemplar a = job("11", "acme", 1700000001.5), b = job("12", "globex", 1700000002),
                          c = job("13", "acme", 1700000003);
    hodei_histogram_observe(&h, 2e-6, &a);
    hodei_histogram_observe(&h, 0.3, &b);
    hodei_histogram_observe(&h, 5e-6, &c);          /* bucket 0 again: replaces a */
    hodei_histogram_observe(&h, 7e-6, NULL);        /* no exemplar: c stays */
    assert_string_equal(slot_text(&h, 0),
                        "job_id=13,tenant_id=acme 5.0000000000000004e-06 1700000003");
    assert_string_equal(slot_text(&h, 7), "job_id=12,tenant_id=globex 0.29999999999999999 "
                                          "1700000002");
    assert_int_equal(h.exemplar[1].nlabels, 0);

    /* labels an exemplar cannot carry: counted, the bucket keeps its exemplar */
    char long_value[200];
    memset(long_value, 'x', sizeof(long_value));
    long_value[199] = '\0';
    struct hodei_exemplar too_long = job(long_value + 199 - 113, "acme", 1);  /* 6+113+9+4 = 132 */
    struct hodei_exemplar fits = job(long_value + 199 - 109, "acme", 1);      /* 128 exactly */
    struct hodei_exemplar not_utf8 = job("\xff", "acme", 1);
    struct hodei_exemplar bad_name = job("1", "acme", 1);
    bad_name.label[1].name = "tenant-id";
    struct hodei_exemplar empty = job("", "acme", 1);
    struct hodei_exemplar bad_time = job("1", "acme", NAN);
    const struct hodei_exemplar *refused[] = { &too_long, &not_utf8, &bad_name, &empty,
                                               &bad_time };
    for (unsigned i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        uint64_t n = h.count[0];
        assert_int_equal(hodei_histogram_observe(&h, 1e-6, refused[i]), 0);
        assert_int_equal(h.count[0], n + 1);
        assert_string_equal(slot_text(&h, 0),
                            "job_id=13,tenant_id=acme 5.0000000000000004e-06 1700000003");
    }
    assert_int_equal(hodei_histogram_observe(&h, 1e-6, &fits), 0);
    assert_int_equal(h.exemplar[0].name_len[0] + h.exemplar[0].value_len[0]
                     + h.exemplar[0].name_len[1] + h.exemplar[0].value_len[1], 128);
    /* one label, and the +Inf bucket */
    struct hodei_exemplar one = { .nlabels = 1, .timestamp = 5 };
    one.label[0].name = "request_id";
    one.label[0].name_len = 10;
    one.label[0].value = "f00d";
    one.label[0].value_len = 4;
    hodei_histogram_observe(&h, 1e3, &one);
    assert_string_equal(slot_text(&h, 12), "request_id=f00d 1000 5");
}

/* ---- copies while the writer observes -------------------------------------------------- */

#define RACE_VALUES 40000
#define RACE_COPIES 256

struct race {
    struct hodei_histogram live;
    double values[RACE_VALUES];
    char jobs[RACE_VALUES][8];
    pthread_barrier_t start;
    struct hodei_histogram copies[RACE_COPIES];
    unsigned ncopies, failed_reads;
    unsigned long reads;           /* the reader's successful copies, for the writer to pace */
};

static struct hodei_exemplar race_exemplar(struct race *r, size_t i)
{
    return job(r->jobs[i], i % 2 ? "acme" : "globex", 1700000000 + (double) i);
}

/* Observes every value, with other work between two (a decision takes about 1 us); every
 * 100 observations it waits for the reader to have copied once more, so that copies race with
 * observations all along the run even when the machine starves the reader. */
static void *race_writer(void *arg)
{
    struct race *r = arg;
    unsigned long reads = 0;
    pthread_barrier_wait(&r->start);
    for (size_t i = 0; i < RACE_VALUES; i++) {
        struct hodei_exemplar e = race_exemplar(r, i);
        hodei_histogram_observe(&r->live, r->values[i], &e);
        for (int k = 0; k < 2000; k++)
            __asm__ volatile("" ::: "memory");
        if (i % 100 == 99) {
            while (__atomic_load_n(&r->reads, __ATOMIC_ACQUIRE) == reads)
                sched_yield();
            reads = __atomic_load_n(&r->reads, __ATOMIC_ACQUIRE);
        }
    }
    return NULL;
}

/* Every copy taken while the writer runs must be exactly the histogram of its first n
 * observations (n: the copy's classic total): classic buckets, sum, native part and every
 * exemplar, as a replay after the run recomputes them. */
static void test_copy_while_observing(void **state)
{
    (void) state;
    static struct race r;
    static struct hodei_histogram copy, replay;
    pthread_t t;
    uint64_t x = 7;
    for (size_t i = 0; i < RACE_VALUES; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        /* 1 us .. 2 s, wider as it goes: the native part reduces its schema under readers */
        r.values[i] = 1e-6 * pow(2e6, (double) (x >> 11) / 9007199254740992.0
                                          * (double) i / RACE_VALUES);
        snprintf(r.jobs[i], sizeof(r.jobs[i]), "%zu", i + 1);
    }
    init_latency(&r.live);
    assert_int_equal(pthread_barrier_init(&r.start, NULL, 2), 0);
    assert_int_equal(pthread_create(&t, NULL, race_writer, &r), 0);
    pthread_barrier_wait(&r.start);
    uint64_t seen = 0, keep_at = 0;   /* copies kept along the whole run */
    while (seen < RACE_VALUES) {
        if (hodei_histogram_read(&r.live, &copy) != 0) {
            r.failed_reads++;
            continue;
        }
        uint64_t total = 0;
        for (unsigned k = 0; k <= copy.nbuckets; k++)
            total += copy.count[k];
        assert_int_equal(total, copy.native.count);    /* one bracket for both parts */
        assert_true(copy.sum == copy.native.sum);
        assert_true(total >= seen);
        if (total >= keep_at && total > seen && r.ncopies < RACE_COPIES) {
            r.copies[r.ncopies++] = copy;
            keep_at = total + RACE_VALUES / RACE_COPIES / 2;
        }
        seen = total;
        __atomic_fetch_add(&r.reads, 1, __ATOMIC_RELEASE);
    }
    pthread_join(t, NULL);
    pthread_barrier_destroy(&r.start);

    init_latency(&replay);
    size_t done = 0;
    for (unsigned c = 0; c < r.ncopies; c++) {
        while (done < r.copies[c].native.count) {
            struct hodei_exemplar e = race_exemplar(&r, done);
            hodei_histogram_observe(&replay, r.values[done++], &e);
        }
        replay.seq = 0;
        replay.native.seq = 0;
        if (memcmp(&replay, &r.copies[c], sizeof(replay)) != 0)
            fail_msg("copy %u of %llu observations is not the histogram of the first %zu", c,
                     (unsigned long long) r.copies[c].native.count, done);
    }
    assert_true(r.ncopies >= 100);
    assert_true(copy.native.schema < HODEI_NATIVE_SCHEMA);
    print_message("# %u copies checked, %u reads gave up\n", r.ncopies, r.failed_reads);
}

/* A writer stopped inside an observation: the reader gives up, leaving its older copy as it
 * was, then copies. */
static void test_read_gives_up_on_writer_inside(void **state)
{
    (void) state;
    static struct hodei_histogram live, copy, before;
    init_latency(&live);
    init_latency(&copy);
    before = copy;
    hodei_histogram_observe(&live, 1e-6, NULL);
    live.seq++;
    assert_int_equal(hodei_histogram_read(&live, &copy), -1);
    assert_memory_equal(&copy, &before, sizeof(copy));     /* the older copy, untouched */
    live.seq++;
    assert_int_equal(hodei_histogram_read(&live, &copy), 0);
    assert_int_equal(copy.count[0], 1);
    assert_int_equal(copy.native.count, 1);
}

/* ---- in a snapshot ----------------------------------------------------------------------- */

static unsigned char payload[1 << 16] __attribute__((aligned(64)));

/* A snapshot whose scheduling-latency histogram is h, and nothing else. */
static size_t build_one(const struct hodei_histogram *h)
{
    struct hodei_builder b;
    hodei_builder_init(&b, payload, sizeof(payload), 1700000100);
    hodei_builder_family(&b, LATENCY);
    hodei_builder_histogram(&b, NULL, 1700000000, h);
    return hodei_builder_finish(&b);
}

/* h: three observations, exemplars on buckets 0, 7 and +Inf (12); exemplar label values made of
 * letters (so that a value could pass for a name) of 63 and 62 bytes on bucket 7. */
static void sample_histogram(struct hodei_histogram *h)
{
    static char v63[64], v62[63];
    memset(v63, 'v', 63);
    memset(v62, 'w', 62);
    init_latency(h);
    struct hodei_exemplar a = job("7", "acme", 1700000050.25), c = job("9", "umbrella", 1700000052);
    struct hodei_exemplar b = { .nlabels = 2, .timestamp = 1700000051 };
    b.label[0].name = "a";
    b.label[0].name_len = 1;
    b.label[0].value = v63;
    b.label[0].value_len = 63;
    b.label[1].name = "b";
    b.label[1].name_len = 1;
    b.label[1].value = v62;
    b.label[1].value_len = 62;
    hodei_histogram_observe(h, 2e-5, &a);      /* 2e-5 .. 10.5: 152 buckets, schema 3 */
    hodei_histogram_observe(h, 0.3, &b);
    hodei_histogram_observe(h, 10.5, &c);
}

struct view {
    struct hodei_snapshot snap;
    unsigned char *rec;            /* the record */
    uint32_t *native, *exemplars;  /* its refs */
    unsigned char *strings;
};

static void view_of(struct view *v, size_t len)
{
    const char *why;
    if (hodei_snapshot_validate(payload, len, &v->snap, &why) != 0)
        fail_msg("the snapshot is invalid: %s", why);
    const struct hodei_snap_family *f = v->snap.family[LATENCY];
    const struct hodei_snap_header *h = (const void *) payload;
    v->rec = payload + f->series_off;
    v->native = (uint32_t *) (v->rec + 16 + 8 * (f->nbuckets + 1));
    v->exemplars = v->native + 1;
    v->strings = payload + h->strings_off;
}

/* Exemplar k's record in the payload. */
static unsigned char *exemplar_rec(struct view *v, unsigned k)
{
    return v->strings + *v->exemplars + 2 + k * HODEI_SNAP_EXEMPLAR_SIZE;
}

/* Fields of the blobs lie at any alignment. */
static void put_f64(unsigned char *p, double v) { memcpy(p, &v, 8); }
static void put_u32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static void add_u64(unsigned char *p, int64_t d)
{
    uint64_t v;
    memcpy(&v, p, 8);
    v += (uint64_t) d;
    memcpy(p, &v, 8);
}
static void add_u16(unsigned char *p, int d)
{
    uint16_t v;
    memcpy(&v, p, 2);
    v = (uint16_t) (v + d);
    memcpy(p, &v, 2);
}

static void expect_reject(size_t len, const char *reason)
{
    struct hodei_snapshot snap;
    const char *why = NULL;
    assert_int_equal(hodei_snapshot_validate(payload, len, &snap, &why), -1);
    if (why == NULL || strstr(why, reason) == NULL)
        fail_msg("rejected for \"%s\", expected \"%s\"", why ? why : "(nothing)", reason);
}

/* A snapshot of sample_histogram(), viewed; returns its length. */
static size_t sample_snapshot(struct view *v)
{
    static struct hodei_histogram h;
    sample_histogram(&h);
    size_t len = build_one(&h);
    assert_true(len > 0);
    view_of(v, len);
    return len;
}

static void test_snapshot_carries_native_and_exemplars(void **state)
{
    (void) state;
    struct view v;
    size_t len = sample_snapshot(&v);
    const struct hodei_snap_family *f = v.snap.family[LATENCY];

    struct hodei_native_view n;
    assert_int_equal(hodei_series_native(&v.snap, f, v.rec, &n), 1);
    assert_int_equal(n.count, 3);
    assert_true(n.sum == 2e-5 + 0.3 + 10.5);
    assert_int_equal(n.schema, 3);

    struct hodei_exemplar e;
    assert_int_equal(hodei_series_exemplar(&v.snap, f, v.rec, 0, &e), 1);
    assert_int_equal(e.nlabels, 2);
    assert_int_equal(e.label[1].value_len, 4);
    assert_memory_equal(e.label[1].value, "acme", 4);
    assert_true(e.value == 2e-5 && e.timestamp == 1700000050.25);
    assert_int_equal(hodei_series_exemplar(&v.snap, f, v.rec, 1, &e), 0);
    assert_int_equal(hodei_series_exemplar(&v.snap, f, v.rec, 12, &e), 1);
    assert_true(e.value == 10.5);

    /* without exemplars, without a native part: still a valid histogram */
    static struct hodei_histogram plain;
    init_latency(&plain);
    hodei_histogram_observe(&plain, 0.5, NULL);
    len = build_one(&plain);
    view_of(&v, len);
    assert_int_equal(*v.exemplars, HODEI_SNAP_NONE);
    assert_int_equal(hodei_series_native(&v.snap, v.snap.family[LATENCY], v.rec, &n), 1);
    *v.native = HODEI_SNAP_NONE;
    view_of(&v, len);
    assert_int_equal(hodei_series_native(&v.snap, v.snap.family[LATENCY], v.rec, &n), 0);
}

static void test_validator_rejects_corruption(void **state)
{
    (void) state;
    struct view v;
    size_t len = sample_snapshot(&v);
    static unsigned char good[sizeof(payload)];
    memcpy(good, payload, len);

#define CASE(stmt, reason)                                                     \
    do {                                                                       \
        memcpy(payload, good, len);                                            \
        view_of(&v, len);                                                      \
        stmt;                                                                  \
        expect_reject(len, reason);                                            \
    } while (0)
    /* classic and native parts that disagree */
    CASE(((uint64_t *) (v.rec + 16))[1]++, "count or sum differs");
    CASE(((double *) (v.rec + 8))[0] += 1, "count or sum differs");
    CASE(add_u64(v.strings + *v.native + 2 + 24, 1), "native histogram count");
    CASE(*v.native = 0xfffffff0u, "native histogram runs past");
    CASE(v.strings[*v.native + 2] ^= 1, "native histogram magic");
    CASE(v.strings[*v.native + 2 + 2] = 9, "schema out of range");
    CASE(add_u16(v.strings + *v.native, -8), "length disagrees");
    /* exemplars */
    CASE(*v.exemplars = 0xfffffff0u, "exemplars run past");
    CASE(add_u16(v.strings + *v.exemplars, -(int) HODEI_SNAP_EXEMPLAR_SIZE),
         "one per classic bucket");
    CASE(put_u32(exemplar_rec(&v, 0) + 16, 3), "too many labels");
    CASE(put_u32(exemplar_rec(&v, 0) + 16, 1), "does not use");
    CASE(put_u32(exemplar_rec(&v, 0) + 36, 1), "does not use");
    CASE(put_u32(exemplar_rec(&v, 1) + 20, 1), "does not use");
    CASE(put_f64(exemplar_rec(&v, 1), 0.002), "without an exemplar has a value");
    CASE(put_f64(exemplar_rec(&v, 1) + 8, -0.0), "without an exemplar has a value");
    CASE(put_f64(exemplar_rec(&v, 0), 0.0011), "outside its bucket");
    CASE(put_f64(exemplar_rec(&v, 7), 0.25), "outside its bucket");
    CASE(put_f64(exemplar_rec(&v, 12), 10), "outside its bucket");
    CASE(put_f64(exemplar_rec(&v, 12), INFINITY), "outside its bucket");
    CASE(put_f64(exemplar_rec(&v, 0), NAN), "outside its bucket");
    CASE(put_f64(exemplar_rec(&v, 0) + 8, NAN), "timestamp");
    CASE(put_f64(exemplar_rec(&v, 0) + 8, -1), "timestamp");
    /* an exemplar where the bucket is empty: move bucket 0's count to bucket 1 */
    CASE((((uint64_t *) (v.rec + 16))[0]--, ((uint64_t *) (v.rec + 16))[1]++), "empty bucket");
    /* label strings */
    CASE(put_u32(exemplar_rec(&v, 0) + 20, 0xfffffff0u), "past the string area");
    {
        /* a label name that is not a name: point bucket 0's name at its value ("7") */
        memcpy(payload, good, len);
        view_of(&v, len);
        uint32_t refs[4];
        memcpy(refs, exemplar_rec(&v, 0) + 20, 16);
        put_u32(exemplar_rec(&v, 0) + 20, refs[1]);
        expect_reject(len, "not a label name");
        /* 1 + 63 + 1 + 62 = 127 bytes; naming label a by the 62-byte value makes 188 */
        memcpy(payload, good, len);
        view_of(&v, len);
        memcpy(refs, exemplar_rec(&v, 7) + 20, 16);
        put_u32(exemplar_rec(&v, 7) + 20, refs[3]);
        expect_reject(len, "longer than OpenMetrics allows");
    }
#undef CASE
    /* the untouched copy is still fine */
    memcpy(payload, good, len);
    view_of(&v, len);
}

static void test_family_native_all_or_none(void **state)
{
    (void) state;
    static struct hodei_histogram h;
    struct hodei_builder b;
    struct hodei_snapshot snap;
    const char *why;
    sample_histogram(&h);
    hodei_builder_init(&b, payload, sizeof(payload), 1);
    hodei_builder_family(&b, LATENCY);
    hodei_builder_histogram(&b, NULL, 1, &h);
    hodei_builder_histogram(&b, NULL, 1, &h);
    size_t len = hodei_builder_finish(&b);
    assert_int_equal(hodei_snapshot_validate(payload, len, &snap, &why), 0);
    /* the second series loses its native part */
    const struct hodei_snap_family *f = snap.family[LATENCY];
    unsigned char *second = payload + f->series_off + f->stride;
    uint32_t none = HODEI_SNAP_NONE;
    memcpy(second + 16 + 8 * (f->nbuckets + 1), &none, 4);
    expect_reject(len, "some series of a histogram family have a native part");
}

static void test_builder_refuses(void **state)
{
    (void) state;
    static struct hodei_histogram h;
    struct hodei_builder b;
    struct hodei_exemplar ex[HODEI_BUCKETS_MAX + 1];
    sample_histogram(&h);
    memset(ex, 0, sizeof(ex));

    /* a part attached twice */
    hodei_builder_init(&b, payload, sizeof(payload), 1);
    hodei_builder_family(&b, LATENCY);
    hodei_builder_histogram(&b, NULL, 1, &h);
    assert_int_equal(hodei_builder_native(&b, &h.native), -1);
    assert_int_equal(hodei_builder_finish(&b), 0);
    /* to a counter's series, or before any series */
    hodei_builder_init(&b, payload, sizeof(payload), 1);
    hodei_builder_family(&b, HODEI_F_WORKERS_REGISTERED_TOTAL);
    hodei_builder_scalar(&b, NULL, 1, 3);
    assert_int_equal(hodei_builder_exemplars(&b, ex), -1);
    assert_int_equal(hodei_builder_finish(&b), 0);
    hodei_builder_init(&b, payload, sizeof(payload), 1);
    hodei_builder_family(&b, LATENCY);
    assert_int_equal(hodei_builder_native(&b, &h.native), -1);
    /* an exemplar the payload cannot carry */
    hodei_builder_init(&b, payload, sizeof(payload), 1);
    hodei_builder_family(&b, LATENCY);
    double *sum = hodei_builder_series(&b, NULL, 1);
    sum[0] = 1;
    ((uint64_t *) (sum + 1))[0] = 1;
    ex[0] = job("1", "acme", 1);
    ex[0].label[0].name = "job id";
    assert_int_equal(hodei_builder_exemplars(&b, ex), -1);
    /* a histogram with other buckets than the family's */
    static struct hodei_histogram other;
    const double bounds[] = { 1, 2 };
    hodei_histogram_init(&other, bounds, 2);
    hodei_builder_init(&b, payload, sizeof(payload), 1);
    hodei_builder_family(&b, LATENCY);
    assert_int_equal(hodei_builder_histogram(&b, NULL, 1, &other), -1);
    /* too small a buffer for the blobs */
    hodei_builder_init(&b, payload, 1200, 1);
    hodei_builder_family(&b, LATENCY);
    assert_int_equal(hodei_builder_histogram(&b, NULL, 1, &h), -1);
    assert_int_equal(hodei_builder_finish(&b), 0);
}

/* ---- OpenMetrics ------------------------------------------------------------------------- */

static char *render(const struct hodei_snapshot *snap, enum hodei_format fmt)
{
    struct mem_sink m;
    const struct hodei_snapshot *snaps[1] = { snap };
    struct hodei_render_input in = { .snapshots = snaps, .nsnapshots = 1, .scheduler_up = 1,
                                     .snapshot_age = 0.5 };
    mem_sink_init(&m);
    assert_int_equal(hodei_render(&m.sink, fmt, &in), 0);
    return mem_sink_done(&m);
}

static void test_openmetrics_exemplars(void **state)
{
    (void) state;
    static struct hodei_histogram h;
    struct view v;
    init_latency(&h);
    struct hodei_exemplar a = job("42", "te\"n\\a\nnt", 1700000050.125);
    struct hodei_exemplar b = job("43", "acme", 0);               /* no time: none rendered */
    hodei_histogram_observe(&h, 3.5e-6, &a);
    hodei_histogram_observe(&h, 42, &b);
    view_of(&v, build_one(&h));
    char *om = render(&v.snap, HODEI_FMT_OPENMETRICS);
    assert_non_null(strstr(om,
        "\nhodei_scheduling_latency_seconds_bucket{le=\"0.001\"} 1 # "
        "{job_id=\"42\",tenant_id=\"te\\\"n\\\\a\\nnt\"} 3.5e-06 1700000050.125\n"
        "hodei_scheduling_latency_seconds_bucket{le=\"0.005\"} 1\n"));
    assert_non_null(strstr(om, "\nhodei_scheduling_latency_seconds_bucket{le=\"+Inf\"} 2 # "
                               "{job_id=\"43\",tenant_id=\"acme\"} 42\n"
                               "hodei_scheduling_latency_seconds_count 2\n"));
    const char *why = exposition_problem(om, HODEI_FMT_OPENMETRICS);
    if (why)
        fail_msg("%s", why);
    /* text 0.0.4 never carries them */
    char *text = render(&v.snap, HODEI_FMT_TEXT);
    assert_null(strstr(text, " # {"));
    assert_non_null(strstr(text, "\nhodei_scheduling_latency_seconds_bucket{le=\"0.001\"} 1\n"));
    free(om);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classic_and_native_agree),
        cmocka_unit_test(test_refusals_change_nothing),
        cmocka_unit_test(test_exemplar_is_the_latest_of_its_bucket),
        cmocka_unit_test(test_copy_while_observing),
        cmocka_unit_test(test_read_gives_up_on_writer_inside),
        cmocka_unit_test(test_snapshot_carries_native_and_exemplars),
        cmocka_unit_test(test_validator_rejects_corruption),
        cmocka_unit_test(test_family_native_all_or_none),
        cmocka_unit_test(test_builder_refuses),
        cmocka_unit_test(test_openmetrics_exemplars),
    };
    return cmocka_run_group_tests_name("shm_histogram", tests, NULL, NULL);
}
