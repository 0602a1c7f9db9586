/*
 * tasks_svc.c - the tasks service (see tasks_svc.h).
 *
 * Owns: the task core, the worker pools, the handler registry, and the
 * parked calls that wait for a task to end (`await`, `submit --wait`, a
 * coordinator's placed attempt) or for a batch's next results, and the
 * task_submit port's watches (another service told how a task ended: the
 * cache's get-or-compute), which are waiters too, with a callback instead
 * of a call.
 *
 * Subtle parts:
 *  - Persist before promise: submit and map are REQ_PERSIST, so their ids
 *    leave the node only after the commit; waiters are answered in
 *    after_commit, once what they report is durable.
 *  - Waiters are found by id (a map per task and per batch) and woken only
 *    for the tasks that ended and the batches that progressed in this
 *    iteration; their deadlines sit in a timer heap (monotonic clock).
 *  - The core's effects never call back into the core: worker events are
 *    delivered by the supervisor outside core calls, and remote outcomes
 *    come from the cluster's tick through the task_sink port.
 *  - Draining: a task a coordinator placed here that has not started will
 *    not start; its waiter is answered at once ("queued"), so the
 *    coordinator places it elsewhere with no attempt charged.
 */
#include "svc/tasks_svc.h"

#include "svc/tasks_internal.h"

#include <time.h>

/* ---- small helpers ---- */

void idvec_push(struct tasks_svc *s, struct idvec *iv, uint64_t id)
{
	if (iv->n == iv->cap) {
		uint32_t cap = iv->cap ? iv->cap * 2 : 64;
		uint64_t *nv = realloc(iv->v, cap * sizeof(*nv));
		if (!nv) {
			/* the waiter is then answered by its deadline */
			if (!s->nomem_logged++)
				log_error("tasks", "out of memory: a waiter will be answered late");
			return;
		}
		iv->v = nv;
		iv->cap = cap;
	}
	iv->v[iv->n++] = id;
}

/* A task by id: from the table, else from the journal (*owned set). */
int task_lookup(struct tasks_svc *s, uint64_t id, const struct task **t, struct task **owned)
{
	*owned = NULL;
	*t = tasks_get(s->tasks, id);
	if (*t)
		return 0;
	int rc = store_task_get(s->store, id, owned);
	if (rc == 0)
		*t = *owned;
	return rc;
}

uint32_t handler_pool(const struct tasks_svc *s, const char *handler)
{
	for (uint32_t p = 0; p < s->cfg->pool_count; p++)
		for (uint32_t h = 0; h < s->cfg->pools[p].handler_count; h++)
			if (strcmp(s->cfg->pools[p].handlers[h], handler) == 0)
				return p + 1;
	return 0;
}

/* Checks a task spec; on error fills msg and returns a CH_ERR code. */
int spec_check(struct tasks_svc *s, const char *handler, const Chorus__TaskOptions *o,
                      size_t payload_len, char *msg, size_t len)
{
	if (!handler || !*handler) {
		snprintf(msg, len, "no handler given");
		return CH_ERR_INVALID;
	}
	if (!handlers_find(&s->reg, handler)) {
		char known[512] = "";
		size_t off = 0;
		for (uint32_t i = 0; i < s->reg.count && off < sizeof(known) - 70; i++)
			off += (size_t)snprintf(known + off, sizeof(known) - off, "%s%s", i ? ", " : "",
			                        s->reg.entries[i].name);
		snprintf(msg, len, "unknown handler '%.64s' (known: %s)", handler, known);
		return CH_ERR_UNKNOWN_HANDLER;
	}
	if (strcmp(handler, "exec") == 0) {
		if (!o || o->n_argv == 0) {
			snprintf(msg, len, "exec needs a command (argv)");
			return CH_ERR_INVALID;
		}
		if (!handlers_exec_allowed(&s->reg, o->argv[0])) {
			snprintf(msg, len, "exec: '%.200s' is not allowlisted (see [exec] allow)", o->argv[0]);
			return CH_ERR_DENIED;
		}
	}
	if (o && o->restart != CHORUS__RESTART_POLICY__RESTART_TEMPORARY &&
	    o->restart != CHORUS__RESTART_POLICY__RESTART_TRANSIENT) {
		snprintf(msg, len, "unknown restart policy %d", (int)o->restart);
		return CH_ERR_INVALID;
	}
	if (payload_len > PAYLOAD_BYTES_MAX) {
		snprintf(msg, len, "payload of %zu bytes is over the %u-byte limit", payload_len,
		         PAYLOAD_BYTES_MAX);
		return CH_ERR_TOO_LARGE;
	}
	if (o && o->n_require > REQUIRE_TAGS_MAX) {
		snprintf(msg, len, "%zu required tags: at most %u", o->n_require, REQUIRE_TAGS_MAX);
		return CH_ERR_INVALID;
	}
	for (size_t i = 0; o && i < o->n_require; i++) {
		if (!o->require[i][0] || strlen(o->require[i]) > REQUIRE_TAG_BYTES_MAX) {
			snprintf(msg, len, "required tag '%.40s' is empty or longer than %u bytes",
			         o->require[i], REQUIRE_TAG_BYTES_MAX);
			return CH_ERR_INVALID;
		}
	}
	if (o && o->max_attempts > MAX_ATTEMPTS_MAX) {
		snprintf(msg, len, "max_attempts %u is over %u", o->max_attempts, MAX_ATTEMPTS_MAX);
		return CH_ERR_INVALID;
	}
	return 0;
}

/* ---- waiters ---- */

static struct idmap *waiter_map(struct tasks_svc *s, int kind)
{
	return kind == WAIT_TASK ? &s->task_waiters : &s->batch_waiters;
}

static void waiter_unlink(struct tasks_svc *s, struct waiter *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		s->waiters = w->next;
	if (w->next)
		w->next->prev = w->prev;
	w->next = w->prev = NULL;
	struct idmap *m = waiter_map(s, w->kind);
	struct waiter *head = idmap_get(m, w->id);
	if (head == w) {
		if (w->id_next)
			(void)idmap_put(m, w->id, w->id_next); /* replaces: no allocation */
		else
			(void)idmap_del(m, w->id);
	} else {
		for (struct waiter *p = head; p; p = p->id_next) {
			if (p->id_next == w) {
				p->id_next = w->id_next;
				break;
			}
		}
	}
	w->id_next = NULL;
	timerheap_cancel(&s->deadlines, &w->deadline);
}

void waiter_free(struct tasks_svc *s, struct waiter *w)
{
	waiter_unlink(s, w);
	free(w);
}

/* The call's session went away: nobody to answer. */
static void waiter_cancelled(void *arg, struct rpc_call *c)
{
	struct waiter *w = arg;
	(void)c;
	waiter_free(w->svc, w);
}

/* A waiter on id, linked but not parked: NULL when out of memory. With
 * `deadline` it is answered by wait_ms at the latest, else only by the
 * task's end (a watch). */
struct waiter *waiter_new(struct tasks_svc *s, int kind, uint64_t id, uint32_t wait_ms,
                          int deadline)
{
	struct waiter *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->svc = s;
	struct idmap *m = waiter_map(s, kind);
	struct waiter *head = idmap_get(m, id);
	if (wait_ms > WAIT_MS_MAX)
		wait_ms = WAIT_MS_MAX;
	if (idmap_put(m, id, w) != 0 ||
	    (deadline &&
	     timerheap_set(&s->deadlines, &w->deadline, host_now(s->host)->mono_ms + wait_ms) != 0)) {
		if (head)
			(void)idmap_put(m, id, head);
		else
			(void)idmap_del(m, id);
		free(w);
		return NULL;
	}
	w->kind = kind;
	w->id = id;
	w->id_next = head;
	w->next = s->waiters;
	if (s->waiters)
		s->waiters->prev = w;
	s->waiters = w;
	return w;
}

/* Parks c; returns its waiter, or NULL when c was answered (out of memory). */
static struct waiter *park(struct tasks_svc *s, struct rpc_call *c, int kind, uint64_t id,
                           uint32_t wait_ms, int is_submit, uint32_t from, uint32_t max)
{
	struct waiter *w = waiter_new(s, kind, id, wait_ms, 1);
	if (!w) {
		rpc_reply_error(c, CH_ERR_NOMEM, "out of memory");
		return NULL;
	}
	w->from_index = from;
	w->max_results = max;
	w->is_submit = is_submit;
	w->call = rpc_park(c, waiter_cancelled, w);
	if (!w->call) { /* answered with CH_ERR_NOMEM */
		waiter_free(s, w);
		return NULL;
	}
	return w;
}

/* A watch's turn (the task ended, its wait ran out, or the node is
 * closing): the waiter goes first, then its cb gets the task's result as
 * it is now. Its cb may call the port again: watches it drops meanwhile
 * are only marked (watch_depth), so a walk over the waiters that called
 * this one never meets a freed waiter. */
static void watch_fire(struct tasks_svc *s, struct waiter *w)
{
	void (*cb)(void *, int, const Chorus__TaskResult *) = w->watch;
	void *arg = w->watch_arg;
	uint64_t id = w->id;
	waiter_free(s, w);
	const struct task *t;
	struct task *owned = NULL;
	Chorus__TaskResult r;
	char why[96];
	if (task_lookup(s, id, &t, &owned) == 0) {
		codec_result_fill(&r, t);
	} else {
		chorus__task_result__init(&r);
		r.task_id = id;
		r.state = CHORUS__TASK_STATE__TASK_LOST;
		r.abnormal = 1;
		snprintf(why, sizeof(why),
		         "task %" PRIu64 " is not known to its node (never journaled, or purged)", id);
		r.error = why;
	}
	s->watch_depth++;
	cb(arg, 0, &r);
	s->watch_depth--;
	task_free(owned);
}

/* The watches of tasks a failed commit withdrew (withdrawn(), below): told
 * CH_ERR_STORAGE now, outside the core call that withdrew them, rather
 * than after the next commit that works, which on a full disk may be
 * long after their wait (and would then report them LOST). */
