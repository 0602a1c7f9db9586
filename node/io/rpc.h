/*
 * rpc.h - the node's transport: the sealed nng listener.
 *
 * Owns: the rep0 socket and its receive contexts ("slots"), the sealed
 * sessions of peers and clients (handshake, replay window, LRU), the
 * answer cache that makes nng's resends safe, per-peer counters of refused
 * frames, parked calls (requests answered later), and the outbox of
 * replies, which is sent only after the loop's commit.
 *
 * It knows no request type: a decoded envelope is handed to
 * `rpc_handler.request` (the dispatcher, node/io/dispatch.c) with a
 * `struct rpc_call`, and the call is answered with rpc_reply*(). Every call
 * is answered exactly once: either at once, or after rpc_park() from
 * whatever later event completes it.
 *
 * Resends (nng's REQ resends a request, byte for byte, on a new pipe after a
 * reconnect): each session remembers its last requests by counter and tag.
 * Only an authentic, byte-identical resend is one (the frame's tag is
 * verified before anything happens, and must equal the request's). A
 * resend of an answered request gets the cached answer again (freshly
 * sealed); a resend of a parked one becomes one more target of its answer
 * (the original context keeps it too); nothing is executed twice.
 *
 * Threading: nng's threads only post "slot N ready" and call `wake`; every
 * function here runs on the loop thread.
 */
#ifndef CHORUS_IO_RPC_H
#define CHORUS_IO_RPC_H

#include <stddef.h>
#include <stdint.h>

#include "proto/chorus.pb-c.h"
#include "proto/seal.h"

struct rpc;
struct slot;
struct session;

/* Sender roles, from the key the session's handshake was made with
 * (proto/seal.h): a node key gives RPC_ROLE_PEER | RPC_ROLE_CLIENT (a
 * coordinator also submits and cancels), a client credential
 * RPC_ROLE_CLIENT only. */
enum rpc_role {
	RPC_ROLE_CLIENT = 1u << 0,
	RPC_ROLE_PEER = 1u << 1,
};

/* One request being handled. The call a handler is given lives until it is
 * answered; a parked call (rpc_park) lives until answered or cancelled. */
struct rpc_call {
	struct rpc *rpc;
	struct slot *slot;        /* where the answer goes (moves on a resend) */
	struct session *sess;
	uint64_t counter;         /* the request's frame counter (resend cache) */
	uint64_t request_id;
	int body_case;            /* Chorus__Envelope__BodyCase */
	unsigned role;            /* enum rpc_role bits of the session */
	const uint8_t *peer_id;   /* the id the peer proved in its handshake (16 bytes) */
	uint8_t persist;          /* answer only after the commit; a failed commit
	                             turns it into CH_ERR_STORAGE */
	uint8_t parked;
	uint8_t answered;
	uint64_t start_ns;        /* monotonic, when the request was taken */
	uint32_t pipe_id;         /* nng pipe it came on (peer address) */
	void *stats;              /* the dispatcher's per-request counters */
	/* a local call (rpc_local_call): no slot, no session; the answer goes
	 * to local_done after the commit */
	void (*local_done)(void *arg, const Chorus__Envelope *answer);
	void *local_arg;
	/* parked only */
#define RPC_REPLY_TARGETS_MAX 3
	struct slot *more[RPC_REPLY_TARGETS_MAX]; /* resends of it: answered too */
	uint32_t more_count;
	void (*on_cancel)(void *arg, struct rpc_call *c);
	void *cancel_arg;
	struct rpc_call *pnext, *pprev;
};

struct rpc_handler {
	void *ctx;
	/* A decoded request. env is valid during the call only. */
	void (*request)(void *ctx, struct rpc_call *c, const Chorus__Envelope *env);
	/* c was answered (error_code 0 or the CH_ERR_* sent), about to be
	 * released: count it. */
	void (*answered)(void *ctx, const struct rpc_call *c, int error_code);
};

struct rpc_config {
	const char *listen;
	size_t frame_bytes_max;
	const struct seal_keyring *kr;
	const uint8_t *node_id;        /* 16 bytes */
	void (*wake)(void *arg);       /* from nng threads: wake the loop */
	void *wake_arg;
};

