/*
 * test_tasks.c - unit tests of the task table core (node/core/tasks.c).
 *
 * The core is driven through a fake `struct tasks_effects` that models the
 * worker pools: dispatch takes a task while its pool has a free slot
 * (capacity set per test) and refuses (-1) otherwise; the slot stays busy
 * until the test reports the worker's result or its loss. The fake records
 * every dispatch, kill, final and batch progress, and checks on every
 * dispatch that no pool and no batch goes beyond its capacity. Time is a
 * plain `now_ms` variable that the tests advance themselves; AT(ms) hands it
 * to the core as both clocks (struct now), AT2(mono, wall) as two.
 *
 * The last test is a randomized model test: thousands of random operations
 * from a seeded PRNG, with invariants checked after each one (a quarter of
 * them per seed under valgrind: CHORUS_TEST_SCALE_DOWN, test_scale.h). Set
 * TASKS_MODEL_SEED=<n> to replay one seed; the seed is printed on failure.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/tasks.h"
#include "lib/err.h"
#include "test_scale.h"

/* The time handed to the core: both clocks equal, unless a test wants them
 * apart (the wall-clock step tests). */
#define AT(ms) (&(const struct now){.mono_ms = (ms), .wall_ms = (ms)})
#define AT2(mono, wall) (&(const struct now){.mono_ms = (mono), .wall_ms = (wall)})

/* ---- the fake effects ---- */

#define POOLS_MAX 4
#define IDS_MAX 16384
#define BATCH_IDS_MAX 4096
#define LOG_MAX 65536

/* What the fake knows about one task id. */
struct rec {
	int final_calls;      /* `final` effects seen */
	int final_state;
	int kills;            /* kill effects during the current dispatch */
	int in_slot;          /* held by a fake worker */
	uint32_t pool;
	uint64_t batch_id;
	int put_count;        /* put_task calls in the current flush */
	int persisted_final;  /* final state written by a successful flush */
	int released;         /* freed by tasks_release_final */
	int submitted;
	int cancel_requested; /* tasks_cancel accepted it */
	uint32_t timeout_ms;
	uint64_t deadline_ms; /* of the current attempt, 0 = none */
};

struct fake {
	uint32_t cap[POOLS_MAX];
	uint32_t busy[POOLS_MAX];
	uint32_t batch_max[BATCH_IDS_MAX];     /* registered by the tests */
	uint32_t batch_in_slots[BATCH_IDS_MAX];
	uint64_t dispatch_log[LOG_MAX];
	size_t dispatch_count;
	size_t refused_count;
	uint64_t kill_log[LOG_MAX];
	size_t kill_count;
	uint64_t final_log[LOG_MAX];
	size_t final_count;
	size_t progress_count;
	uint64_t last_progress_batch;
	uint32_t last_progress_done;
	/* flush recording */
	uint64_t put_log[LOG_MAX];
	size_t put_count;
	uint64_t put_batch_log[LOG_MAX];
	size_t put_batch_count;
	long put_fail_at;  /* put_task call number (1-based) that fails; 0 = none */
	int put_batch_fails;
	struct rec rec[IDS_MAX];
};

static struct fake F;

/* Set by the model test so that any failure names its seed. */
static uint64_t g_seed;
static int g_op = -1;

#define CHECK(cond)                                                                      \
	do {                                                                             \
		if (!(cond))                                                             \
			fail_msg("%s:%d: check failed: %s (seed %" PRIu64 ", op %d)",    \
			         __FILE__, __LINE__, #cond, g_seed, g_op);               \
	} while (0)

static struct rec *rec_of(uint64_t id)
{
	CHECK(id > 0 && id < IDS_MAX);
	return &F.rec[id];
}

static int fx_dispatch(void *ctx, struct task *t)
{
	(void)ctx;
	struct rec *r = rec_of(t->id);
	CHECK(t->state == TASK_RUNNING);
	CHECK(t->pool < POOLS_MAX);
	CHECK(!r->in_slot); /* never handed to two workers at once */
	CHECK(r->final_calls == 0);
	CHECK(!r->cancel_requested); /* a cancelled task never runs again */
	if (F.busy[t->pool] >= F.cap[t->pool]) {
		F.refused_count++;
		return -1;
	}
	if (t->batch_id) {
		CHECK(t->batch_id < BATCH_IDS_MAX);
		uint32_t max = F.batch_max[t->batch_id];
		if (max)
			CHECK(F.batch_in_slots[t->batch_id] + 1 <= max);
		F.batch_in_slots[t->batch_id]++;
	}
	F.busy[t->pool]++;
	r->in_slot = 1;
	r->kills = 0;
	r->pool = t->pool;
	r->batch_id = t->batch_id;
	r->timeout_ms = t->opts.timeout_ms;
	r->deadline_ms = t->opts.timeout_ms ? t->started_ms + t->opts.timeout_ms : 0;
	CHECK(F.dispatch_count < LOG_MAX);
	F.dispatch_log[F.dispatch_count++] = t->id;
	return 0;
}

static void fx_kill(void *ctx, const struct task *t)
{
	(void)ctx;
	struct rec *r = rec_of(t->id);
	CHECK(r->in_slot);      /* only a dispatched task can be killed */
	CHECK(r->kills == 0);   /* once per attempt */
	CHECK(t->state == TASK_RUNNING);
	r->kills++;
	CHECK(F.kill_count < LOG_MAX);
	F.kill_log[F.kill_count++] = t->id;
}

static void fx_final(void *ctx, const struct task *t)
{
	(void)ctx;
	struct rec *r = rec_of(t->id);
	CHECK(task_state_is_final(t->state));
	CHECK(r->final_calls == 0);
	CHECK(!r->in_slot); /* a task ends only after its worker let go of it */
	/* cancel beats timeout and retry; only a real answer beats cancel */
	if (r->cancel_requested)
		CHECK(t->state == TASK_CANCELLED || t->state == TASK_SUCCEEDED ||
		      t->state == TASK_FAILED);
	r->final_calls++;
	r->final_state = t->state;
	CHECK(F.final_count < LOG_MAX);
	F.final_log[F.final_count++] = t->id;
}

static void fx_batch_progress(void *ctx, const struct batch *b)
{
	(void)ctx;
	CHECK(b->done <= b->total);
	F.progress_count++;
	F.last_progress_batch = b->id;
	F.last_progress_done = b->done;
}

static const struct tasks_effects FX = {
	.ctx = NULL,
	.dispatch = fx_dispatch,
	.kill = fx_kill,
	.final = fx_final,
	.batch_progress = fx_batch_progress,
};

/* The worker holding id let go of it (the shell is about to tell the core). */
static void slot_free(uint64_t id)
{
	struct rec *r = rec_of(id);
	CHECK(r->in_slot);
	r->in_slot = 0;
	CHECK(F.busy[r->pool] > 0);
	F.busy[r->pool]--;
	if (r->batch_id) {
		CHECK(F.batch_in_slots[r->batch_id] > 0);
		F.batch_in_slots[r->batch_id]--;
	}
}

static void worker_result(struct tasks *ts, uint64_t id, int ok, const char *out, int32_t code,
                          const char *err, uint64_t now_ms)
{
	slot_free(id);
	tasks_on_result(ts, id, ok, (const uint8_t *)out, out ? strlen(out) : 0, code, err, "node-a",
	                AT(now_ms));
}

static void worker_lost(struct tasks *ts, uint64_t id, int was_running, const char *why,
                        uint64_t now_ms)
{
	slot_free(id);
	tasks_on_worker_lost(ts, id, was_running, why, AT(now_ms));
}

static int put_task(void *arg, const struct task *t)
{
	(void)arg;
	CHECK(F.put_count < LOG_MAX);
	F.put_log[F.put_count++] = t->id;
	if (F.put_fail_at && (long)F.put_count == F.put_fail_at)
		return ERR_STORAGE;
	struct rec *r = rec_of(t->id);
	r->put_count++;
	CHECK(r->put_count == 1); /* once per flush */
	return 0;
}

static int put_batch(void *arg, const struct batch *b)
{
	(void)arg;
	CHECK(F.put_batch_count < LOG_MAX);
	F.put_batch_log[F.put_batch_count++] = b->id;
	return F.put_batch_fails ? ERR_STORAGE : 0;
}

/* Flush with the recording callbacks; commit (flush_done) when it worked. */
static int flush(struct tasks *ts)
{
	F.put_count = 0;
	F.put_batch_count = 0;
	for (size_t i = 0; i < IDS_MAX; i++)
		F.rec[i].put_count = 0;
	int rc = tasks_flush(ts, put_task, put_batch, NULL);
	if (rc == 0)
		tasks_flush_done(ts);
	return rc;
}

/* ---- helpers ---- */

/* What the shell does after every commit: the new tasks are durable (a
 * successful flush), then whatever may run is dispatched. Tasks admitted
 * since the last commit are never dispatched (see the durability tests). */
static void pump(struct tasks *ts, const struct now *now)
{
	assert_int_equal(flush(ts), 0);
	tasks_pump(ts, now);
}

static struct tasks_limits default_limits(void)
{
	struct tasks_limits lim = {
		.pool_count = 2,
		.queue_tasks_max = 64,
		.default_timeout_ms = 0,
		.default_max_attempts = 3,
		.default_backoff_ms = 100,
		.backoff_max_ms = 1000,
		.batches_max = 16,
	};
	return lim;
}

static struct task *mk_task(uint32_t pool, uint8_t restart, uint32_t timeout_ms,
                            uint32_t max_attempts, uint32_t backoff_ms)
{
	struct task *t = calloc(1, sizeof(*t));
	assert_non_null(t);
	t->handler = strdup("echo");
	assert_non_null(t->handler);
	t->payload = malloc(3);
	assert_non_null(t->payload);
	memcpy(t->payload, "abc", 3);
	t->payload_len = 3;
	t->pool = pool;
	t->opts.restart = restart;
	t->opts.timeout_ms = timeout_ms;
	t->opts.max_attempts = max_attempts;
	t->opts.backoff_ms = backoff_ms;
	return t;
}

static uint64_t submit(struct tasks *ts, struct task *t, uint64_t now_ms)
{
	uint64_t id = 0;
	assert_int_equal(tasks_submit(ts, t, AT(now_ms), &id), 0);
	assert_true(id > 0);
	rec_of(id)->submitted = 1;
	return id;
}

static uint64_t submit_simple(struct tasks *ts, uint32_t pool, uint8_t restart, uint64_t now_ms)
{
	return submit(ts, mk_task(pool, restart, 0, 0, 0), now_ms);
}

static uint64_t submit_batch(struct tasks *ts, uint32_t n, uint32_t pool, uint8_t restart,
                             uint32_t max_conc, uint32_t deadline_ms, uint64_t now_ms)
{
	struct task *tv[64];
	assert_true(n <= 64);
	for (uint32_t i = 0; i < n; i++)
		tv[i] = mk_task(pool, restart, 0, 0, 0);
	uint64_t bid = 0;
	assert_int_equal(tasks_submit_batch(ts, tv, n, max_conc, deadline_ms, AT(now_ms), &bid), 0);
	assert_true(bid > 0 && bid < BATCH_IDS_MAX);
	F.batch_max[bid] = max_conc;
	for (uint32_t i = 0; i < n; i++) {
		assert_int_equal(tv[i]->batch_id, bid);
		assert_int_equal(tv[i]->batch_index, i);
		rec_of(tv[i]->id)->submitted = 1;
	}
	return bid;
}

static int state_of(const struct tasks *ts, uint64_t id)
{
	const struct task *t = tasks_get(ts, id);
	assert_non_null(t);
	return t->state;
}

static struct tasks *new_table(const struct tasks_limits *lim, uint32_t cap0, uint32_t cap1)
{
	memset(&F, 0, sizeof(F));
	F.cap[0] = cap0;
	F.cap[1] = cap1;
	struct tasks *ts = tasks_create(lim, &FX, 0, 0);
	assert_non_null(ts);
	return ts;
}

static struct tasks *new_default(uint32_t cap0, uint32_t cap1)
{
	struct tasks_limits lim = default_limits();
	return new_table(&lim, cap0, cap1);
}

static struct tasks_counters counters(const struct tasks *ts)
{
	struct tasks_counters c;
	tasks_counters(ts, &c);
	return c;
}

/* ---- dispatch and queues ---- */

static void pump_dispatches_in_fifo_order_per_pool(void **state)
{
	(void)state;
	struct tasks *ts = new_default(10, 10);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 5);
	uint64_t b = submit_simple(ts, 1, TASK_RESTART_TEMPORARY, 5);
	uint64_t c = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 5);
	uint64_t d = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 5);
	assert_int_equal(state_of(ts, a), TASK_QUEUED);
	assert_int_equal(F.dispatch_count, 0); /* submit alone dispatches nothing */
	assert_int_equal(tasks_pool_queued(ts, 0), 3);
	assert_int_equal(tasks_pool_queued(ts, 1), 1);

	pump(ts, AT(10));
	assert_int_equal(F.dispatch_count, 4);
	/* FIFO within pool 0, pool 1 in its own order */
	uint64_t p0[3];
	size_t n0 = 0;
	for (size_t i = 0; i < F.dispatch_count; i++)
		if (F.dispatch_log[i] != b)
			p0[n0++] = F.dispatch_log[i];
	assert_int_equal(n0, 3);
	assert_int_equal(p0[0], a);
	assert_int_equal(p0[1], c);
	assert_int_equal(p0[2], d);

	const struct task *t = tasks_get(ts, a);
	assert_int_equal(t->state, TASK_RUNNING);
	assert_int_equal(t->attempts, 1);
	assert_int_equal(t->submitted_ms, 5);
	assert_int_equal(t->started_ms, 10);
	assert_int_equal(tasks_pool_queued(ts, 0), 0);
	struct tasks_counters cnt = counters(ts);
	assert_int_equal(cnt.running, 4);
	assert_int_equal(cnt.queued, 0);
	assert_int_equal(cnt.submitted, 4);
	tasks_destroy(ts);
}

