/*
 * cluster_svc.c - the cluster service (see cluster_svc.h).
 *
 * Start opens no connection (the links start nng's threads, and workers
 * fork after this service starts): the join through the seeds happens on
 * the first tick. The incarnation is persisted in the iteration's
 * transaction whenever SWIM raised it, so a restarted node rejoins above
 * any incarnation it used (SWIM §4.2: only a member raises its own).
 * Drain: leave the cluster (others mark it `left`, not dead) and wait until
 * the leave was gossiped, at most LEAVE_WAIT_MS.
 */
#include "svc/cluster_svc.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "chorus.h"
#include "config.h"
#include "io/cluster.h"
#include "io/dispatch.h"
#include "io/log.h"
#include "io/rpc.h"
#include "io/store.h"
#include "lib/arena.h"
#include "proto/seal.h"
#include "svc/ports.h"
#include "svc/service.h"

#define LEAVE_WAIT_MS 2000

struct cluster_svc {
	struct host *host;
	const struct config *cfg;
	struct cluster *cluster;
	uint32_t incarnation_saved;
	int joined;
	uint64_t leave_deadline_ms;
	struct placement_port placement;
	struct peers_port peers;
};

/* ---- requests ---- */

static void handle_gossip(void *svc, struct rpc_call *c, const Chorus__Envelope *env)
{
	struct cluster_svc *s = svc;
	const Chorus__Gossip *g = env->gossip;
	/* a member speaks for itself only: SWIM's sender must be the member
	 * that made this session (its id is under the handshake's MACs) */
	if (g->from.len != SEAL_ID_BYTES || !c->peer_id ||
	    memcmp(g->from.data, c->peer_id, SEAL_ID_BYTES) != 0) {
		log_limited(LOG_WARN, "cluster", "gossip-impostor", 10000,
		            "refused gossip whose sender is not the member of its session");
		rpc_reply_error(c, CH_ERR_DENIED, "gossip sender does not match the session");
		return;
	}
	if (cluster_on_gossip(s->cluster, g, host_now(s->host)) != 0) {
		rpc_reply_error(c, CH_ERR_PROTOCOL, "malformed gossip");
		return;
	}
	Chorus__GossipAck ack = CHORUS__GOSSIP_ACK__INIT;
	rpc_reply_body(c, CHORUS__ENVELOPE__BODY_GOSSIP_ACK, gossip_ack, &ack);
}

static void handle_members(void *svc, struct rpc_call *c, const Chorus__Envelope *env)
{
	struct cluster_svc *s = svc;
	(void)env;
	struct arena a = {0};
	Chorus__MembersResp mr = CHORUS__MEMBERS_RESP__INIT;
	if (cluster_members(s->cluster, &a, host_now(s->host), &mr.members, &mr.n_members) != 0)
		rpc_reply_error(c, CH_ERR_NOMEM, "out of memory");
	else
		rpc_reply_body(c, CHORUS__ENVELOPE__BODY_MEMBERS_RESP, members_resp, &mr);
	arena_free(&a);
}

static const struct req_spec REQUESTS[] = {
	{CHORUS__ENVELOPE__BODY_GOSSIP, "gossip", handle_gossip, RPC_ROLE_PEER, 0},
	{CHORUS__ENVELOPE__BODY_MEMBERS, "members", handle_members, RPC_ROLE_CLIENT | RPC_ROLE_PEER,
	 0},
};

/* ---- the placement port ---- */

static int port_place(void *ctx, struct task *t, uint32_t local_inflight, const struct now *now)
{
	struct cluster_svc *s = ctx;
	return cluster_place(s->cluster, t, local_inflight, now);
}

static int port_peer_request(void *ctx, const uint8_t *id, const Chorus__Envelope *env,
                             uint32_t timeout_ms, peer_reply_fn cb, void *arg)
{
	struct cluster_svc *s = ctx;
	return cluster_peer_request(s->cluster, id, env, timeout_ms, cb, arg);
}

static uint32_t port_members(void *ctx, struct peer_info *out, uint32_t max)
{
	struct cluster_svc *s = ctx;
	return cluster_peer_list(s->cluster, out, max);
}

static int port_find(void *ctx, const uint8_t *id, struct peer_info *out)
{
	struct cluster_svc *s = ctx;
	return cluster_member_find(s->cluster, id, out);
}

static void port_hint(void *ctx, const uint8_t *id, const char *addr)
{
	struct cluster_svc *s = ctx;
	cluster_hint_peer(s->cluster, id, addr);
}

static void port_release_held(void *ctx)
{
	struct cluster_svc *s = ctx;
	cluster_release_held(s->cluster);
}

static int port_any_held(void *ctx)
{
	struct cluster_svc *s = ctx;
	return cluster_any_held(s->cluster);
}

static int port_placed_remotely(void *ctx, uint64_t task_id)
{
	struct cluster_svc *s = ctx;
	return cluster_placed_remotely(s->cluster, task_id);
}

static void port_kill(void *ctx, const struct task *t)
{
	struct cluster_svc *s = ctx;
	cluster_kill(s->cluster, t);
}

static uint32_t port_local_capacity(void *ctx)
{
	struct cluster_svc *s = ctx;
	return s->cfg->workers * s->cfg->prefetch;
}

/* A member's state as an event (svc/service.h). */
static void member_event(void *arg, const char *member, const char *message)
{
	struct cluster_svc *s = arg;
	host_event(s->host, "member", member, "%s", message);
}

/* ---- service ops ---- */

