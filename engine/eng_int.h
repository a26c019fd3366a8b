/* SPDX-License-Identifier: MIT */
/*
 * eng_int.h -- struct eng and the helpers eng.c, persist.c and verify.c
 * share. Internal to engine/: nothing outside includes it (tests use
 * engine/eng_test.h).
 *
 * Tables (all dense arrays, indexed by a u32 that never changes while the
 * thing lives):
 *   shorts   sh[] hot counters (128 B, two cache lines, 64-aligned),
 *            shc[] cold part (platform shares, batch scratch), sid[] ids;
 *            by creation index; never deleted. sh_idx: short id -> index.
 *   sessions ss[] slab of 64 B entries with a free list (eviction frees
 *            slots); ss_idx: session fingerprint -> slot, the id compared
 *            on a hit against the context of the session's newest record
 *            (the id is stored there, not twice).
 *   users    us[] dense, never deleted; us_idx: user id -> index.
 *   contexts cx[] slab by id (0 = none) with a free list: who and from
 *            where, shared by the records that carry it, refcounted
 *            separately from session rings (rs) and user rings (ru).
 *   uas      ua[] slab by id (0 = none), refcounted by contexts; ua_idx.
 *   platforms pl[] by id (1..65535), never freed; pl_idx.
 * Top-k keeps one double column per metric, created on its first TOP, and
 * per column a dirty list: the shorts changed since that column was last
 * refreshed, each listed once (bit m of the short's cdirty). Recording
 * only appends to the lists; TOP by m refreshes list m alone.
 */
#ifndef SHORTSTAT_ENG_INT_H
#define SHORTSTAT_ENG_INT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "engine/eng.h"
#include "engine/idx.h"
#include "engine/mem.h"
#include "engine/ring.h"
#include "engine/vset.h"

#define ENG_NONE UINT32_MAX
#define ENG_PLATFORMS_MAX 65535u
#define ENG_PFQ 16u               /* eng_prefetch pipeline length, power of two */

/* Everything an impression or view touches is in these two lines. */
struct shrt {
    uint64_t count[ENG_T_COUNT];  /* count[ENG_T_SAVE] == savers.n */
    struct vset viewers;
    uint64_t watch_sum, watch_n;
    int64_t last_ts;
    struct vset savers;
    uint16_t cdirty;              /* bit m: listed in column m's dirty list */
    uint8_t boost;
    uint8_t pad_[5];
};
_Static_assert(sizeof(struct shrt) == 128, "short hot part must be two cache lines");

/* A short's set's owner id in e->vh (vset.h): index * 2, + 1 for its
 * savers; short indexes stay below 2^31 so it fits. */
static inline uint32_t eng_set_owner(uint32_t six, bool savers)
{
    return six * 2 + (savers ? 1 : 0);
}

struct shrt_cold {
    uint32_t *plat_ids;           /* parallel, first-seen order */
    uint64_t *plat_shares;
    uint32_t nplat, plat_cap;
    uint32_t pend_v, pend_s;      /* batch scratch: members planned, not yet added */
    uint32_t pend_p;
    uint32_t pad_;
};

enum { SS_RESET = 1 };            /* batch scratch: expired, ring cleared on apply */

/* One cache line. The session's id is not stored here: the context of its
 * newest record always carries it (a session always holds at least one
 * record; during a batch, bctx is the context planned last). last_ctx is
 * that context (0 only transiently) and sig its signature (eng_ctx_sig):
 * when a new interaction's signature matches, its context is reused without
 * reading the context or the ring. */
struct sess {
    uint64_t hash;                /* fingerprint of the session id: index key */
    int64_t last_seen;            /* engine clock at its last record */
    uint64_t sig;
    struct ring ring;
    uint32_t last_ctx;
    uint32_t pend;                /* batch scratch: records planned */
    uint32_t bctx;                /* batch scratch: last planned ctx; free-list link when free */
    uint8_t slen;                 /* length of the id; 0 = free slot */
    uint8_t flags;                /* SS_RESET */
    uint8_t pad_[2];
};
_Static_assert(sizeof(struct sess) == 64, "session must be one cache line");

struct user {
    uint64_t id;
    int64_t last_seen;
    uint64_t sig;
    struct ring ring;
    uint32_t last_ctx;
    uint32_t pend;
    uint32_t bctx;
};
_Static_assert(sizeof(struct user) == 64, "user must be one cache line");