static void watches_fail_withdrawn(struct tasks_svc *s)
{
	for (uint32_t i = 0; i < s->withdrawn.n; i++) {
		struct waiter *w = idmap_get(&s->task_waiters, s->withdrawn.v[i]);
		while (w) {
			struct waiter *n = w->id_next;
			if (w->dropped) {
				waiter_free(s, w);
			} else if (w->watch) {
				void (*cb)(void *, int, const Chorus__TaskResult *) = w->watch;
				void *arg = w->watch_arg;
				waiter_free(s, w);
				s->watch_depth++;
				cb(arg, CH_ERR_STORAGE, NULL);
				s->watch_depth--;
			}
			w = n;
		}
	}
	s->withdrawn.n = 0;
}

/* Answers c with the task's current state. */
static void answer_task(struct tasks_svc *s, struct rpc_call *c, uint64_t task_id, int is_submit)
{
	const struct task *t;
	struct task *owned;
	if (task_lookup(s, task_id, &t, &owned) != 0) {
		rpc_reply_error(c, CH_ERR_NOT_FOUND,
		                "no task %" PRIu64 " (unknown, or its result expired)", task_id);
		return;
	}
	Chorus__TaskResult r;
	codec_result_fill(&r, t);
	if (is_submit) {
		Chorus__SubmitResp sr = CHORUS__SUBMIT_RESP__INIT;
		sr.task_id = task_id;
		sr.result = &r;
		rpc_reply_body(c, CHORUS__ENVELOPE__BODY_SUBMIT_RESP, submit_resp, &sr);
	} else {
		Chorus__AwaitResp ar = CHORUS__AWAIT_RESP__INIT;
		ar.result = &r;
		rpc_reply_body(c, CHORUS__ENVELOPE__BODY_AWAIT_RESP, await_resp, &ar);
	}
	task_free(owned);
}


size_t result_bytes(const struct task *t)
{
	/* a generous bound of one TaskResult's packed size */
	return t->output_len + (t->error ? strlen(t->error) : 0) + (t->node ? strlen(t->node) : 0) +
	       (t->handler ? strlen(t->handler) : 0) + 128;
}

static int collect_cb(void *arg, struct task *t)
{
	struct batch_collect *bc = arg;
	if (bc->gap || t->batch_index != bc->expect || !task_state_is_final(t->state) ||
	    (bc->n > 0 && bc->bytes + result_bytes(t) > bc->bytes_max)) {
		bc->gap = 1;
		task_free(t);
		return 1; /* stop: results are contiguous, and a page fits a frame */
	}
	bc->bytes += result_bytes(t);
	bc->tasks[bc->n++] = t;
	bc->expect++;
	return bc->n >= bc->cap;
}

/* A batch that is no longer held (every task final) is read from the
 * journal, whose record counts its finished tasks: a scan of the batch. A
 * client paging through a large one asks many times in a row, so the last
 * one read is kept (a purge forgets it). */
static int batch_get_stored(struct tasks_svc *s, uint64_t batch_id, struct batch *b)
{
	if (s->stored_batch.id == batch_id && batch_id) {
		*b = s->stored_batch;
		return 0;
	}
	int rc = store_batch_get(s->store, batch_id, b);
	if (rc == 0)
		s->stored_batch = *b;
	return rc;
}

/* Answers a batch call if results from its index exist (or force).
 * how: AWAIT_UNORDERED (results of an unordered stream, any index);
 * room_wanted: also answer, maybe without results, when the window of an
 * open batch has that much room. Returns 1 when answered. */
static int answer_batch(struct tasks_svc *s, struct rpc_call *c, uint64_t batch_id, uint32_t from,
                        uint32_t max, int force, unsigned how, uint32_t room_wanted)
{
	struct batch b;
	const struct batch *held = tasks_get_batch(s->tasks, batch_id);
	if (held) {
		b = *held;
	} else if (batch_get_stored(s, batch_id, &b) != 0) {
		rpc_reply_error(c, CH_ERR_NOT_FOUND,
		                "no batch %" PRIu64 " (unknown, or its results expired)", batch_id);
		return 1;
	}
	struct stream *st = (how & AWAIT_UNORDERED) ? stream_find(s, batch_id) : NULL;
	if ((how & AWAIT_UNORDERED) && (!st || !st->unordered)) {
		rpc_reply_error(c, CH_ERR_INVALID,
		                "batch %" PRIu64 " has no unordered stream on this node (not opened "
		                "unordered, or the node restarted): take its results in order",
		                batch_id);
		return 1;
	}
	if (max == 0)
		max = BATCH_RESULTS_DEFAULT;
	if (max > BATCH_RESULTS_MAX)
		max = BATCH_RESULTS_MAX;
	struct batch_collect bc = {.cap = max, .expect = from};
	bc.bytes_max = rpc_reply_bytes_max(c->rpc);
	bc.bytes_max = bc.bytes_max > 1024 ? bc.bytes_max - 1024 : bc.bytes_max;
	bc.tasks = calloc(max, sizeof(*bc.tasks));
	if (!bc.tasks) {
		rpc_reply_error(c, CH_ERR_NOMEM, "out of memory");
		return 1;
	}
	if (st)
		stream_collect(s, st, &bc);
	else if (from < b.total)
		(void)store_batch_tasks(s->store, batch_id, from, max, collect_cb, &bc);
	uint32_t room = b.input_open ? stream_room(s, batch_id) : 0;
	/* Nothing to give yet: wait while more can come (tasks from `from` not
	 * final, a stream's input open or results unacknowledged), unless the
	 * caller wants to hear of room in the window. */
	int more = st ? (b.input_open || b.done < b.total || st->fin_count > 0)
	              : (from < b.total || b.input_open);
	if (bc.n == 0 && !force && more && !(room_wanted && room >= room_wanted)) {
		free(bc.tasks);
		return 0;
	}
	Chorus__TaskResult *rs = calloc(bc.n ? bc.n : 1, sizeof(*rs));
	Chorus__TaskResult **rp = calloc(bc.n ? bc.n : 1, sizeof(*rp));
	if (rs && rp) {
		for (uint32_t i = 0; i < bc.n; i++) {
			codec_result_fill(&rs[i], bc.tasks[i]);
			rp[i] = &rs[i];
		}
		Chorus__BatchAwaitResp br = CHORUS__BATCH_AWAIT_RESP__INIT;
		br.batch_id = batch_id;
		br.total = b.total;
		br.done = b.done;
		br.from_index = st ? 0 : from;
		br.n_results = bc.n;
		br.results = rp;
		br.open = b.input_open != 0;
		br.room = room;
		rpc_reply_body(c, CHORUS__ENVELOPE__BODY_BATCH_AWAIT_RESP, batch_await_resp, &br);
	} else {
		rpc_reply_error(c, CH_ERR_NOMEM, "out of memory");
	}
	for (uint32_t i = 0; i < bc.n; i++)
		task_free(bc.tasks[i]);
	free(bc.tasks);
	free(rs);
	free(rp);
	return 1;
}

/* Tries to answer w; frees it when answered. */
static void waiter_try(struct tasks_svc *s, struct waiter *w, int expired)
{
	int done = 0;
	if (w->dropped) {
		waiter_free(s, w); /* unwatched while a watch's cb ran */
		return;
	}
	if (w->kind == WAIT_TASK) {
		const struct task *t = tasks_get(s->tasks, w->id);
		/* draining: a task a coordinator placed here that has not
		 * started will not start; hand it back at once */
		int handed_back = host_draining(s->host) && t && t->ephemeral && t->state == TASK_QUEUED;
		if (expired || handed_back || !t || task_state_is_final(t->state)) {
			if (w->watch) {
				watch_fire(s, w);
				return;
			}
			answer_task(s, w->call, w->id, w->is_submit);
			done = 1;
		}
	} else {
		done = answer_batch(s, w->call, w->id, w->from_index, w->max_results, expired,
		                    w->await_how, w->room_wanted);
	}
	if (done)
		waiter_free(s, w);
}

/* Every waiter on one id of a kind. */
static void waiters_try_id(struct tasks_svc *s, int kind, uint64_t id)
{
	struct waiter *w = idmap_get(waiter_map(s, kind), id);
	while (w) {
		struct waiter *n = w->id_next;
		waiter_try(s, w, 0);
		w = n;
	}
}

/* After a commit: tasks that ended, batches that progressed, deadlines. */
static void serve_waiters(struct tasks_svc *s)
{
	int closing = host_closing(s->host);
	if (closing || host_draining(s->host)) {
		for (struct waiter *w = s->waiters, *n; w; w = n) {
			n = w->next;
			waiter_try(s, w, closing);
		}
	}
	for (uint32_t i = 0; i < s->ended.n; i++)
		waiters_try_id(s, WAIT_TASK, s->ended.v[i]);
	s->ended.n = 0;
	for (uint32_t i = 0; i < s->progressed.n; i++) {
		waiters_try_id(s, WAIT_BATCH, s->progressed.v[i]);
		/* a stream whose deadline closed it */
		struct stream *st = stream_find(s, s->progressed.v[i]);
		if (st)
			stream_maybe_free(s, st);
	}
	s->progressed.n = 0;
	for (struct timer *t; (t = timerheap_pop_due(&s->deadlines, host_now(s->host)->mono_ms));) {
		struct waiter *w = timer_owner(t, struct waiter, deadline);
		waiter_try(s, w, 1);
	}
}

/* ---- attempts placed here, deduplicated ---- */

static uint64_t placed_key(const uint8_t origin[16], uint64_t task, uint32_t attempt)
{
	uint64_t x = task ^ ((uint64_t)attempt << 40);
	for (int i = 0; i < 16; i++)
		x = (x ^ origin[i]) * 0x100000001b3ULL; /* FNV-1a style */
	x ^= x >> 31;
	return x ? x : 1;
}

static void placed_drop(struct tasks_svc *s, struct placed_rec *r)
{
	if (idmap_get(&s->placed_by_key, r->key) == r)
		(void)idmap_del(&s->placed_by_key, r->key);
	if (idmap_get(&s->placed_by_task, r->task_id) == r)
		(void)idmap_del(&s->placed_by_task, r->task_id);
	if (r->prev)
		r->prev->next = r->next;
	else
		s->placed_head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		s->placed_tail = r->prev;
	s->placed_bytes -= r->final_bytes;
	task_free(r->final);
	free(r);
}

/* Forgets the oldest finished records past their time or over the caps. A
 * record still running is kept (its task is in the table anyway). */
