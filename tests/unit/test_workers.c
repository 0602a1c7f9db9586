/*
 * test_workers.c - the supervisor (node/io/workers.c) with real forked
 * workers: dispatch and results through a poll loop, prefetch, crashes,
 * kill_task, restart intensity, and stop.
 *
 * Every wait is a small poll loop that ends on a condition or fails at a
 * deadline; workers_reap() is called on every turn instead of handling
 * SIGCHLD.
 *
 * Every callback checks that it is not called from inside workers_dispatch
 * or workers_kill_task (g_in_call): the node calls those from inside the
 * task core, which must not be re-entered.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmocka.h>

#include "io/workers.h"
#include "proto/chorus.pb-c.h"
#include "worker/handlers.h"

#define IDS_MAX 2048
/* Deadlines are generous: these tests also run under valgrind (workers are
 * forked, so they run under it too) and ASan, two at a time on two cores. */
#define DEADLINE_MS 30000

struct rec {
	uint32_t started[IDS_MAX], results[IDS_MAX], lost[IDS_MAX];
	int ok[IDS_MAX], was_running[IDS_MAX];
	uint32_t result_total, lost_total, echo_mismatches;
	int order_broken; /* a result arrived for a task never started */
	char last_why[512];
	char last_error[256];
	char last_output[256];
};

struct fixture {
	struct handler_registry reg;
	struct rec *rec;
	struct workers *w;
};

/* Set while the test is inside workers_dispatch / workers_kill_task. */
static int g_in_call;

static int kill_task(struct workers *w, uint64_t task_id)
{
	g_in_call = 1;
	int rc = workers_kill_task(w, task_id);
	g_in_call = 0;
	return rc;
}

static void on_started(void *ctx, uint64_t task_id, uint64_t now_ms)
{
	struct rec *r = ctx;
	(void)now_ms;
	assert_false(g_in_call);
	assert_true(task_id < IDS_MAX);
	r->started[task_id]++;
}

static void on_result(void *ctx, uint64_t task_id, int ok, const uint8_t *output,
                      size_t output_len, int32_t exit_code, const char *error, uint64_t now_ms)
{
	struct rec *r = ctx;
	(void)exit_code;
	(void)now_ms;
	assert_false(g_in_call);
	assert_true(task_id < IDS_MAX);
	if (r->started[task_id] == 0)
		r->order_broken = 1;
	r->results[task_id]++;
	r->ok[task_id] = ok;
	r->result_total++;
	snprintf(r->last_error, sizeof r->last_error, "%s", error ? error : "");
	size_t n = output_len < sizeof r->last_output - 1 ? output_len : sizeof r->last_output - 1;
	if (n > 0) /* output is NULL when empty */
		memcpy(r->last_output, output, n);
	r->last_output[n] = '\0';
	if (task_id >= 1 && task_id <= 1000) {
		char want[32];
		int wl = snprintf(want, sizeof want, "job-%llu", (unsigned long long)task_id);
		if (output_len != (size_t)wl || output == NULL || memcmp(output, want, output_len) != 0)
			r->echo_mismatches++;
	}
}

static void on_lost(void *ctx, uint64_t task_id, int was_running, const char *why, uint64_t now_ms)
{
	assert_false(g_in_call);
	struct rec *r = ctx;
	(void)now_ms;
	assert_true(task_id < IDS_MAX);
	r->lost[task_id]++;
	r->was_running[task_id] = was_running;
	r->lost_total++;
	snprintf(r->last_why, sizeof r->last_why, "%s", why);
}

static const char *const allow[] = {"/bin/sh", NULL};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	assert_non_null(f);
	f->rec = calloc(1, sizeof *f->rec);
	assert_non_null(f->rec);
	assert_int_equal(handlers_init(&f->reg, allow), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	if (f->w != NULL)
		workers_stop(f->w, 0);
	handlers_free(&f->reg);
	free(f->rec);
	free(f);
	return 0;
}

static struct workers_config config(uint32_t worker_count, uint32_t prefetch)
{
	struct workers_config cfg = {
		.pool_count = 1,
		.prefetch = prefetch,
		.intensity = 10,
		.period_ms = 5000,
		.degraded_backoff_ms = 1000,
		.output_max = 1 << 20,
	};
	snprintf(cfg.pools[0].name, sizeof cfg.pools[0].name, "default");
	cfg.pools[0].worker_count = worker_count;
	return cfg;
}

