/*
 * hodei_schema.h — the one definition of every Hodei metric family.
 *
 * The daemon, the nginx module, the renderer, the tools and the tests all index this table;
 * no family name is spelled anywhere else in C.  Order is exposition order.  The first 18
 * families are the seed's contract: names, types, labels and buckets must not change.
 */
#ifndef HODEI_SCHEMA_H
#define HODEI_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

#define HODEI_LABELS_MAX      3
#define HODEI_BUCKETS_MAX     16
/* Longest label value accepted anywhere (bytes, before escaping). */
#define HODEI_LABEL_VALUE_MAX 128
/* Client-supplied ids (tenant_id, worker_id): [A-Za-z0-9._:-]{1,64}. */
#define HODEI_ID_MAX          64
#define HODEI_OVERFLOW_LABEL  "__overflow__"

enum hodei_metric_type { HODEI_COUNTER, HODEI_GAUGE, HODEI_HISTOGRAM };

/* Who produces a family's samples. */
enum hodei_source {
    HODEI_SRC_DAEMON,   /* the scheduler, through the segment */
    HODEI_SRC_NGINX,    /* the nginx module's HTTP zone */
    HODEI_SRC_BOTH,     /* either may add series (label sets never collide) */
    HODEI_SRC_HEADER    /* rendered by the reader from the segment header */
};

enum hodei_family_id {
    HODEI_F_JOBS_SCHEDULED_TOTAL,
    HODEI_F_JOBS_COMPLETED_TOTAL,
    HODEI_F_JOBS_FAILED_TOTAL,
    HODEI_F_JOBS_QUEUED,
    HODEI_F_WORKERS_REGISTERED_TOTAL,
    HODEI_F_WORKERS_HEALTHY,
    HODEI_F_WORKERS_TOTAL,
    HODEI_F_SCHEDULING_LATENCY_SECONDS,
    HODEI_F_SCHEDULING_DECISIONS_TOTAL,
    HODEI_F_CPU_USAGE_PERCENT,
    HODEI_F_MEMORY_USAGE_MB,
    HODEI_F_QUEUE_SIZE,
    HODEI_F_QUEUE_WAIT_TIME_SECONDS,
    HODEI_F_HTTP_REQUESTS_TOTAL,
    HODEI_F_HTTP_REQUEST_DURATION_SECONDS,
    HODEI_F_EVENTS_PUBLISHED_TOTAL,
    HODEI_F_EVENTS_RECEIVED_TOTAL,
    HODEI_F_EVENT_BUS_SUBSCRIBERS,
    /* added by this stack */
    HODEI_F_SCHEDULER_UP,
    HODEI_F_METRICS_SNAPSHOT_AGE_SECONDS,
    HODEI_F_BUILD_INFO,
    HODEI_F_JOBS_SUBMITTED_TOTAL,
    HODEI_F_JOB_DURATION_SECONDS,
    HODEI_F_JOBS_RUNNING,
    HODEI_F_EVENTS_DROPPED_TOTAL,
    HODEI_F_METRICS_LABEL_OVERFLOW_TOTAL,
    HODEI_F_API_AUTH_FAILURES_TOTAL,
    HODEI_F_COUNT
};

/*
 * What a label holds.  Every label of every family is one of these kinds, and code that needs
 * a label's meaning (series caps, test data, the JSON schema) asks the kind, never the name.
 */
enum hodei_label_kind {
    HODEI_LABEL_TENANT,          /* tenant_id */
    HODEI_LABEL_WORKER,          /* worker_id */
    HODEI_LABEL_ERROR_TYPE,      /* error_type */
    HODEI_LABEL_DECISION_TYPE,   /* decision_type */
    HODEI_LABEL_EVENT_TYPE,      /* event_type */
    HODEI_LABEL_METHOD,          /* method */
    HODEI_LABEL_ENDPOINT,        /* endpoint */
    HODEI_LABEL_STATUS_CODE,     /* status_code */
    HODEI_LABEL_VERSION,         /* version */
    HODEI_LABEL_FAMILY,          /* family */
    HODEI_LABEL_AUTH_REASON,     /* reason (of an API refusal) */
    HODEI_LABEL_KIND_COUNT
};

/* Where a kind's values come from, which decides how many series it can make. */
enum hodei_label_origin {
    HODEI_ORIGIN_CLIENT,   /* ids clients send: validated, capped, past the cap __overflow__ */
    HODEI_ORIGIN_SET,      /* a fixed set of names: values[0..nvalues) */
    HODEI_ORIGIN_SCHEMA,   /* the name of a family of this table */
    HODEI_ORIGIN_BUILD,    /* one value per running daemon */
    HODEI_ORIGIN_NGINX     /* worked out by nginx per request; bounded by its HTTP zone */
};

