/* SPDX-License-Identifier: MIT */
/*
 * test_http.c -- net/http.c driven in-process: bytes in, bytes out, against a
 * real engine with an injected clock and PRNG so outputs are reproducible.
 *
 * Responses are split by a small reader here (status line, headers,
 * Content-Length) and their JSON bodies checked with jansson. /metrics is
 * checked by a Prometheus text-format (0.0.4) checker written for this test.
 * The split tests feed one pipelined script cut at every byte and compare the
 * output byte for byte with the unsplit run; the random-split property test
 * prints its seed (replay with HTTP_TEST_SEED=<n>).
 *
 * The TCP tests (curl and raw sockets against shortstatd) are at the end.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "engine/eng.h"
#include "engine/eng_test.h"
#include "net/http.h"
#include "tests/run_util.h"

/* ---- fixture ------------------------------------------------------------------ */

struct fx {
    struct eng *eng;
    struct http_stats stats;
    struct http_env env;
    struct http_conn conn;
    struct http_metrics m;   /* what fill_metrics reports */
    int64_t clock_ms;        /* engine wall clock */
    int64_t mono_ns;         /* http latency clock */
    int64_t tick_ns;         /* added to mono_ns per read */
    uint64_t rng;
    long allocs, fail_at;    /* realloc_fn: fail the fail_at-th allocation (0: never) */
    bool over;               /* over_memory's answer */
    uint64_t over_n;         /* writes it was asked about */
    long over_asked;         /* times it was asked */
};

static struct fx F;

static int64_t fx_clock(void *ud)
{
    return ((struct fx *)ud)->clock_ms;
}

static void fx_random(void *ud, uint8_t *out, size_t n)
{
    struct fx *f = ud;
    for (size_t i = 0; i < n; i++) {
        f->rng ^= f->rng << 13;
        f->rng ^= f->rng >> 7;
        f->rng ^= f->rng << 17;
        out[i] = (uint8_t)f->rng;
    }
}

static int64_t fx_mono(void *ud)
{
    struct fx *f = ud;
    f->mono_ns += f->tick_ns;
    return f->mono_ns;
}

static void fx_fill(void *ud, struct http_metrics *m)
{
    *m = ((struct fx *)ud)->m;
}

static void *fx_realloc(void *ud, void *p, size_t n)
{
    struct fx *f = ud;
    if (++f->allocs == f->fail_at)
        return NULL;
    return realloc(p, n);
}

static bool fx_over_memory(void *ud, uint64_t n)
{
    struct fx *f = ud;
    f->over_asked++;
    f->over_n += n;
    return f->over;
}

static void fx_open(struct fx *f, const char *peer)
{
    memset(f, 0, sizeof *f);
    f->clock_ms = 1700000000000;
    f->rng = 0x9E3779B97F4A7C15ull;
    f->tick_ns = 1000;
    struct eng_config cfg = {.history = 64, .clock = fx_clock, .random = fx_random, .ud = f};
    f->eng = eng_create(&cfg);
    ck_assert_ptr_nonnull(f->eng);
    f->env = (struct http_env){
        .eng = f->eng, .stats = &f->stats, .clock_ns = fx_mono,
        .fill_metrics = fx_fill, .realloc_fn = fx_realloc, .ud = f,
    };
    f->m.version = "test";
    ck_assert_int_eq(http_conn_init(&f->conn, &f->env, peer), HTTP_OK);
}

static void fx_close(struct fx *f)
{
    struct eng_err err;
    http_conn_free(&f->conn);
    ck_assert_uint_eq(f->stats.connections, 0);
    int rc = eng_verify(f->eng, &err);
    ck_assert_msg(rc == 0, "eng_verify: %s", err.msg);
    eng_destroy(f->eng);
}

static void setup(void)
{
    fx_open(&F, "10.1.2.3");
}

static void teardown(void)
{
    fx_close(&F);
}

/* New connection on the same engine (e.g. after a closing response). */
static void reconnect(const char *peer)
{
    http_conn_free(&F.conn);
    ck_assert_int_eq(http_conn_init(&F.conn, &F.env, peer), HTTP_OK);
}

static int feed(const char *s)
{
    return http_conn_feed(&F.conn, (const uint8_t *)s, strlen(s));
}

/* Takes all pending output as a NUL-terminated malloc'd string. */
static char *take_all(struct http_conn *c, size_t *len)
{
    const uint8_t *p;
    size_t n;
    http_conn_output(c, &p, &n);
    char *s = malloc(n + 1);
    ck_assert_ptr_nonnull(s);
    memcpy(s, p, n);
    s[n] = 0;
    http_conn_consume(c, n);
    ck_assert_uint_eq(http_conn_pending(c), 0);
    if (len)
        *len = n;
    return s;
}

/* ---- a response reader -------------------------------------------------------------- */

struct resp {
    int status;
    char head[4096];   /* status line and headers */
    char body[65536];
    size_t body_len;
};

/* Reads one response from *pp (advancing it); head_only for HEAD requests. */
static bool read_resp(const char **pp, struct resp *r, bool head_only)
{
    const char *p = *pp;
    const char *end = strstr(p, "\r\n\r\n");
    if (!end)
        return false;
    size_t hl = (size_t)(end - p) + 4;
    ck_assert_uint_lt(hl, sizeof r->head);
    memcpy(r->head, p, hl);
    r->head[hl] = 0;
    ck_assert_msg(strncmp(p, "HTTP/1.1 ", 9) == 0, "status line: %.40s", p);
    r->status = atoi(p + 9);
    r->body_len = 0;
    r->body[0] = 0;
    const char *cl = strcasestr(r->head, "\r\nContent-Length: ");
    if (cl && !head_only) {
        r->body_len = strtoul(cl + 18, NULL, 10);
        ck_assert_uint_lt(r->body_len, sizeof r->body);
        ck_assert_uint_ge(strlen(end + 4), r->body_len);
        memcpy(r->body, end + 4, r->body_len);
        r->body[r->body_len] = 0;
    }
    *pp = end + 4 + r->body_len;
    return true;
}

static bool has_header(const struct resp *r, const char *line)
{
    char pat[256];
    snprintf(pat, sizeof pat, "\r\n%s\r\n", line);
    return strstr(r->head, pat) != NULL;
}

/* One request in, exactly one response out. */
static int request(const char *req, struct resp *r)
{
    int rc = feed(req);
    char *out = take_all(&F.conn, NULL);
    const char *p = out;
    ck_assert_msg(read_resp(&p, r, strncmp(req, "HEAD ", 5) == 0), "no response to %s", req);
    ck_assert_msg(*p == 0, "more than one response: %s", out);
    free(out);
    return rc;
}

static char reqbuf[1 << 20];

static const char *post(const char *path, const char *body)
{
    snprintf(reqbuf, sizeof reqbuf,
             "POST %s HTTP/1.1\r\nHost: t\r\nUser-Agent: test-agent/1.0\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
             path, strlen(body), body);
    return reqbuf;
}

static const char *get(const char *path)
{
    snprintf(reqbuf, sizeof reqbuf, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    return reqbuf;
}

static json_t *body_json(const struct resp *r)
{
    json_error_t je;
    json_t *j = json_loadb(r->body, r->body_len, 0, &je);
    ck_assert_msg(j != NULL, "body is not JSON (%s): %s", je.text, r->body);
    return j;
}

/* Asserts a 400-style error body: exact message prefix and index (-1: none). */
static void check_error(const struct resp *r, int status, const char *prefix, int index)
{
    ck_assert_msg(r->status == status, "want %d got %d: %s", status, r->status, r->body);
    json_t *j = body_json(r);
    ck_assert(json_is_false(json_object_get(j, "ok")));
    const char *e = json_string_value(json_object_get(j, "error"));
    ck_assert_ptr_nonnull(e);
    ck_assert_msg(strncmp(e, prefix, strlen(prefix)) == 0, "error '%s' does not start '%s'", e,
                  prefix);
    json_t *ix = json_object_get(j, "index");
    if (index < 0)
        ck_assert_ptr_null(ix);
    else
        ck_assert_msg(ix && json_integer_value(ix) == index, "index: %s", r->body);
    json_decref(j);
}

/* Responses counted under one status (http_stats.responses, by http_codes). */
static uint64_t responses(int status)
{
    for (size_t i = 0; i < HTTP_NCODES; i++)
        if (http_codes[i] == status)
            return F.stats.responses[i];
    ck_abort_msg("status %d is not counted", status);
    return 0;
}

static uint64_t interactions(void)
{
    struct eng_info i;
    eng_info(F.eng, &i);
    return i.interactions;
}

static uint64_t sessions(void)
{
    struct eng_info i;
    eng_info(F.eng, &i);
    return i.sessions;
}

static int64_t jint(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    ck_assert_msg(json_is_integer(v), "%s is not an integer", k);
    return json_integer_value(v);
}

/* ---- interaction endpoint ------------------------------------------------------------- */

START_TEST(interaction_single)
{
    struct resp r;
    ck_assert_int_eq(request(post("/api/explore/interaction",
        "{\"type\":\"view\",\"shortId\":1,\"sessionId\":\"s1\",\"watchMs\":3000,"
        "\"platform\":null}"), &r), HTTP_OK);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"ok\":true,\"recorded\":1}");
    ck_assert(has_header(&r, "Content-Type: application/json"));
    ck_assert_uint_eq(interactions(), 1);

    struct eng_stats s;
    eng_stats(F.eng, 1, &s);
    ck_assert_uint_eq(s.views, 1);

    request(get("/api/explore/stats/1"), &r);
    ck_assert_int_eq(r.status, 200);
    json_t *j = body_json(&r);
    ck_assert_int_eq(jint(j, "shortId"), 1);
    ck_assert_int_eq(jint(j, "views"), 1);
    ck_assert_int_eq(jint(j, "uniqueViewers"), (int64_t)s.unique_viewers);
    ck_assert_int_eq(jint(j, "lastTs"), s.last_ts);
    /* The line protocol's format for decimals. */
    char want[64];
    snprintf(want, sizeof want, "\"avgWatchMs\":%.6f,", s.avg_watch_ms);
    ck_assert_msg(strstr(r.body, want), "%s not in %s", want, r.body);
    snprintf(want, sizeof want, "\"score\":%.6f,", s.score);
    ck_assert_msg(strstr(r.body, want), "%s not in %s", want, r.body);
    json_decref(j);
    ck_assert_uint_eq(F.stats.interactions_total, 1);
}
END_TEST

START_TEST(interaction_ip_ua_defaults)
{
    struct resp r;
    request(post("/api/explore/interaction",
                 "{\"type\":\"impression\",\"shortId\":7,\"sessionId\":\"sa\"}"), &r);
    ck_assert_int_eq(r.status, 200);
    request(post("/api/explore/interaction",
                 "{\"type\":\"impression\",\"shortId\":8,\"sessionId\":\"sa\","
                 "\"ip\":\"2001:db8::1\",\"userAgent\":\"body-agent\"}"), &r);
    ck_assert_int_eq(r.status, 200);

    request(get("/api/explore/history/session/sa"), &r);
    ck_assert_int_eq(r.status, 200);
    json_t *j = body_json(&r);
    json_t *recs = json_object_get(j, "records");
    ck_assert_uint_eq(json_array_size(recs), 2);
    json_t *newest = json_array_get(recs, 0), *oldest = json_array_get(recs, 1);
    ck_assert_int_eq(jint(newest, "shortId"), 8);
    ck_assert_str_eq(json_string_value(json_object_get(newest, "ip")), "2001:db8::1");
    ck_assert_str_eq(json_string_value(json_object_get(newest, "userAgent")), "body-agent");
    ck_assert_str_eq(json_string_value(json_object_get(oldest, "ip")), "10.1.2.3");
    ck_assert_str_eq(json_string_value(json_object_get(oldest, "userAgent")), "test-agent/1.0");
    ck_assert_str_eq(json_string_value(json_object_get(oldest, "type")), "impression");
    ck_assert_str_eq(json_string_value(json_object_get(oldest, "sessionId")), "sa");
    ck_assert_int_eq(jint(oldest, "ts"), F.clock_ms);
    ck_assert_ptr_null(json_object_get(oldest, "userId"));
    ck_assert_ptr_null(json_object_get(oldest, "watchMs"));
    json_decref(j);
}
END_TEST

static const char *xff_req(const char *xff)
{
    const char *body = "{\"type\":\"impression\",\"shortId\":1,\"sessionId\":\"x\"}";
    snprintf(reqbuf, sizeof reqbuf,
             "POST /api/explore/interaction HTTP/1.1\r\nX-Forwarded-For: %s\r\n"
             "Content-Length: %zu\r\n\r\n%s", xff, strlen(body), body);
    return reqbuf;
}

