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
struct tasks;
struct swim;

struct cluster_config {
	const uint8_t *node_id;      /* 16 bytes */
	const char *name;
	const char *addr;            /* advertised address */
	const char *const *tags;
	uint32_t tag_count;
	const char *const *seeds;
	uint32_t seed_count;
	const uint8_t *secret;       /* 32 bytes, for the links */
	uint32_t capacity;           /* local task slots (default pool) */
	uint32_t incarnation;        /* start incarnation */
	uint64_t seed;               /* PRNG seed */
	uint32_t period_ms, probe_timeout_ms, reap_after_ms;
	size_t frame_bytes_max;
	void (*wake)(void *arg);     /* called from nng threads: wake the loop */
	void *wake_arg;
};

struct cluster;

int cluster_start(struct cluster **out, const struct cluster_config *cfg, uint64_t now_ms,
                  char *err, size_t err_len);
/* Closes every link (waits for their callbacks), frees everything. */
void cluster_stop(struct cluster *c);

/* A Gossip request from a peer. 0, or CH_ERR_PROTOCOL for a malformed one. */
int cluster_on_gossip(struct cluster *c, const Chorus__Gossip *g, uint64_t now_ms);

/* Time passes (SWIM), completions of placed tasks are fed to the task
 * core, tasks of members that died end or are retried, load is gossiped. */
void cluster_tick(struct cluster *c, struct tasks *ts, uint32_t load, const struct now *now);
uint64_t cluster_next_deadline(const struct cluster *c);

/* Where t runs: 0 = here (the caller dispatches locally), 1 = sent to
 * another member, -1 = nowhere has room now (wait), 2 = no alive member can
 * ever run it (t->error set). local_inflight: tasks held by local workers. */
int cluster_place(struct cluster *c, struct task *t, uint32_t local_inflight, uint64_t now_ms);
/* 1 when t was placed on another member (and is not back yet). */
int cluster_placed_remotely(const struct cluster *c, uint64_t task_id);
/* Asks the member running t to cancel it (timeout or cancel). */
void cluster_kill(struct cluster *c, const struct task *t);

/* Graceful leave; cluster_leave_done() once others have been told. */
void cluster_leave(struct cluster *c, uint64_t now_ms);
int cluster_leave_done(const struct cluster *c);

/* This node's incarnation (persist it; start above it after a restart). */
uint32_t cluster_incarnation(const struct cluster *c);
const struct swim *cluster_swim(const struct cluster *c);

/* Members as protobuf MemberInfo (arrays malloc'd; free with
 * cluster_members_free). now_ms/wall_ms convert state-change times. */
int cluster_members(const struct cluster *c, Chorus__MemberInfo ***out, size_t *n);
void cluster_members_free(Chorus__MemberInfo **m, size_t n);

#endif
