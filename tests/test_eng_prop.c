/* SPDX-License-Identifier: MIT */
/*
 * Property test of interaction tracking: a seeded generator drives 100,000
 * random interactions -- every type, guests, users and both, repeats,
 * platforms, ips, user agents, explicit and default timestamps, batches
 * (some with a bad element, which must apply nothing), boosts, clock jumps
 * that expire sessions and steps back that must not revive them -- through the engine and through a plain model
 * here: arrays indexed by pool position, bitmaps for viewer sets, linear
 * scans. After every step the touched short's stats and the touched
 * viewer's history are compared; at checkpoints (after a full eviction
 * sweep on both) every stat, every history, counts, and top-k for every
 * metric. Halfway the engine is replaced by a walk -> restore copy of
 * itself, and the run continues on the copy. eng_prefetch is called on
 * every interaction (and on the spoiled ones) before it is recorded, as a
 * server does: its pipeline state must never change an answer.
 * SHORTSTAT_SEED replays.
 */
#include <check.h>
#include <ctype.h>
#include <math.h>
#include <string.h>

#include "engine/eng.h"
#include "engine/score.h"
#include "tests/eng_util.h"

#define N_SHORTS 300
#define N_SESS 3000
#define N_USERS 400
#define N_VIEWERS (N_SESS + N_USERS)
#define HIST 5
#define TTL 60000
#define STEPS 100000
#define CHECK_EVERY 10000

static const char *const PLATFORMS[] = {"whatsapp", "facebook", "x", "sms", "email", "copy_link"};
#define N_PLAT 6
static const char *const IPS[] = {"10.0.0.1", "192.168.001.002" /* rejected by inet_pton */,
                                  "2001:DB8::1", "::1", "255.255.255.255", "fe80:0:0:0:0:0:0:5"};
static const char *const IPS_CANON[] = {"10.0.0.1", NULL, "2001:db8::1", "::1", "255.255.255.255",
                                        "fe80::5"};
#define N_IP 6
static char UA_LONG[ENG_UA_MAX + 1];
static const char *UAS[] = {"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
                            "okhttp/4.9", "curl/8.0", "\"quoted\" agent\twith tab", NULL};
#define N_UA 5

struct m_rec {
    uint64_t short_id;
    int64_t ts;
    int type;
    int user;      /* pool index or -1 */
    int sess;      /* pool index or -1 */
    bool has_watch;
    uint32_t watch;
    int plat;      /* -1 none */
    int ip;        /* -1 none */
    int ua;        /* -1 none */
};

struct m_ring {
    struct m_rec r[HIST];
    int n;         /* oldest at r[0] */
};

static void m_push(struct m_ring *g, const struct m_rec *rec)
{
    if (g->n == HIST) {
        memmove(&g->r[0], &g->r[1], sizeof(g->r[0]) * (HIST - 1));
        g->n--;
    }
    g->r[g->n++] = *rec;
}

struct m_short {
    bool exists;
    uint64_t count[ENG_T_COUNT];
    uint64_t watch_sum, watch_n;
    int64_t last_ts;
    uint32_t boost;
    uint8_t viewer[N_VIEWERS];
    uint8_t saver[N_VIEWERS];
    uint64_t nviewers;
    int plat_order[N_PLAT];
    uint64_t plat_shares[N_PLAT];
    int nplat;
};

struct m_sess {
    bool exists;
    int64_t last_seen;
    struct m_ring ring;
};

struct m_user {
    bool exists;
    struct m_ring ring;
};

struct model {
    struct m_short sh[N_SHORTS];
    struct m_sess ss[N_SESS];
    struct m_user us[N_USERS];
    uint64_t interactions, by_type[ENG_T_COUNT], evicted;
    int64_t time;  /* the engine's time at its last mutation: it never goes back */
};

static uint64_t short_ids[N_SHORTS], user_ids[N_USERS];
static char sess_ids[N_SESS][ENG_SESSION_MAX + 1];
static struct model *M;
static struct tclock clk;
static struct eng *E;
static uint64_t rng;

