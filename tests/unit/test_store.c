/*
 * test_store.c - the sqlite journal (node/io/store.c): round trips of every
 * column, the queries the node restarts from, purge bounds, durability
 * across close/open and the refusals (newer schema, unusable data dir).
 * Each test gets its own temporary data dir (mkdtemp), removed afterwards.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chorus.h"
#include "core/tasks.h"
#include "io/log.h"
#include "io/store.h"

struct fixture {
	char dir[64];
	struct store *st;
};

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	strcpy(f->dir, "/tmp/chorus-store-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	log_setup(LOG_ERROR + 1, 0); /* quiet: errors below are expected */
	char err[256];
	assert_int_equal(store_open(&f->st, f->dir, STORE_SYNC_NORMAL, err, sizeof(err)), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	store_close(f->st);
	nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	log_setup(LOG_INFO, 0);
	return 0;
}

static char *xstrdup(const char *s)
{
	char *c = strdup(s);
	assert_non_null(c);
	return c;
}

/* A task with every field set to something distinctive. */
static struct task *full_task(uint64_t id)
{
	struct task *t = calloc(1, sizeof(*t));
	assert_non_null(t);
	t->id = id;
	t->batch_id = 7;
	t->batch_index = 3;
	t->handler = xstrdup("exec");
	t->payload_len = 5;
	t->payload = malloc(5);
	memcpy(t->payload, "a\0b\xff" "c", 5);
	t->argc = 3;
	t->argv = calloc(4, sizeof(char *));
	t->argv[0] = xstrdup("/bin/echo");
	t->argv[1] = xstrdup("hello \"world\"");
	t->argv[2] = xstrdup("");
	t->opts.timeout_ms = 1500;
	t->opts.restart = TASK_RESTART_TRANSIENT;
	t->opts.max_attempts = 4;
	t->opts.backoff_ms = 250;
	t->pool = 2;
	t->state = TASK_FAILED;
	t->attempts = 2;
	t->exit_code = -9;
	t->output_len = 4;
	t->output = malloc(4);
	memcpy(t->output, "\x00\x01out", 4);
	t->error = xstrdup("killed by signal 9");
	t->node = xstrdup("node-a");
	t->submitted_ms = 1700000000000ull;
	t->started_ms = 1700000000100ull;
	t->finished_ms = 1700000000200ull;
	return t;
}

/* A bare task: handler only, no argv/output/error/node. */
static struct task *plain_task(uint64_t id, int state, uint64_t batch_id, uint32_t index,
			       uint64_t finished_ms)
{
	struct task *t = calloc(1, sizeof(*t));
	assert_non_null(t);
	t->id = id;
	t->batch_id = batch_id;
	t->batch_index = index;
	t->handler = xstrdup("echo");
	t->state = state;
	t->opts.max_attempts = 1;
	t->submitted_ms = 1000 + id;
	t->finished_ms = finished_ms;
	return t;
}

static void put_plain(struct store *st, uint64_t id, int state, uint64_t batch_id, uint32_t index,
		      uint64_t finished_ms)
{
	struct task *t = plain_task(id, state, batch_id, index, finished_ms);
	assert_int_equal(store_task_put(st, t), 0);
	task_free(t);
}

static void put_batch(struct store *st, uint64_t id, uint32_t total, uint64_t created_ms)
{
	struct batch b = {.id = id, .total = total, .max_concurrency = 2, .deadline_ms = 99,
			  .created_ms = created_ms};
	assert_int_equal(store_batch_put(st, &b), 0);
}

static void assert_same_task(const struct task *a, const struct task *b)
{
	assert_int_equal(a->id, b->id);
	assert_int_equal(a->batch_id, b->batch_id);
	assert_int_equal(a->batch_index, b->batch_index);
	assert_string_equal(a->handler, b->handler);
	assert_int_equal(a->payload_len, b->payload_len);
	if (a->payload_len)
		assert_memory_equal(a->payload, b->payload, a->payload_len);
	assert_int_equal(a->argc, b->argc);
	assert_int_equal(a->argv == NULL, b->argv == NULL);
	for (uint32_t i = 0; a->argv && i < a->argc; i++)
		assert_string_equal(a->argv[i], b->argv[i]);
	if (b->argv)
		assert_null(b->argv[b->argc]);
	assert_int_equal(a->opts.timeout_ms, b->opts.timeout_ms);
	assert_int_equal(a->opts.restart, b->opts.restart);
	assert_int_equal(a->opts.max_attempts, b->opts.max_attempts);
	assert_int_equal(a->opts.backoff_ms, b->opts.backoff_ms);
	assert_int_equal(a->pool, b->pool);
	assert_int_equal(a->state, b->state);
	assert_int_equal(a->attempts, b->attempts);
	assert_int_equal(a->exit_code, b->exit_code);
	assert_int_equal(a->output_len, b->output_len);
	if (a->output_len)
		assert_memory_equal(a->output, b->output, a->output_len);
	if (a->error)
		assert_string_equal(a->error, b->error);
	else
		assert_null(b->error);
	if (a->node)
		assert_string_equal(a->node, b->node);
	else
		assert_null(b->node);
	assert_int_equal(a->submitted_ms, b->submitted_ms);
	assert_int_equal(a->started_ms, b->started_ms);
	assert_int_equal(a->finished_ms, b->finished_ms);
}

