/* SPDX-License-Identifier: MIT */
/*
 * cmd.c -- the command table, argument parsing, and the replies.
 *
 * Design. net_conn_process() parses the complete commands in a
 * connection's input for one turn (NET_TURN_USEC; the server parks what is
 * left for the loop's next iteration, see server.c). Runs of TRACK commands
 * take a fast path: each is parsed into struct eng_ix (pointers into the
 * input buffer, or into the server's scratch for quoted tokens); the run is
 * applied in order when it reaches NET_BATCH (NET_BATCH_COW while a
 * snapshot child lives), when another command comes,
 * or at the end of the input, with eng_record_batch (see batch_apply for
 * how a bad TRACK in the middle keeps its own error). The batch's own
 * prefetch pipeline overlaps the cache misses of one interaction with the
 * work of the next ones (an eng_prefetch per parsed TRACK as well only did
 * the same lookups twice), and the replies still come out in command order. Every other command goes through
 * the table below (case-insensitive, arity checked, NOAUTH and MULTI rules).
 *
 * Invariants:
 *  - the batch's pointers are valid until batch_apply(): the input buffer is
 *    neither grown nor compacted while net_conn_process runs, and the scratch
 *    is reset only by batch_apply;
 *  - every command appends exactly one reply (EXEC: one array);
 *  - errors_total counts every error reply, commands_total every command;
 *  - inside MULTI nothing touches the engine until EXEC, which applies
 *    the writes between two queued queries as one batch, all or none.
 *  - over --maxmemory no write reaches the engine: TRACK and BOOST (alone,
 *    in a batch, queued, at EXEC, each batch of writes inside EXEC) are
 *    answered OOM, checked right before they would run, after their
 *    arguments (refuse_oom).
 *
 * The pure pieces an HTTP front end reuses (TRACK arguments to eng_ix, STATS
 * fields, HISTORY record text) are the net_* functions declared in cmd.h.
 */
#include "net/cmd.h"

#include <ctype.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "net/log.h"
#include "net/prefault.h"
#include "net/server.h"

/* ---- pure helpers (cmd.h) ---------------------------------------------------- */

int net_parse_u64(const uint8_t *p, size_t len, uint64_t *out)
{
    /* "007" would be 7 under a second name: a zero-padded user id would
     * merge with another user's. Redis's string2ll refuses it too. */
    if (len == 0 || len > 20 || (p[0] == '0' && len > 1))
        return NET_EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return NET_EINVAL;
        uint64_t d = (uint64_t)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return NET_EINVAL;
        v = v * 10 + d;
    }
    *out = v;
    return NET_OK;
}

int net_parse_id(const uint8_t *p, size_t len, uint64_t *out)
{
    return net_parse_u64(p, len, out) || *out == 0 ? NET_EINVAL : NET_OK;
}

int net_parse_i64(const uint8_t *p, size_t len, int64_t *out)
{
    bool neg = len > 0 && p[0] == '-';
    uint64_t v;
    if (net_parse_u64(p + neg, len - neg, &v) || (neg && v == 0))  /* "-0" too */
        return NET_EINVAL;
    if (neg ? v > (uint64_t)INT64_MAX + 1 : v > (uint64_t)INT64_MAX)
        return NET_EINVAL;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return NET_OK;
}

/* ASCII case-insensitive p[0..n) == lit (lower case), inlined: the hot path
 * compares command and field names on every TRACK. */
static inline bool eq_lower(const uint8_t *p, const char *lit, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c >= 'A' && c <= 'Z')
            c = (uint8_t)(c + 32);
        if (c != (uint8_t)lit[i])
            return false;
    }
    return true;
}

/* Printable, bounded copy of client bytes for an error message. */
static const char *printable(char *out, size_t cap, const uint8_t *p, size_t len)
{
    size_t max = cap - 4, o = 0;
    for (size_t i = 0; i < len && o < max; i++)
        out[o++] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : '?';
    if (len > max)
        memcpy(out + o, "...", 3), o += 3;
    out[o] = 0;
    return out;
}

enum { F_SESSION, F_USER, F_TS, F_WATCH, F_PLATFORM, F_IP, F_UA, F_COUNT };
static const struct {
    const char *name;
    size_t len;
} track_fields[F_COUNT] = {
    {"session", 7}, {"user", 4}, {"ts", 2}, {"watch_ms", 8}, {"platform", 8}, {"ip", 2}, {"ua", 2},
};

static inline int field_index(const uint8_t *p, size_t n)
{
    int f;
    switch (n) {
    case 2: f = (p[0] | 0x20) == 't' ? F_TS : (p[0] | 0x20) == 'i' ? F_IP : F_UA; break;
    case 4: f = F_USER; break;
    case 7: f = F_SESSION; break;
    case 8: f = (p[0] | 0x20) == 'w' ? F_WATCH : F_PLATFORM; break;
    default: return F_COUNT;
    }
    return eq_lower(p, track_fields[f].name, n) ? f : F_COUNT;
}

int net_track_parse(const struct proto_arg *args, size_t nargs, struct eng_ix *ix, char *err,
                    size_t errcap)
{
    char tmp[72];
    memset(ix, 0, sizeof *ix);
    if (nargs < 2) {
        snprintf(err, errcap, "%s: missing", nargs ? "type" : "short_id");
        return NET_EINVAL;
    }
    /* 0 is refused here in the words every other command uses for it
     * (the engine, where 0 means "absent", says "must be at least 1"). */
    if (net_parse_id(args[0].p, args[0].len, &ix->short_id)) {
        snprintf(err, errcap, "short_id: " NET_ID_RULE);
        return NET_EINVAL;
    }
    char t[16];
    int type = -1;
    if (args[1].len < sizeof t) {
        for (size_t i = 0; i < args[1].len; i++)
            t[i] = (char)tolower(args[1].p[i]);
        type = eng_type_parse(t, args[1].len);
    }
    if (type < 0) {
        snprintf(err, errcap,
                 "type: unknown interaction type '%s' (impression, view, skip, save, share, "
                 "contact, whatsapp, book_viewing)",
                 printable(tmp, 40, args[1].p, args[1].len));
        return NET_EINVAL;
    }
    ix->type = type;

    unsigned seen = 0;
    for (size_t i = 2; i < nargs; i++) {
        const uint8_t *p = args[i].p;
        size_t len = args[i].len;
        const uint8_t *eq = memchr(p, '=', len);
        if (!eq || eq == p) {  /* "=x" names no field: the argument is what is wrong */
            snprintf(err, errcap, "%s: expected field=value", printable(tmp, 40, p, len));
            return NET_EINVAL;
        }
        size_t nl = (size_t)(eq - p);
        const uint8_t *v = eq + 1;
        size_t vl = len - nl - 1;
        int f = field_index(p, nl);
        if (f == F_COUNT) {
            snprintf(err, errcap,
                     "%s: unknown field (session, user, ts, watch_ms, platform, ip, ua)",
                     printable(tmp, 40, p, nl));
            return NET_EINVAL;
        }
        if (seen & (1u << f)) {
            snprintf(err, errcap, "%s: repeated field", track_fields[f].name);
            return NET_EINVAL;
        }
        seen |= 1u << f;
        switch (f) {
        case F_SESSION:
            ix->session = (const char *)v;
            ix->session_len = vl;
            break;
        case F_USER:
            if (net_parse_id(v, vl, &ix->user)) {
                snprintf(err, errcap, "user: " NET_ID_RULE);
                return NET_EINVAL;
            }
            break;
        case F_TS:
            if (net_parse_i64(v, vl, &ix->ts)) {
                snprintf(err, errcap, "ts: must be an integer (milliseconds since the epoch)");
                return NET_EINVAL;
            }
            ix->has_ts = true;
            break;
        case F_WATCH:
            if (net_parse_i64(v, vl, &ix->watch_ms)) {
                snprintf(err, errcap, "watch_ms: must be an integer");
                return NET_EINVAL;
            }
            ix->has_watch = true;
            break;
        case F_PLATFORM:
            ix->platform = (const char *)v;
            ix->platform_len = vl;
            break;
        case F_IP:
            ix->ip = (const char *)v;
            ix->ip_len = vl;
            break;
        case F_UA:
            ix->ua = (const char *)v;
            ix->ua_len = vl;
            break;
        }
    }
    return NET_OK;
}

size_t net_fmt_decimal(char *out, double v)
{
    int n = snprintf(out, NET_DECIMAL_MAX, "%.6f", v);
    if (n < 0 || (size_t)n >= NET_DECIMAL_MAX)
        n = snprintf(out, NET_DECIMAL_MAX, "%.6e", v);  /* absurd magnitudes only */
    return (size_t)n;
}

void net_metric_list(char *out, size_t cap)
{
    size_t o = 0;
    out[0] = 0;
    for (int m = 0; m < ENG_M_COUNT && o < cap; m++) {
        int n = snprintf(out + o, cap - o, "%s%s", m ? ", " : "", eng_metric_name((enum eng_metric)m));
        o += n > 0 ? (size_t)n : 0;
    }
}

bool net_metric_is_decimal(enum eng_metric m)
{
    return m == ENG_M_SCORE || m == ENG_M_ENGAGEMENT_RATE || m == ENG_M_AVG_WATCH_MS;
}

size_t net_fmt_metric(char *out, enum eng_metric m, double v)
{
    if (net_metric_is_decimal(m))
        return net_fmt_decimal(out, v);
    if (v < 0)
        return proto_i64_dec(out, (int64_t)v);
    return proto_u64_dec(out, (uint64_t)v);
}

#define NSTATS_FIXED 15u

size_t net_stats_nfields(const struct eng_stats *st) { return NSTATS_FIXED + st->nplatforms; }

void net_stats_fields(const struct eng_stats *st, net_field_fn fn, void *ud)
{
    const struct {
        const char *name;
        uint64_t v;
    } counts[] = {
        {"impressions", st->impressions}, {"views", st->views},
        {"view_count", st->view_count},   {"unique_viewers", st->unique_viewers},
        {"saves", st->saves},             {"shares", st->shares},
        {"skips", st->skips},             {"contacts", st->contacts},
        {"whatsapps", st->whatsapps},     {"book_viewings", st->book_viewings},
    };
    char v[NET_DECIMAL_MAX];
    size_t n;
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        n = proto_u64_dec(v, counts[i].v);
        fn(ud, counts[i].name, strlen(counts[i].name), v, n, false);
    }
    n = net_fmt_decimal(v, st->avg_watch_ms);
    fn(ud, "avg_watch_ms", 12, v, n, true);
    n = net_fmt_decimal(v, st->engagement_rate);
    fn(ud, "engagement_rate", 15, v, n, true);
    n = net_fmt_decimal(v, st->score);
    fn(ud, "score", 5, v, n, true);
    n = proto_u64_dec(v, st->boost);
    fn(ud, "boost", 5, v, n, false);
    n = proto_i64_dec(v, st->last_ts);
    fn(ud, "last_ts", 7, v, n, false);
    for (size_t i = 0; i < st->nplatforms; i++) {
        char name[8 + ENG_PLATFORM_MAX + 1];
        size_t pl = strlen(st->platforms[i].name);
        if (pl > ENG_PLATFORM_MAX)
            pl = ENG_PLATFORM_MAX;
        memcpy(name, "shares_", 7);
        memcpy(name + 7, st->platforms[i].name, pl);
        n = proto_u64_dec(v, st->platforms[i].shares);
        fn(ud, name, 7 + pl, v, n, false);
    }
}

_Static_assert(200 + 10 * 5 + ENG_IPSTR_MAX + 4 * (ENG_SESSION_MAX + ENG_PLATFORM_MAX + ENG_UA_MAX) +
                       6 <= NET_HISTORY_REC_MAX,
               "NET_HISTORY_REC_MAX too small for the longest record");

static size_t put(char *out, size_t o, const char *s, size_t n)
{
    memcpy(out + o, s, n);
    return o + n;
}

size_t net_history_format(const struct eng_history_rec *r, char *out)
{
    size_t o = proto_u64_dec(out, r->short_id);
    out[o++] = ' ';
    const char *tn = eng_type_name(r->type);
    o = put(out, o, tn, strlen(tn));
    o = put(out, o, " ts=", 4);
    o += proto_i64_dec(out + o, r->ts);
    if (r->session) {
        o = put(out, o, " session=", 9);
        o += proto_quote(out + o, (const uint8_t *)r->session, r->session_len);
    }
    if (r->user) {
        o = put(out, o, " user=", 6);
        o += proto_u64_dec(out + o, r->user);
    }
    if (r->has_watch) {
        o = put(out, o, " watch_ms=", 10);
        o += proto_u64_dec(out + o, r->watch_ms);
    }
    if (r->platform) {
        o = put(out, o, " platform=", 10);
        o += proto_quote(out + o, (const uint8_t *)r->platform, r->platform_len);
    }
    if (r->ip[0]) {
        size_t il = strnlen(r->ip, sizeof r->ip);
        o = put(out, o, " ip=", 4);
        o += proto_quote(out + o, (const uint8_t *)r->ip, il);
    }
    if (r->ua) {
        o = put(out, o, " ua=", 4);
        o += proto_quote(out + o, (const uint8_t *)r->ua, r->ua_len);
    }
    return o;
}

/* ---- replies with accounting --------------------------------------------------- */

/* INFO errorstats: n more error replies whose first word is its code. A
 * code past the table's room (there are far fewer) counts as the last. */
static void errstat_count(struct server *s, const char *msg, uint64_t times)
{
    size_t n = strcspn(msg, " ");
    if (!msg[n] || n > NET_ERRCODE_MAX) {  /* no code word: Redis counts it as ERR */
        msg = "ERR";
        n = 3;
    }
    uint32_t i = 0;
    while (i < s->nerrstat && !(strncmp(s->errstat[i].code, msg, n) == 0 &&
                                s->errstat[i].code[n] == 0))
        i++;
    if (i == s->nerrstat) {
        if (i == NET_ERRSTAT_MAX) {
            i--;
        } else {
            memcpy(s->errstat[i].code, msg, n);
            s->errstat[i].code[n] = 0;
            s->nerrstat++;
        }
    }
    s->errstat[i].count += times;
}