static const char *last_ip(void)
{
    static char ip[64];
    struct eng_history_rec h;
    ck_assert_uint_eq(eng_history_session(F.eng, "x", 1, &h, 1), 1);
    snprintf(ip, sizeof ip, "%s", h.ip);
    return ip;
}

START_TEST(interaction_forwarded_for)
{
    struct resp r;
    /* Not trusted: the socket's address. */
    request(xff_req("198.51.100.7"), &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(last_ip(), "10.1.2.3");

    F.env.trust_proxy = true;
    request(xff_req("203.0.113.9, 198.51.100.7"), &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(last_ip(), "198.51.100.7");   /* rightmost: appended by our proxy */
    request(xff_req(" ::1 "), &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(last_ip(), "::1");

    uint64_t before = interactions();
    request(xff_req("1.2.3.4, not-an-ip"), &r);
    check_error(&r, 400, "X-Forwarded-For: not an IP address", -1);
    request(xff_req("1.2.3.4,"), &r);
    check_error(&r, 400, "X-Forwarded-For: not an IP address", -1);
    request(xff_req(""), &r);  /* sent, but empty: not the peer's address */
    check_error(&r, 400, "X-Forwarded-For: not an IP address", -1);
    request(xff_req("  "), &r);
    check_error(&r, 400, "X-Forwarded-For: not an IP address", -1);
    ck_assert_uint_eq(interactions(), before);
    /* a later request on the connection without the header uses the peer */
    const char *body = "{\"type\":\"impression\",\"shortId\":1,\"sessionId\":\"x\"}";
    request(post("/api/explore/interaction", body), &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(last_ip(), "10.1.2.3");
}
END_TEST

START_TEST(interaction_batch)
{
    struct resp r;
    request(post("/api/explore/interaction",
                 "[{\"type\":\"view\",\"shortId\":1,\"sessionId\":\"b\",\"watchMs\":1000},"
                 " {\"type\":\"save\",\"shortId\":1,\"userId\":\"42\"},"
                 " {\"type\":\"share\",\"shortId\":2,\"userId\":42,\"platform\":\"whatsapp\"}]"), &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"ok\":true,\"recorded\":3}");
    ck_assert_uint_eq(interactions(), 3);
    ck_assert_uint_eq(F.stats.interactions_total, 3);

    request(post("/api/explore/interaction", "[]"), &r);
    ck_assert_str_eq(r.body, "{\"ok\":true,\"recorded\":0}");
    ck_assert_uint_eq(interactions(), 3);
}
END_TEST

START_TEST(interaction_batch_fails_in_middle)
{
    struct resp r;
    /* Element 2 fails the engine's check (watch on a skip); elements 0, 1, 3
     * are fine and must not be recorded either. */
    request(post("/api/explore/interaction",
                 "[{\"type\":\"view\",\"shortId\":1,\"sessionId\":\"m\",\"watchMs\":10},"
                 " {\"type\":\"impression\",\"shortId\":2,\"sessionId\":\"m\"},"
                 " {\"type\":\"view\",\"shortId\":3,\"sessionId\":\"m\",\"watchMs\":-5},"
                 " {\"type\":\"impression\",\"shortId\":4,\"sessionId\":\"m\"}]"), &r);
    check_error(&r, 400, "watchMs: ", 2);
    ck_assert_uint_eq(interactions(), 0);
    /* Element 1 fails our own check (a field the engine never sees). */
    request(post("/api/explore/interaction",
                 "[{\"type\":\"view\",\"shortId\":1,\"sessionId\":\"m\"},"
                 " {\"type\":\"view\",\"shortId\":1,\"sessionId\":\"m\",\"colour\":1},"
                 " {\"type\":\"view\",\"shortId\":1,\"sessionId\":\"m\"}]"), &r);
    check_error(&r, 400, "colour: unknown field", 1);
    ck_assert_uint_eq(interactions(), 0);
    /* The first bad element is named, whichever check finds it: element 0
     * is well-formed JSON the engine refuses, element 1 is not. */
    request(post("/api/explore/interaction",
                 "[{\"type\":\"skip\",\"shortId\":2,\"sessionId\":\"m\",\"watchMs\":10},"
                 " {\"type\":\"view\",\"shortId\":1,\"sessionId\":\"m\",\"colour\":1}]"), &r);
    check_error(&r, 400, "watchMs: only allowed on view", 0);
    ck_assert_uint_eq(interactions(), 0);
    request(post("/api/explore/interaction",
                 "[{\"type\":\"view\",\"shortId\":1,\"sessionId\":\"m\"}, 3]"), &r);
    check_error(&r, 400, "body: each interaction must be a JSON object", 1);
    request(post("/api/explore/interaction", "[{\"type\":\"view\",\"shortId\":1}, 3]"), &r);
    check_error(&r, 400, "body: each interaction must be a JSON object", 1);

    struct eng_stats s;
    for (uint64_t id = 1; id <= 4; id++) {
        eng_stats(F.eng, id, &s);
        ck_assert_uint_eq(s.impressions + s.views, 0);
    }
    ck_assert_uint_eq(eng_history_session(F.eng, "m", 1, (struct eng_history_rec[1]){{0}}, 1), 0);
    ck_assert_uint_eq(F.stats.interactions_total, 0);
}
END_TEST

START_TEST(interaction_field_errors)
{
    static const struct {
        const char *body, *err;
        int index;
    } cases[] = {
        {"{\"type\":\"view\",\"shortId\":1.5}", "shortId: must be an integer between 1 and", 0},
        {"{\"type\":\"view\",\"shortId\":0}", "shortId: must be an integer between 1 and", 0},
        {"{\"type\":\"view\",\"shortId\":-3}", "shortId: must be an integer between 1 and", 0},
        {"{\"type\":\"view\",\"shortId\":\"12a\"}", "shortId: must be an integer between 1", 0},
        {"{\"type\":\"view\",\"shortId\":\"007\"}", "shortId: must be an integer between 1", 0},
        {"{\"type\":\"view\",\"shortId\":1,\"userId\":\"0042\"}", "userId: must be an integer", 0},
        {"{\"type\":\"view\",\"shortId\":true}", "shortId: must be an integer between 1", 0},
        {"{\"type\":\"like\",\"shortId\":1}", "type: must be one of impression, view", 0},
        {"{\"type\":3,\"shortId\":1}", "type: must be one of", 0},
        {"{\"shortId\":1}", "type: missing", 0},
        {"{\"type\":\"view\"}", "shortId: missing", 0},
        {"{\"type\":\"view\",\"shortId\":1,\"ua\":\"x\"}", "ua: unknown field", 0},
        {"{\"type\":\"view\",\"shortId\":1,\"\":\"x\"}", "body: a field with an empty name", 0},
        {"{\"type\":\"view\",\"shortId\":1,\"userId\":\"x\"}", "userId: must be an integer", 0},
        {"{\"type\":\"view\",\"shortId\":1,\"userId\":0}", "userId: must be an integer", 0},
        {"{\"type\":\"view\",\"shortId\":1,\"watchMs\":1e3}", "watchMs: must be an integer", 0},
        {"{\"type\":\"view\",\"shortId\":1,\"watchMs\":\"5\"}", "watchMs: must be an integer", 0},
        {"{\"type\":\"view\",\"shortId\":1,\"ts\":\"now\"}", "ts: must be an integer", 0},
        {"{\"type\":\"view\",\"shortId\":1,\"sessionId\":5}", "sessionId: must be a string", 0},
        {"{\"type\":\"view\",\"shortId\":1,\"platform\":[]}", "platform: must be a string", 0},
        {"{\"type\":\"view\",\"shortId\":1,\"ip\":{}}", "ip: must be a string", 0},
        {"{\"type\":\"view\",\"shortId\":1,\"userAgent\":1}", "userAgent: must be a string", 0},
        /* Engine checks, with the engine's field names said the JSON way. */
        {"{\"type\":\"view\",\"shortId\":1,\"watchMs\":86400001,\"userId\":1}", "watchMs: ", 0},
        {"{\"type\":\"skip\",\"shortId\":1,\"watchMs\":5,\"userId\":1}", "watchMs: ", 0},
        {"{\"type\":\"view\",\"shortId\":1,\"ts\":-1,\"userId\":1}", "ts: ", 0},
        {"{\"type\":\"view\",\"shortId\":1,\"ip\":\"300.1.1.1\",\"userId\":1}", "ip: ", 0},
        {"{\"type\":\"view\",\"shortId\":1,\"sessionId\":\"0123456789012345678901234567890123"
         "456789012345678901234567890123456789\"}", "sessionId: ", 0},
        {"{\"type\":\"view\",\"shortId\":1,\"sessionId\":\"a b\"}", "sessionId: ", 0},
        {"{\"type\":\"view\",\"shortId\":1,\"userId\":1,\"colour\":null}", "colour: unknown field", 0},
        {"{\"type\":\"share\",\"shortId\":1,\"userId\":1,\"platform\":\"Bad!\"}", "platform: ", 0},
        {"{\"type\":\"view\",\"shortId\":1,\"userId\":1,\"platform\":\"x\"}", "platform: ", 0},
        /* Not JSON, or the wrong JSON. */
        {"{\"type\":\"view\",\"shortId\":1", "body: invalid JSON at line 1", -1},
        {"{\"type\":\"view\",\"type\":\"view\",\"shortId\":1}", "body: invalid JSON", -1},
        {"{\"type\":\"view\",\"shortId\":1} x", "body: invalid JSON", -1},
        {"{\"type\":\"view\",\"shortId\":99999999999999999999}", "body: invalid JSON", -1},
        {"\"view\"", "body: must be a JSON object or array", -1},
        {"", "body: missing", -1},
        {"  \r\n", "body: missing", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct resp r;
        ck_assert_int_eq(request(post("/api/explore/interaction", cases[i].body), &r), HTTP_OK);
        check_error(&r, 400, cases[i].err, cases[i].index);
    }
    ck_assert_uint_eq(interactions(), 0);
    /* An id past int64 as a JSON number: the parser refuses the body, and
     * the error says what to send instead. */
    struct resp r;
    request(post("/api/explore/interaction",
                 "{\"type\":\"view\",\"shortId\":18446744073709551615,\"userId\":1}"), &r);
    check_error(&r, 400, "body: invalid JSON at line 1 column ", -1);
    ck_assert_msg(strstr(r.body, "(send an id above 9223372036854775807 as a string)"), "%s", r.body);
    /* A long id as a string: past 2^53, where JavaScript numbers end. */
    request(post("/api/explore/interaction",
                 "{\"type\":\"view\",\"shortId\":\"18446744073709551615\",\"sessionId\":\"z\"}"), &r);
    ck_assert_int_eq(r.status, 200);
    request(get("/api/explore/stats/18446744073709551615"), &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strstr(r.body, "\"shortId\":18446744073709551615,\"impressions\":0,\"views\":1,"),
                  "%s", r.body);
}
END_TEST

/* ---- save, share, session, queries ------------------------------------------------- */

START_TEST(save_share)
{
    struct resp r;
    request(post("/api/explore/save/12", "{\"userId\":42}"), &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"ok\":true,\"recorded\":1}");
    request(post("/api/explore/share/12", "{\"sessionId\":\"s9\",\"platform\":\"whatsapp\"}"), &r);
    ck_assert_int_eq(r.status, 200);
    request(post("/api/explore/share/12", "{\"userId\":7,\"platform\":\"telegram\"}"), &r);
    ck_assert_int_eq(r.status, 200);
    /* an app's spelling: the same platform, in lower case */
    request(post("/api/explore/share/12", "{\"userId\":7,\"platform\":\"WhatsApp\"}"), &r);
    ck_assert_int_eq(r.status, 200);

    struct eng_stats s;
    eng_stats(F.eng, 12, &s);
    ck_assert_uint_eq(s.saves, 1);
    ck_assert_uint_eq(s.shares, 3);
    request(get("/api/explore/stats/12"), &r);
    ck_assert_msg(strstr(r.body, "\"sharesByPlatform\":{\"whatsapp\":2,\"telegram\":1}}"), "%s",
                  r.body);

    uint64_t before = interactions();
    request(post("/api/explore/save/abc", "{\"userId\":42}"), &r);
    check_error(&r, 400, "propertyId: must be an integer between 1 and", -1);
    request(post("/api/explore/save/0", "{\"userId\":42}"), &r);
    check_error(&r, 400, "propertyId: must be an integer", -1);
    request(post("/api/explore/save/12", "{\"userId\":42,\"type\":\"view\"}"), &r);
    check_error(&r, 400, "type: not allowed here", -1);
    request(post("/api/explore/share/12", "{\"userId\":42,\"shortId\":3}"), &r);
    check_error(&r, 400, "shortId: not allowed here", -1);
    request(post("/api/explore/save/12", "[{\"userId\":42}]"), &r);
    check_error(&r, 400, "body: must be a JSON object", -1);
    request(post("/api/explore/save/12", "{\"userId\":"), &r);
    check_error(&r, 400, "body: invalid JSON", -1);
    request(post("/api/explore/save/", "{\"userId\":42}"), &r);
    check_error(&r, 404, "path: no endpoint /api/explore/save/", -1);
    request(post("/api/explore/save/12/x", "{\"userId\":42}"), &r);
    check_error(&r, 404, "path: ", -1);
    /* the engine's own refusals, said the JSON way; an empty body is {} */
    request(post("/api/explore/share/12", "{\"userId\":1,\"platform\":\"Bad!\"}"), &r);
    check_error(&r, 400, "platform: must be", -1);
    request(post("/api/explore/save/12", "{\"sessionId\":\"bad/id\"}"), &r);
    check_error(&r, 400, "sessionId: must be 1 to 64 characters", -1);
    /* behind a proxy, a malformed X-Forwarded-For is refused here too */
    F.env.trust_proxy = true;
    snprintf(reqbuf, sizeof reqbuf,
             "POST /api/explore/save/12 HTTP/1.1\r\nX-Forwarded-For: nope\r\n"
             "Content-Length: 13\r\n\r\n{\"userId\":42}");
    request(reqbuf, &r);
    check_error(&r, 400, "X-Forwarded-For: not an IP address", -1);
    /* trailer fields of a chunked body are not headers: they cannot
     * replace the address our proxy appended, nor the user agent */
    snprintf(reqbuf, sizeof reqbuf,
             "POST /api/explore/interaction HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\n"
             "User-Agent: real\r\nTransfer-Encoding: chunked\r\n\r\n"
             "2c\r\n{\"type\":\"skip\",\"shortId\":5,\"sessionId\":\"tr\"}\r\n"
             "0\r\nX-Forwarded-For: 6.6.6.6\r\nUser-Agent: spoofed\r\n\r\n");
    request(reqbuf, &r);
    ck_assert_int_eq(r.status, 200);
    request(get("/api/explore/history/session/tr"), &r);
    ck_assert_msg(strstr(r.body, "\"ip\":\"10.0.0.1\"") && strstr(r.body, "\"userAgent\":\"real\""),
                  "%s", r.body);
    before++;
    F.env.trust_proxy = false;
    ck_assert_uint_eq(interactions(), before);
}
END_TEST

/* Over the server's --maxmemory, every write endpoint answers 507 and
 * records nothing; a request that is wrong still gets its own error first,
 * and queries still answer. The gate is asked once per write that passed
 * its checks, and never for a query. */
START_TEST(writes_refused_over_maxmemory)
{
    struct resp r;
    request(post("/api/explore/interaction", "{\"type\":\"view\",\"shortId\":5,\"userId\":1}"),
            &r);
    ck_assert_int_eq(r.status, 200);  /* no gate set: never refused */
    F.env.over_memory = fx_over_memory;
    request(post("/api/explore/interaction", "{\"type\":\"view\",\"shortId\":5,\"userId\":2}"),
            &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(F.over_asked, 1);
    F.over = true;
    uint64_t before = interactions();
    static const char *const writes[][2] = {
        {"/api/explore/interaction", "{\"type\":\"view\",\"shortId\":5,\"userId\":3}"},
        {"/api/explore/interaction", "[{\"type\":\"skip\",\"shortId\":6,\"userId\":3},"
                                     "{\"type\":\"skip\",\"shortId\":7,\"userId\":3}]"},
        {"/api/explore/save/5", "{\"userId\":3}"},
        {"/api/explore/share/5", "{\"userId\":3,\"platform\":\"x\"}"},
    };
    for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++) {
        request(post(writes[i][0], writes[i][1]), &r);
        check_error(&r, 507, "memory: used memory is over the server's --maxmemory", -1);
    }
    ck_assert_int_eq(F.over_asked, 5);
    ck_assert_uint_eq(F.over_n, 1 + 1 + 2 + 1 + 1);  /* a batch counts each interaction */
    request(post("/api/explore/interaction", "{\"type\":\"nonsense\",\"shortId\":5}"), &r);
    check_error(&r, 400, "type: ", 0);
    request(post("/api/explore/save/x", "{}"), &r);
    check_error(&r, 400, "propertyId: ", -1);
    ck_assert_int_eq(F.over_asked, 5);
    ck_assert_uint_eq(interactions(), before);
    /* queries, and minting a session id, are not gated */
    request(get("/api/explore/stats/5"), &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strstr(r.body, "\"views\":2"), "%s", r.body);
    request(get("/api/explore/top?k=1"), &r);
    ck_assert_int_eq(r.status, 200);
    request(post("/api/explore/session", ""), &r);
    ck_assert_int_lt(r.status, 300);
    ck_assert_int_eq(F.over_asked, 5);
    /* counted by status, as every other answer is */
    request(get("/metrics"), &r);
    ck_assert_msg(strstr(r.body, "\nshortstat_http_responses_total{code=\"507\"} 4\n"), "%s",
                  r.body);
    F.over = false;
    request(post("/api/explore/save/5", "{\"userId\":3}"), &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_uint_eq(interactions(), before + 1);
}
END_TEST

START_TEST(session_new)
{
    struct resp r;
    request(post("/api/explore/session", ""), &r);
    ck_assert_int_eq(r.status, 200);
    json_t *j = body_json(&r);
    const char *sid = json_string_value(json_object_get(j, "sessionId"));
    ck_assert_ptr_nonnull(sid);
    ck_assert_uint_eq(strlen(sid), ENG_SID_LEN);
    ck_assert(strncmp(sid, "g-", 2) == 0);
    ck_assert_uint_eq(strspn(sid + 2, "0123456789abcdef"), 32);
    char first[64];
    snprintf(first, sizeof first, "%s", sid);
    json_decref(j);
    request(post("/api/explore/session", "{}"), &r);
    j = body_json(&r);
    ck_assert_str_ne(json_string_value(json_object_get(j, "sessionId")), first);
    json_decref(j);
    request(get("/api/explore/session"), &r);
    check_error(&r, 405, "method: GET not allowed here", -1);
    ck_assert(has_header(&r, "Allow: POST, OPTIONS"));
}
END_TEST

/* The minted guest session of an answer, checked for form, into out; ""
 * when the answer carries none. */
static void minted_session(const struct resp *r, char out[ENG_SID_LEN + 1])
{
    ck_assert_msg(r->status == 200, "%d: %s", r->status, r->body);
    json_t *j = body_json(r);
    const char *sid = json_string_value(json_object_get(j, "sessionId"));
    out[0] = 0;
    if (sid) {
        ck_assert_uint_eq(strlen(sid), ENG_SID_LEN);
        ck_assert(strncmp(sid, "g-", 2) == 0 && strspn(sid + 2, "0123456789abcdef") == 32);
        memcpy(out, sid, ENG_SID_LEN + 1);
    }
    json_decref(j);
}

static size_t session_records(const char *sid)
{
    struct eng_history_rec h[8];
    return eng_history_session(F.eng, sid, strlen(sid), h, 8);
}

/* An interaction naming no viewer is a guest's: it gets a session minted,
 * one per request, returned for the client to send from then on. */
START_TEST(guest_gets_a_session)
{
    struct resp r;
    char a[ENG_SID_LEN + 1], b[ENG_SID_LEN + 1];
    request(post("/api/explore/interaction", "{\"type\":\"view\",\"shortId\":7}"), &r);
    minted_session(&r, a);
    ck_assert_msg(a[0] && strstr(r.body, "\"recorded\":1,\"sessionId\":\""), "%s", r.body);
    ck_assert_uint_eq(session_records(a), 1);
    /* a batch: the elements without a viewer share one new session */
    request(post("/api/explore/interaction",
                 "[{\"type\":\"view\",\"shortId\":8},{\"type\":\"impression\",\"shortId\":8},"
                 " {\"type\":\"view\",\"shortId\":8,\"userId\":3}]"), &r);
    minted_session(&r, b);
    ck_assert(b[0] && strcmp(a, b) != 0);
    ck_assert_uint_eq(session_records(b), 2);
    struct eng_stats st;
    eng_stats(F.eng, 8, &st);
    ck_assert_uint_eq(st.unique_viewers, 2);  /* the guest and user 3 */
    /* the client sends it back: the same viewer, no new session */
    uint64_t n = sessions();
    char body[160];
    snprintf(body, sizeof body, "{\"type\":\"view\",\"shortId\":8,\"sessionId\":\"%s\"}", b);
    request(post("/api/explore/interaction", body), &r);
    minted_session(&r, a);
    ck_assert_str_eq(r.body, "{\"ok\":true,\"recorded\":1}");
    ck_assert_uint_eq(sessions(), n);
    eng_stats(F.eng, 8, &st);
    ck_assert_uint_eq(st.unique_viewers, 2);
    /* save and share, with an empty body */
    request(post("/api/explore/save/12", ""), &r);
    minted_session(&r, a);
    ck_assert(a[0]);
    request(post("/api/explore/share/12", "{\"platform\":\"x\"}"), &r);
    minted_session(&r, b);
    ck_assert(b[0] && strcmp(a, b) != 0);
    eng_stats(F.eng, 12, &st);
    ck_assert_uint_eq(st.saves, 1);
    ck_assert_uint_eq(st.shares, 1);
    /* refused: nothing recorded, no session left behind */
    n = sessions();
    uint64_t before = interactions();
    request(post("/api/explore/interaction",
                 "[{\"type\":\"view\",\"shortId\":9},{\"type\":\"skip\",\"shortId\":9,"
                 "\"watchMs\":5}]"), &r);
    check_error(&r, 400, "watchMs: only allowed on view", 1);
    request(post("/api/explore/share/12", "{\"platform\":\"Bad!\"}"), &r);
    check_error(&r, 400, "platform: must be", -1);
    ck_assert_uint_eq(sessions(), n);
    ck_assert_uint_eq(interactions(), before);
}
END_TEST

START_TEST(stats_queries)
{
    struct resp r;
    request(get("/api/explore/stats/555"), &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body,
        "{\"ok\":true,\"shortId\":555,\"impressions\":0,\"views\":0,\"viewCount\":0,"
        "\"uniqueViewers\":0,\"saves\":0,\"shares\":0,\"skips\":0,\"contacts\":0,\"whatsapps\":0,"
        "\"bookViewings\":0,\"avgWatchMs\":0.000000,\"engagementRate\":0.000000,"
        "\"score\":0.000000,\"boost\":0,\"lastTs\":0,\"sharesByPlatform\":{}}");
    request(get("/api/explore/stats/%35%355"), &r);   /* percent-encoded: 555 */
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"shortId\":555,"));
    request(get("/api/explore/stats/x1"), &r);
    check_error(&r, 400, "shortId: must be an integer between 1 and 18446744073709551615", -1);
    request(get("/api/explore/stats/%3"), &r);
    check_error(&r, 400, "shortId: must be an integer", -1);
    request(get("/api/explore/stats/18446744073709551616"), &r);
    check_error(&r, 400, "shortId: must be an integer", -1);
    request(get("/api/explore/stats/0555"), &r);  /* not a second name for 555 */
    check_error(&r, 400, "shortId: must be an integer", -1);
    request(get("/api/explore/stats/1?x=1"), &r);
    check_error(&r, 400, "x: unknown parameter", -1);
}
END_TEST

START_TEST(top_queries)
{
    struct resp r;
    /* Short 3 gets three views, 1 two, 2 one. */
    request(post("/api/explore/interaction",
                 "[{\"type\":\"view\",\"shortId\":3,\"sessionId\":\"a\",\"watchMs\":100},"
                 "{\"type\":\"view\",\"shortId\":3,\"sessionId\":\"b\",\"watchMs\":100},"
                 "{\"type\":\"view\",\"shortId\":3,\"sessionId\":\"c\",\"watchMs\":100},"
                 "{\"type\":\"view\",\"shortId\":1,\"sessionId\":\"a\",\"watchMs\":100},"
                 "{\"type\":\"view\",\"shortId\":1,\"sessionId\":\"b\",\"watchMs\":100},"
                 "{\"type\":\"view\",\"shortId\":2,\"sessionId\":\"a\",\"watchMs\":100}]"), &r);
    ck_assert_int_eq(r.status, 200);

    request(get("/api/explore/top?k=2&by=view_count"), &r);
    ck_assert_int_eq(r.status, 200);
    struct eng_top_item want[3];
    struct eng_err err;
    ck_assert_int_eq(eng_top(F.eng, ENG_M_VIEW_COUNT, 2, want, &err), 2);
    char exp[512];
    snprintf(exp, sizeof exp,
             "{\"ok\":true,\"by\":\"view_count\",\"items\":[{\"shortId\":%" PRIu64
             ",\"value\":%.0f},{\"shortId\":%" PRIu64 ",\"value\":%.0f}]}",
             want[0].short_id, want[0].value, want[1].short_id, want[1].value);
    ck_assert_str_eq(r.body, exp);
    ck_assert_uint_eq(want[0].short_id, 3);

    request(get("/api/explore/top"), &r);   /* k=10 by score */
    ck_assert_int_eq(r.status, 200);
    json_t *j = body_json(&r);
    ck_assert_str_eq(json_string_value(json_object_get(j, "by")), "score");
    ck_assert_uint_eq(json_array_size(json_object_get(j, "items")), 3);
    json_decref(j);
    int n = eng_top(F.eng, ENG_M_SCORE, 1, want, &err);
    ck_assert_int_eq(n, 1);
    snprintf(exp, sizeof exp, "\"items\":[{\"shortId\":%" PRIu64 ",\"value\":%.6f}",
             want[0].short_id, want[0].value);
    ck_assert_msg(strstr(r.body, exp), "%s not in %s", exp, r.body);

    request(get("/api/explore/top?k=0"), &r);
    check_error(&r, 400, "k: must be an integer between 1 and 1000", -1);
    request(get("/api/explore/top?k=1001"), &r);
    check_error(&r, 400, "k: must be an integer between 1 and 1000", -1);
    request(get("/api/explore/top?k=ten"), &r);
    check_error(&r, 400, "k: must be an integer", -1);
    request(get("/api/explore/top?by=likes"), &r);
    check_error(&r, 400, "by: must be one of score, view_count, unique_viewers, saves, shares, "
                "engagement_rate, avg_watch_ms, impressions, views, skips, contacts, whatsapps, "
                "book_viewings, boost, last_ts", -1);
    request(get("/api/explore/top?k=1&k=2"), &r);
    check_error(&r, 400, "k: repeated parameter", -1);
    request(get("/api/explore/top?by=views&k=3&by=saves"), &r);
    check_error(&r, 400, "by: repeated parameter", -1);
    request(get("/api/explore/top?limit=3"), &r);
    check_error(&r, 400, "limit: unknown parameter", -1);
    request(get("/api/explore/top?k=%zz"), &r);
    check_error(&r, 400, "k: invalid percent-encoding", -1);
    /* A key that does not decode, or not into a known key's room, is unknown. */
    request(get("/api/explore/top?k%zz=1"), &r);
    check_error(&r, 400, "k%zz: unknown parameter", -1);
    request(get("/api/explore/top?k%00junk=3"), &r);  /* not k: a NUL ends no name */
    ck_assert_int_eq(r.status, 400);
    ck_assert_msg(strstr(r.body, ": unknown parameter"), "%s", r.body);
    check_error(&r, 400, "k: unknown parameter", -1);  /* named as far as it prints */
    request(get("/api/explore/top?averyveryverylongkey=1"), &r);
    check_error(&r, 400, "averyveryverylongkey: unknown parameter", -1);
    char longq[256] = "/api/explore/top?by=";
    memset(longq + strlen(longq), 'a', 130);
    request(get(longq), &r);
    check_error(&r, 400, "by: too long", -1);
    request(get("/api/explore/top?&k=%31&&by=view%5Fcount&"), &r);   /* k=1, by=view_count */
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strstr(r.body, "\"by\":\"view_count\",\"items\":[{\"shortId\":3,\"value\":3}]"),
                  "%s", r.body);
}
END_TEST

START_TEST(history_queries)
{
    struct resp r;
    for (int i = 1; i <= 5; i++) {
        char b[256];
        snprintf(b, sizeof b, "{\"type\":\"view\",\"shortId\":%d,\"sessionId\":\"s:%d.x\","
                 "\"userId\":77,\"watchMs\":%d,\"ts\":%d}", i, i % 2, i * 100, 1000 + i);
        request(post("/api/explore/interaction", b), &r);
        ck_assert_int_eq(r.status, 200);
    }
    request(get("/api/explore/history/user/77?limit=3"), &r);
    ck_assert_int_eq(r.status, 200);
    json_t *j = body_json(&r);
    json_t *recs = json_object_get(j, "records");
    ck_assert_uint_eq(json_array_size(recs), 3);
    for (size_t i = 0; i < 3; i++) {   /* newest first */
        json_t *o = json_array_get(recs, i);
        ck_assert_int_eq(jint(o, "shortId"), 5 - (int)i);
        ck_assert_int_eq(jint(o, "ts"), 1005 - (int)i);
        ck_assert_int_eq(jint(o, "watchMs"), (5 - (int)i) * 100);
        ck_assert_int_eq(jint(o, "userId"), 77);
    }
    json_decref(j);
    /* "s:1.x", percent-encoded in the path. */
    request(get("/api/explore/history/session/s%3A1%2ex"), &r);
    ck_assert_int_eq(r.status, 200);
    j = body_json(&r);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "records")), 3);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(j,
                     "records"), 0), "sessionId")), "s:1.x");
    json_decref(j);
    request(get("/api/explore/history/user/78"), &r);
    ck_assert_str_eq(r.body, "{\"ok\":true,\"records\":[]}");
    request(get("/api/explore/history/session/nobody?limit=64"), &r);
    ck_assert_str_eq(r.body, "{\"ok\":true,\"records\":[]}");
    request(get("/api/explore/history/user/77?limit=65536"), &r);   /* clamped to the ring */
    ck_assert_int_eq(r.status, 200);

    request(get("/api/explore/history/user/abc"), &r);
    check_error(&r, 400, "userId: must be an integer between 1 and", -1);
    request(get("/api/explore/history/user/77?limit=0"), &r);
    check_error(&r, 400, "limit: must be an integer between 1 and 65536", -1);
    request(get("/api/explore/history/user/77?limit=65537"), &r);
    check_error(&r, 400, "limit: must be an integer between 1 and 65536", -1);
    request(get("/api/explore/history/session/%4"), &r);
    check_error(&r, 400, "sessionId: invalid percent-encoding", -1);
    /* not a session id at all: refused with TRACK's rule, as HISTORY SESSION does */
    request(get("/api/explore/history/session/"
                "01234567890123456789012345678901234567890123456789012345678901234"), &r);
    check_error(&r, 400, "sessionId: must be 1 to 64 characters of A-Z a-z 0-9 . _ : -", -1);
    request(get("/api/explore/history/session/bad%2Fid"), &r);
    check_error(&r, 400, "sessionId: must be 1 to 64 characters", -1);
    /* 64 characters is an id: an unknown one, so no records */
    request(get("/api/explore/history/session/"
                "0123456789012345678901234567890123456789012345678901234567890123"), &r);
    ck_assert_str_eq(r.body, "{\"ok\":true,\"records\":[]}");
    /* numeric path parameters are percent-decoded too: user 77 */
    request(get("/api/explore/history/user/%377?limit=1"), &r);
    ck_assert_int_eq(r.status, 200);
    j = body_json(&r);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "records")), 1);
    json_decref(j);
    request(get("/api/explore/history/session/a?limit=2&user=1"), &r);
    check_error(&r, 400, "user: unknown parameter", -1);
    request(get("/api/explore/history/device/1"), &r);
    check_error(&r, 404, "path: no endpoint /api/explore/history/device/1", -1);
}
END_TEST

