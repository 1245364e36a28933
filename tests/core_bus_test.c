/* core_bus_test.c — the event bus: bounded subscriber queues, drops counted, never blocking
 * the publisher; offered = received + dropped, and offered = published × subscribers while no
 * subscriber filters; tenant filters at the publisher; a subscriber blocked waiting (a thread
 * in bus_next, or an armed event loop) is woken by an event or by closing the bus. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <urcu-bp.h>

#include "bus.h"

/* Long enough that a wake-up that never comes cannot pass for one. */
#define WAIT_MS      120000
/* How long a wake-up may take on a loaded machine: far below WAIT_MS. */
#define WAKE_BOUND_S 20.0

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A subscriber's consumer thread, blocked in bus_next(). */
struct waiter {
    struct bus_sub *sub;
    pid_t tid;
    struct bus_event *got;
    double returned_at;
};

static void *wait_next(void *arg)
{
    struct waiter *w = arg;
    __atomic_store_n(&w->tid, (pid_t) syscall(SYS_gettid), __ATOMIC_RELEASE);
    w->got = bus_next(w->sub, WAIT_MS);
    w->returned_at = now_s();
    return NULL;
}

/* Waits until the thread sleeps in futex(2), i.e. in bus_next's condition wait (nothing else
 * contends its locks): the wake-up then has to come from the bus, not from good timing. */
static void wait_until_blocked(struct waiter *w)
{
    char path[64], buf[64];
    pid_t tid;
    double deadline = now_s() + 60;
    while ((tid = __atomic_load_n(&w->tid, __ATOMIC_ACQUIRE)) == 0 && now_s() < deadline)
        usleep(1000);
    snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int) tid);
    while (now_s() < deadline) {
        FILE *f = fopen(path, "r");
        long nr = -1;
        if (f && fgets(buf, sizeof(buf), f))
            nr = strtol(buf, NULL, 10);
        if (f)
            fclose(f);
        if (nr == SYS_futex)
            return;
        usleep(1000);
    }
    fail_msg("the subscriber thread never blocked in bus_next");
}

static void test_bounded_queues_count_drops(void **state)
{
    struct bus *bus = bus_new();
    struct bus_sub *fast = bus_subscribe(bus, 100, 1);
    struct bus_sub *slow = bus_subscribe(bus, 2, 0);
    for (int i = 0; i < 5; i++)
        bus_publish(bus, HODEI_EV_JOB_SUBMITTED, "acme", strdup("{\"type\":\"job_submitted\"}"));
    bus_publish(bus, HODEI_EV_WORKER_REMOVED, NULL, NULL);
    struct bus_counters c;
    bus_counters_read(bus, &c);
    assert_int_equal(c.subscribers, 2);
    assert_int_equal(c.published[HODEI_EV_JOB_SUBMITTED], 5);
    assert_int_equal(c.received[HODEI_EV_JOB_SUBMITTED], 5 + 2);
    assert_int_equal(c.dropped[HODEI_EV_JOB_SUBMITTED], 3);
    assert_int_equal(c.received[HODEI_EV_WORKER_REMOVED], 1);
    assert_int_equal(c.dropped[HODEI_EV_WORKER_REMOVED], 1);
    for (int t = 0; t < HODEI_EV_COUNT; t++)
        assert_int_equal(c.published[t] * 2, c.received[t] + c.dropped[t]);

    /* in order, with the payload */
    struct bus_event *ev = bus_next(fast, 0);
    assert_non_null(ev);
    assert_int_equal(ev->type, HODEI_EV_JOB_SUBMITTED);
    assert_string_equal(ev->payload, "{\"type\":\"job_submitted\"}");
    bus_event_put(ev);
    assert_int_equal(bus_drain(fast), 5);
    assert_null(bus_next(fast, 10));      /* empty: times out */
    /* the slow one drains and has room again */
    assert_int_equal(bus_drain(slow), 2);
    bus_publish(bus, HODEI_EV_JOB_STARTED, "acme", NULL);
    bus_counters_read(bus, &c);
    assert_int_equal(c.received[HODEI_EV_JOB_STARTED], 2);
    bus_unsubscribe(bus, slow);
    bus_publish(bus, HODEI_EV_JOB_STARTED, "acme", NULL);
    bus_counters_read(bus, &c);
    assert_int_equal(c.subscribers, 1);
    assert_int_equal(c.received[HODEI_EV_JOB_STARTED], 3);
    bus_unsubscribe(bus, fast);
    bus_free(bus);
}

/* A tenant's subscriber is offered only its tenant's job events: others' neither fill its
 * queue nor count as its drops. */
