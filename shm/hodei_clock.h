/*
 * hodei_clock.h — the clocks every part of Hodei reads, in one place.
 *
 *   wall time (CLOCK_REALTIME):     what is shown and stored (_created, job times, heartbeats
 *                                   in the segment);
 *   monotonic (CLOCK_MONOTONIC):    every deadline and duration, so that a clock step changes
 *                                   no timeout.
 *
 * Condition variables that wait for deadlines are made with hodei_cond_init_monotonic(), and
 * their deadlines come from hodei_mono_deadline(): the two must agree on the clock.  Every
 * function here may be called from any thread.
 */
#ifndef HODEI_CLOCK_H
#define HODEI_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* Wall clock in unix seconds / nanoseconds. */
static inline double hodei_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static inline int64_t hodei_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Monotonic clock in seconds / milliseconds (arbitrary origin). */
static inline double hodei_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

static inline int64_t hodei_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ts + ms, normalised. */
static inline void hodei_timespec_add_ms(struct timespec *ts, int64_t ms)
{
    int64_t ns = ts->tv_nsec + (ms % 1000) * 1000000;
    ts->tv_sec += (time_t) (ms / 1000 + ns / 1000000000);
    ts->tv_nsec = (long) (ns % 1000000000);
}

/* The monotonic instant seconds from now, as pthread_cond_timedwait() wants it. */
static inline struct timespec hodei_mono_deadline(double seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    hodei_timespec_add_ms(&ts, (int64_t) (seconds * 1000));
    return ts;
}

/* 1 when a is later than b. */
static inline int hodei_timespec_after(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec != b->tv_sec ? a->tv_sec > b->tv_sec : a->tv_nsec > b->tv_nsec;
}

/* A condition variable whose timed waits run on CLOCK_MONOTONIC. */
static inline int hodei_cond_init_monotonic(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
    return rc;
}

#endif
