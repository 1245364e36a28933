/* scheduler.c — job lifecycle, worker health and placement (rules in scheduler.h). */
#include "scheduler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "hodei_clock.h"
#include "hodei_render.h"

const char *const job_state_names[JOB_STATE_COUNT] = {
    "queued", "assigned", "running", "succeeded", "failed", "cancelled" };

/* ---- small helpers ------------------------------------------------------------------- */

/* Counters have one writer (this thread) and readers on the metrics thread. */
static inline void counter_add(uint64_t *p, int64_t v)
{
    __atomic_store_n(p, *p + (uint64_t) v, __ATOMIC_RELAXED);
}

static inline void gauge_store(double *p, double v)
{
    __atomic_store(p, &v, __ATOMIC_RELAXED);
}

static void histogram_init(struct hodei_histogram *h, enum hodei_family_id id)
{
    hodei_histogram_init(h, hodei_families[id].buckets, hodei_families[id].nbuckets);
}

/* A job as its observations' exemplars name it, copied: a decision may free the job before
 * its latency is recorded. */
struct job_ref {
    char id[24];
    char tenant_id[HODEI_ID_MAX + 1];
};

static void job_ref(struct job_ref *r, const struct job *j)
{
    r->id[hodei_fmt_u64(r->id, j->id)] = '\0';
    strcpy(r->tenant_id, j->tenant_id);
}

static double wall(const struct sched *s, double now);

/* Records v seconds of job r at monotonic time now: the classic and native parts and the
 * exemplar of v's bucket.  A NaN or negative v (a clock gone wrong) is counted nowhere. */
static void histogram_observe(const struct sched *s, struct hodei_histogram *h, double v,
                              const struct job_ref *r, double now)
{
    struct hodei_exemplar e;
    hodei_job_exemplar(&e, r->id, r->tenant_id, wall(s, now));
    hodei_histogram_observe(h, v, &e);
}

static void job_observe(const struct sched *s, struct hodei_histogram *h, double v,
                        const struct job *j, double now)
{
    struct job_ref r;
    job_ref(&r, j);
    histogram_observe(s, h, v, &r, now);
}

void sched_count_auth_failure(struct sched *s, enum hodei_auth_failure why)
{
    __atomic_fetch_add(&s->m.auth_failures[why], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&s->changes, 1, __ATOMIC_RELAXED);
}

static unsigned long hash_string(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;   /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char) *s) * 0x100000001b3ull;
    return (unsigned long) h;
}

static unsigned long hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (unsigned long) x;
}

/* The node of table matching key, or NULL; the caller's RCU read section (if any) keeps it. */
static struct cds_lfht_node *find(struct cds_lfht *table, unsigned long hash,
                                  cds_lfht_match_fct match, const void *key)
{
    struct cds_lfht_iter it;
    rcu_read_lock();
    cds_lfht_lookup(table, hash, match, key, &it);
    struct cds_lfht_node *node = cds_lfht_iter_get_node(&it);
    rcu_read_unlock();
    return node;
}

static double wall(const struct sched *s, double now)
{
    return now + s->wall_offset;
}

/* Something a snapshot shows changed.  API threads bump it too (auth failures). */
static void touch(struct sched *s)
{
    __atomic_fetch_add(&s->changes, 1, __ATOMIC_RELAXED);
}

static void emit(struct sched *s, enum hodei_event_type type, const struct job *j,
                 const struct worker *w)
{
    touch(s);
    if (s->emit)
        s->emit(s->emit_ctx, type, j, w);
}

/* ---- job status under its sequence lock ---------------------------------------------- */

static void status_begin(struct job *j)
{
    CMM_STORE_SHARED(j->status_seq, j->status_seq + 1);
    cmm_smp_wmb();
}

static void status_end(struct job *j)
{
    cmm_smp_wmb();
    CMM_STORE_SHARED(j->status_seq, j->status_seq + 1);
}

void job_status_read(const struct job *j, struct job_status *out)
{
    for (;;) {
        unsigned long seq = CMM_LOAD_SHARED(j->status_seq);
        if (seq & 1) {
            caa_cpu_relax();
            continue;
        }
        cmm_smp_rmb();
        memcpy(out, &j->st, sizeof *out);
        cmm_smp_rmb();
        if (CMM_LOAD_SHARED(j->status_seq) == seq)
            return;
    }
}

static uint64_t *state_gauge(struct sched *s, enum job_state st)
{
    switch (st) {
    case JOB_QUEUED:   return &s->m.jobs_queued;
    case JOB_ASSIGNED: return &s->m.jobs_assigned;
    case JOB_RUNNING:  return &s->m.jobs_running;
    default:           return NULL;
    }
}

