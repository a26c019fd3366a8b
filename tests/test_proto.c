/* SPDX-License-Identifier: MIT */
/*
 * test_proto.c -- the pure protocol parser, encoders and inline quoting.
 *
 * Everything here runs on memory only. The split test feeds a stream of
 * mixed inline and RESP commands cut at every byte boundary and checks the
 * parser yields exactly the same commands as from the whole buffer. The
 * quoting property test is seeded: SHORTSTAT_SEED=<n> replays a failure.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/buf.h"
#include "net/proto.h"

static struct proto_cmd cmd;
static uint8_t scratch[PROTO_SCRATCH_MIN];

static int parse_str(const char *s, size_t len)
{
    return proto_parse((const uint8_t *)s, len, scratch, sizeof scratch, &cmd);
}
#define PARSE(lit) parse_str(lit, sizeof(lit) - 1)

static void expect_arg(size_t i, const char *s, size_t len)
{
    ck_assert_uint_gt(cmd.argc, i);
    ck_assert_uint_eq(cmd.argv[i].len, len);
    ck_assert_int_eq(memcmp(cmd.argv[i].p, s, len), 0);
}
#define ARG(i, lit) expect_arg(i, lit, sizeof(lit) - 1)

/* ---- inline ---------------------------------------------------------------- */

START_TEST(inline_basic)
{
    ck_assert_int_eq(PARSE("PING\r\n"), PROTO_OK);
    ck_assert_uint_eq(cmd.argc, 1);
    ck_assert_uint_eq(cmd.consumed, 6);
    ck_assert(!cmd.resp);
    ARG(0, "PING");

    ck_assert_int_eq(PARSE("PING\nECHO x\n"), PROTO_OK);
    ck_assert_uint_eq(cmd.consumed, 5);

    ck_assert_int_eq(PARSE("  TRACK\t 1   view  \r\n"), PROTO_OK);
    ck_assert_uint_eq(cmd.argc, 3);
    ARG(0, "TRACK");
    ARG(1, "1");
    ARG(2, "view");
    /* A bare token points into the input: no copy. */
    ck_assert_uint_eq(cmd.scratch_used, 0);

    /* Any C whitespace separates, as in Redis's sdssplitargs: a stray CR
     * before the line end is no part of the last token; inside quotes it
     * is kept. */
    ck_assert_int_eq(PARSE("PING\r\r\n"), PROTO_OK);
    ck_assert_uint_eq(cmd.argc, 1);
    ARG(0, "PING");
    ck_assert_int_eq(PARSE("a\rb\vc\fd\te \r\n"), PROTO_OK);
    ck_assert_uint_eq(cmd.argc, 5);
    ARG(0, "a");
    ARG(1, "b");
    ARG(2, "c");
    ARG(3, "d");
    ARG(4, "e");
    ck_assert_int_eq(PARSE("ECHO \"a\rb\"\r\n"), PROTO_OK);
    ck_assert_uint_eq(cmd.argc, 2);
    ARG(1, "a\rb");

    /* Outside quotes a backslash is literal. */
    ck_assert_int_eq(PARSE("ECHO a\\nb\n"), PROTO_OK);
    ARG(1, "a\\nb");
}
END_TEST

START_TEST(inline_empty_lines)
{
    ck_assert_int_eq(PARSE("\r\n"), PROTO_OK);
    ck_assert_uint_eq(cmd.argc, 0);
    ck_assert_uint_eq(cmd.consumed, 2);
    ck_assert_int_eq(PARSE("\n"), PROTO_OK);
    ck_assert_uint_eq(cmd.argc, 0);
    ck_assert_uint_eq(cmd.consumed, 1);
    ck_assert_int_eq(PARSE("   \t \r\n"), PROTO_OK);
    ck_assert_uint_eq(cmd.argc, 0);
    ck_assert_uint_eq(cmd.consumed, 7);
}
END_TEST