#define CX_FREE 0xffu
enum { CX_DROPPED = 1 };
struct ctx {
    uint64_t user;                /* 0 = none */
    uint32_t rs, ru;              /* references from session / user rings */
    uint32_t ua;                  /* ua id, 0 = none; free-list link when free */
    uint8_t fam;                  /* 0 none, 4, 6; CX_FREE = free slot */
    uint8_t slen;                 /* 0 = no session */
    uint8_t flags;                /* CX_DROPPED: restore dropped a record using it */
    uint8_t ip[16];
    char sid[ENG_SESSION_MAX];
};

struct ua {
    char *s;                      /* NULL = free slot */
    uint64_t hash;
    uint32_t len;
    uint32_t refs;                /* contexts using it; free-list link when free */
};

struct plat {
    char name[ENG_PLATFORM_MAX + 1];
    uint8_t len;
};

struct eng {
    struct mem mem;
    struct vheap vh;              /* the sets' tables; owner id = short index * 2 + savers */
    uint32_t history;
    int64_t ttl;
    eng_clock_fn clock;
    eng_random_fn random;
    void *ud;
    uint64_t rng;                 /* fallback PRNG state */
    int64_t now;                  /* engine time: the latest clock reading acted on */
    bool broken;                  /* a restore failed: only eng_destroy is allowed */
    uint8_t restore_phase;
    /* restore scratch (persist.c): short id -> index + 1 by id while rings
     * are restored, when ids are dense enough; NULL otherwise */
    uint32_t *rs_dense;
    uint64_t rs_dense_n;
    bool rs_early;                /* eng_restore_short_ids was called ... */
    uint32_t rs_filled;           /* ... and this many shorts have their data */

    /* shorts */
    struct shrt *sh;
    struct shrt_cold *shc;
    uint64_t *sid;
    uint32_t nsh, sh_cap;
    struct idx sh_idx;
    double *col[ENG_M_COUNT];     /* NULL until the metric's first TOP */
    uint32_t *dirty[ENG_M_COUNT]; /* per column, sh_cap entries */
    uint32_t ndirty[ENG_M_COUNT];
    uint16_t colmask;             /* bit m: column m exists */

    /* sessions (ss is ss_raw rounded up to a cache line) */
    void *ss_raw;
    struct sess *ss;
    uint32_t ss_hi, ss_cap, ss_free, ss_nfree, nss;
    uint32_t evict_cur;
    struct idx ss_idx;

    /* users (us is us_raw rounded up to a cache line) */
    void *us_raw;
    struct user *us;
    uint32_t nus, us_cap;
    struct idx us_idx;

    /* contexts (slot 0 unused) */
    struct ctx *cx;
    uint32_t cx_hi, cx_cap, cx_free, cx_nfree, ncx;

    /* user agents (slot 0 unused) */
    struct ua *ua;
    uint32_t ua_hi, ua_cap, ua_free, ua_nfree, nua;
    struct idx ua_idx;

    /* platforms (slot 0 unused) */
    struct plat *pl;
    uint32_t npl, pl_cap;
    struct idx pl_idx;

    /* batch scratch (plans and undo log), kept between batches: a large
     * malloc per batch makes glibc consolidate its small free chunks */
    void *scratch;
    size_t scratch_bytes;

    /* eng_prefetch's pipeline: the last ENG_PFQ interactions it was given,
     * so each call can also go one and two levels deeper for earlier ones.
     * Only hints are derived from it; it is written through the const
     * engine eng_prefetch gets (the engine is never a const object). */
    struct eng_pfq {
        uint64_t short_id, shash, user, fp;
        int32_t type;
        bool sess;
    } pfq[ENG_PFQ];
    uint32_t pfq_n;

    /* eng_stats platform list, sized to the largest short's nplat */
    struct eng_platform_count *pc;
    uint32_t pc_cap;

    /* totals */
    uint64_t interactions;
    uint64_t by_type[ENG_T_COUNT];
    uint64_t sessions_evicted;
    uint64_t records;
    uint64_t viewer_pairs;
};

/* ---- shared helpers (eng.c) ---------------------------------------------- */

