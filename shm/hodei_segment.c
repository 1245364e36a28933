/* hodei_segment.c — segment creation and growth, the writer's publish and the reader's
 * copy-and-validate (protocol: hodei_segment.h, DESIGN §3). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE                 /* mkostemp; the nginx build compiles this file too */
#endif
#include "hodei_segment.h"
#include "hodei_snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <urcu/arch.h>
#include <urcu/system.h>
#include <urcu/uatomic.h>

_Static_assert(sizeof(struct hodei_seg_header) == HODEI_SEG_HDR_SIZE, "header layout");
_Static_assert(sizeof(struct hodei_seg_slot) == HODEI_SEG_SLOT_HDR, "slot header layout");

static const char *const status_text[HODEI_SEG_STATUS_COUNT] = {
    [HODEI_SEG_OK] = "ok",
    [HODEI_SEG_MISSING] = "segment file does not exist",
    [HODEI_SEG_IO] = "segment file cannot be opened or read",
    [HODEI_SEG_TOO_SMALL] = "segment file is shorter than its header",
    [HODEI_SEG_BAD_MAGIC] = "segment magic is wrong (not a Hodei segment)",
    [HODEI_SEG_BAD_VERSION] = "segment layout version is not supported",
    [HODEI_SEG_BAD_GEOMETRY] = "segment sizes or slot count are inconsistent",
    [HODEI_SEG_EMPTY] = "segment has no published snapshot yet",
    [HODEI_SEG_BAD_SLOT] = "published slot index is out of range",
    [HODEI_SEG_BAD_LENGTH] = "snapshot length exceeds its slot",
    [HODEI_SEG_BUSY] = "writer kept rewriting the slot; no consistent copy",
    [HODEI_SEG_BAD_PAYLOAD] = "snapshot payload failed validation",
    [HODEI_SEG_NOT_REGULAR] =
        "segment path is not a regular file (a link, FIFO, directory or device)",
    [HODEI_SEG_BAD_MODE] = "segment file is writable by others",
    [HODEI_SEG_CHANGED] = "segment file was truncated or rewritten while being read",
};

const char *hodei_seg_strerror(enum hodei_seg_status st)
{
    return (unsigned) st < HODEI_SEG_STATUS_COUNT ? status_text[st] : "unknown segment status";
}

/* Opens path read-only, without following a symbolic link or blocking on a FIFO, and keeps
 * it only if it is a regular file. */
static enum hodei_seg_status open_regular(const char *path, int *fd_out, struct stat *st)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return HODEI_SEG_MISSING;
        /* ELOOP: a symbolic link; ENXIO: a socket; ENODEV: a device without a driver */
        return errno == ELOOP || errno == ENXIO || errno == ENODEV ? HODEI_SEG_NOT_REGULAR
                                                                   : HODEI_SEG_IO;
    }
    if (fstat(fd, st) != 0) {
        close(fd);
        return HODEI_SEG_IO;
    }
    if (!S_ISREG(st->st_mode)) {
        close(fd);
        return HODEI_SEG_NOT_REGULAR;
    }
    *fd_out = fd;
    return HODEI_SEG_OK;
}

/* Reads len bytes at off; -1 if the file ends first (it was truncated) or reading fails. */
static int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t) off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t) n;
        off += (uint64_t) n;
    }
    return 0;
}

static enum hodei_seg_status check_header(const struct hodei_seg_header *h, uint64_t file_size)
{
    if (h->magic != HODEI_SEG_MAGIC)
        return HODEI_SEG_BAD_MAGIC;
    if (h->version != HODEI_SEG_VERSION)
        return HODEI_SEG_BAD_VERSION;
    if (h->slot_count < HODEI_SEG_MIN_SLOTS || h->slot_count > HODEI_SEG_MAX_SLOTS
        || h->slot_size <= HODEI_SEG_SLOT_HDR || h->slot_size % HODEI_SEG_LINE
        || h->slot_size - HODEI_SEG_SLOT_HDR > UINT32_MAX || h->slot_size > file_size
        || h->segment_size != file_size
        || h->segment_size != HODEI_SEG_HDR_SIZE + (uint64_t) h->slot_count * h->slot_size)
        return HODEI_SEG_BAD_GEOMETRY;
    return HODEI_SEG_OK;
}

