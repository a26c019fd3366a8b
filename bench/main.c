/* SPDX-License-Identifier: MIT */
/*
 * main.c -- shortstat-bench: subcommands, the standard suite, the table.
 *
 * Every measurement is a phase: a function that takes the options and adds
 * rows to the report (section, figure, value, target, met) and numbers to
 * its JSON object. Subcommands run one or a few phases; `suite` runs them
 * all and prints one table. A phase that needs a server starts its own
 * shortstatd (or redis-server) on a free loopback port with a temp dir,
 * pinned to one core while the bench runs on another, and stops it after;
 * with --port it talks to a running server instead and skips what would
 * need a restart.
 *
 * Workloads are generated and encoded before any clock starts. A phase
 * refuses to report a throughput when the server rejected commands: a
 * benchmark of error replies measures nothing.
 *
 * Exit codes: 0 done (targets met or not: the table says), 1 a measurement
 * failed, 2 bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "snapshot/snap.h"

/* ---- options ----------------------------------------------------------------- */

enum group {
    G_WL = 1 << 0,      /* workload */
    G_CLI = 1 << 1,     /* client: conns, pipeline, framing, rate */
    G_SRV = 1 << 2,     /* server: host, port, server, history, pinning */
    G_OUT = 1 << 3,     /* json, quiet */
    G_Q = 1 << 4,       /* queries */
    G_SNAP = 1 << 5,
    G_GEN = 1 << 6,
    G_SUITE = 1 << 7,
    G_REDIS = 1 << 8,   /* --redis-server */
    G_VS = 1 << 9,      /* --vs-redis */
};

enum opt_id {
    O_SEED = 256, O_N, O_SHORTS, O_SESSIONS, O_USERS, O_SIGNED, O_MIX, O_ZIPF, O_WATCH, O_SID,
    O_CONNS, O_PIPE, O_FRAMING, O_RATE, O_HOST, O_PORT, O_SERVER, O_REDIS, O_HISTORY, O_NOPIN,
    O_JSON, O_QUIET, O_QPS, O_QSECS, O_TOPK, O_SNAPAT, O_OUT, O_FOR, O_SHA, O_PRINTLUA,
    O_QUICK, O_NOREDIS, O_VSREDIS, O_HELP, O_COVER, O_SINK, O_PRELOAD,
};

struct optdef {
    const char *name;
    int has_arg;
    int id;
    unsigned groups;
    const char *arg, *help;
};

static const struct optdef optdefs[] = {
    {"seed", 1, O_SEED, G_WL, "N", "workload seed (default 1)"},
    {"n", 1, O_N, G_WL, "N", "interactions (default 2000000; engine: 1000000)"},
    {"shorts", 1, O_SHORTS, G_WL, "N", "distinct shorts (default 100000)"},
    {"sessions", 1, O_SESSIONS, G_WL, "N", "distinct sessions (default 1000000)"},
    {"users", 1, O_USERS, G_WL, "N", "distinct users (default 200000)"},
    {"signed-in", 1, O_SIGNED, G_WL, "SHARE", "share of sessions signed in, 0..1 (default 0.30)"},
    {"mix", 1, O_MIX, G_WL, "T=W,...",
     "type weights; unlisted types get 0 (default impression=50,view=30,skip=8,save=4,"
     "share=3,contact=2,whatsapp=2,book_viewing=1)"},
    {"zipf", 1, O_ZIPF, G_WL, "S", "short popularity: 0 uniform (default), else Zipf exponent"},
    {"watch-max", 1, O_WATCH, G_WL, "MS", "watch_ms uniform 0..MS on views (default 60000)"},
    {"sid", 1, O_SID, G_WL, "guest|short", "session ids: g-<32 hex> (default) or s<n>"},
    {"cover", 0, O_COVER, G_WL, NULL, "begin with one impression of every short, so all exist"},
    {"conns", 1, O_CONNS, G_CLI, "C", "pipelined connections (default 4)"},
    {"pipeline", 1, O_PIPE, G_CLI, "P", "commands in flight per connection (default 256)"},
    {"framing", 1, O_FRAMING, G_CLI, "resp|inline", "TRACK framing (default resp)"},
    {"rate", 1, O_RATE, G_CLI, "R", "interactions/s over all connections (default: flat out)"},
    {"host", 1, O_HOST, G_SRV, "ADDR", "server address with --port (default 127.0.0.1)"},
    {"port", 1, O_PORT, G_SRV, "PORT", "use a running server instead of starting one"},
    {"server", 1, O_SERVER, G_SRV, "PATH", "shortstatd to start (default: next to this binary)"},
    {"redis-server", 1, O_REDIS, G_REDIS, "PATH", "redis-server to start (default: from PATH)"},
    {"history", 1, O_HISTORY, G_SRV | G_WL, "N", "ring size per session and user (default 64)"},
    {"no-pin", 0, O_NOPIN, G_SRV, NULL, "do not pin server and bench to separate cores"},
    {"json", 1, O_JSON, G_OUT, "FILE", "also write the figures as JSON"},
    {"quiet", 0, O_QUIET, G_OUT | G_GEN, NULL, "no progress lines"},
    {"qps", 1, O_QPS, G_Q, "R", "under ingestion: queries/s per kind, Poisson (default 200; 0 = back to back)"},
    {"query-secs", 1, O_QSECS, G_Q, "S",
     "instead: each kind alone, back to back, S/3 seconds each after the preload"},
    {"topk", 1, O_TOPK, G_Q, "K", "k of the TOP queries (default 100)"},
    {"snapshot-at", 1, O_SNAPAT, G_SNAP, "SHARE", "SNAPSHOT after this share of the stream (default 0.05)"},
    {"out", 1, O_OUT, G_GEN, "FILE", "write commands here (default stdout)"},
    {"for", 1, O_FOR, G_GEN, "shortstat|redis", "TRACK commands, or EVALSHA for redis-server"},
    {"sha", 1, O_SHA, G_GEN, "SHA1", "with --for redis: the script's sha from SCRIPT LOAD"},
    {"print-lua", 0, O_PRINTLUA, G_GEN, NULL, "print the Lua script Redis is given and exit"},
    {"quick", 0, O_QUICK, G_SUITE, NULL, "a smaller suite (200k interactions) for a smoke test"},
    {"no-redis", 0, O_NOREDIS, G_SUITE, NULL, "skip the Redis comparison"},
    {"vs-redis", 0, O_VSREDIS, G_VS, NULL, "also run the same workload on redis-server"},
    {"sink", 0, O_SINK, G_VS, NULL, "against a null server that only answers +OK: the client's ceiling"},
    {"preload", 0, O_PRELOAD, G_VS, NULL,
     "send the workload once unmeasured first, then measure its replay over that state"},
    {"help", 0, O_HELP, ~0u, NULL, "this help"},
};
#define NOPTS (sizeof optdefs / sizeof optdefs[0])

struct opts {
    struct bench_wl_cfg wl;
    bool n_set;
    uint32_t conns, pipeline;
    enum bench_framing framing;
    double rate;
    const char *host;
    uint16_t port;
    bool external;
    char server[1024];
    char redis[1024];
    uint32_t history;
    bool pin, progress;
    const char *json;
    double qps, query_secs;
    uint32_t topk;
    double snapshot_at;
    const char *out;
    bool for_redis;
    const char *sha;
    bool print_lua, quick, no_redis, vs_redis, sink, preload;
};

/* ---- the report ----------------------------------------------------------------- */

struct row {
    char section[20], name[72], value[48], target[32];
    int met;  /* -1 no target, 0 missed, 1 met */
};

struct report {
    struct row *rows;
    size_t n, cap;
    json_t *root;
    bool quiet;
};

__attribute__((format(printf, 4, 5))) static void row(struct report *R, const char *section,
                                                       const char *name, const char *fmt, ...)
{
    if (R->n == R->cap) {
        size_t nc = R->cap ? R->cap * 2 : 64;
        struct row *nr = realloc(R->rows, nc * sizeof *nr);
        if (!nr)
            return;
        R->rows = nr;
        R->cap = nc;
    }
    struct row *r = &R->rows[R->n++];
    memset(r, 0, sizeof *r);
    r->met = -1;
    snprintf(r->section, sizeof r->section, "%s", section);
    snprintf(r->name, sizeof r->name, "%s", name);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->value, sizeof r->value, fmt, ap);
    va_end(ap);
}

/* Attach a target to the last row. */
static void target(struct report *R, const char *what, bool met)
{
    if (!R->n)
        return;
    struct row *r = &R->rows[R->n - 1];
    snprintf(r->target, sizeof r->target, "%s", what);
    r->met = met ? 1 : 0;
    json_t *t = json_object_get(R->root, "targets");
    if (!t) {
        t = json_array();
        json_object_set_new(R->root, "targets", t);
    }
    json_t *o = json_object();
    json_object_set_new(o, "section", json_string(r->section));
    json_object_set_new(o, "figure", json_string(r->name));
    json_object_set_new(o, "value", json_string(r->value));
    json_object_set_new(o, "target", json_string(what));
    json_object_set_new(o, "met", json_boolean(met));
    json_array_append_new(t, o);
}

static json_t *section(struct report *R, const char *name)
{
    json_t *o = json_object_get(R->root, name);
    if (!o) {
        o = json_object();
        json_object_set_new(R->root, name, o);
    }
    return o;
}

static void jnum(json_t *o, const char *k, double v)
{
    if (isfinite(v) && v == floor(v) && fabs(v) < 9e15)
        json_object_set_new(o, k, json_integer((json_int_t)v));
    else
        json_object_set_new(o, k, isfinite(v) ? json_real(v) : json_null());
}

static void table_line(const char *sec, const char *name, const char *value, const char *tgt,
                       const char *met)
{
    char line[256];
    int n = snprintf(line, sizeof line, "%-12s %-46s %16s  %-16s %s", sec, name, value, tgt, met);
    if (n > (int)sizeof line - 1)
        n = (int)sizeof line - 1;
    while (n > 0 && line[n - 1] == ' ')
        line[--n] = '\0';
    puts(line);
}

static void print_table(const struct report *R)
{
    putchar('\n');
    table_line("section", "figure", "value", "target", "");
    table_line("-------", "------", "-----", "------", "");
    const char *last = "";
    for (size_t i = 0; i < R->n; i++) {
        const struct row *r = &R->rows[i];
        table_line(strcmp(r->section, last) ? r->section : "", r->name, r->value, r->target,
                   r->met < 0 ? "" : r->met ? "met" : "MISSED");
        last = r->section;
    }
    fflush(stdout);
}

static const char *mrate(double r, char *buf, size_t n)
{
    if (r >= 1e6)
        snprintf(buf, n, "%.2f M/s", r / 1e6);
    else
        snprintf(buf, n, "%.1f k/s", r / 1e3);
    return buf;
}

#define RATE(x) mrate((x), (char[32]){0}, 32)

