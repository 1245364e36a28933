/* hodei_schema.c — the metric families of DESIGN §2, defined once. */
#include "hodei_schema.h"

#include <string.h>

static const double scheduling_latency_buckets[] = {
    .001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10 };
static const double queue_wait_buckets[] = { .1, .5, 1, 2.5, 5, 10, 30, 60, 300, 600 };
/* The original server's defaults (Prometheus client defaults); nginx may configure others. */
static const double http_duration_buckets[] = {
    .001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5 };
static const double job_duration_buckets[] = {
    .1, .5, 1, 2.5, 5, 10, 30, 60, 300, 600, 1800, 3600 };

#define NAME(s)   .name = s, .name_len = sizeof(s) - 1
#define BUCKETS(a) .nbuckets = sizeof(a) / sizeof(a[0]), .buckets = a
#define L1(a)        .nlabels = 1, .labels = { HODEI_LABEL_##a }
#define L2(a, b)     .nlabels = 2, .labels = { HODEI_LABEL_##a, HODEI_LABEL_##b }
#define L3(a, b, c)  .nlabels = 3, .labels = { HODEI_LABEL_##a, HODEI_LABEL_##b, HODEI_LABEL_##c }

const struct hodei_family hodei_families[HODEI_F_COUNT] = {
    [HODEI_F_JOBS_SCHEDULED_TOTAL] = { NAME("hodei_jobs_scheduled_total"),
        .help = "Total number of jobs scheduled", .type = HODEI_COUNTER,
        .source = HODEI_SRC_DAEMON, L1(TENANT) },
    [HODEI_F_JOBS_COMPLETED_TOTAL] = { NAME("hodei_jobs_completed_total"),
        .help = "Total number of jobs completed successfully", .type = HODEI_COUNTER,
        .source = HODEI_SRC_DAEMON, L1(TENANT) },
    [HODEI_F_JOBS_FAILED_TOTAL] = { NAME("hodei_jobs_failed_total"),
        .help = "Total number of jobs failed", .type = HODEI_COUNTER,
        .source = HODEI_SRC_DAEMON, L2(TENANT, ERROR_TYPE) },
    [HODEI_F_JOBS_QUEUED] = { NAME("hodei_jobs_queued"),
        .help = "Current number of jobs in queue", .type = HODEI_GAUGE,
        .source = HODEI_SRC_DAEMON },
    [HODEI_F_WORKERS_REGISTERED_TOTAL] = { NAME("hodei_workers_registered_total"),
        .help = "Total number of workers registered", .type = HODEI_COUNTER,
        .source = HODEI_SRC_DAEMON },
    [HODEI_F_WORKERS_HEALTHY] = { NAME("hodei_workers_healthy"),
        .help = "Current number of healthy workers", .type = HODEI_GAUGE,
        .source = HODEI_SRC_DAEMON },
    [HODEI_F_WORKERS_TOTAL] = { NAME("hodei_workers_total"),
        .help = "Current number of registered workers", .type = HODEI_GAUGE,
        .source = HODEI_SRC_DAEMON },
    [HODEI_F_SCHEDULING_LATENCY_SECONDS] = { NAME("hodei_scheduling_latency_seconds"),
        .help = "Time taken to make one scheduling decision", .type = HODEI_HISTOGRAM,
        .source = HODEI_SRC_DAEMON, BUCKETS(scheduling_latency_buckets) },
    [HODEI_F_SCHEDULING_DECISIONS_TOTAL] = { NAME("hodei_scheduling_decisions_total"),
        .help = "Total number of scheduling decisions by outcome", .type = HODEI_COUNTER,
        .source = HODEI_SRC_DAEMON, L1(DECISION_TYPE) },
    [HODEI_F_CPU_USAGE_PERCENT] = { NAME("hodei_cpu_usage_percent"),
        .help = "Last reported CPU usage of each worker in percent", .type = HODEI_GAUGE,
        .source = HODEI_SRC_DAEMON, L1(WORKER) },
    [HODEI_F_MEMORY_USAGE_MB] = { NAME("hodei_memory_usage_mb"),
        .help = "Last reported memory usage of each worker in megabytes", .type = HODEI_GAUGE,
        .source = HODEI_SRC_DAEMON, L1(WORKER) },
    [HODEI_F_QUEUE_SIZE] = { NAME("hodei_queue_size"),
        .help = "Current queue size: jobs queued or assigned but not yet running",
        .type = HODEI_GAUGE, .source = HODEI_SRC_DAEMON },
    [HODEI_F_QUEUE_WAIT_TIME_SECONDS] = { NAME("hodei_queue_wait_time_seconds"),
        .help = "Time jobs waited in the queue before placement", .type = HODEI_HISTOGRAM,
        .source = HODEI_SRC_DAEMON, BUCKETS(queue_wait_buckets) },
    [HODEI_F_HTTP_REQUESTS_TOTAL] = { NAME("hodei_http_requests_total"),
        .help = "Total number of HTTP requests", .type = HODEI_COUNTER,
        .source = HODEI_SRC_NGINX, L3(METHOD, ENDPOINT, STATUS_CODE) },
    [HODEI_F_HTTP_REQUEST_DURATION_SECONDS] = { NAME("hodei_http_request_duration_seconds"),
        .help = "HTTP request duration", .type = HODEI_HISTOGRAM,
        .source = HODEI_SRC_NGINX, BUCKETS(http_duration_buckets),
        .buckets_configurable = 1 },
    [HODEI_F_EVENTS_PUBLISHED_TOTAL] = { NAME("hodei_events_published_total"),
        .help = "Total number of events published to the event bus", .type = HODEI_COUNTER,
        .source = HODEI_SRC_DAEMON, L1(EVENT_TYPE) },
    [HODEI_F_EVENTS_RECEIVED_TOTAL] = { NAME("hodei_events_received_total"),
        .help = "Total number of events delivered to subscribers", .type = HODEI_COUNTER,
        .source = HODEI_SRC_DAEMON, L1(EVENT_TYPE) },
    [HODEI_F_EVENT_BUS_SUBSCRIBERS] = { NAME("hodei_event_bus_subscribers"),
        .help = "Current number of event bus subscribers", .type = HODEI_GAUGE,
        .source = HODEI_SRC_DAEMON },

    [HODEI_F_SCHEDULER_UP] = { NAME("hodei_scheduler_up"),
        .help = "1 when the scheduler's metrics segment is present, valid and fresh, else 0",
        .type = HODEI_GAUGE, .source = HODEI_SRC_HEADER },
    [HODEI_F_METRICS_SNAPSHOT_AGE_SECONDS] = { NAME("hodei_metrics_snapshot_age_seconds"),
        .help = "Seconds since the scheduler last published or refreshed its metrics",
        .type = HODEI_GAUGE, .source = HODEI_SRC_HEADER },
    [HODEI_F_BUILD_INFO] = { NAME("hodei_build_info"),
        .help = "Version of the running scheduler; always 1", .type = HODEI_GAUGE,
        .source = HODEI_SRC_DAEMON, L1(VERSION) },
    [HODEI_F_JOBS_SUBMITTED_TOTAL] = { NAME("hodei_jobs_submitted_total"),
        .help = "Total number of jobs accepted by the API", .type = HODEI_COUNTER,
        .source = HODEI_SRC_DAEMON, L1(TENANT) },
    [HODEI_F_JOB_DURATION_SECONDS] = { NAME("hodei_job_duration_seconds"),
        .help = "Time from a job's start to its end", .type = HODEI_HISTOGRAM,
        .source = HODEI_SRC_DAEMON, BUCKETS(job_duration_buckets) },
    [HODEI_F_JOBS_RUNNING] = { NAME("hodei_jobs_running"),
        .help = "Current number of running jobs", .type = HODEI_GAUGE,
        .source = HODEI_SRC_DAEMON },
    [HODEI_F_EVENTS_DROPPED_TOTAL] = { NAME("hodei_events_dropped_total"),
        .help = "Total number of events dropped because a subscriber's queue was full",
        .type = HODEI_COUNTER, .source = HODEI_SRC_DAEMON, L1(EVENT_TYPE) },
    [HODEI_F_METRICS_LABEL_OVERFLOW_TOTAL] = { NAME("hodei_metrics_label_overflow_total"),
        .help = "Total number of label sets folded into __overflow__ because a family's series cap was reached",
        .type = HODEI_COUNTER, .source = HODEI_SRC_BOTH, L1(FAMILY) },
    [HODEI_F_API_AUTH_FAILURES_TOTAL] = { NAME("hodei_api_auth_failures_total"),
        .help = "Total number of API requests refused for their credentials (401) or scope (403)",
        .type = HODEI_COUNTER, .source = HODEI_SRC_DAEMON, L1(AUTH_REASON) },
};

