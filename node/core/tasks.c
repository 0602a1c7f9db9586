/*
 * tasks.c - the task table (see tasks.h for the contract).
 *
 * Data structures, all intrusive and bounded by limits.queue_tasks_max:
 *   - an id -> task hash (chained, power-of-two buckets, grows x2);
 *   - one FIFO per pool of tasks ready to dispatch;
 *   - per batch, a FIFO of tasks held back by its max_concurrency;
 *   - a list of tasks waiting out a retry backoff;
 *   - a list of dispatched tasks (timeouts are checked there);
 *   - a list of final tasks waiting for tasks_release_final();
 *   - a dirty chain of tasks changed since the last flush.
 * A task is on exactly one of the lists at a time (t->list says which).
 *
 * Restart policy follows OTP: a `temporary` task is never retried; a
 * `transient` one is retried after an abnormal end (worker crash, timeout,
 * node restart while running) up to max_attempts, with exponential backoff.
 * A handler that *returns* a failure is an answer, not a crash: never
 * retried (like a process that exits normally with an error tuple).
 */
#include "core/tasks.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"

enum {
	LIST_NONE = 0,
	LIST_QUEUE,   /* ts->queues[t->pool] */
	LIST_PENDING, /* its batch's pending list */
	LIST_BACKOFF,
	LIST_RUNNING,
	LIST_FINAL,
};

struct list {
	struct task *head, *tail;
	uint64_t count;
};

struct batch_entry {
	struct batch pub;
	struct list pending;                 /* held back by max_concurrency */
	struct batch_entry *onext, *oprev;   /* open batches (pending > 0) */
	struct batch_entry *dnext;           /* dirty chain */
	int dirty, open;
	uint32_t held;                       /* tasks of this batch in the table */
};

struct tasks {
	struct tasks_limits lim;
	struct tasks_effects fx;
	uint64_t next_task_id, next_batch_id;

	struct task **buckets;
	uint64_t bucket_count; /* power of two */
	uint64_t held;         /* tasks in the table */
	uint64_t final_held;   /* of which final */

	struct list *queues;   /* per pool */
	struct list backoff, running, final;

	struct batch_entry **bbuckets;
	uint64_t bbucket_count;
	uint64_t batch_count;
	struct batch_entry *open_head;

	struct task *dirty_head, *dirty_tail;
	struct batch_entry *bdirty_head, *bdirty_tail;

	int draining;
	struct tasks_counters cnt;
};

/* ---- small helpers ---- */

const char *task_state_name(int state)
{
	switch (state) {
	case TASK_QUEUED: return "queued";
	case TASK_RUNNING: return "running";
	case TASK_SUCCEEDED: return "succeeded";
	case TASK_FAILED: return "failed";
	case TASK_TIMED_OUT: return "timed_out";
	case TASK_CANCELLED: return "cancelled";
	case TASK_LOST: return "lost";
	default: return "unknown";
	}
}

int task_state_is_final(int state)
{
	return state >= TASK_SUCCEEDED && state <= TASK_LOST;
}

void task_free(struct task *t)
{
	if (!t)
		return;
	free(t->handler);
	free(t->payload);
	if (t->argv) {
		for (uint32_t i = 0; i < t->argc; i++)
			free(t->argv[i]);
		free(t->argv);
	}
	if (t->require) {
		for (uint32_t i = 0; i < t->require_count; i++)
			free(t->require[i]);
		free(t->require);
	}
	free(t->output);
	free(t->error);
	free(t->node);
	free(t);
}

static char *dup_or_null(const char *s, int *fail)
{
	if (!s)
		return NULL;
	char *d = strdup(s);
	if (!d)
		*fail = 1;
	return d;
}

static uint8_t *dup_bytes(const uint8_t *p, size_t n, int *fail)
{
	if (!p)
		return NULL;
	uint8_t *d = malloc(n ? n : 1);
	if (!d) {
		*fail = 1;
		return NULL;
	}
	memcpy(d, p, n);
	return d;
}

