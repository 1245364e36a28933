/*
 * scheduler.h — the scheduler's state and rules, without threads, HTTP or JSON.
 *
 * One thread (the engine's) calls every mutating function; other threads may only
 *   - look jobs up in `jobs` under rcu_read_lock(), check sched_job_committed() and copy their
 *     committed status with job_status_read(),
 *   - iterate `workers` under rcu_read_lock() reading ids and the usage gauges (of workers with
 *     seq <= committed_worker_seq),
 *   - read the counters (sched_metrics, tenants[0..sched_tenant_count())) with relaxed atomic
 *     loads.
 * Removed jobs and workers are freed with call_rcu(), so such readers never see freed memory.
 *
 * Durability (DESIGN §10).  Every mutation is recorded in the change set (struct
 * sched_changes): the jobs, tenants and workers it touched, each job's transitions, counter
 * increments and histogram observations.  Nothing a reader sees moves while the change set is
 * open: job statuses, counters, histograms, gauges, tenants, new workers, kept outputs and
 * deletions all wait for sched_commit(), which the engine calls once the store has committed
 * the change set (persist.h).  When the store refuses it, sched_rollback() puts every touched
 * job, tenant and worker back to its committed state, so a refused change leaves no trace.
 * The engine's own decisions (queue order, placement) use the working state, which runs ahead
 * of the committed one by at most one change set.
 *
 * Restart.  sched_load_*() rebuild the state a store kept (persist.c): ids continue, queued
 * jobs keep their order, assigned-but-not-started jobs go back to the queue, and running jobs
 * stay running on their worker, absent until it registers again: jobs it lists as running are
 * its again, jobs it does not list are lost (requeued, or failed worker_lost), and jobs it
 * lists that are not its own are left out of its answer (the agent stops them).  A worker that
 * does not come back within worker_timeout loses its jobs the same way.
 *
 * Placement rules (documented in README §Scheduling):
 *   - order: higher priority first; within a priority, the tenant with the fewest assigned +
 *     running jobs, ties broken by the older head job; within a tenant, by job id (FIFO).
 *   - the head job goes to the healthy worker with the least free memory that fits, then the
 *     least free cpu (best fit).
 *   - a head job larger than every registered worker's total capacity is rejected: it ends
 *     failed with error_type "other" (decision rejected, event job_rejected).
 *   - a head job that fits some worker but none right now is a no_capacity decision and blocks
 *     the queue (strict order: nothing behind it is placed).  It is decided again only when
 *     capacity may have grown (a worker registers, recovers or is removed, or a job releases
 *     its resources) or when the head is another job than the one last found blocked — so
 *     each no_capacity counts one real attempt, never a polling loop.
 *   - with no worker registered, no decision is made.
 *
 * Limits (sched_config): unfinished jobs overall (max_jobs) and per tenant id
 * (max_jobs_per_tenant, counted by the exact id, also past max_tenants); an assigned job its
 * worker does not start within assignment_lease goes back to the queue (a requeued decision
 * that costs the job no retry) and its worker is quarantined: unhealthy, so it gets no new
 * job, for lease × 2^(strikes-1) (at most an hour), strikes counting lease expiries since its
 * last accepted start.  Job outputs (the tails agents report) are kept up to output_budget
 * bytes overall, the oldest dropped first.
 */
#ifndef HODEI_CORE_SCHEDULER_H
#define HODEI_CORE_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>
#include <urcu-bp.h>
#include <urcu/list.h>
#include <urcu/rculfhash.h>

#include "hodei_histogram.h"
#include "hodei_schema.h"
#include "capindex.h"
#include "heap.h"

#define SCHED_PRIORITY_MIN  (-100)
#define SCHED_PRIORITY_MAX  100
#define SCHED_LEVELS        (SCHED_PRIORITY_MAX - SCHED_PRIORITY_MIN + 1)
#define SCHED_LABELS_MAX    16
#define SCHED_NAME_MAX      128
#define SCHED_COMMAND_MAX   4096

