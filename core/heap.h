/*
 * heap.h — an indexed binary min-heap of pointers.  Each element keeps its own position (a
 * size_t at slot_offset), so it can be removed or re-sorted after its key changed in O(log n).
 * The scheduler keeps tenants' queue heads per priority level (fair share) and running jobs'
 * deadlines in these.
 */
#ifndef HODEI_HEAP_H
#define HODEI_HEAP_H

#include <stddef.h>
#include <stdint.h>

/* The position of an element that is in no heap. */
#define HEAP_NONE SIZE_MAX

struct heap {
    void  **v;
    size_t  n, cap;
    int   (*less)(const void *a, const void *b);   /* strict order: a before b */
    size_t  slot_offset;                           /* offsetof(element, its position field) */
};

#define HEAP_INIT(less_fn, type, member) \
    ((struct heap) { .less = (less_fn), .slot_offset = offsetof(type, member) })

void heap_push(struct heap *h, void *e);
/* Removes e and sets its position to HEAP_NONE. */
void heap_remove(struct heap *h, void *e);
/* Restores the order after e's key changed. */
void heap_fix(struct heap *h, void *e);
void heap_free(struct heap *h);

static inline void *heap_top(const struct heap *h)
{
    return h->n ? h->v[0] : NULL;
}

#endif
