/* Unit tests of shm/: publish/read, corruption, escaping, numbers, histograms, negotiation. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "hodei_fill.h"
#include "hodei_render.h"
#include "hodei_segment.h"
#include "hodei_snapshot.h"
#include "shm_test_util.h"

static char seg_path[256];

struct fixture {
    struct hodei_seg_writer w;
    struct hodei_seg_reader r;
    void  *payload;
    size_t len, cap;
};

static size_t build_fill(void *buf, size_t cap, unsigned tenants, unsigned workers, uint64_t seed)
{
    struct hodei_fill_params p = HODEI_FILL_DEFAULTS;
    p.tenants = tenants;
    p.workers = workers;
    p.seed = seed;
    return hodei_fill_build(buf, cap, &p);
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    char err[256];
    snprintf(seg_path, sizeof(seg_path), "/tmp/hodei-unit-%ld.seg", (long) getpid());
    fx->cap = 1 << 20;
    fx->payload = aligned_alloc(64, fx->cap);
    fx->len = build_fill(fx->payload, fx->cap, 3, 4, 7);
    assert_true(fx->len > 0);
    hodei_seg_reader_init(&fx->r);
    if (hodei_seg_create(&fx->w, seg_path, 3, fx->cap, err, sizeof(err)) != 0)
        fail_msg("create %s: %s", seg_path, err);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    hodei_seg_reader_free(&fx->r);
    hodei_seg_close(&fx->w);
    unlink(seg_path);
    free(fx->payload);
    free(fx);
    return 0;
}

static enum hodei_seg_status read_once(struct fixture *fx, struct hodei_snapshot *snap,
                                       const char **why)
{
    return hodei_seg_load(&fx->r, seg_path, snap, NULL, why);
}

/* Number of files in seg_path's directory whose name starts with seg_path's: the segment
 * and any temporary file a create or a growth left behind. */
static int files_like_segment(void)
{
    char pattern[300];
    snprintf(pattern, sizeof(pattern), "ls -d %s* 2>/dev/null | wc -l", seg_path);
    FILE *f = popen(pattern, "r");
    int n = -1;
    if (f == NULL || fscanf(f, "%d", &n) != 1)
        n = -1;
    if (f)
        pclose(f);
    return n;
}

/* ---- publish and read ----------------------------------------------------------------- */

static void test_round_trip(void **state)
{
    struct fixture *fx = *state;
    struct hodei_snapshot snap;
    const char *why;
    uint64_t gen = 0;

    assert_int_equal(read_once(fx, &snap, &why), HODEI_SEG_EMPTY);
    assert_int_equal(hodei_seg_open(&fx->r, seg_path), HODEI_SEG_OK);
    for (int i = 0; i < 5; i++) {                  /* wraps the 3 slots */
        fx->len = build_fill(fx->payload, fx->cap, 3, 4, 100 + i);
        assert_int_equal(hodei_seg_publish(&fx->w, fx->payload, fx->len), 0);
        assert_int_equal(hodei_seg_read(&fx->r, &snap, &gen, &why), HODEI_SEG_OK);
        assert_int_equal(gen, i + 1);
        assert_int_equal(snap.len, fx->len);
        assert_memory_equal(snap.base, fx->payload, fx->len);
    }
    assert_non_null(snap.family[HODEI_F_JOBS_SCHEDULED_TOTAL]);
    assert_int_equal(snap.family[HODEI_F_JOBS_SCHEDULED_TOTAL]->nseries, 3);
    assert_int_equal(snap.family[HODEI_F_CPU_USAGE_PERCENT]->nseries, 4);
    assert_null(snap.family[HODEI_F_HTTP_REQUESTS_TOTAL]);   /* nginx's, never the daemon's */
    assert_true(hodei_seg_age(&fx->r) >= 0 && hodei_seg_age(&fx->r) < 60);
    assert_int_equal(fx->r.retries, 0);
}

/* A snapshot larger than the slots: published into a larger file that replaces the segment,
 * the next generation, the same birth id; a reader still holding the old file reads that
 * file's last snapshot whole; nothing is left beside the segment. */
static void test_outgrown_segment_is_replaced(void **state)
{
    struct fixture *fx = *state;
    struct hodei_seg_reader old;
    struct hodei_snapshot snap;
    const char *why;
    uint64_t gen;
    struct stat before, after;
    char err[256];

    hodei_seg_close(&fx->w);
    assert_int_equal(hodei_seg_create(&fx->w, seg_path, 3, fx->len, err, sizeof(err)), 0);
    assert_int_equal(hodei_seg_publish(&fx->w, fx->payload, fx->len), 0);
    assert_int_equal(stat(seg_path, &before), 0);
    hodei_seg_reader_init(&old);
    assert_int_equal(hodei_seg_open(&old, seg_path), HODEI_SEG_OK);
    uint64_t birth = old.birth_id;

    void *big = aligned_alloc(64, fx->cap);
    size_t big_len = build_fill(big, fx->cap, 50, 400, 8);
    assert_true(big_len > hodei_seg_payload_max(&fx->w));
    assert_int_equal(hodei_seg_publish(&fx->w, big, big_len), 0);
    assert_int_equal(fx->w.grown, 1);
    assert_true(hodei_seg_payload_max(&fx->w) >= big_len + big_len / 2);

    assert_int_equal(stat(seg_path, &after), 0);
    assert_true(after.st_ino != before.st_ino);
    assert_true(after.st_size > before.st_size);
    assert_int_equal(files_like_segment(), 1);
    assert_int_equal(hodei_seg_load(&fx->r, seg_path, &snap, &gen, &why), HODEI_SEG_OK);
    assert_int_equal(gen, 2);
    assert_int_equal(fx->r.birth_id, birth);
    assert_memory_equal(snap.base, big, big_len);
    /* the old file, unlinked, still holds generation 1 for whoever had it open */
    assert_int_equal(hodei_seg_read(&old, &snap, &gen, &why), HODEI_SEG_OK);
    assert_int_equal(gen, 1);
    assert_memory_equal(snap.base, fx->payload, fx->len);
    hodei_seg_reader_free(&old);

    /* smaller snapshots go on in the larger file: it never shrinks under its writer */
    assert_int_equal(hodei_seg_publish(&fx->w, fx->payload, fx->len), 0);
    assert_int_equal(hodei_seg_load(&fx->r, seg_path, &snap, &gen, &why), HODEI_SEG_OK);
    assert_int_equal(gen, 3);
    assert_int_equal(fx->w.grown, 1);
    free(big);
}

/* Growth that cannot happen publishes nothing and says why; the segment keeps its last
 * snapshot and nothing is left beside it.  (A file size limit makes the larger file
 * impossible, for root too.) */
static void test_failed_growth_loses_nothing(void **state)
{
    struct fixture *fx = *state;
    struct hodei_snapshot snap;
    const char *why;
    uint64_t gen;
    char err[256];
    struct rlimit saved, small;

    hodei_seg_close(&fx->w);
    assert_int_equal(hodei_seg_create(&fx->w, seg_path, 3, fx->len, err, sizeof(err)), 0);
    assert_int_equal(hodei_seg_publish(&fx->w, fx->payload, fx->len), 0);
    void *big = aligned_alloc(64, fx->cap);
    size_t big_len = build_fill(big, fx->cap, 50, 400, 8);

    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
    small = saved;
    small.rlim_cur = (rlim_t) fx->w.size;
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    int rc = hodei_seg_publish(&fx->w, big, big_len);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, SIG_DFL);

    assert_int_equal(rc, -1);
    if (strstr(fx->w.err, "allocate") == NULL)
        fail_msg("unexpected reason: %s", fx->w.err);
    assert_int_equal(fx->w.grown, 0);
    assert_int_equal(files_like_segment(), 1);
    assert_int_equal(hodei_seg_load(&fx->r, seg_path, &snap, &gen, &why), HODEI_SEG_OK);
    assert_int_equal(gen, 1);
    /* and the same publish succeeds once the file may grow */
    assert_int_equal(hodei_seg_publish(&fx->w, big, big_len), 0);
    assert_int_equal(hodei_seg_load(&fx->r, seg_path, &snap, &gen, &why), HODEI_SEG_OK);
    assert_int_equal(gen, 2);
    assert_memory_equal(snap.base, big, big_len);
    free(big);
}

