/* SPDX-License-Identifier: MIT */
/*
 * score.h -- a short's performance score in [0, 100] (internal).
 * The formula and the reason for every constant: docs/metrics.md.
 */
#ifndef SHORTSTAT_ENG_SCORE_H
#define SHORTSTAT_ENG_SCORE_H

#include <stdint.h>

struct score_in {
    uint64_t impressions, views;
    uint64_t watch_sum, watch_n;  /* over views that carried watch_ms */
    uint64_t saves;               /* distinct savers */
    uint64_t shares, skips, contacts, whatsapps, book_viewings;
    uint32_t boost;               /* 0..100 */
};

/* Pure and deterministic; monotone: more saves, shares, contacts,
 * whatsapps, book_viewings or boost never lower it, more skips never
 * raise it. */
double score_compute(const struct score_in *in);

#endif
