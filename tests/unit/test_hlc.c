/* test_hlc.c - hybrid logical clock and cache versions (node/core/hlc.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "core/hlc.h"
#include "lib/err.h"
#include "lib/rng.h"

#define DRIFT_MS 500u
#define T0 UINT64_C(1700000000000) /* a plausible wall clock, ms */

static void layout_is_physical_then_logical(void **state)
{
	(void)state;
	uint64_t ts = hlc_pack(T0, 7);
	assert_true(ts == (T0 << 16 | 7));
	assert_true(hlc_physical_ms(ts) == T0);
	assert_int_equal(hlc_logical(ts), 7);
	/* integer order is (physical, logical) order */
	assert_true(hlc_pack(T0, HLC_LOGICAL_MAX) < hlc_pack(T0 + 1, 0));
	assert_true(hlc_pack(T0, 1) < hlc_pack(T0, 2));
	assert_true(hlc_physical_ms(hlc_pack(HLC_PHYSICAL_MAX, HLC_LOGICAL_MAX)) == HLC_PHYSICAL_MAX);
}

static void first_event_takes_the_wall_time(void **state)
{
	(void)state;
	struct hlc h;
	hlc_init(&h, DRIFT_MS);
	assert_true(hlc_last(&h) == 0);
	assert_true(hlc_now(&h, T0) == hlc_pack(T0, 0));
	assert_true(hlc_last(&h) == hlc_pack(T0, 0));
}

static void events_in_one_ms_count_logically(void **state)
{
	(void)state;
	struct hlc h;
	hlc_init(&h, DRIFT_MS);
	for (uint32_t i = 0; i < 100; i++)
		assert_true(hlc_now(&h, T0) == hlc_pack(T0, i));
	/* the wall clock moves on: the counter starts again */
	assert_true(hlc_now(&h, T0 + 1) == hlc_pack(T0 + 1, 0));
}

static void wall_clock_stepping_back_keeps_it_monotonic(void **state)
{
	(void)state;
	struct hlc h;
	hlc_init(&h, DRIFT_MS);
	uint64_t prev = hlc_now(&h, T0 + 10000);
	/* `date -s` ten seconds back: l stays, c counts */
	for (int i = 0; i < 1000; i++) {
		uint64_t ts = hlc_now(&h, T0 + (uint64_t)i);
		assert_true(ts > prev);
		assert_true(hlc_physical_ms(ts) == T0 + 10000);
		prev = ts;
	}
	/* the wall clock catches up and passes: back to wall time, c = 0 */
	assert_true(hlc_now(&h, T0 + 10001) == hlc_pack(T0 + 10001, 0));
}

static void wall_clock_stepping_forward_is_followed(void **state)
{
	(void)state;
	struct hlc h;
	hlc_init(&h, DRIFT_MS);
	hlc_now(&h, T0);
	hlc_now(&h, T0);
	assert_true(hlc_now(&h, T0 + 3600000) == hlc_pack(T0 + 3600000, 0));
}

/* Fig. 5, receive: the four cases of which of l, l_m, pt is largest */
static void receive_takes_remote_when_remote_is_ahead(void **state)
{
	(void)state;
	struct hlc h;
	hlc_init(&h, DRIFT_MS);
	hlc_now(&h, T0);
	uint64_t out = 0;
	assert_int_equal(hlc_update(&h, T0, hlc_pack(T0 + 200, 9), &out), 0);
	assert_true(out == hlc_pack(T0 + 200, 10));
	assert_true(hlc_last(&h) == out);
	/* a later local event is after the receive */
	assert_true(hlc_now(&h, T0 + 1) == hlc_pack(T0 + 200, 11));
}

static void receive_counts_on_when_local_is_ahead(void **state)
{
	(void)state;
	struct hlc h;
	hlc_init(&h, DRIFT_MS);
	hlc_now(&h, T0 + 50);
	hlc_now(&h, T0 + 50); /* (T0 + 50, 1) */
	uint64_t out = 0;
	assert_int_equal(hlc_update(&h, T0, hlc_pack(T0 + 10, 40), &out), 0);
	assert_true(out == hlc_pack(T0 + 50, 2));
}