/* one interaction, by pool indexes */
struct gen {
    struct eng_ix ix;
    int sh, sess, user, plat, ip, ua;
    char plat_as_sent[ENG_PLATFORM_MAX + 1];  /* the platform in a random case */
};

/* What the engine takes as now: the clock, or its time if the clock is behind. */
static int64_t m_now(void)
{
    return clk.now > M->time ? clk.now : M->time;
}

static bool m_expired(const struct m_sess *s, int64_t now)
{
    return now - s->last_seen > TTL;
}

static void m_apply(const struct gen *g)
{
    const struct eng_ix *ix = &g->ix;
    int64_t now = M->time = m_now();
    struct m_short *s = &M->sh[g->sh];
    s->exists = true;
    int vid = g->user >= 0 ? N_SESS + g->user : g->sess;
    int t = ix->type;
    M->interactions++;
    M->by_type[t]++;
    switch (t) {
    case ENG_T_IMPRESSION:
    case ENG_T_VIEW:
        s->count[t]++;
        if (!s->viewer[vid]) {
            s->viewer[vid] = 1;
            s->nviewers++;
        }
        if (ix->has_watch) {
            s->watch_sum += (uint64_t)ix->watch_ms;
            s->watch_n++;
        }
        break;
    case ENG_T_SAVE:
        if (!s->saver[vid]) {
            s->saver[vid] = 1;
            s->count[t]++;
        }
        break;
    case ENG_T_SHARE:
        s->count[t]++;
        if (g->plat >= 0) {
            int i = 0;
            while (i < s->nplat && s->plat_order[i] != g->plat)
                i++;
            if (i == s->nplat)
                s->plat_order[s->nplat++] = g->plat;
            s->plat_shares[g->plat]++;
        }
        break;
    default:
        s->count[t]++;
    }
    int64_t ts = ix->has_ts ? ix->ts : now;
    if (ts > s->last_ts)
        s->last_ts = ts;
    struct m_rec r = {short_ids[g->sh], ts, t, g->user, g->sess, ix->has_watch,
                      ix->has_watch ? (uint32_t)ix->watch_ms : 0, g->plat, g->ip, g->ua};
    if (g->sess >= 0) {
        struct m_sess *ss = &M->ss[g->sess];
        if (ss->exists && m_expired(ss, now)) {
            ss->ring.n = 0;
            M->evicted++;
        }
        ss->exists = true;
        ss->last_seen = now;
        m_push(&ss->ring, &r);
    }
    if (g->user >= 0) {
        M->us[g->user].exists = true;
        m_push(&M->us[g->user].ring, &r);
    }
}

/* What a full eviction sweep does to the model. */
static void m_sweep(void)
{
    M->time = m_now();
    for (int i = 0; i < N_SESS; i++)
        if (M->ss[i].exists && m_expired(&M->ss[i], M->time)) {
            M->ss[i].exists = false;
            M->ss[i].ring.n = 0;
            M->evicted++;
        }
}

static double m_metric(const struct m_short *s, int m)
{
    uint64_t vc = s->count[ENG_T_IMPRESSION] + s->count[ENG_T_VIEW];
    switch (m) {
    case ENG_M_SCORE: {
        struct score_in in = {s->count[ENG_T_IMPRESSION], s->count[ENG_T_VIEW], s->watch_sum,
                              s->watch_n, s->count[ENG_T_SAVE], s->count[ENG_T_SHARE],
                              s->count[ENG_T_SKIP], s->count[ENG_T_CONTACT],
                              s->count[ENG_T_WHATSAPP], s->count[ENG_T_BOOK_VIEWING], s->boost};
        return score_compute(&in);
    }
    case ENG_M_VIEW_COUNT: return (double)vc;
    case ENG_M_UNIQUE_VIEWERS: return (double)s->nviewers;
    case ENG_M_SAVES: return (double)s->count[ENG_T_SAVE];
    case ENG_M_SHARES: return (double)s->count[ENG_T_SHARE];
    case ENG_M_ENGAGEMENT_RATE:
        return vc ? (double)(s->count[ENG_T_SAVE] + s->count[ENG_T_SHARE] +
                             s->count[ENG_T_CONTACT] + s->count[ENG_T_WHATSAPP] +
                             s->count[ENG_T_BOOK_VIEWING]) / (double)vc
                  : 0.0;
    case ENG_M_AVG_WATCH_MS: return s->watch_n ? (double)s->watch_sum / (double)s->watch_n : 0.0;
    case ENG_M_IMPRESSIONS: return (double)s->count[ENG_T_IMPRESSION];
    case ENG_M_VIEWS: return (double)s->count[ENG_T_VIEW];
    case ENG_M_SKIPS: return (double)s->count[ENG_T_SKIP];
    case ENG_M_CONTACTS: return (double)s->count[ENG_T_CONTACT];
    case ENG_M_WHATSAPPS: return (double)s->count[ENG_T_WHATSAPP];
    case ENG_M_BOOK_VIEWINGS: return (double)s->count[ENG_T_BOOK_VIEWING];
    case ENG_M_BOOST: return (double)s->boost;
    case ENG_M_LAST_TS: return (double)s->last_ts;
    }
    return -1;
}

