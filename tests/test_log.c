/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of net/log.c: a line is written whole, in one write, with its
 * prefix and level; one longer than the line buffer is cut and says so;
 * lines below the level are not written.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/log.h"

/* Runs fn with stderr sent to a temporary file; returns what it wrote. */
static char *capture(void (*fn)(void))
{
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(dup2(fileno(f), STDERR_FILENO), 0);
    fn();
    ck_assert_int_ge(dup2(saved, STDERR_FILENO), 0);
    close(saved);
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);  /* written through the fd */
    long n = ftell(f);
    ck_assert_int_ge(n, 0);
    char *b = calloc((size_t)n + 1, 1);
    ck_assert_ptr_nonnull(b);
    rewind(f);
    ck_assert_uint_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return b;
}

static void log_long(void)
{
    static char big[20001];
    memset(big, 'x', sizeof big - 1);
    net_log(NET_LOG_WARN, "start %s", big);
}

static void log_short_and_filtered(void)
{
    net_log(NET_LOG_WARN, "kept %d", 42);
    net_log(NET_LOG_DEBUG, "dropped");
}

START_TEST(long_line_is_cut_and_says_so)
{
    enum net_log_level was = net_log_get_level();
    net_log_set_level(NET_LOG_INFO);
    char *out = capture(log_long);
    size_t n = strlen(out);
    ck_assert_uint_eq(n, 16384);  /* the whole buffer, newline included */
    const char *cut = " ... (line truncated)\n";
    ck_assert_str_eq(out + n - strlen(cut), cut);
    ck_assert_ptr_nonnull(strstr(out, " warn  start xxx"));
    ck_assert_ptr_eq(strchr(out, '\n') + 1, out + n);  /* one line */
    free(out);

    out = capture(log_short_and_filtered);
    ck_assert_msg(strstr(out, " warn  kept 42\n") && !strstr(out, "dropped"), "%s", out);
    ck_assert_ptr_eq(strchr(out, '\n') + 1, out + strlen(out));  /* one line */
    free(out);
    net_log_set_level(was);
}
END_TEST

extern Suite *log_suite(void);
Suite *log_suite(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("log");
    tcase_add_test(tc, long_line_is_cut_and_says_so);
    suite_add_tcase(s, tc);
    return s;
}
