/*
 * libFuzzer target: arbitrary bytes as a whole segment file (when they start with the segment
 * magic) or as a snapshot payload, through the reader, the validator and every rendering (the
 * histograms' native parts and exemplars included: the seeds carry them); and the same bytes
 * as an encoded native histogram, through its validator, whose every accepted encoding must
 * add up.
 * Built with ASan + UBSan: any crash, overread or undefined behaviour is a finding.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>

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

static void render_all(const struct hodei_snapshot *snap)
{
    const struct hodei_snapshot *snaps[2] = { snap, NULL };
    struct hodei_render_input in = { .snapshots = snaps, .nsnapshots = 2, .scheduler_up = 1,
                                     .snapshot_age = 0.5 };
    for (int fmt = HODEI_FMT_TEXT; fmt <= HODEI_FMT_PROTOBUF; fmt++) {
        struct hodei_sink s = { .pos = sink_buf, .end = sink_buf + sizeof(sink_buf),
                                .flush = discard };
        if (hodei_render(&s, fmt, &in) != 0)
            abort();
    }
}

/* The bytes as one encoded native histogram: what the validator accepts must add up. */
static void fuzz_native_histogram(const void *copy, size_t size)
{
    struct hodei_native_view view;
    const char *why;
    if (hodei_native_validate(copy, size, &view, &why) != 0)
        return;
    uint64_t total = view.zero_count;
    for (unsigned i = 0; i < view.nbuckets; i++)
        total += hodei_native_count(&view, i);
    if (total != view.count)
        abort();
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
