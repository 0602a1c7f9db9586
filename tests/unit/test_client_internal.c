/*
 * test_client_internal.c - the internal request API of libchorus
 * (client_internal.h) against a fake node running in a thread.
 *
 * The fake node is an nng rep0 socket on an ipc:// address that does the
 * real handshake (seal_hello_accept), opens sealed requests and answers
 * Status and Await bodies; it can stay silent or forget its sessions. It may
 * be started after the client, to show that a lazy client waits for nothing.
 * Every wait is on a condition with a deadline, never a bare sleep.
 *
 * Tests that close a client with requests pending first wait until those
 * requests reached the node: nng 1.5.2 can leak a message, or hang in
 * nng_close, when a socket closes while a pipe is still sending or still
 * negotiating (nanomsg/nng#1543, #1813), which is nng's race, not ours.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "chorus.h"
#include "client_internal.h"
#include "proto/chorus.pb-c.h"
#include "proto/seal.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/util/platform.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FAKE_SESSIONS_MAX 64
#define TASK_ID_MISSING 404
/* A call that must not block is proved so by comparing it with the time a
 * blocking call would take (BLOCKING_TIMEOUT_MS, the timeout it would wait
 * for), not with a tight absolute bound: under valgrind, ASan and ctest -j2 on
 * two cores one call can take tens of milliseconds. */
#define BLOCKING_TIMEOUT_MS 2000
#define NONBLOCKING_CALL_MS_MAX (BLOCKING_TIMEOUT_MS / 4)
/* how late a timed-out request may be reported on a loaded machine */
#define TIMEOUT_SLACK_MS 3000
#define WAIT_MS_MAX 15000

struct fake_node {
	nng_socket sock;
	char url[128];
	struct seal_keyring *kr;
	struct seal_hello_guard *guard;
	uint8_t id[SEAL_ID_BYTES];
	pthread_t thread;
	bool running;
	atomic_bool stop;
	struct seal_session sessions[FAKE_SESSIONS_MAX]; /* ring */
	unsigned sessions_next;
	/* behaviour */
	atomic_bool silent;         /* read and drop everything */
	atomic_int forget_sessions; /* >0: refuse that many data frames as "unknown session" */
	pthread_mutex_t gate_mu;    /* hold: receive nothing (frames queue up) until released */
	pthread_cond_t gate_cv;
	bool hold;
	bool held; /* the node thread is waiting at the gate */
	/* observations */
	atomic_int frames;     /* every frame received, silent or not */
	atomic_int hellos;     /* HELLO frames seen, good or forged */
	atomic_int handshakes; /* sessions created */
	atomic_int requests;   /* data frames seen */
};

struct fixture {
	char dir[64];
	char secret_file[128];
	struct seal_keyring *kr;       /* of secret_file */
	struct seal_keyring *other_kr; /* another cluster's */
	struct fake_node node;
};

static int url_seq;

static struct seal_session *fake_find(struct fake_node *n, uint64_t id)
{
	for (unsigned i = 0; i < FAKE_SESSIONS_MAX; i++) {
		if (n->sessions[i].session_id == id && id != 0)
			return &n->sessions[i];
	}
	return NULL;
}

/* The packed answer to one request (malloc'd). */
static uint8_t *fake_answer(struct fake_node *n, const Chorus__Envelope *q, size_t *len)
{
	Chorus__Envelope a = CHORUS__ENVELOPE__INIT;
	a.version = CH_PROTOCOL_VERSION;
	a.sender.data = n->id;
	a.sender.len = SEAL_ID_BYTES;
	a.request_id = q->request_id;
	Chorus__Error er = CHORUS__ERROR__INIT;
	Chorus__StatusResp st = CHORUS__STATUS_RESP__INIT;
	Chorus__AwaitResp ar = CHORUS__AWAIT_RESP__INIT;
	Chorus__TaskResult res = CHORUS__TASK_RESULT__INIT;
	switch (q->body_case) {
	case CHORUS__ENVELOPE__BODY_STATUS:
		st.node_id = "n1";
		st.name = "fake";
		st.version = CH_VERSION_STRING;
		st.listen = n->url;
		st.succeeded = 40;
		a.body_case = CHORUS__ENVELOPE__BODY_STATUS_RESP;
		a.status_resp = &st;
		break;
	case CHORUS__ENVELOPE__BODY_AWAIT:
		if (q->await->task_id == TASK_ID_MISSING) {
			er.code = CH_ERR_NOT_FOUND;
			er.message = "no task 404 here";
			a.body_case = CHORUS__ENVELOPE__BODY_ERROR;
			a.error = &er;
			break;
		}
		res.task_id = q->await->task_id;
		res.state = CHORUS__TASK_STATE__TASK_SUCCEEDED;
		ar.result = &res;
		a.body_case = CHORUS__ENVELOPE__BODY_AWAIT_RESP;
		a.await_resp = &ar;
		break;
	default:
		er.code = CH_ERR_INVALID;
		er.message = "unexpected body";
		a.body_case = CHORUS__ENVELOPE__BODY_ERROR;
		a.error = &er;
		break;
	}
	*len = chorus__envelope__get_packed_size(&a);
	uint8_t *buf = malloc(*len + 1);
	assert_non_null(buf);
	chorus__envelope__pack(&a, buf);
	return buf;
}

