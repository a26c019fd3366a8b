/* SPDX-License-Identifier: MIT */
/*
 * snap.h -- snapshot contract: the whole engine state to bytes and back.
 *
 * snapshot/ reaches the engine only through eng.h's persistence view
 * (eng_walk_*, eng_restore_*). The byte format is in docs/snapshot-format.md.
 *
 * Errors: 0 (SNAP_OK) or a negative enum snap_rc, with struct snap_err
 * naming the byte offset and the reason. Library code never exits.
 */
#ifndef SHORTSTAT_SNAP_H
#define SHORTSTAT_SNAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/eng.h"

enum snap_rc {
    SNAP_OK = 0,
    SNAP_EIO = -1,       /* open/read/write/fsync/rename failed (errno in msg) */
    SNAP_ENOENT = -2,    /* no snapshot file: not an error at start-up */
    SNAP_EFOREIGN = -3,  /* not a shortstat snapshot (bad magic) */
    SNAP_EVERSION = -4,  /* written by a newer format version */
    SNAP_ECORRUPT = -5,  /* checksum, truncation or structure error */
    SNAP_ENOMEM = -6,
    SNAP_EPARAM = -7,    /* engine parameters incompatible (e.g. history size) */
    SNAP_EBUSY = -8,     /* the data directory is in use by another process */
};

struct snap_err {
    uint64_t offset;     /* byte offset in the file where the problem is */
    char msg[256];
};

#define SNAP_FILE "shortstat.snap"
#define SNAP_LOCK_FILE "shortstat.lock"

/* The data directory, made if it is missing (one level: a parent that is
 * missing too is an error), as shortstatd and a restore both make their
 * --dir; *made says whether it was. SNAP_EIO with "--dir DIR: why". */
int snap_prepare_dir(const char *dir, bool *made, struct snap_err *err);
/* Takes the data directory's lock: an exclusive flock on
 * <dir>/shortstat.lock, which is created if need be and given the holder's
 * pid. One server, or one restore, per directory at a time. The lock is
 * held while *fd stays open, here and in every child forked meanwhile (so
 * a snapshot child still writing keeps it). SNAP_EBUSY names the holder. */
int snap_lock_dir(const char *dir, int *fd, struct snap_err *err);
/* Removes the temp files in dir whose writer is gone (a save's, a
 * restore's; their names carry the writer's pid), as every save does
 * first: for a caller that has just killed a writer. */
void snap_remove_stale(const char *dir);

/* Byte sink: 0 on success, non-zero aborts the write with SNAP_EIO. */
typedef int (*snap_write_fn)(void *ud, const void *buf, size_t len);

struct snap_stats {
    uint64_t bytes;            /* file size */
    uint64_t raw_bytes;        /* state before compression */
    uint64_t duration_ms;
};

/* Serialise the engine through fn. Reads the engine only. */
int snap_write(const struct eng *e, int64_t created_ms, snap_write_fn fn, void *ud,
               struct snap_stats *st, struct snap_err *err);

/* Crash-safe save to <dir>/shortstat.snap: temp file in dir, fsync, rename,
 * fsync dir. On failure the previous file is untouched and the temp removed.
 * st->duration_ms covers all of it, the fsyncs included. Meant to run in a
 * fork()ed child; safe to call in-process too. */
int snap_save(const struct eng *e, const char *dir, int64_t created_ms,
              struct snap_stats *st, struct snap_err *err);

/* Load an entire image (buf, len) into e, which must be freshly created.
 * The engine's own history size wins: longer rings keep their newest
 * records. Checks every checksum before touching e; on any error e must be
 * destroyed by the caller. */
int snap_read(struct eng *e, const uint8_t *buf, size_t len, struct snap_err *err);

/* Header fields, for creating the engine to restore into and for `info`. */
struct snap_header {
    uint32_t version;
    uint32_t history;
    int64_t session_ttl_ms;
    int64_t created_ms;
    struct eng_walk_counts counts;
    uint64_t raw_bytes;
};
int snap_peek(const uint8_t *buf, size_t len, struct snap_header *h, struct snap_err *err);

/* Load <path> (SNAP_ENOENT when absent) into a new engine made from cfg;
 * *out is NULL on any error, and the file is never modified. */
int snap_load(const char *path, const struct eng_config *cfg, struct eng **out,
              struct snap_header *h, struct snap_err *err);

/* Every checksum and structure, without an engine kept afterwards. */
int snap_verify(const char *path, struct snap_header *h, struct snap_err *err);

const char *snap_strerror(int rc);
/* err's message without a leading "<path>: ": for a caller that names the
 * file itself (the messages of load, verify and save begin with it). */
const char *snap_err_reason(const struct snap_err *err, const char *path);

#endif
