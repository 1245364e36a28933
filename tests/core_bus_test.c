/* core_bus_test.c — the event bus: bounded subscriber queues, drops counted, never blocking
 * the publisher; offered = received + dropped, and offered = published × subscribers while no
 * subscriber filters; tenant filters at the publisher; waking an event loop's subscriber. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <urcu-bp.h>

#include "bus.h"

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
    /* closing wakes a waiting subscriber at once */
    assert_int_equal(bus_drain(fast), 2);
    bus_close(bus);
    assert_null(bus_next(fast, 10000));
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounded_queues_count_drops),
        cmocka_unit_test(test_tenant_filter),
        cmocka_unit_test(test_arm_and_wake),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
