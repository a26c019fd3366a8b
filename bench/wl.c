/* SPDX-License-Identifier: MIT */
/*
 * wl.c -- the benchmark workload, a pure function of its configuration.
 *
 * One xoshiro256** stream, seeded from cfg.seed, draws every interaction in
 * order: type (cumulative weights), short (uniform, or Zipf by binary search
 * in a precomputed CDF), session (uniform), then watch_ms for views and a
 * platform for shares. Who a session belongs to is not drawn from the stream
 * but hashed from (seed, session), so a session is signed in on every one of
 * its interactions or on none, and always as the same user: the
 * signed-in share holds for sessions and, since sessions are drawn
 * uniformly, for interactions too. With `cover`, the first interactions
 * are one impression of every short in id order (still drawn from the same
 * stream, then overridden, so the rest of the workload is unchanged).
 *
 * Everything is generated into memory before anything is timed; encoders
 * then turn a struct bench_ix into the bytes of one command (TRACK inline or
 * RESP, or the EVALSHA a Redis user would send) without allocating.
 */
#include "bench/bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- PRNG ------------------------------------------------------------------- */

uint64_t bench_mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void bench_rng_seed(struct bench_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) {
        x += 0x9e3779b97f4a7c15ull;
        r->s[i] = bench_mix64(x);
    }
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t bench_rng_next(struct bench_rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Lemire's multiply-shift: the bias is below 2^-32 for n < 2^32, far under
 * anything a benchmark can see, and it costs one multiplication. */
uint64_t bench_rng_below(struct bench_rng *r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)bench_rng_next(r) * n) >> 64);
}

double bench_rng_unit(struct bench_rng *r)
{
    return (double)(bench_rng_next(r) >> 11) * 0x1.0p-53;
}

/* ---- configuration ------------------------------------------------------------ */

static const uint32_t default_mix[ENG_T_COUNT] = {
    [ENG_T_IMPRESSION] = 50, [ENG_T_VIEW] = 30,    [ENG_T_SKIP] = 8,
    [ENG_T_SAVE] = 4,        [ENG_T_SHARE] = 3,    [ENG_T_CONTACT] = 2,
    [ENG_T_WHATSAPP] = 2,    [ENG_T_BOOK_VIEWING] = 1,
};

static const char *const platforms[BENCH_NPLATFORMS] = {
    "whatsapp", "facebook", "instagram", "x", "email", "copy_link",
};

const char *bench_platform_name(unsigned p)
{
    return p < BENCH_NPLATFORMS ? platforms[p] : "";
}

void bench_wl_defaults(struct bench_wl_cfg *c)
{
    memset(c, 0, sizeof *c);
    c->seed = 1;
    c->n = 2000000;
    c->shorts = 100000;
    c->sessions = 1000000;
    c->users = 200000;
    c->signed_in = 0.30;
    memcpy(c->mix, default_mix, sizeof c->mix);
    c->zipf = 0.0;
    c->watch_max = 60000;
    c->sid_fmt = BENCH_SID_GUEST;
    c->ts_base = 1700000000000;
}

int bench_wl_check(const struct bench_wl_cfg *c, char *msg, size_t msglen)
{
    uint64_t total = 0;
    for (int t = 0; t < ENG_T_COUNT; t++)
        total += c->mix[t];
    if (c->shorts < 1) {
        snprintf(msg, msglen, "shorts: must be at least 1");
    } else if (c->sessions < 1) {
        snprintf(msg, msglen, "sessions: must be at least 1");
    } else if (c->signed_in < 0.0 || c->signed_in > 1.0 || isnan(c->signed_in)) {
        snprintf(msg, msglen, "signed-in: must be a share 0..1");
    } else if (c->signed_in > 0.0 && c->users < 1) {
        snprintf(msg, msglen, "users: must be at least 1 when some sessions sign in");
    } else if (total == 0) {
        snprintf(msg, msglen, "mix: every weight is 0");
    } else if (!(c->zipf >= 0.0 && c->zipf <= 10.0)) {
        snprintf(msg, msglen, "zipf: exponent must be 0 (uniform) to 10");
    } else if (c->watch_max > ENG_WATCH_MAX) {
        snprintf(msg, msglen, "watch-max: must be 0..%u", ENG_WATCH_MAX);
    } else if (c->n > (uint64_t)1 << 32) {
        snprintf(msg, msglen, "n: at most 4294967296 interactions");
    } else if (c->ts_base < 0 || c->ts_base > ENG_TS_MAX - (int64_t)c->n) {
        snprintf(msg, msglen, "ts-base: out of range");
    } else {
        return BENCH_OK;
    }
    return BENCH_EINVAL;
}

