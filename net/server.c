/* SPDX-License-Identifier: MIT */
/*
 * server.c -- shortstatd's event loop: listener, connections, signals,
 * periodic work and fork()ed snapshots. One thread serves every client
 * (libev, non-blocking fds); the others only fault memory in (prefault.c)
 * or decode a snapshot while it loads (snapshot/).
 *
 * Connection life (enum conn_state):
 *
 *   accept -> ACTIVE --QUIT / EOF / fatal protocol error / shutdown--> DRAINING
 *               |                                                      | replies written
 *               +--output or query limit, I/O error, no memory--> CLOSING -> freed
 *
 * Reads: one read(2) per readiness event into the connection's input buffer
 * (16 KiB, doubling up to 1 MiB while reads fill it), then cmd.c runs the
 * complete commands in it. Replies are appended to the output buffer and the
 * connection is put on the pending list; an ev_prepare watcher, which runs
 * once per loop iteration just before the loop sleeps, writes each pending
 * connection's replies with as few write(2) calls as the socket accepts. Only
 * a connection whose socket is full gets a write watcher. So a pipeline of
 * 100,000 commands costs a few reads and a few writes, not 200,000 syscalls.
 *
 * Fairness: a connection's input runs for one turn (NET_TURN_USEC) per
 * iteration. Input left when the turn ends (a megabyte of TOPs is seconds
 * of work) is parked: the connection stops reading, the same ev_prepare
 * runs one more turn of each parked connection per iteration, and an
 * ev_idle keeps the loop from sleeping while any is parked. Every other
 * client is served between two turns; the parked one reads again once its
 * input is run.
 *
 * Time: the engine's clock is ev_now(), the loop's cached wall time, so no
 * command makes a clock syscall.
 *
 * Snapshots fork(): the child holds a copy-on-write image of the engine,
 * calls snap_save() and reports its result through a pipe; the parent keeps
 * serving and collects the result in an ev_child watcher. The only pause the
 * loop sees is fork() itself (page-table copy), measured as last_fork_usec.
 * At shutdown the parent stops a running child (the final snapshot, written
 * synchronously, supersedes it). The data directory's lock (snap_lock_dir), taken
 * before anything is loaded, keeps a second server or a restore out; the
 * child inherits it and dies with its parent (PR_SET_PDEATHSIG), so no
 * writer outlives the server it belonged to.
 */
#include "net/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "net/log.h"
#include "net/prefault.h"
#include "snapshot/snap.h"

#define READ_MIN (16u * 1024)
#define READ_MAX (1024u * 1024)
#define ACCEPT_PER_EVENT 64
#define CRON_INTERVAL 0.1          /* s */
#define TICK_BUDGET 4096u          /* sessions examined per cron tick */
#define IDLE_SHRINK_AFTER 2.0      /* s without input before buffers are given back */
#define SHUTDOWN_FLUSH_TIMEOUT 3.0 /* s to write pending replies at shutdown */

#define SNAPSHOT_NICE 10            /* the snapshot child's nice value (see snapshot_child) */
#define LINGER_TIMEOUT 2.0         /* s a closing connection may keep sending before the close */

static const char *const conn_state_names[CONN_STATE_COUNT] = {"active", "draining", "closing",
                                                               "lingering"};

const char *net_conn_state_name(enum conn_state st)
{
    return (unsigned)st < CONN_STATE_COUNT ? conn_state_names[st] : "?";
}

int64_t net_now_ms(const struct server *s)
{
    return (int64_t)(ev_now(s->loop) * 1000.0);
}

static int64_t eng_clock(void *ud) { return net_now_ms(ud); }
static void eng_populate(void *ud, void *addr, size_t len)
{
    net_prefault_request(((struct server *)ud)->prefault, addr, len);
}

uint64_t net_mono_nsec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t net_mono_usec(void)
{
    return net_mono_nsec() / 1000u;
}

bool net_ratelimit_ok(struct net_ratelimit *rl, double now, uint64_t *suppressed)
{
    if (rl->last != 0 && now - rl->last < 1.0) {
        rl->suppressed++;
        return false;
    }
    *suppressed = rl->suppressed;
    rl->suppressed = 0;
    rl->last = now;
    return true;
}

