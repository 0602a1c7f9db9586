/*
 * client.c - libchorus: the client side of the node's request protocol.
 *
 * Owns one ch_client: an nng req0 socket dialled (non-blocking, so nng keeps
 * reconnecting) to one node, the sealed session with that node (proto/seal.h),
 * a pool of request contexts for blocking calls and a second, lazily grown
 * pool for asynchronous calls.
 *
 * Wire protocol (see proto/chorus.proto and proto/seal.h):
 *   - handshake: HELLO -> WELCOME (or a plaintext REJECT with a reason, a
 *     hint only: the client tries again with backoff until the deadline);
 *   - request: Envelope{version, sender, request_id, body}, packed and sealed
 *     as one DATA frame, sent on a req0 context; the reply is a DATA frame
 *     whose Envelope carries the same request_id and the *_resp or an Error.
 *   - a REJECT in answer to a DATA frame means the node no longer knows our
 *     session (it restarted): if its MAC verifies (seal_reject_check) we
 *     handshake again, once, and reseal; an unauthenticated one is ignored
 *     and the request fails at its deadline (it must not run twice).
 *
 * Sessions. A client opened with chi_client_open_lazy (client_internal.h)
 * has no session until its first request; ch_client_connect is the same
 * open followed by a blocking handshake. Whenever a request finds no session
 * (sess_gen 0) or the node refuses the one it sealed under, it calls for a
 * new session "newer than generation g". At most one handshake is in flight
 * per client (hs_busy): the first request to ask runs it on its own context,
 * the others wait for its outcome (blocking callers on hs_cv, async ones
 * parked on hs_parked with their aio asleep until their deadline, woken by
 * nng_aio_abort). The node keeps a bounded LRU of sessions, so a burst of
 * handshakes from one client would evict other clients' sessions. A waiter
 * adopts a definite failure (wrong secret, bad frame) and retries, time
 * permitting, after one that merely timed out.
 *
 * Threading. The session (keys, tx counter, replay window) is shared by all
 * contexts and guarded by sess_mu; sealing and opening are cheap, so the lock
 * is held only for that, never across I/O. sess_gen counts handshakes: a
 * request remembers the generation it was sealed under, so when several
 * requests are refused at once only the first one whose generation is still
 * current starts a new session; the others reseal under it or wait for it.
 * Lock order: pool_mu and sess_mu are never held together; nng's own locks
 * are taken under sess_mu (nng_sleep_aio, nng_aio_abort), never the reverse,
 * since nng runs our callbacks without holding any of its locks.
 *
 * Async calls and their contexts. An nng aio callback must not block and must
 * not free its own aio (nng_aio_free waits for the callback to return) nor
 * may it close its context. So async requests live in `struct async_req`
 * slots that are created on demand (at most `contexts` of them), never freed
 * before ch_client_close, and recycled through a free list: the callback
 * runs the whole state machine (handshake, send, receive, re-handshake,
 * resend), calls the completion, and as its last act puts the slot back on
 * the free list. Whoever takes a recycled slot first calls nng_aio_wait() on
 * it, which returns only once the previous callback has fully returned (a
 * few instructions), so an aio is never restarted while its callback still
 * runs. ch_client_close wakes parked requests and closes the socket
 * (aborting every pending operation, so each async callback runs with
 * CH_ERR_CLOSED), waits for all slots to come back, then frees the aios:
 * nng_aio_free itself waits for any callback still returning.
 *
 * The public ch_ calls and the internal chi_ calls (client_internal.h) share
 * one blocking path (request_sync) and one async path (async_start); they
 * differ only in how a reply is turned into a result.
 */
#include "chorus.h"
#include "client_internal.h"
#include "views.h"
#include "proto/chorus.pb-c.h"
#include "proto/seal.h"

#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CLIENT_TIMEOUT_MS_DEFAULT 5000u
#define CLIENT_CONTEXTS_DEFAULT 16u
#define CLIENT_CONTEXTS_MAX 1024u
#define CLIENT_RECV_SLACK_BYTES (64u * 1024u)
#define CLIENT_ADDR_BYTES_MAX 256u
#define CLIENT_ARGV_COUNT_MAX 4096u
#define CLIENT_MAP_POLL_MS_MAX 1000u
#define CLIENT_ERR_BYTES 256u
/* Idempotency keys on the wire (proto/chorus.proto, SubmitReq): one
 * namespace for libchorus's own keys, one for the application's. */
#define KEY_OWN 0x01
#define KEY_APP 0x02
#define KEY_OWN_BYTES (1 + SEAL_ID_BYTES + 8)

/* A blocking call's context: checked out of the pool for one call. */
struct sync_slot {
	nng_ctx ctx;
	nng_aio *aio; /* no callback: used with nng_aio_wait */
	struct sync_slot *next_free;
};

enum async_state {
	ASYNC_IDLE = 0,
	ASYNC_SEND_REQUEST,
	ASYNC_RECV_REPLY,
	ASYNC_SEND_HELLO,
	ASYNC_RECV_WELCOME,
	ASYNC_WAIT_SESSION, /* parked: aio asleep until the deadline or a wake-up */
	ASYNC_WAIT_DEADLINE, /* parked after an unauthenticated REJECT: fails at the deadline */
};

struct async_req;
/* Turns the outcome into the caller's result and calls the caller back.
 * reply (owned by the callee) is non-NULL exactly when code is CH_OK. */
typedef void (*async_done_fn)(struct async_req *a, int code, Chorus__Envelope *reply,
                              const char *err);

struct async_req {
	struct ch_client *c;
	nng_ctx ctx;
	nng_aio *aio; /* callback: async_on_io */
	struct async_req *next_free;
	struct async_req *next_all;
	struct async_req *next_parked; /* guarded by sess_mu */
	bool parked;                   /* guarded by sess_mu: on c->hs_parked */
	/* per request */
	enum async_state state;
	uint8_t *plain; /* packed Envelope, kept to reseal after a re-handshake */
	size_t plain_len;
	uint64_t request_id;
	uint64_t gen;      /* sealed under; while handshaking or parked: the one found wanting */
	uint64_t hs_seen;  /* c->hs_done_count when parked */
	bool rehandshaken; /* the node refused our session once already */
	bool initiating;   /* this request runs the client's handshake (hs_busy) */
	uint64_t sent_sid;     /* session and counter the request was last sealed */
	uint64_t sent_counter; /* under: what an authentic REJECT must name */
	struct seal_keyring *hs_kr; /* while initiating: the keys of its HELLO */
	nng_time deadline;
	uint32_t total_ms;
	struct seal_initiator initiator;
	async_done_fn done;
	ch_result_cb result_cb; /* ch_submit_async */
	chi_reply_cb reply_cb;  /* chi_request_async */
	void *cb_arg;
};

struct ch_client {
	nng_socket sock;
	char addr[CLIENT_ADDR_BYTES_MAX];
	struct seal_keyring *keyring; /* one reference; guarded by sess_mu (swapped
	                                 by chi_client_set_keyring) */
	uint8_t role;                 /* enum seal_role of our HELLOs */
	bool has_expected_peer;
	uint8_t expected_peer[SEAL_ID_BYTES];
	uint8_t self_id[SEAL_ID_BYTES];
	uint32_t timeout_ms;
	size_t frame_bytes_max;
	uint32_t contexts_count;

	pthread_mutex_t sess_mu;
	struct seal_session sess; /* guarded by sess_mu */
	uint64_t sess_gen;        /* guarded by sess_mu; 0 = no session yet */
	uint64_t request_id_last; /* guarded by sess_mu */
	/* the one handshake in flight and its waiters, all guarded by sess_mu */
	bool hs_busy;
	uint64_t hs_done_count;          /* handshakes finished, either way */
	int hs_last_code;                /* outcome of the last one */
	bool hs_last_hint;               /* it was a REJECT of the HELLO: retry */
	char hs_last_err[CLIENT_ERR_BYTES];
	nng_time hs_not_before;          /* no new handshake before (backoff) */
	uint32_t hs_backoff_ms;          /* next backoff after a REJECT hint */
	pthread_cond_t hs_cv;            /* CLOCK_MONOTONIC; blocking waiters */
	struct async_req *hs_parked;     /* async waiters */
	bool sess_closing;

	pthread_mutex_t pool_mu;
	pthread_cond_t pool_cv;
	struct sync_slot *sync_slots; /* contexts_count of them */
	struct sync_slot *sync_free;
	struct async_req *async_all;
	struct async_req *async_free;
	uint32_t async_count; /* created */
	uint32_t async_busy;  /* in flight */
	bool closing;
};

/* ------------------------------------------------------------------ */
/* names                                                               */

const char *ch_strerror(int code)
{
	switch (code) {
	case CH_OK: return "ok";
	case CH_ERR_INVALID: return "invalid argument";
	case CH_ERR_NOT_LEADER: return "no leader: retry";
	case CH_ERR_UNAVAILABLE: return "too few replicas alive";
	case CH_ERR_MOVED: return "partition moved: retry";
	case CH_ERR_TASK_FAILED: return "the task failed";
	case CH_ERR_NOMEM: return "out of memory";
	case CH_ERR_IO: return "i/o error";
	case CH_ERR_TIMEOUT: return "timeout";
	case CH_ERR_UNREACHABLE: return "node unreachable";
	case CH_ERR_AUTH: return "authentication failed (wrong cluster secret?)";
	case CH_ERR_PROTOCOL: return "protocol error";
	case CH_ERR_NOT_FOUND: return "not found";
	case CH_ERR_UNKNOWN_HANDLER: return "unknown handler";
	case CH_ERR_DENIED: return "denied";
	case CH_ERR_TOO_LARGE: return "too large";
	case CH_ERR_FULL: return "queue full";
	case CH_ERR_SHUTTING_DOWN: return "node shutting down";
	case CH_ERR_STORAGE: return "storage error";
	case CH_ERR_CLOSED: return "closed";
	case CH_ERR_INTERNAL: return "internal error";
	default: return "unknown error";
	}
}

static const char *const state_names[] = {
	[CH_TASK_UNKNOWN] = "unknown",   [CH_TASK_QUEUED] = "queued",
	[CH_TASK_RUNNING] = "running",   [CH_TASK_SUCCEEDED] = "succeeded",
	[CH_TASK_FAILED] = "failed",     [CH_TASK_TIMED_OUT] = "timed_out",
	[CH_TASK_CANCELLED] = "cancelled", [CH_TASK_LOST] = "lost",
};
#define STATE_COUNT ((int)(sizeof state_names / sizeof state_names[0]))

const char *ch_task_state_name(int state)
{
	if (state < 0 || state >= STATE_COUNT)
		return "unknown";
	return state_names[state];
}

int ch_task_state_parse(const char *name)
{
	if (name == NULL)
		return CH_TASK_UNKNOWN;
	for (int i = 0; i < STATE_COUNT; i++) {
		if (strcasecmp(name, state_names[i]) == 0)
			return i;
	}
	/* accept the dashed spelling too: "timed-out" */
	if (strcasecmp(name, "timed-out") == 0 || strcasecmp(name, "timedout") == 0)
		return CH_TASK_TIMED_OUT;
	return CH_TASK_UNKNOWN;
}

int ch_task_state_is_final(int state)
{
	return state >= CH_TASK_SUCCEEDED && state <= CH_TASK_LOST;
}

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

__attribute__((format(printf, 4, 5))) static int fail(char *err, size_t err_len, int code,
                                                      const char *fmt, ...)
{
	assert(code < 0);
	if (err != NULL && err_len > 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, err_len, fmt, ap);
		va_end(ap);
	}
	return code;
}

static void err_clear(char *err, size_t err_len)
{
	if (err != NULL && err_len > 0)
		err[0] = '\0';
}

/* Milliseconds as an nng duration: nng_duration is an int32. */
static nng_duration duration_ms(uint64_t ms)
{
	return ms > (uint64_t)INT32_MAX ? (nng_duration)INT32_MAX : (nng_duration)ms;
}

static uint32_t total_ms_for(const ch_client *c, uint32_t wait_ms)
{
	uint64_t total = (uint64_t)wait_ms + c->timeout_ms;
	return total > (uint64_t)INT32_MAX ? (uint32_t)INT32_MAX : (uint32_t)total;
}

static nng_duration remaining_ms(nng_time deadline)
{
	nng_time now = nng_clock();
	if (now >= deadline)
		return 1; /* let the operation fail with a timeout, not block */
	return duration_ms(deadline - now);
}

/* A code the node sent us: keep CH_ERR_* values, map nonsense to internal. */
static int code_from_wire(int32_t code)
{
	if (code < 0 && code >= CH_ERR_TASK_FAILED)
		return code;
	return CH_ERR_INTERNAL;
}

static int nng_to_code(int rv)
{
	switch (rv) {
	case NNG_ENOMEM: return CH_ERR_NOMEM;
	case NNG_ETIMEDOUT: return CH_ERR_TIMEOUT;
	case NNG_ECLOSED:
	case NNG_ECANCELED: return CH_ERR_CLOSED;
	case NNG_EINVAL:
	case NNG_EADDRINVAL:
	case NNG_ENOTSUP: return CH_ERR_INVALID;
	default: return CH_ERR_IO;
	}
}

/* The message for a request that got no answer. */
static int fail_no_answer(const ch_client *c, char *err, size_t err_len, int code,
                          uint32_t total_ms)
{
	return fail(err, err_len, code, "no answer from %s within %u ms (is chorusd running?)",
	            c->addr, total_ms);
}

static char *dup_str(const char *s)
{
	return strdup(s != NULL ? s : "");
}

/* ------------------------------------------------------------------ */
/* results                                                             */

void ch_result_free(struct ch_result *r)
{
	if (r == NULL)
		return;
	free(r->output);
	free(r->error);
	free(r->node);
	free(r->handler);
	free(r);
}

void ch_results_free(struct ch_result **results, uint32_t n)
{
	if (results == NULL)
		return;
	for (uint32_t i = 0; i < n; i++)
		ch_result_free(results[i]);
	free(results);
}

/* An empty result (strings "", output "") owned by the caller. */
static struct ch_result *result_new(void)
{
	struct ch_result *r = calloc(1, sizeof *r);
	if (r == NULL)
		return NULL;
	r->output = calloc(1, 1);
	r->error = dup_str(NULL);
	r->node = dup_str(NULL);
	r->handler = dup_str(NULL);
	if (r->output == NULL || r->error == NULL || r->node == NULL || r->handler == NULL) {
		ch_result_free(r);
		return NULL;
	}
	return r;
}

/* Deep copy of a TaskResult; output is NUL-terminated, output_len exact. */
static struct ch_result *result_from_wire(const Chorus__TaskResult *w)
{
	struct ch_result *r = calloc(1, sizeof *r);
	if (r == NULL)
		return NULL;
	r->task_id = w->task_id;
	r->state = (w->state >= 0 && (int)w->state < STATE_COUNT) ? (int)w->state : CH_TASK_UNKNOWN;
	r->output_len = w->output.len;
	r->output = malloc(w->output.len + 1);
	if (r->output != NULL) {
		if (w->output.len > 0)
			memcpy(r->output, w->output.data, w->output.len);
		r->output[w->output.len] = '\0';
	}
	r->exit_code = w->exit_code;
	r->error = dup_str(w->error);
	r->attempts = w->attempts;
	r->node = dup_str(w->node);
	r->handler = dup_str(w->handler);
	r->submitted_ms = w->submitted_ms;
	r->started_ms = w->started_ms;
	r->finished_ms = w->finished_ms;
	r->batch_id = w->batch_id;
	r->batch_index = w->batch_index;
	if (r->output == NULL || r->error == NULL || r->node == NULL || r->handler == NULL) {
		ch_result_free(r);
		return NULL;
	}
	return r;
}

/* ------------------------------------------------------------------ */
/* framing                                                             */

#define NEED_SESSION 2 /* positive: no session yet, handshake first */

#define HS_BACKOFF_MS_FIRST 100u
#define HS_BACKOFF_MS_MAX 2000u

/* The client's keyring, with a reference for the caller (seal_keyring_free). */
static struct seal_keyring *keyring_take(ch_client *c)
{
	pthread_mutex_lock(&c->sess_mu);
	struct seal_keyring *kr = seal_keyring_ref(c->keyring);
	pthread_mutex_unlock(&c->sess_mu);
	return kr;
}

/* Seals plain under the current session into a new message.
 * *gen receives the session generation it was sealed under, *sid and
 * *counter the session id and frame counter. Returns CH_OK, NEED_SESSION
 * (nothing allocated) or CH_ERR_NOMEM. */
static int frame_request(ch_client *c, const uint8_t *plain, size_t plain_len, nng_msg **out,
                         uint64_t *gen, uint64_t *sid, uint64_t *counter)
{
	nng_msg *m;
	if (nng_msg_alloc(&m, plain_len + SEAL_OVERHEAD_BYTES) != 0)
		return CH_ERR_NOMEM;
	pthread_mutex_lock(&c->sess_mu);
	if (c->sess_gen == 0) {
		pthread_mutex_unlock(&c->sess_mu);
		nng_msg_free(m);
		return NEED_SESSION;
	}
	seal_frame_seal(&c->sess, plain, plain_len, nng_msg_body(m));
	*gen = c->sess_gen;
	*sid = c->sess.session_id;
	*counter = c->sess.tx_counter;
	pthread_mutex_unlock(&c->sess_mu);
	*out = m;
	return CH_OK;
}

/* Copies a plaintext REJECT's reason into buf (or "" when undecodable). */
static void reject_reason(const uint8_t *frame, size_t len, char *buf, size_t buf_len)
{
	assert(len >= SEAL_HEADER_BYTES);
	buf[0] = '\0';
	Chorus__Reject *rj =
		chorus__reject__unpack(NULL, len - SEAL_HEADER_BYTES, frame + SEAL_HEADER_BYTES);
	if (rj == NULL)
		return;
	snprintf(buf, buf_len, "%s", rj->reason != NULL ? rj->reason : "");
	chorus__reject__free_unpacked(rj, NULL);
}

#define REPLY_REJECTED 1 /* positive: the node refused our session (authentic) */
#define REPLY_IGNORED 3  /* positive: a REJECT that does not verify */

/* Opens and decodes a reply to the request sealed as (sid, counter).
 * Returns CH_OK with *env set (caller frees with
 * chorus__envelope__free_unpacked), REPLY_REJECTED with the reason in err
 * (an authentic REJECT), REPLY_IGNORED with a message in err (a REJECT whose
 * MAC does not verify), or a negative code (an Error body becomes its code
 * and message). Does not block beyond sess_mu: safe in an aio callback. Does
 * not free msg. */
static int reply_decode(ch_client *c, nng_msg *msg, uint64_t request_id, uint64_t sid,
                        uint64_t counter, Chorus__Envelope **env, char *err, size_t err_len)
{
	uint8_t *frame = nng_msg_body(msg);
	size_t len = nng_msg_len(msg);
	int kind = 0;
	uint64_t session_id = 0;
	int v = seal_frame_peek(frame, len, c->frame_bytes_max, &kind, &session_id);
	if (v != SEAL_OK)
		return fail(err, err_len, CH_ERR_PROTOCOL, "bad reply frame from %s: %s", c->addr,
		            seal_verdict_name(v));
	if (kind == SEAL_KIND_REJECT) {
		char reason[CLIENT_ERR_BYTES] = "";
		int code = 0;
		struct seal_keyring *kr = keyring_take(c);
		v = seal_reject_check(kr, sid, counter, frame, len, &code, reason, sizeof reason);
		seal_keyring_free(kr);
		if (v != SEAL_OK) {
			fail(err, err_len, CH_ERR_TIMEOUT,
			     "%s: ignored a REJECT that does not verify (%s: \"%s\")", c->addr,
			     seal_verdict_name(v), reason);
			return REPLY_IGNORED;
		}
		if (err != NULL && err_len > 0)
			snprintf(err, err_len, "%s", reason[0] != '\0' ? reason : "rejected");
		return REPLY_REJECTED;
	}
	if (kind != SEAL_KIND_DATA)
		return fail(err, err_len, CH_ERR_PROTOCOL, "unexpected %d frame from %s", kind,
		            c->addr);

	uint8_t *plain = NULL;
	size_t plain_len = 0;
	pthread_mutex_lock(&c->sess_mu);
	if (session_id != c->sess.session_id)
		v = SEAL_NO_SESSION;
	else
		v = seal_frame_open(&c->sess, frame, len, &plain, &plain_len);
	pthread_mutex_unlock(&c->sess_mu);
	if (v != SEAL_OK)
		return fail(err, err_len, CH_ERR_PROTOCOL, "reply from %s refused: %s", c->addr,
		            seal_verdict_name(v));

	Chorus__Envelope *e = chorus__envelope__unpack(NULL, plain_len, plain);
	if (e == NULL)
		return fail(err, err_len, CH_ERR_PROTOCOL, "undecodable reply from %s", c->addr);
	if (e->request_id != request_id) {
		uint64_t got = e->request_id;
		chorus__envelope__free_unpacked(e, NULL);
		return fail(err, err_len, CH_ERR_PROTOCOL,
		            "reply from %s answers request %llu, expected %llu", c->addr,
		            (unsigned long long)got, (unsigned long long)request_id);
	}
	if (e->body_case == CHORUS__ENVELOPE__BODY_ERROR) {
		int code = code_from_wire(e->error != NULL ? e->error->code : 0);
		fail(err, err_len, code, "%s",
		     (e->error != NULL && e->error->message != NULL && e->error->message[0] != '\0')
		             ? e->error->message
		             : ch_strerror(code));
		chorus__envelope__free_unpacked(e, NULL);
		return code;
	}
	*env = e;
	return CH_OK;
}

/* Checks the WELCOME (or REJECT) answering our HELLO, made with kr. On
 * success the new session replaces the current one unless another handshake
 * already did since base_gen (then ours is dropped: the other one is as
 * good). A REJECT is CH_ERR_AUTH with *hint set: it cannot be authenticated,
 * so it is a reason to try again, not an answer. */
