/* SPDX-License-Identifier: MIT */
/*
 * test_bench.c -- the benchmark harness's pure parts: the seeded workload
 * generator, the command encoders, the histogram, the RESP reply skipper and
 * the control connection (against a forked loopback peer).
 *
 * The runner links libbench.a (every bench source but main.c), so these
 * parts are tested through bench/bench.h. Nothing here times anything. The histogram property test draws
 * its values from a seed it prints on failure; SHORTSTAT_SEED replays it.
 */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"
#include "tests/run_util.h"

static struct bench_wl_cfg small_cfg(uint64_t seed)
{
    struct bench_wl_cfg c;
    bench_wl_defaults(&c);
    c.seed = seed;
    c.n = 20000;
    c.shorts = 500;
    c.sessions = 3000;
    c.users = 700;
    return c;
}

/* ---- PRNG and generator ---------------------------------------------------------- */

START_TEST(rng_is_seeded_and_bounded)
{
    struct bench_rng a, b, c;
    bench_rng_seed(&a, 42);
    bench_rng_seed(&b, 42);
    bench_rng_seed(&c, 43);
    int differ = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = bench_rng_next(&a);
        ck_assert_uint_eq(x, bench_rng_next(&b));
        differ += x != bench_rng_next(&c);
    }
    ck_assert_int_gt(differ, 990);
    for (int i = 0; i < 10000; i++) {
        ck_assert_uint_lt(bench_rng_below(&a, 7), 7);
        double u = bench_rng_unit(&a);
        ck_assert(u >= 0.0 && u < 1.0);
    }
    ck_assert_uint_eq(bench_rng_below(&a, 1), 0);
}
END_TEST

START_TEST(workload_is_deterministic)
{
    struct bench_wl_cfg c = small_cfg(9);
    struct bench_wl w1, w2, w3;
    char msg[BENCH_ERR_MAX];
    ck_assert_int_eq(bench_wl_generate(&c, &w1, msg, sizeof msg), BENCH_OK);
    ck_assert_int_eq(bench_wl_generate(&c, &w2, msg, sizeof msg), BENCH_OK);
    ck_assert_mem_eq(w1.ix, w2.ix, c.n * sizeof *w1.ix);
    c.seed = 10;
    ck_assert_int_eq(bench_wl_generate(&c, &w3, msg, sizeof msg), BENCH_OK);
    ck_assert(memcmp(w1.ix, w3.ix, c.n * sizeof *w1.ix) != 0);
    bench_wl_free(&w1);
    bench_wl_free(&w2);
    bench_wl_free(&w3);
}
END_TEST

START_TEST(workload_respects_its_configuration)
{
    struct bench_wl_cfg c = small_cfg(3);
    c.n = 100000;
    struct bench_wl w;
    char msg[BENCH_ERR_MAX];
    ck_assert_int_eq(bench_wl_generate(&c, &w, msg, sizeof msg), BENCH_OK);
    uint64_t by_type[ENG_T_COUNT] = {0}, signed_in = 0;
    for (size_t i = 0; i < w.n; i++) {
        const struct bench_ix *x = &w.ix[i];
        ck_assert_uint_ge(x->short_id, 1);
        ck_assert_uint_le(x->short_id, c.shorts);
        ck_assert_uint_lt(x->session, c.sessions);
        ck_assert_uint_lt(x->type, ENG_T_COUNT);
        by_type[x->type]++;
        /* a session is always the same user, or always a guest */
        ck_assert_uint_eq(x->user, bench_session_user(&c, x->session));
        ck_assert_uint_le(x->user, c.users);
        signed_in += x->user != 0;
        if (x->type == ENG_T_VIEW)
            ck_assert_uint_le(x->watch_ms, c.watch_max);
        else
            ck_assert_uint_eq(x->watch_ms, 0);
        if (x->type == ENG_T_SHARE)
            ck_assert_uint_lt(x->platform, BENCH_NPLATFORMS);
        else
            ck_assert_uint_eq(x->platform, 0);
    }
    /* the default mix within 1 point of its weights (n = 100,000: sigma < 0.16 points) */
    for (int t = 0; t < ENG_T_COUNT; t++) {
        double pct = 100.0 * (double)by_type[t] / (double)w.n;
        ck_assert_msg(pct > c.mix[t] - 1.0 && pct < c.mix[t] + 1.0, "type %d: %.2f%% vs %u", t,
                      pct, c.mix[t]);
    }
    double share = (double)signed_in / (double)w.n;
    ck_assert_msg(share > 0.27 && share < 0.33, "signed-in share %.3f", share);
    bench_wl_free(&w);
}
END_TEST

