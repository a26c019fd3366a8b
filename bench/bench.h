/* SPDX-License-Identifier: MIT */
/*
 * bench.h -- shortstat-bench's internal modules, shared by its files.
 *
 *   wl.c        the workload: seeded PRNG, generator, command encoders
 *   hist.c      log-bucketed latency histogram
 *   client.c    the load client: one epoll loop, many pipelined connections
 *   proc.c      servers as child processes: spawn, pin, wait for PING, stop
 *   engbench.c  the engine alone, in-process
 *   machine.c   the memory system's ceilings: page faults, fork, cache misses
 *   redis.c     the same workload applied to redis-server by EVALSHA
 *   main.c      subcommands, the suite, the table and the JSON
 *
 * wl.c and hist.c are pure (no I/O but the generator's optional FILE in
 * bench_gen_write) so tests/test_bench.c can compile them in directly.
 * Errors follow the house rule: 0 ok, negative enum bench_rc, and a message
 * buffer naming what was wrong.
 */
#ifndef SHORTSTAT_BENCH_H
#define SHORTSTAT_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "engine/eng.h"

enum bench_rc {
    BENCH_OK = 0,
    BENCH_EINVAL = -1,   /* bad option or argument */
    BENCH_ENOMEM = -2,
    BENCH_EIO = -3,      /* socket, file or process failure */
    BENCH_ESERVER = -4,  /* the server answered an error or went away */
    BENCH_ETIMEOUT = -5,
};

#define BENCH_ERR_MAX 256u

/* ---- PRNG (wl.c) ------------------------------------------------------------
 * xoshiro256** seeded through splitmix64: fast, and the same stream on every
 * machine, so a seed names a workload. */
struct bench_rng {
    uint64_t s[4];
};
uint64_t bench_mix64(uint64_t x);                        /* splitmix64 finaliser */
void bench_rng_seed(struct bench_rng *r, uint64_t seed);
uint64_t bench_rng_next(struct bench_rng *r);
uint64_t bench_rng_below(struct bench_rng *r, uint64_t n); /* [0, n), n >= 1 */
double bench_rng_unit(struct bench_rng *r);               /* [0, 1) */

/* ---- workload (wl.c) -------------------------------------------------------- */

enum bench_framing { BENCH_INLINE = 0, BENCH_RESP = 1 };
enum bench_sid_fmt { BENCH_SID_GUEST = 0, BENCH_SID_SHORT = 1 };

#define BENCH_SID_MAX 40u      /* "g-" + 32 hex + NUL fits */
#define BENCH_CMD_MAX 512u     /* longest encoded command of any kind */
#define BENCH_NPLATFORMS 6u

struct bench_wl_cfg {
    uint64_t seed;
    uint64_t n;                     /* interactions */
    uint32_t shorts;                /* ids 1..shorts */
    uint32_t sessions;
    uint32_t users;
    double signed_in;               /* share of sessions that carry a user, 0..1 */
    uint32_t mix[ENG_T_COUNT];      /* relative weights by enum eng_type */
    double zipf;                    /* 0 = uniform popularity, else Zipf exponent */
    uint32_t watch_max;             /* watch_ms uniform 0..watch_max on views */
    enum bench_sid_fmt sid_fmt;
    int64_t ts_base;                /* Redis history records carry ts_base + i */
    bool cover;                     /* first min(n, shorts) interactions: an impression
                                       of each short in id order, so every short exists */
};

/* One generated interaction, 20 bytes; strings are derived on encoding. */
struct bench_ix {
    uint32_t short_id;
    uint32_t session;               /* 0..sessions-1 */
    uint32_t user;                  /* 0 = guest */
    uint32_t watch_ms;              /* views only */
    uint8_t type;                   /* enum eng_type */
    uint8_t platform;               /* shares only; index into the platform set */
};

struct bench_wl {
    struct bench_wl_cfg cfg;
    struct bench_ix *ix;
    size_t n;
};

void bench_wl_defaults(struct bench_wl_cfg *c);
/* Checks every field; msg names the bad one. */
int bench_wl_check(const struct bench_wl_cfg *c, char *msg, size_t msglen);
/* "impression=50,view=30": the listed types get these weights, all others 0. */
int bench_mix_parse(const char *s, uint32_t mix[ENG_T_COUNT], char *msg, size_t msglen);
int bench_wl_generate(const struct bench_wl_cfg *c, struct bench_wl *out, char *msg, size_t msglen);
void bench_wl_free(struct bench_wl *w);

