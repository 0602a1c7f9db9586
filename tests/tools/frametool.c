/*
 * frametool.c - sends hostile and edge-case frames to a chorusd node, for
 * the integration tests (tests/integration/test_bad_input.py,
 * test_reconnect.py).
 *
 *   chorus_frametool ADDR SECRET_FILE MODE [ARG]
 *
 * Modes (each prints one line per outcome and exits 0 when every outcome
 * is the expected one, 1 when one is not, 2 on usage errors, 3 when the
 * node cannot be reached at all):
 *   garbage [N]      N (default 1) frames of random bytes (never the magic)
 *                    -> no answer expected; the node counts them malformed
 *   truncated [N]    N frames with a valid DATA header but shorter than
 *                    header + tag -> no answer; counted truncated
 *   oversized SIZE   one DATA frame of SIZE bytes ("100k" accepted) over the
 *                    node's --frame-max -> no answer; counted oversized
 *   tampered         a real handshake, then a sealed status request with one
 *                    ciphertext byte flipped -> no answer (counted tampered);
 *                    then an intact request on the same session -> answered
 *   replay           a real handshake, a sealed status request answered; the
 *                    same bytes again on a fresh context (the node may answer
 *                    from its resend cache: printed); then, after enough other
 *                    requests to push it out of that cache, the same bytes
 *                    once more -> no answer; counted replayed
 *   wrong-secret     a HELLO MAC'd with a random secret -> a REJECT with a
 *                    reason; counted forged
 *   restart-awaits N N awaits parked on one long task; prints "READY N",
 *                    waits for a line on stdin (the test restarts the node
 *                    meanwhile), then waits up to 30 s: "answered K/N";
 *                    exit 0 when every await was answered
 *   gossip HOW EXPECT
 *                    one Gossip push-pull over a session made as HOW
 *                    (client: a client key; node: the node key, sender =
 *                    the session's id; impostor: node key, another
 *                    sender); exit 0 when the answer contains EXPECT ("ack",
 *                    or an error name such as "denied")
 *   hello-dump       prints one HELLO made with the key, as hex (a capture)
 *   hello-flood N    one HELLO made with the key (as if captured), sent N
 *                    times: prints how many were answered (a node that
 *                    refuses replayed HELLOs answers at most one with a
 *                    WELCOME); a load tool for the benchmark and tests
 *   placed-twice     one attempt placed as a coordinator (origin fields) on
 *                    two sessions, then attempt 2: the first two answered
 *                    with the same task (run once), the third a new one
 *   forge-resend     a parked `submit --wait` (sleep 1500), then frames under
 *                    its session id and counter with made-up bytes, while it
 *                    is parked and after it was answered -> no answer to
 *                    either; the real wait answered (succeeded); a genuine
 *                    resend still answered from the cache
 *   stream-bad       a streamed batch (window 8) fed wrong chunks: a gap, the
 *                    same chunk twice, an overlapping one, one over the window,
 *                    one for an unknown batch, one of 65,537 tasks, the close
 *                    twice, one after the close -> each answered as the
 *                    protocol says (chorus.proto MapAppendReq); the results
 *                    then come in order, each index once
 *   hammer N [SLEEP_MS]
 *                    N sequential ch_submit_await("echo") calls through
 *                    libchorus; prints each failure, then "ok N (...)"
 *                    with the total and slowest call times; with SLEEP_MS,
 *                    "sleep SLEEP_MS" tasks instead, so each wait is parked
 *   dup [N]          N times: one sealed echo submit sent twice back to back on
 *                    two contexts (a resend that reaches the node before it
 *                    answered the original); both should be answered
 *   hammer-big N BYTES
 *                    like hammer, with echo payloads (and so answers) of
 *                    BYTES ("20k" accepted) and a 3 s client timeout
 *   submit N HANDLER PAYLOAD [temporary|transient [PAUSE_MS]]
 *                    N sequential fire-and-forget ch_submit calls (PAUSE_MS
 *                    apart, default 0); prints
 *                    "id ID" as each is acknowledged (line-buffered, so a
 *                    test can kill the node mid-way and know every id it was
 *                    promised); stops at the first error ("error I: ...",
 *                    exit 1) and ends with "submitted K"
 *   cache-leads N PREFIX
 *                    as a node (the node key): a forwarded GET of each key
 *                    PREFIX0 .. PREFIX<N-1>; prints "lead KEY" for the keys
 *                    the node leads and "elsewhere KEY" for those it
 *                    answers CH_ERR_MOVED (in a two-node cluster: the other
 *                    node's keys)
 *   compute-crowd N SCRIPT COMPUTE_KEYS PLAIN_KEYS
 *                    N concurrent ch_cache_get_or_compute callers (one
 *                    client, N contexts), caller i asking for key i mod k
 *                    of the comma-separated COMPUTE_KEYS, an exec task
 *                    `/bin/sh -c SCRIPT`; meanwhile a second client puts
 *                    and gets the comma-separated PLAIN_KEYS in turn until
 *                    every caller was answered. Prints each distinct error
 *                    once ("crowd error" / "plain error") and one line
 *                    "RESULT {json}" with the counts and times; exit 0
 *                    unless the node cannot be reached
 *
 * Frames that expect no answer are given a short receive timeout
 * (FRAMETOOL_QUIET_MS); a timeout there is the expected outcome.
 * The tool talks nng req0 and proto/seal.h directly, so it can break every
 * rule the library keeps.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <sodium.h>

#include "chorus.h"
#include "client_internal.h"
#include "proto/chorus.pb-c.h"
#include "proto/seal.h"

#define FRAMETOOL_QUIET_MS 300        /* wait for an answer that should not come */
#define FRAMETOOL_ANSWER_MS 5000      /* wait for an answer that should come */
#define FRAMETOOL_COUNT_MAX 100000u
#define FRAMETOOL_SIZE_MAX (256u * 1024u * 1024u)
#define FRAMETOOL_GARBAGE_BYTES 96    /* longer than header + tag: not "truncated" */
#define FRAMETOOL_TRUNCATED_BYTES 30  /* header (24) + 6: shorter than header + tag */
#define FRAMETOOL_CACHE_FLUSH 40      /* > the node's per-session resend cache (32) */
#define FRAMETOOL_HAMMER_WAIT_MS 10000
#define FRAMETOOL_SLOW_CALL_MS 100    /* hammer: calls this slow are printed */
#define FRAMETOOL_BIG_TIMEOUT_MS 3000 /* hammer-big: a lost answer fails in ~6 s */
#define FRAMETOOL_BIG_BYTES_MAX (8u * 1024u * 1024u)

static const char *g_addr;

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
static uint8_t g_self_id[SEAL_ID_BYTES];
static uint64_t g_request_id;

static void die_nng(const char *what, int rv)
{
	fprintf(stderr, "frametool: %s: %s\n", what, nng_strerror(rv));
	exit(3);
}

/* Dials synchronously so that a missing node is reported at once. */
static nng_socket sock_open(void)
{
	nng_socket s;
	int rv = nng_req0_open(&s);
	if (rv != 0)
		die_nng("nng_req0_open", rv);
	nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, 0); /* no cap: we are the test */
	/* no automatic resends: every frame we send is sent exactly once */
	nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	rv = nng_dial(s, g_addr, NULL, 0);
	if (rv != 0)
		die_nng(g_addr, rv);
	return s;
}

/* One request on a fresh context. Returns 1 with *reply set (caller frees)
 * when answered, 0 on timeout, -1 on another error. */
static int xchg(nng_socket s, const uint8_t *frame, size_t len, int timeout_ms, nng_msg **reply)
{
	nng_ctx ctx;
	nng_aio *aio;
	nng_msg *msg;
	*reply = NULL;
	if (nng_ctx_open(&ctx, s) != 0 || nng_aio_alloc(&aio, NULL, NULL) != 0)
		return -1;
	if (nng_msg_alloc(&msg, 0) != 0 || nng_msg_append(msg, frame, len) != 0) {
		nng_aio_free(aio);
		nng_ctx_close(ctx);
		return -1;
	}
	nng_aio_set_msg(aio, msg);
	nng_aio_set_timeout(aio, FRAMETOOL_ANSWER_MS);
	nng_ctx_send(ctx, aio);
	nng_aio_wait(aio);
	int rv = nng_aio_result(aio);
	if (rv != 0) {
		nng_msg_free(nng_aio_get_msg(aio));
		fprintf(stderr, "frametool: send: %s\n", nng_strerror(rv));
		nng_aio_free(aio);
		nng_ctx_close(ctx);
		return -1;
	}
	nng_aio_set_timeout(aio, timeout_ms);
	nng_ctx_recv(ctx, aio);
	nng_aio_wait(aio);
	rv = nng_aio_result(aio);
	int out;
	if (rv == 0) {
		*reply = nng_aio_get_msg(aio);
		out = 1;
	} else if (rv == NNG_ETIMEDOUT) {
		out = 0;
	} else {
		fprintf(stderr, "frametool: recv: %s\n", nng_strerror(rv));
		out = -1;
	}
	nng_aio_free(aio);
	nng_ctx_close(ctx);
	return out;
}

/* Sends n frames, each on its own context, then waits once (concurrently on
 * all contexts) for answers that should not come. Returns how many were
 * answered, or -1 on a send error. */
struct bulk {
	nng_ctx ctx;
	nng_aio *aio;
};

static uint32_t g_bulk_sent; /* frames the last send_bulk got out */

static volatile sig_atomic_t g_alarm_code;

static void alarm_exit(int signo)
{
	(void)signo;
	_exit(g_alarm_code);
}

