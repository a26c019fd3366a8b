/* SPDX-License-Identifier: MIT */
/*
 * persist.c -- the persistence view of eng.h: walks that expose the
 * engine's tables to snapshot/, and restores that rebuild them.
 *
 * Consistency of a walk: sessions idle past the TTL are skipped, judged by
 * e->now (the engine's time, see eng_now), never by a fresh clock
 * read, so every walk over one unchanged engine -- counts, contexts, user
 * agents, rings -- agrees even if the clock moves between them (a snapshot
 * child walks for seconds). A context is walked only if some walked ring
 * references it (ru > 0, or rs > 0 and its session is live); a user agent
 * only if some walked context does. So a restore sees every context and
 * user agent referenced, and eng_restore_finish can insist on it.
 *
 * Restore: into a fresh engine, phases in order (platforms, uas, contexts,
 * shorts, rings, finish -- or platforms, uas, short ids, contexts and rings
 * interleaved, shorts' data, finish); ids are placed exactly where they
 * were, the free lists rebuilt at the end. Every input is checked as if
 * hostile (a snapshot may be corrupt): bad ids, duplicates, impossible
 * counts are errors, after which the engine is marked broken (only
 * eng_destroy).
 * When the engine's history is shorter than a ring's records, only the
 * newest are kept; contexts only the dropped records used are then freed
 * at finish (CX_DROPPED), the one case where an unreferenced context is
 * not an error.
 *
 * Speed (a 2M-interaction load restores ~1M rings): records find their
 * short through a plain array by id while rings are restored (see
 * short_find), and a loader with an idle moment can have the reserved
 * tables faulted in ahead of use (eng_restore_prefault).
 */
#include "engine/eng_int.h"

#include <stdlib.h>
#include <string.h>

/* ---- walks ------------------------------------------------------------------ */

static bool sess_walked(const struct eng *e, const struct sess *ss)
{
    return ss->slen && !eng_sess_expired(e, ss, e->now);
}

static bool any_hidden_session(const struct eng *e)
{
    for (uint32_t i = 0; i < e->ss_hi; i++)
        if (e->ss[i].slen && !sess_walked(e, &e->ss[i]))
            return true;
    return false;
}

static bool ctx_walked(const struct eng *e, uint32_t id, bool hidden)
{
    const struct ctx *c = &e->cx[id];
    if (c->fam == CX_FREE)
        return false;
    if (!hidden || c->ru > 0)
        return true;
    if (c->rs == 0 || c->slen == 0)
        return false;
    uint32_t si = eng_sess_find(e, eng_fp_session(c->sid, c->slen), c->sid, c->slen);
    return si != ENG_NONE && sess_walked(e, &e->ss[si]);
}

/* Marks of walked user agents (NULL with *ok false on ENOMEM; NULL with
 * *ok true when every live one is walked). Caller frees. */
static uint8_t *ua_marks(const struct eng *e, bool hidden, bool *ok)
{
    *ok = true;
    if (!hidden)
        return NULL;
    uint8_t *m = calloc(e->ua_hi ? e->ua_hi : 1, 1);
    if (!m) {
        *ok = false;
        return NULL;
    }
    for (uint32_t id = 1; id < e->cx_hi; id++)
        if (ctx_walked(e, id, true) && e->cx[id].ua)
            m[e->cx[id].ua] = 1;
    return m;
}

void eng_walk_counts(const struct eng *e, struct eng_walk_counts *out)
{
    memset(out, 0, sizeof(*out));
    bool hidden = any_hidden_session(e);
    out->platforms = e->npl;
    bool ok;
    uint8_t *m = ua_marks(e, hidden, &ok);
    if (!hidden) {
        out->uas = e->nua;
    } else if (m) {
        for (uint32_t id = 1; id < e->ua_hi; id++)
            out->uas += m[id];
    } else {
        /* No memory for marks: ask each user agent the slow way. */
        for (uint32_t id = 1; id < e->ua_hi; id++) {
            if (!e->ua[id].s)
                continue;
            for (uint32_t c = 1; c < e->cx_hi; c++)
                if (e->cx[c].fam != CX_FREE && e->cx[c].ua == id && ctx_walked(e, c, true)) {
                    out->uas++;
                    break;
                }
        }
    }
    free(m);
    for (uint32_t id = 1; id < e->cx_hi; id++)
        out->ctxs += ctx_walked(e, id, hidden);
    out->shorts = e->nsh;
    for (uint32_t i = 0; i < e->nsh; i++) {
        out->viewer_pairs += e->sh[i].viewers.n;
        out->saver_pairs += e->sh[i].savers.n;
    }
    for (uint32_t i = 0; i < e->ss_hi; i++)
        if (sess_walked(e, &e->ss[i])) {
            out->sessions++;
            out->records += e->ss[i].ring.len;
        }
    out->users = e->nus;
    for (uint32_t i = 0; i < e->nus; i++)
        out->records += e->us[i].ring.len;
}

int eng_walk_platforms(const struct eng *e, eng_platform_cb cb, void *ud)
{
    for (uint32_t id = 1; id <= e->npl; id++) {
        struct eng_platform_view v = {id, e->pl[id].name, e->pl[id].len};
        int rc = cb(ud, &v);
        if (rc)
            return rc;
    }
    return 0;
}

