/* core_store_test.c — the durable store: every field round-trips; group commit merges the
 * batches that wait (forced with the stage hook) and completes them in order; a full disk
 * (a tmpfs in a private mount namespace) fails whole transactions and recovers; damaged,
 * foreign and newer databases are refused with the path and the reason; a process killed at
 * a forced point loses nothing whose completion ran, and keeps nothing half-written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store.h"

#define DEADLINE_S 60         /* generous: the suite runs with both cores busy */
#define MAX_TICKETS 256

/* ---- helpers: directories, completions, the stage gate ------------------------------ */

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void shim_reset(void);

/* Every test gets a fresh directory; teardown removes it (and whatever a failed test left:
 * a tmpfs mounted on it, the VFS shim installed) even when the test failed. */
static int setup_dir(void **state)
{
    const char *tmp = getenv("TMPDIR");
    char *dir;
    if (asprintf(&dir, "%s/hodei-store-test.XXXXXX", tmp ? tmp : "/tmp") < 0)
        return -1;
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "mkdtemp %s: %s\n", dir, strerror(errno));
        free(dir);
        return -1;
    }
    *state = dir;
    return 0;
}

static int teardown_dir(void **state)
{
    char *dir = *state;
    shim_reset();
    if (umount2(dir, MNT_DETACH) < 0 && errno != EINVAL)
        fprintf(stderr, "umount %s: %s\n", dir, strerror(errno));
    nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(dir);
    return 0;
}

static struct timespec deadline_in(int seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += seconds;
    return ts;
}

/* Completions land here, in the order the committer ran them. */
struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned done;
    int order[MAX_TICKETS];
    enum store_status status[MAX_TICKETS];
    char why[MAX_TICKETS][96];
};

struct ticket {
    struct waiter *w;
    int n;
};

static void waiter_init(struct waiter *w)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
}

static void on_done(void *ctx, enum store_status status, const char *why)
{
    struct ticket *t = ctx;
    struct waiter *w = t->w;
    pthread_mutex_lock(&w->lock);
    w->order[w->done] = t->n;
    w->status[t->n] = status;
    snprintf(w->why[t->n], sizeof w->why[t->n], "%s", why ? why : "");
    w->done++;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static void wait_done(struct waiter *w, unsigned n)
{
    struct timespec dl = deadline_in(DEADLINE_S);
    pthread_mutex_lock(&w->lock);
    while (w->done < n && pthread_cond_timedwait(&w->cond, &w->lock, &dl) != ETIMEDOUT)
        ;
    unsigned done = w->done;
    pthread_mutex_unlock(&w->lock);
    if (done < n)
        fail_msg("only %u of %u completions ran within %d s", done, n, DEADLINE_S);
}

/* Holds the committer at its next STORE_STAGE_TAKEN until opened. */
struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int armed, holding, open, timed_out;
};

static void gate_init(struct gate *g)
{
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
}

static void gate_hook(void *ctx, enum store_stage stage, unsigned batches)
{
    struct gate *g = ctx;
    if (stage != STORE_STAGE_TAKEN)
        return;
    pthread_mutex_lock(&g->lock);
    if (g->armed) {
        g->armed = 0;
        g->holding = 1;
        pthread_cond_broadcast(&g->cond);
        struct timespec dl = deadline_in(DEADLINE_S);
        while (!g->open && !g->timed_out)
            g->timed_out = pthread_cond_timedwait(&g->cond, &g->lock, &dl) == ETIMEDOUT;
        g->holding = 0;
    }
    pthread_mutex_unlock(&g->lock);
}

static void gate_wait_holding(struct gate *g)
{
    struct timespec dl = deadline_in(DEADLINE_S);
    pthread_mutex_lock(&g->lock);
    while (!g->holding && pthread_cond_timedwait(&g->cond, &g->lock, &dl) != ETIMEDOUT)
        ;
    int holding = g->holding;
    pthread_mutex_unlock(&g->lock);
    if (!holding)
        fail_msg("the committer never reached its hook within %d s", DEADLINE_S);
}

