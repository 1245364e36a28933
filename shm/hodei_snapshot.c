/* hodei_snapshot.c — building and validating snapshot payloads (format: hodei_snapshot.h). */
#include "hodei_snapshot.h"

#include <math.h>
#include <string.h>

#define ALIGN8(n) (((n) + 7) & ~(size_t) 7)
#define FAMILY_TABLE_OFF sizeof(struct hodei_snap_header)
#define SERIES_AREA_OFF  ALIGN8(FAMILY_TABLE_OFF + HODEI_F_COUNT * sizeof(struct hodei_snap_family))

static size_t value_bytes(enum hodei_metric_type type, unsigned nbuckets)
{
    /* created + value, or created + sum + buckets (+Inf included) */
    return type == HODEI_HISTOGRAM ? 16 + 8 * ((size_t) nbuckets + 1) : 16;
}

size_t hodei_series_stride(enum hodei_family_id id, unsigned nbuckets)
{
    const struct hodei_family *f = &hodei_families[id];
    return hodei_series_values_off(f->nlabels) + value_bytes(f->type, nbuckets);
}

size_t hodei_payload_bound(const uint32_t caps[HODEI_F_COUNT])
{
    size_t total = SERIES_AREA_OFF;
    for (int id = 0; id < HODEI_F_COUNT; id++) {
        const struct hodei_family *f = &hodei_families[id];
        if (caps[id] == 0)
            continue;
        total += 8 * (size_t) HODEI_BUCKETS_MAX;        /* bucket bounds */
        total += (size_t) caps[id] * (hodei_series_stride(id, HODEI_BUCKETS_MAX)
                                      + f->nlabels * (2 + HODEI_LABEL_VALUE_MAX));
    }
    return ALIGN8(total);
}

void hodei_default_caps(uint32_t caps[HODEI_F_COUNT])
{
    uint32_t per_kind[HODEI_LABEL_KIND_COUNT];
    hodei_label_default_counts(per_kind);
    for (int id = 0; id < HODEI_F_COUNT; id++)
        caps[id] = hodei_family_series_cap(id, per_kind);
}

/* 1 when a family whose bounds the schema fixes is given exactly those. */
static int bounds_allowed(const struct hodei_family *f, const double *bounds, unsigned n)
{
    if (f->buckets_configurable)
        return 1;
    if (n != f->nbuckets)
        return 0;
    for (unsigned k = 0; k < n; k++)
        if (!(bounds[k] == f->buckets[k]))
            return 0;
    return 1;
}

/* ---- builder ------------------------------------------------------------------------- */

static struct hodei_snap_header *hdr_of(struct hodei_builder *b)
{
    return (struct hodei_snap_header *) b->buf;
}

void hodei_builder_init(struct hodei_builder *b, void *buf, size_t cap, double timestamp)
{
    memset(b, 0, sizeof(*b));
    b->buf = buf;
    b->cap = cap & ~(size_t) 7;    /* so the padded end of the payload stays inside */
    b->last_id = -1;
    b->series_end = SERIES_AREA_OFF;
    /* offsets are u32: a larger buffer is never needed and could not be addressed */
    if (b->cap < SERIES_AREA_OFF || cap > UINT32_MAX || ((uintptr_t) buf & 7)) {
        b->error = 1;
        return;
    }
    memset(buf, 0, SERIES_AREA_OFF);
    struct hodei_snap_header *h = hdr_of(b);
    h->magic = HODEI_SNAP_MAGIC;
    h->timestamp = timestamp;
}

static void *reserve_series(struct hodei_builder *b, size_t n)
{
    if (b->error || b->cap - b->strings_used < b->series_end
        || b->cap - b->strings_used - b->series_end < n) {
        b->error = 1;
        return NULL;
    }
    void *p = b->buf + b->series_end;
    b->series_end += n;
    return p;
}

void hodei_builder_family_buckets(struct hodei_builder *b, enum hodei_family_id id,
                                  const double *bounds, unsigned nbuckets)
{
    if (b->error)
        return;
    const struct hodei_family *f = &hodei_families[id];
    if ((int) id <= b->last_id || (int) id >= HODEI_F_COUNT || f->source == HODEI_SRC_HEADER
        || (f->type == HODEI_HISTOGRAM) != (nbuckets > 0) || nbuckets > HODEI_BUCKETS_MAX
        || !bounds_allowed(f, bounds, nbuckets)) {
        b->error = 1;
        return;
    }
    struct hodei_snap_header *h = hdr_of(b);
    struct hodei_snap_family *fam =
        (struct hodei_snap_family *) (b->buf + FAMILY_TABLE_OFF) + h->nfamilies;
    if (nbuckets) {
        double *dst = reserve_series(b, 8 * (size_t) nbuckets);
        if (dst == NULL)
            return;
        memcpy(dst, bounds, 8 * (size_t) nbuckets);
        fam->bounds_off = (uint32_t) ((unsigned char *) dst - b->buf);
    }
    fam->id = (uint16_t) id;
    fam->nlabels = f->nlabels;
    fam->nbuckets = (uint8_t) nbuckets;
    fam->stride = (uint32_t) hodei_series_stride(id, nbuckets);
    fam->series_off = (uint32_t) b->series_end;
    h->nfamilies++;
    b->cur = fam;
    b->last_id = (int) id;
}

