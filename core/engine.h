/*
 * engine.h — the scheduler thread and the one way into the scheduler's state.
 *
 * API threads hand a command to the engine through a wait-free queue and wait for the reply
 * (HTTP status and JSON body, built where the state is consistent).  Commands run one at a
 * time under state_lock, in queue order, followed by a placement round: by the engine thread,
 * or — when the engine is idle — by the submitting thread itself (flat combining: it runs
 * everything queued, its own command included), which saves two thread switches per request.
 * The engine thread also runs health checks and job timeouts.  Every state change goes out on
 * the bus.  Readers elsewhere use RCU (scheduler.h) and never take state_lock.
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
    CMD_LIST_JOBS, CMD_LIST_WORKERS, CMD_ASSIGNMENTS
};

struct cmd {
    struct cds_wfcq_node node;
    enum cmd_type type;
    /* input */
    uint64_t job_id;
    char worker_id[HODEI_ID_MAX + 1];
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
    /* output */
    int status;
    json_t *body;
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
    /* assignment long-polls wait here for assign_gen to move */
    pthread_mutex_t assign_lock;
    pthread_cond_t assign_cond;
    uint64_t assign_gen;
    int closing;
};

int  engine_start(struct engine *e, const struct sched_config *cfg, struct bus *bus);
/* Runs cmd on the engine thread and waits for its status and body. */
void engine_call(struct engine *e, struct cmd *cmd);
/* Blocks until an assignment happens, timeout_ms passes or engine_close(); returns 1 if one
 * may have happened since *gen (updated). */
int  engine_wait_assignment(struct engine *e, uint64_t *gen, int timeout_ms);
uint64_t engine_assign_gen(struct engine *e);
/* Wakes every long-poll for good (before the HTTP server stops). */
void engine_close(struct engine *e);
/* Finishes the commands in flight and stops the thread. */
void engine_stop(struct engine *e);
void engine_destroy(struct engine *e);

double engine_mono_now(void);

#endif