static void gate_open(struct gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->open = 1;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

/* What on_commit reported, transaction by transaction. */
struct commits {
    pthread_mutex_t lock;
    unsigned n;
    struct store_commit c[MAX_TICKETS];
};

static void on_commit(void *ctx, const struct store_commit *c)
{
    struct commits *cs = ctx;
    pthread_mutex_lock(&cs->lock);
    if (cs->n < MAX_TICKETS)
        cs->c[cs->n++] = *c;
    pthread_mutex_unlock(&cs->lock);
}

static struct store *open_ok(const char *dir, const struct store_options *opts)
{
    char err[512] = "";
    struct store *st = store_open(dir, opts, err, sizeof err);
    if (st == NULL)
        fail_msg("store_open(%s): %s", dir, err);
    return st;
}

/* A store whose committer can be held at the gate, reporting every transaction to cs. */
struct gated {
    struct gate g;
    struct commits cs;
    struct store *st;
};

static void gated_open(struct gated *h, const char *dir, size_t max_pending_bytes)
{
    gate_init(&h->g);
    h->cs = (struct commits) { .lock = PTHREAD_MUTEX_INITIALIZER };
    struct store_options opts = { .max_pending_bytes = max_pending_bytes,
                                  .on_commit = on_commit, .commit_ctx = &h->cs,
                                  .stage_hook = gate_hook, .stage_ctx = &h->g };
    h->st = open_ok(dir, &opts);
}

/* Submits b and fails the test if the store refuses it. */
static void submit(struct store *st, struct store_batch *b, struct ticket *t)
{
    if (store_submit(st, b, on_done, t) != 0)
        fail_msg("store_submit: %s", strerror(errno));
}

/* ---- loading into plain copies ------------------------------------------------------ */

struct copy_job {
    struct store_job j;
    char *strs[6];
};

struct loaded {
    char seq[1024];                      /* 'M' meta, 'C' counter, 'B' blob, 'J' job, in order */
    unsigned nseq, njobs;
    struct copy_job *jobs;
    unsigned cap;
    struct kvs { char *key[64]; int64_t value[64]; unsigned n; } meta, counters;
    struct blobs { char *key[8]; unsigned char *data[8]; size_t len[8]; unsigned n; } blobs;
    int stop_after_jobs;                 /* >0: return 7 from that job */
};

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void note(struct loaded *l, char what)
{
    if (l->nseq < sizeof l->seq - 1)
        l->seq[l->nseq++] = what;
}

static int kv_note(struct loaded *l, struct kvs *kv, char what, const char *key, int64_t value)
{
    note(l, what);
    if (kv->n < 64) {
        kv->key[kv->n] = strdup(key);
        kv->value[kv->n++] = value;
    }
    return 0;
}

static int load_meta(void *ctx, const char *key, int64_t value)
{
    struct loaded *l = ctx;
    return kv_note(l, &l->meta, 'M', key, value);
}

static int load_counter(void *ctx, const char *key, uint64_t value)
{
    struct loaded *l = ctx;
    return kv_note(l, &l->counters, 'C', key, (int64_t) value);
}

static int load_blob(void *ctx, const char *key, const void *data, size_t len)
{
    struct loaded *l = ctx;
    note(l, 'B');
    if (l->blobs.n < 8) {
        l->blobs.key[l->blobs.n] = strdup(key);
        l->blobs.data[l->blobs.n] = malloc(len + 1);
        memcpy(l->blobs.data[l->blobs.n], data, len);
        l->blobs.len[l->blobs.n++] = len;
    }
    return 0;
}

static int load_job(void *ctx, const struct store_job *j)
{
    struct loaded *l = ctx;
    note(l, 'J');
    if (l->njobs == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->jobs = realloc(l->jobs, l->cap * sizeof *l->jobs);
    }
    struct copy_job *c = &l->jobs[l->njobs++];
    c->j = *j;
    c->strs[0] = (char *) (c->j.tenant_id = dup_or_null(j->tenant_id));
    c->strs[1] = (char *) (c->j.name = dup_or_null(j->name));
    c->strs[2] = (char *) (c->j.command = dup_or_null(j->command));
    c->strs[3] = (char *) (c->j.state = dup_or_null(j->state));
    c->strs[4] = (char *) (c->j.error_type = dup_or_null(j->error_type));
    c->strs[5] = (char *) (c->j.worker_id = dup_or_null(j->worker_id));
    if (j->output_len > 0) {
        void *out = malloc(j->output_len);
        memcpy(out, j->output, j->output_len);
        c->j.output = out;
    }
    if (l->stop_after_jobs > 0 && l->njobs == (unsigned) l->stop_after_jobs)
        return 7;
    return 0;
}

static void loaded_free(struct loaded *l)
{
    for (unsigned i = 0; i < l->njobs; i++) {
        for (int k = 0; k < 6; k++)
            free(l->jobs[i].strs[k]);
        free((void *) l->jobs[i].j.output);
    }
    free(l->jobs);
    for (unsigned i = 0; i < l->counters.n; i++)
        free(l->counters.key[i]);
    for (unsigned i = 0; i < l->meta.n; i++)
        free(l->meta.key[i]);
    for (unsigned i = 0; i < l->blobs.n; i++) {
        free(l->blobs.key[i]);
        free(l->blobs.data[i]);
    }
    memset(l, 0, sizeof *l);
}

static void load_all(struct store *st, struct loaded *l)
{
    struct store_load_cb cb = { .meta = load_meta, .counter = load_counter, .blob = load_blob,
                                .job = load_job, .ctx = l };
    char err[512] = "";
    int rc = store_load(st, &cb, err, sizeof err);
    if (rc != 0)
        fail_msg("store_load: %d %s", rc, err);
}

static const struct copy_job *find_job(const struct loaded *l, uint64_t id)
{
    for (unsigned i = 0; i < l->njobs; i++)
        if (l->jobs[i].j.id == id)
            return &l->jobs[i];
    return NULL;
}

static int64_t find_kv(const struct kvs *kv, const char *key, int64_t missing)
{
    for (unsigned i = 0; i < kv->n; i++)
        if (strcmp(kv->key[i], key) == 0)
            return kv->value[i];
    return missing;
}

static int64_t find_meta(const struct loaded *l, const char *key, int64_t missing)
{
    return find_kv(&l->meta, key, missing);
}

static uint64_t find_counter(const struct loaded *l, const char *key, uint64_t missing)
{
    return (uint64_t) find_kv(&l->counters, key, (int64_t) missing);
}

static void assert_opt_string(const char *field, const char *want, const char *got)
{
    if (want == NULL && got == NULL)
        return;
    if (want == NULL || got == NULL || strcmp(want, got) != 0)
        fail_msg("%s: want %s%s%s, got %s%s%s", field, want ? "\"" : "", want ? want : "NULL",
                 want ? "\"" : "", got ? "\"" : "", got ? got : "NULL", got ? "\"" : "");
}

static void assert_job_equal(const struct store_job *want, const struct store_job *got)
{
    assert_int_equal(want->id, got->id);
    assert_opt_string("tenant_id", want->tenant_id, got->tenant_id);
    assert_opt_string("name", want->name, got->name);
    assert_opt_string("command", want->command, got->command);
    assert_int_equal(want->cpu_m, got->cpu_m);
    assert_int_equal(want->memory_mb, got->memory_mb);
    assert_int_equal(want->priority, got->priority);
    assert_int_equal(want->timeout_s, got->timeout_s);
    assert_int_equal(want->max_retries, got->max_retries);
    assert_true(want->submitted_at == got->submitted_at);
    assert_opt_string("state", want->state, got->state);
    assert_int_equal(want->finished, got->finished);
    assert_opt_string("error_type", want->error_type, got->error_type);
    assert_int_equal(want->has_exit_code, got->has_exit_code);
    if (want->has_exit_code)
        assert_int_equal(want->exit_code, got->exit_code);
    assert_int_equal(want->attempts, got->attempts);
    assert_opt_string("worker_id", want->worker_id, got->worker_id);
    assert_true(want->assigned_at == got->assigned_at);
    assert_true(want->started_at == got->started_at);
    assert_true(want->finished_at == got->finished_at);
    assert_int_equal(want->output_bytes, got->output_bytes);
    assert_int_equal(want->output_len, got->output_len);
    if (want->output_len > 0)
        assert_memory_equal(want->output, got->output, want->output_len);
    else
        assert_null(got->output);
}

/* A job whose every field follows from its id: what the crash test checks against. */
static struct store_job derived_job(uint64_t id, char *tenant, size_t tlen)
{
    snprintf(tenant, tlen, "tenant-%" PRIu64, id % 7);
    return (struct store_job) {
        .id = id, .tenant_id = tenant, .name = "derived", .command = "sleep 1",
        .cpu_m = (uint32_t) (id * 10), .memory_mb = (uint32_t) id, .priority = (int32_t) (id % 5),
        .timeout_s = 30, .max_retries = 1, .submitted_at = 1.7e9 + (double) id / 8,
        .state = "queued", .attempts = 0, .output_bytes = -1,
    };
}

/* ---- round trip --------------------------------------------------------------------- */

static void test_round_trip(void **state)
{
    const char *dir = *state;
    struct store *st = open_ok(dir, NULL);
    unsigned char blob[300];
    for (size_t i = 0; i < sizeof blob; i++)
        blob[i] = (unsigned char) (i * 37);          /* NULs and high bytes included */
    blob[5] = 0;
    const double t = 1733112000.125;
    struct store_job want[] = {
        { .id = 1, .tenant_id = "acme", .name = "", .command = "echo 'h\xc3\xa9llo' \"$X\"; exit 3",
          .cpu_m = 0, .memory_mb = 0, .priority = -100, .timeout_s = 0, .max_retries = 0,
          .submitted_at = t, .state = "queued", .output_bytes = -1 },
        { .id = 2, .tenant_id = "acme", .name = "build-42", .command = "make -j2",
          .cpu_m = UINT32_MAX, .memory_mb = UINT32_MAX, .priority = 100,
          .timeout_s = UINT32_MAX, .max_retries = 7, .submitted_at = t + 1, .state = "running",
          .attempts = 2, .worker_id = "w-1", .assigned_at = t + 2, .started_at = t + 2.5,
          .output_bytes = 12 },
        { .id = INT64_MAX, .tenant_id = "t:x.y-z_0", .name = "last", .command = "true",
          .cpu_m = 500, .memory_mb = 64, .submitted_at = t + 3, .state = "assigned",
          .attempts = 1, .worker_id = "w-2", .assigned_at = t + 3.5, .output_bytes = -1 },
        { .id = 3, .tenant_id = "beta", .name = "fails", .command = "false", .cpu_m = 100,
          .memory_mb = 128, .priority = 5, .timeout_s = 60, .max_retries = 1,
          .submitted_at = t + 4, .state = "failed", .finished = true, .error_type = "exit_code",
          .has_exit_code = true, .exit_code = -1, .attempts = 2, .worker_id = "w-1",
          .assigned_at = t + 5, .started_at = t + 6, .finished_at = t + 50, .output = blob,
          .output_len = sizeof blob, .output_bytes = 1 << 20 },
        { .id = 4, .tenant_id = "beta", .name = "ok", .command = "true", .cpu_m = 1,
          .memory_mb = 1, .submitted_at = t + 7, .state = "succeeded", .finished = true,
          .has_exit_code = true, .exit_code = 0, .attempts = 1, .worker_id = "w-2",
          .assigned_at = t + 8, .started_at = t + 9, .finished_at = t + 10, .output_bytes = 0 },
    };
    struct waiter w;
    waiter_init(&w);
    struct ticket tk[3] = { { &w, 0 }, { &w, 1 }, { &w, 2 } };

    struct store_batch *b = store_batch_new();
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        assert_int_equal(store_batch_put_job(b, &want[i]), 0);
    struct store_job doomed = want[0];
    doomed.id = 6;
    assert_int_equal(store_batch_put_job(b, &doomed), 0);
    struct store_transition tr[] = {
        { .job_id = 1, .at = t, .to_state = "queued" },
        { .job_id = 2, .at = t + 2, .from_state = "queued", .to_state = "assigned",
          .worker_id = "w-1" },
        { .job_id = 6, .at = t, .to_state = "queued" },
        { .job_id = 6, .at = t + 1, .from_state = "queued", .to_state = "cancelled" },
    };
    for (size_t i = 0; i < sizeof tr / sizeof tr[0]; i++)
        assert_int_equal(store_batch_add_transition(b, &tr[i]), 0);
    const char *acme = "hodei_jobs_submitted_total{tenant_id=\"acme\"}";
    assert_int_equal(store_batch_set_counter(b, acme, 5), 0);
    assert_int_equal(store_batch_set_counter(b, "huge", UINT64_MAX), 0);
    assert_int_equal(store_batch_set_meta(b, "next_job_id", -5), 0);
    assert_int_equal(store_batch_set_meta(b, "lowest", INT64_MIN), 0);
    assert_int_equal(store_batch_set_blob(b, "histogram", blob, sizeof blob), 0);
    assert_int_equal(store_batch_set_blob(b, "empty", "", 0), 0);
    assert_int_equal(store_batch_ops(b), 6 + 4 + 4 + 2);
    submit(st, b, &tk[0]);

    /* a second batch: upserts replace whole rows and values, deletes take transitions along */
    b = store_batch_new();
    want[0].state = "assigned";
    want[0].attempts = 1;
    want[0].worker_id = "w-9";
    want[0].assigned_at = t + 20;
    assert_int_equal(store_batch_put_job(b, &want[0]), 0);
    /* a put that keeps the stored output: job 3 keeps its blob, whatever the put carries */
    struct store_job kept = want[3];
    kept.keep_output = true;
    kept.output = NULL;
    kept.output_len = 0;
    kept.output_bytes = 2 << 20;
    want[3].output_bytes = kept.output_bytes;
    assert_int_equal(store_batch_put_job(b, &kept), 0);
    assert_int_equal(store_batch_delete_job(b, 6), 0);
    assert_int_equal(store_batch_set_blob(b, "histogram", blob + 1, 10), 0);
    assert_int_equal(store_batch_set_counter(b, acme, 7), 0);
    assert_int_equal(store_batch_set_meta(b, "next_job_id", 9), 0);
    submit(st, b, &tk[1]);
    wait_done(&w, 2);
    assert_int_equal(w.status[0], STORE_OK);
    assert_int_equal(w.status[1], STORE_OK);
    store_close(st);

    st = open_ok(dir, NULL);
    struct loaded l = { 0 };
    load_all(st, &l);
    /* meta, then counters, then blobs, then unfinished by id, then finished by finished_at */
    assert_string_equal(l.seq, "MMCCBBJJJJJ");
    assert_string_equal(l.blobs.key[0], "empty");
    assert_int_equal(l.blobs.len[0], 0);
    assert_string_equal(l.blobs.key[1], "histogram");
    assert_int_equal(l.blobs.len[1], 10);
    assert_memory_equal(l.blobs.data[1], blob + 1, 10);
    assert_int_equal(find_meta(&l, "next_job_id", 0), 9);
    assert_true(find_meta(&l, "lowest", 0) == INT64_MIN);
    assert_int_equal(find_counter(&l, acme, 0), 7);
    assert_true(find_counter(&l, "huge", 0) == UINT64_MAX);
    const size_t order[] = { 0, 1, 2, 4, 3 };     /* ids 1, 2, INT64_MAX; then 4 (t+10), 3 (t+50) */
    assert_int_equal(l.njobs, 5);
    for (size_t i = 0; i < 5; i++)
        assert_job_equal(&want[order[i]], &l.jobs[i].j);
    assert_null(find_job(&l, 6));
    loaded_free(&l);

    /* a callback's non-zero value stops the load and is returned */
    l.stop_after_jobs = 2;
    struct store_load_cb cb = { .job = load_job, .ctx = &l };
    assert_int_equal(store_load(st, &cb, NULL, 0), 7);
    assert_int_equal(l.njobs, 2);
    loaded_free(&l);
    store_close(st);

    /* transitions are there, in order, and went with their deleted job */
    sqlite3 *db;
    char path[4096];
    snprintf(path, sizeof path, "%s/hodei.db", dir);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT job_id, at, from_state, to_state, worker_id"
                                        " FROM transitions ORDER BY seq", -1, &s, NULL), SQLITE_OK);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int64(s, 0), tr[i].job_id);
        assert_true(sqlite3_column_double(s, 1) == tr[i].at);
        assert_opt_string("from_state", tr[i].from_state, (const char *) sqlite3_column_text(s, 2));
        assert_opt_string("to_state", tr[i].to_state, (const char *) sqlite3_column_text(s, 3));
        assert_opt_string("worker_id", tr[i].worker_id, (const char *) sqlite3_column_text(s, 4));
    }
    assert_int_equal(sqlite3_step(s), SQLITE_DONE);
    sqlite3_finalize(s);
    sqlite3_close(db);
}

