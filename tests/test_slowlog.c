/* SPDX-License-Identifier: MIT */
/*
 * test_slowlog.c -- the slow-command log (net/slowlog.c), in memory.
 *
 * Redis's shortening rules, redaction, the bound, ids across RESET, every
 * allocation failure, and a seeded property test against a plain list
 * (SHORTSTAT_SEED=<n> replays a failure).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/slowlog.h"

static struct proto_arg A(const char *s)
{
    return (struct proto_arg){(const uint8_t *)s, strlen(s)};
}

static void expect_arg(const struct net_slowlog_entry *e, uint32_t i, const char *want)
{
    ck_assert_uint_gt(e->argc, i);
    ck_assert_uint_eq(e->argv[i].len, strlen(want));
    ck_assert_int_eq(memcmp(e->argv[i].p, want, e->argv[i].len), 0);
}

static int push(struct net_slowlog *l, const char *a0, uint64_t usec)
{
    struct proto_arg argv[2] = {A("PING"), A(a0)};
    return net_slowlog_push(l, argv, 2, 0, NULL, 1700000000, usec, "127.0.0.1:5", "app");
}

START_TEST(newest_first_with_ids)
{
    struct net_slowlog l;
    net_slowlog_init(&l, 3);
    ck_assert_uint_eq(net_slowlog_len(&l), 0);
    for (int i = 0; i < 5; i++) {
        char a[16];
        snprintf(a, sizeof a, "a%d", i);
        ck_assert_int_eq(push(&l, a, 100 + (uint64_t)i), 0);
    }
    ck_assert_uint_eq(net_slowlog_len(&l), 3);  /* the two oldest went */
    const struct net_slowlog_entry *e = net_slowlog_get(&l, 0);
    ck_assert_uint_eq(e->id, 4);
    ck_assert_uint_eq(e->usec, 104);
    ck_assert_int_eq(e->unix_s, 1700000000);
    ck_assert_str_eq(e->addr, "127.0.0.1:5");
    ck_assert_str_eq(e->name, "app");
    expect_arg(e, 0, "PING");
    expect_arg(e, 1, "a4");
    ck_assert_uint_eq(net_slowlog_get(&l, 2)->id, 2);
    expect_arg(net_slowlog_get(&l, 2), 1, "a2");
    ck_assert_uint_gt(l.bytes, 0);

    net_slowlog_reset(&l);  /* ids go on */
    ck_assert_uint_eq(net_slowlog_len(&l), 0);
    ck_assert_uint_eq(l.bytes, 0);
    ck_assert_int_eq(push(&l, "b", 1), 0);
    ck_assert_uint_eq(net_slowlog_get(&l, 0)->id, 5);

    net_slowlog_set_max(&l, 0);  /* keeps nothing, ids still used */
    ck_assert_uint_eq(net_slowlog_len(&l), 0);
    ck_assert_uint_eq(l.bytes, 0);
    ck_assert_int_eq(push(&l, "c", 1), 0);
    ck_assert_uint_eq(net_slowlog_len(&l), 0);
    net_slowlog_set_max(&l, 2);
    ck_assert_int_eq(push(&l, "d", 1), 0);
    ck_assert_uint_eq(net_slowlog_get(&l, 0)->id, 7);
    net_slowlog_set_max(&l, NET_SLOWLOG_MAX_LEN + 5);  /* clamped */
    ck_assert_uint_eq(l.max_len, NET_SLOWLOG_MAX_LEN);
    net_slowlog_free(&l);
}
END_TEST

