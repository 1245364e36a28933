/* persist.c — the scheduler's change sets as store batches, and a restart from the store
 * (see persist.h). */
#include "persist.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "log.h"

#define TENANT_META     "tenant/"
/* A histogram's blob: u32 magic, u32 nbuckets, f64 sum, u64 counts[nbuckets + 1], then its
 * native part as hodei_native_encode() writes it.  Exemplars are not kept: they point at
 * recent jobs, and the next observations bring new ones. */
#define HISTOGRAM_MAGIC 0x32484448u   /* "HDH2" */
#define HISTOGRAM_HEADER 16

/* ---- keys ------------------------------------------------------------------------------ */

/* The exposition name of a series of family f with label values values[0..nlabels). */
static void series_key(char *buf, size_t len, enum hodei_family_id f, const char *const *values)
{
    const struct hodei_family *fam = &hodei_families[f];
    size_t n = (size_t) snprintf(buf, len, "%s", fam->name);
    for (unsigned i = 0; i < fam->nlabels && n < len; i++)
        n += (size_t) snprintf(buf + n, len - n, "%s%s=\"%s\"", i ? "," : "{",
                               hodei_label_name(fam, i), values[i]);
    if (fam->nlabels && n < len)
        snprintf(buf + n, len - n, "}");
}

/* The family and label values of a series key (values point into copy); -1 if it is not one
 * of this schema's. */
static int series_parse(const char *key, char *copy, size_t len, enum hodei_family_id *f,
                        const char *values[HODEI_LABELS_MAX])
{
    if (strlen(key) >= len)
        return -1;
    strcpy(copy, key);
    char *brace = strchr(copy, '{');
    if (brace)
        *brace = '\0';
    int id = hodei_family_lookup(copy);
    if (id < 0)
        return -1;
    const struct hodei_family *fam = &hodei_families[id];
    char *p = brace ? brace + 1 : NULL;
    for (unsigned i = 0; i < fam->nlabels; i++) {
        const char *name = hodei_label_name(fam, i);
        size_t nl = strlen(name);
        if (!p || strncmp(p, name, nl) != 0 || p[nl] != '=' || p[nl + 1] != '"')
            return -1;
        values[i] = p + nl + 2;
        char *end = strchr(values[i], '"');
        if (!end || (end[1] != (i + 1 < fam->nlabels ? ',' : '}')))
            return -1;
        *end = '\0';
        p = end + 2;
    }
    if (fam->nlabels ? *p != '\0' : brace != NULL)
        return -1;
    *f = (enum hodei_family_id) id;
    return 0;
}

static int64_t micros(double seconds)
{
    return (int64_t) (seconds * 1e6 + (seconds >= 0 ? 0.5 : -0.5));
}

/* ---- writing ----------------------------------------------------------------------------- */

/* An add to a batch fails only when memory does (the records are the scheduler's own, valid
 * by construction): alloc.h's policy then. */
static void added(int rc)
{
    if (rc != 0)
        hodei_oom();
}

static int same_status(const struct job_status *a, const struct job_status *b)
{
    return a->state == b->state && a->error_type == b->error_type
           && a->has_exit_code == b->has_exit_code && a->exit_code == b->exit_code
           && a->attempts == b->attempts && strcmp(a->worker_id, b->worker_id) == 0
           && a->assigned_at == b->assigned_at && a->started_at == b->started_at
           && a->finished_at == b->finished_at && a->output_bytes == b->output_bytes;
}

static void store_job_of(const struct job *j, struct store_job *out)
{
    const struct job_status *st = &j->st;
    *out = (struct store_job) {
        .id = j->id, .tenant_id = j->tenant_id, .name = j->name, .command = j->command,
        .cpu_m = j->cpu_m, .memory_mb = j->memory_mb, .priority = j->priority,
        .timeout_s = j->timeout_s, .max_retries = j->max_retries,
        .submitted_at = j->submitted_at,
        .state = job_state_names[st->state],
        .finished = st->state >= JOB_SUCCEEDED,
        .error_type = st->error_type >= 0 ? hodei_error_type_names[st->error_type] : NULL,
        .has_exit_code = st->has_exit_code, .exit_code = st->exit_code,
        .attempts = st->attempts,
        .worker_id = st->worker_id[0] ? st->worker_id : NULL,
        .assigned_at = st->assigned_at, .started_at = st->started_at,
        .finished_at = st->finished_at,
        .output = j->new_output, .output_len = j->new_output_len,
        .output_bytes = st->output_bytes,
        .keep_output = !j->has_new_output,
    };
}

