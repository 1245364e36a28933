/*
 * hodei_fill.h — deterministic, fully populated snapshots without a daemon, for
 * build/hodei-shm-fill, the tests, the fuzz corpus and the benchmarks.
 *
 * The same parameters always give the byte-identical payload, so a reader can check a copy
 * by rebuilding it from its seed (the stress test's invariant).  Every value is non-zero.
 *
 * The daemon's histograms are recorded as the daemon records them (hodei_histogram.h):
 * classic buckets, native part and exemplars from the same observations.  Those are the
 * caller's for a family it names in observed (known latencies for tests; none at all is an
 * empty histogram), else a few generated ones in every classic bucket, the first bucket's
 * reaching down to a thousandth of its bound.
 */
#ifndef HODEI_FILL_H
#define HODEI_FILL_H

#include <stddef.h>
#include <stdint.h>
#include "hodei_schema.h"

/* One observation of a histogram the daemon records. */
struct hodei_fill_observation {
    enum hodei_family_id family;
    double      value;             /* finite, >= 0 */
    const char *job_id;            /* NULL: no exemplar */
    const char *tenant_id;
    double      timestamp;         /* the exemplar's unix seconds */
};

struct hodei_fill_params {
    unsigned tenants;       /* tenant_id series ("tenant-0001" ...) */
    unsigned workers;       /* worker_id series ("worker-00001" ...) */
    unsigned error_types;   /* 1..HODEI_ERR_COUNT */
    unsigned event_types;   /* 1..HODEI_EV_COUNT */
    uint64_t seed;          /* every value and the timestamp derive from it */
    uint64_t observed;      /* bit id: family id takes exactly the observations below */
    const struct hodei_fill_observation *observations;   /* may be NULL */
    size_t   nobservations;
};
_Static_assert(HODEI_F_COUNT <= 64, "hodei_fill_params.observed has a bit per family");

#define HODEI_FILL_DEFAULTS { .tenants = 3, .workers = 4, .error_types = HODEI_ERR_COUNT, \
                              .event_types = HODEI_EV_COUNT, .seed = 1 }

/* Series caps that fit the parameters (for hodei_payload_bound and segment sizing). */
void   hodei_fill_caps(const struct hodei_fill_params *p, uint32_t caps[HODEI_F_COUNT]);
/* Builds the payload into buf (8-aligned).  Returns its length, 0 if it did not fit or the
 * parameters are out of range (an observation of another family than a daemon's histogram,
 * or of a value a histogram refuses, among them). */
size_t hodei_fill_build(void *buf, size_t cap, const struct hodei_fill_params *p);
/* Number of samples the 0.0.4 rendering of such a payload has (for benchmarks). */
size_t hodei_fill_samples(const struct hodei_fill_params *p);

#endif
