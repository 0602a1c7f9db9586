/*
 * server.c - chorusd's event loop (see server.h).
 *
 * Owns: the nng rep0 listener and its contexts, the sealed sessions of
 * clients, per-peer counters of refused frames, parked requests (awaits
 * that wait for a task or a batch), and the glue between the task core
 * (node/core/tasks.c), the journal (store.c) and the supervisor (workers.c).
 *
 * Subtle parts:
 *  - Persist before promise: every reply is queued in the outbox and sent
 *    only after the iteration's sqlite transaction committed, so an id
 *    reaches a client only once its task is journaled.
 *  - nng's REQ resends a request (same bytes, same counter) on a new pipe
 *    after a reconnect. The replay window refuses it, so each session keeps
 *    its last requests by counter: a resend of an answered request gets the
 *    cached answer again (freshly sealed), a resend of a parked one moves the
 *    parked request to the new context. Nothing is executed twice.
 *  - A frame refused before decoding (truncated, oversized, forged, tampered,
 *    replayed, malformed) is counted per peer address and logged at most
 *    once per peer and kind every 10 s.
 */
#include "io/server.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <pthread.h>

#include "chorus.h"
#include "config.h"
#include "core/tasks.h"
#include "io/cluster.h"
#include "io/log.h"
#include "io/store.h"
#include "io/workers.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "proto/chorus.pb-c.h"
#include "proto/seal.h"
#include "worker/handlers.h"

#define SERVER_CONTEXTS 512
#define SESSIONS_MAX 4096
#define SESSION_IDLE_MS (30u * 60u * 1000u)
#define SESSION_RECENT 32            /* remembered requests per session */
#define RECENT_REPLY_BYTES_MAX (1u << 20)    /* bigger answers are not cached */
#define RECENT_CACHE_BYTES_MAX (64u << 20)   /* all sessions' cached answers */
#define PEERS_MAX 256
#define BATCH_RESULTS_DEFAULT 1000
#define BATCH_RESULTS_MAX 10000
#define LIST_LIMIT_MAX 10000
#define PURGE_INTERVAL_MS 1000
#define PURGE_ROWS_MAX 2000
#define WAIT_MS_MAX (24u * 3600u * 1000u)
#define REQUIRE_TAGS_MAX 16
/* a worker job must fit its frame cap (HANDLERS_JOB_FRAME_BYTES_MAX) */
#define PAYLOAD_BYTES_MAX (HANDLERS_JOB_FRAME_BYTES_MAX - 1024u * 1024u)

enum slot_state { SLOT_RECV, SLOT_READY, SLOT_BUSY, SLOT_PARKED, SLOT_SEND };

struct slot {
	struct server *srv;
	uint32_t index;
	nng_ctx ctx;
	nng_aio *aio;
	int state;
	int sending; /* the aio in flight is a send */
	struct waiter *waiter;
};

struct recent {
	uint64_t counter;    /* 0 = empty */
	uint8_t *reply;      /* plaintext envelope, NULL = pending or too big */
	size_t reply_len;
	int pending;
	struct waiter *waiter;
};

struct session {
	struct seal_session seal;
	uint64_t last_used_ms;
	struct recent recent[SESSION_RECENT];
	uint32_t recent_next;
	struct session *hnext;
	struct session *lnext, *lprev; /* LRU: head = most recent */
};

enum waiter_kind { WAIT_TASK, WAIT_BATCH };

struct waiter {
	int kind;
	struct slot *slot;
	struct session *sess;
	uint64_t counter;
	uint64_t request_id;
	uint64_t id;          /* task or batch */
	uint32_t from_index, max_results;
	uint64_t deadline_ms; /* wall clock */
	int is_submit;        /* reply as SubmitResp */
	struct waiter *next, *prev;
};

struct peer {
	char addr[64];
	uint64_t counts[8]; /* by seal verdict */
	uint64_t last_ms;
};

struct out {
	struct slot *slot;
	struct session *sess;  /* NULL: plaintext frame */
	uint64_t counter;      /* request counter (for the recent cache) */
	uint8_t *plain;        /* envelope (sealed at send) or raw frame */
	size_t len;
	struct out *next;
};

struct server {
	const struct config *cfg;
	nng_socket sock;
	struct slot slots[SERVER_CONTEXTS];

	pthread_mutex_t mu;
	uint32_t ready[SERVER_CONTEXTS];
	uint32_t ready_count;
	int wake_fd;
	int sig_fd;
	int lock_fd; /* flock on DATA/lock: one node per data dir */

	struct seal_keyring kr;
	uint8_t node_id[SEAL_ID_BYTES];
	char node_id_hex[SEAL_ID_BYTES * 2 + 1];
	uint64_t started_ms;

	struct session *sbuckets[1024];
	struct session *lru_head, *lru_tail;
	uint32_t session_count;

	struct peer peers[PEERS_MAX];
	uint32_t peer_count;

	struct waiter *waiters;
	struct out *out_head, *out_tail;

	struct store *store;
	struct tasks *tasks;
	struct workers *workers;
	struct handler_registry reg;
	uint32_t pool_count;
	char pool_names[WORKERS_POOLS_MAX][WORKERS_POOL_NAME_MAX + 1];

	/* set by core effects during an iteration */
	int finals_seen;
	int batches_progressed;
	int draining;
	uint64_t drain_deadline_ms;
	uint64_t next_purge_ms;
	uint64_t now_ms; /* wall clock read once per loop iteration (= now.wall_ms) */
	struct now now;  /* both clocks, read once per loop iteration (the task core's time) */

	struct cluster *cluster;
	uint32_t incarnation_saved;
	int leaving;
	uint64_t leave_deadline_ms;
	int closing; /* the loop ends after this iteration: answer every wait */
};

/* Temporary: the task core returns lib/err.h codes; a reply to a client
 * carries CH_ERR_*. To be replaced by err_to_public() (node/codec). */
static int core_err_public(int rc)
{
	switch (rc) {
	case ERR_OK: return 0;
	case ERR_FULL: return CH_ERR_FULL;
	case ERR_NOMEM: return CH_ERR_NOMEM;
	case ERR_NOT_FOUND: return CH_ERR_NOT_FOUND;
	case ERR_INVALID: return CH_ERR_INVALID;
	default: return CH_ERR_INTERNAL;
	}
}

/* Reads both clocks once, for an iteration of the loop. */
static void now_read(struct server *srv)
{
	srv->now = clock_read();
	srv->now_ms = srv->now.wall_ms;
}

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- nng side: callbacks only post to the loop ---- */

static void slot_cb(void *arg)
{
	struct slot *sl = arg;
	struct server *srv = sl->srv;
	pthread_mutex_lock(&srv->mu);
	srv->ready[srv->ready_count++] = sl->index;
	pthread_mutex_unlock(&srv->mu);
	uint64_t one = 1;
	ssize_t n = write(srv->wake_fd, &one, sizeof(one));
	(void)n; /* EAGAIN: the counter is already non-zero, the loop wakes */
}

static void slot_recv(struct slot *sl)
{
	sl->state = SLOT_RECV;
	sl->sending = 0;
	sl->waiter = NULL;
	nng_aio_set_msg(sl->aio, NULL);
	nng_ctx_recv(sl->ctx, sl->aio);
}

/* ---- peers and refused frames ---- */