struct task *task_clone(const struct task *t)
{
	struct task *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	*c = *t;
	c->handler = NULL;
	c->payload = NULL;
	c->argv = NULL;
	c->require = NULL;
	c->output = NULL;
	c->error = NULL;
	c->node = NULL;
	c->qnext = c->qprev = c->hnext = c->dnext = NULL;
	c->list = LIST_NONE;
	c->dirty = 0;
	int fail = 0;
	c->handler = dup_or_null(t->handler, &fail);
	c->payload = dup_bytes(t->payload, t->payload_len, &fail);
	c->output = dup_bytes(t->output, t->output_len, &fail);
	c->error = dup_or_null(t->error, &fail);
	c->node = dup_or_null(t->node, &fail);
	if (t->argv) {
		c->argv = calloc(t->argc + 1, sizeof(char *));
		if (!c->argv)
			fail = 1;
		else
			for (uint32_t i = 0; i < t->argc; i++)
				c->argv[i] = dup_or_null(t->argv[i], &fail);
	} else {
		c->argc = 0;
	}
	if (t->require) {
		c->require = calloc(t->require_count + 1, sizeof(char *));
		if (!c->require)
			fail = 1;
		else
			for (uint32_t i = 0; i < t->require_count; i++)
				c->require[i] = dup_or_null(t->require[i], &fail);
	} else {
		c->require_count = 0;
	}
	if (fail) {
		task_free(c);
		return NULL;
	}
	return c;
}

static void list_push_tail(struct list *l, struct task *t)
{
	t->qnext = NULL;
	t->qprev = l->tail;
	if (l->tail)
		l->tail->qnext = t;
	else
		l->head = t;
	l->tail = t;
	l->count++;
}

static void list_push_head(struct list *l, struct task *t)
{
	t->qprev = NULL;
	t->qnext = l->head;
	if (l->head)
		l->head->qprev = t;
	else
		l->tail = t;
	l->head = t;
	l->count++;
}

static void list_remove(struct list *l, struct task *t)
{
	assert(l->count > 0);
	if (t->qprev)
		t->qprev->qnext = t->qnext;
	else
		l->head = t->qnext;
	if (t->qnext)
		t->qnext->qprev = t->qprev;
	else
		l->tail = t->qprev;
	t->qnext = t->qprev = NULL;
	l->count--;
}

static uint64_t hash_id(uint64_t id)
{
	/* splitmix64 finaliser: ids are sequential, spread them */
	id ^= id >> 30;
	id *= 0xbf58476d1ce4e5b9ULL;
	id ^= id >> 27;
	id *= 0x94d049bb133111ebULL;
	id ^= id >> 31;
	return id;
}

static struct batch_entry *batch_find(const struct tasks *ts, uint64_t id)
{
	struct batch_entry *b = ts->bbuckets[hash_id(id) & (ts->bbucket_count - 1)];
	while (b && b->pub.id != id)
		b = (struct batch_entry *)b->pub.hnext;
	return b;
}

static struct task *task_find(const struct tasks *ts, uint64_t id)
{
	struct task *t = ts->buckets[hash_id(id) & (ts->bucket_count - 1)];
	while (t && t->id != id)
		t = t->hnext;
	return t;
}

static int hash_grow(struct tasks *ts)
{
	uint64_t n = ts->bucket_count * 2;
	struct task **nb = calloc(n, sizeof(*nb));
	if (!nb)
		return -1; /* keep the old table: longer chains, still correct */
	for (uint64_t i = 0; i < ts->bucket_count; i++) {
		struct task *t = ts->buckets[i];
		while (t) {
			struct task *next = t->hnext;
			uint64_t h = hash_id(t->id) & (n - 1);
			t->hnext = nb[h];
			nb[h] = t;
			t = next;
		}
	}
	free(ts->buckets);
	ts->buckets = nb;
	ts->bucket_count = n;
	return 0;
}

static void task_insert(struct tasks *ts, struct task *t)
{
	if (ts->held >= ts->bucket_count)
		(void)hash_grow(ts);
	uint64_t h = hash_id(t->id) & (ts->bucket_count - 1);
	t->hnext = ts->buckets[h];
	ts->buckets[h] = t;
	ts->held++;
}

static void task_unlink_hash(struct tasks *ts, struct task *t)
{
	struct task **pp = &ts->buckets[hash_id(t->id) & (ts->bucket_count - 1)];
	while (*pp != t) {
		assert(*pp);
		pp = &(*pp)->hnext;
	}
	*pp = t->hnext;
	t->hnext = NULL;
	assert(ts->held > 0);
	ts->held--;
}

static void mark_dirty(struct tasks *ts, struct task *t)
{
	if (t->dirty)
		return;
	t->dirty = 1;
	t->dnext = NULL;
	if (ts->dirty_tail)
		ts->dirty_tail->dnext = t;
	else
		ts->dirty_head = t;
	ts->dirty_tail = t;
}