int eng_walk_uas(const struct eng *e, eng_ua_cb cb, void *ud)
{
    bool hidden = any_hidden_session(e), ok;
    uint8_t *m = ua_marks(e, hidden, &ok);
    if (!ok)
        return ENG_ENOMEM;
    int rc = 0;
    for (uint32_t id = 1; id < e->ua_hi && rc == 0; id++) {
        if (!e->ua[id].s || (m && !m[id]))
            continue;
        struct eng_ua_view v = {id, e->ua[id].s, e->ua[id].len};
        rc = cb(ud, &v);
    }
    free(m);
    return rc;
}

int eng_walk_ctxs(const struct eng *e, eng_ctx_cb cb, void *ud)
{
    bool hidden = any_hidden_session(e);
    for (uint32_t id = 1; id < e->cx_hi; id++) {
        if (!ctx_walked(e, id, hidden))
            continue;
        const struct ctx *c = &e->cx[id];
        struct eng_ctx_view v = {
            .id = id, .user = c->user,
            .session = c->slen ? c->sid : NULL, .session_len = c->slen,
            .ip_family = c->fam, .ua_id = c->ua,
        };
        memcpy(v.ip, c->ip, sizeof(v.ip));
        int rc = cb(ud, &v);
        if (rc)
            return rc;
    }
    return 0;
}

int eng_walk_shorts(const struct eng *e, eng_short_cb cb, void *ud)
{
    for (uint32_t i = 0; i < e->nsh; i++) {
        const struct shrt *s = &e->sh[i];
        const struct shrt_cold *c = &e->shc[i];
        struct eng_short_view v = {
            .short_id = e->sid[i], .watch_sum = s->watch_sum, .watch_n = s->watch_n,
            .boost = s->boost, .last_ts = s->last_ts,
            .plat_ids = c->plat_ids, .plat_shares = c->plat_shares, .nplat = c->nplat,
            .viewers = s->viewers.slots, .viewers_cap = s->viewers.cap,
            .savers = s->savers.slots, .savers_cap = s->savers.cap,
        };
        memcpy(v.count, s->count, sizeof(v.count));
        int rc = cb(ud, &v);
        if (rc)
            return rc;
    }
    return 0;
}

static void rec_view(const struct eng *e, const struct rec *r, struct eng_rec_view *o)
{
    o->ts = rec_ts(r);
    o->short_id = e->sid[r->short_ix];
    o->watch_ms = rec_watch_ms(r);
    o->ctx_id = r->ctx;
    o->platform_id = rec_platform(r);
    o->type = rec_type(r);
    o->has_watch = rec_has_watch(r);
}

static int walk_ring(const struct eng *e, const struct ring *r, struct eng_ring_view *v,
                     struct eng_rec_view *buf, eng_ring_cb cb, void *ud)
{
    for (uint32_t i = 0; i < r->len; i++)
        rec_view(e, ring_oldest(r, i), &buf[i]);
    v->nrecs = r->len;
    return cb(ud, v, buf);
}

int eng_walk_rings(const struct eng *e, eng_ring_cb cb, void *ud)
{
    struct eng_rec_view *buf = malloc((size_t)e->history * sizeof(*buf));
    if (!buf)
        return ENG_ENOMEM;
    int rc = 0;
    for (uint32_t i = 0; i < e->ss_hi && rc == 0; i++) {
        const struct sess *ss = &e->ss[i];
        if (!sess_walked(e, ss))
            continue;
        struct eng_ring_view v = {
            .is_user = false, .session = eng_sess_id(e, ss), .session_len = ss->slen,
            .last_seen_ms = ss->last_seen,
        };
        rc = walk_ring(e, &ss->ring, &v, buf, cb, ud);
    }
    for (uint32_t i = 0; i < e->nus && rc == 0; i++) {
        const struct user *u = &e->us[i];
        struct eng_ring_view v = {.is_user = true, .user = u->id, .last_seen_ms = u->last_seen};
        rc = walk_ring(e, &u->ring, &v, buf, cb, ud);
    }
    free(buf);
    return rc;
}

void eng_totals(const struct eng *e, struct eng_totals *out)
{
    memset(out, 0, sizeof(*out));
    out->interactions = e->interactions;
    memcpy(out->by_type, e->by_type, sizeof(out->by_type));
    /* Sessions the walk skips are as good as evicted: count them, so a
     * restored engine agrees with this one once it has swept them. */
    out->sessions_evicted = e->sessions_evicted;
    for (uint32_t i = 0; i < e->ss_hi; i++)
        if (e->ss[i].slen && !sess_walked(e, &e->ss[i]))
            out->sessions_evicted++;
}

/* ---- restore ------------------------------------------------------------------- */

/* Phases only move forward. With eng_restore_short_ids (PH_SHORT_IDS),
 * contexts and rings share PH_RINGS and shorts' data comes after them
 * (PH_FILL); without it contexts, shorts and rings have a phase each. */
enum {
    PH_NONE, PH_RESERVE, PH_PLATFORM, PH_UA, PH_SHORT_IDS, PH_CTX, PH_SHORT, PH_RING,
    PH_RINGS, PH_FILL, PH_DONE
};

/* Every restore error breaks the engine. Messages name the item when it
 * has a name ("short 42: ...", "session s-1: ..."), else only what failed. */