/* Moves a job to state st; call between status_begin and status_end. */
static void set_state(struct sched *s, struct job *j, enum job_state st)
{
    uint64_t *from = state_gauge(s, (enum job_state) j->st.state), *to = state_gauge(s, st);
    if (from)
        counter_add(from, -1);
    if (to)
        counter_add(to, 1);
    j->st.state = (uint8_t) st;
}

/* ---- tenants ------------------------------------------------------------------------- */

static int match_tenant(struct cds_lfht_node *node, const void *key)
{
    return strcmp(caa_container_of(node, struct tenant, node)->id, key) == 0;
}

static struct tenant *tenant_new(struct sched *s, const char *id, double now)
{
    struct tenant *t = xcalloc(1, sizeof *t);
    strcpy(t->id, id);
    t->created = wall(s, now);
    CDS_INIT_LIST_HEAD(&t->levels);
    cds_lfht_node_init(&t->node);
    cds_lfht_add(s->tenant_table, hash_string(id), &t->node);
    s->tenants[s->ntenants] = t;
    __atomic_store_n(&s->ntenants, s->ntenants + 1, __ATOMIC_RELEASE);
    return t;
}

/* The tenant a job of tenant id counts under: its own until max_tenants exist, then the
 * shared __overflow__ tenant (metrics and fair share both fold). */
static struct tenant *tenant_for(struct sched *s, const char *id, double now)
{
    struct cds_lfht_node *node = find(s->tenant_table, hash_string(id), match_tenant, id);
    if (node)
        return caa_container_of(node, struct tenant, node);
    uint32_t named = s->ntenants - (s->overflow ? 1 : 0);
    if (named < s->cfg.max_tenants)
        return tenant_new(s, id, now);
    if (!s->overflow)
        s->overflow = tenant_new(s, HODEI_OVERFLOW_LABEL, now);
    return s->overflow;
}

/* Adds one to a tenant-labelled counter of family f, counting the fold when it overflowed. */
static void tenant_count(struct sched *s, struct tenant *t, uint64_t *counter,
                         enum hodei_family_id f)
{
    counter_add(counter, 1);
    if (t == s->overflow)
        counter_add(&s->m.label_overflow[f], 1);
}

/* ---- unfinished jobs per tenant id ---------------------------------------------------- */

/* Counted by the exact id, not the (maybe folded) metrics tenant: past max_tenants every
 * tenant keeps its own limit.  An entry lives while its tenant has unfinished jobs. */
struct tenant_quota {
    struct cds_lfht_node node;
    struct rcu_head rcu;
    uint32_t unfinished;
    char     id[HODEI_ID_MAX + 1];
};

static int match_quota(struct cds_lfht_node *node, const void *key)
{
    return strcmp(caa_container_of(node, struct tenant_quota, node)->id, key) == 0;
}

static struct tenant_quota *quota_find(struct sched *s, const char *id)
{
    struct cds_lfht_node *node = find(s->quotas, hash_string(id), match_quota, id);
    return node ? caa_container_of(node, struct tenant_quota, node) : NULL;
}

static void free_quota_rcu(struct rcu_head *head)
{
    free(caa_container_of(head, struct tenant_quota, rcu));
}

/* One unfinished job less for the job's tenant id. */
static void quota_release(struct sched *s, struct job *j)
{
    struct tenant_quota *q = j->quota;
    j->quota = NULL;
    if (--q->unfinished == 0) {
        rcu_read_lock();
        cds_lfht_del(s->quotas, &q->node);
        rcu_read_unlock();
        call_rcu(&q->rcu, free_quota_rcu);
    }
}

/* ---- the queue: per priority level, a heap of tenants, each a FIFO of jobs ------------ */

struct tenant_level {
    struct tenant *tenant;
    int level;                     /* 0 = highest priority */
    struct cds_list_head jobs;     /* by id */
    struct cds_list_head tenant_link;
    size_t heap_slot;
};

static struct job *level_head(const struct tenant_level *tl)
{
    return cds_list_first_entry(&tl->jobs, struct job, queue_link);
}

/* Fair share: fewer active jobs first, then the older head job. */
static int level_less(const void *pa, const void *pb)
{
    const struct tenant_level *a = pa, *b = pb;
    if (a->tenant->active != b->tenant->active)
        return a->tenant->active < b->tenant->active;
    return level_head(a)->id < level_head(b)->id;
}

static void level_reorder(struct sched *s, struct tenant_level *tl)
{
    heap_fix(&s->levels[tl->level], tl);
}

/* The tenant's active count changed: its place in every level it queues at may change. */
static void tenant_active_add(struct sched *s, struct tenant *t, int delta)
{
    t->active = (uint32_t) ((int) t->active + delta);
    struct tenant_level *tl;
    cds_list_for_each_entry(tl, &t->levels, tenant_link)
        level_reorder(s, tl);
}

