/* scheduler.c — job lifecycle, worker health, placement, and the change set that makes them
 * durable (rules in scheduler.h). */
#include "scheduler.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "hodei_clock.h"
#include "hodei_render.h"

const char *const job_state_names[JOB_STATE_COUNT] = {
    "queued", "assigned", "running", "succeeded", "failed", "cancelled" };

const enum hodei_family_id sched_histogram_family[SH_COUNT] = {
    [SH_SCHEDULING_LATENCY] = HODEI_F_SCHEDULING_LATENCY_SECONDS,
    [SH_QUEUE_WAIT] = HODEI_F_QUEUE_WAIT_TIME_SECONDS,
    [SH_JOB_DURATION] = HODEI_F_JOB_DURATION_SECONDS,
    [SH_STORE_COMMIT] = HODEI_F_STORE_COMMIT_DURATION_SECONDS,
};

/* ---- small helpers ------------------------------------------------------------------- */

/* Committed counters have one writer (this thread) and readers on the metrics thread. */
static inline void counter_add(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, *p + v, __ATOMIC_RELAXED);
}

static inline void gauge_store(double *p, double v)
{
    __atomic_store(p, &v, __ATOMIC_RELAXED);
}

static void histogram_init(struct hodei_histogram *h, enum hodei_family_id id)
{
    hodei_histogram_init(h, hodei_families[id].buckets, hodei_families[id].nbuckets);
}

/* A job as an observation's exemplar names it, copied: a decision may retire the job before
 * its latency is recorded. */
struct job_ref {
    uint64_t id;
    char     tenant_id[HODEI_ID_MAX + 1];
};

static void job_ref(struct job_ref *r, const struct job *j)
{
    r->id = j->id;
    strcpy(r->tenant_id, j->tenant_id);
}

static double wall(const struct sched *s, double now);

void sched_count_auth_failure(struct sched *s, enum hodei_auth_failure why)
{
    __atomic_fetch_add(&s->auth_counted[why], 1, __ATOMIC_RELAXED);
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

static void table_add(struct cds_lfht *table, unsigned long hash, struct cds_lfht_node *node)
{
    rcu_read_lock();
    cds_lfht_node_init(node);
    cds_lfht_add(table, hash, node);
    rcu_read_unlock();
}

static void table_del(struct cds_lfht *table, struct cds_lfht_node *node)
{
    rcu_read_lock();
    cds_lfht_del(table, node);
    rcu_read_unlock();
}

static double wall(const struct sched *s, double now)
{
    return now + s->wall_offset;
}

/* t to the microsecond, as the store keeps _created times: the same after a restart. */
static double whole_micros(double t)
{
    return (double) (int64_t) (t * 1e6 + 0.5) / 1e6;
}

static double mono(const struct sched *s, double unix_seconds)
{
    return unix_seconds - s->wall_offset;
}

/* Something a snapshot shows changed. */
static void mark_changed(struct sched *s)
{
    __atomic_fetch_add(&s->changes, 1, __ATOMIC_RELAXED);
}

static void emit(struct sched *s, enum hodei_event_type type, const struct job *j,
                 const struct worker *w)
{
    if (s->emit)
        s->emit(s->emit_ctx, type, j, w);
}

/* Inserts node into list, which is ordered by the id of the job it links (worker and absent
 * job lists): new ids append, an older one walks back to its place. */
static void insert_by_id(struct cds_list_head *list, struct job *j, struct cds_list_head *node,
                         size_t link_offset)
{
    struct cds_list_head *pos = list->prev;
    while (pos != list && ((struct job *) ((char *) pos - link_offset))->id > j->id)
        pos = pos->prev;
    cds_list_add(node, pos);
}

/* ---- the change set ----------------------------------------------------------------------- */

static void touch_job(struct sched *s, struct job *j)
{
    if (!j->touched) {
        j->touched = 1;
        cds_list_add_tail(&j->touch_link, &s->cs.jobs);
    }
}

/* Records what a rollback puts back: health, quarantine and strikes as committed. */
static void touch_worker(struct sched *s, struct worker *w)
{
    if (!w->touched) {
        w->touched = 1;
        w->pre_healthy = w->healthy;
        w->pre_quarantined_until = w->quarantined_until;
        w->pre_lease_strikes = w->lease_strikes;
        cds_list_add_tail(&w->touch_link, &s->cs.workers);
    }
}

static void touch_tenant(struct sched *s, struct tenant *t)
{
    if (!t->touched) {
        t->touched = 1;
        cds_list_add_tail(&t->touch_link, &s->cs.tenants);
    }
}

/* Records v in the change set (sched_commit observes it), with the exemplar of job r (NULL:
 * none) at monotonic time now.  carried: not the change set's own, so kept across a rollback. */
static void observe(struct sched *s, enum sched_histogram_id h, double v,
                    const struct job_ref *r, double now, int carried)
{
    struct sched_changes *cs = &s->cs;
    if (cs->nobs == cs->obs_cap) {
        cs->obs_cap = cs->obs_cap ? cs->obs_cap * 2 : 64;
        cs->obs = xrealloc(cs->obs, cs->obs_cap * sizeof *cs->obs);
    }
    struct sched_observation *o = &cs->obs[cs->nobs++];
    *o = (struct sched_observation) { .histogram = (uint8_t) h, .carried = (uint8_t) carried,
                                      .value = v };
    if (r) {
        o->job_id = r->id;
        o->at = wall(s, now);
        strcpy(o->tenant_id, r->tenant_id);
    }
}

static void job_observe(struct sched *s, enum sched_histogram_id h, double v,
                        const struct job *j, double now)
{
    struct job_ref r;
    job_ref(&r, j);
    observe(s, h, v, &r, now, 0);
}

void sched_observe_carried(struct sched *s, enum sched_histogram_id h, double value)
{
    observe(s, h, value, NULL, 0, 1);
}

/* Observes o in h, with its exemplar. */
static void observation_apply(struct hodei_histogram *h, const struct sched_observation *o)
{
    struct hodei_exemplar e;
    char id[24];
    if (o->job_id) {
        id[hodei_fmt_u64(id, o->job_id)] = '\0';
        hodei_job_exemplar(&e, id, o->tenant_id, o->at);
    }
    hodei_histogram_observe(h, o->value, o->job_id ? &e : NULL);
}

static void record_transition(struct sched *s, const struct job *j, int from,
                              enum job_state to, double now)
{
    struct sched_changes *cs = &s->cs;
    if (cs->ntransitions == cs->transitions_cap) {
        cs->transitions_cap = cs->transitions_cap ? cs->transitions_cap * 2 : 64;
        cs->transitions = xrealloc(cs->transitions,
                                   cs->transitions_cap * sizeof *cs->transitions);
    }
    struct sched_transition *t = &cs->transitions[cs->ntransitions++];
    t->job_id = j->id;
    t->at = wall(s, now);
    t->from = (int8_t) from;
    t->to = (uint8_t) to;
    memcpy(t->worker_id, j->st.worker_id, sizeof t->worker_id);
}

int sched_dirty(const struct sched *s)
{
    const struct sched_changes *cs = &s->cs;
    if (cs->jobs.next != &cs->jobs || cs->tenants.next != &cs->tenants || cs->ntransitions
        || cs->npruned || cs->workers_registered)
        return 1;
    for (int d = 0; d < HODEI_DECISION_COUNT; d++)
        if (cs->decisions[d])
            return 1;
    for (int f = 0; f < HODEI_F_COUNT; f++)
        if (cs->label_overflow[f])
            return 1;
    for (size_t i = 0; i < cs->nobs; i++)
        if (!cs->obs[i].carried)
            return 1;
    return 0;
}

int sched_histogram_pending(const struct sched *s, enum sched_histogram_id h,
                            struct hodei_histogram *out)
{
    *out = s->m.h[h];   /* this thread is the only writer: a plain copy is consistent */
    int any = 0;
    for (size_t i = 0; i < s->cs.nobs; i++)
        if (s->cs.obs[i].histogram == h) {
            observation_apply(out, &s->cs.obs[i]);
            any = 1;
        }
    return any;
}

void sched_set_sampled(struct sched *s, const struct sched_sampled *v)
{
    struct sched_metrics *m = &s->m;
    for (int r = 0; r < HODEI_AUTH_COUNT; r++)
        __atomic_store_n(&m->auth_failures[r], v->auth_failures[r], __ATOMIC_RELAXED);
    for (int t = 0; t < HODEI_EV_COUNT; t++) {
        __atomic_store_n(&m->events_published[t], v->events_published[t], __ATOMIC_RELAXED);
        __atomic_store_n(&m->events_received[t], v->events_received[t], __ATOMIC_RELAXED);
        __atomic_store_n(&m->events_dropped[t], v->events_dropped[t], __ATOMIC_RELAXED);
    }
    mark_changed(s);
}

void sched_publish_gauges(struct sched *s)
{
    struct sched_metrics *m = &s->m;
    __atomic_store_n(&m->jobs_queued, s->g.queued, __ATOMIC_RELAXED);
    __atomic_store_n(&m->jobs_assigned, s->g.assigned, __ATOMIC_RELAXED);
    __atomic_store_n(&m->jobs_running, s->g.running, __ATOMIC_RELAXED);
    __atomic_store_n(&m->workers_total, s->g.workers_total, __ATOMIC_RELAXED);
    __atomic_store_n(&m->workers_healthy, s->g.workers_healthy, __ATOMIC_RELAXED);
}

/* ---- job status ----------------------------------------------------------------------- */

/* Readers copy cst under the sequence: odd while it changes. */
static void status_publish(struct job *j)
{
    CMM_STORE_SHARED(j->status_seq, j->status_seq + 1);
    cmm_smp_wmb();
    j->cst = j->st;
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
        memcpy(out, &j->cst, sizeof *out);
        cmm_smp_rmb();
        if (CMM_LOAD_SHARED(j->status_seq) == seq)
            return;
    }
}