static int failf(struct eng *e, struct eng_err *err, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int failf(struct eng *e, struct eng_err *err, int rc, const char *fmt, ...)
{
    e->broken = true;
    va_list ap;
    va_start(ap, fmt);
    eng_verrf(err, -1, fmt, ap);
    va_end(ap);
    return rc;
}

static int fail(struct eng *e, struct eng_err *err, int rc, const char *what, const char *why)
{
    return failf(e, err, rc, "%s: %s", what, why);
}

static int fail_id(struct eng *e, struct eng_err *err, int rc, const char *what, const char *why,
                   uint64_t id)
{
    return failf(e, err, rc, "%s %llu: %s", what, (unsigned long long)id, why);
}

/* A session by its id, when that is well-formed enough to print. */
static int fail_sess(struct eng *e, struct eng_err *err, const char *s, size_t len, const char *why)
{
    if (!s || !eng_session_ok(s, len))
        return fail(e, err, ENG_EINVAL, "session", why);
    return failf(e, err, ENG_EINVAL, "session %.*s: %s", (int)len, s, why);
}

static int fail_ring(struct eng *e, struct eng_err *err, const struct eng_ring_view *v,
                     const char *why)
{
    return v->is_user ? fail_id(e, err, ENG_EINVAL, "user", why, v->user)
                      : fail_sess(e, err, v->session, v->session_len, why);
}

static int enter(struct eng *e, uint8_t phase, struct eng_err *err)
{
    if (err) {
        err->index = -1;
        err->msg[0] = 0;
    }
    if (e->broken) {
        eng_errf(err, -1, "engine: a restore failed; destroy this engine");
        return ENG_EINVAL;
    }
    if (e->restore_phase == PH_NONE &&
        (e->nsh || e->nss || e->nus || e->npl || e->nua || e->ncx || e->interactions)) {
        e->broken = true;
        eng_errf(err, -1, "restore: the engine is not fresh");
        return ENG_EINVAL;
    }
    if (phase < e->restore_phase || e->restore_phase == PH_DONE) {
        e->broken = true;
        eng_errf(err, -1, "restore: out of order (platforms, uas, contexts, shorts, rings, finish)");
        return ENG_EINVAL;
    }
    e->restore_phase = phase;
    return ENG_OK;
}

int eng_restore_reserve(struct eng *e, const struct eng_walk_counts *c, struct eng_err *err)
{
    int rc = enter(e, PH_RESERVE, err);
    if (rc)
        return rc;
    if (c->shorts > ENG_SHORTS_MAX || c->sessions >= ENG_NONE || c->users >= ENG_NONE ||
        c->ctxs >= ENG_NONE || c->uas >= ENG_NONE || c->platforms > ENG_PLATFORMS_MAX)
        return fail(e, err, ENG_ELIMIT, "counts", "beyond the engine's limits");
    /* Context and user agent ids start at 1 (slot 0 is "none"), so their
     * slabs need one slot more than the count for the highest id to fit
     * without slab_place growing them by doubling at the end of a load. */
    if ((c->shorts && eng_reserve_shorts(e, c->shorts)) ||
        (c->sessions && eng_reserve_sessions(e, c->sessions)) ||
        (c->users && eng_reserve_users(e, c->users)) ||
        (c->ctxs && eng_reserve_ctxs(e, c->ctxs + 1)) ||
        (c->uas && eng_reserve_uas(e, c->uas + 1)) ||
        (c->platforms && eng_reserve_platforms(e, c->platforms)))
        return fail(e, err, ENG_ENOMEM, "memory", "out of memory");
    return ENG_OK;
}

/* The reserved tables, contexts last: a loader restores those from the
 * start of the table onwards from its first batch, faulting them in itself.
 * Whole blocks, so the list does not depend on how far a table is filled;
 * populating a page that is already there costs a page-table walk. The
 * kernel fills the pages (MADV_POPULATE_WRITE, Linux 5.14+): nothing is
 * written from here, so no content changes; without it this is a no-op. */
size_t eng_restore_prefault(const struct eng *e, uint64_t *cursor, size_t budget)
{
    const size_t slot = sizeof(struct idx_slot);
    const struct { const void *p; size_t n; } tab[] = {
        {e->ss_raw, e->ss_raw ? (size_t)e->ss_cap * sizeof(struct sess) + 64 : 0},
        {e->ss_idx.slots, e->ss_idx.slots ? ((size_t)e->ss_idx.mask + 1) * slot : 0},
        {e->us_raw, e->us_raw ? (size_t)e->us_cap * sizeof(struct user) + 64 : 0},
        {e->us_idx.slots, e->us_idx.slots ? ((size_t)e->us_idx.mask + 1) * slot : 0},
        {e->sh, (size_t)e->sh_cap * sizeof(struct shrt)},
        {e->shc, (size_t)e->sh_cap * sizeof(struct shrt_cold)},
        {e->cx, (size_t)e->cx_cap * sizeof(struct ctx)},
    };
    const uintptr_t page = 4096;
    uint64_t at = 0, left = 0;
    if (budget)
        budget = budget > page ? budget & ~(size_t)(page - 1) : page;
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        /* only whole pages inside the block (small blocks share theirs) */
        uintptr_t a = ((uintptr_t)tab[i].p + page - 1) & ~(page - 1);
        uintptr_t b = ((uintptr_t)tab[i].p + tab[i].n) & ~(page - 1);
        if (!tab[i].p || b <= a)
            continue;
        uint64_t n = b - a;
        if (*cursor < at + n) {
            uint64_t from = *cursor > at ? *cursor - at : 0, len = n - from;
            if (budget) {
                size_t step = len < budget ? (size_t)len : budget;
                mem_populate((void *)(a + from), step);
                budget -= step;
                *cursor = at + from + step;
                len -= step;
            }
            left += len;
        }
        at += n;
    }
    return (size_t)left;
}

