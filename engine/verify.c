/* SPDX-License-Identifier: MIT */
/*
 * verify.c -- eng_verify: recompute every derived number from the tables
 * and compare (libev's ev_verify, SQLite's assert-only helpers). O(size of
 * the engine) and allocates scratch with plain malloc; for tests.
 *
 * Checked: each index maps exactly its live entries; viewer/saver sets
 * respect their load rule, hold no duplicates, find every member, and
 * count[SAVE] == savers; the slab heap holds exactly the small tables,
 * each owned by the set that points at it; rings respect len <= cap <=
 * history; context and user agent refcounts equal the references actually
 * held; free lists cover exactly the free slots; totals (records, viewer
 * pairs, interactions by type, sessions) match; each column's dirty list is
 * exact and every clean short's materialised columns hold its current
 * values; memory accounting equals what the tables hold.
 */
#include "engine/eng_int.h"

#include <stdlib.h>
#include <string.h>

#define BAD(...)                                  \
    do {                                          \
        eng_errf(err, -1, __VA_ARGS__);           \
        rc = ENG_EINVAL;                          \
        goto out;                                 \
    } while (0)

static int check_set(const struct vset *s, uint64_t *bytes, uint64_t *nslab)
{
    if (s->cap == 0)
        return s->n == 0 && s->slots == NULL ? 0 : -1;
    if (s->cap <= VSET_SLAB_MAX)
        ++*nslab;
    if (!vset_fits(s->n, s->cap))
        return -1;
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->cap; i++) {
        if (!s->slots[i])
            continue;
        n++;
        if (!vset_has(s, s->slots[i]))
            return -1;
        /* no duplicate: the probe from its home must reach this slot first */
        uint32_t j = vset_home(s->slots[i], s->cap);
        while (s->slots[j] != s->slots[i])
            j = j + 1 == s->cap ? 0 : j + 1;
        if (j != i)
            return -1;
    }
    *bytes += (uint64_t)s->cap * sizeof(uint64_t);
    return n == s->n ? 0 : -1;
}

/* Every field within range, and arg holding what the type allows. */
static bool rec_ok(const struct eng *e, const struct rec *r)
{
    uint8_t t = rec_type(r);
    if (r->ctx >= e->cx_hi || r->short_ix >= e->nsh || rec_ts(r) > ENG_TS_MAX)
        return false;
    if (rec_has_watch(r))
        return t == ENG_T_VIEW && r->arg <= ENG_WATCH_MAX;
    return r->arg == 0 || (t == ENG_T_SHARE && r->arg <= e->npl);
}

static int check_ring(const struct eng *e, const struct ring *r, uint64_t *bytes)
{
    if (r->len > r->cap || r->cap > e->history)
        return -1;
    if (r->cap && r->start >= r->cap)
        return -1;
    if (r->cap < e->history && r->start != 0)
        return -1;
    if ((r->cap == 0) != (r->recs == NULL))
        return -1;
    *bytes += (uint64_t)r->cap * sizeof(struct rec);
    return 0;
}

static int check_idx(const struct idx *t)
{
    return idx_check(t);
}

