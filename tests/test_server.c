/* SPDX-License-Identifier: MIT */
/*
 * test_server.c -- shortstatd over real TCP.
 *
 * Each test starts $SHORTSTAT_BUILD/shortstatd on a kernel-chosen port
 * (--port 0; the port is read from the log) with a fresh temp --dir, talks to
 * it with plain sockets or redis-cli, and stops it with SIGTERM, asserting a
 * clean exit 0 (under ASan that includes no leak). The server gets
 * PR_SET_PDEATHSIG, so a failing test never leaves one behind.
 *
 * Nothing here asserts on timing. Waits are bounded polls (a snapshot to
 * finish, a log line to appear) that fail only after many seconds.
 *
 * The engine-out-of-memory tests are the exception: the engine's allocation
 * failure hook (engine/eng_test.h) is reached through the struct eng, so
 * they run the server in the test's own process (a Check child) and the
 * client helpers turn its loop while they wait for a reply or for room to
 * send (srv_recv, srv_send).
 * Everything else is the real server: sockets, the loop, cmd.c, http.c;
 * shortstatd itself has no hook.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include "engine/eng_test.h"
#include "net/config.h"
#include "net/log.h"
#include "net/proto.h"
#include "net/server.h"
#include "snapshot/snap.h"
#include "tests/eng_util.h"
#include "tests/run_util.h"

/* ---- the server process ------------------------------------------------------------ */

struct srv {
    pid_t pid;
    int port;
    char dir[64];
    char log[96];
    rlim_t nofile;   /* 0: inherit; else the server's open-file limit */
    unsigned deny;   /* DENY_*: system calls the server finds failing */
};

static const char *build_dir(void)
{
    const char *b = getenv("SHORTSTAT_BUILD");
    return b && *b ? b : SHORTSTAT_BUILD;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The whole file at path (malloc'd, NUL-terminated), or NULL when there is none. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *b = run_read_back(f, len);
    fclose(f);
    return b;
}

static bool log_has(const struct srv *s, const char *needle)
{
    char *l = read_file(s->log, NULL);
    bool has = l && strstr(l, needle);
    free(l);
    return has;
}

/* The number right after the log's last `needle` (asserted present). */
static long long log_num_after(const struct srv *s, const char *needle)
{
    char *l = read_file(s->log, NULL);
    const char *last = NULL;
    for (const char *q = l ? strstr(l, needle) : NULL; q; q = strstr(q + 1, needle))
        last = q;
    ck_assert_msg(last, "the log never says '%s'", needle);
    long long v = atoll(last + strlen(needle));
    free(l);
    return v;
}

/* System calls a spawned server finds failing (struct srv's deny). */
enum { DENY_FORK = 1, DENY_PIPE = 2, DENY_ACCEPT = 4, DENY_RENAME = 8 };

/* Makes the system calls in deny fail for this process and what it execs,
 * through a seccomp filter. DENY_FORK: fork() fails with EAGAIN, as when a
 * system is out of processes or of memory for the copy's page tables, while
 * threads still start (clone without CLONE_VM is a fork; clone3 answers
 * ENOSYS, so glibc falls back to clone, whose flags a filter can read; the
 * sanitizers' own clones share memory). DENY_PIPE: pipe2() fails with
 * EMFILE (libev wakes itself with eventfd, so only snapshots use pipe2).
 * DENY_ACCEPT: accept() fails with EMFILE, as when out of descriptors.
 * DENY_RENAME: every rename fails with EPERM (a file made immutable, a
 * filesystem that refuses it).
 * 0, or -1 where there is no such filter. */
static int deny_syscalls(unsigned deny)
{
#if defined(__x86_64__) && defined(__NR_clone3)
    struct sock_filter f[24];
    unsigned short n = 0;
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                          offsetof(struct seccomp_data, arch));
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                          offsetof(struct seccomp_data, nr));
    if (deny & DENY_PIPE) {
        f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_pipe2, 0, 1);
        f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EMFILE);
    }
    if (deny & DENY_RENAME) {
        f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_rename, 2, 0);
        f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_renameat, 1, 0);
        f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_renameat2, 0, 1);
        f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
    }
    if (deny & DENY_ACCEPT) {  /* as when the process is out of file descriptors */
        f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_accept4, 1, 0);
        f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_accept, 0, 1);
        f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EMFILE);
    }
    if (deny & DENY_FORK) {  /* last: it loads clone's flags over the number */
        f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1);
        f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS);
        f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_fork, 4, 0);
        f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_vfork, 3, 0);
        f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 3);
        f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                              offsetof(struct seccomp_data, args[0]));
        f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_VM, 1, 0);
        f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAGAIN);
    }
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog prog = {n, f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0 ? 0 : -1;
#else
    (void)deny;
    errno = ENOSYS;
    return -1;
#endif
}

/* Spawns shortstatd with args (NULL-terminated) and stderr to s->log. */
static pid_t spawn(struct srv *s, const char *const *args)
{
    char bin[512];
    snprintf(bin, sizeof bin, "%s/shortstatd", build_dir());
    const char *argv[40];
    int n = 0;
    argv[n++] = bin;
    /* HTTP off unless a test asks for it (a later flag wins): the default
     * port 7879 may be taken by a running shortstatd or a parallel test. */
    argv[n++] = "--http-port";
    argv[n++] = "0";
    for (int i = 0; args && args[i]; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (s->nofile) {
            struct rlimit rl = {s->nofile, s->nofile};
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        if (s->deny && deny_syscalls(s->deny) != 0) {
            dprintf(2, "test: cannot install the seccomp filter: %s\n", strerror(errno));
            _exit(126);
        }
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Waits (up to RUN_WAIT_MS) for "listening on ...:PORT" or for the process to
 * exit. */
static int await_port(struct srv *s)
{
    for (long long end = run_mono_ms() + RUN_WAIT_MS; run_mono_ms() < end;) {
        char *l = read_file(s->log, NULL);
        char *p = l ? strstr(l, "listening on ") : NULL;
        if (p) {
            char *nl = strchr(p, '\n');
            if (nl) {
                *nl = 0;
                char *colon = strrchr(p, ':');
                int port = colon ? atoi(colon + 1) : 0;
                free(l);
                return port;
            }
        }
        free(l);
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = 0;
            return -1;
        }
        sleep_ms(5);
    }
    return -1;
}

static void srv_init_dir(struct srv *s)
{
    run_mkdtemp(s->dir, sizeof s->dir, "test");
    snprintf(s->log, sizeof s->log, "%s.log", s->dir);
    unlink(s->log);
}

/* Spawns a server in s->dir (created when empty) with extra flags. */
static pid_t srv_spawn(struct srv *s, const char *const *extra)
{
    if (!s->dir[0])
        srv_init_dir(s);
    const char *args[32] = {"--port", "0", "--dir", s->dir, "--snapshot-interval", "0"};
    int n = 6;
    for (int i = 0; extra && extra[i]; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    unlink(s->log);  /* a restart must not find the previous run's port */
    return spawn(s, args);
}

/* srv_spawn, and whether the server came to listen (s->port), else s->pid
 * is 0 when it exited. */
static bool srv_launch(struct srv *s, const char *const *extra)
{
    s->pid = srv_spawn(s, extra);
    s->port = await_port(s);
    return s->port > 0;
}

/* Starts a server in s->dir (created when empty) with extra flags. */
static void srv_start_in(struct srv *s, const char *const *extra)
{
    if (!srv_launch(s, extra)) {
        char *l = read_file(s->log, NULL);
        ck_abort_msg("shortstatd did not start; log:\n%s", l ? l : "(none)");
    }
}

static void srv_start(struct srv *s, const char *const *extra)
{
    memset(s, 0, sizeof *s);
    srv_start_in(s, extra);
}


/* srv_spawn with --http-port, for run_start_http. */
struct srv_http {
    struct srv *s;
    const char *const *extra;
};

static pid_t srv_spawn_http(void *ctx, uint16_t http_port)
{
    const struct srv_http *h = ctx;
    char hp[16];
    snprintf(hp, sizeof hp, "%u", http_port);
    const char *args[26] = {"--http-port", hp};
    int n = 2;
    for (int i = 0; h->extra && h->extra[i]; i++)
        args[n++] = h->extra[i];
    args[n] = NULL;
    return srv_spawn(h->s, args);
}

/* srv_start_in with the HTTP port on too (run_start_http); returns that
 * port. */
static int srv_start_http(struct srv *s, const char *const *extra)
{
    if (!s->dir[0])
        srv_init_dir(s);  /* s->log, which run_start_http reads */
    struct srv_http h = {s, extra};
    uint16_t port;
    int hp = run_start_http(s->log, srv_spawn_http, &h, &s->pid, &port);
    s->port = port;
    return hp;
}

/* Waits for the server to exit (RUN_WAIT_MS at most: a server that does not
 * exit fails the test with its log, rather than hanging it): its exit
 * code, or 128 + the signal. */
static int wait_exit(struct srv *s)
{
    int st = 0;
    if (!run_reap(s->pid, RUN_WAIT_MS, &st)) {
        run_kill(&s->pid);
        char *l = read_file(s->log, NULL);
        ck_abort_msg("shortstatd did not exit within %d ms; log:\n%s", RUN_WAIT_MS,
                     l ? l : "(none)");
    }
    s->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Runs shortstatd in s->dir (made if needed) with exactly args; waits for it
 * to exit and returns the exit code. */
static int srv_run_to_exit(struct srv *s, const char *const *args)
{
    if (!s->dir[0])
        srv_init_dir(s);
    unlink(s->log);
    s->pid = spawn(s, args);
    return wait_exit(s);
}

/* Waits up to RUN_WAIT_MS for a line of the server's log to hold needle. */
static bool wait_log(const struct srv *s, const char *needle)
{
    for (long long end = run_mono_ms() + RUN_WAIT_MS; !log_has(s, needle) && run_mono_ms() < end;)
        sleep_ms(5);
    return log_has(s, needle);
}

static void srv_cleanup(struct srv *s)
{
    if (s->dir[0]) {
        run_rmtree(s->dir);
        unlink(s->log);
    }
}

/* SIGTERM, then the exit status (waitpid form). */
static int srv_term(struct srv *s)
{
    int st = -1;
    if (s->pid <= 0)
        return st;
    kill(s->pid, SIGTERM);
    if (!run_reap(s->pid, RUN_WAIT_MS, &st)) {  /* RUN_WAIT_MS: ASan's exit checks for leaks */
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &st, 0);
    }
    s->pid = 0;
    return st;
}

static void srv_stop_ok(struct srv *s)
{
    int st = srv_term(s);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char *l = read_file(s->log, NULL);
        ck_abort_msg("shortstatd did not exit 0 (status %d); log:\n%s", st, l ? l : "");
    }
    srv_cleanup(s);
}

/* ---- a client ------------------------------------------------------------------------ */

/* The server running in this process (inproc_start), or NULL: the
 * engine-out-of-memory tests' (see the top of the file). */
static struct server *inproc;
static char inproc_dir[64];  /* its --dir, "" when none */

/* send for the client helpers, all of p[0..n). With the server in another
 * process it blocks while the socket's buffer is full (the socket's
 * timeout bounds it); with the server in this one, which reads only while
 * its loop turns, the loop turns instead, RUN_WAIT_MS at most without
 * progress. */
static void srv_send(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (long long end = run_mono_ms() + RUN_WAIT_MS; n;) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL | (inproc ? MSG_DONTWAIT : 0));
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && inproc && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ck_assert_msg(run_mono_ms() < end, "timed out sending to the in-process server");
            ev_run(inproc->loop, EVRUN_NOWAIT);
            struct pollfd q = {.fd = fd, .events = POLLOUT};
            poll(&q, 1, 1);
            continue;
        }
        ck_assert_msg(w > 0, "send: %s", strerror(errno));
        b += w;
        n -= (size_t)w;
        end = run_mono_ms() + RUN_WAIT_MS;
    }
}

/* recv for the client helpers. With the server in another process it
 * blocks (the socket's timeout bounds it); with the server in this one,
 * its loop turns until data or EOF arrive, RUN_WAIT_MS at most. */