START_TEST(shortened_as_redis_does)
{
    struct net_slowlog l;
    net_slowlog_init(&l, 8);
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    struct proto_arg argv[40];
    char names[40][16];
    for (int i = 0; i < 40; i++) {
        snprintf(names[i], sizeof names[i], "v%d", i);
        argv[i] = A(names[i]);
    }
    argv[1] = A(big);
    /* 40 arguments: 31 kept, then how many more */
    ck_assert_int_eq(net_slowlog_push(&l, argv, 40, 0, NULL, 1, 1, NULL, NULL), 0);
    const struct net_slowlog_entry *e = net_slowlog_get(&l, 0);
    ck_assert_uint_eq(e->argc, NET_SLOWLOG_ARGC);
    expect_arg(e, 0, "v0");
    ck_assert_uint_eq(e->argv[1].len, 128 + strlen("... (171 more bytes)"));
    ck_assert_int_eq(memcmp(e->argv[1].p + 128, "... (171 more bytes)", 20), 0);
    expect_arg(e, 30, "v30");
    expect_arg(e, 31, "... (9 more arguments)");
    ck_assert_str_eq(e->addr, "");
    ck_assert_str_eq(e->name, "");

    /* exactly 32, and 31 plus a note: nothing says "more" */
    ck_assert_int_eq(net_slowlog_push(&l, argv, 32, 0, NULL, 1, 1, "a", "b"), 0);
    expect_arg(net_slowlog_get(&l, 0), 31, "v31");
    ck_assert_int_eq(net_slowlog_push(&l, argv, 31, 0, "(run of 5 TRACKs)", 1, 1, "a", "b"), 0);
    ck_assert_uint_eq(net_slowlog_get(&l, 0)->argc, 32);
    expect_arg(net_slowlog_get(&l, 0), 31, "(run of 5 TRACKs)");
    /* 32 plus a note is 33: the note is among the "more" */
    ck_assert_int_eq(net_slowlog_push(&l, argv, 32, 0, "note", 1, 1, "a", "b"), 0);
    expect_arg(net_slowlog_get(&l, 0), 31, "... (2 more arguments)");

    /* redaction by bit; a long address or name is cut */
    char longname[200];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    struct proto_arg auth[3] = {A("AUTH"), A("user"), A("hunter2")};
    ck_assert_int_eq(net_slowlog_push(&l, auth, 3, ~(uint64_t)1, NULL, 1, 1, "x", longname), 0);
    e = net_slowlog_get(&l, 0);
    expect_arg(e, 0, "AUTH");
    expect_arg(e, 1, "(redacted)");
    expect_arg(e, 2, "(redacted)");
    ck_assert_uint_eq(strlen(e->name), NET_SLOWLOG_STR_MAX);
    net_slowlog_free(&l);
}
END_TEST

static long nallocs, fail_at;
static void *failing_malloc(size_t n)
{
    return ++nallocs == fail_at ? NULL : malloc(n);
}

/* The ids and bytes of every entry, newest first, as one string. */
static void shape(const struct net_slowlog *l, char *out, size_t cap)
{
    size_t o = (size_t)snprintf(out, cap, "n=%u cap=%u bytes=%llu:", net_slowlog_len(l), l->cap,
                                (unsigned long long)l->bytes);
    for (uint32_t i = 0; i < net_slowlog_len(l) && o < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, " %llu",
                              (unsigned long long)net_slowlog_get(l, i)->id);
}