static void placed_expire(struct tasks_svc *s, uint64_t now_ms)
{
	while (s->placed_head && s->placed_head->final &&
	       (s->placed_head->created_ms + PLACED_REC_TTL_MS < now_ms ||
	        (!s->placed_head->owed && (s->placed_by_key.count > PLACED_RECS_MAX ||
	                                   s->placed_bytes > PLACED_RECS_BYTES_MAX))))
		placed_drop(s, s->placed_head);
}

struct placed_rec *placed_find(struct tasks_svc *s, const uint8_t origin[16], uint64_t task,
                               uint32_t attempt)
{
	struct placed_rec *r = idmap_get(&s->placed_by_key, placed_key(origin, task, attempt));
	if (r && r->origin_task == task && r->origin_attempt == attempt &&
	    memcmp(r->origin, origin, 16) == 0)
		return r;
	return NULL;
}

void placed_add(struct tasks_svc *s, const uint8_t origin[16], uint64_t task,
                uint32_t attempt, uint64_t task_id)
{
	struct placed_rec *r = calloc(1, sizeof(*r));
	if (!r)
		return; /* no dedup for this one: at worst, what happened before */
	r->key = placed_key(origin, task, attempt);
	memcpy(r->origin, origin, 16);
	r->origin_task = task;
	r->origin_attempt = attempt;
	r->task_id = task_id;
	r->created_ms = host_now(s->host)->mono_ms;
	struct placed_rec *old = idmap_get(&s->placed_by_key, r->key);
	if (old)
		placed_drop(s, old); /* a hash collision: the newer wins */
	if (idmap_put(&s->placed_by_key, r->key, r) != 0 ||
	    idmap_put(&s->placed_by_task, task_id, r) != 0) {
		(void)idmap_del(&s->placed_by_key, r->key);
		free(r);
		return;
	}
	r->prev = s->placed_tail;
	if (s->placed_tail)
		s->placed_tail->next = r;
	else
		s->placed_head = r;
	s->placed_tail = r;
}

/* ---- request handlers ---- */

/* A request's idempotency key, looked up before anything is admitted.
 * Returns 1 when the key is known (*id set), 0 when it is new, -1 when c
 * was answered with an error (a key too long or naming the other kind, or
 * the journal could not be read). */
int key_find(struct tasks_svc *s, struct rpc_call *c, const ProtobufCBinaryData *key,
                    int kind, uint64_t *id)
{
	if (key->len == 0)
		return 0;
	if (key->len > STORE_KEY_BYTES_MAX) {
		rpc_reply_error(c, CH_ERR_INVALID, "idempotency key of %zu bytes: at most %u",
		                key->len, STORE_KEY_BYTES_MAX);
		return -1;
	}
	int found_kind = 0;
	int rc = store_key_get(s->store, key->data, key->len, &found_kind, id);
	if (rc == CH_ERR_NOT_FOUND)
		return 0;
	if (rc != 0) {
		rpc_reply_error(c, CH_ERR_STORAGE, "could not read the journal");
		return -1;
	}
	if (found_kind != kind) {
		rpc_reply_error(c, CH_ERR_INVALID, "idempotency key already names a %s",
		                found_kind == STORE_KEY_TASK ? "task" : "fan-out");
		return -1;
	}
	return 1;
}

/* Records the key of what was just admitted, in the iteration's
 * transaction: a repeat later in this iteration finds it, a failed commit
 * forgets it with the task. */
int key_record(struct tasks_svc *s, struct rpc_call *c, const ProtobufCBinaryData *key,
                      int kind, uint64_t id)
{
	if (key->len == 0)
		return 0;
	if (store_key_put(s->store, key->data, key->len, kind, id, host_now(s->host)->wall_ms) == 0)
		return 0;
	rpc_reply_error(c, CH_ERR_STORAGE, "the node could not journal the request");
	return -1;
}

/* Leases the ids the next admission hands out (io/ids.h) before it runs.
 * Answers c with CH_ERR_STORAGE and returns -1 when the mark cannot be
 * written (a full disk). */
int ids_lease(struct tasks_svc *s, struct rpc_call *c, uint32_t tasks, uint32_t batches)
{
	uint64_t next_task, next_batch;
	tasks_next_ids(s->tasks, &next_task, &next_batch);
	char err[300];
	if (ids_reserve(host_ids(s->host), next_task + tasks, next_batch + batches, err,
	                sizeof(err)) == 0)
		return 0;
	log_limited(LOG_ERROR, "tasks", "ids-lease", 10000, "cannot lease task ids: %s", err);
	if (c)
		rpc_reply_error(c, CH_ERR_STORAGE, "the node could not journal the request");
	return -1;
}

static void handle_submit(void *svc, struct rpc_call *c, const Chorus__Envelope *env)
{
	struct tasks_svc *s = svc;
	const Chorus__SubmitReq *m = env->submit;
	char msg[600];
	if (!m->task) {
		rpc_reply_error(c, CH_ERR_INVALID, "submit without a task");
		return;
	}
	int rc = spec_check(s, m->task->handler, m->task->opts, m->task->payload.len, msg, sizeof(msg));
	if (rc) {
		log_limited(LOG_WARN, "tasks", "submit-refused", 10000, "submit refused: %s", msg);
		rpc_reply_error(c, rc, "%s", msg);
		return;
	}
	if (m->origin.len && m->origin.len != SEAL_ID_BYTES) {
		rpc_reply_error(c, CH_ERR_INVALID, "origin must be a 16-byte node id");
		return;
	}
	if (m->origin.len && !(c->role & RPC_ROLE_PEER)) {
		/* placing work as a coordinator is a member's right */
		log_limited(LOG_WARN, "tasks", "origin-denied", 10000,
		            "refused a placed task from a session without the peer role");
		rpc_reply_error(c, CH_ERR_DENIED, "only a cluster member may place tasks here");
		return;
	}
	if (m->origin.len) {
		/* the same attempt again (a resend under a new session): never a
		 * second run; answer from the first */
		struct placed_rec *pr = placed_find(s, m->origin.data, m->origin_task, m->origin_attempt);
		if (pr && pr->final) {
			Chorus__TaskResult r;
			codec_result_fill(&r, pr->final);
			Chorus__SubmitResp sr = CHORUS__SUBMIT_RESP__INIT;
			sr.task_id = pr->task_id;
			sr.result = m->wait_ms ? &r : NULL;
			rpc_reply_body(c, CHORUS__ENVELOPE__BODY_SUBMIT_RESP, submit_resp, &sr);
			return;
		}
		if (pr && tasks_get(s->tasks, pr->task_id)) {
			if (m->wait_ms) {
				park(s, c, WAIT_TASK, pr->task_id, m->wait_ms, 1, 0, 0);
				return;
			}
			Chorus__SubmitResp sr = CHORUS__SUBMIT_RESP__INIT;
			sr.task_id = pr->task_id;
			rpc_reply_body(c, CHORUS__ENVELOPE__BODY_SUBMIT_RESP, submit_resp, &sr);
			return;
		}
	}
	const ProtobufCBinaryData no_key = {0, NULL};
	const ProtobufCBinaryData *key = m->origin.len ? &no_key : &m->idempotency_key;
	uint64_t first = 0;
	int known = key_find(s, c, key, STORE_KEY_TASK, &first);
	if (known < 0)
		return;
	if (known) {
		/* a repeat (a resend under a new session, a retry after a node
		 * restart, the application's own key): the first one's answer */
		log_debug("tasks", "submit with a known key: task %" PRIu64, first);
		const struct task *ft = tasks_get(s->tasks, first);
		if (m->wait_ms && ft && !task_state_is_final(ft->state) && !host_closing(s->host)) {
			park(s, c, WAIT_TASK, first, m->wait_ms, 1, 0, 0);
		} else if (m->wait_ms) {
			answer_task(s, c, first, 1);
		} else {
			Chorus__SubmitResp sr = CHORUS__SUBMIT_RESP__INIT;
			sr.task_id = first;
			rpc_reply_body(c, CHORUS__ENVELOPE__BODY_SUBMIT_RESP, submit_resp, &sr);
		}
		return;
	}
	struct task *t = codec_task_from_spec(m->task->handler, m->task->payload.data,
	                                      m->task->payload.len, m->task->opts,
	                                      handler_pool(s, m->task->handler));
	if (!t) {
		rpc_reply_error(c, CH_ERR_NOMEM, "out of memory");
		return;
	}
	if (m->origin.len) {
		/* placed here by a coordinator: run once, journal nothing, the
		 * coordinator owns the task and its restart policy */
		t->ephemeral = 1;
		memcpy(t->origin, m->origin.data, SEAL_ID_BYTES);
		t->origin_task = m->origin_task;
		t->opts.restart = TASK_RESTART_TEMPORARY;
		t->opts.max_attempts = 1;
	}
	uint64_t id = 0;
	int ephemeral = t->ephemeral;
	if (ids_lease(s, c, 1, 0) != 0) {
		task_free(t);
		return;
	}
	rc = tasks_submit(s->tasks, t, host_now(s->host), &id);
	if (rc == 0 && ephemeral)
		placed_add(s, m->origin.data, m->origin_task, m->origin_attempt, id);
	if (rc == 0 && key_record(s, c, key, STORE_KEY_TASK, id) != 0) {
		int gone = tasks_withdraw(s->tasks, id);
		assert(gone == 0);
		(void)gone;
		return;
	}
	if (rc == 0 && !ephemeral)
		s->journaled_submit = 1;
	if (rc) {
		task_free(t);
		log_limited(LOG_WARN, "tasks", "queue-full", 10000, "queue full (%u tasks): submit refused",
		            s->cfg->queue_max);
		rpc_reply_error(c, err_to_public(rc),
		                "queue full (%u tasks held): nothing accepted, retry later",
		                s->cfg->queue_max);
		return;
	}
	if (m->wait_ms) {
		park(s, c, WAIT_TASK, id, m->wait_ms, 1, 0, 0);
		return;
	}
	Chorus__SubmitResp sr = CHORUS__SUBMIT_RESP__INIT;
	sr.task_id = id;
	rpc_reply_body(c, CHORUS__ENVELOPE__BODY_SUBMIT_RESP, submit_resp, &sr);
}

