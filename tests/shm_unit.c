/* Unit tests of shm/: publish/read, corruption, escaping, numbers, histograms, negotiation. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "hodei_fill.h"
#include "hodei_render.h"
#include "hodei_segment.h"
#include "hodei_snapshot.h"
#include "shm_test_util.h"

static char seg_path[256];

struct fixture {
    struct hodei_seg_writer w;
    struct hodei_seg_reader r;
    void  *payload;
    size_t len, cap;
};

static size_t build_fill(void *buf, size_t cap, unsigned tenants, unsigned workers, uint64_t seed)
{
    struct hodei_fill_params p = HODEI_FILL_DEFAULTS;
    p.tenants = tenants;
    p.workers = workers;
    p.seed = seed;
    return hodei_fill_build(buf, cap, &p);
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    char err[256];
    snprintf(seg_path, sizeof(seg_path), "/tmp/hodei-unit-%ld.seg", (long) getpid());
    fx->cap = 1 << 20;
    fx->payload = aligned_alloc(64, fx->cap);
    fx->len = build_fill(fx->payload, fx->cap, 3, 4, 7);
    assert_true(fx->len > 0);
    assert_int_equal(hodei_seg_create(&fx->w, seg_path, 3, fx->cap, err, sizeof(err)), 0);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    hodei_seg_unmap(&fx->r);
    hodei_seg_close(&fx->w);
    unlink(seg_path);
    free(fx->payload);
    free(fx);
    return 0;
}

static enum hodei_seg_status read_once(struct fixture *fx, struct hodei_snapshot *snap,
                                       const char **why)
{
    hodei_seg_unmap(&fx->r);
    enum hodei_seg_status st = hodei_seg_open(&fx->r, seg_path);
    if (st != HODEI_SEG_OK)
        return st;
    return hodei_seg_read(&fx->r, snap, NULL, why);
}

/* ---- publish and read ----------------------------------------------------------------- */

static void test_round_trip(void **state)
{
    struct fixture *fx = *state;
    struct hodei_snapshot snap;
    const char *why;
    uint64_t gen = 0;

    assert_int_equal(read_once(fx, &snap, &why), HODEI_SEG_EMPTY);
    for (int i = 0; i < 5; i++) {                  /* wraps the 3 slots */
        fx->len = build_fill(fx->payload, fx->cap, 3, 4, 100 + i);
        assert_int_equal(hodei_seg_publish(&fx->w, fx->payload, fx->len), 0);
        assert_int_equal(hodei_seg_read(&fx->r, &snap, &gen, &why), HODEI_SEG_OK);
        assert_int_equal(gen, i + 1);
        assert_int_equal(snap.len, fx->len);
        assert_memory_equal(snap.base, fx->payload, fx->len);
    }
    assert_non_null(snap.family[HODEI_F_JOBS_SCHEDULED_TOTAL]);
    assert_int_equal(snap.family[HODEI_F_JOBS_SCHEDULED_TOTAL]->nseries, 3);
    assert_int_equal(snap.family[HODEI_F_CPU_USAGE_PERCENT]->nseries, 4);
    assert_null(snap.family[HODEI_F_HTTP_REQUESTS_TOTAL]);   /* nginx's, never the daemon's */
    assert_false(hodei_seg_replaced(&fx->r, seg_path));
    assert_true(hodei_seg_age(&fx->r) < 5);
}

static void test_oversized_publish_refused(void **state)
{
    struct fixture *fx = *state;
    size_t max = hodei_seg_payload_max(&fx->w);
    void *big = calloc(1, max + 1);
    assert_int_equal(hodei_seg_publish(&fx->w, big, max + 1), -1);
    free(big);
}

static void test_restart_is_noticed(void **state)
{
    struct fixture *fx = *state;
    struct hodei_snapshot snap;
    const char *why;
    struct hodei_seg_writer w2;
    char err[256];

    assert_int_equal(hodei_seg_publish(&fx->w, fx->payload, fx->len), 0);
    assert_int_equal(read_once(fx, &snap, &why), HODEI_SEG_OK);
    assert_int_equal(hodei_seg_create(&w2, seg_path, 4, fx->cap, err, sizeof(err)), 0);
    assert_true(hodei_seg_replaced(&fx->r, seg_path));
    hodei_seg_close(&w2);
}