static void receive_with_equal_physical_takes_max_counter(void **state)
{
	(void)state;
	struct hlc h;
	hlc_init(&h, DRIFT_MS);
	for (int i = 0; i < 5; i++)
		hlc_now(&h, T0 + 20); /* (T0 + 20, 4) */
	uint64_t out = 0;
	assert_int_equal(hlc_update(&h, T0, hlc_pack(T0 + 20, 30), &out), 0);
	assert_true(out == hlc_pack(T0 + 20, 31));
	assert_int_equal(hlc_update(&h, T0, hlc_pack(T0 + 20, 3), &out), 0);
	assert_true(out == hlc_pack(T0 + 20, 32));
}

static void receive_takes_wall_time_when_wall_is_ahead(void **state)
{
	(void)state;
	struct hlc h;
	hlc_init(&h, DRIFT_MS);
	hlc_now(&h, T0);
	uint64_t out = 0;
	assert_int_equal(hlc_update(&h, T0 + 100, hlc_pack(T0 + 40, 500), &out), 0);
	assert_true(out == hlc_pack(T0 + 100, 0));
}

static void remote_too_far_ahead_is_refused_not_adopted(void **state)
{
	(void)state;
	struct hlc h;
	hlc_init(&h, DRIFT_MS);
	uint64_t before = hlc_now(&h, T0);
	uint64_t out = 12345;
	assert_int_equal(hlc_update(&h, T0, hlc_pack(T0 + DRIFT_MS + 1, 0), &out), ERR_INVALID);
	assert_true(out == 12345);
	assert_true(hlc_last(&h) == before);
	assert_true(h.refused_count == 1);
	/* a forged "end of time" is refused too */
	assert_int_equal(hlc_update(&h, T0, UINT64_MAX, &out), ERR_INVALID);
	assert_true(h.refused_count == 2);
	/* exactly at the limit is accepted */
	assert_int_equal(hlc_update(&h, T0, hlc_pack(T0 + DRIFT_MS, HLC_LOGICAL_MAX - 1), &out), 0);
	assert_true(out == hlc_pack(T0 + DRIFT_MS, HLC_LOGICAL_MAX));
	/* the next local event still works after the clock was set ahead */
	assert_true(hlc_now(&h, T0) == hlc_pack(T0 + DRIFT_MS + 1, 0));
}

static void accepted_remotes_cannot_ratchet_the_clock(void **state)
{
	(void)state;
	struct hlc h;
	hlc_init(&h, DRIFT_MS);
	uint64_t out = 0;
	/* each step is within max_drift of our HLC, but the limit is our wall
	 * clock, which did not move */
	assert_int_equal(hlc_update(&h, T0, hlc_pack(T0 + DRIFT_MS, 0), &out), 0);
	assert_int_equal(hlc_update(&h, T0, hlc_pack(T0 + 2 * DRIFT_MS, 0), &out), ERR_INVALID);
	assert_true(hlc_physical_ms(hlc_last(&h)) == T0 + DRIFT_MS);
	/* with no drift allowed, anything ahead of the wall clock is refused */
	struct hlc z;
	hlc_init(&z, 0);
	assert_int_equal(hlc_update(&z, T0, hlc_pack(T0 + 1, 0), &out), ERR_INVALID);
	assert_int_equal(hlc_update(&z, T0, hlc_pack(T0, 3), &out), 0);
	assert_true(out == hlc_pack(T0, 4));
}

static void counter_overflow_carries_into_physical(void **state)
{
	(void)state;
	struct hlc h;
	hlc_init(&h, DRIFT_MS);
	assert_int_equal(hlc_restore(&h, T0, hlc_pack(T0, HLC_LOGICAL_MAX - 1)), 0);
	assert_true(hlc_now(&h, T0) == hlc_pack(T0, HLC_LOGICAL_MAX));
	assert_true(hlc_now(&h, T0) == hlc_pack(T0 + 1, 0));
	assert_true(hlc_now(&h, T0) == hlc_pack(T0 + 1, 1));
	/* by receive: a remote at the counter's top */
	struct hlc r;
	hlc_init(&r, DRIFT_MS);
	uint64_t out = 0;
	assert_int_equal(hlc_update(&r, T0, hlc_pack(T0 + 5, HLC_LOGICAL_MAX), &out), 0);
	assert_true(out == hlc_pack(T0 + 6, 0));
	/* a burst of 200,000 events in one wall ms: strictly increasing, and
	 * the physical part is ahead by exactly the carries */
	struct hlc b;
	hlc_init(&b, DRIFT_MS);
	uint64_t prev = 0;
	for (uint32_t i = 0; i < 200000; i++) {
		uint64_t ts = hlc_now(&b, T0);
		assert_true(ts > prev);
		prev = ts;
	}
	assert_true(hlc_physical_ms(prev) == T0 + 199999 / 65536);
	assert_int_equal(hlc_logical(prev), 199999 % 65536);
}