enum job_state { JOB_QUEUED, JOB_ASSIGNED, JOB_RUNNING, JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED,
                 JOB_STATE_COUNT };
extern const char *const job_state_names[JOB_STATE_COUNT];

/* Results of the mutating calls; the API maps them to HTTP statuses. */
enum sched_rc {
    SCHED_OK = 0,
    SCHED_NOT_FOUND,     /* 404 */
    SCHED_CONFLICT,      /* 409: illegal transition, duplicate id, not this worker's job */
    SCHED_FULL,          /* 429: queue limit or worker cap */
    SCHED_TENANT_FULL,   /* 429: the tenant's own limit of unfinished jobs */
    SCHED_UNAVAILABLE,   /* 503: the store could not commit it; nothing changed */
};

struct job_spec {
    char     tenant_id[HODEI_ID_MAX + 1];
    char     name[SCHED_NAME_MAX + 1];
    char    *command;            /* 1..SCHED_COMMAND_MAX bytes; copied by sched_submit */
    uint32_t cpu_m, memory_mb;
    int      priority;
    uint32_t timeout_s;          /* 0: none */
    uint32_t max_retries;
};

/* The part of a job that changes, written only under the job's sequence lock. */
struct job_status {
    uint8_t  state;              /* enum job_state */
    int8_t   error_type;         /* enum hodei_error_type, -1: none */
    uint8_t  has_exit_code;
    int32_t  exit_code;
    uint32_t attempts;           /* placements so far, less those whose lease expired */
    char     worker_id[HODEI_ID_MAX + 1];   /* "" when none */
    double   assigned_at, started_at, finished_at;   /* unix seconds, 0: not yet */
    int64_t  output_bytes;       /* bytes the last reported attempt wrote, -1: none reported */
};

struct tenant;
struct worker;
struct tenant_level;
struct tenant_quota;

/* What an agent reports a job wrote: the tail of its output and how much there was. */
struct job_output {
    const unsigned char *tail;
    size_t   len;                /* <= HODEI_OUTPUT_TAIL */
    uint64_t total;
};

struct absent;

struct job {
    struct cds_lfht_node node;   /* sched.jobs, keyed by id */
    struct rcu_head rcu;
    /* immutable after submission */
    uint64_t id;
    char     tenant_id[HODEI_ID_MAX + 1];
    char    *name;
    char    *command;
    uint32_t cpu_m, memory_mb;
    int      priority;
    uint32_t timeout_s, max_retries;
    double   submitted_at;       /* unix seconds */
    /* the committed status, what other threads read through job_status_read() */
    unsigned long status_seq;
    struct job_status cst;
    /* engine-thread only */
    struct job_status st;        /* working status: equal to cst outside a change set */
    struct tenant *tenant;       /* the tenant it counts under (maybe __overflow__) */
    struct tenant_quota *quota;  /* its tenant id's unfinished jobs, while unfinished */
    struct worker *worker;
    struct absent *absent;       /* assigned or running on a worker not registered (restart) */
    struct tenant_level *level;  /* while queued */
    struct cds_list_head queue_link;    /* tenant_level.jobs while queued */
    struct cds_list_head worker_link;   /* worker.jobs or absent.jobs, by id */
    struct cds_list_head order_link;    /* sched.all_jobs, by id */
    struct cds_list_head done_link;     /* sched.finished while terminal */
    double   queued_mono;        /* when it last entered the queue (monotonic s) */
    double   started_mono;
    double   deadline_mono;      /* assigned: its lease ends; running: it times out */
    size_t   deadline_slot;      /* index in sched.deadlines, or HEAP_NONE */
    unsigned char *output;       /* the reported tail while kept (committed), else NULL */
    size_t   output_len;
    struct cds_list_head output_link;   /* sched.outputs while kept */
    /* the change set */
    uint8_t  touched;            /* in sched.changes.jobs */
    uint8_t  pruned;             /* deleted by the change set: freed when it commits */
    uint8_t  has_new_output;     /* a report in the change set carried an output */
    unsigned char *new_output;   /* ... its tail (NULL when empty) */
    size_t   new_output_len;
    struct cds_list_head touch_link;
};