static void refused_dispatch_keeps_task_at_head(void **state)
{
	(void)state;
	struct tasks *ts = new_default(1, 0);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	uint64_t b = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	uint64_t c = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	pump(ts, AT(1));
	assert_int_equal(F.dispatch_count, 1);
	assert_int_equal(F.dispatch_log[0], a);
	assert_true(F.refused_count >= 1);
	/* the refused task is untouched: still queued, no attempt charged */
	const struct task *tb = tasks_get(ts, b);
	assert_int_equal(tb->state, TASK_QUEUED);
	assert_int_equal(tb->attempts, 0);
	assert_int_equal(tb->started_ms, 0);
	assert_int_equal(tasks_pool_queued(ts, 0), 2);

	pump(ts, AT(2)); /* still no room: nothing moves */
	assert_int_equal(F.dispatch_count, 1);

	worker_result(ts, a, 1, "x", 0, NULL, 3);
	pump(ts, AT(3));
	assert_int_equal(F.dispatch_count, 2);
	assert_int_equal(F.dispatch_log[1], b); /* b kept its place at the head */
	assert_int_equal(tasks_get(ts, b)->attempts, 1);
	worker_result(ts, b, 1, "x", 0, NULL, 4);
	pump(ts, AT(4));
	assert_int_equal(F.dispatch_log[2], c);
	tasks_destroy(ts);
}

static void pools_are_independent(void **state)
{
	(void)state;
	struct tasks *ts = new_default(0, 2);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	uint64_t b = submit_simple(ts, 1, TASK_RESTART_TEMPORARY, 0);
	uint64_t c = submit_simple(ts, 1, TASK_RESTART_TEMPORARY, 0);
	uint64_t d = submit_simple(ts, 1, TASK_RESTART_TEMPORARY, 0);
	pump(ts, AT(1));
	/* pool 0 full does not hold back pool 1 */
	assert_int_equal(F.dispatch_count, 2);
	assert_int_equal(F.dispatch_log[0], b);
	assert_int_equal(F.dispatch_log[1], c);
	assert_int_equal(state_of(ts, a), TASK_QUEUED);
	assert_int_equal(state_of(ts, d), TASK_QUEUED);
	assert_int_equal(tasks_pool_queued(ts, 0), 1);
	assert_int_equal(tasks_pool_queued(ts, 1), 1);

	F.cap[0] = 1; /* room in pool 0 only */
	pump(ts, AT(2));
	assert_int_equal(F.dispatch_count, 3);
	assert_int_equal(F.dispatch_log[2], a);
	assert_int_equal(state_of(ts, d), TASK_QUEUED);
	tasks_destroy(ts);
}

static void draining_stops_dispatch(void **state)
{
	(void)state;
	struct tasks *ts = new_default(4, 4);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	tasks_set_draining(ts, 1);
	pump(ts, AT(1));
	assert_int_equal(F.dispatch_count, 0);
	assert_int_equal(state_of(ts, a), TASK_QUEUED);
	tasks_set_draining(ts, 0);
	pump(ts, AT(2));
	assert_int_equal(F.dispatch_count, 1);
	tasks_destroy(ts);
}

/* ---- results ---- */

static void ok_result_succeeds_with_output_exit_code_and_node(void **state)
{
	(void)state;
	struct tasks *ts = new_default(1, 1);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TRANSIENT, 0);
	pump(ts, AT(10));
	char *out = strdup("hello");
	assert_non_null(out);
	slot_free(a);
	tasks_on_result(ts, a, 1, (const uint8_t *)out, 5, 7, NULL, "node-b", AT(25));
	memset(out, 'X', 5); /* the core must have copied it */
	free(out);

	const struct task *t = tasks_get(ts, a);
	assert_non_null(t);
	assert_int_equal(t->state, TASK_SUCCEEDED);
	assert_int_equal(t->output_len, 5);
	assert_memory_equal(t->output, "hello", 5);
	assert_int_equal(t->exit_code, 7);
	assert_string_equal(t->node, "node-b");
	assert_null(t->error);
	assert_int_equal(t->finished_ms, 25);
	assert_int_equal(t->attempts, 1);
	assert_int_equal(F.final_count, 1);
	assert_int_equal(F.final_log[0], a);
	struct tasks_counters c = counters(ts);
	assert_int_equal(c.succeeded, 1);
	assert_int_equal(c.running, 0);
	assert_int_equal(c.held, 1); /* until persisted and released */

	/* a stale second report changes nothing */
	tasks_on_result(ts, a, 0, NULL, 0, 1, "late", "node-c", AT(30));
	tasks_on_worker_lost(ts, a, 1, "late", AT(30));
	assert_int_equal(state_of(ts, a), TASK_SUCCEEDED);
	assert_int_equal(F.final_count, 1);
	tasks_destroy(ts);
}

static void handler_failure_fails_and_is_never_retried_even_if_transient(void **state)
{
	(void)state;
	struct tasks *ts = new_default(2, 2);
	struct task *t0 = mk_task(0, TASK_RESTART_TRANSIENT, 0, 5, 10);
	uint64_t a = submit(ts, t0, 0);
	uint64_t b = submit_simple(ts, 0, TASK_RESTART_TRANSIENT, 0);
	pump(ts, AT(1));
	worker_result(ts, a, 0, "partial", 3, "boom", 2);
	worker_result(ts, b, 0, NULL, 1, NULL, 2);
	tasks_tick(ts, AT(100000));
	pump(ts, AT(100000));

	const struct task *t = tasks_get(ts, a);
	assert_int_equal(t->state, TASK_FAILED);
	assert_string_equal(t->error, "boom");
	assert_int_equal(t->exit_code, 3);
	assert_int_equal(t->output_len, 7);
	assert_memory_equal(t->output, "partial", 7);
	assert_int_equal(t->attempts, 1);
	t = tasks_get(ts, b);
	assert_int_equal(t->state, TASK_FAILED);
	assert_non_null(t->error); /* some reason, even when the handler gave none */
	assert_int_equal(F.dispatch_count, 2); /* no second attempt */
	struct tasks_counters c = counters(ts);
	assert_int_equal(c.failed, 2);
	assert_int_equal(c.retried, 0);
	assert_int_equal(c.backoff, 0);
	tasks_destroy(ts);
}

/* ---- worker lost, restart policies ---- */

static void lost_worker_fails_temporary_task_with_reason(void **state)
{
	(void)state;
	struct tasks *ts = new_default(1, 1);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	pump(ts, AT(1));
	worker_lost(ts, a, 1, "worker died: SIGSEGV", 50);
	const struct task *t = tasks_get(ts, a);
	assert_int_equal(t->state, TASK_FAILED);
	assert_string_equal(t->error, "worker died: SIGSEGV");
	assert_int_equal(t->finished_ms, 50);
	assert_int_equal(F.final_count, 1);
	struct tasks_counters c = counters(ts);
	assert_int_equal(c.failed, 1);
	assert_int_equal(c.retried, 0);
	tasks_tick(ts, AT(100000));
	pump(ts, AT(100000));
	assert_int_equal(F.dispatch_count, 1);
	tasks_destroy(ts);
}

static void lost_transient_task_retries_with_capped_exponential_backoff(void **state)
{
	(void)state;
	struct tasks_limits lim = default_limits();
	lim.backoff_max_ms = 500;
	struct tasks *ts = new_table(&lim, 1, 1);
	uint64_t a = submit(ts, mk_task(0, TASK_RESTART_TRANSIENT, 0, 5, 100), 0);
	const uint64_t want_delay[] = {100, 200, 400, 500}; /* 100 * 2^(n-1), capped */
	uint64_t now = 1000;
	pump(ts, AT(now));
	for (uint32_t attempt = 1; attempt <= 4; attempt++) {
		assert_int_equal(tasks_get(ts, a)->attempts, attempt);
		assert_int_equal(F.dispatch_count, attempt);
		worker_lost(ts, a, 1, "crash", now);
		const struct task *t = tasks_get(ts, a);
		assert_int_equal(t->state, TASK_QUEUED);
		assert_string_equal(t->error, "crash");
		assert_int_equal(counters(ts).backoff, 1);
		assert_int_equal(counters(ts).retried, attempt);
		assert_int_equal(tasks_next_deadline(ts), now + want_delay[attempt - 1]);
		assert_int_equal(F.final_count, 0);

		/* not before the backoff is over */
		tasks_tick(ts, AT(now + want_delay[attempt - 1] - 1));
		pump(ts, AT(now + want_delay[attempt - 1] - 1));
		assert_int_equal(F.dispatch_count, attempt);
		now += want_delay[attempt - 1];
		tasks_tick(ts, AT(now));
		pump(ts, AT(now));
		assert_int_equal(F.dispatch_count, attempt + 1);
		assert_int_equal(state_of(ts, a), TASK_RUNNING);
	}
	/* the fifth attempt was the last one */
	assert_int_equal(tasks_get(ts, a)->attempts, 5);
	worker_lost(ts, a, 1, "crash again", now);
	const struct task *t = tasks_get(ts, a);
	assert_int_equal(t->state, TASK_FAILED);
	assert_string_equal(t->error, "crash again");
	assert_int_equal(F.final_count, 1);
	struct tasks_counters c = counters(ts);
	assert_int_equal(c.retried, 4);
	assert_int_equal(c.failed, 1);
	assert_int_equal(c.backoff, 0);
	assert_int_equal(tasks_next_deadline(ts), UINT64_MAX);
	tasks_destroy(ts);
}

static void backoff_doubles_without_a_cap(void **state)
{
	(void)state;
	struct tasks_limits lim = default_limits();
	lim.backoff_max_ms = 0; /* no cap */
	struct tasks *ts = new_table(&lim, 1, 1);
	uint64_t a = submit(ts, mk_task(0, TASK_RESTART_TRANSIENT, 0, 4, 100), 0);
	uint64_t now = 0;
	const uint64_t want_delay[] = {100, 200, 400};
	pump(ts, AT(now));
	for (int i = 0; i < 3; i++) {
		worker_lost(ts, a, 1, "crash", now);
		assert_int_equal(tasks_next_deadline(ts), now + want_delay[i]);
		now += want_delay[i];
		tasks_tick(ts, AT(now));
		pump(ts, AT(now));
		assert_int_equal(state_of(ts, a), TASK_RUNNING);
	}
	tasks_destroy(ts);
}

static void default_options_apply_to_transient_tasks(void **state)
{
	(void)state;
	/* max_attempts 0 -> default 3, backoff 0 -> default 100 */
	struct tasks *ts = new_default(1, 1);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TRANSIENT, 0);
	const struct task *t = tasks_get(ts, a);
	assert_int_equal(t->opts.max_attempts, 3);
	assert_int_equal(t->opts.backoff_ms, 100);
	/* a temporary task gets exactly one attempt whatever it asked for */
	uint64_t b = submit(ts, mk_task(0, TASK_RESTART_TEMPORARY, 0, 9, 0), 0);
	assert_int_equal(tasks_get(ts, b)->opts.max_attempts, 1);
	tasks_destroy(ts);
}

static void lost_while_queued_behind_is_requeued_at_head_without_charge(void **state)
{
	(void)state;
	struct tasks *ts = new_default(2, 0);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	uint64_t b = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	uint64_t c = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	pump(ts, AT(1));
	assert_int_equal(F.dispatch_count, 2); /* a and b in the worker, c queued */

	/* the worker dies: a was running, b only waited behind it */
	worker_lost(ts, a, 1, "crash", 5);
	worker_lost(ts, b, 0, "crash", 5);
	assert_int_equal(state_of(ts, a), TASK_FAILED);
	const struct task *t = tasks_get(ts, b);
	assert_int_equal(t->state, TASK_QUEUED);
	assert_int_equal(t->attempts, 0); /* not charged */
	assert_int_equal(t->started_ms, 0);
	assert_int_equal(F.final_count, 1);
	assert_int_equal(counters(ts).retried, 0);
	assert_int_equal(tasks_pool_queued(ts, 0), 2);

	pump(ts, AT(6));
	assert_int_equal(F.dispatch_count, 4);
	assert_int_equal(F.dispatch_log[2], b); /* back at the head, before c */
	assert_int_equal(F.dispatch_log[3], c);
	assert_int_equal(tasks_get(ts, b)->attempts, 1);
	tasks_destroy(ts);
}

/* ---- timeouts ---- */

