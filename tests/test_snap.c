/* SPDX-License-Identifier: MIT */
/*
 * test_snap.c -- snapshot/ tests: round trips of random engine states, every
 * flipped byte and every truncation rejected, structural corruption behind
 * valid checksums, crash safety under kill -9, the error paths of
 * snap_save/snap_load, and the shortstat-snap tool as a subprocess.
 *
 * Random states come from a seeded PRNG; a failure prints the seed and
 * SHORTSTAT_SEED=<n> replays it. The clock is injected, so sessions expire
 * exactly when the generator says.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <lz4frame.h>
#include <xxhash.h>

#include "engine/eng.h"
#include "engine/eng_test.h"
#include "snapshot/snap.h"
#include "snapshot/snap_int.h"
#include "snapshot/snap_test.h"
#include "tests/run_util.h"

#ifndef SHORTSTAT_BUILD
#define SHORTSTAT_BUILD "build/san"
#endif

/* ---- seeded randomness ---------------------------------------------------------- */

struct rng {
    uint64_t s;
};

static uint64_t rnd(struct rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t below(struct rng *r, uint64_t n) { return n ? rnd(r) % n : 0; }

static uint64_t base_seed(void)
{
    const char *s = getenv("SHORTSTAT_SEED");
    return s && *s ? strtoull(s, NULL, 0) : 20240601ull;
}

/* ---- engine fixture: clock, pools, generator ----------------------------------------- */

struct tclock {
    int64_t now;
};

static int64_t tclock_fn(void *ud) { return ((struct tclock *)ud)->now; }

static void trandom_fn(void *ud, uint8_t *out, size_t n)
{
    static uint64_t ctr = 1;   /* ids only need to be distinct here */
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)((ctr++ * 0x9E3779B97F4A7C15ull) >> 56);
}

#define NSESS 40
#define NUSER 25
#define NSHORT 30

struct world {
    struct tclock clk;
    struct eng_config cfg;
    char sess[NSESS][ENG_SESSION_MAX + 1];
    size_t sess_len[NSESS];
    uint64_t users[NUSER];
    uint64_t shorts[NSHORT];
};

static const char *PLATFORMS[] = {"whatsapp", "telegram", "x_2", "a", "mail"};
static const char *IPS[] = {"10.0.0.1", "192.168.7.200", "2001:db8::1", "::1", "8.8.4.4",
                            "fe80::1:2:3:4"};
static char UA_LONG[ENG_UA_MAX];
static const char *UAS[] = {"Mozilla/5.0 (X11; Linux x86_64)", "curl/8.0", "quote\" comma, nl\n",
                            "latin1 \xff\xfe bytes", UA_LONG};

static void world_init(struct world *w, struct rng *r, uint32_t history, int64_t ttl)
{
    memset(w, 0, sizeof *w);
    for (size_t i = 0; i < sizeof UA_LONG; i++)
        UA_LONG[i] = (char)('a' + i % 26);
    w->clk.now = 1700000000000ll;
    w->cfg.history = history;
    w->cfg.session_ttl_ms = ttl;
    w->cfg.clock = tclock_fn;
    w->cfg.random = trandom_fn;
    w->cfg.ud = &w->clk;
    static const char chars[] = "ABCxyz019._:-";
    for (int i = 0; i < NSESS; i++) {
        if (i % 2 == 0) {   /* guest ids: pack into 16 bytes in the file */
            int n = snprintf(w->sess[i], sizeof w->sess[i], "g-");
            for (int k = 0; k < 32; k++)
                w->sess[i][n + k] = "0123456789abcdef"[below(r, 16)];
            w->sess[i][34] = 0;
            w->sess_len[i] = 34;
        } else {
            size_t len = 1 + below(r, i == 1 ? 1 : ENG_SESSION_MAX);
            if (i == 3)
                len = ENG_SESSION_MAX;
            for (size_t k = 0; k < len; k++)
                w->sess[i][k] = chars[below(r, sizeof chars - 1)];
            w->sess[i][len] = 0;
            w->sess_len[i] = len;
            /* keep the names distinct */
            if (len >= 3) {
                w->sess[i][0] = (char)('A' + i % 26);
                w->sess[i][1] = (char)('a' + i / 26);
            }
        }
    }
    for (int i = 0; i < NUSER; i++)
        w->users[i] = i < 3 ? UINT64_MAX - (uint64_t)i : 1 + (uint64_t)i * 7;
    for (int i = 0; i < NSHORT; i++)
        w->shorts[i] = i < 2 ? (1ull << 62) + (uint64_t)i : 1 + (uint64_t)i;
}

/* One random valid interaction (advances the clock). */
static void gen_ix(struct world *w, struct rng *r, struct eng_ix *ix, bool jumps)
{
    memset(ix, 0, sizeof *ix);
    static const int mix[] = {0, 0, 0, 1, 1, 1, 2, 3, 3, 4, 4, 5, 6, 7};
    ix->type = mix[below(r, sizeof mix / sizeof mix[0])];
    /* a few popular shorts so viewer sets grow past a ring's reach */
    ix->short_id = w->shorts[below(r, 4) == 0 ? below(r, 3) : below(r, NSHORT)];
    uint64_t who = below(r, 10);
    if (who < 4 || who >= 7) {
        int s = (int)below(r, NSESS);
        ix->session = w->sess[s];
        ix->session_len = w->sess_len[s];
    }
    if (who >= 4)
        ix->user = w->users[below(r, NUSER)];
    w->clk.now += (int64_t)below(r, 3000);
    if (jumps && below(r, 150) == 0)
        w->clk.now += w->cfg.session_ttl_ms + 1;   /* everyone idle expires */
    if (below(r, 10) < 7) {
        ix->has_ts = true;
        ix->ts = w->clk.now - (int64_t)below(r, 100000);
        if (below(r, 50) == 0)
            ix->ts = below(r, 2) ? 0 : ENG_TS_MAX;
    }
    if (ix->type == ENG_T_VIEW && below(r, 10) < 7) {
        ix->has_watch = true;
        uint64_t k = below(r, 20);
        ix->watch_ms = k == 0 ? 0 : k == 1 ? ENG_WATCH_MAX : (int64_t)below(r, 60000);
    }
    if (ix->type == ENG_T_SHARE && below(r, 10) < 7) {
        ix->platform = PLATFORMS[below(r, 5)];
        ix->platform_len = strlen(ix->platform);
    }
    if (below(r, 2)) {
        ix->ip = IPS[below(r, 6)];
        ix->ip_len = strlen(ix->ip);
    }
    if (below(r, 2)) {
        int u = (int)below(r, 5);
        ix->ua = UAS[u];
        ix->ua_len = u == 4 ? ENG_UA_MAX : strlen(UAS[u]);
    }
}

static void apply(struct world *w, struct rng *r, struct eng *e, int n, bool jumps)
{
    for (int i = 0; i < n; i++) {
        struct eng_ix ix;
        gen_ix(w, r, &ix, jumps);
        struct eng_err err = {0};
        int rc = eng_record(e, &ix, &err);
        ck_assert_msg(rc == 0, "eng_record: %s", err.msg);
        if (below(r, 40) == 0) {
            rc = eng_set_boost(e, w->shorts[below(r, NSHORT)], (int64_t)below(r, 101), &err);
            ck_assert_msg(rc == 0, "eng_set_boost: %s", err.msg);
        }
        if (below(r, 60) == 0)
            eng_tick(e, (uint32_t)below(r, 8));
    }
}

/* ---- comparing two engines ------------------------------------------------------------- */

static void check_verify(const struct eng *e, const char *what, uint64_t seed)
{
    struct eng_err err = {0};
    ck_assert_msg(eng_verify(e, &err) == 0, "seed %" PRIu64 ": eng_verify(%s): %s", seed, what,
                  err.msg);
}

static void same_history(const struct eng_history_rec *a, size_t na,
                         const struct eng_history_rec *b, size_t nb, const char *who,
                         uint64_t seed)
{
    ck_assert_msg(na == nb, "seed %" PRIu64 ": %s: %zu vs %zu records", seed, who, na, nb);
    for (size_t i = 0; i < na; i++) {
        const struct eng_history_rec *x = &a[i], *y = &b[i];
        ck_assert_msg(x->short_id == y->short_id && x->ts == y->ts && x->type == y->type &&
                          x->user == y->user && x->has_watch == y->has_watch &&
                          (!x->has_watch || x->watch_ms == y->watch_ms) &&
                          x->session_len == y->session_len &&
                          (!x->session_len || !memcmp(x->session, y->session, x->session_len)) &&
                          x->platform_len == y->platform_len &&
                          (!x->platform_len || !memcmp(x->platform, y->platform, x->platform_len)) &&
                          !strcmp(x->ip, y->ip) && x->ua_len == y->ua_len &&
                          (!x->ua_len || !memcmp(x->ua, y->ua, x->ua_len)),
                      "seed %" PRIu64 ": %s record %zu differs", seed, who, i);
    }
}

/* limit: records to compare per ring (the smaller history). */
static void same_engines(struct world *w, struct eng *a, struct eng *b, size_t limit,
                         bool counts, uint64_t seed)
{
    for (int i = 0; i < NSHORT + 1; i++) {
        uint64_t id = i < NSHORT ? w->shorts[i] : 999999;
        struct eng_stats x, y;
        eng_stats(a, id, &x);
        /* copy a's platforms: b's call may not move them, but keep it honest */
        struct eng_platform_count xp[8];
        size_t nxp = x.nplatforms < 8 ? x.nplatforms : 8;
        if (nxp)
            memcpy(xp, x.platforms, nxp * sizeof *xp);
        eng_stats(b, id, &y);
        ck_assert_msg(x.impressions == y.impressions && x.views == y.views &&
                          x.view_count == y.view_count && x.unique_viewers == y.unique_viewers &&
                          x.saves == y.saves && x.shares == y.shares && x.skips == y.skips &&
                          x.contacts == y.contacts && x.whatsapps == y.whatsapps &&
                          x.book_viewings == y.book_viewings && x.avg_watch_ms == y.avg_watch_ms &&
                          x.engagement_rate == y.engagement_rate && x.score == y.score &&
                          x.boost == y.boost && x.last_ts == y.last_ts &&
                          x.nplatforms == y.nplatforms,
                      "seed %" PRIu64 ": stats of short %" PRIu64 " differ", seed, id);
        for (size_t k = 0; k < nxp; k++)
            ck_assert_msg(!strcmp(xp[k].name, y.platforms[k].name) &&
                              xp[k].shares == y.platforms[k].shares,
                          "seed %" PRIu64 ": platform %zu of short %" PRIu64 " differs", seed, k,
                          id);
    }
    static struct eng_top_item ta[ENG_TOPK_MAX], tb[ENG_TOPK_MAX];
    for (int m = 0; m < ENG_M_COUNT; m++) {
        struct eng_err err = {0};
        int na = eng_top(a, (enum eng_metric)m, ENG_TOPK_MAX, ta, &err);
        int nb = eng_top(b, (enum eng_metric)m, ENG_TOPK_MAX, tb, &err);
        ck_assert_msg(na == nb && na >= 0, "seed %" PRIu64 ": top by %s: %d vs %d", seed,
                      eng_metric_name((enum eng_metric)m), na, nb);
        for (int k = 0; k < na; k++)
            ck_assert_msg(ta[k].short_id == tb[k].short_id && ta[k].value == tb[k].value,
                          "seed %" PRIu64 ": top by %s differs at %d", seed,
                          eng_metric_name((enum eng_metric)m), k);
    }
    static struct eng_history_rec ha[64], hb[64];
    char who[128];
    for (int i = 0; i < NSESS; i++) {
        size_t na = eng_history_session(a, w->sess[i], w->sess_len[i], ha, limit);
        size_t nb = eng_history_session(b, w->sess[i], w->sess_len[i], hb, limit);
        snprintf(who, sizeof who, "session %s", w->sess[i]);
        same_history(ha, na, hb, nb, who, seed);
    }
    for (int i = 0; i < NUSER; i++) {
        size_t na = eng_history_user(a, w->users[i], ha, limit);
        size_t nb = eng_history_user(b, w->users[i], hb, limit);
        snprintf(who, sizeof who, "user %" PRIu64, w->users[i]);
        same_history(ha, na, hb, nb, who, seed);
    }
    struct eng_info ia, ib;
    eng_info(a, &ia);
    eng_info(b, &ib);
    ck_assert_msg(ia.shorts == ib.shorts && ia.users == ib.users &&
                      ia.interactions == ib.interactions &&
                      !memcmp(ia.by_type, ib.by_type, sizeof ia.by_type) &&
                      ia.viewer_pairs == ib.viewer_pairs,
                  "seed %" PRIu64 ": eng_info differs", seed);
    if (counts)
        ck_assert_msg(ia.sessions == ib.sessions && ia.records == ib.records &&
                          ia.sessions_evicted == ib.sessions_evicted,
                      "seed %" PRIu64 ": sessions %" PRIu64 "/%" PRIu64 " records %" PRIu64
                      "/%" PRIu64 " evicted %" PRIu64 "/%" PRIu64, seed, ia.sessions,
                      ib.sessions, ia.records, ib.records, ia.sessions_evicted,
                      ib.sessions_evicted);
    check_verify(a, "original", seed);
    check_verify(b, "restored", seed);
}

/* ---- snapshots in memory -------------------------------------------------------------------- */