static void batch_mark_dirty(struct tasks *ts, struct batch_entry *b)
{
	if (b->dirty)
		return;
	b->dirty = 1;
	b->dnext = NULL; /* appended: flush hands changes out in change order */
	if (ts->bdirty_tail)
		ts->bdirty_tail->dnext = b;
	else
		ts->bdirty_head = b;
	ts->bdirty_tail = b;
}

static void batch_open(struct tasks *ts, struct batch_entry *b)
{
	if (b->open)
		return;
	b->open = 1;
	b->oprev = NULL;
	b->onext = ts->open_head;
	if (ts->open_head)
		ts->open_head->oprev = b;
	ts->open_head = b;
}

static void batch_close(struct tasks *ts, struct batch_entry *b)
{
	if (!b->open)
		return;
	b->open = 0;
	if (b->oprev)
		b->oprev->onext = b->onext;
	else
		ts->open_head = b->onext;
	if (b->onext)
		b->onext->oprev = b->oprev;
	b->onext = b->oprev = NULL;
}

static struct list *list_of(struct tasks *ts, struct task *t)
{
	switch (t->list) {
	case LIST_QUEUE: return &ts->queues[t->pool];
	case LIST_PENDING: {
		struct batch_entry *b = batch_find(ts, t->batch_id);
		assert(b);
		return &b->pending;
	}
	case LIST_BACKOFF: return &ts->backoff;
	case LIST_RUNNING: return &ts->running;
	case LIST_FINAL: return &ts->final;
	default: return NULL;
	}
}

static void move_to(struct tasks *ts, struct task *t, unsigned list, int at_head)
{
	struct list *from = list_of(ts, t);
	if (from)
		list_remove(from, t);
	t->list = list;
	struct list *to = list_of(ts, t);
	if (to) {
		if (at_head)
			list_push_head(to, t);
		else
			list_push_tail(to, t);
	}
}

static void set_error(struct task *t, const char *msg)
{
	free(t->error);
	t->error = msg ? strdup(msg) : NULL;
}

static void count_final(struct tasks *ts, int state)
{
	switch (state) {
	case TASK_SUCCEEDED: ts->cnt.succeeded++; break;
	case TASK_FAILED: ts->cnt.failed++; break;
	case TASK_TIMED_OUT: ts->cnt.timed_out++; break;
	case TASK_CANCELLED: ts->cnt.cancelled++; break;
	case TASK_LOST: ts->cnt.lost++; break;
	default: assert(0);
	}
}

/* Leaves the batch's in-flight count when a task stops occupying a slot. */
static void batch_slot_free(struct tasks *ts, struct task *t)
{
	if (!t->batch_id)
		return;
	struct batch_entry *b = batch_find(ts, t->batch_id);
	assert(b);
	assert(b->pub.in_flight > 0);
	b->pub.in_flight--;
}

static void finish(struct tasks *ts, struct task *t, int state, const char *error, uint64_t now_ms)
{
	assert(task_state_is_final(state));
	assert(!task_state_is_final(t->state));
	int occupied = t->list == LIST_QUEUE || t->list == LIST_RUNNING || t->list == LIST_BACKOFF;
	if (occupied)
		batch_slot_free(ts, t);
	t->state = state;
	t->finished_ms = now_ms;
	t->deadline_ms = 0;
	t->dispatched = 0;
	t->kill_requested = 0;
	if (error)
		set_error(t, error);
	move_to(ts, t, LIST_FINAL, 0);
	ts->final_held++;
	count_final(ts, state);
	mark_dirty(ts, t);
	if (t->batch_id) {
		struct batch_entry *b = batch_find(ts, t->batch_id);
		assert(b);
		b->pub.done++;
		assert(b->pub.done <= b->pub.total);
		if (ts->fx.batch_progress)
			ts->fx.batch_progress(ts->fx.ctx, &b->pub);
	}
	if (ts->fx.final)
		ts->fx.final(ts->fx.ctx, t);
}

static uint64_t backoff_delay_ms(const struct tasks *ts, const struct task *t)
{
	uint64_t d = t->opts.backoff_ms ? t->opts.backoff_ms : 1;
	/* backoff_max_ms 0 = no cap; still stop doubling long before overflow */
	uint64_t cap_ms = ts->lim.backoff_max_ms ? ts->lim.backoff_max_ms : UINT64_C(1) << 40;
	for (uint32_t i = 1; i < t->attempts && d < cap_ms; i++)
		d *= 2;
	if (ts->lim.backoff_max_ms && d > ts->lim.backoff_max_ms)
		d = ts->lim.backoff_max_ms;
	return d;
}

