/* SPDX-License-Identifier: MIT */
/*
 * buf.h -- growable byte buffers for a connection's input and output, and the
 * RESP reply writers that append to an output buffer.
 *
 * A buffer owns its memory. Bytes [off, len) are live; [0, off) were already
 * consumed (input parsed / output written). Allocation failure is sticky:
 * `failed` is set, further appends are dropped, and the owner closes the
 * connection at its next check, so reply writers need no error paths.
 */
#ifndef SHORTSTAT_NET_BUF_H
#define SHORTSTAT_NET_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct net_buf {
    uint8_t *p;
    size_t off, len, cap;
    bool failed;   /* an allocation failed; contents are incomplete */
};

static inline size_t net_buf_live(const struct net_buf *b) { return b->len - b->off; }

/* Room for n more bytes after len; NULL (and failed set) on ENOMEM. */
uint8_t *net_buf_reserve(struct net_buf *b, size_t n);
/* Drop the consumed prefix [0, off), moving live bytes to the start. */
void net_buf_compact(struct net_buf *b);
/* Consume n live bytes; an emptied buffer rewinds to offset 0. */
void net_buf_consume(struct net_buf *b, size_t n);
/* Free memory when empty and larger than keep (after a burst). */
void net_buf_shrink(struct net_buf *b, size_t keep);
void net_buf_free(struct net_buf *b);

void net_buf_append(struct net_buf *b, const void *p, size_t n);

/* ---- RESP replies --------------------------------------------------------- */
void net_reply_ok(struct net_buf *b);                           /* +OK */
void net_reply_status(struct net_buf *b, const char *s);        /* +s */
void net_reply_status_n(struct net_buf *b, const char *s, size_t n);  /* +s[0..n) */
/* -<msg>: msg must start with its error code ("ERR ...", "NOAUTH ..."). */
void net_reply_error(struct net_buf *b, const char *msg);
void net_reply_int(struct net_buf *b, int64_t v);
void net_reply_array(struct net_buf *b, size_t n);
void net_reply_bulk(struct net_buf *b, const void *p, size_t len);
void net_reply_bulk_str(struct net_buf *b, const char *s);
void net_reply_bulk_u64(struct net_buf *b, uint64_t v);
/* No value: RESP2's $-1, RESP3's _ (resp: the connection's version). */
void net_reply_null(struct net_buf *b, int resp);
/* n key/value pairs: a RESP3 map, or the flat array of 2n RESP2 gives. */
void net_reply_map(struct net_buf *b, size_t n, int resp);

#endif
