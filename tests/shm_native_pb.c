/*
 * shm_native_pb OUT EXPECT [ENCODED] — records known observations into the daemon's three
 * histograms the way the daemon does (hodei_fill with observations: classic buckets, native
 * part and exemplars together), renders the snapshot in the protobuf format and writes what it
 * fed in, for tests/shm_protobuf.t to compare against an independent decoding:
 *
 *   observe    FAMILY VALUE                                 without an exemplar
 *   observe    FAMILY VALUE ex JOB_ID TENANT_ID SECONDS NANOS
 *   observe    FAMILY VALUE refused     with an exemplar that must be dropped (labels over
 *                                       OpenMetrics' 128 characters, or not UTF-8)
 *   threshold  FAMILY ZERO_THRESHOLD
 *
 * scheduling latency: 0.3 us .. 20 ms, exact powers of two, 1 us, 10 us and zeros (schema 3);
 * queue wait: 10 us .. 10^4 s (too wide for schema 3: reduced); job duration: no observation.
 * ENCODED receives the scheduling-latency histogram's native encoding (a seed for the fuzzer).
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
#define MAX_OBS 8000

static uint64_t rng = 0x2545f4914f6cdd1dull;

static double uniform(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double) (rng >> 11) / 9007199254740992.0;
}

static struct hodei_fill_observation obs[MAX_OBS];
static char strings[MAX_OBS][2][160];
static size_t nobs;

/* Observation i of family id: every 3rd has no exemplar, every 50th one that must be
 * dropped; the others name job i+1 of tenant i%3+1 at a time exact in binary. */
static void observe(FILE *expect, enum hodei_family_id id, double v)
{
    size_t i = nobs++;
    char *job = strings[i][0], *tenant = strings[i][1];
    struct hodei_fill_observation *o = &obs[i];
    *o = (struct hodei_fill_observation) { .family = id, .value = v };
    fprintf(expect, "observe\t%s\t%.17g", hodei_families[id].name, v);
    if (i % 3 == 0) {
        fputc('\n', expect);
        return;
    }
    snprintf(job, 160, "%zu", i + 1);
    snprintf(tenant, 160, "tenant-%04zu", i % 3 + 1);
    if (i % 100 == 50)
        memset(job, 'j', 130), job[130] = '\0';        /* over OpenMetrics' 128 */
    else if (i % 100 == 0)
        snprintf(job, 160, "bad-\xff-utf8");
    o->job_id = job;
    o->tenant_id = tenant;
    o->timestamp = 1700000000.0 + (double) i * 0.25;
    if (i % 50 == 0)
        fprintf(expect, "\trefused\n");
    else
        fprintf(expect, "\tex\t%s\t%s\t%zu\t%zu\n", job, tenant, 1700000000 + i / 4,
                (i % 4) * 250000000);
}

int main(int argc, char **argv)
{
    static unsigned char payload[1 << 20];
    struct hodei_fill_params p = HODEI_FILL_DEFAULTS;
    struct hodei_snapshot snap;
    const char *why;

    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: shm_native_pb OUT EXPECT [ENCODED]\n");
        return 2;
    }
    FILE *expect = fopen(argv[2], "w");
    if (expect == NULL) {
        perror(argv[2]);
        return 1;
    }
    for (int i = 0; i < NFAMILIES; i++) {
        p.observed |= (uint64_t) 1 << native_families[i];
        fprintf(expect, "threshold\t%s\t%.17g\n", hodei_families[native_families[i]].name,
                HODEI_NATIVE_ZERO_THRESHOLD);
    }
    enum hodei_family_id lat = native_families[0], wait = native_families[1];
    const double exact[] = { 0, HODEI_NATIVE_ZERO_THRESHOLD, 0x1p-20, 0x1p-10, 0x1p-7, 1e-6,
                             1e-5, 1e-6, 2e-6 };
    for (unsigned k = 0; k < sizeof(exact) / sizeof(exact[0]); k++)
        observe(expect, lat, exact[k]);
    for (int k = 0; k < 5000; k++)
        observe(expect, lat, 3e-7 * pow(2e-2 / 3e-7, uniform()));
    for (int k = 0; k < 1000; k++)
        observe(expect, wait, 1e-5 * pow(1e9, uniform()));
    p.observations = obs;
    p.nobservations = nobs;

    size_t len = hodei_fill_build(payload, sizeof(payload), &p);
    if (len == 0 || hodei_snapshot_validate(payload, len, &snap, &why) != 0) {
        fprintf(stderr, "shm_native_pb: the snapshot: %s\n", len ? why : "did not build");
        return 1;
    }
    const struct hodei_snap_family *f = snap.family[lat];
    struct hodei_native_view native;
    if (!hodei_series_native(&snap, f, hodei_series_at(&snap, f, 0), &native)) {
        fprintf(stderr, "shm_native_pb: no native part\n");
        return 1;
    }
    if (argc == 4) {
        FILE *seed = fopen(argv[3], "wb");
        size_t n = HODEI_NATIVE_HEADER_SIZE + 8 * ((size_t) native.nspans + native.nbuckets);
        const unsigned char *enc = native.spans - HODEI_NATIVE_HEADER_SIZE;
        if (seed == NULL || fwrite(enc, 1, n, seed) != n || fclose(seed) != 0) {
            perror("shm_native_pb: encoded");
            return 1;
        }
    }

    const struct hodei_snapshot *snaps[1] = { &snap };
    struct hodei_render_input in = { .snapshots = snaps, .nsnapshots = 1, .scheduler_up = 1,
                                     .snapshot_age = 0.25 };
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