/* Session s's name ("g-" + 32 hex, or "s<decimal>"), NUL-terminated; length returned. */
size_t bench_session_name(const struct bench_wl_cfg *c, uint32_t s, char out[BENCH_SID_MAX]);
/* The user session s belongs to, 0 for a guest session. */
uint32_t bench_session_user(const struct bench_wl_cfg *c, uint32_t s);
const char *bench_platform_name(unsigned p);

/* Encoders write one command into out (BENCH_CMD_MAX bytes) and return its length. */
size_t bench_enc_track(const struct bench_wl_cfg *c, const struct bench_ix *ix,
                       enum bench_framing f, uint8_t *out);
/* EVALSHA of bench_lua_script() recording ix the way a Redis user would;
 * seq is the interaction's index (its ts is ts_base + seq). */
size_t bench_enc_eval(const struct bench_wl_cfg *c, const struct bench_ix *ix, uint64_t seq,
                      const char sha[41], uint32_t history, uint8_t *out);
const char *bench_lua_script(void);

/* A pre-encoded command stream: command i is buf[off[i] .. off[i+1]). */
struct bench_stream {
    uint8_t *buf;
    size_t len;
    uint64_t *off;   /* n + 1 entries */
    size_t n;
};
enum bench_stream_kind { BENCH_S_TRACK, BENCH_S_EVAL };
int bench_stream_build(const struct bench_wl *w, enum bench_stream_kind k, enum bench_framing f,
                       const char *sha, uint32_t history, struct bench_stream *s,
                       char *msg, size_t msglen);
void bench_stream_free(struct bench_stream *s);

/* ---- histogram (hist.c) ----------------------------------------------------
 * Log-linear buckets like HdrHistogram: exact below 64, then 32 buckets per
 * power of two (relative error <= 1/32). Values are nanoseconds. */
#define BENCH_HIST_SUBBITS 6u
#define BENCH_HIST_BUCKETS ((64u - BENCH_HIST_SUBBITS + 2u) << (BENCH_HIST_SUBBITS - 1u))

struct bench_hist {
    uint64_t count, min, max;
    double sum;
    uint64_t b[BENCH_HIST_BUCKETS];
};
void bench_hist_reset(struct bench_hist *h);
unsigned bench_hist_index(uint64_t v);
uint64_t bench_hist_bucket_high(unsigned idx);  /* largest value in bucket idx */
void bench_hist_add(struct bench_hist *h, uint64_t v, uint64_t n);
/* Replies, arrived at time now (s), to commands from..upto-1 of a
 * connection paced at rate per second from t0: each is charged from its
 * own due time, t0 + j / rate (a write after a stall carries commands that
 * fell due over a span), never below 0. */
void bench_hist_add_paced(struct bench_hist *h, double now, double t0, double rate,
                          uint64_t from, uint64_t upto);
void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src);
/* Value at quantile q in [0,1]: the high end of its bucket, clamped to max. */
uint64_t bench_hist_quantile(const struct bench_hist *h, double q);
double bench_hist_mean(const struct bench_hist *h);
/* The median of v[0..n) (sorts v; the mean of the middle two when n is even). */
double bench_median(double *v, size_t n);

/* Restarts timed per server: one start after loading a snapshot is one draw
 * from a spread of tens of percent here, so the figure is their median. */
#define BENCH_RESTARTS 3u

/* ---- RESP replies (client.c) ------------------------------------------------ */

/* Length of the complete reply at p, 0 when more bytes are needed, -1 when
 * malformed. */
ptrdiff_t bench_resp_skip(const uint8_t *p, const uint8_t *end);
/* "key:value" in an INFO text; 0 ok, -1 absent or not a number. */
int bench_info_u64(const char *info, const char *key, uint64_t *out);
int bench_info_str(const char *info, const char *key, char *out, size_t outlen);

/* A blocking connection for control traffic (PING, INFO, SCRIPT LOAD). */
struct bench_ctl {
    int fd;
    uint8_t *rbuf;
    size_t rlen, rcap;
};
int bench_ctl_open(struct bench_ctl *c, const char *host, uint16_t port, int timeout_ms);
void bench_ctl_close(struct bench_ctl *c);
/* Send argv as RESP, wait for one reply; *reply (malloc'd, NUL-terminated) is
 * the payload of a simple/bulk/error reply, or the raw text for others. Error
 * replies return BENCH_ESERVER with the reply in *reply. */