/* A second daemon must not replace a live daemon's segment. */
static void test_live_writer_is_not_replaced(void **state)
{
    struct fixture *fx = *state;
    struct hodei_seg_writer w2;
    char err[256], path[300];
    int ready[2];
    snprintf(path, sizeof(path), "%s.live", seg_path);
    assert_int_equal(pipe(ready), 0);
    pid_t child = fork();
    if (child == 0) {
        struct hodei_seg_writer w;
        char e[256];
        int rc = hodei_seg_create(&w, path, 3, 4096, e, sizeof(e));
        if (write(ready[1], &rc, sizeof(rc)) != sizeof(rc))
            _exit(1);
        pause();
        _exit(0);
    }
    int rc = -1;
    assert_int_equal(read(ready[0], &rc, sizeof(rc)), sizeof(rc));
    assert_int_equal(rc, 0);
    assert_int_equal(hodei_seg_create(&w2, path, 3, fx->cap, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "belongs to a running writer"));
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    assert_int_equal(hodei_seg_create(&w2, path, 3, fx->cap, err, sizeof(err)), 0);
    hodei_seg_close(&w2);
    unlink(path);
    close(ready[0]);
    close(ready[1]);
}

static void test_missing_segment(void **state)
{
    struct hodei_seg_reader r;
    (void) state;
    assert_int_equal(hodei_seg_open(&r, "/nonexistent/hodei.seg"), HODEI_SEG_MISSING);
    assert_string_equal(hodei_seg_strerror(HODEI_SEG_MISSING), "segment file does not exist");
}

/* The writer is inside the slot (odd sequence) for every try: the reader gives up cleanly. */
static void test_reader_retries_odd_sequence(void **state)
{
    struct fixture *fx = *state;
    struct hodei_snapshot snap;
    const char *why;

    assert_int_equal(hodei_seg_publish(&fx->w, fx->payload, fx->len), 0);
    assert_int_equal(read_once(fx, &snap, &why), HODEI_SEG_OK);
    struct hodei_seg_slot *s = (struct hodei_seg_slot *)
        (fx->w.map + HODEI_SEG_HDR_SIZE + fx->w.slot * fx->w.hdr->slot_size);
    s->seq++;
    uint64_t before = fx->r.retries;
    assert_int_equal(hodei_seg_read(&fx->r, &snap, NULL, &why), HODEI_SEG_BUSY);
    assert_int_equal(fx->r.retries - before, HODEI_SEG_READ_TRIES);
    s->seq++;
    assert_int_equal(hodei_seg_read(&fx->r, &snap, NULL, &why), HODEI_SEG_OK);
}

struct lap {
    struct fixture *fx;
    volatile int stop;
    unsigned publishes;
};

/* Generation g carries the payload built from seed g % 2: prebuilt, so the writer publishes
 * at copy speed and laps a reader often. */
static void *lapping_writer(void *arg)
{
    struct lap *l = arg;
    size_t cap = l->fx->cap;
    void *buf[2] = { aligned_alloc(64, cap), aligned_alloc(64, cap) };
    size_t len[2] = { build_fill(buf[0], cap, 200, 2000, 0), build_fill(buf[1], cap, 200, 2000, 1) };
    while (!l->stop) {
        l->publishes++;
        hodei_seg_publish(&l->fx->w, buf[l->publishes % 2], len[l->publishes % 2]);
    }
    free(buf[0]);
    free(buf[1]);
    return NULL;
}

/* A writer publishing big snapshots back to back laps the reader, which must retry and
 * still only ever return a snapshot identical to what the writer built for that generation. */