static void handle_map(void *svc, struct rpc_call *c, const Chorus__Envelope *env)
{
	struct tasks_svc *s = svc;
	const Chorus__MapReq *m = env->map;
	char msg[600];
	if (m->stream) {
		handle_map_stream(s, c, m);
		return;
	}
	size_t biggest = 0;
	for (size_t i = 0; i < m->n_payloads; i++)
		if (m->payloads[i].len > biggest)
			biggest = m->payloads[i].len;
	int rc = spec_check(s, m->handler, m->opts, biggest, msg, sizeof(msg));
	if (rc) {
		log_limited(LOG_WARN, "tasks", "map-refused", 10000, "fan-out refused: %s", msg);
		rpc_reply_error(c, rc, "%s", msg);
		return;
	}
	if (m->n_payloads == 0 || m->n_payloads > s->cfg->queue_max) {
		rpc_reply_error(c, CH_ERR_INVALID, "fan-out of %zu tasks: must be 1..%u", m->n_payloads,
		                s->cfg->queue_max);
		return;
	}
	uint32_t n = (uint32_t)m->n_payloads;
	uint64_t first = 0;
	int known = key_find(s, c, &m->idempotency_key, STORE_KEY_BATCH, &first);
	if (known < 0)
		return;
	if (known) {
		log_debug("tasks", "fan-out with a known key: batch %" PRIu64, first);
		Chorus__MapResp mr = CHORUS__MAP_RESP__INIT;
		mr.batch_id = first;
		mr.count = batch_total(s, first);
		rpc_reply_body(c, CHORUS__ENVELOPE__BODY_MAP_RESP, map_resp, &mr);
		return;
	}
	struct task **tv = calloc(n, sizeof(*tv));
	if (!tv) {
		rpc_reply_error(c, CH_ERR_NOMEM, "out of memory");
		return;
	}
	uint32_t pool = handler_pool(s, m->handler);
	for (uint32_t i = 0; i < n; i++) {
		tv[i] = codec_task_from_spec(m->handler, m->payloads[i].data, m->payloads[i].len, m->opts,
		                             pool);
		if (!tv[i]) {
			for (uint32_t j = 0; j < i; j++)
				task_free(tv[j]);
			free(tv);
			rpc_reply_error(c, CH_ERR_NOMEM, "out of memory");
			return;
		}
	}
	uint64_t batch_id = 0;
	if (ids_lease(s, c, n, 1) != 0) {
		for (uint32_t i = 0; i < n; i++)
			task_free(tv[i]);
		free(tv);
		return;
	}
	rc = tasks_submit_batch(s->tasks, tv, n, m->max_concurrency, m->deadline_ms,
	                        host_now(s->host), &batch_id);
	if (rc) {
		for (uint32_t i = 0; i < n; i++)
			task_free(tv[i]);
		free(tv);
		rpc_reply_error(c, err_to_public(rc),
		                "queue full: a fan-out of %u tasks does not fit (limit %u held); nothing "
		                "accepted",
		                n, s->cfg->queue_max);
		return;
	}
	free(tv);
	fanout_begin(s, batch_id, m->handler);
	if (key_record(s, c, &m->idempotency_key, STORE_KEY_BATCH, batch_id) != 0) {
		int gone = tasks_withdraw_batch(s->tasks, batch_id);
		assert(gone == 0);
		(void)gone;
		return;
	}
	Chorus__MapResp mr = CHORUS__MAP_RESP__INIT;
	mr.batch_id = batch_id;
	mr.count = n;
	rpc_reply_body(c, CHORUS__ENVELOPE__BODY_MAP_RESP, map_resp, &mr);
}

static void handle_await(void *svc, struct rpc_call *c, const Chorus__Envelope *env)
{
	struct tasks_svc *s = svc;
	const Chorus__AwaitReq *m = env->await;
	const struct task *t = tasks_get(s->tasks, m->task_id);
	if (t && !task_state_is_final(t->state) && m->wait_ms && !host_closing(s->host)) {
		park(s, c, WAIT_TASK, m->task_id, m->wait_ms, 0, 0, 0);
		return;
	}
	answer_task(s, c, m->task_id, 0);
}

static void handle_batch_await(void *svc, struct rpc_call *c, const Chorus__Envelope *env)
{
	struct tasks_svc *s = svc;
	const Chorus__BatchAwaitReq *m = env->batch_await;
	int force = m->wait_ms == 0 || host_closing(s->host);
	unsigned how = m->unordered ? AWAIT_UNORDERED : 0;
	struct stream *st = stream_find(s, m->batch_id);
	if (m->unordered && st && st->unordered) {
		/* results the client has: forgotten here (they are in the journal) */
		for (size_t i = 0; i < m->n_acks; i++)
			stream_ack(st, m->acks[i]);
	}
	if (!answer_batch(s, c, m->batch_id, m->from_index, m->max_results, force, how,
	                  m->room_wanted)) {
		struct waiter *w = park(s, c, WAIT_BATCH, m->batch_id, m->wait_ms, 0, m->from_index,
		                        m->max_results);
		if (w) {
			w->await_how = how;
			w->room_wanted = m->room_wanted;
		}
	}
	if (m->unordered && st && st->unordered)
		stream_maybe_free(s, st);
}

static void handle_cancel(void *svc, struct rpc_call *c, const Chorus__Envelope *env)
{
	struct tasks_svc *s = svc;
	const Chorus__CancelReq *m = env->cancel;
	Chorus__CancelResp cr = CHORUS__CANCEL_RESP__INIT;
	const struct now *now = host_now(s->host);
	if (m->origin.len && !(c->role & RPC_ROLE_PEER)) {
		rpc_reply_error(c, CH_ERR_DENIED, "only a cluster member may cancel placed tasks");
		return;
	}
	if (m->origin.len == SEAL_ID_BYTES) {
		const struct task *t = tasks_find_origin(s->tasks, m->origin.data, m->origin_task);
		if (t && tasks_cancel(s->tasks, t->id, now) == 0)
			cr.cancelled = 1;
	}
	if (m->batch_id) {
		if (!tasks_get_batch(s->tasks, m->batch_id)) {
			struct batch b;
			if (store_batch_get(s->store, m->batch_id, &b) != 0) {
				rpc_reply_error(c, CH_ERR_NOT_FOUND, "no batch %" PRIu64, m->batch_id);
				return;
			}
		}
		cr.cancelled = tasks_cancel_batch(s->tasks, m->batch_id, now);
		if (cr.cancelled > 0) /* a finished batch stays "done" */
			fanout_cancelled(s, m->batch_id);
	}
	if (m->task_id) {
		const struct task *t;
		struct task *owned;
		if (task_lookup(s, m->task_id, &t, &owned) != 0) {
			rpc_reply_error(c, CH_ERR_NOT_FOUND, "no task %" PRIu64, m->task_id);
			return;
		}
		task_free(owned);
		if (tasks_cancel(s->tasks, m->task_id, now) == 0)
			cr.cancelled++;
		t = tasks_get(s->tasks, m->task_id);
		if (t) {
			cr.state = codec_state_to_wire(t->state);
		} else if (store_task_get(s->store, m->task_id, &owned) == 0) {
			cr.state = codec_state_to_wire(owned->state);
			task_free(owned);
		}
	}
	rpc_reply_body(c, CHORUS__ENVELOPE__BODY_CANCEL_RESP, cancel_resp, &cr);
}

struct list_collect {
	struct task **tasks;
	uint32_t n, cap;
	size_t bytes, bytes_max;
};

static int list_cb(void *arg, struct task *t)
{
	struct list_collect *lc = arg;
	if (lc->n >= lc->cap || (lc->n > 0 && lc->bytes + result_bytes(t) > lc->bytes_max)) {
		task_free(t);
		return 1;
	}
	lc->bytes += result_bytes(t);
	lc->tasks[lc->n++] = t;
	return 0;
}

/* ListReq.batches: the fan-outs this node coordinates (tasks_fanouts.c). */
static void list_batches(struct tasks_svc *s, struct rpc_call *c, uint32_t limit)
{
	Chorus__BatchInfo *v = NULL;
	size_t n = 0;
	if (fanouts_list(s, limit, &v, &n) != 0) {
		rpc_reply_error(c, CH_ERR_NOMEM, "out of memory");
		return;
	}
	Chorus__BatchInfo **vp = calloc(n ? n : 1, sizeof(*vp));
	if (!vp) {
		free(v);
		rpc_reply_error(c, CH_ERR_NOMEM, "out of memory");
		return;
	}
	for (size_t i = 0; i < n; i++)
		vp[i] = &v[i];
	Chorus__ListResp lr = CHORUS__LIST_RESP__INIT;
	lr.n_batches = n;
	lr.batches = vp;
	rpc_reply_body(c, CHORUS__ENVELOPE__BODY_LIST_RESP, list_resp, &lr);
	free(vp);
	free(v);
}

static void handle_list(void *svc, struct rpc_call *c, const Chorus__Envelope *env)
{
	struct tasks_svc *s = svc;
	const Chorus__ListReq *m = env->list;
	uint32_t limit = m->limit ? m->limit : 50;
	if (limit > LIST_LIMIT_MAX)
		limit = LIST_LIMIT_MAX;
	if (m->batches) {
		list_batches(s, c, limit);
		return;
	}
	struct list_collect lc = {.cap = limit};
	lc.bytes_max = rpc_reply_bytes_max(c->rpc);
	lc.bytes_max = lc.bytes_max > 1024 ? lc.bytes_max - 1024 : lc.bytes_max;
	lc.tasks = calloc(limit, sizeof(*lc.tasks));
	Chorus__TaskResult *rs = calloc(limit, sizeof(*rs));
	Chorus__TaskResult **rp = calloc(limit, sizeof(*rp));
	if (!lc.tasks || !rs || !rp) {
		free(lc.tasks);
		free(rs);
		free(rp);
		rpc_reply_error(c, CH_ERR_NOMEM, "out of memory");
		return;
	}
	int state = (int)m->state;
	if (state < 0 || state > TASK_LOST)
		state = 0;
	if (store_task_list(s->store, state, limit, list_cb, &lc) != 0) {
		rpc_reply_error(c, CH_ERR_STORAGE, "could not read the journal");
	} else {
		for (uint32_t i = 0; i < lc.n; i++) {
			codec_result_fill(&rs[i], lc.tasks[i]);
			rp[i] = &rs[i];
		}
		Chorus__ListResp lr = CHORUS__LIST_RESP__INIT;
		lr.n_tasks = lc.n;
		lr.tasks = rp;
		rpc_reply_body(c, CHORUS__ENVELOPE__BODY_LIST_RESP, list_resp, &lr);
	}
	for (uint32_t i = 0; i < lc.n; i++)
		task_free(lc.tasks[i]);
	free(lc.tasks);
	free(rs);
	free(rp);
}

