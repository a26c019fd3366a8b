/* SPDX-License-Identifier: MIT */
/*
 * ring.h -- per-session and per-user history rings (internal).
 *
 * A ring is one block of fixed 20-byte records. `start` is the slot of the
 * oldest record and `len` how many are held; the newest is at
 * (start + len - 1) mod cap. Capacity grows lazily 1, 2, 3, 4, 6, 9, 13,
 * ... (x1.5, capped at the configured history size N, which need not be a
 * power of two): a session that sent two interactions holds two slots, not
 * 64, and a growing ring wastes at most a third of its block, so a record
 * costs 20-30 bytes, about 24 on average (doubling would be 20-40). Indexing
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

#include "engine/eng.h"
#include "engine/mem.h"

/* One history record, 20 bytes: five u32s, so a block of them needs only
 * 4-byte alignment and a record is 5/6 of the obvious 24-byte struct. The
 * short is its dense index (not the u64 id), the who-and-where an interned
 * context id. ts (0..ENG_TS_MAX < 2^48 ms) is split into ts_lo and the low
 * 16 bits of meta; above them sit the type (3 bits) and REC_HAS_WATCH. arg
 * is watch_ms on a view that carries it and the interned platform id on a
 * share: the engine accepts watch_ms only on views and a platform only on
 * shares, so one word holds whichever the type allows. Build records with
 * rec_make and read them with the accessors below; nothing else depends on
 * the packing. */
enum { REC_TS_HI_BITS = 16, REC_TYPE_SHIFT = 16, REC_HAS_WATCH = 1u << 19 };

struct rec {
    uint32_t ts_lo;
    uint32_t meta;      /* ts bits 32..47 | type << 16 | REC_HAS_WATCH */
    uint32_t short_ix;
    uint32_t ctx;
    uint32_t arg;       /* view: watch_ms; share: platform id; else 0 */
};
_Static_assert(sizeof(struct rec) == 20, "history record must stay 20 bytes");
_Static_assert(ENG_TS_MAX < (1ll << 48), "ts must fit 48 bits");
_Static_assert(ENG_T_COUNT <= 8, "type must fit 3 bits");

static inline struct rec rec_make(int64_t ts, uint32_t short_ix, uint32_t ctx, int type,
                                  bool has_watch, uint32_t watch_ms, uint16_t platform)
{
    struct rec r = {
        .ts_lo = (uint32_t)ts,
        .meta = (uint32_t)((uint64_t)ts >> 32) | (uint32_t)type << REC_TYPE_SHIFT |
                (has_watch ? REC_HAS_WATCH : 0),
        .short_ix = short_ix,
        .ctx = ctx,
        .arg = has_watch ? watch_ms : platform,
    };
    return r;
}
static inline int64_t rec_ts(const struct rec *r)
{
    return (int64_t)((uint64_t)(r->meta & 0xffffu) << 32 | r->ts_lo);
}
static inline uint8_t rec_type(const struct rec *r)
{
    return (uint8_t)(r->meta >> REC_TYPE_SHIFT & 7u);
}
static inline bool rec_has_watch(const struct rec *r)
{
    return (r->meta & REC_HAS_WATCH) != 0;
}
static inline uint32_t rec_watch_ms(const struct rec *r)
{
    return rec_has_watch(r) ? r->arg : 0;
}
static inline uint16_t rec_platform(const struct rec *r)
{
    return rec_has_watch(r) ? 0 : (uint16_t)r->arg;
}

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