static void addr_text(const struct sockaddr *sa, socklen_t len, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN], port[8];
    if (getnameinfo(sa, len, host, sizeof host, port, sizeof port,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(out, cap, "?");
        return;
    }
    snprintf(out, cap, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

/* ---- connections ----------------------------------------------------------------- */

/* The work lists: a connection is on each at most once, in FIFO order.
 * `off` says which of its links (wl: pending, pl: parked). */
#define LINK(c, off) ((struct conn_link *)((char *)(c) + (off)))

static void list_push(struct conn_list *l, struct conn *c, size_t off)
{
    struct conn_link *k = LINK(c, off);
    if (k->on)
        return;
    *k = (struct conn_link){.prev = l->tail, .next = NULL, .on = true};
    if (l->tail)
        LINK(l->tail, off)->next = c;
    else
        l->head = c;
    l->tail = c;
    l->n++;
}

static void list_remove(struct conn_list *l, struct conn *c, size_t off)
{
    struct conn_link *k = LINK(c, off);
    if (!k->on)
        return;
    if (k->prev)
        LINK(k->prev, off)->next = k->next;
    else
        l->head = k->next;
    if (k->next)
        LINK(k->next, off)->prev = k->prev;
    else
        l->tail = k->prev;
    *k = (struct conn_link){0};
    l->n--;
}

static void pending_add(struct server *s, struct conn *c)
{
    list_push(&s->pending, c, offsetof(struct conn, wl));
}

static void pending_remove(struct server *s, struct conn *c)
{
    list_remove(&s->pending, c, offsetof(struct conn, wl));
}

/* Its turn ended with input left: no reading until that input is run. */
static void conn_park(struct server *s, struct conn *c)
{
    ev_io_stop(s->loop, &c->rio);
    list_push(&s->parked, c, offsetof(struct conn, pl));
    ev_idle_start(s->loop, &s->spin_w);
}

static void conn_unpark(struct server *s, struct conn *c)
{
    list_remove(&s->parked, c, offsetof(struct conn, pl));
    if (!s->parked.n)
        ev_idle_stop(s->loop, &s->spin_w);
}

static void conn_free(struct server *s, struct conn *c)
{
    ev_io_stop(s->loop, &c->rio);
    ev_io_stop(s->loop, &c->wio);
    pending_remove(s, c);
    conn_unpark(s, c);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    /* A snapshot child shares the socket: make the peer see the close now. */
    if (s->snap.in_progress)
        shutdown(c->fd, SHUT_RDWR);
    close(c->fd);
    net_debug("client %s closed (%s)", c->addr, net_conn_state_name(c->state));
    net_buf_free(&c->in);
    net_buf_free(&c->out);
    net_multi_free(&c->multi);
    if (c->is_http)
        http_conn_free(&c->http);
    free(c);
    s->nconns--;
}

/* Writes what the socket takes. Returns false when c was freed. */
static bool conn_write(struct server *s, struct conn *c)
{
    struct net_buf *out = &c->out;
    while (net_buf_live(out) > 0) {
        ssize_t n = write(c->fd, out->p + out->off, net_buf_live(out));
        if (n > 0) {
            s->st.net_output_bytes += (uint64_t)n;
            net_buf_consume(out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(s->loop, &c->wio);
            return true;
        }
        net_debug("client %s: write: %s", c->addr, n < 0 ? strerror(errno) : "0 bytes");
        conn_free(s, c);
        return false;
    }
    ev_io_stop(s->loop, &c->wio);
    if (c->state == CONN_DRAINING && !c->peer_eof && !s->shutting_down &&
        shutdown(c->fd, SHUT_WR) == 0) {
        /* Our replies are out; the peer may still be sending. Read and drop
         * its input until it closes (or LINGER_TIMEOUT, checked by cron). */
        c->state = CONN_LINGERING;
        c->last_active = ev_now(s->loop);
        ev_io_start(s->loop, &c->rio);
        return true;
    }
    if (c->state != CONN_ACTIVE) {
        conn_free(s, c);
        return false;
    }
    return true;
}

void net_conn_write_now(struct server *s, struct conn *c)
{
    struct net_buf *out = &c->out;
    s->st.mid_input_writes++;
    while (net_buf_live(out) > 0) {
        ssize_t n = write(c->fd, out->p + out->off, net_buf_live(out));
        if (n > 0) {
            s->st.net_output_bytes += (uint64_t)n;
            net_buf_consume(out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;  /* the flush after the input is run starts the write watcher */
        net_debug("client %s: write: %s", c->addr, n < 0 ? strerror(errno) : "0 bytes");
        c->state = CONN_CLOSING;
        return;
    }
}

void net_conn_limit_output(struct server *s, struct conn *c)
{
    const uint64_t limit = s->cfg.client_output_limit;
    if (net_buf_live(&c->out) <= limit)
        return;
    net_conn_write_now(s, c);
    if (net_buf_live(&c->out) <= limit || c->state == CONN_CLOSING)
        return;
    s->st.output_limit_disconnects++;
    net_warn("client %s: output buffer %zu bytes over --client-output-limit %llu, closing",
             c->addr, net_buf_live(&c->out), (unsigned long long)limit);
    c->state = CONN_CLOSING;
}

/* CONN_LINGERING: discard input; the close comes at EOF, error or timeout.
 * A few reads per event, like any client's turn: a peer that keeps sending
 * must not hold the loop until LINGER_TIMEOUT, which cron checks. */
static void linger_read(struct server *s, struct conn *c)
{
    uint8_t sink[16384];
    for (int i = 0; i < 4; i++) {
        ssize_t n = read(c->fd, sink, sizeof sink);
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        conn_free(s, c);
        return;
    }
}

static void conn_stop_reading(struct server *s, struct conn *c)
{
    ev_io_stop(s->loop, &c->rio);
    pending_add(s, c);  /* the flush closes it once the replies are out */
}

const char *net_conn_laddr(struct conn *c)
{
    if (c->laddr[0])
        return c->laddr;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(c->fd, (struct sockaddr *)&ss, &sl) != 0)
        return "?";  /* not kept: the next CLIENT LIST tries again */
    addr_text((struct sockaddr *)&ss, sl, c->laddr, sizeof c->laddr);
    return c->laddr;
}

void net_conn_kill(struct server *s, struct conn *c)
{
    net_buf_consume(&c->out, net_buf_live(&c->out));
    c->state = CONN_CLOSING;
    conn_stop_reading(s, c);
}

static void write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = w->data;
    conn_write(c->srv, c);
}

static void conn_after_input(struct server *s, struct conn *c, bool more);

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = w->data;
    struct server *s = c->srv;
    struct net_buf *in = &c->in;

    if (c->state == CONN_LINGERING) {
        linger_read(s, c);
        return;
    }
    if (in->cap - in->len < c->read_size) {
        net_buf_compact(in);
        if (!net_buf_reserve(in, c->read_size)) {
            net_warn("client %s: out of memory for input, closing", c->addr);
            conn_free(s, c);
            return;
        }
    }
    size_t room = in->cap - in->len;
    ssize_t n = read(c->fd, in->p + in->len, room);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        net_debug("client %s: read: %s", c->addr, strerror(errno));
        conn_free(s, c);
        return;
    }
    if (n == 0) {  /* EOF: the peer may still read our replies (half-close) */
        c->peer_eof = true;
        c->state = CONN_DRAINING;
        conn_stop_reading(s, c);
        return;
    }
    in->len += (size_t)n;
    s->st.net_input_bytes += (uint64_t)n;
    c->last_active = ev_now(loop);
    if ((size_t)n == room && c->read_size < READ_MAX)
        c->read_size *= 2;

    if (c->is_http) {
        uint64_t before = s->http_stats.interactions_total;
        int rc = http_conn_feed(&c->http, in->p + in->off, net_buf_live(in));
        s->dirty += s->http_stats.interactions_total - before;
        net_buf_consume(in, net_buf_live(in));
        const uint8_t *op;
        size_t olen;
        http_conn_output(&c->http, &op, &olen);
        net_buf_append(&c->out, op, olen);
        if (c->out.failed)
            rc = HTTP_ENOMEM;
        http_conn_consume(&c->http, olen);
        if (rc == HTTP_CLOSE)
            c->state = CONN_DRAINING;
        else if (rc < 0)
            c->state = CONN_CLOSING;
        if (c->state != CONN_CLOSING)
            net_conn_limit_output(s, c);
        conn_after_input(s, c, false);
    } else {
        conn_after_input(s, c, net_conn_process(s, c));
    }
}

/* After a turn of c's input: close, stop reading, park it, or have its
 * replies written. */
static void conn_after_input(struct server *s, struct conn *c, bool more)
{
    struct net_buf *in = &c->in;
    if (c->state == CONN_CLOSING) {
        conn_free(s, c);
        return;
    }
    /* Only input that does not parse yet counts: a parked connection's is
     * commands waiting for their turn, and it reads nothing meanwhile. */
    if (c->state == CONN_ACTIVE && !more && net_buf_live(in) > s->cfg.query_buffer_limit) {
        s->st.query_limit_disconnects++;
        s->st.errors++;
        net_warn("client %s: query buffer %zu bytes over --query-buffer-limit %llu, closing",
                 c->addr, net_buf_live(in), (unsigned long long)s->cfg.query_buffer_limit);
        net_reply_error(&c->out, "ERR Protocol error: query buffer limit exceeded");
        c->state = CONN_DRAINING;
    }
    if (c->state != CONN_ACTIVE) {
        conn_stop_reading(s, c);
        return;
    }
    if (more)
        conn_park(s, c);
    else
        ev_io_start(s->loop, &c->rio);  /* a parked one caught up: reading again */
    if (net_buf_live(&c->out) > 0)
        pending_add(s, c);
}

static void conn_new(struct server *s, int fd, const struct sockaddr *sa, socklen_t salen,
                     bool is_http)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        net_warn("out of memory for a new client");
        close(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->srv = s;
    c->fd = fd;
    c->state = CONN_ACTIVE;
    c->authed = !s->cfg.requirepass[0];
    c->resp = 2;
    c->read_size = READ_MIN;
    c->last_active = c->created = ev_now(s->loop);
    c->last_cmd = "";
    c->id = ++s->next_conn_id;
    addr_text(sa, salen, c->addr, sizeof c->addr);
    if (is_http) {
        char ip[INET6_ADDRSTRLEN] = "";
        getnameinfo(sa, salen, ip, sizeof ip, NULL, 0, NI_NUMERICHOST);
        c->is_http = true;
        if (http_conn_init(&c->http, &s->http_env, ip[0] ? ip : NULL) != HTTP_OK) {
            free(c);
            close(fd);
            return;
        }
    }
    ev_io_init(&c->rio, read_cb, fd, EV_READ);
    ev_io_init(&c->wio, write_cb, fd, EV_WRITE);
    c->rio.data = c->wio.data = c;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    ev_io_start(s->loop, &c->rio);
    net_debug("client %s connected (id %llu, %u clients)", c->addr, (unsigned long long)c->id,
              s->nconns);
}

static void accept_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct server *s = w->data;
    if (!s->shutting_down) {
        ev_io_start(loop, &s->accept_w);
        if (s->hfd >= 0)
            ev_io_start(loop, &s->haccept_w);
    }
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct server *s = w->data;
    bool is_http = w == &s->haccept_w;
    for (int i = 0; i < ACCEPT_PER_EVENT; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(w->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Level-triggered: without a pause this would spin. Logged
                 * at most once a second: it lasts as long as the shortage */
                int e = errno;
                uint64_t more;
                if (net_ratelimit_ok(&s->accept_rl, ev_now(loop), &more))
                    net_warn("accept: %s; pausing accepts for 100 ms (%llu more pauses since "
                             "the last such line)", strerror(e), (unsigned long long)more);
                ev_io_stop(loop, w);
                if (!ev_is_active(&s->accept_pause_w)) {  /* the other listener's: shared */
                    /* set again each time: a fired one-shot timer keeps no delay */
                    ev_timer_set(&s->accept_pause_w, 0.1, 0.);
                    ev_timer_start(loop, &s->accept_pause_w);
                }
            } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                net_warn("accept: %s", strerror(errno));
            }
            return;
        }
        s->st.connections_received++;
        if (s->nconns >= s->cfg.maxclients) {
            /* each listener refuses in its own protocol (a health check or
             * a scrape must see an HTTP status) */
#define FULL_BODY "{\"ok\":false,\"error\":\"max number of clients reached\"}"
            _Static_assert(sizeof FULL_BODY - 1 == 52, "Content-Length below");
            static const char msg[] = "-ERR max number of clients reached\r\n";
            static const char hmsg[] =
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                "Content-Length: 52\r\nConnection: close\r\n\r\n" FULL_BODY;
#undef FULL_BODY
            ssize_t wr = is_http ? write(fd, hmsg, sizeof hmsg - 1) : write(fd, msg, sizeof msg - 1);
            (void)wr;  /* best effort: the socket is fresh and empty */
            if (is_http)
                http_stats_count(&s->http_stats, 503);
            close(fd);
            s->st.rejected_connections++;
            s->st.errors++;
            uint64_t more;
            if (net_ratelimit_ok(&s->refuse_rl, ev_now(loop), &more)) {
                char addr[64];
                addr_text((struct sockaddr *)&ss, sl, addr, sizeof addr);
                net_warn("client %s refused: --maxclients %u reached (%llu more refused since "
                         "the last such line)",
                         addr, s->cfg.maxclients, (unsigned long long)more);
            }
            continue;
        }
        conn_new(s, fd, (struct sockaddr *)&ss, sl, is_http);
    }
}

