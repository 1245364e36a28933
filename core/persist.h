/*
 * persist.h — the scheduler's state in the store (store.h): the records a change set writes,
 * and how a restart reads them back.  Backend-neutral: it speaks store.h only.
 *
 * What is kept:
 *   jobs         one row per job with every field the API shows (the tail of its output
 *                too), put whole whenever the change set touched it; deleted when pruned
 *   transitions  every state change, appended (the store deletes them with their job)
 *   counters     every hodei_*_total series the daemon owns, keyed by its exposition name
 *                (e.g. hodei_jobs_failed_total{tenant_id="acme",error_type="timeout"}),
 *                with its absolute value
 *   blobs        each histogram of the daemon, keyed by its family name (persist.c: layout)
 *   meta         next_job_id (never reused: the high-water mark), created_us (the first
 *                start: _created of the unlabelled counters), tenant/<id> (a tenant's
 *                _created), all in microseconds where they are times
 *
 * Threads: the engine's (persist_batch), or the opener before any change (persist_load).
 */
#ifndef HODEI_CORE_PERSIST_H
#define HODEI_CORE_PERSIST_H

#include <stddef.h>

#include "scheduler.h"
#include "store.h"

/* The batch that makes the open change set durable, with the values counted outside it
 * (sampled) and the failed commits so far; NULL when neither holds anything the store does
 * not have yet.  *sampled_changed: the batch carries sampled values that differ from the
 * committed ones (sched_set_sampled them once it commits). */
struct store_batch *persist_batch(const struct sched *s, const struct sched_sampled *sampled,
                                  int *sampled_changed);

/* Reads what st keeps into s (fresh from sched_init, no reader yet) and ends with
 * sched_load_done(now).  0, or -1 with the reason in err (the store's, or a row that does
 * not describe a valid job). */
int persist_load(struct store *st, struct sched *s, double now, char *err, size_t errlen);

#endif
