/* SPDX-License-Identifier: MIT */
/*
 * mem.h -- the engine's allocator wrapper (internal to engine/).
 *
 * Every engine allocation goes through these so that eng_info() can report
 * bytes in use by category and tests can make the Nth allocation fail
 * (Lua's ltests.c allocator does the same). Callers pass the size back on
 * free and realloc -- they always know it, since every block is a table with
 * a capacity -- so there is no per-block header. Counts are of requested
 * bytes; the allocator's own overhead (malloc's chunk headers, the pool's
 * free blocks and chunk tails) is not included.
 *
 * Where a block lives is a function of its size alone, which is what lets
 * free and realloc find it without a header:
 *   - n >= MEM_LARGE (1 MiB): its own mapping (mem.c), 2 MiB-aligned and
 *     madvised for transparent huge pages, freed by munmap, grown by mremap:
 *     the engine's dense arrays (sessions, contexts, shorts, index tables)
 *     double without a copy and without faulting the old pages in twice.
 *     1 MiB because below it a block cannot fill a huge page anyway and
 *     glibc's heap is cheap, while above it the copy a heap realloc makes
 *     (~50-100 us per MiB plus the new pages' faults) dwarfs the syscall;
 *     blocks this big are few (tens), so the mappings stay few. glibc's own
 *     mmap threshold is no substitute: it rises to 32 MiB after the first
 *     mapped block is freed, after which big arrays grow inside the heap
 *     by copying.
 *   - everything else: malloc.
 * On top of that, mem_pool_* serve the small tables that exist by the
 * million (history rings; viewer sets past vset.h's slabs, which get their
 * pages from mem_map) from pool.c's size-class pool:
 * blocks of at most POOL_MAX bytes there, bigger ones as above.
 *
 * Fresh memory: with a populate hook (eng_config.populate) the fresh part of
 * every large block is handed to it when mapped, and the regions that are
 * carved from the front (pool chunks, vset slab regions) are mapped one
 * region early (mem_map_ahead's spare) and handed over, so a host thread
 * can fault pages in while the engine is still using the current chunk;
 * the first touch of a huge page, milliseconds on a VM, then happens off
 * the engine's thread. The engine never waits for the hook.
 *
 * Failure injection: when fail_at != 0, the allocation whose running number
 * equals fail_at returns NULL (once; with fail_after, so does every one
 * after it, as when memory stays short and a retry fails too). A failed
 * realloc leaves the old block.
 * Each call that may allocate counts once; a pool call that needs a new
 * chunk counts once more (so the chunk's failure is injectable too).
 */
#ifndef SHORTSTAT_ENG_MEM_H
#define SHORTSTAT_ENG_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/pool.h"

enum mem_cat {
    MEM_OTHER = 0,  /* indexes, shorts, sessions, users, contexts, columns */
    MEM_RECORDS,    /* history ring storage */
    MEM_VIEWERS,    /* viewer and saver sets */
    MEM_NCAT
};

#define MEM_LARGE ((size_t)1 << 20)  /* blocks this big and bigger are mapped */

struct mem {
    uint64_t bytes[MEM_NCAT];
    uint64_t nallocs;   /* allocations attempted so far */
    uint64_t fail_at;   /* 0 = never fail */
    bool fail_after;    /* and every allocation after fail_at fails too */
    struct pool pool;   /* small blocks; released by mem_destroy */
    /* eng_config.populate; with it, mem_map_ahead maps the next region
     * one region early (spare) and hands it over, so the hook has the whole
     * life of the current region to fault the spare in */
    void (*populate)(void *ud, void *addr, size_t len);
    void *populate_ud;
    void *spare;
    size_t spare_bytes;
};


/* ---- large blocks (mem.c): zeroed when new, page-aligned ------------------ */

void *mem_map(size_t n);
void mem_unmap(void *p, size_t n);
/* Faults [p, p + n) in for writing now (MADV_POPULATE_WRITE, Linux 5.14);
 * best effort: on older kernels the first touch does it. p page-aligned. */
void mem_populate(void *p, size_t n);
/* Both sizes >= MEM_LARGE. NULL on failure (the old mapping stays). */
void *mem_remap(void *p, size_t old, size_t n);

static inline bool mem_is_large(size_t n)
{
    return n >= MEM_LARGE;
}

/* ---- the system layer: no accounting, no injection ------------------------ */

static inline void *mem_sys_alloc(size_t n)
{
    return mem_is_large(n) ? mem_map(n) : malloc(n ? n : 1);
}

static inline void *mem_sys_calloc(size_t n)
{
    return mem_is_large(n) ? mem_map(n) : calloc(1, n ? n : 1);
}

static inline void mem_sys_free(void *p, size_t n)
{
    if (!p)
        return;
    if (mem_is_large(n))
        mem_unmap(p, n);
    else
        free(p);
}

/* Contents up to min(old, n) are kept; a failure leaves the old block. */
static inline void *mem_sys_realloc(void *p, size_t old, size_t n)
{
    if (!p)
        return mem_sys_alloc(n);
    bool lo = mem_is_large(old), ln = mem_is_large(n);
    if (!lo && !ln)
        return realloc(p, n ? n : 1);
    if (lo && ln)
        return mem_remap(p, old, n);
    void *q = mem_sys_alloc(n);
    if (q) {
        memcpy(q, p, old < n ? old : n);
        mem_sys_free(p, old);
    }
    return q;
}