START_TEST(inline_quotes)
{
    ck_assert_int_eq(PARSE("TRACK 1 view ua=\"Mozilla/5.0 (X11)\" x\r\n"), PROTO_OK);
    ck_assert_uint_eq(cmd.argc, 5);
    ARG(3, "ua=Mozilla/5.0 (X11)");
    ARG(4, "x");
    ck_assert_int_eq(PARSE("TRACK 1 view \"ua=Mozilla/5.0 (X11)\" x\r\n"), PROTO_OK);
    ck_assert_uint_eq(cmd.argc, 5);
    ARG(3, "ua=Mozilla/5.0 (X11)");

    ck_assert_int_eq(PARSE("ECHO \"a\\\"b\\\\c\\nd\\re\\tf\\x41\\xfF\"\n"), PROTO_OK);
    ck_assert_uint_eq(cmd.argc, 2);
    ARG(1, "a\"b\\c\nd\re\tfA\xff");

    /* Quoted segments concatenate within a token; "" is an empty token. */
    ck_assert_int_eq(PARSE("ECHO a\"b c\"d\"\" \"\" e\n"), PROTO_OK);
    ck_assert_uint_eq(cmd.argc, 4);
    ARG(1, "ab cd");
    ARG(2, "");
    ARG(3, "e");
    /* A quote may hold a NUL byte via \x00. */
    ck_assert_int_eq(PARSE("ECHO \"\\x00\"\n"), PROTO_OK);
    expect_arg(1, "\0", 1);

    /* Single quotes, as in Redis: only \' is an escape; a double quote and
     * a backslash are themselves, and each kind holds the other. */
    ck_assert_int_eq(PARSE("ECHO 'a b' ua='x\\n\\'y\"z' '' \"it's\"\n"), PROTO_OK);
    ck_assert_uint_eq(cmd.argc, 5);
    ARG(1, "a b");
    ARG(2, "ua=x\\n'y\"z");
    ARG(3, "");
    ARG(4, "it's");
    ck_assert_int_eq(PARSE("ECHO 'a\\\\b'\n"), PROTO_OK);  /* \\ is two bytes here */
    ARG(1, "a\\\\b");
}
END_TEST

START_TEST(inline_errors_keep_going)
{
    const char in[] = "ECHO \"abc\r\nPING\r\n";
    ck_assert_int_eq(parse_str(in, sizeof in - 1), PROTO_EBAD);
    ck_assert_str_eq(cmd.err, "unbalanced quotes in request");
    ck_assert_uint_eq(cmd.consumed, 11);
    ck_assert_uint_eq(cmd.argc, 0);
    ck_assert_int_eq(parse_str(in + 11, sizeof in - 12), PROTO_OK);
    ARG(0, "PING");

    ck_assert_int_eq(PARSE("ECHO \"a\\q\"\n"), PROTO_EBAD);
    ck_assert_ptr_nonnull(strstr(cmd.err, "invalid escape"));
    ck_assert_uint_eq(cmd.consumed, 11);
    ck_assert_int_eq(PARSE("ECHO \"\\x4\"\n"), PROTO_EBAD);
    ck_assert_ptr_nonnull(strstr(cmd.err, "\\x"));
    ck_assert_int_eq(PARSE("ECHO \"\\xZZ\"\n"), PROTO_EBAD);
    ck_assert_int_eq(PARSE("ECHO \"ab\\\"\n"), PROTO_EBAD);  /* escaped quote never closes */
    ck_assert_int_eq(PARSE("ECHO \"ab\\\n"), PROTO_EBAD);    /* trailing backslash */
    ck_assert_str_eq(cmd.err, "unbalanced quotes in request");
    ck_assert_int_eq(PARSE("ECHO a\"\n"), PROTO_EBAD);
    ck_assert_int_eq(PARSE("ECHO 'it\n"), PROTO_EBAD);
    ck_assert_str_eq(cmd.err, "unbalanced quotes in request");
    ck_assert_int_eq(PARSE("ECHO 'ab\\'\n"), PROTO_EBAD);  /* escaped quote never closes */
    ck_assert_int_eq(PARSE("ECHO O'Reilly\n"), PROTO_EBAD);
}
END_TEST