/* Collects task ids (and frees the tasks); stops after stop_after if set. */
struct collect {
	uint64_t ids[64];
	uint32_t indexes[64];
	int states[64];
	size_t count;
	size_t stop_after;
};

static int collect_cb(void *arg, struct task *t)
{
	struct collect *c = arg;
	assert_true(c->count < 64);
	c->ids[c->count] = t->id;
	c->indexes[c->count] = t->batch_index;
	c->states[c->count] = t->state;
	c->count++;
	task_free(t);
	return c->stop_after && c->count >= c->stop_after;
}

static void put_then_get_round_trips_every_field(void **state)
{
	struct fixture *f = *state;
	struct task *t = full_task(42);
	assert_int_equal(store_task_put(f->st, t), 0);
	struct task *got = NULL;
	assert_int_equal(store_task_get(f->st, 42, &got), 0);
	assert_same_task(t, got);
	task_free(got);

	struct task *p = plain_task(43, TASK_QUEUED, 0, 0, 0);
	assert_int_equal(store_task_put(f->st, p), 0);
	assert_int_equal(store_task_get(f->st, 43, &got), 0);
	assert_same_task(p, got);
	assert_null(got->payload);
	assert_null(got->argv);
	task_free(got);
	task_free(p);
	task_free(t);
}

static void update_rewrites_mutable_fields_but_not_the_spec(void **state)
{
	struct fixture *f = *state;
	struct task *t = full_task(5);
	t->state = TASK_QUEUED;
	free(t->error);
	t->error = NULL;
	assert_int_equal(store_task_put(f->st, t), 0);

	/* second put: the table changed result fields; a changed spec must not stick */
	t->state = TASK_SUCCEEDED;
	t->attempts = 3;
	t->exit_code = 0;
	t->error = xstrdup("none really");
	free(t->node);
	t->node = xstrdup("node-b");
	t->started_ms = 11;
	t->finished_ms = 12;
	free(t->output);
	t->output = (uint8_t *)xstrdup("done");
	t->output_len = 4;
	t->payload[0] = 'Z';
	free(t->handler);
	t->handler = xstrdup("other");
	assert_int_equal(store_task_put(f->st, t), 0);

	struct task *got = NULL;
	assert_int_equal(store_task_get(f->st, 5, &got), 0);
	assert_int_equal(got->state, TASK_SUCCEEDED);
	assert_int_equal(got->attempts, 3);
	assert_int_equal(got->exit_code, 0);
	assert_string_equal(got->error, "none really");
	assert_string_equal(got->node, "node-b");
	assert_int_equal(got->started_ms, 11);
	assert_int_equal(got->finished_ms, 12);
	assert_memory_equal(got->output, "done", 4);
	assert_int_equal(got->payload[0], 'a');
	assert_string_equal(got->handler, "exec");
	task_free(got);
	task_free(t);
}

/* The hot path's narrow updates: a live task's update writes its state,
 * attempts, started_ms, node and error; a final one's also its result; the
 * spec is never written again. */
static void narrow_updates_write_what_the_state_can_change_and_no_spec(void **state)
{
	struct fixture *f = *state;
	struct task *t = full_task(6);
	t->state = TASK_QUEUED;
	t->attempts = 0;
	t->exit_code = 0;
	free(t->output);
	t->output = NULL;
	t->output_len = 0;
	free(t->error);
	t->error = NULL;
	free(t->node);
	t->node = NULL;
	t->started_ms = t->finished_ms = 0;
	assert_int_equal(store_task_put(f->st, t), 0);

	/* running: a changed spec must not stick */
	t->state = TASK_RUNNING;
	t->attempts = 1;
	t->started_ms = 21;
	t->node = xstrdup("node-r");
	t->error = xstrdup("retried after: crash");
	t->payload[0] = 'Z';
	free(t->handler);
	t->handler = xstrdup("other");
	t->opts.timeout_ms = 9;
	assert_int_equal(store_task_update(f->st, t), 0);
	struct task *got = NULL;
	assert_int_equal(store_task_get(f->st, 6, &got), 0);
	assert_int_equal(got->state, TASK_RUNNING);
	assert_int_equal(got->attempts, 1);
	assert_int_equal(got->started_ms, 21);
	assert_string_equal(got->node, "node-r");
	assert_string_equal(got->error, "retried after: crash");
	assert_int_equal(got->payload[0], 'a');
	assert_string_equal(got->handler, "exec");
	assert_int_equal(got->opts.timeout_ms, 1500);
	assert_int_equal(got->argc, 3);
	assert_null(got->output);
	assert_int_equal(got->finished_ms, 0);
	task_free(got);

	/* the end: result, error cleared, a later start (tasks_on_started) */
	t->state = TASK_SUCCEEDED;
	t->exit_code = 3;
	t->output = (uint8_t *)xstrdup("done");
	t->output_len = 4;
	free(t->error);
	t->error = NULL;
	t->started_ms = 22;
	t->finished_ms = 23;
	assert_int_equal(store_task_update(f->st, t), 0);
	assert_int_equal(store_task_get(f->st, 6, &got), 0);
	assert_int_equal(got->state, TASK_SUCCEEDED);
	assert_int_equal(got->exit_code, 3);
	assert_int_equal(got->output_len, 4);
	assert_memory_equal(got->output, "done", 4);
	assert_null(got->error);
	assert_string_equal(got->node, "node-r");
	assert_int_equal(got->started_ms, 22);
	assert_int_equal(got->finished_ms, 23);
	assert_int_equal(got->payload[0], 'a');
	task_free(got);
	task_free(t);
}

