/*
 * sched_codec.c - see sched_codec.h.
 */
#include "codec/sched_codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"

static int copy_str(char *dst, size_t cap, const char *src, const char *field, char *err,
                    size_t err_len)
{
	size_t n = src ? strlen(src) : 0;
	if (n >= cap) {
		if (err)
			snprintf(err, err_len, "%s: longer than %zu bytes", field, cap - 1);
		return ERR_INVALID;
	}
	memcpy(dst, src ? src : "", n + 1);
	return 0;
}

int sched_spec_from_pb(const Chorus__CronSpec *pb, struct sched_spec *spec, char *err,
                       size_t err_len)
{
	memset(spec, 0, sizeof(*spec));
	if (copy_str(spec->name, sizeof(spec->name), pb->name, "name", err, err_len) ||
	    copy_str(spec->expr, sizeof(spec->expr), pb->expr, "expression", err, err_len) ||
	    copy_str(spec->tz, sizeof(spec->tz), pb->tz, "zone", err, err_len) ||
	    copy_str(spec->on, sizeof(spec->on), pb->on, "on", err, err_len))
		return ERR_INVALID;
	if ((int)pb->overlap < 0 || (int)pb->overlap > (int)SCHED_OVERLAP_ALLOW_ALL) {
		snprintf(err, err_len, "overlap: unknown policy %d", (int)pb->overlap);
		return ERR_INVALID;
	}
	spec->overlap = (uint8_t)pb->overlap;
	spec->pause_on_failure = pb->pause_on_failure;
	spec->catchup_ms = pb->catchup_ms;
	spec->start_s = pb->start_s;
	spec->end_s = pb->end_s;
	spec->max_runs = pb->max_runs;
	spec->jitter_ms = pb->jitter_ms;
	if (!pb->handler || !pb->handler[0]) {
		snprintf(err, err_len, "handler: missing");
		return ERR_INVALID;
	}
	Chorus__TaskSpec ts = CHORUS__TASK_SPEC__INIT;
	ts.handler = pb->handler;
	ts.payload = pb->payload;
	ts.opts = pb->opts;
	size_t n = chorus__task_spec__get_packed_size(&ts);
	if (n > SCHED_TASK_BYTES_MAX) {
		snprintf(err, err_len, "task: %zu bytes, at most %u", n, SCHED_TASK_BYTES_MAX);
		return ERR_INVALID;
	}
	spec->task = malloc(n ? n : 1);
	if (!spec->task)
		return ERR_NOMEM;
	chorus__task_spec__pack(&ts, spec->task);
	spec->task_len = (uint32_t)n;
	return 0;
}

int sched_spec_to_pb(const struct sched_spec *spec, Chorus__CronSpec *pb,
                     Chorus__TaskSpec **task_out)
{
	chorus__cron_spec__init(pb);
	*task_out = chorus__task_spec__unpack(NULL, spec->task_len, spec->task);
	if (!*task_out)
		return ERR_PROTOCOL;
	pb->name = (char *)spec->name;
	pb->expr = (char *)spec->expr;
	pb->tz = (char *)spec->tz;
	pb->on = (char *)spec->on;
	pb->handler = (*task_out)->handler;
	pb->payload = (*task_out)->payload;
	pb->opts = (*task_out)->opts;
	pb->overlap = (Chorus__Overlap)spec->overlap;
	pb->catchup_ms = spec->catchup_ms;
	pb->start_s = spec->start_s;
	pb->end_s = spec->end_s;
	pb->max_runs = spec->max_runs;
	pb->jitter_ms = spec->jitter_ms;
	pb->pause_on_failure = spec->pause_on_failure;
	return 0;
}

int sched_cmd_encode(const struct sched_cmd *c, uint8_t **bytes, size_t *len)
{
	Chorus__SchedCmd pb = CHORUS__SCHED_CMD__INIT;
	Chorus__CronSpec spb;
	Chorus__TaskSpec *task = NULL;
	pb.op = c->op;
	pb.name = (char *)c->name;
	pb.note = (char *)c->note;
	pb.scheduled_s = c->scheduled_s;
	pb.wall_ms = c->wall_ms;
	pb.target.data = (uint8_t *)c->target;
	pb.target.len = SCHED_ID_BYTES;
	pb.task_id = c->task_id;
	pb.outcome = (uint32_t)c->outcome;
	pb.kind = c->kind;
	pb.count = c->count;
	pb.from_s = c->from_s;
	pb.to_s = c->to_s;
	if (c->op == SCHED_OP_ADD) {
		if (!c->spec || sched_spec_to_pb(c->spec, &spb, &task) != 0)
			return ERR_PROTOCOL;
		pb.spec = &spb;
	}
	size_t n = chorus__sched_cmd__get_packed_size(&pb);
	uint8_t *b = malloc(n ? n : 1);
	if (!b) {
		if (task)
			chorus__task_spec__free_unpacked(task, NULL);
		return ERR_NOMEM;
	}
	chorus__sched_cmd__pack(&pb, b);
	if (task)
		chorus__task_spec__free_unpacked(task, NULL);
	*bytes = b;
	*len = n;
	return 0;
}

int sched_cmd_decode(const uint8_t *bytes, size_t len, struct sched_cmd *c,
                     struct sched_spec *spec_store)
{
	memset(c, 0, sizeof(*c));
	Chorus__SchedCmd *pb = chorus__sched_cmd__unpack(NULL, len, bytes);
	if (!pb)
		return ERR_PROTOCOL;
	int rc = 0;
	if (pb->op < SCHED_OP_ADD || pb->op > SCHED_OP_BACKFILL || pb->kind > 255 ||
	    (pb->target.len && pb->target.len != SCHED_ID_BYTES) ||
	    copy_str(c->name, sizeof(c->name), pb->name, "name", NULL, 0) ||
	    copy_str(c->note, sizeof(c->note), pb->note, "note", NULL, 0)) {
		rc = ERR_PROTOCOL;
		goto out;
	}
	c->op = (uint8_t)pb->op;
	c->kind = (uint8_t)pb->kind;
	c->scheduled_s = pb->scheduled_s;
	c->wall_ms = pb->wall_ms;
	if (pb->target.len)
		memcpy(c->target, pb->target.data, SCHED_ID_BYTES);
	c->task_id = pb->task_id;
	c->outcome = (int)pb->outcome;
	c->from_s = pb->from_s;
	c->to_s = pb->to_s;
	c->count = pb->count;
	if (c->op == SCHED_OP_ADD) {
		char err[128];
		if (!pb->spec || sched_spec_from_pb(pb->spec, spec_store, err, sizeof(err)) != 0) {
			sched_spec_free(spec_store);
			rc = ERR_PROTOCOL;
			goto out;
		}
		snprintf(c->name, sizeof(c->name), "%s", spec_store->name);
		c->spec = spec_store;
	}
out:
	chorus__sched_cmd__free_unpacked(pb, NULL);
	return rc;
}
