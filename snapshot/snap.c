/* SPDX-License-Identifier: MIT */
/*
 * snap.c -- the engine's whole state to a file and back.
 *
 * File = header (120 bytes, own XXH64) | chunks | footer (32 bytes, XXH64
 * over everything before its checksum field). A chunk is a 16-byte header
 * (section tag, item count, raw length, frame length) and one LZ4 frame with
 * block and content checksums. Sections come in a fixed order -- platforms,
 * user agents, shorts, session rings, user rings, totals -- each as zero or
 * more chunks of about SNAP_CHUNK_TARGET raw bytes holding whole items, so a
 * reader can stream a file chunk by chunk. docs/snapshot-format.md is the
 * byte table; keep it in step with this file.
 *
 * Why the body is shaped this way (about 22 bytes per interaction of the
 * benchmark workload, a third of Redis's RDB; the target was half):
 * - Rings carry their own contexts. Each ring lists the contexts its records
 *   use (a record then names one by a 3-bit local index); the first listing
 *   of a context in the file defines it and implicitly numbers it 1, 2, ...;
 *   a later listing (a signed-in session's context again in the user's ring)
 *   repeats it by id. So rings decode without a global table (bounded-memory
 *   dump) and contexts are renumbered densely, as are user agents (engine
 *   ids have holes; a reader then accepts only 1, 2, 3, ... and a damaged
 *   file cannot make the engine size a table by a wild id). The loader
 *   reads the rings once: it creates the shorts by id first
 *   (eng_restore_short_ids), restores each run of rings after the contexts
 *   they define, and fills the shorts in last, when the rings have given
 *   their implied viewers.
 * - Viewer and saver sets are mostly implied by history: a retained
 *   impression/view (save) record means its viewer's fingerprint is in the
 *   short's viewer (saver) set. Per set, the writer checks the implied
 *   fingerprints really are members and then stores only the rest (viewers of
 *   records that rolled out of a ring or were evicted), sorted, as
 *   delta-varints or fixed 8 bytes, whichever is smaller. If the check fails
 *   (say the engine's fingerprint changed) that set is stored in full.
 * - Records are varints: ts as a delta from the next-newer record, newest
 *   first from the ring's last_seen; type, flags and context index in one
 *   byte.
 *
 * Safety: the loader checks the footer checksum over the whole image before
 * it touches the engine, then every frame's checksums, then decodes through
 * a cursor with an end pointer (SQLite's aDataEnd idea), so a bad file is an
 * error with an offset, never a crash. Counts in the header must match what
 * the body holds. Writing goes to a temp file, fsync, rename, fsync dir.
 */
#include "snapshot/snap.h"
#include "snapshot/snap_int.h"
#include "snapshot/snap_test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lz4frame.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#define SNAP_CHUNK_TARGET (1u << 20)
static const char SNAP_MAGIC[8] = {'S', 'H', 'S', 'T', 'S', 'N', 'A', 'P'};
static const char SNAP_END[8] = {'S', 'H', 'S', 'T', 'E', 'N', 'D', '\n'};
static const char SNAP_TAGS[SNAP_SEC_COUNT][4] = {
    {'P', 'L', 'A', 'T'}, {'U', 'A', 'G', 'T'}, {'S', 'H', 'R', 'T'},
    {'S', 'E', 'S', 'S'}, {'U', 'S', 'E', 'R'}, {'T', 'O', 'T', 'L'},
};

/* Record head byte and context entry flags (docs/snapshot-format.md). */
enum {
    REC_WATCH = 1u << 3,
    REC_PLAT = 1u << 4,
    REC_CTX_SHIFT = 5,
    REC_CTX_EXT = 7,        /* local index >= 7 follows as a varint */
};
enum {
    CTX_REF = 1u << 0,
    CTX_USER = 1u << 1,
    CTX_USER_OWNER = 1u << 2,
    CTX_SESS = 1u << 3,
    CTX_SESS_OWNER = 1u << 4,
    CTX_IP_SHIFT = 5,       /* 2 bits: 0 none, 1 v4, 2 v6 */
    CTX_UA = 1u << 7,
};
enum {
    SET_V_IMPLIED = 1u << 0, SET_V_FIXED = 1u << 1,
    SET_S_IMPLIED = 1u << 2, SET_S_FIXED = 1u << 3,
};
#define SESS_GHEX 0xffu     /* session string as "g-" + 32 hex, packed */

/* The header's counts: struct eng_walk_counts's fields, in order, each a
 * u64 from SNAP_HDR_COUNTS on; CN_* are their places. */
#define SNAP_HDR_COUNTS 40u
enum { CN_PLAT, CN_UAS, CN_CTXS, CN_SHORTS, CN_SESS, CN_USERS, CN_RECORDS, CN_VPAIRS, CN_SPAIRS,
       CN_N };
_Static_assert(sizeof(struct eng_walk_counts) == CN_N * sizeof(uint64_t) &&
                   offsetof(struct eng_walk_counts, sessions) == CN_SESS * sizeof(uint64_t) &&
                   offsetof(struct eng_walk_counts, saver_pairs) == CN_SPAIRS * sizeof(uint64_t),
               "counts layout");
static const char *const count_names[CN_N] = {"platforms", "uas", "ctxs", "shorts", "sessions",
                                              "users", "records", "viewer_pairs", "saver_pairs"};

static uint64_t count_get(const struct eng_walk_counts *c, int i)
{
    uint64_t v;
    memcpy(&v, (const char *)c + (size_t)i * sizeof v, sizeof v);
    return v;
}

static void count_set(struct eng_walk_counts *c, int i, uint64_t v)
{
    memcpy((char *)c + (size_t)i * sizeof v, &v, sizeof v);
}

/* Where count i lies in the header, for errors about it. */
static uint64_t count_off(int i)
{
    return SNAP_HDR_COUNTS + (uint64_t)i * sizeof(uint64_t);
}

const char *snap_strerror(int rc)
{
    switch (rc) {
    case SNAP_OK: return "ok";
    case SNAP_EIO: return "I/O error";
    case SNAP_ENOENT: return "no snapshot file";
    case SNAP_EFOREIGN: return "not a shortstat snapshot";
    case SNAP_EVERSION: return "written by a newer shortstat";
    case SNAP_ECORRUPT: return "corrupt snapshot";
    case SNAP_ENOMEM: return "out of memory";
    case SNAP_EPARAM: return "incompatible engine parameters";
    case SNAP_EBUSY: return "data directory in use";
    default: return "unknown error";
    }
}

const char *snap_err_reason(const struct snap_err *err, const char *path)
{
    size_t n = strlen(path);
    return strncmp(err->msg, path, n) == 0 && err->msg[n] == ':' && err->msg[n + 1] == ' '
               ? err->msg + n + 2 : err->msg;
}

const char *snap_sec_name(int sec)
{
    static const char *names[SNAP_SEC_COUNT] = {"PLAT", "UAGT", "SHRT", "SESS", "USER", "TOTL"};
    return sec >= 0 && sec < SNAP_SEC_COUNT ? names[sec] : "?";
}

