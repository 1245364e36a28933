/*
 * store_bench.c — the durable store (core/store.h) on its own:
 *   submissions: N threads each submit a batch like one job submission (the job, its first
 *                transition, the tenant's submitted counter, the id high-water mark) and wait
 *                for its completion; durable submissions/s, jobs per commit, commit duration
 *                and submit→completion latency p50/p99.  Baselines from the same run: the same
 *                store on tmpfs (/dev/shm: the fsync costs nothing) and the disk's own rate of
 *                4 KiB write + fdatasync, one at a time.
 *   restart:     open (schema and quick_check included) and load of 100,000 unfinished jobs;
 *                baseline: reading the database file once with read(2).
 * Runs are interleaved (disk, tmpfs, disk, ...) and medians reported: the VM is shared.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store.h"

#define RUN_SECONDS    1.5
#define REPS           3
#define LOAD_JOBS      100000
#define MAX_SAMPLES    (1u << 21)

static char disk_root[4096], shm_root[4096];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void cleanup(void)
{
    if (disk_root[0])
        nftw(disk_root, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    if (shm_root[0])
        nftw(shm_root, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void on_signal(int sig)
{
    exit(128 + sig);                 /* runs cleanup() */
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "store_bench: %s: %s\n", what, why);
    exit(1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    return v[(size_t) ((double) (n - 1) * p)];
}

static double median(double *v, int n)
{
    qsort(v, (size_t) n, sizeof *v, cmp_double);
    return v[n / 2];
}