struct membuf {
    uint8_t *p;
    size_t len, cap;
    size_t fail_after;   /* 0 = never: sink errors once len would pass it */
};

static int mem_sink(void *ud, const void *buf, size_t len)
{
    struct membuf *m = ud;
    if (m->fail_after && m->len + len > m->fail_after)
        return -1;
    if (m->len + len > m->cap) {
        size_t cap = m->cap ? m->cap : 4096;
        while (cap < m->len + len)
            cap *= 2;
        uint8_t *p = realloc(m->p, cap);
        ck_assert_ptr_nonnull(p);
        m->p = p;
        m->cap = cap;
    }
    memcpy(m->p + m->len, buf, len);
    m->len += len;
    return 0;
}

static struct membuf snapshot(const struct eng *e, int64_t created)
{
    struct membuf m = {0};
    struct snap_stats st;
    struct snap_err err = {0};
    int rc = snap_write(e, created, mem_sink, &m, &st, &err);
    ck_assert_msg(rc == SNAP_OK, "snap_write: %s", err.msg);
    ck_assert_uint_eq(st.bytes, m.len);
    ck_assert_uint_gt(st.raw_bytes, 0);
    return m;
}

static struct eng *load(struct world *w, const struct membuf *m, uint32_t history, uint64_t seed)
{
    struct eng_config cfg = w->cfg;
    cfg.history = history;
    struct eng *e = eng_create(&cfg);
    ck_assert_ptr_nonnull(e);
    struct snap_err err = {0};
    int rc = snap_read(e, m->p, m->len, &err);
    ck_assert_msg(rc == SNAP_OK, "seed %" PRIu64 ": snap_read: %s (offset %" PRIu64 ")", seed,
                  err.msg, err.offset);
    return e;
}

/* A random state of n interactions; history and ttl vary with the seed. */
static struct eng *random_state(struct world *w, struct rng *r, int n, uint32_t *history)
{
    static const uint32_t hs[] = {1, 2, 4, 8, 64};
    *history = hs[below(r, 5)];
    world_init(w, r, *history, 60000);
    struct eng *e = eng_create(&w->cfg);
    ck_assert_ptr_nonnull(e);
    apply(w, r, e, n, true);
    return e;
}

/* ---- round trip ------------------------------------------------------------------------------ */

START_TEST(round_trip_many_seeds)
{
    uint64_t seed0 = base_seed();
    for (int it = 0; it < 60; it++) {
        uint64_t seed = seed0 + (uint64_t)it;
        struct rng r = {seed};
        static struct world w;
        uint32_t history;
        struct eng *a = random_state(&w, &r, 200 + (int)below(&r, 1500), &history);
        bool swept = it % 2 == 0;
        if (swept)
            eng_tick(a, UINT32_MAX);
        struct membuf m = snapshot(a, w.clk.now);
        struct snap_header h;
        struct snap_err err = {0};
        ck_assert_int_eq(snap_peek(m.p, m.len, &h, &err), SNAP_OK);
        ck_assert_uint_eq(h.history, history);
        ck_assert_int_eq(h.created_ms, w.clk.now);
        if (swept) {
            struct eng_info info;
            eng_info(a, &info);
            ck_assert_uint_eq(h.counts.shorts, info.shorts);
            ck_assert_uint_eq(h.counts.sessions, info.sessions);
            ck_assert_uint_eq(h.counts.users, info.users);
            ck_assert_uint_eq(h.counts.records, info.records);
            ck_assert_uint_eq(h.counts.viewer_pairs, info.viewer_pairs);
        }
        struct eng *b = load(&w, &m, history, seed);
        same_engines(&w, a, b, history, swept, seed);

        /* a snapshot of the restored engine is the same bytes */
        struct membuf m2 = snapshot(b, w.clk.now);
        ck_assert_msg(m2.len == m.len && !memcmp(m2.p, m.p, m.len),
                      "seed %" PRIu64 ": re-snapshot differs (%zu vs %zu bytes)", seed, m2.len,
                      m.len);
        free(m2.p);

        /* and both go on the same way: dedup of viewers and savers, contexts, eviction */
        struct rng r1 = r, r2 = r;
        struct tclock saved = w.clk;
        apply(&w, &r1, a, 300, true);
        w.clk = saved;
        apply(&w, &r2, b, 300, true);
        same_engines(&w, a, b, history, false, seed);
        eng_destroy(a);
        eng_destroy(b);
        free(m.p);
    }
}
END_TEST

START_TEST(round_trip_empty_engine)
{
    static struct world w;
    struct rng r = {1};
    world_init(&w, &r, 64, 60000);
    struct eng *a = eng_create(&w.cfg);
    struct membuf m = snapshot(a, 0);
    struct eng *b = load(&w, &m, 64, 0);
    same_engines(&w, a, b, 64, true, 0);
    struct snap_header h;
    ck_assert_int_eq(snap_peek(m.p, m.len, &h, NULL), SNAP_OK);
    ck_assert_uint_eq(h.counts.shorts + h.counts.sessions + h.counts.records, 0);
    eng_destroy(a);
    eng_destroy(b);
    free(m.p);
}
END_TEST

/* A restart with a smaller --history keeps the newest records of each ring. */
START_TEST(load_into_smaller_history)
{
    uint64_t seed = base_seed() + 1000;
    struct rng r = {seed};
    static struct world w;
    world_init(&w, &r, 16, 3600000);
    struct eng *a = eng_create(&w.cfg);
    apply(&w, &r, a, 1500, false);
    struct membuf m = snapshot(a, w.clk.now);
    struct eng *b = load(&w, &m, 3, seed);
    static struct eng_history_rec ha[16], hb[16];
    for (int i = 0; i < NSESS; i++) {
        size_t na = eng_history_session(a, w.sess[i], w.sess_len[i], ha, 3);
        size_t nb = eng_history_session(b, w.sess[i], w.sess_len[i], hb, 16);
        same_history(ha, na, hb, nb, w.sess[i], seed);
    }
    for (int i = 0; i < NUSER; i++) {
        size_t na = eng_history_user(a, w.users[i], ha, 3);
        size_t nb = eng_history_user(b, w.users[i], hb, 16);
        same_history(ha, na, hb, nb, "user", seed);
    }
    /* every stat (viewer sets included) survives the shorter rings */
    for (int i = 0; i < NSHORT; i++) {
        struct eng_stats x, y;
        eng_stats(a, w.shorts[i], &x);
        eng_stats(b, w.shorts[i], &y);
        ck_assert_uint_eq(x.unique_viewers, y.unique_viewers);
        ck_assert_uint_eq(x.saves, y.saves);
        ck_assert(x.score == y.score);
    }
    check_verify(b, "restored", seed);
    eng_destroy(a);
    eng_destroy(b);
    free(m.p);
}
END_TEST

/* Freed user agents and contexts leave holes in the engine's id ranges; a
 * file with holes must load, answer the same, and destroy cleanly. */
START_TEST(round_trip_sparse_ids)
{
    static struct world w;
    struct rng r = {base_seed() + 21};
    world_init(&w, &r, 1, 3600000);
    struct eng *a = eng_create(&w.cfg);
    const char *uas[] = {"ua-one", "ua-two", "ua-three"};
    for (int i = 0; i < 3; i++) {   /* session i gets user agent i: ua ids 1, 2, 3 */
        struct eng_ix ix = {.type = ENG_T_VIEW, .short_id = 5, .session = w.sess[i],
                            .session_len = w.sess_len[i], .ua = uas[i], .ua_len = strlen(uas[i])};
        struct eng_err err = {0};
        ck_assert_msg(eng_record(a, &ix, &err) == 0, "%s", err.msg);
    }
    for (int i = 0; i < 2; i++) {   /* history 1: ua-one and ua-two lose their last record */
        struct eng_ix ix = {.type = ENG_T_SKIP, .short_id = 6, .session = w.sess[i],
                            .session_len = w.sess_len[i]};
        struct eng_err err = {0};
        ck_assert_msg(eng_record(a, &ix, &err) == 0, "%s", err.msg);
    }
    struct membuf m = snapshot(a, w.clk.now);
    struct snap_header h;
    ck_assert_int_eq(snap_peek(m.p, m.len, &h, NULL), SNAP_OK);
    ck_assert_uint_eq(h.counts.uas, 1);
    struct eng *b = load(&w, &m, 1, 0);
    same_engines(&w, a, b, 1, true, 0);
    eng_destroy(b);
    eng_destroy(a);
    free(m.p);
}
END_TEST

/* More shorts than one per 16 bytes of the file (a catalogue seen by a
 * few users): the loader's tables outgrow what it pre-sized and grow as
 * the shorts arrive. The short index's growth once copied an unset dense
 * array and crashed on the next growth. */
START_TEST(round_trip_dense_shorts)
{
    static struct world w;
    struct rng r = {base_seed() + 33};
    world_init(&w, &r, 4, 3600000);
    struct eng *a = eng_create(&w.cfg);
    enum { N = 3000 };
    for (uint64_t id = 1; id <= N; id++) {
        struct eng_ix ix = {.type = ENG_T_IMPRESSION, .short_id = id, .user = id % 5 + 1};
        struct eng_err err = {0};
        ck_assert_msg(eng_record(a, &ix, &err) == 0, "%s", err.msg);
    }
    struct membuf m = snapshot(a, w.clk.now);
    ck_assert_msg(m.len / 16 < N / 2, "%zu bytes: not dense enough to outgrow the pre-sizing",
                  m.len);
    struct eng *b = load(&w, &m, 4, 0);
    struct eng_err ee = {0};
    ck_assert_msg(eng_verify(b, &ee) == 0, "%s", ee.msg);
    for (uint64_t id = 1; id <= N; id++) {
        struct eng_stats x, y;
        eng_stats(a, id, &x);
        eng_stats(b, id, &y);
        ck_assert_uint_eq(y.impressions, 1);
        ck_assert_uint_eq(x.unique_viewers, y.unique_viewers);
        ck_assert_int_eq(x.last_ts, y.last_ts);
    }
    struct eng_info ia, ib;
    eng_info(a, &ia);
    eng_info(b, &ib);
    ck_assert_uint_eq(ib.shorts, N);
    ck_assert_uint_eq(ia.records, ib.records);
    eng_destroy(b);
    eng_destroy(a);
    free(m.p);
}
END_TEST

/* ---- rejecting bad images ------------------------------------------------------------------- */

static struct membuf small_snapshot(struct world *w, struct eng **out)
{
    struct rng r = {base_seed() + 7};
    world_init(w, &r, 4, 60000);
    struct eng *e = eng_create(&w->cfg);
    apply(w, &r, e, 40, false);
    struct membuf m = snapshot(e, w->clk.now);
    if (out)
        *out = e;
    else
        eng_destroy(e);
    return m;
}

static int try_read(const struct eng_config *cfg, const uint8_t *p, size_t len,
                    struct snap_err *err)
{
    struct eng *e = eng_create(cfg);
    ck_assert_ptr_nonnull(e);
    int rc = snap_read(e, p, len, err);
    if (rc == SNAP_OK) {
        struct eng_err ee = {0};
        ck_assert_msg(eng_verify(e, &ee) == 0, "accepted image fails eng_verify: %s", ee.msg);
    }
    eng_destroy(e);
    return rc;
}

START_TEST(every_flipped_byte_rejected)
{
    static struct world w;
    struct membuf m = small_snapshot(&w, NULL);
    ck_assert_uint_lt(m.len, 8192);
    uint8_t *c = malloc(m.len);
    for (size_t i = 0; i < m.len; i++) {
        for (int v = 0; v < 2; v++) {
            memcpy(c, m.p, m.len);
            c[i] ^= v ? 0xff : 0x01;
            struct snap_err err = {0};
            int rc = try_read(&w.cfg, c, m.len, &err);
            ck_assert_msg(rc != SNAP_OK, "flipping byte %zu (^%#x) of %zu was accepted", i,
                          v ? 0xff : 1, m.len);
            ck_assert_msg(err.msg[0] != 0, "no reason given for byte %zu", i);
            ck_assert_msg(err.offset <= m.len, "offset %" PRIu64 " past the end", err.offset);
        }
    }
    free(c);
    free(m.p);
}
END_TEST

START_TEST(every_truncation_rejected)
{
    static struct world w;
    struct membuf m = small_snapshot(&w, NULL);
    for (size_t len = 0; len < m.len; len++) {
        /* a fresh copy of exactly len bytes, so ASan sees any overread */
        uint8_t *c = malloc(len ? len : 1);
        memcpy(c, m.p, len);
        struct snap_err err = {0};
        int rc = try_read(&w.cfg, c, len, &err);
        ck_assert_msg(rc == SNAP_ECORRUPT, "truncation to %zu of %zu bytes: rc %d (%s)", len,
                      m.len, rc, err.msg);
        free(c);
    }
    /* a byte too many is as bad */
    uint8_t *c = malloc(m.len + 1);
    memcpy(c, m.p, m.len);
    c[m.len] = 0;
    ck_assert_int_eq(try_read(&w.cfg, c, m.len + 1, NULL), SNAP_ECORRUPT);
    free(c);
    free(m.p);
}
END_TEST

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void fix_checksums(uint8_t *p, size_t len)
{
    put64(p + 112, XXH64(p, 112, 0));
    put64(p + len - 16, len);
    put64(p + len - 8, XXH64(p, len - 8, 0));
}