static double ns_ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

/* ---- cleanup on the way out ---------------------------------------------------------
 * Servers die with the bench (PR_SET_PDEATHSIG); temp dirs are removed by the
 * phases, and by this handler when the bench is interrupted. */

static void on_signal(int sig)
{
    bench_cleanup_all();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* ---- shortstatd under test ------------------------------------------------------------ */

struct ctx {
    struct opts o;
    struct report R;
    struct bench_cpus cpus;
    char msg[BENCH_ERR_MAX * 4];
};

struct srv {
    struct bench_proc p;
    const char *host;
    uint16_t port;
    char dir[256];
    bool spawned, own_dir;
    double ready_s;
};

static void srv_stop(struct srv *s, int sig)
{
    if (s->spawned && s->p.pid > 0)
        bench_stop(&s->p, sig, 60);
}

static void srv_done(struct srv *s)
{
    srv_stop(s, SIGKILL);
    if (s->own_dir)
        bench_rmtree(s->dir);
    s->own_dir = false;
}

/* Start shortstatd in dir (a new temp dir when NULL), or use --port. */
static int srv_start(struct ctx *X, const char *dir, struct srv *s)
{
    const struct opts *o = &X->o;
    if (!dir)
        memset(s, 0, sizeof *s);
    s->host = o->host;
    if (o->external) {
        s->port = o->port;
        s->spawned = false;
        return BENCH_OK;
    }
    int rc;
    if (!dir) {
        if ((rc = bench_tmpdir("srv", s->dir, X->msg, sizeof X->msg)))
            return rc;
        s->own_dir = true;
        if ((rc = bench_free_port(&s->port, X->msg, sizeof X->msg)))
            return rc;
    }
    char ps[8], hs[16], logp[300];
    snprintf(ps, sizeof ps, "%u", (unsigned)s->port);
    snprintf(hs, sizeof hs, "%u", (unsigned)o->history);
    snprintf(logp, sizeof logp, "%s/shortstatd.log", s->dir);
    const char *argv[] = {o->server, "--bind", "127.0.0.1", "--port", ps, "--dir", s->dir,
                          "--history", hs, "--snapshot-interval", "0", "--http-port", "0",
                          "--loglevel", "warn", NULL};
    if ((rc = bench_spawn(argv, X->cpus.server, logp, &s->p, X->msg, sizeof X->msg)))
        return rc;
    s->p.port = s->port;
    s->spawned = true;
    rc = bench_wait_ready(&s->p, s->host, 300, &s->ready_s, X->msg, sizeof X->msg);
    if (rc)
        srv_stop(s, SIGKILL);
    return rc;
}

static int srv_cmd(struct ctx *X, const struct srv *s, int argc, const char *const argv[],
                   char **reply)
{
    struct bench_ctl c;
    *reply = NULL;
    if (bench_ctl_open(&c, s->host, s->port, 2000)) {
        snprintf(X->msg, sizeof X->msg, "cannot connect to %s:%u", s->host, (unsigned)s->port);
        return BENCH_EIO;
    }
    int rc = bench_ctl_cmd(&c, argc, argv, 120000, reply);
    bench_ctl_close(&c);
    if (rc) {
        snprintf(X->msg, sizeof X->msg, "%s: %s", argv[0], *reply ? *reply : "no reply");
        free(*reply);
        *reply = NULL;
    }
    return rc;
}

static int srv_info(struct ctx *X, const struct srv *s, char **info)
{
    const char *argv[] = {"INFO"};
    return srv_cmd(X, s, 1, argv, info);
}

static uint64_t info_u64(const char *info, const char *key)
{
    uint64_t v = 0;
    if (info)
        bench_info_u64(info, key, &v);
    return v;
}

/* SNAPSHOT with nothing else running; polls INFO persistence every 2 ms. */
struct snap_idle {
    double wall_ms;
    uint64_t duration_ms, bytes, raw_bytes, fork_usec;
};

static int srv_snapshot(struct ctx *X, const struct srv *s, struct snap_idle *r)
{
    memset(r, 0, sizeof *r);
    char *reply = NULL;
    const char *snap[] = {"SNAPSHOT"};
    double t0 = bench_now();
    int rc = srv_cmd(X, s, 1, snap, &reply);
    free(reply);
    if (rc)
        return rc;
    const char *pers[] = {"INFO", "persistence"};
    for (;;) {
        if ((rc = srv_cmd(X, s, 2, pers, &reply)))
            return rc;
        uint64_t busy = 1;
        if (bench_info_u64(reply, "snapshot_in_progress", &busy)) {
            snprintf(X->msg, sizeof X->msg, "INFO persistence has no snapshot_in_progress");
            free(reply);
            return BENCH_ESERVER;
        }
        if (busy == 0)
            break;
        free(reply);
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    r->wall_ms = (bench_now() - t0) * 1e3;
    char st[32] = "";
    bench_info_str(reply, "last_snapshot_status", st, sizeof st);
    r->duration_ms = info_u64(reply, "last_snapshot_duration_ms");
    r->bytes = info_u64(reply, "last_snapshot_bytes");
    r->raw_bytes = info_u64(reply, "last_snapshot_raw_bytes");
    r->fork_usec = info_u64(reply, "last_fork_usec");
    free(reply);
    if (strcmp(st, "ok") != 0) {
        snprintf(X->msg, sizeof X->msg, "snapshot failed: last_snapshot_status:%s", st);
        return BENCH_ESERVER;
    }
    return BENCH_OK;
}

/* ---- workload helpers --------------------------------------------------------------------- */

static int make_wl(struct ctx *X, const struct bench_wl_cfg *c, struct bench_wl *w)
{
    double t0 = bench_now();
    int rc = bench_wl_generate(c, w, X->msg, sizeof X->msg);
    if (!rc && X->o.progress)
        fprintf(stderr, "[gen] %llu interactions, %u shorts, %u sessions, %u users in %.2f s\n",
                (unsigned long long)c->n, c->shorts, c->sessions, c->users, bench_now() - t0);
    return rc;
}

static int make_stream(struct ctx *X, const struct bench_wl *w, enum bench_framing f,
                       struct bench_stream *st)
{
    return bench_stream_build(w, BENCH_S_TRACK, f, NULL, X->o.history, st, X->msg, sizeof X->msg);
}

static const char *framing_name(enum bench_framing fr)
{
    return fr == BENCH_RESP ? "resp" : "inline";
}

static struct bench_run_cfg run_cfg(const struct ctx *X, const struct srv *s,
                                    const struct bench_stream *st, const char *label)
{
    return (struct bench_run_cfg){
        .host = s->host, .port = s->port, .label = label, .progress = X->o.progress,
        .stream = st, .conns = X->o.conns, .pipeline = X->o.pipeline, .timeout_s = 900,
    };
}

static void jarr(json_t *o, const char *key, const double *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_real(v[i]));
    json_object_set_new(o, key, a);
}

static void json_hist(json_t *o, const char *prefix, const struct bench_hist *h)
{
    char k[64];
    static const struct {
        const char *name;
        double q;
    } qs[] = {{"p50", 0.5}, {"p90", 0.9}, {"p99", 0.99}, {"p999", 0.999}, {"max", 1.0}};
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        snprintf(k, sizeof k, "%s_%s_ms", prefix, qs[i].name);
        jnum(o, k, ns_ms(bench_hist_quantile(h, qs[i].q)));
    }
    snprintf(k, sizeof k, "%s_mean_ms", prefix);
    jnum(o, k, bench_hist_mean(h) / 1e6);
}

static void lat_rows(struct report *R, const char *sec, const char *what,
                     const struct bench_hist *h)
{
    char name[72];
    snprintf(name, sizeof name, "%s latency p50 / p99", what);
    row(R, sec, name, "%.3f / %.3f ms", ns_ms(bench_hist_quantile(h, 0.5)),
        ns_ms(bench_hist_quantile(h, 0.99)));
    snprintf(name, sizeof name, "%s latency p99.9 / max", what);
    row(R, sec, name, "%.3f / %.3f ms", ns_ms(bench_hist_quantile(h, 0.999)),
        ns_ms(bench_hist_quantile(h, 1.0)));
}

/* A run on a fresh server must see every command accepted. */
static int check_accepted(struct ctx *X, const struct bench_run_res *r, const char *what)
{
    if (r->errors == 0)
        return BENCH_OK;
    snprintf(X->msg, sizeof X->msg, "%s: the server refused %llu of %llu commands, first: %s", what,
             (unsigned long long)r->errors, (unsigned long long)r->replies, r->first_error);
    return BENCH_ESERVER;
}

/* ---- phases ------------------------------------------------------------------------------- */

/* Engine alone: eng_record in-process. */
/* The memory system's ceilings, to read the engine's figures against. */
static int ph_machine(struct ctx *X)
{
    struct bench_machine_res m;
    if (X->o.progress)
        fprintf(stderr, "[machine] page faults, fork, cache misses over 256 MiB\n");
    int rc = bench_machine(256, X->o.wl.seed, &m, X->msg, sizeof X->msg);
    if (rc)
        return rc;
    struct report *R = &X->R;
    row(R, "machine", "fresh page, first touch: 4 KiB / THP (per 4 KiB)", "%.2f / %.2f us",
        m.fault_4k_us, m.fault_thp_us);
    row(R, "machine", "fork() holding 256 MiB: 4 KiB / THP pages", "%.1f / %.1f ms", m.fork_4k_ms,
        m.fork_thp_ms);
    row(R, "machine", "random miss, one at a time", "%.0f ns", m.miss_ns);
    char name[72];
    snprintf(name, sizeof name, "random misses, %u overlapped", m.best_k);
    row(R, "machine", name, "%.1f M lines/s", m.lines_per_s / 1e6);
    row(R, "machine", "ceiling at 6 random lines / interaction", "%s", RATE(m.lines_per_s / 6));
    json_t *j = section(R, "machine");
    jnum(j, "mb", (double)m.mb);
    jnum(j, "fault_4k_us", m.fault_4k_us);
    jnum(j, "fault_thp_us", m.fault_thp_us);
    jnum(j, "fork_4k_ms", m.fork_4k_ms);
    jnum(j, "fork_thp_ms", m.fork_thp_ms);
    jnum(j, "miss_ns", m.miss_ns);
    jnum(j, "lines_per_s", m.lines_per_s);
    jnum(j, "best_k", m.best_k);
    return BENCH_OK;
}

