/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the engine through eng.h: recording and every stat,
 * dedup of viewers and savers, history (decode, limit, overwrite),
 * eviction, top-k, boost, names, session ids, every validation error
 * (with state unchanged), batches, ENOMEM injection, and a walk ->
 * restore round trip. eng_verify runs after each test.
 */
#include <check.h>
#include <math.h>
#include <string.h>

#include "engine/eng.h"
#include "engine/eng_test.h"
#include "tests/eng_util.h"

static struct tclock clk;
static struct eng *E;

static void setup(void)
{
    clk.now = 1700000000000;
    E = mk_eng(&clk, 0, 0);
}

static void teardown(void)
{
    verify_ok(E);
    eng_destroy(E);
    E = NULL;
}

START_TEST(test_names)
{
    for (int t = 0; t < ENG_T_COUNT; t++) {
        const char *n = eng_type_name((enum eng_type)t);
        ck_assert_int_eq(eng_type_parse(n, strlen(n)), t);
    }
    ck_assert_str_eq(eng_type_name(ENG_T_BOOK_VIEWING), "book_viewing");
    ck_assert_int_eq(eng_type_parse("VIEW", 4), ENG_T_VIEW);
    ck_assert_int_eq(eng_type_parse("views", 5), -1);
    ck_assert_int_eq(eng_type_parse("vie", 3), -1);
    ck_assert_int_eq(eng_type_parse(NULL, 0), -1);
    for (int m = 0; m < ENG_M_COUNT; m++) {
        const char *n = eng_metric_name((enum eng_metric)m);
        ck_assert_int_eq(eng_metric_parse(n, strlen(n)), m);
    }
    ck_assert_str_eq(eng_metric_name(ENG_M_VIEW_COUNT), "view_count");
    ck_assert_int_eq(eng_metric_parse("nope", 4), -1);
}
END_TEST

/* eng_verify, which every test's teardown runs, does catch a broken
 * invariant: each break is named. */
START_TEST(test_verify_catches)
{
    static const char *const want[] = {"short 7: saves 2 but 1 savers", "records: counted 2,",
                                       "context 1: refs 2/0, records hold 1/0"};
    for (int what = 0; what < 3; what++) {
        struct tclock k = {.now = 1700000000000};
        struct eng *e = mk_eng(&k, 0, 0);
        struct eng_ix ix = ix_of(ENG_T_SAVE, 7, "s1", 0);
        rec_ok(e, &ix);
        struct eng_err err = {0};
        ck_assert_int_eq(eng_verify(e, &err), 0);
        ck_assert_int_eq(eng_test_break(e, what), 0);
        ck_assert_int_eq(eng_verify(e, &err), ENG_EINVAL);
        ck_assert_msg(strstr(err.msg, want[what]), "break %d: %s", what, err.msg);
        eng_destroy(e);
    }
    /* what restore refuses, checked again by eng_verify over a live short */
    static const char *const want_short[] = {
        "short 7: more viewers than impressions and views, or their sum wraps",
        "short 7: watch time past watch_ms's bound", "short 7: platform shares exceed shares",
        "short 7: platform with no shares"};
    for (int what = 3; what < 7; what++) {
        struct tclock k = {.now = 1700000000000};
        struct eng *e = mk_eng(&k, 0, 0);
        struct eng_ix ix = ix_of(ENG_T_SHARE, 7, "s1", 0);
        ix_set(&ix.platform, &ix.platform_len, "x");
        rec_ok(e, &ix);
        struct eng_err err = {0};
        ck_assert_int_eq(eng_verify(e, &err), 0);
        ck_assert_int_eq(eng_test_break(e, what), 0);
        ck_assert_int_eq(eng_verify(e, &err), ENG_EINVAL);
        ck_assert_msg(strstr(err.msg, want_short[what - 3]), "break %d: %s", what, err.msg);
        eng_destroy(e);
    }
}
END_TEST

START_TEST(test_counts)
{
    struct eng_ix ix = ix_of(ENG_T_IMPRESSION, 7, "s1", 0);
    rec_ok(E, &ix);
    ix.type = ENG_T_VIEW;
    ix.has_watch = true;
    ix.watch_ms = 3000;
    rec_ok(E, &ix);
    ix.watch_ms = 1000;
    ix.session = "s2";
    ix.session_len = 2;
    rec_ok(E, &ix);
    ix.has_watch = false;  /* a view without watch_ms does not count in the mean */
    rec_ok(E, &ix);
    for (int t = ENG_T_SKIP; t < ENG_T_COUNT; t++) {
        struct eng_ix o = ix_of(t, 7, "s1", 0);
        rec_ok(E, &o);
    }
    struct eng_stats st;
    eng_stats(E, 7, &st);
    ck_assert_uint_eq(st.impressions, 1);
    ck_assert_uint_eq(st.views, 3);
    ck_assert_uint_eq(st.view_count, 4);
    ck_assert_uint_eq(st.unique_viewers, 2);
    ck_assert_uint_eq(st.skips, 1);
    ck_assert_uint_eq(st.saves, 1);
    ck_assert_uint_eq(st.shares, 1);
    ck_assert_uint_eq(st.contacts, 1);
    ck_assert_uint_eq(st.whatsapps, 1);
    ck_assert_uint_eq(st.book_viewings, 1);
    ck_assert_double_eq(st.avg_watch_ms, 2000.0);
    ck_assert_double_eq(st.engagement_rate, 5.0 / 4.0);
    ck_assert(st.score > 0 && st.score <= 100);
    ck_assert_int_eq(st.last_ts, clk.now);
    ck_assert_uint_eq(st.boost, 0);
    ck_assert_uint_eq(st.nplatforms, 0);

    eng_stats(E, 8, &st);  /* unknown: zeros */
    ck_assert_uint_eq(st.view_count, 0);
    ck_assert_double_eq(st.score, 0.0);
    eng_stats(E, 0, &st);
    ck_assert_uint_eq(st.view_count, 0);

    struct eng_info in;
    eng_info(E, &in);
    ck_assert_uint_eq(in.shorts, 1);
    ck_assert_uint_eq(in.sessions, 2);
    ck_assert_uint_eq(in.users, 0);
    ck_assert_uint_eq(in.interactions, 10);
    ck_assert_uint_eq(in.by_type[ENG_T_VIEW], 3);
    ck_assert_uint_eq(in.records, 10);
    ck_assert_uint_eq(in.viewer_pairs, 2);
    ck_assert_uint_eq(in.history, ENG_HISTORY_DEFAULT);
    ck_assert_int_eq(in.session_ttl_ms, ENG_SESSION_TTL_DEFAULT_MS);
    ck_assert(in.mem_total >= in.mem_records + in.mem_viewers);
    ck_assert_uint_eq(in.mem_records % 20, 0);
    /* the O(1) figure a memory limit reads moves with what is allocated */
    uint64_t before = eng_mem_total(E);
    struct eng_err err;
    for (unsigned i = 0; i < 100; i++) {
        char sid[24];
        snprintf(sid, sizeof sid, "memtest%u", i);
        struct eng_ix mx = ix_of(ENG_T_VIEW, 1000 + i, sid, 0);
        ck_assert_int_eq(eng_record(E, &mx, &err), ENG_OK);
    }
    ck_assert_uint_gt(eng_mem_total(E), before);
}
END_TEST

START_TEST(test_viewer_identity)
{
    /* the viewer is the user when present, else the session */
    struct eng_ix a = ix_of(ENG_T_VIEW, 1, "sa", 5);
    struct eng_ix b = ix_of(ENG_T_IMPRESSION, 1, "sb", 5);
    struct eng_ix c = ix_of(ENG_T_VIEW, 1, NULL, 5);
    struct eng_ix d = ix_of(ENG_T_VIEW, 1, "sa", 0);
    rec_ok(E, &a);
    rec_ok(E, &b);
    rec_ok(E, &c);
    struct eng_stats st;
    eng_stats(E, 1, &st);
    ck_assert_uint_eq(st.unique_viewers, 1);
    rec_ok(E, &d);  /* guest on session sa is a different viewer from user 5 */
    eng_stats(E, 1, &st);
    ck_assert_uint_eq(st.unique_viewers, 2);
    /* a skip or a share is not a viewing */
    struct eng_ix s = ix_of(ENG_T_SKIP, 1, "sz", 0);
    rec_ok(E, &s);
    eng_stats(E, 1, &st);
    ck_assert_uint_eq(st.unique_viewers, 2);
}
END_TEST

START_TEST(test_saves_dedup)
{
    struct eng_ix s = ix_of(ENG_T_SAVE, 3, NULL, 9);
    rec_ok(E, &s);
    rec_ok(E, &s);
    s.session = "g1";
    s.session_len = 2;
    rec_ok(E, &s);  /* same user, another session: same saver */
    struct eng_stats st;
    eng_stats(E, 3, &st);
    ck_assert_uint_eq(st.saves, 1);
    struct eng_ix g = ix_of(ENG_T_SAVE, 3, "g1", 0);
    rec_ok(E, &g);
    eng_stats(E, 3, &st);
    ck_assert_uint_eq(st.saves, 2);
    /* repeats stay in history */
    struct eng_history_rec h[8];
    ck_assert_uint_eq(eng_history_user(E, 9, h, 8), 3);
    struct eng_info in;
    eng_info(E, &in);
    ck_assert_uint_eq(in.by_type[ENG_T_SAVE], 4);
}
END_TEST

START_TEST(test_platforms)
{
    /* a name is read in lower case: WhatsApp and WHATSAPP are whatsapp */
    const char *names[] = {"whatsapp", "Facebook", "WhatsApp", "x_2", "facebook", "WHATSAPP"};
    for (size_t i = 0; i < 6; i++) {
        struct eng_ix ix = ix_of(ENG_T_SHARE, 4, "s", 0);
        ix_set(&ix.platform, &ix.platform_len, names[i]);
        rec_ok(E, &ix);
    }
    struct eng_ix plain = ix_of(ENG_T_SHARE, 4, "s", 0);
    rec_ok(E, &plain);
    struct eng_stats st;
    eng_stats(E, 4, &st);
    ck_assert_uint_eq(st.shares, 7);
    ck_assert_uint_eq(st.nplatforms, 3);
    ck_assert_str_eq(st.platforms[0].name, "whatsapp");
    ck_assert_uint_eq(st.platforms[0].shares, 3);
    ck_assert_str_eq(st.platforms[1].name, "facebook");
    ck_assert_uint_eq(st.platforms[1].shares, 2);
    ck_assert_str_eq(st.platforms[2].name, "x_2");
    ck_assert_uint_eq(st.platforms[2].shares, 1);
    struct eng_history_rec h[2];
    ck_assert_uint_eq(eng_history_session(E, "s", 1, h, 2), 2);
    ck_assert_ptr_null(h[0].platform);
    ck_assert_int_eq((int)h[1].platform_len, 8);
    ck_assert_int_eq(memcmp(h[1].platform, "whatsapp", 8), 0);  /* as stored */
    struct eng_err ee = {0};
    ck_assert_msg(eng_verify(E, &ee) == 0, "%s", ee.msg);
}
END_TEST

