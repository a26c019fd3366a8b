/* SPDX-License-Identifier: MIT */
/*
 * config.c -- shortstatd's flags and config file.
 *
 * One table describes every setting: its key (the flag without "--"), its
 * kind and bounds, and where it lands in struct net_config. The command line
 * and the config file both go through net_config_set(), so they accept the
 * same keys with the same checks and the same messages. Nothing here exits or
 * prints: main() decides (exit 2 on NET_CFG_EINVAL).
 */
#include "net/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/eng.h"
#include "net/log.h"
#include "net/slowlog.h"

enum kind { K_STR, K_U32, K_I64, K_SIZE, K_PASS, K_LEVEL, K_BOOL, K_CPUS, K_ORIGIN };

struct setting {
    const char *key;
    enum kind kind;
    size_t off;        /* offsetof in struct net_config */
    size_t cap;        /* K_STR: buffer size */
    int64_t min, max;  /* numbers */
    const char *help;
    bool live;         /* CONFIG SET may change it while the server runs */
};

#define OFF(f) offsetof(struct net_config, f)

static const struct setting settings[] = {
    {"bind", K_STR, OFF(bind), sizeof(((struct net_config *)0)->bind), 0, 0,
     "address to listen on (IPv4 or IPv6)", false},
    {"port", K_U32, OFF(port), 0, 0, 65535, "TCP port; 0 picks a free one (logged)", false},
    {"dir", K_STR, OFF(dir), NET_PATH_MAX, 0, 0, "directory of shortstat.snap", false},
    {"history", K_U32, OFF(history), 0, 1, ENG_HISTORY_MAX,
     "records kept per session and per user", false},
    {"session-ttl", K_I64, OFF(session_ttl_s), 0, 1, 10ll * 366 * 86400,
     "seconds before an idle session is evicted", false},
    {"snapshot-interval", K_U32, OFF(snapshot_interval_s), 0, 0, 366 * 86400,
     "seconds between snapshots; 0 = off", true},
    {"maxclients", K_U32, OFF(maxclients), 0, 1, 1000000, "most simultaneous clients", true},
    {"requirepass", K_PASS, OFF(requirepass), 0, 0, 0,
     "clients must AUTH with this password; \"\" = none", true},
    {"loglevel", K_LEVEL, OFF(loglevel), 0, 0, 0, "debug, info or warn", true},
    {"http-port", K_U32, OFF(http_port), 0, 0, 65535, "HTTP/JSON and /metrics port; 0 = off",
     false},
    {"trust-proxy", K_BOOL, OFF(trust_proxy), 0, 0, 0,
     "take the HTTP client address from X-Forwarded-For (yes or no)", false},
    {"http-cors-origin", K_ORIGIN, OFF(http_cors_origin),
     sizeof(((struct net_config *)0)->http_cors_origin), 0, 0,
     "origin browsers may call the HTTP port from (* for any); \"\" = no CORS", true},
    {"query-buffer-limit", K_SIZE, OFF(query_buffer_limit), 0, 1024, 1ll << 40,
     "bytes of unparsed input per client (k/m/g suffixes)", true},
    {"client-output-limit", K_SIZE, OFF(client_output_limit), 0, 1024, 1ll << 40,
     "bytes of unread replies per client before it is cut off", true},
    {"snapshot-cpulist", K_CPUS, OFF(snapshot_cpus), 0, 0, NET_CPUS_MAX - 1,
     "CPUs the snapshot child may run on, like 1 or 0-3,6; any = not pinned", false},
    {"prefault", K_BOOL, OFF(prefault), 0, 0, 0,
     "fault fresh engine memory in on an idle-priority thread (yes or no)", false},
    {"maxmemory", K_SIZE, OFF(maxmemory), 0, 0, 1ll << 50,
     "refuse writes while used memory is over this many bytes; 0 = no limit", true},
    {"slowlog-log-slower-than", K_I64, OFF(slowlog_slower_us), 0, -1, 1000000000000ll,
     "SLOWLOG keeps commands that ran at least this many microseconds; -1 = none", true},
    {"slowlog-max-len", K_U32, OFF(slowlog_max_len), 0, 0, NET_SLOWLOG_MAX_LEN,
     "entries SLOWLOG keeps", true},
};
#define NSETTINGS (sizeof settings / sizeof settings[0])

