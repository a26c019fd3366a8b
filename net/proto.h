/* SPDX-License-Identifier: MIT */
/*
 * proto.h -- the wire protocol, pure: bytes in, one command's arguments out;
 * reply encoders; the inline quoting that HISTORY records use.
 *
 * No malloc, no fd, no libev: everything works on caller memory, so the
 * parser can be unit-tested and fuzzed alone (STYLE.md section 5).
 *
 * Lifetimes: the argv of a parsed command points into the caller's input
 * buffer (bare inline tokens, RESP bulk arguments) or into the caller's
 * scratch buffer (inline tokens that held quotes). Both must outlive the use
 * of argv; the parser never retains anything between calls.
 */
#ifndef SHORTSTAT_PROTO_H
#define SHORTSTAT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_INLINE_MAX (64u * 1024u)  /* bytes in one inline line, terminator excluded */
#define PROTO_BULK_MAX   (64u * 1024u)  /* bytes in one RESP bulk argument */
#define PROTO_ARGC_MAX   1024u          /* arguments in one command */
#define PROTO_SCRATCH_MIN PROTO_INLINE_MAX /* scratch that always suffices */
#define PROTO_ERR_MAX    96u

enum proto_rc {
    PROTO_OK = 0,      /* one command parsed (argc 0: empty line or *0, skip it) */
    PROTO_MORE = -1,   /* incomplete: call again from the same start with more bytes */
    PROTO_EBAD = -2,   /* bad inline command: reply with err, skip `consumed`, go on */
    PROTO_EFATAL = -3, /* cannot resynchronise: reply with err, then close */
};

struct proto_arg {
    const uint8_t *p;  /* borrowed: input or scratch */
    size_t len;
};

struct proto_cmd {
    size_t argc;
    size_t consumed;      /* input bytes used (PROTO_OK and PROTO_EBAD) */
    size_t scratch_used;  /* scratch bytes used by this command */
    bool resp;            /* framing: RESP multibulk, else inline */
    char err[PROTO_ERR_MAX]; /* "unbalanced quotes in request" etc. */
    struct proto_arg argv[PROTO_ARGC_MAX];
};

/* Parse the first command in buf[0..len). A command starting with '*' is RESP
 * multibulk, anything else is an inline line. scratch receives unescaped
 * quoted tokens; PROTO_SCRATCH_MIN bytes always suffice (a smaller scratch
 * that overflows gives PROTO_EFATAL). */
int proto_parse(const uint8_t *buf, size_t len, uint8_t *scratch, size_t scratch_cap,
                struct proto_cmd *cmd);

/* ---- reply encoders -------------------------------------------------------
 * Each writes into out, which must have room for the stated size, and returns
 * the bytes written. */
#define PROTO_INT_SIZE 24u   /* ":" + "-9223372036854775808" + CRLF, and "*n\r\n", "$n\r\n" */

/* Status or error line: prefix ('+' or '-') + s + CRLF; CR and LF inside s
 * become spaces so a message can never break the framing. Needs len + 3. */
size_t proto_enc_line(uint8_t *out, char prefix, const char *s, size_t len);
size_t proto_enc_int(uint8_t *out, int64_t v);          /* ":v\r\n", PROTO_INT_SIZE */
size_t proto_enc_array(uint8_t *out, size_t n);         /* "*n\r\n", PROTO_INT_SIZE */
size_t proto_enc_map(uint8_t *out, size_t n);           /* "%n\r\n" (RESP3), PROTO_INT_SIZE */
size_t proto_enc_bulk_hdr(uint8_t *out, size_t len);    /* "$len\r\n", PROTO_INT_SIZE */
static inline size_t proto_bulk_size(size_t len) { return len + PROTO_INT_SIZE + 2; }
/* "$len\r\n" + bytes + "\r\n", needs proto_bulk_size(len). */
size_t proto_enc_bulk(uint8_t *out, const void *p, size_t len);

/* Decimal digits of v into out (at least 20 bytes, not terminated). */
size_t proto_u64_dec(char *out, uint64_t v);
size_t proto_i64_dec(char *out, int64_t v);  /* at least 20 bytes */

/* ---- inline quoting ---------------------------------------------------------
 * Writes v so that the inline parser reads back exactly v as (part of) one
 * token: bare when every byte is printable ASCII other than '"' and '\\' and
 * v is not empty, else in double quotes with \" \\ \n \r \t \xHH escapes.
 * Needs proto_quote_size(len) bytes. */
static inline size_t proto_quote_size(size_t len) { return 4 * len + 2; }
bool proto_needs_quote(const uint8_t *v, size_t len);
size_t proto_quote(char *out, const uint8_t *v, size_t len);

#endif
