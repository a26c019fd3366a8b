/* SPDX-License-Identifier: MIT */
/*
 * snap_tool.c -- shortstat-snap, the operator's tool for snapshot files.
 *
 *   info FILE       header, counts, per-section sizes, compression ratio
 *   verify FILE     full check (every checksum, every structure, a trial
 *                   restore into a scratch engine); exit 0 or 1 + where
 *   dump FILE       rows as CSV or JSON Lines, streamed chunk by chunk
 *   restore FILE --dir DIR   verify, then install as DIR/shortstat.snap
 *                   atomically, keeping the previous one as .bak
 *
 * dump reads the file twice: once to check the whole-file checksum (so it
 * never prints rows from a damaged file), then chunk by chunk. It holds one
 * decompressed chunk plus the platform and user-agent tables (interned, so
 * small); rings carry their own contexts, so nothing else grows with the
 * file. Exit codes: 0 ok, 1 the file or the filesystem said no, 2 bad usage.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "engine/eng.h"
#include "snapshot/snap.h"
#include "snapshot/snap_int.h"

enum { EXIT_BAD = 1, EXIT_USAGE = 2 };

static const char USAGE[] =
    "usage: shortstat-snap info FILE\n"
    "       shortstat-snap verify FILE\n"
    "       shortstat-snap dump FILE [--format csv|json] [--what shorts|sessions|users]\n"
    "       shortstat-snap restore FILE --dir DIR\n"
    "       shortstat-snap --help\n"
    "\n"
    "info     header, counts, sizes and compression ratio of a snapshot\n"
    "verify   check every checksum and structure (exit 0 ok, 1 bad, with where)\n"
    "dump     stream the content: --what shorts (default), sessions or users;\n"
    "         --format csv (default, with a header row) or json (one object a line)\n"
    "restore  verify FILE, then install it as DIR/" SNAP_FILE " atomically,\n"
    "         keeping the previous one as DIR/" SNAP_FILE ".bak (stop shortstatd first)\n";

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "shortstat-snap: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", USAGE);
    return EXIT_USAGE;
}

/* An error about the file `named` in err (a copy of path, say), reported
 * as path's. */
static int report_as(const char *path, const char *named, int rc, const struct snap_err *err)
{
    fprintf(stderr, "%s: %s at offset %" PRIu64 ": %s\n", path, snap_strerror(rc), err->offset,
            snap_err_reason(err, named));
    return EXIT_BAD;
}

static int report(const char *path, int rc, const struct snap_err *err)
{
    return report_as(path, path, rc, err);
}

static void fmt_time(int64_t ms, char *out, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (ms < 0 || !gmtime_r(&t, &tm) || strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        snprintf(out, n, "?");
        return;
    }
    size_t l = strlen(out);
    snprintf(out + l, n - l, ".%03dZ", (int)(ms % 1000));
}

/* ---- reading a file in order, a chunk at a time ------------------------------------ */

struct rdr {
    const char *path;
    FILE *f;
    uint64_t size, off;
    struct snap_header h;
    struct snap_footer ft;
    uint8_t *frame;
    size_t frame_cap;
    struct snap_scratch s;
    struct snap_err err;
};

static int rdr_fail(struct rdr *r, int rc, uint64_t off, const char *what)
{
    r->err.offset = off;
    snprintf(r->err.msg, sizeof r->err.msg, "%s", what);
    return rc;
}

