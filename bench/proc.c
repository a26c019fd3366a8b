/* SPDX-License-Identifier: MIT */
/*
 * proc.c -- servers under test as child processes.
 *
 * A server is started with fork + exec on a port found free by binding port
 * 0 (a race with other programs is possible but harmless: the server then
 * fails to bind, and bench_wait_ready reports its log). The child asks to be
 * SIGKILLed when the bench dies (PR_SET_PDEATHSIG), so an interrupted bench
 * never leaves a server behind. With two or more CPUs, the server runs on
 * one and the bench on another, each alone on its core, so the figures are
 * the server's and not the client's; the affinity is set in the child
 * before exec, which covers every thread the server starts.
 */
#include "bench/bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void bench_cpus_pick(struct bench_cpus *c, bool pin)
{
    cpu_set_t set;
    c->n = 0;
    c->server = c->self = -1;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return;
    int first = -1, second = -1;
    for (int i = 0; i < CPU_SETSIZE; i++) {
        if (!CPU_ISSET(i, &set))
            continue;
        c->n++;
        if (first < 0)
            first = i;
        else if (second < 0)
            second = i;
    }
    if (pin && second >= 0) {
        c->server = first;
        c->self = second;
    }
}

int bench_pin_self(int cpu)
{
    if (cpu < 0)
        return 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set);
}

int bench_free_port(uint16_t *port, char *msg, size_t msglen)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(msg, msglen, "socket: %s", strerror(errno));
        return BENCH_EIO;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) < 0) {
        snprintf(msg, msglen, "finding a free port: %s", strerror(errno));
        close(fd);
        return BENCH_EIO;
    }
    *port = ntohs(a.sin_port);
    close(fd);
    return BENCH_OK;
}

/* Temp dirs alive now, so an interrupted bench can remove them. */
#define MAX_TMPDIRS 16
static char live_dirs[MAX_TMPDIRS][256];

static void track_dir(const char *dir, bool add)
{
    for (int i = 0; i < MAX_TMPDIRS; i++) {
        if (add && !live_dirs[i][0]) {
            snprintf(live_dirs[i], sizeof live_dirs[i], "%s", dir);
            return;
        }
        if (!add && strcmp(live_dirs[i], dir) == 0) {
            live_dirs[i][0] = '\0';
            return;
        }
    }
}

void bench_cleanup_all(void)
{
    for (int i = 0; i < MAX_TMPDIRS; i++)
        if (live_dirs[i][0])
            bench_rmtree(live_dirs[i]);
}

int bench_find_exe(const char *name, char *out, size_t outlen)
{
    if (strchr(name, '/')) {
        snprintf(out, outlen, "%s", name);
        return access(out, X_OK) == 0 ? 0 : -1;
    }
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t l = strcspn(path, ":");
        snprintf(out, outlen, "%.*s/%s", (int)l, path, name);
        if (l && access(out, X_OK) == 0)
            return 0;
        path += l;
        if (*path == ':')
            path++;
    }
    snprintf(out, outlen, "%s", name);
    return -1;
}

int bench_tmpdir(const char *tag, char out[256], char *msg, size_t msglen)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    snprintf(out, 256, "%s/shortstat-bench-%s-XXXXXX", base, tag);
    if (!mkdtemp(out)) {
        snprintf(msg, msglen, "mkdtemp %s: %s", out, strerror(errno));
        return BENCH_EIO;
    }
    track_dir(out, true);
    return BENCH_OK;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void bench_rmtree(const char *dir)
{
    /* only ever our own mkdtemp directories */
    if (dir && strstr(dir, "/shortstat-bench-")) {
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        track_dir(dir, false);
    }
}

int bench_spawn(const char *const argv[], int cpu, const char *logpath, struct bench_proc *p,
                char *msg, size_t msglen)
{
    memset(p, 0, sizeof *p);
    snprintf(p->log, sizeof p->log, "%s", logpath);
    if (access(argv[0], X_OK) != 0) {
        snprintf(msg, msglen, "%s: %s", argv[0], strerror(errno));
        return BENCH_EIO;
    }
    int logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) {
        snprintf(msg, msglen, "%s: %s", logpath, strerror(errno));
        return BENCH_EIO;
    }
    pid_t parent = getpid();
    p->start_s = bench_now();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(msg, msglen, "fork: %s", strerror(errno));
        close(logfd);
        return BENCH_EIO;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        if (cpu >= 0) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(cpu, &set);
            sched_setaffinity(0, sizeof set, &set);
        }
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        signal(SIGPIPE, SIG_DFL);
        execv(argv[0], (char *const *)argv);
        dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(logfd);
    p->pid = pid;
    return BENCH_OK;
}

void bench_log_tail(const char *path, char *out, size_t outlen)
{
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    long from = sz > (long)outlen - 1 ? sz - ((long)outlen - 1) : 0;
    fseek(f, from, SEEK_SET);
    size_t n = fread(out, 1, outlen - 1, f);
    out[n] = '\0';
    fclose(f);
    while (n && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        out[--n] = '\0';
}

int bench_wait_ready(struct bench_proc *p, const char *host, double timeout_s, double *ready_s,
                     char *msg, size_t msglen)
{
    double deadline = p->start_s + timeout_s;
    for (;;) {
        int st;
        pid_t w = waitpid(p->pid, &st, WNOHANG);
        if (w == p->pid) {
            char tail[600];
            bench_log_tail(p->log, tail, sizeof tail);
            snprintf(msg, msglen, "server exited (%s %d) before answering PING; log %s: %s",
                     WIFEXITED(st) ? "status" : "signal",
                     WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), p->log, tail);
            p->pid = 0;
            return BENCH_ESERVER;
        }
        struct bench_ctl c;
        if (bench_ctl_open(&c, host, p->port, 200) == BENCH_OK) {
            /* a server still loading answers errors (-LOADING); keep asking */
            for (;;) {
                char *r = NULL;
                const char *argv[] = {"PING"};
                int rc = bench_ctl_cmd(&c, 1, argv, 2000, &r);
                bool pong = rc == BENCH_OK && r && strcmp(r, "PONG") == 0;
                free(r);
                if (pong) {
                    *ready_s = bench_now() - p->start_s;
                    bench_ctl_close(&c);
                    return BENCH_OK;
                }
                if (rc != BENCH_ESERVER || bench_now() > deadline)
                    break;
                struct timespec ts = {0, 1000000};
                nanosleep(&ts, NULL);
            }
            bench_ctl_close(&c);
        }
        if (bench_now() > deadline) {
            snprintf(msg, msglen, "server did not answer PING on port %u within %.0f s (log %s)",
                     (unsigned)p->port, timeout_s, p->log);
            return BENCH_ETIMEOUT;
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

int bench_stop(struct bench_proc *p, int sig, double timeout_s)
{
    if (p->pid <= 0)
        return 0;
    kill(p->pid, sig);
    double deadline = bench_now() + timeout_s;
    int st = 0;
    for (;;) {
        pid_t w = waitpid(p->pid, &st, WNOHANG);
        if (w == p->pid)
            break;
        if (w < 0) {
            p->pid = 0;
            return -1;
        }
        if (bench_now() > deadline) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &st, 0);
            p->pid = 0;
            return -1;
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    p->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static uint64_t status_kb(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[256];
    uint64_t kb = 0;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            kb = strtoull(line + kl + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb * 1024;
}

uint64_t bench_rss(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    return status_kb(path, "VmRSS");
}

uint64_t bench_rss_self(void)
{
    return status_kb("/proc/self/status", "VmRSS");
}