/* Bytes that are not UTF-8, and control characters, still give valid JSON. */
START_TEST(json_escaping)
{
    struct resp r;
    static const char req[] =
        "POST /api/explore/interaction HTTP/1.1\r\nUser-Agent: ok\xff\xc3\x28 \xe2\x82\xac \xf0\x9f\x98\x80"
        " \"q\" \\ end\r\nContent-Length: 55\r\n\r\n"
        "{\"type\":\"view\",\"shortId\":1,\"sessionId\":\"e\",\"watchMs\":1}";
    request(req, &r);
    ck_assert_int_eq(r.status, 200);
    request(post("/api/explore/interaction", "{\"type\":\"view\",\"shortId\":1,\"sessionId\":\"e\","
                 "\"userAgent\":\"tab\\tnl\\nnul\\u0001\\u007f \\u00e9\"}"), &r);
    ck_assert_int_eq(r.status, 200);
    request(get("/api/explore/history/session/e"), &r);
    json_t *j = body_json(&r);   /* jansson rejects invalid UTF-8 */
    json_t *recs = json_object_get(j, "records");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(recs, 0), "userAgent")),
                     "tab\tnl\nnul\x01\x7f \xc3\xa9");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(recs, 1), "userAgent")),
                     "ok\xef\xbf\xbd\xef\xbf\xbd( \xe2\x82\xac \xf0\x9f\x98\x80 \"q\" \\ end");
    json_decref(j);
}
END_TEST

