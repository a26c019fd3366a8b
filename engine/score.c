/* SPDX-License-Identifier: MIT */
/*
 * score.c -- the performance score (docs/metrics.md has the formula and
 * why each constant is what it is).
 *
 * Each signal is a rate shrunk toward a prior -- (x + a * prior) / (n + a),
 * a Bayesian mean with `a` pseudo-observations -- so a short with three
 * exposures cannot outrank one with ten thousand on luck. Rates are mapped
 * to [0, 1] by monotone functions (a cap or 1 - exp), blended with fixed
 * weights, the skip term subtracted, the result clamped to [0, 1], and boost
 * mixed in last. Every step is monotone in each input and IEEE rounding is
 * monotone, so the guarantees in score.h hold exactly, not just on paper.
 */
#include "engine/score.h"

#include <math.h>

/* priors (typical feed values) and their strengths (pseudo-counts) */
#define VTR_PRIOR    0.35
#define VTR_STRENGTH 20.0
#define WATCH_PRIOR_MS 6000.0
#define WATCH_STRENGTH 10.0
#define WATCH_SCALE_MS 15000.0   /* 1 - exp(-avg / scale) */
#define RATE_STRENGTH 50.0       /* save, share and lead rates */
#define SAVE_PRIOR   0.03
#define SAVE_FULL    0.25        /* a 25% save rate earns the whole term */
#define SHARE_PRIOR  0.01
#define SHARE_FULL   0.10
#define LEAD_PRIOR   0.01
#define LEAD_FULL    0.10
#define SKIP_PRIOR   0.25
#define SKIP_STRENGTH 20.0
#define SKIP_FULL    0.75

/* weights of the quality blend; the positive ones sum to 1 */
#define W_VTR   0.20
#define W_WATCH 0.25
#define W_SAVE  0.20
#define W_SHARE 0.15
#define W_LEAD  0.20
#define W_SKIP  0.30
#define W_BOOST 0.10   /* share of the final score operators control */

static double capped(double rate, double full)
{
    double v = rate / full;
    return v < 1.0 ? v : 1.0;
}

double score_compute(const struct score_in *in)
{
    double imp = (double)in->impressions;
    double views = (double)in->views;
    double exposures = imp + views;

    double seen = imp > views ? imp : views;
    double vtr = (views + VTR_STRENGTH * VTR_PRIOR) / (seen + VTR_STRENGTH);

    double avg_ms = ((double)in->watch_sum + WATCH_STRENGTH * WATCH_PRIOR_MS) /
                    ((double)in->watch_n + WATCH_STRENGTH);
    double watch = 1.0 - exp(-avg_ms / WATCH_SCALE_MS);

    double denom = exposures + RATE_STRENGTH;
    double save = capped(((double)in->saves + RATE_STRENGTH * SAVE_PRIOR) / denom, SAVE_FULL);
    double share = capped(((double)in->shares + RATE_STRENGTH * SHARE_PRIOR) / denom, SHARE_FULL);
    double leads = (double)in->contacts + (double)in->whatsapps + (double)in->book_viewings;
    double lead = capped((leads + RATE_STRENGTH * LEAD_PRIOR) / denom, LEAD_FULL);
    double skip = capped(((double)in->skips + SKIP_STRENGTH * SKIP_PRIOR) /
                         (exposures + SKIP_STRENGTH), SKIP_FULL);

    double q = W_VTR * vtr + W_WATCH * watch + W_SAVE * save + W_SHARE * share + W_LEAD * lead;
    q -= W_SKIP * skip;
    if (q < 0.0)
        q = 0.0;
    if (q > 1.0)
        q = 1.0;
    double boost = in->boost > 100 ? 1.0 : (double)in->boost / 100.0;
    return 100.0 * ((1.0 - W_BOOST) * q + W_BOOST * boost);
}