static void queue_insert(struct sched *s, struct job *j, double now)
{
    int level = SCHED_PRIORITY_MAX - j->priority;
    struct tenant_level *tl = NULL, *it;
    cds_list_for_each_entry(it, &j->tenant->levels, tenant_link)
        if (it->level == level) {
            tl = it;
            break;
        }
    int fresh = !tl;
    if (fresh) {
        tl = xcalloc(1, sizeof *tl);
        tl->tenant = j->tenant;
        tl->level = level;
        CDS_INIT_LIST_HEAD(&tl->jobs);
        cds_list_add_tail(&tl->tenant_link, &j->tenant->levels);
    }
    /* by id: new jobs append; a requeued (older) job walks back to its place */
    struct cds_list_head *pos = tl->jobs.prev;
    while (pos != &tl->jobs && caa_container_of(pos, struct job, queue_link)->id > j->id)
        pos = pos->prev;
    cds_list_add(&j->queue_link, pos);
    j->level = tl;
    j->queued_mono = now;
    if (fresh) {
        heap_push(&s->levels[level], tl);
        s->nonempty[level / 64] |= 1ull << (level % 64);
    } else if (tl->jobs.next == &j->queue_link) {
        level_reorder(s, tl);
    }
}

static void queue_remove(struct sched *s, struct job *j)
{
    struct tenant_level *tl = j->level;
    int was_head = tl->jobs.next == &j->queue_link;
    cds_list_del(&j->queue_link);
    j->level = NULL;
    if (cds_list_empty(&tl->jobs)) {
        struct heap *h = &s->levels[tl->level];
        heap_remove(h, tl);
        if (h->n == 0)
            s->nonempty[tl->level / 64] &= ~(1ull << (tl->level % 64));
        cds_list_del(&tl->tenant_link);
        free(tl);
    } else if (was_head) {
        level_reorder(s, tl);
    }
}

static struct job *queue_head(const struct sched *s)
{
    for (size_t w = 0; w < sizeof s->nonempty / sizeof s->nonempty[0]; w++)
        if (s->nonempty[w]) {
            int level = (int) (w * 64) + __builtin_ctzll(s->nonempty[w]);
            return level_head(heap_top(&s->levels[level]));
        }
    return NULL;
}

/* ---- leases and timeouts: a min-heap on deadline ----------------------------------------- */