START_TEST(inline_more)
{
    ck_assert_int_eq(PARSE("PING"), PROTO_MORE);
    ck_assert_int_eq(PARSE("PING\r"), PROTO_MORE);
    ck_assert_int_eq(PARSE(""), PROTO_MORE);
    ck_assert_int_eq(PARSE("ECHO \"unterminated but no newline"), PROTO_MORE);
}
END_TEST

START_TEST(inline_limits)
{
    size_t cap = PROTO_INLINE_MAX + 16;
    char *b = malloc(cap);
    ck_assert_ptr_nonnull(b);
    memset(b, 'a', cap);

    /* Exactly the limit, with either terminator. */
    memcpy(b + PROTO_INLINE_MAX, "\r\n", 2);
    ck_assert_int_eq(parse_str(b, PROTO_INLINE_MAX + 2), PROTO_OK);
    ck_assert_uint_eq(cmd.argv[0].len, PROTO_INLINE_MAX);
    b[PROTO_INLINE_MAX] = '\n';
    ck_assert_int_eq(parse_str(b, PROTO_INLINE_MAX + 1), PROTO_OK);
    /* One byte over. */
    memset(b, 'a', cap);
    b[PROTO_INLINE_MAX + 1] = '\n';
    ck_assert_int_eq(parse_str(b, PROTO_INLINE_MAX + 2), PROTO_EFATAL);
    ck_assert_str_eq(cmd.err, "too big inline request");
    /* No newline yet: wait up to the limit, refuse beyond it. */
    memset(b, 'a', cap);
    ck_assert_int_eq(parse_str(b, PROTO_INLINE_MAX + 1), PROTO_MORE);
    ck_assert_int_eq(parse_str(b, PROTO_INLINE_MAX + 2), PROTO_EFATAL);
    ck_assert_int_eq(parse_str(b, cap), PROTO_EFATAL);

    /* A quoted line at the limit fits the minimum scratch. */
    memset(b, 'a', cap);
    b[0] = '"';
    b[PROTO_INLINE_MAX - 1] = '"';
    b[PROTO_INLINE_MAX] = '\n';
    ck_assert_int_eq(parse_str(b, PROTO_INLINE_MAX + 1), PROTO_OK);
    ck_assert_uint_eq(cmd.argv[0].len, PROTO_INLINE_MAX - 2);
    /* ...and a too small scratch is refused, not overrun. */
    uint8_t small[8];
    ck_assert_int_eq(proto_parse((const uint8_t *)b, PROTO_INLINE_MAX + 1, small, sizeof small, &cmd),
                     PROTO_EFATAL);
    free(b);
}
END_TEST

START_TEST(inline_too_many_args)
{
    size_t n = (PROTO_ARGC_MAX + 1) * 2;
    char *b = malloc(n);
    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < n; i += 2) {
        b[i] = 'x';
        b[i + 1] = ' ';
    }
    b[n - 1] = '\n';
    ck_assert_int_eq(parse_str(b, n), PROTO_EBAD);
    ck_assert_uint_eq(cmd.consumed, n);
    ck_assert_str_eq(cmd.err, "too many arguments in request");
    b[n - 3] = '\n';  /* exactly PROTO_ARGC_MAX */
    ck_assert_int_eq(parse_str(b, n - 2), PROTO_OK);
    ck_assert_uint_eq(cmd.argc, PROTO_ARGC_MAX);
    free(b);
}
END_TEST

/* ---- RESP ------------------------------------------------------------------ */

