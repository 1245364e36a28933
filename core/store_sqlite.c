/*
 * store_sqlite.c — the store (store.h) on SQLite: dir/hodei.db in WAL mode with
 * synchronous=FULL, so a COMMIT returns only after the WAL is fsynced; one connection, used
 * by the opener until the first submission and by the committer thread after it.
 *
 * A batch is a list of operations in a private arena (one malloc for a small batch), so
 * submitting copies nothing and the committer binds the strings where they are.
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "hodei_clock.h"
#include "log.h"

#define DB_NAME           "hodei.db"
#define LOCK_NAME         "hodei.lock"
#define PENDING_DEFAULT   ((size_t) 64 << 20)
#define CHUNK_MIN         1024
#define BUSY_TIMEOUT_MS   5000

/* The schema of version 1.  Jobs are keyed by their id (the rowid), so unfinished jobs load
 * in id order by a plain table scan; finished ones load and prune by finished_at through the
 * partial index.  Unsigned values are stored as SQLite's signed 64-bit integers. */
static const char schema_v1[] =
    "BEGIN IMMEDIATE;"
    "CREATE TABLE jobs ("
    " id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, name TEXT NOT NULL,"
    " command TEXT NOT NULL, cpu_m INTEGER NOT NULL, memory_mb INTEGER NOT NULL,"
    " priority INTEGER NOT NULL, timeout_s INTEGER NOT NULL, max_retries INTEGER NOT NULL,"
    " submitted_at REAL NOT NULL, state TEXT NOT NULL, finished INTEGER NOT NULL,"
    " error_type TEXT, exit_code INTEGER, attempts INTEGER NOT NULL, worker_id TEXT,"
    " assigned_at REAL NOT NULL, started_at REAL NOT NULL, finished_at REAL NOT NULL,"
    " output BLOB);"
    "CREATE INDEX jobs_finished ON jobs (finished_at, id) WHERE finished;"
    "CREATE TABLE transitions ("
    " seq INTEGER PRIMARY KEY, job_id INTEGER NOT NULL, at REAL NOT NULL,"
    " from_state TEXT, to_state TEXT NOT NULL, worker_id TEXT);"
    "CREATE INDEX transitions_job ON transitions (job_id);"
    "CREATE TABLE counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
    "PRAGMA user_version = 1;"
    "COMMIT;";
_Static_assert(STORE_SCHEMA_VERSION == 1, "schema_v1 must be the current schema");

#define JOB_COLUMNS \
    "id, tenant_id, name, command, cpu_m, memory_mb, priority, timeout_s, max_retries," \
    " submitted_at, state, finished, error_type, exit_code, attempts, worker_id," \
    " assigned_at, started_at, finished_at, output"

enum stmt_id {
    S_BEGIN, S_COMMIT, S_ROLLBACK, S_PUT_JOB, S_DELETE_JOB, S_DELETE_TRANSITIONS,
    S_ADD_TRANSITION, S_SET_COUNTER, S_SET_META, S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
    [S_BEGIN]    = "BEGIN IMMEDIATE",
    [S_COMMIT]   = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_PUT_JOB]  = "INSERT OR REPLACE INTO jobs (" JOB_COLUMNS ") VALUES"
                   " (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,"
                   " ?17, ?18, ?19, ?20)",
    [S_DELETE_JOB]         = "DELETE FROM jobs WHERE id = ?1",
    [S_DELETE_TRANSITIONS] = "DELETE FROM transitions WHERE job_id = ?1",
    [S_ADD_TRANSITION] = "INSERT INTO transitions (job_id, at, from_state, to_state, worker_id)"
                         " VALUES (?1, ?2, ?3, ?4, ?5)",
    [S_SET_COUNTER] = "INSERT INTO counters (key, value) VALUES (?1, ?2)"
                      " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    [S_SET_META]    = "INSERT INTO meta (key, value) VALUES (?1, ?2)"
                      " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
};

/* ---- batches ------------------------------------------------------------------------- */