static int send_bulk(nng_socket s, uint32_t n, void (*make)(uint8_t *buf, size_t *len, uint32_t i),
                     size_t buf_bytes)
{
	g_bulk_sent = 0;
	struct bulk *b = calloc(n, sizeof(*b));
	uint8_t *buf = malloc(buf_bytes);
	if (!b || !buf) {
		fprintf(stderr, "frametool: out of memory\n");
		exit(1);
	}
	int answered = 0, failed = 0;
	uint32_t opened = 0;
	for (uint32_t i = 0; i < n; i++, opened++) {
		if (nng_ctx_open(&b[i].ctx, s) != 0 || nng_aio_alloc(&b[i].aio, NULL, NULL) != 0) {
			failed = 1;
			break;
		}
		size_t len = buf_bytes;
		make(buf, &len, i);
		nng_msg *msg;
		if (nng_msg_alloc(&msg, 0) != 0 || nng_msg_append(msg, buf, len) != 0) {
			failed = 1;
			opened++;
			break;
		}
		nng_aio_set_msg(b[i].aio, msg);
		nng_aio_set_timeout(b[i].aio, FRAMETOOL_ANSWER_MS);
		nng_ctx_send(b[i].ctx, b[i].aio);
		nng_aio_wait(b[i].aio);
		if (nng_aio_result(b[i].aio) != 0) {
			nng_msg_free(nng_aio_get_msg(b[i].aio));
			failed = 1;
			opened++;
			break;
		}
		g_bulk_sent++;
	}
	if (!failed) {
		for (uint32_t i = 0; i < n; i++) {
			nng_aio_set_timeout(b[i].aio, FRAMETOOL_QUIET_MS);
			nng_ctx_recv(b[i].ctx, b[i].aio);
		}
		for (uint32_t i = 0; i < n; i++) {
			nng_aio_wait(b[i].aio);
			if (nng_aio_result(b[i].aio) == 0) {
				nng_msg_free(nng_aio_get_msg(b[i].aio));
				answered++;
			}
		}
	}
	for (uint32_t i = 0; i < opened && i < n; i++) {
		if (b[i].aio)
			nng_aio_free(b[i].aio);
		nng_ctx_close(b[i].ctx);
	}
	free(b);
	free(buf);
	return failed ? -1 : answered;
}

static void header_put(uint8_t *f, int kind, uint64_t session_id, uint64_t counter)
{
	memset(f, 0, SEAL_HEADER_BYTES);
	f[0] = SEAL_MAGIC;
	f[1] = (uint8_t)kind;
	f[2] = (uint8_t)(CH_PROTOCOL_VERSION & 0xff);
	f[3] = (uint8_t)(CH_PROTOCOL_VERSION >> 8);
	for (int i = 0; i < 8; i++) {
		f[8 + i] = (uint8_t)(session_id >> (8 * i));
		f[16 + i] = (uint8_t)(counter >> (8 * i));
	}
}

static void make_garbage(uint8_t *buf, size_t *len, uint32_t i)
{
	(void)i;
	*len = FRAMETOOL_GARBAGE_BYTES;
	randombytes_buf(buf, *len);
	if (buf[0] == SEAL_MAGIC)
		buf[0] ^= 0xff; /* never a plausible header */
}

static void make_truncated(uint8_t *buf, size_t *len, uint32_t i)
{
	header_put(buf, SEAL_KIND_DATA, randombytes_random() | 1u, i + 1u);
	randombytes_buf(buf + SEAL_HEADER_BYTES, FRAMETOOL_TRUNCATED_BYTES - SEAL_HEADER_BYTES);
	*len = FRAMETOOL_TRUNCATED_BYTES;
}

static size_t g_oversize_bytes;

static void make_oversized(uint8_t *buf, size_t *len, uint32_t i)
{
	header_put(buf, SEAL_KIND_DATA, ((uint64_t)randombytes_random() << 32) | 1u, i + 1u);
	randombytes_buf(buf + SEAL_HEADER_BYTES, g_oversize_bytes - SEAL_HEADER_BYTES);
	*len = g_oversize_bytes;
}

/* ---- sealed requests ---- */

/* The keys of a secret file (or client credential): we speak as a client. */
static struct seal_keyring *keyring_from_file(const char *path)
{
	char err[256] = "";
	struct seal_keyring *kr = seal_keyring_load(path, SEAL_ROLE_CLIENT, err, sizeof(err));
	if (!kr) {
		fprintf(stderr, "frametool: %s\n", err);
		exit(2);
	}
	return kr;
}


/* Handshakes: fills *sess, or exits (3 no answer, 1 refused). */
static void handshake_as(nng_socket s, const struct seal_keyring *kr, int role,
                         struct seal_session *sess)
{
	struct seal_initiator in;
	uint8_t *hello = NULL;
	size_t hello_len = 0;
	if (seal_hello_build(&in, kr, role, g_self_id, seal_wall_ms(), &hello, &hello_len) != 0) {
		fprintf(stderr, "frametool: cannot build HELLO\n");
		exit(1);
	}
	nng_msg *reply = NULL;
	int rc = xchg(s, hello, hello_len, FRAMETOOL_ANSWER_MS, &reply);
	free(hello);
	if (rc != 1) {
		printf("handshake: no answer\n");
		exit(3);
	}
	char err[SEAL_REASON_BYTES_MAX + 64] = "";
	int v = seal_welcome_accept(&in, kr, NULL, nng_msg_body(reply), nng_msg_len(reply), sess,
	                            err, sizeof(err));
	nng_msg_free(reply);
	sodium_memzero(&in, sizeof(in));
	if (v != SEAL_OK) {
		printf("handshake: refused: %s (%s)\n", seal_verdict_name(v), err);
		exit(1);
	}
}

static void handshake(nng_socket s, const struct seal_keyring *kr, struct seal_session *sess)
{
	handshake_as(s, kr, SEAL_ROLE_CLIENT, sess);
}

/* A keyring able to act as a node (the cluster secret), for the modes that
 * play a coordinator. */
static struct seal_keyring *node_keyring_from_file(const char *path)
{
	char err[256] = "";
	struct seal_keyring *kr = seal_keyring_load(path, SEAL_ROLE_NODE, err, sizeof(err));
	if (!kr) {
		fprintf(stderr, "frametool: %s\n", err);
		exit(2);
	}
	return kr;
}

/* A sealed status request (malloc'd frame). */
static uint8_t *status_frame(struct seal_session *sess, size_t *len)
{
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	Chorus__StatusReq sr = CHORUS__STATUS_REQ__INIT;
	env.version = CH_PROTOCOL_VERSION;
	env.sender.data = g_self_id;
	env.sender.len = SEAL_ID_BYTES;
	env.request_id = ++g_request_id;
	env.body_case = CHORUS__ENVELOPE__BODY_STATUS;
	env.status = &sr;
	size_t n = chorus__envelope__get_packed_size(&env);
	uint8_t *plain = malloc(n ? n : 1);
	uint8_t *frame = malloc(n + SEAL_OVERHEAD_BYTES);
	if (!plain || !frame) {
		fprintf(stderr, "frametool: out of memory\n");
		exit(1);
	}
	chorus__envelope__pack(&env, plain);
	seal_frame_seal(sess, plain, n, frame);
	free(plain);
	*len = n + SEAL_OVERHEAD_BYTES;
	return frame;
}

/* Opens a reply and checks it is a StatusResp. Returns 1 when it is. */
static int reply_is_status(struct seal_session *sess, nng_msg *reply, char *why, size_t why_len)
{
	uint8_t *frame = nng_msg_body(reply);
	size_t len = nng_msg_len(reply);
	int kind = 0;
	uint64_t sid = 0;
	int v = seal_frame_peek(frame, len, SEAL_FRAME_BYTES_DEFAULT, &kind, &sid);
	if (v != SEAL_OK || kind != SEAL_KIND_DATA) {
		snprintf(why, why_len, "not a data frame (verdict %s, kind %d)", seal_verdict_name(v),
		         kind);
		return 0;
	}
	uint8_t *plain = NULL;
	size_t plain_len = 0;
	v = seal_frame_open(sess, frame, len, &plain, &plain_len);
	if (v != SEAL_OK) {
		snprintf(why, why_len, "reply refused: %s", seal_verdict_name(v));
		return 0;
	}
	Chorus__Envelope *env = chorus__envelope__unpack(NULL, plain_len, plain);
	if (!env) {
		snprintf(why, why_len, "undecodable reply");
		return 0;
	}
	int ok = env->body_case == CHORUS__ENVELOPE__BODY_STATUS_RESP;
	if (!ok)
		snprintf(why, why_len, "reply body %d, not a status", (int)env->body_case);
	chorus__envelope__free_unpacked(env, NULL);
	return ok;
}

/* ---- modes ---- */

static int mode_bulk(const char *name, uint32_t n, void (*make)(uint8_t *, size_t *, uint32_t),
                     size_t buf_bytes)
{
	nng_socket s = sock_open();
	int answered = send_bulk(s, n, make, buf_bytes);
	nng_close(s);
	if (answered < 0) {
		printf("%s: send failed\n", name);
		return 1;
	}
	printf("%s: sent %u, unanswered %u (expected), answered %d\n", name, n, n - (uint32_t)answered,
	       answered);
	return answered == 0 ? 0 : 1;
}

static int mode_tampered(const char *secret)
{
	struct seal_keyring *kr = keyring_from_file(secret);
	struct seal_session sess;
	nng_socket s = sock_open();
	handshake(s, kr, &sess);
	int bad = 0;

	size_t len;
	uint8_t *frame = status_frame(&sess, &len);
	frame[SEAL_HEADER_BYTES + 1] ^= 0x40; /* inside the ciphertext */
	nng_msg *reply = NULL;
	int rc = xchg(s, frame, len, FRAMETOOL_QUIET_MS, &reply);
	free(frame);
	if (rc == 0) {
		printf("tampered: no answer (expected: dropped as tampered)\n");
	} else {
		printf("tampered: UNEXPECTED %s\n", rc == 1 ? "answer" : "error");
		bad = 1;
		if (reply)
			nng_msg_free(reply);
	}

	frame = status_frame(&sess, &len);
	rc = xchg(s, frame, len, FRAMETOOL_ANSWER_MS, &reply);
	free(frame);
	char why[128] = "";
	if (rc == 1 && reply_is_status(&sess, reply, why, sizeof(why))) {
		printf("tampered: the session still works: intact request answered\n");
	} else {
		printf("tampered: UNEXPECTED: intact request after it %s %s\n",
		       rc == 1 ? "got a bad answer:" : "got no answer", why);
		bad = 1;
	}
	if (reply)
		nng_msg_free(reply);
	nng_close(s);
	seal_keyring_free(kr);
	return bad;
}

