/*
 * tasks_place.c - the member side of batched placement (PlaceReq, issue
 * #15): attempts a coordinator placed here in one frame, admitted as lone
 * SubmitReqs with origin would be, their outcomes answered in batches. Part
 * of the tasks service (tasks_svc.c); shares its state through
 * tasks_internal.h.
 */
#include "svc/tasks_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- attempts placed in batches (PlaceReq) ----
 *
 * A coordinator sends the attempts it places here in one loop iteration as
 * one PlaceReq (node/io/cluster.c). Each item is admitted as a lone
 * SubmitReq with origin would be (same dedup by placed_rec, same ephemeral
 * task), and the request is answered after the commit of the first
 * iteration in which one of its items ended: every item that ended then
 * goes in that one answer, the others are marked pending and the
 * coordinator asks for them again (items without a task). So outcomes
 * travel in batches too, and a slow task never holds up the results of the
 * fast ones placed with it. */

static Chorus__TaskResult *result_dup(const Chorus__TaskResult *r)
{
	const char *e = r->error ? r->error : "", *n = r->node ? r->node : "";
	const char *h = r->handler ? r->handler : "";
	size_t lo = r->output.len, le = strlen(e) + 1, ln = strlen(n) + 1, lh = strlen(h) + 1;
	Chorus__TaskResult *d = malloc(sizeof(*d) + lo + le + ln + lh);
	if (!d)
		return NULL;
	*d = *r;
	char *p = (char *)(d + 1);
	if (lo)
		memcpy(p, r->output.data, lo);
	d->output.data = lo ? (uint8_t *)p : NULL;
	p += lo;
	d->error = memcpy(p, e, le);
	p += le;
	d->node = memcpy(p, n, ln);
	p += ln;
	d->handler = memcpy(p, h, lh);
	return d;
}

static void place_ready_push(struct tasks_svc *s, struct place_wait *pw)
{
	if (pw->ready)
		return;
	pw->ready = 1;
	pw->ready_next = s->place_ready;
	s->place_ready = pw;
}

/* An item ends: refused (code), or with the attempt's result (maybe not
 * final: the wait ran out, the node drains or closes). */
static void place_item_end(struct tasks_svc *s, struct place_item *it, int code, const char *error,
                           const Chorus__TaskResult *r)
{
	if (it->done)
		return;
	it->done = 1;
	it->code = code;
	if (code == 0 && r && !(it->result = result_dup(r)))
		it->code = CH_ERR_NOMEM;
	else if (code == 0 && !r)
		it->code = CH_ERR_INTERNAL;
	if (it->code != 0)
		it->error = strdup(error && *error ? error : ch_strerror(it->code));
	it->pw->done++;
	place_ready_push(s, it->pw);
}

static void place_watch_cb(void *arg, int code, const Chorus__TaskResult *r)
{
	struct place_item *it = arg;
	it->watched = 0; /* the waiter is gone (watch_fire, watches_fail_withdrawn) */
	place_item_end(it->pw->svc, it, code, "the node could not journal the request",
	               code ? NULL : r);
}

static void place_item_unwatch(struct tasks_svc *s, struct place_item *it)
{
	if (!it->watched)
		return;
	it->watched = 0;
	for (struct waiter *w = idmap_get(&s->task_waiters, it->task_id); w; w = w->id_next) {
		if (w->watch != place_watch_cb || w->watch_arg != it || w->dropped)
			continue;
		if (s->watch_depth > 0)
			w->dropped = 1; /* a walk over the waiters may hold it */
		else
			waiter_free(s, w);
		return;
	}
}

static void place_item_watch(struct tasks_svc *s, struct place_item *it, uint64_t task_id)
{
	struct waiter *w = waiter_new(s, WAIT_TASK, task_id, 0, 0);
	if (!w) {
		/* it runs, but its outcome cannot be waited for: the
		 * coordinator's restart policy decides */
		place_item_end(s, it, CH_ERR_NOMEM, "out of memory", NULL);
		return;
	}
	w->svc = s;
	w->watch = place_watch_cb;
	w->watch_arg = it;
	it->task_id = task_id;
	it->watched = 1;
}

void place_wait_free(struct tasks_svc *s, struct place_wait *pw)
{
	for (uint32_t i = 0; i < pw->n; i++) {
		place_item_unwatch(s, &pw->items[i]);
		free(pw->items[i].error);
		free(pw->items[i].result);
	}
	if (pw->ready)
		for (struct place_wait **pp = &s->place_ready; *pp; pp = &(*pp)->ready_next)
			if (*pp == pw) {
				*pp = pw->ready_next;
				break;
			}
	if (pw->prev)
		pw->prev->next = pw->next;
	else if (s->place_waits == pw)
		s->place_waits = pw->next;
	if (pw->next)
		pw->next->prev = pw->prev;
	timerheap_cancel(&s->place_timers, &pw->deadline);
	free(pw);
}

