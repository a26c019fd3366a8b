/* SPDX-License-Identifier: MIT */
/*
 * http.c -- HTTP/1.1 + JSON endpoints of the engine, and Prometheus /metrics.
 *
 * Parsing. libhttp-parser does the HTTP grammar (request line, headers,
 * Content-Length vs chunked, keep-alive rules) as a streaming parser. We pause
 * it in on_headers_complete and on_message_complete, so every
 * http_parser_execute() stops at a request boundary. The feed loop therefore
 * knows exactly how many bytes the request line and headers took (431), can
 * refuse a declared body that is too big before reading it (413) or answer
 * "100 Continue", and runs each request outside the parser's callbacks.
 * Requests run in arrival order and their responses are appended to c->out in
 * that order: that is all keep-alive and pipelining need.
 *
 * Memory. Per request we keep only what we use: the URL and four header values
 * (Authorization, User-Agent, X-Forwarded-For, Expect) in c->hdr, the body in
 * c->body. Both are bounded by the limits and reset, not freed, between
 * requests, so a keep-alive connection stops allocating after its first
 * requests; oversized scratch is released after the request that grew it.
 * Bodies are decoded by jansson (a tree per request: HTTP is the convenience
 * path, RESP pipelining is the bulk path). Responses are written by hand into
 * c->tmp (the JSON writer below builds no tree), then framed into c->out with
 * their Content-Length.
 *
 * Same values as the line protocol: avg_watch_ms, engagement_rate and score
 * use its "%.6f" format; field errors are the engine's "<field>: <why>" with
 * the engine's field names mapped to the JSON ones (watch_ms -> watchMs).
 *
 * Invariants: c->phase goes IDLE -> HEADERS -> BODY -> DONE -> IDLE; once a
 * closing response is queued c->closed is set and no byte is parsed after it;
 * a failed request records nothing (batches use eng_record_batch).
 */
#include "net/http.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include "net/cmd.h"  /* net_parse_u64, net_metric_is_decimal: shared with RESP */

enum http_phase { PH_IDLE = 0, PH_HEADERS, PH_BODY, PH_DONE };
enum http_fail { FAIL_NONE = 0, FAIL_HDR_BIG, FAIL_BODY_BIG };
/* Header values we keep, indexes into hv_off/hv_len; 0 = ignored. */
enum http_hdr { H_NONE = 0, H_AUTH, H_UA, H_XFF, H_EXPECT, H_COUNT };
_Static_assert(H_COUNT == sizeof(((struct http_conn *)0)->hv_off) / sizeof(size_t),
               "hv_off has one slot per kept header");

const uint64_t http_lat_bounds_ns[HTTP_LAT_NBUCKETS] = {
    10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,
    5000000, 10000000, 25000000, 50000000, 100000000, 1000000000,
};
static const char *const lat_le[HTTP_LAT_NBUCKETS] = {
    "0.00001", "0.000025", "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025",
    "0.005", "0.01", "0.025", "0.05", "0.1", "1",
};
const uint16_t http_codes[HTTP_NCODES] = {200, 204, 400, 401, 404, 405,
                                           413, 431, 500, 503, 505, 507};

#define SCRATCH_KEEP (64u * 1024)   /* scratch above this is freed after a request */
#define OUT_KEEP (1024u * 1024)     /* drained output above this is freed */
#define MSG_MAX 256u

/* ---- buffers --------------------------------------------------------------- */

static void *mem_realloc(const struct http_conn *c, void *p, size_t n)
{
    return c->env->realloc_fn ? c->env->realloc_fn(c->env->ud, p, n) : realloc(p, n);
}

/* Makes room for `extra` more bytes after b->len. Live bytes are moved to the
 * front first when that avoids growing. On failure sets c->oom. */
