/* core_bus_test.c — the event bus: bounded subscriber queues, drops counted, never blocking
 * the publisher; published × subscribers = received + dropped. */
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
        bus_publish(bus, HODEI_EV_JOB_SUBMITTED, strdup("{\"type\":\"job_submitted\"}"));
    bus_publish(bus, HODEI_EV_WORKER_REMOVED, NULL);
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
    bus_publish(bus, HODEI_EV_JOB_STARTED, NULL);
    bus_counters_read(bus, &c);
    assert_int_equal(c.received[HODEI_EV_JOB_STARTED], 2);
    bus_unsubscribe(bus, slow);
    bus_publish(bus, HODEI_EV_JOB_STARTED, NULL);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounded_queues_count_drops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