__attribute__((format(printf, 4, 5)))
static int fail(struct snap_err *err, int rc, uint64_t offset, const char *fmt, ...)
{
    if (err) {
        err->offset = offset;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return rc;
}

uint64_t snap_xxh64(const void *p, size_t len) { return XXH64(p, len, 0); }

uint64_t snap_fp_user(uint64_t user)
{
    uint8_t b[9] = {'u'};
    for (int i = 0; i < 8; i++)
        b[1 + i] = (uint8_t)(user >> (8 * i));
    uint64_t h = XXH3_64bits(b, sizeof b);
    return h ? h : 1;
}

uint64_t snap_fp_session(const char *s, size_t len)
{
    uint8_t b[1 + ENG_SESSION_MAX] = {'s'};
    if (len > ENG_SESSION_MAX)
        len = ENG_SESSION_MAX;
    memcpy(b + 1, s, len);
    uint64_t h = XXH3_64bits(b, len + 1);
    return h ? h : 1;
}

/* Fresh 4 KiB pages are slow to fault in on our VMs (several ms per MiB);
 * ask for transparent huge pages on big temporaries before touching them. */
static void *hint_huge(void *p, size_t n)
{
    const uintptr_t huge = (uintptr_t)2 << 20;
    if (p && n >= 2 * huge) {
        uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1), b = ((uintptr_t)p + n) & ~(huge - 1);
        if (b > a)
            madvise((void *)a, b - a, MADV_HUGEPAGE);
    }
    return p;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- little-endian fixed fields and varints -------------------------------- */

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static inline uint64_t zz_enc(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }
static inline int64_t zz_dec(uint64_t v) { return (int64_t)(v >> 1) ^ -(int64_t)(v & 1); }

static inline size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* ---- growable byte buffer (writer side) ------------------------------------ */

struct sbuf {
    uint8_t *p;
    size_t len, cap;
    bool oom;
};

static bool sbuf_reserve(struct sbuf *b, size_t more)
{
    if (b->oom)
        return false;
    if (b->len + more <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void put_u8(struct sbuf *b, uint8_t v)
{
    if (sbuf_reserve(b, 1))
        b->p[b->len++] = v;
}

static void put_bytes(struct sbuf *b, const void *p, size_t n)
{
    if (n && sbuf_reserve(b, n)) {
        memcpy(b->p + b->len, p, n);
        b->len += n;
    }
}

static void put_varint(struct sbuf *b, uint64_t v)
{
    if (!sbuf_reserve(b, 10))
        return;
    uint8_t *p = b->p + b->len;
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    b->len = (size_t)(p - b->p);
}

static void put_fixed64(struct sbuf *b, uint64_t v)
{
    if (sbuf_reserve(b, 8)) {
        put_le(b->p + b->len, v, 8);
        b->len += 8;
    }
}

/* Lowercase hex digit values + 1; everything else 0. */
static const uint8_t HEXVAL1[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7, ['7'] = 8,
    ['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
};

/* Guest ids ("g-" + 32 lowercase hex) pack into 16 bytes; anything else is
 * stored as length + bytes. */
static void put_session(struct sbuf *b, const char *s, size_t len)
{
    if (len == ENG_SID_LEN && s[0] == 'g' && s[1] == '-') {
        uint8_t out[17] = {SESS_GHEX};
        bool ok = true;
        for (size_t i = 0; i < 16; i++) {
            unsigned hi = HEXVAL1[(unsigned char)s[2 + 2 * i]];
            unsigned lo = HEXVAL1[(unsigned char)s[3 + 2 * i]];
            ok &= hi != 0 && lo != 0;
            out[1 + i] = (uint8_t)((hi - 1) << 4 | ((lo - 1) & 15));
        }
        if (ok) {
            put_bytes(b, out, sizeof out);
            return;
        }
    }
    put_u8(b, (uint8_t)len);
    put_bytes(b, s, len);
}

/* ---- chunked, compressed, checksummed output -------------------------------- */

struct wr {
    snap_write_fn fn;
    void *ud;
    XXH64_state_t xxh;
    uint64_t bytes, raw_bytes;
    int sec;                  /* section of the chunk being filled, -1 none */
    uint32_t nitems;
    struct sbuf raw, out;
    LZ4F_cctx *cctx;
    struct snap_err *err;
    int rc;                   /* first error, sticky */
};

static int wr_emit(struct wr *w, const void *p, size_t n)
{
    if (w->rc)
        return w->rc;
    XXH64_update(&w->xxh, p, n);
    if (w->fn(w->ud, p, n) != 0)
        return w->rc = fail(w->err, SNAP_EIO, w->bytes, "write failed at byte %" PRIu64, w->bytes);
    w->bytes += n;
    return 0;
}

static int wr_flush(struct wr *w)
{
    if (w->rc)
        return w->rc;
    if (w->sec < 0 || w->nitems == 0)
        return 0;
    if (w->raw.oom || w->raw.len > SNAP_CHUNK_MAX)
        return w->rc = fail(w->err, w->raw.oom ? SNAP_ENOMEM : SNAP_EIO, w->bytes,
                            "%s chunk: %s", snap_sec_name(w->sec),
                            w->raw.oom ? "out of memory" : "item larger than 1 GiB");
    LZ4F_preferences_t prefs;
    memset(&prefs, 0, sizeof prefs);
    prefs.frameInfo.blockSizeID = LZ4F_max256KB;   /* small decoder buffers; linked keeps the ratio */
    prefs.frameInfo.blockMode = LZ4F_blockLinked;
    prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
    prefs.frameInfo.blockChecksumFlag = LZ4F_blockChecksumEnabled;
    prefs.frameInfo.contentSize = w->raw.len;
    size_t bound = LZ4F_compressFrameBound(w->raw.len, &prefs);
    w->out.len = 0;
    if (!sbuf_reserve(&w->out, SNAP_CHUNK_HDR + bound))
        return w->rc = fail(w->err, SNAP_ENOMEM, w->bytes, "compress buffer: out of memory");
    uint8_t *dst = w->out.p + SNAP_CHUNK_HDR;
    size_t n = 0, r = LZ4F_compressBegin(w->cctx, dst, bound, &prefs);
    if (!LZ4F_isError(r)) {
        n += r;
        r = LZ4F_compressUpdate(w->cctx, dst + n, bound - n, w->raw.p, w->raw.len, NULL);
    }
    if (!LZ4F_isError(r)) {
        n += r;
        r = LZ4F_compressEnd(w->cctx, dst + n, bound - n, NULL);
    }
    if (LZ4F_isError(r))
        return w->rc = fail(w->err, SNAP_EIO, w->bytes, "lz4: %s", LZ4F_getErrorName(r));
    n += r;
    memcpy(w->out.p, SNAP_TAGS[w->sec], 4);
    put_le(w->out.p + 4, w->nitems, 4);
    put_le(w->out.p + 8, w->raw.len, 4);
    put_le(w->out.p + 12, n, 4);
    w->raw_bytes += w->raw.len;
    int rc = wr_emit(w, w->out.p, SNAP_CHUNK_HDR + n);
    w->raw.len = 0;
    w->nitems = 0;
    return rc;
}

/* Switch to section sec (flushing the chunk of the previous one). */
static int wr_section(struct wr *w, int sec)
{
    if (w->sec != sec) {
        int rc = wr_flush(w);
        if (rc)
            return rc;
        w->sec = sec;
    }
    return w->rc;
}

static int wr_item_done(struct wr *w)
{
    w->nitems++;
    if (w->raw.oom)
        return w->rc = fail(w->err, SNAP_ENOMEM, w->bytes, "%s item: out of memory",
                            snap_sec_name(w->sec));
    if (w->raw.len >= SNAP_CHUNK_TARGET)
        return wr_flush(w);
    return w->rc;
}

/* ---- writer: what the pre-pass learns ----------------------------------------- */

/* Open-addressing map short_id -> creation index (0 = empty key); key and
 * value share a slot so a lookup is one cache miss. */
struct idslot {
    uint64_t key;
    uint32_t val;
};

struct idmap {
    struct idslot *slots;
    size_t mask, n;
    uint32_t *dense;     /* after idmap_densify: dense[k] = val + 1, 0 = absent */
    uint64_t dense_n;    /* keys below it are in dense[] */
};

static inline size_t idmap_slot(uint64_t k) { return (size_t)((k * 0x9E3779B97F4A7C15ull) >> 17); }

static int idmap_init(struct idmap *m, size_t n)
{
    memset(m, 0, sizeof *m);  /* a map grown in idmap_put is a fresh one: no dense array */
    size_t cap = 16;
    while (cap < n * 2)
        cap *= 2;
    m->slots = hint_huge(malloc(cap * sizeof *m->slots), cap * sizeof *m->slots);
    if (m->slots)
        memset(m->slots, 0, cap * sizeof *m->slots);
    m->mask = cap - 1;
    m->n = 0;
    return m->slots ? 0 : -1;
}

static void idmap_free(struct idmap *m)
{
    free(m->slots);
    free(m->dense);
    memset(m, 0, sizeof *m);
}

/* When the keys are small numbers (short ids handed out 1, 2, 3, ...), a
 * plain array by key takes 4 bytes a key where the slots take 32 (16 a
 * slot at half load), so far more of it stays in cache: the loader looks a
 * short up once per retained record. The slots stay for the inserts; gets
 * use the array. A no-op (the map still works) for sparse keys or when
 * memory is short. */
static void idmap_densify(struct idmap *m)
{
    uint64_t max = 0;
    for (size_t i = 0; m->slots && i <= m->mask; i++)
        if (m->slots[i].key > max)
            max = m->slots[i].key;
    if (m->n == 0 || max >= 4 * (uint64_t)m->n + 1024)
        return;
    uint32_t *d = calloc((size_t)max + 1, sizeof *d);
    if (!d)
        return;
    for (size_t i = 0; i <= m->mask; i++)
        if (m->slots[i].key)
            d[m->slots[i].key] = m->slots[i].val + 1;
    m->dense = d;
    m->dense_n = max + 1;
}

static void idmap_insert(struct idmap *m, uint64_t k, uint32_t v)
{
    size_t i = idmap_slot(k) & m->mask;
    while (m->slots[i].key)
        i = (i + 1) & m->mask;
    m->slots[i].key = k;
    m->slots[i].val = v;
    m->n++;
}

/* 1: added, 0: the key was already there, -1: out of memory. */
static int idmap_put(struct idmap *m, uint64_t k, uint32_t v)
{
    for (size_t i = idmap_slot(k) & m->mask; m->slots[i].key; i = (i + 1) & m->mask)
        if (m->slots[i].key == k)
            return 0;
    if ((m->n + 1) * 2 > m->mask + 1) {
        struct idmap g;
        if (idmap_init(&g, m->n + 1) != 0) {
            idmap_free(&g);
            return -1;
        }
        for (size_t i = 0; i <= m->mask; i++)
            if (m->slots[i].key)
                idmap_insert(&g, m->slots[i].key, m->slots[i].val);
        idmap_free(m);
        *m = g;
    }
    idmap_insert(m, k, v);
    return 1;
}

static bool idmap_get(const struct idmap *m, uint64_t k, uint32_t *v)
{
    if (m->dense) {
        if (k >= m->dense_n || m->dense[k] == 0)
            return false;
        *v = m->dense[k] - 1;
        return true;
    }
    if (k == 0 || !m->slots)
        return false;
    for (size_t i = idmap_slot(k) & m->mask;; i = (i + 1) & m->mask) {
        if (m->slots[i].key == k) {
            *v = m->slots[i].val;
            return true;
        }
        if (m->slots[i].key == 0)
            return false;
    }
}

/* (short index, fingerprint) pairs implied by history, then grouped by short. */
struct pairs {
    uint32_t *six;
    uint64_t *fp;
    size_t n, cap;
    uint32_t *off;           /* nshorts + 1 after grouping */
    uint64_t *sorted;
};

/* Room for cap pairs. A loader sizes them once from the header (each
 * doubling copies the arrays and faults fresh pages in: 5 % of a load). */
static int pairs_reserve(struct pairs *p, size_t cap)
{
    if (cap <= p->cap)
        return 0;
    uint32_t *s = hint_huge(realloc(p->six, cap * sizeof *s), cap * sizeof *s);
    if (!s)
        return -1;
    p->six = s;
    uint64_t *f = hint_huge(realloc(p->fp, cap * sizeof *f), cap * sizeof *f);
    if (!f)
        return -1;
    p->fp = f;
    p->cap = cap;
    return 0;
}

static int pairs_push(struct pairs *p, uint32_t six, uint64_t fp)
{
    if (p->n == p->cap && pairs_reserve(p, p->cap ? p->cap * 2 : 1024))
        return -1;
    p->six[p->n] = six;
    p->fp[p->n] = fp;
    p->n++;
    return 0;
}

static void isort_u64(uint64_t *v, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        uint64_t x = v[i];
        size_t j = i;
        for (; j > 0 && v[j - 1] > x; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
}

static void sift_u64(uint64_t *v, size_t n, size_t i)
{
    for (size_t c; (c = 2 * i + 1) < n; i = c) {
        if (c + 1 < n && v[c + 1] > v[c])
            c++;
        if (v[i] >= v[c])
            return;
        uint64_t t = v[i];
        v[i] = v[c];
        v[c] = t;
    }
}

/* Introsort on plain u64s: qsort's merge sort with a comparison callback
 * was ~4% of a load (a sort per short's viewer and saver sets). Quicksort
 * with a median-of-three pivot, insertion sort below 24, and heapsort once
 * the depth passes 2 log2 n, so a crafted file cannot make it quadratic. */
static void sort_depth(uint64_t *v, size_t n, unsigned depth)
{
    while (n > 24) {
        if (depth-- == 0) {
            for (size_t i = n / 2; i-- > 0;)
                sift_u64(v, n, i);
            for (size_t end = n; end-- > 1;) {
                uint64_t t = v[0];
                v[0] = v[end];
                v[end] = t;
                sift_u64(v, end, 0);
            }
            return;
        }
        uint64_t a = v[0], b = v[n / 2], c = v[n - 1];
        uint64_t piv = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        size_t i = 0, j = n - 1;
        for (;;) {   /* Hoare partition: [0, j] <= piv <= [j + 1, n) */
            while (v[i] < piv)
                i++;
            while (v[j] > piv)
                j--;
            if (i >= j)
                break;
            uint64_t t = v[i];
            v[i++] = v[j];
            v[j--] = t;
        }
        size_t left = j + 1;   /* recurse into the smaller side, loop on the larger */
        if (left < n - left) {
            sort_depth(v, left, depth);
            v += left;
            n -= left;
        } else {
            sort_depth(v + left, n - left, depth);
            n = left;
        }
    }
    isort_u64(v, n);
}

static void sort_u64(uint64_t *v, size_t n)
{
    unsigned depth = 0;
    for (size_t k = n; k > 1; k >>= 1)
        depth += 2;
    sort_depth(v, n, depth);
}

/* Loads that decoded rings on a second thread (snap_test.h). */
static _Atomic uint64_t threaded_loads;

uint64_t snap_test_threaded_loads(void)
{
    return atomic_load_explicit(&threaded_loads, memory_order_relaxed);
}

void snap_test_sort_u64(uint64_t *v, size_t n, unsigned depth)
{
    if (depth == UINT32_MAX)
        sort_u64(v, n);
    else
        sort_depth(v, n, depth);
}

/* Counting sort by short index; the per-short slices are sorted and
 * deduplicated later, when that short is reached. */
static int pairs_group(struct pairs *p, size_t nshorts)
{
    p->off = calloc(nshorts + 2, sizeof *p->off);
    p->sorted = hint_huge(malloc((p->n ? p->n : 1) * sizeof *p->sorted),
                          (p->n ? p->n : 1) * sizeof *p->sorted);
    if (!p->off || !p->sorted)
        return -1;
    for (size_t i = 0; i < p->n; i++)
        p->off[p->six[i] + 2]++;
    for (size_t i = 2; i < nshorts + 2; i++)
        p->off[i] += p->off[i - 1];
    for (size_t i = 0; i < p->n; i++)
        p->sorted[p->off[p->six[i] + 1]++] = p->fp[i];
    free(p->six);
    free(p->fp);
    p->six = NULL;
    p->fp = NULL;
    return 0;   /* slice of short i: sorted[off[i] .. off[i+1]) */
}

/* Sort and dedupe the slice of short i in place; returns its new length. */
static size_t pairs_slice(struct pairs *p, size_t i, uint64_t **out)
{
    uint64_t *v = p->sorted + p->off[i];
    size_t n = p->off[i + 1] - p->off[i], m = 0;
    sort_u64(v, n);
    for (size_t k = 0; k < n; k++)
        if (m == 0 || v[m - 1] != v[k])
            v[m++] = v[k];
    *out = v;
    return m;
}

static void pairs_free(struct pairs *p)
{
    free(p->six);
    free(p->fp);
    free(p->off);
    free(p->sorted);
    memset(p, 0, sizeof *p);
}

struct wctx {
    uint64_t user;
    uint64_t fp;              /* viewer fingerprint of this context, 0 none */
    const char *session;      /* borrowed from the engine (read-only here) */
    uint32_t ua_id;
    uint32_t file_id;         /* 0 until first written */
    uint32_t ring_seq;        /* last ring that listed it ... */
    uint32_t local;           /* ... at this local index */
    uint8_t slen, fam, present, used;
    uint8_t ip[16];
};

struct wstate {
    const struct eng *e;
    int64_t created_ms;
    struct wr w;
    struct snap_err *err;
    struct idmap shorts;
    uint32_t nshorts;
    struct wctx *ctx;
    size_t ctx_cap;           /* ids 0 .. ctx_cap-1 */
    uint32_t *ua_map;         /* engine ua id -> file id; 1 = used, before UAGT */
    size_t ua_cap;
    uint32_t next_ua;
    struct pairs pv, ps;      /* implied viewers, savers */
    struct eng_walk_counts c; /* what the file will hold */
    uint32_t ring_seq, next_ctx_id;
    uint32_t *local;          /* engine ctx ids in a ring's local order */
    size_t local_cap;
    uint64_t *setbuf, *xbuf;
    size_t setbuf_cap, xbuf_cap;
    int saw_user;             /* rings: users came, sessions may not follow */
    int rc;
};

__attribute__((format(printf, 3, 4)))
static int wfail(struct wstate *s, int rc, const char *fmt, ...)
{
    char m[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    if (!s->rc)
        s->rc = fail(s->err, rc, s->w.bytes, "%s", m);
    return s->rc;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *q = hint_huge(realloc(*p, c * elem), c * elem);
    if (!q)
        return -1;
    memset((char *)q + *cap * elem, 0, (c - *cap) * elem);
    *p = q;
    *cap = c;
    return 0;
}

static size_t set_extract(const uint64_t *slots, size_t cap, uint64_t *out)
{
    size_t n = 0;
    for (size_t i = 0; i < cap; i++)
        if (slots[i])
            out[n++] = slots[i];
    return n;
}

/* Pre-pass 1: shorts -> index map and set sizes. */
static int pre_short(void *ud, const struct eng_short_view *v)
{
    struct wstate *s = ud;
    int put = v->short_id ? idmap_put(&s->shorts, v->short_id, s->nshorts) : 0;
    if (put < 0)
        return wfail(s, SNAP_ENOMEM, "short index: out of memory");
    if (put == 0)
        return wfail(s, SNAP_ECORRUPT, "engine state: short %" PRIu64 " walked twice or zero",
                     v->short_id);
    s->nshorts++;
    for (size_t i = 0; i < v->viewers_cap; i++)
        s->c.viewer_pairs += v->viewers[i] != 0;
    for (size_t i = 0; i < v->savers_cap; i++)
        s->c.saver_pairs += v->savers[i] != 0;
    return 0;
}

static int pre_ctx(void *ud, const struct eng_ctx_view *v)
{
    struct wstate *s = ud;
    if (v->id == 0 || v->session_len > ENG_SESSION_MAX || (!v->user && !v->session_len) ||
        (v->ip_family != 0 && v->ip_family != 4 && v->ip_family != 6))
        return wfail(s, SNAP_ECORRUPT, "engine state: bad context %" PRIu32, v->id);
    if (grow((void **)&s->ctx, &s->ctx_cap, (size_t)v->id + 1, sizeof *s->ctx))
        return wfail(s, SNAP_ENOMEM, "context table: out of memory (%" PRIu32 ")", v->id);
    struct wctx *c = &s->ctx[v->id];
    c->user = v->user;
    c->session = v->session;
    c->slen = v->session ? (uint8_t)v->session_len : 0;
    c->fam = v->ip_family;
    memcpy(c->ip, v->ip, 16);
    c->ua_id = v->ua_id;
    c->present = 1;
    c->fp = v->user ? snap_fp_user(v->user) : c->slen ? snap_fp_session(v->session, c->slen) : 0;
    return 0;
}

static int pre_ring(void *ud, const struct eng_ring_view *v, const struct eng_rec_view *recs)
{
    struct wstate *s = ud;
    if (v->is_user) {
        s->c.users++;
        s->saw_user = 1;
    } else {
        if (s->saw_user)
            return wfail(s, SNAP_ECORRUPT, "engine state: session walked after users");
        if (!v->session || v->session_len == 0 || v->session_len > ENG_SESSION_MAX)
            return wfail(s, SNAP_ECORRUPT, "engine state: session id of length %zu",
                         v->session_len);
        s->c.sessions++;
    }
    s->c.records += v->nrecs;
    for (size_t i = 0; i < v->nrecs; i++) {
        const struct eng_rec_view *r = &recs[i];
        uint32_t six;
        if (r->type >= ENG_T_COUNT)
            return wfail(s, SNAP_ECORRUPT, "engine state: record of bad type %u",
                         (unsigned)r->type);
        if (r->ctx_id == 0)
            continue;
        if (r->ctx_id >= s->ctx_cap || !s->ctx[r->ctx_id].present)
            return wfail(s, SNAP_ECORRUPT, "engine state: record of unknown context %" PRIu32,
                         r->ctx_id);
        struct wctx *c = &s->ctx[r->ctx_id];
        if (!c->used) {
            c->used = 1;
            s->c.ctxs++;
            if (c->ua_id) {
                if (grow((void **)&s->ua_map, &s->ua_cap, (size_t)c->ua_id + 1, sizeof *s->ua_map))
                    return wfail(s, SNAP_ENOMEM, "ua table: out of memory (%" PRIu32 ")", c->ua_id);
                s->ua_map[c->ua_id] = 1;
            }
        }
        if (!c->fp)
            continue;
        struct pairs *p = r->type == ENG_T_SAVE ? &s->ps
                          : (r->type == ENG_T_IMPRESSION || r->type == ENG_T_VIEW) ? &s->pv
                          : NULL;
        if (!p)
            continue;
        if (!idmap_get(&s->shorts, r->short_id, &six))
            return wfail(s, SNAP_ECORRUPT, "engine state: record of unknown short %" PRIu64,
                         r->short_id);
        if (pairs_push(p, six, c->fp))
            return wfail(s, SNAP_ENOMEM, "implied sets: out of memory (%zu)", p->n);
    }
    return 0;
}

static int pre_platform(void *ud, const struct eng_platform_view *v)
{
    ((struct wstate *)ud)->c.platforms++;
    return 0;
}

static int pre_ua(void *ud, const struct eng_ua_view *v)
{
    struct wstate *s = ud;
    s->c.uas += v->id < s->ua_cap && s->ua_map[v->id];
    return 0;
}

/* ---- writer: sections ----------------------------------------------------------- */

static int w_platform(void *ud, const struct eng_platform_view *v)
{
    struct wstate *s = ud;
    put_varint(&s->w.raw, v->id);
    put_varint(&s->w.raw, v->len);
    put_bytes(&s->w.raw, v->name, v->len);
    return wr_item_done(&s->w);
}

static int w_ua(void *ud, const struct eng_ua_view *v)
{
    struct wstate *s = ud;
    if (v->id >= s->ua_cap || !s->ua_map[v->id])
        return 0;   /* only referenced by expired sessions: not carried */
    /* renumbered densely: engine ids have holes where agents were freed */
    s->ua_map[v->id] = ++s->next_ua;
    put_varint(&s->w.raw, s->next_ua);
    put_varint(&s->w.raw, v->len);
    put_bytes(&s->w.raw, v->ua, v->len);
    return wr_item_done(&s->w);
}

/* Encode a set: stores sorted `all` minus `implied` when implied is a
 * subset, else all of it. Returns the flag bits (implied, fixed). */
static uint8_t set_plan(const uint64_t *all, size_t n, const uint64_t *imp, size_t ni,
                        uint64_t *x, size_t *nx)
{
    size_t i = 0, j = 0, k = 0;
    while (i < n && j < ni) {
        if (all[i] < imp[j])
            x[k++] = all[i++];
        else if (all[i] == imp[j])
            i++, j++;
        else
            break;  /* implied but not a member: store the set in full */
    }
    uint8_t flags = 0;
    if (j == ni) {
        while (i < n)
            x[k++] = all[i++];
        flags |= 1;
    } else {
        memcpy(x, all, n * sizeof *x);
        k = n;
    }
    *nx = k;
    size_t vsz = 0;
    uint64_t prev = 0;
    for (size_t q = 0; q < k; q++) {
        vsz += varint_len(x[q] - prev);
        prev = x[q];
    }
    if (vsz > 8 * k)
        flags |= 2;
    return flags;
}

static void put_set(struct sbuf *b, uint64_t total, uint8_t flags, const uint64_t *x, size_t nx)
{
    put_varint(b, total);
    if (flags & 1)
        put_varint(b, nx);
    uint64_t prev = 0;
    for (size_t q = 0; q < nx; q++) {
        if (flags & 2)
            put_fixed64(b, x[q]);
        else
            put_varint(b, x[q] - prev);
        prev = x[q];
    }
}

struct wshort_ctx {
    struct wstate *s;
    uint32_t six;
    uint64_t prev_id;
};

static int w_short(void *ud, const struct eng_short_view *v)
{
    struct wshort_ctx *sc = ud;
    struct wstate *s = sc->s;
    struct sbuf *b = &s->w.raw;
    if (s->w.nitems == 0)
        sc->prev_id = 0;     /* each chunk decodes on its own */
    size_t need = v->viewers_cap > v->savers_cap ? v->viewers_cap : v->savers_cap;
    if (grow((void **)&s->setbuf, &s->setbuf_cap, need + 1, sizeof *s->setbuf) ||
        grow((void **)&s->xbuf, &s->xbuf_cap, 2 * need + 2, sizeof *s->xbuf))
        return wfail(s, SNAP_ENOMEM, "set of %zu: out of memory", need);
    uint64_t *xv = s->xbuf, *xs = s->xbuf + need + 1, *imp;
    size_t nxv, nxs;

    size_t nv = set_extract(v->viewers, v->viewers_cap, s->setbuf);
    sort_u64(s->setbuf, nv);
    size_t ni = pairs_slice(&s->pv, sc->six, &imp);
    uint8_t fv = set_plan(s->setbuf, nv, imp, ni, xv, &nxv);
    size_t ns = set_extract(v->savers, v->savers_cap, s->setbuf);
    sort_u64(s->setbuf, ns);
    ni = pairs_slice(&s->ps, sc->six, &imp);
    uint8_t fs = set_plan(s->setbuf, ns, imp, ni, xs, &nxs);

    put_varint(b, zz_enc((int64_t)(v->short_id - sc->prev_id)));
    put_u8(b, (uint8_t)(fv | fs << 2));
    for (int t = 0; t < ENG_T_COUNT; t++)
        put_varint(b, v->count[t]);
    put_varint(b, v->watch_sum);
    put_varint(b, v->watch_n);
    put_varint(b, v->boost);
    put_varint(b, zz_enc(s->created_ms - v->last_ts));
    put_varint(b, v->nplat);
    for (size_t i = 0; i < v->nplat; i++) {
        put_varint(b, v->plat_ids[i]);
        put_varint(b, v->plat_shares[i]);
    }
    put_set(b, nv, fv, xv, nxv);
    put_set(b, ns, fs, xs, nxs);
    sc->prev_id = v->short_id;
    sc->six++;
    return wr_item_done(&s->w);
}

static int w_ring(void *ud, const struct eng_ring_view *v, const struct eng_rec_view *recs)
{
    struct wstate *s = ud;
    int rc = wr_section(&s->w, v->is_user ? SNAP_SEC_USER : SNAP_SEC_SESS);
    if (rc)
        return rc;
    struct sbuf *b = &s->w.raw;
    uint32_t seq = ++s->ring_seq;
    size_t nctx = 0;
    if (grow((void **)&s->local, &s->local_cap, v->nrecs + 1, sizeof *s->local))
        return wfail(s, SNAP_ENOMEM, "ring of %zu records: out of memory", v->nrecs);
    for (size_t k = v->nrecs; k-- > 0;) {
        uint32_t id = recs[k].ctx_id;
        if (id && s->ctx[id].ring_seq != seq) {
            s->ctx[id].ring_seq = seq;
            s->ctx[id].local = (uint32_t)++nctx;
            s->local[nctx] = id;
        }
    }
    if (v->is_user)
        put_varint(b, v->user);
    else
        put_session(b, v->session, v->session_len);
    put_varint(b, zz_enc(s->created_ms - v->last_seen_ms));
    put_varint(b, nctx);
    for (size_t l = 1; l <= nctx; l++) {
        struct wctx *c = &s->ctx[s->local[l]];
        bool user_owner = v->is_user && c->user == v->user;
        bool sess_owner = !v->is_user && c->slen == v->session_len &&
                          memcmp(c->session, v->session, c->slen) == 0;
        uint8_t f = (uint8_t)((c->file_id ? CTX_REF : 0) | (c->user ? CTX_USER : 0) |
                              (user_owner ? CTX_USER_OWNER : 0) | (c->slen ? CTX_SESS : 0) |
                              (sess_owner ? CTX_SESS_OWNER : 0) |
                              (c->fam == 4 ? 1 : c->fam == 6 ? 2 : 0) << CTX_IP_SHIFT |
                              (c->ua_id ? CTX_UA : 0));
        put_u8(b, f);
        if (c->file_id)
            put_varint(b, c->file_id);
        else
            c->file_id = ++s->next_ctx_id;
        if (c->user && !user_owner)
            put_varint(b, c->user);
        if (c->slen && !sess_owner)
            put_session(b, c->session, c->slen);
        if (c->fam)
            put_bytes(b, c->ip, c->fam == 4 ? 4 : 16);
        if (c->ua_id)
            put_varint(b, s->ua_map[c->ua_id]);
    }
    put_varint(b, v->nrecs);
    int64_t prev = v->last_seen_ms;
    for (size_t k = v->nrecs; k-- > 0;) {
        const struct eng_rec_view *r = &recs[k];
        uint32_t l = r->ctx_id ? s->ctx[r->ctx_id].local : 0;
        uint8_t head = (uint8_t)(r->type | (r->has_watch ? REC_WATCH : 0) |
                                 (r->platform_id ? REC_PLAT : 0) |
                                 (l < REC_CTX_EXT ? l : REC_CTX_EXT) << REC_CTX_SHIFT);
        put_u8(b, head);
        put_varint(b, r->short_id);
        put_varint(b, zz_enc(prev - r->ts));
        prev = r->ts;
        if (r->has_watch)
            put_varint(b, r->watch_ms);
        if (r->platform_id)
            put_varint(b, r->platform_id);
        if (l >= REC_CTX_EXT)
            put_varint(b, l);
    }
    return wr_item_done(&s->w);
}

static void wstate_free(struct wstate *s)
{
    idmap_free(&s->shorts);
    free(s->ctx);
    free(s->ua_map);
    pairs_free(&s->pv);
    pairs_free(&s->ps);
    free(s->local);
    free(s->setbuf);
    free(s->xbuf);
    free(s->w.raw.p);
    free(s->w.out.p);
    if (s->w.cctx)
        LZ4F_freeCompressionContext(s->w.cctx);
}

int snap_write(const struct eng *e, int64_t created_ms, snap_write_fn fn, void *ud,
               struct snap_stats *st, struct snap_err *err)
{
    int64_t t0 = mono_ms();
    struct wstate s;
    memset(&s, 0, sizeof s);
    s.e = e;
    s.created_ms = created_ms;
    s.err = err;
    s.w.fn = fn;
    s.w.ud = ud;
    s.w.err = err;
    s.w.sec = -1;
    XXH64_reset(&s.w.xxh, 0);
    if (err) {
        err->offset = 0;
        err->msg[0] = 0;
    }
    struct eng_walk_counts wc;
    eng_walk_counts(e, &wc);
    struct eng_info info;
    eng_info(e, &info);
    int rc = SNAP_OK;
    if (LZ4F_isError(LZ4F_createCompressionContext(&s.w.cctx, LZ4F_VERSION)) ||
        idmap_init(&s.shorts, wc.shorts) ||
        grow((void **)&s.ctx, &s.ctx_cap, wc.ctxs + 2, sizeof *s.ctx)) {
        rc = fail(err, SNAP_ENOMEM, 0, "writer: out of memory");
        goto out;
    }
    /* Pre-pass: learn what the file will hold, so the header is exact. */
    if (eng_walk_shorts(e, pre_short, &s) || eng_walk_ctxs(e, pre_ctx, &s) ||
        eng_walk_rings(e, pre_ring, &s) || eng_walk_platforms(e, pre_platform, &s) ||
        eng_walk_uas(e, pre_ua, &s)) {
        rc = s.rc ? s.rc : fail(err, SNAP_ECORRUPT, 0, "engine walk stopped");
        goto out;
    }
    s.c.shorts = s.nshorts;
    if (pairs_group(&s.pv, s.nshorts) || pairs_group(&s.ps, s.nshorts)) {
        rc = fail(err, SNAP_ENOMEM, 0, "implied sets: out of memory");
        goto out;
    }

    uint8_t h[SNAP_HDR_SIZE];
    memset(h, 0, sizeof h);
    memcpy(h, SNAP_MAGIC, 8);
    put_le(h + 8, SNAP_VERSION, 4);
    put_le(h + 12, 0, 4);
    put_le(h + 16, info.history, 4);
    put_le(h + 20, SNAP_HDR_SIZE, 4);
    put_le(h + 24, (uint64_t)info.session_ttl_ms, 8);
    put_le(h + 32, (uint64_t)created_ms, 8);
    for (int i = 0; i < CN_N; i++)
        put_le(h + count_off(i), count_get(&s.c, i), 8);
    put_le(h + 112, XXH64(h, 112, 0), 8);
    if ((rc = wr_emit(&s.w, h, sizeof h)))
        goto out;

    struct wshort_ctx sc = {.s = &s};
    if ((rc = wr_section(&s.w, SNAP_SEC_PLAT)) || eng_walk_platforms(e, w_platform, &s) ||
        (rc = wr_section(&s.w, SNAP_SEC_UAGT)) || eng_walk_uas(e, w_ua, &s) ||
        (rc = wr_section(&s.w, SNAP_SEC_SHRT)) || eng_walk_shorts(e, w_short, &sc) ||
        eng_walk_rings(e, w_ring, &s)) {
        rc = s.rc ? s.rc : s.w.rc ? s.w.rc : rc ? rc : fail(err, SNAP_ECORRUPT, 0, "engine walk stopped");
        goto out;
    }
    if (sc.six != s.nshorts || s.next_ctx_id != s.c.ctxs || s.next_ua != s.c.uas) {
        rc = fail(err, SNAP_ECORRUPT, s.w.bytes, "engine state changed during the snapshot");
        goto out;
    }
    struct eng_totals t;
    eng_totals(e, &t);
    if ((rc = wr_section(&s.w, SNAP_SEC_TOTL)))
        goto out;
    put_varint(&s.w.raw, t.interactions);
    for (int i = 0; i < ENG_T_COUNT; i++)
        put_varint(&s.w.raw, t.by_type[i]);
    put_varint(&s.w.raw, t.sessions_evicted);
    if ((rc = wr_item_done(&s.w)) || (rc = wr_flush(&s.w)))
        goto out;

    uint8_t f[SNAP_FTR_SIZE];
    memcpy(f, SNAP_END, 8);
    put_le(f + 8, s.w.raw_bytes, 8);
    put_le(f + 16, s.w.bytes + SNAP_FTR_SIZE, 8);
    XXH64_update(&s.w.xxh, f, 24);
    put_le(f + 24, XXH64_digest(&s.w.xxh), 8);
    if (fn(ud, f, sizeof f) != 0) {
        rc = fail(err, SNAP_EIO, s.w.bytes, "write failed at byte %" PRIu64, s.w.bytes);
        goto out;
    }
    s.w.bytes += sizeof f;
    if (st) {
        st->bytes = s.w.bytes;
        st->raw_bytes = s.w.raw_bytes;
        st->duration_ms = (uint64_t)(mono_ms() - t0);
    }
out:
    wstate_free(&s);
    return rc;
}

/* ---- crash-safe save ------------------------------------------------------------- */

struct fdw {
    int fd;
    int err;
};

static int fd_write(void *ud, const void *buf, size_t len)
{
    struct fdw *w = ud;
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = write(w->fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            w->err = errno;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

#define TMP_PREFIX SNAP_FILE ".tmp."

void snap_remove_stale(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) != 0)
            continue;
        const char *p = de->d_name + strlen(TMP_PREFIX);
        char *end;
        errno = 0;
        long pid = strtol(p, &end, 10);
        /* "<pid>" from snap_save, "<pid>.bak" from shortstat-snap restore */
        if (*p == 0 || (*end != 0 && strcmp(end, ".bak") != 0) || errno || pid <= 0)
            continue;
        if (pid == (long)getpid() || (kill((pid_t)pid, 0) != 0 && errno == ESRCH))
            unlinkat(dirfd(d), de->d_name, 0);
    }
    closedir(d);
}

int snap_prepare_dir(const char *dir, bool *made, struct snap_err *err)
{
    struct stat st;
    *made = false;
    if (stat(dir, &st) == 0)
        return S_ISDIR(st.st_mode) ? SNAP_OK
                                   : fail(err, SNAP_EIO, 0, "--dir %s: not a directory", dir);
    if (errno != ENOENT || mkdir(dir, 0755) != 0)
        return fail(err, SNAP_EIO, 0, "--dir %s: %s", dir, strerror(errno));
    *made = true;
    return SNAP_OK;
}

int snap_lock_dir(const char *dir, int *fdp, struct snap_err *err)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, SNAP_LOCK_FILE) >= sizeof path)
        return fail(err, SNAP_EIO, 0, "%s: path too long", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return fail(err, SNAP_EIO, 0, "%s: cannot open the lock file: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char buf[24] = {0};
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        close(fd);
        if (e != EWOULDBLOCK)
            return fail(err, SNAP_EIO, 0, "%s: flock: %s", path, strerror(e));
        long pid = n > 0 ? strtol(buf, NULL, 10) : 0;
        if (pid > 0)
            return fail(err, SNAP_EBUSY, 0, "%s is in use by process %ld (it holds %s)", dir,
                        pid, path);
        return fail(err, SNAP_EBUSY, 0, "%s is in use by another process (it holds %s)", dir,
                    path);
    }
    /* The pid is for the message above; the lock itself is the flock. */
    char buf[24];
    int len = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    /* best effort: on a full disk the lock still holds, only the pid is missing */
    if (ftruncate(fd, 0) == 0) {
        ssize_t w = pwrite(fd, buf, (size_t)len, 0);
        (void)w;
    }
    *fdp = fd;
    return SNAP_OK;
}

int snap_save(const struct eng *e, const char *dir, int64_t created_ms, struct snap_stats *st,
              struct snap_err *err)
{
    int64_t t0 = mono_ms();
    char tmp[4096], dst[4096];
    if ((size_t)snprintf(dst, sizeof dst, "%s/%s", dir, SNAP_FILE) >= sizeof dst ||
        (size_t)snprintf(tmp, sizeof tmp, "%s/%s%ld", dir, TMP_PREFIX, (long)getpid()) >= sizeof tmp)
        return fail(err, SNAP_EIO, 0, "%s: path too long", dir);
    snap_remove_stale(dir);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return fail(err, SNAP_EIO, 0, "%s: open: %s", tmp, strerror(errno));
    struct fdw w = {.fd = fd};
    int rc = snap_write(e, created_ms, fd_write, &w, st, err);
    if (rc == SNAP_EIO && w.err)
        rc = fail(err, SNAP_EIO, err ? err->offset : 0, "%s: write: %s", tmp, strerror(w.err));
    if (rc == SNAP_OK && fsync(fd) != 0)
        rc = fail(err, SNAP_EIO, 0, "%s: fsync: %s", tmp, strerror(errno));
    if (close(fd) != 0 && rc == SNAP_OK)
        rc = fail(err, SNAP_EIO, 0, "%s: close: %s", tmp, strerror(errno));
    if (rc == SNAP_OK && rename(tmp, dst) != 0)
        rc = fail(err, SNAP_EIO, 0, "%s: rename to %s: %s", tmp, dst, strerror(errno));
    if (rc != SNAP_OK) {
        unlink(tmp);
        return rc;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return fail(err, SNAP_EIO, 0, "%s: open directory: %s", dir, strerror(errno));
    if (fsync(dfd) != 0) {
        int e2 = errno;
        close(dfd);
        return fail(err, SNAP_EIO, 0, "%s: fsync directory: %s", dir, strerror(e2));
    }
    close(dfd);
    if (st)
        st->duration_ms = (uint64_t)(mono_ms() - t0);
    return SNAP_OK;
}

/* ---- reading: header, footer, chunks, frames -------------------------------------- */

int snap_parse_header(const uint8_t *buf, size_t len, struct snap_header *h,
                      struct snap_err *err)
{
    if (len < 8 && memcmp(buf, SNAP_MAGIC, len) == 0)
        return fail(err, SNAP_ECORRUPT, len, "truncated header (%zu bytes)", len);
    if (len < 8 || memcmp(buf, SNAP_MAGIC, 8) != 0)
        return fail(err, SNAP_EFOREIGN, 0, "the file does not begin with SHSTSNAP");
    if (len < 12)
        return fail(err, SNAP_ECORRUPT, len, "truncated header (%zu bytes)", len);
    uint32_t version = (uint32_t)get_le(buf + 8, 4);
    if (version > SNAP_VERSION)
        return fail(err, SNAP_EVERSION, 8, "format v%" PRIu32 ", this build reads up to v%u",
                    version, SNAP_VERSION);
    if (version == 0)
        return fail(err, SNAP_ECORRUPT, 8, "format version 0");
    if (len < SNAP_HDR_SIZE)
        return fail(err, SNAP_ECORRUPT, len, "truncated header (%zu of %u bytes)", len,
                    SNAP_HDR_SIZE);
    if (get_le(buf + 112, 8) != XXH64(buf, 112, 0))
        return fail(err, SNAP_ECORRUPT, 112, "header checksum mismatch");
    if (get_le(buf + 20, 4) != SNAP_HDR_SIZE || get_le(buf + 12, 4) != 0)
        return fail(err, SNAP_ECORRUPT, 12, "header: unknown flags or size");
    struct snap_header x;
    memset(&x, 0, sizeof x);
    x.version = version;
    x.history = (uint32_t)get_le(buf + 16, 4);
    x.session_ttl_ms = (int64_t)get_le(buf + 24, 8);
    x.created_ms = (int64_t)get_le(buf + 32, 8);
    for (int i = 0; i < CN_N; i++)
        count_set(&x.counts, i, get_le(buf + count_off(i), 8));
    if (x.history == 0 || x.history > ENG_HISTORY_MAX)
        return fail(err, SNAP_EPARAM, 16, "history: %" PRIu32 " not in 1..%u", x.history,
                    ENG_HISTORY_MAX);
    if (x.session_ttl_ms <= 0)
        return fail(err, SNAP_EPARAM, 24, "session_ttl_ms: %" PRId64 " not positive",
                    x.session_ttl_ms);
    if (x.counts.ctxs > UINT32_MAX || x.counts.shorts > UINT32_MAX || x.counts.uas > UINT32_MAX ||
        x.counts.platforms > UINT32_MAX)
        return fail(err, SNAP_ECORRUPT, SNAP_HDR_COUNTS, "header: counts out of range");
    if (h)
        *h = x;
    return SNAP_OK;
}

int snap_parse_footer(const uint8_t *buf, size_t len, uint64_t file_len, struct snap_footer *f,
                      struct snap_err *err)
{
    if (len < SNAP_FTR_SIZE || memcmp(buf, SNAP_END, 8) != 0)
        return fail(err, SNAP_ECORRUPT, file_len, "truncated: no end marker (file of %" PRIu64
                    " bytes)", file_len);
    f->raw_bytes = get_le(buf + 8, 8);
    f->file_len = get_le(buf + 16, 8);
    f->checksum = get_le(buf + 24, 8);
    if (f->file_len != file_len)
        return fail(err, SNAP_ECORRUPT, file_len - SNAP_FTR_SIZE + 16,
                    "length mismatch: footer says %" PRIu64 " bytes, file has %" PRIu64,
                    f->file_len, file_len);
    return SNAP_OK;
}

int snap_parse_chunk(const uint8_t *p, uint64_t offset, struct snap_chunk *c, struct snap_err *err)
{
    c->sec = -1;
    for (int i = 0; i < SNAP_SEC_COUNT; i++)
        if (memcmp(p, SNAP_TAGS[i], 4) == 0)
            c->sec = i;
    if (c->sec < 0)
        return fail(err, SNAP_ECORRUPT, offset, "unknown chunk tag %02x%02x%02x%02x", p[0], p[1],
                    p[2], p[3]);
    c->nitems = (uint32_t)get_le(p + 4, 4);
    c->raw_len = (uint32_t)get_le(p + 8, 4);
    c->frame_len = (uint32_t)get_le(p + 12, 4);
    c->offset = offset;
    if (c->nitems == 0 || c->raw_len > SNAP_CHUNK_MAX || c->raw_len < c->nitems ||
        (uint64_t)c->raw_len > (uint64_t)c->frame_len * 256 + 64)
        return fail(err, SNAP_ECORRUPT, offset, "%s chunk: bad sizes (items %" PRIu32
                    ", raw %" PRIu32 ", frame %" PRIu32 ")", snap_sec_name(c->sec), c->nitems,
                    c->raw_len, c->frame_len);
    return SNAP_OK;
}

int snap_chunk_inflate(struct snap_scratch *s, const struct snap_chunk *c, const uint8_t *frame,
                       struct snap_err *err)
{
    uint64_t off = c->offset + SNAP_CHUNK_HDR;
    if (!s->dctx) {
        LZ4F_dctx *d;
        if (LZ4F_isError(LZ4F_createDecompressionContext(&d, LZ4F_VERSION)))
            return fail(err, SNAP_ENOMEM, off, "lz4: out of memory");
        s->dctx = d;
    }
    LZ4F_dctx *d = s->dctx;
    LZ4F_resetDecompressionContext(d);
    LZ4F_frameInfo_t fi;
    size_t in = c->frame_len;
    size_t r = LZ4F_getFrameInfo(d, &fi, frame, &in);
    if (LZ4F_isError(r))
        return fail(err, SNAP_ECORRUPT, off, "%s chunk: lz4 frame header: %s",
                    snap_sec_name(c->sec), LZ4F_getErrorName(r));
    if (fi.contentChecksumFlag != LZ4F_contentChecksumEnabled ||
        fi.blockChecksumFlag != LZ4F_blockChecksumEnabled || fi.contentSize != c->raw_len)
        return fail(err, SNAP_ECORRUPT, off, "%s chunk: lz4 frame without checksums or "
                    "with the wrong size", snap_sec_name(c->sec));
    /* The output buffer grows with what the frame really decodes to, never
     * to the declared size up front: a damaged chunk header (its checksum
     * is the frame's, checked only as it decodes) could claim 1 GiB behind
     * a few bytes of junk. One byte past raw_len catches a longer frame.
     * With less room than a block, liblz4 keeps decoded bytes back, so
     * the loop runs until the frame ends or nothing moves, not until the
     * input is used up. */
    size_t pos = in, outpos = 0;
    for (;;) {
        /* at most a doubling past what has decoded, or the room there is */
        size_t step = outpos < (1u << 20) ? (1u << 20) : outpos;
        size_t room = outpos + step > s->raw_cap ? outpos + step : s->raw_cap;
        size_t want = (size_t)c->raw_len + 1 < room ? (size_t)c->raw_len + 1 : room;
        if (grow((void **)&s->raw, &s->raw_cap, want, 1))
            return fail(err, SNAP_ENOMEM, off, "%s chunk of %" PRIu32 " bytes: out of memory",
                        snap_sec_name(c->sec), c->raw_len);
        size_t src = c->frame_len - pos, dst = want - outpos;
        r = LZ4F_decompress(d, s->raw + outpos, &dst, frame + pos, &src, NULL);
        if (LZ4F_isError(r))
            return fail(err, SNAP_ECORRUPT, off + pos, "%s chunk: lz4: %s",
                        snap_sec_name(c->sec), LZ4F_getErrorName(r));
        pos += src;
        outpos += dst;
        if (outpos > c->raw_len)
            return fail(err, SNAP_ECORRUPT, off, "%s chunk: frame longer than declared",
                        snap_sec_name(c->sec));
        if (r == 0 || (src == 0 && dst == 0))
            break;
    }
    if (r != 0 || pos != c->frame_len || outpos != c->raw_len)
        return fail(err, SNAP_ECORRUPT, off + pos, "%s chunk: lz4 frame truncated or padded",
                    snap_sec_name(c->sec));
    return SNAP_OK;
}

void snap_scratch_free(struct snap_scratch *s)
{
    free(s->raw);
    free(s->plat_ids);
    free(s->plat_shares);
    free(s->xv);
    free(s->xs);
    free(s->ctx);
    free(s->sess);
    free(s->recs);
    if (s->dctx)
        LZ4F_freeDecompressionContext(s->dctx);
    memset(s, 0, sizeof *s);
}

/* ---- item decoders ------------------------------------------------------------------ */

__attribute__((format(printf, 2, 3)))
static int cbad(struct snap_cur *c, const char *fmt, ...)
{
    char m[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    return fail(c->err, SNAP_ECORRUPT, c->chunk->offset,
                "%s chunk at offset %" PRIu64 ", item %" PRIu32 ", byte %zu of %" PRIu32 ": %s",
                snap_sec_name(c->chunk->sec), c->chunk->offset, c->item,
                (size_t)(c->p - c->start), c->chunk->raw_len, m);
}

static int get_varint(struct snap_cur *c, uint64_t *v, const char *what)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (c->p >= c->end)
            return cbad(c, "%s: truncated varint", what);
        uint8_t b = *c->p++;
        if (shift == 63 && b > 1)
            return cbad(c, "%s: varint overflows 64 bits", what);
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return cbad(c, "%s: varint longer than 10 bytes", what);
}

static int get_u32v(struct snap_cur *c, uint32_t *v, uint64_t max, const char *what)
{
    uint64_t x;
    if (get_varint(c, &x, what))
        return SNAP_ECORRUPT;
    if (x > max)
        return cbad(c, "%s: %" PRIu64 " exceeds %" PRIu64, what, x, max);
    *v = (uint32_t)x;
    return 0;
}

static int get_ts(struct snap_cur *c, int64_t base, int64_t *out, const char *what)
{
    uint64_t x;
    if (get_varint(c, &x, what))
        return SNAP_ECORRUPT;
    int64_t d = zz_dec(x);
    /* base and result both within 0..ENG_TS_MAX-ish; reject overflow first */
    if ((d > 0 && base < INT64_MIN + d) || (d < 0 && base > INT64_MAX + d))
        return cbad(c, "%s: out of range", what);
    *out = base - d;
    return 0;
}

static int get_bytes(struct snap_cur *c, size_t n, const uint8_t **out, const char *what)
{
    if ((size_t)(c->end - c->p) < n)
        return cbad(c, "%s: %zu bytes past the end", what, n);
    *out = c->p;
    c->p += n;
    return 0;
}

static int get_session(struct snap_cur *c, char *out, size_t *len, const char *what)
{
    const uint8_t *p = NULL;
    if (get_bytes(c, 1, &p, what))
        return SNAP_ECORRUPT;
    if (*p == SESS_GHEX) {
        static const char hex[] = "0123456789abcdef";
        if (get_bytes(c, 16, &p, what))
            return SNAP_ECORRUPT;
        out[0] = 'g';
        out[1] = '-';
        for (int i = 0; i < 16; i++) {
            out[2 + 2 * i] = hex[p[i] >> 4];
            out[3 + 2 * i] = hex[p[i] & 15];
        }
        *len = ENG_SID_LEN;
        return 0;
    }
    size_t n = *p;
    if (n == 0 || n > ENG_SESSION_MAX)
        return cbad(c, "%s: length %zu not in 1..%u", what, n, ENG_SESSION_MAX);
    if (get_bytes(c, n, &p, what))
        return SNAP_ECORRUPT;
    memcpy(out, p, n);
    *len = n;
    return 0;
}

int snap_dec_platform(struct snap_cur *c, uint32_t *last, struct eng_platform_view *out)
{
    uint64_t len;
    const uint8_t *p = NULL;
    if (get_u32v(c, &out->id, UINT32_MAX, "platform id") ||
        get_varint(c, &len, "platform length"))
        return SNAP_ECORRUPT;
    if (out->id != *last + 1)  /* so no reader sizes a table by an arbitrary id */
        return cbad(c, "platform id %" PRIu32 " after %" PRIu32, out->id, *last);
    *last = out->id;
    if (len == 0 || len > ENG_PLATFORM_MAX)
        return cbad(c, "platform length %" PRIu64 " not in 1..%u", len, ENG_PLATFORM_MAX);
    if (get_bytes(c, len, &p, "platform name"))
        return SNAP_ECORRUPT;
    out->name = (const char *)p;
    out->len = len;
    return 0;
}

int snap_dec_ua(struct snap_cur *c, uint32_t *last, struct eng_ua_view *out)
{
    uint64_t len;
    const uint8_t *p = NULL;
    if (get_u32v(c, &out->id, UINT32_MAX, "ua id") || get_varint(c, &len, "ua length"))
        return SNAP_ECORRUPT;
    if (out->id != *last + 1)
        return cbad(c, "ua id %" PRIu32 " after %" PRIu32, out->id, *last);
    *last = out->id;
    if (out->id == 0 || len > ENG_UA_MAX)
        return cbad(c, "ua %" PRIu32 ": id 0 or length %" PRIu64 " over %u", out->id, len,
                    ENG_UA_MAX);
    if (get_bytes(c, len, &p, "ua bytes"))
        return SNAP_ECORRUPT;
    out->ua = (const char *)p;
    out->len = len;
    return 0;
}

static int dec_set(struct snap_cur *c, uint64_t **buf, size_t *cap, bool implied, bool fixed,
                   uint64_t *total, const uint64_t **x, size_t *nx, const char *what)
{
    uint64_t n, k;
    if (get_varint(c, &n, what))
        return SNAP_ECORRUPT;
    if (implied) {
        if (get_varint(c, &k, what))
            return SNAP_ECORRUPT;
        if (k > n)
            return cbad(c, "%s: %" PRIu64 " explicit of %" PRIu64, what, k, n);
    } else {
        k = n;
    }
    if (k > (uint64_t)(c->end - c->p))
        return cbad(c, "%s: %" PRIu64 " fingerprints past the end", what, k);
    if (grow((void **)buf, cap, k + 1, sizeof **buf))
        return fail(c->err, SNAP_ENOMEM, c->chunk->offset, "%s: out of memory", what);
    uint64_t prev = 0;
    for (uint64_t i = 0; i < k; i++) {
        uint64_t v;
        if (fixed) {
            const uint8_t *p = NULL;
            if (get_bytes(c, 8, &p, what))
                return SNAP_ECORRUPT;
            v = get_le(p, 8);
        } else {
            uint64_t d;
            if (get_varint(c, &d, what))
                return SNAP_ECORRUPT;
            v = prev + d;
            if (v < prev)
                return cbad(c, "%s: delta overflows", what);
        }
        if (v == 0 || (i > 0 && v <= prev))
            return cbad(c, "%s: fingerprints not strictly increasing and non-zero", what);
        (*buf)[i] = v;
        prev = v;
    }
    *total = n;
    *x = *buf;
    *nx = k;
    return 0;
}

int snap_dec_short(struct snap_cur *c, struct snap_scratch *s, uint64_t prev_id,
                   struct snap_short *out)
{
    memset(out, 0, sizeof *out);
    struct eng_short_view *v = &out->v;
    uint64_t x;
    const uint8_t *fl = NULL;
    if (get_varint(c, &x, "short id") || get_bytes(c, 1, &fl, "short flags"))
        return SNAP_ECORRUPT;
    v->short_id = prev_id + (uint64_t)zz_dec(x);
    if (v->short_id == 0)
        return cbad(c, "short id 0");
    if (*fl & ~0x0fu)
        return cbad(c, "short %" PRIu64 ": unknown flags %#x", v->short_id, *fl);
    for (int t = 0; t < ENG_T_COUNT; t++)
        if (get_varint(c, &v->count[t], "short counter"))
            return SNAP_ECORRUPT;
    uint32_t boost = 0;
    uint64_t np = 0;
    if (get_varint(c, &v->watch_sum, "watch_sum") || get_varint(c, &v->watch_n, "watch_n") ||
        get_u32v(c, &boost, ENG_BOOST_MAX, "boost") ||
        get_ts(c, c->created_ms, &v->last_ts, "last_ts") ||
        get_varint(c, &np, "platform count"))
        return SNAP_ECORRUPT;
    v->boost = boost;
    if (np > 65536 || np * 2 > (uint64_t)(c->end - c->p))
        return cbad(c, "short %" PRIu64 ": %" PRIu64 " platforms", v->short_id, np);
    size_t old_cap = s->plat_cap;
    if (grow((void **)&s->plat_ids, &s->plat_cap, np + 1, sizeof *s->plat_ids))
        return fail(c->err, SNAP_ENOMEM, c->chunk->offset, "platforms: out of memory");
    if (s->plat_cap != old_cap || !s->plat_shares) {
        uint64_t *ps = realloc(s->plat_shares, s->plat_cap * sizeof *ps);
        if (!ps)
            return fail(c->err, SNAP_ENOMEM, c->chunk->offset, "platforms: out of memory");
        s->plat_shares = ps;
    }
    for (uint64_t i = 0; i < np; i++)
        if (get_u32v(c, &s->plat_ids[i], UINT32_MAX, "platform id") ||
            get_varint(c, &s->plat_shares[i], "platform shares"))
            return SNAP_ECORRUPT;
    v->plat_ids = s->plat_ids;
    v->plat_shares = s->plat_shares;
    v->nplat = np;
    out->viewers_implied = *fl & SET_V_IMPLIED;
    out->savers_implied = *fl & SET_S_IMPLIED;
    int rc;
    if ((rc = dec_set(c, &s->xv, &s->xv_cap, out->viewers_implied, *fl & SET_V_FIXED,
                      &out->nviewers, &out->xviewers, &out->nxviewers, "viewer set")) ||
        (rc = dec_set(c, &s->xs, &s->xs_cap, out->savers_implied, *fl & SET_S_FIXED,
                      &out->nsavers, &out->xsavers, &out->nxsavers, "saver set")))
        return rc;
    return 0;
}

int snap_dec_ring(struct snap_cur *c, struct snap_scratch *s, bool is_user,
                  uint32_t *next_ctx_id, struct snap_ring *out)
{
    memset(&out->v, 0, sizeof out->v);
    struct eng_ring_view *v = &out->v;
    v->is_user = is_user;
    if (is_user) {
        if (get_varint(c, &v->user, "ring user"))
            return SNAP_ECORRUPT;
        if (v->user == 0)
            return cbad(c, "ring user 0");
    } else {
        if (get_session(c, out->session, &v->session_len, "ring session"))
            return SNAP_ECORRUPT;
        v->session = out->session;
    }
    uint64_t nctx, nrecs;
    if (get_ts(c, c->created_ms, &v->last_seen_ms, "last_seen") ||
        get_varint(c, &nctx, "context count"))
        return SNAP_ECORRUPT;
    /* a ring lists the contexts its records use, so no more than it can
     * hold records: checked before the scratch grows for them */
    if (nctx > ENG_HISTORY_MAX || nctx > (uint64_t)(c->end - c->p))
        return cbad(c, "%" PRIu64 " contexts", nctx);
    if (grow((void **)&s->ctx, &s->ctx_cap, nctx + 1, sizeof *s->ctx) ||
        grow((void **)&s->sess, &s->sess_cap, (nctx + 1) * ENG_SESSION_MAX, 1))
        return fail(c->err, SNAP_ENOMEM, c->chunk->offset, "contexts: out of memory");
    memset(&s->ctx[0], 0, sizeof s->ctx[0]);
    for (uint64_t l = 1; l <= nctx; l++) {
        struct snap_ctx *x = &s->ctx[l];
        memset(x, 0, sizeof *x);
        const uint8_t *fp = NULL;
        if (get_bytes(c, 1, &fp, "context flags"))
            return SNAP_ECORRUPT;
        uint8_t f = *fp;
        unsigned ipc = (f >> CTX_IP_SHIFT) & 3;
        if (ipc == 3 || ((f & CTX_USER_OWNER) && (!is_user || !(f & CTX_USER))) ||
            ((f & CTX_SESS_OWNER) && (is_user || !(f & CTX_SESS))) ||
            !(f & (CTX_USER | CTX_SESS)))
            return cbad(c, "context %" PRIu64 ": bad flags %#x", l, f);
        if (f & CTX_REF) {
            if (get_u32v(c, &x->id, UINT32_MAX, "context id"))
                return SNAP_ECORRUPT;
            if (x->id == 0 || x->id >= *next_ctx_id)
                return cbad(c, "context id %" PRIu32 " not defined yet", x->id);
        } else {
            if (*next_ctx_id == UINT32_MAX)
                return cbad(c, "too many contexts");
            x->id = (*next_ctx_id)++;
            x->is_new = true;
        }
        if (f & CTX_USER) {
            if (f & CTX_USER_OWNER)
                x->user = v->user;
            else if (get_varint(c, &x->user, "context user"))
                return SNAP_ECORRUPT;
            if (x->user == 0)
                return cbad(c, "context user 0");
        }
        if (f & CTX_SESS) {
            char *buf = s->sess + l * ENG_SESSION_MAX;
            if (f & CTX_SESS_OWNER) {
                memcpy(buf, v->session, v->session_len);
                x->session_len = v->session_len;
            } else if (get_session(c, buf, &x->session_len, "context session")) {
                return SNAP_ECORRUPT;
            }
            x->session = buf;
        }
        if (ipc) {
            const uint8_t *ip = NULL;
            x->ip_family = ipc == 1 ? 4 : 6;
            if (get_bytes(c, ipc == 1 ? 4 : 16, &ip, "context ip"))
                return SNAP_ECORRUPT;
            memcpy(x->ip, ip, ipc == 1 ? 4 : 16);
        }
        if (f & CTX_UA) {
            if (get_u32v(c, &x->ua_id, UINT32_MAX, "context ua"))
                return SNAP_ECORRUPT;
            if (x->ua_id == 0)
                return cbad(c, "context ua 0");
        }
    }
    out->ctx = s->ctx;
    out->nctx = nctx;
    if (get_varint(c, &nrecs, "record count"))
        return SNAP_ECORRUPT;
    if (nrecs > ENG_HISTORY_MAX || nrecs * 3 > (uint64_t)(c->end - c->p))
        return cbad(c, "%" PRIu64 " records", nrecs);
    if (grow((void **)&s->recs, &s->recs_cap, nrecs + 1, sizeof *s->recs))
        return fail(c->err, SNAP_ENOMEM, c->chunk->offset, "records: out of memory");
    int64_t prev = v->last_seen_ms;
    for (uint64_t k = nrecs; k-- > 0;) {
        struct eng_rec_view *r = &s->recs[k];
        memset(r, 0, sizeof *r);
        const uint8_t *hp = NULL;
        if (get_bytes(c, 1, &hp, "record head"))
            return SNAP_ECORRUPT;
        uint8_t h = *hp;
        r->type = h & 7;
        r->has_watch = h & REC_WATCH;
        uint32_t sel = (uint32_t)h >> REC_CTX_SHIFT, l = sel;
        if (get_varint(c, &r->short_id, "record short") || get_ts(c, prev, &r->ts, "record ts"))
            return SNAP_ECORRUPT;
        if (r->short_id == 0)
            return cbad(c, "record short 0");
        if (r->ts < 0 || r->ts > ENG_TS_MAX)
            return cbad(c, "record ts %" PRId64 " out of range", r->ts);
        prev = r->ts;
        if ((h & REC_WATCH) && get_u32v(c, &r->watch_ms, ENG_WATCH_MAX, "record watch_ms"))
            return SNAP_ECORRUPT;
        if ((h & REC_PLAT) && get_u32v(c, &r->platform_id, UINT32_MAX, "record platform"))
            return SNAP_ECORRUPT;
        if ((h & REC_PLAT) && r->platform_id == 0)
            return cbad(c, "record platform 0");
        if (sel == REC_CTX_EXT && get_u32v(c, &l, UINT32_MAX, "record context"))
            return SNAP_ECORRUPT;
        if (l > nctx || (sel == REC_CTX_EXT && l < REC_CTX_EXT))
            return cbad(c, "record context %" PRIu32 " of %" PRIu64, l, nctx);
        r->ctx_id = l;
    }
    v->nrecs = nrecs;
    out->recs = s->recs;
    return 0;
}

int snap_dec_totals(struct snap_cur *c, struct eng_totals *out)
{
    if (get_varint(c, &out->interactions, "interactions"))
        return SNAP_ECORRUPT;
    for (int i = 0; i < ENG_T_COUNT; i++)
        if (get_varint(c, &out->by_type[i], "by_type"))
            return SNAP_ECORRUPT;
    if (get_varint(c, &out->sessions_evicted, "sessions_evicted"))
        return SNAP_ECORRUPT;
    return 0;
}

/* ---- loading into an engine ----------------------------------------------------------- */

struct rd {
    struct eng *e;
    const uint8_t *buf;
    size_t len;
    struct snap_header h;
    struct snap_err *err;
    struct snap_chunk *chunks;
    size_t nchunks;
    struct snap_scratch s;
    struct idmap shorts;            /* short id -> index */
    uint32_t nshorts;
    uint64_t *ctx_hash;             /* by file ctx id: content hash */
    size_t ctx_hash_cap;
    uint32_t next_ctx_id;
    struct pairs pv, ps;
    uint64_t *merged;
    size_t merged_cap;
    struct eng_walk_counts got;
    uint64_t pf_cursor;             /* eng_restore_prefault's */
    size_t pf_left;
};

/* A table pre-sized from a header count: the count has been checked only
 * against what the chunk headers claim, which a file with valid checksums
 * but a damaged (or crafted) body can inflate without bound, so the size is
 * capped by the file's length. A real file spends more than
 * SNAP_PRESIZE_BYTES of it on every item; the engine's and the loader's
 * tables grow as items arrive, so a denser file still loads, just with
 * some growth on the way. */
#define SNAP_PRESIZE_BYTES 16u
static uint64_t rd_presize(const struct rd *r, uint64_t count)
{
    uint64_t cap = r->len / SNAP_PRESIZE_BYTES;
    return count < cap ? count : cap;
}

static int eng_fail(struct rd *r, int erc, const struct eng_err *ee, const struct snap_chunk *c,
                    const char *what)
{
    return fail(r->err, erc == ENG_ENOMEM ? SNAP_ENOMEM : SNAP_ECORRUPT, c ? c->offset : 0,
                "%s chunk at offset %" PRIu64 ": engine refused %s: %s",
                c ? snap_sec_name(c->sec) : "-", c ? c->offset : 0, what, ee->msg);
}

/* The header's count of each section's items. */
static const uint8_t sec_count[SNAP_SEC_TOTL] = {
    [SNAP_SEC_PLAT] = CN_PLAT, [SNAP_SEC_UAGT] = CN_UAS, [SNAP_SEC_SHRT] = CN_SHORTS,
    [SNAP_SEC_SESS] = CN_SESS, [SNAP_SEC_USER] = CN_USERS,
};

/* Split the body into chunks and check their order, and each section's
 * items against the header's count of them (before those counts size any
 * table); no decompression. */
static int rd_index(struct rd *r)
{
    size_t body_end = r->len - SNAP_FTR_SIZE, cap = 0;
    uint64_t raw = 0, items[SNAP_SEC_TOTL] = {0};
    int last = -1;
    for (size_t off = SNAP_HDR_SIZE; off < body_end;) {
        if (body_end - off < SNAP_CHUNK_HDR)
            return fail(r->err, SNAP_ECORRUPT, off, "truncated chunk header");
        struct snap_chunk c;
        int rc = snap_parse_chunk(r->buf + off, off, &c, r->err);
        if (rc)
            return rc;
        if (c.frame_len > body_end - off - SNAP_CHUNK_HDR)
            return fail(r->err, SNAP_ECORRUPT, off, "%s chunk: frame of %" PRIu32
                        " bytes runs past the end", snap_sec_name(c.sec), c.frame_len);
        if (c.sec < last)
            return fail(r->err, SNAP_ECORRUPT, off, "%s chunk after %s: sections out of order",
                        snap_sec_name(c.sec), snap_sec_name(last));
        if (c.sec == SNAP_SEC_TOTL && (last == SNAP_SEC_TOTL || c.nitems != 1))
            return fail(r->err, SNAP_ECORRUPT, off, "TOTL: must be one chunk of one item");
        last = c.sec;
        if (grow((void **)&r->chunks, &cap, r->nchunks + 1, sizeof *r->chunks))
            return fail(r->err, SNAP_ENOMEM, off, "chunk index: out of memory");
        r->chunks[r->nchunks++] = c;
        raw += c.raw_len;
        if (c.sec < SNAP_SEC_TOTL)
            items[c.sec] += c.nitems;
        off += SNAP_CHUNK_HDR + c.frame_len;
    }
    if (last != SNAP_SEC_TOTL)
        return fail(r->err, SNAP_ECORRUPT, body_end, "no TOTL chunk: truncated body");
    if (raw != get_le(r->buf + body_end + 8, 8))
        return fail(r->err, SNAP_ECORRUPT, body_end + 8, "footer raw size mismatch");
    for (int sec = 0; sec < SNAP_SEC_TOTL; sec++) {
        int i = sec_count[sec];
        uint64_t want = count_get(&r->h.counts, i);
        if (want != items[sec])
            return fail(r->err, SNAP_ECORRUPT, count_off(i),
                        "header says %" PRIu64 " %s, the %s chunks hold %" PRIu64, want,
                        count_names[i], snap_sec_name(sec), items[sec]);
    }
    return SNAP_OK;
}

static int rd_open_chunk(struct rd *r, const struct snap_chunk *c, struct snap_cur *cur)
{
    int rc = snap_chunk_inflate(&r->s, c, r->buf + c->offset + SNAP_CHUNK_HDR, r->err);
    if (rc)
        return rc;
    cur->p = cur->start = r->s.raw;
    cur->end = r->s.raw + c->raw_len;
    cur->chunk = c;
    cur->item = 0;
    cur->created_ms = r->h.created_ms;
    cur->err = r->err;
    return SNAP_OK;
}

static int rd_close_chunk(struct snap_cur *cur)
{
    if (cur->p != cur->end)
        return cbad(cur, "%zu bytes after the last item", (size_t)(cur->end - cur->p));
    return SNAP_OK;
}

static uint64_t ctx_content_hash(const struct snap_ctx *x)
{
    uint8_t b[8 + 1 + ENG_SESSION_MAX + 1 + 16 + 4];
    size_t n = 0;
    put_le(b, x->user, 8);
    n = 8;
    b[n++] = (uint8_t)x->session_len;
    if (x->session_len)
        memcpy(b + n, x->session, x->session_len);
    n += x->session_len;
    b[n++] = x->ip_family;
    memcpy(b + n, x->ip, 16);
    n += 16;
    put_le(b + n, x->ua_id, 4);
    n += 4;
    return XXH3_64bits(b, n);
}

static int rd_platforms_uas(struct rd *r)
{
    uint32_t last_plat = 0, last_ua = 0;   /* ids run 1, 2, 3, ... */
    for (size_t i = 0; i < r->nchunks; i++) {
        const struct snap_chunk *c = &r->chunks[i];
        if (c->sec != SNAP_SEC_PLAT && c->sec != SNAP_SEC_UAGT)
            continue;
        struct snap_cur cur;
        int rc = rd_open_chunk(r, c, &cur);
        if (rc)
            return rc;
        for (; cur.item < c->nitems; cur.item++) {
            struct eng_err ee = {0};
            if (c->sec == SNAP_SEC_PLAT) {
                struct eng_platform_view v;
                if ((rc = snap_dec_platform(&cur, &last_plat, &v)))
                    return rc;
                if ((rc = eng_restore_platform(r->e, &v, &ee)))
                    return eng_fail(r, rc, &ee, c, "a platform");
                r->got.platforms++;
            } else {
                struct eng_ua_view v;
                if ((rc = snap_dec_ua(&cur, &last_ua, &v)))
                    return rc;
                if ((rc = eng_restore_ua(r->e, &v, &ee)))
                    return eng_fail(r, rc, &ee, c, "a user agent");
                r->got.uas++;
            }
        }
        if ((rc = rd_close_chunk(&cur)))
            return rc;
    }
    return SNAP_OK;
}

/* Shorts, pass 1: the id -> index map that implied sets are grouped by, and
 * the shorts created in the engine by id (their data comes after the rings). */
static int rd_short_ids(struct rd *r)
{
    uint64_t *ids = NULL;
    size_t ids_cap = 0;
    int rc = SNAP_OK;
    if (idmap_init(&r->shorts, rd_presize(r, r->h.counts.shorts)))
        return fail(r->err, SNAP_ENOMEM, 0, "short index: out of memory");
    for (size_t i = 0; i < r->nchunks; i++) {
        const struct snap_chunk *c = &r->chunks[i];
        if (c->sec != SNAP_SEC_SHRT)
            continue;
        struct snap_cur cur;
        if ((rc = rd_open_chunk(r, c, &cur)))
            goto out;
        uint64_t prev = 0;
        for (; cur.item < c->nitems; cur.item++) {
            struct snap_short sh;
            if ((rc = snap_dec_short(&cur, &r->s, prev, &sh)))
                goto out;
            /* The header's count needs no check here: rd_index matched it
             * to the chunks' items, and each chunk decodes exactly those.
             * The engine's limit does: pre-sizing was capped, so it has not
             * been asked about the count (and nshorts must not wrap). */
            if (r->nshorts >= ENG_SHORTS_MAX) {
                rc = cbad(&cur, "more shorts than an engine holds (%" PRIu64 ")",
                          (uint64_t)ENG_SHORTS_MAX);
                goto out;
            }
            int put = idmap_put(&r->shorts, sh.v.short_id, r->nshorts);
            if (put <= 0) {
                rc = put < 0 ? fail(r->err, SNAP_ENOMEM, c->offset, "short index: out of memory")
                             : cbad(&cur, "short %" PRIu64 " twice", sh.v.short_id);
                goto out;
            }
            if (grow((void **)&ids, &ids_cap, (size_t)r->nshorts + 1, sizeof *ids)) {
                rc = fail(r->err, SNAP_ENOMEM, c->offset, "short index: out of memory");
                goto out;
            }
            ids[r->nshorts++] = sh.v.short_id;
            prev = sh.v.short_id;
        }
        if ((rc = rd_close_chunk(&cur)))
            goto out;
    }
    idmap_densify(&r->shorts);
    struct eng_err ee = {0};
    int erc = eng_restore_short_ids(r->e, ids, r->nshorts, &ee);
    if (erc)
        rc = eng_fail(r, erc, &ee, NULL, "the short ids");
out:
    free(ids);
    return rc;
}

/*
 * The one pass over the rings, decoding on a second thread.
 *
 * Decoding (LZ4, varints, the context table checks, the implied pairs) is
 * loader work that never touches the engine, and restoring is engine work
 * that never touches compressed bytes, so a load splits along that line: a
 * decoding thread fills batches -- a run of rings and the contexts they
 * define -- and the caller's thread restores them (contexts first), one
 * batch behind. (Reading the rings once is what eng_restore_short_ids is
 * for: with shorts restored before rings, the rings had to be decoded once
 * for the implied viewer sets and again to restore them.) The engine stays single-threaded. Two
 * batches alternate; a batch holds items of one chunk only, at most RB_MAX
 * rings, so its memory is bounded whatever a file claims. A decoding error
 * ends the batch it occurs in and is reported once the items before it
 * are restored, so errors surface in file order exactly as a sequential
 * load would report them. When the thread cannot be started, or the
 * process may use only one CPU, the caller's thread fills each batch
 * itself. Whenever the caller waits for a batch it has the engine's
 * reserved tables faulted in, a huge page at a time, so the restores that
 * follow stop less for page faults.
 */
#define RB_MAX 4096
#define RB_NBUF 2
#define RB_AHEAD 8     /* rings prefetched ahead of the one being restored */
#define RD_PREFAULT_STEP ((size_t)2 << 20)  /* one huge page: ~3 ms of waiting */

struct rbatch {
    const struct snap_chunk *chunk;  /* every item is from this chunk */
    /* contexts these rings define, sessions in csess (ENG_SESSION_MAX each) */
    struct eng_ctx_view *cv;
    char *csess;
    size_t nc, cv_cap, csess_cap;
    /* the rings, sessions in sess; records from recs + first[i] */
    struct eng_ring_view *v;
    size_t *first;
    char *sess;
    struct eng_rec_view *recs;
    size_t n, nrecs, recs_cap;
    int rc;                          /* decoding stopped here with this error */
    bool last;                       /* no batch follows */
};

struct rpipe {
    struct rd *r;
    struct rbatch b[RB_NBUF];
    /* decoder state, the decoding thread's alone */
    struct snap_scratch s;
    struct snap_err err;             /* its error, read once its batch is handed over */
    struct snap_cur cur;
    size_t chunk;                    /* next chunk to look at */
    bool in_chunk;
    uint32_t next_id;                /* the id the next new context gets */
    /* hand-over: batch k lives in b[k % RB_NBUF] */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned produced, consumed;
    bool stop;
};

static void rbatch_free(struct rbatch *b)
{
    free(b->cv);
    free(b->csess);
    free(b->v);
    free(b->first);
    free(b->sess);
    free(b->recs);
    memset(b, 0, sizeof *b);
}

static int pdec_nomem(struct rpipe *p, const char *what)
{
    return fail(&p->err, SNAP_ENOMEM, p->cur.chunk ? p->cur.chunk->offset : 0,
                "%s: out of memory", what);
}

/* One ring, first: check its contexts, queue the new ones, collect the
 * (short, viewer) pairs its records imply. */
static int pdec_ring_ctxs(struct rpipe *p, struct rbatch *b, const struct snap_ring *ring)
{
    struct rd *r = p->r;
    struct snap_cur *cur = &p->cur;
    uint64_t fps[8];   /* viewer fingerprint per local ctx, first few cached */
    /* The records' short lookups below miss the cache more often than not;
     * start them now so they overlap the context work. */
    for (size_t k = 0; k < ring->v.nrecs && r->shorts.dense; k++)
        if (ring->recs[k].short_id < r->shorts.dense_n)
            __builtin_prefetch(&r->shorts.dense[ring->recs[k].short_id]);
    for (size_t l = 1; l <= ring->nctx; l++) {
        const struct snap_ctx *x = &ring->ctx[l];
        uint64_t hsh = ctx_content_hash(x);
        if (x->is_new) {
            if (x->id > r->h.counts.ctxs)
                return cbad(cur, "more contexts than the header's %" PRIu64, r->h.counts.ctxs);
            if (grow((void **)&r->ctx_hash, &r->ctx_hash_cap, (size_t)x->id + 1,
                     sizeof *r->ctx_hash) ||
                grow((void **)&b->cv, &b->cv_cap, b->nc + 1, sizeof *b->cv) ||
                grow((void **)&b->csess, &b->csess_cap, (b->nc + 1) * ENG_SESSION_MAX, 1))
                return pdec_nomem(p, "contexts");
            r->ctx_hash[x->id] = hsh;
            struct eng_ctx_view *cv = &b->cv[b->nc];
            *cv = (struct eng_ctx_view){
                .id = x->id, .user = x->user, .session_len = x->session_len,
                .ip_family = x->ip_family, .ua_id = x->ua_id,
            };
            memcpy(cv->ip, x->ip, 16);
            if (x->session) {   /* csess may still move: the pointer is set at hand-over */
                memcpy(b->csess + b->nc * ENG_SESSION_MAX, x->session, x->session_len);
                cv->session = b->csess;
            }
            b->nc++;
            r->got.ctxs++;
        } else if (r->ctx_hash[x->id] != hsh) {
            return cbad(cur, "context %" PRIu32 " repeated with other content", x->id);
        }
        if (l < 8)
            fps[l] = x->user ? snap_fp_user(x->user) : snap_fp_session(x->session, x->session_len);
    }
    for (size_t k = 0; k < ring->v.nrecs; k++) {
        const struct eng_rec_view *rec = &ring->recs[k];
        struct pairs *pp = rec->type == ENG_T_SAVE ? &r->ps
                           : (rec->type == ENG_T_IMPRESSION || rec->type == ENG_T_VIEW) ? &r->pv
                                                                                        : NULL;
        uint32_t six;
        if (!pp || rec->ctx_id == 0)
            continue;   /* other records' shorts: eng_restore_ring checks */
        if (!idmap_get(&r->shorts, rec->short_id, &six))
            return cbad(cur, "record of unknown short %" PRIu64, rec->short_id);
        const struct snap_ctx *x = &ring->ctx[rec->ctx_id];
        uint64_t fp = rec->ctx_id < 8 ? fps[rec->ctx_id]
                      : x->user ? snap_fp_user(x->user)
                                : snap_fp_session(x->session, x->session_len);
        if (pairs_push(pp, six, fp))
            return pdec_nomem(p, "implied sets");
    }
    if (ring->v.is_user)
        r->got.users++;
    else
        r->got.sessions++;
    r->got.records += ring->v.nrecs;
    return SNAP_OK;
}

/* One ring, then: queue it with its contexts as file-wide ids. */
static int pdec_ring_queue(struct rpipe *p, struct rbatch *b, const struct snap_ring *ring)
{
    if (!b->v) {
        b->v = malloc(RB_MAX * sizeof *b->v);
        b->first = malloc(RB_MAX * sizeof *b->first);
        b->sess = malloc((size_t)RB_MAX * ENG_SESSION_MAX);
        if (!b->v || !b->first || !b->sess)
            return pdec_nomem(p, "rings");
    }
    if (grow((void **)&b->recs, &b->recs_cap, b->nrecs + ring->v.nrecs + 1, sizeof *b->recs))
        return pdec_nomem(p, "records");
    struct eng_ring_view *v = &b->v[b->n];
    *v = ring->v;
    if (!v->is_user) {
        char *sess = b->sess + b->n * ENG_SESSION_MAX;
        memcpy(sess, v->session, v->session_len);
        v->session = sess;
    }
    struct eng_rec_view *out = b->recs + b->nrecs;
    for (size_t k = 0; k < v->nrecs; k++) {
        out[k] = ring->recs[k];
        out[k].ctx_id = ring->ctx[out[k].ctx_id].id;
    }
    b->first[b->n++] = b->nrecs;
    b->nrecs += v->nrecs;
    return SNAP_OK;
}

/* Decode the next batch: rings of the current chunk until it ends or the
 * batch is full. Sets b->last after the last ring chunk or an error. */
static void pdec_fill(struct rpipe *p, struct rbatch *b)
{
    struct rd *r = p->r;
    b->nc = b->n = b->nrecs = 0;
    b->rc = SNAP_OK;
    b->last = false;
    b->chunk = NULL;
    int rc = SNAP_OK;
    while (!p->in_chunk) {
        if (p->chunk == r->nchunks) {
            b->last = true;
            return;
        }
        const struct snap_chunk *c = &r->chunks[p->chunk++];
        if (c->sec != SNAP_SEC_SESS && c->sec != SNAP_SEC_USER)
            continue;
        p->cur.chunk = b->chunk = c;
        if ((rc = snap_chunk_inflate(&p->s, c, r->buf + c->offset + SNAP_CHUNK_HDR, &p->err)))
            goto out;
        p->cur = (struct snap_cur){
            .p = p->s.raw, .start = p->s.raw, .end = p->s.raw + c->raw_len, .chunk = c,
            .created_ms = r->h.created_ms, .err = &p->err,
        };
        p->in_chunk = true;
    }
    struct snap_cur *cur = &p->cur;
    const struct snap_chunk *c = cur->chunk;
    b->chunk = c;
    for (; cur->item < c->nitems && b->n < RB_MAX && b->nc < RB_MAX; cur->item++) {
        struct snap_ring ring;
        if ((rc = snap_dec_ring(cur, &p->s, c->sec == SNAP_SEC_USER, &p->next_id, &ring)))
            goto out;
        if (ring.v.nrecs > r->h.history) {
            rc = cbad(cur, "ring of %zu records, history is %" PRIu32, ring.v.nrecs, r->h.history);
            goto out;
        }
        if ((rc = pdec_ring_ctxs(p, b, &ring)) || (rc = pdec_ring_queue(p, b, &ring)))
            goto out;
    }
    if (cur->item == c->nitems) {
        p->in_chunk = false;
        rc = rd_close_chunk(cur);
    }
out:
    for (size_t i = 0; i < b->nc; i++)
        if (b->cv[i].session)
            b->cv[i].session = b->csess + i * ENG_SESSION_MAX;
    if (rc) {
        b->rc = rc;
        b->last = true;
    }
}

static void *pdec_main(void *arg)
{
    struct rpipe *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (p->produced - p->consumed == RB_NBUF && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        bool stop = p->stop;
        pthread_mutex_unlock(&p->mu);
        if (stop)
            break;
        struct rbatch *b = &p->b[p->produced % RB_NBUF];
        pdec_fill(p, b);
        pthread_mutex_lock(&p->mu);
        p->produced++;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        if (b->last)
            break;
    }
    return NULL;
}

/* Restore one batch in the caller's thread. */
static int prestore(struct rpipe *p, const struct rbatch *b)
{
    struct rd *r = p->r;
    for (size_t i = 0; i < b->nc; i++) {
        struct eng_err ee = {0};
        int rc = eng_restore_ctx(r->e, &b->cv[i], &ee);
        if (rc)
            return eng_fail(r, rc, &ee, b->chunk, "a context");
    }
    for (size_t k = 0; k < b->n; k++) {
        struct eng_err ee = {0};
        if (k + RB_AHEAD < b->n)   /* its short and context lookups miss the cache */
            eng_restore_ring_prefetch(r->e, &b->v[k + RB_AHEAD], b->recs + b->first[k + RB_AHEAD]);
        int rc = eng_restore_ring(r->e, &b->v[k], b->recs + b->first[k], &ee);
        if (rc)
            return eng_fail(r, rc, &ee, b->chunk, "a ring");
    }
    if (b->rc && r->err)
        *r->err = p->err;
    return b->rc;
}

/* CPUs this thread may run on: a second thread pinned to the same single
 * CPU (shortstatd pinned by an operator or the bench) would only take
 * turns with this one. */
static int cpus_usable(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    return sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
}

/* Rings: restore them with their contexts, collect the implied pairs. */
static int rd_rings(struct rd *r)
{
    struct rpipe *p = calloc(1, sizeof *p);
    if (!p)
        return fail(r->err, SNAP_ENOMEM, 0, "rings: out of memory");
    p->r = r;
    p->next_id = 1;
    pthread_t th;
    bool sync = pthread_mutex_init(&p->mu, NULL) == 0;
    if (sync && pthread_cond_init(&p->cv, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        sync = false;
    }
    bool threaded = sync && cpus_usable() > 1 && pthread_create(&th, NULL, pdec_main, p) == 0;
    if (threaded)
        atomic_fetch_add_explicit(&threaded_loads, 1, memory_order_relaxed);
    int rc = SNAP_OK;
    for (bool last = false; !rc && !last;) {
        struct rbatch *b = &p->b[p->consumed % RB_NBUF];
        if (threaded) {
            pthread_mutex_lock(&p->mu);
            while (p->produced == p->consumed) {
                if (r->pf_left) {   /* nothing to restore yet: fault tables in */
                    pthread_mutex_unlock(&p->mu);
                    r->pf_left = eng_restore_prefault(r->e, &r->pf_cursor, RD_PREFAULT_STEP);
                    pthread_mutex_lock(&p->mu);
                    continue;
                }
                pthread_cond_wait(&p->cv, &p->mu);
            }
            pthread_mutex_unlock(&p->mu);
        } else {
            pdec_fill(p, b);
        }
        rc = prestore(p, b);
        last = b->last;
        if (threaded) {
            pthread_mutex_lock(&p->mu);
            p->consumed++;
            p->stop = rc != SNAP_OK;
            pthread_cond_broadcast(&p->cv);
            pthread_mutex_unlock(&p->mu);
        } else {
            p->consumed++;
        }
    }
    if (threaded)
        pthread_join(th, NULL);
    if (sync) {
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
    }
    r->next_ctx_id = p->next_id;
    for (int i = 0; i < RB_NBUF; i++)
        rbatch_free(&p->b[i]);
    snap_scratch_free(&p->s);
    free(p);
    return rc;
}

/* Implied ∪ explicit, both sorted; they must be disjoint and add up. */
static int rd_merge(struct rd *r, struct snap_cur *cur, const uint64_t *imp, size_t ni,
                    const uint64_t *x, size_t nx, uint64_t total, const char *what)
{
    if (ni + nx != total)
        return cbad(cur, "%s: %zu implied + %zu stored != %" PRIu64, what, ni, nx, total);
    if (grow((void **)&r->merged, &r->merged_cap, total + 1, sizeof *r->merged))
        return fail(r->err, SNAP_ENOMEM, cur->chunk->offset, "%s: out of memory", what);
    size_t i = 0, j = 0, k = 0;
    while (i < ni || j < nx) {
        if (j == nx || (i < ni && imp[i] < x[j]))
            r->merged[k++] = imp[i++];
        else if (i == ni || x[j] < imp[i])
            r->merged[k++] = x[j++];
        else
            return cbad(cur, "%s: fingerprint both implied and stored", what);
    }
    return SNAP_OK;
}

static int rd_shorts(struct rd *r)
{
    uint32_t six = 0;
    uint64_t *sv = NULL;
    size_t sv_cap = 0;
    int rc = SNAP_OK;
    for (size_t i = 0; i < r->nchunks && rc == SNAP_OK; i++) {
        const struct snap_chunk *c = &r->chunks[i];
        if (c->sec != SNAP_SEC_SHRT)
            continue;
        struct snap_cur cur;
        if ((rc = rd_open_chunk(r, c, &cur)))
            break;
        uint64_t prev = 0;
        for (; cur.item < c->nitems; cur.item++, six++) {
            struct snap_short sh;
            uint64_t *imp = NULL;
            size_t ni;
            if ((rc = snap_dec_short(&cur, &r->s, prev, &sh)))
                break;
            prev = sh.v.short_id;
            ni = sh.viewers_implied ? pairs_slice(&r->pv, six, &imp) : 0;
            if ((rc = rd_merge(r, &cur, imp, ni, sh.xviewers, sh.nxviewers, sh.nviewers,
                               "viewer set")))
                break;
            /* keep the viewers while the savers use r->merged */
            if (grow((void **)&sv, &sv_cap, sh.nviewers + 1, sizeof *sv)) {
                rc = fail(r->err, SNAP_ENOMEM, c->offset, "viewer set: out of memory");
                break;
            }
            memcpy(sv, r->merged, sh.nviewers * sizeof *sv);
            ni = sh.savers_implied ? pairs_slice(&r->ps, six, &imp) : 0;
            if ((rc = rd_merge(r, &cur, imp, ni, sh.xsavers, sh.nxsavers, sh.nsavers,
                               "saver set")))
                break;
            r->got.viewer_pairs += sh.nviewers;
            r->got.saver_pairs += sh.nsavers;
            struct eng_err ee = {0};
            int erc = eng_restore_short(r->e, &sh.v, sv, sh.nviewers, r->merged, sh.nsavers, &ee);
            if (erc) {
                rc = eng_fail(r, erc, &ee, c, "a short");
                break;
            }
            r->got.shorts++;
        }
        if (rc == SNAP_OK)
            rc = rd_close_chunk(&cur);
    }
    free(sv);
    return rc;
}

static int rd_totals(struct rd *r)
{
    const struct snap_chunk *c = &r->chunks[r->nchunks - 1];
    struct snap_cur cur;
    struct eng_totals t;
    int rc = rd_open_chunk(r, c, &cur);
    if (rc || (rc = snap_dec_totals(&cur, &t)) || (rc = rd_close_chunk(&cur)))
        return rc;
    struct eng_err ee = {0};
    if ((rc = eng_restore_finish(r->e, &t, &ee)))
        return eng_fail(r, rc, &ee, c, "the totals");
    return SNAP_OK;
}

static int rd_check_counts(struct rd *r)
{
    for (int i = 0; i < CN_N; i++) {
        uint64_t want = count_get(&r->h.counts, i), got = count_get(&r->got, i);
        if (want != got)
            return fail(r->err, SNAP_ECORRUPT, count_off(i), "header says %" PRIu64
                        " %s, body has %" PRIu64, want, count_names[i], got);
    }
    return SNAP_OK;
}

/* Header, footer and whole-file checksum: everything before any decoding. */
static int check_image(const uint8_t *buf, size_t len, struct snap_header *h, struct snap_err *err)
{
    int rc = snap_parse_header(buf, len, h, err);
    if (rc)
        return rc;
    if (len < SNAP_HDR_SIZE + SNAP_FTR_SIZE)
        return fail(err, SNAP_ECORRUPT, len, "truncated: %zu bytes", len);
    struct snap_footer f;
    if ((rc = snap_parse_footer(buf + len - SNAP_FTR_SIZE, SNAP_FTR_SIZE, len, &f, err)))
        return rc;
    if (XXH64(buf, len - 8, 0) != f.checksum)
        return fail(err, SNAP_ECORRUPT, len - 8, "file checksum mismatch (XXH64 over %zu bytes)",
                    len - 8);
    h->raw_bytes = f.raw_bytes;
    /* Bound the counts by what the body can hold (every item takes a byte
     * or more; implied set members take none); the footer's raw size by
     * what LZ4 can expand the file to. raw < 2^58 for any file that can
     * be mapped, so none of the sums below wraps. */
    uint64_t raw = f.raw_bytes;
    if (raw > (uint64_t)len * 256)
        return fail(err, SNAP_ECORRUPT, len - SNAP_FTR_SIZE + 8, "footer raw_bytes %" PRIu64
                    ": more than LZ4 can expand %zu bytes to", raw, len);
    const struct eng_walk_counts *c = &h->counts;
    const uint64_t rec = c->records;
    const uint64_t most[CN_N] = {[CN_PLAT] = raw, [CN_UAS] = raw, [CN_CTXS] = raw,
                                 [CN_SHORTS] = raw, [CN_SESS] = raw, [CN_USERS] = raw,
                                 [CN_RECORDS] = raw / 3, [CN_VPAIRS] = raw * 8 + rec,
                                 [CN_SPAIRS] = raw * 8 + rec};
    for (int i = 0; i < CN_N; i++)
        if (count_get(c, i) > most[i])
            return fail(err, SNAP_ECORRUPT, count_off(i), "header says %" PRIu64
                        " %s: more than a body of %" PRIu64 " bytes can hold", count_get(c, i),
                        count_names[i], raw);
    if (c->sessions + c->users > raw)  /* each <= raw: no wrap */
        return fail(err, SNAP_ECORRUPT, count_off(CN_SESS), "header says %" PRIu64
                    " sessions and %" PRIu64 " users: more than a body of %" PRIu64
                    " bytes can hold", c->sessions, c->users, raw);
    return SNAP_OK;
}

int snap_peek(const uint8_t *buf, size_t len, struct snap_header *h, struct snap_err *err)
{
    struct snap_header x;
    int rc = snap_parse_header(buf, len, &x, err);
    if (rc)
        return rc;
    if (len >= SNAP_HDR_SIZE + SNAP_FTR_SIZE && memcmp(buf + len - SNAP_FTR_SIZE, SNAP_END, 8) == 0)
        x.raw_bytes = get_le(buf + len - SNAP_FTR_SIZE + 8, 8);
    if (h)
        *h = x;
    return SNAP_OK;
}

int snap_read(struct eng *e, const uint8_t *buf, size_t len, struct snap_err *err)
{
    struct rd r;
    memset(&r, 0, sizeof r);
    r.e = e;
    r.buf = buf;
    r.len = len;
    r.err = err;
    if (err) {
        err->offset = 0;
        err->msg[0] = 0;
    }
    int rc = check_image(buf, len, &r.h, err);
    if (rc)
        return rc;
    if ((rc = rd_index(&r)))
        goto out;
    struct eng_err ee = {0};
    struct eng_walk_counts pre = r.h.counts;
    for (int i = 0; i < CN_N; i++)
        count_set(&pre, i, rd_presize(&r, count_get(&pre, i)));
    int erc = eng_restore_reserve(e, &pre, &ee);
    if (erc) {
        rc = fail(err, erc == ENG_ENOMEM ? SNAP_ENOMEM : SNAP_ECORRUPT, SNAP_HDR_COUNTS,
                  "header counts: the engine cannot reserve them: %s", ee.msg);
        goto out;
    }
    r.pf_left = 1;   /* unknown until the first call */
    /* A retained record implies at most one pair (a signed-in viewer's
     * twice, from the session's ring and the user's: more than the sets'
     * pairs, never more than the records). Pages past what is pushed are
     * never touched, so over-reserving costs address space only; and only
     * a hint: refused (a tight ulimit -v), the arrays grow as pairs come. */
    (void)pairs_reserve(&r.pv, rd_presize(&r, r.h.counts.records));
    (void)pairs_reserve(&r.ps, rd_presize(&r, r.h.counts.records));
    if ((rc = rd_platforms_uas(&r)) || (rc = rd_short_ids(&r)) || (rc = rd_rings(&r)))
        goto out;
    if (pairs_group(&r.pv, r.nshorts) || pairs_group(&r.ps, r.nshorts)) {
        rc = fail(err, SNAP_ENOMEM, 0, "implied sets: out of memory");
        goto out;
    }
    if ((rc = rd_shorts(&r)) || (rc = rd_check_counts(&r)) || (rc = rd_totals(&r)))
        goto out;
out:
    snap_scratch_free(&r.s);
    free(r.chunks);
    idmap_free(&r.shorts);
    free(r.ctx_hash);
    pairs_free(&r.pv);
    pairs_free(&r.ps);
    free(r.merged);
    return rc;
}

/* ---- files ------------------------------------------------------------------------------ */

struct map {
    const uint8_t *p;
    size_t len;
};

static int map_file(const char *path, struct map *m, struct snap_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat lb;
    /* A symbolic link to nothing (its target's disk not mounted, say) is
     * not "no snapshot": starting empty would replace the link at the
     * first snapshot. */
    if (fd < 0 && errno == ENOENT && lstat(path, &lb) == 0)
        return fail(err, SNAP_EIO, 0, "%s: a symbolic link to a file that does not exist", path);
    if (fd < 0)
        return errno == ENOENT ? fail(err, SNAP_ENOENT, 0, "%s: no such file", path)
                               : fail(err, SNAP_EIO, 0, "%s: open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return fail(err, SNAP_EIO, 0, "%s: stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return fail(err, SNAP_EIO, 0, "%s: not a regular file", path);
    }
    if (sb.st_size == 0) {
        close(fd);
        return fail(err, SNAP_ECORRUPT, 0, "%s: empty file", path);
    }
    void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED)
        return fail(err, SNAP_EIO, 0, "%s: mmap: %s", path, strerror(e));
    m->p = p;
    m->len = (size_t)sb.st_size;
    return SNAP_OK;
}

static void unmap_file(struct map *m)
{
    if (m->p)
        munmap((void *)m->p, m->len);
}

static void prefix_path(struct snap_err *err, const char *path)
{
    if (!err)
        return;
    char m[sizeof err->msg + 4200];
    if (strncmp(err->msg, path, strlen(path)) == 0)
        return;
    snprintf(m, sizeof m, "%s: %s", path, err->msg);
    size_t n = strlen(m) < sizeof err->msg ? strlen(m) : sizeof err->msg - 1;
    memcpy(err->msg, m, n);
    err->msg[n] = 0;
}

int snap_load(const char *path, const struct eng_config *cfg, struct eng **out,
              struct snap_header *h, struct snap_err *err)
{
    *out = NULL;
    struct map m = {0};
    int rc = map_file(path, &m, err);
    if (rc)
        return rc;
    struct snap_header x;
    struct eng *e = NULL;
    if ((rc = snap_peek(m.p, m.len, &x, err)))
        goto out;
    if (!(e = eng_create(cfg))) {
        rc = fail(err, SNAP_ENOMEM, 0, "engine: out of memory");
        goto out;
    }
    if ((rc = snap_read(e, m.p, m.len, err))) {
        eng_destroy(e);
        e = NULL;
        goto out;
    }
    x.raw_bytes = get_le(m.p + m.len - SNAP_FTR_SIZE + 8, 8);
    if (h)
        *h = x;
    *out = e;
out:
    if (rc)
        prefix_path(err, path);
    unmap_file(&m);
    return rc;
}

int snap_verify(const char *path, struct snap_header *h, struct snap_err *err)
{
    struct map m = {0};
    int rc = map_file(path, &m, err);
    if (rc)
        return rc;
    struct snap_header x;
    if ((rc = snap_peek(m.p, m.len, &x, err)) == SNAP_OK) {
        struct eng_config cfg = {.history = x.history, .session_ttl_ms = x.session_ttl_ms};
        struct eng *e = eng_create(&cfg);
        if (!e) {
            rc = fail(err, SNAP_ENOMEM, 0, "engine: out of memory");
        } else {
            rc = snap_read(e, m.p, m.len, err);
            if (rc == SNAP_OK) {
                struct eng_err ee = {0};
                if (eng_verify(e, &ee) != 0)
                    rc = fail(err, SNAP_ECORRUPT, 0, "restored engine fails its checks: %s",
                              ee.msg);
            }
            eng_destroy(e);
        }
        if (rc == SNAP_OK)
            x.raw_bytes = get_le(m.p + m.len - SNAP_FTR_SIZE + 8, 8);
    }
    if (rc == SNAP_OK && h)
        *h = x;
    if (rc)
        prefix_path(err, path);
    unmap_file(&m);
    return rc;
}