/* Behind the checksums: every byte flipped with the header's and the
 * file's checksums made right again, so what stops a bad byte is the
 * structure itself (chunk headers, the LZ4 frames' own checksums, counts).
 * Past the fixed header nothing may be accepted; anywhere, a refusal names
 * its reason and an acceptance leaves an engine that passes eng_verify
 * (try_read checks it). Under ASan this is also the overread test of every
 * structural check. */
START_TEST(every_flipped_byte_behind_checksums)
{
    static struct world w;
    struct membuf m = small_snapshot(&w, NULL);
    uint8_t *c = malloc(m.len);
    /* The footer is END marker | raw_bytes | file_len | checksum (8 bytes
     * each); fix_checksums rewrites the last two, so the loop stops there. */
    const size_t raw_at = m.len - 24;
    size_t raw_mismatch = 0;
    for (size_t i = 0; i < m.len - 16; i++) {
        if (i >= 112 && i < 120)
            continue;  /* the header checksum itself */
        memcpy(c, m.p, m.len);
        c[i] ^= 0x01;
        fix_checksums(c, m.len);
        struct snap_err err = {0};
        int rc = try_read(&w.cfg, c, m.len, &err);
        if (rc == SNAP_OK) {
            ck_assert_msg(i < 120, "flipped byte %zu of %zu (past the header) accepted",
                          i, m.len);
            continue;
        }
        ck_assert_msg(err.msg[0] != 0, "no reason given for byte %zu", i);
        ck_assert_msg(err.offset <= m.len, "offset %" PRIu64 " past the end", err.offset);
        if (i >= raw_at) {
            /* raw_bytes: off by one bit, it no longer matches the chunks'
             * sum, unless it grew past what LZ4 can expand the file to,
             * which is refused first; both name the field */
            ck_assert_int_eq(rc, SNAP_ECORRUPT);
            bool mismatch = strstr(err.msg, "footer raw size mismatch") != NULL;
            ck_assert_msg(mismatch || strstr(err.msg, "more than LZ4 can expand"),
                          "byte %zu (footer raw_bytes): %s", i, err.msg);
            ck_assert_uint_eq(err.offset, raw_at);
            raw_mismatch += mismatch;
        }
    }
    ck_assert_msg(raw_mismatch > 0, "no flip of the footer's raw_bytes hit its mismatch check");
    free(c);
    free(m.p);
}
END_TEST

START_TEST(foreign_newer_and_bad_parameters)
{
    static struct world w;
    struct membuf m = small_snapshot(&w, NULL);
    uint8_t *c = malloc(m.len);
    struct snap_err err;

    memcpy(c, m.p, m.len);
    memcpy(c, "REDIS000", 8);
    ck_assert_int_eq(try_read(&w.cfg, c, m.len, &err), SNAP_EFOREIGN);
    ck_assert_int_eq(snap_peek(c, m.len, NULL, &err), SNAP_EFOREIGN);
    ck_assert_int_eq(try_read(&w.cfg, (const uint8_t *)"hello", 5, &err), SNAP_EFOREIGN);
    ck_assert_str_eq(err.msg, "the file does not begin with SHSTSNAP");

    memcpy(c, m.p, m.len);
    c[8] = 2;   /* format v2, with every checksum made right */
    fix_checksums(c, m.len);
    ck_assert_int_eq(try_read(&w.cfg, c, m.len, &err), SNAP_EVERSION);
    ck_assert_str_eq(err.msg, "format v2, this build reads up to v1");
    ck_assert_uint_eq(err.offset, 8);

    memcpy(c, m.p, m.len);
    c[16] = c[17] = c[18] = c[19] = 0;   /* history 0 */
    fix_checksums(c, m.len);
    ck_assert_int_eq(try_read(&w.cfg, c, m.len, &err), SNAP_EPARAM);
    ck_assert_msg(strstr(err.msg, "history"), "msg: %s", err.msg);

    memcpy(c, m.p, m.len);
    put32(c + 16, 65537);          /* history */
    fix_checksums(c, m.len);
    ck_assert_int_eq(try_read(&w.cfg, c, m.len, &err), SNAP_EPARAM);
    ck_assert_msg(strstr(err.msg, "history: 65537 not in 1..65536"), "msg: %s", err.msg);

    memcpy(c, m.p, m.len);
    put64(c + 24, (uint64_t)-5);   /* ttl */
    fix_checksums(c, m.len);
    ck_assert_int_eq(try_read(&w.cfg, c, m.len, &err), SNAP_EPARAM);
    memcpy(c, m.p, m.len);
    put64(c + 24, 0);              /* ttl 0: not the default in disguise */
    fix_checksums(c, m.len);
    ck_assert_int_eq(try_read(&w.cfg, c, m.len, &err), SNAP_EPARAM);
    ck_assert_msg(strstr(err.msg, "session_ttl_ms: 0 not positive"), "msg: %s", err.msg);

    memcpy(c, m.p, m.len);         /* a chunk claiming more items than bytes */
    put32(c + 120 + 4, (uint32_t)get64(c + 120 + 8) + 1);  /* nitems = raw_len + 1 */
    fix_checksums(c, m.len);
    ck_assert_int_eq(try_read(&w.cfg, c, m.len, &err), SNAP_ECORRUPT);
    ck_assert_msg(strstr(err.msg, "chunk: bad sizes"), "msg: %s", err.msg);

    memcpy(c, m.p, m.len);
    put64(c + 40 + 8 * 3, get64(c + 40 + 8 * 3) + 1);   /* one short more than the body */
    fix_checksums(c, m.len);
    ck_assert_int_eq(try_read(&w.cfg, c, m.len, &err), SNAP_ECORRUPT);
    ck_assert_msg(strstr(err.msg, "shorts"), "msg: %s", err.msg);

    memcpy(c, m.p, m.len);
    put64(c + 40 + 8 * 6, 1ull << 50);   /* absurd record count: refused before allocating */
    fix_checksums(c, m.len);
    ck_assert_int_eq(try_read(&w.cfg, c, m.len, &err), SNAP_ECORRUPT);

    ck_assert_int_eq(try_read(&w.cfg, m.p, m.len, &err), SNAP_OK);
    free(c);
    free(m.p);
}
END_TEST

/* Corruption the checksums cannot see: re-frame every chunk with one raw
 * byte changed, fix every checksum, and load. The decoder must refuse or
 * produce an engine that passes eng_verify -- never crash. */
struct chunk_loc {
    size_t off, raw_len, frame_len;
};

static size_t find_chunks(const struct membuf *m, struct chunk_loc *out, size_t max)
{
    size_t n = 0;
    for (size_t off = 120; off + 32 < m->len && n < max;) {
        const uint8_t *p = m->p + off;
        size_t raw = (size_t)(get64(p + 8) & 0xffffffffu), fr = (size_t)(get64(p + 8) >> 32);
        out[n++] = (struct chunk_loc){off, raw, fr};
        off += 16 + fr;
    }
    return n;
}

static size_t reframe(const struct membuf *m, const struct chunk_loc *c, const uint8_t *raw,
                      uint8_t *out)
{
    LZ4F_preferences_t prefs;
    memset(&prefs, 0, sizeof prefs);
    prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
    prefs.frameInfo.blockChecksumFlag = LZ4F_blockChecksumEnabled;
    prefs.frameInfo.contentSize = c->raw_len;
    size_t cap = LZ4F_compressFrameBound(c->raw_len, &prefs);
    memcpy(out, m->p, c->off + 16);
    size_t fl = LZ4F_compressFrame(out + c->off + 16, cap, raw, c->raw_len, &prefs);
    ck_assert(!LZ4F_isError(fl));
    put32(out + c->off + 12, (uint32_t)fl);
    size_t rest = m->len - (c->off + 16 + c->frame_len);
    memcpy(out + c->off + 16 + fl, m->p + c->off + 16 + c->frame_len, rest);
    size_t len = c->off + 16 + fl + rest;
    fix_checksums(out, len);
    return len;
}

/* small_snapshot's chunks: one per section */
#define SMALL_CHUNKS 6

START_TEST(structural_corruption_behind_valid_checksums)
{
    static struct world w;
    struct membuf m = small_snapshot(&w, NULL);
    struct chunk_loc ch[16];
    /* one chunk per run of the loop test, so each has its own time limit */
    ck_assert_uint_eq(find_chunks(&m, ch, 16), SMALL_CHUNKS);
    size_t k = (size_t)_i;
    LZ4F_dctx *d;
    ck_assert(!LZ4F_isError(LZ4F_createDecompressionContext(&d, LZ4F_VERSION)));
    uint8_t *out = malloc(m.len + 65536);
    size_t accepted = 0, refused = 0;
    {
        uint8_t *raw = malloc(ch[k].raw_len + 1), *mut = malloc(ch[k].raw_len + 1);
        size_t dst = ch[k].raw_len, src = ch[k].frame_len;
        LZ4F_resetDecompressionContext(d);
        size_t r = LZ4F_decompress(d, raw, &dst, m.p + ch[k].off + 16, &src, NULL);
        ck_assert(r == 0 && dst == ch[k].raw_len);
        /* unchanged re-framing loads */
        size_t len = reframe(&m, &ch[k], raw, out);
        ck_assert_int_eq(try_read(&w.cfg, out, len, NULL), SNAP_OK);
        static const uint8_t deltas[] = {0x01, 0xff};
        for (size_t i = 0; i < ch[k].raw_len; i++) {
            for (size_t v = 0; v < sizeof deltas; v++) {
                memcpy(mut, raw, ch[k].raw_len);
                mut[i] ^= deltas[v];
                len = reframe(&m, &ch[k], mut, out);
                struct snap_err err = {0};
                int rc = try_read(&w.cfg, out, len, &err);
                if (rc == SNAP_OK)
                    accepted++;
                else
                    refused++, ck_assert_msg(err.msg[0], "refusal without a reason");
            }
        }
        free(raw);
        free(mut);
    }
    /* most single-byte changes break structure or a cross-check; a user
     * agent's text is free, so in its chunk only some do */
    if (memcmp(m.p + ch[k].off, "UAGT", 4) == 0)
        ck_assert_uint_gt(refused, 0);
    else
        ck_assert_msg(refused > accepted, "chunk %zu (%.4s): %zu changes refused, %zu accepted",
                      k, (const char *)m.p + ch[k].off, refused, accepted);
    LZ4F_freeDecompressionContext(d);
    free(out);
    free(m.p);
}
END_TEST

/* Each header count is bounded by what the footer's raw size can hold,
 * before any of them sizes anything; the refusal names the count's field. */
START_TEST(header_counts_bounded_by_body)
{
    static struct world w;
    struct membuf m = small_snapshot(&w, NULL);
    uint8_t *c = malloc(m.len);
    ck_assert_ptr_nonnull(c);
    const uint64_t raw = get64(m.p + m.len - 24), rec = get64(m.p + 88);
    /* platforms, uas, ctxs, shorts, sessions, users, records, viewer and saver pairs */
    const uint64_t most[9] = {raw, raw, raw, raw, raw, raw, raw / 3, raw * 8 + rec, raw * 8 + rec};
    static const char *const names[9] = {"platforms", "uas", "ctxs", "shorts", "sessions",
                                         "users", "records", "viewer_pairs", "saver_pairs"};
    struct snap_err err;
    for (int i = 0; i < 9; i++) {
        memcpy(c, m.p, m.len);
        put64(c + 40 + 8 * i, most[i] + 1);
        fix_checksums(c, m.len);
        memset(&err, 0, sizeof err);
        ck_assert_int_eq(try_read(&w.cfg, c, m.len, &err), SNAP_ECORRUPT);
        char want[160];
        snprintf(want, sizeof want, "header says %" PRIu64 " %s: more than a body of %" PRIu64
                 " bytes can hold", most[i] + 1, names[i], raw);
        ck_assert_str_eq(err.msg, want);
        ck_assert_uint_eq(err.offset, 40 + 8 * (uint64_t)i);
    }
    /* sessions and users each within it, together not */
    memcpy(c, m.p, m.len);
    put64(c + 72, raw);
    put64(c + 80, 1);
    fix_checksums(c, m.len);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(try_read(&w.cfg, c, m.len, &err), SNAP_ECORRUPT);
    ck_assert_msg(strstr(err.msg, " sessions and 1 users: more than a body of"), "%s", err.msg);
    ck_assert_uint_eq(err.offset, 72);
    free(c);
    free(m.p);
}
END_TEST

/* Sizes a damaged or crafted file claims, behind valid checksums, size
 * nothing before the body bears them out. A chunk header's raw size: a
 * frame that declares 1 GiB and then holds junk is refused having grown
 * the output no further than its first step. The header's counts: one
 * the chunk headers contradict is refused before any table is sized, and
 * one no chunk header can check (contexts) pre-sizes tables by the file's
 * length at most. */