int bench_ctl_cmd(struct bench_ctl *c, int argc, const char *const argv[], int timeout_ms,
                  char **reply);

/* ---- the load client (client.c) --------------------------------------------- */

enum bench_query { BENCH_Q_STATS = 0, BENCH_Q_TOP, BENCH_Q_HISTORY, BENCH_Q_COUNT };

struct bench_run_cfg {
    const char *host;
    uint16_t port;
    const char *label;               /* progress line prefix */
    bool progress;
    double timeout_s;                /* abort the run after this long; 0 = 600 */

    /* pipelined traffic: stream split in conns contiguous slices */
    const struct bench_stream *stream;
    uint32_t conns;
    uint32_t pipeline;               /* commands in flight per connection */
    double rate;                     /* commands/s over all connections; 0 = flat out */
    bool cycle;                      /* repeat the stream until the snapshot probe ends */

    /* queries under ingestion: one connection per kind, one query in flight */
    bool queries;
    unsigned qmask;                  /* bit per enum bench_query; 0 = all kinds */
    double qps;                      /* per kind, Poisson arrivals; 0 = back to back */
    double query_secs;               /* when there is no stream: how long */
    const struct bench_wl *qwl;      /* sessions, users and shorts to ask about */
    uint32_t topk;

    /* snapshot probe: SNAPSHOT once this share of the stream is answered,
     * then INFO persistence until it finished */
    bool snapshot;
    double snapshot_at;
};

struct bench_gap {
    double start_s, end_s;          /* since the run started */
};

struct bench_run_res {
    uint64_t sent, replies, errors;
    char first_error[160];
    double secs;                     /* first send to last reply */
    double rate;                     /* replies/s */
    struct bench_hist lat;           /* per command, ns */
    double max_gap_ms;               /* longest silence with commands in flight */
    struct bench_gap *gaps;          /* silences over 1 ms, malloc'd */
    size_t ngaps;

    uint64_t q_n[BENCH_Q_COUNT], q_err[BENCH_Q_COUNT];
    struct bench_hist q_lat[BENCH_Q_COUNT];
    double q_secs;

    bool snap_done;
    char snap_error[160];
    double snap_start_s, snap_end_s; /* command sent / probe saw it finished */
    double snap_stall_ms;            /* longest silence within that window */
    double snap_rate;                /* replies/s during the window */
    double snap_rate_before;         /* replies/s of the same run before it */
    uint64_t snap_duration_ms, snap_bytes, snap_raw_bytes, snap_fork_usec;
    bool snap_have_fork_usec;
};

int bench_run(const struct bench_run_cfg *cfg, struct bench_run_res *res, char *msg,
              size_t msglen);
void bench_run_res_free(struct bench_run_res *res);
double bench_now(void);  /* CLOCK_MONOTONIC seconds */

/* ---- processes (proc.c) ----------------------------------------------------- */

struct bench_cpus {
    int n;            /* CPUs this process may use */
    int server, self; /* -1 when not pinning */
};
void bench_cpus_pick(struct bench_cpus *c, bool pin);
int bench_pin_self(int cpu);

int bench_free_port(uint16_t *port, char *msg, size_t msglen);
int bench_tmpdir(const char *tag, char out[256], char *msg, size_t msglen);
void bench_rmtree(const char *dir);
/* Remove every temp dir still alive (on SIGINT/SIGTERM). */
void bench_cleanup_all(void);
/* name, or its first match in $PATH; -1 when not executable / not found. */
int bench_find_exe(const char *name, char *out, size_t outlen);

struct bench_proc {
    pid_t pid;
    uint16_t port;
    char log[300];
    double start_s;                  /* bench_now() at fork */
};
/* fork + exec argv (argv[0] is a path), stdout/stderr to logpath, pinned to
 * cpu when >= 0, killed if the bench dies. */
int bench_spawn(const char *const argv[], int cpu, const char *logpath, struct bench_proc *p,
                char *msg, size_t msglen);
/* Poll PING until +PONG; *ready_s = seconds since spawn. Fails early if the
 * child exits (and quotes the log's tail). */