static void timeout_kills_once_then_temporary_task_times_out(void **state)
{
	(void)state;
	struct tasks *ts = new_default(1, 1);
	uint64_t a = submit(ts, mk_task(0, TASK_RESTART_TEMPORARY, 1000, 0, 0), 0);
	pump(ts, AT(0));
	assert_int_equal(tasks_next_deadline(ts), 1000);
	tasks_tick(ts, AT(999));
	assert_int_equal(F.kill_count, 0);
	tasks_tick(ts, AT(1000));
	assert_int_equal(F.kill_count, 1);
	assert_int_equal(F.kill_log[0], a);
	assert_int_equal(state_of(ts, a), TASK_RUNNING); /* until the worker is gone */
	tasks_tick(ts, AT(2000));
	tasks_tick(ts, AT(5000));
	assert_int_equal(F.kill_count, 1); /* once */
	assert_int_equal(tasks_next_deadline(ts), UINT64_MAX);

	worker_lost(ts, a, 1, "killed by signal 9", 5001);
	const struct task *t = tasks_get(ts, a);
	assert_int_equal(t->state, TASK_TIMED_OUT);
	assert_non_null(t->error);
	assert_int_equal(F.final_count, 1);
	struct tasks_counters c = counters(ts);
	assert_int_equal(c.timed_out, 1);
	assert_int_equal(c.failed, 0);
	tasks_destroy(ts);
}

static void timeout_of_transient_task_is_retried(void **state)
{
	(void)state;
	struct tasks *ts = new_default(1, 1);
	uint64_t a = submit(ts, mk_task(0, TASK_RESTART_TRANSIENT, 1000, 2, 50), 0);
	pump(ts, AT(0));
	tasks_tick(ts, AT(1000));
	assert_int_equal(F.kill_count, 1);
	worker_lost(ts, a, 1, "killed", 1001);
	assert_int_equal(state_of(ts, a), TASK_QUEUED);
	assert_int_equal(counters(ts).retried, 1);
	tasks_tick(ts, AT(1051));
	pump(ts, AT(1051));
	assert_int_equal(F.dispatch_count, 2);
	assert_int_equal(tasks_next_deadline(ts), 2051); /* a fresh deadline */
	/* second (last) attempt times out too: now it is final */
	tasks_tick(ts, AT(2051));
	assert_int_equal(F.kill_count, 2);
	worker_lost(ts, a, 1, "killed", 2052);
	assert_int_equal(state_of(ts, a), TASK_TIMED_OUT);
	assert_int_equal(counters(ts).timed_out, 1);
	tasks_destroy(ts);
}

static void started_resets_the_deadline(void **state)
{
	(void)state;
	struct tasks *ts = new_default(1, 1);
	uint64_t a = submit(ts, mk_task(0, TASK_RESTART_TEMPORARY, 1000, 0, 0), 0);
	pump(ts, AT(0));
	tasks_on_started(ts, a, AT(800)); /* it waited 800 ms behind another job */
	assert_int_equal(tasks_get(ts, a)->started_ms, 800);
	assert_int_equal(tasks_next_deadline(ts), 1800);
	tasks_tick(ts, AT(1000));
	assert_int_equal(F.kill_count, 0);
	tasks_tick(ts, AT(1799));
	assert_int_equal(F.kill_count, 0);
	tasks_tick(ts, AT(1800));
	assert_int_equal(F.kill_count, 1);
	tasks_on_started(ts, 9999, AT(1900)); /* unknown id: ignored */
	tasks_destroy(ts);
}

static void default_timeout_applies_when_task_gives_none(void **state)
{
	(void)state;
	struct tasks_limits lim = default_limits();
	lim.default_timeout_ms = 300;
	struct tasks *ts = new_table(&lim, 1, 1);
	submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	pump(ts, AT(10));
	assert_int_equal(tasks_next_deadline(ts), 310);
	tasks_destroy(ts);
}

/* ---- cancel ---- */

static void cancel_queued_task_is_cancelled_at_once(void **state)
{
	(void)state;
	struct tasks *ts = new_default(0, 0);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TRANSIENT, 0);
	assert_int_equal(tasks_cancel(ts, a, AT(7)), 0);
	const struct task *t = tasks_get(ts, a);
	assert_int_equal(t->state, TASK_CANCELLED);
	assert_int_equal(t->finished_ms, 7);
	assert_int_equal(F.final_count, 1);
	assert_int_equal(F.kill_count, 0);
	assert_int_equal(tasks_pool_queued(ts, 0), 0);
	F.cap[0] = 5;
	pump(ts, AT(8));
	assert_int_equal(F.dispatch_count, 0);
	assert_int_equal(counters(ts).cancelled, 1);
	tasks_destroy(ts);
}

static void cancel_in_backoff_is_cancelled_at_once(void **state)
{
	(void)state;
	struct tasks *ts = new_default(1, 1);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TRANSIENT, 0);
	pump(ts, AT(0));
	worker_lost(ts, a, 1, "crash", 1);
	assert_int_equal(counters(ts).backoff, 1);
	assert_int_equal(tasks_cancel(ts, a, AT(2)), 0);
	assert_int_equal(state_of(ts, a), TASK_CANCELLED);
	assert_int_equal(counters(ts).backoff, 0);
	assert_int_equal(tasks_next_deadline(ts), UINT64_MAX);
	tasks_tick(ts, AT(100000));
	pump(ts, AT(100000));
	assert_int_equal(F.dispatch_count, 1);
	tasks_destroy(ts);
}

static void cancel_running_task_kills_then_cancels_when_worker_is_lost(void **state)
{
	(void)state;
	struct tasks *ts = new_default(1, 1);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TRANSIENT, 0);
	pump(ts, AT(0));
	assert_int_equal(tasks_cancel(ts, a, AT(10)), 0);
	assert_int_equal(F.kill_count, 1);
	assert_int_equal(F.kill_log[0], a);
	assert_int_equal(state_of(ts, a), TASK_RUNNING);
	assert_int_equal(F.final_count, 0);
	/* cancelling again does not kill twice */
	assert_int_equal(tasks_cancel(ts, a, AT(11)), 0);
	assert_int_equal(F.kill_count, 1);

	worker_lost(ts, a, 1, "killed", 12);
	assert_int_equal(state_of(ts, a), TASK_CANCELLED); /* transient, yet not retried */
	assert_int_equal(F.final_count, 1);
	struct tasks_counters c = counters(ts);
	assert_int_equal(c.cancelled, 1);
	assert_int_equal(c.retried, 0);
	tasks_tick(ts, AT(100000));
	pump(ts, AT(100000));
	assert_int_equal(F.dispatch_count, 1);
	tasks_destroy(ts);
}

static void cancel_of_unknown_or_final_task_is_not_found(void **state)
{
	(void)state;
	struct tasks *ts = new_default(1, 1);
	assert_int_equal(tasks_cancel(ts, 12345, AT(0)), ERR_NOT_FOUND);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	pump(ts, AT(0));
	worker_result(ts, a, 1, "ok", 0, NULL, 1);
	assert_int_equal(tasks_cancel(ts, a, AT(2)), ERR_NOT_FOUND); /* final, still held */
	assert_int_equal(flush(ts), 0);
	tasks_release_final(ts);
	assert_null(tasks_get(ts, a));
	assert_int_equal(tasks_cancel(ts, a, AT(3)), ERR_NOT_FOUND); /* released */
	assert_int_equal(F.final_count, 1);
	assert_int_equal(counters(ts).cancelled, 0);
	tasks_destroy(ts);
}

static void cancel_beats_timeout(void **state)
{
	(void)state;
	struct tasks *ts = new_default(2, 2);
	/* timeout first, then cancel */
	uint64_t a = submit(ts, mk_task(0, TASK_RESTART_TRANSIENT, 100, 3, 10), 0);
	/* cancel first, then the deadline passes */
	uint64_t b = submit(ts, mk_task(0, TASK_RESTART_TRANSIENT, 100, 3, 10), 0);
	pump(ts, AT(0));
	tasks_tick(ts, AT(50));
	assert_int_equal(tasks_cancel(ts, b, AT(50)), 0);
	assert_int_equal(F.kill_count, 1);
	tasks_tick(ts, AT(100));
	assert_int_equal(F.kill_count, 2); /* a timed out; b was not killed again */
	assert_int_equal(F.kill_log[1], a);
	assert_int_equal(tasks_cancel(ts, a, AT(101)), 0);
	assert_int_equal(F.kill_count, 2);
	worker_lost(ts, a, 1, "killed", 102);
	worker_lost(ts, b, 1, "killed", 102);
	assert_int_equal(state_of(ts, a), TASK_CANCELLED);
	assert_int_equal(state_of(ts, b), TASK_CANCELLED);
	struct tasks_counters c = counters(ts);
	assert_int_equal(c.cancelled, 2);
	assert_int_equal(c.timed_out, 0);
	assert_int_equal(c.retried, 0);
	tasks_destroy(ts);
}

static void result_after_kill_still_counts(void **state)
{
	(void)state;
	/* the worker finished just as the kill went out: the answer wins */
	struct tasks *ts = new_default(1, 1);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	pump(ts, AT(0));
	assert_int_equal(tasks_cancel(ts, a, AT(1)), 0);
	worker_result(ts, a, 1, "done", 0, NULL, 2);
	assert_int_equal(state_of(ts, a), TASK_SUCCEEDED);
	tasks_on_worker_lost(ts, a, 1, "killed", AT(3)); /* stale */
	assert_int_equal(state_of(ts, a), TASK_SUCCEEDED);
	assert_int_equal(F.final_count, 1);
	tasks_destroy(ts);
}

/* ---- batches ---- */

static void batch_never_exceeds_max_concurrency(void **state)
{
	(void)state;
	struct tasks *ts = new_default(10, 10);
	uint64_t bid = submit_batch(ts, 10, 0, TASK_RESTART_TEMPORARY, 3, 0, 0);
	const struct batch *b = tasks_get_batch(ts, bid);
	assert_non_null(b);
	assert_int_equal(b->total, 10);
	assert_int_equal(b->done, 0);
	assert_int_equal(counters(ts).queued, 10);
	pump(ts, AT(1));
	assert_int_equal(F.dispatch_count, 3); /* the fake checked <= 3 on each */
	assert_int_equal(b->in_flight, 3);
	/* ids in input order */
	uint64_t first = F.dispatch_log[0];
	assert_int_equal(F.dispatch_log[1], first + 1);
	assert_int_equal(F.dispatch_log[2], first + 2);
	assert_int_equal(tasks_get(ts, first)->batch_index, 0);

	uint64_t now = 2;
	size_t done = 0;
	while (done < 10) {
		/* finish the oldest running one */
		uint64_t id = F.dispatch_log[done];
		worker_result(ts, id, done % 3 != 0, "r", 0, "bad", now);
		done++;
		assert_int_equal(b->done, done);
		assert_int_equal(F.last_progress_batch, bid);
		assert_int_equal(F.last_progress_done, done);
		pump(ts, AT(now));
		now++;
		assert_true(b->in_flight <= 3);
		assert_int_equal(F.dispatch_count, done + 3 < 10 ? done + 3 : 10);
	}
	assert_int_equal(b->done, 10);
	assert_int_equal(b->in_flight, 0);
	assert_int_equal(F.progress_count, 10);
	/* all persisted and released: the batch goes too */
	assert_int_equal(flush(ts), 0);
	tasks_release_final(ts);
	assert_int_equal(counters(ts).held, 0);
	assert_null(tasks_get_batch(ts, bid));
	tasks_destroy(ts);
}

static void batch_without_limit_is_bounded_by_pool_only(void **state)
{
	(void)state;
	struct tasks *ts = new_default(4, 0);
	uint64_t bid = submit_batch(ts, 6, 0, TASK_RESTART_TEMPORARY, 0, 0, 0);
	pump(ts, AT(1));
	assert_int_equal(F.dispatch_count, 4);
	assert_int_equal(tasks_pool_queued(ts, 0), 2);
	assert_non_null(tasks_get_batch(ts, bid));
	tasks_destroy(ts);
}

static void batch_deadline_times_out_waiting_tasks_at_once_and_kills_running_ones(void **state)
{
	(void)state;
	struct tasks *ts = new_default(2, 2);
	uint64_t bid = submit_batch(ts, 6, 0, TASK_RESTART_TRANSIENT, 3, 1000, 0);
	const struct batch *b = tasks_get_batch(ts, bid);
	assert_int_equal(b->deadline_ms, 1000);
	assert_int_equal(tasks_next_deadline(ts), 1000);
	pump(ts, AT(0));
	/* pool has 2 slots, batch allows 3: two running, one queued in the pool,
	 * three pending behind the batch limit */
	assert_int_equal(F.dispatch_count, 2);
	uint64_t r1 = F.dispatch_log[0], r2 = F.dispatch_log[1];
	/* r2 crashes: it waits out a backoff */
	worker_lost(ts, r2, 1, "crash", 500);
	assert_int_equal(state_of(ts, r2), TASK_QUEUED);
	assert_int_equal(counters(ts).backoff, 1);
	pump(ts, AT(500));
	uint64_t r3 = F.dispatch_log[2];
	assert_int_equal(F.dispatch_count, 3);

	tasks_tick(ts, AT(999));
	assert_int_equal(F.kill_count, 0);
	assert_int_equal(b->done, 0);
	tasks_tick(ts, AT(1000));
	/* every task not on a worker is timed out now, the two running are killed */
	assert_int_equal(b->done, 4);
	assert_int_equal(F.final_count, 4);
	assert_int_equal(F.kill_count, 2);
	assert_int_equal(state_of(ts, r2), TASK_TIMED_OUT);
	assert_int_equal(state_of(ts, r1), TASK_RUNNING);
	assert_int_equal(state_of(ts, r3), TASK_RUNNING);
	assert_int_equal(counters(ts).backoff, 0);
	assert_int_equal(counters(ts).queued, 0);

	/* killed transient tasks are not retried: the batch is over */
	worker_lost(ts, r1, 1, "killed", 1001);
	worker_lost(ts, r3, 1, "killed", 1001);
	assert_int_equal(state_of(ts, r1), TASK_TIMED_OUT);
	assert_int_equal(state_of(ts, r3), TASK_TIMED_OUT);
	assert_int_equal(b->done, 6);
	struct tasks_counters c = counters(ts);
	assert_int_equal(c.timed_out, 6);
	assert_int_equal(c.retried, 1); /* only r2's crash before the deadline */
	tasks_tick(ts, AT(100000));
	pump(ts, AT(100000));
	assert_int_equal(F.dispatch_count, 3);
	assert_int_equal(tasks_next_deadline(ts), UINT64_MAX);
	tasks_destroy(ts);
}

