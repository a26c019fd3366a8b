/* SPDX-License-Identifier: MIT */
/*
 * proto.c -- RESP2 multibulk and inline command parser, reply encoders, and
 * the inline quoting used by HISTORY records.
 *
 * Design. proto_parse() looks only at buf[0..len): it either finds one whole
 * command (PROTO_OK, `consumed` bytes), or says it needs more bytes
 * (PROTO_MORE, nothing consumed: the caller appends bytes and calls again
 * from the same start), or rejects the input. Inline errors (unbalanced
 * quotes, bad escape, too many tokens) are confined to their line, so the
 * line is consumed and the connection goes on (PROTO_EBAD). RESP errors and
 * over-long lines leave no way to find the next command, so they are
 * PROTO_EFATAL: reply, then close.
 *
 * Invariants:
 *  - never reads outside buf[0..len) nor writes outside scratch[0..cap);
 *  - PROTO_OK and PROTO_EBAD always consume at least one byte, so a caller
 *    looping over a buffer always progresses;
 *  - an inline line is at most PROTO_INLINE_MAX bytes before its \r\n or \n,
 *    a bulk argument at most PROTO_BULK_MAX bytes, a command at most
 *    PROTO_ARGC_MAX arguments;
 *  - a bare token (no quote inside) points into buf: no copy. A token that
 *    holds a '"' or '\'' anywhere is unescaped into scratch. Quotes group
 *    characters within a token, so ua="a b", "ua=a b" and 'ua=a b' are the
 *    same token.
 *
 * Re-parsing from the start on PROTO_MORE costs O(arguments) for RESP (bulk
 * payloads are skipped by length, not scanned) and one memchr of at most
 * 64 KiB for inline, so a command trickling in byte by byte stays cheap.
 */
#include "net/proto.h"

#include <string.h>

#define RESP_INT_DIGITS 20u   /* longest count/length line we accept */

static void set_err(struct proto_cmd *cmd, const char *msg)
{
    size_t n = strlen(msg);
    if (n >= sizeof cmd->err)
        n = sizeof cmd->err - 1;
    memcpy(cmd->err, msg, n);
    cmd->err[n] = 0;
}

/* ---- inline --------------------------------------------------------------- */

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Separators are C's isspace bytes, as in Redis's sdssplitargs: a stray
 * '\r' before the line end ("PING\r\r\n") is not part of the last token. */