/* A restart reloads the greatest version the node wrote or accepted: the
 * clock goes up to it, never down, and never further than a peer would
 * accept from it (a clock restored a minute ahead would stamp writes that
 * every replica refuses until the wall clock caught up). */
static void restore_raises_never_lowers_and_stays_within_the_drift(void **state)
{
	(void)state;
	struct hlc h;
	hlc_init(&h, DRIFT_MS);
	/* restarted with a wall clock a little behind what it wrote */
	assert_int_equal(hlc_restore(&h, T0, hlc_pack(T0 + DRIFT_MS, 3)), 0);
	assert_true(hlc_now(&h, T0) == hlc_pack(T0 + DRIFT_MS, 4));
	assert_int_equal(hlc_restore(&h, T0, hlc_pack(T0, 0)), 0);
	assert_true(hlc_last(&h) == hlc_pack(T0 + DRIFT_MS, 4));
	/* further ahead than the drift: refused, the clock as it was */
	assert_int_equal(hlc_restore(&h, T0, hlc_pack(T0 + DRIFT_MS + 1, 0)), ERR_INVALID);
	assert_int_equal(hlc_restore(&h, T0, hlc_pack(T0 + 3600 * 1000, 0)), ERR_INVALID);
	assert_true(hlc_last(&h) == hlc_pack(T0 + DRIFT_MS, 4));
	/* what was refused becomes fine once the wall clock is there */
	assert_int_equal(hlc_restore(&h, T0 + 3600 * 1000, hlc_pack(T0 + 3600 * 1000, 0)), 0);
	assert_true(hlc_last(&h) == hlc_pack(T0 + 3600 * 1000, 0));
	assert_int_equal(hlc_restore(&h, UINT64_MAX, hlc_pack(HLC_PHYSICAL_MAX, 0)), ERR_INVALID);
	assert_true(hlc_last(&h) == hlc_pack(T0 + 3600 * 1000, 0));
}

static void the_last_ms_of_the_range_is_reserved(void **state)
{
	(void)state;
	struct hlc h;
	hlc_init(&h, DRIFT_MS);
	/* a wall clock beyond the 48 bits is clamped below the last ms */
	assert_true(hlc_now(&h, UINT64_MAX) == hlc_pack(HLC_PHYSICAL_MAX - 1, 0));
	assert_true(hlc_now(&h, UINT64_MAX) == hlc_pack(HLC_PHYSICAL_MAX - 1, 1));
	uint64_t out = 0;
	assert_int_equal(hlc_update(&h, UINT64_MAX, hlc_pack(HLC_PHYSICAL_MAX, 0), &out), ERR_INVALID);
	assert_int_equal(hlc_update(&h, UINT64_MAX, hlc_pack(HLC_PHYSICAL_MAX - 1, 9), &out), 0);
	assert_true(out == hlc_pack(HLC_PHYSICAL_MAX - 1, 10));
}

/* Random walks of local events and receives, with a wall clock that jumps
 * both ways and peers that are sometimes far ahead: every issued timestamp
 * is greater than the last, refusals change nothing, and l never gets more
 * than max_drift (plus carries) ahead of the greatest wall reading. */
static void random_walks_stay_monotonic_and_bounded(void **state)
{
	(void)state;
	struct rng rng;
	rng_seed(&rng, 2014);
	for (int run = 0; run < 50; run++) {
		struct hlc h;
		hlc_init(&h, DRIFT_MS);
		uint64_t wall = T0, wall_max = 0, prev = 0, events = 0;
		for (int i = 0; i < 5000; i++) {
			uint32_t r = rng_below(&rng, 100);
			if (r < 5)
				wall -= rng_below(&rng, 20000);  /* step back */
			else if (r < 30)
				wall += rng_below(&rng, 50);     /* time passes */
			if (wall > wall_max)
				wall_max = wall;
			uint64_t ts;
			if (rng_below(&rng, 2) == 0) {
				ts = hlc_now(&h, wall);
			} else {
				uint64_t remote_ms = wall - 2000 + rng_below(&rng, 2 * DRIFT_MS + 2600);
				uint64_t remote = hlc_pack(remote_ms, rng_below(&rng, 65536));
				uint64_t before = hlc_last(&h);
				if (hlc_update(&h, wall, remote, &ts) != 0) {
					assert_true(remote_ms > wall + DRIFT_MS);
					assert_true(hlc_last(&h) == before);
					continue;
				}
				assert_true(remote_ms <= wall + DRIFT_MS);
				assert_true(ts > remote);
			}
			events++;
			assert_true(ts > prev);
			prev = ts;
			assert_true(hlc_physical_ms(ts) <= wall_max + DRIFT_MS + events / 65536 + 1);
		}
	}
}

