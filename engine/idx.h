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
 * every slot with their key (idx_walk_next) and compare the item. Deletion
 * is backward-shift, so there are no tombstones and probe runs stay short.
 * Capacity only grows, and only in idx_reserve, so insertion never fails.
 *
 * Incremental growth (as Redis's dict rehashes): growing allocates the new
 * table and makes the current one `old`; every later idx_reserve and
 * idx_migrate moves a bounded number of old slots, in index order, into
 * the new table, and inserts go to the new table only. While old exists a
 * key lives in exactly one of the two tables, so lookups and walks consult
 * the new table and then the old one. Rehashing 1M sessions in one call
 * stalled the server's loop for 181 ms; this way no call does O(n) work
 * (a reserve for `extra` keys moves O(extra) slots, which its caller's
 * inserts cost anyway).
 *
 * The old table is never inserted into and never backward-shifts, so its
 * probe runs never change shape and an un-moved entry stays reachable:
 *  - a moved slot (index < mig) is not written; it reads as a tombstone
 *    (skipped by walks, never matched) when it held an entry, and as the
 *    empty slot ending a run when it was empty;
 *  - deleting an un-moved entry writes IDX_TOMB over it. Backward shift here
 *    could pull an entry from above the cursor to below it, where it would
 *    count as moved and be lost; a tombstone moves nothing.
 * Its empty slots are never filled, so every walk still meets one.
 *
 * The new table is the one lookups hit at random from the first moment,
 * so its pages are first touched all at once: on a VM that pays
 * milliseconds per fresh huge page that was a 60-100 ms stall for a 32 MB
 * table. With a populate hook (mem.h), the next table (twice the size) is
 * mapped when the load passes 5/8 and handed to the hook, which has until
 * 3/4 to fault it in; growth then takes it instead of mapping one. Each
 * reserve meanwhile touches one more of its pages itself, so a hook that
 * falls behind (a thread starved of CPU) still leaves the table resident
 * when it is taken: its huge pages fault one per reserve that reaches one,
 * milliseconds each, instead of all of them in the first batch after the
 * switch. Without a hook nothing is mapped early (it would only cost
 * memory sooner).
 */
#ifndef SHORTSTAT_ENG_IDX_H
#define SHORTSTAT_ENG_IDX_H

#include <stdint.h>

#include "engine/mem.h"

struct idx_slot {
    uint64_t key;
    uint32_t val;  /* 0 = empty, else id + 1; IDX_TOMB (old table only) = deleted */
    uint32_t pad_;
};

/* Ids stay below 2^31 (the capacity limit), so id + 1 never reaches it. */
#define IDX_TOMB UINT32_MAX
#define IDX_CAP_MAX ((uint64_t)1 << 31)  /* slots of the largest table, filled to 3/4 */

struct idx {
    struct idx_slot *slots;  /* the table inserts go to */
    uint32_t mask;           /* capacity - 1 */
    uint32_t n;              /* keys in both tables; n <= 3/4 of capacity */
    struct idx_slot *old;    /* the table being moved into slots, or NULL */
    uint32_t omask;
    uint32_t mig;            /* old slots below this have been moved */
    uint32_t on;             /* keys still in old */
    struct idx_slot *next;   /* with a populate hook: the next table, mapped early */
    uint32_t nmask;          /* its capacity - 1 */
    uint32_t ntouched;       /* 4 KiB pages of next touched by idx_reserve so far */
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

/* A walk over every id stored under one key, in both tables:
 *   struct idx_walk w = idx_walk_start(t, key);
 *   for (uint32_t v; (v = idx_walk_next(t, key, &w));) ... id v - 1 ...
 * The index must not change during the walk. */
struct idx_walk {
    uint32_t pos;
    uint32_t in_old;
};

static inline struct idx_walk idx_walk_start(const struct idx *t, uint64_t key)
{
    return (struct idx_walk){.pos = idx_home(t, key), .in_old = 0};
}

/* The next id + 1 stored under key, or 0 when there is none (then again 0). */
static inline uint32_t idx_walk_next(const struct idx *t, uint64_t key, struct idx_walk *w)
{
    if (!w->in_old) {
        for (;; w->pos = (w->pos + 1) & t->mask) {
            const struct idx_slot *s = &t->slots[w->pos];
            if (s->val == 0)
                break;
            if (s->key == key) {
                w->pos = (w->pos + 1) & t->mask;
                return s->val;
            }
        }
        if (!t->old)
            return 0;
        w->in_old = 1;
        w->pos = (uint32_t)idx_mix(key) & t->omask;
    }
    if (!t->old)
        return 0;
    for (;; w->pos = (w->pos + 1) & t->omask) {
        const struct idx_slot *s = &t->old[w->pos];
        if (s->val == 0)
            return 0;
        if (s->key == key && w->pos >= t->mig && s->val != IDX_TOMB) {
            w->pos = (w->pos + 1) & t->omask;
            return s->val;
        }
    }
}

/* For unique keys: id + 1, or 0 when absent. */
static inline uint32_t idx_find(const struct idx *t, uint64_t key)
{
    struct idx_walk w = idx_walk_start(t, key);
    return idx_walk_next(t, key, &w);
}

/* always_inline: GCC 12 otherwise finds this call free of side effects
 * (a prefetch "does nothing") and deletes it before inlining. */
__attribute__((always_inline)) static inline void idx_prefetch(const struct idx *t, uint64_t key)
{
    __builtin_prefetch(&t->slots[idx_home(t, key)]);
    if (t->old)
        __builtin_prefetch(&t->old[(uint32_t)idx_mix(key) & t->omask]);
}

int idx_init(struct idx *t, struct mem *m, uint32_t cap);  /* cap: power of two */
void idx_free(struct idx *t, struct mem *m);
/* Make room for `extra` more keys; 0 or -1 (ENOMEM, contents unchanged).
 * Also moves up to IDX_STEP + 4 * extra slots of a growth in progress. */
int idx_reserve(struct idx *t, struct mem *m, uint64_t extra);
/* Move up to `slots` old slots (housekeeping: eng_tick); frees old when done. */
void idx_migrate(struct idx *t, struct mem *m, uint32_t slots);
/* Insert (room must have been reserved). */
void idx_put(struct idx *t, uint64_t key, uint32_t id);
/* Remove the slot holding (key, id); it must exist. */
void idx_del(struct idx *t, uint64_t key, uint32_t id);
/* Structure check for eng_verify and tests: counts match the tables, the
 * load bound holds and every id is found by a walk of its key. 0 or -1. */
int idx_check(const struct idx *t);
static inline size_t idx_bytes(const struct idx *t)
{
    size_t b = ((size_t)t->mask + 1) * sizeof(struct idx_slot);
    if (t->old)
        b += ((size_t)t->omask + 1) * sizeof(struct idx_slot);
    if (t->next)
        b += ((size_t)t->nmask + 1) * sizeof(struct idx_slot);
    return b;
}

#endif
