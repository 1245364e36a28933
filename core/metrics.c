/* metrics.c — snapshot building and the publish loop (see metrics.h). */
#include "metrics.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "hodei_snapshot.h"

/* Queue of the aggregator's subscription: several intervals' worth of a busy scheduler. */
#define AGGREGATOR_QUEUE 65536
/* Slots of the segment: a reader is disturbed only after SEGMENT_SLOTS - 1 publishes. */
#define SEGMENT_SLOTS    4
/* The snapshot buffer's first size: an idle daemon's snapshot fits. */
#define FIRST_BUFFER     (64 * 1024)

void metrics_caps(uint32_t caps[HODEI_F_COUNT], uint32_t max_tenants, uint32_t max_workers)
{
    uint32_t per_kind[HODEI_LABEL_KIND_COUNT];
    hodei_label_default_counts(per_kind);
    per_kind[HODEI_LABEL_TENANT] = max_tenants + 1;          /* and __overflow__ */
    per_kind[HODEI_LABEL_WORKER] = max_workers;              /* the rest are refused */
    for (int f = 0; f < HODEI_F_COUNT; f++) {
        enum hodei_source src = hodei_families[f].source;
        caps[f] = src == HODEI_SRC_DAEMON || src == HODEI_SRC_BOTH
                      ? hodei_family_series_cap(f, per_kind) : 0;
    }
}

static void scalar(struct hodei_builder *b, enum hodei_family_id f, double created, double v)
{
    hodei_builder_family(b, f);
    hodei_builder_scalar(b, NULL, created, v);
}

/* The classic buckets, native part and exemplars of one consistent copy.  A copy the
 * scheduler thread kept changing through every try is the last one taken instead: the
 * snapshot never carries a histogram whose parts disagree. */
static void histogram(struct hodei_builder *b, enum hodei_family_id f, double created,
                      const struct hodei_histogram *live, struct hodei_histogram *copy)
{
    hodei_histogram_read(live, copy);
    hodei_builder_family(b, f);
    hodei_builder_histogram(b, NULL, created, copy);
}

/* One series per tenant of a tenant-labelled counter. */
static void per_tenant(struct hodei_builder *b, enum hodei_family_id f, const struct sched *s,
                       uint32_t ntenants, enum tenant_counter c)
{
    hodei_builder_family(b, f);
    for (uint32_t i = 0; i < ntenants; i++) {
        const struct tenant *t = s->tenants[i];
        const char *labels[1] = { t->id };
        hodei_builder_scalar(b, labels, t->created, (double) counter_load(&t->count[c]));
    }
}

/* Worker gauges: one series per registered worker whose registration committed. */
static void per_worker(struct hodei_builder *b, enum hodei_family_id f, const struct sched *s,
                       size_t usage_offset)
{
    hodei_builder_family(b, f);
    struct cds_lfht_iter it;
    struct worker *w;
    uint64_t committed = __atomic_load_n(&s->committed_worker_seq, __ATOMIC_ACQUIRE);
    cds_lfht_for_each_entry(s->workers, &it, w, node) {
        if (w->seq > committed)
            continue;
        const char *labels[1] = { w->id };
        const double *usage = (const double *) ((const char *) w + usage_offset);
        hodei_builder_scalar(b, labels, w->registered_at, gauge_load(usage));
    }
}

/* A labelled counter family over a fixed set of label values. */
static void per_value(struct hodei_builder *b, enum hodei_family_id f, double created,
                      const char *const *names, int n, const uint64_t *values)
{
    hodei_builder_family(b, f);
    for (int i = 0; i < n; i++) {
        const char *labels[1] = { names[i] };
        hodei_builder_scalar(b, labels, created, (double) counter_load(&values[i]));
    }
}

void metrics_copies_init(struct metrics_copies *c)
{
    for (int h = 0; h < SH_COUNT; h++) {
        const struct hodei_family *f = &hodei_families[sched_histogram_family[h]];
        hodei_histogram_init(&c->h[h], f->buckets, f->nbuckets);
    }
}

size_t metrics_build(const struct sched *s, uint64_t subscribers, const char *version,
                     struct metrics_copies *copies, void *buf, size_t cap, double now)
{
    const struct sched_metrics *m = &s->m;
    double start = s->start_time;
    uint32_t ntenants = sched_tenant_count(s);
    struct hodei_builder b;
    hodei_builder_init(&b, buf, cap, now);
    rcu_read_lock();