/* Header and footer; checksum = also stream XXH64 over the whole file. */
static int rdr_open(struct rdr *r, const char *path, bool checksum)
{
    memset(r, 0, sizeof *r);
    r->path = path;
    r->f = fopen(path, "rb");
    if (!r->f) {
        snprintf(r->err.msg, sizeof r->err.msg, "open: %s", strerror(errno));
        return errno == ENOENT ? SNAP_ENOENT : SNAP_EIO;
    }
    struct stat sb;
    if (fstat(fileno(r->f), &sb) != 0 || !S_ISREG(sb.st_mode))
        return rdr_fail(r, SNAP_EIO, 0, "not a regular file");
    r->size = (uint64_t)sb.st_size;
    uint8_t hb[SNAP_HDR_SIZE];
    size_t n = fread(hb, 1, sizeof hb, r->f);
    int rc = snap_parse_header(hb, n, &r->h, &r->err);
    if (rc)
        return rc;
    if (r->size < SNAP_HDR_SIZE + SNAP_FTR_SIZE)
        return rdr_fail(r, SNAP_ECORRUPT, r->size, "truncated file");
    uint8_t fb[SNAP_FTR_SIZE];
    if (fseeko(r->f, (off_t)(r->size - SNAP_FTR_SIZE), SEEK_SET) != 0 ||
        fread(fb, 1, sizeof fb, r->f) != sizeof fb)
        return rdr_fail(r, SNAP_EIO, r->size, "cannot read the footer");
    if ((rc = snap_parse_footer(fb, sizeof fb, r->size, &r->ft, &r->err)))
        return rc;
    r->h.raw_bytes = r->ft.raw_bytes;
    if (checksum) {
        XXH64_state_t *st = XXH64_createState();
        uint8_t *buf = malloc(1 << 20);
        if (!st || !buf) {
            XXH64_freeState(st);
            free(buf);
            return rdr_fail(r, SNAP_ENOMEM, 0, "out of memory");
        }
        XXH64_reset(st, 0);
        rewind(r->f);
        uint64_t left = r->size - 8;
        while (left > 0) {
            size_t want = left < (1u << 20) ? (size_t)left : (1u << 20);
            if (fread(buf, 1, want, r->f) != want)
                break;
            XXH64_update(st, buf, want);
            left -= want;
        }
        uint64_t sum = XXH64_digest(st);
        XXH64_freeState(st);
        free(buf);
        if (left > 0)
            return rdr_fail(r, SNAP_EIO, r->size - left, "read failed");
        if (sum != r->ft.checksum)
            return rdr_fail(r, SNAP_ECORRUPT, r->size - 8, "file checksum mismatch");
    }
    r->off = SNAP_HDR_SIZE;
    if (fseeko(r->f, (off_t)r->off, SEEK_SET) != 0)
        return rdr_fail(r, SNAP_EIO, r->off, "seek failed");
    return SNAP_OK;
}

/* Next chunk header; 1 at the footer, 0 with *c filled, negative on error. */
static int rdr_next(struct rdr *r, struct snap_chunk *c)
{
    uint64_t body_end = r->size - SNAP_FTR_SIZE;
    if (r->off == body_end)
        return 1;
    uint8_t hb[SNAP_CHUNK_HDR];
    if (body_end - r->off < SNAP_CHUNK_HDR || fread(hb, 1, sizeof hb, r->f) != sizeof hb)
        return rdr_fail(r, SNAP_ECORRUPT, r->off, "truncated chunk header");
    int rc = snap_parse_chunk(hb, r->off, c, &r->err);
    if (rc)
        return rc;
    if (c->frame_len > body_end - r->off - SNAP_CHUNK_HDR)
        return rdr_fail(r, SNAP_ECORRUPT, r->off, "chunk runs past the end of the file");
    r->off += SNAP_CHUNK_HDR + c->frame_len;
    return 0;
}

static int rdr_skip(struct rdr *r)
{
    if (fseeko(r->f, (off_t)r->off, SEEK_SET) != 0)
        return rdr_fail(r, SNAP_EIO, r->off, "seek failed");
    return 0;
}

/* Read and decompress the chunk rdr_next just returned. */
static int rdr_inflate(struct rdr *r, const struct snap_chunk *c, struct snap_cur *cur)
{
    if (c->frame_len > r->frame_cap) {
        uint8_t *p = realloc(r->frame, c->frame_len);
        if (!p)
            return rdr_fail(r, SNAP_ENOMEM, c->offset, "out of memory");
        r->frame = p;
        r->frame_cap = c->frame_len;
    }
    if (fread(r->frame, 1, c->frame_len, r->f) != c->frame_len)
        return rdr_fail(r, SNAP_EIO, c->offset, "read failed");
    int rc = snap_chunk_inflate(&r->s, c, r->frame, &r->err);
    if (rc)
        return rc;
    memset(cur, 0, sizeof *cur);
    cur->p = cur->start = r->s.raw;
    cur->end = r->s.raw + c->raw_len;
    cur->chunk = c;
    cur->created_ms = r->h.created_ms;
    cur->err = &r->err;
    return 0;
}

static void rdr_close(struct rdr *r)
{
    if (r->f)
        fclose(r->f);
    free(r->frame);
    snap_scratch_free(&r->s);
}

