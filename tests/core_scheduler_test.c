/* core_scheduler_test.c — placement, job lifecycle, health, caps and overflow of the
 * scheduler (core/scheduler.c) and its capacity index, without HTTP. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "capindex.h"
#include "hodei_snapshot.h"
#include "metrics.h"
#include "persist.h"
#include "scheduler.h"

/* ---- fixture -------------------------------------------------------------------------- */

struct recorder {
    int count[HODEI_EV_COUNT];
    enum hodei_event_type last;
};

static void record(void *ctx, enum hodei_event_type type, const struct job *j,
                   const struct worker *w)
{
    struct recorder *r = ctx;
    r->count[type]++;
    r->last = type;
}

struct fixture {
    struct sched s;
    struct recorder ev;
};

static const struct sched_config default_cfg = {
    .max_tenants = 100, .max_workers = 100, .max_jobs = 1000, .job_retention = 100,
    .heartbeat_timeout = 10, .worker_timeout = 30 };

static int setup_with(void **state, const struct sched_config *cfg)
{
    struct fixture *f = calloc(1, sizeof *f);
    rcu_register_thread();
    assert_int_equal(sched_init(&f->s, cfg, 1000.0, 1.7e9, record, &f->ev), 0);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, &default_cfg);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    sched_destroy(&f->s);
    free(f);
    return 0;
}

static struct worker *add_worker(struct sched *s, const char *id, uint32_t cpu, uint32_t mem,
                                 double now)
{
    struct worker_spec spec = { .cpu_m = cpu, .memory_mb = mem };
    snprintf(spec.id, sizeof spec.id, "%s", id);
    struct worker *w = NULL;
    assert_int_equal(sched_register(s, &spec, now, &w), SCHED_OK);
    return w;
}

static struct job *submit(struct sched *s, const char *tenant, uint32_t cpu, uint32_t mem,
                          int priority, double now)
{
    struct job_spec spec = { .cpu_m = cpu, .memory_mb = mem, .priority = priority,
                             .command = "true" };
    snprintf(spec.tenant_id, sizeof spec.tenant_id, "%s", tenant);
    struct job *j = NULL;
    assert_int_equal(sched_submit(s, &spec, now, &j), SCHED_OK);
    return j;
}

static const char *worker_of(const struct job *j)
{
    return j->st.worker_id;
}

/* What readers see: the change set committed first, as the engine does after each batch. */
static const struct sched_metrics *committed(struct sched *s)
{
    sched_commit(s, 1);
    return &s->m;
}

/* Tenant i's counter c, committed. */
static uint64_t tcount(struct sched *s, uint32_t i, enum tenant_counter c)
{
    sched_commit(s, 1);
    return s->tenants[i]->count[c];
}

/* ---- capacity index --------------------------------------------------------------------- */

struct item {
    struct cap_node node;
    uint32_t mem, cpu;
    int present;
};

static void test_capindex_matches_brute_force(void **state)
{
    enum { N = 500 };
    static struct item items[N];
    struct cap_index ix;
    cap_index_init(&ix, 42);
    srand(7);
    for (int i = 0; i < N; i++) {
        items[i].mem = (uint32_t) (rand() % 64) * 64;
        items[i].cpu = (uint32_t) (rand() % 32) * 250;
        items[i].present = 1;
        cap_index_insert(&ix, &items[i].node, items[i].mem, items[i].cpu, (uint64_t) i);
    }
    for (int round = 0; round < 4000; round++) {
        if (round % 3 == 0) {   /* move one item: what placement does */
            int i = rand() % N;
            if (items[i].present)
                cap_index_remove(&ix, &items[i].node);
            items[i].mem = (uint32_t) (rand() % 64) * 64;
            items[i].cpu = (uint32_t) (rand() % 32) * 250;
            items[i].present = rand() % 5 != 0;
            if (items[i].present)
                cap_index_insert(&ix, &items[i].node, items[i].mem, items[i].cpu, (uint64_t) i);
        }
        uint32_t mem = (uint32_t) (rand() % 4200), cpu = (uint32_t) (rand() % 8200);
        int best = -1;
        for (int i = 0; i < N; i++) {
            if (!items[i].present || items[i].mem < mem || items[i].cpu < cpu)
                continue;
            if (best < 0 || items[i].mem < items[best].mem
                || (items[i].mem == items[best].mem && (items[i].cpu < items[best].cpu
                    || (items[i].cpu == items[best].cpu && i < best))))
                best = i;
        }
        struct cap_node *got = cap_index_best_fit(&ix, mem, cpu);
        if (best < 0)
            assert_null(got);
        else
            assert_ptr_equal(got, &items[best].node);
    }
}

/* ---- placement ------------------------------------------------------------------------ */

static void test_fit_and_best_fit(void **state)
{
    struct fixture *f = *state;
    struct sched *s = &f->s;
    add_worker(s, "big", 8000, 16384, 1000);
    add_worker(s, "small", 2000, 2048, 1000);
    add_worker(s, "medium", 4000, 4096, 1000);
    struct job *a = submit(s, "t", 1000, 1024, 0, 1000);    /* fits all: least memory wins */
    struct job *b = submit(s, "t", 3000, 3000, 0, 1000);    /* medium */
    struct job *c = submit(s, "t", 6000, 1024, 0, 1000);    /* only big has the cpu */
    assert_int_equal(sched_round(s, 1000), 3);
    assert_string_equal(worker_of(a), "small");
    assert_string_equal(worker_of(b), "medium");
    assert_string_equal(worker_of(c), "big");
    assert_int_equal(committed(s)->decisions[HODEI_DECISION_ASSIGNED], 3);
    struct worker *small = sched_worker(s, "small");
    assert_int_equal(small->free_cpu_m, 1000);
    assert_int_equal(small->free_memory_mb, 1024);
    assert_int_equal(committed(s)->jobs_assigned, 3);
    assert_int_equal(committed(s)->jobs_queued, 0);
    assert_int_equal(committed(s)->h[SH_QUEUE_WAIT].count[0], 3);
    assert_int_equal(f->ev.count[HODEI_EV_JOB_ASSIGNED], 3);
}

static void test_priority_then_fifo(void **state)
{
    struct fixture *f = *state;
    struct sched *s = &f->s;
    struct job *low = submit(s, "t", 1000, 100, -5, 1000);
    struct job *first = submit(s, "t", 1000, 100, 10, 1000);
    struct job *second = submit(s, "t", 1000, 100, 10, 1000);
    struct job *mid = submit(s, "t", 1000, 100, 0, 1000);
    assert_int_equal(sched_round(s, 1000), 0);   /* no worker: no decision */
    add_worker(s, "w", 1000, 1000, 1000);
    /* one slot at a time: each success frees it for the next in line */
    struct job *order[] = { first, second, mid, low };
    for (int i = 0; i < 4; i++) {
        sched_round(s, 1000);
        assert_int_equal(order[i]->st.state, JOB_ASSIGNED);
        for (int k = i + 1; k < 4; k++)
            assert_int_equal(order[k]->st.state, JOB_QUEUED);
        assert_int_equal(sched_start(s, order[i]->id, "w", 1001, NULL), SCHED_OK);
        assert_int_equal(sched_succeed(s, order[i]->id, "w", 0, NULL, 1002, NULL), SCHED_OK);
    }
}

