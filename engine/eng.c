/* SPDX-License-Identifier: MIT */
/*
 * eng.c -- the engine: recording, queries, top-k, eviction.
 *
 * Tables are described in eng_int.h. Recording is two-phase so that an
 * interaction or a whole batch is all-or-nothing even when memory runs out:
 *
 *   validate  every element, against the rules in eng.h; nothing touched.
 *   plan      per element: find or create the short, session, user,
 *             platform, user agent and context it needs, and reserve room
 *             for everything the apply will add (viewer/saver set slots,
 *             platform slots, ring slots). Growth of an existing table is
 *             invisible; each created entity is logged, and the context is
 *             pinned (its refcount raised for the records it will get).
 *             Per-entity batch scratch (pend_*, bctx, SS_RESET) lets later
 *             elements of a batch see what earlier ones planned.
 *             On failure: undo the log in reverse, unpin, clear scratch.
 *   apply     counters, set inserts, ring pushes: nothing here can fail.
 *
 * Contexts: the who-and-where of a record (session, user, ip, ua) is
 * interned per session/user. Sessions rarely change ip or ua, so a new
 * interaction first compares its signature (eng_ctx_sig) with the one the
 * session (or user) keeps for its newest record's context and reuses that
 * context without reading it; failing that it compares exactly against the
 * contexts planned earlier in the batch and of the last CTX_SCAN records of
 * its ring; only a new tuple allocates. A context belongs to one session
 * (or to one user when it has no session), so no global index is needed: a
 * duplicate tuple is merely a lost saving.
 *
 * Top-k: per-metric columns refreshed from per-column dirty lists at query
 * time (eng_int.h); recording only appends a short to the lists it is not
 * on yet. One pass over the column with a k-heap, never a sort of all.
 *
 * Eviction: a session idle longer than the TTL (engine clock, last_seen =
 * clock at its last record) is logically gone at once -- history answers
 * empty, walks skip it, and its next interaction starts a fresh ring,
 * counted as an eviction. Physical removal is incremental: a cursor
 * examines EVICT_PER_RECORD slots per recorded interaction and `budget`
 * per eng_tick. Users are never evicted.
 */
#include "engine/eng_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "engine/score.h"

#define CTX_SCAN 4            /* newest records whose context a new one may reuse */
#define EVICT_PER_RECORD 2    /* session slots the cursor examines per interaction */

/* ---- names ----------------------------------------------------------------- */

static const char *const type_names[ENG_T_COUNT] = {
    "impression", "view", "skip", "save", "share", "contact", "whatsapp", "book_viewing",
};

static const char *const metric_names[ENG_M_COUNT] = {
    "score", "view_count", "unique_viewers", "saves", "shares", "engagement_rate",
    "avg_watch_ms", "impressions", "views", "skips", "contacts", "whatsapps",
    "book_viewings", "boost", "last_ts",
};

const char *eng_type_name(enum eng_type t)
{
    return (unsigned)t < ENG_T_COUNT ? type_names[t] : "unknown";
}

static int parse_name(const char *const *names, int n, const char *s, size_t len)
{
    if (!s)
        return -1;
    for (int i = 0; i < n; i++)
        if (strlen(names[i]) == len && strncasecmp(names[i], s, len) == 0)
            return i;
    return -1;
}

int eng_type_parse(const char *s, size_t len)
{
    return parse_name(type_names, ENG_T_COUNT, s, len);
}

const char *eng_metric_name(enum eng_metric m)
{
    return (unsigned)m < ENG_M_COUNT ? metric_names[m] : "unknown";
}

int eng_metric_parse(const char *s, size_t len)
{
    return parse_name(metric_names, ENG_M_COUNT, s, len);
}

/* ---- small helpers ---------------------------------------------------------------- */

void eng_verrf(struct eng_err *err, int32_t index, const char *fmt, va_list ap)
{
    if (!err)
        return;
    err->index = index;
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
}

void eng_errf(struct eng_err *err, int32_t index, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    eng_verrf(err, index, fmt, ap);
    va_end(ap);
}

static void err_ok(struct eng_err *err)
{
    if (err) {
        err->index = -1;
        err->msg[0] = 0;
    }
}

/* Clamped to 0..ENG_TS_MAX: it is a record's default ts, which the packed
 * record holds only in that range (a clock outside it spilled into the
 * type bits), and last_seen, which the TTL check subtracts. */
int64_t eng_clock_now(const struct eng *e)
{
    int64_t ms;
    if (e->clock) {
        ms = e->clock(e->ud);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    return ms < 0 ? 0 : ms > ENG_TS_MAX ? ENG_TS_MAX : ms;
}

/* Viewer fingerprints, domain-separated so a user id can never equal a
 * session's: XXH3_64("u" || le64(user)) and XXH3_64("s" || session).
 * Stored in snapshots, so this definition is part of the file format. */
uint64_t eng_fp_user(uint64_t user)
{
    uint8_t b[9];
    b[0] = 'u';
    for (int i = 0; i < 8; i++)
        b[1 + i] = (uint8_t)(user >> (8 * i));
    return XXH3_64bits(b, sizeof(b));
}

uint64_t eng_fp_session(const char *s, size_t len)
{
    uint8_t b[1 + ENG_SESSION_MAX];
    b[0] = 's';
    memcpy(b + 1, s, len);
    return XXH3_64bits(b, 1 + len);
}

/* Character classes: bit 1 session id, bit 2 platform name as stored (lower
 * case), bit 3 platform name as given (either case: WhatsApp is whatsapp). */
#define CC_SESS 1u
#define CC_PLAT 2u
#define CC_PLAT_IN 4u
#define CC_LOWER (CC_SESS | CC_PLAT | CC_PLAT_IN)  /* a-z 0-9 _ */
#define CC_UPPER (CC_SESS | CC_PLAT_IN)            /* A-Z */
static const uint8_t char_class[256] = {
    ['-'] = CC_SESS, ['.'] = CC_SESS, [':'] = CC_SESS, ['_'] = CC_LOWER,
    ['0'] = CC_LOWER, ['1'] = CC_LOWER, ['2'] = CC_LOWER, ['3'] = CC_LOWER, ['4'] = CC_LOWER,
    ['5'] = CC_LOWER, ['6'] = CC_LOWER, ['7'] = CC_LOWER, ['8'] = CC_LOWER, ['9'] = CC_LOWER,
    ['a'] = CC_LOWER, ['b'] = CC_LOWER, ['c'] = CC_LOWER, ['d'] = CC_LOWER, ['e'] = CC_LOWER,
    ['f'] = CC_LOWER, ['g'] = CC_LOWER, ['h'] = CC_LOWER, ['i'] = CC_LOWER, ['j'] = CC_LOWER,
    ['k'] = CC_LOWER, ['l'] = CC_LOWER, ['m'] = CC_LOWER, ['n'] = CC_LOWER, ['o'] = CC_LOWER,
    ['p'] = CC_LOWER, ['q'] = CC_LOWER, ['r'] = CC_LOWER, ['s'] = CC_LOWER, ['t'] = CC_LOWER,
    ['u'] = CC_LOWER, ['v'] = CC_LOWER, ['w'] = CC_LOWER, ['x'] = CC_LOWER, ['y'] = CC_LOWER,
    ['z'] = CC_LOWER,
    ['A'] = CC_UPPER, ['B'] = CC_UPPER, ['C'] = CC_UPPER, ['D'] = CC_UPPER, ['E'] = CC_UPPER,
    ['F'] = CC_UPPER, ['G'] = CC_UPPER, ['H'] = CC_UPPER, ['I'] = CC_UPPER, ['J'] = CC_UPPER,
    ['K'] = CC_UPPER, ['L'] = CC_UPPER, ['M'] = CC_UPPER, ['N'] = CC_UPPER, ['O'] = CC_UPPER,
    ['P'] = CC_UPPER, ['Q'] = CC_UPPER, ['R'] = CC_UPPER, ['S'] = CC_UPPER, ['T'] = CC_UPPER,
    ['U'] = CC_UPPER, ['V'] = CC_UPPER, ['W'] = CC_UPPER, ['X'] = CC_UPPER, ['Y'] = CC_UPPER,
    ['Z'] = CC_UPPER,
};

static bool chars_ok(const char *s, size_t len, uint8_t cls)
{
    uint8_t all = cls;
    for (size_t i = 0; i < len; i++)
        all &= char_class[(unsigned char)s[i]];
    return all == cls;
}

#ifdef __SSE2__
/* Sixteen bytes at once: a session-id byte lies in '-'..'.', '0'..':',
 * 'A'..'Z' or 'a'..'z' (bit 5 set folds the first letters onto the
 * second; no other byte folds into them), or is '_'. Bytes >= 0x80 are
 * negative as signed chars and fall in no range. */
static bool sess_chunk_ok(const char *s)
{
    const __m128i x = _mm_loadu_si128((const __m128i *)(const void *)s);
    const __m128i low = _mm_or_si128(x, _mm_set1_epi8(0x20));
#define IN(v, lo, hi) _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8((char)((lo) - 1))), \
                                    _mm_cmplt_epi8(v, _mm_set1_epi8((char)((hi) + 1))))
    __m128i ok = _mm_or_si128(IN(x, '-', '.'), IN(x, '0', ':'));
    ok = _mm_or_si128(ok, IN(low, 'a', 'z'));
#undef IN
    ok = _mm_or_si128(ok, _mm_cmpeq_epi8(x, _mm_set1_epi8('_')));
    return _mm_movemask_epi8(ok) == 0xffff;
}
#endif

#define SESSION_RULE "session: must be 1 to %u characters of A-Z a-z 0-9 . _ : -"

bool eng_session_ok(const char *s, size_t len)
{
    if (!s || len < 1 || len > ENG_SESSION_MAX)
        return false;
#ifdef __SSE2__
    /* the check every interaction makes: whole chunks here, the tail below */
    for (; len >= 16; s += 16, len -= 16)
        if (!sess_chunk_ok(s))
            return false;
#endif
    return chars_ok(s, len, CC_SESS);
}

int eng_session_check(const char *s, size_t len, struct eng_err *err)
{
    if (eng_session_ok(s, len))
        return ENG_OK;
    eng_errf(err, -1, SESSION_RULE, ENG_SESSION_MAX);
    return ENG_EINVAL;
}

static bool plat_name_ok(const char *s, size_t len, uint8_t cls)
{
    return s && len >= 1 && len <= ENG_PLATFORM_MAX && chars_ok(s, len, cls);
}

