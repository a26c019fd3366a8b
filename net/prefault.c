/* SPDX-License-Identifier: MIT */
/*
 * prefault.c -- faults the engine's fresh memory in on a background thread.
 *
 * The engine hands over (eng_config.populate) each range of fresh memory it
 * has mapped and will touch soon: the pool's next chunk, the new part of a
 * grown array. On this kind of VM the first touch of a 2 MiB huge page
 * costs milliseconds (`shortstat-bench machine` measures it), and on the
 * event loop that is a stall every client waits through. Here one thread
 * takes the ranges from a small queue and faults them in with
 * madvise(MADV_POPULATE_WRITE), one huge page at a time. That maps pages
 * without writing to them, so it cannot race with the engine's own writes;
 * a range the engine has unmapped or moved meanwhile fails (ENOMEM) and is
 * dropped. (Were its addresses mapped again by something else, populating
 * them would only fault those pages in too.)
 *
 * The thread runs SCHED_IDLE: it only gets time the loop leaves idle, and
 * the loop preempts it on wake-up. Under full load it falls behind and the
 * engine faults pages in itself, as it would without it; a request that
 * finds the queue full is dropped for the same reason.
 *
 * A step holds the process's mmap lock for reading, and the loop's own
 * mmap/mremap/munmap and a snapshot's fork() wait for it. An idle-priority
 * thread preempted mid-step by other busy processes held them for seconds
 * (3.4 s with four busy loops on two CPUs). Running every step at normal
 * priority bounded that (60-140 ms) but cost the loop ~5 % of its rate
 * flat out, the steps now competing with it for its CPU. So a rescuer
 * thread, at normal priority and asleep unless the thread is busy, raises
 * a step to SCHED_OTHER only when the loop waits on it: the step has run
 * RESCUE_MS and the loop thread is blocked in the kernel (state D: the mmap
 * lock), or the loop waits in net_prefault_pause. A step starved by the
 * loop itself, busy, is left alone. The thread drops back to SCHED_IDLE
 * when the step ends. Under the four busy loops the longest mmap wait was
 * then 61-172 ms. Leaving SCHED_IDLE needs root or CAP_SYS_NICE: without it
 * there is no rescuer, and the server says so at start.
 *
 * Invariants: the queue is a ring of Q_LEN ranges under `mu`; head/n count
 * it; `busy` is set while the thread works on a range it took, `stepping`
 * while one madvise of it runs (without the lock). It works a huge page at
 * a time, round robin over the queued ranges. Pausing waits for a step in
 * flight, so once net_prefault_pause returns the thread touches nothing. Only the
 * loop thread enqueues. A fork()ed child has no thread and must not call
 * net_prefault_request (the server's snapshot child never allocates
 * through the engine).
 */
#include "net/prefault.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  /* Linux 5.14; older kernels answer EINVAL */
#endif

#define Q_LEN 64u
/* One huge page per madvise: the kernel holds the process's mmap lock for
 * reading that long, so the loop's own mmap/mremap/munmap wait at most one
 * step for an idle-priority thread. */
#define STEP ((size_t)2 << 20)
/* A step this old is starved: a huge page's faults take a few ms here. */
#define RESCUE_MS 20

struct range {
    char *p;
    size_t len;
};