static void test_reader_retries_while_writer_laps(void **state)
{
    struct fixture *fx = *state;
    struct hodei_snapshot snap;
    const char *why;
    pthread_t t;
    struct lap l = { .fx = fx };
    void *expect[2] = { aligned_alloc(64, fx->cap), aligned_alloc(64, fx->cap) };
    size_t expect_len[2] = { build_fill(expect[0], fx->cap, 200, 2000, 0),
                             build_fill(expect[1], fx->cap, 200, 2000, 1) };
    unsigned ok = 0;
    double deadline = hodei_now() + 5;

    assert_int_equal(pthread_create(&t, NULL, lapping_writer, &l), 0);
    while (l.publishes < 2)
        usleep(1000);
    assert_int_equal(read_once(fx, &snap, &why), HODEI_SEG_OK);
    while (hodei_now() < deadline && (fx->r.retries == 0 || ok < 200)) {
        uint64_t gen;
        enum hodei_seg_status st = hodei_seg_read(&fx->r, &snap, &gen, &why);
        assert_true(st == HODEI_SEG_OK || st == HODEI_SEG_BUSY);
        if (st != HODEI_SEG_OK)
            continue;
        assert_int_equal(snap.len, expect_len[gen % 2]);
        assert_memory_equal(snap.base, expect[gen % 2], snap.len);
        ok++;
    }
    l.stop = 1;
    pthread_join(t, NULL);
    assert_true(ok > 0);
    assert_true(fx->r.retries > 0);
    free(expect[0]);
    free(expect[1]);
}

/* ---- header corruption -------------------------------------------------------------- */

static void expect_status(struct fixture *fx, enum hodei_seg_status want)
{
    struct hodei_snapshot snap;
    const char *why;
    enum hodei_seg_status st = read_once(fx, &snap, &why);
    if (st != want)
        fail_msg("got status %d (%s), want %d (%s)", st, hodei_seg_strerror(st), want,
                 hodei_seg_strerror(want));
}

static void test_header_corruption(void **state)
{
    struct fixture *fx = *state;
    struct hodei_seg_header *h = fx->w.hdr;
    struct hodei_seg_header saved;

    assert_int_equal(hodei_seg_publish(&fx->w, fx->payload, fx->len), 0);
    expect_status(fx, HODEI_SEG_OK);
    saved = *h;

#define CORRUPT(stmt, want) do { stmt; expect_status(fx, want); *h = saved; } while (0)
    CORRUPT(h->magic ^= 1, HODEI_SEG_BAD_MAGIC);
    CORRUPT(h->version = 2, HODEI_SEG_BAD_VERSION);
    CORRUPT(h->segment_size += 64, HODEI_SEG_BAD_GEOMETRY);
    CORRUPT(h->slot_count = 2, HODEI_SEG_BAD_GEOMETRY);
    CORRUPT(h->slot_count = 1000, HODEI_SEG_BAD_GEOMETRY);
    CORRUPT(h->slot_size += 1, HODEI_SEG_BAD_GEOMETRY);
    CORRUPT(h->slot_size = HODEI_SEG_SLOT_HDR, HODEI_SEG_BAD_GEOMETRY);
    CORRUPT(h->published = (h->published & ~0xffull) | 3, HODEI_SEG_BAD_SLOT);
    CORRUPT(h->published = (h->published & ~0xffull) | 255, HODEI_SEG_BAD_SLOT);
    CORRUPT(h->published = 0, HODEI_SEG_EMPTY);
#undef CORRUPT

    /* the slot: a length past its end, a payload that is not a snapshot */
    struct hodei_seg_slot *s = (struct hodei_seg_slot *)
        (fx->w.map + HODEI_SEG_HDR_SIZE + fx->w.slot * h->slot_size);
    uint64_t len = s->length;
    s->length = h->slot_size;
    expect_status(fx, HODEI_SEG_BAD_LENGTH);
    s->length = 3;
    expect_status(fx, HODEI_SEG_BAD_PAYLOAD);
    s->length = len;
    expect_status(fx, HODEI_SEG_OK);
}

static void test_short_files(void **state)
{
    char path[300];
    struct hodei_seg_reader r;
    (void) state;
    snprintf(path, sizeof(path), "%s.short", seg_path);
    FILE *f = fopen(path, "w");
    fputs("HODEI", f);
    fclose(f);
    assert_int_equal(hodei_seg_open(&r, path), HODEI_SEG_TOO_SMALL);
    f = fopen(path, "w");
    for (int i = 0; i < 4096; i++)
        fputc(0x5a, f);
    fclose(f);
    assert_int_equal(hodei_seg_open(&r, path), HODEI_SEG_BAD_MAGIC);
    unlink(path);
}

