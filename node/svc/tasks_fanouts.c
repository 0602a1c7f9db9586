/*
 * tasks_fanouts.c - the fan-outs this node coordinates, as `clusterctl
 * fanouts` and GET /api/fanouts list them (ListReq.batches).
 *
 * The task table (core/tasks.h) keeps a batch only while it has unfinished
 * tasks, and counts only `done`; a person watching wants the breakdown by
 * outcome and the batches that just ended too. So the service keeps one
 * small record per batch: created when the batch is accepted (or, after a
 * restart, when one of its tasks first ends), counted from the core's
 * `final` effect, and finished when the core reports every task done with
 * the input closed (or no longer holds it). Bounded: every running batch
 * (the core bounds those: batches_max) plus the FANOUTS_FINISHED_KEPT most
 * recently finished. In memory only: after a restart the breakdown counts
 * the tasks that ended since, and finished batches are not listed.
 */
#include "tasks_internal.h"

/* Clears the record's place in the list (newest first). */
static void rec_unlink(struct tasks_svc *s, struct fanout_rec *r)
{
	if (r->newer)
		r->newer->older = r->older;
	else
		s->fan_newest = r->older;
	if (r->older)
		r->older->newer = r->newer;
	else
		s->fan_oldest = r->newer;
	r->newer = r->older = NULL;
}

static void rec_drop(struct tasks_svc *s, struct fanout_rec *r)
{
	rec_unlink(s, r);
	idmap_del(&s->fanouts, r->id);
	if (r->finished_ms)
		s->fan_finished--;
	free(r);
}

/* Keeps at most FANOUTS_FINISHED_KEPT finished records: the oldest go. */
static void trim_finished(struct tasks_svc *s)
{
	struct fanout_rec *r = s->fan_oldest;
	while (r && s->fan_finished > FANOUTS_FINISHED_KEPT) {
		struct fanout_rec *newer = r->newer;
		if (r->finished_ms)
			rec_drop(s, r);
		r = newer;
	}
}

static struct fanout_rec *rec_get(struct tasks_svc *s, uint64_t batch_id, const char *handler)
{
	struct fanout_rec *r = idmap_get(&s->fanouts, batch_id);
	if (r)
		return r;
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->id = batch_id;
	const struct batch *b = tasks_get_batch(s->tasks, batch_id);
	r->submitted_ms = b ? b->created_ms : host_now(s->host)->wall_ms;
	snprintf(r->handler, sizeof(r->handler), "%s", handler ? handler : "");
	if (idmap_put(&s->fanouts, batch_id, r) != 0) {
		free(r);
		return NULL;
	}
	/* newest first by id: a batch recovered late still sorts by age */
	struct fanout_rec *at = s->fan_newest;
	while (at && at->id > batch_id)
		at = at->older;
	if (!at) { /* the oldest */
		r->newer = s->fan_oldest;
		if (s->fan_oldest)
			s->fan_oldest->older = r;
		else
			s->fan_newest = r;
		s->fan_oldest = r;
	} else {
		r->older = at;
		r->newer = at->newer;
		if (at->newer)
			at->newer->older = r;
		else
			s->fan_newest = r;
		at->newer = r;
	}
	return r;
}

/* Finished: the core says every task is done and the input closed, or it
 * no longer holds the batch. */
static void rec_check_finished(struct tasks_svc *s, struct fanout_rec *r)
{
	if (r->finished_ms)
		return;
	const struct batch *b = tasks_get_batch(s->tasks, r->id);
	if (b && (b->input_open || b->done < b->total))
		return;
	if (b)
		r->total = b->total;
	r->finished_ms = host_now(s->host)->wall_ms;
	if (!r->finished_ms)
		r->finished_ms = 1;
	s->fan_finished++;
	trim_finished(s);
}

void fanout_begin(struct tasks_svc *s, uint64_t batch_id, const char *handler)
{
	struct fanout_rec *r = rec_get(s, batch_id, handler);
	if (!r)
		log_warn("tasks", "batch %" PRIu64 ": out of memory for its listing", batch_id);
}

void fanout_on_final(struct tasks_svc *s, const struct task *t)
{
	struct fanout_rec *r = rec_get(s, t->batch_id, t->handler);
	if (!r)
		return;
	switch (t->state) {
	case TASK_SUCCEEDED: r->succeeded++; break;
	case TASK_FAILED: r->failed++; break;
	case TASK_TIMED_OUT: r->timed_out++; break;
	case TASK_CANCELLED: r->cancelled++; break;
	default: r->lost++; break;
	}
}

void fanout_on_progress(struct tasks_svc *s, uint64_t batch_id)
{
	struct fanout_rec *r = idmap_get(&s->fanouts, batch_id);
	if (r)
		rec_check_finished(s, r);
}

void fanout_cancelled(struct tasks_svc *s, uint64_t batch_id)
{
	struct fanout_rec *r = idmap_get(&s->fanouts, batch_id);
	if (r)
		r->cancel_asked = 1;
}

void fanouts_free(struct tasks_svc *s)
{
	while (s->fan_newest)
		rec_drop(s, s->fan_newest);
	idmap_free(&s->fanouts);
}

static void rec_fill(struct tasks_svc *s, struct fanout_rec *r, Chorus__BatchInfo *bi)
{
	const struct batch *b = tasks_get_batch(s->tasks, r->id);
	uint32_t ended = r->succeeded + r->failed + r->timed_out + r->cancelled + r->lost;
	bi->batch_id = r->id;
	if (b) {
		r->total = b->total;
		bi->done = b->done;
		bi->running = b->in_flight;
		bi->input_open = b->input_open != 0;
	} else {
		bi->done = ended;
	}
	bi->total = r->total > bi->done ? r->total : bi->done;
	bi->queued = bi->total - bi->done > bi->running ? bi->total - bi->done - bi->running : 0;
	bi->succeeded = r->succeeded;
	bi->failed = r->failed;
	bi->timed_out = r->timed_out;
	bi->cancelled = r->cancelled;
	bi->lost = r->lost;
	bi->submitted_ms = r->submitted_ms;
	bi->finished_ms = r->finished_ms;
	bi->handler = r->handler;
	/* a cancelled batch is "running" until its last task has ended */
	if (!r->finished_ms)
		bi->state = "running";
	else if (r->cancel_asked)
		bi->state = "cancelled";
	else
		bi->state = "done";
}

int fanouts_list(struct tasks_svc *s, uint32_t limit, Chorus__BatchInfo **out, size_t *n)
{
	*out = NULL;
	*n = 0;
	/* settle what ended without a progress report (closed input, withdrawn) */
	for (struct fanout_rec *r = s->fan_newest, *older; r; r = older) {
		older = r->older;
		rec_check_finished(s, r);
	}
	size_t count = 0;
	for (struct fanout_rec *r = s->fan_newest; r; r = r->older)
		count++;
	if (count > limit)
		count = limit;
	if (count == 0)
		return 0;
	Chorus__BatchInfo *v = calloc(count, sizeof(*v));
	if (!v)
		return -1;
	size_t k = 0;
	/* running first, then the finished ones; each newest first */
	for (int pass = 0; pass < 2; pass++) {
		for (struct fanout_rec *r = s->fan_newest; r && k < count; r = r->older) {
			if ((pass == 0) != (r->finished_ms == 0))
				continue;
			chorus__batch_info__init(&v[k]);
			rec_fill(s, r, &v[k]);
			k++;
		}
	}
	*out = v;
	*n = k;
	return 0;
}
