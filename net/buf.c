/* SPDX-License-Identifier: MIT */
/*
 * buf.c -- connection buffers and RESP reply writers.
 *
 * Growth doubles capacity (amortised O(1) append), so a pipeline of 100,000
 * replies costs a handful of reallocs once, and the memory is then reused by
 * every later command on the connection: no malloc per command. A burst that
 * grew a buffer far beyond normal is given back by net_buf_shrink once the
 * buffer is empty.
 *
 * The hot reply (+OK) is a 5-byte memcpy after one capacity check.
 */
#include "net/buf.h"

#include <stdlib.h>
#include <string.h>

#include "net/proto.h"

#define BUF_MIN 4096u

uint8_t *net_buf_reserve(struct net_buf *b, size_t n)
{
    if (b->failed)
        return NULL;
    if (b->cap - b->len >= n && b->p)  /* b->p is NULL until the first growth */
        return b->p + b->len;
    if (b->off > 0 && b->cap - net_buf_live(b) >= n && b->off >= b->cap / 2) {
        net_buf_compact(b);
        return b->p + b->len;
    }
    size_t need = b->len + n;
    if (need < b->len) {  /* overflow */
        b->failed = true;
        return NULL;
    }
    size_t cap = b->cap ? b->cap : BUF_MIN;
    while (cap < need)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return NULL;
    }
    b->p = p;
    b->cap = cap;
    return b->p + b->len;
}

void net_buf_compact(struct net_buf *b)
{
    if (b->off == 0)
        return;
    size_t live = net_buf_live(b);
    if (live)
        memmove(b->p, b->p + b->off, live);
    b->off = 0;
    b->len = live;
}

void net_buf_consume(struct net_buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}

void net_buf_shrink(struct net_buf *b, size_t keep)
{
    if (b->len == 0 && b->cap > keep) {
        free(b->p);
        b->p = NULL;
        b->cap = b->off = 0;
    }
}

void net_buf_free(struct net_buf *b)
{
    free(b->p);
    *b = (struct net_buf){0};
}

void net_buf_append(struct net_buf *b, const void *p, size_t n)
{
    if (n == 0)  /* nothing to add: do not allocate for it */
        return;
    uint8_t *o = net_buf_reserve(b, n);
    if (o) {
        memcpy(o, p, n);
        b->len += n;
    }
}

void net_reply_ok(struct net_buf *b)
{
    uint8_t *o = net_buf_reserve(b, 5);
    if (o) {
        memcpy(o, "+OK\r\n", 5);
        b->len += 5;
    }
}

static void reply_line(struct net_buf *b, char prefix, const char *s, size_t n)
{
    uint8_t *o = net_buf_reserve(b, n + 3);
    if (o)
        b->len += proto_enc_line(o, prefix, s, n);
}

void net_reply_status(struct net_buf *b, const char *s) { reply_line(b, '+', s, strlen(s)); }
void net_reply_status_n(struct net_buf *b, const char *s, size_t n) { reply_line(b, '+', s, n); }
void net_reply_error(struct net_buf *b, const char *msg) { reply_line(b, '-', msg, strlen(msg)); }

void net_reply_int(struct net_buf *b, int64_t v)
{
    uint8_t *o = net_buf_reserve(b, PROTO_INT_SIZE);
    if (o)
        b->len += proto_enc_int(o, v);
}

void net_reply_array(struct net_buf *b, size_t n)
{
    uint8_t *o = net_buf_reserve(b, PROTO_INT_SIZE);
    if (o)
        b->len += proto_enc_array(o, n);
}

void net_reply_bulk(struct net_buf *b, const void *p, size_t len)
{
    uint8_t *o = net_buf_reserve(b, proto_bulk_size(len));
    if (o)
        b->len += proto_enc_bulk(o, p, len);
}

void net_reply_bulk_str(struct net_buf *b, const char *s) { net_reply_bulk(b, s, strlen(s)); }

void net_reply_null(struct net_buf *b, int resp)
{
    if (resp == 3)
        net_buf_append(b, "_\r\n", 3);
    else
        net_buf_append(b, "$-1\r\n", 5);
}

void net_reply_map(struct net_buf *b, size_t n, int resp)
{
    if (resp != 3) {
        net_reply_array(b, 2 * n);
        return;
    }
    uint8_t *o = net_buf_reserve(b, PROTO_INT_SIZE);
    if (o)
        b->len += proto_enc_map(o, n);
}

void net_reply_bulk_u64(struct net_buf *b, uint64_t v)
{
    char tmp[24];
    net_reply_bulk(b, tmp, proto_u64_dec(tmp, v));
}
