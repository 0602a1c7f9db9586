/*
 * cluster.h - the node's side of the cluster: SWIM membership over sealed
 * links, and placing tasks on other members.
 *
 * Owns: the SWIM core (node/core/swim.c) of this node, one lazy libchorus
 * link (client_internal.h) per peer address, and the record of every task
 * attempt this node placed on another member. Runs on the loop thread; the
 * links' callbacks (nng threads) only queue completions and wake the loop.
 *
 * Mapping to the wire: each SWIM message is one Gossip request, answered at
 * once with GossipAck (SWIM's own answers are messages of their own, so the
 * req/rep pairing only carries the transport). A placed task is a SubmitReq
 * with origin fields and a long wait: the member runs it as an ephemeral
 * task (not journaled there) and answers with the result. See
 * docs/membership.md and docs/design.md.
 */
#ifndef CHORUS_IO_CLUSTER_H
#define CHORUS_IO_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "lib/clock.h"
#include "proto/chorus.pb-c.h"

struct task;
struct swim;
struct arena;
struct task_sink_port;
struct seal_keyring;

struct cluster_config {
	const uint8_t *node_id;      /* 16 bytes */
	const char *name;
	const char *addr;            /* advertised address */
	const char *const *tags;
	uint32_t tag_count;
	const char *const *seeds;
	uint32_t seed_count;
	const struct seal_keyring *keyring; /* node keys for the links (the cluster
	                                       takes its own reference) */
	uint32_t capacity;           /* local task slots (default pool) */
	uint32_t incarnation;        /* start incarnation */
	uint64_t seed;               /* PRNG seed */
	uint32_t period_ms, probe_timeout_ms, reap_after_ms;
	size_t frame_bytes_max;
	void (*wake)(void *arg);     /* called from nng threads: wake the loop */
	void *wake_arg;
	/* a member joined or changed state; message without the member's
	 * name, e.g. "suspect (was alive)" (loop thread; NULL: not told) */
	void (*member_event)(void *arg, const char *member, const char *message);
	void *event_arg;
};

struct cluster;

/* Creates the membership core and the link table; opens no connection
 * (call cluster_join from the loop once the node runs). */
int cluster_start(struct cluster **out, const struct cluster_config *cfg, const struct now *now,
                  char *err, size_t err_len);
/* New keys (SIGHUP): the links' next handshakes use kr's primary key. */
void cluster_set_keyring(struct cluster *c, const struct seal_keyring *kr);
/* Starts joining through the seeds (no-op without seeds). */
int cluster_join(struct cluster *c, const struct now *now);
/* Closes every link (waits for their callbacks), frees everything. */
void cluster_stop(struct cluster *c);

/* A Gossip request from a peer. 0, or CH_ERR_PROTOCOL for a malformed one. */
int cluster_on_gossip(struct cluster *c, const Chorus__Gossip *g, const struct now *now);

/* Time passes (SWIM, on the monotonic clock); outcomes of placed attempts
 * and of attempts on members that died go to `sink`; load is gossiped. */
void cluster_tick(struct cluster *c, const struct task_sink_port *sink, uint32_t load,
                  const struct now *now);
/* Monotonic ms. */
uint64_t cluster_next_deadline(const struct cluster *c);

/* Where t runs: 0 = here (the caller dispatches locally), 1 = sent to
 * another member, -1 = nowhere has room now (wait), 2 = no alive member can
 * ever run it (t->error set). local_inflight: tasks held by local workers. */
int cluster_place(struct cluster *c, struct task *t, uint32_t local_inflight,
                  const struct now *now);
/* The answer to a peer request, on the loop thread (from cluster_tick):
 * code 0 and reply (freed after the call: copy what you keep), or a
 * CH_ERR_* code and err. */
typedef void (*cluster_reply_fn)(void *arg, int code, const Chorus__Envelope *reply,
                                 const char *err);
/* Sends env (not kept) to the member with this id over its peer link; cb
 * NULL: the answer is not wanted. Dead members are tried too (their
 * address is still known until they are reaped). 0, or CH_ERR_UNREACHABLE
 * (unknown, or ourselves) or another CH_ERR_* (cb is then never called). */
int cluster_peer_request(struct cluster *c, const uint8_t *id, const Chorus__Envelope *env,
                         uint32_t timeout_ms, cluster_reply_fn cb, void *arg);

struct peer_info;
/* Another service learnt a member's address from a message it proved
 * (a raft message's sender): when SWIM does not know it alive, it is
 * reached at that address and joined through. */
void cluster_hint_peer(struct cluster *c, const uint8_t *id, const char *addr);
/* Members (this node included), up to max; strings owned by the cluster. */
uint32_t cluster_peer_list(struct cluster *c, struct peer_info *out, uint32_t max);
int cluster_member_find(struct cluster *c, const uint8_t *id, struct peer_info *out);

/* Sends the attempts of temporary tasks placed since the last call: call
 * it once the commit that journals them `running` is done. */
void cluster_release_held(struct cluster *c);
/* 1 while some placed attempt waits for cluster_release_held. */
int cluster_any_held(const struct cluster *c);
/* 1 when t was placed on another member (and is not back yet). */
int cluster_placed_remotely(const struct cluster *c, uint64_t task_id);
/* Asks the member running t to cancel it (timeout or cancel). */
void cluster_kill(struct cluster *c, const struct task *t);

/* Graceful leave; cluster_leave_done() once others have been told. */
void cluster_leave(struct cluster *c, const struct now *now);
int cluster_leave_done(const struct cluster *c);

/* This node's incarnation (persist it; start above it after a restart). */
uint32_t cluster_incarnation(const struct cluster *c);
const struct swim *cluster_swim(const struct cluster *c);

/* Members as protobuf MemberInfo, allocated from the arena (strings point
 * into the core: valid until the next call into it). since_ms is wall time
 * (the core keeps monotonic times; now converts). */
int cluster_members(const struct cluster *c, struct arena *a, const struct now *now,
                    Chorus__MemberInfo ***out, size_t *n);

#endif
