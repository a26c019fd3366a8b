/* SPDX-License-Identifier: MIT */
/*
 * server.h -- shortstatd's one server and its connections (net-internal).
 *
 * One struct server per process owns the libev loop, the listener, the
 * configuration, the engine, the counters INFO shows and the snapshot status
 * (STYLE.md section 6). server.c does sockets, the loop, signals and
 * snapshots; cmd.c turns a connection's input into replies. Nothing here is
 * thread-safe: one thread runs everything.
 */
#ifndef SHORTSTAT_NET_SERVER_H
#define SHORTSTAT_NET_SERVER_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "engine/eng.h"
#include "net/buf.h"
#include "net/config.h"
#include "net/http.h"
#include "net/proto.h"
#include "net/slowlog.h"

/* Connection states; keep conn_state_names[] in server.c in sync. */
enum conn_state {
    CONN_ACTIVE = 0,  /* reading commands and replying */
    CONN_DRAINING,    /* no more input (QUIT, EOF, fatal error, shutdown): write replies, close */
    CONN_CLOSING,     /* close now, dropping unsent replies (limit, I/O error, no memory) */
    CONN_LINGERING,   /* replies out, write side shut, input discarded until EOF or timeout:
                         closing with unread input would make the kernel send a reset that
                         can destroy the error reply before the peer reads it */
    CONN_STATE_COUNT
};
const char *net_conn_state_name(enum conn_state st);

enum net_qkind { NET_Q_TRACK = 1, NET_Q_BOOST = 2, NET_Q_CMD = 3 };
struct subcommand;  /* cmd.c's */

/* A command queued by MULTI. Strings live in the connection's arena at the
 * recorded offsets (the arena may move while the queue grows); SIZE_MAX
 * marks an absent string. */
struct net_qitem {
    uint8_t kind;                /* enum net_qkind */
    struct eng_ix ix;            /* TRACK; string pointers rebuilt at EXEC */
    size_t off_session, off_platform, off_ip, off_ua;
    uint64_t boost_id;           /* BOOST */
    int64_t boost;
    uint32_t cmd, argc;          /* any other command: its table index; its arguments */
    size_t off_args;             /* are argc records of u32 length + bytes in the arena */
    const struct subcommand *sub;  /* and the subcommand found when it was queued, or NULL */
};

struct net_multi {
    bool active;                 /* between MULTI and EXEC/DISCARD */
    bool dirty;                  /* a queued command was refused: EXEC aborts */
    struct net_qitem *items;
    size_t n, cap;
    struct net_buf arena;        /* copies of queued strings */
    struct eng_ix *ixs;          /* EXEC's batch, reused */
    size_t ixs_cap;
};

#define NET_CLIENT_STR_MAX 128   /* CLIENT SETNAME / SETINFO values, bytes */

/* A connection's place on one of the server's work lists (server.c). */
struct conn_link {
    struct conn *prev, *next;
    bool on;
};
struct conn_list {
    struct conn *head, *tail;
    uint32_t n;
};

struct conn {
    ev_io rio, wio;              /* rio.data = wio.data = this */
    struct server *srv;
    struct conn *prev, *next;    /* server->conns */
    struct conn_link wl;         /* server->pending: replies waiting for the flush */
    struct conn_link pl;         /* server->parked: input left over when its turn ended */
    int fd;
    enum conn_state state;
    bool authed;                 /* AUTH passed, or no password when it connected */
    uint8_t resp;                /* protocol version the client asked for: 2, or 3 after HELLO 3 */
    bool peer_eof;               /* the peer shut its write side: nothing left to linger for */
    uint32_t read_size;          /* next read's size; doubles while reads fill it */
    double last_active;          /* ev_now of the last read */
    uint64_t id;
    struct net_buf in, out;
    struct net_multi multi;
    char addr[64];               /* "ip:port" for logs */
    char laddr[64];              /* the server's end, "" until net_conn_laddr reads it */
    double created;              /* ev_now at accept */
    const char *last_cmd;        /* name of the last command dispatched ("" before one) */
    char name[NET_CLIENT_STR_MAX + 1];      /* CLIENT SETNAME; "" = none */
    char lib_name[NET_CLIENT_STR_MAX + 1];  /* CLIENT SETINFO LIB-NAME / LIB-VER */
    char lib_ver[NET_CLIENT_STR_MAX + 1];
    bool is_http;                /* accepted on --http-port: bytes go to http */
    struct http_conn http;
};