static void put_counter(struct store_batch *b, enum hodei_family_id f, const char *const *values,
                        uint64_t value)
{
    char key[STORE_KEY_MAX];
    series_key(key, sizeof key, f, values);
    added(store_batch_set_counter(b, key, value));
}

/* Counters of a fixed label set whose committed value is cur, with delta[i] added. */
static void put_set(struct store_batch *b, enum hodei_family_id f, const char *const *names,
                    int n, const uint64_t *cur, const uint64_t *delta)
{
    for (int i = 0; i < n; i++)
        if (delta[i])
            put_counter(b, f, &names[i], cur[i] + delta[i]);
}

/* Sampled counters that differ from the committed ones; 1 if any did. */
static int put_sampled(struct store_batch *b, enum hodei_family_id f, const char *const *names,
                       int n, const uint64_t *committed, const uint64_t *sampled)
{
    int changed = 0;
    for (int i = 0; i < n; i++)
        if (sampled[i] != committed[i]) {
            put_counter(b, f, &names[i], sampled[i]);
            changed = 1;
        }
    return changed;
}

static void put_histogram(struct store_batch *b, enum hodei_family_id f,
                          const struct hodei_histogram *h)
{
    unsigned char buf[HISTOGRAM_HEADER + 8 * (HODEI_BUCKETS_MAX + 1) + HODEI_NATIVE_ENCODED_MAX];
    uint32_t magic = HISTOGRAM_MAGIC, n = h->nbuckets;
    size_t classic = HISTOGRAM_HEADER + 8 * ((size_t) n + 1);
    memcpy(buf, &magic, 4);
    memcpy(buf + 4, &n, 4);
    memcpy(buf + 8, &h->sum, 8);
    memcpy(buf + HISTOGRAM_HEADER, h->count, 8 * ((size_t) n + 1));
    size_t native = hodei_native_encode(&h->native, buf + classic, sizeof buf - classic);
    assert(native > 0);   /* HODEI_NATIVE_ENCODED_MAX always suffices */
    added(store_batch_set_blob(b, hodei_families[f].name, buf, classic + native));
}