/* An attempt ended abnormally (crash, timeout, interrupted). Retry a
 * transient task with attempts left, else end it in `final_state`. */
static void abnormal_end(struct tasks *ts, struct task *t, int final_state, const char *why,
                         uint64_t now_ms)
{
	if (t->opts.restart == TASK_RESTART_TRANSIENT && !t->no_retry &&
	    t->attempts < t->opts.max_attempts) {
		set_error(t, why);
		t->state = TASK_QUEUED;
		t->dispatched = 0;
		t->kill_requested = 0;
		t->deadline_ms = 0;
		t->not_before_ms = now_ms + backoff_delay_ms(ts, t);
		move_to(ts, t, LIST_BACKOFF, 0); /* keeps its batch slot */
		ts->cnt.retried++;
		mark_dirty(ts, t);
		return;
	}
	t->abnormal = 1;
	finish(ts, t, final_state, why, now_ms);
}

/* ---- public ---- */

struct tasks *tasks_create(const struct tasks_limits *lim, const struct tasks_effects *fx,
                           uint64_t first_task_id, uint64_t first_batch_id)
{
	assert(lim->pool_count >= 1);
	assert(fx->dispatch);
	struct tasks *ts = calloc(1, sizeof(*ts));
	if (!ts)
		return NULL;
	ts->lim = *lim;
	if (!ts->lim.default_max_attempts)
		ts->lim.default_max_attempts = 1;
	if (!ts->lim.batches_max)
		ts->lim.batches_max = 100000;
	ts->fx = *fx;
	ts->next_task_id = first_task_id ? first_task_id : 1;
	ts->next_batch_id = first_batch_id ? first_batch_id : 1;
	ts->bucket_count = 1024;
	ts->buckets = calloc(ts->bucket_count, sizeof(*ts->buckets));
	ts->bbucket_count = 256;
	ts->bbuckets = calloc(ts->bbucket_count, sizeof(*ts->bbuckets));
	ts->queues = calloc(lim->pool_count, sizeof(*ts->queues));
	if (!ts->buckets || !ts->bbuckets || !ts->queues) {
		tasks_destroy(ts);
		return NULL;
	}
	return ts;
}

void tasks_destroy(struct tasks *ts)
{
	if (!ts)
		return;
	if (ts->buckets) {
		for (uint64_t i = 0; i < ts->bucket_count; i++) {
			struct task *t = ts->buckets[i];
			while (t) {
				struct task *n = t->hnext;
				task_free(t);
				t = n;
			}
		}
	}
	if (ts->bbuckets) {
		for (uint64_t i = 0; i < ts->bbucket_count; i++) {
			struct batch_entry *b = ts->bbuckets[i];
			while (b) {
				struct batch_entry *n = (struct batch_entry *)b->pub.hnext;
				free(b);
				b = n;
			}
		}
	}
	free(ts->buckets);
	free(ts->bbuckets);
	free(ts->queues);
	free(ts);
}

static void apply_defaults(struct tasks *ts, struct task *t)
{
	if (!t->opts.timeout_ms)
		t->opts.timeout_ms = ts->lim.default_timeout_ms;
	if (t->opts.restart == TASK_RESTART_TRANSIENT) {
		if (!t->opts.max_attempts)
			t->opts.max_attempts = ts->lim.default_max_attempts;
	} else {
		t->opts.max_attempts = 1;
	}
	if (!t->opts.backoff_ms)
		t->opts.backoff_ms = ts->lim.default_backoff_ms;
}

static void admit(struct tasks *ts, struct task *t, uint64_t now_ms)
{
	assert(t->pool < ts->lim.pool_count);
	apply_defaults(ts, t);
	t->id = ts->next_task_id++;
	t->state = TASK_QUEUED;
	t->submitted_ms = now_ms;
	t->attempts = 0;
	task_insert(ts, t);
	ts->cnt.submitted++;
	mark_dirty(ts, t);
}

static uint64_t live_held(const struct tasks *ts)
{
	return ts->held - ts->final_held;
}