struct net_prefault {
    pthread_t th, rescuer;
    pthread_mutex_t mu;
    pthread_cond_t work, idle, step;  /* step: wakes the rescuer when one starts */
    struct range q[Q_LEN];
    uint32_t head, n;
    size_t page;
    bool busy, stepping, stop, paused;
    bool ready, boost;   /* the thread has started; a starved step can be raised */
    bool raised;         /* the step running was raised to SCHED_OTHER */
    bool pausing;        /* net_prefault_pause waits for the step running */
    bool watching;       /* the rescuer is awake for the steps (else it sleeps) */
    pid_t loop_tid;      /* the thread that started this one: the loop */
    uint64_t step_start; /* CLOCK_MONOTONIC ns, of the step running */
    uint64_t bytes, dropped, rescues;
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Idle or normal priority for this thread; false when the kernel refuses. */
static bool set_idle(bool idle)
{
    struct sched_param sp = {0};
    return pthread_setschedparam(pthread_self(), idle ? SCHED_IDLE : SCHED_OTHER, &sp) == 0;
}

static void *run(void *arg)
{
    struct net_prefault *p = arg;
    /* best effort; a starved step can be raised only if leaving SCHED_IDLE
     * is allowed */
    bool boost = set_idle(true) && set_idle(false) && set_idle(true);
    struct range cur = {NULL, 0};
    pthread_mutex_lock(&p->mu);
    p->boost = boost;
    p->ready = true;
    pthread_cond_broadcast(&p->idle);  /* net_prefault_start waits for this */
    for (;;) {
        /* Paused, it takes nothing from the queue (a range it holds waits too). */
        while (!p->stop && (p->paused || (cur.len == 0 && p->n == 0))) {
            if (cur.len == 0 && p->n == 0) {
                p->busy = false;
                pthread_cond_broadcast(&p->idle);
            }
            pthread_cond_wait(&p->work, &p->mu);
        }
        if (p->stop)
            break;
        if (cur.len != 0 && p->n > 0 && p->n < Q_LEN) {
            /* Round robin, one huge page each: a 64 MB grown array queued
             * first must not hold up the 2 MiB spare chunk the engine will
             * want next. */
            p->q[(p->head + p->n) % Q_LEN] = cur;
            p->n++;
            cur.len = 0;
        }
        if (cur.len == 0) {
            cur = p->q[p->head];
            p->head = (p->head + 1) % Q_LEN;
            p->n--;
        }
        if (!p->watching)
            pthread_cond_signal(&p->step);  /* the rescuer watches while steps run */
        p->busy = p->stepping = true;
        p->step_start = mono_ns();
        pthread_mutex_unlock(&p->mu);
        size_t k = cur.len < STEP ? cur.len : STEP;
        int err = madvise(cur.p, k, MADV_POPULATE_WRITE) ? errno : 0;
        pthread_mutex_lock(&p->mu);
        p->stepping = false;
        if (p->raised) {
            /* Back to idle without the lock: a SCHED_IDLE thread preempted
             * while holding it would stall whoever waits for it. No step
             * runs meanwhile, so the rescuer raises nothing. */
            p->raised = false;
            pthread_mutex_unlock(&p->mu);
            set_idle(true);
            pthread_mutex_lock(&p->mu);
        }
        if (p->paused)
            pthread_cond_broadcast(&p->idle);  /* net_prefault_pause waits for this */
        if (err) {
            p->dropped++;  /* gone (ENOMEM) or not ours to populate: leave the rest too */
            cur.len = 0;
        } else {
            p->bytes += k;
            cur.p += k;
            cur.len -= k;
        }
    }
    p->busy = false;
    pthread_cond_broadcast(&p->idle);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

char net_prefault_thread_state(pid_t tid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/self/task/%ld/stat", (long)tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return '?';
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return '?';
    buf[n] = 0;
    const char *paren = strrchr(buf, ')');  /* the name may hold spaces and ')' */
    return paren && paren[1] == ' ' && paren[2] ? paren[2] : '?';
}

bool net_prefault_should_rescue(uint64_t age_ms, uint64_t rescue_ms, bool pausing,
                                char loop_state)
{
    return pausing || (age_ms >= rescue_ms && loop_state == 'D');
}

/* The rescuer: asleep while the thread is idle; while it is busy, awake
 * every RESCUE_MS (and at once when the loop pauses the thread) to look at
 * the step running. Waking per step instead, and looking every 5 ms at a
 * step the busy loop starved, cost the loop 5-10 % of its rate flat out.
 * It raises the step under the lock, so the step cannot have ended. */
static void *rescue(void *arg)
{
    struct net_prefault *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        if (!p->busy || (p->paused && !p->stepping)) {  /* no step to come soon */
            p->watching = false;
            pthread_cond_wait(&p->step, &p->mu);
            p->watching = true;
            continue;
        }
        uint64_t now = mono_ns(), start = p->step_start, age = (now - start) / 1000000u;
        char loop = 'S';
        if (p->stepping && !p->pausing && age >= (uint64_t)RESCUE_MS) {
            pid_t tid = p->loop_tid;  /* /proc is read without the lock */
            pthread_mutex_unlock(&p->mu);
            loop = net_prefault_thread_state(tid);
            pthread_mutex_lock(&p->mu);
        }
        if (p->stepping && p->step_start == start && !p->raised &&
            net_prefault_should_rescue(age, (uint64_t)RESCUE_MS, p->pausing, loop)) {
            struct sched_param sp = {0};
            if (pthread_setschedparam(p->th, SCHED_OTHER, &sp) == 0) {
                p->raised = true;
                p->rescues++;
            }
        }
        uint64_t due = now + (uint64_t)RESCUE_MS * 1000000u;
        struct timespec ts = {(time_t)(due / 1000000000u), (long)(due % 1000000000u)};
        pthread_cond_timedwait(&p->step, &p->mu, &ts);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void destroy(struct net_prefault *p)
{
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->idle);
    pthread_cond_destroy(&p->step);
    free(p);
}

/* A flag the thread waits on (stop, paused), set under the lock. */
static void set_and_wake(struct net_prefault *p, bool *flag, bool v)
{
    pthread_mutex_lock(&p->mu);
    *flag = v;
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
}

/* Kernels before 5.14 answer EINVAL: then there is no thread at all. */
static bool supported(void)
{
    long pg = sysconf(_SC_PAGESIZE);
    void *a = mmap(NULL, (size_t)pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED)
        return false;
    bool ok = madvise(a, (size_t)pg, MADV_POPULATE_WRITE) == 0;
    munmap(a, (size_t)pg);
    return ok;
}

struct net_prefault *net_prefault_start(void)
{
    if (!supported()) {
        errno = ENOTSUP;
        return NULL;
    }
    struct net_prefault *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->page = (size_t)sysconf(_SC_PAGESIZE);
    p->loop_tid = gettid();
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->idle, NULL);
    pthread_condattr_t ca;  /* the rescuer's deadlines are CLOCK_MONOTONIC */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->step, &ca);
    pthread_condattr_destroy(&ca);
    int rc = pthread_create(&p->th, NULL, run, p);
    if (rc) {
        destroy(p);
        errno = rc;
        return NULL;
    }
    pthread_mutex_lock(&p->mu);
    while (!p->ready)
        pthread_cond_wait(&p->idle, &p->mu);
    pthread_mutex_unlock(&p->mu);
    if (p->boost && pthread_create(&p->rescuer, NULL, rescue, p) != 0)
        p->boost = false;  /* no rescuer: steps stay idle, as without the privilege */
    return p;
}