static ssize_t srv_recv(int fd, void *buf, size_t n)
{
    if (!inproc)
        return recv(fd, buf, n, 0);
    for (long long turn = 0, end = run_mono_ms() + RUN_WAIT_MS; run_mono_ms() < end; turn++) {
        ev_run(inproc->loop, EVRUN_NOWAIT);
        ssize_t r = recv(fd, buf, n, MSG_DONTWAIT);
        if (r >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            return r;
        /* The replies to what one turn read go out on the next: that turn
         * comes at once, the later ones after a wait. */
        struct pollfd p = {.fd = fd, .events = POLLIN};
        poll(&p, 1, turn ? 1 : 0);
    }
    errno = EAGAIN;
    return -1;
}

struct cli {
    int fd;
    uint8_t *buf;
    size_t len, cap;
    char *last;  /* the last reply, NUL-terminated; owned */
};

static int tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    struct timeval tv = {30, 0};  /* a hung server fails the test, not the run */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void cli_open(struct cli *c, int port)
{
    memset(c, 0, sizeof *c);
    c->fd = tcp_connect(port);
}

static void cli_close(struct cli *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    free(c->last);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

static void cli_send(struct cli *c, const void *p, size_t n) { srv_send(c->fd, p, n); }

static void cli_sends(struct cli *c, const char *s) { cli_send(c, s, strlen(s)); }

/* Length of the first complete RESP reply in p[0..n), 0 when incomplete. */
static size_t resp_complete(const uint8_t *p, size_t n)
{
    const uint8_t *nl = memchr(p, '\n', n);
    if (!nl || n < 3)
        return 0;
    size_t line = (size_t)(nl - p) + 1;
    long v = strtol((const char *)p + 1, NULL, 10);
    switch (p[0]) {
    case '+': case '-': case ':': case '_':  /* _: RESP3's null */
        return line;
    case '$':
        if (v < 0)
            return line;
        return n >= line + (size_t)v + 2 ? line + (size_t)v + 2 : 0;
    case '*': case '%': {  /* %: a RESP3 map of v pairs */
        size_t o = line;
        for (long i = 0; i < (p[0] == '%' ? 2 * v : v); i++) {
            size_t k = resp_complete(p + o, n - o);
            if (!k)
                return 0;
            o += k;
        }
        return o;
    }
    default:
        ck_abort_msg("malformed reply starting with 0x%02x", p[0]);
        return 0;
    }
}

static bool cli_fill(struct cli *c)
{
    if (c->cap - c->len < 4096) {
        c->cap = c->cap ? c->cap * 2 : 16384;
        c->buf = realloc(c->buf, c->cap);
        ck_assert_ptr_nonnull(c->buf);
    }
    ssize_t r = srv_recv(c->fd, c->buf + c->len, c->cap - c->len);
    if (r < 0 && errno == EINTR)
        return true;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        ck_abort_msg("timed out waiting for a reply");
    if (r <= 0)
        return false;
    c->len += (size_t)r;
    return true;
}

/* The next reply as raw RESP text, or NULL at EOF. Valid until the next call. */
static const char *cli_reply(struct cli *c)
{
    for (;;) {
        size_t k = c->len ? resp_complete(c->buf, c->len) : 0;
        if (k) {
            free(c->last);
            c->last = malloc(k + 1);
            ck_assert_ptr_nonnull(c->last);
            memcpy(c->last, c->buf, k);
            c->last[k] = 0;
            memmove(c->buf, c->buf + k, c->len - k);
            c->len -= k;
            return c->last;
        }
        if (!cli_fill(c))
            return NULL;
    }
}

static bool cli_eof(struct cli *c)
{
    return c->len == 0 && !cli_fill(c);
}

/* Sends an inline command (CRLF added) and returns its reply. */
static const char *cmdf(struct cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *cmdf(struct cli *c, const char *fmt, ...)
{
    char line[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 2, fmt, ap);
    va_end(ap);
    ck_assert(n > 0 && (size_t)n < sizeof line - 2);
    memcpy(line + n, "\r\n", 2);
    cli_send(c, line, (size_t)n + 2);
    const char *r = cli_reply(c);
    ck_assert_msg(r != NULL, "connection closed after '%s'", line);
    return r;
}

#define EXPECT(c, want, ...)                                                                   \
    do {                                                                                       \
        const char *got_ = cmdf(c, __VA_ARGS__);                                               \
        ck_assert_msg(strcmp(got_, want) == 0, "'%s': got '%s', want '%s'", #__VA_ARGS__, got_, \
                      want);                                                                   \
    } while (0)

/* Error replies: the prefix is enough. */
#define EXPECT_ERR(c, prefix, ...)                                                             \
    do {                                                                                       \
        const char *got_ = cmdf(c, __VA_ARGS__);                                               \
        ck_assert_msg(strncmp(got_, prefix, strlen(prefix)) == 0, "'%s': got '%s', want '%s...'", \
                      #__VA_ARGS__, got_, prefix);                                             \
    } while (0)

/* The bulk strings of a flat array reply, as a value for a key. */
static bool array_get(const char *reply, const char *key, char *val, size_t cap)
{
    const char *p = reply;
    if (*p != '*' && *p != '%')  /* a flat array, or a RESP3 map of n pairs */
        return false;
    long n = strtol(p + 1, NULL, 10) * (*p == '%' ? 2 : 1);
    p = strstr(p, "\r\n") + 2;
    for (long i = 0; i + 1 < n; i += 2) {
        long kl = strtol(p + 1, NULL, 10);
        const char *k = strstr(p, "\r\n") + 2;
        p = k + kl + 2;
        long vl = strtol(p + 1, NULL, 10);
        const char *v = strstr(p, "\r\n") + 2;
        p = v + vl + 2;
        if ((size_t)kl == strlen(key) && memcmp(k, key, (size_t)kl) == 0) {
            ck_assert_uint_lt((size_t)vl, cap);
            memcpy(val, v, (size_t)vl);
            val[vl] = 0;
            return true;
        }
    }
    return false;
}

/* A STATS field's value into v (asserts STATS has it). */
static void stat_get(struct cli *c, uint64_t id, const char *key, char *v, size_t cap)
{
    const char *r = cmdf(c, "STATS %llu", (unsigned long long)id);
    ck_assert_msg(array_get(r, key, v, cap), "STATS %llu has no %s: %s", (unsigned long long)id,
                  key, r);
}

static void expect_stat(struct cli *c, uint64_t id, const char *key, const char *want)
{
    char v[128];
    stat_get(c, id, key, v, sizeof v);
    ck_assert_msg(strcmp(v, want) == 0, "STATS %llu %s = %s, want %s", (unsigned long long)id, key,
                  v, want);
}

/* A STATS field as an integer. */
static long long stat_num(struct cli *c, uint64_t id, const char *key)
{
    char v[128];
    stat_get(c, id, key, v, sizeof v);
    return atoll(v);
}

/* The value of "key:" in an INFO reply, as an integer (-1 when absent). */
static long long info_num(struct cli *c, const char *key)
{
    const char *r = cmdf(c, "INFO");
    char pat[96];
    snprintf(pat, sizeof pat, "\r\n%s:", key);
    const char *p = strstr(r, pat);
    return p ? atoll(p + strlen(pat)) : -1;
}

static bool info_has(struct cli *c, const char *line)
{
    const char *r = cmdf(c, "INFO");
    return strstr(r, line) != NULL;
}

static void wait_snapshot_done(struct cli *c)
{
    for (long long end = run_mono_ms() + RUN_WAIT_MS;
         info_num(c, "snapshot_in_progress") != 0 && run_mono_ms() < end;)
        sleep_ms(10);
    ck_assert_int_eq(info_num(c, "snapshot_in_progress"), 0);
}

/* Polls INFO (up to RUN_WAIT_MS) until the integer "key:" is at least min;
 * asserts it got there and returns the value. */
static long long wait_info_ge(struct cli *c, const char *key, long long min)
{
    long long v = info_num(c, key);
    for (long long end = run_mono_ms() + RUN_WAIT_MS; v < min && run_mono_ms() < end;) {
        sleep_ms(10);
        v = info_num(c, key);
    }
    ck_assert_msg(v >= min, "INFO %s: %lld, waited for at least %lld", key, v, min);
    return v;
}

/* Sends cmd (a SHUTDOWN) on c, which the server must then close; closes c,
 * waits for the server to exit and returns its exit code. */
static int shutdown_by(struct srv *s, struct cli *c, const char *cmd)
{
    cli_sends(c, cmd);
    cli_sends(c, "\r\n");
    ck_assert_msg(cli_eof(c), "'%s' did not close the connection", cmd);
    cli_close(c);
    return wait_exit(s);
}

/* calls, rejected_calls and failed_calls of "cmdstat_<name>:" in INFO
 * commandstats; false when the command has no line. */
static bool cmdstat(struct cli *c, const char *name, long long out[3])
{
    const char *r = cmdf(c, "INFO commandstats");
    char pat[96];
    snprintf(pat, sizeof pat, "\r\ncmdstat_%s:calls=", name);
    const char *p = strstr(r, pat);
    if (!p)
        return false;
    out[0] = atoll(p + strlen(pat));
    const char *q = strstr(p, ",rejected_calls=");
    out[1] = atoll(q + 16);
    out[2] = atoll(strstr(q, ",failed_calls=") + 14);
    return true;
}

/* cmdstat, with zeros for a command with no line yet (nothing counted). */
static void cmdstat_counts(struct cli *c, const char *name, long long out[3])
{
    if (!cmdstat(c, name, out))
        out[0] = out[1] = out[2] = 0;
}

#define EXPECT_CMDSTAT(c, name, calls, rejected, failed)                                       \
    do {                                                                                       \
        long long v_[3];                                                                       \
        ck_assert_msg(cmdstat(c, name, v_), "no cmdstat_%s", name);                            \
        ck_assert_msg(v_[0] == (long long)(calls) && v_[1] == (long long)(rejected) &&         \
                          v_[2] == (long long)(failed),                                        \
                      "cmdstat_%s: calls=%lld rejected=%lld failed=%lld, want %lld %lld %lld", \
                      name, v_[0], v_[1], v_[2], (long long)(calls), (long long)(rejected),    \
                      (long long)(failed));                                                    \
    } while (0)

/* After every scenario: a new client still gets PING and INFO answered. */
static void assert_alive(const struct srv *s)
{
    struct cli c;
    cli_open(&c, s->port);
    EXPECT(&c, "+PONG\r\n", "PING");
    const char *r = cmdf(&c, "INFO");
    ck_assert_msg(r[0] == '$' && strstr(r, "# Server") && strstr(r, "# Engine"), "INFO: %s", r);
    cli_close(&c);
}

/* RESP encoding of argv. */
static size_t resp_encode(char *out, int argc, const char *const *argv)
{
    size_t o = (size_t)sprintf(out, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) {
        size_t l = strlen(argv[i]);
        o += (size_t)sprintf(out + o, "$%zu\r\n", l);
        memcpy(out + o, argv[i], l);
        o += l;
        memcpy(out + o, "\r\n", 2);
        o += 2;
    }
    return o;
}

/* Inline encoding of argv, quoting as the server's HISTORY does. */
static size_t inline_encode(char *out, int argc, const char *const *argv)
{
    size_t o = 0;
    for (int i = 0; i < argc; i++) {
        if (i)
            out[o++] = ' ';
        o += proto_quote(out + o, (const uint8_t *)argv[i], strlen(argv[i]));
    }
    memcpy(out + o, "\r\n", 2);
    return o + 2;
}

/* ---- every command in both framings ---------------------------------------------------- */

#define MAXARGS 12
struct step {
    const char *argv[MAXARGS];
    const char *want;   /* exact reply, or NULL: checked separately / framing-dependent */
};

static const struct step script[] = {
    {{"PING"}, "+PONG\r\n"},
    {{"ping", "hello there"}, "$11\r\nhello there\r\n"},
    {{"ECHO", "a b\"c"}, "$5\r\na b\"c\r\n"},
    {{"COMMAND"}, NULL},
    {{"COMMAND", "DOCS"}, "*0\r\n"},
    {{"COMMAND", "INFO", "stats", "nosuch"},
     "*2\r\n*6\r\n$5\r\nstats\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n$-1\r\n"},
    {{"SELECT", "0"}, "+OK\r\n"},
    {{"TRACK", "1", "view", "session=s1", "watch_ms=3000", "ts=1700000000000"}, "+OK\r\n"},
    {{"TRACK", "1", "impression", "session=s1", "ts=1700000000001", "ip=10.0.0.1",
      "ua=Mozilla/5.0 (X11)"}, "+OK\r\n"},
    {{"track", "1", "SAVE", "user=7", "ts=1700000000002"}, "+OK\r\n"},
    {{"TRACK", "1", "share", "user=7", "platform=whatsapp", "ts=1700000000003"}, "+OK\r\n"},
    {{"TRACK", "2", "view", "session=s2", "watch_ms=100", "ts=1700000000004"}, "+OK\r\n"},
    {{"BOOST", "1", "50"}, "+OK\r\n"},
    {{"STATS", "1"}, NULL},
    {{"STATS", "999"}, NULL},
    {{"ENGAGEMENT", "1"}, "$8\r\n1.000000\r\n"},
    {{"SCORE", "1"}, NULL},
    {{"TOP", "10", "BY", "view_count"}, "*4\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\n2\r\n$1\r\n1\r\n"},
    {{"TOP", "1", "by", "avg_watch_ms"}, "*2\r\n$1\r\n1\r\n$11\r\n3000.000000\r\n"},
    {{"TOP", "2"}, NULL},
    {{"HISTORY", "SESSION", "s1"},
     "*2\r\n$75\r\n1 impression ts=1700000000001 session=s1 ip=10.0.0.1 ua=\"Mozilla/5.0 (X11)\"\r\n"
     "$48\r\n1 view ts=1700000000000 session=s1 watch_ms=3000\r\n"},
    {{"HISTORY", "USER", "7", "1"}, "*1\r\n$49\r\n1 share ts=1700000000003 user=7 platform=whatsapp\r\n"},
    {{"HISTORY", "session", "nobody"}, "*0\r\n"},
    {{"HISTORY", "USER", "12345"}, "*0\r\n"},
    {{"SESSION", "NEW"}, NULL},
    {{"INFO"}, NULL},
    {{"INFO", "engine"}, NULL},
    {{"INFO", "Stats", "nosuch", "engine"}, NULL},
    {{"MULTI"}, "+OK\r\n"},
    {{"TRACK", "3", "view", "session=s3", "ts=1700000000005"}, "+QUEUED\r\n"},
    {{"BOOST", "3", "7"}, "+QUEUED\r\n"},
    {{"EXEC"}, "*2\r\n+OK\r\n+OK\r\n"},
    {{"MULTI"}, "+OK\r\n"},
    {{"DISCARD"}, "+OK\r\n"},
    {{"AUTH", "x"}, NULL},
    {{"NOSUCH", "x"}, "-ERR unknown command 'NOSUCH', with args beginning with: 'x' \r\n"},
    {{"QUIT"}, "+OK\r\n"},
};
#define NSTEPS (sizeof script / sizeof script[0])

static void run_script(int port, bool resp, char **replies)
{
    struct cli c;
    cli_open(&c, port);
    char buf[4096];
    for (size_t i = 0; i < NSTEPS; i++) {
        int argc = 0;
        while (argc < MAXARGS && script[i].argv[argc])
            argc++;
        size_t n = resp ? resp_encode(buf, argc, script[i].argv)
                        : inline_encode(buf, argc, script[i].argv);
        cli_send(&c, buf, n);
        const char *r = cli_reply(&c);
        ck_assert_msg(r, "%s step %zu (%s): connection closed", resp ? "RESP" : "inline", i,
                      script[i].argv[0]);
        if (script[i].want && strcmp(r, script[i].want) != 0)
            ck_abort_msg("%s step %zu (%s %s): got '%s', want '%s'", resp ? "RESP" : "inline", i,
                         script[i].argv[0], script[i].argv[1] ? script[i].argv[1] : "", r,
                         script[i].want);
        replies[i] = strdup(r);
    }
    ck_assert(cli_eof(&c));  /* QUIT closed it */
    cli_close(&c);
}

/* The index of the first step at or after from whose command is name. */
static size_t step_of(const char *name, size_t from)
{
    for (size_t i = from; i < NSTEPS; i++)
        if (strcmp(script[i].argv[0], name) == 0)
            return i;
    ck_abort_msg("no %s step in the script at or after step %zu", name, from);
    return NSTEPS;
}

START_TEST(every_command_both_framings)
{
    char *rep[2][NSTEPS];
    for (int f = 0; f < 2; f++) {
        struct srv s;
        srv_start(&s, NULL);
        run_script(s.port, f == 1, rep[f]);
        assert_alive(&s);
        srv_stop_ok(&s);
    }
    for (size_t i = 0; i < NSTEPS; i++) {
        const char *name = script[i].argv[0];
        bool varies = strcmp(name, "SESSION") == 0 || strcmp(name, "INFO") == 0;
        if (!varies && strcmp(rep[0][i], rep[1][i]) != 0)
            ck_abort_msg("step %zu (%s): inline '%s' != RESP '%s'", i, name, rep[0][i], rep[1][i]);
    }
    /* STATS 1, in protocol order with the platform last. */
    size_t st = step_of("STATS", 0);
    const char *order[] = {"impressions", "views", "view_count", "unique_viewers", "saves",
                           "shares", "skips", "contacts", "whatsapps", "book_viewings",
                           "avg_watch_ms", "engagement_rate", "score", "boost", "last_ts",
                           "shares_whatsapp"};
    const char *p = rep[0][st];
    ck_assert_msg(strncmp(p, "*32\r\n", 5) == 0, "STATS: %s", p);
    for (size_t i = 0; i < 16; i++) {
        char key[64];
        snprintf(key, sizeof key, "$%zu\r\n%s\r\n", strlen(order[i]), order[i]);
        const char *k = strstr(p, key);
        ck_assert_msg(k, "STATS lacks %s (or out of order): %s", order[i], rep[0][st]);
        p = k + strlen(key);
    }
    const char *want[][2] = {{"impressions", "1"}, {"views", "1"}, {"view_count", "2"},
                             {"unique_viewers", "1"}, {"saves", "1"}, {"shares", "1"},
                             {"skips", "0"}, {"avg_watch_ms", "3000.000000"},
                             {"engagement_rate", "1.000000"}, {"boost", "50"},
                             {"last_ts", "1700000000003"}, {"shares_whatsapp", "1"}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char v[64];
        ck_assert(array_get(rep[0][st], want[i][0], v, sizeof v));
        ck_assert_msg(strcmp(v, want[i][1]) == 0, "%s = %s, want %s", want[i][0], v, want[i][1]);
    }
    /* SCORE and TOP agree with STATS. */
    char score[64];
    ck_assert(array_get(rep[0][st], "score", score, sizeof score));
    ck_assert_ptr_nonnull(strstr(rep[0][st + 3], score));
    ck_assert_ptr_nonnull(strstr(rep[0][st + 6], score));
    ck_assert_msg(strchr(score, '.') && strlen(strchr(score, '.')) == 7, "score %s", score);
    /* An unknown short: all zeros, 15 fields. */
    ck_assert_msg(strncmp(rep[0][st + 1], "*30\r\n", 5) == 0, "%s", rep[0][st + 1]);
    /* SESSION NEW: "g-" + 32 hex digits. */
    size_t sn = step_of("SESSION", st);
    ck_assert_uint_eq(strlen(rep[0][sn]), 5 + 34 + 2);
    ck_assert(strncmp(rep[0][sn], "$34\r\ng-", 7) == 0);
    ck_assert_str_ne(rep[0][sn], rep[1][sn]);
    /* INFO: every section, the issue's fields. */
    const char *fields[] = {"# Server", "# Clients", "# Memory", "# Stats", "# Persistence",
                            "# Engine", "version:", "uptime_s:", "tcp_port:",
                            "connected_clients:1", "rejected_connections:0", "used_memory_bytes:",
                            "rss_bytes:", "interactions_total:5", "commands_total:", "errors_total:",
                            "shorts:2", "sessions:2", "users:1", "snapshot_in_progress:0",
                            "last_snapshot_unix:", "last_snapshot_status:none",
                            "last_snapshot_duration_ms:", "last_snapshot_bytes:", "last_fork_usec:"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        ck_assert_msg(strstr(rep[0][sn + 1], fields[i]), "INFO lacks %s", fields[i]);
    /* redis-cli --stat reads the first "used_memory" as Redis's field */
    ck_assert_ptr_eq(strstr(rep[0][sn + 1], "used_memory"),
                     strstr(rep[0][sn + 1], "\r\nused_memory:") + 2);
    ck_assert_ptr_nonnull(strstr(rep[0][sn + 2], "# Engine"));
    ck_assert_ptr_null(strstr(rep[0][sn + 2], "# Server"));
    /* several sections: their union, an unknown one adding nothing (Redis 7) */
    ck_assert_msg(strstr(rep[0][sn + 3], "# Stats\r\n") && strstr(rep[0][sn + 3], "# Engine\r\n") &&
                      !strstr(rep[0][sn + 3], "# Server") && !strstr(rep[0][sn + 3], "# Memory"),
                  "INFO Stats nosuch engine: %s", rep[0][sn + 3]);
    size_t au = step_of("AUTH", sn);
    ck_assert_ptr_nonnull(strstr(rep[0][au], "-ERR AUTH"));
    for (int f = 0; f < 2; f++)
        for (size_t i = 0; i < NSTEPS; i++)
            free(rep[f][i]);
}
END_TEST

/* A HISTORY record, prefixed with "TRACK ", is a valid command that records
 * the same interaction again. */
START_TEST(history_records_replay)
{
    struct srv s;
    srv_start(&s, NULL);
    struct cli c;
    cli_open(&c, s.port);
    EXPECT(&c, "+OK\r\n",
           "TRACK 9 view session=h1 user=3 watch_ms=12 ip=2001:db8::1 "
           "ua=\"A \\\"quoted\\\" \\\\ agent\\x01\" ts=1700000000000");
    EXPECT(&c, "+OK\r\n", "TRACK 9 share session=h1 platform=x_y ts=1700000000001");
    const char *r = cmdf(&c, "HISTORY SESSION h1");
    ck_assert_msg(strncmp(r, "*2\r\n", 4) == 0, "%s", r);
    char *body = strdup(r + 4);  /* the two records, newest first */
    char *rec[2];
    char *p = body;
    for (int i = 0; i < 2; i++) {
        long len = strtol(p + 1, &p, 10);
        p += 2;
        rec[i] = strndup(p, (size_t)len);
        p += len + 2;
    }
    ck_assert_msg(strstr(rec[1], "ua=\"A \\\"quoted\\\" \\\\ agent\\x01\""), "%s", rec[1]);
    ck_assert_msg(strstr(rec[1], "ip=2001:db8::1"), "%s", rec[1]);
    /* Replay oldest first: the history then holds the same two records twice. */
    for (int i = 1; i >= 0; i--)
        EXPECT(&c, "+OK\r\n", "TRACK %s", rec[i]);
    r = cmdf(&c, "HISTORY SESSION h1 4");
    ck_assert_msg(strncmp(r, "*4\r\n", 4) == 0, "%s", r);
    size_t bl = strlen(body);
    ck_assert_msg(strlen(r + 4) == 2 * bl && memcmp(r + 4, body, bl) == 0 &&
                      memcmp(r + 4 + bl, body, bl) == 0,
                  "replayed history differs:\n%s\nvs\n%s", r + 4, body);
    expect_stat(&c, 9, "views", "2");
    expect_stat(&c, 9, "shares_x_y", "2");
    /* Without ts= the server stamps the time the command arrived. */
    struct timespec t0, t1;
    clock_gettime(CLOCK_REALTIME, &t0);
    EXPECT(&c, "+OK\r\n", "TRACK 9 skip session=h2");
    clock_gettime(CLOCK_REALTIME, &t1);
    r = cmdf(&c, "HISTORY SESSION h2");
    const char *ts = strstr(r, " ts=");
    ck_assert_ptr_nonnull(ts);
    long long got = atoll(ts + 4);
    long long lo = (long long)t0.tv_sec * 1000 + t0.tv_nsec / 1000000 - 1;
    long long hi = (long long)t1.tv_sec * 1000 + t1.tv_nsec / 1000000 + 1;
    ck_assert_msg(got >= lo && got <= hi, "ts %lld not in [%lld, %lld]", got, lo, hi);
    free(body);
    free(rec[0]);
    free(rec[1]);
    cli_close(&c);
    assert_alive(&s);
    srv_stop_ok(&s);
}
END_TEST

/* ---- pipelining ----------------------------------------------------------------------------- */

START_TEST(pipeline_100k_one_write)
{
    struct srv s;
    srv_start(&s, NULL);
    const size_t n = 100000;
    size_t cap = n * 96, o = 0;
    char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    for (size_t i = 0; i < n; i++) {
        if (i % 2)
            o += (size_t)sprintf(buf + o, "TRACK %zu view session=p%zu watch_ms=10\r\n", i % 100 + 1,
                                 i % 1000);
        else {
            char id[24], sess[24];
            sprintf(id, "%zu", i % 100 + 1);
            sprintf(sess, "session=p%zu", i % 1000);
            const char *argv[] = {"TRACK", id, "impression", sess};
            o += resp_encode(buf + o, 4, argv);
        }
    }
    struct cli c;
    cli_open(&c, s.port);
    cli_send(&c, buf, o);  /* one send() call: the kernel may split it, the server must not care */
    size_t oks = 0;
    while (oks < n) {
        if (c.len >= 5 && memcmp(c.buf, "+OK\r\n", 5) == 0) {
            size_t k = 0;
            while (k + 5 <= c.len && memcmp(c.buf + k, "+OK\r\n", 5) == 0)
                k += 5;
            memmove(c.buf, c.buf + k, c.len - k);
            c.len -= k;
            oks += k / 5;
            continue;
        }
        if (c.len >= 5)
            ck_abort_msg("unexpected reply after %zu OKs: %.40s", oks, (const char *)c.buf);
        ck_assert_msg(cli_fill(&c), "closed after %zu replies", oks);
    }
    ck_assert_uint_eq(oks, n);
    ck_assert_int_eq(info_num(&c, "interactions_total"), (long long)n);
    /* short 1 got i = 0, 100, 200, ... (even: RESP impressions), short 2 the odd
     * i = 1, 101, ... (inline views): 1,000 each. */
    expect_stat(&c, 1, "impressions", "1000");
    expect_stat(&c, 1, "views", "0");
    expect_stat(&c, 2, "views", "1000");
    expect_stat(&c, 2, "avg_watch_ms", "10.000000");
    free(buf);
    cli_close(&c);
    assert_alive(&s);
    srv_stop_ok(&s);
}
END_TEST

/* Quoted arguments are unescaped into the server's scratch, which a run
 * of TRACKs keeps until it is applied; a run whose quoted user agents
 * would overflow it is applied early, and its strings must survive that.
 * 1,500 TRACKs in one write, user agents of 400 and 3,000 bytes (the
 * second over the engine's 512) alternating: about 57 pairs fill the
 * scratch, before the 128 that end a run. So many because reads start at
 * 16 KB and grow as they fill: with 300 no read was large enough for the
 * early apply to happen at all. */
START_TEST(pipeline_scratch_fills_mid_run)
{
    struct srv s;
    srv_start(&s, NULL);
    const int n = 1500;
    char *buf = malloc((size_t)n * 3100);
    ck_assert_ptr_nonnull(buf);
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        int len = i % 2 ? 3000 : 400;
        o += (size_t)sprintf(buf + o, "TRACK 5 view session=sc%d ua=\"", i);
        memset(buf + o, 'a' + i % 26, (size_t)len);
        o += (size_t)len;
        o += (size_t)sprintf(buf + o, "%d\"\r\n", i);
    }
    struct cli c;
    cli_open(&c, s.port);
    cli_send(&c, buf, o);
    for (int i = 0; i < n; i++) {
        const char *r = cli_reply(&c);
        ck_assert_msg(r != NULL, "closed after %d replies", i);
        ck_assert_msg(strcmp(r, i % 2 ? "-ERR ua: longer than 512 bytes\r\n" : "+OK\r\n") == 0,
                      "reply %d: %s", i, r);
    }
    expect_stat(&c, 5, "views", "750");
    for (int i = 0; i < n; i += 2) {  /* each user agent whole, and its own */
        char want[480];
        memset(want, 'a' + i % 26, 400);
        sprintf(want + 400, "%d\r\n", i);  /* the record ends with it */
        const char *r = cmdf(&c, "HISTORY SESSION sc%d", i);
        ck_assert_msg(strstr(r, want), "session sc%d: %.80s", i, r);
    }
    free(buf);
    cli_close(&c);
    srv_stop_ok(&s);
}
END_TEST

/* A run of pipelined TRACKs is applied with eng_record_batch, which is all
 * or nothing; each TRACK must still succeed or fail on its own, in order. */
START_TEST(pipeline_bad_track_in_run)
{
    struct srv s;
    srv_start(&s, NULL);
    const size_t n = 300;
    char *buf = malloc(n * 96);
    ck_assert_ptr_nonnull(buf);
    size_t o = 0, good = 0;
    for (size_t i = 0; i < n; i++) {
        if (i % 7 == 3)  /* the engine rejects it: watch_ms only on view */
            o += (size_t)sprintf(buf + o, "TRACK 7 impression session=b%zu watch_ms=5\r\n", i);
        else if (i % 11 == 5)  /* the parser rejects it */
            o += (size_t)sprintf(buf + o, "TRACK 7 view session=b%zu nope=1\r\n", i);
        else if (i % 13 == 6)  /* the engine rejects it: bad session characters */
            o += (size_t)sprintf(buf + o, "TRACK 7 view session=b/%zu\r\n", i);
        else {
            o += (size_t)sprintf(buf + o, "TRACK 7 view session=b%zu watch_ms=%zu\r\n", i % 50, i);
            good++;
        }
    }
    struct cli c;
    cli_open(&c, s.port);
    cli_send(&c, buf, o);
    for (size_t i = 0; i < n; i++) {
        const char *r = cli_reply(&c);
        ck_assert_ptr_nonnull(r);
        if (i % 7 == 3)
            ck_assert_str_eq(r, "-ERR watch_ms: only allowed on view\r\n");
        else if (i % 11 == 5)
            ck_assert_msg(strncmp(r, "-ERR nope:", 10) == 0, "reply %zu: %s", i, r);
        else if (i % 13 == 6)
            ck_assert_msg(strncmp(r, "-ERR session:", 13) == 0, "reply %zu: %s", i, r);
        else
            ck_assert_msg(strcmp(r, "+OK\r\n") == 0, "reply %zu: %s", i, r);
    }
    ck_assert_int_eq(info_num(&c, "interactions_total"), (long long)good);
    char want[32];
    sprintf(want, "%zu", good);
    expect_stat(&c, 7, "views", want);
    expect_stat(&c, 7, "unique_viewers", "50");
    free(buf);
    cli_close(&c);
    assert_alive(&s);
    srv_stop_ok(&s);
}
END_TEST

/* A long input is run in one go, but replies made so far are written every
 * NET_FLUSH_USEC (here, under sanitizers, many times per input): the
 * replies must still come out whole and in command order, whatever mix of
 * batched TRACKs, refused TRACKs and other commands surrounds each write. */
START_TEST(pipeline_writes_mid_input)
{
    struct srv s;
    srv_start(&s, NULL);
    const size_t n = 60000;
    char *buf = malloc(n * 64);
    ck_assert_ptr_nonnull(buf);
    size_t o = 0, good = 0;
    for (size_t i = 0; i < n; i++) {
        if (i % 97 == 0)
            o += (size_t)sprintf(buf + o, "ECHO e%zu\r\n", i);
        else if (i % 89 == 1)
            o += (size_t)sprintf(buf + o, "TRACK 9 impression session=m%zu watch_ms=1\r\n", i);
        else {
            o += (size_t)sprintf(buf + o, "TRACK %zu view session=m%zu\r\n", i % 10 + 1, i % 300);
            good++;
        }
    }
    struct cli c;
    cli_open(&c, s.port);
    cli_send(&c, buf, o);
    for (size_t i = 0; i < n; i++) {
        const char *r = cli_reply(&c);
        ck_assert_msg(r != NULL, "closed after %zu replies", i);
        char want[48];
        if (i % 97 == 0)
        {
            char tok[24];
            int tl = sprintf(tok, "e%zu", i);
            sprintf(want, "$%d\r\n%s\r\n", tl, tok);
        }
        else if (i % 89 == 1)
            strcpy(want, "-ERR watch_ms: only allowed on view\r\n");
        else
            strcpy(want, "+OK\r\n");
        ck_assert_msg(strcmp(r, want) == 0, "reply %zu: got %s want %s", i, r, want);
    }
    ck_assert_int_eq(info_num(&c, "interactions_total"), (long long)good);
    /* 60,000 commands take far longer than the 1 ms flush interval (29-54
     * writes in past runs): replies must have left while input remained */
    long long mid = info_num(&c, "mid_input_writes");
    fprintf(stderr, "pipeline_writes_mid_input: %lld writes before the input was all run\n", mid);
    ck_assert_int_gt(mid, 0);
    free(buf);
    cli_close(&c);
    assert_alive(&s);
    srv_stop_ok(&s);
}
END_TEST

static const char split_script[] =
    "PING\r\n"
    "*2\r\n$4\r\nECHO\r\n$4\r\na\r\nb\r\n"
    "TRACK 5 view session=sp ua=\"x y\" ts=1700000000000\r\n"
    "\r\n"
    "*5\r\n$5\r\nTRACK\r\n$1\r\n5\r\n$10\r\nimpression\r\n$10\r\nsession=sp\r\n$16\r\nts=1700000000001\r\n"
    "ECHO \"open\r\n"
    "HISTORY SESSION sp 1\n"
    "*1\r\n$4\r\nPING\r\n";

START_TEST(split_at_every_byte)
{
    struct srv s;
    srv_start(&s, NULL);
    const size_t len = sizeof split_script - 1;
    const int nreplies = 7;
    struct cli c;
    cli_open(&c, s.port);
    /* The reference: the whole script at once. */
    cli_send(&c, split_script, len);
    char *want[7];
    for (int i = 0; i < nreplies; i++) {
        const char *r = cli_reply(&c);
        ck_assert_ptr_nonnull(r);
        want[i] = strdup(r);
    }
    ck_assert_str_eq(want[0], "+PONG\r\n");
    ck_assert_str_eq(want[1], "$4\r\na\r\nb\r\n");
    ck_assert_str_eq(want[2], "+OK\r\n");
    ck_assert_str_eq(want[4], "-ERR Protocol error: unbalanced quotes in request\r\n");
    ck_assert_str_eq(want[5],
                     "*1\r\n$40\r\n5 impression ts=1700000000001 session=sp\r\n");
    for (size_t cut = 1; cut < len; cut++) {
        cli_send(&c, split_script, cut);
        sleep_ms(1);  /* lets the first part arrive alone (the check holds either way) */
        cli_send(&c, split_script + cut, len - cut);
        for (int i = 0; i < nreplies; i++) {
            const char *r = cli_reply(&c);
            ck_assert_msg(r && strcmp(r, want[i]) == 0, "cut at %zu, reply %d: '%s' want '%s'",
                          cut, i, r ? r : "(closed)", want[i]);
        }
    }
    /* One byte per send. */
    for (size_t i = 0; i < len; i++)
        cli_send(&c, split_script + i, 1);
    for (int i = 0; i < nreplies; i++) {
        const char *r = cli_reply(&c);
        ck_assert_msg(r && strcmp(r, want[i]) == 0, "bytewise reply %d", i);
        free(want[i]);
    }
    cli_close(&c);
    assert_alive(&s);
    srv_stop_ok(&s);
}
END_TEST

/* ---- MULTI/EXEC ------------------------------------------------------------------------------- */

START_TEST(multi_exec_atomic)
{
    struct srv s;
    srv_start(&s, NULL);
    struct cli a, b;
    cli_open(&a, s.port);
    cli_open(&b, s.port);

    const char *r;
    /* Queued commands are invisible to others until EXEC. */
    EXPECT(&a, "+OK\r\n", "MULTI");
    EXPECT(&a, "+QUEUED\r\n", "TRACK 1 view session=m1 watch_ms=10");
    EXPECT(&a, "+QUEUED\r\n", "TRACK 1 save session=m1");
    EXPECT(&a, "+QUEUED\r\n", "BOOST 1 90");
    expect_stat(&b, 1, "views", "0");
    expect_stat(&b, 1, "boost", "0");
    EXPECT(&a, "*3\r\n+OK\r\n+OK\r\n+OK\r\n", "exec");
    expect_stat(&b, 1, "views", "1");
    expect_stat(&b, 1, "saves", "1");
    expect_stat(&b, 1, "boost", "90");

    /* One invalid command: EXEC applies none of them. */
    EXPECT(&a, "+OK\r\n", "MULTI");
    EXPECT(&a, "+QUEUED\r\n", "TRACK 1 view session=m2");
    EXPECT_ERR(&a, "-ERR watch_ms:", "TRACK 1 impression session=m2 watch_ms=5");
    EXPECT(&a, "+QUEUED\r\n", "BOOST 1 10");
    EXPECT(&a, "-EXECABORT Transaction discarded because of previous errors.\r\n", "EXEC");
    expect_stat(&b, 1, "views", "1");
    expect_stat(&b, 1, "boost", "90");

    /* Every kind of queue-time error aborts. */
    const char *bad[] = {"TRACK 1 view", "TRACK x view session=a", "TRACK 1 view nope=1",
                         "BOOST 1 101", "STATS", "NOSUCH", "TRACK 1", "SHUTDOWN",
                         "CLIENT NOSUCH", "CLIENT SETNAME", "CONFIG REWRITE now",
                         "COMMAND COUNT x", "TRACK 1 view session=a ua=\"unbalanced"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        EXPECT(&a, "+OK\r\n", "MULTI");
        EXPECT(&a, "+QUEUED\r\n", "TRACK 1 view session=m3");
        EXPECT_ERR(&a, "-ERR", "%s", bad[i]);
        EXPECT_ERR(&a, "-EXECABORT", "EXEC");
    }
    expect_stat(&b, 1, "views", "1");

    /* Any other command is queued as it is and runs in its place at EXEC,
     * seeing the writes queued before it, as in Redis (redis-py's default
     * pipeline is a transaction). */
    EXPECT(&a, "+OK\r\n", "MULTI");
    EXPECT(&a, "+QUEUED\r\n", "STATS 3");
    EXPECT(&a, "+QUEUED\r\n", "TRACK 3 view session=q1");
    EXPECT(&a, "+QUEUED\r\n", "BOOST 3 7");
    EXPECT(&a, "+QUEUED\r\n", "PING");
    EXPECT(&a, "+QUEUED\r\n", "TRACK 3 view session=q2");
    EXPECT(&a, "+QUEUED\r\n", "HISTORY SESSION q2");
    EXPECT(&a, "+QUEUED\r\n", "STATS nope");   /* its error comes at EXEC, in the array */
    EXPECT(&a, "+QUEUED\r\n", "ECHO \"a b\"");
    expect_stat(&b, 3, "views", "0");
    long long changes = info_num(&b, "changes_since_last_snapshot");
    r = cmdf(&a, "EXEC");
    ck_assert_msg(strncmp(r, "*8\r\n*30\r\n", 9) == 0, "%s", r);  /* STATS 3 before: unknown */
    const char *after = strstr(r, "$5\r\nboost\r\n$1\r\n0\r\n");
    ck_assert_msg(after, "%s", r);
    after = strstr(after, "+OK\r\n+OK\r\n+PONG\r\n+OK\r\n*1\r\n$");
    ck_assert_msg(after, "the writes and PING in order: %s", r);
    after = strstr(after, " view ts=");
    ck_assert_msg(after && strstr(after, "session=q2\r\n-ERR short_id: must be an integer"), "%s", r);
    ck_assert_msg(strstr(after, "\r\n$3\r\na b\r\n"), "%s", r);
    expect_stat(&b, 3, "views", "2");
    expect_stat(&b, 3, "boost", "7");
    /* a queued read refused at EXEC does not undo the writes around it:
     * two TRACKs and a BOOST, each one change */
    ck_assert_int_eq(info_num(&b, "changes_since_last_snapshot"), changes + 3);

    /* What only EXEC can find (the engine's platform limit): a transaction
     * of writes alone is refused whole; with a query in it, the failing
     * batch's commands get errors in the array. Fill all but two of the
     * 65535 platform slots first. */
    {
        size_t n = 65535 - 2, o = 0;
        char *buf = malloc(n * 48);
        ck_assert_ptr_nonnull(buf);
        for (size_t i = 0; i < n; i++)
            o += (size_t)sprintf(buf + o, "TRACK 4 share session=pl platform=p%zu\r\n", i);
        cli_send(&a, buf, o);
        free(buf);
        for (size_t i = 0; i < n; i++) {
            const char *x = cli_reply(&a);
            ck_assert_msg(x && strcmp(x, "+OK\r\n") == 0, "platform %zu: %s", i, x ? x : "EOF");
        }
    }
    /* their commandstats: counts so far, as the checks below add to them */
    long long tr0[3], ex0[3];
    cmdstat_counts(&b, "track", tr0);
    cmdstat_counts(&b, "exec", ex0);
    EXPECT(&a, "+OK\r\n", "MULTI");
    for (int i = 0; i < 3; i++)
        EXPECT(&a, "+QUEUED\r\n", "TRACK 4 share session=pl platform=new%d", i);
    EXPECT(&a, "-EXECABORT Transaction discarded: TRACK #3: platform: too many distinct "
               "platforms\r\n", "EXEC");
    EXPECT(&a, "+OK\r\n", "MULTI");
    EXPECT(&a, "+QUEUED\r\n", "PING");
    for (int i = 0; i < 3; i++)
        EXPECT(&a, "+QUEUED\r\n", "TRACK 4 share session=pl platform=new%d", i);
    EXPECT(&a, "*4\r\n+PONG\r\n-ERR not applied: platform: too many distinct platforms\r\n"
               "-ERR not applied: platform: too many distinct platforms\r\n"
               "-ERR platform: too many distinct platforms\r\n", "EXEC");
    /* The engine's refusal at EXEC counts as Redis counts a command that
     * ran and failed: each of the 2 x 3 queued TRACKs is a call and a failed
     * call (not a rejection: they were accepted when queued). The first
     * EXEC answered EXECABORT, its own failure; the second answered an
     * array, so the errors in it are its commands', not its own. */
    EXPECT_CMDSTAT(&b, "track", tr0[0] + 6, tr0[1], tr0[2] + 6);
    EXPECT_CMDSTAT(&b, "exec", ex0[0] + 2, ex0[1], ex0[2] + 1);
    /* both refusals left the two free slots free */
    EXPECT(&a, "+OK\r\n", "TRACK 4 share session=pl platform=new1");
    EXPECT(&a, "+OK\r\n", "TRACK 4 share session=pl platform=new2");
    EXPECT_ERR(&a, "-ERR platform: too many distinct platforms", "TRACK 4 share session=pl platform=new3");
    EXPECT_CMDSTAT(&b, "track", tr0[0] + 9, tr0[1], tr0[2] + 7);  /* 3 calls, 1 failed */

    /* DISCARD, nesting, and EXEC/DISCARD without MULTI. */
    EXPECT(&a, "+OK\r\n", "MULTI");
    EXPECT(&a, "+QUEUED\r\n", "TRACK 1 view session=m4");
    EXPECT(&a, "-ERR MULTI calls can not be nested\r\n", "MULTI");
    EXPECT(&a, "+OK\r\n", "DISCARD");
    EXPECT(&a, "-ERR EXEC without MULTI\r\n", "EXEC");
    EXPECT(&a, "-ERR DISCARD without MULTI\r\n", "DISCARD");
    EXPECT(&a, "+OK\r\n", "MULTI");
    EXPECT(&a, "*0\r\n", "EXEC");
    expect_stat(&b, 1, "views", "1");
    /* WATCH: no keys to watch, said plainly; inside MULTI Redis's error,
     * which leaves the transaction going; UNWATCH has nothing to undo */
    EXPECT_ERR(&a, "-ERR WATCH is not supported: there are no keys to watch", "WATCH 1");
    EXPECT(&a, "+OK\r\n", "UNWATCH");
    EXPECT(&a, "+OK\r\n", "MULTI");
    EXPECT(&a, "-ERR WATCH inside MULTI is not allowed\r\n", "WATCH 1");
    EXPECT(&a, "+QUEUED\r\n", "UNWATCH");
    EXPECT(&a, "+QUEUED\r\n", "TRACK 1 view session=m5");
    EXPECT(&a, "*2\r\n+OK\r\n+OK\r\n", "EXEC");
    expect_stat(&b, 1, "views", "2");

    /* A large transaction of inline commands with quoted strings. */
    EXPECT(&a, "+OK\r\n", "MULTI");
    for (int i = 0; i < 500; i++)
        EXPECT(&a, "+QUEUED\r\n", "TRACK 2 impression session=big%d ua=\"agent %d\"", i, i % 7);
    r = cmdf(&a, "EXEC");
    ck_assert(strncmp(r, "*500\r\n", 6) == 0);
    expect_stat(&b, 2, "unique_viewers", "500");
    r = cmdf(&b, "HISTORY SESSION big499");
    ck_assert_msg(strstr(r, "ua=\"agent 2\""), "%s", r);
    cli_close(&a);
    cli_close(&b);
    assert_alive(&s);
    srv_stop_ok(&s);
}
END_TEST

/* EXEC reserves room for the new shorts its BOOSTs may create before it
 * applies anything. A short named by many queued writes is one short: a
 * transaction of 20,000 TRACKs and a BOOST to one new short must not
 * reserve 20,001 (6 MB of tables). */
START_TEST(exec_reserves_each_new_short_once)
{
    struct srv s;
    srv_start(&s, NULL);
    struct cli a;
    cli_open(&a, s.port);
    enum { N = 20000 };
    char *buf = malloc((size_t)N * 40 + 64);
    ck_assert_ptr_nonnull(buf);
    long long before = 0;
    /* the first transaction, without a BOOST, sizes the engine's batch
     * scratch; the second adds one short and the reservation */
    for (int boost = 0; boost < 2; boost++) {
        char *o = buf;
        unsigned id = boost ? 77 : 78;
        o += sprintf(o, "MULTI\r\n");
        for (int i = 0; i < N; i++)
            o += sprintf(o, "TRACK %u skip session=one\r\n", id);
        if (boost)
            o += sprintf(o, "BOOST %u 5\r\n", id);
        o += sprintf(o, "EXEC\r\n");
        before = info_num(&a, "used_memory_engine_bytes");
        cli_send(&a, buf, (size_t)(o - buf));
        for (int i = 0; i < N + 1 + boost; i++) {
            const char *x = cli_reply(&a);
            ck_assert_msg(x && strcmp(x, i ? "+QUEUED\r\n" : "+OK\r\n") == 0, "%d: %s", i,
                          x ? x : "EOF");
        }
        const char *r = cli_reply(&a);
        char want[32];
        snprintf(want, sizeof want, "*%d\r\n+OK\r\n", N + boost);
        ck_assert_msg(r && strncmp(r, want, strlen(want)) == 0, "%.40s", r ? r : "EOF");
        expect_stat(&a, id, "skips", "20000");
    }
    free(buf);
    expect_stat(&a, 77, "boost", "5");
    long long grew = info_num(&a, "used_memory_engine_bytes") - before;
    ck_assert_msg(grew < 256 * 1024, "the engine grew by %lld bytes", grew);
    cli_close(&a);
    srv_stop_ok(&s);
}
END_TEST

/* ---- error paths --------------------------------------------------------------------------------- */

START_TEST(command_errors)
{
    struct srv s;
    srv_start(&s, NULL);
    struct cli c;
    cli_open(&c, s.port);
    EXPECT(&c, "-ERR unknown command 'FLUSHALL', with args beginning with: \r\n", "FLUSHALL");
    {  /* a long name is cut at 128 characters, as Redis's %.128s */
        char name[201], want[300];
        memset(name, 'x', 200);
        name[200] = 0;
        snprintf(want, sizeof want,
                 "-ERR unknown command '%.128s...', with args beginning with: \r\n", name);
        EXPECT(&c, want, "%s", name);
    }
    EXPECT(&c, "-ERR wrong number of arguments for 'track' command\r\n", "TRACK 1");
    EXPECT(&c, "-ERR wrong number of arguments for 'stats' command\r\n", "STATS");
    EXPECT(&c, "-ERR wrong number of arguments for 'echo' command\r\n", "ECHO a b");
    EXPECT(&c, "-ERR wrong number of arguments for 'boost' command\r\n", "BOOST 1");
    EXPECT(&c, "-ERR wrong number of arguments for 'history' command\r\n", "HISTORY USER");
    EXPECT_ERR(&c, "-ERR short_id: must be an integer", "TRACK abc view session=a");
    EXPECT_ERR(&c, "-ERR short_id: must be an integer", "TRACK -1 view session=a");
    EXPECT_ERR(&c, "-ERR short_id: must be an integer", "TRACK 18446744073709551616 view session=a");
    EXPECT(&c, "-ERR short_id: must be an integer 1..18446744073709551615\r\n",
           "TRACK 0 view session=a");
    /* Canonical decimal only: "007" is not another name for short 7. */
    EXPECT_ERR(&c, "-ERR short_id: must be an integer", "TRACK 007 view session=a");
    EXPECT_ERR(&c, "-ERR short_id: must be an integer", "TRACK 00 view session=a");
    EXPECT_ERR(&c, "-ERR user: must be an integer", "TRACK 1 view user=0042");
    EXPECT_ERR(&c, "-ERR watch_ms: must be an integer", "TRACK 1 view session=a watch_ms=-0");
    EXPECT_ERR(&c, "-ERR watch_ms: must be an integer", "TRACK 1 view session=a watch_ms=+5");
    EXPECT_ERR(&c, "-ERR ts: must be an integer", "TRACK 1 view session=a ts=01");
    EXPECT_ERR(&c, "-ERR boost: must be an integer 0..100", "BOOST 1 05");
    EXPECT_ERR(&c, "-ERR k: must be an integer 1..1000", "TOP 010");
    EXPECT_ERR(&c, "-ERR type: unknown interaction type 'like'", "TRACK 1 like session=a");
    EXPECT_ERR(&c, "-ERR color: unknown field", "TRACK 1 view session=a color=red");
    EXPECT_ERR(&c, "-ERR session: repeated field", "TRACK 1 view session=a session=b");
    EXPECT_ERR(&c, "-ERR nonsense: expected field=value", "TRACK 1 view nonsense");
    EXPECT_ERR(&c, "-ERR =x: expected field=value", "TRACK 1 view session=a =x");
    EXPECT_ERR(&c, "-ERR syntax error: TOP <k> [BY <metric>]", "TOP 5 FOO score");
    EXPECT_ERR(&c, "-ERR user: must be an integer", "TRACK 1 view user=abc");
    EXPECT_ERR(&c, "-ERR user: must be an integer", "TRACK 1 view user=0");
    EXPECT_ERR(&c, "-ERR ts: must be an integer", "TRACK 1 view session=a ts=soon");
    EXPECT_ERR(&c, "-ERR ts:", "TRACK 1 view session=a ts=-5");
    EXPECT_ERR(&c, "-ERR watch_ms: must be an integer", "TRACK 1 view session=a watch_ms=1.5");
    EXPECT_ERR(&c, "-ERR watch_ms:", "TRACK 1 view session=a watch_ms=86400001");
    EXPECT_ERR(&c, "-ERR watch_ms:", "TRACK 1 skip session=a watch_ms=5");
    EXPECT_ERR(&c, "-ERR platform:", "TRACK 1 view session=a platform=x");
    EXPECT_ERR(&c, "-ERR platform:", "TRACK 1 share session=a platform=Bad!");
    EXPECT_ERR(&c, "-ERR session:", "TRACK 1 view session=bad/char");
    EXPECT_ERR(&c, "-ERR session:", "TRACK 1 view session=");
    EXPECT_ERR(&c, "-ERR viewer:", "TRACK 1 view watch_ms=5");
    EXPECT_ERR(&c, "-ERR ip:", "TRACK 1 view session=a ip=300.1.1.1");
    EXPECT_ERR(&c, "-ERR short_id: must be an integer", "STATS x");
    EXPECT_ERR(&c, "-ERR short_id: must be an integer", "SCORE 0");
    EXPECT_ERR(&c, "-ERR short_id: must be an integer", "ENGAGEMENT -3");
    EXPECT_ERR(&c, "-ERR boost: must be an integer 0..100", "BOOST 1 101");
    EXPECT_ERR(&c, "-ERR boost: must be an integer 0..100", "BOOST 1 -1");
    EXPECT_ERR(&c, "-ERR short_id", "BOOST 0 5");
    EXPECT_ERR(&c, "-ERR k: must be an integer 1..1000", "TOP 0");
    EXPECT_ERR(&c, "-ERR k: must be an integer 1..1000", "TOP 1001");
    EXPECT_ERR(&c, "-ERR k: must be an integer 1..1000", "TOP many");
    EXPECT(&c, "-ERR by: unknown metric 'likes' (score, view_count, unique_viewers, saves, "
           "shares, engagement_rate, avg_watch_ms, impressions, views, skips, contacts, whatsapps, "
           "book_viewings, boost, last_ts)\r\n", "TOP 5 BY likes");
    EXPECT_ERR(&c, "-ERR syntax error", "TOP 5 score");
    EXPECT_ERR(&c, "-ERR syntax error", "TOP 5 BY");
    EXPECT_ERR(&c, "-ERR syntax error", "HISTORY DEVICE x");
    EXPECT_ERR(&c, "-ERR limit: must be an integer 1..18446744073709551615", "HISTORY SESSION s 0");
    EXPECT_ERR(&c, "-ERR limit: must be an integer 1..18446744073709551615", "HISTORY SESSION s x");
    EXPECT_ERR(&c, "-ERR limit: must be an integer 1..18446744073709551615",
               "HISTORY SESSION s 18446744073709551616");
    EXPECT(&c, "-ERR session: must be 1 to 64 characters of A-Z a-z 0-9 . _ : -\r\n",
           "HISTORY SESSION bad/id");
    EXPECT_ERR(&c, "-ERR session: must be 1 to 64", "HISTORY SESSION \"\"");
    EXPECT(&c, "*0\r\n", "HISTORY SESSION unknown 100000");  /* clamped to the ring */
    EXPECT_ERR(&c, "-ERR user: must be an integer", "HISTORY USER bob");
    EXPECT_ERR(&c, "-ERR unknown SESSION subcommand 'OLD'", "SESSION OLD");
    EXPECT_ERR(&c, "-ERR AUTH called without any password", "AUTH pw");
    /* Nothing above recorded anything. */
    ck_assert_int_eq(info_num(&c, "interactions_total"), 0);
    ck_assert_int_eq(info_num(&c, "shorts"), 0);
    ck_assert_int_ge(info_num(&c, "errors_total"), 53);
    /* Quoting errors answer and keep the connection. */
    EXPECT(&c, "-ERR Protocol error: unbalanced quotes in request\r\n", "ECHO \"abc");
    EXPECT_ERR(&c, "-ERR Protocol error: invalid escape", "ECHO \"a\\qb\"");
    EXPECT_ERR(&c, "-ERR Protocol error: invalid \\x escape", "ECHO \"\\xG0\"");
    EXPECT(&c, "+PONG\r\n", "PING");
    ck_assert_int_ge(info_num(&c, "protocol_errors"), 3);
    /* Limits are inclusive: a 1,000 top and a 64 KiB inline line are fine. */
    EXPECT(&c, "*0\r\n", "TOP 1000 BY saves");
    cli_close(&c);
    assert_alive(&s);
    srv_stop_ok(&s);
}
END_TEST

/* What Redis clients and tools send on connect: HELLO, SELECT, COMMAND. */
START_TEST(handshake_commands)
{
    struct srv s;
    srv_start(&s, NULL);
    struct cli c;
    cli_open(&c, s.port);
    const char *r = cmdf(&c, "CLIENT ID");
    long long myid = atoll(r + 1);
    char idline[48];
    snprintf(idline, sizeof idline, "$2\r\nid\r\n:%lld\r\n", myid);
    char *hello = strdup(cmdf(&c, "HELLO"));
    ck_assert_msg(strncmp(hello, "*14\r\n$6\r\nserver\r\n", 17) == 0 && strstr(hello, idline), "%s",
                  hello);
    ck_assert_str_eq(cmdf(&c, "hello 2"), hello);
    free(hello);
    EXPECT(&c, "-NOPROTO sorry, this protocol version is not supported.\r\n", "HELLO 1");
    EXPECT(&c, "-NOPROTO sorry, this protocol version is not supported.\r\n", "HELLO 4");
    EXPECT(&c, "-ERR Protocol version is not an integer or out of range\r\n", "HELLO two");
    EXPECT(&c, "-ERR Syntax error in HELLO option 'SETNAME'\r\n", "HELLO 2 SETNAME");
    EXPECT(&c, "-ERR Syntax error in HELLO option 'AUTH'\r\n", "HELLO 2 AUTH default");
    /* no password: "default" takes any (Redis's nopass default user) */
    r = cmdf(&c, "HELLO 2 AUTH default x");
    ck_assert_msg(strncmp(r, "*14\r\n$6\r\nserver\r\n", 17) == 0, "%s", r);
    EXPECT(&c, "+OK\r\n", "AUTH default y");
    EXPECT(&c, "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
           "AUTH alice y");
    EXPECT(&c, "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
           "HELLO 2 AUTH alice x");
    EXPECT_ERR(&c, "-ERR client name: at most 128", "HELLO 2 SETNAME \"a b\"");
    EXPECT(&c, "$-1\r\n", "CLIENT GETNAME");  /* a refused HELLO sets nothing */

    /* RESP3: a missing value is _, key/value replies are maps; the rest
     * is as in RESP2. HELLO 2 switches back. */
    r = cmdf(&c, "HELLO 3");
    ck_assert_msg(strncmp(r, "%7\r\n$6\r\nserver\r\n", 16) == 0 &&
                  strstr(r, "$5\r\nproto\r\n:3\r\n"), "%s", r);
    EXPECT(&c, "_\r\n", "CLIENT GETNAME");
    EXPECT(&c, "%1\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n", "CONFIG GET maxclients");
    ck_assert(strncmp(cmdf(&c, "STATS 1"), "%15\r\n$11\r\nimpressions\r\n", 23) == 0);
    EXPECT(&c, "*1\r\n_\r\n", "COMMAND INFO nosuch");
    EXPECT(&c, "%0\r\n", "COMMAND DOCS");
    EXPECT(&c, "+OK\r\n", "TRACK 1 view session=r3");
    ck_assert_ptr_nonnull(strstr(cmdf(&c, "CLIENT INFO"), " resp=3 "));
    r = cmdf(&c, "HELLO 2");
    ck_assert_msg(strncmp(r, "*14\r\n", 5) == 0 && strstr(r, "proto\r\n:2\r\n"), "%s", r);
    EXPECT(&c, "$-1\r\n", "CLIENT GETNAME");
    ck_assert(strncmp(cmdf(&c, "STATS 1"), "*30\r\n", 5) == 0);
    EXPECT(&c, "*0\r\n", "COMMAND DOCS");

    EXPECT(&c, "+OK\r\n", "SELECT 0");
    EXPECT(&c, "-ERR DB index is out of range\r\n", "SELECT 1");
    EXPECT(&c, "-ERR DB index is out of range\r\n", "SELECT -1");
    EXPECT(&c, "-ERR value is not an integer or out of range\r\n", "SELECT x");
    EXPECT(&c, "-ERR value is not an integer or out of range\r\n", "SELECT 00");

    /* COMMAND: COUNT agrees with LIST and INFO; the short id is the key. */
    r = cmdf(&c, "COMMAND COUNT");
    ck_assert(r[0] == ':');
    long long count = atoll(r + 1);
    ck_assert_int_ge(count, 20);
    char want[32];
    snprintf(want, sizeof want, "*%lld\r\n", count);
    r = cmdf(&c, "COMMAND LIST");
    ck_assert(strncmp(r, want, strlen(want)) == 0);
    ck_assert_ptr_nonnull(strstr(r, "$5\r\ntrack\r\n"));
    ck_assert_ptr_nonnull(strstr(r, "$8\r\nshutdown\r\n"));
    ck_assert(strncmp(cmdf(&c, "COMMAND"), want, strlen(want)) == 0);
    EXPECT(&c, "*1\r\n*6\r\n$5\r\ntrack\r\n:-3\r\n*3\r\n+write\r\n+denyoom\r\n+fast\r\n"
               ":1\r\n:1\r\n:1\r\n", "COMMAND INFO TRACK");
    EXPECT(&c, "*1\r\n*6\r\n$3\r\ntop\r\n:-2\r\n*1\r\n+readonly\r\n:0\r\n:0\r\n:0\r\n",
           "COMMAND INFO top");
    /* the flags dispatch acts on are the ones COMMAND INFO says: PING needs no AUTH */
    EXPECT(&c, "*1\r\n*6\r\n$4\r\nping\r\n:-1\r\n*3\r\n+fast\r\n+stale\r\n+no_auth\r\n"
               ":0\r\n:0\r\n:0\r\n", "COMMAND INFO ping");
    ck_assert_ptr_nonnull(strstr(cmdf(&c, "COMMAND INFO auth"), "+fast\r\n+no_auth\r\n:0"));
    EXPECT(&c, "-ERR unknown subcommand 'GETKEYS'. Try COMMAND HELP.\r\n", "COMMAND GETKEYS x");
    EXPECT(&c, "-ERR wrong number of arguments for 'command|count' command\r\n",
           "COMMAND COUNT x");
    ck_assert(strncmp(cmdf(&c, "COMMAND HELP"), "*11\r\n+COMMAND <subcommand>", 25) == 0);

    /* CLIENT INFO is this connection's CLIENT LIST line. */
    r = cmdf(&c, "CLIENT INFO");
    char idf[40];
    snprintf(idf, sizeof idf, "\r\nid=%lld addr=127.0.0.1:", myid);
    ck_assert_msg(r[0] == '$' && strstr(r, idf) && strstr(r, " cmd=client "), "%s", r);

    /* An unknown command's name and arguments are cut short in the error. */
    char longname[201];
    memset(longname, 'x', 200);
    longname[200] = 0;
    r = cmdf(&c, "%s a", longname);
    ck_assert_msg(strstr(r, "xxx...', with args beginning with: 'a' \r\n"), "%s", r);
    cli_close(&c);
    srv_stop_ok(&s);
}
END_TEST

/* Sends raw bytes; expects one error reply starting with prefix, then EOF. */
static void expect_fatal(const struct srv *s, const void *bytes, size_t n, const char *prefix)
{
    struct cli c;
    cli_open(&c, s->port);
    cli_sends(&c, "PING\r\n");
    cli_send(&c, bytes, n);
    const char *r = cli_reply(&c);
    ck_assert_str_eq(r, "+PONG\r\n");
    r = cli_reply(&c);
    ck_assert_msg(r && strncmp(r, prefix, strlen(prefix)) == 0, "got '%s', want '%s'",
                  r ? r : "(closed)", prefix);
    ck_assert_msg(cli_eof(&c), "connection still open after '%s'", prefix);
    cli_close(&c);
}

START_TEST(protocol_errors_close)
{
    struct srv s;
    srv_start(&s, NULL);
    static const struct { const char *in; const char *err; } cases[] = {
        {"*x\r\n", "-ERR Protocol error: invalid multibulk length"},
        {"*2000\r\n", "-ERR Protocol error: invalid multibulk length"},
        {"*1\r\n+PING\r\n", "-ERR Protocol error: expected '$', got '+'"},
        {"*1\r\n$-3\r\n", "-ERR Protocol error: invalid bulk length"},
        {"*1\r\n$70000\r\n", "-ERR Protocol error: invalid bulk length"},
        {"*1\r\n$4\r\nPINGxx", "-ERR Protocol error: bulk argument not followed by CRLF"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_fatal(&s, cases[i].in, strlen(cases[i].in), cases[i].err);
    ck_assert(log_has(&s, ": protocol error (invalid multibulk length), closing"));

    /* An inline line over 64 KiB. */
    size_t n = PROTO_INLINE_MAX + 10;
    char *big = malloc(n);
    ck_assert_ptr_nonnull(big);
    memset(big, 'a', n);
    expect_fatal(&s, big, n, "-ERR Protocol error: too big inline request");
    /* Exactly 64 KiB is accepted. */
    struct cli c;
    cli_open(&c, s.port);
    memcpy(big, "ECHO ", 5);
    memcpy(big + PROTO_INLINE_MAX, "\r\n", 2);
    cli_send(&c, big, PROTO_INLINE_MAX + 2);
    const char *r = cli_reply(&c);
    ck_assert_msg(r && strncmp(r, "$65531\r\n", 8) == 0, "%.20s", r ? r : "(closed)");
    cli_close(&c);
    free(big);
    assert_alive(&s);
    srv_stop_ok(&s);
}
END_TEST

/* A browser made to POST to the RESP port must not get its body run. */
START_TEST(cross_protocol_closed)
{
    struct srv s;
    srv_start(&s, NULL);
    static const char body[] = "TRACK 4242 view session=evil\r\nBOOST 4242 100\r\n";
    char req[512];
    int n = snprintf(req, sizeof req,
                     "POST / HTTP/1.1\r\nHost: 127.0.0.1:7878\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
    struct cli c;
    cli_open(&c, s.port);
    cli_send(&c, req, (size_t)n);
    ck_assert(cli_eof(&c));  /* closed without a reply */
    cli_close(&c);
    /* Any method: the Host: line closes the connection before the body
     * would run, and replies still unsent (the GET's error) are dropped. */
    n = snprintf(req, sizeof req, "GET / HTTP/1.1\r\nhost: x\r\n\r\n%s", body);
    cli_open(&c, s.port);
    cli_send(&c, req, (size_t)n);
    ck_assert(cli_eof(&c));
    cli_close(&c);
    /* Over RESP too, anywhere in a pipeline; what ran before stays run. */
    cli_open(&c, s.port);
    cli_sends(&c, "PING\r\n");
    const char *r = cli_reply(&c);
    ck_assert_str_eq(r ? r : "EOF", "+PONG\r\n");
    cli_sends(&c, "ECHO x\r\n*2\r\n$4\r\npost\r\n$1\r\n/\r\nBOOST 4242 100\r\n");
    ck_assert(cli_eof(&c));
    cli_close(&c);

    cli_open(&c, s.port);
    EXPECT(&c, "*0\r\n", "TOP 10");  /* nothing recorded, nothing boosted */
    ck_assert_int_eq(info_num(&c, "interactions_total"), 0);
    ck_assert_int_eq(info_num(&c, "cross_protocol_closed"), 3);
    cli_close(&c);
    ck_assert(log_has(&s, "cross-protocol scripting"));
    srv_stop_ok(&s);
}
END_TEST

START_TEST(query_buffer_limit)
{
    struct srv s;
    const char *args[] = {"--query-buffer-limit", "8k", NULL};
    srv_start(&s, args);
    struct cli c;
    cli_open(&c, s.port);
    /* A command that can never complete within 8 KiB: 3 x 60 KB arguments. */
    char head[] = "*4\r\n$4\r\nECHO\r\n$60000\r\n";
    cli_sends(&c, head);
    char *chunk = malloc(20000);
    ck_assert_ptr_nonnull(chunk);
    memset(chunk, 'q', 20000);
    cli_send(&c, chunk, 20000);
    const char *r = cli_reply(&c);
    ck_assert_msg(r && strcmp(r, "-ERR Protocol error: query buffer limit exceeded\r\n") == 0,
                  "%s", r ? r : "(closed)");
    ck_assert(cli_eof(&c));
    cli_close(&c);
    free(chunk);
    cli_open(&c, s.port);
    ck_assert_int_eq(info_num(&c, "query_limit_disconnects"), 1);
    cli_close(&c);
    ck_assert(log_has(&s, "over --query-buffer-limit"));
    assert_alive(&s);
    srv_stop_ok(&s);
}
END_TEST

START_TEST(maxclients_refused)
{
    struct srv s;
    const char *args[] = {"--maxclients", "3", NULL};
    srv_start(&s, args);
    struct cli c[3];
    for (int i = 0; i < 3; i++) {
        cli_open(&c[i], s.port);
        EXPECT(&c[i], "+PONG\r\n", "PING");
    }
    struct cli x;
    cli_open(&x, s.port);
    const char *r = cli_reply(&x);
    ck_assert_msg(r && strcmp(r, "-ERR max number of clients reached\r\n") == 0, "%s",
                  r ? r : "(closed)");
    ck_assert(cli_eof(&x));
    cli_close(&x);
    ck_assert_int_eq(info_num(&c[0], "rejected_connections"), 1);
    /* A flood of refusals is counted, but logged at most once a second. */
    for (int i = 0; i < 50; i++) {
        cli_open(&x, s.port);
        ck_assert_str_eq(cli_reply(&x), "-ERR max number of clients reached\r\n");
        cli_close(&x);
    }
    ck_assert_int_eq(info_num(&c[0], "rejected_connections"), 51);
    char *l = read_file(s.log, NULL);
    int lines = 0;
    for (char *p = l; (p = strstr(p, "refused: --maxclients")) != NULL; p++)
        lines++;
    free(l);
    ck_assert_int_ge(lines, 1);
    ck_assert_int_lt(lines, 51);
    ck_assert_int_eq(info_num(&c[0], "connected_clients"), 3);
    cli_close(&c[2]);
    /* A slot freed is a slot usable (the close is seen after a round trip). */
    for (long long end = run_mono_ms() + RUN_WAIT_MS;
         info_num(&c[0], "connected_clients") != 2 && run_mono_ms() < end;)
        sleep_ms(5);
    cli_open(&c[2], s.port);
    EXPECT(&c[2], "+PONG\r\n", "PING");
    ck_assert(log_has(&s, "refused: --maxclients 3 reached"));
    /* Still answering (a new client could race the closes below at the limit). */
    EXPECT(&c[0], "+PONG\r\n", "PING");
    ck_assert(info_has(&c[0], "# Engine"));
    for (int i = 0; i < 3; i++)
        cli_close(&c[i]);
    srv_stop_ok(&s);
}
END_TEST

START_TEST(auth_required)
{
    struct srv s;
    const char *args[] = {"--requirepass", "s3cret pass", NULL};
    srv_start(&s, args);
    struct cli c;
    cli_open(&c, s.port);
    EXPECT(&c, "+PONG\r\n", "PING");
    EXPECT(&c, "-NOAUTH Authentication required.\r\n", "STATS 1");
    EXPECT(&c, "-NOAUTH Authentication required.\r\n", "TRACK 1 view session=a");
    EXPECT(&c, "-NOAUTH Authentication required.\r\n", "INFO");
    /* unknown before NOAUTH, as Redis answers: HELLO-probing clients fall back */
    EXPECT(&c, "-ERR unknown command 'NOSUCHCOMMAND', with args beginning with: \r\n",
           "NOSUCHCOMMAND");
    /* so are a wrong arity and an unknown subcommand, in Redis's order
     * (ioredis sends CLIENT subcommands before AUTH); a good one is NOAUTH */
    EXPECT(&c, "-ERR wrong number of arguments for 'stats' command\r\n", "STATS");
    EXPECT(&c, "-ERR unknown subcommand 'MAINT_NOTIFICATIONS'. Try CLIENT HELP.\r\n",
           "CLIENT MAINT_NOTIFICATIONS on");
    EXPECT(&c, "-NOAUTH Authentication required.\r\n", "CLIENT SETNAME app");
    /* a version it does not speak: NOPROTO, before any password is read */
    EXPECT(&c, "-NOPROTO sorry, this protocol version is not supported.\r\n",
           "HELLO 4 AUTH default \"s3cret pass\"");
    EXPECT_ERR(&c, "-NOAUTH HELLO must be called with the client already authenticated", "HELLO");
    /* a good password with a name HELLO refuses: nothing changes, so no login */
    EXPECT_ERR(&c, "-ERR client name: at most 128",
               "HELLO 3 AUTH default \"s3cret pass\" SETNAME \"bad name\"");
    EXPECT(&c, "-NOAUTH Authentication required.\r\n", "STATS 1");
    EXPECT(&c, "-NOAUTH Authentication required.\r\n", "MULTI");
    static const char wrongpass[] = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    EXPECT(&c, wrongpass, "AUTH wrong");
    EXPECT(&c, wrongpass, "AUTH \"s3cret pas\"");
    EXPECT(&c, wrongpass, "AUTH \"s3cret passX\"");  /* the password and more */
    ck_assert(log_has(&s, ": AUTH with a wrong password ("));
    EXPECT(&c, wrongpass, "AUTH \"s3cret pass\\x00\"");
    EXPECT(&c, wrongpass, "AUTH admin \"s3cret pass\"");
    EXPECT(&c, wrongpass, "HELLO 2 AUTH default wrong");
    EXPECT(&c, "-NOAUTH Authentication required.\r\n", "STATS 1");
    EXPECT(&c, "+OK\r\n", "AUTH \"s3cret pass\"");
    EXPECT(&c, "+OK\r\n", "TRACK 1 view session=a");
    ck_assert_int_eq(info_num(&c, "auth_failures"), 6);
    cli_close(&c);
    /* HELLO 3 AUTH ...: the handshake go-redis, Lettuce and node-redis
     * open with; the reply is already RESP3 */
    cli_open(&c, s.port);
    const char *r = cmdf(&c, "HELLO 3 AUTH default \"s3cret pass\"");
    ck_assert_msg(strncmp(r, "%7\r\n$6\r\nserver\r\n", 16) == 0, "%s", r);
    ck_assert_ptr_nonnull(strstr(r, "$5\r\nproto\r\n:3\r\n"));
    expect_stat(&c, 1, "views", "1");
    cli_close(&c);
    /* HELLO 2 AUTH ... SETNAME ...: the handshake in one command */
    cli_open(&c, s.port);
    r = cmdf(&c, "HELLO 2 AUTH default \"s3cret pass\" SETNAME feed-api");
    ck_assert_msg(strncmp(r, "*14\r\n$6\r\nserver\r\n$9\r\nshortstat\r\n$7\r\nversion\r\n", 42) == 0,
                  "%s", r);
    ck_assert_ptr_nonnull(strstr(r, "$5\r\nproto\r\n:2\r\n$2\r\nid\r\n:"));
    ck_assert_ptr_nonnull(strstr(r, "$7\r\nmodules\r\n*0\r\n"));
    EXPECT(&c, "$8\r\nfeed-api\r\n", "CLIENT GETNAME");
    expect_stat(&c, 1, "views", "1");
    cli_close(&c);
    /* Redis 6 style AUTH <user> <password>, in RESP. */
    cli_open(&c, s.port);
    cli_sends(&c, "*3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n$11\r\ns3cret pass\r\n");
    ck_assert_str_eq(cli_reply(&c), "+OK\r\n");
    expect_stat(&c, 1, "views", "1");
    cli_close(&c);
    /* QUIT works unauthenticated. */
    cli_open(&c, s.port);
    EXPECT(&c, "+OK\r\n", "QUIT");
    ck_assert(cli_eof(&c));
    cli_close(&c);
    /* The fast TRACK path honours auth inside a pipeline too. */
    cli_open(&c, s.port);
    cli_sends(&c, "TRACK 1 view session=b\r\nAUTH \"s3cret pass\"\r\nTRACK 1 view session=b\r\n");
    ck_assert_str_eq(cli_reply(&c), "-NOAUTH Authentication required.\r\n");
    ck_assert_str_eq(cli_reply(&c), "+OK\r\n");
    ck_assert_str_eq(cli_reply(&c), "+OK\r\n");
    expect_stat(&c, 1, "views", "2");
    cli_close(&c);
    srv_stop_ok(&s);
}
END_TEST

/* A client that sends without ever reading is cut off at the output limit;
 * a well-behaved client on the same server does not notice. */
START_TEST(client_never_reads)
{
    struct srv s;
    const char *args[] = {"--client-output-limit", "1m", NULL};
    srv_start(&s, args);
    struct cli good;
    cli_open(&good, s.port);
    EXPECT(&good, "+OK\r\n", "TRACK 1 view session=g");

    int fd = tcp_connect(s.port);
    int small = 4096;  /* keep kernel buffers from hiding the server's buffer */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    size_t argl = 60000;
    char *cmd = malloc(argl + 64);
    ck_assert_ptr_nonnull(cmd);
    int h = sprintf(cmd, "*2\r\n$4\r\nECHO\r\n$%zu\r\n", argl);
    memset(cmd + h, 'z', argl);
    memcpy(cmd + h + argl, "\r\n", 2);
    size_t clen = (size_t)h + argl + 2;
    fcntl(fd, F_SETFL, O_NONBLOCK);
    size_t sent = 0;
    bool cut = false;
    int interleave = 0;
    while (sent < (size_t)1 << 30) {
        struct pollfd p = {fd, POLLOUT, 0};
        int pr = poll(&p, 1, 20000);
        ck_assert_msg(pr > 0, "server stopped reading but never cut the client off");
        if (p.revents & (POLLERR | POLLHUP)) {
            cut = true;
            break;
        }
        ssize_t w = send(fd, cmd + sent % clen, clen - sent % clen, MSG_NOSIGNAL);
        if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) {
            cut = true;
            break;
        }
        if (w > 0)
            sent += (size_t)w;
        if (++interleave % 64 == 0)  /* the other client keeps being served */
            EXPECT(&good, "+PONG\r\n", "PING");
    }
    ck_assert_msg(cut, "never disconnected after %zu bytes", sent);
    close(fd);
    free(cmd);
    EXPECT(&good, "+OK\r\n", "TRACK 1 view session=g2");
    expect_stat(&good, 1, "views", "2");
    ck_assert_int_eq(info_num(&good, "output_limit_disconnects"), 1);
    cli_close(&good);
    ck_assert(log_has(&s, "over --client-output-limit 1048576, closing"));
    assert_alive(&s);
    srv_stop_ok(&s);
}
END_TEST

/* Shorts 1..n, one view each, in one pipeline; every reply +OK. */
static void view_shorts(struct cli *c, int n)
{
    char *buf = malloc((size_t)n * 32);
    ck_assert_ptr_nonnull(buf);
    size_t o = 0;
    for (int i = 1; i <= n; i++)
        o += (size_t)sprintf(buf + o, "TRACK %d view session=a\r\n", i);
    cli_send(c, buf, o);
    free(buf);
    for (int i = 1; i <= n; i++)
        if (strcmp(cli_reply(c), "+OK\r\n") != 0)
            ck_abort_msg("TRACK %d: %s", i, c->last);
}

/* One client's long input is run a turn at a time: another client is
 * served while it is still being run. A's 2,340 TOPs over 300,000 shorts
 * (each a pass over all of them: seconds of work in all) arrive in one
 * read; B's PING, sent once A's first replies are out, is answered before
 * the last of them has run. (Run in one go, as before turns, B waited for
 * all 2,340.) */
START_TEST(long_input_takes_turns)
{
    struct srv s;
    /* the smallest query buffer: input parked for a later turn is commands
     * waiting, not a client over its limit */
    const char *args[] = {"--query-buffer-limit", "1k", NULL};
    srv_start(&s, args);
    struct cli b;
    cli_open(&b, s.port);
    view_shorts(&b, 300000);
    char *buf = malloc(16384);
    ck_assert_ptr_nonnull(buf);
    struct cli a;
    cli_open(&a, s.port);
    size_t o = 0;
    for (int i = 0; i < 2340; i++)
        o += (size_t)sprintf(buf + o, "TOP 1\r\n");
    ck_assert_uint_le(o, 16384);  /* one read of a new connection */
    cli_send(&a, buf, o);
    free(buf);
    const char *r = cli_reply(&a);
    ck_assert_msg(r && r[0] == '*', "%s", r ? r : "(closed)");
    /* PING and the count in one write: B's turn answers both in the same
     * gap between two of A's turns, so no round trip of ours between them
     * lets A's turns run on */
    cli_sends(&b, "PING\r\nINFO commandstats\r\n");
    r = cli_reply(&b);
    ck_assert_msg(r && strcmp(r, "+PONG\r\n") == 0, "PING: %s", r ? r : "(closed)");
    r = cli_reply(&b);
    const char *at = r ? strstr(r, "cmdstat_top:calls=") : NULL;
    ck_assert_msg(at, "INFO commandstats: %s", r ? r : "(closed)");
    long long ran = atoll(at + strlen("cmdstat_top:calls="));
    ck_assert_msg(ran < 2340, "B was answered only after all %lld of A's TOPs", ran);
    for (int i = 1; i < 2340; i++) {  /* A gets every reply, in order */
        r = cli_reply(&a);
        if (!r || r[0] != '*')
            ck_abort_msg("TOP %d: %s", i, r ? r : "(closed)");
    }
    EXPECT(&a, "+PONG\r\n", "PING");
    ck_assert_int_eq(info_num(&a, "query_limit_disconnects"), 0);
    cli_close(&a);
    cli_close(&b);
    srv_stop_ok(&s);
}
END_TEST

/* EXEC checks the output limit as its queue runs: 400 queued TOPs (12 MB of
 * replies) to a client that never reads close it near the 1 MiB limit, not
 * after buffering them all; the transaction still runs whole, as in Redis. */
START_TEST(exec_output_limit)
{
    struct srv s;
    const char *args[] = {"--client-output-limit", "1m", NULL};
    srv_start(&s, args);
    struct cli good;
    cli_open(&good, s.port);
    size_t cap = 400 * 16 + 64;
    view_shorts(&good, 1000);
    ck_assert_uint_gt(strlen(cmdf(&good, "TOP 1000")), 16384);
    char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    size_t o;

    int fd = tcp_connect(s.port);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    o = (size_t)sprintf(buf, "MULTI\r\n");
    for (int i = 0; i < 400; i++)
        o += (size_t)sprintf(buf + o, "TOP 1000\r\n");
    o += (size_t)sprintf(buf + o, "TRACK 5000 view session=x\r\nEXEC\r\n");
    ck_assert_uint_lt(o, cap);
    ck_assert_int_eq(send(fd, buf, o, MSG_NOSIGNAL), (ssize_t)o);
    free(buf);
    ck_assert_int_eq(wait_info_ge(&good, "output_limit_disconnects", 1), 1);
    expect_stat(&good, 5000, "views", "1");  /* queued after the cut: it ran */
    close(fd);
    long long held = log_num_after(&s, "output buffer ");
    ck_assert_msg(held < (2 << 20), "closed holding %lld bytes of replies", held);
    cli_close(&good);
    assert_alive(&s);
    srv_stop_ok(&s);
}
END_TEST

/* The output limit is for clients that do not read: one that sends a
 * pipeline whose replies pass the limit within one read of its input, and
 * reads them, gets them all. */
START_TEST(client_reads_past_output_limit)
{
    struct srv s;
    const char *args[] = {"--client-output-limit", "1m", NULL};
    srv_start(&s, args);
    struct cli c;
    cli_open(&c, s.port);
    char *buf = malloc(64 * 1000);
    ck_assert_ptr_nonnull(buf);
    size_t o = 0;
    for (int i = 1; i <= 1000; i++)
        o += (size_t)sprintf(buf + o, "TRACK %d view session=a watch_ms=%d\r\n", i, i);
    cli_send(&c, buf, o);
    for (int i = 0; i < 1000; i++)
        ck_assert_str_eq(cli_reply(&c), "+OK\r\n");
    size_t one = strlen(cmdf(&c, "TOP 1000")), n = ((size_t)4 << 20) / one + 1;
    ck_assert_uint_gt(one, 16384);
    o = 0;
    for (size_t i = 0; i < n; i++)
        o += (size_t)sprintf(buf + o, "TOP 1000\r\n");
    cli_send(&c, buf, o);   /* one read's worth; replies: 4 MiB, four times the limit */
    free(buf);
    for (size_t i = 0; i < n; i++) {
        const char *r = cli_reply(&c);
        ck_assert_msg(r && r[0] == '*', "reply %zu of %zu: %.40s", i, n, r ? r : "(closed)");
    }
    ck_assert_int_eq(info_num(&c, "output_limit_disconnects"), 0);
    cli_close(&c);
    srv_stop_ok(&s);
}
END_TEST

/* One HTTP request on its own connection, a POST when body is not NULL,
 * with extra header lines hdrs ("" for none, each ending in CRLF); the
 * whole response (read to EOF). */
static char *http_send(int port, const char *path, const char *hdrs, const char *body)
{
    int fd = tcp_connect(port);
    char req[1024];
    int n = body ? snprintf(req, sizeof req,
                            "POST %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%s"
                            "Content-Length: %zu\r\n\r\n%s",
                            path, hdrs, strlen(body), body)
                 : snprintf(req, sizeof req,
                            "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%s\r\n",
                            path, hdrs);
    ck_assert_int_lt(n, (int)sizeof req);
    srv_send(fd, req, (size_t)n);
    size_t len = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    for (ssize_t r; (r = srv_recv(fd, buf + len, cap - 1 - len)) > 0;) {
        len += (size_t)r;
        if (cap - 1 - len < 4096)
            buf = realloc(buf, cap *= 2);
        ck_assert_ptr_nonnull(buf);
    }
    buf[len] = 0;
    close(fd);
    return buf;
}

static char *http_req(int port, const char *path, const char *body)
{
    return http_send(port, path, "", body);
}

static char *http_once(int port, const char *path)
{
    return http_req(port, path, NULL);
}

/* The status line's code of an HTTP response; frees it. */
static int http_code(char *r)
{
    int code = strncmp(r, "HTTP/1.1 ", 9) == 0 ? atoi(r + 9) : -1;
    free(r);
    return code;
}

/* requirepass and maxclients changed by CONFIG SET, as Redis changes them:
 * a new password binds the connections made after it, on both ports, the
 * ones already in keep their access, "" opens every one; a lower
 * maxclients refuses new clients only, a higher one needs file room. */
START_TEST(config_set_auth_and_maxclients)
{
    struct srv s;
    memset(&s, 0, sizeof s);
    s.nofile = 128;  /* room for 64 clients */
    const char *args[] = {"--maxclients", "10", NULL};
    int port = srv_start_http(&s, args);
    struct cli a, b, d;
    cli_open(&a, s.port);
    cli_open(&d, s.port);  /* made before the password, never AUTHs */
    EXPECT(&a, "+OK\r\n", "TRACK 1 view session=a");
    EXPECT(&a, "+OK\r\n", "CONFIG SET RequirePass \"n3w pw\"");  /* any case */
    ck_assert(log_has(&s, "CONFIG SET requirepass=(redacted)"));
    ck_assert(!log_has(&s, "n3w pw"));
    EXPECT(&a, "*2\r\n$11\r\nrequirepass\r\n$6\r\nn3w pw\r\n", "CONFIG GET requirepass");
    expect_stat(&d, 1, "views", "1");  /* the connections already in keep access */
    cli_open(&b, s.port);
    EXPECT(&b, "-NOAUTH Authentication required.\r\n", "STATS 1");
    EXPECT(&b, "-WRONGPASS invalid username-password pair or user is disabled.\r\n", "AUTH x");
    EXPECT(&b, "+OK\r\n", "AUTH \"n3w pw\"");
    expect_stat(&b, 1, "views", "1");
    ck_assert_int_eq(http_code(http_once(port, "/api/explore/stats/1")), 401);
    ck_assert_int_eq(http_code(http_send(port, "/api/explore/stats/1",
                                         "Authorization: Bearer n3w pw\r\n", NULL)), 200);
    ck_assert_int_eq(http_code(http_once(port, "/healthz")), 200);
    /* a new password: b (authenticated) keeps access, new ones need it */
    EXPECT(&b, "+OK\r\n", "CONFIG SET requirepass second");
    expect_stat(&b, 1, "views", "1");
    struct cli e;
    cli_open(&e, s.port);
    EXPECT(&e, "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
           "AUTH \"n3w pw\"");
    EXPECT(&e, "-NOAUTH Authentication required.\r\n", "TRACK 1 view session=e");
    ck_assert_int_eq(http_code(http_send(port, "/api/explore/stats/1",
                                         "Authorization: Bearer n3w pw\r\n", NULL)), 401);
    /* "" opens every connection, the unauthenticated e too */
    EXPECT(&b, "+OK\r\n", "CONFIG SET requirepass \"\"");
    EXPECT(&e, "+OK\r\n", "TRACK 1 view session=e");
    EXPECT(&e, "-ERR AUTH called without any password configured (--requirepass)\r\n",
           "AUTH second");
    ck_assert_int_eq(http_code(http_once(port, "/api/explore/stats/1")), 200);

    /* maxclients: 4 are connected (a, b, d, e); 4 refuses the next one */
    EXPECT(&a, "+OK\r\n", "CONFIG SET maxclients 4");
    ck_assert_int_eq(info_num(&a, "maxclients"), 4);
    struct cli x;
    cli_open(&x, s.port);
    ck_assert_str_eq(cli_reply(&x), "-ERR max number of clients reached\r\n");
    cli_close(&x);
    EXPECT(&d, "+PONG\r\n", "PING");  /* the ones in stay */
    /* past what the open file limit (128, hard) leaves room for: refused,
     * and nothing changes, the good pair before it included */
    EXPECT(&a, "-ERR CONFIG SET failed: maxclients: the open file limit 128 allows at most 64 "
               "clients\r\n", "CONFIG SET loglevel debug maxclients 65");
    EXPECT(&a, "*2\r\n$8\r\nloglevel\r\n$4\r\ninfo\r\n", "CONFIG GET loglevel");
    ck_assert_int_eq(info_num(&a, "maxclients"), 4);
    EXPECT(&a, "-ERR CONFIG SET failed: maxclients: must be an integer 1..1000000\r\n",
           "CONFIG SET maxclients 0");
    EXPECT(&a, "+OK\r\n", "CONFIG SET maxclients 64");
    cli_open(&x, s.port);
    EXPECT(&x, "+PONG\r\n", "PING");
    cli_close(&x);
    cli_close(&a);
    cli_close(&b);
    cli_close(&d);
    cli_close(&e);
    srv_stop_ok(&s);
}
END_TEST

/* The HTTP port under the server's limits: /metrics counts what it says
 * it counts, --maxclients refuses in HTTP, --client-output-limit holds for
 * an HTTP client that never reads; and SIGHUP does not kill the server. */
START_TEST(http_port_limits_and_metrics)
{
    struct srv s;
    memset(&s, 0, sizeof s);
    const char *args[] = {"--maxclients", "2", "--client-output-limit", "64k", NULL};
    int port = srv_start_http(&s, args);
    struct cli c;
    cli_open(&c, s.port);
    EXPECT(&c, "+OK\r\n", "TRACK 1 view session=a");
    char *m = http_once(port, "/metrics");
    ck_assert_msg(strstr(m, "\nshortstat_connected_clients 1\n"), "%s", m);  /* not the scrape */
    ck_assert_msg(!strstr(m, "\nshortstat_memory_rss_bytes 0\n"), "rss reads 0");
    ck_assert_msg(strstr(m, "\nshortstat_snapshot_changes 1\n"), "changes: %s", m);
    free(m);
    /* an HTTP connection held open is neither a client INFO counts nor one
     * CLIENT KILL can reach */
    int hfd = tcp_connect(port);
    static const char hreq[] = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    ck_assert_int_eq(send(hfd, hreq, sizeof hreq - 1, 0), (ssize_t)sizeof hreq - 1);
    char hbuf[512];
    ck_assert_int_gt(recv(hfd, hbuf, sizeof hbuf, 0), 0);  /* answered: it is accepted */
    ck_assert_int_eq(info_num(&c, "connected_clients"), 1);
    struct sockaddr_in hsa;
    socklen_t hsl = sizeof hsa;
    ck_assert_int_eq(getsockname(hfd, (struct sockaddr *)&hsa, &hsl), 0);
    EXPECT(&c, ":0\r\n", "CLIENT KILL ADDR 127.0.0.1:%d", ntohs(hsa.sin_port));
    close(hfd);

    /* at --maxclients the HTTP port answers in HTTP; the scrape's connection
     * counts until the server has seen it close, so wait for its slot */
    struct cli c2;
    for (long long end = run_mono_ms() + RUN_WAIT_MS;;) {
        cli_open(&c2, s.port);
        const char *r = cmdf(&c2, "PING");
        if (strcmp(r, "+PONG\r\n") == 0)
            break;
        ck_assert_msg(strstr(r, "max number of clients") && run_mono_ms() < end, "PING: %s", r);
        cli_close(&c2);
        sleep_ms(10);
    }
    m = http_once(port, "/healthz");
    ck_assert_msg(strncmp(m, "HTTP/1.1 503 ", 13) == 0 && strstr(m, "max number of clients"),
                  "%s", m);
    size_t ml = strlen(m);  /* Content-Length: 52, the body as every other JSON body ends */
    ck_assert_msg(ml > 52 && strcmp(m + ml - 52, "{\"ok\":false,\"error\":\"max number of clients "
                                                 "reached\"}") == 0, "%s", m);
    free(m);
    cli_close(&c2);
    /* the 503 is counted with the other responses, once the slot is free */
    for (long long end = run_mono_ms() + RUN_WAIT_MS;; sleep_ms(10)) {
        m = http_once(port, "/metrics");
        if (strncmp(m, "HTTP/1.1 200 ", 13) == 0 || run_mono_ms() >= end)
            break;
        free(m);
    }
    static const char n503[] = "\nshortstat_http_responses_total{code=\"503\"} ";
    const char *k = strstr(m, n503);
    ck_assert_msg(strncmp(m, "HTTP/1.1 200 ", 13) == 0 && k && atoll(k + sizeof n503 - 1) >= 1,
                  "no 503 counted; the last /metrics:\n%s", m);
    free(m);

    /* a client that sends requests and never reads the answers is cut off;
     * first its connection must hold a slot (the server may not have seen
     * the scrapes above close yet, and would answer 503 and close) */
    int fd = -1;
    char ans[16] = "";
    for (long long end = run_mono_ms() + RUN_WAIT_MS; fd < 0;) {
        ck_assert_msg(run_mono_ms() < end, "no free slot on the HTTP port; the last answer began '%s'",
                      ans);
        fd = tcp_connect(port);
        static const char hz[] = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
        ck_assert_int_eq(send(fd, hz, sizeof hz - 1, MSG_NOSIGNAL), (ssize_t)sizeof hz - 1);
        memset(ans, 0, sizeof ans);
        ssize_t got = recv(fd, ans, 12, MSG_WAITALL);
        if (got == 12 && strncmp(ans, "HTTP/1.1 200", 12) == 0)
            break;
        close(fd);
        fd = -1;
        sleep_ms(10);
    }
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    static const char req[] = "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n";
    bool cut = false;
    for (size_t sent = 0; sent < (size_t)256 << 20 && !cut;) {
        struct pollfd p = {fd, POLLOUT, 0};
        ck_assert_msg(poll(&p, 1, RUN_WAIT_MS) > 0, "never cut off after %zu bytes", sent);
        ssize_t w = send(fd, req, sizeof req - 1, MSG_NOSIGNAL);
        if ((p.revents & (POLLERR | POLLHUP)) || (w < 0 && (errno == EPIPE || errno == ECONNRESET)))
            cut = true;
        else if (w > 0)
            sent += (size_t)w;
    }
    close(fd);
    ck_assert(cut);
    ck_assert_int_eq(wait_info_ge(&c, "output_limit_disconnects", 1), 1);
    ck_assert(log_has(&s, "over --client-output-limit 65536, closing"));

    /* SIGHUP (a closed terminal) is ignored: the write above is not lost */
    kill(s.pid, SIGHUP);
    sleep_ms(100);
    cli_close(&c);
    assert_alive(&s);
    int st = srv_term(&s);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
    ck_assert(log_has(&s, "final snapshot saved"));
    srv_cleanup(&s);
}
END_TEST

/* --maxmemory, as Redis's noeviction: over it, TRACK and BOOST answer OOM
 * on every path (alone, pipelined, queued, at EXEC) and HTTP writes 507;
 * nothing is recorded and queries still answer. CONFIG SET moves the limit
 * and the other live settings, all or none, and refuses the rest by name. */
START_TEST(maxmemory_and_config_set)
{
    struct srv s;
    memset(&s, 0, sizeof s);
    int port = srv_start_http(&s, NULL);
    struct cli a, b;
    cli_open(&a, s.port);
    cli_open(&b, s.port);
    EXPECT(&a, "+OK\r\n", "TRACK 1 view session=m user=1 watch_ms=10");
    /* http-cors-origin: set and cleared live; a value that is not one
     * origin (a header injected after it) is refused */
    const char *acao = "\r\nAccess-Control-Allow-Origin: https://app.example.com\r\n";
    char *h = http_once(port, "/api/explore/stats/1");
    ck_assert_msg(strstr(h, " 200 ") && !strstr(h, "Access-Control"), "%s", h);
    free(h);
    EXPECT(&b, "+OK\r\n", "CONFIG SET http-cors-origin https://app.example.com");
    h = http_once(port, "/api/explore/stats/1");
    ck_assert_msg(strstr(h, acao), "%s", h);
    free(h);
    EXPECT_ERR(&b, "-ERR CONFIG SET failed: http-cors-origin: must be * or one origin",
               "CONFIG SET http-cors-origin \"https://a.example\\r\\nX-Evil: 1\"");
    h = http_once(port, "/api/explore/stats/1");
    ck_assert_msg(strstr(h, acao) && !strstr(h, "X-Evil"), "%s", h);
    free(h);
    EXPECT(&b, "*2\r\n$16\r\nhttp-cors-origin\r\n$23\r\nhttps://app.example.com\r\n",
           "CONFIG GET http-cors-origin");
    EXPECT(&b, "+OK\r\n", "CONFIG SET http-cors-origin \"\"");
    h = http_once(port, "/api/explore/stats/1");
    ck_assert_msg(!strstr(h, "Access-Control"), "%s", h);
    free(h);
    EXPECT(&a, "+OK\r\n", "MULTI");
    EXPECT(&a, "+QUEUED\r\n", "TRACK 1 view session=m");
    EXPECT(&b, "+OK\r\n", "CONFIG SET maxmemory 1k");
    ck_assert(wait_log(&s, "is over --maxmemory 1024: TRACK, BOOST and HTTP writes are refused"));
    ck_assert(log_has(&s, "CONFIG SET maxmemory=1k"));
    /* a new limit the server is still over: said against the new one */
    EXPECT(&b, "+OK\r\n", "CONFIG SET maxmemory 2k");
    ck_assert(wait_log(&s, "is over --maxmemory 2048:"));
    EXPECT(&b, "+OK\r\n", "CONFIG SET maxmemory 1k");
    /* queued under the limit, over it at EXEC: the transaction is refused */
    EXPECT(&a,
           "-EXECABORT Transaction discarded because of: OOM command not allowed when used "
           "memory > 'maxmemory'.\r\n",
           "EXEC");
    static const char oom[] = "-OOM command not allowed when used memory > 'maxmemory'.\r\n";
    EXPECT(&a, oom, "TRACK 1 view session=m");
    EXPECT(&a, oom, "BOOST 1 5");
    /* a bad argument is named first, as over the limit as under it */
    EXPECT(&a, "-ERR short_id: must be an integer 1..18446744073709551615\r\n", "TRACK 0 view session=m");
    EXPECT(&a, "-ERR boost: must be an integer 0..100\r\n", "BOOST 1 101");
    /* a pipelined run (the batch path), a query in the middle */
    cli_sends(&a, "TRACK 1 view session=m\r\nTRACK 2 view user=2\r\nPING\r\nTRACK 1 skip user=2\r\n");
    ck_assert_str_eq(cli_reply(&a), oom);
    ck_assert_str_eq(cli_reply(&a), oom);
    ck_assert_str_eq(cli_reply(&a), "+PONG\r\n");
    ck_assert_str_eq(cli_reply(&a), oom);
    /* inside MULTI, queuing anything is refused, as in Redis: it takes memory */
    EXPECT(&a, "+OK\r\n", "MULTI");
    EXPECT(&a, oom, "TRACK 1 view session=m");
    EXPECT(&a, oom, "BOOST 1 5");
    EXPECT(&a, oom, "STATS 1");
    EXPECT(&a, "-EXECABORT Transaction discarded because of previous errors.\r\n", "EXEC");
    /* queries queued under the limit still run at EXEC over it */
    EXPECT(&b, "+OK\r\n", "CONFIG SET maxmemory 0");
    ck_assert(wait_log(&s, "--maxmemory is off: writes accepted again"));
    EXPECT(&a, "+OK\r\n", "MULTI");
    EXPECT(&a, "+QUEUED\r\n", "PING");
    EXPECT(&b, "+OK\r\n", "CONFIG SET maxmemory 1k");
    EXPECT(&a, "*1\r\n+PONG\r\n", "EXEC");
    /* queries answer, and nothing was recorded */
    expect_stat(&a, 1, "views", "1");
    expect_stat(&a, 1, "boost", "0");
    expect_stat(&a, 2, "views", "0");
    ck_assert_int_eq(info_num(&a, "interactions_total"), 1);
    ck_assert_int_eq(info_num(&a, "maxmemory"), 1024);
    /* HTTP: writes 507, queries 200; one count for both ports */
    char *r = http_req(port, "/api/explore/interaction",
                       "{\"type\":\"view\",\"shortId\":1,\"userId\":3}");
    static const char s507[] = "HTTP/1.1 507 Insufficient Storage\r\n";
    ck_assert_msg(strncmp(r, s507, sizeof s507 - 1) == 0, "%s", r);
    ck_assert_msg(strstr(r, "\"error\":\"memory: used memory is over the server's --maxmemory"),
                  "%s", r);
    free(r);
    r = http_req(port, "/api/explore/save/1", "{\"userId\":3}");
    ck_assert_msg(strncmp(r, "HTTP/1.1 507 ", 13) == 0, "%s", r);
    free(r);
    r = http_once(port, "/api/explore/stats/1");
    ck_assert_msg(strncmp(r, "HTTP/1.1 200 ", 13) == 0, "%s", r);
    free(r);
    ck_assert_int_eq(info_num(&a, "oom_refused"), 11);
    char *m = http_once(port, "/metrics");
    ck_assert_msg(strstr(m, "\nshortstat_oom_refused_total 11\n"), "%s", m);
    ck_assert_msg(strstr(m, "\nshortstat_maxmemory_bytes 1024\n"), "%s", m);
    ck_assert_msg(strstr(m, "\nshortstat_http_responses_total{code=\"507\"} 2\n"), "%s", m);
    free(m);

    /* CONFIG SET's refusals change nothing, the good pairs before a bad one
     * included */
    EXPECT(&b, "-ERR CONFIG SET failed: port: can only be set at start (flag or config file)\r\n",
           "CONFIG SET loglevel debug port 1");
    EXPECT(&b, "*2\r\n$8\r\nloglevel\r\n$4\r\ninfo\r\n", "CONFIG GET loglevel");
    EXPECT(&b,
           "-ERR CONFIG SET failed: maxmemory: must be a size from 0 to 1125899906842624 bytes "
           "(k/m/g allowed)\r\n",
           "CONFIG SET loglevel debug maxmemory 1x");
    EXPECT(&b, "-ERR CONFIG SET failed: maxmemory: given twice\r\n",
           "CONFIG SET maxmemory 0 MAXMEMORY 0");
    EXPECT(&b, "-ERR CONFIG SET failed: nosuch: unknown setting\r\n", "CONFIG SET nosuch 1");
    EXPECT(&b, "-ERR CONFIG SET failed: save: only read here, for Redis tools; set snapshot-interval\r\n",
           "CONFIG SET save \"\"");
    EXPECT(&b, "-ERR CONFIG SET failed: appendonly: only read here, for Redis tools\r\n",
           "CONFIG SET appendonly no");
    EXPECT(&b, "-ERR wrong number of arguments for 'config|set' command\r\n", "CONFIG SET maxmemory");
    EXPECT(&b, "-ERR wrong number of arguments for 'config|set' command\r\n",
           "CONFIG SET maxmemory 0 loglevel");
    EXPECT(&b, "-ERR CONFIG SET failed: at most 16 settings at once\r\n",
           "CONFIG SET a 1 b 1 c 1 d 1 e 1 f 1 g 1 h 1 i 1 j 1 k 1 l 1 m 1 n 1 o 1 p 1 q 1");
    char longkey[80];
    memset(longkey, 'k', 70);
    longkey[70] = 0;
    EXPECT(&b, "-ERR CONFIG SET failed: kkkkkkkkkkkkkkkkkkkkkkkkkkkk...: unknown setting\r\n",
           "CONFIG SET %s 1", longkey);
    EXPECT(&b, "-ERR CONFIG SET failed: '': unknown setting\r\n", "CONFIG SET \"\" 1");
    EXPECT(&b, "-ERR CONFIG SET failed: loglevel: must be debug, info or warn (or Redis's verbose, "
               "notice, warning)\r\n",
           "CONFIG SET loglevel loud");
    EXPECT(&b, "-ERR CONFIG SET failed: query-buffer-limit: must be a size from 1024 to "
               "1099511627776 bytes (k/m/g allowed)\r\n",
           "CONFIG SET query-buffer-limit 100");
    /* Redis's policy name: the one policy there is reads and sets */
    EXPECT(&b, "*2\r\n$16\r\nmaxmemory-policy\r\n$10\r\nnoeviction\r\n",
           "CONFIG GET maxmemory-policy");
    EXPECT(&b, "+OK\r\n", "CONFIG SET maxmemory-policy NoEviction");
    EXPECT(&b,
           "-ERR CONFIG SET failed: maxmemory-policy: only noeviction (nothing is evicted, so "
           "every count stays exact)\r\n",
           "CONFIG SET maxmemory-policy allkeys-lru");
    static const char nul[] = "*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$8\r\nloglevel\r\n$3\r\nd\0g\r\n";
    cli_send(&b, nul, sizeof nul - 1);
    ck_assert_str_eq(cli_reply(&b), "-ERR CONFIG SET failed: loglevel: value too long or holds a NUL\r\n");
    EXPECT(&a, oom, "TRACK 1 view session=m");  /* still over */

    /* back under: logged once it is a margin under */
    EXPECT(&b, "+OK\r\n", "CONFIG SET maxmemory 1g");
    ck_assert(wait_log(&s, "is under the new --maxmemory 1073741824: writes accepted"));
    ck_assert(log_has(&s, "CONFIG SET maxmemory=1g"));
    /* a query inside EXEC that lowers the limit: the writes after it are refused */
    long long tr0[3], bo0[3], ex0[3];
    cmdstat_counts(&b, "track", tr0);
    cmdstat_counts(&b, "boost", bo0);
    cmdstat_counts(&b, "exec", ex0);
    EXPECT(&a, "+OK\r\n", "MULTI");
    EXPECT(&a, "+QUEUED\r\n", "CONFIG SET maxmemory 1k");
    EXPECT(&a, "+QUEUED\r\n", "TRACK 2 view user=5");
    EXPECT(&a, "+QUEUED\r\n", "BOOST 2 7");
    EXPECT(&a, "*3\r\n+OK\r\n-OOM command not allowed when used memory > 'maxmemory'.\r\n"
               "-OOM command not allowed when used memory > 'maxmemory'.\r\n",
           "EXEC");
    expect_stat(&a, 2, "views", "0");
    expect_stat(&a, 2, "boost", "0");
    /* the refused writes are rejected calls (refused before they ran, as
     * Redis counts an OOM refusal), not calls; EXEC itself ran and answered
     * an array, so it is one call, neither rejected nor failed */
    EXPECT_CMDSTAT(&b, "track", tr0[0], tr0[1] + 1, tr0[2]);
    EXPECT_CMDSTAT(&b, "boost", bo0[0], bo0[1] + 1, bo0[2]);
    EXPECT_CMDSTAT(&b, "exec", ex0[0] + 1, ex0[1], ex0[2]);

    /* a pipelined run that crosses the limit part way: what was answered OK
     * is recorded, the rest is refused and is not */
    long long used = info_num(&b, "used_memory_bytes");
    long long before = info_num(&b, "interactions_total");
    EXPECT(&b, "+OK\r\n", "CONFIG SET maxmemory %lld", used + 65536);
    enum { RUN = 4000 };
    char *run = malloc((size_t)RUN * 48);
    ck_assert_ptr_nonnull(run);
    size_t o = 0;
    for (int i = 0; i < RUN; i++)
        o += (size_t)sprintf(run + o, "TRACK 3 view session=run%d\r\n", i);
    cli_send(&a, run, o);
    free(run);
    int oks = 0, ooms = 0;
    for (int i = 0; i < RUN; i++) {
        const char *rr = cli_reply(&a);
        ck_assert_ptr_nonnull(rr);
        if (strcmp(rr, "+OK\r\n") == 0)
            oks++;
        else if (strcmp(rr, oom) == 0)
            ooms++;
        else
            ck_abort_msg("reply %d: %s", i, rr);
    }
    ck_assert_msg(oks > 0 && ooms > 0, "%d OK, %d OOM", oks, ooms);
    ck_assert_int_eq(info_num(&b, "interactions_total"), before + oks);
    char views[16];
    snprintf(views, sizeof views, "%d", oks);
    expect_stat(&b, 3, "views", views);

    /* client buffers count: a client holding 4 MB of input puts the server
     * over; once it goes, the next tick logs it back under by the margin */
    EXPECT(&b, "+OK\r\n", "CONFIG SET maxmemory 0");
    struct cli e;
    cli_open(&e, s.port);
    cli_sends(&e, "*1000\r\n$4\r\nECHO\r\n");  /* never completes: held as input */
    static char arg[60000 + 16];
    int an = snprintf(arg, sizeof arg, "$60000\r\n");
    memset(arg + an, 'q', 60000);
    memcpy(arg + an + 60000, "\r\n", 2);
    for (int i = 0; i < 70; i++)
        cli_send(&e, arg, (size_t)an + 60002);
    /* until the server has read it and a cron tick summed it */
    ck_assert_int_gt(wait_info_ge(&b, "used_memory_clients_bytes", 4000001), 4000000);
    long long with = info_num(&b, "used_memory_bytes");
    char line[96];
    snprintf(line, sizeof line, "is over --maxmemory %lld:", with - (2 << 20));
    EXPECT(&b, "+OK\r\n", "CONFIG SET maxmemory %lld", with - (2 << 20));
    ck_assert(wait_log(&s, line));
    EXPECT(&a, oom, "TRACK 1 view session=m");
    cli_close(&e);
    snprintf(line, sizeof line, "is back under --maxmemory %lld:", with - (2 << 20));
    ck_assert(wait_log(&s, line));
    EXPECT(&a, "+OK\r\n", "TRACK 1 view session=m");

    /* a queued MULTI counts too: Redis refuses queuing over the limit for it */
    long long before_q = info_num(&b, "used_memory_clients_bytes");
    EXPECT(&a, "+OK\r\n", "MULTI");
    char *q = malloc(2000 * 40);
    ck_assert_ptr_nonnull(q);
    size_t qo = 0;
    for (int i = 0; i < 2000; i++)
        qo += (size_t)sprintf(q + qo, "TRACK 4 view session=q%d\r\n", i);
    cli_send(&a, q, qo);
    free(q);
    for (int i = 0; i < 2000; i++)
        ck_assert_str_eq(cli_reply(&a), "+QUEUED\r\n");
    ck_assert_int_ge(wait_info_ge(&b, "used_memory_clients_bytes", before_q + 200000),
                     before_q + 200000);
    EXPECT(&a, "+OK\r\n", "DISCARD");

    /* several at once, any case, '_' for '-'; each takes effect */
    EXPECT(&b, "+OK\r\n", "CONFIG SET MaxMemory 0 snapshot_interval 1 LOGLEVEL debug");
    EXPECT(&a, "+OK\r\n", "TRACK 1 view session=m");
    EXPECT(&b, "*2\r\n$17\r\nsnapshot-interval\r\n$1\r\n1\r\n", "CONFIG GET snapshot-interval");
    ck_assert(wait_log(&s, "snapshot saved"));         /* the timer was re-armed */
    struct cli d;
    cli_open(&d, s.port);
    EXPECT(&d, "+PONG\r\n", "PING");
    ck_assert(wait_log(&s, " connected (id "));       /* a debug line */
    EXPECT(&b, "+OK\r\n", "MULTI");                   /* queued, run at EXEC */
    EXPECT(&b, "+QUEUED\r\n", "CONFIG SET loglevel warn");
    EXPECT(&b, "*1\r\n+OK\r\n", "EXEC");
    EXPECT(&b, "*2\r\n$8\r\nloglevel\r\n$4\r\nwarn\r\n", "CONFIG GET loglevel");
    ck_assert(log_has(&s, "CONFIG SET loglevel=warn"));  /* logged at any level */
    /* the log line names every pair, however long the values */
    char zeros[60];
    memset(zeros, '0', sizeof zeros - 1);
    zeros[sizeof zeros - 1] = 0;
    EXPECT(&b, "+OK\r\n",
           "CONFIG SET query-buffer-limit %s256m client-output-limit %s64m maxmemory %s "
           "loglevel warn slowlog-max-len 100", zeros, zeros, zeros);
    ck_assert(log_has(&s, "loglevel=warn slowlog-max-len=100"));
    EXPECT(&b, "+OK\r\n", "CONFIG SET loglevel notice");    /* Redis's name for info */
    EXPECT(&b, "*2\r\n$8\r\nloglevel\r\n$4\r\ninfo\r\n", "CONFIG GET loglevel");
    /* snapshot-interval 0 stops the timer */
    EXPECT(&b, "+OK\r\n", "CONFIG SET snapshot-interval 0");
    wait_snapshot_done(&b);
    long long snaps = info_num(&b, "snapshots_total");
    EXPECT(&a, "+OK\r\n", "TRACK 1 impression session=m");
    sleep_ms(1500);  /* the 1 s timer, were it still armed, would have fired */
    ck_assert_int_eq(info_num(&b, "snapshots_total"), snaps);
    /* the buffer limits hold from the next read on */
    EXPECT(&b, "+OK\r\n", "config set client-output-limit 1m query-buffer-limit 1k");
    EXPECT(&b, "*4\r\n$18\r\nquery-buffer-limit\r\n$4\r\n1024\r\n$19\r\nclient-output-limit\r\n"
               "$7\r\n1048576\r\n",
           "CONFIG GET query-buffer-limit client-output-limit");
    cli_sends(&d, "*2\r\n$4\r\nECHO\r\n$60000\r\n");
    static char chunk[3000];
    memset(chunk, 'q', sizeof chunk);
    cli_send(&d, chunk, sizeof chunk);
    const char *qr = cli_reply(&d);
    ck_assert_msg(qr && strcmp(qr, "-ERR Protocol error: query buffer limit exceeded\r\n") == 0,
                  "%s", qr ? qr : "(closed)");
    /* the names redis-cli --stat and exporters read, in one INFO */
    const char *info = cmdf(&b, "INFO");
    char *dup = strdup(info);
    ck_assert_ptr_nonnull(dup);
    static const char *const same[][2] = {{"used_memory", "used_memory_bytes"},
                                          {"total_commands_processed", "commands_total"}};
    for (size_t i = 0; i < 2; i++) {
        char k0[48], k1[48];
        snprintf(k0, sizeof k0, "\r\n%s:", same[i][0]);
        snprintf(k1, sizeof k1, "\r\n%s:", same[i][1]);
        const char *p0 = strstr(dup, k0), *p1 = strstr(dup, k1);
        ck_assert_msg(p0 && p1 && atoll(p0 + strlen(k0)) == atoll(p1 + strlen(k1)), "%s", dup);
    }
    ck_assert_msg(strstr(dup, "\r\nblocked_clients:0\r\n"), "%s", dup);
    ck_assert_msg(strstr(dup, "\r\nmaxmemory_policy:noeviction\r\n"), "%s", dup);
    free(dup);
    cli_close(&d);
    cli_close(&a);
    cli_close(&b);
    int st = srv_term(&s);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);

    /* a snapshot loaded over the limit is said at start, and writes refused */
    const char *over[] = {"--maxmemory", "4k", NULL};
    srv_start_in(&s, over);
    ck_assert(wait_log(&s, "is over --maxmemory 4096"));
    cli_open(&a, s.port);
    expect_stat(&a, 1, "views", "3");
    EXPECT(&a, oom, "TRACK 1 view session=m");
    cli_close(&a);
    srv_stop_ok(&s);
    srv_cleanup(&s);
}
END_TEST

START_TEST(thousand_connections)
{
    struct srv s;
    srv_start(&s, NULL);
    enum { N = 1000 };
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < N + 64) {
        rl.rlim_cur = rl.rlim_max < N + 64 ? rl.rlim_max : N + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    static struct cli c[N];
    for (int i = 0; i < N; i++)
        cli_open(&c[i], s.port);
    /* All send before any reads: the server juggles 1,000 live clients. */
    for (int i = 0; i < N; i++) {
        char line[128];
        int n = snprintf(line, sizeof line, "TRACK %d impression session=c%d\r\nPING\r\n", i % 10 + 1,
                         i);
        cli_send(&c[i], line, (size_t)n);
    }
    for (int i = 0; i < N; i++) {
        ck_assert_str_eq(cli_reply(&c[i]), "+OK\r\n");
        ck_assert_str_eq(cli_reply(&c[i]), "+PONG\r\n");
    }
    ck_assert_int_eq(info_num(&c[0], "connected_clients"), N);
    expect_stat(&c[0], 1, "unique_viewers", "100");
    ck_assert_int_eq(info_num(&c[0], "interactions_total"), N);
    for (int i = 0; i < N; i++)
        cli_close(&c[i]);
    assert_alive(&s);
    srv_stop_ok(&s);
}
END_TEST

/* ---- redis-cli, the way users will ------------------------------------------------------------ */

static char *run_capture(const char *cmdline)
{
    FILE *p = popen(cmdline, "r");
    ck_assert_ptr_nonnull(p);
    size_t cap = 1 << 16, n = 0;
    char *out = malloc(cap);
    ck_assert_ptr_nonnull(out);
    size_t r;
    while ((r = fread(out + n, 1, cap - 1 - n, p)) > 0) {
        n += r;
        if (n == cap - 1) {
            cap *= 2;
            out = realloc(out, cap);
            ck_assert_ptr_nonnull(out);
        }
    }
    out[n] = 0;
    int st = pclose(p);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "'%s' failed: %s", cmdline, out);
    return out;
}

START_TEST(redis_cli)
{
    if (system("command -v redis-cli >/dev/null 2>&1") != 0)
        ck_abort_msg("redis-cli not installed: run make deps");
    struct srv s;
    srv_start(&s, NULL);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "redis-cli -p %d TRACK 1 view session=s1 watch_ms=3000", s.port);
    char *out = run_capture(cmd);
    ck_assert_str_eq(out, "OK\n");
    free(out);
    snprintf(cmd, sizeof cmd, "redis-cli -p %d STATS 1", s.port);
    out = run_capture(cmd);
    ck_assert_msg(strncmp(out, "impressions\n0\nviews\n1\nview_count\n1\n", 35) == 0, "%s", out);
    ck_assert_ptr_nonnull(strstr(out, "avg_watch_ms\n3000.000000\n"));
    free(out);
    snprintf(cmd, sizeof cmd, "redis-cli -p %d TRACK 1 bogus session=s1", s.port);
    out = run_capture(cmd);
    ck_assert_ptr_nonnull(strstr(out, "ERR type: unknown interaction type"));
    free(out);
    /* Interactive-style start (COMMAND DOCS) plus a quoted argument. */
    snprintf(cmd, sizeof cmd,
             "printf 'TRACK 1 impression session=s2 ua=\"Mozilla/5.0 (X11)\"\\nHISTORY SESSION s2\\n' "
             "| redis-cli -p %d",
             s.port);
    out = run_capture(cmd);
    ck_assert_msg(strstr(out, "OK\n") && strstr(out, " session=s2 ua=\"Mozilla/5.0 (X11)\"\n"), "%s",
                  out);
    free(out);

    /* Mass insertion: redis-cli --pipe of a generated file. */
    char path[128];
    snprintf(path, sizeof path, "%s/pipe.txt", s.dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    const int n = 20000;
    for (int i = 0; i < n; i++) {
        if (i % 3 == 0)
        {
            char arg[32];
            int al = snprintf(arg, sizeof arg, "session=q%d", i);
            fprintf(f, "*4\r\n$5\r\nTRACK\r\n$1\r\n7\r\n$4\r\nview\r\n$%d\r\n%s\r\n", al, arg);
        }
        else
            fprintf(f, "TRACK 7 impression session=q%d ua=\"cli %d\"\r\n", i, i % 5);
    }
    fclose(f);
    snprintf(cmd, sizeof cmd, "redis-cli -p %d --pipe < %s 2>&1", s.port, path);
    out = run_capture(cmd);
    char want[64];
    snprintf(want, sizeof want, "errors: 0, replies: %d", n);
    ck_assert_msg(strstr(out, want), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "redis-cli -p %d INFO stats", s.port);
    out = run_capture(cmd);
    snprintf(want, sizeof want, "interactions_total:%d", n + 2);
    ck_assert_msg(strstr(out, want), "%s", out);
    free(out);
    struct cli c;
    cli_open(&c, s.port);
    expect_stat(&c, 7, "views", "6667");
    expect_stat(&c, 7, "unique_viewers", "20000");
    cli_close(&c);
    assert_alive(&s);
    srv_stop_ok(&s);
}
END_TEST

/* ---- process: flags, config, signals ------------------------------------------------------------ */

/* Runs shortstatd with args to completion; returns the exit code, output in *out. */
static int run_server_args(const char *const *args, char **out)
{
    struct srv s;
    memset(&s, 0, sizeof s);
    srv_init_dir(&s);
    s.pid = spawn(&s, args);
    int code = wait_exit(&s);
    *out = read_file(s.log, NULL);
    srv_cleanup(&s);
    return code;
}

/* INFO commandstats and errorstats, SLOWLOG and CONFIG RESETSTAT, as Redis
 * keeps them: which calls ran, were refused or failed, by every path a
 * command takes (alone, a pipelined TRACK run, queued in MULTI, over
 * --maxmemory, before AUTH). */
START_TEST(command_stats_and_slowlog)
{
    long long t_start = run_mono_ms();  /* bounds what any command can have taken */
    struct srv s;
    memset(&s, 0, sizeof s);
    const char *args[] = {"--requirepass", "pw", "--slowlog-log-slower-than", "0", NULL};
    int hport = srv_start_http(&s, args);
    struct cli a, b;
    cli_open(&a, s.port);
    cli_open(&b, s.port);
    EXPECT(&b, "+PONG\r\n", "PING");
    EXPECT(&b, "-NOAUTH Authentication required.\r\n", "STATS 1");
    EXPECT_ERR(&b, "-WRONGPASS", "AUTH nope");
    EXPECT(&a, "+OK\r\n", "AUTH pw");
    /* a pipelined run: 3 good, a bad argument, one the engine refuses */
    cli_sends(&a, "TRACK 1 view session=s1 watch_ms=5\r\nTRACK 1 impression session=s2\r\n"
                  "TRACK 2 save session=s1\r\nTRACK 1 nosuchtype\r\nTRACK 3 view\r\n");
    for (int i = 0; i < 3; i++)
        ck_assert_str_eq(cli_reply(&a), "+OK\r\n");
    const char *r = cli_reply(&a);
    ck_assert_msg(r && strncmp(r, "-ERR type:", 10) == 0, "%s", r ? r : "EOF");
    ck_assert_str_eq(cli_reply(&a), "-ERR viewer: session or user is required\r\n");
    EXPECT(&a, "-ERR wrong number of arguments for 'track' command\r\n", "TRACK 1");
    EXPECT_CMDSTAT(&a, "track", 5, 1, 2);
    EXPECT_CMDSTAT(&a, "stats", 0, 1, 0);  /* NOAUTH: refused before it ran */
    EXPECT_CMDSTAT(&a, "auth", 2, 0, 1);
    EXPECT_CMDSTAT(&a, "ping", 1, 0, 0);
    /* subcommands by Redis 7's names: a wrong arity is the subcommand's,
     * an unknown subcommand is no command's (only an error), as in Redis */
    EXPECT_ERR(&a, "*2", "CONFIG GET port");
    EXPECT_ERR(&a, "-ERR wrong number of arguments for 'config|get'", "CONFIG GET");
    EXPECT_ERR(&a, "-ERR unknown subcommand", "CONFIG nosuch");
    EXPECT_ERR(&a, "-ERR wrong number of arguments for 'config'", "CONFIG");
    EXPECT_CMDSTAT(&a, "config|get", 1, 1, 0);
    EXPECT_CMDSTAT(&a, "config", 0, 1, 0);
    EXPECT_ERR(&a, "-ERR unknown command", "NOSUCH");
    /* MULTI: queued writes count when EXEC runs them; a bad one is refused */
    EXPECT(&a, "+OK\r\n", "MULTI");
    EXPECT(&a, "+QUEUED\r\n", "TRACK 4 view session=q");
    EXPECT(&a, "+QUEUED\r\n", "BOOST 4 5");
    EXPECT(&a, "+QUEUED\r\n", "PING");
    EXPECT(&a, "*3\r\n+OK\r\n+OK\r\n+PONG\r\n", "EXEC");
    EXPECT_CMDSTAT(&a, "track", 6, 1, 2);
    EXPECT_CMDSTAT(&a, "boost", 1, 0, 0);
    EXPECT_CMDSTAT(&a, "ping", 2, 0, 0);
    EXPECT_CMDSTAT(&a, "exec", 1, 0, 0);
    EXPECT(&a, "+OK\r\n", "MULTI");
    EXPECT_ERR(&a, "-ERR boost:", "BOOST 4 500");
    EXPECT_ERR(&a, "-ERR Command not allowed inside a transaction", "SHUTDOWN");
    EXPECT_ERR(&a, "-EXECABORT", "EXEC");
    EXPECT_CMDSTAT(&a, "boost", 1, 1, 0);
    EXPECT_CMDSTAT(&a, "shutdown", 0, 1, 0);
    EXPECT_CMDSTAT(&a, "exec", 2, 0, 1);
    /* over --maxmemory: refused, alone and in a run */
    EXPECT(&a, "+OK\r\n", "CONFIG SET maxmemory 1k");
    static const char oom[] = "-OOM command not allowed when used memory > 'maxmemory'.\r\n";
    EXPECT(&a, oom, "BOOST 4 1");
    cli_sends(&a, "TRACK 5 view session=z\r\nTRACK 5 view session=y\r\n");
    ck_assert_str_eq(cli_reply(&a), oom);
    ck_assert_str_eq(cli_reply(&a), oom);
    EXPECT(&a, "+OK\r\n", "CONFIG SET maxmemory 0");
    EXPECT_CMDSTAT(&a, "track", 6, 3, 2);
    EXPECT_CMDSTAT(&a, "boost", 1, 2, 0);
    r = cmdf(&a, "INFO errorstats");
    ck_assert_msg(strstr(r, "# Errorstats\r\n") && strstr(r, "\r\nerrorstat_NOAUTH:count=1\r\n") &&
                      strstr(r, "\r\nerrorstat_WRONGPASS:count=1\r\n") &&
                      strstr(r, "\r\nerrorstat_OOM:count=3\r\n") &&
                      strstr(r, "\r\nerrorstat_EXECABORT:count=1\r\n") &&
                      strstr(r, "\r\nerrorstat_ERR:count=9\r\n"),
                  "%s", r);
    ck_assert_int_eq(info_num(&a, "total_error_replies"), 15);
    ck_assert(!info_has(&a, "# Commandstats"));  /* not in INFO alone, as in Redis */
    /* the same figures in /metrics, labelled as redis_exporter labels them */
    char *m = http_once(hport, "/metrics");
    ck_assert_msg(strstr(m, "\nshortstat_command_calls_total{cmd=\"track\"} 6\n") &&
                      strstr(m, "\nshortstat_command_rejected_calls_total{cmd=\"track\"} 3\n") &&
                      strstr(m, "\nshortstat_command_failed_calls_total{cmd=\"track\"} 2\n") &&
                      strstr(m, "\nshortstat_command_calls_total{cmd=\"config|get\"} 1\n") &&
                      strstr(m, "\nshortstat_error_replies_total{code=\"OOM\"} 3\n") &&
                      strstr(m, "\nshortstat_error_replies_total{code=\"ERR\"} 9\n") &&
                      !strstr(m, "{cmd=\"nosuch\"}"),
                  "%s", m);
    /* the time EXEC took: seconds to the nanosecond, not negative, and no
     * more than this test has run (a unit or start-time bug is far more);
     * not a closer bound, which a loaded machine stretches */
    static const char exec_s[] = "\nshortstat_command_duration_seconds_total{cmd=\"exec\"} ";
    const char *es = strstr(m, exec_s);
    ck_assert_msg(es, "no EXEC duration: %s", m);
    es += sizeof exec_s - 1;
    size_t whole = strspn(es, "0123456789");
    char *ee;
    double secs = strtod(es, &ee);
    ck_assert_msg(whole > 0 && es[whole] == '.' && strspn(es + whole + 1, "0123456789") == 9 &&
                      ee == es + whole + 10 && *ee == '\n' && secs >= 0 &&
                      secs <= (double)(run_mono_ms() - t_start) / 1e3,
                  "EXEC duration '%.*s' (the test has run %lld ms)", (int)strcspn(es, "\n"), es,
                  run_mono_ms() - t_start);
    free(m);
    /* HELLO hides the user and password after AUTH, and only those */
    EXPECT_ERR(&b, "-WRONGPASS", "HELLO 2 SETNAME auth AUTH default hunter2 SETNAME nm");
    r = cmdf(&a, "INFO all");
    ck_assert(strstr(r, "# Commandstats\r\ncmdstat_track:") && strstr(r, "# Errorstats\r\n"));

    /* the slow log: every command at threshold 0, newest first; a run is
     * one entry for its time, named by its first TRACK; passwords hidden */
    r = cmdf(&a, "SLOWLOG GET -1");
    ck_assert_msg(strstr(r, "\r\n$5\r\nTRACK\r\n$1\r\n1\r\n$4\r\nview\r\n$10\r\nsession=s1\r\n"
                            "$10\r\nwatch_ms=5\r\n$17\r\n(run of 3 TRACKs)\r\n"),
                  "%s", r);
    ck_assert_msg(strstr(r, "$4\r\nAUTH\r\n$10\r\n(redacted)\r\n") && !strstr(r, "$2\r\npw\r\n") &&
                      !strstr(r, "nope") && !strstr(r, "hunter2"),
                  "%s", r);
    ck_assert_msg(strstr(r, "*9\r\n$5\r\nHELLO\r\n$1\r\n2\r\n$7\r\nSETNAME\r\n$4\r\nauth\r\n"
                            "$4\r\nAUTH\r\n$10\r\n(redacted)\r\n$10\r\n(redacted)\r\n"
                            "$7\r\nSETNAME\r\n$2\r\nnm\r\n"),
                  "%s", r);
    /* EXEC is one entry for its writes (one batch); its queries are their own */
    ck_assert(strstr(r, "*1\r\n$4\r\nEXEC\r\n") && strstr(r, "*1\r\n$4\r\nPING\r\n$15\r\n"));
    ck_assert(strstr(r, "$4\r\nBOOST\r\n$1\r\n4\r\n$1\r\n5\r\n") == NULL);
    ck_assert_int_gt(atoi(cmdf(&a, "SLOWLOG LEN") + 1), 10);
    r = cmdf(&a, "SLOWLOG GET 1");  /* the LEN just before, with its client */
    ck_assert_msg(strncmp(r, "*1\r\n*6\r\n:", 9) == 0 && strstr(r, "$7\r\nSLOWLOG\r\n$3\r\nLEN\r\n"),
                  "%s", r);
    EXPECT(&a, "-ERR count should be greater than or equal to -1\r\n", "SLOWLOG GET -2");
    EXPECT(&a, "-ERR count should be greater than or equal to -1\r\n", "SLOWLOG GET x");
    EXPECT(&a, "-ERR wrong number of arguments for 'slowlog|len' command\r\n", "SLOWLOG LEN 1");
    EXPECT_ERR(&a, "-ERR unknown subcommand 'nosuch'. Try SLOWLOG HELP.", "SLOWLOG nosuch");
    EXPECT(&a, "+OK\r\n", "CLIENT SETNAME app");
    EXPECT(&a, "+OK\r\n", "CONFIG SET slowlog-max-len 2");
    EXPECT(&a, ":2\r\n", "SLOWLOG LEN");
    r = cmdf(&a, "SLOWLOG GET");
    ck_assert_msg(strncmp(r, "*2\r\n", 4) == 0 && strstr(r, "$3\r\napp\r\n"), "%s", r);
    EXPECT(&a, "+OK\r\n", "CONFIG SET slowlog-log-slower-than -1");
    EXPECT(&a, "+OK\r\n", "SLOWLOG RESET");
    EXPECT(&a, ":0\r\n", "SLOWLOG LEN");
    EXPECT(&a, "*0\r\n", "SLOWLOG GET");
    EXPECT(&a, "+OK\r\n", "TRACK 6 view session=w");
    EXPECT(&a, ":0\r\n", "SLOWLOG LEN");  /* -1: nothing is logged */
    EXPECT(&a, "-ERR CONFIG SET failed: slowlog-log-slower-than: must be an integer "
               "-1..1000000000000\r\n", "CONFIG SET slowlog-log-slower-than -2");
    EXPECT_ERR(&a, "-ERR CONFIG SET failed: slowlog-log-slower-than:",
               "CONFIG SET slowlog-log-slower-than -0");
    EXPECT_ERR(&a, "-ERR CONFIG SET failed: slowlog-max-len:", "CONFIG SET slowlog-max-len -1");
    EXPECT(&a, "*2\r\n$23\r\nslowlog-log-slower-than\r\n$2\r\n-1\r\n",
           "CONFIG GET slowlog-log-slower-than");

    /* RESETSTAT: counters to zero, the slow log and the engine's data kept */
    EXPECT(&a, "+OK\r\n", "CONFIG SET slowlog-log-slower-than 0");
    EXPECT(&a, "+OK\r\n", "CONFIG RESETSTAT");
    r = cmdf(&a, "INFO commandstats");
    ck_assert_msg(strstr(r, "\r\ncmdstat_config|resetstat:calls=1,") && !strstr(r, "cmdstat_track"),
                  "%s", r);
    ck_assert_int_eq(info_num(&a, "errors_total"), 0);
    ck_assert_int_eq(info_num(&a, "oom_refused"), 0);
    ck_assert_int_eq(info_num(&a, "interactions_total"), 5);
    r = cmdf(&a, "INFO errorstats");
    ck_assert_str_eq(r, "$14\r\n# Errorstats\r\n\r\n");
    m = http_once(hport, "/metrics");
    ck_assert_msg(!strstr(m, "{cmd=\"track\"}") && !strstr(m, "shortstat_error_replies_total{"),
                  "%s", m);
    free(m);
    EXPECT(&a, ":2\r\n", "SLOWLOG LEN");
    ck_assert(log_has(&s, "CONFIG RESETSTAT"));
    cli_close(&a);
    cli_close(&b);
    srv_stop_ok(&s);
}
END_TEST

/* CONFIG GET reads the settings the server runs with, as Redis's does:
 * glob patterns, case-insensitive, several at once, each setting once. */
START_TEST(config_get)
{
    struct srv s;
    const char *args[] = {"--requirepass", "pw", "--history", "7", "--snapshot-interval", "0",
                          "--snapshot-cpulist", "0-1,5", NULL};
    srv_start(&s, args);
    struct cli c;
    cli_open(&c, s.port);
    EXPECT(&c, "-NOAUTH Authentication required.\r\n", "CONFIG GET port");
    EXPECT(&c, "-NOAUTH Authentication required.\r\n", "CONFIG SET maxmemory 0");
    EXPECT(&c, "+OK\r\n", "AUTH pw");
    EXPECT(&c, "*2\r\n$7\r\nhistory\r\n$1\r\n7\r\n", "CONFIG GET HISTORY");
    EXPECT(&c, "*4\r\n$17\r\nsnapshot-interval\r\n$1\r\n0\r\n$16\r\nsnapshot-cpulist\r\n$5\r\n0-1,5\r\n",
           "config get snap*");
    /* two patterns naming the same setting: it comes once, in --help order */
    EXPECT(&c,
           "*4\r\n$11\r\nrequirepass\r\n$2\r\npw\r\n$18\r\nquery-buffer-limit\r\n$9\r\n268435456\r\n",
           "CONFIG GET query-buffer-l?mit requirepass [q]uery*");
    /* what redis-benchmark asks: snapshots off is Redis's save "" */
    EXPECT(&c, "*4\r\n$4\r\nsave\r\n$0\r\n\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
           "CONFIG GET save appendonly");
    EXPECT(&c, "*0\r\n", "CONFIG GET nosuch");
    const char *all = cmdf(&c, "CONFIG GET *");
    ck_assert_msg(strncmp(all, "*44\r\n$4\r\nbind\r\n$9\r\n127.0.0.1\r\n$4\r\nport\r\n", 38) == 0,
                  "CONFIG GET *: %s", all);
    EXPECT(&c, "-ERR wrong number of arguments for 'config|get' command\r\n", "CONFIG GET");
    EXPECT(&c, "-ERR wrong number of arguments for 'config' command\r\n", "CONFIG");
    EXPECT(&c, "-ERR unknown subcommand 'nosuch'. Try CONFIG HELP.\r\n", "CONFIG nosuch");
    EXPECT(&c,
           "*15\r\n+CONFIG <subcommand> [<arg> ...]. Subcommands are:\r\n"
           "+GET <pattern> [<pattern> ...]\r\n"
           "+    Each setting whose name matches a glob pattern, and its value.\r\n"
           "+SET <setting> <value> [<setting> <value> ...]\r\n"
           "+    Change settings that need no restart, all or none: maxclients,\r\n"
           "+    requirepass, loglevel, snapshot-interval, query-buffer-limit,\r\n"
           "+    client-output-limit, maxmemory, slowlog-log-slower-than, slowlog-max-len,\r\n"
           "+    http-cors-origin.\r\n"
           "+    The change lasts until the server stops, or CONFIG REWRITE saves it.\r\n"
           "+REWRITE\r\n"
           "+    Write the running settings into the --config file, keeping its comments.\r\n"
           "+RESETSTAT\r\n"
           "+    Zero the counters INFO stats, commandstats and errorstats show.\r\n"
           "+HELP\r\n+    Print this help.\r\n",
           "config help");
    EXPECT(&c, "-ERR wrong number of arguments for 'config|help' command\r\n", "CONFIG HELP me");
    char longpat[300];
    memset(longpat, '*', 256);
    longpat[256] = 0;
    EXPECT(&c, "-ERR pattern: must be at most 255 bytes, with no NUL\r\n", "CONFIG GET port %s",
           longpat);
    static const char nul[] = "*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$3\r\np\0*\r\n";
    cli_send(&c, nul, sizeof nul - 1);
    ck_assert_str_eq(cli_reply(&c), "-ERR pattern: must be at most 255 bytes, with no NUL\r\n");
    /* inside MULTI it is queued and answers at EXEC, as in Redis */
    EXPECT(&c, "+OK\r\n", "MULTI");
    EXPECT(&c, "+QUEUED\r\n", "CONFIG GET history");
    EXPECT(&c, "*1\r\n*2\r\n$7\r\nhistory\r\n$1\r\n7\r\n", "EXEC");
    cli_close(&c);

    /* redis-benchmark finds what it asks for (it warns otherwise) */
    if (system("command -v redis-benchmark >/dev/null 2>&1") != 0)
        ck_abort_msg("redis-benchmark not installed: run make deps");
    char cmd[256];
    snprintf(cmd, sizeof cmd, "redis-benchmark -p %d -a pw -n 10 -c 1 -q -t ping 2>&1", s.port);
    char *out = run_capture(cmd);
    ck_assert_msg(strstr(out, "PING_INLINE") && !strstr(out, "WARNING"), "%s", out);
    free(out);
    srv_stop_ok(&s);
}
END_TEST

/* The field "key=" of the CLIENT LIST line of client id, copied to out. */
static bool client_field(const char *list, long long id, const char *key, char *out, size_t cap)
{
    char want[32];
    snprintf(want, sizeof want, "id=%lld ", id);
    const char *line = strstr(list, want);
    if (!line || (line != list && line[-1] != '\n'))
        return false;
    const char *end = strchr(line, '\n');
    char k[40];
    snprintf(k, sizeof k, " %s=", key);
    const char *f = strstr(line, k);
    if (!f || !end || f > end)
        return false;
    f += strlen(k);
    size_t n = strcspn(f, " \n");
    if (n >= cap)
        return false;
    memcpy(out, f, n);
    out[n] = 0;
    return true;
}

static long long client_id(struct cli *c)
{
    const char *r = cmdf(c, "CLIENT ID");
    ck_assert_msg(r[0] == ':', "CLIENT ID: %s", r);
    return atoll(r + 1);
}

/* CLIENT: names, library info and the list of clients, as Redis keeps
 * them; KILL by id, by address and in the old form, SKIPME; every error. */
START_TEST(client_commands)
{
    struct srv s;
    const char *args[] = {"--snapshot-interval", "3600", NULL};
    srv_start(&s, args);
    struct cli a, b, c;
    cli_open(&a, s.port);
    cli_open(&b, s.port);
    cli_open(&c, s.port);
    long long ia = client_id(&a), ib = client_id(&b), ic = client_id(&c);
    ck_assert(ia > 0 && ib > ia && ic > ib);
    EXPECT(&a, "$-1\r\n", "CLIENT GETNAME");
    EXPECT(&a, "+OK\r\n", "CLIENT SETNAME worker-1");
    EXPECT(&a, "$8\r\nworker-1\r\n", "client getname");
    EXPECT(&a, "+OK\r\n", "CLIENT SETINFO LIB-NAME redis-py");
    EXPECT(&a, "+OK\r\n", "CLIENT SETINFO lib-ver 5.0.1");
    EXPECT(&a, "+OK\r\n", "MULTI");
    EXPECT(&b, "+OK\r\n", "TRACK 1 view session=s1");

    const char *r = cmdf(&c, "CLIENT LIST");
    ck_assert_msg(r[0] == '$', "%s", r);
    char *list = strdup(strchr(r, '\n') + 1);
    char v[128];
    ck_assert_msg(client_field(list, ia, "name", v, sizeof v) && !strcmp(v, "worker-1"), "%s", list);
    ck_assert(client_field(list, ia, "lib-name", v, sizeof v) && !strcmp(v, "redis-py"));
    ck_assert(client_field(list, ia, "lib-ver", v, sizeof v) && !strcmp(v, "5.0.1"));
    ck_assert(client_field(list, ia, "flags", v, sizeof v) && !strcmp(v, "x"));
    ck_assert(client_field(list, ia, "cmd", v, sizeof v) && !strcmp(v, "multi"));
    ck_assert(client_field(list, ib, "flags", v, sizeof v) && !strcmp(v, "N"));
    ck_assert(client_field(list, ib, "cmd", v, sizeof v) && !strcmp(v, "track"));
    ck_assert(client_field(list, ic, "cmd", v, sizeof v) && !strcmp(v, "client"));
    ck_assert(client_field(list, ib, "name", v, sizeof v) && !strcmp(v, ""));
    /* ids ascending, one line each, the lister included */
    char aid[32], bid[32], cid[32];
    snprintf(aid, sizeof aid, "id=%lld ", ia);
    snprintf(bid, sizeof bid, "id=%lld ", ib);
    snprintf(cid, sizeof cid, "id=%lld ", ic);
    ck_assert_msg(strstr(list, aid) == list && strstr(list, bid) > strstr(list, aid) &&
                      strstr(list, cid) > strstr(list, bid),
                  "not in id order: %s", list);
    char baddr[64];
    ck_assert(client_field(list, ib, "addr", baddr, sizeof baddr));
    free(list);

    /* errors, each changing nothing */
    EXPECT(&b, "+OK\r\n", "CLIENT SETNAME b-name");
    EXPECT_ERR(&b, "-ERR client name: at most 128 characters, none of them spaces",
               "CLIENT SETNAME \"a b\"");
    EXPECT(&b, "$6\r\nb-name\r\n", "CLIENT GETNAME");
    EXPECT(&b, "+OK\r\n", "CLIENT SETINFO lib-name go-redis");
    EXPECT_ERR(&b, "-ERR lib-name: at most 128", "CLIENT SETINFO lib-name \"x y\"");
    r = cmdf(&c, "CLIENT LIST ID %lld", ib);
    ck_assert_msg(strstr(r, " lib-name=go-redis ") && strstr(r, " name=b-name "), "%s", r);
    ck_assert_msg(!strstr(strchr(r, '\n') + 1, "\nid="), "one line: %s", r);
    EXPECT(&c, "$0\r\n\r\n", "CLIENT LIST TYPE pubsub");
    EXPECT(&c, "-ERR Unknown client type 'robot'\r\n", "CLIENT LIST TYPE robot");
    EXPECT(&c, "-ERR Invalid client ID\r\n", "CLIENT LIST ID 3 x");
    EXPECT(&c, "-ERR syntax error\r\n", "CLIENT LIST ID");
    r = cmdf(&c, "CLIENT LIST TYPE normal ID %lld %lld", ib, ic);
    ck_assert_msg(strstr(r, bid) && strstr(r, cid) && !strstr(r, aid), "%s", r);
    EXPECT(&c, "*2\r\n$4\r\nsave\r\n$6\r\n3600 1\r\n", "CONFIG GET save");
    char longname[200];
    memset(longname, 'n', 129);
    longname[129] = 0;
    EXPECT_ERR(&c, "-ERR client name: at most 128", "CLIENT SETNAME %s", longname);
    longname[128] = 0;
    EXPECT(&c, "+OK\r\n", "CLIENT SETNAME %s", longname);
    /* the longest line CLIENT LIST can have: every field whole */
    EXPECT(&c, "+OK\r\n", "CLIENT SETINFO lib-name %s", longname);
    EXPECT(&c, "+OK\r\n", "CLIENT SETINFO lib-ver %s", longname);
    const char *line = cmdf(&c, "CLIENT INFO");
    char want[512];
    snprintf(want, sizeof want, " name=%s age=", longname);
    ck_assert_msg(strstr(line, want), "%s", line);
    snprintf(want, sizeof want, " lib-name=%s lib-ver=%s\n\r\n", longname, longname);
    ck_assert_msg(strstr(line, want), "%s", line);
    ck_assert_uint_gt(strlen(line), 400);
    EXPECT(&c, "+OK\r\n", "CLIENT SETINFO lib-name \"\"");
    EXPECT(&c, "+OK\r\n", "CLIENT SETINFO lib-ver \"\"");
    EXPECT_ERR(&c, "-ERR lib-ver: at most 128", "CLIENT SETINFO lib-ver \"1\\n2\"");
    EXPECT(&c, "-ERR Unrecognized option 'lib-color'\r\n", "CLIENT SETINFO lib-color x");
    EXPECT(&c, "-ERR wrong number of arguments for 'client|setname' command\r\n",
           "CLIENT SETNAME a b");
    EXPECT(&c, "-ERR syntax error\r\n", "CLIENT LIST x");
    EXPECT(&c, "-ERR wrong number of arguments for 'client|kill' command\r\n", "CLIENT KILL");
    EXPECT(&c, "-ERR wrong number of arguments for 'client' command\r\n", "CLIENT");
    EXPECT(&c, "-ERR unknown subcommand 'PAUSE'. Try CLIENT HELP.\r\n", "CLIENT PAUSE 10");
    /* HELP: every subcommand's usage line, as redis-cli prints Redis's */
    const char *help = cmdf(&c, "CLIENT HELP");
    ck_assert_msg(strncmp(help, "*20\r\n+CLIENT <subcommand> [<arg> ...]. Subcommands are:\r\n"
                                "+ID\r\n", 62) == 0, "CLIENT HELP: %s", help);
    static const char *const usages[] = {"+GETNAME\r\n", "+SETNAME <name>\r\n",
                                         "+SETINFO LIB-NAME|LIB-VER <value>\r\n", "+LIST [TYPE",
                                         "+KILL <ip:port>\r\n", "+KILL [ID <id>]"};
    for (size_t i = 0; i < sizeof usages / sizeof usages[0]; i++)
        ck_assert_msg(strstr(help, usages[i]), "CLIENT HELP lacks %s", usages[i]);
    size_t hl = strlen(help);
    ck_assert_str_eq(help + hl - 30, "+HELP\r\n+    Print this help.\r\n");
    EXPECT(&c, "-ERR syntax error\r\n", "CLIENT KILL ID 1 ADDR");
    EXPECT(&c, "-ERR syntax error\r\n", "CLIENT KILL USER default");
    EXPECT(&c, "-ERR syntax error\r\n", "CLIENT KILL SKIPME maybe");
    EXPECT(&c, "-ERR client-id should be greater than 0\r\n", "CLIENT KILL ID 0");
    EXPECT(&c, "-ERR client-id should be greater than 0\r\n", "CLIENT KILL ID x");
    EXPECT(&c, "-ERR No such client\r\n", "CLIENT KILL 10.0.0.1:1");
    EXPECT(&c, ":0\r\n", "CLIENT KILL ID 999999");
    EXPECT(&c, "+PONG\r\n", "PING");  /* a and b untouched by all that */
    EXPECT(&a, "+QUEUED\r\n", "TRACK 1 view session=s2");
    EXPECT(&b, "+PONG\r\n", "PING");

    /* KILL by id: a closes, its queued transaction dropped */
    EXPECT(&c, ":1\r\n", "CLIENT KILL ID %lld", ia);
    ck_assert(cli_eof(&a));
    expect_stat(&c, 1, "views", "1");
    /* the old form, by address */
    EXPECT(&c, "+OK\r\n", "CLIENT KILL %s", baddr);
    ck_assert(cli_eof(&b));
    /* a client with replies it does not read: they are dropped, it is closed */
    struct cli d;
    cli_open(&d, s.port);  /* default buffers: a small one would make the drain below crawl */
    long long id_d = client_id(&d);
    char pipe[64 * 1024];
    size_t pl = 0;
    while (pl + 6 <= sizeof pipe) {
        memcpy(pipe + pl, "INFO\r\n", 6);
        pl += 6;
    }
    cli_send(&d, pipe, pl);  /* ~16 MB of replies: well past the socket's buffers */
    char omem[32] = "0";
    for (long long end = run_mono_ms() + RUN_WAIT_MS; !strcmp(omem, "0") && run_mono_ms() < end;) {
        r = cmdf(&c, "CLIENT LIST ID %lld", id_d);
        ck_assert(client_field(strchr(r, '\n') + 1, id_d, "omem", omem, sizeof omem));
        sleep_ms(2);
    }
    ck_assert_msg(strcmp(omem, "0") != 0, "no replies ever waited unsent; CLIENT LIST: %s", r);
    /* by ADDR filter, with SKIPME yes spelt out */
    char daddr[64];
    r = cmdf(&c, "CLIENT LIST ID %lld", id_d);
    ck_assert(client_field(strchr(r, '\n') + 1, id_d, "addr", daddr, sizeof daddr));
    EXPECT(&c, ":1\r\n", "CLIENT KILL ADDR %s SKIPME yes", daddr);
    ssize_t got;
    char sink[65536];
    while ((got = recv(d.fd, sink, sizeof sink, 0)) > 0)
        ;
    /* closed after whatever was sent before the kill: EOF, or a reset when
     * the kill found input d had sent still unread (d's input is run a
     * turn at a time, its socket read only as the turns catch up; Redis
     * closes such a client the same way) */
    ck_assert_msg(got == 0 || errno == ECONNRESET, "recv: %s", strerror(errno));
    r = cmdf(&c, "CLIENT LIST ID %lld", id_d);
    ck_assert_str_eq(r, "$0\r\n\r\n");
    cli_close(&d);
    /* the old form naming the caller: its +OK, then the close */
    struct cli e;
    cli_open(&e, s.port);
    long long id_e = client_id(&e);
    r = cmdf(&e, "CLIENT LIST ID %lld", id_e);
    char eaddr[64];
    ck_assert(client_field(strchr(r, '\n') + 1, id_e, "addr", eaddr, sizeof eaddr));
    cli_sends(&e, "CLIENT KILL ");
    cli_sends(&e, eaddr);
    cli_sends(&e, "\r\nPING\r\n");
    ck_assert_str_eq(cli_reply(&e), "+OK\r\n");
    ck_assert(cli_eof(&e));
    cli_close(&e);
    /* SKIPME (default yes) spares the caller; with no it is closed after the reply */
    EXPECT(&c, ":0\r\n", "CLIENT KILL ID %lld", ic);
    EXPECT(&c, ":1\r\n", "CLIENT KILL ID %lld SKIPME no", ic);
    ck_assert(cli_eof(&c));
    cli_close(&a);
    cli_close(&b);
    cli_close(&c);
    cli_open(&c, s.port);
    r = cmdf(&c, "CLIENT LIST");
    const char *body = strchr(r, '\n') + 1;
    ck_assert_msg(strncmp(body, "id=", 3) == 0 && !strstr(body, "\nid=") && strstr(body, "cmd=client"),
                  "one client left: %s", r);
    cli_close(&c);
    srv_stop_ok(&s);
}
END_TEST

/* A setting's place in the table, by name. */
static size_t key_index(const char *key)
{
    size_t i = 0;
    while (net_config_key(i) && strcmp(net_config_key(i), key) != 0)
        i++;
    ck_assert_ptr_nonnull(net_config_key(i));
    return i;
}

/* CONFIG HELP names every setting CONFIG SET takes, so the two cannot
 * drift apart: each setting is set to the value CONFIG GET shows, and one
 * refused for any reason but being fixed at start fails the test. */
START_TEST(config_help_names_live_settings)
{
    struct srv s;
    srv_start(&s, NULL);
    struct cli c;
    cli_open(&c, s.port);
    char *help = strdup(cmdf(&c, "CONFIG HELP"));
    ck_assert_ptr_nonnull(help);
    size_t live = 0;
    for (size_t i = 0; net_config_key(i); i++) {
        const char *key = net_config_key(i);
        char v[NET_CONFIG_VALUE_MAX], pat[64];
        const char *g = cmdf(&c, "CONFIG GET %s", key);
        ck_assert_msg(array_get(g, key, v, sizeof v), "CONFIG GET %s: %s", key, g);
        const char *r = cmdf(&c, "CONFIG SET %s \"%s\"", key, v);
        if (strstr(r, ": can only be set at start"))
            continue;
        ck_assert_msg(strcmp(r, "+OK\r\n") == 0, "CONFIG SET %s \"%s\": %s", key, v, r);
        live++;
        bool named = false;
        for (const char *e = ",.\r"; *e && !named; e++) {
            snprintf(pat, sizeof pat, " %s%c", key, *e);
            named = strstr(help, pat) != NULL;
        }
        ck_assert_msg(named, "CONFIG HELP does not name %s: %s", key, help);
    }
    ck_assert_uint_eq(live, 10);
    free(help);
    cli_close(&c);
    srv_stop_ok(&s);
}
END_TEST

/* Every setting reads back as text its flag takes, and that text sets the
 * same value again: what CONFIG GET and the start-up log show can be
 * pasted into a config file. */
START_TEST(config_values_round_trip)
{
    static const char *const vals[][2] = {
        {"bind", "::1"}, {"port", "1234"}, {"dir", "/var/lib/x y"}, {"history", "9"},
        {"session-ttl", "3600"}, {"snapshot-interval", "0"}, {"maxclients", "77"},
        {"requirepass", "p w"}, {"loglevel", "warn"}, {"http-port", "0"},
        {"trust-proxy", "yes"}, {"http-cors-origin", "*"}, {"query-buffer-limit", "2m"},
        {"client-output-limit", "4096"},
        {"snapshot-cpulist", "3,0-1,7-9"}, {"prefault", "no"}, {"maxmemory", "3g"},
        {"slowlog-log-slower-than", "-1"}, {"slowlog-max-len", "0"},
    };
    struct net_config a, b;
    net_config_defaults(&a);
    char err[256];
    static char v[NET_CONFIG_VALUE_MAX], w[NET_CONFIG_VALUE_MAX];
    size_t n = 0;
    while (net_config_key(n))
        n++;
    ck_assert_uint_eq(n, sizeof vals / sizeof vals[0]);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(net_config_set(&a, vals[i][0], vals[i][1], err, sizeof err) == NET_CFG_OK,
                      "%s", err);
    net_config_defaults(&b);
    for (size_t i = 0; i < n; i++) {
        net_config_value(&a, i, v, sizeof v);
        ck_assert_msg(net_config_set(&b, net_config_key(i), v, err, sizeof err) == NET_CFG_OK,
                      "%s = '%s': %s", net_config_key(i), v, err);
        net_config_value(&b, i, w, sizeof w);
        ck_assert_str_eq(v, w);
    }
    net_config_value(&a, key_index("snapshot-cpulist"), v, sizeof v);
    ck_assert_str_eq(v, "0-1,3,7-9");
    net_config_value(&a, key_index("query-buffer-limit"), v, sizeof v);
    ck_assert_str_eq(v, "2097152");
    /* too small a buffer: cut short, still terminated */
    net_config_value(&a, key_index("snapshot-cpulist"), v, 6);
    ck_assert_str_eq(v, "0-...");
    /* the defaults read back as values the flags take: "any", "" */
    net_config_defaults(&b);
    net_config_value(&b, key_index("snapshot-cpulist"), v, sizeof v);
    ck_assert_str_eq(v, "any");
    net_config_value(&b, key_index("requirepass"), v, sizeof v);
    ck_assert_str_eq(v, "");
    net_config_value(&b, n, v, sizeof v);
    ck_assert_str_eq(v, "");
    for (size_t i = 0; i < n; i++) {
        net_config_value(&b, i, v, sizeof v);
        ck_assert_msg(net_config_set(&a, net_config_key(i), v, err, sizeof err) == NET_CFG_OK,
                      "default %s = '%s': %s", net_config_key(i), v, err);
    }
    ck_assert(a.requirepass[0] == 0);
    net_config_value(&a, key_index("snapshot-cpulist"), v, sizeof v);
    ck_assert_str_eq(v, "any");
    /* the longest cpulist, every other CPU, fits NET_CONFIG_VALUE_MAX whole */
    static char list[NET_CONFIG_VALUE_MAX];
    size_t o = 0;
    for (unsigned cpu = 0; cpu < NET_CPUS_MAX; cpu += 2)
        o += (size_t)snprintf(list + o, sizeof list - o, "%s%u", cpu ? "," : "", cpu);
    ck_assert_msg(net_config_set(&a, "snapshot-cpulist", list, err, sizeof err) == NET_CFG_OK, "%s",
                  err);
    net_config_value(&a, key_index("snapshot-cpulist"), v, sizeof v);
    ck_assert_str_eq(v, list);
}
END_TEST

START_TEST(flags_and_config)
{
    static const struct { const char *args[6]; const char *msg; } bad[] = {
        {{"--port", "99999"}, "--port: must be an integer 0..65535"},
        {{"--port"}, "--port: missing value"},
        {{"--bogus", "1"}, "--bogus: unknown flag"},
        {{"stray"}, "stray: not a flag"},
        {{"--history", "0"}, "--history: must be an integer 1..65536"},
        {{"--session-ttl", "abc"}, "--session-ttl: must be an integer"},
        {{"--snapshot-interval", "-1"}, "--snapshot-interval: must be an integer"},
        {{"--maxclients", "0"}, "--maxclients: must be an integer"},
        {{"--loglevel", "loud"}, "--loglevel: must be debug, info or warn"},
        {{"--query-buffer-limit", "12q"}, "--query-buffer-limit: must be a size"},
        {{"--client-output-limit", "10"}, "--client-output-limit: must be a size"},
        {{"--http-port=70000"}, "--http-port: must be an integer 0..65535"},
        {{"--trust-proxy", "maybe"}, "--trust-proxy: must be yes or no"},
        {{"--http-cors-origin", "https://a https://b"}, "--http-cors-origin: must be * or one"},
        {{"--http-cors-origin", "https://a,https://b"}, "--http-cors-origin: must be * or one"},
        {{"--prefault", "sometimes"}, "--prefault: must be yes or no"},
        {{"--config", "/nonexistent/x.conf"}, "config /nonexistent/x.conf: No such file"},
        {{"--dir", ""}, "--dir: must be 1 to"},
        {{"--snapshot-cpulist", "x"}, "--snapshot-cpulist: must be CPU numbers 0..1023"},
        {{"--snapshot-cpulist", "3-1"}, "--snapshot-cpulist: must be CPU numbers"},
        {{"--snapshot-cpulist", "1024"}, "--snapshot-cpulist: must be CPU numbers"},
        {{"--snapshot-cpulist", "0,"}, "--snapshot-cpulist: must be CPU numbers"},
        {{"--snapshot-cpulist", "0,,1"}, "--snapshot-cpulist: must be CPU numbers"},
        {{"--snapshot-cpulist", "1-"}, "--snapshot-cpulist: must be CPU numbers"},
        {{"--snapshot-cpulist", "-1"}, "--snapshot-cpulist: must be CPU numbers"},
        {{"--snapshot-cpulist", "1 2"}, "--snapshot-cpulist: must be CPU numbers"},
        {{"--snapshot-cpulist", ""}, "--snapshot-cpulist: must be CPU numbers"},
        /* a flag where a value should be is a missing value, not the value */
        {{"--port", "--dir", "x"}, "--port: missing value"},
        {{"--bind", "--help"}, "--bind: missing value"},
        {{"--port", "7650", "--http-port", "7650"}, "--http-port: 7650 is --port too"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *out;
        int code = run_server_args(bad[i].args, &out);
        ck_assert_msg(code == 2, "%s: exit %d", bad[i].args[0], code);
        ck_assert_msg(out && strstr(out, bad[i].msg), "%s: got '%s' want '%s'", bad[i].args[0], out,
                      bad[i].msg);
        free(out);
    }
    char *out;
    const char *help[] = {"--help", NULL};
    ck_assert_int_eq(run_server_args(help, &out), 0);
    ck_assert_ptr_nonnull(strstr(out, "usage: shortstatd"));
    ck_assert_ptr_nonnull(strstr(out, "--snapshot-interval"));
    ck_assert_ptr_nonnull(strstr(out, "--snapshot-cpulist"));
    free(out);
    const char *ver[] = {"--version", NULL};
    ck_assert_int_eq(run_server_args(ver, &out), 0);
    ck_assert_ptr_nonnull(strstr(out, "shortstatd 0."));
    free(out);

    /* "-v" as a flag's value is that value (a password), not --version;
     * the start-up line names every setting, even after a long CPU list */
    struct srv v;
    char cpus[1024];
    size_t co = 0;
    for (int i = 0; i < 400; i += 2)
        co += (size_t)snprintf(cpus + co, sizeof cpus - co, "%s%d", i ? "," : "", i);
    const char *pv[] = {"--requirepass", "-v", "--snapshot-cpulist", cpus, NULL};
    srv_start(&v, pv);
    struct cli vc;
    cli_open(&vc, v.port);
    EXPECT(&vc, "+OK\r\n", "AUTH -v");
    cli_close(&vc);
    ck_assert(log_has(&v, ",396,398 prefault=yes maxmemory=0"));
    ck_assert(log_has(&v, "slowlog-max-len=128\n"));
    srv_stop_ok(&v);

    /* A config file; the command line wins over it. */
    struct srv s;
    memset(&s, 0, sizeof s);
    srv_init_dir(&s);
    char conf[128];
    snprintf(conf, sizeof conf, "%s/shortstatd.conf", s.dir);
    FILE *f = fopen(conf, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "# test config\n\nhistory 8\nsession_ttl 100\nmaxclients   77  \n"
               "requirepass \"two words\"\nloglevel debug\n");
    fclose(f);
    const char *args[] = {"--config", conf, "--history=16", NULL};
    srv_start_in(&s, args);
    struct cli c;
    cli_open(&c, s.port);
    EXPECT(&c, "+OK\r\n", "AUTH \"two words\"");
    ck_assert_int_eq(info_num(&c, "history"), 16);
    ck_assert_int_eq(info_num(&c, "session_ttl_s"), 100);
    ck_assert_int_eq(info_num(&c, "maxclients"), 77);
    cli_close(&c);
    ck_assert(log_has(&s, " debug "));  /* loglevel debug from the file */
    srv_stop_ok(&s);

    /* A bad line in the file names the file and the line. */
    memset(&s, 0, sizeof s);
    srv_init_dir(&s);
    snprintf(conf, sizeof conf, "%s/bad.conf", s.dir);
    f = fopen(conf, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "port 1\nhistory lots\n");
    fclose(f);
    const char *bargs[] = {"--config", conf, NULL};
    s.pid = spawn(&s, bargs);
    int st;
    waitpid(s.pid, &st, 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    ck_assert(log_has(&s, "line 2: history: must be an integer 1..65536"));
    /* an unclosed quote is an error, not part of the value */
    f = fopen(conf, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "history 8\nrequirepass \"abc\n");
    fclose(f);
    unlink(s.log);
    s.pid = spawn(&s, bargs);
    waitpid(s.pid, &st, 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    ck_assert(log_has(&s, "line 2: requirepass: unbalanced quotes"));
    srv_cleanup(&s);
    /* a UTF-8 byte-order mark before the first line is skipped */
    memset(&s, 0, sizeof s);
    srv_init_dir(&s);
    snprintf(conf, sizeof conf, "%s/bom.conf", s.dir);
    f = fopen(conf, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "\xef\xbb\xbfhistory 9\n");
    fclose(f);
    const char *margs[] = {"--config", conf, NULL};
    srv_start_in(&s, margs);
    cli_open(&c, s.port);
    ck_assert_int_eq(info_num(&c, "history"), 9);
    cli_close(&c);
    srv_stop_ok(&s);
}
END_TEST

/* CONFIG REWRITE: the running settings into the --config file, its
 * comments and order kept, read back by the next start; refused without a
 * file, and a failed write says why and changes nothing. */
START_TEST(config_rewrite)
{
    struct srv s;
    srv_start(&s, NULL);
    struct cli c;
    cli_open(&c, s.port);
    EXPECT(&c, "-ERR The server is running without a config file\r\n", "CONFIG REWRITE");
    EXPECT(&c, "-ERR wrong number of arguments for 'config|rewrite' command\r\n",
           "CONFIG REWRITE now");
    cli_close(&c);
    srv_stop_ok(&s);

    memset(&s, 0, sizeof s);
    srv_init_dir(&s);
    char sub[128], conf[160];
    snprintf(sub, sizeof sub, "%s/etc", s.dir);
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    snprintf(conf, sizeof conf, "%s/shortstat.conf", sub);
    FILE *f = fopen(conf, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "# ops: keep this\nmaxclients 77\n\n# memory\nmaxmemory 1g\n");
    fclose(f);
    const char *args[] = {"--config", conf, NULL};
    srv_start_in(&s, args);
    cli_open(&c, s.port);
    EXPECT(&c, "+OK\r\n", "CONFIG SET maxmemory 2g slowlog-max-len 9 requirepass \"p w\"");
    EXPECT(&c, "+OK\r\n", "CONFIG REWRITE");
    char *text = read_file(conf, NULL);
    ck_assert_msg(strncmp(text, "# ops: keep this\nmaxclients 77\n\n# memory\nmaxmemory 2g\n"
                                "# Generated by CONFIG REWRITE\n", 82) == 0 &&
                      strstr(text, "\nrequirepass \"p w\"\n") &&
                      strstr(text, "\nslowlog-max-len 9\n") &&
                      strstr(text, "\nsnapshot-interval 0\n"),  /* a flag's value runs too */
                  "%s", text);
    free(text);
    ck_assert(log_has(&s, "CONFIG REWRITE: "));
    ck_assert(!log_has(&s, "p w"));
    cli_close(&c);
    srv_term(&s);

    /* the next start runs with what was written */
    srv_start_in(&s, args);
    cli_open(&c, s.port);
    EXPECT(&c, "-NOAUTH Authentication required.\r\n", "CONFIG GET maxmemory");
    EXPECT(&c, "+OK\r\n", "AUTH \"p w\"");
    EXPECT(&c, "*2\r\n$9\r\nmaxmemory\r\n$10\r\n2147483648\r\n", "CONFIG GET maxmemory");
    EXPECT(&c, "*2\r\n$15\r\nslowlog-max-len\r\n$1\r\n9\r\n", "CONFIG GET slowlog-max-len");
    /* its directory gone: the reason, and nothing else changed */
    run_rmtree(sub);
    char want[400];
    snprintf(want, sizeof want,
             "-ERR Rewriting config file: %s: create: No such file or directory\r\n", conf);
    EXPECT(&c, want, "CONFIG REWRITE");
    ck_assert(log_has(&s, "CONFIG REWRITE failed: "));
    ck_assert(access(sub, F_OK) != 0);
    /* a file where its directory was: the file cannot even be read */
    FILE *blocker = fopen(sub, "w");
    ck_assert_ptr_nonnull(blocker);
    fclose(blocker);
    snprintf(want, sizeof want, "-ERR Rewriting config file: %s: Not a directory\r\n", conf);
    EXPECT(&c, want, "CONFIG REWRITE");
    unlink(sub);
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    /* a value no config line can hold */
    EXPECT(&c, "+OK\r\n", "CONFIG SET requirepass \"a\\nb\"");
    EXPECT(&c, "-ERR Rewriting config file: requirepass: the value holds a newline, which a "
               "config file cannot\r\n", "CONFIG REWRITE");
    ck_assert(access(conf, F_OK) != 0);  /* nothing written */
    cli_close(&c);
    srv_term(&s);

    /* the last step failing (the rename): the file as it was, no temp left */
    f = fopen(conf, "w");
    ck_assert_ptr_nonnull(f);
    fputs("# x\nmaxclients 5\n", f);
    fclose(f);
    s.deny = DENY_RENAME;
    srv_start_in(&s, args);
    cli_open(&c, s.port);
    EXPECT(&c, "+OK\r\n", "CONFIG SET maxclients 6");
    snprintf(want, sizeof want,
             "-ERR Rewriting config file: %s: rename: Operation not permitted\r\n", conf);
    EXPECT(&c, want, "CONFIG REWRITE");
    text = read_file(conf, NULL);
    ck_assert_str_eq(text, "# x\nmaxclients 5\n");
    free(text);
    ck_assert_int_eq(run_count_names(sub, "shortstat.conf."), 0);
    cli_close(&c);
    srv_term(&s);  /* its final snapshot cannot be renamed into place either */
    srv_cleanup(&s);
}
END_TEST

START_TEST(sigterm_flushes_and_exits_0)
{
    struct srv s;
    srv_start(&s, NULL);
    struct cli c;
    cli_open(&c, s.port);
    /* A pipeline is answered in full even when SIGTERM follows at once. */
    char *buf = malloc(2000 * 40);
    size_t o = 0;
    for (int i = 0; i < 2000; i++)
        o += (size_t)sprintf(buf + o, "TRACK 3 impression session=t%d\r\n", i);
    cli_send(&c, buf, o);
    free(buf);
    for (int i = 0; i < 2000; i++)
        ck_assert_str_eq(cli_reply(&c), "+OK\r\n");
    kill(s.pid, SIGTERM);
    ck_assert(cli_eof(&c));  /* the server closes its clients */
    cli_close(&c);
    int st;
    ck_assert_int_eq(waitpid(s.pid, &st, 0), s.pid);
    s.pid = 0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char *l = read_file(s.log, NULL);
        ck_abort_msg("exit status %d; log:\n%s", st, l ? l : "");
    }
    ck_assert(log_has(&s, "received SIGTERM: shutting down"));
    ck_assert(log_has(&s, "shutdown complete"));
    srv_cleanup(&s);

    /* SIGINT too, with nothing to save. */
    srv_start(&s, NULL);
    kill(s.pid, SIGINT);
    ck_assert_int_eq(wait_exit(&s), 0);
    ck_assert(log_has(&s, "no final snapshot needed"));
    srv_cleanup(&s);

    /* SIGTERM during start-up: a FIFO in the snapshot's place holds the
     * load in open() for as long as the test likes. */
    memset(&s, 0, sizeof s);
    srv_init_dir(&s);
    char fifo[128];
    snprintf(fifo, sizeof fifo, "%s/%s", s.dir, SNAP_FILE);
    ck_assert_int_eq(mkfifo(fifo, 0644), 0);
    const char *args[] = {"--port", "0", "--dir", s.dir, NULL};
    s.pid = spawn(&s, args);
    ck_assert(wait_log(&s, "loading snapshot"));
    pid_t spid = s.pid;
    kill(s.pid, SIGTERM);
    int code = wait_exit(&s);
    char *l = read_file(s.log, NULL);
    ck_assert_msg(code == 0, "exit %d; log:\n%s", code, l);
    const char *line = strstr(l, "received SIGTERM during start-up: exiting without saving");
    ck_assert_msg(line, "log:\n%s", l);
    ck_assert_ptr_null(strstr(l, "listening on"));
    /* The line is the logger's own format, with the right time. */
    while (line > l && line[-1] != '\n')
        line--;
    struct tm tm = {0};
    int ms = -1, pid = 0;
    char lvl[8] = "";
    ck_assert_int_eq(sscanf(line, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ %d %7s", &tm.tm_year, &tm.tm_mon,
                            &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &pid, lvl),
                     9);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    ck_assert_int_lt(llabs((long long)(timegm(&tm) - time(NULL))), 60);
    ck_assert(ms >= 0 && ms <= 999);
    ck_assert_int_eq(pid, spid);
    ck_assert_str_eq(lvl, "info");
    ck_assert_ptr_nonnull(strstr(line, " info  received"));
    free(l);
    struct stat sb;
    ck_assert_int_eq(stat(fifo, &sb), 0);  /* the snapshot's place is as it was */
    ck_assert(S_ISFIFO(sb.st_mode));
    /* SIGINT (a terminal's ^C) the same way */
    unlink(s.log);
    s.pid = spawn(&s, args);
    ck_assert(wait_log(&s, "loading snapshot"));
    kill(s.pid, SIGINT);
    ck_assert_int_eq(wait_exit(&s), 0);
    ck_assert(log_has(&s, "received SIGINT during start-up: exiting without saving"));
    srv_cleanup(&s);
}
END_TEST

/* ---- snapshots ------------------------------------------------------------------------------ */

START_TEST(snapshot_across_restart)
{
    struct srv s;
    srv_start(&s, NULL);
    struct cli c;
    cli_open(&c, s.port);
    for (int i = 0; i < 300; i++)
        EXPECT(&c, "+OK\r\n", "TRACK %d %s session=r%d user=%d ts=%d ua=\"ua %d\"%s",
               i % 17 + 1, i % 3 ? "impression" : "view", i % 40, i % 9 + 1, 1700000000 + i,
               i % 4, i % 3 ? "" : " watch_ms=1234");
    EXPECT(&c, "+OK\r\n", "BOOST 5 60");
    char *stats = strdup(cmdf(&c, "STATS 5"));
    char *top = strdup(cmdf(&c, "TOP 10"));
    char *hist = strdup(cmdf(&c, "HISTORY SESSION r7"));
    char *uhist = strdup(cmdf(&c, "HISTORY USER 4 50"));
    cli_close(&c);
    int st = srv_term(&s);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
    ck_assert(log_has(&s, "final snapshot saved"));
    char path[128];
    snprintf(path, sizeof path, "%s/%s", s.dir, SNAP_FILE);
    ck_assert_int_eq(access(path, R_OK), 0);

    srv_start_in(&s, NULL);
    ck_assert(log_has(&s, "loaded snapshot"));
    cli_open(&c, s.port);
    ck_assert_str_eq(cmdf(&c, "STATS 5"), stats);
    ck_assert_str_eq(cmdf(&c, "TOP 10"), top);
    ck_assert_str_eq(cmdf(&c, "HISTORY SESSION r7"), hist);
    ck_assert_str_eq(cmdf(&c, "HISTORY USER 4 50"), uhist);
    ck_assert_int_eq(info_num(&c, "interactions_total"), 300);
    ck_assert_int_eq(info_num(&c, "loaded_snapshot"), 1);
    /* the loaded file is the newest good snapshot on disk */
    ck_assert_int_gt(info_num(&c, "last_snapshot_unix"), 0);
    /* Unchanged since the load: no final snapshot needed. */
    cli_close(&c);
    free(stats);
    free(top);
    free(hist);
    free(uhist);
    st = srv_term(&s);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ck_assert(log_has(&s, "no final snapshot needed"));
    srv_cleanup(&s);
}
END_TEST

START_TEST(snapshot_command)
{
    struct srv s;
    srv_start(&s, NULL);
    struct cli c;
    cli_open(&c, s.port);
    EXPECT(&c, "+OK\r\n", "TRACK 1 view session=a watch_ms=5");
    /* Two in one read: the child cannot have been reaped in between. */
    cli_sends(&c, "SNAPSHOT\r\nSNAPSHOT\r\n");
    ck_assert_str_eq(cli_reply(&c), "+Snapshot started\r\n");
    ck_assert_str_eq(cli_reply(&c), "-ERR snapshot already in progress\r\n");
    EXPECT(&c, "+OK\r\n", "TRACK 1 view session=b");  /* serving while the child writes */
    wait_snapshot_done(&c);
    ck_assert(info_has(&c, "last_snapshot_status:ok"));
    ck_assert_int_gt(info_num(&c, "last_snapshot_bytes"), 0);
    ck_assert_int_gt(info_num(&c, "last_snapshot_unix"), 0);
    ck_assert_int_ge(info_num(&c, "last_fork_usec"), 1);
    ck_assert_int_eq(info_num(&c, "snapshots_total"), 1);
    /* One change (session=b) came after the fork. */
    ck_assert_int_eq(info_num(&c, "changes_since_last_snapshot"), 1);
    char path[128];
    snprintf(path, sizeof path, "%s/%s", s.dir, SNAP_FILE);
    struct snap_header h;
    struct snap_err e;
    ck_assert_int_eq(snap_verify(path, &h, &e), SNAP_OK);

    /* A failing snapshot: the target name is taken by a directory. Logged,
     * shown in INFO, the server keeps serving, and the next one succeeds. */
    unlink(path);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    long long good_at = info_num(&c, "last_snapshot_unix");
    sleep_ms(1100);  /* a new time would show */
    EXPECT(&c, "+Snapshot started\r\n", "SNAPSHOT");
    wait_snapshot_done(&c);
    ck_assert(info_has(&c, "last_snapshot_status:err"));
    ck_assert(info_has(&c, "last_snapshot_error:I/O error: "));
    ck_assert(info_has(&c, "Is a directory"));
    ck_assert_int_eq(info_num(&c, "snapshots_failed"), 1);
    /* the age of the last good snapshot keeps growing: an alert on it fires */
    ck_assert_int_eq(info_num(&c, "last_snapshot_unix"), good_at);
    EXPECT(&c, "+PONG\r\n", "PING");
    ck_assert(log_has(&s, "failed: I/O error: "));
    rmdir(path);
    EXPECT(&c, "+Snapshot started\r\n", "SNAPSHOT");
    wait_snapshot_done(&c);
    ck_assert(info_has(&c, "last_snapshot_status:ok"));
    ck_assert_int_eq(info_num(&c, "changes_since_last_snapshot"), 0);
    /* a BOOST on its own is a change the next snapshot must carry */
    EXPECT(&c, "+OK\r\n", "BOOST 1 50");
    ck_assert_int_eq(info_num(&c, "changes_since_last_snapshot"), 1);
    EXPECT(&c, "+Snapshot started\r\n", "SNAPSHOT");
    wait_snapshot_done(&c);
    ck_assert_int_eq(info_num(&c, "changes_since_last_snapshot"), 0);

    /* Redis's BGSAVE and LASTSAVE, for backup scripts written for Redis:
     * LASTSAVE is INFO's last_snapshot_unix, and moves when one succeeds */
    long long last = info_num(&c, "last_snapshot_unix");
    char lastsave[32];
    snprintf(lastsave, sizeof lastsave, ":%lld\r\n", last);
    EXPECT(&c, lastsave, "LASTSAVE");
    EXPECT(&c, "+OK\r\n", "TRACK 1 view session=c");
    sleep_ms(1100);
    cli_sends(&c, "BGSAVE\r\nBGSAVE\r\nBGSAVE SCHEDULE\r\nINFO persistence\r\n");
    ck_assert_str_eq(cli_reply(&c), "+Background saving started\r\n");
    ck_assert_str_eq(cli_reply(&c), "-ERR Background save already in progress\r\n");
    ck_assert_str_eq(cli_reply(&c), "+Background saving scheduled\r\n");
    ck_assert_msg(strstr(cli_reply(&c), "snapshot_scheduled:1\r\n"), "%s", c.last);
    /* the scheduled one follows when the first ends: two more in all */
    wait_info_ge(&c, "snapshots_total", 6);
    wait_snapshot_done(&c);
    ck_assert_int_eq(info_num(&c, "snapshots_total"), 6);
    ck_assert(info_has(&c, "snapshot_scheduled:0"));
    const char *ls = cmdf(&c, "LASTSAVE");
    ck_assert_msg(ls[0] == ':' && atoll(ls + 1) > last, "LASTSAVE %s, before %lld", ls, last);
    ck_assert_int_eq(atoll(ls + 1), info_num(&c, "last_snapshot_unix"));
    EXPECT(&c, "-ERR syntax error\r\n", "BGSAVE LATER");
    EXPECT(&c, "-ERR wrong number of arguments for 'lastsave' command\r\n", "LASTSAVE 1");
    EXPECT(&c, "+Background saving started\r\n", "BGSAVE SCHEDULE");  /* none running */
    wait_snapshot_done(&c);
    cli_close(&c);
    assert_alive(&s);
    srv_stop_ok(&s);
}
END_TEST

/* SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE] [ABORT], as Redis answers it. */
START_TEST(shutdown_command)
{
    struct srv s;
    srv_start(&s, NULL);
    struct cli c, other;
    cli_open(&c, s.port);
    cli_open(&other, s.port);
    EXPECT(&c, "-ERR syntax error\r\n", "SHUTDOWN SAVE NOSAVE");
    EXPECT(&c, "-ERR syntax error\r\n", "SHUTDOWN ABORT NOW");
    EXPECT(&c, "-ERR syntax error\r\n", "SHUTDOWN LATER");
    EXPECT(&c, "-ERR No shutdown in progress.\r\n", "SHUTDOWN ABORT");
    EXPECT(&c, "+OK\r\n", "MULTI");
    EXPECT(&c, "-ERR Command not allowed inside a transaction\r\n", "SHUTDOWN");
    EXPECT(&c, "+OK\r\n", "DISCARD");
    EXPECT(&c, "+OK\r\n", "TRACK 5 view session=a watch_ms=10");

    /* A failed final snapshot is answered, and the server goes on. */
    char path[128];
    snprintf(path, sizeof path, "%s/%s", s.dir, SNAP_FILE);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    EXPECT(&c, "-ERR Errors trying to SHUTDOWN. Check logs.\r\n", "SHUTDOWN");
    ck_assert(info_has(&c, "last_snapshot_status:err"));
    EXPECT(&c, "+OK\r\n", "TRACK 5 view session=b");
    EXPECT(&c, "+PONG\r\n", "PING");
    rmdir(path);

    /* Replies produced before it are sent, to every client; the caller
     * gets none for SHUTDOWN itself, and the state is saved. */
    cli_sends(&other, "TRACK 5 save session=c\r\n");
    ck_assert_str_eq(cli_reply(&other), "+OK\r\n");
    cli_sends(&c, "STATS 5\r\nSHUTDOWN NOW\r\nPING\r\n");
    const char *r = cli_reply(&c);
    ck_assert_msg(r && r[0] == '*', "%s", r ? r : "EOF");
    ck_assert(cli_eof(&c));
    ck_assert(cli_eof(&other));
    cli_close(&c);
    cli_close(&other);
    ck_assert_int_eq(wait_exit(&s), 0);
    ck_assert(log_has(&s, "SHUTDOWN NOW from client 127.0.0.1:"));
    ck_assert(log_has(&s, ": shutting down"));
    ck_assert(log_has(&s, "final snapshot saved"));
    srv_start_in(&s, NULL);
    cli_open(&c, s.port);
    expect_stat(&c, 5, "views", "2");
    expect_stat(&c, 5, "saves", "1");

    /* NOSAVE leaves the snapshot as it was. */
    EXPECT(&c, "+OK\r\n", "TRACK 5 view session=d");
    ck_assert_int_eq(shutdown_by(&s, &c, "shutdown nosave"), 0);
    ck_assert(log_has(&s, "SHUTDOWN NOSAVE: changes since the last snapshot not saved: 1"));
    srv_start_in(&s, NULL);
    cli_open(&c, s.port);
    expect_stat(&c, 5, "views", "2");

    /* SAVE saves with nothing changed; FORCE goes on after a failed save
     * and exits 1, since changes were lost. */
    ck_assert_int_eq(shutdown_by(&s, &c, "SHUTDOWN SAVE"), 0);
    ck_assert(log_has(&s, "final snapshot saved"));
    srv_start_in(&s, NULL);
    cli_open(&c, s.port);
    EXPECT(&c, "+OK\r\n", "TRACK 6 view session=e");
    unlink(path);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    ck_assert_int_eq(shutdown_by(&s, &c, "SHUTDOWN NOW FORCE"), 1);
    ck_assert(log_has(&s, "SHUTDOWN NOW FORCE from client"));
    ck_assert(log_has(&s, "final snapshot to"));
    ck_assert(log_has(&s, "changes since the last good snapshot lost: 1"));
    ck_assert(log_has(&s, "shutdown complete (exit 1)"));
    rmdir(path);
    srv_cleanup(&s);
}
END_TEST

/* --snapshot-cpulist pins the child; a list naming no CPU of this machine
 * is logged and the child runs unpinned. Either way the snapshot is good. */
START_TEST(snapshot_cpulist)
{
    static const char *const lists[] = {"0", "0-1,5", "1000-1023"};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        struct srv s;
        const char *args[] = {"--snapshot-cpulist", lists[i], NULL};
        srv_start(&s, args);
        struct cli c;
        cli_open(&c, s.port);
        EXPECT(&c, "+OK\r\n", "TRACK 1 view session=a watch_ms=5");
        EXPECT(&c, "+Snapshot started\r\n", "SNAPSHOT");
        wait_snapshot_done(&c);
        ck_assert_msg(info_has(&c, "last_snapshot_status:ok"), "list %s", lists[i]);
        cli_close(&c);
        if (i == 1)
            ck_assert(log_has(&s, "snapshot-cpulist=0-1,5 "));
        if (i == 2)
            ck_assert(log_has(&s, "--snapshot-cpulist: Invalid argument; running unpinned"));
        else
            ck_assert(!log_has(&s, "running unpinned"));
        char path[128];
        snprintf(path, sizeof path, "%s/%s", s.dir, SNAP_FILE);
        struct snap_header h;
        struct snap_err e;
        ck_assert_int_eq(snap_verify(path, &h, &e), SNAP_OK);
        srv_stop_ok(&s);
    }
}
END_TEST

/* Send n TRACKs with sessions of their own (q<first> to q<first + n - 1>,
 * on shorts 1 to 5000) in one write and read the OKs. */
static void track_many_from(struct cli *c, size_t n, size_t first)
{
    char *buf = malloc(n * 64);
    ck_assert_ptr_nonnull(buf);
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        o += (size_t)sprintf(buf + o, "TRACK %zu impression session=q%zu\r\n", i % 5000 + 1,
                             first + i);
    cli_send(c, buf, o);
    free(buf);
    for (size_t oks = 0; oks < n;) {
        size_t k = 0;
        while (k + 5 <= c->len && memcmp(c->buf + k, "+OK\r\n", 5) == 0)
            k += 5;
        if (k) {
            memmove(c->buf, c->buf + k, c->len - k);
            c->len -= k;
            oks += k / 5;
        }
        if (oks < n) {
            ck_assert_msg(c->len < 5, "unexpected reply: %.40s", (const char *)c->buf);
            ck_assert_msg(cli_fill(c), "closed after %zu replies", oks);
        }
    }
}

static void track_many(struct cli *c, size_t n)
{
    track_many_from(c, n, 0);
}

/* State ('R', 'S', 'T', 'Z', ...) and parent of process `pid` (decimal),
 * from /proc/<pid>/stat; false when there is no such process. */
static bool proc_stat(const char *pid, char *state, int *ppid)
{
    char path[300], buf[512];
    snprintf(path, sizeof path, "/proc/%s/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');  /* "pid (comm) state ppid ..." */
    return p && sscanf(p + 1, " %c %d", state, ppid) == 2;
}

/* A child process of parent, or 0. */
static pid_t child_of(pid_t parent)
{
    DIR *d = opendir("/proc");
    ck_assert_ptr_nonnull(d);
    pid_t found = 0;
    char state;
    int ppid;
    for (struct dirent *de; !found && (de = readdir(d));)
        if (de->d_name[0] >= '1' && de->d_name[0] <= '9' &&
            proc_stat(de->d_name, &state, &ppid) && ppid == (int)parent)
            found = (pid_t)atoi(de->d_name);
    closedir(d);
    return found;
}

/* The state of pid; 0 when the process is gone. */
static char proc_state(pid_t pid)
{
    char name[24], state;
    int ppid;
    snprintf(name, sizeof name, "%d", (int)pid);
    return proc_stat(name, &state, &ppid) ? state : 0;
}

/* A snapshot child that outlived a crashed server would rename its stale
 * file over whatever a newer server (or a restore) saved meanwhile: it
 * dies with its parent. The child is caught and stopped mid-snapshot, the
 * server killed with SIGKILL, and the child let go: it must die without
 * writing its file. */
/* Starts SNAPSHOTs until one's child is caught running and stopped
 * (SIGSTOP); returns its pid. */
static pid_t stopped_snapshot_child(const struct srv *s, struct cli *c)
{
    pid_t child = 0;
    for (int attempt = 0; attempt < 50 && !child; attempt++) {
        EXPECT(c, "+Snapshot started\r\n", "SNAPSHOT");
        for (int i = 0; i < 20000 && !(child = child_of(s->pid)); i++)
            usleep(50);
        if (child && kill(child, SIGSTOP) == 0) {
            /* stopped, or finished first (a zombie, or already reaped) */
            char st = proc_state(child);
            for (long long end = run_mono_ms() + RUN_WAIT_MS;
                 st != 'T' && st != 'Z' && st != 0 && run_mono_ms() < end; st = proc_state(child))
                usleep(1000);
            if (st != 'T')
                child = 0;  /* it finished first: try again */
        } else {
            child = 0;
        }
        if (!child)
            wait_snapshot_done(c);
    }
    ck_assert_msg(child, "never caught a snapshot child running");
    return child;
}

/* What the snapshot-child tests start from: a client on s, n sessions
 * recorded, and a snapshot child caught running and stopped. */
static pid_t load_and_stop_child(const struct srv *s, struct cli *c, int n)
{
    cli_open(c, s->port);
    track_many(c, n);
    return stopped_snapshot_child(s, c);
}

static void assert_child_gone(pid_t child)
{
    char state = proc_state(child);
    ck_assert_msg(state == 0 || state == 'Z', "the snapshot child outlived shutdown (%c)", state);
}

/* dir's snapshot is whole, holds `sessions` sessions, and no temp file is
 * left beside it; its header in *h. */
static void assert_snapshot(const char *dir, uint64_t sessions, struct snap_header *h)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, SNAP_FILE);
    struct snap_err e;
    ck_assert_int_eq(snap_verify(path, h, &e), SNAP_OK);
    ck_assert_uint_eq(h->counts.sessions, sessions);
    int tmp = run_count_names(dir, ".tmp.");
    ck_assert_msg(tmp == 0, "%d temp file(s) left in %s", tmp, dir);
}

START_TEST(snapshot_child_dies_with_server)
{
    struct srv s;
    srv_start(&s, NULL);
    struct cli c;
    pid_t child = load_and_stop_child(&s, &c, 20000);
    char path[128];
    snprintf(path, sizeof path, "%s/%s", s.dir, SNAP_FILE);
    unlink(path);  /* whatever an earlier attempt saved */
    cli_close(&c);
    kill(s.pid, SIGKILL);
    ck_assert_int_eq(waitpid(s.pid, NULL, 0), s.pid);
    s.pid = 0;
    kill(child, SIGCONT);
    char st = proc_state(child);
    for (long long end = run_mono_ms() + RUN_WAIT_MS; st != 0 && st != 'Z' && run_mono_ms() < end;
         st = proc_state(child))
        usleep(10000);
    if (st != 0 && st != 'Z')
        kill(child, SIGKILL);
    ck_assert_msg(st == 0 || st == 'Z', "the snapshot child outlived its server (state %c)", st);
    ck_assert_msg(access(path, F_OK) != 0, "the orphaned child wrote its snapshot");
    srv_cleanup(&s);
}
END_TEST

/* SIGTERM while a snapshot child is still writing (here: stopped, as if
 * stuck on a hung disk): the server stops it rather than wait, and its
 * final snapshot holds everything. */
START_TEST(shutdown_stops_a_running_snapshot)
{
    struct srv s;
    srv_start(&s, NULL);
    struct cli c;
    pid_t child = load_and_stop_child(&s, &c, 20000);
    cli_close(&c);
    int st = srv_term(&s);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
    ck_assert(log_has(&s, "stopping the running snapshot"));
    ck_assert(log_has(&s, "final snapshot saved"));
    assert_child_gone(child);
    struct snap_header h, h0;
    assert_snapshot(s.dir, 20000, &h);

    /* SHUTDOWN NOSAVE stops it too: the snapshot on disk stays the one
     * there when the child was caught (an earlier try may have saved one;
     * NOSAVE must not), and the child leaves no temp file behind. */
    srv_start_in(&s, NULL);
    child = load_and_stop_child(&s, &c, 5000);
    char path[128];
    struct snap_err e;
    snprintf(path, sizeof path, "%s/%s", s.dir, SNAP_FILE);
    ck_assert_int_eq(snap_verify(path, &h0, &e), SNAP_OK);  /* its temp file is beside it */
    /* Changes after the child was caught, in sessions of their own: no
     * snapshot holds them (load_and_stop_child's 5000 reuse the first
     * 20000's sessions), so a final snapshot NOSAVE wrongly wrote would
     * hold 25000 sessions, not 20000. */
    track_many_from(&c, 5000, 20000);
    ck_assert_int_eq(info_num(&c, "sessions"), 25000);
    ck_assert_int_eq(shutdown_by(&s, &c, "SHUTDOWN NOSAVE"), 0);
    char want[96];
    snprintf(want, sizeof want, "stopping the running snapshot (child %d): SHUTDOWN NOSAVE",
             (int)child);
    ck_assert(log_has(&s, want));
    assert_child_gone(child);
    assert_snapshot(s.dir, 20000, &h);
    ck_assert_int_eq(h.created_ms, h0.created_ms);
    srv_cleanup(&s);
}
END_TEST

/* A snapshot child that dies of a signal: the failure is in INFO and the
 * log with the signal, the server serves on, and the next one succeeds. */
START_TEST(snapshot_child_killed)
{
    struct srv s;
    srv_start(&s, NULL);
    struct cli c;
    pid_t child = load_and_stop_child(&s, &c, 20000);
    ck_assert_int_eq(kill(child, SIGKILL), 0);
    wait_snapshot_done(&c);
    ck_assert(info_has(&c, "last_snapshot_status:err"));
    ck_assert(info_has(&c, "last_snapshot_error:child killed by signal 9"));
    ck_assert_int_eq(info_num(&c, "snapshots_failed"), 1);
    ck_assert(log_has(&s, "failed: child killed by signal 9\n"));  /* no interval: no retry */
    EXPECT(&c, "+OK\r\n", "TRACK 1 view session=after");
    EXPECT(&c, "+Snapshot started\r\n", "SNAPSHOT");
    wait_snapshot_done(&c);
    ck_assert(info_has(&c, "last_snapshot_status:ok"));
    ck_assert(info_has(&c, "last_snapshot_error:\r\n"));
    cli_close(&c);
    srv_stop_ok(&s);
}
END_TEST

/* How many lines of the server's log hold needle. */
static int log_count(const struct srv *s, const char *needle)
{
    char *l = read_file(s->log, NULL);
    int n = 0;
    for (const char *p = l; p && (p = strstr(p, needle)); p += strlen(needle))
        n++;
    free(l);
    return n;
}

/* A snapshot that cannot start, for want of a fork (the system is out of
 * processes, or of memory for the copy's page tables) or of a pipe:
 * SNAPSHOT and BGSAVE say why, it counts as a failed snapshot and is
 * logged once, nothing is lost, the final save (no fork) still works, and
 * the interval timer retries on its own. */
START_TEST(snapshot_fork_fails)
{
    struct srv s;
    memset(&s, 0, sizeof s);
    s.deny = DENY_FORK;
    srv_start_in(&s, NULL);
    struct cli c;
    cli_open(&c, s.port);
    for (int i = 0; i < 50; i++)
        EXPECT(&c, "+OK\r\n", "TRACK 7 view session=f%d watch_ms=1000", i);
    const char *why = "fork: Resource temporarily unavailable";
    char want[128];
    snprintf(want, sizeof want, "-ERR snapshot: %s\r\n", why);
    EXPECT(&c, want, "SNAPSHOT");
    EXPECT(&c, want, "BGSAVE");
    EXPECT(&c, want, "BGSAVE SCHEDULE");
    ck_assert(info_has(&c, "snapshot_in_progress:0"));
    ck_assert(info_has(&c, "last_snapshot_status:err"));
    snprintf(want, sizeof want, "last_snapshot_error:%s", why);
    ck_assert(info_has(&c, want));
    ck_assert_int_eq(info_num(&c, "snapshots_failed"), 3);
    ck_assert_int_eq(info_num(&c, "snapshots_total"), 3);
    ck_assert_int_eq(info_num(&c, "last_snapshot_unix"), 0);
    ck_assert_int_eq(log_count(&s, why), 3);  /* once each */
    /* nothing was lost or stopped */
    EXPECT(&c, "+OK\r\n", "TRACK 7 view session=f50 watch_ms=1000");
    ck_assert_int_eq(info_num(&c, "interactions_total"), 51);
    cli_close(&c);
    int st = srv_term(&s);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
    ck_assert(log_has(&s, "final snapshot saved"));

    /* the timer's attempts fail the same way, each logged with its retry */
    const char *every_second[] = {"--snapshot-interval", "1", NULL};
    srv_start_in(&s, every_second);
    cli_open(&c, s.port);
    ck_assert_int_eq(info_num(&c, "interactions_total"), 51);
    EXPECT(&c, "+OK\r\n", "TRACK 7 view session=g watch_ms=1000");
    snprintf(want, sizeof want, "snapshot: %s (retried at the next interval)", why);
    for (long long end = run_mono_ms() + RUN_WAIT_MS;
         log_count(&s, want) < 2 && run_mono_ms() < end;)
        sleep_ms(5);
    ck_assert_int_ge(log_count(&s, want), 2);
    ck_assert_int_ge(info_num(&c, "snapshots_failed"), 2);
    cli_close(&c);
    ck_assert_int_eq(srv_term(&s), 0);  /* exited 0: the final save works */

    /* no pipe for the child's report: the same, with that reason */
    s.deny = DENY_PIPE;
    srv_start_in(&s, NULL);
    cli_open(&c, s.port);
    EXPECT(&c, "-ERR snapshot: pipe: Too many open files\r\n", "SNAPSHOT");
    ck_assert(info_has(&c, "last_snapshot_error:pipe: Too many open files"));
    ck_assert_int_eq(info_num(&c, "snapshots_failed"), 1);
    ck_assert_int_eq(info_num(&c, "snapshots_total"), 1);
    ck_assert_int_eq(log_count(&s, "snapshot: pipe: Too many open files"), 1);
    ck_assert_int_eq(info_num(&c, "interactions_total"), 52);
    cli_close(&c);
    srv_stop_ok(&s);
}
END_TEST

/* Out of file descriptors at accept(): the server pauses accepting for
 * 100 ms at a time instead of spinning, says so at most once a second, and
 * stays up: a SIGTERM still saves and exits 0. */
START_TEST(accept_fails_pauses)
{
    struct srv s;
    memset(&s, 0, sizeof s);
    s.deny = DENY_ACCEPT;
    srv_start_in(&s, NULL);
    long long t0 = run_mono_ms();  /* no pause can come before the connection */
    int fd = tcp_connect(s.port);  /* the kernel completes it; the server cannot take it */
    ck_assert(wait_log(&s, "accept: Too many open files; pausing accepts for 100 ms"));
    sleep_ms(250);  /* two or three more pauses, inside the same second */
    /* at most a line a second: 2 when all this took under a second, as it
     * does unless the machine is loaded, one more for each further second
     * (a line for every pause would be ten a second) */
    int lines = log_count(&s, "pausing accepts");
    long long took = run_mono_ms() - t0;
    ck_assert_msg(lines <= 2 + took / 1000, "%d lines in %lld ms", lines, took);
    /* every pause lasts its 100 ms, the second one too (a fired one-shot
     * timer restarted without its delay spun): the next line, a second or
     * so after the first, counts about ten, never thousands */
    const char *what = "pausing accepts for 100 ms (";
    for (long long end = run_mono_ms() + RUN_WAIT_MS;
         log_count(&s, what) < 2 && run_mono_ms() < end;)
        sleep_ms(10);
    ck_assert_int_ge(log_count(&s, what), 2);
    long long more = log_num_after(&s, what);
    ck_assert_msg(more >= 1 && more <= 30, "pauses between two log lines: %lld", more);
    close(fd);
    ck_assert_int_eq(srv_term(&s), 0);
    srv_cleanup(&s);
}
END_TEST

/* The engine's fresh memory is faulted in by the idle-priority thread
 * (INFO prefault_bytes grows), snapshots still work (their child has no
 * such thread), and --prefault no turns it off. */
/* Whether this kernel has MADV_POPULATE_WRITE (Linux 5.14), asked
 * independently of the server. */
static bool populate_supported(void)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    void *a = mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert(a != MAP_FAILED);
    bool ok = madvise(a, pg, 23 /* MADV_POPULATE_WRITE */) == 0;
    munmap(a, pg);
    return ok;
}

START_TEST(prefault_on_and_off)
{
    struct srv s;
    srv_start(&s, NULL);
    struct cli c;
    cli_open(&c, s.port);
    if (!populate_supported()) {  /* an older kernel: the server says so and runs without */
        ck_assert(info_has(&c, "prefault:no"));
        cli_close(&c);
        ck_assert(log_has(&s, "--prefault: cannot start its thread"));
        srv_stop_ok(&s);
        return;
    }
    ck_assert(info_has(&c, "prefault:yes"));
    track_many(&c, 150000);  /* ~20 MB: pool chunks reach 2 MiB, tables pass 1 MiB */
    /* SCHED_IDLE: it runs when the loop (and the runner) let it */
    ck_assert_int_gt(wait_info_ge(&c, "prefault_bytes", 1), 0);
    EXPECT(&c, "+Snapshot started\r\n", "SNAPSHOT");
    wait_snapshot_done(&c);
    ck_assert(info_has(&c, "last_snapshot_status:ok"));
    ck_assert_int_eq(info_num(&c, "interactions_total"), 150000);
    cli_close(&c);
    ck_assert(log_has(&s, " prefault=yes"));
    srv_stop_ok(&s);

    const char *off[] = {"--prefault", "no", NULL};
    srv_start(&s, off);
    cli_open(&c, s.port);
    track_many(&c, 150000);
    ck_assert(info_has(&c, "prefault:no"));
    ck_assert_int_eq(info_num(&c, "prefault_bytes"), 0);
    cli_close(&c);
    ck_assert(log_has(&s, " prefault=no"));
    srv_stop_ok(&s);
}
END_TEST

START_TEST(snapshot_interval)
{
    struct srv s;
    const char *args[] = {"--snapshot-interval", "1", NULL};
    srv_start(&s, args);
    /* --snapshot-interval given twice: the last one (1 s) wins over "0". */
    struct cli c;
    cli_open(&c, s.port);
    EXPECT(&c, "+OK\r\n", "TRACK 4 save session=i");
    ck_assert_int_eq(info_num(&c, "snapshot_interval_s"), 1);
    for (long long end = run_mono_ms() + RUN_WAIT_MS;
         !info_has(&c, "last_snapshot_status:ok") && run_mono_ms() < end;)
        sleep_ms(20);
    ck_assert(info_has(&c, "last_snapshot_status:ok"));
    cli_close(&c);
    srv_stop_ok(&s);
}
END_TEST

START_TEST(corrupt_snapshot_refused)
{
    /* Make a real snapshot, then damage it. */
    struct srv s;
    srv_start(&s, NULL);
    struct cli c;
    cli_open(&c, s.port);
    for (int i = 0; i < 50; i++)
        EXPECT(&c, "+OK\r\n", "TRACK %d view session=k%d", i + 1, i);
    cli_close(&c);
    int st = srv_term(&s);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char path[128];
    snprintf(path, sizeof path, "%s/%s", s.dir, SNAP_FILE);
    size_t len;
    char *orig = read_file(path, &len);
    ck_assert_ptr_nonnull(orig);
    ck_assert_uint_gt(len, 16);

    const struct { size_t at; bool truncate; } damage[] = {{0, false}, {len / 2, false},
                                                           {len - 1, false}, {len / 2, true}};
    for (size_t d = 0; d < sizeof damage / sizeof damage[0]; d++) {
        FILE *f = fopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        if (damage[d].truncate) {
            fwrite(orig, 1, damage[d].at, f);
        } else {
            fwrite(orig, 1, len, f);
            fseek(f, (long)damage[d].at, SEEK_SET);
            fputc(orig[damage[d].at] ^ 0x5a, f);
        }
        fclose(f);
        size_t blen;
        char *before = read_file(path, &blen);
        unlink(s.log);
        const char *args[] = {"--port", "0", "--dir", s.dir, NULL};
        s.pid = spawn(&s, args);
        ck_assert_int_eq(waitpid(s.pid, &st, 0), s.pid);
        s.pid = 0;
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) != 0, "damage %zu: server started", d);
        ck_assert_msg(log_has(&s, path) && log_has(&s, "offset") && log_has(&s, "refusing"),
                      "damage %zu: log lacks file/offset", d);
        size_t alen;
        char *after = read_file(path, &alen);
        ck_assert(after && alen == blen && memcmp(after, before, blen) == 0);
        free(before);
        free(after);
    }
    free(orig);
    srv_cleanup(&s);
}
END_TEST

/* ---- edges: half-close, limits at the edges, start-up failures ------------------------- */

START_TEST(half_close_gets_replies)
{
    struct srv s;
    srv_start(&s, NULL);
    struct cli c;
    cli_open(&c, s.port);
    cli_sends(&c, "PING\r\nTRACK 1 view session=hc\r\nSTATS 1\r\n");
    ck_assert_int_eq(shutdown(c.fd, SHUT_WR), 0);  /* what nc -N does at end of input */
    ck_assert_str_eq(cli_reply(&c), "+PONG\r\n");
    ck_assert_str_eq(cli_reply(&c), "+OK\r\n");
    const char *r = cli_reply(&c);
    ck_assert_msg(r && strncmp(r, "*30\r\n", 5) == 0, "%s", r ? r : "(closed)");
    ck_assert(cli_eof(&c));
    cli_close(&c);
    assert_alive(&s);
    srv_stop_ok(&s);
}
END_TEST

START_TEST(multi_too_large)
{
    struct srv s;
    const char *args[] = {"--query-buffer-limit", "2k", NULL};
    srv_start(&s, args);
    struct cli c;
    cli_open(&c, s.port);
    EXPECT(&c, "+OK\r\n", "MULTI");
    int queued = 0;
    for (;;) {
        const char *r = cmdf(&c, "TRACK 1 view session=big%d", queued);
        if (strcmp(r, "+QUEUED\r\n") != 0) {
            ck_assert_str_eq(r, "-ERR transaction too large (query-buffer-limit)\r\n");
            break;
        }
        ck_assert_int_lt(++queued, 1000);
    }
    ck_assert_int_gt(queued, 0);
    EXPECT_ERR(&c, "-EXECABORT", "EXEC");
    expect_stat(&c, 1, "views", "0");
    /* a queued command is counted with its own bytes: one of 1.5 KB fits the
     * 2 KB limit, a second is refused before it is stored, not after */
    char arg[1501];
    memset(arg, 'e', 1500);
    arg[1500] = 0;
    EXPECT(&c, "+OK\r\n", "MULTI");
    EXPECT(&c, "+QUEUED\r\n", "ECHO %s", arg);
    EXPECT(&c, "-ERR transaction too large (query-buffer-limit)\r\n", "ECHO %s", arg);
    EXPECT_ERR(&c, "-EXECABORT", "EXEC");
    cli_close(&c);
    assert_alive(&s);
    srv_stop_ok(&s);
}
END_TEST

/* SIGTERM while a client holds megabytes of unread replies: the server
 * waits a bounded time for it, then closes it and still exits 0. A second
 * SIGTERM during that wait is logged and changes nothing. */
START_TEST(shutdown_with_stuck_client)
{
    enum { FLUSH_MS = 3000 };  /* net/server.c's SHUTDOWN_FLUSH_TIMEOUT */
    struct srv s;
    srv_start(&s, NULL);
    int fd = tcp_connect(s.port);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    size_t argl = 60000;
    char *cmd = malloc(argl + 64);
    ck_assert_ptr_nonnull(cmd);
    int h = sprintf(cmd, "*2\r\n$4\r\nECHO\r\n$%zu\r\n", argl);
    memset(cmd + h, 'w', argl);
    memcpy(cmd + h + argl, "\r\n", 2);
    for (int i = 0; i < 200; i++)  /* 12 MB of replies it will never read */
        ck_assert_int_eq(send(fd, cmd, (size_t)h + argl + 2, MSG_NOSIGNAL), (ssize_t)h + argl + 2);
    free(cmd);
    struct cli c;
    cli_open(&c, s.port);
    ck_assert_int_gt(wait_info_ge(&c, "pending_output_bytes", 1), 0);
    cli_close(&c);
    long long t0 = run_mono_ms();
    kill(s.pid, SIGTERM);
    /* the second SIGTERM as soon as the first is seen handled (before
     * that, the two could merge into one pending signal): the wait, which
     * began after t0, has most of its 3 s to run */
    for (long long end = t0 + RUN_WAIT_MS; !log_has(&s, "received SIGTERM: shutting down");) {
        ck_assert_msg(run_mono_ms() < end, "the first SIGTERM never logged");
        sleep_ms(1);
    }
    kill(s.pid, SIGTERM);
    long long late = run_mono_ms() - t0;
    /* bounded: a server that never ends the wait fails here, with its log */
    int st = 0;
    bool exited = run_reap(s.pid, t0 + FLUSH_MS + RUN_WAIT_MS - run_mono_ms(), &st);
    long long took = run_mono_ms() - t0;
    char *l = read_file(s.log, NULL);
    if (!exited) {
        run_kill(&s.pid);
        ck_abort_msg("still running %lld ms after SIGTERM; log:\n%s", took, l);
    }
    s.pid = 0;
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    ck_assert_msg(code == 0, "exit %d; log:\n%s", code, l);
    /* the second SIGTERM did not cut the wait short (load only lengthens
     * it; the margin is libev's loop time, read before the signal came) */
    ck_assert_msg(took >= FLUSH_MS - 100, "exited %lld ms after SIGTERM, inside the %d ms wait; "
                  "log:\n%s", took, FLUSH_MS, l);
    const char *first = strstr(l, "received SIGTERM: shutting down");
    const char *again = strstr(l, "received SIGTERM again during shutdown; still finishing");
    const char *stuck = strstr(l, "still had unsent replies");
    ck_assert_msg(stuck, "log:\n%s", l);
    ck_assert_msg(!strstr(first + 1, "received SIGTERM: shutting down"),  /* begun once */
                  "log:\n%s", l);
    /* Sent well inside the wait, the second is logged during it. Only
     * when this process was held off the CPU most of the wait may the
     * signal find the loop already done: ignored then (the exit is still
     * 0, checked above), so it need not be logged, but never after. */
    if (late < FLUSH_MS / 2)
        ck_assert_msg(again && again < stuck,
                      "second SIGTERM %lld ms after the first, in the wait; log:\n%s", late, l);
    else
        ck_assert_msg(!again || again < stuck, "log:\n%s", l);
    free(l);
    close(fd);
    srv_cleanup(&s);
}
END_TEST

START_TEST(startup_failures)
{
    /* --dir names a file. */
    struct srv s;
    memset(&s, 0, sizeof s);
    srv_init_dir(&s);
    char file[128];
    snprintf(file, sizeof file, "%s/plain", s.dir);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    const char *a1[] = {"--port", "0", "--dir", file, NULL};
    ck_assert_int_eq(srv_run_to_exit(&s, a1), 1);
    ck_assert(log_has(&s, "not a directory"));
    /* Only one level of a missing --dir is created. */
    char deep[128];
    snprintf(deep, sizeof deep, "%s/no/such", s.dir);
    const char *a0[] = {"--port", "0", "--dir", deep, NULL};
    ck_assert_int_eq(srv_run_to_exit(&s, a0), 1);
    ck_assert(log_has(&s, "/no/such: No such file or directory"));
    /* A missing --dir is created. */
    char sub[128];
    snprintf(sub, sizeof sub, "%s/new", s.dir);
    const char *a2[] = {"--dir", sub, NULL};
    srv_start_in(&s, a2);
    ck_assert(log_has(&s, "created data directory"));
    struct stat st;
    ck_assert_int_eq(stat(sub, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    /* A second server on the same --dir is refused: the two would overwrite
     * each other's snapshots. */
    struct srv t;
    memset(&t, 0, sizeof t);
    const char *a3[] = {"--port", "0", "--snapshot-interval", "0", "--dir", sub, NULL};
    ck_assert_int_eq(srv_run_to_exit(&t, a3), 1);
    char want[192];
    snprintf(want, sizeof want, "%s is in use by process %d", sub, (int)s.pid);
    ck_assert(log_has(&t, want));
    srv_cleanup(&t);
    /* A second server on the same port cannot listen. */
    char port[16];
    snprintf(port, sizeof port, "%d", s.port);
    memset(&t, 0, sizeof t);
    srv_init_dir(&t);
    const char *a4[] = {"--port", port, "--snapshot-interval", "0", "--dir", t.dir, NULL};
    ck_assert_int_eq(srv_run_to_exit(&t, a4), 1);
    ck_assert(log_has(&t, "cannot listen"));
    srv_cleanup(&t);
    srv_stop_ok(&s);
    /* An address that does not resolve. */
    memset(&t, 0, sizeof t);
    srv_init_dir(&t);
    const char *a5[] = {"--port", "0", "--bind", "999.1.1.1", "--dir", t.dir, NULL};
    ck_assert_int_eq(srv_run_to_exit(&t, a5), 1);
    ck_assert(log_has(&t, "bind 999.1.1.1"));
    srv_cleanup(&t);
}
END_TEST

START_TEST(fd_limit_clamps_maxclients)
{
    struct srv s;
    memset(&s, 0, sizeof s);
    s.nofile = 128;
    srv_start_in(&s, NULL);
    ck_assert(log_has(&s, "open file limit 128 is too low for --maxclients 10000; using maxclients 64"));
    struct cli c;
    cli_open(&c, s.port);
    ck_assert_int_eq(info_num(&c, "maxclients"), 64);
    cli_close(&c);
    srv_stop_ok(&s);
}
END_TEST

START_TEST(config_edge_errors)
{
    struct srv s;
    memset(&s, 0, sizeof s);
    srv_init_dir(&s);
    char conf[128];
    snprintf(conf, sizeof conf, "%s/c.conf", s.dir);
    static const struct { const char *body; const char *msg; } bad[] = {
        {"config other.conf\n", "line 1: config: cannot nest config files"},
        {"# fine\nfrobnicate 3\n", "line 2: frobnicate: unknown setting"},
        {"requirepass \"\"\nport\n", "line 2: port: missing value"},  /* empty is "" */
        {"port x\n", "line 1: port: must be an integer 0..65535"},
        {"query-buffer-limit 99999999999999999999\n", "query-buffer-limit: must be a size"},
        {"client-output-limit 2t\n", "client-output-limit: must be a size"},
        {"snapshot-cpulist 0-2000\n", "line 1: snapshot-cpulist: must be CPU numbers"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        FILE *f = fopen(conf, "w");
        ck_assert_ptr_nonnull(f);
        fputs(bad[i].body, f);
        fclose(f);
        const char *args[] = {"--config", conf, NULL};
        ck_assert_int_eq(srv_run_to_exit(&s, args), 2);
        ck_assert_msg(log_has(&s, bad[i].msg), "case %zu: want '%s'", i, bad[i].msg);
    }
    /* A directory for a file: the system's reason */
    {
        const char *args[] = {"--config", s.dir, NULL};
        ck_assert_int_eq(srv_run_to_exit(&s, args), 2);
        char want[200];
        snprintf(want, sizeof want, "config %s: Is a directory", s.dir);
        ck_assert_msg(log_has(&s, want), "want '%s'", want);
    }
    /* A line longer than the reader's buffer (which holds the longest
     * value, a cpulist of every other CPU, quoted). */
    FILE *f = fopen(conf, "w");
    ck_assert_ptr_nonnull(f);
    fputs("requirepass ", f);
    for (int i = 0; i < 6000; i++)
        fputc('p', f);
    fputc('\n', f);
    fclose(f);
    const char *args[] = {"--config", conf, NULL};
    ck_assert_int_eq(srv_run_to_exit(&s, args), 2);
    ck_assert(log_has(&s, "line 1: line too long"));
    /* A password over 512 bytes on the command line. */
    char pw[600];
    memset(pw, 'x', sizeof pw - 1);
    pw[sizeof pw - 1] = 0;
    const char *a2[] = {"--requirepass", pw, NULL};
    ck_assert_int_eq(srv_run_to_exit(&s, a2), 2);
    ck_assert(log_has(&s, "--requirepass: must be at most 512 characters"));
    const char *a3[] = {"--config=", NULL};
    ck_assert_int_eq(srv_run_to_exit(&s, a3), 2);
    ck_assert(log_has(&s, "--config: must name a file"));
    srv_cleanup(&s);
}
END_TEST

/* ---- the engine out of memory (the server in this process) --------------------------- */

/* Starts the server in this process on a fresh --dir, the line protocol on
 * a kernel-chosen port (sv->port); with http, HTTP on a port free now,
 * which it returns (else 0). --port 0 may draw that same number, and HTTP's
 * bind then fails: the start is tried again. */
static int inproc_start(struct srv *sv, bool http)
{
    ck_assert_msg(!inproc, "a server already runs in this process");
    memset(sv, 0, sizeof *sv);
    run_mkdtemp(sv->dir, sizeof sv->dir, "inproc");
    snprintf(inproc_dir, sizeof inproc_dir, "%s", sv->dir);
    net_log_set_level(NET_LOG_WARN);  /* the log is the test's own stderr */
    for (int attempt = 1;; attempt++) {
        struct net_config cfg;
        net_config_defaults(&cfg);
        cfg.port = 0;
        cfg.http_port = http ? run_free_port() : 0;
        cfg.snapshot_interval_s = 0;
        cfg.prefault = false;
        snprintf(cfg.dir, sizeof cfg.dir, "%s", sv->dir);
        struct server *s = calloc(1, sizeof *s);  /* large: not on the stack */
        ck_assert_ptr_nonnull(s);
        if (net_server_init(s, &cfg) == 0) {
            inproc = s;
            sv->port = (int)s->port;
            return (int)cfg.http_port;
        }
        net_server_destroy(s);
        free(s);
        ck_assert_msg(http && attempt < 10, "the server did not start in-process (attempt %d)",
                      attempt);
    }
}

/* Stops the in-process server, if one runs, and removes its --dir. */
static void inproc_drop(void)
{
    if (inproc) {
        net_server_destroy(inproc);
        free(inproc);
        inproc = NULL;
    }
    if (inproc_dir[0])
        run_rmtree(inproc_dir);
    inproc_dir[0] = 0;
}

/* Verifies the engine, stops the server and removes its --dir (the test's
 * exit then has ASan check both for leaks). */
static void inproc_stop(struct srv *sv)
{
    verify_ok(inproc->eng);
    inproc_drop();
    sv->dir[0] = 0;
}

/* A server started in this process after another was destroyed takes
 * SIGTERM as a clean shutdown: the first one's signal watchers must not
 * outlive it in libev's process-wide lists (net_server_destroy stops
 * them), or the second's ev_signal_start finds the list not empty and
 * leaves start-up's handler, which exits at once, in place of libev's. */
START_TEST(inproc_restart_keeps_signals)
{
    struct srv sv;
    struct sigaction first, now;
    inproc_start(&sv, false);
    ck_assert_int_eq(sigaction(SIGTERM, NULL, &first), 0);  /* libev's */
    inproc_stop(&sv);
    inproc_start(&sv, false);
    ck_assert_int_eq(sigaction(SIGTERM, NULL, &now), 0);
    ck_assert_msg(now.sa_handler == first.sa_handler,
                  "the second server's SIGTERM handler is not libev's");
    kill(getpid(), SIGTERM);  /* safe now: libev's handler only wakes the loop */
    for (long long end = run_mono_ms() + RUN_WAIT_MS;
         !inproc->shutting_down && run_mono_ms() < end;)
        ev_run(inproc->loop, EVRUN_NOWAIT);
    ck_assert(inproc->shutting_down);
    inproc_stop(&sv);
}
END_TEST

/* What an engine failure must move, or leave alone, as INFO shows it. */
enum {
    OC_INTERACTIONS,  /* interactions_total */
    OC_DIRTY,         /* changes_since_last_snapshot */
    OC_ERRORS,        /* total_error_replies */
    OC_OOM_REFUSED,   /* oom_refused: --maxmemory's, which an engine failure is not */
    OC_ERR, OC_EXECABORT,  /* errorstats */
    OC_TRACK_CALLS, OC_TRACK_REJECTED, OC_TRACK_FAILED,  /* commandstats */
    OC_BOOST_CALLS, OC_BOOST_REJECTED, OC_BOOST_FAILED,
    OC_EXEC_CALLS, OC_EXEC_REJECTED, OC_EXEC_FAILED,
    OC_N
};
static const char *const oc_names[OC_N] = {
    "interactions_total", "changes_since_last_snapshot", "total_error_replies", "oom_refused",
    "errorstat_ERR", "errorstat_EXECABORT", "track calls", "track rejected_calls",
    "track failed_calls", "boost calls", "boost rejected_calls", "boost failed_calls",
    "exec calls", "exec rejected_calls", "exec failed_calls",
};
struct oomc {
    long long v[OC_N];
};

static long long errorstat(struct cli *c, const char *code)
{
    const char *r = cmdf(c, "INFO errorstats");
    char pat[64];
    snprintf(pat, sizeof pat, "\r\nerrorstat_%s:count=", code);
    const char *p = strstr(r, pat);
    return p ? atoll(p + strlen(pat)) : 0;
}

static void oomc_read(struct cli *c, struct oomc *k)
{
    k->v[OC_INTERACTIONS] = info_num(c, "interactions_total");
    k->v[OC_DIRTY] = info_num(c, "changes_since_last_snapshot");
    k->v[OC_ERRORS] = info_num(c, "total_error_replies");
    k->v[OC_OOM_REFUSED] = info_num(c, "oom_refused");
    k->v[OC_ERR] = errorstat(c, "ERR");
    k->v[OC_EXECABORT] = errorstat(c, "EXECABORT");
    cmdstat_counts(c, "track", &k->v[OC_TRACK_CALLS]);
    cmdstat_counts(c, "boost", &k->v[OC_BOOST_CALLS]);
    cmdstat_counts(c, "exec", &k->v[OC_EXEC_CALLS]);
}

/* INFO now says before + delta, every figure. */
static void oomc_expect(struct cli *c, const struct oomc *before, const struct oomc *delta,
                        uint64_t nth)
{
    struct oomc now;
    oomc_read(c, &now);
    for (int i = 0; i < OC_N; i++)
        ck_assert_msg(now.v[i] == before->v[i] + delta->v[i],
                      "failing from allocation %llu: %s is %lld, want %lld + %lld",
                      (unsigned long long)nth, oc_names[i], now.v[i], before->v[i], delta->v[i]);
}

#define NOMEM "-ERR memory: out of memory\r\n"
#define NOT_APPLIED "-ERR not applied: memory: out of memory\r\n"

/* A fresh in-process server and a client of it: each out-of-memory attempt
 * has its own, so the tables the allocations before the failing one grew
 * are not there already for the next attempt, which then fails the next
 * allocation point rather than one further along. */
struct oomsrv {
    struct srv sv;
    struct eng *e;
    int hport;  /* HTTP's port, 0 without */
    struct cli a;
};

static void oomsrv_start(struct oomsrv *o, bool http)
{
    o->hport = inproc_start(&o->sv, http);
    o->e = inproc->eng;
    cli_open(&o->a, o->sv.port);
}

static void oomsrv_stop(struct oomsrv *o)
{
    cli_close(&o->a);
    inproc_stop(&o->sv);
}

/* The attempt failing from allocation nth on (or only at it) saw the
 * command through without a failure: the allocation points before it,
 * nth - 1, were each failed by an attempt of its own. Asserts that the
 * command, succeeding, made just those allocations (had it survived a
 * failure, or had an earlier attempt left tables grown, the attempts would
 * have ended early) and at least min, the count measured on a fresh server
 * when the test was written: a change that has the test reach fewer points
 * fails here (one that makes the engine allocate less lowers min). Returns
 * the count. */
static uint64_t enomem_points(const char *what, uint64_t nth, uint64_t allocs, uint64_t min)
{
    ck_assert_msg(allocs == nth - 1,
                  "%s: went through failing from allocation %llu on, with %llu allocations",
                  what, (unsigned long long)nth, (unsigned long long)allocs);
    ck_assert_msg(nth - 1 >= min, "%s: %llu allocation points reached, want at least %llu", what,
                  (unsigned long long)(nth - 1), (unsigned long long)min);
    return nth - 1;
}

/* A write for enomem_one: a command on the line port, or a POST on HTTP's. */
struct enomem_cmd {
    const char *line;
    const char *path, *body;
    const char *ok, *err;  /* its replies, succeeding and out of memory (HTTP's: "code body") */
    struct oomc fail;      /* what INFO moves when it fails */
    struct {
        uint64_t id;
        const char *key;
        long long want;
    } stats[2];            /* STATS once it succeeded (id 0: none) */
    long long interactions, changes;  /* INFO's then */
    void (*then)(struct oomsrv *o, bool failed);  /* more checks then, or NULL */
    uint64_t min_points;   /* enomem_points' min */
};

/* c's reply on o's server (HTTP's as "code body"); the caller frees it. */
static char *enomem_send(struct oomsrv *o, const struct enomem_cmd *c)
{
    char *r;
    if (c->line) {
        r = strdup(cmdf(&o->a, "%s", c->line));
        ck_assert_ptr_nonnull(r);
        return r;
    }
    char *resp = http_req(o->hport, c->path, c->body);
    const char *body = strstr(resp, "\r\n\r\n");
    ck_assert_msg(body && strncmp(resp, "HTTP/1.1 ", 9) == 0, "%s", resp);
    ck_assert_int_ge(asprintf(&r, "%.3s %s", resp + 9, body + 4), 0);
    free(resp);
    return r;
}

/* c with the engine out of memory from each of its allocations on, each
 * on a fresh server; lasting, as a real shortage is (cmd.c's one-by-one
 * retry of what its batch could not apply fails as well). It answers
 * c->err, the engine's digest is unchanged and eng_verify passes, INFO
 * moves by c->fail alone, and the same write sent again then succeeds on
 * that server. Once it has (the attempt failing past its last allocation
 * at once), STATS and INFO show it recorded once. */
static void enomem_one(const struct enomem_cmd *c)
{
    const char *what = c->line ? c->line : c->path;
    for (uint64_t nth = 1;; nth++) {
        ck_assert_uint_lt(nth, 1000);
        struct oomsrv o;
        oomsrv_start(&o, c->line == NULL);
        struct oomc k0;
        oomc_read(&o.a, &k0);
        uint64_t d0 = eng_digest(o.e), a0 = eng_test_allocs(o.e);
        eng_test_fail_allocs_from(o.e, nth);
        char *r = enomem_send(&o, c);
        eng_test_fail_alloc(o.e, 0);
        uint64_t allocs = eng_test_allocs(o.e) - a0;
        bool failed = strcmp(r, c->ok) != 0;
        if (failed) {
            ck_assert_msg(strcmp(r, c->err) == 0, "%s failing from allocation %llu: %s", what,
                          (unsigned long long)nth, r);
            ck_assert_uint_eq(eng_digest(o.e), d0);
            verify_ok(o.e);
            oomc_expect(&o.a, &k0, &c->fail, nth);
            free(r);
            r = enomem_send(&o, c);
            ck_assert_msg(strcmp(r, c->ok) == 0, "%s sent again after it failed from allocation "
                          "%llu: %s", what, (unsigned long long)nth, r);
        }
        free(r);
        for (int i = 0; i < 2 && c->stats[i].id; i++) {
            long long v = stat_num(&o.a, c->stats[i].id, c->stats[i].key);
            ck_assert_msg(v == c->stats[i].want, "%s, failing from allocation %llu: STATS %llu %s "
                          "is %lld, want %lld", what, (unsigned long long)nth,
                          (unsigned long long)c->stats[i].id, c->stats[i].key, v, c->stats[i].want);
        }
        ck_assert_int_eq(info_num(&o.a, "interactions_total"), c->interactions);
        ck_assert_int_eq(info_num(&o.a, "changes_since_last_snapshot"), c->changes);
        if (c->then)
            c->then(&o, failed);
        oomsrv_stop(&o);
        if (!failed) {
            enomem_points(what, nth, allocs, c->min_points);
            return;
        }
    }
}

/* TRACK with the engine out of memory: -ERR memory: out of memory,
 * nothing recorded, one failed call and one ERR counted and no --maxmemory
 * refusal; the connection goes on and the same TRACK is then recorded. */
START_TEST(enomem_track)
{
    enomem_one(&(struct enomem_cmd){
        /* new session, user, platform and agent: each a table to grow */
        .line = "TRACK 7 share session=s1 user=1 platform=p1 ua=a1",
        .ok = "+OK\r\n", .err = NOMEM,
        .fail = {.v = {[OC_ERRORS] = 1, [OC_ERR] = 1, [OC_TRACK_CALLS] = 1,
                       [OC_TRACK_FAILED] = 1}},
        .stats = {{7, "shares", 1}},
        .interactions = 1, .changes = 1,
        .min_points = 16,
    });
}
END_TEST

/* A pipelined run of TRACKs, which cmd.c applies as one engine batch, with
 * the engine out of memory: each TRACK still answers for itself, and what
 * answered +OK is exactly what was recorded -- once, also when the failure
 * passes and the retry succeeds (then every TRACK answers +OK). Both kinds
 * of failure reach the same allocation points. */
START_TEST(enomem_track_run)
{
    static const char run[] = "TRACK 21 view session=r1 watch_ms=10\r\nTRACK 22 view user=1\r\n"
                              "TRACK 23 view session=q1 ua=b1\r\n";
    uint64_t points[2] = {0, 0};
    int refused = 0;
    for (int lasting = 0; lasting < 2; lasting++) {
        const char *what = lasting ? "a run, a lasting failure" : "a run, a passing failure";
        for (uint64_t nth = 1; !points[lasting]; nth++) {
            ck_assert_uint_lt(nth, 1000);
            struct oomsrv o;
            oomsrv_start(&o, false);
            struct oomc k0;
            oomc_read(&o.a, &k0);
            long long v0[3];
            for (int i = 0; i < 3; i++)
                v0[i] = stat_num(&o.a, 21 + (uint64_t)i, "views");
            uint64_t a0 = eng_test_allocs(o.e);
            if (lasting)
                eng_test_fail_allocs_from(o.e, nth);
            else
                eng_test_fail_alloc(o.e, nth);
            cli_sends(&o.a, run);
            char rep[3][64];
            for (int i = 0; i < 3; i++) {
                const char *r = cli_reply(&o.a);
                ck_assert_ptr_nonnull(r);
                snprintf(rep[i], sizeof rep[i], "%s", r);
            }
            eng_test_fail_alloc(o.e, 0);
            uint64_t allocs = eng_test_allocs(o.e) - a0;
            long long oks = 0;
            for (int i = 0; i < 3; i++) {
                bool ok = strcmp(rep[i], "+OK\r\n") == 0;
                ck_assert_msg(ok || (lasting && strcmp(rep[i], NOMEM) == 0),
                              "%s from allocation %llu: TRACK %d answered %s", what,
                              (unsigned long long)nth, 21 + i, rep[i]);
                ck_assert_int_eq(stat_num(&o.a, 21 + (uint64_t)i, "views"), v0[i] + ok);
                oks += ok;
            }
            verify_ok(o.e);
            oomc_expect(&o.a, &k0,
                        &(struct oomc){.v = {[OC_INTERACTIONS] = oks, [OC_DIRTY] = oks,
                                             [OC_ERRORS] = 3 - oks, [OC_ERR] = 3 - oks,
                                             [OC_TRACK_CALLS] = 3, [OC_TRACK_FAILED] = 3 - oks}},
                        nth);
            oomsrv_stop(&o);
            if (allocs < nth)  /* the failure was not reached */
                points[lasting] = enomem_points(what, nth, allocs, 17);
            refused += oks < 3;
        }
    }
    ck_assert_uint_eq(points[0], points[1]);
    ck_assert_int_gt(refused, 0);
}
END_TEST

/* The short is held now: its BOOST needs no memory at all. */
static void boost_then(struct oomsrv *o, bool failed)
{
    eng_test_fail_allocs_from(o->e, 1);
    EXPECT(&o->a, "+OK\r\n", "BOOST 9 6");
    eng_test_fail_alloc(o->e, 0);
    ck_assert_int_eq(stat_num(&o->a, 9, "boost"), 6);
    ck_assert_int_eq(info_num(&o->a, "changes_since_last_snapshot"), 2);
}

/* BOOST of a short the engine does not hold, out of memory: -ERR memory:
 * out of memory and the short still unknown. A held short's BOOST needs no
 * memory at all. */
START_TEST(enomem_boost)
{
    enomem_one(&(struct enomem_cmd){
        .line = "BOOST 9 5",
        .ok = "+OK\r\n", .err = NOMEM,
        .fail = {.v = {[OC_ERRORS] = 1, [OC_ERR] = 1, [OC_BOOST_CALLS] = 1,
                       [OC_BOOST_FAILED] = 1}},
        .stats = {{9, "boost", 5}},
        .interactions = 0, .changes = 1,
        .then = boost_then,
        .min_points = 3,
    });
}
END_TEST

/* EXEC of writes alone, out of memory at EXEC: EXECABORT naming the TRACK
 * at fault, or none when the failure is the batch's own (the room reserved
 * for new shorts, the batch's scratch); nothing applied, the BOOST queued
 * after the TRACKs included; EXEC and every write counted failed. */
START_TEST(enomem_exec)
{
    static const char abort_[] = "-EXECABORT Transaction discarded: ";
    int seen_batch = 0, seen_track[2] = {0, 0};
    for (uint64_t nth = 1;; nth++) {
        ck_assert_uint_lt(nth, 1000);
        struct oomsrv o;
        oomsrv_start(&o, false);
        struct oomc k0;
        oomc_read(&o.a, &k0);  /* before MULTI, which would queue INFO */
        EXPECT(&o.a, "+OK\r\n", "MULTI");
        EXPECT(&o.a, "+QUEUED\r\n", "TRACK 31 view session=x1");
        EXPECT(&o.a, "+QUEUED\r\n", "TRACK 32 share user=1 platform=q1");
        EXPECT(&o.a, "+QUEUED\r\n", "BOOST 33 4");
        uint64_t d0 = eng_digest(o.e), a0 = eng_test_allocs(o.e);
        eng_test_fail_allocs_from(o.e, nth);
        const char *r = cmdf(&o.a, "EXEC");
        eng_test_fail_alloc(o.e, 0);
        uint64_t allocs = eng_test_allocs(o.e) - a0;
        if (strcmp(r, "*3\r\n+OK\r\n+OK\r\n+OK\r\n") == 0) {
            ck_assert_int_eq(stat_num(&o.a, 31, "views"), 1);
            ck_assert_int_eq(stat_num(&o.a, 32, "shares"), 1);
            ck_assert_int_eq(stat_num(&o.a, 33, "boost"), 4);
            ck_assert_int_eq(info_num(&o.a, "interactions_total"), 2);
            ck_assert_int_eq(info_num(&o.a, "changes_since_last_snapshot"), 3);
            oomsrv_stop(&o);
            enomem_points("EXEC of writes", nth, allocs, 16);
            break;
        }
        const char *why = strncmp(r, abort_, sizeof abort_ - 1) == 0 ? r + sizeof abort_ - 1 : "";
        if (strcmp(why, "memory: out of memory\r\n") == 0)
            seen_batch++;
        else if (strcmp(why, "TRACK #1: memory: out of memory\r\n") == 0)
            seen_track[0]++;
        else if (strcmp(why, "TRACK #2: memory: out of memory\r\n") == 0)
            seen_track[1]++;
        else
            ck_abort_msg("failing from allocation %llu: EXEC answered %s", (unsigned long long)nth,
                         r);
        ck_assert_uint_eq(eng_digest(o.e), d0);
        verify_ok(o.e);
        oomc_expect(&o.a, &k0,
                    &(struct oomc){.v = {[OC_ERRORS] = 1, [OC_EXECABORT] = 1,
                                         [OC_TRACK_CALLS] = 2, [OC_TRACK_FAILED] = 2,
                                         [OC_BOOST_CALLS] = 1, [OC_BOOST_FAILED] = 1,
                                         [OC_EXEC_CALLS] = 1, [OC_EXEC_FAILED] = 1}},
                    nth);
        oomsrv_stop(&o);
    }
    ck_assert_msg(seen_batch && seen_track[0] && seen_track[1],
                  "aborts seen: batch %d, TRACK #1 %d, TRACK #2 %d", seen_batch, seen_track[0],
                  seen_track[1]);
}
END_TEST

/* EXEC with a query between its writes: each run of writes is its own
 * batch, all or nothing. Out of memory, a failing batch's writes answer
 * errors in EXEC's array (the TRACK at fault its own, the rest 'not
 * applied'), the batch before it stays applied, and EXEC itself is a call
 * that did not fail. */
START_TEST(enomem_exec_mixed)
{
    int second_only = 0, both = 0, own = 0;
    for (uint64_t nth = 1;; nth++) {
        ck_assert_uint_lt(nth, 1000);
        struct oomsrv o;
        oomsrv_start(&o, false);
        struct oomc k0;
        oomc_read(&o.a, &k0);
        long long v41 = stat_num(&o.a, 41, "views"), v43 = stat_num(&o.a, 43, "shares");
        EXPECT(&o.a, "+OK\r\n", "MULTI");
        EXPECT(&o.a, "+QUEUED\r\n", "TRACK 41 view session=m1");
        EXPECT(&o.a, "+QUEUED\r\n", "BOOST 42 3");
        EXPECT(&o.a, "+QUEUED\r\n", "PING");
        /* new session, user, platform and agent: a long stretch of
         * allocations in the second batch alone */
        EXPECT(&o.a, "+QUEUED\r\n", "TRACK 43 share session=n1 user=1 platform=r1 ua=c1");
        uint64_t a0 = eng_test_allocs(o.e);
        eng_test_fail_allocs_from(o.e, nth);
        const char *r = cmdf(&o.a, "EXEC");
        eng_test_fail_alloc(o.e, 0);
        uint64_t allocs = eng_test_allocs(o.e) - a0;
        /* the array's four replies, each one line */
        char el[4][64];
        ck_assert_msg(strncmp(r, "*4\r\n", 4) == 0, "failing from allocation %llu: %s",
                      (unsigned long long)nth, r);
        const char *p = r + 4;
        for (int i = 0; i < 4; i++) {
            const char *nl = strstr(p, "\r\n");
            ck_assert_ptr_nonnull(nl);
            snprintf(el[i], sizeof el[i], "%.*s", (int)(nl + 2 - p), p);
            p = nl + 2;
        }
        ck_assert_str_eq(el[2], "+PONG\r\n");
        bool ok1 = strcmp(el[0], "+OK\r\n") == 0, ok2 = strcmp(el[3], "+OK\r\n") == 0;
        if (ok1)
            ck_assert_str_eq(el[1], "+OK\r\n");  /* all or nothing */
        else
            ck_assert_msg((strcmp(el[0], NOMEM) == 0 || strcmp(el[0], NOT_APPLIED) == 0) &&
                              strcmp(el[1], NOT_APPLIED) == 0,
                          "failing from allocation %llu: %s", (unsigned long long)nth, r);
        ck_assert_msg(ok2 || strcmp(el[3], NOMEM) == 0 || strcmp(el[3], NOT_APPLIED) == 0,
                      "failing from allocation %llu: %s", (unsigned long long)nth, r);
        ck_assert_int_eq(stat_num(&o.a, 41, "views"), v41 + ok1);
        ck_assert_int_eq(stat_num(&o.a, 42, "boost"), (ok1 ? 3 : 0));
        ck_assert_int_eq(stat_num(&o.a, 43, "shares"), v43 + ok2);
        verify_ok(o.e);
        long long errs = (ok1 ? 0 : 2) + !ok2;
        oomc_expect(&o.a, &k0,
                    &(struct oomc){.v = {[OC_INTERACTIONS] = ok1 + ok2,
                                         [OC_DIRTY] = 2 * ok1 + ok2, [OC_ERRORS] = errs,
                                         [OC_ERR] = errs, [OC_TRACK_CALLS] = 2,
                                         [OC_TRACK_FAILED] = !ok1 + !ok2, [OC_BOOST_CALLS] = 1,
                                         [OC_BOOST_FAILED] = !ok1, [OC_EXEC_CALLS] = 1}},
                    nth);
        oomsrv_stop(&o);
        if (ok1 && ok2) {
            enomem_points("EXEC of writes and a query", nth, allocs, 19);
            break;
        }
        second_only += ok1;
        both += !ok1 && !ok2;
        own += strcmp(el[0], NOMEM) == 0 || strcmp(el[3], NOMEM) == 0;
    }
    ck_assert_msg(second_only && both && own,
                  "the second batch alone failed %d times, both %d, a TRACK at fault %d",
                  second_only, both, own);
}
END_TEST

/* /metrics counts the 500 the write answered, if it did; the line port
 * goes on. */
static void http_then(struct oomsrv *o, bool failed)
{
    char want[96];
    snprintf(want, sizeof want, "\nshortstat_http_responses_total{code=\"500\"} %d\n", failed);
    char *m = http_once(o->hport, "/metrics");
    ck_assert_msg(strstr(m, want), "want %s in %s", want, m);
    free(m);
    EXPECT(&o->a, "+PONG\r\n", "PING");
}

/* The HTTP writes (one interaction, an array, a save), out of memory: 500
 * {"ok":false,"error":"engine: out of memory"}, nothing recorded (an array
 * all or nothing), INFO unchanged and /metrics counting the 500; the same
 * request is then recorded. */
START_TEST(enomem_http)
{
#define HTTP_NOMEM "500 {\"ok\":false,\"error\":\"engine: out of memory\"}"
    static const struct enomem_cmd reqs[] = {
        {.path = "/api/explore/interaction",
         .body = "{\"type\":\"view\",\"shortId\":51,\"sessionId\":\"h1\",\"watchMs\":5}",
         .ok = "200 {\"ok\":true,\"recorded\":1}", .err = HTTP_NOMEM,
         .stats = {{51, "views", 1}}, .interactions = 1, .changes = 1, .then = http_then,
         .min_points = 9},
        {.path = "/api/explore/interaction",
         .body = "[{\"type\":\"view\",\"shortId\":52,\"sessionId\":\"h2\"},"
                 "{\"type\":\"share\",\"shortId\":53,\"userId\":8,\"platform\":\"telegram\"}]",
         .ok = "200 {\"ok\":true,\"recorded\":2}", .err = HTTP_NOMEM,
         .stats = {{52, "views", 1}, {53, "shares", 1}}, .interactions = 2, .changes = 2,
         .then = http_then, .min_points = 16},
        {.path = "/api/explore/save/54", .body = "{\"userId\":9}",
         .ok = "200 {\"ok\":true,\"recorded\":1}", .err = HTTP_NOMEM,
         .stats = {{54, "saves", 1}}, .interactions = 1, .changes = 1, .then = http_then,
         .min_points = 9},
    };
#undef HTTP_NOMEM
    for (size_t q = 0; q < sizeof reqs / sizeof reqs[0]; q++)
        enomem_one(&reqs[q]);
}
END_TEST

extern Suite *server_suite(void);
Suite *server_suite(void)
{
    signal(SIGPIPE, SIG_IGN);
    Suite *su = suite_create("server");
    TCase *tc = tcase_create("protocol");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, every_command_both_framings);
    tcase_add_test(tc, history_records_replay);
    tcase_add_test(tc, pipeline_100k_one_write);
    tcase_add_test(tc, pipeline_bad_track_in_run);
    tcase_add_test(tc, pipeline_scratch_fills_mid_run);
    tcase_add_test(tc, pipeline_writes_mid_input);
    tcase_add_test(tc, split_at_every_byte);
    tcase_add_test(tc, multi_exec_atomic);
    tcase_add_test(tc, exec_reserves_each_new_short_once);
    suite_add_tcase(su, tc);
    tc = tcase_create("errors");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, command_errors);
    tcase_add_test(tc, protocol_errors_close);
    tcase_add_test(tc, cross_protocol_closed);
    tcase_add_test(tc, handshake_commands);
    tcase_add_test(tc, query_buffer_limit);
    tcase_add_test(tc, maxclients_refused);
    tcase_add_test(tc, auth_required);
    tcase_add_test(tc, config_get);
    tcase_add_test(tc, config_help_names_live_settings);
    tcase_add_test(tc, command_stats_and_slowlog);
    tcase_add_test(tc, client_commands);
    tcase_add_test(tc, config_values_round_trip);
    tcase_add_test(tc, client_never_reads);
    tcase_add_test(tc, client_reads_past_output_limit);
    tcase_add_test(tc, exec_output_limit);
    tcase_add_test(tc, long_input_takes_turns);
    tcase_add_test(tc, http_port_limits_and_metrics);
    tcase_add_test(tc, maxmemory_and_config_set);
    tcase_add_test(tc, thousand_connections);
    suite_add_tcase(su, tc);
    tc = tcase_create("process");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, redis_cli);
    tcase_add_test(tc, flags_and_config);
    tcase_add_test(tc, sigterm_flushes_and_exits_0);
    suite_add_tcase(su, tc);
    tc = tcase_create("edges");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, half_close_gets_replies);
    tcase_add_test(tc, multi_too_large);
    tcase_add_test(tc, shutdown_with_stuck_client);
    tcase_add_test(tc, startup_failures);
    tcase_add_test(tc, fd_limit_clamps_maxclients);
    tcase_add_test(tc, config_set_auth_and_maxclients);
    tcase_add_test(tc, config_rewrite);
    tcase_add_test(tc, config_edge_errors);
    suite_add_tcase(su, tc);
    tc = tcase_create("snapshot");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, snapshot_across_restart);
    tcase_add_test(tc, snapshot_command);
    tcase_add_test(tc, snapshot_child_dies_with_server);
    tcase_add_test(tc, shutdown_stops_a_running_snapshot);
    tcase_add_test(tc, snapshot_cpulist);
    tcase_add_test(tc, shutdown_command);
    tcase_add_test(tc, snapshot_child_killed);
    tcase_add_test(tc, snapshot_fork_fails);
    tcase_add_test(tc, accept_fails_pauses);
    tcase_add_test(tc, prefault_on_and_off);
    tcase_add_test(tc, snapshot_interval);
    tcase_add_test(tc, corrupt_snapshot_refused);
    suite_add_tcase(su, tc);
    tc = tcase_create("enomem");
    tcase_set_timeout(tc, 120);
    /* Under CK_FORK=no a failed assertion leaves its server running; the
     * next test must not drive that one's loop. */
    tcase_add_checked_fixture(tc, NULL, inproc_drop);
    tcase_add_test(tc, inproc_restart_keeps_signals);
    tcase_add_test(tc, enomem_track);
    tcase_add_test(tc, enomem_track_run);
    tcase_add_test(tc, enomem_boost);
    tcase_add_test(tc, enomem_exec);
    tcase_add_test(tc, enomem_exec_mixed);
    tcase_add_test(tc, enomem_http);
    suite_add_tcase(su, tc);
    return su;
}
