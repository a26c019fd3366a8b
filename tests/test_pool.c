/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of engine/pool.c and the block placement in engine/mem.h:
 * the pool against a plain model (random alloc/free/realloc over every
 * class the engine uses and more, contents kept, no two live blocks
 * overlapping, alignment, byte accounting), exact-size reuse, mapped large
 * blocks grown and shrunk across the threshold both ways with contents
 * kept, and ENOMEM injection on each path (block, chunk, large block,
 * pooled realloc in both directions) leaving everything as it was.
 */
#include <check.h>
#include <stdlib.h>

#include "engine/mem.h"
#include "engine/ring.h"
#include "tests/eng_util.h"

struct blk {
    unsigned char *p;
    size_t n;
    uint8_t tag;
};

static void fill(struct blk *b)
{
    for (size_t i = 0; i < b->n; i++)
        b->p[i] = (uint8_t)(b->tag + i * 7);
}

static bool intact(const struct blk *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b->p[i] != (uint8_t)(b->tag + i * 7))
            return false;
    return true;
}

static size_t natural_align(size_t n)
{
    size_t sz = (n + POOL_GRAIN - 1) & ~(size_t)(POOL_GRAIN - 1);
    size_t a = sz & (~sz + 1);
    return a > 16 ? 16 : a;
}

/* Sizes the engine asks for, plus any grain multiple, plus a few beyond the
 * pool (malloc) and, rarely, beyond MEM_LARGE (mapped). */
static size_t pick_size(uint64_t *r)
{
    static uint32_t ring_caps[16];
    static size_t nring;
    if (!nring)
        for (uint32_t c = 1; nring < 16; c = ring_next_cap(c, 1000))
            ring_caps[nring++] = c;
    switch (trng_below(r, 8)) {
    case 0:
    case 1:
        return ring_caps[trng_below(r, nring)] * sizeof(struct rec);
    case 2:
    case 3:
        return (size_t)16 << trng_below(r, 9);  /* vset tables 2..512 slots */
    case 4:
    case 5:
        return (size_t)(2 + trng_below(r, POOL_MAX / POOL_GRAIN - 1)) * POOL_GRAIN;
    case 6:
        return 1 + trng_below(r, 3 * POOL_MAX);
    default:
        if (trng_below(r, 200) == 0)
            return MEM_LARGE - 64 + trng_below(r, 128);
        return 1 + trng_below(r, 64);
    }
}

static int cmp_blk(const void *a, const void *b)
{
    const struct blk *x = a, *y = b;
    return x->p < y->p ? -1 : x->p > y->p;
}

static void check_all(struct blk *live, size_t nlive, const struct mem *m)
{
    uint64_t bytes = 0;
    struct blk *s = malloc((nlive ? nlive : 1) * sizeof(*s));
    size_t k = 0;
    for (size_t i = 0; i < nlive; i++) {
        if (!live[i].p)
            continue;
        REQUIRE(intact(&live[i], live[i].n));
        if (pool_serves(live[i].n))
            REQUIRE((uintptr_t)live[i].p % natural_align(live[i].n) == 0);
        bytes += live[i].n;
        s[k++] = live[i];
    }
    qsort(s, k, sizeof(*s), cmp_blk);
    for (size_t i = 1; i < k; i++)
        REQUIRE(s[i - 1].p + s[i - 1].n <= s[i].p);
    free(s);
    REQUIRE(m->bytes[MEM_RECORDS] == bytes);
    REQUIRE(m->bytes[MEM_OTHER] == 0 && m->bytes[MEM_VIEWERS] == 0);
}

START_TEST(test_pool_model)
{
    uint64_t seed = test_seed("pool", 4242), r = seed;
    struct mem m = {0};
    enum { SLOTS = 3000, OPS = 150000 };
    struct blk *live = calloc(SLOTS, sizeof(*live));
    for (int op = 0; op < OPS; op++) {
        struct blk *b = &live[trng_below(&r, SLOTS)];
        if (!b->p) {
            b->n = pick_size(&r);
            b->tag = (uint8_t)trng_next(&r);
            b->p = mem_pool_alloc(&m, MEM_RECORDS, b->n);
            REQUIRE(b->p);
            fill(b);
        } else if (trng_below(&r, 2) == 0) {
            REQUIRE(intact(b, b->n));
            mem_pool_free(&m, MEM_RECORDS, b->p, b->n);
            b->p = NULL;
        } else {
            size_t n = pick_size(&r);
            unsigned char *q = mem_pool_realloc(&m, MEM_RECORDS, b->p, b->n, n);
            REQUIRE(q);
            b->p = q;
            REQUIRE(intact(b, b->n < n ? b->n : n));
            b->n = n;
            fill(b);
        }
        if (op % 10000 == 0)
            check_all(live, SLOTS, &m);
    }
    check_all(live, SLOTS, &m);
    /* everything the pool holds is either live or on a free list */
    ck_assert_uint_gt(m.pool.chunk_bytes, 0);
    for (size_t i = 0; i < SLOTS; i++)
        if (live[i].p)
            mem_pool_free(&m, MEM_RECORDS, live[i].p, live[i].n);
    ck_assert_uint_eq(m.bytes[MEM_RECORDS], 0);
    ck_assert_uint_le(m.pool.free_bytes, m.pool.chunk_bytes);
    mem_destroy(&m);
    ck_assert_ptr_null(m.pool.chunks);
    ck_assert_uint_eq(m.pool.chunk_bytes, 0);
    free(live);
}
END_TEST