START_TEST(zipf_skews_and_cover_touches_every_short)
{
    struct bench_wl_cfg c = small_cfg(5);
    c.n = 100000;
    c.zipf = 1.0;
    struct bench_wl w;
    char msg[BENCH_ERR_MAX];
    ck_assert_int_eq(bench_wl_generate(&c, &w, msg, sizeof msg), BENCH_OK);
    uint64_t first = 0, last = 0;
    for (size_t i = 0; i < w.n; i++) {
        first += w.ix[i].short_id == 1;
        last += w.ix[i].short_id == c.shorts;
    }
    /* P(1) / P(500) = 500 for s = 1: id 1 is far more popular */
    ck_assert_uint_gt(first, 50 * (last + 1));
    bench_wl_free(&w);

    /* --cover: one impression of every short first, and the rest of the
     * workload exactly that of the same seed without it */
    c.zipf = 0.0;
    struct bench_wl plain;
    ck_assert_int_eq(bench_wl_generate(&c, &plain, msg, sizeof msg), BENCH_OK);
    c.cover = true;
    ck_assert_int_eq(bench_wl_generate(&c, &w, msg, sizeof msg), BENCH_OK);
    for (uint32_t i = 0; i < c.shorts; i++) {
        ck_assert_uint_eq(w.ix[i].short_id, i + 1);
        ck_assert_uint_eq(w.ix[i].type, ENG_T_IMPRESSION);
        ck_assert_uint_eq(w.ix[i].watch_ms, 0);
    }
    for (size_t i = c.shorts; i < w.n; i++) {
        const struct bench_ix *a = &w.ix[i], *b = &plain.ix[i];
        ck_assert_msg(a->short_id == b->short_id && a->session == b->session &&
                          a->user == b->user && a->watch_ms == b->watch_ms &&
                          a->type == b->type && a->platform == b->platform,
                      "interaction %zu differs with --cover", i);
    }
    bench_wl_free(&plain);
    bench_wl_free(&w);
}
END_TEST

START_TEST(bad_configuration_is_refused)
{
    char msg[BENCH_ERR_MAX];
    struct bench_wl w;
    struct bench_wl_cfg c = small_cfg(1);
    c.shorts = 0;
    ck_assert_int_eq(bench_wl_generate(&c, &w, msg, sizeof msg), BENCH_EINVAL);
    ck_assert_str_eq(msg, "shorts: must be at least 1");
    c = small_cfg(1);
    c.sessions = 0;
    ck_assert_int_eq(bench_wl_check(&c, msg, sizeof msg), BENCH_EINVAL);
    ck_assert_str_eq(msg, "sessions: must be at least 1");
    c = small_cfg(1);
    c.signed_in = 1.5;
    ck_assert_int_eq(bench_wl_check(&c, msg, sizeof msg), BENCH_EINVAL);
    ck_assert_str_eq(msg, "signed-in: must be a share 0..1");
    c = small_cfg(1);
    c.users = 0;
    ck_assert_int_eq(bench_wl_check(&c, msg, sizeof msg), BENCH_EINVAL);
    ck_assert(strstr(msg, "users:") == msg);
    c.signed_in = 0;
    ck_assert_int_eq(bench_wl_check(&c, msg, sizeof msg), BENCH_OK);
    c = small_cfg(1);
    memset(c.mix, 0, sizeof c.mix);
    ck_assert_int_eq(bench_wl_check(&c, msg, sizeof msg), BENCH_EINVAL);
    ck_assert_str_eq(msg, "mix: every weight is 0");
    c = small_cfg(1);
    c.zipf = -1;
    ck_assert_int_eq(bench_wl_check(&c, msg, sizeof msg), BENCH_EINVAL);
    ck_assert(strstr(msg, "zipf:") == msg);
    c = small_cfg(1);
    c.watch_max = ENG_WATCH_MAX + 1;
    ck_assert_int_eq(bench_wl_check(&c, msg, sizeof msg), BENCH_EINVAL);
    ck_assert(strstr(msg, "watch-max:") == msg);
}
END_TEST

