/*
 * dispatch.h - the request table: every request type the node serves, the
 * service that handles it, who may send it and how it is answered.
 *
 * Model: Redis's command table (redisCommand: name, proc, arity, flags;
 * processCommand checks the flags in one place before call()). Here the
 * table is indexed by the envelope's body case; a service registers its
 * entries at start-up and the dispatcher enforces, before the handler runs:
 *   roles            the sender's session must hold one of them (client,
 *                    peer), else CH_ERR_DENIED;
 *   REQ_REFUSE_DRAINING  refused with CH_ERR_SHUTTING_DOWN once SIGTERM
 *                    started the drain;
 *   REQ_PERSIST      the answer is sent only after the iteration's commit,
 *                    and a failed commit turns it into CH_ERR_STORAGE
 *                    ("persist before promise");
 *   REQ_MAY_PARK     the handler may keep the call open (rpc_park); any
 *                    other handler must answer before it returns (asserted);
 *   REQ_LEADER_ONLY  served only while the leader hook says so (election
 *                    comes with the Election issue), else CH_ERR_DENIED.
 * It also keeps counters per request type: calls, errors, refusals and a
 * latency histogram (request taken -> answer queued), shown by `status`.
 *
 * Threading: loop thread only.
 */
#ifndef CHORUS_IO_DISPATCH_H
#define CHORUS_IO_DISPATCH_H

#include <stdint.h>

#include "io/rpc.h"
#include "proto/chorus.pb-c.h"

enum req_flags {
	REQ_REFUSE_DRAINING = 1u << 0,
	REQ_PERSIST = 1u << 1,
	REQ_MAY_PARK = 1u << 2,
	REQ_LEADER_ONLY = 1u << 3,
};

/* Handles one request of its type; answers c (rpc_reply*) or parks it. */
typedef void (*req_handler_fn)(void *svc, struct rpc_call *c, const Chorus__Envelope *env);

struct req_spec {
	int body_case;          /* Chorus__Envelope__BodyCase of the request */
	const char *name;       /* for status and logs: "submit", "gossip" */
	req_handler_fn handler;
	unsigned roles;         /* enum rpc_role bits allowed */
	unsigned flags;         /* enum req_flags */
};

/* Latency buckets: bucket i counts answers within 2^(i+4) microseconds
 * (16 us .. 2^(DISPATCH_BUCKETS+2) us); the last counts the rest. */
#define DISPATCH_BUCKETS 24

struct req_stats {
	uint64_t calls, errors, refused;
	uint64_t latency_buckets[DISPATCH_BUCKETS];
	uint64_t latency_sum_us;
};

struct dispatch;

struct dispatch *dispatch_create(void);
void dispatch_destroy(struct dispatch *d);

/* Registers a request type for a service. -1 when the body case is out of
 * range, already taken, or the spec is incomplete (a programming error:
 * the node refuses to start). */
int dispatch_register(struct dispatch *d, const struct req_spec *spec, void *svc);

/* The drain flag and the leader hook checked for every request. */
void dispatch_set_draining(struct dispatch *d, int draining);
void dispatch_set_leader_hook(struct dispatch *d, int (*is_leader)(void *arg), void *arg);

/* The rpc_handler that feeds requests to the table. */
struct rpc_handler dispatch_rpc_handler(struct dispatch *d);

/* Counters, for status: iteration over registered types in body-case
 * order; *cursor = 0 first; NULL at the end. */
const struct req_stats *dispatch_next_stats(const struct dispatch *d, int *cursor,
                                            const char **name);

#endif