START_TEST(crafted_sizes_allocate_little)
{
    uint8_t frame[LZ4F_HEADER_SIZE_MAX + 64];
    LZ4F_preferences_t prefs = {.frameInfo = {.blockSizeID = LZ4F_max256KB,
                                              .blockMode = LZ4F_blockLinked,
                                              .contentChecksumFlag = LZ4F_contentChecksumEnabled,
                                              .blockChecksumFlag = LZ4F_blockChecksumEnabled,
                                              .contentSize = 1ull << 30}};
    LZ4F_cctx *cc;
    ck_assert(!LZ4F_isError(LZ4F_createCompressionContext(&cc, LZ4F_VERSION)));
    size_t hl = LZ4F_compressBegin(cc, frame, sizeof frame, &prefs);
    ck_assert(!LZ4F_isError(hl));
    LZ4F_freeCompressionContext(cc);
    memset(frame + hl, 0x5a, 64);
    struct snap_chunk ch = {.sec = SNAP_SEC_SESS, .nitems = 1, .raw_len = 1u << 30,
                            .frame_len = (uint32_t)hl + 64};
    struct snap_scratch sc = {0};
    struct snap_err err = {0};
    ck_assert_int_eq(snap_chunk_inflate(&sc, &ch, frame, &err), SNAP_ECORRUPT);
    ck_assert_msg(strstr(err.msg, "SESS chunk: lz4: "), "%s", err.msg);
    ck_assert_uint_le(sc.raw_cap, 1u << 20);
    snap_scratch_free(&sc);
    /* nor from room a bigger chunk before it left */
    sc = (struct snap_scratch){.raw = malloc(2u << 20), .raw_cap = 2u << 20};
    ck_assert_ptr_nonnull(sc.raw);
    ck_assert_int_eq(snap_chunk_inflate(&sc, &ch, frame, &err), SNAP_ECORRUPT);
    ck_assert_uint_eq(sc.raw_cap, 2u << 20);
    snap_scratch_free(&sc);

    static struct world w;
    struct membuf m = small_snapshot(&w, NULL);
    struct eng *e = eng_create(&w.cfg);
    ck_assert_int_eq(snap_read(e, m.p, m.len, &err), SNAP_OK);
    struct eng_info honest;
    eng_info(e, &honest);
    eng_destroy(e);
    uint8_t *c = malloc(m.len);
    uint64_t raw = get64(m.p + m.len - 24);
    static const struct {
        size_t at;
        const char *says;
    } cases[] = {
        {64, "the SHRT chunks hold"},          /* shorts */
        {72, "the SESS chunks hold"},          /* sessions */
        {56, "ctxs, body has"},                /* contexts: found only at the end */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        memcpy(c, m.p, m.len);
        put64(c + cases[k].at, cases[k].at == 72 ? raw / 2 : raw);
        fix_checksums(c, m.len);
        e = eng_create(&w.cfg);
        memset(&err, 0, sizeof err);
        ck_assert_int_eq(snap_read(e, c, m.len, &err), SNAP_ECORRUPT);
        ck_assert_msg(strstr(err.msg, cases[k].says), "case %zu: %s", k, err.msg);
        ck_assert_uint_eq(err.offset, cases[k].at);
        struct eng_info got;
        eng_info(e, &got);
        ck_assert_msg(got.mem_total <= honest.mem_total + 64 * m.len,
                      "case %zu: %" PRIu64 " engine bytes for a %zu-byte file (honest: %" PRIu64
                      ")", k, got.mem_total, m.len, honest.mem_total);
        eng_destroy(e);
    }
    free(c);
    free(m.p);
}
END_TEST

/* The item decoders on bytes no writer makes: refused before anything is
 * sized by them. Platform and ua ids must run 1, 2, 3, ... (the dump tool
 * sized its tables by whatever id came); a ring's context count is capped
 * by the records a ring can hold (one bad count had the loader zero-fill
 * ~240 bytes per byte of the chunk before reading the first context). */
static struct snap_cur cur_over(const uint8_t *p, size_t n, const struct snap_chunk *ch,
                                struct snap_err *err)
{
    return (struct snap_cur){.p = p, .start = p, .end = p + n, .chunk = ch, .err = err};
}

START_TEST(decoders_refuse_before_sizing)
{
    struct snap_err err = {0};
    struct snap_chunk ch = {.sec = SNAP_SEC_PLAT, .nitems = 2, .raw_len = 6, .offset = 120};
    static const uint8_t plat[] = {0x01, 0x01, 'a', 0x03, 0x01, 'b'};  /* ids 1, then 3 */
    struct snap_cur c = cur_over(plat, sizeof plat, &ch, &err);
    uint32_t last = 0;
    struct eng_platform_view pv;
    ck_assert_int_eq(snap_dec_platform(&c, &last, &pv), 0);
    ck_assert_uint_eq(pv.id, 1);
    ck_assert_int_eq(snap_dec_platform(&c, &last, &pv), SNAP_ECORRUPT);
    ck_assert_msg(strstr(err.msg, "platform id 3 after 1"), "%s", err.msg);
    static const uint8_t ua[] = {0x80, 0x80, 0x80, 0x80, 0x01, 0x01, 'u'};  /* id 2^28 */
    ch.sec = SNAP_SEC_UAGT;
    c = cur_over(ua, sizeof ua, &ch, &err);
    last = 0;
    struct eng_ua_view uv;
    ck_assert_int_eq(snap_dec_ua(&c, &last, &uv), SNAP_ECORRUPT);
    ck_assert_msg(strstr(err.msg, "ua id 268435456 after 0"), "%s", err.msg);
    /* a varint whose tenth byte carries bits past 2^64 */
    static const uint8_t wide[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02};
    c = cur_over(wide, sizeof wide, &ch, &err);
    last = 0;
    ck_assert_int_eq(snap_dec_ua(&c, &last, &uv), SNAP_ECORRUPT);
    ck_assert_msg(strstr(err.msg, "varint overflows 64 bits"), "%s", err.msg);

    /* a user ring claiming 65,537 contexts, over enough bytes to hold them */
    size_t n = 70000;
    uint8_t *ring = calloc(1, n);
    ck_assert_ptr_nonnull(ring);
    memcpy(ring, (const uint8_t[]){0x01, 0x00, 0x81, 0x80, 0x04}, 5);  /* user 1, ts, 65537 */
    ch = (struct snap_chunk){.sec = SNAP_SEC_USER, .nitems = 1, .raw_len = (uint32_t)n,
                             .offset = 120};
    c = cur_over(ring, n, &ch, &err);
    struct snap_scratch sc;
    memset(&sc, 0, sizeof sc);
    struct snap_ring out;
    uint32_t next_ctx = 1;
    ck_assert_int_eq(snap_dec_ring(&c, &sc, true, &next_ctx, &out), SNAP_ECORRUPT);
    ck_assert_msg(strstr(err.msg, "65537 contexts"), "%s", err.msg);
    ck_assert_uint_eq(sc.ctx_cap, 0);  /* nothing grown for them */
    memcpy(ring, (const uint8_t[]){0x01, 0x00, 0x02, 0x00, 0x00}, 5);  /* 2: then flags 0 */
    c = cur_over(ring, n, &ch, &err);
    ck_assert_int_eq(snap_dec_ring(&c, &sc, true, &next_ctx, &out), SNAP_ECORRUPT);
    ck_assert_msg(strstr(err.msg, "context 1: bad flags 0"), "%s", err.msg);
    /* a reference (flags REF|USER) to the id the next new context would get */
    memcpy(ring, (const uint8_t[]){0x01, 0x00, 0x01, 0x03, 0x01}, 5);
    c = cur_over(ring, n, &ch, &err);
    ck_assert_int_eq(snap_dec_ring(&c, &sc, true, &next_ctx, &out), SNAP_ECORRUPT);
    ck_assert_msg(strstr(err.msg, "context id 1 not defined yet"), "%s", err.msg);
    /* a short whose viewer set lists one fingerprint twice (deltas 5, 0) */
    static const uint8_t dup[] = {0x02, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x00,
                                  0x00, 0x00, 0x02, 0x05, 0x00, 0x00};
    ch = (struct snap_chunk){.sec = SNAP_SEC_SHRT, .nitems = 1, .raw_len = sizeof dup,
                             .offset = 120};
    c = cur_over(dup, sizeof dup, &ch, &err);
    struct snap_short sh;
    ck_assert_int_eq(snap_dec_short(&c, &sc, 0, &sh), SNAP_ECORRUPT);
    ck_assert_msg(strstr(err.msg, "viewer set: fingerprints not strictly increasing"), "%s",
                  err.msg);
    snap_scratch_free(&sc);
    free(ring);
}
END_TEST

/* Enough sessions and users that a chunk spans several of the loader's
 * batches (4096 rings) and the decoding thread hands over many of them,
 * loaded twice: as it comes (with the decoding thread when the process may
 * use two CPUs) and pinned to one CPU (the loader then decodes in the
 * caller's thread). Both must answer like the original, and a byte changed
 * deep in a big ring chunk must still be refused or load consistently. */
START_TEST(load_in_batches_with_and_without_thread)
{
    uint64_t seed = base_seed() + 2000;
    struct rng r = {seed};
    static struct world w;
    world_init(&w, &r, 8, 3600000);
    struct eng *a = eng_create(&w.cfg);
    ck_assert_ptr_nonnull(a);
    enum { NS = 11000, NU = 5000, NI = 40000 };
    static char sid[NS][16];
    for (int i = 0; i < NS; i++)
        snprintf(sid[i], sizeof sid[i], "b%07d", i);
    for (int i = 0; i < NI; i++) {
        struct eng_ix ix = {.type = (int)below(&r, 4) == 0 ? ENG_T_SAVE : (int)below(&r, 2),
                            .short_id = w.shorts[below(&r, NSHORT)]};
        uint64_t who = below(&r, 3);
        if (who != 1) {
            const char *s = sid[i < NS ? i : (int)below(&r, NS)];
            ix.session = s;
            ix.session_len = strlen(s);
        }
        if (who != 0)
            ix.user = 1 + below(&r, NU);
        w.clk.now += 1;
        struct eng_err err = {0};
        ck_assert_msg(eng_record(a, &ix, &err) == 0, "eng_record: %s", err.msg);
    }
    struct membuf m = snapshot(a, w.clk.now);
    cpu_set_t all, one;
    ck_assert_int_eq(sched_getaffinity(0, sizeof all, &all), 0);
    CPU_ZERO(&one);
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &all)) {
            CPU_SET(c, &one);
            break;
        }
    for (int pinned = 0; pinned < 2; pinned++) {
        if (pinned)
            ck_assert_int_eq(sched_setaffinity(0, sizeof one, &one), 0);
        uint64_t threaded = snap_test_threaded_loads();
        struct eng *b = load(&w, &m, 8, seed);
        /* the thread ran exactly when the process had a second CPU */
        ck_assert_uint_eq(snap_test_threaded_loads() - threaded,
                          !pinned && CPU_COUNT(&all) > 1 ? 1 : 0);
        same_engines(&w, a, b, 8, true, seed);
        static struct eng_history_rec ha[8], hb[8];
        for (int i = 0; i < NS; i += 7) {
            size_t na = eng_history_session(a, sid[i], strlen(sid[i]), ha, 8);
            size_t nb = eng_history_session(b, sid[i], strlen(sid[i]), hb, 8);
            same_history(ha, na, hb, nb, sid[i], seed);
        }
        for (uint64_t u = 1; u <= NU; u += 5) {
            size_t na = eng_history_user(a, u, ha, 8);
            size_t nb = eng_history_user(b, u, hb, 8);
            same_history(ha, na, hb, nb, "user", seed);
        }
        eng_destroy(b);
    }
    ck_assert_int_eq(sched_setaffinity(0, sizeof all, &all), 0);

    /* corruption behind valid checksums past the first batch of a chunk */
    struct chunk_loc ch[64];
    size_t nch = find_chunks(&m, ch, 64), big = 0;
    for (size_t k = 0; k < nch; k++)
        if (ch[k].raw_len > ch[big].raw_len)
            big = k;
    LZ4F_dctx *d;
    ck_assert(!LZ4F_isError(LZ4F_createDecompressionContext(&d, LZ4F_VERSION)));
    uint8_t *raw = malloc(ch[big].raw_len + 1), *mut = malloc(ch[big].raw_len + 1);
    uint8_t *out = malloc(m.len + 65536);
    size_t dst = ch[big].raw_len, src = ch[big].frame_len;
    size_t rc = LZ4F_decompress(d, raw, &dst, m.p + ch[big].off + 16, &src, NULL);
    ck_assert(rc == 0 && dst == ch[big].raw_len);
    for (int pinned = 0; pinned < 2; pinned++) {
        if (pinned)
            ck_assert_int_eq(sched_setaffinity(0, sizeof one, &one), 0);
        for (int k = 0; k < 24; k++) {
            size_t at = ch[big].raw_len / 2 + below(&r, ch[big].raw_len / 2);
            memcpy(mut, raw, ch[big].raw_len);
            mut[at] ^= (uint8_t)(1 + below(&r, 255));
            size_t len = reframe(&m, &ch[big], mut, out);
            struct snap_err err = {0};
            if (try_read(&w.cfg, out, len, &err) != SNAP_OK)
                ck_assert_msg(err.msg[0], "refusal without a reason");
        }
    }
    ck_assert_int_eq(sched_setaffinity(0, sizeof all, &all), 0);
    LZ4F_freeDecompressionContext(d);
    free(raw);
    free(mut);
    free(out);
    eng_destroy(a);
    free(m.p);
}
END_TEST

/* Sessions and users are indexed when the restore finishes, so that is
 * where two rings of one session or one user are caught; sessions that only
 * share a length are not duplicates. */
