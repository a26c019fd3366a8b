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
#include <stdint.h>
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
    /* Redis's names, for a config or CONFIG SET written for Redis: its
     * verbose level logs client connections, as our debug does */
    if (strcasecmp(s, "warning") == 0)
        return NET_LOG_WARN;
    if (strcasecmp(s, "notice") == 0)
        return NET_LOG_INFO;
    if (strcasecmp(s, "verbose") == 0)
        return NET_LOG_DEBUG;
    return -1;
}

/* ---- the line prefix ------------------------------------------------------------------- */

/* Only async-signal-safe calls here, so a signal handler can log in the
 * same format (net_log_from_signal): no stdio, no gmtime_r (it may take
 * the tz lock). The civil date comes from the day number directly (Howard
 * Hinnant's days-to-civil). */
static char *put_num(char *p, uint64_t v, int width)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && n < (int)sizeof tmp);
    while (n < width)
        tmp[n++] = '0';
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* "2024-11-24T06:52:01.123Z 1234 info  " into out (LOG_PREFIX_MAX bytes). */
#define LOG_PREFIX_MAX 64
static size_t log_prefix(char *out, enum net_log_level lvl)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t days = ts.tv_sec / 86400, sod = ts.tv_sec % 86400;
    int64_t z = days + 719468, era = z / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = yoe + era * 400 + (m <= 2);

    char *p = out;
    p = put_num(p, (uint64_t)y, 4);
    *p++ = '-';
    p = put_num(p, (uint64_t)m, 2);
    *p++ = '-';
    p = put_num(p, (uint64_t)d, 2);
    *p++ = 'T';
    p = put_num(p, (uint64_t)(sod / 3600), 2);
    *p++ = ':';
    p = put_num(p, (uint64_t)(sod / 60 % 60), 2);
    *p++ = ':';
    p = put_num(p, (uint64_t)(sod % 60), 2);
    *p++ = '.';
    p = put_num(p, (uint64_t)(ts.tv_nsec / 1000000), 3);
    *p++ = 'Z';
    *p++ = ' ';
    p = put_num(p, (uint64_t)getpid(), 1);
    *p++ = ' ';
    const char *name = net_log_level_name(lvl);
    size_t i = 0;
    for (; name[i]; i++)
        *p++ = name[i];
    for (; i < 6; i++)  /* the level padded to 5, then a space */
        *p++ = ' ';
    return (size_t)(p - out);
}

void net_log(enum net_log_level lvl, const char *fmt, ...)
{
    if (lvl < log_level)
        return;
    /* The longest line is the settings at start-up (a CPU list, paths); one
     * past even that says it was cut, rather than ending mid-word. */
    static const char cut[] = " ... (line truncated)";
    char line[16384];
    size_t n = log_prefix(line, lvl);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    size_t len = n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2) {
        len = sizeof line - sizeof cut;
        memcpy(line + len, cut, sizeof cut - 1);
        len += sizeof cut - 1;
    }
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;  /* nowhere to report a failing stderr */
}

void net_log_from_signal(enum net_log_level lvl, const char *msg)
{
    if (lvl < log_level)
        return;
    char line[LOG_PREFIX_MAX + 192];
    char *p = line + log_prefix(line, lvl), *end = line + sizeof line - 1;
    for (const char *q = msg; *q && p < end; q++)
        *p++ = *q;
    *p++ = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)(p - line));
    (void)w;
}