/* The same error reply to n commands: counted once for all of them. */
static void reply_error_n(struct server *s, struct conn *c, const char *msg, uint64_t n)
{
    s->st.errors += n;
    errstat_count(s, msg, n);
    s->cur.failed = true;  /* for the command running, if one is */
    for (uint64_t i = 0; i < n; i++)
        net_reply_error(&c->out, msg);
}

static void reply_error_raw(struct server *s, struct conn *c, const char *msg)
{
    reply_error_n(s, c, msg, 1);
}

static void reply_err(struct server *s, struct conn *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reply_err(struct server *s, struct conn *c, const char *fmt, ...)
{
    char msg[512];
    memcpy(msg, "ERR ", 4);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + 4, sizeof msg - 4, fmt, ap);
    va_end(ap);
    reply_error_raw(s, c, msg);
}

static bool arg_is(const struct proto_arg *a, const char *lit)
{
    size_t n = strlen(lit);
    return a->len == n && eq_lower(a->p, lit, n);
}

/* ---- the TRACK fast path -------------------------------------------------------- */

static void reply_eng_err(struct server *s, struct conn *c, int rc, const struct eng_err *e)
{
    if (e->msg[0])
        reply_err(s, c, "%s", e->msg);
    else
        reply_err(s, c, "%s", rc == ENG_ENOMEM ? "out of memory" : "engine error");
}

static void reply_ok_n(struct server *s, struct conn *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        net_reply_ok(&c->out);
    s->dirty += n;
}

/* A command refused inside MULTI fails the transaction: EXEC aborts (Redis's
 * flagTransaction). Outside MULTI it does nothing. */
static void flag_transaction(struct conn *c)
{
    if (c->multi.active)
        c->multi.dirty = true;
}

/* Redis's words for a command refused over maxmemory; redis-py and other
 * clients map them to their out-of-memory error. */
#define OOM_MSG "OOM command not allowed when used memory > 'maxmemory'."

/* Over --maxmemory, as Redis refuses its "denyoom" commands: the n writes
 * are each answered OOM and counted, nothing is recorded, and a
 * transaction being queued fails (queuing takes memory too). */
static bool refuse_oom_n(struct server *s, struct conn *c, size_t n)
{
    if (!net_refuse_writes(s, n))
        return false;
    reply_error_n(s, c, OOM_MSG, n);
    flag_transaction(c);
    return true;
}

static bool refuse_oom(struct server *s, struct conn *c)
{
    return refuse_oom_n(s, c, 1);
}

static void record_single(struct server *s, struct conn *c, const struct eng_ix *ix)
{
    struct eng_err e = {.index = -1};
    int rc = eng_record(s->eng, ix, &e);
    if (rc == ENG_OK) {
        net_reply_ok(&c->out);
        s->dirty++;
    } else {
        reply_eng_err(s, c, rc, &e);
    }
}

/* ---- command statistics and the slow log ------------------------------------------ */

/* The writes' commandstats, by their places in the command table (the
 * commandstats tests fail if either moves): TRACK's fast path and EXEC's
 * batch count there without a lookup. */
enum { SLOT_TRACK = 0, SLOT_BOOST = 6 };

/* A run of nsec is for the slow log: callers check this first, so the
 * entry's arguments are worked out only for a slow command. */
static bool slowlog_wants(const struct server *s, uint64_t nsec)
{
    int64_t min = s->cfg.slowlog_slower_us;
    return min >= 0 && nsec / 1000u >= (uint64_t)min;
}

static void slowlog_note(struct server *s, const struct conn *c, const struct proto_arg *argv,
                         size_t argc, uint64_t redact, const char *note, uint64_t nsec)
{
    uint64_t usec = nsec / 1000u;
    if (net_slowlog_push(&s->slowlog, argv, argc, redact, note, (int64_t)time(NULL), usec,
                         c->addr, c->name))
        net_warn("client %s: out of memory for a slow log entry (%llu us); not kept", c->addr,
                 (unsigned long long)usec);
}

/* Applies the parsed TRACK run in order; frees the scratch for reuse.
 * eng_record_batch is the fast path (its staged prefetch overlaps the
 * misses of the whole run), but it is all-or-nothing while each TRACK must
 * succeed or fail on its own. So when the batch names a bad element k, the
 * run before k is applied as a batch (it passed), k alone through
 * eng_record (its exact error, against the same state a one-by-one apply
 * would see) and the rest is retried. A failure naming no element (engine
 * out of memory for its scratch) falls back to one by one. The outcome and
 * the replies are those of eng_record called in order. */
static void batch_apply(struct server *s, struct conn *c)
{
    const struct eng_ix *ix = s->batch;
    size_t n = s->nbatch;
    struct net_cmdstat *st = &s->cmdstat[SLOT_TRACK];
    if (n > 0 && refuse_oom_n(s, c, n)) {
        st->rejected += n;
        n = 0;
    }
    const size_t total = n;
    const uint64_t errors0 = s->st.errors, t0 = total ? net_mono_nsec() : 0;
    while (n > 0) {
        struct eng_err e = {.index = -1};
        if (eng_record_batch(s->eng, ix, n, &e) == ENG_OK) {
            reply_ok_n(s, c, n);
            break;
        }
        if (e.index < 0 || (size_t)e.index >= n) {
            for (size_t i = 0; i < n; i++)
                record_single(s, c, &ix[i]);
            break;
        }
        size_t k = (size_t)e.index;
        if (k > 0) {
            struct eng_err e2 = {.index = -1};
            if (eng_record_batch(s->eng, ix, k, &e2) == ENG_OK) {
                reply_ok_n(s, c, k);
            } else {
                for (size_t i = 0; i < k; i++)
                    record_single(s, c, &ix[i]);
            }
        }
        record_single(s, c, &ix[k]);
        ix += k + 1;
        n -= k + 1;
    }
    if (total) {
        /* one time for the run: the engine applies it as one batch */
        uint64_t dt = net_mono_nsec() - t0;
        st->calls += total;
        st->nsec += dt;
        st->failed += s->st.errors - errors0;
        if (slowlog_wants(s, dt)) {
            char note[48];
            snprintf(note, sizeof note, "(run of %zu TRACKs)", total);
            slowlog_note(s, c, s->batch_argv, s->batch_argc, 0, total > 1 ? note : NULL, dt);
        }
    }
    s->nbatch = 0;
    s->scratch_used = 0;
}

/* ---- commands -------------------------------------------------------------------- */

typedef void (*cmd_fn)(struct server *s, struct conn *c, const struct proto_cmd *cmd);

enum cmd_flag {
    CF_NOAUTH = 1,   /* allowed before AUTH */
    CF_INMULTI = 2,  /* runs at once inside MULTI (MULTI, EXEC, DISCARD, QUIT) */
    CF_QUEUE = 4,    /* queued inside MULTI as a write (validated now, one engine batch) */
    CF_NOMULTI = 8,  /* refused inside MULTI; every other command is queued as it is */
};

struct command {
    const char *name;   /* lower case, as in "wrong number of arguments for 'x'" */
    size_t len;
    int min_argc, max_argc;  /* including the name; max -1 = any */
    unsigned flags;
    int key;            /* argument that is the short id (a proxy shards by it), 0 = none */
    const char *rflags; /* Redis's flag words for COMMAND INFO, space-separated, but for
                           write, denyoom (CF_QUEUE) and no_auth (CF_NOAUTH) */
    cmd_fn fn;          /* with subcommands: the command alone (NULL when it needs one) */
    const struct subtable *subs;  /* its subcommands (CONFIG, CLIENT, COMMAND), or NULL */
};

/* A command's subcommands (CONFIG GET, CLIENT LIST ...): looked up and
 * their arity checked as commands are, with Redis's "'parent|sub'" name in
 * the error. HELP is answered from the table, as Redis answers it: one
 * status line per line of each `help`, usage first, then its meaning. */
struct subcommand {
    const char *name;        /* lower case */
    int min_argc, max_argc;  /* including the command and the subcommand; max -1 = any */
    cmd_fn fn;
    const char *help;        /* "USAGE\n    what it does[\n    more]" */
};

static size_t help_lines(const char *t)
{
    size_t n = 1;
    for (; *t; t++)
        n += *t == '\n';
    return n;
}

static void help_reply(struct net_buf *out, const char *t)
{
    for (const char *nl; (nl = strchr(t, '\n')); t = nl + 1)
        net_reply_status_n(out, t, (size_t)(nl - t));
    net_reply_status(out, t);
}

/* A command's subcommand table. */
struct subtable {
    const char *parent;       /* lower case */
    const struct subcommand *subs;
    size_t n;
};

static const struct subcommand help_sub = {"help", 2, 2, NULL, NULL};

static bool arity_ok(size_t argc, int min, int max)
{
    return (int)argc >= min && (max < 0 || (int)argc <= max);
}

/* The parent's name as Redis writes it in errors and HELP: "CLIENT". */
static void parent_upper(const struct subtable *t, char out[16])
{
    size_t i = 0;
    for (; t->parent[i] && i + 1 < 16; i++)
        out[i] = (char)toupper((unsigned char)t->parent[i]);
    out[i] = 0;
}

/* The subcommand cmd names, its arity checked; NULL after replying the
 * error when there is none or the arity is wrong (*named: the one named,
 * or NULL). HELP is &help_sub.
 * dispatch checks it before NOAUTH and before MULTI queues the command, as
 * Redis does; run_sub then runs what it found. */
static const struct subcommand *sub_check(struct server *s, struct conn *c,
                                          const struct proto_cmd *cmd, const struct subtable *t,
                                          const struct subcommand **named)
{
    const struct proto_arg *a = &cmd->argv[1];
    const struct subcommand *k = arg_is(a, "help") ? &help_sub : NULL;
    for (size_t i = 0; i < t->n && !k; i++)
        if (arg_is(a, t->subs[i].name))
            k = &t->subs[i];
    *named = k;
    if (!k) {
        char tmp[40], up[16];
        parent_upper(t, up);
        reply_err(s, c, "unknown subcommand '%s'. Try %s HELP.", printable(tmp, 32, a->p, a->len),
                  up);
        return NULL;
    }
    if (!arity_ok(cmd->argc, k->min_argc, k->max_argc)) {
        reply_err(s, c, "wrong number of arguments for '%s|%s' command", t->parent, k->name);
        return NULL;
    }
    return k;
}

static void run_sub(struct server *s, struct conn *c, const struct proto_cmd *cmd,
                    const struct subtable *t, const struct subcommand *k)
{
    if (k != &help_sub) {
        k->fn(s, c, cmd);
        return;
    }
    static const char tail[] = "HELP\n    Print this help.";
    size_t lines = 1 + help_lines(tail);
    for (size_t i = 0; i < t->n; i++)
        lines += help_lines(t->subs[i].help);
    net_reply_array(&c->out, lines);
    char head[64], up[16];
    parent_upper(t, up);
    snprintf(head, sizeof head, "%s <subcommand> [<arg> ...]. Subcommands are:", up);
    net_reply_status(&c->out, head);
    for (size_t i = 0; i < t->n; i++)
        help_reply(&c->out, t->subs[i].help);
    help_reply(&c->out, tail);
}

static int parse_short_id(struct server *s, struct conn *c, const struct proto_arg *a,
                          uint64_t *id)
{
    if (net_parse_id(a->p, a->len, id)) {
        reply_err(s, c, "short_id: " NET_ID_RULE);
        return -1;
    }
    return 0;
}

static void cmd_ping(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    if (cmd->argc == 2)
        net_reply_bulk(&c->out, cmd->argv[1].p, cmd->argv[1].len);
    else
        net_reply_status(&c->out, "PONG");
}

static void cmd_echo(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    net_reply_bulk(&c->out, cmd->argv[1].p, cmd->argv[1].len);
}

static void cmd_quit(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    net_reply_ok(&c->out);
    c->state = CONN_DRAINING;
}

/* SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE] [ABORT], as Redis 7 reads it. The
 * final snapshot is made here, in the foreground, so that a failed one
 * can be answered: the server then keeps running (unless FORCE), as
 * Redis does. On success the caller gets no reply; every client gets the
 * replies already produced, and the process exits 0. NOW changes nothing
 * (there are no replicas to wait for), and neither can ABORT: a shutdown
 * here never waits, so there is none in progress to cancel. */
static void cmd_shutdown(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    bool nosave = false, save = false, force = false, abort_ = false, now = false;
    for (size_t i = 1; i < cmd->argc; i++) {
        const struct proto_arg *a = &cmd->argv[i];
        if (arg_is(a, "nosave"))
            nosave = true;
        else if (arg_is(a, "save"))
            save = true;
        else if (arg_is(a, "force"))
            force = true;
        else if (arg_is(a, "abort"))
            abort_ = true;
        else if (arg_is(a, "now"))
            now = true;
        else {
            reply_err(s, c, "syntax error");
            return;
        }
    }
    if ((nosave && save) || (abort_ && (nosave || save || force || now))) {
        reply_err(s, c, "syntax error");
        return;
    }
    if (abort_) {
        reply_err(s, c, "No shutdown in progress.");
        return;
    }
    char why[128];
    snprintf(why, sizeof why, "SHUTDOWN%s%s%s from client %s",
             nosave ? " NOSAVE" : save ? " SAVE" : "", now ? " NOW" : "", force ? " FORCE" : "",
             c->addr);
    if (nosave) {
        net_snapshot_stop(s, "SHUTDOWN NOSAVE");
        if (s->dirty)
            net_warn("SHUTDOWN NOSAVE: changes since the last snapshot not saved: %llu",
                     (unsigned long long)s->dirty);
    } else {
        if (save || s->dirty)
            net_info("%s: saving the final snapshot first", why);
        if (net_final_snapshot(s, save) != 0) {
            if (!force) {
                reply_err(s, c, "Errors trying to SHUTDOWN. Check logs.");
                return;
            }
            s->exit_code = 1;
        }
    }
    s->final_done = true;
    c->state = CONN_DRAINING;  /* its earlier replies go out; this one has none */
    net_shutdown_begin(s, why);
}