static void cancel_batch_cancels_every_unfinished_task(void **state)
{
	(void)state;
	struct tasks *ts = new_default(5, 5);
	uint64_t bid = submit_batch(ts, 5, 0, TASK_RESTART_TRANSIENT, 2, 0, 0);
	uint64_t other = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	uint64_t first = other - 5; /* the batch's ids come first */
	pump(ts, AT(0));
	assert_int_equal(F.dispatch_count, 3);
	worker_result(ts, first, 1, "ok", 0, NULL, 1);
	pump(ts, AT(1));
	/* 1 done, 2 running, 2 pending */
	const struct batch *b = tasks_get_batch(ts, bid);
	assert_int_equal(b->done, 1);
	size_t kills0 = F.kill_count;
	assert_int_equal(tasks_cancel_batch(ts, bid, AT(2)), 4);
	assert_int_equal(F.kill_count - kills0, 2);
	assert_int_equal(b->done, 3);
	for (uint64_t id = first; id < first + 5; id++) {
		const struct task *t = tasks_get(ts, id);
		if (rec_of(id)->in_slot) {
			assert_int_equal(t->state, TASK_RUNNING);
			worker_lost(ts, id, 1, "killed", 3);
		}
		assert_true(task_state_is_final(tasks_get(ts, id)->state));
	}
	assert_int_equal(b->done, 5);
	assert_int_equal(counters(ts).cancelled, 4);
	assert_int_equal(state_of(ts, other), TASK_RUNNING); /* not in the batch */
	assert_int_equal(tasks_cancel_batch(ts, bid, AT(4)), 0);
	assert_int_equal(tasks_cancel_batch(ts, 999, AT(4)), 0);
	tasks_destroy(ts);
}

/* ---- limits ---- */

static void full_queue_refuses_submit_and_batch_until_tasks_are_released(void **state)
{
	(void)state;
	struct tasks_limits lim = default_limits();
	lim.queue_tasks_max = 3;
	struct tasks *ts = new_table(&lim, 1, 1);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	submit_simple(ts, 1, TASK_RESTART_TEMPORARY, 0);

	struct task *t = mk_task(0, TASK_RESTART_TEMPORARY, 0, 0, 0);
	uint64_t id = 77;
	assert_int_equal(tasks_submit(ts, t, AT(1), &id), ERR_FULL);
	assert_int_equal(id, 77);
	assert_int_equal(t->id, 0); /* not taken */
	struct task *tv[2] = {mk_task(0, 0, 0, 0, 0), mk_task(0, 0, 0, 0, 0)};
	uint64_t bid = 0;
	assert_int_equal(tasks_submit_batch(ts, tv, 1, 0, 0, AT(1), &bid), ERR_FULL);
	assert_int_equal(counters(ts).submitted, 3);
	assert_int_equal(counters(ts).held, 3);

	/* one finishes, is persisted and released: there is room for one */
	pump(ts, AT(2));
	worker_result(ts, a, 1, "ok", 0, NULL, 3);
	assert_int_equal(flush(ts), 0);
	tasks_release_final(ts);
	assert_int_equal(counters(ts).held, 2);
	/* a batch of two does not fit; nothing of it is taken */
	assert_int_equal(tasks_submit_batch(ts, tv, 2, 0, 0, AT(4), &bid), ERR_FULL);
	assert_int_equal(tv[0]->id, 0);
	assert_int_equal(tv[1]->id, 0);
	assert_int_equal(counters(ts).held, 2);
	/* a batch of one does */
	assert_int_equal(tasks_submit_batch(ts, tv, 1, 0, 0, AT(4), &bid), 0);
	assert_int_equal(tasks_submit(ts, tv[1], AT(4), &id), ERR_FULL);
	task_free(tv[1]);
	task_free(t);
	tasks_destroy(ts);
}

static void thousands_of_tasks_are_found_and_run_in_order(void **state)
{
	(void)state;
	/* more tasks than the id hash starts with: it has to grow */
	struct tasks_limits lim = default_limits();
	lim.queue_tasks_max = 5000;
	struct tasks *ts = new_table(&lim, 8, 0);
	enum { N = 5000 };
	for (uint64_t i = 0; i < N; i++)
		assert_int_equal(submit_simple(ts, 0, TASK_RESTART_TEMPORARY, i), i + 1);
	struct task *t = mk_task(0, 0, 0, 0, 0);
	uint64_t id = 0;
	assert_int_equal(tasks_submit(ts, t, AT(N), &id), ERR_FULL);
	task_free(t);
	for (uint64_t i = 1; i <= N; i++)
		assert_int_equal(tasks_get(ts, i)->submitted_ms, i - 1);
	uint64_t now = N;
	while (counters(ts).held) {
		pump(ts, AT(now));
		for (uint64_t id2 = 1; id2 <= N; id2++)
			if (F.rec[id2].in_slot)
				worker_result(ts, id2, 1, NULL, 0, NULL, now);
		assert_int_equal(flush(ts), 0);
		tasks_release_final(ts);
		now++;
	}
	assert_int_equal(F.dispatch_count, N);
	for (size_t i = 0; i < N; i++)
		assert_int_equal(F.dispatch_log[i], i + 1);
	assert_int_equal(counters(ts).succeeded, N);
	tasks_destroy(ts);
}

static void batches_max_refuses_new_batches(void **state)
{
	(void)state;
	struct tasks_limits lim = default_limits();
	lim.batches_max = 2;
	struct tasks *ts = new_table(&lim, 0, 0);
	submit_batch(ts, 1, 0, 0, 0, 0, 0);
	submit_batch(ts, 1, 0, 0, 0, 0, 0);
	struct task *t = mk_task(0, 0, 0, 0, 0);
	uint64_t bid = 0;
	assert_int_equal(tasks_submit_batch(ts, &t, 1, 0, 0, AT(0), &bid), ERR_FULL);
	assert_int_equal(t->id, 0);
	task_free(t);
	tasks_destroy(ts);
}

/* ---- streamed batches (tasks_open_batch) ---- */

static void append_n(struct tasks *ts, uint64_t bid, uint32_t n, uint64_t now_ms, int want)
{
	struct task *tv[16];
	assert_true(n <= 16);
	for (uint32_t i = 0; i < n; i++)
		tv[i] = mk_task(0, TASK_RESTART_TEMPORARY, 0, 0, 0);
	uint32_t before = tasks_get_batch(ts, bid) ? tasks_get_batch(ts, bid)->total : 0;
	assert_int_equal(tasks_batch_append(ts, bid, tv, n, AT(now_ms)), want);
	for (uint32_t i = 0; i < n; i++) {
		if (want != 0) {
			assert_int_equal(tv[i]->id, 0); /* not taken */
			task_free(tv[i]);
			continue;
		}
		assert_int_equal(tv[i]->batch_id, bid);
		assert_int_equal(tv[i]->batch_index, before + i);
		rec_of(tv[i]->id)->submitted = 1;
	}
}

/* Runs every dispatched task of the log from *next on to success (what
 * was admitted is committed first: only journaled tasks are dispatched). */
static void finish_dispatched(struct tasks *ts, size_t *next, uint64_t now_ms)
{
	for (;;) {
		assert_int_equal(flush(ts), 0);
		tasks_pump(ts, AT(now_ms));
		if (*next == F.dispatch_count)
			break;
		while (*next < F.dispatch_count)
			worker_result(ts, F.dispatch_log[(*next)++], 1, "ok", 0, NULL, now_ms);
	}
}

static void open_batch_grows_within_its_window_and_stays_until_closed(void **state)
{
	(void)state;
	struct tasks *ts = new_default(2, 0);
	struct task *tv[2] = {mk_task(0, 0, 0, 0, 0), mk_task(0, 0, 0, 0, 0)};
	uint64_t bid = 0;
	assert_int_equal(tasks_open_batch(ts, tv, 2, 0, 0, 4, AT(0), &bid), 0);
	rec_of(tv[0]->id)->submitted = rec_of(tv[1]->id)->submitted = 1;
	const struct batch *b = tasks_get_batch(ts, bid);
	assert_non_null(b);
	assert_true(b->input_open);
	assert_int_equal(b->window, 4);
	assert_int_equal(tasks_batch_room(ts, bid), 2);
	append_n(ts, bid, 3, 1, ERR_FULL); /* over the window: nothing taken */
	append_n(ts, bid, 2, 1, 0);
	assert_int_equal(b->total, 4);
	assert_int_equal(tasks_batch_room(ts, bid), 0);
	size_t next = 0;
	finish_dispatched(ts, &next, 2);
	assert_int_equal(b->done, 4);
	assert_int_equal(tasks_batch_room(ts, bid), 4);
	/* every task so far final and released: the open batch stays */
	assert_int_equal(flush(ts), 0);
	tasks_release_final(ts);
	tasks_drop_batch(ts, bid);
	b = tasks_get_batch(ts, bid);
	assert_non_null(b);
	assert_int_equal(counters(ts).held, 0);
	append_n(ts, bid, 1, 3, 0);
	assert_int_equal(b->total, 5);
	finish_dispatched(ts, &next, 4);
	assert_int_equal(tasks_close_batch(ts, bid), 0);
	assert_false(b->input_open);
	assert_int_equal(tasks_batch_room(ts, bid), 0);
	append_n(ts, bid, 1, 5, ERR_CLOSED);
	assert_int_equal(tasks_close_batch(ts, bid), 0); /* again: no change */
	assert_int_equal(flush(ts), 0);
	tasks_release_final(ts);
	tasks_drop_batch(ts, bid);
	assert_null(tasks_get_batch(ts, bid));
	assert_int_equal(tasks_close_batch(ts, bid), ERR_NOT_FOUND);
	append_n(ts, bid, 1, 6, ERR_NOT_FOUND);
	tasks_destroy(ts);
}

static void open_batch_room_is_bounded_by_the_table(void **state)
{
	(void)state;
	struct tasks_limits lim = default_limits();
	lim.queue_tasks_max = 3;
	struct tasks *ts = new_table(&lim, 0, 0);
	uint64_t bid = 0;
	assert_int_equal(tasks_open_batch(ts, NULL, 0, 0, 0, 100, AT(0), &bid), 0);
	assert_int_equal(tasks_batch_room(ts, bid), 3);
	append_n(ts, bid, 3, 1, 0);
	assert_int_equal(tasks_batch_room(ts, bid), 0);
	append_n(ts, bid, 1, 1, ERR_FULL);
	tasks_destroy(ts);
}

static void open_batch_deadline_closes_its_input(void **state)
{
	(void)state;
	struct tasks *ts = new_default(1, 0);
	uint64_t bid = 0;
	assert_int_equal(tasks_open_batch(ts, NULL, 0, 0, 100, 8, AT(0), &bid), 0);
	append_n(ts, bid, 2, 1, 0);
	size_t next = 0;
	finish_dispatched(ts, &next, 2); /* all done so far: the deadline still runs */
	assert_int_equal(tasks_next_deadline(ts), 100);
	tasks_tick(ts, AT(100));
	const struct batch *b = tasks_get_batch(ts, bid);
	assert_non_null(b);
	assert_false(b->input_open);
	append_n(ts, bid, 1, 101, ERR_CLOSED);
	tasks_destroy(ts);
}

static void recovered_open_batch_is_closed_at_its_journaled_total(void **state)
{
	(void)state;
	struct tasks *ts = new_default(1, 0);
	struct batch b = {.id = 7, .total = 3, .done = 1, .input_open = 1, .window = 8,
	                  .created_ms = 1};
	assert_int_equal(tasks_recover_batch(ts, &b, AT(100)), 0);
	const struct batch *got = tasks_get_batch(ts, 7);
	assert_non_null(got);
	assert_false(got->input_open);
	assert_int_equal(got->total, 3);
	append_n(ts, 7, 1, 101, ERR_CLOSED);
	tasks_destroy(ts);
}

/* ---- flush and release ---- */

static void flush_hands_out_each_changed_task_once_in_change_order(void **state)
{
	(void)state;
	struct tasks *ts = new_default(10, 10);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	uint64_t b = submit_simple(ts, 1, TASK_RESTART_TEMPORARY, 0);
	uint64_t c = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	assert_int_equal(flush(ts), 0); /* admitted: a, b, c */
	assert_int_equal(F.put_count, 3);
	assert_int_equal(F.put_log[0], a);
	assert_int_equal(F.put_log[1], b);
	assert_int_equal(F.put_log[2], c);
	assert_int_equal(F.put_batch_count, 0);
	tasks_pump(ts, AT(1)); /* changes them again, in dispatch order: pool 0, then 1 */
	assert_int_equal(flush(ts), 0);
	assert_int_equal(F.put_count, 3);
	assert_int_equal(F.put_log[0], a);
	assert_int_equal(F.put_log[1], c);
	assert_int_equal(F.put_log[2], b);

	/* nothing changed: nothing to write */
	assert_int_equal(flush(ts), 0);
	assert_int_equal(F.put_count, 0);

	worker_result(ts, c, 1, "ok", 0, NULL, 2);
	worker_result(ts, a, 0, "no", 1, "bad", 2);
	assert_int_equal(flush(ts), 0);
	assert_int_equal(F.put_count, 2);
	assert_int_equal(F.put_log[0], c);
	assert_int_equal(F.put_log[1], a);

	/* batches are written before their tasks, in creation order */
	uint64_t b1 = submit_batch(ts, 2, 0, 0, 0, 0, 3);
	uint64_t b2 = submit_batch(ts, 1, 0, 0, 0, 0, 3);
	assert_int_equal(flush(ts), 0);
	assert_int_equal(F.put_batch_count, 2);
	assert_int_equal(F.put_batch_log[0], b1);
	assert_int_equal(F.put_batch_log[1], b2);
	assert_int_equal(F.put_count, 3);
	(void)b;
	tasks_destroy(ts);
}

