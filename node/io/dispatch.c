/*
 * dispatch.c - the request table (see dispatch.h).
 */
#include "io/dispatch.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "chorus.h"
#include "io/log.h"
#include "lib/clock.h"
#include "proto/seal.h"

#define BODY_CASES_MAX 128

struct req_entry {
	struct req_spec spec;
	void *svc;
	int used;
	struct req_stats stats;
};

struct dispatch {
	struct req_entry table[BODY_CASES_MAX];
	int draining;
	int (*is_leader)(void *arg);
	void *leader_arg;
};

struct dispatch *dispatch_create(void)
{
	return calloc(1, sizeof(struct dispatch));
}

void dispatch_destroy(struct dispatch *d)
{
	free(d);
}

int dispatch_register(struct dispatch *d, const struct req_spec *spec, void *svc)
{
	if (spec->body_case <= 0 || spec->body_case >= BODY_CASES_MAX || !spec->handler ||
	    !spec->name || !spec->roles || d->table[spec->body_case].used)
		return -1;
	struct req_entry *e = &d->table[spec->body_case];
	e->spec = *spec;
	e->svc = svc;
	e->used = 1;
	return 0;
}

void dispatch_set_draining(struct dispatch *d, int draining)
{
	d->draining = draining;
}

void dispatch_set_leader_hook(struct dispatch *d, int (*is_leader)(void *arg), void *arg)
{
	d->is_leader = is_leader;
	d->leader_arg = arg;
}

static void on_request(void *ctx, struct rpc_call *c, const Chorus__Envelope *env)
{
	struct dispatch *d = ctx;
	int bc = (int)env->body_case;
	struct req_entry *e = bc > 0 && bc < BODY_CASES_MAX && d->table[bc].used ? &d->table[bc]
	                                                                         : NULL;
	if (!e) {
		rpc_count_refused(c, SEAL_MALFORMED);
		rpc_reply_error(c, CH_ERR_PROTOCOL, "unknown request type %d", bc);
		return;
	}
	c->stats = &e->stats;
	e->stats.calls++;
	if (!(e->spec.roles & c->role)) {
		e->stats.refused++;
		log_limited(LOG_WARN, "rpc", e->spec.name, 10000,
		            "refused a %s request from a session without the role for it",
		            e->spec.name);
		rpc_reply_error(c, CH_ERR_DENIED, "%s is not allowed for this sender", e->spec.name);
		return;
	}
	if ((e->spec.flags & REQ_REFUSE_DRAINING) && d->draining) {
		e->stats.refused++;
		rpc_reply_error(c, CH_ERR_SHUTTING_DOWN, "node is shutting down: not accepting %s",
		                e->spec.name);
		return;
	}
	if ((e->spec.flags & REQ_LEADER_ONLY) && !(d->is_leader && d->is_leader(d->leader_arg))) {
		e->stats.refused++;
		rpc_reply_error(c, CH_ERR_DENIED, "%s is served by the leader only", e->spec.name);
		return;
	}
	c->persist = (e->spec.flags & REQ_PERSIST) != 0;
	e->spec.handler(e->svc, c, env);
	/* a handler answers before it returns, unless it may park */
	assert(c->answered || (c->parked && (e->spec.flags & REQ_MAY_PARK)));
}

static void on_answered(void *ctx, const struct rpc_call *c, int error_code)
{
	(void)ctx;
	struct req_stats *s = c->stats;
	if (!s)
		return;
	if (error_code)
		s->errors++;
	uint64_t ns = clock_mono_ns() - c->start_ns;
	uint64_t us = ns / 1000u;
	s->latency_sum_us += us;
	int b = 0;
	while (b < DISPATCH_BUCKETS - 1 && us >= (UINT64_C(16) << b))
		b++;
	s->latency_buckets[b]++;
}

struct rpc_handler dispatch_rpc_handler(struct dispatch *d)
{
	struct rpc_handler h = {d, on_request, on_answered};
	return h;
}

const struct req_stats *dispatch_next_stats(const struct dispatch *d, int *cursor,
                                            const char **name)
{
	while (*cursor < BODY_CASES_MAX) {
		const struct req_entry *e = &d->table[(*cursor)++];
		if (e->used) {
			*name = e->spec.name;
			return &e->stats;
		}
	}
	return NULL;
}