START_TEST(mix_parses_and_rejects)
{
    uint32_t mix[ENG_T_COUNT];
    char msg[BENCH_ERR_MAX];
    ck_assert_int_eq(bench_mix_parse("view=3,book_viewing=1", mix, msg, sizeof msg), BENCH_OK);
    for (int t = 0; t < ENG_T_COUNT; t++)
        ck_assert_uint_eq(mix[t], t == ENG_T_VIEW ? 3 : t == ENG_T_BOOK_VIEWING ? 1 : 0);
    static const struct {
        const char *in, *msg;
    } bad[] = {
        {"", "mix: empty"},
        {"view", "mix: expected type=weight at 'view'"},
        {"look=3", "mix: unknown interaction type 'look'"},
        {"view=3,view=4", "mix: type 'view' given twice"},
        {"view=", "mix: weight of 'view' must be an integer 0..1000000"},
        {"view=-1", "mix: weight of 'view' must be an integer 0..1000000"},
        {"view=2x", "mix: weight of 'view' must be an integer 0..1000000"},
        {"view=2000000", "mix: weight of 'view' must be an integer 0..1000000"},
        {"view=0", "mix: every weight is 0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint32_t before[ENG_T_COUNT];
        memcpy(before, mix, sizeof mix);
        ck_assert_int_eq(bench_mix_parse(bad[i].in, mix, msg, sizeof msg), BENCH_EINVAL);
        ck_assert_str_eq(msg, bad[i].msg);
        ck_assert_mem_eq(before, mix, sizeof mix);   /* a refused mix changes nothing */
    }
}
END_TEST

/* ---- encoders ------------------------------------------------------------------------- */

START_TEST(track_encodings_agree)
{
    struct bench_wl_cfg c = small_cfg(1);
    struct bench_ix x = {.short_id = 77, .session = 12, .type = ENG_T_VIEW, .watch_ms = 1500};
    x.user = 0;
    uint8_t out[BENCH_CMD_MAX];
    char sid[BENCH_SID_MAX];
    size_t sl = bench_session_name(&c, 12, sid);
    ck_assert_uint_eq(sl, 34);
    ck_assert(sid[0] == 'g' && sid[1] == '-');
    ck_assert_uint_eq(strspn(sid + 2, "0123456789abcdef"), 32);
    char want[256];
    snprintf(want, sizeof want, "TRACK 77 view session=%s watch_ms=1500\r\n", sid);
    size_t n = bench_enc_track(&c, &x, BENCH_INLINE, out);
    ck_assert_uint_eq(n, strlen(want));
    ck_assert_mem_eq(out, want, n);

    x.type = ENG_T_SHARE;
    x.watch_ms = 0;
    x.platform = 2;
    x.user = 9;
    n = bench_enc_track(&c, &x, BENCH_RESP, out);
    snprintf(want, sizeof want,
             "*6\r\n$5\r\nTRACK\r\n$2\r\n77\r\n$5\r\nshare\r\n$42\r\nsession=%s\r\n"
             "$6\r\nuser=9\r\n$18\r\nplatform=instagram\r\n", sid);
    ck_assert_uint_eq(n, strlen(want));
    ck_assert_mem_eq(out, want, n);

    c.sid_fmt = BENCH_SID_SHORT;
    ck_assert_uint_eq(bench_session_name(&c, 305, sid), 4);
    ck_assert_str_eq(sid, "s305");
}
END_TEST

START_TEST(eval_encoding_is_one_resp_command)
{
    struct bench_wl_cfg c = small_cfg(1);
    c.sid_fmt = BENCH_SID_SHORT;
    struct bench_ix x = {.short_id = 5, .session = 8, .user = 3, .type = ENG_T_VIEW,
                         .watch_ms = 250};
    uint8_t out[BENCH_CMD_MAX];
    const char *sha = "0123456789012345678901234567890123456789";
    size_t n = bench_enc_eval(&c, &x, 7, sha, 64, out);
    ck_assert_int_eq(bench_resp_skip(out, out + n), (ptrdiff_t)n);
    const char *want = "*13\r\n$7\r\nEVALSHA\r\n$40\r\n0123456789012345678901234567890123456789\r\n"
                       "$1\r\n4\r\n$3\r\ns:5\r\n$3\r\nv:5\r\n$5\r\nhs:s8\r\n$4\r\nhu:3\r\n"
                       "$4\r\nview\r\n$3\r\n250\r\n$2\r\nu3\r\n$24\r\n5 view 1700000000007 250\r\n"
                       "$0\r\n\r\n$2\r\n64\r\n";
    ck_assert_uint_eq(n, strlen(want));
    ck_assert_mem_eq(out, want, n);
    ck_assert(strstr(bench_lua_script(), "PFADD") != NULL);
}
END_TEST

START_TEST(stream_offsets_frame_every_command)
{
    struct bench_wl_cfg c = small_cfg(2);
    c.n = 3000;
    struct bench_wl w;
    struct bench_stream s;
    char msg[BENCH_ERR_MAX];
    ck_assert_int_eq(bench_wl_generate(&c, &w, msg, sizeof msg), BENCH_OK);
    ck_assert_int_eq(bench_stream_build(&w, BENCH_S_TRACK, BENCH_RESP, NULL, 64, &s, msg, sizeof msg),
                     BENCH_OK);
    ck_assert_uint_eq(s.n, w.n);
    ck_assert_uint_eq(s.off[0], 0);
    ck_assert_uint_eq(s.off[s.n], s.len);
    for (size_t i = 0; i < s.n; i++) {
        ptrdiff_t r = bench_resp_skip(s.buf + s.off[i], s.buf + s.len);
        ck_assert_int_eq(r, (ptrdiff_t)(s.off[i + 1] - s.off[i]));
    }
    bench_stream_free(&s);
    bench_wl_free(&w);
}
END_TEST

/* ---- histogram ---------------------------------------------------------------------------- */

START_TEST(hist_buckets_are_contiguous_and_tight)
{
    ck_assert_uint_eq(bench_hist_index(0), 0);
    ck_assert_uint_eq(bench_hist_index(63), 63);
    ck_assert_uint_eq(bench_hist_index(64), 64);
    ck_assert_uint_eq(bench_hist_index(UINT64_MAX), BENCH_HIST_BUCKETS - 1);
    ck_assert_uint_eq(bench_hist_bucket_high(BENCH_HIST_BUCKETS - 1), UINT64_MAX);
    /* every bucket's high end maps to it, and the next value to the next bucket */
    for (unsigned i = 0; i + 1 < BENCH_HIST_BUCKETS; i++) {
        uint64_t hi = bench_hist_bucket_high(i);
        ck_assert_uint_eq(bench_hist_index(hi), i);
        ck_assert_uint_eq(bench_hist_index(hi + 1), i + 1);
        uint64_t lo = i ? bench_hist_bucket_high(i - 1) + 1 : 0;
        ck_assert_msg(hi - lo <= hi / 32, "bucket %u [%llu, %llu] too wide", i,
                      (unsigned long long)lo, (unsigned long long)hi);
    }
}
END_TEST

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t test_seed(void)
{
    const char *s = getenv("SHORTSTAT_SEED");
    return s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL);
}