int eng_restore_platform(struct eng *e, const struct eng_platform_view *v, struct eng_err *err)
{
    int rc = enter(e, PH_PLATFORM, err);
    if (rc)
        return rc;
    if (v->id != e->npl + 1)
        return fail_id(e, err, ENG_EINVAL, "platform", "ids must run 1, 2, 3, ...", v->id);
    if (!eng_platform_ok(v->name, v->len))
        return fail_id(e, err, ENG_EINVAL, "platform", "bad name", v->id);
    uint64_t h;
    if (eng_plat_find(e, v->name, v->len, &h))
        return fail_id(e, err, ENG_EINVAL, "platform", "duplicate name", v->id);
    if (e->npl >= ENG_PLATFORMS_MAX)
        return fail_id(e, err, ENG_ELIMIT, "platform", "too many distinct platforms", v->id);
    if (eng_reserve_platforms(e, 1))
        return fail(e, err, ENG_ENOMEM, "memory", "out of memory");
    eng_plat_new(e, h, v->name, v->len);
    return ENG_OK;
}

/* Make slot `id` of a slab exist (slots between the old end and id stay
 * free; their free list is built at finish). */
static int slab_place(struct eng *e, void **arr, uint32_t *cap, uint32_t *hi, uint32_t id,
                      size_t esz)
{
    if (id >= *cap) {
        uint64_t ncap = *cap ? *cap : 64;
        while (ncap <= id)
            ncap *= 2;
        if (ncap > UINT32_MAX)  /* ids stay below ENG_NONE - 1: the capacity must fit */
            ncap = UINT32_MAX;
        void *p = mem_realloc(&e->mem, MEM_OTHER, *arr, (size_t)*cap * esz, (size_t)ncap * esz);
        if (!p)
            return -1;
        memset((char *)p + (size_t)*cap * esz, 0, (size_t)(ncap - *cap) * esz);
        *arr = p;
        *cap = (uint32_t)ncap;
    }
    if (id >= *hi) {
        /* Slots between the old high-water mark and id were never used but
         * may hold garbage from a reserve: destroy and walks read them. */
        memset((char *)*arr + (size_t)*hi * esz, 0, (size_t)(id - *hi) * esz);
        *hi = id + 1;
    }
    return 0;
}

int eng_restore_ua(struct eng *e, const struct eng_ua_view *v, struct eng_err *err)
{
    int rc = enter(e, PH_UA, err);
    if (rc)
        return rc;
    if (v->id == 0 || v->id >= ENG_NONE - 1)
        return fail_id(e, err, ENG_EINVAL, "ua", "bad id", v->id);
    if (!v->ua || v->len == 0 || v->len > ENG_UA_MAX)
        return fail_id(e, err, ENG_EINVAL, "ua", "length must be 1..512", v->id);
    if (v->id < e->ua_hi && e->ua[v->id].s)
        return fail_id(e, err, ENG_EINVAL, "ua", "duplicate id", v->id);
    uint64_t h = eng_hash_bytes(v->ua, v->len);
    if (eng_ua_find(e, h, v->ua, v->len))
        return fail_id(e, err, ENG_EINVAL, "ua", "duplicate string", v->id);
    char *copy = mem_alloc(&e->mem, MEM_OTHER, v->len + 1);
    if (!copy || slab_place(e, (void **)&e->ua, &e->ua_cap, &e->ua_hi, v->id, sizeof(struct ua)) ||
        idx_reserve(&e->ua_idx, &e->mem, 1)) {
        mem_free(&e->mem, MEM_OTHER, copy, v->len + 1);
        return fail(e, err, ENG_ENOMEM, "memory", "out of memory");
    }
    memcpy(copy, v->ua, v->len);
    copy[v->len] = 0;
    eng_ua_init(e, v->id, h, copy, v->len);
    return ENG_OK;
}

int eng_restore_ctx(struct eng *e, const struct eng_ctx_view *v, struct eng_err *err)
{
    int rc = enter(e, e->rs_early ? PH_RINGS : PH_CTX, err);
    if (rc)
        return rc;
    if (v->id == 0 || v->id >= ENG_NONE - 1)
        return fail_id(e, err, ENG_EINVAL, "context", "bad id", v->id);
    if (v->id < e->cx_hi && e->cx[v->id].fam != CX_FREE)
        return fail_id(e, err, ENG_EINVAL, "context", "duplicate id", v->id);
    if (v->session && !eng_session_ok(v->session, v->session_len))
        return fail_id(e, err, ENG_EINVAL, "context", "bad session", v->id);
    if (!v->session && v->user == 0)
        return fail_id(e, err, ENG_EINVAL, "context", "needs a session or a user", v->id);
    if (v->ip_family != 0 && v->ip_family != 4 && v->ip_family != 6)
        return fail_id(e, err, ENG_EINVAL, "context", "ip family must be 0, 4 or 6", v->id);
    if (v->ua_id && (v->ua_id >= e->ua_hi || !e->ua[v->ua_id].s))
        return fail_id(e, err, ENG_EINVAL, "context", "unknown ua id", v->id);
    uint32_t old_hi = e->cx_hi;
    if (slab_place(e, (void **)&e->cx, &e->cx_cap, &e->cx_hi, v->id, sizeof(struct ctx)))
        return fail(e, err, ENG_ENOMEM, "memory", "out of memory");
    for (uint32_t i = old_hi; i < v->id; i++)
        e->cx[i].fam = CX_FREE;
    struct ctx *c = &e->cx[v->id];
    memset(c, 0, sizeof(*c));
    c->user = v->user;
    c->fam = v->ip_family;
    if (v->ip_family)
        memcpy(c->ip, v->ip, v->ip_family == 4 ? 4 : 16);
    c->slen = v->session ? (uint8_t)v->session_len : 0;
    if (c->slen)
        memcpy(c->sid, v->session, c->slen);
    c->ua = v->ua_id;
    if (c->ua)
        e->ua[c->ua].refs++;
    e->ncx++;
    return ENG_OK;
}