START_TEST(test_history_decode)
{
    struct eng_ix ix = ix_of(ENG_T_VIEW, 11, "sess-1", 42);
    ix.has_ts = true;
    ix.ts = 123456;
    ix.has_watch = true;
    ix.watch_ms = 0;
    ix_set(&ix.ip, &ix.ip_len, "2001:DB8:0:0::1");
    ix_set(&ix.ua, &ix.ua_len, "Mozilla/5.0 (X11)");
    rec_ok(E, &ix);
    struct eng_ix j = ix_of(ENG_T_SKIP, 12, "sess-1", 0);
    ix_set(&j.ip, &j.ip_len, "10.0.0.1");
    rec_ok(E, &j);

    struct eng_history_rec h[4];
    ck_assert_uint_eq(eng_history_session(E, "sess-1", 6, h, 10), 2);
    ck_assert_uint_eq(h[0].short_id, 12);
    ck_assert_int_eq(h[0].type, ENG_T_SKIP);
    ck_assert_uint_eq(h[0].user, 0);
    ck_assert_str_eq(h[0].ip, "10.0.0.1");
    ck_assert_ptr_null(h[0].ua);
    ck_assert(!h[0].has_watch);
    ck_assert_int_eq(h[0].ts, clk.now);
    ck_assert_uint_eq(h[1].short_id, 11);
    ck_assert_int_eq(h[1].ts, 123456);
    ck_assert_uint_eq(h[1].user, 42);
    ck_assert_int_eq((int)h[1].session_len, 6);
    ck_assert_int_eq(memcmp(h[1].session, "sess-1", 6), 0);
    ck_assert(h[1].has_watch);
    ck_assert_uint_eq(h[1].watch_ms, 0);
    ck_assert_str_eq(h[1].ip, "2001:db8::1");
    ck_assert_int_eq((int)h[1].ua_len, 17);
    ck_assert_int_eq(memcmp(h[1].ua, "Mozilla/5.0 (X11)", 17), 0);

    ck_assert_uint_eq(eng_history_session(E, "sess-1", 6, h, 1), 1);
    ck_assert_uint_eq(h[0].short_id, 12);
    ck_assert_uint_eq(eng_history_user(E, 42, h, 4), 1);
    ck_assert_uint_eq(h[0].short_id, 11);
    ck_assert_uint_eq(eng_history_user(E, 43, h, 4), 0);
    ck_assert_uint_eq(eng_history_user(E, 0, h, 4), 0);
    ck_assert_uint_eq(eng_history_session(E, "nope", 4, h, 4), 0);
    ck_assert_uint_eq(eng_history_session(E, "bad id!", 7, h, 4), 0);
    ck_assert_uint_eq(eng_history_session(E, "sess-1", 6, h, 0), 0);
}
END_TEST

START_TEST(test_ring_overwrite)
{
    eng_destroy(E);
    E = mk_eng(&clk, 5, 0);
    for (uint64_t i = 1; i <= 12; i++) {
        struct eng_ix ix = ix_of(ENG_T_IMPRESSION, i, "s", 7);
        rec_ok(E, &ix);
        verify_ok(E);
    }
    struct eng_history_rec h[16];
    ck_assert_uint_eq(eng_history_session(E, "s", 1, h, 16), 5);
    for (int i = 0; i < 5; i++)
        ck_assert_uint_eq(h[i].short_id, 12 - (uint64_t)i);
    ck_assert_uint_eq(eng_history_user(E, 7, h, 16), 5);
    struct eng_info in;
    eng_info(E, &in);
    ck_assert_uint_eq(in.records, 10);
    ck_assert_uint_eq(in.mem_records, 10 * 20);
}
END_TEST

START_TEST(test_context_sharing)
{
    /* the same who-and-where is stored once however many records carry it */
    struct eng_ix ix = ix_of(ENG_T_IMPRESSION, 1, "s", 3);
    ix_set(&ix.ip, &ix.ip_len, "1.2.3.4");
    ix_set(&ix.ua, &ix.ua_len, "UA");
    for (int i = 0; i < 10; i++)
        rec_ok(E, &ix);
    struct eng_walk_counts wc;
    eng_walk_counts(E, &wc);
    ck_assert_uint_eq(wc.ctxs, 1);
    ck_assert_uint_eq(wc.uas, 1);
    /* alternating ip: two contexts, both reused */
    struct eng_ix b = ix;
    ix_set(&b.ip, &b.ip_len, "1.2.3.5");
    for (int i = 0; i < 10; i++)
        rec_ok(E, i % 2 ? &ix : &b);
    eng_walk_counts(E, &wc);
    ck_assert_uint_eq(wc.ctxs, 2);
    ck_assert_uint_eq(wc.uas, 1);
    /* a second session with the same ua shares the ua, not the context */
    struct eng_ix c = ix;
    ix_set(&c.session, &c.session_len, "t");
    rec_ok(E, &c);
    eng_walk_counts(E, &wc);
    ck_assert_uint_eq(wc.ctxs, 3);
    ck_assert_uint_eq(wc.uas, 1);
}
END_TEST

START_TEST(test_eviction)
{
    eng_destroy(E);
    E = mk_eng(&clk, 8, 1000);
    struct eng_ix a = ix_of(ENG_T_VIEW, 1, "old", 0);
    ix_set(&a.ua, &a.ua_len, "ua-old");
    rec_ok(E, &a);
    struct eng_history_rec h[8];
    clk.now += 1000;  /* idle exactly the TTL: still alive */
    ck_assert_uint_eq(eng_history_session(E, "old", 3, h, 8), 1);
    clk.now += 1;     /* longer than the TTL: gone at once */
    struct eng_walk_counts wc;
    eng_walk_counts(E, &wc);   /* walks judge by the engine's time, not the clock */
    ck_assert_uint_eq(wc.sessions, 1);
    ck_assert_uint_eq(eng_history_session(E, "old", 3, h, 8), 0);
    eng_walk_counts(E, &wc);   /* which that query moved on */
    ck_assert_uint_eq(wc.sessions, 0);
    eng_tick(E, 0);
    eng_walk_counts(E, &wc);
    ck_assert_uint_eq(wc.sessions, 0);
    ck_assert_uint_eq(wc.ctxs, 0);
    ck_assert_uint_eq(wc.uas, 0);
    ck_assert_uint_eq(wc.records, 0);
    /* a new interaction starts a fresh ring; the short keeps its stats */
    rec_ok(E, &a);
    ck_assert_uint_eq(eng_history_session(E, "old", 3, h, 8), 1);
    struct eng_info in;
    eng_info(E, &in);
    ck_assert_uint_eq(in.sessions_evicted, 1);
    ck_assert_uint_eq(in.sessions, 1);
    struct eng_stats st;
    eng_stats(E, 1, &st);
    ck_assert_uint_eq(st.views, 2);
    ck_assert_uint_eq(st.unique_viewers, 1);

    /* incremental sweep: many sessions expire, ticks remove them */
    for (int i = 0; i < 100; i++) {
        char s[16];
        snprintf(s, sizeof(s), "s%d", i);
        struct eng_ix x = ix_of(ENG_T_IMPRESSION, 2, s, 0);
        rec_ok(E, &x);
    }
    clk.now += 5000;
    eng_tick(E, 10);
    eng_info(E, &in);
    ck_assert_uint_eq(in.sessions, 101 - 10);
    verify_ok(E);
    eng_tick(E, UINT32_MAX);
    eng_info(E, &in);
    ck_assert_uint_eq(in.sessions, 0);
    ck_assert_uint_eq(in.sessions_evicted, 102);
    ck_assert_uint_eq(in.records, 0);
    ck_assert_uint_eq(in.mem_records, 0);
    eng_stats(E, 2, &st);
    ck_assert_uint_eq(st.unique_viewers, 100);
    /* recording sweeps a little too */
    for (int i = 0; i < 3; i++) {
        char s[16];
        snprintf(s, sizeof(s), "n%d", i);
        struct eng_ix x = ix_of(ENG_T_IMPRESSION, 2, s, 0);
        rec_ok(E, &x);
    }
    clk.now += 5000;
    struct eng_ix u = ix_of(ENG_T_IMPRESSION, 2, NULL, 77);
    for (int i = 0; i < 60; i++)  /* 2 slots per record: one pass over 101 */
        rec_ok(E, &u);
    eng_info(E, &in);
    ck_assert_uint_eq(in.sessions, 0);
    ck_assert_uint_eq(in.users, 1);  /* users are not evicted */
}
END_TEST