struct worker_label {
    char *key, *value;
};

/* A worker session: the credential its registration returned (token.h), by id and hash. */
struct worker_session {
    char          id[12 + 1];          /* "" : none (tests, --insecure-no-auth) */
    unsigned char hash[32];
};

#define SCHED_RUNNING_MAX 1024    /* job ids a registering worker may list as running */

struct worker_spec {
    char     id[HODEI_ID_MAX + 1];   /* "" : generate "w-<n>" */
    struct worker_session session;
    uint32_t cpu_m, memory_mb;
    unsigned nlabels;
    struct worker_label labels[SCHED_LABELS_MAX];   /* copied by sched_register */
    unsigned nrunning;
    uint64_t running[SCHED_RUNNING_MAX];   /* jobs the worker runs now (after a restart) */
};

struct worker {
    struct cds_lfht_node node;   /* sched.workers, keyed by id */
    struct rcu_head rcu;
    char     id[HODEI_ID_MAX + 1];
    uint64_t seq;                /* registration number: index tie-breaker */
    uint32_t cpu_m, memory_mb;
    unsigned nlabels;
    struct worker_label labels[SCHED_LABELS_MAX];
    double   registered_at;      /* unix seconds; _created of its series */
    struct worker_session session;
    struct cds_lfht_node session_node;   /* sched.sessions, while it has one */
    /* engine-thread only */
    uint32_t free_cpu_m, free_memory_mb;
    int      healthy;
    double   last_heartbeat_mono;
    double   last_heartbeat;     /* unix seconds */
    double   quarantined_until;  /* monotonic s: no job before (assignment lease expiries) */
    uint32_t lease_strikes;      /* lease expiries since its last accepted start */
    struct cds_list_head jobs;   /* assigned and running, by assignment */
    struct cap_node free_node;   /* sched.free_index while healthy */
    struct cap_node total_node;  /* sched.total_index */
    /* the change set: what it changed, and what to put back on a rollback */
    uint8_t  touched, is_new, removed;
    int      pre_healthy;
    double   pre_quarantined_until;
    uint32_t pre_lease_strikes;
    struct cds_list_head touch_link;
    /* gauges, read by the metrics thread (atomic 8-byte loads) */
    double   cpu_usage_percent;
    double   memory_usage_mb;
};

/* A tenant's counters, by index. */
enum tenant_counter {
    TC_SUBMITTED, TC_SCHEDULED, TC_COMPLETED,
    TC_FAILED,                   /* + error_type: one per error type */
    TC_COUNT = TC_FAILED + HODEI_ERR_COUNT
};

struct tenant {
    char     id[HODEI_ID_MAX + 1];   /* HODEI_OVERFLOW_LABEL for the overflow tenant */
    struct cds_lfht_node node;
    struct rcu_head rcu;
    double   created;            /* unix seconds: _created of its series, kept across restarts */
    uint32_t active;             /* assigned + running: the fair-share key */
    struct cds_list_head levels; /* tenant_level entries with queued jobs */
    uint64_t count[TC_COUNT];    /* committed (relaxed atomics, read by the metrics thread) */
    /* engine-thread only: increments in the change set */
    uint64_t pending[TC_COUNT];
    uint8_t  touched;
    struct cds_list_head touch_link;
};

struct sched_config {
    uint32_t max_tenants;        /* distinct tenant series before __overflow__ */
    uint32_t max_workers;
    uint32_t max_jobs;           /* unfinished jobs (queued + assigned + running) */
    uint32_t max_jobs_per_tenant;   /* unfinished jobs of one tenant id, 0: no limit */
    double   assignment_lease;   /* s an assigned job may wait for its start, 0: forever */
    size_t   output_budget;      /* bytes of job outputs kept overall */
    uint32_t job_retention;      /* finished jobs kept for GET */
    double   heartbeat_timeout;  /* s without heartbeat → unhealthy */
    double   worker_timeout;     /* s without heartbeat → removed */
};