static int ph_engine(struct ctx *X, const struct bench_wl_cfg *c)
{
    struct bench_wl w;
    int rc = make_wl(X, c, &w);
    if (rc)
        return rc;
    struct bench_eng_res r;
    if (X->o.progress)
        fprintf(stderr, "[engine] %llu interactions in-process\n", (unsigned long long)c->n);
    rc = bench_engine_ingest(&w, X->o.history, &r, X->msg, sizeof X->msg);
    bench_wl_free(&w);
    if (rc)
        return rc;
    struct report *R = &X->R;
    json_t *j = section(R, "engine");
    double best = r.rate_pf > r.rate ? r.rate_pf : r.rate;
    if (r.rate_batch > best)
        best = r.rate_batch;
    row(R, "engine", "eng_record, one by one", "%s", RATE(r.rate));
    row(R, "engine", "eng_prefetch 12 ahead + eng_record", "%s", RATE(r.rate_pf));
    row(R, "engine", "eng_record_batch, 256 a call", "%s", RATE(r.rate_batch));
    target(R, ">= 5 M/s", best >= 5e6);
    row(R, "engine", "  the same again over that state (no new entities)", "%s",
        RATE(r.rate_replay));
    double per_rec = r.info.records ? (double)r.info.mem_records / (double)r.info.records : 0;
    double per_pair =
        r.info.viewer_pairs ? (double)r.info.mem_viewers / (double)r.info.viewer_pairs : 0;
    row(R, "engine", "engine bytes / interaction (mem_total)", "%.1f B",
        (double)r.info.mem_total / (double)r.n);
    row(R, "engine", "process RSS growth / interaction", "%.1f B", (double)r.rss_delta / (double)r.n);
    row(R, "engine", "ring bytes / retained record (mem_records)", "%.1f B", per_rec);
    row(R, "engine", "viewer+saver set bytes / viewer pair (mem_viewers)", "%.1f B", per_pair);
    jnum(j, "interactions", (double)r.n);
    jnum(j, "rate", r.rate);
    jnum(j, "rate_prefetch", r.rate_pf);
    jnum(j, "secs", r.secs);
    jnum(j, "secs_prefetch", r.secs_pf);
    jnum(j, "rate_batch", r.rate_batch);
    jnum(j, "secs_batch", r.secs_batch);
    jnum(j, "rate_replay", r.rate_replay);
    jnum(j, "secs_replay", r.secs_replay);
    jnum(j, "shorts", (double)r.info.shorts);
    jnum(j, "sessions", (double)r.info.sessions);
    jnum(j, "users", (double)r.info.users);
    jnum(j, "records", (double)r.info.records);
    jnum(j, "viewer_pairs", (double)r.info.viewer_pairs);
    jnum(j, "mem_total", (double)r.info.mem_total);
    jnum(j, "mem_records", (double)r.info.mem_records);
    jnum(j, "mem_viewers", (double)r.info.mem_viewers);
    jnum(j, "rss_delta", (double)r.rss_delta);
    jnum(j, "bytes_per_record", per_rec);
    jnum(j, "bytes_per_pair", per_pair);
    return BENCH_OK;
}

/* TOP k over a state of (by default) a million shorts, in-process. */
static int ph_top_engine(struct ctx *X, const struct bench_wl_cfg *c)
{
    struct bench_wl w;
    int rc = make_wl(X, c, &w);
    if (rc)
        return rc;
    struct bench_top_res r;
    rc = bench_engine_top(&w, X->o.topk, &r, X->msg, sizeof X->msg);
    bench_wl_free(&w);
    if (rc)
        return rc;
    struct report *R = &X->R;
    json_t *j = section(R, "top_engine");
    char name[72];
    snprintf(name, sizeof name, "TOP %u over %u shorts, first after load", r.k, r.shorts);
    row(R, "top", name, "%.2f ms", r.first_ms);
    int slow = 0;
    json_t *cold = json_object(), *warm = json_object();
    for (int m = 0; m < ENG_M_COUNT; m++) {
        jnum(cold, eng_metric_name((enum eng_metric)m), r.cold_ms_by_metric[m]);
        jnum(warm, eng_metric_name((enum eng_metric)m), r.steady_ms_by_metric[m]);
        if (r.steady_ms_by_metric[m] > r.steady_ms_by_metric[slow])
            slow = m;
    }
    json_object_set_new(j, "cold_ms_by_metric", cold);
    json_object_set_new(j, "warm_max_ms_by_metric", warm);
    snprintf(name, sizeof name, "TOP %u, first BY each other metric, worst", r.k);
    row(R, "top", name, "%.2f ms", r.cold_ms_max);
    snprintf(name, sizeof name, "TOP %u repeated, any metric: worst (mean)", r.k);
    row(R, "top", name, "%.2f (%.2f) ms", r.steady_ms_max, r.steady_ms_mean);
    snprintf(name, sizeof name, "TOP %u after %u new interactions, worst", r.k, r.touch);
    row(R, "top", name, "%.2f ms", r.dirty_ms_max);
    double worst = r.steady_ms_max > r.dirty_ms_max ? r.steady_ms_max : r.dirty_ms_max;
    snprintf(name, sizeof name, "TOP %u warm, worst of the two above (BY %s)", r.k,
             r.steady_ms_max > r.dirty_ms_max ? eng_metric_name((enum eng_metric)slow) : "score");
    row(R, "top", name, "%.2f ms", worst);
    target(R, r.shorts >= 1000000 ? "< 5 ms (1M shorts)" : "< 5 ms", worst < 5.0);
    jnum(j, "cold_max_ms", r.cold_ms_max);
    jnum(j, "shorts", r.shorts);
    jnum(j, "k", r.k);
    jnum(j, "first_ms", r.first_ms);
    jnum(j, "steady_max_ms", r.steady_ms_max);
    jnum(j, "steady_mean_ms", r.steady_ms_mean);
    jnum(j, "after_touch_max_ms", r.dirty_ms_max);
    jnum(j, "touch", r.touch);
    return BENCH_OK;
}

static int ph_memory_engine(struct ctx *X, const struct bench_wl_cfg *c)
{
    struct bench_wl w;
    int rc = make_wl(X, c, &w);
    if (rc)
        return rc;
    if (X->o.progress)
        fprintf(stderr, "[memory] in-process, by difference\n");
    struct bench_mem_res m;
    rc = bench_engine_memory(&w, X->o.history, &m, X->msg, sizeof X->msg);
    bench_wl_free(&w);
    if (rc)
        return rc;
    struct report *R = &X->R;
    json_t *j = section(R, "memory_engine");
    row(R, "memory", "per retained record, marginal: RSS (engine)", "%.1f (%.1f) B",
        m.rss_per_record, m.acct_per_record);
    target(R, "<= 32 B (RSS)", m.rss_per_record <= 32.0);
    row(R, "memory", "per (short, viewer) pair, marginal: RSS (engine)", "%.1f (%.1f) B",
        m.rss_per_pair, m.acct_per_pair);
    target(R, "<= 16 B (RSS)", m.rss_per_pair <= 16.0);
    row(R, "memory", "per short, marginal: RSS (engine)", "%.0f (%.0f) B", m.rss_per_short,
        m.acct_per_short);
    jnum(j, "base_interactions", (double)c->n);
    jnum(j, "base_rss", (double)m.base_rss);
    jnum(j, "base_mem_total", (double)m.base_mem_total);
    jnum(j, "base_records", (double)m.base.records);
    jnum(j, "base_viewer_pairs", (double)m.base.viewer_pairs);
    jnum(j, "d_records", (double)m.d_records);
    jnum(j, "d_pairs", (double)m.d_pairs);
    jnum(j, "d_shorts", (double)m.d_shorts);
    jnum(j, "rss_per_record", m.rss_per_record);
    jnum(j, "acct_per_record", m.acct_per_record);
    jnum(j, "rss_per_pair", m.rss_per_pair);
    jnum(j, "acct_per_pair", m.acct_per_pair);
    jnum(j, "rss_per_short", m.rss_per_short);
    jnum(j, "acct_per_short", m.acct_per_short);
    return BENCH_OK;
}

/* Results of the full shortstat sequence, kept for the Redis ratios. */
struct full_res {
    struct bench_run_res run;
    uint64_t rss, used_memory, interactions, shorts, sessions, users, records, pairs;
    uint64_t mem_engine, mem_records, mem_viewers;
    double load_ms;                   /* INFO load_duration_ms, median of the restarts */
    struct snap_idle snap;
    double empty_ready_s, load_ready_s; /* load_ready_s: median of the restarts */
    double load_ready_all_s[BENCH_RESTARTS];
    uint64_t interactions_after_load;
    double inproc_load_ms;
    bool have_load;
};

/* In-process snap_load of a file the server wrote: the load without exec. */
static double inproc_load_ms(const char *dir, uint32_t history)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, SNAP_FILE);
    struct eng_config cfg = {.history = history};
    struct eng *e = NULL;
    struct snap_header h;
    struct snap_err err;
    double t0 = bench_now();
    int rc = snap_load(path, &cfg, &e, &h, &err);
    double ms = (bench_now() - t0) * 1e3;
    if (rc != SNAP_OK)
        return -1;
    eng_destroy(e);
    return ms;
}

/*
 * Ingest flat out on a fresh server, then memory, an idle SNAPSHOT, and a
 * restart on it: the shortstat half of the Redis comparison.
 */
static int ph_full(struct ctx *X, const struct bench_wl *w, struct full_res *f)
{
    memset(f, 0, sizeof *f);
    struct bench_stream st;
    int rc = make_stream(X, w, BENCH_RESP, &st);
    if (rc)
        return rc;
    struct srv s;
    if ((rc = srv_start(X, NULL, &s))) {
        bench_stream_free(&st);
        return rc;
    }
    f->empty_ready_s = s.ready_s;
    struct bench_run_cfg rc_cfg = run_cfg(X, &s, &st, "ingest resp");
    rc = bench_run(&rc_cfg, &f->run, X->msg, sizeof X->msg);
    bench_stream_free(&st);
    if (!rc)
        rc = check_accepted(X, &f->run, "ingest");
    char *info = NULL;
    if (!rc && !(rc = srv_info(X, &s, &info))) {
        f->rss = info_u64(info, "rss_bytes");
        f->used_memory = info_u64(info, "used_memory_bytes");
        f->interactions = info_u64(info, "interactions_total");
        f->shorts = info_u64(info, "shorts");
        f->sessions = info_u64(info, "sessions");
        f->users = info_u64(info, "users");
        f->records = info_u64(info, "records");
        f->pairs = info_u64(info, "viewer_pairs");
        f->mem_engine = info_u64(info, "used_memory_engine_bytes");
        f->mem_records = info_u64(info, "used_memory_records_bytes");
        f->mem_viewers = info_u64(info, "used_memory_viewers_bytes");
        if (s.spawned)
            f->rss = bench_rss(s.p.pid);
        free(info);
        info = NULL;
    }
    if (!rc && !X->o.external)
        rc = srv_snapshot(X, &s, &f->snap);
    if (!rc && s.spawned) {
        srv_stop(&s, SIGKILL);
        f->inproc_load_ms = inproc_load_ms(s.dir, X->o.history);
        double ready[BENCH_RESTARTS], load_ms[BENCH_RESTARTS];
        for (unsigned k = 0; !rc && k < BENCH_RESTARTS; k++) {
            if (k)
                srv_stop(&s, SIGKILL);  /* no save at exit: the same snapshot each time */
            if ((rc = srv_start(X, s.dir, &s)))
                break;
            ready[k] = f->load_ready_all_s[k] = s.ready_s;
            if (!(rc = srv_info(X, &s, &info))) {
                f->interactions_after_load = info_u64(info, "interactions_total");
                load_ms[k] = (double)info_u64(info, "load_duration_ms");
            }
            free(info);
            info = NULL;
        }
        if (!rc) {
            f->load_ready_s = bench_median(ready, BENCH_RESTARTS);
            f->load_ms = bench_median(load_ms, BENCH_RESTARTS);
            f->have_load = true;
        }
    }
    srv_done(&s);
    return rc;
}

