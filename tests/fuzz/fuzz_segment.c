/*
 * libFuzzer target: arbitrary bytes as a whole segment file (when they start with the segment
 * magic) or as a snapshot payload, through the reader, the validator and every rendering; and
 * the same bytes as an encoded native histogram, through its validator and, when valid, the
 * protobuf rendering of a histogram series carrying it.
 * Built with ASan + UBSan: any crash, overread or undefined behaviour is a finding.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>

#include "hodei_fill.h"
#include "hodei_native.h"
#include "hodei_render.h"
#include "hodei_segment.h"
#include "hodei_snapshot.h"

static char sink_buf[1 << 16];

static int discard(struct hodei_sink *s)
{
    s->total += (size_t) (s->pos - sink_buf);
    s->pos = sink_buf;
    return 0;
}

/* The native histogram and exemplars a series gets while one input is rendered. */
static const struct hodei_native_view *fuzz_native;
static struct hodei_exemplar fuzz_exemplars[HODEI_BUCKETS_MAX + 1];

static void serve_extras(void *ctx, const struct hodei_snapshot *snap, enum hodei_family_id id,
                         uint32_t series, struct hodei_series_extra *out)
{
    (void) ctx;
    (void) snap;
    (void) id;
    (void) series;
    out->native = fuzz_native;
    out->exemplars = fuzz_exemplars;
}

static void render_all(const struct hodei_snapshot *snap)
{
    const struct hodei_snapshot *snaps[2] = { snap, NULL };
    struct hodei_render_input in = { .snapshots = snaps, .nsnapshots = 2, .scheduler_up = 1,
                                     .snapshot_age = 0.5, .series_extra = serve_extras };
    for (int fmt = HODEI_FMT_TEXT; fmt <= HODEI_FMT_PROTOBUF; fmt++) {
        struct hodei_sink s = { .pos = sink_buf, .end = sink_buf + sizeof(sink_buf),
                                .flush = discard };
        if (hodei_render(&s, fmt, &in) != 0)
            abort();
    }
}

/* The bytes as one encoded native histogram: what the validator accepts must be consistent
 * and render. */
static void fuzz_native_histogram(const void *copy, size_t size)
{
    static unsigned char payload[1 << 16];
    static struct hodei_snapshot fill;
    static int ready;
    struct hodei_native_view view;
    const char *why;
    if (!ready) {
        struct hodei_fill_params p = HODEI_FILL_DEFAULTS;
        size_t len = hodei_fill_build(payload, sizeof(payload), &p);
        if (len == 0 || hodei_snapshot_validate(payload, len, &fill, &why) != 0)
            abort();
        for (unsigned k = 0; k <= HODEI_BUCKETS_MAX; k++) {
            struct hodei_exemplar *e = &fuzz_exemplars[k];
            e->nlabels = 1;
            e->label[0].name = "job_id";
            e->label[0].name_len = 6;
            e->label[0].value = "42";
            e->label[0].value_len = 2;
            e->value = k;
            e->timestamp = 1700000000.5;
        }
        ready = 1;
    }
    if (hodei_native_validate(copy, size, &view, &why) != 0)
        return;
    uint64_t total = view.zero_count;
    for (unsigned i = 0; i < view.nbuckets; i++)
        total += hodei_native_count(&view, i);
    if (total != view.count)
        abort();
    fuzz_native = &view;
    render_all(&fill);
    fuzz_native = NULL;
}

/* The reader opens a path (never /proc/self/fd: it refuses links), so inputs go to a file. */
static char seg_path[64];

static void remove_file(void)
{
    unlink(seg_path);
}

static void fuzz_segment_file(const uint8_t *data, size_t size)
{
    if (seg_path[0] == '\0') {
        snprintf(seg_path, sizeof(seg_path), "/tmp/hodei-fuzz-%ld.seg", (long) getpid());
        atexit(remove_file);
    }
    int fd = open(seg_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    ssize_t n = write(fd, data, size);
    close(fd);
    if (n != (ssize_t) size)
        return;
    struct hodei_seg_reader r;
    struct hodei_snapshot snap;
    const char *why;
    hodei_seg_reader_init(&r);
    if (hodei_seg_load(&r, seg_path, &snap, NULL, &why) == HODEI_SEG_OK)
        render_all(&snap);
    hodei_seg_reader_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t magic = HODEI_SEG_MAGIC;
    if (size >= 8 && memcmp(data, &magic, 8) == 0) {
        fuzz_segment_file(data, size);
        return 0;
    }
    /* malloc is 16-aligned (the validator wants 8) and exactly size bytes: ASan sees overreads */
    void *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    struct hodei_snapshot snap;
    const char *why;
    if (hodei_snapshot_validate(copy, size, &snap, &why) == 0)
        render_all(&snap);
    fuzz_native_histogram(copy, size);
    free(copy);
    return 0;
}
