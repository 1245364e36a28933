/* hodei_segment.c — segment creation, the writer's publish and the reader's copy-and-validate
 * (protocol: hodei_segment.h, DESIGN §3). */
#include "hodei_segment.h"
#include "hodei_snapshot.h"

#include <errno.h>
#include <fcntl.h>
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
    [HODEI_SEG_IO] = "segment file cannot be opened or mapped",
    [HODEI_SEG_TOO_SMALL] = "segment file is shorter than its header",
    [HODEI_SEG_BAD_MAGIC] = "segment magic is wrong (not a Hodei segment)",
    [HODEI_SEG_BAD_VERSION] = "segment layout version is not supported",
    [HODEI_SEG_BAD_GEOMETRY] = "segment sizes or slot count are inconsistent",
    [HODEI_SEG_EMPTY] = "segment has no published snapshot yet",
    [HODEI_SEG_BAD_SLOT] = "published slot index is out of range",
    [HODEI_SEG_BAD_LENGTH] = "snapshot length exceeds its slot",
    [HODEI_SEG_BUSY] = "writer kept rewriting the slot; no consistent copy",
    [HODEI_SEG_BAD_PAYLOAD] = "snapshot payload failed validation",
};

const char *hodei_seg_strerror(enum hodei_seg_status st)
{
    return (unsigned) st < HODEI_SEG_STATUS_COUNT ? status_text[st] : "unknown segment status";
}

static struct hodei_seg_slot *slot_at(unsigned char *map, const struct hodei_seg_header *h,
                                      uint32_t i)
{
    return (struct hodei_seg_slot *) (map + HODEI_SEG_HDR_SIZE + (size_t) i * h->slot_size);
}

/* ---- writer --------------------------------------------------------------------------- */

/* The pid of a live writer that owns the segment at path, or 0.  Two daemons replacing each
 * other's segment would leave nginx serving whichever renamed last. */
static pid_t live_owner(const char *path)
{
    struct hodei_seg_header h;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, &h, sizeof(h));
    close(fd);
    if (n != (ssize_t) sizeof(h) || h.magic != HODEI_SEG_MAGIC || h.writer_pid <= 0
        || h.writer_pid == getpid())
        return 0;
    return kill((pid_t) h.writer_pid, 0) == 0 || errno == EPERM ? (pid_t) h.writer_pid : 0;
}

int hodei_seg_create(struct hodei_seg_writer *w, const char *path, uint32_t slot_count,
                     size_t payload_max, char *err, size_t errlen)
{
    memset(w, 0, sizeof(*w));
    w->fd = -1;
    if (slot_count < HODEI_SEG_MIN_SLOTS || slot_count > HODEI_SEG_MAX_SLOTS
        || payload_max == 0 || payload_max > UINT32_MAX) {
        snprintf(err, errlen, "invalid geometry: %u slots of %zu bytes", slot_count, payload_max);
        return -1;
    }
    size_t slot_size = (HODEI_SEG_SLOT_HDR + payload_max + HODEI_SEG_LINE - 1)
                       & ~(size_t) (HODEI_SEG_LINE - 1);
    size_t size = HODEI_SEG_HDR_SIZE + slot_count * slot_size;
    pid_t owner = live_owner(path);
    if (owner) {
        snprintf(err, errlen, "%s belongs to a running writer (pid %ld)", path, (long) owner);
        return -1;
    }

    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long) getpid()) >= (int) sizeof(tmp)) {
        snprintf(err, errlen, "segment path too long");
        return -1;
    }
    unlink(tmp);
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
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
    if (getrandom(&h->birth_id, sizeof(h->birth_id), 0) != sizeof(h->birth_id))
        h->birth_id = (uint64_t) hodei_now_ns() ^ ((uint64_t) getpid() << 32);
    h->writer_pid = getpid();
    h->start_time = hodei_now();
    h->published = 0;                          /* generation 0: nothing published yet */
    h->heartbeat_ns = hodei_now_ns();
    cmm_smp_wmb();
    CMM_STORE_SHARED(h->magic, HODEI_SEG_MAGIC);   /* last: a reader never sees half a header */

    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "rename %s to %s: %s", tmp, path, strerror(errno));
        munmap(map, size);
        goto fail;
    }
    w->fd = fd;
    w->map = map;
    w->size = size;
    w->hdr = h;
    w->slot = 0;
    w->generation = 0;
    return 0;
fail:
    close(fd);
    unlink(tmp);
    return -1;
}

size_t hodei_seg_payload_max(const struct hodei_seg_writer *w)
{
    return w->hdr->slot_size - HODEI_SEG_SLOT_HDR;
}

int hodei_seg_publish(struct hodei_seg_writer *w, const void *payload, size_t len)
{
    struct hodei_seg_header *h = w->hdr;
    if (len > hodei_seg_payload_max(w))
        return -1;
    uint32_t next = (w->slot + 1) % h->slot_count;
    struct hodei_seg_slot *s = slot_at(w->map, h, next);
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
    memset(w, 0, sizeof(*w));
    w->fd = -1;
}

/* ---- reader --------------------------------------------------------------------------- */

