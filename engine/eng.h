/* SPDX-License-Identifier: MIT */
/*
 * eng.h -- the engine's contract.
 *
 * struct eng is opaque. It records interactions with short property videos
 * ("shorts") and answers per-short analytics, top-k rankings and per-session /
 * per-user history. It does no I/O, keeps no globals, and is not thread-safe:
 * one thread owns one engine.
 *
 * Errors: every function that can fail returns 0 (ENG_OK) or a negative
 * enum eng_rc, and fills a caller-supplied struct eng_err with
 * "<field>: <reason>" (and, for batches, the index of the bad element).
 * A failed call changes nothing.
 *
 * Lifetimes: every pointer an eng_ query returns (strings in struct
 * eng_history_rec, platform names in struct eng_stats, iterator views) is
 * borrowed from the engine and stays valid until the next mutating call
 * (eng_record*, eng_set_boost, eng_tick, eng_restore_*, eng_destroy). Copy
 * what you keep. Input strings are never retained; the engine copies them.
 */
#ifndef SHORTSTAT_ENG_H
#define SHORTSTAT_ENG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum eng_type {
    ENG_T_IMPRESSION = 0,
    ENG_T_VIEW,
    ENG_T_SKIP,
    ENG_T_SAVE,
    ENG_T_SHARE,
    ENG_T_CONTACT,
    ENG_T_WHATSAPP,
    ENG_T_BOOK_VIEWING,
    ENG_T_COUNT
};

enum eng_rc {
    ENG_OK = 0,
    ENG_EINVAL = -1,  /* bad input; err names the field */
    ENG_ENOMEM = -2,  /* allocation failed; nothing changed */
    ENG_ELIMIT = -3,  /* an engine-wide limit (e.g. distinct platforms) */
};

#define ENG_SESSION_MAX     64u        /* bytes in a session id */
#define ENG_PLATFORM_MAX    32u        /* bytes in a platform name */
#define ENG_UA_MAX          512u       /* bytes in a user agent */
#define ENG_WATCH_MAX       86400000u  /* watch_ms upper bound (24 h) */
#define ENG_TS_MAX          253402300799999 /* 9999-12-31T23:59:59.999Z */
#define ENG_TOPK_MAX        1000u
#define ENG_BOOST_MAX       100u
#define ENG_HISTORY_DEFAULT 64u
#define ENG_HISTORY_MAX     65536u     /* largest ring a config may ask for */
/* Distinct shorts an engine holds: its index has at most 2^31 slots, filled
 * to 3/4 (engine/idx.c), which also keeps a viewer set's owner, index * 2
 * + 1, within 32 bits (eng_int.h, eng_set_owner). */
#define ENG_SHORTS_MAX      ((uint64_t)3 << 29)
#define ENG_SESSION_TTL_DEFAULT_MS (24ll * 3600 * 1000)
#define ENG_SID_LEN         34u        /* "g-" + 32 hex digits */
#define ENG_IPSTR_MAX       46u        /* INET6_ADDRSTRLEN */

struct eng_err {
    int32_t index;   /* batch: element that failed; -1 otherwise */
    char msg[160];   /* "<field>: <reason>" */
};

/* Clock and randomness are injected so tests are deterministic and the
 * engine performs no system calls of its own choosing. */
typedef int64_t (*eng_clock_fn)(void *ud);                      /* ms since epoch */
typedef void (*eng_random_fn)(void *ud, uint8_t *out, size_t n); /* n random bytes */

/* Fresh memory the engine has mapped and will touch soon: the next pool
 * chunk, a grown array's new part. The first touch of a fresh page costs a
 * page fault (several ms for a 2 MiB huge page on some VMs), paid by
 * whoever touches it first; a host can fault the range in ahead on another
 * thread (MADV_POPULATE_WRITE) so the engine's own touch finds it present.
 * The engine never waits for it and may unmap or move the range at any
 * time after the call, so the hook must only fault pages in, never write
 * to them. */
typedef void (*eng_populate_fn)(void *ud, void *addr, size_t len);

struct eng_config {
    uint32_t history;        /* ring size per session and per user; 0 = default 64 */
    int64_t session_ttl_ms;  /* idle sessions older than this are evicted; 0 (or < 0) = 24 h */
    eng_clock_fn clock;      /* NULL = CLOCK_REALTIME; read clamped to 0..ENG_TS_MAX;
                                a reading behind one already acted on counts as that
                                one, so stepping the clock back revives no session */
    eng_random_fn random;    /* NULL = getrandom(), fallback /dev/urandom-free PRNG */
    eng_populate_fn populate; /* NULL = the engine's own touch faults pages in */
    void *ud;                /* passed to clock, random and populate */
};

/* One interaction, as parsed from a protocol. Strings are borrowed for the
 * duration of the call and need not be NUL-terminated. */