static void full_rows(struct ctx *X, const struct bench_wl *w, const struct full_res *f)
{
    struct report *R = &X->R;
    json_t *j = section(R, "ingest");
    char name[72];
    snprintf(name, sizeof name, "TRACK resp, %u conns x %u pipelined", X->o.conns, X->o.pipeline);
    row(R, "ingest", name, "%s", RATE(f->run.rate));
    target(R, ">= 2 M/s", f->run.rate >= 2e6);
    lat_rows(R, "ingest", "flat out", &f->run.lat);
    row(R, "ingest", "longest reply gap while ingesting", "%.2f ms", f->run.max_gap_ms);
    jnum(j, "interactions", (double)w->n);
    jnum(j, "conns", X->o.conns);
    jnum(j, "pipeline", X->o.pipeline);
    jnum(j, "rate", f->run.rate);
    jnum(j, "secs", f->run.secs);
    jnum(j, "max_gap_ms", f->run.max_gap_ms);
    json_hist(j, "lat", &f->run.lat);
    jnum(j, "server_interactions_total", (double)f->interactions);

    json_t *m = section(R, "memory");
    double n = (double)w->n;
    row(R, "memory", "server RSS after load", "%.1f MB", (double)f->rss / 1e6);
    row(R, "memory", "server RSS / interaction", "%.1f B", (double)f->rss / n);
    if (f->shorts)
        row(R, "memory", "server RSS / short (whole state / shorts)", "%.0f B",
            (double)f->rss / (double)f->shorts);
    if (f->mem_engine)
        row(R, "memory", "engine bytes (INFO) / interaction", "%.1f B",
            (double)f->mem_engine / n);
    if (f->records && f->mem_records)
        row(R, "memory", "ring bytes / retained record (INFO)", "%.1f B",
            (double)f->mem_records / (double)f->records);
    if (f->pairs && f->mem_viewers)
        row(R, "memory", "viewer+saver set bytes / viewer pair (INFO)", "%.1f B",
            (double)f->mem_viewers / (double)f->pairs);
    jnum(m, "interactions", n);
    jnum(m, "rss_bytes", (double)f->rss);
    jnum(m, "used_memory_bytes", (double)f->used_memory);
    jnum(m, "used_memory_engine_bytes", (double)f->mem_engine);
    jnum(m, "used_memory_records_bytes", (double)f->mem_records);
    jnum(m, "used_memory_viewers_bytes", (double)f->mem_viewers);
    jnum(m, "shorts", (double)f->shorts);
    jnum(m, "sessions", (double)f->sessions);
    jnum(m, "users", (double)f->users);
    if (f->records)
        jnum(m, "records", (double)f->records);
    if (f->pairs)
        jnum(m, "viewer_pairs", (double)f->pairs);

    if (f->snap.bytes || f->snap.wall_ms > 0) {
        json_t *sj = section(R, "snapshot_idle");
        row(R, "snapshot", "SNAPSHOT of the loaded state (idle), wall", "%.0f ms", f->snap.wall_ms);
        row(R, "snapshot", "bytes on disk / interaction", "%.1f B", (double)f->snap.bytes / n);
        if (f->snap.raw_bytes)
            row(R, "snapshot", "compression (raw / on disk)", "%.2fx",
                (double)f->snap.raw_bytes / (double)f->snap.bytes);
        jnum(sj, "wall_ms", f->snap.wall_ms);
        jnum(sj, "duration_ms", (double)f->snap.duration_ms);
        jnum(sj, "bytes", (double)f->snap.bytes);
        jnum(sj, "raw_bytes", (double)f->snap.raw_bytes);
        jnum(sj, "fork_usec", (double)f->snap.fork_usec);
    }
    if (f->have_load) {
        json_t *lj = section(R, "load");
        double lo = f->load_ready_all_s[0], hi = lo;
        for (unsigned k = 1; k < BENCH_RESTARTS; k++) {
            lo = f->load_ready_all_s[k] < lo ? f->load_ready_all_s[k] : lo;
            hi = f->load_ready_all_s[k] > hi ? f->load_ready_all_s[k] : hi;
        }
        snprintf(name, sizeof name, "restart on it: exec to PING, median of %u (range)",
                 BENCH_RESTARTS);
        row(R, "snapshot", name, "%.3f (%.2f-%.2f) s", f->load_ready_s, lo, hi);
        target(R, "< 1 s", f->load_ready_s < 1.0);
        row(R, "snapshot", "  of which an empty start takes", "%.3f s", f->empty_ready_s);
        if (f->load_ms > 0)
            row(R, "snapshot", "  of which loading (INFO load_duration_ms)", "%.0f ms",
                f->load_ms);
        if (f->inproc_load_ms >= 0)
            row(R, "snapshot", "snap_load in-process (no exec)", "%.0f ms", f->inproc_load_ms);
        row(R, "snapshot", "interactions_total after restart", "%llu%s",
            (unsigned long long)f->interactions_after_load,
            f->interactions_after_load == f->interactions ? " (all)" : " (LOST SOME)");
        jnum(lj, "ready_s", f->load_ready_s);
        jarr(lj, "ready_all_s", f->load_ready_all_s, BENCH_RESTARTS);
        jnum(lj, "empty_ready_s", f->empty_ready_s);
        jnum(lj, "inproc_load_ms", f->inproc_load_ms);
        jnum(lj, "server_load_ms", (double)f->load_ms);
        jnum(lj, "interactions_after_load", (double)f->interactions_after_load);
    }
}

/* The client against the null server: what it can measure at most. */
static int ph_ceiling(struct ctx *X, const struct bench_wl *w, enum bench_framing fr,
                      struct bench_run_res *res)
{
    memset(res, 0, sizeof *res);
    struct bench_stream st;
    int rc = make_stream(X, w, fr, &st);
    if (rc)
        return rc;
    struct bench_proc p;
    if ((rc = bench_sink_start(X->cpus.server, &p, X->msg, sizeof X->msg))) {
        bench_stream_free(&st);
        return rc;
    }
    struct srv s = {.host = "127.0.0.1", .port = p.port};
    struct bench_run_cfg c = run_cfg(X, &s, &st, "null server");
    c.rate = X->o.rate;
    rc = bench_run(&c, res, X->msg, sizeof X->msg);
    bench_stop(&p, SIGKILL, 5);
    bench_stream_free(&st);
    if (rc)
        return rc;
    struct report *R = &X->R;
    char name[72];
    snprintf(name, sizeof name, "client ceiling: null server, %s, %ux%u",
             framing_name(fr), X->o.conns, X->o.pipeline);
    row(R, "client", name, "%s", RATE(res->rate));
    json_t *j = section(R, "client_ceiling");
    jnum(j, "rate", res->rate);
    json_hist(j, "lat", &res->lat);
    return BENCH_OK;
}

/* One flat-out or paced ingestion on a fresh server; with `preload`, the
 * workload is first sent once flat out, unmeasured, so the measured run
 * replays it over a state that already holds its shorts, sessions and
 * pairs: what a server that has been up for a while sees. Only the history
 * rings still grow (each replayed interaction adds a record), so there is
 * far less fresh memory than from empty, not none. */
static int ph_ingest(struct ctx *X, const struct bench_wl *w, enum bench_framing fr, double rate,
                     bool preload, const char *label, struct bench_run_res *res)
{
    memset(res, 0, sizeof *res);
    struct bench_stream st;
    int rc = make_stream(X, w, fr, &st);
    if (rc)
        return rc;
    struct srv s;
    if ((rc = srv_start(X, NULL, &s))) {
        bench_stream_free(&st);
        return rc;
    }
    if (preload) {
        struct bench_run_cfg pc = run_cfg(X, &s, &st, "preload");
        rc = bench_run(&pc, res, X->msg, sizeof X->msg);
        if (!rc)
            rc = check_accepted(X, res, "preload");
        bench_run_res_free(res);
        memset(res, 0, sizeof *res);
        if (rc) {
            bench_stream_free(&st);
            srv_done(&s);
            return rc;
        }
    }
    struct bench_run_cfg c = run_cfg(X, &s, &st, label);
    c.rate = rate;
    rc = bench_run(&c, res, X->msg, sizeof X->msg);
    if (!rc)
        rc = check_accepted(X, res, label);
    bench_stream_free(&st);
    srv_done(&s);
    return rc;
}

static void query_rows(struct ctx *X, const char *sec, int k, const struct bench_run_res *res,
                       uint64_t shorts, bool target_top)
{
    static const char *const qn[] = {"STATS", "TOP", "HISTORY"};
    struct report *R = &X->R;
    json_t *j = section(R, sec);
    char name[72], key[48];
    double qr = res->q_secs > 0 ? (double)res->q_n[k] / res->q_secs : 0;
    if (k == BENCH_Q_TOP)
        snprintf(name, sizeof name, "TOP %u (%llu shorts): rate, p50 / p99", X->o.topk,
                 (unsigned long long)shorts);
    else
        snprintf(name, sizeof name, "%s: rate, p50 / p99", qn[k]);
    row(R, sec, name, "%.0f/s %.2f/%.2f ms", qr, ns_ms(bench_hist_quantile(&res->q_lat[k], 0.5)),
        ns_ms(bench_hist_quantile(&res->q_lat[k], 0.99)));
    if (k == BENCH_Q_TOP && target_top)
        target(R, "< 5 ms (p99)", ns_ms(bench_hist_quantile(&res->q_lat[k], 0.99)) < 5.0);
    snprintf(key, sizeof key, "%s_rate", qn[k]);
    jnum(j, key, qr);
    snprintf(key, sizeof key, "%s_n", qn[k]);
    jnum(j, key, (double)res->q_n[k]);
    snprintf(key, sizeof key, "%s_errors", qn[k]);
    jnum(j, key, (double)res->q_err[k]);
    json_hist(j, qn[k], &res->q_lat[k]);
    if (res->q_err[k]) {
        snprintf(name, sizeof name, "%s errors (first: %.30s)", qn[k], res->first_error);
        row(R, sec, name, "%llu", (unsigned long long)res->q_err[k]);
    }
}