bool eng_platform_ok(const char *s, size_t len)
{
    return plat_name_ok(s, len, CC_PLAT);
}

/* A platform name in lower case, the one spelling it is stored under;
 * len <= ENG_PLATFORM_MAX. */
static void plat_fold(const char *s, size_t len, char out[ENG_PLATFORM_MAX])
{
    for (size_t i = 0; i < len; i++)
        out[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + ('a' - 'A') : s[i]);
}

uint64_t eng_hash_bytes(const void *p, size_t len)
{
    return XXH3_64bits(p, len);
}

/* ---- lifecycle ---------------------------------------------------------------- */

static struct vset *set_of_owner(void *ud, uint32_t owner)
{
    struct shrt *s = &((struct eng *)ud)->sh[owner / 2];
    return owner & 1 ? &s->savers : &s->viewers;
}

struct eng *eng_create(const struct eng_config *cfg)
{
    struct eng *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    struct eng_config def = {0};
    if (!cfg)
        cfg = &def;
    e->history = cfg->history ? cfg->history : ENG_HISTORY_DEFAULT;
    if (e->history > ENG_HISTORY_MAX)
        e->history = ENG_HISTORY_MAX;
    e->ttl = cfg->session_ttl_ms > 0 ? cfg->session_ttl_ms : ENG_SESSION_TTL_DEFAULT_MS;
    e->clock = cfg->clock;
    e->random = cfg->random;
    e->ud = cfg->ud;
    e->mem.populate_ud = cfg->ud;
    eng_set_populate(e, cfg->populate);
    e->now = eng_clock_now(e);
    e->rng = (uint64_t)e->now ^ (uint64_t)(uintptr_t)e ^ 0x9e3779b97f4a7c15ULL;
    e->ss_free = ENG_NONE;
    e->cx_free = 0;
    e->ua_free = 0;
    e->cx_hi = 1;
    e->ua_hi = 1;
    vheap_init(&e->vh, &e->mem, set_of_owner, e);
    if (idx_init(&e->sh_idx, &e->mem, 64) || idx_init(&e->ss_idx, &e->mem, 64) ||
        idx_init(&e->us_idx, &e->mem, 64) || idx_init(&e->ua_idx, &e->mem, 64) ||
        idx_init(&e->pl_idx, &e->mem, 64)) {
        eng_destroy(e);
        return NULL;
    }
    return e;
}

void eng_set_populate(struct eng *e, eng_populate_fn populate)
{
    e->mem.populate = populate;
}

void eng_destroy(struct eng *e)
{
    if (!e)
        return;
    /* slab tables go with their pages: freeing them one by one would
     * compact the slabs for nothing */
    for (uint32_t i = 0; i < e->nsh; i++) {
        vset_drop(&e->sh[i].viewers, &e->vh);
        vset_drop(&e->sh[i].savers, &e->vh);
        struct shrt_cold *c = &e->shc[i];
        mem_free(&e->mem, MEM_OTHER, c->plat_ids, (size_t)c->plat_cap * sizeof(uint32_t));
        mem_free(&e->mem, MEM_OTHER, c->plat_shares, (size_t)c->plat_cap * sizeof(uint64_t));
    }
    mem_free(&e->mem, MEM_OTHER, e->rs_dense, e->rs_dense_n * sizeof(uint32_t));
    /* sizes as allocated: where a block lives depends on its size (mem.h) */
    size_t shcap = e->sh_cap;
    mem_free(&e->mem, MEM_OTHER, e->sh, shcap * sizeof(*e->sh));
    mem_free(&e->mem, MEM_OTHER, e->shc, shcap * sizeof(*e->shc));
    mem_free(&e->mem, MEM_OTHER, e->sid, shcap * sizeof(*e->sid));
    for (int m = 0; m < ENG_M_COUNT; m++) {
        size_t ccap = shcap ? shcap : 1;  /* make_column's size */
        mem_free(&e->mem, MEM_OTHER, e->col[m], ccap * sizeof(double));
        mem_free(&e->mem, MEM_OTHER, e->dirty[m], ccap * sizeof(uint32_t));
    }
    for (uint32_t i = 0; i < e->ss_hi; i++)
        if (e->ss[i].slen)
            ring_free(&e->ss[i].ring, &e->mem);
    if (e->ss_raw)
        mem_free(&e->mem, MEM_OTHER, e->ss_raw, (size_t)e->ss_cap * sizeof(struct sess) + 64);
    for (uint32_t i = 0; i < e->nus; i++)
        ring_free(&e->us[i].ring, &e->mem);
    if (e->us_raw)
        mem_free(&e->mem, MEM_OTHER, e->us_raw, (size_t)e->us_cap * sizeof(struct user) + 64);
    mem_free(&e->mem, MEM_OTHER, e->cx, (size_t)e->cx_cap * sizeof(*e->cx));
    for (uint32_t i = 1; i < e->ua_hi; i++)
        mem_free(&e->mem, MEM_OTHER, e->ua[i].s, (size_t)e->ua[i].len + 1);
    mem_free(&e->mem, MEM_OTHER, e->ua, (size_t)e->ua_cap * sizeof(*e->ua));
    mem_free(&e->mem, MEM_OTHER, e->pl, (size_t)e->pl_cap * sizeof(*e->pl));
    mem_free(&e->mem, MEM_OTHER, e->pc, (size_t)e->pc_cap * sizeof(*e->pc));
    mem_free(&e->mem, MEM_OTHER, e->scratch, e->scratch_bytes);
    idx_free(&e->sh_idx, &e->mem);
    idx_free(&e->ss_idx, &e->mem);
    idx_free(&e->us_idx, &e->mem);
    idx_free(&e->ua_idx, &e->mem);
    idx_free(&e->pl_idx, &e->mem);
    vheap_release(&e->vh);
    mem_destroy(&e->mem);
    free(e);
}

/* ---- growth (invisible: may fail, changes no answer) ----------------------------- */

static uint64_t grow_cap(uint64_t cap, uint64_t want, uint64_t min)
{
    uint64_t c = cap ? cap : min;
    while (c < want)
        c *= 2;
    return c;
}

/* One of the arrays indexed by short (sh, shc, sid, and the columns). */
struct sh_array {
    void **p;
    size_t esz;
    size_t keep;      /* bytes of it in use, to carry over */
    bool aligned;     /* cache-line aligned (sh) */
    void *np;         /* the new block, when it is not remapped */
};

/* Grow every array indexed by short to cap, all or nothing. A mapped array
 * (mem.h: >= 1 MiB) grows by mremap: nothing is copied and its pages are
 * not faulted in again, where copying 100k shorts' 17 MB had stalled a
 * batch for 20-30 ms. A small one is allocated anew and copied. */
static int grow_short_arrays(struct eng *e, uint64_t cap)
{
    struct sh_array a[3 + 2 * ENG_M_COUNT];
    size_t na = 0, n = e->nsh;
    a[na++] = (struct sh_array){(void **)&e->sh, sizeof(*e->sh), n * sizeof(*e->sh), true, NULL};
    a[na++] = (struct sh_array){(void **)&e->shc, sizeof(*e->shc), n * sizeof(*e->shc), false, NULL};
    a[na++] = (struct sh_array){(void **)&e->sid, sizeof(*e->sid), n * sizeof(*e->sid), false, NULL};
    for (int m = 0; m < ENG_M_COUNT; m++) {
        if (!e->col[m])
            continue;
        a[na++] = (struct sh_array){(void **)&e->col[m], sizeof(double), n * sizeof(double), false,
                                    NULL};
        a[na++] = (struct sh_array){(void **)&e->dirty[m], sizeof(uint32_t),
                                    e->ndirty[m] * sizeof(uint32_t), false, NULL};
    }
    size_t old = e->sh_cap, i, r;
    /* first every allocation that may fail without changing anything */
    for (i = 0; i < na; i++) {
        if (mem_is_large(old * a[i].esz))
            continue;
        size_t bytes = cap * a[i].esz;
        a[i].np = a[i].aligned ? mem_calloc_aligned(&e->mem, MEM_OTHER, bytes)
                               : mem_calloc(&e->mem, MEM_OTHER, bytes);
        if (!a[i].np)
            goto undo_new;
    }
    for (r = 0; r < na; r++) {
        if (a[r].np)
            continue;
        void *q = mem_realloc(&e->mem, MEM_OTHER, *a[r].p, old * a[r].esz, cap * a[r].esz);
        if (!q)
            goto undo_remap;
        *a[r].p = q;
    }
    for (i = 0; i < na; i++) {
        if (!a[i].np)
            continue;
        if (a[i].keep)
            memcpy(a[i].np, *a[i].p, a[i].keep);
        mem_free(&e->mem, MEM_OTHER, *a[i].p, old * a[i].esz);
        *a[i].p = a[i].np;
    }
    return 0;
undo_remap:
    /* Shrinking a mapping back (munmap of its tail) cannot fail. */
    while (r-- > 0) {
        if (a[r].np)
            continue;
        *a[r].p = mem_sys_realloc(*a[r].p, cap * a[r].esz, old * a[r].esz);
        e->mem.bytes[MEM_OTHER] -= (cap - old) * a[r].esz;
    }
    i = na;
undo_new:
    while (i-- > 0)
        mem_free(&e->mem, MEM_OTHER, a[i].np, cap * a[i].esz);
    return -1;
}

_Static_assert(ENG_SHORTS_MAX <= IDX_CAP_MAX / 4 * 3, "the short index must hold ENG_SHORTS_MAX");

int eng_reserve_shorts(struct eng *e, uint64_t extra)
{
    uint64_t want = (uint64_t)e->nsh + extra;
    if (want > ENG_SHORTS_MAX)
        return -1;
    if (want > e->sh_cap) {
        uint64_t cap = grow_cap(e->sh_cap, want, 1024);
        if (cap > ENG_SHORTS_MAX)
            cap = ENG_SHORTS_MAX;
        if (grow_short_arrays(e, cap))
            return -1;
        e->sh_cap = (uint32_t)cap;
    }
    return idx_reserve(&e->sh_idx, &e->mem, extra);
}

/* The capacity a slab (hi used, nfree of them free) must grow to so that
 * `extra` more fit: 0 if it has room, ENG_NONE if ids would run out. */