static void fake_send(struct fake_node *n, const uint8_t *buf, size_t len)
{
	nng_msg *m;
	if (nng_msg_alloc(&m, 0) != 0)
		return;
	nng_msg_append(m, buf, len);
	if (nng_sendmsg(n->sock, m, 0) != 0)
		nng_msg_free(m);
}

static uint64_t fake_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void fake_reject(struct fake_node *n, int code, const char *reason)
{
	uint8_t *f = NULL;
	size_t len = 0;
	if (seal_reject_build(code, reason, &f, &len) == 0)
		fake_send(n, f, len);
	free(f);
}

static void fake_handle(struct fake_node *n, nng_msg *m)
{
	uint8_t *frame = nng_msg_body(m);
	size_t len = nng_msg_len(m);
	int kind = 0;
	uint64_t sid = 0;
	if (seal_frame_peek(frame, len, SEAL_FRAME_BYTES_DEFAULT, &kind, &sid) != SEAL_OK)
		return;
	if (kind == SEAL_KIND_HELLO) {
		atomic_fetch_add(&n->hellos, 1);
		struct seal_session s;
		uint8_t *reply = NULL;
		size_t reply_len = 0;
		int v = seal_hello_accept(n->kr, n->guard, n->id, fake_wall_ms(), frame, len, &s, &reply,
		                          &reply_len);
		if (v == SEAL_FORGED) {
			fake_reject(n, CH_ERR_AUTH, "wrong cluster secret");
			return;
		}
		if (v != SEAL_OK)
			return;
		n->sessions[n->sessions_next++ % FAKE_SESSIONS_MAX] = s;
		atomic_fetch_add(&n->handshakes, 1);
		fake_send(n, reply, reply_len);
		free(reply);
		return;
	}
	if (kind != SEAL_KIND_DATA)
		return;
	atomic_fetch_add(&n->requests, 1);
	if (atomic_load(&n->forget_sessions) > 0) {
		atomic_fetch_sub(&n->forget_sessions, 1);
		memset(n->sessions, 0, sizeof n->sessions);
	}
	struct seal_session *s = fake_find(n, sid);
	if (s == NULL) {
		/* as the node does: authenticated, naming the refused frame */
		uint8_t *f = NULL;
		size_t flen = 0;
		if (seal_reject_build_auth(n->kr, sid, seal_frame_counter(frame), CH_ERR_CLOSED,
		                           "unknown session", &f, &flen) == 0)
			fake_send(n, f, flen);
		free(f);
		return;
	}
	uint8_t *plain = NULL;
	size_t plain_len = 0;
	if (seal_frame_open(s, frame, len, &plain, &plain_len) != SEAL_OK)
		return;
	Chorus__Envelope *q = chorus__envelope__unpack(NULL, plain_len, plain);
	if (q == NULL)
		return;
	size_t ans_len = 0;
	uint8_t *ans = fake_answer(n, q, &ans_len);
	chorus__envelope__free_unpacked(q, NULL);
	uint8_t *out = malloc(ans_len + SEAL_OVERHEAD_BYTES);
	assert_non_null(out);
	seal_frame_seal(s, ans, ans_len, out);
	fake_send(n, out, ans_len + SEAL_OVERHEAD_BYTES);
	free(out);
	free(ans);
}

/* hold: returns once the node thread waits at the gate (so nothing more is
 * answered); release: lets it go on. */
static void fake_hold(struct fake_node *n, bool hold)
{
	pthread_mutex_lock(&n->gate_mu);
	n->hold = hold;
	pthread_cond_broadcast(&n->gate_cv);
	while (hold && n->running && !n->held)
		pthread_cond_wait(&n->gate_cv, &n->gate_mu);
	pthread_mutex_unlock(&n->gate_mu);
}

static void *fake_run(void *arg)
{
	struct fake_node *n = arg;
	while (!atomic_load(&n->stop)) {
		pthread_mutex_lock(&n->gate_mu);
		while (n->hold && !atomic_load(&n->stop)) {
			n->held = true;
			pthread_cond_broadcast(&n->gate_cv);
			pthread_cond_wait(&n->gate_cv, &n->gate_mu);
		}
		n->held = false;
		pthread_mutex_unlock(&n->gate_mu);
		nng_msg *m = NULL;
		int rv = nng_recvmsg(n->sock, &m, 0);
		if (rv == NNG_ETIMEDOUT)
			continue;
		if (rv != 0)
			break;
		atomic_fetch_add(&n->frames, 1);
		if (!atomic_load(&n->silent))
			fake_handle(n, m);
		nng_msg_free(m);
	}
	return NULL;
}

static void fake_start(struct fake_node *n, const struct seal_keyring *kr)
{
	n->kr = seal_keyring_ref(kr);
	n->guard = seal_hello_guard_create(1024);
	assert_non_null(n->guard);
	randombytes_buf(n->id, sizeof n->id);
	assert_int_equal(nng_rep0_open(&n->sock), 0);
	assert_int_equal(nng_socket_set_ms(n->sock, NNG_OPT_RECVTIMEO, 50), 0);
	assert_int_equal(nng_listen(n->sock, n->url, NULL, 0), 0);
	assert_int_equal(pthread_create(&n->thread, NULL, fake_run, n), 0);
	n->running = true;
}

