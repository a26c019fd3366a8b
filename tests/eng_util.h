/* SPDX-License-Identifier: MIT */
/*
 * eng_util.h -- helpers shared by the engine's test files: an injected
 * clock, an interaction builder, a seeded PRNG (SHORTSTAT_SEED replays),
 * and a digest of everything an engine answers, for "state unchanged"
 * checks.
 */
#ifndef SHORTSTAT_TESTS_ENG_UTIL_H
#define SHORTSTAT_TESTS_ENG_UTIL_H

#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/eng.h"

/* Check records every assertion it evaluates (a write per call), which
 * dominates loops of millions of checks: in hot loops call it on failure
 * only. */
#define REQUIRE(cond)                                                            \
    do {                                                                         \
        if (!(cond))                                                             \
            ck_abort_msg("%s:%d: failed: %s", __FILE__, __LINE__, #cond);        \
    } while (0)

struct tclock {
    int64_t now;
};

static inline int64_t tclock_fn(void *ud)
{
    return ((struct tclock *)ud)->now;
}

static inline void trandom_fn(void *ud, uint8_t *out, size_t n)
{
    (void)ud;
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)(i * 37 + 11);
}

static inline struct eng *mk_eng(struct tclock *c, uint32_t history, int64_t ttl)
{
    struct eng_config cfg = {.history = history, .session_ttl_ms = ttl, .clock = tclock_fn, .ud = c};
    struct eng *e = eng_create(&cfg);
    ck_assert_ptr_nonnull(e);
    return e;
}

static inline void verify_ok(const struct eng *e)
{
    struct eng_err err;
    if (eng_verify(e, &err) != 0)
        ck_abort_msg("eng_verify: %s", err.msg);
}

static inline struct eng_ix ix_of(int type, uint64_t short_id, const char *session, uint64_t user)
{
    struct eng_ix ix;
    memset(&ix, 0, sizeof(ix));
    ix.type = type;
    ix.short_id = short_id;
    ix.user = user;
    if (session) {
        ix.session = session;
        ix.session_len = strlen(session);
    }
    return ix;
}

static inline void ix_set(const char **p, size_t *len, const char *s)
{
    *p = s;
    *len = s ? strlen(s) : 0;
}

static inline void rec_ok(struct eng *e, const struct eng_ix *ix)
{
    struct eng_err err;
    int rc = eng_record(e, ix, &err);
    if (rc != 0)  /* Check logs each assertion: only call it to fail */
        ck_abort_msg("eng_record: %d %s", rc, err.msg);
}

/* xorshift64*: small, seedable, good enough for test generation. */
static inline uint64_t trng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dULL;
}

static inline uint64_t trng_below(uint64_t *s, uint64_t n)
{
    return n ? trng_next(s) % n : 0;
}

/* Seed from SHORTSTAT_SEED, else from the given default; printed so a
 * failure can be replayed. */
static inline uint64_t test_seed(const char *what, uint64_t dflt)
{
    const char *env = getenv("SHORTSTAT_SEED");
    uint64_t seed = env && *env ? strtoull(env, NULL, 0) : dflt;
    if (seed == 0)
        seed = 1;
    fprintf(stderr, "%s: seed %" PRIu64 " (replay with SHORTSTAT_SEED=%" PRIu64 ")\n", what, seed,
            seed);
    return seed;
}

/* ---- digest of observable state ------------------------------------------ */

struct dg {
    uint64_t h;
};

static inline void dg_add(struct dg *d, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        d->h ^= b[i];
        d->h *= 0x100000001b3ULL;
    }
}

static inline void dg_u64(struct dg *d, uint64_t v)
{
    dg_add(d, &v, sizeof(v));
}

static inline void dg_str(struct dg *d, const char *s, size_t n)
{
    dg_u64(d, s ? n : UINT64_MAX);
    if (s)
        dg_add(d, s, n);
}

struct dg_walk {
    struct dg *d;
    struct eng *e;
    uint64_t *ids;
    size_t nids;
    uint64_t ring_sum;
};