static void peer_addr(nng_msg *msg, char *buf, size_t len)
{
	nng_pipe p = nng_msg_get_pipe(msg);
	nng_sockaddr sa;
	snprintf(buf, len, "unknown");
	if (nng_pipe_id(p) < 0 || nng_pipe_get_addr(p, NNG_OPT_REMADDR, &sa) != 0)
		return;
	if (sa.s_family == NNG_AF_INET) {
		const uint8_t *a = (const uint8_t *)&sa.s_in.sa_addr;
		snprintf(buf, len, "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
	} else if (sa.s_family == NNG_AF_IPC) {
		snprintf(buf, len, "ipc");
	} else if (sa.s_family == NNG_AF_INPROC) {
		snprintf(buf, len, "inproc");
	}
}

static struct peer *peer_get(struct server *srv, const char *addr)
{
	for (uint32_t i = 0; i < srv->peer_count; i++)
		if (strcmp(srv->peers[i].addr, addr) == 0)
			return &srv->peers[i];
	struct peer *p;
	if (srv->peer_count < PEERS_MAX) {
		p = &srv->peers[srv->peer_count++];
	} else { /* evict the least recently seen */
		p = &srv->peers[0];
		for (uint32_t i = 1; i < PEERS_MAX; i++)
			if (srv->peers[i].last_ms < p->last_ms)
				p = &srv->peers[i];
	}
	memset(p, 0, sizeof(*p));
	snprintf(p->addr, sizeof(p->addr), "%s", addr);
	return p;
}

static void refuse(struct server *srv, nng_msg *msg, int verdict, size_t len)
{
	char addr[64];
	peer_addr(msg, addr, sizeof(addr));
	struct peer *p = peer_get(srv, addr);
	p->counts[verdict & 7]++;
	p->last_ms = wall_ms();
	char key[96];
	snprintf(key, sizeof(key), "%s/%s", addr, seal_verdict_name(verdict));
	log_limited(LOG_WARN, "link", key, 10000, "dropped %s frame (%zu bytes) from %s",
	            seal_verdict_name(verdict), len, addr);
}

/* ---- sessions ---- */

static struct session **sess_bucket(struct server *srv, uint64_t id)
{
	return &srv->sbuckets[(id * 0x9E3779B97F4A7C15ULL) >> 54];
}

static void lru_unlink(struct server *srv, struct session *s)
{
	if (s->lprev)
		s->lprev->lnext = s->lnext;
	else
		srv->lru_head = s->lnext;
	if (s->lnext)
		s->lnext->lprev = s->lprev;
	else
		srv->lru_tail = s->lprev;
	s->lnext = s->lprev = NULL;
}

static void lru_push(struct server *srv, struct session *s)
{
	s->lprev = NULL;
	s->lnext = srv->lru_head;
	if (srv->lru_head)
		srv->lru_head->lprev = s;
	else
		srv->lru_tail = s;
	srv->lru_head = s;
}

static struct session *sess_find(struct server *srv, uint64_t id)
{
	struct session *s = *sess_bucket(srv, id);
	while (s && s->seal.session_id != id)
		s = s->hnext;
	return s;
}

static size_t recent_cache_bytes; /* loop thread only */

static void recent_clear(struct recent *r)
{
	if (r->reply)
		recent_cache_bytes -= r->reply_len;
	free(r->reply);
	memset(r, 0, sizeof(*r));
}

static void waiter_unlink(struct server *srv, struct waiter *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		srv->waiters = w->next;
	if (w->next)
		w->next->prev = w->prev;
	w->next = w->prev = NULL;
}

static void sess_free(struct server *srv, struct session *s)
{
	struct session **pp = sess_bucket(srv, s->seal.session_id);
	while (*pp != s)
		pp = &(*pp)->hnext;
	*pp = s->hnext;
	lru_unlink(srv, s);
	/* parked requests of this session lose their session: drop them */
	for (struct waiter *w = srv->waiters, *n; w; w = n) {
		n = w->next;
		if (w->sess == s) {
			waiter_unlink(srv, w);
			slot_recv(w->slot);
			free(w);
		}
	}
	for (struct out *o = srv->out_head; o; o = o->next)
		if (o->sess == s)
			o->sess = NULL, o->len = 0; /* dropped at send */
	for (int i = 0; i < SESSION_RECENT; i++)
		recent_clear(&s->recent[i]);
	sodium_memzero(&s->seal, sizeof(s->seal));
	free(s);
	srv->session_count--;
}

static struct session *sess_add(struct server *srv, const struct seal_session *ss)
{
	if (srv->session_count >= SESSIONS_MAX)
		sess_free(srv, srv->lru_tail);
	struct session *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->seal = *ss;
	s->last_used_ms = wall_ms();
	struct session **b = sess_bucket(srv, s->seal.session_id);
	s->hnext = *b;
	*b = s;
	lru_push(srv, s);
	srv->session_count++;
	return s;
}

static struct recent *recent_find(struct session *s, uint64_t counter)
{
	for (int i = 0; i < SESSION_RECENT; i++)
		if (s->recent[i].counter == counter)
			return &s->recent[i];
	return NULL;
}

static struct recent *recent_add(struct server *srv, struct session *s, uint64_t counter)
{
	struct recent *r = &s->recent[s->recent_next];
	s->recent_next = (s->recent_next + 1) % SESSION_RECENT;
	if (r->pending && r->waiter) {
		/* a parked request that old is still parked: forget the link */
		r->waiter = NULL;
	}
	(void)srv;
	recent_clear(r);
	r->counter = counter;
	r->pending = 1;
	return r;
}

/* ---- replies ---- */

static void out_push(struct server *srv, struct slot *sl, struct session *sess, uint64_t counter,
                     uint8_t *plain, size_t len)
{
	struct out *o = calloc(1, sizeof(*o));
	if (!o) {
		free(plain);
		slot_recv(sl);
		return;
	}
	o->slot = sl;
	o->sess = sess;
	o->counter = counter;
	o->plain = plain;
	o->len = len;
	sl->state = SLOT_BUSY;
	if (srv->out_tail)
		srv->out_tail->next = o;
	else
		srv->out_head = o;
	srv->out_tail = o;
}

static void envelope_init(struct server *srv, Chorus__Envelope *env, uint64_t request_id)
{
	chorus__envelope__init(env);
	env->version = CH_PROTOCOL_VERSION;
	env->sender.data = srv->node_id;
	env->sender.len = SEAL_ID_BYTES;
	env->request_id = request_id;
}

/* Packs an envelope around a body and queues it for the slot. */
static void reply_env(struct server *srv, struct slot *sl, struct session *sess, uint64_t counter,
                      Chorus__Envelope *env)
{
	size_t n = chorus__envelope__get_packed_size(env);
	uint8_t *buf = malloc(n ? n : 1);
	if (!buf) {
		slot_recv(sl);
		return;
	}
	chorus__envelope__pack(env, buf);
	out_push(srv, sl, sess, counter, buf, n);
}

static void reply_error(struct server *srv, struct slot *sl, struct session *sess, uint64_t counter,
                        uint64_t request_id, int code, const char *fmt, ...)
	__attribute__((format(printf, 7, 8)));
static void reply_error(struct server *srv, struct slot *sl, struct session *sess, uint64_t counter,
                        uint64_t request_id, int code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	Chorus__Error e = CHORUS__ERROR__INIT;
	e.code = code;
	e.message = msg;
	Chorus__Envelope env;
	envelope_init(srv, &env, request_id);
	env.body_case = CHORUS__ENVELOPE__BODY_ERROR;
	env.error = &e;
	reply_env(srv, sl, sess, counter, &env);
}

static void reply_raw(struct server *srv, struct slot *sl, uint8_t *frame, size_t len)
{
	out_push(srv, sl, NULL, 0, frame, len);
}

/* Seals and sends every queued reply (after the commit). */
static void outbox_send(struct server *srv)
{
	struct out *o = srv->out_head;
	srv->out_head = srv->out_tail = NULL;
	while (o) {
		struct out *next = o->next;
		struct slot *sl = o->slot;
		nng_msg *msg = NULL;
		int ok = 0;
		if (o->sess) {
			struct recent *r = o->counter ? recent_find(o->sess, o->counter) : NULL;
			if (r) {
				r->pending = 0;
				r->waiter = NULL;
				if (!r->reply && o->len <= RECENT_REPLY_BYTES_MAX &&
				    recent_cache_bytes + o->len <= RECENT_CACHE_BYTES_MAX) {
					r->reply = malloc(o->len ? o->len : 1);
					if (r->reply) {
						memcpy(r->reply, o->plain, o->len);
						r->reply_len = o->len;
						recent_cache_bytes += o->len;
					}
				}
			}
			if (nng_msg_alloc(&msg, o->len + SEAL_OVERHEAD_BYTES) == 0) {
				seal_frame_seal(&o->sess->seal, o->plain, o->len, nng_msg_body(msg));
				ok = 1;
			}
		} else if (o->len) {
			if (nng_msg_alloc(&msg, o->len) == 0) {
				memcpy(nng_msg_body(msg), o->plain, o->len);
				ok = 1;
			}
		}
		if (ok) {
			sl->state = SLOT_SEND;
			sl->sending = 1;
			nng_aio_set_msg(sl->aio, msg);
			nng_ctx_send(sl->ctx, sl->aio);
		} else {
			if (msg)
				nng_msg_free(msg);
			slot_recv(sl);
		}
		free(o->plain);
		free(o);
		o = next;
	}
}

/* ---- task <-> protobuf ---- */

static void result_fill(struct server *srv, Chorus__TaskResult *r, const struct task *t)
{
	(void)srv;
	chorus__task_result__init(r);
	r->task_id = t->id;
	r->state = (Chorus__TaskState)t->state;
	r->output.data = t->output;
	r->output.len = t->output_len;
	r->exit_code = t->exit_code;
	r->error = t->error ? t->error : (char *)"";
	r->attempts = t->attempts;
	r->node = t->node ? t->node : (char *)"";
	r->submitted_ms = t->submitted_ms;
	r->started_ms = t->started_ms;
	r->finished_ms = t->finished_ms;
	r->handler = t->handler ? t->handler : (char *)"";
	r->batch_id = t->batch_id;
	r->batch_index = t->batch_index;
}

/* A task by id: from the table, else from the journal (*owned set). */
static int task_lookup(struct server *srv, uint64_t id, const struct task **t, struct task **owned)
{
	*owned = NULL;
	*t = tasks_get(srv->tasks, id);
	if (*t)
		return 0;
	int rc = store_task_get(srv->store, id, owned);
	if (rc == 0)
		*t = *owned;
	return rc;
}

static uint32_t handler_pool(struct server *srv, const char *handler)
{
	for (uint32_t p = 0; p < srv->cfg->pool_count; p++)
		for (uint32_t h = 0; h < srv->cfg->pools[p].handler_count; h++)
			if (strcmp(srv->cfg->pools[p].handlers[h], handler) == 0)
				return p + 1;
	return 0;
}

/* Checks a task spec; on error fills msg and returns a CH_ERR code. */
static int spec_check(struct server *srv, const char *handler, const Chorus__TaskOptions *o,
                      size_t payload_len, char *msg, size_t len)
{
	if (!handler || !*handler) {
		snprintf(msg, len, "no handler given");
		return CH_ERR_INVALID;
	}
	if (!handlers_find(&srv->reg, handler)) {
		char known[512] = "";
		size_t off = 0;
		for (uint32_t i = 0; i < srv->reg.count && off < sizeof(known) - 70; i++)
			off += (size_t)snprintf(known + off, sizeof(known) - off, "%s%s", i ? ", " : "",
			                        srv->reg.entries[i].name);
		snprintf(msg, len, "unknown handler '%.64s' (known: %s)", handler, known);
		return CH_ERR_UNKNOWN_HANDLER;
	}
	if (strcmp(handler, "exec") == 0) {
		if (!o || o->n_argv == 0) {
			snprintf(msg, len, "exec needs a command (argv)");
			return CH_ERR_INVALID;
		}
		if (!handlers_exec_allowed(&srv->reg, o->argv[0])) {
			snprintf(msg, len, "exec: '%.200s' is not allowlisted (see [exec] allow)", o->argv[0]);
			return CH_ERR_DENIED;
		}
	}
	if (o && o->restart != CHORUS__RESTART_POLICY__RESTART_TEMPORARY &&
	    o->restart != CHORUS__RESTART_POLICY__RESTART_TRANSIENT) {
		snprintf(msg, len, "unknown restart policy %d", (int)o->restart);
		return CH_ERR_INVALID;
	}
	if (payload_len > PAYLOAD_BYTES_MAX) {
		snprintf(msg, len, "payload of %zu bytes is over the %u-byte limit", payload_len,
		         PAYLOAD_BYTES_MAX);
		return CH_ERR_TOO_LARGE;
	}
	if (o && o->n_require > REQUIRE_TAGS_MAX) {
		snprintf(msg, len, "%zu required tags: at most %u", o->n_require, REQUIRE_TAGS_MAX);
		return CH_ERR_INVALID;
	}
	for (size_t i = 0; o && i < o->n_require; i++) {
		if (!o->require[i][0] || strlen(o->require[i]) > 31) {
			snprintf(msg, len, "required tag '%.40s' is empty or longer than 31 bytes",
			         o->require[i]);
			return CH_ERR_INVALID;
		}
	}
	if (o && o->max_attempts > 1000) {
		snprintf(msg, len, "max_attempts %u is over 1000", o->max_attempts);
		return CH_ERR_INVALID;
	}
	return 0;
}

/* Copies n strings into a NULL-terminated array (*dst stays NULL when n is
 * 0). On ENOMEM returns -1; what was copied is counted in *count, so
 * task_free() releases it. */
static int strv_dup(char *const *src, size_t n, char ***dst, uint32_t *count)
{
	if (n == 0)
		return 0;
	*dst = calloc(n + 1, sizeof(char *));
	if (!*dst)
		return -1;
	for (size_t i = 0; i < n; i++) {
		(*dst)[i] = strdup(src[i]);
		if (!(*dst)[i])
			return -1;
		*count = (uint32_t)(i + 1);
	}
	return 0;
}

static struct task *task_from_spec(struct server *srv, const char *handler, const uint8_t *payload,
                                   size_t payload_len, const Chorus__TaskOptions *o)
{
	struct task *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->handler = strdup(handler);
	t->payload = malloc(payload_len ? payload_len : 1);
	if (!t->handler || !t->payload) {
		task_free(t);
		return NULL;
	}
	if (payload_len)
		memcpy(t->payload, payload, payload_len);
	t->payload_len = payload_len;
	if (o) {
		t->opts.timeout_ms = o->timeout_ms;
		t->opts.restart = o->restart == CHORUS__RESTART_POLICY__RESTART_TRANSIENT
		                      ? TASK_RESTART_TRANSIENT
		                      : TASK_RESTART_TEMPORARY;
		t->opts.max_attempts = o->max_attempts;
		t->opts.backoff_ms = o->backoff_ms;
		if (strv_dup(o->argv, o->n_argv, &t->argv, &t->argc) != 0 ||
		    strv_dup(o->require, o->n_require, &t->require, &t->require_count) != 0) {
			task_free(t);
			return NULL;
		}
	}
	t->pool = handler_pool(srv, handler);
	return t;
}

/* ---- parked requests ---- */

static void park(struct server *srv, struct slot *sl, struct session *sess, uint64_t counter,
                 uint64_t request_id, int kind, uint64_t id, uint32_t wait_ms, int is_submit,
                 uint32_t from, uint32_t max)
{
	struct waiter *w = calloc(1, sizeof(*w));
	if (!w) {
		reply_error(srv, sl, sess, counter, request_id, CH_ERR_NOMEM, "out of memory");
		return;
	}
	w->kind = kind;
	w->slot = sl;
	w->sess = sess;
	w->counter = counter;
	w->request_id = request_id;
	w->id = id;
	w->from_index = from;
	w->max_results = max;
	w->is_submit = is_submit;
	if (wait_ms > WAIT_MS_MAX)
		wait_ms = WAIT_MS_MAX;
	w->deadline_ms = wall_ms() + wait_ms;
	w->next = srv->waiters;
	if (srv->waiters)
		srv->waiters->prev = w;
	srv->waiters = w;
	sl->state = SLOT_PARKED;
	sl->waiter = w;
	struct recent *r = recent_find(sess, counter);
	if (r)
		r->waiter = w;
}

/* Replies to a task waiter with the task's current state. */
static void answer_task(struct server *srv, struct slot *sl, struct session *sess, uint64_t counter,
                        uint64_t request_id, uint64_t task_id, int is_submit)
{
	const struct task *t;
	struct task *owned;
	int rc = task_lookup(srv, task_id, &t, &owned);
	if (rc) {
		reply_error(srv, sl, sess, counter, request_id, CH_ERR_NOT_FOUND,
		            "no task %" PRIu64 " (unknown, or its result expired)", task_id);
		return;
	}
	Chorus__TaskResult r;
	result_fill(srv, &r, t);
	Chorus__Envelope env;
	envelope_init(srv, &env, request_id);
	Chorus__SubmitResp sr = CHORUS__SUBMIT_RESP__INIT;
	Chorus__AwaitResp ar = CHORUS__AWAIT_RESP__INIT;
	if (is_submit) {
		sr.task_id = task_id;
		sr.result = &r;
		env.body_case = CHORUS__ENVELOPE__BODY_SUBMIT_RESP;
		env.submit_resp = &sr;
	} else {
		ar.result = &r;
		env.body_case = CHORUS__ENVELOPE__BODY_AWAIT_RESP;
		env.await_resp = &ar;
	}
	reply_env(srv, sl, sess, counter, &env);
	task_free(owned);
}

struct batch_collect {
	Chorus__TaskResult **results;
	struct task **tasks;
	uint32_t n, cap, expect;
	int gap;
};

static int collect_cb(void *arg, struct task *t)
{
	struct batch_collect *bc = arg;
	if (bc->gap || t->batch_index != bc->expect || !task_state_is_final(t->state)) {
		bc->gap = 1;
		task_free(t);
		return 1; /* stop: results are contiguous */
	}
	bc->tasks[bc->n++] = t;
	bc->expect++;
	return bc->n >= bc->cap;
}

/* Answers a batch waiter if results from its index exist (or force).
 * Returns 1 when answered. */
static int answer_batch(struct server *srv, struct slot *sl, struct session *sess, uint64_t counter,
                        uint64_t request_id, uint64_t batch_id, uint32_t from, uint32_t max,
                        int force)
{
	struct batch b;
	const struct batch *held = tasks_get_batch(srv->tasks, batch_id);
	if (held) {
		b = *held;
	} else if (store_batch_get(srv->store, batch_id, &b) != 0) {
		reply_error(srv, sl, sess, counter, request_id, CH_ERR_NOT_FOUND,
		            "no batch %" PRIu64 " (unknown, or its results expired)", batch_id);
		return 1;
	}
	if (max == 0)
		max = BATCH_RESULTS_DEFAULT;
	if (max > BATCH_RESULTS_MAX)
		max = BATCH_RESULTS_MAX;
	struct batch_collect bc = {.cap = max, .expect = from};
	bc.tasks = calloc(max, sizeof(*bc.tasks));
	if (!bc.tasks) {
		reply_error(srv, sl, sess, counter, request_id, CH_ERR_NOMEM, "out of memory");
		return 1;
	}
	if (from < b.total)
		(void)store_batch_tasks(srv->store, batch_id, from, max, collect_cb, &bc);
	if (bc.n == 0 && !force && from < b.total) {
		free(bc.tasks);
		return 0;
	}
	Chorus__TaskResult *rs = calloc(bc.n ? bc.n : 1, sizeof(*rs));
	Chorus__TaskResult **rp = calloc(bc.n ? bc.n : 1, sizeof(*rp));
	if (!rs || !rp) {
		for (uint32_t i = 0; i < bc.n; i++)
			task_free(bc.tasks[i]);
		free(bc.tasks);
		free(rs);
		free(rp);
		reply_error(srv, sl, sess, counter, request_id, CH_ERR_NOMEM, "out of memory");
		return 1;
	}
	for (uint32_t i = 0; i < bc.n; i++) {
		result_fill(srv, &rs[i], bc.tasks[i]);
		rp[i] = &rs[i];
	}
	Chorus__BatchAwaitResp br = CHORUS__BATCH_AWAIT_RESP__INIT;
	br.batch_id = batch_id;
	br.total = b.total;
	br.done = b.done;
	br.from_index = from;
	br.n_results = bc.n;
	br.results = rp;
	Chorus__Envelope env;
	envelope_init(srv, &env, request_id);
	env.body_case = CHORUS__ENVELOPE__BODY_BATCH_AWAIT_RESP;
	env.batch_await_resp = &br;
	reply_env(srv, sl, sess, counter, &env);
	for (uint32_t i = 0; i < bc.n; i++)
		task_free(bc.tasks[i]);
	free(bc.tasks);
	free(rs);
	free(rp);
	return 1;
}

/* After a commit: answers parked requests whose task is final, whose batch
 * has new results, or whose wait ran out. */
static void serve_waiters(struct server *srv, uint64_t now_ms)
{
	for (struct waiter *w = srv->waiters, *n; w; w = n) {
		n = w->next;
		/* a drain keeps waits open while their tasks finish (a
		 * coordinator waits here for the tasks it placed); only the
		 * last iteration answers what is left */
		int expired = now_ms >= w->deadline_ms || srv->closing;
		int done = 0;
		if (w->kind == WAIT_TASK) {
			const struct task *t = tasks_get(srv->tasks, w->id);
			/* draining: a task a coordinator placed here that has not
			 * started will not start; hand it back at once */
			int handed_back = srv->draining && t && t->ephemeral && t->state == TASK_QUEUED;
			if (expired || handed_back || !t || task_state_is_final(t->state)) {
				answer_task(srv, w->slot, w->sess, w->counter, w->request_id, w->id,
				            w->is_submit);
				done = 1;
			}
		} else if (expired || srv->batches_progressed) {
			done = answer_batch(srv, w->slot, w->sess, w->counter, w->request_id, w->id,
			                    w->from_index, w->max_results, expired);
		}
		if (done) {
			waiter_unlink(srv, w);
			free(w);
		}
	}
}

static uint64_t waiters_next_deadline(const struct server *srv)
{
	uint64_t next = UINT64_MAX;
	for (const struct waiter *w = srv->waiters; w; w = w->next)
		if (w->deadline_ms < next)
			next = w->deadline_ms;
	return next;
}

/* ---- request handlers ---- */

struct req {
	struct server *srv;
	struct slot *sl;
	struct session *sess;
	uint64_t counter;
	uint64_t request_id;
};

/* Answers request q with one body (the envelope's union member `member`). */
#define reply_q(q, body, member, value)                                                        \
	do {                                                                                   \
		Chorus__Envelope env_;                                                         \
		envelope_init((q)->srv, &env_, (q)->request_id);                               \
		env_.body_case = (body);                                                       \
		env_.member = (value);                                                         \
		reply_env((q)->srv, (q)->sl, (q)->sess, (q)->counter, &env_);                  \
	} while (0)

/* SIGTERM: a draining node takes no new work. 1 when q was refused. */
static int refuse_if_draining(struct req *q)
{
	if (!q->srv->draining)
		return 0;
	reply_error(q->srv, q->sl, q->sess, q->counter, q->request_id, CH_ERR_SHUTTING_DOWN,
	            "node is shutting down: not accepting tasks");
	return 1;
}

static void handle_submit(struct req *q, const Chorus__SubmitReq *m)
{
	struct server *srv = q->srv;
	char msg[600];
	if (refuse_if_draining(q))
		return;
	if (!m->task) {
		reply_error(srv, q->sl, q->sess, q->counter, q->request_id, CH_ERR_INVALID,
		            "submit without a task");
		return;
	}
	int rc = spec_check(srv, m->task->handler, m->task->opts, m->task->payload.len, msg,
	                    sizeof(msg));
	if (rc) {
		log_limited(LOG_WARN, "tasks", "submit-refused", 10000, "submit refused: %s", msg);
		reply_error(srv, q->sl, q->sess, q->counter, q->request_id, rc, "%s", msg);
		return;
	}
	struct task *t = task_from_spec(srv, m->task->handler, m->task->payload.data,
	                                m->task->payload.len, m->task->opts);
	if (!t) {
		reply_error(srv, q->sl, q->sess, q->counter, q->request_id, CH_ERR_NOMEM, "out of memory");
		return;
	}
	if (m->origin.len) {
		/* placed here by a coordinator: run once, journal nothing, the
		 * coordinator owns the task and its restart policy */
		if (m->origin.len != SEAL_ID_BYTES) {
			task_free(t);
			reply_error(srv, q->sl, q->sess, q->counter, q->request_id, CH_ERR_INVALID,
			            "origin must be a 16-byte node id");
			return;
		}
		t->ephemeral = 1;
		memcpy(t->origin, m->origin.data, SEAL_ID_BYTES);
		t->origin_task = m->origin_task;
		t->opts.restart = TASK_RESTART_TEMPORARY;
		t->opts.max_attempts = 1;
	}
	uint64_t id = 0;
	rc = tasks_submit(srv->tasks, t, &srv->now, &id);
	if (rc) {
		task_free(t);
		log_limited(LOG_WARN, "tasks", "queue-full", 10000, "queue full (%u tasks): submit refused",
		            srv->cfg->queue_max);
		reply_error(srv, q->sl, q->sess, q->counter, q->request_id, core_err_public(rc),
		            "queue full (%u tasks held): nothing accepted, retry later",
		            srv->cfg->queue_max);
		return;
	}
	if (m->wait_ms) {
		park(srv, q->sl, q->sess, q->counter, q->request_id, WAIT_TASK, id, m->wait_ms, 1, 0, 0);
		return;
	}
	Chorus__SubmitResp sr = CHORUS__SUBMIT_RESP__INIT;
	sr.task_id = id;
	reply_q(q, CHORUS__ENVELOPE__BODY_SUBMIT_RESP, submit_resp, &sr);
}

static void handle_map(struct req *q, const Chorus__MapReq *m)
{
	struct server *srv = q->srv;
	char msg[600];
	if (refuse_if_draining(q))
		return;
	size_t biggest = 0;
	for (size_t i = 0; i < m->n_payloads; i++)
		if (m->payloads[i].len > biggest)
			biggest = m->payloads[i].len;
	int rc = spec_check(srv, m->handler, m->opts, biggest, msg, sizeof(msg));
	if (rc) {
		log_limited(LOG_WARN, "tasks", "map-refused", 10000, "fan-out refused: %s", msg);
		reply_error(srv, q->sl, q->sess, q->counter, q->request_id, rc, "%s", msg);
		return;
	}
	if (m->n_payloads == 0 || m->n_payloads > srv->cfg->queue_max) {
		reply_error(srv, q->sl, q->sess, q->counter, q->request_id, CH_ERR_INVALID,
		            "fan-out of %zu tasks: must be 1..%u", m->n_payloads, srv->cfg->queue_max);
		return;
	}
	uint32_t n = (uint32_t)m->n_payloads;
	struct task **tv = calloc(n, sizeof(*tv));
	if (!tv) {
		reply_error(srv, q->sl, q->sess, q->counter, q->request_id, CH_ERR_NOMEM, "out of memory");
		return;
	}
	for (uint32_t i = 0; i < n; i++) {
		tv[i] = task_from_spec(srv, m->handler, m->payloads[i].data, m->payloads[i].len, m->opts);
		if (!tv[i]) {
			for (uint32_t j = 0; j < i; j++)
				task_free(tv[j]);
			free(tv);
			reply_error(srv, q->sl, q->sess, q->counter, q->request_id, CH_ERR_NOMEM,
			            "out of memory");
			return;
		}
	}
	uint64_t batch_id = 0;
	rc = tasks_submit_batch(srv->tasks, tv, n, m->max_concurrency, m->deadline_ms, &srv->now,
	                        &batch_id);
	if (rc) {
		for (uint32_t i = 0; i < n; i++)
			task_free(tv[i]);
		free(tv);
		reply_error(srv, q->sl, q->sess, q->counter, q->request_id, core_err_public(rc),
		            "queue full: a fan-out of %u tasks does not fit (limit %u held); nothing "
		            "accepted",
		            n, srv->cfg->queue_max);
		return;
	}
	free(tv);
	Chorus__MapResp mr = CHORUS__MAP_RESP__INIT;
	mr.batch_id = batch_id;
	mr.count = n;
	reply_q(q, CHORUS__ENVELOPE__BODY_MAP_RESP, map_resp, &mr);
}

static void handle_await(struct req *q, const Chorus__AwaitReq *m)
{
	struct server *srv = q->srv;
	const struct task *t = tasks_get(srv->tasks, m->task_id);
	if (t && !task_state_is_final(t->state) && m->wait_ms && !srv->closing) {
		park(srv, q->sl, q->sess, q->counter, q->request_id, WAIT_TASK, m->task_id, m->wait_ms, 0,
		     0, 0);
		return;
	}
	answer_task(srv, q->sl, q->sess, q->counter, q->request_id, m->task_id, 0);
}

static void handle_batch_await(struct req *q, const Chorus__BatchAwaitReq *m)
{
	struct server *srv = q->srv;
	int force = m->wait_ms == 0 || srv->closing;
	if (!answer_batch(srv, q->sl, q->sess, q->counter, q->request_id, m->batch_id, m->from_index,
	                  m->max_results, force))
		park(srv, q->sl, q->sess, q->counter, q->request_id, WAIT_BATCH, m->batch_id, m->wait_ms,
		     0, m->from_index, m->max_results);
}

static void handle_cancel(struct req *q, const Chorus__CancelReq *m)
{
	struct server *srv = q->srv;
	Chorus__CancelResp cr = CHORUS__CANCEL_RESP__INIT;
	const struct now *now = &srv->now;
	if (m->origin.len == SEAL_ID_BYTES) {
		const struct task *t = tasks_find_origin(srv->tasks, m->origin.data, m->origin_task);
		if (t && tasks_cancel(srv->tasks, t->id, now) == 0)
			cr.cancelled = 1;
	}
	if (m->batch_id) {
		if (!tasks_get_batch(srv->tasks, m->batch_id)) {
			struct batch b;
			if (store_batch_get(srv->store, m->batch_id, &b) != 0) {
				reply_error(srv, q->sl, q->sess, q->counter, q->request_id, CH_ERR_NOT_FOUND,
				            "no batch %" PRIu64, m->batch_id);
				return;
			}
		}
		cr.cancelled = tasks_cancel_batch(srv->tasks, m->batch_id, now);
	}
	if (m->task_id) {
		const struct task *t;
		struct task *owned;
		if (task_lookup(srv, m->task_id, &t, &owned) != 0) {
			reply_error(srv, q->sl, q->sess, q->counter, q->request_id, CH_ERR_NOT_FOUND,
			            "no task %" PRIu64, m->task_id);
			return;
		}
		task_free(owned);
		if (tasks_cancel(srv->tasks, m->task_id, now) == 0)
			cr.cancelled++;
		t = tasks_get(srv->tasks, m->task_id);
		if (t) {
			cr.state = (Chorus__TaskState)t->state;
		} else if (store_task_get(srv->store, m->task_id, &owned) == 0) {
			cr.state = (Chorus__TaskState)owned->state;
			task_free(owned);
		}
	}
	reply_q(q, CHORUS__ENVELOPE__BODY_CANCEL_RESP, cancel_resp, &cr);
}

struct list_collect {
	struct task **tasks;
	uint32_t n, cap;
};

static int list_cb(void *arg, struct task *t)
{
	struct list_collect *lc = arg;
	if (lc->n >= lc->cap) {
		task_free(t);
		return 1;
	}
	lc->tasks[lc->n++] = t;
	return 0;
}

static void handle_list(struct req *q, const Chorus__ListReq *m)
{
	struct server *srv = q->srv;
	uint32_t limit = m->limit ? m->limit : 50;
	if (limit > LIST_LIMIT_MAX)
		limit = LIST_LIMIT_MAX;
	struct list_collect lc = {.cap = limit};
	lc.tasks = calloc(limit, sizeof(*lc.tasks));
	Chorus__TaskResult *rs = calloc(limit, sizeof(*rs));
	Chorus__TaskResult **rp = calloc(limit, sizeof(*rp));
	if (!lc.tasks || !rs || !rp) {
		free(lc.tasks);
		free(rs);
		free(rp);
		reply_error(srv, q->sl, q->sess, q->counter, q->request_id, CH_ERR_NOMEM, "out of memory");
		return;
	}
	int state = (int)m->state;
	if (state < 0 || state > TASK_LOST)
		state = 0;
	int rc = store_task_list(srv->store, state, limit, list_cb, &lc);
	if (rc) {
		reply_error(srv, q->sl, q->sess, q->counter, q->request_id, CH_ERR_STORAGE,
		            "could not read the journal");
	} else {
		for (uint32_t i = 0; i < lc.n; i++) {
			result_fill(srv, &rs[i], lc.tasks[i]);
			rp[i] = &rs[i];
		}
		Chorus__ListResp lr = CHORUS__LIST_RESP__INIT;
		lr.n_tasks = lc.n;
		lr.tasks = rp;
		reply_q(q, CHORUS__ENVELOPE__BODY_LIST_RESP, list_resp, &lr);
	}
	for (uint32_t i = 0; i < lc.n; i++)
		task_free(lc.tasks[i]);
	free(lc.tasks);
	free(rs);
	free(rp);
}

static void handle_status(struct req *q)
{
	struct server *srv = q->srv;
	Chorus__StatusResp st = CHORUS__STATUS_RESP__INIT;
	st.node_id = srv->node_id_hex;
	st.name = (char *)srv->cfg->name;
	st.version = (char *)CH_VERSION_STRING;
	st.listen = (char *)srv->cfg->listen;
	st.started_ms = srv->started_ms;
	st.now_ms = wall_ms();
	struct tasks_counters c;
	tasks_counters(srv->tasks, &c);
	st.queued = c.queued + c.backoff;
	st.running = c.running;
	st.submitted = c.submitted;
	st.succeeded = c.succeeded;
	st.failed = c.failed;
	st.timed_out = c.timed_out;
	st.cancelled = c.cancelled;
	st.lost = c.lost;
	st.retried = c.retried;
	st.sessions = srv->session_count;

	Chorus__PoolStatus ps[WORKERS_POOLS_MAX];
	Chorus__PoolStatus *pp[WORKERS_POOLS_MAX];
	char *pool_handlers[WORKERS_POOLS_MAX][CONFIG_LIST_MAX];
	for (uint32_t p = 0; p < srv->pool_count; p++) {
		struct workers_pool_status ws;
		workers_pool_status(srv->workers, p, &ws);
		chorus__pool_status__init(&ps[p]);
		ps[p].name = srv->pool_names[p];
		ps[p].workers = ws.workers;
		ps[p].alive = ws.alive;
		ps[p].busy = ws.busy;
		ps[p].restarts = ws.restarts;
		ps[p].degraded = ws.degraded;
		ps[p].queued = tasks_pool_queued(srv->tasks, p);
		if (p > 0) {
			const struct config_pool *cp = &srv->cfg->pools[p - 1];
			for (uint32_t h = 0; h < cp->handler_count; h++)
				pool_handlers[p][h] = cp->handlers[h];
			ps[p].n_handlers = cp->handler_count;
			ps[p].handlers = pool_handlers[p];
		}
		pp[p] = &ps[p];
	}
	st.n_pools = srv->pool_count;
	st.pools = pp;

	Chorus__PeerCounters pcs[PEERS_MAX];
	Chorus__PeerCounters *pcp[PEERS_MAX];
	for (uint32_t i = 0; i < srv->peer_count; i++) {
		const struct peer *p = &srv->peers[i];
		chorus__peer_counters__init(&pcs[i]);
		pcs[i].peer = (char *)p->addr;
		pcs[i].truncated = p->counts[SEAL_TRUNCATED];
		pcs[i].oversized = p->counts[SEAL_OVERSIZED];
		pcs[i].malformed = p->counts[SEAL_MALFORMED];
		pcs[i].forged = p->counts[SEAL_FORGED];
		pcs[i].tampered = p->counts[SEAL_TAMPERED];
		pcs[i].replayed = p->counts[SEAL_REPLAYED];
		pcp[i] = &pcs[i];
	}
	st.n_peers = srv->peer_count;
	st.peers = pcp;

	char *hn[HANDLERS_MAX];
	for (uint32_t i = 0; i < srv->reg.count; i++)
		hn[i] = (char *)srv->reg.entries[i].name;
	st.n_handlers = srv->reg.count;
	st.handlers = hn;

	Chorus__MemberInfo **members = NULL;
	size_t member_count = 0;
	if (cluster_members(srv->cluster, &members, &member_count) == 0) {
		st.n_members = member_count;
		st.members = members;
	}
	st.n_tags = srv->cfg->tag_count;
	st.tags = (char **)srv->cfg->tags;

	reply_q(q, CHORUS__ENVELOPE__BODY_STATUS_RESP, status_resp, &st);
	cluster_members_free(members, member_count);
}

static void handle_members(struct req *q)
{
	struct server *srv = q->srv;
	Chorus__MembersResp mr = CHORUS__MEMBERS_RESP__INIT;
	Chorus__MemberInfo **members = NULL;
	size_t n = 0;
	if (cluster_members(srv->cluster, &members, &n) != 0) {
		reply_error(srv, q->sl, q->sess, q->counter, q->request_id, CH_ERR_NOMEM, "out of memory");
		return;
	}
	mr.n_members = n;
	mr.members = members;
	reply_q(q, CHORUS__ENVELOPE__BODY_MEMBERS_RESP, members_resp, &mr);
	cluster_members_free(members, n);
}

static void handle_gossip(struct req *q, const Chorus__Gossip *g)
{
	struct server *srv = q->srv;
	int rc = cluster_on_gossip(srv->cluster, g, srv->now_ms);
	if (rc) {
		reply_error(srv, q->sl, q->sess, q->counter, q->request_id, rc, "malformed gossip");
		return;
	}
	Chorus__GossipAck ack = CHORUS__GOSSIP_ACK__INIT;
	reply_q(q, CHORUS__ENVELOPE__BODY_GOSSIP_ACK, gossip_ack, &ack);
}

/* ---- frames ---- */

static void handle_hello(struct server *srv, struct slot *sl, nng_msg *msg)
{
	struct seal_session ss;
	uint8_t *reply = NULL;
	size_t reply_len = 0;
	int v = seal_hello_accept(&srv->kr, srv->node_id, nng_msg_body(msg), nng_msg_len(msg), &ss,
	                          &reply, &reply_len);
	if (v == SEAL_FORGED) {
		refuse(srv, msg, v, nng_msg_len(msg));
		/* tell the peer at once, so a wrong secret fails fast; the reason
		 * reveals nothing an eavesdropper could not guess */
		if (seal_reject_build(CH_ERR_AUTH, "wrong cluster secret", &reply, &reply_len) == 0)
			reply_raw(srv, sl, reply, reply_len);
		else
			slot_recv(sl);
		return;
	}
	if (v != SEAL_OK) {
		refuse(srv, msg, v, nng_msg_len(msg));
		slot_recv(sl);
		return;
	}
	if (!sess_add(srv, &ss)) {
		free(reply);
		slot_recv(sl);
		return;
	}
	sodium_memzero(&ss, sizeof(ss));
	reply_raw(srv, sl, reply, reply_len);
}

static void handle_data(struct server *srv, struct slot *sl, nng_msg *msg, uint64_t session_id)
{
	uint8_t *frame = nng_msg_body(msg);
	size_t len = nng_msg_len(msg);
	struct session *sess = sess_find(srv, session_id);
	if (!sess) {
		uint8_t *reply = NULL;
		size_t reply_len = 0;
		log_limited(LOG_INFO, "link", "unknown-session", 10000,
		            "data frame for an unknown session: asking the peer to handshake again");
		if (seal_reject_build(CH_ERR_CLOSED, "unknown session", &reply, &reply_len) == 0)
			reply_raw(srv, sl, reply, reply_len);
		else
			slot_recv(sl);
		return;
	}
	uint64_t counter = 0;
	for (int i = 0; i < 8; i++)
		counter |= (uint64_t)frame[16 + i] << (8 * i);
	uint8_t *plain = NULL;
	size_t plain_len = 0;
	int v = seal_frame_open(&sess->seal, frame, len, &plain, &plain_len);
	if (v == SEAL_REPLAYED) {
		struct recent *r = recent_find(sess, counter);
		if (r && r->reply) {
			/* a resend of an answered request: answer again */
			uint8_t *copy = malloc(r->reply_len ? r->reply_len : 1);
			if (copy) {
				memcpy(copy, r->reply, r->reply_len);
				out_push(srv, sl, sess, 0, copy, r->reply_len);
				return;
			}
		} else if (r && r->pending && r->waiter) {
			/* a resend of a parked request: the old context's pipe is
			 * gone; answer on the new one */
			struct waiter *w = r->waiter;
			struct slot *old = w->slot;
			w->slot = sl;
			sl->state = SLOT_PARKED;
			sl->waiter = w;
			slot_recv(old);
			return;
		} else if (r && r->pending) {
			/* the resend overtook its answer, still in the outbox:
			 * answer both copies */
			for (struct out *o = srv->out_head; o; o = o->next) {
				if (o->sess != sess || o->counter != counter)
					continue;
				uint8_t *copy = malloc(o->len ? o->len : 1);
				if (!copy)
					break;
				memcpy(copy, o->plain, o->len);
				out_push(srv, sl, sess, 0, copy, o->len);
				return;
			}
		}
		refuse(srv, msg, v, len);
		slot_recv(sl);
		return;
	}
	if (v != SEAL_OK) {
		refuse(srv, msg, v, len);
		slot_recv(sl);
		return;
	}
	sess->last_used_ms = wall_ms();
	lru_unlink(srv, sess);
	lru_push(srv, sess);

	Chorus__Envelope *env = chorus__envelope__unpack(NULL, plain_len, plain);
	if (!env) {
		refuse(srv, msg, SEAL_MALFORMED, len);
		reply_error(srv, sl, sess, 0, 0, CH_ERR_PROTOCOL, "undecodable request");
		return;
	}
	(void)recent_add(srv, sess, counter);
	struct req q = {srv, sl, sess, counter, env->request_id};
	switch (env->body_case) {
	case CHORUS__ENVELOPE__BODY_SUBMIT: handle_submit(&q, env->submit); break;
	case CHORUS__ENVELOPE__BODY_MAP: handle_map(&q, env->map); break;
	case CHORUS__ENVELOPE__BODY_AWAIT: handle_await(&q, env->await); break;
	case CHORUS__ENVELOPE__BODY_BATCH_AWAIT: handle_batch_await(&q, env->batch_await); break;
	case CHORUS__ENVELOPE__BODY_CANCEL: handle_cancel(&q, env->cancel); break;
	case CHORUS__ENVELOPE__BODY_LIST: handle_list(&q, env->list); break;
	case CHORUS__ENVELOPE__BODY_STATUS: handle_status(&q); break;
	case CHORUS__ENVELOPE__BODY_MEMBERS: handle_members(&q); break;
	case CHORUS__ENVELOPE__BODY_GOSSIP: handle_gossip(&q, env->gossip); break;
	default:
		refuse(srv, msg, SEAL_MALFORMED, len);
		reply_error(srv, sl, sess, counter, env->request_id, CH_ERR_PROTOCOL,
		            "unknown request type %d", (int)env->body_case);
		break;
	}
	chorus__envelope__free_unpacked(env, NULL);
}

static void handle_slot(struct server *srv, struct slot *sl)
{
	int rv = nng_aio_result(sl->aio);
	if (sl->sending) {
		if (rv != 0) { /* not sent: the message is still ours */
			nng_msg *m = nng_aio_get_msg(sl->aio);
			if (m)
				nng_msg_free(m);
		}
		nng_aio_set_msg(sl->aio, NULL);
		slot_recv(sl);
		return;
	}
	if (rv != 0) {
		if (rv == NNG_ECLOSED)
			return;
		slot_recv(sl);
		return;
	}
	nng_msg *msg = nng_aio_get_msg(sl->aio);
	nng_aio_set_msg(sl->aio, NULL);
	sl->state = SLOT_BUSY;
	size_t len = nng_msg_len(msg);
	int kind = 0;
	uint64_t session_id = 0;
	int v = seal_frame_peek(nng_msg_body(msg), len, srv->cfg->frame_bytes_max, &kind, &session_id);
	if (v != SEAL_OK) {
		refuse(srv, msg, v, len);
		slot_recv(sl);
	} else if (kind == SEAL_KIND_HELLO) {
		handle_hello(srv, sl, msg);
	} else if (kind == SEAL_KIND_DATA) {
		handle_data(srv, sl, msg, session_id);
	} else {
		refuse(srv, msg, SEAL_MALFORMED, len);
		slot_recv(sl);
	}
	nng_msg_free(msg);
}

/* ---- core effects and worker events ---- */

static uint32_t local_capacity(const struct server *srv)
{
	return srv->cfg->workers * srv->cfg->prefetch;
}

static int fx_dispatch(void *ctx, struct task *t)
{
	struct server *srv = ctx;
	/* Fan-out tasks and tasks that require tags go wherever placement
	 * says; single tasks, tasks of named pools and tasks placed here by
	 * another coordinator run here. */
	if (!t->ephemeral && t->pool == 0 && (t->batch_id || t->require_count)) {
		uint32_t held = local_capacity(srv) - workers_free_slots(srv->workers, 0);
		int where = cluster_place(srv->cluster, t, held, srv->now_ms);
		if (where == 1)
			return 0;
		if (where == 2)
			return 1;
		if (where < 0)
			return -1;
	}
	struct workers_job job = {
		.task_id = t->id,
		.handler = t->handler,
		.payload = t->payload,
		.payload_len = t->payload_len,
		.argv = (const char *const *)t->argv,
		.timeout_ms = t->opts.timeout_ms,
	};
	int rc = workers_dispatch(srv->workers, t->pool, &job);
	if (rc == WORKERS_ERR_JOB_TOO_BIG) {
		log_error("workers", "task %" PRIu64 ": job too large for a worker", t->id);
		return 1;
	}
	return rc;
}

static void fx_kill(void *ctx, const struct task *t)
{
	struct server *srv = ctx;
	if (cluster_placed_remotely(srv->cluster, t->id)) {
		cluster_kill(srv->cluster, t);
		return;
	}
	if (workers_kill_task(srv->workers, t->id) != 0)
		log_warn("tasks", "task %" PRIu64 ": no worker holds it to kill", t->id);
}

static void fx_final(void *ctx, const struct task *t)
{
	struct server *srv = ctx;
	srv->finals_seen = 1;
	if (t->state != TASK_SUCCEEDED)
		log_msg(t->state == TASK_CANCELLED ? LOG_INFO : LOG_WARN, "tasks",
		        "task %" PRIu64 " (%s) %s after %u attempt(s): %s", t->id, t->handler,
		        task_state_name(t->state), t->attempts, t->error ? t->error : "");
}

static void fx_batch_progress(void *ctx, const struct batch *b)
{
	struct server *srv = ctx;
	(void)b;
	srv->batches_progressed = 1;
}

static void ev_started(void *ctx, uint64_t task_id, uint64_t now_ms)
{
	struct server *srv = ctx;
	(void)now_ms;
	tasks_on_started(srv->tasks, task_id, &srv->now);
}

static void ev_result(void *ctx, uint64_t task_id, int ok, const uint8_t *output, size_t output_len,
                      int32_t exit_code, const char *error, uint64_t now_ms)
{
	struct server *srv = ctx;
	(void)now_ms;
	tasks_on_result(srv->tasks, task_id, ok, output, output_len, exit_code, error, srv->cfg->name,
	                &srv->now);
}

static void ev_lost(void *ctx, uint64_t task_id, int was_running, const char *why, uint64_t now_ms)
{
	struct server *srv = ctx;
	(void)now_ms;
	if (was_running)
		log_warn("workers", "task %" PRIu64 ": %s", task_id, why ? why : "worker lost");
	tasks_on_worker_lost(srv->tasks, task_id, was_running, why, &srv->now);
}

/* ---- start-up ---- */

struct recover_ctx {
	struct server *srv;
	struct now now;
	uint64_t count;
	int failed; /* a task could not be taken (the store's loop does not say) */
};

static int recover_batch_cb(void *arg, const struct batch *b)
{
	struct recover_ctx *rc = arg;
	int r = tasks_recover_batch(rc->srv->tasks, b, &rc->now);
	if (r)
		rc->failed = 1;
	return r;
}

static int recover_task_cb(void *arg, struct task *t)
{
	struct recover_ctx *rc = arg;
	if (t->pool >= rc->srv->pool_count || !handlers_find(&rc->srv->reg, t->handler)) {
		/* the pool or handler is gone since (config changed): run it in
		 * the default pool, where an unknown handler fails cleanly */
		t->pool = 0;
	}
	int r = tasks_recover(rc->srv->tasks, t, &rc->now);
	if (r) {
		task_free(t); /* not taken */
		rc->failed = 1;
		return r;
	}
	rc->count++;
	return 0;
}

static int put_task_cb(void *arg, const struct task *t)
{
	return store_task_put(arg, t);
}

static int put_batch_cb(void *arg, const struct batch *b)
{
	return store_batch_put(arg, b);
}

/* Writes what changed, commits, then answers. */
static int commit_and_answer(struct server *srv, uint64_t now_ms)
{
	int rc = tasks_flush(srv->tasks, put_task_cb, put_batch_cb, srv->store);
	if (rc == 0)
		rc = store_commit(srv->store);
	else
		(void)store_rollback(srv->store);
	if (rc != 0) {
		/* Not journaled: do not promise. Queued acknowledgements become
		 * errors; the tasks stay dirty and are written next time. */
		log_error("store", "journal commit failed: answering requests with an error");
		for (struct out *o = srv->out_head; o; o = o->next) {
			if (!o->sess)
				continue;
			Chorus__Envelope *env = chorus__envelope__unpack(NULL, o->len, o->plain);
			if (!env)
				continue;
			if (env->body_case == CHORUS__ENVELOPE__BODY_SUBMIT_RESP ||
			    env->body_case == CHORUS__ENVELOPE__BODY_MAP_RESP) {
				Chorus__Error e = CHORUS__ERROR__INIT;
				e.code = CH_ERR_STORAGE;
				e.message = (char *)"the node could not journal the request";
				Chorus__Envelope er;
				envelope_init(srv, &er, env->request_id);
				er.body_case = CHORUS__ENVELOPE__BODY_ERROR;
				er.error = &e;
				size_t n = chorus__envelope__get_packed_size(&er);
				uint8_t *buf = malloc(n);
				if (buf) {
					chorus__envelope__pack(&er, buf);
					free(o->plain);
					o->plain = buf;
					o->len = n;
				}
			}
			chorus__envelope__free_unpacked(env, NULL);
		}
		outbox_send(srv);
		return rc;
	}
	tasks_flush_done(srv->tasks);
	serve_waiters(srv, now_ms);
	outbox_send(srv);
	tasks_release_final(srv->tasks);
	srv->finals_seen = 0;
	srv->batches_progressed = 0;
	return 0;
}

static int secret_setup(struct server *srv, char *err, size_t err_len)
{
	char path[CONFIG_PATH_MAX + 16];
	const struct config *cfg = srv->cfg;
	if (cfg->secret_file[0]) {
		snprintf(path, sizeof(path), "%s", cfg->secret_file);
	} else {
		snprintf(path, sizeof(path), "%s/secret", cfg->data_dir);
		struct stat stt;
		if (stat(path, &stt) != 0) {
			if (seal_secret_generate(path, err, err_len) != 0)
				return -1;
			log_info("link", "no cluster secret given: created %s (give it to clients with -k)",
			         path);
		}
	}
	if (seal_keyring_load(&srv->kr, path, err, err_len) != 0)
		return -1;
	log_info("link", "cluster secret: %s", path);
	return 0;
}

static int node_identity(struct server *srv)
{
	char hex[SEAL_ID_BYTES * 2 + 1];
	if (store_meta_get(srv->store, "node_id", hex, sizeof(hex)) == 0 &&
	    strlen(hex) == SEAL_ID_BYTES * 2 &&
	    sodium_hex2bin(srv->node_id, SEAL_ID_BYTES, hex, strlen(hex), NULL, NULL, NULL) == 0) {
		memcpy(srv->node_id_hex, hex, sizeof(hex));
		return 0;
	}
	randombytes_buf(srv->node_id, SEAL_ID_BYTES);
	sodium_bin2hex(srv->node_id_hex, sizeof(srv->node_id_hex), srv->node_id, SEAL_ID_BYTES);
	if (store_begin(srv->store) != 0)
		return -1;
	if (store_meta_put(srv->store, "node_id", srv->node_id_hex) != 0) {
		(void)store_rollback(srv->store);
		return -1;
	}
	return store_commit(srv->store);
}

static int listen_setup(struct server *srv, char *err, size_t err_len)
{
	int rv = nng_rep0_open(&srv->sock);
	if (rv == 0)
		rv = nng_socket_set_size(srv->sock, NNG_OPT_RECVMAXSZ,
		                         srv->cfg->frame_bytes_max * 2 + SEAL_OVERHEAD_BYTES);
	if (rv != 0) {
		snprintf(err, err_len, "nng: %s", nng_strerror(rv));
		return -1;
	}
	for (uint32_t i = 0; i < SERVER_CONTEXTS; i++) {
		struct slot *sl = &srv->slots[i];
		sl->srv = srv;
		sl->index = i;
		if ((rv = nng_ctx_open(&sl->ctx, srv->sock)) != 0 ||
		    (rv = nng_aio_alloc(&sl->aio, slot_cb, sl)) != 0) {
			snprintf(err, err_len, "nng: %s", nng_strerror(rv));
			return -1;
		}
	}
	rv = nng_listen(srv->sock, srv->cfg->listen, NULL, 0);
	if (rv != 0) {
		snprintf(err, err_len, "cannot listen on %s: %s", srv->cfg->listen, nng_strerror(rv));
		return -1;
	}
	for (uint32_t i = 0; i < SERVER_CONTEXTS; i++)
		slot_recv(&srv->slots[i]);
	return 0;
}

static int workers_setup(struct server *srv, char *err, size_t err_len)
{
	const struct config *cfg = srv->cfg;
	struct workers_config wc = {0};
	wc.pool_count = 1 + cfg->pool_count;
	snprintf(wc.pools[0].name, sizeof(wc.pools[0].name), "default");
	wc.pools[0].worker_count = cfg->workers;
	for (uint32_t p = 0; p < cfg->pool_count; p++) {
		snprintf(wc.pools[p + 1].name, sizeof(wc.pools[p + 1].name), "%s", cfg->pools[p].name);
		wc.pools[p + 1].worker_count = cfg->pools[p].workers;
	}
	for (uint32_t p = 0; p < wc.pool_count; p++)
		snprintf(srv->pool_names[p], sizeof(srv->pool_names[p]), "%s", wc.pools[p].name);
	srv->pool_count = wc.pool_count;
	wc.prefetch = cfg->prefetch;
	wc.intensity = cfg->intensity;
	wc.period_ms = cfg->period_ms;
	wc.degraded_backoff_ms = 1000;
	wc.output_max = cfg->output_max;
	struct workers_events ev = {srv, ev_started, ev_result, ev_lost};
	return workers_start(&srv->workers, &wc, &srv->reg, &ev, err, err_len);
}

static void server_wake(void *arg)
{
	struct server *srv = arg;
	uint64_t one = 1;
	ssize_t n = write(srv->wake_fd, &one, sizeof(one));
	(void)n;
}

/* Membership: a restarted node comes back with an incarnation above any it
 * used before (SWIM §4.2: only the member raises its own incarnation). */
static int cluster_setup(struct server *srv, char *err, size_t err_len)
{
	const struct config *cfg = srv->cfg;
	char v[32];
	uint32_t inc = 0;
	if (store_meta_get(srv->store, "incarnation", v, sizeof(v)) == 0)
		inc = (uint32_t)strtoul(v, NULL, 10);
	inc++;
	snprintf(v, sizeof(v), "%u", inc);
	if (store_begin(srv->store) != 0 || store_meta_put(srv->store, "incarnation", v) != 0 ||
	    store_commit(srv->store) != 0) {
		snprintf(err, err_len, "cannot record the incarnation");
		return -1;
	}
	srv->incarnation_saved = inc;
	uint64_t seed;
	randombytes_buf(&seed, sizeof(seed));
	struct cluster_config cc = {
		.node_id = srv->node_id,
		.name = cfg->name,
		.addr = cfg->advertise[0] ? cfg->advertise : cfg->listen,
		.tags = (const char *const *)cfg->tags,
		.tag_count = cfg->tag_count,
		.seeds = (const char *const *)cfg->seeds,
		.seed_count = cfg->seed_count,
		.secret = srv->kr.secret,
		.capacity = local_capacity(srv),
		.incarnation = inc,
		.seed = seed,
		.period_ms = cfg->gossip_period_ms,
		.probe_timeout_ms = cfg->probe_timeout_ms,
		.reap_after_ms = cfg->reap_after_ms,
		.frame_bytes_max = cfg->frame_bytes_max,
		.wake = server_wake,
		.wake_arg = srv,
	};
	return cluster_start(&srv->cluster, &cc, wall_ms(), err, err_len);
}

static int signals_setup(struct server *srv)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGCHLD);
	if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
		return -1;
	signal(SIGPIPE, SIG_IGN);
	srv->sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	return srv->sig_fd < 0 ? -1 : 0;
}

