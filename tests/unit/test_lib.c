/*
 * test_lib.c - the shared structures of the cores: idmap, timerheap, rng,
 * error names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/err.h"
#include "lib/idmap.h"
#include "lib/rng.h"
#include "lib/timerheap.h"

static void idmap_put_get_del_against_a_model(void **state)
{
	(void)state;
	enum { N = 5000 };
	static int present[N + 1];
	memset(present, 0, sizeof(present));
	struct idmap m;
	idmap_init(&m);
	struct rng r;
	rng_seed(&r, 7);
	for (int step = 0; step < 40000; step++) {
		uint64_t id = 1 + rng_below(&r, N);
		void *v = (void *)(uintptr_t)(id * 8);
		switch (rng_below(&r, 3)) {
		case 0:
		case 1:
			assert_int_equal(idmap_put(&m, id, v), 0);
			present[id] = 1;
			break;
		default:
			assert_ptr_equal(idmap_del(&m, id), present[id] ? v : NULL);
			present[id] = 0;
			break;
		}
	}
	uint64_t count = 0;
	for (uint64_t id = 1; id <= N; id++) {
		assert_ptr_equal(idmap_get(&m, id), present[id] ? (void *)(uintptr_t)(id * 8) : NULL);
		count += (uint64_t)present[id];
	}
	assert_int_equal(m.count, count);
	idmap_free(&m);
}

static void idmap_iteration_with_deletion_sees_each_entry_once(void **state)
{
	(void)state;
	for (uint64_t seed = 1; seed <= 50; seed++) {
		struct idmap m;
		idmap_init(&m);
		struct rng r;
		rng_seed(&r, seed);
		enum { N = 700 };
		static unsigned seen[4096];
		memset(seen, 0, sizeof(seen));
		uint64_t n = 0;
		for (int i = 0; i < N; i++) {
			uint64_t id = 1 + rng_below(&r, 4000);
			if (!idmap_get(&m, id))
				n++;
			assert_int_equal(idmap_put(&m, id, (void *)(uintptr_t)id), 0);
		}
		struct idmap_iter it;
		idmap_iter_init(&m, &it);
		uint64_t id, visits = 0;
		for (void *v; (v = idmap_iter_next(&m, &it, &id));) {
			assert_ptr_equal(v, (void *)(uintptr_t)id);
			seen[id]++;
			visits++;
			if (rng_below(&r, 2))
				assert_non_null(idmap_del(&m, id));
		}
		assert_int_equal(visits, n);
		for (int i = 0; i < 4096; i++)
			assert_true(seen[i] <= 1);
		idmap_free(&m);
	}
}

struct item {
	int value;
	struct timer tm;
};

static void timerheap_pops_in_time_order_with_updates_and_cancels(void **state)
{
	(void)state;
	enum { N = 3000 };
	struct item *items = calloc(N, sizeof(*items));
	assert_non_null(items);
	struct timerheap h;
	timerheap_init(&h);
	struct rng r;
	rng_seed(&r, 11);
	for (int i = 0; i < N; i++) {
		items[i].value = i;
		assert_int_equal(timerheap_set(&h, &items[i].tm, 1 + rng_below(&r, 100000)), 0);
	}
	for (int i = 0; i < N; i += 3)
		assert_int_equal(timerheap_set(&h, &items[i].tm, 1 + rng_below(&r, 100000)), 0);
	int cancelled = 0;
	for (int i = 1; i < N; i += 7) {
		timerheap_cancel(&h, &items[i].tm);
		assert_false(timer_armed(&items[i].tm));
		cancelled++;
	}
	assert_null(timerheap_pop_due(&h, 0));
	uint64_t last = 0;
	int popped = 0;
	for (struct timer *t; (t = timerheap_pop_due(&h, UINT64_MAX - 1));) {
		struct item *it = timer_owner(t, struct item, tm);
		assert_true(t->at_ms >= last);
		assert_false(timer_armed(t));
		assert_true(it->value >= 0 && it->value < N);
		last = t->at_ms;
		popped++;
	}
	assert_int_equal(popped, N - cancelled);
	assert_int_equal(timerheap_next_ms(&h), UINT64_MAX);
	timerheap_free(&h);
	free(items);
}

static void rng_is_deterministic_and_bounded(void **state)
{
	(void)state;
	struct rng a, b;
	rng_seed(&a, 42);
	rng_seed(&b, 42);
	unsigned hist[10] = {0};
	for (int i = 0; i < 100000; i++) {
		uint64_t x = rng_next(&a);
		assert_true(x == rng_next(&b));
		uint32_t k = rng_below(&a, 10);
		(void)rng_below(&b, 10);
		assert_true(k < 10);
		hist[k]++;
	}
	for (int i = 0; i < 10; i++)
		assert_true(hist[i] > 9000 && hist[i] < 11000);
}

static void every_error_code_has_a_name(void **state)
{
	(void)state;
	for (int c = 0; c > -ERR_COUNT_; c--)
		assert_string_not_equal(err_name(c), "unknown error");
	assert_string_equal(err_name(-ERR_COUNT_), "unknown error");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(idmap_put_get_del_against_a_model),
		cmocka_unit_test(idmap_iteration_with_deletion_sees_each_entry_once),
		cmocka_unit_test(timerheap_pops_in_time_order_with_updates_and_cancels),
		cmocka_unit_test(rng_is_deterministic_and_bounded),
		cmocka_unit_test(every_error_code_has_a_name),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
