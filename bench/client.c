/* SPDX-License-Identifier: MIT */
/*
 * client.c -- the load client: one thread, one epoll loop, many connections.
 *
 * The client must be far faster than the server it measures, so:
 *   - every command is encoded before the clock starts (struct bench_stream);
 *     sending is a write() of a contiguous range of that buffer;
 *   - replies are counted in bulk: a run of "+OK\r\n" costs a 5-byte compare
 *     each, anything else goes through bench_resp_skip;
 *   - latency is kept per write, not per command: a "chunk" is the commands
 *     one write hands to the kernel, stamped once; when replies arrive, the
 *     commands they complete are added to the histogram at (now - stamp), n
 *     at a time. With a rate limit, the stamp is when the chunk's first
 *     command was due, not when it went out, so a server that falls behind
 *     is charged for the wait (no coordinated omission).
 *
 * Connection roles:
 *   PIPE   a contiguous slice of the stream, at most `pipeline` commands in
 *          flight; with `cycle` it wraps until the snapshot probe is done.
 *   QUERY  STATS, TOP or HISTORY, one in flight, back to back or paced by
 *          Poisson arrivals (independent kinds must not fall into lockstep:
 *          the server flushes replies once per loop iteration, so queries
 *          sent together would all wait for the slowest). Latency counts
 *          from the arrival time, so a query delayed by its predecessor is
 *          charged for the wait.
 *   SNAP   sends SNAPSHOT when a share of the stream is answered, then polls
 *          INFO persistence until the snapshot finished.
 * Invariants per PIPE connection: replies <= acct_done <= sent, and the
 * chunk ring holds exactly the chunks with commands not yet accounted.
 *
 * Pacing never spins: the loop sleeps in epoll_pwait2 until the next command
 * or query is due (at least TICK_S, so sends are batched on a 50 us grid). A
 * busy-polling client was measured to take the server's throughput down by
 * 40 % on this VM, whose two vCPUs share a physical core's resources; the
 * sleep costs at most TICK_S of latency, charged to the figure since stamps
 * are due times.
 *
 * Stalls: any silence of the PIPE connections while commands are in flight
 * is a gap; gaps over 1 ms are logged with their start and end, so the
 * longest one overlapping the snapshot window is the stall it caused.
 */
#include "bench/bench.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RBUF_SIZE (256u * 1024u)
#define GAP_LOG_MS 1.0
#define SNAP_POLL_S 0.002
#define TICK_S 50e-6          /* shortest sleep when something is due soon */
#define IDLE_S 0.1            /* longest sleep: the progress line's clock */

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- RESP replies ------------------------------------------------------------- */

/* Integer between p and the "\r" before nl. */
static int parse_len(const uint8_t *p, const uint8_t *nl, int64_t *out)
{
    const uint8_t *e = nl - 1;  /* the '\r' */
    bool neg = false;
    if (p < e && *p == '-') {
        neg = true;
        p++;
    }
    if (p >= e || e - p > 18)
        return -1;
    int64_t v = 0;
    for (; p < e; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    *out = neg ? -v : v;
    return 0;
}

static ptrdiff_t skip(const uint8_t *p, const uint8_t *end, int depth)
{
    if (p >= end)
        return 0;
    if (depth > 8)
        return -1;
    const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl)
        return 0;
    if (nl == p || nl[-1] != '\r')
        return -1;
    switch (*p) {
    case '+':
    case '-':
    case ':':
        return nl + 1 - p;
    case '$':
    case '*':
        break;
    default:
        return -1;
    }
    /* bulk string or array: a length, -1 for the null reply */
    int64_t n;
    if (parse_len(p + 1, nl, &n))
        return -1;
    if (n == -1)
        return nl + 1 - p;
    if (n < 0)
        return -1;
    if (*p == '$') {
        if (end - (nl + 1) < n + 2)
            return 0;
        if (nl[1 + n] != '\r' || nl[2 + n] != '\n')
            return -1;
        return nl + 3 + n - p;
    }
    const uint8_t *q = nl + 1;
    for (int64_t i = 0; i < n; i++) {
        ptrdiff_t r = skip(q, end, depth + 1);
        if (r <= 0)
            return r;
        q += r;
    }
    return q - p;
}

ptrdiff_t bench_resp_skip(const uint8_t *p, const uint8_t *end)
{
    return skip(p, end, 0);
}

static const char *info_find(const char *info, const char *key)
{
    size_t kl = strlen(key);
    for (const char *p = info; (p = strstr(p, key)) != NULL; p += kl) {
        if ((p == info || p[-1] == '\n') && p[kl] == ':')
            return p + kl + 1;
    }
    return NULL;
}