static int mode_replay(const char *secret)
{
	struct seal_keyring *kr = keyring_from_file(secret);
	struct seal_session sess;
	nng_socket s = sock_open();
	handshake(s, kr, &sess);
	int bad = 0;
	char why[128] = "";

	size_t len;
	uint8_t *frame = status_frame(&sess, &len);
	uint8_t *copy = malloc(len);
	if (!copy)
		return 1;
	memcpy(copy, frame, len);
	nng_msg *reply = NULL;
	int rc = xchg(s, frame, len, FRAMETOOL_ANSWER_MS, &reply);
	free(frame);
	if (rc == 1 && reply_is_status(&sess, reply, why, sizeof(why))) {
		printf("replay: original request answered\n");
	} else {
		printf("replay: UNEXPECTED: original request %s %s\n",
		       rc == 1 ? "got a bad answer:" : "got no answer", why);
		bad = 1;
	}
	if (reply)
		nng_msg_free(reply);

	/* the same bytes on a fresh context: a resend, as nng would make */
	rc = xchg(s, copy, len, FRAMETOOL_QUIET_MS, &reply);
	if (rc == 1 && reply_is_status(&sess, reply, why, sizeof(why))) {
		printf("replay: immediate replay answered from the node's cache (not re-executed)\n");
	} else if (rc == 0) {
		printf("replay: immediate replay refused (counted replayed)\n");
	} else {
		printf("replay: UNEXPECTED: immediate replay %s\n", why);
		bad = 1;
	}
	if (reply)
		nng_msg_free(reply);

	/* push the original out of the node's per-session resend cache */
	for (int i = 0; i < FRAMETOOL_CACHE_FLUSH; i++) {
		frame = status_frame(&sess, &len);
		rc = xchg(s, frame, len, FRAMETOOL_ANSWER_MS, &reply);
		free(frame);
		if (rc != 1 || !reply_is_status(&sess, reply, why, sizeof(why))) {
			printf("replay: UNEXPECTED: filler request %d %s %s\n", i,
			       rc == 1 ? "bad answer:" : "no answer", why);
			bad = 1;
		}
		if (reply)
			nng_msg_free(reply);
		if (bad)
			break;
	}

	rc = xchg(s, copy, len, FRAMETOOL_QUIET_MS, &reply);
	if (rc == 0) {
		printf("replay: old replay refused (counted replayed)\n");
	} else {
		printf("replay: UNEXPECTED: old replay %s\n", rc == 1 ? "answered" : "failed");
		bad = 1;
		if (reply)
			nng_msg_free(reply);
	}
	free(copy);
	nng_close(s);
	seal_keyring_free(kr);
	return bad;
}

/* A sealed fire-and-forget echo submit (malloc'd frame). */
static uint8_t *submit_frame(struct seal_session *sess, const char *payload, size_t *len)
{
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	Chorus__SubmitReq sr = CHORUS__SUBMIT_REQ__INIT;
	Chorus__TaskSpec ts = CHORUS__TASK_SPEC__INIT;
	ts.handler = (char *)"echo";
	ts.payload.data = (uint8_t *)payload;
	ts.payload.len = strlen(payload);
	sr.task = &ts;
	env.version = CH_PROTOCOL_VERSION;
	env.sender.data = g_self_id;
	env.sender.len = SEAL_ID_BYTES;
	env.request_id = ++g_request_id;
	env.body_case = CHORUS__ENVELOPE__BODY_SUBMIT;
	env.submit = &sr;
	size_t n = chorus__envelope__get_packed_size(&env);
	uint8_t *plain = malloc(n ? n : 1);
	uint8_t *frame = malloc(n + SEAL_OVERHEAD_BYTES);
	if (!plain || !frame) {
		fprintf(stderr, "frametool: out of memory\n");
		exit(1);
	}
	chorus__envelope__pack(&env, plain);
	seal_frame_seal(sess, plain, n, frame);
	free(plain);
	*len = n + SEAL_OVERHEAD_BYTES;
	return frame;
}

/* Starts a send of frame on ctx (aio left in flight). */
static void send_start(nng_ctx ctx, nng_aio *aio, const uint8_t *frame, size_t len)
{
	nng_msg *msg;
	if (nng_msg_alloc(&msg, 0) != 0 || nng_msg_append(msg, frame, len) != 0) {
		fprintf(stderr, "frametool: out of memory\n");
		exit(1);
	}
	nng_aio_set_msg(aio, msg);
	nng_aio_set_timeout(aio, FRAMETOOL_ANSWER_MS);
	nng_ctx_send(ctx, aio);
}

/* Waits for the send on aio, then for its answer; 1 answered, 0 not. */
static int answer_wait(nng_ctx ctx, nng_aio *aio, int timeout_ms)
{
	nng_aio_wait(aio);
	if (nng_aio_result(aio) != 0) {
		nng_msg_free(nng_aio_get_msg(aio));
		return 0;
	}
	nng_aio_set_timeout(aio, timeout_ms);
	nng_ctx_recv(ctx, aio);
	nng_aio_wait(aio);
	if (nng_aio_result(aio) != 0)
		return 0;
	nng_msg_free(nng_aio_get_msg(aio));
	return 1;
}

/* n times: one sealed submit sent twice back to back (a resend that
 * arrives before the node answered the original). Both copies should be
 * answered, the task run once. */
static int mode_dup(const char *secret, uint32_t n)
{
	struct seal_keyring *kr = keyring_from_file(secret);
	struct seal_session sess;
	nng_socket s = sock_open();
	handshake(s, kr, &sess);
	uint32_t first_answered = 0, dup_answered = 0;
	for (uint32_t i = 0; i < n; i++) {
		char payload[32];
		snprintf(payload, sizeof(payload), "dup-%" PRIu32, i);
		size_t len;
		uint8_t *frame = submit_frame(&sess, payload, &len);
		nng_ctx a, b;
		nng_aio *aa, *ab;
		if (nng_ctx_open(&a, s) != 0 || nng_ctx_open(&b, s) != 0 ||
		    nng_aio_alloc(&aa, NULL, NULL) != 0 || nng_aio_alloc(&ab, NULL, NULL) != 0) {
			fprintf(stderr, "frametool: nng contexts\n");
			return 1;
		}
		send_start(a, aa, frame, len);
		send_start(b, ab, frame, len);
		free(frame);
		first_answered += (uint32_t)answer_wait(a, aa, FRAMETOOL_ANSWER_MS);
		dup_answered += (uint32_t)answer_wait(b, ab, 1000);
		nng_aio_free(aa);
		nng_aio_free(ab);
		nng_ctx_close(a);
		nng_ctx_close(b);
	}
	printf("dup: %" PRIu32 " submits sent twice: %" PRIu32 " originals and %" PRIu32
	       " resends answered\n",
	       n, first_answered, dup_answered);
	nng_close(s);
	seal_keyring_free(kr);
	return first_answered == n && dup_answered == n ? 0 : 1;
}

/* A sealed submit of `sleep SLEEP_MS` that waits for its result (parked on
 * the node), as `submit --wait` sends it (malloc'd frame). */
static uint8_t *sleep_wait_frame(struct seal_session *sess, const char *sleep_ms, size_t *len)
{
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	Chorus__SubmitReq sr = CHORUS__SUBMIT_REQ__INIT;
	Chorus__TaskSpec ts = CHORUS__TASK_SPEC__INIT;
	ts.handler = (char *)"sleep";
	ts.payload.data = (uint8_t *)sleep_ms;
	ts.payload.len = strlen(sleep_ms);
	sr.task = &ts;
	sr.wait_ms = 20000;
	env.version = CH_PROTOCOL_VERSION;
	env.sender.data = g_self_id;
	env.sender.len = SEAL_ID_BYTES;
	env.request_id = ++g_request_id;
	env.body_case = CHORUS__ENVELOPE__BODY_SUBMIT;
	env.submit = &sr;
	size_t n = chorus__envelope__get_packed_size(&env);
	uint8_t *plain = malloc(n ? n : 1);
	uint8_t *frame = malloc(n + SEAL_OVERHEAD_BYTES);
	if (!plain || !frame) {
		fprintf(stderr, "frametool: out of memory\n");
		exit(1);
	}
	chorus__envelope__pack(&env, plain);
	seal_frame_seal(sess, plain, n, frame);
	free(plain);
	*len = n + SEAL_OVERHEAD_BYTES;
	return frame;
}

/* Forged resends: an outsider copies a session id and a counter from the
 * wire (both in clear) and sends made-up bytes under them, while the real
 * request is parked, then after it was answered. Neither forgery may be
 * answered or disturb the real client, whose wait must be answered with
 * the task's result. */
