/* SPDX-License-Identifier: MIT */
/*
 * sink.c -- a null server: answers +OK to every command and does nothing else.
 *
 * It measures the load client, not a server: the rate the client reaches
 * against it is the ceiling of what the client can measure. It runs in a
 * forked child pinned like a server, with one epoll loop; commands are
 * counted with the same framing rules the server uses (RESP multibulk
 * through bench_resp_skip, inline by line), and the replies are written
 * from a block of repeated "+OK\r\n", so the sink does less per command than
 * any real server could.
 */
#include "bench/bench.h"

#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define SINK_BUF (1u << 20)
#define OK_BLOCK 4096u   /* replies per write of the +OK block */

struct sink_conn {
    int fd;
    uint8_t *in;
    size_t len;
    uint64_t owed;       /* replies counted but not written yet */
    bool want_out;
    size_t owed_off;     /* bytes of the current block already written */
};

static const uint8_t *ok_block(void)
{
    static uint8_t block[OK_BLOCK * 5];
    if (block[0] != '+')
        for (size_t i = 0; i < OK_BLOCK; i++)
            memcpy(block + 5 * i, "+OK\r\n", 5);
    return block;
}

/* Count complete commands at the front of c->in and drop them. */
static int count_commands(struct sink_conn *c)
{
    uint8_t *p = c->in, *end = c->in + c->len;
    while (p < end) {
        if (*p == '*') {
            ptrdiff_t r = bench_resp_skip(p, end);
            if (r < 0)
                return -1;
            if (r == 0)
                break;
            p += r;
        } else {
            uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
            if (!nl)
                break;
            p = nl + 1;
        }
        c->owed++;
    }
    c->len = (size_t)(end - p);
    memmove(c->in, p, c->len);
    return 0;
}

static int pay(struct sink_conn *c)
{
    const uint8_t *block = ok_block();
    while (c->owed) {
        uint64_t n = c->owed < OK_BLOCK ? c->owed : OK_BLOCK;
        size_t bytes = (size_t)n * 5 - c->owed_off;
        ssize_t w = write(c->fd, block + c->owed_off, bytes);
        if (w < 0)
            return errno == EAGAIN ? 0 : -1;
        size_t done = c->owed_off + (size_t)w;
        c->owed -= done / 5;
        c->owed_off = done % 5;
    }
    return 0;
}

static void sink_close(int ep, struct sink_conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    free(c);
}

static void sink_loop(int lfd)
{
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(ep, evs, 64, -1);
        for (int i = 0; i < n; i++) {
            struct sink_conn *c = evs[i].data.ptr;
            if (!c) {
                int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                if (fd < 0)
                    continue;
                c = calloc(1, sizeof *c);
                if (!c || !(c->in = malloc(SINK_BUF))) {
                    free(c);
                    close(fd);
                    continue;
                }
                c->fd = fd;
                struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = read(c->fd, c->in + c->len, SINK_BUF - c->len);
                if (r == 0 || (r < 0 && errno != EAGAIN) ||
                    (r > 0 && ((c->len += (size_t)r), count_commands(c) < 0)) ||
                    c->len == SINK_BUF) {
                    sink_close(ep, c);
                    continue;
                }
            }
            if (pay(c) < 0) {
                sink_close(ep, c);
                continue;
            }
            /* replies the socket would not take yet: wait until it drains */
            if (c->want_out != (c->owed != 0)) {
                c->want_out = c->owed != 0;
                struct epoll_event cev = {.events = EPOLLIN | (c->want_out ? EPOLLOUT : 0u),
                                          .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
            }
        }
    }
}

int bench_sink_start(int cpu, struct bench_proc *p, char *msg, size_t msglen)
{
    memset(p, 0, sizeof *p);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 64) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &al) < 0) {
        snprintf(msg, msglen, "sink: %s", strerror(errno));
        if (lfd >= 0)
            close(lfd);
        return BENCH_EIO;
    }
    p->port = ntohs(a.sin_port);
    p->start_s = bench_now();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(msg, msglen, "fork: %s", strerror(errno));
        close(lfd);
        return BENCH_EIO;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (cpu >= 0) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(cpu, &set);
            sched_setaffinity(0, sizeof set, &set);
        }
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        sink_loop(lfd);
        _exit(0);
    }
    close(lfd);
    p->pid = pid;
    return BENCH_OK;
}