enum op_kind { OP_PUT_JOB, OP_DELETE_JOB, OP_TRANSITION, OP_COUNTER, OP_META };

struct op {
    struct op *next;
    enum op_kind kind;
    union {
        struct store_job job;            /* strings and output point into the arena */
        uint64_t job_id;
        struct store_transition tr;
        struct { const char *key; int64_t value; } kv;   /* counters: the bits of a uint64 */
    } u;
};

struct chunk {
    struct chunk *next;
    size_t used, size;
    max_align_t data[];
};

struct store_batch {
    struct store_batch *next;            /* the submission queue */
    store_done_fn done;
    void *done_ctx;
    struct op *first, **last;
    unsigned nops, njobs;
    size_t bytes;                        /* what it holds in memory */
    struct chunk *chunks;                /* the one being filled first */
};

static void *arena_alloc(struct store_batch *b, size_t n)
{
    n = (n + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1);
    struct chunk *c = b->chunks;
    if (c == NULL || c->size - c->used < n) {
        size_t size = n > CHUNK_MIN ? n : CHUNK_MIN;
        c = malloc(sizeof *c + size);
        if (c == NULL) {
            errno = ENOMEM;
            return NULL;
        }
        c->used = 0;
        c->size = size;
        c->next = b->chunks;
        b->chunks = c;
        b->bytes += sizeof *c + size;
    }
    void *p = (char *) c->data + c->used;
    c->used += n;
    return p;
}

/* Copies s (NULL stays NULL when optional); 0 or -1 with errno. */
static int arena_str(struct store_batch *b, const char **dst, const char *s, size_t max,
                     int optional)
{
    if (s == NULL) {
        *dst = NULL;
        return optional ? 0 : (errno = EINVAL, -1);
    }
    size_t len = strnlen(s, max + 1);
    if (len > max) {
        errno = EINVAL;
        return -1;
    }
    char *p = arena_alloc(b, len + 1);
    if (p == NULL)
        return -1;
    memcpy(p, s, len + 1);
    *dst = p;
    return 0;
}

struct store_batch *store_batch_new(void)
{
    struct store_batch *b = calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    b->last = &b->first;
    b->bytes = sizeof *b;
    return b;
}