void net_config_defaults(struct net_config *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->bind, "127.0.0.1");
    c->port = NET_DEFAULT_PORT;
    c->http_port = NET_DEFAULT_HTTP_PORT;
    strcpy(c->dir, "./data");
    c->history = ENG_HISTORY_DEFAULT;
    c->session_ttl_s = 86400;
    c->snapshot_interval_s = 60;
    c->maxclients = NET_DEFAULT_MAXCLIENTS;
    c->loglevel = NET_LOG_INFO;
    c->query_buffer_limit = NET_DEFAULT_QBUF_LIMIT;
    c->client_output_limit = NET_DEFAULT_OUT_LIMIT;
    c->prefault = true;
    c->slowlog_slower_us = NET_DEFAULT_SLOWLOG_US;
    c->slowlog_max_len = NET_DEFAULT_SLOWLOG_LEN;
}

const char *net_config_usage(void)
{
    return "usage: shortstatd [options]\n"
           "  --bind ADDR               address to listen on (default 127.0.0.1)\n"
           "  --port N                  TCP port (default 7878; 0 = any free port, logged)\n"
           "  --dir DIR                 data directory for shortstat.snap (default ./data)\n"
           "  --history N               records kept per session and per user (default 64)\n"
           "  --session-ttl SECONDS     idle time before a session is evicted (default 86400)\n"
           "  --snapshot-interval SECS  seconds between snapshots, 0 = off (default 60)\n"
           "  --maxclients N            most simultaneous clients (default 10000)\n"
           "  --requirepass PASSWORD    clients must AUTH first\n"
           "  --config FILE             read settings from FILE (\"key value\" lines)\n"
           "  --loglevel LEVEL          debug, info or warn (default info)\n"
           "  --http-port N             HTTP/JSON and /metrics port (default 7879; 0 = off)\n"
           "  --trust-proxy yes|no      HTTP client address from X-Forwarded-For (default no)\n"
           "  --http-cors-origin ORIGIN let browsers on ORIGIN (or * for any) call the HTTP\n"
           "                            port (default \"\": no CORS headers)\n"
           "  --query-buffer-limit SIZE unparsed input per client (default 256m)\n"
           "  --client-output-limit SIZE unread replies per client (default 64m)\n"
           "  --snapshot-cpulist LIST   pin the snapshot child to these CPUs, like 1 or 0-3,6\n"
           "                            (default any: not pinned)\n"
           "  --prefault yes|no         fault fresh engine memory in on an idle-priority\n"
           "                            thread, off the event loop (default yes)\n"
           "  --maxmemory SIZE          refuse writes (TRACK, BOOST, HTTP) while used memory\n"
           "                            is over SIZE (default 0: no limit)\n"
           "  --slowlog-log-slower-than US  SLOWLOG keeps commands that ran at least US\n"
           "                            microseconds (default 10000; 0 = all, -1 = none)\n"
           "  --slowlog-max-len N       entries SLOWLOG keeps (default 128)\n"
           "  --help, --version\n"
           "SIZE is bytes, or a number with k, m or g (powers of 1024).\n"
           "Config file keys are the flag names without \"--\"; flags override the file.\n";
}

static const struct setting *find_setting(const char *key)
{
    char norm[64];
    size_t n = strlen(key);
    if (n >= sizeof norm)
        return NULL;
    for (size_t i = 0; i <= n; i++)
        norm[i] = key[i] == '_' ? '-' : key[i];
    for (size_t i = 0; i < NSETTINGS; i++)
        if (strcmp(settings[i].key, norm) == 0)
            return &settings[i];
    return NULL;
}

