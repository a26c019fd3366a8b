/* SPDX-License-Identifier: MIT */
/*
 * vset.h -- a short's set of viewer (or saver) fingerprints (internal).
 *
 * An open-addressing array of 64-bit fingerprints: capacity a power of two,
 * linear probing from fp & mask, 0 marks an empty slot (a fingerprint of 0
 * is stored as 1, see vset_key). Load is kept <= 7/8 and a set starts at
 * capacity 2, so the table costs 8 * cap / n bytes per member: between 9.1
 * and 18.3, about 13 on average -- against 56+ for one uthash node each.
 * Members are never removed (a viewer stays a viewer), so there is no
 * deletion. Growth happens only in vset_reserve, which may fail; vset_add
 * then cannot, which is what lets a batch reserve first and apply after.
 */
#ifndef SHORTSTAT_ENG_VSET_H
#define SHORTSTAT_ENG_VSET_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/mem.h"

struct vset {
    uint64_t *slots;  /* NULL when cap == 0 */
    uint32_t cap;     /* 0 or a power of two */
    uint32_t n;       /* members */
};

static inline uint64_t vset_key(uint64_t fp)
{
    return fp ? fp : 1;
}

/* True when n members fit in cap slots under the 7/8 load limit. */
static inline bool vset_fits(uint64_t n, uint64_t cap)
{
    return n * 8 <= cap * 7;
}

bool vset_has(const struct vset *s, uint64_t fp);
/* Room for `extra` more members; 0, or -1 on ENOMEM (set unchanged). */
int vset_reserve(struct vset *s, struct mem *m, uint32_t extra);
/* Adds fp (room must be reserved); true if it was new. */
bool vset_add(struct vset *s, uint64_t fp);
void vset_free(struct vset *s, struct mem *m);

/* always_inline: see idx_prefetch. */
__attribute__((always_inline)) static inline void vset_prefetch(const struct vset *s, uint64_t fp)
{
    if (s->cap)
        __builtin_prefetch(&s->slots[vset_key(fp) & (s->cap - 1)]);
}

#endif
