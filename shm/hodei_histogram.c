/* hodei_histogram.c — classic + native + exemplars, recorded together (see hodei_histogram.h). */
#include "hodei_histogram.h"
#include "hodei_relaxed.h"

#include <math.h>
#include <sched.h>
#include <string.h>

int hodei_histogram_init(struct hodei_histogram *h, const double *bounds, unsigned nbuckets)
{
    if (nbuckets == 0 || nbuckets > HODEI_BUCKETS_MAX)
        return -1;
    for (unsigned k = 0; k < nbuckets; k++)
        if (!isfinite(bounds[k]) || (k > 0 && !(bounds[k] > bounds[k - 1])))
            return -1;
    memset(h, 0, sizeof(*h));
    h->bounds = bounds;
    h->nbuckets = nbuckets;
    return hodei_native_init(&h->native, HODEI_NATIVE_ZERO_THRESHOLD);
}

/* Writes e (labels already checked) into slot with value v, field by field. */
static void store_exemplar(struct hodei_exemplar_slot *slot, double v,
                           const struct hodei_exemplar *e)
{
    uint64_t text[HODEI_EXEMPLAR_LABELS_BYTES / 8] = { 0 };
    unsigned char *p = (unsigned char *) text;
    for (unsigned i = 0; i < e->nlabels; i++) {
        memcpy(p, e->label[i].name, e->label[i].name_len);
        p += e->label[i].name_len;
        memcpy(p, e->label[i].value, e->label[i].value_len);
        p += e->label[i].value_len;
        STORE(slot->name_len[i], (uint8_t) e->label[i].name_len);
        STORE(slot->value_len[i], (uint8_t) e->label[i].value_len);
    }
    for (size_t w = 0; w < sizeof(text) / 8; w++)
        if (slot->text[w] != text[w])
            STORE(slot->text[w], text[w]);
    store_double(&slot->value, v);
    store_double(&slot->timestamp, e->timestamp);
    STORE(slot->nlabels, e->nlabels);
}

int hodei_histogram_observe(struct hodei_histogram *h, double v, const struct hodei_exemplar *ex)
{
    if (!(v >= 0) || isinf(v))                 /* NaN, negative or infinite */
        return -1;
    int with_exemplar = ex && ex->nlabels && isfinite(ex->timestamp) && ex->timestamp >= 0
                        && hodei_exemplar_labels_valid(ex);
    unsigned k = 0;
    while (k < h->nbuckets && v > h->bounds[k])
        k++;
    uint64_t seq = h->seq;
    STORE(h->seq, seq + 1);
    __atomic_thread_fence(__ATOMIC_RELEASE);   /* the odd sequence before any field */
    STORE(h->count[k], h->count[k] + 1);
    store_double(&h->sum, h->sum + v);
    if (with_exemplar)
        store_exemplar(&h->exemplar[k], v, ex);
    hodei_native_observe(&h->native, v);       /* v is valid: cannot be refused */
    __atomic_store_n(&h->seq, seq + 2, __ATOMIC_RELEASE);   /* every field before the even one */
    return 0;
}

void hodei_job_exemplar(struct hodei_exemplar *e, const char *job_id, const char *tenant_id,
                        double timestamp)
{
    memset(e, 0, sizeof(*e));
    e->nlabels = 2;
    e->label[0].name = "job_id";
    e->label[0].name_len = sizeof("job_id") - 1;
    e->label[0].value = job_id;
    e->label[0].value_len = strlen(job_id);
    e->label[1].name = "tenant_id";
    e->label[1].name_len = sizeof("tenant_id") - 1;
    e->label[1].value = tenant_id;
    e->label[1].value_len = strlen(tenant_id);
    e->timestamp = timestamp;
}

static void load_exemplar(const struct hodei_exemplar_slot *live, struct hodei_exemplar_slot *c)
{
    c->value = load_double(&live->value);
    c->timestamp = load_double(&live->timestamp);
    c->nlabels = LOAD(live->nlabels);
    for (unsigned i = 0; i < HODEI_EXEMPLAR_LABELS_MAX; i++) {
        c->name_len[i] = LOAD(live->name_len[i]);
        c->value_len[i] = LOAD(live->value_len[i]);
    }
    for (size_t w = 0; w < sizeof(c->text) / 8; w++)
        c->text[w] = LOAD(live->text[w]);
}