static void fake_stop(struct fake_node *n)
{
	if (!n->running)
		return;
	atomic_store(&n->stop, true);
	fake_hold(n, false);
	pthread_join(n->thread, NULL);
	nng_close(n->sock);
	n->running = false;
	seal_keyring_free(n->kr);
	n->kr = NULL;
	seal_hello_guard_free(n->guard);
	n->guard = NULL;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	assert_non_null(f);
	snprintf(f->dir, sizeof f->dir, "/tmp/chorus-test-chi-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->secret_file, sizeof f->secret_file, "%s/secret", f->dir);
	char err[256];
	assert_int_equal(ch_keygen(f->secret_file, err, sizeof err), CH_OK);
	f->kr = seal_keyring_load(f->secret_file, SEAL_ROLE_NODE, err, sizeof err);
	assert_non_null(f->kr);
	uint8_t other[SEAL_SECRET_BYTES];
	randombytes_buf(other, sizeof other);
	f->other_kr = seal_keyring_from_secrets(other, 1);
	assert_non_null(f->other_kr);
	snprintf(f->node.url, sizeof f->node.url, "ipc://%s/node-%d.sock", f->dir, url_seq++);
	pthread_mutex_init(&f->node.gate_mu, NULL);
	pthread_cond_init(&f->node.gate_cv, NULL);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	fake_stop(&f->node);
	char path[256];
	unlink(f->secret_file);
	seal_keyring_free(f->kr);
	seal_keyring_free(f->other_kr);
	snprintf(path, sizeof path, "%s", f->node.url + strlen("ipc://"));
	unlink(path);
	rmdir(f->dir);
	pthread_mutex_destroy(&f->node.gate_mu);
	pthread_cond_destroy(&f->node.gate_cv);
	free(f);
	return 0;
}

static ch_client *open_lazy(struct fixture *f, uint32_t timeout_ms, uint32_t contexts)
{
	struct ch_client_options o = { .timeout_ms = timeout_ms, .contexts = contexts };
	ch_client *c = NULL;
	char err[256] = "";
	int rv = chi_client_open_lazy(&c, f->node.url, f->kr, SEAL_ROLE_CLIENT, NULL, &o, err,
	                              sizeof err);
	if (rv != CH_OK)
		fail_msg("open_lazy: %s (%s)", ch_strerror(rv), err);
	return c;
}

static void status_env(Chorus__Envelope *env, Chorus__StatusReq *sr)
{
	chorus__envelope__init(env);
	chorus__status_req__init(sr);
	env->body_case = CHORUS__ENVELOPE__BODY_STATUS;
	env->status = sr;
}

static void await_env(Chorus__Envelope *env, Chorus__AwaitReq *aw, uint64_t task_id)
{
	chorus__envelope__init(env);
	chorus__await_req__init(aw);
	aw->task_id = task_id;
	env->body_case = CHORUS__ENVELOPE__BODY_AWAIT;
	env->await = aw;
}

/* ---- callbacks: each records what it got, under one lock per tally ---- */

struct tally {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int calls;
};

struct outcome {
	struct tally *t;
	int calls;
	int code;
	uint64_t task_id; /* from an AwaitResp */
	int body_case;
	bool on_caller_thread;
	char err[256];
};

static pthread_t caller_thread;

static void on_reply(void *arg, int code, Chorus__Envelope *reply, const char *err)
{
	struct outcome *o = arg;
	pthread_mutex_lock(&o->t->mu);
	o->calls++;
	o->code = code;
	o->on_caller_thread = pthread_equal(pthread_self(), caller_thread);
	snprintf(o->err, sizeof o->err, "%s", err != NULL ? err : "(null)");
	if (reply != NULL) {
		o->body_case = reply->body_case;
		if (reply->body_case == CHORUS__ENVELOPE__BODY_AWAIT_RESP &&
		    reply->await_resp->result != NULL)
			o->task_id = reply->await_resp->result->task_id;
		chorus__envelope__free_unpacked(reply, NULL);
	}
	o->t->calls++;
	pthread_cond_broadcast(&o->t->cv);
	pthread_mutex_unlock(&o->t->mu);
}

/* Waits until the tally reaches `calls` or WAIT_MS_MAX passed; returns it. */
static int tally_wait(struct tally *t, int calls)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += WAIT_MS_MAX / 1000;
	pthread_mutex_lock(&t->mu);
	int rv = 0;
	while (t->calls < calls && rv == 0)
		rv = pthread_cond_timedwait(&t->cv, &t->mu, &ts);
	int got = t->calls;
	pthread_mutex_unlock(&t->mu);
	return got;
}

static int tally_now(struct tally *t)
{
	pthread_mutex_lock(&t->mu);
	int got = t->calls;
	pthread_mutex_unlock(&t->mu);
	return got;
}

