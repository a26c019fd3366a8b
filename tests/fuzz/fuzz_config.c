/* SPDX-License-Identifier: MIT */
/*
 * fuzz_config.c -- libFuzzer target for CONFIG REWRITE (net/config.c's
 * net_config_rewrite; make fuzz).
 *
 * Checks, for any old config file:
 *  - the rewrite fits net_config_rewrite_bound (it refuses rather than
 *    overflow) and reads nothing outside the input (ASan; the input is
 *    copied so its end is a guard);
 *  - it is a fixed point: rewriting the rewrite changes nothing, so a
 *    second CONFIG REWRITE never moves, adds or drops a line;
 *  - every comment line of the input is in the output.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    static struct net_config c;
    static int ready;
    if (!ready) {  /* a running config that differs from the defaults here and there */
        char err[256];
        net_config_defaults(&c);
        ready = net_config_set(&c, "maxmemory", "3g", err, sizeof err) == NET_CFG_OK &&
                net_config_set(&c, "requirepass", "p \"w", err, sizeof err) == NET_CFG_OK &&
                net_config_set(&c, "snapshot-cpulist", "0-3,6", err, sizeof err) == NET_CFG_OK;
        if (!ready)
            abort();
    }
    char *old = malloc(size ? size : 1);
    memcpy(old, data, size);
    size_t cap = net_config_rewrite_bound(size), len = 0;
    char *out = malloc(cap), err[256];
    if (net_config_rewrite(old, size, &c, out, cap, &len, err, sizeof err) != NET_CFG_OK)
        abort();  /* the running values hold no newline, and the bound holds */
    size_t cap2 = net_config_rewrite_bound(len), len2 = 0;
    char *again = malloc(cap2);
    if (net_config_rewrite(out, len, &c, again, cap2, &len2, err, sizeof err) != NET_CFG_OK ||
        len2 != len || memcmp(again, out, len) != 0)
        abort();
    /* comment lines survive (a '#' first, after no blank) */
    for (const char *p = old, *end = old + size; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)((nl ? nl : end) - p);
        if (n && p[0] == '#' && !memmem(out, len, p, n))
            abort();
        p = nl ? nl + 1 : end;
    }
    free(again);
    free(out);
    free(old);
    return 0;
}
