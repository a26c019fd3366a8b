/* SPDX-License-Identifier: MIT */
/*
 * slowlog.h -- the slow-command log behind SLOWLOG (net-internal).
 *
 * A bounded ring of the newest commands that ran for at least
 * slowlog-log-slower-than microseconds, as Redis keeps it: each entry has
 * an id that only grows (RESET does not rewind it), the wall-clock second it
 * finished, its run time, its arguments as Redis shortens them (at most
 * NET_SLOWLOG_ARGC, the last then saying how many more there were; each at
 * most NET_SLOWLOG_ARG_MAX bytes, then how many more bytes), and the client's
 * address and name. Pure data: no clock, no I/O; the caller decides what is
 * slow and which arguments to hide (passwords).
 *
 * Memory is bounded by max_len entries of at most ~6 KiB each. One
 * allocation per entry, made only for a slow command. Errors: -1 when an
 * allocation fails; the log is then as it was (an entry that cannot be
 * kept is dropped, and its id is still used).
 */
#ifndef SHORTSTAT_NET_SLOWLOG_H
#define SHORTSTAT_NET_SLOWLOG_H

#include <stddef.h>
#include <stdint.h>

#include "net/proto.h"

#define NET_SLOWLOG_ARGC 32u       /* arguments kept per entry, the last may be "... (N more arguments)" */
#define NET_SLOWLOG_ARG_MAX 128u   /* bytes kept per argument, then "... (N more bytes)" */
#define NET_SLOWLOG_STR_MAX 128u   /* client address and name */
#define NET_SLOWLOG_MAX_LEN 1000000u  /* largest slowlog-max-len */

struct net_slowlog_entry {
    uint64_t id;
    int64_t unix_s;                /* when the command finished */
    uint64_t usec;                 /* how long it ran */
    uint32_t argc;
    struct proto_arg *argv;        /* argc arguments ... */
    const char *addr, *name;       /* ... and these, NUL-terminated, in one block */
    size_t bytes;                  /* the block's size */
};

struct net_slowlog {
    struct net_slowlog_entry *e;   /* ring of cap slots (cap grows up to max_len as
                                      entries come); newest at (start + n - 1) % cap */
    uint32_t cap, start, n;
    uint32_t max_len;
    uint64_t next_id;
    uint64_t bytes;                /* entries' argument blocks, for used memory */
    void *(*malloc_fn)(size_t n);  /* malloc; tests make it fail */
};

void net_slowlog_init(struct net_slowlog *l, uint32_t max_len);
void net_slowlog_free(struct net_slowlog *l);
/* Adds the newest entry, dropping the oldest past max_len. Argument i is
 * shown as "(redacted)" when bit i of redact is set (i < 64). note, when
 * not NULL, is one more argument after argv (TRACK batches say how many
 * commands the time covers). 0, or -1 on ENOMEM (the log unchanged but for
 * the id used up). */
int net_slowlog_push(struct net_slowlog *l, const struct proto_arg *argv, size_t argc,
                     uint64_t redact, const char *note, int64_t unix_s, uint64_t usec,
                     const char *addr, const char *name);
/* A new max_len: the oldest entries past it go at once. Cannot fail. */
void net_slowlog_set_max(struct net_slowlog *l, uint32_t max_len);
/* Empties the log; ids go on from where they were. */
void net_slowlog_reset(struct net_slowlog *l);
/* Bytes the log holds: its slots and its entries. */
static inline uint64_t net_slowlog_memory(const struct net_slowlog *l)
{
    return l->bytes + (uint64_t)l->cap * sizeof(struct net_slowlog_entry);
}
static inline uint32_t net_slowlog_len(const struct net_slowlog *l)
{
    return l->n;
}
/* The i-th newest entry (0 = newest), i < len. */
const struct net_slowlog_entry *net_slowlog_get(const struct net_slowlog *l, uint32_t i);

#endif