static uint64_t slab_grow_to(uint32_t cap, uint32_t hi, uint32_t nfree, uint64_t extra, uint32_t min)
{
    uint64_t avail = (uint64_t)(cap > hi ? cap - hi : 0) + nfree;
    if (avail >= extra)
        return 0;
    uint64_t want = (uint64_t)hi + (extra - nfree);  /* free slots are taken first */
    if (want >= ENG_NONE)
        return ENG_NONE;
    uint64_t ncap = grow_cap(cap, want, min);
    return ncap >= ENG_NONE ? ENG_NONE - 1 : ncap;
}

/* Grow a slab array (element size esz) so that `extra` more fit. */
static int slab_reserve(struct eng *e, void **arr, uint32_t *cap, uint32_t hi, uint32_t nfree,
                        uint64_t extra, size_t esz, uint32_t min)
{
    uint64_t ncap = slab_grow_to(*cap, hi, nfree, extra, min);
    if (ncap == 0)
        return 0;
    if (ncap == ENG_NONE)
        return -1;
    void *p = mem_realloc(&e->mem, MEM_OTHER, *arr, (size_t)*cap * esz, (size_t)ncap * esz);
    if (!p)
        return -1;
    /* no zeroing: slots at or past hi are written before they are read */
    *arr = p;
    *cap = (uint32_t)ncap;
    return 0;
}

/* The same for arrays whose elements must sit on cache lines. realloc, so a
 * big array moves by mremap rather than by copy (and does not fault its
 * pages in twice); when the block lands at another offset mod 64, the used
 * part slides into place. */
static int slab_reserve_aligned(struct eng *e, void **raw, void **base, uint32_t *cap, uint32_t hi,
                                uint32_t nfree, uint64_t extra, size_t esz, uint32_t min)
{
    uint64_t ncap = slab_grow_to(*cap, hi, nfree, extra, min);
    if (ncap == 0)
        return 0;
    if (ncap == ENG_NONE)
        return -1;
    size_t oldoff = *raw ? (size_t)((char *)*base - (char *)*raw) : 0;
    size_t oldbytes = *raw ? (size_t)*cap * esz + 64 : 0;
    char *p = mem_realloc(&e->mem, MEM_OTHER, *raw, oldbytes, (size_t)ncap * esz + 64);
    if (!p)
        return -1;
    char *nb = (char *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
    size_t newoff = (size_t)(nb - p);
    if (newoff != oldoff && hi)
        memmove(nb, p + oldoff, (size_t)hi * esz);
    *raw = p;
    *base = nb;
    *cap = (uint32_t)ncap;
    return 0;
}

int eng_reserve_sessions(struct eng *e, uint64_t extra)
{
    if (slab_reserve_aligned(e, &e->ss_raw, (void **)&e->ss, &e->ss_cap, e->ss_hi, e->ss_nfree,
                             extra, sizeof(struct sess), 256))
        return -1;
    return idx_reserve(&e->ss_idx, &e->mem, extra);
}

int eng_reserve_users(struct eng *e, uint64_t extra)
{
    if (slab_reserve_aligned(e, &e->us_raw, (void **)&e->us, &e->us_cap, e->nus, 0, extra,
                             sizeof(struct user), 256))
        return -1;
    return idx_reserve(&e->us_idx, &e->mem, extra);
}

int eng_reserve_ctxs(struct eng *e, uint64_t extra)
{
    if (e->cx_cap == 0 &&
        slab_reserve(e, (void **)&e->cx, &e->cx_cap, 0, 0, 1, sizeof(struct ctx), 256))
        return -1;
    return slab_reserve(e, (void **)&e->cx, &e->cx_cap, e->cx_hi, e->cx_nfree, extra,
                        sizeof(struct ctx), 256);
}

int eng_reserve_uas(struct eng *e, uint64_t extra)
{
    if (e->ua_cap == 0 &&
        slab_reserve(e, (void **)&e->ua, &e->ua_cap, 0, 0, 1, sizeof(struct ua), 64))
        return -1;
    if (slab_reserve(e, (void **)&e->ua, &e->ua_cap, e->ua_hi, e->ua_nfree, extra,
                     sizeof(struct ua), 64))
        return -1;
    return idx_reserve(&e->ua_idx, &e->mem, extra);
}

int eng_reserve_platforms(struct eng *e, uint64_t extra)
{
    if ((uint64_t)e->npl + extra > ENG_PLATFORMS_MAX)
        return -1;
    if (slab_reserve(e, (void **)&e->pl, &e->pl_cap, e->npl + 1, 0, extra, sizeof(struct plat), 16))
        return -1;
    return idx_reserve(&e->pl_idx, &e->mem, extra);
}

int eng_reserve_pc(struct eng *e, uint32_t n)
{
    if (n <= e->pc_cap)
        return 0;
    uint32_t cap = (uint32_t)grow_cap(e->pc_cap, n, 8);
    void *p = mem_realloc(&e->mem, MEM_OTHER, e->pc, (size_t)e->pc_cap * sizeof(*e->pc),
                          (size_t)cap * sizeof(*e->pc));
    if (!p)
        return -1;
    e->pc = p;
    e->pc_cap = cap;
    return 0;
}

const char *eng_plats_bad(const struct eng *e, const uint32_t *ids, const uint64_t *shares,
                          uint32_t n, uint64_t total)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (ids[i] == 0 || ids[i] > e->npl)
            return "unknown platform id";
        for (uint32_t j = 0; j < i; j++)  /* a short has a few platforms: quadratic is fine */
            if (ids[j] == ids[i])
                return "platform listed twice";
        if (shares[i] == 0)
            return "platform with no shares";
        if (shares[i] > total - sum)  /* sum <= total: no wrap */
            return "platform shares exceed shares";
        sum += shares[i];
    }
    return NULL;
}

/* The shared list eng_stats fills first: growing it is invisible, so a
 * failure after it leaves nothing to undo, while growing the short's own
 * arrays first would leave a capacity the retry trusts without e->pc. */
int eng_reserve_plat_slots(struct eng *e, struct shrt_cold *c, uint32_t n)
{
    if (eng_reserve_pc(e, n))
        return -1;
    if (n <= c->plat_cap)
        return 0;
    uint32_t cap = (uint32_t)grow_cap(c->plat_cap, n, 2);
    uint32_t *ids = mem_alloc(&e->mem, MEM_OTHER, (size_t)cap * sizeof(*ids));
    uint64_t *sh = mem_alloc(&e->mem, MEM_OTHER, (size_t)cap * sizeof(*sh));
    if (!ids || !sh) {
        mem_free(&e->mem, MEM_OTHER, ids, (size_t)cap * sizeof(*ids));
        mem_free(&e->mem, MEM_OTHER, sh, (size_t)cap * sizeof(*sh));
        return -1;
    }
    if (c->nplat) {
        memcpy(ids, c->plat_ids, c->nplat * sizeof(*ids));
        memcpy(sh, c->plat_shares, c->nplat * sizeof(*sh));
    }
    mem_free(&e->mem, MEM_OTHER, c->plat_ids, (size_t)c->plat_cap * sizeof(*ids));
    mem_free(&e->mem, MEM_OTHER, c->plat_shares, (size_t)c->plat_cap * sizeof(*sh));
    c->plat_ids = ids;
    c->plat_shares = sh;
    c->plat_cap = cap;
    return 0;
}

/* ---- entities ------------------------------------------------------------------ */

uint32_t eng_short_new(struct eng *e, uint64_t id)
{
    uint32_t ix = e->nsh++;
    memset(&e->sh[ix], 0, sizeof(e->sh[ix]));
    memset(&e->shc[ix], 0, sizeof(e->shc[ix]));
    e->sid[ix] = id;
    idx_put(&e->sh_idx, id, ix);
    return ix;
}

/* Only the newest short can go (undo of a plan). */
static void short_pop(struct eng *e)
{
    uint32_t ix = --e->nsh;
    vset_free(&e->sh[ix].viewers, &e->vh);
    vset_free(&e->sh[ix].savers, &e->vh);
    struct shrt_cold *c = &e->shc[ix];
    mem_free(&e->mem, MEM_OTHER, c->plat_ids, (size_t)c->plat_cap * sizeof(uint32_t));
    mem_free(&e->mem, MEM_OTHER, c->plat_shares, (size_t)c->plat_cap * sizeof(uint64_t));
    idx_del(&e->sh_idx, e->sid[ix], ix);
}

/* List the short in the dirty list of every column it is not listed in
 * yet: one test when nothing changed since the last TOP. */
void eng_mark_dirty(struct eng *e, uint32_t ix)
{
    uint16_t add = (uint16_t)(e->colmask & ~e->sh[ix].cdirty);
    if (!add)
        return;
    e->sh[ix].cdirty |= add;
    do {
        int m = __builtin_ctz(add);
        e->dirty[m][e->ndirty[m]++] = ix;
        add &= (uint16_t)(add - 1);
    } while (add);
}

/* Slot si (a live session) is the session with this id. */
static bool sess_is(const struct eng *e, uint32_t si, uint64_t hash, const char *s, size_t len)
{
    const struct sess *ss = &e->ss[si];
    const char *id = eng_sess_id(e, ss);
    return ss->hash == hash && ss->slen == len && id && memcmp(id, s, len) == 0;
}

uint32_t eng_sess_find(const struct eng *e, uint64_t hash, const char *s, size_t len)
{
    struct idx_walk w = idx_walk_start(&e->ss_idx, hash);
    for (uint32_t v; (v = idx_walk_next(&e->ss_idx, hash, &w));)
        if (sess_is(e, v - 1, hash, s, len))
            return v - 1;
    return ENG_NONE;
}

uint32_t eng_sess_new(struct eng *e, uint64_t hash, const char *s, size_t len, int64_t now)
{
    uint32_t si = eng_slab_take(e->ss, sizeof(*e->ss), offsetof(struct sess, bctx), &e->ss_free,
                                &e->ss_nfree, &e->ss_hi, ENG_NONE);
    struct sess *ss = &e->ss[si];
    memset(ss, 0, sizeof(*ss));
    ss->last_seen = now;
    ss->hash = hash;
    ss->last_ctx = 0;
    ss->slen = (uint8_t)len;
    idx_put(&e->ss_idx, hash, si);
    e->nss++;
    return si;
}

/* Remove a session; its records' context references are dropped. */
static void sess_free(struct eng *e, uint32_t si)
{
    struct sess *ss = &e->ss[si];
    eng_ring_release(e, &ss->ring, false);
    ring_free(&ss->ring, &e->mem);
    idx_del(&e->ss_idx, ss->hash, si);
    ss->slen = 0;
    eng_slab_put(e->ss, sizeof(*e->ss), offsetof(struct sess, bctx), &e->ss_free, &e->ss_nfree, si);
    e->nss--;
}