static int svc_start(void *svc, struct host *h, const struct now *now, char *err, size_t err_len)
{
	struct cluster_svc *s = svc;
	const struct config *cfg = host_config(h);
	struct store *st = host_store(h);
	s->cfg = cfg;
	for (size_t i = 0; i < sizeof(REQUESTS) / sizeof(REQUESTS[0]); i++)
		if (dispatch_register(host_dispatch(h), &REQUESTS[i], s) != 0) {
			snprintf(err, err_len, "request %s registered twice", REQUESTS[i].name);
			return -1;
		}
	char v[32];
	uint32_t inc = 0;
	if (store_meta_get(st, "incarnation", v, sizeof(v)) == 0)
		inc = (uint32_t)strtoul(v, NULL, 10);
	inc++;
	snprintf(v, sizeof(v), "%u", inc);
	if (store_begin(st) != 0 || store_meta_put(st, "incarnation", v) != 0 ||
	    store_commit(st) != 0) {
		snprintf(err, err_len, "cannot record the incarnation");
		return -1;
	}
	s->incarnation_saved = inc;
	uint64_t seed;
	randombytes_buf(&seed, sizeof(seed));
	struct cluster_config cc = {
		.node_id = host_node_id(h),
		.name = cfg->name,
		.addr = cfg->advertise[0] ? cfg->advertise : cfg->listen,
		.tags = (const char *const *)cfg->tags,
		.tag_count = cfg->tag_count,
		.seeds = (const char *const *)cfg->seeds,
		.seed_count = cfg->seed_count,
		.keyring = host_keyring(h),
		.capacity = cfg->workers * cfg->prefetch,
		.incarnation = inc,
		.seed = seed,
		.period_ms = cfg->gossip_period_ms,
		.probe_timeout_ms = cfg->probe_timeout_ms,
		.reap_after_ms = cfg->reap_after_ms,
		.frame_bytes_max = cfg->frame_bytes_max,
		.wake = host_wake,
		.wake_arg = h,
		.member_event = member_event,
		.event_arg = s,
	};
	if (cluster_start(&s->cluster, &cc, now, err, err_len) != 0)
		return -1;
	s->placement = (struct placement_port){s,
	                                       port_place,
	                                       port_placed_remotely,
	                                       port_kill,
	                                       port_local_capacity,
	                                       port_release_held,
	                                       port_any_held};
	if (host_port_set(h, PORT_PLACEMENT, &s->placement) != 0) {
		snprintf(err, err_len, "port %s provided twice", PORT_PLACEMENT);
		return -1;
	}
	s->peers = (struct peers_port){s, port_peer_request, port_members, port_find, port_hint};
	if (host_port_set(h, PORT_PEERS, &s->peers) != 0) {
		snprintf(err, err_len, "port %s provided twice", PORT_PEERS);
		return -1;
	}
	return 0;
}

static uint64_t svc_next_deadline(void *svc)
{
	struct cluster_svc *s = svc;
	return s->joined ? cluster_next_deadline(s->cluster) : 0;
}

static void svc_tick(void *svc, const struct now *now)
{
	struct cluster_svc *s = svc;
	if (!s->joined) {
		s->joined = 1;
		if (cluster_join(s->cluster, now) != 0)
			log_warn("cluster", "cannot join through the seeds");
	}
	const struct task_sink_port *sink = host_port_get(s->host, PORT_TASK_SINK);
	uint32_t load = sink ? sink->local_load(sink->ctx) : 0;
	cluster_tick(s->cluster, sink, load, now);
}

static void svc_on_signal(void *svc, int signo, const struct now *now)
{
	struct cluster_svc *s = svc;
	(void)now;
	if (signo == SIGHUP) /* the host reloaded the keys first */
		cluster_set_keyring(s->cluster, host_keyring(s->host));
}

static int svc_flush(void *svc, struct store *st)
{
	struct cluster_svc *s = svc;
	uint32_t inc = cluster_incarnation(s->cluster);
	if (inc != s->incarnation_saved) {
		char v[16];
		snprintf(v, sizeof(v), "%u", inc);
		if (store_meta_put(st, "incarnation", v) != 0)
			return -1;
		s->incarnation_saved = inc;
	}
	return 0;
}

static void svc_drain(void *svc, const struct now *now)
{
	struct cluster_svc *s = svc;
	s->leave_deadline_ms = now->mono_ms + LEAVE_WAIT_MS;
	cluster_leave(s->cluster, now);
}

static int svc_drained(void *svc, const struct now *now)
{
	struct cluster_svc *s = svc;
	return cluster_leave_done(s->cluster) || now->mono_ms >= s->leave_deadline_ms;
}

static void svc_status(void *svc, Chorus__StatusResp *st, struct arena *a)
{
	struct cluster_svc *s = svc;
	struct now now = clock_read();
	(void)cluster_members(s->cluster, a, &now, &st->members, &st->n_members);
}

static void svc_stop(void *svc)
{
	struct cluster_svc *s = svc;
	cluster_stop(s->cluster);
	free(s);
}

static const struct service_ops CLUSTER_OPS = {
	.name = "cluster",
	.start = svc_start,
	.next_deadline = svc_next_deadline,
	.on_signal = svc_on_signal,
	.tick = svc_tick,
	.flush = svc_flush,
	.drain = svc_drain,
	.drained = svc_drained,
	.status = svc_status,
	.stop = svc_stop,
};

int cluster_svc_register(struct host *h)
{
	struct cluster_svc *s = calloc(1, sizeof(*s));
	if (!s)
		return -1;
	s->host = h;
	if (host_register(h, &CLUSTER_OPS, s) != 0) {
		free(s);
		return -1;
	}
	return 0;
}