int bench_wait_ready(struct bench_proc *p, const char *host, double timeout_s, double *ready_s,
                     char *msg, size_t msglen);
/* Signal, wait up to timeout_s, then SIGKILL. */
int bench_stop(struct bench_proc *p, int sig, double timeout_s);
uint64_t bench_rss(pid_t pid);       /* VmRSS bytes, 0 when unknown */
uint64_t bench_rss_self(void);
void bench_log_tail(const char *path, char *out, size_t outlen);

/* A null server (sink.c) in a forked child on a free port: +OK to every
 * command. p->port is where it listens; stop it with bench_stop. */
int bench_sink_start(int cpu, struct bench_proc *p, char *msg, size_t msglen);

/* ---- the engine alone (engbench.c) ------------------------------------------ */

struct bench_eng_res {
    uint64_t n;
    double secs, rate;               /* eng_record one by one */
    double secs_pf, rate_pf;         /* eng_prefetch a window ahead, then eng_record */
    double secs_batch, rate_batch;   /* eng_record_batch, 256 a call (the server's API) */
    double secs_replay, rate_replay; /* the same batches again over that state: no new entities */
    struct eng_info info;            /* after the prefetch run */
    uint64_t rss_delta;              /* process RSS growth over the load */
    uint64_t rejected;
};
int bench_engine_ingest(const struct bench_wl *w, uint32_t history, struct bench_eng_res *r,
                        char *msg, size_t msglen);

struct bench_top_res {
    uint32_t shorts;
    uint32_t k;
    double first_ms;                 /* first TOP after the load (refreshes every short) */
    double cold_ms_max;              /* first TOP by each other metric, worst */
    double steady_ms_max;            /* repeated TOPs, every metric, nothing changed: worst */
    double steady_ms_mean;
    double cold_ms_by_metric[ENG_M_COUNT];
    double steady_ms_by_metric[ENG_M_COUNT];   /* worst of 4 repeats, per enum eng_metric */
    double dirty_ms_max;             /* worst TOP after each of `touch` new interactions */
    uint32_t touch;
};
int bench_engine_top(const struct bench_wl *w, uint32_t k, struct bench_top_res *r,
                     char *msg, size_t msglen);

/* Memory by difference: RSS and engine accounting before and after adding
 * interactions that grow one thing at a time. */
struct bench_mem_res {
    uint64_t base_rss, base_mem_total;
    struct eng_info base;
    double rss_per_short, acct_per_short;
    double rss_per_record, acct_per_record;
    double rss_per_pair, acct_per_pair;
    uint64_t d_shorts, d_records, d_pairs;
};
int bench_engine_memory(const struct bench_wl *w, uint32_t history, struct bench_mem_res *r,
                        char *msg, size_t msglen);

/* ---- Redis side by side (redis.c) ------------------------------------------- */

struct bench_redis_cfg {
    const char *path;                /* redis-server */
    int cpu;                         /* -1 = not pinned */
    uint32_t history, conns, pipeline;
    bool progress;
};
struct bench_redis_res {
    char version[32];
    struct bench_run_res run;        /* EVALSHA throughput and latency */
    uint64_t stream_bytes;
    uint64_t used_memory, rss_info, rss;
    uint64_t keys, keys_after_load;
    double bgsave_ms;
    uint64_t rdb_bytes, fork_usec;
    double empty_ready_s, load_ready_s;  /* load_ready_s: median of the restarts */
    double load_ready_all_s[BENCH_RESTARTS];
};
int bench_redis_full(const struct bench_redis_cfg *cfg, const struct bench_wl *w,
                     struct bench_redis_res *r, char *msg, size_t msglen);

/* ---- the machine's ceilings (machine.c) -------------------------------------- */

struct bench_machine_res {
    size_t mb;               /* buffer size used */
    double fault_4k_us;      /* first touch of a fresh 4 KiB page */
    double fault_thp_us;     /* the same under MADV_HUGEPAGE, per 4 KiB */
    double fork_4k_ms;       /* fork() pause holding mb MiB of 4 KiB pages */
    double fork_thp_ms;      /* ... of MADV_HUGEPAGE memory */
    double miss_ns;          /* one dependent random miss */
    double lines_per_s;      /* independent random misses, best_k chases overlapped */
    unsigned best_k;
};
int bench_machine(size_t mb, uint64_t seed, struct bench_machine_res *r, char *msg, size_t msglen);

#endif