struct store_batch *persist_batch(const struct sched *s, const struct sched_sampled *sampled,
                                  int *sampled_changed)
{
    const struct sched_changes *cs = &s->cs;
    const struct sched_metrics *m = &s->m;
    struct store_batch *b = must(store_batch_new());
    const struct job *j;
    cds_list_for_each_entry(j, &cs->jobs, touch_link) {
        /* a job only moved between a worker and its absence needs no row */
        if (j->id < s->committed_next_job_id && !j->has_new_output
            && same_status(&j->st, &j->cst))
            continue;
        struct store_job row;
        store_job_of(j, &row);
        added(store_batch_put_job(b, &row));
    }
    for (size_t i = 0; i < cs->ntransitions; i++) {
        const struct sched_transition *t = &cs->transitions[i];
        struct store_transition tr = {
            .job_id = t->job_id, .at = t->at,
            .from_state = t->from >= 0 ? job_state_names[t->from] : NULL,
            .to_state = job_state_names[t->to],
            .worker_id = t->worker_id[0] ? t->worker_id : NULL };
        added(store_batch_add_transition(b, &tr));
    }
    uint32_t pruned = 0;
    cds_list_for_each_entry(j, &s->finished, done_link) {
        if (pruned++ == cs->npruned)
            break;
        added(store_batch_delete_job(b, j->id));
    }
    for (uint32_t i = s->ntenants_committed; i < s->ntenants; i++) {
        char key[sizeof TENANT_META + HODEI_ID_MAX];
        snprintf(key, sizeof key, TENANT_META "%s", s->tenants[i]->id);
        added(store_batch_set_meta(b, key, micros(s->tenants[i]->created)));
    }
    const struct tenant *t;
    cds_list_for_each_entry(t, &cs->tenants, touch_link) {
        static const enum hodei_family_id family[TC_FAILED] = {
            [TC_SUBMITTED] = HODEI_F_JOBS_SUBMITTED_TOTAL,
            [TC_SCHEDULED] = HODEI_F_JOBS_SCHEDULED_TOTAL,
            [TC_COMPLETED] = HODEI_F_JOBS_COMPLETED_TOTAL };
        for (int c = 0; c < TC_COUNT; c++) {
            if (!t->pending[c])
                continue;
            const char *values[2] = { t->id, c >= TC_FAILED ? hodei_error_type_names[c - TC_FAILED]
                                                            : NULL };
            put_counter(b, c >= TC_FAILED ? HODEI_F_JOBS_FAILED_TOTAL : family[c], values,
                        t->count[c] + t->pending[c]);
        }
    }
    put_set(b, HODEI_F_SCHEDULING_DECISIONS_TOTAL, hodei_decision_names, HODEI_DECISION_COUNT,
            m->decisions, cs->decisions);
    if (cs->workers_registered)
        put_counter(b, HODEI_F_WORKERS_REGISTERED_TOTAL, NULL,
                    m->workers_registered + cs->workers_registered);
    for (int f = 0; f < HODEI_F_COUNT; f++)
        if (cs->label_overflow[f]) {
            const char *values[1] = { hodei_families[f].name };
            put_counter(b, HODEI_F_METRICS_LABEL_OVERFLOW_TOTAL, values,
                        m->label_overflow[f] + cs->label_overflow[f]);
        }
    for (int h = 0; h < SH_COUNT; h++) {
        struct hodei_histogram copy;
        if (sched_histogram_pending(s, (enum sched_histogram_id) h, &copy))
            put_histogram(b, sched_histogram_family[h], &copy);
    }
    int changed = 0;
    changed |= put_sampled(b, HODEI_F_API_AUTH_FAILURES_TOTAL, hodei_auth_failure_names,
                           HODEI_AUTH_COUNT, m->auth_failures, sampled->auth_failures);
    changed |= put_sampled(b, HODEI_F_EVENTS_PUBLISHED_TOTAL, hodei_event_type_names,
                           HODEI_EV_COUNT, m->events_published, sampled->events_published);
    changed |= put_sampled(b, HODEI_F_EVENTS_RECEIVED_TOTAL, hodei_event_type_names,
                           HODEI_EV_COUNT, m->events_received, sampled->events_received);
    changed |= put_sampled(b, HODEI_F_EVENTS_DROPPED_TOTAL, hodei_event_type_names,
                           HODEI_EV_COUNT, m->events_dropped, sampled->events_dropped);
    *sampled_changed = changed;
    if (!changed && !sched_dirty(s)) {
        store_batch_free(b);
        return NULL;
    }
    /* failed commits so far ride along (they cannot be part of their own commit) */
    for (int r = 0; r < HODEI_STORE_ERROR_COUNT; r++) {
        uint64_t n = counter_load(&m->store_errors[r]);
        if (n)
            put_counter(b, HODEI_F_STORE_ERRORS_TOTAL, &hodei_store_error_names[r], n);
    }
    if (!s->start_time_kept)
        added(store_batch_set_meta(b, "created_us", micros(s->start_time)));
    if (s->next_job_id != s->committed_next_job_id)
        added(store_batch_set_meta(b, "next_job_id", (int64_t) s->next_job_id));
    return b;
}

/* ---- reading ----------------------------------------------------------------------------- */

struct loader {
    struct sched *s;
    char *err;
    size_t errlen;
    double now;
    uint64_t jobs;
};

