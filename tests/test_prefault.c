/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of net/prefault.c: a requested range ends up resident without
 * its contents changing, an unaligned start is rounded up to a page, a
 * range that is gone is counted as dropped, a NULL handle ignores requests,
 * pausing holds requests back and waits for the step in flight, a large
 * range does not hold up a small one queued after it, stop joins with
 * requests still queued, and steps run at normal priority exactly when the
 * process may leave SCHED_IDLE.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <sys/wait.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "net/prefault.h"

static struct net_prefault *start_or_skip(void)
{
    struct net_prefault *p = net_prefault_start();
    if (!p)
        ck_assert_int_eq(errno, ENOTSUP);  /* a kernel before 5.14: nothing else to test */
    return p;
}

static size_t resident_pages(const char *p, size_t len)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), n = (len + pg - 1) / pg, r = 0;
    unsigned char *vec = calloc(n, 1);
    ck_assert_ptr_nonnull(vec);
    ck_assert_int_eq(mincore((void *)p, len, vec), 0);
    for (size_t i = 0; i < n; i++)
        r += vec[i] & 1;
    free(vec);
    return r;
}

/* len bytes of fresh anonymous memory, in 4 KiB pages when small_pages
 * (so residency is counted per page, not per huge page). */
static char *map_fresh(size_t len, bool small_pages)
{
    char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(m, MAP_FAILED);
    if (small_pages)
        (void)madvise(m, len, MADV_NOHUGEPAGE);
    return m;
}

START_TEST(test_prefault_faults_in_without_writing)
{
    struct net_prefault *p = start_or_skip();
    if (!p)
        return;
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), len = (size_t)8 << 20;
    char *m = map_fresh(len, true);
    memset(m + 5 * pg, 0xab, pg);              /* already written: must stay as it is */
    net_prefault_request(p, m + 100, len - 100);  /* unaligned: rounds up to page 1 */
    net_prefault_drain(p);
    uint64_t bytes, dropped;
    net_prefault_stats(p, &bytes, &dropped);
    ck_assert_uint_eq(bytes, len - pg);
    ck_assert_uint_eq(dropped, 0);
    ck_assert_uint_eq(resident_pages(m + pg, len - pg), (len - pg) / pg);
    for (size_t i = 0; i < pg; i++)
        ck_assert_int_eq((unsigned char)m[5 * pg + i], 0xab);
    ck_assert_int_eq(m[pg], 0);
    /* a range within the first partial page is nothing to do */
    net_prefault_request(p, m + 1, pg - 1);
    net_prefault_drain(p);
    net_prefault_stats(p, &bytes, &dropped);
    ck_assert_uint_eq(bytes, len - pg);
    /* a range that is gone: dropped, counted, nothing else */
    munmap(m, len);
    net_prefault_request(p, m, len);
    net_prefault_drain(p);
    net_prefault_stats(p, &bytes, &dropped);
    ck_assert_uint_eq(bytes, len - pg);
    ck_assert_uint_eq(dropped, 1);
    net_prefault_stop(p);
}
END_TEST

START_TEST(test_prefault_null_and_stop_with_queue)
{
    uint64_t bytes = 1, dropped = 1;
    net_prefault_request(NULL, &bytes, sizeof bytes);  /* --prefault no: a no-op */
    net_prefault_stats(NULL, &bytes, &dropped);
    ck_assert_uint_eq(bytes, 0);
    ck_assert_uint_eq(dropped, 0);
    net_prefault_drain(NULL);
    net_prefault_stop(NULL);
    struct net_prefault *p = start_or_skip();
    if (!p)
        return;
    size_t len = (size_t)64 << 20;
    char *m = map_fresh(len, false);
    /* more requests than the queue holds never block the caller (how many
     * are dropped depends on the running thread: counted paused, below) */
    for (int i = 0; i < 200; i++)
        net_prefault_request(p, m + (size_t)(i % 32) * (2 << 20), (size_t)2 << 20);
    net_prefault_stop(p);  /* joins with work still queued */
    munmap(m, len);
}
END_TEST

/* Paused (as for a snapshot's lifetime), requests wait in the queue and
 * nothing is faulted in; resumed, they are. */
START_TEST(test_prefault_pause)
{
    struct net_prefault *p = start_or_skip();
    if (!p)
        return;
    size_t len = (size_t)4 << 20;
    char *m = map_fresh(len, true);
    net_prefault_pause(p, true);
    net_prefault_request(p, m, len);
    usleep(100 * 1000);
    uint64_t bytes, dropped;
    net_prefault_stats(p, &bytes, &dropped);
    ck_assert_uint_eq(bytes, 0);
    ck_assert_uint_eq(resident_pages(m, len), 0);
    net_prefault_pause(p, false);
    net_prefault_drain(p);
    net_prefault_stats(p, &bytes, &dropped);
    ck_assert_uint_eq(bytes, len);
    ck_assert_uint_eq(resident_pages(m, len), len / (size_t)sysconf(_SC_PAGESIZE));
    /* a full queue (64 ranges) drops what does not fit, and counts it;
     * paused, the thread takes nothing from it */
    net_prefault_pause(p, true);
    uint64_t before;
    net_prefault_stats(p, &bytes, &before);
    for (int i = 0; i < 100; i++)
        net_prefault_request(p, m, (size_t)sysconf(_SC_PAGESIZE));
    net_prefault_stats(p, &bytes, &dropped);
    ck_assert_uint_eq(dropped - before, 100 - 64);
    net_prefault_stop(p);  /* joins a paused thread with its queue full */
    munmap(m, len);
}
END_TEST

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Polls until at least want pages of [p, p + len) are resident. The thread
 * runs at idle priority, so on a loaded machine it waits for every other
 * runnable thread: the bound is generous (the case's timeout is larger). */
static void wait_resident(const char *p, size_t len, size_t want)
{
    double t0 = now_s();
    while (resident_pages(p, len) < want) {
        ck_assert_msg(now_s() - t0 < 60.0, "prefault: range not faulted in within 60 s");
        usleep(100);
    }
}

/* A pause that lands while a huge page is being faulted in returns only
 * when that step is done: from then on nothing more becomes resident. */
START_TEST(test_prefault_pause_waits_for_step)
{
    struct net_prefault *p = start_or_skip();
    if (!p)
        return;
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), len = (size_t)256 << 20;
    char *m = map_fresh(len, true);
    net_prefault_request(p, m, len);
    wait_resident(m, len, 1);  /* the first step has begun */
    net_prefault_pause(p, true);
    size_t r = resident_pages(m, len);
    uint64_t bytes, dropped;
    net_prefault_stats(p, &bytes, &dropped);
    ck_assert_uint_eq(bytes, r * pg);  /* every step begun has ended */
    ck_assert_uint_lt(r, len / pg);
    usleep(50 * 1000);
    ck_assert_uint_eq(resident_pages(m, len), r);
    net_prefault_pause(p, false);
    net_prefault_drain(p);
    ck_assert_uint_eq(resident_pages(m, len), len / pg);
    net_prefault_stop(p);
    munmap(m, len);
}
END_TEST