/* A fresh, empty state directory under root. */
static void fresh_dir(const char *root, const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", root, name);
    nftw(out, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* ---- baseline: the disk's fsync rate ------------------------------------------------- */

static double fsync_rate(const char *root)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/fsync-probe", root);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        die(path, strerror(errno));
    static char block[4096];
    unsigned n = 0;
    double t0 = now_s(), t;
    do {
        if (pwrite(fd, block, sizeof block, (off_t) (n % 64) * 4096) != sizeof block ||
            fdatasync(fd) < 0)
            die(path, strerror(errno));
        n++;
    } while ((t = now_s() - t0) < RUN_SECONDS / 2);
    close(fd);
    unlink(path);
    return n / t;
}

/* ---- submissions --------------------------------------------------------------------- */

struct run {
    struct store *st;
    volatile int stop;
    uint64_t next_id;                /* atomic */
    uint64_t done;                   /* atomic */
    double *lat;                     /* submit → completion, seconds */
    size_t nlat;                     /* atomic */
    double *commit_s;                /* committer thread only */
    size_t ncommits;
    uint64_t commit_jobs;
};

struct submitter {
    struct run *r;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    enum store_status status;
};

static void on_commit(void *ctx, const struct store_commit *c)
{
    struct run *r = ctx;
    if (r->ncommits < MAX_SAMPLES)
        r->commit_s[r->ncommits++] = c->seconds;
    r->commit_jobs += c->jobs;
}

static void on_done(void *ctx, enum store_status status, const char *why)
{
    struct submitter *s = ctx;
    pthread_mutex_lock(&s->lock);
    s->done = 1;
    s->status = status;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* One job submission's batch: what the daemon writes for POST /api/v1/jobs. */
static struct store_batch *submission(uint64_t id)
{
    char tenant[32], key[96];
    snprintf(tenant, sizeof tenant, "tenant-%02u", (unsigned) (id % 50));
    snprintf(key, sizeof key, "hodei_jobs_submitted_total{tenant_id=\"%s\"}", tenant);
    struct store_job j = {
        .id = id, .tenant_id = tenant, .name = "nightly-report", .command = "sleep 1",
        .cpu_m = 250, .memory_mb = 128, .timeout_s = 600, .max_retries = 2,
        .submitted_at = 1.7e9 + (double) id * 1e-4, .state = "queued",
    };
    struct store_transition t = { .job_id = id, .at = j.submitted_at, .to_state = "queued" };
    struct store_batch *b = store_batch_new();
    if (b == NULL || store_batch_put_job(b, &j) < 0 || store_batch_add_transition(b, &t) < 0 ||
        store_batch_set_counter(b, key, id / 50 + 1) < 0 ||
        store_batch_set_meta(b, "next_job_id", (int64_t) id + 1) < 0)
        die("batch", strerror(errno));
    return b;
}

static void *submitter_main(void *arg)
{
    struct submitter *s = arg;
    struct run *r = s->r;
    while (!r->stop) {
        uint64_t id = __atomic_add_fetch(&r->next_id, 1, __ATOMIC_RELAXED);
        struct store_batch *b = submission(id);
        s->done = 0;
        double t0 = now_s();
        if (store_submit(r->st, b, on_done, s) != 0)
            die("store_submit", strerror(errno));
        pthread_mutex_lock(&s->lock);
        while (!s->done)
            pthread_cond_wait(&s->cond, &s->lock);
        pthread_mutex_unlock(&s->lock);
        if (s->status != STORE_OK)
            die("commit", "failed");
        size_t i = __atomic_fetch_add(&r->nlat, 1, __ATOMIC_RELAXED);
        if (i < MAX_SAMPLES)
            r->lat[i] = now_s() - t0;
        __atomic_add_fetch(&r->done, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

struct result {
    double per_s, jobs_per_commit, commit_p50, commit_p99, lat_p50, lat_p99;
};

static struct result submissions(const char *root, unsigned nthreads)
{
    char dir[4200];
    fresh_dir(root, "submit", dir, sizeof dir);
    static struct run r;
    static double *lat, *commit_s;
    if (lat == NULL) {
        lat = malloc(MAX_SAMPLES * sizeof *lat);
        commit_s = malloc(MAX_SAMPLES * sizeof *commit_s);
        if (lat == NULL || commit_s == NULL)
            die("malloc", strerror(errno));
    }
    r = (struct run) { .lat = lat, .commit_s = commit_s };
    struct store_options opts = { .on_commit = on_commit, .commit_ctx = &r };
    char err[512];
    if ((r.st = store_open(dir, &opts, err, sizeof err)) == NULL)
        die("store_open", err);
    struct submitter *s = calloc(nthreads, sizeof *s);
    pthread_t *th = calloc(nthreads, sizeof *th);
    double t0 = now_s();
    for (unsigned i = 0; i < nthreads; i++) {
        s[i].r = &r;
        pthread_mutex_init(&s[i].lock, NULL);
        pthread_cond_init(&s[i].cond, NULL);
        pthread_create(&th[i], NULL, submitter_main, &s[i]);
    }
    struct timespec nap = { (time_t) RUN_SECONDS,
                            (long) ((RUN_SECONDS - (double) (time_t) RUN_SECONDS) * 1e9) };
    while (nanosleep(&nap, &nap) != 0 && errno == EINTR)
        ;
    r.stop = 1;
    for (unsigned i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    double elapsed = now_s() - t0;
    store_close(r.st);          /* after the join: every completion has run */
    size_t nlat = r.nlat < MAX_SAMPLES ? r.nlat : MAX_SAMPLES;
    struct result res = {
        .per_s = (double) r.done / elapsed,
        .jobs_per_commit = r.ncommits ? (double) r.commit_jobs / (double) r.ncommits : 0,
        .commit_p50 = pct(r.commit_s, r.ncommits, 0.50),
        .commit_p99 = pct(r.commit_s, r.ncommits, 0.99),
        .lat_p50 = pct(r.lat, nlat, 0.50),
        .lat_p99 = pct(r.lat, nlat, 0.99),
    };
    free(s);
    free(th);
    fresh_dir(root, "submit", dir, sizeof dir);
    return res;
}

/* ---- restart ------------------------------------------------------------------------- */

static void on_fill_done(void *ctx, enum store_status status, const char *why)
{
    if (status != STORE_OK)
        die("fill", why);
    __atomic_add_fetch((int *) ctx, 1, __ATOMIC_RELAXED);
}

/* 100,000 unfinished jobs (queued, assigned, running) with one transition each, 1,000
 * retained finished jobs, 50 tenants' counters and the high-water mark. */
static void fill(const char *dir)
{
    char err[512];
    struct store *st = store_open(dir, NULL, err, sizeof err);
    if (st == NULL)
        die("store_open", err);
    int done = 0, submitted = 0;
    static const char *const states[] = { "queued", "queued", "queued", "assigned", "running" };
    char tenant[32], cmd[128], key[96];
    for (uint64_t base = 1; base <= LOAD_JOBS + 1000; base += 10000) {
        struct store_batch *b = store_batch_new();
        for (uint64_t id = base; id < base + 10000 && id <= LOAD_JOBS + 1000; id++) {
            int finished = id > LOAD_JOBS;
            snprintf(tenant, sizeof tenant, "tenant-%02u", (unsigned) (id % 50));
            snprintf(cmd, sizeof cmd, "/usr/local/bin/report --day %u --out /srv/r/%u.csv",
                     (unsigned) (id % 365), (unsigned) id);
            struct store_job j = {
                .id = id, .tenant_id = tenant, .name = "nightly-report", .command = cmd,
                .cpu_m = 250, .memory_mb = 128, .timeout_s = 600, .max_retries = 2,
                .submitted_at = 1.7e9 + (double) id, .state = finished ? "succeeded"
                                                                       : states[id % 5],
                .finished = finished, .has_exit_code = finished, .attempts = id % 5 >= 3,
                .worker_id = id % 5 >= 3 || finished ? "worker-007" : NULL,
                .assigned_at = id % 5 >= 3 ? 1.7e9 + (double) id + 1 : 0,
                .started_at = id % 5 == 4 ? 1.7e9 + (double) id + 2 : 0,
                .finished_at = finished ? 1.7e9 + (double) id + 3 : 0,
            };
            struct store_transition t = { .job_id = id, .at = j.submitted_at,
                                          .to_state = "queued" };
            if (store_batch_put_job(b, &j) < 0 || store_batch_add_transition(b, &t) < 0)
                die("batch", strerror(errno));
        }
        for (unsigned k = 0; base == 1 && k < 50; k++) {
            snprintf(key, sizeof key, "hodei_jobs_submitted_total{tenant_id=\"tenant-%02u\"}", k);
            store_batch_set_counter(b, key, LOAD_JOBS / 50);
        }
        store_batch_set_meta(b, "next_job_id", LOAD_JOBS + 1001);
        if (store_submit(st, b, on_fill_done, &done) != 0)
            die("store_submit", strerror(errno));
        submitted++;
    }
    store_close(st);
    if (done != submitted)
        die("fill", "not every batch completed");
}

struct restored {
    unsigned unfinished, finished, counters, meta;
    uint64_t last_id;
    size_t bytes;                    /* what a restore would copy: the strings */
};

static int count_job(void *ctx, const struct store_job *j)
{
    struct restored *r = ctx;
    if (j->finished) {
        r->finished++;
    } else {
        if (j->id <= r->last_id)
            die("load", "unfinished jobs out of id order");
        r->last_id = j->id;
        r->unfinished++;
    }
    r->bytes += strlen(j->tenant_id) + strlen(j->name) + strlen(j->command) + strlen(j->state);
    return 0;
}

static int count_counter(void *ctx, const char *key, uint64_t v)
{
    ((struct restored *) ctx)->counters++;
    return 0;
}

static int count_meta(void *ctx, const char *key, int64_t v)
{
    ((struct restored *) ctx)->meta++;
    return 0;
}

static double read_file_s(const char *path, off_t *size)
{
    static char buf[1 << 20];
    double t0 = now_s();
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die(path, strerror(errno));
    ssize_t n;
    *size = 0;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        *size += n;
    close(fd);
    return now_s() - t0;
}

static double pragma_s(const char *path, const char *pragma)
{
    sqlite3 *db;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        die(path, sqlite3_errmsg(db));
    double t0 = now_s();
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, pragma, -1, &s, NULL) != SQLITE_OK ||
        sqlite3_step(s) != SQLITE_ROW ||
        strcmp((const char *) sqlite3_column_text(s, 0), "ok") != 0)
        die(pragma, sqlite3_errmsg(db));
    sqlite3_finalize(s);
    double t = now_s() - t0;
    sqlite3_close(db);
    return t;
}

static void restart(const char *root)
{
    char dir[4200], path[4300];
    fresh_dir(root, "restart", dir, sizeof dir);
    double t0 = now_s();
    fill(dir);
    double fill_s = now_s() - t0;
    snprintf(path, sizeof path, "%s/hodei.db", dir);
    double open_s[REPS], load_s[REPS], read_s[REPS], quick_s[REPS], integrity_s[REPS];
    off_t size = 0;
    struct restored r;
    for (int i = 0; i < REPS; i++) {
        read_s[i] = read_file_s(path, &size);
        quick_s[i] = pragma_s(path, "PRAGMA quick_check");
        integrity_s[i] = pragma_s(path, "PRAGMA integrity_check");
        char err[512];
        t0 = now_s();
        struct store *st = store_open(dir, NULL, err, sizeof err);
        if (st == NULL)
            die("store_open", err);
        open_s[i] = now_s() - t0;
        r = (struct restored) { 0 };
        struct store_load_cb cb = { count_meta, count_counter, count_job, &r };
        t0 = now_s();
        if (store_load(st, &cb, err, sizeof err) != 0)
            die("store_load", err);
        load_s[i] = now_s() - t0;
        store_close(st);
        if (r.unfinished != LOAD_JOBS || r.finished != 1000 || r.counters != 50 || r.meta != 1)
            die("load", "wrong counts");
    }
    double o = median(open_s, REPS), l = median(load_s, REPS), rd = median(read_s, REPS);
    printf("restart    %u unfinished + 1000 finished jobs, %.1f MiB file (filled in %.2f s):\n"
           "           open %.0f ms (quick_check %.0f ms of it; integrity_check would take %.0f ms)"
           " + load %.0f ms = %.0f ms; goal 1000 ms: %.2fx of it\n"
           "           baseline read(2) of the file: %.0f ms; open+load / read = %.1fx\n",
           LOAD_JOBS, (double) size / (1 << 20), fill_s, o * 1e3, median(quick_s, REPS) * 1e3,
           median(integrity_s, REPS) * 1e3, l * 1e3, (o + l) * 1e3, (o + l) / 1.0, rd * 1e3,
           (o + l) / rd);
    fresh_dir(root, "restart", dir, sizeof dir);
}

int main(int argc, char **argv)
{
    const char *build = argc > 1 ? argv[1] : "build";
    snprintf(disk_root, sizeof disk_root, "%s/store-bench.XXXXXX", build);
    snprintf(shm_root, sizeof shm_root, "/dev/shm/hodei-store-bench.XXXXXX");
    if (mkdtemp(disk_root) == NULL || mkdtemp(shm_root) == NULL)
        die("mkdtemp", strerror(errno));
    atexit(cleanup);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    double fs[REPS];
    for (int i = 0; i < REPS; i++)
        fs[i] = fsync_rate(disk_root);
    double fsyncs = median(fs, REPS);
    printf("baseline   disk: %.0f fdatasync/s (4 KiB write + fdatasync, one at a time)\n", fsyncs);
    printf("submitters | durable/s | tmpfs/s | durable/tmpfs | durable/fsync rate | jobs/commit |"
           " commit p50 / p99 ms | submit→done p50 / p99 ms\n");
    static const unsigned threads[] = { 1, 4, 16, 64, 256 };
    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
        struct result d[REPS], m[REPS];
        for (int i = 0; i < REPS; i++) {
            d[i] = submissions(disk_root, threads[t]);
            m[i] = submissions(shm_root, threads[t]);
        }
        double dps[REPS], mps[REPS];
        for (int i = 0; i < REPS; i++) {
            dps[i] = d[i].per_s;
            mps[i] = m[i].per_s;
        }
        /* the figures of the run with the median rate */
        double dmed = median(dps, REPS), mmed = median(mps, REPS);
        struct result dr = d[0];
        for (int i = 0; i < REPS; i++)
            if (d[i].per_s == dmed)
                dr = d[i];
        printf("%10u | %9.0f | %7.0f | %12.2fx | %17.1fx | %11.1f | %8.2f / %6.2f |"
               " %10.2f / %6.2f\n", threads[t], dmed, mmed, dmed / mmed, dmed / fsyncs,
               dr.jobs_per_commit, dr.commit_p50 * 1e3, dr.commit_p99 * 1e3, dr.lat_p50 * 1e3,
               dr.lat_p99 * 1e3);
    }
    restart(disk_root);
    return 0;
}