static uint64_t *state_gauge(struct sched *s, enum job_state st)
{
    switch (st) {
    case JOB_QUEUED:   return &s->g.queued;
    case JOB_ASSIGNED: return &s->g.assigned;
    case JOB_RUNNING:  return &s->g.running;
    default:           return NULL;
    }
}

static int finished_state(enum job_state st)
{
    return st == JOB_SUCCEEDED || st == JOB_FAILED || st == JOB_CANCELLED;
}

/* Moves a job to state to, as a transition of the change set. */
static void set_state(struct sched *s, struct job *j, enum job_state to, double now)
{
    uint64_t *from = state_gauge(s, (enum job_state) j->st.state), *into = state_gauge(s, to);
    touch_job(s, j);
    if (from)
        (*from)--;
    if (into)
        (*into)++;
    record_transition(s, j, j->st.state, to, now);
    j->st.state = (uint8_t) to;
}

/* ---- tenants ------------------------------------------------------------------------- */

static int match_tenant(struct cds_lfht_node *node, const void *key)
{
    return strcmp(caa_container_of(node, struct tenant, node)->id, key) == 0;
}

static struct tenant *tenant_new(struct sched *s, const char *id, double created)
{
    if (s->ntenants == s->tenants_cap) {   /* only while loading: no reader yet */
        s->tenants_cap *= 2;
        s->tenants = xrealloc(s->tenants, s->tenants_cap * sizeof *s->tenants);
    }
    struct tenant *t = xcalloc(1, sizeof *t);
    strcpy(t->id, id);
    t->created = created;
    CDS_INIT_LIST_HEAD(&t->levels);
    table_add(s->tenant_table, hash_string(id), &t->node);
    s->tenants[s->ntenants++] = t;
    if (strcmp(id, HODEI_OVERFLOW_LABEL) == 0)
        s->overflow = t;
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
        return tenant_new(s, id, whole_micros(wall(s, now)));
    if (!s->overflow)
        tenant_new(s, HODEI_OVERFLOW_LABEL, whole_micros(wall(s, now)));
    return s->overflow;
}