/* At most one log line per second for events a client can repeat at will
 * (refused connections, wrong passwords); the rest are counted. */
struct net_ratelimit {
    double last;          /* ev_now of the last line */
    uint64_t suppressed;  /* events since then not logged */
};
/* True when a line may be logged now; *suppressed then says how many were not. */
bool net_ratelimit_ok(struct net_ratelimit *rl, double now, uint64_t *suppressed);

struct net_counters {
    uint64_t commands, errors, protocol_errors, auth_failures, cross_protocol_closed;
    uint64_t connections_received, rejected_connections;
    uint64_t output_limit_disconnects, query_limit_disconnects;
    uint64_t net_input_bytes, net_output_bytes;
    uint64_t mid_input_writes;   /* replies written before a long input was all run */
    uint64_t oom_refused;        /* writes refused over --maxmemory, both ports */
};

/* INFO commandstats, per command and per subcommand (cmd.c numbers them):
 * calls ran (failed ones too), their run time, calls refused before they
 * ran (arity, NOAUTH, MULTI's rules, --maxmemory) and calls that ran and
 * answered an error. Redis's four figures. */
struct net_cmdstat {
    uint64_t calls, nsec, rejected, failed;
};
#define NET_CMDSTAT_SLOTS 64u

/* INFO errorstats: error replies by their first word (ERR, OOM, NOAUTH ...). */
#define NET_ERRSTAT_MAX 32u
#define NET_ERRCODE_MAX 32u
struct net_errstat {
    char code[NET_ERRCODE_MAX + 1];
    uint64_t count;
};

/* The command run_command is running (nested: EXEC runs queued ones):
 * what its replies did, for its commandstat. Outside one it is written
 * and never read. */
struct net_cur_cmd {
    bool failed;                 /* it answered an error */
    bool rejected;               /* refused over --maxmemory before it ran */
};

enum net_snap_status { NET_SNAP_NONE = 0, NET_SNAP_OK, NET_SNAP_ERR };

struct net_snapshot {
    bool in_progress;
    bool scheduled;              /* BGSAVE SCHEDULE: cron starts one once none runs */
    pid_t child;
    int pipe_fd;                 /* the child's report */
    int64_t started_ms;
    uint64_t dirty_at_start;
    enum net_snap_status last_status;
    int64_t last_unix;           /* when the last snapshot finished */
    uint64_t last_duration_ms, last_bytes, last_raw_bytes;
    uint64_t last_fork_usec, max_fork_usec;
    uint64_t total, failed;
    char last_error[256];
    /* the snapshot loaded at start */
    bool loaded;
    int64_t loaded_created_ms;
    uint64_t load_ms;
};

/* TRACKs parsed before applying them as one batch: long enough that most
 * of a batch runs with its prefetch pipeline full (the pipeline looks up
 * to 24 elements ahead), short enough that the plans stay in L1/L2. */
#define NET_BATCH 128u
/* The run while a snapshot child lives: every page the parent writes then
 * costs a copy-on-write fault, a run of 128 took long enough to be the
 * longest pause clients saw, and replies leave only between runs. */
#define NET_BATCH_COW 32u
/* While a long input runs, replies made so far are written once this long
 * has passed since the last write (checked once per batch of TRACKs): a
 * slow stretch (copy-on-write faults during a snapshot, a cold cache) then
 * delays replies by about this much, not by the whole input. */