/*
 * Preload the workload, then either replay it with STATS, TOP and HISTORY
 * arriving alongside (Poisson, --qps each), or (query_secs > 0) run each
 * kind alone, back to back, for query_secs / 3: its service time and rate.
 */
static int ph_queries(struct ctx *X, const struct bench_wl *w, const char *sec, double query_secs)
{
    bool alone = query_secs > 0;
    struct bench_stream st;
    int rc = make_stream(X, w, X->o.framing, &st);
    if (rc)
        return rc;
    struct srv s;
    if ((rc = srv_start(X, NULL, &s))) {
        bench_stream_free(&st);
        return rc;
    }
    struct bench_run_res pre = {0}, res[BENCH_Q_COUNT] = {{0}};
    struct bench_run_cfg c = run_cfg(X, &s, &st, "preload");
    rc = bench_run(&c, &pre, X->msg, sizeof X->msg);
    if (!rc)
        rc = check_accepted(X, &pre, "preload");
    if (!rc && alone) {
        /* warm-up, not measured: each metric's first TOP builds its index
         * (the engine rows show that cost as "first BY each other metric") */
        struct bench_run_res warm = {0};
        c = run_cfg(X, &s, NULL, "warm-up");
        c.queries = true;
        c.qmask = 1u << BENCH_Q_TOP;
        c.qwl = w;
        c.topk = X->o.topk;
        c.query_secs = 0.3;
        rc = bench_run(&c, &warm, X->msg, sizeof X->msg);
        bench_run_res_free(&warm);
    }
    for (int k = 0; !rc && k < (alone ? BENCH_Q_COUNT : 1); k++) {
        c = run_cfg(X, &s, alone ? NULL : &st, alone ? "queries" : "ingest+queries");
        c.queries = true;
        c.qmask = alone ? 1u << k : 0;
        c.qps = alone ? 0 : X->o.qps;
        c.qwl = w;
        c.topk = X->o.topk;
        c.query_secs = query_secs / BENCH_Q_COUNT;
        rc = bench_run(&c, &res[k], X->msg, sizeof X->msg);
        if (!rc)
            rc = check_accepted(X, &res[k], "ingest+queries");
    }
    char *info = NULL;
    uint64_t shorts = 0;
    if (!rc && !srv_info(X, &s, &info))
        shorts = info_u64(info, "shorts");
    free(info);
    srv_done(&s);
    bench_stream_free(&st);
    if (!rc) {
        struct report *R = &X->R;
        json_t *j = section(R, sec);
        jnum(j, "shorts", (double)shorts);
        jnum(j, "alone", alone);
        jnum(j, "qps", alone ? 0 : X->o.qps);
        if (!alone) {
            row(R, sec, "TRACK while queries arrive", "%s", RATE(res[0].rate));
            jnum(j, "track_rate", res[0].rate);
            json_hist(j, "track_lat", &res[0].lat);
        }
        for (int k = 0; k < BENCH_Q_COUNT; k++)
            query_rows(X, sec, k, &res[alone ? k : 0], shorts, shorts >= 1000000);
    }
    bench_run_res_free(&pre);
    for (int k = 0; k < BENCH_Q_COUNT; k++)
        bench_run_res_free(&res[k]);
    return rc;
}

/* Preload, then cycle the stream while a SNAPSHOT runs; then restart on it. */
static int ph_snapshot(struct ctx *X, const struct bench_wl *w)
{
    struct bench_stream st;
    int rc = make_stream(X, w, X->o.framing, &st);
    if (rc)
        return rc;
    struct srv s;
    if ((rc = srv_start(X, NULL, &s))) {
        bench_stream_free(&st);
        return rc;
    }
    struct bench_run_res pre = {0}, res = {0};
    struct bench_run_cfg c = run_cfg(X, &s, &st, "preload");
    rc = bench_run(&c, &pre, X->msg, sizeof X->msg);
    if (!rc)
        rc = check_accepted(X, &pre, "preload");
    if (!rc) {
        c = run_cfg(X, &s, &st, "ingest+snapshot");
        c.cycle = true;
        c.snapshot = true;
        c.snapshot_at = X->o.snapshot_at;
        rc = bench_run(&c, &res, X->msg, sizeof X->msg);
        if (!rc)
            rc = check_accepted(X, &res, "ingest during snapshot");
        if (!rc && !res.snap_done) {
            snprintf(X->msg, sizeof X->msg, "snapshot under ingestion failed: %s", res.snap_error);
            rc = BENCH_ESERVER;
        }
    }
    char *info = NULL;
    uint64_t before = 0, after = 0, shorts = 0;
    double ready = 0, inproc = -1;
    bool loaded = false;
    if (!rc && !(rc = srv_info(X, &s, &info))) {
        before = info_u64(info, "interactions_total");
        shorts = info_u64(info, "shorts");
    }
    free(info);
    info = NULL;
    if (!rc && s.spawned) {
        srv_stop(&s, SIGKILL);
        inproc = inproc_load_ms(s.dir, X->o.history);
        if (!(rc = srv_start(X, s.dir, &s))) {
            ready = s.ready_s;
            loaded = true;
            if (!(rc = srv_info(X, &s, &info)))
                after = info_u64(info, "interactions_total");
            free(info);
        }
    }
    srv_done(&s);
    bench_stream_free(&st);
    if (rc) {
        bench_run_res_free(&pre);
        bench_run_res_free(&res);
        return rc;
    }
    struct report *R = &X->R;
    json_t *j = section(R, "snapshot");
    double win = res.snap_end_s - res.snap_start_s;
    row(R, "snapshot", "under ingestion: SNAPSHOT to done, wall", "%.0f ms", win * 1e3);
    row(R, "snapshot", "  write time (INFO last_snapshot_duration_ms)", "%llu ms",
        (unsigned long long)res.snap_duration_ms);
    row(R, "snapshot", "  bytes on disk", "%.1f MB", (double)res.snap_bytes / 1e6);
    if (res.snap_raw_bytes && res.snap_bytes)
        row(R, "snapshot", "  compression (raw / on disk)", "%.2fx",
            (double)res.snap_raw_bytes / (double)res.snap_bytes);
    row(R, "snapshot", "  longest ingestion stall in that window", "%.2f ms", res.snap_stall_ms);
    target(R, "< 20 ms", res.snap_stall_ms < 20.0);
    if (res.snap_have_fork_usec)
        row(R, "snapshot", "  fork() pause (INFO last_fork_usec)", "%.2f ms",
            (double)res.snap_fork_usec / 1e3);
    row(R, "snapshot", "  TRACK rate during / before it", "%s / %s", RATE(res.snap_rate),
        RATE(res.snap_rate_before));
    if (loaded) {
        row(R, "snapshot", "restart on it: exec to PING answered", "%.3f s", ready);
        if (inproc >= 0)
            row(R, "snapshot", "  snap_load in-process (no exec)", "%.0f ms", inproc);
        row(R, "snapshot", "  interactions restored / at the snapshot", "%llu / <= %llu",
            (unsigned long long)after, (unsigned long long)before);
    }
    jnum(j, "interactions_preloaded", (double)w->n);
    jnum(j, "shorts", (double)shorts);
    jnum(j, "window_ms", win * 1e3);
    jnum(j, "duration_ms", (double)res.snap_duration_ms);
    jnum(j, "bytes", (double)res.snap_bytes);
    jnum(j, "raw_bytes", (double)res.snap_raw_bytes);
    jnum(j, "stall_ms", res.snap_stall_ms);
    jnum(j, "max_gap_whole_run_ms", res.max_gap_ms);
    /* the longest silences over 1 ms near the window, for locating a stall */
    json_t *gaps = json_array();
    for (int pick = 0; pick < 8; pick++) {
        double best = 0;
        size_t bi = SIZE_MAX;
        for (size_t i = 0; i < res.ngaps; i++) {
            const struct bench_gap *g = &res.gaps[i];
            double ms = (g->end_s - g->start_s) * 1e3;
            if (g->end_s >= res.snap_start_s - 1 && g->start_s <= res.snap_end_s + 1 && ms > best &&
                ms > 0)
                best = ms, bi = i;
        }
        if (bi == SIZE_MAX)
            break;
        json_t *g = json_object();
        jnum(g, "from_snapshot_ms", (res.gaps[bi].start_s - res.snap_start_s) * 1e3);
        jnum(g, "ms", best);
        json_array_append_new(gaps, g);
        res.gaps[bi].end_s = res.gaps[bi].start_s;  /* taken */
    }
    json_object_set_new(j, "longest_gaps", gaps);
    if (res.snap_have_fork_usec)
        jnum(j, "fork_usec", (double)res.snap_fork_usec);
    jnum(j, "rate_during", res.snap_rate);
    jnum(j, "rate_before", res.snap_rate_before);
    jnum(j, "rate_preload", pre.rate);
    if (loaded) {
        jnum(j, "restart_ready_s", ready);
        jnum(j, "inproc_load_ms", inproc);
        jnum(j, "interactions_restored", (double)after);
        jnum(j, "interactions_at_kill", (double)before);
    }
    bench_run_res_free(&pre);
    bench_run_res_free(&res);
    return BENCH_OK;
}

/* The pause before each run the Redis ratio divides (shortstat's two and
 * Redis's). Memory a process has just freed stays backed by the host until
 * the VM's free-page reporting hands it back, seconds later, and a process
 * that faults it in sooner runs faster: restarts loaded 30-40 % faster
 * right after one another (docs/benchmarks.md, the twelfth pass), and a
 * run from empty right after another read -5 to +17 % against one after
 * this pause (five pairs). The suite's other rows follow one another as
 * they always have; these three start alike. */
#define SETTLE_S 8

static void settle(void)
{
    nanosleep(&(struct timespec){SETTLE_S, 0}, NULL);
}

/* shortstat's ingest from empty on a fresh server, flat out: its rate. */
static int ingest_rate(struct ctx *X, const struct bench_wl *w, const char *label, double *rate)
{
    struct bench_run_res r;
    settle();
    int rc = ph_ingest(X, w, BENCH_RESP, 0, false, label, &r);
    *rate = r.rate;
    bench_run_res_free(&r);
    return rc;
}

/*
 * Redis doing the same work, and the ratios. With f (shortstat's figures
 * from ph_full), shortstat's throughput is measured again just before and
 * just after Redis's run, and the ratio divides their mean: this machine's
 * speed drifts by a third over minutes, ph_full ran minutes earlier, and a
 * pair that brackets Redis cancels a drift that is steady over that time
 * (an A-B-A design). The ratio to ph_full's figure is kept in the JSON.
 */