/* ---- payload corruption ------------------------------------------------------------- */

struct payload {
    unsigned char *buf;
    size_t len;
    struct hodei_snap_header *h;
    struct hodei_snap_family *fam;   /* family table */
};

static void fresh_payload(struct payload *p, void *buf, size_t cap)
{
    p->buf = buf;
    p->len = build_fill(buf, cap, 3, 4, 9);
    assert_true(p->len > 0);
    p->h = buf;
    p->fam = (struct hodei_snap_family *) (p->buf + sizeof(struct hodei_snap_header));
}

static void expect_reject(struct payload *p, const char *reason)
{
    struct hodei_snapshot snap;
    const char *why = NULL;
    assert_int_equal(hodei_snapshot_validate(p->buf, p->len, &snap, &why), -1);
    assert_non_null(why);
    if (strstr(why, reason) == NULL)
        fail_msg("rejected for \"%s\", expected \"%s\"", why, reason);
}

/* Index in the family table of family id. */
static int fam_index(struct payload *p, enum hodei_family_id id)
{
    for (int k = 0; k < p->h->nfamilies; k++)
        if (p->fam[k].id == id)
            return k;
    fail_msg("family %d missing", id);
    return -1;
}

static unsigned char *first_series(struct payload *p, enum hodei_family_id id)
{
    return p->buf + p->fam[fam_index(p, id)].series_off;
}