static void test_restart_is_noticed(void **state)
{
    struct fixture *fx = *state;
    struct hodei_snapshot snap;
    const char *why;
    struct hodei_seg_writer w2;
    char err[256];
    uint64_t gen;

    assert_int_equal(hodei_seg_publish(&fx->w, fx->payload, fx->len), 0);
    assert_int_equal(read_once(fx, &snap, &why), HODEI_SEG_OK);
    uint64_t birth = fx->r.birth_id;
    assert_int_equal(hodei_seg_create(&w2, seg_path, 4, fx->cap, err, sizeof(err)), 0);
    assert_int_equal(read_once(fx, &snap, &why), HODEI_SEG_EMPTY);
    assert_true(fx->r.birth_id != birth);
    assert_int_equal(hodei_seg_publish(&w2, fx->payload, fx->len), 0);
    assert_int_equal(hodei_seg_load(&fx->r, seg_path, &snap, &gen, &why), HODEI_SEG_OK);
    assert_int_equal(gen, 1);
    assert_int_equal(fx->r.slot_count, 4);
    hodei_seg_close(&w2);
}

/* A second daemon must not replace a live daemon's segment. */
static void test_live_writer_is_not_replaced(void **state)
{
    struct fixture *fx = *state;
    struct hodei_seg_writer w2;
    char err[256], path[300];
    int ready[2];
    snprintf(path, sizeof(path), "%s.live", seg_path);
    assert_int_equal(pipe(ready), 0);
    pid_t child = fork();
    if (child == 0) {
        struct hodei_seg_writer w;
        char e[256];
        int rc = hodei_seg_create(&w, path, 3, 4096, e, sizeof(e));
        if (write(ready[1], &rc, sizeof(rc)) != sizeof(rc))
            _exit(1);
        pause();
        _exit(0);
    }
    int rc = -1;
    assert_int_equal(read(ready[0], &rc, sizeof(rc)), sizeof(rc));
    assert_int_equal(rc, 0);
    assert_int_equal(hodei_seg_create(&w2, path, 3, fx->cap, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "belongs to a running writer"));
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    /* its writer is dead: the stale segment is replaced */
    assert_int_equal(hodei_seg_create(&w2, path, 3, fx->cap, err, sizeof(err)), 0);
    hodei_seg_close(&w2);
    unlink(path);
    close(ready[0]);
    close(ready[1]);
}

static void test_missing_segment(void **state)
{
    struct hodei_seg_reader r;
    struct hodei_snapshot snap;
    const char *why;
    (void) state;
    hodei_seg_reader_init(&r);
    assert_int_equal(hodei_seg_load(&r, "/nonexistent/hodei.seg", &snap, NULL, &why),
                     HODEI_SEG_MISSING);
    assert_true(isnan(hodei_seg_age(&r)));
    assert_string_equal(hodei_seg_strerror(HODEI_SEG_MISSING), "segment file does not exist");
}

/* ---- what may be at the path ---------------------------------------------------------- */

/* A reader that blocks would hang nginx: a test that hangs is killed here and fails. */
static void watchdog(unsigned seconds)
{
    signal(SIGALRM, SIG_DFL);
    alarm(seconds);
}

static void test_reader_refuses_what_is_not_a_segment(void **state)
{
    struct fixture *fx = *state;
    struct hodei_snapshot snap;
    const char *why;
    char other[300];

    assert_int_equal(hodei_seg_publish(&fx->w, fx->payload, fx->len), 0);
    assert_int_equal(read_once(fx, &snap, &why), HODEI_SEG_OK);
    watchdog(20);

    /* a FIFO nobody writes: opening it for reading would block */
    unlink(seg_path);
    assert_int_equal(mkfifo(seg_path, 0640), 0);
    assert_int_equal(read_once(fx, &snap, &why), HODEI_SEG_NOT_REGULAR);
    assert_true(isnan(hodei_seg_age(&fx->r)));
    unlink(seg_path);

    /* a symbolic link, even to a valid segment */
    snprintf(other, sizeof(other), "%s.target", seg_path);
    struct hodei_seg_writer w2;
    char err[256];
    assert_int_equal(hodei_seg_create(&w2, other, 3, fx->cap, err, sizeof(err)), 0);
    assert_int_equal(hodei_seg_publish(&w2, fx->payload, fx->len), 0);
    assert_int_equal(symlink(other, seg_path), 0);
    assert_int_equal(read_once(fx, &snap, &why), HODEI_SEG_NOT_REGULAR);
    unlink(seg_path);

    /* a directory */
    assert_int_equal(mkdir(seg_path, 0700), 0);
    assert_int_equal(read_once(fx, &snap, &why), HODEI_SEG_NOT_REGULAR);
    rmdir(seg_path);

    /* a valid segment anyone could have written */
    assert_int_equal(rename(other, seg_path), 0);
    assert_int_equal(read_once(fx, &snap, &why), HODEI_SEG_OK);
    assert_int_equal(chmod(seg_path, 0646), 0);
    assert_int_equal(read_once(fx, &snap, &why), HODEI_SEG_BAD_MODE);
    assert_int_equal(chmod(seg_path, 0640), 0);
    assert_int_equal(read_once(fx, &snap, &why), HODEI_SEG_OK);
    hodei_seg_close(&w2);
    alarm(0);
}

