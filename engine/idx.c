/* SPDX-License-Identifier: MIT */
/*
 * idx.c -- the open-addressing id index; design and invariants in idx.h.
 * Invariants: every occupied slot of the new table is reachable from its
 * home slot without crossing an empty one; every un-moved entry of old
 * (index >= mig, not IDX_TOMB) likewise in old, where slots below mig that
 * held an entry count as occupied; n = entries in slots + on, and
 * n <= 3/4 of the new table's capacity, so the new table can take every
 * entry still in old and a probe for a missing key meets an empty slot.
 *
 * Pace: growth doubles at least, so after a growth to 2C slots there are
 * >= 3C/4 - extra inserts before the next one, and IDX_STEP slots per
 * reserve move old's C slots in C / IDX_STEP reserves: one-at-a-time
 * callers never catch up with a growth in progress. A bulk reserve that
 * would (growth while old still exists) first finishes the move; its cost
 * is O(n), the price of the bulk insert it makes room for.
 */
#include "engine/idx.h"

#include <string.h>

#define IDX_STEP 16u  /* old slots moved per reserve: ~12 keys, a few us */

int idx_init(struct idx *t, struct mem *m, uint32_t cap)
{
    memset(t, 0, sizeof(*t));
    t->slots = mem_calloc(m, MEM_OTHER, (size_t)cap * sizeof(struct idx_slot));
    if (!t->slots)
        return -1;
    t->mask = cap - 1;
    return 0;
}

static void old_free(struct idx *t, struct mem *m)
{
    mem_free(m, MEM_OTHER, t->old, ((size_t)t->omask + 1) * sizeof(struct idx_slot));
    t->old = NULL;
    t->omask = 0;
    t->mig = 0;
    t->on = 0;
}

static void next_free(struct idx *t, struct mem *m)
{
    mem_free(m, MEM_OTHER, t->next, ((size_t)t->nmask + 1) * sizeof(struct idx_slot));
    t->next = NULL;
    t->nmask = 0;
    t->ntouched = 0;
}

void idx_free(struct idx *t, struct mem *m)
{
    if (t->old)
        old_free(t, m);
    if (t->next)
        next_free(t, m);
    mem_free(m, MEM_OTHER, t->slots, ((size_t)t->mask + 1) * sizeof(struct idx_slot));
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

void idx_migrate(struct idx *t, struct mem *m, uint32_t budget)
{
    if (!t->old)
        return;
    uint64_t end = (uint64_t)t->omask + 1;
    while (budget > 0 && t->on > 0 && t->mig < end) {
        const struct idx_slot *s = &t->old[t->mig];
        if (s->val != 0 && s->val != IDX_TOMB) {
            put_raw(t->slots, t->mask, s->key, s->val);
            t->on--;
        }
        t->mig++;
        budget--;
    }
    /* on == 0: what is left of old holds only tombstones and empties. */
    if (t->on == 0)
        old_free(t, m);
}

int idx_reserve(struct idx *t, struct mem *m, uint64_t extra)
{
    uint64_t step = IDX_STEP + 4 * (extra < UINT32_MAX ? extra : UINT32_MAX);
    if (t->old)
        idx_migrate(t, m, step < UINT32_MAX ? (uint32_t)step : UINT32_MAX);
    uint64_t cap = (uint64_t)t->mask + 1;
    uint64_t want = (uint64_t)t->n + extra;
    if (t->next && (size_t)t->ntouched * 4096 < ((size_t)t->nmask + 1) * sizeof(struct idx_slot)) {
        /* still all zero, so storing zero changes nothing but residency */
        ((volatile char *)t->next)[(size_t)t->ntouched * 4096] = 0;
        t->ntouched++;
    }
    if (want * 4 <= cap * 3) {
        /* Optional and ahead of need: an allocation that may fail without
         * consequence, so it is not one of the counted (injectable) ones. */
        if (want * 8 > cap * 5 && !t->next && m->populate && cap * 2 <= IDX_CAP_MAX &&
            mem_is_large((size_t)cap * 2 * sizeof(struct idx_slot))) {
            size_t bytes = (size_t)cap * 2 * sizeof(struct idx_slot);
            if ((t->next = mem_sys_calloc(bytes))) {
                m->bytes[MEM_OTHER] += bytes;
                t->nmask = (uint32_t)(cap * 2 - 1);
                t->ntouched = 0;
                mem_fresh(m, t->next, 0, bytes);
            }
        }
        return 0;
    }
    while (want * 4 > cap * 3)
        cap *= 2;
    if (cap > IDX_CAP_MAX)
        return -1;
    struct idx_slot *ns;
    if (t->next && (uint64_t)t->nmask + 1 == cap) {
        ns = t->next;  /* still all zero: nothing was ever stored in it */
        t->next = NULL;
        t->nmask = 0;
        t->ntouched = 0;
    } else if (!(ns = mem_calloc(m, MEM_OTHER, (size_t)cap * sizeof(*ns)))) {
        return -1;
    } else if (t->next) {
        next_free(t, m);  /* a bulk reserve outgrew it */
    }
    /* Room is only counted in the newest table; a growth still in progress
     * is finished first so there are never three tables. */
    if (t->old)
        idx_migrate(t, m, UINT32_MAX);
    t->old = t->slots;
    t->omask = t->mask;
    t->mig = 0;
    t->on = t->n;
    t->slots = ns;
    t->mask = (uint32_t)(cap - 1);
    idx_migrate(t, m, step < UINT32_MAX ? (uint32_t)step : UINT32_MAX);
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
    for (; t->slots[i].val != 0; i = (i + 1) & t->mask)
        if (t->slots[i].key == key && t->slots[i].val == id + 1)
            break;
    if (t->slots[i].val == 0) {
        /* Not moved yet: it is in old, at or above the cursor. */
        uint32_t j = (uint32_t)idx_mix(key) & t->omask;
        while (!(j >= t->mig && t->old[j].key == key && t->old[j].val == id + 1))
            j = (j + 1) & t->omask;
        t->old[j].val = IDX_TOMB;
        t->on--;
        t->n--;
        return;
    }
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

/* 0 when val (id + 1) is found by a walk of key. */
static int reachable(const struct idx *t, uint64_t key, uint32_t val)
{
    struct idx_walk w = idx_walk_start(t, key);
    for (uint32_t v; (v = idx_walk_next(t, key, &w));)
        if (v == val)
            return 0;
    return -1;
}

int idx_check(const struct idx *t)
{
    uint64_t n = 0, on = 0;
    for (uint64_t i = 0; i <= t->mask; i++) {
        const struct idx_slot *s = &t->slots[i];
        if (s->val == 0)
            continue;
        if (s->val == IDX_TOMB || reachable(t, s->key, s->val))
            return -1;
        n++;
    }
    if (t->old) {
        /* a finished move frees old; deletes may empty it first (on == 0),
         * and the next idx_migrate or idx_reserve frees it then */
        if (t->mig > t->omask)
            return -1;
        for (uint64_t i = t->mig; i <= t->omask; i++) {
            const struct idx_slot *s = &t->old[i];
            if (s->val == 0 || s->val == IDX_TOMB)
                continue;
            if (reachable(t, s->key, s->val))
                return -1;
            on++;
        }
    }
    if (on != t->on || n + on != t->n || (uint64_t)t->n * 4 > ((uint64_t)t->mask + 1) * 3)
        return -1;
    return 0;
}