static void test_fair_share_across_tenants(void **state)
{
    struct fixture *f = *state;
    struct sched *s = &f->s;
    add_worker(s, "w", 4000, 4000, 1000);
    /* tenant a floods the queue first, b and c come later */
    struct job *a[4], *b[2], *c[1];
    for (int i = 0; i < 4; i++)
        a[i] = submit(s, "a", 1000, 100, 0, 1000);
    for (int i = 0; i < 2; i++)
        b[i] = submit(s, "b", 1000, 100, 0, 1000);
    c[0] = submit(s, "c", 1000, 100, 0, 1000);
    assert_int_equal(sched_round(s, 1000), 5);   /* 4 placed, then no capacity */
    /* a0 (oldest, all idle), then b0 and c0 (0 active) before a1; then a1 (a:1, b:1 → a's
     * head is older) */
    assert_int_equal(a[0]->st.state, JOB_ASSIGNED);
    assert_int_equal(b[0]->st.state, JOB_ASSIGNED);
    assert_int_equal(c[0]->st.state, JOB_ASSIGNED);
    assert_int_equal(a[1]->st.state, JOB_ASSIGNED);
    assert_int_equal(b[1]->st.state, JOB_QUEUED);
    assert_int_equal(a[2]->st.state, JOB_QUEUED);
    assert_int_equal(committed(s)->decisions[HODEI_DECISION_NO_CAPACITY], 1);
    /* c's job ends: b (1 active) goes before a (2 active) although a's head is older */
    assert_int_equal(sched_cancel(s, c[0]->id, 1001, NULL), SCHED_OK);
    sched_round(s, 1001);
    assert_int_equal(b[1]->st.state, JOB_ASSIGNED);
    assert_int_equal(a[2]->st.state, JOB_QUEUED);
}

static void test_never_fits_is_rejected(void **state)
{
    struct fixture *f = *state;
    struct sched *s = &f->s;
    add_worker(s, "w1", 2000, 2048, 1000);
    add_worker(s, "w2", 4000, 1024, 1000);
    /* more cpu than any worker; then enough cpu somewhere and memory elsewhere, never both */
    struct job *huge = submit(s, "t", 5000, 100, 0, 1000);
    struct job *split = submit(s, "t", 3000, 2000, 0, 1000);
    struct job *ok = submit(s, "t", 100, 100, 0, 1000);
    assert_int_equal(sched_round(s, 1000), 3);
    assert_int_equal(huge->st.state, JOB_FAILED);
    assert_int_equal(huge->st.error_type, HODEI_ERR_OTHER);
    assert_int_equal(split->st.state, JOB_FAILED);
    assert_int_equal(ok->st.state, JOB_ASSIGNED);
    assert_int_equal(committed(s)->decisions[HODEI_DECISION_REJECTED], 2);
    assert_int_equal(f->ev.count[HODEI_EV_JOB_REJECTED], 2);
    /* still visible, counted as a failure of the tenant */
    assert_ptr_equal(sched_job(s, huge->id), huge);
    assert_int_equal(tcount(s, 0, TC_FAILED + HODEI_ERR_OTHER), 2);
    assert_int_equal(committed(s)->jobs_queued, 0);
}

static void test_no_capacity_counted_once_per_capacity_change(void **state)
{
    struct fixture *f = *state;
    struct sched *s = &f->s;
    add_worker(s, "w", 1000, 1000, 1000);
    struct job *a = submit(s, "t", 800, 100, 0, 1000);
    struct job *b = submit(s, "t", 800, 100, 0, 1000);
    assert_int_equal(sched_round(s, 1000), 2);     /* a assigned, b no_capacity */
    assert_int_equal(committed(s)->decisions[HODEI_DECISION_NO_CAPACITY], 1);
    /* nothing changed: no new decision however often the scheduler looks */
    for (int i = 0; i < 5; i++)
        assert_int_equal(sched_round(s, 1000 + i), 0);
    /* a job behind the blocked head does not change the head (strict order) */
    struct job *c = submit(s, "t", 100, 100, 0, 1001);
    assert_int_equal(sched_round(s, 1001), 0);
    assert_int_equal(c->st.state, JOB_QUEUED);
    /* a higher-priority job becomes the head: one decision for it; b, head again, is not
     * decided again since capacity only shrank */
    struct job *urgent = submit(s, "t", 100, 100, 5, 1001);
    assert_int_equal(sched_round(s, 1001), 1);
    assert_int_equal(urgent->st.state, JOB_ASSIGNED);
    assert_int_equal(committed(s)->decisions[HODEI_DECISION_NO_CAPACITY], 1);
    /* capacity frees: b and then c go */
    assert_int_equal(sched_start(s, a->id, "w", 1002, NULL), SCHED_OK);
    assert_int_equal(sched_succeed(s, a->id, "w", 0, NULL, 1003, NULL), SCHED_OK);
    assert_int_equal(sched_round(s, 1003), 2);
    assert_int_equal(b->st.state, JOB_ASSIGNED);
    assert_int_equal(c->st.state, JOB_ASSIGNED);
    assert_int_equal(committed(s)->decisions[HODEI_DECISION_ASSIGNED], 4);
    assert_int_equal(committed(s)->decisions[HODEI_DECISION_NO_CAPACITY], 1);
    /* every decision is timed */
    uint64_t timed = 0;
    for (unsigned i = 0; i <= committed(s)->h[SH_SCHEDULING_LATENCY].nbuckets; i++)
        timed += committed(s)->h[SH_SCHEDULING_LATENCY].count[i];
    assert_int_equal(timed, 5);
}

/* ---- histograms ------------------------------------------------------------------------ */

/* Bucket k of h has the exemplar {job_id, tenant_id} v at unix time t. */
static void expect_exemplar(const struct hodei_histogram *h, unsigned k, const struct job *j,
                            double v, double t)
{
    const struct hodei_exemplar_slot *e = &h->exemplar[k];
    char want[160], got[160];
    snprintf(want, sizeof want, "job_id=%llu tenant_id=%s %.17g %.17g",
             (unsigned long long) j->id, j->tenant_id, v, t);
    const char *text = (const char *) e->text;
    snprintf(got, sizeof got, "%.*s=%.*s %.*s=%.*s %.17g %.17g", e->name_len[0], text,
             e->value_len[0], text + e->name_len[0], e->name_len[1],
             text + e->name_len[0] + e->value_len[0], e->value_len[1],
             text + e->name_len[0] + e->value_len[0] + e->name_len[1], e->value, e->timestamp);
    if (e->nlabels != 2 || strcmp(want, got) != 0)
        fail_msg("bucket %u: exemplar %s, want %s", k, e->nlabels ? got : "none", want);
}

/* Classic and native parts agree: the same observations in both. */
static void expect_agreement(const struct hodei_histogram *h, uint64_t n)
{
    uint64_t total = 0;
    for (unsigned k = 0; k <= h->nbuckets; k++)
        total += h->count[k];
    assert_int_equal(total, n);
    assert_int_equal(h->native.count, n);
    assert_true(h->sum == h->native.sum);
}

/* Each histogram names the job behind each bucket (its latest observation there), from the
 * same observations as its classic and native parts; a duration from a clock gone backwards
 * is counted nowhere. */