static int short_map_build(struct eng *e);

int eng_restore_short_ids(struct eng *e, const uint64_t *ids, size_t n, struct eng_err *err)
{
    int rc = enter(e, PH_SHORT_IDS, err);
    if (rc)
        return rc;
    if (e->rs_early)
        return fail(e, err, ENG_EINVAL, "short ids", "given twice");
    if (n > ENG_SHORTS_MAX)
        return failf(e, err, ENG_ELIMIT, "short ids: %zu, more than the engine holds (%llu)", n,
                     (unsigned long long)ENG_SHORTS_MAX);
    if (eng_reserve_shorts(e, n))
        return fail(e, err, ENG_ENOMEM, "memory", "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == 0)
            return fail_id(e, err, ENG_EINVAL, "short", "id must be at least 1", 0);
        if (idx_find(&e->sh_idx, ids[i]))
            return fail_id(e, err, ENG_EINVAL, "short", "duplicate id", ids[i]);
        eng_short_new(e, ids[i]);
    }
    e->rs_early = true;
    if (short_map_build(e))
        return fail(e, err, ENG_ENOMEM, "memory", "out of memory");
    return ENG_OK;
}

int eng_restore_short(struct eng *e, const struct eng_short_view *v, const uint64_t *viewers,
                      size_t nviewers, const uint64_t *savers, size_t nsavers,
                      struct eng_err *err)
{
    int rc = enter(e, e->rs_early ? PH_FILL : PH_SHORT, err);
    if (rc)
        return rc;
    uint64_t id = v->short_id;
    if (id == 0)
        return fail_id(e, err, ENG_EINVAL, "short", "id must be at least 1", id);
    if (e->rs_early ? e->rs_filled >= e->nsh || e->sid[e->rs_filled] != id
                    : idx_find(&e->sh_idx, id) != 0)
        return fail_id(e, err, ENG_EINVAL, "short",
                    e->rs_early ? "not the next of eng_restore_short_ids" : "duplicate id", id);
    if (v->count[ENG_T_SAVE] != nsavers)
        return fail_id(e, err, ENG_EINVAL, "short", "saves differ from its savers", id);
    if (eng_seen_wraps(v->count))
        return fail_id(e, err, ENG_EINVAL, "short", "impressions and views past 2^64", id);
    uint64_t seen = v->count[ENG_T_IMPRESSION] + v->count[ENG_T_VIEW];
    if (nviewers > seen || nviewers >= ((uint64_t)1 << 30) || nsavers >= ((uint64_t)1 << 30))
        return fail_id(e, err, ENG_EINVAL, "short", "more viewers than impressions and views", id);
    if (v->watch_n > v->count[ENG_T_VIEW])
        return fail_id(e, err, ENG_EINVAL, "short", "more watched views than views", id);
    if (eng_watch_bad(v->watch_sum, v->watch_n))
        return fail_id(e, err, ENG_EINVAL, "short", "watch time past watch_ms's bound", id);
    if (v->boost > ENG_BOOST_MAX)
        return fail_id(e, err, ENG_EINVAL, "short", "boost must be 0..100", id);
    if (v->last_ts < 0 || v->last_ts > ENG_TS_MAX)
        return fail_id(e, err, ENG_EINVAL, "short", "last_ts out of range", id);
    if (v->nplat > e->npl)
        return fail_id(e, err, ENG_EINVAL, "short", "more platforms than exist", id);
    const char *why = eng_plats_bad(e, v->plat_ids, v->plat_shares, v->nplat,
                                    v->count[ENG_T_SHARE]);
    if (why)
        return fail_id(e, err, ENG_EINVAL, "short", why, id);
    uint32_t ix;
    if (e->rs_early) {
        ix = e->rs_filled;   /* created empty by eng_restore_short_ids */
    } else {
        if (eng_reserve_shorts(e, 1))
            return fail(e, err, ENG_ENOMEM, "memory", "out of memory");
        ix = eng_short_new(e, id);
    }
    struct shrt *s = &e->sh[ix];
    struct shrt_cold *c = &e->shc[ix];
    memcpy(s->count, v->count, sizeof(s->count));
    s->watch_sum = v->watch_sum;
    s->watch_n = v->watch_n;
    s->boost = (uint8_t)v->boost;
    s->last_ts = v->last_ts;
    if (vset_reserve(&s->viewers, &e->vh, eng_set_owner(ix, false), (uint32_t)nviewers) ||
        vset_reserve(&s->savers, &e->vh, eng_set_owner(ix, true), (uint32_t)nsavers) ||
        (v->nplat && eng_reserve_plat_slots(e, c, (uint32_t)v->nplat)))
        return fail(e, err, ENG_ENOMEM, "memory", "out of memory");
    for (size_t i = 0; i < nviewers; i++)
        if (viewers[i] == 0 || !vset_add(&s->viewers, viewers[i]))
            return fail_id(e, err, ENG_EINVAL, "short", "zero or duplicate viewer", id);
    for (size_t i = 0; i < nsavers; i++)
        if (savers[i] == 0 || !vset_add(&s->savers, savers[i]))
            return fail_id(e, err, ENG_EINVAL, "short", "zero or duplicate saver", id);
    for (size_t i = 0; i < v->nplat; i++) {
        c->plat_ids[i] = v->plat_ids[i];
        c->plat_shares[i] = v->plat_shares[i];
    }
    c->nplat = (uint32_t)v->nplat;
    e->viewer_pairs += nviewers;
    eng_mark_dirty(e, ix);
    if (e->rs_early)
        e->rs_filled++;
    return ENG_OK;
}