static void test_tenant_filter(void **state)
{
    struct bus *bus = bus_new();
    struct bus_sub_config acme_cfg = { .queue_cap = 2, .tenant = "acme" };
    struct bus_sub *all = bus_subscribe(bus, 100, 0);
    struct bus_sub *acme = bus_subscribe_with(bus, &acme_cfg);
    for (int i = 0; i < 10; i++)
        bus_publish(bus, HODEI_EV_JOB_SUBMITTED, "globex", NULL);
    bus_publish(bus, HODEI_EV_WORKER_REGISTERED, NULL, NULL);
    bus_publish(bus, HODEI_EV_JOB_SUBMITTED, "acme", NULL);
    bus_publish(bus, HODEI_EV_JOB_SUBMITTED, "acme", NULL);
    bus_publish(bus, HODEI_EV_JOB_SUBMITTED, "acme", NULL);   /* acme's queue holds 2 */
    struct bus_counters c;
    bus_counters_read(bus, &c);
    assert_int_equal(c.published[HODEI_EV_JOB_SUBMITTED], 13);
    assert_int_equal(c.offered[HODEI_EV_JOB_SUBMITTED], 13 + 3);
    assert_int_equal(c.received[HODEI_EV_JOB_SUBMITTED], 13 + 2);
    assert_int_equal(c.dropped[HODEI_EV_JOB_SUBMITTED], 1);
    assert_int_equal(c.offered[HODEI_EV_WORKER_REGISTERED], 1);
    for (int t = 0; t < HODEI_EV_COUNT; t++)
        assert_int_equal(c.offered[t], c.received[t] + c.dropped[t]);
    assert_int_equal(bus_drain(acme), 2);
    assert_int_equal(bus_drain(all), 14);
    bus_unsubscribe(bus, acme);
    bus_unsubscribe(bus, all);
    bus_free(bus);
}

static void count_wake(void *ctx)
{
    (*(int *) ctx)++;
}

/* An armed subscriber is woken once by the next event, not again until armed again. */
static void test_arm_and_wake(void **state)
{
    struct bus *bus = bus_new();
    int wakes = 0;
    struct bus_sub_config cfg = { .queue_cap = 10, .wake = count_wake, .wake_ctx = &wakes };
    struct bus_sub *sub = bus_subscribe_with(bus, &cfg);
    bus_publish(bus, HODEI_EV_JOB_STARTED, "acme", NULL);
    assert_int_equal(wakes, 0);                   /* not armed: nobody to wake */
    struct bus_event *ev = bus_arm(sub);
    assert_non_null(ev);                          /* an event waiting: no arming */
    bus_event_put(ev);
    assert_null(bus_arm(sub));                    /* empty: armed */
    bus_publish(bus, HODEI_EV_JOB_STARTED, "acme", NULL);
    bus_publish(bus, HODEI_EV_JOB_STARTED, "acme", NULL);
    assert_int_equal(wakes, 1);                   /* one wake per arming */
    assert_int_equal(bus_drain(sub), 2);
    assert_null(bus_arm(sub));
    bus_close(bus);
    assert_int_equal(wakes, 2);                   /* closing wakes it too */
    bus_unsubscribe(bus, sub);
    bus_free(bus);
}

/* A subscriber of bus whose consumer thread t is blocked in bus_next. */
static void start_blocked_waiter(struct bus *bus, struct waiter *w, pthread_t *t)
{
    memset(w, 0, sizeof(*w));
    w->sub = bus_subscribe(bus, 10, 0);
    assert_int_equal(pthread_create(t, NULL, wait_next, w), 0);
    wait_until_blocked(w);
}

/* Joins the waiter's thread, which must have returned within the bound after since. */
static void expect_woken(struct waiter *w, pthread_t t, double since, const char *by)
{
    pthread_join(t, NULL);
    if (w->returned_at - since > WAKE_BOUND_S)
        fail_msg("woken %.1f s after %s", w->returned_at - since, by);
}

/* An event wakes a subscriber blocked in bus_next, which gets it. */
static void test_publish_wakes_a_waiting_subscriber(void **state)
{
    struct bus *bus = bus_new();
    struct waiter w;
    pthread_t t;
    start_blocked_waiter(bus, &w, &t);
    double published_at = now_s();
    bus_publish(bus, HODEI_EV_WORKER_REGISTERED, NULL, NULL);
    expect_woken(&w, t, published_at, "the event");
    assert_non_null(w.got);
    assert_int_equal(w.got->type, HODEI_EV_WORKER_REGISTERED);
    bus_event_put(w.got);
    bus_unsubscribe(bus, w.sub);
    bus_free(bus);
}

/* Closing the bus wakes a subscriber blocked in bus_next, which gets nothing. */
static void test_close_wakes_a_waiting_subscriber(void **state)
{
    struct bus *bus = bus_new();
    struct waiter w;
    pthread_t t;
    start_blocked_waiter(bus, &w, &t);
    double closed_at = now_s();
    bus_close(bus);
    expect_woken(&w, t, closed_at, "the close");
    assert_null(w.got);
    /* and once closed, nobody waits at all */
    assert_null(bus_next(w.sub, WAIT_MS));
    assert_true(now_s() - closed_at < WAKE_BOUND_S);
    bus_unsubscribe(bus, w.sub);
    bus_free(bus);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounded_queues_count_drops),
        cmocka_unit_test(test_tenant_filter),
        cmocka_unit_test(test_arm_and_wake),
        cmocka_unit_test(test_publish_wakes_a_waiting_subscriber),
        cmocka_unit_test(test_close_wakes_a_waiting_subscriber),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