/* ---- writer --------------------------------------------------------------------------- */

static struct hodei_seg_slot *slot_at(const struct hodei_seg_writer *w, uint32_t i)
{
    return (struct hodei_seg_slot *) (w->map + HODEI_SEG_HDR_SIZE + (size_t) i * w->hdr->slot_size);
}

/* The pid of a live writer that owns the segment at path, or 0.  Two daemons replacing each
 * other's segment would leave nginx serving whichever renamed last. */
static pid_t live_owner(const char *path)
{
    struct hodei_seg_header h;
    struct stat st;
    int fd;
    if (open_regular(path, &fd, &st) != HODEI_SEG_OK)
        return 0;
    int rc = pread_full(fd, &h, sizeof(h), 0);
    close(fd);
    if (rc != 0 || h.magic != HODEI_SEG_MAGIC || h.writer_pid <= 0 || h.writer_pid == getpid())
        return 0;
    return kill((pid_t) h.writer_pid, 0) == 0 || errno == EPERM ? (pid_t) h.writer_pid : 0;
}

static size_t page_room(size_t want)
{
    size_t slot = (HODEI_SEG_SLOT_HDR + want + HODEI_SEG_PAGE - 1) & ~(size_t) (HODEI_SEG_PAGE - 1);
    return slot - HODEI_SEG_SLOT_HDR;
}

size_t hodei_seg_room(size_t len)
{
    return page_room(len + len / 2);
}

/* A new segment file beside path (name in tmp), mapped, its header written and nothing
 * published; readers find it only once it is renamed to path. */
static int prepare(struct hodei_seg_writer *w, const char *path, uint32_t slot_count,
                   size_t payload_max, uint64_t birth_id, double start_time,
                   char *tmp, size_t tmplen, char *err, size_t errlen)
{
    size_t slot_size = (HODEI_SEG_SLOT_HDR + payload_max + HODEI_SEG_LINE - 1)
                       & ~(size_t) (HODEI_SEG_LINE - 1);
    size_t size = HODEI_SEG_HDR_SIZE + slot_count * slot_size;

    memset(w, 0, sizeof(*w));
    w->fd = -1;
    if (snprintf(tmp, tmplen, "%s.XXXXXX", path) >= (int) tmplen) {
        snprintf(err, errlen, "segment path too long");
        return -1;
    }
    /* a fresh, unguessable name, created O_EXCL: nothing planted beside path is opened */
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "create %s: %s", tmp, strerror(errno));
        return -1;
    }
    fchmod(fd, 0640);                          /* independent of the umask */
    int rc = posix_fallocate(fd, 0, (off_t) size);
    if (rc != 0) {
        snprintf(err, errlen, "allocate %zu bytes for %s: %s", size, tmp, strerror(rc));
        goto fail;
    }
    unsigned char *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "mmap %s: %s", tmp, strerror(errno));
        goto fail;
    }
    struct hodei_seg_header *h = (struct hodei_seg_header *) map;
    h->version = HODEI_SEG_VERSION;
    h->slot_count = slot_count;
    h->segment_size = size;
    h->slot_size = slot_size;
    h->birth_id = birth_id;
    h->writer_pid = getpid();
    h->start_time = start_time;
    h->published = 0;                          /* generation 0: nothing published yet */
    h->heartbeat_ns = hodei_now_ns();
    cmm_smp_wmb();
    CMM_STORE_SHARED(h->magic, HODEI_SEG_MAGIC);   /* last: a reader never sees half a header */
    w->fd = fd;
    w->map = map;
    w->size = size;
    w->hdr = h;
    return 0;
fail:
    close(fd);
    unlink(tmp);
    return -1;
}

