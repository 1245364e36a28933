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
 * Reader: read the header (published); check the slot index; read the slot's seq (retry while
 *         odd), rmb; check the length; copy the payload; rmb; read seq again (retry if it
 *         moved, bounded); then validate the private copy.
 *
 * The writer never waits for a reader: with N >= 3 slots a reader copying slot k is disturbed
 * only after two further publishes, and then the sequence check tells it to retry.
 *
 * Growth.  A snapshot larger than the slots is published into a new file with larger slots:
 * same birth id and start time, the next generation, published before the file is renamed
 * over the path.  A reader therefore finds the old file with its last snapshot or the new file
 * with the new one, never an empty segment, and generations continue across files.  Slots
 * grow to at least twice their size; they never shrink while the writer runs (a restarted
 * daemon starts small again).  A daemon restart also replaces the file, with a new birth id.
 *
 * Why readers copy with pread(2) and never map the file.  A mapping faults when the file
 * under it shrinks (SIGBUS), and a header read from a live mapping can change between its
 * check and its use; either would kill an nginx worker.  A read from a regular file cannot
 * fault: a file truncated under the reader gives a short read, which that read reports as
 * HODEI_SEG_CHANGED, and the next open starts over.  Offsets come only from the geometry
 * (file size, slot count, slot size) the reader copied and checked when it opened the file,
 * never from the live header.  Memory order: the kernel copies with plain loads, and
 * cmm_smp_rmb() between the reads orders them as the protocol's loads from a mapping were.
 * The order that matters is seq, then everything else of the slot, then seq again: so the
 * slot's generation, length and payload come in one read (as much as the last snapshot's
 * length suggests, the rest in a second read if it grew), bracketed by the two reads of seq.
 * The kernel may copy an 8-byte word in pieces: a torn seq mixes two neighbouring values and
 * equals neither, so it costs a retry, never a false match; a torn published word names a
 * slot that is range-checked and then sequence-checked.  Cost of a load (one scrape): open,
 * fstat, the header, seq, the slot, seq, close — seven system calls.
 *
 * Opening: O_RDONLY|O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC, so a symbolic link at the path is
 * refused and a FIFO planted there (/dev/shm is writable by anyone) cannot block the open;
 * fstat then requires a regular file that others cannot write, of the size its header says.
 * Nothing else a reader does can block.
 */
#ifndef HODEI_SEGMENT_H
#define HODEI_SEGMENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "hodei_clock.h"   /* hodei_now(), hodei_now_ns(): the wall clock of heartbeats */

#define HODEI_SEG_MAGIC      0x3147455349454448ull   /* "HDEISEG1" */
/* Layout version of the file and of the payloads it holds (hodei_snapshot.h).  A reader
 * serves only its own version: 2 added native histograms and exemplars to histogram series. */
#define HODEI_SEG_VERSION    2u
#define HODEI_SEG_LINE       64u
#define HODEI_SEG_PAGE       4096u
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
    uint64_t birth_id;         /* random, new at every daemon start, kept when growing */
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
    HODEI_SEG_IO,              /* open or read failed for another reason */
    HODEI_SEG_TOO_SMALL,       /* file shorter than a header */
    HODEI_SEG_BAD_MAGIC,
    HODEI_SEG_BAD_VERSION,
    HODEI_SEG_BAD_GEOMETRY,    /* sizes or slot count disagree with each other or the file */
    HODEI_SEG_EMPTY,           /* nothing published yet */
    HODEI_SEG_BAD_SLOT,        /* published names a slot that does not exist */
    HODEI_SEG_BAD_LENGTH,      /* a stable slot claims more bytes than it holds */
    HODEI_SEG_BUSY,            /* the writer lapped every try */
    HODEI_SEG_BAD_PAYLOAD,     /* the copied snapshot failed validation */
    HODEI_SEG_NOT_REGULAR,     /* a symbolic link, FIFO, directory or device at the path */
    HODEI_SEG_BAD_MODE,        /* others may write the file: its contents cannot be trusted */
    HODEI_SEG_CHANGED,         /* truncated, or its geometry rewritten, while open */
    HODEI_SEG_STATUS_COUNT
};
const char *hodei_seg_strerror(enum hodei_seg_status st);

/* ---- writer (one thread of one process) ------------------------------------------------ */

struct hodei_seg_writer {
    int      fd;
    unsigned char *map;
    size_t   size;
    struct hodei_seg_header *hdr;
    uint32_t slot;             /* slot of the last publish */
    uint64_t generation;
    char    *path;             /* where the segment is installed */
    uint64_t grown;            /* times a larger file replaced the segment */
    char     err[256];         /* why the last publish failed */
};

