/* test_placement.c - power of two choices (node/core/placement.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/placement.h"
#include "lib/rng.h"

static const char *const tag_gpu[] = {"gpu"};
static const char *const tag_gpu_ssd[] = {"gpu", "ssd"};
static const char *const tag_ssd[] = {"ssd"};

static void no_candidate_is_minus_one(void **state)
{
	(void)state;
	struct rng rng;
	rng_seed(&rng, 1);
	assert_int_equal(placement_pick(NULL, 0, NULL, 0, &rng), -1);
	struct placement_candidate full[2] = {{.capacity = 2, .inflight = 2}, {.capacity = 0}};
	assert_int_equal(placement_pick(full, 2, NULL, 0, &rng), -1);
	assert_true(placement_satisfiable(full, 2, NULL, 0));
}

static void required_tags_are_honoured(void **state)
{
	(void)state;
	struct placement_candidate c[3] = {
		{.capacity = 4, .tags = tag_ssd, .tag_count = 1},
		{.capacity = 4, .tags = tag_gpu_ssd, .tag_count = 2},
		{.capacity = 4},
	};
	struct rng rng;
	rng_seed(&rng, 42);
	for (int i = 0; i < 200; i++)
		assert_int_equal(placement_pick(c, 3, tag_gpu, 1, &rng), 1);
	const char *const need[] = {"gpu", "ssd"};
	assert_int_equal(placement_pick(c, 3, need, 2, &rng), 1);
	const char *const nobody[] = {"tpu"};
	assert_int_equal(placement_pick(c, 3, nobody, 1, &rng), -1);
	assert_false(placement_satisfiable(c, 3, nobody, 1));
	assert_true(placement_satisfiable(c, 3, tag_gpu, 1));
}

static void of_two_the_less_loaded_wins(void **state)
{
	(void)state;
	struct placement_candidate c[2] = {
		{.capacity = 10, .inflight = 7},
		{.capacity = 10, .load = 2},
	};
	struct rng rng;
	rng_seed(&rng, 7);
	for (int i = 0; i < 100; i++)
		assert_int_equal(placement_pick(c, 2, NULL, 0, &rng), 1);
	/* gossiped load counts when it is above our own in-flight count */
	c[1].load = 9;
	for (int i = 0; i < 100; i++)
		assert_int_equal(placement_pick(c, 2, NULL, 0, &rng), 0);
	/* capacity matters: 4 of 20 is less loaded than 2 of 4 */
	struct placement_candidate d[2] = {{.capacity = 4, .inflight = 2}, {.capacity = 20, .inflight = 4}};
	for (int i = 0; i < 100; i++)
		assert_int_equal(placement_pick(d, 2, NULL, 0, &rng), 1);
}

static void full_candidates_are_skipped(void **state)
{
	(void)state;
	struct placement_candidate c[3] = {
		{.capacity = 1, .inflight = 1},
		{.capacity = 3, .inflight = 2},
		{.capacity = 2, .inflight = 2},
	};
	struct rng rng;
	rng_seed(&rng, 3);
	for (int i = 0; i < 100; i++)
		assert_int_equal(placement_pick(c, 3, NULL, 0, &rng), 1);
}

static void spreads_evenly_as_tasks_are_placed(void **state)
{
	(void)state;
	enum { N = 5, TASKS = 10000 };
	struct placement_candidate c[N];
	uint32_t placed[N] = {0};
	for (int i = 0; i < N; i++)
		c[i] = (struct placement_candidate){.capacity = 1000000};
	struct rng rng;
	rng_seed(&rng, 12345);
	for (int t = 0; t < TASKS; t++) {
		int p = placement_pick(c, N, NULL, 0, &rng);
		assert_true(p >= 0 && p < N);
		c[p].inflight++;
		placed[p]++;
	}
	uint32_t lo = placed[0], hi = placed[0];
	for (int i = 1; i < N; i++) {
		lo = placed[i] < lo ? placed[i] : lo;
		hi = placed[i] > hi ? placed[i] : hi;
	}
	/* two choices keep the gap to a few tasks, not O(sqrt(n)) */
	assert_true(hi - lo <= 3);
}

static void same_seed_same_choices(void **state)
{
	(void)state;
	struct placement_candidate c[4] = {{.capacity = 5}, {.capacity = 5}, {.capacity = 5}, {.capacity = 5}};
	struct rng a, b;
	rng_seed(&a, 99);
	rng_seed(&b, 99);
	for (int i = 0; i < 50; i++)
		assert_int_equal(placement_pick(c, 4, NULL, 0, &a), placement_pick(c, 4, NULL, 0, &b));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(no_candidate_is_minus_one),
		cmocka_unit_test(required_tags_are_honoured),
		cmocka_unit_test(of_two_the_less_loaded_wins),
		cmocka_unit_test(full_candidates_are_skipped),
		cmocka_unit_test(spreads_evenly_as_tasks_are_placed),
		cmocka_unit_test(same_seed_same_choices),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
