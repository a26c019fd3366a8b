/* SPDX-License-Identifier: MIT */
/*
 * config.h -- shortstatd's settings: defaults, config file, command line.
 *
 * Precedence: built-in defaults < config file (--config FILE, one "key value"
 * a line) < command-line flags. Keys are the flag names without "--".
 */
#ifndef SHORTSTAT_NET_CONFIG_H
#define SHORTSTAT_NET_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NET_VERSION "0.1.0"

#define NET_DEFAULT_PORT       7878
#define NET_DEFAULT_HTTP_PORT  7879
#define NET_DEFAULT_MAXCLIENTS 10000u
#define NET_DEFAULT_QBUF_LIMIT (256ull << 20)
#define NET_DEFAULT_OUT_LIMIT  (64ull << 20)
#define NET_DEFAULT_SLOWLOG_US 10000   /* Redis's default: 10 ms */
#define NET_DEFAULT_SLOWLOG_LEN 128u
#define NET_PASS_MAX 512u
#define NET_PATH_MAX 1024u
#define NET_CPUS_MAX 1024u       /* --snapshot-cpulist: CPU numbers 0..NET_CPUS_MAX-1 */
/* Room for any setting's value as text: the longest is a cpulist naming
 * every other CPU ("0,2,...,1022"), under 5 bytes a CPU. */
#define NET_CONFIG_VALUE_MAX (NET_CPUS_MAX * 5 + 1)
/* A config file line holds at most NET_CONFIG_LINE_MAX - 2 bytes before its
 * newline (room for the longest key, a space and the longest value quoted);
 * net_config_load_file refuses a longer one as "line too long". */
#define NET_CONFIG_LINE_MAX (64 + NET_CONFIG_VALUE_MAX + 8)

struct net_config {
    char bind[256];
    uint32_t port;               /* 0: the kernel picks one (logged, in INFO) */
    uint32_t http_port;          /* HTTP/JSON + /metrics (net/http.c); 0 = off */
    bool trust_proxy;            /* HTTP: client address from X-Forwarded-For */
    char http_cors_origin[256];  /* HTTP: Access-Control-Allow-Origin; "" = no CORS */
    bool prefault;               /* fault fresh engine memory in on a background thread */
    char dir[NET_PATH_MAX];
    uint32_t history;
    int64_t session_ttl_s;
    uint32_t snapshot_interval_s;  /* 0 = no periodic snapshots */
    uint32_t maxclients;
    char requirepass[NET_PASS_MAX + 1];   /* "" = no password: clients start authenticated */
    char config_file[NET_PATH_MAX];  /* "" when none */
    int loglevel;                /* enum net_log_level */
    uint64_t query_buffer_limit;   /* bytes of unparsed input per client */
    uint64_t client_output_limit;  /* bytes of unsent replies per client */
    uint64_t maxmemory;          /* writes refused while used memory is over it; 0 = no limit */
    int64_t slowlog_slower_us;   /* SLOWLOG keeps commands that ran this long; < 0 = none */
    uint32_t slowlog_max_len;    /* entries SLOWLOG keeps */
    uint64_t snapshot_cpus[NET_CPUS_MAX / 64];  /* a bit per CPU; none set = not pinned */
};

enum net_cfg_rc {
    NET_CFG_OK = 0,
    NET_CFG_HELP = 1,      /* --help: print net_config_usage, exit 0 */
    NET_CFG_VERSION = 2,   /* --version: print NET_VERSION, exit 0 */
    NET_CFG_EINVAL = -1,   /* err holds "<flag or file:line>: <reason>" */
    NET_CFG_EIO = -2,      /* CONFIG REWRITE: err holds the file and the system's reason */
};

void net_config_defaults(struct net_config *c);
/* Defaults, then the config file named by --config, then the flags. */
int net_config_parse(struct net_config *c, int argc, char *const argv[], char *err, size_t errcap);
/* One setting by key ("port", "session-ttl"; '_' works for '-'). */
int net_config_set(struct net_config *c, const char *key, const char *val, char *err,
                   size_t errcap);
/* The same, for a running server (CONFIG SET): only the settings the table
 * in config.c marks live; any other is refused with its name. */
int net_config_set_live(struct net_config *c, const char *key, const char *val, char *err,
                        size_t errcap);
/* Reads "key value" lines; '#' starts a comment line. */
int net_config_load_file(struct net_config *c, const char *path, char *err, size_t errcap);
const char *net_config_usage(void);
/* The settings, in the order --help lists them: key i ("port"), NULL past
 * the last, and its value as text the flag takes back ("0-3,6", "yes",
 * "268435456"); an unset snapshot-cpulist is "any", an unset requirepass
 * "". NET_CONFIG_VALUE_MAX always fits; a smaller cap cuts the value short
 * (a cpulist then ends "..."). */
const char *net_config_key(size_t i);
/* Whether key (any case; '_' for '-') names a setting whose value is a
 * secret (requirepass): logs, the slow log and CONFIG SET's log line show
 * it redacted. */
bool net_config_secret(const char *key);
void net_config_value(const struct net_config *c, size_t i, char *out, size_t cap);

/* CONFIG REWRITE, as Redis's: the text of config file old (oldlen bytes,
 * need not end in a newline) with every setting's line holding c's value
 * (the first line of a key keeps its place, later ones for it go),
 * comments, blank lines and unknown lines kept as they were; then, under
 * NET_CONFIG_REWRITE_MARK (added once), the settings the file lacks whose
 * value is not the default. Sizes are written with k, m or g when exact.
 * net_config_load_file reads it back to c. Pure: into out (cap bytes, at
 * least net_config_rewrite_bound(oldlen)), *outlen bytes, not
 * NUL-terminated: NET_CFG_OK; NET_CFG_EINVAL with err when a value cannot
 * be written in a file (a newline in it) or cap is short. */
#define NET_CONFIG_REWRITE_MARK "# Generated by CONFIG REWRITE"
size_t net_config_rewrite_bound(size_t oldlen);
int net_config_rewrite(const char *old, size_t oldlen, const struct net_config *c, char *out,
                       size_t cap, size_t *outlen, char *err, size_t errcap);
/* Rewrites the file at path so (net_config_rewrite of what it holds; a
 * missing file is empty), atomically: a temporary file in its directory,
 * fsync, rename over it, fsync of the directory. NET_CFG_OK, or
 * NET_CFG_EINVAL / NET_CFG_EIO with err; the file is as it was then. */
int net_config_rewrite_file(const char *path, const struct net_config *c, char *err,
                            size_t errcap);

#endif