const char *const hodei_decision_names[HODEI_DECISION_COUNT] = {
    "assigned", "no_capacity", "rejected", "requeued" };

const char *const hodei_error_type_names[HODEI_ERR_COUNT] = {
    "exit_code", "timeout", "worker_lost", "spawn_error", "cancelled", "other" };

const char *const hodei_event_type_names[HODEI_EV_COUNT] = {
    "job_submitted", "job_assigned", "job_started", "job_succeeded", "job_failed",
    "job_cancelled", "job_requeued", "job_rejected", "worker_registered", "worker_unhealthy",
    "worker_recovered", "worker_removed" };

const char *const hodei_auth_failure_names[HODEI_AUTH_COUNT] = {
    "missing", "malformed", "unknown", "bad_secret", "forbidden" };

/* The default caps (DESIGN §5): 1,000 tenants plus their __overflow__ series; 10,000 workers,
 * whose registrations past the cap are refused rather than folded. */
const struct hodei_label_def hodei_labels[HODEI_LABEL_KIND_COUNT] = {
    [HODEI_LABEL_TENANT] = { "tenant_id", "tenant", HODEI_ORIGIN_CLIENT, NULL, 1001 },
    [HODEI_LABEL_WORKER] = { "worker_id", "worker", HODEI_ORIGIN_CLIENT, NULL, 10000 },
    [HODEI_LABEL_ERROR_TYPE] = { "error_type", "error_type", HODEI_ORIGIN_SET,
                                 hodei_error_type_names, HODEI_ERR_COUNT },
    [HODEI_LABEL_DECISION_TYPE] = { "decision_type", "decision_type", HODEI_ORIGIN_SET,
                                    hodei_decision_names, HODEI_DECISION_COUNT },
    [HODEI_LABEL_EVENT_TYPE] = { "event_type", "event_type", HODEI_ORIGIN_SET,
                                 hodei_event_type_names, HODEI_EV_COUNT },
    [HODEI_LABEL_METHOD] = { "method", "method", HODEI_ORIGIN_NGINX, NULL, 0 },
    [HODEI_LABEL_ENDPOINT] = { "endpoint", "endpoint", HODEI_ORIGIN_NGINX, NULL, 0 },
    [HODEI_LABEL_STATUS_CODE] = { "status_code", "status_code", HODEI_ORIGIN_NGINX, NULL, 0 },
    [HODEI_LABEL_VERSION] = { "version", "version", HODEI_ORIGIN_BUILD, NULL, 1 },
    [HODEI_LABEL_FAMILY] = { "family", "family", HODEI_ORIGIN_SCHEMA, NULL, HODEI_F_COUNT },
    [HODEI_LABEL_AUTH_REASON] = { "reason", "auth_reason", HODEI_ORIGIN_SET,
                                  hodei_auth_failure_names, HODEI_AUTH_COUNT },
};