void store_batch_free(struct store_batch *b)
{
    if (b == NULL)
        return;
    for (struct chunk *c = b->chunks, *next; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
    free(b);
}

unsigned store_batch_ops(const struct store_batch *b)
{
    return b->nops;
}

static struct op *op_new(struct store_batch *b, enum op_kind kind)
{
    struct op *op = arena_alloc(b, sizeof *op);
    if (op != NULL) {
        memset(op, 0, sizeof *op);
        op->kind = kind;
    }
    return op;
}

static void op_append(struct store_batch *b, struct op *op)
{
    *b->last = op;
    b->last = &op->next;
    b->nops++;
    if (op->kind == OP_PUT_JOB)
        b->njobs++;
}

static int valid_id(uint64_t id)
{
    return id >= 1 && id <= INT64_MAX;
}

int store_batch_put_job(struct store_batch *b, const struct store_job *job)
{
    if (!valid_id(job->id) || (job->output == NULL && job->output_len != 0)) {
        errno = EINVAL;
        return -1;
    }
    if (job->output_len > STORE_OUTPUT_MAX) {
        errno = EMSGSIZE;
        return -1;
    }
    struct op *op = op_new(b, OP_PUT_JOB);
    if (op == NULL)
        return -1;
    struct store_job *j = &op->u.job;
    *j = *job;
    if (arena_str(b, &j->tenant_id, job->tenant_id, STORE_TEXT_MAX, 0) < 0 ||
        arena_str(b, &j->name, job->name, STORE_TEXT_MAX, 0) < 0 ||
        arena_str(b, &j->command, job->command, STORE_TEXT_MAX, 0) < 0 ||
        arena_str(b, &j->state, job->state, STORE_TEXT_MAX, 0) < 0 ||
        arena_str(b, &j->error_type, job->error_type, STORE_TEXT_MAX, 1) < 0 ||
        arena_str(b, &j->worker_id, job->worker_id, STORE_TEXT_MAX, 1) < 0)
        return -1;
    if (job->output_len > 0) {
        void *out = arena_alloc(b, job->output_len);
        if (out == NULL)
            return -1;
        memcpy(out, job->output, job->output_len);
        j->output = out;
    }
    op_append(b, op);
    return 0;
}

int store_batch_delete_job(struct store_batch *b, uint64_t id)
{
    if (!valid_id(id)) {
        errno = EINVAL;
        return -1;
    }
    struct op *op = op_new(b, OP_DELETE_JOB);
    if (op == NULL)
        return -1;
    op->u.job_id = id;
    op_append(b, op);
    return 0;
}

int store_batch_add_transition(struct store_batch *b, const struct store_transition *t)
{
    if (!valid_id(t->job_id)) {
        errno = EINVAL;
        return -1;
    }
    struct op *op = op_new(b, OP_TRANSITION);
    if (op == NULL)
        return -1;
    op->u.tr = *t;
    if (arena_str(b, &op->u.tr.from_state, t->from_state, STORE_TEXT_MAX, 1) < 0 ||
        arena_str(b, &op->u.tr.to_state, t->to_state, STORE_TEXT_MAX, 0) < 0 ||
        arena_str(b, &op->u.tr.worker_id, t->worker_id, STORE_TEXT_MAX, 1) < 0)
        return -1;
    op_append(b, op);
    return 0;
}

static int add_kv(struct store_batch *b, enum op_kind kind, const char *key, int64_t value)
{
    struct op *op = op_new(b, kind);
    if (op == NULL || arena_str(b, &op->u.kv.key, key, STORE_KEY_MAX, 0) < 0)
        return -1;
    op->u.kv.value = value;
    op_append(b, op);
    return 0;
}

int store_batch_set_counter(struct store_batch *b, const char *key, uint64_t value)
{
    return add_kv(b, OP_COUNTER, key, (int64_t) value);
}

int store_batch_set_meta(struct store_batch *b, const char *key, int64_t value)
{
    return add_kv(b, OP_META, key, value);
}

/* ---- the store ----------------------------------------------------------------------- */

struct store {
    sqlite3 *db;
    sqlite3_stmt *stmt[S_COUNT];
    char *path;
    int lock_fd;
    struct store_options opts;
    pthread_t committer;
    /* the queue: lock guards these */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct store_batch *head, **tail;
    size_t pending_bytes;                /* also read relaxed by store_stats_read */
    int closing;
    int submitted;                       /* store_load is over */
    /* committer thread only */
    int failing;
    char why[512];
    /* totals, relaxed atomics written by the committer */
    struct store_stats stats;
};

const char *store_path(const struct store *st)
{
    return st->path;
}

static void stat_add(uint64_t *p, uint64_t n)
{
    __atomic_fetch_add(p, n, __ATOMIC_RELAXED);
}

void store_stats_read(const struct store *st, struct store_stats *out)
{
    const struct store_stats *s = &st->stats;
    out->commits = __atomic_load_n(&s->commits, __ATOMIC_RELAXED);
    out->commits_failed = __atomic_load_n(&s->commits_failed, __ATOMIC_RELAXED);
    out->batches = __atomic_load_n(&s->batches, __ATOMIC_RELAXED);
    out->batches_failed = __atomic_load_n(&s->batches_failed, __ATOMIC_RELAXED);
    out->ops = __atomic_load_n(&s->ops, __ATOMIC_RELAXED);
    out->pending_bytes = __atomic_load_n(&s->pending_bytes, __ATOMIC_RELAXED);
    out->failing = __atomic_load_n(&s->failing, __ATOMIC_RELAXED);
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Steps a statement that returns no rows it cares about, then resets it; SQLITE_OK or the
 * (extended) error code, with SQLite's message in st->why. */
static int run(struct store *st, sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW)
        rc = SQLITE_OK;
    else
        snprintf(st->why, sizeof st->why, "%s", sqlite3_errmsg(st->db));
    sqlite3_reset(s);
    return rc;
}

static int bind_text(sqlite3_stmt *s, int i, const char *v)
{
    return v != NULL ? sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(s, i);
}

static int bind_job(sqlite3_stmt *s, const struct store_job *j)
{
    int rc = sqlite3_bind_int64(s, 1, (int64_t) j->id);
    if (rc == SQLITE_OK) rc = bind_text(s, 2, j->tenant_id);
    if (rc == SQLITE_OK) rc = bind_text(s, 3, j->name);
    if (rc == SQLITE_OK) rc = bind_text(s, 4, j->command);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 5, j->cpu_m);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 6, j->memory_mb);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 7, j->priority);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 8, j->timeout_s);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 9, j->max_retries);
    if (rc == SQLITE_OK) rc = sqlite3_bind_double(s, 10, j->submitted_at);
    if (rc == SQLITE_OK) rc = bind_text(s, 11, j->state);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(s, 12, j->finished);
    if (rc == SQLITE_OK) rc = bind_text(s, 13, j->error_type);
    if (rc == SQLITE_OK)
        rc = j->has_exit_code ? sqlite3_bind_int(s, 14, j->exit_code) : sqlite3_bind_null(s, 14);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 15, j->attempts);
    if (rc == SQLITE_OK) rc = bind_text(s, 16, j->worker_id);
    if (rc == SQLITE_OK) rc = sqlite3_bind_double(s, 17, j->assigned_at);
    if (rc == SQLITE_OK) rc = sqlite3_bind_double(s, 18, j->started_at);
    if (rc == SQLITE_OK) rc = sqlite3_bind_double(s, 19, j->finished_at);
    if (rc == SQLITE_OK)
        rc = j->output_len > 0
                 ? sqlite3_bind_blob(s, 20, j->output, (int) j->output_len, SQLITE_STATIC)
                 : sqlite3_bind_null(s, 20);
    return rc;
}