/* ---- health and metrics ------------------------------------------------------------- */

START_TEST(healthz)
{
    struct resp r;
    F.m.uptime_ms = 4200;
    F.m.snapshot_status = HTTP_SNAP_OK;
    F.m.last_snapshot_unix_ms = 1699999999000;
    request(get("/healthz"), &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"ok\":true,\"status\":\"serving\",\"uptimeMs\":4200,"
                     "\"snapshot\":{\"status\":\"ok\",\"inProgress\":false,"
                     "\"lastUnixMs\":1699999999000}}");
    F.m.snapshot_status = HTTP_SNAP_ERR;
    F.m.snapshot_in_progress = true;
    request(get("/healthz"), &r);
    ck_assert_msg(strstr(r.body, "{\"status\":\"err\",\"inProgress\":true,"), "%s", r.body);
    request(post("/healthz", "{}"), &r);
    check_error(&r, 405, "method: POST not allowed here", -1);
    ck_assert(has_header(&r, "Allow: GET, HEAD, OPTIONS"));
    request(get("/healthz?verbose=1"), &r);
    check_error(&r, 400, "verbose: unknown parameter", -1);
}
END_TEST

/* A checker for the Prometheus text format 0.0.4, enough for our output:
 * every sample belongs to a family TYPE'd before it, TYPE and HELP once per
 * family, names and labels well formed, no duplicate series, values parse,
 * histogram buckets ascend in le and in count, +Inf bucket == _count. */
struct prom_family {
    char name[128];
    char type[16];
    bool help;
    /* histogram state */
    double last_le, last_bucket, inf_bucket, count;
    int nbuckets;
    bool has_inf, has_count, has_sum;
};

static bool prom_name_ok(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || ch == ':';
        if (!alpha && !(i > 0 && ch >= '0' && ch <= '9'))
            return false;
    }
    return true;
}

static double prom_value(const char *s)
{
    if (strcmp(s, "+Inf") == 0)
        return INFINITY;
    if (strcmp(s, "-Inf") == 0)
        return -INFINITY;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    ck_assert_msg(*s && *end == 0 && errno == 0, "bad sample value '%s'", s);
    return v;
}