uint32_t hodei_family_series_cap(int id, const uint32_t per_kind[HODEI_LABEL_KIND_COUNT])
{
    const struct hodei_family *f = &hodei_families[id];
    uint64_t n = 1;
    if (f->source == HODEI_SRC_HEADER)
        return 0;
    for (unsigned i = 0; i < f->nlabels; i++)
        n *= per_kind[f->labels[i]];
    return n > UINT32_MAX ? UINT32_MAX : (uint32_t) n;
}

void hodei_label_default_counts(uint32_t per_kind[HODEI_LABEL_KIND_COUNT])
{
    for (int k = 0; k < HODEI_LABEL_KIND_COUNT; k++)
        per_kind[k] = hodei_labels[k].nvalues;
}

int hodei_name_index(const char *const *names, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}

int hodei_family_lookup(const char *name)
{
    for (int i = 0; i < HODEI_F_COUNT; i++)
        if (strcmp(hodei_families[i].name, name) == 0)
            return i;
    return -1;
}

int hodei_id_valid(const char *s, size_t len)
{
    if (len == 0 || len > HODEI_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
              || c == '.' || c == '_' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

int hodei_utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    /* label values are nearly always ASCII: 8 bytes at a time while no high bit and no NUL */
    for (; i + 8 <= len; i += 8) {
        uint64_t x;
        memcpy(&x, s + i, 8);
        if (((x - 0x0101010101010101ull) | x) & 0x8080808080808080ull)
            break;
    }
    while (i < len) {
        unsigned char c = s[i];
        if (c < 0x80) {
            if (c == 0)
                return 0;
            i++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) { n = 1; cp = c & 0x1f; }
        else if (c >= 0xe0 && c <= 0xef) { n = 2; cp = c & 0x0f; }
        else if (c >= 0xf0 && c <= 0xf4) { n = 3; cp = c & 0x07; }
        else return 0;
        if (len - i - 1 < n)
            return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        /* overlong, surrogate or beyond U+10FFFF */
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff
            || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n + 1;
    }
    return 1;
}
