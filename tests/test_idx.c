/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of engine/idx.c: find/put/del against a plain array, with
 * duplicate keys (walked with idx_walk_next), deletions that must backward-
 * shift across the wrap-around, growth, and ENOMEM leaving it untouched;
 * incremental growth against a reference model: lookups, walks and
 * deletions while a move is in progress, bulk reserves that must finish it,
 * ENOMEM on a reserve mid-move.
 */
#include <check.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

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
            struct idx_walk w = idx_walk_start(&t, key[probe]);
            for (uint32_t v; (v = idx_walk_next(&t, key[probe], &w));)
                if (v == probe + 1)
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
    REQUIRE(idx_check(&t) == 0);
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

/* Reference model for the incremental-growth tests: id -> key, live, and
 * how many live ids each key has (keys are < IDX_TEST_KEYS). */
#define IDX_TEST_KEYS 4000u
struct ref {
    uint64_t *key;
    bool *live;
    uint32_t n, cap;
    uint32_t per_key[IDX_TEST_KEYS];
};

/* The ids a walk of key yields must be exactly the live ids with that key,
 * each once. */
static void walk_matches(const struct idx *t, const struct ref *r, uint64_t key, uint8_t *seen)
{
    uint32_t got = 0;
    struct idx_walk w = idx_walk_start(t, key);
    for (uint32_t v; (v = idx_walk_next(t, key, &w));) {
        REQUIRE(v >= 1 && v <= r->cap);
        REQUIRE(r->live[v - 1] && r->key[v - 1] == key);
        REQUIRE(seen[v - 1] == 0);
        seen[v - 1] = 1;
        got++;
    }
    REQUIRE(idx_walk_next(t, key, &w) == 0);  /* stays finished */
    REQUIRE(got == r->per_key[key]);
    w = idx_walk_start(t, key);
    for (uint32_t v; (v = idx_walk_next(t, key, &w));)
        seen[v - 1] = 0;
}

START_TEST(test_idx_incremental)
{
    uint64_t seed = test_seed("idx_incremental", 77), rs = seed;
    enum { N = 20000, KEYS = IDX_TEST_KEYS };
    struct ref r = {.key = calloc(N, sizeof(uint64_t)), .live = calloc(N, sizeof(bool)), .cap = N};
    uint8_t *seen = calloc(N, 1);
    uint64_t growths = 0, mid_finds = 0, mid_dels = 0, bulk_finish = 0;
    for (int round = 0; round < 3; round++) {
        struct mem m = {0};
        struct idx t;
        REQUIRE(idx_init(&t, &m, 8) == 0);
        memset(r.live, 0, N * sizeof(bool));
        memset(r.per_key, 0, sizeof r.per_key);
        r.n = 0;
        /* Mostly inserts so n climbs through many doublings; deletes,
         * lookups and housekeeping steps land between and during moves. */
        for (int step = 0; step < 60000; step++) {
            uint32_t id = (uint32_t)trng_below(&rs, N);
            uint32_t op = (uint32_t)trng_below(&rs, 100);
            uint32_t mask = t.mask;
            bool was_moving = t.old != NULL;
            if (op < 60 && !r.live[id]) {
                /* many ids share a key; a few keys are huge runs */
                r.key[id] = trng_below(&rs, 8) ? trng_below(&rs, KEYS) : 7;
                /* now and then a bulk reserve; during a move, one just
                 * big enough to need the next growth */
                uint64_t extra = 1;
                if (trng_below(&rs, 400) == 0)
                    extra = (t.old ? ((uint64_t)t.mask + 1) * 3 / 4 - t.n : 0) + 1 +
                            trng_below(&rs, 300);
                REQUIRE(idx_reserve(&t, &m, extra) == 0);
                idx_put(&t, r.key[id], id);
                r.live[id] = true;
                r.per_key[r.key[id]]++;
                r.n++;
                if (was_moving && t.mask != mask)
                    bulk_finish++;
            } else if (op < 85 && r.live[id]) {
                mid_dels += t.old != NULL;
                idx_del(&t, r.key[id], id);
                r.live[id] = false;
                r.per_key[r.key[id]]--;
                r.n--;
            } else if (op < 88) {
                idx_migrate(&t, &m, (uint32_t)trng_below(&rs, 64));
            }
            growths += t.mask != mask;
            uint32_t probe = (uint32_t)trng_below(&rs, N);
            mid_finds += t.old != NULL;
            walk_matches(&t, &r, r.key[probe], seen);
            REQUIRE(t.n == r.n);
            if (step % 4096 == 0 || t.mask != mask)
                REQUIRE(idx_check(&t) == 0);
        }
        REQUIRE(idx_check(&t) == 0);
        for (uint32_t k = 0; k < KEYS; k += 97)
            walk_matches(&t, &r, k, seen);
        /* housekeeping alone finishes a move and frees the old table */
        while (t.old)
            idx_migrate(&t, &m, 100);
        REQUIRE(idx_check(&t) == 0);
        walk_matches(&t, &r, 7, seen);
        for (uint32_t i = 0; i < N; i++)
            if (r.live[i])
                idx_del(&t, r.key[i], i);
        REQUIRE(t.n == 0 && idx_check(&t) == 0);
        idx_free(&t, &m);
        REQUIRE(m.bytes[MEM_OTHER] == 0);
    }
    fprintf(stderr, "idx_incremental: %" PRIu64 " growths, %" PRIu64 " lookups and %" PRIu64
            " deletes mid-move, %" PRIu64 " bulk reserves finished a move\n",
            growths, mid_finds, mid_dels, bulk_finish);
    REQUIRE(growths >= 30 && mid_finds > 1000 && mid_dels > 100 && bulk_finish > 0);
    free(r.key);
    free(r.live);
    free(seen);
}
END_TEST

