/* SPDX-License-Identifier: MIT */
/*
 * run_util.h -- run one of the project's programs (shortstat-snap,
 * shortstat-bench) from the build directory the way a user would, and
 * capture its exit status, standard output and standard error, for tests
 * of a command line. Output goes to anonymous temporary files, so a
 * program that writes much to both streams cannot block on a full pipe.
 * run_rmtree removes the scratch directory a test gave them, whatever they
 * left in it (a data directory keeps its lock file). For tests that run a
 * server: the monotonic clock for their deadlines, a free loopback port,
 * a bounded wait for a process to exit, and run_start_http, which starts
 * shortstatd with its HTTP port on one picked free.
 */
#ifndef SHORTSTAT_TESTS_RUN_UTIL_H
#define SHORTSTAT_TESTS_RUN_UTIL_H

#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SHORTSTAT_BUILD
#define SHORTSTAT_BUILD "build/san"  /* the Makefile passes the build's own */
#endif

struct run {
    int status;        /* exit status */
    char *out, *err;   /* what it wrote, NUL-terminated */
    size_t out_len;
};

/* The whole of f, NUL-terminated (a stream may hold binary output). */
static inline char *run_read_back(FILE *f, size_t *len)
{
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    ck_assert_int_ge(n, 0);
    rewind(f);
    char *p = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(fread(p, 1, (size_t)n, f), (size_t)n);
    p[n] = 0;
    if (len)
        *len = (size_t)n;
    return p;
}

/* Runs $SHORTSTAT_BUILD/<prog> (SHORTSTAT_BUILD at compile time when the
 * variable is unset) with args, a NULL-terminated list of at most 14; its
 * standard output goes to the file out_path when that is not NULL (r.out
 * is then empty). */
static inline struct run run_program_to(const char *prog, const char *const *args,
                                        const char *out_path)
{
    const char *b = getenv("SHORTSTAT_BUILD");
    char exe[512];
    snprintf(exe, sizeof exe, "%s/%s", b && *b ? b : SHORTSTAT_BUILD, prog);
    const char *argv[16] = {exe};
    int n = 1;
    while (args[n - 1] && n < 15)
        argv[n] = args[n - 1], n++;
    ck_assert_msg(args[n - 1] == NULL, "run_program: too many arguments");
    argv[n] = NULL;
    FILE *out = out_path ? fopen(out_path, "w") : tmpfile(), *err = tmpfile();
    ck_assert(out && err);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(fileno(out), 1);
        dup2(fileno(err), 2);
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st), "%s died of signal %d", exe, WTERMSIG(st));
    struct run r = {.status = WEXITSTATUS(st)};
    ck_assert_msg(r.status != 127, "cannot run %s", exe);
    if (out_path) {
        r.out = calloc(1, 1);
        ck_assert_ptr_nonnull(r.out);
    } else {
        r.out = run_read_back(out, &r.out_len);
    }
    r.err = run_read_back(err, NULL);
    fclose(out);
    fclose(err);
    return r;
}

static inline struct run run_program(const char *prog, const char *const *args)
{
    return run_program_to(prog, args, NULL);
}

static inline void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

