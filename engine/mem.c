/* SPDX-License-Identifier: MIT */
/*
 * mem.c -- the slow paths behind mem.h: mapped large blocks and the pool's
 * chunk supply. Design in mem.h.
 *
 * A large block is a private anonymous mapping whose start is 2 MiB-aligned
 * (map 2 MiB more, trim both ends) and madvised MADV_HUGEPAGE, so every
 * whole 2 MiB of it can be one huge page: half the fault cost per byte
 * here, and far fewer TLB misses on random access. Its length is n rounded
 * up to a page, so a block costs no more than its pages. Growth tries
 * mremap in place (the trimmed tail often leaves room); otherwise it maps a
 * new aligned area and moves the old pages onto its start with
 * MREMAP_FIXED, so huge pages move as whole page-table entries instead of
 * being split, and nothing is copied.
 */
#include "engine/mem.h"

#include <sys/mman.h>

#define MEM_HUGE ((size_t)2 << 20)
#define MEM_PAGE ((size_t)4096)  /* the kernel rounds lengths to its page size anyway */

static size_t page_round(size_t n)
{
    return (n + MEM_PAGE - 1) & ~(MEM_PAGE - 1);
}

void *mem_map(size_t n)
{
    size_t len = page_round(n ? n : 1);
    if (len < n || len + MEM_HUGE < len)
        return NULL;
    size_t over = len + MEM_HUGE;
    char *raw = mmap(NULL, over, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    char *p = (char *)(((uintptr_t)raw + MEM_HUGE - 1) & ~(uintptr_t)(MEM_HUGE - 1));
    if (p > raw)
        munmap(raw, (size_t)(p - raw));
    char *end = raw + over;
    if (end > p + len)
        munmap(p + len, (size_t)(end - (p + len)));
    (void)madvise(p, len, MADV_HUGEPAGE);  /* a hint: without THP it still works */
    return p;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  /* Linux 5.14; headers before glibc 2.35 lack it */
#endif

void mem_populate(void *p, size_t n)
{
    (void)madvise(p, n, MADV_POPULATE_WRITE);  /* EINVAL before 5.14: the touch faults it */
}

void mem_unmap(void *p, size_t n)
{
    if (p)
        munmap(p, page_round(n ? n : 1));
}

void *mem_remap(void *p, size_t old, size_t n)
{
    size_t ol = page_round(old), nl = page_round(n);
    if (nl < n)
        return NULL;
    if (nl == ol)
        return p;
    if (nl < ol) {
        munmap((char *)p + nl, ol - nl);
        return p;
    }
    if (mremap(p, ol, nl, 0) != MAP_FAILED)
        return p;
    char *dst = mem_map(n);
    if (!dst)
        return NULL;
    if (mremap(p, ol, ol, MREMAP_MAYMOVE | MREMAP_FIXED, dst) == MAP_FAILED) {
        munmap(dst, nl);
        return NULL;
    }
    return dst;
}

void *mem_map_ahead(struct mem *m, size_t n, size_t next)
{
    void *c;
    if (m->spare && m->spare_bytes == n) {
        c = m->spare;
        m->spare = NULL;
    } else if (!(c = mem_map(n))) {
        return NULL;
    }
    /* Best effort: without a spare the next call maps as above. */
    if (m->populate && !m->spare && mem_is_large(next) && (m->spare = mem_map(next))) {
        m->spare_bytes = next;
        m->populate(m->populate_ud, m->spare, next);
    }
    return c;
}

int mem_pool_grow(struct mem *m)
{
    if (mem_injected_failure(m))
        return -1;
    size_t n = pool_chunk_size(&m->pool);
    void *c = mem_is_large(n) ? mem_map_ahead(m, n, pool_chunk_after(n)) : mem_sys_alloc(n);
    if (!c)
        return -1;
    pool_add_chunk(&m->pool, c, n);
    return 0;
}

void mem_destroy(struct mem *m)
{
    pool_release(&m->pool, mem_sys_free);
    mem_unmap(m->spare, m->spare_bytes);
    m->spare = NULL;
}
