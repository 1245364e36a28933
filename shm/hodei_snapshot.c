/* hodei_snapshot.c — building and validating snapshot payloads (format: hodei_snapshot.h). */
#include "hodei_snapshot.h"

#include <math.h>
#include <string.h>

#define ALIGN8(n) (((n) + 7) & ~(size_t) 7)
#define FAMILY_TABLE_OFF sizeof(struct hodei_snap_header)
#define SERIES_AREA_OFF  ALIGN8(FAMILY_TABLE_OFF + HODEI_F_COUNT * sizeof(struct hodei_snap_family))

/* Offset, inside a histogram's values (from created on), of its native and exemplars refs. */
static size_t refs_off(unsigned nbuckets)
{
    return 16 + 8 * ((size_t) nbuckets + 1);
}

static size_t value_bytes(enum hodei_metric_type type, unsigned nbuckets)
{
    /* created + value, or created + sum + buckets (+Inf included) + native + exemplars */
    return type == HODEI_HISTOGRAM ? refs_off(nbuckets) + 8 : 16;
}

/* Bytes an exemplar's labels take at most in the string area (two length prefixes each). */
#define EXEMPLAR_STRINGS_MAX (4 * HODEI_EXEMPLAR_LABELS_MAX + HODEI_EXEMPLAR_LABELS_BYTES)

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
        size_t extras = f->type != HODEI_HISTOGRAM ? 0
                        : 2 + HODEI_NATIVE_ENCODED_MAX + 2
                          + (HODEI_BUCKETS_MAX + 1) * (HODEI_SNAP_EXEMPLAR_SIZE
                                                       + EXEMPLAR_STRINGS_MAX);
        total += (size_t) caps[id] * (hodei_series_stride(id, HODEI_BUCKETS_MAX)
                                      + f->nlabels * (2 + HODEI_LABEL_VALUE_MAX) + extras);
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

/* Strings and blobs grow down from the end of the buffer; their refs are distances from the
 * end until finish() turns them into offsets into the string area.  Returns where the bytes
 * go (len of them), or NULL when they do not fit. */
static unsigned char *push_blob(struct hodei_builder *b, size_t len, uint32_t *ref)
{
    size_t need = 2 + len;
    if (len > UINT16_MAX || b->cap - b->series_end < b->strings_used + need) {
        b->error = 1;
        return NULL;
    }
    b->strings_used += need;
    unsigned char *p = b->buf + b->cap - b->strings_used;
    uint16_t l16 = (uint16_t) len;
    memcpy(p, &l16, 2);
    *ref = (uint32_t) b->strings_used;
    return p + 2;
}

static int push_bytes(struct hodei_builder *b, const char *s, size_t len, uint32_t *ref)
{
    if (len == 0 || len > HODEI_LABEL_VALUE_MAX
        || !hodei_utf8_valid((const unsigned char *) s, len)) {
        b->error = 1;
        return -1;
    }
    unsigned char *p = push_blob(b, len, ref);
    if (p == NULL)
        return -1;
    memcpy(p, s, len);
    return 0;
}

static int push_string(struct hodei_builder *b, const char *s, uint32_t *ref)
{
    return push_bytes(b, s, strlen(s), ref);
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
    if (fam->nbuckets) {
        const uint32_t none[2] = { HODEI_SNAP_NONE, HODEI_SNAP_NONE };
        memcpy(rec + voff + refs_off(fam->nbuckets), none, 8);
    }
    fam->nseries++;
    b->last_series = (size_t) (rec - b->buf);
    return rec + voff + 8;
}

/* The native (which 0) or exemplars (1) ref of the histogram series appended last, if it is
 * still unset; NULL (sticky error) otherwise. */
static unsigned char *last_ref(struct hodei_builder *b, int which)
{
    struct hodei_snap_family *fam = b->cur;
    if (b->error || fam == NULL || fam->nbuckets == 0 || fam->nseries == 0) {
        b->error = 1;
        return NULL;
    }
    unsigned char *p = b->buf + b->last_series + hodei_series_values_off(fam->nlabels)
                       + refs_off(fam->nbuckets) + 4 * which;
    uint32_t ref;
    memcpy(&ref, p, 4);
    if (ref != HODEI_SNAP_NONE) {
        b->error = 1;
        return NULL;
    }
    return p;
}

