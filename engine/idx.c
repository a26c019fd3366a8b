/* SPDX-License-Identifier: MIT */
/*
 * idx.c -- the open-addressing id index; design and invariants in idx.h.
 * Invariant: every occupied slot is reachable from its home slot without
 * crossing an empty one, and n <= 3/4 of capacity (so a probe for a missing
 * key always meets an empty slot).
 */
#include "engine/idx.h"

#include <string.h>

int idx_init(struct idx *t, struct mem *m, uint32_t cap)
{
    t->slots = mem_calloc(m, MEM_OTHER, (size_t)cap * sizeof(struct idx_slot));
    if (!t->slots)
        return -1;
    t->mask = cap - 1;
    t->n = 0;
    return 0;
}

void idx_free(struct idx *t, struct mem *m)
{
    mem_free(m, MEM_OTHER, t->slots, idx_bytes(t));
    t->slots = NULL;
    t->mask = 0;
    t->n = 0;
}

static void put_raw(struct idx_slot *slots, uint32_t mask, uint64_t key, uint32_t val)
{
    uint32_t pos = (uint32_t)idx_mix(key) & mask;
    while (slots[pos].val != 0)
        pos = (pos + 1) & mask;
    slots[pos].key = key;
    slots[pos].val = val;
}

int idx_reserve(struct idx *t, struct mem *m, uint64_t extra)
{
    uint64_t cap = (uint64_t)t->mask + 1;
    uint64_t want = (uint64_t)t->n + extra;
    if (want * 4 <= cap * 3)
        return 0;
    while (want * 4 > cap * 3)
        cap *= 2;
    if (cap > ((uint64_t)1 << 31))
        return -1;
    struct idx_slot *ns = mem_calloc(m, MEM_OTHER, (size_t)cap * sizeof(*ns));
    if (!ns)
        return -1;
    uint32_t nmask = (uint32_t)(cap - 1);
    for (uint64_t i = 0; i <= t->mask; i++)
        if (t->slots[i].val != 0)
            put_raw(ns, nmask, t->slots[i].key, t->slots[i].val);
    mem_free(m, MEM_OTHER, t->slots, idx_bytes(t));
    t->slots = ns;
    t->mask = nmask;
    return 0;
}

void idx_put(struct idx *t, uint64_t key, uint32_t id)
{
    put_raw(t->slots, t->mask, key, id + 1);
    t->n++;
}

void idx_del(struct idx *t, uint64_t key, uint32_t id)
{
    uint32_t i = idx_home(t, key);
    while (!(t->slots[i].key == key && t->slots[i].val == id + 1))
        i = (i + 1) & t->mask;
    /* Backward shift: pull later members of the run into the hole unless
     * their home lies cyclically in (hole, j], where they must stay. */
    for (uint32_t j = i;;) {
        j = (j + 1) & t->mask;
        if (t->slots[j].val == 0)
            break;
        uint32_t k = idx_home(t, t->slots[j].key);
        bool stay = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (stay)
            continue;
        t->slots[i] = t->slots[j];
        i = j;
    }
    memset(&t->slots[i], 0, sizeof(t->slots[i]));
    t->n--;
}