static int welcome_install(ch_client *c, const struct seal_keyring *kr, struct seal_initiator *in,
                           nng_msg *msg, uint64_t base_gen, bool *hint, char *err,
                           size_t err_len)
{
	*hint = false;
	uint8_t *frame = nng_msg_body(msg);
	size_t len = nng_msg_len(msg);
	int kind = 0;
	uint64_t session_id = 0;
	int v = seal_frame_peek(frame, len, c->frame_bytes_max, &kind, &session_id);
	if (v != SEAL_OK)
		return fail(err, err_len, CH_ERR_PROTOCOL,
		            "%s answered the handshake with a bad frame (%s): is it a chorus node?",
		            c->addr, seal_verdict_name(v));
	if (kind == SEAL_KIND_REJECT) {
		char reason[CLIENT_ERR_BYTES];
		reject_reason(frame, len, reason, sizeof reason);
		*hint = true;
		return fail(err, err_len, CH_ERR_AUTH, "%s refused the handshake: %s", c->addr,
		            reason[0] != '\0' ? reason : "no reason given");
	}
	if (kind != SEAL_KIND_WELCOME)
		return fail(err, err_len, CH_ERR_PROTOCOL,
		            "%s answered the handshake with frame kind %d", c->addr, kind);

	struct seal_session s;
	char why[CLIENT_ERR_BYTES] = "";
	v = seal_welcome_accept(in, kr, c->has_expected_peer ? c->expected_peer : NULL, frame, len,
	                        &s, why, sizeof why);
	if (v == SEAL_FORGED)
		return fail(err, err_len, CH_ERR_AUTH,
		            "%s: the node's welcome does not carry our cluster secret (wrong secret)",
		            c->addr);
	if (v == SEAL_WRONG_PEER)
		return fail(err, err_len, CH_ERR_AUTH, "%s: %s", c->addr, why);
	if (v != SEAL_OK)
		return fail(err, err_len, CH_ERR_PROTOCOL, "%s: bad welcome (%s)", c->addr,
		            seal_verdict_name(v));
	pthread_mutex_lock(&c->sess_mu);
	if (c->sess_gen == base_gen) {
		c->sess = s;
		c->sess_gen++;
	}
	pthread_mutex_unlock(&c->sess_mu);
	sodium_memzero(&s, sizeof s);
	return CH_OK;
}

/* ------------------------------------------------------------------ */
/* blocking exchange on a sync slot                                    */

static struct sync_slot *slot_take(ch_client *c)
{
	pthread_mutex_lock(&c->pool_mu);
	while (c->sync_free == NULL && !c->closing)
		pthread_cond_wait(&c->pool_cv, &c->pool_mu);
	struct sync_slot *s = c->sync_free;
	if (s != NULL && !c->closing)
		c->sync_free = s->next_free;
	else
		s = NULL;
	pthread_mutex_unlock(&c->pool_mu);
	return s;
}

static void slot_give(ch_client *c, struct sync_slot *s)
{
	pthread_mutex_lock(&c->pool_mu);
	s->next_free = c->sync_free;
	c->sync_free = s;
	pthread_cond_broadcast(&c->pool_cv);
	pthread_mutex_unlock(&c->pool_mu);
}

/* Sends msg (always consumed) and receives the reply by deadline.
 * Returns 0 or an nng error; *sent tells whether the send completed. */
static int exchange(struct sync_slot *s, nng_msg *msg, nng_time deadline, uint32_t total_ms,
                    nng_msg **reply, bool *sent)
{
	*sent = false;
	*reply = NULL;
	/* The node deduplicates resends by counter, but a resend before the
	 * node had a chance to answer a long wait would only add load. */
	nng_ctx_set_ms(s->ctx, NNG_OPT_REQ_RESENDTIME, duration_ms((uint64_t)total_ms + 1000u));
	nng_aio_set_msg(s->aio, msg);
	nng_aio_set_timeout(s->aio, remaining_ms(deadline));
	nng_ctx_send(s->ctx, s->aio);
	nng_aio_wait(s->aio);
	int rv = nng_aio_result(s->aio);
	if (rv != 0) {
		nng_msg_free(nng_aio_get_msg(s->aio));
		return rv;
	}
	*sent = true;
	nng_aio_set_msg(s->aio, NULL); /* sent: nng owns it now */
	nng_aio_set_timeout(s->aio, remaining_ms(deadline));
	nng_ctx_recv(s->ctx, s->aio);
	nng_aio_wait(s->aio);
	rv = nng_aio_result(s->aio);
	if (rv != 0)
		return rv;
	*reply = nng_aio_get_msg(s->aio);
	nng_aio_set_msg(s->aio, NULL);
	if (*reply == NULL) /* never seen to carry no message, but never trust it */
		return NNG_EPROTO;
	return 0;
}

/* A new HELLO frame for initiator `in`, as an nng message. */
static int hello_msg(ch_client *c, const struct seal_keyring *kr, struct seal_initiator *in,
                     nng_msg **out, char *err, size_t err_len)
{
	uint8_t *hello = NULL;
	size_t hello_len = 0;
	nng_msg *msg = NULL;
	/* the role was checked against every keyring this client takes */
	if (seal_hello_build(in, kr, c->role, c->self_id, seal_wall_ms(), &hello, &hello_len) != 0 ||
	    nng_msg_alloc(&msg, 0) != 0 || nng_msg_append(msg, hello, hello_len) != 0) {
		free(hello);
		if (msg != NULL)
			nng_msg_free(msg);
		sodium_memzero(in, sizeof *in);
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory building the handshake");
	}
	free(hello);
	*out = msg;
	return CH_OK;
}

/* A fresh handshake on slot s. base_gen: the generation we found wanting.
 * The caller holds hs_busy. */
static int handshake_sync(ch_client *c, struct sync_slot *s, nng_time deadline,
                          uint32_t total_ms, uint64_t base_gen, bool *hint, char *err,
                          size_t err_len)
{
	*hint = false;
	struct seal_initiator in;
	nng_msg *msg = NULL;
	struct seal_keyring *kr = keyring_take(c);
	int code = hello_msg(c, kr, &in, &msg, err, err_len);
	if (code != CH_OK) {
		seal_keyring_free(kr);
		return code;
	}
	nng_msg *reply = NULL;
	bool sent = false;
	int rv = exchange(s, msg, deadline, total_ms, &reply, &sent);
	if (rv == NNG_ETIMEDOUT)
		code = fail_no_answer(c, err, err_len, CH_ERR_UNREACHABLE, total_ms);
	else if (rv != 0)
		code = fail(err, err_len, nng_to_code(rv), "handshake with %s: %s", c->addr,
		            nng_strerror(rv));
	else {
		code = welcome_install(c, kr, &in, reply, base_gen, hint, err, err_len);
		nng_msg_free(reply);
	}
	sodium_memzero(&in, sizeof in);
	seal_keyring_free(kr);
	return code;
}

/* A handshake that timed out may succeed when tried again; others not. */
static bool handshake_retryable(int code)
{
	return code == CH_ERR_UNREACHABLE || code == CH_ERR_TIMEOUT;
}

/* Ends the handshake in flight (success or not): records its outcome, wakes
 * the blocking waiters and every parked async request. hint: it ended with
 * a REJECT of the HELLO, so the next one waits for the backoff. */
static void handshake_done(ch_client *c, int code, const char *err, bool hint)
{
	pthread_mutex_lock(&c->sess_mu);
	assert(c->hs_busy);
	assert(!hint || code == CH_ERR_AUTH);
	c->hs_busy = false;
	c->hs_done_count++;
	c->hs_last_code = code;
	c->hs_last_hint = hint;
	snprintf(c->hs_last_err, sizeof c->hs_last_err, "%s", err != NULL ? err : "");
	if (hint) {
		c->hs_not_before = nng_clock() + c->hs_backoff_ms;
		c->hs_backoff_ms = c->hs_backoff_ms * 2 > HS_BACKOFF_MS_MAX ? HS_BACKOFF_MS_MAX
		                                                          : c->hs_backoff_ms * 2;
	} else if (code == CH_OK) {
		c->hs_not_before = 0;
		c->hs_backoff_ms = HS_BACKOFF_MS_FIRST;
	}
	/* Each parked aio is asleep or its callback waits for sess_mu: abort
	 * cancels the sleep (the callback then runs) or is a no-op. */
	while (c->hs_parked != NULL) {
		struct async_req *a = c->hs_parked;
		c->hs_parked = a->next_parked;
		a->next_parked = NULL;
		a->parked = false;
		nng_aio_abort(a->aio, NNG_ECANCELED);
	}
	pthread_cond_broadcast(&c->hs_cv);
	pthread_mutex_unlock(&c->sess_mu);
}

/* pthread_cond_timedwait on hs_cv (CLOCK_MONOTONIC) until an nng deadline. */
static int hs_wait_until(ch_client *c, nng_time deadline)
{
	nng_time now = nng_clock();
	if (now >= deadline)
		return ETIMEDOUT;
	uint64_t left_ms = deadline - now;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)(left_ms / 1000u);
	ts.tv_nsec += (long)(left_ms % 1000u) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return pthread_cond_timedwait(&c->hs_cv, &c->sess_mu, &ts);
}

/* A request out of time while getting a session: fails with the last
 * handshake's reason when that was a REJECT (CH_ERR_AUTH: wrong secret),
 * else as unreachable. Caller holds sess_mu. */
static int deadline_fail_locked(ch_client *c, uint32_t total_ms, char *err, size_t err_len)
{
	if (c->hs_last_hint && c->hs_last_code < 0)
		return fail(err, err_len, c->hs_last_code, "%s", c->hs_last_err);
	return fail_no_answer(c, err, err_len, CH_ERR_UNREACHABLE, total_ms);
}

/* 1 when the waiters of a failed handshake adopt its outcome. */
static bool handshake_definite(int code, bool hint)
{
	return code < 0 && !hint && !handshake_retryable(code);
}

/* Makes sure the client has a session newer than base_gen, by the deadline:
 * runs the handshake on slot s when none is in flight (and the backoff after
 * a REJECT has passed), else waits for the one that is (see the top
 * comment). */
static int session_renew_sync(ch_client *c, struct sync_slot *s, uint64_t base_gen,
                              nng_time deadline, uint32_t total_ms, char *err, size_t err_len)
{
	pthread_mutex_lock(&c->sess_mu);
	for (;;) {
		if (c->sess_gen != base_gen) {
			pthread_mutex_unlock(&c->sess_mu);
			return CH_OK;
		}
		if (c->sess_closing) {
			pthread_mutex_unlock(&c->sess_mu);
			return fail(err, err_len, CH_ERR_CLOSED, "client is closing");
		}
		if (nng_clock() >= deadline) {
			int code = deadline_fail_locked(c, total_ms, err, err_len);
			pthread_mutex_unlock(&c->sess_mu);
			return code;
		}
		if (c->hs_busy) {
			uint64_t seen = c->hs_done_count;
			int rc = 0;
			while (c->hs_busy && c->hs_done_count == seen && !c->sess_closing &&
			       rc != ETIMEDOUT)
				rc = hs_wait_until(c, deadline);
			if (c->sess_gen != base_gen || c->sess_closing)
				continue;
			if (c->hs_done_count != seen &&
			    handshake_definite(c->hs_last_code, c->hs_last_hint)) {
				int code = fail(err, err_len, c->hs_last_code, "%s", c->hs_last_err);
				pthread_mutex_unlock(&c->sess_mu);
				return code;
			}
			continue; /* it timed out or was refused: try ours, time permitting */
		}
		if (nng_clock() < c->hs_not_before) {
			/* backing off after a REJECT; another handshake ending
			 * (or close) wakes us as well */
			nng_time until = c->hs_not_before < deadline ? c->hs_not_before : deadline;
			(void)hs_wait_until(c, until);
			continue;
		}
		c->hs_busy = true;
		pthread_mutex_unlock(&c->sess_mu);
		char why[CLIENT_ERR_BYTES] = "";
		bool hint = false;
		int code = handshake_sync(c, s, deadline, total_ms, base_gen, &hint, why, sizeof why);
		handshake_done(c, code, why, hint);
		if (code == CH_OK)
			return CH_OK;
		if (!hint)
			return fail(err, err_len, code, "%s", why);
		pthread_mutex_lock(&c->sess_mu); /* a REJECT: again after the backoff */
	}
}

/* Fills the header fields of req (version, sender, a new request_id) and
 * packs it into *plain (malloc'd, caller frees). */
static int request_pack(ch_client *c, Chorus__Envelope *req, uint8_t **plain, size_t *plain_len,
                        uint64_t *request_id, char *err, size_t err_len)
{
	pthread_mutex_lock(&c->sess_mu);
	*request_id = ++c->request_id_last;
	pthread_mutex_unlock(&c->sess_mu);
	req->version = CH_PROTOCOL_VERSION;
	req->sender.data = c->self_id;
	req->sender.len = SEAL_ID_BYTES;
	req->request_id = *request_id;
	/* Every submit and fan-out carries an idempotency key; without the
	 * application's, this client's id and the request id. The packed
	 * request is kept and resent as is (after a re-handshake too), so a
	 * resend under a new session, or to a restarted node, names the same
	 * task and never runs it twice. */
	uint8_t own_key[KEY_OWN_BYTES];
	ProtobufCBinaryData *key = NULL;
	if (req->body_case == CHORUS__ENVELOPE__BODY_SUBMIT && req->submit->origin.len == 0)
		key = &req->submit->idempotency_key;
	else if (req->body_case == CHORUS__ENVELOPE__BODY_MAP)
		key = &req->map->idempotency_key;
	if (key != NULL && key->len == 0) {
		own_key[0] = KEY_OWN;
		memcpy(own_key + 1, c->self_id, SEAL_ID_BYTES);
		for (int i = 0; i < 8; i++)
			own_key[1 + SEAL_ID_BYTES + i] = (uint8_t)(*request_id >> (56 - 8 * i));
		key->data = own_key;
		key->len = sizeof(own_key);
	} else {
		key = NULL; /* nothing of ours to take back out */
	}

	size_t len = chorus__envelope__get_packed_size(req);
	uint8_t *buf = len + SEAL_OVERHEAD_BYTES > c->frame_bytes_max ? NULL
	                                                              : malloc(len > 0 ? len : 1);
	if (buf != NULL) {
		size_t packed = chorus__envelope__pack(req, buf);
		assert(packed == len);
		(void)packed;
	}
	if (key != NULL) { /* the caller's message must not point at our stack */
		key->data = NULL;
		key->len = 0;
	}
	if (len + SEAL_OVERHEAD_BYTES > c->frame_bytes_max)
		return fail(err, err_len, CH_ERR_TOO_LARGE,
		            "request of %zu bytes is over the frame cap of %zu bytes", len,
		            c->frame_bytes_max - SEAL_OVERHEAD_BYTES);
	if (buf == NULL)
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
	*plain = buf;
	*plain_len = len;
	return CH_OK;
}

/* After an ignored REJECT: sleeps until the deadline (or close) and fails
 * with CH_ERR_TIMEOUT, the message saying why (err already holds it). */
static int deadline_wait_sync(ch_client *c, nng_time deadline, uint32_t total_ms, char *err,
                              size_t err_len)
{
	char why[CLIENT_ERR_BYTES];
	snprintf(why, sizeof why, "%s", err != NULL ? err : "");
	pthread_mutex_lock(&c->sess_mu);
	while (!c->sess_closing && hs_wait_until(c, deadline) != ETIMEDOUT)
		;
	bool closing = c->sess_closing;
	pthread_mutex_unlock(&c->sess_mu);
	if (closing)
		return fail(err, err_len, CH_ERR_CLOSED, "client is closing");
	return fail(err, err_len, CH_ERR_TIMEOUT, "no answer from %s within %u ms (%s)", c->addr,
	            total_ms, why);
}

/* One blocking request/reply within total_ms: packs req (see request_pack),
 * seals, sends, handshakes first when there is no session yet, re-handshakes
 * once on "unknown session", and returns the decoded reply envelope in
 * *resp (caller frees). */
static int request_sync(ch_client *c, Chorus__Envelope *req, uint32_t total_ms,
                        Chorus__Envelope **resp, char *err, size_t err_len)
{
	*resp = NULL;
	uint8_t *plain = NULL;
	size_t plain_len = 0;
	uint64_t request_id = 0;
	int code = request_pack(c, req, &plain, &plain_len, &request_id, err, err_len);
	if (code != CH_OK)
		return code;

	struct sync_slot *s = slot_take(c);
	if (s == NULL) {
		free(plain);
		return fail(err, err_len, CH_ERR_CLOSED, "client is closing");
	}
	nng_time deadline = nng_clock() + total_ms;
	bool rehandshaken = false;
	code = CH_ERR_INTERNAL;
	/* At most: a first handshake, a send refused, a re-handshake, a resend. */
	int step;
	for (step = 0; step < 4; step++) {
		nng_msg *msg = NULL;
		uint64_t gen = 0, sid = 0, counter = 0;
		code = frame_request(c, plain, plain_len, &msg, &gen, &sid, &counter);
		if (code == NEED_SESSION) {
			code = session_renew_sync(c, s, 0, deadline, total_ms, err, err_len);
			if (code != CH_OK)
				break;
			code = CH_ERR_INTERNAL;
			continue;
		}
		if (code != CH_OK) {
			fail(err, err_len, code, "out of memory");
			break;
		}
		nng_msg *reply = NULL;
		bool sent = false;
		int rv = exchange(s, msg, deadline, total_ms, &reply, &sent);
		if (rv == NNG_ETIMEDOUT) {
			code = fail_no_answer(c, err, err_len,
			                      sent ? CH_ERR_TIMEOUT : CH_ERR_UNREACHABLE, total_ms);
			break;
		}
		if (rv != 0) {
			code = fail(err, err_len, nng_to_code(rv), "request to %s: %s", c->addr,
			            nng_strerror(rv));
			break;
		}
		code = reply_decode(c, reply, request_id, sid, counter, resp, err, err_len);
		nng_msg_free(reply);
		if (code == REPLY_IGNORED) {
			/* an unauthenticated REJECT: req0 has ended the exchange, so
			 * no answer can come now; wait out the deadline rather than
			 * reseal (which could run the request twice) */
			code = deadline_wait_sync(c, deadline, total_ms, err, err_len);
			break;
		}
		if (code != REPLY_REJECTED)
			break;
		if (rehandshaken) {
			/* refused again right after a fresh handshake */
			char reason[CLIENT_ERR_BYTES];
			snprintf(reason, sizeof reason, "%s", err != NULL ? err : "");
			code = fail(err, err_len, CH_ERR_AUTH, "%s refused the request: %s", c->addr,
			            reason);
			break;
		}
		/* The node lost our session (it restarted): handshake again,
		 * unless someone already did since we sealed. */
		rehandshaken = true;
		code = session_renew_sync(c, s, gen, deadline, total_ms, err, err_len);
		if (code != CH_OK)
			break;
		code = CH_ERR_INTERNAL;
	}
	slot_give(c, s);
	free(plain);
	assert(code <= 0);
	assert(step < 4); /* every path above ends in a break */
	if (step == 4)
		code = fail(err, err_len, CH_ERR_INTERNAL, "request to %s: no outcome", c->addr);
	if (code == CH_OK)
		err_clear(err, err_len);
	return code;
}

/* The public calls: the node may hold the request wait_ms; the client adds
 * its own timeout on top. */
static int call(ch_client *c, Chorus__Envelope *req, uint32_t wait_ms, Chorus__Envelope **resp,
                char *err, size_t err_len)
{
	return request_sync(c, req, total_ms_for(c, wait_ms), resp, err, err_len);
}

/* Checks that the reply carries the body we asked for. */
static int expect_body(const ch_client *c, Chorus__Envelope *e, Chorus__Envelope__BodyCase want,
                       char *err, size_t err_len)
{
	if (e->body_case == want && e->submit_resp != NULL) /* union: any member */
		return CH_OK;
	int got = e->body_case;
	chorus__envelope__free_unpacked(e, NULL);
	return fail(err, err_len, CH_ERR_PROTOCOL, "%s answered with body %d, expected %d",
	            c->addr, got, (int)want);
}

/* A request whose answer must carry the body `want`: call + expect_body.
 * On CH_OK *e is the reply (caller frees), else NULL. */
static int call_expect(ch_client *c, Chorus__Envelope *env, uint32_t wait_ms,
                       Chorus__Envelope__BodyCase want, Chorus__Envelope **e, char *err,
                       size_t err_len)
{
	int code = call(c, env, wait_ms, e, err, err_len);
	if (code == CH_OK)
		code = expect_body(c, *e, want, err, err_len);
	if (code != CH_OK)
		*e = NULL;
	return code;
}

/* ------------------------------------------------------------------ */
/* connect / close                                                     */

static void client_free(ch_client *c)
{
	/* Every async slot is idle here (see ch_client_close). */
	while (c->async_all != NULL) {
		struct async_req *a = c->async_all;
		c->async_all = a->next_all;
		nng_aio_free(a->aio); /* waits for a callback still returning */
		free(a->plain);
		free(a);
	}
	if (c->sync_slots != NULL) {
		for (uint32_t i = 0; i < c->contexts_count; i++) {
			if (c->sync_slots[i].aio != NULL)
				nng_aio_free(c->sync_slots[i].aio);
		}
		free(c->sync_slots);
	}
	assert(c->hs_parked == NULL);
	pthread_mutex_destroy(&c->sess_mu);
	pthread_mutex_destroy(&c->pool_mu);
	pthread_cond_destroy(&c->pool_cv);
	pthread_cond_destroy(&c->hs_cv);
	seal_keyring_free(c->keyring);
	sodium_memzero(&c->sess, sizeof c->sess);
	free(c);
}

/* Everything but the handshake: a client with no session (sess_gen 0)
 * whose socket dials `addr` in the background, speaking as `role` with its
 * own reference to kr. */
