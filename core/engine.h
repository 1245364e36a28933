/*
 * engine.h — the scheduler thread and the one way into the scheduler's state.
 *
 * API threads hand a command to the engine through a wait-free queue and wait for its result.
 * Commands run one at a time under state_lock, in queue order, followed by a placement round:
 * by the engine thread, or — when the engine is idle — by the submitting thread itself (flat
 * combining: it runs everything queued, its own command included), which saves two thread
 * switches per request.  The engine thread also runs health checks, leases and job timeouts.
 * Every state change goes out on the bus.  Readers elsewhere use RCU (scheduler.h) and never
 * take state_lock.
 *
 * A result is data, not an HTTP answer: what happened (sched_rc) and the resource as the
 * command left it (a JSON document of the job, worker or list, built where the state is
 * consistent).  api.c turns it into a status and a body.  A batch runs in three steps:
 *
 *   1. execute every queued command (results filled, nobody told yet);
 *   2. the placement round (and, on the engine thread, health, leases and timeouts);
 *   3. complete: wake every caller of the batch.
 *
 * A durable store commits the batch's changes between 2 and 3 (one commit for the whole batch),
 * so that no caller learns a result before it is committed.
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

enum cmd_type {
    CMD_SUBMIT, CMD_CANCEL, CMD_START, CMD_SUCCEED, CMD_FAIL, CMD_REGISTER, CMD_HEARTBEAT,
    CMD_LIST_JOBS, CMD_LIST_WORKERS, CMD_ASSIGNMENTS, CMD_OUTPUT
};

struct cmd {
    struct cds_wfcq_node node;
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
    /* result */
    enum sched_rc rc;
    json_t *object;       /* SCHED_OK: the job, worker or list after the command */
    char detail[160];     /* SCHED_CONFLICT: the state that refused it */
    struct {              /* CMD_OUTPUT, SCHED_OK */
        int      reported;     /* an attempt reported its output */
        int      kept;         /* ... and its tail is still kept */
        int      state;        /* enum job_state */
        uint64_t total;
        unsigned char *tail;   /* malloc'd copy, the caller frees it */
        size_t   len;
    } output;
    sem_t done;
};

struct engine {
    struct sched sched;
    struct bus *bus;
    pthread_t thread;
    struct cds_wfcq_head cmd_head;
    struct cds_wfcq_tail cmd_tail;
    pthread_mutex_t state_lock;      /* held while the scheduler's state changes */
    pthread_mutex_t lock;            /* guards pending/stopping; wake signals the thread */
    pthread_cond_t wake;
    int pending, stopping;
    /* called under state_lock when a job was placed on worker_id (long polls wait for it);
     * must not block */
    void (*on_assign)(void *ctx, const char *worker_id);
    void *on_assign_ctx;
};

int  engine_start(struct engine *e, const struct sched_config *cfg, struct bus *bus);
/* Runs cmd on the engine and waits for its result.  Free cmd->object (json_decref) and
 * cmd->output.tail after use. */
void engine_call(struct engine *e, struct cmd *cmd);
/* Finishes the commands in flight and stops the thread. */
void engine_stop(struct engine *e);
void engine_destroy(struct engine *e);

#endif