/* ---- the loop ---- */

static void take_signals(struct server *srv, int *chld)
{
	struct signalfd_siginfo si;
	while (read(srv->sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGCHLD) {
			*chld = 1;
		} else if (!srv->draining) {
			srv->draining = 1;
			srv->drain_deadline_ms = wall_ms() + srv->cfg->shutdown_grace_ms;
			tasks_set_draining(srv->tasks, 1);
			log_info("node", "signal %u: draining (grace %u ms): no new tasks, waiting for "
			                 "running ones",
			         si.ssi_signo, srv->cfg->shutdown_grace_ms);
		} else {
			log_warn("node", "second signal: stopping now");
			srv->drain_deadline_ms = 0;
		}
	}
}

static int loop(struct server *srv)
{
	struct pollfd fds[2 + WORKERS_POOLS_MAX * WORKERS_PER_POOL_MAX];
	uint32_t batch[SERVER_CONTEXTS];
	for (;;) {
		struct now before = clock_read();
		uint64_t now = before.wall_ms;
		uint64_t next = waiters_next_deadline(srv);
		uint64_t cn = cluster_next_deadline(srv->cluster);
		if (cn < next)
			next = cn;
		int timeout = 100; /* worker restarts, purge, drain checks */
		if (next <= now)
			timeout = 0;
		else if (next - now < (uint64_t)timeout)
			timeout = (int)(next - now);
		/* the task core's deadlines are monotonic */
		uint64_t tn = tasks_next_deadline(srv->tasks);
		if (tn <= before.mono_ms)
			timeout = 0;
		else if (tn - before.mono_ms < (uint64_t)timeout)
			timeout = (int)(tn - before.mono_ms);
		fds[0] = (struct pollfd){.fd = srv->wake_fd, .events = POLLIN};
		fds[1] = (struct pollfd){.fd = srv->sig_fd, .events = POLLIN};
		int nw = workers_pollfds(srv->workers, fds + 2, (int)(sizeof(fds) / sizeof(fds[0])) - 2);
		int n = poll(fds, (nfds_t)(2 + nw), timeout);
		if (n < 0 && errno != EINTR) {
			log_error("node", "poll: %s", strerror(errno));
			return 1;
		}
		now_read(srv);
		now = srv->now_ms;
		if (store_begin(srv->store) != 0) {
			log_error("store", "cannot begin a transaction");
			return 1;
		}
		int chld = 0;
		if (n > 0 && (fds[1].revents & POLLIN))
			take_signals(srv, &chld);
		if (n > 0 && (fds[0].revents & POLLIN)) {
			uint64_t v;
			ssize_t r = read(srv->wake_fd, &v, sizeof(v));
			(void)r;
		}
		pthread_mutex_lock(&srv->mu);
		uint32_t cnt = srv->ready_count;
		memcpy(batch, srv->ready, cnt * sizeof(batch[0]));
		srv->ready_count = 0;
		pthread_mutex_unlock(&srv->mu);
		for (uint32_t i = 0; i < cnt; i++)
			handle_slot(srv, &srv->slots[batch[i]]);
		for (int i = 0; i < nw; i++)
			if (fds[2 + i].revents)
				workers_on_readable(srv->workers, fds[2 + i].fd);
		if (chld)
			workers_reap(srv->workers);
		workers_tick(srv->workers, workers_now_ms());
		cluster_tick(srv->cluster, srv->tasks, workers_jobs_held(srv->workers), &srv->now);
		uint32_t inc = cluster_incarnation(srv->cluster);
		if (inc != srv->incarnation_saved) {
			char v[16];
			snprintf(v, sizeof(v), "%u", inc);
			if (store_meta_put(srv->store, "incarnation", v) == 0)
				srv->incarnation_saved = inc;
		}
		tasks_tick(srv->tasks, &srv->now);
		tasks_pump(srv->tasks, &srv->now);
		/* `started` of jobs the pump gave to idle workers: delivered here,
		 * outside the core call (io/workers.h) */
		workers_deliver(srv->workers);
		(void)commit_and_answer(srv, now);

		if (now >= srv->next_purge_ms && !srv->draining) {
			srv->next_purge_ms = now + PURGE_INTERVAL_MS;
			if (store_begin(srv->store) == 0) {
				int del = store_purge(srv->store, now - srv->cfg->result_ttl_ms, PURGE_ROWS_MAX);
				(void)store_commit(srv->store);
				if (del > 0)
					log_debug("store", "purged %d expired results", del);
			}
			/* forget idle sessions */
			while (srv->lru_tail && srv->lru_tail->last_used_ms + SESSION_IDLE_MS < now)
				sess_free(srv, srv->lru_tail);
		}
		if (srv->draining) {
			struct tasks_counters c;
			tasks_counters(srv->tasks, &c);
			if (!srv->leaving && (c.running == 0 || now >= srv->drain_deadline_ms)) {
				if (c.running)
					log_warn("node", "grace period over: %" PRIu64
					                 " running task(s) will follow their restart policy at "
					                 "next start",
					         c.running);
				/* tell the cluster we leave (others mark us left,
				 * not dead), then go */
				srv->leaving = 1;
				srv->leave_deadline_ms = now + 2000;
				cluster_leave(srv->cluster, now);
			}
			if (srv->leaving &&
			    (cluster_leave_done(srv->cluster) || now >= srv->leave_deadline_ms)) {
				srv->closing = 1; /* the final commit answers every wait */
				return 0;
			}
		}
	}
}

