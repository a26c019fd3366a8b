/* SPDX-License-Identifier: MIT */
/*
 * http.h -- the HTTP/JSON endpoints and Prometheus metrics of shortstatd.
 *
 * The module is I/O-free and event-loop-agnostic, like net/proto.c: the
 * server reads bytes from a socket and hands them to http_conn_feed(), which
 * parses (libhttp-parser), executes every complete request against the engine
 * and appends the responses, in request order, to an output buffer the
 * connection owns. The server writes what http_conn_output() shows and
 * reports it with http_conn_consume(). No fd, no libev, no globals.
 *
 * Wiring, for the server (see docs/http.md):
 *
 *   struct http_stats hstats = {0};   // one per server, e.g. in struct server
 *   struct http_env env = { .eng = eng, .stats = &hstats, .requirepass = pw,
 *                           .trust_proxy = tp, .fill_metrics = fill, .ud = srv };
 *   // per accepted connection, embedded in the server's conn struct:
 *   http_conn_init(&c->http, &env, "127.0.0.1");   // env must outlive c
 *   // on readable:
 *   rc = http_conn_feed(&c->http, buf, n);
 *   // then write http_conn_output() bytes, http_conn_consume(written);
 *   // rc == HTTP_CLOSE: stop reading, flush the output, then close.
 *   // rc <  0        : close now (out of memory).
 *   // on close: http_conn_free(&c->http);
 *
 * Backpressure is the server's: stop reading (or disconnect, as the line
 * protocol does past its output limit) while http_conn_pending() is large.
 *
 * Ownership: struct http_conn lives in the caller's memory (as libev watchers
 * do); its fields are private. The pointer http_conn_output() returns is
 * valid until the next http_conn_feed/consume/free on that connection.
 */
#ifndef SHORTSTAT_HTTP_H
#define SHORTSTAT_HTTP_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/eng.h"

enum http_rc {
    HTTP_OK = 0,
    HTTP_CLOSE = 1,     /* a response was queued that ends the connection:
                           flush the output, then close; further feeds are ignored */
    HTTP_ENOMEM = -1,   /* allocation failed; close without flushing */
};

#define HTTP_PORT_DEFAULT         7879
#define HTTP_MAX_HEADER_DEFAULT   (16u * 1024)    /* request line + headers */
#define HTTP_MAX_BODY_DEFAULT     (1024u * 1024)
/* libhttp-parser refuses headers past its compiled-in 80 KiB on its own. */
#define HTTP_MAX_HEADER_CAP       (80u * 1024)

/* Snapshot status as INFO's last_snapshot_status reports it. */
enum http_snap_status { HTTP_SNAP_NONE = 0, HTTP_SNAP_OK, HTTP_SNAP_ERR };

/* A line-protocol command's INFO commandstats, for /metrics: sub is NULL
 * for a command, else the subcommand of cmd ("config", "set"). */
struct http_cmd_metric {
    const char *cmd, *sub;
    uint64_t calls, nsec, rejected, failed;
};

/* Line-protocol error replies with one first word (INFO errorstats). */
struct http_err_metric {
    const char *code;
    uint64_t count;
};

/* What /metrics and /healthz need from the server; filled on each scrape by
 * env->fill_metrics. Zero is a valid value for every field. */
struct http_metrics {
    const char *version;               /* NULL: no shortstat_build_info */
    int64_t uptime_ms;
    uint64_t connected_clients;        /* line-protocol clients now */
    uint64_t rejected_connections;     /* refused by --maxclients */
    uint64_t commands_total;           /* line-protocol commands */
    uint64_t errors_total;             /* line-protocol error replies */
    uint64_t auth_failures_total;      /* line-protocol wrong AUTH */
    uint64_t used_memory_bytes;
    uint64_t maxmemory_bytes;          /* --maxmemory; 0 = no limit */
    uint64_t oom_refused_total;        /* writes refused over it, both ports */
    uint64_t rss_bytes;
    bool snapshot_in_progress;
    enum http_snap_status snapshot_status;
    int64_t now_unix_ms;               /* wall clock, for the snapshot age */
    int64_t last_snapshot_unix_ms;     /* of the newest good snapshot on disk; 0: none */
    uint64_t changes_since_snapshot;   /* interactions and boosts not in it yet */
    uint64_t last_snapshot_duration_ms;
    uint64_t last_snapshot_bytes;
    const struct http_cmd_metric *cmds;  /* the commands used; owned by the filler */
    size_t ncmds;
    const struct http_err_metric *errs;  /* likewise, by code */
    size_t nerrs;
};

/* Request latency buckets, in seconds, for shortstat_http_request_duration_seconds. */
#define HTTP_LAT_NBUCKETS 14
/* Status codes this module answers, counted by shortstat_http_responses_total. */
#define HTTP_NCODES 12

/* The module's own counters. The server owns one (zeroed) and passes it in
 * env->stats; the module updates it, /metrics reads it. */