static void test_histograms_name_their_jobs(void **state)
{
    struct fixture *f = *state;
    struct sched *s = &f->s;
    add_worker(s, "w", 8000, 8192, 1000);
    struct job *a = submit(s, "acme", 1000, 1024, 0, 1000);
    struct job *b = submit(s, "globex", 1000, 1024, 0, 1000.25);
    assert_int_equal(sched_round(s, 1000.5), 2);
    /* waits of 0.5 and 0.25 s, both in le=0.5: b was last */
    expect_agreement(&committed(s)->h[SH_QUEUE_WAIT], 2);
    assert_int_equal(committed(s)->h[SH_QUEUE_WAIT].count[1], 2);
    expect_exemplar(&committed(s)->h[SH_QUEUE_WAIT], 1, b, 0.25, 1.7e9 + 0.5);
    /* two decisions, each well below 1 ms */
    expect_agreement(&committed(s)->h[SH_SCHEDULING_LATENCY], 2);
    assert_int_equal(committed(s)->h[SH_SCHEDULING_LATENCY].count[0], 2);
    const struct hodei_exemplar_slot *d = &committed(s)->h[SH_SCHEDULING_LATENCY].exemplar[0];
    expect_exemplar(&committed(s)->h[SH_SCHEDULING_LATENCY], 0, b, d->value, 1.7e9 + 0.5);
    assert_true(d->value >= 0 && d->value < 1e-3);
    /* a runs 2.5 s: le=2.5 */
    assert_int_equal(sched_start(s, a->id, "w", 1001, NULL), SCHED_OK);
    assert_int_equal(sched_succeed(s, a->id, "w", 0, NULL, 1003.5, NULL), SCHED_OK);
    expect_agreement(&committed(s)->h[SH_JOB_DURATION], 1);
    assert_int_equal(committed(s)->h[SH_JOB_DURATION].count[3], 1);
    expect_exemplar(&committed(s)->h[SH_JOB_DURATION], 3, a, 2.5, 1.7e9 + 3.5);
    /* b "ends" before it started: nothing counted, in either part, and a stays the exemplar */
    assert_int_equal(sched_start(s, b->id, "w", 1005, NULL), SCHED_OK);
    assert_int_equal(sched_succeed(s, b->id, "w", 0, NULL, 1004, NULL), SCHED_OK);
    expect_agreement(&committed(s)->h[SH_JOB_DURATION], 1);
    expect_exemplar(&committed(s)->h[SH_JOB_DURATION], 3, a, 2.5, 1.7e9 + 3.5);
}

/* ---- lifecycle -------------------------------------------------------------------------- */

enum action { A_CANCEL, A_START, A_SUCCEED, A_FAIL, A_COUNT };

static enum sched_rc act(struct sched *s, enum action a, struct job *j, const char *worker,
                         double now)
{
    switch (a) {
    case A_CANCEL:  return sched_cancel(s, j->id, now, NULL);
    case A_START:   return sched_start(s, j->id, worker, now, NULL);
    case A_SUCCEED: return sched_succeed(s, j->id, worker, 0, NULL, now, NULL);
    default:
        return sched_fail(s, j->id, worker, HODEI_ERR_EXIT_CODE, 1, 3, NULL, now, NULL);
    }
}

/* Brings a fresh job to state st on worker "w" (which has room for one job at a time). */
static struct job *job_in_state(struct sched *s, enum job_state st, double now)
{
    struct job *j = submit(s, "t", 1000, 100, 0, now);
    if (st == JOB_QUEUED)
        return j;   /* the caller has not run a round */
    sched_round(s, now);
    assert_int_equal(j->st.state, JOB_ASSIGNED);
    if (st == JOB_ASSIGNED)
        return j;
    assert_int_equal(sched_start(s, j->id, "w", now, NULL), SCHED_OK);
    if (st == JOB_RUNNING)
        return j;
    if (st == JOB_SUCCEEDED)
        assert_int_equal(sched_succeed(s, j->id, "w", 0, NULL, now, NULL), SCHED_OK);
    else if (st == JOB_FAILED)
        assert_int_equal(sched_fail(s, j->id, "w", HODEI_ERR_EXIT_CODE, 1, 1, NULL, now, NULL),
                         SCHED_OK);
    else
        assert_int_equal(sched_cancel(s, j->id, now, NULL), SCHED_OK);
    return j;
}

static void test_every_transition(void **state)
{
    /* expected outcome of each action in each state: the state it leads to, -1 (409), or
     * AGAIN: the report its worker already made, sent again (its answer was lost): accepted,
     * and nothing changes */
    enum { AGAIN = -2 };
    static const int expect[JOB_STATE_COUNT][A_COUNT] = {
        /*              cancel          start        succeed         fail */
        [JOB_QUEUED]    = { JOB_CANCELLED, -1,          -1,             -1 },
        [JOB_ASSIGNED]  = { JOB_CANCELLED, JOB_RUNNING, -1,             JOB_FAILED },
        [JOB_RUNNING]   = { JOB_CANCELLED, AGAIN,       JOB_SUCCEEDED,  JOB_FAILED },
        [JOB_SUCCEEDED] = { -1,            -1,          AGAIN,          -1 },
        [JOB_FAILED]    = { -1,            -1,          -1,             AGAIN },
        [JOB_CANCELLED] = { -1,            -1,          -1,             -1 },
    };
    for (int st = 0; st < JOB_STATE_COUNT; st++)
        for (int a = 0; a < A_COUNT; a++) {
            struct sched s;
            struct recorder ev = { 0 };
            assert_int_equal(sched_init(&s, &default_cfg, 1000, 1.7e9, record, &ev), 0);
            add_worker(&s, "w", 1000, 1000, 1000);
            add_worker(&s, "other", 10, 10, 1000);
            struct job *j = job_in_state(&s, (enum job_state) st, 1000);
            sched_commit(&s, 1);
            struct job_status before = j->st;
            enum sched_rc rc = act(&s, (enum action) a, j, "w", 1001);
            if (expect[st][a] < 0) {
                assert_int_equal(rc, expect[st][a] == AGAIN ? SCHED_OK : SCHED_CONFLICT);
                assert_memory_equal(&before, &j->st, sizeof before);
                assert_false(sched_dirty(&s));   /* nothing to commit: nothing changed */
            } else {
                assert_int_equal(rc, SCHED_OK);
                assert_int_equal(j->st.state, expect[st][a]);
            }
            /* worker-side actions from a worker that does not hold the job: always 409 */
            if (a != A_CANCEL && j->st.state != JOB_QUEUED) {
                struct job_status now_st = j->st;
                assert_int_equal(act(&s, (enum action) a, j, "other", 1002), SCHED_CONFLICT);
                assert_memory_equal(&now_st, &j->st, sizeof now_st);
            }
            sched_destroy(&s);
        }
}

static void test_unknown_ids(void **state)
{
    struct fixture *f = *state;
    struct sched *s = &f->s;
    assert_int_equal(sched_cancel(s, 99, 1000, NULL), SCHED_NOT_FOUND);
    assert_int_equal(sched_start(s, 99, "w", 1000, NULL), SCHED_NOT_FOUND);
    assert_int_equal(sched_heartbeat(s, "nobody", 1, 1, 1000, NULL), SCHED_NOT_FOUND);
    add_worker(s, "w", 100, 100, 1000);
    struct worker_spec dup = { .id = "w", .cpu_m = 1, .memory_mb = 1 };
    assert_int_equal(sched_register(s, &dup, 1000, NULL), SCHED_CONFLICT);
    assert_int_equal(committed(s)->workers_registered, 1);
}

static void test_retries_and_failure_counts(void **state)
{
    struct fixture *f = *state;
    struct sched *s = &f->s;
    add_worker(s, "w", 1000, 1000, 1000);
    struct job_spec spec = { .tenant_id = "t", .cpu_m = 100, .memory_mb = 10, .command = "x",
                             .max_retries = 1 };
    struct job *j;
    assert_int_equal(sched_submit(s, &spec, 1000, &j), SCHED_OK);
    sched_round(s, 1000);
    sched_start(s, j->id, "w", 1000, NULL);
    assert_int_equal(sched_fail(s, j->id, "w", HODEI_ERR_EXIT_CODE, 1, 2, NULL, 1001, NULL),
                     SCHED_OK);
    assert_int_equal(j->st.state, JOB_QUEUED);             /* attempt 1 of 2 */
    assert_int_equal(committed(s)->decisions[HODEI_DECISION_REQUEUED], 1);
    assert_int_equal(tcount(s, 0, TC_FAILED + HODEI_ERR_EXIT_CODE), 0);
    sched_round(s, 1001);
    assert_int_equal(j->st.attempts, 2);
    sched_start(s, j->id, "w", 1001, NULL);
    assert_int_equal(sched_fail(s, j->id, "w", HODEI_ERR_EXIT_CODE, 1, 2, NULL, 1002, NULL),
                     SCHED_OK);
    assert_int_equal(j->st.state, JOB_FAILED);
    assert_int_equal(j->st.exit_code, 2);
    assert_int_equal(tcount(s, 0, TC_FAILED + HODEI_ERR_EXIT_CODE), 1);
    assert_int_equal(tcount(s, 0, TC_SCHEDULED), 2);
    assert_int_equal(f->ev.count[HODEI_EV_JOB_REQUEUED], 1);
    assert_int_equal(f->ev.count[HODEI_EV_JOB_FAILED], 1);
    /* both runs were observed, and resources are back */
    assert_int_equal(committed(s)->h[SH_JOB_DURATION].count[1] + committed(s)->h[SH_JOB_DURATION].count[2], 2);
    assert_int_equal(sched_worker(s, "w")->free_cpu_m, 1000);
}

