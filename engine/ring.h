/* SPDX-License-Identifier: MIT */
/*
 * ring.h -- per-session and per-user history rings (internal).
 *
 * A ring is one block of fixed 24-byte records. `start` is the slot of the
 * oldest record and `len` how many are held; the newest is at
 * (start + len - 1) mod cap. Capacity grows lazily 1, 2, 3, 4, 6, 9, 13,
 * ... (x1.5, capped at the configured history size N, which need not be a
 * power of two): a session that sent two interactions holds two slots, not
 * 64, and a growing ring wastes at most a third of its block, so a record
 * costs 24-36 bytes, about 29 on average (doubling would be 24-48). Indexing
 * is by compare-and-subtract, not a mask. Growth happens only while cap < N, when the ring has never
 * wrapped, so the records are contiguous from slot 0 and a realloc keeps
 * them in order. Once cap == N a push overwrites the oldest record and hands
 * it back so the caller can drop the context reference it held.
 *
 * Growth happens only in ring_reserve (may fail); ring_push cannot fail.
 */
#ifndef SHORTSTAT_ENG_RING_H
#define SHORTSTAT_ENG_RING_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/mem.h"

enum { REC_HAS_WATCH = 1 };

/* One history record. The short is its dense index (not the u64 id), the
 * who-and-where is an interned context id, the platform an interned u16. */
struct rec {
    int64_t ts;
    uint32_t short_ix;
    uint32_t watch_ms;
    uint32_t ctx;
    uint16_t platform;
    uint8_t type;
    uint8_t flags;  /* REC_HAS_WATCH */
};
_Static_assert(sizeof(struct rec) == 24, "history record must stay 24 bytes");

struct ring {
    struct rec *recs;  /* NULL when cap == 0 */
    uint32_t cap;
    uint32_t start;    /* oldest */
    uint32_t len;
};

static inline uint32_t ring_next_cap(uint32_t cap, uint32_t n)
{
    uint32_t next = cap < 4 ? cap + 1 : cap + cap / 2;
    return next < n ? next : n;
}

/* Capacity for at least `want` records (want <= n, the history size).
 * 0, or -1 on ENOMEM (ring unchanged). */
int ring_reserve(struct ring *r, struct mem *m, uint32_t want, uint32_t n);
/* Appends; returns true and copies the overwritten oldest record to *old
 * when the ring was full. Room must have been reserved (len < cap, or
 * cap == N). */
bool ring_push(struct ring *r, const struct rec *rec, struct rec *old);
/* i-th newest (0 = newest), i < len. */
static inline const struct rec *ring_newest(const struct ring *r, uint32_t i)
{
    uint32_t pos = r->start + r->len - 1 - i;
    if (pos >= r->cap)
        pos -= r->cap;
    return &r->recs[pos];
}
/* i-th oldest (0 = oldest), i < len. */
static inline const struct rec *ring_oldest(const struct ring *r, uint32_t i)
{
    uint32_t pos = r->start + i;
    if (pos >= r->cap)
        pos -= r->cap;
    return &r->recs[pos];
}
/* Forget every record (the caller drops their references first). */
static inline void ring_clear(struct ring *r)
{
    r->start = 0;
    r->len = 0;
}
void ring_free(struct ring *r, struct mem *m);

#endif