/* Output that did not reach its destination (a full disk, a closed pipe)
 * is a failure like any other: exit 1, not 0. */
static bool stdout_failed(const char *what)
{
    if (fflush(stdout) == 0 && !ferror(stdout))
        return false;
    fprintf(stderr, "shortstat-snap: writing %s: %s\n", what, strerror(errno));
    return true;
}

/* ---- info ------------------------------------------------------------------------------ */

static int cmd_info(const char *path)
{
    struct rdr r;
    int rc = rdr_open(&r, path, true);
    bool sum_ok = rc == SNAP_OK;
    if (rc && !(rc == SNAP_ECORRUPT && r.h.version && strstr(r.err.msg, "checksum"))) {
        rdr_close(&r);
        return report(path, rc, &r.err);
    }
    if (!sum_ok) {
        r.off = SNAP_HDR_SIZE;
        fseeko(r.f, (off_t)r.off, SEEK_SET);
    }
    uint64_t chunks[SNAP_SEC_COUNT] = {0}, items[SNAP_SEC_COUNT] = {0};
    uint64_t raw[SNAP_SEC_COUNT] = {0}, stored[SNAP_SEC_COUNT] = {0};
    struct snap_chunk c;
    int nr;
    while ((nr = rdr_next(&r, &c)) == 0) {
        chunks[c.sec]++;
        items[c.sec] += c.nitems;
        raw[c.sec] += c.raw_len;
        stored[c.sec] += SNAP_CHUNK_HDR + c.frame_len;
        if (rdr_skip(&r) != 0)
            break;
    }
    const struct snap_header *h = &r.h;
    const struct eng_walk_counts *k = &h->counts;
    char created[40];
    fmt_time(h->created_ms, created, sizeof created);
    printf("file:             %s\n", path);
    printf("format:           shortstat snapshot v%" PRIu32 "\n", h->version);
    printf("created:          %s (%" PRId64 " ms)\n", created, h->created_ms);
    printf("history:          %" PRIu32 " records per ring\n", h->history);
    printf("session_ttl_ms:   %" PRId64 "\n", h->session_ttl_ms);
    printf("shorts:           %" PRIu64 "\n", k->shorts);
    printf("sessions:         %" PRIu64 "\n", k->sessions);
    printf("users:            %" PRIu64 "\n", k->users);
    printf("records:          %" PRIu64 "\n", k->records);
    printf("viewer_pairs:     %" PRIu64 "\n", k->viewer_pairs);
    printf("saver_pairs:      %" PRIu64 "\n", k->saver_pairs);
    printf("contexts:         %" PRIu64 "\n", k->ctxs);
    printf("user_agents:      %" PRIu64 "\n", k->uas);
    printf("platforms:        %" PRIu64 "\n", k->platforms);
    printf("file_bytes:       %" PRIu64 "\n", r.size);
    printf("raw_bytes:        %" PRIu64 "\n", h->raw_bytes);
    printf("compression:      %.2fx (raw / stored body)\n",
           r.size > SNAP_HDR_SIZE + SNAP_FTR_SIZE
               ? (double)h->raw_bytes / (double)(r.size - SNAP_HDR_SIZE - SNAP_FTR_SIZE) : 0.0);
    if (k->records)
        printf("bytes_per_record: %.2f\n", (double)r.size / (double)k->records);
    printf("sections:         name  chunks      items        raw_bytes     stored_bytes\n");
    for (int i = 0; i < SNAP_SEC_COUNT; i++)
        printf("                  %s %7" PRIu64 " %10" PRIu64 " %16" PRIu64 " %16" PRIu64 "\n",
               snap_sec_name(i), chunks[i], items[i], raw[i], stored[i]);
    int status = 0;
    if (nr < 0) {
        printf("structure:        BAD at offset %" PRIu64 ": %s\n", r.err.offset, r.err.msg);
        status = EXIT_BAD;
    }
    printf("checksum:         %s\n", sum_ok ? "ok (XXH64 over the file; run verify for a full check)"
                                            : "MISMATCH");
    if (!sum_ok)
        status = EXIT_BAD;
    rdr_close(&r);
    return stdout_failed("the summary") ? EXIT_BAD : status;
}

/* ---- verify --------------------------------------------------------------------------- */

