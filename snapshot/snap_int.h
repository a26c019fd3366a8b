/* SPDX-License-Identifier: MIT */
/*
 * snap_int.h -- snapshot internals shared by snap.c and the shortstat-snap
 * tool (snap_tool.c). Not part of the contract (snap.h is); nothing outside
 * snapshot/ includes it.
 *
 * It exposes the file's building blocks so the tool can walk a file chunk by
 * chunk with bounded memory: the fixed header and footer, the chunk header,
 * frame decompression, and the per-item decoders. Every decoder reads through
 * a cursor with an end pointer and fails with a reason instead of reading
 * past it. Decoded items point into a struct snap_scratch owned by the caller
 * and stay valid until the next decode with that scratch.
 */
#ifndef SHORTSTAT_SNAP_INT_H
#define SHORTSTAT_SNAP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/eng.h"
#include "snapshot/snap.h"

#define SNAP_VERSION     1u
#define SNAP_HDR_SIZE    120u
#define SNAP_FTR_SIZE    32u
#define SNAP_CHUNK_HDR   16u
#define SNAP_CHUNK_MAX   (1u << 30)  /* largest raw chunk a reader accepts */

/* Section tags, in the order they appear in a file. */
enum snap_sec {
    SNAP_SEC_PLAT = 0,   /* platforms */
    SNAP_SEC_UAGT,       /* user agents */
    SNAP_SEC_SHRT,       /* shorts with their viewer and saver sets */
    SNAP_SEC_SESS,       /* session rings */
    SNAP_SEC_USER,       /* user rings */
    SNAP_SEC_TOTL,       /* engine-wide totals (exactly one item) */
    SNAP_SEC_COUNT
};
const char *snap_sec_name(int sec);          /* "SESS" */

struct snap_chunk {
    int sec;              /* enum snap_sec */
    uint32_t nitems, raw_len, frame_len;
    uint64_t offset;      /* file offset of the chunk header */
};

struct snap_footer {
    uint64_t raw_bytes, file_len, checksum;
};

/* Header and footer parsing: no checksum over the body is computed here. */
int snap_parse_header(const uint8_t *buf, size_t len, struct snap_header *h,
                      struct snap_err *err);
int snap_parse_footer(const uint8_t *buf, size_t len, uint64_t file_len,
                      struct snap_footer *f, struct snap_err *err);
/* p holds SNAP_CHUNK_HDR bytes read at file offset `offset`. */
int snap_parse_chunk(const uint8_t *p, uint64_t offset, struct snap_chunk *c,
                     struct snap_err *err);
/* XXH64 the file uses (seed 0) over a buffer, and streamed. */
uint64_t snap_xxh64(const void *p, size_t len);

/* Growable scratch owned by the caller; decoded items point into it. */
struct snap_scratch {
    uint8_t *raw; size_t raw_cap;              /* one decompressed chunk */
    uint32_t *plat_ids; uint64_t *plat_shares; size_t plat_cap;
    uint64_t *xv; size_t xv_cap;               /* explicit viewers */
    uint64_t *xs; size_t xs_cap;               /* explicit savers */
    struct snap_ctx *ctx; size_t ctx_cap;
    char *sess; size_t sess_cap;               /* session strings of ctx */
    struct eng_rec_view *recs; size_t recs_cap;
    void *dctx;                                /* LZ4F_dctx */
};
void snap_scratch_free(struct snap_scratch *s);

/* Decompress one chunk's frame (frame_len bytes at `frame`) into s->raw.
 * Checks the frame declares block and content checksums, that both verify,
 * and that exactly raw_len bytes come out. */
int snap_chunk_inflate(struct snap_scratch *s, const struct snap_chunk *c,
                       const uint8_t *frame, struct snap_err *err);

/* A cursor over one decompressed chunk. */
struct snap_cur {
    const uint8_t *p, *start, *end;
    const struct snap_chunk *chunk;
    uint32_t item;
    int64_t created_ms;
    struct snap_err *err;
};

struct snap_short {
    struct eng_short_view v;     /* plat_ids/plat_shares in scratch; sets unused */
    uint64_t nviewers, nsavers;  /* set sizes */
    bool viewers_implied, savers_implied;
    const uint64_t *xviewers; size_t nxviewers;  /* explicit part, sorted */
    const uint64_t *xsavers; size_t nxsavers;
};

/* A context as a ring lists it; index 0 of a ring's table is "none". */
struct snap_ctx {
    uint32_t id;                 /* file id (1..), 0 = none */
    bool is_new;                 /* first appearance in the file */
    uint64_t user;
    const char *session; size_t session_len;
    uint8_t ip_family;           /* 0, 4, 6 */
    uint8_t ip[16];
    uint32_t ua_id;
};

struct snap_ring {
    struct eng_ring_view v;      /* session points into scratch */
    char session[ENG_SESSION_MAX];
    const struct snap_ctx *ctx;  /* nctx + 1 entries, [0] = none */
    size_t nctx;
    /* v.nrecs records, oldest first; ctx_id is an index into ctx[] */
    struct eng_rec_view *recs;
};

/* last: the id before (0 at the first); ids must run 1, 2, 3, ... */
int snap_dec_platform(struct snap_cur *c, uint32_t *last, struct eng_platform_view *out);
int snap_dec_ua(struct snap_cur *c, uint32_t *last, struct eng_ua_view *out);
/* prev_id: the previous short's id in this chunk (0 at chunk start). */
int snap_dec_short(struct snap_cur *c, struct snap_scratch *s, uint64_t prev_id,
                   struct snap_short *out);
/* next_ctx_id: the id a NEW context gets; advanced by the decoder. */
int snap_dec_ring(struct snap_cur *c, struct snap_scratch *s, bool is_user,
                  uint32_t *next_ctx_id, struct snap_ring *out);
int snap_dec_totals(struct snap_cur *c, struct eng_totals *out);

/* The viewer fingerprint the engine keeps in viewer and saver sets: XXH3-64
 * of "u" + user (8 bytes little-endian), else "s" + session; 0 maps to 1. */
uint64_t snap_fp_user(uint64_t user);
uint64_t snap_fp_session(const char *s, size_t len);

#endif