START_TEST(test_pool_reuse)
{
    struct mem m = {0};
    void *a = mem_pool_alloc(&m, MEM_RECORDS, 72);
    void *b = mem_pool_alloc(&m, MEM_RECORDS, 72);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_ne(a, b);
    mem_pool_free(&m, MEM_RECORDS, a, 72);
    ck_assert_uint_eq(m.pool.free_bytes, 72);
    void *c = mem_pool_alloc(&m, MEM_RECORDS, 48);  /* another class: not a */
    ck_assert_ptr_ne(c, a);
    void *d = mem_pool_alloc(&m, MEM_RECORDS, 72);  /* the freed block comes back */
    ck_assert_ptr_eq(d, a);
    ck_assert_uint_eq(m.pool.free_bytes, 0);
    /* sizes round up to the grain: 70 and 72 share a class */
    mem_pool_free(&m, MEM_RECORDS, d, 72);
    void *e = mem_pool_alloc(&m, MEM_RECORDS, 70);
    ck_assert_ptr_eq(e, a);
    mem_pool_free(&m, MEM_RECORDS, e, 70);
    mem_pool_free(&m, MEM_RECORDS, b, 72);
    mem_pool_free(&m, MEM_RECORDS, c, 48);
    ck_assert_uint_eq(m.bytes[MEM_RECORDS], 0);
    /* chunks grow from POOL_CHUNK_MIN: filling one takes another */
    uint64_t first = m.pool.chunk_bytes;
    ck_assert_uint_eq(first, POOL_CHUNK_MIN);
    size_t n = POOL_CHUNK_MIN / 4096 + 1;
    void **v = malloc(n * sizeof(*v));
    for (size_t i = 0; i < n; i++)
        ck_assert_ptr_nonnull(v[i] = mem_pool_alloc(&m, MEM_VIEWERS, 4096));
    ck_assert_uint_eq(m.pool.chunk_bytes, first + 2 * POOL_CHUNK_MIN);
    for (size_t i = 0; i < n; i++)
        mem_pool_free(&m, MEM_VIEWERS, v[i], 4096);
    free(v);
    ck_assert_uint_eq(m.bytes[MEM_VIEWERS], 0);
    mem_destroy(&m);
}
END_TEST

START_TEST(test_pool_enomem)
{
    struct mem m = {0};
    /* the block itself */
    m.fail_at = m.nallocs + 1;
    ck_assert_ptr_null(mem_pool_alloc(&m, MEM_RECORDS, 24));
    ck_assert_ptr_null(m.pool.chunks);
    /* its first chunk */
    m.fail_at = m.nallocs + 2;
    ck_assert_ptr_null(mem_pool_alloc(&m, MEM_RECORDS, 24));
    ck_assert_ptr_null(m.pool.chunks);
    ck_assert_uint_eq(m.bytes[MEM_RECORDS], 0);
    struct blk a = {.n = 48, .tag = 9};
    ck_assert_ptr_nonnull(a.p = mem_pool_alloc(&m, MEM_RECORDS, a.n));
    fill(&a);
    /* calloc, realloc within the pool, out of it, and back into it */
    m.fail_at = m.nallocs + 1;
    ck_assert_ptr_null(mem_pool_calloc(&m, MEM_VIEWERS, 64));
    const size_t sizes[] = {72, POOL_MAX + 8, MEM_LARGE + 8};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        m.fail_at = m.nallocs + 1;
        ck_assert_ptr_null(mem_pool_realloc(&m, MEM_RECORDS, a.p, a.n, sizes[i]));
        ck_assert(intact(&a, a.n));
        ck_assert_uint_eq(m.bytes[MEM_RECORDS], a.n);
        unsigned char *q = mem_pool_realloc(&m, MEM_RECORDS, a.p, a.n, sizes[i]);
        ck_assert_ptr_nonnull(q);
        a.p = q;
        ck_assert(intact(&a, a.n));
        a.n = sizes[i];
        fill(&a);
        ck_assert_uint_eq(m.bytes[MEM_RECORDS], a.n);
    }
    /* large -> pooled, failing then not */
    m.fail_at = m.nallocs + 1;
    ck_assert_ptr_null(mem_pool_realloc(&m, MEM_RECORDS, a.p, a.n, 96));
    ck_assert(intact(&a, a.n));
    unsigned char *q = mem_pool_realloc(&m, MEM_RECORDS, a.p, a.n, 96);
    ck_assert_ptr_nonnull(q);
    a.p = q;
    a.n = 96;
    ck_assert(intact(&a, a.n));
    mem_pool_free(&m, MEM_RECORDS, a.p, a.n);
    ck_assert_uint_eq(m.bytes[MEM_RECORDS], 0);
    ck_assert_uint_eq(m.bytes[MEM_VIEWERS], 0);
    mem_destroy(&m);
}
END_TEST

