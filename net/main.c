/* SPDX-License-Identifier: MIT */
/*
 * main.c -- shortstatd: settings, then the server until SIGINT/SIGTERM.
 *
 * Exit codes: 0 after a clean shutdown (final snapshot written or not
 * needed, or a signal before the server listened), 1 when the server cannot start or the final snapshot failed,
 * 2 on a bad flag, value or config file.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "net/config.h"
#include "net/log.h"
#include "net/server.h"

int main(int argc, char **argv)
{
    struct net_config cfg;
    char err[512];
    int rc = net_config_parse(&cfg, argc, argv, err, sizeof err);
    if (rc == NET_CFG_HELP) {
        fputs(net_config_usage(), stdout);
        return 0;
    }
    if (rc == NET_CFG_VERSION) {
        printf("shortstatd %s\n", NET_VERSION);
        return 0;
    }
    if (rc != NET_CFG_OK) {
        fprintf(stderr, "shortstatd: %s\n", err);
        return 2;
    }
    net_log_set_level((enum net_log_level)cfg.loglevel);
    signal(SIGPIPE, SIG_IGN);  /* a vanished client is a write error, not a death */
    /* A closed terminal or ssh session must not kill the server without its
     * final snapshot: SIGHUP is ignored, as Redis does. */
    signal(SIGHUP, SIG_IGN);

    /* The server is large (parser scratch, top-k buffer): keep it off the stack. */
    struct server *s = calloc(1, sizeof *s);
    if (!s) {
        fprintf(stderr, "shortstatd: out of memory\n");
        return 1;
    }
    int code = 1;
    if (net_server_init(s, &cfg) == 0)
        code = net_server_run(s);
    net_server_destroy(s);
    free(s);
    return code;
}