/* ---- core effects ---- */

static int fx_dispatch(void *ctx, struct task *t)
{
	struct tasks_svc *s = ctx;
	/* Fan-out tasks and tasks that require tags go wherever placement
	 * says; single tasks, tasks of named pools and tasks placed here by
	 * another coordinator run here. */
	if (s->placement && !t->ephemeral && t->pool == 0 && (t->batch_id || t->require_count)) {
		/* jobs held here (the default pool may queue beyond prefetch
		 * while its jobs are short: its free slots say nothing then) */
		struct workers_pool_status ws;
		workers_pool_status(s->workers, 0, &ws);
		uint32_t held = ws.busy + ws.queued;
		int where = s->placement->place(s->placement->ctx, t, held, host_now(s->host));
		if (where == 1) {
			if (t->opts.restart == TASK_RESTART_TEMPORARY)
				s->temporary_dispatches++; /* the test hook counts it too */
			return 0;
		}
		if (where == 2)
			return 1;
		if (where < 0)
			return -1;
	}
	struct workers_job job = {
		.task_id = t->id,
		.handler = t->handler,
		.payload = t->payload,
		.payload_len = t->payload_len,
		.argv = (const char *const *)t->argv,
		.timeout_ms = t->opts.timeout_ms,
		/* a temporary task never starts twice: its worker gets it once
		 * the commit that journals it `running` is done (a crash before
		 * then finds it queued and runs it once; after, reports it lost).
		 * A task placed here by another coordinator is not journaled
		 * here: its coordinator's key makes a second placement of the
		 * same attempt join the first. */
		.hold = t->opts.restart == TASK_RESTART_TEMPORARY && !t->ephemeral,
	};
	int rc = workers_dispatch(s->workers, t->pool, &job);
	if (rc == 0)
		t->timeout_at_start = 1; /* the worker says when it starts */
	if (rc == 0 && t->opts.restart == TASK_RESTART_TEMPORARY && !t->ephemeral)
		s->temporary_dispatches++;
	if (rc == WORKERS_ERR_JOB_TOO_BIG) {
		log_error("workers", "task %" PRIu64 ": job too large for a worker", t->id);
		return 1;
	}
	return rc;
}

static void fx_kill(void *ctx, const struct task *t)
{
	struct tasks_svc *s = ctx;
	if (s->placement && s->placement->placed_remotely(s->placement->ctx, t->id)) {
		s->placement->kill(s->placement->ctx, t);
		return;
	}
	if (workers_kill_task(s->workers, t->id) != 0)
		log_warn("tasks", "task %" PRIu64 ": no worker holds it to kill", t->id);
}

static void fx_final(void *ctx, const struct task *t)
{
	struct tasks_svc *s = ctx;
	tasks_metrics_final(s, t);
	idvec_push(s, &s->ended, t->id);
	if (t->batch_id) {
		stream_on_final(s, t);
		if (!t->ephemeral)
			fanout_on_final(s, t);
	}
	if (t->ephemeral) {
		/* keep its outcome for a resend of the same attempt */
		struct placed_rec *pr = idmap_get(&s->placed_by_task, t->id);
		if (pr && !pr->final) {
			pr->final = task_clone(t);
			if (pr->final) {
				free(pr->final->payload); /* the outcome is what a resend needs */
				pr->final->payload = NULL;
				pr->final->payload_len = 0;
				pr->final_bytes = sizeof(*pr->final) + pr->final->output_len +
				                  (pr->final->error ? strlen(pr->final->error) : 0);
				s->placed_bytes += pr->final_bytes;
			}
		}
	}
	if (t->state != TASK_SUCCEEDED)
		log_msg(t->state == TASK_CANCELLED ? LOG_INFO : LOG_WARN, "tasks",
		        "task %" PRIu64 " (%s) %s after %u attempt(s): %s", t->id, t->handler,
		        task_state_name(t->state), t->attempts, t->error ? t->error : "");
	/* an event where the task was submitted (not where a peer ran it) */
	if (!t->ephemeral && (t->state == TASK_FAILED || t->state == TASK_TIMED_OUT ||
	                      t->state == TASK_LOST)) {
		char id[24];
		snprintf(id, sizeof(id), "%" PRIu64, t->id);
		host_event(s->host,
		           t->state == TASK_FAILED      ? "task_failed"
		           : t->state == TASK_TIMED_OUT ? "task_timed_out"
		                                        : "task_lost",
		           id, "%s: %s after %u attempt(s)%s%s", t->handler, task_state_name(t->state),
		           t->attempts, t->error ? ": " : "", t->error ? t->error : "");
	}
}

static void fx_batch_progress(void *ctx, const struct batch *b)
{
	struct tasks_svc *s = ctx;
	idvec_push(s, &s->progressed, b->id);
	fanout_on_progress(s, b->id);
}

/* ---- worker events (delivered outside core calls) ---- */

static void ev_started(void *ctx, uint64_t task_id, uint64_t now_ms)
{
	struct tasks_svc *s = ctx;
	(void)now_ms;
	tasks_on_started(s->tasks, task_id, host_now(s->host));
}

static void ev_result(void *ctx, uint64_t task_id, int ok, const uint8_t *output, size_t output_len,
                      int32_t exit_code, const char *error, uint64_t now_ms)
{
	struct tasks_svc *s = ctx;
	(void)now_ms;
	tasks_on_result(s->tasks, task_id, ok, output, output_len, exit_code, error, s->cfg->name,
	                host_now(s->host));
}

static void ev_lost(void *ctx, uint64_t task_id, int was_running, const char *why, uint64_t now_ms)
{
	struct tasks_svc *s = ctx;
	(void)now_ms;
	if (was_running)
		log_warn("workers", "task %" PRIu64 ": %s", task_id, why ? why : "worker lost");
	tasks_on_worker_lost(s->tasks, task_id, was_running, why, host_now(s->host));
}

static void ev_withdrawn(void *ctx, uint64_t task_id, uint64_t now_ms)
{
	struct tasks_svc *s = ctx;
	(void)now_ms;
	const struct task *t = tasks_get(s->tasks, task_id);
	if (t && t->ephemeral) {
		/* its coordinator reads "not started" and places it elsewhere */
		(void)tasks_on_handed_back(s->tasks, task_id, host_now(s->host));
		return;
	}
	/* our own task: back to the head of its queue, no attempt charged */
	tasks_on_worker_lost(s->tasks, task_id, 0, "withdrawn: the node was held up",
	                     host_now(s->host));
}

/* ---- the task_sink port: outcomes of attempts placed on other members ---- */

static void sink_outcome(void *ctx, const struct remote_outcome *o, const struct now *now)
{
	struct tasks_svc *s = ctx;
	char why[512];
	const struct now *cn = now;
	const struct task *t = tasks_get(s->tasks, o->task_id);
	if (!t)
		return;
	if (o->code != 0) {
		if (o->code == CH_ERR_FULL || o->code == CH_ERR_SHUTTING_DOWN) {
			/* refused before it ran: place it again, no attempt charged */
			tasks_on_worker_lost(s->tasks, o->task_id, 0, o->err, cn);
		} else if (o->code == CH_ERR_UNKNOWN_HANDLER || o->code == CH_ERR_DENIED ||
		           o->code == CH_ERR_INVALID || o->code == CH_ERR_TOO_LARGE) {
			snprintf(why, sizeof(why), "refused by %s: %s", o->member_name, o->err);
			tasks_on_result(s->tasks, o->task_id, 0, NULL, 0, 0, why, o->member_name, cn);
		} else {
			snprintf(why, sizeof(why), "lost contact with %s: %s", o->member_name, o->err);
			tasks_on_lost(s->tasks, o->task_id, TASK_LOST, why, cn);
		}
		return;
	}
	const Chorus__TaskResult *r = o->result;
	if (!r) {
		snprintf(why, sizeof(why), "%s answered without a result", o->member_name);
		tasks_on_lost(s->tasks, o->task_id, TASK_LOST, why, cn);
		return;
	}
	const char *node = r->node && *r->node ? r->node : o->member_name;
	int cancel_for_timeout = t->kill_requested && t->kill_reason == TASK_TIMED_OUT;
	switch (codec_state_from_wire(r->state)) {
	case TASK_SUCCEEDED:
		tasks_on_result(s->tasks, o->task_id, 1, r->output.data, r->output.len, r->exit_code,
		                NULL, node, cn);
		break;
	case TASK_FAILED:
		if (r->abnormal) /* its worker crashed there: the restart policy applies */
			tasks_on_lost(s->tasks, o->task_id, TASK_FAILED, r->error, cn);
		else
			tasks_on_result(s->tasks, o->task_id, 0, r->output.data, r->output.len,
			                r->exit_code, r->error, node, cn);
		break;
	case TASK_TIMED_OUT:
		tasks_on_lost(s->tasks, o->task_id, TASK_TIMED_OUT, r->error, cn);
		break;
	case TASK_CANCELLED:
		tasks_on_lost(s->tasks, o->task_id, cancel_for_timeout ? TASK_TIMED_OUT : TASK_FAILED,
		              cancel_for_timeout ? "timed out: cancelled on its node"
		                                 : "cancelled on its node",
		              cn);
		break;
	case TASK_QUEUED:
		/* it never started there (the member is draining): run it
		 * elsewhere, no attempt charged */
		snprintf(why, sizeof(why), "not started on %s", o->member_name);
		tasks_on_worker_lost(s->tasks, o->task_id, 0, why, cn);
		break;
	default:
		snprintf(why, sizeof(why), "%s gave no final state (%s)", o->member_name,
		         task_state_name(codec_state_from_wire(r->state)));
		tasks_on_lost(s->tasks, o->task_id, TASK_LOST, why, cn);
		break;
	}
}