int tasks_submit(struct tasks *ts, struct task *t, uint64_t now_ms, uint64_t *id)
{
	if (live_held(ts) >= ts->lim.queue_tasks_max)
		return ERR_FULL;
	t->batch_id = 0;
	admit(ts, t, now_ms);
	move_to(ts, t, LIST_QUEUE, 0);
	*id = t->id;
	return 0;
}

static struct batch_entry *batch_insert(struct tasks *ts, const struct batch *b)
{
	struct batch_entry *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->pub = *b;
	e->pub.hnext = NULL;
	uint64_t h = hash_id(e->pub.id) & (ts->bbucket_count - 1);
	e->pub.hnext = (struct batch *)ts->bbuckets[h];
	ts->bbuckets[h] = e;
	ts->batch_count++;
	return e;
}

static void batch_remove(struct tasks *ts, struct batch_entry *e)
{
	struct batch_entry **pp = &ts->bbuckets[hash_id(e->pub.id) & (ts->bbucket_count - 1)];
	while (*pp != e) {
		assert(*pp);
		pp = (struct batch_entry **)&(*pp)->pub.hnext;
	}
	*pp = (struct batch_entry *)e->pub.hnext;
	batch_close(ts, e);
	assert(!e->dirty);
	ts->batch_count--;
	free(e);
}

int tasks_submit_batch(struct tasks *ts, struct task **tv, uint32_t n, uint32_t max_concurrency,
                       uint32_t deadline_ms, uint64_t now_ms, uint64_t *batch_id)
{
	if (live_held(ts) + n > ts->lim.queue_tasks_max || ts->batch_count >= ts->lim.batches_max)
		return ERR_FULL;
	struct batch b = {
		.id = ts->next_batch_id,
		.total = n,
		.max_concurrency = max_concurrency,
		.deadline_ms = deadline_ms ? now_ms + deadline_ms : 0,
		.created_ms = now_ms,
	};
	struct batch_entry *e = batch_insert(ts, &b);
	if (!e)
		return ERR_NOMEM;
	ts->next_batch_id++;
	batch_mark_dirty(ts, e);
	for (uint32_t i = 0; i < n; i++) {
		struct task *t = tv[i];
		t->batch_id = b.id;
		t->batch_index = i;
		admit(ts, t, now_ms);
		move_to(ts, t, LIST_PENDING, 0);
		e->held++;
	}
	if (n)
		batch_open(ts, e);
	*batch_id = b.id;
	return 0;
}

void tasks_recover(struct tasks *ts, struct task *t, uint64_t now_ms)
{
	assert(t->state == TASK_QUEUED || t->state == TASK_RUNNING);
	assert(!task_find(ts, t->id));
	if (t->id >= ts->next_task_id)
		ts->next_task_id = t->id + 1;
	task_insert(ts, t);
	struct batch_entry *b = t->batch_id ? batch_find(ts, t->batch_id) : NULL;
	if (t->batch_id && !b) {
		/* the batch record is gone (should not happen): run it alone */
		t->batch_id = 0;
	}
	if (b)
		b->held++;
	t->dispatched = 0;
	t->kill_requested = 0;
	t->deadline_ms = 0;
	if (t->state == TASK_QUEUED) {
		t->list = LIST_NONE;
		if (b) {
			move_to(ts, t, LIST_PENDING, 0);
			batch_open(ts, b);
		} else {
			move_to(ts, t, LIST_QUEUE, 0);
		}
		return;
	}
	/* Interrupted while running: the node died under it. */
	if (b)
		b->pub.in_flight++;
	t->list = LIST_NONE;
	move_to(ts, t, LIST_RUNNING, 0);
	abnormal_end(ts, t, TASK_LOST, "interrupted: the node stopped while the task ran", now_ms);
}

int tasks_recover_batch(struct tasks *ts, const struct batch *b)
{
	if (b->id >= ts->next_batch_id)
		ts->next_batch_id = b->id + 1;
	if (batch_find(ts, b->id))
		return 0;
	struct batch copy = *b;
	copy.in_flight = 0;
	return batch_insert(ts, &copy) ? 0 : ERR_NOMEM;
}

/* Moves tasks of open batches into their pool queues while under their
 * max_concurrency. */
static void release_pending(struct tasks *ts)
{
	struct batch_entry *b = ts->open_head;
	while (b) {
		struct batch_entry *next = b->onext;
		while (b->pending.head &&
		       (!b->pub.max_concurrency || b->pub.in_flight < b->pub.max_concurrency)) {
			struct task *t = b->pending.head;
			move_to(ts, t, LIST_QUEUE, 0);
			b->pub.in_flight++;
		}
		if (!b->pending.head)
			batch_close(ts, b);
		b = next;
	}
}

