/*
 * metrics.h — the aggregator: a bus subscriber that turns the scheduler's counters into a
 * snapshot of every daemon-side family and publishes it to the segment each interval (a
 * heartbeat only when nothing changed).  The snapshot is built privately under
 * rcu_read_lock(), reading counters with relaxed atomic loads.
 *
 * Memory follows what the scheduler holds, not its caps: the snapshot buffer and the segment
 * start with room for the first snapshot and grow when a snapshot outgrows them (the segment
 * by replacing its file, hodei_segment.h); the caps only bound how far.
 */
#ifndef HODEI_CORE_METRICS_H
#define HODEI_CORE_METRICS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "hodei_segment.h"
#include "scheduler.h"

/* Series caps of the daemon's families for the configured tenant and worker caps, from the
 * kinds of their labels. */
void metrics_caps(uint32_t caps[HODEI_F_COUNT], uint32_t max_tenants, uint32_t max_workers);

/* The last consistent copy of each of the scheduler's histograms, kept by the thread that
 * builds snapshots: a histogram the scheduler thread kept changing through every try of a new
 * copy (hodei_histogram_read) goes into the snapshot as it was last copied, never torn. */
struct metrics_copies {
    struct hodei_histogram h[SH_COUNT];
};
/* Empty histograms with the schema's buckets. */
void metrics_copies_init(struct metrics_copies *c);

/* Builds the snapshot into buf (8-aligned, cap bytes) from what the scheduler committed (and
 * the bus's current number of subscribers), taking fresh copies of the histograms into
 * *copies; returns its length, 0 if it did not fit. */
size_t metrics_build(const struct sched *s, uint64_t subscribers, const char *version,
                     struct metrics_copies *copies, void *buf, size_t cap, double now);

struct metrics_publisher {
    struct hodei_seg_writer seg;
    const struct sched *sched;
    struct bus *bus;
    struct bus_sub *sub;
    const char *version;
    struct metrics_copies copies;
    void *buf;
    size_t cap;                 /* bytes of buf: grows with the snapshot ... */
    size_t cap_max;             /* ... up to what the series caps allow */
    unsigned interval_ms;
    int failing;                /* the last publish failed (logged once, when it started) */
    uint64_t last_changes, last_subscribers;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stop;
    uint64_t publishes, heartbeats;
};

/* Creates the segment at path and starts publishing. */
int  metrics_start(struct metrics_publisher *p, const char *path, const struct sched *s,
                   struct bus *bus, const char *version, unsigned interval_ms,
                   uint32_t max_tenants, uint32_t max_workers);
/* Stops the thread and publishes a last snapshot; the segment stays, consistent. */
void metrics_stop(struct metrics_publisher *p);

#endif