/* Ranges are worked a huge page each in turn: a 2 MiB range queued after
 * a 256 MiB one is resident long before the large one is. */
/* The rescuer's rule: a step is raised only when the loop waits on it. */
START_TEST(test_prefault_rescue_rule)
{
    ck_assert(net_prefault_should_rescue(0, 20, true, 'R'));    /* pausing: at once */
    ck_assert(net_prefault_should_rescue(20, 20, false, 'D'));  /* blocked on the lock */
    ck_assert(!net_prefault_should_rescue(19, 20, false, 'D')); /* not yet starved */
    ck_assert(!net_prefault_should_rescue(500, 20, false, 'R')); /* the loop is busy */
    ck_assert(!net_prefault_should_rescue(500, 20, false, 'S')); /* or asleep */
    ck_assert(!net_prefault_should_rescue(500, 20, false, '?'));
    ck_assert_int_eq(net_prefault_thread_state(gettid()), 'R');  /* reading its own */
    ck_assert_int_eq(net_prefault_thread_state(-1), '?');
}
END_TEST

/* What the kernel lets this process do: leave SCHED_IDLE (a thread of its own). */
static void *probe_leave_idle(void *arg)
{
    struct sched_param sp = {0};
    *(bool *)arg = pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp) == 0 &&
                   pthread_setschedparam(pthread_self(), SCHED_OTHER, &sp) == 0;
    return NULL;
}

START_TEST(test_prefault_boost_when_allowed)
{
    struct net_prefault *p = start_or_skip();
    if (!p)
        return;
    bool may = false;
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, probe_leave_idle, &may), 0);
    pthread_join(th, NULL);
    ck_assert_int_eq(net_prefault_boosted(p), may);
    ck_assert_uint_eq(net_prefault_rescues(p), 0);  /* nothing waited on it yet */
    size_t len = (size_t)4 << 20;  /* boosted or not, steps still fault memory in */
    char *m = map_fresh(len, true);
    net_prefault_request(p, m, len);
    net_prefault_drain(p);
    ck_assert_uint_eq(resident_pages(m, len), len / (size_t)sysconf(_SC_PAGESIZE));
    munmap(m, len);
    net_prefault_stop(p);
    ck_assert(!net_prefault_boosted(NULL));
    if (geteuid() != 0)
        return;
    /* an unprivileged user may not leave SCHED_IDLE: steps stay idle */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0)
            _exit(3);
        struct net_prefault *q = net_prefault_start();
        _exit(!q ? 4 : net_prefault_boosted(q) ? 1 : 0);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "unprivileged child: status %d", st);
}
END_TEST

START_TEST(test_prefault_round_robin)
{
    struct net_prefault *p = start_or_skip();
    if (!p)
        return;
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), big = (size_t)256 << 20, small = (size_t)2 << 20;
    char *b = map_fresh(big, true), *s = map_fresh(small, true);
    net_prefault_pause(p, true);  /* both queued before the thread takes either */
    net_prefault_request(p, b, big);
    net_prefault_request(p, s, small);
    net_prefault_pause(p, false);
    wait_resident(s, small, small / pg);
    /* one step of the large range, then the small one: a few steps more
     * at most (the thread goes on while this one looks) */
    size_t r = resident_pages(b, big);
    ck_assert_msg(r < big / pg / 2, "large range %zu of %zu pages resident before the small one",
                  r, big / pg);
    net_prefault_drain(p);
    ck_assert_uint_eq(resident_pages(b, big), big / pg);
    net_prefault_stop(p);
    munmap(b, big);
    munmap(s, small);
}
END_TEST

extern Suite *prefault_suite(void);
Suite *prefault_suite(void)
{
    Suite *s = suite_create("prefault");
    TCase *tc = tcase_create("prefault");
    tcase_set_timeout(tc, 180);  /* an idle-priority thread on a loaded machine: see wait_resident */
    tcase_add_test(tc, test_prefault_faults_in_without_writing);
    tcase_add_test(tc, test_prefault_null_and_stop_with_queue);
    tcase_add_test(tc, test_prefault_pause);
    tcase_add_test(tc, test_prefault_pause_waits_for_step);
    tcase_add_test(tc, test_prefault_round_robin);
    tcase_add_test(tc, test_prefault_boost_when_allowed);
    tcase_add_test(tc, test_prefault_rescue_rule);
    suite_add_tcase(s, tc);
    return s;
}