/*
 * Every restored record names its short by id, and the short index is a
 * table of 16-byte slots (4 MiB at 100k shorts): looking each record's
 * short up there was a cache miss per record, two thirds of
 * eng_restore_ring's own time at 2M interactions. Short ids are usually
 * handed out 1, 2, 3, ..., so while rings are restored a plain array by
 * id (4 bytes a possible id) answers instead and mostly stays in cache.
 * Built on the first ring (by eng_restore_short_ids when it is used),
 * freed at finish or by eng_destroy; sparse ids keep using the index.
 */
static int short_map_build(struct eng *e)
{
    uint64_t max = 0;
    for (uint32_t i = 0; i < e->nsh; i++)
        if (e->sid[i] > max)
            max = e->sid[i];
    if (e->nsh == 0 || max >= 4 * (uint64_t)e->nsh + 1024)
        return 0;
    uint32_t *d = mem_calloc(&e->mem, MEM_OTHER, (size_t)(max + 1) * sizeof(*d));
    if (!d)
        return -1;
    for (uint32_t i = 0; i < e->nsh; i++)
        d[e->sid[i]] = i + 1;
    e->rs_dense = d;
    e->rs_dense_n = max + 1;
    return 0;
}

static void short_map_free(struct eng *e)
{
    mem_free(&e->mem, MEM_OTHER, e->rs_dense, e->rs_dense_n * sizeof(uint32_t));
    e->rs_dense = NULL;
    e->rs_dense_n = 0;
}

/* Index + 1 of short `id`, 0 when there is none. */
static inline uint32_t short_find(const struct eng *e, uint64_t id)
{
    if (e->rs_dense)
        return id < e->rs_dense_n ? e->rs_dense[id] : 0;
    return idx_find(&e->sh_idx, id);
}

/* The first few records are enough: most rings hold one to three. */
void eng_restore_ring_prefetch(const struct eng *e, const struct eng_ring_view *v,
                               const struct eng_rec_view *recs)
{
    size_t n = v->nrecs < 4 ? v->nrecs : 4;
    for (size_t i = 0; i < n; i++) {
        uint64_t id = recs[i].short_id;
        if (e->rs_dense && id < e->rs_dense_n)
            __builtin_prefetch(&e->rs_dense[id]);
        if (recs[i].ctx_id && recs[i].ctx_id < e->cx_hi)
            __builtin_prefetch(&e->cx[recs[i].ctx_id]);
    }
}

static int check_rec(const struct eng *e, const struct eng_ring_view *v,
                     const struct eng_rec_view *r, uint32_t *six, const char **why)
{
    uint32_t sv = r->short_id ? short_find(e, r->short_id) : 0;
    *why = NULL;
    if (r->type >= ENG_T_COUNT)
        *why = "record with an unknown type";
    else if (!sv)
        *why = "record of an unknown short";
    else if (r->ts < 0 || r->ts > ENG_TS_MAX)
        *why = "record ts out of range";
    else if (r->has_watch ? (r->type != ENG_T_VIEW || r->watch_ms > ENG_WATCH_MAX) : r->watch_ms != 0)
        *why = "record with a bad watch_ms";
    else if (r->platform_id && (r->type != ENG_T_SHARE || r->platform_id > e->npl))
        *why = "record with a bad platform";
    else if (!v->is_user && r->ctx_id == 0)
        *why = "session record without a context";  /* the session's id lives there */
    else if (r->ctx_id && (r->ctx_id >= e->cx_hi || e->cx[r->ctx_id].fam == CX_FREE))
        *why = "record of an unknown context";
    else if (r->ctx_id) {
        const struct ctx *c = &e->cx[r->ctx_id];
        if (v->is_user ? c->user != v->user
                       : (c->slen != v->session_len || memcmp(c->sid, v->session, c->slen) != 0))
            *why = "record whose context is not this ring's";
    }
    *six = sv ? sv - 1 : 0;
    return *why ? -1 : 0;
}

