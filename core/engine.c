/* engine.c — the scheduler thread and its command queue (see engine.h). */
#include "engine.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "json.h"
#include "log.h"
#include "hodei_segment.h"

/* The longest the engine sleeps: health checks run at least this often. */
#define ENGINE_TICK_S 0.05

double engine_mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

static void deadline_after(struct timespec *ts, double seconds)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    long ns = ts->tv_nsec + (long) (seconds * 1e9);
    ts->tv_sec += ns / 1000000000;
    ts->tv_nsec = ns % 1000000000;
}

static void on_event(void *ctx, enum hodei_event_type type, const struct job *j,
                     const struct worker *w)
{
    struct engine *e = ctx;
    char *payload = NULL;
    if (bus_wants_payload(e->bus))
        payload = event_json(type, hodei_now(), j, w);
    bus_publish(e->bus, type, payload);
}

static json_t *rc_error(enum sched_rc rc, int *status, const char *what)
{
    char detail[160];
    switch (rc) {
    case SCHED_NOT_FOUND:
        *status = 404;
        snprintf(detail, sizeof detail, "no such %s", what);
        return error_json("not_found", detail);
    case SCHED_CONFLICT:
        *status = 409;
        snprintf(detail, sizeof detail, "the %s is not in a state that allows this", what);
        return error_json("conflict", detail);
    case SCHED_FULL:
    default:
        *status = 429;
        return error_json("limit_reached", what);
    }
}

static void reply_job(struct cmd *c, enum sched_rc rc, const struct job *j, int ok_status)
{
    if (rc == SCHED_OK) {
        c->status = ok_status;
        c->body = job_json(j, &j->st);
    } else if (rc == SCHED_CONFLICT && j) {
        char detail[160];
        snprintf(detail, sizeof detail, "job %llu is %s%s%s",
                 (unsigned long long) j->id, job_state_names[j->st.state],
                 j->st.worker_id[0] ? " on worker " : "", j->st.worker_id);
        c->status = 409;
        c->body = error_json("conflict", detail);
    } else {
        c->body = rc_error(rc, &c->status, "job");
    }
}

static void list_jobs(struct sched *s, struct cmd *c)
{
    json_t *jobs = json_array();
    struct job *j, *last = NULL;
    unsigned n = 0;
    int more = 0;
    cds_list_for_each_entry(j, &s->all_jobs, order_link) {
        if (j->id <= c->list.after)
            continue;
        if (c->list.tenant_id[0] && strcmp(j->tenant_id, c->list.tenant_id) != 0)
            continue;
        if (c->list.state >= 0 && j->st.state != c->list.state)
            continue;
        if (n == c->list.limit) {
            more = 1;
            break;
        }
        json_array_append_new(jobs, job_json(j, &j->st));
        last = j;
        n++;
    }
    char next[24];
    if (more)
        snprintf(next, sizeof next, "%llu", (unsigned long long) last->id);
    c->status = 200;
    c->body = json_pack("{s:o, s:o}", "jobs", jobs, "next", more ? json_string(next) : json_null());
}

static void list_workers(struct sched *s, struct cmd *c)
{
    json_t *workers = json_array();
    struct cds_lfht_iter it;
    struct worker *w;
    rcu_read_lock();
    cds_lfht_for_each_entry(s->workers, &it, w, node)
        json_array_append_new(workers, worker_json(w));
    rcu_read_unlock();
    c->status = 200;
    c->body = json_pack("{s:o}", "workers", workers);
}

static void assignments(struct sched *s, struct cmd *c)
{
    struct worker *w = sched_worker(s, c->worker_id);
    if (!w) {
        c->body = rc_error(SCHED_NOT_FOUND, &c->status, "worker");
        return;
    }
    json_t *jobs = json_array();
    struct job *j;
    cds_list_for_each_entry(j, &w->jobs, worker_link)
        if (j->st.state == JOB_ASSIGNED)
            json_array_append_new(jobs, job_json(j, &j->st));
    c->status = 200;
    c->body = json_pack("{s:o}", "jobs", jobs);
}