START_TEST(hist_quantiles_within_a_bucket)
{
    uint64_t seed = test_seed();
    struct bench_rng r;
    bench_rng_seed(&r, seed);
    enum { N = 20000 };
    static uint64_t v[N];
    static struct bench_hist h, a, b;
    for (int round = 0; round < 3; round++) {
        bench_hist_reset(&h);
        bench_hist_reset(&a);
        bench_hist_reset(&b);
        for (int i = 0; i < N; i++) {
            /* log-uniform over 1 ns .. ~1 s, like latencies */
            v[i] = (uint64_t)exp(bench_rng_unit(&r) * 20.7);
            bench_hist_add(&h, v[i], 1);
            bench_hist_add(i & 1 ? &a : &b, v[i], 1);
        }
        bench_hist_merge(&a, &b);
        ck_assert_mem_eq(a.b, h.b, sizeof h.b);
        ck_assert_uint_eq(a.count, N);
        qsort(v, N, sizeof v[0], cmp_u64);
        ck_assert_uint_eq(bench_hist_quantile(&h, 1.0), v[N - 1]);
        ck_assert_uint_eq(bench_hist_quantile(&h, 0.0), v[0]);
        static const double qs[] = {0.5, 0.9, 0.99, 0.999};
        for (size_t k = 0; k < sizeof qs / sizeof qs[0]; k++) {
            size_t rank = (size_t)ceil(qs[k] * N);
            uint64_t exact = v[rank - 1];
            uint64_t got = bench_hist_quantile(&h, qs[k]);
            ck_assert_msg(got >= exact && got - exact <= exact / 32 + 1,
                          "seed %llu: q%.3f exact %llu got %llu (replay: SHORTSTAT_SEED=%llu)",
                          (unsigned long long)seed, qs[k], (unsigned long long)exact,
                          (unsigned long long)got, (unsigned long long)seed);
        }
    }
}
END_TEST

START_TEST(hist_counts_in_bulk)
{
    struct bench_hist h;
    bench_hist_reset(&h);
    ck_assert_uint_eq(bench_hist_quantile(&h, 0.99), 0);
    bench_hist_add(&h, 1000, 99);
    bench_hist_add(&h, 5000000, 1);
    bench_hist_add(&h, 7, 0);
    ck_assert_uint_eq(h.count, 100);
    ck_assert_uint_eq(h.min, 1000);
    ck_assert_uint_le(bench_hist_quantile(&h, 0.99), 1000 + 1000 / 32);
    ck_assert_uint_eq(bench_hist_quantile(&h, 0.999), 5000000);
    ck_assert(fabs(bench_hist_mean(&h) - (99 * 1000.0 + 5e6) / 100) < 1e-6);
}
END_TEST

