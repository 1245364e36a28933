/* Helpers shared by the shm/ tests: a memory sink and a fill-built segment. */
#ifndef SHM_TEST_UTIL_H
#define SHM_TEST_UTIL_H

#include <stdlib.h>
#include <string.h>
#include "hodei_render.h"

struct mem_sink {
    struct hodei_sink sink;
    char  *data;
    size_t len, cap;
};

/* Grows a heap buffer; the rendered text is data[0..len) after mem_sink_done(). */
static int mem_sink_flush(struct hodei_sink *s)
{
    struct mem_sink *m = (struct mem_sink *) s;
    m->len = (size_t) (s->pos - m->data);
    if (m->cap - m->len < HODEI_SINK_MIN) {
        m->cap = m->cap * 2 + 2 * HODEI_SINK_MIN;
        m->data = realloc(m->data, m->cap);
        if (m->data == NULL)
            return -1;
    }
    s->pos = m->data + m->len;
    s->end = m->data + m->cap;
    return 0;
}

static inline void mem_sink_init(struct mem_sink *m)
{
    memset(m, 0, sizeof(*m));
    m->sink.flush = mem_sink_flush;
    mem_sink_flush(&m->sink);
}

/* NUL-terminates and returns the text. */
static inline char *mem_sink_done(struct mem_sink *m)
{
    m->len = (size_t) (m->sink.pos - m->data);
    if (m->len == m->cap)
        m->data = realloc(m->data, ++m->cap);
    m->data[m->len] = '\0';
    return m->data;
}

#endif
