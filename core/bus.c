/* bus.c — bounded per-subscriber wait-free queues (see bus.h). */
#include "bus.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <urcu-bp.h>
#include <urcu/rculist.h>
#include <urcu/uatomic.h>
#include <urcu/wfcqueue.h>

#include "alloc.h"
#include "hodei_clock.h"

struct bus {
    pthread_mutex_t subs_lock;       /* serializes subscribe/unsubscribe */
    struct cds_list_head subs;       /* RCU list of bus_sub */
    long payload_subs;
    int closed;
    struct bus_counters c;
};

struct bus_sub {
    struct cds_list_head link;
    struct cds_wfcq_head head;
    struct cds_wfcq_tail tail;
    unsigned long len, cap;
    int wants_payload;
    char tenant[HODEI_ID_MAX + 1];   /* "" : every event */
    void (*wake)(void *ctx);
    void *wake_ctx;
    int waiting;                     /* in bus_next, or armed */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct bus *bus;
};

struct delivery {
    struct cds_wfcq_node node;
    struct bus_event *ev;
};

struct bus *bus_new(void)
{
    struct bus *bus = xcalloc(1, sizeof *bus);
    pthread_mutex_init(&bus->subs_lock, NULL);
    CDS_INIT_LIST_HEAD(&bus->subs);
    return bus;
}

void bus_free(struct bus *bus)
{
    pthread_mutex_destroy(&bus->subs_lock);
    free(bus);
}

struct bus_sub *bus_subscribe_with(struct bus *bus, const struct bus_sub_config *cfg)
{
    struct bus_sub *sub = xcalloc(1, sizeof *sub);
    cds_wfcq_init(&sub->head, &sub->tail);
    sub->cap = cfg->queue_cap;
    sub->wants_payload = cfg->wants_payload;
    if (cfg->tenant)
        strncpy(sub->tenant, cfg->tenant, HODEI_ID_MAX);
    sub->wake = cfg->wake;
    sub->wake_ctx = cfg->wake_ctx;
    sub->bus = bus;
    pthread_mutex_init(&sub->lock, NULL);
    hodei_cond_init_monotonic(&sub->cond);
    pthread_mutex_lock(&bus->subs_lock);
    cds_list_add_tail_rcu(&sub->link, &bus->subs);
    if (sub->wants_payload)
        uatomic_inc(&bus->payload_subs);
    uatomic_inc(&bus->c.subscribers);
    pthread_mutex_unlock(&bus->subs_lock);
    return sub;
}

struct bus_sub *bus_subscribe(struct bus *bus, unsigned queue_cap, int wants_payload)
{
    struct bus_sub_config cfg = { .queue_cap = queue_cap, .wants_payload = wants_payload };
    return bus_subscribe_with(bus, &cfg);
}

void bus_unsubscribe(struct bus *bus, struct bus_sub *sub)
{
    pthread_mutex_lock(&bus->subs_lock);
    cds_list_del_rcu(&sub->link);
    if (sub->wants_payload)
        uatomic_dec(&bus->payload_subs);
    uatomic_dec(&bus->c.subscribers);
    pthread_mutex_unlock(&bus->subs_lock);
    synchronize_rcu();   /* the publisher no longer holds sub */
    bus_drain(sub);
    pthread_cond_destroy(&sub->cond);
    pthread_mutex_destroy(&sub->lock);
    free(sub);
}

int bus_wants_payload(const struct bus *bus)
{
    return uatomic_read(&bus->payload_subs) > 0;
}

void bus_event_put(struct bus_event *ev)
{
    if (uatomic_sub_return(&ev->refs, 1) == 0) {
        free(ev->payload);
        free(ev);
    }
}

/* The publisher tells a waiting subscriber: a thread by its condition variable, an event loop
 * by its wake callback (once per arming). */
static void notify(struct bus_sub *sub)
{
    if (sub->wake) {
        if (uatomic_xchg(&sub->waiting, 0))
            sub->wake(sub->wake_ctx);
        return;
    }
    pthread_mutex_lock(&sub->lock);
    pthread_cond_signal(&sub->cond);
    pthread_mutex_unlock(&sub->lock);
}