int hodei_builder_native(struct hodei_builder *b, const struct hodei_native *h)
{
    unsigned char enc[HODEI_NATIVE_ENCODED_MAX];
    unsigned char *slot = last_ref(b, 0);
    size_t len = slot ? hodei_native_encode(h, enc, sizeof(enc)) : 0;
    uint32_t ref;
    unsigned char *dst = len ? push_blob(b, len, &ref) : NULL;
    if (dst == NULL) {
        b->error = 1;
        return -1;
    }
    memcpy(dst, enc, len);
    memcpy(slot, &ref, 4);
    return 0;
}

/* 1 when s[0..len) is a Prometheus label name: [a-zA-Z_][a-zA-Z0-9_]*. */
static int label_name_valid(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'
              || (i > 0 && c >= '0' && c <= '9')))
            return 0;
    }
    return len > 0;
}

int hodei_exemplar_labels_valid(const struct hodei_exemplar *e)
{
    size_t total = 0;
    if (e->nlabels > HODEI_EXEMPLAR_LABELS_MAX)
        return 0;
    for (unsigned i = 0; i < e->nlabels; i++) {
        total += e->label[i].name_len + e->label[i].value_len;
        if (!label_name_valid((const unsigned char *) e->label[i].name, e->label[i].name_len)
            || e->label[i].value_len == 0 || total > HODEI_EXEMPLAR_LABELS_BYTES
            || !hodei_utf8_valid((const unsigned char *) e->label[i].value,
                                 e->label[i].value_len))
            return 0;
    }
    return 1;
}