void net_prefault_stop(struct net_prefault *p)
{
    if (!p)
        return;
    set_and_wake(p, &p->stop, true);
    pthread_join(p->th, NULL);
    if (p->boost) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_signal(&p->step);
        pthread_mutex_unlock(&p->mu);
        pthread_join(p->rescuer, NULL);
    }
    destroy(p);
}

void net_prefault_request(struct net_prefault *p, void *addr, size_t len)
{
    if (!p || !addr)
        return;
    /* madvise wants a page-aligned start; a partial first page is left to
     * the engine (the rest of the range's last page is the mapping's). */
    uintptr_t a = (uintptr_t)addr, start = (a + p->page - 1) & ~(uintptr_t)(p->page - 1);
    if (len <= start - a)
        return;
    len -= start - a;
    addr = (void *)start;
    pthread_mutex_lock(&p->mu);
    if (p->stop || p->n == Q_LEN) {
        p->dropped++;
    } else {
        p->q[(p->head + p->n) % Q_LEN] = (struct range){addr, len};
        p->n++;
        pthread_cond_signal(&p->work);
    }
    pthread_mutex_unlock(&p->mu);
}

void net_prefault_pause(struct net_prefault *p, bool paused)
{
    if (!p)
        return;
    set_and_wake(p, &p->paused, paused);
    if (!paused)
        return;
    pthread_mutex_lock(&p->mu);
    if (p->stepping) {
        p->pausing = true;  /* the loop now waits on the step: the rescuer raises it */
        pthread_cond_signal(&p->step);
        while (p->stepping)
            pthread_cond_wait(&p->idle, &p->mu);
        p->pausing = false;
    }
    pthread_mutex_unlock(&p->mu);
}

bool net_prefault_boosted(struct net_prefault *p)
{
    return p && p->boost;  /* written before net_prefault_start returned */
}

uint64_t net_prefault_rescues(struct net_prefault *p)
{
    if (!p)
        return 0;
    pthread_mutex_lock(&p->mu);
    uint64_t n = p->rescues;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void net_prefault_stats(struct net_prefault *p, uint64_t *bytes, uint64_t *dropped)
{
    *bytes = *dropped = 0;
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    *bytes = p->bytes;
    *dropped = p->dropped;
    pthread_mutex_unlock(&p->mu);
}

void net_prefault_drain(struct net_prefault *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    while (p->busy || p->n)
        pthread_cond_wait(&p->idle, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
