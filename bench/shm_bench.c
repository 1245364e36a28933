/*
 * shm_bench — renderer, publish and read costs for snapshots of ~200, ~5,000 and ~25,000
 * samples, each against a plain memcpy of the rendered bytes measured in the same run
 * (interleaved repetitions, medians), because absolute times drift on shared machines.
 * The protobuf rendering of the same snapshot (its three daemon histograms recorded from
 * 100,000 decision latencies each: native parts of ~130 buckets, an exemplar per classic
 * bucket) is timed in the same repetitions, per sample of the text rendering.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hodei_fill.h"
#include "hodei_native.h"
#include "hodei_render.h"
#include "hodei_segment.h"
#include "hodei_snapshot.h"

#define REPS 31

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t) n, sizeof(*v), cmp_double);
    return v[n / 2];
}

static char *out_buf;
static size_t out_cap;

static int no_flush(struct hodei_sink *s)
{
    (void) s;
    return -1;                                   /* out_buf is sized to hold everything */
}

/* Decision latencies (0.5 us .. 50 ms) for each of the daemon's histograms, as the daemon
 * will have recorded them: native parts of ~130 buckets and an exemplar per classic bucket. */
#define OBSERVATIONS 100000
static struct hodei_fill_observation observations[3 * OBSERVATIONS];
static char job_ids[OBSERVATIONS][8];

static void build_observations(struct hodei_fill_params *p)
{
    static const enum hodei_family_id ids[3] = { HODEI_F_SCHEDULING_LATENCY_SECONDS,
        HODEI_F_QUEUE_WAIT_TIME_SECONDS, HODEI_F_JOB_DURATION_SECONDS };
    uint64_t x = 1;
    for (int i = 0; i < OBSERVATIONS; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        double v = 5e-7 * pow(1e5, (double) (x >> 11) / 9007199254740992.0);
        snprintf(job_ids[i], sizeof(job_ids[i]), "%d", i + 1);
        for (int f = 0; f < 3; f++)
            observations[f * OBSERVATIONS + i] = (struct hodei_fill_observation) {
                .family = ids[f], .value = v, .job_id = job_ids[i], .tenant_id = "tenant-0001",
                .timestamp = 1700000000 + i * 1e-3 };
    }
    for (int f = 0; f < 3; f++)
        p->observed |= (uint64_t) 1 << ids[f];
    p->observations = observations;
    p->nobservations = 3 * OBSERVATIONS;
}

static size_t render(const struct hodei_snapshot *snap, enum hodei_format fmt)
{
    const struct hodei_snapshot *snaps[1] = { snap };
    struct hodei_render_input in = { .snapshots = snaps, .nsnapshots = 1, .scheduler_up = 1,
                                     .snapshot_age = 0.1 };
    struct hodei_sink s = { .pos = out_buf, .end = out_buf + out_cap, .flush = no_flush };
    if (hodei_render(&s, fmt, &in) != 0) {
        fprintf(stderr, "render buffer too small\n");
        exit(1);
    }
    return (size_t) (s.pos - out_buf);
}