static int mode_forge_resend(const char *secret)
{
	struct seal_keyring *kr = keyring_from_file(secret);
	struct seal_session sess;
	nng_socket s = sock_open();
	handshake(s, kr, &sess);
	size_t len;
	uint8_t *frame = sleep_wait_frame(&sess, "1500", &len);
	nng_ctx real, forged;
	nng_aio *ar, *af;
	if (nng_ctx_open(&real, s) != 0 || nng_ctx_open(&forged, s) != 0 ||
	    nng_aio_alloc(&ar, NULL, NULL) != 0 || nng_aio_alloc(&af, NULL, NULL) != 0) {
		fprintf(stderr, "frametool: nng contexts\n");
		return 1;
	}
	send_start(real, ar, frame, len);
	nng_aio_wait(ar);
	if (nng_aio_result(ar) != 0) {
		fprintf(stderr, "frametool: send: %s\n", nng_strerror(nng_aio_result(ar)));
		return 1;
	}
	/* the real request is on its way; the forgery follows it */
	uint8_t *fake = malloc(len);
	if (!fake)
		return 1;
	memcpy(fake, frame, SEAL_HEADER_BYTES);
	randombytes_buf(fake + SEAL_HEADER_BYTES, len - SEAL_HEADER_BYTES);
	send_start(forged, af, fake, len);
	int bad = 0;
	int forged_answered = answer_wait(forged, af, FRAMETOOL_QUIET_MS);
	printf("forged resend while parked: %s\n", forged_answered ? "ANSWERED" : "no answer");
	bad |= forged_answered;
	/* the real client's wait: answered when the task ends */
	nng_aio_set_timeout(ar, 15000);
	nng_ctx_recv(real, ar);
	nng_aio_wait(ar);
	int real_ok = 0;
	if (nng_aio_result(ar) == 0) {
		nng_msg *reply = nng_aio_get_msg(ar);
		uint8_t *plain = NULL;
		size_t plain_len = 0;
		if (seal_frame_open(&sess, nng_msg_body(reply), nng_msg_len(reply), &plain,
		                    &plain_len) == SEAL_OK) {
			Chorus__Envelope *e = chorus__envelope__unpack(NULL, plain_len, plain);
			real_ok = e && e->body_case == CHORUS__ENVELOPE__BODY_SUBMIT_RESP &&
			          e->submit_resp->result &&
			          e->submit_resp->result->state == CHORUS__TASK_STATE__TASK_SUCCEEDED;
			if (e)
				chorus__envelope__free_unpacked(e, NULL);
		}
		nng_msg_free(reply);
	}
	printf("real wait: %s\n", real_ok ? "answered, succeeded" : "NOT ANSWERED");
	bad |= !real_ok;
	/* after the answer: a forgery of the answered request gets nothing
	 * (the node would otherwise re-seal its cached answer for anyone) */
	randombytes_buf(fake + SEAL_HEADER_BYTES, len - SEAL_HEADER_BYTES);
	nng_msg *reply = NULL;
	int r = xchg(s, fake, len, FRAMETOOL_QUIET_MS, &reply);
	printf("forged resend after the answer: %s\n", r == 1 ? "ANSWERED" : "no answer");
	bad |= r == 1;
	if (reply)
		nng_msg_free(reply);
	/* and the genuine resend still gets the cached answer */
	r = xchg(s, frame, len, FRAMETOOL_ANSWER_MS, &reply);
	printf("genuine resend after the answer: %s\n", r == 1 ? "answered" : "NO ANSWER");
	bad |= r != 1;
	if (reply)
		nng_msg_free(reply);
	free(fake);
	free(frame);
	nng_aio_free(ar);
	nng_aio_free(af);
	nng_ctx_close(real);
	nng_ctx_close(forged);
	nng_close(s);
	seal_keyring_free(kr);
	return bad ? 1 : 0;
}

/* A sealed submit placed as a coordinator would: origin fields set. */
static uint8_t *placed_frame(struct seal_session *sess, const uint8_t origin[16], uint64_t task,
                             uint32_t attempt, size_t *len)
{
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	Chorus__SubmitReq sr = CHORUS__SUBMIT_REQ__INIT;
	Chorus__TaskSpec ts = CHORUS__TASK_SPEC__INIT;
	ts.handler = (char *)"echo";
	ts.payload.data = (uint8_t *)"placed";
	ts.payload.len = 6;
	sr.task = &ts;
	sr.wait_ms = 10000;
	sr.origin.data = (uint8_t *)origin;
	sr.origin.len = 16;
	sr.origin_task = task;
	sr.origin_attempt = attempt;
	env.version = CH_PROTOCOL_VERSION;
	env.sender.data = g_self_id;
	env.sender.len = SEAL_ID_BYTES;
	env.request_id = ++g_request_id;
	env.body_case = CHORUS__ENVELOPE__BODY_SUBMIT;
	env.submit = &sr;
	size_t n = chorus__envelope__get_packed_size(&env);
	uint8_t *plain = malloc(n ? n : 1);
	uint8_t *frame = malloc(n + SEAL_OVERHEAD_BYTES);
	if (!plain || !frame) {
		fprintf(stderr, "frametool: out of memory\n");
		exit(1);
	}
	chorus__envelope__pack(&env, plain);
	seal_frame_seal(sess, plain, n, frame);
	free(plain);
	*len = n + SEAL_OVERHEAD_BYTES;
	return frame;
}

/* The task id and state in a SubmitResp reply, or 0. */
static uint64_t submit_reply_id(struct seal_session *sess, nng_msg *reply, int *state)
{
	uint8_t *plain = NULL;
	size_t plain_len = 0;
	uint64_t id = 0;
	*state = 0;
	if (seal_frame_open(sess, nng_msg_body(reply), nng_msg_len(reply), &plain, &plain_len) !=
	    SEAL_OK)
		return 0;
	Chorus__Envelope *e = chorus__envelope__unpack(NULL, plain_len, plain);
	if (e && e->body_case == CHORUS__ENVELOPE__BODY_SUBMIT_RESP) {
		id = e->submit_resp->task_id;
		if (e->submit_resp->result)
			*state = (int)e->submit_resp->result->state;
	} else if (e && e->body_case == CHORUS__ENVELOPE__BODY_ERROR) {
		printf("error: %s\n", e->error->message);
	}
	if (e)
		chorus__envelope__free_unpacked(e, NULL);
	return id;
}

/* One attempt placed twice, as a coordinator's link does after a
 * re-handshake: two sessions, the same (origin, task, attempt). The member
 * must run it once and answer both with the same task. Then attempt 2 of
 * the same task: a new run. */
static int mode_placed_twice(const char *secret)
{
	struct seal_keyring *kr = node_keyring_from_file(secret);
	uint8_t origin[16];
	randombytes_buf(origin, sizeof(origin));
	uint64_t ids[3] = {0, 0, 0};
	int states[3] = {0, 0, 0};
	const uint32_t attempts[3] = {1, 1, 2};
	for (int i = 0; i < 3; i++) {
		struct seal_session sess;
		nng_socket s = sock_open();
		handshake_as(s, kr, SEAL_ROLE_NODE, &sess);
		size_t len;
		uint8_t *frame = placed_frame(&sess, origin, 77, attempts[i], &len);
		nng_msg *reply = NULL;
		if (xchg(s, frame, len, FRAMETOOL_ANSWER_MS, &reply) == 1) {
			ids[i] = submit_reply_id(&sess, reply, &states[i]);
			nng_msg_free(reply);
		}
		free(frame);
		nng_close(s);
		printf("attempt %u, session %d: task %" PRIu64 " state %d\n", attempts[i], i + 1,
		       ids[i], states[i]);
	}
	seal_keyring_free(kr);
	int ok = ids[0] && ids[0] == ids[1] && ids[2] && ids[2] != ids[0] &&
	         states[0] == CHORUS__TASK_STATE__TASK_SUCCEEDED &&
	         states[1] == CHORUS__TASK_STATE__TASK_SUCCEEDED;
	printf("placed-twice: %s\n", ok ? "one run per attempt" : "WRONG");
	return ok ? 0 : 1;
}

static uint8_t *g_hello;
static size_t g_hello_len;

static void make_hello_copy(uint8_t *buf, size_t *len, uint32_t i)
{
	(void)i;
	memcpy(buf, g_hello, g_hello_len);
	*len = g_hello_len;
}

/* One HELLO built with the real key (as if captured on the wire), sent n
 * times in waves of FRAMETOOL_WAVE: prints how many were welcomed. A node
 * that refuses replayed HELLOs welcomes at most one. A load tool: exit 0
 * unless nothing could be sent. */
#define FRAMETOOL_WAVE 128
static int mode_hello_flood(const char *secret, uint32_t n)
{
	struct seal_keyring *kr = keyring_from_file(secret);
	struct seal_initiator in;
	if (seal_hello_build(&in, kr, SEAL_ROLE_CLIENT, g_self_id, seal_wall_ms(), &g_hello,
	                     &g_hello_len) != 0) {
		fprintf(stderr, "frametool: cannot build HELLO\n");
		return 1;
	}
	sodium_memzero(&in, sizeof(in));
	nng_socket s = sock_open();
	uint32_t sent = 0;
	int welcomed = 0;
	/* the node closes a connection that keeps replaying (after 16): the
	 * socket dials again, and a wave cut short goes on from where it was,
	 * until every copy is out or three waves in a row get nothing out */
	int stuck = 0;
	while (sent < n && stuck < 3) {
		uint32_t k = n - sent < FRAMETOOL_WAVE ? n - sent : FRAMETOOL_WAVE;
		int a = send_bulk(s, k, make_hello_copy, g_hello_len);
		sent += g_bulk_sent;
		if (a >= 0)
			welcomed += a;
		stuck = g_bulk_sent ? 0 : stuck + 1;
		if (a < 0)
			usleep(200 * 1000);
	}
	printf("hello-flood: %" PRIu32 " sent, %d answered\n", sent, welcomed);
	fflush(stdout);
	free(g_hello);
	/* nng 1.5.2 can hang in nng_close while a connection is half set up
	 * (nanomsg/nng#1813): the result is out, so a stuck close ends the tool */
	g_alarm_code = sent == n ? 0 : 1;
	signal(SIGALRM, alarm_exit);
	alarm(10);
	nng_close(s);
	seal_keyring_free(kr);
	return sent == n ? 0 : 1;
}

/* A Gossip push-pull carrying one alive member: from the session's own id,
 * or (impostor) claiming another member's id. Prints "ack" or the error
 * code's name; exit 0 when the answer is the expected one. */