START_TEST(duplicate_rings_refused)
{
    struct tclock clk = {1700000000000ll};
    struct eng_config cfg = {.history = 4, .clock = tclock_fn, .ud = &clk};
    for (int dup = 0; dup < 2; dup++) {
        struct eng *e = eng_create(&cfg);
        ck_assert_ptr_nonnull(e);
        struct eng_err err = {0};
        const char *second = dup ? "ses-a" : "ses-b";
        struct eng_ctx_view c1 = {.id = 1, .session = "ses-a", .session_len = 5};
        struct eng_ctx_view c2 = {.id = 2, .session = second, .session_len = 5};
        ck_assert_int_eq(eng_restore_ctx(e, &c1, &err), 0);
        ck_assert_int_eq(eng_restore_ctx(e, &c2, &err), 0);
        struct eng_short_view sv = {.short_id = 4};
        sv.count[ENG_T_SKIP] = 2;
        ck_assert_int_eq(eng_restore_short(e, &sv, NULL, 0, NULL, 0, &err), 0);
        struct eng_rec_view rec = {.ts = 5, .short_id = 4, .ctx_id = 1, .type = ENG_T_SKIP};
        struct eng_ring_view rv = {.session = "ses-a", .session_len = 5,
                                   .last_seen_ms = clk.now, .nrecs = 1};
        ck_assert_int_eq(eng_restore_ring(e, &rv, &rec, &err), 0);
        rec.ctx_id = 2;
        rv.session = second;
        ck_assert_int_eq(eng_restore_ring(e, &rv, &rec, &err), 0);
        struct eng_totals t = {.interactions = 2};
        t.by_type[ENG_T_SKIP] = 2;
        if (dup) {
            ck_assert_int_eq(eng_restore_finish(e, &t, &err), ENG_EINVAL);
            ck_assert_str_eq(err.msg, "session ses-a: duplicate");
        } else {
            ck_assert_int_eq(eng_restore_finish(e, &t, &err), 0);
            struct eng_history_rec h[2];
            ck_assert_uint_eq(eng_history_session(e, "ses-a", 5, h, 2), 1);
            ck_assert_uint_eq(eng_history_session(e, "ses-b", 5, h, 2), 1);
            check_verify(e, "restored", 0);
        }
        eng_destroy(e);
    }
    for (int dup = 0; dup < 2; dup++) {
        struct eng *e = eng_create(&cfg);
        ck_assert_ptr_nonnull(e);
        struct eng_err err = {0};
        uint64_t second = dup ? 7 : 8;
        struct eng_ctx_view c1 = {.id = 1, .user = 7}, c2 = {.id = 2, .user = second};
        ck_assert_int_eq(eng_restore_ctx(e, &c1, &err), 0);
        ck_assert_int_eq(eng_restore_ctx(e, &c2, &err), 0);
        struct eng_short_view sv = {.short_id = 4};
        sv.count[ENG_T_SKIP] = 2;
        ck_assert_int_eq(eng_restore_short(e, &sv, NULL, 0, NULL, 0, &err), 0);
        struct eng_rec_view rec = {.ts = 5, .short_id = 4, .ctx_id = 1, .type = ENG_T_SKIP};
        struct eng_ring_view rv = {.is_user = true, .user = 7, .last_seen_ms = clk.now,
                                   .nrecs = 1};
        ck_assert_int_eq(eng_restore_ring(e, &rv, &rec, &err), 0);
        rec.ctx_id = 2;
        rv.user = second;
        ck_assert_int_eq(eng_restore_ring(e, &rv, &rec, &err), 0);
        struct eng_totals t = {.interactions = 2};
        t.by_type[ENG_T_SKIP] = 2;
        if (dup) {
            ck_assert_int_eq(eng_restore_finish(e, &t, &err), ENG_EINVAL);
            ck_assert_str_eq(err.msg, "user 7: duplicate");
        } else {
            ck_assert_int_eq(eng_restore_finish(e, &t, &err), 0);
            struct eng_history_rec h[2];
            ck_assert_uint_eq(eng_history_user(e, 7, h, 2), 1);
            ck_assert_uint_eq(eng_history_user(e, 8, h, 2), 1);
            check_verify(e, "restored", 0);
        }
        eng_destroy(e);
    }
}
END_TEST

/* Every engine allocation a restore makes may fail (the sessions' index,
 * built at finish, included): the load then says SNAP_ENOMEM and the
 * engine is destroyed without a leak. */
START_TEST(restore_out_of_memory)
{
    static struct world w;
    struct membuf m = small_snapshot(&w, NULL);
    uint64_t nth = 1;
    for (;; nth++) {
        struct eng *e = eng_create(&w.cfg);
        ck_assert_ptr_nonnull(e);
        eng_test_fail_alloc(e, nth);
        struct snap_err err = {0};
        int rc = snap_read(e, m.p, m.len, &err);
        eng_destroy(e);
        if (rc == SNAP_OK)
            break;
        ck_assert_msg(rc == SNAP_ENOMEM, "allocation %" PRIu64 ": %s", nth, err.msg);
        if (nth == 1)  /* the first is the pre-sizing's, and says so */
            ck_assert_msg(strstr(err.msg, "header counts: the engine cannot reserve them: ") &&
                              strstr(err.msg, "out of memory"), "%s", err.msg);
        ck_assert_uint_lt(nth, 100000);
    }
    ck_assert_uint_gt(nth, 1);
    free(m.p);
}
END_TEST

START_TEST(write_errors)
{
    static struct world w;
    struct eng *e;
    struct membuf m = small_snapshot(&w, &e);
    for (size_t cut = 1; cut < m.len; cut += 1 + cut / 3) {
        struct membuf f = {.fail_after = cut};
        struct snap_err err = {0};
        ck_assert_int_eq(snap_write(e, 0, mem_sink, &f, NULL, &err), SNAP_EIO);
        ck_assert_msg(strstr(err.msg, "write failed"), "msg: %s", err.msg);
        free(f.p);
    }
    eng_destroy(e);
    free(m.p);
}
END_TEST

/* ---- files: save, load, crash safety -------------------------------------------------------- */

/* A snapshot writer's temp files are SNAP_FILE ".tmp.<pid>". */
#define SNAP_TMP SNAP_FILE ".tmp."

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    uint8_t *p = malloc((size_t)n + 1);
    ck_assert_uint_eq(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

static void spit(const char *path, const uint8_t *p, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(p, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

START_TEST(save_and_load_files)
{
    static struct world w;
    struct eng *a;
    struct membuf m = small_snapshot(&w, &a);
    char dir[64], path[128];
    run_mkdtemp(dir, sizeof dir, "snaptest");
    snprintf(path, sizeof path, "%s/%s", dir, SNAP_FILE);

    struct eng *b = (struct eng *)1;
    struct snap_err err = {0};
    ck_assert_int_eq(snap_load(path, &w.cfg, &b, NULL, &err), SNAP_ENOENT);
    ck_assert_ptr_null(b);

    struct snap_stats st;
    ck_assert_int_eq(snap_save(a, dir, w.clk.now, &st, &err), SNAP_OK);
    ck_assert_int_eq(run_count_names(dir, SNAP_TMP), 0);
    size_t len;
    uint8_t *file = slurp(path, &len);
    ck_assert_uint_eq(len, st.bytes);
    ck_assert_msg(len == m.len && !memcmp(file, m.p, len), "file differs from snap_write");
    free(file);

    struct snap_header h;
    ck_assert_int_eq(snap_verify(path, &h, &err), SNAP_OK);
    ck_assert_uint_eq(h.raw_bytes, st.raw_bytes);
    ck_assert_int_eq(snap_load(path, &w.cfg, &b, &h, &err), SNAP_OK);
    ck_assert_ptr_nonnull(b);
    same_engines(&w, a, b, 4, false, 0);
    eng_destroy(b);

    /* corrupt: refused with the file named, and the file left as it was */
    file = slurp(path, &len);
    file[len / 2] ^= 0x10;
    spit(path, file, len);
    b = (struct eng *)1;
    ck_assert_int_eq(snap_load(path, &w.cfg, &b, NULL, &err), SNAP_ECORRUPT);
    ck_assert_ptr_null(b);
    ck_assert_msg(strstr(err.msg, path), "msg does not name the file: %s", err.msg);
    ck_assert_int_eq(snap_verify(path, NULL, &err), SNAP_ECORRUPT);
    size_t len2;
    uint8_t *after = slurp(path, &len2);
    ck_assert(len2 == len && !memcmp(after, file, len));
    free(after);
    free(file);

    /* empty file, directory as file, unreadable path */
    spit(path, (const uint8_t *)"", 0);
    ck_assert_int_eq(snap_load(path, &w.cfg, &b, NULL, &err), SNAP_ECORRUPT);
    ck_assert_int_eq(snap_verify(dir, NULL, &err), SNAP_EIO);

    /* save into a missing directory fails cleanly */
    char missing[160];
    snprintf(missing, sizeof missing, "%s/nope", dir);
    ck_assert_int_eq(snap_save(a, missing, 0, NULL, &err), SNAP_EIO);
    ck_assert_msg(strstr(err.msg, "nope"), "msg: %s", err.msg);

    eng_destroy(a);
    free(m.p);
    run_rmtree(dir);
}
END_TEST

/* A save that fails half way (file size limit) leaves the old file and no temp. */
START_TEST(failed_save_keeps_previous)
{
    static struct world w;
    struct rng r = {base_seed() + 3};
    world_init(&w, &r, 64, 3600000);
    struct eng *a = eng_create(&w.cfg);
    apply(&w, &r, a, 200, false);
    char dir[64], path[128];
    run_mkdtemp(dir, sizeof dir, "snaptest");
    snprintf(path, sizeof path, "%s/%s", dir, SNAP_FILE);
    ck_assert_int_eq(snap_save(a, dir, 1, NULL, NULL), SNAP_OK);
    size_t len0;
    uint8_t *before = slurp(path, &len0);

    apply(&w, &r, a, 3000, false);   /* the next snapshot is bigger than the limit */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {.rlim_cur = len0 + 64, .rlim_max = RLIM_INFINITY};
        setrlimit(RLIMIT_FSIZE, &rl);
        struct snap_err err = {0};
        int rc = snap_save(a, dir, 2, NULL, &err);
        _exit(rc == SNAP_EIO && strstr(err.msg, "write") ? 0 : 1);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    ck_assert_int_eq(run_count_names(dir, SNAP_TMP), 0);
    size_t len1;
    uint8_t *after = slurp(path, &len1);
    ck_assert(len0 == len1 && !memcmp(before, after, len0));
    free(before);
    free(after);
    eng_destroy(a);
    run_rmtree(dir);
}
END_TEST

START_TEST(stale_temp_files_removed)
{
    static struct world w;
    struct eng *a;
    struct membuf m = small_snapshot(&w, &a);
    char dir[64], p[256];
    run_mkdtemp(dir, sizeof dir, "snaptest");
    pid_t dead = fork();
    if (dead == 0)
        _exit(0);
    waitpid(dead, NULL, 0);
    snprintf(p, sizeof p, "%s/%s.tmp.%ld", dir, SNAP_FILE, (long)dead);
    spit(p, (const uint8_t *)"junk", 4);
    snprintf(p, sizeof p, "%s/%s.tmp.%ld.bak", dir, SNAP_FILE, (long)dead);
    spit(p, (const uint8_t *)"junk", 4);
    snprintf(p, sizeof p, "%s/%s.tmp.1", dir, SNAP_FILE);   /* pid 1 lives: its writer may too */
    spit(p, (const uint8_t *)"live", 4);
    snprintf(p, sizeof p, "%s/%s.tmp.notapid", dir, SNAP_FILE);
    spit(p, (const uint8_t *)"other", 5);
    ck_assert_int_eq(run_count_names(dir, SNAP_TMP), 4);
    ck_assert_int_eq(snap_save(a, dir, 0, NULL, NULL), SNAP_OK);
    ck_assert_int_eq(run_count_names(dir, SNAP_TMP), 2);
    snprintf(p, sizeof p, "%s/%s.tmp.1", dir, SNAP_FILE);
    ck_assert_int_eq(access(p, F_OK), 0);
    eng_destroy(a);
    free(m.p);
    run_rmtree(dir);
}
END_TEST

START_TEST(kill_9_during_saves)
{
    uint64_t seed = base_seed() + 77;
    struct rng r = {seed};
    static struct world w;
    world_init(&w, &r, 64, 3600000);
    struct eng *a = eng_create(&w.cfg);
    apply(&w, &r, a, 6000, false);
    char dir[64], path[128];
    run_mkdtemp(dir, sizeof dir, "snaptest");
    snprintf(path, sizeof path, "%s/%s", dir, SNAP_FILE);
    ck_assert_int_eq(snap_save(a, dir, 0, NULL, NULL), SNAP_OK);
    int mid_write = 0;  /* kills that caught a writer with its temp file open */
    for (int i = 0; i < 40; i++) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            for (int64_t k = 1;; k++)
                if (snap_save(a, dir, k, NULL, NULL) != SNAP_OK)
                    _exit(3);
        }
        struct timespec ts = {0, (long)below(&r, 30000000)};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFSIGNALED(status), "seed %" PRIu64 ": writer exited %d", seed, status);
        mid_write += run_count_names(dir, SNAP_TMP) == 1;
        struct snap_err err = {0};
        struct snap_header h;
        ck_assert_msg(snap_verify(path, &h, &err) == SNAP_OK, "seed %" PRIu64 ", kill %d: %s",
                      seed, i, err.msg);
        ck_assert_int_le(run_count_names(dir, SNAP_TMP), 1);   /* at most the killed writer's */
    }
    /* the writer loops saves, so most kills land mid-write: that is the case
     * under test, and the snapshot in place survived every one */
    ck_assert_msg(mid_write > 0, "seed %" PRIu64 ": no kill landed mid-write", seed);
    struct eng *b;
    ck_assert_int_eq(snap_load(path, &w.cfg, &b, NULL, NULL), SNAP_OK);
    same_engines(&w, a, b, 64, true, seed);
    eng_destroy(b);
    ck_assert_int_eq(snap_save(a, dir, 0, NULL, NULL), SNAP_OK);
    ck_assert_int_eq(run_count_names(dir, SNAP_TMP), 0);
    eng_destroy(a);
    run_rmtree(dir);
}
END_TEST