/* CONFIG GET pattern [pattern ...]: the settings whose names match any of
 * the glob patterns (Redis's CONFIG GET, case-insensitive), as name, value
 * pairs in --help order, each once. Three Redis names answer what they mean
 * here, for tools that ask Redis for them (redis-benchmark does; job queues
 * check the policy): "save", a snapshot every snapshot-interval seconds
 * when anything changed; "appendonly", no; "maxmemory-policy", noeviction.
 * CONFIG SET (below) only reads them. */
enum { CONFIG_PATTERN_MAX = 255 };
enum { CONFIG_SAVE, CONFIG_APPENDONLY, CONFIG_POLICY };
static const char *const config_alias[] = {[CONFIG_SAVE] = "save",
                                           [CONFIG_APPENDONLY] = "appendonly",
                                           [CONFIG_POLICY] = "maxmemory-policy"};
#define CONFIG_NALIAS (sizeof config_alias / sizeof config_alias[0])

/* Setting k's name: the flags', then the Redis aliases; NULL past them. */
static const char *config_name(size_t k, size_t nset)
{
    return k < nset ? net_config_key(k) : k < nset + CONFIG_NALIAS ? config_alias[k - nset] : NULL;
}

/* Patterns are checked before this (length, no NUL). */
static bool config_wanted(const struct proto_cmd *cmd, const char *name)
{
    char pat[CONFIG_PATTERN_MAX + 1];
    for (size_t i = 2; i < cmd->argc; i++) {
        memcpy(pat, cmd->argv[i].p, cmd->argv[i].len);
        pat[cmd->argv[i].len] = 0;
        if (fnmatch(pat, name, FNM_CASEFOLD) == 0)
            return true;
    }
    return false;
}

static void config_get(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    for (size_t i = 2; i < cmd->argc; i++)
        if (cmd->argv[i].len > CONFIG_PATTERN_MAX || memchr(cmd->argv[i].p, 0, cmd->argv[i].len)) {
            reply_err(s, c, "pattern: must be at most %d bytes, with no NUL", CONFIG_PATTERN_MAX);
            return;
        }
    size_t nset = 0, nhit = 0;
    while (net_config_key(nset))
        nset++;
    const char *name;
    for (size_t k = 0; (name = config_name(k, nset)); k++)
        nhit += config_wanted(cmd, name);
    net_reply_map(&c->out, nhit, c->resp);
    char v[NET_CONFIG_VALUE_MAX];
    for (size_t k = 0; (name = config_name(k, nset)); k++) {
        if (!config_wanted(cmd, name))
            continue;
        const char *val = v;
        if (k < nset)
            net_config_value(&s->cfg, k, v, sizeof v);
        else if (k - nset == CONFIG_APPENDONLY)
            val = "no";
        else if (k - nset == CONFIG_POLICY)  /* job queues insist on it */
            val = "noeviction";
        else if (s->cfg.snapshot_interval_s)  /* save: "<seconds> <changes>" */
            snprintf(v, sizeof v, "%u 1", s->cfg.snapshot_interval_s);
        else
            val = "";
        net_reply_bulk_str(&c->out, name);
        net_reply_bulk_str(&c->out, val);
    }
}

/* CONFIG SET: all pairs or none, as in Redis 7. Each is checked on a copy
 * of the configuration by the same code as the flags, so the values and
 * messages are the flags' own; only then does the copy take effect. */
static void config_set(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    if (cmd->argc % 2) {
        reply_err(s, c, "wrong number of arguments for 'config|set' command");
        return;
    }
    enum { PAIRS_MAX = 16 };  /* more than there are live settings */
    if ((cmd->argc - 2) / 2 > PAIRS_MAX) {
        reply_err(s, c, "CONFIG SET failed: at most %d settings at once", PAIRS_MAX);
        return;
    }
    struct net_config next = s->cfg;
    /* what: " key=value ..." for the log; room for every pair, each value
     * shown in at most 72 bytes */
    char keys[PAIRS_MAX][64], what[PAIRS_MAX * (1 + 64 + 1 + 72)] = "";
    size_t wo = 0;
    for (size_t i = 2; i < cmd->argc; i += 2) {
        const struct proto_arg *k = &cmd->argv[i], *v = &cmd->argv[i + 1];
        size_t pair = (i - 2) / 2;
        char *key = keys[pair], val[NET_CONFIG_VALUE_MAX], why[NET_ERR_MAX], tmp[40];
        if (k->len == 0 || k->len >= sizeof keys[0] || memchr(k->p, 0, k->len)) {
            reply_err(s, c, "CONFIG SET failed: %s: unknown setting",
                      k->len ? printable(tmp, 32, k->p, k->len) : "''");
            return;
        }
        for (size_t j = 0; j < k->len; j++)  /* any case, as Redis; '_' for '-', as the flags */
            key[j] = k->p[j] == '_' ? '-' : (char)tolower(k->p[j]);
        key[k->len] = 0;
        for (size_t j = 0; j < pair; j++)
            if (strcmp(keys[j], key) == 0) {
                reply_err(s, c, "CONFIG SET failed: %s: given twice", key);
                return;
            }
        if (v->len >= sizeof val || memchr(v->p, 0, v->len)) {
            reply_err(s, c, "CONFIG SET failed: %s: value too long or holds a NUL", key);
            return;
        }
        memcpy(val, v->p, v->len);
        val[v->len] = 0;
        if (wo < sizeof what) {  /* logged only if every pair passes */
            char shown[72];
            int n = snprintf(what + wo, sizeof what - wo, " %s=%s", key,
                             net_config_secret(key)
                                 ? "(redacted)"
                                 : printable(shown, 64, v->p, v->len));
            wo += n > 0 ? (size_t)n : 0;
        }
        if (strcmp(key, config_alias[CONFIG_POLICY]) == 0) {
            if (strcasecmp(val, "noeviction") == 0)
                continue;  /* the policy in force: setting it changes nothing */
            reply_err(s, c,
                      "CONFIG SET failed: maxmemory-policy: only noeviction (nothing is evicted, "
                      "so every count stays exact)");
            return;
        }
        for (size_t a = 0; a < CONFIG_NALIAS; a++)  /* save, appendonly: read only */
            if (strcmp(key, config_alias[a]) == 0) {
                reply_err(s, c, "CONFIG SET failed: %s: only read here, for Redis tools%s", key,
                          a == CONFIG_SAVE ? "; set snapshot-interval" : "");
                return;
            }
        if (net_config_set_live(&next, key, val, why, sizeof why)) {
            reply_err(s, c, "CONFIG SET failed: %s", why);
            return;
        }
    }
    char why[NET_ERR_MAX];
    if (net_server_config_ok(s, &next, why, sizeof why)) {
        reply_err(s, c, "CONFIG SET failed: %s", why);
        return;
    }
    /* warn: a change of how the server runs is logged at any level, and
     * before what it causes (crossing --maxmemory) */
    net_warn("client %s: CONFIG SET%s", c->addr, what);
    net_server_reconfigure(s, &next);
    net_reply_ok(&c->out);
}

/* CONFIG RESETSTAT, as Redis's: the counters go back to zero; what is in
 * the engine (interactions by type), gauges and the slow log stay. */
static void config_resetstat(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    (void)cmd;
    memset(&s->st, 0, sizeof s->st);
    memset(s->cmdstat, 0, sizeof s->cmdstat);
    memset(s->errstat, 0, sizeof s->errstat);
    s->nerrstat = 0;
    s->snap.max_fork_usec = 0;
    net_info("client %s: CONFIG RESETSTAT", c->addr);
    net_reply_ok(&c->out);
}

/* CONFIG REWRITE, as Redis's: the running settings into the --config
 * file, comments and layout kept (config.c). Refused without one. */
static void config_rewrite(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    (void)cmd;
    if (!s->cfg.config_file[0]) {
        reply_err(s, c, "The server is running without a config file");
        return;
    }
    char why[NET_ERR_MAX];
    if (net_config_rewrite_file(s->cfg.config_file, &s->cfg, why, sizeof why)) {
        net_warn("client %s: CONFIG REWRITE failed: %s", c->addr, why);
        reply_err(s, c, "Rewriting config file: %s", why);
        return;
    }
    net_warn("client %s: CONFIG REWRITE: %s holds the running settings", c->addr,
             s->cfg.config_file);
    net_reply_ok(&c->out);
}

static const struct subcommand config_list[] = {
    {"get", 3, -1, config_get,
     "GET <pattern> [<pattern> ...]\n"
     "    Each setting whose name matches a glob pattern, and its value."},
    {"set", 4, -1, config_set,
     "SET <setting> <value> [<setting> <value> ...]\n"
     "    Change settings that need no restart, all or none: maxclients,\n"
     "    requirepass, loglevel, snapshot-interval, query-buffer-limit,\n"
     "    client-output-limit, maxmemory, slowlog-log-slower-than, slowlog-max-len,\n"
     "    http-cors-origin.\n"
     "    The change lasts until the server stops, or CONFIG REWRITE saves it."},
    {"rewrite", 2, 2, config_rewrite,
     "REWRITE\n"
     "    Write the running settings into the --config file, keeping its comments."},
    {"resetstat", 2, 2, config_resetstat,
     "RESETSTAT\n"
     "    Zero the counters INFO stats, commandstats and errorstats show."},
};
static const struct subtable config_subs = {"config", config_list,
                                           sizeof config_list / sizeof config_list[0]};

/* Whether c may run commands: it passed AUTH, or connected while there was
 * no password, or there is none now. As in Redis, a password set by
 * CONFIG SET applies to connections made after it; "" opens every one. */
static bool conn_authed(const struct server *s, const struct conn *c)
{
    return c->authed || !s->cfg.requirepass[0];
}

/* The password check of AUTH and HELLO ... AUTH: the only user is Redis's
 * "default" (user NULL: AUTH <password>). With no password set, as in
 * Redis, "default" takes any password (clients that always send
 * HELLO 3 AUTH default <pw> connect) and AUTH <password> is an error. On an
 * error or a mismatch (Redis's WRONGPASS, counted and logged) it answers
 * and returns false. */
static bool auth_check(struct server *s, struct conn *c, const struct proto_arg *user,
                       const struct proto_arg *pw)
{
    bool user_ok = !user || arg_is(user, "default");
    size_t n = strlen(s->cfg.requirepass);
    if (!n && !user) {
        reply_err(s, c, "AUTH called without any password configured (--requirepass)");
        return false;
    }
    unsigned diff = n && pw->len != n;  /* no password: any matches */
    for (size_t i = 0; i < n; i++)  /* no early exit on the first differing byte */
        diff |= (unsigned)(s->cfg.requirepass[i] ^ (i < pw->len ? pw->p[i] : 0));
    if (diff || !user_ok) {
        s->st.auth_failures++;
        reply_error_raw(s, c, "WRONGPASS invalid username-password pair or user is disabled.");
        uint64_t more;
        if (net_ratelimit_ok(&s->auth_rl, ev_now(s->loop), &more))
            net_warn("client %s: AUTH with a wrong password (%llu more since the last such line)",
                     c->addr, (unsigned long long)more);
        return false;
    }
    c->authed = true;
    return true;
}

static void cmd_auth(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    /* AUTH <password>, or Redis 6's AUTH <user> <password> */
    if (auth_check(s, c, cmd->argc == 3 ? &cmd->argv[1] : NULL, &cmd->argv[cmd->argc - 1]))
        net_reply_ok(&c->out);
}

/* ---- MULTI ------------------------------------------------------------------------ */

void net_multi_free(struct net_multi *m)
{
    free(m->items);
    free(m->ixs);
    net_buf_free(&m->arena);
    *m = (struct net_multi){0};
}

static void multi_reset(struct net_multi *m)
{
    m->active = m->dirty = false;
    m->n = 0;
    m->arena.len = m->arena.off = 0;
    if (m->cap > 4096) {  /* a huge transaction: give the memory back */
        net_multi_free(m);
    }
    net_buf_shrink(&m->arena, 1u << 20);
}

static size_t arena_put(struct net_buf *a, const char *p, size_t len)
{
    if (!p)
        return SIZE_MAX;
    size_t off = a->len;
    net_buf_append(a, p, len);
    return off;
}

/* A new slot at the end of c's queue, for a command whose strings take
 * `extra` bytes of the arena; NULL (answered, transaction failed) past
 * --query-buffer-limit, counted with what it is about to add. */
static struct net_qitem *multi_push(struct server *s, struct conn *c, size_t extra)
{
    struct net_multi *m = &c->multi;
    size_t bytes = (m->n + 1) * sizeof *m->items + m->arena.len + extra;
    if (bytes > s->cfg.query_buffer_limit) {
        m->dirty = true;
        reply_err(s, c, "transaction too large (query-buffer-limit)");
        return NULL;
    }
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        struct net_qitem *it = realloc(m->items, cap * sizeof *it);
        if (!it) {
            m->dirty = true;
            reply_err(s, c, "out of memory");
            return NULL;
        }
        m->items = it;
        m->cap = cap;
    }
    return &m->items[m->n];
}

/* Queues the item multi_push gave, its strings in the arena: QUEUED, or
 * the connection closes when the arena could not take them. */
static void multi_commit(struct conn *c)
{
    if (c->multi.arena.failed) {
        c->state = CONN_CLOSING;
        return;
    }
    c->multi.n++;
    net_reply_status(&c->out, "QUEUED");
}

