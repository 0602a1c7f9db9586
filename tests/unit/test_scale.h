/*
 * test_scale.h - how many iterations the unit tests' heavy loops run.
 *
 * A few unit tests repeat one check many times over random input: a model
 * test of 100,000 operations, a fuzzer over hundreds of seeds, a property
 * over thousands of trials. Valgrind runs them 20 to 100 times slower, so
 * the valgrind stage of scripts/test.sh sets CHORUS_TEST_SCALE_DOWN=10 and
 * those loops run a tenth of their iterations (never fewer than the minimum
 * each test names): every path is still taken, and valgrind still checks
 * each access and each leak on it. The normal and the ASan+UBSan ctest
 * stages leave it unset and run the full counts, so the random coverage is
 * kept; it is only not repeated under valgrind (docs/testing.md).
 *
 * Only loops whose count is not what the test asserts are scaled: a test
 * named for a size (ten_thousand_schedules_pack_and_load) or holding a
 * statistical bound that needs its sample (keys_spread_evenly_over_partitions)
 * keeps it.
 *
 * Header only, for tests/unit/test_*.c.
 */
#ifndef CHORUS_TEST_SCALE_H
#define CHORUS_TEST_SCALE_H

#include <stdio.h>
#include <stdlib.h>

#define TEST_SCALE_DOWN_MAX 1000

/* CHORUS_TEST_SCALE_DOWN, a whole number from 1 to TEST_SCALE_DOWN_MAX;
 * unset or empty is 1. Anything else stops the program: a typo must not
 * quietly run the full sizes where a short run was asked for. */
static inline unsigned test_scale_down(void)
{
	const char *s = getenv("CHORUS_TEST_SCALE_DOWN");
	if (s == NULL || *s == '\0')
		return 1;
	char *end;
	unsigned long v = strtoul(s, &end, 10);
	if (*s < '0' || *s > '9' || *end != '\0' || v < 1 || v > TEST_SCALE_DOWN_MAX) {
		fprintf(stderr, "CHORUS_TEST_SCALE_DOWN=%s: want a whole number from 1 to %d\n", s,
		        TEST_SCALE_DOWN_MAX);
		exit(2);
	}
	return (unsigned)v;
}

/* full / CHORUS_TEST_SCALE_DOWN, and never below min: the count under which
 * the loop would no longer reach what the test is there to check. */
static inline unsigned test_scaled(unsigned full, unsigned min)
{
	unsigned n = full / test_scale_down();
	return n < min ? min : n;
}

#endif
