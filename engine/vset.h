/* SPDX-License-Identifier: MIT */
/*
 * vset.h -- a short's set of viewer (or saver) fingerprints (internal).
 *
 * An open-addressing array of 64-bit fingerprints, 0 marking an empty slot
 * (a fingerprint of 0 is stored as 1, see vset_key). Any capacity: a key's
 * home slot is its high half scaled to [0, cap) (vset_home), probing is
 * linear and wraps. Load rule (vset_fits): a table of up to VSET_FULL
 * slots may fill all but one -- it spans at most three cache lines, so a
 * miss scans little more than the first fetch brings; bigger tables stay
 * <= 7/8 full. The one empty slot ends every probe. Growth is by cap / 8
 * slots, at least min(cap, 4) (vset_grow_cap: 2, 4, 8, 12, ..., 40, 45,
 * 50, 56, ...): one slot at a time meant a rehash per member while small
 * (+6% engine instructions over doubling, on the bench's workload under
 * cachegrind; this rule costs +1.7%). A table
 * costs 8 * cap / n bytes per member: 16 for one member, 9.1 to 16 (12.6
 * on average) for 2 to 7, 8.5 to 12 for 8 to 15, 9.1 to 10.7 from 16 on
 * (about 9.7) -- against 56+ for one uthash node each.
 * Members are never removed (a viewer stays a viewer), so there is no
 * deletion. Growth happens only in vset_reserve, which may fail; vset_add
 * then cannot, which is what lets a batch reserve first and apply after.
 *
 * Storage (struct vheap): growing by 1/8 frees a table a little smaller
 * than the new one, and a size-class free list would keep it for a set of
 * exactly that size -- which, as sets only grow, often never comes (the
 * pool cost about 6.6 B per pair that way). So tables of up to
 * VSET_SLAB_MAX slots live in slabs, one per capacity, kept dense: a freed
 * table's place is filled by the class's last table, whose owner is told
 * its new address, and a slab page that empties serves any class next.
 * Each table's owner is a 32-bit id that the heap maps back to the
 * struct vset (the engine: short index * 2 + 1 for savers), stored in the
 * page header. So vset_reserve and vset_free may move OTHER sets of the
 * heap: a pointer into a set's slots is valid only until the next
 * vset_reserve or vset_free on the same heap (struct vset handles stay
 * valid; their slots field is updated). Bigger tables come from mem.h's
 * pool or malloc and never move.
 *
 * Pages are VSET_PAGE bytes, aligned to their size, carved from mapped
 * regions (64 KiB doubling to 2 MiB, like the pool's chunks); a page
 * starts with the link to its class's previous page and the owner ids.
 * Free pages are never unmapped before vheap_release.
 */
#ifndef SHORTSTAT_ENG_VSET_H
#define SHORTSTAT_ENG_VSET_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/mem.h"

struct vset {
    uint64_t *slots;  /* NULL when cap == 0 */
    uint32_t cap;
    uint32_t n;       /* members */
};

#define VSET_FULL 16u                     /* tables this small may fill up to cap - 1 */
#define VSET_GROW_DIV 8u                  /* growth step: cap / 8 slots ... */
#define VSET_GROW_MIN 4u                  /* ... but at least min(cap, 4) */
#define VSET_CAP_MAX ((uint64_t)1 << 31)
#define VSET_SLAB_MAX 64u                 /* tables up to this many slots live in slabs */
#define VSET_PAGE ((size_t)16 << 10)

struct vpage;

struct vclass {
    struct vpage *tail;  /* the only page that may be partly used; NULL if none */
    uint32_t tail_n;     /* tables in it */
    uint32_t per_page;   /* 0 until first used */
    uint32_t off;        /* byte offset of the first table in a page */
};

/* Maps an owner id to its handle; called when a table moves. */
typedef struct vset *(*vset_owner_fn)(void *ud, uint32_t owner);

struct vheap {
    struct mem *m;
    vset_owner_fn owner;
    void *ud;
    struct vclass cls[VSET_SLAB_MAX + 1];  /* by capacity */
    struct vpage *free_pages;              /* linked through their first word */
    char *cur, *end;                       /* uncarved part of the newest region */
    void **regions;                        /* [nregions] starts; sizes double */
    uint32_t nregions, regions_cap;
    uint64_t region_bytes;
};

void vheap_init(struct vheap *h, struct mem *m, vset_owner_fn owner, void *ud);
/* Unmaps every region; tables still in slabs go with them (their handles
 * must not be used again). Bigger tables must be vset_free'd first. */
void vheap_release(struct vheap *h);
/* Checks every slab table's owner (an id below `owners`) points back at it
 * with its capacity; the number of tables in slabs, or -1. For eng_verify. */
int64_t vheap_verify(const struct vheap *h, uint64_t owners);

static inline uint64_t vset_key(uint64_t fp)
{
    return fp ? fp : 1;
}

/* True when n members fit in cap slots under the load rule. */
static inline bool vset_fits(uint64_t n, uint64_t cap)
{
    return cap <= VSET_FULL ? n < cap : n * 8 <= cap * 7;
}

/* Home slot: the key's high half scaled to [0, cap) (Lemire's
 * multiply-shift), so cap need not be a power of two. */
static inline uint32_t vset_home(uint64_t key, uint32_t cap)
{
    return (uint32_t)(((key >> 32) * cap) >> 32);
}

/* The capacity vset_reserve grows a cap-slot table to for `want` members. */
uint64_t vset_grow_cap(uint64_t cap, uint64_t want);

bool vset_has(const struct vset *s, uint64_t fp);
/* Room for `extra` more members; 0, or -1 on ENOMEM (set unchanged). May
 * move other sets' slots (see above). `owner` is s's id in h. */
int vset_reserve(struct vset *s, struct vheap *h, uint32_t owner, uint32_t extra);
/* Adds fp (room must be reserved); true if it was new. */
bool vset_add(struct vset *s, uint64_t fp);
/* May move other sets' slots. */
void vset_free(struct vset *s, struct vheap *h);
/* Before vheap_release: frees s only if it is outside the slabs. */
void vset_drop(struct vset *s, struct vheap *h);

/* always_inline: see idx_prefetch. */
__attribute__((always_inline)) static inline void vset_prefetch(const struct vset *s, uint64_t fp)
{
    if (s->cap)
        __builtin_prefetch(&s->slots[vset_home(vset_key(fp), s->cap)]);
}

#endif