/* Waits until the node received `frames` frames or WAIT_MS_MAX passed. */
static bool frames_wait(struct fake_node *n, int frames)
{
	nng_time deadline = nng_clock() + WAIT_MS_MAX;
	while (atomic_load(&n->frames) < frames) {
		if (nng_clock() >= deadline)
			return false;
		nng_msleep(1); /* polls a counter with a deadline */
	}
	return true;
}

#define TALLY_INIT { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER }

/* ------------------------------------------------------------------ */

static void blocking_request_returns_the_status_reply(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->kr);
	ch_client *c = open_lazy(f, 3000, 4);
	assert_int_equal(atomic_load(&f->node.hellos), 0); /* lazy: nothing on the wire yet */

	Chorus__Envelope env;
	Chorus__StatusReq sr;
	status_env(&env, &sr);
	Chorus__Envelope *reply = NULL;
	char err[256] = "x";
	assert_int_equal(chi_request(c, &env, 2000, &reply, err, sizeof err), CH_OK);
	assert_string_equal(err, "");
	assert_non_null(reply);
	assert_int_equal(reply->body_case, CHORUS__ENVELOPE__BODY_STATUS_RESP);
	assert_string_equal(reply->status_resp->name, "fake");
	assert_int_equal(reply->status_resp->succeeded, 40);
	/* the library filled in the header */
	assert_int_equal(env.version, CH_PROTOCOL_VERSION);
	assert_int_equal(env.sender.len, SEAL_ID_BYTES);
	assert_int_not_equal(env.request_id, 0);
	assert_int_equal(reply->request_id, env.request_id);
	chorus__envelope__free_unpacked(reply, NULL);
	assert_int_equal(atomic_load(&f->node.handshakes), 1); /* done by the first request */

	/* the session is kept: a second request does not handshake again */
	uint64_t first_id = env.request_id;
	assert_int_equal(chi_request(c, &env, 0, &reply, err, sizeof err), CH_OK);
	assert_true(env.request_id > first_id);
	chorus__envelope__free_unpacked(reply, NULL);
	assert_int_equal(atomic_load(&f->node.handshakes), 1);

	/* the public calls work on the same client */
	char *json = NULL;
	assert_int_equal(ch_status_json(c, &json, err, sizeof err), CH_OK);
	assert_non_null(strstr(json, "\"fake\""));
	free(json);
	ch_client_close(c);
}

static void error_body_becomes_its_code_and_message(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->kr);
	ch_client *c = open_lazy(f, 3000, 4);
	Chorus__Envelope env;
	Chorus__AwaitReq aw;
	await_env(&env, &aw, TASK_ID_MISSING);
	Chorus__Envelope *reply = (Chorus__Envelope *)&reply; /* must be reset to NULL */
	char err[256];
	assert_int_equal(chi_request(c, &env, 0, &reply, err, sizeof err), CH_ERR_NOT_FOUND);
	assert_null(reply);
	assert_string_equal(err, "no task 404 here");

	struct tally t = TALLY_INIT;
	struct outcome o = { .t = &t };
	await_env(&env, &aw, TASK_ID_MISSING);
	assert_int_equal(chi_request_async(c, &env, 0, on_reply, &o), CH_OK);
	assert_int_equal(tally_wait(&t, 1), 1);
	assert_int_equal(o.code, CH_ERR_NOT_FOUND);
	assert_string_equal(o.err, "no task 404 here");
	assert_int_equal(o.body_case, 0); /* no reply handed over */
	ch_client_close(c);
}

/* A callback that issues one more request from the nng thread. */
struct chain {
	ch_client *c;
	struct outcome first;
	struct outcome second;
	int second_rv;
};

static void on_first_then_chain(void *arg, int code, Chorus__Envelope *reply, const char *err)
{
	struct chain *ch = arg;
	Chorus__Envelope env;
	Chorus__AwaitReq aw;
	await_env(&env, &aw, 8);
	ch->second_rv = chi_request_async(ch->c, &env, 0, on_reply, &ch->second);
	on_reply(&ch->first, code, reply, err);
}

static void async_round_trip_calls_back_exactly_once(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->kr);
	ch_client *c = open_lazy(f, 3000, 4);
	caller_thread = pthread_self();
	struct tally t = TALLY_INIT;
	struct chain ch = { .c = c, .first = { .t = &t }, .second = { .t = &t }, .second_rv = 1 };
	Chorus__Envelope env;
	Chorus__AwaitReq aw;
	await_env(&env, &aw, 7);
	assert_int_equal(chi_request_async(c, &env, 2000, on_first_then_chain, &ch), CH_OK);
	/* env was packed: scribbling on it now changes nothing on the wire */
	aw.task_id = 999;
	assert_int_equal(tally_wait(&t, 2), 2);
	assert_int_equal(ch.first.calls, 1);
	assert_int_equal(ch.first.code, CH_OK);
	assert_string_equal(ch.first.err, "");
	assert_int_equal(ch.first.body_case, CHORUS__ENVELOPE__BODY_AWAIT_RESP);
	assert_int_equal(ch.first.task_id, 7);
	assert_false(ch.first.on_caller_thread);
	assert_int_equal(ch.second_rv, CH_OK);
	assert_int_equal(ch.second.calls, 1);
	assert_int_equal(ch.second.code, CH_OK);
	assert_int_equal(ch.second.task_id, 8);
	assert_int_equal(atomic_load(&f->node.handshakes), 1);
	ch_client_close(c);
	/* nothing runs after close */
	assert_int_equal(t.calls, 2);
	assert_int_equal(ch.first.calls, 1);
	assert_int_equal(ch.second.calls, 1);
}