/* Strict decimal: digits only (an optional k/m/g when sized). */
static int parse_num(const char *s, bool sized, int64_t *out)
{
    if (!*s)
        return -1;
    int64_t v = 0;
    const char *p = s;
    while (*p >= '0' && *p <= '9') {
        if (v > (INT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*p++ - '0');
    }
    if (p == s)
        return -1;
    if (sized && *p) {
        int shift;
        switch (*p) {
        case 'k': case 'K': shift = 10; break;
        case 'm': case 'M': shift = 20; break;
        case 'g': case 'G': shift = 30; break;
        default: return -1;
        }
        p++;
        if (*p == 'b' || *p == 'B')
            p++;
        if (v > (INT64_MAX >> shift))
            return -1;
        v <<= shift;
    }
    if (*p)
        return -1;
    *out = v;
    return 0;
}

/* A number setting's value: a '-' only where its range has negatives
 * (slowlog-log-slower-than's -1 = off), sizes with k/m/g. */
static int parse_setting_num(const struct setting *s, const char *val, int64_t *v)
{
    bool neg = s->min < 0 && val[0] == '-';
    if (parse_num(val + neg, s->kind == K_SIZE, v) || (neg && *v == 0))
        return -1;
    if (neg)
        *v = -*v;
    return 0;
}

/* "N" or "A-B" items, comma-separated, each 0..max, A <= B; into a bitmask
 * (NET_CPUS_MAX bits). -1 on any other text. */
static int parse_cpulist(const char *s, int64_t max, uint64_t *bits)
{
    uint64_t set[NET_CPUS_MAX / 64] = {0};
    for (;;) {
        int64_t a, b;
        char num[24];
        size_t n = strspn(s, "0123456789");
        if (n == 0 || n >= sizeof num)
            return -1;
        memcpy(num, s, n);
        num[n] = 0;
        if (parse_num(num, false, &a) || a > max)
            return -1;
        s += n;
        b = a;
        if (*s == '-') {
            s++;
            n = strspn(s, "0123456789");
            if (n == 0 || n >= sizeof num)
                return -1;
            memcpy(num, s, n);
            num[n] = 0;
            if (parse_num(num, false, &b) || b > max || b < a)
                return -1;
            s += n;
        }
        for (int64_t i = a; i <= b; i++)
            set[i / 64] |= (uint64_t)1 << (i % 64);
        if (*s == 0)
            break;
        if (*s++ != ',')
            return -1;
    }
    memcpy(bits, set, sizeof set);
    return 0;
}

int net_config_set(struct net_config *c, const char *key, const char *val, char *err,
                   size_t errcap)
{
    const struct setting *s = find_setting(key);
    if (!s) {
        snprintf(err, errcap, "%s: unknown setting", key);
        return NET_CFG_EINVAL;
    }
    char *dst = (char *)c + s->off;
    int64_t v;
    switch (s->kind) {
    case K_STR:
        if (!*val || strlen(val) >= s->cap) {
            snprintf(err, errcap, "%s: must be 1 to %zu characters", s->key, s->cap - 1);
            return NET_CFG_EINVAL;
        }
        strcpy(dst, val);
        return NET_CFG_OK;
    case K_ORIGIN:  /* a header's value: "*", or scheme://host[:port]; "" = off */
        for (const char *q = val; *q; q++)
            if (*q <= ' ' || *q > '~' || *q == ',') {
                snprintf(err, errcap, "%s: must be * or one origin like https://app.example.com",
                         s->key);
                return NET_CFG_EINVAL;
            }
        if (strlen(val) >= s->cap) {
            snprintf(err, errcap, "%s: must be at most %zu characters", s->key, s->cap - 1);
            return NET_CFG_EINVAL;
        }
        strcpy(dst, val);
        return NET_CFG_OK;
    case K_PASS:  /* "" is no password, as Redis's requirepass "" */
        if (strlen(val) > NET_PASS_MAX) {
            snprintf(err, errcap, "%s: must be at most %u characters", s->key, NET_PASS_MAX);
            return NET_CFG_EINVAL;
        }
        strcpy(c->requirepass, val);
        return NET_CFG_OK;
    case K_LEVEL: {
        int lvl = net_log_level_parse(val);
        if (lvl < 0) {
            snprintf(err, errcap,
                     "%s: must be debug, info or warn (or Redis's verbose, notice, warning)",
                     s->key);
            return NET_CFG_EINVAL;
        }
        c->loglevel = lvl;
        return NET_CFG_OK;
    }
    case K_BOOL:
        if (strcmp(val, "yes") == 0 || strcmp(val, "true") == 0 || strcmp(val, "1") == 0) {
            *(bool *)(void *)dst = true;
        } else if (strcmp(val, "no") == 0 || strcmp(val, "false") == 0 || strcmp(val, "0") == 0) {
            *(bool *)(void *)dst = false;
        } else {
            snprintf(err, errcap, "%s: must be yes or no", s->key);
            return NET_CFG_EINVAL;
        }
        return NET_CFG_OK;
    case K_CPUS:
        if (strcmp(val, "any") == 0) {  /* not pinned: the default */
            memset(dst, 0, sizeof c->snapshot_cpus);
            return NET_CFG_OK;
        }
        if (parse_cpulist(val, s->max, (uint64_t *)(void *)dst)) {
            snprintf(err, errcap,
                     "%s: must be CPU numbers 0..%lld or ranges A-B, comma-separated (like 1 "
                     "or 0-3,6), or any",
                     s->key, (long long)s->max);
            return NET_CFG_EINVAL;
        }
        return NET_CFG_OK;
    case K_U32:
    case K_I64:
    case K_SIZE:
        if (parse_setting_num(s, val, &v) || v < s->min || v > s->max) {
            if (s->kind == K_SIZE)
                snprintf(err, errcap, "%s: must be a size from %lld to %lld bytes (k/m/g allowed)",
                         s->key, (long long)s->min, (long long)s->max);
            else
                snprintf(err, errcap, "%s: must be an integer %lld..%lld", s->key,
                         (long long)s->min, (long long)s->max);
            return NET_CFG_EINVAL;
        }
        if (s->kind == K_U32)
            *(uint32_t *)(void *)dst = (uint32_t)v;
        else if (s->kind == K_I64)
            *(int64_t *)(void *)dst = v;
        else
            *(uint64_t *)(void *)dst = (uint64_t)v;
        return NET_CFG_OK;
    }
    snprintf(err, errcap, "%s: unsupported", key);
    return NET_CFG_EINVAL;
}

/* A CPU bitmask as the list --snapshot-cpulist takes ("0-3,6"; "any" when
 * none), cut short with "..." if it does not fit. */
static void cpulist_text(const uint64_t *bits, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = 0;
    for (uint32_t i = 0; i < NET_CPUS_MAX; i++) {
        if (!(bits[i / 64] >> (i % 64) & 1))
            continue;
        uint32_t j = i;
        while (j + 1 < NET_CPUS_MAX && (bits[(j + 1) / 64] >> ((j + 1) % 64) & 1))
            j++;
        int n = j > i ? snprintf(out + o, cap - o, "%s%u-%u", o ? "," : "", i, j)
                      : snprintf(out + o, cap - o, "%s%u", o ? "," : "", i);
        if (n < 0 || (size_t)n >= cap - o) {
            snprintf(out + (cap > 4 ? cap - 4 : 0), cap > 4 ? 4 : cap, "...");
            return;
        }
        o += (size_t)n;
        i = j;
    }
    if (o == 0)
        snprintf(out, cap, "any");
}

int net_config_set_live(struct net_config *c, const char *key, const char *val, char *err,
                        size_t errcap)
{
    const struct setting *s = find_setting(key);
    if (s && !s->live) {
        snprintf(err, errcap, "%s: can only be set at start (flag or config file)", s->key);
        return NET_CFG_EINVAL;
    }
    return net_config_set(c, key, val, err, errcap);
}

bool net_config_secret(const char *key)
{
    char low[64];
    size_t n = strlen(key);
    if (n >= sizeof low)
        return false;
    for (size_t i = 0; i <= n; i++)
        low[i] = (char)tolower((unsigned char)key[i]);
    const struct setting *s = find_setting(low);
    return s && s->kind == K_PASS;
}

const char *net_config_key(size_t i)
{
    return i < NSETTINGS ? settings[i].key : NULL;
}

void net_config_value(const struct net_config *c, size_t i, char *out, size_t cap)
{
    if (cap == 0)
        return;
    out[0] = 0;
    if (i >= NSETTINGS)
        return;
    const struct setting *s = &settings[i];
    const char *src = (const char *)c + s->off;
    switch (s->kind) {
    case K_STR:
    case K_PASS:
    case K_ORIGIN:
        snprintf(out, cap, "%s", src);
        break;
    case K_LEVEL:
        snprintf(out, cap, "%s", net_log_level_name((enum net_log_level)c->loglevel));
        break;
    case K_BOOL:
        snprintf(out, cap, "%s", *(const bool *)(const void *)src ? "yes" : "no");
        break;
    case K_CPUS:
        cpulist_text((const uint64_t *)(const void *)src, out, cap);
        break;
    case K_U32:
        snprintf(out, cap, "%u", *(const uint32_t *)(const void *)src);
        break;
    case K_I64:
        snprintf(out, cap, "%lld", (long long)*(const int64_t *)(const void *)src);
        break;
    case K_SIZE:
        snprintf(out, cap, "%llu", (unsigned long long)*(const uint64_t *)(const void *)src);
        break;
    }
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = 0;
    return s;
}

/* One line of f, its '\n' included, into line (NUL-terminated); its
 * length, which counts any NUL byte in it (fgets would hide those), 0 at the
 * end of the file, (size_t)-1 when more than cap - 2 bytes precede its
 * newline or the end of the file (the last line has no more room). */
static size_t read_line(FILE *f, char *line, size_t cap)
{
    size_t n = 0;
    int ch;
    while ((ch = getc(f)) != EOF) {
        if (ch != '\n' && n + 2 >= cap)
            return (size_t)-1;
        line[n++] = (char)ch;
        if (ch == '\n')
            break;
    }
    line[n] = 0;
    return n;
}

int net_config_load_file(struct net_config *c, const char *path, char *err, size_t errcap)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errcap, "config %s: %s", path, strerror(errno));
        return NET_CFG_EINVAL;
    }
    char line[NET_CONFIG_LINE_MAX];
    unsigned lineno = 0;
    int rc = NET_CFG_OK;
    size_t n;
    while ((n = read_line(f, line, sizeof line)) != 0) {
        lineno++;
        if (n == (size_t)-1) {
            snprintf(err, errcap, "config %s line %u: line too long", path, lineno);
            rc = NET_CFG_EINVAL;
            break;
        }
        /* Everything below reads the line as a C string: a NUL would cut
         * it short, the more baffling as its end is where the value is. */
        if (memchr(line, 0, n)) {
            snprintf(err, errcap, "config %s line %u: a NUL byte (a config file is text)", path,
                     lineno);
            rc = NET_CFG_EINVAL;
            break;
        }
        /* A UTF-8 byte-order mark some editors write: only as the file's
         * first bytes, where CONFIG REWRITE looks for it too. */
        bool bom = lineno == 1 && strncmp(line, "\xef\xbb\xbf", 3) == 0;
        char *s = trim(line + (bom ? 3 : 0));
        if (!*s || *s == '#')
            continue;
        if (strncmp(s, "\xef\xbb\xbf", 3) == 0) {  /* invisible: "unknown setting" would baffle */
            snprintf(err, errcap, "config %s line %u: a UTF-8 byte-order mark not at the start "
                     "of the file", path, lineno);
            rc = NET_CFG_EINVAL;
            break;
        }
        char *key = s;
        while (*s && *s != ' ' && *s != '\t')
            s++;
        if (*s)
            *s++ = 0;
        char *val = trim(s);
        size_t vl = strlen(val);
        if (vl == 0) {  /* an empty value is written "" */
            snprintf(err, errcap, "config %s line %u: %.64s: missing value", path, lineno, key);
            rc = NET_CFG_EINVAL;
            break;
        }
        if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') {  /* "value with spaces" */
            val[vl - 1] = 0;
            val++;
        } else if ((vl && val[0] == '"') || (vl && val[vl - 1] == '"')) {
            snprintf(err, errcap, "config %s line %u: %s: unbalanced quotes", path, lineno, key);
            rc = NET_CFG_EINVAL;
            break;
        }
        if (strcmp(key, "config") == 0) {
            snprintf(err, errcap, "config %s line %u: config: cannot nest config files", path,
                     lineno);
            rc = NET_CFG_EINVAL;
            break;
        }
        char why[256];
        if (net_config_set(c, key, val, why, sizeof why)) {
            snprintf(err, errcap, "config %s line %u: %s", path, lineno, why);
            rc = NET_CFG_EINVAL;
            break;
        }
    }
    if (rc == NET_CFG_OK && ferror(f)) {  /* a directory: EISDIR */
        snprintf(err, errcap, "config %s: %s", path, strerror(errno));
        rc = NET_CFG_EINVAL;
    }
    fclose(f);
    return rc;
}

