/*
 * hodei-metrics [--openmetrics | --protobuf] [--stale-after SECONDS] PATH
 * hodei-metrics --families
 *
 * Renders a segment to stdout with the same renderer nginx uses, for operators debugging
 * without nginx and for tests.  --protobuf writes the binary, length-delimited protobuf
 * exposition (what Prometheus gets with native histograms on).  A missing or invalid segment
 * exits 1 with the reason.  --families prints the schema (families, their labels' kinds,
 * buckets) as JSON, so that scripts and tests read the one definition instead of parsing C.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hodei_render.h"
#include "hodei_segment.h"

static int flush_stdout(struct hodei_sink *s)
{
    char *start = s->ctx;
    size_t n = (size_t) (s->pos - start);
    if (n && fwrite(start, 1, n, stdout) != n)
        return -1;
    s->total += n;
    s->pos = start;
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: hodei-metrics [--openmetrics | --protobuf] [--stale-after SECONDS] PATH\n"
            "       hodei-metrics --families\n");
    exit(2);
}

/* ---- --families ---------------------------------------------------------------------- */

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char) *s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static const char *const type_names[] = { "counter", "gauge", "histogram" };
static const char *const source_names[] = { "daemon", "nginx", "both", "header" };
static const char *const origin_names[] = { "client", "set", "schema", "build", "nginx" };

static void print_families(void)
{
    char num[HODEI_NUM_MAX + 1];

    printf("{\"families\": [\n");
    for (int id = 0; id < HODEI_F_COUNT; id++) {
        const struct hodei_family *f = &hodei_families[id];
        printf("  {\"name\": ");
        json_string(f->name);
        printf(", \"type\": \"%s\", \"source\": \"%s\", \"help\": ", type_names[f->type],
               source_names[f->source]);
        json_string(f->help);
        printf(", \"labels\": [");
        for (unsigned l = 0; l < f->nlabels; l++) {
            printf("%s{\"name\": ", l ? ", " : "");
            json_string(hodei_label_name(f, l));
            printf(", \"kind\": ");
            json_string(hodei_labels[f->labels[l]].kind);
            putchar('}');
        }
        printf("], \"buckets\": [");
        for (unsigned k = 0; k < f->nbuckets; k++) {
            num[hodei_fmt_double(num, f->buckets[k])] = '\0';
            printf("%s%s", k ? ", " : "", num);
        }
        printf("], \"buckets_configurable\": %s}%s\n", f->buckets_configurable ? "true" : "false",
               id + 1 < HODEI_F_COUNT ? "," : "");
    }
    printf("], \"label_kinds\": [\n");
    for (int k = 0; k < HODEI_LABEL_KIND_COUNT; k++) {
        const struct hodei_label_def *l = &hodei_labels[k];
        printf("  {\"kind\": ");
        json_string(l->kind);
        printf(", \"name\": ");
        json_string(l->name);
        printf(", \"origin\": \"%s\", \"default_values\": %u, \"values\": [",
               origin_names[l->origin], l->nvalues);
        for (uint32_t i = 0; l->origin == HODEI_ORIGIN_SET && i < l->nvalues; i++) {
            printf("%s", i ? ", " : "");
            json_string(l->values[i]);
        }
        for (int i = 0; l->origin == HODEI_ORIGIN_SCHEMA && i < HODEI_F_COUNT; i++) {
            printf("%s", i ? ", " : "");
            json_string(hodei_families[i].name);
        }
        printf("]}%s\n", k + 1 < HODEI_LABEL_KIND_COUNT ? "," : "");
    }
    printf("]}\n");
}

/* ---- rendering ------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    enum hodei_format fmt = HODEI_FMT_TEXT;
    double stale_after = 10;
    const char *path = NULL;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--families") == 0 && argc == 2) {
            print_families();
            return fflush(stdout) == 0 ? 0 : 1;
        } else if (strcmp(argv[i], "--openmetrics") == 0) {
            fmt = HODEI_FMT_OPENMETRICS;
        } else if (strcmp(argv[i], "--protobuf") == 0) {
            fmt = HODEI_FMT_PROTOBUF;
        } else if (strcmp(argv[i], "--stale-after") == 0 && i + 1 < argc) {
            stale_after = strtod(argv[++i], NULL);
        } else if (argv[i][0] == '-' || path) {
            usage();
        } else {
            path = argv[i];
        }
    }
    if (path == NULL)
        usage();

    struct hodei_seg_reader reader;
    struct hodei_snapshot snap;
    const char *why = NULL;
    hodei_seg_reader_init(&reader);
    enum hodei_seg_status st = hodei_seg_load(&reader, path, &snap, NULL, &why);
    if (st != HODEI_SEG_OK) {
        fprintf(stderr, "hodei-metrics: %s: %s%s%s\n", path, hodei_seg_strerror(st),
                why ? ": " : "", why ? why : "");
        return 1;
    }

    double age = hodei_seg_age(&reader);
    const struct hodei_snapshot *snaps[1] = { &snap };
    struct hodei_render_input in = {
        .snapshots = snaps, .nsnapshots = 1, .scheduler_up = age <= stale_after,
        .snapshot_age = age > 0 ? age : 0, .created = hodei_seg_start_time(&reader) };
    static char buf[1 << 16];
    struct hodei_sink sink = { .pos = buf, .end = buf + sizeof(buf), .flush = flush_stdout,
                               .ctx = buf };
    if (hodei_render(&sink, fmt, &in) != 0 || flush_stdout(&sink) != 0 || fflush(stdout) != 0) {
        perror("hodei-metrics: write");
        return 1;
    }
    hodei_seg_reader_free(&reader);
    return 0;
}
