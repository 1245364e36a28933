/*
 * store.h — the durable state store: jobs, their transitions, counters and a little metadata,
 * written by one committer thread with group commit (DESIGN §10).
 *
 * The interface knows nothing of the scheduler or of SQL: records are the store's own plain
 * structs, and a backend is whatever implements the functions below.  store_sqlite.c is the
 * embedded one (one database file in the state directory, WAL, synchronous=FULL).
 *
 * Writing.  A caller builds a batch (puts and deletes), hands it over with store_submit() and
 * a completion, and goes on: submitting never waits for the disk.  The committer thread takes
 * every batch waiting, runs them in ONE transaction with one fsync, then calls each batch's
 * completion, in submission order, with the transaction's result.  So a batch is all or
 * nothing, and every caller waiting at the same moment rides the same fsync.  Every put
 * carries absolute values (a whole job row, a counter's total), so a batch applied twice, or
 * a later batch after a failed one, leaves a consistent row.
 *
 * Failing.  When a transaction fails (disk full, I/O error, ...) it is rolled back whole and
 * every batch in it completes with that status: nothing of it is stored.  (One exception, as
 * in any database: when the disk fails the final fsync itself, the transaction may still be
 * found after a restart — committed but never told, like a crash right after COMMIT.  What a
 * completion reported as committed is never lost.)  The store logs once when commits start
 * failing and once when they succeed again; it keeps taking batches, and the next
 * transaction is tried afresh, so it recovers by itself when the disk does.
 *
 * Threads:
 *
 *   function                     | may be called from            | waits for
 *   -----------------------------+-------------------------------+---------------------------
 *   store_open, store_close      | one thread, once each         | the disk (open: the check)
 *   store_load                   | the opener, before the first  | the disk
 *                                | store_submit                  |
 *   store_batch_* (one batch)    | one thread at a time          | nothing (allocates)
 *   store_submit                 | any thread, concurrently,     | a mutex held for a list
 *                                | completions included          | append: never the disk
 *   store_stats_read             | any thread                    | nothing (relaxed loads)
 *
 * Completions and the on_commit/stage hooks run on the committer thread.  A completion runs
 * exactly once for every batch store_submit accepted, after its transaction committed or
 * rolled back and before the next transaction begins.  It must be short (the next commit
 * waits for it), must not call store_close, and may call store_batch_* and store_submit (that
 * batch goes into a later transaction).  Completions run in submission order across
 * transactions too.  Memory order: what a caller wrote before store_submit happens-before
 * the committer reads the batch (the queue's mutex); a completion that wakes another thread
 * must publish the result with its own synchronization (a semaphore, a mutex).
 */
#ifndef HODEI_CORE_STORE_H
#define HODEI_CORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_SCHEMA_VERSION 2          /* PRAGMA user_version of the SQLite file */
#define STORE_TEXT_MAX       65536      /* longest string field, bytes */
#define STORE_KEY_MAX        1024       /* longest counter or meta key, bytes */
#define STORE_OUTPUT_MAX     65536      /* largest job output blob, bytes */
#define STORE_BLOB_MAX       65536      /* largest blob value, bytes */

/* A job: every field the API shows.  Strings are NUL-terminated.  On a put they are copied;
 * in a load callback they point into the store and live until the callback returns. */
struct store_job {
    uint64_t    id;                     /* 1 .. INT64_MAX */
    const char *tenant_id;
    const char *name;
    const char *command;
    uint32_t    cpu_m, memory_mb;
    int32_t     priority;
    uint32_t    timeout_s, max_retries;
    double      submitted_at;           /* unix seconds */
    const char *state;                  /* the API's name ("queued", ...), kept as given */
    bool        finished;               /* a terminal state: decides where store_load puts it */
    const char *error_type;             /* the API's name, NULL: none */
    bool        has_exit_code;
    int32_t     exit_code;
    uint32_t    attempts;
    const char *worker_id;              /* NULL: none */
    double      assigned_at, started_at, finished_at;   /* unix seconds, 0: not yet */
    const void *output;                 /* optional, output_len <= STORE_OUTPUT_MAX */
    size_t      output_len;
    int64_t     output_bytes;           /* how much the last reported attempt wrote, -1: none */
    bool        keep_output;            /* put: leave the stored output as it is (output is
                                           ignored); load: always false */
};

/* One state change of a job, appended; deleted with its job. */
struct store_transition {
    uint64_t    job_id;
    double      at;                     /* unix seconds */
    const char *from_state;             /* NULL: none (the submission) */
    const char *to_state;
    const char *worker_id;              /* NULL: none */
};

enum store_status {
    STORE_OK = 0,
    STORE_ERR_FULL,                     /* out of space: disk full, size limit */
    STORE_ERR_IO,                       /* any other failure to commit */
};