static void queue_track(struct server *s, struct conn *c, const struct eng_ix *ix)
{
    struct eng_err e = {.index = -1};
    int rc = eng_validate(s->eng, ix, &e);
    if (rc) {
        c->multi.dirty = true;
        reply_eng_err(s, c, rc, &e);
        return;
    }
    struct net_qitem *q =
        multi_push(s, c, ix->session_len + ix->platform_len + ix->ip_len + ix->ua_len);
    if (!q)
        return;
    struct net_buf *a = &c->multi.arena;
    q->kind = NET_Q_TRACK;
    q->ix = *ix;
    q->off_session = arena_put(a, ix->session, ix->session_len);
    q->off_platform = arena_put(a, ix->platform, ix->platform_len);
    q->off_ip = arena_put(a, ix->ip, ix->ip_len);
    q->off_ua = arena_put(a, ix->ua, ix->ua_len);
    multi_commit(c);
}

static void cmd_track(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    struct eng_ix ix;
    char err[NET_ERR_MAX];
    if (net_track_parse(&cmd->argv[1], cmd->argc - 1, &ix, err, sizeof err)) {
        flag_transaction(c);
        reply_err(s, c, "%s", err);
        return;
    }
    if (refuse_oom(s, c)) {
        s->cur.rejected = true;
    } else if (c->multi.active) {
        queue_track(s, c, &ix);
    } else {
        record_single(s, c, &ix);
    }
}

static void cmd_boost(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    uint64_t id;
    int64_t boost;
    if (parse_short_id(s, c, &cmd->argv[1], &id))
        goto bad;
    if (net_parse_i64(cmd->argv[2].p, cmd->argv[2].len, &boost) || boost < 0 ||
        boost > (int64_t)ENG_BOOST_MAX) {
        reply_err(s, c, "boost: must be an integer 0..%u", ENG_BOOST_MAX);
        goto bad;
    }
    if (refuse_oom(s, c)) {
        s->cur.rejected = true;
        return;
    }
    if (c->multi.active) {
        struct net_qitem *q = multi_push(s, c, 0);
        if (!q)
            return;
        q->kind = NET_Q_BOOST;
        q->boost_id = id;
        q->boost = boost;
        multi_commit(c);
        return;
    }
    struct eng_err e = {.index = -1};
    int rc = eng_set_boost(s->eng, id, boost, &e);
    if (rc) {
        reply_eng_err(s, c, rc, &e);
        return;
    }
    s->dirty++;
    net_reply_ok(&c->out);
    return;
bad:
    flag_transaction(c);
}

static void cmd_multi(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    if (c->multi.active) {
        reply_err(s, c, "MULTI calls can not be nested");
        return;
    }
    c->multi.active = true;
    c->multi.dirty = false;
    c->multi.n = 0;
    net_reply_ok(&c->out);
}

static void cmd_discard(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    if (!c->multi.active) {
        reply_err(s, c, "DISCARD without MULTI");
        return;
    }
    multi_reset(&c->multi);
    net_reply_ok(&c->out);
}

/* WATCH: Redis's optimistic lock is over keys, which shortstat does not
 * have (a transaction's writes are applied all or nothing anyway), so
 * WATCH says so rather than promise a check it would not make; inside
 * MULTI it is Redis's error, which leaves the transaction going. UNWATCH
 * has nothing to undo. */
static void cmd_watch(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    if (c->multi.active)
        reply_err(s, c, "WATCH inside MULTI is not allowed");
    else
        reply_err(s, c, "WATCH is not supported: there are no keys to watch (MULTI/EXEC applies "
                        "its writes all or nothing)");
}

static void cmd_unwatch(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    net_reply_ok(&c->out);
}

static inline const char *arena_str(const struct net_buf *a, size_t off)
{
    return off == SIZE_MAX ? NULL : (const char *)a->p + off;
}

static void run_queued(struct server *s, struct conn *c, const struct net_qitem *q);

enum write_outcome { W_RAN, W_FAILED, W_REJECTED };

/* The commandstats of queued writes [from, to) that EXEC ran (as one batch
 * taking nsec, shared by count), failed or refused. */
