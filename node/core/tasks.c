/*
 * tasks.c - the task table (see tasks.h for the contract).
 *
 * Data structures, all bounded by limits.queue_tasks_max and batches_max:
 *   - an id -> task map and an id -> batch map (lib/idmap: open addressing,
 *     grows, so any number of batches over time and at once is served);
 *   - one FIFO per pool of tasks ready to dispatch;
 *   - per batch, a FIFO of tasks held back by its max_concurrency, and a
 *     list of all its tasks still in the table (expire and cancel walk it);
 *   - a list of tasks waiting out a retry backoff;
 *   - a list of dispatched tasks;
 *   - a list of final tasks waiting for tasks_release_final();
 *   - a dirty chain of tasks changed since the last flush;
 *   - two timer heaps (lib/timerheap) on monotonic time: one for tasks (a
 *     running task's timeout, or a backed-off task's not_before; a task has
 *     at most one of them, so one embedded timer), one for batch deadlines.
 * A task is on exactly one of the lists at a time (t->list says which).
 *
 * Invariants of the timers (checked by the tests' model):
 *   - a task's timer is armed iff it is running with a timeout and no kill
 *     requested (at deadline_mono_ms), or it is in backoff (at
 *     not_before_mono_ms);
 *   - a batch's timer is armed iff it has a deadline, it has not expired,
 *     and not all of its tasks are final.
 * Room in the heaps is reserved when a task or batch is admitted (where
 * ERR_NOMEM can still be returned), so arming a timer never fails later.
 *
 * Re-entry: ts->in_call is set by every public function that changes the
 * table; an effect that calls back in trips the assert at once (the old
 * shell re-entered through workers_dispatch -> `started` -> tasks_on_started
 * from inside tasks_pump, a state change in the middle of another).
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
#include "lib/idmap.h"

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
	int durable;                         /* its row is committed (see tasks.h) */
	uint32_t held;                       /* tasks of this batch in the table */
	struct task *held_head, *held_tail;  /* those tasks (bnext/bprev), admission order */
	struct timer deadline;               /* monotonic deadline (see invariants) */
	int expired;                         /* its deadline fired: takes no more tasks */
};

struct tasks {
	struct tasks_limits lim;
	struct tasks_effects fx;
	uint64_t next_task_id, next_batch_id;

	struct idmap tasks;    /* id -> struct task */
	uint64_t final_held;   /* tasks held that are final */

	struct list *queues;   /* per pool */
	struct list backoff, running, final;

	struct idmap batches;  /* id -> struct batch_entry */
	struct batch_entry *open_head;

	struct task *dirty_head, *dirty_tail;
	struct batch_entry *bdirty_head, *bdirty_tail;

	struct timerheap task_timers;  /* struct task.timer */
	struct timerheap batch_timers; /* struct batch_entry.deadline */

	int draining;
	int in_call; /* a public function that changes the table is running */
	struct tasks_counters cnt;
};

/* Every public function that changes the table brackets its body with
 * these: effects must not call back into the core (tasks.h). */
#define CORE_ENTER(ts)                 \
	do {                           \
		assert(!(ts)->in_call); \
		(ts)->in_call = 1;     \
	} while (0)
#define CORE_LEAVE(ts) ((ts)->in_call = 0)

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
	c->qnext = c->qprev = c->bnext = c->bprev = c->dnext = NULL;
	c->timer.pos = 0; /* a copy is in no heap */
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

static struct batch_entry *batch_find(const struct tasks *ts, uint64_t id)
{
	return id ? idmap_get(&ts->batches, id) : NULL;
}

static struct task *task_find(const struct tasks *ts, uint64_t id)
{
	return id ? idmap_get(&ts->tasks, id) : NULL;
}