/* The writer replaces what is planted at its path, never follows or blocks on it. */
static void test_writer_replaces_what_is_planted(void **state)
{
    struct fixture *fx = *state;
    struct hodei_snapshot snap;
    const char *why;
    char victim[300], err[256];
    struct stat st;

    hodei_seg_close(&fx->w);
    watchdog(20);
    unlink(seg_path);
    assert_int_equal(mkfifo(seg_path, 0666), 0);
    assert_int_equal(hodei_seg_create(&fx->w, seg_path, 3, fx->cap, err, sizeof(err)), 0);
    assert_int_equal(lstat(seg_path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0640);
    hodei_seg_close(&fx->w);

    snprintf(victim, sizeof(victim), "%s.victim", seg_path);
    FILE *f = fopen(victim, "w");
    fputs("precious", f);
    fclose(f);
    unlink(seg_path);
    assert_int_equal(symlink(victim, seg_path), 0);
    assert_int_equal(hodei_seg_create(&fx->w, seg_path, 3, fx->cap, err, sizeof(err)), 0);
    assert_int_equal(lstat(seg_path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(stat(victim, &st), 0);
    assert_int_equal(st.st_size, 8);               /* the link was replaced, not followed */
    unlink(victim);
    assert_int_equal(hodei_seg_publish(&fx->w, fx->payload, fx->len), 0);
    assert_int_equal(read_once(fx, &snap, &why), HODEI_SEG_OK);
    hodei_seg_close(&fx->w);

    /* a directory cannot be replaced: a clear error, nothing left behind */
    unlink(seg_path);
    assert_int_equal(mkdir(seg_path, 0700), 0);
    assert_int_equal(hodei_seg_create(&fx->w, seg_path, 3, fx->cap, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "rename"));
    assert_int_equal(files_like_segment(), 1);
    rmdir(seg_path);
    alarm(0);
    assert_int_equal(hodei_seg_create(&fx->w, seg_path, 3, fx->cap, err, sizeof(err)), 0);
}

/* ---- interleavings, forced through the reader's hook ------------------------------------ */

/* Generation g carries the payload built from seed g, so any copy can be checked against a
 * rebuild of its generation. */
struct forced {
    struct fixture *fx;
    enum hodei_seg_step at;    /* the step the hook acts at */
    int publishes;             /* how many the writer makes there */
    int times;                 /* in how many reads; -1: every one */
    void (*act)(struct forced *f);   /* or instead: something else the hook does */
};

static size_t publish_seed(struct fixture *fx, uint64_t seed)
{
    size_t len = build_fill(fx->payload, fx->cap, 3, 4, seed);
    assert_int_equal(hodei_seg_publish(&fx->w, fx->payload, len), 0);
    return len;
}

static void forcing_hook(struct hodei_seg_reader *r, enum hodei_seg_step s, void *arg)
{
    struct forced *f = arg;
    (void) r;
    if (s != f->at || f->times == 0)
        return;
    if (f->times > 0)
        f->times--;
    for (int i = 0; i < f->publishes; i++)
        publish_seed(f->fx, f->fx->w.generation + 1);
    if (f->act)
        f->act(f);
}

/* Reads with the hook armed; checks that what comes back is generation want_gen, byte for
 * byte, after exactly want_retries retries. */
static void expect_read(struct fixture *fx, struct forced *f, uint64_t want_gen,
                        uint64_t want_retries)
{
    struct hodei_snapshot snap;
    const char *why;
    uint64_t gen = 0;
    void *expect = aligned_alloc(64, fx->cap);

    fx->r.hook = forcing_hook;
    fx->r.hook_arg = f;
    uint64_t before = fx->r.retries;
    enum hodei_seg_status st = hodei_seg_read(&fx->r, &snap, &gen, &why);
    fx->r.hook = NULL;
    if (st != HODEI_SEG_OK)
        fail_msg("read: %s", hodei_seg_strerror(st));
    if (gen != want_gen || fx->r.retries - before != want_retries)
        fail_msg("generation %lu after %lu retries, want %lu after %lu", (unsigned long) gen,
                 (unsigned long) (fx->r.retries - before), (unsigned long) want_gen,
                 (unsigned long) want_retries);
    size_t len = build_fill(expect, fx->cap, 3, 4, gen);
    assert_int_equal(snap.len, len);
    assert_memory_equal(snap.base, expect, len);
    free(expect);
}

/* The writer laps the reader (three publishes reach its slot again) between its reading seq
 * and its copying, or between its copying and its reading seq again: the reader notices,
 * retries once, and returns the newest snapshot. */
static void test_reader_retries_when_lapped(void **state)
{
    struct fixture *fx = *state;
    static const enum hodei_seg_step steps[] = { HODEI_SEG_STEP_SEQ, HODEI_SEG_STEP_COPIED };
    publish_seed(fx, 1);
    assert_int_equal(hodei_seg_open(&fx->r, seg_path), HODEI_SEG_OK);
    for (unsigned i = 0; i < 2; i++) {
        struct forced f = { .fx = fx, .at = steps[i], .publishes = 3, .times = 1 };
        uint64_t gen = fx->w.generation;
        fx->r.retries = 0;
        expect_read(fx, &f, gen + 3, 1);
    }
}

/* Two publishes leave the slot being copied alone (three slots): no retry, and the copy is
 * the generation the reader started with. */
static void test_two_publishes_do_not_disturb_a_reader(void **state)
{
    struct fixture *fx = *state;
    publish_seed(fx, 1);
    assert_int_equal(hodei_seg_open(&fx->r, seg_path), HODEI_SEG_OK);
    struct forced f = { .fx = fx, .at = HODEI_SEG_STEP_SEQ, .publishes = 2, .times = 1 };
    expect_read(fx, &f, 1, 0);
}

/* A writer that laps every try: the reader gives up after its bounded tries, cleanly. */
static void test_reader_gives_up_when_always_lapped(void **state)
{
    struct fixture *fx = *state;
    struct hodei_snapshot snap;
    const char *why;
    publish_seed(fx, 1);
    assert_int_equal(hodei_seg_open(&fx->r, seg_path), HODEI_SEG_OK);
    struct forced f = { .fx = fx, .at = HODEI_SEG_STEP_COPIED, .publishes = 3, .times = -1 };
    fx->r.hook = forcing_hook;
    fx->r.hook_arg = &f;
    assert_int_equal(hodei_seg_read(&fx->r, &snap, NULL, &why), HODEI_SEG_BUSY);
    assert_int_equal(fx->r.retries, HODEI_SEG_READ_TRIES);
    fx->r.hook = NULL;
    expect_read(fx, &(struct forced) { .fx = fx }, fx->w.generation, 0);
}

/* The writer is inside the slot (odd sequence) for every try: the reader gives up cleanly. */
static void test_reader_retries_odd_sequence(void **state)
{
    struct fixture *fx = *state;
    struct hodei_snapshot snap;
    const char *why;

    assert_int_equal(hodei_seg_publish(&fx->w, fx->payload, fx->len), 0);
    assert_int_equal(hodei_seg_open(&fx->r, seg_path), HODEI_SEG_OK);
    struct hodei_seg_slot *s = (struct hodei_seg_slot *)
        (fx->w.map + HODEI_SEG_HDR_SIZE + fx->w.slot * fx->w.hdr->slot_size);
    s->seq++;
    assert_int_equal(hodei_seg_read(&fx->r, &snap, NULL, &why), HODEI_SEG_BUSY);
    assert_int_equal(fx->r.retries, HODEI_SEG_READ_TRIES);
    s->seq++;
    assert_int_equal(hodei_seg_read(&fx->r, &snap, NULL, &why), HODEI_SEG_OK);
}

static void truncate_to_header(struct forced *f)
{
    assert_int_equal(ftruncate(f->fx->w.fd, HODEI_SEG_HDR_SIZE), 0);
}

static void truncate_and_regrow(struct forced *f)
{
    assert_int_equal(ftruncate(f->fx->w.fd, HODEI_SEG_HDR_SIZE), 0);
    assert_int_equal(ftruncate(f->fx->w.fd, (off_t) f->fx->w.size), 0);
}

static void rewrite_geometry(struct forced *f)
{
    struct hodei_seg_header *h = f->fx->w.hdr;
    h->slot_count = HODEI_SEG_MAX_SLOTS;
    h->slot_size *= 1024;
    h->segment_size = HODEI_SEG_HDR_SIZE + h->slot_count * h->slot_size;
}

/* Run a reader through a file that changes under it at step at; want is what it reports. */
static void expect_change(struct fixture *fx, enum hodei_seg_step at,
                          void (*act)(struct forced *), enum hodei_seg_status want)
{
    struct hodei_snapshot snap;
    const char *why;
    char err[256];
    struct forced f = { .fx = fx, .at = at, .times = 1, .act = act };

    hodei_seg_close(&fx->w);
    assert_int_equal(hodei_seg_create(&fx->w, seg_path, 3, fx->cap, err, sizeof(err)), 0);
    publish_seed(fx, 1);
    assert_int_equal(hodei_seg_open(&fx->r, seg_path), HODEI_SEG_OK);
    fx->r.hook = forcing_hook;
    fx->r.hook_arg = &f;
    enum hodei_seg_status st = hodei_seg_read(&fx->r, &snap, NULL, &why);
    fx->r.hook = NULL;
    if (st != want)
        fail_msg("got \"%s\", want \"%s\"", hodei_seg_strerror(st), hodei_seg_strerror(want));
}

/* A file truncated, regrown or rewritten under a reader: that read reports it, no signal,
 * and nothing is read past the size taken at open. */
static void test_file_changed_under_reader(void **state)
{
    struct fixture *fx = *state;
    struct hodei_snapshot snap;
    const char *why;

    /* truncated: a short read, the file given up */
    expect_change(fx, HODEI_SEG_STEP_SEQ, truncate_to_header, HODEI_SEG_CHANGED);
    assert_false(fx->r.has_file);
    assert_true(isnan(hodei_seg_age(&fx->r)));
    expect_change(fx, HODEI_SEG_STEP_COPIED, truncate_to_header, HODEI_SEG_CHANGED);
    /* truncated and regrown with zeros: the sequence moved, and then the slot is empty */
    expect_change(fx, HODEI_SEG_STEP_SEQ, truncate_and_regrow, HODEI_SEG_BAD_PAYLOAD);
    assert_int_equal(fx->r.retries, 1);
    /* geometry rewritten after the copy began: this copy is consistent and served... */
    expect_change(fx, HODEI_SEG_STEP_SEQ, rewrite_geometry, HODEI_SEG_OK);
    /* ... and the next read sees the header disagree with what it opened */
    assert_int_equal(hodei_seg_read(&fx->r, &snap, NULL, &why), HODEI_SEG_CHANGED);
    /* opened again: the rewritten geometry is inconsistent with the file */
    assert_int_equal(read_once(fx, &snap, &why), HODEI_SEG_BAD_GEOMETRY);
}

/* ---- header corruption -------------------------------------------------------------- */

static void expect_status(struct fixture *fx, enum hodei_seg_status want)
{
    struct hodei_snapshot snap;
    const char *why;
    enum hodei_seg_status st = read_once(fx, &snap, &why);
    if (st != want)
        fail_msg("got status %d (%s), want %d (%s)", st, hodei_seg_strerror(st), want,
                 hodei_seg_strerror(want));
}

static void test_header_corruption(void **state)
{
    struct fixture *fx = *state;
    struct hodei_seg_header *h = fx->w.hdr;
    struct hodei_seg_header saved;

    assert_int_equal(hodei_seg_publish(&fx->w, fx->payload, fx->len), 0);
    expect_status(fx, HODEI_SEG_OK);
    saved = *h;

#define CORRUPT(stmt, want) do { stmt; expect_status(fx, want); *h = saved; } while (0)
    CORRUPT(h->magic ^= 1, HODEI_SEG_BAD_MAGIC);
    CORRUPT(h->version = HODEI_SEG_VERSION - 1, HODEI_SEG_BAD_VERSION);
    CORRUPT(h->version = HODEI_SEG_VERSION + 1, HODEI_SEG_BAD_VERSION);
    CORRUPT(h->segment_size += 64, HODEI_SEG_BAD_GEOMETRY);
    CORRUPT(h->slot_count = 2, HODEI_SEG_BAD_GEOMETRY);
    CORRUPT(h->slot_count = 1000, HODEI_SEG_BAD_GEOMETRY);
    CORRUPT(h->slot_size += 1, HODEI_SEG_BAD_GEOMETRY);
    CORRUPT(h->slot_size = HODEI_SEG_SLOT_HDR, HODEI_SEG_BAD_GEOMETRY);
    CORRUPT(h->slot_size = h->segment_size + 64, HODEI_SEG_BAD_GEOMETRY);
    CORRUPT(h->published = (h->published & ~0xffull) | 3, HODEI_SEG_BAD_SLOT);
    CORRUPT(h->published = (h->published & ~0xffull) | 255, HODEI_SEG_BAD_SLOT);
    CORRUPT(h->published = 0, HODEI_SEG_EMPTY);
#undef CORRUPT

    /* a segment of another release says which version it has */
    {
        struct hodei_snapshot snap;
        const char *why = NULL;
        char want[64];
        h->version = 1;
        assert_int_equal(hodei_seg_load(&fx->r, seg_path, &snap, NULL, &why),
                         HODEI_SEG_BAD_VERSION);
        snprintf(want, sizeof(want), "the segment has version 1, this reader %u",
                 HODEI_SEG_VERSION);
        if (why == NULL || strstr(why, want) == NULL)
            fail_msg("why: %s", why ? why : "(nothing)");
        *h = saved;
    }

    /* the slot: a length past its end, a payload that is not a snapshot */
    struct hodei_seg_slot *s = (struct hodei_seg_slot *)
        (fx->w.map + HODEI_SEG_HDR_SIZE + fx->w.slot * h->slot_size);
    uint64_t len = s->length;
    s->length = h->slot_size;
    expect_status(fx, HODEI_SEG_BAD_LENGTH);
    s->length = 3;
    expect_status(fx, HODEI_SEG_BAD_PAYLOAD);
    s->length = len;
    expect_status(fx, HODEI_SEG_OK);
}

static void test_short_files(void **state)
{
    char path[300];
    struct hodei_seg_reader r;
    (void) state;
    hodei_seg_reader_init(&r);
    snprintf(path, sizeof(path), "%s.short", seg_path);
    FILE *f = fopen(path, "w");
    fputs("HODEI", f);
    fclose(f);
    assert_int_equal(hodei_seg_open(&r, path), HODEI_SEG_TOO_SMALL);
    f = fopen(path, "w");
    for (int i = 0; i < 4096; i++)
        fputc(0x5a, f);
    fclose(f);
    assert_int_equal(hodei_seg_open(&r, path), HODEI_SEG_BAD_MAGIC);
    hodei_seg_reader_free(&r);
    unlink(path);
}

static char *render_one(const struct hodei_snapshot *snap, enum hodei_format fmt, int up,
                        double age)
{
    struct mem_sink m;
    const struct hodei_snapshot *snaps[1] = { snap };
    struct hodei_render_input in = { .snapshots = snaps, .nsnapshots = snap ? 1 : 0,
                                     .scheduler_up = up, .snapshot_age = age };
    mem_sink_init(&m);
    assert_int_equal(hodei_render(&m.sink, fmt, &in), 0);
    return mem_sink_done(&m);
}

/* ---- payload corruption ------------------------------------------------------------- */

struct payload {
    unsigned char *buf;
    size_t len;
    struct hodei_snap_header *h;
    struct hodei_snap_family *fam;   /* family table */
};

static void fresh_payload(struct payload *p, void *buf, size_t cap)
{
    p->buf = buf;
    p->len = build_fill(buf, cap, 3, 4, 9);
    assert_true(p->len > 0);
    p->h = buf;
    p->fam = (struct hodei_snap_family *) (p->buf + sizeof(struct hodei_snap_header));
}

static void expect_reject(struct payload *p, const char *reason)
{
    struct hodei_snapshot snap;
    const char *why = NULL;
    assert_int_equal(hodei_snapshot_validate(p->buf, p->len, &snap, &why), -1);
    assert_non_null(why);
    if (strstr(why, reason) == NULL)
        fail_msg("rejected for \"%s\", expected \"%s\"", why, reason);
}

/* Index in the family table of family id. */
static int fam_index(struct payload *p, enum hodei_family_id id)
{
    for (int k = 0; k < p->h->nfamilies; k++)
        if (p->fam[k].id == id)
            return k;
    fail_msg("family %d missing", id);
    return -1;
}

static unsigned char *first_series(struct payload *p, enum hodei_family_id id)
{
    return p->buf + p->fam[fam_index(p, id)].series_off;
}

static void test_payload_corruption(void **state)
{
    struct fixture *fx = *state;
    struct payload p;
    struct hodei_snapshot snap;
    const char *why;
    void *buf = fx->payload;
    size_t cap = fx->cap;
    int k;

    fresh_payload(&p, buf, cap);
    assert_int_equal(hodei_snapshot_validate(p.buf, p.len, &snap, &why), 0);

#define CASE(stmt, reason) do { fresh_payload(&p, buf, cap); stmt; expect_reject(&p, reason); } while (0)
    CASE(p.h->magic = 0, "magic");
    CASE(p.len = 10, "shorter than its header");
    CASE(p.h->nfamilies = HODEI_F_COUNT + 1, "more families");
    CASE(p.h->strings_off = (uint32_t) p.len, "string area out of bounds");
    CASE(p.h->strings_len = 0xffffffffu, "string area out of bounds");
    CASE(p.h->timestamp = NAN, "timestamp");
    CASE(p.fam[0].id = 999, "unknown family id");
    CASE(p.fam[1].id = p.fam[0].id, "strictly increasing");
    CASE(p.fam[0].id = HODEI_F_SCHEDULER_UP, "segment header");
    CASE(p.fam[0].nlabels = 2, "label count");
    CASE(p.fam[0].stride += 8, "stride");
    CASE(p.fam[0].series_off += 4, "misaligned");
    CASE(p.fam[0].series_off = 8, "inside the header");
    CASE(p.fam[0].series_off = 0xfffffff8u, "past the series area");
    CASE(p.fam[0].nseries = 0xffffffffu, "past the series area");   /* count * stride overflows */
    CASE(p.fam[fam_index(&p, HODEI_F_JOBS_QUEUED)].nbuckets = 3, "bucket count");
    k = fam_index(&p, HODEI_F_SCHEDULING_LATENCY_SECONDS);
    CASE(p.fam[k].nbuckets = 0, "bucket count");
    CASE(p.fam[k].nbuckets = HODEI_BUCKETS_MAX + 1, "bucket count");
    CASE(p.fam[k].bounds_off = 0xfffffff0u, "bounds offset");
    CASE(((double *) (p.buf + p.fam[k].bounds_off))[1] = 0, "strictly increasing");
    CASE(((double *) (p.buf + p.fam[k].bounds_off))[0] = INFINITY, "finite");
    CASE(((uint64_t *) (first_series(&p, HODEI_F_SCHEDULING_LATENCY_SECONDS) + 16))[0] = UINT64_MAX,
         "overflow");
    CASE(((double *) (first_series(&p, HODEI_F_SCHEDULING_LATENCY_SECONDS) + 8))[0] = NAN,
         "sum is NaN");
    CASE(((double *) (first_series(&p, HODEI_F_WORKERS_REGISTERED_TOTAL) + 8))[0] = -1,
         "counter value");
    CASE(((double *) first_series(&p, HODEI_F_WORKERS_REGISTERED_TOTAL))[0] = NAN, "created");
    /* label references and strings */
    CASE(((uint32_t *) first_series(&p, HODEI_F_JOBS_SCHEDULED_TOTAL))[0] = p.h->strings_len,
         "past the string area");
    /* an unterminated string: the area ends inside it */
    CASE(p.h->strings_len = ((uint32_t *) first_series(&p, HODEI_F_JOBS_SCHEDULED_TOTAL))[0] + 3,
         "runs past the string area");
    {
        fresh_payload(&p, buf, cap);
        uint32_t ref = ((uint32_t *) first_series(&p, HODEI_F_JOBS_SCHEDULED_TOTAL))[0];
        unsigned char *str = p.buf + p.h->strings_off + ref;
        str[2] = 0xff;                                          /* not UTF-8 */
        expect_reject(&p, "UTF-8");
        fresh_payload(&p, buf, cap);
        str[2] = 0;                                             /* NUL inside */
        expect_reject(&p, "UTF-8");
        fresh_payload(&p, buf, cap);
        str[0] = 0;
        str[1] = 0;                                             /* empty */
        expect_reject(&p, "empty or too long");
        fresh_payload(&p, buf, cap);
        str[0] = 0xff;
        str[1] = 0x7f;                                          /* 32 KiB claimed */
        expect_reject(&p, "empty or too long");
    }
    /* histogram bounds other than the schema's, for families whose bounds it fixes */
    k = fam_index(&p, HODEI_F_SCHEDULING_LATENCY_SECONDS);
    CASE(((double *) (p.buf + p.fam[k].bounds_off))[0] = 0.0009999999999982237,
         "differ from the schema's");
    CASE(((double *) (p.buf + p.fam[k].bounds_off))[0] = nextafter(0.001, 0),
         "differ from the schema's");
    CASE(((double *) (p.buf + p.fam[k].bounds_off))[11] = 20, "differ from the schema's");
    /* one bucket fewer, consistently: every offset and stride still adds up */
    CASE((p.fam[k].nbuckets--,
          p.fam[k].stride = (uint32_t) hodei_series_stride(HODEI_F_SCHEDULING_LATENCY_SECONDS,
                                                           p.fam[k].nbuckets)),
         "differ from the schema's");
#undef CASE
}

/* Producers cannot write other bounds for a fixed family; nginx's family takes its own. */
static void test_bucket_bounds_follow_the_schema(void **state)
{
    struct fixture *fx = *state;
    struct hodei_builder b;
    struct hodei_snapshot snap;
    const char *why;
    const double mine[2] = { 0.2, 2 };

    hodei_builder_init(&b, fx->payload, fx->cap, 1);
    hodei_builder_family_buckets(&b, HODEI_F_SCHEDULING_LATENCY_SECONDS, mine, 2);
    assert_int_equal(hodei_builder_finish(&b), 0);

    hodei_builder_init(&b, fx->payload, fx->cap, 1);
    hodei_builder_family_buckets(&b, HODEI_F_HTTP_REQUEST_DURATION_SECONDS, mine, 2);
    uint64_t *v = (uint64_t *) ((double *) hodei_builder_series(&b, NULL, 1) + 1);
    v[0] = 1, v[1] = 2, v[2] = 3;
    size_t len = hodei_builder_finish(&b);
    assert_true(len > 0);
    assert_int_equal(hodei_snapshot_validate(fx->payload, len, &snap, &why), 0);
    char *text = render_one(&snap, HODEI_FMT_TEXT, 1, 0);
    assert_non_null(strstr(text, "\nhodei_http_request_duration_seconds_bucket{le=\"0.2\"} 1\n"
                                 "hodei_http_request_duration_seconds_bucket{le=\"2\"} 3\n"
                                 "hodei_http_request_duration_seconds_bucket{le=\"+Inf\"} 6\n"));
    free(text);
}

/* Every single-bit flip of the header, the family table and the fixed bucket bounds: either
 * rejected with a reason, or rendered into a well-formed exposition of the schema.  A flip in
 * a fixed family's bounds is always rejected. */
static void test_bit_flips(void **state)
{
    struct fixture *fx = *state;
    struct payload p;
    struct hodei_snapshot snap;
    const char *why;
    unsigned accepted = 0, rejected = 0;

    fresh_payload(&p, fx->payload, fx->cap);
    size_t table_end = sizeof(struct hodei_snap_header)
                       + HODEI_F_COUNT * sizeof(struct hodei_snap_family);
    size_t bounds[HODEI_F_COUNT][2];            /* [begin, end) of the daemon's bounds */
    int nb = 0;
    for (int id = 0; id < HODEI_F_COUNT; id++) {
        const struct hodei_family *f = &hodei_families[id];
        if (f->type == HODEI_HISTOGRAM && !f->buckets_configurable) {
            int k = fam_index(&p, (enum hodei_family_id) id);
            bounds[nb][0] = p.fam[k].bounds_off;
            bounds[nb][1] = p.fam[k].bounds_off + 8u * p.fam[k].nbuckets;
            nb++;
        }
    }
    assert_int_equal(nb, 4);   /* scheduling, queue wait, job duration, store commit */

    for (int region = -1; region < nb; region++) {
        size_t from = region < 0 ? 0 : bounds[region][0];
        size_t to = region < 0 ? table_end : bounds[region][1];
        for (size_t byte = from; byte < to; byte++) {
            for (int bit = 0; bit < 8; bit++) {
                fresh_payload(&p, fx->payload, fx->cap);
                p.buf[byte] ^= (unsigned char) (1u << bit);
                why = NULL;
                if (hodei_snapshot_validate(p.buf, p.len, &snap, &why) != 0) {
                    if (why == NULL)
                        fail_msg("byte %zu bit %d: rejected without a reason", byte, bit);
                    rejected++;
                    continue;
                }
                if (region >= 0)
                    fail_msg("byte %zu bit %d: bounds unlike the schema's accepted", byte, bit);
                accepted++;
                for (int fmt = HODEI_FMT_TEXT; fmt <= HODEI_FMT_OPENMETRICS; fmt++) {
                    char *text = render_one(&snap, fmt, 1, 0);
                    const char *problem = exposition_problem(text, fmt);
                    if (problem)
                        fail_msg("byte %zu bit %d, format %d: %s", byte, bit, fmt, problem);
                    free(text);
                }
            }
        }
    }
    /* both outcomes happen: a flip of an unused field is harmless, of an offset is not */
    print_message("%u flips rejected, %u rendered\n", rejected, accepted);
    assert_true(rejected > 0 && accepted > 0);
}

/* ---- rendering ------------------------------------------------------------------------ */

static void test_escaping_hostile_labels(void **state)
{
    struct fixture *fx = *state;
    struct hodei_builder b;
    struct hodei_snapshot snap;
    const char *why;
    const char *hostile[] = { "a\"b", "back\\slash", "new\nline", "\xc3\xa9t\xc3\xa9 \xe2\x9c\x93",
                              "} 1\n# TYPE x counter" };
    const char *expect[] = {
        "hodei_jobs_submitted_total{tenant_id=\"a\\\"b\"} 1\n",
        "hodei_jobs_submitted_total{tenant_id=\"back\\\\slash\"} 2\n",
        "hodei_jobs_submitted_total{tenant_id=\"new\\nline\"} 3\n",
        "hodei_jobs_submitted_total{tenant_id=\"\xc3\xa9t\xc3\xa9 \xe2\x9c\x93\"} 4\n",
        "hodei_jobs_submitted_total{tenant_id=\"} 1\\n# TYPE x counter\"} 5\n" };

    hodei_builder_init(&b, fx->payload, fx->cap, 1);
    hodei_builder_family(&b, HODEI_F_JOBS_SUBMITTED_TOTAL);
    for (int i = 0; i < 5; i++)
        assert_int_equal(hodei_builder_scalar(&b, &hostile[i], 1, i + 1), 0);
    size_t len = hodei_builder_finish(&b);
    assert_true(len > 0);
    assert_int_equal(hodei_snapshot_validate(fx->payload, len, &snap, &why), 0);
    char *text = render_one(&snap, HODEI_FMT_TEXT, 1, 0);
    for (int i = 0; i < 5; i++)
        if (strstr(text, expect[i]) == NULL)
            fail_msg("missing %s in:\n%s", expect[i], text);
    free(text);

    /* what a label may not be is refused when building, not rendered */
    char longest[HODEI_LABEL_VALUE_MAX + 2];
    memset(longest, 'x', sizeof(longest) - 1);
    longest[sizeof(longest) - 1] = '\0';
    const char *bad[] = { "", "\xff\xfe", "\xc0\xaf" /* overlong */, "\xed\xa0\x80" /* surrogate */,
                          longest };
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *v[1] = { bad[i] };
        hodei_builder_init(&b, fx->payload, fx->cap, 1);
        hodei_builder_family(&b, HODEI_F_JOBS_SUBMITTED_TOTAL);
        assert_int_equal(hodei_builder_scalar(&b, v, 1, 1), -1);
        assert_int_equal(hodei_builder_finish(&b), 0);
    }

    /* a real NUL byte inside a label value: not UTF-8 a reader accepts, whatever wrote it */
    assert_int_equal(hodei_utf8_valid((const unsigned char *) "a\0b", 3), 0);
    assert_int_equal(hodei_utf8_valid((const unsigned char *) "a\0b", 1), 1);
    const char *axb[1] = { "aXb" };
    hodei_builder_init(&b, fx->payload, fx->cap, 1);
    hodei_builder_family(&b, HODEI_F_JOBS_SUBMITTED_TOTAL);
    assert_int_equal(hodei_builder_scalar(&b, axb, 1, 1), 0);
    len = hodei_builder_finish(&b);
    assert_int_equal(hodei_snapshot_validate(fx->payload, len, &snap, &why), 0);
    unsigned char *x = memmem(fx->payload, len, "aXb", 3);
    assert_non_null(x);
    x[1] = '\0';
    assert_int_equal(hodei_snapshot_validate(fx->payload, len, &snap, &why), -1);
    assert_string_equal(why, "label value is not valid UTF-8");
}

static void check_number(double v, const char *want)
{
    char buf[HODEI_NUM_MAX + 1];
    size_t n = hodei_fmt_double(buf, v);
    buf[n] = '\0';
    if (strcmp(buf, want) != 0)
        fail_msg("%.17g formatted as \"%s\", want \"%s\"", v, buf, want);
}

static void test_number_formatting(void **state)
{
    (void) state;
    check_number(0, "0");
    check_number(-0.0, "0");
    check_number(1, "1");
    check_number(42, "42");
    check_number(-7, "-7");
    check_number(1234567890123, "1234567890123");
    check_number(0.5, "0.5");
    check_number(0.001, "0.001");
    check_number(2.5, "2.5");
    check_number(99.9, "99.9");
    check_number(18699.80775, "18699.80775");
    check_number(1e-9, "1e-09");
    check_number(1e+21, "1e+21");
    check_number(1e15, "1000000000000000");      /* integers stay plain up to 2^53 */
    check_number(1e16, "1e+16");
    check_number(9007199254740993.0, "9007199254740992");
    check_number(0.1 + 0.2, "0.30000000000000004");          /* needs 17 digits */
    check_number(1.0 / 3, "0.3333333333333333");
    check_number(2.2250738585072014e-308, "2.2250738585072014e-308");
    check_number(1.7976931348623157e308, "1.7976931348623157e+308");
    check_number(NAN, "NaN");
    check_number(INFINITY, "+Inf");
    check_number(-INFINITY, "-Inf");

    char buf[HODEI_NUM_MAX + 1];
    assert_int_equal(hodei_fmt_u64(buf, UINT64_MAX), 20);
    assert_memory_equal(buf, "18446744073709551615", 20);

    /* every output parses back exactly, in at most 17 significant digits */
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double v;
        if (i % 3 == 0) {
            memcpy(&v, &x, 8);                       /* any bit pattern */
        } else if (i % 3 == 1) {
            v = (double) (x % 100000) / 100.0;        /* short decimals */
        } else {
            v = (double) (x >> 11) / 9007199254740992.0 * 1e6;
        }
        size_t n = hodei_fmt_double(buf, v);
        buf[n] = '\0';
        if (isnan(v)) {
            assert_string_equal(buf, "NaN");
            continue;
        }
        double back = strtod(buf, NULL);
        if (memcmp(&back, &v, 8) != 0 && !(v == 0 && back == 0))
            fail_msg("%.17g formatted as %s, parsed back as %.17g", v, buf, back);
        char shortest[40];
        if (fabs(v) < 2.2250738585072014e-308)
            continue;                       /* subnormals: round-trip only */
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(shortest, sizeof(shortest), "%.*g", prec, v);
            if (strtod(shortest, NULL) == v) {
                int digits = 0;
                for (char *c = buf; *c && *c != 'e'; c++)
                    digits += *c >= '0' && *c <= '9';
                /* leading zeros of 0.00x are not significant */
                for (char *c = buf; *c == '0' || *c == '.' || *c == '-'; c++)
                    digits -= *c == '0';
                /* nor are an integer's trailing zeros ("290" is as short as 2.9e+02) */
                if (strpbrk(buf, ".e") == NULL)
                    for (char *c = buf + n - 1; c > buf && *c == '0'; c--)
                        digits--;
                if (digits > prec)
                    fail_msg("%s is not shortest: %s", buf, shortest);
                break;
            }
        }
    }
}

