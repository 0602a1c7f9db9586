/*
 * test_client.c - libchorus against a fake node running in a thread.
 *
 * The fake node is an nng rep0 socket on an ipc:// address that does the
 * real handshake (seal_hello_accept), opens sealed requests and answers them
 * from a small script of behaviours (forget the session once, answer with an
 * Error, hand out batch results a few at a time, stay silent). Every wait in
 * these tests is on a condition with a deadline, never a bare sleep.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "chorus.h"
#include "proto/chorus.pb-c.h"
#include "proto/seal.h"

#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/util/platform.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FAKE_SESSIONS_MAX 64
#define FAKE_BATCH_MAX 256
#define FAKE_REQUIRE_MAX 32
#define FAKE_TAG_BYTES 32
#define BATCH_ID 77

struct fake_node {
	nng_socket sock;
	char url[128];
	struct seal_keyring *kr;
	struct seal_hello_guard *guard;
	uint8_t id[SEAL_ID_BYTES];
	pthread_t thread;
	atomic_bool stop;
	struct seal_session sessions[FAKE_SESSIONS_MAX]; /* ring */
	unsigned sessions_next;
	/* behaviour */
	atomic_int forget_sessions; /* >0: refuse that many data frames as "unknown session" */
	atomic_int forge_rejects;   /* >0: answer that many data frames with an unsigned REJECT */
	int error_code;             /* != 0: answer submits with this Error */
	const char *error_msg;
	atomic_bool silent;         /* never answer anything */
	atomic_int cache_errors;    /* >0: answer that many CacheReqs with cache_error_code */
	int cache_error_code;
	uint32_t batch_chunk;       /* results per BatchAwait reply */
	/* state */
	uint64_t task_id_last;
	uint32_t batch_count;
	char *batch_payloads[FAKE_BATCH_MAX];
	size_t batch_lens[FAKE_BATCH_MAX];
	/* observations */
	pthread_mutex_t seen_mu; /* guards the require_* and cache_* fields */
	char cache_name[80];     /* of the last CacheReq */
	int cache_consistency;
	uint32_t cache_flags;
	int cache_op;
	int64_t cache_ttl;
	char cache_handler[32];  /* a get-or-compute's task */
	uint32_t cache_task_timeout_ms;
	int require_seen;        /* task requests (submit, map) seen */
	size_t require_count;    /* of the last one */
	char require[FAKE_REQUIRE_MAX][FAKE_TAG_BYTES];
	atomic_int hellos;
	atomic_int handshakes;
	atomic_int requests;
	atomic_int batch_awaits;
};