/* ---- accounted allocation ------------------------------------------------- */
/* Hand the fresh mapped part [p + from, p + to) of a large block to the
 * populate hook. Small blocks come from malloc's heap, often from reused
 * pages: not worth a hook call. */
static inline void mem_fresh(const struct mem *m, void *p, size_t from, size_t to)
{
    if (m->populate && p && to > from && mem_is_large(to))
        m->populate(m->populate_ud, (char *)p + from, to - from);
}


static inline bool mem_injected_failure(struct mem *m)
{
    m->nallocs++;
    return m->fail_at != 0 && (m->fail_after ? m->nallocs >= m->fail_at : m->nallocs == m->fail_at);
}

static inline void *mem_alloc(struct mem *m, enum mem_cat c, size_t n)
{
    if (mem_injected_failure(m))
        return NULL;
    void *p = mem_sys_alloc(n);
    if (p) {
        m->bytes[c] += n;
        mem_fresh(m, p, 0, n);
    }
    return p;
}

static inline void *mem_calloc(struct mem *m, enum mem_cat c, size_t n)
{
    if (mem_injected_failure(m))
        return NULL;
    void *p = mem_sys_calloc(n);
    if (p) {
        m->bytes[c] += n;
        mem_fresh(m, p, 0, n);
    }
    return p;
}

/* 64-byte aligned, zeroed: arrays of cache-line-sized structs. A mapped
 * block is page-aligned and already zero, so it is not touched here. */
static inline void *mem_calloc_aligned(struct mem *m, enum mem_cat c, size_t n)
{
    if (mem_injected_failure(m))
        return NULL;
    void *p;
    if (mem_is_large(n)) {
        p = mem_map(n);
    } else {
        size_t rounded = (n + 63) & ~(size_t)63;
        p = aligned_alloc(64, rounded ? rounded : 64);
        if (p)
            memset(p, 0, rounded);
    }
    if (p) {
        m->bytes[c] += n;
        mem_fresh(m, p, 0, n);
    }
    return p;
}

static inline void *mem_realloc(struct mem *m, enum mem_cat c, void *p, size_t old, size_t n)
{
    if (mem_injected_failure(m))
        return NULL;
    void *q = mem_sys_realloc(p, old, n);
    if (q) {
        m->bytes[c] -= old;
        m->bytes[c] += n;
        if (mem_is_large(old))
            mem_fresh(m, q, old, n);  /* a remap: only the new part is fresh */
        else
            mem_fresh(m, q, 0, n);    /* mapped anew and the old part copied in */
    }
    return q;
}

static inline void mem_free(struct mem *m, enum mem_cat c, void *p, size_t n)
{
    if (!p)
        return;
    m->bytes[c] -= n;
    mem_sys_free(p, n);
}

/* ---- pooled small blocks (pool.c) ----------------------------------------- */
/* For tables that exist by the million: no header, no malloc call on the
 * way. Sizes up to POOL_MAX come from the pool; bigger ones fall through to
 * the calls above, so callers need not care. A block's alignment is the
 * largest power of two dividing its size, up to 16 (an array of T, whose
 * size is a multiple of alignof(T), is aligned for T). */

int mem_pool_grow(struct mem *m);  /* one more chunk; 0 or -1 */
/* mem_map(n) for a region that will be carved from the front (pool chunks,
 * vset slab regions; no accounting, no injection). With a populate hook,
 * a region of `next` bytes (when large) is mapped now as the spare and
 * handed to it; a later call for that size takes the spare. */
void *mem_map_ahead(struct mem *m, size_t n, size_t next);

static inline void *mem_pool_alloc(struct mem *m, enum mem_cat c, size_t n)
{
    if (!pool_serves(n))
        return mem_alloc(m, c, n);
    if (mem_injected_failure(m))
        return NULL;
    void *p = pool_take(&m->pool, n);
    if (!p && (mem_pool_grow(m) || !(p = pool_take(&m->pool, n))))
        return NULL;
    m->bytes[c] += n;
    return p;
}

static inline void *mem_pool_calloc(struct mem *m, enum mem_cat c, size_t n)
{
    if (!pool_serves(n))
        return mem_calloc(m, c, n);
    void *p = mem_pool_alloc(m, c, n);
    if (p)
        memset(p, 0, n);
    return p;
}

static inline void mem_pool_free(struct mem *m, enum mem_cat c, void *p, size_t n)
{
    if (!p)
        return;
    if (!pool_serves(n)) {
        mem_free(m, c, p, n);
        return;
    }
    m->bytes[c] -= n;
    pool_give(&m->pool, p, n);
}

/* Contents up to min(old, n) are kept; a failure leaves the old block. A
 * pooled block moves (there is no growing in place): the old one goes back
 * on its class's free list for the next block of that size. */
static inline void *mem_pool_realloc(struct mem *m, enum mem_cat c, void *p, size_t old, size_t n)
{
    if (!p)
        return mem_pool_alloc(m, c, n);
    if (!pool_serves(old) && !pool_serves(n))
        return mem_realloc(m, c, p, old, n);
    void *q = mem_pool_alloc(m, c, n);
    if (!q)
        return NULL;
    memcpy(q, p, old < n ? old : n);
    mem_pool_free(m, c, p, old);
    return q;
}

/* Releases the pool's chunks; every pooled block must have been freed (or
 * be abandoned with it). The mem can be used again afterwards. */
void mem_destroy(struct mem *m);

#endif
