/* SPDX-License-Identifier: MIT */
/*
 * snap_test.h -- hooks for tests only; not part of the snapshot contract
 * (snap.h is).
 */
#ifndef SHORTSTAT_SNAP_TEST_H
#define SHORTSTAT_SNAP_TEST_H

#include <stddef.h>
#include <stdint.h>

/* The sort the writer and the loader use for fingerprint sets, ascending.
 * depth: quicksort levels before heapsort takes over (0: heapsort at once);
 * UINT32_MAX: the depth the snapshot code uses. */
void snap_test_sort_u64(uint64_t *v, size_t n, unsigned depth);

/* How many loads so far decoded rings on a second thread (it starts when
 * the process may use more than one CPU). */
uint64_t snap_test_threaded_loads(void);

#endif