/*
 * Sessions and users are placed during restore but indexed only at finish.
 * Probing ss_idx or us_idx once per ring (for the duplicate check, then the
 * insert) is a random access into a table of several to tens of MB -- at
 * 2M interactions the largest single cost of a load, which prefetching a
 * few rings ahead did not hide on our VMs. index_build instead inserts
 * every key in order of its home slot, so each table is written front to
 * back; two rings of one session or user share a key and so meet in one
 * probe run there.
 */

/* eng_sess_new and eng_user_new without the index insert (keep in step). */
static uint32_t sess_place(struct eng *e, uint64_t hash, size_t len, int64_t last_seen)
{
    uint32_t si = eng_slab_take(e->ss, sizeof(*e->ss), offsetof(struct sess, bctx), &e->ss_free,
                                &e->ss_nfree, &e->ss_hi, ENG_NONE);
    struct sess *ss = &e->ss[si];
    memset(ss, 0, sizeof(*ss));
    ss->last_seen = last_seen;
    ss->hash = hash;
    ss->slen = (uint8_t)len;
    e->nss++;
    return si;
}

static uint32_t user_place(struct eng *e, uint64_t id, int64_t last_seen)
{
    uint32_t ui = e->nus++;
    struct user *u = &e->us[ui];
    memset(u, 0, sizeof(*u));
    u->id = id;
    u->last_seen = last_seen;
    return ui;
}

/* Slot i of the user or session table: its index key, or false if free. */
static inline bool table_key(const struct eng *e, bool users, uint32_t i, uint64_t *key)
{
    if (users) {
        *key = e->us[i].id;
        return true;
    }
    *key = e->ss[i].hash;
    return e->ss[i].slen != 0;
}

/* Two entries with one key: the same user always; the same session only if
 * the ids match too (different ids may share a fingerprint). */
static bool same_entry(const struct eng *e, bool users, uint32_t a, uint32_t b)
{
    if (users)
        return true;
    const struct sess *x = &e->ss[a], *y = &e->ss[b];
    return x->slen == y->slen && memcmp(eng_sess_id(e, x), eng_sess_id(e, y), x->slen) == 0;
}

static int index_build(struct eng *e, bool users, struct eng_err *err)
{
    struct idx *t = users ? &e->us_idx : &e->ss_idx;
    uint32_t n = users ? e->nus : e->nss, hi = users ? e->nus : e->ss_hi;
    if (n == 0)
        return ENG_OK;
    if (idx_reserve(t, &e->mem, n))
        return fail(e, err, ENG_ENOMEM, "memory", "out of memory");
    /* Counting sort by home slot, in buckets of a few slots' worth. */
    uint32_t cap = t->mask + 1, shift = 0;
    while ((cap >> shift) > 65536)
        shift++;
    uint32_t nb = cap >> shift, ncnt = (nb + 2) & ~1u;  /* keys stay 8-aligned */
    size_t bytes = (size_t)ncnt * sizeof(uint32_t) + (size_t)n * (sizeof(uint64_t) + sizeof(uint32_t));
    uint32_t *cnt = mem_alloc(&e->mem, MEM_OTHER, bytes);
    if (!cnt)
        return fail(e, err, ENG_ENOMEM, "memory", "out of memory");
    uint64_t *keys = (uint64_t *)(cnt + ncnt), key;
    uint32_t *ids = (uint32_t *)(keys + n);
    memset(cnt, 0, (size_t)ncnt * sizeof(uint32_t));
    for (uint32_t i = 0; i < hi; i++)
        if (table_key(e, users, i, &key))
            cnt[(idx_home(t, key) >> shift) + 1]++;
    for (uint32_t b = 1; b < nb; b++)
        cnt[b] += cnt[b - 1];
    for (uint32_t i = 0; i < hi; i++)
        if (table_key(e, users, i, &key)) {
            uint32_t k = cnt[idx_home(t, key) >> shift]++;
            keys[k] = key;
            ids[k] = i;
        }
    int rc = ENG_OK;
    for (uint32_t k = 0; k < n && rc == ENG_OK; k++) {
        struct idx_walk w = idx_walk_start(t, keys[k]);
        for (uint32_t v; rc == ENG_OK && (v = idx_walk_next(t, keys[k], &w));)
            if (same_entry(e, users, ids[k], v - 1))
                rc = users ? fail_id(e, err, ENG_EINVAL, "user", "duplicate", keys[k])
                           : fail_sess(e, err, eng_sess_id(e, &e->ss[ids[k]]), e->ss[ids[k]].slen,
                                       "duplicate");
        if (rc == ENG_OK)
            idx_put(t, keys[k], ids[k]);  /* the run just walked is in cache */
    }
    mem_free(&e->mem, MEM_OTHER, cnt, bytes);
    return rc;
}