struct fixture {
	char dir[64];
	char secret[128];
	char other_secret[128];
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

static void fake_result(Chorus__TaskResult *r, uint64_t task_id, const char *out, size_t out_len)
{
	chorus__task_result__init(r);
	r->task_id = task_id;
	r->state = CHORUS__TASK_STATE__TASK_SUCCEEDED;
	r->output.data = (uint8_t *)out;
	r->output.len = out_len;
	r->attempts = 1;
	r->node = "fake";
	r->handler = "echo";
	r->submitted_ms = 1000;
	r->started_ms = 1001;
	r->finished_ms = 1002;
}

/* Notes the required tags of a submit or map as they came off the wire. */
static void fake_note_require(struct fake_node *n, const Chorus__TaskOptions *o)
{
	pthread_mutex_lock(&n->seen_mu);
	n->require_seen++;
	n->require_count = o != NULL ? o->n_require : 0;
	for (size_t i = 0; i < n->require_count && i < FAKE_REQUIRE_MAX; i++)
		snprintf(n->require[i], FAKE_TAG_BYTES, "%s", o->require[i]);
	pthread_mutex_unlock(&n->seen_mu);
}

/* The tags of the last task request, space-separated ("" when none). */
static void fake_last_require(struct fake_node *n, int *seen, char *buf, size_t len)
{
	pthread_mutex_lock(&n->seen_mu);
	*seen = n->require_seen;
	buf[0] = '\0';
	size_t off = 0;
	for (size_t i = 0; i < n->require_count && i < FAKE_REQUIRE_MAX && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%s", i > 0 ? " " : "", n->require[i]);
	pthread_mutex_unlock(&n->seen_mu);
}

/* Two members: this node (alive, tagged) and a suspect peer whose name came
 * through gossip with a byte that is not UTF-8. */
static void fake_members(Chorus__MemberInfo *m, Chorus__MemberInfo **v, char **tags)
{
	chorus__member_info__init(&m[0]);
	m[0].id = "00112233445566778899aabbccddeeff";
	m[0].name = "fake";
	m[0].addr = "tcp://127.0.0.1:7601";
	m[0].state = "alive";
	m[0].incarnation = 3;
	m[0].n_tags = 2;
	m[0].tags = tags;
	m[0].capacity = 4;
	m[0].load = 1;
	m[0].since_ms = 1700000000123ull;
	m[0].self = 1;
	m[0].protocol_version = 1;
	chorus__member_info__init(&m[1]);
	m[1].id = "ffeeddccbbaa99887766554433221100";
	m[1].name = "n\xff" "2";
	m[1].addr = "tcp://127.0.0.1:7602";
	m[1].state = "suspect";
	m[1].incarnation = 7;
	m[1].capacity = 2;
	m[1].since_ms = 1700000000999ull;
	m[1].protocol_version = 1;
	v[0] = &m[0];
	v[1] = &m[1];
}

/* Answers one opened request; returns the reply envelope packed (malloc). */
static uint8_t *fake_answer(struct fake_node *n, Chorus__Envelope *q, size_t *len)
{
	Chorus__Envelope a = CHORUS__ENVELOPE__INIT;
	a.version = CH_PROTOCOL_VERSION;
	a.sender.data = n->id;
	a.sender.len = SEAL_ID_BYTES;
	a.request_id = q->request_id;
	Chorus__Error er = CHORUS__ERROR__INIT;
	Chorus__SubmitResp sr = CHORUS__SUBMIT_RESP__INIT;
	Chorus__AwaitResp ar = CHORUS__AWAIT_RESP__INIT;
	Chorus__MapResp mr = CHORUS__MAP_RESP__INIT;
	Chorus__BatchAwaitResp br = CHORUS__BATCH_AWAIT_RESP__INIT;
	Chorus__CancelResp cr = CHORUS__CANCEL_RESP__INIT;
	Chorus__ListResp lr = CHORUS__LIST_RESP__INIT;
	Chorus__StatusResp st = CHORUS__STATUS_RESP__INIT;
	Chorus__PoolStatus pool = CHORUS__POOL_STATUS__INIT;
	Chorus__PoolStatus *pools[1] = { &pool };
	Chorus__PeerCounters peer = CHORUS__PEER_COUNTERS__INIT;
	Chorus__PeerCounters *peers[1] = { &peer };
	char *handlers[2] = { "echo", "sha256" };
	char *tags[2] = { "gpu", "ssd" };
	Chorus__MemberInfo members[2];
	Chorus__MemberInfo *memberp[2];
	Chorus__MembersResp msr = CHORUS__MEMBERS_RESP__INIT;
	Chorus__CacheResp cache = CHORUS__CACHE_RESP__INIT;
	Chorus__CacheVersion cver = CHORUS__CACHE_VERSION__INIT;
	ProtobufCBinaryData scan_keys[2] = { { 1, (uint8_t *)"a" }, { 2, (uint8_t *)"\xff\x00" } };
	Chorus__TaskResult res[FAKE_BATCH_MAX];
	Chorus__TaskResult *resp[FAKE_BATCH_MAX];
	char outbuf[512];
	switch (q->body_case) {
	case CHORUS__ENVELOPE__BODY_SUBMIT:
		fake_note_require(n, q->submit->task != NULL ? q->submit->task->opts : NULL);
		if (n->error_code != 0) {
			er.code = n->error_code;
			er.message = (char *)n->error_msg;
			a.body_case = CHORUS__ENVELOPE__BODY_ERROR;
			a.error = &er;
			break;
		}
		sr.task_id = ++n->task_id_last;
		if (q->submit->wait_ms > 0) {
			int k = snprintf(outbuf, sizeof outbuf, "echo:%.*s",
			                 (int)q->submit->task->payload.len,
			                 (const char *)q->submit->task->payload.data);
			fake_result(&res[0], sr.task_id, outbuf, (size_t)k);
			res[0].handler = q->submit->task->handler;
			sr.result = &res[0];
		}
		a.body_case = CHORUS__ENVELOPE__BODY_SUBMIT_RESP;
		a.submit_resp = &sr;
		break;
	case CHORUS__ENVELOPE__BODY_AWAIT: {
		if (q->await->task_id == 404) {
			er.code = CH_ERR_NOT_FOUND;
			er.message = "no task 404";
			a.body_case = CHORUS__ENVELOPE__BODY_ERROR;
			a.error = &er;
			break;
		}
		int k = snprintf(outbuf, sizeof outbuf, "done-%llu",
		                 (unsigned long long)q->await->task_id);
		fake_result(&res[0], q->await->task_id, outbuf, (size_t)k);
		if (q->await->wait_ms == 0)
			res[0].state = CHORUS__TASK_STATE__TASK_RUNNING;
		ar.result = &res[0];
		a.body_case = CHORUS__ENVELOPE__BODY_AWAIT_RESP;
		a.await_resp = &ar;
		break;
	}
	case CHORUS__ENVELOPE__BODY_MAP:
		fake_note_require(n, q->map->opts);
		for (uint32_t i = 0; i < n->batch_count; i++)
			free(n->batch_payloads[i]);
		n->batch_count = 0;
		assert_true(q->map->n_payloads <= FAKE_BATCH_MAX);
		for (size_t i = 0; i < q->map->n_payloads; i++) {
			n->batch_payloads[i] = malloc(q->map->payloads[i].len + 1);
			memcpy(n->batch_payloads[i], q->map->payloads[i].data, q->map->payloads[i].len);
			n->batch_lens[i] = q->map->payloads[i].len;
		}
		n->batch_count = (uint32_t)q->map->n_payloads;
		mr.batch_id = BATCH_ID;
		mr.count = n->batch_count;
		a.body_case = CHORUS__ENVELOPE__BODY_MAP_RESP;
		a.map_resp = &mr;
		break;
	case CHORUS__ENVELOPE__BODY_BATCH_AWAIT: {
		atomic_fetch_add(&n->batch_awaits, 1);
		uint32_t from = q->batch_await->from_index;
		uint32_t k = n->batch_chunk > 0 ? n->batch_chunk : 1;
		if (from + k > n->batch_count)
			k = n->batch_count - from;
		for (uint32_t i = 0; i < k; i++) {
			/* payloads are short; outputs point into the stored payloads */
			fake_result(&res[i], 1000 + from + i, n->batch_payloads[from + i],
			            n->batch_lens[from + i]);
			res[i].batch_id = BATCH_ID;
			res[i].batch_index = from + i;
			if ((from + i) % 5 == 4) {
				res[i].state = CHORUS__TASK_STATE__TASK_FAILED;
				res[i].error = "every fifth fails";
			}
			resp[i] = &res[i];
		}
		br.batch_id = BATCH_ID;
		br.total = n->batch_count;
		br.done = from + k;
		br.from_index = from;
		br.n_results = k;
		br.results = resp;
		a.body_case = CHORUS__ENVELOPE__BODY_BATCH_AWAIT_RESP;
		a.batch_await_resp = &br;
		break;
	}
	case CHORUS__ENVELOPE__BODY_CANCEL:
		cr.cancelled = 1;
		cr.state = CHORUS__TASK_STATE__TASK_CANCELLED;
		a.body_case = CHORUS__ENVELOPE__BODY_CANCEL_RESP;
		a.cancel_resp = &cr;
		break;
	case CHORUS__ENVELOPE__BODY_LIST: {
		uint32_t k = q->list->limit < 3 ? q->list->limit : 3;
		for (uint32_t i = 0; i < k; i++) {
			fake_result(&res[i], 30 - i, "x", 1);
			res[i].state = q->list->state != 0 ? q->list->state
			                                  : CHORUS__TASK_STATE__TASK_QUEUED;
			resp[i] = &res[i];
		}
		lr.n_tasks = k;
		lr.tasks = resp;
		a.body_case = CHORUS__ENVELOPE__BODY_LIST_RESP;
		a.list_resp = &lr;
		break;
	}
	case CHORUS__ENVELOPE__BODY_STATUS:
		st.node_id = "n1";
		st.name = "fake";
		st.version = CH_VERSION_STRING;
		st.listen = n->url;
		st.queued = 2;
		st.succeeded = 40;
		st.sessions = 1;
		st.n_handlers = 2;
		st.handlers = handlers;
		pool.name = "default";
		pool.workers = 4;
		pool.alive = 3;
		pool.degraded = 1;
		pool.n_handlers = 1;
		pool.handlers = handlers;
		st.n_pools = 1;
		st.pools = pools;
		peer.peer = "10.0.0.9";
		peer.forged = 5;
		st.n_peers = 1;
		st.peers = peers;
		st.n_tags = 2;
		st.tags = tags;
		fake_members(members, memberp, tags);
		st.n_members = 2;
		st.members = memberp;
		a.body_case = CHORUS__ENVELOPE__BODY_STATUS_RESP;
		a.status_resp = &st;
		break;
	case CHORUS__ENVELOPE__BODY_MEMBERS:
		fake_members(members, memberp, tags);
		msr.n_members = 2;
		msr.members = memberp;
		a.body_case = CHORUS__ENVELOPE__BODY_MEMBERS_RESP;
		a.members_resp = &msr;
		break;
	case CHORUS__ENVELOPE__BODY_CACHE: {
		const Chorus__CacheReq *cq = q->cache;
		pthread_mutex_lock(&n->seen_mu);
		snprintf(n->cache_name, sizeof n->cache_name, "%s", cq->cache);
		n->cache_consistency = (int)cq->consistency;
		n->cache_flags = cq->flags;
		n->cache_op = (int)cq->op;
		n->cache_ttl = cq->ttl_ms;
		snprintf(n->cache_handler, sizeof n->cache_handler, "%s",
		         cq->compute != NULL ? cq->compute->handler : "");
		n->cache_task_timeout_ms = cq->compute != NULL && cq->compute->opts != NULL
		                               ? cq->compute->opts->timeout_ms
		                               : 0;
		pthread_mutex_unlock(&n->seen_mu);
		if (atomic_load(&n->cache_errors) > 0) {
			atomic_fetch_sub(&n->cache_errors, 1);
			er.code = n->cache_error_code;
			er.message = "partition 7 is on another member";
			a.body_case = CHORUS__ENVELOPE__BODY_ERROR;
			a.error = &er;
			break;
		}
		/* every key holds "v:KEY"; "missing" is absent */
		bool miss = cq->key.len == 7 && memcmp(cq->key.data, "missing", 7) == 0;
		int k = snprintf(outbuf, sizeof outbuf, "v:%.*s", (int)cq->key.len,
		                 (const char *)cq->key.data);
		cache.found = !miss;
		if (!miss) {
			cache.value.data = (uint8_t *)outbuf;
			cache.value.len = (size_t)k;
		}
		cver.hlc = 42;
		cver.node.data = n->id;
		cver.node.len = SEAL_ID_BYTES;
		cache.version = &cver;
		cache.ttl_ms = miss ? -2 : -1;
		cache.applied = !miss;
		cache.integer = cq->delta + 10;
		if (cq->op == CHORUS__CACHE_OP__CACHE_GET_OR_COMPUTE && miss) {
			/* "computed": the handler's name and the payload */
			k = snprintf(outbuf, sizeof outbuf, "%s(%.*s)", cq->compute->handler,
			             (int)cq->compute->payload.len, (const char *)cq->compute->payload.data);
			cache.found = 1;
			cache.value.data = (uint8_t *)outbuf;
			cache.value.len = (size_t)k;
			cache.computed = 1;
		}
		if (cq->op == CHORUS__CACHE_OP__CACHE_SCAN) {
			cache.n_keys = 2;
			cache.keys = scan_keys;
			cache.cursor = cq->cursor + 1 < 3 ? cq->cursor + 1 : 0;
		}
		a.body_case = CHORUS__ENVELOPE__BODY_CACHE_RESP;
		a.cache_resp = &cache;
		break;
	}
	default:
		er.code = CH_ERR_INVALID;
		er.message = "unexpected body";
		a.body_case = CHORUS__ENVELOPE__BODY_ERROR;
		a.error = &er;
		break;
	}
	*len = chorus__envelope__get_packed_size(&a);
	uint8_t *buf = malloc(*len + 1);
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
	if (atomic_load(&n->forge_rejects) > 0) {
		/* what an outsider can send: a REJECT without a MAC */
		atomic_fetch_sub(&n->forge_rejects, 1);
		fake_reject(n, CH_ERR_CLOSED, "unknown session");
		return;
	}
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
	seal_frame_seal(s, ans, ans_len, out);
	fake_send(n, out, ans_len + SEAL_OVERHEAD_BYTES);
	free(out);
	free(ans);
}

static void *fake_run(void *arg)
{
	struct fake_node *n = arg;
	while (!atomic_load(&n->stop)) {
		nng_msg *m = NULL;
		int rv = nng_recvmsg(n->sock, &m, 0);
		if (rv == NNG_ETIMEDOUT)
			continue;
		if (rv != 0)
			break;
		if (!atomic_load(&n->silent))
			fake_handle(n, m);
		nng_msg_free(m);
	}
	return NULL;
}

static void fake_start(struct fake_node *n, const char *secret_file)
{
	char err[256];
	n->kr = seal_keyring_load(secret_file, SEAL_ROLE_NODE, err, sizeof err);
	assert_non_null(n->kr);
	n->guard = seal_hello_guard_create(1024);
	assert_non_null(n->guard);
	randombytes_buf(n->id, sizeof n->id);
	pthread_mutex_init(&n->seen_mu, NULL);
	assert_int_equal(nng_rep0_open(&n->sock), 0);
	assert_int_equal(nng_socket_set_ms(n->sock, NNG_OPT_RECVTIMEO, 50), 0);
	assert_int_equal(nng_listen(n->sock, n->url, NULL, 0), 0);
	assert_int_equal(pthread_create(&n->thread, NULL, fake_run, n), 0);
}

static void fake_stop(struct fake_node *n)
{
	atomic_store(&n->stop, true);
	pthread_join(n->thread, NULL);
	nng_close(n->sock);
	seal_keyring_free(n->kr);
	n->kr = NULL;
	seal_hello_guard_free(n->guard);
	n->guard = NULL;
	for (uint32_t i = 0; i < n->batch_count; i++)
		free(n->batch_payloads[i]);
	n->batch_count = 0;
	pthread_mutex_destroy(&n->seen_mu);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	snprintf(f->dir, sizeof f->dir, "/tmp/chorus-test-client-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->secret, sizeof f->secret, "%s/secret", f->dir);
	snprintf(f->other_secret, sizeof f->other_secret, "%s/other", f->dir);
	char err[256];
	assert_int_equal(ch_keygen(f->secret, err, sizeof err), CH_OK);
	assert_int_equal(ch_keygen(f->other_secret, err, sizeof err), CH_OK);
	snprintf(f->node.url, sizeof f->node.url, "ipc://%s/node-%d.sock", f->dir, url_seq++);
	f->node.batch_chunk = 3;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char path[256];
	unlink(f->secret);
	unlink(f->other_secret);
	snprintf(path, sizeof path, "%s/node-%d.sock", f->dir, url_seq - 1);
	unlink(path);
	rmdir(f->dir);
	free(f);
	return 0;
}

static ch_client *connect_ok(struct fixture *f, uint32_t contexts)
{
	struct ch_client_options o = { .timeout_ms = 3000, .contexts = contexts };
	ch_client *c = NULL;
	char err[256] = "";
	int rv = ch_client_connect(&c, f->node.url, f->secret, &o, err, sizeof err);
	if (rv != CH_OK)
		fail_msg("connect: %s (%s)", ch_strerror(rv), err);
	return c;
}

/* ------------------------------------------------------------------ */

static void requests_map_to_their_replies(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->secret);
	ch_client *c = connect_ok(f, 4);
	char err[256];

	uint64_t id = 0;
	assert_int_equal(ch_submit(c, "echo", "hi", 2, NULL, &id, err, sizeof err), CH_OK);
	assert_int_equal(id, 1);

	const char *argv[] = { "/bin/echo", "x", NULL };
	struct ch_task_opts to = { .timeout_ms = 100, .restart = CH_RESTART_TRANSIENT,
		                   .max_attempts = 3, .argv = argv };
	struct ch_result *r = NULL;
	assert_int_equal(ch_submit_await(c, "echo", "hello", 5, &to, 1000, &r, err, sizeof err),
	                 CH_OK);
	assert_int_equal(r->task_id, 2);
	assert_int_equal(r->state, CH_TASK_SUCCEEDED);
	assert_int_equal(r->output_len, strlen("echo:hello"));
	assert_string_equal((char *)r->output, "echo:hello"); /* NUL-terminated */
	assert_string_equal(r->handler, "echo");
	assert_string_equal(r->node, "fake");
	assert_string_equal(r->error, "");
	assert_int_equal(r->finished_ms, 1002);
	ch_result_free(r);

	assert_int_equal(ch_await(c, 9, 500, &r, err, sizeof err), CH_OK);
	assert_int_equal(r->task_id, 9);
	assert_int_equal(r->state, CH_TASK_SUCCEEDED);
	assert_string_equal((char *)r->output, "done-9");
	ch_result_free(r);

	assert_int_equal(ch_task_status(c, 9, &r, err, sizeof err), CH_OK);
	assert_int_equal(r->state, CH_TASK_RUNNING); /* wait 0 went on the wire */
	ch_result_free(r);

	assert_int_equal(ch_await(c, 404, 0, &r, err, sizeof err), CH_ERR_NOT_FOUND);
	assert_null(r);
	assert_non_null(strstr(err, "no task 404"));

	int after = -1;
	assert_int_equal(ch_cancel(c, 9, &after, err, sizeof err), CH_OK);
	assert_int_equal(after, CH_TASK_CANCELLED);

	struct ch_result **rs = NULL;
	uint32_t n = 0;
	assert_int_equal(ch_list(c, CH_TASK_FAILED, 10, &rs, &n, err, sizeof err), CH_OK);
	assert_int_equal(n, 3);
	assert_int_equal(rs[0]->task_id, 30);
	assert_int_equal(rs[2]->state, CH_TASK_FAILED);
	ch_results_free(rs, n);

	char *json = NULL;
	assert_int_equal(ch_status_json(c, &json, err, sizeof err), CH_OK);
	json_error_t je;
	json_t *o = json_loads(json, 0, &je);
	assert_non_null(o);
	assert_string_equal(json_string_value(json_object_get(o, "name")), "fake");
	assert_int_equal(json_integer_value(json_object_get(o, "succeeded")), 40);
	json_t *pools = json_object_get(o, "pools");
	assert_true(json_is_array(pools));
	assert_int_equal(json_array_size(pools), 1);
	assert_true(json_is_true(json_object_get(json_array_get(pools, 0), "degraded")));
	json_t *peers = json_object_get(o, "peers");
	assert_int_equal(json_integer_value(json_object_get(json_array_get(peers, 0), "forged")), 5);
	assert_int_equal(json_array_size(json_object_get(o, "handlers")), 2);
	json_decref(o);
	free(json);

	ch_client_close(c);
	fake_stop(&f->node);
}

static void wrong_secret_fails_with_auth_and_reason(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->other_secret);
	ch_client *c = NULL;
	char err[256] = "";
	struct ch_client_options o = { .timeout_ms = 1000 };
	nng_time t0 = nng_clock();
	assert_int_equal(ch_client_connect(&c, f->node.url, f->secret, &o, err, sizeof err),
	                 CH_ERR_AUTH);
	nng_time took = nng_clock() - t0;
	assert_null(c);
	assert_non_null(strstr(err, "wrong cluster secret"));
	/* an unauthenticated REJECT is a hint: retried with backoff until the
	 * deadline */
	assert_true(took >= 950);
	assert_true(atomic_load(&f->node.hellos) >= 2);
	assert_true(atomic_load(&f->node.hellos) <= 8);
	fake_stop(&f->node);
}

/* A REJECT of a request that does not verify (anyone on the path can send
 * one) is ignored: the request is not resealed and resent, so it cannot run
 * twice; it fails at its deadline. */
static void forged_reject_of_a_request_is_ignored(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->secret);
	struct ch_client_options o = { .timeout_ms = 800, .contexts = 2 };
	ch_client *c = NULL;
	char err[256] = "";
	assert_int_equal(ch_client_connect(&c, f->node.url, f->secret, &o, err, sizeof err), CH_OK);
	atomic_store(&f->node.forge_rejects, 1);
	uint64_t id = 0;
	nng_time t0 = nng_clock();
	assert_int_equal(ch_submit(c, "echo", "a", 1, NULL, &id, err, sizeof err), CH_ERR_TIMEOUT);
	assert_true(nng_clock() - t0 >= 750);
	assert_non_null(strstr(err, "does not verify"));
	assert_int_equal(atomic_load(&f->node.requests), 1);   /* sent once */
	assert_int_equal(atomic_load(&f->node.handshakes), 1); /* no new session */