uint32_t eng_user_new(struct eng *e, uint64_t id, int64_t now)
{
    uint32_t ui = e->nus++;
    struct user *u = &e->us[ui];
    memset(u, 0, sizeof(*u));
    u->id = id;
    u->last_seen = now;
    idx_put(&e->us_idx, id, ui);
    return ui;
}

static void user_pop(struct eng *e)
{
    uint32_t ui = --e->nus;
    ring_free(&e->us[ui].ring, &e->mem);
    idx_del(&e->us_idx, e->us[ui].id, ui);
}

uint32_t eng_ua_find(const struct eng *e, uint64_t h, const char *s, size_t len)
{
    struct idx_walk w = idx_walk_start(&e->ua_idx, h);
    for (uint32_t v; (v = idx_walk_next(&e->ua_idx, h, &w));) {
        uint32_t id = v - 1;
        const struct ua *u = &e->ua[id];
        if (u->len == len && memcmp(u->s, s, len) == 0)
            return id;
    }
    return 0;
}

/* Fill slot id, taking ownership of the string copy `s` (len bytes + NUL). */
void eng_ua_init(struct eng *e, uint32_t id, uint64_t h, char *s, size_t len)
{
    struct ua *u = &e->ua[id];
    u->s = s;
    u->hash = h;
    u->len = (uint32_t)len;
    u->refs = 0;
    idx_put(&e->ua_idx, h, id);
    e->nua++;
}

static uint32_t ua_new(struct eng *e, uint64_t h, char *s, size_t len)
{
    uint32_t id = eng_slab_take(e->ua, sizeof(*e->ua), offsetof(struct ua, refs), &e->ua_free,
                                &e->ua_nfree, &e->ua_hi, 0);
    eng_ua_init(e, id, h, s, len);
    return id;
}

void eng_ua_free_slot(struct eng *e, uint32_t id)
{
    struct ua *u = &e->ua[id];
    idx_del(&e->ua_idx, u->hash, id);
    mem_free(&e->mem, MEM_OTHER, u->s, (size_t)u->len + 1);
    u->s = NULL;
    u->len = 0;
    eng_slab_put(e->ua, sizeof(*e->ua), offsetof(struct ua, refs), &e->ua_free, &e->ua_nfree, id);
    e->nua--;
}

static uint32_t ctx_new(struct eng *e, uint64_t user, const char *s, size_t slen, uint8_t fam,
                        const uint8_t ip[16], uint32_t ua)
{
    uint32_t id = eng_slab_take(e->cx, sizeof(*e->cx), offsetof(struct ctx, ua), &e->cx_free,
                                &e->cx_nfree, &e->cx_hi, 0);
    struct ctx *c = &e->cx[id];
    memset(c, 0, sizeof(*c));
    c->user = user;
    c->fam = fam;
    if (fam)
        memcpy(c->ip, ip, 16);
    c->slen = (uint8_t)slen;
    if (slen)
        memcpy(c->sid, s, slen);
    c->ua = ua;
    if (ua)
        e->ua[ua].refs++;
    e->ncx++;
    return id;
}

void eng_ctx_destroy(struct eng *e, uint32_t id)
{
    struct ctx *c = &e->cx[id];
    uint32_t ua = c->ua;
    c->fam = CX_FREE;
    eng_slab_put(e->cx, sizeof(*e->cx), offsetof(struct ctx, ua), &e->cx_free, &e->cx_nfree, id);
    e->ncx--;
    if (ua && --e->ua[ua].refs == 0)
        eng_ua_free_slot(e, ua);
}

static void ctx_unref(struct eng *e, uint32_t id, bool is_user)
{
    if (id == 0)
        return;
    struct ctx *c = &e->cx[id];
    if (is_user)
        c->ru--;
    else
        c->rs--;
    if (c->rs == 0 && c->ru == 0)
        eng_ctx_destroy(e, id);
}

void eng_ring_release(struct eng *e, struct ring *r, bool is_user)
{
    for (uint32_t i = 0; i < r->len; i++)
        ctx_unref(e, ring_oldest(r, i)->ctx, is_user);
    e->records -= r->len;
    ring_clear(r);
}

uint32_t eng_plat_find(const struct eng *e, const char *given, size_t len, uint64_t *hout)
{
    char s[ENG_PLATFORM_MAX];
    if (len > ENG_PLATFORM_MAX) {  /* no such name is stored */
        *hout = 0;
        return 0;
    }
    plat_fold(given, len, s);
    uint64_t h = eng_hash_bytes(s, len);
    *hout = h;
    struct idx_walk w = idx_walk_start(&e->pl_idx, h);
    for (uint32_t v; (v = idx_walk_next(&e->pl_idx, h, &w));) {
        uint32_t id = v - 1;
        if (e->pl[id].len == len && memcmp(e->pl[id].name, s, len) == 0)
            return id;
    }
    return 0;
}

uint32_t eng_plat_new(struct eng *e, uint64_t h, const char *s, size_t len)
{
    uint32_t id = ++e->npl;
    memset(&e->pl[id], 0, sizeof(e->pl[id]));
    plat_fold(s, len, e->pl[id].name);
    e->pl[id].len = (uint8_t)len;
    idx_put(&e->pl_idx, h, id);
    return id;
}

static void plat_pop(struct eng *e)
{
    uint32_t id = e->npl--;
    idx_del(&e->pl_idx, eng_hash_bytes(e->pl[id].name, e->pl[id].len), id);
}

/* ---- validation --------------------------------------------------------------------- */

struct plan {
    uint64_t fp;      /* viewer fingerprint (impression, view, save) */
    uint64_t shash;   /* session fingerprint, when there is a session */
    uint64_t sig;     /* context signature (ctx_sig) */
    uint32_t six;     /* short index; ENG_NONE until planned */
    uint32_t sess;    /* session slot or ENG_NONE */
    uint32_t user;    /* user index or ENG_NONE */
    uint32_t ctx;     /* pinned context, 0 until pinned */
    uint16_t plat;    /* platform id or 0 */
    uint8_t fam;      /* parsed ip: 0, 4 or 6 */
    uint8_t ip[16];
};

static int parse_ip(const char *s, size_t len, uint8_t *fam, uint8_t ip[16])
{
    char buf[ENG_IPSTR_MAX + 1];
    memset(ip, 0, 16);
    if (len == 0 || len > ENG_IPSTR_MAX || memchr(s, 0, len))
        return -1;
    memcpy(buf, s, len);
    buf[len] = 0;
    if (inet_pton(AF_INET, buf, ip) == 1) {
        *fam = 4;
        return 0;
    }
    if (inet_pton(AF_INET6, buf, ip) == 1) {
        *fam = 6;
        return 0;
    }
    return -1;
}

static size_t ix_ua_len(const struct eng_ix *ix)
{
    return ix->ua ? ix->ua_len : 0;
}

/* The checks of eng.h in their documented order; fills p->fam/ip. */
static int validate(const struct eng *e, const struct eng_ix *ix, struct plan *p, int32_t index,
                    struct eng_err *err)
{
    if (ix->type < 0 || ix->type >= ENG_T_COUNT)
        goto einval_type;
    if (ix->short_id == 0) {
        eng_errf(err, index, "short_id: must be at least 1");
        return ENG_EINVAL;
    }
    if (ix->session && !eng_session_ok(ix->session, ix->session_len)) {
        eng_errf(err, index, SESSION_RULE, ENG_SESSION_MAX);
        return ENG_EINVAL;
    }
    if (!ix->session && ix->user == 0) {
        eng_errf(err, index, "viewer: session or user is required");
        return ENG_EINVAL;
    }
    if (ix->has_ts && (ix->ts < 0 || ix->ts > ENG_TS_MAX)) {
        eng_errf(err, index, "ts: must be 0..%lld", (long long)ENG_TS_MAX);
        return ENG_EINVAL;
    }
    if (ix->has_watch) {
        if (ix->type != ENG_T_VIEW) {
            eng_errf(err, index, "watch_ms: only allowed on view");
            return ENG_EINVAL;
        }
        if (ix->watch_ms < 0 || ix->watch_ms > ENG_WATCH_MAX) {
            eng_errf(err, index, "watch_ms: must be 0..%u", ENG_WATCH_MAX);
            return ENG_EINVAL;
        }
    }
    if (ix->platform) {
        if (ix->type != ENG_T_SHARE) {
            eng_errf(err, index, "platform: only allowed on share");
            return ENG_EINVAL;
        }
        if (!plat_name_ok(ix->platform, ix->platform_len, CC_PLAT_IN)) {
            eng_errf(err, index, "platform: must be 1 to %u characters of A-Z a-z 0-9 _",
                     ENG_PLATFORM_MAX);
            return ENG_EINVAL;
        }
        uint64_t h;
        if (e->npl >= ENG_PLATFORMS_MAX && !eng_plat_find(e, ix->platform, ix->platform_len, &h)) {
            eng_errf(err, index, "platform: too many distinct platforms");
            return ENG_ELIMIT;
        }
    }
    p->fam = 0;
    memset(p->ip, 0, sizeof(p->ip));
    if (ix->ip && parse_ip(ix->ip, ix->ip_len, &p->fam, p->ip)) {
        eng_errf(err, index, "ip: not an IPv4 or IPv6 address");
        return ENG_EINVAL;
    }
    if (ix->ua && ix->ua_len > ENG_UA_MAX) {
        eng_errf(err, index, "ua: longer than %u bytes", ENG_UA_MAX);
        return ENG_EINVAL;
    }
    return ENG_OK;
einval_type:
    eng_errf(err, index, "type: unknown interaction type");
    return ENG_EINVAL;
}

/* A context's signature: its session, user, ip and ua hashed together. A
 * session (or user) remembers the signature of its newest record's context;
 * a new interaction with the same signature reuses that context without
 * reading it. Two different tuples share a signature with probability
 * 2^-64 -- the same bet the viewer fingerprints make. */
uint64_t eng_ctx_sig(uint64_t shash, uint64_t user, uint8_t fam, const uint8_t ip[16], const char *ua,
                     size_t ua_len)
{
    uint64_t lo, hi;
    memcpy(&lo, ip, 8);
    memcpy(&hi, ip + 8, 8);
    uint64_t seed = idx_mix(shash ^ 0x5bd1e9955bd1e995ULL);
    seed = idx_mix(seed ^ user);
    seed = idx_mix(seed ^ lo ^ ((uint64_t)fam << 56));
    seed = idx_mix(seed ^ hi);
    return XXH3_64bits_withSeed(ua_len ? ua : "", ua_len, seed);
}