/* nng 1.5.2 can hang in nng_close while a connection is half set up
 * (nanomsg/nng#1813). By then the journal is closed and every answer sent,
 * so a stuck teardown ends the process instead of hanging it. */
static void teardown_stuck(int sig)
{
	(void)sig;
	static const char msg[] = "chorusd: shutdown stuck in the transport library: exiting\n";
	ssize_t n = write(2, msg, sizeof(msg) - 1);
	(void)n;
	_exit(0);
}

static void server_free(struct server *srv)
{
	/* workers first: their last events still reach the task table */
	if (srv->workers)
		workers_stop(srv->workers, 1000);
	srv->workers = NULL;
	/* then the durable part: nothing below touches the journal */
	tasks_destroy(srv->tasks);
	srv->tasks = NULL;
	store_close(srv->store);
	srv->store = NULL;
	signal(SIGALRM, teardown_stuck);
	alarm(10);
	cluster_stop(srv->cluster);
	nng_close(srv->sock);
	for (uint32_t i = 0; i < SERVER_CONTEXTS; i++) {
		if (srv->slots[i].aio) {
			struct slot *sl = &srv->slots[i];
			nng_aio_stop(sl->aio);
			/* a request received but never handled (the loop ended
			 * first), or an answer nng did not take: ours to free */
			nng_msg *m = nng_aio_get_msg(sl->aio);
			int unconsumed = sl->sending ? nng_aio_result(sl->aio) != 0
			                             : nng_aio_result(sl->aio) == 0;
			if (m && unconsumed)
				nng_msg_free(m);
			nng_aio_free(srv->slots[i].aio);
		}
	}
	while (srv->waiters) {
		struct waiter *w = srv->waiters;
		waiter_unlink(srv, w);
		free(w);
	}
	while (srv->out_head) {
		struct out *o = srv->out_head;
		srv->out_head = o->next;
		free(o->plain);
		free(o);
	}
	while (srv->lru_head)
		sess_free(srv, srv->lru_head);
	handlers_free(&srv->reg);
	if (srv->wake_fd >= 0)
		close(srv->wake_fd);
	if (srv->sig_fd >= 0)
		close(srv->sig_fd);
	if (srv->lock_fd >= 0)
		close(srv->lock_fd);
	pthread_mutex_destroy(&srv->mu);
	sodium_memzero(&srv->kr, sizeof(srv->kr));
	free(srv);
}