#define NET_FLUSH_USEC 1000u
/* One connection's turn: input run for longer than this is parked and
 * resumed on the loop's next iteration, after every other ready client.
 * 2 ms turns lengthened the longest silence during a snapshot's
 * copy-on-write storm (medians of 5-8 runs: 21.8 against 17.1 ms); 10 ms
 * turns measure as before, and a PING behind a megabyte of TOPs from
 * another client waits 10 ms at the median instead of 7 s. */
#define NET_TURN_USEC 10000u
#define NET_SCRATCH (4u * PROTO_SCRATCH_MIN)

struct server {
    struct ev_loop *loop;
    struct net_config cfg;
    struct eng *eng;
    struct net_prefault *prefault;     /* NULL: --prefault no, or in a snapshot child */

    int lock_fd;                       /* holds --dir's lock (snap_lock_dir), -1 before */
    int lfd;
    uint32_t port;                     /* bound port (cfg.port may be 0) */
    ev_io accept_w;
    int hfd;                           /* --http-port listener, -1 when off */
    ev_io haccept_w;
    struct http_stats http_stats;
    struct http_env http_env;
    ev_timer accept_pause_w;           /* out of fds: retry accept later */
    ev_signal sigint_w, sigterm_w;
    ev_prepare flush_w;                /* before the loop sleeps: parked input, then replies */
    ev_idle spin_w;                    /* active while connections are parked: no sleeping */
    ev_timer cron_w;                   /* engine housekeeping, idle buffers */
    ev_timer snap_w;                   /* --snapshot-interval */
    ev_child child_w;                  /* the snapshot child */
    ev_timer deadline_w;               /* shutdown: give up flushing */

    struct conn *conns;
    struct conn_list pending, parked;
    uint32_t nconns;
    uint64_t next_conn_id;
    double start_time;
    uint64_t dirty;                    /* changes since the last good snapshot */
    bool shutting_down;
    bool final_done;                   /* SHUTDOWN settled the final snapshot */
    int exit_code;                     /* what net_server_run returns, if nothing fails later */
    struct net_counters st;
    struct net_snapshot snap;
    struct net_ratelimit refuse_rl, auth_rl, xproto_rl, accept_rl;
    struct net_cmdstat cmdstat[NET_CMDSTAT_SLOTS];
    struct http_cmd_metric metric_cmds[NET_CMDSTAT_SLOTS];  /* /metrics' view of the two */
    struct http_err_metric metric_errs[NET_ERRSTAT_MAX];
    struct net_errstat errstat[NET_ERRSTAT_MAX];
    uint32_t nerrstat;
    struct net_cur_cmd cur;
    struct net_slowlog slowlog;
    uint64_t client_mem;               /* clients' buffers, summed at the last cron tick */
    bool mem_logged_over;              /* the log last said: over --maxmemory */

    /* Hot-path scratch, reused by every command. */
    struct proto_cmd cmd;
    struct proto_cmd qcmd;             /* EXEC: a queued command, rebuilt from its arena */
    uint8_t *scratch;                  /* NET_SCRATCH bytes: unescaped inline tokens */
    size_t scratch_used;
    struct eng_ix batch[NET_BATCH];
    size_t nbatch;
    struct proto_arg batch_argv[NET_SLOWLOG_ARGC];      /* the batch's first TRACK, */
    size_t batch_argc;                                  /* for SLOWLOG (its argc in full) */
    struct net_buf tmp;                /* INFO text */
    struct eng_history_rec *hist;      /* cfg.history records */
    struct eng_top_item top[ENG_TOPK_MAX];
};

/* server.c */
/* s zeroed first; net_server_destroy follows either way. */
int net_server_init(struct server *s, const struct net_config *cfg);
/* Runs until SIGINT/SIGTERM; returns the process exit code. */
int net_server_run(struct server *s);
void net_server_destroy(struct server *s);
/* Stop accepting and reading; the loop ends once every reply is written
 * (or after a deadline), and net_server_run makes the final snapshot. */