static int cmd_verify(const char *path)
{
    struct snap_header h;
    struct snap_err err = {0};
    int rc = snap_verify(path, &h, &err);
    if (rc)
        return report(path, rc, &err);
    printf("%s: ok (format v%" PRIu32 ", %" PRIu64 " shorts, %" PRIu64 " sessions, %" PRIu64
           " users, %" PRIu64 " records)\n", path, h.version, h.counts.shorts, h.counts.sessions,
           h.counts.users, h.counts.records);
    return stdout_failed("the result") ? EXIT_BAD : 0;
}

/* ---- dump ------------------------------------------------------------------------------ */

enum fmt { FMT_CSV, FMT_JSON };
enum what { W_SHORTS, W_SESSIONS, W_USERS };

struct strtab {        /* id -> string, for platforms and user agents */
    char **s;
    size_t *len;
    size_t cap;
};

static int strtab_put(struct strtab *t, uint32_t id, const char *s, size_t len)
{
    if (id >= t->cap) {
        size_t cap = t->cap ? t->cap : 16;
        while (cap <= id)
            cap *= 2;
        char **ns = realloc(t->s, cap * sizeof *ns);
        if (!ns)
            return -1;
        t->s = ns;
        size_t *nl = realloc(t->len, cap * sizeof *nl);
        if (!nl)
            return -1;
        t->len = nl;
        memset(t->s + t->cap, 0, (cap - t->cap) * sizeof *t->s);
        memset(t->len + t->cap, 0, (cap - t->cap) * sizeof *t->len);
        t->cap = cap;
    }
    char *c = malloc(len + 1);
    if (!c)
        return -1;
    memcpy(c, s, len);
    c[len] = 0;
    free(t->s[id]);
    t->s[id] = c;
    t->len[id] = len;
    return 0;
}

static bool strtab_get(const struct strtab *t, uint32_t id, const char **s, size_t *len)
{
    if (id >= t->cap || !t->s[id])
        return false;
    *s = t->s[id];
    *len = t->len[id];
    return true;
}

static void strtab_free(struct strtab *t)
{
    for (size_t i = 0; i < t->cap; i++)
        free(t->s[i]);
    free(t->s);
    free(t->len);
}

/* Length of a valid UTF-8 sequence at p (max n bytes), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t l = p[0] < 0xc2 ? 0 : p[0] < 0xe0 ? 2 : p[0] < 0xf0 ? 3 : p[0] < 0xf5 ? 4 : 0;
    if (l == 0 || l > n)
        return 0;
    for (size_t i = 1; i < l; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] > 0x9f) ||
        (p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] > 0x8f))
        return 0;
    return l;
}

/* JSON string; bytes that are not UTF-8 become \u00XX (read as Latin-1). */
static void json_str(FILE *o, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    putc('"', o);
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            putc('\\', o);
            putc(c, o);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            fprintf(o, "\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            putc(c, o);
            i++;
        } else {
            size_t l = utf8_len(p + i, n - i);
            if (l) {
                fwrite(p + i, 1, l, o);
                i += l;
            } else {
                fprintf(o, "\\u%04x", c);
                i++;
            }
        }
    }
    putc('"', o);
}

/* CSV field (RFC 4180): quoted only when it must be. */
static void csv_str(FILE *o, const char *s, size_t n)
{
    bool q = false;
    for (size_t i = 0; i < n && !q; i++)
        q = s[i] == ',' || s[i] == '"' || s[i] == '\n' || s[i] == '\r';
    if (!q) {
        fwrite(s, 1, n, o);
        return;
    }
    putc('"', o);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"')
            putc('"', o);
        putc(s[i], o);
    }
    putc('"', o);
}

struct dump {
    enum fmt fmt;
    enum what what;
    FILE *o;
    struct strtab plat, ua;
};

