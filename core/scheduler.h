/*
 * scheduler.h — the scheduler's state and rules, without threads, HTTP or JSON.
 *
 * One thread (the engine's) calls every mutating function; other threads may only
 *   - look jobs up in `jobs` under rcu_read_lock() and copy their status with job_status_read(),
 *   - iterate `workers` under rcu_read_lock() reading ids and the usage gauges,
 *   - read the counters (sched_metrics, tenants[0..ntenants)) with relaxed atomic loads.
 * Removed jobs and workers are freed with call_rcu(), so such readers never see freed memory.
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
    /* status, read by other threads through job_status_read() */
    unsigned long status_seq;
    struct job_status st;
    /* engine-thread only */
    struct tenant *tenant;       /* the tenant it counts under (maybe __overflow__) */
    struct tenant_quota *quota;  /* its tenant id's unfinished jobs, while unfinished */
    struct worker *worker;
    struct tenant_level *level;  /* while queued */
    struct cds_list_head queue_link;    /* tenant_level.jobs while queued */
    struct cds_list_head worker_link;   /* worker.jobs while assigned or running */
    struct cds_list_head order_link;    /* sched.all_jobs, by id */
    struct cds_list_head done_link;     /* sched.finished while terminal */
    double   queued_mono;        /* when it last entered the queue (monotonic s) */
    double   started_mono;
    double   deadline_mono;      /* assigned: its lease ends; running: it times out */
    size_t   deadline_slot;      /* index in sched.deadlines, or HEAP_NONE */
    unsigned char *output;       /* the reported tail while kept, else NULL */
    size_t   output_len;
    struct cds_list_head output_link;   /* sched.outputs while kept */
};

struct worker_label {
    char *key, *value;
};

/* A worker session: the credential its registration returned (token.h), by id and hash. */
struct worker_session {
    char          id[12 + 1];          /* "" : none (tests, --insecure-no-auth) */
    unsigned char hash[32];
};

struct worker_spec {
    char     id[HODEI_ID_MAX + 1];   /* "" : generate "w-<n>" */
    struct worker_session session;
    uint32_t cpu_m, memory_mb;
    unsigned nlabels;
    struct worker_label labels[SCHED_LABELS_MAX];   /* copied by sched_register */
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
    /* gauges, read by the metrics thread (atomic 8-byte loads) */
    double   cpu_usage_percent;
    double   memory_usage_mb;
};

struct tenant {
    char     id[HODEI_ID_MAX + 1];   /* HODEI_OVERFLOW_LABEL for the overflow tenant */
    struct cds_lfht_node node;
    double   created;
    uint32_t active;             /* assigned + running: the fair-share key */
    struct cds_list_head levels; /* tenant_level entries with queued jobs */
    /* counters (relaxed atomics) */
    uint64_t submitted, scheduled, completed;
    uint64_t failed[HODEI_ERR_COUNT];
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

struct sched_metrics {
    uint64_t decisions[HODEI_DECISION_COUNT];
    uint64_t workers_registered;
    uint64_t label_overflow[HODEI_F_COUNT];
    /* classic + native + each bucket's latest job (hodei_histogram.h): this thread observes,
     * the metrics thread copies with hodei_histogram_read() */
    struct hodei_histogram scheduling_latency, queue_wait, job_duration;
    /* counted by API threads with atomic adds (sched_count_auth_failure) */
    uint64_t auth_failures[HODEI_AUTH_COUNT];
    /* gauges */
    uint64_t jobs_queued, jobs_assigned, jobs_running;
    uint64_t workers_total, workers_healthy;
};

struct sched {
    struct sched_config cfg;
    struct cds_lfht *jobs, *workers, *tenant_table;
    struct cds_lfht *sessions;   /* workers by session id */
    struct cds_lfht *quotas;     /* tenant_quota by tenant id: engine thread only */
    struct tenant **tenants;     /* [0..ntenants), the overflow tenant last when present */
    uint32_t ntenants;           /* published with release semantics */
    struct tenant *overflow;
    uint64_t next_job_id, next_worker_seq, next_worker_name;
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
    uint64_t changes;            /* bumped by every mutation: "is a publish due?" */
    double   wall_offset;        /* unix seconds = monotonic + wall_offset */
    double   start_time;         /* unix seconds: _created of unlabelled counters */
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
/* Health, leases and job timeouts: marks unhealthy, removes dead workers, requeues jobs whose
 * lease ended, fails timed-out jobs. */
void sched_tick(struct sched *s, double now);
/* Seconds from now until sched_tick has something to do (capped at max_wait). */
double sched_next_deadline(const struct sched *s, double now, double max_wait);

/* Consistent copy of a job's status, from any thread holding rcu_read_lock(). */
void job_status_read(const struct job *j, struct job_status *out);

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

static inline uint32_t sched_tenant_count(const struct sched *s)
{
    return __atomic_load_n(&s->ntenants, __ATOMIC_ACQUIRE);
}

#endif