START_TEST(strerror_names_every_code)
{
    const int codes[] = {SNAP_OK, SNAP_EIO, SNAP_ENOENT, SNAP_EFOREIGN, SNAP_EVERSION,
                         SNAP_ECORRUPT, SNAP_ENOMEM, SNAP_EPARAM, SNAP_EBUSY};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        for (size_t j = 0; j < i; j++)
            ck_assert_str_ne(snap_strerror(codes[i]), snap_strerror(codes[j]));
    ck_assert_str_eq(snap_strerror(12345), "unknown error");
    /* a message that begins with the file's path loses it once, only then */
    struct snap_err e = {.msg = "/d/s.snap: bad magic"};
    ck_assert_str_eq(snap_err_reason(&e, "/d/s.snap"), "bad magic");
    ck_assert_str_eq(snap_err_reason(&e, "/d/other"), "/d/s.snap: bad magic");
    ck_assert_str_eq(snap_err_reason(&e, "/d/s"), "/d/s.snap: bad magic");
}
END_TEST

/* ---- shortstat-snap as a subprocess ------------------------------------------------------------ */

static char *read_all(const char *path, size_t *len)
{
    size_t n = 0;
    uint8_t *p = slurp(path, &n);
    if (!p) {
        p = malloc(1);
        n = 0;
    }
    p[n] = 0;
    if (len)
        *len = n;
    return (char *)p;
}

#define TOOL(...) run_program("shortstat-snap", (const char *const[]){__VA_ARGS__, NULL})

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Rows of CSV text: its newlines outside double quotes (a quoted field may
 * hold one; "" inside quotes flips twice, so it counts right). */
static size_t count_csv_rows(const char *s)
{
    size_t n = 0;
    bool inq = false;
    for (; *s; s++) {
        if (*s == '"')
            inq = !inq;
        else if (*s == '\n' && !inq)
            n++;
    }
    return n;
}

START_TEST(tool_usage_errors)
{
    struct run r = TOOL("--help");
    ck_assert_int_eq(r.status, 0);
    ck_assert_ptr_nonnull(strstr(r.out, "usage: shortstat-snap"));
    run_free(&r);
    static const struct {
        const char *args[6];
        const char *err;
    } bad[] = {
        {{"info"}, "missing FILE"},
        {{"frobnicate", "x"}, "unknown command 'frobnicate'"},
        {{"info", "a", "b"}, "unexpected argument 'b'"},
        {{"info", "a", "--what", "users"}, "unknown option '--what'"},
        {{"dump", "f", "--format", "xml"}, "--format: 'xml' is not csv or json"},
        {{"dump", "f", "--what", "people"}, "--what: 'people' is not shorts, sessions or users"},
        {{"dump", "f", "--format"}, "--format needs a value"},
        {{"dump", "f", "--bogus"}, "unknown option '--bogus'"},
        {{"dump", "f", "--bogus", "1"}, "unknown option '--bogus'"},
        {{"dump", "--what", "users"}, "missing FILE"},
        {{"restore", "f"}, "restore needs --dir DIR"},
        {{"restore", "f", "--dir"}, "--dir needs a value"},
        {{"restore", "f", "--into", "d"}, "unknown option '--into'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = run_program("shortstat-snap", bad[i].args);
        ck_assert_msg(r.status == 2, "case %zu: exit %d", i, r.status);
        char want[128];
        snprintf(want, sizeof want, "shortstat-snap: %s\nusage:", bad[i].err);
        ck_assert_msg(strstr(r.err, want), "case %zu: want '%s', got: %s", i, want, r.err);
        run_free(&r);
    }
    r = run_program("shortstat-snap", (const char *const[]){NULL});
    ck_assert_int_eq(r.status, 2);
    ck_assert_ptr_nonnull(strstr(r.err, "shortstat-snap: missing command\n"));
    run_free(&r);
}
END_TEST

START_TEST(tool_info_verify)
{
    static struct world w;
    struct eng *a;
    struct membuf m = small_snapshot(&w, &a);
    char dir[64], path[128], bad[128], trunc[128], missing[128], foreign[128];
    run_mkdtemp(dir, sizeof dir, "snaptest");
    snprintf(path, sizeof path, "%s/good.snap", dir);
    snprintf(bad, sizeof bad, "%s/bad.snap", dir);
    snprintf(trunc, sizeof trunc, "%s/trunc.snap", dir);
    snprintf(missing, sizeof missing, "%s/missing.snap", dir);
    snprintf(foreign, sizeof foreign, "%s/foreign.snap", dir);
    spit(path, m.p, m.len);
    uint8_t *c = malloc(m.len);
    memcpy(c, m.p, m.len);
    c[m.len - 40] ^= 4;
    spit(bad, c, m.len);
    spit(trunc, m.p, m.len - 100);
    spit(foreign, (const uint8_t *)"REDIS0011\xfa", 10);

    struct eng_info info;
    eng_info(a, &info);
    char want[64];
    struct run r = TOOL("info", path);
    ck_assert_msg(r.status == 0, "info: %d %s", r.status, r.err);
    snprintf(want, sizeof want, "shorts:           %" PRIu64 "\n", info.shorts);
    ck_assert_msg(strstr(r.out, want), "info output: %s", r.out);
    ck_assert_ptr_nonnull(strstr(r.out, "compression:"));
    ck_assert_ptr_nonnull(strstr(r.out, "checksum:         ok"));
    run_free(&r);

    r = TOOL("verify", path);
    ck_assert_msg(r.status == 0, "verify: %s", r.err);
    ck_assert_ptr_nonnull(strstr(r.out, ": ok"));
    run_free(&r);

    /* info on a file whose checksum fails still shows what it read, and
     * says so */
    r = TOOL("info", bad);
    ck_assert_int_eq(r.status, 1);
    ck_assert_msg(strstr(r.out, want) && strstr(r.out, "checksum:         MISMATCH\n"), "%s",
                  r.out);
    run_free(&r);
    /* a directory, and a file that ends inside its first chunk */
    char head[128];
    snprintf(head, sizeof head, "%s/head.snap", dir);
    spit(head, m.p, 130);
    static const char *const verbs[] = {"info", "dump", "verify"};
    for (int v = 0; v < 3; v++) {
        r = TOOL(verbs[v], dir);
        ck_assert_msg(r.status == 1 && strstr(r.err, ": I/O error at offset 0: not a regular file"),
                      "%s DIR: %d %s", verbs[v], r.status, r.err);
        run_free(&r);
        r = TOOL(verbs[v], head);
        ck_assert_msg(r.status == 1 &&
                          strstr(r.err, "head.snap: corrupt snapshot at offset 130: truncated"),
                      "%s head: %d %s", verbs[v], r.status, r.err);
        run_free(&r);
    }

    const char *const bads[] = {bad, trunc, missing, foreign};
    const char *const why[] = {"corrupt", "corrupt", "no snapshot", "not a shortstat"};
    for (int i = 0; i < 4; i++) {
        r = TOOL("verify", bads[i]);
        ck_assert_msg(r.status == 1, "verify %s: exit %d", bads[i], r.status);
        ck_assert_msg(strstr(r.err, why[i]) && strstr(r.err, "offset"), "stderr: %s", r.err);
        run_free(&r);
        r = TOOL("info", bads[i]);
        ck_assert_msg(r.status == 1, "info %s: exit %d", bads[i], r.status);
        run_free(&r);
        r = TOOL("dump", bads[i]);
        ck_assert_msg(r.status == 1 && r.out_len == 0, "dump %s: exit %d", bads[i], r.status);
        run_free(&r);
    }
    /* output that cannot be written (a full disk) fails the command */
    if (access("/dev/full", W_OK) == 0) {
        const char *const cmds[] = {"info", "verify", "dump"};
        for (int i = 0; i < 3; i++) {
            r = run_program_to("shortstat-snap", (const char *const[]){cmds[i], path, NULL},
                               "/dev/full");
            ck_assert_msg(r.status == 1 && strstr(r.err, "No space left"),
                          "%s > /dev/full: exit %d: %s", cmds[i], r.status, r.err);
            run_free(&r);
        }
    }
    free(c);
    eng_destroy(a);
    free(m.p);
    run_rmtree(dir);
}
END_TEST

START_TEST(tool_dump)
{
    static struct world w;
    struct rng rg = {base_seed() + 11};
    world_init(&w, &rg, 8, 3600000);
    for (int i = 0; i < 3; i++)   /* jansson reads integers as int64 */
        w.users[i] = 1000000 + (uint64_t)i;
    struct eng *a = eng_create(&w.cfg);
    apply(&w, &rg, a, 600, false);
    struct membuf m = snapshot(a, w.clk.now);
    char dir[64], path[128];
    run_mkdtemp(dir, sizeof dir, "snaptest");
    snprintf(path, sizeof path, "%s/s.snap", dir);
    spit(path, m.p, m.len);
    struct eng_info info;
    eng_info(a, &info);

    /* shorts as CSV: a header row, then one row per short matching eng_stats */
    struct run r = TOOL("dump", path);
    ck_assert_msg(r.status == 0, "dump: %s", r.err);
    ck_assert_uint_eq(count_lines(r.out), info.shorts + 1);
    ck_assert_ptr_nonnull(strstr(r.out, "short_id,impressions,views,view_count,unique_viewers"));
    size_t rows = 0;
    for (char *line = strchr(r.out, '\n') + 1; *line; line = strchr(line, '\n') + 1) {
        uint64_t id, imp, views, vc, uv, saves;
        ck_assert_int_eq(sscanf(line, "%" SCNu64 ",%" SCNu64 ",%" SCNu64 ",%" SCNu64 ",%" SCNu64
                                      ",%" SCNu64, &id, &imp, &views, &vc, &uv, &saves), 6);
        struct eng_stats s;
        eng_stats(a, id, &s);
        ck_assert_msg(s.impressions == imp && s.views == views && s.view_count == vc &&
                          s.unique_viewers == uv && s.saves == saves,
                      "row for short %" PRIu64 " differs", id);
        rows++;
    }
    ck_assert_uint_eq(rows, info.shorts);
    run_free(&r);

    /* shorts as JSON Lines */
    r = TOOL("dump", path, "--format", "json");
    ck_assert_int_eq(r.status, 0);
    ck_assert_uint_eq(count_lines(r.out), info.shorts);
    json_error_t je;
    for (char *line = r.out; *line;) {
        char *nl = strchr(line, '\n');
        json_t *o = json_loadb(line, (size_t)(nl - line), 0, &je);
        ck_assert_msg(o != NULL, "bad JSON line: %s", je.text);
        struct eng_stats s;
        eng_stats(a, (uint64_t)json_integer_value(json_object_get(o, "short_id")), &s);
        ck_assert_uint_eq(s.shares, (uint64_t)json_integer_value(json_object_get(o, "shares")));
        ck_assert_uint_eq(s.nplatforms, json_object_size(json_object_get(o, "platforms")));
        json_decref(o);
        line = nl + 1;
    }
    run_free(&r);

    /* sessions as JSON: one object per session, records newest first = HISTORY */
    r = TOOL("dump", path, "--format", "json", "--what", "sessions");
    ck_assert_int_eq(r.status, 0);
    ck_assert_uint_eq(count_lines(r.out), info.sessions);
    static struct eng_history_rec h[64];
    for (char *line = r.out; *line;) {
        char *nl = strchr(line, '\n');
        json_t *o = json_loadb(line, (size_t)(nl - line), 0, &je);
        ck_assert_msg(o != NULL, "bad JSON line: %s", je.text);
        const char *sid = json_string_value(json_object_get(o, "session"));
        ck_assert_ptr_nonnull(sid);
        size_t n = eng_history_session(a, sid, strlen(sid), h, 64);
        json_t *recs = json_object_get(o, "records");
        ck_assert_uint_eq(json_array_size(recs), n);
        for (size_t k = 0; k < n; k++) {
            json_t *x = json_array_get(recs, k);
            ck_assert_int_eq(json_integer_value(json_object_get(x, "ts")), h[k].ts);
            ck_assert_str_eq(json_string_value(json_object_get(x, "type")),
                             eng_type_name(h[k].type));
            ck_assert_uint_eq((uint64_t)json_integer_value(json_object_get(x, "user")), h[k].user);
            json_t *ua = json_object_get(x, "ua");
            ck_assert_uint_eq(ua ? 1 : 0, h[k].ua ? 1 : 0);
            if (ua && json_string_length(ua) == h[k].ua_len)   /* latin-1 bytes widen */
                ck_assert(!memcmp(json_string_value(ua), h[k].ua, h[k].ua_len));
            json_t *ip = json_object_get(x, "ip");
            ck_assert_str_eq(ip ? json_string_value(ip) : "", h[k].ip);
        }
        json_decref(o);
        line = nl + 1;
    }
    run_free(&r);

    /* users as CSV: one row per retained user record */
    r = TOOL("dump", path, "--what", "users", "--format", "csv");
    ck_assert_int_eq(r.status, 0);
    size_t user_recs = 0;
    for (int i = 0; i < NUSER; i++)
        user_recs += eng_history_user(a, w.users[i], h, 64);
    /* a UA with a newline is quoted, so count records by parsing quotes */
    ck_assert_uint_eq(count_csv_rows(r.out), user_recs + 1);
    ck_assert_ptr_nonnull(strstr(r.out, "\"quote\"\" comma, nl\n\""));
    run_free(&r);

    /* the two other forms: sessions as CSV (a row per retained record under
     * its header), users as JSON (an object per user, its records as
     * HISTORY USER gives them) */
    r = TOOL("dump", path, "--what", "sessions");
    ck_assert_int_eq(r.status, 0);
    ck_assert(strncmp(r.out, "session,last_seen_ms,ts,short_id,type,watch_ms,platform,user,ip,ua\n",
                      67) == 0);
    ck_assert_uint_eq(count_csv_rows(r.out), info.records - user_recs + 1);
    run_free(&r);
    r = TOOL("dump", path, "--what", "users", "--format", "json");
    ck_assert_int_eq(r.status, 0);
    ck_assert_uint_eq(count_lines(r.out), info.users);
    size_t json_recs = 0;
    for (char *line = r.out; *line;) {
        char *nl = strchr(line, '\n');
        json_t *o = json_loadb(line, (size_t)(nl - line), 0, &je);
        ck_assert_msg(o != NULL, "bad JSON line: %s", je.text);
        uint64_t user = (uint64_t)json_integer_value(json_object_get(o, "user"));
        json_t *recs = json_object_get(o, "records");
        ck_assert_uint_eq(json_array_size(recs), eng_history_user(a, user, h, 64));
        json_recs += json_array_size(recs);
        json_decref(o);
        line = nl + 1;
    }
    ck_assert_uint_eq(json_recs, user_recs);
    run_free(&r);

    eng_destroy(a);
    free(m.p);
    run_rmtree(dir);
}
END_TEST

/* One holder per data directory: a second taker is refused and told who
 * holds it; closing the holder's descriptor frees it. */
START_TEST(dir_lock)
{
    char dir[64], p[128], want[128];
    run_mkdtemp(dir, sizeof dir, "snaptest");
    int fd = -1, fd2 = -1;
    struct snap_err err = {0};
    ck_assert_int_eq(snap_lock_dir(dir, &fd, &err), SNAP_OK);
    ck_assert_int_ge(fd, 0);
    snprintf(p, sizeof p, "%s/%s", dir, SNAP_LOCK_FILE);
    char *pid = read_all(p, NULL);
    ck_assert_int_eq(atol(pid), (long)getpid());
    free(pid);
    /* another open file description, even in this process, is refused */
    ck_assert_int_eq(snap_lock_dir(dir, &fd2, &err), SNAP_EBUSY);
    ck_assert_int_eq(fd2, -1);
    snprintf(want, sizeof want, "%s is in use by process %ld", dir, (long)getpid());
    ck_assert_msg(strstr(err.msg, want), "message: %s", err.msg);
    /* a forked child holds it too, until it exits (when told: its pipe's
     * write end closes) */
    int go[2];
    ck_assert_int_eq(pipe(go), 0);
    pid_t c = fork();
    if (c == 0) {
        char b;
        close(go[1]);
        while (read(go[0], &b, 1) < 0 && errno == EINTR)
            ;
        _exit(0);
    }
    close(go[0]);
    close(fd);
    ck_assert_int_eq(snap_lock_dir(dir, &fd2, &err), SNAP_EBUSY);
    close(go[1]);
    waitpid(c, NULL, 0);
    ck_assert_int_eq(snap_lock_dir(dir, &fd2, &err), SNAP_OK);
    close(fd2);
    /* a holder that could not write its pid is still named as a process */
    snprintf(p, sizeof p, "%s/%s", dir, SNAP_LOCK_FILE);
    ck_assert_int_eq(truncate(p, 0), 0);
    int raw = open(p, O_RDWR);
    ck_assert_int_ge(raw, 0);
    ck_assert_int_eq(flock(raw, LOCK_EX | LOCK_NB), 0);
    ck_assert_int_eq(snap_lock_dir(dir, &fd2, &err), SNAP_EBUSY);
    ck_assert_msg(strstr(err.msg, "in use by another process"), "message: %s", err.msg);
    close(raw);
    snprintf(p, sizeof p, "%s/absent", dir);
    ck_assert_int_eq(snap_lock_dir(p, &fd2, &err), SNAP_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, "cannot open the lock file"));
    run_rmtree(dir);
}
END_TEST

