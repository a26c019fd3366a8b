/* SPDX-License-Identifier: MIT */
/*
 * pool.c -- the size-class pool; design in pool.h.
 *
 * Invariants: free[k] lists only blocks of exactly k * POOL_GRAIN bytes,
 * each carved once from a chunk still on the chunk list; cur <= end, and
 * [cur, end) was never handed out; free_bytes is the sum over the free
 * lists. A block's link to the next free block is its first pointer-sized
 * bytes, read and written with memcpy since a block need only be 4-aligned.
 */
#include "engine/pool.h"

#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define POOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL_ASAN 1
#endif
#endif

#ifdef POOL_ASAN
#include <sanitizer/asan_interface.h>
/* 8-aligned blocks and a gap of whole 8-byte shadow granules between them,
 * so poisoning one block never touches a neighbour's granule. */
enum { POOL_REDZONE = 16, POOL_ALIGN_MIN = 8 };
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
enum { POOL_REDZONE = 0, POOL_ALIGN_MIN = 1 };
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

struct pool_chunk {
    void *prev;
    size_t bytes;
};
_Static_assert(sizeof(struct pool_chunk) == 16, "chunk header keeps blocks 16-aligned");

static size_t grain_round(size_t n)
{
    return (n + POOL_GRAIN - 1) & ~(size_t)(POOL_GRAIN - 1);
}

void *pool_take(struct pool *p, size_t n)
{
    size_t sz = grain_round(n);
    size_t k = sz / POOL_GRAIN;
    char *b = p->free[k];
    if (b) {
        UNPOISON(b, sz);
        memcpy(&p->free[k], b, sizeof(void *));
        p->free_bytes -= sz;
        /* The next take of this class reads the new head's link and then
         * writes the block: a cache miss on a block freed long ago, unless
         * it is on its way now (a ring grows every few interactions). */
        if (p->free[k])
            __builtin_prefetch(p->free[k], 1);
        return b;
    }
    size_t align = sz & (~sz + 1);  /* lowest set bit */
    if (align > 16)
        align = 16;
    if (align < POOL_ALIGN_MIN)
        align = POOL_ALIGN_MIN;
    if (!p->cur)
        return NULL;
    uintptr_t at = ((uintptr_t)p->cur + align - 1) & ~(uintptr_t)(align - 1);
    if (at > (uintptr_t)p->end || (uintptr_t)p->end - at < sz + POOL_REDZONE)
        return NULL;
    p->cur = (char *)(at + sz + POOL_REDZONE);
    UNPOISON((void *)at, sz);
    return (void *)at;
}

void pool_give(struct pool *p, void *b, size_t n)
{
    size_t sz = grain_round(n);
    size_t k = sz / POOL_GRAIN;
    memcpy(b, &p->free[k], sizeof(void *));
    p->free[k] = b;
    p->free_bytes += sz;
    POISON(b, sz);
}

size_t pool_chunk_size(const struct pool *p)
{
    return p->next_chunk ? p->next_chunk : POOL_CHUNK_MIN;
}

void pool_add_chunk(struct pool *p, void *chunk, size_t bytes)
{
    struct pool_chunk h = {.prev = p->chunks, .bytes = bytes};
    memcpy(chunk, &h, sizeof(h));
    p->chunks = chunk;
    p->cur = (char *)chunk + sizeof(h);
    p->end = (char *)chunk + bytes;
    POISON(p->cur, (size_t)(p->end - p->cur));
    p->chunk_bytes += bytes;
    p->next_chunk = pool_chunk_after(bytes);
}

void pool_release(struct pool *p, void (*release)(void *chunk, size_t bytes))
{
    void *c = p->chunks;
    while (c) {
        struct pool_chunk h;
        memcpy(&h, c, sizeof(h));
        UNPOISON(c, h.bytes);  /* the memory may come back as something else */
        release(c, h.bytes);
        c = h.prev;
    }
    memset(p, 0, sizeof(*p));
}
