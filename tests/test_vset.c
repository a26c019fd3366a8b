/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of engine/vset.c: membership, the 0 -> 1 mapping, the load
 * rule and growth sequence, reserve-then-add, bytes per member, ENOMEM
 * (a table's or a region's) leaving every set untouched, and the slab
 * heap moving tables and telling their owners. The property test runs
 * many sets in one heap against a reference model (sorted arrays).
 */
#include <check.h>
#include <stdlib.h>

#include "engine/vset.h"
#include "tests/eng_util.h"

#define NSETS 48

/* A heap whose owner ids index sets[]. */
struct th {
    struct mem m;
    struct vheap h;
    struct vset s[NSETS];
};

static struct vset *th_owner(void *ud, uint32_t id)
{
    return &((struct th *)ud)->s[id];
}

static struct th *th_new(void)
{
    struct th *t = calloc(1, sizeof(*t));
    ck_assert_ptr_nonnull(t);
    vheap_init(&t->h, &t->m, th_owner, t);
    return t;
}

static void th_free(struct th *t)
{
    for (int i = 0; i < NSETS; i++)
        vset_free(&t->s[i], &t->h);
    ck_assert_uint_eq(t->m.bytes[MEM_VIEWERS], 0);
    vheap_release(&t->h);
    mem_destroy(&t->m);
    free(t);
}

/* Tables in slabs, as vheap_verify must count them. */
static int64_t th_small(const struct th *t)
{
    int64_t n = 0;
    for (int i = 0; i < NSETS; i++)
        n += t->s[i].cap > 0 && t->s[i].cap <= VSET_SLAB_MAX;
    return n;
}

START_TEST(test_vset_basic)
{
    struct th *t = th_new();
    struct vset *s = &t->s[0];
    ck_assert(!vset_has(s, 5));
    ck_assert_int_eq(vset_reserve(s, &t->h, 0, 1), 0);
    ck_assert_uint_eq(s->cap, 2);
    ck_assert(vset_add(s, 5));
    ck_assert(!vset_add(s, 5));
    ck_assert(vset_has(s, 5));
    ck_assert_uint_eq(s->n, 1);
    /* fingerprint 0 is stored as 1: they are the same member */
    ck_assert_int_eq(vset_reserve(s, &t->h, 0, 1), 0);
    ck_assert(vset_add(s, 0));
    ck_assert(vset_has(s, 1));
    ck_assert(!vset_add(s, 1));
    ck_assert_uint_eq(s->n, 2);
    ck_assert_uint_eq(s->cap, 4);  /* small tables keep one slot empty; 2 -> 4 */
    ck_assert_uint_eq(t->m.bytes[MEM_VIEWERS], 32);
    ck_assert_int_eq(vheap_verify(&t->h, NSETS), 1);
    vset_free(s, &t->h);
    ck_assert_uint_eq(t->m.bytes[MEM_VIEWERS], 0);
    ck_assert_uint_eq(s->cap, 0);
    ck_assert_int_eq(vheap_verify(&t->h, NSETS), 0);
    th_free(t);
}
END_TEST

START_TEST(test_vset_growth)
{
    /* capacity follows the sequence vset.h documents, and grows only when
     * the load rule (n < cap up to 16 slots, else n <= 7/8 cap) fails */
    static const uint32_t seq[] = {2, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 45, 50, 56, 63, 70};
    size_t nseq = 0;
    struct th *t = th_new();
    struct vset *s = &t->s[3];
    uint64_t cap = 0;
    for (uint64_t n = 1; n <= 5000; n++) {
        REQUIRE(vset_reserve(s, &t->h, 3, 1) == 0);
        REQUIRE(vset_add(s, n * 0x9e3779b97f4a7c15ULL));
        if (s->cap != cap) {
            REQUIRE(cap == 0 || !(cap <= 16 ? n < cap : n * 8 <= cap * 7));
            if (nseq < sizeof seq / sizeof seq[0])
                REQUIRE(s->cap == seq[nseq++]);
            else
                REQUIRE(s->cap == cap + cap / 8);  /* "growth is by cap / 8 slots" */
            cap = s->cap;
        }
        REQUIRE(vset_fits(s->n, s->cap));
        REQUIRE(s->n < s->cap);
        /* bytes per member, as vset.h states: <= 12 from 8 members, 10.7
         * from 16, and 8 / (7/8) * 9/8 once steps are cap / 8 */
        uint64_t b = t->m.bytes[MEM_VIEWERS];
        if (n >= 8)
            REQUIRE(b <= n * 12);
        if (n >= 16)
            REQUIRE(b * 3 <= n * 32);
        if (n >= 32)
            REQUIRE(b * 1000 <= n * 10286);
        REQUIRE(t->m.bytes[MEM_VIEWERS] == (uint64_t)s->cap * 8);
    }
    REQUIRE(nseq == sizeof seq / sizeof seq[0]);
    for (uint64_t n = 1; n <= 5000; n++)
        REQUIRE(vset_has(s, n * 0x9e3779b97f4a7c15ULL));
    th_free(t);
}
END_TEST