static void dump_short(struct dump *d, const struct snap_short *sh)
{
    const struct eng_short_view *v = &sh->v;
    const uint64_t *n = v->count;
    uint64_t view_count = n[ENG_T_IMPRESSION] + n[ENG_T_VIEW];
    uint64_t engaged = n[ENG_T_SAVE] + n[ENG_T_SHARE] + n[ENG_T_CONTACT] + n[ENG_T_WHATSAPP] +
                       n[ENG_T_BOOK_VIEWING];
    double avg = v->watch_n ? (double)v->watch_sum / (double)v->watch_n : 0.0;
    double er = view_count ? (double)engaged / (double)view_count : 0.0;
    FILE *o = d->o;
    if (d->fmt == FMT_CSV) {
        fprintf(o, "%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64
                   ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64
                   ",%" PRIu64 ",%.6f,%.6f,%" PRIu32 ",%" PRId64 ",",
                v->short_id, n[ENG_T_IMPRESSION], n[ENG_T_VIEW], view_count, sh->nviewers,
                n[ENG_T_SAVE], n[ENG_T_SHARE], n[ENG_T_SKIP], n[ENG_T_CONTACT],
                n[ENG_T_WHATSAPP], n[ENG_T_BOOK_VIEWING], v->watch_sum, v->watch_n, avg, er,
                v->boost, v->last_ts);
        for (size_t i = 0; i < v->nplat; i++) {
            const char *s = "?";
            size_t l = 1;
            strtab_get(&d->plat, v->plat_ids[i], &s, &l);
            fprintf(o, "%s%.*s=%" PRIu64, i ? ";" : "", (int)l, s, v->plat_shares[i]);
        }
        putc('\n', o);
        return;
    }
    fprintf(o, "{\"short_id\":%" PRIu64 ",\"impressions\":%" PRIu64 ",\"views\":%" PRIu64
               ",\"view_count\":%" PRIu64 ",\"unique_viewers\":%" PRIu64 ",\"saves\":%" PRIu64
               ",\"shares\":%" PRIu64 ",\"skips\":%" PRIu64 ",\"contacts\":%" PRIu64
               ",\"whatsapps\":%" PRIu64 ",\"book_viewings\":%" PRIu64 ",\"watch_sum_ms\":%" PRIu64
               ",\"watch_n\":%" PRIu64 ",\"avg_watch_ms\":%.6f,\"engagement_rate\":%.6f"
               ",\"boost\":%" PRIu32 ",\"last_ts\":%" PRId64 ",\"platforms\":{",
            v->short_id, n[ENG_T_IMPRESSION], n[ENG_T_VIEW], view_count, sh->nviewers,
            n[ENG_T_SAVE], n[ENG_T_SHARE], n[ENG_T_SKIP], n[ENG_T_CONTACT], n[ENG_T_WHATSAPP],
            n[ENG_T_BOOK_VIEWING], v->watch_sum, v->watch_n, avg, er, v->boost, v->last_ts);
    for (size_t i = 0; i < v->nplat; i++) {
        const char *s = "?";
        size_t l = 1;
        strtab_get(&d->plat, v->plat_ids[i], &s, &l);
        if (i)
            putc(',', o);
        json_str(o, s, l);
        fprintf(o, ":%" PRIu64, v->plat_shares[i]);
    }
    fputs("}}\n", o);
}

static void ip_text(const struct snap_ctx *x, char *buf)
{
    buf[0] = 0;
    if (x->ip_family == 4)
        inet_ntop(AF_INET, x->ip, buf, ENG_IPSTR_MAX);
    else if (x->ip_family == 6)
        inet_ntop(AF_INET6, x->ip, buf, ENG_IPSTR_MAX);
}