uint64_t eng_ctx_sig_of(const struct eng *e, uint32_t id)
{
    const struct ctx *c = &e->cx[id];
    uint64_t sh = c->slen ? eng_fp_session(c->sid, c->slen) : 0;
    const struct ua *u = c->ua ? &e->ua[c->ua] : NULL;
    return eng_ctx_sig(sh, c->user, c->fam, c->ip, u ? u->s : NULL, u ? u->len : 0);
}

/* The hashes an interaction needs, once (p->fam/ip from validate). */
static void prehash(const struct eng_ix *ix, struct plan *p)
{
    p->shash = ix->session ? eng_fp_session(ix->session, ix->session_len) : 0;
    p->fp = ix->user ? eng_fp_user(ix->user) : p->shash;
    p->sig = eng_ctx_sig(p->shash, ix->user, p->fam, p->ip, ix->ua, ix_ua_len(ix));
}

int eng_validate(const struct eng *e, const struct eng_ix *ix, struct eng_err *err)
{
    struct plan p;
    err_ok(err);
    return validate(e, ix, &p, -1, err);
}

/* ---- plan ---------------------------------------------------------------------------- */

enum undo_kind { U_SHORT, U_SESS, U_USER, U_CTX, U_UA, U_PLAT };
struct undo {
    uint32_t kind;
    uint32_t id;
};
#define UNDO_PER_IX 6   /* at most one of each kind per interaction */

struct undo_log {
    struct undo *u;
    size_t n;
};

static void undo_push(struct undo_log *ul, enum undo_kind k, uint32_t id)
{
    ul->u[ul->n].kind = k;
    ul->u[ul->n].id = id;
    ul->n++;
}

static bool ctx_match(const struct eng *e, uint32_t id, const struct eng_ix *ix, const struct plan *p)
{
    const struct ctx *c = &e->cx[id];
    if (c->user != ix->user || c->fam != p->fam)
        return false;
    size_t sl = ix->session ? ix->session_len : 0;
    if (c->slen != sl || (sl && memcmp(c->sid, ix->session, sl) != 0))
        return false;
    if (p->fam && memcmp(c->ip, p->ip, p->fam == 4 ? 4 : 16) != 0)
        return false;
    size_t ul = ix_ua_len(ix);
    if (c->ua == 0)
        return ul == 0;
    const struct ua *u = &e->ua[c->ua];
    return u->len == ul && memcmp(u->s, ix->ua, ul) == 0;
}

/* Find a context for p among the recent ones of its session (or user):
 * the last one planned in this batch, up to CTX_SCAN earlier elements of
 * the batch, the newest CTX_SCAN records of its ring; or create it. */
static int plan_ctx(struct eng *e, const struct eng_ix *ix, const struct plan *pl, size_t i,
                    struct undo_log *ul, uint32_t *out)
{
    const struct plan *p = &pl[i];
    const struct ring *r;
    uint32_t hint = 0, last;
    uint64_t sig;
    if (p->sess != ENG_NONE) {
        const struct sess *ss = &e->ss[p->sess];
        r = &ss->ring;
        if (ss->pend)
            hint = ss->bctx;
        last = ss->last_ctx;
        sig = ss->sig;
    } else {
        const struct user *u = &e->us[p->user];
        r = &u->ring;
        if (u->pend)
            hint = u->bctx;
        last = u->last_ctx;
        sig = u->sig;
    }
    if (!hint && last && sig == p->sig) {
        *out = last;  /* the fast path: nothing read but the session itself */
        return 0;
    }
    if (hint && ctx_match(e, hint, ix, p)) {
        *out = hint;
        return 0;
    }
    uint32_t tried = hint;
    if (hint) {
        for (size_t j = i, seen = 0; j-- > 0 && seen < CTX_SCAN;) {
            const struct plan *q = &pl[j];
            if (p->sess != ENG_NONE ? q->sess != p->sess : (q->sess != ENG_NONE || q->user != p->user))
                continue;
            seen++;
            if (q->ctx == tried)
                continue;
            if (ctx_match(e, q->ctx, ix, p)) {
                *out = q->ctx;
                return 0;
            }
            tried = q->ctx;
        }
    }
    for (uint32_t k = 0; k < r->len && k < CTX_SCAN; k++) {
        uint32_t id = ring_newest(r, k)->ctx;
        if (id == tried || id == 0)
            continue;
        if (ctx_match(e, id, ix, p)) {
            *out = id;
            return 0;
        }
        tried = id;
    }
    uint32_t ua = 0;
    size_t ulen = ix_ua_len(ix);
    if (ulen) {
        uint64_t h = eng_hash_bytes(ix->ua, ulen);
        ua = eng_ua_find(e, h, ix->ua, ulen);
        if (!ua) {
            if (eng_reserve_uas(e, 1))
                return -1;
            char *copy = mem_alloc(&e->mem, MEM_OTHER, ulen + 1);
            if (!copy)
                return -1;
            memcpy(copy, ix->ua, ulen);
            copy[ulen] = 0;
            ua = ua_new(e, h, copy, ulen);
            undo_push(ul, U_UA, ua);
        }
    }
    if (eng_reserve_ctxs(e, 1))
        return -1;
    *out = ctx_new(e, ix->user, ix->session, ix->session ? ix->session_len : 0, p->fam, p->ip, ua);
    undo_push(ul, U_CTX, *out);
    return 0;
}

static bool short_has_plat(const struct shrt_cold *c, uint32_t id)
{
    for (uint32_t i = 0; i < c->nplat; i++)
        if (c->plat_ids[i] == id)
            return true;
    return false;
}

static int plan_one(struct eng *e, const struct eng_ix *ix, struct plan *pl, size_t i,
                    struct undo_log *ul, int64_t now, int32_t index, struct eng_err *err)
{
    struct plan *p = &pl[i];
    int t = ix->type;
    /* six/sess/user hold what the prefetch stage found (see pf_items), or
     * ENG_NONE: then look again, as an earlier element of this batch may
     * have created the thing since. */
    p->ctx = 0;
    p->plat = 0;

    uint32_t v = p->six != ENG_NONE ? p->six + 1 : idx_find(&e->sh_idx, ix->short_id);
    if (v) {
        p->six = v - 1;
    } else {
        if (eng_reserve_shorts(e, 1))
            goto nomem;
        p->six = eng_short_new(e, ix->short_id);
        undo_push(ul, U_SHORT, p->six);
    }

    if (ix->session) {
        uint32_t si = p->sess;
        if (si == ENG_NONE || !sess_is(e, si, p->shash, ix->session, ix->session_len))
            si = eng_sess_find(e, p->shash, ix->session, ix->session_len);
        if (si == ENG_NONE) {
            if (eng_reserve_sessions(e, 1))
                goto nomem;
            si = eng_sess_new(e, p->shash, ix->session, ix->session_len, now);
            undo_push(ul, U_SESS, si);
        } else if (e->ss[si].pend == 0 && eng_sess_expired(e, &e->ss[si], now)) {
            e->ss[si].flags |= SS_RESET;
        }
        p->sess = si;
    }
    if (ix->user) {
        v = p->user != ENG_NONE ? p->user + 1 : idx_find(&e->us_idx, ix->user);
        if (v) {
            p->user = v - 1;
        } else {
            if (eng_reserve_users(e, 1))
                goto nomem;
            p->user = eng_user_new(e, ix->user, now);
            undo_push(ul, U_USER, p->user);
        }
    }

    struct shrt *s = &e->sh[p->six];
    struct shrt_cold *c = &e->shc[p->six];
    if (t == ENG_T_IMPRESSION || t == ENG_T_VIEW || t == ENG_T_SAVE) {
        struct vset *set = t == ENG_T_SAVE ? &s->savers : &s->viewers;
        uint32_t *pend = t == ENG_T_SAVE ? &c->pend_s : &c->pend_v;
        if (!vset_has(set, p->fp)) {
            ++*pend;
            if (vset_reserve(set, &e->vh, eng_set_owner(p->six, t == ENG_T_SAVE), *pend))
                goto nomem;
        }
    } else if (t == ENG_T_SHARE && ix->platform) {
        uint64_t h;
        uint32_t id = eng_plat_find(e, ix->platform, ix->platform_len, &h);
        if (!id) {
            if (e->npl >= ENG_PLATFORMS_MAX) {
                eng_errf(err, index, "platform: too many distinct platforms");
                return ENG_ELIMIT;
            }
            if (eng_reserve_platforms(e, 1))
                goto nomem;
            id = eng_plat_new(e, h, ix->platform, ix->platform_len);
            undo_push(ul, U_PLAT, id);
        }
        p->plat = (uint16_t)id;
        if (!short_has_plat(c, id)) {
            c->pend_p++;
            if (eng_reserve_plat_slots(e, c, c->nplat + c->pend_p))
                goto nomem;
        }
    }

    uint32_t cx;
    if (plan_ctx(e, ix, pl, i, ul, &cx))
        goto nomem;
    p->ctx = cx;
    if (p->sess != ENG_NONE)
        e->cx[cx].rs++;
    if (p->user != ENG_NONE)
        e->cx[cx].ru++;

    if (p->sess != ENG_NONE) {
        struct sess *ss = &e->ss[p->sess];
        ss->pend++;
        ss->bctx = cx;
        uint64_t want = (uint64_t)((ss->flags & SS_RESET) ? 0 : ss->ring.len) + ss->pend;
        if (ring_reserve(&ss->ring, &e->mem, want > e->history ? e->history : (uint32_t)want,
                         e->history))
            goto nomem;
    }
    if (p->user != ENG_NONE) {
        struct user *u = &e->us[p->user];
        u->pend++;
        u->bctx = cx;
        uint64_t want = (uint64_t)u->ring.len + u->pend;
        if (ring_reserve(&u->ring, &e->mem, want > e->history ? e->history : (uint32_t)want,
                         e->history))
            goto nomem;
    }
    return ENG_OK;
nomem:
    eng_errf(err, index, "memory: out of memory");
    return ENG_ENOMEM;
}

static void scratch_clear(struct eng *e, const struct plan *pl, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct plan *p = &pl[i];
        if (p->six != ENG_NONE) {
            struct shrt_cold *c = &e->shc[p->six];
            c->pend_v = c->pend_s = c->pend_p = 0;
        }
        if (p->sess != ENG_NONE) {
            e->ss[p->sess].pend = 0;
            e->ss[p->sess].flags = 0;
        }
        if (p->user != ENG_NONE)
            e->us[p->user].pend = 0;
    }
}