static void test_payload_corruption(void **state)
{
    struct fixture *fx = *state;
    struct payload p;
    struct hodei_snapshot snap;
    const char *why;
    void *buf = fx->payload;
    size_t cap = fx->cap;
    int k;

    fresh_payload(&p, buf, cap);
    assert_int_equal(hodei_snapshot_validate(p.buf, p.len, &snap, &why), 0);

#define CASE(stmt, reason) do { fresh_payload(&p, buf, cap); stmt; expect_reject(&p, reason); } while (0)
    CASE(p.h->magic = 0, "magic");
    CASE(p.len = 10, "shorter than its header");
    CASE(p.h->nfamilies = HODEI_F_COUNT + 1, "more families");
    CASE(p.h->strings_off = (uint32_t) p.len, "string area out of bounds");
    CASE(p.h->strings_len = 0xffffffffu, "string area out of bounds");
    CASE(p.h->timestamp = NAN, "timestamp");
    CASE(p.fam[0].id = 999, "unknown family id");
    CASE(p.fam[1].id = p.fam[0].id, "strictly increasing");
    CASE(p.fam[0].id = HODEI_F_SCHEDULER_UP, "segment header");
    CASE(p.fam[0].nlabels = 2, "label count");
    CASE(p.fam[0].stride += 8, "stride");
    CASE(p.fam[0].series_off += 4, "misaligned");
    CASE(p.fam[0].series_off = 8, "inside the header");
    CASE(p.fam[0].series_off = 0xfffffff8u, "past the series area");
    CASE(p.fam[0].nseries = 0xffffffffu, "past the series area");   /* count * stride overflows */
    CASE(p.fam[fam_index(&p, HODEI_F_JOBS_QUEUED)].nbuckets = 3, "bucket count");
    k = fam_index(&p, HODEI_F_SCHEDULING_LATENCY_SECONDS);
    CASE(p.fam[k].nbuckets = 0, "bucket count");
    CASE(p.fam[k].nbuckets = HODEI_BUCKETS_MAX + 1, "bucket count");
    CASE(p.fam[k].bounds_off = 0xfffffff0u, "bounds offset");
    CASE(((double *) (p.buf + p.fam[k].bounds_off))[1] = 0, "strictly increasing");
    CASE(((double *) (p.buf + p.fam[k].bounds_off))[0] = INFINITY, "finite");
    CASE(((uint64_t *) (first_series(&p, HODEI_F_SCHEDULING_LATENCY_SECONDS) + 16))[0] = UINT64_MAX,
         "overflow");
    CASE(((double *) (first_series(&p, HODEI_F_SCHEDULING_LATENCY_SECONDS) + 8))[0] = NAN,
         "sum is NaN");
    CASE(((double *) (first_series(&p, HODEI_F_WORKERS_REGISTERED_TOTAL) + 8))[0] = -1,
         "counter value");
    CASE(((double *) first_series(&p, HODEI_F_WORKERS_REGISTERED_TOTAL))[0] = NAN, "created");
    /* label references and strings */
    CASE(((uint32_t *) first_series(&p, HODEI_F_JOBS_SCHEDULED_TOTAL))[0] = p.h->strings_len,
         "past the string area");
    /* an unterminated string: the area ends inside it */
    CASE(p.h->strings_len = ((uint32_t *) first_series(&p, HODEI_F_JOBS_SCHEDULED_TOTAL))[0] + 3,
         "runs past the string area");
    {
        fresh_payload(&p, buf, cap);
        uint32_t ref = ((uint32_t *) first_series(&p, HODEI_F_JOBS_SCHEDULED_TOTAL))[0];
        unsigned char *str = p.buf + p.h->strings_off + ref;
        str[2] = 0xff;                                          /* not UTF-8 */
        expect_reject(&p, "UTF-8");
        fresh_payload(&p, buf, cap);
        str[2] = 0;                                             /* NUL inside */
        expect_reject(&p, "UTF-8");
        fresh_payload(&p, buf, cap);
        str[0] = 0;
        str[1] = 0;                                             /* empty */
        expect_reject(&p, "empty or too long");
        fresh_payload(&p, buf, cap);
        str[0] = 0xff;
        str[1] = 0x7f;                                          /* 32 KiB claimed */
        expect_reject(&p, "empty or too long");
    }
#undef CASE
    /* every single-bit flip of the header and family table: rejected or still renderable */
    size_t table_end = sizeof(struct hodei_snap_header)
                       + HODEI_F_COUNT * sizeof(struct hodei_snap_family);
    for (size_t byte = 0; byte < table_end; byte++) {
        for (int bit = 0; bit < 8; bit++) {
            fresh_payload(&p, buf, cap);
            p.buf[byte] ^= (unsigned char) (1u << bit);
            if (hodei_snapshot_validate(p.buf, p.len, &snap, &why) == 0) {
                struct mem_sink m;
                const struct hodei_snapshot *snaps[1] = { &snap };
                struct hodei_render_input in = { .snapshots = snaps, .nsnapshots = 1 };
                mem_sink_init(&m);
                assert_int_equal(hodei_render(&m.sink, HODEI_FMT_TEXT, &in), 0);
                free(mem_sink_done(&m));
            }
        }
    }
}

/* ---- rendering ------------------------------------------------------------------------ */

static char *render_one(const struct hodei_snapshot *snap, enum hodei_format fmt, int up,
                        double age)
{
    struct mem_sink m;
    const struct hodei_snapshot *snaps[1] = { snap };
    struct hodei_render_input in = { .snapshots = snaps, .nsnapshots = snap ? 1 : 0,
                                     .scheduler_up = up, .snapshot_age = age };
    mem_sink_init(&m);
    assert_int_equal(hodei_render(&m.sink, fmt, &in), 0);
    return mem_sink_done(&m);
}