static void lazy_client_never_blocks_on_a_down_node_and_connects_once_it_is_up(void **state)
{
	struct fixture *f = *state;
	caller_thread = pthread_self();
	/* nothing listens at the address yet */
	nng_time t0 = nng_clock();
	struct ch_client_options o = { .timeout_ms = BLOCKING_TIMEOUT_MS, .contexts = 4 };
	ch_client *c = NULL;
	char err[256] = "";
	assert_int_equal(chi_client_open_lazy(&c, f->node.url, f->kr, SEAL_ROLE_NODE, NULL, &o, err,
	                                      sizeof err),
	                 CH_OK);
	assert_true(nng_clock() - t0 < NONBLOCKING_CALL_MS_MAX);

	struct tally t = TALLY_INIT;
	struct outcome o1 = { .t = &t };
	Chorus__Envelope env;
	Chorus__AwaitReq aw;
	await_env(&env, &aw, 1);
	t0 = nng_clock();
	assert_int_equal(chi_request_async(c, &env, BLOCKING_TIMEOUT_MS, on_reply, &o1), CH_OK);
	assert_true(nng_clock() - t0 < NONBLOCKING_CALL_MS_MAX);
	assert_int_equal(tally_wait(&t, 1), 1);
	nng_time elapsed_ms = nng_clock() - t0;
	assert_int_equal(o1.code, CH_ERR_UNREACHABLE);
	char within[64];
	snprintf(within, sizeof within, "within %d ms", BLOCKING_TIMEOUT_MS);
	assert_non_null(strstr(o1.err, within));
	assert_false(o1.on_caller_thread);
	assert_true(elapsed_ms < BLOCKING_TIMEOUT_MS + TIMEOUT_SLACK_MS);

	/* a blocking request fails the same way, within its own timeout */
	Chorus__Envelope *reply = NULL;
	t0 = nng_clock();
	assert_int_equal(chi_request(c, &env, 200, &reply, err, sizeof err), CH_ERR_UNREACHABLE);
	assert_true(nng_clock() - t0 < 200 + TIMEOUT_SLACK_MS);
	assert_null(reply);

	/* the node comes up: the next request handshakes and succeeds */
	fake_start(&f->node, f->kr);
	struct outcome o2 = { .t = &t };
	await_env(&env, &aw, 2);
	t0 = nng_clock();
	assert_int_equal(chi_request_async(c, &env, 3000, on_reply, &o2), CH_OK);
	assert_true(nng_clock() - t0 < NONBLOCKING_CALL_MS_MAX);
	assert_int_equal(tally_wait(&t, 2), 2);
	assert_int_equal(o2.code, CH_OK);
	assert_int_equal(o2.task_id, 2);
	assert_int_equal(atomic_load(&f->node.handshakes), 1);
	ch_client_close(c);
	assert_int_equal(o1.calls, 1);
	assert_int_equal(o2.calls, 1);
}

#define AUTH_BURST 10
#define AUTH_TIMEOUT_MS 1000

/* A REJECT of the HELLO cannot be authenticated: it is a hint, retried with
 * backoff until the request's deadline, which then fails CH_ERR_AUTH with
 * its reason. Waiters share the retries and none fails early. */
static void wrong_secret_is_retried_until_the_deadline_then_fails_with_auth(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->other_kr);
	ch_client *c = open_lazy(f, AUTH_TIMEOUT_MS, 16);
	Chorus__Envelope env;
	Chorus__StatusReq sr;
	status_env(&env, &sr);
	Chorus__Envelope *reply = NULL;
	char err[256] = "";
	nng_time t0 = nng_clock();
	assert_int_equal(chi_request(c, &env, 0, &reply, err, sizeof err), CH_ERR_AUTH);
	nng_time took = nng_clock() - t0;
	assert_null(reply);
	assert_non_null(strstr(err, "wrong cluster secret"));
	assert_true(took >= AUTH_TIMEOUT_MS - 50);
	assert_true(took < AUTH_TIMEOUT_MS + TIMEOUT_SLACK_MS);
	int hellos = atomic_load(&f->node.hellos);
	/* backoff 100, 200, 400 ms...: a few HELLOs, not a flood */
	assert_true(hellos >= 2);
	assert_true(hellos <= 8);

	/* a burst of async requests: each waits for its own deadline, they
	 * share the handshakes (no HELLO per request per retry) */
	fake_hold(&f->node, true);
	struct tally t = TALLY_INIT;
	struct outcome o[AUTH_BURST];
	for (int i = 0; i < AUTH_BURST; i++) {
		o[i] = (struct outcome){ .t = &t };
		status_env(&env, &sr);
		assert_int_equal(chi_request_async(c, &env, 0, on_reply, &o[i]), CH_OK);
	}
	t0 = nng_clock();
	fake_hold(&f->node, false);
	assert_int_equal(tally_wait(&t, AUTH_BURST), AUTH_BURST);
	for (int i = 0; i < AUTH_BURST; i++) {
		assert_int_equal(o[i].calls, 1);
		assert_int_equal(o[i].code, CH_ERR_AUTH);
		assert_non_null(strstr(o[i].err, "wrong cluster secret"));
	}
	assert_true(atomic_load(&f->node.hellos) - hellos <= 10);
	assert_int_equal(atomic_load(&f->node.handshakes), 0);
	ch_client_close(c);
}