/* Bad records are refused at the batch, which stays as it was. */
static void test_bad_records_refused(void **state)
{
    struct store_batch *b = store_batch_new();
    struct store_job j = { .id = 1, .tenant_id = "t", .name = "n", .command = "c",
                           .state = "queued" };
    assert_int_equal(store_batch_put_job(b, &j), 0);
    struct store_job bad = j;
    bad.id = 0;
    errno = 0;
    assert_int_equal(store_batch_put_job(b, &bad), -1);
    assert_int_equal(errno, EINVAL);
    bad.id = (uint64_t) INT64_MAX + 1;
    assert_int_equal(store_batch_put_job(b, &bad), -1);
    bad = j;
    bad.state = NULL;
    assert_int_equal(store_batch_put_job(b, &bad), -1);
    assert_int_equal(errno, EINVAL);
    bad = j;
    static char big[STORE_OUTPUT_MAX + 1];
    bad.output = big;
    bad.output_len = sizeof big;
    assert_int_equal(store_batch_put_job(b, &bad), -1);
    assert_int_equal(errno, EMSGSIZE);
    bad.output = NULL;
    bad.output_len = 3;
    assert_int_equal(store_batch_put_job(b, &bad), -1);
    assert_int_equal(errno, EINVAL);
    char longkey[STORE_KEY_MAX + 2];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    assert_int_equal(store_batch_set_counter(b, longkey, 1), -1);
    assert_int_equal(errno, EINVAL);
    static char bigblob[STORE_BLOB_MAX + 1];
    assert_int_equal(store_batch_set_blob(b, "h", bigblob, sizeof bigblob), -1);
    assert_int_equal(errno, EMSGSIZE);
    assert_int_equal(store_batch_set_blob(b, "h", NULL, 1), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(store_batch_delete_job(b, 0), -1);
    struct store_transition tr = { .job_id = 1, .at = 1 };     /* no to_state */
    assert_int_equal(store_batch_add_transition(b, &tr), -1);
    assert_int_equal(store_batch_ops(b), 1);
    store_batch_free(b);
}

/* ---- group commit ------------------------------------------------------------------- */

static void test_group_commit_merges_waiting_batches(void **state)
{
    const char *dir = *state;
    static struct gated h;
    gated_open(&h, dir, 0);
    struct gate *g = &h.g;
    struct commits *cs = &h.cs;
    struct store *st = h.st;
    struct waiter w;
    waiter_init(&w);
    struct ticket tk[6];
    char tenant[32];

    g->armed = 1;
    for (int i = 0; i < 6; i++) {
        tk[i] = (struct ticket) { &w, i };
        struct store_batch *b = store_batch_new();
        struct store_job j = derived_job((uint64_t) i + 1, tenant, sizeof tenant);
        assert_int_equal(store_batch_put_job(b, &j), 0);
        assert_int_equal(store_batch_set_meta(b, "next_job_id", i + 2), 0);
        submit(st, b, &tk[i]);
        if (i == 0)
            gate_wait_holding(g);     /* the committer took batch 0 and is held: 1..5 queue */
    }
    gate_open(g);
    wait_done(&w, 6);
    assert_false(g->timed_out);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(w.order[i], i);             /* completions in submission order */
        assert_int_equal(w.status[i], STORE_OK);
    }
    /* two transactions: the one held, and one for the five that waited behind it */
    assert_int_equal(cs->n, 2);
    assert_int_equal(cs->c[0].batches, 1);
    assert_int_equal(cs->c[1].batches, 5);
    assert_int_equal(cs->c[1].jobs, 5);
    assert_int_equal(cs->c[1].ops, 10);
    assert_int_equal(cs->c[1].status, STORE_OK);
    assert_true(cs->c[1].seconds > 0);
    struct store_stats ss;
    store_stats_read(st, &ss);
    assert_int_equal(ss.commits, 2);
    assert_int_equal(ss.batches, 6);
    assert_int_equal(ss.ops, 12);
    assert_int_equal(ss.commits_failed, 0);
    assert_int_equal(ss.pending_bytes, 0);
    store_close(st);
}

