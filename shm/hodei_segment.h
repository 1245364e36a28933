/*
 * hodei_segment.h — the shared-memory segment: one writer (the daemon), any number of
 * read-only readers (nginx workers, hodei-metrics), consistent snapshots, no locks.
 *
 * liburcu's grace periods cannot span processes, so the segment uses RCU's publish half and
 * replaces grace periods with slot rotation plus sequence validation (DESIGN §3):
 *
 *   file   := header (2 cache lines) | slot[slot_count]
 *   slot   := { seq (own cache line), generation, length } (2 cache lines) | payload[slot_size-128]
 *
 * Writer: slot = published.slot + 1 mod N; seq odd; wmb; payload, length, generation; wmb;
 *         seq even; release-store published = generation << 8 | slot; heartbeat = now.
 * Reader: acquire published; check slot; seq (retry while odd); rmb; check length; copy;
 *         rmb; re-read seq (retry if it moved, bounded); then validate the private copy.
 *
 * A reader never writes: it maps PROT_READ.  The writer never waits for a reader: with
 * N >= 3 slots a reader copying slot k is disturbed only after two further publishes, and then
 * the sequence check tells it to retry.  A daemon restart replaces the file (new inode) and
 * writes a new birth id; readers re-map when either changes.
 */
#ifndef HODEI_SEGMENT_H
#define HODEI_SEGMENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HODEI_SEG_MAGIC      0x3147455349454448ull   /* "HDEISEG1" */
#define HODEI_SEG_VERSION    1u
#define HODEI_SEG_LINE       64u
#define HODEI_SEG_HDR_SIZE   128u
#define HODEI_SEG_SLOT_HDR   128u
#define HODEI_SEG_MIN_SLOTS  3u
#define HODEI_SEG_MAX_SLOTS  64u
#define HODEI_SEG_READ_TRIES 16

struct hodei_seg_header {
    /* line 0: immutable after creation */
    uint64_t magic;
    uint32_t version;
    uint32_t slot_count;
    uint64_t segment_size;     /* bytes of the whole file */
    uint64_t slot_size;        /* bytes of one slot, its header included; multiple of 64 */
    uint64_t birth_id;         /* random, new at every daemon start */
    int64_t  writer_pid;
    double   start_time;       /* unix seconds the writer started: _created of its counters */
    uint64_t reserved0;
    /* line 1: written at every publish / tick */
    uint64_t published;        /* generation << 8 | slot index */
    int64_t  heartbeat_ns;     /* CLOCK_REALTIME of the last publish or idle tick */
    uint64_t reserved1[6];
};

struct hodei_seg_slot {
    uint64_t seq;              /* odd while the writer is inside the slot */
    uint64_t pad0[7];
    uint64_t generation;
    uint64_t length;
    uint64_t pad1[6];
};

/* Why a segment could not be read; stable values, hodei_seg_strerror() describes them. */
enum hodei_seg_status {
    HODEI_SEG_OK = 0,
    HODEI_SEG_MISSING,         /* no file at the path */
    HODEI_SEG_IO,              /* open/stat/mmap failed for another reason */
    HODEI_SEG_TOO_SMALL,       /* file shorter than a header */
    HODEI_SEG_BAD_MAGIC,
    HODEI_SEG_BAD_VERSION,
    HODEI_SEG_BAD_GEOMETRY,    /* sizes or slot count disagree with each other or the file */
    HODEI_SEG_EMPTY,           /* nothing published yet */
    HODEI_SEG_BAD_SLOT,        /* published names a slot that does not exist */
    HODEI_SEG_BAD_LENGTH,      /* a stable slot claims more bytes than it holds */
    HODEI_SEG_BUSY,            /* the writer lapped every try */
    HODEI_SEG_BAD_PAYLOAD,     /* the copied snapshot failed validation */
    HODEI_SEG_STATUS_COUNT
};
const char *hodei_seg_strerror(enum hodei_seg_status st);

/* ---- writer --------------------------------------------------------------------------- */

struct hodei_seg_writer {
    int      fd;
    unsigned char *map;
    size_t   size;
    struct hodei_seg_header *hdr;
    uint32_t slot;             /* slot of the last publish */
    uint64_t generation;
};

/* Creates a new segment able to hold payloads of payload_max bytes in slot_count slots and
 * atomically replaces path with it (O_EXCL temp file, mode 0640, posix_fallocate, rename).
 * Returns 0, or -1 with a message in err. */
int  hodei_seg_create(struct hodei_seg_writer *w, const char *path, uint32_t slot_count,
                      size_t payload_max, char *err, size_t errlen);
/* Publishes payload[0..len) as the next generation.  Returns 0, or -1 if len is too large. */
int  hodei_seg_publish(struct hodei_seg_writer *w, const void *payload, size_t len);
/* Marks the writer alive without a new snapshot. */
void hodei_seg_heartbeat(struct hodei_seg_writer *w);
size_t hodei_seg_payload_max(const struct hodei_seg_writer *w);
/* Unmaps; the file stays, consistent, for readers to find stale. */
void hodei_seg_close(struct hodei_seg_writer *w);

/* ---- reader --------------------------------------------------------------------------- */

struct hodei_seg_reader {
    const unsigned char *map;  /* PROT_READ */
    size_t   size;
    dev_t    dev;
    ino_t    ino;
    uint64_t birth_id;
    const struct hodei_seg_header *hdr;
    void    *copy;             /* private, 8-aligned, payload_max bytes */
    size_t   copy_cap;
    uint64_t retries;          /* torn reads retried, for tests and benchmarks */
};

/* Maps path read-only and checks magic, version and geometry. */
enum hodei_seg_status hodei_seg_open(struct hodei_seg_reader *r, const char *path);
void hodei_seg_unmap(struct hodei_seg_reader *r);
/* 1 when the file at path is no longer the mapped one (replaced, or a new birth id). */
int  hodei_seg_replaced(const struct hodei_seg_reader *r, const char *path);

struct hodei_snapshot;
/* Copies one consistent snapshot into r->copy and validates it into *snap.
 * *generation (may be NULL) receives its generation; *why a detail for BAD_PAYLOAD. */
enum hodei_seg_status hodei_seg_read(struct hodei_seg_reader *r, struct hodei_snapshot *snap,
                                     uint64_t *generation, const char **why);
/* Seconds since the writer's last publish or tick (may be negative on clock steps). */
double hodei_seg_age(const struct hodei_seg_reader *r);
double hodei_seg_start_time(const struct hodei_seg_reader *r);

#include "hodei_clock.h"   /* hodei_now(), hodei_now_ns() */

#endif