static void dump_ring(struct dump *d, const struct snap_ring *g)
{
    FILE *o = d->o;
    const struct eng_ring_view *v = &g->v;
    if (d->fmt == FMT_JSON) {
        if (v->is_user)
            fprintf(o, "{\"user\":%" PRIu64, v->user);
        else {
            fputs("{\"session\":", o);
            json_str(o, v->session, v->session_len);
        }
        fprintf(o, ",\"last_seen_ms\":%" PRId64 ",\"records\":[", v->last_seen_ms);
    }
    for (size_t k = v->nrecs; k-- > 0;) {   /* newest first, as HISTORY answers */
        const struct eng_rec_view *r = &g->recs[k];
        const struct snap_ctx *x = &g->ctx[r->ctx_id];
        const char *plat = NULL, *ua = NULL;
        size_t plat_len = 0, ua_len = 0;
        if (r->platform_id)
            strtab_get(&d->plat, r->platform_id, &plat, &plat_len);
        if (x->ua_id)
            strtab_get(&d->ua, x->ua_id, &ua, &ua_len);
        char ip[ENG_IPSTR_MAX];
        ip_text(x, ip);
        const char *type = eng_type_name((enum eng_type)r->type);
        if (d->fmt == FMT_CSV) {
            if (v->is_user)
                fprintf(o, "%" PRIu64 ",", v->user);
            else {
                csv_str(o, v->session, v->session_len);
                putc(',', o);
            }
            fprintf(o, "%" PRId64 ",%" PRId64 ",%" PRIu64 ",%s,", v->last_seen_ms, r->ts,
                    r->short_id, type);
            if (r->has_watch)
                fprintf(o, "%" PRIu32, r->watch_ms);
            putc(',', o);
            if (plat)
                csv_str(o, plat, plat_len);
            putc(',', o);
            if (v->is_user) {
                if (x->session)
                    csv_str(o, x->session, x->session_len);
            } else if (x->user) {
                fprintf(o, "%" PRIu64, x->user);
            }
            fprintf(o, ",%s,", ip);
            if (ua)
                csv_str(o, ua, ua_len);
            putc('\n', o);
            continue;
        }
        fprintf(o, "%s{\"ts\":%" PRId64 ",\"short_id\":%" PRIu64 ",\"type\":\"%s\"",
                k + 1 == v->nrecs ? "" : ",", r->ts, r->short_id, type);
        if (r->has_watch)
            fprintf(o, ",\"watch_ms\":%" PRIu32, r->watch_ms);
        if (plat) {
            fputs(",\"platform\":", o);
            json_str(o, plat, plat_len);
        }
        if (x->user && !v->is_user)
            fprintf(o, ",\"user\":%" PRIu64, x->user);
        if (x->session && v->is_user) {
            fputs(",\"session\":", o);
            json_str(o, x->session, x->session_len);
        }
        if (ip[0])
            fprintf(o, ",\"ip\":\"%s\"", ip);
        if (ua) {
            fputs(",\"ua\":", o);
            json_str(o, ua, ua_len);
        }
        putc('}', o);
    }
    if (d->fmt == FMT_JSON)
        fputs("]}\n", o);
}

static int cmd_dump(const char *path, enum fmt fmt, enum what what)
{
    struct dump d = {.fmt = fmt, .what = what, .o = stdout};
    struct rdr r;
    int rc = rdr_open(&r, path, true);
    if (rc) {
        rdr_close(&r);
        return report(path, rc, &r.err);
    }
    if (fmt == FMT_CSV) {
        if (what == W_SHORTS)
            fputs("short_id,impressions,views,view_count,unique_viewers,saves,shares,skips,"
                  "contacts,whatsapps,book_viewings,watch_sum_ms,watch_n,avg_watch_ms,"
                  "engagement_rate,boost,last_ts,platform_shares\n", d.o);
        else if (what == W_SESSIONS)
            fputs("session,last_seen_ms,ts,short_id,type,watch_ms,platform,user,ip,ua\n", d.o);
        else
            fputs("user,last_seen_ms,ts,short_id,type,watch_ms,platform,session,ip,ua\n", d.o);
    }
    uint32_t next_ctx = 1, last_plat = 0, last_ua = 0;
    struct snap_chunk c;
    while (rc == 0 && (rc = rdr_next(&r, &c)) == 0) {
        bool want = c.sec == SNAP_SEC_PLAT ||
                    (c.sec == SNAP_SEC_UAGT && what != W_SHORTS) ||
                    (c.sec == SNAP_SEC_SHRT && what == W_SHORTS) ||
                    (c.sec == SNAP_SEC_SESS && what != W_SHORTS) ||
                    (c.sec == SNAP_SEC_USER && what == W_USERS);
        /* user rings number their contexts after the session rings' */
        if (!want) {
            rc = rdr_skip(&r);
            continue;
        }
        struct snap_cur cur;
        if ((rc = rdr_inflate(&r, &c, &cur)))
            break;
        uint64_t prev = 0;
        for (; rc == 0 && cur.item < c.nitems; cur.item++) {
            switch (c.sec) {
            case SNAP_SEC_PLAT: {
                struct eng_platform_view v;
                if (!(rc = snap_dec_platform(&cur, &last_plat, &v)) &&
                    strtab_put(&d.plat, v.id, v.name, v.len))
                    rc = rdr_fail(&r, SNAP_ENOMEM, c.offset, "out of memory");
                break;
            }
            case SNAP_SEC_UAGT: {
                struct eng_ua_view v;
                if (!(rc = snap_dec_ua(&cur, &last_ua, &v)) && strtab_put(&d.ua, v.id, v.ua, v.len))
                    rc = rdr_fail(&r, SNAP_ENOMEM, c.offset, "out of memory");
                break;
            }
            case SNAP_SEC_SHRT: {
                struct snap_short sh;
                if (!(rc = snap_dec_short(&cur, &r.s, prev, &sh))) {
                    prev = sh.v.short_id;
                    dump_short(&d, &sh);
                }
                break;
            }
            default: {
                struct snap_ring g;
                bool user = c.sec == SNAP_SEC_USER;
                if (!(rc = snap_dec_ring(&cur, &r.s, user, &next_ctx, &g)) &&
                    (user == (what == W_USERS)))
                    dump_ring(&d, &g);
                break;
            }
            }
        }
        if (rc == 0 && cur.p != cur.end)
            rc = rdr_fail(&r, SNAP_ECORRUPT, c.offset, "bytes after the last item of a chunk");
    }
    if (rc == 1)
        rc = 0;
    strtab_free(&d.plat);
    strtab_free(&d.ua);
    rdr_close(&r);
    if (stdout_failed("the dump"))
        return EXIT_BAD;
    return rc ? report(path, rc, &r.err) : 0;
}

