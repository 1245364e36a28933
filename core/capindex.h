/*
 * capindex.h — workers ordered by (memory, cpu) for best-fit placement in O(log n).
 *
 * A treap keyed by (mem, cpu, tie) whose nodes carry the largest cpu of their subtree.  The
 * best fit for a request (m, c) is the first node in key order with mem >= m and cpu >= c:
 * the least memory that fits, then the least cpu.  The max-cpu aggregate prunes every subtree
 * that cannot hold c, so the search follows one root-to-leaf path plus one descent.
 *
 * Nodes are embedded in their owner (container_of); the index never allocates.
 */
#ifndef HODEI_CORE_CAPINDEX_H
#define HODEI_CORE_CAPINDEX_H

#include <stddef.h>
#include <stdint.h>

struct cap_node {
    struct cap_node *left, *right;
    uint32_t prio;          /* heap priority (random) */
    uint32_t mem, cpu;      /* the key, with tie */
    uint32_t max_cpu;       /* largest cpu in this subtree */
    uint64_t tie;           /* makes keys unique: the owner's sequence number */
};

struct cap_index {
    struct cap_node *root;
    size_t count;
    uint64_t rng;
};

void cap_index_init(struct cap_index *ix, uint64_t seed);
/* Inserts node with key (mem, cpu, tie); tie must be unique among the nodes present. */
void cap_index_insert(struct cap_index *ix, struct cap_node *node, uint32_t mem, uint32_t cpu,
                      uint64_t tie);
/* Removes a node that is in the index. */
void cap_index_remove(struct cap_index *ix, struct cap_node *node);
/* The best fit for (mem, cpu), or NULL when no node holds both. */
struct cap_node *cap_index_best_fit(const struct cap_index *ix, uint32_t mem, uint32_t cpu);

#endif