/* Every event goes through this hook (the engine puts it on the bus).  job or worker may be
 * NULL; both point at live state valid only during the call. */
typedef void (*sched_event_fn)(void *ctx, enum hodei_event_type type, const struct job *job,
                               const struct worker *worker);

/* The histograms the scheduler keeps, by index. */
enum sched_histogram_id {
    SH_SCHEDULING_LATENCY, SH_QUEUE_WAIT, SH_JOB_DURATION,
    SH_STORE_COMMIT,             /* the store's commits: observed by the engine */
    SH_COUNT
};
extern const enum hodei_family_id sched_histogram_family[SH_COUNT];

/* What readers see: committed values only (relaxed atomics), and gauges as of the last batch. */
struct sched_metrics {
    uint64_t decisions[HODEI_DECISION_COUNT];
    uint64_t workers_registered;
    uint64_t label_overflow[HODEI_F_COUNT];
    /* classic + native + each bucket's latest job (hodei_histogram.h), committed
     * observations only: sched_commit observes, the metrics thread copies with
     * hodei_histogram_read() */
    struct hodei_histogram h[SH_COUNT];
    /* counted outside the change set and committed as they were when a batch was built
     * (sched_set_sampled): API refusals, and the bus's counts */
    uint64_t auth_failures[HODEI_AUTH_COUNT];
    uint64_t events_published[HODEI_EV_COUNT];
    uint64_t events_received[HODEI_EV_COUNT];
    uint64_t events_dropped[HODEI_EV_COUNT];
    /* failed commits: what the store kept plus this process's, shown at once (a commit that
     * fails cannot wait for itself) */
    uint64_t store_errors[HODEI_STORE_ERROR_COUNT];
    /* gauges */
    uint64_t jobs_queued, jobs_assigned, jobs_running;
    uint64_t workers_total, workers_healthy;
};

/* Values counted outside the change set, as a batch samples them. */
struct sched_sampled {
    uint64_t auth_failures[HODEI_AUTH_COUNT];
    uint64_t events_published[HODEI_EV_COUNT];
    uint64_t events_received[HODEI_EV_COUNT];
    uint64_t events_dropped[HODEI_EV_COUNT];
};

/* One state change of a job, as the store keeps it. */
struct sched_transition {
    uint64_t job_id;
    double   at;                 /* unix seconds */
    int8_t   from;               /* enum job_state, -1: none (the submission) */
    uint8_t  to;
    char     worker_id[HODEI_ID_MAX + 1];
};

/* One histogram observation waiting for its commit. */
struct sched_observation {
    uint8_t  histogram;          /* enum sched_histogram_id */
    uint8_t  carried;            /* not the change set's own: survives a rollback */
    double   value;
    /* the exemplar: the job observed (job_id 0: none) and when */
    uint64_t job_id;
    double   at;
    char     tenant_id[HODEI_ID_MAX + 1];
};

/* Everything changed since the last sched_commit or sched_rollback (engine thread only). */
struct sched_changes {
    struct cds_list_head jobs;       /* touched jobs (job.touch_link), in touch order */
    struct cds_list_head tenants;    /* tenants with pending counts */
    struct cds_list_head workers;    /* workers registered, removed, or whose health changed */
    struct sched_transition *transitions;
    size_t   ntransitions, transitions_cap;
    struct sched_observation *obs;
    size_t   nobs, obs_cap;
    uint64_t decisions[HODEI_DECISION_COUNT];
    uint64_t workers_registered;
    uint64_t label_overflow[HODEI_F_COUNT];
    uint32_t npruned;            /* the oldest finished jobs, deleted by the change set */
};