static inline int dg_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static inline int dg_short_cb(void *ud, const struct eng_short_view *v)
{
    struct dg_walk *w = ud;
    w->ids = realloc(w->ids, (w->nids + 1) * sizeof(uint64_t));
    w->ids[w->nids++] = v->short_id;
    dg_u64(w->d, v->short_id);
    dg_add(w->d, v->count, sizeof(v->count));
    dg_u64(w->d, v->watch_sum);
    dg_u64(w->d, v->watch_n);
    dg_u64(w->d, v->boost);
    dg_u64(w->d, (uint64_t)v->last_ts);
    for (size_t i = 0; i < v->nplat; i++) {
        dg_u64(w->d, v->plat_ids[i]);
        dg_u64(w->d, v->plat_shares[i]);
    }
    /* set contents, not their layout */
    for (int pass = 0; pass < 2; pass++) {
        const uint64_t *slots = pass ? v->savers : v->viewers;
        size_t cap = pass ? v->savers_cap : v->viewers_cap, n = 0;
        uint64_t *tmp = malloc((cap + 1) * sizeof(uint64_t));
        for (size_t i = 0; i < cap; i++)
            if (slots[i])
                tmp[n++] = slots[i];
        qsort(tmp, n, sizeof(uint64_t), dg_cmp_u64);
        dg_u64(w->d, n);
        dg_add(w->d, tmp, n * sizeof(uint64_t));
        free(tmp);
    }
    return 0;
}

static inline void dg_hist(struct dg *d, const struct eng_history_rec *r, size_t n)
{
    dg_u64(d, n);
    for (size_t i = 0; i < n; i++) {
        dg_u64(d, r[i].short_id);
        dg_u64(d, (uint64_t)r[i].ts);
        dg_u64(d, r[i].type);
        dg_u64(d, r[i].user);
        dg_str(d, r[i].session, r[i].session_len);
        dg_u64(d, r[i].has_watch);
        dg_u64(d, r[i].watch_ms);
        dg_str(d, r[i].platform, r[i].platform_len);
        dg_str(d, r[i].ip, strlen(r[i].ip));
        dg_str(d, r[i].ua, r[i].ua_len);
    }
}

/* Rings come in slab order, which depends on the free list: hash each
 * ring alone and add them up, so the order does not matter. */
static inline int dg_ring_cb(void *ud, const struct eng_ring_view *v, const struct eng_rec_view *recs)
{
    struct dg_walk *w = ud;
    static struct eng_history_rec hist[ENG_HISTORY_DEFAULT * 4];
    struct dg one = {0xcbf29ce484222325ULL};
    dg_u64(&one, v->is_user);
    dg_u64(&one, v->user);
    dg_str(&one, v->session, v->session_len);
    dg_u64(&one, (uint64_t)v->last_seen_ms);
    dg_u64(&one, v->nrecs);
    (void)recs;
    size_t n = v->is_user ? eng_history_user(w->e, v->user, hist, 256)
                          : eng_history_session(w->e, v->session, v->session_len, hist, 256);
    dg_hist(&one, hist, n);
    w->ring_sum += one.h * 0x9e3779b97f4a7c15ULL + (one.h >> 29);
    return 0;
}

static inline int dg_ua_cb(void *ud, const struct eng_ua_view *v)
{
    struct dg_walk *w = ud;
    dg_str(w->d, v->ua, v->len);
    return 0;
}

static inline int dg_plat_cb(void *ud, const struct eng_platform_view *v)
{
    struct dg_walk *w = ud;
    dg_u64(w->d, v->id);
    dg_str(w->d, v->name, v->len);
    return 0;
}

/* Everything observable except memory figures and table layout. History
 * is read through the query API (fresh clock), the rest through walks and
 * stats; top-k for every metric at k = 1000. */
static inline void dg_mark(const struct dg *d, const char *what)
{
    if (getenv("ENG_DIGEST_DEBUG"))
        fprintf(stderr, "digest %-10s %016" PRIx64 "\n", what, d->h);
}