/* The key of "--key" or "--key=value", into key: false when a is not of
 * that form or the key does not fit. */
static bool flag_key(const char *a, char *key, size_t keycap)
{
    if (strncmp(a, "--", 2) != 0 || !a[2])
        return false;
    size_t kl = strcspn(a + 2, "=");
    if (kl >= keycap)
        return false;
    memcpy(key, a + 2, kl);
    key[kl] = 0;
    return true;
}

/* A flag that takes a value: --config, or a setting. */
static bool takes_value(const char *key)
{
    return strcmp(key, "config") == 0 || find_setting(key);
}

/* Splits "--key=value" / "--key value"; returns the index of the next arg or
 * -1 with err set. */
static int split_flag(int argc, char *const argv[], int i, char *key, size_t keycap,
                      const char **val, char *err, size_t errcap)
{
    const char *a = argv[i];
    if (strncmp(a, "--", 2) != 0 || !a[2]) {
        snprintf(err, errcap, "%s: not a flag (see --help)", a);
        return -1;
    }
    if (!flag_key(a, key, keycap) || !takes_value(key)) {
        size_t kl = strcspn(a + 2, "=");
        snprintf(err, errcap, "--%.*s: unknown flag (see --help)", kl < 40 ? (int)kl : 40, a + 2);
        return -1;
    }
    const char *eq = a + 2 + strlen(key);
    if (*eq == '=') {
        *val = eq + 1;
        return i + 1;
    }
    /* "--port --dir X": a flag where the value is due is not the value */
    char nk[64];
    const char *nx = i + 1 < argc ? argv[i + 1] : NULL;
    if (!nx || (flag_key(nx, nk, sizeof nk) &&
                (takes_value(nk) || strcmp(nk, "help") == 0 || strcmp(nk, "version") == 0))) {
        snprintf(err, errcap, "--%s: missing value", key);
        return -1;
    }
    *val = nx;
    return i + 2;
}