/* Undo plans 0..n-1 (the last possibly partial). */
static void rollback(struct eng *e, const struct plan *pl, size_t n, struct undo_log *ul)
{
    scratch_clear(e, pl, n);
    for (size_t i = 0; i < n; i++) {
        const struct plan *p = &pl[i];
        if (!p->ctx)
            continue;
        if (p->sess != ENG_NONE)
            e->cx[p->ctx].rs--;
        if (p->user != ENG_NONE)
            e->cx[p->ctx].ru--;
    }
    while (ul->n) {
        const struct undo *u = &ul->u[--ul->n];
        switch (u->kind) {
        case U_SHORT: short_pop(e); break;
        case U_SESS: sess_free(e, u->id); break;
        case U_USER: user_pop(e); break;
        case U_CTX: eng_ctx_destroy(e, u->id); break;
        case U_UA:
            if (e->ua[u->id].s && e->ua[u->id].refs == 0)
                eng_ua_free_slot(e, u->id);
            break;
        case U_PLAT: plat_pop(e); break;
        }
    }
}

/* ---- apply ---------------------------------------------------------------------------- */

static void push_rec(struct eng *e, struct ring *r, const struct rec *rec, bool is_user)
{
    struct rec old;
    if (ring_push(r, rec, &old))
        ctx_unref(e, old.ctx, is_user);
    else
        e->records++;
}

static void commit_one(struct eng *e, const struct eng_ix *ix, const struct plan *p, int64_t now)
{
    struct shrt *s = &e->sh[p->six];
    int t = ix->type;
    int64_t ts = ix->has_ts ? ix->ts : now;
    uint32_t watch = ix->has_watch ? (uint32_t)ix->watch_ms : 0;

    switch (t) {
    case ENG_T_IMPRESSION:
    case ENG_T_VIEW:
        s->count[t]++;
        if (vset_add(&s->viewers, p->fp))
            e->viewer_pairs++;
        if (ix->has_watch) {
            s->watch_sum += watch;
            s->watch_n++;
        }
        break;
    case ENG_T_SAVE:
        if (vset_add(&s->savers, p->fp))
            s->count[ENG_T_SAVE]++;
        break;
    case ENG_T_SHARE:
        s->count[t]++;
        if (p->plat) {
            struct shrt_cold *c = &e->shc[p->six];
            uint32_t i = 0;
            while (i < c->nplat && c->plat_ids[i] != p->plat)
                i++;
            if (i == c->nplat) {
                c->plat_ids[i] = p->plat;
                c->plat_shares[i] = 0;
                c->nplat++;
            }
            c->plat_shares[i]++;
        }
        break;
    default:
        s->count[t]++;
        break;
    }
    if (ts > s->last_ts)
        s->last_ts = ts;
    eng_mark_dirty(e, p->six);
    e->interactions++;
    e->by_type[t]++;

    struct rec r = rec_make(ts, p->six, p->ctx, t, ix->has_watch, watch, (uint16_t)p->plat);
    if (p->sess != ENG_NONE) {
        struct sess *ss = &e->ss[p->sess];
        if (ss->flags & SS_RESET) {
            eng_ring_release(e, &ss->ring, false);
            ss->flags &= (uint8_t)~SS_RESET;
            e->sessions_evicted++;
        }
        push_rec(e, &ss->ring, &r, false);
        ss->last_seen = now;
        ss->last_ctx = p->ctx;
        ss->sig = p->sig;
    }
    if (p->user != ENG_NONE) {
        struct user *u = &e->us[p->user];
        push_rec(e, &u->ring, &r, true);
        u->last_seen = now;
        u->last_ctx = p->ctx;
        u->sig = p->sig;
    }
}

static void evict_step(struct eng *e, uint64_t budget, int64_t now)
{
    if (budget > e->ss_hi)
        budget = e->ss_hi;
    while (budget--) {
        if (e->evict_cur >= e->ss_hi)
            e->evict_cur = 0;
        uint32_t si = e->evict_cur++;
        struct sess *ss = &e->ss[si];
        if (ss->slen && ss->pend == 0 && eng_sess_expired(e, ss, now)) {
            sess_free(e, si);
            e->sessions_evicted++;
        }
    }
}

static int check_usable(const struct eng *e, struct eng_err *err)
{
    if (e->broken) {
        eng_errf(err, -1, "engine: a restore failed; destroy this engine");
        return ENG_EINVAL;
    }
    return ENG_OK;
}

/* ---- the batch pipeline -------------------------------------------------------
 *
 * One interaction chases pointers three deep: index slots, then the short,
 * session and user they name, then a viewer-set slot and a ring slot. Done
 * one at a time each level is a cache miss the CPU waits for. In a batch,
 * while element i is planned, the slots of i + PF_SLOTS are fetched, the
 * entities of i + PF_ITEMS (whose slots should have arrived by now) and the
 * set and ring slots of i + PF_DEEP, so the misses of many elements are in
 * flight at once. Lookups here only read; a stale guess costs nothing.
 */
#define PF_SLOTS 24
#define PF_ITEMS 16
#define PF_DEEP 8

static uint32_t sess_peek(const struct eng *e, uint64_t hash)
{
    uint32_t v = idx_find(&e->ss_idx, hash);
    return v ? v - 1 : ENG_NONE;
}

static void pf_lines(const void *p, size_t n)
{
    for (size_t off = 0; off < n; off += 64)
        __builtin_prefetch((const char *)p + off);
}

/* A context is written (its refcounts) and its session id read (the
 * session's identity check): the id crosses into the next line. */
static void pf_ctx(const struct eng *e, uint32_t id)
{
    __builtin_prefetch(&e->cx[id], 1);
    __builtin_prefetch((const char *)&e->cx[id] + 64);
}

static void pf_ring_tail(const struct ring *r)
{
    if (r->cap) {
        uint32_t pos = r->start + r->len;
        if (pos >= r->cap)
            pos -= r->cap;
        __builtin_prefetch(&r->recs[pos], 1);
    }
}

static void pf_slots(const struct eng *e, const struct eng_ix *ix, const struct plan *p)
{
    idx_prefetch(&e->sh_idx, ix->short_id);
    if (ix->session)
        idx_prefetch(&e->ss_idx, p->shash);
    if (ix->user)
        idx_prefetch(&e->us_idx, ix->user);
}

/* The entities an interaction names, looked up: short, session and user
 * (ENG_NONE where not named or not found), each fetched as soon as found
 * when fetch (the next lookup's miss then overlaps it). Inlined so that
 * fetch folds away and the ids stay in registers. */
__attribute__((always_inline)) static inline void pf_find(const struct eng *e, uint64_t short_id,
                                                          bool sess, uint64_t shash, uint64_t user,
                                                          bool fetch, uint32_t *six, uint32_t *si,
                                                          uint32_t *ui)
{
    uint32_t v = idx_find(&e->sh_idx, short_id);
    *six = v ? v - 1 : ENG_NONE;
    if (fetch && v)
        pf_lines(&e->sh[v - 1], sizeof(struct shrt));
    *si = sess ? sess_peek(e, shash) : ENG_NONE;
    if (fetch && *si != ENG_NONE)
        pf_lines(&e->ss[*si], sizeof(struct sess));
    v = user ? idx_find(&e->us_idx, user) : 0;
    *ui = v ? v - 1 : ENG_NONE;
    if (fetch && v)
        __builtin_prefetch(&e->us[v - 1]);
}

/* In a batch the lookups are made once: what this stage finds is kept in
 * the plan, for pf_deep and plan_one (which looks again only when it found
 * nothing). A found id stays valid until the element is planned: planning
 * only creates shorts, sessions and users; it deletes none. */
static void pf_items(const struct eng *e, const struct eng_ix *ix, struct plan *p)
{
    pf_find(e, ix->short_id, ix->session != NULL, p->shash, ix->user, true, &p->six, &p->sess,
            &p->user);
}

/* One level deeper: the viewer/saver set slot, the ring slot to write and
 * the context the record will pin: the session's newest when the
 * interaction names a session (sess), else the user's. */
static void pf_deeper(const struct eng *e, int32_t type, uint64_t fp, bool sess, uint32_t six,
                      uint32_t si, uint32_t ui)
{
    if (six != ENG_NONE) {
        const struct shrt *s = &e->sh[six];
        if (type == ENG_T_IMPRESSION || type == ENG_T_VIEW)
            vset_prefetch(&s->viewers, fp);
        else if (type == ENG_T_SAVE)
            vset_prefetch(&s->savers, fp);
    }
    uint32_t last = 0;
    if (si != ENG_NONE) {
        pf_ring_tail(&e->ss[si].ring);
        last = e->ss[si].last_ctx;
    }
    if (ui != ENG_NONE) {
        pf_ring_tail(&e->us[ui].ring);
        if (!sess)
            last = e->us[ui].last_ctx;
    }
    if (last)
        pf_ctx(e, last);
}

static void pf_deep(const struct eng *e, const struct eng_ix *ix, const struct plan *p)
{
    pf_deeper(e, ix->type, p->fp, ix->session != NULL, p->six, p->sess, p->user);
}

/* Apply-phase prefetch: a long batch's early elements have left the cache
 * by the time it is applied. */
static void pf_commit(const struct eng *e, const struct eng_ix *ix, const struct plan *p)
{
    const struct shrt *s = &e->sh[p->six];
    pf_lines(s, sizeof(*s));
    if (ix->type == ENG_T_IMPRESSION || ix->type == ENG_T_VIEW)
        vset_prefetch(&s->viewers, p->fp);
    else if (ix->type == ENG_T_SAVE)
        vset_prefetch(&s->savers, p->fp);
    if (p->sess != ENG_NONE) {
        __builtin_prefetch(&e->ss[p->sess], 1);
        pf_ring_tail(&e->ss[p->sess].ring);
    }
    if (p->user != ENG_NONE) {
        __builtin_prefetch(&e->us[p->user], 1);
        pf_ring_tail(&e->us[p->user].ring);
    }
}

