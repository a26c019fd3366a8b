/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of engine/idx.c: find/put/del against a plain array, with
 * duplicate keys (walked with idx_next), deletions that must backward-
 * shift across the wrap-around, growth, and ENOMEM leaving it untouched.
 */
#include <check.h>
#include <stdlib.h>

#include "engine/idx.h"
#include "tests/eng_util.h"

START_TEST(test_idx_random)
{
    uint64_t seed = test_seed("idx", 5), r = seed;
    struct mem m = {0};
    struct idx t;
    REQUIRE(idx_init(&t, &m, 8) == 0);
    enum { N = 3000 };
    uint64_t *key = calloc(N, sizeof(uint64_t));
    bool *live = calloc(N, sizeof(bool));
    for (int step = 0; step < 60000; step++) {
        uint32_t id = (uint32_t)trng_below(&r, N);
        if (!live[id]) {
            key[id] = trng_below(&r, 500);  /* many ids share a key */
            REQUIRE(idx_reserve(&t, &m, 1) == 0);
            idx_put(&t, key[id], id);
            live[id] = true;
        } else if (trng_below(&r, 2)) {
            idx_del(&t, key[id], id);
            live[id] = false;
        }
        /* every live id is reachable through its key's run */
        uint32_t probe = (uint32_t)trng_below(&r, N);
        bool found = false;
        if (live[probe]) {
            for (uint32_t pos = idx_next(&t, key[probe], idx_home(&t, key[probe])); t.slots[pos].val;
                 pos = idx_next(&t, key[probe], pos + 1))
                if (t.slots[pos].val == probe + 1)
                    found = true;
            REQUIRE(found);
        }
    }
    uint32_t n = 0;
    for (int i = 0; i < N; i++)
        n += live[i];
    REQUIRE((t.n) == (n));
    for (int i = 0; i < N; i++)
        if (live[i])
            idx_del(&t, key[i], (uint32_t)i);
    REQUIRE((t.n) == (0));
    for (uint32_t i = 0; i <= t.mask; i++)
        REQUIRE((t.slots[i].val) == (0));
    free(key);
    free(live);
    idx_free(&t, &m);
    REQUIRE((m.bytes[MEM_OTHER]) == (0));
}
END_TEST

START_TEST(test_idx_unique)
{
    struct mem m = {0};
    struct idx t;
    REQUIRE(idx_init(&t, &m, 4) == 0);
    for (uint32_t i = 0; i < 1000; i++) {
        REQUIRE(idx_reserve(&t, &m, 1) == 0);
        idx_put(&t, (uint64_t)i * 1000 + 1, i);
        REQUIRE((uint64_t)t.n * 4 <= ((uint64_t)t.mask + 1) * 3);
    }
    for (uint32_t i = 0; i < 1000; i++)
        REQUIRE(idx_find(&t, (uint64_t)i * 1000 + 1) == i + 1);
    REQUIRE(idx_find(&t, 2) == 0);
    uint32_t cap = t.mask + 1;
    m.fail_at = m.nallocs + 1;
    REQUIRE(idx_reserve(&t, &m, cap) == -1);
    REQUIRE((t.mask + 1) == (cap));
    REQUIRE(idx_find(&t, 999001) == 1000);
    /* past the 2^31-slot limit: refused before any allocation */
    uint64_t nallocs = m.nallocs;
    REQUIRE(idx_reserve(&t, &m, (uint64_t)1 << 31) == -1);
    REQUIRE(m.nallocs == nallocs);
    REQUIRE((t.mask + 1) == (cap));
    REQUIRE(idx_find(&t, 999001) == 1000);
    idx_free(&t, &m);
}
END_TEST

extern Suite *idx_suite(void);
Suite *idx_suite(void)
{
    Suite *s = suite_create("idx");
    TCase *tc = tcase_create("idx");
    tcase_add_test(tc, test_idx_random);
    tcase_add_test(tc, test_idx_unique);
    suite_add_tcase(s, tc);
    return s;
}