struct sched {
    struct sched_config cfg;
    struct cds_lfht *jobs, *workers, *tenant_table;
    struct cds_lfht *sessions;   /* workers by session id */
    struct cds_lfht *quotas;     /* tenant_quota by tenant id: engine thread only */
    struct cds_lfht *absents;    /* absent workers' jobs by worker id: engine thread only */
    struct tenant **tenants;     /* [0..ntenants): engine; [0..ntenants_committed): readers */
    uint32_t ntenants, tenants_cap;
    uint32_t ntenants_committed; /* published with release semantics */
    struct tenant *overflow;
    uint64_t next_job_id, next_worker_seq, next_worker_name;
    uint64_t committed_next_job_id;     /* jobs below it are committed (release/acquire) */
    uint64_t committed_worker_seq;      /* workers up to it are committed (release/acquire) */
    double   orphan_deadline;    /* monotonic s: absent workers' jobs are lost then */
    struct sched_changes cs;
    struct { uint64_t queued, assigned, running, workers_total, workers_healthy; } g;
    uint64_t auth_counted[HODEI_AUTH_COUNT];   /* API threads' atomic adds */
    struct cds_list_head all_jobs;  /* by id */
    struct cds_list_head finished;  /* terminal jobs, oldest first */
    uint32_t nfinished;
    uint32_t nunfinished;
    uint64_t nonempty[(SCHED_LEVELS + 63) / 64];
    struct heap levels[SCHED_LEVELS];    /* tenants' queue heads per priority: fair share */
    struct cap_index free_index, total_index;
    struct heap deadlines;               /* assigned jobs' leases, running jobs' timeouts */
    struct cds_list_head outputs;        /* jobs whose output is kept, oldest first */
    size_t   output_bytes;
    uint64_t capacity_epoch;     /* bumped whenever capacity might have grown */
    uint64_t blocked_job;        /* head job that got no_capacity at blocked_epoch, 0: none */
    uint64_t blocked_epoch;
    uint64_t changes;            /* bumped by every commit: "is a publish due?" */
    double   wall_offset;        /* unix seconds = monotonic + wall_offset */
    double   start_time;         /* unix seconds: _created of unlabelled counters */
    int      start_time_kept;    /* the store has it (loaded, or committed once) */
    sched_event_fn emit;
    void    *emit_ctx;
    struct sched_metrics m;
};

int  sched_init(struct sched *s, const struct sched_config *cfg, double now_mono,
                double now_wall, sched_event_fn emit, void *emit_ctx);
/* Frees everything immediately: no reader may remain. */
void sched_destroy(struct sched *s);

/* Jobs.  now is CLOCK_MONOTONIC seconds.  *out (may be NULL) gets the job on success. */
enum sched_rc sched_submit(struct sched *s, const struct job_spec *spec, double now,
                           struct job **out);
enum sched_rc sched_cancel(struct sched *s, uint64_t id, double now, struct job **out);
enum sched_rc sched_start(struct sched *s, uint64_t id, const char *worker_id, double now,
                          struct job **out);
/* output (may be NULL) is copied when the report is accepted. */
enum sched_rc sched_succeed(struct sched *s, uint64_t id, const char *worker_id, int exit_code,
                            const struct job_output *output, double now, struct job **out);
/* Fails the attempt; the job is queued again while attempts <= max_retries (except
 * error_type cancelled), else it ends failed. */
enum sched_rc sched_fail(struct sched *s, uint64_t id, const char *worker_id,
                         enum hodei_error_type error_type, int has_exit_code, int exit_code,
                         const struct job_output *output, double now, struct job **out);
struct job *sched_job(struct sched *s, uint64_t id);

/* Workers. */
enum sched_rc sched_register(struct sched *s, const struct worker_spec *spec, double now,
                             struct worker **out);
enum sched_rc sched_heartbeat(struct sched *s, const char *worker_id, double cpu_usage_percent,
                              double memory_usage_mb, double now, struct worker **out);
struct worker *sched_worker(struct sched *s, const char *worker_id);
/* The worker holding session id, or NULL.  Any thread, under rcu_read_lock(): the worker (and
 * its session) stays readable until rcu_read_unlock(). */
struct worker *sched_session(struct sched *s, const char *session_id);

/* Places what can be placed now; returns the number of decisions made. */
unsigned sched_round(struct sched *s, double now);
/* Deletes the oldest finished jobs past job_retention (in the change set). */
void sched_prune(struct sched *s);
/* Health, leases and job timeouts: marks unhealthy, removes dead workers, requeues jobs whose
 * lease ended, fails timed-out jobs. */