START_TEST(resp_basic)
{
    const char in[] = "*3\r\n$5\r\nTRACK\r\n$1\r\n1\r\n$3\r\na\0b\r\n";
    ck_assert_int_eq(parse_str(in, sizeof in - 1), PROTO_OK);
    ck_assert(cmd.resp);
    ck_assert_uint_eq(cmd.consumed, sizeof in - 1);
    ck_assert_uint_eq(cmd.argc, 3);
    ARG(0, "TRACK");
    ARG(1, "1");
    expect_arg(2, "a\0b", 3);

    ck_assert_int_eq(PARSE("*1\r\n$0\r\n\r\n"), PROTO_OK);
    ck_assert_uint_eq(cmd.argc, 1);
    ck_assert_uint_eq(cmd.argv[0].len, 0);

    /* Bulk payloads may hold CR, LF, quotes and spaces untouched. */
    ck_assert_int_eq(PARSE("*1\r\n$6\r\n\r\n\" \r\n\r\n"), PROTO_OK);
    ARG(0, "\r\n\" \r\n");

    ck_assert_int_eq(PARSE("*0\r\nPING\r\n"), PROTO_OK);
    ck_assert_uint_eq(cmd.argc, 0);
    ck_assert_uint_eq(cmd.consumed, 4);
    ck_assert_int_eq(PARSE("*-1\r\n"), PROTO_OK);
    ck_assert_uint_eq(cmd.argc, 0);
    ck_assert_uint_eq(cmd.consumed, 5);
}
END_TEST

START_TEST(resp_more)
{
    const char in[] = "*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n";
    for (size_t n = 0; n < sizeof in - 1; n++)
        ck_assert_int_eq(parse_str(in, n), PROTO_MORE);
    ck_assert_int_eq(parse_str(in, sizeof in - 1), PROTO_OK);
}
END_TEST