void tasks_pump(struct tasks *ts, uint64_t now_ms)
{
	if (ts->draining)
		return;
	release_pending(ts);
	for (uint32_t p = 0; p < ts->lim.pool_count; p++) {
		struct list *q = &ts->queues[p];
		while (q->head) {
			struct task *t = q->head;
			assert(t->state == TASK_QUEUED);
			t->attempts++;
			t->state = TASK_RUNNING;
			t->started_ms = now_ms;
			t->deadline_ms = t->opts.timeout_ms ? now_ms + t->opts.timeout_ms : 0;
			/* where it runs: this node, unless the dispatch effect places
			 * it elsewhere and says so */
			if (ts->lim.node_name && (!t->node || strcmp(t->node, ts->lim.node_name) != 0)) {
				free(t->node);
				t->node = strdup(ts->lim.node_name);
			}
			int rc = ts->fx.dispatch(ts->fx.ctx, t);
			if (rc > 0) {
				t->state = TASK_QUEUED;
				/* the shell may have said why in t->error */
				finish(ts, t, TASK_FAILED,
				       t->error ? NULL : "not dispatchable: no worker can take this job",
				       now_ms);
				continue;
			}
			if (rc != 0) {
				t->attempts--;
				t->state = TASK_QUEUED;
				t->started_ms = 0;
				t->deadline_ms = 0;
				break;
			}
			t->dispatched = 1;
			move_to(ts, t, LIST_RUNNING, 0);
			mark_dirty(ts, t);
		}
	}
}

void tasks_on_started(struct tasks *ts, uint64_t task_id, uint64_t now_ms)
{
	struct task *t = task_find(ts, task_id);
	if (!t || t->list != LIST_RUNNING)
		return;
	t->started_ms = now_ms;
	if (t->opts.timeout_ms)
		t->deadline_ms = now_ms + t->opts.timeout_ms;
	/* not persisted: started_ms is written with the result */
}

void tasks_on_result(struct tasks *ts, uint64_t task_id, int ok, const uint8_t *output,
                     size_t output_len, int32_t exit_code, const char *error, const char *node,
                     uint64_t now_ms)
{
	struct task *t = task_find(ts, task_id);
	if (!t || t->list != LIST_RUNNING)
		return; /* stale: the task was already ended (e.g. batch deadline) */
	free(t->output);
	t->output = NULL;
	t->output_len = 0;
	if (output && output_len) {
		int fail = 0;
		t->output = dup_bytes(output, output_len, &fail);
		if (!fail)
			t->output_len = output_len;
	}
	t->exit_code = exit_code;
	free(t->node);
	t->node = node ? strdup(node) : NULL;
	if (ok) {
		set_error(t, NULL);
		finish(ts, t, TASK_SUCCEEDED, NULL, now_ms);
	} else {
		finish(ts, t, TASK_FAILED, error && *error ? error : "handler failed", now_ms);
	}
}

void tasks_on_worker_lost(struct tasks *ts, uint64_t task_id, int was_running, const char *why,
                          uint64_t now_ms)
{
	struct task *t = task_find(ts, task_id);
	if (!t || t->list != LIST_RUNNING)
		return;
	if (!was_running && !t->kill_requested) {
		/* queued behind the crashed job: not its fault, run it again */
		t->attempts--;
		t->state = TASK_QUEUED;
		t->dispatched = 0;
		t->started_ms = 0;
		t->deadline_ms = 0;
		move_to(ts, t, LIST_QUEUE, 1);
		mark_dirty(ts, t);
		return;
	}
	if (t->kill_requested) {
		int reason = t->kill_reason;
		if (reason == TASK_CANCELLED) {
			finish(ts, t, TASK_CANCELLED, "cancelled while running", now_ms);
			return;
		}
		if (reason == TASK_TIMED_OUT) {
			abnormal_end(ts, t, TASK_TIMED_OUT, t->no_retry ? "batch deadline exceeded"
			                                                : "timed out: worker killed",
			             now_ms);
			return;
		}
	}
	abnormal_end(ts, t, TASK_FAILED, why ? why : "worker crashed", now_ms);
}