static int ph_redis(struct ctx *X, const struct bench_wl *w, const struct full_res *f)
{
    struct bench_redis_cfg rc_cfg = {
        .path = X->o.redis, .cpu = X->cpus.server, .history = X->o.history,
        .conns = X->o.conns, .pipeline = X->o.pipeline, .progress = X->o.progress,
    };
    double before = 0, after = 0;
    int rc = f ? ingest_rate(X, w, "ingest before redis", &before) : 0;
    if (rc)
        return rc;
    struct bench_redis_res r;
    settle();
    rc = bench_redis_full(&rc_cfg, w, &r, X->msg, sizeof X->msg);
    if (!rc && f)
        rc = ingest_rate(X, w, "ingest after redis", &after);
    if (rc) {
        bench_run_res_free(&r.run);
        return rc;
    }
    struct report *R = &X->R;
    json_t *j = section(R, "redis");
    double n = (double)w->n;
    char name[72];
    snprintf(name, sizeof name, "redis %s: EVALSHA, same conns and depth", r.version);
    row(R, "vs redis", name, "%s", RATE(r.run.rate));
    lat_rows(R, "vs redis", "redis", &r.run.lat);
    if (f) {
        row(R, "vs redis", "shortstat TRACK resp from empty, just before redis", "%s",
            RATE(before));
        row(R, "vs redis", "  and just after redis", "%s", RATE(after));
        jnum(j, "shortstat_rate_before", before);
        jnum(j, "shortstat_rate_after", after);
    }
    row(R, "vs redis", "redis used_memory / interaction", "%.1f B", (double)r.used_memory / n);
    row(R, "vs redis", "redis RSS / interaction", "%.1f B", (double)r.rss / n);
    row(R, "vs redis", "redis BGSAVE wall", "%.0f ms", r.bgsave_ms);
    row(R, "vs redis", "redis RDB bytes / interaction", "%.1f B", (double)r.rdb_bytes / n);
    snprintf(name, sizeof name, "redis restart: exec to PONG, median of %u", BENCH_RESTARTS);
    row(R, "vs redis", name, "%.3f s", r.load_ready_s);
    jnum(j, "version_major", atof(r.version));
    json_object_set_new(j, "version", json_string(r.version));
    jnum(j, "interactions", n);
    jnum(j, "rate", r.run.rate);
    json_hist(j, "lat", &r.run.lat);
    jnum(j, "used_memory", (double)r.used_memory);
    jnum(j, "rss", (double)r.rss);
    jnum(j, "keys", (double)r.keys);
    jnum(j, "bgsave_ms", r.bgsave_ms);
    jnum(j, "fork_usec", (double)r.fork_usec);
    jnum(j, "rdb_bytes", (double)r.rdb_bytes);
    jnum(j, "empty_ready_s", r.empty_ready_s);
    jnum(j, "load_ready_s", r.load_ready_s);
    jarr(j, "load_ready_all_s", r.load_ready_all_s, BENCH_RESTARTS);
    jnum(j, "keys_after_load", (double)r.keys_after_load);
    if (f) {
        json_t *q = section(R, "ratios");
        double ours = (before + after) / 2;
        double thr = r.run.rate > 0 ? ours / r.run.rate : 0;
        double mem = f->rss ? (double)r.rss / (double)f->rss : 0;
        double disk = f->snap.bytes ? (double)r.rdb_bytes / (double)f->snap.bytes : 0;
        double save = f->snap.wall_ms > 0 ? r.bgsave_ms / f->snap.wall_ms : 0;
        double load = f->load_ready_s > 0 ? r.load_ready_s / f->load_ready_s : 0;
        row(R, "ratios", "throughput shortstat (mean of the two) / redis", "%.1fx", thr);
        target(R, ">= 10x", thr >= 10.0);
        row(R, "ratios", "RSS redis / shortstat", "%.1fx", mem);
        row(R, "ratios", "disk redis RDB / shortstat snapshot", "%.1fx", disk);
        target(R, ">= 2x", disk >= 2.0);
        row(R, "ratios", "save time redis / shortstat", "%.1fx", save);
        row(R, "ratios", "restart time redis / shortstat", "%.1fx", load);
        jnum(q, "throughput", thr);
        jnum(q, "throughput_first_ingest", r.run.rate > 0 ? f->run.rate / r.run.rate : 0);
        jnum(q, "rss", mem);
        jnum(q, "disk", disk);
        jnum(q, "save_time", save);
        jnum(q, "restart_time", load);
    }
    bench_run_res_free(&r.run);
    return BENCH_OK;
}

/* ---- machine and config into the JSON ------------------------------------------------------ */

static void describe(struct ctx *X, const struct bench_wl_cfg *c)
{
    json_t *root = X->R.root;
    struct utsname u;
    json_t *m = section(&X->R, "machine");
    if (uname(&u) == 0) {
        json_object_set_new(m, "kernel", json_string(u.release));
        json_object_set_new(m, "arch", json_string(u.machine));
    }
    jnum(m, "cpus", X->cpus.n);
    double la[3];
    if (getloadavg(la, 3) == 3) {
        jnum(m, "loadavg_1m_at_start", la[0]);
        if (la[0] > 1.0 && X->o.progress)
            fprintf(stderr, "warning: load average %.2f: other work is running on this machine; "
                            "absolute figures will be low (ratios from one run still compare)\n",
                    la[0]);
    }
    jnum(m, "server_cpu", X->cpus.server);
    jnum(m, "bench_cpu", X->cpus.self);
    time_t now = time(NULL);
    char ts[32];
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    json_object_set_new(root, "when", json_string(ts));
    json_t *w = section(&X->R, "workload");
    jnum(w, "seed", (double)c->seed);
    jnum(w, "interactions", (double)c->n);
    jnum(w, "shorts", c->shorts);
    jnum(w, "sessions", c->sessions);
    jnum(w, "users", c->users);
    jnum(w, "signed_in", c->signed_in);
    jnum(w, "zipf", c->zipf);
    jnum(w, "watch_max", c->watch_max);
    jnum(w, "history", X->o.history);
    json_object_set_new(w, "sid", json_string(c->sid_fmt == BENCH_SID_GUEST ? "guest" : "short"));
    json_t *mix = json_object();
    for (int t = 0; t < ENG_T_COUNT; t++)
        jnum(mix, eng_type_name((enum eng_type)t), c->mix[t]);
    json_object_set_new(w, "mix", mix);
    json_t *cl = section(&X->R, "client");
    jnum(cl, "conns", X->o.conns);
    jnum(cl, "pipeline", X->o.pipeline);
    json_object_set_new(cl, "framing",
                        json_string(framing_name(X->o.framing)));
}

static int finish(struct ctx *X, int rc)
{
    double la[3];
    if (getloadavg(la, 3) == 3)
        jnum(section(&X->R, "machine"), "loadavg_1m_at_end", la[0]);
    if (X->R.n)
        print_table(&X->R);
    if (rc) {
        fprintf(stderr, "shortstat-bench: %s\n", X->msg);
        json_object_set_new(X->R.root, "error", json_string(X->msg));
    }
    if (X->o.json) {
        if (json_dump_file(X->R.root, X->o.json, JSON_INDENT(2) | JSON_SORT_KEYS) != 0) {
            fprintf(stderr, "shortstat-bench: cannot write %s\n", X->o.json);
            rc = rc ? rc : BENCH_EIO;
        } else if (X->o.progress) {
            fprintf(stderr, "wrote %s\n", X->o.json);
        }
    }
    return rc ? 1 : 0;
}

/* ---- subcommands ---------------------------------------------------------------------------- */

static int cmd_gen(struct ctx *X)
{
    const struct opts *o = &X->o;
    if (o->print_lua) {
        fputs(bench_lua_script(), stdout);
        return 0;
    }
    if (o->for_redis && (!o->sha || strlen(o->sha) != 40 ||
                         strspn(o->sha, "0123456789abcdef") != 40)) {
        fprintf(stderr, "shortstat-bench gen: --for redis needs --sha with the 40 hex digits "
                        "SCRIPT LOAD answered (see --print-lua)\n");
        return 2;
    }
    struct bench_wl w;
    if (make_wl(X, &o->wl, &w)) {
        fprintf(stderr, "shortstat-bench gen: %s\n", X->msg);
        return 2;
    }
    FILE *f = o->out && strcmp(o->out, "-") ? fopen(o->out, "w") : stdout;
    if (!f) {
        fprintf(stderr, "shortstat-bench gen: %s: %s\n", o->out, strerror(errno));
        bench_wl_free(&w);
        return 1;
    }
    static char iobuf[1 << 20];
    setvbuf(f, iobuf, _IOFBF, sizeof iobuf);
    uint8_t cmd[BENCH_CMD_MAX];
    uint64_t bytes = 0;
    int rc = 0;
    for (size_t i = 0; i < w.n && !rc; i++) {
        size_t len = o->for_redis ? bench_enc_eval(&w.cfg, &w.ix[i], i, o->sha, o->history, cmd)
                                  : bench_enc_track(&w.cfg, &w.ix[i], o->framing, cmd);
        if (fwrite(cmd, 1, len, f) != len)
            rc = 1;
        bytes += len;
    }
    if (fflush(f) != 0 || (f != stdout && fclose(f) != 0))
        rc = 1;
    if (rc)
        fprintf(stderr, "shortstat-bench gen: write failed: %s\n", strerror(errno));
    else if (o->progress)
        fprintf(stderr, "[gen] wrote %zu %s commands, %llu bytes, to %s\n", w.n,
                o->for_redis ? "EVALSHA" : o->framing == BENCH_RESP ? "RESP TRACK" : "inline TRACK",
                (unsigned long long)bytes, f == stdout ? "stdout" : o->out);
    bench_wl_free(&w);
    return rc;
}

static int cmd_engine(struct ctx *X)
{
    describe(X, &X->o.wl);
    int rc = ph_engine(X, &X->o.wl);
    if (!rc) {
        struct bench_wl_cfg c = X->o.wl;
        c.shorts = 1000000;
        c.n = X->o.wl.n > 2000000 ? X->o.wl.n : 2000000;
        c.cover = true;
        rc = ph_top_engine(X, &c);
    }
    if (!rc) {
        struct bench_wl_cfg c = X->o.wl;
        rc = ph_memory_engine(X, &c);
    }
    return finish(X, rc);
}

static int cmd_machine(struct ctx *X)
{
    return finish(X, ph_machine(X));
}

static int with_wl(struct ctx *X, struct bench_wl *w)
{
    describe(X, &X->o.wl);
    return make_wl(X, &X->o.wl, w);
}

