/* SPDX-License-Identifier: MIT */
/*
 * slowlog.c -- the slow-command log (contract in slowlog.h).
 *
 * The ring's slots are small fixed headers; an entry's arguments, address
 * and name live in one block of its own, so a push is one malloc and a drop
 * one free. The slot array grows by doubling as entries come (a log asked
 * to hold a million holds what it has, not a million empty slots) and is
 * rebuilt smaller when max_len shrinks, if memory allows: a shrink drops
 * entries first and never fails. Invariants: n <= max_len; n <= cap, and
 * cap <= max_len but after a shrink that could not rebuild; start < cap
 * when cap > 0; bytes is the sum of the live blocks.
 */
#include "net/slowlog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char redacted[] = "(redacted)";

void net_slowlog_init(struct net_slowlog *l, uint32_t max_len)
{
    memset(l, 0, sizeof *l);
    l->max_len = max_len > NET_SLOWLOG_MAX_LEN ? NET_SLOWLOG_MAX_LEN : max_len;
    l->malloc_fn = malloc;
}

static struct net_slowlog_entry *slot(const struct net_slowlog *l, uint32_t i)
{
    uint32_t pos = l->start + i;
    if (pos >= l->cap)
        pos -= l->cap;
    return &l->e[pos];
}

static void drop_oldest(struct net_slowlog *l)
{
    struct net_slowlog_entry *o = slot(l, 0);
    l->bytes -= o->bytes;
    free(o->argv);
    if (++l->start == l->cap)
        l->start = 0;
    l->n--;
}

/* The slot array at capacity cap (>= n), entries in order from slot 0. */
static int rebuild(struct net_slowlog *l, uint32_t cap)
{
    struct net_slowlog_entry *e = NULL;
    if (cap && !(e = l->malloc_fn((size_t)cap * sizeof *e)))
        return -1;
    for (uint32_t i = 0; i < l->n; i++)
        e[i] = *slot(l, i);
    free(l->e);
    l->e = e;
    l->cap = cap;
    l->start = 0;
    return 0;
}

void net_slowlog_free(struct net_slowlog *l)
{
    net_slowlog_reset(l);
    free(l->e);
    l->e = NULL;
    l->cap = 0;
    l->start = 0;
}

void net_slowlog_reset(struct net_slowlog *l)
{
    while (l->n)
        drop_oldest(l);
    l->start = 0;
}

void net_slowlog_set_max(struct net_slowlog *l, uint32_t max_len)
{
    if (max_len > NET_SLOWLOG_MAX_LEN)
        max_len = NET_SLOWLOG_MAX_LEN;
    while (l->n > max_len)
        drop_oldest(l);
    if (max_len < l->cap)
        (void)rebuild(l, max_len);  /* without memory the bigger array stays */
    l->max_len = max_len;
}

/* What an argument shows: its first len bytes, then tail. */
struct shown {
    const uint8_t *p;
    size_t len;          /* bytes of p kept */
    char tail[48];       /* "... (N more bytes)", or "" */
    size_t tail_len;
};

static void show(struct shown *s, const uint8_t *p, size_t len)
{
    s->p = p;
    s->len = len;
    s->tail_len = 0;
    s->tail[0] = 0;
    if (len > NET_SLOWLOG_ARG_MAX) {
        s->len = NET_SLOWLOG_ARG_MAX;
        int k = snprintf(s->tail, sizeof s->tail, "... (%zu more bytes)", len - NET_SLOWLOG_ARG_MAX);
        s->tail_len = k > 0 ? (size_t)k : 0;
    }
}

static size_t str_len_max(const char *s)
{
    return s ? strnlen(s, NET_SLOWLOG_STR_MAX) : 0;
}

int net_slowlog_push(struct net_slowlog *l, const struct proto_arg *argv, size_t argc,
                     uint64_t redact, const char *note, int64_t unix_s, uint64_t usec,
                     const char *addr, const char *name)
{
    uint64_t id = l->next_id++;
    if (l->max_len == 0)
        return 0;
    size_t total = argc + (note ? 1 : 0);
    size_t kept = total < NET_SLOWLOG_ARGC ? total : NET_SLOWLOG_ARGC;
    struct shown sh[NET_SLOWLOG_ARGC];
    char more[48];
    size_t bytes = kept * sizeof(struct proto_arg);
    for (size_t j = 0; j < kept; j++) {
        if (kept != total && j == kept - 1) {
            int k = snprintf(more, sizeof more, "... (%zu more arguments)", total - kept + 1);
            show(&sh[j], (const uint8_t *)more, k > 0 ? (size_t)k : 0);
        } else if (j >= argc) {
            show(&sh[j], (const uint8_t *)note, strlen(note));
        } else if (j < 64 && (redact >> j & 1)) {
            show(&sh[j], (const uint8_t *)redacted, sizeof redacted - 1);
        } else {
            show(&sh[j], argv[j].p, argv[j].len);
        }
        bytes += sh[j].len + sh[j].tail_len;
    }
    size_t alen = str_len_max(addr), nlen = str_len_max(name);
    bytes += alen + 1 + nlen + 1;

    struct proto_arg *block = l->malloc_fn(bytes);
    if (!block)
        return -1;
    if (l->n == l->cap && l->cap < l->max_len) {
        uint64_t cap = l->cap ? (uint64_t)l->cap * 2 : 8;
        if (rebuild(l, (uint32_t)(cap < l->max_len ? cap : l->max_len))) {
            free(block);
            return -1;
        }
    }
    char *w = (char *)(block + kept);
    for (size_t j = 0; j < kept; j++) {
        block[j].p = (const uint8_t *)w;
        block[j].len = sh[j].len + sh[j].tail_len;
        memcpy(w, sh[j].p, sh[j].len);
        memcpy(w + sh[j].len, sh[j].tail, sh[j].tail_len);
        w += block[j].len;
    }
    char *a = w;
    memcpy(a, addr ? addr : "", alen);
    a[alen] = 0;
    char *nm = a + alen + 1;
    memcpy(nm, name ? name : "", nlen);
    nm[nlen] = 0;

    if (l->n == l->max_len)
        drop_oldest(l);  /* full at max_len (<= cap): the slot is free now */
    struct net_slowlog_entry *e = slot(l, l->n);
    *e = (struct net_slowlog_entry){
        .id = id, .unix_s = unix_s, .usec = usec, .argc = (uint32_t)kept,
        .argv = block, .addr = a, .name = nm, .bytes = bytes,
    };
    l->n++;
    l->bytes += bytes;
    return 0;
}

const struct net_slowlog_entry *net_slowlog_get(const struct net_slowlog *l, uint32_t i)
{
    return slot(l, l->n - 1 - i);
}