struct eng_ix {
    int32_t type;             /* enum eng_type; anything else is rejected */
    uint64_t short_id;        /* >= 1 */
    uint64_t user;            /* 0 = absent */
    const char *session;      /* NULL = absent */
    size_t session_len;
    bool has_ts;              /* false: now */
    int64_t ts;               /* ms since epoch, 0..ENG_TS_MAX */
    bool has_watch;
    int64_t watch_ms;         /* view only, 0..ENG_WATCH_MAX */
    const char *platform;     /* share only; NULL = absent */
    size_t platform_len;
    const char *ip;           /* IPv4 or IPv6 text; NULL = absent */
    size_t ip_len;
    const char *ua;           /* NULL = absent; at most ENG_UA_MAX bytes */
    size_t ua_len;
};

/* ---- lifecycle ---------------------------------------------------------- */

struct eng *eng_create(const struct eng_config *cfg);  /* NULL on ENOMEM */
/* Sets the populate hook after creation (NULL clears it), called with the
 * config's ud: a host whose helper starts after a snapshot load attaches it
 * then. Only with a hook does the engine map memory ahead of need. */
void eng_set_populate(struct eng *e, eng_populate_fn populate);
void eng_destroy(struct eng *e);

/* ---- names --------------------------------------------------------------- */

const char *eng_type_name(enum eng_type t);            /* "book_viewing" */
int eng_type_parse(const char *s, size_t len);         /* type or -1 */

/* ---- recording ----------------------------------------------------------- */

/* Validate without recording: the same checks eng_record makes. */
int eng_validate(const struct eng *e, const struct eng_ix *ix, struct eng_err *err);
int eng_record(struct eng *e, const struct eng_ix *ix, struct eng_err *err);
/* All or nothing: every element is validated before any is applied. On
 * failure err->index names the first bad element. */
int eng_record_batch(struct eng *e, const struct eng_ix *ixs, size_t n, struct eng_err *err);

int eng_set_boost(struct eng *e, uint64_t short_id, int64_t boost, struct eng_err *err);
/* Room for n more shorts: after ENG_OK, creating up to n of them -- by
 * recording or eng_set_boost -- cannot fail for memory or ENG_SHORTS_MAX,
 * so a caller applying a batch and then boosts can promise both or neither.
 * ENG_ENOMEM or ENG_ELIMIT otherwise; nothing a query sees changes. */
int eng_reserve(struct eng *e, uint64_t n, struct eng_err *err);
/* Whether the engine holds this short (recorded or boosted before). */
bool eng_short_known(const struct eng *e, uint64_t short_id);

/* Cache hint: touch the hash slots ix will need. A server that parsed many
 * commands from one read prefetches them all, then records them, so the
 * cache misses of one overlap the work of the others. Never fails. */
void eng_prefetch(const struct eng *e, const struct eng_ix *ix);

/* Incremental housekeeping (session eviction): examines at most `budget`
 * sessions. Call from a timer; recording also does a little of it. */
void eng_tick(struct eng *e, uint32_t budget);

/* ---- queries ------------------------------------------------------------- */

struct eng_platform_count {
    const char *name;   /* borrowed, NUL-terminated */
    uint64_t shares;
};

struct eng_stats {
    uint64_t impressions, views, view_count, unique_viewers;
    uint64_t saves, shares, skips, contacts, whatsapps, book_viewings;
    double avg_watch_ms, engagement_rate, score;
    uint32_t boost;
    int64_t last_ts;                          /* 0 when never seen */
    const struct eng_platform_count *platforms; /* in first-seen order */
    size_t nplatforms;
};

/* Unknown shorts answer all zeros. */
void eng_stats(struct eng *e, uint64_t short_id, struct eng_stats *out);

enum eng_metric {
    ENG_M_SCORE = 0,
    ENG_M_VIEW_COUNT,
    ENG_M_UNIQUE_VIEWERS,
    ENG_M_SAVES,
    ENG_M_SHARES,
    ENG_M_ENGAGEMENT_RATE,
    ENG_M_AVG_WATCH_MS,
    ENG_M_IMPRESSIONS,
    ENG_M_VIEWS,
    ENG_M_SKIPS,
    ENG_M_CONTACTS,
    ENG_M_WHATSAPPS,
    ENG_M_BOOK_VIEWINGS,
    ENG_M_BOOST,
    ENG_M_LAST_TS,
    ENG_M_COUNT
};
const char *eng_metric_name(enum eng_metric m);   /* "view_count" */
int eng_metric_parse(const char *s, size_t len);  /* metric or -1 */

struct eng_top_item {
    uint64_t short_id;
    double value;
};
/* Best first, ties by smaller short_id; k in 1..ENG_TOPK_MAX. Returns the
 * number of items written to out (<= k), or a negative eng_rc. */
