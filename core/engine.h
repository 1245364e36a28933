/*
 * engine.h — the scheduler thread and the one way into the scheduler's state.
 *
 * API threads hand a command to the engine through a wait-free queue and are told its result
 * by a callback (engine_submit), or wait for it (engine_call).  The engine thread alone
 * touches the scheduler: it takes every command queued and runs them as one batch, in four
 * steps:
 *
 *   1. reads (lists, assignments, outputs) and heartbeats: they see the committed state, so
 *      their callers are told at once;
 *   2. every other command, in queue order (results filled, nobody told yet);
 *   3. health, leases and timeouts (at most every ENGINE_TICK_S, or when a deadline is due),
 *      the placement round and the pruning of finished jobs, all decided in memory;
 *   4. the batch's change set (scheduler.h) goes to the store as ONE batch (persist.h), and
 *      the engine waits for its commit, which group commit shares with nothing else (one
 *      batch in flight, so a change set is never built on an uncommitted one).  Committed:
 *      sched_commit() shows it to readers, the batch's events go on the bus (and long polls
 *      wake), and the callers of step 2 are told.  Refused (disk full, I/O error):
 *      sched_rollback() puts the state back as committed, the events are dropped, and every
 *      caller of step 2 gets SCHED_UNAVAILABLE (503): nothing it asked for happened.
 *
 * So no answer, assignment or event leaves the daemon before what it says is durable, and
 * the placement loop never waits for the disk itself: commands arriving during a commit
 * queue up and form the next batch, which is what makes group commit effective.
 *
 * A result is data, not an HTTP answer: what happened (sched_rc) and the resource as the
 * command left it (a JSON document of the job, worker or list).  api.c turns it into a status
 * and a body.
 */
#ifndef HODEI_CORE_ENGINE_H
#define HODEI_CORE_ENGINE_H

#include <jansson.h>
#include <pthread.h>
#include <semaphore.h>
#include <urcu/wfcqueue.h>

#include "bus.h"
#include "request.h"
#include "scheduler.h"
#include "store.h"

enum cmd_type {
    CMD_SUBMIT, CMD_CANCEL, CMD_START, CMD_SUCCEED, CMD_FAIL, CMD_REGISTER, CMD_HEARTBEAT,
    CMD_LIST_JOBS, CMD_LIST_WORKERS, CMD_ASSIGNMENTS, CMD_OUTPUT
};

struct cmd {
    struct cds_wfcq_node node;
    struct cmd *next;                  /* in its batch (engine thread) */
    enum cmd_type type;
    /* input */
    uint64_t job_id;
    char worker_id[HODEI_ID_MAX + 1];
    /* "" : any; else the command sees only this tenant's jobs (another's is SCHED_NOT_FOUND) */
    char tenant_scope[HODEI_ID_MAX + 1];
    struct job_spec job;               /* CMD_SUBMIT */
    struct worker_spec worker;         /* CMD_REGISTER */
    struct req_report report;          /* CMD_START/SUCCEED/FAIL */
    double cpu_usage_percent, memory_usage_mb;   /* CMD_HEARTBEAT */
    struct {                           /* CMD_LIST_JOBS */
        char tenant_id[HODEI_ID_MAX + 1];   /* "" : any */
        int state;                          /* -1 : any */
        unsigned limit;
        uint64_t after;
    } list;
    /* how the caller is told: done(cmd) on the engine thread, or (NULL) cmd->done_sem */
    void (*done)(struct cmd *c);
    void *ctx;
    /* result */
    enum sched_rc rc;
    json_t *object;       /* SCHED_OK: the job, worker or list after the command */
    char detail[160];     /* SCHED_CONFLICT: the state that refused it; SCHED_UNAVAILABLE: why
                             the store refused the change */
    struct {              /* CMD_OUTPUT, SCHED_OK */
        int      reported;     /* an attempt reported its output */
        int      kept;         /* ... and its tail is still kept */
        int      state;        /* enum job_state */
        uint64_t total;
        unsigned char *tail;   /* malloc'd copy, the caller frees it */
        size_t   len;
    } output;
    sem_t done_sem;
};

/* One event of the open change set, published when it commits. */
struct engine_event {
    enum hodei_event_type type;
    char *tenant;                    /* the job's tenant, NULL: none */
    char *payload;                   /* SSE data, NULL: no subscriber wanted one */
    char worker_id[HODEI_ID_MAX + 1];   /* job_assigned: where (long polls wake) */
};

struct engine {
    struct sched sched;
    struct bus *bus;
    struct store *store;             /* NULL: nothing is kept */
    pthread_t thread;
    struct cds_wfcq_head cmd_head;
    struct cds_wfcq_tail cmd_tail;
    pthread_mutex_t lock;            /* guards pending/stopping; wake signals the thread */
    pthread_cond_t wake;
    int pending, stopping;
    double next_tick;                /* monotonic s */
    /* the change set's events */
    struct engine_event *events;
    size_t nevents, events_cap;
    /* the commit in flight: written by the store's thread before it posts committed */
    sem_t committed;
    enum store_status commit_status;
    char commit_why[256];
    double commit_seconds;
    /* counted outside the change set since start, on top of what the store held */
    struct sched_sampled base;
    uint64_t refused;                /* commands answered SCHED_UNAVAILABLE while failing */
    int failing;
    /* called on the engine thread when a job placed on worker_id committed (long polls wait
     * for it); must not block */
    void (*on_assign)(void *ctx, const char *worker_id);
    void *on_assign_ctx;
};

/* Opens the store in state_dir (NULL: nothing is kept), loads what it keeps, commits what the
 * restart changed, and starts the thread.  0, or -1 after logging why (a store that cannot be
 * opened, damaged, or of a newer schema). */
int  engine_start(struct engine *e, const struct sched_config *cfg, struct bus *bus,
                  const char *state_dir);
/* Queues cmd; cmd->done(cmd) runs on the engine thread once its result is final (after its
 * commit).  cmd must stay valid until then; the callback must not block. */
void engine_submit(struct engine *e, struct cmd *cmd);
/* Runs cmd on the engine and waits for its result.  Free cmd->object (json_decref) and
 * cmd->output.tail after use. */
void engine_call(struct engine *e, struct cmd *cmd);
/* Finishes the commands in flight and stops the thread. */
void engine_stop(struct engine *e);
/* Closes the store and frees the state: no reader may remain. */
void engine_destroy(struct engine *e);

#endif