/* Creates a new segment able to hold payloads of payload_max bytes in slot_count slots and
 * atomically replaces path with it: a temporary file next to it (O_EXCL, mode 0640,
 * posix_fallocate), then rename.  Whatever was at path (a stale segment of a dead writer, a
 * link, a FIFO) is replaced, never followed or opened in a way that could block; a segment
 * whose writer still runs is left alone (error).  Returns 0, or -1 with a message in err. */
int  hodei_seg_create(struct hodei_seg_writer *w, const char *path, uint32_t slot_count,
                      size_t payload_max, char *err, size_t errlen);
/* Publishes payload[0..len) as the next generation; if it does not fit the slots, into a
 * larger segment that replaces the file (see Growth).  Returns 0, or -1 with w->err set
 * (only when a larger file cannot be made; nothing was published then). */
int  hodei_seg_publish(struct hodei_seg_writer *w, const void *payload, size_t len);
/* Marks the writer alive without a new snapshot. */
void hodei_seg_heartbeat(struct hodei_seg_writer *w);
size_t hodei_seg_payload_max(const struct hodei_seg_writer *w);
/* Payload room a segment made for a snapshot of len bytes gets: half again, in whole pages
 * of slot. */
size_t hodei_seg_room(size_t len);
/* Unmaps; the file stays, consistent, for readers to find stale. */
void hodei_seg_close(struct hodei_seg_writer *w);

/* ---- reader (any process; one thread per reader) --------------------------------------- */

/* Where hodei_seg_read() calls the test hook: between the steps a writer may interleave. */
enum hodei_seg_step {
    HODEI_SEG_STEP_SEQ,        /* the slot's seq and length are read, the payload is not */
    HODEI_SEG_STEP_COPIED      /* the payload is copied, seq is not read again yet */
};

struct hodei_seg_reader {
    int      fd;               /* valid while has_file */
    int      has_file;
    /* copied and checked at open: the only source of offsets and sizes */
    uint64_t size;
    uint64_t slot_size;
    uint32_t slot_count;
    uint64_t birth_id;
    double   start_time;
    /* from the last header read that passed its checks; heartbeat_ns 0: none */
    uint64_t published;
    int64_t  heartbeat_ns;
    /* private, 64-aligned: the slot header from its generation on (64 bytes), then the
     * payload at copy; kept across opens, grown as needed */
    unsigned char *slot_copy;
    void    *copy;
    size_t   copy_cap;         /* payload bytes it holds */
    size_t   last_len;         /* the last snapshot's length: how much to copy at first */
    uint64_t retries;          /* torn reads retried, for tests and benchmarks */
    char     detail[160];      /* what *why points at when the status needs more words */
    /* tests only: called at each step to force an interleaving; NULL otherwise */
    void   (*hook)(struct hodei_seg_reader *r, enum hodei_seg_step step, void *arg);
    void    *hook_arg;
};

/* A reader with no file and no buffer.  (A zeroed struct is one too.) */
void hodei_seg_reader_init(struct hodei_seg_reader *r);
/* Opens path (closing any file open before) and checks type, mode, size, magic, version
 * and geometry. */
enum hodei_seg_status hodei_seg_open(struct hodei_seg_reader *r, const char *path);

struct hodei_snapshot;
/* Copies one consistent snapshot of the open file into r->copy and validates it into *snap,
 * which stays valid until the reader's next open, read, load or free.  *generation (may be
 * NULL) receives its generation; *why a detail for BAD_PAYLOAD and BAD_VERSION (the version
 * found), valid as long as *snap. */
enum hodei_seg_status hodei_seg_read(struct hodei_seg_reader *r, struct hodei_snapshot *snap,
                                     uint64_t *generation, const char **why);
/* One scrape: open, read, close the file.  A file replaced since (daemon restart, growth)
 * is found by the next load; nothing is held open between loads.  *why as for
 * hodei_seg_read(), for a failed open too. */
enum hodei_seg_status hodei_seg_load(struct hodei_seg_reader *r, const char *path,
                                     struct hodei_snapshot *snap, uint64_t *generation,
                                     const char **why);
/* Closes the file; the buffer stays for the next open. */
void hodei_seg_reader_close(struct hodei_seg_reader *r);
/* Closes the file and frees the buffer. */
void hodei_seg_reader_free(struct hodei_seg_reader *r);

/* Seconds since the writer's last publish or tick as of the last header read (may be
 * negative on clock steps); NaN when no header has been read since the last open. */
double hodei_seg_age(const struct hodei_seg_reader *r);
double hodei_seg_start_time(const struct hodei_seg_reader *r);

#endif