    per_tenant(&b, HODEI_F_JOBS_SCHEDULED_TOTAL, s, ntenants, TC_SCHEDULED);
    per_tenant(&b, HODEI_F_JOBS_COMPLETED_TOTAL, s, ntenants, TC_COMPLETED);
    hodei_builder_family(&b, HODEI_F_JOBS_FAILED_TOTAL);
    for (uint32_t i = 0; i < ntenants; i++) {
        const struct tenant *t = s->tenants[i];
        for (int e = 0; e < HODEI_ERR_COUNT; e++) {
            const char *labels[2] = { t->id, hodei_error_type_names[e] };
            hodei_builder_scalar(&b, labels, t->created,
                                 (double) counter_load(&t->count[TC_FAILED + e]));
        }
    }
    uint64_t queued = counter_load(&m->jobs_queued), assigned = counter_load(&m->jobs_assigned);
    scalar(&b, HODEI_F_JOBS_QUEUED, start, (double) queued);
    scalar(&b, HODEI_F_WORKERS_REGISTERED_TOTAL, start,
           (double) counter_load(&m->workers_registered));
    scalar(&b, HODEI_F_WORKERS_HEALTHY, start, (double) counter_load(&m->workers_healthy));
    scalar(&b, HODEI_F_WORKERS_TOTAL, start, (double) counter_load(&m->workers_total));
    histogram(&b, HODEI_F_SCHEDULING_LATENCY_SECONDS, start, &m->h[SH_SCHEDULING_LATENCY],
              &copies->h[SH_SCHEDULING_LATENCY]);
    per_value(&b, HODEI_F_SCHEDULING_DECISIONS_TOTAL, start, hodei_decision_names,
              HODEI_DECISION_COUNT, m->decisions);
    per_worker(&b, HODEI_F_CPU_USAGE_PERCENT, s, offsetof(struct worker, cpu_usage_percent));
    per_worker(&b, HODEI_F_MEMORY_USAGE_MB, s, offsetof(struct worker, memory_usage_mb));
    scalar(&b, HODEI_F_QUEUE_SIZE, start, (double) (queued + assigned));
    histogram(&b, HODEI_F_QUEUE_WAIT_TIME_SECONDS, start, &m->h[SH_QUEUE_WAIT],
              &copies->h[SH_QUEUE_WAIT]);
    per_value(&b, HODEI_F_EVENTS_PUBLISHED_TOTAL, start, hodei_event_type_names,
              HODEI_EV_COUNT, m->events_published);
    per_value(&b, HODEI_F_EVENTS_RECEIVED_TOTAL, start, hodei_event_type_names,
              HODEI_EV_COUNT, m->events_received);
    scalar(&b, HODEI_F_EVENT_BUS_SUBSCRIBERS, start, (double) subscribers);
    hodei_builder_family(&b, HODEI_F_BUILD_INFO);
    const char *version_label[1] = { version };
    hodei_builder_scalar(&b, version_label, start, 1);
    per_tenant(&b, HODEI_F_JOBS_SUBMITTED_TOTAL, s, ntenants, TC_SUBMITTED);
    histogram(&b, HODEI_F_JOB_DURATION_SECONDS, start, &m->h[SH_JOB_DURATION],
              &copies->h[SH_JOB_DURATION]);
    scalar(&b, HODEI_F_JOBS_RUNNING, start, (double) counter_load(&m->jobs_running));
    per_value(&b, HODEI_F_EVENTS_DROPPED_TOTAL, start, hodei_event_type_names,
              HODEI_EV_COUNT, m->events_dropped);
    hodei_builder_family(&b, HODEI_F_METRICS_LABEL_OVERFLOW_TOTAL);
    for (int f = 0; f < HODEI_F_COUNT; f++) {
        uint64_t n = counter_load(&m->label_overflow[f]);
        if (n) {
            const char *labels[1] = { hodei_families[f].name };
            hodei_builder_scalar(&b, labels, start, (double) n);
        }
    }
    per_value(&b, HODEI_F_API_AUTH_FAILURES_TOTAL, start, hodei_auth_failure_names,
              HODEI_AUTH_COUNT, m->auth_failures);
    histogram(&b, HODEI_F_STORE_COMMIT_DURATION_SECONDS, start, &m->h[SH_STORE_COMMIT],
              &copies->h[SH_STORE_COMMIT]);
    per_value(&b, HODEI_F_STORE_ERRORS_TOTAL, start, hodei_store_error_names,
              HODEI_STORE_ERROR_COUNT, m->store_errors);
    rcu_read_unlock();
    return hodei_builder_finish(&b);
}

/* Builds the snapshot into p->buf, which grows as the snapshot needs, up to what the caps
 * allow; returns its length, 0 if it did not fit even that. */
