/*
 * ports.h - the interfaces services offer each other through the host
 * (host_port_set / host_port_get). A service depends on a port, never on
 * another service's module.
 */
#ifndef CHORUS_SVC_PORTS_H
#define CHORUS_SVC_PORTS_H

#include <stdint.h>

#include "lib/clock.h"
#include "proto/chorus.pb-c.h"

struct task;

/* "placement": where a task runs (provided by the cluster service, used by
 * the tasks service when the task core asks to dispatch). */
#define PORT_PLACEMENT "placement"
struct placement_port {
	void *ctx;
	/* 0 = run it here, 1 = sent to another member (t->node names it),
	 * -1 = nowhere has room now (keep it queued), 2 = no alive member can
	 * ever run it (t->error set). local_inflight: tasks held by local
	 * workers. */
	int (*place)(void *ctx, struct task *t, uint32_t local_inflight, const struct now *now);
	/* 1 while an attempt of task_id runs on another member. */
	int (*placed_remotely)(void *ctx, uint64_t task_id);
	/* Ask the member running t to cancel it (timeout or cancel). */
	void (*kill)(void *ctx, const struct task *t);
	/* This node's task slots as the cluster sees them. */
	uint32_t (*local_capacity)(void *ctx);
	/* Temporary tasks placed elsewhere are held until the commit that
	 * journals them `running`: release_held sends them (call it right
	 * after that commit); any_held says some wait. */
	void (*release_held)(void *ctx);
	int (*any_held)(void *ctx);
};

/* How an attempt placed on another member ended, as the link saw it. */
struct remote_outcome {
	uint64_t task_id;
	int code;                        /* 0, or the CH_ERR_* of the request */
	const char *err;                 /* message when code != 0 */
	const Chorus__TaskResult *result;/* code 0: the member's answer (may be NULL) */
	const char *member_name;
};

/* "task_sink": outcomes of placed attempts (provided by the tasks service,
 * used by the cluster service). Both are called from the cluster's tick,
 * outside any call into the task core. */
#define PORT_TASK_SINK "task_sink"
struct task_sink_port {
	void *ctx;
	void (*outcome)(void *ctx, const struct remote_outcome *o, const struct now *now);
	/* The member running task_id died, left or was forgotten. */
	void (*member_lost)(void *ctx, uint64_t task_id, const char *why, const struct now *now);
	/* An attempt given up for lost (member_lost above) answered after
	 * all: its result, if it has one, is the task's. */
	void (*late_outcome)(void *ctx, const struct remote_outcome *o, const struct now *now);
	/* Tasks held by this node's workers (the load gossiped to others). */
	uint32_t (*local_load)(void *ctx);
	/* A member became suspect, dead, left or was forgotten (id of
	 * SWIM_ID_BYTES; NULL: too many at once to tell, any of them): what it
	 * placed here and has not started is handed back, since it may be
	 * placing that work elsewhere already. */
	void (*origin_unreachable)(void *ctx, const uint8_t *id, const struct now *now);
};

/* "peers": the other members, as the cluster service knows them (provided
 * by the cluster service, used by the schedule service). */
#define PORT_PEERS "peers"

struct peer_info {
	uint8_t id[16];
	const char *name;  /* valid until the next call into the cluster */
	const char *addr;
	int alive;         /* alive or suspect */
	int self;
};

typedef void (*peer_reply_fn)(void *arg, int code, const Chorus__Envelope *reply,
                              const char *err);

struct peers_port {
	void *ctx;
	/* env to the member with this id; cb NULL: no answer wanted. 0, or a
	 * CH_ERR_* (cb never called then). cb runs on the loop thread. */
	int (*request)(void *ctx, const uint8_t *id, const Chorus__Envelope *env,
	               uint32_t timeout_ms, peer_reply_fn cb, void *arg);
	/* Up to max members (this node included). */
	uint32_t (*members)(void *ctx, struct peer_info *out, uint32_t max);
	/* 1 and *out when the member is known. */
	int (*find)(void *ctx, const uint8_t *id, struct peer_info *out);
	/* A member's address learnt from a message it proved (see
	 * cluster_hint_peer). */
	void (*hint)(void *ctx, const uint8_t *id, const char *addr);
};

/* "task_submit": submits a task to this node's journal under an
 * idempotency key (provided by the tasks service). */
#define PORT_TASK_SUBMIT "task_submit"

struct task_submit_port {
	void *ctx;
	/* spec (not kept), key (not empty): 0 and *task_id (the existing task
	 * when the key was used before), or a CH_ERR_* with a message in err.
	 * The task is journaled by the iteration's commit. */
	int (*submit)(void *ctx, const Chorus__TaskSpec *spec, const char *key, uint64_t *task_id,
	              char *err, size_t err_len);
	/* The state of a task of this node (TASK_* of core/tasks.h), or -1
	 * when unknown (purged or never there). */
	int (*state)(void *ctx, uint64_t task_id);
	/* Cancels a task of this node (cancel_other overlap). */
	void (*cancel)(void *ctx, uint64_t task_id);
	/* Tells cb how a task of this node ended: once, on the loop thread,
	 * after the commit that journals its final state (the same waiters
	 * as a SubmitReq's wait_ms), never from inside the task core, with
	 * code 0 and r (r and what it points to are valid during the call
	 * only). cb also runs, once, with r's state not final when wait_ms
	 * (0 = no limit) passes first, or when the node is closing (the
	 * drain's last iteration). A task that is final already is told
	 * after the next commit; one the node no longer knows, as LOST. A
	 * task submitted in an iteration whose commit failed (a full disk)
	 * never runs: cb is told right after that commit, with
	 * CH_ERR_STORAGE and r NULL. 0, or CH_ERR_NOT_FOUND (no such task) /
	 * CH_ERR_NOMEM (cb never called). cb may call this port again
	 * (submit, watch, unwatch, cancel). */
	int (*watch)(void *ctx, uint64_t task_id, uint32_t wait_ms,
	             void (*cb)(void *arg, int code, const Chorus__TaskResult *r), void *arg);
	/* Drops the watch of task_id that carries arg, if any: its cb is not
	 * called. */
	void (*unwatch)(void *ctx, uint64_t task_id, void *arg);
};


/* The cache (cache_svc.c provides it; the RESP front door uses it): one
 * request as a client would send it (the same CacheReq, one schema), its
 * answer through cb on the loop thread, possibly before submit returns.
 * 0 (cb will be called exactly once), or a CH_ERR_* with err set (cb never
 * called). The request is copied as needed; it need not outlive the call. */
typedef void (*cache_reply_fn)(void *arg, int code, const Chorus__CacheResp *resp,
                               const char *err);
#define PORT_CACHE "cache"
struct cache_port {
	void *ctx;
	int (*submit)(void *ctx, const Chorus__CacheReq *req, cache_reply_fn cb, void *arg,
	              char *err, size_t err_len);
	/* The cache a RESP SELECT index names (config), NULL when none. */
	const char *(*db_name)(void *ctx, uint32_t db);
};

#endif