/* A paced command is charged from its own due time, t0 + j / rate: not
 * from the write that carried it (a write after a stall carries commands
 * due over a span), nor one pacing step late. At 200/s from t0 = 10 s,
 * commands 0..2 answered at 10.011 s waited 11, 6 and 1 ms; one answered
 * before it fell due counts 0. */
START_TEST(hist_paced_charges_each_due_time)
{
    struct bench_hist h;
    bench_hist_reset(&h);
    bench_hist_add_paced(&h, 10.011, 10.0, 200.0, 0, 3);
    ck_assert_uint_eq(h.count, 3);
    ck_assert(llabs((long long)h.min - 1000000) < 1000);
    ck_assert(llabs((long long)h.max - 11000000) < 1000);
    ck_assert(fabs(bench_hist_mean(&h) - 6e6) < 1000);
    bench_hist_add_paced(&h, 10.011, 10.0, 200.0, 3, 4);  /* due at 10.015 */
    ck_assert_uint_eq(h.min, 0);
    ck_assert_uint_eq(h.count, 4);
    bench_hist_add_paced(&h, 10.011, 10.0, 200.0, 4, 4);  /* nothing */
    ck_assert_uint_eq(h.count, 4);
}
END_TEST

/* The median the restart figures are taken as. */
START_TEST(median_of_a_few)
{
    double a[] = {3, 1, 2};
    ck_assert_double_eq(bench_median(a, 3), 2);
    ck_assert(a[0] <= a[1] && a[1] <= a[2]);
    double b[] = {4, 1, 3, 2};
    ck_assert_double_eq(bench_median(b, 4), 2.5);
    double c[] = {7};
    ck_assert_double_eq(bench_median(c, 1), 7);
    ck_assert_double_eq(bench_median(c, 0), 0);
}
END_TEST

/* ---- RESP replies and INFO -------------------------------------------------------------------- */

START_TEST(resp_skip_three_outcomes)
{
    static const struct {
        const char *in;
        ptrdiff_t want;
    } cases[] = {
        {"+OK\r\n", 5},        {"-ERR x\r\n", 8},       {":12\r\n", 5},
        {"$3\r\nabc\r\n", 9},  {"$-1\r\n", 5},          {"*-1\r\n", 4 + 1},
        {"*0\r\n", 4},         {"*2\r\n$1\r\na\r\n:1\r\n", 15},
        {"", 0},               {"+OK\r", 0},            {"$3\r\nab", 0},
        {"*2\r\n$1\r\na\r\n", 0},
        {"?\r\n", -1},         {"+OK\n", -1},           {"$x\r\n", -1},
        {"$3\r\nabcd\r\n", -1}, {"*-2\r\n", -1},        {"$-5\r\n", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const uint8_t *p = (const uint8_t *)cases[i].in;
        ck_assert_msg(bench_resp_skip(p, p + strlen(cases[i].in)) == cases[i].want, "case %zu '%s'",
                      i, cases[i].in);
    }
    /* deep nesting is refused rather than recursed into */
    char deep[64] = "";
    for (int i = 0; i < 12; i++)
        strcat(deep, "*1\r\n");
    strcat(deep, ":1\r\n");
    ck_assert_int_eq(bench_resp_skip((uint8_t *)deep, (uint8_t *)deep + strlen(deep)), -1);
}
END_TEST

START_TEST(info_fields)
{
    const char *info = "# Server\r\nversion:0.1\r\nuptime_s:12\r\n# Stats\r\n"
                       "interactions_total:2000000\r\nshorts:99\r\nbad:12x\r\n";
    uint64_t v = 0;
    ck_assert_int_eq(bench_info_u64(info, "interactions_total", &v), 0);
    ck_assert_uint_eq(v, 2000000);
    ck_assert_int_eq(bench_info_u64(info, "shorts", &v), 0);
    ck_assert_uint_eq(v, 99);
    ck_assert_int_eq(bench_info_u64(info, "total", &v), -1);   /* no partial key match */
    ck_assert_int_eq(bench_info_u64(info, "bad", &v), -1);
    ck_assert_int_eq(bench_info_u64(info, "missing", &v), -1);
    char s[16];
    ck_assert_int_eq(bench_info_str(info, "version", s, sizeof s), 0);
    ck_assert_str_eq(s, "0.1");
    ck_assert_int_eq(bench_info_str(info, "nope", s, sizeof s), -1);
}
END_TEST

/* ---- the control connection ------------------------------------------------------------------ */

/* A one-shot peer on an ephemeral port: sends `out` whatever it is asked,
 * half-closes if `eof`, and reads until the client goes. */
static pid_t ctl_peer(const char *out, size_t len, bool eof, struct bench_ctl *c)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    ck_assert_int_ge(lfd, 0);
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(lfd, 1), 0);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&a, &al), 0);
    ck_assert_int_eq(bench_ctl_open(c, "127.0.0.1", ntohs(a.sin_port), 2000), BENCH_OK);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(c->fd);   /* the client's end: EOF must reach us when the parent closes it */
        int fd = accept(lfd, NULL, NULL);
        for (size_t off = 0; fd >= 0 && off < len;) {
            ssize_t n = write(fd, out + off, len - off);
            if (n <= 0)
                _exit(1);
            off += (size_t)n;
        }
        if (eof)
            shutdown(fd, SHUT_WR);
        char sink[4096];
        while (read(fd, sink, sizeof sink) > 0)
            ;
        _exit(0);
    }
    close(lfd);
    return pid;
}