static void failing_put_stops_the_flush_and_marks_nothing_clean(void **state)
{
	(void)state;
	struct tasks *ts = new_default(10, 10);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	uint64_t b = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	uint64_t c = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	pump(ts, AT(0));
	worker_result(ts, a, 1, "ok", 0, NULL, 1);
	worker_result(ts, b, 1, "ok", 0, NULL, 1);
	F.put_fail_at = 2;
	assert_int_equal(flush(ts), ERR_STORAGE);
	assert_int_equal(F.put_count, 2); /* stopped at the failing one */
	/* the commit failed: the final tasks are not persisted, keep them */
	tasks_release_final(ts);
	assert_non_null(tasks_get(ts, a));
	assert_non_null(tasks_get(ts, b));

	F.put_fail_at = 0;
	assert_int_equal(flush(ts), 0);
	assert_int_equal(F.put_count, 3); /* all three again, same order */
	assert_int_equal(F.put_log[0], a);
	assert_int_equal(F.put_log[1], b);
	assert_int_equal(F.put_log[2], c);
	tasks_release_final(ts);
	assert_null(tasks_get(ts, a));
	assert_null(tasks_get(ts, b));
	assert_non_null(tasks_get(ts, c));
	tasks_destroy(ts);
}

static void failing_put_batch_stops_the_flush(void **state)
{
	(void)state;
	struct tasks *ts = new_default(0, 0);
	uint64_t bid = submit_batch(ts, 2, 0, 0, 0, 0, 0);
	F.put_batch_fails = 1;
	assert_int_equal(flush(ts), ERR_STORAGE);
	assert_int_equal(F.put_batch_count, 1);
	assert_int_equal(F.put_count, 0); /* no task written without its batch */
	F.put_batch_fails = 0;
	assert_int_equal(flush(ts), 0);
	assert_int_equal(F.put_batch_count, 1);
	assert_int_equal(F.put_batch_log[0], bid);
	assert_int_equal(F.put_count, 2);
	assert_int_equal(flush(ts), 0);
	assert_int_equal(F.put_batch_count, 0);
	tasks_destroy(ts);
}

static void flush_without_commit_keeps_changes_dirty(void **state)
{
	(void)state;
	struct tasks *ts = new_default(10, 10);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	pump(ts, AT(0));
	worker_result(ts, a, 1, "ok", 0, NULL, 1);
	/* written, but flush_done never called (the commit failed) */
	F.rec[a].put_count = 0;
	assert_int_equal(tasks_flush(ts, put_task, put_batch, NULL), 0);
	tasks_release_final(ts);
	assert_non_null(tasks_get(ts, a));
	assert_int_equal(flush(ts), 0);
	tasks_release_final(ts);
	assert_null(tasks_get(ts, a));
	tasks_destroy(ts);
}

/* ---- nothing starts before it is journaled (issue #10, part 1) ---- */

static void new_task_is_dispatched_only_after_its_commit(void **state)
{
	(void)state;
	struct tasks *ts = new_default(4, 4);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	uint64_t bid = submit_batch(ts, 2, 0, TASK_RESTART_TEMPORARY, 0, 0, 0);
	tasks_pump(ts, AT(1));
	assert_int_equal(F.dispatch_count, 0);
	assert_int_equal(state_of(ts, a), TASK_QUEUED);
	assert_int_equal(tasks_get_batch(ts, bid)->in_flight, 0);
	assert_true(tasks_has_dirty(ts));
	assert_int_equal(flush(ts), 0);
	assert_false(tasks_has_dirty(ts));
	tasks_pump(ts, AT(2));
	assert_int_equal(F.dispatch_count, 3);
	assert_int_equal(F.dispatch_log[0], a);
	assert_true(tasks_has_dirty(ts)); /* running: written next time */
	tasks_destroy(ts);
}

static void a_queue_stops_at_a_task_not_yet_journaled(void **state)
{
	(void)state;
	struct tasks *ts = new_default(0, 0);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	assert_int_equal(flush(ts), 0);
	uint64_t b = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 1);
	F.cap[0] = 4;
	tasks_pump(ts, AT(2));
	assert_int_equal(F.dispatch_count, 1);
	assert_int_equal(F.dispatch_log[0], a);
	assert_int_equal(state_of(ts, b), TASK_QUEUED);
	assert_int_equal(flush(ts), 0);
	tasks_pump(ts, AT(3));
	assert_int_equal(F.dispatch_count, 2);
	assert_int_equal(F.dispatch_log[1], b);
	tasks_destroy(ts);
}

static uint64_t g_gone[16];
static size_t g_gone_count;

static void on_gone(void *arg, const struct task *t)
{
	(void)arg;
	CHECK(g_gone_count < 16);
	g_gone[g_gone_count++] = t->id;
}

static void failed_commit_withdraws_new_tasks_and_keeps_changes_of_old_ones(void **state)
{
	(void)state;
	struct tasks *ts = new_default(4, 4);
	g_gone_count = 0;
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	pump(ts, AT(0));
	assert_int_equal(flush(ts), 0);
	assert_int_equal(state_of(ts, a), TASK_RUNNING);

	/* the iteration whose commit fails: a new task, a new batch, a new
	 * task cancelled at once, and a result of the old task */
	uint64_t b = submit_simple(ts, 1, TASK_RESTART_TEMPORARY, 5);
	uint64_t bid = submit_batch(ts, 2, 0, TASK_RESTART_TRANSIENT, 1, 1000, 5);
	uint64_t c = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 5);
	assert_int_equal(tasks_cancel(ts, c, AT(5)), 0);
	worker_result(ts, a, 1, "ok", 0, NULL, 5);
	struct tasks_counters before = counters(ts);
	assert_int_equal(before.submitted, 5);
	assert_int_equal(before.cancelled, 1);
	assert_int_equal(before.succeeded, 1);
	F.put_fail_at = 2;
	assert_int_equal(flush(ts), ERR_STORAGE);
	F.put_fail_at = 0;
	assert_int_equal(tasks_abort_new(ts, on_gone, NULL), 4);
	assert_int_equal(g_gone_count, 4);
	assert_null(tasks_get(ts, b));
	assert_null(tasks_get(ts, c));
	assert_null(tasks_get_batch(ts, bid));
	struct tasks_counters after = counters(ts);
	assert_int_equal(after.submitted, 1);
	assert_int_equal(after.cancelled, 0);
	assert_int_equal(after.succeeded, 1);
	assert_int_equal(after.held, 1);
	assert_int_equal(after.queued, 0);
	assert_int_equal(tasks_next_deadline(ts), UINT64_MAX); /* the batch's is gone */
	/* the old task's result is still to be written, and only it */
	assert_true(tasks_has_dirty(ts));
	assert_int_equal(flush(ts), 0);
	assert_int_equal(F.put_count, 1);
	assert_int_equal(F.put_log[0], a);
	assert_int_equal(F.put_batch_count, 0);
	tasks_release_final(ts);
	assert_null(tasks_get(ts, a));
	/* nothing withdrawn ever runs; ids are not handed out again */
	tasks_pump(ts, AT(6));
	assert_int_equal(F.dispatch_count, 1);
	uint64_t d = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 7);
	assert_true(d > c);
	tasks_destroy(ts);
}

static void withdraw_takes_back_one_new_task_or_batch_only(void **state)
{
	(void)state;
	struct tasks *ts = new_default(4, 4);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	assert_int_equal(flush(ts), 0);
	uint64_t b = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 1);
	uint64_t c = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 1);
	uint64_t bid = submit_batch(ts, 3, 0, TASK_RESTART_TEMPORARY, 0, 0, 1);
	assert_int_equal(tasks_withdraw(ts, a), ERR_NOT_FOUND); /* durable */
	assert_int_equal(tasks_withdraw(ts, b), 0);
	assert_int_equal(tasks_withdraw(ts, b), ERR_NOT_FOUND);
	assert_int_equal(tasks_withdraw_batch(ts, bid), 0);
	assert_null(tasks_get(ts, b));
	assert_null(tasks_get_batch(ts, bid));
	assert_int_equal(counters(ts).submitted, 2);
	assert_int_equal(flush(ts), 0);
	assert_int_equal(F.put_count, 1);
	assert_int_equal(F.put_log[0], c);
	assert_int_equal(F.put_batch_count, 0);
	tasks_pump(ts, AT(2));
	assert_int_equal(F.dispatch_count, 2);
	assert_int_equal(F.dispatch_log[0], a);
	assert_int_equal(F.dispatch_log[1], c);
	tasks_destroy(ts);
}

static void next_ids_say_what_the_next_submit_hands_out(void **state)
{
	(void)state;
	struct tasks *ts = new_default(4, 4);
	uint64_t t0, b0;
	tasks_next_ids(ts, &t0, &b0);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	assert_int_equal(a, t0);
	uint64_t bid = submit_batch(ts, 2, 0, TASK_RESTART_TEMPORARY, 0, 0, 0);
	assert_int_equal(bid, b0);
	uint64_t t1, b1;
	tasks_next_ids(ts, &t1, &b1);
	assert_int_equal(t1, a + 3);
	assert_int_equal(b1, bid + 1);
	tasks_destroy(ts);
}

static void release_final_frees_only_clean_final_tasks(void **state)
{
	(void)state;
	struct tasks *ts = new_default(10, 10);
	uint64_t a = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	uint64_t b = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	uint64_t c = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	uint64_t d = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 0);
	pump(ts, AT(0));
	worker_result(ts, a, 1, "ok", 0, NULL, 1);
	assert_int_equal(flush(ts), 0);
	worker_result(ts, b, 1, "ok", 0, NULL, 2); /* final but not yet persisted */
	tasks_release_final(ts);
	assert_null(tasks_get(ts, a));
	assert_non_null(tasks_get(ts, b));
	assert_int_equal(state_of(ts, c), TASK_RUNNING);
	assert_int_equal(counters(ts).held, 3);
	/* d is left running; c is final and unflushed at destroy: no leaks */
	worker_result(ts, c, 1, "ok", 0, NULL, 3);
	(void)d;
	tasks_destroy(ts);
}

/* ---- recovery ---- */

static struct task *mk_journal_task(uint64_t id, int state, uint8_t restart, uint32_t attempts,
                                    uint32_t max_attempts)
{
	struct task *t = mk_task(0, restart, 0, max_attempts, 100);
	t->id = id;
	t->state = state;
	t->attempts = attempts;
	t->submitted_ms = 1;
	if (state == TASK_RUNNING)
		t->started_ms = 2;
	return t;
}

static void recovered_queued_task_runs(void **state)
{
	(void)state;
	struct tasks *ts = new_default(1, 1);
	assert_int_equal(
	    tasks_recover(ts, mk_journal_task(5, TASK_QUEUED, TASK_RESTART_TEMPORARY, 0, 1), AT(100)), 0);
	assert_int_equal(state_of(ts, 5), TASK_QUEUED);
	assert_int_equal(F.final_count, 0);
	pump(ts, AT(100));
	assert_int_equal(F.dispatch_count, 1);
	assert_int_equal(F.dispatch_log[0], 5);
	worker_result(ts, 5, 1, "ok", 0, NULL, 101);
	assert_int_equal(state_of(ts, 5), TASK_SUCCEEDED);
	tasks_destroy(ts);
}

static void recovered_running_temporary_task_ends_lost(void **state)
{
	(void)state;
	struct tasks *ts = new_default(1, 1);
	assert_int_equal(
	    tasks_recover(ts, mk_journal_task(8, TASK_RUNNING, TASK_RESTART_TEMPORARY, 1, 1), AT(100)), 0);
	const struct task *t = tasks_get(ts, 8);
	assert_non_null(t);
	assert_int_equal(t->state, TASK_LOST);
	assert_non_null(t->error);
	assert_int_equal(t->finished_ms, 100);
	assert_int_equal(F.final_count, 1);
	assert_int_equal(counters(ts).lost, 1);
	tasks_pump(ts, AT(100)); /* recovered: durable already */
	assert_int_equal(F.dispatch_count, 0);
	/* the lost state must be journaled */
	assert_int_equal(flush(ts), 0);
	assert_int_equal(F.put_count, 1);
	assert_int_equal(F.put_log[0], 8);
	tasks_release_final(ts);
	assert_null(tasks_get(ts, 8));
	tasks_destroy(ts);
}