/* ---- comparisons ------------------------------------------------------------ */

static uint64_t seed_used;

#define CHECKF(cond, ...)                                                              \
    do {                                                                               \
        if (!(cond)) { /* Check logs every assertion made: call it on failure only */ \
            fprintf(stderr, "eng_prop: FAILED with seed %llu (SHORTSTAT_SEED replays)\n", \
                    (unsigned long long)seed_used);                                    \
            ck_abort_msg(__VA_ARGS__);                                                 \
        }                                                                              \
    } while (0)

static void cmp_short(int i)
{
    const struct m_short *s = &M->sh[i];
    struct eng_stats st;
    eng_stats(E, short_ids[i], &st);
    uint64_t id = short_ids[i];
    CHECKF(st.impressions == s->count[ENG_T_IMPRESSION], "short %llu impressions", (unsigned long long)id);
    CHECKF(st.views == s->count[ENG_T_VIEW], "short %llu views", (unsigned long long)id);
    CHECKF(st.view_count == s->count[ENG_T_IMPRESSION] + s->count[ENG_T_VIEW], "view_count");
    CHECKF(st.unique_viewers == s->nviewers, "short %llu unique_viewers %llu vs %llu",
           (unsigned long long)id, (unsigned long long)st.unique_viewers,
           (unsigned long long)s->nviewers);
    CHECKF(st.saves == s->count[ENG_T_SAVE], "short %llu saves", (unsigned long long)id);
    CHECKF(st.shares == s->count[ENG_T_SHARE], "shares");
    CHECKF(st.skips == s->count[ENG_T_SKIP], "skips");
    CHECKF(st.contacts == s->count[ENG_T_CONTACT], "contacts");
    CHECKF(st.whatsapps == s->count[ENG_T_WHATSAPP], "whatsapps");
    CHECKF(st.book_viewings == s->count[ENG_T_BOOK_VIEWING], "book_viewings");
    CHECKF(st.avg_watch_ms == m_metric(s, ENG_M_AVG_WATCH_MS), "avg_watch_ms");
    CHECKF(st.engagement_rate == m_metric(s, ENG_M_ENGAGEMENT_RATE), "engagement_rate");
    CHECKF(st.score == (s->exists ? m_metric(s, ENG_M_SCORE) : 0.0), "short %llu score",
           (unsigned long long)id);
    CHECKF(st.boost == s->boost, "boost");
    CHECKF(st.last_ts == s->last_ts, "last_ts");
    CHECKF(st.nplatforms == (size_t)s->nplat, "short %llu nplatforms", (unsigned long long)id);
    for (int p = 0; p < s->nplat; p++) {
        CHECKF(strcmp(st.platforms[p].name, PLATFORMS[s->plat_order[p]]) == 0, "platform order");
        CHECKF(st.platforms[p].shares == s->plat_shares[s->plat_order[p]], "platform shares");
    }
}