/* Returns the number of samples; fails the test on any violation. */
static int prom_check(const char *text, size_t len, double (*get_out)[2], const char *const *want,
                      size_t nwant)
{
    struct prom_family fam[64];
    size_t nfam = 0;
    char seen[256][160];
    size_t nseen = 0;
    int samples = 0;
    ck_assert_msg(len > 0 && text[len - 1] == '\n', "exposition must end in a newline");
    char *copy = strndup(text, len);
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') {
            char kw[8], name[128], rest[16] = "";
            int n = sscanf(line, "# %7s %127s %15[^\n]", kw, name, rest);
            ck_assert_msg(n >= 2, "bad comment line '%s'", line);
            if (strcmp(kw, "HELP") != 0 && strcmp(kw, "TYPE") != 0)
                continue;
            ck_assert_msg(prom_name_ok(name, strlen(name)), "bad name in '%s'", line);
            struct prom_family *f = NULL;
            for (size_t i = 0; i < nfam; i++)
                if (strcmp(fam[i].name, name) == 0)
                    f = &fam[i];
            if (!f) {
                ck_assert_uint_lt(nfam, 64);
                f = &fam[nfam++];
                memset(f, 0, sizeof *f);
                snprintf(f->name, sizeof f->name, "%s", name);
                f->last_le = -INFINITY;
            }
            if (kw[0] == 'H') {
                ck_assert_msg(!f->help, "second HELP for %s", name);
                f->help = true;
            } else {
                ck_assert_msg(f->type[0] == 0, "second TYPE for %s", name);
                ck_assert_msg(strcmp(rest, "counter") == 0 || strcmp(rest, "gauge") == 0 ||
                              strcmp(rest, "histogram") == 0 || strcmp(rest, "summary") == 0 ||
                              strcmp(rest, "untyped") == 0, "bad type '%s'", rest);
                snprintf(f->type, sizeof f->type, "%s", rest);
            }
            continue;
        }
        /* name{labels} value */
        samples++;
        size_t nl = strcspn(line, "{ ");
        ck_assert_msg(prom_name_ok(line, nl), "bad sample name in '%s'", line);
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)nl, line);
        const char *p = line + nl;
        char le[64] = "";
        char series[160];
        snprintf(series, sizeof series, "%.*s", (int)(strrchr(line, ' ') - line), line);
        if (*p == '{') {
            p++;
            while (*p != '}') {
                size_t ln = strcspn(p, "=");
                ck_assert_msg(prom_name_ok(p, ln), "bad label name in '%s'", line);
                bool is_le = ln == 2 && strncmp(p, "le", 2) == 0;
                p += ln;
                ck_assert_msg(p[0] == '=' && p[1] == '"', "label value must be quoted: '%s'", line);
                p += 2;
                char val[64];
                size_t vn = 0;
                while (*p != '"') {
                    ck_assert_msg(*p, "unterminated label value in '%s'", line);
                    if (*p == '\\') {
                        p++;
                        ck_assert_msg(*p == '\\' || *p == '"' || *p == 'n', "bad escape '%s'", line);
                    }
                    if (vn < sizeof val - 1)
                        val[vn++] = *p;
                    p++;
                }
                val[vn] = 0;
                if (is_le)
                    snprintf(le, sizeof le, "%s", val);
                p++;
                if (*p == ',')
                    p++;
                else
                    ck_assert_msg(*p == '}', "bad label list in '%s'", line);
            }
            p++;
        }
        ck_assert_msg(*p == ' ', "no value in '%s'", line);
        double v = prom_value(p + 1);
        for (size_t i = 0; i < nseen; i++)
            ck_assert_msg(strcmp(seen[i], series) != 0, "duplicate series %s", series);
        ck_assert_uint_lt(nseen, 256);
        snprintf(seen[nseen++], sizeof seen[0], "%s", series);
        for (size_t i = 0; i < nwant; i++)
            if (strcmp(series, want[i]) == 0)
                get_out[i][0] = v, get_out[i][1] = 1;

        /* Its family: the name itself, or a histogram's base name. */
        struct prom_family *f = NULL;
        const char *suffix = "";
        for (size_t i = 0; i < nfam && !f; i++) {
            if (strcmp(fam[i].name, name) == 0) {
                f = &fam[i];
            } else if (strcmp(fam[i].type, "histogram") == 0) {
                size_t bl = strlen(fam[i].name);
                if (strncmp(name, fam[i].name, bl) == 0 &&
                    (strcmp(name + bl, "_bucket") == 0 || strcmp(name + bl, "_sum") == 0 ||
                     strcmp(name + bl, "_count") == 0)) {
                    f = &fam[i];
                    suffix = name + bl;
                }
            }
        }
        ck_assert_msg(f && f->type[0], "sample %s has no TYPE'd family before it", name);
        if (strcmp(f->type, "counter") == 0) {
            ck_assert_msg(v >= 0, "counter %s negative", name);
            ck_assert_msg(strlen(name) > 6 && strcmp(name + strlen(name) - 6, "_total") == 0,
                          "counter %s should end in _total", name);
        }
        if (strcmp(f->type, "histogram") == 0) {
            ck_assert_msg(*suffix, "histogram sample %s without _bucket/_sum/_count", name);
            if (strcmp(suffix, "_bucket") == 0) {
                ck_assert_msg(le[0], "bucket without le: '%s'", line);
                double lev = prom_value(le);
                ck_assert_msg(lev > f->last_le, "le not ascending at '%s'", line);
                ck_assert_msg(v >= f->last_bucket, "bucket counts not cumulative at '%s'", line);
                ck_assert_msg(!f->has_inf, "bucket after +Inf: '%s'", line);
                f->last_le = lev;
                f->last_bucket = v;
                f->nbuckets++;
                if (isinf(lev)) {
                    f->has_inf = true;
                    f->inf_bucket = v;
                }
            } else if (strcmp(suffix, "_count") == 0) {
                f->has_count = true;
                f->count = v;
            } else {
                f->has_sum = true;
                ck_assert_msg(v >= 0, "negative histogram sum");
            }
        }
    }
    for (size_t i = 0; i < nfam; i++) {
        ck_assert_msg(fam[i].type[0], "family %s has HELP but no TYPE", fam[i].name);
        if (strcmp(fam[i].type, "histogram") == 0) {
            ck_assert_msg(fam[i].has_inf && fam[i].has_count && fam[i].has_sum,
                          "histogram %s incomplete", fam[i].name);
            ck_assert_msg(fam[i].inf_bucket == fam[i].count, "%s: +Inf bucket %g != count %g",
                          fam[i].name, fam[i].inf_bucket, fam[i].count);
        }
    }
    free(copy);
    return samples;
}