static void recovered_running_transient_task_is_retried(void **state)
{
	(void)state;
	struct tasks *ts = new_default(1, 1);
	assert_int_equal(
	    tasks_recover(ts, mk_journal_task(3, TASK_RUNNING, TASK_RESTART_TRANSIENT, 1, 3), AT(1000)), 0);
	assert_int_equal(state_of(ts, 3), TASK_QUEUED);
	assert_int_equal(counters(ts).retried, 1);
	assert_int_equal(tasks_next_deadline(ts), 1100); /* backoff 100 * 2^0 */
	tasks_tick(ts, AT(1100));
	pump(ts, AT(1100));
	assert_int_equal(F.dispatch_count, 1);
	assert_int_equal(tasks_get(ts, 3)->attempts, 2); /* the interrupted run counted */
	/* an exhausted one ends lost */
	assert_int_equal(
	    tasks_recover(ts, mk_journal_task(4, TASK_RUNNING, TASK_RESTART_TRANSIENT, 3, 3), AT(1100)), 0);
	assert_int_equal(state_of(ts, 4), TASK_LOST);
	tasks_destroy(ts);
}

static void recovered_batch_task_keeps_its_batch_limit(void **state)
{
	(void)state;
	struct tasks *ts = new_default(10, 10);
	struct batch b = {.id = 4, .total = 3, .max_concurrency = 1, .created_ms = 1};
	assert_int_equal(tasks_recover_batch(ts, &b, AT(0)), 0);
	F.batch_max[4] = 1;
	for (uint64_t id = 10; id < 13; id++) {
		struct task *t = mk_journal_task(id, TASK_QUEUED, TASK_RESTART_TEMPORARY, 0, 1);
		t->batch_id = 4;
		t->batch_index = (uint32_t)(id - 10);
		assert_int_equal(tasks_recover(ts, t, AT(50)), 0);
	}
	pump(ts, AT(50));
	assert_int_equal(F.dispatch_count, 1);
	worker_result(ts, 10, 1, "ok", 0, NULL, 51);
	assert_int_equal(tasks_get_batch(ts, 4)->done, 1);
	pump(ts, AT(51));
	assert_int_equal(F.dispatch_count, 2);
	assert_int_equal(F.dispatch_log[1], 11);
	tasks_destroy(ts);
}

static void next_ids_continue_after_the_highest_recovered_id(void **state)
{
	(void)state;
	struct tasks *ts = new_default(0, 0);
	assert_int_equal(
	    tasks_recover(ts, mk_journal_task(41, TASK_QUEUED, TASK_RESTART_TEMPORARY, 0, 1), AT(0)), 0);
	assert_int_equal(
	    tasks_recover(ts, mk_journal_task(7, TASK_QUEUED, TASK_RESTART_TEMPORARY, 0, 1), AT(0)), 0);
	struct batch b = {.id = 9, .total = 0};
	assert_int_equal(tasks_recover_batch(ts, &b, AT(0)), 0);
	uint64_t id = submit_simple(ts, 0, TASK_RESTART_TEMPORARY, 1);
	assert_int_equal(id, 42);
	uint64_t bid = submit_batch(ts, 1, 0, 0, 0, 0, 1);
	assert_int_equal(bid, 10);
	assert_non_null(tasks_get(ts, 7));
	tasks_destroy(ts);
}

static void create_starts_at_given_ids(void **state)
{
	(void)state;
	memset(&F, 0, sizeof(F));
	struct tasks_limits lim = default_limits();
	struct tasks *ts = tasks_create(&lim, &FX, 500, 30);
	assert_non_null(ts);
	assert_int_equal(submit_simple(ts, 0, 0, 0), 500);
	assert_int_equal(submit_batch(ts, 1, 0, 0, 0, 0, 0), 30);
	tasks_destroy(ts);
}

/* ---- next deadline ---- */

static void next_deadline_is_the_earliest_of_timeouts_backoffs_and_batch_deadlines(void **state)
{
	(void)state;
	struct tasks *ts = new_default(10, 0);
	assert_int_equal(tasks_next_deadline(ts), UINT64_MAX);
	uint64_t a = submit(ts, mk_task(0, TASK_RESTART_TEMPORARY, 5000, 0, 0), 0);
	uint64_t b = submit(ts, mk_task(0, TASK_RESTART_TRANSIENT, 0, 3, 300), 0);
	assert_int_equal(tasks_next_deadline(ts), UINT64_MAX); /* nothing running yet */
	pump(ts, AT(0));
	assert_int_equal(tasks_next_deadline(ts), 5000);
	worker_lost(ts, b, 1, "crash", 10);
	assert_int_equal(tasks_next_deadline(ts), 310); /* backoff */
	submit_batch(ts, 1, 1, 0, 0, 200, 20); /* pool 1 has no room */
	assert_int_equal(tasks_next_deadline(ts), 220); /* batch deadline */
	tasks_tick(ts, AT(220));
	assert_int_equal(tasks_next_deadline(ts), 310);
	tasks_tick(ts, AT(310));
	pump(ts, AT(310));
	assert_int_equal(tasks_next_deadline(ts), 5000);
	tasks_tick(ts, AT(5000));
	assert_int_equal(F.kill_count, 1);
	assert_int_equal(F.kill_log[0], a);
	assert_int_equal(tasks_next_deadline(ts), UINT64_MAX); /* b has no timeout */
	tasks_destroy(ts);
}

/* ---- two clocks: timers on mono, what users see on wall ---- */

#define HOUR_MS (3600u * 1000u)

/* A table with one of each timer armed: a running task's timeout (a, at
 * mono 1000 + 5000), a transient task in backoff (b, until mono 1010 + 300)
 * and a batch deadline (mono 1020 + 2000, its task waiting for room). The
 * wall clock starts far from the monotonic one, as on a real machine. */
static struct tasks *three_timers(uint64_t *a, uint64_t *b, uint64_t *bid, uint64_t wall0)
{
	struct tasks *ts = new_default(2, 0);
	uint64_t id = 0;
	assert_int_equal(tasks_submit(ts, mk_task(0, TASK_RESTART_TEMPORARY, 5000, 0, 0),
	                              AT2(1000, wall0), &id), 0);
	rec_of(id)->submitted = 1;
	*a = id;
	assert_int_equal(tasks_submit(ts, mk_task(0, TASK_RESTART_TRANSIENT, 0, 3, 300),
	                              AT2(1000, wall0), &id), 0);
	rec_of(id)->submitted = 1;
	*b = id;
	pump(ts, AT2(1000, wall0));
	slot_free(*b);
	tasks_on_worker_lost(ts, *b, 1, "crash", AT2(1010, wall0 + 10));
	struct task *tv[1] = {mk_task(1, TASK_RESTART_TEMPORARY, 0, 0, 0)}; /* pool 1: no room */
	assert_int_equal(tasks_submit_batch(ts, tv, 1, 0, 2000, AT2(1020, wall0 + 20), bid), 0);
	rec_of(tv[0]->id)->submitted = 1;
	return ts;
}

static void wall_clock_steps_fire_no_timeout_backoff_or_batch_deadline(void **state)
{
	(void)state;
	uint64_t wall0 = UINT64_C(1700000000000); /* a 2023 date, far from mono */
	uint64_t a, b, bid;
	struct tasks *ts = three_timers(&a, &b, &bid, wall0);
	assert_int_equal(tasks_next_deadline(ts), 1310); /* b's backoff, on mono */

	/* what users see is wall time */
	assert_int_equal(tasks_get(ts, a)->submitted_ms, wall0);
	assert_int_equal(tasks_get(ts, a)->started_ms, wall0);
	const struct batch *bt = tasks_get_batch(ts, bid);
	assert_int_equal(bt->created_ms, wall0 + 20);
	assert_int_equal(bt->deadline_ms, wall0 + 20 + 2000);

	/* the wall clock jumps hours ahead, then hours back; mono stays */
	size_t finals = F.final_count;
	tasks_tick(ts, AT2(1300, wall0 + 5 * HOUR_MS));
	pump(ts, AT2(1300, wall0 + 5 * HOUR_MS));
	tasks_tick(ts, AT2(1300, wall0 - 5 * HOUR_MS));
	pump(ts, AT2(1300, wall0 - 5 * HOUR_MS));
	tasks_tick(ts, AT2(1300, 0));
	assert_int_equal(F.kill_count, 0);
	assert_int_equal(F.final_count, finals);
	assert_int_equal(F.dispatch_count, 2); /* b still waits out its backoff */
	assert_int_equal(state_of(ts, a), TASK_RUNNING);
	assert_int_equal(tasks_next_deadline(ts), 1310);

	/* mono moves: each fires at its own time, whatever the wall says */
	tasks_tick(ts, AT2(1310, wall0 - HOUR_MS));
	pump(ts, AT2(1310, wall0 - HOUR_MS));
	assert_int_equal(F.dispatch_count, 3); /* b again */
	assert_int_equal(tasks_get(ts, b)->started_ms, wall0 - HOUR_MS);
	assert_int_equal(tasks_next_deadline(ts), 3020); /* the batch's */
	tasks_tick(ts, AT2(3019, wall0 + HOUR_MS));
	assert_int_equal(F.final_count, finals);
	tasks_tick(ts, AT2(3020, wall0 + HOUR_MS));
	assert_int_equal(F.final_count, finals + 1); /* the batch's task timed out */
	assert_int_equal(tasks_get(ts, F.final_log[finals])->state, TASK_TIMED_OUT);
	assert_int_equal(tasks_get(ts, F.final_log[finals])->finished_ms, wall0 + HOUR_MS);
	assert_int_equal(tasks_next_deadline(ts), 6000); /* a's timeout */
	tasks_tick(ts, AT2(5999, wall0 + 9 * HOUR_MS));
	assert_int_equal(F.kill_count, 0);
	tasks_tick(ts, AT2(6000, wall0 - 9 * HOUR_MS));
	assert_int_equal(F.kill_count, 1);
	assert_int_equal(F.kill_log[0], a);
	tasks_destroy(ts);
}

static void recovered_batch_deadline_moves_to_the_monotonic_clock(void **state)
{
	(void)state;
	/* created at wall 10000 with 5000 ms to go; the node restarts with
	 * mono at 50 */
	struct batch b = {.id = 4, .total = 1, .created_ms = 10000, .deadline_ms = 15000};

	struct tasks *ts = new_default(0, 0);
	assert_int_equal(tasks_recover_batch(ts, &b, AT2(50, 12000)), 0);
	assert_int_equal(tasks_next_deadline(ts), 50 + 3000); /* what was left */
	tasks_destroy(ts);

	/* the wall clock was stepped back meanwhile: never more than the span */
	ts = new_default(0, 0);
	assert_int_equal(tasks_recover_batch(ts, &b, AT2(50, 1000)), 0);
	assert_int_equal(tasks_next_deadline(ts), 50 + 5000);
	tasks_destroy(ts);

	/* it passed while the node was down: due at once, and it ends the
	 * batch's recovered task */
	ts = new_default(0, 0);
	assert_int_equal(tasks_recover_batch(ts, &b, AT2(50, 99000)), 0);
	assert_int_equal(tasks_next_deadline(ts), 50);
	struct task *t = mk_journal_task(9, TASK_QUEUED, TASK_RESTART_TEMPORARY, 0, 1);
	t->batch_id = 4;
	assert_int_equal(tasks_recover(ts, t, AT2(50, 99000)), 0);
	tasks_tick(ts, AT2(50, 99000));
	assert_int_equal(state_of(ts, 9), TASK_TIMED_OUT);
	assert_int_equal(tasks_next_deadline(ts), UINT64_MAX);
	tasks_destroy(ts);

	/* a finished batch arms nothing */
	ts = new_default(0, 0);
	struct batch done = b;
	done.done = 1;
	assert_int_equal(tasks_recover_batch(ts, &done, AT2(50, 12000)), 0);
	assert_int_equal(tasks_next_deadline(ts), UINT64_MAX);
	tasks_destroy(ts);
}

/* ---- timer order ---- */

static void timers_fire_in_deadline_order_after_cancels_and_retries(void **state)
{
	(void)state;
	struct tasks_limits lim = default_limits();
	lim.queue_tasks_max = 2000;
	lim.backoff_max_ms = 0;
	struct tasks *ts = new_table(&lim, 2000, 0);
	uint64_t seed = 12345;
	enum { N = 1500 };
	uint64_t ids[N];
	for (int i = 0; i < N; i++) {
		seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
		uint32_t timeout = 100 + (uint32_t)((seed >> 33) % 5000);
		uint8_t restart = (seed >> 20) & 1 ? TASK_RESTART_TRANSIENT : TASK_RESTART_TEMPORARY;
		ids[i] = submit(ts, mk_task(0, restart, timeout, 3, 1 + (uint32_t)(seed >> 40) % 50),
		                0);
	}
	pump(ts, AT(0));
	/* every third crashes (transient ones retry after a backoff), every
	 * fifth is cancelled, and the clock moves in uneven steps */
	for (int i = 0; i < N; i += 3)
		worker_lost(ts, ids[i], 1, "crash", 10);
	for (int i = 0; i < N; i += 5)
		if (!task_state_is_final(state_of(ts, ids[i]))) {
			assert_int_equal(tasks_cancel(ts, ids[i], AT(20)), 0);
			rec_of(ids[i])->cancel_requested = 1;
		}
	for (uint64_t now = 20; now <= 80; now += 7) {
		tasks_tick(ts, AT(now));
		pump(ts, AT(now)); /* retries run again with new deadlines */
	}
	/* cancel kills so far do not count below */
	size_t first_timeout_kill = F.kill_count;
	uint64_t last_deadline = 0;
	for (uint64_t now = 81; now <= 6000; now += 13) {
		size_t before = F.kill_count;
		tasks_tick(ts, AT(now));
		for (size_t k = before; k < F.kill_count; k++) {
			const struct rec *r = rec_of(F.kill_log[k]);
			CHECK(r->deadline_ms <= now);          /* not early */
			CHECK(r->deadline_ms + 13 > now);      /* not late: due since the last tick */
			CHECK(r->deadline_ms >= last_deadline); /* in deadline order */
			last_deadline = r->deadline_ms;
		}
		uint64_t next = tasks_next_deadline(ts);
		CHECK(next == UINT64_MAX || next > now);
	}
	/* every running task that was not cancelled timed out exactly once */
	size_t expected = 0;
	for (int i = 0; i < N; i++) {
		const struct task *t = tasks_get(ts, ids[i]);
		if (t && t->state == TASK_RUNNING && !rec_of(ids[i])->cancel_requested) {
			expected++;
			CHECK(t->kill_requested);
		}
	}
	assert_int_equal(F.kill_count - first_timeout_kill, expected);
	assert_true(expected > N / 2);
	tasks_destroy(ts);
}