static void execute(struct engine *e, struct cmd *c, double now)
{
    struct sched *s = &e->sched;
    struct job *j = NULL;
    struct worker *w = NULL;
    enum sched_rc rc;
    switch (c->type) {
    case CMD_SUBMIT:
        rc = sched_submit(s, &c->job, now, &j);
        if (rc == SCHED_FULL) {
            c->status = 429;
            c->body = error_json("queue_full", "the queue holds its maximum of unfinished jobs");
        } else {
            reply_job(c, rc, j, 201);
        }
        break;
    case CMD_CANCEL:
        rc = sched_cancel(s, c->job_id, now, &j);
        reply_job(c, rc, j, 200);
        break;
    case CMD_START:
        rc = sched_start(s, c->job_id, c->report.worker_id, now, &j);
        reply_job(c, rc, j, 200);
        break;
    case CMD_SUCCEED:
        rc = sched_succeed(s, c->job_id, c->report.worker_id, c->report.exit_code, now, &j);
        reply_job(c, rc, j, 200);
        break;
    case CMD_FAIL:
        rc = sched_fail(s, c->job_id, c->report.worker_id, c->report.error_type,
                        c->report.has_exit_code, c->report.exit_code, now, &j);
        reply_job(c, rc, j, 200);
        break;
    case CMD_REGISTER:
        rc = sched_register(s, &c->worker, now, &w);
        if (rc == SCHED_OK) {
            c->status = 201;
            c->body = worker_json(w);
        } else if (rc == SCHED_CONFLICT) {
            c->status = 409;
            c->body = error_json("duplicate_worker", "a worker with this id is registered");
        } else {
            c->status = 429;
            c->body = error_json("worker_cap", "the maximum number of workers is registered");
        }
        break;
    case CMD_HEARTBEAT:
        rc = sched_heartbeat(s, c->worker_id, c->cpu_usage_percent, c->memory_usage_mb, now, &w);
        if (rc == SCHED_OK) {
            c->status = 200;
            c->body = worker_json(w);
        } else {
            c->body = rc_error(rc, &c->status, "worker");
        }
        break;
    case CMD_LIST_JOBS:
        list_jobs(s, c);
        break;
    case CMD_LIST_WORKERS:
        list_workers(s, c);
        break;
    case CMD_ASSIGNMENTS:
        assignments(s, c);
        break;
    }
}

static void wake_long_polls(struct engine *e)
{
    pthread_mutex_lock(&e->assign_lock);
    e->assign_gen++;
    pthread_cond_broadcast(&e->assign_cond);
    pthread_mutex_unlock(&e->assign_lock);
}

/* Runs every queued command, then a placement round; the caller holds state_lock. */
static void run_batch(struct engine *e, int tick)
{
    struct sched *s = &e->sched;
    uint64_t placed = s->m.decisions[HODEI_DECISION_ASSIGNED];
    struct cds_wfcq_head batch_head;
    struct cds_wfcq_tail batch_tail;
    cds_wfcq_init(&batch_head, &batch_tail);
    __cds_wfcq_splice_blocking(&batch_head, &batch_tail, &e->cmd_head, &e->cmd_tail);
    struct cds_wfcq_node *node, *next;
    double now = engine_mono_now();
    rcu_read_lock();
    __cds_wfcq_for_each_blocking_safe(&batch_head, &batch_tail, node, next) {
        struct cmd *c = caa_container_of(node, struct cmd, node);
        execute(e, c, now);
        sem_post(&c->done);
    }
    now = engine_mono_now();
    if (tick)
        sched_tick(s, now);
    sched_round(s, now);
    rcu_read_unlock();
    if (s->m.decisions[HODEI_DECISION_ASSIGNED] != placed)
        wake_long_polls(e);
}