/* An update whose row is not there (never written, or purged) writes the
 * whole row instead of losing the change. */
static void update_without_a_row_writes_the_whole_row(void **state)
{
	struct fixture *f = *state;
	struct task *t = full_task(77);
	assert_int_equal(store_begin(f->st), 0);
	assert_int_equal(store_task_update(f->st, t), 0);
	assert_int_equal(store_commit(f->st), 0);
	struct task *got = NULL;
	assert_int_equal(store_task_get(f->st, 77, &got), 0);
	assert_same_task(t, got);
	task_free(got);
	task_free(t);
}

static void unknown_task_and_batch_are_not_found(void **state)
{
	struct fixture *f = *state;
	struct task *got = (struct task *)1;
	assert_int_equal(store_task_get(f->st, 999, &got), CH_ERR_NOT_FOUND);
	assert_null(got);
	struct batch b;
	assert_int_equal(store_batch_get(f->st, 999, &b), CH_ERR_NOT_FOUND);
}

static void argv_that_is_not_utf8_is_refused(void **state)
{
	struct fixture *f = *state;
	struct task *t = full_task(8);
	free(t->argv[1]);
	t->argv[1] = xstrdup("bad \xc3\x28 bytes");
	assert_int_equal(store_task_put(f->st, t), CH_ERR_INVALID);
	struct task *got;
	assert_int_equal(store_task_get(f->st, 8, &got), CH_ERR_NOT_FOUND);
	task_free(t);
}

static void load_unfinished_finds_queued_and_running_only_oldest_first(void **state)
{
	struct fixture *f = *state;
	int states[] = {TASK_SUCCEEDED, TASK_RUNNING, TASK_FAILED, TASK_QUEUED, TASK_TIMED_OUT,
			TASK_CANCELLED, TASK_LOST, TASK_QUEUED};
	/* insert out of id order to see the ORDER BY at work */
	for (int i = 7; i >= 0; i--)
		put_plain(f->st, (uint64_t)i + 1, states[i], 0, 0, 0);
	struct collect c = {0};
	assert_int_equal(store_load_unfinished(f->st, collect_cb, &c), 0);
	assert_int_equal(c.count, 3);
	assert_int_equal(c.ids[0], 2);
	assert_int_equal(c.ids[1], 4);
	assert_int_equal(c.ids[2], 8);

	struct collect first = {.stop_after = 1};
	assert_int_equal(store_load_unfinished(f->st, collect_cb, &first), 0);
	assert_int_equal(first.count, 1);
	assert_int_equal(first.ids[0], 2);
}

static void batch_tasks_come_in_index_order_from_offset(void **state)
{
	struct fixture *f = *state;
	put_batch(f->st, 3, 6, 1);
	/* ids deliberately not in index order */
	uint32_t index_of[] = {4, 0, 5, 2, 1, 3};
	for (uint64_t id = 1; id <= 6; id++)
		put_plain(f->st, 100 + id, TASK_QUEUED, 3, index_of[id - 1], 0);
	put_plain(f->st, 200, TASK_QUEUED, 4, 0, 0); /* another batch */

	struct collect c = {0};
	assert_int_equal(store_batch_tasks(f->st, 3, 2, 100, collect_cb, &c), 0);
	assert_int_equal(c.count, 4);
	for (size_t i = 0; i < c.count; i++)
		assert_int_equal(c.indexes[i], 2 + i);

	struct collect two = {0};
	assert_int_equal(store_batch_tasks(f->st, 3, 0, 2, collect_cb, &two), 0);
	assert_int_equal(two.count, 2);
	assert_int_equal(two.indexes[0], 0);
	assert_int_equal(two.indexes[1], 1);
}

struct batch_seen {
	struct batch b[8];
	size_t count;
};

static int batch_cb(void *arg, const struct batch *b)
{
	struct batch_seen *s = arg;
	assert_true(s->count < 8);
	s->b[s->count++] = *b;
	return 0;
}

static void batch_get_and_open_batches_count_done_from_tasks(void **state)
{
	struct fixture *f = *state;
	put_batch(f->st, 1, 3, 10);
	put_plain(f->st, 1, TASK_SUCCEEDED, 1, 0, 50);
	put_plain(f->st, 2, TASK_FAILED, 1, 1, 50);
	put_plain(f->st, 3, TASK_RUNNING, 1, 2, 0);
	put_batch(f->st, 2, 1, 10); /* all final: not open */
	put_plain(f->st, 4, TASK_SUCCEEDED, 2, 0, 50);

	struct batch b;
	assert_int_equal(store_batch_get(f->st, 1, &b), 0);
	assert_int_equal(b.id, 1);
	assert_int_equal(b.total, 3);
	assert_int_equal(b.done, 2);
	assert_int_equal(b.max_concurrency, 2);
	assert_int_equal(b.deadline_ms, 99);
	assert_int_equal(b.created_ms, 10);

	struct batch_seen seen = {0};
	assert_int_equal(store_load_open_batches(f->st, batch_cb, &seen), 0);
	assert_int_equal(seen.count, 1);
	assert_int_equal(seen.b[0].id, 1);
	assert_int_equal(seen.b[0].done, 2);
}

