/* SPDX-License-Identifier: MIT */
/*
 * fuzz_proto.c -- libFuzzer target for net/proto.c (make fuzz).
 *
 * Checks, for any input:
 *  - parsing the whole buffer command by command never reads or writes out
 *    of bounds (ASan), always progresses, and every argument points into the
 *    input or the scratch;
 *  - feeding the same bytes in two pieces, cut at a point the input chooses,
 *    yields exactly the same outcomes (the server's read/append/reparse loop);
 *  - quoting the input with proto_quote and parsing it back as a token gives
 *    the input again.
 *
 * The last byte's low bits also pick variants, so the limits are reached
 * although libFuzzer's inputs stay a few KiB:
 *  - bit 0: parse the input again (whole and cut) after PROTO_INLINE_MAX - 64
 *    filler bytes that begin its first line (bare, or opening a quote when
 *    bit 2 is set), so the line can cross the inline limit and a quoted
 *    token can come within a few bytes of PROTO_SCRATCH_MIN;
 *  - bit 1: the plain runs get a scratch of last >> 2 bytes (0..63), not
 *    PROTO_SCRATCH_MIN, allocated to exactly that size so that ASan sees a
 *    write past it: a quoted token overflows it and the parser must refuse
 *    (PROTO_EFATAL), not write past it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/proto.h"

static struct proto_cmd cmd;
static uint8_t scratch[PROTO_SCRATCH_MIN];
static const uint8_t *scr;  /* the scratch of the run in progress, scr_cap bytes */
static size_t scr_cap;

/* FNV-1a over every outcome: return codes, arguments, messages. */
static uint64_t mix(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t outcome(uint64_t h, int rc)
{
    h = mix(h, &rc, sizeof rc);
    h = mix(h, &cmd.argc, sizeof cmd.argc);
    for (size_t i = 0; i < cmd.argc; i++) {
        h = mix(h, &cmd.argv[i].len, sizeof cmd.argv[i].len);
        h = mix(h, cmd.argv[i].p, cmd.argv[i].len);
    }
    if (rc == PROTO_EBAD || rc == PROTO_EFATAL)
        h = mix(h, cmd.err, strlen(cmd.err));
    return h;
}

static void check_args(const uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < cmd.argc; i++) {
        const uint8_t *p = cmd.argv[i].p;
        size_t n = cmd.argv[i].len;
        int in_buf = p >= buf && p + n <= buf + len;
        int in_scr = p >= scr && p + n <= scr + scr_cap;
        if (!in_buf && !in_scr && n)
            abort();
    }
}

/* Parses buf as it arrives in pieces ending at cuts[]; returns the hash. */
static uint64_t run(const uint8_t *data, size_t len, size_t cut, size_t cap)
{
    uint8_t *buf = malloc(len ? len : 1);
    uint8_t *sc = cap < sizeof scratch ? malloc(cap ? cap : 1) : scratch;
    if (!buf || !sc)
        abort();
    scr = sc;
    scr_cap = cap;
    uint64_t h = 0xcbf29ce484222325ull;
    size_t have = 0, start = 0;
    size_t stops[2] = {cut, len};
    for (int s = 0; s < 2; s++) {
        memcpy(buf + have, data + have, stops[s] - have);
        have = stops[s];
        for (;;) {
            int rc = proto_parse(buf + start, have - start, sc, cap, &cmd);
            if (rc == PROTO_MORE)
                break;
            h = outcome(h, rc);
            if (rc == PROTO_EFATAL)
                goto done;
            check_args(buf + start, have - start);
            if (cmd.consumed == 0 || cmd.consumed > have - start)
                abort();
            start += cmd.consumed;
        }
    }
done:
    free(buf);
    if (sc != scratch)
        free(sc);
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t cut = size ? (size_t)data[0] * size / 256 : 0;
    uint8_t last = size ? data[size - 1] : 0;
    size_t cap = (last & 2) ? (size_t)(last >> 2) : sizeof scratch;
    if (run(data, size, size, cap) != run(data, size, cut, cap))
        abort();

    if (last & 1) {  /* a first line near PROTO_INLINE_MAX */
        size_t pad = PROTO_INLINE_MAX - 64, blen = pad + size;
        uint8_t *big = malloc(blen);
        if (!big)
            abort();
        memset(big, 'a', pad);
        if (last & 4)
            big[0] = '"';
        memcpy(big + pad, data, size);
        if (run(big, blen, blen, sizeof scratch) != run(big, blen, pad + cut, sizeof scratch))
            abort();
        free(big);
    }

    /* Quoting round trip on (a prefix of) the input. */
    size_t vl = size < 4096 ? size : 4096;
    char *line = malloc(proto_quote_size(vl) + 8);
    if (!line)
        abort();
    size_t o = 0;
    memcpy(line, "X k=", 4);
    o = 4 + proto_quote(line + 4, data, vl);
    line[o++] = '\n';
    int rc = proto_parse((const uint8_t *)line, o, scratch, sizeof scratch, &cmd);
    if (rc != PROTO_OK || cmd.argc != 2 || cmd.consumed != o || cmd.argv[1].len != vl + 2 ||
        memcmp(cmd.argv[1].p, "k=", 2) != 0 || (vl && memcmp(cmd.argv[1].p + 2, data, vl) != 0))
        abort();
    free(line);
    return 0;
}