/* ---- restore ----------------------------------------------------------------------------- */

static int sys_fail(const char *what, const char *path)
{
    fprintf(stderr, "shortstat-snap: %s %s: %s\n", what, path, strerror(errno));
    return EXIT_BAD;
}

/* Copy src to dst (a new file) and fsync it. */
static int copy_file(const char *src, const char *dst)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return sys_fail("open", src);
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) {
        close(in);
        return sys_fail("create", dst);
    }
    uint8_t *buf = malloc(1 << 20);
    int status = 0;
    if (!buf) {
        fprintf(stderr, "shortstat-snap: out of memory\n");
        status = EXIT_BAD;
    }
    while (status == 0) {
        ssize_t n = read(in, buf, 1 << 20);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            status = sys_fail("read", src);
            break;
        }
        if (n == 0)
            break;
        for (size_t off = 0; off < (size_t)n && status == 0;) {
            ssize_t w = write(out, buf + off, (size_t)n - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                status = sys_fail("write", dst);
            else
                off += (size_t)w;
        }
    }
    if (status == 0 && fsync(out) != 0)
        status = sys_fail("fsync", dst);
    if (close(out) != 0 && status == 0)
        status = sys_fail("close", dst);
    close(in);
    free(buf);
    if (status != 0)
        unlink(dst);
    return status;
}

/* The copy in DIR is what gets verified, so the file installed is the file
 * checked, whatever happens to FILE meanwhile; DIR's lock keeps a running
 * server (or another restore) out for the whole of it. */