void tasks_on_lost(struct tasks *ts, uint64_t task_id, int final_state, const char *why,
                   uint64_t now_ms)
{
	assert(final_state == TASK_LOST || final_state == TASK_TIMED_OUT ||
	       final_state == TASK_FAILED);
	struct task *t = task_find(ts, task_id);
	if (!t || t->list != LIST_RUNNING)
		return;
	if (t->kill_requested && t->kill_reason == TASK_CANCELLED) {
		finish(ts, t, TASK_CANCELLED, "cancelled while running", now_ms);
		return;
	}
	abnormal_end(ts, t, final_state, why, now_ms);
}

static void request_kill(struct tasks *ts, struct task *t, int reason)
{
	assert(t->list == LIST_RUNNING);
	if (t->kill_requested) {
		/* cancel beats timeout */
		if (reason == TASK_CANCELLED)
			t->kill_reason = reason;
		return;
	}
	t->kill_requested = 1;
	t->kill_reason = reason;
	t->deadline_ms = 0;
	if (ts->fx.kill)
		ts->fx.kill(ts->fx.ctx, t);
}

static void batch_expire(struct tasks *ts, struct batch_entry *b, uint64_t now_ms)
{
	/* Ends every unfinished task of the batch: not started -> timed out
	 * now; running -> killed, and timed out when its worker is gone. */
	while (b->pending.head)
		finish(ts, b->pending.head, TASK_TIMED_OUT, "batch deadline exceeded", now_ms);
	b->pub.deadline_ms = 0;
	for (uint32_t p = 0; p < ts->lim.pool_count; p++) {
		struct task *t = ts->queues[p].head;
		while (t) {
			struct task *n = t->qnext;
			if (t->batch_id == b->pub.id)
				finish(ts, t, TASK_TIMED_OUT, "batch deadline exceeded", now_ms);
			t = n;
		}
	}
	struct task *t = ts->backoff.head;
	while (t) {
		struct task *n = t->qnext;
		if (t->batch_id == b->pub.id)
			finish(ts, t, TASK_TIMED_OUT, "batch deadline exceeded", now_ms);
		t = n;
	}
	for (t = ts->running.head; t; t = t->qnext) {
		if (t->batch_id == b->pub.id) {
			t->no_retry = 1;
			request_kill(ts, t, TASK_TIMED_OUT);
		}
	}
}

void tasks_tick(struct tasks *ts, uint64_t now_ms)
{
	struct task *t = ts->running.head;
	while (t) {
		struct task *n = t->qnext;
		if (t->deadline_ms && t->deadline_ms <= now_ms && !t->kill_requested)
			request_kill(ts, t, TASK_TIMED_OUT);
		t = n;
	}
	t = ts->backoff.head;
	while (t) {
		struct task *n = t->qnext;
		if (t->not_before_ms <= now_ms) {
			t->not_before_ms = 0;
			move_to(ts, t, LIST_QUEUE, 0);
		}
		t = n;
	}
	for (uint64_t i = 0; i < ts->bbucket_count; i++) {
		struct batch_entry *b = ts->bbuckets[i];
		while (b) {
			struct batch_entry *n = (struct batch_entry *)b->pub.hnext;
			if (b->pub.deadline_ms && b->pub.deadline_ms <= now_ms &&
			    b->pub.done < b->pub.total)
				batch_expire(ts, b, now_ms);
			b = n;
		}
	}
}

uint64_t tasks_next_deadline(const struct tasks *ts)
{
	uint64_t next = UINT64_MAX;
	for (const struct task *t = ts->running.head; t; t = t->qnext)
		if (t->deadline_ms && !t->kill_requested && t->deadline_ms < next)
			next = t->deadline_ms;
	for (const struct task *t = ts->backoff.head; t; t = t->qnext)
		if (t->not_before_ms < next)
			next = t->not_before_ms;
	for (uint64_t i = 0; i < ts->bbucket_count; i++)
		for (const struct batch_entry *b = ts->bbuckets[i]; b;
		     b = (const struct batch_entry *)b->pub.hnext)
			if (b->pub.deadline_ms && b->pub.done < b->pub.total && b->pub.deadline_ms < next)
				next = b->pub.deadline_ms;
	return next;
}

int tasks_cancel(struct tasks *ts, uint64_t task_id, uint64_t now_ms)
{
	struct task *t = task_find(ts, task_id);
	if (!t || task_state_is_final(t->state))
		return ERR_NOT_FOUND;
	if (t->list == LIST_RUNNING)
		request_kill(ts, t, TASK_CANCELLED);
	else
		finish(ts, t, TASK_CANCELLED, "cancelled", now_ms);
	return 0;
}

