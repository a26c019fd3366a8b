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
 *  - every comment line of the input is in the output;
 *  - an input holding a NUL byte is refused instead (the loader refuses it);
 *  - the input is also a config file for net_config_load_file (the parser
 *    shortstatd reads at start): it never crashes, and when it loads, its
 *    rewrite with the values it loaded loads back to exactly those values
 *    (every value survives being written by CONFIG REWRITE and read again).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "net/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* net_config_load_file of n bytes at p (through a memfd: it takes a path). */
static int load(const char *p, size_t n, struct net_config *c)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz_config", 0);
        if (fd < 0)
            abort();
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || pwrite(fd, p, n, 0) != (ssize_t)n)
        abort();
    char err[512];
    net_config_defaults(c);
    return net_config_load_file(c, path, err, sizeof err);
}

static void load_round_trip(const char *old, size_t size)
{
    static struct net_config in, back;
    if (load(old, size, &in) != NET_CFG_OK)
        return;
    size_t cap = net_config_rewrite_bound(size), len = 0;
    char *out = malloc(cap), err[256];
    if (net_config_rewrite(old, size, &in, out, cap, &len, err, sizeof err) != NET_CFG_OK)
        abort();  /* a value loaded from a line holds no newline */
    if (load(out, len, &back) != NET_CFG_OK)
        abort();
    char a[NET_CONFIG_VALUE_MAX], b[NET_CONFIG_VALUE_MAX];
    for (size_t i = 0; net_config_key(i); i++) {
        net_config_value(&in, i, a, sizeof a);
        net_config_value(&back, i, b, sizeof b);
        if (strcmp(a, b) != 0)
            abort();
    }
    free(out);
}

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
    int rc = net_config_rewrite(old, size, &c, out, cap, &len, err, sizeof err);
    if (memchr(old, 0, size)) {  /* refused: it would pass on what the loader refuses */
        if (rc != NET_CFG_EINVAL)
            abort();
        goto done;
    }
    if (rc != NET_CFG_OK)
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
done:
    free(out);
    load_round_trip(old, size);
    free(old);
    return 0;
}