static void start(struct fixture *f, const struct workers_config *cfg)
{
	struct workers_events ev = {
		.ctx = f->rec, .started = on_started, .result = on_result, .lost = on_lost,
	};
	char err[256] = "";
	int rc = workers_start(&f->w, cfg, &f->reg, &ev, err, sizeof err);
	if (rc != 0)
		fail_msg("workers_start: %s", err);
}

/* One turn of a node-like loop: poll the worker fds, read, reap, tick. */
static void turn(struct workers *w)
{
	struct pollfd fds[64];
	int n = workers_pollfds(w, fds, 64);
	int rc = poll(fds, (nfds_t)n, 20);
	assert_true(rc >= 0 || errno == EINTR);
	for (int i = 0; rc > 0 && i < n; i++)
		if (fds[i].revents != 0)
			workers_on_readable(w, fds[i].fd);
	workers_reap(w);
	workers_tick(w, workers_now_ms());
}

#define PUMP_UNTIL(w, cond)                                                  \
	do {                                                                     \
		uint64_t pump_deadline_ = workers_now_ms() + DEADLINE_MS;            \
		while (!(cond)) {                                                    \
			if (workers_now_ms() > pump_deadline_)                           \
				fail_msg("timed out waiting for: %s", #cond);                \
			turn(w);                                                         \
		}                                                                    \
	} while (0)

static int dispatch(struct workers *w, uint64_t id, const char *handler, const char *payload)
{
	struct workers_job job = {
		.task_id = id,
		.handler = handler,
		.payload = (const uint8_t *)payload,
		.payload_len = strlen(payload),
		.timeout_ms = 10000,
	};
	g_in_call = 1;
	int rc = workers_dispatch(w, 0, &job);
	g_in_call = 0;
	return rc;
}

static uint32_t alive(const struct workers *w)
{
	struct workers_pool_status st;
	workers_pool_status(w, 0, &st);
	return st.alive;
}

/* ---- tests ---- */

static void thousand_echo_jobs_each_get_exactly_one_result(void **state)
{
	struct fixture *f = *state;
	struct workers_config cfg = config(2, 4);
	start(f, &cfg);
	struct rec *r = f->rec;
	uint64_t next = 1;
	uint64_t deadline = workers_now_ms() + DEADLINE_MS;
	while (r->result_total < 1000) {
		if (workers_now_ms() > deadline)
			fail_msg("only %u of 1000 results", r->result_total);
		while (next <= 1000 && workers_free_slots(f->w, 0) > 0) {
			char payload[32];
			snprintf(payload, sizeof payload, "job-%llu", (unsigned long long)next);
			assert_int_equal(dispatch(f->w, next, "echo", payload), 0);
			next++;
		}
		assert_true(workers_jobs_held(f->w) <= 2 * 4);
		turn(f->w);
	}
	for (uint64_t id = 1; id <= 1000; id++) {
		assert_int_equal(r->results[id], 1);
		assert_int_equal(r->started[id], 1);
		assert_true(r->ok[id]);
	}
	assert_int_equal(r->echo_mismatches, 0);
	assert_int_equal(r->lost_total, 0);
	assert_false(r->order_broken);
	assert_int_equal(workers_jobs_held(f->w), 0);
	assert_int_equal(workers_free_slots(f->w, 0), 8);
}

static void prefetch_is_respected(void **state)
{
	struct fixture *f = *state;
	struct workers_config cfg = config(2, 2);
	start(f, &cfg);
	assert_int_equal(workers_free_slots(f->w, 0), 4);
	for (uint64_t id = 1; id <= 4; id++)
		assert_int_equal(dispatch(f->w, id, "sleep", "10000"), 0);
	assert_int_equal(dispatch(f->w, 5, "echo", "no room"), -1);
	assert_int_equal(workers_free_slots(f->w, 0), 0);
	assert_int_equal(workers_jobs_held(f->w), 4);
	struct workers_pool_status st;
	workers_pool_status(f->w, 0, &st);
	assert_string_equal(st.name, "default");
	assert_int_equal(st.workers, 2);
	assert_int_equal(st.alive, 2);
	assert_int_equal(st.busy, 2);
	assert_int_equal(st.queued, 2);
	/* Least loaded first: each worker got one running job, then one queued.
	 * Their `started` waits for workers_deliver, outside the dispatches. */
	uint32_t running = 0;
	for (uint64_t id = 1; id <= 4; id++)
		running += f->rec->started[id];
	assert_int_equal(running, 0);
	workers_deliver(f->w);
	for (uint64_t id = 1; id <= 4; id++)
		running += f->rec->started[id];
	assert_int_equal(running, 2);
	/* Stopping with no grace: all four are lost, the two the workers had
	 * reached as running. */
	PUMP_UNTIL(f->w, workers_job_begun(f->w, 1) && workers_job_begun(f->w, 2));
	assert_false(workers_job_begun(f->w, 3));
	assert_false(workers_job_begun(f->w, 4));
	workers_stop(f->w, 0);
	f->w = NULL;
	uint32_t was_running = 0;
	for (uint64_t id = 1; id <= 4; id++) {
		assert_int_equal(f->rec->lost[id], 1);
		was_running += (uint32_t)f->rec->was_running[id];
	}
	assert_int_equal(was_running, 2);
}

static void crash_loses_running_and_queued_jobs_then_worker_restarts(void **state)
{
	struct fixture *f = *state;
	struct workers_config cfg = config(1, 3);
	start(f, &cfg);
	struct rec *r = f->rec;
	assert_int_equal(dispatch(f->w, 1, "crash", ""), 0);
	assert_int_equal(dispatch(f->w, 2, "echo", "two"), 0);
	assert_int_equal(dispatch(f->w, 3, "echo", "three"), 0);
	assert_int_equal(r->started[1], 0); /* queued, not raised inside dispatch */
	workers_deliver(f->w);
	assert_int_equal(r->started[1], 1);
	assert_int_equal(r->started[2], 0);
	PUMP_UNTIL(f->w, r->lost_total == 3);
	assert_int_equal(r->lost[1], 1);
	assert_int_equal(r->was_running[1], 1);
	assert_int_equal(r->lost[2], 1);
	assert_int_equal(r->was_running[2], 0);
	assert_int_equal(r->lost[3], 1);
	assert_int_equal(r->was_running[3], 0);
	assert_int_equal(r->result_total, 0);
	assert_non_null(strstr(r->last_why, "killed by signal 6 (Aborted)"));
	assert_int_equal(strncmp(r->last_why, "worker ", 7), 0);

	PUMP_UNTIL(f->w, alive(f->w) == 1);
	struct workers_pool_status st;
	workers_pool_status(f->w, 0, &st);
	assert_int_equal(st.restarts, 1);
	assert_false(st.degraded);
	assert_int_equal(workers_jobs_held(f->w), 0);
	assert_int_equal(dispatch(f->w, 4, "echo", "after"), 0);
	PUMP_UNTIL(f->w, r->results[4] == 1);
	assert_true(r->ok[4]);
	assert_string_equal(r->last_output, "after");
}

/* Four idle workers, four dispatches: four `started` wait in the queue (its
 * bound is one per worker) until a delivering call, which hands them out
 * before any result. */
static void started_waits_for_a_delivering_call_and_precedes_the_result(void **state)
{
	struct fixture *f = *state;
	struct workers_config cfg = config(4, 1);
	start(f, &cfg);
	struct rec *r = f->rec;
	for (uint64_t id = 1; id <= 4; id++)
		assert_int_equal(dispatch(f->w, id, "echo", "x"), 0);
	for (uint64_t id = 1; id <= 4; id++)
		assert_int_equal(r->started[id], 0);
	PUMP_UNTIL(f->w, r->result_total == 4);
	for (uint64_t id = 1; id <= 4; id++) {
		assert_int_equal(r->started[id], 1);
		assert_int_equal(r->results[id], 1);
	}
	assert_false(r->order_broken);
}

static void kill_task_kills_its_worker_and_reports_it_lost(void **state)
{
	struct fixture *f = *state;
	struct workers_config cfg = config(1, 2);
	start(f, &cfg);
	struct rec *r = f->rec;
	assert_int_equal(dispatch(f->w, 1, "sleep", "10000"), 0);
	assert_int_equal(dispatch(f->w, 2, "echo", "queued"), 0);
	workers_deliver(f->w);
	assert_int_equal(r->started[1], 1);
	assert_int_equal(kill_task(f->w, 999), -1);
	/* killed once the worker has it: reported as running (killed before
	 * the worker read it, it would be reported as never started) */
	PUMP_UNTIL(f->w, workers_job_begun(f->w, 1));
	uint64_t t0 = workers_now_ms();
	assert_int_equal(kill_task(f->w, 1), 0);
	PUMP_UNTIL(f->w, r->lost_total == 2);
	assert_true(workers_now_ms() - t0 < 10000 / 2); /* well before the sleep would end */
	assert_int_equal(r->was_running[1], 1);
	assert_int_equal(r->was_running[2], 0);
	assert_non_null(strstr(r->last_why, "killed by signal 9"));
	assert_non_null(strstr(r->last_why, "task 1 killed"));
	assert_int_equal(r->results[1], 0);
	/* Gone from the supervisor: a second kill finds nothing. */
	assert_int_equal(kill_task(f->w, 1), -1);

	PUMP_UNTIL(f->w, alive(f->w) == 1);
	assert_int_equal(dispatch(f->w, 3, "sha256", "abc"), 0);
	PUMP_UNTIL(f->w, r->results[3] == 1);
	assert_string_equal(r->last_output,
	                    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/* Killing a job queued behind the running one must not take the running
 * one with it: the queued job is killed as it starts. */
static void queued_task_is_killed_as_it_starts_sparing_the_running_one(void **state)
{
	struct fixture *f = *state;
	struct workers_config cfg = config(1, 2);
	start(f, &cfg);
	struct rec *r = f->rec;
	uint64_t t0 = workers_now_ms();
	assert_int_equal(dispatch(f->w, 1, "sleep", "300"), 0);
	assert_int_equal(dispatch(f->w, 2, "sleep", "10000"), 0);
	assert_int_equal(kill_task(f->w, 2), 0);
	PUMP_UNTIL(f->w, r->results[1] == 1 && r->lost_total == 1);
	assert_true(workers_now_ms() - t0 < 10000 / 2); /* well before task 2's sleep ends */
	/* killed as the node learns that it starts: the worker may have
	 * begun it or not yet (was_running says which) */
	assert_int_equal(r->lost[2], 1);
	assert_int_equal(r->results[2], 0);
	assert_non_null(strstr(r->last_why, "task 2 killed"));
}

static void intensity_exceeded_marks_pool_degraded_until_a_quiet_period(void **state)
{
	struct fixture *f = *state;
	struct workers_config cfg = config(1, 1);
	cfg.intensity = 1;
	/* Both crashes must land within one period, and the second crash must be
	 * seen before the backoff (counted from the first restart) runs out,
	 * even when each crash and restart takes a second under valgrind. */
	cfg.period_ms = 8000;
	cfg.degraded_backoff_ms = 3000;
	start(f, &cfg);
	struct rec *r = f->rec;
	struct workers_pool_status st;

	/* First crash: within intensity, restarted at once. */
	assert_int_equal(dispatch(f->w, 1, "crash", ""), 0);
	PUMP_UNTIL(f->w, r->lost[1] == 1 && alive(f->w) == 1);
	workers_pool_status(f->w, 0, &st);
	assert_int_equal(st.restarts, 1);
	assert_false(st.degraded);

	/* Second crash within the period: degraded, the restart waits. */
	assert_int_equal(dispatch(f->w, 2, "crash", ""), 0);
	PUMP_UNTIL(f->w, r->lost[2] == 1);
	workers_pool_status(f->w, 0, &st);
	assert_true(st.degraded);
	assert_int_equal(st.alive, 0);
	assert_int_equal(st.restarts, 1);
	assert_int_equal(workers_free_slots(f->w, 0), 0);
	assert_int_equal(dispatch(f->w, 3, "echo", "x"), -1);

	/* taken before the restart happens: a lower bound of its time */
	uint64_t restarted_ms = workers_now_ms();
	PUMP_UNTIL(f->w, alive(f->w) == 1);
	workers_pool_status(f->w, 0, &st);
	assert_int_equal(st.restarts, 2);
	assert_true(st.degraded);
	assert_int_equal(dispatch(f->w, 3, "echo", "x"), 0);
	PUMP_UNTIL(f->w, r->results[3] == 1);

	/* No restart for a whole period: degraded clears. */
	PUMP_UNTIL(f->w, (workers_pool_status(f->w, 0, &st), !st.degraded));
	assert_true(workers_now_ms() - restarted_ms >= cfg.period_ms);
}

static void degraded_restarts_are_spaced_by_backoff(void **state)
{
	struct fixture *f = *state;
	struct workers_config cfg = config(1, 1);
	cfg.intensity = 0; /* every restart is beyond the limit */
	cfg.period_ms = 60000;
	cfg.degraded_backoff_ms = 400;
	start(f, &cfg);
	struct rec *r = f->rec;
	struct workers_pool_status st;
	/* taken before the first restart: a lower bound of its time, so the
	 * check below cannot fail because this thread was slow to look */
	uint64_t first_ms = workers_now_ms();
	assert_int_equal(dispatch(f->w, 1, "crash", ""), 0);
	PUMP_UNTIL(f->w, r->lost[1] == 1 && alive(f->w) == 1);
	workers_pool_status(f->w, 0, &st);
	assert_true(st.degraded);
	assert_int_equal(dispatch(f->w, 2, "crash", ""), 0);
	PUMP_UNTIL(f->w, r->lost[2] == 1 && alive(f->w) == 1);
	assert_true(workers_now_ms() - first_ms >= cfg.degraded_backoff_ms);
	workers_pool_status(f->w, 0, &st);
	assert_int_equal(st.restarts, 2);
}

static void stop_lets_a_sleeping_job_finish_within_grace(void **state)
{
	struct fixture *f = *state;
	struct workers_config cfg = config(1, 1);
	start(f, &cfg);
	assert_int_equal(dispatch(f->w, 1, "sleep", "200"), 0);
	uint64_t t0 = workers_now_ms();
	workers_stop(f->w, 30000);
	f->w = NULL;
	uint64_t took = workers_now_ms() - t0;
	assert_true(took < 30000 / 2); /* returned when the job ended, not at the grace */
	assert_int_equal(f->rec->results[1], 1);
	assert_true(f->rec->ok[1]);
	assert_int_equal(f->rec->lost_total, 0);
}

static void stop_kills_a_job_that_outlives_grace(void **state)
{
	struct fixture *f = *state;
	struct workers_config cfg = config(2, 1);
	start(f, &cfg);
	assert_int_equal(dispatch(f->w, 1, "sleep", "60000"), 0);
	uint64_t t0 = workers_now_ms();
	workers_stop(f->w, 300);
	f->w = NULL;
	uint64_t took = workers_now_ms() - t0;
	assert_true(took >= 300);
	assert_true(took < 60000 / 4); /* killed at the grace, not waited for */
	assert_int_equal(f->rec->lost[1], 1);
	assert_int_equal(f->rec->was_running[1], 1);
	assert_non_null(strstr(f->rec->last_why, "shutdown grace of 300 ms ran out"));
}

static void exec_job_carries_argv_and_timeout(void **state)
{
	struct fixture *f = *state;
	struct workers_config cfg = config(1, 1);
	start(f, &cfg);
	const char *argv[] = {"/bin/sh", "-c", "printf '%s-%s' \"$0\" \"$(cat)\"", "argzero", NULL};
	struct workers_job job = {
		.task_id = 7,
		.handler = "exec",
		.payload = (const uint8_t *)"stdin",
		.payload_len = 5,
		.argv = argv,
		.timeout_ms = 5000,
	};
	assert_int_equal(workers_dispatch(f->w, 0, &job), 0);
	PUMP_UNTIL(f->w, f->rec->results[7] == 1);
	assert_true(f->rec->ok[7]);
	assert_string_equal(f->rec->last_output, "argzero-stdin");

	const char *slow[] = {"/bin/sh", "-c", "sleep 30", NULL};
	job.task_id = 8;
	job.argv = slow;
	job.timeout_ms = 150;
	assert_int_equal(workers_dispatch(f->w, 0, &job), 0);
	PUMP_UNTIL(f->w, f->rec->results[8] == 1);
	assert_false(f->rec->ok[8]);
	assert_string_equal(f->rec->last_error, "timed out after 150 ms");
}

static void oversized_job_is_refused(void **state)
{
	struct fixture *f = *state;
	struct workers_config cfg = config(1, 1);
	start(f, &cfg);
	size_t len = HANDLERS_JOB_FRAME_BYTES_MAX + 1;
	uint8_t *big = calloc(1, len);
	assert_non_null(big);
	struct workers_job job = {
		.task_id = 1, .handler = "echo", .payload = big, .payload_len = len,
	};
	assert_int_equal(workers_dispatch(f->w, 0, &job), WORKERS_ERR_JOB_TOO_BIG);
	free(big);
	assert_int_equal(workers_jobs_held(f->w), 0);
	assert_int_equal(f->rec->started[1], 0);
}

static void bad_config_is_refused(void **state)
{
	struct fixture *f = *state;
	struct workers_events ev = {.ctx = f->rec};
	char err[256];
	struct workers_config cfg = config(1, 0);
	assert_int_equal(workers_start(&f->w, &cfg, &f->reg, &ev, err, sizeof err), -1);
	assert_null(f->w);
	assert_non_null(strstr(err, "prefetch"));
	cfg = config(0, 1);
	assert_int_equal(workers_start(&f->w, &cfg, &f->reg, &ev, err, sizeof err), -1);
	assert_non_null(strstr(err, "pool default: 0 workers"));
	cfg = config(1, 1);
	cfg.pool_count = 0;
	assert_int_equal(workers_start(&f->w, &cfg, &f->reg, &ev, err, sizeof err), -1);
	cfg = config(1, 1);
	cfg.output_max = 0;
	assert_int_equal(workers_start(&f->w, &cfg, &f->reg, &ev, err, sizeof err), -1);
	assert_non_null(strstr(err, "output_max"));
}

static void big_results_are_reassembled(void **state)
{
	/* Results far larger than one read or the socket buffer. */
	struct fixture *f = *state;
	struct workers_config cfg = config(1, 2);
	start(f, &cfg);
	size_t len = 900 * 1024;
	char *payload = malloc(len + 1);
	assert_non_null(payload);
	memset(payload, 'z', len);
	payload[len] = '\0';
	assert_int_equal(dispatch(f->w, 1, "sha256", payload), 0);
	assert_int_equal(dispatch(f->w, 2, "echo", payload), 0);
	PUMP_UNTIL(f->w, f->rec->results[2] == 1);
	assert_true(f->rec->ok[1]);
	assert_true(f->rec->ok[2]);
	free(payload);
}


static struct workers_config config_short(uint32_t worker_count, uint32_t prefetch, uint32_t deep)
{
	struct workers_config cfg = config(worker_count, prefetch);
	cfg.prefetch_short = deep;
	/* wide bounds: an echo under valgrind, or preempted on a loaded
	 * machine, still counts as short (the 300 ms sleep below as long,
	 * even averaged with two echoes) */
	cfg.short_ewma_us = 10000;
	cfg.head_long_us = 50000;
	return cfg;
}

/* Runs n echo jobs (ids from..from+n-1) through the pool, refilling it as
 * slots free up, until all have their results. Returns the most jobs one
 * worker held at once. */
static uint32_t run_echoes(struct fixture *f, uint64_t from, uint64_t n)
{
	struct rec *r = f->rec;
	uint64_t next = from, end = from + n;
	uint32_t want = r->result_total + (uint32_t)n, most = 0;
	uint64_t deadline = workers_now_ms() + DEADLINE_MS;
	while (r->result_total < want) {
		if (workers_now_ms() > deadline)
			fail_msg("only %u of %u results", r->result_total, want);
		while (next < end) {
			char payload[32];
			snprintf(payload, sizeof payload, "job-%llu", (unsigned long long)next);
			if (dispatch(f->w, next, "echo", payload) != 0)
				break;
			next++;
		}
		struct workers_pool_status st;
		workers_pool_status(f->w, 0, &st);
		uint32_t per = st.busy ? (st.busy + st.queued + st.busy - 1) / st.busy : 0;
		if (per > most)
			most = per;
		workers_deliver(f->w);
		turn(f->w);
	}
	return most;
}

/* Short jobs: the pool learns it and queues up to prefetch_short per
 * worker; every job still gets exactly one result, in order. */
static void short_jobs_deepen_the_queue_to_prefetch_short(void **state)
{
	struct fixture *f = *state;
	struct workers_config cfg = config_short(2, 2, 32);
	start(f, &cfg);
	struct rec *r = f->rec;
	/* nothing known yet: the configured prefetch */
	assert_int_equal(workers_free_slots(f->w, 0), 4);
	run_echoes(f, 1, 100); /* the pool learns its jobs are short */
	assert_int_equal(workers_free_slots(f->w, 0), 64);
	uint32_t most = run_echoes(f, 101, 900);
	assert_true(most > 2);
	assert_true(most <= 32);
	for (uint64_t id = 1; id <= 1000; id++) {
		assert_int_equal(r->results[id], 1);
		assert_int_equal(r->started[id], 1);
		assert_true(r->ok[id]);
	}
	assert_int_equal(r->echo_mismatches, 0);
	assert_false(r->order_broken);
	assert_int_equal(r->lost_total, 0);
}

/* A long job: the pool falls back to `prefetch` at once (one sample of
 * 300 ms outweighs the short ones), so few jobs wait behind it. */
static void a_long_job_brings_the_queue_back_to_prefetch(void **state)
{
	struct fixture *f = *state;
	struct workers_config cfg = config_short(1, 2, 32);
	start(f, &cfg);
	struct rec *r = f->rec;
	run_echoes(f, 1, 100);
	assert_int_equal(workers_free_slots(f->w, 0), 32);
	assert_int_equal(dispatch(f->w, 101, "sleep", "300"), 0);
	/* the head is known to run long after head_long_us: no more
	 * than `prefetch` behind it from then, whatever the average */
	PUMP_UNTIL(f->w, workers_free_slots(f->w, 0) == 1);
	assert_int_equal(dispatch(f->w, 102, "echo", "x"), 0);
	assert_int_equal(dispatch(f->w, 103, "echo", "y"), -1);
	PUMP_UNTIL(f->w, r->results[102] == 1);
	/* the 300 ms run is in the pool's average now */
	assert_int_equal(workers_free_slots(f->w, 0), 2);
}

/* A worker crashes with 50 short jobs queued behind the crashing one: the
 * crashing job is lost as running, the 50 as never started (the task core
 * requeues those without charging an attempt); each is reported once. */
static void crash_with_a_deep_queue_reports_each_job_once(void **state)
{
	struct fixture *f = *state;
	struct workers_config cfg = config(1, 64);
	start(f, &cfg);
	struct rec *r = f->rec;
	run_echoes(f, 1, 100);
	assert_int_equal(workers_free_slots(f->w, 0), 64);
	assert_int_equal(dispatch(f->w, 200, "crash", ""), 0);
	for (uint64_t id = 201; id <= 250; id++)
		assert_int_equal(dispatch(f->w, id, "echo", "behind"), 0);
	workers_deliver(f->w);
	PUMP_UNTIL(f->w, r->lost_total == 51);
	assert_int_equal(r->lost[200], 1);
	assert_int_equal(r->was_running[200], 1);
	for (uint64_t id = 201; id <= 250; id++) {
		assert_int_equal(r->lost[id], 1);
		assert_int_equal(r->was_running[id], 0);
		assert_int_equal(r->results[id], 0);
	}
	assert_non_null(strstr(r->last_why, "killed by signal 6 (Aborted)"));
	PUMP_UNTIL(f->w, alive(f->w) == 1);
	assert_int_equal(workers_jobs_held(f->w), 0);
}

/* Echoes, but aborts the worker on the payload "boom". */
static int h_boom(const uint8_t *p, size_t n, struct chorus_handler_out *o)
{
	if (n == 4 && memcmp(p, "boom", 4) == 0)
		abort();
	return o->append(o, p, n) == 0 ? 0 : 1;
}

static void add_test_handler(struct handler_registry *reg, const char *name, chorus_handler_fn fn);

/* Results batched in the worker behind short jobs, then a crash: the jobs
 * that ran before the crash still get their results; the crashing one is
 * lost as running, those behind it as never started. No job is reported
 * twice. */
static void crash_after_batched_results_still_delivers_them(void **state)
{
	struct fixture *f = *state;
	add_test_handler(&f->reg, "boom", h_boom);
	/* a deep queue whatever the pool's average (slow under valgrind) */
	struct workers_config cfg = config(1, 64);
	start(f, &cfg);
	struct rec *r = f->rec;
	run_echoes(f, 1, 100);
	/* "boom" is known short after its first runs: results wait in the
	 * worker behind the next ones, up to the crash */
	for (uint64_t id = 300; id < 330; id++)
		assert_int_equal(dispatch(f->w, id, "boom", "before"), 0);
	assert_int_equal(dispatch(f->w, 330, "boom", "boom"), 0);
	for (uint64_t id = 331; id < 360; id++)
		assert_int_equal(dispatch(f->w, id, "echo", "after"), 0);
	workers_deliver(f->w);
	PUMP_UNTIL(f->w, r->results[329] + r->lost[329] == 1 && r->lost[359] == 1);
	/* the crashing worker wrote the results it was keeping (crash_flush)
	 * and the supervisor read them before reporting the rest lost */
	for (uint64_t id = 300; id < 330; id++) {
		assert_int_equal(r->results[id], 1);
		assert_int_equal(r->lost[id], 0);
		assert_true(r->ok[id]);
	}
	assert_int_equal(r->lost[330], 1);
	assert_int_equal(r->was_running[330], 1);
	for (uint64_t id = 331; id < 360; id++) {
		assert_int_equal(r->lost[id], 1);
		assert_int_equal(r->was_running[id], 0);
	}
}

/* Test-only handlers that misbehave on the wire. They write straight into
 * the worker's socket, which the supervisor places at fd 3. */
static void forge_write(const void *buf, size_t len)
{
	ssize_t w = write(3, buf, len);
	(void)w;
}

static int h_wrong_task(const uint8_t *p, size_t n, struct chorus_handler_out *o)
{
	(void)p;
	(void)n;
	(void)o;
	Chorus__WorkerResult res = CHORUS__WORKER_RESULT__INIT;
	res.task_id = 999;
	res.ok = 1;
	uint8_t frame[64];
	size_t len = chorus__worker_result__pack(&res, frame + 4);
	frame[0] = (uint8_t)len;
	frame[1] = frame[2] = frame[3] = 0;
	forge_write(frame, 4 + len);
	return 0;
}

static int h_huge_frame(const uint8_t *p, size_t n, struct chorus_handler_out *o)
{
	(void)p;
	(void)n;
	(void)o;
	uint32_t len = (1u << 20) + 64u * 1024u + 1u; /* output_max + 64 KiB + 1 */
	uint8_t hdr[4] = {(uint8_t)len, (uint8_t)(len >> 8), (uint8_t)(len >> 16),
	                  (uint8_t)(len >> 24)};
	forge_write(hdr, 4);
	return 0;
}

static void add_test_handler(struct handler_registry *reg, const char *name, chorus_handler_fn fn)
{
	assert_true(reg->count < HANDLERS_MAX);
	struct handler_entry *e = &reg->entries[reg->count++];
	memset(e, 0, sizeof *e);
	snprintf(e->name, sizeof e->name, "%s", name);
	e->fn = fn;
}

static void result_for_another_task_kills_the_worker(void **state)
{
	struct fixture *f = *state;
	add_test_handler(&f->reg, "wrong-task", h_wrong_task);
	struct workers_config cfg = config(1, 2);
	start(f, &cfg);
	struct rec *r = f->rec;
	assert_int_equal(dispatch(f->w, 1, "wrong-task", ""), 0);
	assert_int_equal(dispatch(f->w, 2, "echo", "behind"), 0);
	PUMP_UNTIL(f->w, r->lost_total == 2);
	assert_int_equal(r->result_total, 0);
	assert_int_equal(r->was_running[1], 1);
	/* job 2 may have begun before the SIGKILL landed (the worker wrote
	 * job 1's result and went on): was_running says which, either way */
	assert_int_equal(r->lost[2], 1);
	assert_non_null(strstr(r->last_why, "protocol error: result for task 999, running 1"));
	PUMP_UNTIL(f->w, alive(f->w) == 1);
}

static void oversized_result_frame_kills_the_worker(void **state)
{
	struct fixture *f = *state;
	add_test_handler(&f->reg, "huge-frame", h_huge_frame);
	struct workers_config cfg = config(1, 1);
	start(f, &cfg);
	struct rec *r = f->rec;
	assert_int_equal(dispatch(f->w, 1, "huge-frame", ""), 0);
	PUMP_UNTIL(f->w, r->lost_total == 1);
	assert_int_equal(r->result_total, 0);
	assert_non_null(strstr(r->last_why, "protocol error: result frame of 1114113 bytes"));
}

int main(void)
{
	/* crash tests must not litter core files */
	struct rlimit no_core = {0, 0};
	setrlimit(RLIMIT_CORE, &no_core);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(thousand_echo_jobs_each_get_exactly_one_result),
		T(prefetch_is_respected),
		T(crash_loses_running_and_queued_jobs_then_worker_restarts),
		T(started_waits_for_a_delivering_call_and_precedes_the_result),
		T(kill_task_kills_its_worker_and_reports_it_lost),
		T(queued_task_is_killed_as_it_starts_sparing_the_running_one),
		T(intensity_exceeded_marks_pool_degraded_until_a_quiet_period),
		T(degraded_restarts_are_spaced_by_backoff),
		T(stop_lets_a_sleeping_job_finish_within_grace),
		T(stop_kills_a_job_that_outlives_grace),
		T(exec_job_carries_argv_and_timeout),
		T(oversized_job_is_refused),
		T(bad_config_is_refused),
		T(big_results_are_reassembled),
		T(result_for_another_task_kills_the_worker),
		T(oversized_result_frame_kills_the_worker),
		T(short_jobs_deepen_the_queue_to_prefetch_short),
		T(a_long_job_brings_the_queue_back_to_prefetch),
		T(crash_with_a_deep_queue_reports_each_job_once),
		T(crash_after_batched_results_still_delivers_them),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