/* ---- many batches ---- */

static int lite_dispatch(void *ctx, struct task *t)
{
	(void)ctx;
	(void)t;
	return 0;
}

static int lite_put_task(void *arg, const struct task *t)
{
	(void)arg;
	(void)t;
	return 0;
}

static int lite_put_batch(void *arg, const struct batch *b)
{
	(void)arg;
	(void)b;
	return 0;
}

static void lite_commit(struct tasks *ts)
{
	assert_int_equal(tasks_flush(ts, lite_put_task, lite_put_batch, NULL), 0);
	tasks_flush_done(ts);
	tasks_release_final(ts);
}

static uint64_t lite_batch(struct tasks *ts, uint32_t deadline_ms, uint64_t now, uint64_t *task_id)
{
	struct task *t = mk_task(0, TASK_RESTART_TEMPORARY, 0, 0, 0);
	uint64_t bid = 0;
	assert_int_equal(tasks_submit_batch(ts, &t, 1, 0, deadline_ms, AT(now), &bid), 0);
	*task_id = t->id;
	return bid;
}

static void more_than_100k_batches_over_time_and_600_at_once(void **state)
{
	(void)state;
	static const struct tasks_effects lite = {.dispatch = lite_dispatch};
	struct tasks_limits lim = default_limits();
	lim.queue_tasks_max = 4096;
	lim.batches_max = 1024;
	struct tasks *ts = tasks_create(&lim, &lite, 0, 0);
	assert_non_null(ts);
	enum { LIVE = 600 };
	uint64_t bids[LIVE], tids[LIVE];
	for (uint32_t i = 0; i < LIVE; i++)
		bids[i] = lite_batch(ts, i % 2 ? 1000 : 0, 0, &tids[i]);
	lite_commit(ts);
	tasks_pump(ts, AT(0));
	for (uint32_t i = 0; i < LIVE; i++) {
		const struct batch *b = tasks_get_batch(ts, bids[i]);
		assert_non_null(b);
		assert_int_equal(b->id, bids[i]);
		assert_int_equal(b->in_flight, 1);
		assert_int_equal(state_of(ts, tids[i]), TASK_RUNNING);
	}
	assert_int_equal(tasks_next_deadline(ts), 1000);
	tasks_tick(ts, AT(999));
	for (uint32_t i = 0; i < LIVE; i++)
		tasks_on_result(ts, tids[i], 1, NULL, 0, 0, NULL, "n", AT(999));
	/* every batch is done: no deadline left to fire */
	assert_int_equal(tasks_next_deadline(ts), UINT64_MAX);
	lite_commit(ts);
	for (uint32_t i = 0; i < LIVE; i++)
		assert_null(tasks_get_batch(ts, bids[i]));

	/* 100,000 more, 1,000 at a time, each released before the next round;
	 * half of them expire by their deadline */
	uint64_t now = 1000, created = LIVE, timed_out = 0;
	uint64_t round_tids[1000];
	for (int round = 0; round < 100; round++) {
		for (uint32_t i = 0; i < 1000; i++) {
			(void)lite_batch(ts, i % 2 ? 50 : 500, now, &round_tids[i]);
			created++;
		}
		lite_commit(ts);
		tasks_pump(ts, AT(now));
		for (uint32_t i = 0; i < 1000; i += 2)
			tasks_on_result(ts, round_tids[i], 1, NULL, 0, 0, NULL, "n", AT(now + 10));
		tasks_tick(ts, AT(now + 50)); /* kills the odd ones... */
		for (uint32_t i = 1; i < 1000; i += 2) {
			const struct task *t = tasks_get(ts, round_tids[i]);
			assert_true(t->kill_requested);
			tasks_on_worker_lost(ts, round_tids[i], 1, "killed", AT(now + 51));
			assert_int_equal(state_of(ts, round_tids[i]), TASK_TIMED_OUT);
			timed_out++;
		}
		assert_int_equal(tasks_next_deadline(ts), UINT64_MAX);
		lite_commit(ts);
		now += 100;
	}
	assert_true(created > 100000);
	assert_int_equal(timed_out, 50000);
	struct tasks_counters c = counters(ts);
	assert_int_equal(c.held, 0);
	assert_int_equal(c.succeeded, LIVE + 50000);
	assert_int_equal(c.timed_out, 50000);
	tasks_destroy(ts);
}

/* ---- task helpers ---- */

static void clone_is_a_deep_copy(void **state)
{
	(void)state;
	struct task *t = mk_task(1, TASK_RESTART_TRANSIENT, 10, 2, 3);
	t->argc = 2;
	t->argv = calloc(3, sizeof(char *));
	assert_non_null(t->argv);
	t->argv[0] = strdup("/bin/echo");
	t->argv[1] = strdup("hi");
	t->error = strdup("e");
	t->node = strdup("n");
	t->output = malloc(2);
	assert_non_null(t->output);
	memcpy(t->output, "ok", 2);
	t->output_len = 2;
	struct task *c = task_clone(t);
	assert_non_null(c);
	task_free(t);
	assert_string_equal(c->handler, "echo");
	assert_memory_equal(c->payload, "abc", 3);
	assert_int_equal(c->argc, 2);
	assert_string_equal(c->argv[0], "/bin/echo");
	assert_string_equal(c->argv[1], "hi");
	assert_null(c->argv[2]);
	assert_memory_equal(c->output, "ok", 2);
	assert_string_equal(c->error, "e");
	assert_string_equal(c->node, "n");
	assert_int_equal(c->pool, 1);
	task_free(c);
	assert_string_equal(task_state_name(TASK_TIMED_OUT), "timed_out");
	assert_string_equal(task_state_name(99), "unknown");
	assert_false(task_state_is_final(TASK_RUNNING));
	assert_true(task_state_is_final(TASK_LOST));
}

/* ---- randomized model test ---- */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
	/* splitmix64 */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint32_t rng_below(uint32_t n)
{
	return n ? (uint32_t)(rng_next() % n) : 0;
}

#define MODEL_POOLS 3
#define MODEL_OPS 2000

struct model {
	struct tasks *ts;
	uint64_t now_ms;
	uint64_t last_id;         /* highest id handed out */
	uint64_t last_batch;
	uint32_t batch_total[BATCH_IDS_MAX];
	uint64_t batch_deadline_ms[BATCH_IDS_MAX]; /* absolute, 0 = none */
	uint64_t submitted;
	uint64_t released;
	uint32_t queue_max;
};

/* What the random runs exercised, summed over seeds. */
static struct {
	uint64_t submitted, succeeded, failed, timed_out, cancelled, retried, kills, full;
} g_cov;

static uint64_t model_finals(void)
{
	return F.final_count;
}

/* A task id currently held by a fake worker, or 0. */
static uint64_t pick_slot(const struct model *m)
{
	uint64_t n = 0;
	for (uint64_t id = 1; id <= m->last_id; id++)
		n += F.rec[id].in_slot;
	if (!n)
		return 0;
	uint64_t k = rng_below((uint32_t)n);
	for (uint64_t id = 1; id <= m->last_id; id++)
		if (F.rec[id].in_slot && k-- == 0)
			return id;
	return 0;
}

static struct task *model_mk(void)
{
	uint8_t restart = (uint8_t)rng_below(2);
	uint32_t timeout = rng_below(3) == 0 ? 0 : 50 + rng_below(2000);
	uint32_t attempts = rng_below(5);
	uint32_t backoff = rng_below(300);
	return mk_task(rng_below(MODEL_POOLS), restart, timeout, attempts, backoff);
}

static void model_check(struct model *m)
{
	struct tasks *ts = m->ts;
	uint32_t batch_final[BATCH_IDS_MAX];
	memset(batch_final, 0, sizeof(batch_final));
	uint64_t live = 0, in_slots = 0;
	for (uint64_t id = 1; id <= m->last_id; id++) {
		struct rec *r = &F.rec[id];
		CHECK(r->submitted);
		CHECK(r->final_calls <= 1);
		if (r->final_calls && r->batch_id)
			batch_final[r->batch_id]++;
		const struct task *t = tasks_get(ts, id);
		if (r->released) {
			CHECK(t == NULL);
			CHECK(r->final_calls == 1);
			continue;
		}
		CHECK(t != NULL);
		CHECK(t->id == id);
		CHECK(t->batch_id == r->batch_id);
		if (r->final_calls) {
			CHECK(t->state == r->final_state);
		} else {
			CHECK(t->state == TASK_QUEUED || t->state == TASK_RUNNING);
			live++;
		}
		/* on a worker <=> running in the table */
		CHECK(r->in_slot == (t->state == TASK_RUNNING));
		in_slots += r->in_slot;
		CHECK(t->attempts <= t->opts.max_attempts);
	}
	struct tasks_counters c;
	tasks_counters(ts, &c);
	CHECK(c.submitted == m->submitted);
	CHECK(c.succeeded + c.failed + c.timed_out + c.cancelled + c.lost == model_finals());
	CHECK(c.held == m->submitted - m->released);
	CHECK(c.queued + c.running + c.backoff == live);
	CHECK(c.running == in_slots);
	CHECK(live <= m->queue_max);
	for (uint32_t p = 0; p < MODEL_POOLS; p++)
		CHECK(F.busy[p] <= F.cap[p]);
	for (uint64_t bid = 1; bid <= m->last_batch; bid++) {
		const struct batch *b = tasks_get_batch(ts, bid);
		if (!b)
			continue;
		CHECK(b->total == m->batch_total[bid]);
		CHECK(b->done == batch_final[bid]);
		if (b->max_concurrency)
			CHECK(b->in_flight <= b->max_concurrency);
		CHECK(F.batch_in_slots[bid] <= b->in_flight);
	}
	uint64_t next = tasks_next_deadline(ts);
	CHECK(next == UINT64_MAX || next > 0);
}

/* Right after a tick: every deadline that passed has been acted on. */
static void model_check_deadlines(const struct model *m)
{
	for (uint64_t id = 1; id <= m->last_id; id++) {
		const struct rec *r = &F.rec[id];
		if (r->final_calls)
			continue;
		if (r->in_slot && r->deadline_ms && r->deadline_ms <= m->now_ms)
			CHECK(r->kills == 1); /* timed out: killed */
		uint64_t bd = r->batch_id ? m->batch_deadline_ms[r->batch_id] : 0;
		if (bd && bd <= m->now_ms) {
			CHECK(r->in_slot);    /* not started: ended at once */
			CHECK(r->kills == 1); /* running: killed */
		}
	}
}

static void model_flush_sometimes_failing(struct model *m, int may_fail)
{
	int fail = may_fail && rng_below(5) == 0;
	F.put_fail_at = fail ? 1 + (long)rng_below(4) : 0;
	F.put_count = 0;
	F.put_batch_count = 0;
	for (uint64_t id = 1; id <= m->last_id; id++)
		F.rec[id].put_count = 0;
	int rc = tasks_flush(m->ts, put_task, put_batch, NULL);
	if (rc == 0) {
		/* every task that turned final since the last commit was written */
		for (uint64_t id = 1; id <= m->last_id; id++) {
			struct rec *r = &F.rec[id];
			if (r->final_calls && !r->persisted_final) {
				CHECK(r->put_count == 1);
				r->persisted_final = 1;
			}
		}
		tasks_flush_done(m->ts);
	} else {
		CHECK(fail);
		CHECK(rc == ERR_STORAGE);
	}
	F.put_fail_at = 0;
	tasks_release_final(m->ts);
	for (uint64_t id = 1; id <= m->last_id; id++) {
		struct rec *r = &F.rec[id];
		if (r->released)
			continue;
		const struct task *t = tasks_get(m->ts, id);
		if (r->persisted_final) {
			CHECK(t == NULL); /* clean and final: freed */
			r->released = 1;
			m->released++;
		} else {
			CHECK(t != NULL); /* dirty or not final: kept */
		}
	}
}

static void model_flush(struct model *m)
{
	model_flush_sometimes_failing(m, 1);
}

