/* engine.c — the scheduler thread, its command queue and its commits (see engine.h). */
#include "engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "hodei_clock.h"
#include "json.h"
#include "log.h"
#include "persist.h"

/* The longest the engine sleeps, and the period of its health checks. */
#define ENGINE_TICK_S 0.05

/* Every event of a change set waits for its commit. */
static void on_event(void *ctx, enum hodei_event_type type, const struct job *j,
                     const struct worker *w)
{
    struct engine *e = ctx;
    if (e->nevents == e->events_cap) {
        e->events_cap = e->events_cap ? e->events_cap * 2 : 64;
        e->events = xrealloc(e->events, e->events_cap * sizeof *e->events);
    }
    struct engine_event *ev = &e->events[e->nevents++];
    ev->type = type;
    ev->tenant = j ? xstrdup(j->tenant_id) : NULL;
    ev->payload = bus_wants_payload(e->bus) ? event_json(type, hodei_now(), j, w) : NULL;
    ev->worker_id[0] = '\0';
    if (type == HODEI_EV_JOB_ASSIGNED)
        snprintf(ev->worker_id, sizeof ev->worker_id, "%s", w->id);
}

/* The change set committed: its events go out, in order. */
static void publish_events(struct engine *e)
{
    for (size_t i = 0; i < e->nevents; i++) {
        struct engine_event *ev = &e->events[i];
        bus_publish(e->bus, ev->type, ev->tenant, ev->payload);   /* takes the payload */
        free(ev->tenant);
        if (ev->type == HODEI_EV_JOB_ASSIGNED) {
            void (*on_assign)(void *, const char *) = CMM_LOAD_SHARED(e->on_assign);
            if (on_assign)
                on_assign(e->on_assign_ctx, ev->worker_id);
        }
    }
    e->nevents = 0;
}

static void drop_events(struct engine *e)
{
    for (size_t i = 0; i < e->nevents; i++) {
        free(e->events[i].tenant);
        free(e->events[i].payload);
    }
    e->nevents = 0;
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

/* Reads see the committed state and change nothing the store keeps; a heartbeat changes only
 * what a worker's health is, which the store does not keep either. */
static int told_at_once(const struct cmd *c)
{
    switch (c->type) {
    case CMD_LIST_JOBS:
    case CMD_LIST_WORKERS:
    case CMD_ASSIGNMENTS:
    case CMD_OUTPUT:
    case CMD_HEARTBEAT:
        return 1;
    default:
        return 0;
    }
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

static void complete(struct cmd *c)
{
    if (c->done)
        c->done(c);
    else
        sem_post(&c->done_sem);
}

/* ---- commits ------------------------------------------------------------------------------ */

static void on_store_commit(void *ctx, const struct store_commit *c)
{
    struct engine *e = ctx;
    e->commit_seconds = c->seconds;
}

static void on_committed(void *ctx, enum store_status status, const char *why)
{
    struct engine *e = ctx;
    e->commit_status = status;
    snprintf(e->commit_why, sizeof e->commit_why, "%s", why ? why : "");
    sem_post(&e->committed);
}

/* The values counted outside the change set, as of now: the bus's counts and the API's
 * refusals, on top of what the store held at start. */
static void sample(struct engine *e, struct sched_sampled *v)
{
    struct bus_counters bc;
    bus_counters_read(e->bus, &bc);
    for (int t = 0; t < HODEI_EV_COUNT; t++) {
        v->events_published[t] = e->base.events_published[t] + bc.published[t];
        v->events_received[t] = e->base.events_received[t] + bc.received[t];
        v->events_dropped[t] = e->base.events_dropped[t] + bc.dropped[t];
    }
    for (int r = 0; r < HODEI_AUTH_COUNT; r++)
        v->auth_failures[r] = e->base.auth_failures[r]
                              + __atomic_load_n(&e->sched.auth_counted[r], __ATOMIC_RELAXED);
}

/* Makes the change set durable, or undoes it: 1 when it committed. */
static int commit(struct engine *e)
{
    struct sched *s = &e->sched;
    struct sched_sampled sampled;
    int sampled_changed = 0;
    struct store_batch *b = NULL;
    if (e->store) {
        sample(e, &sampled);
        b = persist_batch(s, &sampled, &sampled_changed);
    }
    if (!b) {                               /* nothing the store must keep */
        sched_commit(s, 0);
        publish_events(e);
        return 1;
    }
    if (store_submit(e->store, b, on_committed, e) == 0) {
        while (sem_wait(&e->committed) < 0 && errno == EINTR)
            ;
    } else {                                /* cannot happen with one batch in flight */
        store_batch_free(b);
        e->commit_status = STORE_ERR_IO;
        snprintf(e->commit_why, sizeof e->commit_why, "too many changes waiting for the disk");
        e->commit_seconds = 0;
    }
    int ok = e->commit_status == STORE_OK;
    if (ok) {
        sched_commit(s, 1);
        s->start_time_kept = 1;
        if (sampled_changed)
            sched_set_sampled(s, &sampled);
        publish_events(e);
        if (e->failing)
            log_info("the state store commits again: %llu changes were refused (503) while it "
                     "failed", (unsigned long long) e->refused);
        e->failing = 0;
        e->refused = 0;
    } else {
        sched_rollback(s);
        drop_events(e);
        enum hodei_store_error why = e->commit_status == STORE_ERR_FULL ? HODEI_STORE_DISK_FULL
                                                                          : HODEI_STORE_IO_ERROR;
        __atomic_fetch_add(&s->m.store_errors[why], 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&s->changes, 1, __ATOMIC_RELAXED);
        e->failing = 1;
    }
    sched_observe_carried(s, SH_STORE_COMMIT, e->commit_seconds);
    return ok;
}

/* Runs every queued command as one batch (engine.h's four steps). */
static void run_batch(struct engine *e)
{
    struct sched *s = &e->sched;
    /* the queue split in two lists: a command is gone once its caller is told */
    struct cmd *reads = NULL, **reads_tail = &reads, *changes = NULL, **changes_tail = &changes;
    struct cds_wfcq_node *node;
    while ((node = __cds_wfcq_dequeue_blocking(&e->cmd_head, &e->cmd_tail))) {
        struct cmd *c = caa_container_of(node, struct cmd, node);
        c->next = NULL;
        struct cmd ***tail = told_at_once(c) ? &reads_tail : &changes_tail;
        **tail = c;
        *tail = &c->next;
    }
    double now = hodei_mono();
    rcu_read_lock();
    for (struct cmd *c = reads; c; c = c->next)
        execute(e, c, now);
    rcu_read_unlock();
    for (struct cmd *c = reads, *next; c; c = next) {
        next = c->next;
        complete(c);
    }
    rcu_read_lock();
    for (struct cmd *c = changes; c; c = c->next)
        execute(e, c, now);
    now = hodei_mono();
    if (now >= e->next_tick || sched_next_deadline(s, now, 1) == 0) {
        sched_tick(s, now);
        e->next_tick = now + ENGINE_TICK_S;
    }
    sched_round(s, now);
    sched_prune(s);
    rcu_read_unlock();
    int ok = commit(e);
    for (struct cmd *c = changes, *next; c; c = next) {
        next = c->next;
        if (!ok) {
            json_decref(c->object);
            c->object = NULL;
            c->rc = SCHED_UNAVAILABLE;
            snprintf(c->detail, sizeof c->detail, "%.100s", e->commit_why);
            e->refused++;
        }
        complete(c);
    }
}

static void *engine_main(void *arg)
{
    struct engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->lock);
        if (!e->pending && !e->stopping) {
            double wait = sched_next_deadline(&e->sched, hodei_mono(), ENGINE_TICK_S);
            struct timespec until = hodei_mono_deadline(wait);
            pthread_cond_timedwait(&e->wake, &e->lock, &until);
        }
        e->pending = 0;
        int stopping = e->stopping;
        pthread_mutex_unlock(&e->lock);

        run_batch(e);
        if (stopping && cds_wfcq_empty(&e->cmd_head, &e->cmd_tail))
            break;
    }
    return NULL;
}