static int cmd_restore(const char *path, const char *dir)
{
    char tmp[4096], dst[4096], bak[4096], baktmp[4096], lockpath[4096];
    long pid = (long)getpid();
    if ((size_t)snprintf(tmp, sizeof tmp, "%s/%s.tmp.%ld", dir, SNAP_FILE, pid) >= sizeof tmp ||
        (size_t)snprintf(dst, sizeof dst, "%s/%s", dir, SNAP_FILE) >= sizeof dst ||
        (size_t)snprintf(bak, sizeof bak, "%s/%s.bak", dir, SNAP_FILE) >= sizeof bak ||
        (size_t)snprintf(baktmp, sizeof baktmp, "%s/%s.tmp.%ld.bak", dir, SNAP_FILE, pid) >=
            sizeof baktmp ||
        (size_t)snprintf(lockpath, sizeof lockpath, "%s/%s", dir, SNAP_LOCK_FILE) >=
            sizeof lockpath) {
        fprintf(stderr, "shortstat-snap: %s: path too long\n", dir);
        return EXIT_BAD;
    }
    /* A missing DIR is made, as shortstatd makes its --dir: a restore into
     * a fresh directory for a new server is the usual case. If nothing is
     * installed, what was made is removed again. */
    struct snap_err err = {0};
    bool made;
    if (snap_prepare_dir(dir, &made, &err) != SNAP_OK) {
        fprintf(stderr, "shortstat-snap: %s\n", err.msg);
        return EXIT_BAD;
    }
    int lock = -1, rc = snap_lock_dir(dir, &lock, &err);
    if (rc) {
        fprintf(stderr, "shortstat-snap: %s%s; nothing installed\n", err.msg,
                rc == SNAP_EBUSY ? ": stop the server first" : "");
        if (made)
            rmdir(dir);
        return EXIT_BAD;
    }
    /* With the lock held no server or restore writes here: a temp file is
     * a dead writer's, and one under this pid (reused since) would make the
     * exclusive create below fail. snap_remove_stale takes both. */
    snap_remove_stale(dir);
    int status = copy_file(path, tmp);
    struct snap_header h;
    if (status == 0 && (rc = snap_verify(tmp, &h, &err))) {
        unlink(tmp);
        status = report_as(path, tmp, rc, &err);  /* the copy's offsets are FILE's */
    }
    bool had = access(dst, F_OK) == 0;
    /* Keep the previous file: hard-link it to a temp name, then rename that
     * over .bak, so .bak is always a whole snapshot. */
    if (status == 0 && had) {
        unlink(baktmp);
        if (link(dst, baktmp) != 0 || rename(baktmp, bak) != 0) {
            status = sys_fail("keep the previous snapshot as", bak);
            unlink(baktmp);
            unlink(tmp);
        }
    }
    if (status == 0 && rename(tmp, dst) != 0) {
        status = sys_fail("install", dst);
        unlink(tmp);
    }
    if (status == 0) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) != 0)
            status = sys_fail("fsync directory", dir);
        if (dfd >= 0)
            close(dfd);
    }
    if (status && made) {  /* while the lock is held: nobody else's lock file */
        unlink(lockpath);
        rmdir(dir);
    }
    close(lock);
    if (status)
        return status;
    printf("installed %s as %s (%" PRIu64 " shorts, %" PRIu64 " sessions, %" PRIu64
           " users)%s%s\n", path, dst, h.counts.shorts, h.counts.sessions, h.counts.users,
           had ? "; previous kept as " : "", had ? bak : "");
    /* installed either way: say so, so a failed report is not read as a failed restore */
    return stdout_failed("the result (the snapshot is installed)") ? EXIT_BAD : 0;
}

/* ---- main ----------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
                      !strcmp(argv[1], "help"))) {
        fputs(USAGE, stdout);
        return 0;
    }
    if (argc < 2)
        return usage_error("%s", "missing command");
    const char *cmd = argv[1];
    bool is_dump = !strcmp(cmd, "dump"), is_restore = !strcmp(cmd, "restore");
    if (!is_dump && !is_restore && strcmp(cmd, "info") != 0 && strcmp(cmd, "verify") != 0)
        return usage_error("unknown command '%s'", cmd);
    /* FILE and the options, in any order: "dump --what users FILE" too. */
    const char *file = NULL, *dir = NULL;
    enum fmt fmt = FMT_CSV;
    enum what what = W_SHORTS;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || !a[2]) {
            if (file)
                return usage_error("unexpected argument '%s'", a);
            file = a;
            continue;
        }
        bool known = (is_dump && (!strcmp(a, "--format") || !strcmp(a, "--what"))) ||
                     (is_restore && !strcmp(a, "--dir"));
        if (!known)
            return usage_error("unknown option '%s'", a);
        if (i + 1 >= argc)
            return usage_error("%s needs a value", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--dir")) {
            dir = v;
        } else if (!strcmp(a, "--format")) {
            if (!strcmp(v, "csv")) fmt = FMT_CSV;
            else if (!strcmp(v, "json")) fmt = FMT_JSON;
            else return usage_error("--format: '%s' is not csv or json", v);
        } else {
            if (!strcmp(v, "shorts")) what = W_SHORTS;
            else if (!strcmp(v, "sessions")) what = W_SESSIONS;
            else if (!strcmp(v, "users")) what = W_USERS;
            else return usage_error("--what: '%s' is not shorts, sessions or users", v);
        }
    }
    if (!file)
        return usage_error("%s", "missing FILE");
    if (is_dump)
        return cmd_dump(file, fmt, what);
    if (is_restore) {
        if (!dir)
            return usage_error("%s", "restore needs --dir DIR");
        return cmd_restore(file, dir);
    }
    return !strcmp(cmd, "info") ? cmd_info(file) : cmd_verify(file);
}
