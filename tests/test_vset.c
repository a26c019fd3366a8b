/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of engine/vset.c: membership, the 0 -> 1 mapping, the 7/8
 * load rule and growth sequence, reserve-then-add, bytes per member, and
 * ENOMEM leaving the set untouched. Compared against a sorted array.
 */
#include <check.h>
#include <stdlib.h>

#include "engine/vset.h"
#include "tests/eng_util.h"

START_TEST(test_vset_basic)
{
    struct mem m = {0};
    struct vset s = {0};
    ck_assert(!vset_has(&s, 5));
    ck_assert_int_eq(vset_reserve(&s, &m, 1), 0);
    ck_assert_uint_eq(s.cap, 2);
    ck_assert(vset_add(&s, 5));
    ck_assert(!vset_add(&s, 5));
    ck_assert(vset_has(&s, 5));
    ck_assert_uint_eq(s.n, 1);
    /* fingerprint 0 is stored as 1: they are the same member */
    ck_assert_int_eq(vset_reserve(&s, &m, 1), 0);
    ck_assert(vset_add(&s, 0));
    ck_assert(vset_has(&s, 1));
    ck_assert(!vset_add(&s, 1));
    ck_assert_uint_eq(s.n, 2);
    ck_assert_uint_eq(s.cap, 4);
    ck_assert_uint_eq(m.bytes[MEM_VIEWERS], 32);
    vset_free(&s, &m);
    ck_assert_uint_eq(m.bytes[MEM_VIEWERS], 0);
    ck_assert_uint_eq(s.cap, 0);
    mem_destroy(&m);
}
END_TEST

START_TEST(test_vset_growth)
{
    /* capacity is the smallest power of two >= 2 holding n at <= 7/8 */
    struct mem m = {0};
    struct vset s = {0};
    for (uint64_t n = 1; n <= 5000; n++) {
        REQUIRE(vset_reserve(&s, &m, 1) == 0);
        REQUIRE(vset_add(&s, n * 0x9e3779b97f4a7c15ULL));
        uint32_t want = 2;
        while (n * 8 > (uint64_t)want * 7)
            want *= 2;
        REQUIRE((s.cap) == (want));
        REQUIRE(vset_fits(s.n, s.cap));
    }
    /* average bytes per member over these sizes stays under 16 */
    ck_assert_uint_le(m.bytes[MEM_VIEWERS] / s.n, 16);
    vset_free(&s, &m);
    mem_destroy(&m);
}
END_TEST

static int cmp64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

START_TEST(test_vset_random)
{
    uint64_t seed = test_seed("vset", 99), r = seed;
    struct mem m = {0};
    struct vset s = {0};
    uint64_t *ref = malloc(20000 * sizeof(uint64_t));
    size_t nref = 0;
    for (int i = 0; i < 20000; i++) {
        /* small keys collide on purpose; some share low bits */
        uint64_t fp = trng_below(&r, 3) == 0 ? trng_below(&r, 64) << 20 : trng_below(&r, 3000);
        uint64_t key = fp ? fp : 1;
        bool in = bsearch(&key, ref, nref, sizeof(uint64_t), cmp64) != NULL;
        REQUIRE(vset_has(&s, fp) == in);
        REQUIRE(vset_reserve(&s, &m, 1) == 0);
        REQUIRE(vset_add(&s, fp) == !in);
        if (!in) {
            ref[nref++] = key;
            qsort(ref, nref, sizeof(uint64_t), cmp64);
        }
        REQUIRE((s.n) == (nref));
    }
    for (size_t i = 0; i < nref; i++)
        REQUIRE(vset_has(&s, ref[i]));
    free(ref);
    vset_free(&s, &m);
    mem_destroy(&m);
}
END_TEST

START_TEST(test_vset_enomem)
{
    struct mem m = {0};
    struct vset s = {0};
    ck_assert_int_eq(vset_reserve(&s, &m, 7), 0);
    ck_assert_uint_eq(s.cap, 8);
    for (uint64_t i = 1; i <= 7; i++)
        ck_assert(vset_add(&s, i));
    m.fail_at = m.nallocs + 1;
    ck_assert_int_eq(vset_reserve(&s, &m, 1), -1);
    ck_assert_uint_eq(s.cap, 8);
    ck_assert_uint_eq(s.n, 7);
    for (uint64_t i = 1; i <= 7; i++)
        ck_assert(vset_has(&s, i));
    ck_assert_int_eq(vset_reserve(&s, &m, 0), 0);  /* no growth needed: no allocation */
    ck_assert_int_eq(vset_reserve(&s, &m, 1), 0);
    ck_assert_uint_eq(s.cap, 16);
    /* past the 2^31-slot limit: refused before any allocation */
    uint64_t nallocs = m.nallocs;
    ck_assert_int_eq(vset_reserve(&s, &m, UINT32_MAX), -1);
    ck_assert_uint_eq(m.nallocs, nallocs);
    ck_assert_uint_eq(s.cap, 16);
    ck_assert_uint_eq(s.n, 7);
    vset_free(&s, &m);
    ck_assert_uint_eq(m.bytes[MEM_VIEWERS], 0);
    mem_destroy(&m);
}
END_TEST

extern Suite *vset_suite(void);
Suite *vset_suite(void)
{
    Suite *s = suite_create("vset");
    TCase *tc = tcase_create("vset");
    tcase_add_test(tc, test_vset_basic);
    tcase_add_test(tc, test_vset_growth);
    tcase_add_test(tc, test_vset_random);
    tcase_add_test(tc, test_vset_enomem);
    suite_add_tcase(s, tc);
    return s;
}
