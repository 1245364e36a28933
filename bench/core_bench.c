/*
 * core_bench.c — the scheduler in-process, without HTTP:
 *   placement: decisions per second and p50/p99 decision latency with 1,000 and 10,000
 *              heterogeneous workers and 100,000 queued jobs (100 tenants, 4 priorities);
 *   publish:   time to build and publish a full snapshot at 10,000 workers, 1,000 tenants.
 * Every decision is timed from the previous one (the event hook fires once per placement).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "hodei_segment.h"
#include "hodei_snapshot.h"
#include "metrics.h"
#include "scheduler.h"

#define JOBS 100000

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

struct timing {
    double last;
    double *lat;
    size_t n;
};

static void on_event(void *ctx, enum hodei_event_type type, const struct job *j,
                     const struct worker *w)
{
    struct timing *t = ctx;
    if (type != HODEI_EV_JOB_ASSIGNED && type != HODEI_EV_JOB_REJECTED)
        return;
    double now = now_s();
    t->lat[t->n++] = now - t->last;
    t->last = now;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y;
}

static uint32_t rnd(uint64_t *s, uint32_t lo, uint32_t hi)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return lo + (uint32_t) (*s % (hi - lo + 1));
}

static void populate_workers(struct sched *s, unsigned workers, uint64_t *seed)
{
    for (unsigned i = 0; i < workers; i++) {
        struct worker_spec ws = { .cpu_m = rnd(seed, 4, 64) * 1000,
                                  .memory_mb = rnd(seed, 8, 256) * 1024 };
        snprintf(ws.id, sizeof ws.id, "worker-%05u", i);
        if (sched_register(s, &ws, 0, NULL) != SCHED_OK)
            abort();
    }
}

static void placement(unsigned workers)
{
    struct sched_config cfg = { .max_tenants = 1000, .max_workers = workers, .max_jobs = JOBS,
                                .job_retention = 1000, .heartbeat_timeout = 1e9,
                                .worker_timeout = 2e9 };
    struct timing t = { .lat = malloc(JOBS * sizeof(double)) };
    struct sched s;
    if (sched_init(&s, &cfg, 0, 1.7e9, on_event, &t) < 0)
        abort();
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    populate_workers(&s, workers, &seed);
    for (unsigned i = 0; i < JOBS; i++) {
        struct job_spec js = { .cpu_m = rnd(&seed, 50, 500), .memory_mb = rnd(&seed, 64, 1024),
                               .priority = (int) rnd(&seed, 0, 3) - 1, .command = "true",
                               .name = "bench" };
        snprintf(js.tenant_id, sizeof js.tenant_id, "tenant-%u", rnd(&seed, 0, 99));
        if (sched_submit(&s, &js, 0, NULL) != SCHED_OK)
            abort();
    }
    sched_commit(&s, 1);                   /* the workers and jobs, as a restart would find them */
    rcu_read_lock();
    double start = now_s();
    t.last = start;
    unsigned decisions = sched_round(&s, 1);
    double decided = now_s();
    sched_commit(&s, 1);                   /* the round's change set shown to readers */
    double elapsed = now_s() - start;
    rcu_read_unlock();
    qsort(t.lat, t.n, sizeof(double), cmp_double);
    printf("placement  %5u workers, %u queued: %u decisions (%llu assigned) in %.3f s = %.0f "
           "decisions/s (commit in memory %.1f%% of it); latency p50 %.2f us, p99 %.2f us, "
           "max %.2f us\n",
           workers, JOBS, decisions,
           (unsigned long long) s.m.decisions[HODEI_DECISION_ASSIGNED], elapsed,
           decisions / elapsed, 100 * (elapsed - (decided - start)) / elapsed,
           t.lat[t.n / 2] * 1e6, t.lat[t.n * 99 / 100] * 1e6, t.lat[t.n - 1] * 1e6);
    sched_destroy(&s);
    free(t.lat);
}

static void publish(unsigned workers, unsigned tenants)
{
    struct sched_config cfg = { .max_tenants = tenants, .max_workers = workers,
                                .max_jobs = JOBS, .job_retention = 0,
                                .heartbeat_timeout = 1e9, .worker_timeout = 2e9 };
    struct sched s;
    if (sched_init(&s, &cfg, 0, 1.7e9, NULL, NULL) < 0)
        abort();
    uint64_t seed = 42;
    populate_workers(&s, workers, &seed);
    for (unsigned i = 0; i < tenants; i++) {   /* every tenant series in use */
        struct job_spec js = { .cpu_m = 1, .memory_mb = 1, .command = "true" };
        snprintf(js.tenant_id, sizeof js.tenant_id, "tenant-%04u", i);
        struct job *j;
        sched_submit(&s, &js, 0, &j);
        sched_cancel(&s, j->id, 0, NULL);
    }
    sched_commit(&s, 1);
    char path[] = "/tmp/hodei-core-bench-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    uint32_t caps[HODEI_F_COUNT];
    metrics_caps(caps, tenants, workers);
    size_t cap = hodei_payload_bound(caps);
    void *buf = aligned_alloc(64, (cap + 63) & ~(size_t) 63);
    struct hodei_seg_writer w;
    char err[256];
    if (hodei_seg_create(&w, path, 4, cap, err, sizeof err) < 0) {
        fprintf(stderr, "segment: %s\n", err);
        exit(1);
    }
    static struct metrics_copies copies;
    metrics_copies_init(&copies);
    enum { WARMUP = 8, ROUNDS = 200 };   /* warm-up: first touch of every slot's pages */
    double times[ROUNDS];
    size_t len = 0;
    for (int r = -WARMUP; r < ROUNDS; r++) {
        double t0 = now_s();
        len = metrics_build(&s, 1, "bench", &copies, buf, cap, 1.7e9);
        if (!len || hodei_seg_publish(&w, buf, len) < 0)
            abort();
        if (r >= 0)
            times[r] = now_s() - t0;
    }
    qsort(times, ROUNDS, sizeof(double), cmp_double);
    printf("publish    %5u workers, %u tenants: snapshot %zu bytes, build+publish p50 %.3f ms, "
           "p99 %.3f ms (goal <= 5 ms)\n", workers, tenants, len, times[ROUNDS / 2] * 1e3,
           times[ROUNDS * 99 / 100] * 1e3);
    hodei_seg_close(&w);
    unlink(path);
    free(buf);
    sched_destroy(&s);
}

int main(void)
{
    rcu_register_thread();
    placement(1000);
    placement(10000);
    publish(10000, 1000);
    return 0;
}
