/* SPDX-License-Identifier: MIT */
/*
 * log.c -- timestamped log lines on stderr.
 *
 * Format: "2024-11-24T06:52:01.123Z 1234 info  message". UTC so lines from
 * machines in different zones sort together; the pid tells the server from
 * its snapshot child. Each line goes out in one write(2), so lines from the
 * parent and a forked child never interleave mid-line. The level is the one
 * piece of process-wide state in net/: logging is per process by nature.
 */
#include "net/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static enum net_log_level log_level = NET_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void net_log_set_level(enum net_log_level lvl) { log_level = lvl; }
enum net_log_level net_log_get_level(void) { return log_level; }

const char *net_log_level_name(enum net_log_level lvl)
{
    return (unsigned)lvl < 4 ? level_names[lvl] : "?";
}

int net_log_level_parse(const char *s)
{
    for (int i = 0; i < 3; i++)  /* error is not a user-settable level */
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return NET_LOG_WARN;
    return -1;
}

void net_log(enum net_log_level lvl, const char *fmt, ...)
{
    if (lvl < log_level)
        return;
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %d %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, (int)getpid(), net_log_level_name(lvl));
    if (n < 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;  /* truncated */
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;  /* nowhere to report a failing stderr */
}
