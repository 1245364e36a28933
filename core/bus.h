/*
 * bus.h — the event bus: one publisher (the engine thread), any number of subscribers.
 *
 * Each subscriber owns a bounded wait-free queue (liburcu wfcqueue).  Every event is offered to
 * each subscriber whose filter accepts it; publishing never waits: an offered event that does
 * not fit the subscriber's queue is dropped for that subscriber and counted
 * (hodei_events_dropped_total), one that fits is a delivery (hodei_events_received_total).
 * So for every event type
 *
 *     offered = received + dropped,
 *
 * and while no subscriber filters (the aggregator and admins' streams do not),
 * offered = published × subscribers-at-the-time.  A tenant's stream filters at the publisher:
 * it is offered only the events of that tenant's jobs, so other tenants' events neither fill
 * its queue nor count as its drops.
 *
 * The subscriber list is an RCU list: the publisher walks it under rcu_read_lock() while
 * subscribe/unsubscribe (API threads) change it under a mutex.
 *
 * Two ways to wait for events:
 *   - a thread: bus_next(sub, timeout) sleeps on the subscriber's condition variable;
 *   - an event loop (config.wake set): bus_arm(sub) returns the next event or, when there is
 *     none, arms the subscriber; the publisher then calls wake(ctx) once, from its own thread,
 *     after the next event it queues for it (and bus_close() calls it for every such
 *     subscriber).  wake() must not block and must cope with a wake that comes before the
 *     caller went to sleep (see api.c's parking).
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
    uint64_t offered[HODEI_EV_COUNT];
    uint64_t received[HODEI_EV_COUNT];
    uint64_t dropped[HODEI_EV_COUNT];
    uint64_t subscribers;
};

struct bus_sub_config {
    unsigned queue_cap;          /* events the subscriber may have waiting */
    int      wants_payload;      /* it needs the JSON */
    const char *tenant;          /* NULL: every event; else only job events of this tenant */
    void   (*wake)(void *ctx);   /* NULL: a thread waits in bus_next() */
    void    *wake_ctx;
};

struct bus *bus_new(void);
void bus_free(struct bus *bus);      /* after every subscriber left */

/* Never NULL (out of memory ends the daemon, alloc.h). */
struct bus_sub *bus_subscribe_with(struct bus *bus, const struct bus_sub_config *cfg);
/* A thread subscriber of every event. */
struct bus_sub *bus_subscribe(struct bus *bus, unsigned queue_cap, int wants_payload);
/* Waits for the publisher to stop seeing the subscriber, then frees it and what it holds.
 * After it returns, wake() is not called for it any more. */
void bus_unsubscribe(struct bus *bus, struct bus_sub *sub);

/* 1 when some subscriber wants payloads: the publisher builds one only then. */
int  bus_wants_payload(const struct bus *bus);
/* Publishes an event of tenant (NULL: not a tenant's, e.g. a worker's); payload (may be NULL)
 * is taken over by the bus. */
void bus_publish(struct bus *bus, enum hodei_event_type type, const char *tenant, char *payload);

/* The next event for sub, waiting up to timeout_ms; NULL on timeout or after bus_close().
 * Release it with bus_event_put().  Thread subscribers only; one consumer per subscriber. */
struct bus_event *bus_next(struct bus_sub *sub, int timeout_ms);
/* The next event, or NULL with the subscriber armed (see above).  Wake subscribers only; one
 * consumer per subscriber. */
struct bus_event *bus_arm(struct bus_sub *sub);
void bus_event_put(struct bus_event *ev);
/* Discards every waiting event; returns how many there were. */
unsigned long bus_drain(struct bus_sub *sub);
/* Wakes every waiting subscriber for good (shutdown). */
void bus_close(struct bus *bus);
int  bus_closed(const struct bus *bus);

void bus_counters_read(const struct bus *bus, struct bus_counters *out);

#endif