/* Only there to keep the loop from sleeping while input is parked. */
static void spin_cb(struct ev_loop *loop, ev_idle *w, int revents) {}

static void flush_pending(struct server *s)
{
    while (s->pending.head) {
        struct conn *c = s->pending.head;
        pending_remove(s, c);
        conn_write(s, c);
    }
}

/* Before the loop sleeps: write every pending reply, then give each parked
 * connection one more turn (those parked again wait for the next
 * iteration) and write what those turns answered. */
static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct server *s = w->data;
    flush_pending(s);
    for (uint32_t turns = s->parked.n; turns-- && s->parked.head;) {
        struct conn *c = s->parked.head;
        conn_unpark(s, c);
        conn_after_input(s, c, net_conn_process(s, c));
    }
    flush_pending(s);
    if (s->shutting_down && s->nconns == 0)
        ev_break(loop, EVBREAK_ALL);
}

/* ---- listener ------------------------------------------------------------------------ */

static int listen_on(struct server *s, uint32_t want_port, int *lfd, uint32_t *bound)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    char port[8];
    snprintf(port, sizeof port, "%u", want_port);
    int rc = getaddrinfo(s->cfg.bind, port, &hints, &res);
    if (rc) {
        net_error("bind %s: %s", s->cfg.bind, gai_strerror(rc));
        return -1;
    }
    int err = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 511) == 0) {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof ss;
            getsockname(fd, (struct sockaddr *)&ss, &sl);
            *bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                     : ((struct sockaddr_in *)&ss)->sin_port);
            char text[80];
            addr_text((struct sockaddr *)&ss, sl, text, sizeof text);
            net_info("listening on %s", text);
            *lfd = fd;
            freeaddrinfo(res);
            return 0;
        }
        err = errno;
        close(fd);
    }
    freeaddrinfo(res);
    net_error("cannot listen on %s port %s: %s", s->cfg.bind, port, strerror(err));
    return -1;
}

