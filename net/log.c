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

/* ---- from a signal handler --------------------------------------------------------------- */

/* Only async-signal-safe calls below: no stdio, no gmtime_r (it may take
 * the tz lock). The civil date is computed from the day number directly
 * (Howard Hinnant's days-to-civil). */
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

void net_log_from_signal(enum net_log_level lvl, const char *msg)
{
    if (lvl < log_level)
        return;
    char line[256];
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

    char *p = line, *end = line + sizeof line - 1;
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
    for (; i < 6; i++)  /* "%-5s " */
        *p++ = ' ';
    for (const char *q = msg; *q && p < end; q++)
        *p++ = *q;
    *p++ = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)(p - line));
    (void)w;
}