void bus_publish(struct bus *bus, enum hodei_event_type type, const char *tenant, char *payload)
{
    struct bus_event *ev = xmalloc(sizeof *ev);
    ev->refs = 1;   /* the publisher's, dropped at the end */
    ev->type = type;
    ev->payload = payload;
    uatomic_inc(&bus->c.published[type]);
    struct bus_sub *sub;
    rcu_read_lock();
    cds_list_for_each_entry_rcu(sub, &bus->subs, link) {
        if (sub->tenant[0] && (!tenant || strcmp(sub->tenant, tenant) != 0))
            continue;   /* not offered: another tenant's event, or a worker's */
        uatomic_inc(&bus->c.offered[type]);
        if (uatomic_read(&sub->len) >= sub->cap) {
            uatomic_inc(&bus->c.dropped[type]);
            continue;
        }
        struct delivery *d = xmalloc(sizeof *d);
        uatomic_inc(&ev->refs);
        d->ev = ev;
        cds_wfcq_node_init(&d->node);
        uatomic_inc(&sub->len);
        cds_wfcq_enqueue(&sub->head, &sub->tail, &d->node);
        uatomic_inc(&bus->c.received[type]);
        cmm_smp_mb();   /* pairs with bus_next/bus_arm: enqueue before reading waiting */
        if (CMM_LOAD_SHARED(sub->waiting))
            notify(sub);
    }
    rcu_read_unlock();
    bus_event_put(ev);
}

static struct bus_event *take(struct bus_sub *sub)
{
    /* one consumer per subscriber: no dequeue lock needed */
    struct cds_wfcq_node *node = __cds_wfcq_dequeue_blocking(&sub->head, &sub->tail);
    if (!node)
        return NULL;
    struct delivery *d = caa_container_of(node, struct delivery, node);
    struct bus_event *ev = d->ev;
    free(d);
    uatomic_dec(&sub->len);
    return ev;
}

struct bus_event *bus_next(struct bus_sub *sub, int timeout_ms)
{
    struct bus_event *ev = take(sub);
    if (ev || uatomic_read(&sub->bus->closed))
        return ev;
    struct timespec until = hodei_mono_deadline(timeout_ms / 1000.0);
    pthread_mutex_lock(&sub->lock);
    CMM_STORE_SHARED(sub->waiting, 1);
    cmm_smp_mb();
    int rc = 0;
    while (cds_wfcq_empty(&sub->head, &sub->tail) && !uatomic_read(&sub->bus->closed)
           && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&sub->cond, &sub->lock, &until);
    CMM_STORE_SHARED(sub->waiting, 0);
    pthread_mutex_unlock(&sub->lock);
    return take(sub);
}

struct bus_event *bus_arm(struct bus_sub *sub)
{
    struct bus_event *ev = take(sub);
    if (ev)
        return ev;
    uatomic_set(&sub->waiting, 1);
    cmm_smp_mb();   /* pairs with bus_publish: waiting before looking at the queue again */
    ev = take(sub);
    if (ev)
        uatomic_set(&sub->waiting, 0);   /* a wake may still come: the caller copes */
    return ev;
}

unsigned long bus_drain(struct bus_sub *sub)
{
    unsigned long n = 0;
    struct bus_event *ev;
    while ((ev = take(sub))) {
        bus_event_put(ev);
        n++;
    }
    return n;
}

void bus_close(struct bus *bus)
{
    uatomic_set(&bus->closed, 1);
    struct bus_sub *sub;
    pthread_mutex_lock(&bus->subs_lock);
    cds_list_for_each_entry(sub, &bus->subs, link) {
        if (sub->wake) {
            uatomic_set(&sub->waiting, 0);
            sub->wake(sub->wake_ctx);
            continue;
        }
        pthread_mutex_lock(&sub->lock);
        pthread_cond_broadcast(&sub->cond);
        pthread_mutex_unlock(&sub->lock);
    }
    pthread_mutex_unlock(&bus->subs_lock);
}

int bus_closed(const struct bus *bus)
{
    return uatomic_read(&bus->closed);
}

void bus_counters_read(const struct bus *bus, struct bus_counters *out)
{
    for (int t = 0; t < HODEI_EV_COUNT; t++) {
        out->published[t] = uatomic_read(&bus->c.published[t]);
        out->offered[t] = uatomic_read(&bus->c.offered[t]);
        out->received[t] = uatomic_read(&bus->c.received[t]);
        out->dropped[t] = uatomic_read(&bus->c.dropped[t]);
    }
    out->subscribers = uatomic_read(&bus->c.subscribers);
}