static struct cache_version version(uint64_t hlc, uint8_t first, uint8_t last)
{
	struct cache_version v;
	v.hlc = hlc;
	memset(v.node, 0x11, sizeof(v.node));
	v.node[0] = first;
	v.node[CACHE_VERSION_NODE_BYTES - 1] = last;
	return v;
}

static void versions_order_by_hlc_then_node(void **state)
{
	(void)state;
	struct cache_version a = version(hlc_pack(T0, 1), 0xff, 0xff);
	struct cache_version b = version(hlc_pack(T0, 2), 0x00, 0x00);
	/* the clock decides first, whatever the node */
	assert_int_equal(cache_version_cmp(&a, &b), -1);
	assert_int_equal(cache_version_cmp(&b, &a), 1);
	/* the same tick on two nodes: the node id bytes decide, unsigned */
	struct cache_version c = version(hlc_pack(T0, 1), 0x7f, 0xff);
	struct cache_version d = version(hlc_pack(T0, 1), 0x80, 0x00);
	assert_int_equal(cache_version_cmp(&c, &d), -1);
	assert_int_equal(cache_version_cmp(&d, &c), 1);
	/* the last byte counts too */
	struct cache_version e = version(hlc_pack(T0, 1), 0x7f, 0xfe);
	assert_int_equal(cache_version_cmp(&e, &c), -1);
	/* equal only when both fields are */
	struct cache_version f = c;
	assert_int_equal(cache_version_cmp(&c, &f), 0);
}

static void version_order_is_total_and_transitive(void **state)
{
	(void)state;
	struct rng rng;
	rng_seed(&rng, 7);
	enum { N = 64 };
	struct cache_version v[N];
	for (int i = 0; i < N; i++)
		v[i] = version(hlc_pack(T0, rng_below(&rng, 4)), (uint8_t)rng_below(&rng, 3),
		               (uint8_t)rng_below(&rng, 3));
	for (int i = 0; i < N; i++)
		for (int j = 0; j < N; j++) {
			int ij = cache_version_cmp(&v[i], &v[j]);
			assert_int_equal(ij, -cache_version_cmp(&v[j], &v[i]));
			assert_int_equal(ij == 0, memcmp(&v[i].hlc, &v[j].hlc, sizeof(uint64_t)) == 0 &&
			                          memcmp(v[i].node, v[j].node, CACHE_VERSION_NODE_BYTES) == 0);
			for (int k = 0; k < N; k++)
				if (ij < 0 && cache_version_cmp(&v[j], &v[k]) < 0)
					assert_int_equal(cache_version_cmp(&v[i], &v[k]), -1);
		}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(layout_is_physical_then_logical),
		cmocka_unit_test(first_event_takes_the_wall_time),
		cmocka_unit_test(events_in_one_ms_count_logically),
		cmocka_unit_test(wall_clock_stepping_back_keeps_it_monotonic),
		cmocka_unit_test(wall_clock_stepping_forward_is_followed),
		cmocka_unit_test(receive_takes_remote_when_remote_is_ahead),
		cmocka_unit_test(receive_counts_on_when_local_is_ahead),
		cmocka_unit_test(receive_with_equal_physical_takes_max_counter),
		cmocka_unit_test(receive_takes_wall_time_when_wall_is_ahead),
		cmocka_unit_test(remote_too_far_ahead_is_refused_not_adopted),
		cmocka_unit_test(accepted_remotes_cannot_ratchet_the_clock),
		cmocka_unit_test(counter_overflow_carries_into_physical),
		cmocka_unit_test(restore_raises_never_lowers_and_stays_within_the_drift),
		cmocka_unit_test(the_last_ms_of_the_range_is_reserved),
		cmocka_unit_test(random_walks_stay_monotonic_and_bounded),
		cmocka_unit_test(versions_order_by_hlc_then_node),
		cmocka_unit_test(version_order_is_total_and_transitive),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