/* The queue is bounded: past max_pending_bytes, store_submit refuses at once (EAGAIN) and
 * the caller keeps its batch; it is accepted again once the queue drained. */
static void test_pending_bound_refuses_without_waiting(void **state)
{
    const char *dir = *state;
    static struct gated h;
    gated_open(&h, dir, 16384);
    struct gate *g = &h.g;
    struct store *st = h.st;
    struct waiter w;
    waiter_init(&w);
    static struct ticket tk[MAX_TICKETS];
    char tenant[32];
    g->armed = 1;
    int accepted = 0;
    struct store_batch *refused = NULL;
    while (refused == NULL && accepted < MAX_TICKETS - 1) {
        struct store_batch *b = store_batch_new();
        struct store_job j = derived_job((uint64_t) accepted + 1, tenant, sizeof tenant);
        assert_int_equal(store_batch_put_job(b, &j), 0);
        tk[accepted] = (struct ticket) { &w, accepted };
        if (store_submit(st, b, on_done, &tk[accepted]) == 0) {
            if (accepted++ == 0)
                gate_wait_holding(g);
        } else {
            assert_int_equal(errno, EAGAIN);
            refused = b;
        }
    }
    assert_non_null(refused);
    assert_true(accepted >= 2);
    struct store_stats ss;
    store_stats_read(st, &ss);
    assert_true(ss.pending_bytes <= 16384);
    gate_open(g);
    wait_done(&w, (unsigned) accepted);
    tk[accepted] = (struct ticket) { &w, accepted };
    submit(st, refused, &tk[accepted]);
    wait_done(&w, (unsigned) accepted + 1);
    for (int i = 0; i <= accepted; i++)
        assert_int_equal(w.status[i], STORE_OK);
    store_close(st);
}

/* store_close commits everything accepted before it returns, a batch without a completion
 * included. */
static void test_close_drains_the_queue(void **state)
{
    const char *dir = *state;
    struct store *st = open_ok(dir, NULL);
    struct waiter w;
    waiter_init(&w);
    static struct ticket tk[100];
    char tenant[32];
    for (int i = 0; i < 100; i++) {
        tk[i] = (struct ticket) { &w, i };
        struct store_batch *b = store_batch_new();
        struct store_job j = derived_job((uint64_t) i + 1, tenant, sizeof tenant);
        assert_int_equal(store_batch_put_job(b, &j), 0);
        submit(st, b, &tk[i]);
    }
    struct store_batch *b = store_batch_new();     /* one nobody waits for */
    struct store_job j = derived_job(101, tenant, sizeof tenant);
    assert_int_equal(store_batch_put_job(b, &j), 0);
    assert_int_equal(store_submit(st, b, NULL, NULL), 0);
    store_close(st);
    assert_int_equal(w.done, 100);
    for (int i = 0; i < 100; i++)
        assert_int_equal(w.status[i], STORE_OK);
    st = open_ok(dir, NULL);
    struct loaded l = { 0 };
    load_all(st, &l);
    assert_int_equal(l.njobs, 101);
    for (unsigned i = 0; i < 101; i++)
        assert_int_equal(l.jobs[i].j.id, i + 1);
    loaded_free(&l);
    store_close(st);
}

/* ---- disk full ---------------------------------------------------------------------- */

static char mount_ns_error[256];     /* why no private mount namespace could be had */

/* Called first in main, while single-threaded: mounts made from here on are private to this
 * process and vanish with it, whatever happens to it. */
static void enter_private_mount_namespace(void)
{
    if (unshare(CLONE_NEWNS) == 0) {
        if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
            snprintf(mount_ns_error, sizeof mount_ns_error, "make / private: %s", strerror(errno));
        return;
    }
    int err = errno;
    uid_t uid = getuid();
    gid_t gid = getgid();
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0) {
        snprintf(mount_ns_error, sizeof mount_ns_error,
                 "unshare(CLONE_NEWNS): %s; with a user namespace: %s", strerror(err),
                 strerror(errno));
        return;
    }
    char map[64];
    int fd;
    if ((fd = open("/proc/self/setgroups", O_WRONLY)) >= 0) {
        (void) !write(fd, "deny", 4);
        close(fd);
    }
    snprintf(map, sizeof map, "%lu %lu 1", (unsigned long) uid, (unsigned long) uid);
    if ((fd = open("/proc/self/uid_map", O_WRONLY)) >= 0) {
        (void) !write(fd, map, strlen(map));
        close(fd);
    }
    snprintf(map, sizeof map, "%lu %lu 1", (unsigned long) gid, (unsigned long) gid);
    if ((fd = open("/proc/self/gid_map", O_WRONLY)) >= 0) {
        (void) !write(fd, map, strlen(map));
        close(fd);
    }
    if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        snprintf(mount_ns_error, sizeof mount_ns_error, "make / private: %s", strerror(errno));
}