static void test_escaping_hostile_labels(void **state)
{
    struct fixture *fx = *state;
    struct hodei_builder b;
    struct hodei_snapshot snap;
    const char *why;
    const char *hostile[] = { "a\"b", "back\\slash", "new\nline", "\xc3\xa9t\xc3\xa9 \xe2\x9c\x93",
                              "} 1\n# TYPE x counter" };
    const char *expect[] = {
        "hodei_jobs_submitted_total{tenant_id=\"a\\\"b\"} 1\n",
        "hodei_jobs_submitted_total{tenant_id=\"back\\\\slash\"} 2\n",
        "hodei_jobs_submitted_total{tenant_id=\"new\\nline\"} 3\n",
        "hodei_jobs_submitted_total{tenant_id=\"\xc3\xa9t\xc3\xa9 \xe2\x9c\x93\"} 4\n",
        "hodei_jobs_submitted_total{tenant_id=\"} 1\\n# TYPE x counter\"} 5\n" };

    hodei_builder_init(&b, fx->payload, fx->cap, 1);
    hodei_builder_family(&b, HODEI_F_JOBS_SUBMITTED_TOTAL);
    for (int i = 0; i < 5; i++)
        assert_int_equal(hodei_builder_scalar(&b, &hostile[i], 1, i + 1), 0);
    size_t len = hodei_builder_finish(&b);
    assert_true(len > 0);
    assert_int_equal(hodei_snapshot_validate(fx->payload, len, &snap, &why), 0);
    char *text = render_one(&snap, HODEI_FMT_TEXT, 1, 0);
    for (int i = 0; i < 5; i++)
        if (strstr(text, expect[i]) == NULL)
            fail_msg("missing %s in:\n%s", expect[i], text);
    free(text);

    /* what a label may not be is refused when building, not rendered */
    const char *bad[] = { "", "\xff\xfe", "a\0b" };
    char longest[HODEI_LABEL_VALUE_MAX + 2];
    memset(longest, 'x', sizeof(longest) - 1);
    longest[sizeof(longest) - 1] = '\0';
    for (int i = 0; i < 4; i++) {
        const char *v[1] = { i < 3 ? bad[i] : longest };
        hodei_builder_init(&b, fx->payload, fx->cap, 1);
        hodei_builder_family(&b, HODEI_F_JOBS_SUBMITTED_TOTAL);
        if (i == 2) {
            assert_int_equal(hodei_builder_scalar(&b, v, 1, 1), 0);  /* "a": NUL ends it */
            continue;
        }
        assert_int_equal(hodei_builder_scalar(&b, v, 1, 1), -1);
        assert_int_equal(hodei_builder_finish(&b), 0);
    }
}

static void check_number(double v, const char *want)
{
    char buf[HODEI_NUM_MAX + 1];
    size_t n = hodei_fmt_double(buf, v);
    buf[n] = '\0';
    if (strcmp(buf, want) != 0)
        fail_msg("%.17g formatted as \"%s\", want \"%s\"", v, buf, want);
}

static void test_number_formatting(void **state)
{
    (void) state;
    check_number(0, "0");
    check_number(-0.0, "0");
    check_number(1, "1");
    check_number(42, "42");
    check_number(-7, "-7");
    check_number(1234567890123, "1234567890123");
    check_number(0.5, "0.5");
    check_number(0.001, "0.001");
    check_number(2.5, "2.5");
    check_number(99.9, "99.9");
    check_number(18699.80775, "18699.80775");
    check_number(1e-9, "1e-09");
    check_number(1e+21, "1e+21");
    check_number(1e15, "1000000000000000");      /* integers stay plain up to 2^53 */
    check_number(1e16, "1e+16");
    check_number(9007199254740993.0, "9007199254740992");
    check_number(0.1 + 0.2, "0.30000000000000004");          /* needs 17 digits */
    check_number(1.0 / 3, "0.3333333333333333");
    check_number(2.2250738585072014e-308, "2.2250738585072014e-308");
    check_number(1.7976931348623157e308, "1.7976931348623157e+308");
    check_number(NAN, "NaN");
    check_number(INFINITY, "+Inf");
    check_number(-INFINITY, "-Inf");

    char buf[HODEI_NUM_MAX + 1];
    assert_int_equal(hodei_fmt_u64(buf, UINT64_MAX), 20);
    assert_memory_equal(buf, "18446744073709551615", 20);

    /* every output parses back exactly, in at most 17 significant digits */
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double v;
        if (i % 3 == 0) {
            memcpy(&v, &x, 8);                       /* any bit pattern */
        } else if (i % 3 == 1) {
            v = (double) (x % 100000) / 100.0;        /* short decimals */
        } else {
            v = (double) (x >> 11) / 9007199254740992.0 * 1e6;
        }
        size_t n = hodei_fmt_double(buf, v);
        buf[n] = '\0';
        if (isnan(v)) {
            assert_string_equal(buf, "NaN");
            continue;
        }
        double back = strtod(buf, NULL);
        if (memcmp(&back, &v, 8) != 0 && !(v == 0 && back == 0))
            fail_msg("%.17g formatted as %s, parsed back as %.17g", v, buf, back);
        char shortest[40];
        if (fabs(v) < 2.2250738585072014e-308)
            continue;                       /* subnormals: round-trip only */
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(shortest, sizeof(shortest), "%.*g", prec, v);
            if (strtod(shortest, NULL) == v) {
                int digits = 0;
                for (char *c = buf; *c && *c != 'e'; c++)
                    digits += *c >= '0' && *c <= '9';
                /* leading zeros of 0.00x are not significant */
                for (char *c = buf; *c == '0' || *c == '.' || *c == '-'; c++)
                    digits -= *c == '0';
                /* nor are an integer's trailing zeros ("290" is as short as 2.9e+02) */
                if (strpbrk(buf, ".e") == NULL)
                    for (char *c = buf + n - 1; c > buf && *c == '0'; c--)
                        digits--;
                if (digits > prec)
                    fail_msg("%s is not shortest: %s", buf, shortest);
                break;
            }
        }
    }
}

