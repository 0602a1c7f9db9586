/*
 * codec.c - internal types <-> wire, internal <-> public errors (see
 * codec.h).
 */
#include "codec/codec.h"

#include <stdlib.h>
#include <string.h>

#include "chorus.h"
#include "core/tasks.h"
#include "lib/err.h"

/* One numbering for task states, three names for it. */
#define SAME_STATE(core, pub, wire)                                                            \
	_Static_assert((int)(core) == (int)(pub) && (int)(pub) == (int)(wire),                  \
	               #core " differs between the core, chorus.h and the wire")
SAME_STATE(TASK_UNKNOWN, CH_TASK_UNKNOWN, CHORUS__TASK_STATE__TASK_STATE_UNKNOWN);
SAME_STATE(TASK_QUEUED, CH_TASK_QUEUED, CHORUS__TASK_STATE__TASK_QUEUED);
SAME_STATE(TASK_RUNNING, CH_TASK_RUNNING, CHORUS__TASK_STATE__TASK_RUNNING);
SAME_STATE(TASK_SUCCEEDED, CH_TASK_SUCCEEDED, CHORUS__TASK_STATE__TASK_SUCCEEDED);
SAME_STATE(TASK_FAILED, CH_TASK_FAILED, CHORUS__TASK_STATE__TASK_FAILED);
SAME_STATE(TASK_TIMED_OUT, CH_TASK_TIMED_OUT, CHORUS__TASK_STATE__TASK_TIMED_OUT);
SAME_STATE(TASK_CANCELLED, CH_TASK_CANCELLED, CHORUS__TASK_STATE__TASK_CANCELLED);
SAME_STATE(TASK_LOST, CH_TASK_LOST, CHORUS__TASK_STATE__TASK_LOST);
_Static_assert((int)TASK_RESTART_TEMPORARY == (int)CH_RESTART_TEMPORARY &&
                   (int)TASK_RESTART_TEMPORARY == (int)CHORUS__RESTART_POLICY__RESTART_TEMPORARY,
               "restart policy numbering");
_Static_assert((int)TASK_RESTART_TRANSIENT == (int)CH_RESTART_TRANSIENT &&
                   (int)TASK_RESTART_TRANSIENT == (int)CHORUS__RESTART_POLICY__RESTART_TRANSIENT,
               "restart policy numbering");

int err_to_public(int err)
{
	switch (err) {
	case ERR_OK: return 0;
	case ERR_INVALID: return CH_ERR_INVALID;
	case ERR_NOT_FOUND: return CH_ERR_NOT_FOUND;
	case ERR_FULL: return CH_ERR_FULL;
	case ERR_NOMEM: return CH_ERR_NOMEM;
	case ERR_PROTOCOL: return CH_ERR_PROTOCOL;
	case ERR_STORAGE: return CH_ERR_STORAGE;
	case ERR_SHUTTING_DOWN: return CH_ERR_SHUTTING_DOWN;
	case ERR_TOO_LARGE: return CH_ERR_TOO_LARGE;
	case ERR_DENIED: return CH_ERR_DENIED;
	case ERR_UNKNOWN_HANDLER: return CH_ERR_UNKNOWN_HANDLER;
	case ERR_TIMEOUT: return CH_ERR_TIMEOUT;
	case ERR_AUTH: return CH_ERR_AUTH;
	case ERR_CLOSED: return CH_ERR_CLOSED;
	default: return CH_ERR_INTERNAL;
	}
}

Chorus__TaskState codec_state_to_wire(int state)
{
	if (state < TASK_UNKNOWN || state > TASK_LOST)
		return CHORUS__TASK_STATE__TASK_STATE_UNKNOWN;
	return (Chorus__TaskState)state;
}

int codec_state_from_wire(Chorus__TaskState s)
{
	if ((int)s < TASK_UNKNOWN || (int)s > TASK_LOST)
		return TASK_UNKNOWN;
	return (int)s;
}

void codec_result_fill(Chorus__TaskResult *r, const struct task *t)
{
	chorus__task_result__init(r);
	r->task_id = t->id;
	/* handed back by a paused member: its coordinator reads "not started" */
	r->state = t->handed_back ? CHORUS__TASK_STATE__TASK_QUEUED : codec_state_to_wire(t->state);
	r->output.data = t->output;
	r->output.len = t->output_len;
	r->exit_code = t->exit_code;
	r->error = t->error ? t->error : (char *)"";
	r->attempts = t->attempts;
	r->node = t->node ? t->node : (char *)"";
	r->submitted_ms = t->submitted_ms;
	r->started_ms = t->started_ms;
	r->finished_ms = t->finished_ms;
	r->handler = t->handler ? t->handler : (char *)"";
	r->batch_id = t->batch_id;
	r->batch_index = t->batch_index;
	r->abnormal = t->abnormal;
}

/* Copies n strings into a NULL-terminated array (*dst stays NULL when n is
 * 0). On ENOMEM returns -1; what was copied is counted in *count, so
 * task_free() releases it. */
static int strv_dup(char *const *src, size_t n, char ***dst, uint32_t *count)
{
	if (n == 0)
		return 0;
	*dst = calloc(n + 1, sizeof(char *));
	if (!*dst)
		return -1;
	for (size_t i = 0; i < n; i++) {
		(*dst)[i] = strdup(src[i]);
		if (!(*dst)[i])
			return -1;
		*count = (uint32_t)(i + 1);
	}
	return 0;
}

struct task *codec_task_from_spec(const char *handler, const uint8_t *payload, size_t payload_len,
                                  const Chorus__TaskOptions *o, uint32_t pool)
{
	struct task *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->handler = strdup(handler);
	t->payload = malloc(payload_len ? payload_len : 1);
	if (!t->handler || !t->payload) {
		task_free(t);
		return NULL;
	}
	if (payload_len)
		memcpy(t->payload, payload, payload_len);
	t->payload_len = payload_len;
	if (o) {
		t->opts.timeout_ms = o->timeout_ms;
		t->opts.restart = o->restart == CHORUS__RESTART_POLICY__RESTART_TRANSIENT
		                      ? TASK_RESTART_TRANSIENT
		                      : TASK_RESTART_TEMPORARY;
		t->opts.max_attempts = o->max_attempts;
		t->opts.backoff_ms = o->backoff_ms;
		if (strv_dup(o->argv, o->n_argv, &t->argv, &t->argc) != 0 ||
		    strv_dup(o->require, o->n_require, &t->require, &t->require_count) != 0) {
			task_free(t);
			return NULL;
		}
	}
	t->pool = pool;
	return t;
}

void codec_remote_submit_fill(struct codec_remote_submit *rs, const struct task *t,
                              const uint8_t origin[16], uint32_t wait_ms)
{
	chorus__task_options__init(&rs->opts);
	rs->opts.timeout_ms = t->opts.timeout_ms;
	rs->opts.restart = CHORUS__RESTART_POLICY__RESTART_TEMPORARY;
	rs->opts.n_argv = t->argc;
	rs->opts.argv = t->argv;
	chorus__task_spec__init(&rs->spec);
	rs->spec.handler = t->handler;
	rs->spec.payload.data = t->payload;
	rs->spec.payload.len = t->payload_len;
	rs->spec.opts = &rs->opts;
	chorus__submit_req__init(&rs->req);
	rs->req.task = &rs->spec;
	rs->req.wait_ms = wait_ms;
	rs->req.origin.data = (uint8_t *)origin;
	rs->req.origin.len = 16;
	rs->req.origin_task = t->id;
	rs->req.origin_attempt = codec_origin_attempt(t);
}

uint32_t codec_origin_attempt(const struct task *t)
{
	return (t->attempts & 0xffffu) | (uint32_t)t->placements << 16;
}
