/* SPDX-License-Identifier: MIT */
/*
 * fuzz_http.c -- libFuzzer target for the HTTP request path: random bytes
 * into http_conn_feed() with a real engine, split into reads at
 * input-chosen points, output drained like a slow socket would.
 *
 * Input: byte 0 picks the setup (auth, trusted proxy, tiny limits), byte 1
 * the read size; the rest is the byte stream. Checked: return codes are
 * HTTP_OK/HTTP_CLOSE (HTTP_ENOMEM cannot happen without an allocator hook),
 * output always starts at a status line, nothing is parsed or written after
 * HTTP_CLOSE, the stats count what was answered, and eng_verify holds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/eng.h"
#include "net/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int64_t fz_clock(void *ud)
{
    (void)ud;
    return 1700000000000;
}

static void fz_random(void *ud, uint8_t *out, size_t n)
{
    uint64_t *s = ud;
    for (size_t i = 0; i < n; i++) {
        *s = *s * 6364136223846793005ull + 1442695040888963407ull;
        out[i] = (uint8_t)(*s >> 56);
    }
}

static int64_t fz_mono(void *ud)
{
    (void)ud;
    return 42;
}

static void fz_fill(void *ud, struct http_metrics *m)
{
    (void)ud;
    memset(m, 0, sizeof *m);
    m->version = "fuzz";
    m->snapshot_status = HTTP_SNAP_OK;
    m->now_unix_ms = 1700000001000;
    m->last_snapshot_unix_ms = 1700000000000;
}

static void check_output(const struct http_conn *c)
{
    const uint8_t *p;
    size_t n;
    http_conn_output(c, &p, &n);
    if (n >= 9 && memcmp(p, "HTTP/1.1 ", 9) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t mode = data[0], step = data[1];
    data += 2;
    size -= 2;

    uint64_t rng = 1;
    struct eng_config cfg = {.history = 8, .clock = fz_clock, .random = fz_random, .ud = &rng};
    struct eng *e = eng_create(&cfg);
    if (!e)
        return 0;
    struct http_stats st;
    memset(&st, 0, sizeof st);
    struct http_env env = {
        .eng = e, .stats = &st, .clock_ns = fz_mono, .fill_metrics = fz_fill,
        .requirepass = (mode & 1) ? "pw" : NULL,
        .trust_proxy = (mode & 2) != 0,
        .cors_origin = (mode & 4) ? "*" : NULL,
        .max_header_bytes = (mode & 8) ? 64 : 0,
        .max_body_bytes = (mode & 16) ? 32 : 0,
    };
    struct http_conn c;
    if (http_conn_init(&c, &env, (mode & 32) ? "::1" : "127.0.0.1") != HTTP_OK)
        abort();

    size_t chunk = step ? step : size;   /* 0: everything in one read */
    bool closed = false, aligned = true;
    for (size_t off = 0, round = 0; off < size; round++) {
        size_t n = size - off < chunk ? size - off : chunk;
        size_t before = http_conn_pending(&c);
        int rc = http_conn_feed(&c, data + off, n);
        if (rc != HTTP_OK && rc != HTTP_CLOSE)
            abort();
        if (closed && (rc != HTTP_CLOSE || http_conn_pending(&c) != before))
            abort();   /* nothing after a closing response */
        closed = rc == HTTP_CLOSE;
        off += n;
        if (aligned)
            check_output(&c);
        /* Drain like a socket that sometimes takes only part. */
        size_t pend = http_conn_pending(&c);
        http_conn_consume(&c, (mode & 64) && (round & 1) ? pend / 2 : pend);
        aligned = http_conn_pending(&c) == 0;
    }
    uint64_t by_code = 0;
    for (size_t i = 0; i < HTTP_NCODES; i++)
        by_code += st.responses[i];
    if (by_code != st.requests_total || st.lat_count != st.requests_total)
        abort();
    http_conn_free(&c);
    if (st.connections != 0)
        abort();
    struct eng_err err;
    if (eng_verify(e, &err) != 0)
        abort();
    eng_destroy(e);
    return 0;
}