static void task_list_is_newest_first_and_filters_by_state(void **state)
{
	struct fixture *f = *state;
	for (uint64_t id = 1; id <= 10; id++)
		put_plain(f->st, id, id % 2 ? TASK_QUEUED : TASK_SUCCEEDED, 0, 0, id % 2 ? 0 : 5);
	struct collect all = {0};
	assert_int_equal(store_task_list(f->st, 0, 4, collect_cb, &all), 0);
	assert_int_equal(all.count, 4);
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(all.ids[i], 10 - i);

	struct collect queued = {0};
	assert_int_equal(store_task_list(f->st, TASK_QUEUED, 100, collect_cb, &queued), 0);
	assert_int_equal(queued.count, 5);
	for (size_t i = 0; i < 5; i++) {
		assert_int_equal(queued.ids[i], 9 - 2 * i);
		assert_int_equal(queued.states[i], TASK_QUEUED);
	}
}

/* Every state lists through its own statement (live, ended, succeeded):
 * each finds its tasks only, newest first, also after they moved. */
static void task_list_by_every_state_finds_only_its_tasks(void **state)
{
	struct fixture *f = *state;
	for (uint64_t id = 1; id <= 21; id++) {
		int st = 1 + (int)(id % 7); /* queued .. lost */
		put_plain(f->st, id, st, 0, 0, task_state_is_final(st) ? 100 + id : 0);
	}
	/* moves: queued -> running, running -> failed */
	struct task *t = plain_task(7, TASK_RUNNING, 0, 0, 0); /* 7 % 7 = 0: queued */
	t->attempts = 1;
	assert_int_equal(store_task_update(f->st, t), 0);
	task_free(t);
	t = plain_task(8, TASK_FAILED, 0, 0, 200); /* 8 % 7 = 1: running */
	t->error = xstrdup("boom");
	assert_int_equal(store_task_update(f->st, t), 0);
	task_free(t);
	for (int st = TASK_QUEUED; st <= TASK_LOST; st++) {
		struct collect c = {0};
		assert_int_equal(store_task_list(f->st, st, 100, collect_cb, &c), 0);
		size_t want = 0;
		uint64_t last = UINT64_MAX;
		for (uint64_t id = 21; id >= 1; id--) {
			int expect = id == 7 ? TASK_RUNNING : id == 8 ? TASK_FAILED : 1 + (int)(id % 7);
			if (expect != st)
				continue;
			assert_true(want < c.count);
			assert_int_equal(c.ids[want], id);
			assert_int_equal(c.states[want], st);
			assert_true(c.ids[want] < last);
			last = c.ids[want];
			want++;
		}
		assert_int_equal(c.count, want);
	}
	uint64_t counts[8];
	assert_int_equal(store_count_states(f->st, counts), 0);
	assert_int_equal(counts[TASK_QUEUED], 2);
	assert_int_equal(counts[TASK_RUNNING], 3);
	assert_int_equal(counts[TASK_SUCCEEDED], 3);
	assert_int_equal(counts[TASK_FAILED], 4);
}

static void purge_respects_before_and_max_rows(void **state)
{
	struct fixture *f = *state;
	put_plain(f->st, 1, TASK_SUCCEEDED, 0, 0, 100);
	put_plain(f->st, 2, TASK_FAILED, 0, 0, 200);
	put_plain(f->st, 3, TASK_CANCELLED, 0, 0, 300);
	put_plain(f->st, 4, TASK_SUCCEEDED, 0, 0, 1000); /* too new */
	put_plain(f->st, 5, TASK_QUEUED, 0, 0, 0);      /* not final */
	put_plain(f->st, 6, TASK_RUNNING, 0, 0, 50);    /* not final, odd time */
	put_plain(f->st, 7, TASK_LOST, 0, 0, 0);        /* final but no finish time */

	assert_int_equal(store_purge(f->st, 500, 2), 2);
	assert_int_equal(store_purge(f->st, 500, 2), 1);
	assert_int_equal(store_purge(f->st, 500, 2), 0);
	assert_int_equal(store_purge(f->st, 500, 0), 0);

	uint64_t counts[8];
	assert_int_equal(store_count_states(f->st, counts), 0);
	assert_int_equal(counts[TASK_SUCCEEDED], 1);
	assert_int_equal(counts[TASK_FAILED], 0);
	assert_int_equal(counts[TASK_CANCELLED], 0);
	assert_int_equal(counts[TASK_QUEUED], 1);
	assert_int_equal(counts[TASK_RUNNING], 1);
	assert_int_equal(counts[TASK_LOST], 1);
	struct task *got;
	assert_int_equal(store_task_get(f->st, 4, &got), 0);
	task_free(got);
}