static void cmp_ring(const struct m_ring *g, bool gone, const struct eng_history_rec *h, size_t n,
                     const char *who)
{
    size_t want = gone ? 0 : (size_t)g->n;
    CHECKF(n == want, "%s: history has %zu records, model %zu", who, n, want);
    for (size_t i = 0; i < n; i++) {
        const struct m_rec *r = &g->r[g->n - 1 - (int)i];
        const struct eng_history_rec *x = &h[i];
        CHECKF(x->short_id == r->short_id && x->ts == r->ts && (int)x->type == r->type,
               "%s: record %zu differs", who, i);
        CHECKF(x->user == (r->user >= 0 ? user_ids[r->user] : 0), "%s: record %zu user", who, i);
        if (r->sess >= 0)
            CHECKF(x->session && x->session_len == strlen(sess_ids[r->sess]) &&
                       memcmp(x->session, sess_ids[r->sess], x->session_len) == 0,
                   "%s: record %zu session", who, i);
        else
            CHECKF(x->session == NULL, "%s: record %zu has a session", who, i);
        CHECKF(x->has_watch == r->has_watch && x->watch_ms == r->watch, "%s: record %zu watch", who, i);
        if (r->plat >= 0)
            CHECKF(x->platform && x->platform_len == strlen(PLATFORMS[r->plat]) &&
                       memcmp(x->platform, PLATFORMS[r->plat], x->platform_len) == 0,
                   "%s: record %zu platform", who, i);
        else
            CHECKF(x->platform == NULL, "%s: record %zu platform", who, i);
        CHECKF(strcmp(x->ip, r->ip >= 0 ? IPS_CANON[r->ip] : "") == 0, "%s: record %zu ip '%s'",
               who, i, x->ip);
        const char *ua = r->ua >= 0 ? UAS[r->ua] : NULL;
        if (ua)
            CHECKF(x->ua && x->ua_len == strlen(ua) && memcmp(x->ua, ua, x->ua_len) == 0,
                   "%s: record %zu ua", who, i);
        else
            CHECKF(x->ua == NULL, "%s: record %zu ua", who, i);
    }
}

static struct eng_history_rec H[HIST + 3];

static void cmp_sess(int i)
{
    const struct m_sess *s = &M->ss[i];
    size_t n = eng_history_session(E, sess_ids[i], strlen(sess_ids[i]), H, HIST + 3);
    M->time = m_now();  /* the query keeps the time it judged by */
    cmp_ring(&s->ring, !s->exists || m_expired(s, M->time), H, n, sess_ids[i]);
}

static void cmp_user(int i)
{
    size_t n = eng_history_user(E, user_ids[i], H, HIST + 3);
    char who[32];
    snprintf(who, sizeof(who), "user %llu", (unsigned long long)user_ids[i]);
    cmp_ring(&M->us[i].ring, !M->us[i].exists, H, n, who);
}

struct topent {
    double v;
    uint64_t id;
};

