/* SPDX-License-Identifier: MIT */
/*
 * hist.c -- a log-linear latency histogram in the manner of HdrHistogram.
 *
 * Values below 2^SUBBITS (64) have a bucket each. Above, a value v with top
 * bit e falls in group g = e - SUBBITS + 1 and is stored by its SUBBITS
 * leading bits, so every power of two holds 32 buckets and a bucket is at
 * most 1/32 of its values wide: 3% precision from nanoseconds to centuries
 * in 1920 counters (15 KiB), with an add that is a clz, a shift and an
 * increment. Indices are contiguous: group g covers [32(g+1), 32(g+2)).
 * Quantiles report a bucket's high end (never flattering), clamped to the
 * exact maximum.
 */
#include "bench/bench.h"

#include <string.h>

_Static_assert(BENCH_HIST_BUCKETS == 1920, "bucket count matches the layout comment");

#define HALF (1u << (BENCH_HIST_SUBBITS - 1u))

void bench_hist_reset(struct bench_hist *h)
{
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

unsigned bench_hist_index(uint64_t v)
{
    if (v < (1u << BENCH_HIST_SUBBITS))
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    unsigned g = e - BENCH_HIST_SUBBITS + 1u;
    return g * HALF + (unsigned)(v >> g);
}

uint64_t bench_hist_bucket_high(unsigned idx)
{
    if (idx < (1u << BENCH_HIST_SUBBITS))
        return idx;
    unsigned g = idx / HALF - 1u;
    uint64_t m = idx - g * HALF;           /* leading bits, HALF..2*HALF-1 */
    if (g >= 58u && m == 2u * HALF - 1u)
        return UINT64_MAX;
    return ((m + 1u) << g) - 1u;
}

void bench_hist_add(struct bench_hist *h, uint64_t v, uint64_t n)
{
    if (n == 0)
        return;
    h->b[bench_hist_index(v)] += n;
    h->count += n;
    h->sum += (double)v * (double)n;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

void bench_hist_add_paced(struct bench_hist *h, double now, double t0, double rate,
                          uint64_t from, uint64_t upto)
{
    for (uint64_t j = from; j < upto; j++) {
        double lat = now - (t0 + (double)j / rate);
        bench_hist_add(h, lat > 0 ? (uint64_t)(lat * 1e9) : 0, 1);
    }
}

void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src)
{
    if (src->count == 0)
        return;
    for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++)
        dst->b[i] += src->b[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t bench_hist_quantile(const struct bench_hist *h, double q)
{
    if (h->count == 0)
        return 0;
    if (q <= 0.0)
        return h->min;
    if (q >= 1.0)
        return h->max;
    /* the smallest value with at least ceil(q * count) values at or below it */
    double want = q * (double)h->count;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t hi = bench_hist_bucket_high(i);
            return hi < h->max ? hi : h->max;
        }
    }
    return h->max;
}

double bench_hist_mean(const struct bench_hist *h)
{
    return h->count ? h->sum / (double)h->count : 0.0;
}

double bench_median(double *v, size_t n)
{
    if (n == 0)
        return 0.0;
    for (size_t i = 1; i < n; i++)  /* a handful of values: insertion sort */
        for (size_t j = i; j > 0 && v[j] < v[j - 1]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}