static int cmp64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Keys that collide on purpose: a third share a handful of high halves
 * (so homes coincide at every capacity), the rest are spread. */
static uint64_t rand_key(uint64_t *r)
{
    switch (trng_below(r, 6)) {
    case 0:
        return trng_below(r, 3) << 32 | trng_below(r, 40);
    case 1:
        return trng_below(r, 40);  /* high half 0; includes fingerprint 0 */
    default: {
        uint64_t x = trng_below(r, 1000) + 0x9e3779b97f4a7c15ULL;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
        return x ^ (x >> 31);
    }
    }
}

struct ref {
    uint64_t *k;
    size_t n;
};

static bool ref_has(const struct ref *f, uint64_t fp)
{
    uint64_t key = vset_key(fp);
    return bsearch(&key, f->k, f->n, sizeof(uint64_t), cmp64) != NULL;
}

static void ref_put(struct ref *f, uint64_t key)
{
    size_t i = f->n;
    while (i > 0 && f->k[i - 1] > key)
        i--;
    memmove(f->k + i + 1, f->k + i, (f->n - i) * sizeof(uint64_t));
    f->k[i] = key;
    f->n++;
}

static void check_all(const struct th *t, const struct ref *f)
{
    REQUIRE(vheap_verify(&t->h, NSETS) == th_small(t));
    uint64_t bytes = 0;
    for (int i = 0; i < NSETS; i++) {
        const struct vset *s = &t->s[i];
        REQUIRE(s->n == f[i].n);
        REQUIRE(s->n == 0 || vset_fits(s->n, s->cap));
        for (size_t j = 0; j < f[i].n; j++)
            REQUIRE(vset_has(s, f[i].k[j]));
        size_t held = 0;
        for (uint32_t j = 0; j < s->cap; j++)
            if (s->slots[j]) {
                REQUIRE(ref_has(&f[i], s->slots[j]));
                held++;
            }
        REQUIRE(held == s->n);
        bytes += (uint64_t)s->cap * 8;
    }
    REQUIRE(bytes == t->m.bytes[MEM_VIEWERS]);
}

START_TEST(test_vset_random)
{
    uint64_t seed = test_seed("vset", 99), r = seed;
    struct th *t = th_new();
    struct ref f[NSETS] = {{0}};
    for (int i = 0; i < NSETS; i++)
        f[i].k = malloc(2000 * sizeof(uint64_t));
    uint64_t batch[16];
    for (int op = 0; op < 30000; op++) {
        uint32_t id = (uint32_t)trng_below(&r, NSETS);
        struct vset *s = &t->s[id];
        uint64_t roll = trng_below(&r, 100);
        if (roll < 3 && id >= 4) {
            /* a set goes: others move into its place (sets 0-3 stay and
             * grow past the slabs) */
            vset_free(s, &t->h);
            f[id].n = 0;
        } else if (roll < 8) {
            /* ENOMEM on the table, or on the region/page behind it */
            struct vset before = *s;
            uint32_t extra = (uint32_t)trng_below(&r, 70) + 1;
            t->m.fail_at = t->m.nallocs + 1 + trng_below(&r, 2);
            int rc = vset_reserve(s, &t->h, id, extra);
            t->m.fail_at = 0;
            if (rc) {
                REQUIRE(s->cap == before.cap && s->n == before.n && s->slots == before.slots);
            } else {
                REQUIRE(vset_fits((uint64_t)s->n + extra, s->cap));
            }
        } else {
            /* reserve for a batch, then add it without allocating */
            uint32_t k = (uint32_t)trng_below(&r, id < 4 ? 16 : 4) + 1;
            uint32_t fresh = 0;
            for (uint32_t j = 0; j < k; j++) {
                batch[j] = rand_key(&r);
                REQUIRE(vset_has(s, batch[j]) == ref_has(&f[id], batch[j]));
                fresh += !ref_has(&f[id], batch[j]);
            }
            REQUIRE(vset_reserve(s, &t->h, id, fresh) == 0);
            uint32_t cap = s->cap;
            uint64_t nallocs = t->m.nallocs;
            for (uint32_t j = 0; j < k; j++) {
                bool in = ref_has(&f[id], batch[j]);
                REQUIRE(vset_add(s, batch[j]) == !in);
                if (!in)
                    ref_put(&f[id], vset_key(batch[j]));
            }
            REQUIRE(s->cap == cap && t->m.nallocs == nallocs);
        }
        if (op % 500 == 0)
            check_all(t, f);
    }
    check_all(t, f);
    for (int i = 0; i < NSETS; i++)
        free(f[i].k);
    th_free(t);
}
END_TEST