static void sink_member_lost(void *ctx, uint64_t task_id, const char *why, const struct now *now)
{
	struct tasks_svc *s = ctx;
	tasks_on_lost(s->tasks, task_id, TASK_LOST, why, now);
}

static void sink_late_outcome(void *ctx, const struct remote_outcome *o, const struct now *now)
{
	struct tasks_svc *s = ctx;
	const Chorus__TaskResult *r = o->result;
	if (!r)
		return;
	int state = codec_state_from_wire(r->state);
	/* only a real answer counts: a success, or the handler's own failure */
	int ok = state == TASK_SUCCEEDED;
	if (!ok && !(state == TASK_FAILED && !r->abnormal))
		return;
	const char *node = r->node && *r->node ? r->node : o->member_name;
	if (tasks_on_late_result(s->tasks, o->task_id, ok, r->output.data, r->output.len,
	                         r->exit_code, ok ? NULL : r->error, node, now))
		log_info("tasks", "task %" PRIu64 ": %s answered after it was given up for lost: its "
		                  "result is the task's, the retry withdrawn",
		         o->task_id, o->member_name);
}

/* ---- the task_submit port: the schedule service's occurrences, the cache's
 * computes ---- */

static int port_submit(void *ctx, const Chorus__TaskSpec *spec, const char *key, uint64_t *task_id,
                       char *err, size_t err_len)
{
	struct tasks_svc *s = ctx;
	size_t klen = key ? strlen(key) : 0;
	if (klen == 0 || klen > STORE_KEY_BYTES_MAX) {
		snprintf(err, err_len, "an occurrence needs a key of 1 to %u bytes", STORE_KEY_BYTES_MAX);
		return CH_ERR_INVALID;
	}
	if (host_draining(s->host)) {
		snprintf(err, err_len, "the node is shutting down");
		return CH_ERR_SHUTTING_DOWN;
	}
	int kind = 0;
	uint64_t first = 0;
	int rc = store_key_get(s->store, key, klen, &kind, &first);
	if (rc == 0) {
		if (kind != STORE_KEY_TASK) {
			snprintf(err, err_len, "the key names a fan-out");
			return CH_ERR_INVALID;
		}
		*task_id = first; /* submitted before: the same task */
		return 0;
	}
	if (rc != CH_ERR_NOT_FOUND) {
		snprintf(err, err_len, "could not read the journal");
		return CH_ERR_STORAGE;
	}
	rc = spec_check(s, spec->handler, spec->opts, spec->payload.len, err, err_len);
	if (rc)
		return rc;
	struct task *t = codec_task_from_spec(spec->handler, spec->payload.data, spec->payload.len,
	                                      spec->opts, handler_pool(s, spec->handler));
	if (!t) {
		snprintf(err, err_len, "out of memory");
		return CH_ERR_NOMEM;
	}
	if (ids_lease(s, NULL, 1, 0) != 0) {
		task_free(t);
		snprintf(err, err_len, "the node could not journal the request");
		return CH_ERR_STORAGE;
	}
	uint64_t id = 0;
	rc = tasks_submit(s->tasks, t, host_now(s->host), &id);
	if (rc) {
		task_free(t);
		snprintf(err, err_len, "queue full (%u tasks held)", s->cfg->queue_max);
		return err_to_public(rc);
	}
	if (store_key_put(s->store, key, klen, STORE_KEY_TASK, id, host_now(s->host)->wall_ms) != 0) {
		(void)tasks_withdraw(s->tasks, id);
		snprintf(err, err_len, "the node could not journal the request");
		return CH_ERR_STORAGE;
	}
	s->journaled_submit = 1;
	*task_id = id;
	return 0;
}

static int port_state(void *ctx, uint64_t task_id)
{
	struct tasks_svc *s = ctx;
	const struct task *t = tasks_get(s->tasks, task_id);
	if (t)
		return t->state;
	struct task *st = NULL;
	if (store_task_get(s->store, task_id, &st) == 0 && st) {
		int state = st->state;
		task_free(st);
		return state;
	}
	return -1;
}

static void port_cancel(void *ctx, uint64_t task_id)
{
	struct tasks_svc *s = ctx;
	(void)tasks_cancel(s->tasks, task_id, host_now(s->host));
}

static int port_watch(void *ctx, uint64_t task_id, uint32_t wait_ms,
                      void (*cb)(void *arg, int code, const Chorus__TaskResult *r), void *arg)
{
	struct tasks_svc *s = ctx;
	if (!cb)
		return CH_ERR_INVALID;
	const struct task *t = tasks_get(s->tasks, task_id);
	int final = 1; /* a task the table no longer holds has ended */
	if (t) {
		final = task_state_is_final(t->state);
	} else {
		struct task *st = NULL;
		if (store_task_get(s->store, task_id, &st) != 0 || !st)
			return CH_ERR_NOT_FOUND;
		task_free(st);
	}
	struct waiter *w = waiter_new(s, WAIT_TASK, task_id, wait_ms, wait_ms > 0);
	if (!w)
		return CH_ERR_NOMEM;
	w->watch = cb;
	w->watch_arg = arg;
	if (final)
		idvec_push(s, &s->ended, task_id); /* told after the next commit */
	return 0;
}

static void port_unwatch(void *ctx, uint64_t task_id, void *arg)
{
	struct tasks_svc *s = ctx;
	for (struct waiter *w = idmap_get(&s->task_waiters, task_id); w; w = w->id_next) {
		if (!w->watch || w->dropped || w->watch_arg != arg)
			continue;
		if (s->watch_depth > 0)
			w->dropped = 1; /* a walk over the waiters may hold it */
		else
			waiter_free(s, w);
		return;
	}
}

/* A member that placed work here became suspect or dead (or left): what it
 * placed here and that has not started is handed back. A member cut off
 * from its coordinator keeps running (its loop is fine, so the pause epoch
 * does not move), and its coordinator is about to place that work again;
 * handing it back now is what keeps the copy from running twice. */
static void sink_origin_unreachable(void *ctx, const uint8_t *id, const struct now *now)
{
	struct tasks_svc *s = ctx;
	uint32_t queued = 0, waiting = 0;
	for (struct placed_rec *pr = s->placed_head, *n; pr; pr = n) {
		n = pr->next;
		if (pr->final || (id && memcmp(pr->origin, id, sizeof(pr->origin)) != 0))
			continue;
		const struct task *t = tasks_get(s->tasks, pr->task_id);
		if (!t)
			continue;
		if (t->state == TASK_QUEUED)
			queued += (uint32_t)tasks_on_handed_back(s->tasks, pr->task_id, now);
		else if (!waiting && t->state == TASK_RUNNING &&
		         workers_job_waiting(s->workers, pr->task_id))
			waiting = 1; /* one is enough: the new epoch hands back them all */
	}
	/* prefetched jobs: the worker decides when it reaches them; a new
	 * epoch hands back every job not started yet (other coordinators'
	 * and our own too: they are placed or queued again, no attempt
	 * charged; a member going missing is rare) */
	if (waiting)
		workers_new_epoch(s->workers);
	if (queued || waiting) {
		char hex[17] = "any";
		if (id)
			for (int i = 0; i < 8; i++)
				snprintf(hex + 2 * i, 3, "%02x", id[i]);
		log_warn("tasks", "coordinator %s is unreachable: the tasks it placed here and that have "
		                  "not started are handed back (%" PRIu32 " queued%s)",
		         hex, queued, waiting ? ", and the jobs prefetched by workers" : "");
	}
}

static uint32_t sink_local_load(void *ctx)
{
	struct tasks_svc *s = ctx;
	return s->workers ? workers_jobs_held(s->workers) : 0;
}

/* ---- start-up ---- */

struct recover_ctx {
	struct tasks_svc *s;
	uint64_t count;
	int failed; /* a task could not be taken (the store's loop does not say) */
};

static int recover_batch_cb(void *arg, const struct batch *b)
{
	struct recover_ctx *rc = arg;
	int r = tasks_recover_batch(rc->s->tasks, b, host_now(rc->s->host));
	if (r)
		rc->failed = 1;
	return r;
}

static int recover_task_cb(void *arg, struct task *t)
{
	struct recover_ctx *rc = arg;
	if (t->pool >= rc->s->pool_count || !handlers_find(&rc->s->reg, t->handler)) {
		/* the pool or handler is gone since (config changed): run it in
		 * the default pool, where an unknown handler fails cleanly */
		t->pool = 0;
	}
	int r = tasks_recover(rc->s->tasks, t, host_now(rc->s->host));
	if (r) {
		task_free(t); /* not taken */
		rc->failed = 1;
		return r;
	}
	rc->count++;
	return 0;
}

static int workers_setup(struct tasks_svc *s, char *err, size_t err_len)
{
	const struct config *cfg = s->cfg;
	struct workers_config wc = {0};
	wc.pool_count = 1 + cfg->pool_count;
	snprintf(wc.pools[0].name, sizeof(wc.pools[0].name), "default");
	wc.pools[0].worker_count = cfg->workers;
	for (uint32_t p = 0; p < cfg->pool_count; p++) {
		snprintf(wc.pools[p + 1].name, sizeof(wc.pools[p + 1].name), "%s", cfg->pools[p].name);
		wc.pools[p + 1].worker_count = cfg->pools[p].workers;
	}
	for (uint32_t p = 0; p < wc.pool_count; p++)
		snprintf(s->pool_names[p], sizeof(s->pool_names[p]), "%s", wc.pools[p].name);
	s->pool_count = wc.pool_count;
	wc.prefetch = cfg->prefetch;
	/* deeper queues while a pool's jobs are short (io/workers.h) */
	wc.prefetch_short = WORKERS_PREFETCH_SHORT_DEFAULT;
	wc.intensity = cfg->intensity;
	wc.period_ms = cfg->period_ms;
	wc.degraded_backoff_ms = 1000;
	wc.output_max = cfg->output_max;
	struct workers_events ev = {s, ev_started, ev_result, ev_lost, ev_withdrawn};
	return workers_start(&s->workers, &wc, &s->reg, &ev, err, err_len);
}

