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
#include "lib/prom.h"
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

/* The node's metrics (what /metrics serves): every service's and the
 * host's, built here on the loop thread. */
static void handle_metrics(void *svc, struct rpc_call *c, const Chorus__Envelope *env)
{
	struct status_svc *s = svc;
	(void)env;
	struct prom p;
	prom_init(&p);
	host_metrics_fill(s->host, &p);
	if (p.oom) {
		rpc_reply_error(c, CH_ERR_NOMEM, "out of memory building the metrics");
	} else {
		Chorus__MetricsResp mr = CHORUS__METRICS_RESP__INIT;
		mr.text = (char *)prom_text(&p, NULL);
		rpc_reply_body(c, CHORUS__ENVELOPE__BODY_METRICS_RESP, metrics_resp, &mr);
	}
	prom_free(&p);
}

static const struct req_spec METRICS_REQUEST = {
	CHORUS__ENVELOPE__BODY_METRICS, "metrics", handle_metrics, RPC_ROLE_CLIENT | RPC_ROLE_PEER, 0,
};

static int svc_start(void *svc, struct host *h, const struct now *now, char *err, size_t err_len)
{
	(void)now;
	if (dispatch_register(host_dispatch(h), &STATUS_REQUEST, svc) != 0) {
		snprintf(err, err_len, "request status registered twice");
		return -1;
	}
	if (dispatch_register(host_dispatch(h), &METRICS_REQUEST, svc) != 0) {
		snprintf(err, err_len, "request metrics registered twice");
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