int engine_start(struct engine *e, const struct sched_config *cfg, struct bus *bus,
                 const char *state_dir)
{
    memset(e, 0, sizeof *e);
    e->bus = bus;
    double now = hodei_mono();
    if (sched_init(&e->sched, cfg, now, hodei_now(), on_event, e) < 0)
        return -1;
    cds_wfcq_init(&e->cmd_head, &e->cmd_tail);
    pthread_mutex_init(&e->lock, NULL);
    hodei_cond_init_monotonic(&e->wake);
    sem_init(&e->committed, 0, 0);
    if (state_dir) {
        char err[1024];
        double t0 = hodei_mono();
        struct store_options opts = { .on_commit = on_store_commit, .commit_ctx = e };
        struct store *store = store_open(state_dir, &opts, err, sizeof err);
        if (!store) {
            log_error("cannot open the state store: %s", err);
            return -1;
        }
        e->store = store;
        if (persist_load(store, &e->sched, now, err, sizeof err) < 0) {
            log_error("cannot load the state: %s", err);
            return -1;
        }
        const struct sched_metrics *m = &e->sched.m;
        memcpy(e->base.events_published, m->events_published, sizeof m->events_published);
        memcpy(e->base.events_received, m->events_received, sizeof m->events_received);
        memcpy(e->base.events_dropped, m->events_dropped, sizeof m->events_dropped);
        memcpy(e->base.auth_failures, m->auth_failures, sizeof m->auth_failures);
        log_info("state loaded from %s in %.0f ms: next job id %llu, %u unfinished and %u "
                 "finished jobs", store_path(store), (hodei_mono() - t0) * 1000,
                 (unsigned long long) e->sched.next_job_id, e->sched.nunfinished,
                 e->sched.nfinished);
    }
    /* what the restart changed (assigned jobs back to the queue) commits before anyone asks */
    run_batch(e);
    int err = pthread_create(&e->thread, NULL, engine_main, e);
    if (err) {
        log_error("cannot start the scheduler thread: %s", strerror(err));
        return -1;
    }
    return 0;
}

void engine_submit(struct engine *e, struct cmd *c)
{
    cds_wfcq_node_init(&c->node);
    cds_wfcq_enqueue(&e->cmd_head, &e->cmd_tail, &c->node);
    pthread_mutex_lock(&e->lock);
    if (!e->pending) {
        e->pending = 1;
        pthread_cond_signal(&e->wake);
    }
    pthread_mutex_unlock(&e->lock);
}

void engine_call(struct engine *e, struct cmd *c)
{
    c->done = NULL;
    sem_init(&c->done_sem, 0, 0);
    engine_submit(e, c);
    while (sem_wait(&c->done_sem) < 0 && errno == EINTR)
        ;
    sem_destroy(&c->done_sem);
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
    if (e->store)
        store_close(e->store);
    drop_events(e);
    free(e->events);
    sched_destroy(&e->sched);
    sem_destroy(&e->committed);
    pthread_cond_destroy(&e->wake);
    pthread_mutex_destroy(&e->lock);
}