/* One-at-a-time inserts never wait for a move: each reserve moves a bounded
 * number of slots, and the next growth never finds the last one unfinished. */
START_TEST(test_idx_bounded_steps)
{
    struct mem m = {0};
    struct idx t;
    REQUIRE(idx_init(&t, &m, 8) == 0);
    uint32_t moving_reserves = 0;
    for (uint32_t i = 0; i < 200000; i++) {
        uint32_t mask = t.mask, mig = t.mig;
        bool was_moving = t.old != NULL;
        REQUIRE(idx_reserve(&t, &m, 1) == 0);
        if (was_moving) {
            moving_reserves++;
            REQUIRE(t.mask == mask);               /* no growth on top of a move */
            REQUIRE(!t.old || t.mig - mig <= 20);  /* a bounded step */
        }
        idx_put(&t, (uint64_t)i * 7919 + 3, i);
    }
    REQUIRE(moving_reserves > 1000);
    REQUIRE(idx_check(&t) == 0);
    for (uint32_t i = 0; i < 200000; i += 13)
        REQUIRE(idx_find(&t, (uint64_t)i * 7919 + 3) == i + 1);
    idx_free(&t, &m);
    REQUIRE(m.bytes[MEM_OTHER] == 0);
}
END_TEST

/* ENOMEM on a reserve that must grow while a move is in progress: -1,
 * every key still found, the structure sound; the retry succeeds. */
START_TEST(test_idx_enomem_mid_move)
{
    struct mem m = {0};
    struct idx t;
    REQUIRE(idx_init(&t, &m, 8) == 0);
    uint32_t n = 0;
    while (!(t.old && t.mask >= 1023)) {
        REQUIRE(idx_reserve(&t, &m, 1) == 0);
        idx_put(&t, n % 300, n);  /* duplicate keys: long runs across the cursor */
        n++;
    }
    /* delete every 5th id, moved or not, so old holds tombstones too */
    uint32_t live = n;
    for (uint32_t i = 0; i < n; i += 5) {
        idx_del(&t, i % 300, i);
        live--;
    }
    REQUIRE(t.old != NULL && t.on < live);
    REQUIRE(idx_check(&t) == 0);
    uint32_t cap = t.mask + 1;
    uint64_t before = m.bytes[MEM_OTHER];
    m.fail_at = m.nallocs + 1;
    REQUIRE(idx_reserve(&t, &m, cap) == -1);
    REQUIRE(t.mask + 1 == cap);
    REQUIRE(m.bytes[MEM_OTHER] <= before);
    REQUIRE(idx_check(&t) == 0);
    REQUIRE(t.n == live);
    for (int pass = 0; pass < 2; pass++) {
        uint8_t *hit = calloc(n, 1);
        for (uint64_t k = 0; k < 300; k++) {
            struct idx_walk w = idx_walk_start(&t, k);
            for (uint32_t v; (v = idx_walk_next(&t, k, &w));) {
                REQUIRE(v >= 1 && v <= n && (v - 1) % 300 == k && (v - 1) % 5 != 0);
                REQUIRE(!hit[v - 1]);
                hit[v - 1] = 1;
            }
        }
        for (uint32_t i = 0; i < n; i++)
            REQUIRE(hit[i] == (i % 5 != 0));
        free(hit);
        if (pass == 0) {
            /* the retry grows, finishing the move first */
            REQUIRE(idx_reserve(&t, &m, cap) == 0);
            REQUIRE(t.mask + 1 > cap);
            REQUIRE(idx_check(&t) == 0);
        }
    }
    idx_free(&t, &m);
    REQUIRE(m.bytes[MEM_OTHER] == 0);
}
END_TEST