static void place_cancelled(void *arg, struct rpc_call *c)
{
	struct place_wait *pw = arg;
	(void)c;
	pw->call = NULL;
	place_wait_free(pw->svc, pw);
}

/* One item of a PlaceReq: ended at once, or watching its task. */
static void place_item_admit(struct tasks_svc *s, struct place_wait *pw, struct place_item *it,
                             const Chorus__SubmitReq *q)
{
	char msg[600];
	it->pw = pw;
	it->origin_task = q->origin_task;
	it->origin_attempt = q->origin_attempt;
	/* the same attempt again (asked again, or resent under a new
	 * session): never a second run */
	struct placed_rec *pr = placed_find(s, pw->origin, q->origin_task, q->origin_attempt);
	if (pr && pr->final) {
		Chorus__TaskResult r;
		codec_result_fill(&r, pr->final);
		place_item_end(s, it, 0, NULL, &r);
		return;
	}
	if (pr && tasks_get(s->tasks, pr->task_id)) {
		place_item_watch(s, it, pr->task_id);
		return;
	}
	if (!q->task) {
		place_item_end(s, it, CH_ERR_NOT_FOUND,
		               "this member does not know the attempt (restarted since it was placed?)",
		               NULL);
		return;
	}
	if (host_draining(s->host)) {
		place_item_end(s, it, CH_ERR_SHUTTING_DOWN, "the node is shutting down", NULL);
		return;
	}
	int rc = spec_check(s, q->task->handler, q->task->opts, q->task->payload.len, msg, sizeof(msg));
	if (rc) {
		log_limited(LOG_WARN, "tasks", "submit-refused", 10000, "placed task refused: %s", msg);
		place_item_end(s, it, rc, msg, NULL);
		return;
	}
	struct task *t = codec_task_from_spec(q->task->handler, q->task->payload.data,
	                                      q->task->payload.len, q->task->opts,
	                                      handler_pool(s, q->task->handler));
	if (!t) {
		place_item_end(s, it, CH_ERR_NOMEM, "out of memory", NULL);
		return;
	}
	/* as a lone SubmitReq with origin: run once, journal nothing, the
	 * coordinator owns the task and its restart policy */
	t->ephemeral = 1;
	memcpy(t->origin, pw->origin, SEAL_ID_BYTES);
	t->origin_task = q->origin_task;
	t->opts.restart = TASK_RESTART_TEMPORARY;
	t->opts.max_attempts = 1;
	uint64_t id = 0;
	rc = tasks_submit(s->tasks, t, host_now(s->host), &id);
	if (rc) {
		task_free(t);
		log_limited(LOG_WARN, "tasks", "queue-full", 10000,
		            "queue full (%u tasks): placed task refused", s->cfg->queue_max);
		snprintf(msg, sizeof(msg), "queue full (%u tasks held): retry later", s->cfg->queue_max);
		place_item_end(s, it, err_to_public(rc), msg, NULL);
		return;
	}
	placed_add(s, pw->origin, q->origin_task, q->origin_attempt, id);
	place_item_watch(s, it, id);
}

/* Answers pw with the items that ended (as many as fit a frame) and the
 * rest pending, and frees it. */
static void place_answer(struct tasks_svc *s, struct place_wait *pw)
{
	Chorus__PlaceItem *iv = calloc(pw->n, sizeof(*iv));
	Chorus__PlaceItem **ip = calloc(pw->n, sizeof(*ip));
	if (!iv || !ip) {
		free(iv);
		free(ip);
		rpc_reply_error(pw->call, CH_ERR_NOMEM, "out of memory");
		pw->call = NULL;
		place_wait_free(s, pw);
		return;
	}
	size_t budget = s->cfg->frame_bytes_max > (256u << 10) ? s->cfg->frame_bytes_max - (128u << 10)
	                                                      : s->cfg->frame_bytes_max / 2;
	size_t bytes = 0;
	for (uint32_t i = 0; i < pw->n; i++) {
		struct place_item *it = &pw->items[i];
		Chorus__PlaceItem *o = &iv[i];
		chorus__place_item__init(o);
		o->origin_task = it->origin_task;
		o->origin_attempt = it->origin_attempt;
		size_t b = 64 + (it->error ? strlen(it->error) : 0);
		if (it->result)
			b += it->result->output.len + strlen(it->result->error) +
			     strlen(it->result->node) + strlen(it->result->handler) + 96;
		/* an answer too big for one frame: the rest are asked again
		 * (their outcome is remembered: owed) */
		int fits = bytes == 0 || bytes + b <= budget;
		struct placed_rec *pr = placed_find(s, pw->origin, it->origin_task, it->origin_attempt);
		if (it->done && fits) {
			bytes += b;
			o->code = it->code;
			o->error = it->code ? it->error : NULL;
			o->result = it->code ? NULL : it->result;
			if (pr)
				pr->owed = 0;
		} else {
			o->pending = 1;
			if (pr)
				pr->owed = 1;
		}
		ip[i] = o;
	}
	Chorus__PlaceResp r = CHORUS__PLACE_RESP__INIT;
	r.n_items = pw->n;
	r.items = ip;
	rpc_reply_body(pw->call, CHORUS__ENVELOPE__BODY_PLACE_RESP, place_resp, &r);
	pw->call = NULL;
	free(iv);
	free(ip);
	place_wait_free(s, pw);
}