void sched_tick(struct sched *s, double now);
/* Seconds from now until sched_tick has something to do (capped at max_wait). */
double sched_next_deadline(const struct sched *s, double now, double max_wait);

/* Consistent copy of a job's committed status, from any thread holding rcu_read_lock(). */
void job_status_read(const struct job *j, struct job_status *out);
/* 1 when j's submission has committed: other threads see no other job. */
static inline int sched_job_committed(const struct sched *s, const struct job *j)
{
    return j->id < __atomic_load_n(&s->committed_next_job_id, __ATOMIC_ACQUIRE);
}

/* ---- the change set (engine thread) ---------------------------------------------------- */

/* 1 when the change set holds something the store must keep. */
int  sched_dirty(const struct sched *s);
/* The change set is settled: readers see it now, and it is empty again.  stored: the store
 * committed it, carried observations included.  Otherwise it held nothing the store must keep
 * (sched_dirty() was 0) and its carried observations stay for the next one that is stored:
 * readers never see a value the store does not have. */
void sched_commit(struct sched *s, int stored);
/* The store refused it: every job, tenant and worker it touched is as it was committed, and
 * the change set is empty again.  Observations marked carried stay for the next one. */
void sched_rollback(struct sched *s);
/* An observation of h that is not a change of its own (a commit's duration): committed with
 * the next change set that commits, kept across rollbacks. */
void sched_observe_carried(struct sched *s, enum sched_histogram_id h, double value);
/* Copies a histogram as committed plus the change set's observations of it (the value the
 * store gets); 1 when the change set observed it. */
int  sched_histogram_pending(const struct sched *s, enum sched_histogram_id h,
                             struct hodei_histogram *out);
/* Sets the committed values counted outside the change set (as the batch that committed
 * sampled them). */
void sched_set_sampled(struct sched *s, const struct sched_sampled *v);
/* Makes the gauges of the working state the ones readers see. */
void sched_publish_gauges(struct sched *s);

/* ---- restart (before any reader or change) --------------------------------------------- */

void sched_load_next_job_id(struct sched *s, uint64_t next);
void sched_load_start_time(struct sched *s, double unix_seconds);
/* A tenant with its _created time; counters follow with sched_load_tenant_count. */
struct tenant *sched_load_tenant(struct sched *s, const char *id, double created);
void sched_load_tenant_count(struct tenant *t, enum tenant_counter c, uint64_t value);
/* A histogram as committed: classic sum and per-bucket counts (nbuckets + 1) and its native
 * part; returns -1 (nothing set) when they disagree (hodei_histogram_restore).  The other
 * counters of sched_metrics are plain fields: the loader sets them directly. */
int  sched_load_histogram(struct sched *s, enum sched_histogram_id h, double sum,
                          const uint64_t *counts, const struct hodei_native_view *native);
/* A job as the store kept it.  st is its status; output its kept tail (may be NULL). */
struct job *sched_load_job(struct sched *s, const struct job_spec *spec, uint64_t id,
                           double submitted_at, const struct job_status *st,
                           const unsigned char *output, size_t output_len, double now);
/* After the last job: assigned jobs go back to the queue (in the change set), running ones
 * wait for their worker until now + worker_timeout. */
void sched_load_done(struct sched *s, double now);

/* Relaxed atomic accessors for counters shared with the metrics thread. */
static inline uint64_t counter_load(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}
static inline double gauge_load(const double *p)
{
    double v;
    __atomic_load(p, &v, __ATOMIC_RELAXED);
    return v;
}
/* Counts a refused request: any thread. */
void sched_count_auth_failure(struct sched *s, enum hodei_auth_failure why);

/* The tenants readers may see: tenants[0 .. this). */
static inline uint32_t sched_tenant_count(const struct sched *s)
{
    return __atomic_load_n(&s->ntenants_committed, __ATOMIC_ACQUIRE);
}

#endif