static void purge_drops_batches_left_empty(void **state)
{
	struct fixture *f = *state;
	put_batch(f->st, 1, 2, 10);
	put_plain(f->st, 1, TASK_SUCCEEDED, 1, 0, 100);
	put_plain(f->st, 2, TASK_SUCCEEDED, 1, 1, 100);
	put_batch(f->st, 2, 2, 10); /* one task stays */
	put_plain(f->st, 3, TASK_SUCCEEDED, 2, 0, 100);
	put_plain(f->st, 4, TASK_SUCCEEDED, 2, 1, 900);
	put_batch(f->st, 3, 1, 800); /* created after the cut-off, tasks not put yet */

	assert_int_equal(store_purge(f->st, 500, 100), 3);
	struct batch b;
	assert_int_equal(store_batch_get(f->st, 1, &b), CH_ERR_NOT_FOUND);
	assert_int_equal(store_batch_get(f->st, 2, &b), 0);
	assert_int_equal(b.done, 1);
	assert_int_equal(store_batch_get(f->st, 3, &b), 0);
}

static void max_ids_never_go_back_after_purge(void **state)
{
	struct fixture *f = *state;
	uint64_t tid = 1, bid = 1;
	assert_int_equal(store_max_ids(f->st, &tid, &bid), 0);
	assert_int_equal(tid, 0);
	assert_int_equal(bid, 0);

	put_batch(f->st, 4, 1, 10);
	put_plain(f->st, 17, TASK_SUCCEEDED, 4, 0, 100);
	put_plain(f->st, 9, TASK_QUEUED, 0, 0, 0);
	assert_int_equal(store_max_ids(f->st, &tid, &bid), 0);
	assert_int_equal(tid, 17);
	assert_int_equal(bid, 4);

	assert_int_equal(store_purge(f->st, 500, 100), 1);
	struct batch b;
	assert_int_equal(store_batch_get(f->st, 4, &b), CH_ERR_NOT_FOUND);
	assert_int_equal(store_max_ids(f->st, &tid, &bid), 0);
	assert_int_equal(tid, 17);
	assert_int_equal(bid, 4);
}

static void meta_round_trips_and_reports_missing_keys(void **state)
{
	struct fixture *f = *state;
	char val[32];
	assert_int_equal(store_meta_get(f->st, "node_id", val, sizeof(val)), CH_ERR_NOT_FOUND);
	assert_int_equal(store_meta_put(f->st, "node_id", "abc123"), 0);
	assert_int_equal(store_meta_get(f->st, "node_id", val, sizeof(val)), 0);
	assert_string_equal(val, "abc123");
	assert_int_equal(store_meta_put(f->st, "node_id", "def"), 0);
	assert_int_equal(store_meta_get(f->st, "node_id", val, sizeof(val)), 0);
	assert_string_equal(val, "def");
	char tiny[3];
	assert_int_equal(store_meta_get(f->st, "node_id", tiny, sizeof(tiny)), CH_ERR_TOO_LARGE);
}

static void count_states_groups_by_state(void **state)
{
	struct fixture *f = *state;
	put_plain(f->st, 1, TASK_QUEUED, 0, 0, 0);
	put_plain(f->st, 2, TASK_QUEUED, 0, 0, 0);
	put_plain(f->st, 3, TASK_RUNNING, 0, 0, 0);
	put_plain(f->st, 4, TASK_TIMED_OUT, 0, 0, 3);
	uint64_t counts[8];
	memset(counts, 0xff, sizeof(counts));
	assert_int_equal(store_count_states(f->st, counts), 0);
	uint64_t want[8] = {0, 2, 1, 0, 0, 1, 0, 0};
	assert_memory_equal(counts, want, sizeof(want));
}

static void commit_keeps_and_rollback_discards(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(store_begin(f->st), 0);
	put_plain(f->st, 1, TASK_QUEUED, 0, 0, 0);
	assert_int_equal(store_commit(f->st), 0);
	assert_int_equal(store_begin(f->st), 0);
	put_plain(f->st, 2, TASK_QUEUED, 0, 0, 0);
	assert_int_equal(store_rollback(f->st), 0);
	struct task *got;
	assert_int_equal(store_task_get(f->st, 1, &got), 0);
	task_free(got);
	assert_int_equal(store_task_get(f->st, 2, &got), CH_ERR_NOT_FOUND);
}

static void data_survives_close_and_reopen(void **state)
{
	struct fixture *f = *state;
	struct task *t = full_task(77);
	assert_int_equal(store_begin(f->st), 0);
	assert_int_equal(store_task_put(f->st, t), 0);
	put_batch(f->st, 7, 4, 10);
	assert_int_equal(store_meta_put(f->st, "k", "v"), 0);
	assert_int_equal(store_commit(f->st), 0);
	store_close(f->st);
	f->st = NULL;

	char err[256];
	assert_int_equal(store_open(&f->st, f->dir, STORE_SYNC_FULL, err, sizeof(err)), 0);
	struct task *got;
	assert_int_equal(store_task_get(f->st, 77, &got), 0);
	assert_same_task(t, got);
	task_free(got);
	struct batch b;
	assert_int_equal(store_batch_get(f->st, 7, &b), 0);
	assert_int_equal(b.total, 4);
	char val[8];
	assert_int_equal(store_meta_get(f->st, "k", val, sizeof(val)), 0);
	assert_string_equal(val, "v");
	task_free(t);
}