struct hodei_label_def {
    const char *name;            /* as exposed, e.g. "tenant_id" */
    const char *kind;            /* the kind's name in --families, e.g. "tenant" */
    enum hodei_label_origin origin;
    const char *const *values;   /* SET: the names */
    uint32_t    nvalues;         /* how many values the daemon may hold by default: a set's
                                    size, a client id's default cap (__overflow__ included) */
};

extern const struct hodei_label_def hodei_labels[HODEI_LABEL_KIND_COUNT];

struct hodei_family {
    const char *name;            /* as exposed in text 0.0.4, e.g. "hodei_jobs_scheduled_total" */
    uint16_t    name_len;
    const char *help;
    enum hodei_metric_type type;
    enum hodei_source source;
    uint8_t     nlabels;
    uint8_t     labels[HODEI_LABELS_MAX];   /* enum hodei_label_kind, in exposition order */
    uint8_t     nbuckets;        /* finite upper bounds; +Inf is implicit */
    const double *buckets;
    uint8_t     buckets_configurable;       /* a producer may use its own bounds (nginx) */
};

extern const struct hodei_family hodei_families[HODEI_F_COUNT];

/* Bounded label sets (DESIGN §2).  Indexes are stable; names are the label values. */
enum hodei_decision { HODEI_DECISION_ASSIGNED, HODEI_DECISION_NO_CAPACITY, HODEI_DECISION_REJECTED,
                      HODEI_DECISION_REQUEUED, HODEI_DECISION_COUNT };
extern const char *const hodei_decision_names[HODEI_DECISION_COUNT];

enum hodei_error_type { HODEI_ERR_EXIT_CODE, HODEI_ERR_TIMEOUT, HODEI_ERR_WORKER_LOST,
                        HODEI_ERR_SPAWN_ERROR, HODEI_ERR_CANCELLED, HODEI_ERR_OTHER, HODEI_ERR_COUNT };
extern const char *const hodei_error_type_names[HODEI_ERR_COUNT];

/* The daemon's event kinds: every state change is one of these. */
enum hodei_event_type {
    HODEI_EV_JOB_SUBMITTED, HODEI_EV_JOB_ASSIGNED, HODEI_EV_JOB_STARTED, HODEI_EV_JOB_SUCCEEDED,
    HODEI_EV_JOB_FAILED, HODEI_EV_JOB_CANCELLED, HODEI_EV_JOB_REQUEUED, HODEI_EV_JOB_REJECTED,
    HODEI_EV_WORKER_REGISTERED, HODEI_EV_WORKER_UNHEALTHY, HODEI_EV_WORKER_RECOVERED,
    HODEI_EV_WORKER_REMOVED, HODEI_EV_COUNT
};
extern const char *const hodei_event_type_names[HODEI_EV_COUNT];

/* Why the API refused a request's credentials (401) or its scope (403). */
enum hodei_auth_failure { HODEI_AUTH_MISSING, HODEI_AUTH_MALFORMED, HODEI_AUTH_UNKNOWN,
                          HODEI_AUTH_BAD_SECRET, HODEI_AUTH_FORBIDDEN, HODEI_AUTH_COUNT };
extern const char *const hodei_auth_failure_names[HODEI_AUTH_COUNT];

/* Index of name in names[0..n), or -1. */
int hodei_name_index(const char *const *names, int n, const char *name);

/* 1 when s[0..len) is a valid client id ([A-Za-z0-9._:-]{1,64}), else 0. */
int hodei_id_valid(const char *s, size_t len);

/* 1 when s[0..len) is well-formed UTF-8 without NUL bytes, else 0. */
int hodei_utf8_valid(const unsigned char *s, size_t len);

/* Family id for an exposition name (0.0.4 spelling), or -1. */
int hodei_family_lookup(const char *name);

/* The name of label i of family f. */
static inline const char *hodei_label_name(const struct hodei_family *f, unsigned i)
{
    return hodei_labels[f->labels[i]].name;
}

/* How many series family id can hold when each label kind k takes at most per_kind[k] values
 * (the product over its labels; 1 without labels, 0 for families read from the header). */
uint32_t hodei_family_series_cap(int id, const uint32_t per_kind[HODEI_LABEL_KIND_COUNT]);

/* per_kind[k] = hodei_labels[k].nvalues: the daemon's defaults (nginx's kinds are 0). */
void hodei_label_default_counts(uint32_t per_kind[HODEI_LABEL_KIND_COUNT]);

#endif