uint32_t tasks_cancel_batch(struct tasks *ts, uint64_t batch_id, uint64_t now_ms)
{
	struct batch_entry *b = batch_find(ts, batch_id);
	if (!b)
		return 0;
	uint32_t n = 0;
	for (uint64_t i = 0; i < ts->bucket_count; i++) {
		struct task *t = ts->buckets[i];
		while (t) {
			struct task *next = t->hnext;
			if (t->batch_id == batch_id && !task_state_is_final(t->state)) {
				(void)tasks_cancel(ts, t->id, now_ms);
				n++;
			}
			t = next;
		}
	}
	return n;
}

int tasks_flush(struct tasks *ts, int (*put_task)(void *arg, const struct task *t),
                int (*put_batch)(void *arg, const struct batch *b), void *arg)
{
	for (struct batch_entry *b = ts->bdirty_head; b; b = b->dnext) {
		int rc = put_batch(arg, &b->pub);
		if (rc)
			return rc;
	}
	for (struct task *t = ts->dirty_head; t; t = t->dnext) {
		if (t->ephemeral)
			continue;
		int rc = put_task(arg, t);
		if (rc)
			return rc;
	}
	return 0;
}

void tasks_flush_done(struct tasks *ts)
{
	struct batch_entry *b = ts->bdirty_head;
	while (b) {
		struct batch_entry *n = b->dnext;
		b->dirty = 0;
		b->dnext = NULL;
		b = n;
	}
	ts->bdirty_head = ts->bdirty_tail = NULL;
	struct task *t = ts->dirty_head;
	while (t) {
		struct task *n = t->dnext;
		t->dirty = 0;
		t->dnext = NULL;
		t = n;
	}
	ts->dirty_head = ts->dirty_tail = NULL;
}

void tasks_release_final(struct tasks *ts)
{
	struct task *t = ts->final.head;
	while (t) {
		struct task *n = t->qnext;
		if (!t->dirty) {
			list_remove(&ts->final, t);
			t->list = LIST_NONE;
			task_unlink_hash(ts, t);
			assert(ts->final_held > 0);
			ts->final_held--;
			if (t->batch_id) {
				struct batch_entry *b = batch_find(ts, t->batch_id);
				assert(b && b->held > 0);
				b->held--;
				if (b->held == 0 && b->pub.done == b->pub.total && !b->dirty)
					batch_remove(ts, b);
			}
			task_free(t);
		}
		t = n;
	}
}

const struct task *tasks_find_origin(const struct tasks *ts, const uint8_t origin[16],
                                     uint64_t origin_task)
{
	for (uint64_t i = 0; i < ts->bucket_count; i++)
		for (const struct task *t = ts->buckets[i]; t; t = t->hnext)
			if (t->ephemeral && t->origin_task == origin_task &&
			    !task_state_is_final(t->state) && memcmp(t->origin, origin, 16) == 0)
				return t;
	return NULL;
}

const struct task *tasks_get(const struct tasks *ts, uint64_t id)
{
	return task_find(ts, id);
}

const struct batch *tasks_get_batch(const struct tasks *ts, uint64_t id)
{
	struct batch_entry *b = batch_find(ts, id);
	return b ? &b->pub : NULL;
}

void tasks_drop_batch(struct tasks *ts, uint64_t id)
{
	struct batch_entry *b = batch_find(ts, id);
	if (b && b->held == 0 && !b->dirty)
		batch_remove(ts, b);
}

void tasks_counters(const struct tasks *ts, struct tasks_counters *c)
{
	*c = ts->cnt;
	c->queued = 0;
	for (uint32_t p = 0; p < ts->lim.pool_count; p++)
		c->queued += ts->queues[p].count;
	for (const struct batch_entry *b = ts->open_head; b; b = b->onext)
		c->queued += b->pending.count;
	c->running = ts->running.count;
	c->backoff = ts->backoff.count;
	c->held = ts->held;
}

uint32_t tasks_pool_queued(const struct tasks *ts, uint32_t pool)
{
	return pool < ts->lim.pool_count ? (uint32_t)ts->queues[pool].count : 0;
}

void tasks_set_draining(struct tasks *ts, int draining)
{
	ts->draining = draining;
}