static int client_open(ch_client **out, const char *addr, const struct seal_keyring *kr, int role,
                       const uint8_t *expected_peer, const struct ch_client_options *opts,
                       char *err, size_t err_len)
{
	assert(out != NULL && addr != NULL && kr != NULL);
	*out = NULL;
	if (role != SEAL_ROLE_CLIENT && role != SEAL_ROLE_NODE)
		return fail(err, err_len, CH_ERR_INVALID, "unknown role %d", role);
	if (!seal_keyring_has_role(kr, role))
		return fail(err, err_len, CH_ERR_INVALID,
		            "a client credential cannot speak as a %s: give the cluster secret",
		            seal_role_name(role));
	if (strlen(addr) >= CLIENT_ADDR_BYTES_MAX)
		return fail(err, err_len, CH_ERR_INVALID, "address too long (max %u bytes)",
		            CLIENT_ADDR_BYTES_MAX - 1);
	if (sodium_init() < 0)
		return fail(err, err_len, CH_ERR_INTERNAL, "libsodium failed to initialise");

	ch_client *c = calloc(1, sizeof *c);
	if (c == NULL)
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
	snprintf(c->addr, sizeof c->addr, "%s", addr);
	c->timeout_ms = (opts != NULL && opts->timeout_ms > 0) ? opts->timeout_ms
	                                                      : CLIENT_TIMEOUT_MS_DEFAULT;
	c->contexts_count = (opts != NULL && opts->contexts > 0) ? opts->contexts
	                                                        : CLIENT_CONTEXTS_DEFAULT;
	if (c->contexts_count > CLIENT_CONTEXTS_MAX)
		c->contexts_count = CLIENT_CONTEXTS_MAX;
	c->frame_bytes_max = (opts != NULL && opts->frame_bytes_max > 0) ? opts->frame_bytes_max
	                                                                : SEAL_FRAME_BYTES_DEFAULT;
	c->keyring = seal_keyring_ref(kr);
	c->role = (uint8_t)role;
	if (expected_peer != NULL) {
		c->has_expected_peer = true;
		memcpy(c->expected_peer, expected_peer, SEAL_ID_BYTES);
	}
	c->hs_backoff_ms = HS_BACKOFF_MS_FIRST;
	pthread_mutex_init(&c->sess_mu, NULL);
	pthread_mutex_init(&c->pool_mu, NULL);
	pthread_cond_init(&c->pool_cv, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->hs_cv, &ca);
	pthread_condattr_destroy(&ca);
	if (c->frame_bytes_max < SEAL_OVERHEAD_BYTES + 64) {
		client_free(c);
		return fail(err, err_len, CH_ERR_INVALID, "frame_bytes_max too small");
	}

	randombytes_buf(c->self_id, sizeof c->self_id);

	int rv = nng_req0_open(&c->sock);
	if (rv != 0) {
		client_free(c);
		return fail(err, err_len, nng_to_code(rv), "cannot open socket: %s",
		            nng_strerror(rv));
	}
	nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ,
	                    c->frame_bytes_max + CLIENT_RECV_SLACK_BYTES);
	/* nng waits 1 s before redialling a dropped connection by default: a
	 * call caught by a cut would stall that long. Redial fast, back off to
	 * 250 ms while the node stays away (a restarted peer is found again
	 * within a gossip period or two). */
	nng_socket_set_ms(c->sock, NNG_OPT_RECONNMINT, 50);
	nng_socket_set_ms(c->sock, NNG_OPT_RECONNMAXT, 250);
	rv = nng_dial(c->sock, addr, NULL, NNG_FLAG_NONBLOCK);
	if (rv != 0) {
		nng_close(c->sock);
		client_free(c);
		return fail(err, err_len, CH_ERR_INVALID, "cannot dial %s: %s", addr,
		            nng_strerror(rv));
	}
	c->sync_slots = calloc(c->contexts_count, sizeof *c->sync_slots);
	if (c->sync_slots == NULL) {
		nng_close(c->sock);
		client_free(c);
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
	}
	for (uint32_t i = 0; i < c->contexts_count; i++) {
		struct sync_slot *s = &c->sync_slots[i];
		rv = nng_ctx_open(&s->ctx, c->sock);
		if (rv == 0)
			rv = nng_aio_alloc(&s->aio, NULL, NULL);
		if (rv != 0) {
			nng_close(c->sock);
			client_free(c);
			return fail(err, err_len, nng_to_code(rv), "cannot open context: %s",
			            nng_strerror(rv));
		}
		s->next_free = c->sync_free;
		c->sync_free = s;
	}
	assert(c->sess_gen == 0 && !c->hs_busy);
	*out = c;
	return CH_OK;
}

int ch_client_connect(ch_client **out, const char *addr, const char *secret_file,
                      const struct ch_client_options *opts, char *err, size_t err_len)
{
	if (out == NULL || addr == NULL || secret_file == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "address and secret file are required");
	*out = NULL;
	if (sodium_init() < 0)
		return fail(err, err_len, CH_ERR_INTERNAL, "libsodium failed to initialise");
	/* a cluster secret or a client credential: either way we speak as a
	 * client */
	char why[CLIENT_ERR_BYTES] = "";
	struct seal_keyring *kr = seal_keyring_load(secret_file, SEAL_ROLE_CLIENT, why, sizeof why);
	if (kr == NULL)
		return fail(err, err_len, CH_ERR_IO, "%s",
		            why[0] != '\0' ? why : "cannot read the secret file");
	ch_client *c = NULL;
	int code = client_open(&c, addr, kr, SEAL_ROLE_CLIENT, NULL, opts, err, err_len);
	seal_keyring_free(kr); /* the client holds its own reference */
	if (code != CH_OK)
		return code;
	struct sync_slot *s = slot_take(c);
	assert(s != NULL);
	uint32_t total_ms = c->timeout_ms;
	code = session_renew_sync(c, s, 0, nng_clock() + total_ms, total_ms, err, err_len);
	slot_give(c, s);
	if (code != CH_OK) {
		nng_close(c->sock);
		client_free(c);
		return code;
	}
	assert(c->sess_gen == 1);
	err_clear(err, err_len);
	*out = c;
	return CH_OK;
}

void chi_client_set_self_id(ch_client *c, const uint8_t self_id[SEAL_ID_BYTES])
{
	pthread_mutex_lock(&c->sess_mu);
	memcpy(c->self_id, self_id, SEAL_ID_BYTES);
	pthread_mutex_unlock(&c->sess_mu);
}

int chi_client_open_lazy(ch_client **out, const char *addr, const struct seal_keyring *kr,
                         int role, const uint8_t *expected_peer_or_null,
                         const struct ch_client_options *opts, char *err, size_t err_len)
{
	if (out != NULL)
		*out = NULL;
	if (out == NULL || addr == NULL || kr == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "out, address and keyring are required");
	int code = client_open(out, addr, kr, role, expected_peer_or_null, opts, err, err_len);
	if (code == CH_OK)
		err_clear(err, err_len);
	return code;
}

int chi_client_set_keyring(ch_client *c, const struct seal_keyring *kr)
{
	if (c == NULL || kr == NULL || !seal_keyring_has_role(kr, c->role))
		return CH_ERR_INVALID;
	struct seal_keyring *fresh = seal_keyring_ref(kr);
	pthread_mutex_lock(&c->sess_mu);
	struct seal_keyring *old = c->keyring;
	c->keyring = fresh;
	pthread_mutex_unlock(&c->sess_mu);
	seal_keyring_free(old); /* handshakes in flight hold their own reference */
	return CH_OK;
}

void ch_client_close(ch_client *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->pool_mu);
	c->closing = true;
	pthread_cond_broadcast(&c->pool_cv);
	pthread_mutex_unlock(&c->pool_mu);
	/* Parked requests sleep on aios the socket does not know: wake each
	 * (its callback finishes with CH_ERR_CLOSED); none parks after this. */
	pthread_mutex_lock(&c->sess_mu);
	c->sess_closing = true;
	while (c->hs_parked != NULL) {
		struct async_req *a = c->hs_parked;
		c->hs_parked = a->next_parked;
		a->next_parked = NULL;
		a->parked = false;
		nng_aio_abort(a->aio, NNG_ECLOSED);
	}
	pthread_cond_broadcast(&c->hs_cv);
	pthread_mutex_unlock(&c->sess_mu);
	/* Aborts every pending operation: async callbacks run with ECLOSED. */
	nng_close(c->sock);
	pthread_mutex_lock(&c->pool_mu);
	while (c->async_busy > 0)
		pthread_cond_wait(&c->pool_cv, &c->pool_mu);
	pthread_mutex_unlock(&c->pool_mu);
	client_free(c);
}

/* ------------------------------------------------------------------ */
/* requests                                                            */

/* Wire options pointing into opts (no copies); argv_buf must outlive it. */
static int task_options_fill(Chorus__TaskOptions *w, const struct ch_task_opts *o, char *err,
                             size_t err_len)
{
	if (o == NULL)
		return CH_OK;
	if (o->restart != CH_RESTART_TEMPORARY && o->restart != CH_RESTART_TRANSIENT)
		return fail(err, err_len, CH_ERR_INVALID, "unknown restart policy %d", o->restart);
	w->timeout_ms = o->timeout_ms;
	w->restart = o->restart == CH_RESTART_TRANSIENT ? CHORUS__RESTART_POLICY__RESTART_TRANSIENT
	                                                : CHORUS__RESTART_POLICY__RESTART_TEMPORARY;
	w->max_attempts = o->max_attempts;
	w->backoff_ms = o->backoff_ms;
	if (o->argv != NULL) {
		size_t n = 0;
		while (o->argv[n] != NULL) {
			if (++n > CLIENT_ARGV_COUNT_MAX)
				return fail(err, err_len, CH_ERR_INVALID, "more than %u argv entries",
				            CLIENT_ARGV_COUNT_MAX);
		}
		w->n_argv = n;
		w->argv = (char **)o->argv; /* packed only, never written */
	}
	if (o->require != NULL) {
		size_t n = 0;
		for (; o->require[n] != NULL; n++) {
			if (n >= CH_REQUIRE_COUNT_MAX)
				return fail(err, err_len, CH_ERR_INVALID, "more than %d required tags",
				            CH_REQUIRE_COUNT_MAX);
			if (o->require[n][0] == '\0')
				return fail(err, err_len, CH_ERR_INVALID, "required tag %zu is empty", n);
		}
		w->n_require = n;
		w->require = (char **)o->require; /* packed only, never written */
	}
	return CH_OK;
}

static int check_task(const char *handler, const void *payload, size_t payload_len, char *err,
                      size_t err_len)
{
	if (handler == NULL || handler[0] == '\0')
		return fail(err, err_len, CH_ERR_INVALID, "a handler name is required");
	if (payload == NULL && payload_len > 0)
		return fail(err, err_len, CH_ERR_INVALID, "payload is NULL but its length is %zu",
		            payload_len);
	return CH_OK;
}

/* The application's key (opts->key) as wire bytes in buf. */
static int app_key_fill(const struct ch_task_opts *opts, uint8_t *buf, ProtobufCBinaryData *out,
                        char *err, size_t err_len)
{
	out->data = NULL;
	out->len = 0;
	if (opts == NULL || opts->key == NULL)
		return CH_OK;
	size_t n = strlen(opts->key);
	if (n == 0 || n > CH_KEY_BYTES_MAX)
		return fail(err, err_len, CH_ERR_INVALID, "a key is 1..%u bytes, not %zu",
		            CH_KEY_BYTES_MAX, n);
	buf[0] = KEY_APP;
	memcpy(buf + 1, opts->key, n);
	out->data = buf;
	out->len = n + 1;
	return CH_OK;
}

/* Builds the SubmitReq envelope in caller-provided storage. */
struct submit_msg {
	Chorus__Envelope env;
	Chorus__SubmitReq submit;
	Chorus__TaskSpec spec;
	Chorus__TaskOptions topts;
	uint8_t key[1 + CH_KEY_BYTES_MAX];
};

static int submit_msg_init(struct submit_msg *m, const char *handler, const void *payload,
                           size_t payload_len, const struct ch_task_opts *opts, uint32_t wait_ms,
                           char *err, size_t err_len)
{
	int code = check_task(handler, payload, payload_len, err, err_len);
	if (code != CH_OK)
		return code;
	chorus__envelope__init(&m->env);
	chorus__submit_req__init(&m->submit);
	chorus__task_spec__init(&m->spec);
	chorus__task_options__init(&m->topts);
	code = task_options_fill(&m->topts, opts, err, err_len);
	if (code != CH_OK)
		return code;
	code = app_key_fill(opts, m->key, &m->submit.idempotency_key, err, err_len);
	if (code != CH_OK)
		return code;
	m->spec.handler = (char *)handler;
	m->spec.payload.data = (uint8_t *)payload;
	m->spec.payload.len = payload_len;
	m->spec.opts = &m->topts;
	m->submit.task = &m->spec;
	m->submit.wait_ms = wait_ms;
	m->env.body_case = CHORUS__ENVELOPE__BODY_SUBMIT;
	m->env.submit = &m->submit;
	return CH_OK;
}