/* Histograms: buckets cumulative and monotone, +Inf equal to _count, in both formats. */
static void test_histogram_invariants(void **state)
{
    struct fixture *fx = *state;
    struct hodei_snapshot snap;
    const char *why;
    size_t len = build_fill(fx->payload, fx->cap, 3, 4, 11);
    assert_int_equal(hodei_snapshot_validate(fx->payload, len, &snap, &why), 0);

    for (int fmt = HODEI_FMT_TEXT; fmt <= HODEI_FMT_OPENMETRICS; fmt++) {
        char *text = render_one(&snap, fmt, 1, 0);
        int histograms = 0;
        for (int id = 0; id < HODEI_F_COUNT; id++) {
            const struct hodei_family *f = &hodei_families[id];
            if (f->type != HODEI_HISTOGRAM || f->source != HODEI_SRC_DAEMON)
                continue;
            char key[128];
            double prev = -1, inf = -1, count = -2;
            unsigned buckets = 0;
            snprintf(key, sizeof(key), "%s_bucket{le=\"", f->name);
            for (char *p = strstr(text, key); p; p = strstr(p + 1, key)) {
                char *q = strchr(p, '}') + 2;
                double v = strtod(q, NULL);
                assert_true(v >= prev);
                prev = v;
                buckets++;
                if (strncmp(p + strlen(key), "+Inf\"", 5) == 0)
                    inf = v;
            }
            snprintf(key, sizeof(key), "\n%s_count ", f->name);
            char *c = strstr(text, key);
            assert_non_null(c);
            count = strtod(c + strlen(key), NULL);
            assert_int_equal(buckets, f->nbuckets + 1);
            assert_true(inf > 0);
            assert_true(inf == count);
            histograms++;
        }
        assert_int_equal(histograms, 3);
        free(text);
    }
}

static void test_every_family_once(void **state)
{
    (void) state;
    for (int fmt = HODEI_FMT_TEXT; fmt <= HODEI_FMT_OPENMETRICS; fmt++) {
        char *text = render_one(NULL, fmt, 0, NAN);      /* no daemon, no zone */
        for (int id = 0; id < HODEI_F_COUNT; id++) {
            char key[128];
            const struct hodei_family *f = &hodei_families[id];
            int len = f->name_len;
            if (fmt == HODEI_FMT_OPENMETRICS && f->type == HODEI_COUNTER)
                len -= 6;
            snprintf(key, sizeof(key), "# TYPE %.*s ", len, f->name);
            char *first = strstr(text, key);
            assert_non_null(first);
            assert_null(strstr(first + 1, key));
            snprintf(key, sizeof(key), "# HELP %.*s ", len, f->name);
            assert_non_null(strstr(text, key));
        }
        /* nothing fabricated: only the scheduler's own state has a sample */
        assert_non_null(strstr(text, "\nhodei_scheduler_up 0\n"));
        assert_null(strstr(text, "\nhodei_metrics_snapshot_age_seconds "));
        assert_null(strstr(text, "\nhodei_jobs_queued "));
        if (fmt == HODEI_FMT_OPENMETRICS) {
            size_t n = strlen(text);
            assert_true(n > 6 && strcmp(text + n - 6, "# EOF\n") == 0);
        } else {
            assert_null(strstr(text, "# EOF"));
        }
        free(text);
    }
}

