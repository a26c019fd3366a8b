/* SPDX-License-Identifier: MIT */
/*
 * log.h -- shortstatd's log: one timestamped line per event on stderr.
 */
#ifndef SHORTSTAT_NET_LOG_H
#define SHORTSTAT_NET_LOG_H

enum net_log_level {
    NET_LOG_DEBUG = 0,
    NET_LOG_INFO = 1,
    NET_LOG_WARN = 2,
    NET_LOG_ERROR = 3,  /* always shown */
};

/* Process-wide minimum level; lines below it are dropped. */
void net_log_set_level(enum net_log_level lvl);
enum net_log_level net_log_get_level(void);
int net_log_level_parse(const char *s);   /* level or -1 */
const char *net_log_level_name(enum net_log_level lvl);

void net_log(enum net_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same line, async-signal-safe: for signal handlers (no formatting of
 * msg; at most ~200 bytes of it are written). */
void net_log_from_signal(enum net_log_level lvl, const char *msg);

#define net_debug(...) net_log(NET_LOG_DEBUG, __VA_ARGS__)
#define net_info(...)  net_log(NET_LOG_INFO, __VA_ARGS__)
#define net_warn(...)  net_log(NET_LOG_WARN, __VA_ARGS__)
#define net_error(...) net_log(NET_LOG_ERROR, __VA_ARGS__)

#endif