static void newer_schema_version_is_refused(void **state)
{
	struct fixture *f = *state;
	store_close(f->st);
	f->st = NULL;
	char path[128];
	snprintf(path, sizeof(path), "%s/chorus.db", f->dir);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);

	char err[256] = "";
	struct store *st = (struct store *)1;
	assert_int_equal(store_open(&st, f->dir, STORE_SYNC_NORMAL, err, sizeof(err)),
			 CH_ERR_STORAGE);
	assert_null(st);
	assert_non_null(strstr(err, "schema version 99 is newer"));
	assert_non_null(strstr(err, path));
}

static void keys_name_one_task_or_batch_are_transactional_and_purged(void **state)
{
	struct fixture *f = *state;
	assert_true(store_created(f->st));
	const uint8_t k1[] = {1, 2, 3}, k2[] = {1, 2, 4};
	int kind = 0;
	uint64_t id = 0;
	assert_int_equal(store_key_get(f->st, k1, sizeof(k1), &kind, &id), CH_ERR_NOT_FOUND);
	assert_int_equal(store_begin(f->st), 0);
	assert_int_equal(store_key_put(f->st, k1, sizeof(k1), STORE_KEY_TASK, 7, 1000), 0);
	/* seen inside the same transaction */
	assert_int_equal(store_key_get(f->st, k1, sizeof(k1), &kind, &id), 0);
	assert_int_equal(kind, STORE_KEY_TASK);
	assert_int_equal(id, 7);
	assert_int_equal(store_rollback(f->st), 0);
	/* a rolled back key is gone */
	assert_int_equal(store_key_get(f->st, k1, sizeof(k1), &kind, &id), CH_ERR_NOT_FOUND);
	assert_int_equal(store_begin(f->st), 0);
	assert_int_equal(store_key_put(f->st, k1, sizeof(k1), STORE_KEY_TASK, 7, 1000), 0);
	assert_int_equal(store_key_put(f->st, k2, sizeof(k2), STORE_KEY_BATCH, 3, 5000), 0);
	assert_int_equal(store_commit(f->st), 0);
	/* unique: a second put of the same key fails */
	assert_int_equal(store_begin(f->st), 0);
	assert_int_equal(store_key_put(f->st, k1, sizeof(k1), STORE_KEY_TASK, 8, 1000),
	                 CH_ERR_STORAGE);
	assert_int_equal(store_rollback(f->st), 0);
	assert_int_equal(store_key_get(f->st, k2, sizeof(k2), &kind, &id), 0);
	assert_int_equal(kind, STORE_KEY_BATCH);
	assert_int_equal(id, 3);
	/* purged with the results: older than the cut-off only */
	assert_true(store_purge(f->st, 2000, 100) >= 0);
	assert_int_equal(store_key_get(f->st, k1, sizeof(k1), &kind, &id), CH_ERR_NOT_FOUND);
	assert_int_equal(store_key_get(f->st, k2, sizeof(k2), &kind, &id), 0);
}

/* Turns a journal of this version back into the indexes of versions 1
 * and 2 (full indexes on state and finished_ms). */
#define V1_INDEXES                                                                       \
	"DROP INDEX tasks_live; DROP INDEX tasks_ended; DROP INDEX tasks_finished; "     \
	"CREATE INDEX tasks_by_state ON tasks(state); "                                  \
	"CREATE INDEX tasks_by_finished ON tasks(finished_ms); "

/* The query plan of sql names `index` (sqlite uses a partial index only
 * when the query says its condition word for word). */
static void assert_plan_uses(sqlite3 *db, const char *sql, const char *index)
{
	char eqp[512];
	snprintf(eqp, sizeof(eqp), "EXPLAIN QUERY PLAN %s", sql);
	sqlite3_stmt *s;
	assert_int_equal(sqlite3_prepare_v2(db, eqp, -1, &s, NULL), SQLITE_OK);
	int found = 0;
	while (sqlite3_step(s) == SQLITE_ROW) {
		const char *detail = (const char *)sqlite3_column_text(s, 3);
		if (detail && strstr(detail, index))
			found = 1;
	}
	sqlite3_finalize(s);
	if (!found)
		fail_msg("%s: plan does not use %s", sql, index);
}

static int count_rows(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *s;
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	int n = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	return n;
}

/* A version 2 journal with tasks in it: open migrates it to the partial
 * indexes (built from the rows there), and what the node restarts from,
 * lists and purges is the same. */