static int apply(struct eng *e, const struct eng_ix *ixs, size_t n, struct plan *pl,
                 struct undo *ub, bool single, struct eng_err *err)
{
    int rc = check_usable(e, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++) {
        rc = validate(e, &ixs[i], &pl[i], single ? -1 : (int32_t)i, err);
        if (rc)
            return rc;
        prehash(&ixs[i], &pl[i]);
        pl[i].six = pl[i].sess = pl[i].user = ENG_NONE;
        if (i < PF_SLOTS)
            pf_slots(e, &ixs[i], &pl[i]);
        if (i + 8 < n && ixs[i + 8].session)
            __builtin_prefetch(ixs[i + 8].session);  /* the caller's strings */
    }
    /* Fill the pipeline: the first elements get every stage too, a level
     * at a time, so a short batch (a server's read of a few commands) has
     * its misses of one level in flight together, not one after another. */
    for (size_t i = 0; i < n && i < PF_ITEMS; i++)
        pf_items(e, &ixs[i], &pl[i]);
    for (size_t i = 0; i < n && i < PF_DEEP; i++)
        pf_deep(e, &ixs[i], &pl[i]);
    int64_t now = eng_now(e);
    struct undo_log ul = {ub, 0};
    for (size_t i = 0; i < n; i++) {
        if (i + PF_SLOTS < n)
            pf_slots(e, &ixs[i + PF_SLOTS], &pl[i + PF_SLOTS]);
        if (i + PF_ITEMS < n)
            pf_items(e, &ixs[i + PF_ITEMS], &pl[i + PF_ITEMS]);
        if (i + PF_DEEP < n)
            pf_deep(e, &ixs[i + PF_DEEP], &pl[i + PF_DEEP]);
        rc = plan_one(e, &ixs[i], pl, i, &ul, now, single ? -1 : (int32_t)i, err);
        if (rc) {
            rollback(e, pl, i + 1, &ul);
            return rc;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (n > 64 && i + PF_ITEMS < n)
            pf_commit(e, &ixs[i + PF_ITEMS], &pl[i + PF_ITEMS]);
        commit_one(e, &ixs[i], &pl[i], now);
    }
    scratch_clear(e, pl, n);
    e->now = now;
    evict_step(e, (uint64_t)EVICT_PER_RECORD * n, now);
    return ENG_OK;
}

int eng_record(struct eng *e, const struct eng_ix *ix, struct eng_err *err)
{
    struct plan p;
    struct undo u[UNDO_PER_IX];
    err_ok(err);
    return apply(e, ix, 1, &p, u, true, err);
}

int eng_record_batch(struct eng *e, const struct eng_ix *ixs, size_t n, struct eng_err *err)
{
    err_ok(err);
    if (n == 0)
        return check_usable(e, err);
    size_t per = sizeof(struct plan) + UNDO_PER_IX * sizeof(struct undo);
    if (n > (SIZE_MAX / 2) / per) {
        eng_errf(err, -1, "batch: too large");
        return ENG_EINVAL;
    }
    if (n * per > e->scratch_bytes) {
        size_t bytes = n * per < 65536 ? 65536 : n * per;
        void *p = mem_alloc(&e->mem, MEM_OTHER, bytes);
        if (!p) {
            eng_errf(err, -1, "memory: out of memory");
            return ENG_ENOMEM;
        }
        mem_free(&e->mem, MEM_OTHER, e->scratch, e->scratch_bytes);
        e->scratch = p;
        e->scratch_bytes = bytes;
    }
    struct plan *pl = e->scratch;
    struct undo *ub = (struct undo *)(pl + n);
    int rc = apply(e, ixs, n, pl, ub, false, err);
    if (e->scratch_bytes > ((size_t)16 << 20)) {  /* one huge batch: do not keep it */
        mem_free(&e->mem, MEM_OTHER, e->scratch, e->scratch_bytes);
        e->scratch = NULL;
        e->scratch_bytes = 0;
    }
    return rc;
}

bool eng_short_known(const struct eng *e, uint64_t short_id)
{
    return short_id && idx_find(&e->sh_idx, short_id) != 0;
}

int eng_reserve(struct eng *e, uint64_t n, struct eng_err *err)
{
    err_ok(err);
    int rc = check_usable(e, err);
    if (rc)
        return rc;
    if (n > ENG_SHORTS_MAX - e->nsh) {
        eng_errf(err, -1, "shorts: more than %llu", (unsigned long long)ENG_SHORTS_MAX);
        return ENG_ELIMIT;
    }
    if (eng_reserve_shorts(e, n)) {
        eng_errf(err, -1, "memory: out of memory");
        return ENG_ENOMEM;
    }
    return ENG_OK;
}

int eng_set_boost(struct eng *e, uint64_t short_id, int64_t boost, struct eng_err *err)
{
    err_ok(err);
    int rc = check_usable(e, err);
    if (rc)
        return rc;
    if (short_id == 0) {
        eng_errf(err, -1, "short_id: must be at least 1");
        return ENG_EINVAL;
    }
    if (boost < 0 || boost > ENG_BOOST_MAX) {
        eng_errf(err, -1, "boost: must be 0..%u", ENG_BOOST_MAX);
        return ENG_EINVAL;
    }
    uint32_t v = idx_find(&e->sh_idx, short_id);
    uint32_t ix;
    if (v) {
        ix = v - 1;
    } else {
        if (eng_reserve_shorts(e, 1)) {
            eng_errf(err, -1, "memory: out of memory");
            return ENG_ENOMEM;
        }
        ix = eng_short_new(e, short_id);
    }
    e->sh[ix].boost = (uint8_t)boost;
    eng_mark_dirty(e, ix);
    return ENG_OK;
}

/* The batch pipeline's stages, spread over successive calls: this call
 * fetches ix's index slots, the entities of the interaction given
 * PFQ_ITEMS calls ago (its slots should have arrived) and the set, ring and
 * context lines of the one PFQ_DEEP calls ago. A caller prefetching d >=
 * PFQ_DEEP ahead of eng_record so has all three levels in flight. */
#define PFQ_ITEMS 4u
#define PFQ_DEEP 8u

void eng_prefetch(const struct eng *e, const struct eng_ix *ix)
{
    if (e->broken)
        return;
    struct eng *m = (struct eng *)(uintptr_t)e;  /* hint state only; see eng_int.h */
    struct eng_pfq *q = &m->pfq[m->pfq_n & (ENG_PFQ - 1)];
    q->short_id = ix->short_id;
    q->type = ix->type;
    q->user = ix->user;
    q->sess = ix->session && ix->session_len >= 1 && ix->session_len <= ENG_SESSION_MAX;
    q->shash = q->sess ? eng_fp_session(ix->session, ix->session_len) : 0;
    q->fp = ix->user ? eng_fp_user(ix->user) : q->shash;
    idx_prefetch(&e->sh_idx, q->short_id);
    if (q->sess)
        idx_prefetch(&e->ss_idx, q->shash);
    if (q->user)
        idx_prefetch(&e->us_idx, q->user);
    uint32_t n = m->pfq_n++;
    /* Earlier elements are looked up again, not remembered: between two
     * calls eng_record may free a session a remembered slot named. */
    uint32_t six, si, ui;
    if (n >= PFQ_ITEMS) {
        const struct eng_pfq *a = &m->pfq[(n - PFQ_ITEMS) & (ENG_PFQ - 1)];
        pf_find(e, a->short_id, a->sess, a->shash, a->user, true, &six, &si, &ui);
    }
    if (n >= PFQ_DEEP) {
        const struct eng_pfq *d = &m->pfq[(n - PFQ_DEEP) & (ENG_PFQ - 1)];
        pf_find(e, d->short_id, d->sess, d->shash, d->user, false, &six, &si, &ui);
        pf_deeper(e, d->type, d->fp, d->sess, six, si, ui);
    }
}

void eng_tick(struct eng *e, uint32_t budget)
{
    if (e->broken)
        return;
    int64_t now = eng_now(e);
    e->now = now;
    evict_step(e, budget, now);
    /* Inserts drive a growth in progress; this only finishes one that
     * inserts stopped feeding, in steps small enough not to be noticed. */
    uint32_t slots = budget / 16 + 1;
    idx_migrate(&e->sh_idx, &e->mem, slots);
    idx_migrate(&e->ss_idx, &e->mem, slots);
    idx_migrate(&e->us_idx, &e->mem, slots);
    idx_migrate(&e->ua_idx, &e->mem, slots);
    idx_migrate(&e->pl_idx, &e->mem, slots);
}

/* ---- queries -------------------------------------------------------------------------- */

static void score_input(const struct shrt *s, struct score_in *in)
{
    in->impressions = s->count[ENG_T_IMPRESSION];
    in->views = s->count[ENG_T_VIEW];
    in->watch_sum = s->watch_sum;
    in->watch_n = s->watch_n;
    in->saves = s->count[ENG_T_SAVE];
    in->shares = s->count[ENG_T_SHARE];
    in->skips = s->count[ENG_T_SKIP];
    in->contacts = s->count[ENG_T_CONTACT];
    in->whatsapps = s->count[ENG_T_WHATSAPP];
    in->book_viewings = s->count[ENG_T_BOOK_VIEWING];
    in->boost = s->boost;
}

double eng_metric_value(const struct eng *e, uint32_t ix, enum eng_metric m)
{
    const struct shrt *s = &e->sh[ix];
    uint64_t vc = s->count[ENG_T_IMPRESSION] + s->count[ENG_T_VIEW];
    switch (m) {
    case ENG_M_SCORE: {
        struct score_in in;
        score_input(s, &in);
        return score_compute(&in);
    }
    case ENG_M_VIEW_COUNT: return (double)vc;
    case ENG_M_UNIQUE_VIEWERS: return (double)s->viewers.n;
    case ENG_M_SAVES: return (double)s->count[ENG_T_SAVE];
    case ENG_M_SHARES: return (double)s->count[ENG_T_SHARE];
    case ENG_M_ENGAGEMENT_RATE: {
        if (vc == 0)
            return 0.0;
        uint64_t eng = s->count[ENG_T_SAVE] + s->count[ENG_T_SHARE] + s->count[ENG_T_CONTACT] +
                       s->count[ENG_T_WHATSAPP] + s->count[ENG_T_BOOK_VIEWING];
        return (double)eng / (double)vc;
    }
    case ENG_M_AVG_WATCH_MS:
        return s->watch_n ? (double)s->watch_sum / (double)s->watch_n : 0.0;
    case ENG_M_IMPRESSIONS: return (double)s->count[ENG_T_IMPRESSION];
    case ENG_M_VIEWS: return (double)s->count[ENG_T_VIEW];
    case ENG_M_SKIPS: return (double)s->count[ENG_T_SKIP];
    case ENG_M_CONTACTS: return (double)s->count[ENG_T_CONTACT];
    case ENG_M_WHATSAPPS: return (double)s->count[ENG_T_WHATSAPP];
    case ENG_M_BOOK_VIEWINGS: return (double)s->count[ENG_T_BOOK_VIEWING];
    case ENG_M_BOOST: return (double)s->boost;
    case ENG_M_LAST_TS: return (double)s->last_ts;
    case ENG_M_COUNT: break;
    }
    return 0.0;
}

void eng_stats(struct eng *e, uint64_t short_id, struct eng_stats *out)
{
    memset(out, 0, sizeof(*out));
    uint32_t v = short_id ? idx_find(&e->sh_idx, short_id) : 0;
    if (!v)
        return;
    uint32_t ix = v - 1;
    const struct shrt *s = &e->sh[ix];
    const struct shrt_cold *c = &e->shc[ix];
    out->impressions = s->count[ENG_T_IMPRESSION];
    out->views = s->count[ENG_T_VIEW];
    out->view_count = out->impressions + out->views;
    out->unique_viewers = s->viewers.n;
    out->saves = s->count[ENG_T_SAVE];
    out->shares = s->count[ENG_T_SHARE];
    out->skips = s->count[ENG_T_SKIP];
    out->contacts = s->count[ENG_T_CONTACT];
    out->whatsapps = s->count[ENG_T_WHATSAPP];
    out->book_viewings = s->count[ENG_T_BOOK_VIEWING];
    out->avg_watch_ms = eng_metric_value(e, ix, ENG_M_AVG_WATCH_MS);
    out->engagement_rate = eng_metric_value(e, ix, ENG_M_ENGAGEMENT_RATE);
    out->score = eng_metric_value(e, ix, ENG_M_SCORE);
    out->boost = s->boost;
    out->last_ts = s->last_ts;
    for (uint32_t i = 0; i < c->nplat; i++) {
        e->pc[i].name = e->pl[c->plat_ids[i]].name;
        e->pc[i].shares = c->plat_shares[i];
    }
    out->platforms = c->nplat ? e->pc : NULL;
    out->nplatforms = c->nplat;
}

/* Bring column m up to date: the shorts on its dirty list are random, so
 * fetch a few ahead. */
static void refresh_column(struct eng *e, enum eng_metric m)
{
    uint32_t *list = e->dirty[m], n = e->ndirty[m];
    double *col = e->col[m];
    uint16_t bit = (uint16_t)(1u << m);
    /* counts are in a short's first line; the rest needs the second too */
    bool two = m == ENG_M_SCORE || m == ENG_M_UNIQUE_VIEWERS || m == ENG_M_AVG_WATCH_MS ||
               m == ENG_M_BOOST || m == ENG_M_LAST_TS;
    for (uint32_t d = 0; d < n; d++) {
        if (d + 16 < n) {
            const char *p = (const char *)&e->sh[list[d + 16]];
            __builtin_prefetch(p);
            if (two)
                __builtin_prefetch(p + 64);
            __builtin_prefetch(&col[list[d + 16]], 1);
        }
        uint32_t ix = list[d];
        e->sh[ix].cdirty &= (uint16_t)~bit;
        col[ix] = eng_metric_value(e, ix, m);
    }
    e->ndirty[m] = 0;
}

/* A column for m, computed for every short (its first TOP). */
static int make_column(struct eng *e, enum eng_metric m)
{
    size_t cap = e->sh_cap ? e->sh_cap : 1;
    double *col = mem_alloc(&e->mem, MEM_OTHER, cap * sizeof(double));
    uint32_t *dirty = mem_alloc(&e->mem, MEM_OTHER, cap * sizeof(uint32_t));
    if (!col || !dirty) {
        mem_free(&e->mem, MEM_OTHER, col, cap * sizeof(double));
        mem_free(&e->mem, MEM_OTHER, dirty, cap * sizeof(uint32_t));
        return -1;
    }
    for (uint32_t i = 0; i < e->nsh; i++)
        col[i] = eng_metric_value(e, i, m);
    e->col[m] = col;
    e->dirty[m] = dirty;
    e->ndirty[m] = 0;
    e->colmask |= (uint16_t)(1u << m);
    return 0;
}

/* Heap of the best k so far with the worst at the root. */
static bool worse(const struct eng_top_item *a, const struct eng_top_item *b)
{
    return a->value < b->value || (a->value == b->value && a->short_id > b->short_id);
}

static void sift_down(struct eng_top_item *h, uint32_t n, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && worse(&h[l], &h[w]))
            w = l;
        if (r < n && worse(&h[r], &h[w]))
            w = r;
        if (w == i)
            return;
        struct eng_top_item t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static void sift_up(struct eng_top_item *h, uint32_t i)
{
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!worse(&h[i], &h[p]))
            return;
        struct eng_top_item t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

int eng_top(struct eng *e, enum eng_metric by, uint32_t k, struct eng_top_item *out,
            struct eng_err *err)
{
    err_ok(err);
    if ((unsigned)by >= ENG_M_COUNT) {
        eng_errf(err, -1, "by: unknown metric");
        return ENG_EINVAL;
    }
    if (k < 1 || k > ENG_TOPK_MAX) {
        eng_errf(err, -1, "k: must be 1..%u", ENG_TOPK_MAX);
        return ENG_EINVAL;
    }
    if (!e->col[by] && e->sh_cap && make_column(e, by)) {
        eng_errf(err, -1, "memory: out of memory");
        return ENG_ENOMEM;
    }
    if (!e->col[by])
        return 0;  /* no shorts yet */
    refresh_column(e, by);