int bench_mix_parse(const char *s, uint32_t mix[ENG_T_COUNT], char *msg, size_t msglen)
{
    uint32_t m[ENG_T_COUNT] = {0};
    bool seen[ENG_T_COUNT] = {false};
    const char *p = s;
    if (*p == '\0') {
        snprintf(msg, msglen, "mix: empty");
        return BENCH_EINVAL;
    }
    while (*p) {
        const char *eq = strchr(p, '=');
        const char *comma = strchr(p, ',');
        if (!comma)
            comma = p + strlen(p);
        if (!eq || eq > comma) {
            snprintf(msg, msglen, "mix: expected type=weight at '%.*s'", (int)(comma - p), p);
            return BENCH_EINVAL;
        }
        int t = eng_type_parse(p, (size_t)(eq - p));
        if (t < 0) {
            snprintf(msg, msglen, "mix: unknown interaction type '%.*s'", (int)(eq - p), p);
            return BENCH_EINVAL;
        }
        if (seen[t]) {
            snprintf(msg, msglen, "mix: type '%.*s' given twice", (int)(eq - p), p);
            return BENCH_EINVAL;
        }
        char *end;
        const char *v = eq + 1;
        unsigned long w = (v < comma && *v >= '0' && *v <= '9') ? strtoul(v, &end, 10) : 0;
        if (v == comma || !(*v >= '0' && *v <= '9') || end != comma || w > 1000000) {
            snprintf(msg, msglen, "mix: weight of '%.*s' must be an integer 0..1000000",
                     (int)(eq - p), p);
            return BENCH_EINVAL;
        }
        seen[t] = true;
        m[t] = (uint32_t)w;
        p = *comma ? comma + 1 : comma;
    }
    uint64_t total = 0;
    for (int t = 0; t < ENG_T_COUNT; t++)
        total += m[t];
    if (total == 0) {
        snprintf(msg, msglen, "mix: every weight is 0");
        return BENCH_EINVAL;
    }
    memcpy(mix, m, sizeof m);
    return BENCH_OK;
}

/* ---- sessions ----------------------------------------------------------------- */

#define SALT_SID 0x5e55101d00000000ull
#define SALT_SIGNED 0x51976ed100000000ull
#define SALT_USER 0x0005e400000000ull

uint32_t bench_session_user(const struct bench_wl_cfg *c, uint32_t s)
{
    uint64_t h = bench_mix64(c->seed ^ SALT_SIGNED ^ ((uint64_t)s << 1));
    if ((double)(h >> 11) * 0x1.0p-53 >= c->signed_in || c->users == 0)
        return 0;
    uint64_t u = bench_mix64(c->seed ^ SALT_USER ^ ((uint64_t)s << 1));
    return (uint32_t)(1 + (((unsigned __int128)u * c->users) >> 64));
}

static char *put_hex64(char *p, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--) {
        p[i] = hex[v & 15];
        v >>= 4;
    }
    return p + 16;
}

static char *put_u64(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

size_t bench_session_name(const struct bench_wl_cfg *c, uint32_t s, char out[BENCH_SID_MAX])
{
    char *p = out;
    if (c->sid_fmt == BENCH_SID_SHORT) {
        *p++ = 's';
        p = put_u64(p, s);
    } else {
        /* looks like the ids the engine mints: "g-" + 128 bits of hex */
        uint64_t a = bench_mix64(c->seed ^ SALT_SID ^ ((uint64_t)s << 1));
        uint64_t b = bench_mix64(a ^ ((uint64_t)s << 1 | 1));
        *p++ = 'g';
        *p++ = '-';
        p = put_hex64(p, a);
        p = put_hex64(p, b);
    }
    *p = '\0';
    return (size_t)(p - out);
}

/* ---- generation ---------------------------------------------------------------- */

/* Zipf over ranks 1..n: cdf[i] = P(rank <= i+1). */
static double *zipf_cdf(uint32_t n, double s)
{
    double *cdf = malloc((size_t)n * sizeof *cdf);
    if (!cdf)
        return NULL;
    double acc = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        acc += pow((double)i + 1.0, -s);
        cdf[i] = acc;
    }
    for (uint32_t i = 0; i < n; i++)
        cdf[i] /= acc;
    cdf[n - 1] = 1.0;
    return cdf;
}