	/* and the client still works */
	assert_int_equal(ch_submit(c, "echo", "c", 1, NULL, &id, err, sizeof err), CH_OK);
	ch_client_close(c);
	fake_stop(&f->node);
}

static void client_credential_connects_as_a_client(void **state)
{
	struct fixture *f = *state;
	char cred_path[256];
	snprintf(cred_path, sizeof cred_path, "%s/client.key", f->dir);
	char err[256] = "";
	struct seal_keyring *kr = seal_keyring_load(f->secret, SEAL_ROLE_NODE, err, sizeof err);
	assert_non_null(kr);
	assert_int_equal(seal_client_credential_write(kr, cred_path, err, sizeof err), 0);
	seal_keyring_free(kr);
	fake_start(&f->node, f->secret);
	ch_client *c = NULL;
	struct ch_client_options o = { .timeout_ms = 3000 };
	assert_int_equal(ch_client_connect(&c, f->node.url, cred_path, &o, err, sizeof err), CH_OK);
	uint64_t id = 0;
	assert_int_equal(ch_submit(c, "echo", "a", 1, NULL, &id, err, sizeof err), CH_OK);
	struct seal_session *s = &f->node.sessions[0];
	assert_int_equal(s->role, SEAL_ROLE_CLIENT);
	ch_client_close(c);
	fake_stop(&f->node);
	unlink(cred_path);
}