START_TEST(tool_restore)
{
    static struct world w;
    struct eng *a;
    struct membuf m = small_snapshot(&w, &a);
    char dir[64], src[128], src2[128], bad[128], data[128], dst[160], bak[160];
    run_mkdtemp(dir, sizeof dir, "snaptest");
    snprintf(src, sizeof src, "%s/one.snap", dir);
    snprintf(src2, sizeof src2, "%s/two.snap", dir);
    snprintf(bad, sizeof bad, "%s/bad.snap", dir);
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(dst, sizeof dst, "%s/%s", data, SNAP_FILE);
    snprintf(bak, sizeof bak, "%s/%s.bak", data, SNAP_FILE);
    ck_assert_int_eq(mkdir(data, 0755), 0);
    spit(src, m.p, m.len);
    apply(&w, &(struct rng){5}, a, 30, false);
    struct membuf m2 = snapshot(a, w.clk.now);
    spit(src2, m2.p, m2.len);
    uint8_t *c = malloc(m.len);
    memcpy(c, m.p, m.len);
    c[200] ^= 1;
    spit(bad, c, m.len);

    struct run r = TOOL("restore", src, "--dir", data);
    ck_assert_msg(r.status == 0, "restore: %s", r.err);
    run_free(&r);
    size_t len;
    uint8_t *got = slurp(dst, &len);
    ck_assert(len == m.len && !memcmp(got, m.p, len));
    free(got);
    ck_assert_int_ne(access(bak, F_OK), 0);

    r = TOOL("restore", src2, "--dir", data);
    ck_assert_msg(r.status == 0, "restore: %s", r.err);
    ck_assert_ptr_nonnull(strstr(r.out, "previous kept"));
    run_free(&r);
    got = slurp(dst, &len);
    ck_assert(len == m2.len && !memcmp(got, m2.p, len));
    free(got);
    got = slurp(bak, &len);
    ck_assert(len == m.len && !memcmp(got, m.p, len));
    free(got);

    /* a corrupt file is refused, named (not its temp copy), and nothing changes */
    r = TOOL("restore", bad, "--dir", data);
    ck_assert_int_eq(r.status, 1);
    ck_assert_msg(strstr(r.err, "corrupt") && strstr(r.err, bad) && !strstr(r.err, ".tmp."),
                  "stderr: %s", r.err);
    run_free(&r);
    got = slurp(dst, &len);
    ck_assert(len == m2.len && !memcmp(got, m2.p, len));
    free(got);
    ck_assert_int_eq(run_count_names(data, SNAP_TMP), 0);

    /* a temp file left under the restore's own pid (a dead writer's, the
     * pid since reused) is not in the way: the lock says nobody writes */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char t[200], exe[600];
        snprintf(t, sizeof t, "%s/%s.tmp.%ld", data, SNAP_FILE, (long)getpid());
        const char *b = getenv("SHORTSTAT_BUILD");
        snprintf(exe, sizeof exe, "%s/shortstat-snap", b && *b ? b : SHORTSTAT_BUILD);
        int fd = open(t, O_CREAT | O_WRONLY | O_CLOEXEC, 0644), nul = open("/dev/null", O_WRONLY);
        if (fd < 0 || nul < 0 || write(fd, "x", 1) != 1 || dup2(nul, 1) < 0 || dup2(nul, 2) < 0)
            _exit(126);
        execl(exe, exe, "restore", src2, "--dir", data, (char *)NULL);
        _exit(127);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "restore over its own pid's temp file: "
                  "status %d", st);
    ck_assert_int_eq(run_count_names(data, SNAP_TMP), 0);
    got = slurp(dst, &len);
    ck_assert(len == m2.len && !memcmp(got, m2.p, len));
    free(got);

    /* a directory in use (a running server holds its lock) is left alone */
    int lock = -1;
    struct snap_err le = {0};
    ck_assert_int_eq(snap_lock_dir(data, &lock, &le), SNAP_OK);
    r = TOOL("restore", src, "--dir", data);
    char want[160];
    snprintf(want, sizeof want, "in use by process %ld", (long)getpid());
    ck_assert_msg(r.status == 1 && strstr(r.err, want) && strstr(r.err, "stop the server first"),
                  "restore into a locked dir: exit %d: %s", r.status, r.err);
    run_free(&r);
    close(lock);
    got = slurp(dst, &len);
    ck_assert(len == m2.len && !memcmp(got, m2.p, len));
    free(got);
    ck_assert_int_eq(run_count_names(data, SNAP_TMP), 0);

    /* a missing --dir is made, one level, as shortstatd makes it; made for
     * a snapshot that is then refused, it is removed again */
    char nodir[160], deep[200];
    snprintf(nodir, sizeof nodir, "%s/absent", dir);
    r = TOOL("restore", bad, "--dir", nodir);
    ck_assert_int_eq(r.status, 1);
    run_free(&r);
    ck_assert_int_ne(access(nodir, F_OK), 0);
    snprintf(deep, sizeof deep, "%s/absent/deeper", dir);
    r = TOOL("restore", src, "--dir", deep);
    ck_assert_int_eq(r.status, 1);
    ck_assert_msg(strstr(r.err, "/deeper: No such file or directory"), "%s", r.err);
    run_free(&r);
    ck_assert_int_ne(access(nodir, F_OK), 0);
    r = TOOL("restore", src, "--dir", nodir);
    ck_assert_msg(r.status == 0, "restore into a new dir: exit %d: %s", r.status, r.err);
    run_free(&r);
    char made[200];
    snprintf(made, sizeof made, "%s/%s", nodir, SNAP_FILE);
    got = slurp(made, &len);
    ck_assert(len == m.len && !memcmp(got, m.p, len));
    free(got);
    r = TOOL("restore", src, "--dir", src);  /* a file, not a directory */
    ck_assert_int_eq(r.status, 1);
    ck_assert_msg(strstr(r.err, ": not a directory"), "%s", r.err);
    run_free(&r);
    /* a missing source: refused, nothing installed */
    char nofile[160];
    snprintf(nofile, sizeof nofile, "%s/no-such.snap", dir);
    r = TOOL("restore", nofile, "--dir", data);
    ck_assert_int_eq(r.status, 1);
    ck_assert_msg(strstr(r.err, "No such file or directory") || strstr(r.err, "no snapshot"),
                  "%s", r.err);
    run_free(&r);
    got = slurp(dst, &len);
    ck_assert(len == m2.len && !memcmp(got, m2.p, len));
    free(got);
    /* FILE a directory: refused on reading it, nothing installed */
    r = TOOL("restore", dir, "--dir", data);
    ck_assert_msg(r.status == 1 && strstr(r.err, ": Is a directory"), "%s", r.err);
    run_free(&r);
    /* a DIR path too long for its files' names */
    char longdir[4200];
    memset(longdir, 'a', sizeof longdir - 1);
    longdir[0] = '/';
    longdir[sizeof longdir - 1] = 0;
    r = TOOL("restore", src, "--dir", longdir);
    ck_assert_msg(r.status == 1 && strstr(r.err, ": path too long"), "%s", r.err);
    run_free(&r);
    /* the previous file cannot be kept (a directory in its place): refused,
     * no temp file left */
    char odd[160], oddsnap[200];
    snprintf(odd, sizeof odd, "%s/odd", dir);
    snprintf(oddsnap, sizeof oddsnap, "%s/%s", odd, SNAP_FILE);
    ck_assert_int_eq(mkdir(odd, 0755), 0);
    ck_assert_int_eq(mkdir(oddsnap, 0755), 0);
    r = TOOL("restore", src, "--dir", odd);
    ck_assert_msg(r.status == 1 && strstr(r.err, "keep the previous snapshot as"), "%s", r.err);
    run_free(&r);
    ck_assert_int_eq(run_count_names(odd, SNAP_TMP), 0);
    /* the report cannot be written (a full disk): exit 1, saying the
     * snapshot was installed all the same */
    if (access("/dev/full", W_OK) == 0) {
        r = run_program_to("shortstat-snap",
                           (const char *const[]){"restore", src, "--dir", data, NULL},
                           "/dev/full");
        ck_assert_msg(r.status == 1 && strstr(r.err, "writing the result (the snapshot is "
                                                     "installed): No space left"),
                      "exit %d: %s", r.status, r.err);
        run_free(&r);
        got = slurp(dst, &len);
        ck_assert(len == m.len && !memcmp(got, m.p, len));
        free(got);
    }
    /* options may come before FILE */
    r = TOOL("dump", "--what", "users", src);
    ck_assert_msg(r.status == 0, "%s", r.err);
    run_free(&r);

    free(c);
    eng_destroy(a);
    free(m.p);
    free(m2.p);
    run_rmtree(dir);
}
END_TEST

