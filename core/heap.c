/* heap.c — the indexed binary min-heap (see heap.h). */
#include "heap.h"

#include <stdlib.h>

#include "alloc.h"

static size_t *slot_of(const struct heap *h, void *e)
{
    return (size_t *) ((char *) e + h->slot_offset);
}

static void set(struct heap *h, size_t i, void *e)
{
    h->v[i] = e;
    *slot_of(h, e) = i;
}

static void up(struct heap *h, size_t i)
{
    void *e = h->v[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!h->less(e, h->v[p]))
            break;
        set(h, i, h->v[p]);
        i = p;
    }
    set(h, i, e);
}

static void down(struct heap *h, size_t i)
{
    void *e = h->v[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && h->less(h->v[c + 1], h->v[c]))
            c++;
        if (!h->less(h->v[c], e))
            break;
        set(h, i, h->v[c]);
        i = c;
    }
    set(h, i, e);
}

void heap_push(struct heap *h, void *e)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 8;
        h->v = xrealloc(h->v, h->cap * sizeof *h->v);
    }
    set(h, h->n++, e);
    up(h, h->n - 1);
}

void heap_fix(struct heap *h, void *e)
{
    up(h, *slot_of(h, e));
    down(h, *slot_of(h, e));
}

void heap_remove(struct heap *h, void *e)
{
    size_t i = *slot_of(h, e);
    void *last = h->v[--h->n];
    if (last != e) {
        set(h, i, last);
        heap_fix(h, last);
    }
    *slot_of(h, e) = HEAP_NONE;
}

void heap_free(struct heap *h)
{
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}
