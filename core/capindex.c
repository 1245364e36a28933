/* capindex.c — treap with a max-cpu aggregate (see capindex.h). */
#include "capindex.h"

static int key_less(uint32_t mem_a, uint32_t cpu_a, uint64_t tie_a, const struct cap_node *b)
{
    if (mem_a != b->mem)
        return mem_a < b->mem;
    if (cpu_a != b->cpu)
        return cpu_a < b->cpu;
    return tie_a < b->tie;
}

static void update(struct cap_node *n)
{
    uint32_t m = n->cpu;
    if (n->left && n->left->max_cpu > m)
        m = n->left->max_cpu;
    if (n->right && n->right->max_cpu > m)
        m = n->right->max_cpu;
    n->max_cpu = m;
}

/* Splits t into keys < node's key (*l) and the rest (*r). */
static void split(struct cap_node *t, const struct cap_node *key, struct cap_node **l,
                  struct cap_node **r)
{
    if (!t) {
        *l = *r = NULL;
        return;
    }
    if (key_less(t->mem, t->cpu, t->tie, key)) {
        split(t->right, key, &t->right, r);
        *l = t;
    } else {
        split(t->left, key, l, &t->left);
        *r = t;
    }
    update(t);
}

/* Joins l and r, every key of l below every key of r. */
static struct cap_node *merge(struct cap_node *l, struct cap_node *r)
{
    if (!l)
        return r;
    if (!r)
        return l;
    if (l->prio > r->prio) {
        l->right = merge(l->right, r);
        update(l);
        return l;
    }
    r->left = merge(l, r->left);
    update(r);
    return r;
}

static uint32_t next_prio(struct cap_index *ix)
{
    /* xorshift64*: only needs to be cheap and well spread */
    ix->rng ^= ix->rng >> 12;
    ix->rng ^= ix->rng << 25;
    ix->rng ^= ix->rng >> 27;
    return (uint32_t) ((ix->rng * 2685821657736338717ull) >> 32);
}

void cap_index_init(struct cap_index *ix, uint64_t seed)
{
    ix->root = NULL;
    ix->count = 0;
    ix->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
}

static struct cap_node *insert(struct cap_node *t, struct cap_node *node)
{
    if (!t)
        return node;
    if (node->prio > t->prio) {
        split(t, node, &node->left, &node->right);
        update(node);
        return node;
    }
    if (key_less(node->mem, node->cpu, node->tie, t))
        t->left = insert(t->left, node);
    else
        t->right = insert(t->right, node);
    update(t);
    return t;
}

void cap_index_insert(struct cap_index *ix, struct cap_node *node, uint32_t mem, uint32_t cpu,
                      uint64_t tie)
{
    node->left = node->right = NULL;
    node->mem = mem;
    node->cpu = cpu;
    node->tie = tie;
    node->max_cpu = cpu;
    node->prio = next_prio(ix);
    ix->root = insert(ix->root, node);
    ix->count++;
}

static struct cap_node *erase(struct cap_node *t, struct cap_node *node)
{
    if (t == node)
        return merge(t->left, t->right);
    if (key_less(node->mem, node->cpu, node->tie, t))
        t->left = erase(t->left, node);
    else
        t->right = erase(t->right, node);
    update(t);
    return t;
}

void cap_index_remove(struct cap_index *ix, struct cap_node *node)
{
    ix->root = erase(ix->root, node);
    node->left = node->right = NULL;
    ix->count--;
}

/* First node in key order of subtree t with cpu >= c (every node of t has enough memory). */
static struct cap_node *first_cpu(struct cap_node *t, uint32_t cpu)
{
    while (t && t->max_cpu >= cpu) {
        if (t->left && t->left->max_cpu >= cpu)
            t = t->left;
        else if (t->cpu >= cpu)
            return t;
        else
            t = t->right;
    }
    return NULL;
}

static struct cap_node *best_fit(struct cap_node *t, uint32_t mem, uint32_t cpu)
{
    while (t && t->max_cpu >= cpu) {
        if (t->mem < mem) {
            t = t->right;
            continue;
        }
        /* t and its whole right subtree have enough memory; the left may too */
        struct cap_node *found = best_fit(t->left, mem, cpu);
        if (found)
            return found;
        if (t->cpu >= cpu)
            return t;
        return first_cpu(t->right, cpu);
    }
    return NULL;
}

struct cap_node *cap_index_best_fit(const struct cap_index *ix, uint32_t mem, uint32_t cpu)
{
    return best_fit(ix->root, mem, cpu);
}