/* ---- health and timeouts ---------------------------------------------------------------- */

static void test_worker_health_and_removal(void **state)
{
    struct fixture *f = *state;
    struct sched *s = &f->s;
    add_worker(s, "w1", 1000, 1000, 1000);
    add_worker(s, "w2", 1000, 1000, 1000);
    struct job_spec retry = { .tenant_id = "t", .cpu_m = 1000, .memory_mb = 10, .command = "x",
                              .max_retries = 1 };
    struct job *a, *b;
    assert_int_equal(sched_submit(s, &retry, 1000, &a), SCHED_OK);
    b = submit(s, "t", 1000, 10, 0, 1000);    /* no retries */
    sched_round(s, 1000);
    assert_string_equal(worker_of(a), "w1");
    assert_string_equal(worker_of(b), "w2");
    sched_start(s, b->id, "w2", 1000, NULL);
    /* w1 keeps beating, w2 goes silent: unhealthy at 10 s, removed at 30 s */
    sched_heartbeat(s, "w1", 5, 100, 1009, NULL);
    sched_tick(s, 1010);
    assert_int_equal(committed(s)->workers_healthy, 1);
    assert_int_equal(f->ev.count[HODEI_EV_WORKER_UNHEALTHY], 1);
    assert_int_equal(sched_worker(s, "w2")->healthy, 0);
    /* a heartbeat brings it back */
    sched_heartbeat(s, "w2", 1, 1, 1011, NULL);
    assert_int_equal(committed(s)->workers_healthy, 2);
    assert_int_equal(f->ev.count[HODEI_EV_WORKER_RECOVERED], 1);
    /* both silent until removal: a is requeued, b fails with worker_lost */
    sched_heartbeat(s, "w1", 5, 100, 1011, NULL);
    sched_tick(s, 1041);
    assert_null(sched_worker(s, "w1"));
    assert_null(sched_worker(s, "w2"));
    assert_int_equal(committed(s)->workers_total, 0);
    assert_int_equal(committed(s)->workers_healthy, 0);
    assert_int_equal(a->st.state, JOB_QUEUED);
    assert_int_equal(b->st.state, JOB_FAILED);
    assert_int_equal(b->st.error_type, HODEI_ERR_WORKER_LOST);
    assert_int_equal(committed(s)->decisions[HODEI_DECISION_REQUEUED], 1);
    assert_int_equal(tcount(s, 0, TC_FAILED + HODEI_ERR_WORKER_LOST), 1);
    assert_int_equal(f->ev.count[HODEI_EV_WORKER_REMOVED], 2);
    assert_int_equal(committed(s)->jobs_running, 0);
    assert_int_equal(committed(s)->jobs_assigned, 0);
    /* the requeued job waits for a worker, then runs again */
    add_worker(s, "w3", 1000, 1000, 1042);
    sched_round(s, 1042);
    assert_string_equal(worker_of(a), "w3");
    assert_int_equal(a->st.attempts, 2);
}

static void test_job_timeout(void **state)
{
    struct fixture *f = *state;
    struct sched *s = &f->s;
    add_worker(s, "w", 1000, 1000, 1000);
    struct job_spec spec = { .tenant_id = "t", .cpu_m = 100, .memory_mb = 10, .command = "x",
                             .timeout_s = 5 };
    struct job *j;
    assert_int_equal(sched_submit(s, &spec, 1000, &j), SCHED_OK);
    sched_round(s, 1000);
    sched_start(s, j->id, "w", 1001, NULL);
    assert_true(sched_next_deadline(s, 1002, 60) <= 4.0);
    sched_heartbeat(s, "w", 1, 1, 1005, NULL);
    sched_tick(s, 1005.9);
    assert_int_equal(j->st.state, JOB_RUNNING);
    sched_tick(s, 1006);
    assert_int_equal(j->st.state, JOB_FAILED);
    assert_int_equal(j->st.error_type, HODEI_ERR_TIMEOUT);
    assert_int_equal(tcount(s, 0, TC_FAILED + HODEI_ERR_TIMEOUT), 1);
    /* the agent's own report of the same end comes later: acknowledged, counted once */
    assert_int_equal(sched_fail(s, j->id, "w", HODEI_ERR_TIMEOUT, 0, 0, NULL, 1006, NULL),
                     SCHED_OK);
    assert_int_equal(tcount(s, 0, TC_FAILED + HODEI_ERR_TIMEOUT), 1);
    /* another end is not what happened */
    assert_int_equal(sched_fail(s, j->id, "w", HODEI_ERR_EXIT_CODE, 1, 1, NULL, 1006, NULL),
                     SCHED_CONFLICT);
}

/* ---- caps and overflow ------------------------------------------------------------------ */

static void test_tenant_overflow(void **state)
{
    struct sched_config cfg = default_cfg;
    cfg.max_tenants = 3;
    setup_with(state, &cfg);
    struct fixture *f = *state;
    struct sched *s = &f->s;
    for (int i = 0; i < 10; i++) {
        char id[16];
        snprintf(id, sizeof id, "tenant-%d", i);
        struct job *j = submit(s, id, 1, 1, 0, 1000);
        assert_string_equal(j->tenant_id, id);    /* the job keeps its own tenant */
    }
    submit(s, "tenant-1", 1, 1, 0, 1000);           /* a known tenant keeps its series */
    assert_int_equal(sched_tenant_count(s), 0);      /* readers see none before the commit */
    sched_commit(s, 1);
    assert_int_equal(sched_tenant_count(s), 4);      /* 3 named + __overflow__ */
    assert_string_equal(s->tenants[3]->id, HODEI_OVERFLOW_LABEL);
    assert_int_equal(tcount(s, 1, TC_SUBMITTED), 2);
    assert_int_equal(tcount(s, 3, TC_SUBMITTED), 7);
    assert_int_equal(committed(s)->label_overflow[HODEI_F_JOBS_SUBMITTED_TOTAL], 7);
    add_worker(s, "w", 1000, 1000, 1000);
    sched_round(s, 1000);
    assert_int_equal(committed(s)->label_overflow[HODEI_F_JOBS_SCHEDULED_TOTAL], 7);
    assert_int_equal(tcount(s, 3, TC_SCHEDULED), 7);
    teardown(state);
}