static bool buf_reserve(struct http_conn *c, struct http_buf *b, size_t extra)
{
    if (c->oom)
        return false;
    if (b->cap - b->len >= extra)
        return true;
    if (b->off > 0) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->cap - b->len >= extra)
            return true;
    }
    if (extra > SIZE_MAX / 2 - b->len) {
        c->oom = true;
        return false;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra)
        cap *= 2;
    uint8_t *p = mem_realloc(c, b->p, cap);
    if (!p) {
        c->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void buf_put(struct http_conn *c, struct http_buf *b, const void *s, size_t n)
{
    if (n == 0 || !buf_reserve(c, b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void buf_puts(struct http_conn *c, struct http_buf *b, const char *s)
{
    buf_put(c, b, s, strlen(s));
}

static void buf_putc(struct http_conn *c, struct http_buf *b, char ch)
{
    if (!buf_reserve(c, b, 1))
        return;
    b->p[b->len++] = (uint8_t)ch;
}

__attribute__((format(printf, 3, 4)))
static void buf_printf(struct http_conn *c, struct http_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !buf_reserve(c, b, (size_t)n + 1))
        return;
    va_start(ap, fmt);
    vsnprintf((char *)b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void buf_u64(struct http_conn *c, struct http_buf *b, uint64_t v)
{
    char d[20];
    size_t i = sizeof d;
    do {
        d[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    buf_put(c, b, d + i, sizeof d - i);
}

static void buf_i64(struct http_conn *c, struct http_buf *b, int64_t v)
{
    if (v < 0) {
        buf_putc(c, b, '-');
        buf_u64(c, b, (uint64_t)0 - (uint64_t)v);
    } else {
        buf_u64(c, b, (uint64_t)v);
    }
}

static void buf_release(struct http_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* Empties b, freeing it when a big request left it large. */
static void buf_reset(struct http_buf *b, size_t keep)
{
    if (b->cap > keep)
        buf_release(b);
    b->off = b->len = 0;
}

/* ---- JSON output ------------------------------------------------------------ */

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs, no
 * surrogates, nothing past U+10FFFF), or 0. */
static size_t utf8_len(const uint8_t *s, size_t n)
{
    uint8_t b = s[0];
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (b < 0x80)
        return 1;
    if (b >= 0xC2 && b <= 0xDF)
        need = 1;
    else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        if (b == 0xE0)
            lo = 0xA0;
        else if (b == 0xED)
            hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        if (b == 0xF0)
            lo = 0x90;
        else if (b == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (n < need + 1 || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i <= need; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return need + 1;
}

/* A JSON string. Bytes that are not UTF-8 (a raw User-Agent may hold any)
 * become U+FFFD so the document always parses. */
static void jw_str(struct http_conn *c, struct http_buf *b, const char *str, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *s = (const uint8_t *)str;
    buf_putc(c, b, '"');
    size_t run = 0; /* start of bytes copied verbatim */
    size_t i = 0;
    while (i < n) {
        uint8_t ch = s[i];
        size_t l = 1;
        const char *esc = NULL;
        char u[6];
        if (ch == '"')
            esc = "\\\"";
        else if (ch == '\\')
            esc = "\\\\";
        else if (ch == '\n')
            esc = "\\n";
        else if (ch == '\r')
            esc = "\\r";
        else if (ch == '\t')
            esc = "\\t";
        else if (ch < 0x20) {
            memcpy(u, "\\u00", 4);
            u[4] = hex[ch >> 4];
            u[5] = hex[ch & 15];
        } else if (ch >= 0x80) {
            l = utf8_len(s + i, n - i);
            if (l == 0)
                esc = "\\ufffd";
        }
        if (esc == NULL && ch >= 0x20) {
            i += l;
            continue;
        }
        buf_put(c, b, s + run, i - run);
        if (esc)
            buf_puts(c, b, esc);
        else
            buf_put(c, b, u, sizeof u);
        i += 1;
        run = i;
    }
    buf_put(c, b, s + run, n - run);
    buf_putc(c, b, '"');
}

static void jw_cstr(struct http_conn *c, struct http_buf *b, const char *s)
{
    jw_str(c, b, s, strlen(s));
}

/* "key": -- keys are literals of ours, no escaping needed. */
static void jw_key(struct http_conn *c, struct http_buf *b, const char *k)
{
    buf_putc(c, b, '"');
    buf_puts(c, b, k);
    buf_put(c, b, "\":", 2);
}

/* The line protocol's decimal format. */
static void jw_fixed6(struct http_conn *c, struct http_buf *b, double v)
{
    if (!isfinite(v))
        v = 0;
    buf_printf(c, b, "%.6f", v);
}

/* ---- small parsers ---------------------------------------------------------- */

/* Numbers in paths, queries and string ids are read as RESP reads them
 * (net_parse_u64): canonical decimal, so "007" is not a second name for 7. */
static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
    return net_parse_u64((const uint8_t *)s, n, out) == NET_OK;
}

static ssize_t pct_decode(const char *s, size_t n, char *out, size_t cap, bool plus_space);

/* A numeric path parameter: percent-decoded first, as every path
 * parameter may be (docs/http.md). */
static bool path_u64(const char *s, size_t n, uint64_t *out)
{
    char buf[32];
    ssize_t l = pct_decode(s, n, buf, sizeof buf, false);
    return l > 0 && parse_u64(buf, (size_t)l, out);
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Percent-decodes s into out (cap bytes); plus_space for query strings.
 * Returns the decoded length, -1 on a bad escape, -2 when it does not fit. */
static ssize_t pct_decode(const char *s, size_t n, char *out, size_t cap, bool plus_space)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '%') {
            int h, l;
            if (i + 2 >= n || (h = hexval(s[i + 1])) < 0 || (l = hexval(s[i + 2])) < 0)
                return -1;
            ch = (char)(h * 16 + l);
            i += 2;
        } else if (ch == '+' && plus_space) {
            ch = ' ';
        }
        if (o == cap)
            return -2;
        out[o++] = ch;
    }
    return (ssize_t)o;
}

static bool ieq(const char *a, size_t an, const char *b)
{
    size_t bn = strlen(b);
    if (an != bn)
        return false;
    for (size_t i = 0; i < an; i++) {
        char x = a[i];
        if (x >= 'A' && x <= 'Z')
            x = (char)(x + 32);
        if (x != b[i])
            return false;
    }
    return true;
}

static void trim(const char **s, size_t *n)
{
    while (*n && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

/* ---- parser callbacks --------------------------------------------------------- */

static size_t max_hdr(const struct http_conn *c)
{
    size_t m = c->env->max_header_bytes ? c->env->max_header_bytes : HTTP_MAX_HEADER_DEFAULT;
    return m < HTTP_MAX_HEADER_CAP ? m : HTTP_MAX_HEADER_CAP;
}

static size_t max_body(const struct http_conn *c)
{
    return c->env->max_body_bytes ? c->env->max_body_bytes : HTTP_MAX_BODY_DEFAULT;
}

static int64_t now_ns(const struct http_conn *c)
{
    if (c->env->clock_ns)
        return c->env->clock_ns(c->env->ud);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void req_reset(struct http_conn *c)
{
    c->phase = PH_IDLE;
    c->hdr_bytes = 0;
    c->hdr_id = H_NONE;
    c->in_value = false;
    c->hname_len = 0;
    c->url_off = c->url_len = 0;
    memset(c->hv_len, 0, sizeof c->hv_len);
    memset(c->hv_off, 0, sizeof c->hv_off);
    c->hv_seen = 0;
    buf_reset(&c->hdr, SCRATCH_KEEP);
    buf_reset(&c->body, SCRATCH_KEEP);
    if (c->ixs_cap * sizeof *c->ixs > SCRATCH_KEEP) {
        free(c->ixs);
        c->ixs = NULL;
        c->ixs_cap = 0;
    }
}

static int on_message_begin(http_parser *p)
{
    struct http_conn *c = p->data;
    c->phase = PH_HEADERS;
    c->t_begin = now_ns(c);
    return 0;
}

/* Keeps header-phase bytes within the limit; the exact count is checked
 * again by the feed loop. */
static int keep_hdr(struct http_conn *c, const char *at, size_t n)
{
    if (c->hdr.len + n > max_hdr(c)) {
        c->fail = FAIL_HDR_BIG;
        return 1;
    }
    buf_put(c, &c->hdr, at, n);
    return c->oom ? 1 : 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;
    if (c->url_len == 0)
        c->url_off = c->hdr.len;
    c->url_len += n;
    return keep_hdr(c, at, n);
}

/* Header callbacks: libhttp-parser also calls them for a chunked body's
 * trailer fields, after the headers are done. Those are ignored: a
 * trailer must not override X-Forwarded-For (which our proxy appends to
 * the header), User-Agent or Authorization. */
static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;
    if (c->phase != PH_HEADERS)
        return 0;
    if (c->in_value) {
        c->in_value = false;
        c->hname_len = 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (c->hname_len < sizeof c->hname) {
            char ch = at[i];
            if (ch >= 'A' && ch <= 'Z')
                ch = (char)(ch + 32);
            c->hname[c->hname_len] = ch;
        }
        c->hname_len++;   /* past sizeof hname: a name we do not keep */
    }
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;
    if (c->phase != PH_HEADERS)
        return 0;
    if (!c->in_value) {
        static const char *const names[H_COUNT] = {
            NULL, "authorization", "user-agent", "x-forwarded-for", "expect",
        };
        c->in_value = true;
        c->hdr_id = H_NONE;
        for (int h = 1; h < H_COUNT; h++)
            if (c->hname_len == strlen(names[h]) && memcmp(c->hname, names[h], c->hname_len) == 0)
                c->hdr_id = (uint8_t)h;
        if (c->hdr_id != H_NONE) {   /* the last occurrence wins */
            c->hv_off[c->hdr_id] = c->hdr.len;
            c->hv_len[c->hdr_id] = 0;
            c->hv_seen |= (uint8_t)(1u << c->hdr_id);
        }
    }
    if (c->hdr_id == H_NONE)
        return 0;
    c->hv_len[c->hdr_id] += n;
    return keep_hdr(c, at, n);
}

static int on_headers_complete(http_parser *p)
{
    struct http_conn *c = p->data;
    c->phase = PH_BODY;
    http_parser_pause(p, 1);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;
    if (c->body.len + n > max_body(c)) {
        c->fail = FAIL_BODY_BIG;
        return 1;
    }
    buf_put(c, &c->body, at, n);
    return c->oom ? 1 : 0;
}

static int on_message_complete(http_parser *p)
{
    struct http_conn *c = p->data;
    c->phase = PH_DONE;
    c->keep_alive = http_should_keep_alive(p) != 0;
    c->method = (uint8_t)p->method;
    c->http_major = (uint8_t)p->http_major;
    c->http_minor = (uint8_t)p->http_minor;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- responses ----------------------------------------------------------------- */

static const char *hv(const struct http_conn *c, enum http_hdr h, size_t *n)
{
    *n = c->hv_len[h];
    if (*n == 0)
        return NULL;
    const char *s = (const char *)c->hdr.p + c->hv_off[h];
    trim(&s, n);
    return *n ? s : NULL;
}

void http_stats_count(struct http_stats *st, int status)
{
    for (size_t i = 0; i < HTTP_NCODES; i++)
        if (http_codes[i] == status)
            st->responses[i]++;
}


static void observe_latency(struct http_conn *c)
{
    struct http_stats *st = c->env->stats;
    int64_t d = now_ns(c) - c->t_begin;
    uint64_t ns = d > 0 ? (uint64_t)d : 0;
    size_t i = 0;
    while (i < HTTP_LAT_NBUCKETS && ns > http_lat_bounds_ns[i])
        i++;
    st->lat_bucket[i]++;
    st->lat_count++;
    st->lat_sum_ns += ns;
}

enum resp_flags {
    R_CLOSE = 1,       /* Connection: close, and end the connection */
    R_TEXT = 2,        /* Prometheus text, not JSON */
    R_EMPTY = 4,       /* 204: neither body nor Content-Length */
};

/* HEAD gets the headers of whatever GET would get, errors included, and
 * never a body (one after them would be read as the start of the next
 * response): known once the request line is in, which its URL's first
 * byte marks. respond() alone applies it, so no path can forget. */
static bool is_head(const struct http_conn *c)
{
    return c->url_len && c->parser.method == HTTP_HEAD;
}

/* An origin is set (the server's http-cors-origin, which CONFIG SET may
 * change or clear). */
static bool cors_on(const struct http_conn *c)
{
    return c->env->cors_origin && c->env->cors_origin[0];
}

/* Frames c->tmp as the body of a response with `status` into c->out.
 * extra: more header lines, each ending in \r\n, or NULL. */
static void respond(struct http_conn *c, int status, const char *extra, unsigned flags)
{
    struct http_buf *o = &c->out;
    buf_puts(c, o, "HTTP/1.1 ");
    buf_u64(c, o, (uint64_t)status);
    buf_putc(c, o, ' ');
    buf_puts(c, o, http_status_str((enum http_status)status));
    buf_puts(c, o, "\r\n");
    if (!(flags & R_EMPTY)) {
        buf_puts(c, o, flags & R_TEXT ? "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                                      : "Content-Type: application/json\r\n");
        buf_puts(c, o, "Content-Length: ");
        buf_u64(c, o, c->tmp.len);
        buf_puts(c, o, "\r\n");
    }
    if (cors_on(c)) {
        buf_puts(c, o, "Access-Control-Allow-Origin: ");
        buf_puts(c, o, c->env->cors_origin);
        buf_puts(c, o, "\r\n");
    }
    if (extra)
        buf_puts(c, o, extra);
    if (flags & R_CLOSE)
        buf_puts(c, o, "Connection: close\r\n");
    else if (c->http_major == 1 && c->http_minor == 0)
        buf_puts(c, o, "Connection: keep-alive\r\n");
    buf_puts(c, o, "\r\n");
    if (!(flags & R_EMPTY) && !is_head(c))
        buf_put(c, o, c->tmp.p, c->tmp.len);
    c->tmp.len = 0;

    struct http_stats *st = c->env->stats;
    st->requests_total++;
    http_stats_count(st, status);
    observe_latency(c);
}

/* {"ok":false,"error":"<msg>"[,"index":i]} */
static void respond_error(struct http_conn *c, int status, const char *msg, int32_t index,
                          const char *extra, unsigned flags)
{
    struct http_buf *b = &c->tmp;
    b->len = 0;
    buf_puts(c, b, "{\"ok\":false,\"error\":");
    jw_cstr(c, b, msg);
    if (index >= 0) {
        buf_puts(c, b, ",\"index\":");
        buf_u64(c, b, (uint64_t)index);
    }
    buf_putc(c, b, '}');
    respond(c, status, extra, flags);
}

/* ---- interactions from JSON ----------------------------------------------------- */

/* JSON field names and the engine's names for them, for error messages. */
static const struct {
    const char *json, *eng;
} field_names[] = {
    {"shortId", "short_id"}, {"sessionId", "session"}, {"userId", "user"},
    {"watchMs", "watch_ms"}, {"userAgent", "ua"},       {"type", "type"},
    {"ts", "ts"},            {"platform", "platform"},  {"ip", "ip"},
};

static bool field_known(const char *key)
{
    for (size_t i = 0; i < sizeof field_names / sizeof field_names[0]; i++)
        if (strcmp(key, field_names[i].json) == 0)
            return true;
    return false;
}

/* The engine names fields as TRACK does; say them as the JSON body does. */
static void map_eng_msg(const char *msg, char *out, size_t cap)
{
    const char *colon = strchr(msg, ':');
    if (colon) {
        size_t n = (size_t)(colon - msg);
        for (size_t i = 0; i < sizeof field_names / sizeof field_names[0]; i++) {
            if (strlen(field_names[i].eng) == n && memcmp(msg, field_names[i].eng, n) == 0) {
                snprintf(out, cap, "%s%s", field_names[i].json, colon);
                return;
            }
        }
    }
    snprintf(out, cap, "%s", msg);
}

enum ix_allow { ALLOW_TYPE_SHORT = 1 };

struct ix_defaults {
    const char *ip;
    size_t ip_len;
    const char *ua;
    size_t ua_len;
};

/* An id: a JSON integer >= 1, or a string of decimal digits (JavaScript
 * numbers lose precision past 2^53). */
static bool json_id(const json_t *v, uint64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 1)
            return false;
        *out = (uint64_t)i;
        return true;
    }
    if (json_is_string(v))
        return parse_u64(json_string_value(v), json_string_length(v), out) && *out >= 1;
    return false;
}

/* Fills ix from one JSON object. Unknown fields are errors, as in TRACK
 * (also when null: a misspelt field is reported whatever its value); null
 * means absent. Returns 0 or -1 with "<field>: <why>" in why. */
static int ix_from_json(const json_t *o, struct eng_ix *ix, unsigned allow,
                        const struct ix_defaults *def, char *why, size_t whycap)
{
    memset(ix, 0, sizeof *ix);
    ix->type = -1;
    if (!json_is_object(o)) {
        snprintf(why, whycap, "body: %s", allow & ALLOW_TYPE_SHORT
                 ? "each interaction must be a JSON object" : "must be a JSON object");
        return -1;
    }
    bool has_type = false, has_short = false, has_ip = false, has_ua = false;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)o, key, v) {
        if (json_is_null(v) && field_known(key))
            continue;
        bool is_str = json_is_string(v);
        const char *s = is_str ? json_string_value(v) : NULL;
        size_t sl = is_str ? json_string_length(v) : 0;
        if (strcmp(key, "type") == 0 || strcmp(key, "shortId") == 0) {
            if (!(allow & ALLOW_TYPE_SHORT)) {
                snprintf(why, whycap, "%s: not allowed here (the path gives it)", key);
                return -1;
            }
            if (key[0] == 't') {
                int t = is_str ? eng_type_parse(s, sl) : -1;
                if (t < 0) {
                    snprintf(why, whycap, "type: must be one of impression, view, skip, save, "
                             "share, contact, whatsapp, book_viewing");
                    return -1;
                }
                ix->type = t;
                has_type = true;
            } else {
                if (!json_id(v, &ix->short_id)) {
                    snprintf(why, whycap, "shortId: must be an integer between 1 and %" PRIu64,
                             UINT64_MAX);
                    return -1;
                }
                has_short = true;
            }
        } else if (strcmp(key, "userId") == 0) {
            if (!json_id(v, &ix->user)) {
                snprintf(why, whycap, "userId: must be an integer between 1 and %" PRIu64,
                         UINT64_MAX);
                return -1;
            }
        } else if (strcmp(key, "watchMs") == 0 || strcmp(key, "ts") == 0) {
            if (!json_is_integer(v)) {
                snprintf(why, whycap, "%s: must be an integer", key);
                return -1;
            }
            if (key[0] == 'w') {
                ix->has_watch = true;
                ix->watch_ms = json_integer_value(v);
            } else {
                ix->has_ts = true;
                ix->ts = json_integer_value(v);
            }
        } else if (strcmp(key, "sessionId") == 0 || strcmp(key, "platform") == 0 ||
                   strcmp(key, "ip") == 0 || strcmp(key, "userAgent") == 0) {
            if (!is_str) {
                snprintf(why, whycap, "%s: must be a string", key);
                return -1;
            }
            switch (key[0]) {
            case 's': ix->session = s; ix->session_len = sl; break;
            case 'p': ix->platform = s; ix->platform_len = sl; break;
            case 'i': ix->ip = s; ix->ip_len = sl; has_ip = true; break;
            default:  ix->ua = s; ix->ua_len = sl; has_ua = true; break;
            }
        } else if (!key[0]) {
            snprintf(why, whycap, "body: a field with an empty name");
            return -1;
        } else {
            snprintf(why, whycap, "%.64s: unknown field", key);
            return -1;
        }
    }
    if ((allow & ALLOW_TYPE_SHORT) && !has_type) {
        snprintf(why, whycap, "type: missing");
        return -1;
    }
    if ((allow & ALLOW_TYPE_SHORT) && !has_short) {
        snprintf(why, whycap, "shortId: missing");
        return -1;
    }
    if (!has_ip && def->ip) {
        ix->ip = def->ip;
        ix->ip_len = def->ip_len;
    }
    if (!has_ua && def->ua) {
        ix->ua = def->ua;
        ix->ua_len = def->ua_len;
    }
    return 0;
}

/* Client IP and user agent from the connection, for fields the body omits.
 * Returns 0, or -1 with why set (a malformed X-Forwarded-For). */
static int request_defaults(const struct http_conn *c, struct ix_defaults *d, char *ipbuf,
                            char *why, size_t whycap)
{
    memset(d, 0, sizeof *d);
    if (c->peer[0]) {
        d->ip = c->peer;
        d->ip_len = strlen(c->peer);
    }
    size_t n;
    const char *xff = hv(c, H_XFF, &n);
    if (c->env->trust_proxy && (c->hv_seen & (1u << H_XFF))) {
        /* The rightmost entry is the one our proxy appended; entries to its
         * left came from the client and can be forged. An empty header is
         * as malformed as a bad address: no silent fallback to the peer. */
        if (!xff)
            xff = "";
        const char *e = xff + n, *s = e;
        while (s > xff && s[-1] != ',')
            s--;
        size_t l = (size_t)(e - s);
        trim(&s, &l);
        unsigned char addr[16];
        bool ok = l > 0 && l < ENG_IPSTR_MAX;
        if (ok) {
            memcpy(ipbuf, s, l);
            ipbuf[l] = 0;
            ok = inet_pton(AF_INET, ipbuf, addr) == 1 || inet_pton(AF_INET6, ipbuf, addr) == 1;
        }
        if (!ok) {
            snprintf(why, whycap, "X-Forwarded-For: not an IP address");
            return -1;
        }
        d->ip = ipbuf;
        d->ip_len = l;
    }
    const char *ua = hv(c, H_UA, &n);
    if (ua) {
        /* A header too long for the engine is cut, not refused: the client
         * did not choose it. A body's userAgent is validated as given. */
        d->ua = ua;
        d->ua_len = n < ENG_UA_MAX ? n : ENG_UA_MAX;
    }
    return 0;
}

/* Parses the body; an empty body reads as `empty` (NULL: an error). */
static json_t *parse_body(struct http_conn *c, const char *empty, char *why, size_t whycap,
                          int *status)
{
    *status = 400;
    const char *s = (const char *)c->body.p;
    size_t n = c->body.len;
    size_t ws = 0;
    while (ws < n && (s[ws] == ' ' || s[ws] == '\t' || s[ws] == '\r' || s[ws] == '\n'))
        ws++;
    if (ws == n) {
        if (!empty) {
            snprintf(why, whycap, "body: missing (expected a JSON object or array)");
            return NULL;
        }
        s = empty;
        n = strlen(empty);
    }
    json_error_t je;
    memset(&je, 0, sizeof je);
    json_t *j = json_loadb(s ? s : "", n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    /* jansson sets no message when it cannot allocate its lexer. */
    if (!j && (json_error_code(&je) == json_error_out_of_memory || je.text[0] == 0)) {
        snprintf(why, whycap, "body: out of memory decoding JSON");
        *status = 500;
    }
    else if (!j)
        /* jansson reads numbers as int64: say what to do about a larger id */
        snprintf(why, whycap, "body: invalid JSON at line %d column %d: %.120s%s", je.line,
                 je.column, je.text, strstr(je.text, "too big integer")
                     ? " (send an id above 9223372036854775807 as a string)" : "");
    return j;
}

static bool grow_ixs(struct http_conn *c, size_t n)
{
    if (n <= c->ixs_cap)
        return true;
    struct eng_ix *p = mem_realloc(c, c->ixs, n * sizeof *p);
    if (!p) {
        c->oom = true;
        return false;
    }
    c->ixs = p;
    c->ixs_cap = n;
    return true;
}

/* A guest's interaction: the original service minted a session for an
 * interaction that named no viewer, and clients rely on it. Such an
 * interaction gets a session minted as POST /api/explore/session does,
 * one per request (every element of a batch that names no viewer shares
 * it), and the answer returns it for the client to send from then on.
 * Minting changes nothing in the engine, so a request refused later
 * leaves nothing behind. */
struct guest {
    char sid[ENG_SID_LEN + 1];
    bool minted;
};

static void guest_fill(struct http_conn *c, struct guest *g, struct eng_ix *ix)
{
    if (ix->session || ix->user)
        return;
    if (!g->minted)
        eng_session_new(c->env->eng, g->sid);
    g->minted = true;
    ix->session = g->sid;
    ix->session_len = ENG_SID_LEN;
}

static void respond_recorded(struct http_conn *c, size_t n, const struct guest *g,
                             unsigned flags)
{
    c->env->stats->interactions_total += n;
    c->tmp.len = 0;
    buf_puts(c, &c->tmp, "{\"ok\":true,\"recorded\":");
    buf_u64(c, &c->tmp, n);
    if (g->minted) {
        buf_puts(c, &c->tmp, ",\"sessionId\":");
        jw_cstr(c, &c->tmp, g->sid);
    }
    buf_putc(c, &c->tmp, '}');
    respond(c, 200, NULL, flags);
}

static void respond_eng_error(struct http_conn *c, int rc, const struct eng_err *err,
                              int32_t index, unsigned flags)
{
    char msg[MSG_MAX];
    if (rc == ENG_ENOMEM) {
        respond_error(c, 500, "engine: out of memory", -1, NULL, flags);
        return;
    }
    map_eng_msg(err->msg, msg, sizeof msg);
    respond_error(c, 400, msg, index, NULL, flags);
}

/* Over the server's --maxmemory (asked right before the engine would run,
 * once the request has passed every check, as the line protocol does):
 * 507 and nothing recorded. */
static bool refused_over_memory(struct http_conn *c, size_t n, unsigned flags)
{
    if (!c->env->over_memory || !c->env->over_memory(c->env->ud, n))
        return false;
    respond_error(c, 507, "memory: used memory is over the server's --maxmemory; writes are "
                  "refused while it is", -1, NULL, flags);
    return true;
}

/* POST /api/explore/interaction: an object, or an array recorded all or nothing. */
static void h_interaction(struct http_conn *c, unsigned flags)
{
    char why[MSG_MAX], ipbuf[ENG_IPSTR_MAX];
    struct ix_defaults def;
    if (request_defaults(c, &def, ipbuf, why, sizeof why) < 0) {
        respond_error(c, 400, why, -1, NULL, flags);
        return;
    }
    int status;
    json_t *j = parse_body(c, NULL, why, sizeof why, &status);
    if (!j) {
        respond_error(c, status, why, -1, NULL, flags);
        return;
    }
    struct eng_err err = {.index = -1};
    struct guest g = {.minted = false};
    if (json_is_array(j)) {
        size_t n = json_array_size(j);
        if (!grow_ixs(c, n ? n : 1)) {
            json_decref(j);
            return;
        }
        for (size_t i = 0; i < n; i++) {
            if (ix_from_json(json_array_get(j, i), &c->ixs[i], ALLOW_TYPE_SHORT, &def, why,
                             sizeof why) < 0) {
                /* The first bad element is named: one before i may be
                 * well-formed JSON that the engine refuses. */
                for (size_t k = 0; k < i; k++) {
                    int rc = eng_validate(c->env->eng, &c->ixs[k], &err);
                    if (rc != ENG_OK) {
                        respond_eng_error(c, rc, &err, (int32_t)k, flags);
                        json_decref(j);
                        return;
                    }
                }
                respond_error(c, 400, why, (int32_t)i, NULL, flags);
                json_decref(j);
                return;
            }
            guest_fill(c, &g, &c->ixs[i]);
        }
        if (refused_over_memory(c, n, flags)) {
            json_decref(j);
            return;
        }
        int rc = n ? eng_record_batch(c->env->eng, c->ixs, n, &err) : ENG_OK;
        if (rc != ENG_OK)
            respond_eng_error(c, rc, &err, err.index >= 0 ? err.index : 0, flags);
        else
            respond_recorded(c, n, &g, flags);
    } else if (json_is_object(j)) {
        struct eng_ix ix;
        if (ix_from_json(j, &ix, ALLOW_TYPE_SHORT, &def, why, sizeof why) < 0) {
            respond_error(c, 400, why, 0, NULL, flags);
        } else if (!refused_over_memory(c, 1, flags)) {
            guest_fill(c, &g, &ix);
            int rc = eng_record(c->env->eng, &ix, &err);
            if (rc != ENG_OK)
                respond_eng_error(c, rc, &err, 0, flags);
            else
                respond_recorded(c, 1, &g, flags);
        }
    } else {
        respond_error(c, 400, "body: must be a JSON object or array", -1, NULL, flags);
    }
    json_decref(j);
}

/* POST /api/explore/save/:propertyId and /share/:propertyId. */
static void h_save_share(struct http_conn *c, enum eng_type type, const char *id, size_t idn,
                         unsigned flags)
{
    char why[MSG_MAX], ipbuf[ENG_IPSTR_MAX];
    uint64_t sid;
    if (!path_u64(id, idn, &sid) || sid == 0) {
        snprintf(why, sizeof why, "propertyId: must be an integer between 1 and %" PRIu64,
                 UINT64_MAX);
        respond_error(c, 400, why, -1, NULL, flags);
        return;
    }
    struct ix_defaults def;
    if (request_defaults(c, &def, ipbuf, why, sizeof why) < 0) {
        respond_error(c, 400, why, -1, NULL, flags);
        return;
    }
    int status;
    json_t *j = parse_body(c, "{}", why, sizeof why, &status);
    if (!j) {
        respond_error(c, status, why, -1, NULL, flags);
        return;
    }
    struct eng_ix ix;
    struct eng_err err = {.index = -1};
    struct guest g = {.minted = false};
    if (ix_from_json(j, &ix, 0, &def, why, sizeof why) < 0) {
        respond_error(c, 400, why, -1, NULL, flags);
    } else if (!refused_over_memory(c, 1, flags)) {
        ix.type = (int32_t)type;
        ix.short_id = sid;
        guest_fill(c, &g, &ix);
        int rc = eng_record(c->env->eng, &ix, &err);
        if (rc != ENG_OK)
            respond_eng_error(c, rc, &err, -1, flags);
        else
            respond_recorded(c, 1, &g, flags);
    }
    json_decref(j);
}

/* ---- queries ---------------------------------------------------------------------- */

struct qparam {
    char key[16];
    size_t klen;
    char val[128];
    size_t vlen;
    unsigned seen;  /* bit i: allowed[i] already given; zero before the first call */
};

/* Next key=value of a query string; a key not in the NULL-terminated list
 * `allowed` is an error, so endpoints only handle the keys they take.
 * Returns 1, 0 at the end, -1 with why set. */
static int query_next(const char **q, const char *end, const char *const *allowed,
                      struct qparam *p, char *why, size_t whycap)
{
    while (*q < end && **q == '&')
        (*q)++;
    if (*q >= end)
        return 0;
    const char *s = *q, *amp = memchr(s, '&', (size_t)(end - s));
    if (!amp)
        amp = end;
    *q = amp;
    const char *eq = memchr(s, '=', (size_t)(amp - s));
    const char *ke = eq ? eq : amp;
    ssize_t kl = pct_decode(s, (size_t)(ke - s), p->key, sizeof p->key - 1, true);
    if (kl < 0) {
        snprintf(why, whycap, "%.*s: unknown parameter", (int)((ke - s) < 32 ? ke - s : 32), s);
        return -1;
    }
    p->klen = (size_t)kl;
    p->key[kl] = 0;
    ssize_t vl = eq ? pct_decode(eq + 1, (size_t)(amp - eq - 1), p->val, sizeof p->val - 1, true) : 0;
    if (vl < 0) {
        snprintf(why, whycap, "%s: %s", p->key,
                 vl == -1 ? "invalid percent-encoding" : "too long");
        return -1;
    }
    p->vlen = (size_t)vl;
    p->val[vl] = 0;
    bool nul = strlen(p->key) != p->klen;  /* a %00 in the key: no known one */
    unsigned i = 0;
    while (!nul && allowed[i] && strcmp(allowed[i], p->key) != 0)
        i++;
    if (nul || !allowed[i]) {
        snprintf(why, whycap, "%.32s: unknown parameter", p->key);
        return -1;
    }
    /* ?k=1&k=2 has no one meaning: refused, as TRACK refuses a repeated field */
    if (p->seen & (1u << i)) {
        snprintf(why, whycap, "%s: repeated parameter", p->key);
        return -1;
    }
    p->seen |= 1u << i;
    return 1;
}

/* An integer query parameter in lo..hi. */
static int query_uint(const struct qparam *p, uint64_t lo, uint64_t hi, uint64_t *out, char *why,
                      size_t whycap)
{
    if (!parse_u64(p->val, p->vlen, out) || *out < lo || *out > hi) {
        snprintf(why, whycap, "%s: must be an integer between %" PRIu64 " and %" PRIu64, p->key,
                 lo, hi);
        return -1;
    }
    return 0;
}

/* GET /api/explore/stats/:shortId -- STATS, field for field, camelCased. */
static void h_stats(struct http_conn *c, const char *id, size_t idn, unsigned flags)
{
    char why[MSG_MAX];
    uint64_t sid;
    if (!path_u64(id, idn, &sid) || sid == 0) {
        snprintf(why, sizeof why, "shortId: must be an integer between 1 and %" PRIu64,
                 UINT64_MAX);
        respond_error(c, 400, why, -1, NULL, flags);
        return;
    }
    struct eng_stats s;
    eng_stats(c->env->eng, sid, &s);
    struct http_buf *b = &c->tmp;
    b->len = 0;
    const struct {
        const char *k;
        uint64_t v;
    } counts[] = {
        {"impressions", s.impressions}, {"views", s.views}, {"viewCount", s.view_count},
        {"uniqueViewers", s.unique_viewers}, {"saves", s.saves}, {"shares", s.shares},
        {"skips", s.skips}, {"contacts", s.contacts}, {"whatsapps", s.whatsapps},
        {"bookViewings", s.book_viewings},
    };
    buf_puts(c, b, "{\"ok\":true,\"shortId\":");
    buf_u64(c, b, sid);
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        buf_putc(c, b, ',');
        jw_key(c, b, counts[i].k);
        buf_u64(c, b, counts[i].v);
    }
    buf_puts(c, b, ",\"avgWatchMs\":");
    jw_fixed6(c, b, s.avg_watch_ms);
    buf_puts(c, b, ",\"engagementRate\":");
    jw_fixed6(c, b, s.engagement_rate);
    buf_puts(c, b, ",\"score\":");
    jw_fixed6(c, b, s.score);
    buf_puts(c, b, ",\"boost\":");
    buf_u64(c, b, s.boost);
    buf_puts(c, b, ",\"lastTs\":");
    buf_i64(c, b, s.last_ts);
    buf_puts(c, b, ",\"sharesByPlatform\":{");
    for (size_t i = 0; i < s.nplatforms; i++) {
        if (i)
            buf_putc(c, b, ',');
        jw_cstr(c, b, s.platforms[i].name);
        buf_putc(c, b, ':');
        buf_u64(c, b, s.platforms[i].shares);
    }
    buf_puts(c, b, "}}");
    respond(c, 200, NULL, flags);
}

/* GET /api/explore/top?k=10&by=score */
static void h_top(struct http_conn *c, const char *q, size_t qn, unsigned flags)
{
    char why[MSG_MAX];
    uint64_t k = 10;
    int by = ENG_M_SCORE;
    struct qparam p = {.seen = 0};
    const char *end = q + qn;
    static const char *const keys[] = {"k", "by", NULL};
    int r;
    while ((r = query_next(&q, end, keys, &p, why, sizeof why)) > 0) {
        if (strcmp(p.key, "k") == 0) {
            if (query_uint(&p, 1, ENG_TOPK_MAX, &k, why, sizeof why) < 0)
                r = -1;
        } else {  /* by */
            by = eng_metric_parse(p.val, p.vlen);
            if (by < 0) {
                char all[256];
                net_metric_list(all, sizeof all);
                snprintf(why, sizeof why, "by: must be one of %.200s", all);
                r = -1;
            }
        }
        if (r < 0)
            break;
    }
    if (r < 0) {
        respond_error(c, 400, why, -1, NULL, flags);
        return;
    }
    struct eng_top_item items[ENG_TOPK_MAX];
    struct eng_err err = {.index = -1};
    int n = eng_top(c->env->eng, (enum eng_metric)by, (uint32_t)k, items, &err);
    if (n < 0) {
        respond_eng_error(c, n, &err, -1, flags);
        return;
    }
    struct http_buf *b = &c->tmp;
    b->len = 0;
    buf_puts(c, b, "{\"ok\":true,\"by\":");
    jw_cstr(c, b, eng_metric_name((enum eng_metric)by));
    buf_puts(c, b, ",\"items\":[");
    for (int i = 0; i < n; i++) {
        buf_puts(c, b, i ? ",{\"shortId\":" : "{\"shortId\":");
        buf_u64(c, b, items[i].short_id);
        buf_puts(c, b, ",\"value\":");
        if (net_metric_is_decimal((enum eng_metric)by))
            jw_fixed6(c, b, items[i].value);
        else
            buf_printf(c, b, "%.0f", isfinite(items[i].value) ? items[i].value : 0.0);
        buf_putc(c, b, '}');
    }
    buf_puts(c, b, "]}");
    respond(c, 200, NULL, flags);
}

/* GET /api/explore/history/{session,user}/:id?limit=20 */
static void h_history(struct http_conn *c, bool user, const char *id, size_t idn, const char *q,
                      size_t qn, unsigned flags)
{
    char why[MSG_MAX];
    char sess[ENG_SESSION_MAX + 1];  /* room for one byte too many: refused by length */
    size_t sess_len = 0;
    uint64_t uid = 0, limit = 20;
    if (user) {
        if (!path_u64(id, idn, &uid) || uid == 0) {
            snprintf(why, sizeof why, "userId: must be an integer between 1 and %" PRIu64,
                     UINT64_MAX);
            respond_error(c, 400, why, -1, NULL, flags);
            return;
        }
    } else {
        ssize_t l = pct_decode(id, idn, sess, sizeof sess, false);
        if (l == -1) {
            respond_error(c, 400, "sessionId: invalid percent-encoding", -1, NULL, flags);
            return;
        }
        /* one that did not fit is longer than any id: its length refuses it */
        sess_len = l < 0 ? sizeof sess : (size_t)l;
        struct eng_err e;
        if (eng_session_check(sess, sess_len, &e) != ENG_OK) {
            map_eng_msg(e.msg, why, sizeof why);
            respond_error(c, 400, why, -1, NULL, flags);
            return;
        }
    }
    struct qparam p = {.seen = 0};
    const char *end = q + qn;
    static const char *const keys[] = {"limit", NULL};
    int r;
    while ((r = query_next(&q, end, keys, &p, why, sizeof why)) > 0) {
        if (query_uint(&p, 1, ENG_HISTORY_MAX, &limit, why, sizeof why) < 0) {
            r = -1;
            break;
        }
    }
    if (r < 0) {
        respond_error(c, 400, why, -1, NULL, flags);
        return;
    }
    struct eng_info info;
    eng_info(c->env->eng, &info);
    if (info.history && limit > info.history)
        limit = info.history;
    if (limit > c->recs_cap) {
        struct eng_history_rec *nr = mem_realloc(c, c->recs, limit * sizeof *nr);
        if (!nr) {
            c->oom = true;
            return;
        }
        c->recs = nr;
        c->recs_cap = limit;
    }
    size_t n = user ? eng_history_user(c->env->eng, uid, c->recs, limit)
                    : eng_history_session(c->env->eng, sess, sess_len, c->recs, limit);
    struct http_buf *b = &c->tmp;
    b->len = 0;
    buf_puts(c, b, "{\"ok\":true,\"records\":[");
    for (size_t i = 0; i < n; i++) {
        const struct eng_history_rec *h = &c->recs[i];
        buf_puts(c, b, i ? ",{\"shortId\":" : "{\"shortId\":");
        buf_u64(c, b, h->short_id);
        buf_puts(c, b, ",\"type\":");
        jw_cstr(c, b, eng_type_name(h->type));
        buf_puts(c, b, ",\"ts\":");
        buf_i64(c, b, h->ts);
        if (h->session) {
            buf_puts(c, b, ",\"sessionId\":");
            jw_str(c, b, h->session, h->session_len);
        }
        if (h->user) {
            buf_puts(c, b, ",\"userId\":");
            buf_u64(c, b, h->user);
        }
        if (h->has_watch) {
            buf_puts(c, b, ",\"watchMs\":");
            buf_u64(c, b, h->watch_ms);
        }
        if (h->platform) {
            buf_puts(c, b, ",\"platform\":");
            jw_str(c, b, h->platform, h->platform_len);
        }
        if (h->ip[0]) {
            buf_puts(c, b, ",\"ip\":");
            jw_cstr(c, b, h->ip);
        }
        if (h->ua) {
            buf_puts(c, b, ",\"userAgent\":");
            jw_str(c, b, h->ua, h->ua_len);
        }
        buf_putc(c, b, '}');
    }
    buf_puts(c, b, "]}");
    if (c->recs_cap * sizeof *c->recs > SCRATCH_KEEP) {
        free(c->recs);
        c->recs = NULL;
        c->recs_cap = 0;
    }
    respond(c, 200, NULL, flags);
}

/* POST /api/explore/session -- SESSION NEW */
static void h_session(struct http_conn *c, unsigned flags)
{
    char sid[ENG_SID_LEN + 1];
    eng_session_new(c->env->eng, sid);
    c->tmp.len = 0;
    buf_puts(c, &c->tmp, "{\"ok\":true,\"sessionId\":");
    jw_cstr(c, &c->tmp, sid);
    buf_putc(c, &c->tmp, '}');
    respond(c, 200, NULL, flags);
}

static void get_metrics(const struct http_conn *c, struct http_metrics *m)
{
    memset(m, 0, sizeof *m);
    if (c->env->fill_metrics)
        c->env->fill_metrics(c->env->ud, m);
}

static const char *snap_status_name(enum http_snap_status s)
{
    return s == HTTP_SNAP_OK ? "ok" : s == HTTP_SNAP_ERR ? "err" : "none";
}

/* GET /healthz */
static void h_healthz(struct http_conn *c, unsigned flags)
{
    struct http_metrics m;
    get_metrics(c, &m);
    struct http_buf *b = &c->tmp;
    b->len = 0;
    buf_puts(c, b, "{\"ok\":true,\"status\":\"serving\",\"uptimeMs\":");
    buf_i64(c, b, m.uptime_ms);
    buf_puts(c, b, ",\"snapshot\":{\"status\":");
    jw_cstr(c, b, snap_status_name(m.snapshot_status));
    buf_puts(c, b, m.snapshot_in_progress ? ",\"inProgress\":true" : ",\"inProgress\":false");
    buf_puts(c, b, ",\"lastUnixMs\":");
    buf_i64(c, b, m.last_snapshot_unix_ms);
    buf_puts(c, b, "}}");
    respond(c, 200, NULL, flags);
}

/* ---- /metrics ---------------------------------------------------------------------- */

static void prom_family(struct http_conn *c, const char *name, const char *type, const char *help)
{
    buf_printf(c, &c->tmp, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void prom_u64(struct http_conn *c, const char *name, const char *type, const char *help,
                     uint64_t v)
{
    prom_family(c, name, type, help);
    buf_printf(c, &c->tmp, "%s %" PRIu64 "\n", name, v);
}

static void prom_sec(struct http_conn *c, const char *name, const char *help, double v)
{
    prom_family(c, name, "gauge", help);
    buf_printf(c, &c->tmp, "%s %.3f\n", name, v);
}

/* A label value: escape \ " and newline (text format 0.0.4). */
static void prom_label(struct http_conn *c, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            buf_putc(c, &c->tmp, '\\');
        if (*s == '\n')
            buf_puts(c, &c->tmp, "\\n");
        else
            buf_putc(c, &c->tmp, *s);
    }
}

/* INFO commandstats and errorstats as counter families, labelled as
 * redis_exporter labels Redis's: cmd="config|set", code="ERR". */
static void prom_cmdstats(struct http_conn *c, const struct http_metrics *m)
{
    static const struct {
        const char *name, *help;
        size_t off;    /* the field of struct http_cmd_metric */
        bool seconds;  /* a count of ns, shown in seconds */
    } fam[] = {
        {"shortstat_command_calls_total", "Line-protocol calls by command, failed ones included.",
         offsetof(struct http_cmd_metric, calls), false},
        {"shortstat_command_duration_seconds_total", "Time spent running each command.",
         offsetof(struct http_cmd_metric, nsec), true},
        {"shortstat_command_rejected_calls_total",
         "Calls refused before they ran (arity, NOAUTH, MULTI, --maxmemory).",
         offsetof(struct http_cmd_metric, rejected), false},
        {"shortstat_command_failed_calls_total", "Calls that ran and answered an error.",
         offsetof(struct http_cmd_metric, failed), false},
    };
    for (size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
        prom_family(c, fam[f].name, "counter", fam[f].help);
        for (size_t i = 0; i < m->ncmds; i++) {
            const struct http_cmd_metric *k = &m->cmds[i];
            buf_printf(c, &c->tmp, "%s{cmd=\"", fam[f].name);
            prom_label(c, k->cmd);
            if (k->sub) {
                buf_putc(c, &c->tmp, '|');
                prom_label(c, k->sub);
            }
            buf_puts(c, &c->tmp, "\"} ");
            uint64_t v;
            memcpy(&v, (const char *)k + fam[f].off, sizeof v);
            if (fam[f].seconds)
                buf_printf(c, &c->tmp, "%.9f\n", (double)v / 1e9);
            else
                buf_printf(c, &c->tmp, "%" PRIu64 "\n", v);
        }
    }
    prom_family(c, "shortstat_error_replies_total", "counter",
                "Line-protocol error replies, by their first word.");
    for (size_t i = 0; i < m->nerrs; i++) {
        buf_puts(c, &c->tmp, "shortstat_error_replies_total{code=\"");
        prom_label(c, m->errs[i].code);
        buf_printf(c, &c->tmp, "\"} %" PRIu64 "\n", m->errs[i].count);
    }
}

static void h_metrics(struct http_conn *c, unsigned flags)
{
    struct http_metrics m;
    struct eng_info ei;
    const struct http_stats *st = c->env->stats;
    get_metrics(c, &m);
    eng_info(c->env->eng, &ei);
    c->tmp.len = 0;

    if (m.version) {
        prom_family(c, "shortstat_build_info", "gauge", "Version of shortstatd; always 1.");
        buf_puts(c, &c->tmp, "shortstat_build_info{version=\"");
        prom_label(c, m.version);
        buf_puts(c, &c->tmp, "\"} 1\n");
    }
    prom_sec(c, "shortstat_uptime_seconds", "Seconds since shortstatd started.",
             (double)m.uptime_ms / 1e3);

    prom_family(c, "shortstat_interactions_total", "counter",
                "Interactions recorded, by type, over every protocol (restored ones included).");
    for (int t = 0; t < ENG_T_COUNT; t++)
        buf_printf(c, &c->tmp, "shortstat_interactions_total{type=\"%s\"} %" PRIu64 "\n",
                   eng_type_name((enum eng_type)t), ei.by_type[t]);
    prom_u64(c, "shortstat_commands_total", "counter", "Line-protocol commands processed.",
             m.commands_total);
    prom_u64(c, "shortstat_errors_total", "counter", "Line-protocol error replies.",
             m.errors_total);
    prom_cmdstats(c, &m);
    prom_family(c, "shortstat_auth_failures_total", "counter",
                "Wrong passwords, by protocol.");
    buf_printf(c, &c->tmp, "shortstat_auth_failures_total{protocol=\"resp\"} %" PRIu64 "\n",
               m.auth_failures_total);
    buf_printf(c, &c->tmp, "shortstat_auth_failures_total{protocol=\"http\"} %" PRIu64 "\n",
               st->auth_failures_total);
    prom_u64(c, "shortstat_connected_clients", "gauge", "Line-protocol clients connected.",
             m.connected_clients);
    prom_u64(c, "shortstat_rejected_connections_total", "counter",
             "Connections refused by --maxclients.", m.rejected_connections);

    prom_u64(c, "shortstat_http_connections", "gauge", "HTTP connections open.",
             st->connections);
    prom_u64(c, "shortstat_http_connections_total", "counter", "HTTP connections accepted.",
             st->connections_total);
    prom_u64(c, "shortstat_http_requests_total", "counter", "HTTP requests answered.",
             st->requests_total);
    prom_family(c, "shortstat_http_responses_total", "counter", "HTTP responses, by status code.");
    for (size_t i = 0; i < HTTP_NCODES; i++)
        buf_printf(c, &c->tmp, "shortstat_http_responses_total{code=\"%u\"} %" PRIu64 "\n",
                   (unsigned)http_codes[i], st->responses[i]);
    prom_u64(c, "shortstat_http_interactions_total", "counter",
             "Interactions recorded through HTTP.", st->interactions_total);
    prom_u64(c, "shortstat_http_malformed_requests_total", "counter",
             "Requests HTTP could not parse (answered 400 and closed).", st->bad_requests_total);

    /* The request being answered is not in the histogram yet: a scrape sees
     * the requests before it, as the counters above do. */
    prom_family(c, "shortstat_http_request_duration_seconds", "histogram",
                "HTTP request latency, first request byte read to response queued.");
    uint64_t cum = 0;
    for (size_t i = 0; i <= HTTP_LAT_NBUCKETS; i++) {
        cum += st->lat_bucket[i];
        buf_printf(c, &c->tmp, "shortstat_http_request_duration_seconds_bucket{le=\"%s\"} %" PRIu64
                   "\n", i < HTTP_LAT_NBUCKETS ? lat_le[i] : "+Inf", cum);
    }
    buf_printf(c, &c->tmp, "shortstat_http_request_duration_seconds_sum %" PRIu64 ".%09" PRIu64
               "\n", st->lat_sum_ns / 1000000000u, st->lat_sum_ns % 1000000000u);
    buf_printf(c, &c->tmp, "shortstat_http_request_duration_seconds_count %" PRIu64 "\n",
               st->lat_count);

    prom_u64(c, "shortstat_memory_used_bytes", "gauge", "Bytes allocated by shortstatd.",
             m.used_memory_bytes);
    prom_u64(c, "shortstat_memory_rss_bytes", "gauge", "Resident set size.", m.rss_bytes);
    prom_u64(c, "shortstat_maxmemory_bytes", "gauge",
             "--maxmemory: writes are refused while used memory is over it; 0 = no limit.",
             m.maxmemory_bytes);
    prom_u64(c, "shortstat_oom_refused_total", "counter",
             "Writes refused because used memory was over --maxmemory (both ports).",
             m.oom_refused_total);
    prom_u64(c, "shortstat_engine_memory_bytes", "gauge", "Bytes the engine has allocated.",
             ei.mem_total);
    prom_u64(c, "shortstat_engine_history_memory_bytes", "gauge",
             "Of the engine's bytes, history ring storage.", ei.mem_records);
    prom_u64(c, "shortstat_engine_viewer_memory_bytes", "gauge",
             "Of the engine's bytes, viewer and saver sets.", ei.mem_viewers);
    prom_u64(c, "shortstat_shorts", "gauge", "Shorts known (recorded or boosted).", ei.shorts);
    prom_u64(c, "shortstat_sessions", "gauge",
             "Sessions held, expired ones not yet reclaimed included.", ei.sessions);
    prom_u64(c, "shortstat_users", "gauge", "Users with history.", ei.users);
    prom_u64(c, "shortstat_history_records", "gauge", "History records retained.", ei.records);
    prom_u64(c, "shortstat_viewer_pairs", "gauge", "Distinct (short, viewer) pairs held.",
             ei.viewer_pairs);
    prom_u64(c, "shortstat_sessions_evicted_total", "counter", "Idle sessions evicted.",
             ei.sessions_evicted);

    prom_u64(c, "shortstat_snapshot_in_progress", "gauge", "1 while a snapshot is being written.",
             m.snapshot_in_progress ? 1 : 0);
    prom_family(c, "shortstat_snapshot_last_status", "gauge",
                "Outcome of the last snapshot: 1 for the current status.");
    for (int s = HTTP_SNAP_NONE; s <= HTTP_SNAP_ERR; s++)
        buf_printf(c, &c->tmp, "shortstat_snapshot_last_status{status=\"%s\"} %d\n",
                   snap_status_name((enum http_snap_status)s), (int)m.snapshot_status == s);
    prom_sec(c, "shortstat_snapshot_last_timestamp_seconds",
             "Unix time of the last snapshot; 0 when none.",
             (double)m.last_snapshot_unix_ms / 1e3);
    prom_family(c, "shortstat_snapshot_age_seconds", "gauge",
                "Seconds since the last snapshot; absent when none.");
    if (m.last_snapshot_unix_ms > 0 && m.now_unix_ms >= m.last_snapshot_unix_ms)
        buf_printf(c, &c->tmp, "shortstat_snapshot_age_seconds %.3f\n",
                   (double)(m.now_unix_ms - m.last_snapshot_unix_ms) / 1e3);
    prom_u64(c, "shortstat_snapshot_changes", "gauge",
             "Interactions and boosts recorded since the last good snapshot.",
             m.changes_since_snapshot);
    prom_sec(c, "shortstat_snapshot_last_duration_seconds", "Duration of the last snapshot.",
             (double)m.last_snapshot_duration_ms / 1e3);
    prom_u64(c, "shortstat_snapshot_last_bytes", "gauge", "Size of the last snapshot file.",
             m.last_snapshot_bytes);
    respond(c, 200, NULL, flags | R_TEXT);
}

/* ---- routing ---------------------------------------------------------------------- */

enum route {
    RT_INTERACTION, RT_SAVE, RT_SHARE, RT_STATS, RT_TOP, RT_HIST_SESSION, RT_HIST_USER,
    RT_SESSION, RT_METRICS, RT_HEALTHZ,
};

static const struct {
    const char *path;   /* ending in '/' when one path parameter follows */
    enum route route;
    bool post;          /* else GET and HEAD */
    bool open;          /* served without --requirepass */
} routes[] = {
    {"/api/explore/interaction", RT_INTERACTION, true, false},
    {"/api/explore/save/", RT_SAVE, true, false},
    {"/api/explore/share/", RT_SHARE, true, false},
    {"/api/explore/stats/", RT_STATS, false, false},
    {"/api/explore/top", RT_TOP, false, false},
    {"/api/explore/history/session/", RT_HIST_SESSION, false, false},
    {"/api/explore/history/user/", RT_HIST_USER, false, false},
    {"/api/explore/session", RT_SESSION, true, false},
    {"/metrics", RT_METRICS, false, true},
    {"/healthz", RT_HEALTHZ, false, true},
};

/* Constant-time in the password's bytes. */
static bool auth_ok(const struct http_conn *c, bool *given)
{
    size_t n;
    const char *v = hv(c, H_AUTH, &n);
    *given = v != NULL;
    if (!v || n < 7 || !ieq(v, 6, "bearer") || (v[6] != ' ' && v[6] != '\t'))
        return false;
    v += 7;
    n -= 7;
    trim(&v, &n);
    const char *pw = c->env->requirepass;
    size_t pn = strlen(pw);
    unsigned diff = n != pn;
    for (size_t i = 0; i < pn; i++)
        diff |= (unsigned)(uint8_t)pw[i] ^ (unsigned)(uint8_t)(i < n ? v[i] : 0);
    return diff == 0;
}

/* Runs the request just parsed and queues its response. */
static void dispatch(struct http_conn *c)
{
    unsigned flags = c->keep_alive && !c->upgrade ? 0 : R_CLOSE;
    const char *url = (const char *)c->hdr.p + c->url_off;
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (c->url_len == 0 || http_parser_parse_url(url, c->url_len, c->method == HTTP_CONNECT, &u) ||
        !(u.field_set & (1u << UF_PATH))) {
        respond_error(c, 400, "url: invalid request target", -1, NULL, flags);
        return;
    }
    const char *path = url + u.field_data[UF_PATH].off;
    size_t plen = u.field_data[UF_PATH].len;
    const char *q = (u.field_set & (1u << UF_QUERY)) ? url + u.field_data[UF_QUERY].off : "";
    size_t qlen = (u.field_set & (1u << UF_QUERY)) ? u.field_data[UF_QUERY].len : 0;

    int r = -1;
    const char *arg = NULL;
    size_t argn = 0;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0] && r < 0; i++) {
        size_t l = strlen(routes[i].path);
        if (routes[i].path[l - 1] == '/') {
            if (plen > l && memcmp(path, routes[i].path, l) == 0 &&
                !memchr(path + l, '/', plen - l)) {
                r = (int)i;
                arg = path + l;
                argn = plen - l;
            }
        } else if (plen == l && memcmp(path, routes[i].path, l) == 0) {
            r = (int)i;
        }
    }
    const char *allow = r >= 0 && routes[r].post ? "Allow: POST, OPTIONS\r\n"
                                                 : "Allow: GET, HEAD, OPTIONS\r\n";
    if (r >= 0 && c->method == HTTP_OPTIONS) {
        /* A CORS preflight carries no credentials: answer it before auth. */
        const char *cors = routes[r].post
            ? "Allow: POST, OPTIONS\r\nAccess-Control-Allow-Methods: POST, OPTIONS\r\n"
              "Access-Control-Allow-Headers: Content-Type, Authorization\r\n"
              "Access-Control-Max-Age: 86400\r\n"
            : "Allow: GET, HEAD, OPTIONS\r\nAccess-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n"
              "Access-Control-Allow-Headers: Authorization\r\nAccess-Control-Max-Age: 86400\r\n";
        c->tmp.len = 0;
        respond(c, 204, cors_on(c) ? cors : allow, flags | R_EMPTY);
        return;
    }
    if (c->env->requirepass && c->env->requirepass[0] && (r < 0 || !routes[r].open)) {
        bool given;
        if (!auth_ok(c, &given)) {
            if (given)
                c->env->stats->auth_failures_total++;
            respond_error(c, 401, given ? "auth: wrong password"
                                        : "auth: send Authorization: Bearer <password>",
                          -1, "WWW-Authenticate: Bearer realm=\"shortstat\"\r\n", flags);
            return;
        }
    }
    if (r < 0) {
        char msg[MSG_MAX];
        snprintf(msg, sizeof msg, "path: no endpoint %.*s", (int)(plen < 128 ? plen : 128), path);
        respond_error(c, 404, msg, -1, NULL, flags);
        return;
    }
    bool get = c->method == HTTP_GET || c->method == HTTP_HEAD;
    if (routes[r].post ? c->method != HTTP_POST : !get) {
        char msg[MSG_MAX];
        snprintf(msg, sizeof msg, "method: %s not allowed here",
                 http_method_str((enum http_method)c->method));
        respond_error(c, 405, msg, -1, allow, flags);
        return;
    }
    /* Routes without parameters take no query string either. */
    if (qlen && routes[r].route != RT_TOP && routes[r].route != RT_HIST_SESSION &&
        routes[r].route != RT_HIST_USER) {
        static const char *const none[] = {NULL};
        char why[MSG_MAX];
        struct qparam p = {.seen = 0};
        if (query_next(&q, q + qlen, none, &p, why, sizeof why) != 0) {
            respond_error(c, 400, why, -1, NULL, flags);
            return;
        }
    }
    switch (routes[r].route) {
    case RT_INTERACTION: h_interaction(c, flags); break;
    case RT_SAVE: h_save_share(c, ENG_T_SAVE, arg, argn, flags); break;
    case RT_SHARE: h_save_share(c, ENG_T_SHARE, arg, argn, flags); break;
    case RT_STATS: h_stats(c, arg, argn, flags); break;
    case RT_TOP: h_top(c, q, qlen, flags); break;
    case RT_HIST_SESSION: h_history(c, false, arg, argn, q, qlen, flags); break;
    case RT_HIST_USER: h_history(c, true, arg, argn, q, qlen, flags); break;
    case RT_SESSION: h_session(c, flags); break;
    case RT_METRICS: h_metrics(c, flags); break;
    case RT_HEALTHZ: h_healthz(c, flags); break;
    }
}

/* ---- connection ---------------------------------------------------------------------- */

int http_conn_init(struct http_conn *c, const struct http_env *env, const char *peer_ip)
{
    memset(c, 0, sizeof *c);
    c->env = env;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    if (peer_ip)
        snprintf(c->peer, sizeof c->peer, "%s", peer_ip);
    env->stats->connections++;
    env->stats->connections_total++;
    return HTTP_OK;
}

void http_conn_free(struct http_conn *c)
{
    buf_release(&c->hdr);
    buf_release(&c->body);
    buf_release(&c->out);
    buf_release(&c->tmp);
    free(c->ixs);
    free(c->recs);
    c->ixs = NULL;
    c->recs = NULL;
    if (c->env && c->env->stats->connections)
        c->env->stats->connections--;
    c->env = NULL;
}

void http_conn_output(const struct http_conn *c, const uint8_t **p, size_t *len)
{
    *p = c->out.p ? c->out.p + c->out.off : (const uint8_t *)"";
    *len = c->out.len - c->out.off;
}

size_t http_conn_memory(const struct http_conn *c)
{
    return c->hdr.cap + c->body.cap + c->out.cap + c->tmp.cap + c->ixs_cap * sizeof *c->ixs +
           c->recs_cap * sizeof *c->recs;
}

size_t http_conn_pending(const struct http_conn *c)
{
    return c->out.len - c->out.off;
}

void http_conn_consume(struct http_conn *c, size_t n)
{
    size_t pend = c->out.len - c->out.off;
    c->out.off += n < pend ? n : pend;
    if (c->out.off == c->out.len)
        buf_reset(&c->out, OUT_KEEP);
}

/* Queues a response that ends the connection. */
static int close_with(struct http_conn *c, int status, const char *msg)
{
    if (c->phase == PH_IDLE)
        c->t_begin = now_ns(c);
    respond_error(c, status, msg, -1, NULL, R_CLOSE);
    c->closed = true;
    return c->oom ? HTTP_ENOMEM : HTTP_CLOSE;
}

/* Request line and headers are in: refuse a declared body that is too big
 * before reading it, or invite it. Returns HTTP_OK or HTTP_CLOSE. */
static int headers_done(struct http_conn *c)
{
    char msg[MSG_MAX];
    const http_parser *p = &c->parser;
    if (p->http_major != 1) {
        snprintf(msg, sizeof msg, "http: version %u.%u not supported", p->http_major,
                 p->http_minor);
        return close_with(c, 505, msg);
    }
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > max_body(c)) {
        snprintf(msg, sizeof msg, "body: larger than %zu bytes", max_body(c));
        return close_with(c, 413, msg);
    }
    size_t n;
    const char *e = hv(c, H_EXPECT, &n);
    if (e && ieq(e, n, "100-continue") && p->http_major == 1 && p->http_minor >= 1)
        buf_puts(c, &c->out, "HTTP/1.1 100 Continue\r\n\r\n");
    return HTTP_OK;
}

int http_conn_feed(struct http_conn *c, const uint8_t *buf, size_t len)
{
    char msg[MSG_MAX];
    if (c->closed)
        return HTTP_CLOSE;
    size_t off = 0;
    while (off < len) {
        uint8_t ph = c->phase;
        size_t n = http_parser_execute(&c->parser, &parser_settings, (const char *)buf + off,
                                       len - off);
        off += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (c->oom)
            return HTTP_ENOMEM;
        /* The parser pauses when the headers end, so bytes consumed from the
         * idle or header phase are all request line and headers. */
        if (ph == PH_IDLE || ph == PH_HEADERS)
            c->hdr_bytes += n;
        /* Paused on the blank line's LF, which the next execute consumes. */
        if (e == HPE_PAUSED && c->phase == PH_BODY && ph != PH_BODY)
            c->hdr_bytes += 1;
        if (c->fail == FAIL_HDR_BIG || e == HPE_HEADER_OVERFLOW ||
            (c->hdr_bytes > max_hdr(c) && c->phase != PH_IDLE)) {
            snprintf(msg, sizeof msg, "headers: request line and headers larger than %zu bytes",
                     max_hdr(c));
            return close_with(c, 431, msg);
        }
        if (c->fail == FAIL_BODY_BIG) {
            snprintf(msg, sizeof msg, "body: larger than %zu bytes", max_body(c));
            return close_with(c, 413, msg);
        }
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            if (c->phase == PH_BODY) {
                int rc = headers_done(c);
                if (rc != HTTP_OK)
                    return rc;
                continue;
            }
            c->upgrade = c->parser.upgrade != 0;
            dispatch(c);
            if (c->oom)
                return HTTP_ENOMEM;
            req_reset(c);
            if (!c->keep_alive || c->upgrade) {
                c->closed = true;
                return HTTP_CLOSE;
            }
            continue;
        }
        if (e != HPE_OK) {
            c->env->stats->bad_requests_total++;
            snprintf(msg, sizeof msg, "http: %s", http_errno_description(e));
            return close_with(c, 400, msg);
        }
        if (n == 0)
            break; /* cannot happen without an error or a pause; never spin */
    }
    return HTTP_OK;
}