int server_run(const struct config *cfg)
{
	char err[512] = "";
	if (sodium_init() < 0) {
		log_error("node", "libsodium failed to initialise");
		return 1;
	}
	struct server *srv = calloc(1, sizeof(*srv));
	if (!srv)
		return 1;
	srv->cfg = cfg;
	srv->wake_fd = -1;
	srv->sig_fd = -1;
	srv->lock_fd = -1;
	pthread_mutex_init(&srv->mu, NULL);
	srv->started_ms = wall_ms();
	int code = 1;

	if (signals_setup(srv) != 0) {
		log_error("node", "cannot set up signals: %s", strerror(errno));
		goto out;
	}
	srv->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (srv->wake_fd < 0)
		goto out;
	if (store_open(&srv->store, cfg->data_dir, cfg->synchronous, err, sizeof(err)) != 0)
		goto out; /* store_open logged why */
	char lock_path[CONFIG_PATH_MAX + 8];
	snprintf(lock_path, sizeof(lock_path), "%s/lock", cfg->data_dir);
	srv->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (srv->lock_fd < 0 || flock(srv->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		log_error("node", "data dir %s is in use by another chorusd (%s)", cfg->data_dir,
		          strerror(errno));
		goto out;
	}
	if (node_identity(srv) != 0) {
		log_error("store", "cannot record the node id");
		goto out;
	}
	if (secret_setup(srv, err, sizeof(err)) != 0) {
		log_error("link", "%s", err);
		goto out;
	}
	if (handlers_init(&srv->reg, (const char *const *)cfg->exec_allow) != 0) {
		log_error("node", "cannot set up handlers");
		goto out;
	}
	for (uint32_t i = 0; i < cfg->plugin_count; i++) {
		if (handlers_load_plugin(&srv->reg, cfg->plugins[i], err, sizeof(err)) != 0) {
			log_error("node", "%s", err);
			goto out;
		}
		log_info("node", "plugin loaded: %s", cfg->plugins[i]);
	}
	for (uint32_t p = 0; p < cfg->pool_count; p++)
		for (uint32_t h = 0; h < cfg->pools[p].handler_count; h++)
			if (!handlers_find(&srv->reg, cfg->pools[p].handlers[h])) {
				log_error("node", "pool %s: unknown handler '%s'", cfg->pools[p].name,
				          cfg->pools[p].handlers[h]);
				goto out;
			}

	uint64_t max_task = 0, max_batch = 0;
	if (store_max_ids(srv->store, &max_task, &max_batch) != 0)
		goto out;
	struct tasks_limits lim = {
		.node_name = cfg->name,
		.pool_count = 1 + cfg->pool_count,
		.queue_tasks_max = cfg->queue_max,
		.default_timeout_ms = cfg->default_timeout_ms,
		.default_max_attempts = cfg->max_attempts,
		.default_backoff_ms = cfg->backoff_ms,
		.backoff_max_ms = cfg->backoff_max_ms,
		.batches_max = 100000,
	};
	struct tasks_effects fx = {
		.ctx = srv,
		.dispatch = fx_dispatch,
		.kill = fx_kill,
		.final = fx_final,
		.batch_progress = fx_batch_progress,
	};
	srv->tasks = tasks_create(&lim, &fx, max_task + 1, max_batch + 1);
	if (!srv->tasks)
		goto out;

	/* Workers fork before the listener and the links start nng's threads. */
	if (workers_setup(srv, err, sizeof(err)) != 0) {
		log_error("workers", "%s", err);
		goto out;
	}
	if (cluster_setup(srv, err, sizeof(err)) != 0) {
		log_error("cluster", "%s", err);
		goto out;
	}

	now_read(srv);
	struct recover_ctx rctx = {srv, srv->now, 0, 0};
	if (store_load_open_batches(srv->store, recover_batch_cb, &rctx) != 0 ||
	    store_load_unfinished(srv->store, recover_task_cb, &rctx) != 0 || rctx.failed) {
		log_error("store", "cannot load unfinished tasks");
		goto out;
	}
	if (rctx.count)
		log_info("tasks", "recovered %" PRIu64 " unfinished task(s) from the journal", rctx.count);
	if (store_begin(srv->store) != 0 || commit_and_answer(srv, wall_ms()) != 0)
		goto out;

	if (listen_setup(srv, err, sizeof(err)) != 0) {
		log_error("node", "%s", err);
		goto out;
	}
	log_info("node", "chorusd %s node %s (%s) listening on %s, data in %s, %u worker(s)",
	         CH_VERSION_STRING, cfg->name, srv->node_id_hex, cfg->listen, cfg->data_dir,
	         cfg->workers);
	code = loop(srv);
	/* last writes of the drain */
	if (store_begin(srv->store) == 0)
		(void)commit_and_answer(srv, wall_ms());
	if (code == 0)
		log_info("node", "stopped cleanly");
out:
	server_free(srv);
	return code;
}