static int apply(struct store *st, const struct op *op)
{
    sqlite3_stmt *s;
    int rc;
    switch (op->kind) {
    case OP_PUT_JOB:
        s = st->stmt[S_PUT_JOB];
        rc = bind_job(s, &op->u.job);
        break;
    case OP_DELETE_JOB:
        s = st->stmt[S_DELETE_TRANSITIONS];
        if ((rc = sqlite3_bind_int64(s, 1, (int64_t) op->u.job_id)) != SQLITE_OK ||
            (rc = run(st, s)) != SQLITE_OK)
            break;
        s = st->stmt[S_DELETE_JOB];
        rc = sqlite3_bind_int64(s, 1, (int64_t) op->u.job_id);
        break;
    case OP_TRANSITION:
        s = st->stmt[S_ADD_TRANSITION];
        rc = sqlite3_bind_int64(s, 1, (int64_t) op->u.tr.job_id);
        if (rc == SQLITE_OK) rc = sqlite3_bind_double(s, 2, op->u.tr.at);
        if (rc == SQLITE_OK) rc = bind_text(s, 3, op->u.tr.from_state);
        if (rc == SQLITE_OK) rc = bind_text(s, 4, op->u.tr.to_state);
        if (rc == SQLITE_OK) rc = bind_text(s, 5, op->u.tr.worker_id);
        break;
    case OP_COUNTER:
    case OP_META:
        s = st->stmt[op->kind == OP_COUNTER ? S_SET_COUNTER : S_SET_META];
        rc = bind_text(s, 1, op->u.kv.key);
        if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 2, op->u.kv.value);
        break;
    default:
        abort();
    }
    if (rc != SQLITE_OK) {
        snprintf(st->why, sizeof st->why, "%s", sqlite3_errmsg(st->db));
        return rc;
    }
    return run(st, s);
}

static void stage(struct store *st, enum store_stage which, unsigned batches)
{
    if (st->opts.stage_hook != NULL)
        st->opts.stage_hook(st->opts.stage_ctx, which, batches);
}

