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
/* Allocations the engine has attempted so far. */
uint64_t eng_test_allocs(const struct eng *e);

#endif
