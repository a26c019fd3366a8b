/* SPDX-License-Identifier: MIT */
/*
 * idx.h -- open-addressing index from a 64-bit key to a dense u32 id
 * (internal to engine/). Used for shorts (key = short id), users (key =
 * user id), sessions (key = the session's fingerprint) and interned user
 * agents and platforms (key = XXH3 of the bytes).
 *
 * Why not uthash: a uthash lookup walks a bucket chain through the items
 * themselves (one cache miss per hop, chains grow to several items before
 * it expands) and costs a 56-byte handle per item. Here the key sits in the
 * slot, so a lookup is one miss on the slot array and then the caller's one
 * miss on the item it wanted; the slot costs 16 bytes at <= 3/4 load.
 *
 * Layout: power-of-two array of {key, val}; val 0 = empty, else id + 1.
 * Linear probing from mix(key) & mask. Keys need not be unique (two
 * session strings may share a 64-bit hash): callers that can collide walk
 * every slot with their key (idx_next) and compare the item. Deletion is
 * backward-shift, so there are no tombstones and probe runs stay short.
 * Capacity only grows, and only in idx_reserve, so insertion never fails.
 */
#ifndef SHORTSTAT_ENG_IDX_H
#define SHORTSTAT_ENG_IDX_H

#include <stdint.h>

#include "engine/mem.h"

struct idx_slot {
    uint64_t key;
    uint32_t val;  /* 0 = empty, else id + 1 */
    uint32_t pad_;
};

struct idx {
    struct idx_slot *slots;
    uint32_t mask;  /* capacity - 1 */
    uint32_t n;     /* occupied slots */
};

/* murmur3's 64-bit finaliser: sequential ids scatter over the table. */
static inline uint64_t idx_mix(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

static inline uint32_t idx_home(const struct idx *t, uint64_t key)
{
    return (uint32_t)idx_mix(key) & t->mask;
}

/* First slot at or after pos holding key, or the empty slot ending the run
 * (check ->val). Start with pos = idx_home(); continue with pos + 1. */
static inline uint32_t idx_next(const struct idx *t, uint64_t key, uint32_t pos)
{
    for (pos &= t->mask;; pos = (pos + 1) & t->mask) {
        const struct idx_slot *s = &t->slots[pos];
        if (s->val == 0 || s->key == key)
            return pos;
    }
}

/* For unique keys: id + 1, or 0 when absent. */
static inline uint32_t idx_find(const struct idx *t, uint64_t key)
{
    return t->slots[idx_next(t, key, idx_home(t, key))].val;
}

static inline void idx_prefetch(const struct idx *t, uint64_t key)
{
    __builtin_prefetch(&t->slots[idx_home(t, key)]);
}

int idx_init(struct idx *t, struct mem *m, uint32_t cap);  /* cap: power of two */
void idx_free(struct idx *t, struct mem *m);
/* Make room for `extra` more keys; 0 or -1 (ENOMEM, table unchanged). */
int idx_reserve(struct idx *t, struct mem *m, uint64_t extra);
/* Insert (room must have been reserved). */
void idx_put(struct idx *t, uint64_t key, uint32_t id);
/* Remove the slot holding (key, id); it must exist. */
void idx_del(struct idx *t, uint64_t key, uint32_t id);
static inline size_t idx_bytes(const struct idx *t)
{
    return ((size_t)t->mask + 1) * sizeof(struct idx_slot);
}

#endif
