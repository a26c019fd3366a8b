/* SPDX-License-Identifier: MIT */
/*
 * The one Check runner. Every tests/test_X.c defines `Suite *X_suite(void)`;
 * the Makefile lists them in suites.h so no one edits a shared table.
 * CK_RUN_SUITE=X (make test SUITE=X) runs one suite; CK_VERBOSITY=verbose
 * names every test as it passes (CK_ENV reads it; unset is CK_NORMAL).
 * Tests make their scratch directories with run_mkdtemp (run_util.h).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>

#include "tests/run_util.h"

#define SUITE(name) Suite *name##_suite(void);
#include "suites.h"
#undef SUITE

int main(void)
{
    /* Every test's scratch directory lives under one root, removed below:
     * Check ends a failing test's process at the failed assertion, before
     * the test's own cleanup. */
    char root[] = "/tmp/shortstat-run-XXXXXX";
    if (!mkdtemp(root) || setenv("SHORTSTAT_TEST_TMP", root, 1) != 0) {
        perror("shortstat tests: scratch directory");
        return EXIT_FAILURE;
    }
    SRunner *sr = srunner_create(NULL);
#define SUITE(name) srunner_add_suite(sr, name##_suite());
#include "suites.h"
#undef SUITE
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    run_rmtree(root);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