/* A copy into *copy, bounded tries; 0 when it is consistent (else *copy is torn). */
static int try_read(const struct hodei_histogram *live, struct hodei_histogram *copy)
{
    for (int tries = 0; tries < HODEI_HISTOGRAM_READ_TRIES; tries++) {
        uint64_t seq = __atomic_load_n(&live->seq, __ATOMIC_ACQUIRE);
        if (seq & 1) {
            sched_yield();                     /* a preempted writer may share this core */
            continue;
        }
        copy->seq = 0;
        copy->bounds = live->bounds;           /* set before sharing, never changed */
        copy->nbuckets = live->nbuckets;
        copy->sum = load_double(&live->sum);
        for (unsigned k = 0; k <= live->nbuckets; k++) {
            copy->count[k] = LOAD(live->count[k]);
            load_exemplar(&live->exemplar[k], &copy->exemplar[k]);
        }
        if (hodei_native_read(&live->native, &copy->native) != 0)
            continue;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);   /* the fields before the second look */
        if (__atomic_load_n(&live->seq, __ATOMIC_RELAXED) == seq)
            return 0;
    }
    return -1;
}

int hodei_histogram_restore(struct hodei_histogram *h, double sum, const uint64_t *counts,
                            const struct hodei_native_view *v)
{
    uint64_t total = 0;
    for (unsigned k = 0; k <= h->nbuckets; k++) {
        if (counts[k] > UINT64_MAX - total)
            return -1;
        total += counts[k];
    }
    struct hodei_native native;
    if (total != v->count || sum != v->sum || hodei_native_restore(&native, v) != 0)
        return -1;
    memcpy(h->count, counts, (h->nbuckets + 1) * sizeof(*counts));
    h->sum = sum;
    h->native = native;
    memset(h->exemplar, 0, sizeof(h->exemplar));
    return 0;
}

int hodei_histogram_read(const struct hodei_histogram *live, struct hodei_histogram *copy)
{
    struct hodei_histogram fresh;
    memset(&fresh, 0, sizeof(fresh));          /* the buckets past nbuckets too */
    if (try_read(live, &fresh) != 0)
        return -1;
    *copy = fresh;
    return 0;
}

/* The exemplar of slot as the builder takes it: pointers into the slot's text. */
static void exemplar_view(const struct hodei_exemplar_slot *slot, struct hodei_exemplar *e)
{
    const char *p = (const char *) slot->text;
    memset(e, 0, sizeof(*e));
    if (slot->nlabels > HODEI_EXEMPLAR_LABELS_MAX)
        return;
    e->nlabels = slot->nlabels;
    for (unsigned i = 0; i < e->nlabels; i++) {
        e->label[i].name = p;
        e->label[i].name_len = slot->name_len[i];
        p += slot->name_len[i];
        e->label[i].value = p;
        e->label[i].value_len = slot->value_len[i];
        p += slot->value_len[i];
    }
    e->value = slot->value;
    e->timestamp = slot->timestamp;
}

int hodei_builder_histogram(struct hodei_builder *b, const char *const *labels, double created,
                            const struct hodei_histogram *h)
{
    if (b->cur && b->cur->nbuckets != h->nbuckets)
        b->error = 1;
    double *sum = hodei_builder_series(b, labels, created);
    if (sum == NULL)
        return -1;
    *sum = h->sum;
    memcpy(sum + 1, h->count, 8 * ((size_t) h->nbuckets + 1));
    struct hodei_exemplar ex[HODEI_BUCKETS_MAX + 1];
    int any = 0;
    for (unsigned k = 0; k <= h->nbuckets; k++) {
        exemplar_view(&h->exemplar[k], &ex[k]);
        any |= ex[k].nlabels != 0;
    }
    if (hodei_builder_native(b, &h->native) != 0 || (any && hodei_builder_exemplars(b, ex) != 0))
        return -1;
    return 0;
}