static void run(size_t target)
{
    struct hodei_fill_params p = HODEI_FILL_DEFAULTS;
    p.tenants = target / 50 ? (unsigned) (target / 50) : 1;
    p.workers = 1;
    size_t base = hodei_fill_samples(&p);
    p.workers = target > base ? (unsigned) ((target - base) / 2) + 1 : 1;
    build_observations(&p);

    uint32_t caps[HODEI_F_COUNT];
    hodei_fill_caps(&p, caps);
    size_t cap = hodei_payload_bound(caps);
    void *payload = aligned_alloc(64, cap);
    size_t len = hodei_fill_build(payload, cap, &p);

    char path[128], err[256];
    snprintf(path, sizeof(path), "/dev/shm/hodei-bench-%ld", (long) getpid());
    struct hodei_seg_writer w;
    struct hodei_seg_reader r;
    struct hodei_snapshot snap;
    const char *why;
    hodei_seg_reader_init(&r);
    if (len == 0 || hodei_seg_create(&w, path, 3, len, err, sizeof(err)) != 0
        || hodei_seg_publish(&w, payload, len) != 0
        || hodei_seg_load(&r, path, &snap, NULL, &why) != HODEI_SEG_OK) {
        fprintf(stderr, "setup failed: %s\n", err);
        exit(1);
    }
    out_cap = 64 * len + (1 << 20);
    out_buf = malloc(out_cap);
    char *copy = malloc(out_cap);
    size_t pb_len = render(&snap, HODEI_FMT_PROTOBUF);
    size_t text_len = render(&snap, HODEI_FMT_TEXT);
    size_t samples = 0;
    for (size_t i = 0; i < text_len; i++)
        samples += out_buf[i] == '\n' && i + 1 < text_len && out_buf[i + 1] != '#';
    samples++;

    double t_render[REPS], t_memcpy[REPS], t_publish[REPS], t_read[REPS], t_pb[REPS];
    int inner = (int) (200000 / samples) + 1;
    for (int rep = 0; rep < REPS; rep++) {
        double t0 = now_ns();
        for (int i = 0; i < inner; i++) {
            memcpy(copy, out_buf, text_len);
            __asm__ volatile("" ::: "memory");
        }
        double t1 = now_ns();
        for (int i = 0; i < inner; i++)
            render(&snap, HODEI_FMT_TEXT);
        double t2 = now_ns();
        for (int i = 0; i < inner; i++)
            hodei_seg_publish(&w, payload, len);
        double t3 = now_ns();
        for (int i = 0; i < inner; i++)
            hodei_seg_load(&r, path, &snap, NULL, &why);
        double t4 = now_ns();
        for (int i = 0; i < inner; i++)
            render(&snap, HODEI_FMT_PROTOBUF);
        double t5 = now_ns();
        t_pb[rep] = (t5 - t4) / inner;
        t_memcpy[rep] = (t1 - t0) / inner;
        t_render[rep] = (t2 - t1) / inner;
        t_publish[rep] = (t3 - t2) / inner;
        t_read[rep] = (t4 - t3) / inner;
    }
    double mc = median(t_memcpy, REPS), rd = median(t_render, REPS);
    double pub = median(t_publish, REPS), rv = median(t_read, REPS), pb = median(t_pb, REPS);
    printf("%7zu samples | render %8.1f us %6.1f ns/sample %6.0f MB/s | memcpy %6.1f us | "
           "render/memcpy %5.1fx | publish %7.1f us | read+validate %7.1f us | segment %6.2f MiB\n",
           samples, rd / 1e3, rd / samples, text_len / rd * 1e3, mc / 1e3, rd / mc, pub / 1e3,
           rv / 1e3, w.size / 1048576.0);
    printf("%7s         | protobuf %6.1f us %6.1f ns/sample %6.0f MB/s | %7zu bytes (text %zu) | "
           "protobuf/text %4.2fx\n", "", pb / 1e3, pb / samples, pb_len / pb * 1e3, pb_len,
           text_len, pb / rd);
    hodei_seg_reader_free(&r);
    hodei_seg_close(&w);
    unlink(path);
    free(payload);
    free(out_buf);
    free(copy);
}

int main(void)
{
    printf("shm: text 0.0.4 and protobuf rendering, %d interleaved repetitions, medians "
           "(goal: <= 50 ns/sample, within ~5x of memcpy)\n", REPS);
    run(200);
    run(5000);
    run(25000);
    /* what a segment sized for its caps rather than its contents would take (the daemon's
     * four slots, default caps): make bench-segment shows what it takes instead */
    uint32_t caps[HODEI_F_COUNT];
    hodei_default_caps(caps);
    size_t slot = HODEI_SEG_SLOT_HDR + hodei_payload_bound(caps);
    printf("a segment sized for the default caps (1,000 tenants, 10,000 workers): "
           "4 slots of %zu B = %zu B\n", slot, HODEI_SEG_HDR_SIZE + 4 * slot);
    return 0;
}
