/*
 * shm_stress — one writer publishing as fast as it can while READERS reader processes each
 * read and check READS snapshots.  Snapshot g is built from seed g, so a reader verifies a
 * copy by rebuilding it: any byte from another generation is a torn read.  The run ends when
 * every reader has its reads (a fixed amount of work, however slow the machine), or fails at
 * a deadline far beyond any plausible run.  Prints TAP; fails on any torn or invalid read.
 *
 *   shm_stress [READS] [READERS]      (default 25,000 reads each, 4 readers)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hodei_fill.h"
#include "hodei_segment.h"
#include "hodei_snapshot.h"

/* Far beyond what the reads take on a loaded machine; reached only if something hangs. */
#define DEADLINE_SECONDS 600

struct reader_result {
    unsigned long validated, torn, invalid, busy, retries;
};

static struct hodei_fill_params params(uint64_t seed)
{
    struct hodei_fill_params p = HODEI_FILL_DEFAULTS;
    p.tenants = 20;
    p.workers = 40;
    p.seed = seed;
    return p;
}

static void run_reader(const char *path, unsigned long reads, double deadline, int out_fd)
{
    struct hodei_seg_reader r;
    struct reader_result res = { 0 };
    size_t cap = 1 << 20;
    void *expect = aligned_alloc(64, cap);

    hodei_seg_reader_init(&r);
    if (hodei_seg_open(&r, path) != HODEI_SEG_OK)
        _exit(3);
    while (res.validated + res.torn + res.invalid < reads && hodei_now() < deadline) {
        struct hodei_snapshot snap;
        const char *why;
        uint64_t gen;
        enum hodei_seg_status st = hodei_seg_read(&r, &snap, &gen, &why);
        if (st == HODEI_SEG_BUSY) {
            res.busy++;
            continue;
        }
        if (st != HODEI_SEG_OK) {
            res.invalid++;
            continue;
        }
        struct hodei_fill_params p = params(gen);
        size_t len = hodei_fill_build(expect, cap, &p);
        if (len != snap.len || memcmp(expect, snap.base, len) != 0)
            res.torn++;
        else
            res.validated++;
    }
    res.retries = r.retries;
    if (write(out_fd, &res, sizeof(res)) != sizeof(res))
        _exit(4);
    _exit(0);
}

int main(int argc, char **argv)
{
    unsigned long reads = argc > 1 ? strtoul(argv[1], NULL, 10) : 25000;
    int readers = argc > 2 ? atoi(argv[2]) : 4;
    char path[128], err[256];
    struct hodei_seg_writer w;
    size_t cap = 1 << 20;
    void *buf = aligned_alloc(64, cap);
    int fds[2];
    pid_t pids[64];

    if (readers < 1 || readers > 64 || reads == 0)
        return 2;
    snprintf(path, sizeof(path), "/tmp/hodei-stress-%ld.seg", (long) getpid());
    if (hodei_seg_create(&w, path, HODEI_SEG_MIN_SLOTS, cap, err, sizeof(err)) != 0) {
        printf("Bail out! %s\n", err);
        return 1;
    }
    struct hodei_fill_params p = params(1);
    hodei_seg_publish(&w, buf, hodei_fill_build(buf, cap, &p));   /* generation 1 = seed 1 */
    if (pipe(fds) != 0)
        return 1;
    double started = hodei_now(), deadline = started + DEADLINE_SECONDS;
    for (int i = 0; i < readers; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            run_reader(path, reads, deadline, fds[1]);
    }
    /* publish until every reader is done */
    unsigned long publishes = 1;
    int running = readers, failed_readers = 0;
    while (running > 0) {
        p = params(w.generation + 1);
        hodei_seg_publish(&w, buf, hodei_fill_build(buf, cap, &p));
        publishes++;
        int status;
        pid_t done = waitpid(-1, &status, WNOHANG);
        if (done > 0) {
            running--;
            failed_readers += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
    }
    double seconds = hodei_now() - started;
    struct reader_result total = { 0 };
    for (int i = 0; i < readers; i++) {
        struct reader_result res;
        if (read(fds[0], &res, sizeof(res)) == sizeof(res)) {
            total.validated += res.validated;
            total.torn += res.torn;
            total.invalid += res.invalid;
            total.busy += res.busy;
            total.retries += res.retries;
        }
    }
    hodei_seg_close(&w);
    unlink(path);

    unsigned long want = reads * (unsigned long) readers;
    printf("1..3\n");
    printf("# %lu publishes, %d reader processes, %.1f s\n", publishes, readers, seconds);
    printf("# validated reads: %lu, torn reads: %lu, invalid: %lu, retried copies: %lu, "
           "gave up (busy): %lu\n", total.validated, total.torn, total.invalid, total.retries,
           total.busy);
    printf("%s 1 - every reader process ran to the end\n", failed_readers ? "not ok" : "ok");
    printf("%s 2 - no torn or invalid read\n", total.torn || total.invalid ? "not ok" : "ok");
    printf("%s 3 - all %lu reads were made and checked (deadline %d s)\n",
           total.validated == want ? "ok" : "not ok", want, DEADLINE_SECONDS);
    return failed_readers || total.torn || total.invalid || total.validated != want;
}
