/*
 * hodei-shm-fill [--tenants N] [--workers N] [--error-types N] [--event-types N] [--seed N]
 *                [--observations FILE] PATH
 *
 * Replaces PATH with a valid segment holding one populated snapshot (deterministic, non-zero
 * values), so tests and benchmarks get realistic or huge snapshots without the daemon.
 *
 * --observations FILE (- for stdin) gives the daemon's histograms known observations, one a
 * line: FAMILY SECONDS [JOB_ID TENANT_ID [UNIX_SECONDS]], e.g.
 *     hodei_scheduling_latency_seconds 0.0000031 42 acme 1700000000.5
 * recorded as the daemon records them (classic buckets, native part, and the exemplar of each
 * bucket's last observation when JOB_ID is given; its time defaults to the snapshot's).  A
 * family named in the file takes exactly its lines' observations (a line with FAMILY alone
 * names it: no line with a value leaves it empty); any other gets generated ones.  Blank
 * lines and lines starting with # are skipped.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hodei_fill.h"
#include "hodei_segment.h"
#include "hodei_snapshot.h"

static void usage(void)
{
    fprintf(stderr, "usage: hodei-shm-fill [--tenants N] [--workers N] [--error-types N] "
                    "[--event-types N] [--seed N] [--observations FILE] PATH\n");
    exit(2);
}

static void bad_line(const char *file, unsigned line, const char *why)
{
    fprintf(stderr, "hodei-shm-fill: %s:%u: %s (want: FAMILY SECONDS [JOB_ID TENANT_ID "
                    "[UNIX_SECONDS]])\n", file, line, why);
    exit(1);
}

static double seconds(const char *s, const char *file, unsigned line)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || errno || !isfinite(v) || v < 0)
        bad_line(file, line, "a time that is not a finite number of seconds >= 0");
    return v;
}

/* Reads the observations of FILE into *out (the strings they point at stay allocated) and
 * the families it names into *observed. */
static size_t read_observations(const char *file, struct hodei_fill_observation **out,
                                uint64_t *observed)
{
    FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
    if (f == NULL) {
        fprintf(stderr, "hodei-shm-fill: %s: %s\n", file, strerror(errno));
        exit(1);
    }
    struct hodei_fill_observation *obs = NULL;
    size_t n = 0, cap = 0;
    char *text = NULL;
    size_t text_cap = 0;
    unsigned line = 0;
    while (getline(&text, &text_cap, f) >= 0) {
        char *field[6], *save = NULL;
        unsigned nfields = 0;
        line++;
        for (char *t = strtok_r(text, " \t\r\n", &save); t && nfields < 6;
             t = strtok_r(NULL, " \t\r\n", &save))
            field[nfields++] = t;
        if (nfields == 0 || field[0][0] == '#')
            continue;
        if (nfields == 3 || nfields == 6)
            bad_line(file, line, "wrong number of fields");
        int id = hodei_family_lookup(field[0]);
        if (id < 0 || hodei_families[id].type != HODEI_HISTOGRAM
            || hodei_families[id].source != HODEI_SRC_DAEMON)
            bad_line(file, line, "not a histogram the daemon records");
        *observed |= (uint64_t) 1 << id;
        if (nfields == 1)
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            obs = realloc(obs, cap * sizeof(*obs));
            if (obs == NULL) {
                perror("hodei-shm-fill");
                exit(1);
            }
        }
        obs[n] = (struct hodei_fill_observation) { .family = (enum hodei_family_id) id,
                                                   .value = seconds(field[1], file, line) };
        if (nfields >= 4) {
            obs[n].job_id = strdup(field[2]);
            obs[n].tenant_id = strdup(field[3]);
            obs[n].timestamp = nfields == 5 ? seconds(field[4], file, line) : 0;
        }
        n++;
    }
    free(text);
    if (f != stdin)
        fclose(f);
    *out = obs;
    return n;
}

static unsigned long number(const char *s)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*s == '\0' || *end != '\0' || s[0] == '-')
        usage();
    return v;
}

int main(int argc, char **argv)
{
    struct hodei_fill_params p = HODEI_FILL_DEFAULTS;
    const char *path = NULL;

    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--tenants") == 0)
            p.tenants = (unsigned) number(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--workers") == 0)
            p.workers = (unsigned) number(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--error-types") == 0)
            p.error_types = (unsigned) number(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--event-types") == 0)
            p.event_types = (unsigned) number(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--seed") == 0)
            p.seed = number(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--observations") == 0) {
            struct hodei_fill_observation *obs;
            p.nobservations = read_observations(argv[++i], &obs, &p.observed);
            p.observations = obs;
        }
        else if (argv[i][0] == '-' || path)
            usage();
        else
            path = argv[i];
    }
    if (path == NULL)
        usage();

    uint32_t caps[HODEI_F_COUNT];
    hodei_fill_caps(&p, caps);
    size_t cap = hodei_payload_bound(caps);
    void *buf = aligned_alloc(8, cap);
    size_t len = buf ? hodei_fill_build(buf, cap, &p) : 0;
    if (len == 0) {
        fprintf(stderr, "hodei-shm-fill: parameters out of range (tenants/workers 1..1000000, "
                        "error types 1..%d, event types 1..%d, exemplar labels within %d "
                        "bytes)\n", HODEI_ERR_COUNT, HODEI_EV_COUNT,
                HODEI_EXEMPLAR_LABELS_BYTES);
        return 1;
    }
    struct hodei_seg_writer w;
    char err[256];
    if (hodei_seg_create(&w, path, HODEI_SEG_MIN_SLOTS, len, err, sizeof(err)) != 0
        || hodei_seg_publish(&w, buf, len) != 0) {
        fprintf(stderr, "hodei-shm-fill: %s\n", err);
        return 1;
    }
    hodei_seg_close(&w);
    free(buf);
    return 0;
}