/* With a populate hook the next table is mapped past 5/8 load, handed to
 * the hook whole, and taken by the growth at 3/4; a bulk reserve that
 * outgrows it frees it. Contents and accounting are those without. */
struct pop_log {
    int calls;
    void *last;
    size_t last_len;
};

static void pop_record(void *ud, void *addr, size_t len)
{
    struct pop_log *l = ud;
    l->calls++;
    l->last = addr;
    l->last_len = len;
}

START_TEST(test_idx_next_table_ahead)
{
    struct pop_log log = {0};
    struct mem m = {0};
    m.populate = pop_record;
    m.populate_ud = &log;
    struct idx t;
    /* 2^16 slots of 16 bytes = 1 MiB: the smallest table mapped (MEM_LARGE) */
    REQUIRE(idx_init(&t, &m, 1u << 16) == 0);
    uint32_t n = 0, cap = t.mask + 1;
    while ((uint64_t)(n + 1) * 8 <= (uint64_t)cap * 5) {
        REQUIRE(idx_reserve(&t, &m, 1) == 0);
        idx_put(&t, n * 7919u, n);
        n++;
    }
    REQUIRE(t.next == NULL);
    REQUIRE(idx_reserve(&t, &m, 1) == 0);  /* past 5/8: the next table is mapped now */
    idx_put(&t, n * 7919u, n);
    n++;
    REQUIRE(t.next != NULL && t.nmask + 1 == 2 * cap);
    REQUIRE(log.last == t.next && log.last_len == (size_t)2 * cap * sizeof(struct idx_slot));
    REQUIRE(m.bytes[MEM_OTHER] == ((size_t)cap + 2 * cap) * sizeof(struct idx_slot));
    struct idx_slot *ahead = t.next;
    while (t.mask + 1 == cap) {
        REQUIRE(idx_reserve(&t, &m, 1) == 0);
        idx_put(&t, n * 7919u, n);
        n++;
    }
    REQUIRE(t.slots == ahead && t.next == NULL);  /* the growth took it */
    REQUIRE(idx_check(&t) == 0);
    for (uint32_t i = 0; i < n; i++)
        REQUIRE(idx_find(&t, i * 7919u) == i + 1);
    /* map the next one, then outgrow it with one bulk reserve */
    cap = t.mask + 1;
    while (!t.next) {
        REQUIRE(idx_reserve(&t, &m, 1) == 0);
        idx_put(&t, n * 7919u, n);
        n++;
    }
    REQUIRE(idx_reserve(&t, &m, (uint64_t)cap * 2) == 0);
    REQUIRE(t.next == NULL && t.mask + 1 >= 4 * cap);
    REQUIRE(idx_check(&t) == 0);
    for (uint32_t i = 0; i < n; i++)
        REQUIRE(idx_find(&t, i * 7919u) == i + 1);
    idx_free(&t, &m);
    REQUIRE(m.bytes[MEM_OTHER] == 0);
    /* without a hook nothing is mapped early */
    m.populate = NULL;
    REQUIRE(idx_init(&t, &m, 1u << 16) == 0);
    for (n = 0; n < (1u << 16) * 5 / 8 + 100; n++) {
        REQUIRE(idx_reserve(&t, &m, 1) == 0);
        idx_put(&t, n, n);
    }
    REQUIRE(t.next == NULL);
    idx_free(&t, &m);
    REQUIRE(m.bytes[MEM_OTHER] == 0);
}
END_TEST

extern Suite *idx_suite(void);
Suite *idx_suite(void)
{
    Suite *s = suite_create("idx");
    TCase *tc = tcase_create("idx");
    tcase_add_test(tc, test_idx_random);
    tcase_add_test(tc, test_idx_unique);
    tcase_add_test(tc, test_idx_incremental);
    tcase_add_test(tc, test_idx_bounded_steps);
    tcase_add_test(tc, test_idx_enomem_mid_move);
    tcase_add_test(tc, test_idx_next_table_ahead);
    suite_add_tcase(s, tc);
    return s;
}
