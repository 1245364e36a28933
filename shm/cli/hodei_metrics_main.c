/*
 * hodei-metrics [--openmetrics | --protobuf] [--stale-after SECONDS] PATH
 *
 * Renders a segment to stdout with the same renderer nginx uses, for operators debugging
 * without nginx and for tests.  --protobuf writes the binary, length-delimited protobuf
 * exposition (what Prometheus gets with native histograms on).  A missing or invalid segment
 * exits 1 with the reason.
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
            "usage: hodei-metrics [--openmetrics | --protobuf] [--stale-after SECONDS] PATH\n");
    exit(2);
}

int main(int argc, char **argv)
{
    enum hodei_format fmt = HODEI_FMT_TEXT;
    double stale_after = 10;
    const char *path = NULL;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--openmetrics") == 0)
            fmt = HODEI_FMT_OPENMETRICS;
        else if (strcmp(argv[i], "--protobuf") == 0)
            fmt = HODEI_FMT_PROTOBUF;
        else if (strcmp(argv[i], "--stale-after") == 0 && i + 1 < argc)
            stale_after = strtod(argv[++i], NULL);
        else if (argv[i][0] == '-' || path)
            usage();
        else
            path = argv[i];
    }
    if (path == NULL)
        usage();

    struct hodei_seg_reader reader;
    struct hodei_snapshot snap;
    const char *why = NULL;
    enum hodei_seg_status st = hodei_seg_open(&reader, path);
    if (st == HODEI_SEG_OK)
        st = hodei_seg_read(&reader, &snap, NULL, &why);
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
    hodei_seg_unmap(&reader);
    return 0;
}