static int top_cmp(const void *a, const void *b)
{
    const struct topent *x = a, *y = b;
    if (x->v != y->v)
        return x->v > y->v ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static struct topent TE[N_SHORTS];
static struct eng_top_item TI[ENG_TOPK_MAX];

static void cmp_top(int m, uint32_t k)
{
    int n = 0;
    for (int i = 0; i < N_SHORTS; i++)
        if (M->sh[i].exists) {
            TE[n].v = m_metric(&M->sh[i], m);
            TE[n].id = short_ids[i];
            n++;
        }
    qsort(TE, (size_t)n, sizeof(TE[0]), top_cmp);
    int want = n < (int)k ? n : (int)k;
    int got = eng_top(E, (enum eng_metric)m, k, TI, NULL);
    CHECKF(got == want, "top %s %u: %d items, model %d", eng_metric_name((enum eng_metric)m), k, got,
           want);
    for (int i = 0; i < got; i++)
        CHECKF(TI[i].short_id == TE[i].id && TI[i].value == TE[i].v,
               "top %s %u: item %d is %llu=%g, model %llu=%g", eng_metric_name((enum eng_metric)m), k,
               i, (unsigned long long)TI[i].short_id, TI[i].value, (unsigned long long)TE[i].id,
               TE[i].v);
}

static void checkpoint(void)
{
    eng_tick(E, UINT32_MAX);
    m_sweep();
    verify_ok(E);
    struct eng_info in;
    eng_info(E, &in);
    uint64_t shorts = 0, sessions = 0, users = 0, records = 0, pairs = 0;
    for (int i = 0; i < N_SHORTS; i++) {
        shorts += M->sh[i].exists;
        pairs += M->sh[i].nviewers;
        cmp_short(i);
    }
    for (int i = 0; i < N_SESS; i++) {
        if (M->ss[i].exists) {
            sessions++;
            records += (uint64_t)M->ss[i].ring.n;
        }
        cmp_sess(i);
    }
    for (int i = 0; i < N_USERS; i++) {
        users += M->us[i].exists;
        records += (uint64_t)M->us[i].ring.n;
        cmp_user(i);
    }
    CHECKF(in.shorts == shorts, "shorts %llu vs %llu", (unsigned long long)in.shorts,
           (unsigned long long)shorts);
    CHECKF(in.sessions == sessions, "sessions %llu vs %llu", (unsigned long long)in.sessions,
           (unsigned long long)sessions);
    CHECKF(in.users == users, "users");
    CHECKF(in.records == records, "records %llu vs %llu", (unsigned long long)in.records,
           (unsigned long long)records);
    CHECKF(in.viewer_pairs == pairs, "viewer pairs");
    CHECKF(in.interactions == M->interactions, "interactions");
    CHECKF(memcmp(in.by_type, M->by_type, sizeof(in.by_type)) == 0, "by type");
    CHECKF(in.sessions_evicted == M->evicted, "evicted %llu vs %llu",
           (unsigned long long)in.sessions_evicted, (unsigned long long)M->evicted);
    for (int m = 0; m < ENG_M_COUNT; m++) {
        cmp_top(m, 1);
        cmp_top(m, 10);
        cmp_top(m, ENG_TOPK_MAX);
    }
}

/* ---- generation ------------------------------------------------------------ */

static void gen_pools(void)
{
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-";
    for (int i = 0; i < N_SHORTS; i++)
        short_ids[i] = i < 5 ? UINT64_MAX - (uint64_t)i : (uint64_t)i * 7919 + 1 + (trng_next(&rng) % 7) * 1000000;
    for (int i = 0; i < N_SESS; i++) {
        if (i % 10 == 0) {
            eng_session_new(E, sess_ids[i]);  /* minted ids are valid sessions */
            continue;
        }
        int len = snprintf(sess_ids[i], sizeof(sess_ids[i]), "%d-", i);
        int want = i % 97 == 0 ? (int)ENG_SESSION_MAX : len + (int)trng_below(&rng, 20);
        while (len < want)
            sess_ids[i][len++] = alpha[trng_below(&rng, sizeof(alpha) - 1)];
        sess_ids[i][len] = 0;
    }
    for (int i = 0; i < N_USERS; i++)
        user_ids[i] = i == 0 ? UINT64_MAX : i == 1 ? 1 : (uint64_t)i * 1000003 + 17;
    memset(UA_LONG, 'L', ENG_UA_MAX);
    UAS[4] = UA_LONG;
}

static void gen_one(struct gen *g)
{
    memset(g, 0, sizeof(*g));
    struct eng_ix *ix = &g->ix;
    uint64_t r = trng_below(&rng, 100);
    static const int cum[ENG_T_COUNT] = {35, 65, 75, 83, 90, 94, 97, 100};
    int t = 0;
    while ((int)r >= cum[t])
        t++;
    ix->type = t;
    /* skewed towards a few hot shorts */
    g->sh = trng_below(&rng, 4) == 0 ? (int)trng_below(&rng, 10) : (int)trng_below(&rng, N_SHORTS);
    ix->short_id = short_ids[g->sh];
    g->sess = g->user = -1;
    uint64_t who = trng_below(&rng, 100);
    if (who < 60 || who >= 85) {
        g->sess = trng_below(&rng, 3) == 0 ? (int)trng_below(&rng, 50) : (int)trng_below(&rng, N_SESS);
        ix->session = sess_ids[g->sess];
        ix->session_len = strlen(sess_ids[g->sess]);
    }
    if (who >= 60) {
        g->user = (int)trng_below(&rng, N_USERS);
        ix->user = user_ids[g->user];
    }
    if (trng_below(&rng, 2)) {
        ix->has_ts = true;
        ix->ts = trng_below(&rng, 50) == 0 ? ENG_TS_MAX : (int64_t)trng_below(&rng, (uint64_t)clk.now * 2);
    }
    if (t == ENG_T_VIEW && trng_below(&rng, 10) < 7) {
        ix->has_watch = true;
        ix->watch_ms = trng_below(&rng, 100) == 0 ? ENG_WATCH_MAX : (int64_t)trng_below(&rng, 120000);
    }
    g->plat = -1;
    if (t == ENG_T_SHARE && trng_below(&rng, 10) < 6) {
        g->plat = (int)trng_below(&rng, N_PLAT);
        /* sent in any case, stored (and modelled) in lower case */
        const char *name = PLATFORMS[g->plat];
        size_t n = strlen(name);
        for (size_t k = 0; k <= n; k++)
            g->plat_as_sent[k] = trng_below(&rng, 4) ? name[k] : (char)toupper((unsigned char)name[k]);
        ix_set(&ix->platform, &ix->platform_len, g->plat_as_sent);
    }
    g->ip = -1;
    if (trng_below(&rng, 2)) {
        do
            g->ip = (int)trng_below(&rng, N_IP);
        while (!IPS_CANON[g->ip]);
        ix_set(&ix->ip, &ix->ip_len, IPS[g->ip]);
    }
    g->ua = -1;
    if (trng_below(&rng, 2)) {
        g->ua = (int)trng_below(&rng, N_UA);
        ix_set(&ix->ua, &ix->ua_len, UAS[g->ua]);
    }
}

/* An element no engine may accept (and its expected error). */
static const char *spoil(struct eng_ix *ix)
{
    switch (trng_below(&rng, 5)) {
    case 0: ix->short_id = 0; return "short_id: must be at least 1";
    case 1: ix_set(&ix->session, &ix->session_len, "bad session"); return "session: must be 1 to 64 characters of A-Z a-z 0-9 . _ : -";
    case 2: ix->type = ENG_T_SKIP; ix->has_watch = true; ix->platform = NULL; return "watch_ms: only allowed on view";
    case 3: ix_set(&ix->ip, &ix->ip_len, IPS[1]); return "ip: not an IPv4 or IPv6 address";
    default: ix->type = 99; return "type: unknown interaction type";
    }
}

static void after_step(const struct gen *g)
{
    cmp_short(g->sh);
    if (g->sess >= 0)
        cmp_sess(g->sess);
    if (g->user >= 0)
        cmp_user(g->user);
}

static void run(uint64_t seed, int steps)
{
    seed_used = seed;
    rng = seed;
    clk.now = 1700000000000;
    M = calloc(1, sizeof(*M));
    M->time = clk.now;
    E = mk_eng(&clk, HIST, TTL);
    gen_pools();
    /* up to 64: longer than the batch pipeline's prefetch distances, so
     * later elements are planned from the ids its stages looked up */
    struct gen batch[64];
    struct eng_ix bix[64];
    int next_check = steps < CHECK_EVERY ? steps / 4 : CHECK_EVERY;
    bool cloned = false;
    for (int step = 0; step < steps;) {
        clk.now += (int64_t)trng_below(&rng, 50);
        if (trng_below(&rng, 3000) == 0)
            clk.now += TTL + (int64_t)trng_below(&rng, TTL);  /* a quiet spell: sessions expire */
        else if (trng_below(&rng, 5000) == 0)
            clk.now -= 1 + (int64_t)trng_below(&rng, TTL);  /* the wall clock steps back */
        uint64_t what = trng_below(&rng, 1000);
        if (what >= 995) {
            /* jump to exactly TTL (or TTL + 1) after a session's last record,
             * query it, then record on it: the idle boundary */
            int i = (int)trng_below(&rng, 50);
            int64_t target = M->ss[i].last_seen + TTL + (int64_t)trng_below(&rng, 2);
            if (!M->ss[i].exists || target < m_now())
                continue;
            clk.now = target;
            cmp_sess(i);
            struct gen g;
            gen_one(&g);
            g.sess = i;
            ix_set(&g.ix.session, &g.ix.session_len, sess_ids[i]);
            struct eng_err err;
            CHECKF(eng_record(E, &g.ix, &err) == 0, "record: %s", err.msg);
            m_apply(&g);
            after_step(&g);
            step++;
            continue;
        }
        if (what < 5) {
            int i = (int)trng_below(&rng, N_SHORTS);
            uint32_t b = (uint32_t)trng_below(&rng, ENG_BOOST_MAX + 1);
            CHECKF(eng_set_boost(E, short_ids[i], b, NULL) == 0, "set_boost");
            M->sh[i].boost = b;
            M->sh[i].exists = true;
            cmp_short(i);
            continue;
        }
        if (what < 100) {
            int n = 1 + (int)trng_below(&rng, 64);
            for (int i = 0; i < n; i++) {
                gen_one(&batch[i]);
                bix[i] = batch[i].ix;
            }
            struct eng_err err;
            if (trng_below(&rng, 10) == 0) {
                int bad = (int)trng_below(&rng, (uint64_t)n);
                const char *msg = spoil(&bix[bad]);
                for (int i = 0; i < n; i++)
                    eng_prefetch(E, &bix[i]);  /* a hint: must not change anything */
                int rc = eng_record_batch(E, bix, (size_t)n, &err);
                CHECKF(rc == ENG_EINVAL && err.index == bad && strcmp(err.msg, msg) == 0,
                       "bad batch: rc %d index %d msg %s", rc, err.index, err.msg);
                for (int i = 0; i < n; i++)
                    after_step(&batch[i]);  /* nothing applied */
                continue;
            }
            for (int i = 0; i < n; i++)
                eng_prefetch(E, &bix[i]);
            int rc = eng_record_batch(E, bix, (size_t)n, &err);
            CHECKF(rc == 0, "batch: %s", err.msg);
            for (int i = 0; i < n; i++)
                m_apply(&batch[i]);
            for (int i = 0; i < n; i++)
                after_step(&batch[i]);
            step += n;
        } else {
            struct gen g;
            gen_one(&g);
            struct eng_err err;
            eng_prefetch(E, &g.ix);
            int rc = eng_record(E, &g.ix, &err);
            CHECKF(rc == 0, "record: %s", err.msg);
            m_apply(&g);
            after_step(&g);
            step++;
        }
        if (step >= next_check) {
            next_check += steps < CHECK_EVERY ? steps / 4 : CHECK_EVERY;
            checkpoint();
            if (!cloned && step >= steps / 2) {
                /* continue on a walk -> restore copy */
                cloned = true;
                struct eng *R = clone_eng(E, &clk, HIST, TTL);
                eng_destroy(E);
                E = R;
                M->time = clk.now;  /* a restore starts from the clock */
                checkpoint();
            }
        }
    }
    checkpoint();
    eng_destroy(E);
    E = NULL;
    free(M);
    M = NULL;
}

START_TEST(test_prop_tracking)
{
    run(test_seed("eng_prop", 20240611), STEPS);
}
END_TEST

/* Short runs over other seeds, with a tiny ring and TTL paths hit often. */
START_TEST(test_prop_seeds)
{
    uint64_t base = test_seed("eng_prop_seeds", 77);
    for (uint64_t s = 0; s < 5; s++)
        run(base * 1000003 + s, 4000);
}
END_TEST

extern Suite *eng_prop_suite(void);
Suite *eng_prop_suite(void)
{
    Suite *s = suite_create("eng_prop");
    TCase *tc = tcase_create("prop");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_prop_tracking);
    tcase_add_test(tc, test_prop_seeds);
    suite_add_tcase(s, tc);
    return s;
}
