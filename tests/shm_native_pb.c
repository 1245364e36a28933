/*
 * shm_native_pb OUT EXPECT [ENCODED] — renders a populated snapshot in the protobuf format with
 * native histograms and exemplars attached to the daemon's three histograms, and writes what
 * it fed in, for tests/shm_protobuf.t to compare against an independent decoding:
 *
 *   observe      FAMILY VALUE                      every observation, in order (%.17g)
 *   threshold    FAMILY ZERO_THRESHOLD
 *   exemplar     FAMILY LE JOB_ID TENANT_ID VALUE SECONDS NANOS
 *   no_exemplar  FAMILY LE                          an exemplar that must not be rendered
 *                                                   (labels too long, or not UTF-8)
 *
 * scheduling latency: 0.3 us .. 20 ms, exact powers of two, 1 us, 10 us and zeros (schema 3);
 * queue wait: 10 us .. 10^4 s (too wide for schema 3: reduced); job duration: no observation.
 * ENCODED receives the scheduling-latency histogram's encoding (a seed for the fuzzer).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hodei_fill.h"
#include "hodei_native.h"
#include "hodei_render.h"
#include "hodei_snapshot.h"
#include "shm_test_util.h"

static const enum hodei_family_id native_families[] = {
    HODEI_F_SCHEDULING_LATENCY_SECONDS, HODEI_F_QUEUE_WAIT_TIME_SECONDS,
    HODEI_F_JOB_DURATION_SECONDS };
#define NFAMILIES 3

struct extras {
    unsigned char enc[NFAMILIES][HODEI_NATIVE_ENCODED_MAX];
    struct hodei_native_view native[NFAMILIES];
    struct hodei_exemplar exemplars[NFAMILIES][HODEI_BUCKETS_MAX + 1];
    int has_exemplars[NFAMILIES];
    char strings[NFAMILIES][HODEI_BUCKETS_MAX + 1][2][160];
};

static int family_index(enum hodei_family_id id)
{
    for (int i = 0; i < NFAMILIES; i++)
        if (native_families[i] == id)
            return i;
    return -1;
}

static void serve(void *ctx, const struct hodei_snapshot *snap, enum hodei_family_id id,
                  uint32_t series, struct hodei_series_extra *out)
{
    struct extras *x = ctx;
    int i = family_index(id);
    (void) snap;
    (void) series;
    if (i < 0)
        return;
    out->native = &x->native[i];
    out->exemplars = x->has_exemplars[i] ? x->exemplars[i] : NULL;
}

static uint64_t rng = 0x2545f4914f6cdd1dull;

static double uniform(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double) (rng >> 11) / 9007199254740992.0;
}

static void observe(FILE *expect, struct hodei_native *h, enum hodei_family_id id, double v)
{
    if (hodei_native_observe(h, v) != 0) {
        fprintf(stderr, "observe %.17g refused\n", v);
        exit(1);
    }
    fprintf(expect, "observe\t%s\t%.17g\n", hodei_families[id].name, v);
}

static void le_text(char *buf, size_t n, const struct hodei_family *f, unsigned k)
{
    if (k < f->nbuckets)
        snprintf(buf, n, "%.17g", f->buckets[k]);
    else
        snprintf(buf, n, "+Inf");
}

/* Bucket k's exemplar: job k*7+1 of tenant k%3+1, inside the bucket, at a time whose
 * fraction is exact in binary (so seconds and nanos are known without rounding). */
static void set_exemplar(FILE *expect, struct extras *x, int i, unsigned k, int render)
{
    const struct hodei_family *f = &hodei_families[native_families[i]];
    struct hodei_exemplar *e = &x->exemplars[i][k];
    char *job = x->strings[i][k][0], *tenant = x->strings[i][k][1], le[40];
    snprintf(job, 160, "%u", k * 7 + 1);
    snprintf(tenant, 160, "tenant-%04u", k % 3 + 1);
    if (!render && k % 2)
        memset(job, 'j', 130), job[130] = '\0';      /* over OpenMetrics' 128 */
    else if (!render)
        snprintf(job, 160, "bad-\xff-utf8");
    double lower = k == 0 ? 0 : f->buckets[k - 1];
    double upper = k < f->nbuckets ? f->buckets[k] : 2 * f->buckets[k - 1];
    e->nlabels = 2;
    e->label[0].name = "job_id";
    e->label[0].name_len = 6;
    e->label[0].value = job;
    e->label[0].value_len = strlen(job);
    e->label[1].name = "tenant_id";
    e->label[1].name_len = 9;
    e->label[1].value = tenant;
    e->label[1].value_len = strlen(tenant);
    e->value = lower + (upper - lower) * 0.37;
    e->timestamp = 1700000000.0 + k + (k % 4) * 0.25;
    le_text(le, sizeof(le), f, k);
    if (render)
        fprintf(expect, "exemplar\t%s\t%s\t%s\t%s\t%.17g\t%u\t%u\n", f->name, le, job, tenant,
                e->value, 1700000000 + k, (k % 4) * 250000000u);
    else
        fprintf(expect, "no_exemplar\t%s\t%s\n", f->name, le);
}