static int cmd_ingest(struct ctx *X)
{
    struct bench_wl w;
    int rc = with_wl(X, &w);
    if (rc)
        return finish(X, rc);
    struct report *R = &X->R;
    if (X->o.sink) {
        struct bench_run_res r;
        rc = ph_ceiling(X, &w, X->o.framing, &r);
        if (!rc)
            lat_rows(R, "client", "null server", &r.lat);
        bench_run_res_free(&r);
    } else if (X->o.vs_redis) {
        struct full_res f;
        rc = ph_full(X, &w, &f);
        if (!rc) {
            full_rows(X, &w, &f);
            rc = ph_redis(X, &w, &f);
        }
        bench_run_res_free(&f.run);
    } else {
        struct bench_run_res r;
        char label[64];
        snprintf(label, sizeof label, "ingest %s", framing_name(X->o.framing));
        rc = ph_ingest(X, &w, X->o.framing, X->o.rate, X->o.preload, label, &r);
        if (!rc) {
            json_t *j = section(R, "ingest");
            char name[72];
            snprintf(name, sizeof name, "TRACK %s, %u conns x %u pipelined%s%s",
                     framing_name(X->o.framing), X->o.conns, X->o.pipeline,
                     X->o.rate > 0 ? ", paced" : "", X->o.preload ? ", replayed" : "");
            row(R, "ingest", name, "%s", RATE(r.rate));
            if (X->o.rate <= 0)
                target(R, ">= 2 M/s", r.rate >= 2e6);
            lat_rows(R, "ingest", "TRACK", &r.lat);
            row(R, "ingest", "longest reply gap", "%.2f ms", r.max_gap_ms);
            jnum(j, "interactions", (double)w.n);
            jnum(j, "rate_target", X->o.rate);
            jnum(j, "rate", r.rate);
            jnum(j, "secs", r.secs);
            jnum(j, "max_gap_ms", r.max_gap_ms);
            json_hist(j, "lat", &r.lat);
        }
        bench_run_res_free(&r);
    }
    bench_wl_free(&w);
    return finish(X, rc);
}

static int cmd_query(struct ctx *X)
{
    struct bench_wl w;
    int rc = with_wl(X, &w);
    if (!rc)
        rc = ph_queries(X, &w, "queries", X->o.query_secs);
    bench_wl_free(&w);
    return finish(X, rc);
}

static int cmd_snapshot(struct ctx *X)
{
    struct bench_wl w;
    int rc = with_wl(X, &w);
    if (!rc)
        rc = ph_snapshot(X, &w);
    bench_wl_free(&w);
    return finish(X, rc);
}

static int cmd_memory(struct ctx *X)
{
    struct bench_wl w;
    int rc = with_wl(X, &w);
    if (!rc) {
        struct full_res f;
        rc = ph_full(X, &w, &f);
        if (!rc)
            full_rows(X, &w, &f);
        bench_run_res_free(&f.run);
    }
    bench_wl_free(&w);
    if (!rc)
        rc = ph_memory_engine(X, &X->o.wl);
    return finish(X, rc);
}

static int cmd_vs_redis(struct ctx *X)
{
    X->o.vs_redis = true;
    return cmd_ingest(X);
}

static int cmd_suite(struct ctx *X)
{
    struct opts *o = &X->o;
    if (!o->n_set)
        o->wl.n = o->quick ? 200000 : 2000000;
    describe(X, &o->wl);
    fprintf(stderr, "shortstat-bench suite: %llu interactions, %u shorts, %u sessions, %u users; "
                    "%u conns x %u pipelined; server on cpu %d, bench on cpu %d\n",
            (unsigned long long)o->wl.n, o->wl.shorts, o->wl.sessions, o->wl.users, o->conns,
            o->pipeline, X->cpus.server, X->cpus.self);
    int rc;
    struct bench_wl w = {0};
    struct full_res f = {0};
    bool have_full = false;

    /* 1. what the memory system allows, then the engine alone, 1M
     * interactions (the issue's figure) */
    if ((rc = ph_machine(X)))
        goto out;
    struct bench_wl_cfg ec = o->wl;
    ec.n = o->quick ? 200000 : 1000000;
    if ((rc = ph_engine(X, &ec)))
        goto out;
    struct bench_wl_cfg tc = o->wl;
    tc.shorts = 1000000;
    tc.n = o->quick ? 1200000 : 2000000;
    tc.cover = true;
    if ((rc = ph_top_engine(X, &tc)))
        goto out;
    if ((rc = ph_memory_engine(X, &ec)))
        goto out;

    /* 2. over TCP */
    if ((rc = make_wl(X, &o->wl, &w)))
        goto out;
    struct bench_run_res r;
    if ((rc = ph_ceiling(X, &w, o->framing, &r)))
        goto out;
    bench_run_res_free(&r);
    if ((rc = ph_full(X, &w, &f)))
        goto out;
    have_full = true;
    full_rows(X, &w, &f);

    if ((rc = ph_ingest(X, &w, BENCH_INLINE, 0, false, "ingest inline", &r)))
        goto out;
    char name[72];
    snprintf(name, sizeof name, "TRACK inline, %u conns x %u pipelined", o->conns, o->pipeline);
    row(&X->R, "ingest", name, "%s", RATE(r.rate));
    jnum(section(&X->R, "ingest_inline"), "rate", r.rate);
    json_hist(section(&X->R, "ingest_inline"), "lat", &r.lat);
    bench_run_res_free(&r);

    double half = f.run.rate / 2;
    if ((rc = ph_ingest(X, &w, o->framing, half, false, "ingest at half rate", &r)))
        goto out;
    json_t *hj = section(&X->R, "latency_half_rate");
    snprintf(name, sizeof name, "TRACK paced at %s (half of max)", RATE(half));
    row(&X->R, "latency", name, "%s", RATE(r.rate));
    lat_rows(&X->R, "latency", "TRACK", &r.lat);
    double p99 = ns_ms(bench_hist_quantile(&r.lat, 0.99));
    row(&X->R, "latency", "TRACK p99 at half rate", "%.3f ms", p99);
    target(&X->R, "< 1 ms", p99 < 1.0);
    jnum(hj, "rate_target", half);
    jnum(hj, "rate", r.rate);
    json_hist(hj, "lat", &r.lat);
    bench_run_res_free(&r);

    /* the same two over a state that already holds the workload */
    if ((rc = ph_ingest(X, &w, o->framing, 0, true, "replay", &r)))
        goto out;
    double loaded = r.rate;
    json_t *lj = section(&X->R, "ingest_loaded");
    snprintf(name, sizeof name, "TRACK %s replayed over its own state, %ux%u",
             framing_name(o->framing), o->conns, o->pipeline);
    row(&X->R, "loaded", name, "%s", RATE(loaded));
    row(&X->R, "loaded", "longest reply gap while replaying", "%.2f ms", r.max_gap_ms);
    jnum(lj, "rate", loaded);
    jnum(lj, "max_gap_ms", r.max_gap_ms);
    json_hist(lj, "lat", &r.lat);
    bench_run_res_free(&r);
    if ((rc = ph_ingest(X, &w, o->framing, loaded / 2, true, "replay at half rate", &r)))
        goto out;
    snprintf(name, sizeof name, "TRACK paced at %s (half of that)", RATE(loaded / 2));
    row(&X->R, "loaded", name, "%s", RATE(r.rate));
    lat_rows(&X->R, "loaded", "TRACK", &r.lat);
    jnum(lj, "half_rate_target", loaded / 2);
    jnum(lj, "half_rate", r.rate);
    json_hist(lj, "half_lat", &r.lat);
    bench_run_res_free(&r);

    if ((rc = ph_queries(X, &w, "queries", 0)))
        goto out;
    if ((rc = ph_snapshot(X, &w)))
        goto out;
    bench_wl_free(&w);

    /* TOP over a million shorts over TCP, queries only */
    struct bench_wl_cfg qc = o->wl;
    qc.shorts = 1000000;
    qc.n = o->quick ? 1200000 : 2000000;
    qc.cover = true;
    if ((rc = make_wl(X, &qc, &w)))
        goto out;
    if ((rc = ph_queries(X, &w, "queries_1m", o->quick ? 1.5 : 6.0)))
        goto out;
    bench_wl_free(&w);

    /* 3. Redis, same workload */
    if (!o->no_redis) {
        if ((rc = make_wl(X, &o->wl, &w)))
            goto out;
        rc = ph_redis(X, &w, have_full ? &f : NULL);
    }
out:
    bench_wl_free(&w);
    bench_run_res_free(&f.run);
    return finish(X, rc);
}

/* ---- command table and parsing ---------------------------------------------------------------- */

struct command {
    const char *name;
    unsigned groups;
    int (*fn)(struct ctx *);
    const char *summary;
};

