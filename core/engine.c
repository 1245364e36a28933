/* engine.c — the scheduler thread and its command queue (see engine.h). */
#include "engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "hodei_clock.h"
#include "json.h"
#include "log.h"

/* The longest the engine sleeps: health checks run at least this often. */
#define ENGINE_TICK_S 0.05

static void on_event(void *ctx, enum hodei_event_type type, const struct job *j,
                     const struct worker *w)
{
    struct engine *e = ctx;
    char *payload = NULL;
    if (bus_wants_payload(e->bus))
        payload = event_json(type, hodei_now(), j, w);
    bus_publish(e->bus, type, j ? j->tenant_id : NULL, payload);
    if (type == HODEI_EV_JOB_ASSIGNED && e->on_assign)
        e->on_assign(e->on_assign_ctx, w->id);
}

/* The job for a command scoped to tenant_scope: NULL when absent or another tenant's. */
static struct job *scoped_job(struct sched *s, const struct cmd *c)
{
    struct job *j = sched_job(s, c->job_id);
    if (j && c->tenant_scope[0] && strcmp(j->tenant_id, c->tenant_scope) != 0)
        return NULL;
    return j;
}

/* The result of a command on one job. */
static void job_result(struct cmd *c, enum sched_rc rc, const struct job *j)
{
    c->rc = rc;
    if (rc == SCHED_OK)
        c->object = job_json(j, &j->st);
    else if (rc == SCHED_CONFLICT && j)
        snprintf(c->detail, sizeof c->detail, "job %llu is %s%s%s",
                 (unsigned long long) j->id, job_state_names[j->st.state],
                 j->st.worker_id[0] ? " on worker " : "", j->st.worker_id);
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
    c->rc = SCHED_OK;
    c->object = json_pack("{s:o, s:o}", "jobs", jobs, "next",
                          more ? json_string(next) : json_null());
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
    c->rc = SCHED_OK;
    c->object = json_pack("{s:o}", "workers", workers);
}

static void assignments(struct sched *s, struct cmd *c)
{
    struct worker *w = sched_worker(s, c->worker_id);
    if (!w) {
        c->rc = SCHED_NOT_FOUND;
        return;
    }
    json_t *jobs = json_array();
    struct job *j;
    cds_list_for_each_entry(j, &w->jobs, worker_link)
        if (j->st.state == JOB_ASSIGNED)
            json_array_append_new(jobs, job_json(j, &j->st));
    c->rc = SCHED_OK;
    c->object = json_pack("{s:o}", "jobs", jobs);
}

static void output(struct sched *s, struct cmd *c)
{
    const struct job *j = scoped_job(s, c);
    c->rc = j ? SCHED_OK : SCHED_NOT_FOUND;
    if (!j)
        return;
    c->output.state = j->st.state;
    c->output.reported = j->st.output_bytes >= 0;
    c->output.total = c->output.reported ? (uint64_t) j->st.output_bytes : 0;
    c->output.kept = j->output != NULL;
    if (j->output) {
        c->output.tail = xmalloc(j->output_len);
        memcpy(c->output.tail, j->output, j->output_len);
        c->output.len = j->output_len;
    }
}

static const struct job_output *report_output(const struct req_report *r)
{
    return r->has_output ? &r->output : NULL;
}

static void execute(struct engine *e, struct cmd *c, double now)
{
    struct sched *s = &e->sched;
    struct job *j = NULL;
    struct worker *w = NULL;
    enum sched_rc rc;
    switch (c->type) {
    case CMD_SUBMIT:
        c->rc = sched_submit(s, &c->job, now, &j);
        if (c->rc == SCHED_OK)
            c->object = job_json(j, &j->st);
        break;
    case CMD_CANCEL:
        rc = scoped_job(s, c) ? sched_cancel(s, c->job_id, now, &j) : SCHED_NOT_FOUND;
        job_result(c, rc, j);
        break;
    case CMD_START:
        rc = sched_start(s, c->job_id, c->report.worker_id, now, &j);
        job_result(c, rc, j);
        break;
    case CMD_SUCCEED:
        rc = sched_succeed(s, c->job_id, c->report.worker_id, c->report.exit_code,
                           report_output(&c->report), now, &j);
        job_result(c, rc, j);
        break;
    case CMD_FAIL:
        rc = sched_fail(s, c->job_id, c->report.worker_id, c->report.error_type,
                        c->report.has_exit_code, c->report.exit_code,
                        report_output(&c->report), now, &j);
        job_result(c, rc, j);
        break;
    case CMD_REGISTER:
        c->rc = sched_register(s, &c->worker, now, &w);
        if (c->rc == SCHED_OK)
            c->object = worker_json(w);
        break;
    case CMD_HEARTBEAT:
        c->rc = sched_heartbeat(s, c->worker_id, c->cpu_usage_percent, c->memory_usage_mb, now, &w);
        if (c->rc == SCHED_OK)
            c->object = worker_json(w);
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
    case CMD_OUTPUT:
        output(s, c);
        break;
    }
}

/* Runs every queued command, then a placement round, then tells the callers (engine.h);
 * the caller holds state_lock. */
static void run_batch(struct engine *e, int tick)
{
    struct sched *s = &e->sched;
    struct cds_wfcq_head batch_head;
    struct cds_wfcq_tail batch_tail;
    cds_wfcq_init(&batch_head, &batch_tail);
    __cds_wfcq_splice_blocking(&batch_head, &batch_tail, &e->cmd_head, &e->cmd_tail);
    struct cds_wfcq_node *node, *next;
    double now = hodei_mono();
    rcu_read_lock();
    __cds_wfcq_for_each_blocking(&batch_head, &batch_tail, node)
        execute(e, caa_container_of(node, struct cmd, node), now);
    now = hodei_mono();
    if (tick)
        sched_tick(s, now);
    sched_round(s, now);
    rcu_read_unlock();
    /* (a durable store commits here) */
    __cds_wfcq_for_each_blocking_safe(&batch_head, &batch_tail, node, next)
        sem_post(&caa_container_of(node, struct cmd, node)->done);
}

static void *engine_main(void *arg)
{
    struct engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->lock);
        if (!e->pending && !e->stopping) {
            pthread_mutex_lock(&e->state_lock);
            double wait = sched_next_deadline(&e->sched, hodei_mono(), ENGINE_TICK_S);
            pthread_mutex_unlock(&e->state_lock);
            struct timespec until = hodei_mono_deadline(wait);
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
    if (sched_init(&e->sched, cfg, hodei_mono(), hodei_now(), on_event, e) < 0)
        return -1;
    cds_wfcq_init(&e->cmd_head, &e->cmd_tail);
    pthread_mutex_init(&e->lock, NULL);
    pthread_mutex_init(&e->state_lock, NULL);
    hodei_cond_init_monotonic(&e->wake);
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
}