/* Fills the filesystem of dir with dir/filler until ENOSPC. */
static void fill_disk(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/filler", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    static char block[4096];
    memset(block, 0x5a, sizeof block);
    for (;;) {
        ssize_t n = write(fd, block, sizeof block);
        if (n < 0) {
            assert_int_equal(errno, ENOSPC);
            break;
        }
    }
    close(fd);
}

static void free_disk(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/filler", dir);
    assert_int_equal(unlink(path), 0);
}

static struct store_batch *job_batch(uint64_t id, size_t output_len, const char *counter,
                                     uint64_t value)
{
    static unsigned char out[STORE_OUTPUT_MAX];
    char tenant[32];
    struct store_batch *b = store_batch_new();
    struct store_job j = derived_job(id, tenant, sizeof tenant);
    memset(out, (int) id, sizeof out);
    j.output = output_len ? out : NULL;
    j.output_len = output_len;
    assert_int_equal(store_batch_put_job(b, &j), 0);
    struct store_transition tr = { .job_id = id, .at = j.submitted_at, .to_state = "queued" };
    assert_int_equal(store_batch_add_transition(b, &tr), 0);
    assert_int_equal(store_batch_set_counter(b, counter, value), 0);
    assert_int_equal(store_batch_set_meta(b, "next_job_id", (int64_t) id + 1), 0);
    return b;
}

static unsigned count_lines_with(const char *text, const char *needle)
{
    unsigned n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* stderr goes to a file between these two: what the store logs, for the test to read. */
struct captured {
    int saved;
    FILE *file;
};

static void capture_stderr(struct captured *c)
{
    fflush(stderr);
    c->saved = dup(2);
    c->file = tmpfile();
    assert_non_null(c->file);
    dup2(fileno(c->file), 2);
}

static void release_stderr(struct captured *c, char *text, size_t len)
{
    fflush(stderr);
    dup2(c->saved, 2);
    close(c->saved);
    fseek(c->file, 0, SEEK_SET);
    size_t n = fread(text, 1, len - 1, c->file);
    text[n] = '\0';
    fclose(c->file);
}

/* The store logs once when commits start failing and once when they succeed again. */
static void assert_logged_once_per_change(const char *text)
{
    if (count_lines_with(text, "commit failed") != 1 ||
        count_lines_with(text, "commits succeed again") != 1)
        fail_msg("want one line on failing and one on recovering, the store logged:\n%s", text);
}

static void test_disk_full_fails_whole_transactions_then_recovers(void **state)
{
    if (mount_ns_error[0])
        fail_msg("a size-limited tmpfs needs a private mount namespace: %s", mount_ns_error);
    const char *dir = *state;
    if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=2m,mode=0700") < 0)
        fail_msg("mount tmpfs on %s: %s", dir, strerror(errno));
    struct captured log;
    capture_stderr(&log);

    static struct gated h;
    gated_open(&h, dir, 0);
    struct gate *g = &h.g;
    struct store *st = h.st;
    const char *counter = "hodei_jobs_submitted_total{tenant_id=\"t\"}";
    struct waiter w;
    waiter_init(&w);
    struct ticket tk[8];
    for (int i = 0; i < 8; i++)
        tk[i] = (struct ticket) { &w, i };

    /* 1: jobs 1..10 commit while there is room */
    struct store_batch *b = job_batch(1, 100, counter, 1);
    for (uint64_t id = 2; id <= 10; id++) {
        struct store_job j;
        char tenant[32];
        j = derived_job(id, tenant, sizeof tenant);
        assert_int_equal(store_batch_put_job(b, &j), 0);
    }
    assert_int_equal(store_batch_set_counter(b, counter, 10), 0);
    submit(st, b, &tk[0]);
    wait_done(&w, 1);
    assert_int_equal(w.status[0], STORE_OK);

    /* 2: the disk fills; batches 1..3 wait together and share the failed transaction */
    fill_disk(dir);
    g->armed = 1;
    submit(st, job_batch(11, STORE_OUTPUT_MAX, counter, 11), &tk[1]);
    gate_wait_holding(g);
    submit(st, job_batch(12, STORE_OUTPUT_MAX, counter, 12), &tk[2]);
    submit(st, job_batch(13, STORE_OUTPUT_MAX, counter, 13), &tk[3]);
    gate_open(g);
    wait_done(&w, 4);
    submit(st, job_batch(14, STORE_OUTPUT_MAX, counter, 14), &tk[4]);  /* still full */
    wait_done(&w, 5);
    /* the transaction with 11 alone may or may not have found room in the WAL; the one with
     * 12 and 13 (3 x 64 KiB on a full disk) cannot have */
    for (int i = 2; i <= 4; i++) {
        if (w.status[i] != STORE_ERR_FULL)
            fail_msg("batch %d: status %d (%s), want STORE_ERR_FULL", i, w.status[i], w.why[i]);
        assert_true(strstr(w.why[i], "full") != NULL);
    }
    assert_int_equal(w.status[2], w.status[3]);     /* one transaction, one fate */
    struct store_stats ss;
    store_stats_read(st, &ss);
    assert_int_equal(ss.failing, 1);
    assert_true(ss.commits_failed >= 2);

    /* 3: space returns; the next commit succeeds by itself */
    free_disk(dir);
    submit(st, job_batch(15, 100, counter, 15), &tk[5]);
    wait_done(&w, 6);
    assert_int_equal(w.status[5], STORE_OK);
    store_stats_read(st, &ss);
    assert_int_equal(ss.failing, 0);
    store_close(st);

    char text[8192];
    release_stderr(&log, text, sizeof text);
    assert_logged_once_per_change(text);

    /* exactly what committed: 1..10 and 15 (11 only if its transaction had room) */
    st = open_ok(dir, NULL);
    struct loaded l = { 0 };
    load_all(st, &l);
    int has11 = w.status[1] == STORE_OK;
    assert_int_equal(l.njobs, 11 + has11);
    for (uint64_t id = 1; id <= 15; id++) {
        int want = id <= 10 || id == 15 || (id == 11 && has11);
        if ((find_job(&l, id) != NULL) != want)
            fail_msg("job %" PRIu64 ": %s", id, want ? "lost" : "stored by a failed commit");
    }
    assert_int_equal(find_counter(&l, counter, 0), 15);
    assert_int_equal(find_meta(&l, "next_job_id", 0), 16);
    loaded_free(&l);
    store_close(st);
}

/* ---- fsync before told, I/O errors: a VFS that wraps SQLite's own -------------------- */

/* Counts fsyncs of the WAL and can fail its writes; everything else goes to the real VFS. */
static sqlite3_vfs *real_vfs;
static sqlite3_vfs shim_vfs;
static unsigned wal_syncs;           /* relaxed atomics: the committer writes, the test reads */
static int fail_wal_writes;

struct shim_file {
    sqlite3_file base;
    int wal;
    sqlite3_file *real;              /* the real VFS's file, right after this struct */
};

#define REAL(f) (((struct shim_file *) (f))->real)
#define CALL(f, method, ...) REAL(f)->pMethods->method(REAL(f), __VA_ARGS__)

static int shim_close(sqlite3_file *f)
{
    return REAL(f)->pMethods->xClose(REAL(f));
}
static int shim_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o)
{
    return CALL(f, xRead, b, n, o);
}
static int shim_truncate(sqlite3_file *f, sqlite3_int64 n)
{
    return CALL(f, xTruncate, n);
}
static int shim_size(sqlite3_file *f, sqlite3_int64 *n)
{
    return CALL(f, xFileSize, n);
}
static int shim_lock(sqlite3_file *f, int l)
{
    return CALL(f, xLock, l);
}
static int shim_unlock(sqlite3_file *f, int l)
{
    return CALL(f, xUnlock, l);
}
static int shim_reserved(sqlite3_file *f, int *r)
{
    return CALL(f, xCheckReservedLock, r);
}
static int shim_control(sqlite3_file *f, int op, void *a)
{
    return CALL(f, xFileControl, op, a);
}
static int shim_sector(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int shim_device(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int shim_shm_map(sqlite3_file *f, int pg, int sz, int ext, void volatile **pp)
{
    return CALL(f, xShmMap, pg, sz, ext, pp);
}
static int shim_shm_lock(sqlite3_file *f, int o, int n, int fl)
{
    return CALL(f, xShmLock, o, n, fl);
}
static void shim_shm_barrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int shim_shm_unmap(sqlite3_file *f, int del)
{
    return CALL(f, xShmUnmap, del);
}
static int shim_fetch(sqlite3_file *f, sqlite3_int64 o, int n, void **pp)
{
    return CALL(f, xFetch, o, n, pp);
}
static int shim_unfetch(sqlite3_file *f, sqlite3_int64 o, void *p)
{
    return CALL(f, xUnfetch, o, p);
}

static int shim_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o)
{
    if (((struct shim_file *) f)->wal && __atomic_load_n(&fail_wal_writes, __ATOMIC_RELAXED))
        return SQLITE_IOERR_WRITE;
    return CALL(f, xWrite, b, n, o);
}

static int shim_sync(sqlite3_file *f, int flags)
{
    int rc = CALL(f, xSync, flags);
    if (rc == SQLITE_OK && ((struct shim_file *) f)->wal)
        __atomic_fetch_add(&wal_syncs, 1, __ATOMIC_RELAXED);
    return rc;
}

static const sqlite3_io_methods shim_methods = {
    3, shim_close, shim_read, shim_write, shim_truncate, shim_sync, shim_size, shim_lock,
    shim_unlock, shim_reserved, shim_control, shim_sector, shim_device, shim_shm_map,
    shim_shm_lock, shim_shm_barrier, shim_shm_unmap, shim_fetch, shim_unfetch,
};

static int shim_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags,
                     int *out_flags)
{
    struct shim_file *s = (struct shim_file *) f;
    s->real = (sqlite3_file *) (s + 1);
    memset(s->real, 0, (size_t) real_vfs->szOsFile);
    s->wal = (flags & SQLITE_OPEN_WAL) != 0;
    int rc = real_vfs->xOpen(real_vfs, name, s->real, flags, out_flags);
    s->base.pMethods = s->real->pMethods != NULL ? &shim_methods : NULL;
    return rc;
}

