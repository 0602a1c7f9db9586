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
 * fails with a definite answer (CH_ERR_AUTH, CH_ERR_PROTOCOL, ...) fails the
 * requests that waited on it; one that timed out lets each waiter with time
 * left try again. Either way the next request starts afresh.
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

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CHI_API __attribute__((visibility("hidden")))

/* Opens a client for `addr` without waiting for the node: returns at once
 * (nng keeps dialling in the background) and the handshake happens on first
 * use. The cluster secret comes from exactly one of secret_file_or_null (a
 * secret file, see seal_keyring_load) and secret32_or_null (32 raw bytes,
 * copied). `opts` may be NULL. On CH_OK *out owns the client; release it with
 * ch_client_close. Errors: CH_ERR_INVALID (arguments, address), CH_ERR_IO
 * (secret file), CH_ERR_NOMEM. */
CHI_API int chi_client_open_lazy(ch_client **out, const char *addr, const char *secret_file_or_null,
                                 const uint8_t *secret32_or_null,
                                 const struct ch_client_options *opts, char *err, size_t err_len);

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