/* ---- snapshots ---------------------------------------------------------------------- */

/* Every setting on one line, as the flags spell them, so a log shows what
 * the server ran with; the password itself is not logged. */
static void log_settings(const struct net_config *cfg)
{
    char line[2 * NET_CONFIG_VALUE_MAX], v[NET_CONFIG_VALUE_MAX];
    size_t o = 0;
    for (size_t i = 0; net_config_key(i) && o < sizeof line; i++) {
        const char *key = net_config_key(i);
        net_config_value(cfg, i, v, sizeof v);
        if (net_config_secret(key))
            snprintf(v, sizeof v, "%s", v[0] ? "set" : "none");
        int n = snprintf(line + o, sizeof line - o, " %s=%s", key, v);
        o += n > 0 ? (size_t)n : 0;
    }
    net_info("shortstatd %s starting:%s%s%s", NET_VERSION, line,
             cfg->config_file[0] ? " config=" : "", cfg->config_file);
}

/* What the child tells the parent through the pipe. */
struct snap_report {
    int32_t rc;
    uint64_t bytes, raw_bytes, duration_ms, offset;
    char msg[256];
};

static void snapshot_child(struct server *s, int wfd, int64_t created_ms, pid_t parent)
{
    /* A child that outlived its server would rename a stale snapshot over
     * whatever was saved since (by a new server, or a restore): it dies with
     * its parent, and it holds the directory's lock (inherited) until then. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(1);
    /* The child must die on SIGTERM and must not hold clients' sockets. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    close(s->lfd);
    if (s->hfd >= 0)
        close(s->hfd);
    for (struct conn *c = s->conns; c; c = c->next)
        close(c->fd);

    /* A low CPU priority: on a core shared with the server, the child takes
     * what the server leaves idle and about a tenth more when the server is
     * saturated. Equal priority halved the server's CPU for the whole
     * snapshot (TRACK rate 7-12 k/s during it, 140-265 k/s before);
     * SCHED_IDLE starved the child under full load (a 5 s snapshot took
     * 57-75 s, leaving copy-on-write memory and the data at risk that long). */
    if (setpriority(PRIO_PROCESS, 0, SNAPSHOT_NICE) != 0)
        net_warn("snapshot child: cannot lower its priority: %s", strerror(errno));
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    bool pin = false;
    for (uint32_t i = 0; i < NET_CPUS_MAX && i < CPU_SETSIZE; i++)
        if (s->cfg.snapshot_cpus[i / 64] >> (i % 64) & 1) {
            CPU_SET(i, &cpus);
            pin = true;
        }
    if (pin && sched_setaffinity(0, sizeof cpus, &cpus) != 0)
        net_warn("snapshot child: --snapshot-cpulist: %s; running unpinned", strerror(errno));

    struct snap_report rep = {0};
    struct snap_stats st = {0};
    struct snap_err err = {0};
    rep.rc = snap_save(s->eng, s->cfg.dir, created_ms, &st, &err);
    rep.bytes = st.bytes;
    rep.raw_bytes = st.raw_bytes;
    rep.duration_ms = st.duration_ms;
    rep.offset = err.offset;
    memcpy(rep.msg, err.msg, sizeof rep.msg);
    rep.msg[sizeof rep.msg - 1] = 0;
    ssize_t w = write(wfd, &rep, sizeof rep);
    _exit(w == (ssize_t)sizeof rep && rep.rc == SNAP_OK ? 0 : 1);
}

/* The child is reaped: what a running snapshot holds is let go. */
static void snapshot_end(struct server *s)
{
    struct net_snapshot *sn = &s->snap;
    close(sn->pipe_fd);
    sn->pipe_fd = -1;
    sn->in_progress = false;
    sn->child = 0;
    net_prefault_pause(s->prefault, false);  /* paused since the fork */
}

/* A snapshot's outcome as INFO and /metrics report it, for the background
 * ones (snapshot_done) and the final one alike. */
static void snapshot_ok(struct server *s, uint64_t bytes, uint64_t raw_bytes, uint64_t ms)
{
    struct net_snapshot *sn = &s->snap;
    sn->total++;
    sn->last_unix = net_now_ms(s) / 1000;  /* a failure leaves the age growing */
    sn->last_status = NET_SNAP_OK;
    sn->last_bytes = bytes;
    sn->last_raw_bytes = raw_bytes;
    sn->last_duration_ms = ms;
    sn->last_error[0] = 0;
}

/* What the log adds to a failed background snapshot. */
static const char *retry_note(const struct server *s)
{
    return s->cfg.snapshot_interval_s ? " (retried at the next interval)" : "";
}

/* Counts a failed snapshot (one that ran, or one that could not start)
 * and returns the reason, as kept for INFO's last_snapshot_error. */
static const char *snapshot_failed(struct server *s, uint64_t ms, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const char *snapshot_failed(struct server *s, uint64_t ms, const char *fmt, ...)
{
    struct net_snapshot *sn = &s->snap;
    sn->total++;
    sn->failed++;
    sn->last_status = NET_SNAP_ERR;
    sn->last_duration_ms = ms;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sn->last_error, sizeof sn->last_error, fmt, ap);
    va_end(ap);
    return sn->last_error;
}