/* The last session the fake node made (after a request completed). */
static struct seal_session fake_last_session(struct fake_node *n)
{
	assert_true(n->sessions_next > 0);
	return n->sessions[(n->sessions_next - 1) % FAKE_SESSIONS_MAX];
}

static void status_ok(ch_client *c)
{
	Chorus__Envelope env;
	Chorus__StatusReq sr;
	status_env(&env, &sr);
	Chorus__Envelope *reply = NULL;
	char err[256] = "";
	int rv = chi_request(c, &env, 0, &reply, err, sizeof err);
	if (rv != CH_OK)
		fail_msg("status: %s (%s)", ch_strerror(rv), err);
	chorus__envelope__free_unpacked(reply, NULL);
}

static void sessions_record_the_role_and_key_of_their_handshake(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->kr);
	ch_client *c = open_lazy(f, 3000, 2);
	status_ok(c);
	struct seal_session s = fake_last_session(&f->node);
	assert_int_equal(s.role, SEAL_ROLE_CLIENT);
	assert_int_equal(s.key_id, seal_keyring_primary_id(f->kr));
	ch_client_close(c);

	struct ch_client_options o = { .timeout_ms = 3000, .contexts = 2 };
	char err[256];
	assert_int_equal(chi_client_open_lazy(&c, f->node.url, f->kr, SEAL_ROLE_NODE, f->node.id,
	                                      &o, err, sizeof err),
	                 CH_OK);
	status_ok(c);
	s = fake_last_session(&f->node);
	assert_int_equal(s.role, SEAL_ROLE_NODE);
	ch_client_close(c);

	/* a client credential speaks as a client */
	struct seal_keyring *cred = seal_keyring_client_only(f->kr);
	assert_non_null(cred);
	assert_int_equal(chi_client_open_lazy(&c, f->node.url, cred, SEAL_ROLE_CLIENT, NULL, &o, err,
	                                      sizeof err),
	                 CH_OK);
	seal_keyring_free(cred); /* the client holds its own reference */
	status_ok(c);
	s = fake_last_session(&f->node);
	assert_int_equal(s.role, SEAL_ROLE_CLIENT);
	assert_int_equal(s.key_id, seal_keyring_primary_id(f->kr));
	ch_client_close(c);
	assert_int_equal(atomic_load(&f->node.handshakes), 3);
}

static void link_to_another_member_fails_the_handshake(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->kr);
	uint8_t meant[SEAL_ID_BYTES];
	randombytes_buf(meant, sizeof meant);
	struct ch_client_options o = { .timeout_ms = 3000, .contexts = 2 };
	ch_client *c = NULL;
	char err[256] = "";
	assert_int_equal(chi_client_open_lazy(&c, f->node.url, f->kr, SEAL_ROLE_NODE, meant, &o,
	                                      err, sizeof err),
	                 CH_OK);
	Chorus__Envelope env;
	Chorus__StatusReq sr;
	status_env(&env, &sr);
	Chorus__Envelope *reply = NULL;
	nng_time t0 = nng_clock();
	assert_int_equal(chi_request(c, &env, 0, &reply, err, sizeof err), CH_ERR_AUTH);
	assert_true(nng_clock() - t0 < 3000); /* definite: not retried to the deadline */
	assert_null(reply);
	assert_non_null(strstr(err, "expected member"));
	assert_int_equal(atomic_load(&f->node.requests), 0); /* nothing was sent to it */
	ch_client_close(c);
}

static void new_keyring_is_used_by_the_next_handshake(void **state)
{
	struct fixture *f = *state;
	/* the node accepts both keys, as during a rotation */
	uint8_t two[2 * SEAL_SECRET_BYTES];
	randombytes_buf(two, sizeof two);
	struct seal_keyring *node_kr = seal_keyring_from_secrets(two, 2);
	struct seal_keyring *old_kr = seal_keyring_from_secrets(two, 1);
	struct seal_keyring *new_kr = seal_keyring_from_secrets(two + SEAL_SECRET_BYTES, 1);
	assert_non_null(node_kr);
	assert_non_null(old_kr);
	assert_non_null(new_kr);
	fake_start(&f->node, node_kr);
	struct ch_client_options o = { .timeout_ms = 3000, .contexts = 2 };
	ch_client *c = NULL;
	char err[256];
	assert_int_equal(chi_client_open_lazy(&c, f->node.url, old_kr, SEAL_ROLE_NODE, NULL, &o, err,
	                                      sizeof err),
	                 CH_OK);
	status_ok(c);
	assert_int_equal(fake_last_session(&f->node).key_id, seal_keyring_primary_id(old_kr));
	assert_int_equal(chi_client_set_keyring(c, new_kr), CH_OK);
	status_ok(c); /* the session lives on */
	assert_int_equal(atomic_load(&f->node.handshakes), 1);
	atomic_store(&f->node.forget_sessions, 1);
	status_ok(c); /* authentic REJECT, new handshake under the new key */
	assert_int_equal(atomic_load(&f->node.handshakes), 2);
	assert_int_equal(fake_last_session(&f->node).key_id, seal_keyring_primary_id(new_kr));
	struct seal_keyring *cred = seal_keyring_client_only(new_kr);
	assert_int_equal(chi_client_set_keyring(c, cred), CH_ERR_INVALID); /* role node */
	seal_keyring_free(cred);
	ch_client_close(c);
	seal_keyring_free(node_kr);
	seal_keyring_free(old_kr);
	seal_keyring_free(new_kr);
}

