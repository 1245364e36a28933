/* hodei_fill.c — deterministic populated snapshots (see hodei_fill.h). */
#include "hodei_fill.h"
#include "hodei_snapshot.h"

#include <stdio.h>

/* A value in [1, 1000) derived from the seed and the series' position: non-zero, varied. */
static double count_of(const struct hodei_fill_params *p, unsigned family, unsigned i)
{
    uint64_t x = p->seed * 0x9e3779b97f4a7c15ull + family * 0x100000001b3ull + i * 2654435761u;
    x ^= x >> 29;
    return (double) (x % 999 + 1);
}

static double created_of(const struct hodei_fill_params *p)
{
    return 1700000000.0 + (double) (p->seed % 100000000);
}

static int params_valid(const struct hodei_fill_params *p)
{
    return p->tenants >= 1 && p->tenants <= 1000000 && p->workers >= 1 && p->workers <= 1000000
           && p->error_types >= 1 && p->error_types <= HODEI_ERR_COUNT
           && p->event_types >= 1 && p->event_types <= HODEI_EV_COUNT;
}

void hodei_fill_caps(const struct hodei_fill_params *p, uint32_t caps[HODEI_F_COUNT])
{
    for (int id = 0; id < HODEI_F_COUNT; id++) {
        const struct hodei_family *f = &hodei_families[id];
        if (f->source == HODEI_SRC_HEADER || f->source == HODEI_SRC_NGINX)
            caps[id] = 0;
        else if (f->nlabels == 0)
            caps[id] = 1;
        else if (id == HODEI_F_JOBS_FAILED_TOTAL)
            caps[id] = p->tenants * p->error_types;
        else if (f->labels[0][0] == 't')          /* tenant_id */
            caps[id] = p->tenants;
        else if (f->labels[0][0] == 'w')          /* worker_id */
            caps[id] = p->workers;
        else
            caps[id] = f->default_cap;
    }
}

static void fill_histogram(struct hodei_builder *b, const struct hodei_fill_params *p,
                           unsigned id, double created)
{
    const struct hodei_family *f = &hodei_families[id];
    double *sum = hodei_builder_series(b, NULL, created);
    if (sum == NULL)
        return;
    uint64_t *bucket = (uint64_t *) (sum + 1);
    double total = 0;
    for (unsigned k = 0; k <= f->nbuckets; k++) {
        bucket[k] = (uint64_t) count_of(p, id, k);
        total += bucket[k] * (k < f->nbuckets ? f->buckets[k] : 2 * f->buckets[k - 1]) * 0.75;
    }
    *sum = total;
}

/* One series per label value produced by name(i, buf) for i < n. */
static void fill_labelled(struct hodei_builder *b, const struct hodei_fill_params *p,
                          unsigned id, unsigned n, const char *fmt, double created, double divisor)
{
    char name[32];
    const char *labels[1] = { name };
    for (unsigned i = 0; i < n; i++) {
        snprintf(name, sizeof(name), fmt, i + 1);
        hodei_builder_scalar(b, labels, created, count_of(p, id, i) / divisor);
    }
}

static void fill_bounded(struct hodei_builder *b, const struct hodei_fill_params *p,
                         unsigned id, const char *const *names, unsigned n, double created)
{
    for (unsigned i = 0; i < n; i++)
        hodei_builder_scalar(b, &names[i], created, count_of(p, id, i));
}

size_t hodei_fill_build(void *buf, size_t cap, const struct hodei_fill_params *p)
{
    struct hodei_builder b;
    double created = created_of(p);
    if (!params_valid(p))
        return 0;
    hodei_builder_init(&b, buf, cap, created + 60);
    for (unsigned id = 0; id < HODEI_F_COUNT; id++) {
        const struct hodei_family *f = &hodei_families[id];
        if (f->source == HODEI_SRC_HEADER || f->source == HODEI_SRC_NGINX)
            continue;
        hodei_builder_family(&b, id);
        if (f->type == HODEI_HISTOGRAM) {
            fill_histogram(&b, p, id, created);
        } else if (id == HODEI_F_JOBS_FAILED_TOTAL) {
            char tenant[32];
            for (unsigned t = 0; t < p->tenants; t++) {
                snprintf(tenant, sizeof(tenant), "tenant-%04u", t + 1);
                for (unsigned e = 0; e < p->error_types; e++) {
                    const char *labels[2] = { tenant, hodei_error_type_names[e] };
                    hodei_builder_scalar(&b, labels, created,
                                         count_of(p, id, t * HODEI_ERR_COUNT + e));
                }
            }
        } else if (id == HODEI_F_CPU_USAGE_PERCENT) {
            fill_labelled(&b, p, id, p->workers, "worker-%05u", created, 10);  /* 0.1 .. 99.9 */
        } else if (f->nlabels && f->labels[0][0] == 't') {
            fill_labelled(&b, p, id, p->tenants, "tenant-%04u", created, 1);
        } else if (f->nlabels && f->labels[0][0] == 'w') {
            fill_labelled(&b, p, id, p->workers, "worker-%05u", created, 1);
        } else if (id == HODEI_F_SCHEDULING_DECISIONS_TOTAL) {
            fill_bounded(&b, p, id, hodei_decision_names, HODEI_DECISION_COUNT, created);
        } else if (f->nlabels && f->labels[0][0] == 'e') {   /* event_type */
            fill_bounded(&b, p, id, hodei_event_type_names, p->event_types, created);
        } else if (id == HODEI_F_BUILD_INFO) {
            const char *version[1] = { "0.0.0-fill" };
            hodei_builder_scalar(&b, version, created, 1);
        } else if (id == HODEI_F_METRICS_LABEL_OVERFLOW_TOTAL) {
            const char *family[1] = { hodei_families[HODEI_F_JOBS_SCHEDULED_TOTAL].name };
            hodei_builder_scalar(&b, family, created, count_of(p, id, 0));
        } else if (id == HODEI_F_API_AUTH_FAILURES_TOTAL) {
            fill_bounded(&b, p, id, hodei_auth_failure_names, HODEI_AUTH_COUNT, created);
        } else {
            hodei_builder_scalar(&b, NULL, created, count_of(p, id, 0));
        }
    }
    return hodei_builder_finish(&b);
}

size_t hodei_fill_samples(const struct hodei_fill_params *p)
{
    uint32_t caps[HODEI_F_COUNT];
    size_t n = 0;
    hodei_fill_caps(p, caps);
    for (unsigned id = 0; id < HODEI_F_COUNT; id++) {
        const struct hodei_family *f = &hodei_families[id];
        size_t series = id == HODEI_F_EVENTS_PUBLISHED_TOTAL || id == HODEI_F_EVENTS_RECEIVED_TOTAL
                        || id == HODEI_F_EVENTS_DROPPED_TOTAL ? p->event_types
                        : id == HODEI_F_METRICS_LABEL_OVERFLOW_TOTAL ? 1 : caps[id];
        n += f->type == HODEI_HISTOGRAM ? series * (f->nbuckets + 3) : series;
    }
    return n;
}