void hodei_builder_family(struct hodei_builder *b, enum hodei_family_id id)
{
    const struct hodei_family *f = &hodei_families[id];
    hodei_builder_family_buckets(b, id, f->buckets, f->nbuckets);
}

/* Strings grow down from the end of the buffer; offsets are fixed up by finish(). */
static int push_string(struct hodei_builder *b, const char *s, uint32_t *ref)
{
    size_t len = strlen(s);
    if (len == 0 || len > HODEI_LABEL_VALUE_MAX
        || !hodei_utf8_valid((const unsigned char *) s, len)) {
        b->error = 1;
        return -1;
    }
    size_t need = 2 + len;
    if (b->cap - b->series_end < b->strings_used + need) {
        b->error = 1;
        return -1;
    }
    b->strings_used += need;
    unsigned char *p = b->buf + b->cap - b->strings_used;
    uint16_t l16 = (uint16_t) len;
    memcpy(p, &l16, 2);
    memcpy(p + 2, s, len);
    *ref = (uint32_t) b->strings_used;        /* distance from the end, until finish() */
    return 0;
}

void *hodei_builder_series(struct hodei_builder *b, const char *const *labels, double created)
{
    if (b->error || b->cur == NULL) {
        b->error = 1;
        return NULL;
    }
    struct hodei_snap_family *fam = b->cur;
    unsigned char *rec = reserve_series(b, fam->stride);
    if (rec == NULL)
        return NULL;
    memset(rec, 0, fam->stride);
    for (unsigned i = 0; i < fam->nlabels; i++) {
        uint32_t ref;
        if (push_string(b, labels[i], &ref) != 0)
            return NULL;
        memcpy(rec + 4 * i, &ref, 4);
    }
    size_t voff = hodei_series_values_off(fam->nlabels);
    memcpy(rec + voff, &created, 8);
    fam->nseries++;
    return rec + voff + 8;
}

int hodei_builder_scalar(struct hodei_builder *b, const char *const *labels, double created,
                         double value)
{
    double *v = hodei_builder_series(b, labels, created);
    if (v == NULL)
        return -1;
    *v = value;
    return 0;
}

size_t hodei_builder_finish(struct hodei_builder *b)
{
    if (b->error)
        return 0;
    struct hodei_snap_header *h = hdr_of(b);
    size_t strings_off = b->series_end;
    memmove(b->buf + strings_off, b->buf + b->cap - b->strings_used, b->strings_used);
    /* label refs were distances from the buffer's end; make them offsets into the area */
    struct hodei_snap_family *fam = (struct hodei_snap_family *) (b->buf + FAMILY_TABLE_OFF);
    for (unsigned k = 0; k < h->nfamilies; k++) {
        for (uint32_t i = 0; i < fam[k].nseries; i++) {
            unsigned char *rec = b->buf + fam[k].series_off + (size_t) i * fam[k].stride;
            for (unsigned l = 0; l < fam[k].nlabels; l++) {
                uint32_t ref;
                memcpy(&ref, rec + 4 * l, 4);
                ref = (uint32_t) b->strings_used - ref;
                memcpy(rec + 4 * l, &ref, 4);
            }
        }
    }
    h->strings_off = (uint32_t) strings_off;
    h->strings_len = (uint32_t) b->strings_used;
    /* the padding too: a payload's bytes depend on its content only, never on what the
     * buffer held before (readers compare payloads, and nothing stale reaches the segment) */
    size_t end = strings_off + b->strings_used, len = ALIGN8(end);
    memset(b->buf + end, 0, len - end);
    return len;
}

/* ---- validation ---------------------------------------------------------------------- */

#define REJECT(msg) do { *why = (msg); return -1; } while (0)

const char *hodei_series_label(const struct hodei_snapshot *s, const unsigned char *series,
                               unsigned i, size_t *len)
{
    const struct hodei_snap_header *h = (const struct hodei_snap_header *) s->base;
    uint32_t ref;
    uint16_t l16;
    memcpy(&ref, series + 4 * i, 4);
    const unsigned char *p = s->base + h->strings_off + ref;
    memcpy(&l16, p, 2);
    *len = l16;
    return (const char *) p + 2;
}

static int validate_string(const struct hodei_snap_header *h, const unsigned char *base,
                           uint32_t ref, const char **why)
{
    uint16_t len;
    if ((uint64_t) ref + 2 > h->strings_len)
        REJECT("label reference past the string area");
    memcpy(&len, base + h->strings_off + ref, 2);
    if (len == 0 || len > HODEI_LABEL_VALUE_MAX)
        REJECT("label value empty or too long");
    if ((uint64_t) ref + 2 + len > h->strings_len)
        REJECT("label value runs past the string area");
    if (!hodei_utf8_valid(base + h->strings_off + ref + 2, len))
        REJECT("label value is not valid UTF-8");
    return 0;
}