static void test_worker_cap_and_queue_limit(void **state)
{
    struct sched_config cfg = default_cfg;
    cfg.max_workers = 2;
    cfg.max_jobs = 3;
    setup_with(state, &cfg);
    struct fixture *f = *state;
    struct sched *s = &f->s;
    add_worker(s, "a", 1, 1, 1000);
    add_worker(s, "b", 1, 1, 1000);
    struct worker_spec spec = { .id = "c", .cpu_m = 1, .memory_mb = 1 };
    for (int i = 0; i < 5; i++)
        assert_int_equal(sched_register(s, &spec, 1000, NULL), SCHED_FULL);
    assert_null(sched_worker(s, "c"));
    assert_int_equal(committed(s)->workers_total, 2);
    assert_int_equal(committed(s)->workers_registered, 2);
    assert_int_equal(committed(s)->label_overflow[HODEI_F_CPU_USAGE_PERCENT], 5);
    assert_int_equal(committed(s)->label_overflow[HODEI_F_MEMORY_USAGE_MB], 5);
    for (int i = 0; i < 3; i++)
        submit(s, "t", 1, 1, 0, 1000);
    struct job_spec js = { .tenant_id = "t2", .cpu_m = 1, .memory_mb = 1, .command = "x" };
    assert_int_equal(sched_submit(s, &js, 1000, NULL), SCHED_FULL);
    sched_commit(s, 1);
    assert_int_equal(sched_tenant_count(s), 1);       /* the refused job made no tenant */
    assert_int_equal(s->next_job_id, 4);
    teardown(state);
}

static void test_retention_is_bounded(void **state)
{
    struct sched_config cfg = default_cfg;
    cfg.job_retention = 5;
    setup_with(state, &cfg);
    struct fixture *f = *state;
    struct sched *s = &f->s;
    uint64_t first = 0;
    for (int i = 0; i < 20; i++) {
        struct job *j = submit(s, "t", 1, 1, 0, 1000);
        if (!first)
            first = j->id;
        assert_int_equal(sched_cancel(s, j->id, 1000, NULL), SCHED_OK);
    }
    sched_prune(s);
    sched_commit(s, 1);
    assert_int_equal(s->nfinished, 5);
    assert_null(sched_job(s, first));
    assert_non_null(sched_job(s, first + 19));
    assert_int_equal(tcount(s, 0, TC_FAILED + HODEI_ERR_CANCELLED), 20);
    teardown(state);
}

/* ---- access: tenant limits, leases, sessions, outputs ----------------------------------- */

static size_t quota_entries(struct sched *s)
{
    long before, after;
    unsigned long count;
    rcu_read_lock();
    cds_lfht_count_nodes(s->quotas, &before, &count, &after);
    rcu_read_unlock();
    return count;
}

/* The limit is per tenant id, also for tenants folded into __overflow__; a refusal changes
 * nothing; the entry goes with the tenant's last unfinished job. */
static void test_tenant_quota(void **state)
{
    struct sched_config cfg = default_cfg;
    cfg.max_tenants = 1;
    cfg.max_jobs_per_tenant = 2;
    setup_with(state, &cfg);
    struct fixture *f = *state;
    struct sched *s = &f->s;
    struct job *a1 = submit(s, "a", 1, 1, 0, 1000);
    submit(s, "a", 1, 1, 0, 1000);
    struct job_spec spec = { .tenant_id = "a", .cpu_m = 1, .memory_mb = 1, .command = "x" };
    uint64_t next = s->next_job_id;
    assert_int_equal(sched_submit(s, &spec, 1000, NULL), SCHED_TENANT_FULL);
    assert_int_equal(s->next_job_id, next);
    assert_int_equal(tcount(s, 0, TC_SUBMITTED), 2);
    /* b and c fold into __overflow__ for metrics, but each keeps its own limit */
    submit(s, "b", 1, 1, 0, 1000);
    submit(s, "b", 1, 1, 0, 1000);
    submit(s, "c", 1, 1, 0, 1000);
    submit(s, "c", 1, 1, 0, 1000);
    strcpy(spec.tenant_id, "c");
    assert_int_equal(sched_submit(s, &spec, 1000, NULL), SCHED_TENANT_FULL);
    assert_int_equal(quota_entries(s), 3);
    /* a job that ends makes room */
    assert_int_equal(sched_cancel(s, a1->id, 1001, NULL), SCHED_OK);
    strcpy(spec.tenant_id, "a");
    assert_int_equal(sched_submit(s, &spec, 1001, NULL), SCHED_OK);
    /* all of c's end: its entry goes */
    struct job *j;
    cds_list_for_each_entry(j, &s->all_jobs, order_link)
        if (strcmp(j->tenant_id, "c") == 0 && j->st.state == JOB_QUEUED)
            sched_cancel(s, j->id, 1002, NULL);
    assert_int_equal(quota_entries(s), 2);
    teardown(state);
}

/* An assigned job not started within the lease goes back to the queue at no cost to it; its
 * worker is kept from jobs for the lease, then twice as long after the next expiry; a start
 * in time clears the strikes. */
static void test_assignment_lease(void **state)
{
    struct sched_config cfg = default_cfg;
    cfg.assignment_lease = 10;
    setup_with(state, &cfg);
    struct fixture *f = *state;
    struct sched *s = &f->s;
    struct worker *fake = add_worker(s, "fake", 100, 100, 1000);
    struct job *j = submit(s, "t", 100, 10, 0, 1000);
    sched_round(s, 1000);
    assert_string_equal(worker_of(j), "fake");
    assert_true(sched_next_deadline(s, 1000, 60) <= 10.0);
    sched_tick(s, 1009.9);
    assert_int_equal(j->st.state, JOB_ASSIGNED);
    sched_tick(s, 1010);
    assert_int_equal(j->st.state, JOB_QUEUED);
    assert_int_equal(j->st.attempts, 0);
    assert_int_equal(committed(s)->decisions[HODEI_DECISION_REQUEUED], 1);
    assert_int_equal(f->ev.count[HODEI_EV_JOB_REQUEUED], 1);
    assert_int_equal(f->ev.count[HODEI_EV_WORKER_UNHEALTHY], 1);
    assert_false(fake->healthy);
    assert_int_equal(fake->free_cpu_m, 100);
    assert_int_equal(committed(s)->jobs_assigned, 0);
    /* quarantined for the lease: a heartbeat inside it changes nothing */
    sched_heartbeat(s, "fake", 1, 1, 1019, NULL);
    sched_round(s, 1019);
    assert_int_equal(j->st.state, JOB_QUEUED);
    sched_heartbeat(s, "fake", 1, 1, 1020, NULL);
    assert_true(fake->healthy);
    sched_round(s, 1020);
    assert_string_equal(worker_of(j), "fake");
    /* the second expiry: twice as long */
    sched_tick(s, 1030);
    assert_int_equal(j->st.state, JOB_QUEUED);
    sched_heartbeat(s, "fake", 1, 1, 1049, NULL);
    assert_false(fake->healthy);
    sched_heartbeat(s, "fake", 1, 1, 1050, NULL);
    assert_true(fake->healthy);
    /* a start in time: no lease any more, and the strikes are forgiven */
    sched_round(s, 1050);
    assert_int_equal(sched_start(s, j->id, "fake", 1055, NULL), SCHED_OK);
    assert_int_equal(fake->lease_strikes, 0);
    sched_heartbeat(s, "fake", 1, 1, 1065, NULL);
    sched_tick(s, 1070);                                   /* past where its lease would end */
    assert_int_equal(j->st.state, JOB_RUNNING);
    assert_int_equal(j->st.attempts, 1);
    assert_int_equal(committed(s)->decisions[HODEI_DECISION_REQUEUED], 2);
    teardown(state);
}