static const struct command commands[] = {
    {"suite", G_SUITE | G_WL | G_CLI | G_SRV | G_OUT | G_REDIS | G_Q | G_SNAP, cmd_suite,
     "the standard suite: every figure below, one table (what `make bench` runs)"},
    {"gen", G_WL | G_GEN | G_CLI, cmd_gen,
     "write the workload as commands, for nc or redis-cli --pipe"},
    {"ingest", G_WL | G_CLI | G_SRV | G_OUT | G_REDIS | G_VS, cmd_ingest,
     "TRACK over TCP: interactions/s and latency (--rate paces it)"},
    {"query", G_WL | G_CLI | G_SRV | G_OUT | G_Q, cmd_query,
     "STATS, TOP and HISTORY rates and latencies while TRACK runs"},
    {"snapshot", G_WL | G_CLI | G_SRV | G_OUT | G_SNAP, cmd_snapshot,
     "SNAPSHOT under ingestion: write time, bytes, stall; restart load time"},
    {"memory", G_WL | G_CLI | G_SRV | G_OUT, cmd_memory,
     "RSS per interaction, per short, per record and per (short, viewer) pair"},
    {"engine", G_WL | G_OUT, cmd_engine,
     "the engine alone in-process: interactions/s, TOP at 1M shorts, bytes"},
    {"machine", G_OUT, cmd_machine,
     "the memory system's ceilings: page-fault and fork() cost, cache-miss rates"},
    {"vs-redis", G_WL | G_CLI | G_SRV | G_OUT | G_REDIS, cmd_vs_redis,
     "the same workload on shortstatd and redis-server (EVALSHA), with ratios"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f, const struct command *c)
{
    if (!c) {
        fprintf(f, "usage: shortstat-bench <command> [options]   (shortstat-bench <command> --help)\n\n");
        for (size_t i = 0; i < NCOMMANDS; i++)
            fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
        fprintf(f, "\nExit status: 0 done (the table says which targets were met), 1 a "
                   "measurement failed, 2 bad usage.\n");
        return;
    }
    fprintf(f, "usage: shortstat-bench %s [options]\n  %s\n\noptions:\n", c->name, c->summary);
    for (size_t i = 0; i < NOPTS; i++) {
        const struct optdef *d = &optdefs[i];
        if (!(d->groups & c->groups))
            continue;
        char left[48];
        snprintf(left, sizeof left, "--%s%s%s", d->name, d->arg ? " " : "", d->arg ? d->arg : "");
        fprintf(f, "  %-26s %s\n", left, d->help);
    }
}

static int num_u64(const char *opt, const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *e;
    errno = 0;
    if (!*s || *s == '-' || *s == '+') {
        fprintf(stderr, "shortstat-bench: --%s: '%s' is not a number\n", opt, s);
        return -1;
    }
    unsigned long long v = strtoull(s, &e, 10);
    if (*e == 'k' || *e == 'K')
        v *= 1000, e++;
    else if (*e == 'm' || *e == 'M')
        v *= 1000000, e++;
    if (*e || errno || v < lo || v > hi) {
        fprintf(stderr, "shortstat-bench: --%s: '%s' must be a whole number %llu..%llu "
                        "(k and M suffixes allowed)\n",
                opt, s, (unsigned long long)lo, (unsigned long long)hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int num_double(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *e;
    errno = 0;
    double v = strtod(s, &e);
    if (!*s || *e || errno || !(v >= lo && v <= hi)) {
        fprintf(stderr, "shortstat-bench: --%s: '%s' must be a number %g..%g\n", opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static void default_server(char *out, size_t n)
{
    char self[900];
    ssize_t l = readlink("/proc/self/exe", self, sizeof self - 1);
    if (l <= 0) {
        snprintf(out, n, "shortstatd");
        return;
    }
    self[l] = '\0';
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    snprintf(out, n, "%s/shortstatd", self);
}

static int parse(int argc, char **argv, const struct command *cmd, struct opts *o)
{
    struct option lo[NOPTS + 1];
    for (size_t i = 0; i < NOPTS; i++)
        lo[i] = (struct option){optdefs[i].name, optdefs[i].has_arg, NULL, optdefs[i].id};
    lo[NOPTS] = (struct option){0};
    opterr = 0;
    optind = 1;
    int id;
    uint64_t u;
    char msg[BENCH_ERR_MAX];
    while ((id = getopt_long_only(argc, argv, "", lo, NULL)) != -1) {
        if (id == '?' || id == ':') {
            if (optopt)
                fprintf(stderr, "shortstat-bench %s: %s needs a value\n", cmd->name,
                        argv[optind - 1]);
            else
                fprintf(stderr, "shortstat-bench %s: unknown option %s (see --help)\n", cmd->name,
                        argv[optind - 1]);
            return 2;
        }
        const struct optdef *d = NULL;
        for (size_t i = 0; i < NOPTS; i++)
            if (optdefs[i].id == id)
                d = &optdefs[i];
        if (!(d->groups & cmd->groups)) {
            fprintf(stderr, "shortstat-bench %s: --%s does not apply to %s (see --help)\n",
                    cmd->name, d->name, cmd->name);
            return 2;
        }
        const char *a = optarg;
        const char *nm = d->name;
        double dv;
        switch (id) {
        case O_HELP:
            usage(stdout, cmd);
            return 1;
        case O_SEED:
            if (num_u64(nm, a, 0, UINT64_MAX, &o->wl.seed))
                return 2;
            break;
        case O_N:
            if (num_u64(nm, a, 0, (uint64_t)1 << 32, &o->wl.n))
                return 2;
            o->n_set = true;
            break;
        case O_SHORTS:
            if (num_u64(nm, a, 1, UINT32_MAX, &u))
                return 2;
            o->wl.shorts = (uint32_t)u;
            break;
        case O_SESSIONS:
            if (num_u64(nm, a, 1, UINT32_MAX, &u))
                return 2;
            o->wl.sessions = (uint32_t)u;
            break;
        case O_USERS:
            if (num_u64(nm, a, 1, UINT32_MAX, &u))
                return 2;
            o->wl.users = (uint32_t)u;
            break;
        case O_SIGNED:
            if (num_double(nm, a, 0, 1, &o->wl.signed_in))
                return 2;
            break;
        case O_MIX:
            if (bench_mix_parse(a, o->wl.mix, msg, sizeof msg)) {
                fprintf(stderr, "shortstat-bench %s: --%s\n", cmd->name, msg);
                return 2;
            }
            break;
        case O_ZIPF:
            if (num_double(nm, a, 0, 10, &o->wl.zipf))
                return 2;
            break;
        case O_WATCH:
            if (num_u64(nm, a, 0, ENG_WATCH_MAX, &u))
                return 2;
            o->wl.watch_max = (uint32_t)u;
            break;
        case O_SID:
            if (strcmp(a, "guest") == 0)
                o->wl.sid_fmt = BENCH_SID_GUEST;
            else if (strcmp(a, "short") == 0)
                o->wl.sid_fmt = BENCH_SID_SHORT;
            else {
                fprintf(stderr, "shortstat-bench: --sid: '%s' must be guest or short\n", a);
                return 2;
            }
            break;
        case O_CONNS:
            if (num_u64(nm, a, 1, 1024, &u))
                return 2;
            o->conns = (uint32_t)u;
            break;
        case O_PIPE:
            if (num_u64(nm, a, 1, 1 << 20, &u))
                return 2;
            o->pipeline = (uint32_t)u;
            break;
        case O_FRAMING:
            if (strcmp(a, "resp") == 0)
                o->framing = BENCH_RESP;
            else if (strcmp(a, "inline") == 0)
                o->framing = BENCH_INLINE;
            else {
                fprintf(stderr, "shortstat-bench: --framing: '%s' must be resp or inline\n", a);
                return 2;
            }
            break;
        case O_RATE:
            if (num_double(nm, a, 1, 1e9, &o->rate))
                return 2;
            break;
        case O_HOST:
            o->host = a;
            break;
        case O_PORT:
            if (num_u64(nm, a, 1, 65535, &u))
                return 2;
            o->port = (uint16_t)u;
            o->external = true;
            break;
        case O_SERVER:
            snprintf(o->server, sizeof o->server, "%s", a);
            break;
        case O_REDIS:
            if (bench_find_exe(a, o->redis, sizeof o->redis)) {
                fprintf(stderr, "shortstat-bench: --redis-server: %s: not an executable\n", a);
                return 2;
            }
            break;
        case O_HISTORY:
            if (num_u64(nm, a, 1, ENG_HISTORY_MAX, &u))
                return 2;
            o->history = (uint32_t)u;
            break;
        case O_NOPIN:
            o->pin = false;
            break;
        case O_JSON:
            o->json = a;
            break;
        case O_QUIET:
            o->progress = false;
            break;
        case O_QPS:
            if (num_double(nm, a, 0, 1e7, &o->qps))
                return 2;
            break;
        case O_QSECS:
            if (num_double(nm, a, 0, 3600, &o->query_secs))
                return 2;
            break;
        case O_TOPK:
            if (num_u64(nm, a, 1, ENG_TOPK_MAX, &u))
                return 2;
            o->topk = (uint32_t)u;
            break;
        case O_SNAPAT:
            if (num_double(nm, a, 0, 0.95, &dv))
                return 2;
            o->snapshot_at = dv;
            break;
        case O_OUT:
            o->out = a;
            break;
        case O_FOR:
            if (strcmp(a, "redis") == 0)
                o->for_redis = true;
            else if (strcmp(a, "shortstat") == 0)
                o->for_redis = false;
            else {
                fprintf(stderr, "shortstat-bench: --for: '%s' must be shortstat or redis\n", a);
                return 2;
            }
            break;
        case O_SHA:
            o->sha = a;
            break;
        case O_COVER:
            o->wl.cover = true;
            break;
        case O_PRINTLUA:
            o->print_lua = true;
            break;
        case O_QUICK:
            o->quick = true;
            break;
        case O_NOREDIS:
            o->no_redis = true;
            break;
        case O_VSREDIS:
            o->vs_redis = true;
            break;
        case O_SINK:
            o->sink = true;
            break;
        case O_PRELOAD:
            o->preload = true;
            break;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "shortstat-bench %s: unexpected argument '%s'\n", cmd->name, argv[optind]);
        return 2;
    }
    if (o->sink && (o->vs_redis || o->external)) {
        fprintf(stderr, "shortstat-bench %s: --sink cannot be combined with --vs-redis or --port\n",
                cmd->name);
        return 2;
    }
    if (o->preload && (o->sink || o->vs_redis)) {
        fprintf(stderr, "shortstat-bench %s: --preload cannot be combined with --sink or --vs-redis\n",
                cmd->name);
        return 2;
    }
    if (o->host && !o->external) {
        fprintf(stderr, "shortstat-bench %s: --host needs --port\n", cmd->name);
        return 2;
    }
    if (!o->host)
        o->host = "127.0.0.1";
    if (o->external && (cmd->fn == cmd_suite || cmd->fn == cmd_vs_redis || o->vs_redis)) {
        fprintf(stderr, "shortstat-bench %s: --port cannot be used here: it starts and restarts "
                        "its own servers\n", cmd->name);
        return 2;
    }
    if (!o->n_set && cmd->fn == cmd_engine)
        o->wl.n = 1000000;
    if (cmd->fn == cmd_query && o->wl.n == 0) {
        fprintf(stderr, "shortstat-bench query: --n must be at least 1 (the preload)\n");
        return 2;
    }
    if (bench_wl_check(&o->wl, msg, sizeof msg)) {
        fprintf(stderr, "shortstat-bench %s: --%s\n", cmd->name, msg);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr, NULL);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout, NULL);
        return 0;
    }
    const struct command *cmd = NULL;
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            cmd = &commands[i];
    if (!cmd) {
        fprintf(stderr, "shortstat-bench: unknown command '%s'\n", argv[1]);
        usage(stderr, NULL);
        return 2;
    }
    static struct ctx X;
    struct opts *o = &X.o;
    bench_wl_defaults(&o->wl);
    o->conns = 4;
    o->pipeline = 256;
    o->framing = BENCH_RESP;
    o->history = ENG_HISTORY_DEFAULT;
    o->pin = true;
    o->progress = true;
    o->topk = 100;
    o->snapshot_at = 0.05;
    o->qps = 200;
    bench_find_exe("redis-server", o->redis, sizeof o->redis);
    default_server(o->server, sizeof o->server);
    int prc = parse(argc - 1, argv + 1, cmd, o);
    if (prc == 1)
        return 0;   /* --help */
    if (prc)
        return prc;
    if (cmd->fn == cmd_gen)
        return cmd_gen(&X);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    X.R.root = json_object();
    bool needs_server = cmd->fn != cmd_engine;
    bench_cpus_pick(&X.cpus, o->pin && needs_server && !o->external);
    if (X.cpus.self >= 0 && bench_pin_self(X.cpus.self) != 0)
        X.cpus.self = X.cpus.server = -1;
    bool needs_redis = (cmd->fn == cmd_suite && !o->no_redis) || cmd->fn == cmd_vs_redis ||
                       o->vs_redis;
    if (needs_redis && access(o->redis, X_OK) != 0) {
        fprintf(stderr, "shortstat-bench: %s: not found (apt-get install redis-server, pass "
                        "--redis-server, or --no-redis)\n", o->redis);
        return 1;
    }
    if (needs_server && !o->external && access(o->server, X_OK) != 0) {
        fprintf(stderr, "shortstat-bench: %s: %s (build it with make, or pass --server)\n",
                o->server, strerror(errno));
        return 1;
    }
    int rc = cmd->fn(&X);
    json_decref(X.R.root);
    free(X.R.rows);
    return rc;
}