static void ctl_done(struct bench_ctl *c, pid_t pid)
{
    int st;
    bench_ctl_close(c);
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

START_TEST(ctl_cmd_replies_and_failures)
{
    /* Generous: a reply that is coming must not lose to a busy machine. */
    enum { REPLY_MS = 30000 };
    const char *ping[] = {"PING"};
    char *r;
    struct bench_ctl c;
    /* one reply per command, the rest kept; a reply past the first buffer */
    size_t big = 100000;
    char *out = malloc(big + 64);
    int head = sprintf(out, "+OK\r\n-ERR no\r\n:12\r\n$3\r\nabc\r\n$-1\r\n$%zu\r\n", big);
    memset(out + head, 'x', big);
    memcpy(out + head + big, "\r\n", 2);
    pid_t pid = ctl_peer(out, (size_t)head + big + 2, true, &c);
    static const struct {
        int rc;
        const char *reply;
    } want[] = {{BENCH_OK, "OK"}, {BENCH_ESERVER, "ERR no"}, {BENCH_OK, "12"},
                {BENCH_OK, "abc"}, {BENCH_OK, ""}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        ck_assert_int_eq(bench_ctl_cmd(&c, 1, ping, REPLY_MS, &r), want[i].rc);
        ck_assert_str_eq(r, want[i].reply);
        free(r);
    }
    ck_assert_int_eq(bench_ctl_cmd(&c, 1, ping, REPLY_MS, &r), BENCH_OK);
    ck_assert_uint_eq(strlen(r), big);
    ck_assert(r[0] == 'x' && r[big - 1] == 'x');
    free(r);
    ck_assert_int_eq(bench_ctl_cmd(&c, 1, ping, REPLY_MS, &r), BENCH_EIO);   /* peer closed */
    ck_assert_ptr_null(r);
    ctl_done(&c, pid);
    free(out);
    /* a reply that is not RESP */
    pid = ctl_peer("?\r\n", 3, false, &c);
    ck_assert_int_eq(bench_ctl_cmd(&c, 1, ping, REPLY_MS, &r), BENCH_ESERVER);
    ck_assert_ptr_null(r);
    ctl_done(&c, pid);
    /* no reply at all */
    pid = ctl_peer("", 0, false, &c);
    ck_assert_int_eq(bench_ctl_cmd(&c, 1, ping, 50, &r), BENCH_ETIMEOUT);
    ck_assert_ptr_null(r);
    ctl_done(&c, pid);
}
END_TEST

/* The machine probe refuses sizes it cannot measure with, and otherwise
 * reports figures that are all positive. */
START_TEST(machine_probe_sane)
{
    struct bench_machine_res m;
    char msg[BENCH_ERR_MAX];
    ck_assert_int_eq(bench_machine(8, 1, &m, msg, sizeof msg), BENCH_EINVAL);
    ck_assert_ptr_nonnull(strstr(msg, "size"));
    ck_assert_int_eq(bench_machine(16, 1, &m, msg, sizeof msg), BENCH_OK);
    ck_assert_uint_eq(m.mb, 16);
    ck_assert(m.fault_4k_us > 0 && m.fault_thp_us > 0);
    ck_assert(m.fork_4k_ms > 0 && m.fork_thp_ms > 0);
    ck_assert(m.miss_ns > 0 && m.lines_per_s > 0);
    ck_assert(m.best_k >= 4 && m.best_k <= 32);
}
END_TEST

/* ---- the load client ------------------------------------------------------------------------ */

/* The load client against the null server: every command answered and
 * timed once, flat out and paced. A paced run cannot finish before its
 * last command falls due, whatever the machine's speed. */
/* A small workload of n TRACKs (100 shorts, 1000 sessions, 100 users) as
 * a stream in the given framing; its configuration in *c. */
static void small_stream(uint64_t n, enum bench_framing fr, struct bench_wl_cfg *c,
                         struct bench_wl *w, struct bench_stream *st)
{
    char msg[256];
    bench_wl_defaults(c);
    c->n = n;
    c->shorts = 100;
    c->sessions = 1000;
    c->users = 100;
    ck_assert_int_eq(bench_wl_generate(c, w, msg, sizeof msg), BENCH_OK);
    ck_assert_int_eq(bench_stream_build(w, BENCH_S_TRACK, fr, NULL, 64, st, msg, sizeof msg),
                     BENCH_OK);
}

START_TEST(client_runs_flat_out_and_paced)
{
    struct bench_wl_cfg c;
    struct bench_wl w;
    struct bench_stream st;
    char msg[256];
    small_stream(20000, BENCH_RESP, &c, &w, &st);
    struct bench_proc p;
    ck_assert_int_eq(bench_sink_start(-1, &p, msg, sizeof msg), BENCH_OK);
    const double rates[] = {0, 100000};
    for (size_t i = 0; i < 2; i++) {
        struct bench_run_cfg rc = {.host = "127.0.0.1", .port = p.port, .label = "test",
                                   .stream = &st, .conns = 3, .pipeline = 64,
                                   .rate = rates[i], .timeout_s = 60};
        struct bench_run_res r;
        ck_assert_msg(bench_run(&rc, &r, msg, sizeof msg) == BENCH_OK, "%s", msg);
        ck_assert_uint_eq(r.sent, c.n);
        ck_assert_uint_eq(r.replies, c.n);
        ck_assert_uint_eq(r.errors, 0);
        ck_assert_uint_eq(r.lat.count, c.n);
        ck_assert(r.lat.max >= r.lat.min);
        if (rates[i] > 0) {
            /* The last command falls due n / rate after the run starts
             * (q_secs counts from then; secs from the first write, which a
             * late first wake-up delays, and then the backlog goes at once). */
            ck_assert_msg(r.q_secs >= (double)c.n / rates[i] * 0.99, "paced run took %.3f s",
                          r.q_secs);
            ck_assert((double)c.n / r.q_secs <= rates[i] * 1.01);
        }
        bench_run_res_free(&r);
    }
    bench_stop(&p, SIGKILL, 5);
    bench_stream_free(&st);
    bench_wl_free(&w);
}
END_TEST

/* A server that reads nothing for stall_ms after it accepts, then answers
 * +OK to each inline command (one a line) as it reads them. */
struct stall_srv {
    int lfd;
    int stall_ms;
};

static void *stall_serve(void *arg)
{
    struct stall_srv *sv = arg;
    int fd = accept(sv->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    struct timespec ts = {sv->stall_ms / 1000, (long)(sv->stall_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    static char in[1 << 16], out[5 * (1 << 16)];
    for (ssize_t n; (n = read(fd, in, sizeof in)) > 0;) {
        size_t k = 0;
        for (ssize_t i = 0; i < n; i++)
            if (in[i] == '\n')
                memcpy(out + 5 * k++, "+OK\r\n", 5);
        for (size_t off = 0; off < 5 * k;) {
            ssize_t w = write(fd, out + off, 5 * k - off);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
    }
    close(fd);
    return NULL;
}

/* Paced, each command is charged from its own due time, also when a write
 * catches up after a stall with commands that fell due over a span: at
 * 2,000/s with 1,000 in flight, a stall S of 1 s leaves the second
 * thousand to go in one write, due from 0.5 to 1 s, answered at about
 * 1 s. Their latencies run from S/2 down to 0; charging all from the
 * first's due time (as the bench once did) put them all at S/2. */
START_TEST(paced_backlog_charged_per_command)
{
    struct bench_wl_cfg c;
    struct bench_wl w;
    struct bench_stream st;
    char msg[256];
    small_stream(2000, BENCH_INLINE, &c, &w, &st);
    struct stall_srv sv = {.lfd = socket(AF_INET, SOCK_STREAM, 0), .stall_ms = 1000};
    ck_assert_int_ge(sv.lfd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    ck_assert_int_eq(bind(sv.lfd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(sv.lfd, 1), 0);
    ck_assert_int_eq(getsockname(sv.lfd, (struct sockaddr *)&a, &al), 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, stall_serve, &sv), 0);
    struct bench_run_cfg rc = {.host = "127.0.0.1", .port = ntohs(a.sin_port), .label = "stall",
                               .stream = &st, .conns = 1, .pipeline = 1000, .rate = 2000,
                               .timeout_s = 60};
    struct bench_run_res r;
    ck_assert_msg(bench_run(&rc, &r, msg, sizeof msg) == BENCH_OK, "%s", msg);
    ck_assert_uint_eq(r.lat.count, c.n);
    /* No bound on how fast the machine answers: with the second thousand
     * answered d after the stall, p25 is S/4 + d and p90 (the first
     * thousand's) 0.9 S, so p90 > 2 p25 holds while d < 0.2 S (200 ms);
     * charged as one, p25 is S/2 + d and it cannot. The stall is a sleep,
     * so the lower bound on p90 holds on the slowest machine. */
    uint64_t p25 = bench_hist_quantile(&r.lat, 0.25), p90 = bench_hist_quantile(&r.lat, 0.9);
    ck_assert_msg(p90 > 2 * p25, "p25 %.1f ms, p90 %.1f ms: the backlog's write was charged as one",
                  (double)p25 / 1e6, (double)p90 / 1e6);
    ck_assert_msg(p90 > 750000000, "p90 %.1f ms: the stall was not charged", (double)p90 / 1e6);
    bench_run_res_free(&r);
    pthread_join(th, NULL);
    close(sv.lfd);
    bench_stream_free(&st);
    bench_wl_free(&w);
}
END_TEST

/* ---- the command line ------------------------------------------------------------------------ */

#define BENCH(...) run_program("shortstat-bench", (const char *const[]){__VA_ARGS__, NULL})

/* Bad usage exits 2 before any server starts, and names what was wrong. */
START_TEST(cli_refuses_bad_usage)
{
    static const struct {
        const char *args[6];
        const char *says;
    } bad[] = {
        {{"ingest", "--preload", "--sink"}, "--preload cannot be combined with --sink or --vs-redis"},
        {{"ingest", "--vs-redis", "--preload"}, "--preload cannot be combined"},
        {{"ingest", "--sink", "--port", "1"}, "--sink cannot be combined"},
        {{"engine", "--preload"}, "preload"},
        {{"frobnicate"}, "frobnicate"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct run r = run_program("shortstat-bench", bad[i].args);
        ck_assert_msg(r.status == 2, "case %zu: exit %d", i, r.status);
        ck_assert_msg(strstr(r.err, bad[i].says), "case %zu: stderr: %s", i, r.err);
        ck_assert_uint_eq(r.out_len, 0);
        run_free(&r);
    }
    struct run r = BENCH("ingest", "--help");
    ck_assert_int_eq(r.status, 0);
    ck_assert_ptr_nonnull(strstr(r.out, "--rate"));
    run_free(&r);
}
END_TEST

extern Suite *bench_suite(void);
Suite *bench_suite(void)
{
    Suite *s = suite_create("bench");
    TCase *t = tcase_create("pure");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, rng_is_seeded_and_bounded);
    tcase_add_test(t, workload_is_deterministic);
    tcase_add_test(t, workload_respects_its_configuration);
    tcase_add_test(t, zipf_skews_and_cover_touches_every_short);
    tcase_add_test(t, bad_configuration_is_refused);
    tcase_add_test(t, mix_parses_and_rejects);
    tcase_add_test(t, track_encodings_agree);
    tcase_add_test(t, eval_encoding_is_one_resp_command);
    tcase_add_test(t, stream_offsets_frame_every_command);
    tcase_add_test(t, hist_buckets_are_contiguous_and_tight);
    tcase_add_test(t, hist_quantiles_within_a_bucket);
    tcase_add_test(t, hist_counts_in_bulk);
    tcase_add_test(t, hist_paced_charges_each_due_time);
    tcase_add_test(t, median_of_a_few);
    tcase_add_test(t, resp_skip_three_outcomes);
    tcase_add_test(t, info_fields);
    tcase_add_test(t, ctl_cmd_replies_and_failures);
    tcase_add_test(t, machine_probe_sane);
    tcase_add_test(t, client_runs_flat_out_and_paced);
    tcase_add_test(t, paced_backlog_charged_per_command);
    tcase_add_test(t, cli_refuses_bad_usage);
    suite_add_tcase(s, t);
    return s;
}