int eng_verify(const struct eng *e, struct eng_err *err)
{
    int rc = ENG_OK;
    uint32_t *rs = calloc(e->cx_hi + 1, sizeof(uint32_t));
    uint32_t *ru = calloc(e->cx_hi + 1, sizeof(uint32_t));
    uint32_t *uar = calloc(e->ua_hi + 1, sizeof(uint32_t));
    uint16_t *seen = calloc(e->nsh + 1, sizeof(uint16_t));
    if (!rs || !ru || !uar || !seen)
        BAD("verify: out of memory");
    if (err) {
        err->index = -1;
        err->msg[0] = 0;
    }
    uint64_t mviewers = 0, mrecords = 0, pairs = 0, records = 0, nslab = 0;

    if (check_idx(&e->sh_idx) || check_idx(&e->ss_idx) || check_idx(&e->us_idx) ||
        check_idx(&e->ua_idx) || check_idx(&e->pl_idx))
        BAD("index: occupancy does not match its count");

    /* shorts */
    if (e->sh_idx.n != e->nsh)
        BAD("shorts: index holds %u, table %u", e->sh_idx.n, e->nsh);
    for (int m = 0; m < ENG_M_COUNT; m++) {
        uint16_t bit = (uint16_t)(1u << m);
        if (!!e->col[m] != !!(e->colmask & bit) || (!e->col[m] && e->ndirty[m]))
            BAD("column %s: mask and table disagree", eng_metric_name((enum eng_metric)m));
        for (uint32_t d = 0; d < e->ndirty[m]; d++) {
            uint32_t ix = e->dirty[m][d];
            if (ix >= e->nsh || (seen[ix] & bit) || !(e->sh[ix].cdirty & bit))
                BAD("column %s: dirty list entry %u is wrong", eng_metric_name((enum eng_metric)m), ix);
            seen[ix] |= bit;
        }
    }
    for (uint32_t i = 0; i < e->nsh; i++) {
        const struct shrt *s = &e->sh[i];
        const struct shrt_cold *c = &e->shc[i];
        if (idx_find(&e->sh_idx, e->sid[i]) != i + 1)
            BAD("short %llu: not found by its id", (unsigned long long)e->sid[i]);
        if (check_set(&s->viewers, &mviewers, &nslab))
            BAD("short %llu: viewer set broken", (unsigned long long)e->sid[i]);
        if (check_set(&s->savers, &mviewers, &nslab))
            BAD("short %llu: saver set broken", (unsigned long long)e->sid[i]);
        if (s->count[ENG_T_SAVE] != s->savers.n)
            BAD("short %llu: saves %llu but %u savers", (unsigned long long)e->sid[i],
                (unsigned long long)s->count[ENG_T_SAVE], s->savers.n);
        if (eng_seen_wraps(s->count) ||
            s->viewers.n > s->count[ENG_T_IMPRESSION] + s->count[ENG_T_VIEW])
            BAD("short %llu: more viewers than impressions and views, or their sum wraps",
                (unsigned long long)e->sid[i]);
        if (eng_watch_bad(s->watch_sum, s->watch_n))
            BAD("short %llu: watch time past watch_ms's bound", (unsigned long long)e->sid[i]);
        if (s->watch_n > s->count[ENG_T_VIEW])
            BAD("short %llu: more watched views than views", (unsigned long long)e->sid[i]);
        if (s->boost > ENG_BOOST_MAX)
            BAD("short %llu: boost out of range", (unsigned long long)e->sid[i]);
        if (c->pend_v || c->pend_s || c->pend_p)
            BAD("short %llu: batch scratch left set", (unsigned long long)e->sid[i]);
        if (c->nplat > c->plat_cap || c->nplat > e->pc_cap)
            BAD("short %llu: platform list over capacity", (unsigned long long)e->sid[i]);
        const char *why = eng_plats_bad(e, c->plat_ids, c->plat_shares, c->nplat,
                                        s->count[ENG_T_SHARE]);
        if (why)
            BAD("short %llu: %s", (unsigned long long)e->sid[i], why);
        if (s->cdirty != seen[i])
            BAD("short %llu: dirty bits not matching the lists", (unsigned long long)e->sid[i]);
        for (int m = 0; m < ENG_M_COUNT; m++)
            if (e->col[m] && !(s->cdirty & (1u << m)) &&
                e->col[m][i] != eng_metric_value(e, i, (enum eng_metric)m))
                    BAD("short %llu: column %s is stale", (unsigned long long)e->sid[i],
                        eng_metric_name((enum eng_metric)m));
        pairs += s->viewers.n;
    }
    if (pairs != e->viewer_pairs)
        BAD("viewer pairs: counted %llu, tables hold %llu", (unsigned long long)e->viewer_pairs,
            (unsigned long long)pairs);

    /* sessions */
    uint32_t live = 0, nfree = 0;
    for (uint32_t i = 0; i < e->ss_hi; i++) {
        const struct sess *ss = &e->ss[i];
        if (!ss->slen)
            continue;
        live++;
        const char *sid = eng_sess_id(e, ss);
        if (!sid || ss->last_ctx >= e->cx_hi || e->cx[ss->last_ctx].slen != ss->slen)
            BAD("session slot %u: no context carries its id", i);
        if (eng_sess_find(e, ss->hash, sid, ss->slen) != i || ss->hash != eng_fp_session(sid, ss->slen))
            BAD("session %.*s: not found by its id", (int)ss->slen, sid);
        if (ss->pend || ss->flags)
            BAD("session %.*s: batch scratch left set", (int)ss->slen, sid);
        if (check_ring(e, &ss->ring, &mrecords))
            BAD("session %.*s: ring broken", (int)ss->slen, sid);
        if (ss->last_ctx != (ss->ring.len ? ring_newest(&ss->ring, 0)->ctx : 0) ||
            (ss->last_ctx && ss->sig != eng_ctx_sig_of(e, ss->last_ctx)))
            BAD("session %.*s: last context or its signature is stale", (int)ss->slen, sid);
        records += ss->ring.len;
        for (uint32_t k = 0; k < ss->ring.len; k++) {
            const struct rec *r = ring_oldest(&ss->ring, k);
            if (!rec_ok(e, r))
                BAD("session %.*s: record out of range", (int)ss->slen, sid);
            const struct ctx *c = &e->cx[r->ctx];
            if (r->ctx && (c->slen != ss->slen || memcmp(c->sid, sid, ss->slen)))
                BAD("session %.*s: record's context is another's", (int)ss->slen, sid);
            rs[r->ctx]++;
        }
    }
    for (uint32_t i = e->ss_free; i != ENG_NONE; i = e->ss[i].bctx) {
        if (i >= e->ss_hi || e->ss[i].slen || ++nfree > e->ss_hi)
            BAD("sessions: free list broken");
    }
    if (live != e->nss || live != e->ss_idx.n || nfree != e->ss_nfree || live + nfree != e->ss_hi)
        BAD("sessions: %u live, %u free, counted %u and %u of %u", live, nfree, e->nss,
            e->ss_nfree, e->ss_hi);

    /* users */
    if (e->us_idx.n != e->nus)
        BAD("users: index holds %u, table %u", e->us_idx.n, e->nus);
    for (uint32_t i = 0; i < e->nus; i++) {
        const struct user *u = &e->us[i];
        if (idx_find(&e->us_idx, u->id) != i + 1)
            BAD("user %llu: not found by its id", (unsigned long long)u->id);
        if (u->pend)
            BAD("user %llu: batch scratch left set", (unsigned long long)u->id);
        if (check_ring(e, &u->ring, &mrecords))
            BAD("user %llu: ring broken", (unsigned long long)u->id);
        if (u->last_ctx != (u->ring.len ? ring_newest(&u->ring, 0)->ctx : 0) ||
            (u->last_ctx && u->sig != eng_ctx_sig_of(e, u->last_ctx)))
            BAD("user %llu: last context or its signature is stale", (unsigned long long)u->id);
        records += u->ring.len;
        for (uint32_t k = 0; k < u->ring.len; k++) {
            const struct rec *r = ring_oldest(&u->ring, k);
            if (!rec_ok(e, r))
                BAD("user %llu: record out of range", (unsigned long long)u->id);
            if (r->ctx && e->cx[r->ctx].user != u->id)
                BAD("user %llu: record's context is another's", (unsigned long long)u->id);
            ru[r->ctx]++;
        }
    }
    if (records != e->records)
        BAD("records: counted %llu, rings hold %llu", (unsigned long long)e->records,
            (unsigned long long)records);

    /* contexts */
    live = nfree = 0;
    for (uint32_t id = 1; id < e->cx_hi; id++) {
        const struct ctx *c = &e->cx[id];
        if (c->fam == CX_FREE) {
            if (rs[id] || ru[id])
                BAD("context %u: freed but referenced", id);
            continue;
        }
        live++;
        if (c->rs != rs[id] || c->ru != ru[id])
            BAD("context %u: refs %u/%u, records hold %u/%u", id, c->rs, c->ru, rs[id], ru[id]);
        if (c->rs == 0 && c->ru == 0)
            BAD("context %u: live with no references", id);
        if (c->fam != 0 && c->fam != 4 && c->fam != 6)
            BAD("context %u: bad ip family", id);
        if (c->ua >= e->ua_hi || (c->ua && !e->ua[c->ua].s))
            BAD("context %u: bad ua", id);
        if (c->flags)
            BAD("context %u: restore flag left set", id);
        uar[c->ua]++;
    }
    for (uint32_t id = e->cx_free; id; id = e->cx[id].ua)
        if (id >= e->cx_hi || e->cx[id].fam != CX_FREE || ++nfree > e->cx_hi)
            BAD("contexts: free list broken");
    if (live != e->ncx || nfree != e->cx_nfree || (e->cx_hi > 1 && live + nfree + 1 != e->cx_hi))
        BAD("contexts: %u live, %u free, counted %u and %u", live, nfree, e->ncx, e->cx_nfree);

    /* user agents */
    live = nfree = 0;
    for (uint32_t id = 1; id < e->ua_hi; id++) {
        const struct ua *u = &e->ua[id];
        if (!u->s)
            continue;
        live++;
        if (u->refs != uar[id] || u->refs == 0)
            BAD("ua %u: refs %u, contexts hold %u", id, u->refs, uar[id]);
        if (u->hash != eng_hash_bytes(u->s, u->len) || eng_ua_find(e, u->hash, u->s, u->len) != id)
            BAD("ua %u: not found by its bytes", id);
    }
    for (uint32_t id = e->ua_free; id; id = e->ua[id].refs)
        if (id >= e->ua_hi || e->ua[id].s || ++nfree > e->ua_hi)
            BAD("uas: free list broken");
    if (live != e->nua || live != e->ua_idx.n || nfree != e->ua_nfree)
        BAD("uas: %u live, %u free, counted %u and %u", live, nfree, e->nua, e->ua_nfree);

    /* platforms */
    if (e->pl_idx.n != e->npl)
        BAD("platforms: index holds %u, table %u", e->pl_idx.n, e->npl);
    for (uint32_t id = 1; id <= e->npl; id++) {
        uint64_t h;
        if (eng_plat_find(e, e->pl[id].name, e->pl[id].len, &h) != id ||
            !eng_platform_ok(e->pl[id].name, e->pl[id].len))
            BAD("platform %u: not found by its name", id);
    }

    /* totals and memory */
    uint64_t sum = 0;
    for (int t = 0; t < ENG_T_COUNT; t++)
        sum += e->by_type[t];
    if (sum != e->interactions)
        BAD("interactions: %llu, by type %llu", (unsigned long long)e->interactions,
            (unsigned long long)sum);
    if (vheap_verify(&e->vh, (uint64_t)e->nsh * 2) != (int64_t)nslab)
        BAD("sets: slab heap does not hold exactly the %llu small tables",
            (unsigned long long)nslab);
    if (mviewers != e->mem.bytes[MEM_VIEWERS])
        BAD("memory: viewers accounted %llu, sets hold %llu",
            (unsigned long long)e->mem.bytes[MEM_VIEWERS], (unsigned long long)mviewers);
    if (mrecords != e->mem.bytes[MEM_RECORDS])
        BAD("memory: records accounted %llu, rings hold %llu",
            (unsigned long long)e->mem.bytes[MEM_RECORDS], (unsigned long long)mrecords);
out:
    free(rs);
    free(ru);
    free(uar);
    free(seen);
    return rc;
}