/* Makes the shim SQLite's default VFS until shim_remove(): stores opened meanwhile use it. */
static void shim_install(void)
{
    real_vfs = sqlite3_vfs_find(NULL);
    assert_non_null(real_vfs);
    shim_vfs = *real_vfs;
    shim_vfs.zName = "hodei-test-shim";
    shim_vfs.szOsFile = (int) sizeof(struct shim_file) + real_vfs->szOsFile;
    shim_vfs.xOpen = shim_open;
    shim_vfs.pNext = NULL;
    assert_int_equal(sqlite3_vfs_register(&shim_vfs, 1), SQLITE_OK);
    __atomic_store_n(&wal_syncs, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&fail_wal_writes, 0, __ATOMIC_RELAXED);
}

static void shim_remove(void)
{
    sqlite3_vfs_unregister(&shim_vfs);
    assert_true(sqlite3_vfs_find(NULL) == real_vfs);
}

static void shim_reset(void)
{
    __atomic_store_n(&fail_wal_writes, 0, __ATOMIC_RELAXED);
    if (sqlite3_vfs_find(shim_vfs.zName ? shim_vfs.zName : "hodei-test-shim") == &shim_vfs)
        sqlite3_vfs_unregister(&shim_vfs);
}

/* WAL fsyncs seen when a transaction began and when each completion ran. */
struct sync_marks {
    unsigned at_taken[MAX_TICKETS], at_done[MAX_TICKETS];
    unsigned ntaken, ndone;
};

static void sync_mark_taken(void *ctx, enum store_stage stage, unsigned batches)
{
    struct sync_marks *m = ctx;
    if (stage == STORE_STAGE_TAKEN && m->ntaken < MAX_TICKETS)
        m->at_taken[m->ntaken++] = __atomic_load_n(&wal_syncs, __ATOMIC_RELAXED);
}

struct sync_ticket {
    struct ticket t;
    struct sync_marks *m;
};

static void sync_mark_done(void *ctx, enum store_status status, const char *why)
{
    struct sync_ticket *st = ctx;
    st->m->at_done[st->t.n] = __atomic_load_n(&wal_syncs, __ATOMIC_RELAXED);
    on_done(&st->t, status, why);
}

/* Committed before told: every completion runs after an fsync of the WAL that its own
 * transaction issued.  (A process kill cannot tell synchronous=OFF from FULL; this can.) */
static void test_told_only_after_the_wal_is_fsynced(void **state)
{
    shim_install();
    const char *dir = *state;
    static struct sync_marks m;
    memset(&m, 0, sizeof m);
    struct store_options opts = { .stage_hook = sync_mark_taken, .stage_ctx = &m };
    struct store *st = open_ok(dir, &opts);
    struct waiter w;
    waiter_init(&w);
    static struct sync_ticket tk[20];
    for (int i = 0; i < 20; i++) {
        tk[i] = (struct sync_ticket) { { &w, i }, &m };
        struct store_batch *b = job_batch((uint64_t) i + 1, 0, "jobs", (uint64_t) i + 1);
        if (store_submit(st, b, sync_mark_done, &tk[i]) != 0)
            fail_msg("store_submit: %s", strerror(errno));
        wait_done(&w, (unsigned) i + 1);      /* one batch per transaction */
    }
    store_close(st);
    shim_remove();
    assert_int_equal(m.ntaken, 20);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(w.status[i], STORE_OK);
        if (m.at_done[i] <= m.at_taken[i])
            fail_msg("batch %d was completed with no fsync of the WAL since its transaction"
                     " began (%u fsyncs before, %u at completion)", i, m.at_taken[i],
                     m.at_done[i]);
    }
}

/* A write error (not a full disk) fails the transaction whole as STORE_ERR_IO; the store
 * recovers by itself when writes succeed again. */
static void test_io_error_fails_the_transaction_then_recovers(void **state)
{
    shim_install();
    const char *dir = *state;
    struct captured log;
    capture_stderr(&log);
    struct store *st = open_ok(dir, NULL);
    struct waiter w;
    waiter_init(&w);
    struct ticket tk[3] = { { &w, 0 }, { &w, 1 }, { &w, 2 } };
    submit(st, job_batch(1, 100, "jobs", 1), &tk[0]);
    wait_done(&w, 1);
    __atomic_store_n(&fail_wal_writes, 1, __ATOMIC_RELAXED);
    submit(st, job_batch(2, 100, "jobs", 2), &tk[1]);
    wait_done(&w, 2);
    __atomic_store_n(&fail_wal_writes, 0, __ATOMIC_RELAXED);
    submit(st, job_batch(3, 100, "jobs", 3), &tk[2]);
    wait_done(&w, 3);
    struct store_stats ss;
    store_stats_read(st, &ss);
    store_close(st);
    shim_remove();
    char text[8192];
    release_stderr(&log, text, sizeof text);
    assert_logged_once_per_change(text);
    assert_int_equal(w.status[0], STORE_OK);
    if (w.status[1] != STORE_ERR_IO || strstr(w.why[1], "I/O error") == NULL)
        fail_msg("a failed WAL write completed with status %d (%s)", w.status[1], w.why[1]);
    assert_int_equal(w.status[2], STORE_OK);
    assert_int_equal(ss.commits, 2);
    assert_int_equal(ss.commits_failed, 1);
    assert_int_equal(ss.batches_failed, 1);
    assert_int_equal(ss.failing, 0);

    st = open_ok(dir, NULL);
    struct loaded l = { 0 };
    load_all(st, &l);
    assert_int_equal(l.njobs, 2);
    assert_non_null(find_job(&l, 1));
    assert_null(find_job(&l, 2));
    assert_non_null(find_job(&l, 3));
    assert_int_equal(find_counter(&l, "jobs", 0), 3);
    loaded_free(&l);
    store_close(st);
}