int hodei_seg_create(struct hodei_seg_writer *w, const char *path, uint32_t slot_count,
                     size_t payload_max, char *err, size_t errlen)
{
    char tmp[4096];
    uint64_t birth_id;

    memset(w, 0, sizeof(*w));
    w->fd = -1;
    if (slot_count < HODEI_SEG_MIN_SLOTS || slot_count > HODEI_SEG_MAX_SLOTS
        || payload_max == 0 || payload_max > UINT32_MAX) {
        snprintf(err, errlen, "invalid geometry: %u slots of %zu bytes", slot_count, payload_max);
        return -1;
    }
    pid_t owner = live_owner(path);
    if (owner) {
        snprintf(err, errlen, "%s belongs to a running writer (pid %ld)", path, (long) owner);
        return -1;
    }
    if (getrandom(&birth_id, sizeof(birth_id), 0) != sizeof(birth_id))
        birth_id = (uint64_t) hodei_now_ns() ^ ((uint64_t) getpid() << 32);
    if (prepare(w, path, slot_count, payload_max, birth_id, hodei_now(), tmp, sizeof(tmp),
                err, errlen) != 0)
        return -1;
    w->path = strdup(path);
    /* rename replaces whatever is at path (a link or a FIFO too) and never follows it */
    if (w->path == NULL || rename(tmp, path) != 0) {
        snprintf(err, errlen, "rename %s to %s: %s", tmp, path,
                 w->path ? strerror(errno) : "out of memory");
        unlink(tmp);
        hodei_seg_close(w);
        return -1;
    }
    return 0;
}

size_t hodei_seg_payload_max(const struct hodei_seg_writer *w)
{
    return w->hdr->slot_size - HODEI_SEG_SLOT_HDR;
}

/* The protocol's publish into the next slot of w; len fits. */
static void write_slot(struct hodei_seg_writer *w, const void *payload, size_t len)
{
    struct hodei_seg_header *h = w->hdr;
    uint32_t next = (w->slot + 1) % h->slot_count;
    struct hodei_seg_slot *s = slot_at(w, next);
    uint64_t gen = w->generation + 1;

    uint64_t seq = CMM_LOAD_SHARED(s->seq);
    CMM_STORE_SHARED(s->seq, seq + 1);         /* odd: readers of this slot retry */
    cmm_smp_wmb();
    memcpy((unsigned char *) s + HODEI_SEG_SLOT_HDR, payload, len);
    CMM_STORE_SHARED(s->length, len);
    CMM_STORE_SHARED(s->generation, gen);
    cmm_smp_wmb();
    CMM_STORE_SHARED(s->seq, seq + 2);
    /* rcu_assign_pointer() for a 64-bit word: order the slot before the switch */
    cmm_smp_wmb();
    uatomic_set(&h->published, gen << 8 | next);
    CMM_STORE_SHARED(h->heartbeat_ns, hodei_now_ns());
    w->slot = next;
    w->generation = gen;
}

/* Publishes into a larger file that then replaces the segment (see Growth). */
static int grow(struct hodei_seg_writer *w, const void *payload, size_t len)
{
    struct hodei_seg_writer next;
    char tmp[4096];
    size_t want = len + len / 2, twice = 2 * hodei_seg_payload_max(w);
    size_t room = page_room(want > twice ? want : twice);

    if (room > UINT32_MAX) {
        snprintf(w->err, sizeof(w->err), "a snapshot of %zu bytes is larger than a segment holds",
                 len);
        return -1;
    }
    if (prepare(&next, w->path, w->hdr->slot_count, room, w->hdr->birth_id, w->hdr->start_time,
                tmp, sizeof(tmp), w->err, sizeof(w->err)) != 0)
        return -1;
    next.slot = w->slot;
    next.generation = w->generation;
    write_slot(&next, payload, len);           /* published before anyone can find the file */
    if (rename(tmp, w->path) != 0) {
        snprintf(w->err, sizeof(w->err), "replace %.200s: %s", w->path, strerror(errno));
        unlink(tmp);
        hodei_seg_close(&next);
        return -1;
    }
    next.path = w->path;
    next.grown = w->grown + 1;
    w->path = NULL;
    hodei_seg_close(w);
    *w = next;
    return 0;
}

int hodei_seg_publish(struct hodei_seg_writer *w, const void *payload, size_t len)
{
    if (len > hodei_seg_payload_max(w))
        return grow(w, payload, len);
    write_slot(w, payload, len);
    return 0;
}

void hodei_seg_heartbeat(struct hodei_seg_writer *w)
{
    CMM_STORE_SHARED(w->hdr->heartbeat_ns, hodei_now_ns());
}

void hodei_seg_close(struct hodei_seg_writer *w)
{
    if (w->map)
        munmap(w->map, w->size);
    if (w->fd >= 0)
        close(w->fd);
    free(w->path);
    memset(w, 0, sizeof(*w));
    w->fd = -1;
}

/* ---- reader --------------------------------------------------------------------------- */

