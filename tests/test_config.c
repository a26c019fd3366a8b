/* SPDX-License-Identifier: MIT */
/*
 * test_config.c -- net/config.c's CONFIG REWRITE: the text it writes keeps
 * what a person wrote (comments, order, unknown lines), holds the running
 * values, and reads back to them; the file is replaced whole or not at all.
 * The property test compares a rewrite of random settings over random old
 * text with the settings themselves, through net_config_load_file (seed
 * printed; SHORTSTAT_SEED=<n> replays it). The flags and the file loader
 * are tested through shortstatd in test_server.c.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/config.h"
#include "tests/eng_util.h"
#include "tests/run_util.h"

/* The rewrite of old, NUL-terminated; malloc'd. */
static char *rewrite_ok(const char *old, const struct net_config *c)
{
    size_t cap = net_config_rewrite_bound(strlen(old)), len = 0;
    char *out = malloc(cap + 1), err[256] = "";
    ck_assert_ptr_nonnull(out);
    int rc = net_config_rewrite(old, strlen(old), c, out, cap, &len, err, sizeof err);
    ck_assert_msg(rc == NET_CFG_OK, "rc %d: %s", rc, err);
    ck_assert_uint_le(len, cap);
    out[len] = 0;
    ck_assert_uint_eq(strlen(out), len);
    return out;
}

