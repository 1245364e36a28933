/*
 * shm_vandal PATH — does to the segment at PATH everything that must not hurt a reader, in a
 * loop, until SIGTERM: publishes as a writer would (and laps readers), truncates the file and
 * grows it back, rewrites its geometry in place, empties it, grows the segment into a larger
 * file, and puts a FIFO, a symbolic link, a world-writable file and a directory at the path.
 * Each state lasts a moment, so that readers meet every one of them, at every step of their
 * copy.  On SIGTERM it removes what it made and prints how many rounds it did.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hodei_fill.h"
#include "hodei_segment.h"
#include "hodei_snapshot.h"

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
    (void) sig;
    stop = 1;
}

/* A moment in a state: long enough for some scrapes, short enough for many states. */
static void dwell(void)
{
    usleep(2000);
}

static void *payload;
static size_t payload_cap;

static size_t fill(unsigned tenants, unsigned workers, uint64_t seed)
{
    struct hodei_fill_params p = HODEI_FILL_DEFAULTS;
    p.tenants = tenants;
    p.workers = workers;
    p.seed = seed;
    return hodei_fill_build(payload, payload_cap, &p);
}

static void must(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "shm_vandal: %s: %s\n", what, strerror(errno));
        exit(1);
    }
}

/* A new segment at path with room for len bytes. */
static void create(struct hodei_seg_writer *w, const char *path, size_t len)
{
    char err[256];
    if (hodei_seg_create(w, path, 3, len, err, sizeof(err)) != 0) {
        fprintf(stderr, "shm_vandal: %s\n", err);
        exit(1);
    }
}

/* Clears the path of whatever a previous state left there. */
static void clear(const char *path)
{
    if (unlink(path) != 0 && errno == EISDIR)
        rmdir(path);
    rmdir(path);
}

int main(int argc, char **argv)
{
    struct hodei_seg_writer w;
    unsigned long rounds = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: shm_vandal PATH\n");
        return 2;
    }
    const char *path = argv[1];
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    payload_cap = 4 << 20;
    payload = aligned_alloc(64, payload_cap);
    must(payload != NULL, "memory");

    while (!stop) {
        rounds++;
        /* a writer: a small segment, published to and lapped */
        clear(path);
        create(&w, path, fill(3, 4, rounds));
        for (int i = 0; i < 50 && !stop; i++) {
            must(hodei_seg_publish(&w, payload, fill(3, 4, rounds + i)) == 0, "publish");
            if (i % 10 == 0)
                dwell();
        }
        /* truncated under the readers, then grown back with zeros */
        must(ftruncate(w.fd, (off_t) w.size / 2) == 0, "truncate");
        dwell();
        must(ftruncate(w.fd, (off_t) w.size) == 0, "regrow");
        dwell();
        /* published into again, then its geometry rewritten in place */
        must(hodei_seg_publish(&w, payload, fill(3, 4, rounds)) == 0, "publish");
        dwell();
        struct hodei_seg_header saved = *w.hdr;
        w.hdr->slot_count = HODEI_SEG_MAX_SLOTS;
        w.hdr->slot_size *= 64;
        w.hdr->segment_size = HODEI_SEG_HDR_SIZE + w.hdr->slot_count * w.hdr->slot_size;
        dwell();
        w.hdr->slot_size = saved.slot_size / 2 & ~(uint64_t) 63;
        dwell();
        *w.hdr = saved;
        /* a snapshot that outgrows the slots: a larger file replaces the segment */
        must(hodei_seg_publish(&w, payload, fill(40, 300, rounds)) == 0, "grow");
        dwell();
        /* emptied, then a few bytes */
        must(ftruncate(w.fd, 0) == 0, "truncate to 0");
        dwell();
        must(ftruncate(w.fd, 64) == 0, "truncate to 64");
        dwell();
        hodei_seg_close(&w);
        /* things a segment is not */
        clear(path);
        must(mkfifo(path, 0666) == 0, "mkfifo");
        dwell();
        clear(path);
        must(symlink("/dev/zero", path) == 0, "symlink");
        dwell();
        clear(path);
        must(mkdir(path, 0700) == 0, "mkdir");
        dwell();
        clear(path);
        size_t len = fill(3, 4, rounds);
        create(&w, path, len);
        must(hodei_seg_publish(&w, payload, len) == 0, "publish");
        must(chmod(path, 0666) == 0, "chmod");
        dwell();
        hodei_seg_close(&w);
    }
    clear(path);
    printf("%lu rounds\n", rounds);
    return 0;
}
