/* SPDX-License-Identifier: MIT */
/*
 * mem.h -- the engine's allocator wrapper (internal to engine/).
 *
 * Every engine allocation goes through these so that eng_info() can report
 * bytes in use by category and tests can make the Nth allocation fail
 * (Lua's ltests.c allocator does the same). Callers pass the size back on
 * free and realloc -- they always know it, since every block is a table with
 * a capacity -- so there is no per-block header. Counts are of requested
 * bytes; malloc's own per-chunk overhead is not included.
 *
 * Failure injection: when fail_at != 0, the allocation whose running number
 * equals fail_at returns NULL (once). A failed realloc leaves the old block.
 */
#ifndef SHORTSTAT_ENG_MEM_H
#define SHORTSTAT_ENG_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

enum mem_cat {
    MEM_OTHER = 0,  /* indexes, shorts, sessions, users, contexts, columns */
    MEM_RECORDS,    /* history ring storage */
    MEM_VIEWERS,    /* viewer and saver sets */
    MEM_NCAT
};

struct mem {
    uint64_t bytes[MEM_NCAT];
    uint64_t nallocs;   /* allocations attempted so far */
    uint64_t fail_at;   /* 0 = never fail */
};

static inline bool mem_injected_failure(struct mem *m)
{
    m->nallocs++;
    return m->fail_at != 0 && m->nallocs == m->fail_at;
}

static inline void *mem_alloc(struct mem *m, enum mem_cat c, size_t n)
{
    if (mem_injected_failure(m))
        return NULL;
    void *p = malloc(n ? n : 1);
    if (p)
        m->bytes[c] += n;
    return p;
}

static inline void *mem_calloc(struct mem *m, enum mem_cat c, size_t n)
{
    if (mem_injected_failure(m))
        return NULL;
    void *p = calloc(1, n ? n : 1);
    if (p)
        m->bytes[c] += n;
    return p;
}

/* 64-byte aligned, zeroed: arrays of cache-line-sized structs. */
static inline void *mem_calloc_aligned(struct mem *m, enum mem_cat c, size_t n)
{
    if (mem_injected_failure(m))
        return NULL;
    size_t rounded = (n + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (p) {
        __builtin_memset(p, 0, rounded);
        m->bytes[c] += n;
    }
    return p;
}

static inline void *mem_realloc(struct mem *m, enum mem_cat c, void *p, size_t old, size_t n)
{
    if (mem_injected_failure(m))
        return NULL;
    void *q = realloc(p, n ? n : 1);
    if (q) {
        m->bytes[c] -= old;
        m->bytes[c] += n;
    }
    return q;
}

static inline void mem_free(struct mem *m, enum mem_cat c, void *p, size_t n)
{
    if (!p)
        return;
    m->bytes[c] -= n;
    free(p);
}

#endif