static uint32_t zipf_draw(const double *cdf, uint32_t n, double u)
{
    uint32_t lo = 0, hi = n - 1;  /* first i with cdf[i] > u */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (cdf[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

int bench_wl_generate(const struct bench_wl_cfg *c, struct bench_wl *out, char *msg,
                      size_t msglen)
{
    memset(out, 0, sizeof *out);
    int rc = bench_wl_check(c, msg, msglen);
    if (rc)
        return rc;
    struct bench_ix *ix = malloc((c->n ? c->n : 1) * sizeof *ix);
    double *cdf = c->zipf > 0.0 ? zipf_cdf(c->shorts, c->zipf) : NULL;
    if (!ix || (c->zipf > 0.0 && !cdf)) {
        free(ix);
        free(cdf);
        snprintf(msg, msglen, "out of memory for %llu interactions", (unsigned long long)c->n);
        return BENCH_ENOMEM;
    }
    uint64_t cum[ENG_T_COUNT], total = 0;
    for (int t = 0; t < ENG_T_COUNT; t++) {
        total += c->mix[t];
        cum[t] = total;
    }
    struct bench_rng r;
    bench_rng_seed(&r, c->seed);
    for (uint64_t i = 0; i < c->n; i++) {
        struct bench_ix *x = &ix[i];
        uint64_t w = bench_rng_below(&r, total);
        int t = 0;
        while (w >= cum[t])
            t++;
        x->type = (uint8_t)t;
        x->short_id = 1 + (cdf ? zipf_draw(cdf, c->shorts, bench_rng_unit(&r))
                               : (uint32_t)bench_rng_below(&r, c->shorts));
        x->session = (uint32_t)bench_rng_below(&r, c->sessions);
        x->user = bench_session_user(c, x->session);
        x->watch_ms = t == ENG_T_VIEW ? (uint32_t)bench_rng_below(&r, (uint64_t)c->watch_max + 1) : 0;
        x->platform = t == ENG_T_SHARE ? (uint8_t)bench_rng_below(&r, BENCH_NPLATFORMS) : 0;
        /* --cover overrides after every draw, so the draws (and every later
         * interaction) are those of the same seed without it */
        if (c->cover && i < c->shorts) {
            x->type = ENG_T_IMPRESSION;
            x->short_id = (uint32_t)i + 1;
            x->watch_ms = 0;
            x->platform = 0;
        }
    }
    free(cdf);
    out->cfg = *c;
    out->ix = ix;
    out->n = c->n;
    return BENCH_OK;
}

void bench_wl_free(struct bench_wl *w)
{
    free(w->ix);
    w->ix = NULL;
    w->n = 0;
}

/* ---- encoders -------------------------------------------------------------------- */

/* An argument list assembled in place, then framed. */
struct args {
    const char *p[16];
    size_t len[16];
    int n;
};

static void arg(struct args *a, const char *p, size_t len)
{
    a->p[a->n] = p;
    a->len[a->n] = len;
    a->n++;
}

static size_t frame(const struct args *a, enum bench_framing f, uint8_t *out)
{
    char *p = (char *)out;
    if (f == BENCH_INLINE) {
        for (int i = 0; i < a->n; i++) {
            if (i)
                *p++ = ' ';
            memcpy(p, a->p[i], a->len[i]);
            p += a->len[i];
        }
    } else {
        *p++ = '*';
        p = put_u64(p, (uint64_t)a->n);
        *p++ = '\r';
        *p++ = '\n';
        for (int i = 0; i < a->n; i++) {
            *p++ = '$';
            p = put_u64(p, a->len[i]);
            *p++ = '\r';
            *p++ = '\n';
            memcpy(p, a->p[i], a->len[i]);
            p += a->len[i];
            *p++ = '\r';
            *p++ = '\n';
        }
        return (size_t)(p - (char *)out);
    }
    *p++ = '\r';
    *p++ = '\n';
    return (size_t)(p - (char *)out);
}

/* "key=" + value into scratch; returns the end of what was written. */
static char *kv_u64(struct args *a, char *scratch, const char *key, uint64_t v)
{
    size_t kl = strlen(key);
    memcpy(scratch, key, kl);
    char *e = put_u64(scratch + kl, v);
    arg(a, scratch, (size_t)(e - scratch));
    return e;
}

static char *kv_str(struct args *a, char *scratch, const char *key, const char *v, size_t vl)
{
    size_t kl = strlen(key);
    memcpy(scratch, key, kl);
    memcpy(scratch + kl, v, vl);
    arg(a, scratch, kl + vl);
    return scratch + kl + vl;
}

size_t bench_enc_track(const struct bench_wl_cfg *c, const struct bench_ix *ix,
                       enum bench_framing f, uint8_t *out)
{
    char scratch[256], *s = scratch;
    char sid[BENCH_SID_MAX];
    size_t sl = bench_session_name(c, ix->session, sid);
    struct args a = {.n = 0};
    arg(&a, "TRACK", 5);
    char *id = s;
    s = put_u64(s, ix->short_id);
    arg(&a, id, (size_t)(s - id));
    const char *tn = eng_type_name((enum eng_type)ix->type);
    arg(&a, tn, strlen(tn));
    s = kv_str(&a, s, "session=", sid, sl);
    if (ix->user)
        s = kv_u64(&a, s, "user=", ix->user);
    if (ix->type == ENG_T_VIEW)
        s = kv_u64(&a, s, "watch_ms=", ix->watch_ms);
    if (ix->type == ENG_T_SHARE) {
        const char *pn = bench_platform_name(ix->platform);
        s = kv_str(&a, s, "platform=", pn, strlen(pn));
    }
    (void)s;
    return frame(&a, f, out);
}

/*
 * What a Redis user would write for the same job, one call per interaction:
 *   KEYS: s:<short> (hash of counters), v:<short> (HyperLogLog of viewers),
 *         hs:<session> (session history list), [hu:<user>] (user history)
 *   ARGV: type, watch_ms, viewer, history record, platform, history size
 * Saves are not deduplicated and uniques are approximate: less work than
 * shortstat does, which favours Redis in the comparison.
 */
static const char lua_script[] =
    "local t = ARGV[1]\n"
    "redis.call('HINCRBY', KEYS[1], t, 1)\n"
    "if t == 'view' then\n"
    "  redis.call('HINCRBY', KEYS[1], 'watch_sum', ARGV[2])\n"
    "  redis.call('HINCRBY', KEYS[1], 'watch_n', 1)\n"
    "  redis.call('PFADD', KEYS[2], ARGV[3])\n"
    "elseif t == 'impression' then\n"
    "  redis.call('PFADD', KEYS[2], ARGV[3])\n"
    "elseif t == 'share' then\n"
    "  redis.call('HINCRBY', KEYS[1], 'shares_' .. ARGV[5], 1)\n"
    "end\n"
    "local last = tonumber(ARGV[6]) - 1\n"
    "redis.call('LPUSH', KEYS[3], ARGV[4])\n"
    "redis.call('LTRIM', KEYS[3], 0, last)\n"
    "if KEYS[4] then\n"
    "  redis.call('LPUSH', KEYS[4], ARGV[4])\n"
    "  redis.call('LTRIM', KEYS[4], 0, last)\n"
    "end\n"
    "return 1\n";

const char *bench_lua_script(void)
{
    return lua_script;
}

size_t bench_enc_eval(const struct bench_wl_cfg *c, const struct bench_ix *ix, uint64_t seq,
                      const char sha[41], uint32_t history, uint8_t *out)
{
    char scratch[384], *s = scratch;
    char sid[BENCH_SID_MAX];
    size_t sl = bench_session_name(c, ix->session, sid);
    const char *tn = eng_type_name((enum eng_type)ix->type);
    const char *pn = ix->type == ENG_T_SHARE ? bench_platform_name(ix->platform) : "";
    struct args a = {.n = 0};
    arg(&a, "EVALSHA", 7);
    arg(&a, sha, 40);
    arg(&a, ix->user ? "4" : "3", 1);
    char *k = s;
    memcpy(s, "s:", 2);
    s = put_u64(s + 2, ix->short_id);
    arg(&a, k, (size_t)(s - k));
    k = s;
    memcpy(s, "v:", 2);
    s = put_u64(s + 2, ix->short_id);
    arg(&a, k, (size_t)(s - k));
    k = s;
    memcpy(s, "hs:", 3);
    memcpy(s + 3, sid, sl);
    s += 3 + sl;
    arg(&a, k, (size_t)(s - k));
    if (ix->user) {
        k = s;
        memcpy(s, "hu:", 3);
        s = put_u64(s + 3, ix->user);
        arg(&a, k, (size_t)(s - k));
    }
    arg(&a, tn, strlen(tn));
    k = s;
    s = put_u64(s, ix->watch_ms);
    arg(&a, k, (size_t)(s - k));
    k = s;                                  /* viewer: the user, else the session */
    if (ix->user) {
        *s++ = 'u';
        s = put_u64(s, ix->user);
    } else {
        *s++ = 's';
        memcpy(s, sid, sl);
        s += sl;
    }
    arg(&a, k, (size_t)(s - k));
    k = s;                                  /* record: "<short> <type> <ts>[ w][ p]" */
    s = put_u64(s, ix->short_id);
    *s++ = ' ';
    memcpy(s, tn, strlen(tn));
    s += strlen(tn);
    *s++ = ' ';
    s = put_u64(s, (uint64_t)c->ts_base + seq);
    if (ix->type == ENG_T_VIEW) {
        *s++ = ' ';
        s = put_u64(s, ix->watch_ms);
    }
    if (*pn) {
        *s++ = ' ';
        memcpy(s, pn, strlen(pn));
        s += strlen(pn);
    }
    arg(&a, k, (size_t)(s - k));
    arg(&a, pn, strlen(pn));
    k = s;
    s = put_u64(s, history);
    arg(&a, k, (size_t)(s - k));
    return frame(&a, BENCH_RESP, out);
}

/* ---- streams ----------------------------------------------------------------------- */

int bench_stream_build(const struct bench_wl *w, enum bench_stream_kind k, enum bench_framing f,
                       const char *sha, uint32_t history, struct bench_stream *s, char *msg,
                       size_t msglen)
{
    memset(s, 0, sizeof *s);
    /* Sized from the first commands, with a margin, so the buffer is rarely
     * copied: a realloc of hundreds of MB costs as much as the encoding. */
    uint8_t probe[BENCH_CMD_MAX];
    size_t sample = w->n < 256 ? w->n : 256, plen = 0;
    for (size_t i = 0; i < sample; i++)
        plen += k == BENCH_S_TRACK ? bench_enc_track(&w->cfg, &w->ix[i], f, probe)
                                   : bench_enc_eval(&w->cfg, &w->ix[i], i, sha, history, probe);
    size_t per = sample ? plen / sample + 16 : 64;
    size_t cap = 4096 + w->n * per, len = 0;
    uint8_t *buf = malloc(cap);
    uint64_t *off = malloc((w->n + 1) * sizeof *off);
    if (!buf || !off)
        goto nomem;
    for (size_t i = 0; i < w->n; i++) {
        if (cap - len < BENCH_CMD_MAX) {
            size_t ncap = cap * 2;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb)
                goto nomem;
            buf = nb;
            cap = ncap;
        }
        off[i] = len;
        len += k == BENCH_S_TRACK ? bench_enc_track(&w->cfg, &w->ix[i], f, buf + len)
                                  : bench_enc_eval(&w->cfg, &w->ix[i], i, sha, history, buf + len);
    }
    off[w->n] = len;
    s->buf = buf;
    s->len = len;
    s->off = off;
    s->n = w->n;
    return BENCH_OK;
nomem:
    free(buf);
    free(off);
    snprintf(msg, msglen, "out of memory encoding %zu commands", w->n);
    return BENCH_ENOMEM;
}

void bench_stream_free(struct bench_stream *s)
{
    free(s->buf);
    free(s->off);
    memset(s, 0, sizeof *s);
}