static void group_readable_secret_is_refused(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(chmod(f->secret, 0640), 0);
	ch_client *c = NULL;
	char err[256] = "";
	assert_int_equal(ch_client_connect(&c, f->node.url, f->secret, NULL, err, sizeof err),
	                 CH_ERR_IO);
	assert_null(c);
	assert_non_null(strstr(err, "chmod 600"));
	assert_non_null(strstr(err, f->secret));
	assert_int_equal(chmod(f->secret, 0600), 0);
}

static void nothing_listening_is_unreachable_within_the_timeout(void **state)
{
	struct fixture *f = *state;
	ch_client *c = NULL;
	char err[256] = "";
	struct ch_client_options o = { .timeout_ms = 300 };
	nng_time t0 = nng_clock();
	assert_int_equal(ch_client_connect(&c, f->node.url, f->secret, &o, err, sizeof err),
	                 CH_ERR_UNREACHABLE);
	nng_time elapsed = nng_clock() - t0;
	assert_null(c);
	assert_true(elapsed < 3 * 300);
	assert_non_null(strstr(err, "no answer from ipc://"));
	assert_non_null(strstr(err, "within 300 ms"));
}

static void missing_secret_file_is_an_io_error(void **state)
{
	struct fixture *f = *state;
	ch_client *c = NULL;
	char err[256] = "";
	char path[256];
	snprintf(path, sizeof path, "%s/nope", f->dir);
	assert_int_equal(ch_client_connect(&c, f->node.url, path, NULL, err, sizeof err),
	                 CH_ERR_IO);
	assert_null(c);
	assert_non_null(strstr(err, path));
}

static void lost_session_is_rebuilt_and_the_call_succeeds(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->secret);
	ch_client *c = connect_ok(f, 2);
	assert_int_equal(atomic_load(&f->node.handshakes), 1);
	atomic_store(&f->node.forget_sessions, 1); /* as if the node restarted */
	char err[256];
	uint64_t id = 0;
	assert_int_equal(ch_submit(c, "echo", "a", 1, NULL, &id, err, sizeof err), CH_OK);
	assert_int_equal(id, 1);
	assert_int_equal(atomic_load(&f->node.handshakes), 2);
	assert_int_equal(atomic_load(&f->node.requests), 2); /* refused once, then resent */
	/* the new session keeps working */
	assert_int_equal(ch_submit(c, "echo", "b", 1, NULL, &id, err, sizeof err), CH_OK);
	assert_int_equal(id, 2);
	assert_int_equal(atomic_load(&f->node.handshakes), 2);
	ch_client_close(c);
	fake_stop(&f->node);
}

static void session_refused_twice_fails_with_auth(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->secret);
	ch_client *c = connect_ok(f, 2);
	atomic_store(&f->node.forget_sessions, 2);
	char err[256];
	uint64_t id = 0;
	assert_int_equal(ch_submit(c, "echo", "a", 1, NULL, &id, err, sizeof err), CH_ERR_AUTH);
	assert_non_null(strstr(err, "unknown session"));
	assert_int_equal(atomic_load(&f->node.handshakes), 2); /* re-handshake once only */
	ch_client_close(c);
	fake_stop(&f->node);
}

static void error_reply_surfaces_code_and_message(void **state)
{
	struct fixture *f = *state;
	f->node.error_code = CH_ERR_UNKNOWN_HANDLER;
	f->node.error_msg = "no handler named 'nope' on node n1";
	fake_start(&f->node, f->secret);
	ch_client *c = connect_ok(f, 2);
	char err[256];
	uint64_t id = 0;
	assert_int_equal(ch_submit(c, "nope", "", 0, NULL, &id, err, sizeof err),
	                 CH_ERR_UNKNOWN_HANDLER);
	assert_string_equal(err, "no handler named 'nope' on node n1");
	struct ch_result *r = (struct ch_result *)&r; /* must be reset to NULL */
	assert_int_equal(ch_submit_await(c, "nope", "x", 1, NULL, 10, &r, err, sizeof err),
	                 CH_ERR_UNKNOWN_HANDLER);
	assert_null(r);
	ch_client_close(c);
	fake_stop(&f->node);
}

struct progress_log {
	uint32_t calls;
	uint32_t last_done;
	bool monotonic;
};

static void on_progress(void *arg, uint32_t done, uint32_t total)
{
	struct progress_log *p = arg;
	assert_int_equal(total, 11);
	if (done <= p->last_done)
		p->monotonic = false;
	p->last_done = done;
	p->calls++;
}

static void map_assembles_results_in_order_across_batch_awaits(void **state)
{
	struct fixture *f = *state;
	f->node.batch_chunk = 3;
	fake_start(&f->node, f->secret);
	ch_client *c = connect_ok(f, 2);
	enum { N = 11 };
	char bufs[N][16];
	const void *payloads[N];
	size_t lens[N];
	for (int i = 0; i < N; i++) {
		lens[i] = (size_t)snprintf(bufs[i], sizeof bufs[i], "p%02d", i);
		payloads[i] = bufs[i];
	}
	struct progress_log pl = { .monotonic = true };
	struct ch_map_opts mo = { .max_concurrency = 4, .progress = on_progress,
		                  .progress_arg = &pl };
	struct ch_result **rs = NULL;
	char err[256];
	assert_int_equal(ch_map(c, "echo", payloads, lens, N, NULL, &mo, &rs, err, sizeof err),
	                 CH_OK);
	for (int i = 0; i < N; i++) {
		assert_int_equal(rs[i]->batch_index, i);
		assert_int_equal(rs[i]->batch_id, BATCH_ID);
		assert_int_equal(rs[i]->output_len, lens[i]);
		assert_memory_equal(rs[i]->output, bufs[i], lens[i]);
		assert_int_equal(rs[i]->state, i % 5 == 4 ? CH_TASK_FAILED : CH_TASK_SUCCEEDED);
	}
	assert_string_equal(rs[4]->error, "every fifth fails");
	assert_int_equal(atomic_load(&f->node.batch_awaits), 4); /* 3+3+3+2 */
	assert_true(pl.monotonic);
	assert_int_equal(pl.calls, 4);
	assert_int_equal(pl.last_done, N);
	ch_results_free(rs, N);
	ch_client_close(c);
	fake_stop(&f->node);
}

