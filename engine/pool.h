/* SPDX-License-Identifier: MIT */
/*
 * pool.h -- size-class pool for the engine's small tables (internal to
 * engine/; use it through mem.h's mem_pool_* calls, which add accounting,
 * failure injection and chunk supply).
 *
 * Every size up to POOL_MAX bytes, rounded up to POOL_GRAIN, is a class of
 * its own with one free list, so a freed block is reused whole by the next
 * block of exactly its size: a ring growing 2 -> 3 records takes the block
 * another ring's 3 -> 4 growth let go. The engine asks for few sizes (the
 * ring growth sequence times the record size, the capacities of viewer
 * sets too big for vset.h's slabs), so exact classes waste nothing inside
 * a block. Blocks carry no
 * header: the caller passes the size back, as it does to mem_free.
 *
 * New blocks are carved by a bump pointer from the newest chunk; chunks
 * grow 64 KiB, 128 KiB, ... up to POOL_CHUNK_MAX (2 MiB, one huge page --
 * mem.h maps it THP-madvised) so a small engine stays small. The unused
 * tail of a chunk (less than one block) is abandoned when the next chunk
 * comes. A chunk starts with a link to the previous one; all are released
 * together by pool_release. Nothing is ever handed back to the chunks: the
 * free lists only grow until the pool is released: blocks freed by tables
 * that outgrew their class wait for a table of that size, which is the
 * cost of having no header (nothing can tell that two free neighbours
 * could serve one bigger block).
 *
 * Under AddressSanitizer free blocks and the uncarved part of a chunk are
 * poisoned and every block is followed by a poisoned redzone, so
 * use-after-free and overflows into a neighbour are still reported.
 */
#ifndef SHORTSTAT_ENG_POOL_H
#define SHORTSTAT_ENG_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define POOL_GRAIN 4u
#define POOL_MIN 8u                        /* a free block holds a link */
#define POOL_MAX 4096u                     /* bigger blocks: malloc or a mapping */
#define POOL_NCLASS (POOL_MAX / POOL_GRAIN + 1)
#define POOL_CHUNK_MIN ((size_t)64 << 10)
#define POOL_CHUNK_MAX ((size_t)2 << 20)

struct pool {
    void *free[POOL_NCLASS];  /* by size / POOL_GRAIN: singly linked, link in the block */
    char *cur, *end;          /* uncarved part of the newest chunk */
    void *chunks;             /* newest chunk; each starts with a pool_chunk header */
    size_t next_chunk;        /* bytes of the next chunk (0 = POOL_CHUNK_MIN) */
    uint64_t chunk_bytes;     /* all chunks */
    uint64_t free_bytes;      /* on the free lists */
};

/* The size of the chunk after one of n bytes. */
static inline size_t pool_chunk_after(size_t n)
{
    return n * 2 < POOL_CHUNK_MAX ? n * 2 : POOL_CHUNK_MAX;
}

static inline bool pool_serves(size_t n)
{
    return n >= POOL_MIN && n <= POOL_MAX;
}

/* A block of n bytes (pool_serves(n)), or NULL when the pool needs a chunk
 * (pool_add_chunk) first. Contents are undefined. */
void *pool_take(struct pool *p, size_t n);
/* Back on its class's free list. */
void pool_give(struct pool *p, void *b, size_t n);
/* Size of the chunk pool_add_chunk wants next. */
size_t pool_chunk_size(const struct pool *p);
/* Hands the pool a chunk of `bytes` (pool_chunk_size) to carve from. */
void pool_add_chunk(struct pool *p, void *chunk, size_t bytes);
/* Calls release(chunk, bytes) for every chunk and empties the pool. */
void pool_release(struct pool *p, void (*release)(void *chunk, size_t bytes));

#endif