int net_config_parse(struct net_config *c, int argc, char *const argv[], char *err, size_t errcap)
{
    net_config_defaults(c);
    /* --help and --version where a flag may stand, not as another flag's
     * value ("--requirepass -v" sets a password) */
    char key[64], perr[8];
    const char *val;
    for (int i = 1; i < argc;) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return NET_CFG_HELP;
        if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-v") == 0)
            return NET_CFG_VERSION;
        if ((i = split_flag(argc, argv, i, key, sizeof key, &val, perr, sizeof perr)) < 0)
            break;  /* pass 1 reports it */
    }
    /* Pass 1: syntax of every flag, and where the config file is. */
    for (int i = 1; i < argc;) {
        int next = split_flag(argc, argv, i, key, sizeof key, &val, err, errcap);
        if (next < 0)
            return NET_CFG_EINVAL;
        if (strcmp(key, "config") == 0) {
            if (!*val || strlen(val) >= sizeof c->config_file) {
                snprintf(err, errcap, "--config: must name a file");
                return NET_CFG_EINVAL;
            }
            strcpy(c->config_file, val);
        }
        i = next;
    }
    if (c->config_file[0] && net_config_load_file(c, c->config_file, err, errcap))
        return NET_CFG_EINVAL;
    /* Pass 2: flags win over the file. */
    for (int i = 1; i < argc;) {
        int next = split_flag(argc, argv, i, key, sizeof key, &val, err, errcap);
        if (strcmp(key, "config") != 0) {
            char why[256];
            if (net_config_set(c, key, val, why, sizeof why)) {
                snprintf(err, errcap, "--%s", why);
                return NET_CFG_EINVAL;
            }
        }
        i = next;
    }
    if (c->http_port && c->http_port == c->port) {  /* else bind fails: "address in use" */
        snprintf(err, errcap, "--http-port: %u is --port too; the two need their own ports",
                 c->http_port);
        return NET_CFG_EINVAL;
    }
    return NET_CFG_OK;
}

