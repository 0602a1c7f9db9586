/*
 * client_internal.h - libchorus's request machinery with the wire showing,
 * for chorusd's node-to-node links (gossip, remote task execution).
 *
 * For chorusd only: not installed, and the functions are hidden from the
 * shared libchorus.so (link the static chorus_static library to use them).
 * A ch_client opened here is the same object as one from ch_client_connect:
 * the handshake, the sealed frames, the request contexts, the re-handshake on
 * "unknown session" and the timeouts are shared code, and every ch_ call of
 * chorus.h works on it too.
 *
 * Sessions. A client may have no session yet (chi_client_open_lazy). The
 * first request that finds none performs the handshake within its own
 * timeout; requests that arrive while a handshake is in flight wait for it
 * instead of starting their own (the node keeps a bounded LRU of sessions, so
 * a burst of handshakes would evict other peers' sessions). A handshake that
 * fails with a definite answer (a WELCOME that does not verify, the wrong
 * member, CH_ERR_PROTOCOL, ...) fails the requests that waited on it; one
 * that timed out lets each waiter with time left try again. A REJECT of the
 * HELLO is unauthenticated, so it is only a hint: the client tries again with
 * backoff (100 ms doubling to 2 s) until each request's deadline, which then
 * fails with the REJECT's reason and CH_ERR_AUTH. Either way the next request
 * starts afresh.
 *
 * REJECTs of requests. A REJECT answering a data frame ("unknown session":
 * the node restarted) is acted on (handshake again, once, and reseal) only if
 * its MAC verifies under one of our client keys (seal_reject_check). Any other
 * REJECT of a request is ignored: the request waits for its deadline and fails
 * with CH_ERR_TIMEOUT, so a forged REJECT can never make a request run twice.
 *
 * Keys. A client holds a reference to a keyring (proto/seal.h) and speaks in
 * one role. ch_client_connect loads a cluster secret or a client credential
 * and always speaks as a client; a node's links pass the node's keyring and
 * SEAL_ROLE_NODE.
 *
 * Threading. As for chorus.h: a client may be shared by any number of
 * threads. chi_request_async never blocks the calling thread (it does not
 * wait for a context, a handshake or the network), so an event-loop thread
 * may call it; the callback runs on an nng thread, never on the caller's.
 */
#ifndef CHORUS_CLIENT_INTERNAL_H
#define CHORUS_CLIENT_INTERNAL_H

#include "chorus.h"
#include "proto/chorus.pb-c.h"
#include "proto/seal.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CHI_API __attribute__((visibility("hidden")))

/* Opens a client for `addr` without waiting for the node: returns at once
 * (nng keeps dialling in the background) and the handshake happens on first
 * use. The client takes its own reference to kr (seal_keyring_ref) and
 * handshakes in `role` (SEAL_ROLE_NODE for a node's links: kr must then hold
 * node keys) under kr's primary key. expected_peer_or_null (16 bytes,
 * copied) is the member the caller means to reach: a WELCOME from another
 * sender id fails the handshake with CH_ERR_AUTH ("reached member X,
 * expected member Y"). `opts` may be NULL. On CH_OK *out owns the client;
 * release it with ch_client_close. Errors: CH_ERR_INVALID (arguments,
 * address, a role kr has no keys for), CH_ERR_NOMEM. */
CHI_API int chi_client_open_lazy(ch_client **out, const char *addr, const struct seal_keyring *kr,
                                 int role, const uint8_t *expected_peer_or_null,
                                 const struct ch_client_options *opts, char *err, size_t err_len);

/* Swaps the client's keyring (key rotation): handshakes from now on use kr's
 * primary key; the current session, if any, lives on. Takes a reference to
 * kr and drops the old one. CH_OK, or CH_ERR_INVALID when kr has no keys for
 * the client's role. Any thread. */
CHI_API int chi_client_set_keyring(ch_client *c, const struct seal_keyring *kr);

/* The 16-byte id this client names itself with in handshakes and
 * envelopes (default: random). A node's links use the node's id, which the
 * receiving node binds to the session (gossip from it must carry it). Call
 * before the first request. */
CHI_API void chi_client_set_self_id(ch_client *c, const uint8_t self_id[16]);

/* Blocking request/reply. The library sets env->version, env->sender (it then
 * points into c: do not free it) and env->request_id; the body is the
 * caller's, read only. Waits up to timeout_ms (0 = the client's timeout) in
 * all, a lazy handshake included. On CH_OK *reply is the unpacked reply
 * envelope (same request_id; any body but Error), freed by the caller with
 * chorus__envelope__free_unpacked(*reply, NULL). An Error body is returned as
 * its code with its message in err, and *reply is NULL, as on every error.
 * Errors: CH_ERR_UNREACHABLE (no handshake by the deadline), CH_ERR_TIMEOUT
 * (sent, no reply), CH_ERR_AUTH, CH_ERR_TOO_LARGE, CH_ERR_PROTOCOL,
 * CH_ERR_CLOSED, or the code of the node's Error. */
CHI_API int chi_request(ch_client *c, Chorus__Envelope *env, uint32_t timeout_ms,
                        Chorus__Envelope **reply, char *err, size_t err_len);

/* The outcome of an async request: code as for chi_request; on CH_OK `reply`
 * is owned by the callback (free with chorus__envelope__free_unpacked), else
 * it is NULL. `err` is "" on CH_OK and a message otherwise; it is valid only
 * during the call. Runs on an nng thread: keep it short, do not call blocking
 * ch_/chi_ functions or ch_client_close from it (chi_request_async is fine). */
typedef void (*chi_reply_cb)(void *arg, int code, Chorus__Envelope *reply, const char *err);

/* Async request/reply. env is filled in as for chi_request and packed before
 * the call returns, so the caller may reuse or free it right away. Returns 0
 * when the request is under way: the callback then runs exactly once, within
 * about timeout_ms (0 = the client's timeout), or with CH_ERR_CLOSED from
 * ch_client_close. Returns an error code, and the callback never runs, when
 * nothing was started: CH_ERR_FULL when all `contexts` async slots are in
 * flight (it does not wait for one), CH_ERR_TOO_LARGE, CH_ERR_INVALID,
 * CH_ERR_CLOSED, CH_ERR_NOMEM. With no session yet it chains the handshake
 * and the request on the request's own context, or waits (without a thread)
 * for a handshake already in flight. */
CHI_API int chi_request_async(ch_client *c, Chorus__Envelope *env, uint32_t timeout_ms,
                              chi_reply_cb cb, void *arg);

#ifdef __cplusplus
}
#endif
#endif