static void version_2_journal_gets_partial_indexes_and_keeps_its_tasks(void **state)
{
	struct fixture *f = *state;
	for (uint64_t id = 1; id <= 30; id++) {
		int st = 1 + (int)(id % 6); /* queued .. cancelled */
		put_plain(f->st, id, st, 0, 0, task_state_is_final(st) ? 100 + id : 0);
	}
	store_close(f->st);
	f->st = NULL;
	char path[128];
	snprintf(path, sizeof(path), "%s/chorus.db", f->dir);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, V1_INDEXES "PRAGMA user_version = 2", NULL, NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(db);

	char err[256] = "";
	assert_int_equal(store_open(&f->st, f->dir, STORE_SYNC_NORMAL, err, sizeof(err)), 0);
	assert_false(store_created(f->st));
	struct collect c = {0};
	assert_int_equal(store_load_unfinished(f->st, collect_cb, &c), 0);
	assert_int_equal(c.count, 10); /* id % 6 of 0 and 1 */
	for (size_t i = 0; i < c.count; i++) {
		assert_true(c.states[i] == TASK_QUEUED || c.states[i] == TASK_RUNNING);
		assert_true(i == 0 || c.ids[i] > c.ids[i - 1]);
	}
	struct collect failed = {0};
	assert_int_equal(store_task_list(f->st, TASK_FAILED, 100, collect_cb, &failed), 0);
	assert_int_equal(failed.count, 5);
	assert_int_equal(failed.ids[0], 27);
	/* finished_ms = 100 + id: before 120 are ids up to 19; the final
	 * ones (id % 6 of 2 to 5) are 12 */
	int purged = store_purge(f->st, 120, 1000);
	assert_int_equal(purged, 12);
	char found[128];
	assert_int_equal(store_quick_check(f->st, found, sizeof(found)), 0);

	/* the journal is its store's alone while open (exclusive locking):
	 * read it with a second connection once the store closed */
	store_close(f->st);
	f->st = NULL;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(count_rows(db, "PRAGMA user_version"), 3);
	assert_int_equal(count_rows(db, "SELECT count(*) FROM sqlite_master WHERE type = 'index' "
	                                "AND name IN ('tasks_by_state', 'tasks_by_finished')"),
	                 0);
	/* the premise of the statements in store.c */
	assert_plan_uses(db, "SELECT id FROM tasks WHERE state IN (1, 2) ORDER BY id", "tasks_live");
	assert_plan_uses(db, "SELECT id FROM tasks WHERE state = ?1 AND state IN (1, 2) "
	                     "ORDER BY id DESC LIMIT 5", "tasks_live");
	assert_plan_uses(db, "SELECT id FROM tasks WHERE state = ?1 AND state >= 4 "
	                     "ORDER BY id DESC LIMIT 5", "tasks_ended");
	assert_plan_uses(db, "SELECT id FROM tasks WHERE id IN (SELECT id FROM tasks WHERE "
	                     "state >= 3 AND finished_ms > 0 AND finished_ms < 5 LIMIT 9)",
	                 "tasks_finished");
	sqlite3_close(db);
}

static void version_1_journal_is_migrated_and_not_new(void **state)
{
	struct fixture *f = *state;
	store_close(f->st);
	f->st = NULL;
	char path[128];
	snprintf(path, sizeof(path), "%s/chorus.db", f->dir);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, V1_INDEXES "DROP TABLE idem; PRAGMA user_version = 1", NULL,
	                              NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(db);
	char err[256] = "";
	assert_int_equal(store_open(&f->st, f->dir, STORE_SYNC_NORMAL, err, sizeof(err)), 0);
	assert_false(store_created(f->st));
	const uint8_t k[] = {9};
	int kind;
	uint64_t id;
	assert_int_equal(store_key_get(f->st, k, sizeof(k), &kind, &id), CH_ERR_NOT_FOUND);
	char found[128];
	assert_int_equal(store_quick_check(f->st, found, sizeof(found)), 0);
}