static void *engine_main(void *arg)
{
    struct engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->lock);
        if (!e->pending && !e->stopping) {
            struct timespec until;
            pthread_mutex_lock(&e->state_lock);
            double wait = sched_next_deadline(&e->sched, engine_mono_now(), ENGINE_TICK_S);
            pthread_mutex_unlock(&e->state_lock);
            deadline_after(&until, wait);
            pthread_cond_timedwait(&e->wake, &e->lock, &until);
        }
        e->pending = 0;
        int stopping = e->stopping;
        pthread_mutex_unlock(&e->lock);

        pthread_mutex_lock(&e->state_lock);
        run_batch(e, 1);
        pthread_mutex_unlock(&e->state_lock);
        if (stopping && cds_wfcq_empty(&e->cmd_head, &e->cmd_tail))
            break;
    }
    return NULL;
}

int engine_start(struct engine *e, const struct sched_config *cfg, struct bus *bus)
{
    memset(e, 0, sizeof *e);
    e->bus = bus;
    if (sched_init(&e->sched, cfg, engine_mono_now(), hodei_now(), on_event, e) < 0)
        return -1;
    cds_wfcq_init(&e->cmd_head, &e->cmd_tail);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&e->lock, NULL);
    pthread_mutex_init(&e->state_lock, NULL);
    pthread_cond_init(&e->wake, &attr);
    pthread_mutex_init(&e->assign_lock, NULL);
    pthread_cond_init(&e->assign_cond, &attr);
    pthread_condattr_destroy(&attr);
    int err = pthread_create(&e->thread, NULL, engine_main, e);
    if (err) {
        log_error("cannot start the scheduler thread: %s", strerror(err));
        return -1;
    }
    return 0;
}

void engine_call(struct engine *e, struct cmd *c)
{
    sem_init(&c->done, 0, 0);
    cds_wfcq_node_init(&c->node);
    cds_wfcq_enqueue(&e->cmd_head, &e->cmd_tail, &c->node);
    if (pthread_mutex_trylock(&e->state_lock) == 0) {
        /* the engine is idle: run the queue here rather than pay two thread switches */
        run_batch(e, 0);
        pthread_mutex_unlock(&e->state_lock);
    } else {
        pthread_mutex_lock(&e->lock);
        e->pending = 1;
        pthread_cond_signal(&e->wake);
        pthread_mutex_unlock(&e->lock);
    }
    while (sem_wait(&c->done) < 0 && errno == EINTR)
        ;
    sem_destroy(&c->done);
}

uint64_t engine_assign_gen(struct engine *e)
{
    pthread_mutex_lock(&e->assign_lock);
    uint64_t gen = e->assign_gen;
    pthread_mutex_unlock(&e->assign_lock);
    return gen;
}

int engine_wait_assignment(struct engine *e, uint64_t *gen, int timeout_ms)
{
    struct timespec until;
    deadline_after(&until, timeout_ms / 1000.0);
    int rc = 0;
    pthread_mutex_lock(&e->assign_lock);
    while (e->assign_gen == *gen && !e->closing && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&e->assign_cond, &e->assign_lock, &until);
    int moved = e->assign_gen != *gen;
    *gen = e->assign_gen;
    pthread_mutex_unlock(&e->assign_lock);
    return moved;
}

void engine_close(struct engine *e)
{
    pthread_mutex_lock(&e->assign_lock);
    e->closing = 1;
    pthread_cond_broadcast(&e->assign_cond);
    pthread_mutex_unlock(&e->assign_lock);
}

void engine_stop(struct engine *e)
{
    pthread_mutex_lock(&e->lock);
    e->stopping = 1;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->lock);
    pthread_join(e->thread, NULL);
}

void engine_destroy(struct engine *e)
{
    sched_destroy(&e->sched);
    pthread_cond_destroy(&e->wake);
    pthread_mutex_destroy(&e->lock);
    pthread_mutex_destroy(&e->state_lock);
    pthread_cond_destroy(&e->assign_cond);
    pthread_mutex_destroy(&e->assign_lock);
}