START_TEST(allocation_failures_change_nothing)
{
    struct net_slowlog l;
    net_slowlog_init(&l, 100);
    l.malloc_fn = failing_malloc;
    char before[512], after[512];
    /* every push's allocations in turn: the slot array's growth (at 0 and 8
     * entries) and the entry's block */
    for (int i = 0; i < 12; i++) {
        for (fail_at = 1;; fail_at++) {
            nallocs = 0;
            shape(&l, before, sizeof before);
            uint64_t id = l.next_id;
            int rc = push(&l, "x", 5);
            if (nallocs < fail_at) {
                ck_assert_int_eq(rc, 0);
                break;
            }
            ck_assert_int_eq(rc, -1);
            shape(&l, after, sizeof after);
            ck_assert_str_eq(before, after);
            ck_assert_uint_eq(l.next_id, id + 1);  /* the id is used up, as a drop's would be */
        }
    }
    /* a shrink cannot fail: without memory for a smaller slot array it
     * drops the entries and keeps the array it has */
    uint32_t cap = l.cap;
    uint64_t newest = net_slowlog_get(&l, 0)->id;
    nallocs = 0;
    fail_at = 1;
    net_slowlog_set_max(&l, 3);
    ck_assert_uint_eq(nallocs, 1);
    ck_assert_uint_eq(l.max_len, 3);
    ck_assert_uint_eq(net_slowlog_len(&l), 3);
    ck_assert_uint_eq(l.cap, cap);
    ck_assert_uint_eq(net_slowlog_get(&l, 0)->id, newest);
    for (int i = 0; i < 5; i++)  /* and the log still works past it */
        ck_assert_int_eq(push(&l, "y", 1), 0);
    ck_assert_uint_eq(net_slowlog_len(&l), 3);
    ck_assert_uint_eq(net_slowlog_get(&l, 0)->id, newest + 5);
    fail_at = 0;
    net_slowlog_set_max(&l, 3);
    ck_assert_uint_eq(l.cap, 3);
    ck_assert_uint_eq(net_slowlog_len(&l), 3);
    ck_assert_uint_eq(net_slowlog_get(&l, 0)->id, newest + 5);
    net_slowlog_free(&l);
}
END_TEST

/* Random pushes, bounds and resets against a list of ids. */
START_TEST(matches_a_list)
{
    uint64_t seed = 0x51041065;
    const char *env = getenv("SHORTSTAT_SEED");
    if (env)
        seed = strtoull(env, NULL, 0);
    srand((unsigned)seed);
    struct net_slowlog l;
    net_slowlog_init(&l, 16);
    uint64_t model[64], next = 0;  /* oldest first */
    uint32_t n = 0, max = 16;
    for (int step = 0; step < 20000; step++) {
        int op = rand() % 100;
        if (op < 85) {
            char a[16];
            snprintf(a, sizeof a, "%d", step);
            ck_assert_int_eq(push(&l, a, (uint64_t)step), 0);
            if (max) {
                if (n == max) {
                    memmove(model, model + 1, (n - 1) * sizeof model[0]);
                    n--;
                }
                model[n++] = next;
            }
            next++;
        } else if (op < 97) {
            max = (uint32_t)(rand() % 64);
            net_slowlog_set_max(&l, max);
            if (n > max) {
                memmove(model, model + (n - max), max * sizeof model[0]);
                n = max;
            }
        } else {
            net_slowlog_reset(&l);
            n = 0;
        }
        if (net_slowlog_len(&l) != n)
            ck_abort_msg("seed %llu step %d: len %u, want %u (replay: SHORTSTAT_SEED=%llu)",
                         (unsigned long long)seed, step, net_slowlog_len(&l), n,
                         (unsigned long long)seed);
        uint64_t bytes = 0;
        for (uint32_t i = 0; i < n; i++) {
            const struct net_slowlog_entry *e = net_slowlog_get(&l, i);
            if (e->id != model[n - 1 - i])
                ck_abort_msg("seed %llu step %d: entry %u is id %llu, want %llu "
                             "(replay: SHORTSTAT_SEED=%llu)",
                             (unsigned long long)seed, step, i, (unsigned long long)e->id,
                             (unsigned long long)model[n - 1 - i], (unsigned long long)seed);
            bytes += e->bytes;
        }
        ck_assert_uint_eq(l.bytes, bytes);
        ck_assert_uint_le(l.cap, l.max_len);
        ck_assert_uint_le(net_slowlog_len(&l), l.cap);
    }
    net_slowlog_free(&l);
}
END_TEST

extern Suite *slowlog_suite(void);
Suite *slowlog_suite(void)
{
    Suite *s = suite_create("slowlog");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, newest_first_with_ids);
    tcase_add_test(tc, shortened_as_redis_does);
    tcase_add_test(tc, allocation_failures_change_nothing);
    tcase_add_test(tc, matches_a_list);
    suite_add_tcase(s, tc);
    return s;
}