static int refuse(struct loader *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int refuse(struct loader *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->err, l->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int load_meta(void *ctx, const char *key, int64_t value)
{
    struct loader *l = ctx;
    if (strcmp(key, "next_job_id") == 0) {
        if (value < 1)
            return refuse(l, "meta next_job_id is %" PRId64, value);
        sched_load_next_job_id(l->s, (uint64_t) value);
    } else if (strcmp(key, "created_us") == 0) {
        sched_load_start_time(l->s, (double) value / 1e6);
    } else if (strncmp(key, TENANT_META, sizeof TENANT_META - 1) == 0) {
        const char *id = key + sizeof TENANT_META - 1;
        if (!hodei_id_valid(id, strlen(id)))
            return refuse(l, "meta %s names no valid tenant", key);
        sched_load_tenant(l->s, id, (double) value / 1e6);
    }
    return 0;
}

/* Index of name in names[0..n), or a refusal. */
static int value_index(struct loader *l, const char *key, const char *const *names, int n,
                       const char *name)
{
    int i = hodei_name_index(names, n, name);
    if (i < 0)
        refuse(l, "counter %s: unknown label value '%s'", key, name);
    return i;
}

static int load_counter(void *ctx, const char *key, uint64_t value)
{
    struct loader *l = ctx;
    struct sched_metrics *m = &l->s->m;
    char copy[STORE_KEY_MAX + 1];
    const char *v[HODEI_LABELS_MAX];
    enum hodei_family_id f;
    if (series_parse(key, copy, sizeof copy, &f, v) < 0)
        return refuse(l, "counter %s is no series of this version's schema", key);
    int i;
    switch (f) {
    case HODEI_F_JOBS_SUBMITTED_TOTAL:
    case HODEI_F_JOBS_SCHEDULED_TOTAL:
    case HODEI_F_JOBS_COMPLETED_TOTAL:
    case HODEI_F_JOBS_FAILED_TOTAL: {
        if (!hodei_id_valid(v[0], strlen(v[0])))
            return refuse(l, "counter %s names no valid tenant", key);
        struct tenant *t = sched_load_tenant(l->s, v[0], l->s->start_time);
        enum tenant_counter c = f == HODEI_F_JOBS_SUBMITTED_TOTAL ? TC_SUBMITTED
                              : f == HODEI_F_JOBS_SCHEDULED_TOTAL ? TC_SCHEDULED
                              : f == HODEI_F_JOBS_COMPLETED_TOTAL ? TC_COMPLETED : TC_FAILED;
        if (c == TC_FAILED) {
            if ((i = value_index(l, key, hodei_error_type_names, HODEI_ERR_COUNT, v[1])) < 0)
                return -1;
            c = (enum tenant_counter) (TC_FAILED + i);
        }
        sched_load_tenant_count(t, c, value);
        return 0;
    }
    case HODEI_F_WORKERS_REGISTERED_TOTAL:
        m->workers_registered = value;
        return 0;
    case HODEI_F_SCHEDULING_DECISIONS_TOTAL:
        if ((i = value_index(l, key, hodei_decision_names, HODEI_DECISION_COUNT, v[0])) < 0)
            return -1;
        m->decisions[i] = value;
        return 0;
    case HODEI_F_EVENTS_PUBLISHED_TOTAL:
    case HODEI_F_EVENTS_RECEIVED_TOTAL:
    case HODEI_F_EVENTS_DROPPED_TOTAL:
        if ((i = value_index(l, key, hodei_event_type_names, HODEI_EV_COUNT, v[0])) < 0)
            return -1;
        (f == HODEI_F_EVENTS_PUBLISHED_TOTAL ? m->events_published
         : f == HODEI_F_EVENTS_RECEIVED_TOTAL ? m->events_received : m->events_dropped)[i] = value;
        return 0;
    case HODEI_F_METRICS_LABEL_OVERFLOW_TOTAL:
        if ((i = hodei_family_lookup(v[0])) < 0)
            return refuse(l, "counter %s: unknown family '%s'", key, v[0]);
        m->label_overflow[i] = value;
        return 0;
    case HODEI_F_API_AUTH_FAILURES_TOTAL:
        if ((i = value_index(l, key, hodei_auth_failure_names, HODEI_AUTH_COUNT, v[0])) < 0)
            return -1;
        m->auth_failures[i] = value;
        return 0;
    case HODEI_F_STORE_ERRORS_TOTAL:
        if ((i = value_index(l, key, hodei_store_error_names, HODEI_STORE_ERROR_COUNT,
                             v[0])) < 0)
            return -1;
        m->store_errors[i] = value;
        return 0;
    default:
        return refuse(l, "counter %s belongs to no counter the daemon keeps", key);
    }
}

static int load_blob(void *ctx, const char *key, const void *data, size_t len)
{
    struct loader *l = ctx;
    int f = hodei_family_lookup(key);
    int h = 0;
    while (h < SH_COUNT && (int) sched_histogram_family[h] != f)
        h++;
    if (h == SH_COUNT)
        return refuse(l, "blob %s belongs to no histogram the daemon keeps", key);
    const struct hodei_family *fam = &hodei_families[f];
    size_t classic = HISTOGRAM_HEADER + 8 * ((size_t) fam->nbuckets + 1);
    uint32_t magic = 0, n = 0;
    if (len >= HISTOGRAM_HEADER) {
        memcpy(&magic, data, 4);
        memcpy(&n, (const char *) data + 4, 4);
    }
    if (magic != HISTOGRAM_MAGIC || n != fam->nbuckets || len < classic)
        return refuse(l, "histogram %s: not %u buckets in this version's layout", key,
                      fam->nbuckets);
    double sum;
    uint64_t counts[HODEI_BUCKETS_MAX + 1];
    memcpy(&sum, (const char *) data + 8, 8);
    memcpy(counts, (const char *) data + HISTOGRAM_HEADER, 8 * ((size_t) n + 1));
    struct hodei_native_view native;
    const char *why;
    if (hodei_native_validate((const char *) data + classic, len - classic, &native, &why) != 0)
        return refuse(l, "histogram %s: %s", key, why);
    if (sched_load_histogram(l->s, (enum sched_histogram_id) h, sum, counts, &native) != 0)
        return refuse(l, "histogram %s: its native part and classic buckets disagree", key);
    return 0;
}

static int load_job(void *ctx, const struct store_job *r)
{
    struct loader *l = ctx;
    struct job_spec spec = { .command = (char *) r->command, .cpu_m = r->cpu_m,
                             .memory_mb = r->memory_mb, .priority = r->priority,
                             .timeout_s = r->timeout_s, .max_retries = r->max_retries };
    struct job_status st = { .error_type = -1, .has_exit_code = r->has_exit_code,
                             .exit_code = r->exit_code, .attempts = r->attempts,
                             .assigned_at = r->assigned_at, .started_at = r->started_at,
                             .finished_at = r->finished_at, .output_bytes = r->output_bytes };
    int state = hodei_name_index(job_state_names, JOB_STATE_COUNT, r->state);
    const char *why = NULL;
    if (!hodei_id_valid(r->tenant_id, strlen(r->tenant_id)))
        why = "its tenant_id is not a valid id";
    else if (strlen(r->name) > SCHED_NAME_MAX || !*r->command
             || strlen(r->command) > SCHED_COMMAND_MAX)
        why = "its name or command is out of bounds";
    else if (r->priority < SCHED_PRIORITY_MIN || r->priority > SCHED_PRIORITY_MAX)
        why = "its priority is out of bounds";
    else if (state < 0 || (state >= JOB_SUCCEEDED) != r->finished)
        why = "its state is unknown";
    else if (r->error_type && (st.error_type = (int8_t) hodei_name_index(
                 hodei_error_type_names, HODEI_ERR_COUNT, r->error_type)) < 0)
        why = "its error_type is unknown";
    else if (r->worker_id ? !hodei_id_valid(r->worker_id, strlen(r->worker_id))
                          : (state == JOB_ASSIGNED || state == JOB_RUNNING))
        why = "its worker_id is missing or invalid";
    if (why)
        return refuse(l, "job %" PRIu64 ": %s", r->id, why);
    snprintf(spec.tenant_id, sizeof spec.tenant_id, "%s", r->tenant_id);
    snprintf(spec.name, sizeof spec.name, "%s", r->name);
    st.state = (uint8_t) state;
    if (r->worker_id)
        snprintf(st.worker_id, sizeof st.worker_id, "%s", r->worker_id);
    sched_load_job(l->s, &spec, r->id, r->submitted_at, &st, r->output, r->output_len, l->now);
    l->jobs++;
    return 0;
}

int persist_load(struct store *st, struct sched *s, double now, char *err, size_t errlen)
{
    struct loader l = { .s = s, .err = err, .errlen = errlen, .now = now };
    struct store_load_cb cb = { .meta = load_meta, .counter = load_counter, .blob = load_blob,
                                .job = load_job, .ctx = &l };
    char why[512] = "";
    l.err = why;
    l.errlen = sizeof why;
    if (store_load(st, &cb, err, errlen) != 0) {
        if (why[0])
            snprintf(err, errlen, "%s: damaged row: %s", store_path(st), why);
        return -1;
    }
    sched_load_done(s, now);
    return 0;
}