static void map_over_the_frame_cap_is_too_large(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->secret);
	struct ch_client_options o = { .timeout_ms = 3000, .frame_bytes_max = 4096 };
	ch_client *c = NULL;
	char err[256];
	assert_int_equal(ch_client_connect(&c, f->node.url, f->secret, &o, err, sizeof err), CH_OK);
	static char big[1000];
	const void *payloads[10];
	size_t lens[10];
	for (int i = 0; i < 10; i++) {
		payloads[i] = big;
		lens[i] = sizeof big;
	}
	struct ch_result **rs = NULL;
	assert_int_equal(ch_map(c, "echo", payloads, lens, 10, NULL, NULL, &rs, err, sizeof err),
	                 CH_ERR_TOO_LARGE);
	assert_null(rs);
	assert_non_null(strstr(err, "frame cap"));
	assert_int_equal(atomic_load(&f->node.requests), 0); /* nothing went out */
	uint64_t id;
	static char huge[5000];
	assert_int_equal(ch_submit(c, "echo", huge, sizeof huge, NULL, &id, err, sizeof err),
	                 CH_ERR_TOO_LARGE);
	ch_client_close(c);
	fake_stop(&f->node);
}

struct worker_arg {
	ch_client *c;
	int index;
	int ok;
	char last_err[256]; /* of a failed call, for the report */
};

#define THREADS 8
#define CALLS 200

static void *worker(void *arg)
{
	struct worker_arg *w = arg;
	for (int i = 0; i < CALLS; i++) {
		char payload[32], want[40], err[256];
		int len = snprintf(payload, sizeof payload, "t%d-c%d", w->index, i);
		snprintf(want, sizeof want, "echo:%s", payload);
		struct ch_result *r = NULL;
		if (ch_submit_await(w->c, "echo", payload, (size_t)len, NULL, 100, &r, err,
		                    sizeof err) != CH_OK)
		{
			snprintf(w->last_err, sizeof w->last_err, "%s", err);
			continue;
		}
		if (strcmp((char *)r->output, want) == 0)
			w->ok++;
		ch_result_free(r);
	}
	return NULL;
}

static void concurrent_callers_each_get_their_own_answer(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->secret);
	ch_client *c = connect_ok(f, 4); /* fewer contexts than threads: callers queue */
	pthread_t th[THREADS];
	struct worker_arg wa[THREADS];
	for (int i = 0; i < THREADS; i++) {
		wa[i] = (struct worker_arg){ .c = c, .index = i };
		assert_int_equal(pthread_create(&th[i], NULL, worker, &wa[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		if (wa[i].ok != CALLS)
			fail_msg("thread %d: %d of %d calls ok, last error: %s", i, wa[i].ok, CALLS,
			         wa[i].last_err);
	}
	assert_int_equal(f->node.task_id_last, THREADS * CALLS);
	ch_client_close(c);
	fake_stop(&f->node);
}

struct async_box {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int calls;
	int code;
	uint64_t task_id;
	char output[64];
	char err[256];
};

static void on_async(void *arg, int code, struct ch_result *r, const char *err)
{
	struct async_box *b = arg;
	pthread_mutex_lock(&b->mu);
	b->calls++;
	b->code = code;
	snprintf(b->err, sizeof b->err, "%s", err != NULL ? err : "(null)");
	if (r != NULL) {
		b->task_id = r->task_id;
		snprintf(b->output, sizeof b->output, "%s", (char *)r->output);
		ch_result_free(r);
	}
	pthread_cond_broadcast(&b->cv);
	pthread_mutex_unlock(&b->mu);
}

/* Waits until the callback ran `calls` times or 5 s passed. */
static int box_wait(struct async_box *b, int calls)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 5;
	pthread_mutex_lock(&b->mu);
	int rv = 0;
	while (b->calls < calls && rv == 0)
		rv = pthread_cond_timedwait(&b->cv, &b->mu, &ts);
	int got = b->calls;
	pthread_mutex_unlock(&b->mu);
	return got;
}

static void forged_reject_of_an_async_request_is_ignored(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->secret);
	struct ch_client_options o = { .timeout_ms = 800, .contexts = 2 };
	ch_client *c = NULL;
	char err[256] = "";
	assert_int_equal(ch_client_connect(&c, f->node.url, f->secret, &o, err, sizeof err), CH_OK);
	atomic_store(&f->node.forge_rejects, 1);
	struct async_box b = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
	nng_time t0 = nng_clock();
	assert_int_equal(ch_submit_async(c, "echo", "b", 1, NULL, 0, on_async, &b), CH_OK);
	assert_int_equal(box_wait(&b, 1), 1);
	assert_true(nng_clock() - t0 >= 750);
	assert_int_equal(b.code, CH_ERR_TIMEOUT);
	assert_non_null(strstr(b.err, "does not verify"));
	assert_int_equal(atomic_load(&f->node.requests), 1);   /* sent once */
	assert_int_equal(atomic_load(&f->node.handshakes), 1); /* no new session */
	/* close wakes a request waiting out its deadline after a forged REJECT */
	atomic_store(&f->node.forge_rejects, 1);
	struct ch_client_options o2 = { .timeout_ms = 60000, .contexts = 2 };
	ch_client *c2 = NULL;
	assert_int_equal(ch_client_connect(&c2, f->node.url, f->secret, &o2, err, sizeof err),
	                 CH_OK);
	struct async_box b2 = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
	assert_int_equal(ch_submit_async(c2, "echo", "c", 1, NULL, 0, on_async, &b2), CH_OK);
	while (atomic_load(&f->node.requests) < 2)
		nng_msleep(5);
	nng_msleep(50); /* let the REJECT arrive and the request park */
	ch_client_close(c2);
	assert_int_equal(box_wait(&b2, 1), 1);
	assert_int_equal(b2.code, CH_ERR_CLOSED);
	ch_client_close(c);
	fake_stop(&f->node);
}

static void async_callback_runs_exactly_once(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->secret);
	ch_client *c = connect_ok(f, 2);
	struct async_box b = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
	assert_int_equal(ch_submit_async(c, "echo", "zz", 2, NULL, 100, on_async, &b), CH_OK);
	assert_int_equal(box_wait(&b, 1), 1);
	assert_int_equal(b.code, CH_OK);
	assert_string_equal(b.output, "echo:zz");
	/* the slot is recycled: a second request after a lost session */
	atomic_store(&f->node.forget_sessions, 1);
	assert_int_equal(ch_submit_async(c, "echo", "yy", 2, NULL, 100, on_async, &b), CH_OK);
	assert_int_equal(box_wait(&b, 2), 2);
	assert_int_equal(b.code, CH_OK);
	assert_string_equal(b.output, "echo:yy");
	assert_int_equal(atomic_load(&f->node.handshakes), 2);
	ch_client_close(c);
	/* nothing runs after close */
	assert_int_equal(b.calls, 2);
	fake_stop(&f->node);
}

static void many_async_requests_each_call_back_once(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->secret);
	ch_client *c = connect_ok(f, 3); /* more requests than async slots */
	struct async_box b = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
	for (int i = 0; i < 50; i++)
		assert_int_equal(ch_submit_async(c, "echo", "m", 1, NULL, 0, on_async, &b), CH_OK);
	assert_int_equal(box_wait(&b, 50), 50);
	assert_int_equal(f->node.task_id_last, 50);
	ch_client_close(c);
	assert_int_equal(b.calls, 50);
	fake_stop(&f->node);
}

static void close_aborts_pending_async_with_closed(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->secret);
	ch_client *c = connect_ok(f, 2);
	atomic_store(&f->node.silent, true);
	struct async_box b = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
	assert_int_equal(ch_submit_async(c, "echo", "q", 1, NULL, 60000, on_async, &b), CH_OK);
	ch_client_close(c); /* returns only after the callback ran */
	assert_int_equal(b.calls, 1);
	assert_int_equal(b.code, CH_ERR_CLOSED);
	fake_stop(&f->node);
}