static int mode_gossip(const char *secret, const char *how, const char *expect)
{
	int as_node = strcmp(how, "node") == 0 || strcmp(how, "impostor") == 0;
	struct seal_keyring *kr = as_node ? node_keyring_from_file(secret) : keyring_from_file(secret);
	struct seal_session sess;
	nng_socket s = sock_open();
	handshake_as(s, kr, as_node ? SEAL_ROLE_NODE : SEAL_ROLE_CLIENT, &sess);
	uint8_t from[SEAL_ID_BYTES];
	memcpy(from, g_self_id, sizeof(from));
	if (strcmp(how, "impostor") == 0)
		randombytes_buf(from, sizeof(from));
	Chorus__SwimUpdate u = CHORUS__SWIM_UPDATE__INIT, *up = &u;
	u.id.data = from;
	u.id.len = SEAL_ID_BYTES;
	u.from.data = from;
	u.from.len = SEAL_ID_BYTES;
	u.incarnation = 1;
	u.state = 0;
	u.proto_version = 1;
	u.capacity = 4;
	u.name = (char *)"frametool";
	u.addr = (char *)"tcp://127.0.0.1:9";
	Chorus__Gossip g = CHORUS__GOSSIP__INIT;
	g.type = 5; /* SWIM_MSG_PUSH_PULL */
	g.proto_version = 1;
	g.from.data = from;
	g.from.len = SEAL_ID_BYTES;
	g.from_addr = (char *)"tcp://127.0.0.1:9";
	g.n_states = 1;
	g.states = &up;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.version = CH_PROTOCOL_VERSION;
	env.sender.data = g_self_id;
	env.sender.len = SEAL_ID_BYTES;
	env.request_id = ++g_request_id;
	env.body_case = CHORUS__ENVELOPE__BODY_GOSSIP;
	env.gossip = &g;
	size_t n = chorus__envelope__get_packed_size(&env);
	uint8_t *plain = malloc(n ? n : 1), *frame = malloc(n + SEAL_OVERHEAD_BYTES);
	if (!plain || !frame)
		return 1;
	chorus__envelope__pack(&env, plain);
	seal_frame_seal(&sess, plain, n, frame);
	free(plain);
	nng_msg *reply = NULL;
	char got[64] = "no answer";
	if (xchg(s, frame, n + SEAL_OVERHEAD_BYTES, FRAMETOOL_ANSWER_MS, &reply) == 1) {
		uint8_t *p = NULL;
		size_t plen = 0;
		if (seal_frame_open(&sess, nng_msg_body(reply), nng_msg_len(reply), &p, &plen) ==
		    SEAL_OK) {
			Chorus__Envelope *e = chorus__envelope__unpack(NULL, plen, p);
			if (e && e->body_case == CHORUS__ENVELOPE__BODY_GOSSIP_ACK)
				snprintf(got, sizeof(got), "ack");
			else if (e && e->body_case == CHORUS__ENVELOPE__BODY_ERROR)
				snprintf(got, sizeof(got), "%s", ch_strerror(e->error->code));
			if (e)
				chorus__envelope__free_unpacked(e, NULL);
		}
		nng_msg_free(reply);
	}
	free(frame);
	nng_close(s);
	seal_keyring_free(kr);
	printf("gossip as %s: %s\n", how, got);
	return strstr(got, expect) ? 0 : 1;
}

/* N awaits parked on one long task from one client; the test restarts the
 * node meanwhile (it writes a line to our stdin once it has). Every await
 * must be answered (the node restarted: each gets a REJECT, the client
 * handshakes again and resends), none may hang. */
struct awaiter {
	ch_client *c;
	uint64_t task_id;
	atomic_int *answered, *ok;
};

static void *await_one(void *arg)
{
	struct awaiter *a = arg;
	struct ch_result *r = NULL;
	char err[256];
	int code = ch_await(a->c, a->task_id, 60000, &r, err, sizeof(err));
	atomic_fetch_add(a->answered, 1);
	if (code == CH_OK)
		atomic_fetch_add(a->ok, 1);
	ch_result_free(r);
	return NULL;
}

static int mode_restart_awaits(const char *secret, uint32_t n)
{
	ch_client *c = NULL;
	char err[256];
	struct ch_client_options o = {.timeout_ms = 5000, .contexts = n + 4};
	if (ch_client_connect(&c, g_addr, secret, &o, err, sizeof(err)) != CH_OK) {
		printf("connect: %s\n", err);
		return 3;
	}
	uint64_t tid = 0;
	if (ch_submit(c, "sleep", "600000", 6, NULL, &tid, err, sizeof(err)) != CH_OK) {
		printf("submit: %s\n", err);
		ch_client_close(c);
		return 1;
	}
	atomic_int answered = 0, ok = 0;
	pthread_t *th = calloc(n, sizeof(*th));
	struct awaiter a = {c, tid, &answered, &ok};
	for (uint32_t i = 0; i < n; i++)
		pthread_create(&th[i], NULL, await_one, &a);
	/* give the awaits time to reach the node and park */
	struct timespec ts = {1, 0};
	nanosleep(&ts, NULL);
	printf("READY %" PRIu32 "\n", n);
	char line[32];
	if (!fgets(line, sizeof(line), stdin)) {
		printf("no go line\n");
		return 2;
	}
	uint64_t t0 = now_ms();
	while ((uint32_t)atomic_load(&answered) < n && now_ms() - t0 < 30000) {
		struct timespec d = {0, 50 * 1000 * 1000};
		nanosleep(&d, NULL);
	}
	int got = atomic_load(&answered);
	printf("answered %d/%" PRIu32 " in %" PRIu64 " ms (ok %d)\n", got, n, now_ms() - t0,
	       atomic_load(&ok));
	fflush(stdout);
	/* threads still blocked would hold the client: end here */
	_exit((uint32_t)got == n ? 0 : 1);
}

static int mode_wrong_secret(void)
{
	uint8_t secret[SEAL_SECRET_BYTES];
	randombytes_buf(secret, sizeof(secret));
	struct seal_keyring *kr = seal_keyring_from_secrets(secret, 1);
	sodium_memzero(secret, sizeof(secret));
	if (!kr)
		return 1;
	nng_socket s = sock_open();
	struct seal_initiator in;
	uint8_t *hello = NULL;
	size_t hello_len = 0;
	if (seal_hello_build(&in, kr, SEAL_ROLE_CLIENT, g_self_id, seal_wall_ms(), &hello, &hello_len) !=
	    0) {
		seal_keyring_free(kr);
		return 1;
	}
	nng_msg *reply = NULL;
	int rc = xchg(s, hello, hello_len, FRAMETOOL_ANSWER_MS, &reply);
	free(hello);
	int bad = 0;
	if (rc != 1) {
		printf("wrong-secret: UNEXPECTED: no REJECT (%s)\n", rc == 0 ? "timeout" : "error");
		bad = 1;
	} else {
		char err[SEAL_REASON_BYTES_MAX + 64] = "";
		struct seal_session sess;
		int kind = 0;
		uint64_t sid = 0;
		(void)seal_frame_peek(nng_msg_body(reply), nng_msg_len(reply), SEAL_HANDSHAKE_BYTES_MAX,
		                      &kind, &sid);
		int v = seal_welcome_accept(&in, kr, NULL, nng_msg_body(reply), nng_msg_len(reply),
		                            &sess, err, sizeof(err));
		if (kind == SEAL_KIND_REJECT && v != SEAL_OK) {
			printf("wrong-secret: REJECT: %s\n", err);
		} else {
			printf("wrong-secret: UNEXPECTED: kind %d verdict %s\n", kind,
			       seal_verdict_name(v));
			bad = 1;
		}
		nng_msg_free(reply);
	}
	sodium_memzero(&in, sizeof(in));
	seal_keyring_free(kr);
	nng_close(s);
	return bad;
}