/* ---- large blocks ---------------------------------------------------------- */

START_TEST(test_mem_large)
{
    struct mem m = {0};
    struct blk b = {.n = MEM_LARGE - 16, .tag = 3};
    ck_assert_ptr_nonnull(b.p = mem_alloc(&m, MEM_OTHER, b.n));
    fill(&b);
    /* small -> large -> larger (mremap) -> smaller -> small, contents kept */
    const size_t sizes[] = {MEM_LARGE + 100, 8 * MEM_LARGE + 5, 3 * MEM_LARGE, MEM_LARGE,
                            MEM_LARGE - 1, 1000, 5 * MEM_LARGE};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];
        m.fail_at = m.nallocs + 1;
        ck_assert_ptr_null(mem_realloc(&m, MEM_OTHER, b.p, b.n, n));
        ck_assert(intact(&b, b.n));
        unsigned char *q = mem_realloc(&m, MEM_OTHER, b.p, b.n, n);
        ck_assert_ptr_nonnull(q);
        b.p = q;
        ck_assert(intact(&b, b.n < n ? b.n : n));
        b.n = n;
        fill(&b);
        ck_assert_uint_eq(m.bytes[MEM_OTHER], n);
        if (mem_is_large(n))
            ck_assert_uint_eq((uintptr_t)b.p % ((uintptr_t)2 << 20), 0);
    }
    mem_free(&m, MEM_OTHER, b.p, b.n);
    ck_assert_uint_eq(m.bytes[MEM_OTHER], 0);

    /* new large blocks are zero, calloc_aligned's 64-byte alignment holds */
    m.fail_at = m.nallocs + 1;
    ck_assert_ptr_null(mem_calloc_aligned(&m, MEM_OTHER, 3 * MEM_LARGE));
    unsigned char *z = mem_calloc_aligned(&m, MEM_OTHER, 3 * MEM_LARGE + 64);
    ck_assert_ptr_nonnull(z);
    ck_assert_uint_eq((uintptr_t)z % 64, 0);
    for (size_t i = 0; i < 3 * MEM_LARGE + 64; i += 4093)
        REQUIRE(z[i] == 0);
    z[3 * MEM_LARGE + 63] = 1;
    mem_free(&m, MEM_OTHER, z, 3 * MEM_LARGE + 64);
    unsigned char *s = mem_calloc_aligned(&m, MEM_OTHER, 200);
    ck_assert_uint_eq((uintptr_t)s % 64, 0);
    for (size_t i = 0; i < 200; i++)
        REQUIRE(s[i] == 0);
    mem_free(&m, MEM_OTHER, s, 200);
    m.fail_at = m.nallocs + 1;
    ck_assert_ptr_null(mem_calloc(&m, MEM_OTHER, MEM_LARGE));
    z = mem_calloc(&m, MEM_OTHER, MEM_LARGE);
    ck_assert_ptr_nonnull(z);
    REQUIRE(z[0] == 0 && z[MEM_LARGE - 1] == 0);
    mem_free(&m, MEM_OTHER, z, MEM_LARGE);
    ck_assert_uint_eq(m.bytes[MEM_OTHER], 0);
    mem_destroy(&m);
}
END_TEST

/* Growth by doubling keeps contents and costs no copy of what is mapped:
 * the engine's dense arrays grow this way. */
START_TEST(test_mem_large_doubling)
{
    struct mem m = {0};
    size_t n = 4096;
    uint64_t *a = mem_alloc(&m, MEM_OTHER, n * sizeof(*a));
    ck_assert_ptr_nonnull(a);
    for (size_t i = 0; i < n; i++)
        a[i] = i * 0x9e3779b97f4a7c15ULL;
    while (n < ((size_t)8 << 20) / sizeof(*a)) {
        uint64_t *q = mem_realloc(&m, MEM_OTHER, a, n * sizeof(*a), 2 * n * sizeof(*a));
        ck_assert_ptr_nonnull(q);
        a = q;
        for (size_t i = 0; i < n; i++)
            REQUIRE(a[i] == i * 0x9e3779b97f4a7c15ULL);
        for (size_t i = n; i < 2 * n; i++)
            a[i] = i * 0x9e3779b97f4a7c15ULL;
        n *= 2;
    }
    mem_free(&m, MEM_OTHER, a, n * sizeof(*a));
    ck_assert_uint_eq(m.bytes[MEM_OTHER], 0);
    mem_destroy(&m);
}
END_TEST

extern Suite *pool_suite(void);
Suite *pool_suite(void)
{
    Suite *s = suite_create("pool");
    TCase *tc = tcase_create("pool");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_pool_model);
    tcase_add_test(tc, test_pool_reuse);
    tcase_add_test(tc, test_pool_enomem);
    tcase_add_test(tc, test_mem_large);
    tcase_add_test(tc, test_mem_large_doubling);
    suite_add_tcase(s, tc);
    return s;
}