static inline uint64_t eng_digest(struct eng *e)
{
    struct dg d = {0xcbf29ce484222325ULL};
    struct dg_walk w = {&d, e, NULL, 0, 0};
    struct eng_info in;
    eng_info(e, &in);
    dg_u64(&d, in.shorts);
    dg_u64(&d, in.sessions);
    dg_u64(&d, in.users);
    dg_u64(&d, in.interactions);
    dg_add(&d, in.by_type, sizeof(in.by_type));
    dg_u64(&d, in.records);
    dg_u64(&d, in.viewer_pairs);
    dg_u64(&d, in.sessions_evicted);
    dg_mark(&d, "info");
    struct eng_walk_counts wc;
    eng_walk_counts(e, &wc);
    dg_add(&d, &wc, sizeof(wc));
    dg_mark(&d, "counts");
    eng_walk_platforms(e, dg_plat_cb, &w);
    eng_walk_uas(e, dg_ua_cb, &w);
    dg_mark(&d, "plat+ua");
    eng_walk_shorts(e, dg_short_cb, &w);
    dg_mark(&d, "shorts");
    eng_walk_rings(e, dg_ring_cb, &w);
    dg_u64(&d, w.ring_sum);
    dg_mark(&d, "rings");
    for (size_t i = 0; i < w.nids; i++) {
        struct eng_stats st;
        eng_stats(e, w.ids[i], &st);
        dg_add(&d, &st, offsetof(struct eng_stats, platforms));
        for (size_t p = 0; p < st.nplatforms; p++) {
            dg_str(&d, st.platforms[p].name, strlen(st.platforms[p].name));
            dg_u64(&d, st.platforms[p].shares);
        }
    }
    free(w.ids);
    dg_mark(&d, "stats");
    static struct eng_top_item top[ENG_TOPK_MAX];
    for (int m = 0; m < ENG_M_COUNT; m++) {
        int n = eng_top(e, (enum eng_metric)m, ENG_TOPK_MAX, top, NULL);
        ck_assert_int_ge(n, 0);
        dg_u64(&d, (uint64_t)n);
        dg_add(&d, top, (size_t)n * sizeof(top[0]));
    }
    return d.h;
}

/* ---- walk -> restore: copy an engine through the persistence view ---- */

struct capture {
    struct eng *dst;
    struct eng_err err;
    int rc;
    int hist_bump;
};

static inline int cap_plat(void *ud, const struct eng_platform_view *v)
{
    struct capture *c = ud;
    return c->rc = eng_restore_platform(c->dst, v, &c->err);
}

static inline int cap_ua(void *ud, const struct eng_ua_view *v)
{
    struct capture *c = ud;
    return c->rc = eng_restore_ua(c->dst, v, &c->err);
}

static inline int cap_ctx(void *ud, const struct eng_ctx_view *v)
{
    struct capture *c = ud;
    return c->rc = eng_restore_ctx(c->dst, v, &c->err);
}

static inline int cap_short(void *ud, const struct eng_short_view *v)
{
    struct capture *c = ud;
    uint64_t *vw = malloc((v->viewers_cap + 1) * sizeof(uint64_t));
    uint64_t *sv = malloc((v->savers_cap + 1) * sizeof(uint64_t));
    size_t nv = 0, ns = 0;
    for (size_t i = 0; i < v->viewers_cap; i++)
        if (v->viewers[i])
            vw[nv++] = v->viewers[i];
    for (size_t i = 0; i < v->savers_cap; i++)
        if (v->savers[i])
            sv[ns++] = v->savers[i];
    c->rc = eng_restore_short(c->dst, v, vw, nv, sv, ns, &c->err);
    free(vw);
    free(sv);
    return c->rc;
}

static inline int cap_ring(void *ud, const struct eng_ring_view *v, const struct eng_rec_view *r)
{
    struct capture *c = ud;
    return c->rc = eng_restore_ring(c->dst, v, r, &c->err);
}

/* Copy src into a fresh engine through the persistence view. */
static inline struct eng *clone_eng(struct eng *src, struct tclock *ck, uint32_t history, int64_t ttl)
{
    struct eng *dst = mk_eng(ck, history, ttl);
    struct capture c = {.dst = dst};
    struct eng_walk_counts wc;
    eng_walk_counts(src, &wc);
    ck_assert_int_eq(eng_restore_reserve(dst, &wc, &c.err), 0);
    ck_assert_int_eq(eng_walk_platforms(src, cap_plat, &c), 0);
    ck_assert_int_eq(eng_walk_uas(src, cap_ua, &c), 0);
    ck_assert_int_eq(eng_walk_ctxs(src, cap_ctx, &c), 0);
    ck_assert_msg(eng_walk_shorts(src, cap_short, &c) == 0, "restore: %s", c.err.msg);
    ck_assert_msg(eng_walk_rings(src, cap_ring, &c) == 0, "restore: %s", c.err.msg);
    struct eng_totals t;
    eng_totals(src, &t);
    ck_assert_msg(eng_restore_finish(dst, &t, &c.err) == 0, "finish: %s", c.err.msg);
    verify_ok(dst);
    return dst;
}

#endif