/* Damage behind the checksums that only the tool's own walk finds: info
 * names a chunk that runs past the file (its summary line), dump refuses
 * it and a chunk with bytes after its last item, each with exit 1. */

START_TEST(tool_structure_errors)
{
    static struct world w;
    struct membuf m = small_snapshot(&w, NULL);
    char dir[64], past[128], extra[128];
    run_mkdtemp(dir, sizeof dir, "snaptest");
    snprintf(past, sizeof past, "%s/past.snap", dir);
    snprintf(extra, sizeof extra, "%s/extra.snap", dir);
    uint8_t *c = malloc(m.len);
    memcpy(c, m.p, m.len);
    put32(c + 120 + 12, 1000000);  /* the first chunk's frame_len */
    spit(past, c, m.len);
    struct run r = TOOL("info", past);
    ck_assert_msg(r.status == 1 && strstr(r.out, "\nstructure: ") &&
                      strstr(r.out, " BAD at offset 120: chunk runs past the end of the file\n"),
                  "exit %d: %s%s", r.status, r.out, r.err);
    run_free(&r);
    fix_checksums(c, m.len);  /* so that dump gets as far as its walk */
    spit(past, c, m.len);
    r = TOOL("dump", past);
    ck_assert_msg(r.status == 1 && strstr(r.err, "at offset 120: chunk runs past the end of the "
                                                 "file"),
                  "exit %d: %s", r.status, r.err);
    run_free(&r);

    /* the shorts' chunk claiming one item fewer than it holds */
    memcpy(c, m.p, m.len);
    struct chunk_loc ch[16];
    size_t nch = find_chunks(&m, ch, 16), k = 0;
    while (k < nch && memcmp(m.p + ch[k].off, "SHRT", 4) != 0)
        k++;
    ck_assert_uint_lt(k, nch);
    uint32_t items = (uint32_t)(get64(m.p + ch[k].off) >> 32);
    ck_assert_uint_ge(items, 2);
    put32(c + ch[k].off + 4, items - 1);
    fix_checksums(c, m.len);
    spit(extra, c, m.len);
    r = TOOL("dump", extra);
    ck_assert_msg(r.status == 1 && strstr(r.err, "bytes after the last item of a chunk"),
                  "exit %d: %s", r.status, r.err);
    run_free(&r);
    free(c);
    free(m.p);
    run_rmtree(dir);
}
END_TEST

/* ---- shortstatd and snapshot files ------------------------------------------------------------ */

/* Start shortstatd on dir. A server expected to refuse (!term) is given 20 s
 * to exit, then killed; one expected to serve (term) gets SIGTERM once it
 * logs that it listens (30 s at most: a slow machine starts slowly, and a
 * SIGTERM before the server is up tests nothing). Returns its exit status,
 * -signal if killed; *err_out holds its log. */
static int run_server(const char *dir, bool term, char **err_out)
{
    const char *b = getenv("SHORTSTAT_BUILD");
    char exe[512], errf[256];
    snprintf(exe, sizeof exe, "%s/shortstatd", b && *b ? b : SHORTSTAT_BUILD);
    snprintf(errf, sizeof errf, "%s.err", dir);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);  /* a test that times out leaves no server */
        int e = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int nul = open("/dev/null", O_RDWR);
        dup2(nul, 0);
        dup2(nul, 1);
        dup2(e, 2);
        execl(exe, exe, "--port", "0", "--http-port", "0", "--snapshot-interval", "0", "--dir",
              dir, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    pid_t got = 0;
    for (int t = 0; t < (term ? 30000 : 20000) && (got = waitpid(pid, &st, WNOHANG)) == 0;
         t += 20) {
        if (term) {
            char *log = read_all(errf, NULL);
            bool up = log && strstr(log, "listening on");
            free(log);
            if (up)
                break;
        }
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
    if (got == 0) {
        kill(pid, term ? SIGTERM : SIGKILL);
        if (!run_reap(pid, 60000, &st)) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
        }
    }
    *err_out = read_all(errf, NULL);
    unlink(errf);
    ck_assert_msg(!WIFEXITED(st) || WEXITSTATUS(st) != 127, "cannot run %s", exe);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

START_TEST(server_refuses_bad_snapshots)
{
    static struct world w;
    struct eng *a;
    struct membuf m = small_snapshot(&w, &a);
    char dir[64], path[128];
    run_mkdtemp(dir, sizeof dir, "snaptest");
    snprintf(path, sizeof path, "%s/%s", dir, SNAP_FILE);
    uint8_t *c = malloc(m.len);
    for (int k = 0; k < 4; k++) {
        memcpy(c, m.p, m.len);
        size_t len = m.len;
        const char *why = "corrupt";
        if (k == 0)
            c[m.len / 3] ^= 0x20;   /* a flipped bit */
        else if (k == 1)
            len = m.len - 7;        /* truncated */
        else if (k == 2)
            memcpy(c, "REDIS001", 8), why = "not a shortstat";
        else
            c[8] = 9, fix_checksums(c, m.len), why = "newer";
        spit(path, c, len);
        char *err = NULL;
        int rc = run_server(dir, false, &err);
        ck_assert_msg(rc > 0, "case %d: shortstatd started on a bad snapshot (%d): %s", k, rc, err);
        ck_assert_msg(strstr(err, path) && strstr(err, "offset") && strstr(err, why),
                      "case %d: log does not name file, offset and reason: %s", k, err);
        size_t len2;
        uint8_t *after = slurp(path, &len2);
        ck_assert_msg(len2 == len && !memcmp(after, c, len), "case %d: the file was changed", k);
        free(after);
        free(err);
    }
    /* a link to a file that is not there (its disk not mounted) is not "no
     * snapshot": refused, and the link left in place */
    char target[160];
    snprintf(target, sizeof target, "%s/elsewhere/shortstat.snap", dir);
    unlink(path);
    ck_assert_int_eq(symlink(target, path), 0);
    char *lerr = NULL;
    int lrc = run_server(dir, false, &lerr);
    ck_assert_msg(lrc > 0 && strstr(lerr, "symbolic link") && !strstr(lerr, "starting empty"),
                  "shortstatd on a dangling link: exit %d: %s", lrc, lerr);
    free(lerr);
    struct stat lsb;
    ck_assert(lstat(path, &lsb) == 0 && S_ISLNK(lsb.st_mode));
    unlink(path);
    /* a link to a good file loads, with a warning that a snapshot will
     * replace the link */
    char real[160];
    snprintf(real, sizeof real, "%s.real", dir);
    spit(real, m.p, m.len);
    ck_assert_int_eq(symlink(real, path), 0);
    lrc = run_server(dir, true, &lerr);
    ck_assert_msg(lrc == 0 && strstr(lerr, "loaded snapshot") &&
                  strstr(lerr, "is a symbolic link: the first snapshot replaces the link"),
                  "shortstatd on a link to a good file: exit %d: %s", lrc, lerr);
    free(lerr);
    unlink(path);
    unlink(real);
    /* a good file loads; SIGTERM writes a final snapshot holding the same data */
    spit(path, m.p, m.len);
    char *err = NULL;
    int rc = run_server(dir, true, &err);
    ck_assert_msg(rc == 0 && strstr(err, "listening on"), "shortstatd on a good snapshot: exit %d: %s",
                  rc, err);
    free(err);
    struct eng *b;
    struct snap_err se = {0};
    ck_assert_msg(snap_load(path, &w.cfg, &b, NULL, &se) == SNAP_OK, "%s", se.msg);
    same_engines(&w, a, b, 4, false, 0);
    eng_destroy(b);
    ck_assert_int_eq(run_count_names(dir, SNAP_TMP), 0);
    free(c);
    eng_destroy(a);
    free(m.p);
    run_rmtree(dir);
}
END_TEST

/* Two servers on one directory would overwrite each other's snapshots: the
 * second is refused, names the holder, and touches nothing; once the
 * holder is gone the directory is free again. */
START_TEST(server_refuses_locked_dir)
{
    static struct world w;
    struct eng *a;
    struct membuf m = small_snapshot(&w, &a);
    char dir[64], path[128];
    run_mkdtemp(dir, sizeof dir, "snaptest");
    snprintf(path, sizeof path, "%s/%s", dir, SNAP_FILE);
    spit(path, m.p, m.len);
    int lock = -1;
    struct snap_err le = {0};
    ck_assert_int_eq(snap_lock_dir(dir, &lock, &le), SNAP_OK);
    char *err = NULL, want[64];
    int rc = run_server(dir, false, &err);
    snprintf(want, sizeof want, "in use by process %ld", (long)getpid());
    ck_assert_msg(rc == 1 && strstr(err, want) && strstr(err, "refusing to start"),
                  "shortstatd on a locked dir: exit %d: %s", rc, err);
    free(err);
    size_t len;
    uint8_t *after = slurp(path, &len);
    ck_assert(len == m.len && !memcmp(after, m.p, len));
    free(after);
    close(lock);
    rc = run_server(dir, true, &err);
    ck_assert_msg(rc == 0 && strstr(err, "listening on"), "shortstatd once the lock is free: "
                  "exit %d: %s", rc, err);
    free(err);
    eng_destroy(a);
    free(m.p);
    run_rmtree(dir);
}
END_TEST

static TCase *tcase(Suite *s, const char *name)
{
    TCase *t = tcase_create(name);
    tcase_set_timeout(t, 120);
    suite_add_tcase(s, t);
    return t;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The set sort against qsort: random, sorted, reversed, few distinct,
 * organ-pipe and median-of-three-killer inputs of every size class, with
 * the normal depth limit, none left (heapsort at once) and a little. */
START_TEST(sort_u64_matches_qsort)
{
    struct rng r = {42};
    size_t cap = 20000;
    uint64_t *v = malloc(cap * sizeof *v), *w = malloc(cap * sizeof *w);
    ck_assert_ptr_nonnull(v);
    ck_assert_ptr_nonnull(w);
    const unsigned depths[3] = {UINT32_MAX, 0, 3};
    for (int t = 0; t < 900; t++) {
        size_t n = t % 300 < 200 ? (size_t)t % 100 : (size_t)below(&r, cap);
        int mode = t % 6;
        for (size_t i = 0; i < n; i++) {
            uint64_t x = rnd(&r);
            v[i] = mode == 0 ? x : mode == 1 ? i : mode == 2 ? n - i : mode == 3 ? x % 4
                 : mode == 4 ? (i < n / 2 ? i : n - i) : i;
        }
        if (mode == 5)   /* median-of-3 killer (Musser) */
            for (size_t i = n / 2; i + 1 < n; i += 2)
                v[i] = i - n / 2 + 1;
        memcpy(w, v, n * sizeof *v);
        qsort(w, n, sizeof *w, cmp_u64);
        snap_test_sort_u64(v, n, depths[t / 300]);
        ck_assert_msg(n == 0 || memcmp(v, w, n * sizeof *v) == 0, "case %d: n %zu mode %d", t, n,
                      mode);
    }
    free(v);
    free(w);
}
END_TEST

extern Suite *snap_suite(void);
Suite *snap_suite(void)
{
    /* one case per concern, so CK_RUN_CASE=<name> runs just that */
    Suite *s = suite_create("snap");
    TCase *t = tcase(s, "roundtrip");
    tcase_add_test(t, round_trip_many_seeds);
    tcase_add_test(t, round_trip_empty_engine);
    tcase_add_test(t, load_into_smaller_history);
    tcase_add_test(t, round_trip_sparse_ids);
    tcase_add_test(t, round_trip_dense_shorts);
    tcase_add_test(t, sort_u64_matches_qsort);
    t = tcase(s, "reject");
    tcase_add_test(t, every_flipped_byte_rejected);
    tcase_add_test(t, every_flipped_byte_behind_checksums);
    tcase_add_test(t, every_truncation_rejected);
    tcase_add_test(t, foreign_newer_and_bad_parameters);
    tcase_add_test(t, write_errors);
    tcase_add_test(t, strerror_names_every_code);
    t = tcase(s, "structure");
    tcase_add_loop_test(t, structural_corruption_behind_valid_checksums, 0, SMALL_CHUNKS);
    tcase_add_test(t, decoders_refuse_before_sizing);
    tcase_add_test(t, crafted_sizes_allocate_little);
    tcase_add_test(t, header_counts_bounded_by_body);
    t = tcase(s, "batches");
    tcase_add_test(t, load_in_batches_with_and_without_thread);
    tcase_add_test(t, duplicate_rings_refused);
    tcase_add_test(t, restore_out_of_memory);
    t = tcase(s, "files");
    tcase_add_test(t, save_and_load_files);
    tcase_add_test(t, failed_save_keeps_previous);
    tcase_add_test(t, stale_temp_files_removed);
    tcase_add_test(t, dir_lock);
    t = tcase(s, "crash");
    tcase_add_test(t, kill_9_during_saves);
    t = tcase(s, "tool");
    tcase_add_test(t, tool_usage_errors);
    tcase_add_test(t, tool_info_verify);
    tcase_add_test(t, tool_dump);
    tcase_add_test(t, tool_restore);
    tcase_add_test(t, tool_structure_errors);
    t = tcase(s, "server");
    tcase_add_test(t, server_refuses_bad_snapshots);
    tcase_add_test(t, server_refuses_locked_dir);
    return s;
}