static void model_step(struct model *m)
{
	struct tasks *ts = m->ts;
	uint32_t op = rng_below(100);
	if (op < 16) { /* submit */
		struct task *t = model_mk();
		uint64_t id = 0;
		uint64_t live = m->submitted - model_finals();
		int rc = tasks_submit(ts, t, AT(m->now_ms), &id);
		if (live >= m->queue_max) {
			CHECK(rc == ERR_FULL);
			g_cov.full++;
			task_free(t);
		} else {
			CHECK(rc == 0);
			CHECK(id == m->last_id + 1);
			m->last_id = id;
			m->submitted++;
			rec_of(id)->submitted = 1;
		}
	} else if (op < 21) { /* batch submit */
		uint32_t n = rng_below(9);
		struct task *tv[8];
		for (uint32_t i = 0; i < n; i++)
			tv[i] = model_mk();
		uint32_t max = rng_below(4);
		uint32_t deadline = rng_below(2) ? 0 : 100 + rng_below(3000);
		uint64_t bid = 0;
		uint64_t live = m->submitted - model_finals();
		int rc = tasks_submit_batch(ts, tv, n, max, deadline, AT(m->now_ms), &bid);
		if (live + n > m->queue_max) {
			CHECK(rc == ERR_FULL);
			g_cov.full++;
			for (uint32_t i = 0; i < n; i++)
				task_free(tv[i]);
		} else {
			CHECK(rc == 0);
			CHECK(bid == m->last_batch + 1);
			CHECK(bid < BATCH_IDS_MAX);
			m->last_batch = bid;
			m->batch_total[bid] = n;
			m->batch_deadline_ms[bid] = deadline ? m->now_ms + deadline : 0;
			F.batch_max[bid] = max;
			for (uint32_t i = 0; i < n; i++) {
				CHECK(tv[i]->id == m->last_id + 1);
				m->last_id = tv[i]->id;
				struct rec *r = rec_of(tv[i]->id);
				r->submitted = 1;
				r->batch_id = bid;
			}
			m->submitted += n;
		}
	} else if (op < 41) { /* a worker answers */
		uint64_t id = pick_slot(m);
		if (id)
			worker_result(ts, id, rng_below(4) != 0, rng_below(2) ? "out" : NULL,
			              (int32_t)rng_below(3), rng_below(2) ? "err" : NULL, m->now_ms);
	} else if (op < 51) { /* a worker dies */
		uint64_t id = pick_slot(m);
		if (id)
			worker_lost(ts, id, rng_below(5) != 0, "crash", m->now_ms);
	} else if (op < 57) { /* a killed worker is reaped */
		for (uint64_t id = 1; id <= m->last_id; id++) {
			if (F.rec[id].in_slot && F.rec[id].kills) {
				worker_lost(ts, id, 1, "killed", m->now_ms);
				break;
			}
		}
	} else if (op < 60) { /* a queued-behind job starts */
		uint64_t id = pick_slot(m);
		if (id) {
			tasks_on_started(ts, id, AT(m->now_ms));
			struct rec *r = rec_of(id);
			if (r->timeout_ms && !r->kills)
				r->deadline_ms = m->now_ms + r->timeout_ms;
		}
	} else if (op < 75) { /* time passes */
		m->now_ms += rng_below(400);
		tasks_tick(ts, AT(m->now_ms));
		model_check_deadlines(m);
	} else if (op < 83) { /* cancel */
		if (m->last_id) {
			uint64_t id = 1 + rng_below((uint32_t)m->last_id + 2); /* may be unknown */
			int final = id <= m->last_id && F.rec[id].final_calls;
			int known = id <= m->last_id;
			int rc = tasks_cancel(ts, id, AT(m->now_ms));
			CHECK(rc == ((!known || final) ? ERR_NOT_FOUND : 0));
			if (rc == 0) {
				struct rec *r = rec_of(id);
				r->cancel_requested = 1;
				CHECK(r->final_calls || (r->in_slot && r->kills == 1));
			}
		}
	} else if (op < 85) { /* cancel a batch */
		if (m->last_batch) {
			uint64_t bid = 1 + rng_below((uint32_t)m->last_batch);
			uint32_t open = 0;
			for (uint64_t id = 1; id <= m->last_id; id++)
				if (F.rec[id].batch_id == bid && !F.rec[id].final_calls)
					open++;
			uint32_t n = tasks_cancel_batch(ts, bid, AT(m->now_ms));
			CHECK(n == open);
			for (uint64_t id = 1; id <= m->last_id; id++) {
				struct rec *r = &F.rec[id];
				if (r->batch_id == bid && !r->final_calls) {
					CHECK(r->in_slot && r->kills == 1);
					r->cancel_requested = 1;
				} else if (r->batch_id == bid && r->final_state == TASK_CANCELLED) {
					r->cancel_requested = 1;
				}
			}
		}
	} else if (op < 95) { /* group commit */
		model_flush(m);
	} else { /* worker capacity changes (workers restart, pool resized) */
		uint32_t p = rng_below(MODEL_POOLS);
		uint32_t cap = 1 + rng_below(4);
		if (cap >= F.busy[p])
			F.cap[p] = cap;
	}
	tasks_pump(ts, AT(m->now_ms));
}

static void model_run(uint64_t seed, int ops)
{
	memset(&F, 0, sizeof(F));
	g_seed = seed;
	rng_state = seed;
	struct model *m = calloc(1, sizeof(*m));
	assert_non_null(m);
	m->queue_max = 40;
	struct tasks_limits lim = {
		.pool_count = MODEL_POOLS,
		.queue_tasks_max = m->queue_max,
		.default_timeout_ms = 0,
		.default_max_attempts = 3,
		.default_backoff_ms = 20,
		.backoff_max_ms = 800,
		.batches_max = BATCH_IDS_MAX,
	};
	for (uint32_t p = 0; p < MODEL_POOLS; p++)
		F.cap[p] = 1 + rng_below(3);
	m->ts = tasks_create(&lim, &FX, 0, 0);
	assert_non_null(m->ts);

	for (g_op = 0; g_op < ops; g_op++) {
		model_step(m);
		model_check(m);
	}

	/* Wind down: answer every worker, let time run, until all are final. */
	for (int round = 0; round < 10000; round++) {
		uint64_t id;
		while ((id = pick_slot(m)) != 0) {
			if (F.rec[id].kills)
				worker_lost(m->ts, id, 1, "killed", m->now_ms);
			else
				worker_result(m->ts, id, 1, "out", 0, NULL, m->now_ms);
		}
		m->now_ms += 1000;
		tasks_tick(m->ts, AT(m->now_ms));
		model_flush_sometimes_failing(m, 0); /* new tasks are durable */
		tasks_pump(m->ts, AT(m->now_ms));
		model_check(m);
		if (m->submitted == model_finals() && pick_slot(m) == 0)
			break;
	}
	CHECK(m->submitted == model_finals());
	for (uint64_t id = 1; id <= m->last_id; id++)
		CHECK(F.rec[id].final_calls == 1); /* every task ended exactly once */
	/* persist everything and release: the table is empty */
	F.put_fail_at = 0;
	for (int i = 0; i < 10 && m->released < m->submitted; i++)
		model_flush(m);
	model_flush(m);
	CHECK(m->released == m->submitted);
	struct tasks_counters c;
	tasks_counters(m->ts, &c);
	CHECK(c.held == 0);
	CHECK(c.queued == 0 && c.running == 0 && c.backoff == 0);
	CHECK(c.succeeded + c.failed + c.timed_out + c.cancelled + c.lost == m->submitted);
	CHECK(tasks_next_deadline(m->ts) == UINT64_MAX);
	g_cov.succeeded += c.succeeded;
	g_cov.failed += c.failed;
	g_cov.timed_out += c.timed_out;
	g_cov.cancelled += c.cancelled;
	g_cov.retried += c.retried;
	g_cov.submitted += c.submitted;
	g_cov.kills += F.kill_count;
	if (getenv("TASKS_MODEL_STATS"))
		print_message("seed %" PRIu64 ": %" PRIu64 " tasks, %" PRIu64 " ok, %" PRIu64
		              " failed, %" PRIu64 " timed out, %" PRIu64 " cancelled, %" PRIu64
		              " retried, %zu kills, %" PRIu64 " full, %zu refused\n",
		              seed, c.submitted, c.succeeded, c.failed, c.timed_out, c.cancelled,
		              c.retried, F.kill_count, g_cov.full, F.refused_count);
	tasks_destroy(m->ts);
	free(m);
	g_op = -1;
	g_seed = 0;
}

static void random_operations_keep_the_invariants(void **state)
{
	(void)state;
	const char *env = getenv("TASKS_MODEL_SEED");
	if (env) {
		uint64_t seed = strtoull(env, NULL, 0);
		print_message("model seed %" PRIu64 "\n", seed);
		model_run(seed, MODEL_OPS);
		return;
	}
	memset(&g_cov, 0, sizeof(g_cov));
	/* under valgrind, every seed (each draws its own pool sizes) with fewer
	 * operations, but no fewer than a quarter: 8 x 500 make some 1,400
	 * tasks, enough for the coverage checks below */
	const int op_count = (int)test_scaled(MODEL_OPS, MODEL_OPS / 4);
	for (uint64_t seed = 1; seed <= 8; seed++)
		model_run(seed * 0x5851f42d4c957f2dULL, op_count);
	/* the random runs reached every outcome, or they prove little */
	assert_true(g_cov.submitted > 1000);
	assert_true(g_cov.succeeded > 0);
	assert_true(g_cov.failed > 0);
	assert_true(g_cov.timed_out > 0);
	assert_true(g_cov.cancelled > 0);
	assert_true(g_cov.retried > 0);
	assert_true(g_cov.kills > 0);
	assert_true(g_cov.full > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(pump_dispatches_in_fifo_order_per_pool),
		cmocka_unit_test(refused_dispatch_keeps_task_at_head),
		cmocka_unit_test(pools_are_independent),
		cmocka_unit_test(draining_stops_dispatch),
		cmocka_unit_test(ok_result_succeeds_with_output_exit_code_and_node),
		cmocka_unit_test(handler_failure_fails_and_is_never_retried_even_if_transient),
		cmocka_unit_test(lost_worker_fails_temporary_task_with_reason),
		cmocka_unit_test(lost_transient_task_retries_with_capped_exponential_backoff),
		cmocka_unit_test(backoff_doubles_without_a_cap),
		cmocka_unit_test(default_options_apply_to_transient_tasks),
		cmocka_unit_test(lost_while_queued_behind_is_requeued_at_head_without_charge),
		cmocka_unit_test(timeout_kills_once_then_temporary_task_times_out),
		cmocka_unit_test(timeout_of_transient_task_is_retried),
		cmocka_unit_test(started_resets_the_deadline),
		cmocka_unit_test(default_timeout_applies_when_task_gives_none),
		cmocka_unit_test(cancel_queued_task_is_cancelled_at_once),
		cmocka_unit_test(cancel_in_backoff_is_cancelled_at_once),
		cmocka_unit_test(cancel_running_task_kills_then_cancels_when_worker_is_lost),
		cmocka_unit_test(cancel_of_unknown_or_final_task_is_not_found),
		cmocka_unit_test(cancel_beats_timeout),
		cmocka_unit_test(result_after_kill_still_counts),
		cmocka_unit_test(batch_never_exceeds_max_concurrency),
		cmocka_unit_test(batch_without_limit_is_bounded_by_pool_only),
		cmocka_unit_test(open_batch_grows_within_its_window_and_stays_until_closed),
		cmocka_unit_test(open_batch_room_is_bounded_by_the_table),
		cmocka_unit_test(open_batch_deadline_closes_its_input),
		cmocka_unit_test(recovered_open_batch_is_closed_at_its_journaled_total),
		cmocka_unit_test(batch_deadline_times_out_waiting_tasks_at_once_and_kills_running_ones),
		cmocka_unit_test(cancel_batch_cancels_every_unfinished_task),
		cmocka_unit_test(full_queue_refuses_submit_and_batch_until_tasks_are_released),
		cmocka_unit_test(thousands_of_tasks_are_found_and_run_in_order),
		cmocka_unit_test(batches_max_refuses_new_batches),
		cmocka_unit_test(flush_hands_out_each_changed_task_once_in_change_order),
		cmocka_unit_test(failing_put_stops_the_flush_and_marks_nothing_clean),
		cmocka_unit_test(failing_put_batch_stops_the_flush),
		cmocka_unit_test(flush_without_commit_keeps_changes_dirty),
		cmocka_unit_test(new_task_is_dispatched_only_after_its_commit),
		cmocka_unit_test(a_queue_stops_at_a_task_not_yet_journaled),
		cmocka_unit_test(failed_commit_withdraws_new_tasks_and_keeps_changes_of_old_ones),
		cmocka_unit_test(withdraw_takes_back_one_new_task_or_batch_only),
		cmocka_unit_test(next_ids_say_what_the_next_submit_hands_out),
		cmocka_unit_test(release_final_frees_only_clean_final_tasks),
		cmocka_unit_test(recovered_queued_task_runs),
		cmocka_unit_test(recovered_running_temporary_task_ends_lost),
		cmocka_unit_test(recovered_running_transient_task_is_retried),
		cmocka_unit_test(recovered_batch_task_keeps_its_batch_limit),
		cmocka_unit_test(next_ids_continue_after_the_highest_recovered_id),
		cmocka_unit_test(create_starts_at_given_ids),
		cmocka_unit_test(next_deadline_is_the_earliest_of_timeouts_backoffs_and_batch_deadlines),
		cmocka_unit_test(wall_clock_steps_fire_no_timeout_backoff_or_batch_deadline),
		cmocka_unit_test(recovered_batch_deadline_moves_to_the_monotonic_clock),
		cmocka_unit_test(timers_fire_in_deadline_order_after_cancels_and_retries),
		cmocka_unit_test(more_than_100k_batches_over_time_and_600_at_once),
		cmocka_unit_test(clone_is_a_deep_copy),
		cmocka_unit_test(random_operations_keep_the_invariants),
	};
	return cmocka_run_group_tests_name("tasks", tests, NULL, NULL);
}