static uint64_t held_count(const struct tasks *ts)
{
	return ts->tasks.count;
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

/* The batch's list of its tasks in the table. */
static void batch_hold(struct batch_entry *b, struct task *t)
{
	t->bnext = NULL;
	t->bprev = b->held_tail;
	if (b->held_tail)
		b->held_tail->bnext = t;
	else
		b->held_head = t;
	b->held_tail = t;
	b->held++;
}

static void batch_unhold(struct batch_entry *b, struct task *t)
{
	assert(b->held > 0);
	if (t->bprev)
		t->bprev->bnext = t->bnext;
	else
		b->held_head = t->bnext;
	if (t->bnext)
		t->bnext->bprev = t->bprev;
	else
		b->held_tail = t->bprev;
	t->bnext = t->bprev = NULL;
	b->held--;
}

/* Arms a timer whose room was reserved at admission. */
static void timer_arm(struct timerheap *h, struct timer *tm, uint64_t at_mono_ms)
{
	int rc = timerheap_set(h, tm, at_mono_ms);
	assert(rc == 0);
	(void)rc;
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

/* Moves t to another list. Leaving the running or backoff list disarms its
 * timer: the caller arms it again for the new list when it needs one. */
static void move_to(struct tasks *ts, struct task *t, unsigned list, int at_head)
{
	struct list *from = list_of(ts, t);
	if (from)
		list_remove(from, t);
	timerheap_cancel(&ts->task_timers, &t->timer);
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

static void finish(struct tasks *ts, struct task *t, int state, const char *error,
                   const struct now *now)
{
	assert(task_state_is_final(state));
	assert(!task_state_is_final(t->state));
	int occupied = t->list == LIST_QUEUE || t->list == LIST_RUNNING || t->list == LIST_BACKOFF;
	if (occupied)
		batch_slot_free(ts, t);
	t->state = state;
	t->finished_ms = now->wall_ms;
	t->deadline_mono_ms = 0;
	t->not_before_mono_ms = 0;
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
		if (b->pub.done == b->pub.total && !b->pub.input_open)
			timerheap_cancel(&ts->batch_timers, &b->deadline); /* nothing left to expire */
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
                         const struct now *now)
{
	if (t->opts.restart == TASK_RESTART_TRANSIENT && !t->no_retry &&
	    t->attempts < t->opts.max_attempts) {
		set_error(t, why);
		t->state = TASK_QUEUED;
		t->dispatched = 0;
		t->kill_requested = 0;
		t->deadline_mono_ms = 0;
		t->not_before_mono_ms = now->mono_ms + backoff_delay_ms(ts, t);
		move_to(ts, t, LIST_BACKOFF, 0); /* keeps its batch slot */
		timer_arm(&ts->task_timers, &t->timer, t->not_before_mono_ms);
		ts->cnt.retried++;
		mark_dirty(ts, t);
		return;
	}
	t->abnormal = 1;
	finish(ts, t, final_state, why, now);
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
	idmap_init(&ts->tasks);
	idmap_init(&ts->batches);
	timerheap_init(&ts->task_timers);
	timerheap_init(&ts->batch_timers);
	ts->queues = calloc(lim->pool_count, sizeof(*ts->queues));
	if (!ts->queues) {
		tasks_destroy(ts);
		return NULL;
	}
	return ts;
}

void tasks_destroy(struct tasks *ts)
{
	if (!ts)
		return;
	assert(!ts->in_call);
	/* the heaps first: they point into the tasks and batches freed below */
	timerheap_free(&ts->task_timers);
	timerheap_free(&ts->batch_timers);
	struct idmap_iter it;
	idmap_iter_init(&ts->tasks, &it);
	struct task *t;
	while ((t = idmap_iter_next(&ts->tasks, &it, NULL)) != NULL)
		task_free(t);
	idmap_iter_init(&ts->batches, &it);
	struct batch_entry *b;
	while ((b = idmap_iter_next(&ts->batches, &it, NULL)) != NULL)
		free(b);
	idmap_free(&ts->tasks);
	idmap_free(&ts->batches);
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

/* Clears the table's bookkeeping in a task handed in from outside. */
static void bookkeeping_reset(struct task *t)
{
	t->qnext = t->qprev = t->bnext = t->bprev = t->dnext = NULL;
	t->timer.pos = 0;
	t->list = LIST_NONE;
	t->dirty = 0;
	t->dispatched = 0;
	t->kill_requested = 0;
	t->deadline_mono_ms = 0;
	t->not_before_mono_ms = 0;
	t->durable = 0;
}

/* Admits t under an id already put in the id map (cannot fail). */
static void admit(struct tasks *ts, struct task *t, uint64_t id, const struct now *now)
{
	assert(t->pool < ts->lim.pool_count);
	assert(id == ts->next_task_id && task_find(ts, id) == t);
	bookkeeping_reset(t);
	apply_defaults(ts, t);
	t->id = id;
	ts->next_task_id++;
	t->state = TASK_QUEUED;
	t->submitted_ms = now->wall_ms;
	t->attempts = 0;
	ts->cnt.submitted++;
	mark_dirty(ts, t);
}

static uint64_t live_held(const struct tasks *ts)
{
	return held_count(ts) - ts->final_held;
}

/* Room in the task timer heap for every task held plus `more`: each holds
 * at most one armed timer. */
static int reserve_task_timers(struct tasks *ts, uint64_t more)
{
	uint64_t n = held_count(ts) + more;
	if (n > UINT32_MAX)
		return ERR_FULL;
	return timerheap_reserve(&ts->task_timers, (uint32_t)n) == 0 ? 0 : ERR_NOMEM;
}

int tasks_submit(struct tasks *ts, struct task *t, const struct now *now, uint64_t *id)
{
	CORE_ENTER(ts);
	int rc = 0;
	if (live_held(ts) >= ts->lim.queue_tasks_max) {
		rc = ERR_FULL;
		goto out;
	}
	rc = reserve_task_timers(ts, 1);
	if (rc)
		goto out;
	if (idmap_put(&ts->tasks, ts->next_task_id, t) != 0) {
		rc = ERR_NOMEM;
		goto out;
	}
	t->batch_id = 0;
	admit(ts, t, ts->next_task_id, now);
	move_to(ts, t, LIST_QUEUE, 0);
	*id = t->id;
out:
	CORE_LEAVE(ts);
	return rc;
}

static struct batch_entry *batch_insert(struct tasks *ts, const struct batch *b)
{
	if (timerheap_reserve(&ts->batch_timers, (uint32_t)(ts->batches.count + 1)) != 0)
		return NULL;
	struct batch_entry *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->pub = *b;
	if (idmap_put(&ts->batches, e->pub.id, e) != 0) {
		free(e);
		return NULL;
	}
	return e;
}

static void batch_remove(struct tasks *ts, struct batch_entry *e)
{
	struct batch_entry *gone = idmap_del(&ts->batches, e->pub.id);
	assert(gone == e);
	(void)gone;
	batch_close(ts, e);
	timerheap_cancel(&ts->batch_timers, &e->deadline);
	assert(!e->dirty && e->held == 0 && !e->held_head);
	free(e);
}

/* The body of tasks_submit_batch and tasks_open_batch. */
static int batch_create(struct tasks *ts, struct task **tv, uint32_t n, uint32_t max_concurrency,
                        uint32_t deadline_ms, uint32_t window, const struct now *now,
                        uint64_t *batch_id)
{
	int rc = 0;
	if (live_held(ts) + n > ts->lim.queue_tasks_max || ts->batches.count >= ts->lim.batches_max) {
		rc = ERR_FULL;
		goto out;
	}
	rc = reserve_task_timers(ts, n);
	if (rc)
		goto out;
	struct batch b = {
		.id = ts->next_batch_id,
		.total = n,
		.max_concurrency = max_concurrency,
		.deadline_ms = deadline_ms ? now->wall_ms + deadline_ms : 0,
		.created_ms = now->wall_ms,
		.input_open = window > 0,
		.window = window,
	};
	struct batch_entry *e = batch_insert(ts, &b);
	if (!e) {
		rc = ERR_NOMEM;
		goto out;
	}
	/* every id in the map first: the one step that can fail, undone whole */
	for (uint32_t i = 0; i < n; i++) {
		if (idmap_put(&ts->tasks, ts->next_task_id + i, tv[i]) != 0) {
			while (i-- > 0)
				(void)idmap_del(&ts->tasks, ts->next_task_id + i);
			batch_remove(ts, e);
			rc = ERR_NOMEM;
			goto out;
		}
	}
	ts->next_batch_id++;
	batch_mark_dirty(ts, e);
	if (deadline_ms && (n || window))
		timer_arm(&ts->batch_timers, &e->deadline, now->mono_ms + deadline_ms);
	for (uint32_t i = 0; i < n; i++) {
		struct task *t = tv[i];
		admit(ts, t, ts->next_task_id, now);
		t->batch_id = b.id;
		t->batch_index = i;
		move_to(ts, t, LIST_PENDING, 0);
		batch_hold(e, t);
	}
	if (n)
		batch_open(ts, e);
	*batch_id = b.id;
out:
	return rc;
}

int tasks_submit_batch(struct tasks *ts, struct task **tv, uint32_t n, uint32_t max_concurrency,
                       uint32_t deadline_ms, const struct now *now, uint64_t *batch_id)
{
	CORE_ENTER(ts);
	int rc = batch_create(ts, tv, n, max_concurrency, deadline_ms, 0, now, batch_id);
	CORE_LEAVE(ts);
	return rc;
}

int tasks_open_batch(struct tasks *ts, struct task **tv, uint32_t n, uint32_t max_concurrency,
                     uint32_t deadline_ms, uint32_t window, const struct now *now,
                     uint64_t *batch_id)
{
	assert(window >= 1);
	CORE_ENTER(ts);
	int rc = n <= window ? batch_create(ts, tv, n, max_concurrency, deadline_ms, window, now,
	                                    batch_id)
	                     : ERR_FULL;
	CORE_LEAVE(ts);
	return rc;
}

static uint32_t batch_room(const struct tasks *ts, const struct batch_entry *e)
{
	if (!e->pub.input_open || e->expired)
		return 0;
	assert(e->pub.done <= e->pub.total);
	uint32_t unfinished = e->pub.total - e->pub.done;
	uint32_t room = unfinished < e->pub.window ? e->pub.window - unfinished : 0;
	uint64_t live = live_held(ts);
	uint64_t table = live < ts->lim.queue_tasks_max ? ts->lim.queue_tasks_max - live : 0;
	if (room > table)
		room = (uint32_t)table;
	/* indexes are 32-bit: a batch ends at UINT32_MAX tasks */
	if (room > UINT32_MAX - e->pub.total)
		room = UINT32_MAX - e->pub.total;
	return room;
}

uint32_t tasks_batch_room(const struct tasks *ts, uint64_t batch_id)
{
	const struct batch_entry *e = batch_find(ts, batch_id);
	return e ? batch_room(ts, e) : 0;
}

int tasks_batch_append(struct tasks *ts, uint64_t batch_id, struct task **tv, uint32_t n,
                       const struct now *now)
{
	CORE_ENTER(ts);
	int rc = 0;
	struct batch_entry *e = batch_find(ts, batch_id);
	if (!e) {
		rc = ERR_NOT_FOUND;
		goto out;
	}
	if (!e->pub.input_open || e->expired) {
		rc = ERR_CLOSED;
		goto out;
	}
	if (n > batch_room(ts, e)) {
		rc = ERR_FULL;
		goto out;
	}
	rc = reserve_task_timers(ts, n);
	if (rc)
		goto out;
	for (uint32_t i = 0; i < n; i++) {
		if (idmap_put(&ts->tasks, ts->next_task_id + i, tv[i]) != 0) {
			while (i-- > 0)
				(void)idmap_del(&ts->tasks, ts->next_task_id + i);
			rc = ERR_NOMEM;
			goto out;
		}
	}
	batch_mark_dirty(ts, e);
	for (uint32_t i = 0; i < n; i++) {
		struct task *t = tv[i];
		admit(ts, t, ts->next_task_id, now);
		t->batch_id = batch_id;
		t->batch_index = e->pub.total + i;
		move_to(ts, t, LIST_PENDING, 0);
		batch_hold(e, t);
	}
	e->pub.total += n;
	assert(e->pub.total - e->pub.done <= e->pub.window);
	if (n)
		batch_open(ts, e);
out:
	CORE_LEAVE(ts);
	return rc;
}

int tasks_close_batch(struct tasks *ts, uint64_t batch_id)
{
	CORE_ENTER(ts);
	int rc = 0;
	struct batch_entry *e = batch_find(ts, batch_id);
	if (!e) {
		rc = ERR_NOT_FOUND;
	} else if (e->pub.input_open) {
		e->pub.input_open = 0;
		batch_mark_dirty(ts, e);
		if (e->pub.done == e->pub.total)
			timerheap_cancel(&ts->batch_timers, &e->deadline); /* nothing left to expire */
	}
	CORE_LEAVE(ts);
	return rc;
}

int tasks_recover(struct tasks *ts, struct task *t, const struct now *now)
{
	CORE_ENTER(ts);
	assert(t->state == TASK_QUEUED || t->state == TASK_RUNNING);
	assert(t->id != 0 && !task_find(ts, t->id));
	int rc = reserve_task_timers(ts, 1);
	if (rc == 0 && idmap_put(&ts->tasks, t->id, t) != 0)
		rc = ERR_NOMEM;
	if (rc) {
		CORE_LEAVE(ts);
		return rc;
	}
	if (t->id >= ts->next_task_id)
		ts->next_task_id = t->id + 1;
	bookkeeping_reset(t);
	t->durable = 1; /* it came from the journal */
	struct batch_entry *b = t->batch_id ? batch_find(ts, t->batch_id) : NULL;
	if (t->batch_id && !b) {
		/* the batch record is gone (should not happen): run it alone */
		t->batch_id = 0;
	}
	if (b)
		batch_hold(b, t);
	if (t->state == TASK_QUEUED) {
		/* a backoff it was waiting out was never persisted (monotonic
		 * time means nothing after a restart): it may run at once */
		if (b) {
			move_to(ts, t, LIST_PENDING, 0);
			batch_open(ts, b);
		} else {
			move_to(ts, t, LIST_QUEUE, 0);
		}
	} else {
		/* Interrupted while running: the node died under it. */
		if (b)
			b->pub.in_flight++;
		move_to(ts, t, LIST_RUNNING, 0);
		abnormal_end(ts, t, TASK_LOST, "interrupted: the node stopped while the task ran", now);
	}
	CORE_LEAVE(ts);
	return 0;
}

int tasks_recover_batch(struct tasks *ts, const struct batch *b, const struct now *now)
{
	CORE_ENTER(ts);
	int rc = 0;
	if (b->id >= ts->next_batch_id)
		ts->next_batch_id = b->id + 1;
	if (!batch_find(ts, b->id)) {
		struct batch copy = *b;
		copy.in_flight = 0;
		copy.input_open = 0; /* its streaming client lost us: closed at its journaled total */
		struct batch_entry *e = batch_insert(ts, &copy);
		if (e)
			e->durable = 1; /* it came from the journal */
		if (!e) {
			rc = ERR_NOMEM;
		} else if (b->deadline_ms && b->done < b->total) {
			/* The wall deadline, back on the monotonic clock. Already
			 * past: due now. Never more than the batch's whole span:
			 * the wall clock may have been stepped back meanwhile. */
			uint64_t left_ms = b->deadline_ms > now->wall_ms ? b->deadline_ms - now->wall_ms : 0;
			uint64_t span_ms = b->deadline_ms > b->created_ms ? b->deadline_ms - b->created_ms : 0;
			if (left_ms > span_ms)
				left_ms = span_ms;
			timer_arm(&ts->batch_timers, &e->deadline, now->mono_ms + left_ms);
		}
	}
	CORE_LEAVE(ts);
	return rc;
}

/* Moves tasks of open batches into their pool queues while under their
 * max_concurrency. */
static void release_pending(struct tasks *ts)
{
	struct batch_entry *b = ts->open_head;
	while (b) {
		struct batch_entry *next = b->onext;
		if (!b->durable) {
			/* admitted in this iteration: not journaled yet */
			b = next;
			continue;
		}
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

void tasks_pump(struct tasks *ts, const struct now *now)
{
	CORE_ENTER(ts);
	if (ts->draining) {
		CORE_LEAVE(ts);
		return;
	}
	release_pending(ts);
	for (uint32_t p = 0; p < ts->lim.pool_count; p++) {
		struct list *q = &ts->queues[p];
		while (q->head) {
			struct task *t = q->head;
			assert(t->state == TASK_QUEUED);
			if (!t->durable)
				break; /* not journaled yet: it and those behind it wait */
			t->attempts++;
			t->state = TASK_RUNNING;
			t->timeout_at_start = 0;
			t->started_ms = now->wall_ms;
			t->deadline_mono_ms = t->opts.timeout_ms ? now->mono_ms + t->opts.timeout_ms : 0;
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
				       now);
				continue;
			}
			if (rc != 0) {
				t->attempts--;
				t->state = TASK_QUEUED;
				t->started_ms = 0;
				t->deadline_mono_ms = 0;
				break;
			}
			t->dispatched = 1;
			move_to(ts, t, LIST_RUNNING, 0);
			if (t->timeout_at_start)
				t->deadline_mono_ms = 0; /* armed by tasks_on_started */
			if (t->deadline_mono_ms)
				timer_arm(&ts->task_timers, &t->timer, t->deadline_mono_ms);
			mark_dirty(ts, t);
		}
	}
	CORE_LEAVE(ts);
}

void tasks_on_started(struct tasks *ts, uint64_t task_id, const struct now *now)
{
	CORE_ENTER(ts);
	struct task *t = task_find(ts, task_id);
	if (t && t->list == LIST_RUNNING) {
		t->started_ms = now->wall_ms;
		if (t->opts.timeout_ms && !t->kill_requested) {
			t->deadline_mono_ms = now->mono_ms + t->opts.timeout_ms;
			timer_arm(&ts->task_timers, &t->timer, t->deadline_mono_ms);
		}
		/* not persisted: started_ms is written with the result */
	}
	CORE_LEAVE(ts);
}

void tasks_on_result(struct tasks *ts, uint64_t task_id, int ok, const uint8_t *output,
                     size_t output_len, int32_t exit_code, const char *error, const char *node,
                     const struct now *now)
{
	CORE_ENTER(ts);
	struct task *t = task_find(ts, task_id);
	if (!t || t->list != LIST_RUNNING) {
		CORE_LEAVE(ts);
		return; /* stale: the task was already ended (e.g. batch deadline) */
	}
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
		finish(ts, t, TASK_SUCCEEDED, NULL, now);
	} else {
		finish(ts, t, TASK_FAILED, error && *error ? error : "handler failed", now);
	}
	CORE_LEAVE(ts);
}

static void request_kill(struct tasks *ts, struct task *t, int reason);

int tasks_on_late_result(struct tasks *ts, uint64_t task_id, int ok, const uint8_t *output,
                         size_t output_len, int32_t exit_code, const char *error, const char *node,
                         const struct now *now)
{
	CORE_ENTER(ts);
	struct task *t = task_find(ts, task_id);
	if (!t || task_state_is_final(t->state) || t->list == LIST_NONE || t->list == LIST_FINAL) {
		CORE_LEAVE(ts);
		return 0;
	}
	/* The attempt given up for lost did finish: its answer is the task's
	 * (reported once). A copy already running elsewhere is withdrawn. */
	if (t->list == LIST_RUNNING && !t->kill_requested)
		request_kill(ts, t, TASK_CANCELLED);
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
		finish(ts, t, TASK_SUCCEEDED, NULL, now);
	} else {
		finish(ts, t, TASK_FAILED, error && *error ? error : "handler failed", now);
	}
	CORE_LEAVE(ts);
	return 1;
}

int tasks_on_handed_back(struct tasks *ts, uint64_t task_id, const struct now *now)
{
	CORE_ENTER(ts);
	struct task *t = task_find(ts, task_id);
	if (!t || !t->ephemeral || (t->list != LIST_RUNNING && t->list != LIST_QUEUE)) {
		CORE_LEAVE(ts);
		return 0;
	}
	/* never started here: its coordinator places it elsewhere, no attempt
	 * charged (the wire shows it queued) */
	t->handed_back = 1;
	t->kill_requested = 0;
	finish(ts, t, TASK_CANCELLED, "handed back: not started here", now);
	CORE_LEAVE(ts);
	return 1;
}

static void worker_lost(struct tasks *ts, struct task *t, int was_running, const char *why,
                        const struct now *now)
{
	if (!was_running && !t->kill_requested) {
		/* queued behind the crashed job: not its fault, run it again */
		t->attempts--;
		t->state = TASK_QUEUED;
		t->dispatched = 0;
		t->started_ms = 0;
		t->deadline_mono_ms = 0;
		move_to(ts, t, LIST_QUEUE, 1);
		mark_dirty(ts, t);
		return;
	}
	if (t->kill_requested) {
		int reason = t->kill_reason;
		if (reason == TASK_CANCELLED) {
			finish(ts, t, TASK_CANCELLED, "cancelled while running", now);
			return;
		}
		if (reason == TASK_TIMED_OUT) {
			abnormal_end(ts, t, TASK_TIMED_OUT, t->no_retry ? "batch deadline exceeded"
			                                                : "timed out: worker killed",
			             now);
			return;
		}
	}
	abnormal_end(ts, t, TASK_FAILED, why ? why : "worker crashed", now);
}

void tasks_on_worker_lost(struct tasks *ts, uint64_t task_id, int was_running, const char *why,
                          const struct now *now)
{
	CORE_ENTER(ts);
	struct task *t = task_find(ts, task_id);
	if (t && t->list == LIST_RUNNING)
		worker_lost(ts, t, was_running, why, now);
	CORE_LEAVE(ts);
}

void tasks_on_lost(struct tasks *ts, uint64_t task_id, int final_state, const char *why,
                   const struct now *now)
{
	assert(final_state == TASK_LOST || final_state == TASK_TIMED_OUT ||
	       final_state == TASK_FAILED);
	CORE_ENTER(ts);
	struct task *t = task_find(ts, task_id);
	if (t && t->list == LIST_RUNNING) {
		if (t->kill_requested && t->kill_reason == TASK_CANCELLED)
			finish(ts, t, TASK_CANCELLED, "cancelled while running", now);
		else
			abnormal_end(ts, t, final_state, why, now);
	}
	CORE_LEAVE(ts);
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
	t->deadline_mono_ms = 0;
	timerheap_cancel(&ts->task_timers, &t->timer);
	if (ts->fx.kill)
		ts->fx.kill(ts->fx.ctx, t);
}

static void batch_expire(struct tasks *ts, struct batch_entry *b, const struct now *now)
{
	/* Ends every unfinished task of the batch: not started -> timed out
	 * now; running -> killed, and timed out when its worker is gone.
	 * Walks only the batch's own tasks; finish() keeps them on the list
	 * (they leave it in tasks_release_final). */
	b->pub.deadline_ms = 0;
	b->expired = 1;
	b->pub.input_open = 0; /* a stream past its deadline takes no more tasks */
	timerheap_cancel(&ts->batch_timers, &b->deadline);
	struct task *t = b->held_head;
	while (t) {
		struct task *n = t->bnext;
		if (task_state_is_final(t->state)) {
			/* already ended */
		} else if (t->list == LIST_RUNNING) {
			t->no_retry = 1;
			request_kill(ts, t, TASK_TIMED_OUT);
		} else {
			finish(ts, t, TASK_TIMED_OUT, "batch deadline exceeded", now);
		}
		t = n;
	}
}

/* One due task timer: a running task's timeout or a backoff's end. */
static void task_timer_fired(struct tasks *ts, struct task *t)
{
	if (t->list == LIST_RUNNING) {
		assert(t->deadline_mono_ms && !t->kill_requested);
		request_kill(ts, t, TASK_TIMED_OUT);
	} else {
		assert(t->list == LIST_BACKOFF);
		t->not_before_mono_ms = 0;
		move_to(ts, t, LIST_QUEUE, 0);
	}
}

void tasks_tick(struct tasks *ts, const struct now *now)
{
	CORE_ENTER(ts);
	/* Both heaps, earliest first: O(log n) per due timer, nothing for the
	 * rest. A fired timer may disarm others (a batch deadline ends its
	 * tasks), which the heaps handle. */
	for (;;) {
		uint64_t tt = timerheap_next_ms(&ts->task_timers);
		uint64_t bt = timerheap_next_ms(&ts->batch_timers);
		if (tt <= bt && tt <= now->mono_ms) {
			struct timer *tm = timerheap_pop_due(&ts->task_timers, now->mono_ms);
			task_timer_fired(ts, timer_owner(tm, struct task, timer));
		} else if (bt < tt && bt <= now->mono_ms) {
			struct timer *tm = timerheap_pop_due(&ts->batch_timers, now->mono_ms);
			struct batch_entry *b = timer_owner(tm, struct batch_entry, deadline);
			assert(b->pub.input_open || b->pub.done < b->pub.total);
			batch_expire(ts, b, now);
		} else {
			break;
		}
	}
	CORE_LEAVE(ts);
}

uint64_t tasks_next_deadline(const struct tasks *ts)
{
	uint64_t tt = timerheap_next_ms(&ts->task_timers);
	uint64_t bt = timerheap_next_ms(&ts->batch_timers);
	return tt < bt ? tt : bt;
}

static int cancel_one(struct tasks *ts, struct task *t, const struct now *now)
{
	if (!t || task_state_is_final(t->state))
		return ERR_NOT_FOUND;
	if (t->list == LIST_RUNNING)
		request_kill(ts, t, TASK_CANCELLED);
	else
		finish(ts, t, TASK_CANCELLED, "cancelled", now);
	return 0;
}

int tasks_cancel(struct tasks *ts, uint64_t task_id, const struct now *now)
{
	CORE_ENTER(ts);
	int rc = cancel_one(ts, task_find(ts, task_id), now);
	CORE_LEAVE(ts);
	return rc;
}

uint32_t tasks_cancel_batch(struct tasks *ts, uint64_t batch_id, const struct now *now)
{
	CORE_ENTER(ts);
	uint32_t n = 0;
	struct batch_entry *b = batch_find(ts, batch_id);
	for (struct task *t = b ? b->held_head : NULL, *next; t; t = next) {
		next = t->bnext; /* finish() keeps t on the list */
		if (cancel_one(ts, t, now) == 0)
			n++;
	}
	CORE_LEAVE(ts);
	return n;
}

int tasks_flush(struct tasks *ts, int (*put_task)(void *arg, const struct task *t),
                int (*put_batch)(void *arg, const struct batch *b), void *arg)
{
	CORE_ENTER(ts);
	int rc = 0;
	for (struct batch_entry *b = ts->bdirty_head; b && !rc; b = b->dnext)
		rc = put_batch(arg, &b->pub);
	for (struct task *t = ts->dirty_head; t && !rc; t = t->dnext)
		if (!t->ephemeral)
			rc = put_task(arg, t);
	CORE_LEAVE(ts);
	return rc;
}

void tasks_flush_done(struct tasks *ts)
{
	CORE_ENTER(ts);
	struct batch_entry *b = ts->bdirty_head;
	while (b) {
		struct batch_entry *n = b->dnext;
		b->dirty = 0;
		b->durable = 1;
		b->dnext = NULL;
		b = n;
	}
	ts->bdirty_head = ts->bdirty_tail = NULL;
	struct task *t = ts->dirty_head;
	while (t) {
		struct task *n = t->dnext;
		t->dirty = 0;
		t->durable = 1;
		t->dnext = NULL;
		t = n;
	}
	ts->dirty_head = ts->dirty_tail = NULL;
	CORE_LEAVE(ts);
}

static void uncount_final(struct tasks *ts, int state)
{
	uint64_t *c = NULL;
	switch (state) {
	case TASK_SUCCEEDED: c = &ts->cnt.succeeded; break;
	case TASK_FAILED: c = &ts->cnt.failed; break;
	case TASK_TIMED_OUT: c = &ts->cnt.timed_out; break;
	case TASK_CANCELLED: c = &ts->cnt.cancelled; break;
	case TASK_LOST: c = &ts->cnt.lost; break;
	default: assert(0); return;
	}
	assert(*c > 0);
	(*c)--;
}

/* Takes t off the dirty chain (O(dirty): only on the failure paths). */
static void dirty_unlink(struct tasks *ts, struct task *t)
{
	assert(t->dirty);
	struct task *prev = NULL;
	for (struct task *p = ts->dirty_head; p; prev = p, p = p->dnext) {
		if (p != t)
			continue;
		if (prev)
			prev->dnext = t->dnext;
		else
			ts->dirty_head = t->dnext;
		if (ts->dirty_tail == t)
			ts->dirty_tail = prev;
		break;
	}
	t->dirty = 0;
	t->dnext = NULL;
}

static void bdirty_unlink(struct tasks *ts, struct batch_entry *b)
{
	assert(b->dirty);
	struct batch_entry *prev = NULL;
	for (struct batch_entry *p = ts->bdirty_head; p; prev = p, p = p->dnext) {
		if (p != b)
			continue;
		if (prev)
			prev->dnext = b->dnext;
		else
			ts->bdirty_head = b->dnext;
		if (ts->bdirty_tail == b)
			ts->bdirty_tail = prev;
		break;
	}
	b->dirty = 0;
	b->dnext = NULL;
}

/* Removes a task that was never journaled, undoing what its admission and
 * anything since counted. The caller took it off the dirty chain. */
static void drop_new(struct tasks *ts, struct task *t,
                     void (*gone)(void *arg, const struct task *t), void *arg)
{
	assert(!t->durable && !t->dirty);
	/* never dispatched: tasks_pump skips tasks that are not durable */
	assert(t->list == LIST_QUEUE || t->list == LIST_PENDING || t->list == LIST_FINAL);
	assert(!t->dispatched);
	if (t->list == LIST_FINAL) {
		assert(ts->final_held > 0);
		ts->final_held--;
		uncount_final(ts, t->state);
	}
	assert(ts->cnt.submitted > 0);
	ts->cnt.submitted--;
	if (t->batch_id) {
		struct batch_entry *b = batch_find(ts, t->batch_id);
		assert(b && !b->durable);
		batch_unhold(b, t);
	}
	move_to(ts, t, LIST_NONE, 0);
	struct task *was = idmap_del(&ts->tasks, t->id);
	assert(was == t);
	(void)was;
	if (gone)
		gone(arg, t);
	task_free(t);
}

/* Removes a batch that was never journaled, once its tasks are gone. */
static void drop_new_batch(struct tasks *ts, struct batch_entry *b)
{
	assert(!b->durable && b->held == 0);
	assert(b->pending.count == 0 && !b->held_head);
	if (b->dirty)
		bdirty_unlink(ts, b);
	batch_remove(ts, b);
}

uint64_t tasks_abort_new(struct tasks *ts, void (*gone)(void *arg, const struct task *t),
                         void *arg)
{
	CORE_ENTER(ts);
	uint64_t n = 0;
	/* Rebuild the dirty chain with the durable tasks only: their changes
	 * are written next time. */
	struct task *t = ts->dirty_head;
	ts->dirty_head = ts->dirty_tail = NULL;
	while (t) {
		struct task *next = t->dnext;
		t->dnext = NULL;
		if (t->durable) {
			if (ts->dirty_tail)
				ts->dirty_tail->dnext = t;
			else
				ts->dirty_head = t;
			ts->dirty_tail = t;
		} else {
			t->dirty = 0;
			drop_new(ts, t, gone, arg);
			n++;
		}
		t = next;
	}
	struct batch_entry *b = ts->bdirty_head;
	ts->bdirty_head = ts->bdirty_tail = NULL;
	while (b) {
		struct batch_entry *next = b->dnext;
		b->dnext = NULL;
		if (b->durable) {
			if (ts->bdirty_tail)
				ts->bdirty_tail->dnext = b;
			else
				ts->bdirty_head = b;
			ts->bdirty_tail = b;
		} else {
			b->dirty = 0;
			drop_new_batch(ts, b);
		}
		b = next;
	}
	CORE_LEAVE(ts);
	return n;
}

int tasks_withdraw(struct tasks *ts, uint64_t task_id)
{
	CORE_ENTER(ts);
	struct task *t = task_find(ts, task_id);
	int rc = ERR_NOT_FOUND;
	if (t && !t->durable && !t->batch_id) {
		dirty_unlink(ts, t);
		drop_new(ts, t, NULL, NULL);
		rc = 0;
	}
	CORE_LEAVE(ts);
	return rc;
}

int tasks_withdraw_batch(struct tasks *ts, uint64_t batch_id)
{
	CORE_ENTER(ts);
	struct batch_entry *b = batch_find(ts, batch_id);
	int rc = ERR_NOT_FOUND;
	if (b && !b->durable) {
		while (b->held_head) {
			struct task *t = b->held_head;
			dirty_unlink(ts, t);
			drop_new(ts, t, NULL, NULL);
		}
		drop_new_batch(ts, b);
		rc = 0;
	}
	CORE_LEAVE(ts);
	return rc;
}

int tasks_has_dirty(const struct tasks *ts)
{
	return ts->dirty_head != NULL || ts->bdirty_head != NULL;
}

void tasks_next_ids(const struct tasks *ts, uint64_t *task_id, uint64_t *batch_id)
{
	*task_id = ts->next_task_id;
	*batch_id = ts->next_batch_id;
}

void tasks_release_final(struct tasks *ts)
{
	CORE_ENTER(ts);
	struct task *t = ts->final.head;
	while (t) {
		struct task *n = t->qnext;
		if (!t->dirty) {
			list_remove(&ts->final, t);
			t->list = LIST_NONE;
			struct task *gone = idmap_del(&ts->tasks, t->id);
			assert(gone == t);
			(void)gone;
			assert(ts->final_held > 0);
			ts->final_held--;
			if (t->batch_id) {
				struct batch_entry *b = batch_find(ts, t->batch_id);
				assert(b);
				batch_unhold(b, t);
				if (b->held == 0 && b->pub.done == b->pub.total && !b->dirty &&
				    !b->pub.input_open)
					batch_remove(ts, b);
			}
			task_free(t);
		}
		t = n;
	}
	CORE_LEAVE(ts);
}

const struct task *tasks_find_origin(const struct tasks *ts, const uint8_t origin[16],
                                     uint64_t origin_task)
{
	struct idmap_iter it;
	idmap_iter_init(&ts->tasks, &it);
	const struct task *t;
	while ((t = idmap_iter_next(&ts->tasks, &it, NULL)) != NULL)
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
	CORE_ENTER(ts);
	struct batch_entry *b = batch_find(ts, id);
	if (b && b->held == 0 && !b->dirty && !b->pub.input_open)
		batch_remove(ts, b);
	CORE_LEAVE(ts);
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
	c->held = held_count(ts);
}

uint32_t tasks_pool_queued(const struct tasks *ts, uint32_t pool)
{
	return pool < ts->lim.pool_count ? (uint32_t)ts->queues[pool].count : 0;
}

void tasks_set_draining(struct tasks *ts, int draining)
{
	CORE_ENTER(ts);
	ts->draining = draining;
	CORE_LEAVE(ts);
}