int eng_restore_ring(struct eng *e, const struct eng_ring_view *v, const struct eng_rec_view *recs,
                     struct eng_err *err)
{
    bool first = !e->rs_early && e->restore_phase != PH_RING;  /* early: built already */
    int rc = enter(e, e->rs_early ? PH_RINGS : PH_RING, err);
    if (rc)
        return rc;
    if (first && short_map_build(e))
        return fail(e, err, ENG_ENOMEM, "memory", "out of memory");
    uint64_t h = 0;
    if (v->last_seen_ms < 0 || v->last_seen_ms > ENG_TS_MAX)  /* the TTL check subtracts it */
        return fail_ring(e, err, v, "last_seen out of range");
    if (v->is_user) {
        if (v->user == 0)
            return fail_id(e, err, ENG_EINVAL, "user", "id must be at least 1", 0);
        /* duplicates are found when finish indexes the users */
    } else {
        if (!eng_session_ok(v->session, v->session_len))
            return fail(e, err, ENG_EINVAL, "session", "bad id");
        if (v->nrecs == 0)  /* a session's id lives in its records' context */
            return fail_ring(e, err, v, "with no records");
        h = eng_fp_session(v->session, v->session_len);
        /* duplicates are found when finish indexes the sessions */
    }
    size_t skip = v->nrecs > e->history ? v->nrecs - e->history : 0;
    uint32_t six;
    const char *why;
    /* Records past the history are checked here; the kept ones as they are
     * pushed, so each short is looked up once (a failure part-way leaves
     * the engine broken, as every restore error does). */
    for (size_t i = 0; i < skip; i++)
        if (check_rec(e, v, &recs[i], &six, &why))
            return fail_ring(e, err, v, why);
    uint32_t keep = (uint32_t)(v->nrecs - skip);
    struct ring *r;
    uint32_t *last_ctx;
    uint64_t *sig;
    if (v->is_user) {
        if (eng_reserve_users(e, 1))
            return fail(e, err, ENG_ENOMEM, "memory", "out of memory");
        struct user *u = &e->us[user_place(e, v->user, v->last_seen_ms)];
        r = &u->ring;
        last_ctx = &u->last_ctx;
        sig = &u->sig;
    } else {
        if (eng_reserve_sessions(e, 1))
            return fail(e, err, ENG_ENOMEM, "memory", "out of memory");
        struct sess *ss = &e->ss[sess_place(e, h, v->session_len, v->last_seen_ms)];
        r = &ss->ring;
        last_ctx = &ss->last_ctx;
        sig = &ss->sig;
    }
    if (keep && ring_reserve(r, &e->mem, keep, e->history))
        return fail(e, err, ENG_ENOMEM, "memory", "out of memory");
    for (size_t i = 0; i < skip; i++)
        if (recs[i].ctx_id)
            e->cx[recs[i].ctx_id].flags |= CX_DROPPED;
    for (size_t i = skip; i < v->nrecs; i++) {
        const struct eng_rec_view *rv = &recs[i];
        if (check_rec(e, v, rv, &six, &why))
            return fail_ring(e, err, v, why);
        struct rec rec = rec_make(rv->ts, six, rv->ctx_id, rv->type, rv->has_watch, rv->watch_ms,
                                  (uint16_t)rv->platform_id);
        struct rec old;
        ring_push(r, &rec, &old);
        if (rec.ctx) {
            if (v->is_user)
                e->cx[rec.ctx].ru++;
            else
                e->cx[rec.ctx].rs++;
        }
        e->records++;
    }
    *last_ctx = r->len ? ring_newest(r, 0)->ctx : 0;
    *sig = *last_ctx ? eng_ctx_sig_of(e, *last_ctx) : 0;
    return ENG_OK;
}

int eng_restore_finish(struct eng *e, const struct eng_totals *t, struct eng_err *err)
{
    int rc = enter(e, PH_DONE, err);
    if (rc)
        return rc;
    short_map_free(e);
    if (e->rs_early && e->rs_filled != e->nsh)
        return fail_id(e, err, ENG_EINVAL, "short", "restored without its data", e->sid[e->rs_filled]);
    if ((rc = index_build(e, false, err)) || (rc = index_build(e, true, err)))
        return rc;
    uint64_t sum = 0;
    for (int i = 0; i < ENG_T_COUNT; i++)
        sum += t->by_type[i];
    if (sum != t->interactions)
        return failf(e, err, ENG_EINVAL, "totals: by-type counts add up to %llu, not %llu",
                     (unsigned long long)sum, (unsigned long long)t->interactions);
    for (uint32_t id = 1; id < e->ua_hi; id++)
        if (e->ua[id].s && e->ua[id].refs == 0)
            return fail_id(e, err, ENG_EINVAL, "ua", "not used by any context", id);
    for (uint32_t id = 1; id < e->cx_hi; id++) {
        struct ctx *c = &e->cx[id];
        if (c->fam == CX_FREE)
            continue;
        if (c->rs == 0 && c->ru == 0) {
            if (!(c->flags & CX_DROPPED))
                return fail_id(e, err, ENG_EINVAL, "context", "not used by any record", id);
            eng_ctx_destroy(e, id);
        }
        c->flags = 0;
    }
    /* Free lists over the holes the restored ids left. */
    e->cx_free = 0;
    e->cx_nfree = 0;
    for (uint32_t id = e->cx_hi; id-- > 1;)
        if (e->cx[id].fam == CX_FREE)
            eng_slab_put(e->cx, sizeof(*e->cx), offsetof(struct ctx, ua), &e->cx_free, &e->cx_nfree,
                         id);
    e->ua_free = 0;
    e->ua_nfree = 0;
    for (uint32_t id = e->ua_hi; id-- > 1;)
        if (!e->ua[id].s)
            eng_slab_put(e->ua, sizeof(*e->ua), offsetof(struct ua, refs), &e->ua_free, &e->ua_nfree,
                         id);
    e->interactions = t->interactions;
    memcpy(e->by_type, t->by_type, sizeof(e->by_type));
    e->sessions_evicted = t->sessions_evicted;
    e->now = eng_now(e);
    e->evict_cur = 0;
    return ENG_OK;
}