/* The slot header from its generation on, copied with the payload in one read. */
#define COPY_HDR (HODEI_SEG_SLOT_HDR - offsetof(struct hodei_seg_slot, generation))
_Static_assert(COPY_HDR == 64, "the payload stays 64-aligned in the private copy");

void hodei_seg_reader_init(struct hodei_seg_reader *r)
{
    memset(r, 0, sizeof(*r));
}

void hodei_seg_reader_close(struct hodei_seg_reader *r)
{
    if (r->has_file)
        close(r->fd);
    r->has_file = 0;
    r->fd = -1;
}

void hodei_seg_reader_free(struct hodei_seg_reader *r)
{
    hodei_seg_reader_close(r);
    free(r->slot_copy);
    r->slot_copy = NULL;
    r->copy = NULL;
    r->copy_cap = 0;
}

/* Says which version a segment of another layout has: a scheduler and a reader of different
 * releases. */
static enum hodei_seg_status bad_version(struct hodei_seg_reader *r, uint32_t found,
                                         const char **why)
{
    snprintf(r->detail, sizeof(r->detail),
             "the segment has version %u, this reader %u (hodei-scheduler and the reader "
             "come from different releases)", found, HODEI_SEG_VERSION);
    if (why)
        *why = r->detail;
    return HODEI_SEG_BAD_VERSION;
}

enum hodei_seg_status hodei_seg_open(struct hodei_seg_reader *r, const char *path)
{
    struct hodei_seg_header h;
    struct stat st;
    int fd;

    hodei_seg_reader_close(r);
    r->heartbeat_ns = 0;
    enum hodei_seg_status rc = open_regular(path, &fd, &st);
    if (rc != HODEI_SEG_OK)
        return rc;
    if (st.st_mode & S_IWOTH)
        rc = HODEI_SEG_BAD_MODE;
    else if ((uint64_t) st.st_size < HODEI_SEG_HDR_SIZE)
        rc = HODEI_SEG_TOO_SMALL;
    else if (pread_full(fd, &h, sizeof(h), 0) != 0)
        rc = HODEI_SEG_CHANGED;                /* shrank since fstat */
    else
        rc = check_header(&h, (uint64_t) st.st_size);
    if (rc == HODEI_SEG_BAD_VERSION)
        bad_version(r, h.version, NULL);
    size_t need = rc == HODEI_SEG_OK ? h.slot_size - HODEI_SEG_SLOT_HDR : 0;
    if (rc == HODEI_SEG_OK && r->copy_cap < need) {
        free(r->slot_copy);
        r->slot_copy = aligned_alloc(64, COPY_HDR + ((need + 63) & ~(size_t) 63));
        r->copy = r->slot_copy ? r->slot_copy + COPY_HDR : NULL;
        r->copy_cap = r->slot_copy ? need : 0;
        if (r->slot_copy == NULL)
            rc = HODEI_SEG_IO;
    }
    if (rc != HODEI_SEG_OK) {
        close(fd);
        return rc;
    }
    r->fd = fd;
    r->has_file = 1;
    r->size = h.segment_size;
    r->slot_size = h.slot_size;
    r->slot_count = h.slot_count;
    r->birth_id = h.birth_id;
    r->start_time = h.start_time;
    r->published = h.published;
    r->heartbeat_ns = h.heartbeat_ns;
    return HODEI_SEG_OK;
}

/* The file is no longer what was opened: give it up, the next open starts over. */
static enum hodei_seg_status changed(struct hodei_seg_reader *r)
{
    hodei_seg_reader_close(r);
    r->heartbeat_ns = 0;
    return HODEI_SEG_CHANGED;
}

static void step(struct hodei_seg_reader *r, enum hodei_seg_step s)
{
    if (r->hook)
        r->hook(r, s, r->hook_arg);
}

/* The header again; 0, or the status that ends the read. */
static enum hodei_seg_status reread_header(struct hodei_seg_reader *r, const char **why)
{
    struct hodei_seg_header h;
    if (pread_full(r->fd, &h, sizeof(h), 0) != 0)
        return changed(r);
    if (h.magic != HODEI_SEG_MAGIC)
        return HODEI_SEG_BAD_MAGIC;
    if (h.version != HODEI_SEG_VERSION)
        return bad_version(r, h.version, why);
    if (h.segment_size != r->size || h.slot_size != r->slot_size
        || h.slot_count != r->slot_count || h.birth_id != r->birth_id)
        return changed(r);
    r->published = h.published;
    r->heartbeat_ns = h.heartbeat_ns;
    return HODEI_SEG_OK;
}

