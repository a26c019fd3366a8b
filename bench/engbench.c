/* SPDX-License-Identifier: MIT */
/*
 * engbench.c -- the engine alone, in-process: the ceiling for the server.
 *
 * The workload is turned into struct eng_ix values first (session names in
 * one arena, in interaction order), so the timed loop is nothing but engine
 * calls. Two ways of driving the API are timed on fresh engines: eng_record
 * one by one, and eng_prefetch a window ahead of eng_record, which is what
 * the server does with a buffer of parsed commands. The engine's clock is a
 * cached value refreshed every 1024 interactions, as a server reads the
 * time once per event-loop iteration.
 *
 * Memory is measured by difference, one kind of object at a time, in RSS
 * (what the OS charges) and in the engine's own accounting (eng_info):
 *   records  skips by known sessions on known shorts add history records
 *            and nothing else (history 64);
 *   pairs    in an engine with history 1 every known session's ring is full,
 *            so impressions by known sessions on known shorts they had not
 *            seen add pairs and no records (the rare pair already held adds
 *            nothing, and the division is by the pairs actually added);
 *   shorts   in that engine, skips on new short ids add shorts only.
 */
#include "bench/bench.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PREFETCH_AHEAD 12u
#define CLOCK_EVERY 1024u
#define BATCH 256u

struct clock_state {
    int64_t now_ms;
};

static int64_t cached_clock(void *ud)
{
    return ((struct clock_state *)ud)->now_ms;
}

/* RSS after handing free heap pages back, so a later growth in RSS is new
 * memory and not the reuse of pages an earlier engine left resident. */
