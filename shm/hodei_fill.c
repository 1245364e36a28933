/* hodei_fill.c — deterministic populated snapshots (see hodei_fill.h). */
#include "hodei_fill.h"
#include "hodei_histogram.h"
#include "hodei_snapshot.h"

#include <math.h>
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
    for (unsigned id = 0; id < 64; id++)
        if ((p->observed >> id & 1) && (id >= HODEI_F_COUNT
                                        || hodei_families[id].type != HODEI_HISTOGRAM
                                        || hodei_families[id].source != HODEI_SRC_DAEMON))
            return 0;
    for (size_t i = 0; i < p->nobservations; i++)
        if (!(p->observed >> p->observations[i].family & 1))
            return 0;
    return p->tenants >= 1 && p->tenants <= 1000000 && p->workers >= 1 && p->workers <= 1000000
           && p->error_types >= 1 && p->error_types <= HODEI_ERR_COUNT
           && p->event_types >= 1 && p->event_types <= HODEI_EV_COUNT;
}

/* How many values of each label kind the fill holds: the parameters for the kinds they
 * name, one family for the overflow counter, the schema's sets otherwise, none of nginx's. */
static void values_per_kind(const struct hodei_fill_params *p,
                            uint32_t per_kind[HODEI_LABEL_KIND_COUNT])
{
    hodei_label_default_counts(per_kind);
    per_kind[HODEI_LABEL_TENANT] = p->tenants;
    per_kind[HODEI_LABEL_WORKER] = p->workers;
    per_kind[HODEI_LABEL_ERROR_TYPE] = p->error_types;
    per_kind[HODEI_LABEL_EVENT_TYPE] = p->event_types;
    per_kind[HODEI_LABEL_FAMILY] = 1;
}

static int filled(const struct hodei_family *f)
{
    return f->source == HODEI_SRC_DAEMON || f->source == HODEI_SRC_BOTH;
}

void hodei_fill_caps(const struct hodei_fill_params *p, uint32_t caps[HODEI_F_COUNT])
{
    uint32_t per_kind[HODEI_LABEL_KIND_COUNT];
    values_per_kind(p, per_kind);
    for (int id = 0; id < HODEI_F_COUNT; id++)
        caps[id] = filled(&hodei_families[id]) ? hodei_family_series_cap(id, per_kind) : 0;
}

/* Value i of a label of kind k, into buf. */
static const char *label_value(enum hodei_label_kind k, unsigned i, char *buf, size_t len)
{
    const struct hodei_label_def *l = &hodei_labels[k];
    switch (l->origin) {
    case HODEI_ORIGIN_SET:
        return l->values[i];
    case HODEI_ORIGIN_SCHEMA:
        return hodei_families[i].name;
    case HODEI_ORIGIN_BUILD:
        return "0.0.0-fill";
    default:
        snprintf(buf, len, k == HODEI_LABEL_WORKER ? "worker-%05u" : "tenant-%04u", i + 1);
        return buf;
    }
}

/* The caller's observations of family id into h (an exemplar without a time gets now, the
 * snapshot's time).  Returns 0, or -1 if one is refused. */
static int observe_given(struct hodei_histogram *h, const struct hodei_fill_params *p,
                         unsigned id, double now)
{
    for (size_t i = 0; i < p->nobservations; i++) {
        const struct hodei_fill_observation *o = &p->observations[i];
        struct hodei_exemplar e;
        if (o->family != id)
            continue;
        if (o->job_id)
            hodei_job_exemplar(&e, o->job_id, o->tenant_id ? o->tenant_id : "-",
                               o->timestamp > 0 ? o->timestamp : now);
        if (hodei_histogram_observe(h, o->value, o->job_id ? &e : NULL) != 0)
            return -1;
    }
    return 0;
}

/* A few observations spread over every classic bucket (the first from a thousandth of its
 * bound, the +Inf one up to twice the last bound), each with an exemplar. */
static void observe_generated(struct hodei_histogram *h, const struct hodei_fill_params *p,
                              unsigned id, double created)
{
    const struct hodei_family *f = &hodei_families[id];
    for (unsigned k = 0; k <= f->nbuckets; k++) {
        double lo = k == 0 ? f->buckets[0] / 1000 : f->buckets[k - 1];
        double hi = k < f->nbuckets ? f->buckets[k] : 2 * f->buckets[k - 1];
        unsigned n = (unsigned) count_of(p, id, k) % 8 + 1;
        for (unsigned j = 0; j < n; j++) {
            char job[24], tenant_buf[32];
            struct hodei_exemplar e;
            snprintf(job, sizeof(job), "%u", 16 * k + j + 1);
            const char *tenant = label_value(HODEI_LABEL_TENANT, (k + j) % p->tenants,
                                             tenant_buf, sizeof(tenant_buf));
            hodei_job_exemplar(&e, job, tenant, created + 30 + k + j / 8.0);
            hodei_histogram_observe(h, lo * pow(hi / lo, (j + 0.5) / n), &e);
        }
    }
}

static void fill_histogram(struct hodei_builder *b, const struct hodei_fill_params *p,
                           unsigned id, double created)
{
    const struct hodei_family *f = &hodei_families[id];
    struct hodei_histogram h;
    hodei_histogram_init(&h, f->buckets, f->nbuckets);
    if (!(p->observed >> id & 1))
        observe_generated(&h, p, id, created);
    else if (observe_given(&h, p, id, created + 60) != 0)
        b->error = 1;
    hodei_builder_histogram(b, NULL, created, &h);
}

/* Every combination of the family's label values, the first label varying slowest. */
static void fill_series(struct hodei_builder *b, const struct hodei_fill_params *p,
                        unsigned id, const uint32_t per_kind[HODEI_LABEL_KIND_COUNT],
                        double created)
{
    const struct hodei_family *f = &hodei_families[id];
    char buf[HODEI_LABELS_MAX][32];
    const char *labels[HODEI_LABELS_MAX];
    /* a percentage stays below 100; build information is 1 by definition */
    double divisor = id == HODEI_F_CPU_USAGE_PERCENT ? 10 : 1;
    uint32_t n = hodei_family_series_cap((int) id, per_kind);

    for (uint32_t i = 0; i < n; i++) {
        uint32_t rest = i;
        for (int l = f->nlabels - 1; l >= 0; l--) {
            uint32_t count = per_kind[f->labels[l]];
            labels[l] = label_value(f->labels[l], rest % count, buf[l], sizeof(buf[l]));
            rest /= count;
        }
        hodei_builder_scalar(b, labels, created,
                             id == HODEI_F_BUILD_INFO ? 1 : count_of(p, id, i) / divisor);
    }
}

size_t hodei_fill_build(void *buf, size_t cap, const struct hodei_fill_params *p)
{
    struct hodei_builder b;
    uint32_t per_kind[HODEI_LABEL_KIND_COUNT];
    double created = created_of(p);
    if (!params_valid(p))
        return 0;
    values_per_kind(p, per_kind);
    hodei_builder_init(&b, buf, cap, created + 60);      /* the fill's "now" */
    for (unsigned id = 0; id < HODEI_F_COUNT; id++) {
        const struct hodei_family *f = &hodei_families[id];
        if (!filled(f))
            continue;
        hodei_builder_family(&b, id);
        if (f->type == HODEI_HISTOGRAM)
            fill_histogram(&b, p, id, created);
        else
            fill_series(&b, p, id, per_kind, created);
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
        n += f->type == HODEI_HISTOGRAM ? (size_t) caps[id] * (f->nbuckets + 3) : caps[id];
    }
    return n;
}
