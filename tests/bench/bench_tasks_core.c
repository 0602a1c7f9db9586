/*
 * bench_tasks_core.c - cost of one loop iteration of the task core:
 * tasks_tick + tasks_next_deadline + tasks_pump, on a table the size of a
 * busy node: 100,000 queued tasks, 3,000 running with timeouts, 200
 * batches with deadlines (4,000 tasks) and a few hundred retries waiting
 * out a backoff.
 *
 * Two figures, in ns per iteration:
 *   idle   nothing is due and no worker is free: what every iteration of
 *          the loop pays just to learn that (the old core scanned every
 *          running task and every batch bucket twice here);
 *   churn  one worker result per iteration, so the pump dispatches one
 *          task (the busy steady state).
 *
 * The baseline is the previous core (scans) measured by this same program:
 * build it against that commit's tasks.c with -DBENCH_OLD_TASKS_API (its
 * calls took `uint64_t now_ms`), run both, compare. Not a ctest test.
 *
 * Usage: bench_tasks_core [iterations]   (default 20000)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/tasks.h"
#include "lib/clock.h"

#ifdef BENCH_OLD_TASKS_API
#define T_NOW(n) ((n)->mono_ms)
#else
#define T_NOW(n) (n)
#endif

#define QUEUED_TASKS 100000u
#define RUNNING_TASKS 3000u
#define BATCHES 200u
#define BATCH_TASKS 20u
#define BACKOFF_TASKS 300u
#define FAR_MS (1000u * 1000u * 1000u) /* timeouts and deadlines that never fire here */

struct fake {
	uint32_t running, slots;
	uint64_t *running_ids;
	uint32_t running_head, running_count, running_cap; /* FIFO of dispatched ids */
};

static struct fake F;

static int fx_dispatch(void *ctx, struct task *t)
{
	(void)ctx;
	if (F.running >= F.slots)
		return -1;
	F.running++;
	F.running_ids[(F.running_head + F.running_count) % F.running_cap] = t->id;
	F.running_count++;
	return 0;
}

static void fx_kill(void *ctx, const struct task *t)
{
	(void)ctx;
	(void)t;
}

static uint64_t take_running(void)
{
	if (!F.running_count)
		return 0;
	uint64_t id = F.running_ids[F.running_head];
	F.running_head = (F.running_head + 1) % F.running_cap;
	F.running_count--;
	F.running--;
	return id;
}

static uint64_t ns_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct task *mk(uint32_t timeout_ms, uint8_t restart)
{
	struct task *t = calloc(1, sizeof(*t));
	if (!t || !(t->handler = strdup("echo"))) {
		fprintf(stderr, "out of memory\n");
		exit(1);
	}
	t->opts.timeout_ms = timeout_ms;
	t->opts.restart = restart;
	t->opts.max_attempts = 3;
	t->opts.backoff_ms = FAR_MS;
	return t;
}

static void submit(struct tasks *ts, struct task *t, const struct now *now)
{
	uint64_t id;
	if (tasks_submit(ts, t, T_NOW(now), &id) != 0) {
		fprintf(stderr, "submit refused\n");
		exit(1);
	}
}

int main(int argc, char **argv)
{
	uint32_t iterations = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 20000;
	struct tasks_limits lim = {
		.node_name = "bench",
		.pool_count = 1,
		.queue_tasks_max = 200000,
		.default_max_attempts = 3,
		.default_backoff_ms = FAR_MS,
		.batches_max = 100000,
	};
	struct tasks_effects fx = {.dispatch = fx_dispatch, .kill = fx_kill};
	struct tasks *ts = tasks_create(&lim, &fx, 0, 0);
	F.running_cap = RUNNING_TASKS + BACKOFF_TASKS + 16;
	F.running_ids = calloc(F.running_cap, sizeof(*F.running_ids));
	if (!ts || !F.running_ids)
		return 1;
	struct now now = {.mono_ms = 1000, .wall_ms = UINT64_C(1700000000000)};

	/* running tasks with timeouts; some crash and wait out a long backoff */
	F.slots = RUNNING_TASKS + BACKOFF_TASKS;
	for (uint32_t i = 0; i < RUNNING_TASKS + BACKOFF_TASKS; i++)
		submit(ts, mk(FAR_MS + i, TASK_RESTART_TRANSIENT), &now);
	tasks_flush_done(ts); /* committed (nothing is written here): may run */
	tasks_pump(ts, T_NOW(&now));
	for (uint32_t i = 0; i < BACKOFF_TASKS; i++)
		tasks_on_worker_lost(ts, take_running(), 1, "crash", T_NOW(&now));
	F.slots = RUNNING_TASKS;
	/* batches with deadlines, their tasks queued behind the running ones */
	for (uint32_t b = 0; b < BATCHES; b++) {
		struct task *tv[BATCH_TASKS];
		for (uint32_t i = 0; i < BATCH_TASKS; i++)
			tv[i] = mk(FAR_MS, TASK_RESTART_TEMPORARY);
		uint64_t bid;
		if (tasks_submit_batch(ts, tv, BATCH_TASKS, 0, FAR_MS + b, T_NOW(&now), &bid) != 0)
			return 1;
	}
	for (uint32_t i = 0; i < QUEUED_TASKS; i++)
		submit(ts, mk(FAR_MS, TASK_RESTART_TEMPORARY), &now);
	tasks_flush_done(ts);
	tasks_pump(ts, T_NOW(&now));
	struct tasks_counters c;
	tasks_counters(ts, &c);
	printf("table: %" PRIu64 " queued, %" PRIu64 " running, %" PRIu64 " in backoff, %u batches\n",
	       c.queued, c.running, c.backoff, BATCHES);

	uint64_t sink = 0;
	/* idle: nothing due, no free worker */
	uint64_t t0 = ns_now();
	for (uint32_t i = 0; i < iterations; i++) {
		now.mono_ms++;
		now.wall_ms++;
		tasks_tick(ts, T_NOW(&now));
		sink += tasks_next_deadline(ts);
		tasks_pump(ts, T_NOW(&now));
	}
	uint64_t idle_ns = ns_now() - t0;

	/* churn: one result per iteration frees a worker; the pump fills it */
	t0 = ns_now();
	for (uint32_t i = 0; i < iterations; i++) {
		now.mono_ms++;
		now.wall_ms++;
		tasks_on_result(ts, take_running(), 1, NULL, 0, 0, NULL, "bench", T_NOW(&now));
		tasks_tick(ts, T_NOW(&now));
		sink += tasks_next_deadline(ts);
		tasks_pump(ts, T_NOW(&now));
	}
	uint64_t churn_ns = ns_now() - t0;
	tasks_counters(ts, &c);

	printf("%s core, %u iterations each\n",
#ifdef BENCH_OLD_TASKS_API
	       "old (scanning)",
#else
	       "new (timer heap)",
#endif
	       iterations);
	printf("idle  tick+next_deadline+pump: %10.1f ns/iteration\n", (double)idle_ns / iterations);
	printf("churn result+tick+next_deadline+pump: %10.1f ns/iteration (%" PRIu64
	       " succeeded)\n",
	       (double)churn_ns / iterations, c.succeeded);
	if (sink == 42)
		printf("\n"); /* keeps the calls from being optimised away */
	tasks_destroy(ts);
	free(F.running_ids);
	return 0;
}