/* Called once per accepted batch; why is NULL on STORE_OK, else the backend's message
 * (valid during the call). */
typedef void (*store_done_fn)(void *ctx, enum store_status status, const char *why);

/* One transaction, as the committer reports it: feeds a commit-latency histogram, an error
 * counter and jobs per commit. */
struct store_commit {
    double   seconds;                   /* BEGIN .. COMMIT returned, fsync included */
    unsigned batches, ops, jobs;        /* jobs: job puts */
    enum store_status status;
};
typedef void (*store_commit_fn)(void *ctx, const struct store_commit *c);

/* Fixed points of every transaction, for tests that must force an interleaving: a hook may
 * block the committer (batches then queue up behind it) or kill the process there. */
enum store_stage {
    STORE_STAGE_TAKEN,                  /* batches taken from the queue, nothing written yet */
    STORE_STAGE_WRITTEN,                /* every operation written, COMMIT not yet issued */
    STORE_STAGE_COMMITTED,              /* COMMIT returned (durable), no completion run yet */
};
typedef void (*store_stage_fn)(void *ctx, enum store_stage stage, unsigned batches);

struct store_options {
    size_t          max_pending_bytes;  /* batches accepted but not completed; 0: 64 MiB */
    store_commit_fn on_commit;          /* may be NULL */
    void           *commit_ctx;
    store_stage_fn  stage_hook;         /* NULL outside tests */
    void           *stage_ctx;
};

/* Totals since store_open, each a relaxed atomic load (no snapshot across fields). */
struct store_stats {
    uint64_t commits, commits_failed;
    uint64_t batches, batches_failed;
    uint64_t ops;                       /* operations committed */
    uint64_t pending_bytes;
    uint64_t failing;                   /* 1 while the last transaction failed */
};

struct store;
struct store_batch;

/* Opens (or creates) the store in dir (created if missing, one level).  The SQLite backend
 * keeps dir/hodei.db with its -wal/-shm files and holds dir/hodei.lock for its lifetime, so
 * a second daemon on the same directory is refused.  A database written by a newer schema,
 * a file that is not a Hodei database, or a damaged one (PRAGMA quick_check) is refused:
 * NULL, with the path and the reason in err.  An older schema is brought up to this one.
 * opts may be NULL. */
struct store *store_open(const char *dir, const struct store_options *opts,
                         char *err, size_t errlen);

/* Commits every batch accepted so far (their completions run), stops the committer, closes.
 * No store_submit may run concurrently or later, except from completions. */
void store_close(struct store *st);

/* What a restart needs, through callbacks, in this order: every meta key, every counter, every
 * blob, unfinished jobs by id (so queued order is kept), then finished jobs by finished_at, id
 * (oldest first, the order they are pruned in).  A callback may be NULL; one that returns
 * non-zero stops the load, which returns that value.  Returns 0, a callback's value, or -1
 * with the reason in err (a damaged row or page). */
struct store_load_cb {
    int  (*meta)(void *ctx, const char *key, int64_t value);
    int  (*counter)(void *ctx, const char *key, uint64_t value);
    int  (*blob)(void *ctx, const char *key, const void *data, size_t len);
    int  (*job)(void *ctx, const struct store_job *job);
    void  *ctx;
};
int store_load(struct store *st, const struct store_load_cb *cb, char *err, size_t errlen);

/* Batches.  Each add copies its arguments and returns 0, or -1 with errno (EINVAL: a missing
 * or too long field, an id out of range; EMSGSIZE: output too large; ENOMEM), and then leaves
 * the batch as it was.  Operations apply in the order they were added. */
struct store_batch *store_batch_new(void);
void store_batch_free(struct store_batch *b);             /* one never accepted */
int  store_batch_put_job(struct store_batch *b, const struct store_job *job);      /* upsert */
int  store_batch_delete_job(struct store_batch *b, uint64_t id);    /* and its transitions */
int  store_batch_add_transition(struct store_batch *b, const struct store_transition *t);
int  store_batch_set_counter(struct store_batch *b, const char *key, uint64_t value);
int  store_batch_set_meta(struct store_batch *b, const char *key, int64_t value);
int  store_batch_set_blob(struct store_batch *b, const char *key, const void *data, size_t len);
unsigned store_batch_ops(const struct store_batch *b);

/* Hands b to the committer: 0, and done(ctx, ...) (unless NULL) will run exactly once on the
 * committer thread; the store owns b.  -1 with errno EAGAIN when max_pending_bytes are
 * already waiting (the disk is slower than the callers): done never runs and b is still the
 * caller's. */
int  store_submit(struct store *st, struct store_batch *b, store_done_fn done, void *ctx);

void store_stats_read(const struct store *st, struct store_stats *out);
/* The database file, for messages. */
const char *store_path(const struct store *st);

#endif