START_TEST(test_vset_enomem)
{
    struct th *t = th_new();
    struct vset *s = &t->s[1];
    /* the first table needs a region: failing either allocation is clean */
    for (uint64_t k = 1; k <= 2; k++) {
        t->m.fail_at = t->m.nallocs + k;
        ck_assert_int_eq(vset_reserve(s, &t->h, 1, 7), -1);
        ck_assert_uint_eq(s->cap, 0);
        ck_assert_ptr_null(s->slots);
        ck_assert_uint_eq(t->m.bytes[MEM_VIEWERS], 0);
    }
    t->m.fail_at = 0;
    ck_assert_int_eq(vset_reserve(s, &t->h, 1, 7), 0);
    ck_assert_uint_eq(s->cap, 8);
    for (uint64_t i = 1; i <= 7; i++)
        ck_assert(vset_add(s, i << 40));
    t->m.fail_at = t->m.nallocs + 1;
    ck_assert_int_eq(vset_reserve(s, &t->h, 1, 1), -1);
    ck_assert_uint_eq(s->cap, 8);
    ck_assert_uint_eq(s->n, 7);
    for (uint64_t i = 1; i <= 7; i++)
        ck_assert(vset_has(s, i << 40));
    ck_assert_int_eq(vset_reserve(s, &t->h, 1, 0), 0);  /* no growth needed: no allocation */
    ck_assert_int_eq(vset_reserve(s, &t->h, 1, 1), 0);
    ck_assert_uint_eq(s->cap, 12);
    /* a table past the slabs comes from the pool; its failure is clean too */
    t->m.fail_at = t->m.nallocs + 1;
    ck_assert_int_eq(vset_reserve(s, &t->h, 1, 100), -1);
    ck_assert_uint_eq(s->cap, 12);
    ck_assert_int_eq(vset_reserve(s, &t->h, 1, 100), 0);
    ck_assert_uint_gt(s->cap, VSET_SLAB_MAX);
    for (uint64_t i = 1; i <= 7; i++)
        ck_assert(vset_has(s, i << 40));
    ck_assert_int_eq(vheap_verify(&t->h, NSETS), 0);
    /* past the 2^31-slot limit: refused before any allocation */
    uint32_t cap = s->cap;
    uint64_t nallocs = t->m.nallocs;
    ck_assert_int_eq(vset_reserve(s, &t->h, 1, UINT32_MAX), -1);
    ck_assert_uint_eq(t->m.nallocs, nallocs);
    ck_assert_uint_eq(s->cap, cap);
    ck_assert_uint_eq(s->n, 7);
    th_free(t);
}
END_TEST

START_TEST(test_vset_slab_moves)
{
    /* many tables of one capacity; freeing one moves the class's last into
     * its place and updates that owner; emptied pages serve other classes */
    struct th *t = th_new();
    for (uint32_t i = 0; i < NSETS; i++) {
        ck_assert_int_eq(vset_reserve(&t->s[i], &t->h, i, 40), 0);
        for (uint64_t j = 0; j < 40; j++)
            ck_assert(vset_add(&t->s[i], (uint64_t)i << 48 | j << 32 | j));
    }
    uint32_t cap = t->s[0].cap;
    for (uint32_t i = 0; i < NSETS; i++)
        ck_assert_uint_eq(t->s[i].cap, cap);
    uint64_t *last = t->s[NSETS - 1].slots, *hole = t->s[5].slots;
    vset_free(&t->s[5], &t->h);
    ck_assert_ptr_eq(t->s[NSETS - 1].slots, hole);
    ck_assert_ptr_ne(t->s[NSETS - 1].slots, last);
    ck_assert_int_eq(vheap_verify(&t->h, NSETS), NSETS - 1);
    for (uint32_t i = 0; i < NSETS; i++)
        for (uint64_t j = 0; j < 40 && i != 5; j++)
            ck_assert(vset_has(&t->s[i], (uint64_t)i << 48 | j << 32 | j));
    for (uint32_t i = 0; i < NSETS; i++)
        vset_free(&t->s[i], &t->h);
    ck_assert_int_eq(vheap_verify(&t->h, NSETS), 0);
    /* the same bytes again as another capacity: no new region */
    uint64_t regions = t->h.region_bytes;
    for (uint32_t i = 0; i < NSETS; i++)
        ck_assert_int_eq(vset_reserve(&t->s[i], &t->h, i, 20), 0);
    ck_assert_uint_eq(t->h.region_bytes, regions);
    ck_assert_int_eq(vheap_verify(&t->h, NSETS), NSETS);
    th_free(t);
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
    tcase_add_test(tc, test_vset_slab_moves);
    suite_add_tcase(s, tc);
    return s;
}
