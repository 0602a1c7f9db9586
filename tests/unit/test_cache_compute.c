/*
 * test_cache_compute.c - the times of get-or-compute (node/svc/cache_compute.c;
 * docs/cache.md "Get-or-compute", "Time"), which are pure: how long a
 * primary waits for a compute (the task's run, and on top its wait for a
 * worker: as long as the run, at least CH_CACHE_COMPUTE_QUEUE_MS), how long
 * a node waits for a forwarded one (the wait the request carries, else its
 * own reckoning), and how a primary fits a compute into the wait of the
 * node that forwarded the request. The tables, forwards and callers are
 * covered on real nodes (tests/integration/test_cache_compute*.py).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "svc/cache_compute.h"
#include "svc/cache_internal.h"

static struct config cfg_default(void)
{
	struct config c;
	memset(&c, 0, sizeof(c));
	c.default_timeout_ms = 0;
	c.max_attempts = 3;
	c.backoff_ms = 100;
	c.backoff_max_ms = 30000;
	c.cache_timeout_ms = 2000;
	return c;
}

static void a_short_task_may_wait_the_queue_minimum_for_a_worker(void **state)
{
	(void)state;
	struct config c = cfg_default();
	Chorus__TaskOptions o = CHORUS__TASK_OPTIONS__INIT;
	o.timeout_ms = 300;
	assert_int_equal(cache_compute_wait_ms(&c, &o), 300 + CH_CACHE_COMPUTE_QUEUE_MS);
	o.timeout_ms = CH_CACHE_COMPUTE_QUEUE_MS;
	assert_int_equal(cache_compute_wait_ms(&c, &o), 2 * CH_CACHE_COMPUTE_QUEUE_MS);
}

static void a_long_task_may_wait_as_long_as_it_runs(void **state)
{
	(void)state;
	struct config c = cfg_default();
	/* no limit anywhere: 60 s, and as long again for a worker */
	assert_int_equal(cache_compute_wait_ms(&c, NULL), 120000);
	c.default_timeout_ms = 90000;
	assert_int_equal(cache_compute_wait_ms(&c, NULL), 180000);
	Chorus__TaskOptions o = CHORUS__TASK_OPTIONS__INIT;
	o.timeout_ms = 45000;
	assert_int_equal(cache_compute_wait_ms(&c, &o), 90000);
}

static void retries_count_their_runs_and_backoffs(void **state)
{
	(void)state;
	struct config c = cfg_default();
	Chorus__TaskOptions o = CHORUS__TASK_OPTIONS__INIT;
	o.timeout_ms = 10000;
	o.restart = CHORUS__RESTART_POLICY__RESTART_TRANSIENT;
	o.max_attempts = 3;
	o.backoff_ms = 1000;
	/* 3 runs, backoffs 1 s and 2 s: 33 s, and as long again */
	assert_int_equal(cache_compute_wait_ms(&c, &o), 66000);
	/* the node's attempts when the task names none, backoffs capped: 20.5 s,
	 * and the queue minimum */
	o.max_attempts = 0;
	c.max_attempts = 2;
	c.backoff_max_ms = 500;
	assert_int_equal(cache_compute_wait_ms(&c, &o), 10000 + 500 + 10000 + CH_CACHE_COMPUTE_QUEUE_MS);
}

static void the_wait_is_capped(void **state)
{
	(void)state;
	struct config c = cfg_default();
	Chorus__TaskOptions o = CHORUS__TASK_OPTIONS__INIT;
	o.timeout_ms = 400000;
	assert_int_equal(cache_compute_wait_ms(&c, &o), CH_CACHE_COMPUTE_WAIT_MS_MAX);
	o.timeout_ms = UINT32_MAX;
	o.restart = CHORUS__RESTART_POLICY__RESTART_TRANSIENT;
	o.max_attempts = UINT32_MAX;
	o.backoff_ms = UINT32_MAX;
	assert_int_equal(cache_compute_wait_ms(&c, &o), CH_CACHE_COMPUTE_WAIT_MS_MAX);
}

static void a_forward_waits_what_it_carries_else_its_own_reckoning(void **state)
{
	(void)state;
	struct config c = cfg_default();
	Chorus__TaskOptions o = CHORUS__TASK_OPTIONS__INIT;
	o.timeout_ms = 1000;
	Chorus__TaskSpec spec = CHORUS__TASK_SPEC__INIT;
	spec.handler = "echo";
	spec.opts = &o;
	Chorus__CacheReq req = CHORUS__CACHE_REQ__INIT;
	req.op = CHORUS__CACHE_OP__CACHE_GET_OR_COMPUTE;
	req.compute = &spec;
	/* the compute's wait, plus the read, the write and slack */
	assert_int_equal(cache_forward_timeout_ms(&c, &req), 1000 + CH_CACHE_COMPUTE_QUEUE_MS + 6000);
	req.wait_ms = 12345;
	assert_int_equal(cache_forward_timeout_ms(&c, &req), 12345);
	/* any other request: two cache timeouts, whatever it carries */
	req.op = CHORUS__CACHE_OP__CACHE_GET;
	assert_int_equal(cache_forward_timeout_ms(&c, &req), 4000);
}

static void the_primary_fits_a_compute_into_its_forwarders_wait(void **state)
{
	(void)state;
	/* not forwarded, or by an older node that says nothing: its own */
	assert_int_equal(cache_compute_wait_within(60000, 0, 5000, 4000), 60000);
	/* the forwarder waits longer than the primary would: its own */
	assert_int_equal(cache_compute_wait_within(60000, 600000, 5000, 4000), 60000);
	/* shorter: what is left of it after the read, less the reserve */
	assert_int_equal(cache_compute_wait_within(600000, 32500, 100, 1000), 31400);
	/* nothing left: no compute at all */
	assert_int_equal(cache_compute_wait_within(600000, 5000, 1000, 4000), 0);
	assert_int_equal(cache_compute_wait_within(600000, 5000, 9000, 4000), 0);
	assert_int_equal(cache_compute_wait_within(600000, 5000, 1000, 3999), 1);
	assert_int_equal(cache_compute_wait_within(600000, 5000, UINT64_MAX / 2, UINT64_MAX / 2),
	                 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(a_short_task_may_wait_the_queue_minimum_for_a_worker),
	    cmocka_unit_test(a_long_task_may_wait_as_long_as_it_runs),
	    cmocka_unit_test(retries_count_their_runs_and_backoffs),
	    cmocka_unit_test(the_wait_is_capped),
	    cmocka_unit_test(a_forward_waits_what_it_carries_else_its_own_reckoning),
	    cmocka_unit_test(the_primary_fits_a_compute_into_its_forwarders_wait),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