static void silent_node_times_out_a_request(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->secret);
	struct ch_client_options o = { .timeout_ms = 200 };
	ch_client *c = NULL;
	char err[256];
	assert_int_equal(ch_client_connect(&c, f->node.url, f->secret, &o, err, sizeof err), CH_OK);
	atomic_store(&f->node.silent, true);
	uint64_t id = 0;
	nng_time t0 = nng_clock();
	assert_int_equal(ch_submit(c, "echo", "", 0, NULL, &id, err, sizeof err), CH_ERR_TIMEOUT);
	assert_true(nng_clock() - t0 < 3 * 200);
	assert_non_null(strstr(err, "within 200 ms"));
	ch_client_close(c);
	fake_stop(&f->node);
}

static void names_and_codes(void **state)
{
	(void)state;
	for (int code = 0; code >= CH_ERR_INTERNAL; code--) {
		assert_non_null(ch_strerror(code));
		assert_string_not_equal(ch_strerror(code), "unknown error");
	}
	assert_string_equal(ch_strerror(-999), "unknown error");
	for (int s = CH_TASK_UNKNOWN; s <= CH_TASK_LOST; s++)
		assert_int_equal(ch_task_state_parse(ch_task_state_name(s)), s);
	assert_string_equal(ch_task_state_name(42), "unknown");
	assert_int_equal(ch_task_state_parse("bogus"), CH_TASK_UNKNOWN);
	assert_int_equal(ch_task_state_parse(NULL), CH_TASK_UNKNOWN);
	assert_false(ch_task_state_is_final(CH_TASK_RUNNING));
	assert_true(ch_task_state_is_final(CH_TASK_SUCCEEDED));
	assert_true(ch_task_state_is_final(CH_TASK_LOST));
}

static void keygen_refuses_to_overwrite(void **state)
{
	struct fixture *f = *state;
	char err[256];
	assert_int_equal(ch_keygen(f->secret, err, sizeof err), CH_ERR_IO);
	assert_non_null(strstr(err, f->secret));
	struct stat st;
	assert_int_equal(stat(f->other_secret, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
}

static void bad_arguments_are_invalid(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->secret);
	ch_client *c = connect_ok(f, 1);
	char err[256];
	uint64_t id;
	assert_int_equal(ch_submit(c, "", "x", 1, NULL, &id, err, sizeof err), CH_ERR_INVALID);
	assert_int_equal(ch_submit(c, "echo", NULL, 3, NULL, &id, err, sizeof err), CH_ERR_INVALID);
	struct ch_task_opts to = { .restart = 7 };
	assert_int_equal(ch_submit(c, "echo", "x", 1, &to, &id, err, sizeof err), CH_ERR_INVALID);
	assert_int_equal(ch_client_connect(NULL, "x", "y", NULL, err, sizeof err), CH_ERR_INVALID);
	assert_int_equal(atomic_load(&f->node.requests), 0);
	ch_client_close(c);
	fake_stop(&f->node);
}

/* ------------------------------------------------------------------ */
/* cluster                                                             */

static void check_member_fields(json_t *m)
{
	static const char *const keys[] = { "id",   "name",     "addr",     "state",
		                            "incarnation", "tags", "capacity", "load",
		                            "since_ms", "self", "protocol_version" };
	assert_true(json_is_object(m));
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		if (json_object_get(m, keys[i]) == NULL)
			fail_msg("member lacks \"%s\"", keys[i]);
	}
	assert_int_equal(json_object_size(m), sizeof keys / sizeof keys[0]);
}

static void members_json_lists_each_member_with_every_field(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->secret);
	ch_client *c = connect_ok(f, 2);
	char err[256] = "stale";
	char *json = NULL;
	assert_int_equal(ch_members_json(c, &json, err, sizeof err), CH_OK);
	assert_string_equal(err, "");
	json_error_t je;
	json_t *a = json_loads(json, 0, &je);
	if (a == NULL)
		fail_msg("not JSON: %s", je.text);
	assert_true(json_is_array(a));
	assert_int_equal(json_array_size(a), 2);
	json_t *me = json_array_get(a, 0);
	check_member_fields(me);
	assert_string_equal(json_string_value(json_object_get(me, "id")),
	                    "00112233445566778899aabbccddeeff");
	assert_string_equal(json_string_value(json_object_get(me, "name")), "fake");
	assert_string_equal(json_string_value(json_object_get(me, "addr")), "tcp://127.0.0.1:7601");
	assert_string_equal(json_string_value(json_object_get(me, "state")), "alive");
	assert_int_equal(json_integer_value(json_object_get(me, "incarnation")), 3);
	json_t *tags = json_object_get(me, "tags");
	assert_true(json_is_array(tags));
	assert_int_equal(json_array_size(tags), 2);
	assert_string_equal(json_string_value(json_array_get(tags, 0)), "gpu");
	assert_string_equal(json_string_value(json_array_get(tags, 1)), "ssd");
	assert_int_equal(json_integer_value(json_object_get(me, "capacity")), 4);
	assert_int_equal(json_integer_value(json_object_get(me, "load")), 1);
	assert_int_equal(json_integer_value(json_object_get(me, "since_ms")), 1700000000123ll);
	assert_true(json_is_true(json_object_get(me, "self")));
	assert_int_equal(json_integer_value(json_object_get(me, "protocol_version")), 1);

	json_t *peer = json_array_get(a, 1);
	check_member_fields(peer);
	assert_string_equal(json_string_value(json_object_get(peer, "state")), "suspect");
	assert_true(json_is_false(json_object_get(peer, "self")));
	assert_true(json_is_array(json_object_get(peer, "tags")));
	assert_int_equal(json_array_size(json_object_get(peer, "tags")), 0);
	assert_int_equal(json_integer_value(json_object_get(peer, "incarnation")), 7);
	/* a byte that is not UTF-8 is replaced, the key is kept */
	assert_string_equal(json_string_value(json_object_get(peer, "name")), "n?2");
	json_decref(a);
	free(json);
	ch_client_close(c);
	fake_stop(&f->node);
}

static void status_json_carries_members_and_tags(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->secret);
	ch_client *c = connect_ok(f, 2);
	char err[256];
	char *json = NULL;
	assert_int_equal(ch_status_json(c, &json, err, sizeof err), CH_OK);
	json_error_t je;
	json_t *o = json_loads(json, 0, &je);
	assert_non_null(o);
	json_t *tags = json_object_get(o, "tags");
	assert_true(json_is_array(tags));
	assert_int_equal(json_array_size(tags), 2);
	assert_string_equal(json_string_value(json_array_get(tags, 0)), "gpu");
	json_t *members = json_object_get(o, "members");
	assert_true(json_is_array(members));
	assert_int_equal(json_array_size(members), 2);
	check_member_fields(json_array_get(members, 0));
	check_member_fields(json_array_get(members, 1));
	assert_string_equal(json_string_value(json_object_get(json_array_get(members, 1), "id")),
	                    "ffeeddccbbaa99887766554433221100");
	/* what was there before is still there */
	assert_string_equal(json_string_value(json_object_get(o, "name")), "fake");
	assert_int_equal(json_array_size(json_object_get(o, "pools")), 1);
	json_decref(o);
	free(json);
	ch_client_close(c);
	fake_stop(&f->node);
}

/* Asserts the fake node's last task request carried exactly `want`. */
static void assert_require_seen(struct fake_node *n, int seen_before, const char *want)
{
	int seen = 0;
	char got[FAKE_REQUIRE_MAX * FAKE_TAG_BYTES];
	fake_last_require(n, &seen, got, sizeof got);
	assert_int_equal(seen, seen_before + 1);
	assert_string_equal(got, want);
}