void eng_errf(struct eng_err *err, int32_t index, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void eng_verrf(struct eng_err *err, int32_t index, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
int64_t eng_clock_now(const struct eng *e);
/* The engine's time: the clock, never earlier than the latest reading it
 * acted on (e->now). A wall clock stepped back would otherwise revive sessions
 * already idle past the TTL and stamp records older than those before them;
 * as with Redis's stream ids, time stands still until the clock catches up. */
static inline int64_t eng_now(const struct eng *e)
{
    int64_t c = eng_clock_now(e);
    return c > e->now ? c : e->now;
}
uint64_t eng_fp_user(uint64_t user);
uint64_t eng_fp_session(const char *s, size_t len);
bool eng_session_ok(const char *s, size_t len);
bool eng_platform_ok(const char *s, size_t len);
uint32_t eng_sess_find(const struct eng *e, uint64_t hash, const char *s, size_t len);
/* The session's id, from the context that carries it. */
static inline const char *eng_sess_id(const struct eng *e, const struct sess *ss)
{
    uint32_t c = ss->pend ? ss->bctx : ss->last_ctx;
    return c ? e->cx[c].sid : NULL;
}
static inline bool eng_sess_expired(const struct eng *e, const struct sess *s, int64_t now)
{
    return now - s->last_seen > e->ttl;
}
double eng_metric_value(const struct eng *e, uint32_t ix, enum eng_metric m);
/* What recording can never produce, for restore and eng_verify alike:
 * impressions + views past 2^64 (view_count would wrap), or watch time
 * over watch_n x ENG_WATCH_MAX (none without a watched view). */
static inline bool eng_seen_wraps(const uint64_t *count)
{
    return count[ENG_T_IMPRESSION] + count[ENG_T_VIEW] < count[ENG_T_VIEW];
}
static inline bool eng_watch_bad(uint64_t sum, uint64_t n)
{
    uint64_t q = sum / ENG_WATCH_MAX;  /* sum > n * MAX without the product */
    return q > n || (q == n && sum % ENG_WATCH_MAX != 0);
}
/* A short's platform list as restore takes it and recording keeps it: ids
 * known and distinct, each with shares, adding up to no more than the
 * short's shares. NULL when it holds, else what is wrong. */
const char *eng_plats_bad(const struct eng *e, const uint32_t *ids, const uint64_t *shares,
                          uint32_t n, uint64_t total);
int eng_reserve_shorts(struct eng *e, uint64_t extra);
int eng_reserve_sessions(struct eng *e, uint64_t extra);
int eng_reserve_users(struct eng *e, uint64_t extra);
int eng_reserve_ctxs(struct eng *e, uint64_t extra);
int eng_reserve_uas(struct eng *e, uint64_t extra);
int eng_reserve_platforms(struct eng *e, uint64_t extra);
int eng_reserve_pc(struct eng *e, uint32_t n);
/* Slab free lists (sessions, contexts, uas): a free slot keeps the next
 * free id in one of its own u32 fields, link_off bytes in; `none` ends the
 * list (ENG_NONE for sessions, 0 where slot 0 is never used). */
static inline uint32_t eng_slab_take(void *base, size_t size, size_t link_off, uint32_t *head,
                                     uint32_t *nfree, uint32_t *hi, uint32_t none)
{
    uint32_t id = *head;
    if (id == none)
        return (*hi)++;
    memcpy(head, (char *)base + (size_t)id * size + link_off, sizeof(*head));
    (*nfree)--;
    return id;
}

static inline void eng_slab_put(void *base, size_t size, size_t link_off, uint32_t *head,
                                uint32_t *nfree, uint32_t id)
{
    memcpy((char *)base + (size_t)id * size + link_off, head, sizeof(*head));
    *head = id;
    (*nfree)++;
}

uint32_t eng_short_new(struct eng *e, uint64_t id);
uint32_t eng_sess_new(struct eng *e, uint64_t hash, const char *s, size_t len, int64_t now);
uint32_t eng_user_new(struct eng *e, uint64_t id, int64_t now);
void eng_mark_dirty(struct eng *e, uint32_t ix);
void eng_ring_release(struct eng *e, struct ring *r, bool is_user);
uint64_t eng_ctx_sig(uint64_t shash, uint64_t user, uint8_t fam, const uint8_t ip[16], const char *ua,
                     size_t ua_len);
uint64_t eng_ctx_sig_of(const struct eng *e, uint32_t id);
void eng_ctx_destroy(struct eng *e, uint32_t id);
void eng_ua_init(struct eng *e, uint32_t id, uint64_t h, char *s, size_t len);
void eng_ua_free_slot(struct eng *e, uint32_t id);
/* A platform by name, given in either case (stored and hashed in lower case). */
uint32_t eng_plat_find(const struct eng *e, const char *s, size_t len, uint64_t *hout);
uint32_t eng_plat_new(struct eng *e, uint64_t h, const char *s, size_t len);
uint32_t eng_ua_find(const struct eng *e, uint64_t h, const char *s, size_t len);
uint64_t eng_hash_bytes(const void *p, size_t len);
int eng_reserve_plat_slots(struct eng *e, struct shrt_cold *c, uint32_t n);

#endif