struct http_stats {
    uint64_t connections;              /* open now */
    uint64_t connections_total;
    uint64_t requests_total;
    uint64_t responses[HTTP_NCODES];   /* by status, see docs/http.md */
    uint64_t interactions_total;       /* recorded through HTTP */
    uint64_t auth_failures_total;
    uint64_t bad_requests_total;       /* malformed HTTP: connection closed */
    uint64_t lat_bucket[HTTP_LAT_NBUCKETS + 1]; /* per bucket (not cumulative); last = +Inf */
    uint64_t lat_count;
    uint64_t lat_sum_ns;
};

struct http_env {
    struct eng *eng;                   /* required */
    struct http_stats *stats;          /* required */
    const char *requirepass;           /* NULL or "": open; else Authorization: Bearer <pw>;
                                          read at every request, so it may change */
    bool trust_proxy;                  /* honour X-Forwarded-For */
    const char *cors_origin;           /* NULL or "": no CORS headers; e.g. "*" */
    size_t max_header_bytes;           /* 0: HTTP_MAX_HEADER_DEFAULT; capped at HTTP_MAX_HEADER_CAP */
    size_t max_body_bytes;             /* 0: HTTP_MAX_BODY_DEFAULT */
    int64_t (*clock_ns)(void *ud);     /* monotonic ns; NULL: CLOCK_MONOTONIC */
    void (*fill_metrics)(void *ud, struct http_metrics *m); /* NULL: all zero */
    /* Asked before each write (interaction, save, share); true refuses it
     * with 507 and records nothing (the server's --maxmemory). NULL: never. */
    bool (*over_memory)(void *ud, uint64_t n);
    /* NULL: realloc(). The module frees with free(); tests use it to fail
     * the Nth allocation. */
    void *(*realloc_fn)(void *ud, void *p, size_t n);
    void *ud;                          /* for clock_ns, fill_metrics, over_memory, realloc_fn */
};

/* A growable byte buffer; bytes [off, len) are live. Private. */
struct http_buf {
    uint8_t *p;
    size_t off, len, cap;
};

struct http_conn {                     /* all fields private */
    http_parser parser;
    const struct http_env *env;
    char peer[ENG_IPSTR_MAX];
    uint8_t phase;                     /* enum http_phase in http.c */
    uint8_t hdr_id;                    /* header whose value is arriving */
    uint8_t fail;                      /* enum http_fail in http.c */
    bool closed;                       /* HTTP_CLOSE was returned */
    bool in_value;
    bool oom;
    bool keep_alive;                   /* of the request just completed */
    bool upgrade;
    uint8_t method;                    /* enum http_method */
    uint8_t http_major, http_minor;
    size_t hdr_bytes;                  /* request line + headers so far */
    char hname[24];                    /* current header name, lowercased */
    size_t hname_len;
    struct http_buf hdr;               /* URL and the header values kept */
    size_t url_off, url_len;
    size_t hv_off[5], hv_len[5];       /* kept header values, by hdr_id */
    uint8_t hv_seen;                   /* bit hdr_id: sent, even with an empty value */
    struct http_buf body;
    struct http_buf out;               /* responses, in order */
    struct http_buf tmp;               /* response body being built */
    struct eng_ix *ixs;                /* batch scratch, reused */
    size_t ixs_cap;
    struct eng_history_rec *recs;      /* history scratch, reused */
    size_t recs_cap;
    int64_t t_begin;                   /* clock_ns at the request's first byte */
};

/* Returns 0, or HTTP_ENOMEM (nothing to free then). peer_ip: the socket's
 * address as text, NULL when it has none; copied. */
int http_conn_init(struct http_conn *c, const struct http_env *env, const char *peer_ip);

/* Parses buf and executes every complete request in it (keep-alive and
 * pipelining: any number of requests, split anywhere). Returns HTTP_OK,
 * HTTP_CLOSE or HTTP_ENOMEM. */
int http_conn_feed(struct http_conn *c, const uint8_t *buf, size_t len);

/* Bytes the connection holds: its buffers and scratch (what a server's
 * memory limit counts for it). */
size_t http_conn_memory(const struct http_conn *c);

/* The bytes waiting to be written. */
void http_conn_output(const struct http_conn *c, const uint8_t **p, size_t *len);
size_t http_conn_pending(const struct http_conn *c);
/* n bytes of the output were written; n <= pending. */
void http_conn_consume(struct http_conn *c, size_t n);

/* Releases the connection's buffers; a request cut short is dropped. */
void http_conn_free(struct http_conn *c);

/* The bucket bounds, in nanoseconds, for tests and docs. */
extern const uint64_t http_lat_bounds_ns[HTTP_LAT_NBUCKETS];
/* The status codes counted in http_stats.responses, same order. */
extern const uint16_t http_codes[HTTP_NCODES];
/* Counts a response with this status in st->responses (the server's 503
 * for a connection over --maxclients is made outside http.c). */
void http_stats_count(struct http_stats *st, int status);

#endif
