/*
 * alloc.h — the daemon's one out-of-memory policy: an allocation that fails ends the process.
 *
 * Memory is bounded by design (caps on jobs, workers, tenants, connections, queues), so failing
 * to allocate means the machine is out of memory, and no request can be answered correctly.
 * Every allocation in core/ goes through these helpers, or checks its result with must(): the
 * failure is logged once and the process aborts (systemd restarts it).  No caller ever handles
 * NULL from them.  jansson allocates through xmalloc() as well (alloc_install()).
 */
#ifndef HODEI_CORE_ALLOC_H
#define HODEI_CORE_ALLOC_H

#include <stddef.h>

_Noreturn void hodei_oom(void);

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* asprintf() that cannot fail. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* p, or the out-of-memory end when p is NULL: for allocators outside this file (liburcu's
 * tables, libmicrohttpd's responses, jansson's dumps). */
static inline void *must(void *p)
{
    if (!p)
        hodei_oom();
    return p;
}

/* Makes jansson allocate through xmalloc(); call once before any thread starts. */
void alloc_install(void);

#endif