int hodei_builder_exemplars(struct hodei_builder *b, const struct hodei_exemplar *ex)
{
    unsigned char *slot = last_ref(b, 1);
    if (slot == NULL)
        return -1;
    unsigned n = b->cur->nbuckets + 1u;
    unsigned char rec[(HODEI_BUCKETS_MAX + 1) * HODEI_SNAP_EXEMPLAR_SIZE];
    memset(rec, 0, sizeof(rec));
    /* label names repeat from bucket to bucket: each is stored once */
    struct { const char *name; size_t len; uint32_t ref; } names[2 * HODEI_EXEMPLAR_LABELS_MAX];
    unsigned nnames = 0;
    for (unsigned k = 0; k < n; k++) {
        const struct hodei_exemplar *e = &ex[k];
        unsigned char *r = rec + k * HODEI_SNAP_EXEMPLAR_SIZE;
        if (e->nlabels == 0)
            continue;
        if (!hodei_exemplar_labels_valid(e) || !isfinite(e->value) || !isfinite(e->timestamp)
            || e->timestamp < 0) {
            b->error = 1;
            return -1;
        }
        uint32_t nlabels = e->nlabels, refs[2 * HODEI_EXEMPLAR_LABELS_MAX] = { 0 };
        for (unsigned i = 0; i < e->nlabels; i++) {
            unsigned m = 0;
            while (m < nnames && !(names[m].len == e->label[i].name_len
                                   && memcmp(names[m].name, e->label[i].name, names[m].len) == 0))
                m++;
            if (m < nnames) {
                refs[2 * i] = names[m].ref;
            } else if (push_bytes(b, e->label[i].name, e->label[i].name_len, &refs[2 * i]) != 0) {
                return -1;
            } else if (nnames < sizeof(names) / sizeof(names[0])) {
                names[nnames].name = e->label[i].name;
                names[nnames].len = e->label[i].name_len;
                names[nnames++].ref = refs[2 * i];
            }
            if (push_bytes(b, e->label[i].value, e->label[i].value_len, &refs[2 * i + 1]) != 0)
                return -1;
        }
        memcpy(r, &e->value, 8);
        memcpy(r + 8, &e->timestamp, 8);
        memcpy(r + 16, &nlabels, 4);
        memcpy(r + 20, refs, sizeof(refs));
    }
    uint32_t ref;
    unsigned char *dst = push_blob(b, n * HODEI_SNAP_EXEMPLAR_SIZE, &ref);
    if (dst == NULL)
        return -1;
    memcpy(dst, rec, n * HODEI_SNAP_EXEMPLAR_SIZE);
    memcpy(slot, &ref, 4);
    return 0;
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

/* A ref at p, a distance from the buffer's end until now, becomes an offset into the string
 * area; returns it. */
static uint32_t fix_ref(struct hodei_builder *b, unsigned char *p)
{
    uint32_t ref;
    memcpy(&ref, p, 4);
    ref = (uint32_t) b->strings_used - ref;
    memcpy(p, &ref, 4);
    return ref;
}

/* The refs of histogram record rec's blobs, and those inside its exemplars blob (which
 * already lies in the string area at strings). */
static void fix_histogram_refs(struct hodei_builder *b, const struct hodei_snap_family *fam,
                               unsigned char *rec, unsigned char *strings)
{
    unsigned char *refs = rec + hodei_series_values_off(fam->nlabels) + refs_off(fam->nbuckets);
    uint32_t ref;
    memcpy(&ref, refs, 4);
    if (ref != HODEI_SNAP_NONE)
        fix_ref(b, refs);
    memcpy(&ref, refs + 4, 4);
    if (ref == HODEI_SNAP_NONE)
        return;
    unsigned char *ex = strings + fix_ref(b, refs + 4) + 2;
    for (unsigned k = 0; k <= fam->nbuckets; k++, ex += HODEI_SNAP_EXEMPLAR_SIZE) {
        uint32_t nlabels;
        memcpy(&nlabels, ex + 16, 4);
        for (unsigned i = 0; i < 2 * nlabels; i++)
            fix_ref(b, ex + 20 + 4 * i);
    }
}

size_t hodei_builder_finish(struct hodei_builder *b)
{
    if (b->error)
        return 0;
    struct hodei_snap_header *h = hdr_of(b);
    size_t strings_off = b->series_end;
    memmove(b->buf + strings_off, b->buf + b->cap - b->strings_used, b->strings_used);
    /* refs were distances from the buffer's end; make them offsets into the area */
    struct hodei_snap_family *fam = (struct hodei_snap_family *) (b->buf + FAMILY_TABLE_OFF);
    for (unsigned k = 0; k < h->nfamilies; k++) {
        for (uint32_t i = 0; i < fam[k].nseries; i++) {
            unsigned char *rec = b->buf + fam[k].series_off + (size_t) i * fam[k].stride;
            for (unsigned l = 0; l < fam[k].nlabels; l++)
                fix_ref(b, rec + 4 * l);
            if (fam[k].nbuckets)
                fix_histogram_refs(b, &fam[k], rec, b->buf + strings_off);
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

static inline int validate_string(const struct hodei_snap_header *h, const unsigned char *base,
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

/* The blob at ref: its bytes and length, or NULL when it does not lie in the string area. */
static const unsigned char *blob_at(const struct hodei_snap_header *h, const unsigned char *base,
                                    uint32_t ref, size_t *len)
{
    uint16_t l16;
    if ((uint64_t) ref + 2 > h->strings_len)
        return NULL;
    memcpy(&l16, base + h->strings_off + ref, 2);
    if ((uint64_t) ref + 2 + l16 > h->strings_len)
        return NULL;
    *len = l16;
    return base + h->strings_off + ref + 2;
}

/* Upper bound of classic bucket k of fam (+Inf for the last). */
static double bucket_upper(const unsigned char *base, const struct hodei_snap_family *fam,
                           unsigned k)
{
    double le = INFINITY;
    if (k < fam->nbuckets)
        memcpy(&le, base + fam->bounds_off + 8 * (size_t) k, 8);
    return le;
}

/* Label names an exemplars blob shares between its buckets, once validated. */
struct name_memo {
    uint32_t ref[2 * HODEI_EXEMPLAR_LABELS_MAX];
    unsigned n;
};

/* The label name at ref, validated once per blob. */
static int validate_name(const struct hodei_snap_header *h, const unsigned char *base,
                         uint32_t ref, struct name_memo *memo, const char **why)
{
    for (unsigned m = 0; m < memo->n; m++)
        if (memo->ref[m] == ref)
            return 0;
    size_t len = 0;
    if (validate_string(h, base, ref, why) != 0)
        return -1;
    const unsigned char *name = blob_at(h, base, ref, &len);
    if (!label_name_valid(name, len))
        REJECT("exemplar label name is not a label name");
    if (memo->n < sizeof(memo->ref) / sizeof(memo->ref[0]))
        memo->ref[memo->n++] = ref;
    return 0;
}

static int validate_exemplar(const struct hodei_snap_header *h, const unsigned char *base,
                             const struct hodei_snap_family *fam, const unsigned char *v,
                             unsigned k, const unsigned char *ex, struct name_memo *memo,
                             const char **why)
{
    double value, timestamp;
    uint32_t nlabels, refs[2 * HODEI_EXEMPLAR_LABELS_MAX + 1];
    memcpy(&value, ex, 8);
    memcpy(&timestamp, ex + 8, 8);
    memcpy(&nlabels, ex + 16, 4);
    memcpy(refs, ex + 20, sizeof(refs));             /* the reserved word last */
    if (nlabels > HODEI_EXEMPLAR_LABELS_MAX)
        REJECT("exemplar has too many labels");
    for (unsigned i = 2 * nlabels; i < sizeof(refs) / sizeof(refs[0]); i++)
        if (refs[i] != 0)
            REJECT("exemplar has a label reference it does not use");
    if (nlabels == 0) {
        if (value != 0 || timestamp != 0 || signbit(value) || signbit(timestamp))
            REJECT("a bucket without an exemplar has a value or timestamp");
        return 0;
    }
    uint64_t count;
    memcpy(&count, v + 16 + 8 * (size_t) k, 8);
    if (count == 0)
        REJECT("exemplar in an empty bucket");
    if (!isfinite(value) || !(value <= bucket_upper(base, fam, k))
        || (k > 0 && !(value > bucket_upper(base, fam, k - 1))))
        REJECT("exemplar value outside its bucket");
    if (!isfinite(timestamp) || timestamp < 0)
        REJECT("exemplar timestamp is not a finite non-negative number");
    size_t total = 0;
    for (unsigned i = 0; i < 2 * nlabels; i++) {
        size_t len = 0;
        if ((i % 2 == 0 ? validate_name(h, base, refs[i], memo, why)
                        : validate_string(h, base, refs[i], why)) != 0)
            return -1;
        blob_at(h, base, refs[i], &len);
        total += len;
    }
    if (total > HODEI_EXEMPLAR_LABELS_BYTES)
        REJECT("exemplar labels longer than OpenMetrics allows");
    return 0;
}

/* A histogram's native part and exemplars (v: its values, from created on, whose classic
 * buckets add up to total).  *has_native: whether it has a native part. */
static int validate_extras(const struct hodei_snap_header *h, const unsigned char *base,
                           const struct hodei_snap_family *fam, const unsigned char *v,
                           uint64_t total, int *has_native, const char **why)
{
    uint32_t native, exemplars;
    size_t len;
    memcpy(&native, v + refs_off(fam->nbuckets), 4);
    memcpy(&exemplars, v + refs_off(fam->nbuckets) + 4, 4);
    *has_native = native != HODEI_SNAP_NONE;
    if (*has_native) {
        struct hodei_native_view view;
        double sum;
        const unsigned char *p = blob_at(h, base, native, &len);
        if (p == NULL)
            REJECT("native histogram runs past the string area");
        if (hodei_native_validate(p, len, &view, why) != 0)
            return -1;
        memcpy(&sum, v + 8, 8);
        if (view.count != total || view.sum != sum)
            REJECT("native histogram count or sum differs from the classic buckets'");
    }
    if (exemplars == HODEI_SNAP_NONE)
        return 0;
    const unsigned char *ex = blob_at(h, base, exemplars, &len);
    if (ex == NULL)
        REJECT("exemplars run past the string area");
    if (len != (fam->nbuckets + 1u) * HODEI_SNAP_EXEMPLAR_SIZE)
        REJECT("exemplars are not one per classic bucket");
    struct name_memo memo = { .n = 0 };
    for (unsigned k = 0; k <= fam->nbuckets; k++)
        if (validate_exemplar(h, base, fam, v, k, ex + k * HODEI_SNAP_EXEMPLAR_SIZE, &memo,
                              why) != 0)
            return -1;
    return 0;
}

/* v: the series' values, from created on.  *has_native: whether a histogram has a native
 * part. */
static int validate_values(const struct hodei_snap_header *h, const unsigned char *base,
                           const struct hodei_family *f, const struct hodei_snap_family *fam,
                           const unsigned char *v, int *has_native, const char **why)
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
    return validate_extras(h, base, fam, v, total, has_native, why);
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
    int first_native = 0;
    for (uint32_t i = 0; i < fam->nseries; i++) {
        const unsigned char *rec = base + fam->series_off + (size_t) i * fam->stride;
        int has_native = 0;
        for (unsigned l = 0; l < fam->nlabels; l++) {
            uint32_t ref;
            memcpy(&ref, rec + 4 * l, 4);
            if (validate_string(h, base, ref, why) != 0)
                return -1;
        }
        if (validate_values(h, base, f, fam, rec + voff, &has_native, why) != 0)
            return -1;
        if (i == 0)
            first_native = has_native;
        else if (has_native != first_native)
            REJECT("some series of a histogram family have a native part and some do not");
    }
    return 0;
}

/* ---- accessors ----------------------------------------------------------------------- */

/* The native (which 0) or exemplars (1) blob of a validated histogram record, or NULL. */
static const unsigned char *series_blob(const struct hodei_snapshot *s,
                                        const struct hodei_snap_family *f,
                                        const unsigned char *rec, int which, size_t *len)
{
    const struct hodei_snap_header *h = (const struct hodei_snap_header *) s->base;
    uint32_t ref;
    memcpy(&ref, rec + hodei_series_values_off(f->nlabels) + refs_off(f->nbuckets) + 4 * which,
           4);
    return ref == HODEI_SNAP_NONE ? NULL : blob_at(h, s->base, ref, len);
}

int hodei_series_native(const struct hodei_snapshot *s, const struct hodei_snap_family *f,
                        const unsigned char *rec, struct hodei_native_view *out)
{
    size_t len;
    const char *why;
    const unsigned char *p = series_blob(s, f, rec, 0, &len);
    /* validated with the snapshot: this only fills the view again */
    return p && hodei_native_validate(p, len, out, &why) == 0;
}

int hodei_series_exemplar(const struct hodei_snapshot *s, const struct hodei_snap_family *f,
                          const unsigned char *rec, unsigned k, struct hodei_exemplar *out)
{
    size_t len;
    const unsigned char *ex = series_blob(s, f, rec, 1, &len);
    uint32_t nlabels, refs[2 * HODEI_EXEMPLAR_LABELS_MAX];
    out->nlabels = 0;
    if (ex == NULL)
        return 0;
    ex += (size_t) k * HODEI_SNAP_EXEMPLAR_SIZE;
    memcpy(&nlabels, ex + 16, 4);
    if (nlabels == 0)
        return 0;
    const struct hodei_snap_header *h = (const struct hodei_snap_header *) s->base;
    memcpy(&out->value, ex, 8);
    memcpy(&out->timestamp, ex + 8, 8);
    memcpy(refs, ex + 20, sizeof(refs));
    out->nlabels = nlabels;
    for (unsigned i = 0; i < nlabels; i++) {
        out->label[i].name = (const char *) blob_at(h, s->base, refs[2 * i],
                                                    &out->label[i].name_len);
        out->label[i].value = (const char *) blob_at(h, s->base, refs[2 * i + 1],
                                                     &out->label[i].value_len);
    }
    return 1;
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