/* Earlier deadline first. */
static int deadline_less(const void *a, const void *b)
{
    return ((const struct job *) a)->deadline_mono < ((const struct job *) b)->deadline_mono;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

static int match_job(struct cds_lfht_node *node, const void *key)
{
    return caa_container_of(node, struct job, node)->id == *(const uint64_t *) key;
}

static void free_job(struct job *j)
{
    free(j->output);
    free(j->name);
    free(j->command);
    free(j);
}

static void free_job_rcu(struct rcu_head *head)
{
    free_job(caa_container_of(head, struct job, rcu));
}

struct job *sched_job(struct sched *s, uint64_t id)
{
    struct cds_lfht_node *node = find(s->jobs, hash_u64(id), match_job, &id);
    return node ? caa_container_of(node, struct job, node) : NULL;
}

static void worker_reindex(struct sched *s, struct worker *w)
{
    if (!w->healthy)
        return;
    cap_index_remove(&s->free_index, &w->free_node);
    cap_index_insert(&s->free_index, &w->free_node, w->free_memory_mb, w->free_cpu_m, w->seq);
}

static void assign(struct sched *s, struct job *j, struct worker *w, double now)
{
    queue_remove(s, j);
    w->free_cpu_m -= j->cpu_m;
    w->free_memory_mb -= j->memory_mb;
    worker_reindex(s, w);
    cds_list_add_tail(&j->worker_link, &w->jobs);
    j->worker = w;
    tenant_active_add(s, j->tenant, 1);
    status_begin(j);
    set_state(s, j, JOB_ASSIGNED);
    j->st.attempts++;
    strcpy(j->st.worker_id, w->id);
    j->st.assigned_at = wall(s, now);
    status_end(j);
    if (s->cfg.assignment_lease > 0) {
        j->deadline_mono = now + s->cfg.assignment_lease;
        heap_push(&s->deadlines, j);
    }
    tenant_count(s, j->tenant, &j->tenant->scheduled, HODEI_F_JOBS_SCHEDULED_TOTAL);
    job_observe(s, &s->m.queue_wait, now - j->queued_mono, j, now);
    emit(s, HODEI_EV_JOB_ASSIGNED, j, w);
}

/* Gives a job's resources back to its worker. */
static void release(struct sched *s, struct job *j, double now)
{
    struct worker *w = j->worker;
    w->free_cpu_m += j->cpu_m;
    w->free_memory_mb += j->memory_mb;
    worker_reindex(s, w);
    cds_list_del(&j->worker_link);
    j->worker = NULL;
    tenant_active_add(s, j->tenant, -1);
    if (j->deadline_slot != HEAP_NONE)
        heap_remove(&s->deadlines, j);
    if (j->st.state == JOB_RUNNING)
        job_observe(s, &s->m.job_duration, now - j->started_mono, j, now);
    s->capacity_epoch++;
}

static void output_drop(struct sched *s, struct job *j)
{
    if (!j->output)
        return;
    cds_list_del(&j->output_link);
    s->output_bytes -= j->output_len;
    free(j->output);
    j->output = NULL;
    j->output_len = 0;
}

/* Keeps what an agent reported a job wrote, within the overall budget (oldest out first). */
static void output_keep(struct sched *s, struct job *j, const struct job_output *out)
{
    output_drop(s, j);
    status_begin(j);
    j->st.output_bytes = out ? (int64_t) out->total : -1;
    status_end(j);
    if (!out || out->len > s->cfg.output_budget)
        return;
    while (s->output_bytes + out->len > s->cfg.output_budget)
        output_drop(s, cds_list_first_entry(&s->outputs, struct job, output_link));
    j->output = xmalloc(out->len);
    memcpy(j->output, out->tail, out->len);
    j->output_len = out->len;
    s->output_bytes += out->len;
    cds_list_add_tail(&j->output_link, &s->outputs);
}

static void retire(struct sched *s, struct job *j)
{
    cds_list_add_tail(&j->done_link, &s->finished);
    s->nfinished++;
    s->nunfinished--;
    quota_release(s, j);
    while (s->nfinished > s->cfg.job_retention) {
        struct job *old = cds_list_first_entry(&s->finished, struct job, done_link);
        cds_list_del(&old->done_link);
        cds_list_del(&old->order_link);
        s->nfinished--;
        output_drop(s, old);
        rcu_read_lock();
        cds_lfht_del(s->jobs, &old->node);
        rcu_read_unlock();
        call_rcu(&old->rcu, free_job_rcu);
    }
}

/* Ends a job (already out of the queue and off its worker). */
static void finish(struct sched *s, struct job *j, enum job_state st, int error_type,
                   int has_exit_code, int exit_code, double now, enum hodei_event_type ev)
{
    status_begin(j);
    set_state(s, j, st);
    j->st.error_type = (int8_t) error_type;
    j->st.has_exit_code = (uint8_t) has_exit_code;
    j->st.exit_code = exit_code;
    j->st.finished_at = wall(s, now);
    status_end(j);
    if (st == JOB_SUCCEEDED)
        tenant_count(s, j->tenant, &j->tenant->completed, HODEI_F_JOBS_COMPLETED_TOTAL);
    else
        tenant_count(s, j->tenant, &j->tenant->failed[error_type], HODEI_F_JOBS_FAILED_TOTAL);
    emit(s, ev, j, NULL);
    retire(s, j);
}

/* A decision about job r that took seconds, made in the round at monotonic time now. */
static void record_decision(struct sched *s, enum hodei_decision d, double seconds,
                            const struct job_ref *r, double now)
{
    counter_add(&s->m.decisions[d], 1);
    histogram_observe(s, &s->m.scheduling_latency, seconds, r, now);
}

/* Puts a job that lost its attempt back in the queue: a requeued decision.  began: whether
 * the attempt counts (it does unless it never started). */
static void requeue(struct sched *s, struct job *j, int began, double now)
{
    struct job_ref r;
    job_ref(&r, j);
    double t0 = hodei_mono();
    status_begin(j);
    set_state(s, j, JOB_QUEUED);
    if (!began)
        j->st.attempts--;
    j->st.worker_id[0] = '\0';
    j->st.assigned_at = j->st.started_at = 0;
    status_end(j);
    queue_insert(s, j, now);
    emit(s, HODEI_EV_JOB_REQUEUED, j, NULL);
    record_decision(s, HODEI_DECISION_REQUEUED, hodei_mono() - t0, &r, now);
}

/* The end of an attempt that did not succeed: again, or failed for good. */
static void attempt_failed(struct sched *s, struct job *j, enum hodei_error_type error_type,
                           int has_exit_code, int exit_code, double now)
{
    release(s, j, now);
    if (error_type != HODEI_ERR_CANCELLED && j->st.attempts <= j->max_retries)
        requeue(s, j, 1, now);
    else
        finish(s, j, JOB_FAILED, error_type, has_exit_code, exit_code, now, HODEI_EV_JOB_FAILED);
}

enum sched_rc sched_submit(struct sched *s, const struct job_spec *spec, double now,
                           struct job **out)
{
    if (s->nunfinished >= s->cfg.max_jobs)
        return SCHED_FULL;
    struct tenant_quota *q = quota_find(s, spec->tenant_id);
    if (q && s->cfg.max_jobs_per_tenant && q->unfinished >= s->cfg.max_jobs_per_tenant)
        return SCHED_TENANT_FULL;
    if (!q) {
        q = xcalloc(1, sizeof *q);
        strcpy(q->id, spec->tenant_id);
        cds_lfht_node_init(&q->node);
        rcu_read_lock();
        cds_lfht_add(s->quotas, hash_string(q->id), &q->node);
        rcu_read_unlock();
    }
    q->unfinished++;
    struct job *j = xcalloc(1, sizeof *j);
    j->quota = q;
    j->id = s->next_job_id++;
    strcpy(j->tenant_id, spec->tenant_id);
    j->name = xstrdup(spec->name);
    j->command = xstrdup(spec->command);
    j->cpu_m = spec->cpu_m;
    j->memory_mb = spec->memory_mb;
    j->priority = spec->priority;
    j->timeout_s = spec->timeout_s;
    j->max_retries = spec->max_retries;
    j->submitted_at = wall(s, now);
    j->st.state = JOB_QUEUED;
    j->st.error_type = -1;
    j->st.output_bytes = -1;
    j->deadline_slot = HEAP_NONE;
    rcu_read_lock();
    j->tenant = tenant_for(s, spec->tenant_id, now);
    cds_lfht_node_init(&j->node);
    cds_lfht_add(s->jobs, hash_u64(j->id), &j->node);
    rcu_read_unlock();
    cds_list_add_tail(&j->order_link, &s->all_jobs);
    counter_add(&s->m.jobs_queued, 1);
    s->nunfinished++;
    queue_insert(s, j, now);
    tenant_count(s, j->tenant, &j->tenant->submitted, HODEI_F_JOBS_SUBMITTED_TOTAL);
    emit(s, HODEI_EV_JOB_SUBMITTED, j, NULL);
    if (out)
        *out = j;
    return SCHED_OK;
}

enum sched_rc sched_cancel(struct sched *s, uint64_t id, double now, struct job **out)
{
    struct job *j = sched_job(s, id);
    if (!j)
        return SCHED_NOT_FOUND;
    if (out)
        *out = j;
    switch ((enum job_state) j->st.state) {
    case JOB_QUEUED:
        queue_remove(s, j);
        break;
    case JOB_ASSIGNED:
    case JOB_RUNNING:
        release(s, j, now);
        break;
    default:
        return SCHED_CONFLICT;
    }
    finish(s, j, JOB_CANCELLED, HODEI_ERR_CANCELLED, 0, 0, now, HODEI_EV_JOB_CANCELLED);
    return SCHED_OK;
}

/* The job, when it is in state want (or want2) on worker worker_id. */
static enum sched_rc worker_job(struct sched *s, uint64_t id, const char *worker_id,
                                enum job_state want, enum job_state want2, struct job **out)
{
    struct job *j = sched_job(s, id);
    if (!j)
        return SCHED_NOT_FOUND;
    if (out)
        *out = j;
    if ((j->st.state != want && j->st.state != want2) || !j->worker
        || strcmp(j->worker->id, worker_id) != 0)
        return SCHED_CONFLICT;
    return SCHED_OK;
}

enum sched_rc sched_start(struct sched *s, uint64_t id, const char *worker_id, double now,
                          struct job **out)
{
    struct job *j = NULL;
    enum sched_rc rc = worker_job(s, id, worker_id, JOB_ASSIGNED, JOB_ASSIGNED, &j);
    if (out)
        *out = j;
    if (rc != SCHED_OK)
        return rc;
    status_begin(j);
    set_state(s, j, JOB_RUNNING);
    j->st.started_at = wall(s, now);
    status_end(j);
    j->started_mono = now;
    j->worker->lease_strikes = 0;
    if (j->deadline_slot != HEAP_NONE)
        heap_remove(&s->deadlines, j);
    if (j->timeout_s) {
        j->deadline_mono = now + j->timeout_s;
        heap_push(&s->deadlines, j);
    }
    emit(s, HODEI_EV_JOB_STARTED, j, NULL);
    return SCHED_OK;
}

enum sched_rc sched_succeed(struct sched *s, uint64_t id, const char *worker_id, int exit_code,
                            const struct job_output *output, double now, struct job **out)
{
    struct job *j = NULL;
    enum sched_rc rc = worker_job(s, id, worker_id, JOB_RUNNING, JOB_RUNNING, &j);
    if (out)
        *out = j;
    if (rc != SCHED_OK)
        return rc;
    output_keep(s, j, output);
    release(s, j, now);
    finish(s, j, JOB_SUCCEEDED, -1, 1, exit_code, now, HODEI_EV_JOB_SUCCEEDED);
    return SCHED_OK;
}

enum sched_rc sched_fail(struct sched *s, uint64_t id, const char *worker_id,
                         enum hodei_error_type error_type, int has_exit_code, int exit_code,
                         const struct job_output *output, double now, struct job **out)
{
    struct job *j = NULL;
    enum sched_rc rc = worker_job(s, id, worker_id, JOB_ASSIGNED, JOB_RUNNING, &j);
    if (out)
        *out = j;
    if (rc != SCHED_OK)
        return rc;
    output_keep(s, j, output);
    attempt_failed(s, j, error_type, has_exit_code, exit_code, now);
    return SCHED_OK;
}

/* ---- workers -------------------------------------------------------------------------- */

static int match_worker(struct cds_lfht_node *node, const void *key)
{
    return strcmp(caa_container_of(node, struct worker, node)->id, key) == 0;
}

static void free_worker(struct worker *w)
{
    for (unsigned i = 0; i < w->nlabels; i++) {
        free(w->labels[i].key);
        free(w->labels[i].value);
    }
    free(w);
}

static void free_worker_rcu(struct rcu_head *head)
{
    free_worker(caa_container_of(head, struct worker, rcu));
}

struct worker *sched_worker(struct sched *s, const char *worker_id)
{
    struct cds_lfht_node *node = find(s->workers, hash_string(worker_id), match_worker, worker_id);
    return node ? caa_container_of(node, struct worker, node) : NULL;
}

static int match_session(struct cds_lfht_node *node, const void *key)
{
    return strcmp(caa_container_of(node, struct worker, session_node)->session.id, key) == 0;
}

struct worker *sched_session(struct sched *s, const char *session_id)
{
    struct cds_lfht_node *node = find(s->sessions, hash_string(session_id), match_session,
                                      session_id);
    return node ? caa_container_of(node, struct worker, session_node) : NULL;
}

enum sched_rc sched_register(struct sched *s, const struct worker_spec *spec, double now,
                             struct worker **out)
{
    if (s->m.workers_total >= s->cfg.max_workers) {
        /* the series it would have had, folded away */
        counter_add(&s->m.label_overflow[HODEI_F_CPU_USAGE_PERCENT], 1);
        counter_add(&s->m.label_overflow[HODEI_F_MEMORY_USAGE_MB], 1);
        touch(s);
        return SCHED_FULL;
    }
    char id[HODEI_ID_MAX + 1];
    if (spec->id[0]) {
        if (sched_worker(s, spec->id))
            return SCHED_CONFLICT;
        strcpy(id, spec->id);
    } else {
        do
            snprintf(id, sizeof id, "w-%llu", (unsigned long long) ++s->next_worker_name);
        while (sched_worker(s, id));
    }
    struct worker *w = xcalloc(1, sizeof *w);
    strcpy(w->id, id);
    w->session = spec->session;
    w->seq = ++s->next_worker_seq;
    w->cpu_m = w->free_cpu_m = spec->cpu_m;
    w->memory_mb = w->free_memory_mb = spec->memory_mb;
    w->nlabels = spec->nlabels;
    for (unsigned i = 0; i < spec->nlabels; i++) {
        w->labels[i].key = xstrdup(spec->labels[i].key);
        w->labels[i].value = xstrdup(spec->labels[i].value);
    }
    w->registered_at = w->last_heartbeat = wall(s, now);
    w->last_heartbeat_mono = now;
    w->healthy = 1;
    CDS_INIT_LIST_HEAD(&w->jobs);
    cap_index_insert(&s->free_index, &w->free_node, w->free_memory_mb, w->free_cpu_m, w->seq);
    cap_index_insert(&s->total_index, &w->total_node, w->memory_mb, w->cpu_m, w->seq);
    rcu_read_lock();
    cds_lfht_node_init(&w->node);
    cds_lfht_add(s->workers, hash_string(w->id), &w->node);
    if (w->session.id[0]) {
        cds_lfht_node_init(&w->session_node);
        cds_lfht_add(s->sessions, hash_string(w->session.id), &w->session_node);
    }
    rcu_read_unlock();
    counter_add(&s->m.workers_total, 1);
    counter_add(&s->m.workers_healthy, 1);
    counter_add(&s->m.workers_registered, 1);
    s->capacity_epoch++;
    emit(s, HODEI_EV_WORKER_REGISTERED, NULL, w);
    if (out)
        *out = w;
    return SCHED_OK;
}

static void set_healthy(struct sched *s, struct worker *w, int healthy)
{
    w->healthy = healthy;
    if (healthy) {
        cap_index_insert(&s->free_index, &w->free_node, w->free_memory_mb, w->free_cpu_m,
                         w->seq);
        counter_add(&s->m.workers_healthy, 1);
        s->capacity_epoch++;
    } else {
        cap_index_remove(&s->free_index, &w->free_node);
        counter_add(&s->m.workers_healthy, -1);
    }
}

enum sched_rc sched_heartbeat(struct sched *s, const char *worker_id, double cpu_usage_percent,
                              double memory_usage_mb, double now, struct worker **out)
{
    struct worker *w = sched_worker(s, worker_id);
    if (!w)
        return SCHED_NOT_FOUND;
    gauge_store(&w->cpu_usage_percent, cpu_usage_percent);
    gauge_store(&w->memory_usage_mb, memory_usage_mb);
    w->last_heartbeat_mono = now;
    w->last_heartbeat = wall(s, now);
    touch(s);
    if (!w->healthy && now >= w->quarantined_until) {
        set_healthy(s, w, 1);
        emit(s, HODEI_EV_WORKER_RECOVERED, NULL, w);
    }
    if (out)
        *out = w;
    return SCHED_OK;
}

static void worker_remove(struct sched *s, struct worker *w, double now)
{
    if (w->healthy)
        set_healthy(s, w, 0);   /* out of the free index before its jobs give back */
    cap_index_remove(&s->total_index, &w->total_node);
    rcu_read_lock();
    cds_lfht_del(s->workers, &w->node);
    if (w->session.id[0])
        cds_lfht_del(s->sessions, &w->session_node);
    rcu_read_unlock();
    counter_add(&s->m.workers_total, -1);
    s->capacity_epoch++;
    emit(s, HODEI_EV_WORKER_REMOVED, NULL, w);
    while (!cds_list_empty(&w->jobs)) {
        struct job *j = cds_list_first_entry(&w->jobs, struct job, worker_link);
        attempt_failed(s, j, HODEI_ERR_WORKER_LOST, 0, 0, now);
    }
    call_rcu(&w->rcu, free_worker_rcu);
}

/* An assigned job its worker did not start in time: back to the queue, without costing it a
 * retry; the worker gets no job for a while (see scheduler.h). */
static void lease_expired(struct sched *s, struct job *j, double now)
{
    struct worker *w = j->worker;
    release(s, j, now);
    requeue(s, j, 0, now);
    if (now < w->quarantined_until)
        return;   /* already serving its time: one strike per quarantine */
    w->lease_strikes++;
    double hold = s->cfg.assignment_lease;
    for (uint32_t i = 1; i < w->lease_strikes && hold < 3600; i++)
        hold *= 2;
    w->quarantined_until = now + (hold < 3600 ? hold : 3600);
    if (w->healthy) {
        set_healthy(s, w, 0);
        emit(s, HODEI_EV_WORKER_UNHEALTHY, NULL, w);
    }
    touch(s);
}

/* ---- placement and time --------------------------------------------------------------- */

unsigned sched_round(struct sched *s, double now)
{
    if (s->m.workers_total == 0)
        return 0;
    unsigned decisions = 0;
    for (;;) {
        struct job *j = queue_head(s);
        if (!j || (j->id == s->blocked_job && s->blocked_epoch == s->capacity_epoch))
            break;
        struct job_ref r;
        job_ref(&r, j);
        double t0 = hodei_mono();
        enum hodei_decision d;
        struct cap_node *fit = cap_index_best_fit(&s->free_index, j->memory_mb, j->cpu_m);
        if (fit) {
            assign(s, j, caa_container_of(fit, struct worker, free_node), now);
            d = HODEI_DECISION_ASSIGNED;
        } else if (!cap_index_best_fit(&s->total_index, j->memory_mb, j->cpu_m)) {
            queue_remove(s, j);
            finish(s, j, JOB_FAILED, HODEI_ERR_OTHER, 0, 0, now, HODEI_EV_JOB_REJECTED);
            d = HODEI_DECISION_REJECTED;
        } else {
            s->blocked_job = j->id;
            s->blocked_epoch = s->capacity_epoch;
            touch(s);
            d = HODEI_DECISION_NO_CAPACITY;
        }
        record_decision(s, d, hodei_mono() - t0, &r, now);
        decisions++;
        if (d == HODEI_DECISION_NO_CAPACITY)
            break;
    }
    return decisions;
}

void sched_tick(struct sched *s, double now)
{
    struct cds_lfht_iter it;
    struct worker *w;
    rcu_read_lock();
    cds_lfht_for_each_entry(s->workers, &it, w, node) {
        double silent = now - w->last_heartbeat_mono;
        if (silent >= s->cfg.worker_timeout) {
            worker_remove(s, w, now);
        } else if (w->healthy && silent >= s->cfg.heartbeat_timeout) {
            set_healthy(s, w, 0);
            touch(s);
            emit(s, HODEI_EV_WORKER_UNHEALTHY, NULL, w);
        }
    }
    rcu_read_unlock();
    struct job *j;
    while ((j = heap_top(&s->deadlines)) && j->deadline_mono <= now) {
        if (j->st.state == JOB_ASSIGNED)
            lease_expired(s, j, now);
        else
            attempt_failed(s, j, HODEI_ERR_TIMEOUT, 0, 0, now);
    }
}

double sched_next_deadline(const struct sched *s, double now, double max_wait)
{
    double wait = max_wait;
    const struct job *j = heap_top(&s->deadlines);
    if (j && j->deadline_mono - now < wait)
        wait = j->deadline_mono - now;
    return wait < 0 ? 0 : wait;
}

/* ---- setup ---------------------------------------------------------------------------- */

int sched_init(struct sched *s, const struct sched_config *cfg, double now_mono,
               double now_wall, sched_event_fn emit_fn, void *emit_ctx)
{
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    s->jobs = cds_lfht_new(1024, 1024, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, NULL);
    s->workers = cds_lfht_new(1024, 1024, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, NULL);
    s->tenant_table = cds_lfht_new(1024, 1024, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING,
                                   NULL);
    s->sessions = cds_lfht_new(1024, 1024, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, NULL);
    s->quotas = cds_lfht_new(1024, 1024, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, NULL);
    if (!s->jobs || !s->workers || !s->tenant_table || !s->sessions || !s->quotas)
        hodei_oom();
    s->tenants = xcalloc((size_t) cfg->max_tenants + 1, sizeof *s->tenants);
    s->next_job_id = 1;
    CDS_INIT_LIST_HEAD(&s->all_jobs);
    CDS_INIT_LIST_HEAD(&s->outputs);
    CDS_INIT_LIST_HEAD(&s->finished);
    cap_index_init(&s->free_index, 0x243f6a8885a308d3ull);
    cap_index_init(&s->total_index, 0x13198a2e03707344ull);
    s->wall_offset = now_wall - now_mono;
    s->start_time = now_wall;
    s->emit = emit_fn;
    s->emit_ctx = emit_ctx;
    histogram_init(&s->m.scheduling_latency, HODEI_F_SCHEDULING_LATENCY_SECONDS);
    histogram_init(&s->m.queue_wait, HODEI_F_QUEUE_WAIT_TIME_SECONDS);
    histogram_init(&s->m.job_duration, HODEI_F_JOB_DURATION_SECONDS);
    for (int l = 0; l < SCHED_LEVELS; l++)
        s->levels[l] = HEAP_INIT(level_less, struct tenant_level, heap_slot);
    s->deadlines = HEAP_INIT(deadline_less, struct job, deadline_slot);
    return 0;
}

void sched_destroy(struct sched *s)
{
    struct cds_lfht_iter it;
    struct cds_lfht_node *node;
    rcu_read_lock();
    cds_lfht_for_each(s->jobs, &it, node) {
        cds_lfht_del(s->jobs, node);
        call_rcu(&caa_container_of(node, struct job, node)->rcu, free_job_rcu);
    }
    cds_lfht_for_each(s->workers, &it, node) {
        cds_lfht_del(s->workers, node);
        call_rcu(&caa_container_of(node, struct worker, node)->rcu, free_worker_rcu);
    }
    cds_lfht_for_each(s->sessions, &it, node)
        cds_lfht_del(s->sessions, node);
    cds_lfht_for_each(s->quotas, &it, node) {
        cds_lfht_del(s->quotas, node);
        call_rcu(&caa_container_of(node, struct tenant_quota, node)->rcu, free_quota_rcu);
    }
    cds_lfht_for_each(s->tenant_table, &it, node)
        cds_lfht_del(s->tenant_table, node);
    rcu_read_unlock();
    rcu_barrier();
    for (uint32_t i = 0; i < s->ntenants; i++) {
        struct tenant_level *tl, *tmp;
        cds_list_for_each_entry_safe(tl, tmp, &s->tenants[i]->levels, tenant_link)
            free(tl);
        free(s->tenants[i]);
    }
    for (int l = 0; l < SCHED_LEVELS; l++)
        heap_free(&s->levels[l]);
    heap_free(&s->deadlines);
    free(s->tenants);
    cds_lfht_destroy(s->jobs, NULL);
    cds_lfht_destroy(s->sessions, NULL);
    cds_lfht_destroy(s->quotas, NULL);
    cds_lfht_destroy(s->workers, NULL);
    cds_lfht_destroy(s->tenant_table, NULL);
}
