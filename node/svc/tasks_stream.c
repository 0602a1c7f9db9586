/*
 * tasks_stream.c - streamed fan-outs, a part of the tasks service (see
 * tasks_internal.h and docs/design.md "Streamed fan-outs"): a batch opened
 * by MapReq{stream} grows by map_append chunks, idempotent by start index,
 * within a window of unfinished tasks the coordinator grants; an unordered
 * stream's results are kept until acknowledged.
 */
#include "svc/tasks_internal.h"

/* ---- streamed batches ---- */

struct stream *stream_find(const struct tasks_svc *s, uint64_t batch_id)
{
	return batch_id ? idmap_get(&s->streams, batch_id) : NULL;
}

void stream_free(struct tasks_svc *s, struct stream *st)
{
	if (idmap_get(&s->streams, st->batch_id) == st)
		(void)idmap_del(&s->streams, st->batch_id);
	task_free(st->tmpl);
	free(st->fin);
	free(st);
}

/* More tasks the batch's window takes now: the core's room, less the
 * results of an unordered stream still waiting for their acknowledgement. */
uint32_t stream_room(const struct tasks_svc *s, uint64_t batch_id)
{
	uint32_t room = tasks_batch_room(s->tasks, batch_id);
	const struct stream *st = stream_find(s, batch_id);
	if (st && st->unordered)
		room = room > st->fin_count ? room - st->fin_count : 0;
	return room;
}

/* Forgets the stream once nothing more can come of it: input closed and,
 * unordered, every result acknowledged. */
void stream_maybe_free(struct tasks_svc *s, struct stream *st)
{
	const struct batch *b = tasks_get_batch(s->tasks, st->batch_id);
	if (b && b->input_open)
		return;
	if (st->unordered && (st->fin_count > 0 || (b && b->done < b->total)))
		return; /* results still to give */
	stream_free(s, st);
}

/* Removes an acknowledged index from the ring: usually its head (results
 * are given, and so acknowledged, in ring order). Unknown indexes (a
 * resend acknowledging again) are ignored. */
void stream_ack(struct stream *st, uint32_t index)
{
	if (st->fin_count == 0)
		return;
	if (st->fin[st->fin_head].index == index) {
		st->fin_head = (st->fin_head + 1) % st->fin_cap;
		st->fin_count--;
		return;
	}
	for (uint32_t i = 1; i < st->fin_count; i++) {
		uint32_t at = (st->fin_head + i) % st->fin_cap;
		if (st->fin[at].index != index)
			continue;
		for (uint32_t j = i; j + 1 < st->fin_count; j++)
			st->fin[(st->fin_head + j) % st->fin_cap] =
				st->fin[(st->fin_head + j + 1) % st->fin_cap];
		st->fin_count--;
		return;
	}
}

/* A task of the stream reached a final state (fx_final). */
void stream_on_final(struct tasks_svc *s, const struct task *t)
{
	struct stream *st = stream_find(s, t->batch_id);
	if (!st || !st->unordered)
		return;
	/* the window counts these, so the ring has room (tasks.h) */
	assert(st->fin_count < st->fin_cap);
	if (st->fin_count == st->fin_cap)
		return;
	uint32_t at = (st->fin_head + st->fin_count) % st->fin_cap;
	st->fin[at].index = t->batch_index;
	st->fin[at].task_id = t->id;
	st->fin_count++;
}

/* Collects up to bc->cap results of an unordered stream, ring order. A
 * task ended in this iteration is not committed yet: it and those after it
 * wait for the commit (its waiter is tried again then). */