int ch_submit(ch_client *c, const char *handler, const void *payload, size_t payload_len,
              const struct ch_task_opts *opts, uint64_t *task_id, char *err, size_t err_len)
{
	if (c == NULL || task_id == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client and task_id are required");
	struct submit_msg m;
	int code = submit_msg_init(&m, handler, payload, payload_len, opts, 0, err, err_len);
	if (code != CH_OK)
		return code;
	Chorus__Envelope *e = NULL;
	code = call_expect(c, &m.env, 0, CHORUS__ENVELOPE__BODY_SUBMIT_RESP, &e, err, err_len);
	if (code != CH_OK)
		return code;
	*task_id = e->submit_resp->task_id;
	chorus__envelope__free_unpacked(e, NULL);
	return CH_OK;
}

/* A SubmitResp turned into a result (the node omits it when not waiting). */
static int result_of_submit(const Chorus__SubmitResp *sr, struct ch_result **result, char *err,
                            size_t err_len)
{
	struct ch_result *r = sr->result != NULL ? result_from_wire(sr->result) : result_new();
	if (r == NULL)
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
	if (sr->result == NULL) {
		r->task_id = sr->task_id;
		r->state = CH_TASK_QUEUED;
	}
	*result = r;
	return CH_OK;
}

int ch_submit_await(ch_client *c, const char *handler, const void *payload, size_t payload_len,
                    const struct ch_task_opts *opts, uint32_t wait_ms,
                    struct ch_result **result, char *err, size_t err_len)
{
	if (c == NULL || result == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client and result are required");
	*result = NULL;
	struct submit_msg m;
	int code = submit_msg_init(&m, handler, payload, payload_len, opts, wait_ms, err, err_len);
	if (code != CH_OK)
		return code;
	Chorus__Envelope *e = NULL;
	code = call_expect(c, &m.env, wait_ms, CHORUS__ENVELOPE__BODY_SUBMIT_RESP, &e, err, err_len);
	if (code != CH_OK)
		return code;
	code = result_of_submit(e->submit_resp, result, err, err_len);
	chorus__envelope__free_unpacked(e, NULL);
	return code;
}

int ch_await(ch_client *c, uint64_t task_id, uint32_t wait_ms, struct ch_result **result,
             char *err, size_t err_len)
{
	if (c == NULL || result == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client and result are required");
	*result = NULL;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	Chorus__AwaitReq aw = CHORUS__AWAIT_REQ__INIT;
	aw.task_id = task_id;
	aw.wait_ms = wait_ms;
	env.body_case = CHORUS__ENVELOPE__BODY_AWAIT;
	env.await = &aw;
	Chorus__Envelope *e = NULL;
	int code = call_expect(c, &env, wait_ms, CHORUS__ENVELOPE__BODY_AWAIT_RESP, &e, err, err_len);
	if (code != CH_OK)
		return code;
	if (e->await_resp->result == NULL) {
		chorus__envelope__free_unpacked(e, NULL);
		return fail(err, err_len, CH_ERR_PROTOCOL, "%s answered an await without a result",
		            c->addr);
	}
	*result = result_from_wire(e->await_resp->result);
	chorus__envelope__free_unpacked(e, NULL);
	if (*result == NULL)
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
	return CH_OK;
}

int ch_task_status(ch_client *c, uint64_t task_id, struct ch_result **result, char *err,
                   size_t err_len)
{
	return ch_await(c, task_id, 0, result, err, err_len);
}

int ch_cancel(ch_client *c, uint64_t task_id, int *state_after, char *err, size_t err_len)
{
	if (c == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client is required");
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	Chorus__CancelReq cr = CHORUS__CANCEL_REQ__INIT;
	cr.task_id = task_id;
	env.body_case = CHORUS__ENVELOPE__BODY_CANCEL;
	env.cancel = &cr;
	Chorus__Envelope *e = NULL;
	int code = call_expect(c, &env, 0, CHORUS__ENVELOPE__BODY_CANCEL_RESP, &e, err, err_len);
	if (code != CH_OK)
		return code;
	if (state_after != NULL) {
		int st = (int)e->cancel_resp->state;
		*state_after = (st >= 0 && st < STATE_COUNT) ? st : CH_TASK_UNKNOWN;
	}
	chorus__envelope__free_unpacked(e, NULL);
	return CH_OK;
}

int ch_cancel_batch(ch_client *c, uint64_t batch_id, uint32_t *cancelled, char *err,
                    size_t err_len)
{
	if (c == NULL || batch_id == 0)
		return fail(err, err_len, CH_ERR_INVALID, "client and a batch id are required");
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	Chorus__CancelReq cr = CHORUS__CANCEL_REQ__INIT;
	cr.batch_id = batch_id;
	env.body_case = CHORUS__ENVELOPE__BODY_CANCEL;
	env.cancel = &cr;
	Chorus__Envelope *e = NULL;
	int code = call_expect(c, &env, 0, CHORUS__ENVELOPE__BODY_CANCEL_RESP, &e, err, err_len);
	if (code != CH_OK)
		return code;
	if (cancelled != NULL)
		*cancelled = e->cancel_resp->cancelled;
	chorus__envelope__free_unpacked(e, NULL);
	return CH_OK;
}

int ch_list(ch_client *c, int state, uint32_t limit, struct ch_result ***results, uint32_t *n,
            char *err, size_t err_len)
{
	if (c == NULL || results == NULL || n == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client, results and n are required");
	*results = NULL;
	*n = 0;
	if (state < 0 || state >= STATE_COUNT)
		return fail(err, err_len, CH_ERR_INVALID, "unknown task state %d", state);
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	Chorus__ListReq lr = CHORUS__LIST_REQ__INIT;
	lr.state = (Chorus__TaskState)state;
	lr.limit = limit;
	env.body_case = CHORUS__ENVELOPE__BODY_LIST;
	env.list = &lr;
	Chorus__Envelope *e = NULL;
	int code = call_expect(c, &env, 0, CHORUS__ENVELOPE__BODY_LIST_RESP, &e, err, err_len);
	if (code != CH_OK)
		return code;
	Chorus__ListResp *l = e->list_resp;
	if (l->n_tasks > UINT32_MAX) {
		chorus__envelope__free_unpacked(e, NULL);
		return fail(err, err_len, CH_ERR_PROTOCOL, "too many tasks in the list reply");
	}
	uint32_t count = (uint32_t)l->n_tasks;
	struct ch_result **rs = calloc(count > 0 ? count : 1, sizeof *rs);
	if (rs == NULL) {
		chorus__envelope__free_unpacked(e, NULL);
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
	}
	for (uint32_t i = 0; i < count; i++) {
		rs[i] = result_from_wire(l->tasks[i]);
		if (rs[i] == NULL) {
			ch_results_free(rs, i);
			chorus__envelope__free_unpacked(e, NULL);
			return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
		}
	}
	chorus__envelope__free_unpacked(e, NULL);
	*results = rs;
	*n = count;
	return CH_OK;
}

/* ------------------------------------------------------------------ */
/* status as JSON                                                      */

/* Dumps and releases o; *json gets the text, malloc'd for the caller. */
static int json_hand_over(json_t *o, char **json, char *err, size_t err_len)
{
	char *text = o != NULL ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	json_decref(o);
	if (text == NULL)
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
	/* json_dumps uses jansson's allocator, which is malloc unless the
	 * program changed it; hand back a plain malloc'd copy to be sure. */
	*json = strdup(text);
	free(text);
	if (*json == NULL)
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
	err_clear(err, err_len);
	return CH_OK;
}

int ch_status_json(ch_client *c, char **json, char *err, size_t err_len)
{
	if (c == NULL || json == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client and json are required");
	*json = NULL;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	Chorus__StatusReq sr = CHORUS__STATUS_REQ__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_STATUS;
	env.status = &sr;
	Chorus__Envelope *e = NULL;
	int code = call_expect(c, &env, 0, CHORUS__ENVELOPE__BODY_STATUS_RESP, &e, err, err_len);
	if (code != CH_OK)
		return code;
	json_t *o = view_status(e->status_resp);
	chorus__envelope__free_unpacked(e, NULL);
	return json_hand_over(o, json, err, err_len);
}

int ch_members_json(ch_client *c, char **json, char *err, size_t err_len)
{
	if (c == NULL || json == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client and json are required");
	*json = NULL;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	Chorus__MembersReq mr = CHORUS__MEMBERS_REQ__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_MEMBERS;
	env.members = &mr;
	Chorus__Envelope *e = NULL;
	int code = call_expect(c, &env, 0, CHORUS__ENVELOPE__BODY_MEMBERS_RESP, &e, err, err_len);
	if (code != CH_OK)
		return code;
	json_t *a = view_members(e->members_resp->members, e->members_resp->n_members);
	chorus__envelope__free_unpacked(e, NULL);
	return json_hand_over(a, json, err, err_len);
}

int ch_fanouts_json(ch_client *c, uint32_t limit, char **json, char *err, size_t err_len)
{
	if (c == NULL || json == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client and json are required");
	*json = NULL;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	Chorus__ListReq lr = CHORUS__LIST_REQ__INIT;
	lr.batches = 1;
	lr.limit = limit;
	env.body_case = CHORUS__ENVELOPE__BODY_LIST;
	env.list = &lr;
	Chorus__Envelope *e = NULL;
	int code = call_expect(c, &env, 0, CHORUS__ENVELOPE__BODY_LIST_RESP, &e, err, err_len);
	if (code != CH_OK)
		return code;
	json_t *a = view_batches(e->list_resp);
	chorus__envelope__free_unpacked(e, NULL);
	return json_hand_over(a, json, err, err_len);
}

static int cache_send(ch_client *c, Chorus__CacheReq *req, Chorus__Envelope **e, char *err,
                      size_t err_len);

int ch_cache_overview_json(ch_client *c, char **json, char *err, size_t err_len)
{
	if (c == NULL || json == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client and json are required");
	*json = NULL;
	Chorus__CacheReq req = CHORUS__CACHE_REQ__INIT;
	req.op = CHORUS__CACHE_OP__CACHE_STATS;
	req.cache = (char *)""; /* every cache */
	Chorus__Envelope *e = NULL;
	int code = cache_send(c, &req, &e, err, err_len);
	if (code != CH_OK)
		return code;
	json_t *o = view_cache(e->cache_resp);
	chorus__envelope__free_unpacked(e, NULL);
	return json_hand_over(o, json, err, err_len);
}

int ch_metrics(ch_client *c, char **text, char *err, size_t err_len)
{
	if (c == NULL || text == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client and text are required");
	*text = NULL;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	Chorus__MetricsReq mr = CHORUS__METRICS_REQ__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_METRICS;
	env.metrics = &mr;
	Chorus__Envelope *e = NULL;
	int code = call_expect(c, &env, 0, CHORUS__ENVELOPE__BODY_METRICS_RESP, &e, err, err_len);
	if (code != CH_OK)
		return code;
	*text = strdup(e->metrics_resp->text ? e->metrics_resp->text : "");
	chorus__envelope__free_unpacked(e, NULL);
	if (*text == NULL)
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
	err_clear(err, err_len);
	return CH_OK;
}

/* ------------------------------------------------------------------ */
/* events                                                              */

/* One event as in ch_events_json's contract (chorus.h); the fields of the
 * HTTP API's event object (/api/events, docs/http.md). */
int ch_events_json(ch_client *c, uint64_t after, uint32_t wait_ms, uint32_t max, char **json,
                   char *err, size_t err_len)
{
	if (c == NULL || json == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client and json are required");
	*json = NULL;
	if (wait_ms > CH_EVENTS_WAIT_MAX_MS)
		wait_ms = CH_EVENTS_WAIT_MAX_MS; /* what the node would do anyway */
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	Chorus__EventsReq rq = CHORUS__EVENTS_REQ__INIT;
	rq.after = after;
	rq.wait_ms = wait_ms;
	rq.max = max;
	env.body_case = CHORUS__ENVELOPE__BODY_EVENTS;
	env.events = &rq;
	Chorus__Envelope *e = NULL;
	int code = call_expect(c, &env, wait_ms, CHORUS__ENVELOPE__BODY_EVENTS_RESP, &e, err,
	                       err_len);
	if (code != CH_OK)
		return code;
	json_t *o = view_events_page(e->events_resp);
	chorus__envelope__free_unpacked(e, NULL);
	return json_hand_over(o, json, err, err_len);
}

/* ------------------------------------------------------------------ */
/* schedules and voters                                                */

/* Calls the leader answers (through whichever node is asked) are retried
 * while there is none: an election takes about a second. */
#define LEADER_RETRY_MS_FIRST 100u
#define LEADER_RETRY_MS_MAX 1000u
#define LEADER_RETRY_COUNT_MAX 64u /* the client's timeout ends it long before */
#define CRON_ARGV_COUNT_MAX CLIENT_ARGV_COUNT_MAX

static const char *const overlap_names[] = {
	[CH_OVERLAP_SKIP] = "skip",
	[CH_OVERLAP_BUFFER_ONE] = "buffer_one",
	[CH_OVERLAP_BUFFER_ALL] = "buffer_all",
	[CH_OVERLAP_CANCEL_OTHER] = "cancel_other",
	[CH_OVERLAP_ALLOW_ALL] = "allow_all",
};
#define OVERLAP_COUNT ((int)(sizeof overlap_names / sizeof overlap_names[0]))

const char *ch_overlap_name(int overlap)
{
	if (overlap < 0 || overlap >= OVERLAP_COUNT)
		return "unknown";
	return overlap_names[overlap];
}

int ch_overlap_parse(const char *name)
{
	if (name == NULL)
		return -1;
	for (int i = 0; i < OVERLAP_COUNT; i++) {
		const char *want = overlap_names[i];
		size_t k = 0;
		/* "buffer-one" reads as "buffer_one" */
		while (want[k] != '\0' && (name[k] == want[k] || (want[k] == '_' && name[k] == '-')))
			k++;
		if (want[k] == '\0' && name[k] == '\0')
			return i;
	}
	return -1;
}

/* A request the leader answers, with the answer's body `want` (or `alt`,
 * when not BODY__NOT_SET). CH_ERR_NOT_LEADER is retried with backoff until
 * the client's timeout has passed since the call began; every other
 * outcome is returned as it is. On CH_OK *e is the reply (caller frees). */
static int call_leader(ch_client *c, Chorus__Envelope *env, Chorus__Envelope__BodyCase want,
                       Chorus__Envelope__BodyCase alt, Chorus__Envelope **e, char *err,
                       size_t err_len)
{
	*e = NULL;
	nng_time start = nng_clock();
	nng_time deadline = start + c->timeout_ms;
	uint32_t backoff_ms = LEADER_RETRY_MS_FIRST;
	int code = CH_ERR_NOT_LEADER;
	uint32_t tries = 0;
	while (tries < LEADER_RETRY_COUNT_MAX) {
		tries++;
		nng_time now = nng_clock();
		uint32_t left_ms = now < deadline ? (uint32_t)(deadline - now) : 1;
		code = request_sync(c, env, left_ms, e, err, err_len);
		if (code != CH_ERR_NOT_LEADER)
			break;
		now = nng_clock();
		if (now + backoff_ms >= deadline)
			break;
		nng_msleep((nng_duration)backoff_ms);
		backoff_ms = backoff_ms * 2 > LEADER_RETRY_MS_MAX ? LEADER_RETRY_MS_MAX : backoff_ms * 2;
	}
	if (code == CH_ERR_NOT_LEADER) {
		char why[CLIENT_ERR_BYTES];
		snprintf(why, sizeof why, "%s", err != NULL && err_len > 0 ? err : "");
		return fail(err, err_len, code, "%s (gave up after %u tries in %u ms)",
		            why[0] != '\0' ? why : ch_strerror(code), tries,
		            (unsigned)(nng_clock() - start));
	}
	if (code != CH_OK)
		return code;
	bool body_ok = (*e)->body_case == want ||
	               (alt != CHORUS__ENVELOPE__BODY__NOT_SET && (*e)->body_case == alt);
	if (body_ok && (*e)->submit_resp != NULL) /* union: any member */
		return CH_OK;
	/* not what we asked for: expect_body frees it and says what came */
	code = expect_body(c, *e, want, err, err_len);
	assert(code != CH_OK);
	*e = NULL;
	return code;
}

/* A copy of n strings (each "" for NULL); NULL only when out of memory. */
static char **strv_dup(char *const *v, size_t n)
{
	char **out = calloc(n > 0 ? n : 1, sizeof *out);
	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		out[i] = dup_str(v[i]);
		if (out[i] == NULL) {
			for (size_t k = 0; k < i; k++)
				free(out[k]);
			free(out);
			return NULL;
		}
	}
	return out;
}

static void strv_free(char **v, size_t n)
{
	if (v == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void ch_cron_info_free(struct ch_cron_info *info)
{
	if (info == NULL)
		return;
	free(info->name);
	free(info->expr);
	free(info->tz);
	free(info->handler);
	free(info->on);
	free(info->payload);
	strv_free(info->argv, info->argv_count);
	strv_free(info->require, info->require_count);
	free(info->note);
	for (uint32_t i = 0; info->history != NULL && i < info->history_count; i++) {
		free(info->history[i].node);
		free(info->history[i].outcome);
		free(info->history[i].why);
	}
	free(info->history);
	free(info);
}

void ch_cron_infos_free(struct ch_cron_info **infos, uint32_t n)
{
	if (infos == NULL)
		return;
	for (uint32_t i = 0; i < n; i++)
		ch_cron_info_free(infos[i]);
	free(infos);
}

/* Deep copy of a CronInfo (a missing spec reads as an empty one). NULL
 * when out of memory. */
static struct ch_cron_info *cron_info_from_wire(const Chorus__CronInfo *w)
{
	struct ch_cron_info *ci = calloc(1, sizeof *ci);
	if (ci == NULL)
		return NULL;
	Chorus__CronSpec empty = CHORUS__CRON_SPEC__INIT;
	const Chorus__CronSpec *s = w->spec != NULL ? w->spec : &empty;
	ci->name = dup_str(s->name);
	ci->expr = dup_str(s->expr);
	ci->tz = dup_str(s->tz);
	ci->handler = dup_str(s->handler);
	ci->on = dup_str(s->on);
	ci->payload = malloc(s->payload.len + 1);
	if (ci->payload != NULL) {
		if (s->payload.len > 0)
			memcpy(ci->payload, s->payload.data, s->payload.len);
		ci->payload[s->payload.len] = '\0';
		ci->payload_len = s->payload.len;
	}
	const Chorus__TaskOptions *o = s->opts;
	bool ok = ci->name != NULL && ci->expr != NULL && ci->tz != NULL && ci->handler != NULL &&
	          ci->on != NULL && ci->payload != NULL;
	if (o != NULL && ok) {
		ci->timeout_ms = o->timeout_ms;
		ci->restart = o->restart == CHORUS__RESTART_POLICY__RESTART_TRANSIENT
		                      ? CH_RESTART_TRANSIENT
		                      : CH_RESTART_TEMPORARY;
		ci->max_attempts = o->max_attempts;
		ci->backoff_ms = o->backoff_ms;
		size_t na = o->n_argv > CRON_ARGV_COUNT_MAX ? CRON_ARGV_COUNT_MAX : o->n_argv;
		size_t nr = o->n_require > CH_REQUIRE_COUNT_MAX ? CH_REQUIRE_COUNT_MAX : o->n_require;
		ci->argv = strv_dup(o->argv, na);
		ci->argv_count = ci->argv != NULL ? (uint32_t)na : 0;
		ci->require = strv_dup(o->require, nr);
		ci->require_count = ci->require != NULL ? (uint32_t)nr : 0;
		ok = ci->argv != NULL && ci->require != NULL;
	}
	ci->overlap = ((int)s->overlap >= 0 && (int)s->overlap < OVERLAP_COUNT) ? (int)s->overlap
	                                                                         : CH_OVERLAP_SKIP;
	ci->catchup_ms = s->catchup_ms;
	ci->start_s = s->start_s;
	ci->end_s = s->end_s;
	ci->max_runs = s->max_runs;
	ci->jitter_ms = s->jitter_ms;
	ci->pause_on_failure = s->pause_on_failure;
	ci->paused = w->paused;
	ci->note = dup_str(w->note);
	ci->runs = w->runs;
	ci->next_s = w->next_s;
	ci->last_s = w->last_s;
	ok = ok && ci->note != NULL;
	if (ok && w->n_history > 0 && w->n_history <= UINT32_MAX) {
		ci->history = calloc(w->n_history, sizeof *ci->history);
		ok = ci->history != NULL;
		for (size_t i = 0; ok && i < w->n_history; i++) {
			const Chorus__CronRun *r = w->history[i];
			struct ch_cron_run *h = &ci->history[i];
			ci->history_count = (uint32_t)i + 1; /* freed as far as filled */
			h->scheduled_s = r->scheduled_s;
			h->fired_ms = r->fired_ms;
			h->task_id = r->task_id;
			h->node = dup_str(r->node);
			h->outcome = dup_str(r->outcome);
			h->why = dup_str(r->why);
			ok = h->node != NULL && h->outcome != NULL && h->why != NULL;
		}
	}
	if (!ok) {
		ch_cron_info_free(ci);
		return NULL;
	}
	return ci;
}

static int check_cron_name(const char *name, char *err, size_t err_len)
{
	if (name == NULL || name[0] == '\0')
		return fail(err, err_len, CH_ERR_INVALID, "a schedule name is required");
	if (strlen(name) > CH_CRON_NAME_BYTES_MAX)
		return fail(err, err_len, CH_ERR_INVALID, "a schedule name has at most %d bytes",
		            CH_CRON_NAME_BYTES_MAX);
	return CH_OK;
}

/* Sends a CronReq to the leader. With `info` (may be NULL) the answer's
 * schedule, if it names one, is handed over (*info NULL when it names
 * none). */
static int cron_call(ch_client *c, Chorus__CronReq *req, struct ch_cron_info **info, char *err,
                     size_t err_len)
{
	if (info != NULL)
		*info = NULL;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_CRON;
	env.cron = req;
	Chorus__Envelope *e = NULL;
	int code = call_leader(c, &env, CHORUS__ENVELOPE__BODY_CRON_RESP,
	                       CHORUS__ENVELOPE__BODY__NOT_SET, &e, err, err_len);
	if (code != CH_OK)
		return code;
	const Chorus__CronResp *r = e->cron_resp;
	if (info != NULL && r->n_schedules > 0) {
		*info = cron_info_from_wire(r->schedules[0]);
		if (*info == NULL) {
			chorus__envelope__free_unpacked(e, NULL);
			return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
		}
	}
	chorus__envelope__free_unpacked(e, NULL);
	err_clear(err, err_len);
	return CH_OK;
}

/* A change answered with its schedule: it must name one. */
static int cron_change(ch_client *c, Chorus__CronReq *req, struct ch_cron_info **info, char *err,
                       size_t err_len)
{
	struct ch_cron_info *got = NULL;
	int code = cron_call(c, req, &got, err, err_len);
	if (code != CH_OK)
		return code;
	if (got == NULL)
		return fail(err, err_len, CH_ERR_PROTOCOL, "%s answered without the schedule", c->addr);
	if (info != NULL)
		*info = got;
	else
		ch_cron_info_free(got);
	return CH_OK;
}

int ch_cron_add(ch_client *c, const struct ch_cron_spec *spec, struct ch_cron_info **info,
                char *err, size_t err_len)
{
	if (info != NULL)
		*info = NULL;
	if (c == NULL || spec == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client and spec are required");
	int code = check_cron_name(spec->name, err, err_len);
	if (code != CH_OK)
		return code;
	if (spec->expr == NULL || spec->expr[0] == '\0')
		return fail(err, err_len, CH_ERR_INVALID, "a cron expression is required");
	code = check_task(spec->handler, spec->payload, spec->payload_len, err, err_len);
	if (code != CH_OK)
		return code;
	if (spec->task.key != NULL)
		return fail(err, err_len, CH_ERR_INVALID,
		            "a schedule's task takes no key: the cluster keys each occurrence");
	if (spec->overlap < 0 || spec->overlap >= OVERLAP_COUNT)
		return fail(err, err_len, CH_ERR_INVALID, "unknown overlap policy %d", spec->overlap);
	Chorus__TaskOptions topts = CHORUS__TASK_OPTIONS__INIT;
	code = task_options_fill(&topts, &spec->task, err, err_len);
	if (code != CH_OK)
		return code;
	Chorus__CronSpec cs = CHORUS__CRON_SPEC__INIT;
	cs.name = (char *)spec->name; /* packed only, never written */
	cs.expr = (char *)spec->expr;
	cs.tz = (char *)(spec->tz != NULL ? spec->tz : "");
	cs.handler = (char *)spec->handler;
	cs.payload.data = (uint8_t *)spec->payload;
	cs.payload.len = spec->payload_len;
	cs.opts = &topts;
	cs.overlap = (Chorus__Overlap)spec->overlap;
	cs.catchup_ms = spec->catchup_ms;
	cs.start_s = spec->start_s;
	cs.end_s = spec->end_s;
	cs.max_runs = spec->max_runs;
	cs.jitter_ms = spec->jitter_ms;
	cs.pause_on_failure = spec->pause_on_failure != 0;
	cs.on = (char *)(spec->on != NULL ? spec->on : "");
	Chorus__CronReq req = CHORUS__CRON_REQ__INIT;
	req.op = CH_CRON_ADD;
	req.spec = &cs;
	return cron_change(c, &req, info, err, err_len);
}

/* rm, pause, resume, trigger: a name and maybe a note. */
static int cron_named(ch_client *c, uint32_t op, const char *name, const char *note,
                      struct ch_cron_info **info, char *err, size_t err_len)
{
	if (info != NULL)
		*info = NULL;
	if (c == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client is required");
	int code = check_cron_name(name, err, err_len);
	if (code != CH_OK)
		return code;
	if (note != NULL && strlen(note) > CH_CRON_NOTE_BYTES_MAX)
		return fail(err, err_len, CH_ERR_INVALID, "a note has at most %d bytes",
		            CH_CRON_NOTE_BYTES_MAX);
	Chorus__CronReq req = CHORUS__CRON_REQ__INIT;
	req.op = op;
	req.name = (char *)name; /* packed only, never written */
	req.note = (char *)(note != NULL ? note : "");
	/* a trigger names its second: a retry after a leader change (the
	 * first attempt may have committed) names the same one, and the
	 * cluster runs it once */
	if (op == CH_CRON_TRIGGER)
		req.from_s = (int64_t)time(NULL);
	if (op == CH_CRON_RM)
		return cron_call(c, &req, NULL, err, err_len);
	return cron_change(c, &req, info, err, err_len);
}

int ch_cron_remove(ch_client *c, const char *name, char *err, size_t err_len)
{
	return cron_named(c, CH_CRON_RM, name, NULL, NULL, err, err_len);
}

int ch_cron_pause(ch_client *c, const char *name, const char *note, struct ch_cron_info **info,
                  char *err, size_t err_len)
{
	return cron_named(c, CH_CRON_PAUSE, name, note, info, err, err_len);
}

int ch_cron_resume(ch_client *c, const char *name, struct ch_cron_info **info, char *err,
                   size_t err_len)
{
	return cron_named(c, CH_CRON_RESUME, name, NULL, info, err, err_len);
}

int ch_cron_trigger(ch_client *c, const char *name, struct ch_cron_info **info, char *err,
                    size_t err_len)
{
	return cron_named(c, CH_CRON_TRIGGER, name, NULL, info, err, err_len);
}

int ch_cron_backfill(ch_client *c, const char *name, int64_t from_s, int64_t to_s, int overlap,
                     struct ch_cron_info **info, char *err, size_t err_len)
{
	if (info != NULL)
		*info = NULL;
	if (c == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client is required");
	int code = check_cron_name(name, err, err_len);
	if (code != CH_OK)
		return code;
	if (from_s <= 0 || to_s < from_s)
		return fail(err, err_len, CH_ERR_INVALID,
		            "backfill: from (%lld) must be a positive time no later than to (%lld)",
		            (long long)from_s, (long long)to_s);
	if (overlap < 0 || overlap >= OVERLAP_COUNT)
		return fail(err, err_len, CH_ERR_INVALID, "unknown overlap policy %d", overlap);
	Chorus__CronReq req = CHORUS__CRON_REQ__INIT;
	req.op = CH_CRON_BACKFILL;
	req.name = (char *)name; /* packed only, never written */
	req.from_s = from_s;
	req.to_s = to_s;
	req.overlap = (Chorus__Overlap)overlap;
	return cron_change(c, &req, info, err, err_len);
}

int ch_cron_list(ch_client *c, struct ch_cron_info ***infos, uint32_t *n, char *err,
                 size_t err_len)
{
	if (c == NULL || infos == NULL || n == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client, infos and n are required");
	*infos = NULL;
	*n = 0;
	Chorus__CronReq req = CHORUS__CRON_REQ__INIT;
	req.op = CH_CRON_LIST;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_CRON;
	env.cron = &req;
	Chorus__Envelope *e = NULL;
	int code = call_leader(c, &env, CHORUS__ENVELOPE__BODY_CRON_RESP,
	                       CHORUS__ENVELOPE__BODY__NOT_SET, &e, err, err_len);
	if (code != CH_OK)
		return code;
	const Chorus__CronResp *r = e->cron_resp;
	if (r->n_schedules > UINT32_MAX) {
		chorus__envelope__free_unpacked(e, NULL);
		return fail(err, err_len, CH_ERR_PROTOCOL, "too many schedules in the list reply");
	}
	uint32_t count = (uint32_t)r->n_schedules;
	struct ch_cron_info **v = calloc(count > 0 ? count : 1, sizeof *v);
	if (v == NULL) {
		chorus__envelope__free_unpacked(e, NULL);
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
	}
	for (uint32_t i = 0; i < count; i++) {
		v[i] = cron_info_from_wire(r->schedules[i]);
		if (v[i] == NULL) {
			ch_cron_infos_free(v, i);
			chorus__envelope__free_unpacked(e, NULL);
			return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
		}
	}
	chorus__envelope__free_unpacked(e, NULL);
	*infos = v;
	*n = count;
	err_clear(err, err_len);
	return CH_OK;
}

int ch_cron_show(ch_client *c, const char *name, uint32_t limit, struct ch_cron_info **info,
                 char *err, size_t err_len)
{
	if (info == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "info is required");
	*info = NULL;
	if (c == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client is required");
	int code = check_cron_name(name, err, err_len);
	if (code != CH_OK)
		return code;
	Chorus__CronReq req = CHORUS__CRON_REQ__INIT;
	req.op = CH_CRON_SHOW;
	req.name = (char *)name; /* packed only, never written */
	req.limit = limit > 0 ? limit : CH_CRON_HISTORY_DEFAULT;
	code = cron_call(c, &req, info, err, err_len);
	if (code == CH_OK && *info == NULL)
		return fail(err, err_len, CH_ERR_NOT_FOUND, "no schedule named \"%s\"", name);
	return code;
}

void ch_voters_free(struct ch_voters *v)
{
	if (v == NULL)
		return;
	for (uint32_t i = 0; v->voters != NULL && i < v->count; i++) {
		free(v->voters[i].id);
		free(v->voters[i].name);
		free(v->voters[i].addr);
	}
	free(v->voters);
	free(v);
}

static struct ch_voters *voters_from_wire(const Chorus__VotersResp *w)
{
	struct ch_voters *v = calloc(1, sizeof *v);
	if (v == NULL)
		return NULL;
	v->term = w->term;
	v->commit_index = w->commit_index;
	size_t n = w->n_voters > UINT32_MAX ? UINT32_MAX : w->n_voters;
	v->voters = calloc(n > 0 ? n : 1, sizeof *v->voters);
	if (v->voters == NULL) {
		free(v);
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		struct ch_voter *o = &v->voters[i];
		v->count = (uint32_t)i + 1; /* freed as far as filled */
		o->id = dup_str(w->voters[i]->id);
		o->name = dup_str(w->voters[i]->name);
		o->addr = dup_str(w->voters[i]->addr);
		o->alive = w->voters[i]->alive;
		o->leader = w->voters[i]->leader;
		if (o->id == NULL || o->name == NULL || o->addr == NULL) {
			ch_voters_free(v);
			return NULL;
		}
	}
	return v;
}

int ch_voters_list(ch_client *c, struct ch_voters **out, char *err, size_t err_len)
{
	if (c == NULL || out == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client and out are required");
	*out = NULL;
	Chorus__VotersReq req = CHORUS__VOTERS_REQ__INIT;
	req.op = CH_VOTERS_LIST;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_VOTERS;
	env.voters = &req;
	Chorus__Envelope *e = NULL;
	int code = call_leader(c, &env, CHORUS__ENVELOPE__BODY_VOTERS_RESP,
	                       CHORUS__ENVELOPE__BODY__NOT_SET, &e, err, err_len);
	if (code != CH_OK)
		return code;
	*out = voters_from_wire(e->voters_resp);
	chorus__envelope__free_unpacked(e, NULL);
	if (*out == NULL)
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
	err_clear(err, err_len);
	return CH_OK;
}

static int voters_change(ch_client *c, uint32_t op, const char *member, struct ch_voters **out,
                         char *err, size_t err_len)
{
	if (out != NULL)
		*out = NULL;
	if (c == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client is required");
	if (member == NULL || member[0] == '\0')
		return fail(err, err_len, CH_ERR_INVALID, "a member (name or hex id) is required");
	Chorus__VotersReq req = CHORUS__VOTERS_REQ__INIT;
	req.op = op;
	req.member = (char *)member; /* packed only, never written */
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_VOTERS;
	env.voters = &req;
	Chorus__Envelope *e = NULL;
	/* the node answers a committed change with an empty CronResp (its
	 * pending-change path is shared with the schedules) or a VotersResp */
	int code = call_leader(c, &env, CHORUS__ENVELOPE__BODY_VOTERS_RESP,
	                       CHORUS__ENVELOPE__BODY_CRON_RESP, &e, err, err_len);
	if (code != CH_OK)
		return code;
	chorus__envelope__free_unpacked(e, NULL);
	if (out == NULL) {
		err_clear(err, err_len);
		return CH_OK;
	}
	return ch_voters_list(c, out, err, err_len);
}

int ch_voters_add(ch_client *c, const char *member, struct ch_voters **out, char *err,
                  size_t err_len)
{
	return voters_change(c, CH_VOTERS_ADD, member, out, err, err_len);
}

int ch_voters_remove(ch_client *c, const char *member, struct ch_voters **out, char *err,
                     size_t err_len)
{
	return voters_change(c, CH_VOTERS_REMOVE, member, out, err, err_len);
}

/* ------------------------------------------------------------------ */
/* the cache                                                           */

/* CH_ERR_MOVED (a partition in a move, or a node on a stale map) is
 * retried: the node applied nothing. The tries are few and close together
 * since a node's map catches up within a gossip round or two. */
#define CACHE_MOVED_RETRY_MS_FIRST 25u
#define CACHE_MOVED_RETRY_MS_MAX 400u
#define CACHE_NAME_DEFAULT "default"

static const char *const consistency_names[] = {
	[CH_CACHE_DEFAULT] = "default",
	[CH_CACHE_ONE] = "one",
	[CH_CACHE_QUORUM] = "quorum",
	[CH_CACHE_ALL] = "all",
};
#define CONSISTENCY_COUNT ((int)(sizeof consistency_names / sizeof consistency_names[0]))

const char *ch_cache_consistency_name(int consistency)
{
	if (consistency < 0 || consistency >= CONSISTENCY_COUNT)
		return "unknown";
	return consistency_names[consistency];
}

int ch_cache_consistency_parse(const char *name)
{
	if (name == NULL)
		return -1;
	for (int i = 0; i < CONSISTENCY_COUNT; i++) {
		if (strcasecmp(name, consistency_names[i]) == 0)
			return i;
	}
	return -1;
}

void ch_bytes_free(struct ch_bytes *v, size_t n)
{
	if (v == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i].data);
	free(v);
}

void ch_cache_stats_free(struct ch_cache_stats *v, size_t n)
{
	if (v == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		free(v[i].cache);
		free(v[i].node);
	}
	free(v);
}

/* A NUL-terminated copy of n bytes (for convenience; the length is exact).
 * NULL only when out of memory. */
static void *bytes_dup(const void *p, size_t n)
{
	uint8_t *out = malloc(n + 1);
	if (out == NULL)
		return NULL;
	if (n > 0)
		memcpy(out, p, n);
	out[n] = '\0';
	return out;
}

static int check_cache_key(const void *key, size_t key_len, char *err, size_t err_len)
{
	if (key == NULL || key_len == 0)
		return fail(err, err_len, CH_ERR_INVALID, "a key is required (1 byte or more)");
	return CH_OK;
}

/* The cache the options name, checked. */
static int cache_name_of(const char *cache, const char **name, char *err, size_t err_len)
{
	*name = cache != NULL && cache[0] != '\0' ? cache : CACHE_NAME_DEFAULT;
	if (strlen(*name) > CH_CACHE_NAME_BYTES_MAX)
		return fail(err, err_len, CH_ERR_INVALID, "a cache name has at most %d bytes",
		            CH_CACHE_NAME_BYTES_MAX);
	return CH_OK;
}

/* Fills in the request's cache and consistency from opts (NULL: defaults). */
static int cache_opts_apply(const struct ch_cache_opts *opts, Chorus__CacheReq *req, char *err,
                            size_t err_len)
{
	int consistency = opts != NULL ? opts->consistency : CH_CACHE_DEFAULT;
	if (consistency < 0 || consistency >= CONSISTENCY_COUNT)
		return fail(err, err_len, CH_ERR_INVALID, "unknown consistency level %d", consistency);
	const char *cache;
	int code = cache_name_of(opts != NULL ? opts->cache : NULL, &cache, err, err_len);
	if (code != CH_OK)
		return code;
	req->cache = (char *)cache; /* packed only, never written */
	req->consistency = (Chorus__Consistency)consistency;
	return CH_OK;
}

/* Sends a CacheReq to the node, which routes it to the key's primary, and
 * checks that a CacheResp came back. CH_ERR_MOVED is retried (see
 * chorus.h) within total_ms (0: the client's timeout) since the call
 * began. On CH_OK *e is the reply (caller frees), else NULL. */
static int cache_send_within(ch_client *c, Chorus__CacheReq *req, uint32_t total_ms,
                             Chorus__Envelope **e, char *err, size_t err_len)
{
	*e = NULL;
	if (c == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client is required");
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_CACHE;
	env.cache = req;
	nng_time start = nng_clock();
	nng_time deadline = start + (total_ms > 0 ? total_ms : c->timeout_ms);
	uint32_t backoff_ms = CACHE_MOVED_RETRY_MS_FIRST;
	uint32_t tries = 0;
	int code = CH_ERR_MOVED;
	while (tries < CH_CACHE_MOVED_TRIES) {
		tries++;
		nng_time now = nng_clock();
		uint32_t left_ms = now < deadline ? (uint32_t)(deadline - now) : 1;
		code = request_sync(c, &env, left_ms, e, err, err_len);
		if (code != CH_ERR_MOVED)
			break;
		if (tries == CH_CACHE_MOVED_TRIES || nng_clock() + backoff_ms >= deadline)
			break;
		nng_msleep((nng_duration)backoff_ms);
		backoff_ms = backoff_ms * 2 > CACHE_MOVED_RETRY_MS_MAX ? CACHE_MOVED_RETRY_MS_MAX
		                                                       : backoff_ms * 2;
	}
	if (code == CH_ERR_MOVED) {
		char why[CLIENT_ERR_BYTES];
		snprintf(why, sizeof why, "%s", err != NULL && err_len > 0 ? err : "");
		return fail(err, err_len, code, "%s (gave up after %u tries in %u ms)",
		            why[0] != '\0' ? why : ch_strerror(code), tries,
		            (unsigned)(nng_clock() - start));
	}
	if (code != CH_OK)
		return code;
	code = expect_body(c, *e, CHORUS__ENVELOPE__BODY_CACHE_RESP, err, err_len);
	if (code != CH_OK)
		*e = NULL; /* expect_body freed it */
	return code;
}

static int cache_send(ch_client *c, Chorus__CacheReq *req, Chorus__Envelope **e, char *err,
                      size_t err_len)
{
	return cache_send_within(c, req, 0, e, err, err_len);
}

static int cache_call(ch_client *c, const struct ch_cache_opts *opts, Chorus__CacheReq *req,
                      Chorus__Envelope **e, char *err, size_t err_len)
{
	*e = NULL;
	int code = cache_opts_apply(opts, req, err, err_len);
	if (code != CH_OK)
		return code;
	return cache_send(c, req, e, err, err_len);
}

/* A request about one key, its op and key filled in. */
static void cache_req_key(Chorus__CacheReq *req, Chorus__CacheOp op, const void *key,
                          size_t key_len)
{
	req->op = op;
	req->key.data = (uint8_t *)key; /* packed only, never written */
	req->key.len = key_len;
}

static void version_from_wire(const Chorus__CacheVersion *w, struct ch_cache_version *v)
{
	memset(v, 0, sizeof *v);
	if (w == NULL)
		return;
	v->hlc = w->hlc;
	memcpy(v->node, w->node.data, w->node.len < sizeof v->node ? w->node.len : sizeof v->node);
}

/* Hands the answer's value over: *value a copy (NULL when not found). */
static int cache_value_take(const Chorus__CacheResp *r, void **value, size_t *value_len,
                            char *err, size_t err_len)
{
	*value = NULL;
	*value_len = 0;
	if (!r->found)
		return CH_OK;
	*value = bytes_dup(r->value.data, r->value.len);
	if (*value == NULL)
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
	*value_len = r->value.len;
	return CH_OK;
}

/* get and getdel: a read that hands the value out, CH_ERR_NOT_FOUND on a miss. */
static int cache_read(ch_client *c, const struct ch_cache_opts *opts, Chorus__CacheOp op,
                      const void *key, size_t key_len, void **value, size_t *value_len,
                      struct ch_cache_version *version, int64_t *ttl_ms, char *err,
                      size_t err_len)
{
	if (value != NULL)
		*value = NULL;
	if (value_len != NULL)
		*value_len = 0;
	if (version != NULL)
		memset(version, 0, sizeof *version);
	if (ttl_ms != NULL)
		*ttl_ms = -2;
	if (value == NULL || value_len == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "value and value_len are required");
	int code = check_cache_key(key, key_len, err, err_len);
	if (code != CH_OK)
		return code;
	Chorus__CacheReq req = CHORUS__CACHE_REQ__INIT;
	cache_req_key(&req, op, key, key_len);
	Chorus__Envelope *e = NULL;
	code = cache_call(c, opts, &req, &e, err, err_len);
	if (code != CH_OK)
		return code;
	const Chorus__CacheResp *r = e->cache_resp;
	if (!r->found) {
		chorus__envelope__free_unpacked(e, NULL);
		/* the message clusterctl tells a miss from a missing cache by */
		return fail(err, err_len, CH_ERR_NOT_FOUND, "no such key");
	}
	code = cache_value_take(r, value, value_len, err, err_len);
	if (code == CH_OK && version != NULL)
		version_from_wire(r->version, version);
	if (code == CH_OK && ttl_ms != NULL)
		*ttl_ms = r->ttl_ms;
	chorus__envelope__free_unpacked(e, NULL);
	if (code == CH_OK)
		err_clear(err, err_len);
	return code;
}

int ch_cache_get(ch_client *c, const struct ch_cache_opts *opts, const void *key, size_t key_len,
                 void **value, size_t *value_len, struct ch_cache_version *version,
                 int64_t *ttl_ms, char *err, size_t err_len)
{
	return cache_read(c, opts, CHORUS__CACHE_OP__CACHE_GET, key, key_len, value, value_len,
	                  version, ttl_ms, err, err_len);
}

int ch_cache_getdel(ch_client *c, const struct ch_cache_opts *opts, const void *key,
                    size_t key_len, void **value, size_t *value_len, char *err, size_t err_len)
{
	return cache_read(c, opts, CHORUS__CACHE_OP__CACHE_GETDEL, key, key_len, value, value_len,
	                  NULL, NULL, err, err_len);
}

/* put and getset. old/old_len: NULL for put (the GET flag is then refused). */
static int cache_write(ch_client *c, const struct ch_cache_opts *opts, const void *key,
                       size_t key_len, const void *value, size_t value_len, int64_t ttl_ms,
                       uint32_t flags, const struct ch_cache_version *if_version, void **old,
                       size_t *old_len, int *applied, char *err, size_t err_len)
{
	if (applied != NULL)
		*applied = 0;
	int code = check_cache_key(key, key_len, err, err_len);
	if (code != CH_OK)
		return code;
	if (value == NULL && value_len > 0)
		return fail(err, err_len, CH_ERR_INVALID, "value is NULL with a length of %zu",
		            value_len);
	if ((flags & ~(CH_CACHE_NX | CH_CACHE_XX | CH_CACHE_KEEPTTL | CH_CACHE_GET)) != 0)
		return fail(err, err_len, CH_ERR_INVALID, "unknown put flags 0x%x", flags);
	if ((flags & CH_CACHE_NX) != 0 && (flags & CH_CACHE_XX) != 0)
		return fail(err, err_len, CH_ERR_INVALID, "NX and XX exclude each other");
	if (ttl_ms < 0)
		return fail(err, err_len, CH_ERR_INVALID, "ttl_ms is negative (%lld)",
		            (long long)ttl_ms);
	if ((flags & CH_CACHE_KEEPTTL) != 0 && ttl_ms != 0)
		return fail(err, err_len, CH_ERR_INVALID, "KEEPTTL takes no ttl");
	if (old == NULL && (flags & CH_CACHE_GET) != 0)
		return fail(err, err_len, CH_ERR_INVALID,
		            "CH_CACHE_GET hands the old value back: use ch_cache_getset");
	Chorus__CacheReq req = CHORUS__CACHE_REQ__INIT;
	cache_req_key(&req, CHORUS__CACHE_OP__CACHE_PUT, key, key_len);
	req.value.data = (uint8_t *)value; /* packed only, never written */
	req.value.len = value_len;
	req.ttl_ms = ttl_ms;
	req.flags = flags | (old != NULL ? CH_CACHE_GET : 0u);
	Chorus__CacheVersion wv = CHORUS__CACHE_VERSION__INIT;
	if (if_version != NULL) {
		wv.hlc = if_version->hlc;
		wv.node.data = (uint8_t *)if_version->node;
		wv.node.len = sizeof if_version->node;
		req.if_version = &wv;
	}
	Chorus__Envelope *e = NULL;
	code = cache_call(c, opts, &req, &e, err, err_len);
	if (code != CH_OK)
		return code;
	const Chorus__CacheResp *r = e->cache_resp;
	if (old != NULL)
		code = cache_value_take(r, old, old_len, err, err_len);
	if (code == CH_OK && applied != NULL)
		*applied = r->applied;
	chorus__envelope__free_unpacked(e, NULL);
	if (code == CH_OK)
		err_clear(err, err_len);
	return code;
}

int ch_cache_put(ch_client *c, const struct ch_cache_opts *opts, const void *key, size_t key_len,
                 const void *value, size_t value_len, int64_t ttl_ms, uint32_t flags,
                 const struct ch_cache_version *if_version, int *applied, char *err,
                 size_t err_len)
{
	return cache_write(c, opts, key, key_len, value, value_len, ttl_ms, flags, if_version, NULL,
	                   NULL, applied, err, err_len);
}

int ch_cache_getset(ch_client *c, const struct ch_cache_opts *opts, const void *key,
                    size_t key_len, const void *value, size_t value_len, int64_t ttl_ms,
                    uint32_t flags, void **old, size_t *old_len, int *applied, char *err,
                    size_t err_len)
{
	if (old == NULL || old_len == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "old and old_len are required");
	*old = NULL;
	*old_len = 0;
	return cache_write(c, opts, key, key_len, value, value_len, ttl_ms, flags, NULL, old,
	                   old_len, applied, err, err_len);
}

/* The answers of the one-key calls that hand back no value. */
struct cache_answer {
	bool found;
	bool applied;
	int64_t ttl_ms;
	int64_t integer;
};

/* A one-key request (op, plus ttl_ms and delta when they apply). */
static int cache_simple(ch_client *c, const struct ch_cache_opts *opts, Chorus__CacheOp op,
                        const void *key, size_t key_len, int64_t ttl_ms, int64_t delta,
                        struct cache_answer *out, char *err, size_t err_len)
{
	memset(out, 0, sizeof *out);
	int code = check_cache_key(key, key_len, err, err_len);
	if (code != CH_OK)
		return code;
	Chorus__CacheReq req = CHORUS__CACHE_REQ__INIT;
	cache_req_key(&req, op, key, key_len);
	req.ttl_ms = ttl_ms;
	req.delta = delta;
	Chorus__Envelope *e = NULL;
	code = cache_call(c, opts, &req, &e, err, err_len);
	if (code != CH_OK)
		return code;
	const Chorus__CacheResp *r = e->cache_resp;
	out->found = r->found;
	out->applied = r->applied;
	out->ttl_ms = r->ttl_ms;
	out->integer = r->integer;
	chorus__envelope__free_unpacked(e, NULL);
	err_clear(err, err_len);
	return CH_OK;
}

int ch_cache_del(ch_client *c, const struct ch_cache_opts *opts, const void *key, size_t key_len,
                 int *existed, char *err, size_t err_len)
{
	struct cache_answer a;
	int code = cache_simple(c, opts, CHORUS__CACHE_OP__CACHE_DEL, key, key_len, 0, 0, &a, err,
	                        err_len);
	if (existed != NULL)
		*existed = code == CH_OK && a.integer > 0;
	return code;
}

int ch_cache_exists(ch_client *c, const struct ch_cache_opts *opts, const void *key,
                    size_t key_len, int *exists, char *err, size_t err_len)
{
	if (exists == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "exists is required");
	struct cache_answer a;
	int code = cache_simple(c, opts, CHORUS__CACHE_OP__CACHE_EXISTS, key, key_len, 0, 0, &a, err,
	                        err_len);
	*exists = code == CH_OK && a.found;
	return code;
}

int ch_cache_expire(ch_client *c, const struct ch_cache_opts *opts, const void *key,
                    size_t key_len, int64_t ttl_ms, int *applied, char *err, size_t err_len)
{
	if (applied != NULL)
		*applied = 0;
	if (ttl_ms <= 0)
		return fail(err, err_len, CH_ERR_INVALID, "expire needs a ttl above 0 (got %lld ms)",
		            (long long)ttl_ms);
	struct cache_answer a;
	int code = cache_simple(c, opts, CHORUS__CACHE_OP__CACHE_EXPIRE, key, key_len, ttl_ms, 0, &a,
	                        err, err_len);
	if (applied != NULL)
		*applied = code == CH_OK && a.applied;
	return code;
}

int ch_cache_persist(ch_client *c, const struct ch_cache_opts *opts, const void *key,
                     size_t key_len, int *applied, char *err, size_t err_len)
{
	struct cache_answer a;
	int code = cache_simple(c, opts, CHORUS__CACHE_OP__CACHE_PERSIST, key, key_len, 0, 0, &a, err,
	                        err_len);
	if (applied != NULL)
		*applied = code == CH_OK && a.applied;
	return code;
}

int ch_cache_ttl(ch_client *c, const struct ch_cache_opts *opts, const void *key, size_t key_len,
                 int64_t *ttl_ms, char *err, size_t err_len)
{
	if (ttl_ms == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "ttl_ms is required");
	*ttl_ms = -2;
	struct cache_answer a;
	int code = cache_simple(c, opts, CHORUS__CACHE_OP__CACHE_TTL, key, key_len, 0, 0, &a, err,
	                        err_len);
	if (code != CH_OK)
		return code;
	if (a.ttl_ms < -2)
		return fail(err, err_len, CH_ERR_PROTOCOL, "%s answered a ttl of %lld ms", c->addr,
		            (long long)a.ttl_ms);
	*ttl_ms = a.ttl_ms;
	return CH_OK;
}

int ch_cache_incr(ch_client *c, const struct ch_cache_opts *opts, const void *key,
                  size_t key_len, int64_t delta, int64_t *result, char *err, size_t err_len)
{
	if (result != NULL)
		*result = 0;
	struct cache_answer a;
	int code = cache_simple(c, opts, CHORUS__CACHE_OP__CACHE_INCR, key, key_len, 0, delta, &a,
	                        err, err_len);
	if (code == CH_OK && result != NULL)
		*result = a.integer;
	return code;
}

/* The keys and lengths of a multi-key call, checked before anything is sent. */
static int check_cache_keys(const void *const *keys, const size_t *key_lens, size_t n,
                            char *err, size_t err_len)
{
	if (n > CH_CACHE_MULTI_KEYS_MAX)
		return fail(err, err_len, CH_ERR_INVALID, "%zu keys: at most %d in one call", n,
		            CH_CACHE_MULTI_KEYS_MAX);
	if (n > 0 && (keys == NULL || key_lens == NULL))
		return fail(err, err_len, CH_ERR_INVALID, "keys and key_lens are required");
	for (size_t i = 0; i < n; i++) {
		int code = check_cache_key(keys[i], key_lens[i], err, err_len);
		if (code != CH_OK)
			return fail(err, err_len, code, "key %zu: a key is required (1 byte or more)", i);
	}
	return CH_OK;
}

enum { UPDATE_BEGIN = 1, UPDATE_COMMIT = 2, UPDATE_COMMIT_DELETE = 3, UPDATE_ABORT = 4 };
#define UPDATE_RETRY_MS_FIRST 2
#define UPDATE_RETRY_MS_MAX 100

/* One step of an isolated update; *e the answer on CH_OK. */
static int update_step(ch_client *c, const struct ch_cache_opts *opts, const void *key,
                       size_t key_len, uint32_t step, uint64_t lock, uint32_t lease_ms,
                       const void *value, size_t value_len, int64_t ttl_ms, Chorus__Envelope **e,
                       char *err, size_t err_len)
{
	Chorus__CacheReq req = CHORUS__CACHE_REQ__INIT;
	cache_req_key(&req, CHORUS__CACHE_OP__CACHE_UPDATE, key, key_len);
	req.update = step;
	req.lock = lock;
	req.lease_ms = lease_ms;
	req.value.data = (uint8_t *)value; /* packed only */
	req.value.len = value_len;
	req.ttl_ms = ttl_ms;
	return cache_call(c, opts, &req, e, err, err_len);
}

/* Best effort: lets go of a lock (or a place in its line) held by token. */
static void update_abort(ch_client *c, const struct ch_cache_opts *opts, const void *key,
                         size_t key_len, uint64_t lock)
{
	char ignored[CLIENT_ERR_BYTES];
	Chorus__Envelope *e = NULL;
	(void)update_step(c, opts, key, key_len, UPDATE_ABORT, lock, 0, NULL, 0, 0, &e, ignored,
	                  sizeof ignored);
	if (e != NULL)
		chorus__envelope__free_unpacked(e, NULL);
}

int ch_cache_update(ch_client *c, const struct ch_cache_opts *opts, const void *key,
                    size_t key_len, uint32_t lease_ms, ch_cache_update_fn fn, void *ud,
                    int *outcome, char *err, size_t err_len)
{
	if (outcome != NULL)
		*outcome = CH_CACHE_UPDATE_KEEP;
	if (fn == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "an update function is required");
	if (lease_ms > CH_CACHE_UPDATE_LEASE_MS_MAX)
		return fail(err, err_len, CH_ERR_INVALID, "a lease of at most %u ms (%u given)",
		            (unsigned)CH_CACHE_UPDATE_LEASE_MS_MAX, lease_ms);
	int code = check_cache_key(key, key_len, err, err_len);
	if (code != CH_OK)
		return code;
	if (c == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client is required");
	nng_time deadline = nng_clock() + c->timeout_ms;
	uint32_t backoff_ms = UPDATE_RETRY_MS_FIRST;
	uint32_t refusals = 0;
	for (;;) {
		/* this attempt's token, chosen here so that an abort can name it
		 * even when begin's answer never comes back */
		uint64_t lock = 0;
		while (lock == 0)
			randombytes_buf(&lock, sizeof lock);
		Chorus__Envelope *e = NULL;
		code = update_step(c, opts, key, key_len, UPDATE_BEGIN, lock, lease_ms, NULL, 0, 0, &e,
		                   err, err_len);
		if (code != CH_OK && code != CH_ERR_FULL && code != CH_ERR_INVALID &&
		    code != CH_ERR_NOT_FOUND && code != CH_ERR_TOO_LARGE)
			update_abort(c, opts, key, key_len, lock); /* it may be waiting, or hold it */
		if (code == CH_ERR_FULL && nng_clock() + backoff_ms < deadline) {
			/* the node waited the cache timeout behind other updates */
			nng_msleep((nng_duration)backoff_ms);
			backoff_ms = backoff_ms * 2 > UPDATE_RETRY_MS_MAX ? UPDATE_RETRY_MS_MAX
			                                                  : backoff_ms * 2;
			continue;
		}
		if (code != CH_OK)
			return code;
		const Chorus__CacheResp *r = e->cache_resp;
		if (r->lock != lock) {
			chorus__envelope__free_unpacked(e, NULL);
			update_abort(c, opts, key, key_len, lock);
			return fail(err, err_len, CH_ERR_PROTOCOL, "the node granted another lock");
		}
		void *nv = NULL;
		size_t nlen = 0;
		int64_t ttl_ms = 0;
		int action = fn(ud, r->found ? r->value.data : NULL, r->found ? r->value.len : 0,
		                r->found ? 1 : 0, &nv, &nlen, &ttl_ms);
		chorus__envelope__free_unpacked(e, NULL);
		e = NULL;
		if (action != CH_CACHE_UPDATE_SET && action != CH_CACHE_UPDATE_DELETE) {
			free(nv);
			update_abort(c, opts, key, key_len, lock);
			if (action == CH_CACHE_UPDATE_KEEP)
				return CH_OK;
			if (action < 0)
				return fail(err, err_len, action, "the update function returned %s",
				            ch_strerror(action));
			return fail(err, err_len, CH_ERR_INVALID,
			            "the update function returned %d, not an action", action);
		}
		if (ttl_ms < 0) {
			free(nv);
			update_abort(c, opts, key, key_len, lock);
			return fail(err, err_len, CH_ERR_INVALID, "a ttl of 0 or more is needed");
		}
		code = update_step(c, opts, key, key_len,
		                   action == CH_CACHE_UPDATE_SET ? UPDATE_COMMIT : UPDATE_COMMIT_DELETE,
		                   lock, 0, nv, nlen, ttl_ms, &e, err, err_len);
		free(nv);
		if (code != CH_OK) {
			/* the lock is let go whatever happened (an applied commit took
			 * the token with it: this abort then changes nothing) */
			update_abort(c, opts, key, key_len, lock);
			return code;
		}
		int applied = e->cache_resp->applied;
		chorus__envelope__free_unpacked(e, NULL);
		if (applied) {
			if (outcome != NULL)
				*outcome = action;
			return CH_OK;
		}
		/* refused: a plain write came between, or the lock was lost */
		if (++refusals >= CH_CACHE_UPDATE_TRIES || nng_clock() >= deadline)
			return fail(err, err_len, CH_ERR_FULL,
			            "the update was refused %u time(s): the key changed under it, or "
			            "its lock was lost",
			            refusals);
	}
}

int ch_cache_mget(ch_client *c, const struct ch_cache_opts *opts, const void *const *keys,
                  const size_t *key_lens, size_t n, struct ch_bytes **values, char *err,
                  size_t err_len)
{
	if (values == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "values is required");
	*values = NULL;
	int code = check_cache_keys(keys, key_lens, n, err, err_len);
	if (code != CH_OK)
		return code;
	if (c == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client is required");
	struct ch_bytes *v = calloc(n > 0 ? n : 1, sizeof *v);
	if (v == NULL)
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		code = ch_cache_get(c, opts, keys[i], key_lens[i], &v[i].data, &v[i].len, NULL, NULL, err,
		                    err_len);
		if (code == CH_ERR_NOT_FOUND)
			code = CH_OK; /* data NULL: a miss */
		if (code != CH_OK) {
			ch_bytes_free(v, i);
			return code;
		}
	}
	*values = v;
	err_clear(err, err_len);
	return CH_OK;
}

int ch_cache_mset(ch_client *c, const struct ch_cache_opts *opts, const void *const *keys,
                  const size_t *key_lens, const void *const *values, const size_t *value_lens,
                  size_t n, int64_t ttl_ms, size_t *written, char *err, size_t err_len)
{
	if (written != NULL)
		*written = 0;
	int code = check_cache_keys(keys, key_lens, n, err, err_len);
	if (code != CH_OK)
		return code;
	if (n > 0 && (values == NULL || value_lens == NULL))
		return fail(err, err_len, CH_ERR_INVALID, "values and value_lens are required");
	if (c == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client is required");
	for (size_t i = 0; i < n; i++) {
		code = ch_cache_put(c, opts, keys[i], key_lens[i], values[i], value_lens[i], ttl_ms, 0,
		                    NULL, NULL, err, err_len);
		if (code != CH_OK)
			return code;
		if (written != NULL)
			*written = i + 1;
	}
	err_clear(err, err_len);
	return CH_OK;
}

int ch_cache_scan(ch_client *c, const struct ch_cache_opts *opts, uint64_t cursor,
                  const char *pattern, uint32_t count, uint64_t *next, struct ch_bytes **keys,
                  size_t *n, char *err, size_t err_len)
{
	if (next == NULL || keys == NULL || n == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "next, keys and n are required");
	*next = 0;
	*keys = NULL;
	*n = 0;
	Chorus__CacheReq req = CHORUS__CACHE_REQ__INIT;
	req.op = CHORUS__CACHE_OP__CACHE_SCAN;
	req.cursor = cursor;
	req.pattern = (char *)(pattern != NULL ? pattern : ""); /* packed only */
	req.count = count;
	Chorus__Envelope *e = NULL;
	int code = cache_call(c, opts, &req, &e, err, err_len);
	if (code != CH_OK)
		return code;
	const Chorus__CacheResp *r = e->cache_resp;
	size_t count_got = r->n_keys;
	struct ch_bytes *v = calloc(count_got > 0 ? count_got : 1, sizeof *v);
	for (size_t i = 0; v != NULL && i < count_got; i++) {
		v[i].data = bytes_dup(r->keys[i].data, r->keys[i].len);
		v[i].len = r->keys[i].len;
		if (v[i].data == NULL) {
			ch_bytes_free(v, i);
			v = NULL;
		}
	}
	uint64_t next_cursor = r->cursor;
	chorus__envelope__free_unpacked(e, NULL);
	if (v == NULL)
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
	*keys = v;
	*n = count_got;
	*next = next_cursor;
	err_clear(err, err_len);
	return CH_OK;
}

int ch_cache_stats(ch_client *c, const char *cache, struct ch_cache_stats **out, size_t *n,
                   char *err, size_t err_len)
{
	if (out == NULL || n == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "out and n are required");
	*out = NULL;
	*n = 0;
	Chorus__CacheReq req = CHORUS__CACHE_REQ__INIT;
	req.op = CHORUS__CACHE_OP__CACHE_STATS;
	/* "" asks for every cache (elsewhere it names the default one) */
	if (cache != NULL && strlen(cache) > CH_CACHE_NAME_BYTES_MAX)
		return fail(err, err_len, CH_ERR_INVALID, "a cache name has at most %d bytes",
		            CH_CACHE_NAME_BYTES_MAX);
	req.cache = (char *)(cache != NULL ? cache : ""); /* packed only, never written */
	Chorus__Envelope *e = NULL;
	int code = cache_send(c, &req, &e, err, err_len);
	if (code != CH_OK)
		return code;
	const Chorus__CacheResp *r = e->cache_resp;
	size_t count = r->n_stats;
	struct ch_cache_stats *v = calloc(count > 0 ? count : 1, sizeof *v);
	for (size_t i = 0; v != NULL && i < count; i++) {
		const Chorus__CacheStatsInfo *w = r->stats[i];
		struct ch_cache_stats *s = &v[i];
		s->cache = dup_str(w->cache);
		s->node = dup_str(w->node);
		s->entries = w->entries;
		s->memory_bytes = w->memory_bytes;
		s->hits = w->hits;
		s->misses = w->misses;
		s->evictions = w->evictions;
		s->expirations = w->expirations;
		s->hints_pending = w->hints_pending;
		s->tombstones = w->tombstones;
		s->partitions_primary = w->partitions_primary;
		s->partitions_replica = w->partitions_replica;
		s->partitions_moving = w->partitions_moving;
		if (s->cache == NULL || s->node == NULL) {
			ch_cache_stats_free(v, i + 1);
			v = NULL;
		}
	}
	chorus__envelope__free_unpacked(e, NULL);
	if (v == NULL)
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
	*out = v;
	*n = count;
	err_clear(err, err_len);
	return CH_OK;
}

int ch_cache_flush(ch_client *c, const struct ch_cache_opts *opts, char *err, size_t err_len)
{
	Chorus__CacheReq req = CHORUS__CACHE_REQ__INIT;
	req.op = CHORUS__CACHE_OP__CACHE_FLUSH;
	Chorus__Envelope *e = NULL;
	int code = cache_call(c, opts, &req, &e, err, err_len);
	if (code != CH_OK)
		return code;
	chorus__envelope__free_unpacked(e, NULL);
	err_clear(err, err_len);
	return CH_OK;
}

int ch_cache_dbsize(ch_client *c, const struct ch_cache_opts *opts, uint64_t *entries, char *err,
                    size_t err_len)
{
	if (entries == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "entries is required");
	*entries = 0;
	Chorus__CacheReq req = CHORUS__CACHE_REQ__INIT;
	req.op = CHORUS__CACHE_OP__CACHE_DBSIZE;
	Chorus__Envelope *e = NULL;
	int code = cache_call(c, opts, &req, &e, err, err_len);
	if (code != CH_OK)
		return code;
	int64_t got = e->cache_resp->integer;
	chorus__envelope__free_unpacked(e, NULL);
	if (got < 0)
		return fail(err, err_len, CH_ERR_PROTOCOL, "%s answered a size of %lld", c->addr,
		            (long long)got);
	*entries = (uint64_t)got;
	err_clear(err, err_len);
	return CH_OK;
}

/* How long a get-or-compute may take before the key's primary answers, as
 * the node reckons it (node/svc/cache_compute.c, cache_compute_wait_ms):
 * when the caller gave a time limit and no retries, the limit plus the wait
 * for a worker allowed on top (as long again, at least
 * CH_CACHE_COMPUTE_QUEUE_MS); otherwise the node decides (its default
 * limit, the retries), within CH_CACHE_COMPUTE_WAIT_MS_MAX. */
static uint32_t compute_wait_ms(const struct ch_task_opts *o)
{
	if (o == NULL || o->timeout_ms == 0 || o->restart != CH_RESTART_TEMPORARY)
		return CH_CACHE_COMPUTE_WAIT_MS_MAX;
	uint64_t queue = o->timeout_ms > CH_CACHE_COMPUTE_QUEUE_MS ? o->timeout_ms
	                                                           : CH_CACHE_COMPUTE_QUEUE_MS;
	uint64_t w = (uint64_t)o->timeout_ms + queue;
	return w < CH_CACHE_COMPUTE_WAIT_MS_MAX ? (uint32_t)w : CH_CACHE_COMPUTE_WAIT_MS_MAX;
}

int ch_cache_get_or_compute(ch_client *c, const struct ch_cache_opts *opts, const void *key,
                            size_t key_len, const char *handler, const void *payload,
                            size_t payload_len, const struct ch_task_opts *task_opts,
                            int64_t ttl_ms, void **value, size_t *value_len, int *computed,
                            struct ch_cache_version *version, char *err, size_t err_len)
{
	if (value != NULL)
		*value = NULL;
	if (value_len != NULL)
		*value_len = 0;
	if (computed != NULL)
		*computed = 0;
	if (version != NULL)
		memset(version, 0, sizeof *version);
	if (value == NULL || value_len == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "value and value_len are required");
	int code = check_cache_key(key, key_len, err, err_len);
	if (code != CH_OK)
		return code;
	code = check_task(handler, payload, payload_len, err, err_len);
	if (code != CH_OK)
		return code;
	if (ttl_ms < 0)
		return fail(err, err_len, CH_ERR_INVALID, "ttl_ms is negative (%lld)",
		            (long long)ttl_ms);
	if (task_opts != NULL && task_opts->key != NULL)
		return fail(err, err_len, CH_ERR_INVALID,
		            "task_opts.key is not taken here: the key's primary names each compute's "
		            "task itself");
	Chorus__TaskOptions topts = CHORUS__TASK_OPTIONS__INIT;
	code = task_options_fill(&topts, task_opts, err, err_len);
	if (code != CH_OK)
		return code;
	Chorus__TaskSpec spec = CHORUS__TASK_SPEC__INIT;
	spec.handler = (char *)handler; /* packed only, never written */
	spec.payload.data = (uint8_t *)payload;
	spec.payload.len = payload_len;
	spec.opts = &topts;
	Chorus__CacheReq req = CHORUS__CACHE_REQ__INIT;
	cache_req_key(&req, CHORUS__CACHE_OP__CACHE_GET_OR_COMPUTE, key, key_len);
	req.compute = &spec;
	req.ttl_ms = ttl_ms;
	code = cache_opts_apply(opts, &req, err, err_len);
	if (code != CH_OK)
		return code;
	if (c == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client is required");
	/* the compute's time, then the client's own timeout twice: once for
	 * the read before it and the write after, once for the way there */
	uint64_t total = (uint64_t)compute_wait_ms(task_opts) + 2ull * c->timeout_ms;
	Chorus__Envelope *e = NULL;
	code = cache_send_within(c, &req, total < INT32_MAX ? (uint32_t)total : (uint32_t)INT32_MAX,
	                         &e, err, err_len);
	if (code != CH_OK)
		return code;
	const Chorus__CacheResp *r = e->cache_resp;
	if (!r->found) {
		chorus__envelope__free_unpacked(e, NULL);
		return fail(err, err_len, CH_ERR_PROTOCOL, "%s answered a get-or-compute with no value",
		            c->addr);
	}
	code = cache_value_take(r, value, value_len, err, err_len);
	if (code == CH_OK && computed != NULL)
		*computed = r->computed;
	if (code == CH_OK && version != NULL)
		version_from_wire(r->version, version);
	chorus__envelope__free_unpacked(e, NULL);
	if (code == CH_OK)
		err_clear(err, err_len);
	return code;
}

/* ------------------------------------------------------------------ */
/* fan-out                                                             */

static int map_start(ch_client *c, const char *handler, const void *const *payloads,
                     const size_t *lens, uint32_t n, const struct ch_task_opts *opts,
                     const struct ch_map_opts *mopts, uint64_t *batch_id, char *err,
                     size_t err_len)
{
	ProtobufCBinaryData *items = calloc(n, sizeof *items);
	if (items == NULL)
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
	for (uint32_t i = 0; i < n; i++) {
		items[i].data = (uint8_t *)payloads[i];
		items[i].len = lens[i];
	}
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	Chorus__MapReq mr = CHORUS__MAP_REQ__INIT;
	Chorus__TaskOptions topts = CHORUS__TASK_OPTIONS__INIT;
	int code = task_options_fill(&topts, opts, err, err_len);
	if (code != CH_OK) {
		free(items);
		return code;
	}
	uint8_t key[1 + CH_KEY_BYTES_MAX];
	code = app_key_fill(opts, key, &mr.idempotency_key, err, err_len);
	if (code != CH_OK) {
		free(items);
		return code;
	}
	mr.handler = (char *)handler;
	mr.n_payloads = n;
	mr.payloads = items;
	mr.opts = &topts;
	mr.max_concurrency = mopts != NULL ? mopts->max_concurrency : 0;
	mr.deadline_ms = mopts != NULL ? mopts->deadline_ms : 0;
	env.body_case = CHORUS__ENVELOPE__BODY_MAP;
	env.map = &mr;
	/* call() refuses an over-cap request; say it in fan-out terms here */
	size_t need = chorus__envelope__get_packed_size(&env) + SEAL_OVERHEAD_BYTES + 64;
	if (need > c->frame_bytes_max) {
		free(items);
		return fail(err, err_len, CH_ERR_TOO_LARGE,
		            "fan-out of %u payloads needs a %zu-byte request, over the frame cap "
		            "of %zu bytes: split it into smaller batches",
		            n, need, c->frame_bytes_max);
	}
	Chorus__Envelope *e = NULL;
	code = call_expect(c, &env, 0, CHORUS__ENVELOPE__BODY_MAP_RESP, &e, err, err_len);
	free(items);
	if (code != CH_OK)
		return code;
	uint32_t count = e->map_resp->count;
	*batch_id = e->map_resp->batch_id;
	chorus__envelope__free_unpacked(e, NULL);
	if (count != n)
		return fail(err, err_len, CH_ERR_PROTOCOL,
		            "%s accepted %u of %u tasks of the batch", c->addr, count, n);
	return CH_OK;
}

/* Appends the results of one BatchAwaitResp; *got advances. */
static int map_take(const ch_client *c, const Chorus__BatchAwaitResp *br, uint64_t batch_id,
                    uint32_t n, struct ch_result **rs, uint32_t *got, char *err, size_t err_len)
{
	if (br->batch_id != batch_id || br->total != n || br->from_index != *got ||
	    br->n_results > (size_t)(n - *got))
		return fail(err, err_len, CH_ERR_PROTOCOL,
		            "%s sent results that do not fit batch %llu (from %u, %zu results)",
		            c->addr, (unsigned long long)batch_id, br->from_index, br->n_results);
	for (size_t k = 0; k < br->n_results; k++) {
		const Chorus__TaskResult *w = br->results[k];
		if (w->batch_index != *got)
			return fail(err, err_len, CH_ERR_PROTOCOL,
			            "%s sent result %u where %u belongs", c->addr, w->batch_index,
			            *got);
		rs[*got] = result_from_wire(w);
		if (rs[*got] == NULL)
			return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
		(*got)++;
	}
	return CH_OK;
}

int ch_map(ch_client *c, const char *handler, const void *const *payloads, const size_t *lens,
           uint32_t n, const struct ch_task_opts *opts, const struct ch_map_opts *mopts,
           struct ch_result ***results, char *err, size_t err_len)
{
	if (c == NULL || results == NULL || (n > 0 && (payloads == NULL || lens == NULL)))
		return fail(err, err_len, CH_ERR_INVALID, "client, payloads, lens and results are "
		                                          "required");
	*results = NULL;
	int code = check_task(handler, "", 0, err, err_len);
	if (code != CH_OK)
		return code;
	for (uint32_t i = 0; i < n; i++) {
		if (payloads[i] == NULL && lens[i] > 0)
			return fail(err, err_len, CH_ERR_INVALID, "payload %u is NULL", i);
	}
	struct ch_result **rs = calloc(n > 0 ? n : 1, sizeof *rs);
	if (rs == NULL)
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
	if (n == 0) {
		*results = rs;
		return CH_OK;
	}
	nng_time start = nng_clock();
	uint64_t batch_id = 0;
	code = map_start(c, handler, payloads, lens, n, opts, mopts, &batch_id, err, err_len);
	if (code != CH_OK) {
		free(rs);
		return code;
	}
	/* The node ends every task by deadline_ms; we allow our own timeout on
	 * top of it before we stop asking. deadline_ms = 0: ask until done. */
	uint32_t deadline_ms = mopts != NULL ? mopts->deadline_ms : 0;
	nng_time deadline = deadline_ms > 0 ? start + deadline_ms + c->timeout_ms : 0;
	uint32_t got = 0;
	uint32_t progress_done = 0;
	while (got < n) {
		uint32_t wait_ms = CLIENT_MAP_POLL_MS_MAX;
		if (deadline != 0) {
			nng_time now = nng_clock();
			if (now >= deadline)
				break;
			if (deadline - now < wait_ms)
				wait_ms = (uint32_t)(deadline - now);
		}
		Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
		Chorus__BatchAwaitReq ba = CHORUS__BATCH_AWAIT_REQ__INIT;
		ba.batch_id = batch_id;
		ba.from_index = got;
		ba.max_results = 0;
		ba.wait_ms = wait_ms;
		env.body_case = CHORUS__ENVELOPE__BODY_BATCH_AWAIT;
		env.batch_await = &ba;
		Chorus__Envelope *e = NULL;
		code = call_expect(c, &env, wait_ms, CHORUS__ENVELOPE__BODY_BATCH_AWAIT_RESP, &e, err, err_len);
		if (code != CH_OK)
			break;
		uint32_t done = e->batch_await_resp->done;
		code = map_take(c, e->batch_await_resp, batch_id, n, rs, &got, err, err_len);
		chorus__envelope__free_unpacked(e, NULL);
		if (code != CH_OK)
			break;
		if (done < got)
			done = got;
		if (done > n)
			done = n;
		if (done > progress_done) {
			progress_done = done;
			if (mopts != NULL && mopts->progress != NULL)
				mopts->progress(mopts->progress_arg, done, n);
		}
	}
	if (code != CH_OK) {
		char why[CLIENT_ERR_BYTES];
		snprintf(why, sizeof why, "%s", err != NULL ? err : "");
		ch_results_free(rs, n);
		return fail(err, err_len, code, "%s (batch %llu goes on running on the node)", why,
		            (unsigned long long)batch_id);
	}
	/* Past our deadline: each missing result is reported as timed out. */
	for (uint32_t i = got; i < n; i++) {
		rs[i] = result_new();
		if (rs[i] == NULL) {
			ch_results_free(rs, n);
			return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
		}
		free(rs[i]->error);
		rs[i]->error = strdup("no result from the node by the deadline");
		rs[i]->state = CH_TASK_TIMED_OUT;
		rs[i]->batch_id = batch_id;
		rs[i]->batch_index = i;
		if (rs[i]->error == NULL) {
			ch_results_free(rs, n);
			return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
		}
	}
	if (got < n && mopts != NULL && mopts->progress != NULL)
		mopts->progress(mopts->progress_arg, n, n);
	err_clear(err, err_len);
	*results = rs;
	return CH_OK;
}

/* ------------------------------------------------------------------ */
/* streamed fan-out                                                    */

#define STREAM_CHUNK_TASKS_DEFAULT 1000u
#define STREAM_ITEM_OVERHEAD_BYTES 8u    /* a payload's tag and length in a chunk */
#define STREAM_REQUEST_SLACK_BYTES 256u  /* the rest of a MapAppendReq envelope */
#define STREAM_AWAIT_MS_MAX 5000u        /* one await round trip: a lost coordinator shows within it */

/* The stream: one pending chunk (payloads from index `total` on, not yet
 * taken by the coordinator) and one page of results. Both are bounded (the
 * chunk by chunk_tasks_max and chunk_bytes_max, the page by the node's
 * page size and frame cap), so memory stays flat however long the input. */
struct ch_map_stream {
	ch_client *c;
	uint64_t batch_id;
	bool unordered;
	bool can_push;       /* opened here (not attached) */
	bool input_closed;   /* no more pushes */
	bool closed;         /* the node said the input is closed: total is final */
	uint32_t total;      /* tasks the coordinator took */
	uint32_t room;       /* more it takes now (last heard) */
	uint32_t chunk_tasks_max;
	size_t chunk_bytes_max;
	uint32_t room_low;   /* a chunk goes when the window has this much room (or
	                      * room for all that is pending): no dribbling */
	/* pending chunk */
	uint8_t *buf;
	size_t buf_len, buf_cap;
	size_t *offs, *lens;
	uint32_t pend_n;
	/* results */
	struct ch_result **page;
	uint32_t page_n, page_at;
	uint32_t next_from;  /* ordered: the index of the next result */
	uint32_t *acks;      /* unordered: indexes of the last page, acknowledged next */
	uint32_t acks_n, acks_cap;
	uint64_t given;      /* results handed out */
	/* closed by the node before the input ended (its deadline passed, or
	 * it restarted): what was pending is dropped, reported once at the end */
	uint32_t dropped;
	bool dropped_told;
	char closed_why[CLIENT_ERR_BYTES];
};

/* The node closed the batch's input before we did: nothing more can be
 * sent, the results of what it took still come. */
static void stream_closed_by_node(ch_map_stream *s, const char *why)
{
	s->closed = true;
	if (s->closed_why[0] == '\0')
		snprintf(s->closed_why, sizeof s->closed_why, "%s",
		         why != NULL && why[0] != '\0'
		                 ? why
		                 : "closed by its coordinator: its deadline passed, or it restarted");
	s->dropped += s->pend_n;
	s->pend_n = 0;
	s->buf_len = 0;
}

static void stream_page_drop(ch_map_stream *s)
{
	for (uint32_t i = s->page_at; i < s->page_n; i++)
		ch_result_free(s->page[i]);
	free(s->page);
	s->page = NULL;
	s->page_n = s->page_at = 0;
}

void ch_map_stream_free(ch_map_stream *s)
{
	if (s == NULL)
		return;
	stream_page_drop(s);
	free(s->buf);
	free(s->offs);
	free(s->lens);
	free(s->acks);
	free(s);
}

uint64_t ch_map_stream_batch_id(const ch_map_stream *s)
{
	return s != NULL ? s->batch_id : 0;
}

uint32_t ch_map_stream_submitted(const ch_map_stream *s)
{
	return s != NULL ? s->total : 0;
}

static ch_map_stream *stream_new(ch_client *c, uint64_t batch_id)
{
	ch_map_stream *s = calloc(1, sizeof *s);
	if (s == NULL)
		return NULL;
	s->c = c;
	s->batch_id = batch_id;
	return s;
}

int ch_map_stream_open(ch_client *c, const char *handler, const struct ch_task_opts *opts,
                       const struct ch_stream_opts *sopts, ch_map_stream **out, char *err,
                       size_t err_len)
{
	if (c == NULL || out == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client and out are required");
	*out = NULL;
	int code = check_task(handler, "", 0, err, err_len);
	if (code != CH_OK)
		return code;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	Chorus__MapReq mr = CHORUS__MAP_REQ__INIT;
	Chorus__TaskOptions topts = CHORUS__TASK_OPTIONS__INIT;
	code = task_options_fill(&topts, opts, err, err_len);
	if (code != CH_OK)
		return code;
	uint8_t key[1 + CH_KEY_BYTES_MAX];
	code = app_key_fill(opts, key, &mr.idempotency_key, err, err_len);
	if (code != CH_OK)
		return code;
	mr.handler = (char *)handler;
	mr.opts = &topts;
	mr.stream = true;
	if (sopts != NULL) {
		mr.max_concurrency = sopts->max_concurrency;
		mr.deadline_ms = sopts->deadline_ms;
		mr.window = sopts->window;
		mr.unordered = sopts->unordered != 0;
	}
	env.body_case = CHORUS__ENVELOPE__BODY_MAP;
	env.map = &mr;
	Chorus__Envelope *e = NULL;
	code = call_expect(c, &env, 0, CHORUS__ENVELOPE__BODY_MAP_RESP, &e, err, err_len);
	if (code != CH_OK)
		return code;
	ch_map_stream *s = stream_new(c, e->map_resp->batch_id);
	if (s == NULL) {
		chorus__envelope__free_unpacked(e, NULL);
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory (batch %llu was opened)",
		            (unsigned long long)e->map_resp->batch_id);
	}
	s->can_push = true;
	s->unordered = mr.unordered;
	s->room = e->map_resp->room;
	s->chunk_tasks_max = sopts != NULL && sopts->chunk_tasks_max > 0 ? sopts->chunk_tasks_max
	                                                                   : STREAM_CHUNK_TASKS_DEFAULT;
	/* a chunk fits both our frame cap and the node's */
	size_t ours = c->frame_bytes_max > SEAL_OVERHEAD_BYTES + 2 * STREAM_REQUEST_SLACK_BYTES
	                  ? c->frame_bytes_max - SEAL_OVERHEAD_BYTES - STREAM_REQUEST_SLACK_BYTES
	                  : STREAM_REQUEST_SLACK_BYTES;
	size_t theirs = e->map_resp->chunk_bytes_max;
	s->chunk_bytes_max = theirs > 0 && theirs < ours ? theirs : ours;
	uint32_t window = e->map_resp->window;
	s->room_low = window / 4 < s->chunk_tasks_max ? window / 4 : s->chunk_tasks_max;
	if (s->room_low == 0)
		s->room_low = 1;
	chorus__envelope__free_unpacked(e, NULL);
	s->offs = calloc(s->chunk_tasks_max, sizeof *s->offs);
	s->lens = calloc(s->chunk_tasks_max, sizeof *s->lens);
	if (s->offs == NULL || s->lens == NULL) {
		uint64_t id = s->batch_id;
		ch_map_stream_free(s);
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory (batch %llu was opened)",
		            (unsigned long long)id);
	}
	err_clear(err, err_len);
	*out = s;
	return CH_OK;
}

int ch_batch_attach(ch_client *c, uint64_t batch_id, uint32_t from_index, ch_map_stream **out,
                    char *err, size_t err_len)
{
	if (c == NULL || out == NULL || batch_id == 0)
		return fail(err, err_len, CH_ERR_INVALID, "client, batch id and out are required");
	ch_map_stream *s = stream_new(c, batch_id);
	if (s == NULL)
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
	s->input_closed = true;
	s->next_from = from_index;
	err_clear(err, err_len);
	*out = s;
	return CH_OK;
}

/* Sends what the pending chunk holds, as far as the window has room (with
 * close: the close, once nothing is pending). The node takes a prefix;
 * it leaves the chunk. */
static int stream_send(ch_map_stream *s, bool close, char *err, size_t err_len)
{
	uint32_t n = s->pend_n < s->room ? s->pend_n : s->room;
	if (close)
		n = 0;
	ProtobufCBinaryData *items = calloc(n > 0 ? n : 1, sizeof *items);
	if (items == NULL)
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
	for (uint32_t i = 0; i < n; i++) {
		items[i].data = s->buf + s->offs[i];
		items[i].len = s->lens[i];
	}
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	Chorus__MapAppendReq ar = CHORUS__MAP_APPEND_REQ__INIT;
	ar.batch_id = s->batch_id;
	ar.start_index = s->total;
	ar.n_payloads = n;
	ar.payloads = items;
	ar.close = close;
	env.body_case = CHORUS__ENVELOPE__BODY_MAP_APPEND;
	env.map_append = &ar;
	Chorus__Envelope *e = NULL;
	int code = call_expect(s->c, &env, 0, CHORUS__ENVELOPE__BODY_MAP_APPEND_RESP, &e, err,
	                       err_len);
	free(items);
	if (code == CH_ERR_CLOSED) {
		stream_closed_by_node(s, err);
		err_clear(err, err_len);
		return CH_OK;
	}
	if (code != CH_OK)
		return code;
	const Chorus__MapAppendResp *r = e->map_append_resp;
	uint32_t next = r->next_index;
	bool closed = r->closed;
	s->room = r->room;
	chorus__envelope__free_unpacked(e, NULL);
	if (next < s->total || next - s->total > n)
		return fail(err, err_len, CH_ERR_PROTOCOL,
		            "%s: batch %llu went from %u to %u tasks on a chunk of %u", s->c->addr,
		            (unsigned long long)s->batch_id, s->total, next, n);
	uint32_t took = next - s->total;
	if (took > 0) {
		/* drop the taken prefix of the chunk */
		size_t cut = took < s->pend_n ? s->offs[took] : s->buf_len;
		memmove(s->buf, s->buf + cut, s->buf_len - cut);
		s->buf_len -= cut;
		for (uint32_t i = took; i < s->pend_n; i++) {
			s->offs[i - took] = s->offs[i] - cut;
			s->lens[i - took] = s->lens[i];
		}
		s->pend_n -= took;
		s->total = next;
	}
	if (closed) {
		if (close)
			s->closed = true;
		else
			stream_closed_by_node(s, NULL);
	}
	return CH_OK;
}

/* Room enough to send: all that is pending, or a good share of a chunk. */
static uint32_t stream_room_wanted(const ch_map_stream *s)
{
	if (s->pend_n == 0)
		return 0;
	return s->pend_n < s->room_low ? s->pend_n : s->room_low;
}

static bool stream_can_send(const ch_map_stream *s)
{
	return s->can_push && !s->closed && s->pend_n > 0 && s->room >= stream_room_wanted(s);
}

static bool stream_fits(const ch_map_stream *s, size_t len)
{
	return s->pend_n < s->chunk_tasks_max &&
	       s->buf_len + (s->pend_n + 1) * (size_t)STREAM_ITEM_OVERHEAD_BYTES + len <=
	               s->chunk_bytes_max;
}

int ch_map_stream_push(ch_map_stream *s, const void *payload, size_t len, char *err,
                       size_t err_len)
{
	if (s == NULL || (payload == NULL && len > 0))
		return fail(err, err_len, CH_ERR_INVALID, "stream and payload are required");
	if (!s->can_push || s->input_closed)
		return fail(err, err_len, CH_ERR_INVALID, "batch %llu: the input is closed",
		            (unsigned long long)s->batch_id);
	if (s->closed)
		return fail(err, err_len, CH_ERR_CLOSED, "batch %llu takes no more tasks: %s",
		            (unsigned long long)s->batch_id, s->closed_why);
	if (len + 2 * STREAM_ITEM_OVERHEAD_BYTES > s->chunk_bytes_max)
		return fail(err, err_len, CH_ERR_TOO_LARGE,
		            "payload of %zu bytes does not fit a chunk of %zu bytes (the frame cap)",
		            len, s->chunk_bytes_max);
	if (!stream_fits(s, len) && stream_can_send(s)) {
		int code = stream_send(s, false, err, err_len);
		if (code != CH_OK)
			return code;
		if (s->closed)
			return fail(err, err_len, CH_ERR_CLOSED, "batch %llu takes no more tasks: %s",
			            (unsigned long long)s->batch_id, s->closed_why);
	}
	if (!stream_fits(s, len))
		return fail(err, err_len, CH_ERR_FULL,
		            "batch %llu: the coordinator's window is full; take results first",
		            (unsigned long long)s->batch_id);
	if (s->buf_len + len > s->buf_cap) {
		size_t cap = s->buf_cap > 0 ? s->buf_cap : 4096;
		while (cap < s->buf_len + len)
			cap *= 2;
		uint8_t *nb = realloc(s->buf, cap);
		if (nb == NULL)
			return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
		s->buf = nb;
		s->buf_cap = cap;
	}
	if (len > 0)
		memcpy(s->buf + s->buf_len, payload, len);
	s->offs[s->pend_n] = s->buf_len;
	s->lens[s->pend_n] = len;
	s->buf_len += len;
	s->pend_n++;
	/* a full chunk goes at once when the window has room for it */
	if (s->pend_n >= s->chunk_tasks_max && s->room >= s->pend_n)
		return stream_send(s, false, err, err_len);
	err_clear(err, err_len);
	return CH_OK;
}

int ch_map_stream_close_input(ch_map_stream *s, char *err, size_t err_len)
{
	if (s == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "stream is required");
	s->input_closed = true;
	err_clear(err, err_len);
	return CH_OK;
}

/* Takes one BatchAwaitResp: its page becomes the stream's. */
static int stream_take_page(ch_map_stream *s, const Chorus__BatchAwaitResp *br, char *err,
                            size_t err_len)
{
	if (br->batch_id != s->batch_id || (!s->unordered && br->from_index != s->next_from) ||
	    br->n_results > br->total)
		return fail(err, err_len, CH_ERR_PROTOCOL,
		            "%s sent results that do not fit batch %llu (from %u, %zu results)",
		            s->c->addr, (unsigned long long)s->batch_id, br->from_index,
		            br->n_results);
	s->room = br->room;
	if (!br->open) {
		if (s->can_push && !s->closed)
			stream_closed_by_node(s, NULL);
		s->closed = true;
		s->total = br->total;
	} else if (br->total > s->total) {
		s->total = br->total;
	}
	s->page = calloc(br->n_results > 0 ? br->n_results : 1, sizeof *s->page);
	if (s->page == NULL)
		return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
	if (s->unordered && br->n_results > s->acks_cap) {
		uint32_t *na = realloc(s->acks, br->n_results * sizeof *na);
		if (na == NULL)
			return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
		s->acks = na;
		s->acks_cap = (uint32_t)br->n_results;
	}
	s->acks_n = 0;
	for (size_t k = 0; k < br->n_results; k++) {
		const Chorus__TaskResult *w = br->results[k];
		if (!s->unordered && w->batch_index != s->next_from + k)
			return fail(err, err_len, CH_ERR_PROTOCOL, "%s sent result %u where %u belongs",
			            s->c->addr, w->batch_index, (unsigned)(s->next_from + k));
		s->page[s->page_n] = result_from_wire(w);
		if (s->page[s->page_n] == NULL)
			return fail(err, err_len, CH_ERR_NOMEM, "out of memory");
		s->page_n++;
		if (s->unordered)
			s->acks[s->acks_n++] = w->batch_index;
	}
	return CH_OK;
}

/* One BatchAwait round trip (wait_ms 0: answered at once). */
static int stream_await(ch_map_stream *s, uint32_t wait_ms, char *err, size_t err_len)
{
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	Chorus__BatchAwaitReq ba = CHORUS__BATCH_AWAIT_REQ__INIT;
	ba.batch_id = s->batch_id;
	ba.from_index = s->unordered ? 0 : s->next_from;
	ba.wait_ms = wait_ms;
	ba.unordered = s->unordered;
	ba.n_acks = s->acks_n;
	ba.acks = s->acks;
	ba.room_wanted = s->can_push && !s->closed ? stream_room_wanted(s) : 0;
	env.body_case = CHORUS__ENVELOPE__BODY_BATCH_AWAIT;
	env.batch_await = &ba;
	Chorus__Envelope *e = NULL;
	int code = call_expect(s->c, &env, wait_ms, CHORUS__ENVELOPE__BODY_BATCH_AWAIT_RESP, &e, err,
	                       err_len);
	if (code != CH_OK)
		return code;
	stream_page_drop(s);
	code = stream_take_page(s, e->batch_await_resp, err, err_len);
	chorus__envelope__free_unpacked(e, NULL);
	if (code != CH_OK)
		stream_page_drop(s);
	return code;
}

static bool stream_over(const ch_map_stream *s)
{
	if (!s->closed || s->pend_n > 0)
		return false;
	return s->unordered ? s->given >= s->total : s->next_from >= s->total;
}

int ch_map_stream_next(ch_map_stream *s, uint32_t wait_ms, struct ch_result **result, char *err,
                       size_t err_len)
{
	if (s == NULL || result == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "stream and result are required");
	*result = NULL;
	bool forever = wait_ms == CH_WAIT_FOREVER;
	nng_time deadline = forever ? UINT64_MAX : nng_clock() + wait_ms;
	for (;;) {
		if (s->page_at < s->page_n) {
			struct ch_result *r = s->page[s->page_at];
			s->page[s->page_at++] = NULL;
			s->given++;
			if (!s->unordered)
				s->next_from = r->batch_index + 1;
			*result = r;
			err_clear(err, err_len);
			return CH_OK;
		}
		if (stream_over(s)) {
			if (s->acks_n > 0) {
				/* the last page's acknowledgement lets the node forget
				 * the stream; the answer says nothing new */
				(void)stream_await(s, 0, err, err_len);
				s->acks_n = 0;
				stream_page_drop(s);
			}
			if (s->dropped > 0 && !s->dropped_told) {
				s->dropped_told = true;
				return fail(err, err_len, CH_ERR_CLOSED,
				            "batch %llu ended at %u task(s) before its input did (%s): "
				            "%u pushed payload(s) were not taken",
				            (unsigned long long)s->batch_id, s->total, s->closed_why,
				            s->dropped);
			}
			err_clear(err, err_len);
			return CH_OK;
		}
		int code = CH_OK;
		if (stream_can_send(s))
			code = stream_send(s, false, err, err_len);
		if (code == CH_OK && s->can_push && s->input_closed && !s->closed && s->pend_n == 0)
			code = stream_send(s, true, err, err_len);
		if (code != CH_OK)
			return code;
		if (stream_can_send(s))
			continue; /* more of the chunk fits now */
		nng_time now = nng_clock();
		uint64_t left = forever ? STREAM_AWAIT_MS_MAX : now < deadline ? deadline - now : 0;
		if (left > STREAM_AWAIT_MS_MAX)
			left = STREAM_AWAIT_MS_MAX;
		code = stream_await(s, (uint32_t)left, err, err_len);
		if (code != CH_OK)
			return code;
		if (!forever && s->page_n == 0 && !stream_over(s) && nng_clock() >= deadline &&
		    !stream_can_send(s))
			return fail(err, err_len, CH_ERR_TIMEOUT,
			            "no result of batch %llu within %u ms",
			            (unsigned long long)s->batch_id, wait_ms);
	}
}

/* ------------------------------------------------------------------ */
/* async                                                               */

static void async_release(ch_client *c, struct async_req *a)
{
	assert(!a->parked && !a->initiating);
	free(a->plain);
	a->plain = NULL;
	a->state = ASYNC_IDLE;
	pthread_mutex_lock(&c->pool_mu);
	a->next_free = c->async_free;
	c->async_free = a;
	assert(c->async_busy > 0);
	c->async_busy--;
	pthread_cond_broadcast(&c->pool_cv);
	/* Last touch of c: ch_client_close may free it once we unlock, but it
	 * frees this aio first, which waits for this callback to return. */
	pthread_mutex_unlock(&c->pool_mu);
}

/* Ends a request: the completion owns reply; then the slot goes back. */
static void async_finish(struct async_req *a, int code, Chorus__Envelope *reply, const char *err)
{
	ch_client *c = a->c;
	assert((code == CH_OK) == (reply != NULL));
	a->done(a, code, reply, code == CH_OK ? "" : (err != NULL ? err : ch_strerror(code)));
	async_release(c, a);
}

static void async_send(struct async_req *a, nng_msg *msg, enum async_state next)
{
	a->state = next;
	nng_aio_set_msg(a->aio, msg);
	nng_aio_set_timeout(a->aio, remaining_ms(a->deadline));
	nng_ctx_send(a->ctx, a->aio);
}

/* The steps below return CH_OK when an aio operation is under way (the
 * callback will run again) or an error code with err filled and nothing
 * pending. They never call the completion, so they are safe both in the
 * callback and in the caller's thread (where an error means "not sent"). */
static int async_need_session(struct async_req *a, uint64_t base_gen, char *err, size_t err_len);

/* Ends the handshake this request runs: wipes its HELLO's secrets, drops its
 * keyring reference and tells the waiters. */
static void async_handshake_end(struct async_req *a, int code, const char *err, bool hint)
{
	assert(a->initiating);
	sodium_memzero(&a->initiator, sizeof a->initiator);
	seal_keyring_free(a->hs_kr);
	a->hs_kr = NULL;
	a->initiating = false;
	handshake_done(a->c, code, err, hint);
}

/* Reseals the request under the current session and sends it; with no
 * session yet, joins or starts a handshake first. */
static int async_send_request(struct async_req *a, char *err, size_t err_len)
{
	nng_msg *msg = NULL;
	int code = frame_request(a->c, a->plain, a->plain_len, &msg, &a->gen, &a->sent_sid,
	                         &a->sent_counter);
	if (code == NEED_SESSION)
		return async_need_session(a, 0, err, err_len);
	if (code != CH_OK)
		return fail(err, err_len, code, "out of memory");
	async_send(a, msg, ASYNC_SEND_REQUEST);
	return CH_OK;
}

/* Parks a: its aio sleeps (no thread held) until `until` or a wake-up by
 * handshake_done or ch_client_close. Scheduled under sess_mu so that neither
 * can miss it. Caller holds sess_mu. */
static void async_park_locked(ch_client *c, struct async_req *a, enum async_state st,
                              nng_time until)
{
	assert(!a->parked);
	a->hs_seen = c->hs_done_count;
	a->parked = true;
	a->next_parked = c->hs_parked;
	c->hs_parked = a;
	a->state = st;
	nng_aio_set_timeout(a->aio, NNG_DURATION_INFINITE);
	nng_sleep_aio(remaining_ms(until), a->aio);
}

/* Gets a session newer than base_gen: resends at once if there is one,
 * parks the request if a handshake is in flight or the client backs off
 * after a REJECT, else starts one on this request's context (HELLO, then
 * WELCOME, then the request itself). */
static int async_need_session(struct async_req *a, uint64_t base_gen, char *err, size_t err_len)
{
	ch_client *c = a->c;
	pthread_mutex_lock(&c->sess_mu);
	if (c->sess_closing) {
		pthread_mutex_unlock(&c->sess_mu);
		return fail(err, err_len, CH_ERR_CLOSED, "client is closing");
	}
	if (c->sess_gen != base_gen) {
		pthread_mutex_unlock(&c->sess_mu);
		assert(c->sess_gen != 0); /* so this does not recurse again */
		return async_send_request(a, err, err_len);
	}
	a->gen = base_gen;
	if (nng_clock() >= a->deadline) {
		int code = deadline_fail_locked(c, a->total_ms, err, err_len);
		pthread_mutex_unlock(&c->sess_mu);
		return code;
	}
	if (c->hs_busy) {
		async_park_locked(c, a, ASYNC_WAIT_SESSION, a->deadline);
		pthread_mutex_unlock(&c->sess_mu);
		return CH_OK;
	}
	if (nng_clock() < c->hs_not_before) {
		nng_time until = c->hs_not_before < a->deadline ? c->hs_not_before : a->deadline;
		async_park_locked(c, a, ASYNC_WAIT_SESSION, until);
		pthread_mutex_unlock(&c->sess_mu);
		return CH_OK;
	}
	c->hs_busy = true;
	a->hs_kr = seal_keyring_ref(c->keyring);
	pthread_mutex_unlock(&c->sess_mu);
	a->initiating = true;
	nng_msg *msg = NULL;
	int code = hello_msg(c, a->hs_kr, &a->initiator, &msg, err, err_len);
	if (code != CH_OK) {
		async_handshake_end(a, code, err, false);
		return code;
	}
	async_send(a, msg, ASYNC_SEND_HELLO);
	return CH_OK;
}

/* Takes a off the parked list if it is still there. Caller holds sess_mu. */
static void async_unpark(ch_client *c, struct async_req *a)
{
	if (!a->parked)
		return;
	struct async_req **pp = &c->hs_parked;
	while (*pp != a) {
		assert(*pp != NULL);
		pp = &(*pp)->next_parked;
	}
	*pp = a->next_parked;
	a->next_parked = NULL;
	a->parked = false;
}

/* A parked request wakes: a handshake ended, the client closes, or its
 * deadline came. */
static void async_on_wake(struct async_req *a, int rv)
{
	ch_client *c = a->c;
	char err[CLIENT_ERR_BYTES] = "";
	char hs_err[CLIENT_ERR_BYTES] = "";
	pthread_mutex_lock(&c->sess_mu);
	async_unpark(c, a);
	bool closing = c->sess_closing;
	bool renewed = c->sess_gen != a->gen;
	bool hs_failed = !renewed && c->hs_done_count != a->hs_seen && c->hs_last_code < 0;
	int hs_code = c->hs_last_code;
	bool hs_definite = hs_failed && handshake_definite(hs_code, c->hs_last_hint);
	if (hs_failed)
		snprintf(hs_err, sizeof hs_err, "%s", c->hs_last_err);
	int late_code = 0;
	if (!closing && !renewed && nng_clock() >= a->deadline)
		late_code = deadline_fail_locked(c, a->total_ms, err, sizeof err);
	pthread_mutex_unlock(&c->sess_mu);

	int code;
	if (rv == NNG_ECLOSED || closing)
		code = fail(err, sizeof err, CH_ERR_CLOSED, "client is closing");
	else if (renewed)
		code = async_send_request(a, err, sizeof err);
	else if (late_code != 0)
		code = late_code;
	else if (hs_definite)
		code = fail(err, sizeof err, hs_code, "%s", /* adopt the definite failure */
		            hs_err[0] != '\0' ? hs_err : ch_strerror(hs_code));
	else
		code = async_need_session(a, a->gen, err, sizeof err); /* try again */
	if (code != CH_OK)
		async_finish(a, code, NULL, err);
}

/* A request that ignored a REJECT wakes: it fails at its deadline (or on
 * close); an earlier wake-up (a handshake ended) parks it again. */
static void async_on_deadline_wake(struct async_req *a, int rv)
{
	ch_client *c = a->c;
	char err[CLIENT_ERR_BYTES] = "";
	pthread_mutex_lock(&c->sess_mu);
	async_unpark(c, a);
	bool closing = c->sess_closing;
	if (!closing && rv != NNG_ECLOSED && nng_clock() < a->deadline) {
		async_park_locked(c, a, ASYNC_WAIT_DEADLINE, a->deadline);
		pthread_mutex_unlock(&c->sess_mu);
		return;
	}
	pthread_mutex_unlock(&c->sess_mu);
	int code;
	if (closing || rv == NNG_ECLOSED)
		code = fail(err, sizeof err, CH_ERR_CLOSED, "client is closing");
	else
		code = fail(err, sizeof err, CH_ERR_TIMEOUT,
		            "no answer from %s within %u ms (ignored a REJECT that does not verify)",
		            c->addr, a->total_ms);
	async_finish(a, code, NULL, err);
}

static void async_on_reply(struct async_req *a, nng_msg *reply)
{
	ch_client *c = a->c;
	char err[CLIENT_ERR_BYTES] = "";
	Chorus__Envelope *e = NULL;
	int code = reply_decode(c, reply, a->request_id, a->sent_sid, a->sent_counter, &e, err,
	                        sizeof err);
	nng_msg_free(reply);
	if (code == REPLY_IGNORED) {
		/* an unauthenticated REJECT: wait out the deadline (see
		 * request_sync), parked so that ch_client_close can wake us */
		pthread_mutex_lock(&c->sess_mu);
		if (!c->sess_closing) {
			async_park_locked(c, a, ASYNC_WAIT_DEADLINE, a->deadline);
			pthread_mutex_unlock(&c->sess_mu);
			return;
		}
		pthread_mutex_unlock(&c->sess_mu);
		code = fail(err, sizeof err, CH_ERR_CLOSED, "client is closing");
	}
	if (code == REPLY_REJECTED) {
		if (a->rehandshaken) {
			char why[CLIENT_ERR_BYTES];
			snprintf(why, sizeof why, "%s", err);
			code = fail(err, sizeof err, CH_ERR_AUTH, "%s refused the request: %s",
			            c->addr, why);
		} else {
			/* The node lost our session (it restarted): get a new one. */
			a->rehandshaken = true;
			code = async_need_session(a, a->gen, err, sizeof err);
			if (code == CH_OK)
				return;
		}
	}
	async_finish(a, code, code == CH_OK ? e : NULL, err);
}

/* The aio callback: one step of the async request's state machine. */
static void async_on_io(void *arg)
{
	struct async_req *a = arg;
	ch_client *c = a->c;
	int rv = nng_aio_result(a->aio);
	char err[CLIENT_ERR_BYTES] = "";
	enum async_state st = a->state;
	if (st == ASYNC_WAIT_SESSION) {
		async_on_wake(a, rv);
		return;
	}
	if (st == ASYNC_WAIT_DEADLINE) {
		async_on_deadline_wake(a, rv);
		return;
	}
	int code;
	if (rv != 0) {
		if (st == ASYNC_SEND_REQUEST || st == ASYNC_SEND_HELLO)
			nng_msg_free(nng_aio_get_msg(a->aio));
		if (rv == NNG_ETIMEDOUT)
			code = fail_no_answer(c, err, sizeof err,
			                      st == ASYNC_RECV_REPLY ? CH_ERR_TIMEOUT
			                                             : CH_ERR_UNREACHABLE,
			                      a->total_ms);
		else
			code = fail(err, sizeof err, nng_to_code(rv), "request to %s: %s", c->addr,
			            nng_strerror(rv));
		if (a->initiating)
			async_handshake_end(a, code, err, false);
		async_finish(a, code, NULL, err);
		return;
	}
	switch (st) {
	case ASYNC_SEND_REQUEST:
	case ASYNC_SEND_HELLO:
		nng_aio_set_msg(a->aio, NULL); /* sent: nng owns it now */
		a->state = st == ASYNC_SEND_REQUEST ? ASYNC_RECV_REPLY : ASYNC_RECV_WELCOME;
		nng_aio_set_timeout(a->aio, remaining_ms(a->deadline));
		nng_ctx_recv(a->ctx, a->aio);
		return;
	case ASYNC_RECV_REPLY:
	case ASYNC_RECV_WELCOME:
		/* Seen under load with nng 1.5.2: a receive that completes
		 * without error and without a message. Never dereference it. */
		if (nng_aio_get_msg(a->aio) == NULL) {
			code = fail(err, sizeof err, CH_ERR_PROTOCOL, "empty reply from %s", c->addr);
			if (a->initiating)
				async_handshake_end(a, code, err, false);
			async_finish(a, code, NULL, err);
			return;
		}
		break;
	default:
		break;
	}
	switch (st) {
	case ASYNC_RECV_REPLY: {
		nng_msg *reply = nng_aio_get_msg(a->aio);
		nng_aio_set_msg(a->aio, NULL);
		async_on_reply(a, reply);
		return;
	}
	case ASYNC_RECV_WELCOME: {
		assert(a->initiating);
		nng_msg *reply = nng_aio_get_msg(a->aio);
		nng_aio_set_msg(a->aio, NULL);
		bool hint = false;
		code = welcome_install(c, a->hs_kr, &a->initiator, reply, a->gen, &hint, err,
		                       sizeof err);
		nng_msg_free(reply);
		async_handshake_end(a, code, err, hint);
		if (code == CH_OK)
			code = async_send_request(a, err, sizeof err);
		else if (hint) /* a REJECT: again after the backoff, time permitting */
			code = async_need_session(a, a->gen, err, sizeof err);
		if (code != CH_OK)
			async_finish(a, code, NULL, err);
		return;
	}
	case ASYNC_WAIT_SESSION:
	case ASYNC_WAIT_DEADLINE:
	case ASYNC_IDLE:
	default:
		assert(!"async callback in an unexpected state");
		return;
	}
}

/* Takes an idle async slot, creating one while fewer than contexts exist.
 * When all are in flight: waits up to the client timeout if `wait`, else
 * fails at once with CH_ERR_FULL. */
static int async_take(ch_client *c, bool wait, struct async_req **out, char *err, size_t err_len)
{
	nng_time deadline = nng_clock() + c->timeout_ms;
	pthread_mutex_lock(&c->pool_mu);
	for (;;) {
		if (c->closing) {
			pthread_mutex_unlock(&c->pool_mu);
			return fail(err, err_len, CH_ERR_CLOSED, "client is closing");
		}
		if (c->async_free != NULL || c->async_count < c->contexts_count)
			break;
		if (!wait || nng_clock() >= deadline) {
			pthread_mutex_unlock(&c->pool_mu);
			return fail(err, err_len, CH_ERR_FULL,
			            "%u async requests already in flight", c->contexts_count);
		}
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		nng_duration left = remaining_ms(deadline);
		ts.tv_sec += left / 1000;
		ts.tv_nsec += (long)(left % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&c->pool_cv, &c->pool_mu, &ts);
	}
	struct async_req *a = c->async_free;
	if (a != NULL) {
		c->async_free = a->next_free;
		c->async_busy++;
		pthread_mutex_unlock(&c->pool_mu);
		/* the previous callback may still be returning: see top comment */
		nng_aio_wait(a->aio);
		*out = a;
		return CH_OK;
	}
	c->async_count++; /* reserve, so the pool never exceeds contexts */
	c->async_busy++;
	pthread_mutex_unlock(&c->pool_mu);

	a = calloc(1, sizeof *a);
	int rv = a == NULL ? NNG_ENOMEM : nng_ctx_open(&a->ctx, c->sock);
	if (rv == 0) {
		rv = nng_aio_alloc(&a->aio, async_on_io, a);
		if (rv != 0)
			nng_ctx_close(a->ctx);
	}
	if (rv != 0) {
		free(a);
		pthread_mutex_lock(&c->pool_mu);
		c->async_count--;
		c->async_busy--;
		pthread_cond_broadcast(&c->pool_cv);
		pthread_mutex_unlock(&c->pool_mu);
		return fail(err, err_len, nng_to_code(rv), "cannot open an async context: %s",
		            nng_strerror(rv));
	}
	a->c = c;
	pthread_mutex_lock(&c->pool_mu);
	a->next_all = c->async_all;
	c->async_all = a;
	pthread_mutex_unlock(&c->pool_mu);
	*out = a;
	return CH_OK;
}

/* Hands a slot back that never started (nothing pending on its aio). */
static void async_abandon(ch_client *c, struct async_req *a)
{
	a->done = NULL;
	async_release(c, a);
}

/* The one async path: packs env, takes a slot and starts the request.
 * On CH_OK `done` will run exactly once; on an error it never runs. */
static int async_start(ch_client *c, Chorus__Envelope *env, uint32_t total_ms, bool wait_for_slot,
                       async_done_fn done, ch_result_cb result_cb, chi_reply_cb reply_cb,
                       void *arg)
{
	uint8_t *plain = NULL;
	size_t plain_len = 0;
	uint64_t request_id = 0;
	int code = request_pack(c, env, &plain, &plain_len, &request_id, NULL, 0);
	if (code != CH_OK)
		return code;
	struct async_req *a = NULL;
	code = async_take(c, wait_for_slot, &a, NULL, 0);
	if (code != CH_OK) {
		free(plain);
		return code;
	}
	assert(a->state == ASYNC_IDLE && a->plain == NULL && !a->parked && !a->initiating);
	assert(a->hs_kr == NULL);
	a->plain = plain;
	a->plain_len = plain_len;
	a->request_id = request_id;
	a->gen = 0;
	a->hs_seen = 0;
	a->rehandshaken = false;
	a->total_ms = total_ms;
	a->deadline = nng_clock() + total_ms;
	a->done = done;
	a->result_cb = result_cb;
	a->reply_cb = reply_cb;
	a->cb_arg = arg;
	nng_ctx_set_ms(a->ctx, NNG_OPT_REQ_RESENDTIME, duration_ms((uint64_t)total_ms + 1000u));
	/* From a CH_OK on, the callback owns the request and finishes it. */
	char err[CLIENT_ERR_BYTES] = "";
	code = async_send_request(a, err, sizeof err);
	if (code != CH_OK)
		async_abandon(c, a);
	return code;
}

/* ch_submit_async's completion: a SubmitResp becomes a ch_result. */
static void async_done_submit(struct async_req *a, int code, Chorus__Envelope *e, const char *err)
{
	char why[CLIENT_ERR_BYTES] = "";
	struct ch_result *r = NULL;
	if (code == CH_OK) {
		code = expect_body(a->c, e, CHORUS__ENVELOPE__BODY_SUBMIT_RESP, why, sizeof why);
		if (code == CH_OK) {
			code = result_of_submit(e->submit_resp, &r, why, sizeof why);
			chorus__envelope__free_unpacked(e, NULL);
		}
		err = code == CH_OK ? "" : why;
	}
	a->result_cb(a->cb_arg, code, r, err);
}

int ch_submit_async(ch_client *c, const char *handler, const void *payload, size_t payload_len,
                    const struct ch_task_opts *opts, uint32_t wait_ms, ch_result_cb cb, void *arg)
{
	if (c == NULL || cb == NULL)
		return CH_ERR_INVALID;
	struct submit_msg m;
	int code = submit_msg_init(&m, handler, payload, payload_len, opts, wait_ms, NULL, 0);
	if (code != CH_OK)
		return code;
	/* The public call keeps its contract: wait (up to the client timeout)
	 * for a free slot rather than fail with CH_ERR_FULL. */
	return async_start(c, &m.env, total_ms_for(c, wait_ms), true, async_done_submit, cb, NULL,
	                   arg);
}

/* ------------------------------------------------------------------ */
/* internal API (client_internal.h)                                    */

int chi_request(ch_client *c, Chorus__Envelope *env, uint32_t timeout_ms,
                Chorus__Envelope **reply, char *err, size_t err_len)
{
	if (reply != NULL)
		*reply = NULL;
	if (c == NULL || env == NULL || reply == NULL)
		return fail(err, err_len, CH_ERR_INVALID, "client, envelope and reply are required");
	if (env->body_case == CHORUS__ENVELOPE__BODY__NOT_SET)
		return fail(err, err_len, CH_ERR_INVALID, "the envelope has no body");
	return request_sync(c, env, timeout_ms > 0 ? timeout_ms : c->timeout_ms, reply, err,
	                    err_len);
}

static void async_done_reply(struct async_req *a, int code, Chorus__Envelope *e, const char *err)
{
	a->reply_cb(a->cb_arg, code, e, err);
}

int chi_request_async(ch_client *c, Chorus__Envelope *env, uint32_t timeout_ms, chi_reply_cb cb,
                      void *arg)
{
	if (c == NULL || env == NULL || cb == NULL ||
	    env->body_case == CHORUS__ENVELOPE__BODY__NOT_SET)
		return CH_ERR_INVALID;
	return async_start(c, env, timeout_ms > 0 ? timeout_ms : c->timeout_ms, false,
	                   async_done_reply, NULL, cb, arg);
}

/* ------------------------------------------------------------------ */

int ch_keygen(const char *path, char *err, size_t err_len)
{
	if (path == NULL || path[0] == '\0')
		return fail(err, err_len, CH_ERR_INVALID, "a file name is required");
	if (sodium_init() < 0)
		return fail(err, err_len, CH_ERR_INTERNAL, "libsodium failed to initialise");
	char why[CLIENT_ERR_BYTES] = "";
	if (seal_secret_generate(path, why, sizeof why) != 0)
		return fail(err, err_len, CH_ERR_IO, "%s",
		            why[0] != '\0' ? why : "cannot write the secret file");
	err_clear(err, err_len);
	return CH_OK;
}