/* Histograms: buckets cumulative and monotone, +Inf equal to _count, in both formats. */
static void test_histogram_invariants(void **state)
{
    struct fixture *fx = *state;
    struct hodei_snapshot snap;
    const char *why;
    size_t len = build_fill(fx->payload, fx->cap, 3, 4, 11);
    assert_int_equal(hodei_snapshot_validate(fx->payload, len, &snap, &why), 0);

    for (int fmt = HODEI_FMT_TEXT; fmt <= HODEI_FMT_OPENMETRICS; fmt++) {
        char *text = render_one(&snap, fmt, 1, 0);
        int histograms = 0;
        for (int id = 0; id < HODEI_F_COUNT; id++) {
            const struct hodei_family *f = &hodei_families[id];
            if (f->type != HODEI_HISTOGRAM || f->source != HODEI_SRC_DAEMON)
                continue;
            char key[128];
            double prev = -1, inf = -1, count = -2;
            unsigned buckets = 0;
            snprintf(key, sizeof(key), "%s_bucket{le=\"", f->name);
            for (char *p = strstr(text, key); p; p = strstr(p + 1, key)) {
                char *q = strchr(p, '}') + 2;
                double v = strtod(q, NULL);
                assert_true(v >= prev);
                prev = v;
                buckets++;
                if (strncmp(p + strlen(key), "+Inf\"", 5) == 0)
                    inf = v;
            }
            snprintf(key, sizeof(key), "\n%s_count ", f->name);
            char *c = strstr(text, key);
            assert_non_null(c);
            count = strtod(c + strlen(key), NULL);
            assert_int_equal(buckets, f->nbuckets + 1);
            assert_true(inf > 0);
            assert_true(inf == count);
            histograms++;
        }
        assert_int_equal(histograms, 4);
        free(text);
    }
}