START_TEST(metrics_format)
{
    struct resp r;
    F.m.commands_total = 17;
    F.m.connected_clients = 3;
    F.m.snapshot_status = HTTP_SNAP_OK;
    F.m.now_unix_ms = 1700000010000;
    F.m.last_snapshot_unix_ms = 1700000000000;
    F.m.last_snapshot_duration_ms = 1500;
    F.m.version = "0.1 \"x\"\\";
    static const struct http_cmd_metric cmds[] = {{"track", NULL, 5, 2500000000u, 1, 0},
                                                  {"config", "set", 2, 1500, 0, 1}};
    static const struct http_err_metric errs[] = {{"ERR", 3}, {"NOAUTH", 1}};
    F.m.cmds = cmds;
    F.m.ncmds = 2;
    F.m.errs = errs;
    F.m.nerrs = 2;
    F.tick_ns = 300000;   /* 0.3 ms between clock reads */
    request(post("/api/explore/interaction",
                 "[{\"type\":\"view\",\"shortId\":1,\"sessionId\":\"a\"},"
                 "{\"type\":\"view\",\"shortId\":2,\"sessionId\":\"a\"},"
                 "{\"type\":\"share\",\"shortId\":2,\"sessionId\":\"a\",\"platform\":\"x\"}]"), &r);
    request(get("/nope"), &r);
    request(get("/metrics"), &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(has_header(&r, "Content-Type: text/plain; version=0.0.4; charset=utf-8"));
    static const char *const want[] = {
        "shortstat_interactions_total{type=\"view\"}",
        "shortstat_interactions_total{type=\"share\"}",
        "shortstat_interactions_total{type=\"book_viewing\"}",
        "shortstat_commands_total",
        "shortstat_connected_clients",
        "shortstat_http_requests_total",
        "shortstat_http_responses_total{code=\"404\"}",
        "shortstat_http_responses_total{code=\"200\"}",
        "shortstat_http_request_duration_seconds_count",
        "shortstat_http_request_duration_seconds_bucket{le=\"0.00025\"}",
        "shortstat_http_request_duration_seconds_bucket{le=\"0.0005\"}",
        "shortstat_shorts",
        "shortstat_snapshot_last_status{status=\"ok\"}",
        "shortstat_snapshot_last_status{status=\"err\"}",
        "shortstat_snapshot_age_seconds",
        "shortstat_snapshot_last_duration_seconds",
        "shortstat_http_interactions_total",
        "shortstat_build_info{version=\"0.1 \\\"x\\\"\\\\\"}",
        "shortstat_command_calls_total{cmd=\"track\"}",
        "shortstat_command_duration_seconds_total{cmd=\"track\"}",
        "shortstat_command_rejected_calls_total{cmd=\"track\"}",
        "shortstat_command_calls_total{cmd=\"config|set\"}",
        "shortstat_command_duration_seconds_total{cmd=\"config|set\"}",
        "shortstat_command_failed_calls_total{cmd=\"config|set\"}",
        "shortstat_error_replies_total{code=\"ERR\"}",
        "shortstat_error_replies_total{code=\"NOAUTH\"}",
    };
    enum { NW = sizeof want / sizeof want[0] };
    double got[NW][2] = {{0}};
    int n = prom_check(r.body, r.body_len, got, want, NW);
    ck_assert_int_gt(n, 40);
    for (size_t i = 0; i < NW; i++)
        ck_assert_msg(got[i][1] == 1, "no sample %s", want[i]);
    ck_assert_double_eq(got[0][0], 2);
    ck_assert_double_eq(got[1][0], 1);
    ck_assert_double_eq(got[2][0], 0);
    ck_assert_double_eq(got[3][0], 17);
    ck_assert_double_eq(got[4][0], 3);
    ck_assert_double_eq(got[5][0], 2);          /* the scrape itself is not counted yet */
    ck_assert_double_eq(got[6][0], 1);
    ck_assert_double_eq(got[7][0], 1);
    ck_assert_double_eq(got[8][0], 2);
    /* Each request read the clock twice, 0.3 ms apart. */
    ck_assert_double_eq(got[9][0], 0);
    ck_assert_double_eq(got[10][0], 2);
    ck_assert_double_eq(got[11][0], 2);
    ck_assert_double_eq(got[12][0], 1);
    ck_assert_double_eq(got[13][0], 0);
    ck_assert_double_eq(got[14][0], 10);
    ck_assert_double_eq(got[15][0], 1.5);
    ck_assert_double_eq(got[16][0], 3);
    ck_assert_double_eq(got[18][0], 5);
    ck_assert_double_eq(got[19][0], 2.5);
    ck_assert_double_eq(got[20][0], 1);
    ck_assert_double_eq(got[21][0], 2);
    ck_assert_double_eq_tol(got[22][0], 1.5e-6, 1e-12);
    ck_assert_double_eq(got[23][0], 1);
    ck_assert_double_eq(got[24][0], 3);
    ck_assert_double_eq(got[25][0], 1);
    ck_assert_msg(strstr(r.body, "\nshortstat_http_request_duration_seconds_sum 0.000600000\n"),
                  "%s", r.body);

    /* Nothing configured: still valid, no snapshot age sample. */
    memset(&F.m, 0, sizeof F.m);
    request(get("/metrics"), &r);
    double none[1][2] = {{0}};
    static const char *const age[] = {"shortstat_snapshot_age_seconds"};
    prom_check(r.body, r.body_len, none, age, 1);
    ck_assert(none[0][1] == 0);
    ck_assert(!strstr(r.body, "shortstat_build_info{"));
    ck_assert(!strstr(r.body, "shortstat_command_calls_total{"));  /* the family, no samples */
    ck_assert(strstr(r.body, "# TYPE shortstat_command_calls_total counter\n"));

    /* HEAD: same headers, no body. */
    struct resp h;
    snprintf(reqbuf, sizeof reqbuf, "HEAD /metrics HTTP/1.1\r\n\r\n");
    request(reqbuf, &h);
    ck_assert_int_eq(h.status, 200);
    ck_assert_uint_eq(h.body_len, 0);
    ck_assert(strstr(h.head, "Content-Length: "));
}
END_TEST

/* ---- HTTP-level errors ----------------------------------------------------------------- */

START_TEST(not_found_and_methods)
{
    struct resp r;
    request(get("/"), &r);
    check_error(&r, 404, "path: no endpoint /", -1);
    /* request targets that are not a path: a proxy's absolute form, CONNECT */
    request("GET http://example.com HTTP/1.1\r\n\r\n", &r);
    check_error(&r, 400, "url: invalid request target", -1);
    /* CONNECT asks for a tunnel: refused, and the connection closes */
    ck_assert_int_eq(request("CONNECT example.com:443 HTTP/1.1\r\n\r\n", &r), HTTP_CLOSE);
    check_error(&r, 400, "url: invalid request target", -1);
    ck_assert(has_header(&r, "Connection: close"));
    reconnect("10.1.2.3");
    request(get("/api/explore/interaction/"), &r);
    check_error(&r, 404, "path: no endpoint", -1);
    request(get("/api/explore/interaction"), &r);
    check_error(&r, 405, "method: GET not allowed here", -1);
    ck_assert(has_header(&r, "Allow: POST, OPTIONS"));
    request(post("/api/explore/stats/1", "{}"), &r);
    check_error(&r, 405, "method: POST not allowed here", -1);
    ck_assert(has_header(&r, "Allow: GET, HEAD, OPTIONS"));
    request("DELETE /api/explore/top HTTP/1.1\r\n\r\n", &r);
    check_error(&r, 405, "method: DELETE not allowed here", -1);
    request(post("/api/explore/interaction?x=1",
                 "{\"type\":\"view\",\"shortId\":1,\"sessionId\":\"s\"}"), &r);
    check_error(&r, 400, "x: unknown parameter", -1);
    request("GET http://example.test:7879/api/explore/stats/4 HTTP/1.1\r\n\r\n", &r);
    ck_assert_int_eq(r.status, 200);   /* absolute form */

    request("OPTIONS /api/explore/interaction HTTP/1.1\r\n\r\n", &r);
    ck_assert_int_eq(r.status, 204);
    ck_assert(has_header(&r, "Allow: POST, OPTIONS"));
    ck_assert(!strstr(r.head, "Content-Length"));
    ck_assert(!strstr(r.head, "Access-Control"));
    F.env.cors_origin = "*";
    request("OPTIONS /api/explore/interaction HTTP/1.1\r\n\r\n", &r);
    ck_assert_int_eq(r.status, 204);
    ck_assert(has_header(&r, "Access-Control-Allow-Origin: *"));
    ck_assert(has_header(&r, "Access-Control-Allow-Headers: Content-Type, Authorization"));
    request(get("/api/explore/stats/4"), &r);
    ck_assert(has_header(&r, "Access-Control-Allow-Origin: *"));

    /* HEAD of a GET endpoint: the GET's headers, no body. */
    struct resp g, h;
    request(get("/api/explore/stats/4"), &g);
    request("HEAD /api/explore/stats/4 HTTP/1.1\r\n\r\n", &h);
    ck_assert_int_eq(h.status, 200);
    ck_assert_str_eq(h.head, g.head);
    /* Its errors too are headers alone (request() refuses a second
     * response, which is what a body after them would read as). */
    request("HEAD /nope HTTP/1.1\r\n\r\n", &h);
    ck_assert_int_eq(h.status, 404);
    ck_assert_ptr_nonnull(strstr(h.head, "\r\nContent-Length: "));
    request("HEAD /api/explore/interaction HTTP/1.1\r\n\r\n", &h);
    ck_assert_int_eq(h.status, 405);
    request("HEAD /api/explore/stats/x HTTP/1.1\r\n\r\n", &h);
    ck_assert_int_eq(h.status, 400);
    ck_assert_uint_eq(responses(404), 3);
    /* and so do the answers that close the connection */
    ck_assert_int_eq(request("HEAD /healthz HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", &h),
                     HTTP_CLOSE);
    ck_assert_int_eq(h.status, 413);
    reconnect("10.1.2.3");
    ck_assert_int_eq(request("HEAD /healthz HTTP/2.0\r\n\r\n", &h), HTTP_CLOSE);
    ck_assert_int_eq(h.status, 505);
    reconnect("10.1.2.3");
}
END_TEST

START_TEST(auth)
{
    struct resp r;
    F.env.requirepass = "s3cret";
    const char *body = "{\"type\":\"view\",\"shortId\":1,\"sessionId\":\"s\"}";
    request(post("/api/explore/interaction", body), &r);
    check_error(&r, 401, "auth: send Authorization: Bearer <password>", -1);
    ck_assert(has_header(&r, "WWW-Authenticate: Bearer realm=\"shortstat\""));
    ck_assert_uint_eq(F.stats.auth_failures_total, 0);

    static const char *const bad[] = {"Bearer s3cre", "Bearer s3cret2", "Basic s3cret",
                                      "Bearers3cret", "bearer", "Bearer  S3CRET"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(reqbuf, sizeof reqbuf, "POST /api/explore/interaction HTTP/1.1\r\n"
                 "Authorization: %s\r\nContent-Length: %zu\r\n\r\n%s", bad[i], strlen(body), body);
        request(reqbuf, &r);
        check_error(&r, 401, "auth: wrong password", -1);
    }
    ck_assert_uint_eq(F.stats.auth_failures_total, sizeof bad / sizeof bad[0]);
    request(get("/nowhere"), &r);
    ck_assert_int_eq(r.status, 401);   /* no map of the API without the password */
    request("HEAD /api/explore/top HTTP/1.1\r\n\r\n", &r);
    ck_assert_int_eq(r.status, 401);   /* headers alone, as for any HEAD */
    ck_assert_uint_eq(interactions(), 0);

    snprintf(reqbuf, sizeof reqbuf, "POST /api/explore/interaction HTTP/1.1\r\n"
             "authorization: bearer   s3cret \r\nContent-Length: %zu\r\n\r\n%s", strlen(body), body);
    request(reqbuf, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_uint_eq(interactions(), 1);

    request(get("/healthz"), &r);
    ck_assert_int_eq(r.status, 200);
    request(get("/metrics"), &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(strstr(r.body, "shortstat_auth_failures_total{protocol=\"http\"} 6\n"));
    request("OPTIONS /api/explore/top HTTP/1.1\r\n\r\n", &r);
    ck_assert_int_eq(r.status, 204);
}
END_TEST

START_TEST(body_too_large)
{
    struct resp r;
    F.env.max_body_bytes = 64;
    /* Declared too big: refused before the body is sent, connection closed. */
    int rc = request("POST /api/explore/interaction HTTP/1.1\r\nContent-Length: 65\r\n\r\n", &r);
    ck_assert_int_eq(rc, HTTP_CLOSE);
    check_error(&r, 413, "body: larger than 64 bytes", -1);
    ck_assert(has_header(&r, "Connection: close"));
    ck_assert_int_eq(feed("GET /healthz HTTP/1.1\r\n\r\n"), HTTP_CLOSE);
    ck_assert_uint_eq(http_conn_pending(&F.conn), 0);

    /* Exactly the limit is fine. */
    reconnect("10.1.2.3");
    char body[65];
    memset(body, ' ', 64);
    body[64] = 0;
    memcpy(body, "{\"type\":\"view\",\"shortId\":1,\"sessionId\":\"s\"}", 43);
    ck_assert_int_eq(request(post("/api/explore/interaction", body), &r), HTTP_OK);
    ck_assert_int_eq(r.status, 200);

    /* Chunked: counted as it arrives. */
    rc = request("POST /api/explore/interaction HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "20\r\n01234567890123456789012345678901\r\n"
                 "21\r\n012345678901234567890123456789012\r\n0\r\n\r\n", &r);
    ck_assert_int_eq(rc, HTTP_CLOSE);
    check_error(&r, 413, "body: larger than 64 bytes", -1);
    ck_assert_uint_eq(interactions(), 1);
}
END_TEST

START_TEST(chunked_body)
{
    struct resp r;
    ck_assert_int_eq(request("POST /api/explore/interaction HTTP/1.1\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n"
                             "10\r\n{\"type\":\"view\",\"\r\n"
                             "1c\r\nshortId\":9,\"sessionId\":\"ch\"}\r\n0\r\n\r\n", &r), HTTP_OK);
    ck_assert_int_eq(r.status, 200);
    ck_assert_uint_eq(interactions(), 1);
}
END_TEST

START_TEST(headers_too_large)
{
    struct resp r;
    F.env.max_header_bytes = 256;
    char big[400];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    snprintf(reqbuf, sizeof reqbuf, "GET /healthz HTTP/1.1\r\nX-Pad: %s\r\n\r\n", big);
    ck_assert_int_eq(request(reqbuf, &r), HTTP_CLOSE);
    check_error(&r, 431, "headers: request line and headers larger than 256 bytes", -1);
    ck_assert(has_header(&r, "Connection: close"));

    /* A long URL, fed a byte at a time: refused as soon as it passes the limit. */
    reconnect("10.1.2.3");
    snprintf(reqbuf, sizeof reqbuf, "GET /api/explore/history/session/%s HTTP/1.1\r\n\r\n", big);
    int rc = HTTP_OK;
    size_t i = 0;
    for (; reqbuf[i] && rc == HTTP_OK; i++)
        rc = http_conn_feed(&F.conn, (const uint8_t *)reqbuf + i, 1);
    ck_assert_int_eq(rc, HTTP_CLOSE);
    ck_assert_uint_le(i, 258);
    char *out = take_all(&F.conn, NULL);
    ck_assert(strncmp(out, "HTTP/1.1 431 ", 13) == 0);
    free(out);

    /* Exactly at the limit passes: count it the way the module does, request
     * line and headers through the blank line. */
    reconnect("10.1.2.3");
    const char *head = "GET /healthz HTTP/1.1\r\nX-Pad: ";
    size_t pad = 256 - strlen(head) - 4;
    snprintf(reqbuf, sizeof reqbuf, "%s%.*s\r\n\r\n", head, (int)pad, big);
    ck_assert_uint_eq(strlen(reqbuf), 256);
    ck_assert_int_eq(request(reqbuf, &r), HTTP_OK);
    ck_assert_int_eq(r.status, 200);
    snprintf(reqbuf, sizeof reqbuf, "%s%.*s\r\n\r\n", head, (int)pad + 1, big);
    ck_assert_int_eq(request(reqbuf, &r), HTTP_CLOSE);
    ck_assert_int_eq(r.status, 431);
}
END_TEST

START_TEST(malformed_http)
{
    static const char *const bad[] = {
        "GARBAGE\r\n\r\n",
        "GET /a\x01 HTTP/1.1\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n",
        "POST /api/explore/interaction HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        "POST /api/explore/interaction HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "POST /api/explore/interaction HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        reconnect("10.1.2.3");
        struct resp r;
        ck_assert_int_eq(request(bad[i], &r), HTTP_CLOSE);
        check_error(&r, 400, "http: ", -1);
        ck_assert(has_header(&r, "Connection: close"));
        ck_assert_int_eq(feed("GET /healthz HTTP/1.1\r\n\r\n"), HTTP_CLOSE);
        ck_assert_uint_eq(http_conn_pending(&F.conn), 0);
    }
    ck_assert_uint_eq(F.stats.bad_requests_total, sizeof bad / sizeof bad[0]);
    reconnect("10.1.2.3");
    struct resp r;
    ck_assert_int_eq(request("GET /healthz HTTP/2.0\r\n\r\n", &r), HTTP_CLOSE);
    check_error(&r, 505, "http: version 2.0 not supported", -1);
    ck_assert_uint_eq(interactions(), 0);
}
END_TEST

START_TEST(connection_close_and_http10)
{
    /* Connection: close ends the connection after its response; the pipelined
     * request behind it is never run. */
    const char *two = "POST /api/explore/session HTTP/1.1\r\nConnection: close\r\n"
                      "Content-Length: 0\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n";
    ck_assert_int_eq(feed(two), HTTP_CLOSE);
    char *out = take_all(&F.conn, NULL);
    const char *p = out;
    struct resp r;
    ck_assert(read_resp(&p, &r, false));
    ck_assert_int_eq(r.status, 200);
    ck_assert(has_header(&r, "Connection: close"));
    ck_assert_str_eq(p, "");
    free(out);

    /* HTTP/1.0: closes unless asked to keep alive. */
    reconnect("10.1.2.3");
    ck_assert_int_eq(request("GET /healthz HTTP/1.0\r\n\r\n", &r), HTTP_CLOSE);
    ck_assert(has_header(&r, "Connection: close"));
    reconnect("10.1.2.3");
    ck_assert_int_eq(request("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &r),
                     HTTP_OK);
    ck_assert(has_header(&r, "Connection: keep-alive"));
    ck_assert_int_eq(request("GET /healthz HTTP/1.1\r\n\r\n", &r), HTTP_OK);
    ck_assert(!strstr(r.head, "Connection:"));

    /* An upgrade is not ours to do: answer, then close. */
    ck_assert_int_eq(request("GET /healthz HTTP/1.1\r\nConnection: Upgrade\r\n"
                             "Upgrade: websocket\r\n\r\n", &r), HTTP_CLOSE);
    ck_assert_int_eq(r.status, 200);
    ck_assert(has_header(&r, "Connection: close"));
}
END_TEST

START_TEST(expect_continue)
{
    const char *body = "{\"type\":\"view\",\"shortId\":1,\"sessionId\":\"s\"}";
    snprintf(reqbuf, sizeof reqbuf, "POST /api/explore/interaction HTTP/1.1\r\n"
             "Expect: 100-continue\r\nContent-Length: %zu\r\n\r\n", strlen(body));
    ck_assert_int_eq(feed(reqbuf), HTTP_OK);
    char *out = take_all(&F.conn, NULL);
    ck_assert_str_eq(out, "HTTP/1.1 100 Continue\r\n\r\n");
    free(out);
    ck_assert_int_eq(feed(body), HTTP_OK);
    out = take_all(&F.conn, NULL);
    ck_assert(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
    free(out);
    /* Too big: the final status instead of 100. */
    F.env.max_body_bytes = 10;
    snprintf(reqbuf, sizeof reqbuf, "POST /api/explore/interaction HTTP/1.1\r\n"
             "Expect: 100-continue\r\nContent-Length: 11\r\n\r\n");
    ck_assert_int_eq(feed(reqbuf), HTTP_CLOSE);
    out = take_all(&F.conn, NULL);
    ck_assert(strncmp(out, "HTTP/1.1 413 ", 13) == 0);
    free(out);
}
END_TEST

START_TEST(output_consume_partial)
{
    ck_assert_int_eq(feed("GET /healthz HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n"), HTTP_OK);
    const uint8_t *p;
    size_t n;
    http_conn_output(&F.conn, &p, &n);
    char *all = strndup((const char *)p, n);
    size_t total = n;
    char *got = calloc(1, total * 2 + 1);
    size_t at = 0;
    while (http_conn_pending(&F.conn)) {   /* a slow socket: 7 bytes per write */
        http_conn_output(&F.conn, &p, &n);
        size_t w = n < 7 ? n : 7;
        memcpy(got + at, p, w);
        at += w;
        http_conn_consume(&F.conn, w);
        if (at == 70)   /* new requests arrive while output is pending */
            ck_assert_int_eq(feed("GET /healthz HTTP/1.1\r\n\r\n"), HTTP_OK);
    }
    ck_assert_uint_eq(at, total + total / 2);
    ck_assert(memcmp(got, all, total) == 0);
    free(all);
    free(got);
}
END_TEST

/* ---- pipelining, split anywhere ----------------------------------------------------------- */

/* Every kind of request, keep-alive, back to back; built once with exact
 * lengths. */
static char pipeline_script[8192];
static size_t pipeline_len;
#define PIPELINE_RESPONSES 14

static void script_add(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void script_add(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(pipeline_script + pipeline_len, sizeof pipeline_script - pipeline_len, fmt, ap);
    va_end(ap);
    ck_assert(n > 0 && (size_t)n < sizeof pipeline_script - pipeline_len);
    pipeline_len += (size_t)n;
}

static void script_post(const char *path, const char *extra, const char *body)
{
    script_add("POST %s HTTP/1.1\r\n%sContent-Length: %zu\r\n\r\n%s", path, extra, strlen(body),
               body);
}

static void build_script(void)
{
    if (pipeline_len)
        return;
    script_post("/api/explore/interaction", "Host: t\r\nUser-Agent: ua1\r\n",
                "{\"type\":\"view\",\"shortId\":1,\"sessionId\":\"p1\",\"watchMs\":3000,\"userId\":5}");
    script_post("/api/explore/interaction", "",
                "[{\"type\":\"impression\",\"shortId\":2,\"sessionId\":\"p1\"},"
                "{\"type\":\"skip\",\"shortId\":3,\"sessionId\":\"p1\"}]");
    const char *c1 = "[{\"ty", *c2 = "pe\":\"view\",\"shortId\":4,\"sessionId\":\"p2\"},1]";
    script_add("POST /api/explore/interaction HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
               "%zx\r\n%s\r\n%zx\r\n%s\r\n0\r\n\r\n", strlen(c1), c1, strlen(c2), c2);
    script_post("/api/explore/save/1", "", "{\"userId\":5}");
    script_post("/api/explore/share/1", "", "{\"sessionId\":\"p1\",\"platform\":\"whatsapp\"}");
    script_add("\r\n");   /* a stray CRLF between requests is allowed */
    script_add("GET /api/explore/stats/1 HTTP/1.1\r\n\r\n");
    script_add("GET /api/explore/top?k=3&by=view_count HTTP/1.1\r\n\r\n");
    script_add("GET /api/explore/history/session/p1?limit=2 HTTP/1.1\r\n\r\n");
    script_add("HEAD /api/explore/history/user/5 HTTP/1.1\r\n\r\n");
    script_post("/api/explore/session", "", "");
    script_add("GET /nope HTTP/1.1\r\n\r\n");
    script_add("PUT /healthz HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}");
    script_add("GET /healthz HTTP/1.1\r\n\r\n");
    script_add("GET /metrics HTTP/1.1\r\n\r\n");
}

/* Runs the script on a fresh engine, fed in the given pieces; returns the
 * output (malloc'd) and the final engine check. */
static char *run_script(const size_t *cuts, size_t ncuts, size_t *outlen)
{
    struct fx f;
    fx_open(&f, "127.0.0.1");
    f.tick_ns = 0;   /* identical latencies whatever the split */
    size_t len = pipeline_len, at = 0;
    char *out = malloc(1);
    size_t on = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        int rc = http_conn_feed(&f.conn, (const uint8_t *)pipeline_script + at, end - at);
        ck_assert_int_eq(rc, HTTP_OK);
        at = end;
        size_t n;
        char *piece = take_all(&f.conn, &n);   /* drain as a server would */
        out = realloc(out, on + n + 1);
        memcpy(out + on, piece, n);
        on += n;
        free(piece);
    }
    out[on] = 0;
    ck_assert_uint_eq(f.stats.requests_total, PIPELINE_RESPONSES);
    fx_close(&f);
    *outlen = on;
    return out;
}

static void check_script_output(const char *out)
{
    static const int want[PIPELINE_RESPONSES] = {200, 200, 400, 200, 200, 200, 200, 200, 200, 200,
                                                 404, 405, 200, 200};
    const char *p = out;
    for (int i = 0; i < PIPELINE_RESPONSES; i++) {
        struct resp r;
        ck_assert_msg(read_resp(&p, &r, i == 8), "response %d missing", i);
        ck_assert_msg(r.status == want[i], "response %d: %d", i, r.status);
    }
    ck_assert_str_eq(p, "");
}

START_TEST(pipeline_every_split)
{
    build_script();
    size_t len = pipeline_len, ref_len;
    char *ref = run_script(NULL, 0, &ref_len);
    check_script_output(ref);
    ck_assert(strstr(ref, "\"recorded\":2}"));
    ck_assert(strstr(ref, "\"error\":\"body: each interaction must be a JSON object\",\"index\":1"));
    for (size_t cut = 1; cut < len; cut++) {
        size_t n;
        char *out = run_script(&cut, 1, &n);
        ck_assert_msg(n == ref_len && memcmp(out, ref, n) == 0, "split at %zu differs", cut);
        free(out);
    }
    /* A byte at a time. */
    size_t *cuts = malloc(len * sizeof *cuts);
    for (size_t i = 0; i < len - 1; i++)
        cuts[i] = i + 1;
    size_t n;
    char *out = run_script(cuts, len - 1, &n);
    ck_assert(n == ref_len && memcmp(out, ref, n) == 0);
    free(out);
    free(cuts);
    free(ref);
}
END_TEST

/* The engine out of memory mid-request: 500, nothing recorded, and the
 * next request works. Every allocation the request makes is failed in
 * turn, until one goes through with none left to fail. */
START_TEST(engine_out_of_memory)
{
    static const char body[] =
        "[{\"type\":\"view\",\"shortId\":71,\"sessionId\":\"o1\",\"watchMs\":5},"
        "{\"type\":\"share\",\"shortId\":72,\"userId\":9,\"platform\":\"telegram\"},"
        "{\"type\":\"save\",\"shortId\":71,\"sessionId\":\"o2\",\"userAgent\":\"ua/1\"}]";
    struct resp r;
    int refused = 0;
    for (uint64_t nth = 1;; nth++) {
        uint64_t before = interactions();
        eng_test_fail_alloc(F.eng, nth);
        request(post("/api/explore/interaction", body), &r);
        eng_test_fail_alloc(F.eng, 0);
        if (r.status == 200) {
            ck_assert_uint_eq(interactions(), before + 3);
            break;
        }
        check_error(&r, 500, "engine: out of memory", -1);
        ck_assert_uint_eq(interactions(), before);
        struct eng_err e = {0};
        ck_assert_msg(eng_verify(F.eng, &e) == 0, "after failure %llu: %s",
                      (unsigned long long)nth, e.msg);
        refused++;
        ck_assert_int_lt(refused, 10000);
    }
    ck_assert_int_gt(refused, 0);
    ck_assert_uint_eq(responses(500), (uint64_t)refused);
}
END_TEST

/* Fail each allocation of the script in turn: the feed reports HTTP_ENOMEM,
 * nothing leaks (ASan), the engine stays consistent (fx_close verifies). */
START_TEST(out_of_memory)
{
    build_script();
    long n_allocs = 0;
    for (long fail = 1;; fail++) {
        struct fx f;
        fx_open(&f, "127.0.0.1");
        f.fail_at = fail;
        int rc = http_conn_feed(&f.conn, (const uint8_t *)pipeline_script, pipeline_len);
        bool reached = f.allocs >= fail;
        if (reached)
            ck_assert_msg(rc == HTTP_ENOMEM, "allocation %ld failed but feed gave %d", fail, rc);
        else
            ck_assert_int_eq(rc, HTTP_OK);
        n_allocs = f.allocs;
        fx_close(&f);
        if (!reached)
            break;
    }
    ck_assert_int_gt(n_allocs, 5);
}
END_TEST

static long json_allocs, json_fail_at;

static void *failing_malloc(size_t n)
{
    return ++json_allocs == json_fail_at ? NULL : malloc(n);
}

START_TEST(json_out_of_memory)
{
    struct resp r;
    json_malloc_t m;
    json_free_t fr;
    json_get_alloc_funcs(&m, &fr);
    json_set_alloc_funcs(failing_malloc, free);
    long fails = 0;
    for (json_fail_at = 1;; json_fail_at++) {   /* each of jansson's allocations in turn */
        json_allocs = 0;
        request(post("/api/explore/interaction",
                     "[{\"type\":\"view\",\"shortId\":1,\"userId\":1,\"sessionId\":\"s\"}]"), &r);
        if (json_allocs < json_fail_at)
            break;
        /* jansson reports some of its failed allocations as syntax errors. */
        if (r.status == 500)
            check_error(&r, 500, "body: out of memory decoding JSON", -1);
        else
            check_error(&r, 400, "body: invalid JSON", -1);
        ck_assert_uint_eq(interactions(), 0);
        fails += r.status == 500;
    }
    json_set_alloc_funcs(m, fr);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_ge(fails, 1);   /* the lexer's buffer, at least */
    ck_assert_uint_eq(responses(500), (uint64_t)fails);
}
END_TEST

START_TEST(pipeline_random_splits)
{
    const char *env = getenv("HTTP_TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : 0x5EED0001ull;
    build_script();
    size_t len = pipeline_len, ref_len;
    char *ref = run_script(NULL, 0, &ref_len);
    uint64_t s = seed;
    for (int iter = 0; iter < 200; iter++) {
        size_t cuts[16], nc = 0, at = 0;
        while (nc < 16) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            at += 1 + (size_t)((s >> 33) % (len / 6));
            if (at >= len)
                break;
            cuts[nc++] = at;
        }
        size_t n;
        char *out = run_script(cuts, nc, &n);
        ck_assert_msg(n == ref_len && memcmp(out, ref, n) == 0,
                      "output differs; replay with HTTP_TEST_SEED=%" PRIu64 " (iteration %d)", seed,
                      iter);
        free(out);
    }
    free(ref);
}
END_TEST

/* ---- TCP tests (curl, raw sockets) against a running shortstatd ----------------------------
 *
 * They start $SHORTSTAT_BUILD/shortstatd with a temp dir, its line protocol
 * on a port the kernel picks (--port 0, read from its log) and HTTP on one
 * picked free, and drive it with curl, raw sockets and redis-cli. The
 * server's log is kept beside the dir for the failure messages.
 */

struct tcp_srv {
    pid_t pid;
    uint16_t port, http_port;
    char dir[64];
    char log[72];
};

static struct tcp_srv T;

static int tcp_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {.tv_sec = 30};  /* a hung server fails the test, not the run */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* Runs shortstatd on http_port, for run_start_http. */
static pid_t tcp_spawn(void *ctx, uint16_t http_port)
{
    (void)ctx;
    const char *build = getenv("SHORTSTAT_BUILD");
    char bin[512], hport[16];
    snprintf(bin, sizeof bin, "%s/shortstatd", build ? build : SHORTSTAT_BUILD);
    snprintf(hport, sizeof hport, "%u", http_port);
    int log = open(T.log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    ck_assert_int_ge(log, 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);  /* a failed test, even with CK_FORK=no */
        dup2(log, 1);
        dup2(log, 2);
        execl(bin, bin, "--bind", "127.0.0.1", "--port", "0", "--http-port", hport, "--dir",
              T.dir, (char *)NULL);
        _exit(127);
    }
    close(log);
    return pid;
}

/* Starts the server with a fresh temp dir, its log beside it, and waits
 * until it listens on both ports. */
static void tcp_start(void)
{
    run_mkdtemp(T.dir, sizeof T.dir, "http");
    snprintf(T.log, sizeof T.log, "%s.log", T.dir);
    T.http_port = run_start_http(T.log, tcp_spawn, NULL, &T.pid, &T.port);
}

static void tcp_stop(void)
{
    int st = 0;
    kill(T.pid, SIGTERM);
    if (!run_reap(T.pid, RUN_WAIT_MS, &st)) {  /* SIGTERM did not end it: that is the failure, not a hang */
        run_kill(&T.pid);
        char *l = run_read_log(T.log);
        ck_abort_msg("shortstatd still running %d s after SIGTERM; log:\n%s", RUN_WAIT_MS / 1000,
                     l);
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char *l = run_read_log(T.log);
        ck_abort_msg("shortstatd exit status %d; log:\n%s", st, l);
    }
    run_rmtree(T.dir);
    unlink(T.log);
}

/* Runs a shell command; returns its stdout (malloc'd). */
static char *sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t cap = 1 << 16, n = 0;
    char *out = malloc(cap);
    size_t r;
    while ((r = fread(out + n, 1, cap - n - 1, p)) > 0) {
        n += r;
        if (cap - n < 2)
            out = realloc(out, cap *= 2);
    }
    out[n] = 0;
    pclose(p);
    return out;
}

/* Writes all of req on a new connection, reads until the server closes or
 * `want` responses' worth of "HTTP/1.1 " lines arrive. */
static char *raw_exchange(const char *req, size_t len, int want, bool *closed)
{
    int fd = tcp_connect(T.http_port);
    ck_assert_int_ge(fd, 0);
    for (size_t off = 0; off < len;) {
        ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (w < 0 && (errno == EPIPE || errno == ECONNRESET))
            break;   /* the server answered early (413, 431) and closed */
        ck_assert_int_gt(w, 0);
        off += (size_t)w;
    }
    size_t cap = 1 << 20, n = 0;
    char *out = malloc(cap);
    *closed = false;
    for (;;) {
        int seen = 0;
        out[n] = 0;
        for (const char *p = out; (p = strstr(p, "HTTP/1.1 ")); p++)
            seen++;
        if (want > 0 && seen >= want)
            break;
        ssize_t r = read(fd, out + n, cap - n - 1);
        if (r <= 0) {
            /* Closing with our unread request bytes in its buffer makes the
             * server's kernel send RST: also a close. */
            *closed = r == 0 || errno == ECONNRESET;
            break;
        }
        n += (size_t)r;
    }
    out[n] = 0;
    close(fd);
    return out;
}

static void tcp_still_serving(void)
{
    char *o = sh("curl -s -o /dev/null -w '%%{http_code}' http://127.0.0.1:%u/healthz", T.http_port);
    ck_assert_str_eq(o, "200");
    free(o);
    o = sh("redis-cli -p %u PING", T.port);
    ck_assert_str_eq(o, "PONG\n");
    free(o);
}

START_TEST(tcp_curl_and_line_protocol)
{
    tcp_start();
    /* The "done when": curl a view, see it with redis-cli STATS. */
    char *o = sh("curl -s -w ' %%{http_code}' -d '{\"type\":\"view\",\"shortId\":1,\"sessionId\":"
                 "\"s1\",\"watchMs\":3000}' http://127.0.0.1:%u/api/explore/interaction", T.http_port);
    ck_assert_str_eq(o, "{\"ok\":true,\"recorded\":1} 200");
    free(o);
    o = sh("redis-cli -p %u STATS 1 | head -4 | tr '\\n' ' '", T.port);
    ck_assert_str_eq(o, "impressions 0 views 1 ");
    free(o);
    /* And the other way round. */
    o = sh("redis-cli -p %u TRACK 2 view session=s2 watch_ms=1500", T.port);
    ck_assert_str_eq(o, "OK\n");
    free(o);
    o = sh("curl -s http://127.0.0.1:%u/api/explore/stats/2", T.http_port);
    ck_assert_msg(strstr(o, "\"views\":1,") && strstr(o, "\"avgWatchMs\":1500.000000,"), "%s", o);
    free(o);
    o = sh("redis-cli -p %u SCORE 2", T.port);
    char *h = sh("curl -s http://127.0.0.1:%u/api/explore/stats/2", T.http_port);
    char want[96];
    snprintf(want, sizeof want, "\"score\":%.*s,", (int)strcspn(o, "\n"), o);
    ck_assert_msg(strstr(h, want), "%s not in %s", want, h);
    free(o);
    free(h);

    /* A batch failing in its middle records nothing, as both protocols see. */
    o = sh("curl -s -w ' %%{http_code}' -d '[{\"type\":\"view\",\"shortId\":3,\"sessionId\":\"b\"},"
           "{\"type\":\"view\",\"shortId\":3,\"watchMs\":-1},{\"type\":\"view\",\"shortId\":3}]' "
           "http://127.0.0.1:%u/api/explore/interaction", T.http_port);
    ck_assert_msg(strstr(o, "\"index\":1}") && strstr(o, " 400"), "%s", o);
    free(o);
    o = sh("redis-cli -p %u STATS 3 | head -4 | tr '\\n' ' '", T.port);
    ck_assert_str_eq(o, "impressions 0 views 0 ");
    free(o);

    /* save, share, session, top, history through curl. */
    o = sh("curl -s -d '{\"userId\":42}' http://127.0.0.1:%u/api/explore/save/1", T.http_port);
    ck_assert_str_eq(o, "{\"ok\":true,\"recorded\":1}");
    free(o);
    o = sh("curl -s -d '{\"userId\":42,\"platform\":\"whatsapp\"}' "
           "http://127.0.0.1:%u/api/explore/share/1", T.http_port);
    ck_assert_str_eq(o, "{\"ok\":true,\"recorded\":1}");
    free(o);
    o = sh("curl -s -X POST http://127.0.0.1:%u/api/explore/session", T.http_port);
    ck_assert_msg(strncmp(o, "{\"ok\":true,\"sessionId\":\"g-", 26) == 0, "%s", o);
    free(o);
    o = sh("curl -s 'http://127.0.0.1:%u/api/explore/top?k=1&by=view_count'", T.http_port);
    ck_assert_str_eq(o, "{\"ok\":true,\"by\":\"view_count\",\"items\":[{\"shortId\":1,\"value\":1}]}");
    free(o);
    o = sh("curl -s 'http://127.0.0.1:%u/api/explore/history/user/42?limit=1'", T.http_port);
    ck_assert_msg(strstr(o, "\"type\":\"share\"") && strstr(o, "\"ip\":\"127.0.0.1\"") &&
                  strstr(o, "\"userAgent\":\"curl/"), "%s", o);
    free(o);

    /* keep-alive: curl reuses one connection for several URLs. */
    o = sh("curl -sv http://127.0.0.1:%u/healthz http://127.0.0.1:%u/healthz 2>&1 >/dev/null "
           "| grep -c 'Re-using existing connection\\|Reusing existing'", T.http_port, T.http_port);
    ck_assert_str_eq(o, "1\n");
    free(o);

    /* Error statuses through curl. */
    o = sh("for u in /nope /api/explore/interaction; do curl -s -o /dev/null -w '%%{http_code} ' "
           "http://127.0.0.1:%u$u; done", T.http_port);
    ck_assert_str_eq(o, "404 405 ");
    free(o);
    o = sh("curl -s -o /dev/null -w '%%{http_code}' -d '{\"type\":' "
           "http://127.0.0.1:%u/api/explore/interaction", T.http_port);
    ck_assert_str_eq(o, "400");
    free(o);

    /* /metrics through curl, checked by the format checker. */
    o = sh("curl -s http://127.0.0.1:%u/metrics", T.http_port);
    double got[1][2] = {{0}};
    static const char *const views[] = {"shortstat_interactions_total{type=\"view\"}"};
    prom_check(o, strlen(o), got, views, 1);
    ck_assert(got[0][1] == 1 && got[0][0] == 2);
    free(o);
    /* Prometheus' own checker, where installed (Debian: prometheus). */
    o = sh("if command -v promtool >/dev/null; then curl -s http://127.0.0.1:%u/metrics | "
           "promtool check metrics 2>&1; echo \"rc=$?\"; else echo skipped; fi", T.http_port);
    ck_assert_msg(strcmp(o, "rc=0\n") == 0 || strcmp(o, "skipped\n") == 0, "promtool: %s", o);
    free(o);
    tcp_still_serving();
    tcp_stop();
}
END_TEST

START_TEST(tcp_raw_sockets)
{
    tcp_start();
    bool closed;
    /* Malformed: 400 and the server closes. */
    static const char garbage[] = "GARBAGE\r\n\r\n";
    char *o = raw_exchange(garbage, sizeof garbage - 1, 0, &closed);
    ck_assert_msg(strncmp(o, "HTTP/1.1 400 ", 13) == 0 && closed, "%s", o);
    free(o);
    /* 431 and 413. */
    char *big = malloc(200000);
    int n = snprintf(big, 200000, "GET /healthz HTTP/1.1\r\nX-Pad: ");
    memset(big + n, 'a', 100000);
    memcpy(big + n + 100000, "\r\n\r\n", 5);
    o = raw_exchange(big, strlen(big), 0, &closed);
    ck_assert_msg(strncmp(o, "HTTP/1.1 431 ", 13) == 0 && closed, "%.100s", o);
    free(o);
    static const char huge[] = "POST /api/explore/interaction HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n";
    o = raw_exchange(huge, sizeof huge - 1, 0, &closed);
    ck_assert_msg(strncmp(o, "HTTP/1.1 413 ", 13) == 0 && closed, "%s", o);
    free(o);
    /* 401 needs --requirepass: covered in-process. Pipelining: 1000 requests
     * in one write, answered in order. */
    size_t len = 0;
    for (int i = 0; i < 1000; i++) {
        char body[128];
        int bl = snprintf(body, sizeof body,
                          "{\"type\":\"impression\",\"shortId\":%d,\"sessionId\":\"p%d\"}", i, i);
        len += (size_t)snprintf(big + len, 200000 - len,
                                "POST /api/explore/interaction HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s",
                                bl, body);
    }
    o = raw_exchange(big, len, 1000, &closed);
    int count = 0;
    for (const char *p = o; (p = strstr(p, "HTTP/1.1 ")); p++) {
        ck_assert_msg(strncmp(p, "HTTP/1.1 ", 9) == 0 && (strncmp(p + 9, "200", 3) == 0 ||
                      (count == 0 && strncmp(p + 9, "400", 3) == 0)), "%.80s", p);
        count++;
    }
    ck_assert_int_eq(count, 1000);   /* shortId 0 is refused, the rest recorded */
    free(o);
    free(big);
    o = sh("redis-cli -p %u INFO | grep -E '^interactions_total:' | tr -d '\\r'", T.port);
    ck_assert_str_eq(o, "interactions_total:999\n");
    free(o);
    tcp_still_serving();
    tcp_stop();
}
END_TEST

static TCase *http_tcp_tcase(void)
{
    TCase *tc = tcase_create("tcp");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, tcp_curl_and_line_protocol);
    tcase_add_test(tc, tcp_raw_sockets);
    return tc;
}

extern Suite *http_suite(void);   /* `extern`: the Makefile lists lines starting "Suite *" */
Suite *http_suite(void)
{
    Suite *s = suite_create("http");
    TCase *tc = tcase_create("endpoints");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, interaction_single);
    tcase_add_test(tc, interaction_ip_ua_defaults);
    tcase_add_test(tc, interaction_forwarded_for);
    tcase_add_test(tc, interaction_batch);
    tcase_add_test(tc, interaction_batch_fails_in_middle);
    tcase_add_test(tc, interaction_field_errors);
    tcase_add_test(tc, save_share);
    tcase_add_test(tc, writes_refused_over_maxmemory);
    tcase_add_test(tc, session_new);
    tcase_add_test(tc, guest_gets_a_session);
    tcase_add_test(tc, stats_queries);
    tcase_add_test(tc, top_queries);
    tcase_add_test(tc, history_queries);
    tcase_add_test(tc, json_escaping);
    tcase_add_test(tc, healthz);
    tcase_add_test(tc, metrics_format);
    suite_add_tcase(s, tc);

    tc = tcase_create("protocol");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, not_found_and_methods);
    tcase_add_test(tc, auth);
    tcase_add_test(tc, body_too_large);
    tcase_add_test(tc, chunked_body);
    tcase_add_test(tc, headers_too_large);
    tcase_add_test(tc, malformed_http);
    tcase_add_test(tc, connection_close_and_http10);
    tcase_add_test(tc, expect_continue);
    tcase_add_test(tc, output_consume_partial);
    tcase_add_test(tc, json_out_of_memory);
    tcase_add_test(tc, engine_out_of_memory);
    suite_add_tcase(s, tc);

    tc = tcase_create("pipeline");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, pipeline_every_split);
    tcase_add_test(tc, pipeline_random_splits);
    tcase_add_test(tc, out_of_memory);
    suite_add_tcase(s, tc);

    suite_add_tcase(s, http_tcp_tcase());
    return s;
}
