/* SPDX-License-Identifier: MIT */
/*
 * machine.c -- what this machine's memory system allows, measured the same
 * way every time, so the engine's figures can be read against a ceiling.
 *
 * An interaction of the standard workload touches about six cache lines at
 * random places of a state far larger than the caches (the short's index
 * slot and hot line, its viewer-set slot, the session's index slot, the
 * session, its ring block; more for signed-in users). No engine can record
 * interactions faster than the memory system delivers those lines, nor
 * grow its state faster than the kernel hands out fresh pages. So:
 *   - fault cost: first touch of fresh anonymous memory, 4 KiB pages and
 *     MADV_HUGEPAGE pages, per 4 KiB;
 *   - fork(): the pause of forking a process holding `mb` MiB (what a
 *     snapshot's fork costs the server), both page sizes;
 *   - dependent miss: a pointer chase over a random cycle through `mb` MiB
 *     (one line per hop), the latency of one miss with nothing overlapping;
 *   - independent misses: K chases through the same cycle interleaved, so
 *     the core overlaps up to K misses: lines per second at the best K.
 * Everything is timed on CLOCK_MONOTONIC; the buffers are freed before
 * returning. The figures are this process's, on whatever core it runs.
 */
#include "bench/bench.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LINE 64u
#define PAGE 4096u

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *map(size_t n, bool huge)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    if (huge)
        madvise(p, n, MADV_HUGEPAGE);
    return p;
}

/* Touch one byte per page; seconds per 4 KiB page. */
static double touch(volatile uint8_t *p, size_t n)
{
    double t0 = now_s();
    for (size_t o = 0; o < n; o += PAGE)
        p[o] = 1;
    return (now_s() - t0) / (double)(n / PAGE);
}

/* Median of three fork() pauses, in seconds (the child exits at once). */
static int fork_pause(double *out)
{
    double t[3];
    for (int i = 0; i < 3; i++) {
        double t0 = now_s();
        pid_t pid = fork();
        if (pid < 0)
            return -1;
        if (pid == 0)
            _exit(0);
        t[i] = now_s() - t0;
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    double a = t[0] < t[1] ? t[0] : t[1], b = t[0] < t[1] ? t[1] : t[0];
    *out = t[2] < a ? a : t[2] > b ? b : t[2];
    return 0;
}

/* Lines per second with k chases interleaved over the cycle in `next`,
 * which visits the lines in the order `order` lists them. The chases start
 * nlines / k apart along the cycle, so with at most that many hops each no
 * chase walks lines another has just brought into the cache. */
static double chase(const uint32_t *next, const uint32_t *order, uint32_t nlines, unsigned k,
                    uint64_t hops)
{
    uint32_t pos[64];
    for (unsigned j = 0; j < k; j++)
        pos[j] = order[(uint64_t)nlines * j / k];
    double t0 = now_s();
    for (uint64_t h = 0; h < hops; h++)
        for (unsigned j = 0; j < k; j++)
            pos[j] = next[(size_t)pos[j] * (LINE / sizeof(uint32_t))];
    double dt = now_s() - t0;
    uint32_t sink = 0;
    for (unsigned j = 0; j < k; j++)
        sink ^= pos[j];
    __asm__ volatile("" ::"r"(sink));
    return (double)hops * k / dt;
}

int bench_machine(size_t mb, uint64_t seed, struct bench_machine_res *r, char *msg, size_t msglen)
{
    memset(r, 0, sizeof *r);
    r->mb = mb;
    size_t n = mb << 20;
    if (mb < 16 || (n / LINE) > UINT32_MAX) {
        snprintf(msg, msglen, "machine: size must be 16 MiB .. 256 GiB");
        return BENCH_EINVAL;
    }
    int rc = BENCH_OK;
    uint8_t *small = map(n, false), *huge = map(n, true);
    if (!small || !huge) {
        snprintf(msg, msglen, "machine: mmap of %zu MiB: %s", mb, strerror(errno));
        rc = BENCH_ENOMEM;
        goto out;
    }
    /* Each fork holds only the buffer it is about (the other is mapped but
     * untouched, which a fork copies nothing of). */
    r->fault_4k_us = touch(small, n) * 1e6;
    int frc = fork_pause(&r->fork_4k_ms);
    munmap(small, n);
    small = NULL;
    if (frc == 0) {
        r->fault_thp_us = touch(huge, n) * 1e6;
        frc = fork_pause(&r->fork_thp_ms);
    }
    if (frc) {
        snprintf(msg, msglen, "machine: fork: %s", strerror(errno));
        rc = BENCH_EIO;
        goto out;
    }
    r->fork_4k_ms *= 1e3;
    r->fork_thp_ms *= 1e3;

    /* One cycle through every line of the 4 KiB-page buffer in a random
     * order, each line holding the index of the next: the engine's tables
     * live in ordinary pages, so misses pay TLB walks too. */
    munmap(huge, n);
    huge = NULL;
    small = map(n, false);
    uint32_t nlines = (uint32_t)(n / LINE);
    uint32_t *perm = malloc((size_t)nlines * sizeof *perm);
    if (!small || !perm) {
        free(perm);
        snprintf(msg, msglen, "machine: out of memory");
        rc = BENCH_ENOMEM;
        goto out;
    }
    struct bench_rng rng;
    bench_rng_seed(&rng, seed);
    for (uint32_t i = 0; i < nlines; i++)
        perm[i] = i;
    for (uint32_t i = nlines - 1; i > 0; i--) {
        uint32_t j = (uint32_t)bench_rng_below(&rng, (uint64_t)i + 1);
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    uint32_t *next = (uint32_t *)(void *)small;
    for (uint32_t i = 0; i < nlines; i++)
        next[(size_t)perm[i] * (LINE / sizeof(uint32_t))] = perm[(i + 1) % nlines];

    /* hops per chase: at most nlines / k, the spacing of their starts */
    uint64_t hops = nlines / 2 < 2000000 ? nlines / 2 : 2000000;
    r->miss_ns = 1e9 / chase(next, perm, nlines, 1, hops);
    static const unsigned ks[] = {4, 8, 16, 32};
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        double rate = chase(next, perm, nlines, ks[i], hops / ks[i] * 2);
        if (rate > r->lines_per_s) {
            r->lines_per_s = rate;
            r->best_k = ks[i];
        }
    }
    free(perm);
out:
    if (small)
        munmap(small, n);
    if (huge)
        munmap(huge, n);
    return rc;
}
