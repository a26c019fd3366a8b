/* SPDX-License-Identifier: MIT */
/*
 * eng_test.h -- hooks for tests only; not part of the engine's contract.
 */
#ifndef SHORTSTAT_ENG_TEST_H
#define SHORTSTAT_ENG_TEST_H

#include <stdint.h>

#include "engine/eng.h"

/* The nth engine allocation from now fails (1 = the next); 0 disables. */
void eng_test_fail_alloc(struct eng *e, uint64_t nth);
/* The same, and every allocation after it fails too until
 * eng_test_fail_alloc(e, 0): memory that stays short, so a caller's retry
 * fails as well (net/cmd.c retries a TRACK its batch could not apply). */
void eng_test_fail_allocs_from(struct eng *e, uint64_t nth);
/* Allocations the engine has attempted so far. */
uint64_t eng_test_allocs(const struct eng *e);
/* Breaks one invariant on purpose, so a test can see eng_verify catch it
 * (0: a short's save count, 1: the records total, 2: a context's refcount,
 * 3: impressions + views wrap, 4: watch time with no watched view, 5: a
 * platform's shares past the short's, 6: a platform with no shares);
 * -1 when the engine has nothing to break that way. Destroy e afterwards. */
int eng_test_break(struct eng *e, int what);

#endif