START_TEST(resp_errors)
{
    static const struct { const char *in; const char *err; } cases[] = {
        {"*x\r\n", "invalid multibulk length"},
        {"*\r\n", "invalid multibulk length"},
        {"*1x\r\n", "invalid multibulk length"},
        {"*1\rx", "invalid multibulk length"},
        {"*1025\r\n", "invalid multibulk length"},
        {"*99999999999999999999999\r\n", "invalid multibulk length"},
        {"*01\r\n", "invalid multibulk length"},  /* only canonical numbers, as Redis */
        {"*-0\r\n", "invalid multibulk length"},
        {"*+1\r\n", "invalid multibulk length"},
        {"*1\r\nx", "expected '$', got 'x'"},
        {"*1\r\n\x01", "expected '$', got '?'"},
        {"*2\r\n$1\r\na\r\n+OK\r\n", "expected '$', got '+'"},
        {"*1\r\n$-1\r\n", "invalid bulk length"},
        {"*1\r\n$65537\r\n", "invalid bulk length"},
        {"*1\r\n$x\r\n", "invalid bulk length"},
        {"*1\r\n$\r\n", "invalid bulk length"},
        {"*1\r\n$01\r\na\r\n", "invalid bulk length"},
        {"*1\r\n$00\r\n\r\n", "invalid bulk length"},
        {"*1\r\n$2\r\nabc\r\n", "bulk argument not followed by CRLF"},
        {"*1\r\n$2\r\nab\n\n", "bulk argument not followed by CRLF"},
        {"*1\r\n$4\r\nPING\rX", "bulk argument not followed by CRLF"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = parse_str(cases[i].in, strlen(cases[i].in));
        if (rc != PROTO_EFATAL || strcmp(cmd.err, cases[i].err) != 0)
            ck_abort_msg("case %zu (%s): rc %d err '%s'", i, cases[i].in, rc, cmd.err);
        ck_assert_uint_eq(cmd.argc, 0);
    }
}
END_TEST

START_TEST(resp_limits)
{
    size_t n = PROTO_BULK_MAX;
    char *b = malloc(n + 64);
    ck_assert_ptr_nonnull(b);
    int h = sprintf(b, "*1\r\n$%zu\r\n", n);
    memset(b + h, 'z', n);
    memcpy(b + h + n, "\r\n", 2);
    ck_assert_int_eq(parse_str(b, h + n + 2), PROTO_OK);
    ck_assert_uint_eq(cmd.argv[0].len, n);
    free(b);

    /* PROTO_ARGC_MAX arguments are fine. */
    size_t cap = 16 + PROTO_ARGC_MAX * 7;
    b = malloc(cap);
    ck_assert_ptr_nonnull(b);
    size_t o = (size_t)sprintf(b, "*%u\r\n", PROTO_ARGC_MAX);
    for (size_t i = 0; i < PROTO_ARGC_MAX; i++) {
        memcpy(b + o, "$1\r\nx\r\n", 7);
        o += 7;
    }
    ck_assert_int_eq(parse_str(b, o), PROTO_OK);
    ck_assert_uint_eq(cmd.argc, PROTO_ARGC_MAX);
    free(b);
}
END_TEST

/* ---- split at every byte boundary -------------------------------------------- */

/* Parses a whole stream; returns a canonical text of the outcomes. */
struct outcome {
    char text[4096];
    size_t len;
};

static void out_add(struct outcome *o, const char *s, size_t n)
{
    ck_assert_uint_lt(o->len + n, sizeof o->text);
    memcpy(o->text + o->len, s, n);
    o->len += n;
}

static void record(struct outcome *o, int rc)
{
    char tag[32];
    int n = snprintf(tag, sizeof tag, "[%d:%zu]", rc, cmd.argc);
    out_add(o, tag, (size_t)n);
    for (size_t i = 0; i < cmd.argc; i++) {
        out_add(o, (const char *)cmd.argv[i].p, cmd.argv[i].len);
        out_add(o, "|", 1);
    }
    if (rc == PROTO_EBAD || rc == PROTO_EFATAL)
        out_add(o, cmd.err, strlen(cmd.err));
}

/* Feeds stream in chunks ending at the given cut points, as a server does:
 * append what arrived, parse all complete commands, keep the rest. */
static void feed(const uint8_t *stream, size_t len, const size_t *cuts, size_t ncuts,
                 struct outcome *o)
{
    uint8_t *buf = malloc(len + 1);
    ck_assert_ptr_nonnull(buf);
    size_t have = 0, start = 0, prev = 0;
    o->len = 0;
    for (size_t c = 0; c <= ncuts; c++) {
        size_t upto = c < ncuts ? cuts[c] : len;
        memcpy(buf + have, stream + prev, upto - prev);
        have += upto - prev;
        prev = upto;
        for (;;) {
            int rc = proto_parse(buf + start, have - start, scratch, sizeof scratch, &cmd);
            if (rc == PROTO_MORE)
                break;
            record(o, rc);
            if (rc == PROTO_EFATAL) {
                free(buf);
                return;
            }
            ck_assert_uint_gt(cmd.consumed, 0);
            start += cmd.consumed;
        }
    }
    free(buf);
}

static const char split_stream[] =
    "PING\r\n"
    "*3\r\n$5\r\nTRACK\r\n$2\r\n42\r\n$4\r\nview\r\n"
    "\r\n"
    "TRACK 7 share platform=whatsapp ua=\"Mozilla/5.0 (X11; \\\"q\\\")\"\n"
    "ECHO \"broken\r\n"
    "*2\r\n$4\r\nECHO\r\n$5\r\na\r\nb\"\r\n"
    "*0\r\n"
    "   STATS    7  \r\n"
    "ECHO \"\\x41\\t\"\n";

START_TEST(split_every_byte)
{
    const uint8_t *s = (const uint8_t *)split_stream;
    size_t len = sizeof split_stream - 1;
    struct outcome whole, part;
    feed(s, len, NULL, 0, &whole);
    /* 9 outcomes, one of them the unbalanced quote. */
    ck_assert_ptr_nonnull(memmem(whole.text, whole.len, "unbalanced quotes", 17));
    ck_assert_ptr_nonnull(memmem(whole.text, whole.len, "ua=Mozilla/5.0 (X11; \"q\")|", 26));
    for (size_t cut = 1; cut < len; cut++) {
        feed(s, len, &cut, 1, &part);
        if (part.len != whole.len || memcmp(part.text, whole.text, whole.len) != 0)
            ck_abort_msg("split at byte %zu changes the parse", cut);
    }
    /* One byte at a time. */
    size_t *cuts = malloc(len * sizeof *cuts);
    ck_assert_ptr_nonnull(cuts);
    for (size_t i = 0; i < len - 1; i++)
        cuts[i] = i + 1;
    feed(s, len, cuts, len - 1, &part);
    ck_assert_uint_eq(part.len, whole.len);
    ck_assert_int_eq(memcmp(part.text, whole.text, whole.len), 0);
    free(cuts);
}
END_TEST

START_TEST(split_fatal_every_byte)
{
    static const char bad[] = "PING\r\n*2\r\n$4\r\nECHO\r\n$3\r\nabcd\r\nPING\r\n";
    struct outcome whole, part;
    feed((const uint8_t *)bad, sizeof bad - 1, NULL, 0, &whole);
    ck_assert_ptr_nonnull(memmem(whole.text, whole.len, "not followed by CRLF", 20));
    for (size_t cut = 1; cut < sizeof bad - 1; cut++) {
        feed((const uint8_t *)bad, sizeof bad - 1, &cut, 1, &part);
        ck_assert_uint_eq(part.len, whole.len);
        ck_assert_int_eq(memcmp(part.text, whole.text, whole.len), 0);
    }
}
END_TEST

/* An encoder's output: exactly the literal, length included (a zero
 * length would make a bare memcmp pass). */
#define ENC_EQ(out, n, lit)                                                                    \
    do {                                                                                       \
        ck_assert_uint_eq((n), sizeof(lit) - 1);                                               \
        ck_assert_int_eq(memcmp((out), (lit), sizeof(lit) - 1), 0);                            \
    } while (0)

/* ---- encoders --------------------------------------------------------------- */

START_TEST(encoders)
{
    uint8_t out[128];
    size_t n;
    n = proto_enc_int(out, 0);
    ENC_EQ(out, n, ":0\r\n");
    n = proto_enc_int(out, -42);
    ENC_EQ(out, n, ":-42\r\n");
    n = proto_enc_int(out, INT64_MIN);
    ck_assert_uint_eq(n, 23);
    ENC_EQ(out, n, ":-9223372036854775808\r\n");
    n = proto_enc_int(out, INT64_MAX);
    ENC_EQ(out, n, ":9223372036854775807\r\n");
    n = proto_enc_array(out, 3);
    ENC_EQ(out, n, "*3\r\n");
    n = proto_enc_map(out, 12);
    ENC_EQ(out, n, "%12\r\n");
    n = proto_enc_bulk(out, "a\0b", 3);
    ck_assert_uint_eq(n, 9);
    ENC_EQ(out, n, "$3\r\na\0b\r\n");
    n = proto_enc_bulk(out, NULL, 0);
    ENC_EQ(out, n, "$0\r\n\r\n");
    n = proto_enc_line(out, '-', "ERR a\r\nb", 8);
    ck_assert_uint_eq(n, 11);
    ENC_EQ(out, n, "-ERR a  b\r\n");
    char d[24];
    ck_assert_uint_eq(proto_u64_dec(d, UINT64_MAX), 20);
    ck_assert_int_eq(memcmp(d, "18446744073709551615", 20), 0);
}
END_TEST

/* ---- quoting round trip ------------------------------------------------------- */

static uint64_t rng_state;
static uint64_t rng(void)
{
    /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

START_TEST(quote_examples)
{
    char out[64];
    size_t n = proto_quote(out, (const uint8_t *)"abc", 3);
    ENC_EQ(out, n, "abc");
    n = proto_quote(out, (const uint8_t *)"", 0);
    ENC_EQ(out, n, "\"\"");
    n = proto_quote(out, (const uint8_t *)"Mozilla/5.0 (X11)", 17);
    ck_assert_uint_eq(n, 19);
    ENC_EQ(out, n, "\"Mozilla/5.0 (X11)\"");
    n = proto_quote(out, (const uint8_t *)"a\"\\\n\r\t\x01\xff", 8);
    ENC_EQ(out, n, "\"a\\\"\\\\\\n\\r\\t\\x01\\xff\"");
    ck_assert(!proto_needs_quote((const uint8_t *)"::1", 3));
    ck_assert(proto_needs_quote((const uint8_t *)"a\\b", 3));
}
END_TEST

START_TEST(quote_round_trip)
{
    uint64_t seed = 0x5eed0001;
    const char *env = getenv("SHORTSTAT_SEED");
    if (env)
        seed = strtoull(env, NULL, 0);
    rng_state = seed;
    char *line = malloc(2 * proto_quote_size(600) + 64);
    uint8_t v[600];
    ck_assert_ptr_nonnull(line);
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = rng() % (iter < 10000 ? 16 : 600);
        int alphabet = (int)(rng() % 3);
        for (size_t i = 0; i < len; i++) {
            uint64_t r = rng();
            if (alphabet == 0)
                v[i] = (uint8_t)r;                       /* any byte */
            else if (alphabet == 1)
                v[i] = " \"'\\\t\n\rax=("[r % 12];     /* the tricky ones */
            else
                v[i] = (uint8_t)(0x20 + r % 95);         /* printable */
        }
        /* As a value after "k=", and as a whole token between others. */
        size_t o = 0;
        memcpy(line + o, "TRACK k=", 8);
        o += 8;
        o += proto_quote(line + o, v, len);
        line[o++] = ' ';
        o += proto_quote(line + o, v, len);
        memcpy(line + o, " z\r\n", 4);
        o += 4;
        int rc = parse_str(line, o);
        bool ok = rc == PROTO_OK && cmd.consumed == o && cmd.argc == 4 &&
                  cmd.argv[1].len == len + 2 && memcmp(cmd.argv[1].p, "k=", 2) == 0 &&
                  (len == 0 || memcmp(cmd.argv[1].p + 2, v, len) == 0) &&
                  cmd.argv[2].len == len && (len == 0 || memcmp(cmd.argv[2].p, v, len) == 0) &&
                  cmd.argv[3].len == 1;
        if (!ok)
            ck_abort_msg("quoting round trip failed: SHORTSTAT_SEED=%llu iteration %d (len %zu)",
                         (unsigned long long)seed, iter, len);
    }
    free(line);
}
END_TEST

extern Suite *proto_suite(void);
/* An empty buffer has no storage yet: appending nothing must neither
 * allocate nor form a pointer from NULL (clang's UBSan flags NULL + 0). */
START_TEST(buf_empty_append)
{
    struct net_buf b = {0};
    net_buf_append(&b, "", 0);
    ck_assert_ptr_null(b.p);
    ck_assert_uint_eq(net_buf_live(&b), 0);
    uint8_t *o = net_buf_reserve(&b, 0);
    ck_assert_ptr_nonnull(o);
    net_buf_append(&b, "ab", 2);
    ck_assert_uint_eq(net_buf_live(&b), 2);
    ck_assert_int_eq(memcmp(b.p + b.off, "ab", 2), 0);
    net_buf_free(&b);
}
END_TEST

Suite *proto_suite(void)
{
    Suite *s = suite_create("proto");
    TCase *tc = tcase_create("inline");
    tcase_add_test(tc, inline_basic);
    tcase_add_test(tc, inline_empty_lines);
    tcase_add_test(tc, inline_quotes);
    tcase_add_test(tc, inline_errors_keep_going);
    tcase_add_test(tc, inline_more);
    tcase_add_test(tc, inline_limits);
    tcase_add_test(tc, inline_too_many_args);
    suite_add_tcase(s, tc);
    tc = tcase_create("resp");
    tcase_add_test(tc, resp_basic);
    tcase_add_test(tc, resp_more);
    tcase_add_test(tc, resp_errors);
    tcase_add_test(tc, resp_limits);
    suite_add_tcase(s, tc);
    tc = tcase_create("split");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, split_every_byte);
    tcase_add_test(tc, split_fatal_every_byte);
    suite_add_tcase(s, tc);
    tc = tcase_create("encode");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, buf_empty_append);
    tcase_add_test(tc, encoders);
    tcase_add_test(tc, quote_examples);
    tcase_add_test(tc, quote_round_trip);
    suite_add_tcase(s, tc);
    return s;
}
