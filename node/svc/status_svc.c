/*
 * status_svc.c - the status service (see status_svc.h). It names no other
 * service: each adds its own part through service_ops.status.
 */
#include "svc/status_svc.h"

#include <stdio.h>
#include <stdlib.h>

#include "chorus.h"
#include "io/dispatch.h"
#include "io/rpc.h"
#include "lib/arena.h"
#include "svc/service.h"

struct status_svc {
	struct host *host;
};

static void handle_status(void *svc, struct rpc_call *c, const Chorus__Envelope *env)
{
	struct status_svc *s = svc;
	(void)env;
	struct arena a = {0};
	Chorus__StatusResp st = CHORUS__STATUS_RESP__INIT;
	host_status_fill(s->host, &st, &a);
	rpc_reply_body(c, CHORUS__ENVELOPE__BODY_STATUS_RESP, status_resp, &st);
	arena_free(&a);
}

static const struct req_spec STATUS_REQUEST = {
	CHORUS__ENVELOPE__BODY_STATUS, "status", handle_status, RPC_ROLE_CLIENT | RPC_ROLE_PEER, 0,
};

static int svc_start(void *svc, struct host *h, const struct now *now, char *err, size_t err_len)
{
	(void)now;
	if (dispatch_register(host_dispatch(h), &STATUS_REQUEST, svc) != 0) {
		snprintf(err, err_len, "request status registered twice");
		return -1;
	}
	return 0;
}

static void svc_stop(void *svc)
{
	free(svc);
}

static const struct service_ops STATUS_OPS = {
	.name = "status",
	.start = svc_start,
	.stop = svc_stop,
};

int status_svc_register(struct host *h)
{
	struct status_svc *s = calloc(1, sizeof(*s));
	if (!s)
		return -1;
	s->host = h;
	if (host_register(h, &STATUS_OPS, s) != 0) {
		free(s);
		return -1;
	}
	return 0;
}