    /* The heap lives in out: it has room for k items. */
    const double *col = e->col[by];
    const uint64_t *ids = e->sid;
    uint32_t n = 0;
    for (uint32_t i = 0; i < e->nsh; i++) {
        double v = col[i];
        if (n < k) {
            out[n].short_id = ids[i];
            out[n].value = v;
            sift_up(out, n++);
            continue;
        }
        if (v < out[0].value || (v == out[0].value && ids[i] > out[0].short_id))
            continue;
        out[0].short_id = ids[i];
        out[0].value = v;
        sift_down(out, n, 0);
    }
    /* Heap-sort in place: repeatedly move the worst to the end. */
    for (uint32_t m = n; m > 1; m--) {
        struct eng_top_item t = out[0];
        out[0] = out[m - 1];
        out[m - 1] = t;
        sift_down(out, m - 1, 0);
    }
    return (int)n;
}

static void decode(const struct eng *e, const struct rec *r, struct eng_history_rec *o)
{
    memset(o, 0, sizeof(*o));
    o->short_id = e->sid[r->short_ix];
    o->ts = rec_ts(r);
    o->type = (enum eng_type)rec_type(r);
    o->has_watch = rec_has_watch(r);
    o->watch_ms = rec_watch_ms(r);
    uint16_t pl = rec_platform(r);
    if (pl) {
        o->platform = e->pl[pl].name;
        o->platform_len = e->pl[pl].len;
    }
    if (r->ctx) {
        const struct ctx *c = &e->cx[r->ctx];
        o->user = c->user;
        if (c->slen) {
            o->session = c->sid;
            o->session_len = c->slen;
        }
        if (c->fam)
            inet_ntop(c->fam == 4 ? AF_INET : AF_INET6, c->ip, o->ip, sizeof(o->ip));
        if (c->ua) {
            o->ua = e->ua[c->ua].s;
            o->ua_len = e->ua[c->ua].len;
        }
    }
}

static size_t history(const struct eng *e, const struct ring *r, struct eng_history_rec *out,
                      size_t limit)
{
    size_t n = r->len < limit ? r->len : limit;
    for (size_t i = 0; i < n; i++)
        decode(e, ring_newest(r, (uint32_t)i), &out[i]);
    return n;
}

size_t eng_history_session(struct eng *e, const char *session, size_t len,
                           struct eng_history_rec *out, size_t limit)
{
    if (!eng_session_ok(session, len))
        return 0;
    uint32_t si = eng_sess_find(e, eng_fp_session(session, len), session, len);
    /* What one query found expired stays so: the time it judged by is kept. */
    e->now = eng_now(e);
    if (si == ENG_NONE || eng_sess_expired(e, &e->ss[si], e->now))
        return 0;
    return history(e, &e->ss[si].ring, out, limit);
}

size_t eng_history_user(struct eng *e, uint64_t user, struct eng_history_rec *out, size_t limit)
{
    uint32_t v = user ? idx_find(&e->us_idx, user) : 0;
    if (!v)
        return 0;
    return history(e, &e->us[v - 1].ring, out, limit);
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void eng_session_new(struct eng *e, char out[ENG_SID_LEN + 1])
{
    uint8_t b[16];
    if (e->random) {
        e->random(e->ud, b, sizeof(b));
    } else {
        size_t got = 0;
        while (got < sizeof(b)) {
            ssize_t r = getrandom(b + got, sizeof(b) - got, 0);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        if (got < sizeof(b)) {
            for (size_t i = 0; i < sizeof(b); i += 8) {
                uint64_t x = splitmix(&e->rng) ^ (uint64_t)eng_clock_now(e);
                memcpy(b + i, &x, 8);
            }
        }
    }
    static const char hex[] = "0123456789abcdef";
    out[0] = 'g';
    out[1] = '-';
    for (size_t i = 0; i < sizeof(b); i++) {
        out[2 + 2 * i] = hex[b[i] >> 4];
        out[3 + 2 * i] = hex[b[i] & 15];
    }
    out[ENG_SID_LEN] = 0;
}

uint64_t eng_mem_total(const struct eng *e)
{
    uint64_t n = sizeof(*e);
    for (int c = 0; c < MEM_NCAT; c++)
        n += e->mem.bytes[c];
    return n;
}

void eng_info(const struct eng *e, struct eng_info *out)
{
    memset(out, 0, sizeof(*out));
    out->shorts = e->nsh;
    out->sessions = e->nss;
    out->users = e->nus;
    out->interactions = e->interactions;
    memcpy(out->by_type, e->by_type, sizeof(out->by_type));
    out->records = e->records;
    out->viewer_pairs = e->viewer_pairs;
    out->sessions_evicted = e->sessions_evicted;
    out->mem_total = eng_mem_total(e);
    out->mem_records = e->mem.bytes[MEM_RECORDS];
    out->mem_viewers = e->mem.bytes[MEM_VIEWERS];
    out->history = e->history;
    out->session_ttl_ms = e->ttl;
}