int eng_top(struct eng *e, enum eng_metric by, uint32_t k, struct eng_top_item *out,
            struct eng_err *err);

/* One history record, decoded. Absent fields: user 0, session NULL,
 * has_watch false, platform NULL, ip[0] == 0, ua NULL. */
struct eng_history_rec {
    uint64_t short_id;
    int64_t ts;
    enum eng_type type;
    uint64_t user;
    const char *session;  size_t session_len;
    bool has_watch;       uint32_t watch_ms;
    const char *platform; size_t platform_len;
    char ip[ENG_IPSTR_MAX];  /* canonical text (inet_ntop), "" when absent */
    const char *ua;       size_t ua_len;
};

/* ENG_OK when s is a well-formed session id (1 to ENG_SESSION_MAX
 * characters of A-Z a-z 0-9 . _ : -), else ENG_EINVAL with the rule in err
 * ("session: ..."), as TRACK reports it: for front ends that look a
 * session up by id. */
int eng_session_check(const char *s, size_t len, struct eng_err *err);

/* Newest first, at most `limit` (clamped to the ring size). Returns the
 * number written; 0 for an unknown or expired session/user. */
size_t eng_history_session(struct eng *e, const char *session, size_t len,
                           struct eng_history_rec *out, size_t limit);
size_t eng_history_user(struct eng *e, uint64_t user, struct eng_history_rec *out, size_t limit);

/* A fresh guest session id "g-" + 32 lowercase hex digits, NUL-terminated. */
void eng_session_new(struct eng *e, char out[ENG_SID_LEN + 1]);

struct eng_info {
    uint64_t shorts, sessions, users;
    uint64_t interactions;            /* recorded since creation (restored too) */
    uint64_t by_type[ENG_T_COUNT];
    uint64_t records;                 /* retained history records, all rings */
    uint64_t viewer_pairs;            /* (short, viewer) pairs held */
    uint64_t sessions_evicted;
    uint64_t mem_total;               /* bytes the engine has allocated */
    uint64_t mem_records;             /* of which ring storage */
    uint64_t mem_viewers;             /* of which viewer and saver sets */
    uint32_t history;                 /* ring size */
    int64_t session_ttl_ms;
};
void eng_info(const struct eng *e, struct eng_info *out);
/* eng_info's mem_total alone, in O(1): a server compares it with its
 * memory limit before every write. */
uint64_t eng_mem_total(const struct eng *e);

/* Consistency check of every internal invariant; 0 or ENG_EINVAL with the
 * first violation in err. For tests; O(size of the engine). */
int eng_verify(const struct eng *e, struct eng_err *err);

/* ---- persistence view ----------------------------------------------------
 *
 * snapshot/ walks and rebuilds the engine only through these. The walk
 * exposes the engine's interned tables so a snapshot stores each user agent,
 * context and platform once; ids are stable for the life of the engine and
 * are reproduced exactly by the restore calls. Restore into a fresh engine
 * in this order: platforms, uas,
 * contexts, shorts, rings, then eng_restore_finish -- or, with
 * eng_restore_short_ids after the uas, contexts and rings interleaved, then
 * shorts. Any eng_restore_* error leaves the engine unusable except for
 * eng_destroy.
 */

struct eng_platform_view { uint32_t id; const char *name; size_t len; };
struct eng_ua_view       { uint32_t id; const char *ua; size_t len; };

/* A context: who and from where, shared by the records that carry it. */
struct eng_ctx_view {
    uint32_t id;
    uint64_t user;                       /* 0 = none */
    const char *session; size_t session_len; /* NULL = none */
    uint8_t ip_family;                   /* 0 none, 4, 6 */
    uint8_t ip[16];                      /* network order; 4 bytes used for v4 */
    uint32_t ua_id;                      /* 0 = none */
};

struct eng_short_view {
    uint64_t short_id;
    uint64_t count[ENG_T_COUNT];         /* count[ENG_T_SAVE] = distinct savers */
    uint64_t watch_sum, watch_n;
    uint32_t boost;
    int64_t last_ts;
    const uint32_t *plat_ids;            /* parallel arrays, first-seen order */
    const uint64_t *plat_shares;
    size_t nplat;
    const uint64_t *viewers; size_t viewers_cap;  /* open-addressing slots; 0 = empty */
    const uint64_t *savers;  size_t savers_cap;
};

/* A history record as stored: 20 bytes in the engine. */
struct eng_rec_view {
    int64_t ts;
    uint64_t short_id;
    uint32_t watch_ms;
    uint32_t ctx_id;                     /* 0 = none */
    uint32_t platform_id;                /* 0 = none */
    uint8_t type;
    bool has_watch;
};