static const struct req_spec REQUESTS[] = {
	{CHORUS__ENVELOPE__BODY_SUBMIT, "submit", handle_submit, RPC_ROLE_CLIENT | RPC_ROLE_PEER,
	 REQ_REFUSE_DRAINING | REQ_PERSIST | REQ_MAY_PARK},
	{CHORUS__ENVELOPE__BODY_MAP, "map", handle_map, RPC_ROLE_CLIENT,
	 REQ_REFUSE_DRAINING | REQ_PERSIST},
	{CHORUS__ENVELOPE__BODY_MAP_APPEND, "map_append", handle_map_append, RPC_ROLE_CLIENT,
	 REQ_REFUSE_DRAINING | REQ_PERSIST},
	{CHORUS__ENVELOPE__BODY_AWAIT, "await", handle_await, RPC_ROLE_CLIENT, REQ_MAY_PARK},
	{CHORUS__ENVELOPE__BODY_BATCH_AWAIT, "batch_await", handle_batch_await, RPC_ROLE_CLIENT,
	 REQ_MAY_PARK},
	{CHORUS__ENVELOPE__BODY_CANCEL, "cancel", handle_cancel, RPC_ROLE_CLIENT | RPC_ROLE_PEER,
	 REQ_PERSIST},
	{CHORUS__ENVELOPE__BODY_LIST, "list", handle_list, RPC_ROLE_CLIENT, 0},
	{CHORUS__ENVELOPE__BODY_PLACE, "place", handle_place, RPC_ROLE_PEER,
	 REQ_PERSIST | REQ_MAY_PARK},
};