int main(int argc, char **argv)
{
    static unsigned char payload[1 << 20];
    static struct extras x;
    static struct hodei_native h[NFAMILIES];
    struct hodei_fill_params p = HODEI_FILL_DEFAULTS;
    struct hodei_snapshot snap;
    const char *why;

    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: shm_native_pb OUT EXPECT [ENCODED]\n");
        return 2;
    }
    FILE *expect = fopen(argv[2], "w");
    size_t len = hodei_fill_build(payload, sizeof(payload), &p);
    if (expect == NULL || len == 0 || hodei_snapshot_validate(payload, len, &snap, &why) != 0) {
        fprintf(stderr, "shm_native_pb: setup failed\n");
        return 1;
    }

    for (int i = 0; i < NFAMILIES; i++) {
        hodei_native_init(&h[i], HODEI_NATIVE_ZERO_THRESHOLD);
        fprintf(expect, "threshold\t%s\t%.17g\n", hodei_families[native_families[i]].name,
                HODEI_NATIVE_ZERO_THRESHOLD);
    }
    enum hodei_family_id lat = native_families[0], wait = native_families[1];
    const double exact[] = { 0, HODEI_NATIVE_ZERO_THRESHOLD, 0x1p-20, 0x1p-10, 0x1p-7, 1e-6,
                             1e-5, 1e-6, 2e-6 };
    for (unsigned k = 0; k < sizeof(exact) / sizeof(exact[0]); k++)
        observe(expect, &h[0], lat, exact[k]);
    for (int k = 0; k < 5000; k++)
        observe(expect, &h[0], lat, 3e-7 * pow(2e-2 / 3e-7, uniform()));
    for (int k = 0; k < 1000; k++)
        observe(expect, &h[1], wait, 1e-5 * pow(1e9, uniform()));

    for (int i = 0; i < NFAMILIES; i++) {
        size_t n = hodei_native_encode(&h[i], x.enc[i], sizeof(x.enc[i]));
        if (n == 0 || hodei_native_validate(x.enc[i], n, &x.native[i], &why) != 0) {
            fprintf(stderr, "shm_native_pb: encoding: %s\n", n ? why : "too large");
            return 1;
        }
    }
    if (argc == 4) {
        FILE *seed = fopen(argv[3], "wb");
        size_t n = hodei_native_encode(&h[0], x.enc[0], sizeof(x.enc[0]));
        if (seed == NULL || fwrite(x.enc[0], 1, n, seed) != n || fclose(seed) != 0) {
            perror("shm_native_pb: encoded");
            return 1;
        }
    }
    if (x.native[1].schema >= HODEI_NATIVE_SCHEMA) {
        fprintf(stderr, "shm_native_pb: the queue-wait histogram was meant to be reduced\n");
        return 1;
    }

    /* latency: every classic bucket, +Inf included; queue wait: some, and two refused */
    x.has_exemplars[0] = x.has_exemplars[1] = 1;
    for (unsigned k = 0; k <= hodei_families[lat].nbuckets; k++)
        set_exemplar(expect, &x, 0, k, 1);
    for (unsigned k = 0; k <= hodei_families[wait].nbuckets; k++)
        if (k % 3 == 0 || k == hodei_families[wait].nbuckets)
            set_exemplar(expect, &x, 1, k, k != 3 && k != 6);

    const struct hodei_snapshot *snaps[1] = { &snap };
    struct hodei_render_input in = { .snapshots = snaps, .nsnapshots = 1, .scheduler_up = 1,
                                     .snapshot_age = 0.25, .series_extra = serve,
                                     .series_extra_ctx = &x };
    struct mem_sink m;
    mem_sink_init(&m);
    if (hodei_render(&m.sink, HODEI_FMT_PROTOBUF, &in) != 0) {
        fprintf(stderr, "shm_native_pb: render failed\n");
        return 1;
    }
    mem_sink_done(&m);
    FILE *out = fopen(argv[1], "wb");
    if (out == NULL || fwrite(m.data, 1, m.len, out) != m.len || fclose(out) != 0
        || fclose(expect) != 0) {
        perror("shm_native_pb: write");
        return 1;
    }
    free(m.data);
    return 0;
}
