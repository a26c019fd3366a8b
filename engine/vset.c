/* SPDX-License-Identifier: MIT */
/*
 * vset.c -- compact fingerprint sets; layout and load rule in vset.h.
 * Invariant: n <= 7/8 cap, so every probe meets an empty slot; each member
 * is reachable from fp & (cap - 1) without crossing an empty slot.
 * Tables up to POOL_MAX bytes (512 slots) come from the engine's pool.
 */
#include "engine/vset.h"

static uint32_t find_slot(const uint64_t *slots, uint32_t cap, uint64_t key)
{
    uint32_t mask = cap - 1;
    uint32_t i = (uint32_t)key & mask;
    while (slots[i] != 0 && slots[i] != key)
        i = (i + 1) & mask;
    return i;
}

bool vset_has(const struct vset *s, uint64_t fp)
{
    if (s->cap == 0)
        return false;
    uint64_t key = vset_key(fp);
    return s->slots[find_slot(s->slots, s->cap, key)] == key;
}

int vset_reserve(struct vset *s, struct mem *m, uint32_t extra)
{
    uint64_t want = (uint64_t)s->n + extra;
    if (vset_fits(want, s->cap))
        return 0;
    uint64_t cap = s->cap ? (uint64_t)s->cap * 2 : 2;
    while (!vset_fits(want, cap))
        cap *= 2;
    if (cap > ((uint64_t)1 << 31))
        return -1;
    uint64_t *ns = mem_pool_calloc(m, MEM_VIEWERS, (size_t)cap * sizeof(uint64_t));
    if (!ns)
        return -1;
    for (uint32_t i = 0; i < s->cap; i++)
        if (s->slots[i] != 0)
            ns[find_slot(ns, (uint32_t)cap, s->slots[i])] = s->slots[i];
    mem_pool_free(m, MEM_VIEWERS, s->slots, (size_t)s->cap * sizeof(uint64_t));
    s->slots = ns;
    s->cap = (uint32_t)cap;
    return 0;
}

bool vset_add(struct vset *s, uint64_t fp)
{
    uint64_t key = vset_key(fp);
    uint32_t i = find_slot(s->slots, s->cap, key);
    if (s->slots[i] == key)
        return false;
    s->slots[i] = key;
    s->n++;
    return true;
}

void vset_free(struct vset *s, struct mem *m)
{
    mem_pool_free(m, MEM_VIEWERS, s->slots, (size_t)s->cap * sizeof(uint64_t));
    s->slots = NULL;
    s->cap = 0;
    s->n = 0;
}