static int validate_values(const struct hodei_family *f, const struct hodei_snap_family *fam,
                           const unsigned char *v, const char **why)
{
    double x;
    memcpy(&x, v, 8);                          /* created */
    if (!isfinite(x) || x < 0)
        REJECT("series created time is not a finite non-negative number");
    memcpy(&x, v + 8, 8);                      /* value, or histogram sum */
    if (f->type == HODEI_COUNTER && !(x >= 0))
        REJECT("counter value is negative or NaN");
    if (f->type != HODEI_HISTOGRAM)
        return 0;
    if (isnan(x))
        REJECT("histogram sum is NaN");
    uint64_t total = 0;
    for (unsigned k = 0; k <= fam->nbuckets; k++) {
        uint64_t c;
        memcpy(&c, v + 16 + 8 * k, 8);
        if (c > UINT64_MAX - total)
            REJECT("histogram bucket counts overflow");
        total += c;
    }
    return 0;
}

static int validate_family(const struct hodei_snap_header *h, const unsigned char *base,
                           const struct hodei_snap_family *fam, const char **why)
{
    if (fam->id >= HODEI_F_COUNT)
        REJECT("unknown family id");
    const struct hodei_family *f = &hodei_families[fam->id];
    if (f->source == HODEI_SRC_HEADER)
        REJECT("family is rendered from the segment header, not from a snapshot");
    if (fam->nlabels != f->nlabels)
        REJECT("family label count disagrees with the schema");
    if (f->type == HODEI_HISTOGRAM ? (fam->nbuckets == 0 || fam->nbuckets > HODEI_BUCKETS_MAX)
                                   : fam->nbuckets != 0)
        REJECT("family bucket count is invalid for its type");
    if (fam->stride != hodei_series_stride(fam->id, fam->nbuckets))
        REJECT("family series stride disagrees with the schema");
    if (fam->series_off % 8 || fam->series_off < SERIES_AREA_OFF)
        REJECT("family series offset misaligned or inside the header");
    if ((uint64_t) fam->series_off + (uint64_t) fam->nseries * fam->stride > h->strings_off)
        REJECT("family series run past the series area");
    if (fam->nbuckets) {
        if (fam->bounds_off % 8 || fam->bounds_off < SERIES_AREA_OFF
            || (uint64_t) fam->bounds_off + 8u * fam->nbuckets > h->strings_off)
            REJECT("histogram bounds offset out of range");
        const unsigned char *b = base + fam->bounds_off;
        double prev = -INFINITY;
        for (unsigned k = 0; k < fam->nbuckets; k++) {
            double le;
            memcpy(&le, b + 8 * k, 8);
            if (!isfinite(le) || !(le > prev))
                REJECT("histogram bounds not finite and strictly increasing");
            prev = le;
        }
        /* aligned above: bounds_allowed() may read them as doubles */
        if (!bounds_allowed(f, (const double *) b, fam->nbuckets))
            REJECT("histogram bounds differ from the schema's");
    }
    size_t voff = hodei_series_values_off(fam->nlabels);
    for (uint32_t i = 0; i < fam->nseries; i++) {
        const unsigned char *rec = base + fam->series_off + (size_t) i * fam->stride;
        for (unsigned l = 0; l < fam->nlabels; l++) {
            uint32_t ref;
            memcpy(&ref, rec + 4 * l, 4);
            if (validate_string(h, base, ref, why) != 0)
                return -1;
        }
        if (validate_values(f, fam, rec + voff, why) != 0)
            return -1;
    }
    return 0;
}

int hodei_snapshot_validate(const void *payload, size_t len, struct hodei_snapshot *out,
                            const char **why)
{
    const unsigned char *base = payload;
    const struct hodei_snap_header *h = payload;

    memset(out, 0, sizeof(*out));
    if ((uintptr_t) payload & 7)
        REJECT("payload misaligned");
    if (len < SERIES_AREA_OFF || len > UINT32_MAX)
        REJECT("payload shorter than its header and family table");
    if (h->magic != HODEI_SNAP_MAGIC)
        REJECT("payload magic is wrong");
    if (h->nfamilies > HODEI_F_COUNT)
        REJECT("more families than the schema defines");
    if (h->strings_off < SERIES_AREA_OFF || (uint64_t) h->strings_off + h->strings_len > len)
        REJECT("string area out of bounds");
    if (!isfinite(h->timestamp))
        REJECT("snapshot timestamp is not finite");

    const struct hodei_snap_family *fam =
        (const struct hodei_snap_family *) (base + FAMILY_TABLE_OFF);
    int last = -1;
    for (unsigned k = 0; k < h->nfamilies; k++) {
        if ((int) fam[k].id <= last)
            REJECT("family ids not strictly increasing");
        if (validate_family(h, base, &fam[k], why) != 0)
            return -1;
        last = fam[k].id;
        out->family[fam[k].id] = &fam[k];
    }
    out->base = base;
    out->len = len;
    out->timestamp = h->timestamp;
    return 0;
}