static void required_tags_reach_the_wire_for_every_kind_of_submit(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->secret);
	ch_client *c = connect_ok(f, 2);
	char err[256];
	const char *gpu_ssd[] = { "gpu", "ssd", NULL };
	struct ch_task_opts to = { .require = gpu_ssd };
	uint64_t id = 0;
	assert_int_equal(ch_submit(c, "echo", "a", 1, &to, &id, err, sizeof err), CH_OK);
	assert_require_seen(&f->node, 0, "gpu ssd");

	const char *one[] = { "big", NULL };
	const char *argv[] = { "/bin/true", NULL };
	struct ch_task_opts to1 = { .timeout_ms = 50, .argv = argv, .require = one };
	struct ch_result *r = NULL;
	assert_int_equal(ch_submit_await(c, "echo", "b", 1, &to1, 100, &r, err, sizeof err), CH_OK);
	ch_result_free(r);
	assert_require_seen(&f->node, 1, "big");

	struct async_box b = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
	assert_int_equal(ch_submit_async(c, "echo", "c", 1, &to, 100, on_async, &b), CH_OK);
	assert_int_equal(box_wait(&b, 1), 1);
	assert_int_equal(b.code, CH_OK);
	assert_require_seen(&f->node, 2, "gpu ssd");

	const void *payloads[2] = { "x", "y" };
	size_t lens[2] = { 1, 1 };
	struct ch_result **rs = NULL;
	assert_int_equal(ch_map(c, "echo", payloads, lens, 2, &to1, NULL, &rs, err, sizeof err),
	                 CH_OK);
	ch_results_free(rs, 2);
	assert_require_seen(&f->node, 3, "big");

	/* none given, none sent: NULL and an empty list alike */
	assert_int_equal(ch_submit(c, "echo", "d", 1, NULL, &id, err, sizeof err), CH_OK);
	assert_require_seen(&f->node, 4, "");
	const char *none[] = { NULL };
	struct ch_task_opts to0 = { .require = none };
	assert_int_equal(ch_submit(c, "echo", "e", 1, &to0, &id, err, sizeof err), CH_OK);
	assert_require_seen(&f->node, 5, "");
	ch_client_close(c);
	fake_stop(&f->node);
}

static void bad_required_tags_are_invalid_and_nothing_is_sent(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->secret);
	ch_client *c = connect_ok(f, 2);
	char err[256];
	uint64_t id = 0;
	const char *empty[] = { "gpu", "", NULL };
	struct ch_task_opts to = { .require = empty };
	assert_int_equal(ch_submit(c, "echo", "a", 1, &to, &id, err, sizeof err), CH_ERR_INVALID);
	assert_non_null(strstr(err, "empty"));
	const char *many[CH_REQUIRE_COUNT_MAX + 2];
	for (int i = 0; i <= CH_REQUIRE_COUNT_MAX; i++)
		many[i] = "t";
	many[CH_REQUIRE_COUNT_MAX + 1] = NULL;
	to.require = many;
	assert_int_equal(ch_submit(c, "echo", "a", 1, &to, &id, err, sizeof err), CH_ERR_INVALID);
	assert_non_null(strstr(err, "required tags"));
	const void *payloads[1] = { "x" };
	size_t lens[1] = { 1 };
	struct ch_result **rs = NULL;
	assert_int_equal(ch_map(c, "echo", payloads, lens, 1, &to, NULL, &rs, err, sizeof err),
	                 CH_ERR_INVALID);
	assert_null(rs);
	assert_int_equal(ch_submit_async(c, "echo", "a", 1, &to, 0, on_async, NULL),
	                 CH_ERR_INVALID);
	assert_int_equal(atomic_load(&f->node.requests), 0);
	/* exactly the limit is fine */
	many[CH_REQUIRE_COUNT_MAX] = NULL;
	assert_int_equal(ch_submit(c, "echo", "a", 1, &to, &id, err, sizeof err), CH_OK);
	char want[2 * CH_REQUIRE_COUNT_MAX + 1] = "";
	for (int i = 0; i < CH_REQUIRE_COUNT_MAX; i++)
		strcat(want, i > 0 ? " t" : "t");
	assert_require_seen(&f->node, 0, want);
	ch_client_close(c);
	fake_stop(&f->node);
}

/* ------------------------------------------------------------------ */
/* cache                                                               */

static void cache_seen(struct fake_node *n, char *name, size_t len, int *consistency,
                       uint32_t *flags, int *op)
{
	pthread_mutex_lock(&n->seen_mu);
	snprintf(name, len, "%s", n->cache_name);
	*consistency = n->cache_consistency;
	*flags = n->cache_flags;
	*op = n->cache_op;
	pthread_mutex_unlock(&n->seen_mu);
}

static void cache_calls_carry_their_options_and_hand_values_over(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->secret);
	ch_client *c = connect_ok(f, 2);
	char err[256], name[80];
	int consistency = -1, op = -1;
	uint32_t flags = 0;

	void *value = NULL;
	size_t len = 0;
	struct ch_cache_version v;
	int64_t ttl = 0;
	assert_int_equal(ch_cache_get(c, NULL, "k1", 2, &value, &len, &v, &ttl, err, sizeof err),
	                 CH_OK);
	assert_int_equal(len, 4);
	assert_memory_equal(value, "v:k1", 5); /* NUL-terminated */
	free(value);
	assert_int_equal(v.hlc, 42);
	assert_memory_equal(v.node, f->node.id, 16);
	assert_int_equal(ttl, -1);
	cache_seen(&f->node, name, sizeof name, &consistency, &flags, &op);
	assert_string_equal(name, "default");
	assert_int_equal(consistency, CH_CACHE_DEFAULT);
	assert_int_equal(op, CHORUS__CACHE_OP__CACHE_GET);

	assert_int_equal(ch_cache_get(c, NULL, "missing", 7, &value, &len, NULL, &ttl, err,
	                              sizeof err),
	                 CH_ERR_NOT_FOUND);
	assert_null(value);
	assert_int_equal(ttl, -2);

	struct ch_cache_opts o = { .cache = "sessions", .consistency = CH_CACHE_ALL };
	int applied = 0;
	assert_int_equal(ch_cache_put(c, &o, "k", 1, "x", 1, 0, CH_CACHE_NX | CH_CACHE_KEEPTTL, NULL,
	                              &applied, err, sizeof err),
	                 CH_OK);
	assert_int_equal(applied, 1);
	cache_seen(&f->node, name, sizeof name, &consistency, &flags, &op);
	assert_string_equal(name, "sessions");
	assert_int_equal(consistency, CH_CACHE_ALL);
	assert_int_equal(flags, CH_CACHE_NX | CH_CACHE_KEEPTTL);
	assert_int_equal(op, CHORUS__CACHE_OP__CACHE_PUT);

	void *old = NULL;
	size_t old_len = 0;
	assert_int_equal(ch_cache_getset(c, &o, "g", 1, "y", 1, 0, 0, &old, &old_len, NULL, err,
	                                  sizeof err),
	                 CH_OK);
	assert_int_equal(old_len, 3);
	assert_string_equal(old, "v:g");
	free(old);
	cache_seen(&f->node, name, sizeof name, &consistency, &flags, &op);
	assert_int_equal(flags, CH_CACHE_GET);

	int64_t result = 0;
	assert_int_equal(ch_cache_incr(c, NULL, "n", 1, -3, &result, err, sizeof err), CH_OK);
	assert_int_equal(result, 7);

	/* a scan step, and the multi-key loops */
	uint64_t next = 9;
	struct ch_bytes *keys = NULL;
	size_t n = 0;
	assert_int_equal(ch_cache_scan(c, NULL, 1, "a*", 5, &next, &keys, &n, err, sizeof err),
	                 CH_OK);
	assert_int_equal(next, 2);
	assert_int_equal(n, 2);
	assert_int_equal(keys[1].len, 2);
	assert_memory_equal(keys[1].data, "\xff\x00", 3);
	ch_bytes_free(keys, n);
	const void *mk[3] = { "a", "missing", "b" };
	size_t ml[3] = { 1, 7, 1 };
	struct ch_bytes *vals = NULL;
	assert_int_equal(ch_cache_mget(c, NULL, mk, ml, 3, &vals, err, sizeof err), CH_OK);
	assert_string_equal(vals[0].data, "v:a");
	assert_null(vals[1].data);
	assert_string_equal(vals[2].data, "v:b");
	ch_bytes_free(vals, 3);
	size_t written = 0;
	assert_int_equal(ch_cache_mset(c, NULL, mk, ml, mk, ml, 3, 1000, &written, err, sizeof err),
	                 CH_OK);
	assert_int_equal(written, 3);

	/* stats for every cache send "" (elsewhere "" means the default one) */
	struct ch_cache_stats *st = NULL;
	assert_int_equal(ch_cache_stats(c, NULL, &st, &n, err, sizeof err), CH_OK);
	assert_int_equal(n, 0);
	ch_cache_stats_free(st, n);
	cache_seen(&f->node, name, sizeof name, &consistency, &flags, &op);
	assert_string_equal(name, "");
	assert_int_equal(op, CHORUS__CACHE_OP__CACHE_STATS);
	ch_client_close(c);
	fake_stop(&f->node);
}