void stream_collect(struct tasks_svc *s, const struct stream *st, struct batch_collect *bc)
{
	for (uint32_t i = 0; i < st->fin_count && bc->n < bc->cap; i++) {
		const struct stream_fin *f = &st->fin[(st->fin_head + i) % st->fin_cap];
		const struct task *held = tasks_get(s->tasks, f->task_id);
		if (held && held->dirty)
			break;
		struct task *t = NULL;
		if (held)
			t = task_clone(held);
		else if (store_task_get(s->store, f->task_id, &t) != 0)
			t = NULL;
		if (!t)
			break;
		if (bc->n > 0 && bc->bytes + result_bytes(t) > bc->bytes_max) {
			task_free(t);
			break;
		}
		bc->bytes += result_bytes(t);
		bc->tasks[bc->n++] = t;
	}
}

/* The largest payload of a chunk; 0 when all fit. */
size_t biggest_payload(const ProtobufCBinaryData *p, size_t n)
{
	size_t biggest = 0;
	for (size_t i = 0; i < n; i++)
		if (p[i].len > biggest)
			biggest = p[i].len;
	return biggest;
}

/* A task of a stream: its template with this payload. NULL on ENOMEM. */
static struct task *stream_task(const struct stream *st, const ProtobufCBinaryData *p)
{
	struct task *t = task_clone(st->tmpl);
	if (!t)
		return NULL;
	free(t->payload);
	t->payload = malloc(p->len ? p->len : 1);
	if (!t->payload) {
		task_free(t);
		return NULL;
	}
	if (p->len)
		memcpy(t->payload, p->data, p->len);
	t->payload_len = p->len;
	return t;
}

/* Builds tasks for p[0..n) into tv; 0, or ERR_NOMEM (none left built). */
static int stream_tasks(const struct stream *st, const ProtobufCBinaryData *p, uint32_t n,
                        struct task **tv)
{
	for (uint32_t i = 0; i < n; i++) {
		tv[i] = stream_task(st, &p[i]);
		if (!tv[i]) {
			while (i-- > 0)
				task_free(tv[i]);
			return ERR_NOMEM;
		}
	}
	return 0;
}

static uint32_t stream_chunk_bytes_max(const struct rpc_call *c)
{
	size_t max = rpc_reply_bytes_max(c->rpc);
	max = max > 2 * STREAM_CHUNK_SLACK_BYTES ? max - STREAM_CHUNK_SLACK_BYTES : max / 2;
	return max > UINT32_MAX ? UINT32_MAX : (uint32_t)max;
}

