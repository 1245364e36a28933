/*
 * hodei_relaxed.h — fields with one writer thread, copied by others under a sequence number
 * (hodei_native.c, hodei_histogram.c).  The writer is the only thread that stores; it reads
 * its own fields plainly.  Every store and every reader's load is a relaxed atomic, so a
 * reader racing the writer gets a torn copy (which the sequence check throws away), never a
 * data race.  Ordering comes from the fences around the sequence number, not from these.
 */
#ifndef HODEI_RELAXED_H
#define HODEI_RELAXED_H

#define STORE(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)
#define LOAD(field)     __atomic_load_n(&(field), __ATOMIC_RELAXED)

static inline void store_double(double *p, double v)
{
    __atomic_store(p, &v, __ATOMIC_RELAXED);
}

static inline double load_double(const double *p)
{
    double v;
    __atomic_load(p, &v, __ATOMIC_RELAXED);
    return v;
}

#endif