#define BURST 100

static void hundred_async_requests_from_one_thread_are_all_answered(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->kr);
	ch_client *c = open_lazy(f, 5000, 128); /* lazy: all arrive before any session */
	struct tally t = TALLY_INIT;
	static struct outcome o[BURST];
	Chorus__Envelope env;
	Chorus__AwaitReq aw;
	/* The node answers nothing while the burst is issued: a call that waited
	 * for its answer would wait out the 5 s timeout and end CH_ERR_TIMEOUT. */
	fake_hold(&f->node, true);
	nng_time t0 = nng_clock();
	for (int i = 0; i < BURST; i++) {
		o[i] = (struct outcome){ .t = &t };
		await_env(&env, &aw, 1000u + (uint64_t)i);
		assert_int_equal(chi_request_async(c, &env, 0, on_reply, &o[i]), CH_OK);
	}
	assert_true(nng_clock() - t0 < 5000);
	assert_int_equal(tally_now(&t), 0);
	fake_hold(&f->node, false);
	assert_int_equal(tally_wait(&t, BURST), BURST);
	for (int i = 0; i < BURST; i++) {
		assert_int_equal(o[i].calls, 1);
		assert_int_equal(o[i].code, CH_OK);
		assert_int_equal(o[i].task_id, 1000u + (uint64_t)i); /* its own answer */
	}
	/* the requests that found no session waited for one handshake */
	assert_int_equal(atomic_load(&f->node.handshakes), 1);
	assert_int_equal(atomic_load(&f->node.requests), BURST);
	ch_client_close(c);
	assert_int_equal(t.calls, BURST);
}

static void lost_session_is_rebuilt_for_async_requests(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->kr);
	ch_client *c = open_lazy(f, 3000, 8);
	Chorus__Envelope env;
	Chorus__AwaitReq aw;
	await_env(&env, &aw, 1);
	Chorus__Envelope *reply = NULL;
	char err[256];
	assert_int_equal(chi_request(c, &env, 0, &reply, err, sizeof err), CH_OK);
	chorus__envelope__free_unpacked(reply, NULL);
	atomic_store(&f->node.forget_sessions, 1); /* as if the node restarted */
	struct tally t = TALLY_INIT;
	struct outcome o = { .t = &t };
	await_env(&env, &aw, 2);
	assert_int_equal(chi_request_async(c, &env, 0, on_reply, &o), CH_OK);
	assert_int_equal(tally_wait(&t, 1), 1);
	assert_int_equal(o.code, CH_OK);
	assert_int_equal(o.task_id, 2);
	assert_int_equal(atomic_load(&f->node.handshakes), 2);
	ch_client_close(c);
}

static void full_async_pool_fails_at_once(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->kr);
	atomic_store(&f->node.silent, true);
	ch_client *c = open_lazy(f, 60000, 2);
	struct tally t = TALLY_INIT;
	struct outcome o[3] = { { .t = &t }, { .t = &t }, { .t = &t } };
	Chorus__Envelope env;
	Chorus__StatusReq sr;
	for (int i = 0; i < 2; i++) {
		status_env(&env, &sr);
		assert_int_equal(chi_request_async(c, &env, 0, on_reply, &o[i]), CH_OK);
	}
	status_env(&env, &sr);
	nng_time t0 = nng_clock();
	assert_int_equal(chi_request_async(c, &env, 0, on_reply, &o[2]), CH_ERR_FULL);
	assert_true(nng_clock() - t0 < NONBLOCKING_CALL_MS_MAX);
	assert_true(frames_wait(&f->node, 1)); /* the first one's HELLO is out */
	ch_client_close(c);
	assert_int_equal(t.calls, 2); /* the refused one never calls back */
	assert_int_equal(o[2].calls, 0);
	assert_int_equal(o[0].code, CH_ERR_CLOSED);
	assert_int_equal(o[1].code, CH_ERR_CLOSED);
}

#define PENDING 6

