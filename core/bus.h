/*
 * bus.h — the event bus: one publisher (the engine thread), any number of subscribers.
 *
 * Each subscriber owns a bounded wait-free queue (liburcu wfcqueue).  Publishing never waits:
 * an event that does not fit a subscriber's queue is dropped for that subscriber and counted
 * (hodei_events_dropped_total); one that fits is a delivery (hodei_events_received_total).
 * So for every event type, published × subscribers-at-the-time = received + dropped.
 * The subscriber list is an RCU list: the publisher walks it under rcu_read_lock() while
 * subscribe/unsubscribe (API threads) change it under a mutex.
 */
#ifndef HODEI_CORE_BUS_H
#define HODEI_CORE_BUS_H

#include <stdint.h>
#include "hodei_schema.h"

struct bus;
struct bus_sub;

/* An event as a subscriber receives it; payload is the SSE data JSON (NULL unless some
 * subscriber asked for payloads when it was published). */
struct bus_event {
    long refs;
    enum hodei_event_type type;
    char *payload;
};

struct bus_counters {
    uint64_t published[HODEI_EV_COUNT];
    uint64_t received[HODEI_EV_COUNT];
    uint64_t dropped[HODEI_EV_COUNT];
    uint64_t subscribers;
};

struct bus *bus_new(void);
void bus_free(struct bus *bus);      /* after every subscriber left */

/* queue_cap: events the subscriber may have waiting.  wants_payload: it needs the JSON. */
struct bus_sub *bus_subscribe(struct bus *bus, unsigned queue_cap, int wants_payload);
/* Waits for the publisher to stop seeing the subscriber, then frees it and what it holds. */
void bus_unsubscribe(struct bus *bus, struct bus_sub *sub);

/* 1 when some subscriber wants payloads: the publisher builds one only then. */
int  bus_wants_payload(const struct bus *bus);
/* Publishes an event; payload (may be NULL) is taken over by the bus. */
void bus_publish(struct bus *bus, enum hodei_event_type type, char *payload);

/* The next event for sub, waiting up to timeout_ms; NULL on timeout or after bus_close().
 * Release it with bus_event_put(). */
struct bus_event *bus_next(struct bus_sub *sub, int timeout_ms);
void bus_event_put(struct bus_event *ev);
/* Discards every waiting event; returns how many there were. */
unsigned long bus_drain(struct bus_sub *sub);
/* Wakes every waiting subscriber for good (shutdown). */
void bus_close(struct bus *bus);
int  bus_closed(const struct bus *bus);

void bus_counters_read(const struct bus *bus, struct bus_counters *out);

#endif