/* A session belongs to its registration: found by id while the worker is registered. */
static void test_sessions(void **state)
{
    struct fixture *f = *state;
    struct sched *s = &f->s;
    struct worker_spec spec = { .id = "w", .cpu_m = 1, .memory_mb = 1,
                                .session = { .id = "0123456789ab", .hash = { 7 } } };
    assert_int_equal(sched_register(s, &spec, 1000, NULL), SCHED_OK);
    rcu_read_lock();
    struct worker *w = sched_session(s, "0123456789ab");
    assert_non_null(w);
    assert_string_equal(w->id, "w");
    assert_int_equal(w->session.hash[0], 7);
    assert_null(sched_session(s, "ba9876543210"));
    rcu_read_unlock();
    sched_tick(s, 1000 + default_cfg.worker_timeout);      /* removed */
    rcu_read_lock();
    assert_null(sched_session(s, "0123456789ab"));
    rcu_read_unlock();
}

/* Reported outputs are kept within the budget, oldest out first, and go with their job. */
static void test_output_budget(void **state)
{
    struct sched_config cfg = default_cfg;
    cfg.output_budget = 100;
    cfg.job_retention = 2;
    setup_with(state, &cfg);
    struct fixture *f = *state;
    struct sched *s = &f->s;
    add_worker(s, "w", 1000, 1000, 1000);
    unsigned char bytes[120];
    memset(bytes, 'x', sizeof bytes);
    struct job *j[4];
    for (int i = 0; i < 4; i++) {
        j[i] = submit(s, "t", 1, 1, 0, 1000);
        sched_round(s, 1000);
        sched_start(s, j[i]->id, "w", 1000, NULL);
    }
    struct job_output sixty = { bytes, 60, 6000 }, too_big = { bytes, 120, 120 };
    assert_int_equal(sched_succeed(s, j[0]->id, "w", 0, &sixty, 1001, NULL), SCHED_OK);
    assert_null(j[0]->output);                              /* kept once it commits */
    sched_commit(s, 1);
    assert_non_null(j[0]->output);
    assert_int_equal(j[0]->st.output_bytes, 6000);
    assert_int_equal(sched_fail(s, j[1]->id, "w", HODEI_ERR_EXIT_CODE, 1, 1, &sixty, 1001, NULL),
                     SCHED_OK);
    sched_commit(s, 1);
    assert_null(j[0]->output);                              /* the oldest made room */
    assert_non_null(j[1]->output);
    assert_int_equal(s->output_bytes, 60);
    assert_int_equal(sched_succeed(s, j[2]->id, "w", 0, &too_big, 1001, NULL), SCHED_OK);
    sched_commit(s, 1);
    assert_null(j[2]->output);                              /* larger than the budget */
    assert_int_equal(j[2]->st.output_bytes, 120);           /* its size is still told */
    assert_non_null(j[1]->output);
    /* retention drops j[0] and j[1] (only 2 finished kept): j[1]'s output goes with it */
    assert_int_equal(sched_succeed(s, j[3]->id, "w", 0, NULL, 1002, NULL), SCHED_OK);
    sched_prune(s);
    sched_commit(s, 1);
    assert_int_equal(j[3]->st.output_bytes, -1);
    assert_int_equal(s->output_bytes, 0);
    assert_true(cds_list_empty(&s->outputs));
    teardown(state);
}

/* ---- durability: a refused change set leaves no trace -------------------------------------- */

static int strcmp_ptr(const char *const *a, const char *const *b)
{
    return strcmp(*a, *b);
}

struct text {
    char *p;
    size_t len, cap;
};

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct text *t, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (t->len + (size_t) n < t->cap) {
            t->len += (size_t) n;
            return;
        }
        t->cap = (t->cap + (size_t) n) * 2;
        t->p = realloc(t->p, t->cap);
    }
}

/* Everything a reader, a client or the next decision could tell apart: every job's status
 * and where it is, every worker's capacity, health and jobs, every tenant's counts, the queue
 * in placement order per tenant level, the committed metrics snapshot (bytes), and the
 * derived totals.  Left out: heartbeat times (a heartbeat is not undone) and monotonic
 * deadlines (recomputed from the wall-clock times they come from). */
static char *dump(struct sched *s)
{
    struct text t = { 0 };
    t.cap = 4096;
    t.p = malloc(t.cap);
    t.p[0] = '\0';
    struct job *j;
    cds_list_for_each_entry(j, &s->all_jobs, order_link) {
        const struct job_status *st = &j->st;
        put(&t, "job %llu %s a%u w=%s e%d x%d/%d %.6f %.6f %.6f o%lld %s%s%s q%s d%d kept%zu "
            "committed %d\n", (unsigned long long) j->id, job_state_names[st->state],
            st->attempts, st->worker_id, st->error_type, st->has_exit_code, st->exit_code,
            st->assigned_at, st->started_at, st->finished_at, (long long) st->output_bytes,
            j->worker ? "on " : "", j->worker ? j->worker->id : "", j->absent ? "absent" : "",
            j->level ? "ueued" : "-", j->deadline_slot != HEAP_NONE, j->output_len,
            memcmp(&j->st, &j->cst, sizeof j->st) == 0);
    }
    struct cds_lfht_iter it;
    struct worker *w;
    rcu_read_lock();
    char *names[64];
    int nw = 0;
    cds_lfht_for_each_entry(s->workers, &it, w, node) {
        struct text wt = { 0 };
        wt.cap = 256;
        wt.p = malloc(wt.cap);
        put(&wt, "worker %s free %u/%u healthy %d until %.3f strikes %u jobs", w->id,
            w->free_cpu_m, w->free_memory_mb, w->healthy, w->quarantined_until,
            w->lease_strikes);
        cds_list_for_each_entry(j, &w->jobs, worker_link)
            put(&wt, " %llu", (unsigned long long) j->id);
        names[nw++] = wt.p;
    }
    rcu_read_unlock();
    qsort(names, (size_t) nw, sizeof *names, (int (*)(const void *, const void *)) strcmp_ptr);
    for (int i = 0; i < nw; i++) {
        put(&t, "%s\n", names[i]);
        free(names[i]);
    }
    for (uint32_t i = 0; i < s->ntenants; i++) {
        const struct tenant *tn = s->tenants[i];
        put(&t, "tenant %s active %u counts", tn->id, tn->active);
        for (int c = 0; c < TC_COUNT; c++)
            put(&t, " %llu", (unsigned long long) tn->count[c]);
        put(&t, "\n");
    }
    put(&t, "unfinished %u finished %u queued %llu assigned %llu running %llu workers %llu/%llu "
        "outputs %zu\n", s->nunfinished, s->nfinished, (unsigned long long) s->g.queued,
        (unsigned long long) s->g.assigned, (unsigned long long) s->g.running,
        (unsigned long long) s->g.workers_healthy, (unsigned long long) s->g.workers_total,
        s->output_bytes);
    static unsigned char snap[1 << 20] __attribute__((aligned(64)));
    static struct metrics_copies copies;
    metrics_copies_init(&copies);
    size_t len = metrics_build(s, 1, "test", &copies, snap, sizeof snap, 1.7e9);
    assert_true(len > 0);
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ snap[i]) * 0x100000001b3ull;
    put(&t, "snapshot %zu bytes, hash %016llx\n", len, (unsigned long long) h);
    return t.p;
}