/* One transaction over the list; completes and frees every batch. */
static void commit_list(struct store *st, struct store_batch *list)
{
    struct store_commit c = { .status = STORE_OK };
    size_t bytes = 0;
    for (struct store_batch *b = list; b != NULL; b = b->next) {
        c.batches++;
        c.ops += b->nops;
        c.jobs += b->njobs;
        bytes += b->bytes;
    }
    stage(st, STORE_STAGE_TAKEN, c.batches);
    double t0 = hodei_mono();
    int rc = run(st, st->stmt[S_BEGIN]);
    for (struct store_batch *b = list; rc == SQLITE_OK && b != NULL; b = b->next)
        for (const struct op *op = b->first; rc == SQLITE_OK && op != NULL; op = op->next)
            rc = apply(st, op);
    if (rc == SQLITE_OK) {
        stage(st, STORE_STAGE_WRITTEN, c.batches);
        rc = run(st, st->stmt[S_COMMIT]);
    }
    c.seconds = hodei_mono() - t0;
    const char *why = NULL;
    if (rc != SQLITE_OK) {
        /* Some errors roll the transaction back by themselves; whatever is left goes now,
         * so nothing of it is ever half-written. */
        char msg[sizeof st->why];
        snprintf(msg, sizeof msg, "%s", st->why);
        if (!sqlite3_get_autocommit(st->db) && run(st, st->stmt[S_ROLLBACK]) != SQLITE_OK)
            log_error("store %s: rollback failed: %s", st->path, st->why);
        snprintf(st->why, sizeof st->why, "%s", msg);
        why = st->why;
        c.status = (rc & 0xff) == SQLITE_FULL ? STORE_ERR_FULL : STORE_ERR_IO;
        if (!st->failing)
            log_error("store %s: commit failed, changes are refused until one succeeds: %s",
                      st->path, why);
        st->failing = 1;
        stat_add(&st->stats.commits_failed, 1);
        stat_add(&st->stats.batches_failed, c.batches);
    } else {
        stage(st, STORE_STAGE_COMMITTED, c.batches);
        if (st->failing)
            log_info("store %s: commits succeed again", st->path);
        st->failing = 0;
        stat_add(&st->stats.commits, 1);
        stat_add(&st->stats.batches, c.batches);
        stat_add(&st->stats.ops, c.ops);
    }
    __atomic_store_n(&st->stats.failing, (uint64_t) st->failing, __ATOMIC_RELAXED);
    if (st->opts.on_commit != NULL)
        st->opts.on_commit(st->opts.commit_ctx, &c);
    /* No longer pending once its completion runs (the memory goes right after). */
    pthread_mutex_lock(&st->lock);
    st->pending_bytes -= bytes;
    __atomic_store_n(&st->stats.pending_bytes, st->pending_bytes, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&st->lock);
    for (struct store_batch *b = list, *next; b != NULL; b = next) {
        next = b->next;
        if (b->done != NULL)
            b->done(b->done_ctx, c.status, why);
        store_batch_free(b);
    }
}

static void *committer_main(void *arg)
{
    struct store *st = arg;
    pthread_mutex_lock(&st->lock);
    for (;;) {
        while (st->head == NULL && !st->closing)
            pthread_cond_wait(&st->wake, &st->lock);
        if (st->head == NULL)
            break;
        struct store_batch *list = st->head;
        st->head = NULL;
        st->tail = &st->head;
        pthread_mutex_unlock(&st->lock);
        commit_list(st, list);
        pthread_mutex_lock(&st->lock);
    }
    pthread_mutex_unlock(&st->lock);
    return NULL;
}

int store_submit(struct store *st, struct store_batch *b, store_done_fn done, void *ctx)
{
    b->next = NULL;
    b->done = done;
    b->done_ctx = ctx;
    pthread_mutex_lock(&st->lock);
    if (st->pending_bytes > 0 && st->pending_bytes + b->bytes > st->opts.max_pending_bytes) {
        pthread_mutex_unlock(&st->lock);
        errno = EAGAIN;
        return -1;
    }
    st->pending_bytes += b->bytes;
    __atomic_store_n(&st->stats.pending_bytes, st->pending_bytes, __ATOMIC_RELAXED);
    st->submitted = 1;
    *st->tail = b;
    st->tail = &b->next;
    pthread_cond_signal(&st->wake);
    pthread_mutex_unlock(&st->lock);
    return 0;
}