/* hodei_seg_read(); header_fresh: the header was read just now (by the open of a load). */
static enum hodei_seg_status read_slot(struct hodei_seg_reader *r, struct hodei_snapshot *snap,
                                       uint64_t *generation, const char **why, int header_fresh)
{
    uint64_t seq, again;
    size_t room = r->slot_size - HODEI_SEG_SLOT_HDR;
    enum hodei_seg_status rc;

    *why = NULL;
    if (!r->has_file)
        return HODEI_SEG_MISSING;
    for (int tries = 0; tries < HODEI_SEG_READ_TRIES; tries++) {
        if (!(tries == 0 && header_fresh) && (rc = reread_header(r, why)) != HODEI_SEG_OK)
            return rc;
        cmm_smp_rmb();                          /* the slot's contents after the switch */
        uint64_t pub = r->published;
        if (pub == 0)
            return HODEI_SEG_EMPTY;
        uint64_t index = pub & 0xff;
        if (index >= r->slot_count)
            return HODEI_SEG_BAD_SLOT;
        uint64_t slot = HODEI_SEG_HDR_SIZE + index * r->slot_size;
        if (pread_full(r->fd, &seq, sizeof(seq), slot) != 0)
            return changed(r);
        if (seq & 1) {
            r->retries++;
            continue;
        }
        cmm_smp_rmb();
        step(r, HODEI_SEG_STEP_SEQ);
        /* generation, length and as much payload as the last snapshot had, in one read */
        size_t first = (r->last_len + HODEI_SEG_PAGE) & ~(size_t) (HODEI_SEG_PAGE - 1);
        first = first < room ? first : room;
        if (pread_full(r->fd, r->slot_copy, COPY_HDR + first, slot + HODEI_SEG_SLOT_HDR - COPY_HDR)
            != 0)
            return changed(r);
        uint64_t gen, len;
        memcpy(&gen, r->slot_copy, sizeof(gen));
        memcpy(&len, r->slot_copy + sizeof(gen), sizeof(len));
        int too_long = len > room;
        if (!too_long && len > first
            && pread_full(r->fd, (unsigned char *) r->copy + first, len - first,
                          slot + HODEI_SEG_SLOT_HDR + first) != 0)
            return changed(r);
        cmm_smp_rmb();
        step(r, HODEI_SEG_STEP_COPIED);
        if (pread_full(r->fd, &again, sizeof(again), slot) != 0)
            return changed(r);
        if (again != seq) {
            r->retries++;                      /* the writer lapped us: torn, try again */
            continue;
        }
        if (too_long)
            return HODEI_SEG_BAD_LENGTH;
        r->last_len = len;
        if (hodei_snapshot_validate(r->copy, len, snap, why) != 0)
            return HODEI_SEG_BAD_PAYLOAD;
        if (generation)
            *generation = gen;
        return HODEI_SEG_OK;
    }
    return HODEI_SEG_BUSY;
}

enum hodei_seg_status hodei_seg_read(struct hodei_seg_reader *r, struct hodei_snapshot *snap,
                                     uint64_t *generation, const char **why)
{
    return read_slot(r, snap, generation, why, 0);
}

enum hodei_seg_status hodei_seg_load(struct hodei_seg_reader *r, const char *path,
                                     struct hodei_snapshot *snap, uint64_t *generation,
                                     const char **why)
{
    enum hodei_seg_status st = hodei_seg_open(r, path);
    *why = st == HODEI_SEG_BAD_VERSION ? r->detail : NULL;
    /* the header the open just read is as recent as reading it again */
    if (st == HODEI_SEG_OK)
        st = read_slot(r, snap, generation, why, 1);
    hodei_seg_reader_close(r);
    return st;
}

double hodei_seg_age(const struct hodei_seg_reader *r)
{
    if (r->heartbeat_ns == 0)
        return NAN;
    return (double) (hodei_now_ns() - r->heartbeat_ns) / 1e9;
}

double hodei_seg_start_time(const struct hodei_seg_reader *r)
{
    return r->start_time;
}