/* What the incremental structures say, recomputed from the jobs' statuses. */
static void check_derived(struct sched *s)
{
    uint64_t by_state[JOB_STATE_COUNT] = { 0 };
    uint32_t unfinished = 0, finished = 0;
    struct job *j;
    cds_list_for_each_entry(j, &s->all_jobs, order_link) {
        by_state[j->st.state]++;
        if (!j->touched)   /* outside the change set, nothing of a report waits */
            assert_true(!j->has_new_output && !j->new_output && !j->pruned);
        if (j->st.state >= JOB_SUCCEEDED) {
            finished++;
            continue;
        }
        unfinished++;
        if (j->st.state == JOB_QUEUED) {
            assert_non_null(j->level);
            assert_null(j->worker);
        } else if (j->worker) {
            assert_string_equal(j->worker->id, j->st.worker_id);
            assert_null(j->level);
        } else {
            assert_non_null(j->absent);
        }
    }
    assert_int_equal(by_state[JOB_QUEUED], s->g.queued);
    assert_int_equal(by_state[JOB_ASSIGNED], s->g.assigned);
    assert_int_equal(by_state[JOB_RUNNING], s->g.running);
    assert_int_equal(unfinished, s->nunfinished);
    assert_int_equal(finished, s->nfinished);
    struct cds_lfht_iter it;
    struct worker *w;
    uint64_t total = 0, healthy = 0;
    rcu_read_lock();
    cds_lfht_for_each_entry(s->workers, &it, w, node) {
        uint64_t cpu = 0, mem = 0, last = 0;
        cds_list_for_each_entry(j, &w->jobs, worker_link) {
            cpu += j->cpu_m;
            mem += j->memory_mb;
            assert_true(j->id > last);   /* by id */
            last = j->id;
        }
        assert_int_equal(w->free_cpu_m + cpu, w->cpu_m);
        assert_int_equal(w->free_memory_mb + mem, w->memory_mb);
        total++;
        healthy += w->healthy;
    }
    rcu_read_unlock();
    assert_int_equal(total, s->g.workers_total);
    assert_int_equal(healthy, s->g.workers_healthy);
    for (uint32_t i = 0; i < s->ntenants; i++) {
        uint32_t active = 0;
        cds_list_for_each_entry(j, &s->all_jobs, order_link)
            if (j->tenant == s->tenants[i]
                && (j->st.state == JOB_ASSIGNED || j->st.state == JOB_RUNNING))
                active++;
        assert_int_equal(active, s->tenants[i]->active);
    }
}

/* Prints the lines of a that b lacks, and the reverse. */
static void report_difference(const char *a, const char *b)
{
    for (int pass = 0; pass < 2; pass++) {
        const char *x = pass ? b : a, *y = pass ? a : b;
        for (const char *line = x; *line;) {
            const char *end = strchr(line, '\n');
            size_t n = end ? (size_t) (end - line) + 1 : strlen(line);
            int found = 0;
            for (const char *p = y; (p = strstr(p, "")) && *p;) {
                const char *e = strchr(p, '\n');
                size_t m = e ? (size_t) (e - p) + 1 : strlen(p);
                if (m == n && memcmp(p, line, n) == 0) {
                    found = 1;
                    break;
                }
                p += m;
            }
            if (!found)
                print_error("%s %.*s", pass ? "after: " : "before:", (int) n, line);
            line += n;
        }
    }
}

/* A job picked at random (NULL when there is none). */
static struct job *any_job(struct sched *s, unsigned *seed)
{
    if (s->next_job_id <= 1)
        return NULL;
    return sched_job(s, 1 + (uint64_t) rand_r(seed) % (s->next_job_id - 1));
}

/* A job in state st picked at random, else any job (NULL when there is none). */
static struct job *job_in(struct sched *s, unsigned *seed, enum job_state st)
{
    unsigned n = 0;
    struct job *j;
    cds_list_for_each_entry(j, &s->all_jobs, order_link)
        n += j->st.state == st;
    if (n == 0)
        return any_job(s, seed);
    unsigned k = (unsigned) rand_r(seed) % n;
    cds_list_for_each_entry(j, &s->all_jobs, order_link)
        if (j->st.state == st && k-- == 0)
            break;
    return j;
}

/* n random mutations, time moving forward: everything a change set can hold.  Returns the
 * number of jobs submitted. */
static unsigned random_changes(struct sched *s, unsigned *seed, double *now, int n)
{
    unsigned submitted = 0;
    static const char *const tenants[] = { "acme", "beta", "gamma", "delta", "eps", "zeta" };
    unsigned char bytes[64];
    memset(bytes, 'o', sizeof bytes);
    for (int i = 0; i < n; i++) {
        struct job *j = any_job(s, seed);
        const char *on = j ? j->st.worker_id : "";
        switch (rand_r(seed) % 11) {
        case 0:
        case 1: {
            struct job_spec spec = { .cpu_m = 100 * (1 + rand_r(seed) % 12),
                                     .memory_mb = 64 * (1 + rand_r(seed) % 12),
                                     .priority = rand_r(seed) % 3 - 1,
                                     .timeout_s = rand_r(seed) % 2 ? 30 : 0,
                                     .max_retries = rand_r(seed) % 3, .command = "true" };
            snprintf(spec.tenant_id, sizeof spec.tenant_id, "%s", tenants[rand_r(seed) % 6]);
            submitted += sched_submit(s, &spec, *now, NULL) == SCHED_OK;
            break;
        }
        case 2: {
            struct worker_spec spec = { .cpu_m = 1000 * (1 + rand_r(seed) % 3),
                                        .memory_mb = 512 * (1 + rand_r(seed) % 3) };
            snprintf(spec.id, sizeof spec.id, "w%d", rand_r(seed) % 8);
            sched_register(s, &spec, *now, NULL);
            break;
        }
        case 3:
            if (j)
                sched_cancel(s, j->id, *now, NULL);
            break;
        case 4:
            if ((j = job_in(s, seed, JOB_ASSIGNED)))
                sched_start(s, j->id, j->st.worker_id, *now, NULL);
            break;
        case 5:
            if ((j = job_in(s, seed, JOB_RUNNING))) {
                on = j->st.worker_id;
                struct job_output out = { bytes, 1 + rand_r(seed) % 64, 1000 };
                sched_succeed(s, j->id, on, 0, rand_r(seed) % 2 ? &out : NULL, *now, NULL);
            }
            break;
        case 6:
            if (j) {
                struct job_output out = { bytes, 16, 16 };
                sched_fail(s, j->id, on, (enum hodei_error_type) (rand_r(seed) % HODEI_ERR_COUNT),
                           1, 2, &out, *now, NULL);
            }
            break;
        case 7: {
            char id[8];
            snprintf(id, sizeof id, "w%d", rand_r(seed) % 8);
            sched_heartbeat(s, id, 0, 0, *now, NULL);   /* usage gauges are not undone */
            break;
        }
        case 8:
            *now += rand_r(seed) % 12;
            sched_tick(s, *now);
            break;
        default:
            sched_round(s, *now);
            sched_prune(s);
            break;
        }
    }
    return submitted;
}

static uint64_t submitted_total(struct sched *s)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < s->ntenants; i++)
        n += s->tenants[i]->count[TC_SUBMITTED];
    return n;
}

/* Random change sets, each either committed or rolled back: after a rollback everything is
 * exactly as committed before it, and the structures always agree with the statuses. */