static void quick_check_reports_a_damaged_journal(void **state)
{
	struct fixture *f = *state;
	store_close(f->st);
	f->st = NULL;
	char path[128];
	snprintf(path, sizeof(path), "%s/chorus.db", f->dir);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	/* enough rows for several pages, then checkpoint into the db file */
	assert_int_equal(sqlite3_exec(db,
	                              "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
	                              "FROM n WHERE i < 2000) INSERT INTO meta SELECT 'k' || i, "
	                              "hex(randomblob(64)) FROM n; "
	                              "PRAGMA wal_checkpoint(TRUNCATE);",
	                              NULL, NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(db);
	FILE *fp = fopen(path, "r+b");
	assert_non_null(fp);
	/* the b-tree page headers of pages 3..10 (page size 4096) */
	uint8_t junk[64];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 131 + 7);
	for (long page = 2; page < 10; page++) {
		assert_int_equal(fseek(fp, 4096 * page, SEEK_SET), 0);
		assert_int_equal(fwrite(junk, 1, sizeof(junk), fp), sizeof(junk));
	}
	fclose(fp);
	char err[256] = "";
	int rc = store_open(&f->st, f->dir, STORE_SYNC_NORMAL, err, sizeof(err));
	if (rc == 0) {
		char found[256] = "";
		assert_int_equal(store_quick_check(f->st, found, sizeof(found)), CH_ERR_STORAGE);
		assert_true(found[0] != '\0');
	} else {
		assert_int_equal(rc, CH_ERR_STORAGE); /* damaged beyond opening: also said */
		assert_true(err[0] != '\0');
	}
}

static void unusable_data_dir_is_a_storage_error_with_reason(void **state)
{
	struct fixture *f = *state;
	char file[128], dir[160];
	snprintf(file, sizeof(file), "%s/plain-file", f->dir);
	FILE *fp = fopen(file, "w");
	assert_non_null(fp);
	fclose(fp);
	snprintf(dir, sizeof(dir), "%s/sub", file);

	char err[256] = "";
	struct store *st = NULL;
	assert_int_equal(store_open(&st, dir, STORE_SYNC_NORMAL, err, sizeof(err)), CH_ERR_STORAGE);
	assert_null(st);
	char want[256];
	snprintf(want, sizeof(want), "data dir %s: Not a directory", dir);
	assert_string_equal(err, want);
}

static void missing_data_dir_is_created_private(void **state)
{
	struct fixture *f = *state;
	char dir[128];
	snprintf(dir, sizeof(dir), "%s/a/b", f->dir);
	char err[256];
	struct store *st = NULL;
	assert_int_equal(store_open(&st, dir, STORE_SYNC_OFF, err, sizeof(err)), 0);
	struct stat sb;
	assert_int_equal(stat(dir, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_int_equal(sb.st_mode & 0777, 0700);
	store_close(st);
}

/* The journal is opened in exclusive locking mode (no WAL-index locks per
 * transaction, no -shm file): while its store is open no other connection
 * reads it; once closed anyone may, and a reopen finds what was written.
 * (A crash with the WAL left behind: integration tests test_once and
 * test_recovery kill -9 a node.) */
static void journal_is_exclusive_while_open(void **state)
{
	struct fixture *f = *state;
	put_plain(f->st, 7, TASK_QUEUED, 0, 0, 0);
	char path[128], shm[140];
	snprintf(path, sizeof(path), "%s/chorus.db", f->dir);
	snprintf(shm, sizeof(shm), "%s-shm", path);
	struct stat sb;
	assert_int_equal(stat(shm, &sb), -1); /* the WAL index is in memory */
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "SELECT count(*) FROM tasks", NULL, NULL, NULL),
	                 SQLITE_BUSY);
	sqlite3_close(db);

	store_close(f->st);
	f->st = NULL;

	char err[256] = "";
	assert_int_equal(store_open(&f->st, f->dir, STORE_SYNC_NORMAL, err, sizeof(err)), 0);
	struct collect c = {0};
	assert_int_equal(store_load_unfinished(f->st, collect_cb, &c), 0);
	assert_int_equal(c.count, 1);
	assert_int_equal(c.ids[0], 7);
	store_close(f->st);
	f->st = NULL;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "SELECT count(*) FROM tasks", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

static void sync_names_parse_back(void **state)
{
	(void)state;
	for (int i = STORE_SYNC_OFF; i <= STORE_SYNC_EXTRA; i++)
		assert_int_equal(store_sync_parse(store_sync_name(i)), i);
	assert_int_equal(store_sync_parse("FULL"), STORE_SYNC_FULL);
	assert_int_equal(store_sync_parse("sometimes"), -1);
	assert_int_equal(store_sync_parse(""), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(put_then_get_round_trips_every_field, setup, teardown),
		cmocka_unit_test_setup_teardown(update_rewrites_mutable_fields_but_not_the_spec, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
			narrow_updates_write_what_the_state_can_change_and_no_spec, setup, teardown),
		cmocka_unit_test_setup_teardown(update_without_a_row_writes_the_whole_row, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(unknown_task_and_batch_are_not_found, setup, teardown),
		cmocka_unit_test_setup_teardown(argv_that_is_not_utf8_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(load_unfinished_finds_queued_and_running_only_oldest_first,
						setup, teardown),
		cmocka_unit_test_setup_teardown(batch_tasks_come_in_index_order_from_offset, setup,
						teardown),
		cmocka_unit_test_setup_teardown(batch_get_and_open_batches_count_done_from_tasks, setup,
						teardown),
		cmocka_unit_test_setup_teardown(task_list_is_newest_first_and_filters_by_state, setup,
						teardown),
		cmocka_unit_test_setup_teardown(task_list_by_every_state_finds_only_its_tasks, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(purge_respects_before_and_max_rows, setup, teardown),
		cmocka_unit_test_setup_teardown(purge_drops_batches_left_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(max_ids_never_go_back_after_purge, setup, teardown),
		cmocka_unit_test_setup_teardown(meta_round_trips_and_reports_missing_keys, setup,
						teardown),
		cmocka_unit_test_setup_teardown(count_states_groups_by_state, setup, teardown),
		cmocka_unit_test_setup_teardown(commit_keeps_and_rollback_discards, setup, teardown),
		cmocka_unit_test_setup_teardown(data_survives_close_and_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(newer_schema_version_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(unusable_data_dir_is_a_storage_error_with_reason, setup,
						teardown),
		cmocka_unit_test_setup_teardown(missing_data_dir_is_created_private, setup, teardown),
		cmocka_unit_test_setup_teardown(keys_name_one_task_or_batch_are_transactional_and_purged,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(
			version_2_journal_gets_partial_indexes_and_keeps_its_tasks, setup, teardown),
		cmocka_unit_test_setup_teardown(version_1_journal_is_migrated_and_not_new, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(quick_check_reports_a_damaged_journal, setup, teardown),
		cmocka_unit_test_setup_teardown(
			journal_is_exclusive_while_open, setup, teardown),
		cmocka_unit_test(sync_names_parse_back),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