int bench_info_u64(const char *info, const char *key, uint64_t *out)
{
    const char *v = info_find(info, key);
    if (!v || *v < '0' || *v > '9')
        return -1;
    char *e;
    unsigned long long x = strtoull(v, &e, 10);
    if (*e != '\r' && *e != '\n' && *e != '\0')
        return -1;
    *out = x;
    return 0;
}

int bench_info_str(const char *info, const char *key, char *out, size_t outlen)
{
    const char *v = info_find(info, key);
    if (!v || outlen == 0)
        return -1;
    size_t n = strcspn(v, "\r\n");
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, v, n);
    out[n] = '\0';
    return 0;
}

/* ---- sockets ------------------------------------------------------------------- */

static int tcp_connect(const char *host, uint16_t port, bool nonblock, int timeout_ms, char *msg,
                       size_t msglen)
{
    char ps[8];
    snprintf(ps, sizeof ps, "%u", (unsigned)port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int gai = getaddrinfo(host, ps, &hints, &ai);
    if (gai) {
        snprintf(msg, msglen, "%s: %s", host, gai_strerror(gai));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(msg, msglen, "socket: %s", strerror(errno));
        freeaddrinfo(ai);
        return -1;
    }
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (rc < 0 && errno == EINPROGRESS) {
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t el = sizeof err;
        if (poll(&pf, 1, timeout_ms) != 1) {
            errno = ETIMEDOUT;
        } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0) {
            rc = 0;
        } else {
            errno = err ? err : errno;
        }
    }
    if (rc < 0) {
        snprintf(msg, msglen, "connect %s:%u: %s", host, (unsigned)port, strerror(errno));
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!nonblock)
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

/* ---- blocking control connection ------------------------------------------------- */

int bench_ctl_open(struct bench_ctl *c, const char *host, uint16_t port, int timeout_ms)
{
    char msg[BENCH_ERR_MAX];
    memset(c, 0, sizeof *c);
    c->fd = tcp_connect(host, port, true, timeout_ms, msg, sizeof msg);
    if (c->fd < 0)
        return BENCH_EIO;
    c->rcap = 64 * 1024;
    c->rbuf = malloc(c->rcap);
    if (!c->rbuf) {
        close(c->fd);
        c->fd = -1;
        return BENCH_ENOMEM;
    }
    return BENCH_OK;
}

void bench_ctl_close(struct bench_ctl *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->rbuf);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

static int wait_fd(int fd, short ev, double deadline)
{
    for (;;) {
        double left = deadline - bench_now();
        if (left <= 0)
            return BENCH_ETIMEOUT;
        struct pollfd pf = {.fd = fd, .events = ev};
        int r = poll(&pf, 1, (int)(left * 1000) + 1);
        if (r > 0)
            return BENCH_OK;
        if (r < 0 && errno != EINTR)
            return BENCH_EIO;
    }
}

int bench_ctl_cmd(struct bench_ctl *c, int argc, const char *const argv[], int timeout_ms,
                  char **reply)
{
    *reply = NULL;
    double deadline = bench_now() + timeout_ms / 1000.0;
    size_t need = 32;
    for (int i = 0; i < argc; i++)
        need += strlen(argv[i]) + 32;
    char *out = malloc(need), *p = out;
    if (!out)
        return BENCH_ENOMEM;
    p += sprintf(p, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) {
        size_t l = strlen(argv[i]);
        p += sprintf(p, "$%zu\r\n", l);
        memcpy(p, argv[i], l);
        p += l;
        *p++ = '\r';
        *p++ = '\n';
    }
    for (char *w = out; w < p;) {
        ssize_t n = write(c->fd, w, (size_t)(p - w));
        if (n > 0) {
            w += n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            int rc = wait_fd(c->fd, POLLOUT, deadline);
            if (rc) {
                free(out);
                return rc;
            }
        } else {
            free(out);
            return BENCH_EIO;
        }
    }
    free(out);
    for (;;) {
        ptrdiff_t r = bench_resp_skip(c->rbuf, c->rbuf + c->rlen);
        if (r < 0)
            return BENCH_ESERVER;
        if (r > 0) {
            const uint8_t *b = c->rbuf;
            const uint8_t *pay = b, *pe = b + r;
            if (b[0] == '+' || b[0] == '-' || b[0] == ':') {
                pay = b + 1;
                pe = b + r - 2;
            } else if (b[0] == '$') {
                const uint8_t *nl = memchr(b, '\n', (size_t)r);
                pay = nl + 1;
                pe = (pe - pay >= 2) ? pe - 2 : pay;
            }
            char *s = malloc((size_t)(pe - pay) + 1);
            if (!s)
                return BENCH_ENOMEM;
            memcpy(s, pay, (size_t)(pe - pay));
            s[pe - pay] = '\0';
            int rc = b[0] == '-' ? BENCH_ESERVER : BENCH_OK;
            memmove(c->rbuf, c->rbuf + r, c->rlen - (size_t)r);
            c->rlen -= (size_t)r;
            *reply = s;
            return rc;
        }
        if (c->rlen == c->rcap) {
            uint8_t *nb = realloc(c->rbuf, c->rcap * 2);
            if (!nb)
                return BENCH_ENOMEM;
            c->rbuf = nb;
            c->rcap *= 2;
        }
        ssize_t n = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
        if (n > 0) {
            c->rlen += (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            int rc = wait_fd(c->fd, POLLIN, deadline);
            if (rc)
                return rc;
        } else {
            return BENCH_EIO;
        }
    }
}

/* ---- the load loop ------------------------------------------------------------------ */

enum role { ROLE_PIPE, ROLE_QUERY, ROLE_SNAP };
enum snap_state { SS_WAIT, SS_CMD, SS_POLL_WAIT, SS_POLL, SS_DONE };

struct chunk {
    uint64_t end;    /* conn->sent after this chunk */
    double t;        /* stamp: when it was written (paced runs charge each command's due time) */
};

struct conn {
    int fd;
    enum role role;
    bool want_out;
    uint8_t *rbuf;
    size_t rlen;
    const uint8_t *wp, *wend;

    /* PIPE */
    size_t lo, hi, next;
    uint64_t sent, replies, acct;
    struct chunk *ring;
    uint32_t rmask, rhead, rtail;

    /* QUERY / SNAP */
    enum bench_query q;
    bool busy;
    double due, t;
    uint32_t seq;
    struct bench_rng rng;
    uint8_t qbuf[BENCH_CMD_MAX];
    enum snap_state ss;
};

struct loop {
    const struct bench_run_cfg *cfg;
    struct bench_run_res *res;
    int ep;
    struct conn *c;
    size_t nc;
    double t0, t_first, t_last;
    double rate_per_conn;
    uint64_t total;          /* commands to answer (a pass of the stream) */
    uint64_t sent, replies;  /* over PIPE connections */
    double busy_since;       /* start of the current in-flight stretch */
    double last_reply;
    bool stop_pipes;         /* cycle mode: the probe finished */
    bool stop_queries;
    bool snap_open;          /* SNAPSHOT sent, its end not seen yet */
    bool tty;                /* progress on a terminal: one line redrawn */
    size_t gcap;
    uint64_t snap_replies0;
    char *msg;
    size_t msglen;
    bool failed;
};

__attribute__((format(printf, 2, 3))) static void loop_fail(struct loop *L, const char *fmt, ...)
{
    if (!L->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(L->msg, L->msglen, fmt, ap);
        va_end(ap);
    }
    L->failed = true;
}

static void set_out(struct loop *L, struct conn *c, bool on)
{
    if (c->want_out == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(L->ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = on;
}

/* Write what is pending; false when the socket is full or failed. */
static bool flush(struct loop *L, struct conn *c)
{
    while (c->wp < c->wend) {
        ssize_t n = write(c->fd, c->wp, (size_t)(c->wend - c->wp));
        if (n > 0) {
            c->wp += n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            set_out(L, c, true);
            return false;
        }
        loop_fail(L, "write: %s", strerror(errno));
        return false;
    }
    set_out(L, c, false);
    return true;
}

static void pipe_send(struct loop *L, struct conn *c, double now)
{
    const struct bench_run_cfg *cfg = L->cfg;
    while (!L->failed) {
        if (c->wp < c->wend && !flush(L, c))
            return;
        if (L->stop_pipes || (!cfg->cycle && c->next == c->hi) || c->lo == c->hi)
            return;
        uint64_t room = cfg->pipeline - (c->sent - c->replies);
        if (room == 0)
            return;
        if (cfg->rate > 0) {
            /* command k of this connection falls due at t0 + k / rate: by
             * now, all those with k <= (now - t0) * rate */
            double due = (now - L->t0) * L->rate_per_conn + 1;
            if ((double)c->sent + 1 > due)
                return;
            uint64_t allowed = (uint64_t)due - c->sent;
            if (allowed < room)
                room = allowed;
        }
        uint64_t k = c->hi - c->next;
        if (k > room)
            k = room;
        const struct bench_stream *s = cfg->stream;
        c->wp = s->buf + s->off[c->next];
        c->wend = s->buf + s->off[c->next + k];
        if (L->sent == L->replies)
            L->busy_since = now;
        c->sent += k;
        L->sent += k;
        c->ring[c->rtail & c->rmask] = (struct chunk){.end = c->sent, .t = now};
        c->rtail++;
        c->next += k;
        if (c->next == c->hi && cfg->cycle)
            c->next = c->lo;
        if (L->t_first == 0)
            L->t_first = now;
    }
}

static void log_gap(struct loop *L, double from, double to)
{
    struct bench_run_res *r = L->res;
    double ms = (to - from) * 1e3;
    if (ms > r->max_gap_ms)
        r->max_gap_ms = ms;
    if (L->snap_open && ms > r->snap_stall_ms)
        r->snap_stall_ms = ms;
    if (ms < GAP_LOG_MS)
        return;
    if (r->ngaps == L->gcap) {
        size_t ncap = L->gcap ? L->gcap * 2 : 64;
        struct bench_gap *g = realloc(r->gaps, ncap * sizeof *g);
        if (!g)
            return;  /* losing the log of a gap is better than failing the run */
        r->gaps = g;
        L->gcap = ncap;
    }
    r->gaps[r->ngaps++] = (struct bench_gap){.start_s = from - L->t0, .end_s = to - L->t0};
}

static void pipe_replies(struct loop *L, struct conn *c, double now)
{
    uint8_t *p = c->rbuf, *end = c->rbuf + c->rlen;
    uint64_t n = 0;
    while (p < end) {
        if (end - p >= 5 && memcmp(p, "+OK\r\n", 5) == 0) {
            p += 5;
            n++;
            continue;
        }
        ptrdiff_t r = bench_resp_skip(p, end);
        if (r == 0)
            break;
        if (r < 0) {
            loop_fail(L, "malformed reply: %.40s", (const char *)p);
            return;
        }
        if (*p == '-') {
            if (L->res->errors++ == 0) {
                size_t l = (size_t)r - 2 < sizeof L->res->first_error - 1
                               ? (size_t)r - 2 : sizeof L->res->first_error - 1;
                memcpy(L->res->first_error, p, l);
                L->res->first_error[l] = '\0';
            }
        }
        p += r;
        n++;
    }
    c->rlen = (size_t)(end - p);
    memmove(c->rbuf, p, c->rlen);
    if (n == 0)
        return;
    if (c->replies + n > c->sent) {
        loop_fail(L, "more replies than commands sent");
        return;
    }
    if (L->sent > L->replies) {
        double from = L->last_reply > L->busy_since ? L->last_reply : L->busy_since;
        log_gap(L, from, now);
    }
    L->last_reply = now;
    L->t_last = now;
    c->replies += n;
    L->replies += n;
    L->res->replies += n;
    while (c->acct < c->replies) {
        struct chunk *ch = &c->ring[c->rhead & c->rmask];
        uint64_t upto = ch->end < c->replies ? ch->end : c->replies;
        if (L->cfg->rate > 0) {
            bench_hist_add_paced(&L->res->lat, now, L->t0, L->rate_per_conn, c->acct, upto);
        } else {
            double lat = now - ch->t;
            bench_hist_add(&L->res->lat, lat > 0 ? (uint64_t)(lat * 1e9) : 0, upto - c->acct);
        }
        c->acct = upto;
        if (c->acct == ch->end)
            c->rhead++;
    }
}

static void query_build(struct loop *L, struct conn *c)
{
    static const char *const metrics[] = {"score", "view_count", "unique_viewers", "saves",
                                          "shares", "engagement_rate", "avg_watch_ms"};
    const struct bench_wl *w = L->cfg->qwl;
    char *p = (char *)c->qbuf;
    size_t pick = w && w->n ? (size_t)bench_rng_below(&c->rng, w->n) : 0;
    const struct bench_ix *x = w && w->n ? &w->ix[pick] : NULL;
    switch (c->q) {
    case BENCH_Q_STATS:
        p += sprintf(p, "STATS %u\r\n", x ? x->short_id : 1u);
        break;
    case BENCH_Q_TOP:
        p += sprintf(p, "TOP %u BY %s\r\n", L->cfg->topk ? L->cfg->topk : 100,
                     metrics[c->seq % (sizeof metrics / sizeof metrics[0])]);
        break;
    default:
        if (x && x->user && (c->seq & 1)) {
            p += sprintf(p, "HISTORY USER %u 20\r\n", x->user);
        } else {
            char sid[BENCH_SID_MAX];
            bench_session_name(&w->cfg, x ? x->session : 0, sid);
            p += sprintf(p, "HISTORY SESSION %s 20\r\n", sid);
        }
        break;
    }
    c->seq++;
    c->wp = c->qbuf;
    c->wend = (uint8_t *)p;
}

static void query_send(struct loop *L, struct conn *c, double now)
{
    if (c->wp < c->wend) {
        flush(L, c);
        return;
    }
    if (c->busy || L->stop_queries || now < c->due)
        return;
    query_build(L, c);
    c->t = L->cfg->qps > 0 ? c->due : now;
    if (L->cfg->qps > 0)
        c->due += -log(1.0 - bench_rng_unit(&c->rng)) / L->cfg->qps;
    else
        c->due = now;
    c->busy = true;
    flush(L, c);
}

static void query_replies(struct loop *L, struct conn *c, double now)
{
    ptrdiff_t r = bench_resp_skip(c->rbuf, c->rbuf + c->rlen);
    if (r == 0)
        return;
    if (r < 0 || !c->busy) {
        loop_fail(L, "malformed or unexpected reply to a query: %.40s", (const char *)c->rbuf);
        return;
    }
    struct bench_run_res *res = L->res;
    if (c->rbuf[0] == '-' && res->q_err[c->q]++ == 0 && res->errors == 0) {
        size_t l = (size_t)r - 2 < sizeof res->first_error - 1 ? (size_t)r - 2
                                                               : sizeof res->first_error - 1;
        memcpy(res->first_error, c->rbuf, l);
        res->first_error[l] = '\0';
    }
    res->q_n[c->q]++;
    double lat = now - c->t;
    bench_hist_add(&res->q_lat[c->q], lat > 0 ? (uint64_t)(lat * 1e9) : 0, 1);
    c->busy = false;
    c->rlen -= (size_t)r;
    memmove(c->rbuf, c->rbuf + r, c->rlen);
}

static void snap_send(struct loop *L, struct conn *c, double now)
{
    if (c->wp < c->wend) {
        flush(L, c);
        return;
    }
    struct bench_run_res *res = L->res;
    const char *cmd = NULL;
    if (c->ss == SS_WAIT) {
        uint64_t total = L->cfg->stream ? L->cfg->stream->n : 0;
        if ((double)L->replies < L->cfg->snapshot_at * (double)total)
            return;
        cmd = "SNAPSHOT\r\n";
        c->ss = SS_CMD;
        res->snap_start_s = now - L->t0;
        L->snap_replies0 = L->replies;
        /* the same run's rate up to now: the baseline "during" is read against */
        res->snap_rate_before = L->t_first > 0 && now > L->t_first
                                    ? (double)L->replies / (now - L->t_first) : 0;
        L->snap_open = true;
    } else if (c->ss == SS_POLL_WAIT && now >= c->due) {
        cmd = "INFO persistence\r\n";
        c->ss = SS_POLL;
    }
    if (!cmd)
        return;
    size_t l = strlen(cmd);
    memcpy(c->qbuf, cmd, l);
    c->wp = c->qbuf;
    c->wend = c->qbuf + l;
    flush(L, c);
}

static void snap_finish(struct loop *L, struct conn *c, double now)
{
    struct bench_run_res *res = L->res;
    c->ss = SS_DONE;
    L->snap_open = false;
    res->snap_end_s = now - L->t0;
    double win = res->snap_end_s - res->snap_start_s;
    res->snap_rate = win > 0 ? (double)(L->replies - L->snap_replies0) / win : 0;
    if (L->cfg->cycle)
        L->stop_pipes = true;
}

static void snap_replies(struct loop *L, struct conn *c, double now)
{
    ptrdiff_t r = bench_resp_skip(c->rbuf, c->rbuf + c->rlen);
    if (r == 0)
        return;
    struct bench_run_res *res = L->res;
    if (r < 0) {
        loop_fail(L, "malformed reply to SNAPSHOT/INFO: %.40s", (const char *)c->rbuf);
        return;
    }
    const uint8_t *b = c->rbuf;
    if (b[0] == '-') {
        snprintf(res->snap_error, sizeof res->snap_error, "%.*s", (int)r - 2, (const char *)b);
        snap_finish(L, c, now);
    } else if (c->ss == SS_CMD) {
        c->ss = SS_POLL_WAIT;
        c->due = now + SNAP_POLL_S;
    } else if (c->ss == SS_POLL) {
        char *info = malloc((size_t)r + 1);
        if (!info) {
            loop_fail(L, "out of memory");
            return;
        }
        memcpy(info, b, (size_t)r);
        info[r] = '\0';
        uint64_t busy = 1;
        if (bench_info_u64(info, "snapshot_in_progress", &busy)) {
            snprintf(res->snap_error, sizeof res->snap_error,
                     "INFO persistence has no snapshot_in_progress");
            snap_finish(L, c, now);
        } else if (busy == 0) {
            char st[32] = "";
            bench_info_str(info, "last_snapshot_status", st, sizeof st);
            if (strcmp(st, "ok") != 0)
                snprintf(res->snap_error, sizeof res->snap_error, "last_snapshot_status:%s", st);
            else
                res->snap_done = true;
            bench_info_u64(info, "last_snapshot_duration_ms", &res->snap_duration_ms);
            bench_info_u64(info, "last_snapshot_bytes", &res->snap_bytes);
            bench_info_u64(info, "last_snapshot_raw_bytes", &res->snap_raw_bytes);
            res->snap_have_fork_usec =
                bench_info_u64(info, "last_fork_usec", &res->snap_fork_usec) == 0;
            snap_finish(L, c, now);
        } else {
            c->ss = SS_POLL_WAIT;
            c->due = now + SNAP_POLL_S;
        }
        free(info);
    }
    c->rlen -= (size_t)r;
    memmove(c->rbuf, c->rbuf + r, c->rlen);
}

static void on_read(struct loop *L, struct conn *c, double now)
{
    for (;;) {
        ssize_t n = read(c->fd, c->rbuf + c->rlen, RBUF_SIZE - c->rlen);
        if (n > 0) {
            c->rlen += (size_t)n;
            break;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        loop_fail(L, "the server closed the connection%s%s", n == 0 ? "" : ": ",
             n == 0 ? "" : strerror(errno));
        return;
    }
    switch (c->role) {
    case ROLE_PIPE:
        pipe_replies(L, c, now);
        break;
    case ROLE_QUERY:
        query_replies(L, c, now);
        break;
    case ROLE_SNAP:
        snap_replies(L, c, now);
        break;
    }
    if (c->rlen == RBUF_SIZE)
        loop_fail(L, "a single reply over %u bytes", RBUF_SIZE);
}

static bool pipes_done(const struct loop *L)
{
    for (size_t i = 0; i < L->nc; i++) {
        const struct conn *c = &L->c[i];
        if (c->role != ROLE_PIPE)
            continue;
        if (c->replies < c->sent)
            return false;
        if (!L->stop_pipes && c->lo < c->hi && (L->cfg->cycle || c->next < c->hi))
            return false;
    }
    return true;
}

static void progress(const struct loop *L, double now, double *last_t, uint64_t *last_n,
                     bool final)
{
    const struct bench_run_cfg *cfg = L->cfg;
    if (!cfg->progress)
        return;
    bool tty = L->tty;
    double every = tty ? 1.0 : 5.0;
    if (!final && now - *last_t < every)
        return;
    if (final && !tty)
        return;
    double dt = now - *last_t;
    double inst = dt > 0 ? (double)(L->replies - *last_n) / dt : 0;
    double avg = now > L->t0 ? (double)L->replies / (now - L->t0) : 0;
    uint64_t q = 0;
    for (int k = 0; k < BENCH_Q_COUNT; k++)
        q += L->res->q_n[k];
    char qs[48] = "";
    if (cfg->queries)
        snprintf(qs, sizeof qs, "  queries %llu", (unsigned long long)q);
    fprintf(stderr, "%s[%s] %llu/%llu%s  now %.0f/s  avg %.0f/s  p99 %.3f ms%s%s",
            tty ? "\r" : "", cfg->label ? cfg->label : "run", (unsigned long long)L->replies,
            (unsigned long long)L->total, cfg->cycle ? " (cycling)" : "", inst, avg,
            (double)bench_hist_quantile(&L->res->lat, 0.99) / 1e6, qs,
            tty ? (final ? "\n" : "   ") : "\n");
    *last_t = now;
    *last_n = L->replies;
}

/* When the loop must wake up next with no event: a paced command or query
 * falling due, or the snapshot probe's next poll. */
static double next_due(const struct loop *L, double now)
{
    const struct bench_run_cfg *cfg = L->cfg;
    double t = now + IDLE_S;
    for (size_t i = 0; i < L->nc; i++) {
        const struct conn *c = &L->c[i];
        double d = t;
        if (c->role == ROLE_PIPE && cfg->rate > 0 && !L->stop_pipes && c->lo < c->hi &&
            (cfg->cycle || c->next < c->hi) && c->sent - c->replies < cfg->pipeline)
            d = L->t0 + (double)c->sent / L->rate_per_conn;
        else if (c->role == ROLE_QUERY && !c->busy && !L->stop_queries && cfg->qps > 0)
            d = c->due;
        else if (c->role == ROLE_SNAP && c->ss == SS_POLL_WAIT)
            d = c->due;
        if (d < t)
            t = d;
    }
    if (cfg->queries && cfg->query_secs > 0 && !cfg->stream && L->t0 + cfg->query_secs < t)
        t = L->t0 + cfg->query_secs;
    return t;
}

static int wait_events(struct loop *L, struct epoll_event *evs, int max, double now)
{
    double dt = next_due(L, now) - now;
    if (dt < TICK_S)
        dt = TICK_S;
    struct timespec ts = {.tv_sec = (time_t)dt, .tv_nsec = (long)((dt - (double)(time_t)dt) * 1e9)};
    int n = epoll_pwait2(L->ep, evs, max, &ts, NULL);
    if (n < 0 && errno == ENOSYS)   /* kernels before 5.11: millisecond sleeps */
        n = epoll_wait(L->ep, evs, max, (int)(dt * 1e3) + 1);
    return n;
}

static int open_conn(struct loop *L, struct conn *c, enum role role)
{
    c->role = role;
    c->fd = tcp_connect(L->cfg->host, L->cfg->port, true, 5000, L->msg, L->msglen);
    if (c->fd < 0)
        return BENCH_EIO;
    c->rbuf = malloc(RBUF_SIZE);
    if (!c->rbuf) {
        snprintf(L->msg, L->msglen, "out of memory");
        return BENCH_ENOMEM;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(L->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        snprintf(L->msg, L->msglen, "epoll_ctl: %s", strerror(errno));
        return BENCH_EIO;
    }
    return BENCH_OK;
}

int bench_run(const struct bench_run_cfg *cfg, struct bench_run_res *res, char *msg,
              size_t msglen)
{
    memset(res, 0, sizeof *res);
    bench_hist_reset(&res->lat);
    for (int k = 0; k < BENCH_Q_COUNT; k++)
        bench_hist_reset(&res->q_lat[k]);
    const struct bench_stream *s = cfg->stream;
    size_t npipe = s && s->n ? (cfg->conns ? cfg->conns : 1) : 0;
    unsigned qmask = cfg->qmask ? cfg->qmask : (1u << BENCH_Q_COUNT) - 1;
    size_t nq = 0;
    for (int k = 0; k < BENCH_Q_COUNT; k++)
        nq += (qmask >> k) & 1;
    if (s && s->n && (cfg->pipeline == 0 || cfg->pipeline > (1u << 20))) {
        snprintf(msg, msglen, "pipeline: must be 1..1048576");
        return BENCH_EINVAL;
    }
    if (npipe > 4096) {
        snprintf(msg, msglen, "conns: must be 1..4096");
        return BENCH_EINVAL;
    }
    if (cfg->cycle && !cfg->snapshot) {
        snprintf(msg, msglen, "cycle needs the snapshot probe to end it");
        return BENCH_EINVAL;
    }
    if (!npipe && !(cfg->queries && cfg->query_secs > 0)) {
        snprintf(msg, msglen, "nothing to run: no commands and no timed queries");
        return BENCH_EINVAL;
    }
    struct loop L = {.cfg = cfg, .res = res, .msg = msg, .msglen = msglen, .ep = -1,
                     .tty = cfg->progress && isatty(2)};
    L.nc = npipe + (cfg->queries ? nq : 0) + (cfg->snapshot ? 1 : 0);
    L.c = calloc(L.nc, sizeof *L.c);
    int rc = BENCH_OK;
    if (!L.c) {
        snprintf(msg, msglen, "out of memory");
        return BENCH_ENOMEM;
    }
    for (size_t i = 0; i < L.nc; i++)
        L.c[i].fd = -1;
    L.ep = epoll_create1(EPOLL_CLOEXEC);
    if (L.ep < 0) {
        snprintf(msg, msglen, "epoll_create1: %s", strerror(errno));
        rc = BENCH_EIO;
        goto out;
    }
    size_t ci = 0;
    for (size_t i = 0; i < npipe; i++, ci++) {
        struct conn *c = &L.c[ci];
        if ((rc = open_conn(&L, c, ROLE_PIPE)))
            goto out;
        c->lo = c->next = s->n * i / npipe;
        c->hi = s->n * (i + 1) / npipe;
        uint32_t rs = 1;
        while (rs < cfg->pipeline + 1)
            rs <<= 1;
        c->ring = malloc(rs * sizeof *c->ring);
        if (!c->ring) {
            snprintf(msg, msglen, "out of memory");
            rc = BENCH_ENOMEM;
            goto out;
        }
        c->rmask = rs - 1;
    }
    if (cfg->queries) {
        for (int k = 0; k < BENCH_Q_COUNT; k++) {
            if (!((qmask >> k) & 1))
                continue;
            struct conn *c = &L.c[ci++];
            if ((rc = open_conn(&L, c, ROLE_QUERY)))
                goto out;
            c->q = (enum bench_query)k;
            bench_rng_seed(&c->rng, (cfg->qwl ? cfg->qwl->cfg.seed : 1) * 31 + (uint64_t)k);
        }
    }
    if (cfg->snapshot) {
        if ((rc = open_conn(&L, &L.c[ci], ROLE_SNAP)))
            goto out;
        ci++;
    }
    L.total = s ? s->n : 0;
    L.rate_per_conn = npipe && cfg->rate > 0 ? cfg->rate / (double)npipe : 0;
    double timeout = cfg->timeout_s > 0 ? cfg->timeout_s : 600;
    prctl(PR_SET_TIMERSLACK, 10000UL);  /* wake within 10 us of the due time */
    double now = bench_now(), last_prog = now;
    uint64_t last_n = 0;
    L.t0 = now;
    for (size_t i = 0; i < L.nc; i++) {
        struct conn *c = &L.c[i];
        c->due = now;
        if (c->role == ROLE_QUERY && cfg->qps > 0)  /* first arrival, not all at once */
            c->due += -log(1.0 - bench_rng_unit(&c->rng)) / cfg->qps;
    }
    struct epoll_event evs[64];
    for (;;) {
        for (size_t i = 0; i < L.nc && !L.failed; i++) {
            struct conn *c = &L.c[i];
            if (c->role == ROLE_PIPE)
                pipe_send(&L, c, now);
            else if (c->role == ROLE_QUERY)
                query_send(&L, c, now);
            else
                snap_send(&L, c, now);
        }
        if (L.failed)
            break;
        bool pdone = pipes_done(&L);
        if (cfg->queries && ((npipe && pdone) || (!npipe && now - L.t0 >= cfg->query_secs)))
            L.stop_queries = true;
        bool qdone = true;
        for (size_t i = 0; i < L.nc; i++)
            if (L.c[i].role == ROLE_QUERY && L.c[i].busy)
                qdone = false;
        bool sdone = true;
        for (size_t i = 0; i < L.nc; i++) {
            struct conn *c = &L.c[i];
            if (c->role != ROLE_SNAP || c->ss == SS_DONE)
                continue;
            if (pdone && c->ss == SS_WAIT) {
                snprintf(res->snap_error, sizeof res->snap_error,
                         "the stream ended before the snapshot point");
                c->ss = SS_DONE;
            } else {
                sdone = false;
            }
        }
        if (pdone && (!cfg->queries || (L.stop_queries && qdone)) && sdone)
            break;
        if (now - L.t0 > timeout) {
            snprintf(msg, msglen, "timed out after %.0f s with %llu of %llu replies", timeout,
                     (unsigned long long)L.replies, (unsigned long long)L.sent);
            rc = BENCH_ETIMEOUT;
            goto out;
        }
        int n = wait_events(&L, evs, 64, now);
        if (n < 0 && errno != EINTR) {
            snprintf(msg, msglen, "epoll_wait: %s", strerror(errno));
            rc = BENCH_EIO;
            goto out;
        }
        now = bench_now();
        for (int i = 0; i < n && !L.failed; i++) {
            struct conn *c = evs[i].data.ptr;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                on_read(&L, c, now);
            if (!L.failed && (evs[i].events & EPOLLOUT))
                flush(&L, c);
        }
        if (L.failed)
            break;
        progress(&L, now, &last_prog, &last_n, false);
    }
    if (L.failed) {
        rc = BENCH_ESERVER;
        goto out;
    }
    progress(&L, now, &last_prog, &last_n, true);
    res->sent = L.sent;
    res->secs = L.t_last > L.t_first ? L.t_last - L.t_first : 0;
    res->rate = res->secs > 0 ? (double)res->replies / res->secs : 0;
    res->q_secs = now - L.t0;
    if (cfg->snapshot && res->snap_end_s > 0) {
        for (size_t i = 0; i < res->ngaps; i++) {
            const struct bench_gap *g = &res->gaps[i];
            if (g->end_s >= res->snap_start_s && g->start_s <= res->snap_end_s) {
                /* a silence begun before SNAPSHOT was sent counts from then */
                double from = g->start_s > res->snap_start_s ? g->start_s : res->snap_start_s;
                double ms = (g->end_s - from) * 1e3;
                if (ms > res->snap_stall_ms)
                    res->snap_stall_ms = ms;
            }
        }
    }
out:
    for (size_t i = 0; i < L.nc; i++) {
        if (L.c[i].fd >= 0)
            close(L.c[i].fd);
        free(L.c[i].rbuf);
        free(L.c[i].ring);
    }
    free(L.c);
    if (L.ep >= 0)
        close(L.ep);
    return rc;
}

void bench_run_res_free(struct bench_run_res *res)
{
    free(res->gaps);
    res->gaps = NULL;
    res->ngaps = 0;
}