/* ---- CONFIG REWRITE --------------------------------------------------------------------- */

/* Output of a size fixed beforehand (net_config_rewrite_bound): writing
 * cannot fail, and a write past it is cut and flagged, never made. */
struct text {
    char *p;
    size_t len, cap;
    bool over;
};

static void text_put(struct text *t, const char *s, size_t n)
{
    if (n > t->cap - t->len) {
        t->over = true;
        n = t->cap - t->len;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
}

static void text_puts(struct text *t, const char *s)
{
    text_put(t, s, strlen(s));
}

/* "key value\n", at most NET_CONFIG_LINE_MAX bytes: the value quoted when
 * the loader would not read it back bare (empty, or with a blank, a quote
 * or a CR in it). -1 when no line can hold it (a newline). */
static int put_setting(struct text *t, const struct net_config *c, size_t i, char *err,
                       size_t errcap)
{
    char v[NET_CONFIG_VALUE_MAX];
    net_config_value(c, i, v, sizeof v);
    if (settings[i].kind == K_SIZE) {  /* as written by hand: 3g, not 3221225472 */
        uint64_t b;
        memcpy(&b, (const char *)c + settings[i].off, sizeof b);
        static const char unit[] = "gmk";
        for (int u = 0; b && u < 3; u++)
            if (b % (1ull << (30 - 10 * u)) == 0) {
                snprintf(v, sizeof v, "%llu%c", (unsigned long long)(b >> (30 - 10 * u)),
                         unit[u]);
                break;
            }
    }
    if (strchr(v, '\n')) {
        snprintf(err, errcap, "%s: the value holds a newline, which a config file cannot",
                 settings[i].key);
        return -1;
    }
    bool quote = !v[0] || strpbrk(v, " \t\r\"");
    text_puts(t, settings[i].key);
    text_puts(t, quote ? " \"" : " ");
    text_puts(t, v);
    text_puts(t, quote ? "\"\n" : "\n");
    return 0;
}

size_t net_config_rewrite_bound(size_t oldlen)
{
    /* every old line kept or shortened (one newline added to a last line
     * without one), each setting written once, the mark once */
    return oldlen + 1 + NSETTINGS * NET_CONFIG_LINE_MAX + sizeof NET_CONFIG_REWRITE_MARK;
}

int net_config_rewrite(const char *old, size_t oldlen, const struct net_config *c, char *out,
                       size_t cap, size_t *outlen, char *err, size_t errcap)
{
    const char *nul = memchr(old, 0, oldlen);
    if (nul) {  /* kept lines are copied as they are: the loader would refuse this one */
        unsigned line = 1;
        for (const char *q = old; q < nul; q++)
            line += *q == '\n';
        snprintf(err, errcap, "line %u holds a NUL byte, which the config file loader refuses",
                 line);
        return NET_CFG_EINVAL;
    }
    struct text t = {out, 0, cap, false};
    bool done[NSETTINGS] = {false}, marked = false;
    const char *p = old, *end = old + oldlen;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        const char *k = p, *ke;
        if (p == old && eol - p >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
            k += 3;  /* a byte-order mark, as the loader skips it; a kept line keeps it */
        while (k < eol && (*k == ' ' || *k == '\t'))
            k++;
        for (ke = k; ke < eol && *ke != ' ' && *ke != '\t' && *ke != '\r'; ke++)
            ;
        char key[64] = "";
        if ((size_t)(ke - k) < sizeof key) {
            memcpy(key, k, (size_t)(ke - k));
            key[ke - k] = 0;
        }
        const struct setting *s = find_setting(key);  /* no setting's key starts with '#' */
        size_t n = (size_t)(eol - p), ml = strlen(NET_CONFIG_REWRITE_MARK);
        if (n >= ml && memcmp(p, NET_CONFIG_REWRITE_MARK, ml) == 0 &&
            (n == ml || (n == ml + 1 && p[ml] == '\r')))
            marked = true;  /* an earlier rewrite's: what it appended stays under it */
        if (s) {
            size_t i = (size_t)(s - settings);
            if (!done[i] && put_setting(&t, c, i, err, errcap))
                return NET_CFG_EINVAL;
            done[i] = true;  /* a later line for it would win at load: dropped */
        } else {
            text_put(&t, p, n);
            text_puts(&t, "\n");
        }
        p = nl ? nl + 1 : end;
    }
    struct net_config def;
    net_config_defaults(&def);
    char v[NET_CONFIG_VALUE_MAX], dv[NET_CONFIG_VALUE_MAX];
    for (size_t i = 0; i < NSETTINGS; i++) {
        if (done[i])
            continue;
        net_config_value(c, i, v, sizeof v);
        net_config_value(&def, i, dv, sizeof dv);
        if (strcmp(v, dv) == 0)
            continue;
        if (!marked)
            text_puts(&t, NET_CONFIG_REWRITE_MARK "\n");
        marked = true;
        if (put_setting(&t, c, i, err, errcap))
            return NET_CFG_EINVAL;
    }
    if (t.over) {
        snprintf(err, errcap, "rewrite: needs more than the %zu bytes given", cap);
        return NET_CFG_EINVAL;
    }
    *outlen = t.len;
    return NET_CFG_OK;
}

/* The whole file at path into *buf (malloc'd), with room for its rewrite
 * after it, and its stat in *st; a missing file is empty, st_mode 0. */
static int read_all(const char *path, char **buf, size_t *len, struct stat *st, char *err,
                    size_t errcap)
{
    FILE *f = fopen(path, "rbe");
    memset(st, 0, sizeof *st);
    if (!f && errno != ENOENT) {
        snprintf(err, errcap, "%s: %s", path, strerror(errno));
        return NET_CFG_EIO;
    }
    if (f && (fstat(fileno(f), st) != 0 || !S_ISREG(st->st_mode))) {
        snprintf(err, errcap, "%s: %s", path,
                 S_ISREG(st->st_mode) || !st->st_mode ? strerror(errno) : "not a regular file");
        fclose(f);
        return NET_CFG_EIO;
    }
    size_t size = f ? (size_t)st->st_size : 0;
    char *b = malloc(size + 1 + net_config_rewrite_bound(size));
    if (!b) {
        snprintf(err, errcap, "%s: out of memory", path);
        if (f)
            fclose(f);
        return NET_CFG_EIO;
    }
    size_t n = f ? fread(b, 1, size + 1, f) : 0;  /* + 1: a file that grew is an error */
    bool bad = f && (ferror(f) || n != size);
    if (f)
        fclose(f);
    if (bad) {
        snprintf(err, errcap, "%s: changed or unreadable while read", path);
        free(b);
        return NET_CFG_EIO;
    }
    *buf = b;
    *len = n;
    return NET_CFG_OK;
}

int net_config_rewrite_file(const char *path, const struct net_config *c, char *err,
                            size_t errcap)
{
    /* A symlinked file (a common /etc layout) is rewritten where it points,
     * not replaced by a file of its own; messages name the path given. */
    char real[PATH_MAX];
    const char *where = realpath(path, real) ? real : path;  /* no file yet: made there */
    char *old = NULL;
    size_t oldlen = 0, len = 0;
    struct stat st;  /* the file keeps its owner and mode (mkstemp makes 0600) */
    int rc = read_all(where, &old, &oldlen, &st, err, errcap);
    if (rc != NET_CFG_OK)
        return rc;
    char *text = old + oldlen + 1;  /* read_all made the room */
    rc = net_config_rewrite(old, oldlen, c, text, net_config_rewrite_bound(oldlen), &len, err,
                            errcap);
    if (rc != NET_CFG_OK) {
        free(old);
        return rc;
    }
    char tmp[PATH_MAX + 16], dir[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.XXXXXX", where);
    snprintf(dir, sizeof dir, "%s", where);
    const char *step = NULL;
    int e = 0, fd = mkostemp(tmp, O_CLOEXEC);  /* no snapshot child inherits it */
    if (fd < 0) {
        step = "create";
        e = errno;
    } else {
        bool had = st.st_mode != 0;
        /* only root may give a file away: otherwise it is ours, as made;
         * owner first, as chown may clear the setuid and setgid bits */
        if (had && fchown(fd, st.st_uid, st.st_gid) != 0 && errno != EPERM)
            step = "chown", e = errno;
        if (!step && fchmod(fd, had ? st.st_mode & 07777 : 0644) != 0)
            step = "chmod", e = errno;
        for (size_t off = 0; !step && off < len;) {
            ssize_t w = write(fd, text + off, len - off);
            if (w > 0)
                off += (size_t)w;
            else if (w == 0 || errno != EINTR)
                step = "write", e = w == 0 ? EIO : errno;
        }
        if (!step && fsync(fd) != 0)
            step = "fsync", e = errno;
        if (close(fd) != 0 && !step)
            step = "close", e = errno;
        if (!step && rename(tmp, where) != 0)
            step = "rename", e = errno;
        if (step)
            unlink(tmp);
    }
    free(old);
    if (step) {
        snprintf(err, errcap, "%s: %s: %s", path, step, strerror(e));
        return NET_CFG_EIO;
    }
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {  /* the rename itself durable; the file is in place either way */
        (void)fsync(dfd);
        close(dfd);
    }
    return NET_CFG_OK;
}