static void snapshot_done(struct server *s, int status)
{
    struct net_snapshot *sn = &s->snap;
    struct snap_report rep = {.rc = SNAP_EIO};
    ssize_t n = read(sn->pipe_fd, &rep, sizeof rep);
    snapshot_end(s);
    bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && n == (ssize_t)sizeof rep &&
              rep.rc == SNAP_OK;
    if (ok) {
        snapshot_ok(s, rep.bytes, rep.raw_bytes, rep.duration_ms);
        s->dirty -= sn->dirty_at_start < s->dirty ? sn->dirty_at_start : s->dirty;
        net_info("snapshot saved: %llu bytes (%llu raw) in %llu ms",
                 (unsigned long long)rep.bytes, (unsigned long long)rep.raw_bytes,
                 (unsigned long long)rep.duration_ms);
        return;
    }
    uint64_t ms = (uint64_t)(net_now_ms(s) - sn->started_ms);
    const char *why;
    if (n == (ssize_t)sizeof rep)
        why = snapshot_failed(s, ms, "%s: %.200s", snap_strerror(rep.rc), rep.msg);
    else if (WIFSIGNALED(status))
        why = snapshot_failed(s, ms, "child killed by signal %d", WTERMSIG(status));
    else
        why = snapshot_failed(s, ms, "child exited with status %d",
                              WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    net_error("snapshot to %s failed: %s%s", s->cfg.dir, why, retry_note(s));
}

static void child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    struct server *s = w->data;
    ev_child_stop(loop, w);
    snapshot_done(s, w->rstatus);
}

/* A snapshot that could not start (step: "pipe", "fork"; e: its errno):
 * counted and logged as a failed one, and said in err. */
static int start_failed(struct server *s, const char *step, int e, char *err, size_t errcap)
{
    const char *why = snapshot_failed(s, 0, "%s: %s", step, strerror(e));
    snprintf(err, errcap, "snapshot: %s", why);
    net_error("snapshot: %s%s", why, retry_note(s));
    return -1;
}

int net_snapshot_start(struct server *s, char *err, size_t errcap)
{
    struct net_snapshot *sn = &s->snap;
    if (sn->in_progress) {
        snprintf(err, errcap, "snapshot already in progress");
        return -1;
    }
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return start_failed(s, "pipe", errno, err, errcap);
    int64_t now = net_now_ms(s);
    uint64_t t0 = net_mono_usec();
    net_prefault_pause(s->prefault, true);  /* until snapshot_done, or a failed fork */
    pid_t parent = getpid(), pid = fork();
    int fork_errno = errno;
    if (pid == 0) {
        close(pfd[0]);
        s->prefault = NULL;  /* its thread is not in the child */
        snapshot_child(s, pfd[1], now, parent);
    }
    uint64_t t1 = net_mono_usec();
    close(pfd[1]);
    if (pid < 0) {
        net_prefault_pause(s->prefault, false);
        close(pfd[0]);
        return start_failed(s, "fork", fork_errno, err, errcap);
    }
    sn->in_progress = true;
    sn->child = pid;
    sn->pipe_fd = pfd[0];
    sn->started_ms = now;
    sn->dirty_at_start = s->dirty;
    sn->last_fork_usec = t1 - t0;
    if (sn->last_fork_usec > sn->max_fork_usec)
        sn->max_fork_usec = sn->last_fork_usec;
    ev_child_set(&s->child_w, pid, 0);
    ev_child_start(s->loop, &s->child_w);
    net_info("snapshot started in child %d (fork took %llu us, %llu change%s)", (int)pid,
             (unsigned long long)sn->last_fork_usec, (unsigned long long)s->dirty,
             s->dirty == 1 ? "" : "s");
    return 0;
}

static void snap_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct server *s = w->data;
    char err[256];
    if (s->snap.in_progress || s->dirty == 0)
        return;  /* nothing new to save, or a save still running */
    (void)net_snapshot_start(s, err, sizeof err);  /* a failure is logged there */
}

static void maxmemory_watch(struct server *s);

/* What the clients hold, for INFO and --maxmemory: the server's own
 * buffers, and each connection's (a queued MULTI and an HTTP request's
 * scratch included). cron_cb sums them in the walk it makes anyway. */
static uint64_t shared_memory(const struct server *s)
{
    return s->tmp.cap + NET_SCRATCH;
}

uint64_t net_multi_memory(const struct net_multi *m)
{
    return m->arena.cap + m->cap * sizeof *m->items + m->ixs_cap * sizeof *m->ixs;
}

uint64_t net_conn_memory(const struct conn *c)
{
    return sizeof *c + c->in.cap + c->out.cap + net_multi_memory(&c->multi) +
           (c->is_http ? http_conn_memory(&c->http) : 0);
}

/* (Re)arms the --snapshot-interval timer from s->cfg; 0 = no timer. */
static void snap_timer_set(struct server *s)
{
    ev_timer_stop(s->loop, &s->snap_w);
    if (!s->cfg.snapshot_interval_s)
        return;
    double iv = s->cfg.snapshot_interval_s;
    ev_timer_init(&s->snap_w, snap_timer_cb, iv, iv);
    s->snap_w.data = s;
    ev_timer_start(s->loop, &s->snap_w);
}

/* ---- periodic work and signals -------------------------------------------------------- */

static void cron_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct server *s = w->data;
    eng_tick(s->eng, TICK_BUDGET);
    /* Give back buffers that a burst grew, once the client goes quiet; sum
     * what the clients hold meanwhile, for --maxmemory. */
    double now = ev_now(loop);
    uint64_t bufs = shared_memory(s);
    for (struct conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == CONN_LINGERING && now - c->last_active >= LINGER_TIMEOUT) {
            conn_free(s, c);
            continue;
        }
        if (now - c->last_active >= IDLE_SHRINK_AFTER) {
            net_buf_shrink(&c->in, READ_MIN);
            if (c->in.cap == 0)
                c->read_size = READ_MIN;
            net_buf_shrink(&c->out, 64u * 1024);
        }
        bufs += net_conn_memory(c);
    }
    s->client_mem = bufs;
    maxmemory_watch(s);
    /* BGSAVE SCHEDULE: the next tick with no snapshot running starts it,
     * as Redis's cron does (the one it waited for may have ended, failed
     * or been stopped by a SHUTDOWN that then failed) */
    if (s->snap.scheduled && !s->snap.in_progress && !s->shutting_down) {
        char err[256];
        s->snap.scheduled = false;
        (void)net_snapshot_start(s, err, sizeof err);  /* a failure is logged there */
    }
}

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct server *s = w->data;
    net_warn("shutdown: %u clients still had unsent replies after %.0f s; closing them",
             s->nconns, SHUTDOWN_FLUSH_TIMEOUT);
    while (s->conns) {
        s->conns->state = CONN_CLOSING;
        conn_free(s, s->conns);
    }
    ev_break(loop, EVBREAK_ALL);
}