static void cache_moved_is_retried_until_answered(void **state)
{
	struct fixture *f = *state;
	f->node.cache_error_code = CH_ERR_MOVED;
	atomic_store(&f->node.cache_errors, 2);
	fake_start(&f->node, f->secret);
	ch_client *c = connect_ok(f, 1);
	char err[256];
	int64_t result = 0;
	assert_int_equal(ch_cache_incr(c, NULL, "n", 1, 5, &result, err, sizeof err), CH_OK);
	assert_int_equal(result, 15);
	assert_int_equal(atomic_load(&f->node.requests), 3);
	ch_client_close(c);
	fake_stop(&f->node);
}

static void cache_moved_gives_up_after_the_tries(void **state)
{
	struct fixture *f = *state;
	f->node.cache_error_code = CH_ERR_MOVED;
	atomic_store(&f->node.cache_errors, 1000);
	fake_start(&f->node, f->secret);
	ch_client *c = connect_ok(f, 1);
	char err[256];
	nng_time t0 = nng_clock();
	assert_int_equal(ch_cache_del(c, NULL, "k", 1, NULL, err, sizeof err), CH_ERR_MOVED);
	assert_int_equal(atomic_load(&f->node.requests), CH_CACHE_MOVED_TRIES);
	assert_non_null(strstr(err, "partition 7 is on another member (gave up after 6 tries"));
	assert_true(nng_clock() - t0 < 3000); /* the backoffs add up to under a second */
	ch_client_close(c);
	fake_stop(&f->node);
}

static void cache_get_or_compute_sends_the_task_and_tells_computed(void **state)
{
	struct fixture *f = *state;
	fake_start(&f->node, f->secret);
	ch_client *c = connect_ok(f, 1);
	char err[256];
	void *value = NULL;
	size_t len = 0;
	int computed = -1;
	struct ch_cache_version v;
	struct ch_cache_opts o = { .cache = "reports", .consistency = CH_CACHE_ONE };
	struct ch_task_opts t = { .timeout_ms = 1500 };
	assert_int_equal(ch_cache_get_or_compute(c, &o, "missing", 7, "sha", "in", 2, &t, 60000,
	                                         &value, &len, &computed, &v, err, sizeof err),
	                 CH_OK);
	assert_int_equal(len, 7);
	assert_string_equal(value, "sha(in)");
	free(value);
	assert_int_equal(computed, 1);
	assert_int_equal(v.hlc, 42);
	pthread_mutex_lock(&f->node.seen_mu);
	assert_int_equal(f->node.cache_op, CHORUS__CACHE_OP__CACHE_GET_OR_COMPUTE);
	assert_string_equal(f->node.cache_name, "reports");
	assert_int_equal(f->node.cache_consistency, CH_CACHE_ONE);
	assert_string_equal(f->node.cache_handler, "sha");
	assert_int_equal(f->node.cache_task_timeout_ms, 1500);
	assert_int_equal(f->node.cache_ttl, 60000);
	pthread_mutex_unlock(&f->node.seen_mu);
	/* a key that holds a value: not computed */
	assert_int_equal(ch_cache_get_or_compute(c, NULL, "k", 1, "sha", NULL, 0, NULL, 0, &value,
	                                         &len, &computed, NULL, err, sizeof err),
	                 CH_OK);
	assert_string_equal(value, "v:k");
	free(value);
	assert_int_equal(computed, 0);
	ch_client_close(c);
	fake_stop(&f->node);
}

static void cache_get_or_compute_retries_moved_not_a_failed_task(void **state)
{
	struct fixture *f = *state;
	f->node.cache_error_code = CH_ERR_MOVED;
	atomic_store(&f->node.cache_errors, 2);
	fake_start(&f->node, f->secret);
	ch_client *c = connect_ok(f, 1);
	char err[256];
	void *value = NULL;
	size_t len = 0;
	assert_int_equal(ch_cache_get_or_compute(c, NULL, "missing", 7, "echo", "x", 1, NULL, 0,
	                                         &value, &len, NULL, NULL, err, sizeof err),
	                 CH_OK);
	assert_string_equal(value, "echo(x)");
	free(value);
	assert_int_equal(atomic_load(&f->node.requests), 3);
	/* a task that failed is every caller's answer: not retried */
	f->node.cache_error_code = CH_ERR_TASK_FAILED;
	atomic_store(&f->node.cache_errors, 1000);
	assert_int_equal(ch_cache_get_or_compute(c, NULL, "missing", 7, "echo", "x", 1, NULL, 0,
	                                         &value, &len, NULL, NULL, err, sizeof err),
	                 CH_ERR_TASK_FAILED);
	assert_null(value);
	assert_string_equal(err, "partition 7 is on another member");
	assert_int_equal(atomic_load(&f->node.requests), 4);
	ch_client_close(c);
	fake_stop(&f->node);
}

static void cache_unavailable_is_not_retried(void **state)
{
	struct fixture *f = *state;
	f->node.cache_error_code = CH_ERR_UNAVAILABLE;
	atomic_store(&f->node.cache_errors, 1000);
	fake_start(&f->node, f->secret);
	ch_client *c = connect_ok(f, 1);
	char err[256];
	assert_int_equal(ch_cache_put(c, NULL, "k", 1, "v", 1, 0, 0, NULL, NULL, err, sizeof err),
	                 CH_ERR_UNAVAILABLE);
	assert_string_equal(err, "partition 7 is on another member");
	assert_int_equal(atomic_load(&f->node.requests), 1);
	ch_client_close(c);
	fake_stop(&f->node);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(requests_map_to_their_replies, setup, teardown),
		cmocka_unit_test_setup_teardown(wrong_secret_fails_with_auth_and_reason, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(forged_reject_of_a_request_is_ignored, setup, teardown),
		cmocka_unit_test_setup_teardown(forged_reject_of_an_async_request_is_ignored, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(client_credential_connects_as_a_client, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(group_readable_secret_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(nothing_listening_is_unreachable_within_the_timeout,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(missing_secret_file_is_an_io_error, setup, teardown),
		cmocka_unit_test_setup_teardown(lost_session_is_rebuilt_and_the_call_succeeds, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(session_refused_twice_fails_with_auth, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(error_reply_surfaces_code_and_message, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(map_assembles_results_in_order_across_batch_awaits,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(map_over_the_frame_cap_is_too_large, setup, teardown),
		cmocka_unit_test_setup_teardown(concurrent_callers_each_get_their_own_answer, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(async_callback_runs_exactly_once, setup, teardown),
		cmocka_unit_test_setup_teardown(many_async_requests_each_call_back_once, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(close_aborts_pending_async_with_closed, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(silent_node_times_out_a_request, setup, teardown),
		cmocka_unit_test(names_and_codes),
		cmocka_unit_test_setup_teardown(keygen_refuses_to_overwrite, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_arguments_are_invalid, setup, teardown),
		cmocka_unit_test_setup_teardown(members_json_lists_each_member_with_every_field, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(status_json_carries_members_and_tags, setup, teardown),
		cmocka_unit_test_setup_teardown(required_tags_reach_the_wire_for_every_kind_of_submit,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(bad_required_tags_are_invalid_and_nothing_is_sent,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(cache_calls_carry_their_options_and_hand_values_over,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(cache_moved_is_retried_until_answered, setup, teardown),
		cmocka_unit_test_setup_teardown(cache_moved_gives_up_after_the_tries, setup, teardown),
		cmocka_unit_test_setup_teardown(cache_unavailable_is_not_retried, setup, teardown),
		cmocka_unit_test_setup_teardown(cache_get_or_compute_sends_the_task_and_tells_computed,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(cache_get_or_compute_retries_moved_not_a_failed_task,
		                                setup, teardown),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	nng_fini(); /* joins nng's own threads, so valgrind sees no stacks left */
	return failed;
}
