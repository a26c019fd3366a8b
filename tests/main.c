/* SPDX-License-Identifier: MIT */
/*
 * The one Check runner. Every tests/test_X.c defines `Suite *X_suite(void)`;
 * the Makefile lists them in suites.h so no one edits a shared table.
 * CK_RUN_SUITE=X (make test SUITE=X) runs one suite; CK_VERBOSITY=verbose
 * names every test as it passes (CK_ENV reads it; unset is CK_NORMAL).
 */
#include <check.h>
#include <stdlib.h>

#define SUITE(name) Suite *name##_suite(void);
#include "suites.h"
#undef SUITE

int main(void)
{
    SRunner *sr = srunner_create(NULL);
#define SUITE(name) srunner_add_suite(sr, name##_suite());
#include "suites.h"
#undef SUITE
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