/* ---- open, load, close --------------------------------------------------------------- */

/* The first column of the first row of sql as an integer; SQLITE_OK or the error code. */
static int query_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(s, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    return rc;
}

/* Takes dir/hodei.lock (flock: released by the kernel if the process dies). */
static int take_lock(struct store *st, const char *dir, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/" LOCK_NAME, dir);
    st->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (st->lock_fd < 0) {
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(st->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        char pid[32] = "";
        ssize_t n = pread(st->lock_fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        set_err(err, errlen, "%s: state directory in use by another process%s%s%s", dir,
                *pid ? " (pid " : "", pid, *pid ? ")" : "");
        return -1;
    }
    char line[32];
    int n = snprintf(line, sizeof line, "%ld\n", (long) getpid());
    if (ftruncate(st->lock_fd, 0) < 0 || pwrite(st->lock_fd, line, (size_t) n, 0) != n) {
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* PRAGMA quick_check: every page and every row of the file read once (not index against
 * table); it returns "ok" or one line per problem. */
static int check_database(struct store *st, char *err, size_t errlen)
{
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(st->db, "PRAGMA quick_check(1)", -1, &s, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *r = (const char *) sqlite3_column_text(s, 0);
        if (r != NULL && strcmp(r, "ok") == 0) {
            sqlite3_finalize(s);
            return 0;
        }
        set_err(err, errlen, "%s: damaged database (quick_check: %s)", st->path,
                r != NULL ? r : "no result");
        for (char *p = err; p != NULL && *p; p++)     /* one log line */
            if (*p == '\n')
                *p = ' ';
        sqlite3_finalize(s);
        return -1;
    }
    set_err(err, errlen, "%s: damaged database: %s", st->path, sqlite3_errmsg(st->db));
    sqlite3_finalize(s);
    return -1;
}

static int open_database(struct store *st, char *err, size_t errlen)
{
    /* Created here so that it is not world-readable (commands may carry secrets); SQLite
     * gives the -wal and -shm files the database's mode. */
    int fd = open(st->path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        set_err(err, errlen, "%s: %s", st->path, strerror(errno));
        return -1;
    }
    close(fd);
    int rc = sqlite3_open_v2(st->path, &st->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                             SQLITE_OPEN_EXRESCODE, NULL);
    if (rc != SQLITE_OK) {
        set_err(err, errlen, "%s: %s", st->path,
                st->db != NULL ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
        return -1;
    }
    sqlite3_busy_timeout(st->db, BUSY_TIMEOUT_MS);
    int64_t version = 0, tables = 0;
    const char *what = "reading the schema version";
    if ((rc = query_int(st->db, "PRAGMA user_version", &version)) != SQLITE_OK ||
        (what = "counting tables",
         rc = query_int(st->db, "SELECT count(*) FROM sqlite_schema", &tables)) != SQLITE_OK) {
        set_err(err, errlen, "%s: %s (%s)", st->path, sqlite3_errmsg(st->db), what);
        return -1;
    }
    if (version > STORE_SCHEMA_VERSION) {
        set_err(err, errlen, "%s: schema version %" PRId64 " is newer than this program's (%d):"
                " run the release that wrote it, or restore a backup", st->path, version,
                STORE_SCHEMA_VERSION);
        return -1;
    }
    if (version == 0 && tables > 0) {
        set_err(err, errlen, "%s: not a Hodei state database (tables but no schema version)",
                st->path);
        return -1;
    }
    int64_t wal = 0;
    char *msg = NULL;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &s, NULL) == SQLITE_OK) {
        if (sqlite3_step(s) == SQLITE_ROW)
            wal = sqlite3_stricmp((const char *) sqlite3_column_text(s, 0), "wal") == 0;
        sqlite3_finalize(s);
    }
    if (!wal) {
        set_err(err, errlen, "%s: cannot switch to WAL mode: %s", st->path,
                sqlite3_errmsg(st->db));
        return -1;
    }
    if (sqlite3_exec(st->db, "PRAGMA synchronous = FULL", NULL, NULL, &msg) != SQLITE_OK ||
        (version == 0 && sqlite3_exec(st->db, schema_v1, NULL, NULL, &msg) != SQLITE_OK)) {
        set_err(err, errlen, "%s: %s", st->path, msg != NULL ? msg : "out of memory");
        sqlite3_free(msg);
        return -1;
    }
    if (version > 0 && check_database(st, err, errlen) < 0)
        return -1;
    for (int i = 0; i < S_COUNT; i++)
        if (sqlite3_prepare_v3(st->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->stmt[i],
                               NULL) != SQLITE_OK) {
            set_err(err, errlen, "%s: %s (%s)", st->path, sqlite3_errmsg(st->db), stmt_sql[i]);
            return -1;
        }
    return 0;
}

static void release(struct store *st)
{
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(st->stmt[i]);
    if (st->db != NULL && sqlite3_close(st->db) != SQLITE_OK)
        log_error("store %s: close: %s", st->path, sqlite3_errmsg(st->db));
    if (st->lock_fd >= 0)
        close(st->lock_fd);
    pthread_cond_destroy(&st->wake);
    pthread_mutex_destroy(&st->lock);
    free(st->path);
    free(st);
}

struct store *store_open(const char *dir, const struct store_options *opts, char *err,
                         size_t errlen)
{
    struct store *st = calloc(1, sizeof *st);
    if (st == NULL) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    st->lock_fd = -1;
    st->tail = &st->head;
    pthread_mutex_init(&st->lock, NULL);
    pthread_cond_init(&st->wake, NULL);
    if (opts != NULL)
        st->opts = *opts;
    if (st->opts.max_pending_bytes == 0)
        st->opts.max_pending_bytes = PENDING_DEFAULT;
    size_t n = strlen(dir) + sizeof "/" DB_NAME;
    if ((st->path = malloc(n)) == NULL) {
        set_err(err, errlen, "out of memory");
        release(st);
        return NULL;
    }
    snprintf(st->path, n, "%s/" DB_NAME, dir);
    if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
        set_err(err, errlen, "%s: %s", dir, strerror(errno));
        release(st);
        return NULL;
    }
    if (take_lock(st, dir, err, errlen) < 0 || open_database(st, err, errlen) < 0) {
        release(st);
        return NULL;
    }
    int rc = pthread_create(&st->committer, NULL, committer_main, st);
    if (rc != 0) {
        set_err(err, errlen, "store committer thread: %s", strerror(rc));
        release(st);
        return NULL;
    }
    return st;
}

void store_close(struct store *st)
{
    pthread_mutex_lock(&st->lock);
    st->closing = 1;
    pthread_cond_signal(&st->wake);
    pthread_mutex_unlock(&st->lock);
    pthread_join(st->committer, NULL);
    release(st);
}

/* One row of a job SELECT (JOB_COLUMNS) into j; -1 if a field is out of its range. */
static int read_job(sqlite3_stmt *s, struct store_job *j)
{
    int64_t v[20];
    static const int ints[] = { 0, 4, 5, 6, 7, 8, 11, 14 };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        v[ints[i]] = sqlite3_column_int64(s, ints[i]);
    if (v[0] < 1 || v[4] < 0 || v[4] > UINT32_MAX || v[5] < 0 || v[5] > UINT32_MAX ||
        v[6] < INT32_MIN || v[6] > INT32_MAX || v[7] < 0 || v[7] > UINT32_MAX ||
        v[8] < 0 || v[8] > UINT32_MAX || v[14] < 0 || v[14] > UINT32_MAX)
        return -1;
    *j = (struct store_job) {
        .id = (uint64_t) v[0],
        .tenant_id = (const char *) sqlite3_column_text(s, 1),
        .name = (const char *) sqlite3_column_text(s, 2),
        .command = (const char *) sqlite3_column_text(s, 3),
        .cpu_m = (uint32_t) v[4], .memory_mb = (uint32_t) v[5], .priority = (int32_t) v[6],
        .timeout_s = (uint32_t) v[7], .max_retries = (uint32_t) v[8],
        .submitted_at = sqlite3_column_double(s, 9),
        .state = (const char *) sqlite3_column_text(s, 10),
        .finished = v[11] != 0,
        .error_type = (const char *) sqlite3_column_text(s, 12),
        .has_exit_code = sqlite3_column_type(s, 13) != SQLITE_NULL,
        .exit_code = sqlite3_column_int(s, 13),
        .attempts = (uint32_t) v[14],
        .worker_id = (const char *) sqlite3_column_text(s, 15),
        .assigned_at = sqlite3_column_double(s, 16),
        .started_at = sqlite3_column_double(s, 17),
        .finished_at = sqlite3_column_double(s, 18),
        .output = sqlite3_column_blob(s, 19),
    };
    j->output_len = (size_t) sqlite3_column_bytes(s, 19);
    if (j->tenant_id == NULL || j->name == NULL || j->command == NULL || j->state == NULL ||
        j->output_len > STORE_OUTPUT_MAX)
        return -1;
    if (j->output_len == 0)
        j->output = NULL;
    return 0;
}

enum load_what { L_META, L_COUNTERS, L_UNFINISHED, L_FINISHED, L_COUNT };

static const char *const load_sql[L_COUNT] = {
    [L_META]       = "SELECT key, value FROM meta",
    [L_COUNTERS]   = "SELECT key, value FROM counters",
    [L_UNFINISHED] = "SELECT " JOB_COLUMNS " FROM jobs WHERE NOT finished ORDER BY id",
    [L_FINISHED]   = "SELECT " JOB_COLUMNS " FROM jobs WHERE finished ORDER BY finished_at, id",
};

int store_load(struct store *st, const struct store_load_cb *cb, char *err, size_t errlen)
{
    pthread_mutex_lock(&st->lock);
    int submitted = st->submitted;
    pthread_mutex_unlock(&st->lock);
    if (submitted) {        /* the connection belongs to the committer now */
        set_err(err, errlen, "store_load after store_submit");
        return -1;
    }
    int ret = 0;
    for (int w = 0; w < L_COUNT && ret == 0; w++) {
        sqlite3_stmt *s;
        if (sqlite3_prepare_v2(st->db, load_sql[w], -1, &s, NULL) != SQLITE_OK) {
            set_err(err, errlen, "%s: %s", st->path, sqlite3_errmsg(st->db));
            return -1;
        }
        int rc = SQLITE_DONE;
        while (ret == 0 && (rc = sqlite3_step(s)) == SQLITE_ROW) {
            if (w == L_META || w == L_COUNTERS) {
                const char *key = (const char *) sqlite3_column_text(s, 0);
                int64_t value = sqlite3_column_int64(s, 1);
                if (key == NULL) {
                    set_err(err, errlen, "%s: damaged row: a %s key is NULL", st->path,
                            w == L_META ? "meta" : "counter");
                    ret = -1;
                } else if (w == L_META && cb->meta != NULL) {
                    ret = cb->meta(cb->ctx, key, value);
                } else if (w == L_COUNTERS && cb->counter != NULL) {
                    ret = cb->counter(cb->ctx, key, (uint64_t) value);
                }
                continue;
            }
            struct store_job j;
            if (read_job(s, &j) < 0) {
                set_err(err, errlen, "%s: damaged row: job %lld has a field out of range",
                        st->path, (long long) sqlite3_column_int64(s, 0));
                ret = -1;
            } else if (cb->job != NULL) {
                ret = cb->job(cb->ctx, &j);
            }
        }
        if (ret == 0 && rc != SQLITE_DONE) {
            set_err(err, errlen, "%s: %s", st->path, sqlite3_errmsg(st->db));
            ret = -1;
        }
        sqlite3_finalize(s);
    }
    return ret;
}