struct eng_ring_view {
    bool is_user;                        /* else session */
    uint64_t user;
    const char *session; size_t session_len;
    int64_t last_seen_ms;                /* eviction clock */
    size_t nrecs;                        /* oldest first in eng_ring_rec */
};

/* Walks: callback returns 0 to continue, non-zero to stop (returned). */
typedef int (*eng_platform_cb)(void *ud, const struct eng_platform_view *v);
typedef int (*eng_ua_cb)(void *ud, const struct eng_ua_view *v);
typedef int (*eng_ctx_cb)(void *ud, const struct eng_ctx_view *v);
typedef int (*eng_short_cb)(void *ud, const struct eng_short_view *v);
/* recs: nrecs records, oldest first. */
typedef int (*eng_ring_cb)(void *ud, const struct eng_ring_view *v, const struct eng_rec_view *recs);

struct eng_walk_counts {
    uint64_t platforms, uas, ctxs, shorts, sessions, users, records, viewer_pairs, saver_pairs;
};
void eng_walk_counts(const struct eng *e, struct eng_walk_counts *out);

int eng_walk_platforms(const struct eng *e, eng_platform_cb cb, void *ud);
int eng_walk_uas(const struct eng *e, eng_ua_cb cb, void *ud);
int eng_walk_ctxs(const struct eng *e, eng_ctx_cb cb, void *ud);
/* Shorts in creation order (restore must keep it). */
int eng_walk_shorts(const struct eng *e, eng_short_cb cb, void *ud);
/* Sessions, then users. Expired-but-unswept sessions are skipped. */
int eng_walk_rings(const struct eng *e, eng_ring_cb cb, void *ud);
/* Engine-wide counters a snapshot must carry. */
struct eng_totals {
    uint64_t interactions;
    uint64_t by_type[ENG_T_COUNT];
    uint64_t sessions_evicted;
};
void eng_totals(const struct eng *e, struct eng_totals *out);

/* Hint: pre-size tables before a restore so loading does not rehash. */
int eng_restore_reserve(struct eng *e, const struct eng_walk_counts *c, struct eng_err *err);
/* Hint for a loader with time to spare while it waits for input (after
 * eng_restore_reserve): faults in up to `budget` bytes of the tables the
 * reservation sized -- sessions, users, shorts, their indexes, contexts --
 * so the restore calls that fill them later do not stop for page faults
 * (several us per 4 KiB page on some VMs). Changes nothing a query or a
 * restore call can see, and never fails. *cursor starts at 0 and is
 * advanced; returns the bytes still to go, 0 when done. */
size_t eng_restore_prefault(const struct eng *e, uint64_t *cursor, size_t budget);
int eng_restore_platform(struct eng *e, const struct eng_platform_view *v, struct eng_err *err);
int eng_restore_ua(struct eng *e, const struct eng_ua_view *v, struct eng_err *err);
int eng_restore_ctx(struct eng *e, const struct eng_ctx_view *v, struct eng_err *err);
/* For a loader that restores rings before it knows the shorts' counters
 * and sets (a snapshot's viewer sets are implied by its rings, so it would
 * otherwise decode the rings twice): creates the n shorts, ids in creation
 * order, with nothing recorded. Contexts and rings may then come
 * interleaved (a ring after its contexts), then eng_restore_short once for
 * each short, in the same order, fills it in; finish refuses a short left
 * without. Ids must be >= 1 and distinct. */
int eng_restore_short_ids(struct eng *e, const uint64_t *ids, size_t n, struct eng_err *err);
/* viewers/savers: plain lists of non-zero fingerprints (v->viewers etc. are
 * ignored), duplicates rejected. */
int eng_restore_short(struct eng *e, const struct eng_short_view *v,
                      const uint64_t *viewers, size_t nviewers,
                      const uint64_t *savers, size_t nsavers, struct eng_err *err);
/* Cache hint, like eng_prefetch: touch what eng_restore_ring(e, v, recs)
 * will read (each record's short and context), so a loader that calls it
 * a few rings ahead overlaps those misses. Never fails, changes nothing;
 * any input is accepted. */
void eng_restore_ring_prefetch(const struct eng *e, const struct eng_ring_view *v,
                               const struct eng_rec_view *recs);
/* recs oldest first; when there are more than the engine's ring size only the
 * newest are kept (a restart with a smaller --history). Ids must exist. */
int eng_restore_ring(struct eng *e, const struct eng_ring_view *v,
                     const struct eng_rec_view *recs, struct eng_err *err);
/* Rebuilds reference counts and derived indexes (the session and user
 * indexes among them, so a session or user restored twice is refused here,
 * not by eng_restore_ring); checks every context and user agent is
 * referenced. */
int eng_restore_finish(struct eng *e, const struct eng_totals *t, struct eng_err *err);

#endif