/* ---- refusing to open --------------------------------------------------------------- */

static void write_file(const char *path, const void *data, size_t len, off_t at)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, data, len, at), (ssize_t) len);
    close(fd);
}

static char *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t) ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(*len + 1);
    assert_int_equal(fread(buf, 1, *len, f), *len);
    fclose(f);
    return buf;
}

/* Opening must fail with the database path and reason in the message, and leave the file
 * byte for byte as it was. */
static void assert_refused(const char *dir, const char *reason)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/hodei.db", dir);
    size_t before_len, after_len;
    char *before = read_whole(path, &before_len);
    char err[512] = "";
    struct store *st = store_open(dir, NULL, err, sizeof err);
    if (st != NULL) {
        store_close(st);
        fail_msg("store_open accepted %s (want: %s)", path, reason);
    }
    if (strstr(err, path) == NULL || strstr(err, reason) == NULL)
        fail_msg("message \"%s\" lacks the path %s or \"%s\"", err, path, reason);
    char *after = read_whole(path, &after_len);
    assert_int_equal(before_len, after_len);
    assert_memory_equal(before, after, before_len);
    free(before);
    free(after);
}

static void fill_store(const char *dir, unsigned jobs)
{
    struct store *st = open_ok(dir, NULL);
    struct waiter w;
    waiter_init(&w);
    struct ticket tk = { &w, 0 };
    struct store_batch *b = store_batch_new();
    char tenant[32];
    for (unsigned i = 1; i <= jobs; i++) {
        struct store_job j = derived_job(i, tenant, sizeof tenant);
        assert_int_equal(store_batch_put_job(b, &j), 0);
        struct store_transition tr = { .job_id = i, .at = 1, .to_state = "queued" };
        assert_int_equal(store_batch_add_transition(b, &tr), 0);
    }
    submit(st, b, &tk);
    wait_done(&w, 1);
    assert_int_equal(w.status[0], STORE_OK);
    store_close(st);
}

static void test_refuses_a_file_that_is_not_a_database(void **state)
{
    const char *dir = *state;
    char path[4096];
    snprintf(path, sizeof path, "%s/hodei.db", dir);
    char junk[8192];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = "not a database, just bytes\n"[i % 27];
    write_file(path, junk, sizeof junk, 0);
    assert_refused(dir, "file is not a database");
}

static void test_refuses_a_damaged_database(void **state)
{
    const char *dir = *state;
    fill_store(dir, 3000);
    char path[4096];
    snprintf(path, sizeof path, "%s/hodei.db", dir);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_true(sb.st_size > 40 * 4096);
    char page[4096];
    memset(page, 0xa5, sizeof page);
    write_file(path, page, sizeof page, 20 * 4096);    /* a b-tree page in the middle */
    assert_refused(dir, "damaged database");
}

static void set_user_version(const char *dir, int version, const char *extra_sql)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/hodei.db", dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char sql[256];
    snprintf(sql, sizeof sql, "%s PRAGMA user_version = %d;", extra_sql, version);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void test_refuses_a_newer_schema(void **state)
{
    const char *dir = *state;
    fill_store(dir, 10);
    set_user_version(dir, STORE_SCHEMA_VERSION + 1, "");
    char want[128];
    snprintf(want, sizeof want, "schema version %d is newer than this program's (%d)",
             STORE_SCHEMA_VERSION + 1, STORE_SCHEMA_VERSION);
    assert_refused(dir, want);
}

/* A file of schema 1, as the first release wrote it: jobs keep every value, gain output_bytes
 * -1 (none reported), and blobs can be written; the file says version 2 afterwards. */