static void test_every_family_once(void **state)
{
    (void) state;
    for (int fmt = HODEI_FMT_TEXT; fmt <= HODEI_FMT_OPENMETRICS; fmt++) {
        char *text = render_one(NULL, fmt, 0, NAN);      /* no daemon, no zone */
        for (int id = 0; id < HODEI_F_COUNT; id++) {
            char key[128];
            const struct hodei_family *f = &hodei_families[id];
            int len = f->name_len;
            if (fmt == HODEI_FMT_OPENMETRICS && f->type == HODEI_COUNTER)
                len -= 6;
            snprintf(key, sizeof(key), "# TYPE %.*s ", len, f->name);
            char *first = strstr(text, key);
            assert_non_null(first);
            assert_null(strstr(first + 1, key));
            snprintf(key, sizeof(key), "# HELP %.*s ", len, f->name);
            assert_non_null(strstr(text, key));
        }
        /* nothing fabricated: only the scheduler's own state has a sample */
        assert_non_null(strstr(text, "\nhodei_scheduler_up 0\n"));
        assert_null(strstr(text, "\nhodei_metrics_snapshot_age_seconds "));
        assert_null(strstr(text, "\nhodei_jobs_queued "));
        if (fmt == HODEI_FMT_OPENMETRICS) {
            size_t n = strlen(text);
            assert_true(n > 6 && strcmp(text + n - 6, "# EOF\n") == 0);
        } else {
            assert_null(strstr(text, "# EOF"));
        }
        free(text);
    }
}