static void stat_writes(struct server *s, const struct net_multi *m, size_t from, size_t to,
                        uint64_t nsec, enum write_outcome how)
{
    size_t n[2] = {0, 0};
    for (size_t i = from; i < to; i++)
        n[m->items[i].kind == NET_Q_BOOST]++;
    for (int b = 0; b < 2; b++) {
        if (!n[b])
            continue;
        struct net_cmdstat *st = &s->cmdstat[b ? SLOT_BOOST : SLOT_TRACK];
        if (how == W_REJECTED) {
            st->rejected += n[b];
            continue;
        }
        st->calls += n[b];
        st->nsec += nsec * n[b] / (to - from);
        if (how == W_FAILED)
            st->failed += n[b];
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The shorts items [from, to) write to that the engine does not hold yet,
 * each counted once however many items name it. Without memory to sort
 * them, every such item counts: an upper bound, as good for reserving. */
static size_t exec_fresh_shorts(const struct server *s, const struct net_multi *m, size_t from,
                                size_t to)
{
    uint64_t *ids = malloc((to - from) * sizeof *ids);
    size_t n = 0;
    for (size_t i = from; i < to; i++) {
        const struct net_qitem *q = &m->items[i];
        uint64_t id = q->kind == NET_Q_TRACK ? q->ix.short_id : q->boost_id;
        if (eng_short_known(s->eng, id))
            continue;
        if (ids)
            ids[n] = id;
        n++;
    }
    if (!ids || n < 2) {
        free(ids);
        return n;
    }
    qsort(ids, n, sizeof *ids, cmp_u64);
    size_t distinct = 1;
    for (size_t i = 1; i < n; i++)
        distinct += ids[i] != ids[i - 1];
    free(ids);
    return distinct;
}

/* Applies items [from, to) of the queue, TRACKs and BOOSTs only, as one
 * all-or-nothing engine batch, BOOSTs after it: they can only fail for a
 * new short's room, reserved first for every short the batch and they
 * might create. 0, or -1 with the reason in e and nothing applied. */
static int exec_writes(struct server *s, struct net_multi *m, size_t from, size_t to,
                       struct eng_err *e)
{
    size_t ntrack = 0, fresh = 0;
    const uint64_t t0 = net_mono_nsec();
    for (size_t i = from; i < to; i++)
        ntrack += m->items[i].kind == NET_Q_TRACK;
    if (ntrack < to - from)  /* only BOOSTs need it */
        fresh = exec_fresh_shorts(s, m, from, to);
    if (fresh && eng_reserve(s->eng, fresh, e)) {
        stat_writes(s, m, from, to, net_mono_nsec() - t0, W_FAILED);
        return -1;
    }
    if (ntrack > m->ixs_cap) {
        struct eng_ix *ixs = realloc(m->ixs, ntrack * sizeof *ixs);
        if (!ixs) {
            snprintf(e->msg, sizeof e->msg, "out of memory");
            e->index = -1;
            stat_writes(s, m, from, to, net_mono_nsec() - t0, W_FAILED);
            return -1;
        }
        m->ixs = ixs;
        m->ixs_cap = ntrack;
    }
    size_t k = 0;
    for (size_t i = from; i < to; i++) {
        const struct net_qitem *q = &m->items[i];
        if (q->kind != NET_Q_TRACK)
            continue;
        struct eng_ix *ix = &m->ixs[k++];
        *ix = q->ix;
        ix->session = arena_str(&m->arena, q->off_session);
        ix->platform = arena_str(&m->arena, q->off_platform);
        ix->ip = arena_str(&m->arena, q->off_ip);
        ix->ua = arena_str(&m->arena, q->off_ua);
    }
    /* Validated when queued, so only a limit or memory fails here. */
    if (ntrack && eng_record_batch(s->eng, m->ixs, ntrack, e)) {
        stat_writes(s, m, from, to, net_mono_nsec() - t0, W_FAILED);
        return -1;
    }
    for (size_t i = from; i < to; i++) {
        const struct net_qitem *q = &m->items[i];
        struct eng_err be = {.index = -1};
        if (q->kind == NET_Q_BOOST && eng_set_boost(s->eng, q->boost_id, q->boost, &be))
            net_warn("EXEC: BOOST %llu failed despite its reservation: %s",
                     (unsigned long long)q->boost_id, be.msg);
    }
    s->dirty += to - from;
    stat_writes(s, m, from, to, net_mono_nsec() - t0, W_RAN);
    return 0;
}

/* --client-output-limit inside EXEC, whose replies to a long queue of
 * queries would otherwise pile up unchecked until it ends (a client that
 * does not read: gigabytes). Past the limit the client is closing; as in
 * Redis the transaction still runs whole, its replies dropped as made. */
static void exec_limit_output(struct server *s, struct conn *c)
{
    if (c->state != CONN_CLOSING)
        net_conn_limit_output(s, c);  /* nothing while under the limit */
    if (c->state == CONN_CLOSING)
        net_buf_consume(&c->out, net_buf_live(&c->out));
}

/* EXEC. The queue runs in order, no other client in between. Its writes
 * (TRACK, BOOST) between two other commands form one engine batch, all or
 * nothing: a transaction of writes alone is applied whole or answered
 * EXECABORT. Other commands run where they were queued and see the writes
 * before them; a batch that fails after them (memory, the platform limit)
 * gets its errors in EXEC's array, the batches before it staying applied,
 * as a command failing inside Redis's EXEC does. */
static void cmd_exec(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    struct net_multi *m = &c->multi;
    if (!m->active) {
        reply_err(s, c, "EXEC without MULTI");
        return;
    }
    if (m->dirty) {
        reply_error_raw(s, c, "EXECABORT Transaction discarded because of previous errors.");
        multi_reset(m);
        return;
    }
    bool others = false, writes = false;
    for (size_t i = 0; i < m->n; i++) {
        others |= m->items[i].kind == NET_Q_CMD;
        writes |= m->items[i].kind != NET_Q_CMD;
    }
    if (writes && net_refuse_writes(s, 1)) {  /* Redis's EXEC of "denyoom" commands */
        reply_error_raw(s, c, "EXECABORT Transaction discarded because of: " OOM_MSG);
        s->cur.rejected = true;  /* EXEC itself was refused, as Redis counts it */
        multi_reset(m);
        return;
    }
    if (!others) {
        struct eng_err e = {.index = -1};
        if (exec_writes(s, m, 0, m->n, &e)) {
            char msg[300], at[24] = "";
            if (e.index >= 0)
                snprintf(at, sizeof at, "TRACK #%d: ", (int)e.index + 1);
            snprintf(msg, sizeof msg, "EXECABORT Transaction discarded: %s%s", at,
                     e.msg[0] ? e.msg : "engine error");
            reply_error_raw(s, c, msg);
        } else {
            net_reply_array(&c->out, m->n);
            for (size_t i = 0; i < m->n; i++)
                net_reply_ok(&c->out);
        }
        multi_reset(m);
        return;
    }
    net_reply_array(&c->out, m->n);
    /* Errors in the array are the queued commands', not EXEC's own. */
    const struct net_cur_cmd mine = s->cur;
    for (size_t i = 0; i < m->n; s->cur = mine) {
        exec_limit_output(s, c);
        if (m->items[i].kind == NET_Q_CMD) {
            run_queued(s, c, &m->items[i++]);
            continue;
        }
        size_t j = i;
        while (j < m->n && m->items[j].kind != NET_Q_CMD)
            j++;
        if (refuse_oom_n(s, c, j - i)) {  /* a query before it may have moved the limit */
            stat_writes(s, m, i, j, 0, W_REJECTED);
            i = j;
            continue;
        }
        struct eng_err e = {.index = -1};
        if (exec_writes(s, m, i, j, &e) == 0) {
            for (; i < j; i++)
                net_reply_ok(&c->out);
            continue;
        }
        const char *why = e.msg[0] ? e.msg : "engine error";
        for (int t = 0; i < j; i++) {  /* t: the TRACK's place in this batch */
            bool track = m->items[i].kind == NET_Q_TRACK;
            if (track && t++ == e.index)
                reply_err(s, c, "%s", why);
            else
                reply_err(s, c, "not applied: %s", why);
        }
    }
    exec_limit_output(s, c);
    multi_reset(m);
}

/* ---- queries ------------------------------------------------------------------------ */

static void stats_field_reply(void *ud, const char *name, size_t nl, const char *v, size_t vl,
                              bool dec)
{
    struct net_buf *b = ud;
    net_reply_bulk(b, name, nl);
    net_reply_bulk(b, v, vl);
}

static void cmd_stats(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    uint64_t id;
    if (parse_short_id(s, c, &cmd->argv[1], &id))
        return;
    struct eng_stats st;
    eng_stats(s->eng, id, &st);
    net_reply_map(&c->out, net_stats_nfields(&st), c->resp);  /* a map in RESP3, as HGETALL */
    net_stats_fields(&st, stats_field_reply, &c->out);
}

/* ENGAGEMENT and SCORE: one derived stat of a short, formatted as STATS does. */
static void reply_stat_decimal(struct server *s, struct conn *c, const struct proto_cmd *cmd,
                               bool score)
{
    uint64_t id;
    if (parse_short_id(s, c, &cmd->argv[1], &id))
        return;
    struct eng_stats st;
    eng_stats(s->eng, id, &st);
    char v[NET_DECIMAL_MAX];
    net_reply_bulk(&c->out, v, net_fmt_decimal(v, score ? st.score : st.engagement_rate));
}

static void cmd_engagement(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    reply_stat_decimal(s, c, cmd, false);
}

static void cmd_score(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    reply_stat_decimal(s, c, cmd, true);
}

static void cmd_top(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    uint64_t k;
    if (net_parse_u64(cmd->argv[1].p, cmd->argv[1].len, &k) || k < 1 || k > ENG_TOPK_MAX) {
        reply_err(s, c, "k: must be an integer 1..%u", ENG_TOPK_MAX);
        return;
    }
    int metric = ENG_M_SCORE;
    if (cmd->argc == 3 || (cmd->argc == 4 && !arg_is(&cmd->argv[2], "by"))) {
        reply_err(s, c, "syntax error: TOP <k> [BY <metric>]");
        return;
    }
    if (cmd->argc == 4) {
        const struct proto_arg *a = &cmd->argv[3];
        char name[32];
        metric = -1;
        if (a->len < sizeof name) {
            for (size_t i = 0; i < a->len; i++)
                name[i] = (char)tolower(a->p[i]);
            metric = eng_metric_parse(name, a->len);
        }
        if (metric < 0) {
            char tmp[48], all[256];
            net_metric_list(all, sizeof all);
            reply_err(s, c, "by: unknown metric '%s' (%s)", printable(tmp, sizeof tmp, a->p, a->len),
                      all);
            return;
        }
    }
    struct eng_err e = {.index = -1};
    int n = eng_top(s->eng, (enum eng_metric)metric, (uint32_t)k, s->top, &e);
    if (n < 0) {
        reply_eng_err(s, c, n, &e);
        return;
    }
    net_reply_array(&c->out, 2 * (size_t)n);
    for (int i = 0; i < n; i++) {
        char v[NET_DECIMAL_MAX];
        net_reply_bulk_u64(&c->out, s->top[i].short_id);
        net_reply_bulk(&c->out, v, net_fmt_metric(v, (enum eng_metric)metric, s->top[i].value));
    }
}

static void cmd_history(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    bool is_user = arg_is(&cmd->argv[1], "user");
    if (!is_user && !arg_is(&cmd->argv[1], "session")) {
        reply_err(s, c, "syntax error: HISTORY SESSION <session> [limit] | HISTORY USER <user> [limit]");
        return;
    }
    uint64_t limit = 20;
    if (cmd->argc == 4 &&
        (net_parse_u64(cmd->argv[3].p, cmd->argv[3].len, &limit) || limit == 0)) {
        reply_err(s, c, "limit: " NET_ID_RULE);
        return;
    }
    if (limit > s->cfg.history)
        limit = s->cfg.history;
    const struct proto_arg *id = &cmd->argv[2];
    size_t n;
    if (is_user) {
        uint64_t user;
        if (net_parse_id(id->p, id->len, &user)) {
            reply_err(s, c, "user: " NET_ID_RULE);
            return;
        }
        n = eng_history_user(s->eng, user, s->hist, (size_t)limit);
    } else {
        struct eng_err e;
        if (eng_session_check((const char *)id->p, id->len, &e) != ENG_OK) {
            reply_err(s, c, "%s", e.msg);
            return;
        }
        n = eng_history_session(s->eng, (const char *)id->p, id->len, s->hist, (size_t)limit);
    }
    net_reply_array(&c->out, n);
    for (size_t i = 0; i < n; i++) {
        /* Format straight into the reply: header sized for the longest record. */
        uint8_t *o = net_buf_reserve(&c->out, PROTO_INT_SIZE + NET_HISTORY_REC_MAX + 2);
        if (!o)
            return;
        char rec[NET_HISTORY_REC_MAX];
        size_t len = net_history_format(&s->hist[i], rec);
        c->out.len += proto_enc_bulk(o, rec, len);
    }
}

static void cmd_session(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    if (!arg_is(&cmd->argv[1], "new")) {
        char tmp[48];
        reply_err(s, c, "unknown SESSION subcommand '%s' (SESSION NEW)",
                  printable(tmp, sizeof tmp, cmd->argv[1].p, cmd->argv[1].len));
        return;
    }
    char sid[ENG_SID_LEN + 1];
    eng_session_new(s->eng, sid);
    net_reply_bulk(&c->out, sid, strlen(sid));
}

/* Starts a background snapshot; answers ok, or why it could not start. */
static void snapshot_reply(struct server *s, struct conn *c, const char *ok)
{
    char err[256];
    if (net_snapshot_start(s, err, sizeof err))
        reply_err(s, c, "%s", err);
    else
        net_reply_status(&c->out, ok);
}

static void cmd_snapshot(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    snapshot_reply(s, c, "Snapshot started");
}

/* BGSAVE [SCHEDULE], as Redis answers it, for tools written for Redis: the
 * same background snapshot as SNAPSHOT. SCHEDULE while one runs has the
 * server's cron start another once none runs (it saves the state then). */
static void cmd_bgsave(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    bool schedule = cmd->argc == 2 && arg_is(&cmd->argv[1], "schedule");
    if (cmd->argc == 2 && !schedule) {
        reply_err(s, c, "syntax error");
        return;
    }
    if (s->snap.in_progress) {
        if (!schedule) {
            reply_err(s, c, "Background save already in progress");
            return;
        }
        s->snap.scheduled = true;
        net_reply_status(&c->out, "Background saving scheduled");
        return;
    }
    snapshot_reply(s, c, "Background saving started");
}

/* LASTSAVE: when the newest good snapshot on disk was written, Unix
 * seconds (INFO's last_snapshot_unix; 0 when there is none). A backup
 * script sends BGSAVE and waits for this to change. */
static void cmd_lastsave(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    net_reply_int(&c->out, s->snap.last_unix);
}

/* ---- INFO ---------------------------------------------------------------------------- */

/* Text built in s->tmp (INFO, CLIENT LIST): tmp_begin empties it, tmp_reply
 * sends it as one bulk string, or an error if building it ran out of memory,
 * and gives back what one large answer grew it to. */
static struct net_buf *tmp_begin(struct server *s)
{
    s->tmp.len = s->tmp.off = 0;
    s->tmp.failed = false;
    return &s->tmp;
}

static void tmp_reply(struct server *s, struct conn *c)
{
    if (s->tmp.failed)
        reply_err(s, c, "out of memory");
    else
        net_reply_bulk(&c->out, s->tmp.p, s->tmp.len);
    s->tmp.len = s->tmp.off = 0;
    net_buf_shrink(&s->tmp, 64u << 10);
}

static void infof(struct net_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void infof(struct net_buf *b, const char *fmt, ...)
{
    va_list ap;
    uint8_t *o = net_buf_reserve(b, 256);
    if (!o)
        return;
    va_start(ap, fmt);
    int n = vsnprintf((char *)o, 256, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n >= 256) {
        o = net_buf_reserve(b, (size_t)n + 1);
        if (!o)
            return;
        va_start(ap, fmt);
        vsnprintf((char *)o, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

/* DEFAULT is what INFO alone gives; commandstats and errorstats come with
 * ALL or by name, as in Redis. */
enum { SEC_SERVER = 1, SEC_CLIENTS = 2, SEC_MEMORY = 4, SEC_STATS = 8, SEC_PERSIST = 16,
       SEC_ENGINE = 32, SEC_DEFAULT = 63, SEC_CMDSTATS = 64, SEC_ERRSTATS = 128, SEC_ALL = 255 };

static void info_cmdstats(const struct server *s, struct net_buf *b);

static const char *snap_status_name(enum net_snap_status st)
{
    return st == NET_SNAP_OK ? "ok" : st == NET_SNAP_ERR ? "err" : "none";
}

static void info_text(struct server *s, struct net_buf *b, unsigned sections)
{
    struct eng_info ei;
    eng_info(s->eng, &ei);
    double now = ev_now(s->loop);
    const char *sep = "";
    if (sections & SEC_SERVER) {
        infof(b, "# Server\r\n");
        infof(b, "version:%s\r\n", NET_VERSION);
        infof(b, "process_id:%d\r\n", (int)getpid());
        infof(b, "bind:%s\r\n", s->cfg.bind);
        infof(b, "tcp_port:%u\r\n", s->port);
        infof(b, "uptime_s:%lld\r\n", (long long)(now - s->start_time));
        infof(b, "config_file:%s\r\n", s->cfg.config_file);
        sep = "\r\n";
    }
    if (sections & SEC_CLIENTS) {
        uint64_t inbuf = 0, outbuf = 0;
        for (const struct conn *c = s->conns; c; c = c->next) {
            inbuf += net_buf_live(&c->in);
            outbuf += net_buf_live(&c->out);
        }
        infof(b, "%s# Clients\r\n", sep);
        infof(b, "connected_clients:%u\r\n", net_line_clients(s));
        infof(b, "maxclients:%u\r\n", s->cfg.maxclients);
        infof(b, "blocked_clients:0\r\n");  /* no blocking commands; redis-cli --stat reads it */
        infof(b, "total_connections_received:%llu\r\n",
              (unsigned long long)s->st.connections_received);
        infof(b, "rejected_connections:%llu\r\n", (unsigned long long)s->st.rejected_connections);
        infof(b, "output_limit_disconnects:%llu\r\n",
              (unsigned long long)s->st.output_limit_disconnects);
        infof(b, "query_limit_disconnects:%llu\r\n",
              (unsigned long long)s->st.query_limit_disconnects);
        infof(b, "client_output_limit:%llu\r\n", (unsigned long long)s->cfg.client_output_limit);
        infof(b, "query_buffer_limit:%llu\r\n", (unsigned long long)s->cfg.query_buffer_limit);
        infof(b, "pending_input_bytes:%llu\r\n", (unsigned long long)inbuf);
        infof(b, "pending_output_bytes:%llu\r\n", (unsigned long long)outbuf);
        sep = "\r\n";
    }
    if (sections & SEC_MEMORY) {
        unsigned long long used = (unsigned long long)net_used_memory(s);
        infof(b, "%s# Memory\r\n", sep);
        /* Redis's name first: redis-cli --stat takes the first line that
         * starts with "used_memory" */
        infof(b, "used_memory:%llu\r\n", used);
        infof(b, "used_memory_bytes:%llu\r\n", used);
        infof(b, "used_memory_engine_bytes:%llu\r\n", (unsigned long long)ei.mem_total);
        infof(b, "used_memory_records_bytes:%llu\r\n", (unsigned long long)ei.mem_records);
        infof(b, "used_memory_viewers_bytes:%llu\r\n", (unsigned long long)ei.mem_viewers);
        infof(b, "used_memory_clients_bytes:%llu\r\n", (unsigned long long)s->client_mem);
        infof(b, "maxmemory:%llu\r\n", (unsigned long long)s->cfg.maxmemory);
        infof(b, "maxmemory_policy:noeviction\r\n");  /* the only one; tools check it */
        infof(b, "rss_bytes:%llu\r\n", (unsigned long long)net_rss_bytes());
        uint64_t pf_bytes, pf_dropped;
        net_prefault_stats(s->prefault, &pf_bytes, &pf_dropped);
        infof(b, "prefault:%s\r\n", s->prefault ? "yes" : "no");
        infof(b, "prefault_bytes:%llu\r\n", (unsigned long long)pf_bytes);
        infof(b, "prefault_dropped:%llu\r\n", (unsigned long long)pf_dropped);
        infof(b, "prefault_rescues:%llu\r\n",
              (unsigned long long)net_prefault_rescues(s->prefault));
        sep = "\r\n";
    }
    if (sections & SEC_STATS) {
        infof(b, "%s# Stats\r\n", sep);
        infof(b, "interactions_total:%llu\r\n", (unsigned long long)ei.interactions);
        infof(b, "commands_total:%llu\r\n", (unsigned long long)s->st.commands);
        infof(b, "total_commands_processed:%llu\r\n", (unsigned long long)s->st.commands);
        infof(b, "errors_total:%llu\r\n", (unsigned long long)s->st.errors);
        uint64_t replied = 0;  /* errorstats' sum: errors_total also counts a limit's last words */
        for (uint32_t i = 0; i < s->nerrstat; i++)
            replied += s->errstat[i].count;
        infof(b, "total_error_replies:%llu\r\n", (unsigned long long)replied);
        infof(b, "protocol_errors:%llu\r\n", (unsigned long long)s->st.protocol_errors);
        infof(b, "cross_protocol_closed:%llu\r\n", (unsigned long long)s->st.cross_protocol_closed);
        infof(b, "auth_failures:%llu\r\n", (unsigned long long)s->st.auth_failures);
        infof(b, "oom_refused:%llu\r\n", (unsigned long long)s->st.oom_refused);
        infof(b, "net_input_bytes:%llu\r\n", (unsigned long long)s->st.net_input_bytes);
        infof(b, "net_output_bytes:%llu\r\n", (unsigned long long)s->st.net_output_bytes);
        infof(b, "mid_input_writes:%llu\r\n", (unsigned long long)s->st.mid_input_writes);
        for (int t = 0; t < ENG_T_COUNT; t++)
            infof(b, "interactions_%s:%llu\r\n", eng_type_name((enum eng_type)t),
                  (unsigned long long)ei.by_type[t]);
        sep = "\r\n";
    }
    if (sections & SEC_PERSIST) {
        const struct net_snapshot *sn = &s->snap;
        infof(b, "%s# Persistence\r\n", sep);
        infof(b, "dir:%s\r\n", s->cfg.dir);
        infof(b, "snapshot_interval_s:%u\r\n", s->cfg.snapshot_interval_s);
        infof(b, "snapshot_in_progress:%d\r\n", sn->in_progress ? 1 : 0);
        infof(b, "snapshot_scheduled:%d\r\n", sn->scheduled ? 1 : 0);
        infof(b, "changes_since_last_snapshot:%llu\r\n", (unsigned long long)s->dirty);
        infof(b, "last_snapshot_unix:%lld\r\n", (long long)sn->last_unix);
        infof(b, "last_snapshot_status:%s\r\n", snap_status_name(sn->last_status));
        infof(b, "last_snapshot_duration_ms:%llu\r\n", (unsigned long long)sn->last_duration_ms);
        infof(b, "last_snapshot_bytes:%llu\r\n", (unsigned long long)sn->last_bytes);
        infof(b, "last_snapshot_raw_bytes:%llu\r\n", (unsigned long long)sn->last_raw_bytes);
        infof(b, "last_snapshot_error:%s\r\n", sn->last_error);
        infof(b, "last_fork_usec:%llu\r\n", (unsigned long long)sn->last_fork_usec);
        infof(b, "max_fork_usec:%llu\r\n", (unsigned long long)sn->max_fork_usec);
        infof(b, "snapshots_total:%llu\r\n", (unsigned long long)sn->total);
        infof(b, "snapshots_failed:%llu\r\n", (unsigned long long)sn->failed);
        infof(b, "loaded_snapshot:%d\r\n", sn->loaded ? 1 : 0);
        infof(b, "loaded_snapshot_created_unix:%lld\r\n",
              (long long)(sn->loaded_created_ms / 1000));
        infof(b, "load_duration_ms:%llu\r\n", (unsigned long long)sn->load_ms);
        sep = "\r\n";
    }
    if (sections & SEC_ENGINE) {
        infof(b, "%s# Engine\r\n", sep);
        infof(b, "shorts:%llu\r\n", (unsigned long long)ei.shorts);
        infof(b, "sessions:%llu\r\n", (unsigned long long)ei.sessions);
        infof(b, "users:%llu\r\n", (unsigned long long)ei.users);
        infof(b, "records:%llu\r\n", (unsigned long long)ei.records);
        infof(b, "viewer_pairs:%llu\r\n", (unsigned long long)ei.viewer_pairs);
        infof(b, "sessions_evicted:%llu\r\n", (unsigned long long)ei.sessions_evicted);
        infof(b, "history:%u\r\n", ei.history);
        infof(b, "session_ttl_s:%lld\r\n", (long long)(ei.session_ttl_ms / 1000));
        sep = "\r\n";
    }
    if (sections & SEC_CMDSTATS) {
        infof(b, "%s# Commandstats\r\n", sep);
        info_cmdstats(s, b);
        sep = "\r\n";
    }
    if (sections & SEC_ERRSTATS) {
        infof(b, "%s# Errorstats\r\n", sep);
        for (uint32_t i = 0; i < s->nerrstat; i++)
            infof(b, "errorstat_%s:count=%llu\r\n", s->errstat[i].code,
                  (unsigned long long)s->errstat[i].count);
    }
}

static void cmd_info(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    static const struct { const char *name; unsigned bits; } secs[] = {
        {"server", SEC_SERVER},   {"clients", SEC_CLIENTS},     {"memory", SEC_MEMORY},
        {"stats", SEC_STATS},     {"persistence", SEC_PERSIST}, {"engine", SEC_ENGINE},
        {"commandstats", SEC_CMDSTATS}, {"errorstats", SEC_ERRSTATS},
        {"all", SEC_ALL},         {"default", SEC_DEFAULT},     {"everything", SEC_ALL},
    };
    /* Several sections are their union and an unknown one adds nothing, as
     * in Redis 7: INFO nosuch answers an empty text. */
    unsigned sections = cmd->argc == 1 ? SEC_DEFAULT : 0;
    for (size_t a = 1; a < cmd->argc; a++)
        for (size_t i = 0; i < sizeof secs / sizeof secs[0]; i++)
            if (arg_is(&cmd->argv[a], secs[i].name))
                sections |= secs[i].bits;
    info_text(s, tmp_begin(s), sections);
    tmp_reply(s, c);
}

/* ---- SLOWLOG ------------------------------------------------------------------------ */

/* SLOWLOG GET [count]: the newest entries first, each as Redis gives it:
 * id, unix time, microseconds, the arguments, client address, client name.
 * count defaults to 10; -1 is every entry. */
static void slowlog_get(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    int64_t count = 10;
    if (cmd->argc == 3 &&
        (net_parse_i64(cmd->argv[2].p, cmd->argv[2].len, &count) || count < -1)) {
        reply_err(s, c, "count should be greater than or equal to -1");
        return;
    }
    uint32_t len = net_slowlog_len(&s->slowlog);
    uint32_t n = count < 0 || (uint64_t)count > len ? len : (uint32_t)count;
    net_reply_array(&c->out, n);
    for (uint32_t i = 0; i < n; i++) {
        const struct net_slowlog_entry *e = net_slowlog_get(&s->slowlog, i);
        net_reply_array(&c->out, 6);
        net_reply_int(&c->out, (int64_t)e->id);
        net_reply_int(&c->out, e->unix_s);
        net_reply_int(&c->out, (int64_t)e->usec);
        net_reply_array(&c->out, e->argc);
        for (uint32_t j = 0; j < e->argc; j++)
            net_reply_bulk(&c->out, e->argv[j].p, e->argv[j].len);
        net_reply_bulk_str(&c->out, e->addr);
        net_reply_bulk_str(&c->out, e->name);
    }
}

static void slowlog_len(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    (void)cmd;
    net_reply_int(&c->out, net_slowlog_len(&s->slowlog));
}

static void slowlog_reset(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    (void)cmd;
    net_slowlog_reset(&s->slowlog);
    net_reply_ok(&c->out);
}

static const struct subcommand slowlog_list[] = {
    {"get", 2, 3, slowlog_get,
     "GET [<count>]\n"
     "    The newest <count> entries (default 10; -1 for all): id, unix time,\n"
     "    microseconds, arguments, client address, client name."},
    {"len", 2, 2, slowlog_len, "LEN\n    Entries in the slow log."},
    {"reset", 2, 2, slowlog_reset, "RESET\n    Empty the slow log."},
};
static const struct subtable slowlog_subs = {"slowlog", slowlog_list,
                                            sizeof slowlog_list / sizeof slowlog_list[0]};

/* ---- CLIENT ------------------------------------------------------------------------- */

/* CLIENT SETNAME / SETINFO values: printable ASCII without spaces, as Redis
 * checks them, so CLIENT LIST stays one line of key=value per client. */
static bool client_str_ok(struct server *s, struct conn *c, const struct proto_arg *a,
                          const char *what)
{
    bool ok = a->len <= NET_CLIENT_STR_MAX;
    for (size_t i = 0; ok && i < a->len; i++)
        ok = a->p[i] >= '!' && a->p[i] <= '~';
    if (!ok)
        reply_err(s, c, "%s: at most %d characters, none of them spaces, newlines or special "
                  "characters", what, NET_CLIENT_STR_MAX);
    return ok;
}

static void client_str_set(char *dst, const struct proto_arg *a)
{
    memcpy(dst, a->p, a->len);
    dst[a->len] = 0;
}

/* One line-protocol client, as Redis's CLIENT LIST writes it (the fields
 * that mean something here). */
static void client_line(struct server *s, struct net_buf *b, struct conn *t)
{
    double now = ev_now(s->loop);
    const char *flags = t->multi.active ? "x" : t->state == CONN_ACTIVE ? "N" : "c";
    bool r = ev_is_active(&t->rio), w = ev_is_active(&t->wio);
    const char *laddr = net_conn_laddr(t);
    /* Every field Redis 7.2 prints, in its order: client libraries parse
     * the line into a record and some require them all (redis-py's
     * client_info() reads tot-mem). Those without a meaning here are what
     * Redis shows for a client that has none: no subscriptions, no
     * redirect, user default. */
    size_t qbuf = net_buf_live(&t->in), qfree = t->in.cap - t->in.len;
    size_t mmem = (size_t)net_multi_memory(&t->multi);
    size_t tot = (size_t)net_conn_memory(t);
    infof(b, "id=%llu addr=%s laddr=%s fd=%d name=%s age=%lld idle=%lld flags=%s db=0 sub=0 "
          "psub=0 ssub=0 multi=%lld qbuf=%zu qbuf-free=%zu argv-mem=0 multi-mem=%zu rbs=%zu "
          "rbp=%zu obl=0 oll=0 omem=%zu tot-mem=%zu events=%s%s cmd=%s user=default redir=-1 "
          "resp=%d lib-name=%s lib-ver=%s\n",
          (unsigned long long)t->id, t->addr, laddr, t->fd, t->name, (long long)(now - t->created),
          (long long)(now - t->last_active), flags,
          t->multi.active ? (long long)t->multi.n : -1ll, qbuf, qfree, mmem, t->in.cap,
          (size_t)t->read_size, net_buf_live(&t->out), tot, r ? "r" : "", w ? "w" : "",
          t->last_cmd[0] ? t->last_cmd : "NULL", t->resp, t->lib_name, t->lib_ver);
}

/* A client CLIENT LIST and KILL can see: a line-protocol connection not
 * already on its way out (closing, or lingering after its last reply). */
static bool client_visible(const struct conn *t)
{
    return !t->is_http && t->state != CONN_CLOSING && t->state != CONN_LINGERING;
}

/* CLIENT LIST [TYPE normal|master|replica|pubsub] [ID id ...], as Redis 7:
 * every client here is of type normal. */
static void client_list(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    uint64_t ids[PROTO_ARGC_MAX];
    size_t nids = 0, a = 2;
    bool none = false;
    char tmp[40];
    while (a < cmd->argc) {
        if (arg_is(&cmd->argv[a], "type") && a + 1 < cmd->argc) {
            const struct proto_arg *t = &cmd->argv[a + 1];
            if (!arg_is(t, "normal") && !arg_is(t, "master") && !arg_is(t, "replica") &&
                !arg_is(t, "slave") && !arg_is(t, "pubsub")) {
                reply_err(s, c, "Unknown client type '%s'", printable(tmp, 32, t->p, t->len));
                return;
            }
            none = none || !arg_is(t, "normal");
            a += 2;
        } else if (arg_is(&cmd->argv[a], "id") && a + 1 < cmd->argc) {
            for (a++; a < cmd->argc; a++, nids++)
                if (net_parse_id(cmd->argv[a].p, cmd->argv[a].len, &ids[nids])) {
                    reply_err(s, c, "Invalid client ID");
                    return;
                }
        } else {
            reply_err(s, c, "syntax error");
            return;
        }
    }
    struct net_buf *b = tmp_begin(s);
    struct conn *t = s->conns;
    while (t && t->next)
        t = t->next;
    for (; t && !none; t = t->prev) {  /* oldest first: ids ascending, as Redis lists them */
        bool want = nids == 0;  /* ID takes at least one id */
        for (size_t i = 0; i < nids && !want; i++)
            want = ids[i] == t->id;
        if (want && client_visible(t))
            client_line(s, b, t);
    }
    tmp_reply(s, c);
}

/* CLIENT KILL: the old form (one address; +OK or "No such client") or
 * filters ID, ADDR and SKIPME (default yes), all of which must hold, and the
 * number closed. The caller itself is closed only after this reply. */
static void client_kill(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    const struct proto_arg *addr = NULL;
    uint64_t id = 0;
    bool has_id = false, skipme = true, old = cmd->argc == 3;
    if (old) {
        addr = &cmd->argv[2];
    } else {
        if (cmd->argc % 2 != 0) {
            reply_err(s, c, "syntax error");
            return;
        }
        for (size_t i = 2; i < cmd->argc; i += 2) {
            const struct proto_arg *v = &cmd->argv[i + 1];
            if (arg_is(&cmd->argv[i], "id")) {
                if (net_parse_id(v->p, v->len, &id)) {
                    reply_err(s, c, "client-id should be greater than 0");
                    return;
                }
                has_id = true;
            } else if (arg_is(&cmd->argv[i], "addr")) {
                addr = v;
            } else if (arg_is(&cmd->argv[i], "skipme") && (arg_is(v, "yes") || arg_is(v, "no"))) {
                skipme = arg_is(v, "yes");
            } else {
                reply_err(s, c, "syntax error");
                return;
            }
        }
    }
    int64_t killed = 0;
    bool self = false;
    for (struct conn *t = s->conns; t; t = t->next) {  /* net_conn_kill frees nothing yet */
        if (!client_visible(t) || (has_id && t->id != id) ||
            (addr && (strlen(t->addr) != addr->len || memcmp(t->addr, addr->p, addr->len) != 0)) ||
            (t == c && skipme && !old))
            continue;
        killed++;
        if (t == c)
            self = true;
        else
            net_conn_kill(s, t);
    }
    if (old && killed == 0)
        reply_err(s, c, "No such client");
    else if (old)
        net_reply_ok(&c->out);
    else
        net_reply_int(&c->out, killed);
    if (self)
        c->state = CONN_DRAINING;
}

static void client_info(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    client_line(s, tmp_begin(s), c);
    tmp_reply(s, c);
}

static void client_id(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    net_reply_int(&c->out, (int64_t)c->id);
}

static void client_getname(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    if (c->name[0])
        net_reply_bulk_str(&c->out, c->name);
    else
        net_reply_null(&c->out, c->resp);
}

static void client_setname(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    if (!client_str_ok(s, c, &cmd->argv[2], "client name"))
        return;
    client_str_set(c->name, &cmd->argv[2]);
    net_reply_ok(&c->out);
}

static void client_setinfo(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    bool lib = arg_is(&cmd->argv[2], "lib-name");
    if (!lib && !arg_is(&cmd->argv[2], "lib-ver")) {
        char tmp[40];
        reply_err(s, c, "Unrecognized option '%s'",
                  printable(tmp, 32, cmd->argv[2].p, cmd->argv[2].len));
        return;
    }
    if (!client_str_ok(s, c, &cmd->argv[3], lib ? "lib-name" : "lib-ver"))
        return;
    client_str_set(lib ? c->lib_name : c->lib_ver, &cmd->argv[3]);
    net_reply_ok(&c->out);
}

static const struct subcommand client_list_[] = {
    {"id", 2, 2, client_id, "ID\n    This connection's id."},
    {"getname", 2, 2, client_getname, "GETNAME\n    This connection's name, or nil."},
    {"info", 2, 2, client_info, "INFO\n    This connection's line of CLIENT LIST."},
    {"setname", 3, 3, client_setname,
     "SETNAME <name>\n    Name this connection (CLIENT LIST shows it); \"\" clears it."},
    {"setinfo", 4, 4, client_setinfo,
     "SETINFO LIB-NAME|LIB-VER <value>\n    Record the client library's name or version."},
    {"list", 2, -1, client_list,
     "LIST [TYPE NORMAL|MASTER|REPLICA|PUBSUB] [ID <id> [<id> ...]]\n"
     "    One line per connection: id, address, name, age, buffers, last command."},
    {"kill", 3, -1, client_kill,
     "KILL <ip:port>\n    Close the connection from that address.\n"
     "KILL [ID <id>] [ADDR <ip:port>] [SKIPME YES|NO]\n"
     "    Close the connections matching every filter; SKIPME YES (the default) spares\n"
     "    the caller. Answers how many were closed."},
};
static const struct subtable client_subs = {"client", client_list_,
                                           sizeof client_list_ / sizeof client_list_[0]};

/* ---- HELLO, SELECT, COMMAND: what Redis clients and tools ask on connect ---------- */

/* HELLO [protover [AUTH user password] [SETNAME name]]: Redis 6's
 * handshake, and the switch to RESP3. RESP3 changes only what RESP2 has
 * no type for: a missing value is _ (not $-1) and key/value replies (HELLO,
 * STATS, CONFIG GET) are maps; every other reply is the same in both. */
static void cmd_hello(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    const struct proto_arg *user = NULL, *pw = NULL, *name = NULL;
    int proto = c->resp;
    if (cmd->argc >= 2) {
        int64_t ver;
        if (net_parse_i64(cmd->argv[1].p, cmd->argv[1].len, &ver)) {
            reply_err(s, c, "Protocol version is not an integer or out of range");
            return;
        }
        if (ver != 2 && ver != 3) {  /* before the options, as Redis checks it */
            reply_error_raw(s, c, "NOPROTO sorry, this protocol version is not supported.");
            return;
        }
        proto = (int)ver;
        for (size_t i = 2; i < cmd->argc; i++) {
            bool more = i + 1 < cmd->argc;
            if (arg_is(&cmd->argv[i], "auth") && i + 2 < cmd->argc) {
                user = &cmd->argv[i + 1];
                pw = &cmd->argv[i + 2];
                i += 2;
            } else if (arg_is(&cmd->argv[i], "setname") && more) {
                name = &cmd->argv[++i];
            } else {
                char tmp[40];
                reply_err(s, c, "Syntax error in HELLO option '%s'",
                          printable(tmp, 32, cmd->argv[i].p, cmd->argv[i].len));
                return;
            }
        }
    }
    /* the name before the password, as Redis checks it: a refused HELLO
     * changes nothing, authentication included */
    if (name && !client_str_ok(s, c, name, "client name"))
        return;
    if (pw && !auth_check(s, c, user, pw))
        return;
    if (!conn_authed(s, c)) {
        reply_error_raw(s, c, "NOAUTH HELLO must be called with the client already "
                        "authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option "
                        "can be used to authenticate the client and select the RESP protocol "
                        "version at the same time");
        return;
    }
    if (name)
        client_str_set(c->name, name);
    c->resp = (uint8_t)proto;  /* the reply itself is in the version asked for */
    net_reply_map(&c->out, 7, c->resp);
    net_reply_bulk_str(&c->out, "server");
    net_reply_bulk_str(&c->out, "shortstat");
    net_reply_bulk_str(&c->out, "version");
    net_reply_bulk_str(&c->out, NET_VERSION);
    net_reply_bulk_str(&c->out, "proto");
    net_reply_int(&c->out, proto);
    net_reply_bulk_str(&c->out, "id");
    net_reply_int(&c->out, (int64_t)c->id);
    net_reply_bulk_str(&c->out, "mode");
    net_reply_bulk_str(&c->out, "standalone");
    net_reply_bulk_str(&c->out, "role");
    net_reply_bulk_str(&c->out, "master");
    net_reply_bulk_str(&c->out, "modules");
    net_reply_array(&c->out, 0);
}

/* SELECT: there is one database, as in Redis Cluster. */
static void cmd_select(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    int64_t db;
    if (net_parse_i64(cmd->argv[1].p, cmd->argv[1].len, &db))
        reply_err(s, c, "value is not an integer or out of range");
    else if (db != 0)
        reply_err(s, c, "DB index is out of range");
    else
        net_reply_ok(&c->out);
}

/* ---- dispatch ---------------------------------------------------------------------- */

static void command_info(struct server *s, struct conn *c, const struct proto_cmd *cmd);

static const struct subtable command_subs;

#define CMD(n, mn, mx, fl, key, rf, f) {n, sizeof(n) - 1, mn, mx, fl, key, rf, f, NULL}
#define CMDS(n, mn, mx, fl, rf, f, t) {n, sizeof(n) - 1, mn, mx, fl, 0, rf, f, t}
static const struct command commands[] = {
    CMD("track", 3, -1, CF_QUEUE, 1, "fast", cmd_track),
    CMD("ping", 1, 2, CF_NOAUTH, 0, "fast stale", cmd_ping),
    CMD("echo", 2, 2, 0, 0, "fast", cmd_echo),
    CMD("stats", 2, 2, 0, 1, "readonly fast", cmd_stats),
    CMD("score", 2, 2, 0, 1, "readonly fast", cmd_score),
    CMD("engagement", 2, 2, 0, 1, "readonly fast", cmd_engagement),
    CMD("boost", 3, 3, CF_QUEUE, 1, "fast", cmd_boost),
    CMD("top", 2, 4, 0, 0, "readonly", cmd_top),
    CMD("history", 3, 4, 0, 0, "readonly", cmd_history),
    CMD("session", 2, 2, 0, 0, "fast", cmd_session),
    CMD("info", 1, -1, 0, 0, "loading stale", cmd_info),
    CMD("multi", 1, 1, CF_INMULTI, 0, "noscript loading stale fast", cmd_multi),
    CMD("exec", 1, 1, CF_INMULTI, 0, "noscript loading stale", cmd_exec),
    CMD("discard", 1, 1, CF_INMULTI, 0, "noscript loading stale fast", cmd_discard),
    CMD("watch", 2, -1, CF_INMULTI, 0, "noscript loading stale fast", cmd_watch),
    CMD("unwatch", 1, 1, 0, 0, "noscript loading stale fast", cmd_unwatch),
    CMD("auth", 2, 3, CF_NOAUTH, 0, "noscript loading stale fast", cmd_auth),
    CMD("hello", 1, -1, CF_NOAUTH, 0, "noscript loading stale fast", cmd_hello),
    CMD("select", 2, 2, 0, 0, "loading stale fast", cmd_select),
    CMD("quit", 1, -1, CF_NOAUTH | CF_INMULTI, 0, "noscript loading stale fast", cmd_quit),
    CMDS("command", 1, -1, 0, "loading stale", command_info, &command_subs),
    CMDS("config", 2, -1, 0, "admin noscript loading stale", NULL, &config_subs),
    CMDS("client", 2, -1, 0, "admin noscript loading stale", NULL, &client_subs),
    CMD("snapshot", 1, 1, 0, 0, "admin noscript", cmd_snapshot),
    CMD("bgsave", 1, 2, 0, 0, "admin noscript", cmd_bgsave),
    CMD("lastsave", 1, 1, 0, 0, "loading stale fast", cmd_lastsave),
    CMDS("slowlog", 2, -1, 0, "admin loading stale", NULL, &slowlog_subs),
    CMD("shutdown", 1, 5, CF_NOMULTI, 0, "admin noscript loading stale", cmd_shutdown),
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static const struct command *lookup(const struct proto_arg *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (commands[i].len == name->len && eq_lower(name->p, commands[i].name, name->len))
            return &commands[i];
    return NULL;
}

/* ---- COMMAND ------------------------------------------------------------------------- */

/* One COMMAND INFO entry, in the form Redis 6 gives and clients parse by
 * position: name, arity (negative: at least), flags, first key, last key,
 * step. The short id counts as the key, so a cluster-aware client or proxy
 * can route by it. */
static void command_entry(struct net_buf *out, const struct command *k)
{
    net_reply_array(out, 6);
    net_reply_bulk_str(out, k->name);
    net_reply_int(out, k->min_argc == k->max_argc ? k->min_argc : -k->min_argc);
    /* the words dispatch's own flags decide are derived from them */
    bool write = k->flags & CF_QUEUE, noauth = k->flags & CF_NOAUTH;
    size_t n = 2 * write + noauth;
    for (const char *p = k->rflags; *p; p++)
        n += p == k->rflags || p[-1] == ' ';
    net_reply_array(out, n);
    if (write) {
        net_reply_status(out, "write");
        net_reply_status(out, "denyoom");
    }
    for (const char *p = k->rflags; *p;) {
        size_t l = strcspn(p, " ");
        net_reply_status_n(out, p, l);
        p += l + (p[l] == ' ');
    }
    if (noauth)
        net_reply_status(out, "no_auth");
    net_reply_int(out, k->key);
    net_reply_int(out, k->key);
    net_reply_int(out, k->key ? 1 : 0);
}

static void command_count(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    net_reply_int(&c->out, (int64_t)NCOMMANDS);
}

static void command_list(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    net_reply_array(&c->out, NCOMMANDS);
    for (size_t i = 0; i < NCOMMANDS; i++)
        net_reply_bulk_str(&c->out, commands[i].name);
}

/* COMMAND INFO [name ...]: all of them without names, as COMMAND alone
 * (which runs this too); nil for an unknown one. */
static void command_info(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    if (cmd->argc <= 2) {
        net_reply_array(&c->out, NCOMMANDS);
        for (size_t i = 0; i < NCOMMANDS; i++)
            command_entry(&c->out, &commands[i]);
        return;
    }
    net_reply_array(&c->out, cmd->argc - 2);
    for (size_t i = 2; i < cmd->argc; i++) {
        const struct command *k = lookup(&cmd->argv[i]);
        if (k)
            command_entry(&c->out, k);
        else
            net_reply_null(&c->out, c->resp);
    }
}

/* COMMAND DOCS: redis-cli asks on start for its hints; none are kept. */
static void command_docs(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    net_reply_map(&c->out, 0, c->resp);
}

static const struct subcommand command_list_[] = {
    {"count", 2, 2, command_count, "COUNT\n    The number of commands."},
    {"list", 2, 2, command_list, "LIST\n    Every command's name."},
    {"info", 2, -1, command_info,
     "INFO [<command> ...]\n"
     "    Name, arity, flags and key position of each command named (all without names)."},
    {"docs", 2, -1, command_docs, "DOCS [<command> ...]\n    An empty map: no docs are kept."},
};
static const struct subtable command_subs = {"command", command_list_,
                                            sizeof command_list_ / sizeof command_list_[0]};

/* Commandstat slots: the commands in table order, then per subcommand
 * table its subcommands and its HELP. */
static const struct subtable *const subtables[] = {&config_subs, &client_subs, &command_subs,
                                                   &slowlog_subs};
#define NSUBTABLES (sizeof subtables / sizeof subtables[0])
#define SUBS_N(a) (sizeof a / sizeof a[0])
_Static_assert(NCOMMANDS + SUBS_N(config_list) + SUBS_N(client_list_) + SUBS_N(command_list_) +
                       SUBS_N(slowlog_list) + NSUBTABLES <= NET_CMDSTAT_SLOTS,
               "NET_CMDSTAT_SLOTS must hold every command and subcommand");

static int stat_slot(const struct command *k, const struct subcommand *sub)
{
    if (!sub)
        return (int)(k - commands);
    size_t base = NCOMMANDS;
    for (size_t i = 0; i < NSUBTABLES; i++) {
        const struct subtable *t = subtables[i];
        if (t == k->subs)
            return (int)(base + (sub == &help_sub ? t->n : (size_t)(sub - t->subs)));
        base += t->n + 1;
    }
    return (int)(k - commands);  /* not reached: every table is listed */
}

/* Calls fn for each command and subcommand used since the start or the
 * last CONFIG RESETSTAT, in the command table's order. */
typedef void (*cmdstat_fn)(void *ud, const char *name, const char *sub,
                           const struct net_cmdstat *st);
static void cmdstat_walk(const struct server *s, cmdstat_fn fn, void *ud)
{
    for (size_t i = 0; i < NCOMMANDS; i++) {
        const struct command *k = &commands[i];
        for (size_t j = 0; j <= (k->subs ? k->subs->n + 1 : 0); j++) {
            /* j = 0: the command; then each subcommand, HELP last */
            const struct subcommand *sub =
                j == 0 ? NULL : j - 1 < k->subs->n ? &k->subs->subs[j - 1] : &help_sub;
            const struct net_cmdstat *st = &s->cmdstat[stat_slot(k, sub)];
            if (st->calls || st->rejected || st->failed)
                fn(ud, k->name, sub ? sub->name : NULL, st);
        }
    }
}

static void cmdstat_line(void *ud, const char *name, const char *sub,
                         const struct net_cmdstat *st)
{
    struct net_buf *b = ud;
    unsigned long long usec = st->nsec / 1000u;
    infof(b, "cmdstat_%s%s%s:calls=%llu,usec=%llu,usec_per_call=%.2f,rejected_calls=%llu,"
          "failed_calls=%llu\r\n", name, sub ? "|" : "", sub ? sub : "",
          (unsigned long long)st->calls, usec,
          st->calls ? (double)st->nsec / 1000.0 / (double)st->calls : 0.0,
          (unsigned long long)st->rejected, (unsigned long long)st->failed);
}

/* INFO commandstats: a line per command or subcommand used since the start
 * or the last CONFIG RESETSTAT, Redis 7's "parent|sub" names included. */
static void info_cmdstats(const struct server *s, struct net_buf *b)
{
    cmdstat_walk(s, cmdstat_line, b);
}

struct cmdstat_rows {
    struct http_cmd_metric *out;
    size_t n, cap;
};

static void cmdstat_row(void *ud, const char *name, const char *sub, const struct net_cmdstat *st)
{
    struct cmdstat_rows *r = ud;
    if (r->n < r->cap)
        r->out[r->n++] = (struct http_cmd_metric){name, sub, st->calls, st->nsec, st->rejected,
                                                  st->failed};
}

size_t net_cmdstat_rows(const struct server *s, struct http_cmd_metric *out, size_t cap)
{
    struct cmdstat_rows r = {out, 0, cap};
    cmdstat_walk(s, cmdstat_row, &r);
    return r.n;
}


/* Arguments the slow log must not show: passwords (AUTH's, HELLO's after
 * AUTH, a CONFIG SET requirepass value), as Redis redacts them. Bit i is
 * argument i. */
_Static_assert(NET_SLOWLOG_ARGC <= 64, "the slow log's redaction mask has a bit per argument");
static uint64_t redacted_args(const struct command *k, const struct proto_cmd *cmd)
{
    uint64_t mask = 0;
    size_t n = cmd->argc < 64 ? cmd->argc : 64;
    if (strcmp(k->name, "auth") == 0)
        return ~(uint64_t)1;
    if (strcmp(k->name, "hello") == 0) {  /* HELLO [ver] [AUTH user pass] [SETNAME name] */
        for (size_t i = 1; i < n; i++) {
            if (arg_is(&cmd->argv[i], "auth"))
                return i + 2 < 64 ? (uint64_t)3 << (i + 1) : 0;  /* past 31: never shown */
            if (arg_is(&cmd->argv[i], "setname"))
                i++;
        }
    }
    if (strcmp(k->name, "config") == 0 && n > 2 && arg_is(&cmd->argv[1], "set"))
        for (size_t i = 2; i + 1 < n; i += 2) {
            char key[64];
            const struct proto_arg *a = &cmd->argv[i];
            if (a->len >= sizeof key || memchr(a->p, 0, a->len))
                continue;
            memcpy(key, a->p, a->len);
            key[a->len] = 0;
            if (net_config_secret(key))
                mask |= (uint64_t)1 << (i + 1);
        }
    return mask;
}

/* Runs k, or the subcommand of it that sub_check found, and accounts for
 * it: its commandstat (a call, its time, whether it answered an error; a
 * refusal over --maxmemory is a rejection; a write MULTI queued counts at
 * EXEC), and the slow log. EXEC is logged as a whole, unlike in Redis: its
 * writes run as one engine batch, which has no time of its own per write
 * (its queries are logged each on its own as well). */
static void run_command(struct server *s, struct conn *c, const struct command *k,
                        const struct proto_cmd *cmd, const struct subcommand *sub)
{
    const struct net_cur_cmd outer = s->cur;  /* EXEC's, while it runs a queued one */
    const int slot = stat_slot(k, sub);
    /* a write MULTI queues runs, and counts, at EXEC; an error now refuses it */
    const bool queued = (k->flags & CF_QUEUE) && c->multi.active;
    s->cur = (struct net_cur_cmd){0};
    c->last_cmd = k->name;
    const uint64_t t0 = net_mono_nsec();
    if (sub)
        run_sub(s, c, cmd, k->subs, sub);
    else
        k->fn(s, c, cmd);
    const uint64_t dt = net_mono_nsec() - t0;
    struct net_cmdstat *st = &s->cmdstat[slot];
    if (s->cur.rejected || (queued && s->cur.failed)) {
        st->rejected++;
    } else if (!queued) {
        st->calls++;
        st->nsec += dt;
        st->failed += s->cur.failed;
        if (slowlog_wants(s, dt))
            slowlog_note(s, c, cmd->argv, cmd->argc, redacted_args(k, cmd), NULL, dt);
    }
    s->cur = outer;
}

/* Counts a command refused before it ran (arity, NOAUTH, MULTI's rules). */
static void stat_rejected(struct server *s, const struct command *k, const struct subcommand *sub)
{
    s->cmdstat[stat_slot(k, sub)].rejected++;
}

/* A command that is neither a write nor transaction control, queued as
 * its arguments; it runs at EXEC (run_queued) and answers there. */
static void queue_cmd(struct server *s, struct conn *c, uint32_t idx, const struct proto_cmd *cmd,
                      const struct subcommand *sub)
{
    struct net_multi *m = &c->multi;
    size_t extra = 0;
    for (size_t i = 0; i < cmd->argc; i++)
        extra += sizeof(uint32_t) + cmd->argv[i].len;
    struct net_qitem *q = multi_push(s, c, extra);
    if (!q)
        return;
    q->kind = NET_Q_CMD;
    q->cmd = idx;
    q->sub = sub;
    q->argc = (uint32_t)cmd->argc;
    q->off_args = m->arena.len;
    for (size_t i = 0; i < cmd->argc; i++) {
        uint32_t len = (uint32_t)cmd->argv[i].len;
        net_buf_append(&m->arena, &len, sizeof len);
        net_buf_append(&m->arena, cmd->argv[i].p, len);
    }
    multi_commit(c);
}

static void run_queued(struct server *s, struct conn *c, const struct net_qitem *q)
{
    struct proto_cmd *qc = &s->qcmd;
    const uint8_t *p = c->multi.arena.p + q->off_args;
    qc->argc = q->argc;
    for (uint32_t i = 0; i < q->argc; i++) {
        uint32_t len;
        memcpy(&len, p, sizeof len);
        qc->argv[i] = (struct proto_arg){p + sizeof len, len};
        p += sizeof len + len;
    }
    run_command(s, c, &commands[q->cmd], qc, q->sub);
}

static void dispatch(struct server *s, struct conn *c, const struct proto_cmd *cmd)
{
    const struct command *k = lookup(&cmd->argv[0]);
    char tmp[72];
    /* Cross-protocol scripting: a web page can make a browser POST to this
     * port, and the request's body lines would run as inline commands
     * (TRACK, BOOST) with no password set. Its first two lines are "POST /
     * HTTP/1.1" and "Host: ...", which no client of ours sends: close the
     * connection at once, without a reply, as Redis does. */
    if (!k && (arg_is(&cmd->argv[0], "post") || arg_is(&cmd->argv[0], "host:"))) {
        s->st.cross_protocol_closed++;
        uint64_t more;
        if (net_ratelimit_ok(&s->xproto_rl, ev_now(s->loop), &more))
            net_warn("client %s: sent '%s' as a command, which is how an HTTP request made to "
                     "attack this port starts (cross-protocol scripting); closed it (%llu more "
                     "since the last such line)",
                     c->addr, printable(tmp, 64, cmd->argv[0].p, cmd->argv[0].len),
                     (unsigned long long)more);
        net_conn_kill(s, c);
        return;
    }
    /* Unknown before NOAUTH, as in Redis: client libraries probe with HELLO
     * and fall back to AUTH only on "unknown command" (Lettuce, for one). */
    if (!k) {
        flag_transaction(c);
        /* Redis's words, which some clients match: the first arguments too. */
        char args[160];
        size_t o = 0;
        args[0] = 0;
        for (size_t i = 1; i < cmd->argc && o + 8 <= 128; i++) {
            char a[136];
            int n = snprintf(args + o, sizeof args - o, "'%s' ",
                             printable(a, 128 - o, cmd->argv[i].p, cmd->argv[i].len));
            o += n > 0 ? (size_t)n : 0;
        }
        char name[132];  /* cut at 128, as Redis's %.128s */
        reply_err(s, c, "unknown command '%s', with args beginning with: %s",
                  printable(name, sizeof name, cmd->argv[0].p, cmd->argv[0].len), args);
        return;
    }
    /* The command's shape (arity, then its subcommand's name and arity) is
     * checked before NOAUTH too, in Redis's order: ioredis sends CLIENT
     * subcommands before its AUTH and expects "unknown subcommand". */
    if (!arity_ok(cmd->argc, k->min_argc, k->max_argc)) {
        flag_transaction(c);
        reply_err(s, c, "wrong number of arguments for '%s' command", k->name);
        stat_rejected(s, k, NULL);
        return;
    }
    const struct subcommand *sub = NULL, *named;
    if (k->subs && cmd->argc >= 2 && !(sub = sub_check(s, c, cmd, k->subs, &named))) {
        flag_transaction(c);  /* refused when queued, as Redis refuses it */
        if (named)  /* its arity; an unknown one is no command, as in Redis */
            stat_rejected(s, k, named);
        return;
    }
    if (!conn_authed(s, c) && !(k->flags & CF_NOAUTH)) {
        reply_error_raw(s, c, "NOAUTH Authentication required.");
        stat_rejected(s, k, sub);
        return;
    }
    if (c->multi.active && !(k->flags & (CF_INMULTI | CF_QUEUE))) {
        if (k->flags & CF_NOMULTI) {
            c->multi.dirty = true;
            reply_err(s, c, "Command not allowed inside a transaction");
            stat_rejected(s, k, sub);
        } else if (refuse_oom(s, c)) {
            stat_rejected(s, k, sub);
        } else {
            queue_cmd(s, c, (uint32_t)(k - commands), cmd, sub);  /* counts when EXEC runs it */
        }
        return;
    }
    run_command(s, c, k, cmd, sub);
}

static inline bool is_track(const struct proto_arg *a)
{
    return a->len == 5 && eq_lower(a->p, "track", 5);
}

/* TRACKs per batch, and per flush check: shorter while a snapshot child
 * lives (NET_BATCH_COW). */
static size_t batch_limit(const struct server *s)
{
    return s->snap.in_progress ? NET_BATCH_COW : NET_BATCH;
}

/* A turn's end is always past a flush, so the flush writes its replies. */
_Static_assert(NET_FLUSH_USEC <= NET_TURN_USEC, "a turn must end after a flush");

bool net_conn_process(struct server *s, struct conn *c)
{
    struct net_buf *in = &c->in;
    struct proto_cmd *cmd = &s->cmd;

    s->nbatch = 0;
    s->scratch_used = 0;
    size_t batch_max = batch_limit(s);
    const uint64_t t0 = net_mono_usec(), turn_end = t0 + NET_TURN_USEC;
    uint64_t flush_at = t0 + NET_FLUSH_USEC;
    uint32_t since_check = 0;  /* the clock is read every batch_max TRACKs' worth */
    bool more = false;
    while (c->state == CONN_ACTIVE && net_buf_live(in) > 0) {
        if (NET_SCRATCH - s->scratch_used < PROTO_SCRATCH_MIN)
            batch_apply(s, c);
        int rc = proto_parse(in->p + in->off, net_buf_live(in), s->scratch + s->scratch_used,
                             NET_SCRATCH - s->scratch_used, cmd);
        if (rc == PROTO_MORE)
            break;
        if (rc == PROTO_EFATAL || rc == PROTO_EBAD) {
            batch_apply(s, c);
            s->st.protocol_errors++;
            flag_transaction(c);  /* a refused command fails the transaction */
            reply_err(s, c, "Protocol error: %s", cmd->err);
            if (rc == PROTO_EFATAL) {
                net_info("client %s: protocol error (%s), closing", c->addr, cmd->err);
                c->state = CONN_DRAINING;
                break;
            }
            net_buf_consume(in, cmd->consumed);
            continue;
        }
        /* Consuming only moves offsets: argv stays valid until the next read. */
        net_buf_consume(in, cmd->consumed);
        if (cmd->argc == 0)
            continue;
        s->st.commands++;
        s->scratch_used += cmd->scratch_used;
        if (is_track(&cmd->argv[0]) && conn_authed(s, c) && !c->multi.active && cmd->argc >= 3) {
            char err[NET_ERR_MAX];
            c->last_cmd = "track";
            struct eng_ix *ix = &s->batch[s->nbatch];
            if (net_track_parse(&cmd->argv[1], cmd->argc - 1, ix, err, sizeof err)) {
                batch_apply(s, c);
                reply_err(s, c, "%s", err);
                s->cmdstat[SLOT_TRACK].calls++;  /* it ran, as far as it got */
                s->cmdstat[SLOT_TRACK].failed++;
            } else {
                if (s->nbatch == 0 && s->cfg.slowlog_slower_us >= 0) {  /* its slow-log face */
                    size_t k = cmd->argc < NET_SLOWLOG_ARGC ? cmd->argc : NET_SLOWLOG_ARGC;
                    memcpy(s->batch_argv, cmd->argv, k * sizeof *cmd->argv);
                    s->batch_argc = cmd->argc;
                }
                if (++s->nbatch == batch_max)
                    batch_apply(s, c);
            }
        } else {
            batch_apply(s, c);
            dispatch(s, c, cmd);
            batch_max = batch_limit(s);  /* a SNAPSHOT in this input forks now */
            since_check += 15;           /* any other command may cost a TOP's 30 us */
        }
        /* the limit in force now: a CONFIG SET earlier in this input counts */
        if (net_buf_live(&c->out) > s->cfg.client_output_limit && !c->out.failed) {
            /* the batch's replies count too; its pointers stay valid (see below) */
            batch_apply(s, c);
            net_conn_limit_output(s, c);
        }
        if (c->out.failed || c->state == CONN_CLOSING)
            break;
        if (++since_check >= batch_max) {
            since_check = 0;
            uint64_t now = net_mono_usec();
            if (now >= flush_at) {
                /* The batch's pointers stay valid: writing only moves the
                 * output buffer's offset. */
                batch_apply(s, c);
                if (net_buf_live(&c->out) > 0)
                    net_conn_write_now(s, c);
                flush_at = now + NET_FLUSH_USEC;
            }
            if (now >= turn_end) {  /* its replies went out just above */
                more = net_buf_live(in) > 0;  /* waits behind every other client */
                break;
            }
        }
    }
    batch_apply(s, c);
    if (c->out.failed) {
        net_warn("client %s: out of memory for replies, closing", c->addr);
        c->state = CONN_CLOSING;
    } else if (c->state != CONN_CLOSING) {
        net_conn_limit_output(s, c);
    }
    return more && c->state == CONN_ACTIVE;
}