/* What each hammer call submits. */
struct hammer_spec {
	uint32_t sleep_ms;      /* > 0: "sleep" tasks (the node parks each wait) */
	uint32_t echo_bytes;    /* > 0: "echo" tasks with payloads this long */
	uint32_t timeout_ms;    /* client timeout, and the wait of each call */
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int mode_hammer(const char *secret, uint32_t n, const struct hammer_spec *hs)
{
	ch_client *c = NULL;
	char err[512] = "";
	struct ch_client_options o = {.timeout_ms = hs->timeout_ms};
	int rc = ch_client_connect(&c, g_addr, secret, &o, err, sizeof(err));
	if (rc != CH_OK) {
		printf("hammer: connect failed: %s (%s)\n", ch_strerror(rc), err);
		return 1;
	}
	size_t cap = hs->echo_bytes > 64 ? hs->echo_bytes : 64;
	char *payload = malloc(cap);
	if (!payload) {
		ch_client_close(c);
		return 1;
	}
	uint32_t failures = 0;
	uint64_t slowest_ms = 0, total_ms = 0;
	uint64_t *lat_us = calloc(n, sizeof(*lat_us));
	if (!lat_us) {
		free(payload);
		ch_client_close(c);
		return 1;
	}
	for (uint32_t i = 0; i < n; i++) {
		uint64_t t0 = now_ms();
		struct timespec ts0, ts1;
		clock_gettime(CLOCK_MONOTONIC, &ts0);
		size_t plen, want_len;
		if (hs->sleep_ms) {
			plen = (size_t)snprintf(payload, cap, "%" PRIu32, hs->sleep_ms);
			want_len = 0;
		} else if (hs->echo_bytes) {
			for (size_t k = 0; k < hs->echo_bytes; k++)
				payload[k] = (char)('a' + (i + k) % 26);
			plen = want_len = hs->echo_bytes;
		} else {
			plen = want_len = (size_t)snprintf(payload, cap, "hammer-%" PRIu32, i);
		}
		struct ch_result *r = NULL;
		rc = ch_submit_await(c, hs->sleep_ms ? "sleep" : "echo", payload, plen, NULL,
		                     hs->timeout_ms, &r, err, sizeof(err));
		if (rc != CH_OK) {
			printf("fail %" PRIu32 ": %s (%s)\n", i, ch_strerror(rc), err);
			failures++;
		} else if (r->state != CH_TASK_SUCCEEDED || r->output_len != want_len ||
		           memcmp(r->output, payload, want_len) != 0) {
			printf("fail %" PRIu32 ": task %" PRIu64 " state %s output of %zu bytes\n", i,
			       r->task_id, ch_task_state_name(r->state), r->output_len);
			failures++;
		}
		ch_result_free(r);
		clock_gettime(CLOCK_MONOTONIC, &ts1);
		lat_us[i] = (uint64_t)(ts1.tv_sec - ts0.tv_sec) * 1000000u +
		            (uint64_t)((ts1.tv_nsec - ts0.tv_nsec) / 1000);
		uint64_t took_ms = now_ms() - t0;
		if (took_ms >= FRAMETOOL_SLOW_CALL_MS)
			printf("slow %" PRIu32 ": %" PRIu64 " ms\n", i, took_ms);
		total_ms += took_ms;
		if (took_ms > slowest_ms)
			slowest_ms = took_ms;
	}
	free(payload);
	ch_client_close(c);
	qsort(lat_us, n, sizeof(*lat_us), cmp_u64);
	/* nearest-rank percentiles of the calls' latencies */
	uint64_t p50 = lat_us[(n - 1) * 50 / 100], p99 = lat_us[(n - 1) * 99 / 100];
	free(lat_us);
	if (failures) {
		printf("failed %" PRIu32 " of %" PRIu32 "\n", failures, n);
		return 1;
	}
	printf("ok %" PRIu32 " (%" PRIu64 " ms in all, slowest call %" PRIu64 " ms, p50 %" PRIu64
	       " us, p99 %" PRIu64 " us)\n",
	       n, total_ms, slowest_ms, p50, p99);
	return 0;
}

#define FRAMETOOL_SUBMIT_TIMEOUT_MS 2000

static int mode_submit(const char *secret, uint32_t n, const char *handler, const char *payload,
                       int transient, uint32_t pause_ms)
{
	ch_client *c = NULL;
	char err[512] = "";
	struct ch_client_options o = {.timeout_ms = FRAMETOOL_SUBMIT_TIMEOUT_MS};
	int rc = ch_client_connect(&c, g_addr, secret, &o, err, sizeof(err));
	if (rc != CH_OK) {
		printf("error connect: %s (%s)\n", ch_strerror(rc), err);
		return 1;
	}
	struct ch_task_opts to = {.restart = transient ? CH_RESTART_TRANSIENT : CH_RESTART_TEMPORARY};
	uint32_t done = 0;
	int bad = 0;
	for (; done < n; done++) {
		uint64_t id = 0;
		rc = ch_submit(c, handler, payload, strlen(payload), &to, &id, err, sizeof(err));
		if (rc != CH_OK) {
			printf("error %" PRIu32 ": %s (%s)\n", done, ch_strerror(rc), err);
			bad = 1;
			break;
		}
		printf("id %" PRIu64 "\n", id);
		if (pause_ms) {
			struct timespec ts = {pause_ms / 1000u, (long)(pause_ms % 1000u) * 1000000L};
			nanosleep(&ts, NULL);
		}
	}
	printf("submitted %" PRIu32 "\n", done);
	ch_client_close(c);
	return bad;
}

/* "100k", "2M", "512" -> bytes; 0 when bad. */
static size_t parse_size(const char *s)
{
	char *end = NULL;
	unsigned long long v = strtoull(s, &end, 10);
	if (end == s)
		return 0;
	if (*end == 'k' || *end == 'K')
		v *= 1024ull, end++;
	else if (*end == 'm' || *end == 'M')
		v *= 1024ull * 1024ull, end++;
	if (*end || v > FRAMETOOL_SIZE_MAX)
		return 0;
	return (size_t)v;
}

static uint32_t parse_count(const char *s)
{
	char *end = NULL;
	unsigned long v = strtoul(s, &end, 10);
	if (end == s || *end || v == 0 || v > FRAMETOOL_COUNT_MAX)
		return 0;
	return (uint32_t)v;
}

static int usage(void)
{
	fprintf(stderr,
	        "usage: chorus_frametool ADDR SECRET_FILE MODE [ARG]\n"
	        "modes: garbage [N] | truncated [N] | oversized SIZE | tampered | replay |\n"
	        "       wrong-secret | forge-resend | placed-twice | stream-bad | hello-flood N |\n"
	        "       dup [N] | gossip client|node|impostor EXPECT | restart-awaits N |\n"
	        "       hammer N [SLEEP_MS] |\n"
	        "       hammer-big N BYTES |\n"
	        "       submit N HANDLER PAYLOAD [temporary|transient [PAUSE_MS]] |\n"
	        "       compute-bad | cache-leads N PREFIX |\n"
	        "       compute-crowd N SCRIPT COMPUTE_KEYS PLAIN_KEYS\n"
	        "exit: 0 every outcome as expected, 1 one was not, 2 usage, 3 node unreachable\n");
	return 2;
}

/* ---- stream-bad: a streamed batch fed wrong chunks through chi_request ---- */

struct stream_ans {
	int code;
	char err[256];
	uint32_t next_index, room;
	int closed;
};

static struct stream_ans stream_append(ch_client *c, uint64_t batch_id, uint32_t start, uint32_t n,
                                       size_t payload_len, int close)
{
	struct stream_ans a = {0};
	ProtobufCBinaryData *items = calloc(n ? n : 1, sizeof(*items));
	uint8_t *bytes = calloc(1, payload_len ? payload_len : 1);
	if (!items || !bytes) {
		free(items);
		free(bytes);
		a.code = CH_ERR_NOMEM;
		return a;
	}
	for (uint32_t i = 0; i < n; i++) {
		items[i].data = bytes;
		items[i].len = payload_len;
	}
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	Chorus__MapAppendReq ar = CHORUS__MAP_APPEND_REQ__INIT;
	ar.batch_id = batch_id;
	ar.start_index = start;
	ar.n_payloads = n;
	ar.payloads = items;
	ar.close = close;
	env.body_case = CHORUS__ENVELOPE__BODY_MAP_APPEND;
	env.map_append = &ar;
	Chorus__Envelope *e = NULL;
	a.code = chi_request(c, &env, 0, &e, a.err, sizeof(a.err));
	if (a.code == CH_OK && e->body_case == CHORUS__ENVELOPE__BODY_MAP_APPEND_RESP) {
		a.next_index = e->map_append_resp->next_index;
		a.room = e->map_append_resp->room;
		a.closed = e->map_append_resp->closed;
	} else if (a.code == CH_OK) {
		a.code = CH_ERR_PROTOCOL;
	}
	if (e)
		chorus__envelope__free_unpacked(e, NULL);
	free(items);
	free(bytes);
	return a;
}

static int stream_expect(const char *what, struct stream_ans a, int code, int64_t next)
{
	int ok = a.code == code && (next < 0 || a.next_index == (uint32_t)next);
	printf("%s: %s (%s) next %u room %u closed %d: %s\n", what, ch_strerror(a.code),
	       a.code ? a.err : "ok", a.next_index, a.room, a.closed, ok ? "as expected" : "WRONG");
	return ok;
}

/* Counts the results of batch_id in input order (each index once). */
static uint32_t stream_results(ch_client *c, uint64_t batch_id, uint32_t *total)
{
	uint32_t from = 0;
	for (int round = 0; round < 100; round++) {
		Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
		Chorus__BatchAwaitReq ba = CHORUS__BATCH_AWAIT_REQ__INIT;
		ba.batch_id = batch_id;
		ba.from_index = from;
		ba.wait_ms = 2000;
		env.body_case = CHORUS__ENVELOPE__BODY_BATCH_AWAIT;
		env.batch_await = &ba;
		Chorus__Envelope *e = NULL;
		char err[256];
		if (chi_request(c, &env, 0, &e, err, sizeof(err)) != CH_OK) {
			printf("batch await: %s\n", err);
			return from;
		}
		const Chorus__BatchAwaitResp *r = e->batch_await_resp;
		*total = r->total;
		for (size_t i = 0; i < r->n_results; i++)
			if (r->results[i]->batch_index == from)
				from++;
		int over = !r->open && from >= r->total;
		chorus__envelope__free_unpacked(e, NULL);
		if (over)
			break;
	}
	return from;
}

static int mode_stream_bad(const char *secret)
{
	ch_client *c = NULL;
	char err[256];
	struct ch_client_options o = {.timeout_ms = 5000};
	if (ch_client_connect(&c, g_addr, secret, &o, err, sizeof(err)) != CH_OK) {
		printf("connect: %s\n", err);
		return 3;
	}
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	Chorus__MapReq mr = CHORUS__MAP_REQ__INIT;
	mr.handler = "echo";
	mr.stream = 1;
	mr.window = 8;
	env.body_case = CHORUS__ENVELOPE__BODY_MAP;
	env.map = &mr;
	Chorus__Envelope *e = NULL;
	if (chi_request(c, &env, 0, &e, err, sizeof(err)) != CH_OK ||
	    e->body_case != CHORUS__ENVELOPE__BODY_MAP_RESP) {
		printf("open: %s\n", err);
		ch_client_close(c);
		return 1;
	}
	uint64_t b = e->map_resp->batch_id;
	printf("opened batch %" PRIu64 " window %u room %u chunk_bytes_max %u\n", b,
	       e->map_resp->window, e->map_resp->room, e->map_resp->chunk_bytes_max);
	chorus__envelope__free_unpacked(e, NULL);
	int ok = 1;
	ok &= stream_expect("gap (start 5 of 0)", stream_append(c, b, 5, 2, 4, 0), CH_ERR_INVALID, -1);
	ok &= stream_expect("first chunk", stream_append(c, b, 0, 3, 4, 0), CH_OK, 3);
	ok &= stream_expect("the same chunk again", stream_append(c, b, 0, 3, 4, 0), CH_OK, 3);
	ok &= stream_expect("overlapping chunk", stream_append(c, b, 2, 3, 4, 0), CH_OK, 5);
	/* 20 more: the window (8 unfinished) takes only what it has room for */
	struct stream_ans a = stream_append(c, b, 5, 20, 4, 0);
	ok &= stream_expect("chunk over the window", a, CH_OK, -1);
	ok &= a.next_index > 5 && a.next_index <= 13;
	uint32_t next = a.next_index;
	ok &= stream_expect("unknown batch", stream_append(c, b + 1000000, 0, 1, 4, 0),
	                    CH_ERR_NOT_FOUND, -1);
	ok &= stream_expect("oversized chunk (65,537 tasks)",
	                    stream_append(c, b, next, 65537, 0, 0), CH_ERR_TOO_LARGE, -1);
	ok &= stream_expect("close", stream_append(c, b, next, 0, 0, 1), CH_OK, next);
	ok &= stream_expect("the close again", stream_append(c, b, next, 0, 0, 1), CH_OK, next);
	ok &= stream_expect("chunk after the close", stream_append(c, b, next, 1, 4, 0),
	                    CH_ERR_CLOSED, -1);
	uint32_t total = 0;
	uint32_t got = stream_results(c, b, &total);
	printf("results: %u in order of a total of %u\n", got, total);
	ok &= got == next && total == next;
	ch_client_close(c);
	printf("stream-bad: %s\n", ok ? "every answer as expected" : "WRONG");
	return ok ? 0 : 1;
}

/* ---- compute-bad: get-or-compute requests libchorus would not send ---- */

static int compute_expect(ch_client *c, const char *what, const Chorus__CacheReq *req, int code,
                          const char *want)
{
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_CACHE;
	env.cache = (Chorus__CacheReq *)req;
	Chorus__Envelope *e = NULL;
	char err[256] = "";
	int got = chi_request(c, &env, 0, &e, err, sizeof(err));
	if (e)
		chorus__envelope__free_unpacked(e, NULL);
	int ok = got == code && strstr(err, want) != NULL;
	printf("%s: %s (%s): %s\n", what, ch_strerror(got), err, ok ? "as expected" : "WRONG");
	return ok;
}

static int mode_compute_bad(const char *secret)
{
	ch_client *c = NULL;
	char err[256];
	struct ch_client_options o = {.timeout_ms = 5000};
	if (ch_client_connect(&c, g_addr, secret, &o, err, sizeof(err)) != CH_OK) {
		printf("connect: %s\n", err);
		return 3;
	}
	Chorus__CacheReq req = CHORUS__CACHE_REQ__INIT;
	req.op = CHORUS__CACHE_OP__CACHE_GET_OR_COMPUTE;
	req.key.data = (uint8_t *)"bad";
	req.key.len = 3;
	int ok = 1;
	ok &= compute_expect(c, "no compute", &req, CH_ERR_INVALID, "needs a handler");
	Chorus__TaskSpec spec = CHORUS__TASK_SPEC__INIT;
	req.compute = &spec;
	ok &= compute_expect(c, "an empty handler", &req, CH_ERR_INVALID, "needs a handler");
	spec.handler = "echo";
	req.ttl_ms = -5;
	ok &= compute_expect(c, "a negative ttl", &req, CH_ERR_INVALID, "a ttl of 0");
	req.ttl_ms = 0;
	req.key.len = 0;
	ok &= compute_expect(c, "no key", &req, CH_ERR_INVALID, "a key of 1 to");
	req.key.len = 3;
	req.forwarded = 1;
	ok &= compute_expect(c, "forwarded by a client", &req, CH_ERR_DENIED, "only a node");
	ch_client_close(c);
	printf("compute-bad: %s\n", ok ? "every answer as expected" : "WRONG");
	return ok ? 0 : 1;
}

/* ---- cache-leads: which keys a node leads, asked as a node ---- */

static int mode_cache_leads(const char *secret, uint32_t n, const char *prefix)
{
	struct seal_keyring *kr = node_keyring_from_file(secret);
	ch_client *c = NULL;
	char err[256] = "";
	struct ch_client_options o = {.timeout_ms = 5000};
	if (chi_client_open_lazy(&c, g_addr, kr, SEAL_ROLE_NODE, NULL, &o, err, sizeof(err)) !=
	    CH_OK) {
		printf("connect: %s\n", err);
		seal_keyring_free(kr);
		return 3;
	}
	chi_client_set_self_id(c, g_self_id);
	int ok = 1;
	for (uint32_t i = 0; i < n && ok; i++) {
		char key[128];
		snprintf(key, sizeof(key), "%s%" PRIu32, prefix, i);
		Chorus__CacheReq req = CHORUS__CACHE_REQ__INIT;
		req.op = CHORUS__CACHE_OP__CACHE_GET;
		req.key.data = (uint8_t *)key;
		req.key.len = strlen(key);
		req.forwarded = 1;
		Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
		env.body_case = CHORUS__ENVELOPE__BODY_CACHE;
		env.cache = &req;
		Chorus__Envelope *e = NULL;
		int code = chi_request(c, &env, 0, &e, err, sizeof(err));
		if (e)
			chorus__envelope__free_unpacked(e, NULL);
		if (code == CH_OK) {
			printf("lead %s\n", key);
		} else if (code == CH_ERR_MOVED) {
			printf("elsewhere %s\n", key);
		} else {
			printf("error %s: %s (%s)\n", key, ch_strerror(code), err);
			ok = 0;
		}
	}
	ch_client_close(c);
	seal_keyring_free(kr);
	return ok ? 0 : 1;
}

/* ---- compute-crowd: many callers of a slow compute, plain traffic beside ---- */

#define CROWD_ERRORS_MAX 16           /* distinct error lines kept */
#define CROWD_KEYS_MAX 256
#define CROWD_SAMPLES_MAX 200000u     /* plain operations timed */
#define CROWD_CALL_MS_MAX 120000u     /* a caller's own limit (the task's is its script's) */

struct crowd {
	ch_client *c;
	const char *script;
	char *keys[CROWD_KEYS_MAX];
	uint32_t n_keys;
	uint64_t t0_ms;
	pthread_mutex_t mu;
	/* guarded by mu */
	uint32_t answered, ok, full, other;
	uint64_t first_ms, last_ms;   /* after t0 */
	char *values[CROWD_KEYS_MAX]; /* the first value each key got */
	uint32_t mismatched;          /* callers that got another value */
	uint32_t computed;            /* answers with computed = 1 */
	char errors[CROWD_ERRORS_MAX][200];
	uint32_t n_errors;
};

struct crowd_caller {
	struct crowd *cr;
	uint32_t index;
};

/* Remembers one error line (each text once). Call with mu held. */
static void crowd_note_error(struct crowd *cr, const char *who, int code, const char *err)
{
	char line[200];
	snprintf(line, sizeof(line), "%s error: %s: %s", who, ch_strerror(code), err);
	for (uint32_t i = 0; i < cr->n_errors; i++)
		if (strcmp(cr->errors[i], line) == 0)
			return;
	if (cr->n_errors < CROWD_ERRORS_MAX)
		memcpy(cr->errors[cr->n_errors++], line, sizeof(line));
}

static void *crowd_call(void *arg)
{
	struct crowd_caller *cc = arg;
	struct crowd *cr = cc->cr;
	uint32_t k = cc->index % cr->n_keys;
	const char *argv[] = {"/bin/sh", "-c", cr->script, NULL};
	struct ch_task_opts topts = {.timeout_ms = CROWD_CALL_MS_MAX, .argv = argv};
	void *value = NULL;
	size_t value_len = 0;
	int computed = 0;
	char err[256] = "";
	int code = ch_cache_get_or_compute(cr->c, NULL, cr->keys[k], strlen(cr->keys[k]), "exec",
	                                   NULL, 0, &topts, 0, &value, &value_len, &computed, NULL,
	                                   err, sizeof(err));
	uint64_t at = now_ms() - cr->t0_ms;
	pthread_mutex_lock(&cr->mu);
	if (cr->answered == 0 || at < cr->first_ms)
		cr->first_ms = at;
	if (at > cr->last_ms)
		cr->last_ms = at;
	cr->answered++;
	if (code == CH_OK) {
		cr->ok++;
		cr->computed += computed != 0;
		char *v = strndup(value ? value : "", value_len);
		if (!cr->values[k])
			cr->values[k] = v;
		else {
			if (!v || strcmp(cr->values[k], v) != 0)
				cr->mismatched++;
			free(v);
		}
	} else {
		if (code == CH_ERR_FULL)
			cr->full++;
		else
			cr->other++;
		crowd_note_error(cr, "crowd", code, err);
	}
	pthread_mutex_unlock(&cr->mu);
	free(value);
	return NULL;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Splits a comma-separated list into at most max strings (pointers into
 * the copy *buf, which the caller frees). */
static uint32_t split_keys(const char *list, char **out, uint32_t max, char **buf)
{
	*buf = strdup(list);
	uint32_t n = 0;
	char *save = NULL;
	for (char *t = *buf ? strtok_r(*buf, ",", &save) : NULL; t && n < max;
	     t = strtok_r(NULL, ",", &save))
		out[n++] = t;
	return n;
}

static int mode_compute_crowd(const char *secret, uint32_t n, const char *script,
                              const char *compute_keys, const char *plain_keys)
{
	static struct crowd cr;
	char *kbuf = NULL, *pbuf = NULL;
	char *plain[CROWD_KEYS_MAX];
	cr.script = script;
	cr.n_keys = split_keys(compute_keys, cr.keys, CROWD_KEYS_MAX, &kbuf);
	uint32_t n_plain = split_keys(plain_keys, plain, CROWD_KEYS_MAX, &pbuf);
	if (cr.n_keys == 0 || n_plain == 0) {
		free(kbuf);
		free(pbuf);
		return usage();
	}
	pthread_mutex_init(&cr.mu, NULL);
	char err[256] = "";
	ch_client *pc = NULL;
	struct ch_client_options o = {.timeout_ms = 5000, .contexts = n + 4};
	struct ch_client_options po = {.timeout_ms = 5000};
	if (ch_client_connect(&cr.c, g_addr, secret, &o, err, sizeof(err)) != CH_OK ||
	    ch_client_connect(&pc, g_addr, secret, &po, err, sizeof(err)) != CH_OK) {
		printf("connect: %s\n", err);
		return 3;
	}
	struct crowd_caller *callers = calloc(n, sizeof(*callers));
	pthread_t *th = calloc(n, sizeof(*th));
	uint64_t *samples = calloc(CROWD_SAMPLES_MAX, sizeof(*samples));
	if (!callers || !th || !samples) {
		printf("out of memory\n");
		return 1;
	}
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256u * 1024u);
	cr.t0_ms = now_ms();
	uint32_t started = 0;
	for (uint32_t i = 0; i < n; i++) {
		callers[i].cr = &cr;
		callers[i].index = i;
		if (pthread_create(&th[i], &attr, crowd_call, &callers[i]) != 0)
			break;
		started++;
	}
	pthread_attr_destroy(&attr);
	/* plain traffic through the same node until every caller is answered */
	uint32_t n_samples = 0, plain_failed = 0, plain_ops = 0;
	uint64_t deadline = cr.t0_ms + CROWD_CALL_MS_MAX + 30000u;
	for (uint32_t i = 0; now_ms() < deadline; i++) {
		pthread_mutex_lock(&cr.mu);
		uint32_t answered = cr.answered;
		pthread_mutex_unlock(&cr.mu);
		if (answered >= started)
			break;
		const char *key = plain[i % n_plain];
		char val[64];
		snprintf(val, sizeof(val), "plain-%" PRIu32, i);
		uint64_t t = now_ms();
		int code = ch_cache_put(pc, NULL, key, strlen(key), val, strlen(val), 0, 0, NULL, NULL,
		                        err, sizeof(err));
		void *got = NULL;
		size_t got_len = 0;
		if (code == CH_OK)
			code = ch_cache_get(pc, NULL, key, strlen(key), &got, &got_len, NULL, NULL, err,
			                    sizeof(err));
		if (code == CH_OK && (got_len != strlen(val) || memcmp(got, val, got_len) != 0)) {
			code = CH_ERR_PROTOCOL;
			snprintf(err, sizeof(err), "read back another value");
		}
		free(got);
		plain_ops += 2;
		if (n_samples < CROWD_SAMPLES_MAX)
			samples[n_samples++] = now_ms() - t;
		if (code != CH_OK) {
			plain_failed++;
			pthread_mutex_lock(&cr.mu);
			crowd_note_error(&cr, "plain", code, err);
			pthread_mutex_unlock(&cr.mu);
		}
	}
	pthread_mutex_lock(&cr.mu);
	int all_answered = cr.answered >= started;
	pthread_mutex_unlock(&cr.mu);
	if (!all_answered) {
		printf("RESULT {\"callers\": %" PRIu32 ", \"answered\": %" PRIu32 ", \"hung\": true}\n",
		       n, cr.answered);
		fflush(stdout);
		_exit(1); /* blocked threads hold the client */
	}
	for (uint32_t i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	qsort(samples, n_samples, sizeof(*samples), u64_cmp);
	uint64_t p50 = n_samples ? samples[n_samples / 2] : 0;
	uint64_t p99 = n_samples ? samples[(uint64_t)n_samples * 99 / 100] : 0;
	uint64_t mx = n_samples ? samples[n_samples - 1] : 0;
	for (uint32_t i = 0; i < cr.n_errors; i++)
		printf("%s\n", cr.errors[i]);
	printf("RESULT {\"callers\": %" PRIu32 ", \"started\": %" PRIu32 ", \"ok\": %" PRIu32
	       ", \"full\": %" PRIu32 ", \"other\": %" PRIu32 ", \"computed\": %" PRIu32
	       ", \"mismatched\": %" PRIu32 ", \"keys\": %" PRIu32 ", \"first_ms\": %" PRIu64
	       ", \"last_ms\": %" PRIu64 ", \"plain_ops\": %" PRIu32 ", \"plain_failed\": %" PRIu32
	       ", \"plain_p50_ms\": %" PRIu64 ", \"plain_p99_ms\": %" PRIu64
	       ", \"plain_max_ms\": %" PRIu64 "}\n",
	       n, started, cr.ok, cr.full, cr.other, cr.computed, cr.mismatched, cr.n_keys,
	       cr.first_ms, cr.last_ms, plain_ops, plain_failed, p50, p99, mx);
	for (uint32_t i = 0; i < cr.n_keys; i++)
		free(cr.values[i]);
	free(callers);
	free(th);
	free(samples);
	free(kbuf);
	free(pbuf);
	ch_client_close(pc);
	ch_client_close(cr.c);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 4)
		return usage();
	if (sodium_init() < 0)
		return 1;
	g_addr = argv[1];
	const char *secret = argv[2];
	const char *mode = argv[3];
	const char *arg = argc > 4 ? argv[4] : NULL;
	randombytes_buf(g_self_id, sizeof(g_self_id));
	setvbuf(stdout, NULL, _IOLBF, 0);

	int rc;
	if (strcmp(mode, "garbage") == 0 || strcmp(mode, "truncated") == 0) {
		uint32_t n = arg ? parse_count(arg) : 1;
		if (n == 0)
			return usage();
		int g = mode[0] == 'g';
		rc = mode_bulk(mode, n, g ? make_garbage : make_truncated,
		               g ? FRAMETOOL_GARBAGE_BYTES : FRAMETOOL_TRUNCATED_BYTES);
	} else if (strcmp(mode, "oversized") == 0) {
		g_oversize_bytes = arg ? parse_size(arg) : 0;
		if (g_oversize_bytes < SEAL_OVERHEAD_BYTES)
			return usage();
		rc = mode_bulk(mode, 1, make_oversized, g_oversize_bytes);
	} else if (strcmp(mode, "tampered") == 0) {
		rc = mode_tampered(secret);
	} else if (strcmp(mode, "replay") == 0) {
		rc = mode_replay(secret);
	} else if (strcmp(mode, "dup") == 0) {
		uint32_t n = arg ? parse_count(arg) : 1;
		if (n == 0)
			return usage();
		rc = mode_dup(secret, n);
	} else if (strcmp(mode, "wrong-secret") == 0) {
		rc = mode_wrong_secret();
	} else if (strcmp(mode, "forge-resend") == 0) {
		rc = mode_forge_resend(secret);
	} else if (strcmp(mode, "placed-twice") == 0) {
		rc = mode_placed_twice(secret);
	} else if (strcmp(mode, "restart-awaits") == 0) {
		uint32_t n = arg ? parse_count(arg) : 0;
		if (n == 0 || n > 500)
			return usage();
		rc = mode_restart_awaits(secret, n);
	} else if (strcmp(mode, "gossip") == 0) {
		if (argc < 6)
			return usage();
		rc = mode_gossip(secret, argv[4], argv[5]);
	} else if (strcmp(mode, "stream-bad") == 0) {
		rc = mode_stream_bad(secret);
	} else if (strcmp(mode, "compute-bad") == 0) {
		rc = mode_compute_bad(secret);
	} else if (strcmp(mode, "cache-leads") == 0) {
		uint32_t n = arg ? parse_count(arg) : 0;
		if (n == 0 || argc < 6)
			return usage();
		rc = mode_cache_leads(secret, n, argv[5]);
	} else if (strcmp(mode, "compute-crowd") == 0) {
		uint32_t n = arg ? parse_count(arg) : 0;
		if (n == 0 || n > 1000 || argc < 8)
			return usage();
		rc = mode_compute_crowd(secret, n, argv[5], argv[6], argv[7]);
	} else if (strcmp(mode, "hello-dump") == 0) {
		/* one HELLO made with the key, as hex: what an eavesdropper
		 * captures, for replay tools */
		struct seal_keyring *kr = keyring_from_file(secret);
		struct seal_initiator in;
		uint8_t *hello = NULL;
		size_t len = 0;
		if (seal_hello_build(&in, kr, SEAL_ROLE_CLIENT, g_self_id, seal_wall_ms(), &hello, &len) !=
		    0)
			return 1;
		sodium_memzero(&in, sizeof(in));
		for (size_t i = 0; i < len; i++)
			printf("%02x", hello[i]);
		printf("\n");
		free(hello);
		seal_keyring_free(kr);
		rc = 0;
	} else if (strcmp(mode, "hello-flood") == 0) {
		uint32_t n = arg ? parse_count(arg) : 0;
		if (n == 0)
			return usage();
		rc = mode_hello_flood(secret, n);
	} else if (strcmp(mode, "hammer") == 0) {
		uint32_t n = arg ? parse_count(arg) : 0;
		if (n == 0)
			return usage();
		struct hammer_spec hs = {.timeout_ms = FRAMETOOL_HAMMER_WAIT_MS};
		hs.sleep_ms = argc > 5 ? parse_count(argv[5]) : 0;
		if (argc > 5 && hs.sleep_ms == 0)
			return usage();
		rc = mode_hammer(secret, n, &hs);
	} else if (strcmp(mode, "hammer-big") == 0) {
		uint32_t n = arg ? parse_count(arg) : 0;
		size_t bytes = argc > 5 ? parse_size(argv[5]) : 0;
		if (n == 0 || bytes == 0 || bytes > FRAMETOOL_BIG_BYTES_MAX)
			return usage();
		struct hammer_spec hs = {.echo_bytes = (uint32_t)bytes,
		                         .timeout_ms = FRAMETOOL_BIG_TIMEOUT_MS};
		rc = mode_hammer(secret, n, &hs);
	} else if (strcmp(mode, "submit") == 0) {
		uint32_t n = arg ? parse_count(arg) : 0;
		if (n == 0 || argc < 7)
			return usage();
		int transient = argc > 7 && strcmp(argv[7], "transient") == 0;
		if (argc > 7 && !transient && strcmp(argv[7], "temporary") != 0)
			return usage();
		uint32_t pause_ms = argc > 8 ? parse_count(argv[8]) : 0;
		if (argc > 8 && pause_ms == 0)
			return usage();
		rc = mode_submit(secret, n, argv[5], argv[6], transient, pause_ms);
	} else {
		return usage();
	}
	return rc;
}