static size_t build(struct metrics_publisher *p, const struct bus_counters *bc)
{
    for (;;) {
        size_t len = metrics_build(p->sched, bc->subscribers, p->version, &p->copies, p->buf,
                                   p->cap,
                                   hodei_now());
        if (len > 0 || p->cap >= p->cap_max)
            return len;
        size_t cap = p->cap * 2 < p->cap_max ? p->cap * 2 : p->cap_max;
        void *buf = aligned_alloc(64, (cap + 63) & ~(size_t) 63);
        if (buf == NULL)
            return 0;
        free(p->buf);
        p->buf = buf;
        p->cap = cap;
    }
}

static void publish(struct metrics_publisher *p, int force)
{
    struct bus_counters bc;
    unsigned long events = bus_drain(p->sub);
    bus_counters_read(p->bus, &bc);
    uint64_t changes = counter_load(&p->sched->changes);
    if (!force && events == 0 && changes == p->last_changes
        && bc.subscribers == p->last_subscribers) {
        hodei_seg_heartbeat(&p->seg);
        p->heartbeats++;
        return;
    }
    uint64_t grown = p->seg.grown;
    size_t len = build(p, &bc);
    const char *why = len == 0 ? "the snapshot exceeds what the series caps allow" : NULL;
    if (len > 0 && hodei_seg_publish(&p->seg, p->buf, len) != 0)
        why = p->seg.err;
    if (why) {
        /* No heartbeat either: once it is stale, nginx reports the scheduler down rather
         * than serve these numbers as current.  Logged when it starts, not every interval. */
        if (!p->failing)
            log_error("metrics not published: %s; trying again every %u ms", why,
                      p->interval_ms);
        p->failing = 1;
        return;
    }
    if (p->failing)
        log_info("metrics published again");
    p->failing = 0;
    if (p->seg.grown != grown)
        log_info("metrics segment grew to %zu bytes for a %zu-byte snapshot", p->seg.size, len);
    p->last_changes = changes;
    p->last_subscribers = bc.subscribers;
    p->publishes++;
}

static void *publisher_main(void *arg)
{
    struct metrics_publisher *p = arg;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    pthread_mutex_lock(&p->lock);
    while (!p->stop) {
        hodei_timespec_add_ms(&next, p->interval_ms);
        while (!p->stop && pthread_cond_timedwait(&p->cond, &p->lock, &next) == 0)
            ;
        if (p->stop)
            break;
        pthread_mutex_unlock(&p->lock);
        publish(p, 0);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int metrics_start(struct metrics_publisher *p, const char *path, const struct sched *s,
                  struct bus *bus, const char *version, unsigned interval_ms,
                  uint32_t max_tenants, uint32_t max_workers)
{
    memset(p, 0, sizeof *p);
    uint32_t caps[HODEI_F_COUNT];
    struct bus_counters bc;
    metrics_caps(caps, max_tenants, max_workers);
    p->sched = s;
    p->bus = bus;
    p->version = version;
    metrics_copies_init(&p->copies);
    p->interval_ms = interval_ms;
    p->cap_max = hodei_payload_bound(caps);
    p->cap = p->cap_max < FIRST_BUFFER ? p->cap_max : FIRST_BUFFER;
    p->buf = aligned_alloc(64, (p->cap + 63) & ~(size_t) 63);
    /* the segment starts with room for what there is now, and grows with it */
    bus_counters_read(bus, &bc);
    size_t len = p->buf ? build(p, &bc) : 0;
    char err[256];
    if (len == 0 || hodei_seg_create(&p->seg, path, SEGMENT_SLOTS, hodei_seg_room(len), err,
                                     sizeof err) < 0) {
        log_error("cannot create the metrics segment %s: %s", path,
                  len ? err : "no memory for the first snapshot");
        free(p->buf);
        return -1;
    }
    p->sub = bus_subscribe(bus, AGGREGATOR_QUEUE, 0);
    pthread_mutex_init(&p->lock, NULL);
    hodei_cond_init_monotonic(&p->cond);
    publish(p, 1);   /* every family present from the start */
    if (pthread_create(&p->thread, NULL, publisher_main, p) != 0) {
        log_error("cannot start the metrics thread");
        return -1;
    }
    log_info("metrics segment %s: %zu bytes, grows with the snapshot; published every %u ms",
             path, p->seg.size, interval_ms);
    return 0;
}

void metrics_stop(struct metrics_publisher *p)
{
    pthread_mutex_lock(&p->lock);
    p->stop = 1;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->thread, NULL);
    publish(p, 1);
    bus_unsubscribe(p->bus, p->sub);
    hodei_seg_close(&p->seg);
    free(p->buf);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
}