/* MapReq{stream}: opens a batch whose input grows by MapAppendReq. */
void handle_map_stream(struct tasks_svc *s, struct rpc_call *c, const Chorus__MapReq *m)
{
	char msg[600];
	int rc = spec_check(s, m->handler, m->opts, biggest_payload(m->payloads, m->n_payloads), msg,
	                    sizeof(msg));
	if (rc) {
		log_limited(LOG_WARN, "tasks", "map-refused", 10000, "fan-out refused: %s", msg);
		rpc_reply_error(c, rc, "%s", msg);
		return;
	}
	uint32_t window_max = s->cfg->queue_max < STREAM_WINDOW_MAX ? s->cfg->queue_max
	                                                            : STREAM_WINDOW_MAX;
	uint32_t window = m->window ? m->window : STREAM_WINDOW_DEFAULT;
	if (window > window_max)
		window = window_max;
	if (window == 0 || m->n_payloads > window) {
		rpc_reply_error(c, CH_ERR_INVALID,
		                "a stream's first chunk of %zu tasks is over its window of %u",
		                m->n_payloads, window);
		return;
	}
	/* the same open again (a resend under a new session, a restarted
	 * node): the batch it opened, whose appends are idempotent by index */
	uint64_t first = 0;
	int known = key_find(s, c, &m->idempotency_key, STORE_KEY_BATCH, &first);
	if (known < 0)
		return;
	if (known) {
		Chorus__MapResp mr = CHORUS__MAP_RESP__INIT;
		mr.batch_id = first;
		mr.count = batch_total(s, first);
		mr.window = window;
		mr.chunk_bytes_max = stream_chunk_bytes_max(c);
		mr.room = stream_find(s, first) ? stream_room(s, first) : 0;
		rpc_reply_body(c, CHORUS__ENVELOPE__BODY_MAP_RESP, map_resp, &mr);
		return;
	}
	struct stream *st = calloc(1, sizeof(*st));
	struct task **tv = calloc(m->n_payloads ? m->n_payloads : 1, sizeof(*tv));
	if (st) {
		st->unordered = m->unordered;
		st->tmpl = codec_task_from_spec(m->handler, NULL, 0, m->opts, handler_pool(s, m->handler));
		st->fin_cap = window;
		st->fin = m->unordered ? calloc(window, sizeof(*st->fin)) : NULL;
	}
	uint32_t n = (uint32_t)m->n_payloads;
	if (!st || !tv || !st->tmpl || (m->unordered && !st->fin) ||
	    stream_tasks(st, m->payloads, n, tv) != 0) {
		if (st) {
			task_free(st->tmpl);
			free(st->fin);
		}
		free(st);
		free(tv);
		rpc_reply_error(c, CH_ERR_NOMEM, "out of memory");
		return;
	}
	uint64_t batch_id = 0;
	rc = tasks_open_batch(s->tasks, tv, n, m->max_concurrency, m->deadline_ms, window,
	                      host_now(s->host), &batch_id);
	if (rc == 0) {
		st->batch_id = batch_id;
		fanout_begin(s, batch_id, m->handler);
		if (idmap_put(&s->streams, batch_id, st) != 0) {
			/* its first tasks run; no more can come */
			(void)tasks_close_batch(s->tasks, batch_id);
			idvec_push(s, &s->closed, batch_id);
			rc = ERR_NOMEM;
		}
	} else {
		for (uint32_t i = 0; i < n; i++)
			task_free(tv[i]);
	}
	free(tv);
	if (rc) {
		task_free(st->tmpl);
		free(st->fin);
		free(st);
		if (rc == ERR_FULL)
			rpc_reply_error(c, CH_ERR_FULL, "queue full: cannot open a fan-out stream now "
			                                "(limit %u tasks held); nothing accepted",
			                s->cfg->queue_max);
		else
			rpc_reply_error(c, err_to_public(rc), "cannot open a fan-out stream: %s",
			                err_name(rc));
		return;
	}
	if (key_record(s, c, &m->idempotency_key, STORE_KEY_BATCH, batch_id) != 0) {
		/* answered CH_ERR_STORAGE: the stream takes no more input */
		(void)tasks_close_batch(s->tasks, batch_id);
		idvec_push(s, &s->closed, batch_id);
		return;
	}
	log_debug("tasks", "stream batch %" PRIu64 " opened (window %u%s)", batch_id, window,
	          m->unordered ? ", unordered" : "");
	Chorus__MapResp mr = CHORUS__MAP_RESP__INIT;
	mr.batch_id = batch_id;
	mr.count = n;
	mr.window = window;
	mr.chunk_bytes_max = stream_chunk_bytes_max(c);
	mr.room = stream_room(s, batch_id);
	rpc_reply_body(c, CHORUS__ENVELOPE__BODY_MAP_RESP, map_resp, &mr);
}

static void reply_append(struct tasks_svc *s, struct rpc_call *c, uint64_t batch_id,
                         const struct batch *b)
{
	Chorus__MapAppendResp ar = CHORUS__MAP_APPEND_RESP__INIT;
	ar.batch_id = batch_id;
	ar.next_index = b->total;
	ar.closed = !b->input_open;
	ar.room = b->input_open ? stream_room(s, batch_id) : 0;
	rpc_reply_body(c, CHORUS__ENVELOPE__BODY_MAP_APPEND_RESP, map_append_resp, &ar);
}