static void test_openmetrics_counters(void **state)
{
    struct fixture *fx = *state;
    struct hodei_snapshot snap;
    const char *why;
    size_t len = build_fill(fx->payload, fx->cap, 1, 1, 5);
    assert_int_equal(hodei_snapshot_validate(fx->payload, len, &snap, &why), 0);
    char *text = render_one(&snap, HODEI_FMT_OPENMETRICS, 1, 0.25);
    assert_non_null(strstr(text, "# TYPE hodei_jobs_scheduled counter\n"));
    assert_non_null(strstr(text, "\nhodei_jobs_scheduled_total{tenant_id=\"tenant-0001\"} "));
    assert_non_null(strstr(text, "\nhodei_jobs_scheduled_created{tenant_id=\"tenant-0001\"} 1700000005\n"));
    assert_non_null(strstr(text, "\nhodei_scheduling_latency_seconds_created 1700000005\n"));
    assert_non_null(strstr(text, "\nhodei_metrics_snapshot_age_seconds 0.25\n"));
    assert_non_null(strstr(text, "# TYPE hodei_workers_total gauge\n"));
    free(text);
}

static void test_accept_negotiation(void **state)
{
    (void) state;
#define NEG(s) hodei_format_from_accept(s, strlen(s))
    assert_int_equal(hodei_format_from_accept(NULL, 0), HODEI_FMT_TEXT);
    assert_int_equal(NEG(""), HODEI_FMT_TEXT);
    assert_int_equal(NEG("*/*"), HODEI_FMT_TEXT);
    assert_int_equal(NEG("text/plain"), HODEI_FMT_TEXT);
    assert_int_equal(NEG("application/openmetrics-text"), HODEI_FMT_OPENMETRICS);
    /* what Prometheus 2.x sends */
    assert_int_equal(NEG("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                         "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
                     HODEI_FMT_OPENMETRICS);
    assert_int_equal(NEG("text/plain;version=0.0.4;q=1, application/openmetrics-text;q=0.5"),
                     HODEI_FMT_TEXT);
    assert_int_equal(NEG("application/openmetrics-text; q=0"), HODEI_FMT_TEXT);
    assert_int_equal(NEG("APPLICATION/OpenMetrics-Text ;q=0.9, text/html"), HODEI_FMT_OPENMETRICS);
    assert_int_equal(NEG(";;;,,,q=,=;"), HODEI_FMT_TEXT);
#undef NEG
}

static void test_payload_bound_holds(void **state)
{
    (void) state;
    struct hodei_fill_params p = HODEI_FILL_DEFAULTS;
    uint32_t caps[HODEI_F_COUNT];
    p.tenants = 100;
    p.workers = 500;
    hodei_fill_caps(&p, caps);
    size_t bound = hodei_payload_bound(caps);
    void *buf = aligned_alloc(64, bound);
    size_t len = hodei_fill_build(buf, bound, &p);
    assert_true(len > 0 && len <= bound);
    /* one byte short of what it needs: refused, not truncated */
    assert_int_equal(hodei_fill_build(buf, len - 8, &p), 0);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversized_publish_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_is_noticed, setup, teardown),
        cmocka_unit_test(test_missing_segment),
        cmocka_unit_test_setup_teardown(test_live_writer_is_not_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_retries_odd_sequence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_retries_while_writer_laps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_corruption, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_payload_corruption, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escaping_hostile_labels, setup, teardown),
        cmocka_unit_test(test_number_formatting),
        cmocka_unit_test_setup_teardown(test_histogram_invariants, setup, teardown),
        cmocka_unit_test(test_every_family_once),
        cmocka_unit_test_setup_teardown(test_openmetrics_counters, setup, teardown),
        cmocka_unit_test(test_accept_negotiation),
        cmocka_unit_test(test_payload_bound_holds),
    };
    return cmocka_run_group_tests_name("shm", tests, NULL, NULL);
}