static void test_upgrades_schema_1(void **state)
{
    const char *dir = *state;
    char path[4096];
    snprintf(path, sizeof path, "%s/hodei.db", dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    const char *v1 =
        "PRAGMA journal_mode = WAL;"
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, name TEXT NOT NULL,"
        " command TEXT NOT NULL, cpu_m INTEGER NOT NULL, memory_mb INTEGER NOT NULL,"
        " priority INTEGER NOT NULL, timeout_s INTEGER NOT NULL, max_retries INTEGER NOT NULL,"
        " submitted_at REAL NOT NULL, state TEXT NOT NULL, finished INTEGER NOT NULL,"
        " error_type TEXT, exit_code INTEGER, attempts INTEGER NOT NULL, worker_id TEXT,"
        " assigned_at REAL NOT NULL, started_at REAL NOT NULL, finished_at REAL NOT NULL,"
        " output BLOB);"
        "CREATE INDEX jobs_finished ON jobs (finished_at, id) WHERE finished;"
        "CREATE TABLE transitions (seq INTEGER PRIMARY KEY, job_id INTEGER NOT NULL,"
        " at REAL NOT NULL, from_state TEXT, to_state TEXT NOT NULL, worker_id TEXT);"
        "CREATE INDEX transitions_job ON transitions (job_id);"
        "CREATE TABLE counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
        "INSERT INTO jobs VALUES (7, 'acme', 'old', 'true', 100, 64, 0, 0, 0, 1.7e9, 'succeeded',"
        " 1, NULL, 0, 1, 'w-1', 1.7e9, 1.7e9, 1.7e9, x'6f6b0a');"
        "INSERT INTO counters VALUES ('c', 3); INSERT INTO meta VALUES ('next_job_id', 8);"
        "PRAGMA user_version = 1;";
    assert_int_equal(sqlite3_exec(db, v1, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);

    struct store *st = open_ok(dir, NULL);
    struct loaded l = { 0 };
    load_all(st, &l);
    assert_string_equal(l.seq, "MCJ");
    assert_int_equal(l.jobs[0].j.id, 7);
    assert_int_equal(l.jobs[0].j.output_bytes, -1);
    assert_int_equal(l.jobs[0].j.output_len, 3);
    assert_memory_equal(l.jobs[0].j.output, "ok\n", 3);
    assert_int_equal(find_counter(&l, "c", 0), 3);
    loaded_free(&l);
    struct waiter w;
    waiter_init(&w);
    struct ticket tk = { &w, 0 };
    struct store_batch *b = store_batch_new();
    assert_int_equal(store_batch_set_blob(b, "h", "xyz", 3), 0);
    submit(st, b, &tk);
    wait_done(&w, 1);
    assert_int_equal(w.status[0], STORE_OK);
    store_close(st);

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), STORE_SCHEMA_VERSION);
    sqlite3_finalize(q);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void test_refuses_a_foreign_database(void **state)
{
    const char *dir = *state;
    set_user_version(dir, 0, "CREATE TABLE photos (id INTEGER PRIMARY KEY, data BLOB);");
    assert_refused(dir, "not a Hodei state database");
}

static void test_refuses_a_second_opener(void **state)
{
    const char *dir = *state;
    struct store *st = open_ok(dir, NULL);
    char err[512] = "";
    assert_null(store_open(dir, NULL, err, sizeof err));
    char want[64];
    snprintf(want, sizeof want, "in use by another process (pid %ld)", (long) getpid());
    if (strstr(err, dir) == NULL || strstr(err, want) == NULL)
        fail_msg("message \"%s\" lacks %s or \"%s\"", err, dir, want);
    store_close(st);
    st = open_ok(dir, NULL);          /* and the lock goes with the store */
    store_close(st);
}

/* ---- crash -------------------------------------------------------------------------- */

#define CRASH_MARK (UINT64_C(1) << 63)
#define CRASH_TXN 5                  /* the transaction the child dies in */
#define CRASH_SUBMITTERS 4

struct crash_child {
    struct store *st;
    int fd;                          /* acknowledged ids, then CRASH_MARK | batches */
    enum store_stage die_at;
    unsigned txn;
    pthread_mutex_t submit_lock;     /* ids are submitted in id order */
    uint64_t next_id;
};

struct crash_ticket {
    struct crash_child *c;
    uint64_t id;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
};

static void crash_hook(void *ctx, enum store_stage stage, unsigned batches)
{
    struct crash_child *c = ctx;
    if (stage == STORE_STAGE_TAKEN)
        c->txn++;
    if (stage == c->die_at && c->txn == CRASH_TXN) {
        uint64_t mark = CRASH_MARK | batches;
        if (write(c->fd, &mark, sizeof mark) != sizeof mark)
            _exit(3);
        for (;;)
            pause();                 /* the parent kills us here */
    }
}

static void crash_done(void *ctx, enum store_status status, const char *why)
{
    struct crash_ticket *t = ctx;
    if (status != STORE_OK)
        _exit(4);
    /* told: from here on this id must survive anything */
    if (write(t->c->fd, &t->id, sizeof t->id) != sizeof t->id)
        _exit(3);
    pthread_mutex_lock(&t->lock);
    t->done = 1;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
}

static void *crash_submitter(void *arg)
{
    struct crash_child *c = arg;
    struct crash_ticket t = { .c = c, .lock = PTHREAD_MUTEX_INITIALIZER,
                              .cond = PTHREAD_COND_INITIALIZER };
    for (;;) {
        pthread_mutex_lock(&c->submit_lock);
        t.id = ++c->next_id;
        t.done = 0;
        struct store_batch *b = job_batch(t.id, 0, "jobs", t.id);
        if (store_submit(c->st, b, crash_done, &t) != 0)
            _exit(5);
        pthread_mutex_unlock(&c->submit_lock);
        pthread_mutex_lock(&t.lock);
        while (!t.done)
            pthread_cond_wait(&t.cond, &t.lock);
        pthread_mutex_unlock(&t.lock);
    }
    return NULL;
}

static void crash_child_main(const char *dir, enum store_stage die_at, int fd)
{
    static struct crash_child c = { .submit_lock = PTHREAD_MUTEX_INITIALIZER };
    c.fd = fd;
    c.die_at = die_at;
    struct store_options opts = { .stage_hook = crash_hook, .stage_ctx = &c };
    char err[512];
    c.st = store_open(dir, &opts, err, sizeof err);
    if (c.st == NULL)
        _exit(2);
    pthread_t th[CRASH_SUBMITTERS];
    for (int i = 0; i < CRASH_SUBMITTERS; i++)
        pthread_create(&th[i], NULL, crash_submitter, &c);
    for (;;)
        pause();
}

/* Reads one 8-byte record from fd, waiting up to the deadline. */
static int read_record(int fd, uint64_t *v)
{
    size_t got = 0;
    while (got < sizeof *v) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, DEADLINE_S * 1000) <= 0)
            return -1;
        ssize_t n = read(fd, (char *) v + got, sizeof *v - got);
        if (n <= 0)
            return -1;
        got += (size_t) n;
    }
    return 0;
}

static void crash_at(const char *dir, enum store_stage die_at)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        crash_child_main(dir, die_at, p[1]);
    }
    close(p[1]);
    uint64_t v, acked_max = 0, acked = 0, in_txn = 0;
    int ok;
    while ((ok = read_record(p[0], &v) == 0) && !(v & CRASH_MARK)) {
        acked++;
        if (v > acked_max)
            acked_max = v;
    }
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    close(p[0]);
    if (!ok)
        fail_msg("the child died or stalled before transaction %d (wait status %d)", CRASH_TXN,
                 status);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    in_txn = v & ~CRASH_MARK;
    assert_true(in_txn >= 1);
    assert_int_equal(acked, acked_max);              /* acknowledged: exactly 1..acked_max */

    struct store *st = open_ok(dir, NULL);
    struct loaded l = { 0 };
    load_all(st, &l);
    /* every acknowledged job is there, whole; what is there is a prefix of the submissions */
    uint64_t want = die_at == STORE_STAGE_COMMITTED ? acked_max + in_txn : acked_max;
    if (l.njobs != want)
        fail_msg("after a kill at stage %d: %u jobs stored, want %" PRIu64 " (%" PRIu64
                 " acknowledged, %" PRIu64 " in the last transaction)", die_at, l.njobs, want,
                 acked_max, in_txn);
    for (unsigned i = 0; i < l.njobs; i++) {
        char tenant[32];
        struct store_job j = derived_job(i + 1, tenant, sizeof tenant);
        assert_job_equal(&j, &l.jobs[i].j);
    }
    assert_int_equal(find_counter(&l, "jobs", 0), want);
    assert_int_equal(find_meta(&l, "next_job_id", 0), want + 1);
    loaded_free(&l);
    store_close(st);
}

/* Killed with every operation written but COMMIT not issued: the transaction is gone whole,
 * everything acknowledged before it is there. */
static void test_crash_before_commit_keeps_the_acknowledged(void **state)
{
    crash_at(*state, STORE_STAGE_WRITTEN);
}

/* Killed after COMMIT returned, before any completion: committed but never told — there. */
static void test_crash_after_commit_keeps_the_committed(void **state)
{
    crash_at(*state, STORE_STAGE_COMMITTED);
}

int main(void)
{
    enter_private_mount_namespace();
#define WITH_DIR(test) cmocka_unit_test_setup_teardown(test, setup_dir, teardown_dir)
    const struct CMUnitTest tests[] = {
        WITH_DIR(test_round_trip),
        WITH_DIR(test_bad_records_refused),
        WITH_DIR(test_upgrades_schema_1),
        WITH_DIR(test_group_commit_merges_waiting_batches),
        WITH_DIR(test_pending_bound_refuses_without_waiting),
        WITH_DIR(test_close_drains_the_queue),
        WITH_DIR(test_disk_full_fails_whole_transactions_then_recovers),
        WITH_DIR(test_told_only_after_the_wal_is_fsynced),
        WITH_DIR(test_io_error_fails_the_transaction_then_recovers),
        WITH_DIR(test_refuses_a_file_that_is_not_a_database),
        WITH_DIR(test_refuses_a_damaged_database),
        WITH_DIR(test_refuses_a_newer_schema),
        WITH_DIR(test_refuses_a_foreign_database),
        WITH_DIR(test_refuses_a_second_opener),
        WITH_DIR(test_crash_before_commit_keeps_the_acknowledged),
        WITH_DIR(test_crash_after_commit_keeps_the_committed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