static enum hodei_seg_status check_header(const struct hodei_seg_header *h, size_t file_size)
{
    if (h->magic != HODEI_SEG_MAGIC)
        return HODEI_SEG_BAD_MAGIC;
    if (h->version != HODEI_SEG_VERSION)
        return HODEI_SEG_BAD_VERSION;
    if (h->slot_count < HODEI_SEG_MIN_SLOTS || h->slot_count > HODEI_SEG_MAX_SLOTS
        || h->slot_size <= HODEI_SEG_SLOT_HDR || h->slot_size % HODEI_SEG_LINE
        || h->slot_size - HODEI_SEG_SLOT_HDR > UINT32_MAX
        || h->segment_size != file_size
        || h->segment_size != HODEI_SEG_HDR_SIZE + (uint64_t) h->slot_count * h->slot_size)
        return HODEI_SEG_BAD_GEOMETRY;
    return HODEI_SEG_OK;
}

enum hodei_seg_status hodei_seg_open(struct hodei_seg_reader *r, const char *path)
{
    struct stat st;
    memset(r, 0, sizeof(*r));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? HODEI_SEG_MISSING : HODEI_SEG_IO;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return HODEI_SEG_IO;
    }
    if ((size_t) st.st_size < HODEI_SEG_HDR_SIZE) {
        close(fd);
        return HODEI_SEG_TOO_SMALL;
    }
    void *map = mmap(NULL, (size_t) st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return HODEI_SEG_IO;
    const struct hodei_seg_header *h = map;
    enum hodei_seg_status rc = check_header(h, (size_t) st.st_size);
    if (rc == HODEI_SEG_OK) {
        r->copy_cap = h->slot_size - HODEI_SEG_SLOT_HDR;
        r->copy = aligned_alloc(64, (r->copy_cap + 63) & ~(size_t) 63);
        if (r->copy == NULL)
            rc = HODEI_SEG_IO;
    }
    if (rc != HODEI_SEG_OK) {
        munmap(map, (size_t) st.st_size);
        memset(r, 0, sizeof(*r));
        return rc;
    }
    r->map = map;
    r->size = (size_t) st.st_size;
    r->dev = st.st_dev;
    r->ino = st.st_ino;
    r->hdr = h;
    r->birth_id = h->birth_id;
    return HODEI_SEG_OK;
}

void hodei_seg_unmap(struct hodei_seg_reader *r)
{
    if (r->map)
        munmap((void *) r->map, r->size);
    free(r->copy);
    memset(r, 0, sizeof(*r));
}

int hodei_seg_replaced(const struct hodei_seg_reader *r, const char *path)
{
    struct stat st;
    if (r->map == NULL)
        return 1;
    if (stat(path, &st) != 0 || st.st_ino != r->ino || st.st_dev != r->dev
        || (size_t) st.st_size != r->size)
        return 1;
    return CMM_LOAD_SHARED(r->hdr->birth_id) != r->birth_id;
}

enum hodei_seg_status hodei_seg_read(struct hodei_seg_reader *r, struct hodei_snapshot *snap,
                                     uint64_t *generation, const char **why)
{
    const struct hodei_seg_header *h = r->hdr;
    *why = NULL;
    if (h == NULL)
        return HODEI_SEG_MISSING;
    /* the mapping is shared: re-check what a rewrite in place could have broken */
    enum hodei_seg_status rc = check_header(h, r->size);
    if (rc != HODEI_SEG_OK)
        return rc;

    for (int tries = 0; tries < HODEI_SEG_READ_TRIES; tries++) {
        uint64_t pub = uatomic_read(&h->published);
        cmm_smp_rmb();                          /* the slot's contents after the switch */
        if (pub == 0)
            return HODEI_SEG_EMPTY;
        uint64_t index = pub & 0xff;
        if (index >= h->slot_count)
            return HODEI_SEG_BAD_SLOT;
        const struct hodei_seg_slot *s =
            slot_at((unsigned char *) r->map, h, (uint32_t) index);
        uint64_t seq = CMM_LOAD_SHARED(s->seq);
        if (seq & 1) {
            r->retries++;
            continue;
        }
        cmm_smp_rmb();
        uint64_t len = CMM_LOAD_SHARED(s->length);
        uint64_t gen = CMM_LOAD_SHARED(s->generation);
        int too_long = len > r->copy_cap;
        if (!too_long)
            memcpy(r->copy, (const unsigned char *) s + HODEI_SEG_SLOT_HDR, len);
        cmm_smp_rmb();
        if (CMM_LOAD_SHARED(s->seq) != seq) {
            r->retries++;                      /* the writer lapped us: torn, try again */
            continue;
        }
        if (too_long)
            return HODEI_SEG_BAD_LENGTH;
        if (hodei_snapshot_validate(r->copy, len, snap, why) != 0)
            return HODEI_SEG_BAD_PAYLOAD;
        if (generation)
            *generation = gen;
        return HODEI_SEG_OK;
    }
    return HODEI_SEG_BUSY;
}

double hodei_seg_age(const struct hodei_seg_reader *r)
{
    return (double) (hodei_now_ns() - CMM_LOAD_SHARED(r->hdr->heartbeat_ns)) / 1e9;
}

double hodei_seg_start_time(const struct hodei_seg_reader *r)
{
    return r->hdr->start_time;
}