static void set_ok(struct net_config *c, const char *key, const char *val)
{
    char err[256];
    ck_assert_msg(net_config_set(c, key, val, err, sizeof err) == NET_CFG_OK, "%s", err);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

/* A fresh directory, and the path of a config file in it. */
static void conf_tmp(char dir[256], char path[300])
{
    run_mkdtemp(dir, 256, "config");
    snprintf(path, 300, "%s/s.conf", dir);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    size_t len;
    char *b = run_read_back(f, &len);
    fclose(f);
    return b;
}

START_TEST(keeps_layout_and_sets_values)
{
    struct net_config c;
    net_config_defaults(&c);
    set_ok(&c, "port", "7000");
    set_ok(&c, "maxmemory", "3g");
    set_ok(&c, "requirepass", "two words");
    set_ok(&c, "slowlog-max-len", "7");
    set_ok(&c, "query-buffer-limit", "1000000");  /* no exact unit: bytes */
    /* a byte-order mark (kept with its line), comments, a blank line, an
     * underscore key, a repeated key (the last won at load), CRLF, no
     * final newline */
    char *out = rewrite_ok("\xef\xbb\xbf# mine\r\nport 1\n\n  session_ttl 100\n"
                           "maxmemory 1g\n# between\nmaxmemory 2g\nhistory 8",
                           &c);
    ck_assert_str_eq(out, "\xef\xbb\xbf# mine\r\n"
                          "port 7000\n"
                          "\n"
                          "session-ttl 86400\n"  /* in the file: written, even at its default */
                          "maxmemory 3g\n"
                          "# between\n"
                          "history 64\n"
                          NET_CONFIG_REWRITE_MARK "\n"
                          "requirepass \"two words\"\n"
                          "query-buffer-limit 1000000\n"
                          "slowlog-max-len 7\n");
    /* a second rewrite adds no second mark and moves nothing */
    char *again = rewrite_ok(out, &c);
    ck_assert_str_eq(again, out);
    free(again);
    free(out);
    /* a setting line under a BOM is written anew, without it */
    out = rewrite_ok("\xef\xbb\xbfport 1\n", &c);
    ck_assert_str_eq(out, "port 7000\n" NET_CONFIG_REWRITE_MARK "\n"
                          "requirepass \"two words\"\nquery-buffer-limit 1000000\n"
                          "maxmemory 3g\nslowlog-max-len 7\n");
    free(out);
    /* defaults only, over nothing: nothing */
    net_config_defaults(&c);
    out = rewrite_ok("", &c);
    ck_assert_str_eq(out, "");
    free(out);
}
END_TEST

START_TEST(values_that_need_quotes)
{
    struct net_config c;
    net_config_defaults(&c);
    set_ok(&c, "requirepass", "\"quoted\"");
    char *out = rewrite_ok("requirepass old\n", &c);
    ck_assert_str_eq(out, "requirepass \"\"quoted\"\"\n");
    free(out);
    set_ok(&c, "requirepass", "");
    out = rewrite_ok("requirepass old\n", &c);
    ck_assert_str_eq(out, "requirepass \"\"\n");  /* "" = none, written so it stays none */
    free(out);
    /* a newline cannot be in a config line: refused, naming the setting */
    set_ok(&c, "requirepass", "a\nb");
    char o[64], err[256] = "";
    size_t len = 0;
    ck_assert_int_eq(net_config_rewrite("", 0, &c, o, sizeof o, &len, err, sizeof err),
                     NET_CFG_EINVAL);
    ck_assert_str_eq(err, "requirepass: the value holds a newline, which a config file cannot");
    /* a buffer under the bound: refused, nothing written past it */
    set_ok(&c, "requirepass", "");
    set_ok(&c, "bind", "a-rather-long-host-name.example.com");
    char small[24];
    memset(small, 'z', sizeof small);
    ck_assert_int_eq(net_config_rewrite("# x\n", 4, &c, small, 16, &len, err, sizeof err),
                     NET_CFG_EINVAL);
    ck_assert_str_eq(err, "rewrite: needs more than the 16 bytes given");
    for (size_t i = 16; i < sizeof small; i++)
        ck_assert_int_eq(small[i], 'z');
}
END_TEST

/* What each accepted spelling means, as docs/operations.md gives it: the
 * round trip below compares the config code with itself, so the meanings
 * are pinned here. */
START_TEST(values_mean_what_the_docs_say)
{
    static const struct {
        const char *key, *val, *want;
    } cases[] = {
        {"trust-proxy", "yes", "yes"}, {"trust-proxy", "true", "yes"},
        {"trust-proxy", "1", "yes"}, {"trust-proxy", "no", "no"},
        {"trust-proxy", "false", "no"}, {"trust-proxy", "0", "no"},
        {"loglevel", "verbose", "debug"}, {"loglevel", "notice", "info"},
        {"loglevel", "warning", "warn"}, {"loglevel", "debug", "debug"},
        {"query-buffer-limit", "1k", "1024"}, {"query-buffer-limit", "1kb", "1024"},
        {"query-buffer-limit", "256m", "268435456"}, {"maxmemory", "4g", "4294967296"},
        {"maxmemory", "4GB", "4294967296"}, {"snapshot-cpulist", "0,1,2,6", "0-2,6"},
        {"snapshot-cpulist", "any", "any"}, {"slowlog-log-slower-than", "-1", "-1"},
        {"session_ttl", "3600", "3600"}, {"requirepass", "", ""},
        {"http-cors-origin", "*", "*"}, {"http-cors-origin", "", ""},
        {"http-cors-origin", "https://app.example.com:8443", "https://app.example.com:8443"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        struct net_config c;
        net_config_defaults(&c);
        set_ok(&c, cases[k].key, cases[k].val);
        char key[32], v[NET_CONFIG_VALUE_MAX];
        snprintf(key, sizeof key, "%s", cases[k].key);
        for (char *q = key; *q; q++)
            *q = *q == '_' ? '-' : *q;
        size_t i = 0;
        while (net_config_key(i) && strcmp(net_config_key(i), key) != 0)
            i++;
        ck_assert_ptr_nonnull(net_config_key(i));
        net_config_value(&c, i, v, sizeof v);
        ck_assert_msg(strcmp(v, cases[k].want) == 0, "%s %s: reads '%s', want '%s'",
                      cases[k].key, cases[k].val, v, cases[k].want);
    }
}
END_TEST

/* Which settings logs must redact: the password, however it is spelled. */
START_TEST(secret_settings)
{
    ck_assert(net_config_secret("requirepass"));
    ck_assert(net_config_secret("RequirePass"));
    ck_assert(!net_config_secret("maxmemory"));
    ck_assert(!net_config_secret("nosuch"));
    ck_assert(!net_config_secret(""));
    char longkey[100];
    memset(longkey, 'r', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = 0;
    ck_assert(!net_config_secret(longkey));
}
END_TEST

/* Random settings over random old text: what the rewrite writes reads back
 * to exactly the settings, whatever the file held before. */
START_TEST(reads_back_to_the_settings)
{
    static const struct {
        const char *key;
        const char *vals[4];
    } pool[] = {
        {"port", {"0", "1", "65535", "7878"}},
        {"bind", {"::1", "0.0.0.0", "127.0.0.1", "localhost"}},
        {"dir", {"./data", "/tmp/a b", "\"x", "d\ty"}},
        {"history", {"1", "64", "1000", "7"}},
        {"session_ttl", {"1", "86400", "3600", "99"}},
        {"maxclients", {"1", "10000", "77", "1000000"}},
        {"requirepass", {"", "p w", " lead", "trail "}},
        {"loglevel", {"debug", "info", "warn", "verbose"}},
        {"http-port", {"0", "7879", "8080", "1"}},
        {"trust-proxy", {"yes", "no", "true", "0"}},
        {"http-cors-origin", {"", "*", "https://a.example", "http://x:1"}},
        {"query-buffer-limit", {"1024", "256m", "1000000", "1g"}},
        {"snapshot-cpulist", {"any", "0", "0-3,6", "1,3,5"}},
        {"maxmemory", {"0", "1k", "1048577", "4g"}},
        {"slowlog-log-slower-than", {"-1", "0", "10000", "5"}},
        {"slowlog-max-len", {"0", "128", "1000000", "3"}},
    };
    enum { NPOOL = sizeof pool / sizeof pool[0] };
    uint64_t seed = test_seed("config", 2026);
    uint64_t rng = seed;
    char dir[256], path[300];
    conf_tmp(dir, path);
    for (int iter = 0; iter < 300; iter++) {
        struct net_config c;
        net_config_defaults(&c);
        char old[4096] = "";
        size_t ol = 0;
        if (trng_below(&rng, 4) == 0)  /* the loader and the rewrite both skip it */
            ol += (size_t)snprintf(old, sizeof old, "\xef\xbb\xbf");
        for (int k = 0; k < 12; k++) {  /* the old file: comments, blanks, settings */
            size_t p = trng_below(&rng, NPOOL);
            const char *v = pool[p].vals[trng_below(&rng, 4)];
            const char *indent = trng_below(&rng, 4) ? "" : " \t";
            switch (trng_below(&rng, 4)) {
            case 0:
                ol += (size_t)snprintf(old + ol, sizeof old - ol, "%s# note %d\n", indent, k);
                break;
            case 1:
                ol += (size_t)snprintf(old + ol, sizeof old - ol, "\n");
                break;
            default:
                ol += (size_t)snprintf(old + ol, sizeof old - ol, "%s%s \"%s\"\n", indent,
                                       pool[p].key, v);
            }
        }
        for (size_t p = 0; p < NPOOL; p++)  /* the running settings */
            if (trng_below(&rng, 2))
                set_ok(&c, pool[p].key, pool[p].vals[trng_below(&rng, 4)]);
        char *out = rewrite_ok(old, &c);
        write_file(path, out);
        struct net_config back;
        net_config_defaults(&back);
        char err[256];
        ck_assert_msg(net_config_load_file(&back, path, err, sizeof err) == NET_CFG_OK,
                      "seed %llu iter %d: %s\n%s", (unsigned long long)seed, iter, err, out);
        char a[NET_CONFIG_VALUE_MAX], b[NET_CONFIG_VALUE_MAX];
        for (size_t i = 0; net_config_key(i); i++) {
            net_config_value(&c, i, a, sizeof a);
            net_config_value(&back, i, b, sizeof b);
            ck_assert_msg(strcmp(a, b) == 0,
                          "seed %llu iter %d: %s is '%s', read back '%s' (replay: "
                          "SHORTSTAT_SEED=%llu)\n%s",
                          (unsigned long long)seed, iter, net_config_key(i), a, b,
                          (unsigned long long)seed, out);
        }
        /* every comment survives, in order */
        const char *at = out;
        for (const char *q = old; (q = strstr(q, "# note ")); q++) {
            char note[16];
            snprintf(note, sizeof note, "%.*s", (int)strcspn(q, "\n"), q);
            at = strstr(at, note);
            ck_assert_msg(at != NULL, "seed %llu iter %d: lost '%s'", (unsigned long long)seed,
                          iter, note);
        }
        free(out);
    }
    run_rmtree(dir);
}
END_TEST

/* A byte-order mark is the file's first bytes or not one at all, for the
 * loader as for the rewrite (which keeps a line it does not read as a
 * setting): anywhere else the loader refuses it by name. */
START_TEST(bom_only_at_the_start)
{
    char dir[256], path[300], err[256];
    conf_tmp(dir, path);
    struct net_config c;
    net_config_defaults(&c);
    write_file(path, "\xef\xbb\xbf \thistory 9\n");
    ck_assert_int_eq(net_config_load_file(&c, path, err, sizeof err), NET_CFG_OK);
    ck_assert_uint_eq(c.history, 9);
    write_file(path, "  \xef\xbb\xbfhistory 10\n");
    ck_assert_int_eq(net_config_load_file(&c, path, err, sizeof err), NET_CFG_EINVAL);
    ck_assert_msg(strstr(err, "line 1: a UTF-8 byte-order mark not at the start of the file"),
                  "%s", err);
    ck_assert_uint_eq(c.history, 9);
    write_file(path, "history 11\n\xef\xbb\xbfhistory 12\n");
    ck_assert_int_eq(net_config_load_file(&c, path, err, sizeof err), NET_CFG_EINVAL);
    ck_assert_msg(strstr(err, "line 2: a UTF-8 byte-order mark not at the start of the file"),
                  "%s", err);
    /* the rewrite agrees: it keeps the line and writes the setting anew */
    net_config_defaults(&c);
    set_ok(&c, "history", "5");
    char *out = rewrite_ok("  \xef\xbb\xbfhistory 10\n", &c);
    ck_assert_str_eq(out, "  \xef\xbb\xbfhistory 10\n" NET_CONFIG_REWRITE_MARK "\nhistory 5\n");
    free(out);
    run_rmtree(dir);
}
END_TEST

/* A NUL byte is refused by name on any line. The loader once read lines
 * with fgets and looked for their '\n' with strchr: a NUL hid it, so a NUL
 * on the last line (no newline) loaded, while anywhere else it was "line
 * too long"; CONFIG REWRITE ends that line with a newline, and the file it
 * wrote no longer loaded (found by fuzz_config's load round trip). */
START_TEST(nul_byte_refused)
{
    char dir[256], path[300], err[256];
    conf_tmp(dir, path);
    struct net_config c;
    static const struct {
        const char *text;
        size_t len;
        const char *line;
    } cases[] = {
#define NUL_CASE(text, line) {text, sizeof text - 1, line}
        NUL_CASE("history 9\n\0", "line 2: a NUL byte"),   /* what fuzz_config found */
        NUL_CASE("history 9\n\0\n", "line 2: a NUL byte"),
        NUL_CASE("dir a\0b\nhistory 9\n", "line 1: a NUL byte"),
        NUL_CASE("history 9\0", "line 1: a NUL byte"),
#undef NUL_CASE
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FILE *f = fopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_uint_eq(fwrite(cases[i].text, 1, cases[i].len, f), cases[i].len);
        ck_assert_int_eq(fclose(f), 0);
        net_config_defaults(&c);
        ck_assert_msg(net_config_load_file(&c, path, err, sizeof err) == NET_CFG_EINVAL,
                      "case %zu loaded", i);
        ck_assert_msg(strstr(err, cases[i].line), "case %zu: %s", i, err);
    }
    run_rmtree(dir);
}
END_TEST

/* A line of NET_CONFIG_LINE_MAX - 2 bytes loads, one byte more is "line too
 * long", with or without its newline (the last line is held to the same). */
START_TEST(line_length_bounded)
{
    char dir[256], path[300], err[256];
    conf_tmp(dir, path);
    static const struct {
        size_t len;
        bool newline, ok;
    } cases[] = {
        {NET_CONFIG_LINE_MAX - 2, true, true},
        {NET_CONFIG_LINE_MAX - 1, true, false},
        {NET_CONFIG_LINE_MAX - 2, false, true},
        {NET_CONFIG_LINE_MAX - 1, false, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text = malloc(cases[i].len + 16);
        ck_assert_ptr_nonnull(text);
        memset(text, 'x', cases[i].len);
        memcpy(text, "# ", 2);  /* a comment: any length of it is a valid line */
        size_t n = cases[i].len;
        if (cases[i].newline)
            text[n++] = '\n';
        FILE *f = fopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_uint_eq(fwrite(text, 1, n, f), n);
        ck_assert_int_eq(fclose(f), 0);
        free(text);
        struct net_config c;
        net_config_defaults(&c);
        int rc = net_config_load_file(&c, path, err, sizeof err);
        if (cases[i].ok) {
            ck_assert_msg(rc == NET_CFG_OK, "case %zu: %s", i, err);
        } else {
            ck_assert_msg(rc == NET_CFG_EINVAL, "case %zu loaded", i);
            ck_assert_msg(strstr(err, "line 1: line too long"), "case %zu: %s", i, err);
        }
    }
    run_rmtree(dir);
}
END_TEST

/* CONFIG REWRITE copies the lines it does not own as they are: one with a
 * NUL byte, which the loader refuses, is refused here too, not passed on
 * into a file the server would not start from. */
START_TEST(rewrite_refuses_nul)
{
    struct net_config c;
    net_config_defaults(&c);
    static const char old[] = "# keep\nhistory 9\nfoo\0bar\n";
    char out[65536], err[256];
    size_t len = 0;
    ck_assert_int_eq(net_config_rewrite(old, sizeof old - 1, &c, out, sizeof out, &len, err,
                                        sizeof err),
                     NET_CFG_EINVAL);
    ck_assert_msg(strstr(err, "line 3 holds a NUL byte"), "%s", err);
}
END_TEST

/* The file is replaced whole, keeps its mode, and a failure leaves it. */
START_TEST(file_replaced_atomically)
{
    char dir[256], path[300], err[256];
    conf_tmp(dir, path);
    struct net_config c;
    net_config_defaults(&c);
    set_ok(&c, "maxclients", "77");
    write_file(path, "# keep\nmaxclients 5\n");
    ck_assert_int_eq(chmod(path, 0640), 0);
    ck_assert_int_eq(net_config_rewrite_file(path, &c, err, sizeof err), NET_CFG_OK);
    char *got = slurp(path);
    ck_assert_str_eq(got, "# keep\nmaxclients 77\n");
    free(got);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0640);
    ck_assert_int_eq(run_count_names(dir, "s.conf."), 0);  /* no temp file left */

    /* a symlink: the file it points to is rewritten, the link stays; the
     * owner is kept (root may give the file away; others make it theirs) */
    char real[320], link[320];
    snprintf(real, sizeof real, "%s/real.conf", dir);
    snprintf(link, sizeof link, "%s/link.conf", dir);
    write_file(real, "maxclients 5\n");
    ck_assert_int_eq(symlink("real.conf", link), 0);
    if (geteuid() == 0)
        ck_assert_int_eq(chown(real, 65534, 65534), 0);
    ck_assert_int_eq(net_config_rewrite_file(link, &c, err, sizeof err), NET_CFG_OK);
    ck_assert_int_eq(lstat(link, &st), 0);
    ck_assert(S_ISLNK(st.st_mode));
    got = slurp(real);
    ck_assert_str_eq(got, "maxclients 77\n");
    free(got);
    ck_assert_int_eq(stat(real, &st), 0);
    ck_assert_uint_eq(st.st_uid, geteuid() == 0 ? 65534 : geteuid());
    ck_assert_int_eq(run_count_names(dir, "real.conf."), 0);
    unlink(link);
    unlink(real);

    /* no file yet: made, with what differs from the defaults */
    unlink(path);
    ck_assert_int_eq(net_config_rewrite_file(path, &c, err, sizeof err), NET_CFG_OK);
    got = slurp(path);
    ck_assert_str_eq(got, NET_CONFIG_REWRITE_MARK "\nmaxclients 77\n");
    free(got);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0644);  /* not mkstemp's 0600 */

    /* a value no line can hold: refused, the file as it was */
    set_ok(&c, "requirepass", "a\nb");
    ck_assert_int_eq(net_config_rewrite_file(path, &c, err, sizeof err), NET_CFG_EINVAL);
    got = slurp(path);
    ck_assert_str_eq(got, NET_CONFIG_REWRITE_MARK "\nmaxclients 77\n");
    free(got);

    /* a directory that is gone: the system's reason, with the step */
    char gone[320];
    snprintf(gone, sizeof gone, "%s/nodir/s.conf", dir);
    set_ok(&c, "requirepass", "");
    ck_assert_int_eq(net_config_rewrite_file(gone, &c, err, sizeof err), NET_CFG_EIO);
    ck_assert_msg(strstr(err, "/nodir/s.conf: create: No such file or directory"), "%s", err);
    /* a path that is a directory: unreadable as a file, changed nothing */
    ck_assert_int_eq(net_config_rewrite_file(dir, &c, err, sizeof err), NET_CFG_EIO);
    ck_assert_msg(strstr(err, ": not a regular file"), "%s", err);
    ck_assert_int_eq(run_count_names(dir, "s.conf"), 1);  /* s.conf only */
    char parent[256], tmpname[160];  /* nor a temp file beside the directory */
    snprintf(parent, sizeof parent, "%s", dir);
    *strrchr(parent, '/') = 0;
    snprintf(tmpname, sizeof tmpname, "%s.", strrchr(dir, '/') + 1);
    ck_assert_int_eq(run_count_names(parent, tmpname), 0);
    run_rmtree(dir);
}
END_TEST

extern Suite *config_suite(void);
Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("rewrite");
    tcase_add_test(tc, keeps_layout_and_sets_values);
    tcase_add_test(tc, values_that_need_quotes);
    tcase_add_test(tc, values_mean_what_the_docs_say);
    tcase_add_test(tc, secret_settings);
    tcase_add_test(tc, reads_back_to_the_settings);
    tcase_add_test(tc, bom_only_at_the_start);
    tcase_add_test(tc, nul_byte_refused);
    tcase_add_test(tc, line_length_bounded);
    tcase_add_test(tc, rewrite_refuses_nul);
    tcase_add_test(tc, file_replaced_atomically);
    suite_add_tcase(s, tc);
    return s;
}