static int svc_start(void *svc, struct host *h, const struct now *now, char *err, size_t err_len)
{
	struct tasks_svc *s = svc;
	(void)now; /* host_now() is the same */
	const struct config *cfg = host_config(h);
	s->cfg = cfg;
	s->store = host_store(h);
	for (size_t i = 0; i < sizeof(REQUESTS) / sizeof(REQUESTS[0]); i++)
		if (dispatch_register(host_dispatch(h), &REQUESTS[i], s) != 0) {
			snprintf(err, err_len, "request %s registered twice", REQUESTS[i].name);
			return -1;
		}
	if (handlers_init(&s->reg, (const char *const *)cfg->exec_allow) != 0) {
		snprintf(err, err_len, "cannot set up handlers");
		return -1;
	}
	s->reg_ready = 1;
	for (uint32_t i = 0; i < cfg->plugin_count; i++) {
		if (handlers_load_plugin(&s->reg, cfg->plugins[i], err, err_len) != 0)
			return -1;
		log_info("node", "plugin loaded: %s", cfg->plugins[i]);
	}
	for (uint32_t p = 0; p < cfg->pool_count; p++)
		for (uint32_t k = 0; k < cfg->pools[p].handler_count; k++)
			if (!handlers_find(&s->reg, cfg->pools[p].handlers[k])) {
				snprintf(err, err_len, "pool %s: unknown handler '%s'", cfg->pools[p].name,
				         cfg->pools[p].handlers[k]);
				return -1;
			}
	uint64_t max_task = 0, max_batch = 0;
	if (store_max_ids(s->store, &max_task, &max_batch) != 0) {
		snprintf(err, err_len, "cannot read the journal's ids");
		return -1;
	}
	struct tasks_limits lim = {
		.node_name = cfg->name,
		.pool_count = 1 + cfg->pool_count,
		.queue_tasks_max = cfg->queue_max,
		.default_timeout_ms = cfg->default_timeout_ms,
		.default_max_attempts = cfg->max_attempts,
		.default_backoff_ms = cfg->backoff_ms,
		.backoff_max_ms = cfg->backoff_max_ms,
		.batches_max = 100000,
	};
	struct tasks_effects fx = {
		.ctx = s,
		.dispatch = fx_dispatch,
		.kill = fx_kill,
		.final = fx_final,
		.batch_progress = fx_batch_progress,
	};
	/* ids go on above every id ever handed out, the journal's or the
	 * leased marks kept beside it (io/ids.h): never reused, even when
	 * the journal lost its last transactions or was replaced */
	uint64_t mark_task, mark_batch;
	ids_marks(host_ids(h), &mark_task, &mark_batch);
	uint64_t first_task = max_task + 1 > mark_task ? max_task + 1 : mark_task;
	uint64_t first_batch = max_batch + 1 > mark_batch ? max_batch + 1 : mark_batch;
	s->tasks = tasks_create(&lim, &fx, first_task, first_batch);
	if (!s->tasks) {
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	/* workers fork here, before the listener and the links start nng's
	 * threads */
	if (workers_setup(s, err, err_len) != 0)
		return -1;
	s->placement = host_port_get(h, PORT_PLACEMENT);
	s->sink = (struct task_sink_port){s,
	                                  sink_outcome,
	                                  sink_member_lost,
	                                  sink_late_outcome,
	                                  sink_local_load,
	                                  sink_origin_unreachable};
	if (host_port_set(h, PORT_TASK_SINK, &s->sink) != 0) {
		snprintf(err, err_len, "port %s provided twice", PORT_TASK_SINK);
		return -1;
	}
	s->submit_port = (struct task_submit_port){s,           port_submit, port_state,
	                                           port_cancel, port_watch,  port_unwatch};
	if (host_port_set(h, PORT_TASK_SUBMIT, &s->submit_port) != 0) {
		snprintf(err, err_len, "port %s provided twice", PORT_TASK_SUBMIT);
		return -1;
	}
	struct recover_ctx rctx = {s, 0, 0};
	if (store_load_open_batches(s->store, recover_batch_cb, &rctx) != 0 ||
	    store_load_unfinished(s->store, recover_task_cb, &rctx) != 0 || rctx.failed) {
		snprintf(err, err_len, "cannot load unfinished tasks");
		return -1;
	}
	if (rctx.count)
		log_info("tasks", "recovered %" PRIu64 " unfinished task(s) from the journal", rctx.count);
	return 0;
}

/* ---- the loop's calls ---- */

static uint64_t svc_next_deadline(void *svc)
{
	struct tasks_svc *s = svc;
	uint64_t next = timerheap_next_ms(&s->deadlines);
	uint64_t place = timerheap_next_ms(&s->place_timers);
	if (place < next)
		next = place;
	uint64_t core = tasks_next_deadline(s->tasks); /* monotonic */
	if (core < next)
		next = core;
	/* waiters to wake after the next commit: at once; not while commits
	 * fail (the loop retries at its idle period) */
	if (!s->commit_failed &&
	    (s->ended.n || s->progressed.n || s->place_ready || workers_any_held(s->workers) ||
	     (s->placement && s->placement->any_held(s->placement->ctx))))
		next = 0;
	/* dispatches to journal (their `running` state): within
	 * RUNNING_JOURNAL_MS, so a short task's result usually rides the same
	 * commit (one write instead of two) while a long one's state is
	 * durable within milliseconds of its start */
	else if (!s->commit_failed && tasks_has_dirty(s->tasks)) {
		uint64_t soon = host_now(s->host)->mono_ms + RUNNING_JOURNAL_MS;
		if (soon < next)
			next = soon;
	}
	return next;
}

static int svc_poll_fds(void *svc, struct pollfd *fds, int max)
{
	struct tasks_svc *s = svc;
	return workers_pollfds(s->workers, fds, max);
}

static void svc_on_poll(void *svc, const struct pollfd *fds, int n, const struct now *now)
{
	struct tasks_svc *s = svc;
	(void)now;
	for (int i = 0; i < n; i++)
		if (fds[i].revents)
			workers_on_readable(s->workers, fds[i].fd);
}

static void svc_on_signal(void *svc, int signo, const struct now *now)
{
	struct tasks_svc *s = svc;
	(void)now;
	if (signo == SIGCHLD)
		workers_reap(s->workers);
}

static void svc_tick(void *svc, const struct now *now)
{
	struct tasks_svc *s = svc;
	/* the workers' heartbeat: a held-up loop (SIGSTOP, a stall) hands back
	 * the jobs it gave out before, instead of letting them start late */
	/* below the members' time to give this node up (a few periods), above
	 * the loop's own hiccups; a stall this long only costs a re-placement */
	uint64_t pause_ms = 2u * s->cfg->gossip_period_ms > 300u ? 2u * s->cfg->gossip_period_ms : 300u;
	uint64_t gap = workers_beat(s->workers, now->mono_ms, pause_ms);
	if (gap)
		log_warn("workers", "the node was held up for %" PRIu64 " ms (stopped or stalled): jobs "
		                    "its workers had not started are handed back",
		         gap);
	workers_tick(s->workers, workers_now_ms());
	tasks_tick(s->tasks, now);
	for (uint32_t p = 0; p < s->pool_count; p++) {
		struct workers_pool_status ws;
		workers_pool_status(s->workers, p, &ws);
		if (!ws.degraded != !s->pool_degraded[p]) {
			s->pool_degraded[p] = ws.degraded ? 1 : 0;
			host_event(s->host, ws.degraded ? "pool_degraded" : "pool_recovered",
			           s->pool_names[p], ws.degraded ? "%u restart(s) in all: restarts are now spaced out"
			                                         : "no restart for a period (%u in all)",
			           ws.restarts);
		}
	}
	/* no dispatch here: nothing starts before it is journaled, so tasks
	 * are handed to workers in after_commit, right after the commit */
}

/* A task's first write is its whole row; after that (durable: its row is
 * committed) only what changed, by id (store_task_update). */
static int put_task_cb(void *arg, const struct task *t)
{
	return t->durable ? store_task_update(arg, t) : store_task_put(arg, t);
}

static int put_batch_cb(void *arg, const struct batch *b)
{
	return store_batch_put(arg, b);
}

static int svc_flush(void *svc, struct store *st)
{
	struct tasks_svc *s = svc;
	/* tasks already journaled that can start (a worker freed up in this
	 * iteration) are dispatched now, so the commit below journals them
	 * `running` and after_commit releases the held ones: a temporary
	 * task's hold costs no extra iteration */
	if (!s->commit_failed) {
		tasks_pump(s->tasks, host_now(s->host));
		workers_deliver(s->workers);
	}
	return tasks_flush(s->tasks, put_task_cb, put_batch_cb, st);
}

/* A task admitted in an iteration whose commit failed: its submitter is
 * answered CH_ERR_STORAGE, a submit --wait parked on it included; a watch
 * is told once the core call is over (watches_fail_withdrawn). */
static void withdrawn(void *arg, const struct task *t)
{
	struct tasks_svc *s = arg;
	struct waiter *w = idmap_get(&s->task_waiters, t->id);
	int watched = 0;
	while (w) {
		struct waiter *n = w->id_next;
		if (w->watch) {
			watched = 1; /* told outside this core call */
		} else {
			rpc_reply_error(w->call, CH_ERR_STORAGE, "the node could not journal the request");
			waiter_free(s, w);
		}
		w = n;
	}
	if (watched)
		idvec_push(s, &s->withdrawn, t->id);
	struct placed_rec *pr = idmap_get(&s->placed_by_task, t->id);
	if (pr)
		placed_drop(s, pr);
}

static void svc_after_commit(void *svc, int committed, const struct now *now)
{
	struct tasks_svc *s = svc;
	if (!committed) {
		/* Tasks and batches admitted in this iteration were answered
		 * CH_ERR_STORAGE: they leave no trace. Changes of tasks already
		 * journaled stay dirty and are written next time. */
		uint64_t n = tasks_abort_new(s->tasks, withdrawn, s);
		if (n)
			log_debug("tasks", "commit failed: %" PRIu64 " new task(s) withdrawn", n);
		s->journaled_submit = 0;
		s->commit_failed = 1;
		watches_fail_withdrawn(s);
		return;
	}
	s->commit_failed = 0;
	tasks_flush_done(s->tasks);
	/* jobs dispatched before this commit: their `running` is durable now */
	workers_release_held(s->workers);
	if (s->placement)
		s->placement->release_held(s->placement->ctx);
	if (s->crash_after_commit && s->journaled_submit) {
		/* CHORUS_TEST_CRASH_AFTER_COMMIT (tests only, see README): die
		 * between journaling a submit and answering it */
		log_warn("tasks", "CHORUS_TEST_CRASH_AFTER_COMMIT: exiting after the commit that "
		                  "journaled a submit, before answering it");
		_exit(86);
	}
	s->journaled_submit = 0;
	/* waiters first: a task that ends inside the dispatch below (no
	 * worker can take it) is told after the next commit, not this one */
	serve_waiters(s);
	place_serve(s);
	tasks_release_final(s->tasks);
	/* streams closed in this iteration: their batch records may go (once
	 * every task is final) and, in order, their templates */
	for (uint32_t i = 0; i < s->closed.n; i++) {
		tasks_drop_batch(s->tasks, s->closed.v[i]);
		struct stream *st = stream_find(s, s->closed.v[i]);
		if (st)
			stream_maybe_free(s, st);
	}
	s->closed.n = 0;
	/* what this commit made durable starts now, in the same iteration
	 * (temporary tasks right after the next commit, which journals them
	 * `running`) */
	s->temporary_dispatches = 0;
	tasks_pump(s->tasks, now);
	if (s->crash_after_dispatch && s->temporary_dispatches) {
		/* CHORUS_TEST_CRASH_AFTER_DISPATCH (tests only, see README): die
		 * after handing a temporary task to a worker, before journaling
		 * that it started; the pause gives a worker that was sent the job
		 * time to run it */
		log_warn("tasks", "CHORUS_TEST_CRASH_AFTER_DISPATCH: exiting after dispatching a "
		                  "temporary task, before journaling that it started");
		struct timespec d = {0, 300 * 1000 * 1000};
		nanosleep(&d, NULL);
		_exit(87);
	}
	/* a dispatch's "started" events, queued by the supervisor: delivered
	 * now, outside the core call that raised them */
	workers_deliver(s->workers);
	placed_expire(s, now->mono_ms);
	if (now->mono_ms >= s->next_purge_ms && !host_draining(s->host)) {
		s->next_purge_ms = now->mono_ms + PURGE_INTERVAL_MS;
		/* quiet: on a full disk the loop's commit reports the condition */
		store_set_quiet(s->store, 1);
		if (store_begin(s->store) == 0) {
			uint64_t before = now->wall_ms > s->cfg->result_ttl_ms
			                      ? now->wall_ms - s->cfg->result_ttl_ms
			                      : 0;
			int del = store_purge(s->store, before, PURGE_ROWS_MAX);
			int rc = del < 0 ? del : store_commit(s->store);
			if (del != 0)
				s->stored_batch.id = 0;
			if (rc != 0) {
				(void)store_rollback(s->store);
				log_limited(LOG_WARN, "store", "purge-failed", 60000,
				            "purging expired results failed (%s): tried again later",
				            store_last_error(s->store));
			} else if (del > 0) {
				log_debug("store", "purged %d expired results", del);
			}
		}
		store_set_quiet(s->store, 0);
	}
}

static void svc_drain(void *svc, const struct now *now)
{
	struct tasks_svc *s = svc;
	s->drain_deadline_ms = now->mono_ms + s->cfg->shutdown_grace_ms;
	tasks_set_draining(s->tasks, 1);
}

static int svc_drained(void *svc, const struct now *now)
{
	struct tasks_svc *s = svc;
	struct tasks_counters c;
	tasks_counters(s->tasks, &c);
	if (c.running == 0)
		return 1;
	if (now->mono_ms < s->drain_deadline_ms)
		return 0;
	log_warn("node", "grace period over: %" PRIu64 " running task(s) will follow their restart "
	                 "policy at next start",
	         c.running);
	return 1;
}

static void svc_status(void *svc, Chorus__StatusResp *st, struct arena *a)
{
	struct tasks_svc *s = svc;
	struct tasks_counters c;
	tasks_counters(s->tasks, &c);
	st->queued = c.queued + c.backoff;
	st->running = c.running;
	st->submitted = c.submitted;
	st->succeeded = c.succeeded;
	st->failed = c.failed;
	st->timed_out = c.timed_out;
	st->cancelled = c.cancelled;
	st->lost = c.lost;
	st->retried = c.retried;
	Chorus__PoolStatus *ps = arena_alloc(a, s->pool_count * sizeof(*ps));
	Chorus__PoolStatus **pp = arena_alloc(a, s->pool_count * sizeof(*pp));
	if (ps && pp) {
		for (uint32_t p = 0; p < s->pool_count; p++) {
			struct workers_pool_status ws;
			workers_pool_status(s->workers, p, &ws);
			chorus__pool_status__init(&ps[p]);
			ps[p].name = s->pool_names[p];
			ps[p].workers = ws.workers;
			ps[p].alive = ws.alive;
			ps[p].busy = ws.busy;
			ps[p].restarts = ws.restarts;
			ps[p].degraded = ws.degraded;
			ps[p].queued = tasks_pool_queued(s->tasks, p);
			if (p > 0) {
				const struct config_pool *cp = &s->cfg->pools[p - 1];
				ps[p].n_handlers = cp->handler_count;
				ps[p].handlers = (char **)cp->handlers;
			}
			pp[p] = &ps[p];
		}
		st->n_pools = s->pool_count;
		st->pools = pp;
	}
	char **hn = arena_alloc(a, (s->reg.count ? s->reg.count : 1) * sizeof(*hn));
	if (hn) {
		for (uint32_t i = 0; i < s->reg.count; i++)
			hn[i] = (char *)s->reg.entries[i].name;
		st->n_handlers = s->reg.count;
		st->handlers = hn;
	}
}

static void svc_stop(void *svc)
{
	struct tasks_svc *s = svc;
	/* workers first: their last events still reach the task table */
	if (s->workers)
		workers_stop(s->workers, 1000);
	s->workers = NULL;
	while (s->place_waits)
		place_wait_free(s, s->place_waits); /* the host drops their calls */
	timerheap_free(&s->place_timers);
	while (s->waiters)
		waiter_free(s, s->waiters);
	struct idmap_iter it;
	idmap_iter_init(&s->streams, &it);
	for (struct stream *st; (st = idmap_iter_next(&s->streams, &it, NULL)) != NULL;) {
		task_free(st->tmpl);
		free(st->fin);
		free(st);
	}
	idmap_free(&s->streams);
	fanouts_free(s);
	tasks_destroy(s->tasks);
	if (s->reg_ready)
		handlers_free(&s->reg);
	while (s->placed_head)
		placed_drop(s, s->placed_head);
	idmap_free(&s->placed_by_key);
	idmap_free(&s->placed_by_task);
	idmap_free(&s->task_waiters);
	idmap_free(&s->batch_waiters);
	timerheap_free(&s->deadlines);
	free(s->ended.v);
	free(s->withdrawn.v);
	free(s->progressed.v);
	free(s->closed.v);
	free(s);
}

static const struct service_ops TASKS_OPS = {
	.name = "tasks",
	.start = svc_start,
	.next_deadline = svc_next_deadline,
	.poll_fds = svc_poll_fds,
	.on_poll = svc_on_poll,
	.on_signal = svc_on_signal,
	.tick = svc_tick,
	.flush = svc_flush,
	.after_commit = svc_after_commit,
	.drain = svc_drain,
	.drained = svc_drained,
	.status = svc_status,
	.metrics = tasks_svc_metrics,
	.stop = svc_stop,
};

int tasks_svc_register(struct host *h)
{
	struct tasks_svc *s = calloc(1, sizeof(*s));
	if (!s)
		return -1;
	s->host = h;
	const char *crash = getenv("CHORUS_TEST_CRASH_AFTER_COMMIT");
	s->crash_after_commit = crash && strcmp(crash, "1") == 0;
	crash = getenv("CHORUS_TEST_CRASH_AFTER_DISPATCH");
	s->crash_after_dispatch = crash && strcmp(crash, "1") == 0;
	idmap_init(&s->task_waiters);
	idmap_init(&s->batch_waiters);
	idmap_init(&s->streams);
	idmap_init(&s->fanouts);
	timerheap_init(&s->place_timers);
	idmap_init(&s->placed_by_key);
	idmap_init(&s->placed_by_task);
	timerheap_init(&s->deadlines);
	if (host_register(h, &TASKS_OPS, s) != 0) {
		free(s);
		return -1;
	}
	return 0;
}