START_TEST(test_top)
{
    struct eng_top_item top[ENG_TOPK_MAX];
    struct eng_err err;
    ck_assert_int_eq(eng_top(E, ENG_M_VIEW_COUNT, 10, top, &err), 0);
    for (uint64_t id = 1; id <= 50; id++)
        for (uint64_t k = 0; k < (id * 7) % 11; k++) {
            struct eng_ix ix = ix_of(ENG_T_IMPRESSION, id, "s", 0);
            rec_ok(E, &ix);
        }
    int n = eng_top(E, ENG_M_VIEW_COUNT, 5, top, &err);
    ck_assert_int_eq(n, 5);
    /* (id*7)%11 == 10 for id = 3, 14, 25, 36, 47; then 9 for id 6, ... */
    uint64_t want[] = {3, 14, 25, 36, 47};
    for (int i = 0; i < 5; i++) {
        ck_assert_uint_eq(top[i].short_id, want[i]);
        ck_assert_double_eq(top[i].value, 10.0);
    }
    n = eng_top(E, ENG_M_VIEW_COUNT, 1000, top, &err);
    ck_assert_int_eq(n, 46);  /* multiples of 11 got no interaction */
    for (int i = 1; i < n; i++)
        ck_assert(top[i - 1].value > top[i].value ||
                  (top[i - 1].value == top[i].value && top[i - 1].short_id < top[i].short_id));
    /* columns follow later changes */
    for (int k = 0; k < 20; k++) {
        struct eng_ix ix = ix_of(ENG_T_VIEW, 50, "s", 0);
        rec_ok(E, &ix);
    }
    n = eng_top(E, ENG_M_VIEW_COUNT, 1, top, &err);
    ck_assert_int_eq(n, 1);
    ck_assert_uint_eq(top[0].short_id, 50);
    ck_assert_double_eq(top[0].value, 20.0 + (50 * 7) % 11);
    ck_assert_int_eq(eng_top(E, ENG_M_SCORE, 3, top, &err), 3);
    ck_assert_int_eq(eng_top(E, ENG_M_VIEW_COUNT, 0, top, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "k: must be 1..1000");
    ck_assert_int_eq(eng_top(E, ENG_M_VIEW_COUNT, 1001, top, &err), ENG_EINVAL);
    ck_assert_int_eq(eng_top(E, (enum eng_metric)ENG_M_COUNT, 1, top, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "by: unknown metric");
    ck_assert_int_eq(eng_top(E, (enum eng_metric)-1, 1, top, &err), ENG_EINVAL);
}
END_TEST

START_TEST(test_boost)
{
    struct eng_err err;
    ck_assert_int_eq(eng_set_boost(E, 5, 40, &err), 0);
    struct eng_stats st;
    eng_stats(E, 5, &st);
    ck_assert_uint_eq(st.boost, 40);
    double s40 = st.score;
    ck_assert_int_eq(eng_set_boost(E, 5, 100, &err), 0);
    eng_stats(E, 5, &st);
    ck_assert(st.score > s40);
    ck_assert_int_eq(eng_set_boost(E, 5, 101, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "boost: must be 0..100");
    ck_assert_int_eq(eng_set_boost(E, 5, -1, &err), ENG_EINVAL);
    ck_assert_int_eq(eng_set_boost(E, 0, 1, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "short_id: must be at least 1");
    eng_stats(E, 5, &st);
    ck_assert_uint_eq(st.boost, 100);
    struct eng_top_item top[2];
    ck_assert_int_eq(eng_top(E, ENG_M_BOOST, 2, top, &err), 1);
    ck_assert_double_eq(top[0].value, 100.0);
}
END_TEST

START_TEST(test_session_new)
{
    char a[ENG_SID_LEN + 1], b[ENG_SID_LEN + 1];
    eng_session_new(E, a);
    eng_session_new(E, b);
    ck_assert_uint_eq(strlen(a), ENG_SID_LEN);
    ck_assert(a[0] == 'g' && a[1] == '-');
    for (size_t i = 2; i < ENG_SID_LEN; i++)
        ck_assert(strchr("0123456789abcdef", a[i]) != NULL);
    ck_assert_str_ne(a, b);
    /* injected randomness is used */
    struct eng_config cfg = {.random = trandom_fn};
    struct eng *e2 = eng_create(&cfg);
    eng_session_new(e2, a);
    ck_assert_str_eq(a, "g-0b30557a9fc4e90e33587da2c7ec1136");
    /* a minted id is a valid session */
    struct eng_ix ix = ix_of(ENG_T_VIEW, 1, a, 0);
    rec_ok(e2, &ix);
    eng_destroy(e2);
}
END_TEST

/* ---- validation: each field its own error, nothing changes ---------------- */

struct bad_case {
    const char *msg;
    int rc;
    void (*mutate)(struct eng_ix *ix);
};

static void m_type_hi(struct eng_ix *ix) { ix->type = ENG_T_COUNT; }
static void m_type_neg(struct eng_ix *ix) { ix->type = -1; }
static void m_short(struct eng_ix *ix) { ix->short_id = 0; }
static void m_sess_empty(struct eng_ix *ix) { ix->session_len = 0; }
static void m_sess_long(struct eng_ix *ix)
{
    ix->session = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    ix->session_len = 65;
}
static void m_sess_char(struct eng_ix *ix) { ix_set(&ix->session, &ix->session_len, "a b"); }
static void m_sess_slash(struct eng_ix *ix) { ix_set(&ix->session, &ix->session_len, "a/b"); }
static void m_viewer(struct eng_ix *ix) { ix->session = NULL; ix->user = 0; }
static void m_ts_neg(struct eng_ix *ix) { ix->has_ts = true; ix->ts = -1; }
static void m_ts_big(struct eng_ix *ix) { ix->has_ts = true; ix->ts = ENG_TS_MAX + 1; }
static void m_watch_type(struct eng_ix *ix) { ix->type = ENG_T_IMPRESSION; ix->has_watch = true; }
static void m_watch_neg(struct eng_ix *ix) { ix->has_watch = true; ix->watch_ms = -1; }
static void m_watch_big(struct eng_ix *ix) { ix->has_watch = true; ix->watch_ms = ENG_WATCH_MAX + 1; }
static void m_plat_type(struct eng_ix *ix) { ix_set(&ix->platform, &ix->platform_len, "x"); }
static void m_plat_empty(struct eng_ix *ix)
{
    ix->type = ENG_T_SHARE;
    ix_set(&ix->platform, &ix->platform_len, "");
}
static void m_plat_punct(struct eng_ix *ix)
{
    ix->type = ENG_T_SHARE;
    ix_set(&ix->platform, &ix->platform_len, "copy-link");
}
static void m_plat_long(struct eng_ix *ix)
{
    ix->type = ENG_T_SHARE;
    ix_set(&ix->platform, &ix->platform_len, "abcdefghijklmnopqrstuvwxyz0123456");
}
static void m_ip_bad(struct eng_ix *ix) { ix_set(&ix->ip, &ix->ip_len, "1.2.3"); }
static void m_ip_empty(struct eng_ix *ix) { ix_set(&ix->ip, &ix->ip_len, ""); }
static void m_ip_nul(struct eng_ix *ix) { ix->ip = "1.2.3.4\0x"; ix->ip_len = 9; }
static void m_ip_long(struct eng_ix *ix)
{
    ix_set(&ix->ip, &ix->ip_len, "1111:2222:3333:4444:5555:6666:7777:8888:9999:0000");
}
static char long_ua[ENG_UA_MAX + 2];
static void m_ua_long(struct eng_ix *ix) { ix->ua = long_ua; ix->ua_len = ENG_UA_MAX + 1; }

static const struct bad_case bad_cases[] = {
    {"type: unknown interaction type", ENG_EINVAL, m_type_hi},
    {"type: unknown interaction type", ENG_EINVAL, m_type_neg},
    {"short_id: must be at least 1", ENG_EINVAL, m_short},
    {"session: must be 1 to 64 characters of A-Z a-z 0-9 . _ : -", ENG_EINVAL, m_sess_empty},
    {"session: must be 1 to 64 characters of A-Z a-z 0-9 . _ : -", ENG_EINVAL, m_sess_long},
    {"session: must be 1 to 64 characters of A-Z a-z 0-9 . _ : -", ENG_EINVAL, m_sess_char},
    {"session: must be 1 to 64 characters of A-Z a-z 0-9 . _ : -", ENG_EINVAL, m_sess_slash},
    {"viewer: session or user is required", ENG_EINVAL, m_viewer},
    {"ts: must be 0..253402300799999", ENG_EINVAL, m_ts_neg},
    {"ts: must be 0..253402300799999", ENG_EINVAL, m_ts_big},
    {"watch_ms: only allowed on view", ENG_EINVAL, m_watch_type},
    {"watch_ms: must be 0..86400000", ENG_EINVAL, m_watch_neg},
    {"watch_ms: must be 0..86400000", ENG_EINVAL, m_watch_big},
    {"platform: only allowed on share", ENG_EINVAL, m_plat_type},
    {"platform: must be 1 to 32 characters of A-Z a-z 0-9 _", ENG_EINVAL, m_plat_empty},
    {"platform: must be 1 to 32 characters of A-Z a-z 0-9 _", ENG_EINVAL, m_plat_punct},
    {"platform: must be 1 to 32 characters of A-Z a-z 0-9 _", ENG_EINVAL, m_plat_long},
    {"ip: not an IPv4 or IPv6 address", ENG_EINVAL, m_ip_bad},
    {"ip: not an IPv4 or IPv6 address", ENG_EINVAL, m_ip_empty},
    {"ip: not an IPv4 or IPv6 address", ENG_EINVAL, m_ip_nul},
    {"ip: not an IPv4 or IPv6 address", ENG_EINVAL, m_ip_long},
    {"ua: longer than 512 bytes", ENG_EINVAL, m_ua_long},
};

static void seed_state(struct eng *e)
{
    for (uint64_t i = 1; i <= 20; i++) {
        char s[8];
        snprintf(s, sizeof(s), "s%u", (unsigned)(i % 7));
        struct eng_ix ix = ix_of((int)(i % ENG_T_COUNT), i % 5 + 1, s, i % 3);
        if (ix.type == ENG_T_VIEW) {
            ix.has_watch = true;
            ix.watch_ms = (int64_t)i * 100;
        }
        if (ix.type == ENG_T_SHARE)
            ix_set(&ix.platform, &ix.platform_len, i % 2 ? "sms" : "email");
        ix_set(&ix.ua, &ix.ua_len, i % 2 ? "ua-a" : "ua-b");
        rec_ok(e, &ix);
    }
}

START_TEST(test_bad_input)
{
    memset(long_ua, 'u', sizeof(long_ua));
    seed_state(E);
    uint64_t before = eng_digest(E);
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        struct eng_ix ix = ix_of(ENG_T_VIEW, 99, "fresh", 1234);
        ix_set(&ix.ip, &ix.ip_len, "9.9.9.9");
        ix_set(&ix.ua, &ix.ua_len, "new-ua");
        bad_cases[i].mutate(&ix);
        struct eng_err err;
        ck_assert_int_eq(eng_validate(E, &ix, &err), bad_cases[i].rc);
        ck_assert_str_eq(err.msg, bad_cases[i].msg);
        ck_assert_int_eq(eng_record(E, &ix, &err), bad_cases[i].rc);
        ck_assert_str_eq(err.msg, bad_cases[i].msg);
        ck_assert_int_eq(err.index, -1);
        /* the same element third in a batch: nothing of the batch applies */
        struct eng_ix batch[4] = {ix_of(ENG_T_VIEW, 98, "b1", 0), ix_of(ENG_T_SAVE, 97, NULL, 5),
                                  ix, ix_of(ENG_T_VIEW, 96, "b3", 0)};
        ck_assert_int_eq(eng_record_batch(E, batch, 4, &err), bad_cases[i].rc);
        ck_assert_str_eq(err.msg, bad_cases[i].msg);
        ck_assert_int_eq(err.index, 2);
        ck_assert_uint_eq(eng_digest(E), before);
        verify_ok(E);
    }
    /* boundaries that are valid */
    struct eng_ix ok = ix_of(ENG_T_VIEW, UINT64_MAX, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", UINT64_MAX);
    ok.has_ts = true;
    ok.ts = ENG_TS_MAX;
    ok.has_watch = true;
    ok.watch_ms = ENG_WATCH_MAX;
    ok.ua = long_ua;
    ok.ua_len = ENG_UA_MAX;
    ix_set(&ok.ip, &ok.ip_len, "::ffff:1.2.3.4");
    rec_ok(E, &ok);
    struct eng_ix ok2 = ix_of(ENG_T_SHARE, 1, "A.b_c:d-9", 0);
    ix_set(&ok2.platform, &ok2.platform_len, "abcdefghijklmnopqrstuvwxyz012345");
    ok2.has_ts = true;
    ok2.ts = 0;
    rec_ok(E, &ok2);
    struct eng_history_rec h[1];
    ck_assert_uint_eq(eng_history_user(E, UINT64_MAX, h, 1), 1);
    ck_assert_str_eq(h[0].ip, "::ffff:1.2.3.4");
}
END_TEST

/* every byte against the documented alphabets */
/* The session id alphabet, written out plainly. */
static bool sess_char_ref(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == ':' || c == '-';
}

START_TEST(test_charsets)
{
    for (int c = 0; c < 256; c++) {
        char sid[3] = {'a', (char)c, 'b'};
        bool sess_ok = sess_char_ref((unsigned char)c);
        struct eng_ix ix = ix_of(ENG_T_SHARE, 1, NULL, 0);
        ix.session = sid;
        ix.session_len = 3;
        REQUIRE((eng_validate(E, &ix, NULL) == 0) == sess_ok);
        bool plat_ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       c == '_';
        ix.session = "s";
        ix.session_len = 1;
        ix.platform = sid;
        ix.platform_len = 3;
        REQUIRE((eng_validate(E, &ix, NULL) == 0) == plat_ok);
    }
}
END_TEST

START_TEST(test_platform_limit)
{
    char name[16];
    for (unsigned i = 0; i < 65535; i++) {
        snprintf(name, sizeof(name), "p%u", i);
        struct eng_ix ix = ix_of(ENG_T_SHARE, 1 + i % 3, "s", 0);
        ix_set(&ix.platform, &ix.platform_len, name);
        rec_ok(E, &ix);
    }
    uint64_t before = eng_digest(E);
    struct eng_ix ix = ix_of(ENG_T_SHARE, 1, "s", 0);
    ix_set(&ix.platform, &ix.platform_len, "onemore");
    struct eng_err err;
    ck_assert_int_eq(eng_record(E, &ix, &err), ENG_ELIMIT);
    ck_assert_str_eq(err.msg, "platform: too many distinct platforms");
    ck_assert_int_eq(eng_validate(E, &ix, &err), ENG_ELIMIT);
    struct eng_ix b[2] = {ix_of(ENG_T_VIEW, 5, "t", 0), ix};
    ck_assert_int_eq(eng_record_batch(E, b, 2, &err), ENG_ELIMIT);
    ck_assert_int_eq(err.index, 1);
    ck_assert_uint_eq(eng_digest(E), before);
    /* known platforms still work */
    ix_set(&ix.platform, &ix.platform_len, "p7");
    rec_ok(E, &ix);
}
END_TEST

START_TEST(test_batch)
{
    struct eng_ix b[6] = {
        ix_of(ENG_T_IMPRESSION, 1, "bs", 0), ix_of(ENG_T_VIEW, 1, "bs", 0),
        ix_of(ENG_T_SAVE, 1, "bs", 0),       ix_of(ENG_T_SAVE, 1, "bs", 0),
        ix_of(ENG_T_VIEW, 2, NULL, 8),       ix_of(ENG_T_VIEW, 2, "bs", 8),
    };
    ix_set(&b[1].ua, &b[1].ua_len, "u1");
    struct eng_err err;
    ck_assert_int_eq(eng_record_batch(E, b, 6, &err), 0);
    ck_assert_int_eq(eng_record_batch(E, b, 0, &err), 0);
    struct eng_stats st;
    eng_stats(E, 1, &st);
    ck_assert_uint_eq(st.view_count, 2);
    ck_assert_uint_eq(st.unique_viewers, 1);
    ck_assert_uint_eq(st.saves, 1);
    eng_stats(E, 2, &st);
    ck_assert_uint_eq(st.unique_viewers, 1);
    struct eng_history_rec h[8];
    ck_assert_uint_eq(eng_history_session(E, "bs", 2, h, 8), 5);
    ck_assert_uint_eq(h[0].short_id, 2);
    ck_assert_uint_eq(h[0].user, 8);
    ck_assert_uint_eq(h[4].short_id, 1);
    ck_assert_int_eq(h[4].type, ENG_T_IMPRESSION);
    ck_assert_uint_eq(eng_history_user(E, 8, h, 8), 2);
    struct eng_walk_counts wc;
    eng_walk_counts(E, &wc);
    /* contexts: (bs), (bs,u1), (8), (bs,8) */
    ck_assert_uint_eq(wc.ctxs, 4);
    /* a big batch into a small ring */
    eng_destroy(E);
    E = mk_eng(&clk, 3, 0);
    struct eng_ix many[100];
    for (int i = 0; i < 100; i++)
        many[i] = ix_of(ENG_T_IMPRESSION, (uint64_t)i + 1, "r", 0);
    ck_assert_int_eq(eng_record_batch(E, many, 100, &err), 0);
    ck_assert_uint_eq(eng_history_session(E, "r", 1, h, 8), 3);
    ck_assert_uint_eq(h[0].short_id, 100);
    ck_assert_uint_eq(h[2].short_id, 98);
}
END_TEST

/* ---- ENOMEM: every allocation of a call can fail; then nothing changed --- */

typedef int (*op_fn)(struct eng *e);

static int op_new_everything(struct eng *e)
{
    struct eng_ix ix = ix_of(ENG_T_SHARE, 1000, "brand-new", 31337);
    ix_set(&ix.platform, &ix.platform_len, "newplat");
    ix_set(&ix.ua, &ix.ua_len, "new agent");
    ix_set(&ix.ip, &ix.ip_len, "::1");
    return eng_record(e, &ix, NULL);
}

static int op_existing_growth(struct eng *e)
{
    struct eng_ix ix = ix_of(ENG_T_VIEW, 1, "s3", 0);
    ix_set(&ix.ua, &ix.ua_len, "another agent");
    return eng_record(e, &ix, NULL);
}

static int op_batch(struct eng *e)
{
    struct eng_ix b[40];
    char s[40][8];
    for (int i = 0; i < 40; i++) {
        snprintf(s[i], sizeof(s[i]), "x%d", i % 9);
        b[i] = ix_of(i % ENG_T_COUNT, (uint64_t)(i % 13) + 1, s[i], (uint64_t)(i % 4));
        if (b[i].type == ENG_T_SHARE)
            ix_set(&b[i].platform, &b[i].platform_len, i % 3 ? "pa" : "pb");
        ix_set(&b[i].ua, &b[i].ua_len, i % 5 ? "ua1" : "ua2");
    }
    return eng_record_batch(e, b, 40, NULL);
}

static int op_save(struct eng *e)
{
    struct eng_ix ix = ix_of(ENG_T_SAVE, 2, NULL, 555);
    return eng_record(e, &ix, NULL);
}

static int op_boost(struct eng *e)
{
    return eng_set_boost(e, 4242, 7, NULL);
}

static int op_top(struct eng *e)
{
    struct eng_top_item t[3];
    int n = eng_top(e, ENG_M_AVG_WATCH_MS, 3, t, NULL);
    return n < 0 ? n : 0;
}

/* Each allocation fails in turn, alone and then with every one after it
 * (memory that stays short: an undo that allocated would fail too). */
static void enomem_case(op_fn op, bool allocates)
{
    for (int lasting = 0; lasting < 2; lasting++) {
        for (uint64_t nth = 1;; nth++) {
            struct eng *e = mk_eng(&clk, 4, 0);
            seed_state(e);
            uint64_t before = eng_digest(e);
            if (lasting)
                eng_test_fail_allocs_from(e, nth);
            else
                eng_test_fail_alloc(e, nth);
            int rc = op(e);
            eng_test_fail_alloc(e, 0);
            verify_ok(e);
            if (rc == ENG_OK) {
                eng_destroy(e);
                ck_assert(!allocates || nth > 1);  /* the op did allocate */
                break;
            }
            ck_assert_int_eq(rc, ENG_ENOMEM);
            ck_assert_uint_eq(eng_digest(e), before);
            eng_destroy(e);
            ck_assert_uint_lt(nth, 1000);
        }
    }
}

START_TEST(test_enomem)
{
    enomem_case(op_new_everything, true);
    enomem_case(op_existing_growth, true);
    enomem_case(op_batch, true);
    enomem_case(op_save, true);
    enomem_case(op_boost, false);
    enomem_case(op_top, false);  /* the digest already made its column */
    struct eng *e = mk_eng(&clk, 4, 0);
    seed_state(e);
    eng_test_fail_alloc(e, 1);
    struct eng_top_item t[3];
    struct eng_err err;
    ck_assert_int_eq(eng_top(e, ENG_M_SCORE, 3, t, &err), ENG_ENOMEM);
    ck_assert_str_eq(err.msg, "memory: out of memory");
    ck_assert_int_eq(eng_top(e, ENG_M_SCORE, 3, t, &err), 3);
    /* lasting: a retry fails as well, until the injection is turned off */
    eng_test_fail_allocs_from(e, 1);
    ck_assert_int_eq(op_new_everything(e), ENG_ENOMEM);
    ck_assert_int_eq(op_new_everything(e), ENG_ENOMEM);
    eng_test_fail_alloc(e, 0);
    ck_assert_int_eq(op_new_everything(e), ENG_OK);
    verify_ok(e);
    eng_destroy(e);
}
END_TEST

/* A platform list that fails to grow at any of its allocations, then is
 * retried on the same engine: the retry must grow what the failure did
 * not (eng_stats fills a list as long as the short's). */
START_TEST(test_enomem_retry_platforms)
{
    int refused = 0;  /* the ninth must allocate, so some nth fails it */
    for (uint64_t nth = 1; nth <= 4; nth++) {
        struct eng *e = mk_eng(&clk, 4, 0);
        struct eng_err err;
        char name[16];
        for (int i = 0; i < 9; i++) {
            snprintf(name, sizeof name, "p%d", i);
            struct eng_ix ix = ix_of(ENG_T_SHARE, 1, NULL, 7);
            ix.platform = name;
            ix.platform_len = strlen(name);
            if (i == 8) {  /* the ninth outgrows the 8 slots the first eight made */
                eng_test_fail_alloc(e, nth);
                int rc = eng_record(e, &ix, &err);
                eng_test_fail_alloc(e, 0);
                ck_assert_msg(rc == ENG_ENOMEM || rc == ENG_OK, "nth %llu: rc %d",
                              (unsigned long long)nth, rc);
                refused += rc == ENG_ENOMEM;
                verify_ok(e);
                if (rc == ENG_OK)
                    continue;
            }
            ck_assert_int_eq(eng_record(e, &ix, &err), ENG_OK);
        }
        verify_ok(e);
        struct eng_stats st;
        eng_stats(e, 1, &st);
        ck_assert_uint_eq(st.nplatforms, 9);
        ck_assert_uint_eq(st.shares, 9);
        eng_destroy(e);
    }
    ck_assert_int_ge(refused, 1);
}
END_TEST

/* A clock outside 0..ENG_TS_MAX: clamped, so a record's default ts never
 * spills into its packed type bits (an impression read back as a
 * book_viewing with a watch time). */
START_TEST(test_clock_out_of_range_clamped)
{
    static const int64_t clocks[] = {-1, INT64_MIN, ENG_TS_MAX + 1, INT64_MAX};
    for (size_t i = 0; i < 4; i++) {
        struct tclock k = {.now = clocks[i]};
        struct eng *e = mk_eng(&k, 4, 1000);
        struct eng_ix x = ix_of(ENG_T_IMPRESSION, 1, "s", 0);
        rec_ok(e, &x);
        struct eng_history_rec h[4];
        ck_assert_uint_eq(eng_history_session(e, "s", 1, h, 4), 1);
        ck_assert_int_eq(h[0].type, ENG_T_IMPRESSION);
        ck_assert(!h[0].has_watch);
        ck_assert_int_eq(h[0].ts, clocks[i] < 0 ? 0 : ENG_TS_MAX);
        verify_ok(e);
        eng_destroy(e);
    }
}
END_TEST

/* eng_reserve's promise, which EXEC's BOOSTs after a TRACK batch rely on:
 * shorts created within the room need no allocation. */
START_TEST(test_reserve)
{
    struct eng *e = mk_eng(&clk, 4, 1000);
    struct eng_err err;
    ck_assert_int_eq(eng_reserve(e, ENG_SHORTS_MAX + 1, &err), ENG_ELIMIT);
    ck_assert_str_eq(err.msg, "shorts: more than 1610612736");
    eng_test_fail_alloc(e, 1);
    ck_assert_int_eq(eng_set_boost(e, 1, 5, &err), ENG_ENOMEM);  /* no room yet */
    eng_test_fail_alloc(e, 1);
    ck_assert_int_eq(eng_reserve(e, 10000, &err), ENG_ENOMEM);
    ck_assert_str_eq(err.msg, "memory: out of memory");
    eng_test_fail_alloc(e, 0);
    ck_assert_int_eq(eng_reserve(e, 10000, &err), ENG_OK);
    struct eng_ix ixs[3000];
    for (int i = 0; i < 3000; i++)
        ixs[i] = ix_of(ENG_T_IMPRESSION, 100 + (uint64_t)i, NULL, 1);
    ck_assert_int_eq(eng_record_batch(e, ixs, 3000, &err), ENG_OK);
    ck_assert(eng_short_known(e, 100) && eng_short_known(e, 3099));
    ck_assert(!eng_short_known(e, 3100) && !eng_short_known(e, 0));
    eng_test_fail_alloc(e, 1);  /* the next allocation would fail */
    uint64_t allocs = eng_test_allocs(e);
    for (uint64_t id = 10000; id < 17000; id++)  /* past what 3000 shorts had grown to */
        REQUIRE(eng_set_boost(e, id, 7, &err) == ENG_OK);
    ck_assert_uint_eq(eng_test_allocs(e), allocs);  /* none was needed */
    eng_test_fail_alloc(e, 0);
    struct eng_info in;
    eng_info(e, &in);
    ck_assert_uint_eq(in.shorts, 10000);
    verify_ok(e);
    eng_destroy(e);
}
END_TEST

/* A wall clock stepped back (an NTP correction) neither revives a session
 * already idle past the TTL nor stamps a record before the newest one: the
 * engine's time stands still until the clock catches up. */
START_TEST(test_clock_steps_back)
{
    struct tclock k = {.now = 1000000};
    struct eng *e = mk_eng(&k, 4, 1000);
    struct eng_ix a = ix_of(ENG_T_VIEW, 1, "a", 0);
    rec_ok(e, &a);
    struct eng_history_rec h[4];
    k.now += 1001;                /* a query sees "a" gone ... */
    ck_assert_uint_eq(eng_history_session(e, "a", 1, h, 4), 0);
    k.now -= 5000;                /* ... and so does every later one */
    ck_assert_uint_eq(eng_history_session(e, "a", 1, h, 4), 0);
    struct eng_walk_counts wc;
    eng_walk_counts(e, &wc);
    ck_assert_uint_eq(wc.sessions, 0);
    struct eng_ix b = ix_of(ENG_T_IMPRESSION, 1, "b", 0);
    rec_ok(e, &b);                /* stamped with the engine's time, not the clock's */
    rec_ok(e, &b);
    ck_assert_uint_eq(eng_history_session(e, "b", 1, h, 4), 2);
    ck_assert_int_eq(h[0].ts, 1001001);
    ck_assert_int_eq(h[1].ts, 1001001);
    rec_ok(e, &a);                /* "a" starts afresh: its old ring is gone */
    ck_assert_uint_eq(eng_history_session(e, "a", 1, h, 4), 1);
    struct eng_info in;
    eng_info(e, &in);
    ck_assert_uint_eq(in.sessions_evicted, 1);
    k.now = 1001001 + 1000;       /* the clock catches up: "b" idles exactly the TTL */
    ck_assert_uint_eq(eng_history_session(e, "b", 1, h, 4), 2);
    k.now += 1;
    ck_assert_uint_eq(eng_history_session(e, "b", 1, h, 4), 0);
    verify_ok(e);
    /* a restart starts from the clock: a snapshot's last_seen, perhaps
     * written under a clock far ahead, must not freeze the engine's time */
    struct eng_ix u = ix_of(ENG_T_IMPRESSION, 1, NULL, 9);
    rec_ok(e, &u);
    k.now -= 700;
    struct eng *r = clone_eng(e, &k, 4, 1000);
    eng_destroy(e);
    rec_ok(r, &u);
    ck_assert_uint_eq(eng_history_user(r, 9, h, 4), 2);
    ck_assert_int_eq(h[0].ts, 1001302);
    ck_assert_int_eq(h[1].ts, 1002002);
    eng_destroy(r);
}
END_TEST

/* Sessions evicted by recording (two slots an interaction) out of an index
 * whose growth is still under way can empty its old table before the next
 * migration frees it; eng_verify must take that as consistent. */
START_TEST(test_verify_after_record_eviction)
{
    struct tclock k = {.now = 1000000};
    struct eng *e = mk_eng(&k, 4, 1000);
    char s[16];
    for (int i = 0; i < 49; i++) {  /* the 49th outgrows the 64-slot index */
        snprintf(s, sizeof s, "s%d", i);
        struct eng_ix x = ix_of(ENG_T_IMPRESSION, 1, s, 0);
        rec_ok(e, &x);
    }
    verify_ok(e);
    k.now += 5000;
    struct eng_ix u = ix_of(ENG_T_IMPRESSION, 1, NULL, 7);
    for (int i = 0; i < 30; i++) {
        rec_ok(e, &u);
        verify_ok(e);
    }
    struct eng_info in;
    eng_info(e, &in);
    ck_assert_uint_eq(in.sessions_evicted, 49);
    eng_destroy(e);
}
END_TEST

/* ---- walk -> restore round trip ----------------------------------------- */

START_TEST(test_restore_roundtrip)
{
    eng_destroy(E);
    E = mk_eng(&clk, 6, 10000);
    seed_state(E);
    for (int i = 0; i < 300; i++) {
        char s[8];
        snprintf(s, sizeof(s), "r%d", i % 17);
        struct eng_ix ix = ix_of(i % ENG_T_COUNT, (uint64_t)(i % 23) + 1, i % 5 ? s : NULL,
                                 (uint64_t)(i % 6));
        if (!ix.session && !ix.user)
            ix.user = 1;
        if (ix.type == ENG_T_SHARE && i % 2)
            ix_set(&ix.platform, &ix.platform_len, "pp");
        if (ix.type == ENG_T_VIEW) {
            ix.has_watch = true;
            ix.watch_ms = i * 3;
        }
        ix_set(&ix.ip, &ix.ip_len, i % 3 ? "10.1.1.1" : "fe80::2");
        rec_ok(E, &ix);
        if (i == 150)
            clk.now += 20000;  /* everything so far expires */
    }
    eng_set_boost(E, 3, 55, NULL);
    /* some sessions expired but unswept: skipped by the walk */
    clk.now += 9000;
    struct eng_ix late = ix_of(ENG_T_VIEW, 2, "late", 0);
    rec_ok(E, &late);
    clk.now += 2000;
    struct eng_ix later = ix_of(ENG_T_VIEW, 2, "later", 0);
    rec_ok(E, &later);

    struct eng *R = clone_eng(E, &clk, 6, 10000);
    /* E still holds the expired sessions the walk skipped; once both have
     * swept, they agree on everything */
    eng_tick(E, UINT32_MAX);
    eng_tick(R, UINT32_MAX);
    ck_assert_uint_eq(eng_digest(R), eng_digest(E));
    /* the same future on both gives the same answers */
    for (int i = 0; i < 200; i++) {
        char s[8];
        snprintf(s, sizeof(s), "r%d", i % 19);
        struct eng_ix ix = ix_of(i % ENG_T_COUNT, (uint64_t)(i % 29) + 1, s, (uint64_t)(i % 4));
        ix_set(&ix.ip, &ix.ip_len, "10.1.1.1");
        rec_ok(E, &ix);
        rec_ok(R, &ix);
        if (i % 50 == 0)
            clk.now += 3000;
    }
    eng_tick(E, UINT32_MAX);
    eng_tick(R, UINT32_MAX);
    ck_assert_uint_eq(eng_digest(R), eng_digest(E));
    verify_ok(R);

    /* restart with a shorter history keeps the newest records */
    struct eng *S = clone_eng(E, &clk, 2, 10000);
    struct eng_history_rec a[8], b[8];
    size_t na = eng_history_user(E, 2, a, 8), nb = eng_history_user(S, 2, b, 8);
    ck_assert_uint_eq(nb, na < 2 ? na : 2);
    for (size_t i = 0; i < nb; i++)
        ck_assert_uint_eq(a[i].short_id, b[i].short_id);
    verify_ok(S);
    eng_destroy(S);
    eng_destroy(R);
}
END_TEST

/* Each of the restore calls' own refusals, on a fresh engine with two
 * platforms (1 "wa", 2 "tg") and one user agent (id 3): case i is driven
 * to its refusal and must give want[i]; after it the engine takes no
 * other restore call ("destroy this engine"). */
static int restore_case(struct eng *e, int i, struct eng_err *err)
{
    struct eng_platform_view p1 = {1, "wa", 2}, p2 = {2, "tg", 2};
    struct eng_ua_view ua = {3, "ua/1", 4};
    if (i < 3) {  /* the platforms themselves */
        /* stored names are lower case: recording folds WhatsApp to whatsapp */
        static const struct eng_platform_view bad[] = {{2, "x", 1}, {1, "WhatsApp", 8}, {1, "", 0}};
        return eng_restore_platform(e, &bad[i], err);
    }
    if (eng_restore_platform(e, &p1, err) || eng_restore_platform(e, &p2, err))
        return -100;
    if (i < 7) {
        static const struct eng_ua_view bad[] = {{0, "a", 1}, {4, "", 0}, {3, "ua/1", 4}, {5, "ua/1", 4}};
        if (i >= 5 && eng_restore_ua(e, &ua, err))
            return -100;
        return eng_restore_ua(e, &bad[i - 3], err);
    }
    if (eng_restore_ua(e, &ua, err))
        return -100;
    if (i < 12) {
        struct eng_ctx_view bad[] = {
            {.id = 0, .user = 1},
            {.id = 1, .session = "a/b", .session_len = 3},
            {.id = 1},
            {.id = 1, .user = 1, .ip_family = 5},
            {.id = 1, .user = 1, .ua_id = 9},
        };
        return eng_restore_ctx(e, &bad[i - 7], err);
    }
    struct eng_short_view sv = {.short_id = 7};
    uint32_t pid[2] = {1, 1};
    uint64_t psh[2] = {1, 1};
    sv.count[ENG_T_SHARE] = 1;
    switch (i) {
    case 12: sv.short_id = 0; break;
    case 13: sv.boost = 101; break;
    case 14: sv.last_ts = -1; break;
    case 15: sv.watch_n = 1; break;
    case 16: pid[0] = 3; sv.plat_ids = pid; sv.plat_shares = psh; sv.nplat = 1; break;
    case 17: sv.plat_ids = pid; sv.plat_shares = psh; sv.nplat = 2; break;
    case 18: psh[0] = 0; sv.plat_ids = pid; sv.plat_shares = psh; sv.nplat = 1; break;
    case 19: pid[1] = 2; sv.plat_ids = pid; sv.plat_shares = psh; sv.nplat = 2; break;
    case 20:  /* 2^63 + 2^63 wraps to 0: still more than 2^63 shares */
        pid[1] = 2; psh[0] = psh[1] = (uint64_t)1 << 63; sv.count[ENG_T_SHARE] = (uint64_t)1 << 63;
        sv.plat_ids = pid; sv.plat_shares = psh; sv.nplat = 2; break;
    case 21: sv.watch_sum = 5; break;  /* watch time with no watched view */
    case 22: sv.count[ENG_T_VIEW] = sv.watch_n = 1; sv.watch_sum = ENG_WATCH_MAX + 1ull; break;
    case 23: sv.count[ENG_T_IMPRESSION] = UINT64_MAX; sv.count[ENG_T_VIEW] = 1; break;
    case 24:  /* one ms over two views' bound: a floored average would pass it */
        sv.count[ENG_T_VIEW] = sv.watch_n = 2; sv.watch_sum = 2ull * ENG_WATCH_MAX + 1; break;
    default: return -100;
    }
    return eng_restore_short(e, &sv, NULL, 0, NULL, 0, err);
}

START_TEST(test_restore_each_refusal)
{
    static const char *const want[] = {
        "platform 2: ids must run 1, 2, 3, ...", "platform 1: bad name", "platform 1: bad name",
        "ua 0: bad id", "ua 4: length must be 1..512", "ua 3: duplicate id",
        "ua 5: duplicate string", "context 0: bad id", "context 1: bad session",
        "context 1: needs a session or a user", "context 1: ip family must be 0, 4 or 6",
        "context 1: unknown ua id", "short 0: id must be at least 1", "short 7: boost must be 0..100",
        "short 7: last_ts out of range", "short 7: more watched views than views",
        "short 7: unknown platform id", "short 7: platform listed twice",
        "short 7: platform with no shares", "short 7: platform shares exceed shares",
        "short 7: platform shares exceed shares", "short 7: watch time past watch_ms's bound",
        "short 7: watch time past watch_ms's bound", "short 7: impressions and views past 2^64",
        "short 7: watch time past watch_ms's bound",
    };
    for (int i = 0; i < (int)(sizeof want / sizeof want[0]); i++) {
        struct tclock k = {.now = 1700000000000};
        struct eng *e = mk_eng(&k, 0, 0);
        struct eng_err err = {0};
        int rc = restore_case(e, i, &err);
        ck_assert_msg(rc == ENG_EINVAL, "case %d: rc %d (%s)", i, rc, err.msg);
        ck_assert_msg(strcmp(err.msg, want[i]) == 0, "case %d: '%s', want '%s'", i, err.msg,
                      want[i]);
        struct eng_platform_view p = {1, "x", 1};
        ck_assert_int_eq(eng_restore_platform(e, &p, &err), ENG_EINVAL);
        ck_assert_str_eq(err.msg, "engine: a restore failed; destroy this engine");
        eng_destroy(e);
    }
}
END_TEST

START_TEST(test_restore_rejects)
{
    seed_state(E);
    struct eng_err err;
    /* not fresh */
    struct eng_platform_view pv = {1, "abc", 3};
    ck_assert_int_eq(eng_restore_platform(E, &pv, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "restore: the engine is not fresh");
    struct eng_ix ix = ix_of(ENG_T_VIEW, 1, "s", 0);
    ck_assert_int_eq(eng_record(E, &ix, &err), ENG_EINVAL);
    eng_destroy(E);

    E = mk_eng(&clk, 0, 0);
    ck_assert_int_eq(eng_restore_platform(E, &pv, &err), 0);
    struct eng_platform_view dup = {2, "abc", 3};
    ck_assert_int_eq(eng_restore_platform(E, &dup, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "platform 2: duplicate name");
    eng_destroy(E);

    E = mk_eng(&clk, 0, 0);
    struct eng_ua_view uv = {3, "ua", 2};
    ck_assert_int_eq(eng_restore_ua(E, &uv, &err), 0);
    ck_assert_int_eq(eng_restore_platform(E, &pv, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "restore: out of order (platforms, uas, contexts, shorts, rings, finish)");
    eng_destroy(E);

    /* an unreferenced context is refused at finish */
    E = mk_eng(&clk, 0, 0);
    struct eng_ctx_view cv = {.id = 2, .user = 5};
    ck_assert_int_eq(eng_restore_ctx(E, &cv, &err), 0);
    ck_assert_int_eq(eng_restore_ctx(E, &cv, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "context 2: duplicate id");
    eng_destroy(E);

    E = mk_eng(&clk, 0, 0);
    ck_assert_int_eq(eng_restore_ctx(E, &cv, &err), 0);
    struct eng_totals t = {0};
    ck_assert_int_eq(eng_restore_finish(E, &t, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "context 2: not used by any record");
    eng_destroy(E);

    /* short checks */
    E = mk_eng(&clk, 0, 0);
    struct eng_short_view sv = {.short_id = 9};
    sv.count[ENG_T_IMPRESSION] = 1;
    uint64_t vw[2] = {77, 77};
    ck_assert_int_eq(eng_restore_short(E, &sv, vw, 2, NULL, 0, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "short 9: more viewers than impressions and views");
    eng_destroy(E);
    E = mk_eng(&clk, 0, 0);
    sv.count[ENG_T_IMPRESSION] = 2;
    ck_assert_int_eq(eng_restore_short(E, &sv, vw, 2, NULL, 0, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "short 9: zero or duplicate viewer");
    eng_destroy(E);
    E = mk_eng(&clk, 0, 0);
    sv.count[ENG_T_SAVE] = 1;
    ck_assert_int_eq(eng_restore_short(E, &sv, vw, 1, NULL, 0, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "short 9: saves differ from its savers");
    eng_destroy(E);
    E = mk_eng(&clk, 0, 0);
    uint64_t zero = 0;
    ck_assert_int_eq(eng_restore_short(E, &sv, vw, 1, &zero, 1, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "short 9: zero or duplicate saver");
    eng_destroy(E);
    E = mk_eng(&clk, 0, 0);  /* a platform list longer than the platforms restored */
    ck_assert_int_eq(eng_restore_platform(E, &pv, &err), 0);
    uint32_t pids[2] = {1, 1};
    uint64_t pshares[2] = {1, 1};
    struct eng_short_view sp = {.short_id = 9, .plat_ids = pids, .plat_shares = pshares, .nplat = 2};
    sp.count[ENG_T_SHARE] = 2;
    ck_assert_int_eq(eng_restore_short(E, &sp, NULL, 0, NULL, 0, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "short 9: more platforms than exist");
    eng_destroy(E);
    /* a user agent no context uses is refused at finish */
    E = mk_eng(&clk, 0, 0);
    struct eng_ua_view lone = {1, "ua", 2};
    ck_assert_int_eq(eng_restore_ua(E, &lone, &err), 0);
    struct eng_totals t0 = {0};
    ck_assert_int_eq(eng_restore_finish(E, &t0, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "ua 1: not used by any context");
    eng_destroy(E);

    /* ring referencing an unknown short, and a good minimal restore */
    E = mk_eng(&clk, 0, 0);
    struct eng_ctx_view c1 = {.id = 1, .session = "s", .session_len = 1};
    ck_assert_int_eq(eng_restore_ctx(E, &c1, &err), 0);
    struct eng_short_view s1 = {.short_id = 4};
    s1.count[ENG_T_VIEW] = 1;
    uint64_t one = 1234;
    ck_assert_int_eq(eng_restore_short(E, &s1, &one, 1, NULL, 0, &err), 0);
    struct eng_ring_view rv = {.session = "s", .session_len = 1, .last_seen_ms = clk.now, .nrecs = 1};
    struct eng_rec_view rec = {.ts = 5, .short_id = 5, .ctx_id = 1, .type = ENG_T_VIEW};
    ck_assert_int_eq(eng_restore_ring(E, &rv, &rec, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "session s: record of an unknown short");
    eng_destroy(E);
    E = mk_eng(&clk, 0, 0);
    ck_assert_int_eq(eng_restore_ctx(E, &c1, &err), 0);
    ck_assert_int_eq(eng_restore_short(E, &s1, &one, 1, NULL, 0, &err), 0);
    rec.short_id = 4;
    rec.ctx_id = 0;
    ck_assert_int_eq(eng_restore_ring(E, &rv, &rec, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "session s: session record without a context");
    eng_destroy(E);
    E = mk_eng(&clk, 0, 0);
    ck_assert_int_eq(eng_restore_ctx(E, &c1, &err), 0);
    ck_assert_int_eq(eng_restore_short(E, &s1, &one, 1, NULL, 0, &err), 0);
    struct eng_ring_view empty = rv;
    empty.nrecs = 0;
    ck_assert_int_eq(eng_restore_ring(E, &empty, &rec, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "session s: with no records");
    eng_destroy(E);
    /* an id that is not one is not printed */
    E = mk_eng(&clk, 0, 0);
    struct eng_ring_view badid = rv;
    badid.session = "bad id!";
    badid.session_len = 7;
    ck_assert_int_eq(eng_restore_ring(E, &badid, &rec, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "session: bad id");
    eng_destroy(E);
    /* a last_seen the TTL check could not subtract (now - INT64_MIN) */
    static const int64_t bad_seen[] = {INT64_MIN, -1, ENG_TS_MAX + 1};
    for (size_t i = 0; i < 3; i++) {
        E = mk_eng(&clk, 0, 0);
        ck_assert_int_eq(eng_restore_ctx(E, &c1, &err), 0);
        ck_assert_int_eq(eng_restore_short(E, &s1, &one, 1, NULL, 0, &err), 0);
        struct eng_ring_view seen = rv;
        seen.last_seen_ms = bad_seen[i];
        struct eng_rec_view good = rec;
        good.ctx_id = 1;
        ck_assert_int_eq(eng_restore_ring(E, &seen, &good, &err), ENG_EINVAL);
        ck_assert_str_eq(err.msg, "session s: last_seen out of range");
        eng_destroy(E);
    }
    E = mk_eng(&clk, 0, 0);
    struct eng_ring_view useen = {.is_user = true, .user = 5, .last_seen_ms = -1};
    ck_assert_int_eq(eng_restore_ring(E, &useen, NULL, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "user 5: last_seen out of range");
    eng_destroy(E);
    E = mk_eng(&clk, 0, 0);
    ck_assert_int_eq(eng_restore_ctx(E, &c1, &err), 0);
    ck_assert_int_eq(eng_restore_short(E, &s1, &one, 1, NULL, 0, &err), 0);
    rec.ctx_id = 1;
    ck_assert_int_eq(eng_restore_ring(E, &rv, &rec, &err), 0);
    t.interactions = 1;
    t.by_type[ENG_T_VIEW] = 1;
    ck_assert_int_eq(eng_restore_finish(E, &t, &err), 0);
    struct eng_history_rec h[2];
    ck_assert_uint_eq(eng_history_session(E, "s", 1, h, 2), 1);
    ck_assert_uint_eq(h[0].short_id, 4);
    struct eng_stats st;
    eng_stats(E, 4, &st);
    ck_assert_uint_eq(st.unique_viewers, 1);
}
END_TEST

/* Sparse restore ids: the slots below the id were never written, yet destroy
 * (and eng_verify in teardown) walk them; they must read as empty. */
START_TEST(test_restore_sparse_ids)
{
    struct eng_err err;
    struct eng_walk_counts k = {.uas = 1};
    ck_assert_int_eq(eng_restore_reserve(E, &k, &err), 0);
    struct eng_ua_view uv = {.id = 33, .ua = "x", .len = 1};
    ck_assert_int_eq(eng_restore_ua(E, &uv, &err), 0);
    struct eng_ua_view lower = {.id = 7, .ua = "y", .len = 1};
    ck_assert_int_eq(eng_restore_ua(E, &lower, &err), 0);
    ck_assert_int_eq(eng_restore_ua(E, &lower, &err), ENG_EINVAL);
    eng_destroy(E);
    E = mk_eng(&clk, 0, 0);
}
END_TEST

/* Records find their short by id through a plain array while rings are
 * restored when ids are dense, through the index when they are sparse:
 * both must find every short and refuse every other id, holes included. */
START_TEST(test_restore_short_lookup)
{
    struct eng_err err;
    const uint64_t sparse = (uint64_t)1 << 40;
    for (int dense = 0; dense < 2; dense++) {
        const uint64_t ids[2] = {4, dense ? 6 : sparse};
        /* 0: known; then a hole between the ids, one past the largest, far beyond */
        const uint64_t second[4] = {ids[1], 5, ids[1] + 1, sparse * 2};
        for (int k = 0; k < 4; k++) {
            eng_destroy(E);
            E = mk_eng(&clk, 0, 0);
            struct eng_ctx_view cs = {.id = 1, .session = "s", .session_len = 1};
            struct eng_ctx_view ct = {.id = 2, .session = "t", .session_len = 1};
            ck_assert_int_eq(eng_restore_ctx(E, &cs, &err), 0);
            ck_assert_int_eq(eng_restore_ctx(E, &ct, &err), 0);
            for (int i = 0; i < 2; i++) {
                struct eng_short_view sv = {.short_id = ids[i]};
                sv.count[ENG_T_SKIP] = 1;
                ck_assert_int_eq(eng_restore_short(E, &sv, NULL, 0, NULL, 0, &err), 0);
            }
            struct eng_ring_view rs = {.session = "s", .session_len = 1,
                                       .last_seen_ms = clk.now, .nrecs = 1};
            struct eng_ring_view rt = {.session = "t", .session_len = 1,
                                       .last_seen_ms = clk.now, .nrecs = 1};
            struct eng_rec_view r0 = {.ts = 5, .short_id = ids[0], .ctx_id = 1, .type = ENG_T_SKIP};
            struct eng_rec_view r1 = {.ts = 6, .short_id = second[k], .ctx_id = 2,
                                      .type = ENG_T_SKIP};
            ck_assert_int_eq(eng_restore_ring(E, &rs, &r0, &err), 0);  /* builds the map */
            /* the cache hint takes anything, known or not, through the map */
            struct eng_rec_view odd[2] = {{.short_id = second[k], .ctx_id = 77},
                                          {.short_id = 0, .ctx_id = UINT32_MAX}};
            struct eng_ring_view ov = rt;
            ov.nrecs = 2;
            eng_restore_ring_prefetch(E, &ov, odd);
            ov.nrecs = 0;
            eng_restore_ring_prefetch(E, &ov, NULL);
            if (k) {
                ck_assert_int_eq(eng_restore_ring(E, &rt, &r1, &err), ENG_EINVAL);
                ck_assert_str_eq(err.msg, "session t: record of an unknown short");
                continue;
            }
            ck_assert_int_eq(eng_restore_ring(E, &rt, &r1, &err), 0);
            struct eng_totals t = {.interactions = 2, .by_type[ENG_T_SKIP] = 2};
            ck_assert_int_eq(eng_restore_finish(E, &t, &err), 0);
            struct eng_history_rec h[1];
            ck_assert_uint_eq(eng_history_session(E, "s", 1, h, 1), 1);
            ck_assert_uint_eq(h[0].short_id, ids[0]);
            ck_assert_uint_eq(eng_history_session(E, "t", 1, h, 1), 1);
            ck_assert_uint_eq(h[0].short_id, ids[1]);
        }
    }
    eng_destroy(E);
    E = mk_eng(&clk, 0, 0);
}
END_TEST

/* Shorts created by id first, rings restored with their contexts, then
 * the shorts filled in, in creation order, each exactly once. */
START_TEST(test_restore_short_ids)
{
    struct eng_err err;
    const uint64_t ids[2] = {8, 3};
    struct eng_ctx_view c1 = {.id = 1, .session = "s", .session_len = 1};
    struct eng_ring_view rv = {.session = "s", .session_len = 1, .last_seen_ms = clk.now, .nrecs = 1};
    struct eng_rec_view rec = {.ts = 5, .short_id = 3, .ctx_id = 1, .type = ENG_T_VIEW};
    struct eng_short_view sv[2] = {{.short_id = 8}, {.short_id = 3}};
    sv[1].count[ENG_T_VIEW] = 1;
    uint64_t fp = 99;
    struct eng_totals t = {.interactions = 1, .by_type[ENG_T_VIEW] = 1};

    ck_assert_int_eq(eng_restore_short_ids(E, ids, 2, &err), 0);
    ck_assert_int_eq(eng_restore_ctx(E, &c1, &err), 0);
    ck_assert_int_eq(eng_restore_ring(E, &rv, &rec, &err), 0);
    ck_assert_int_eq(eng_restore_short(E, &sv[0], NULL, 0, NULL, 0, &err), 0);
    ck_assert_int_eq(eng_restore_short(E, &sv[1], &fp, 1, NULL, 0, &err), 0);
    ck_assert_int_eq(eng_restore_finish(E, &t, &err), 0);
    struct eng_stats st;
    eng_stats(E, 3, &st);
    ck_assert_uint_eq(st.views, 1);
    ck_assert_uint_eq(st.unique_viewers, 1);
    struct eng_history_rec h[1];
    ck_assert_uint_eq(eng_history_session(E, "s", 1, h, 1), 1);
    ck_assert_uint_eq(h[0].short_id, 3);
    struct eng_top_item top[2];
    ck_assert_int_eq(eng_top(E, ENG_M_VIEWS, 2, top, &err), 2);
    ck_assert_uint_eq(top[0].short_id, 3);
    verify_ok(E);

    /* totals whose types do not add up */
    eng_destroy(E);
    E = mk_eng(&clk, 0, 0);
    struct eng_totals odd = {.interactions = 2, .by_type[ENG_T_VIEW] = 1};
    ck_assert_int_eq(eng_restore_finish(E, &odd, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "totals: by-type counts add up to 1, not 2");

    /* refusals: each leaves the engine broken */
    const uint64_t zero[1] = {0}, dup[2] = {4, 4};
    struct { const uint64_t *ids; size_t n; const char *msg; } bad[] = {
        {zero, 1, "short 0: id must be at least 1"},
        {dup, 2, "short 4: duplicate id"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        eng_destroy(E);
        E = mk_eng(&clk, 0, 0);
        ck_assert_int_eq(eng_restore_short_ids(E, bad[i].ids, bad[i].n, &err), ENG_EINVAL);
        ck_assert_str_eq(err.msg, bad[i].msg);
    }
    /* more shorts than an engine can hold, refused before a byte is read
     * or reserved: by the ids and by the counts */
    eng_destroy(E);
    E = mk_eng(&clk, 0, 0);
    ck_assert_int_eq(eng_restore_short_ids(E, zero, ENG_SHORTS_MAX + 1, &err), ENG_ELIMIT);
    ck_assert_str_eq(err.msg, "short ids: 1610612737, more than the engine holds (1610612736)");
    eng_destroy(E);
    E = mk_eng(&clk, 0, 0);
    struct eng_walk_counts many = {.shorts = ENG_SHORTS_MAX + 1};
    ck_assert_int_eq(eng_restore_reserve(E, &many, &err), ENG_ELIMIT);
    ck_assert_str_eq(err.msg, "counts: beyond the engine's limits");
    eng_destroy(E);
    E = mk_eng(&clk, 0, 0);
    ck_assert_int_eq(eng_restore_short_ids(E, ids, 2, &err), 0);
    ck_assert_int_eq(eng_restore_short_ids(E, ids, 2, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "short ids: given twice");
    /* out of creation order, or twice */
    for (int k = 0; k < 2; k++) {
        eng_destroy(E);
        E = mk_eng(&clk, 0, 0);
        ck_assert_int_eq(eng_restore_short_ids(E, ids, 2, &err), 0);
        if (k)
            ck_assert_int_eq(eng_restore_short(E, &sv[0], NULL, 0, NULL, 0, &err), 0);
        ck_assert_int_eq(eng_restore_short(E, &sv[k ? 0 : 1], NULL, 0, NULL, 0, &err), ENG_EINVAL);
        ck_assert_str_eq(err.msg, k ? "short 8: not the next of eng_restore_short_ids"
                                    : "short 3: not the next of eng_restore_short_ids");
    }
    /* a short left without its data; a ring after the shorts' data */
    eng_destroy(E);
    E = mk_eng(&clk, 0, 0);
    ck_assert_int_eq(eng_restore_short_ids(E, ids, 2, &err), 0);
    ck_assert_int_eq(eng_restore_ctx(E, &c1, &err), 0);
    ck_assert_int_eq(eng_restore_ring(E, &rv, &rec, &err), 0);
    ck_assert_int_eq(eng_restore_short(E, &sv[0], NULL, 0, NULL, 0, &err), 0);
    ck_assert_int_eq(eng_restore_finish(E, &t, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "short 3: restored without its data");
    eng_destroy(E);
    E = mk_eng(&clk, 0, 0);
    ck_assert_int_eq(eng_restore_short_ids(E, ids, 2, &err), 0);
    ck_assert_int_eq(eng_restore_ctx(E, &c1, &err), 0);
    ck_assert_int_eq(eng_restore_short(E, &sv[0], NULL, 0, NULL, 0, &err), 0);
    ck_assert_int_eq(eng_restore_ring(E, &rv, &rec, &err), ENG_EINVAL);
    ck_assert_str_eq(err.msg, "restore: out of order (platforms, uas, contexts, shorts, rings, finish)");
    /* short ids after a context: out of order too */
    eng_destroy(E);
    E = mk_eng(&clk, 0, 0);
    ck_assert_int_eq(eng_restore_ctx(E, &c1, &err), 0);
    ck_assert_int_eq(eng_restore_short_ids(E, ids, 2, &err), ENG_EINVAL);
    eng_destroy(E);
    E = mk_eng(&clk, 0, 0);
}
END_TEST

/* Prefaulting is a hint: it walks every reserved table once, in steps of
 * the budget, changes nothing visible, and a restore goes on as usual. */
START_TEST(test_restore_prefault)
{
    struct eng_err err;
    uint64_t cur = 0;
    struct eng_walk_counts k = {.shorts = 5000, .sessions = 30000, .users = 3000, .ctxs = 30000};
    ck_assert_int_eq(eng_restore_reserve(E, &k, &err), 0);
    size_t total = eng_restore_prefault(E, &cur, 0);
    ck_assert_uint_eq(cur, 0);
    ck_assert_uint_gt(total, 30000u * 64);   /* the sessions alone */
    size_t left = total, calls = 0;
    while (left) {
        size_t next = eng_restore_prefault(E, &cur, 100000);
        ck_assert_uint_lt(next, left);
        ck_assert_uint_le(left - next, 100000);
        left = next;
        ck_assert_uint_lt(++calls, 10000);
    }
    ck_assert_uint_gt(calls, 1);
    ck_assert_uint_eq(eng_restore_prefault(E, &cur, 1 << 20), 0);
    struct eng_ctx_view c1 = {.id = 1, .session = "s", .session_len = 1};
    ck_assert_int_eq(eng_restore_ctx(E, &c1, &err), 0);
    ck_assert_uint_eq(eng_restore_prefault(E, &cur, 1 << 20), 0);
    struct eng_short_view sv = {.short_id = 4};
    sv.count[ENG_T_SKIP] = 1;
    ck_assert_int_eq(eng_restore_short(E, &sv, NULL, 0, NULL, 0, &err), 0);
    struct eng_ring_view rv = {.session = "s", .session_len = 1, .last_seen_ms = clk.now, .nrecs = 1};
    struct eng_rec_view rec = {.ts = 5, .short_id = 4, .ctx_id = 1, .type = ENG_T_SKIP};
    ck_assert_int_eq(eng_restore_ring(E, &rv, &rec, &err), 0);
    struct eng_totals t = {.interactions = 1, .by_type[ENG_T_SKIP] = 1};
    ck_assert_int_eq(eng_restore_finish(E, &t, &err), 0);
    struct eng_info info;
    eng_info(E, &info);
    ck_assert_uint_eq(info.sessions, 1);
    ck_assert_uint_eq(info.records, 1);
}
END_TEST

extern Suite *eng_suite(void);
/* Shorts' arrays past 1 MiB grow by remapping (at 32,768 shorts the hot
 * and cold parts both do, so a failed remap must undo an earlier one; the
 * ids, TOP columns and dirty lists are still copied); an allocation
 * failing at any point of that growth leaves the engine as it was. */
START_TEST(test_enomem_short_arrays_remap)
{
    enum { HAVE = 32768 };
    struct eng *e = mk_eng(&clk, 4, 0);
    struct eng_err err;
    for (uint64_t id = 1; id <= HAVE; id++)
        ck_assert_int_eq(eng_set_boost(e, id, id % 7, &err), 0);
    struct eng_top_item top[3];
    for (int m = 0; m < ENG_M_COUNT; m++)  /* every column and dirty list exists */
        ck_assert_int_ge(eng_top(e, (enum eng_metric)m, 3, top, &err), 0);
    for (uint64_t id = 1; id <= 500; id++)  /* dirty lists hold something */
        ck_assert_int_eq(eng_set_boost(e, id, 3, &err), 0);
    struct eng_info ib, ia;
    eng_info(e, &ib);
    /* A failed growth changes nothing, so one engine serves every attempt.
     * (eng_digest walks every short: seconds each under ASan at this size;
     * the counts, the byte total, verify and spot checks stand in for it.) */
    uint64_t nth;
    for (nth = 1;; nth++) {
        eng_test_fail_alloc(e, nth);
        int rc = eng_set_boost(e, HAVE + 1, 5, &err);  /* the next short: arrays double */
        eng_test_fail_alloc(e, 0);
        if (rc == ENG_OK)
            break;
        ck_assert_int_eq(rc, ENG_ENOMEM);
        eng_info(e, &ia);
        ck_assert_uint_eq(ia.shorts, ib.shorts);
        ck_assert_uint_eq(ia.mem_total, ib.mem_total);
        verify_ok(e);
        struct eng_stats st;
        eng_stats(e, HAVE, &st);
        ck_assert_uint_eq(st.boost, HAVE % 7);
        ck_assert_uint_lt(nth, 100);
    }
    /* small arrays (ids, a column and a dirty list per metric) fail first,
     * then the hot part's remap, then the cold part's, which undoes it */
    ck_assert_uint_eq(nth, 3 + 2 * (uint64_t)ENG_M_COUNT + 1);
    verify_ok(e);
    for (int m = 0; m < ENG_M_COUNT; m++)
        ck_assert_int_eq(eng_top(e, (enum eng_metric)m, 3, top, &err), 3);
    struct eng_stats st;
    eng_stats(e, 77, &st);
    ck_assert_uint_eq(st.boost, 3);  /* moved intact */
    eng_stats(e, HAVE, &st);
    ck_assert_uint_eq(st.boost, HAVE % 7);
    eng_stats(e, HAVE + 1, &st);
    ck_assert_uint_eq(st.boost, 5);
    eng_destroy(e);
}
END_TEST

/* Every byte value at every position of ids of every length: the session
 * id check (vectorised 16 bytes at a time) agrees with the plain rule, and
 * reads nothing past the id (the byte after it is never valid). */
static bool session_valid(const struct eng *e, const char *id, size_t len)
{
    struct eng_ix ix = ix_of(ENG_T_SKIP, 1, NULL, 7);
    ix.session = id;
    ix.session_len = len;
    return eng_validate(e, &ix, NULL) == ENG_OK;
}

START_TEST(test_session_chars_every_byte)
{
    struct eng *e = mk_eng(&clk, 4, 0);
    char id[ENG_SESSION_MAX + 1];
    for (size_t len = 1; len <= ENG_SESSION_MAX; len++)
        for (size_t pos = 0; pos < len; pos++)
            for (int c = 0; c < 256; c++) {
                memset(id, pos % 2 ? 'Z' : '7', sizeof id);
                id[len] = '!';
                id[pos] = (char)c;
                if (session_valid(e, id, len) != sess_char_ref((unsigned char)c))
                    ck_abort_msg("len %zu pos %zu byte %d", len, pos, c);  /* not per check */
            }
    memset(id, 'a', sizeof id);
    ck_assert(session_valid(e, id, ENG_SESSION_MAX));
    ck_assert(!session_valid(e, id, ENG_SESSION_MAX + 1));
    ck_assert(!session_valid(e, id, 0));
    eng_destroy(e);
}
END_TEST

/* A populate hook is handed the fresh part of every mapped block (the
 * pool's spare chunks, 2 MiB each, among them) and changes no answer.
 * Without one nothing is mapped ahead, so the engine holds less; a hook
 * attached later (eng_set_populate) is used from then on. */
struct pop_clock {
    struct tclock clk;  /* first: tclock_fn reads the ud as a struct tclock */
    int calls, chunks;
    size_t bytes;
};

static void pop_seen(void *ud, void *addr, size_t len)
{
    struct pop_clock *p = ud;
    ck_assert_ptr_nonnull(addr);
    ck_assert_uint_gt(len, 0);
    p->calls++;
    p->chunks += len == ((size_t)2 << 20);
    p->bytes += len;
}

START_TEST(test_populate_hook)
{
    struct pop_clock pc = {.clk = {1700000000000}};
    struct eng_config cfg = {.history = 8, .clock = tclock_fn, .populate = pop_seen, .ud = &pc};
    struct eng *a = eng_create(&cfg);
    struct eng *b = mk_eng(&pc.clk, 8, 0);
    struct pop_clock late = {.clk = pc.clk};
    struct eng_config lcfg = {.history = 8, .clock = tclock_fn, .ud = &late};
    struct eng *c = eng_create(&lcfg);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(c);
    enum { N = 120000 };
    struct eng_ix ix[128];
    char sid[128][24];
    for (uint32_t i = 0; i < N; i += 128) {
        for (uint32_t j = 0; j < 128; j++) {
            uint32_t k = i + j;
            snprintf(sid[j], sizeof sid[j], "s%u", k % 90000);
            ix[j] = ix_of((int)(k % ENG_T_COUNT), k % 7000 + 1, sid[j], k % 3 ? 0 : k % 20000 + 1);
            if (ix[j].type == ENG_T_VIEW) {
                ix[j].has_watch = true;
                ix[j].watch_ms = k % 60000;
            }
        }
        ck_assert_int_eq(eng_record_batch(a, ix, 128, NULL), 0);
        ck_assert_int_eq(eng_record_batch(b, ix, 128, NULL), 0);
        if (i == N / 2 / 128 * 128)
            eng_set_populate(c, pop_seen);
        ck_assert_int_eq(eng_record_batch(c, ix, 128, NULL), 0);
    }
    verify_ok(a);
    verify_ok(c);
    ck_assert_uint_eq(eng_digest(a), eng_digest(b));
    ck_assert_uint_eq(eng_digest(c), eng_digest(b));
    ck_assert_int_gt(pc.calls, 0);
    ck_assert_int_gt(pc.chunks, 0);
    ck_assert_int_gt(late.calls, 0);
    struct eng_info ia, ib;
    eng_info(a, &ia);
    eng_info(b, &ib);
    ck_assert_uint_lt(ib.mem_total, ia.mem_total);  /* a maps its next chunk and tables early */
    eng_destroy(a);
    eng_destroy(b);
    eng_destroy(c);
}
END_TEST

Suite *eng_suite(void)
{
    Suite *s = suite_create("eng");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_names);
    tcase_add_test(tc, test_counts);
    tcase_add_test(tc, test_verify_catches);
    tcase_add_test(tc, test_viewer_identity);
    tcase_add_test(tc, test_saves_dedup);
    tcase_add_test(tc, test_platforms);
    tcase_add_test(tc, test_history_decode);
    tcase_add_test(tc, test_ring_overwrite);
    tcase_add_test(tc, test_context_sharing);
    tcase_add_test(tc, test_populate_hook);
    tcase_add_test(tc, test_session_chars_every_byte);
    tcase_add_test(tc, test_enomem_short_arrays_remap);
    tcase_add_test(tc, test_eviction);
    tcase_add_test(tc, test_top);
    tcase_add_test(tc, test_boost);
    tcase_add_test(tc, test_session_new);
    tcase_add_test(tc, test_bad_input);
    tcase_add_test(tc, test_charsets);
    tcase_add_test(tc, test_platform_limit);
    tcase_add_test(tc, test_batch);
    tcase_add_test(tc, test_enomem);
    tcase_add_test(tc, test_restore_roundtrip);
    tcase_add_test(tc, test_restore_rejects);
    tcase_add_test(tc, test_restore_each_refusal);
    tcase_add_test(tc, test_restore_sparse_ids);
    tcase_add_test(tc, test_restore_short_lookup);
    tcase_add_test(tc, test_restore_prefault);
    tcase_add_test(tc, test_restore_short_ids);
    tcase_add_test(tc, test_enomem_retry_platforms);
    tcase_add_test(tc, test_clock_out_of_range_clamped);
    tcase_add_test(tc, test_clock_steps_back);
    tcase_add_test(tc, test_reserve);
    tcase_add_test(tc, test_verify_after_record_eviction);
    suite_add_tcase(s, tc);
    return s;
}