static uint64_t rss_trimmed(void)
{
    malloc_trim(0);
    return bench_rss_self();
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Interactions as the engine takes them; names borrowed from `arena`,
 * which holds each interaction's session name in interaction order: a
 * server hands the engine strings that sit in the read buffer it just
 * parsed, so the bench must not add a cache miss on a name table of its
 * own (one name per session, 40 MB at random, did: ~7% of engine time). */
struct ixset {
    struct eng_ix *ix;
    char *arena;
    size_t n;
};

static void ixset_free(struct ixset *s)
{
    free(s->ix);
    free(s->arena);
    memset(s, 0, sizeof *s);
}

static int ixset_build(const struct bench_wl *w, struct ixset *s, char *msg, size_t msglen)
{
    memset(s, 0, sizeof *s);
    s->ix = calloc(w->n ? w->n : 1, sizeof *s->ix);
    s->arena = malloc((w->n ? w->n : 1) * BENCH_SID_MAX);
    if (!s->ix || !s->arena) {
        ixset_free(s);
        snprintf(msg, msglen, "out of memory for %zu interactions", w->n);
        return BENCH_ENOMEM;
    }
    for (size_t i = 0; i < w->n; i++) {
        const struct bench_ix *x = &w->ix[i];
        struct eng_ix *e = &s->ix[i];
        char *sid = s->arena + i * BENCH_SID_MAX;
        e->type = x->type;
        e->short_id = x->short_id;
        e->user = x->user;
        e->session = sid;
        e->session_len = bench_session_name(&w->cfg, x->session, sid);
        if (x->type == ENG_T_VIEW) {
            e->has_watch = true;
            e->watch_ms = x->watch_ms;
        }
        if (x->type == ENG_T_SHARE) {
            e->platform = bench_platform_name(x->platform);
            e->platform_len = strlen(e->platform);
        }
    }
    s->n = w->n;
    return BENCH_OK;
}

static struct eng *make_engine(uint32_t history, struct clock_state *cs)
{
    cs->now_ms = wall_ms();
    struct eng_config cfg = {.history = history, .clock = cached_clock, .ud = cs};
    return eng_create(&cfg);
}

/* Records ix[0..n) BATCH at a time; returns the interactions rejected (a
 * refused batch records none of its elements). */
static uint64_t load_batch(struct eng *e, struct clock_state *cs, const struct eng_ix *ix,
                           size_t n, char *first_err, size_t errlen)
{
    uint64_t bad = 0;
    struct eng_err err;
    for (size_t i = 0; i < n; i += BATCH) {
        size_t k = n - i < BATCH ? n - i : BATCH;
        cs->now_ms = wall_ms();
        if (eng_record_batch(e, ix + i, k, &err) == ENG_OK)
            continue;
        if (bad == 0 && first_err)
            snprintf(first_err, errlen, "interaction %zu: %.120s",
                     i + (err.index > 0 ? (size_t)err.index : 0), err.msg);
        bad += k;
    }
    return bad;
}

/* Records ix[0..n) one by one; returns the interactions rejected. */
static uint64_t load(struct eng *e, struct clock_state *cs, const struct eng_ix *ix, size_t n,
                     bool prefetch, char *first_err, size_t errlen)
{
    uint64_t bad = 0;
    struct eng_err err;
    for (size_t i = 0; i < n; i++) {
        if ((i & (CLOCK_EVERY - 1)) == 0)
            cs->now_ms = wall_ms();
        if (prefetch && i + PREFETCH_AHEAD < n)
            eng_prefetch(e, &ix[i + PREFETCH_AHEAD]);
        if (eng_record(e, &ix[i], &err) != ENG_OK && bad++ == 0 && first_err)
            snprintf(first_err, errlen, "%s", err.msg);
    }
    return bad;
}

int bench_engine_ingest(const struct bench_wl *w, uint32_t history, struct bench_eng_res *r,
                        char *msg, size_t msglen)
{
    memset(r, 0, sizeof *r);
    struct ixset s;
    int rc = ixset_build(w, &s, msg, msglen);
    if (rc)
        return rc;
    struct clock_state cs;
    char ferr[160] = "";
    /* pass 0 one by one, 1 with eng_prefetch, 2 eng_record_batch; then the
     * same batches again over pass 2's state: no new sessions, shorts or
     * pairs, so no table growth; only the rings grow (each interaction adds
     * a record), so fresh memory is a fraction of a first pass's. */
    for (int pass = 0; pass < 3; pass++) {
        uint64_t rss0 = rss_trimmed();
        struct eng *e = make_engine(history, &cs);
        if (!e) {
            ixset_free(&s);
            snprintf(msg, msglen, "eng_create failed");
            return BENCH_ENOMEM;
        }
        double t0 = bench_now();
        uint64_t bad = pass == 2 ? load_batch(e, &cs, s.ix, s.n, ferr, sizeof ferr)
                                 : load(e, &cs, s.ix, s.n, pass == 1, ferr, sizeof ferr);
        double dt = bench_now() - t0;
        if (pass == 0) {
            r->secs = dt;
            r->rate = dt > 0 ? (double)s.n / dt : 0;
            uint64_t rss1 = bench_rss_self();
            r->rss_delta = rss1 > rss0 ? rss1 - rss0 : 0;
        } else if (pass == 1) {
            r->secs_pf = dt;
            r->rate_pf = dt > 0 ? (double)s.n / dt : 0;
            eng_info(e, &r->info);
        } else {
            r->secs_batch = dt;
            r->rate_batch = dt > 0 ? (double)s.n / dt : 0;
            t0 = bench_now();
            bad += load_batch(e, &cs, s.ix, s.n, ferr, sizeof ferr);
            dt = bench_now() - t0;
            r->secs_replay = dt;
            r->rate_replay = dt > 0 ? (double)s.n / dt : 0;
        }
        r->rejected = bad;
        eng_destroy(e);
        if (bad) {
            ixset_free(&s);
            snprintf(msg, msglen, "the engine rejected %llu interactions, first: %s",
                     (unsigned long long)bad, ferr);
            return BENCH_ESERVER;
        }
    }
    r->n = s.n;
    ixset_free(&s);
    return BENCH_OK;
}

static double time_top(struct eng *e, enum eng_metric m, uint32_t k, struct eng_top_item *out,
                       int *got)
{
    struct eng_err err;
    double t0 = bench_now();
    *got = eng_top(e, m, k, out, &err);
    return (bench_now() - t0) * 1e3;
}

int bench_engine_top(const struct bench_wl *w, uint32_t k, struct bench_top_res *r, char *msg,
                     size_t msglen)
{
    memset(r, 0, sizeof *r);
    r->k = k;
    r->touch = 10000;
    if (w->n < 2 * (size_t)r->touch) {
        snprintf(msg, msglen, "top: the workload needs at least %u interactions", 2 * r->touch);
        return BENCH_EINVAL;
    }
    struct ixset s;
    int rc = ixset_build(w, &s, msg, msglen);
    if (rc)
        return rc;
    struct clock_state cs;
    struct eng *e = make_engine(0, &cs);
    struct eng_top_item *out = malloc(ENG_TOPK_MAX * sizeof *out);
    if (!e || !out) {
        free(out);
        if (e)
            eng_destroy(e);
        ixset_free(&s);
        snprintf(msg, msglen, "out of memory");
        return BENCH_ENOMEM;
    }
    /* the last 20 rounds of `touch` interactions are kept for the dirty test */
    size_t rounds = 20, held = rounds * r->touch;
    if (held > s.n / 2)
        rounds = s.n / 2 / r->touch, held = rounds * r->touch;
    size_t base = s.n - held;
    load(e, &cs, s.ix, base, true, NULL, 0);
    struct eng_info info;
    eng_info(e, &info);
    r->shorts = (uint32_t)info.shorts;
    int got = 0;
    r->first_ms = time_top(e, ENG_M_SCORE, k, out, &got);
    if (got < 0) {
        snprintf(msg, msglen, "eng_top failed: %d", got);
        rc = BENCH_ESERVER;
        goto out;
    }
    /* pass 0 is each metric's first TOP (cold), the next four are repeats */
    double sum = 0;
    int nt = 0;
    for (int rep = 0; rep < 5; rep++) {
        for (int m = 0; m < ENG_M_COUNT; m++) {
            double ms = time_top(e, (enum eng_metric)m, k, out, &got);
            if (rep == 0) {
                r->cold_ms_by_metric[m] = ms;
                if (ms > r->cold_ms_max && m != ENG_M_SCORE)
                    r->cold_ms_max = ms;
                continue;
            }
            if (ms > r->steady_ms_by_metric[m])
                r->steady_ms_by_metric[m] = ms;
            if (ms > r->steady_ms_max)
                r->steady_ms_max = ms;
            sum += ms;
            nt++;
        }
    }
    r->steady_ms_mean = sum / nt;
    for (size_t i = 0; i < rounds; i++) {
        load(e, &cs, s.ix + base + i * r->touch, r->touch, true, NULL, 0);
        double ms = time_top(e, ENG_M_SCORE, k, out, &got);
        if (ms > r->dirty_ms_max)
            r->dirty_ms_max = ms;
    }
out:
    free(out);
    eng_destroy(e);
    ixset_free(&s);
    return rc;
}

/* Apply n interactions made by f(i) and report the deltas. */
struct delta {
    uint64_t rss;
    struct eng_info before, after;
};

static void measure(struct eng *e, struct clock_state *cs, const struct eng_ix *ix, size_t n,
                    struct delta *d)
{
    eng_info(e, &d->before);
    uint64_t r0 = rss_trimmed();
    load(e, cs, ix, n, true, NULL, 0);
    uint64_t r1 = bench_rss_self();
    eng_info(e, &d->after);
    d->rss = r1 > r0 ? r1 - r0 : 0;
}

int bench_engine_memory(const struct bench_wl *w, uint32_t history, struct bench_mem_res *r,
                        char *msg, size_t msglen)
{
    memset(r, 0, sizeof *r);
    struct ixset s;
    int rc = ixset_build(w, &s, msg, msglen);
    if (rc)
        return rc;
    size_t m = s.n / 2 ? s.n / 2 : 1;
    struct eng_ix *extra = malloc(m * sizeof *extra);
    struct clock_state cs;
    struct eng *e = make_engine(history, &cs);
    struct eng *e1 = make_engine(1, &cs);
    if (!extra || !e || !e1) {
        rc = BENCH_ENOMEM;
        snprintf(msg, msglen, "out of memory");
        goto out;
    }
    struct bench_rng rng;
    bench_rng_seed(&rng, w->cfg.seed ^ 0x6d656d6f7279ull);

    /* base state in e (history N) */
    uint64_t r0 = rss_trimmed();
    load(e, &cs, s.ix, s.n, true, NULL, 0);
    r->base_rss = bench_rss_self() - r0;
    eng_info(e, &r->base);
    r->base_mem_total = r->base.mem_total;

    /* records: skips by known sessions on known shorts */
    for (size_t i = 0; i < m; i++) {
        extra[i] = s.ix[bench_rng_below(&rng, s.n)];
        extra[i].type = ENG_T_SKIP;
        extra[i].has_watch = false;
        extra[i].platform = NULL;
        extra[i].platform_len = 0;
    }
    struct delta d;
    measure(e, &cs, extra, m, &d);
    r->d_records = d.after.records - d.before.records;
    if (r->d_records) {
        r->rss_per_record = (double)d.rss / (double)r->d_records;
        r->acct_per_record = (double)(d.after.mem_total - d.before.mem_total) / (double)r->d_records;
    }
    eng_destroy(e);
    e = NULL;

    /* pairs: history 1, so known sessions' rings are full and stay that size */
    load(e1, &cs, s.ix, s.n, true, NULL, 0);
    uint32_t shorts = w->cfg.shorts;
    for (size_t i = 0; i < m; i++) {
        extra[i] = s.ix[bench_rng_below(&rng, s.n)];
        extra[i].type = ENG_T_IMPRESSION;
        extra[i].has_watch = false;
        extra[i].platform = NULL;
        extra[i].platform_len = 0;
        /* a short that exists (it was in the load), seen by this viewer rarely */
        extra[i].short_id = s.ix[bench_rng_below(&rng, s.n)].short_id;
    }
    measure(e1, &cs, extra, m, &d);
    r->d_pairs = d.after.viewer_pairs - d.before.viewer_pairs;
    if (r->d_pairs) {
        r->rss_per_pair = (double)d.rss / (double)r->d_pairs;
        r->acct_per_pair = (double)(d.after.mem_total - d.before.mem_total) / (double)r->d_pairs;
    }

    /* shorts: skips on ids never seen */
    size_t ns = m < shorts ? m : shorts;
    for (size_t i = 0; i < ns; i++) {
        extra[i] = s.ix[bench_rng_below(&rng, s.n)];
        extra[i].type = ENG_T_SKIP;
        extra[i].has_watch = false;
        extra[i].platform = NULL;
        extra[i].platform_len = 0;
        extra[i].short_id = (uint64_t)shorts + 1 + i;
    }
    measure(e1, &cs, extra, ns, &d);
    r->d_shorts = d.after.shorts - d.before.shorts;
    if (r->d_shorts) {
        r->rss_per_short = (double)d.rss / (double)r->d_shorts;
        r->acct_per_short = (double)(d.after.mem_total - d.before.mem_total) / (double)r->d_shorts;
    }
out:
    if (e)
        eng_destroy(e);
    if (e1)
        eng_destroy(e1);
    free(extra);
    ixset_free(&s);
    return rc;
}