static void close_calls_back_pending_requests_with_closed(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->kr);
	struct tally t = TALLY_INIT;
	Chorus__Envelope env;
	Chorus__StatusReq sr;

	/* established session, requests waiting for replies */
	ch_client *c = open_lazy(f, 60000, 8);
	Chorus__Envelope *reply = NULL;
	char err[256];
	status_env(&env, &sr);
	assert_int_equal(chi_request(c, &env, 0, &reply, err, sizeof err), CH_OK);
	chorus__envelope__free_unpacked(reply, NULL);
	atomic_store(&f->node.silent, true);
	struct outcome sent[PENDING];
	for (int i = 0; i < PENDING; i++) {
		sent[i] = (struct outcome){ .t = &t };
		status_env(&env, &sr);
		assert_int_equal(chi_request_async(c, &env, 0, on_reply, &sent[i]), CH_OK);
	}
	/* HELLO, the first request, the pending ones: all reached the node */
	assert_true(frames_wait(&f->node, 2 + PENDING));
	ch_client_close(c); /* returns only after every callback ran */
	assert_int_equal(tally_now(&t), PENDING);
	for (int i = 0; i < PENDING; i++) {
		assert_int_equal(sent[i].calls, 1);
		assert_int_equal(sent[i].code, CH_ERR_CLOSED);
	}

	/* no session: one request runs the handshake, the others are parked */
	c = open_lazy(f, 60000, 8);
	int frames_before = atomic_load(&f->node.frames);
	struct outcome parked[PENDING];
	for (int i = 0; i < PENDING; i++) {
		parked[i] = (struct outcome){ .t = &t };
		status_env(&env, &sr);
		assert_int_equal(chi_request_async(c, &env, 0, on_reply, &parked[i]), CH_OK);
	}
	assert_true(frames_wait(&f->node, frames_before + 1)); /* the one HELLO */
	ch_client_close(c);
	assert_int_equal(atomic_load(&f->node.frames), frames_before + 1);
	assert_int_equal(tally_now(&t), 2 * PENDING);
	for (int i = 0; i < PENDING; i++) {
		assert_int_equal(parked[i].calls, 1);
		assert_int_equal(parked[i].code, CH_ERR_CLOSED);
	}
}

static void open_lazy_checks_its_arguments(void **state)
{
	struct fixture *f = *state;
	ch_client *c = (ch_client *)&c;
	char err[256];
	assert_int_equal(chi_client_open_lazy(&c, f->node.url, NULL, SEAL_ROLE_CLIENT, NULL, NULL,
	                                      err, sizeof err),
	                 CH_ERR_INVALID);
	assert_null(c);
	assert_int_equal(chi_client_open_lazy(NULL, f->node.url, f->kr, SEAL_ROLE_CLIENT, NULL, NULL,
	                                      err, sizeof err),
	                 CH_ERR_INVALID);
	assert_int_equal(chi_client_open_lazy(&c, f->node.url, f->kr, 7, NULL, NULL, err, sizeof err),
	                 CH_ERR_INVALID);
	assert_null(c);
	/* a client credential cannot open a node link */
	struct seal_keyring *cred = seal_keyring_client_only(f->kr);
	assert_non_null(cred);
	assert_int_equal(chi_client_open_lazy(&c, f->node.url, cred, SEAL_ROLE_NODE, NULL, NULL, err,
	                                      sizeof err),
	                 CH_ERR_INVALID);
	assert_null(c);
	assert_non_null(strstr(err, "credential"));
	seal_keyring_free(cred);
	assert_int_equal(chi_client_open_lazy(&c, "bogus://x", f->kr, SEAL_ROLE_CLIENT, NULL, NULL,
	                                      err, sizeof err),
	                 CH_ERR_INVALID);
	assert_null(c);

	c = open_lazy(f, 1000, 1);
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT; /* no body */
	Chorus__Envelope *reply = NULL;
	assert_int_equal(chi_request(c, &env, 0, &reply, err, sizeof err), CH_ERR_INVALID);
	assert_int_equal(chi_request_async(c, &env, 0, on_reply, NULL), CH_ERR_INVALID);
	Chorus__StatusReq sr;
	status_env(&env, &sr);
	assert_int_equal(chi_request(c, &env, 0, NULL, err, sizeof err), CH_ERR_INVALID);
	assert_int_equal(chi_request_async(c, &env, 0, NULL, NULL), CH_ERR_INVALID);
	ch_client_close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(blocking_request_returns_the_status_reply, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(error_body_becomes_its_code_and_message, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(async_round_trip_calls_back_exactly_once, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(
			lazy_client_never_blocks_on_a_down_node_and_connects_once_it_is_up, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			wrong_secret_is_retried_until_the_deadline_then_fails_with_auth, setup, teardown),
		cmocka_unit_test_setup_teardown(sessions_record_the_role_and_key_of_their_handshake,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(link_to_another_member_fails_the_handshake, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(new_keyring_is_used_by_the_next_handshake, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(hundred_async_requests_from_one_thread_are_all_answered,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(lost_session_is_rebuilt_for_async_requests, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(full_async_pool_fails_at_once, setup, teardown),
		cmocka_unit_test_setup_teardown(close_calls_back_pending_requests_with_closed, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(open_lazy_checks_its_arguments, setup, teardown),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	nng_fini(); /* joins nng's own threads, so valgrind sees no stacks left */
	return failed;
}