void net_shutdown_begin(struct server *s, const char *why);
/* Kills a running snapshot child, if any, and removes its temp file. */
void net_snapshot_stop(struct server *s, const char *why);
/* Stops a running snapshot child, then saves in the foreground when
 * anything changed since the last good snapshot (or always): 0, or -1
 * (logged) when the save failed. */
int net_final_snapshot(struct server *s, bool always);
/* Fork a snapshot child; -1 with err when one runs already, or when it
 * could not start (pipe or fork failed: logged, and counted as a failed
 * snapshot in INFO). */
int net_snapshot_start(struct server *s, char *err, size_t errcap);
int64_t net_now_ms(const struct server *s);

uint64_t net_mono_usec(void);
uint64_t net_mono_nsec(void);
/* While cmd.c runs c's input: write what the socket takes now, never
 * blocking and never freeing c (an I/O error makes it CONN_CLOSING). */
void net_conn_write_now(struct server *s, struct conn *c);
/* Over --client-output-limit: writes what the socket takes now, so a client
 * that reads is not cut off; one still over does not read, and is counted,
 * logged and set CONN_CLOSING. Both ports' connections go through it. */
void net_conn_limit_output(struct server *s, struct conn *c);
/* The server's own address of c's socket, "ip:port" (CLIENT LIST laddr):
 * read once, on first use, as it never changes. */
const char *net_conn_laddr(struct conn *c);
/* Drops c's unsent replies and closes it: another connection (CLIENT KILL)
 * in the flush before the loop sleeps; the one whose input is being run
 * (a cross-protocol request) when net_conn_process returns, as its read
 * callback sees it closing. */
void net_conn_kill(struct server *s, struct conn *c);
/* Line-protocol clients connected now (INFO's and /metrics'
 * connected_clients, the clients CLIENT LIST may show): the HTTP port's
 * connections count toward --maxclients only. */
uint32_t net_line_clients(const struct server *s);
/* Bytes a queued MULTI holds (CLIENT LIST's multi-mem). */
uint64_t net_multi_memory(const struct net_multi *m);
/* Bytes one connection holds: itself, its buffers, a queued MULTI, an HTTP
 * request's scratch (CLIENT LIST's tot-mem; summed into used memory). */
uint64_t net_conn_memory(const struct conn *c);
/* Used memory, as INFO, /metrics and --maxmemory all give it: the engine's
 * memory, exact, plus the clients' buffers as the last cron tick summed
 * them (a sum over every client is too dear for each write, and buffers
 * change little in 100 ms). */
uint64_t net_used_memory(const struct server *s);
static inline bool net_over_maxmemory(const struct server *s)
{
    return s->cfg.maxmemory && net_used_memory(s) > s->cfg.maxmemory;
}
/* The gate of every write, both ports: true when over --maxmemory, with the
 * n writes counted as refused (INFO oom_refused). */
bool net_refuse_writes(struct server *s, uint64_t n);
/* CONFIG SET, first: whether the server can run with next (a copy of
 * s->cfg changed only in settings net_config_set_live accepts): 0, having
 * raised the open file limit a larger maxclients needs, or -1 with err. */
int net_server_config_ok(struct server *s, const struct net_config *next, char *err,
                         size_t errcap);
/* Then: makes next the running configuration and applies it: log level,
 * the snapshot timer, the --maxmemory state. */
void net_server_reconfigure(struct server *s, const struct net_config *next);
/* The process's resident set size, from /proc (0 when unreadable). */
uint64_t net_rss_bytes(void);

/* cmd.c: run the complete commands in c->in, appending replies to c->out,
 * for one turn (NET_TURN_USEC): true when the turn ended with input left,
 * for the server to park c until the next iteration of its loop. */
bool net_conn_process(struct server *s, struct conn *c);
void net_multi_free(struct net_multi *m);
/* cmd.c: the commandstats of the commands used (INFO's lines) into out,
 * at most cap; how many. Names point into the command table. */
size_t net_cmdstat_rows(const struct server *s, struct http_cmd_metric *out, size_t cap);

#endif