/* Creates the transport (not listening yet). */
int rpc_create(struct rpc **out, const struct rpc_config *cfg, const struct rpc_handler *h,
               char *err, size_t err_len);
/* Starts listening; requests then arrive through rpc_take_ready(). */
int rpc_listen(struct rpc *r, char *err, size_t err_len);
/* Stops nng (waits for its callbacks) and frees everything; parked calls
 * are dropped (their cancel callbacks run). */
void rpc_destroy(struct rpc *r);

/* Handles every frame that arrived: handshakes, refused frames, resends,
 * and decoded requests (handed to the handler). now_mono_ms ages sessions. */
void rpc_take_ready(struct rpc *r, uint64_t now_mono_ms);
/* Sends the outbox (after the commit). committed = 0: the commit failed,
 * so persist answers become CH_ERR_STORAGE errors. */
void rpc_send_outbox(struct rpc *r, int committed);
/* Forgets idle sessions. */
void rpc_tick(struct rpc *r, uint64_t now_mono_ms);

/* ---- local calls ----
 * A request made inside the node (the HTTP service's API) goes through the
 * request table exactly as a client session's would: roles (role bits),
 * draining, persist-before-promise, parking. done(arg, answer) runs once,
 * on the loop, from rpc_send_outbox after the iteration's commit: answer is
 * the answer envelope (an Error body for failures; a persist answer whose
 * commit failed is a CH_ERR_STORAGE error), valid during the call only. If
 * the transport is destroyed first (the node stops with the call parked or
 * queued), done runs with answer NULL. Returns 0, or -1 when the request
 * could not be made (then done never runs). */
typedef void (*rpc_local_done_fn)(void *arg, const Chorus__Envelope *answer);
int rpc_local_call(struct rpc *r, const Chorus__Envelope *env, unsigned role,
                   rpc_local_done_fn done, void *arg);

/* ---- answering ---- */

/* Packs env (its request_id, version and sender are set here) as the answer
 * to c. An answer over the frame cap becomes a CH_ERR_TOO_LARGE error. */
void rpc_reply(struct rpc_call *c, Chorus__Envelope *env);
/* Answers c with one body: sets env.body_case and the union member. */
#define rpc_reply_body(c, bodycase, member, value)                                             \
	do {                                                                                   \
		Chorus__Envelope env_ = CHORUS__ENVELOPE__INIT;                                \
		env_.body_case = (bodycase);                                                   \
		env_.member = (value);                                                         \
		rpc_reply((c), &env_);                                                         \
	} while (0)
/* Answers c with an Error (CH_ERR_* code). */
void rpc_reply_error(struct rpc_call *c, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Keeps c open: returns the call to answer later (a new pointer: c is no
 * longer valid), or NULL after answering c with CH_ERR_NOMEM. on_cancel
 * runs if the call's session is dropped before the answer; the call is
 * then freed and must not be answered. */
struct rpc_call *rpc_park(struct rpc_call *c, void (*on_cancel)(void *arg, struct rpc_call *c),
                          void *arg);
/* The largest envelope an answer may have (the frame cap less a margin). */
size_t rpc_reply_bytes_max(const struct rpc *r);

/* Counts c's frame as refused (verdict SEAL_*) for its peer, with a
 * rate-limited log line, e.g. a request of an unknown type. */
void rpc_count_refused(struct rpc_call *c, int verdict);

/* New keys (SIGHUP): later handshakes and REJECTs use kr (the caller keeps
 * it alive while the transport runs); sessions made with a key kr does not
 * hold are dropped. Returns how many were. */
uint32_t rpc_set_keyring(struct rpc *r, const struct seal_keyring *kr);

/* ---- status ---- */
uint32_t rpc_session_count(const struct rpc *r);
/* Live sessions per key id (rotation: when the old key has none, it can
 * go). Fills at most max entries; returns how many. */
struct rpc_key_sessions {
	uint32_t key_id;
	uint32_t sessions;
	uint32_t node_sessions; /* of which made with a node key */
};
uint32_t rpc_key_sessions(const struct rpc *r, struct rpc_key_sessions *out, uint32_t max);
/* Per-peer refused-frame counters, for status. */
int rpc_peer_counters(struct rpc *r, Chorus__PeerCounters ***out, size_t *n);
void rpc_peer_counters_free(Chorus__PeerCounters **p, size_t n);

#endif