/* After a commit: requests whose wait ran out, then every request with an
 * item that ended. */
void place_serve(struct tasks_svc *s)
{
	uint64_t now_ms = host_now(s->host)->mono_ms;
	for (struct timer *tm; (tm = timerheap_pop_due(&s->place_timers, now_ms));) {
		struct place_wait *pw = timer_owner(tm, struct place_wait, deadline);
		for (uint32_t i = 0; i < pw->n; i++) {
			struct place_item *it = &pw->items[i];
			if (it->done)
				continue;
			place_item_unwatch(s, it);
			/* as a lone SubmitReq whose wait ran out: the state as it is */
			const struct task *t;
			struct task *owned;
			if (it->task_id && task_lookup(s, it->task_id, &t, &owned) == 0) {
				Chorus__TaskResult r;
				codec_result_fill(&r, t);
				place_item_end(s, it, 0, NULL, &r);
				task_free(owned);
			} else {
				place_item_end(s, it, CH_ERR_NOT_FOUND, "the attempt is gone", NULL);
			}
		}
	}
	while (s->place_ready) {
		struct place_wait *pw = s->place_ready;
		s->place_ready = pw->ready_next;
		pw->ready = 0;
		place_answer(s, pw);
	}
}

void handle_place(void *svc, struct rpc_call *c, const Chorus__Envelope *env)
{
	struct tasks_svc *s = svc;
	const Chorus__PlaceReq *m = env->place;
	if (m->n_items == 0 || m->n_items > PLACE_ITEMS_MAX) {
		rpc_reply_error(c, CH_ERR_INVALID, "a placement of %zu tasks: 1 to %u", m->n_items,
		                PLACE_ITEMS_MAX);
		return;
	}
	uint32_t fresh = 0, wait_max = 0;
	for (size_t i = 0; i < m->n_items; i++) {
		const Chorus__SubmitReq *q = m->items[i];
		if (q->origin.len != SEAL_ID_BYTES ||
		    memcmp(q->origin.data, m->items[0]->origin.data, SEAL_ID_BYTES) != 0) {
			rpc_reply_error(c, CH_ERR_INVALID,
			                "every placed task must name the same 16-byte origin");
			return;
		}
		if (q->task && !q->task->handler) {
			rpc_reply_error(c, CH_ERR_INVALID, "a placed task without a handler");
			return;
		}
		fresh += q->task != NULL;
		if (q->wait_ms > wait_max)
			wait_max = q->wait_ms;
	}
	if (fresh && !host_draining(s->host) && ids_lease(s, c, fresh, 0) != 0)
		return;
	struct place_wait *pw = calloc(1, sizeof(*pw) + m->n_items * sizeof(pw->items[0]));
	if (!pw) {
		rpc_reply_error(c, CH_ERR_NOMEM, "out of memory");
		return;
	}
	pw->svc = s;
	pw->n = (uint32_t)m->n_items;
	memcpy(pw->origin, m->items[0]->origin.data, SEAL_ID_BYTES);
	pw->next = s->place_waits;
	if (s->place_waits)
		s->place_waits->prev = pw;
	s->place_waits = pw;
	pw->ready = 1; /* not on the ready list while admitting */
	for (uint32_t i = 0; i < pw->n; i++)
		place_item_admit(s, pw, &pw->items[i], m->items[i]);
	pw->ready = 0;
	if (pw->done == pw->n) {
		pw->call = c;
		place_answer(s, pw);
		return;
	}
	if (wait_max > WAIT_MS_MAX)
		wait_max = WAIT_MS_MAX;
	if (wait_max &&
	    timerheap_set(&s->place_timers, &pw->deadline, host_now(s->host)->mono_ms + wait_max) != 0) {
		place_wait_free(s, pw);
		rpc_reply_error(c, CH_ERR_NOMEM, "out of memory");
		return;
	}
	pw->call = rpc_park(c, place_cancelled, pw);
	if (!pw->call) { /* answered with CH_ERR_NOMEM */
		place_wait_free(s, pw);
		return;
	}
	if (pw->done)
		place_ready_push(s, pw); /* answered after this iteration's commit */
}


/* The tasks a batch has so far (held, else from the journal; 0 unknown). */
uint32_t batch_total(struct tasks_svc *s, uint64_t batch_id)
{
	const struct batch *held = tasks_get_batch(s->tasks, batch_id);
	if (held)
		return held->total;
	struct batch fb;
	return store_batch_get(s->store, batch_id, &fb) == 0 ? fb.total : 0;
}