static inline bool is_sep(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Byte classes for the inline tokenizer's inner loops: one load per byte. */
enum { CL_BARE = 0, CL_SEP = 1, CL_QUOTE = 2 };
static const uint8_t inline_class[256] = {[' '] = CL_SEP,  ['\t'] = CL_SEP, ['\r'] = CL_SEP,
                                          ['\v'] = CL_SEP,  ['\f'] = CL_SEP, ['"'] = CL_QUOTE,
                                          ['\''] = CL_QUOTE};

/* Unescape one token that holds a quote, starting at line[*pos]; writes to
 * scratch[*used..cap). As in Redis's sdssplitargs, double quotes take the
 * escapes below, single quotes only \' (any other byte, a backslash too, is
 * itself). Returns 0, or PROTO_EBAD / PROTO_EFATAL with err set. */
static int inline_quoted(const uint8_t *line, size_t n, size_t *pos, uint8_t *scratch,
                         size_t cap, size_t *used, struct proto_cmd *cmd)
{
    size_t p = *pos, o = *used;
    uint8_t inq = 0;  /* the open quote, or 0 */

    while (p < n) {
        uint8_t c = line[p];
        if (!inq) {
            if (is_sep(c))
                break;
            if (inline_class[c] == CL_QUOTE) {
                inq = c;
                p++;
                continue;
            }
        } else if (c == inq) {
            inq = 0;
            p++;
            continue;
        } else if (inq == '\'' && c == '\\' && p + 1 < n && line[p + 1] == '\'') {
            c = '\'';
            p++;
        } else if (inq == '"' && c == '\\') {
            if (p + 1 >= n)
                break;  /* a trailing backslash cannot close the quote */
            uint8_t e = line[p + 1];
            p += 2;
            switch (e) {
            case '"': c = '"'; break;
            case '\\': c = '\\'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'x': {
                int hi = p < n ? hexval(line[p]) : -1;
                int lo = p + 1 < n ? hexval(line[p + 1]) : -1;
                if (hi < 0 || lo < 0) {
                    set_err(cmd, "invalid \\x escape in quotes (want \\xHH)");
                    return PROTO_EBAD;
                }
                c = (uint8_t)(hi << 4 | lo);
                p += 2;
                break;
            }
            default:
                set_err(cmd, "invalid escape in quotes (use \\\" \\\\ \\n \\r \\t \\xHH)");
                return PROTO_EBAD;
            }
            if (o >= cap) {
                set_err(cmd, "scratch buffer too small");
                return PROTO_EFATAL;
            }
            scratch[o++] = c;
            continue;
        }
        if (o >= cap) {
            set_err(cmd, "scratch buffer too small");
            return PROTO_EFATAL;
        }
        scratch[o++] = c;
        p++;
    }
    if (inq) {
        set_err(cmd, "unbalanced quotes in request");
        return PROTO_EBAD;
    }
    *pos = p;
    *used = o;
    return 0;
}

static int parse_inline(const uint8_t *buf, size_t len, uint8_t *scratch, size_t cap,
                        struct proto_cmd *cmd)
{
    /* The line may be PROTO_INLINE_MAX bytes plus "\r\n". */
    size_t window = len < PROTO_INLINE_MAX + 2 ? len : PROTO_INLINE_MAX + 2;
    const uint8_t *nl = memchr(buf, '\n', window);
    if (!nl) {
        if (len >= PROTO_INLINE_MAX + 2) {
            set_err(cmd, "too big inline request");
            return PROTO_EFATAL;
        }
        return PROTO_MORE;
    }
    size_t n = (size_t)(nl - buf);
    cmd->consumed = n + 1;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (n > PROTO_INLINE_MAX) {
        set_err(cmd, "too big inline request");
        return PROTO_EFATAL;
    }

    size_t p = 0, used = 0;
    for (;;) {
        while (p < n && inline_class[buf[p]] == CL_SEP)
            p++;
        if (p == n)
            break;
        if (cmd->argc == PROTO_ARGC_MAX) {
            set_err(cmd, "too many arguments in request");
            return PROTO_EBAD;
        }
        size_t start = p;
        while (p < n && inline_class[buf[p]] == CL_BARE)
            p++;
        struct proto_arg *a = &cmd->argv[cmd->argc++];
        if (p == n || inline_class[buf[p]] != CL_QUOTE) {
            a->p = buf + start;
            a->len = p - start;
            continue;
        }
        size_t o = used;
        p = start;
        int rc = inline_quoted(buf, n, &p, scratch, cap, &used, cmd);
        if (rc)
            return rc;
        a->p = scratch + o;
        a->len = used - o;
    }
    cmd->scratch_used = used;
    return PROTO_OK;
}

/* ---- RESP multibulk ------------------------------------------------------- */

/* Reads "<int>\r\n" at buf[*pos] (after the type byte). 0 ok, PROTO_MORE, or
 * -2 when malformed (the caller names what was expected). Only the canonical
 * form is a number, as Redis's string2ll has it: no leading zero, no "-0". */
static int resp_int(const uint8_t *buf, size_t len, size_t *pos, int64_t *out)
{
    size_t p = *pos;
    bool neg = false;
    int64_t v = 0;
    size_t digits = 0;

    if (p < len && buf[p] == '-') {
        neg = true;
        p++;
    }
    for (;;) {
        if (p >= len)
            return PROTO_MORE;
        uint8_t c = buf[p];
        if (c == '\r')
            break;
        if (c < '0' || c > '9' || ++digits > RESP_INT_DIGITS - 2)
            return -2;  /* 18 digits: far beyond any limit, and no overflow */
        if (digits == 2 && v == 0)
            return -2;  /* "01" */
        v = v * 10 + (c - '0');
        p++;
    }
    if (digits == 0 || (neg && v == 0))
        return -2;
    if (p + 1 >= len)
        return PROTO_MORE;
    if (buf[p + 1] != '\n')
        return -2;
    *pos = p + 2;
    *out = neg ? -v : v;
    return 0;
}

static int parse_resp(const uint8_t *buf, size_t len, struct proto_cmd *cmd)
{
    size_t p = 1;
    int64_t n;
    int rc = resp_int(buf, len, &p, &n);
    if (rc == PROTO_MORE)
        return PROTO_MORE;
    if (rc || n > (int64_t)PROTO_ARGC_MAX) {
        set_err(cmd, "invalid multibulk length");
        return PROTO_EFATAL;
    }
    if (n <= 0) {  /* *0 and the null array *-1: nothing to run */
        cmd->consumed = p;
        return PROTO_OK;
    }
    for (int64_t i = 0; i < n; i++) {
        if (p >= len)
            return PROTO_MORE;
        if (buf[p] != '$') {
            char msg[40] = "expected '$', got '?'";
            if (buf[p] >= 0x20 && buf[p] < 0x7f)
                msg[19] = (char)buf[p];
            set_err(cmd, msg);
            return PROTO_EFATAL;
        }
        p++;
        int64_t blen;
        rc = resp_int(buf, len, &p, &blen);
        if (rc == PROTO_MORE)
            return PROTO_MORE;
        if (rc || blen < 0 || blen > (int64_t)PROTO_BULK_MAX) {
            set_err(cmd, "invalid bulk length");
            return PROTO_EFATAL;
        }
        size_t bl = (size_t)blen;
        if (len - p < bl + 2)
            return PROTO_MORE;
        if (buf[p + bl] != '\r' || buf[p + bl + 1] != '\n') {
            set_err(cmd, "bulk argument not followed by CRLF");
            return PROTO_EFATAL;
        }
        cmd->argv[cmd->argc].p = buf + p;
        cmd->argv[cmd->argc].len = bl;
        cmd->argc++;
        p += bl + 2;
    }
    cmd->consumed = p;
    return PROTO_OK;
}

int proto_parse(const uint8_t *buf, size_t len, uint8_t *scratch, size_t scratch_cap,
                struct proto_cmd *cmd)
{
    cmd->argc = 0;
    cmd->consumed = 0;
    cmd->scratch_used = 0;
    cmd->err[0] = 0;
    if (len == 0)
        return PROTO_MORE;
    cmd->resp = buf[0] == '*';
    int rc = cmd->resp ? parse_resp(buf, len, cmd)
                       : parse_inline(buf, len, scratch, scratch_cap, cmd);
    if (rc != PROTO_OK) {
        cmd->argc = 0;
        cmd->scratch_used = 0;
    }
    return rc;
}

/* ---- encoders ------------------------------------------------------------- */

size_t proto_u64_dec(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

size_t proto_i64_dec(char *out, int64_t v)
{
    if (v >= 0)
        return proto_u64_dec(out, (uint64_t)v);
    out[0] = '-';
    return 1 + proto_u64_dec(out + 1, (uint64_t)0 - (uint64_t)v);
}

static size_t enc_prefixed(uint8_t *out, char prefix, uint64_t v)
{
    out[0] = (uint8_t)prefix;
    size_t n = 1 + proto_u64_dec((char *)out + 1, v);
    out[n] = '\r';
    out[n + 1] = '\n';
    return n + 2;
}

size_t proto_enc_line(uint8_t *out, char prefix, const char *s, size_t len)
{
    out[0] = (uint8_t)prefix;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        out[1 + i] = (uint8_t)(c == '\r' || c == '\n' ? ' ' : c);
    }
    out[1 + len] = '\r';
    out[2 + len] = '\n';
    return len + 3;
}

size_t proto_enc_int(uint8_t *out, int64_t v)
{
    out[0] = ':';
    size_t n = 1 + proto_i64_dec((char *)out + 1, v);
    out[n] = '\r';
    out[n + 1] = '\n';
    return n + 2;
}

size_t proto_enc_array(uint8_t *out, size_t n) { return enc_prefixed(out, '*', n); }
size_t proto_enc_map(uint8_t *out, size_t n) { return enc_prefixed(out, '%', n); }
size_t proto_enc_bulk_hdr(uint8_t *out, size_t len) { return enc_prefixed(out, '$', len); }

size_t proto_enc_bulk(uint8_t *out, const void *p, size_t len)
{
    size_t n = enc_prefixed(out, '$', len);
    if (len)
        memcpy(out + n, p, len);
    out[n + len] = '\r';
    out[n + len + 1] = '\n';
    return n + len + 2;
}

/* ---- quoting -------------------------------------------------------------- */

static inline bool bare_ok(uint8_t c)
{
    return c > 0x20 && c < 0x7f && c != '"' && c != '\'' && c != '\\';
}

bool proto_needs_quote(const uint8_t *v, size_t len)
{
    if (len == 0)
        return true;
    for (size_t i = 0; i < len; i++)
        if (!bare_ok(v[i]))
            return true;
    return false;
}

size_t proto_quote(char *out, const uint8_t *v, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (!proto_needs_quote(v, len)) {
        memcpy(out, v, len);
        return len;
    }
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 0; i < len; i++) {
        uint8_t c = v[i];
        switch (c) {
        case '"': out[o++] = '\\'; out[o++] = '"'; break;
        case '\\': out[o++] = '\\'; out[o++] = '\\'; break;
        case '\n': out[o++] = '\\'; out[o++] = 'n'; break;
        case '\r': out[o++] = '\\'; out[o++] = 'r'; break;
        case '\t': out[o++] = '\\'; out[o++] = 't'; break;
        default:
            if (c >= 0x20 && c < 0x7f) {
                out[o++] = (char)c;
            } else {
                out[o++] = '\\';
                out[o++] = 'x';
                out[o++] = hex[c >> 4];
                out[o++] = hex[c & 15];
            }
        }
    }
    out[o++] = '"';
    return o;
}