/* ---- test hooks (engine/eng_test.h) --------------------------------------- */

#include "engine/eng_test.h"

void eng_test_fail_alloc(struct eng *e, uint64_t nth)
{
    e->mem.fail_at = nth ? e->mem.nallocs + nth : 0;
    e->mem.fail_after = false;
}

void eng_test_fail_allocs_from(struct eng *e, uint64_t nth)
{
    eng_test_fail_alloc(e, nth);
    e->mem.fail_after = nth != 0;
}

uint64_t eng_test_allocs(const struct eng *e)
{
    return e->mem.nallocs;
}

int eng_test_break(struct eng *e, int what)
{
    switch (what) {
    case 0:  /* a short's save count no longer its savers */
        if (!e->nsh)
            return -1;
        e->sh[0].count[ENG_T_SAVE]++;
        return 0;
    case 1:  /* the records total */
        e->records++;
        return 0;
    case 2:  /* a context's reference count */
        for (uint32_t id = 1; id < e->cx_hi; id++) {
            if (e->cx[id].fam != CX_FREE) {
                e->cx[id].rs++;
                return 0;
            }
        }
        return -1;
    case 3:  /* impressions + views past 2^64 */
        if (!e->nsh)
            return -1;
        e->sh[0].count[ENG_T_IMPRESSION] = UINT64_MAX;
        e->sh[0].count[ENG_T_VIEW]++;
        return 0;
    case 4:  /* watch time with no watched view */
        if (!e->nsh)
            return -1;
        e->sh[0].watch_sum++;
        return 0;
    case 5:  /* a platform's shares past the short's */
        if (!e->nsh || !e->shc[0].nplat)
            return -1;
        e->shc[0].plat_shares[0] = e->sh[0].count[ENG_T_SHARE] + 1;
        return 0;
    case 6:  /* a platform listed with no shares */
        if (!e->nsh || !e->shc[0].nplat)
            return -1;
        e->shc[0].plat_shares[0] = 0;
        return 0;
    default:
        return -1;
    }
}
