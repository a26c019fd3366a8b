/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of engine/ring.c: lazy growth 1, 2, 3, 4, 6, 9, ... capped at N,
 * order, overwrite-oldest with the old record handed back, N not a power
 * of two, clear, and ENOMEM leaving the ring untouched.
 */
#include <check.h>

#include "engine/ring.h"
#include "tests/eng_util.h"

static struct rec mk(uint32_t i)
{
    struct rec r = rec_make(i, i, i + 100, (int)(i % 8), false, 0, 0);
    return r;
}

static void push(struct ring *r, struct mem *m, uint32_t n, uint32_t i, bool *over, struct rec *old)
{
    REQUIRE(ring_reserve(r, m, r->len + 1 > n ? n : r->len + 1, n) == 0);
    struct rec x = mk(i);
    *over = ring_push(r, &x, old);
}

START_TEST(test_ring_growth)
{
    static const uint32_t sizes[] = {1, 2, 3, 5, 8, 64, 100};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        uint32_t n = sizes[k];
        struct mem m = {0};
        struct ring r = {0};
        uint32_t expect_cap = 0;
        for (uint32_t i = 0; i < 3 * n + 5; i++) {
            bool over;
            struct rec old;
            push(&r, &m, n, i, &over, &old);
            if (i < n) {
                REQUIRE(!over);
                uint32_t want = expect_cap ? expect_cap : 1;
                while (want < i + 1)  /* 1, 2, 3, 4, then x1.5, capped at n */
                    want = want < 4 ? want + 1 : (want + want / 2 < n ? want + want / 2 : n);
                expect_cap = want;
                REQUIRE((r.cap) == (expect_cap));
                REQUIRE((r.start) == (0));
            } else {
                REQUIRE(over);
                REQUIRE((old.short_ix) == (i - n));   /* the oldest goes */
                REQUIRE((old.ctx) == (i - n + 100));
                REQUIRE((r.cap) == (n));
            }
            REQUIRE((r.len) == (i + 1 < n ? i + 1 : n));
            for (uint32_t j = 0; j < r.len; j++) {
                REQUIRE(ring_newest(&r, j)->short_ix == i - j);
                REQUIRE(ring_oldest(&r, j)->short_ix == i + 1 - r.len + j);
            }
            REQUIRE((m.bytes[MEM_RECORDS]) == ((uint64_t)r.cap * sizeof(struct rec)));
        }
        ring_clear(&r);
        REQUIRE((r.len) == (0));
        bool over;
        struct rec old;
        push(&r, &m, n, 7, &over, &old);
        REQUIRE(!over);
        REQUIRE(ring_newest(&r, 0)->short_ix == 7);
        ring_free(&r, &m);
        REQUIRE((m.bytes[MEM_RECORDS]) == (0));
        mem_destroy(&m);
    }
}
END_TEST

START_TEST(test_ring_reserve_many)
{
    struct mem m = {0};
    struct ring r = {0};
    ck_assert_int_eq(ring_reserve(&r, &m, 5, 64), 0);
    ck_assert_uint_eq(r.cap, 6);  /* 1, 2, 3, 4, 6 */
    ck_assert_int_eq(ring_reserve(&r, &m, 100, 64), 0);  /* clamped to N */
    ck_assert_uint_eq(r.cap, 64);
    ring_free(&r, &m);
    mem_destroy(&m);
}
END_TEST

START_TEST(test_ring_enomem)
{
    struct mem m = {0};
    struct ring r = {0};
    bool over;
    struct rec old;
    push(&r, &m, 8, 1, &over, &old);
    push(&r, &m, 8, 2, &over, &old);
    m.fail_at = m.nallocs + 1;
    ck_assert_int_eq(ring_reserve(&r, &m, 3, 8), -1);
    ck_assert_uint_eq(r.cap, 2);
    ck_assert_uint_eq(r.len, 2);
    ck_assert_uint_eq(ring_newest(&r, 0)->short_ix, 2);
    ck_assert_uint_eq(ring_newest(&r, 1)->short_ix, 1);
    ck_assert_uint_eq(m.bytes[MEM_RECORDS], 2 * sizeof(struct rec));
    ring_free(&r, &m);
    mem_destroy(&m);
}
END_TEST

/* The packed record gives back every field at the edges of its range. */
START_TEST(test_rec_packing)
{
    const int64_t tss[] = {0, 1, 0xffffffffll, 0x100000000ll, ENG_TS_MAX};
    for (size_t i = 0; i < sizeof tss / sizeof tss[0]; i++) {
        for (int t = 0; t < ENG_T_COUNT; t++) {
            struct rec v = rec_make(tss[i], UINT32_MAX, UINT32_MAX - 1, t, true, ENG_WATCH_MAX, 0);
            ck_assert_int_eq(rec_ts(&v), tss[i]);
            ck_assert_uint_eq(rec_type(&v), (unsigned)t);
            ck_assert(rec_has_watch(&v));
            ck_assert_uint_eq(rec_watch_ms(&v), ENG_WATCH_MAX);
            ck_assert_uint_eq(rec_platform(&v), 0);
            ck_assert_uint_eq(v.short_ix, UINT32_MAX);
            ck_assert_uint_eq(v.ctx, UINT32_MAX - 1);

            struct rec s = rec_make(tss[i], 0, 0, t, false, 0, UINT16_MAX);
            ck_assert_int_eq(rec_ts(&s), tss[i]);
            ck_assert_uint_eq(rec_type(&s), (unsigned)t);
            ck_assert(!rec_has_watch(&s));
            ck_assert_uint_eq(rec_watch_ms(&s), 0);
            ck_assert_uint_eq(rec_platform(&s), UINT16_MAX);
        }
    }
}
END_TEST

extern Suite *ring_suite(void);
Suite *ring_suite(void)
{
    Suite *s = suite_create("ring");
    TCase *tc = tcase_create("ring");
    tcase_add_test(tc, test_ring_growth);
    tcase_add_test(tc, test_ring_reserve_many);
    tcase_add_test(tc, test_ring_enomem);
    tcase_add_test(tc, test_rec_packing);
    suite_add_tcase(s, tc);
    return s;
}