static inline int run_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* Removes dir and everything under it, not following symlinks. */
static inline void run_rmtree(const char *dir)
{
    nftw(dir, run_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh directory for one test, "shortstat-<name>-XXXXXX" under the run's
 * scratch root (SHORTSTAT_TEST_TMP, which the runner makes and removes when
 * every test is done, so a test that fails before its own cleanup leaves
 * nothing behind), or under /tmp without one. */
static inline void run_mkdtemp(char *out, size_t n, const char *name)
{
    const char *root = getenv("SHORTSTAT_TEST_TMP");
    int len = snprintf(out, n, "%s/shortstat-%s-XXXXXX", root && *root ? root : "/tmp", name);
    ck_assert_msg(len > 0 && (size_t)len < n, "temp path too long");
    ck_assert_ptr_nonnull(mkdtemp(out));
}

/* How many entries of dir have needle in their name (a snapshot's temp
 * files: SNAP_FILE ".tmp." for one writer's, ".tmp." for any). */
static inline int run_count_names(const char *dir, const char *needle)
{
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "opendir %s", dir);
    int n = 0;
    for (struct dirent *de; (de = readdir(d));)
        n += strstr(de->d_name, needle) != NULL;
    closedir(d);
    return n;
}

/* How long a wait for a server lasts before it fails, in wall-clock time:
 * a sanitizer build on a loaded machine can take seconds for what takes
 * milliseconds alone, and a bound counted in polls says nothing of time. */
enum { RUN_WAIT_MS = 30000 };

/* Milliseconds on the monotonic clock, for the deadlines of waits. */
static inline long long run_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A loopback port free now (bound, read back, released): another process
 * may take it before the caller binds it. */
static inline uint16_t run_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* Reaps pid if it exits within ms (polled): true with its wait status in
 * *st, false while it still runs. A wait in wall-clock time, so that a
 * process that never exits fails a test rather than hanging it. */
static inline bool run_reap(pid_t pid, long long ms, int *st)
{
    for (long long end = run_mono_ms() + ms;; usleep(5000)) {
        pid_t got = waitpid(pid, st, WNOHANG);
        ck_assert_msg(got >= 0, "waitpid %ld: not a child of the test", (long)pid);
        if (got == pid)
            return true;
        if (run_mono_ms() >= end)
            return false;
    }
}

/* Kills *pid for good, reaps it and clears *pid: a process a test gives up
 * on (it never came up, or never went). */
static inline void run_kill(pid_t *pid)
{
    kill(*pid, SIGKILL);
    waitpid(*pid, NULL, 0);
    *pid = 0;
}

/* The file at path so far (malloc'd, NUL-terminated; "" before there is
 * one): a server's log. */
static inline char *run_read_log(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        char *l = calloc(1, 1);
        ck_assert_ptr_nonnull(l);
        return l;
    }
    char *l = run_read_back(f, NULL);
    fclose(f);
    return l;
}

/* Starts shortstatd with its line protocol on --port 0 and HTTP on a port
 * picked free here (--http-port has no "any free port": 0 is off), through
 * spawn(ctx, http_port), which runs it with its output appended to log
 * (emptied here first). The pick is released for the server to bind, so it
 * may be taken first, by another process or by the server's own --port 0:
 * a server that exits with "Address already in use" for it, or whose line
 * protocol drew the same number, is started again on another, 10 times at
 * most. Returns the HTTP port once the log says the server listens there,
 * with the server in *pid and the line protocol's port in *port; a server
 * that does not within RUN_WAIT_MS, or exits otherwise, fails the test with
 * its log. */
static inline uint16_t run_start_http(const char *log, pid_t (*spawn)(void *ctx, uint16_t http_port),
                                      void *ctx, pid_t *pid, uint16_t *port)
{
    static const char on[] = "listening on 127.0.0.1:";
    for (int attempt = 1;; attempt++) {
        uint16_t hp = run_free_port();
        char up[64], taken[96];
        snprintf(up, sizeof up, "%s%u\n", on, hp);
        snprintf(taken, sizeof taken, "cannot listen on 127.0.0.1 port %u: Address already in use",
                 hp);
        unlink(log);  /* a restart must not find the previous run's lines */
        *pid = spawn(ctx, hp);
        const char *why;
        bool retry = false;
        char *l = NULL;
        for (long long end = run_mono_ms() + RUN_WAIT_MS;; usleep(5000)) {
            free(l);
            l = run_read_log(log);
            /* The line protocol listens first: its line is the log's first. */
            const char *p = strstr(l, on), *nl = p ? strchr(p, '\n') : NULL;
            if (nl && atoi(p + strlen(on)) == hp) {  /* HTTP's bind is about to fail */
                run_kill(pid);
                why = "drawn for the line protocol too", retry = true;
                break;
            }
            if (nl && strstr(nl + 1, up)) {
                *port = (uint16_t)atoi(p + strlen(on));
                free(l);
                return hp;
            }
            int st;
            if (waitpid(*pid, &st, WNOHANG) == *pid) {
                *pid = 0;
                free(l);
                l = run_read_log(log);  /* what it said before it went */
                why = "exited", retry = strstr(l, taken) != NULL;
                break;
            }
            if (run_mono_ms() >= end) {
                run_kill(pid);
                why = "still not listening";
                break;
            }
        }
        if (!retry || attempt == 10)
            ck_abort_msg("shortstatd did not listen on --http-port %u (attempt %d, %s); log:\n%s",
                         hp, attempt, why, l);
        free(l);
    }
}

#endif
