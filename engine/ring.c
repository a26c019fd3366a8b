/* SPDX-License-Identifier: MIT */
/*
 * ring.c -- lazily grown history rings; layout and the overwrite-oldest
 * rule are in ring.h. Invariants: len <= cap <= N; start < cap when cap > 0;
 * start == 0 whenever cap < N (a ring only wraps once it is full size).
 * Blocks come from the engine's size-class pool (mem_pool_realloc): growth
 * moves the records to a block of the next size and the old block waits on
 * its size's free list for the next ring growing out of that size.
 */
#include "engine/ring.h"

int ring_reserve(struct ring *r, struct mem *m, uint32_t want, uint32_t n)
{
    if (want > n)
        want = n;
    if (r->cap >= want)
        return 0;
    uint32_t cap = r->cap ? r->cap : 1;
    while (cap < want)
        cap = ring_next_cap(cap, n);
    struct rec *nr = mem_pool_realloc(m, MEM_RECORDS, r->recs,
                                      (size_t)r->cap * sizeof(struct rec),
                                      (size_t)cap * sizeof(struct rec));
    if (!nr)
        return -1;
    /* cap < N before, so start == 0 and the records are already in order. */
    r->recs = nr;
    r->cap = cap;
    return 0;
}

bool ring_push(struct ring *r, const struct rec *rec, struct rec *old)
{
    if (r->len < r->cap) {
        uint32_t pos = r->start + r->len;
        if (pos >= r->cap)
            pos -= r->cap;
        r->recs[pos] = *rec;
        r->len++;
        return false;
    }
    *old = r->recs[r->start];
    r->recs[r->start] = *rec;
    if (++r->start == r->cap)
        r->start = 0;
    return true;
}

void ring_free(struct ring *r, struct mem *m)
{
    mem_pool_free(m, MEM_RECORDS, r->recs, (size_t)r->cap * sizeof(struct rec));
    r->recs = NULL;
    r->cap = 0;
    r->start = 0;
    r->len = 0;
}