/* MapAppendReq: payloads of a stream at start_index (see chorus.proto). */
void handle_map_append(void *svc, struct rpc_call *c, const Chorus__Envelope *env)
{
	struct tasks_svc *s = svc;
	const Chorus__MapAppendReq *m = env->map_append;
	const struct batch *b = tasks_get_batch(s->tasks, m->batch_id);
	struct batch stored;
	if (!b) {
		if (m->batch_id && store_batch_get(s->store, m->batch_id, &stored) == 0)
			b = &stored; /* closed: answered below */
		else {
			rpc_reply_error(c, CH_ERR_NOT_FOUND, "no batch %" PRIu64 " to append to",
			                m->batch_id);
			return;
		}
	}
	uint64_t end = (uint64_t)m->start_index + m->n_payloads;
	if (!b->input_open) {
		if (m->close && end == b->total) {
			reply_append(s, c, m->batch_id, b); /* a resend of the close */
			return;
		}
		rpc_reply_error(c, CH_ERR_CLOSED,
		                "batch %" PRIu64 " takes no more tasks: its input is closed at %u "
		                "task(s) (closed by its client, past its deadline, or its coordinator "
		                "restarted); re-attach with clusterctl wait --batch %" PRIu64,
		                m->batch_id, b->total, m->batch_id);
		return;
	}
	struct stream *st = stream_find(s, m->batch_id);
	assert(st); /* an open batch has its stream (handle_map_stream) */
	if (!st) {
		rpc_reply_error(c, CH_ERR_INTERNAL, "batch %" PRIu64 " is open without its stream",
		                m->batch_id);
		return;
	}
	if (m->start_index > b->total) {
		rpc_reply_error(c, CH_ERR_INVALID,
		                "chunk for batch %" PRIu64 " starts at index %u, but the batch has %u "
		                "task(s): a chunk is missing (the next starts at %u)",
		                m->batch_id, m->start_index, b->total, b->total);
		return;
	}
	if (m->n_payloads > STREAM_CHUNK_TASKS_MAX) {
		rpc_reply_error(c, CH_ERR_TOO_LARGE, "chunk of %zu tasks: at most %u per chunk",
		                m->n_payloads, STREAM_CHUNK_TASKS_MAX);
		return;
	}
	size_t biggest = biggest_payload(m->payloads, m->n_payloads);
	if (biggest > PAYLOAD_BYTES_MAX) {
		rpc_reply_error(c, CH_ERR_TOO_LARGE,
		                "payload of %zu bytes is over the %u-byte limit", biggest,
		                PAYLOAD_BYTES_MAX);
		return;
	}
	if (end > UINT32_MAX) {
		rpc_reply_error(c, CH_ERR_TOO_LARGE, "a batch holds at most %u tasks", UINT32_MAX);
		return;
	}
	/* idempotent by index: what is below total is there already */
	uint32_t skip = b->total - m->start_index;
	uint32_t fresh = skip < m->n_payloads ? (uint32_t)m->n_payloads - skip : 0;
	uint32_t room = stream_room(s, m->batch_id);
	uint32_t take = fresh < room ? fresh : room;
	uint64_t batch_id = m->batch_id;
	if (take > 0) {
		struct task **tv = calloc(take, sizeof(*tv));
		int rc = tv ? stream_tasks(st, m->payloads + skip, take, tv) : ERR_NOMEM;
		if (rc == 0) {
			rc = tasks_batch_append(s->tasks, batch_id, tv, take, host_now(s->host));
			if (rc)
				for (uint32_t i = 0; i < take; i++)
					task_free(tv[i]);
		}
		free(tv);
		if (rc) {
			rpc_reply_error(c, err_to_public(rc), "append to batch %" PRIu64 ": %s", batch_id,
			                err_name(rc));
			return;
		}
	}
	b = tasks_get_batch(s->tasks, batch_id);
	assert(b);
	if (m->close && b->total == end) {
		(void)tasks_close_batch(s->tasks, batch_id);
		idvec_push(s, &s->closed, batch_id);
		log_debug("tasks", "stream batch %" PRIu64 " closed at %u task(s)", batch_id, b->total);
	}
	reply_append(s, c, batch_id, b);
}