static void startup_signal(int sig)
{
    net_log_from_signal(NET_LOG_INFO, sig == SIGINT
                                          ? "received SIGINT during start-up: exiting without "
                                            "saving; the snapshot on disk is untouched"
                                          : "received SIGTERM during start-up: exiting without "
                                            "saving; the snapshot on disk is untouched");
    _exit(0);
}

void net_shutdown_begin(struct server *s, const char *why)
{
    struct ev_loop *loop = s->loop;
    net_info("%s: shutting down", why);
    s->shutting_down = true;
    ev_io_stop(loop, &s->accept_w);
    ev_timer_stop(loop, &s->accept_pause_w);
    ev_timer_stop(loop, &s->snap_w);
    close(s->lfd);
    s->lfd = -1;
    if (s->hfd >= 0) {
        ev_io_stop(loop, &s->haccept_w);
        close(s->hfd);
        s->hfd = -1;
    }
    for (struct conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == CONN_LINGERING) {  /* replies already out */
            conn_free(s, c);
            continue;
        }
        if (c->state == CONN_ACTIVE)
            c->state = CONN_DRAINING;
        conn_stop_reading(s, c);
    }
    ev_timer_set(&s->deadline_w, SHUTDOWN_FLUSH_TIMEOUT, 0.);
    ev_timer_start(loop, &s->deadline_w);
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct server *s = w->data;
    const char *why = w->signum == SIGINT ? "received SIGINT" : "received SIGTERM";
    if (s->shutting_down) {
        net_warn("%s again during shutdown; still finishing", why);
        return;
    }
    net_shutdown_begin(s, why);
}

uint32_t net_line_clients(const struct server *s)
{
    return s->nconns - (uint32_t)s->http_stats.connections;
}

uint64_t net_used_memory(const struct server *s)
{
    return eng_mem_total(s->eng) + s->client_mem + net_slowlog_memory(&s->slowlog);
}

/* Logs when used memory goes over --maxmemory, and when it is back under
 * by a margin (1/16 of the limit, at least 1 MiB). Writes are refused
 * exactly while it is over; the margin only keeps a server hovering at the
 * limit from logging every tick. The refusals are counted, not logged.
 * mem_logged_over is what the log last said. */
static void maxmemory_watch(struct server *s)
{
    uint64_t used = net_used_memory(s), max = s->cfg.maxmemory;
    if (!s->mem_logged_over) {
        if (!max || used <= max)  /* net_over_maxmemory, with used at hand */
            return;
        s->mem_logged_over = true;
        net_warn("used memory %llu bytes is over --maxmemory %llu: TRACK, BOOST and HTTP writes "
                 "are refused while it is (CONFIG SET maxmemory moves the limit)",
                 (unsigned long long)used, (unsigned long long)max);
        return;
    }
    /* (a change of the limit is settled by net_server_reconfigure) */
    uint64_t margin = max / 16 > ((uint64_t)1 << 20) ? max / 16 : (uint64_t)1 << 20;
    if (used > max || max - used < margin)  /* max != 0: a new limit clears the flag */
        return;
    s->mem_logged_over = false;
    net_warn("used memory %llu bytes is back under --maxmemory %llu: writes accepted",
             (unsigned long long)used, (unsigned long long)max);
}

bool net_refuse_writes(struct server *s, uint64_t n)
{
    if (!net_over_maxmemory(s))
        return false;
    s->st.oom_refused += n;
    return true;
}

/* HTTP's write gate: its n refused interactions are counted with the
 * line protocol's, a batch as many as it holds. */
static bool http_over_memory(void *ud, uint64_t n)
{
    return net_refuse_writes(ud, n);
}

uint64_t net_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, res = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%llu %llu", &size, &res) != 2)
        res = 0;
    fclose(f);
    return res * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void http_fill(void *ud, struct http_metrics *m)
{
    struct server *s = ud;
    struct eng_info ei;
    eng_info(s->eng, &ei);
    m->version = NET_VERSION;
    m->uptime_ms = (int64_t)((ev_now(s->loop) - s->start_time) * 1000.0);
    m->connected_clients = net_line_clients(s);
    m->rejected_connections = s->st.rejected_connections;
    m->commands_total = s->st.commands;
    m->errors_total = s->st.errors;
    m->auth_failures_total = s->st.auth_failures;
    m->used_memory_bytes = net_used_memory(s);  /* as INFO's */
    m->maxmemory_bytes = s->cfg.maxmemory;
    m->oom_refused_total = s->st.oom_refused;
    m->rss_bytes = net_rss_bytes();
    m->snapshot_in_progress = s->snap.in_progress;
    m->snapshot_status = (enum http_snap_status)s->snap.last_status;
    m->now_unix_ms = net_now_ms(s);
    m->last_snapshot_unix_ms = s->snap.last_unix * 1000;
    m->changes_since_snapshot = s->dirty;
    m->last_snapshot_duration_ms = s->snap.last_duration_ms;
    m->last_snapshot_bytes = s->snap.last_bytes;
    m->cmds = s->metric_cmds;
    m->ncmds = net_cmdstat_rows(s, s->metric_cmds, NET_CMDSTAT_SLOTS);
    for (uint32_t i = 0; i < s->nerrstat; i++)
        s->metric_errs[i] = (struct http_err_metric){s->errstat[i].code, s->errstat[i].count};
    m->errs = s->metric_errs;
    m->nerrs = s->nerrstat;
}

/* ---- init / run / destroy ---------------------------------------------------------------- */

/* Raises the open file limit toward what want clients need (up to the hard
 * limit, as Redis does); returns how many clients it then allows, at most
 * want, with the limit in *cur. FD_RESERVE covers the listeners, the
 * snapshot's files and pipe, the log and what libev keeps. */
#define FD_RESERVE 64
static uint32_t fd_clients_room(uint32_t want, rlim_t *cur)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)want + FD_RESERVE;
    *cur = 0;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return want;
    if (rl.rlim_cur < need) {
        rlim_t to = need < rl.rlim_max ? need : rl.rlim_max;
        struct rlimit nl = {to, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &nl) == 0)
            rl.rlim_cur = to;
    }
    *cur = rl.rlim_cur;
    if (rl.rlim_cur >= need)
        return want;
    return rl.rlim_cur > FD_RESERVE + 32 ? (uint32_t)(rl.rlim_cur - FD_RESERVE) : 32;
}

static void raise_fd_limit(struct server *s)
{
    rlim_t cur;
    uint32_t max = fd_clients_room(s->cfg.maxclients, &cur);
    if (max < s->cfg.maxclients) {
        net_warn("open file limit %llu is too low for --maxclients %u; using maxclients %u",
                 (unsigned long long)cur, s->cfg.maxclients, max);
        s->cfg.maxclients = max;
    }
}