static void free_tenant_rcu(struct rcu_head *head)
{
    free(caa_container_of(head, struct tenant, rcu));
}

/* Adds one to counter c of a tenant, counting the fold when it overflowed. */
static void tenant_count(struct sched *s, struct tenant *t, enum tenant_counter c,
                         enum hodei_family_id f)
{
    t->pending[c]++;
    touch_tenant(s, t);
    if (t == s->overflow)
        s->cs.label_overflow[f]++;
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

/* One unfinished job more for the job's tenant id. */
static void quota_take(struct sched *s, struct job *j)
{
    struct tenant_quota *q = quota_find(s, j->tenant_id);
    if (!q) {
        q = xcalloc(1, sizeof *q);
        strcpy(q->id, j->tenant_id);
        table_add(s->quotas, hash_string(q->id), &q->node);
    }
    q->unfinished++;
    j->quota = q;
    s->nunfinished++;
}

/* One unfinished job less for the job's tenant id. */
static void quota_release(struct sched *s, struct job *j)
{
    struct tenant_quota *q = j->quota;
    j->quota = NULL;
    s->nunfinished--;
    if (--q->unfinished == 0) {
        table_del(s->quotas, &q->node);
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

/* Puts a job in the queue at its place (by id), keeping its queued_mono. */
static void queue_link(struct sched *s, struct job *j)
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
    if (fresh) {
        heap_push(&s->levels[level], tl);
        s->nonempty[level / 64] |= 1ull << (level % 64);
    } else if (tl->jobs.next == &j->queue_link) {
        level_reorder(s, tl);
    }
}

static void queue_insert(struct sched *s, struct job *j, double now)
{
    j->queued_mono = now;
    queue_link(s, j);
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

static void deadline_set(struct sched *s, struct job *j, double deadline)
{
    if (j->deadline_slot != HEAP_NONE)
        heap_remove(&s->deadlines, j);
    j->deadline_mono = deadline;
    heap_push(&s->deadlines, j);
}

static void deadline_clear(struct sched *s, struct job *j)
{
    if (j->deadline_slot != HEAP_NONE)
        heap_remove(&s->deadlines, j);
}

/* ---- where an assigned or running job is: its worker, or absent ------------------------- */

/* The jobs of a worker that has not registered since a restart, by its id. */
struct absent {
    struct cds_lfht_node node;
    struct rcu_head rcu;
    struct cds_list_head jobs;     /* by id (job.worker_link) */
    char id[HODEI_ID_MAX + 1];
};

static int match_absent(struct cds_lfht_node *node, const void *key)
{
    return strcmp(caa_container_of(node, struct absent, node)->id, key) == 0;
}

static struct absent *absent_find(struct sched *s, const char *id)
{
    struct cds_lfht_node *node = find(s->absents, hash_string(id), match_absent, id);
    return node ? caa_container_of(node, struct absent, node) : NULL;
}

static void free_absent_rcu(struct rcu_head *head)
{
    free(caa_container_of(head, struct absent, rcu));
}

/* Holds a job on its absent worker st.worker_id until orphan_deadline. */
static void absent_add(struct sched *s, struct job *j)
{
    struct absent *a = absent_find(s, j->st.worker_id);
    if (!a) {
        a = xcalloc(1, sizeof *a);
        strcpy(a->id, j->st.worker_id);
        CDS_INIT_LIST_HEAD(&a->jobs);
        table_add(s->absents, hash_string(a->id), &a->node);
    }
    insert_by_id(&a->jobs, j, &j->worker_link, offsetof(struct job, worker_link));
    j->absent = a;
    tenant_active_add(s, j->tenant, 1);
    deadline_set(s, j, s->orphan_deadline);
}

/* Takes a job off its absent worker; the record goes with its last job. */
static void absent_remove(struct sched *s, struct job *j)
{
    struct absent *a = j->absent;
    cds_list_del(&j->worker_link);
    j->absent = NULL;
    tenant_active_add(s, j->tenant, -1);
    deadline_clear(s, j);
    if (cds_list_empty(&a->jobs)) {
        table_del(s->absents, &a->node);
        call_rcu(&a->rcu, free_absent_rcu);
    }
}

static void worker_reindex(struct sched *s, struct worker *w)
{
    if (!w->healthy)
        return;
    cap_index_remove(&s->free_index, &w->free_node);
    cap_index_insert(&s->free_index, &w->free_node, w->free_memory_mb, w->free_cpu_m, w->seq);
}

/* Puts a job's resources on worker w. */
static void occupy(struct sched *s, struct job *j, struct worker *w)
{
    w->free_cpu_m -= j->cpu_m;
    w->free_memory_mb -= j->memory_mb;
    worker_reindex(s, w);
    insert_by_id(&w->jobs, j, &j->worker_link, offsetof(struct job, worker_link));
    j->worker = w;
    tenant_active_add(s, j->tenant, 1);
}

/* Gives a job's resources back to its worker. */
static void vacate(struct sched *s, struct job *j)
{
    struct worker *w = j->worker;
    w->free_cpu_m += j->cpu_m;
    w->free_memory_mb += j->memory_mb;
    worker_reindex(s, w);
    cds_list_del(&j->worker_link);
    j->worker = NULL;
    tenant_active_add(s, j->tenant, -1);
    deadline_clear(s, j);
}

static int match_worker(struct cds_lfht_node *node, const void *key)
{
    return strcmp(caa_container_of(node, struct worker, node)->id, key) == 0;
}

struct worker *sched_worker(struct sched *s, const char *worker_id)
{
    struct cds_lfht_node *node = find(s->workers, hash_string(worker_id), match_worker, worker_id);
    return node ? caa_container_of(node, struct worker, node) : NULL;
}

/* The deadlines of an assigned or running job on a worker, from its status. */
static void worker_deadlines(struct sched *s, struct job *j)
{
    if (j->st.state == JOB_ASSIGNED && s->cfg.assignment_lease > 0)
        deadline_set(s, j, mono(s, j->st.assigned_at) + s->cfg.assignment_lease);
    if (j->st.state == JOB_RUNNING) {
        j->started_mono = mono(s, j->st.started_at);
        if (j->timeout_s)
            deadline_set(s, j, j->started_mono + j->timeout_s);
    }
}

/* Links a job into every structure its working status puts it in: at a restart and when a
 * rollback gives it back its committed status.  The inverse of detach(). */
static void attach(struct sched *s, struct job *j)
{
    uint64_t *g = state_gauge(s, (enum job_state) j->st.state);
    if (g)
        (*g)++;
    if (finished_state((enum job_state) j->st.state)) {
        cds_list_add_tail(&j->done_link, &s->finished);
        s->nfinished++;
        return;
    }
    quota_take(s, j);
    if (j->st.state == JOB_QUEUED) {
        queue_link(s, j);
        return;
    }
    struct worker *w = sched_worker(s, j->st.worker_id);
    if (w) {
        occupy(s, j, w);
        worker_deadlines(s, j);
    } else {
        j->started_mono = mono(s, j->st.started_at);
        absent_add(s, j);
    }
}

/* Takes a job out of every structure its working status puts it in. */
static void detach(struct sched *s, struct job *j)
{
    uint64_t *g = state_gauge(s, (enum job_state) j->st.state);
    if (g)
        (*g)--;
    if (finished_state((enum job_state) j->st.state)) {
        cds_list_del(&j->done_link);
        s->nfinished--;
        return;
    }
    if (j->st.state == JOB_QUEUED)
        queue_remove(s, j);
    else if (j->worker)
        vacate(s, j);
    else if (j->absent)
        absent_remove(s, j);
    deadline_clear(s, j);
    quota_release(s, j);
}

/* ---- lifecycle ------------------------------------------------------------------------ */

static int match_job(struct cds_lfht_node *node, const void *key)
{
    return caa_container_of(node, struct job, node)->id == *(const uint64_t *) key;
}

static void free_job(struct job *j)
{
    free(j->output);
    free(j->new_output);
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

/* A decision about job r that took seconds, made in the round at monotonic time now. */
static void record_decision(struct sched *s, enum hodei_decision d, double seconds,
                            const struct job_ref *r, double now)
{
    s->cs.decisions[d]++;
    observe(s, SH_SCHEDULING_LATENCY, seconds, r, now, 0);
}

static void assign(struct sched *s, struct job *j, struct worker *w, double now)
{
    queue_remove(s, j);
    occupy(s, j, w);
    strcpy(j->st.worker_id, w->id);
    set_state(s, j, JOB_ASSIGNED, now);
    j->st.attempts++;
    j->st.assigned_at = wall(s, now);
    if (s->cfg.assignment_lease > 0)
        deadline_set(s, j, now + s->cfg.assignment_lease);
    tenant_count(s, j->tenant, TC_SCHEDULED, HODEI_F_JOBS_SCHEDULED_TOTAL);
    job_observe(s, SH_QUEUE_WAIT, now - j->queued_mono, j, now);
    emit(s, HODEI_EV_JOB_ASSIGNED, j, w);
}

/* Ends a job's hold on a worker (registered or absent). */
static void release(struct sched *s, struct job *j, double now)
{
    if (j->st.state == JOB_RUNNING)
        job_observe(s, SH_JOB_DURATION, now - j->started_mono, j, now);
    if (j->worker)
        vacate(s, j);
    else
        absent_remove(s, j);
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

/* Keeps tail as a job's output in memory, within the overall budget (oldest out first);
 * takes tail over. */
static void output_keep(struct sched *s, struct job *j, unsigned char *tail, size_t len)
{
    output_drop(s, j);
    if (!tail || len > s->cfg.output_budget) {
        free(tail);
        return;
    }
    while (s->output_bytes + len > s->cfg.output_budget)
        output_drop(s, cds_list_first_entry(&s->outputs, struct job, output_link));
    j->output = tail;
    j->output_len = len;
    s->output_bytes += len;
    cds_list_add_tail(&j->output_link, &s->outputs);
}

/* What an agent reported a job wrote: its size now, its tail once the change set commits. */
static void output_report(struct sched *s, struct job *j, const struct job_output *out)
{
    touch_job(s, j);
    j->st.output_bytes = out ? (int64_t) out->total : -1;
    free(j->new_output);
    j->new_output = NULL;
    j->new_output_len = 0;
    j->has_new_output = 1;
    if (out && out->len) {
        j->new_output = xmalloc(out->len);
        memcpy(j->new_output, out->tail, out->len);
        j->new_output_len = out->len;
    }
}

static void retire(struct sched *s, struct job *j)
{
    cds_list_add_tail(&j->done_link, &s->finished);
    s->nfinished++;
    quota_release(s, j);
}

/* Ends a job (already out of the queue and off its worker). */
static void finish(struct sched *s, struct job *j, enum job_state st, int error_type,
                   int has_exit_code, int exit_code, double now, enum hodei_event_type ev)
{
    set_state(s, j, st, now);
    j->st.error_type = (int8_t) error_type;
    j->st.has_exit_code = (uint8_t) has_exit_code;
    j->st.exit_code = exit_code;
    j->st.finished_at = wall(s, now);
    if (st == JOB_SUCCEEDED)
        tenant_count(s, j->tenant, TC_COMPLETED, HODEI_F_JOBS_COMPLETED_TOTAL);
    else
        tenant_count(s, j->tenant, (enum tenant_counter) (TC_FAILED + error_type),
                     HODEI_F_JOBS_FAILED_TOTAL);
    emit(s, ev, j, NULL);
    retire(s, j);
}

/* Puts a job that lost its attempt back in the queue: a requeued decision.  began: whether
 * the attempt counts (it does unless it never started). */
static void requeue(struct sched *s, struct job *j, int began, double now)
{
    struct job_ref r;
    job_ref(&r, j);
    double t0 = hodei_mono();
    set_state(s, j, JOB_QUEUED, now);
    if (!began)
        j->st.attempts--;
    j->st.worker_id[0] = '\0';
    j->st.assigned_at = j->st.started_at = 0;
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

/* A new job struct with the immutable fields of spec; not yet in any table. */
static struct job *job_new(struct sched *s, const struct job_spec *spec, uint64_t id,
                           double submitted_at, double now)
{
    struct job *j = xcalloc(1, sizeof *j);
    j->id = id;
    strcpy(j->tenant_id, spec->tenant_id);
    j->name = xstrdup(spec->name);
    j->command = xstrdup(spec->command);
    j->cpu_m = spec->cpu_m;
    j->memory_mb = spec->memory_mb;
    j->priority = spec->priority;
    j->timeout_s = spec->timeout_s;
    j->max_retries = spec->max_retries;
    j->submitted_at = submitted_at;
    j->deadline_slot = HEAP_NONE;
    j->tenant = tenant_for(s, spec->tenant_id, now);
    table_add(s->jobs, hash_u64(j->id), &j->node);
    cds_list_add_tail(&j->order_link, &s->all_jobs);
    return j;
}

enum sched_rc sched_submit(struct sched *s, const struct job_spec *spec, double now,
                           struct job **out)
{
    if (s->nunfinished >= s->cfg.max_jobs)
        return SCHED_FULL;
    struct tenant_quota *q = quota_find(s, spec->tenant_id);
    if (q && s->cfg.max_jobs_per_tenant && q->unfinished >= s->cfg.max_jobs_per_tenant)
        return SCHED_TENANT_FULL;
    struct job *j = job_new(s, spec, s->next_job_id++, wall(s, now), now);
    j->st.state = JOB_QUEUED;
    j->st.error_type = -1;
    j->st.output_bytes = -1;
    touch_job(s, j);
    record_transition(s, j, -1, JOB_QUEUED, now);
    s->g.queued++;
    quota_take(s, j);
    queue_insert(s, j, now);
    tenant_count(s, j->tenant, TC_SUBMITTED, HODEI_F_JOBS_SUBMITTED_TOTAL);
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

/* The job, when it is in state want (or want2) on worker worker_id: registered there, or
 * running there before a restart and its worker not registered again yet. */
static enum sched_rc worker_job(struct sched *s, uint64_t id, const char *worker_id,
                                enum job_state want, enum job_state want2, struct job **out)
{
    struct job *j = sched_job(s, id);
    if (!j)
        return SCHED_NOT_FOUND;
    if (out)
        *out = j;
    if (j->st.state != want && j->st.state != want2)
        return SCHED_CONFLICT;
    if (j->worker)
        return strcmp(j->worker->id, worker_id) == 0 ? SCHED_OK : SCHED_CONFLICT;
    if (j->absent && j->st.state == JOB_RUNNING)
        return strcmp(j->st.worker_id, worker_id) == 0 ? SCHED_OK : SCHED_CONFLICT;
    return SCHED_CONFLICT;
}

enum sched_rc sched_start(struct sched *s, uint64_t id, const char *worker_id, double now,
                          struct job **out)
{
    struct job *j = NULL;
    /* a start its worker sends again (its answer was lost): already so */
    if (worker_job(s, id, worker_id, JOB_RUNNING, JOB_RUNNING, &j) == SCHED_OK) {
        if (out)
            *out = j;
        return SCHED_OK;
    }
    enum sched_rc rc = worker_job(s, id, worker_id, JOB_ASSIGNED, JOB_ASSIGNED, &j);
    if (out)
        *out = j;
    if (rc != SCHED_OK)
        return rc;
    set_state(s, j, JOB_RUNNING, now);
    j->st.started_at = wall(s, now);
    j->started_mono = now;
    touch_worker(s, j->worker);
    j->worker->lease_strikes = 0;
    deadline_clear(s, j);
    if (j->timeout_s)
        deadline_set(s, j, now + j->timeout_s);
    emit(s, HODEI_EV_JOB_STARTED, j, NULL);
    return SCHED_OK;
}

/* A report its worker sends again after the job ended that way (its answer was lost). */
static int already_reported(const struct job *j, const char *worker_id, enum job_state st,
                            int error_type)
{
    return j && j->st.state == st && strcmp(j->st.worker_id, worker_id) == 0
           && (st != JOB_FAILED || j->st.error_type == error_type);
}

enum sched_rc sched_succeed(struct sched *s, uint64_t id, const char *worker_id, int exit_code,
                            const struct job_output *output, double now, struct job **out)
{
    struct job *j = NULL;
    enum sched_rc rc = worker_job(s, id, worker_id, JOB_RUNNING, JOB_RUNNING, &j);
    if (out)
        *out = j;
    if (rc == SCHED_CONFLICT && already_reported(j, worker_id, JOB_SUCCEEDED, -1))
        return SCHED_OK;
    if (rc != SCHED_OK)
        return rc;
    output_report(s, j, output);
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
    if (rc == SCHED_CONFLICT && already_reported(j, worker_id, JOB_FAILED, (int) error_type))
        return SCHED_OK;
    if (rc != SCHED_OK)
        return rc;
    output_report(s, j, output);
    attempt_failed(s, j, error_type, has_exit_code, exit_code, now);
    return SCHED_OK;
}

/* ---- workers -------------------------------------------------------------------------- */

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

/* A worker in the tables and the total-capacity index (its health decides the free index). */
static void worker_link(struct sched *s, struct worker *w)
{
    cap_index_insert(&s->total_index, &w->total_node, w->memory_mb, w->cpu_m, w->seq);
    table_add(s->workers, hash_string(w->id), &w->node);
    if (w->session.id[0])
        table_add(s->sessions, hash_string(w->session.id), &w->session_node);
    s->g.workers_total++;
    s->capacity_epoch++;
}

static void worker_unlink(struct sched *s, struct worker *w)
{
    cap_index_remove(&s->total_index, &w->total_node);
    table_del(s->workers, &w->node);
    if (w->session.id[0])
        table_del(s->sessions, &w->session_node);
    s->g.workers_total--;
    s->capacity_epoch++;
}

static void set_health(struct sched *s, struct worker *w, int healthy)
{
    w->healthy = healthy;
    if (healthy) {
        cap_index_insert(&s->free_index, &w->free_node, w->free_memory_mb, w->free_cpu_m,
                         w->seq);
        s->g.workers_healthy++;
        s->capacity_epoch++;
    } else {
        cap_index_remove(&s->free_index, &w->free_node);
        s->g.workers_healthy--;
    }
}

static void set_healthy(struct sched *s, struct worker *w, int healthy)
{
    touch_worker(s, w);
    set_health(s, w, healthy);
}

static int listed(const struct worker_spec *spec, uint64_t id)
{
    for (unsigned i = 0; i < spec->nrunning; i++)
        if (spec->running[i] == id)
            return 1;
    return 0;
}

/* A worker registers again after a restart: the running jobs it lists are its again, the
 * rest of what it had is lost (worker_lost) or, not started, queued again. */
static void adopt(struct sched *s, struct worker *w, struct absent *a,
                  const struct worker_spec *spec, double now)
{
    for (;;) {
        if (cds_list_empty(&a->jobs))
            break;
        struct job *j = cds_list_first_entry(&a->jobs, struct job, worker_link);
        int last = j->worker_link.next == &a->jobs;
        if (j->st.state == JOB_RUNNING && listed(spec, j->id) && j->cpu_m <= w->free_cpu_m
            && j->memory_mb <= w->free_memory_mb) {
            touch_job(s, j);
            absent_remove(s, j);
            occupy(s, j, w);
            worker_deadlines(s, j);
        } else if (j->st.state == JOB_RUNNING) {
            attempt_failed(s, j, HODEI_ERR_WORKER_LOST, 0, 0, now);
        } else {
            release(s, j, now);
            requeue(s, j, 0, now);
        }
        if (last)   /* the record went with its last job */
            break;
    }
}

enum sched_rc sched_register(struct sched *s, const struct worker_spec *spec, double now,
                             struct worker **out)
{
    if (s->g.workers_total >= s->cfg.max_workers) {
        /* the series it would have had, folded away */
        s->cs.label_overflow[HODEI_F_CPU_USAGE_PERCENT]++;
        s->cs.label_overflow[HODEI_F_MEMORY_USAGE_MB]++;
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
        while (sched_worker(s, id) || absent_find(s, id));
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
    CDS_INIT_LIST_HEAD(&w->jobs);
    touch_worker(s, w);
    w->is_new = 1;
    worker_link(s, w);
    set_health(s, w, 1);
    s->cs.workers_registered++;
    emit(s, HODEI_EV_WORKER_REGISTERED, NULL, w);
    struct absent *a = absent_find(s, w->id);
    if (a)
        adopt(s, w, a, spec, now);
    if (out)
        *out = w;
    return SCHED_OK;
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
    mark_changed(s);
    if (!w->healthy && now >= w->quarantined_until) {
        set_healthy(s, w, 1);
        emit(s, HODEI_EV_WORKER_RECOVERED, NULL, w);
    }
    if (out)
        *out = w;
    return SCHED_OK;
}

/* A worker silent for worker_timeout: out of the tables now, freed when the change set
 * commits (a rollback links it again). */
static void worker_remove(struct sched *s, struct worker *w, double now)
{
    if (w->healthy)
        set_healthy(s, w, 0);   /* out of the free index before its jobs give back */
    touch_worker(s, w);
    worker_unlink(s, w);
    w->removed = 1;
    emit(s, HODEI_EV_WORKER_REMOVED, NULL, w);
    while (!cds_list_empty(&w->jobs)) {
        struct job *j = cds_list_first_entry(&w->jobs, struct job, worker_link);
        attempt_failed(s, j, HODEI_ERR_WORKER_LOST, 0, 0, now);
    }
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
    touch_worker(s, w);
    w->lease_strikes++;
    double hold = s->cfg.assignment_lease;
    for (uint32_t i = 1; i < w->lease_strikes && hold < 3600; i++)
        hold *= 2;
    w->quarantined_until = now + (hold < 3600 ? hold : 3600);
    if (w->healthy) {
        set_healthy(s, w, 0);
        emit(s, HODEI_EV_WORKER_UNHEALTHY, NULL, w);
    }
}

/* A job whose worker did not come back after a restart in time. */
static void orphan_expired(struct sched *s, struct job *j, double now)
{
    if (j->st.state == JOB_RUNNING) {
        attempt_failed(s, j, HODEI_ERR_WORKER_LOST, 0, 0, now);
    } else {
        release(s, j, now);
        requeue(s, j, 0, now);
    }
}

/* ---- placement and time --------------------------------------------------------------- */

unsigned sched_round(struct sched *s, double now)
{
    if (s->g.workers_total == 0)
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
            emit(s, HODEI_EV_WORKER_UNHEALTHY, NULL, w);
        }
    }
    rcu_read_unlock();
    struct job *j;
    while ((j = heap_top(&s->deadlines)) && j->deadline_mono <= now) {
        if (j->absent)
            orphan_expired(s, j, now);
        else if (j->st.state == JOB_ASSIGNED)
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

void sched_prune(struct sched *s)
{
    struct job *j;
    cds_list_for_each_entry(j, &s->finished, done_link) {
        if (s->nfinished - s->cs.npruned <= s->cfg.job_retention)
            break;
        if (!j->pruned) {   /* the pruned ones are the oldest: a prefix of the list */
            j->pruned = 1;
            s->cs.npruned++;
        }
    }
}

/* ---- commit and rollback -------------------------------------------------------------- */

static void changes_clear(struct sched *s)
{
    struct sched_changes *cs = &s->cs;
    cs->ntransitions = 0;
    memset(cs->decisions, 0, sizeof cs->decisions);
    cs->workers_registered = 0;
    memset(cs->label_overflow, 0, sizeof cs->label_overflow);
}

void sched_commit(struct sched *s, int stored)
{
    struct sched_changes *cs = &s->cs;
    struct job *j, *jn;
    cds_list_for_each_entry_safe(j, jn, &cs->jobs, touch_link) {
        if (j->has_new_output) {
            output_keep(s, j, j->new_output, j->new_output_len);
            j->new_output = NULL;
            j->new_output_len = 0;
            j->has_new_output = 0;
        }
        status_publish(j);
        j->touched = 0;
        cds_list_del(&j->touch_link);
    }
    for (; cs->npruned; cs->npruned--) {
        j = cds_list_first_entry(&s->finished, struct job, done_link);
        assert(j->pruned);
        cds_list_del(&j->done_link);
        cds_list_del(&j->order_link);
        s->nfinished--;
        output_drop(s, j);
        table_del(s->jobs, &j->node);
        call_rcu(&j->rcu, free_job_rcu);
    }
    struct tenant *t, *tn;
    cds_list_for_each_entry_safe(t, tn, &cs->tenants, touch_link) {
        for (int c = 0; c < TC_COUNT; c++)
            if (t->pending[c])
                counter_add(&t->count[c], t->pending[c]);
        memset(t->pending, 0, sizeof t->pending);
        t->touched = 0;
        cds_list_del(&t->touch_link);
    }
    __atomic_store_n(&s->ntenants_committed, s->ntenants, __ATOMIC_RELEASE);
    struct sched_metrics *m = &s->m;
    for (int d = 0; d < HODEI_DECISION_COUNT; d++)
        if (cs->decisions[d])
            counter_add(&m->decisions[d], cs->decisions[d]);
    if (cs->workers_registered)
        counter_add(&m->workers_registered, cs->workers_registered);
    for (int f = 0; f < HODEI_F_COUNT; f++)
        if (cs->label_overflow[f])
            counter_add(&m->label_overflow[f], cs->label_overflow[f]);
    size_t kept = 0;
    for (size_t i = 0; i < cs->nobs; i++) {
        if (cs->obs[i].carried && !stored)
            cs->obs[kept++] = cs->obs[i];
        else
            observation_apply(&m->h[cs->obs[i].histogram], &cs->obs[i]);
    }
    cs->nobs = kept;
    struct worker *w, *wn;
    cds_list_for_each_entry_safe(w, wn, &cs->workers, touch_link) {
        cds_list_del(&w->touch_link);
        w->touched = w->is_new = 0;
        if (w->removed)
            call_rcu(&w->rcu, free_worker_rcu);
    }
    __atomic_store_n(&s->committed_worker_seq, s->next_worker_seq, __ATOMIC_RELEASE);
    __atomic_store_n(&s->committed_next_job_id, s->next_job_id, __ATOMIC_RELEASE);
    changes_clear(s);
    sched_publish_gauges(s);
    mark_changed(s);
}

void sched_rollback(struct sched *s)
{
    struct sched_changes *cs = &s->cs;
    struct job *j, *jn;
    cds_list_for_each_entry(j, &s->finished, done_link) {
        if (!j->pruned)
            break;
        j->pruned = 0;
    }
    cs->npruned = 0;
    /* every touched job out of what its working status put it in */
    cds_list_for_each_entry(j, &cs->jobs, touch_link)
        detach(s, j);
    cds_list_for_each_entry_safe(j, jn, &cs->jobs, touch_link) {
        free(j->new_output);
        j->new_output = NULL;
        j->new_output_len = 0;
        j->has_new_output = 0;
        if (j->id >= s->committed_next_job_id) {   /* submitted in the change set */
            cds_list_del(&j->touch_link);
            cds_list_del(&j->order_link);
            table_del(s->jobs, &j->node);
            call_rcu(&j->rcu, free_job_rcu);
        }
    }
    /* workers as committed: new ones go, removed ones come back, health as it was */
    struct worker *w, *wn;
    cds_list_for_each_entry_safe(w, wn, &cs->workers, touch_link) {
        if (!w->is_new)
            continue;
        assert(cds_list_empty(&w->jobs));
        if (w->healthy)
            set_health(s, w, 0);
        if (!w->removed)
            worker_unlink(s, w);
        cds_list_del(&w->touch_link);
        call_rcu(&w->rcu, free_worker_rcu);
    }
    cds_list_for_each_entry_safe(w, wn, &cs->workers, touch_link) {
        if (w->removed) {
            worker_link(s, w);
            w->removed = 0;
        }
        if (w->healthy != w->pre_healthy)
            set_health(s, w, w->pre_healthy);
        w->quarantined_until = w->pre_quarantined_until;
        w->lease_strikes = w->pre_lease_strikes;
        w->touched = 0;
        cds_list_del(&w->touch_link);
    }
    /* tenants: counts as committed, the ones created since gone */
    struct tenant *t, *tn;
    cds_list_for_each_entry_safe(t, tn, &cs->tenants, touch_link) {
        memset(t->pending, 0, sizeof t->pending);
        t->touched = 0;
        cds_list_del(&t->touch_link);
    }
    while (s->ntenants > s->ntenants_committed) {
        t = s->tenants[--s->ntenants];
        assert(cds_list_empty(&t->levels) && t->active == 0);
        if (t == s->overflow)
            s->overflow = NULL;
        table_del(s->tenant_table, &t->node);
        call_rcu(&t->rcu, free_tenant_rcu);
    }
    /* every touched job that was committed: its committed status, and where it puts it */
    cds_list_for_each_entry_safe(j, jn, &cs->jobs, touch_link) {
        j->st = j->cst;
        attach(s, j);
        j->touched = 0;
        cds_list_del(&j->touch_link);
    }
    size_t kept = 0;
    for (size_t i = 0; i < cs->nobs; i++)
        if (cs->obs[i].carried)
            cs->obs[kept++] = cs->obs[i];
    cs->nobs = kept;
    changes_clear(s);
    s->blocked_job = 0;
    s->capacity_epoch++;
    sched_publish_gauges(s);
}

/* ---- restart -------------------------------------------------------------------------- */

void sched_load_next_job_id(struct sched *s, uint64_t next)
{
    if (next > s->next_job_id)
        s->next_job_id = next;
}

void sched_load_start_time(struct sched *s, double unix_seconds)
{
    s->start_time = unix_seconds;
    s->start_time_kept = 1;
}

struct tenant *sched_load_tenant(struct sched *s, const char *id, double created)
{
    struct cds_lfht_node *node = find(s->tenant_table, hash_string(id), match_tenant, id);
    if (node)
        return caa_container_of(node, struct tenant, node);
    return tenant_new(s, id, created);
}

void sched_load_tenant_count(struct tenant *t, enum tenant_counter c, uint64_t value)
{
    t->count[c] = value;
}

int sched_load_histogram(struct sched *s, enum sched_histogram_id h, double sum,
                         const uint64_t *counts, const struct hodei_native_view *native)
{
    return hodei_histogram_restore(&s->m.h[h], sum, counts, native);
}

struct job *sched_load_job(struct sched *s, const struct job_spec *spec, uint64_t id,
                           double submitted_at, const struct job_status *st,
                           const unsigned char *output, size_t output_len, double now)
{
    struct job *j = job_new(s, spec, id, submitted_at, now);
    j->st = j->cst = *st;
    j->queued_mono = j->st.attempts == 0 ? mono(s, submitted_at) : now;
    attach(s, j);
    if (output_len) {
        unsigned char *tail = xmalloc(output_len);
        memcpy(tail, output, output_len);
        output_keep(s, j, tail, output_len);
    }
    sched_load_next_job_id(s, id + 1);
    return j;
}

void sched_load_done(struct sched *s, double now)
{
    /* not started before the restart: back to the queue (the first change set) */
    size_t n = 0, cap = 0;
    struct job **assigned = NULL;
    struct cds_lfht_iter it;
    struct absent *a;
    rcu_read_lock();
    cds_lfht_for_each_entry(s->absents, &it, a, node) {
        struct job *j;
        cds_list_for_each_entry(j, &a->jobs, worker_link) {
            if (j->st.state != JOB_ASSIGNED)
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                assigned = xrealloc(assigned, cap * sizeof *assigned);
            }
            assigned[n++] = j;
        }
    }
    rcu_read_unlock();
    __atomic_store_n(&s->committed_next_job_id, s->next_job_id, __ATOMIC_RELEASE);
    __atomic_store_n(&s->ntenants_committed, s->ntenants, __ATOMIC_RELEASE);
    sched_publish_gauges(s);
    for (size_t i = 0; i < n; i++) {
        release(s, assigned[i], now);
        requeue(s, assigned[i], 0, now);
    }
    free(assigned);
}

/* ---- setup ---------------------------------------------------------------------------- */

int sched_init(struct sched *s, const struct sched_config *cfg, double now_mono,
               double now_wall, sched_event_fn emit_fn, void *emit_ctx)
{
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    struct cds_lfht **tables[] = { &s->jobs, &s->workers, &s->tenant_table, &s->sessions,
                                   &s->quotas, &s->absents };
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++)
        *tables[i] = must(cds_lfht_new(1024, 1024, 0,
                                       CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, NULL));
    s->tenants_cap = cfg->max_tenants + 1;
    s->tenants = xcalloc(s->tenants_cap, sizeof *s->tenants);
    s->next_job_id = s->committed_next_job_id = 1;
    CDS_INIT_LIST_HEAD(&s->all_jobs);
    CDS_INIT_LIST_HEAD(&s->outputs);
    CDS_INIT_LIST_HEAD(&s->finished);
    CDS_INIT_LIST_HEAD(&s->cs.jobs);
    CDS_INIT_LIST_HEAD(&s->cs.tenants);
    CDS_INIT_LIST_HEAD(&s->cs.workers);
    cap_index_init(&s->free_index, 0x243f6a8885a308d3ull);
    cap_index_init(&s->total_index, 0x13198a2e03707344ull);
    s->wall_offset = now_wall - now_mono;
    s->start_time = whole_micros(now_wall);
    s->orphan_deadline = now_mono + cfg->worker_timeout;
    s->emit = emit_fn;
    s->emit_ctx = emit_ctx;
    for (int h = 0; h < SH_COUNT; h++)
        histogram_init(&s->m.h[h], sched_histogram_family[h]);
    for (int l = 0; l < SCHED_LEVELS; l++)
        s->levels[l] = HEAP_INIT(level_less, struct tenant_level, heap_slot);
    s->deadlines = HEAP_INIT(deadline_less, struct job, deadline_slot);
    return 0;
}

void sched_destroy(struct sched *s)
{
    struct cds_lfht_iter it;
    struct cds_lfht_node *node;
    struct worker *w, *wn;
    /* workers removed by an open change set are in no table any more */
    cds_list_for_each_entry_safe(w, wn, &s->cs.workers, touch_link)
        if (w->removed)
            call_rcu(&w->rcu, free_worker_rcu);
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
    cds_lfht_for_each(s->absents, &it, node) {
        cds_lfht_del(s->absents, node);
        call_rcu(&caa_container_of(node, struct absent, node)->rcu, free_absent_rcu);
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
    free(s->cs.transitions);
    free(s->cs.obs);
    cds_lfht_destroy(s->jobs, NULL);
    cds_lfht_destroy(s->sessions, NULL);
    cds_lfht_destroy(s->quotas, NULL);
    cds_lfht_destroy(s->absents, NULL);
    cds_lfht_destroy(s->workers, NULL);
    cds_lfht_destroy(s->tenant_table, NULL);
}