static void test_openmetrics_counters(void **state)
{
    struct fixture *fx = *state;
    struct hodei_snapshot snap;
    const char *why;
    size_t len = build_fill(fx->payload, fx->cap, 1, 1, 5);
    assert_int_equal(hodei_snapshot_validate(fx->payload, len, &snap, &why), 0);
    char *text = render_one(&snap, HODEI_FMT_OPENMETRICS, 1, 0.25);
    assert_non_null(strstr(text, "# TYPE hodei_jobs_scheduled counter\n"));
    assert_non_null(strstr(text, "\nhodei_jobs_scheduled_total{tenant_id=\"tenant-0001\"} "));
    assert_non_null(strstr(text, "\nhodei_jobs_scheduled_created{tenant_id=\"tenant-0001\"} 1700000005\n"));
    assert_non_null(strstr(text, "\nhodei_scheduling_latency_seconds_created 1700000005\n"));
    assert_non_null(strstr(text, "\nhodei_metrics_snapshot_age_seconds 0.25\n"));
    assert_non_null(strstr(text, "# TYPE hodei_workers_total gauge\n"));
    free(text);
}

static void test_accept_negotiation(void **state)
{
    (void) state;
#define NEG(s) hodei_format_negotiate(s, strlen(s), 0)
    assert_int_equal(hodei_format_negotiate(NULL, 0, 0), HODEI_FMT_TEXT);
    assert_int_equal(NEG(""), HODEI_FMT_TEXT);
    assert_int_equal(NEG("*/*"), HODEI_FMT_TEXT);
    assert_int_equal(NEG("text/plain"), HODEI_FMT_TEXT);
    assert_int_equal(NEG("application/openmetrics-text"), HODEI_FMT_OPENMETRICS);
    /* what Prometheus 2.x sends */
    assert_int_equal(NEG("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                         "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
                     HODEI_FMT_OPENMETRICS);
    assert_int_equal(NEG("text/plain;version=0.0.4;q=1, application/openmetrics-text;q=0.5"),
                     HODEI_FMT_TEXT);
    assert_int_equal(NEG("application/openmetrics-text; q=0"), HODEI_FMT_TEXT);
    assert_int_equal(NEG("APPLICATION/OpenMetrics-Text ;q=0.9, text/html"), HODEI_FMT_OPENMETRICS);
    assert_int_equal(NEG(";;;,,,q=,=;"), HODEI_FMT_TEXT);
#undef NEG
}

static void test_payload_bound_holds(void **state)
{
    (void) state;
    struct hodei_fill_params p = HODEI_FILL_DEFAULTS;
    uint32_t caps[HODEI_F_COUNT];
    p.tenants = 100;
    p.workers = 500;
    hodei_fill_caps(&p, caps);
    size_t bound = hodei_payload_bound(caps);
    void *buf = aligned_alloc(64, bound);
    size_t len = hodei_fill_build(buf, bound, &p);
    assert_true(len > 0 && len <= bound);
    /* one byte short of what it needs: refused, not truncated */
    assert_int_equal(hodei_fill_build(buf, len - 8, &p), 0);
    free(buf);
}

/* ---- the schema's label kinds ---------------------------------------------------------- */

static void test_label_kinds(void **state)
{
    (void) state;
    /* the seed's contract (DESIGN §2): these label names, in this order */
    static const struct { enum hodei_family_id id; const char *labels; } seed[] = {
        { HODEI_F_JOBS_SCHEDULED_TOTAL, "tenant_id" },
        { HODEI_F_JOBS_COMPLETED_TOTAL, "tenant_id" },
        { HODEI_F_JOBS_FAILED_TOTAL, "tenant_id,error_type" },
        { HODEI_F_SCHEDULING_DECISIONS_TOTAL, "decision_type" },
        { HODEI_F_CPU_USAGE_PERCENT, "worker_id" },
        { HODEI_F_MEMORY_USAGE_MB, "worker_id" },
        { HODEI_F_HTTP_REQUESTS_TOTAL, "method,endpoint,status_code" },
        { HODEI_F_EVENTS_PUBLISHED_TOTAL, "event_type" },
        { HODEI_F_EVENTS_RECEIVED_TOTAL, "event_type" },
    };
    for (unsigned i = 0; i < sizeof(seed) / sizeof(seed[0]); i++) {
        const struct hodei_family *f = &hodei_families[seed[i].id];
        char names[128] = "";
        for (unsigned l = 0; l < f->nlabels; l++) {
            assert_true(f->labels[l] < HODEI_LABEL_KIND_COUNT);
            strcat(names, l ? "," : "");
            strcat(names, hodei_label_name(f, l));
        }
        if (strcmp(names, seed[i].labels) != 0)
            fail_msg("%s has labels %s, the contract says %s", f->name, names, seed[i].labels);
    }

    /* caps are products of what each label kind may take */
    uint32_t per_kind[HODEI_LABEL_KIND_COUNT], caps[HODEI_F_COUNT];
    hodei_label_default_counts(per_kind);
    per_kind[HODEI_LABEL_TENANT] = 5;
    assert_int_equal(hodei_family_series_cap(HODEI_F_JOBS_FAILED_TOTAL, per_kind),
                     5 * HODEI_ERR_COUNT);
    assert_int_equal(hodei_family_series_cap(HODEI_F_JOBS_SUBMITTED_TOTAL, per_kind), 5);
    assert_int_equal(hodei_family_series_cap(HODEI_F_CPU_USAGE_PERCENT, per_kind), 10000);
    assert_int_equal(hodei_family_series_cap(HODEI_F_EVENTS_DROPPED_TOTAL, per_kind),
                     HODEI_EV_COUNT);
    assert_int_equal(hodei_family_series_cap(HODEI_F_JOBS_QUEUED, per_kind), 1);
    assert_int_equal(hodei_family_series_cap(HODEI_F_SCHEDULER_UP, per_kind), 0);
    assert_int_equal(hodei_family_series_cap(HODEI_F_HTTP_REQUESTS_TOTAL, per_kind), 0);
    assert_int_equal(hodei_family_series_cap(HODEI_F_METRICS_LABEL_OVERFLOW_TOTAL, per_kind),
                     HODEI_F_COUNT);
    hodei_default_caps(caps);
    assert_int_equal(caps[HODEI_F_JOBS_SCHEDULED_TOTAL], 1001);
    assert_int_equal(caps[HODEI_F_JOBS_FAILED_TOTAL], 1001 * HODEI_ERR_COUNT);

    /* the fill tool asks the same kinds */
    struct hodei_fill_params fp = HODEI_FILL_DEFAULTS;
    fp.tenants = 2;
    fp.workers = 3;
    fp.error_types = 2;
    fp.event_types = 5;
    hodei_fill_caps(&fp, caps);
    assert_int_equal(caps[HODEI_F_JOBS_FAILED_TOTAL], 4);
    assert_int_equal(caps[HODEI_F_MEMORY_USAGE_MB], 3);
    assert_int_equal(caps[HODEI_F_EVENTS_RECEIVED_TOTAL], 5);
    assert_int_equal(caps[HODEI_F_SCHEDULING_DECISIONS_TOTAL], HODEI_DECISION_COUNT);
    assert_int_equal(caps[HODEI_F_BUILD_INFO], 1);
    assert_int_equal(caps[HODEI_F_HTTP_REQUESTS_TOTAL], 0);
}

/* The checker the bit-flip test trusts finds what a broken exposition breaks. */
static void test_exposition_checker_can_fail(void **state)
{
    struct fixture *fx = *state;
    struct hodei_snapshot snap;
    const char *why;
    size_t len = build_fill(fx->payload, fx->cap, 2, 2, 3);
    assert_int_equal(hodei_snapshot_validate(fx->payload, len, &snap, &why), 0);
    static const struct { const char *from, *to, *problem; } breaks[] = {
        { "# HELP hodei_jobs_queued ", "# HELP hodei_jobs_queue ", "HELP of another family" },
        { "# TYPE hodei_jobs_queued gauge", "# TYPE hodei_jobs_queued counter", "TYPE line" },
        { "{tenant_id=\"tenant-0001\"}", "{tenant=\"tenant-0001\"}", "misnamed" },
        { "{tenant_id=\"tenant-0001\"}", "{tenant_id=\"ten\"ant-0001\"}", "not separated" },
        { "{tenant_id=\"tenant-0001\"}", "{tenant_id=\"t\\x\"}", "bad escape" },
        { "\nhodei_workers_total ", "\nhodei_workers_totals ", "suffix" },
        { "\nhodei_jobs_queued ", "\nhodei_jobs_queued x", "not a number" },
    };
    for (int fmt = HODEI_FMT_TEXT; fmt <= HODEI_FMT_OPENMETRICS; fmt++) {
        char *text = render_one(&snap, fmt, 1, 0);
        const char *problem = exposition_problem(text, fmt);
        if (problem)
            fail_msg("format %d: %s", fmt, problem);
        for (unsigned i = 0; fmt == HODEI_FMT_TEXT && i < sizeof(breaks) / sizeof(breaks[0]); i++) {
            char *at = strstr(text, breaks[i].from);
            assert_non_null(at);
            size_t from = strlen(breaks[i].from), to = strlen(breaks[i].to);
            char *broken = malloc(strlen(text) + to + 1);
            memcpy(broken, text, (size_t) (at - text));
            strcpy(broken + (at - text), breaks[i].to);
            strcat(broken, at + from);
            problem = exposition_problem(broken, fmt);
            if (problem == NULL || strstr(problem, breaks[i].problem) == NULL)
                fail_msg("break %u: got \"%s\", want \"%s\"", i, problem ? problem : "(none)",
                         breaks[i].problem);
            free(broken);
        }
        if (fmt == HODEI_FMT_OPENMETRICS) {
            text[strlen(text) - 6] = '\0';             /* without # EOF */
            assert_non_null(exposition_problem(text, fmt));
        }
        free(text);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        T(test_round_trip),
        T(test_outgrown_segment_is_replaced),
        T(test_failed_growth_loses_nothing),
        T(test_restart_is_noticed),
        cmocka_unit_test(test_missing_segment),
        T(test_live_writer_is_not_replaced),
        T(test_reader_refuses_what_is_not_a_segment),
        T(test_writer_replaces_what_is_planted),
        T(test_reader_retries_when_lapped),
        T(test_two_publishes_do_not_disturb_a_reader),
        T(test_reader_gives_up_when_always_lapped),
        T(test_reader_retries_odd_sequence),
        T(test_file_changed_under_reader),
        T(test_header_corruption),
        T(test_short_files),
        T(test_payload_corruption),
        T(test_bucket_bounds_follow_the_schema),
        T(test_bit_flips),
        T(test_escaping_hostile_labels),
        cmocka_unit_test(test_number_formatting),
        T(test_histogram_invariants),
        cmocka_unit_test(test_every_family_once),
        T(test_openmetrics_counters),
        cmocka_unit_test(test_accept_negotiation),
        cmocka_unit_test(test_payload_bound_holds),
        cmocka_unit_test(test_label_kinds),
        T(test_exposition_checker_can_fail),
#undef T
    };
    return cmocka_run_group_tests_name("shm", tests, NULL, NULL);
}