static void test_rollback_leaves_no_trace(void **state)
{
    struct sched_config cfg = default_cfg;
    cfg.max_tenants = 4;                  /* __overflow__ too */
    cfg.job_retention = 8;                /* pruning */
    cfg.output_budget = 200;              /* outputs evicted */
    cfg.assignment_lease = 15;            /* leases and quarantines */
    cfg.heartbeat_timeout = 10;
    cfg.worker_timeout = 25;              /* removals */
    setup_with(state, &cfg);
    struct fixture *f = *state;
    struct sched *s = &f->s;
    unsigned seed = 20261202;
    double now = 1000;
    int rolled_back = 0, committed_sets = 0, pruned = 0;
    uint64_t submitted = 0;                 /* by the change sets that committed */
    int undone[HODEI_EV_COUNT] = { 0 };     /* events of change sets that were rolled back */
    for (int round = 0; round < 1500; round++) {
        char *before = dump(s);
        struct recorder seen = f->ev;
        unsigned n = random_changes(s, &seed, &now, 1 + rand_r(&seed) % 12);
        int dirty = sched_dirty(s);
        if (rand_r(&seed) % 2) {
            for (int e = 0; e < HODEI_EV_COUNT; e++)
                undone[e] += f->ev.count[e] - seen.count[e];
            pruned += s->cs.npruned > 0;
            sched_rollback(s);
            assert_false(sched_dirty(s));
            char *after = dump(s);
            if (strcmp(before, after) != 0) {
                report_difference(before, after);
                fail_msg("round %d: a rollback left a trace (lines above)", round);
            }
            free(after);
            rolled_back += dirty;
        } else {
            sched_commit(s, 1);
            committed_sets += dirty;
            submitted += n;
        }
        assert_int_equal(submitted_total(s), submitted);
        check_derived(s);
        free(before);
    }
    /* both paths were taken often, on real changes, and rollbacks undid every kind of one */
    assert_true(rolled_back > 300 && committed_sets > 300);
    assert_true(s->next_job_id > 500);
    static const enum hodei_event_type kinds[] = {
        HODEI_EV_JOB_SUBMITTED, HODEI_EV_JOB_ASSIGNED, HODEI_EV_JOB_STARTED,
        HODEI_EV_JOB_SUCCEEDED, HODEI_EV_JOB_FAILED, HODEI_EV_JOB_CANCELLED,
        HODEI_EV_JOB_REQUEUED, HODEI_EV_JOB_REJECTED, HODEI_EV_WORKER_REGISTERED,
        HODEI_EV_WORKER_UNHEALTHY, HODEI_EV_WORKER_RECOVERED, HODEI_EV_WORKER_REMOVED };
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        if (undone[kinds[k]] < 3)
            fail_msg("only %d %s events were rolled back", undone[kinds[k]],
                     hodei_event_type_names[kinds[k]]);
    if (pruned < 3)
        fail_msg("only %d rolled back change sets pruned jobs", pruned);
    teardown(state);
}

/* The histograms come back from the store after a restart exactly as committed, native part
 * included (also after its resolution was lowered), and recording goes on from there. */
static void test_histograms_survive_a_restart(void **state)
{
    (void) state;
    char dir[] = "/tmp/hodei-sched-test-XXXXXX", err[256];
    assert_non_null(mkdtemp(dir));
    static struct sched a, b;
    rcu_register_thread();
    assert_int_equal(sched_init(&a, &default_cfg, 1000.0, 1.7e9, NULL, NULL), 0);
    add_worker(&a, "w", 64000, 65536, 1000);
    double now = 1000;
    /* durations from 10 us to about 5,000 s: more octaves than the finest resolution holds */
    for (int i = 0; i < 40; i++) {
        struct job *j = submit(&a, i % 2 ? "acme" : "globex", 1000, 1024, 0, now);
        sched_round(&a, now + 0.001);
        assert_int_equal(sched_start(&a, j->id, "w", now + 0.001, NULL), SCHED_OK);
        double took = 1e-5 * (double) (1ull << (i % 29));
        assert_int_equal(sched_succeed(&a, j->id, "w", 0, NULL, now + 0.001 + took, NULL),
                         SCHED_OK);
        now += 1;
    }
    struct sched_sampled sampled;
    memset(&sampled, 0, sizeof sampled);
    int sampled_changed;
    struct store *st = store_open(dir, NULL, err, sizeof err);
    assert_non_null(st);
    struct store_batch *batch = persist_batch(&a, &sampled, &sampled_changed);
    assert_non_null(batch);
    assert_int_equal(store_submit(st, batch, NULL, NULL), 0);
    sched_commit(&a, 1);
    store_close(st);
    const struct hodei_histogram *before = &a.m.h[SH_JOB_DURATION];
    assert_int_equal(before->native.count, 40);
    assert_true(before->native.schema < HODEI_NATIVE_SCHEMA);   /* lowered on the way */

    st = store_open(dir, NULL, err, sizeof err);
    assert_non_null(st);
    assert_int_equal(sched_init(&b, &default_cfg, 2000.0, 1.7e9 + 1000, NULL, NULL), 0);
    if (persist_load(st, &b, 2000.0, err, sizeof err) != 0)
        fail_msg("persist_load: %s", err);
    store_close(st);
    for (int h = 0; h < SH_COUNT; h++) {
        const struct hodei_histogram *x = &a.m.h[h], *y = &b.m.h[h];
        assert_memory_equal(x->count, y->count, (x->nbuckets + 1) * sizeof x->count[0]);
        assert_true(x->sum == y->sum);
        assert_int_equal(x->native.schema, y->native.schema);
        assert_int_equal(x->native.count, y->native.count);
        assert_int_equal(x->native.zero_count, y->native.zero_count);
        assert_true(x->native.sum == y->native.sum);
        assert_int_equal(x->native.first_key, y->native.first_key);
        assert_int_equal(x->native.nkeys, y->native.nkeys);
        assert_memory_equal(x->native.bucket, y->native.bucket,
                            x->native.nkeys * sizeof x->native.bucket[0]);
    }
    /* and it records on: one more run, in both parts */
    add_worker(&b, "w", 64000, 65536, 2000);
    struct job *j = submit(&b, "acme", 1000, 1024, 0, 2000);
    sched_round(&b, 2000);
    assert_int_equal(sched_start(&b, j->id, "w", 2000, NULL), SCHED_OK);
    assert_int_equal(sched_succeed(&b, j->id, "w", 0, NULL, 2002.5, NULL), SCHED_OK);
    sched_commit(&b, 1);
    expect_agreement(&b.m.h[SH_JOB_DURATION], 41);
    sched_destroy(&a);
    sched_destroy(&b);
    char cmd[sizeof dir + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* A commit's duration is carried into the next change set the store keeps: a change set with
 * nothing to store does not show it, so readers never see what a restart would lose. */
static void test_carried_observations_wait_for_the_store(void **state)
{
    struct fixture *f = *state;
    struct sched *s = &f->s;
    sched_observe_carried(s, SH_STORE_COMMIT, 0.0004);
    assert_false(sched_dirty(s));
    sched_commit(s, 0);
    assert_int_equal(s->m.h[SH_STORE_COMMIT].native.count, 0);
    struct hodei_histogram pending;
    assert_int_equal(sched_histogram_pending(s, SH_STORE_COMMIT, &pending), 1);
    assert_int_equal(pending.native.count, 1);
    sched_rollback(s);                      /* a refused commit keeps it too */
    sched_commit(s, 1);
    expect_agreement(&s->m.h[SH_STORE_COMMIT], 1);
    assert_int_equal(s->m.h[SH_STORE_COMMIT].count[2], 1);   /* le=0.0005 */
    assert_int_equal(sched_histogram_pending(s, SH_STORE_COMMIT, &pending), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_capindex_matches_brute_force),
        cmocka_unit_test_setup_teardown(test_fit_and_best_fit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_priority_then_fifo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fair_share_across_tenants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_never_fits_is_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_histograms_name_their_jobs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_capacity_counted_once_per_capacity_change, setup,
                                        teardown),
        cmocka_unit_test(test_every_transition),
        cmocka_unit_test_setup_teardown(test_unknown_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retries_and_failure_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_health_and_removal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_timeout, setup, teardown),
        cmocka_unit_test(test_tenant_overflow),
        cmocka_unit_test(test_worker_cap_and_queue_limit),
        cmocka_unit_test(test_retention_is_bounded),
        cmocka_unit_test(test_tenant_quota),
        cmocka_unit_test(test_assignment_lease),
        cmocka_unit_test_setup_teardown(test_sessions, setup, teardown),
        cmocka_unit_test(test_output_budget),
        cmocka_unit_test(test_rollback_leaves_no_trace),
        cmocka_unit_test(test_histograms_survive_a_restart),
        cmocka_unit_test_setup_teardown(test_carried_observations_wait_for_the_store, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