int net_server_init(struct server *s, const struct net_config *cfg)
{
    s->cfg = *cfg;
    net_slowlog_init(&s->slowlog, cfg->slowlog_max_len);
    s->lock_fd = -1;
    s->lfd = -1;
    s->hfd = -1;
    s->snap.pipe_fd = -1;
    s->loop = ev_default_loop(EVFLAG_AUTO);  /* ev_child needs the default loop */
    if (!s->loop) {
        net_error("cannot initialise libev");
        return -1;
    }
    s->start_time = ev_now(s->loop);
    /* Until the loop's own handlers take over (below), SIGTERM/SIGINT end
     * the start-up at once: nothing has been recorded, so there is nothing
     * to save, and a load of a large snapshot can take seconds. */
    struct sigaction sa = {.sa_handler = startup_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    raise_fd_limit(s);  /* may lower maxclients: the line below shows what runs */
    log_settings(&s->cfg);

    s->scratch = malloc(NET_SCRATCH);
    s->hist = malloc((size_t)cfg->history * sizeof *s->hist);
    if (!s->scratch || !s->hist) {
        net_error("out of memory");
        return -1;
    }
    struct snap_err le = {0};
    bool made;
    if (snap_prepare_dir(cfg->dir, &made, &le) != SNAP_OK) {
        net_error("%s", le.msg);
        return -1;
    }
    if (made)
        net_info("created data directory %s", cfg->dir);
    if (snap_lock_dir(cfg->dir, &s->lock_fd, &le) != SNAP_OK) {
        net_error("--dir: %s; refusing to start", le.msg);
        return -1;
    }

    struct eng_config ec = {
        .history = cfg->history,
        .session_ttl_ms = cfg->session_ttl_s * 1000,
        .clock = eng_clock,
        .ud = s,
    };
    char path[NET_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/%s", cfg->dir, SNAP_FILE);
    struct snap_header h;
    struct snap_err se = {0};
    struct stat sb;
    if (stat(path, &sb) == 0)
        net_info("loading snapshot %s (%.1f MB)", path, (double)sb.st_size / 1e6);
    if (lstat(path, &sb) == 0 && S_ISLNK(sb.st_mode))
        net_warn("%s is a symbolic link: the first snapshot replaces the link with a file, and "
                 "its target keeps the old state; to keep snapshots elsewhere, point --dir there",
                 path);
    uint64_t t0 = net_mono_usec();
    int rc = snap_load(path, &ec, &s->eng, &h, &se);
    if (rc == SNAP_ENOENT) {
        s->eng = eng_create(&ec);
        if (!s->eng) {
            net_error("out of memory creating the engine");
            return -1;
        }
        net_info("no snapshot at %s: starting empty", path);
    } else if (rc != SNAP_OK) {
        net_error("snapshot %s: offset %llu: %s: %s; refusing to start (the file is left as is)",
                  path, (unsigned long long)se.offset, snap_strerror(rc),
                  snap_err_reason(&se, path));
        s->eng = NULL;
        return -1;
    } else {
        s->snap.loaded = true;
        s->snap.loaded_created_ms = h.created_ms;
        s->snap.last_unix = h.created_ms / 1000;  /* the newest good snapshot on disk */
        s->snap.load_ms = (net_mono_usec() - t0) / 1000;
        struct eng_info ei;
        eng_info(s->eng, &ei);
        net_info("loaded snapshot %s in %llu ms: %llu shorts, %llu sessions, %llu users, "
                 "%llu records",
                 path, (unsigned long long)s->snap.load_ms, (unsigned long long)ei.shorts,
                 (unsigned long long)ei.sessions, (unsigned long long)ei.users,
                 (unsigned long long)ei.records);
    }

    /* After the load: a load touches what it maps at once, so there is
     * nothing to fault in ahead of it. The engine maps ahead only while it
     * has a hook, so the hook is attached only to a running thread. */
    if (cfg->prefault) {
        if ((s->prefault = net_prefault_start())) {
            eng_set_populate(s->eng, eng_populate);
            if (!net_prefault_boosted(s->prefault))
                net_info("--prefault: its steps run at idle priority (raising them needs root or "
                         "CAP_SYS_NICE); on a host whose CPUs other processes keep busy, use "
                         "--prefault no");
        } else
            net_warn("--prefault: cannot start its thread: %s; the engine faults its own memory "
                     "in", strerror(errno));
    }

    /* Signals first: "listening on" tells a supervisor (and the tests) that
     * SIGTERM/SIGINT now mean a clean shutdown, not death by default action. */
    ev_signal_init(&s->sigint_w, signal_cb, SIGINT);
    ev_signal_init(&s->sigterm_w, signal_cb, SIGTERM);
    s->sigint_w.data = s->sigterm_w.data = s;
    ev_signal_start(s->loop, &s->sigint_w);
    ev_signal_start(s->loop, &s->sigterm_w);
    if (listen_on(s, s->cfg.port, &s->lfd, &s->port))
        return -1;
    if (cfg->http_port) {
        uint32_t hp;
        if (listen_on(s, cfg->http_port, &s->hfd, &hp))
            return -1;
        s->http_env = (struct http_env){.eng = s->eng, .stats = &s->http_stats,
                                        .requirepass = s->cfg.requirepass,  /* CONFIG SET's too */
                                        .trust_proxy = cfg->trust_proxy,
                                        .cors_origin = s->cfg.http_cors_origin,  /* and CONFIG SET's */
                                        .fill_metrics = http_fill,
                                        .over_memory = http_over_memory, .ud = s};
        ev_io_init(&s->haccept_w, accept_cb, s->hfd, EV_READ);
        s->haccept_w.data = s;
        ev_io_start(s->loop, &s->haccept_w);
    }

    struct ev_loop *loop = s->loop;
    ev_io_init(&s->accept_w, accept_cb, s->lfd, EV_READ);
    s->accept_w.data = s;
    ev_io_start(loop, &s->accept_w);
    ev_timer_init(&s->accept_pause_w, accept_resume_cb, 0.1, 0.);
    s->accept_pause_w.data = s;
    ev_prepare_init(&s->flush_w, flush_cb);
    s->flush_w.data = s;
    ev_prepare_start(loop, &s->flush_w);
    ev_idle_init(&s->spin_w, spin_cb);
    ev_timer_init(&s->cron_w, cron_cb, CRON_INTERVAL, CRON_INTERVAL);
    s->cron_w.data = s;
    ev_timer_start(loop, &s->cron_w);
    ev_child_init(&s->child_w, child_cb, 0, 0);
    s->child_w.data = s;
    ev_timer_init(&s->deadline_w, deadline_cb, SHUTDOWN_FLUSH_TIMEOUT, 0.);
    s->deadline_w.data = s;
    snap_timer_set(s);
    s->client_mem = shared_memory(s);  /* no client yet */
    maxmemory_watch(s);  /* a snapshot loaded over the limit says so now */
    return 0;
}

int net_server_config_ok(struct server *s, const struct net_config *next, char *err,
                         size_t errcap)
{
    if (next->maxclients > s->cfg.maxclients) {
        rlim_t cur;
        uint32_t max = fd_clients_room(next->maxclients, &cur);
        if (max < next->maxclients) {
            snprintf(err, errcap, "maxclients: the open file limit %llu allows at most %u clients",
                     (unsigned long long)cur, max);
            return -1;
        }
    }
    return 0;
}

void net_server_reconfigure(struct server *s, const struct net_config *next)
{
    bool timer = next->snapshot_interval_s != s->cfg.snapshot_interval_s;
    bool limit = next->maxmemory != s->cfg.maxmemory;
    s->cfg = *next;
    net_log_set_level((enum net_log_level)s->cfg.loglevel);
    net_slowlog_set_max(&s->slowlog, s->cfg.slowlog_max_len);
    if (timer)
        snap_timer_set(s);
    /* A new limit: say where the server stands against it, so the last
     * memory line in the log is never about a limit no longer in force. */
    if (limit && s->mem_logged_over) {
        s->mem_logged_over = false;  /* over the new one too: maxmemory_watch says so */
        if (!s->cfg.maxmemory)
            net_warn("--maxmemory is off: writes accepted again");
        else if (!net_over_maxmemory(s))
            net_warn("used memory %llu bytes is under the new --maxmemory %llu: writes accepted",
                     (unsigned long long)net_used_memory(s),
                     (unsigned long long)s->cfg.maxmemory);
    }
    maxmemory_watch(s);
}

void net_snapshot_stop(struct server *s, const char *why)
{
    if (!s->snap.in_progress)
        return;
    /* Stopped rather than waited for (a slow child, or one stuck on a hung
     * disk, would hold the shutdown up), as Redis does; its temp file goes
     * with it, so a later load never meets it. */
    net_info("stopping the running snapshot (child %d): %s", (int)s->snap.child, why);
    pid_t child = s->snap.child;
    kill(child, SIGKILL);
    while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
        ;
    ev_child_stop(s->loop, &s->child_w);
    snapshot_end(s);
    snap_remove_stale(s->cfg.dir);
}

int net_final_snapshot(struct server *s, bool always)
{
    net_snapshot_stop(s, "the final snapshot replaces it");
    if (s->dirty == 0 && !always) {
        net_info("no changes since the last snapshot: no final snapshot needed");
        return 0;
    }
    struct snap_stats st = {0};
    struct snap_err se = {0};
    int rc = snap_save(s->eng, s->cfg.dir, net_now_ms(s), &st, &se);
    if (rc != SNAP_OK) {  /* INFO tells it too when SHUTDOWN refused to go on for this */
        net_error("final snapshot to %s failed: %s", s->cfg.dir,
                  snapshot_failed(s, st.duration_ms, "%s: %.200s", snap_strerror(rc), se.msg));
        return -1;
    }
    net_info("final snapshot saved: %llu bytes in %llu ms", (unsigned long long)st.bytes,
             (unsigned long long)st.duration_ms);
    snapshot_ok(s, st.bytes, st.raw_bytes, st.duration_ms);
    s->dirty = 0;
    return 0;
}

int net_server_run(struct server *s)
{
    ev_run(s->loop, 0);

    /* Replies are flushed (or timed out); now persist, unless SHUTDOWN
     * settled that already (saved, NOSAVE, or FORCE after a failed save). */
    ev_timer_stop(s->loop, &s->cron_w);
    ev_timer_stop(s->loop, &s->deadline_w);
    int code = s->exit_code;
    if (!s->final_done && net_final_snapshot(s, false) != 0)
        code = 1;
    if (code != 0 && s->dirty)  /* the failed save is logged above */
        net_error("changes since the last good snapshot lost: %llu",
                  (unsigned long long)s->dirty);
    net_info("shutdown complete%s", code ? " (exit 1)" : "");
    return code;
}

void net_server_destroy(struct server *s)
{
    while (s->conns)
        conn_free(s, s->conns);
    /* Every watcher the server may have started, before the loop goes:
     * libev keeps signal and child watchers on lists of its own, for the
     * whole process, which would go on pointing into s (freed next) -- a
     * later server's ev_signal_start would link to it and, finding the
     * list not empty, leave start-up's handler in place of libev's. A
     * stopped or never-started watcher is left as it is (s is zeroed
     * before net_server_init). */
    if (s->loop) {
        struct ev_loop *loop = s->loop;
        ev_signal_stop(loop, &s->sigint_w);
        ev_signal_stop(loop, &s->sigterm_w);
        ev_child_stop(loop, &s->child_w);
        ev_io_stop(loop, &s->accept_w);
        ev_io_stop(loop, &s->haccept_w);
        ev_prepare_stop(loop, &s->flush_w);
        ev_idle_stop(loop, &s->spin_w);
        ev_timer_stop(loop, &s->accept_pause_w);
        ev_timer_stop(loop, &s->cron_w);
        ev_timer_stop(loop, &s->snap_w);
        ev_timer_stop(loop, &s->deadline_w);
    }
    if (s->lfd >= 0)
        close(s->lfd);
    if (s->hfd >= 0)
        close(s->hfd);
    if (s->snap.pipe_fd >= 0)
        close(s->snap.pipe_fd);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    net_prefault_stop(s->prefault);  /* before the memory it may be faulting in goes */
    s->prefault = NULL;
    if (s->eng)
        eng_destroy(s->eng);
    free(s->scratch);
    free(s->hist);
    net_buf_free(&s->tmp);
    net_slowlog_free(&s->slowlog);
    if (s->loop)
        ev_loop_destroy(s->loop);
    s->eng = NULL;
    s->loop = NULL;
}
