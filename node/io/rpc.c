/*
 * rpc.c - the sealed nng listener (see rpc.h).
 *
 * Subtle parts:
 *  - Persist before promise: every answer is queued in the outbox and sent
 *    only after the loop's commit (rpc_send_outbox), so an id reaches a
 *    client only once its task is journaled. A failed commit turns the
 *    answers of persist requests into CH_ERR_STORAGE errors.
 *  - nng's REQ resends a request (same bytes, same counter) on a new pipe
 *    after a reconnect. The replay window refuses it, so each session keeps
 *    its last requests by counter: a resend of an answered request gets the
 *    cached answer again (freshly sealed), a resend of a parked one moves the
 *    parked call to the new context, a resend that overtook its answer in
 *    the outbox gets a copy of it. Nothing is executed twice.
 *  - A frame refused before decoding (truncated, oversized, forged, tampered,
 *    replayed, malformed) is counted per peer address and logged at most
 *    once per peer and kind every 10 s.
 */
#include "io/rpc.h"

#include <assert.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include "chorus.h"
#include "io/log.h"
#include "lib/clock.h"
#include "lib/idmap.h"

#define RPC_CONTEXTS 512
#define SESSIONS_MAX 4096
#define SESSION_IDLE_MS (30u * 60u * 1000u)
#define SESSION_RECENT 32                    /* remembered requests per session */
#define RECENT_REPLY_BYTES_MAX (1u << 20)    /* bigger answers are not cached */
#define RECENT_CACHE_BYTES_MAX (64u << 20)   /* all sessions' cached answers */
#define PEERS_MAX 256
#define REPLY_MARGIN_BYTES 4096              /* envelope fields around a body */
/* What an outsider (no key) can make the node hold, and for how long. */
#define PIPES_MAX 1024                       /* connections at once */
#define PREAUTH_PIPES_MAX 64                 /* of which not authenticated yet */
#define PREAUTH_PER_SOURCE_MAX 8             /* ... from one address */
#define HANDSHAKE_TIMEOUT_MS 10000           /* to authenticate, or be closed */
#define PIPE_REFUSED_MAX 16                  /* refused frames, then closed */
/* Frames for an unknown session are normal after a node restart (a link
 * resends everything it had in flight), so a connection may send many
 * before it is taken for an outsider's. */
#define PIPE_UNKNOWN_SESSION_MAX 1024
#define SEND_TIMEOUT_MS 2000                 /* an answer not taken closes the link */
#define HALF_OPEN_MAX 1024                   /* handshakes with no authentic frame yet */
#define HALF_OPEN_PER_SOURCE_MAX 64
#define SESSION_EVICT_IDLE_MS 60000          /* only sessions idle this long give way */
#define UNAUTH_ANSWERS_PER_S 20              /* REJECTs per source, per second, */
#define UNAUTH_ANSWERS_BURST 1024            /* after a burst: a restarted node's peers
                                                resend everything in flight at once */
#define HELLOS_PER_S 200                     /* handshakes per source, per second */
#define PIPE_SWEEP_MS 500
#define EVICT_PENDING_MAX 64

enum slot_state { SLOT_RECV, SLOT_BUSY, SLOT_PARKED, SLOT_SEND };

struct slot {
	struct rpc *rpc;
	uint32_t index;
	nng_ctx ctx;
	nng_aio *aio;
	int state;
	int sending;              /* the aio in flight is a send */
	uint32_t pipe_id;         /* the connection of the request held here */
	struct rpc_call call;     /* the request being handled here */
	struct rpc_call *parked;  /* the parked call answering here */
};

struct recent {
	uint64_t counter;         /* 0 = empty */
	uint8_t tag[SEAL_TAG_BYTES]; /* the request frame's tag: only a byte-identical
	                             resend matches */
	uint8_t *reply;           /* plaintext envelope, NULL = pending or too big */
	size_t reply_len;
	int pending;
	struct rpc_call *parked;
};

struct session {
	struct seal_session seal;
	unsigned role;
	int half_open;            /* handshake done, no authentic data frame yet */
	uint32_t parked;          /* calls of this session waiting for an answer */
	char src[48];             /* where the handshake came from */
	uint64_t last_used_ms;    /* monotonic */
	struct recent recent[SESSION_RECENT];
	uint32_t recent_next;
	struct session *lnext, *lprev; /* LRU: head = most recent */
};

/* per-peer counters: seal verdicts (below PEER_VERDICTS), and our own */
#define PEER_VERDICTS SEAL_VERDICT_COUNT
#define PEER_RESENT (PEER_VERDICTS + 0)       /* authentic resends answered again */
#define PEER_RATE_LIMITED (PEER_VERDICTS + 1) /* handshakes or REJECTs not served: over the rate */
#define PEER_CONN_REFUSED (PEER_VERDICTS + 2) /* connections closed at once: over a cap */
#define PEER_CONN_CLOSED (PEER_VERDICTS + 3)  /* connections closed later: slow, silent or hostile */
#define PEER_COUNTS (PEER_VERDICTS + 4)
struct peer {
	char addr[48];
	uint64_t counts[PEER_COUNTS];
	uint64_t last_ms;
	uint32_t preauth_pipes;   /* its connections not authenticated yet */
	uint32_t half_open;       /* its sessions not promoted yet */
	double reject_tokens, hello_tokens;
	uint64_t tokens_ms;
};

/* One connection (nng pipe), from the pipe notifications. */
struct pipe_info {
	uint32_t id;
	char addr[48];
	uint64_t added_ms;        /* monotonic */
	uint32_t refused;
	uint32_t unknown;         /* frames for an unknown session */
	uint8_t authenticated;
	uint8_t evicting;         /* being closed to make room */
};

struct out {
	struct slot *slot;
	struct session *sess;     /* NULL: plaintext frame */
	uint64_t counter;         /* request counter (for the recent cache) */
	uint64_t request_id;
	int persist;
	uint8_t *plain;           /* envelope (sealed at send) or raw frame */
	size_t len;
	rpc_local_done_fn local_done; /* a local call's answer (no slot, no session) */
	void *local_arg;
	struct out *next;
};

/* The two session lists (authenticated, most recently used first; and
 * half-open, oldest first) share the sessions' lnext/lprev links. */
struct sess_list {
	struct session *head, *tail;
};

struct rpc {
	struct rpc_config cfg;
	struct rpc_handler h;
	nng_socket sock;
	int sock_open;
	struct slot slots[RPC_CONTEXTS];

	pthread_mutex_t mu;       /* ready[], pipes, peers: nng threads touch them */
	uint32_t ready[RPC_CONTEXTS];
	uint32_t ready_count;
	struct idmap pipes;       /* pipe id -> struct pipe_info */
	uint32_t evict[EVICT_PENDING_MAX]; /* connections to close (made room for others) */
	uint32_t evict_count;
	uint32_t preauth_pipes;
	uint64_t next_sweep_ms;
	uint32_t half_open_count;
	struct sess_list ho;      /* half-open sessions, oldest first */

	struct idmap sessions;
	struct sess_list lru;     /* authenticated sessions, most recently used first */
	struct seal_hello_guard *hello_guard; /* HELLO MACs seen in the skew window */
	size_t recent_cache_bytes;

	struct peer peers[PEERS_MAX];
	uint32_t peer_count;
	struct peer overflow;

	struct rpc_call *parked_head;
	struct out *out_head, *out_tail;
	uint64_t now_ms;
};

/* ---- nng side: callbacks only post to the loop ---- */

static void slot_recv(struct slot *sl);

static void slot_cb(void *arg)
{
	struct slot *sl = arg;
	struct rpc *r = sl->rpc;
	/* An answer sent: the loop has nothing to do with this context any
	 * more (nng owns the message, the slot holds no call), so it takes
	 * the next request from here. Through the loop this cost an eventfd
	 * write, a poll wake-up and a whole iteration per request. A failed
	 * send still goes to the loop: the message is ours to free, and a
	 * timeout closes the connection and is counted. */
	if (sl->sending && nng_aio_result(sl->aio) == 0) {
		slot_recv(sl);
		return;
	}
	pthread_mutex_lock(&r->mu);
	assert(r->ready_count < RPC_CONTEXTS);
	r->ready[r->ready_count++] = sl->index;
	pthread_mutex_unlock(&r->mu);
	r->cfg.wake(r->cfg.wake_arg);
}

static void slot_recv(struct slot *sl)
{
	sl->state = SLOT_RECV;
	sl->sending = 0;
	sl->parked = NULL;
	nng_aio_set_msg(sl->aio, NULL);
	nng_aio_set_timeout(sl->aio, NNG_DURATION_INFINITE);
	nng_ctx_recv(sl->ctx, sl->aio);
}

/* ---- peers and refused frames ---- */

/* The remote address of a pipe as text; each IPv6 address is its own peer. */
static void pipe_addr(nng_pipe p, char *buf, size_t len)
{
	nng_sockaddr sa;
	snprintf(buf, len, "unknown");
	if (nng_pipe_id(p) < 0 || nng_pipe_get_addr(p, NNG_OPT_REMADDR, &sa) != 0)
		return;
	if (sa.s_family == NNG_AF_INET) {
		const uint8_t *a = (const uint8_t *)&sa.s_in.sa_addr;
		snprintf(buf, len, "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
	} else if (sa.s_family == NNG_AF_INET6) {
		const uint8_t *a = sa.s_in6.sa_addr;
		size_t off = 0;
		for (int i = 0; i < 16 && off + 6 < len; i += 2)
			off += (size_t)snprintf(buf + off, len - off, "%s%x", i ? ":" : "",
			                        (unsigned)(a[i] << 8 | a[i + 1]));
	} else if (sa.s_family == NNG_AF_IPC) {
		snprintf(buf, len, "ipc");
	} else if (sa.s_family == NNG_AF_INPROC) {
		snprintf(buf, len, "inproc");
	}
}

/* The address a pipe came from (the table's copy: no system call). Caller
 * holds r->mu. */
static void peer_addr_locked(struct rpc *r, uint32_t pipe_id, char *buf, size_t len)
{
	struct pipe_info *pi = pipe_id ? idmap_get(&r->pipes, pipe_id) : NULL;
	snprintf(buf, len, "%s", pi ? pi->addr : "unknown");
}

/* Caller holds r->mu. */
static struct peer *peer_get(struct rpc *r, const char *addr)
{
	for (uint32_t i = 0; i < r->peer_count; i++)
		if (strcmp(r->peers[i].addr, addr) == 0)
			return &r->peers[i];
	struct peer *p;
	if (r->peer_count < PEERS_MAX) {
		p = &r->peers[r->peer_count++];
	} else { /* evict the least recently seen that holds nothing */
		p = NULL;
		for (uint32_t i = 0; i < PEERS_MAX; i++) {
			struct peer *q = &r->peers[i];
			if (q->preauth_pipes || q->half_open)
				continue;
			if (!p || q->last_ms < p->last_ms)
				p = q;
		}
		if (!p) {
			/* every entry holds connections or sessions: the rest share
			 * one entry (and its quotas), never reset */
			p = &r->overflow;
			if (!p->addr[0]) {
				snprintf(p->addr, sizeof(p->addr), "(other addresses)");
				p->reject_tokens = UNAUTH_ANSWERS_BURST;
				p->hello_tokens = HELLOS_PER_S;
				p->tokens_ms = r->now_ms;
			}
			return p;
		}
	}
	memset(p, 0, sizeof(*p));
	snprintf(p->addr, sizeof(p->addr), "%s", addr);
	p->reject_tokens = UNAUTH_ANSWERS_BURST;
	p->last_ms = r->now_ms;
	p->hello_tokens = HELLOS_PER_S;
	p->tokens_ms = r->now_ms;
	return p;
}

/* Token buckets: 1 and one token taken when the peer may have one more
 * unauthenticated answer (or handshake) now. Caller holds r->mu. */
static int peer_take(struct rpc *r, struct peer *p, int hello)
{
	if (r->now_ms > p->tokens_ms) {
		double s = (double)(r->now_ms - p->tokens_ms) / 1000.0;
		p->reject_tokens += s * UNAUTH_ANSWERS_PER_S;
		if (p->reject_tokens > UNAUTH_ANSWERS_PER_S)
			p->reject_tokens = UNAUTH_ANSWERS_BURST;
	p->last_ms = r->now_ms;
		p->hello_tokens += s * HELLOS_PER_S;
		if (p->hello_tokens > HELLOS_PER_S)
			p->hello_tokens = HELLOS_PER_S;
		p->tokens_ms = r->now_ms;
	}
	double *t = hello ? &p->hello_tokens : &p->reject_tokens;
	if (*t < 1.0) {
		p->counts[PEER_RATE_LIMITED]++;
		return 0;
	}
	*t -= 1.0;
	return 1;
}

/* May pipe_id's peer have one more unauthenticated answer (hello = 0) or
 * handshake (hello = 1) now? */
static int rate_ok(struct rpc *r, uint32_t pipe_id, int hello)
{
	char addr[48];
	pthread_mutex_lock(&r->mu);
	peer_addr_locked(r, pipe_id, addr, sizeof(addr));
	int ok = peer_take(r, peer_get(r, addr), hello);
	pthread_mutex_unlock(&r->mu);
	if (!ok)
		log_limited(LOG_WARN, "link", hello ? "rate-hello" : "rate-reject", 10000,
		            "%s from %s over the rate limit: not served", hello ? "handshakes" : "frames",
		            addr);
	return ok;
}

/* ---- connections ---- */

static void pipe_close_id(uint32_t pipe_id)
{
	nng_pipe p = NNG_PIPE_INITIALIZER;
	p.id = pipe_id;
	(void)nng_pipe_close(p);
}

/* nng thread: a connection arrives (ADD_PRE: refusing it closes it before
 * the socket sees it) or goes. */
static void pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	struct rpc *r = arg;
	int id = nng_pipe_id(p);
	if (id <= 0)
		return;
	if (ev == NNG_PIPE_EV_ADD_PRE) {
		char addr[48];
		pipe_addr(p, addr, sizeof(addr));
		pthread_mutex_lock(&r->mu);
		struct peer *pe = peer_get(r, addr);
		uint32_t evict = 0;
		int over_quota_ok = 0;
		if (pe->preauth_pipes >= PREAUTH_PER_SOURCE_MAX) {
			/* over the address's quota the oldest of its unauthenticated
			 * connections gives way: a flood from one address only
			 * pushes out its own, and a new client there still gets in */
			uint64_t oldest = UINT64_MAX;
			uint32_t closing = 0;
			struct idmap_iter it;
			idmap_iter_init(&r->pipes, &it);
			for (struct pipe_info *q; (q = idmap_iter_next(&r->pipes, &it, NULL));) {
				if (q->authenticated || strcmp(q->addr, addr) != 0)
					continue;
				if (q->evicting)
					closing++;
				else if (q->added_ms < oldest) {
					oldest = q->added_ms;
					evict = q->id;
				}
			}
			/* every one of them is being closed already: the new one may
			 * come in over the quota until the loop has closed them */
			if (!evict && closing)
				over_quota_ok = 1;
			struct pipe_info *q = evict ? idmap_get(&r->pipes, evict) : NULL;
			if (q) {
				q->evicting = 1;
				pe->counts[PEER_CONN_CLOSED]++;
			}
		}
		if (!evict && !over_quota_ok && r->preauth_pipes >= PREAUTH_PIPES_MAX) {
			/* the same over the global quota: the oldest unauthenticated
			 * connection of anyone gives way (they have had the longest to
			 * authenticate) */
			uint64_t oldest = UINT64_MAX;
			struct idmap_iter it;
			idmap_iter_init(&r->pipes, &it);
			for (struct pipe_info *q; (q = idmap_iter_next(&r->pipes, &it, NULL));) {
				if (!q->authenticated && !q->evicting && q->added_ms < oldest) {
					oldest = q->added_ms;
					evict = q->id;
				}
			}
			struct pipe_info *q = evict ? idmap_get(&r->pipes, evict) : NULL;
			if (q) {
				q->evicting = 1;
				peer_get(r, q->addr)->counts[PEER_CONN_CLOSED]++;
			}
		}
		int refuse_it = r->pipes.count >= PIPES_MAX ||
		                (r->preauth_pipes >= PREAUTH_PIPES_MAX && !evict) ||
		                (pe->preauth_pipes >= PREAUTH_PER_SOURCE_MAX && !evict && !over_quota_ok);
		struct pipe_info *pi = refuse_it ? NULL : calloc(1, sizeof(*pi));
		if (pi) {
			pi->id = (uint32_t)id;
			snprintf(pi->addr, sizeof(pi->addr), "%s", addr);
			pi->added_ms = clock_mono_ms();
			if (idmap_put(&r->pipes, (uint64_t)id, pi) != 0) {
				free(pi);
				pi = NULL;
			} else {
				r->preauth_pipes++;
				pe->preauth_pipes++;
			}
		}
		if (!pi)
			pe->counts[PEER_CONN_REFUSED]++;
		/* closing another pipe from inside nng's pipe callback could
		 * re-enter it: the loop closes it */
		if (evict && r->evict_count < EVICT_PENDING_MAX)
			r->evict[r->evict_count++] = evict;
		pthread_mutex_unlock(&r->mu);
		if (evict)
			r->cfg.wake(r->cfg.wake_arg);
		if (!pi) {
			log_limited(LOG_WARN, "link", "conn-refused", 10000,
			            "connection from %s refused: too many connections (%u at most, %u not "
			            "authenticated, %u per address)",
			            addr, PIPES_MAX, PREAUTH_PIPES_MAX, PREAUTH_PER_SOURCE_MAX);
			(void)nng_pipe_close(p);
		}
	} else if (ev == NNG_PIPE_EV_REM_POST) {
		pthread_mutex_lock(&r->mu);
		struct pipe_info *pi = idmap_del(&r->pipes, (uint64_t)id);
		if (pi && !pi->authenticated) {
			struct peer *pe = peer_get(r, pi->addr);
			assert(r->preauth_pipes > 0);
			r->preauth_pipes--;
			if (pe->preauth_pipes)
				pe->preauth_pipes--;
		}
		pthread_mutex_unlock(&r->mu);
		free(pi);
	}
}

/* An authentic frame came on pipe_id: it no longer counts as an outsider. */
static void pipe_authenticated(struct rpc *r, uint32_t pipe_id)
{
	pthread_mutex_lock(&r->mu);
	struct pipe_info *pi = pipe_id ? idmap_get(&r->pipes, pipe_id) : NULL;
	if (pi && !pi->authenticated) {
		pi->authenticated = 1;
		struct peer *pe = peer_get(r, pi->addr);
		assert(r->preauth_pipes > 0);
		r->preauth_pipes--;
		if (pe->preauth_pipes)
			pe->preauth_pipes--;
	}
	pthread_mutex_unlock(&r->mu);
}

/* Closes connections that never authenticated within the handshake
 * timeout. */
static void pipes_sweep(struct rpc *r)
{
	uint32_t victims[64];
	uint32_t n = 0;
	pthread_mutex_lock(&r->mu);
	struct idmap_iter it;
	idmap_iter_init(&r->pipes, &it);
	for (struct pipe_info *pi; n < 64 && (pi = idmap_iter_next(&r->pipes, &it, NULL));) {
		if (!pi->authenticated && pi->added_ms + HANDSHAKE_TIMEOUT_MS < r->now_ms) {
			victims[n++] = pi->id;
			peer_get(r, pi->addr)->counts[PEER_CONN_CLOSED]++;
		}
	}
	pthread_mutex_unlock(&r->mu);
	for (uint32_t i = 0; i < n; i++)
		pipe_close_id(victims[i]);
	if (n)
		log_limited(LOG_INFO, "link", "handshake-timeout", 10000,
		            "closed %u connection(s) that did not authenticate within %u ms", n,
		            HANDSHAKE_TIMEOUT_MS);
}

static void count_peer(struct rpc *r, uint32_t pipe_id, int which)
{
	char addr[48];
	pthread_mutex_lock(&r->mu);
	peer_addr_locked(r, pipe_id, addr, sizeof(addr));
	struct peer *p = peer_get(r, addr);
	p->counts[which]++;
	p->last_ms = r->now_ms;
	pthread_mutex_unlock(&r->mu);
}

/* A frame refused before decoding: counted for its peer, logged at most
 * once per peer and kind every 10 s; a connection that keeps sending them
 * is closed. */
static void refuse(struct rpc *r, uint32_t pipe_id, int verdict, size_t len)
{
	char addr[48];
	assert(verdict >= 0 && verdict < PEER_VERDICTS);
	pthread_mutex_lock(&r->mu);
	peer_addr_locked(r, pipe_id, addr, sizeof(addr));
	struct peer *p = peer_get(r, addr);
	p->counts[verdict]++;
	p->last_ms = r->now_ms;
	struct pipe_info *pi = pipe_id ? idmap_get(&r->pipes, pipe_id) : NULL;
	int close_it = pi && ++pi->refused == PIPE_REFUSED_MAX;
	if (close_it)
		p->counts[PEER_CONN_CLOSED]++;
	pthread_mutex_unlock(&r->mu);
	char key[96];
	snprintf(key, sizeof(key), "%s/%s", addr, seal_verdict_name(verdict));
	log_limited(LOG_WARN, "link", key, 10000, "dropped %s frame (%zu bytes) from %s",
	            seal_verdict_name(verdict), len, addr);
	if (close_it) {
		log_limited(LOG_WARN, "link", "pipe-refused", 10000,
		            "closed a connection from %s after %u refused frames", addr,
		            PIPE_REFUSED_MAX);
		pipe_close_id(pipe_id);
	}
}

/* ---- sessions ---- */

static void slist_unlink(struct sess_list *l, struct session *s)
{
	if (s->lprev)
		s->lprev->lnext = s->lnext;
	else
		l->head = s->lnext;
	if (s->lnext)
		s->lnext->lprev = s->lprev;
	else
		l->tail = s->lprev;
	s->lnext = s->lprev = NULL;
}

static void slist_push_head(struct sess_list *l, struct session *s)
{
	s->lprev = NULL;
	s->lnext = l->head;
	if (l->head)
		l->head->lprev = s;
	else
		l->tail = s;
	l->head = s;
}

static void slist_push_tail(struct sess_list *l, struct session *s)
{
	s->lnext = NULL;
	s->lprev = l->tail;
	if (l->tail)
		l->tail->lnext = s;
	else
		l->head = s;
	l->tail = s;
}

static void lru_unlink(struct rpc *r, struct session *s)
{
	slist_unlink(&r->lru, s);
}

static void lru_push(struct rpc *r, struct session *s)
{
	slist_push_head(&r->lru, s);
}

static void recent_clear(struct rpc *r, struct recent *rc)
{
	if (rc->reply) {
		assert(r->recent_cache_bytes >= rc->reply_len);
		r->recent_cache_bytes -= rc->reply_len;
		sodium_memzero(rc->reply, rc->reply_len);
	}
	free(rc->reply);
	memset(rc, 0, sizeof(*rc));
}

static void parked_unlink(struct rpc *r, struct rpc_call *c)
{
	if (c->sess) {
		assert(c->sess->parked > 0);
		c->sess->parked--;
	}
	if (c->pprev)
		c->pprev->pnext = c->pnext;
	else
		r->parked_head = c->pnext;
	if (c->pnext)
		c->pnext->pprev = c->pprev;
	c->pnext = c->pprev = NULL;
}

/* Half-open sessions sit on their own list (oldest first), not on the LRU
 * of authenticated ones: a flood of handshakes can only push out other
 * half-open sessions, never an authenticated one. */
static void ho_unlink(struct rpc *r, struct session *s)
{
	slist_unlink(&r->ho, s);
	assert(r->half_open_count > 0);
	r->half_open_count--;
	pthread_mutex_lock(&r->mu);
	struct peer *pe = peer_get(r, s->src);
	if (pe->half_open)
		pe->half_open--;
	pthread_mutex_unlock(&r->mu);
}

static void ho_push(struct rpc *r, struct session *s)
{
	slist_push_tail(&r->ho, s);
	r->half_open_count++;
}

static void sess_free(struct rpc *r, struct session *s)
{
	void *v = idmap_del(&r->sessions, s->seal.session_id);
	assert(v == s);
	(void)v;
	if (s->half_open)
		ho_unlink(r, s);
	else
		lru_unlink(r, s);
	/* parked calls of this session lose their session: cancel them */
	for (struct rpc_call *c = r->parked_head, *n; c; c = n) {
		n = c->pnext;
		if (c->sess != s)
			continue;
		parked_unlink(r, c);
		if (c->on_cancel)
			c->on_cancel(c->cancel_arg, c);
		slot_recv(c->slot);
		for (uint32_t i = 0; i < c->more_count; i++)
			slot_recv(c->more[i]);
		free(c);
	}
	for (struct out *o = r->out_head; o; o = o->next)
		if (o->sess == s)
			o->sess = NULL, o->len = 0; /* dropped at send */
	for (int i = 0; i < SESSION_RECENT; i++)
		recent_clear(r, &s->recent[i]);
	sodium_memzero(&s->seal, sizeof(s->seal));
	free(s);
}

/* A new session from a handshake: half-open until its first authentic data
 * frame. At most HALF_OPEN_PER_SOURCE_MAX per address and HALF_OPEN_MAX in
 * all; over a quota the oldest half-open session (of that address, else of
 * anyone) gives way. */
static struct session *sess_add(struct rpc *r, const struct seal_session *ss, const char *src)
{
	pthread_mutex_lock(&r->mu);
	uint32_t from_src = peer_get(r, src)->half_open;
	pthread_mutex_unlock(&r->mu);
	if (from_src >= HALF_OPEN_PER_SOURCE_MAX) {
		for (struct session *o = r->ho.head; o; o = o->lnext) {
			if (strcmp(o->src, src) == 0) {
				sess_free(r, o);
				break;
			}
		}
	} else if (r->half_open_count >= HALF_OPEN_MAX) {
		sess_free(r, r->ho.head);
	}
	struct session *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->seal = *ss;
	s->role = ss->role == SEAL_ROLE_NODE ? RPC_ROLE_CLIENT | RPC_ROLE_PEER : RPC_ROLE_CLIENT;
	s->half_open = 1;
	snprintf(s->src, sizeof(s->src), "%s", src);
	s->last_used_ms = r->now_ms;
	if (s->seal.session_id == 0 || idmap_get(&r->sessions, s->seal.session_id) ||
	    idmap_put(&r->sessions, s->seal.session_id, s) != 0) {
		sodium_memzero(&s->seal, sizeof(s->seal));
		free(s);
		return NULL;
	}
	ho_push(r, s);
	pthread_mutex_lock(&r->mu);
	peer_get(r, src)->half_open++;
	pthread_mutex_unlock(&r->mu);
	return s;
}

/* The first authentic data frame of a half-open session: it joins the
 * authenticated ones. When they are at their limit, the least recently used
 * gives way only if idle for SESSION_EVICT_IDLE_MS; otherwise 0 (the
 * session stays half-open and the request is refused as busy). */
static int sess_promote(struct rpc *r, struct session *s)
{
	assert(s->half_open);
	uint64_t authenticated = r->sessions.count - r->half_open_count;
	if (authenticated >= SESSIONS_MAX) {
		struct session *old = r->lru.tail;
		/* a session a call is parked on is not idle */
		for (uint32_t i = 0; i < 64 && old && old->parked; i++)
			old = old->lprev;
		if (!old || old->parked || old->last_used_ms + SESSION_EVICT_IDLE_MS > r->now_ms)
			return 0;
		log_limited(LOG_INFO, "link", "session-evicted", 10000,
		            "%u sessions: the least recently used one (idle %" PRIu64 " s) gives way",
		            SESSIONS_MAX, (r->now_ms - old->last_used_ms) / 1000);
		sess_free(r, old);
	}
	ho_unlink(r, s);
	s->half_open = 0;
	lru_push(r, s);
	return 1;
}

static struct recent *recent_find(struct session *s, uint64_t counter)
{
	for (int i = 0; i < SESSION_RECENT; i++)
		if (s->recent[i].counter == counter)
			return &s->recent[i];
	return NULL;
}

static void recent_add(struct rpc *r, struct session *s, uint64_t counter,
                       const uint8_t tag[SEAL_TAG_BYTES])
{
	/* a parked request keeps its entry (its resend must still find it):
	 * the ring skips them, unless every entry is parked */
	struct recent *rc = &s->recent[s->recent_next];
	for (int i = 0; i < SESSION_RECENT && rc->pending && rc->parked; i++) {
		s->recent_next = (s->recent_next + 1) % SESSION_RECENT;
		rc = &s->recent[s->recent_next];
	}
	s->recent_next = (s->recent_next + 1) % SESSION_RECENT;
	recent_clear(r, rc);
	rc->counter = counter;
	memcpy(rc->tag, tag, SEAL_TAG_BYTES);
	rc->pending = 1;
}

/* ---- the outbox ---- */

static void out_push(struct rpc *r, struct slot *sl, struct session *sess, uint64_t counter,
                     uint64_t request_id, int persist, uint8_t *plain, size_t len)
{
	struct out *o = calloc(1, sizeof(*o));
	if (!o) {
		free(plain);
		if (sl)
			slot_recv(sl);
		return;
	}
	o->slot = sl;
	o->sess = sess;
	o->counter = counter;
	o->request_id = request_id;
	o->persist = persist;
	o->plain = plain;
	o->len = len;
	if (sl)
		sl->state = SLOT_BUSY;
	if (r->out_tail)
		r->out_tail->next = o;
	else
		r->out_head = o;
	r->out_tail = o;
}

static uint8_t *pack_error(const struct rpc *r, uint64_t request_id, int code, const char *msg,
                           size_t *len)
{
	Chorus__Error e = CHORUS__ERROR__INIT;
	e.code = code;
	e.message = (char *)msg;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.version = CH_PROTOCOL_VERSION;
	env.sender.data = (uint8_t *)r->cfg.node_id;
	env.sender.len = SEAL_ID_BYTES;
	env.request_id = request_id;
	env.body_case = CHORUS__ENVELOPE__BODY_ERROR;
	env.error = &e;
	size_t n = chorus__envelope__get_packed_size(&env);
	uint8_t *buf = malloc(n ? n : 1);
	if (buf)
		chorus__envelope__pack(&env, buf);
	*len = n;
	return buf;
}

/* A local call's answer, after the commit: decoded and handed over. */
static void local_deliver(struct rpc *r, struct out *o, int committed)
{
	Chorus__Envelope *env = NULL;
	if (!(o->persist && !committed) && o->plain)
		env = chorus__envelope__unpack(NULL, o->len, o->plain);
	if (env) {
		o->local_done(o->local_arg, env);
		chorus__envelope__free_unpacked(env, NULL);
		return;
	}
	Chorus__Error e = CHORUS__ERROR__INIT;
	Chorus__Envelope err = CHORUS__ENVELOPE__INIT;
	e.code = o->persist && !committed ? CH_ERR_STORAGE : CH_ERR_NOMEM;
	e.message = o->persist && !committed ? (char *)"the node could not journal the request"
	                                     : (char *)"out of memory";
	err.version = CH_PROTOCOL_VERSION;
	err.sender.data = (uint8_t *)r->cfg.node_id;
	err.sender.len = SEAL_ID_BYTES;
	err.request_id = o->request_id;
	err.body_case = CHORUS__ENVELOPE__BODY_ERROR;
	err.error = &e;
	o->local_done(o->local_arg, &err);
}

void rpc_send_outbox(struct rpc *r, int committed)
{
	struct out *o = r->out_head;
	r->out_head = r->out_tail = NULL;
	while (o) {
		struct out *next = o->next;
		struct slot *sl = o->slot;
		nng_msg *msg = NULL;
		int ok = 0;
		if (o->local_done) {
			local_deliver(r, o, committed);
			free(o->plain);
			free(o);
			o = next;
			continue;
		}
		if (o->sess && o->persist && !committed) {
			/* not journaled: do not promise */
			size_t n;
			uint8_t *buf = pack_error(r, o->request_id, CH_ERR_STORAGE,
			                          "the node could not journal the request", &n);
			if (buf) {
				free(o->plain);
				o->plain = buf;
				o->len = n;
			}
		}
		if (o->sess) {
			struct recent *rc = o->counter ? recent_find(o->sess, o->counter) : NULL;
			if (rc) {
				rc->pending = 0;
				rc->parked = NULL;
				if (!rc->reply && o->len <= RECENT_REPLY_BYTES_MAX &&
				    r->recent_cache_bytes + o->len <= RECENT_CACHE_BYTES_MAX) {
					rc->reply = malloc(o->len ? o->len : 1);
					if (rc->reply) {
						memcpy(rc->reply, o->plain, o->len);
						rc->reply_len = o->len;
						r->recent_cache_bytes += o->len;
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
			/* a peer that does not read cannot hold a context long */
			nng_aio_set_timeout(sl->aio, SEND_TIMEOUT_MS);
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

/* ---- answering ---- */

size_t rpc_reply_bytes_max(const struct rpc *r)
{
	return r->cfg.frame_bytes_max > REPLY_MARGIN_BYTES * 2
	           ? r->cfg.frame_bytes_max - REPLY_MARGIN_BYTES
	           : r->cfg.frame_bytes_max / 2;
}

/* Releases c once its answer is queued. */
static void call_done(struct rpc_call *c, int code)
{
	struct rpc *r = c->rpc;
	assert(!c->answered);
	c->answered = 1;
	if (r->h.answered)
		r->h.answered(r->h.ctx, c, code);
	if (c->parked) {
		struct recent *rc = c->sess ? recent_find(c->sess, c->counter) : NULL;
		if (rc && rc->parked == c)
			rc->parked = NULL;
		parked_unlink(r, c);
		free(c);
	}
}

/* Queues a local call's answer (buf may be NULL: out of memory, told to
 * done as an error). If even that fails, done runs now with an error: it
 * runs exactly once either way. */
static void local_queue(struct rpc_call *c, uint8_t *buf, size_t n)
{
	struct rpc *r = c->rpc;
	struct out *o = calloc(1, sizeof(*o));
	if (!o) {
		free(buf);
		struct out tmp = {.request_id = c->request_id, .local_done = c->local_done,
		                  .local_arg = c->local_arg};
		local_deliver(r, &tmp, 1);
		return;
	}
	o->request_id = c->request_id;
	o->persist = c->persist;
	o->plain = buf;
	o->len = buf ? n : 0;
	o->local_done = c->local_done;
	o->local_arg = c->local_arg;
	if (r->out_tail)
		r->out_tail->next = o;
	else
		r->out_head = o;
	r->out_tail = o;
}

static void queue_answer(struct rpc_call *c, uint8_t *buf, size_t n)
{
	if (c->local_done) {
		local_queue(c, buf, n);
		return;
	}
	/* copies first: out_push may free buf */
	for (uint32_t i = 0; i < c->more_count; i++) {
		uint8_t *copy = malloc(n ? n : 1);
		if (!copy) {
			slot_recv(c->more[i]);
			continue;
		}
		memcpy(copy, buf, n);
		out_push(c->rpc, c->more[i], c->sess, 0, c->request_id, c->persist, copy, n);
	}
	c->more_count = 0;
	out_push(c->rpc, c->slot, c->sess, c->counter, c->request_id, c->persist, buf, n);
}

void rpc_reply(struct rpc_call *c, Chorus__Envelope *env)
{
	struct rpc *r = c->rpc;
	env->version = CH_PROTOCOL_VERSION;
	env->sender.data = (uint8_t *)r->cfg.node_id;
	env->sender.len = SEAL_ID_BYTES;
	env->request_id = c->request_id;
	int code = env->body_case == CHORUS__ENVELOPE__BODY_ERROR && env->error ? env->error->code : 0;
	size_t n = chorus__envelope__get_packed_size(env);
	uint8_t *buf = NULL;
	if (n > rpc_reply_bytes_max(r)) {
		/* the frame cap binds answers too: never seal what the peer
		 * must refuse (pages of results shrink before this) */
		char msg[160];
		snprintf(msg, sizeof(msg), "answer of %zu bytes is over the %zu-byte frame cap", n,
		         rpc_reply_bytes_max(r));
		log_limited(LOG_WARN, "rpc", "reply-too-large", 10000, "%s", msg);
		code = CH_ERR_TOO_LARGE;
		buf = pack_error(r, c->request_id, code, msg, &n);
	} else {
		buf = malloc(n ? n : 1);
		if (buf)
			chorus__envelope__pack(env, buf);
	}
	if (!buf) {
		if (c->local_done)
			local_queue(c, NULL, 0);
		else
			slot_recv(c->slot);
		for (uint32_t i = 0; i < c->more_count; i++)
			slot_recv(c->more[i]);
		c->more_count = 0;
		call_done(c, CH_ERR_NOMEM);
		return;
	}
	queue_answer(c, buf, n);
	call_done(c, code);
}

void rpc_reply_error(struct rpc_call *c, int code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	Chorus__Error e = CHORUS__ERROR__INIT;
	e.code = code;
	e.message = msg;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_ERROR;
	env.error = &e;
	rpc_reply(c, &env);
}

struct rpc_call *rpc_park(struct rpc_call *c, void (*on_cancel)(void *arg, struct rpc_call *c),
                          void *arg)
{
	struct rpc *r = c->rpc;
	assert(!c->answered && !c->parked);
	struct rpc_call *p = malloc(sizeof(*p));
	if (!p) {
		rpc_reply_error(c, CH_ERR_NOMEM, "out of memory");
		return NULL;
	}
	*p = *c;
	c->parked = 1; /* the slot's own call is done with */
	p->parked = 1;
	p->on_cancel = on_cancel;
	p->cancel_arg = arg;
	p->pprev = NULL;
	p->pnext = r->parked_head;
	if (r->parked_head)
		r->parked_head->pprev = p;
	r->parked_head = p;
	/* a local call has neither slot nor session (rpc_local_call) */
	if (p->slot) {
		p->slot->state = SLOT_PARKED;
		p->slot->parked = p;
	}
	if (p->sess) {
		p->sess->parked++;
		struct recent *rc = recent_find(p->sess, p->counter);
		if (rc)
			rc->parked = p;
	}
	return p;
}

/* ---- frames ---- */

static void handle_hello(struct rpc *r, struct slot *sl, nng_msg *msg, uint32_t pipe_id)
{
	struct seal_session ss;
	uint8_t *reply = NULL;
	size_t reply_len = 0;
	/* each handshake costs two X25519 operations on the loop: bounded
	 * per source */
	if (!rate_ok(r, pipe_id, 1)) {
		slot_recv(sl);
		return;
	}
	int v = seal_hello_accept(r->cfg.kr, r->hello_guard, r->cfg.node_id, seal_wall_ms(),
	                          nng_msg_body(msg), nng_msg_len(msg), &ss, &reply, &reply_len);
	if (v == SEAL_FORGED || v == SEAL_STALE) {
		refuse(r, pipe_id, v, nng_msg_len(msg));
		/* tell the peer at once (a hint: it cannot be authenticated when
		 * the keys differ); the reason reveals nothing an eavesdropper
		 * could not guess; at a bounded rate per source */
		const char *why = v == SEAL_FORGED
		                          ? "wrong cluster secret"
		                          : "handshake time too far from the node's clock (check NTP)";
		if (rate_ok(r, pipe_id, 0) && seal_reject_build(CH_ERR_AUTH, why, &reply, &reply_len) == 0)
			out_push(r, sl, NULL, 0, 0, 0, reply, reply_len);
		else
			slot_recv(sl);
		return;
	}
	if (v != SEAL_OK) {
		refuse(r, pipe_id, v, nng_msg_len(msg));
		slot_recv(sl);
		return;
	}
	/* a HELLO whose MAC verified comes from a key holder: its connection
	 * is no outsider's (not swept, not counted against the caps) */
	pipe_authenticated(r, pipe_id);
	char src[48];
	pthread_mutex_lock(&r->mu);
	peer_addr_locked(r, pipe_id, src, sizeof(src));
	pthread_mutex_unlock(&r->mu);
	if (!sess_add(r, &ss, src)) {
		sodium_memzero(&ss, sizeof(ss));
		free(reply);
		slot_recv(sl);
		return;
	}
	sodium_memzero(&ss, sizeof(ss));
	out_push(r, sl, NULL, 0, 0, 0, reply, reply_len);
}

/* An authentic frame the replay window refused: a resend of a request we
 * know? Only a byte-identical resend (same counter, same tag) is one. */
static int handle_resend(struct rpc *r, struct slot *sl, struct session *sess, uint64_t counter,
                         const uint8_t tag[SEAL_TAG_BYTES])
{
	struct recent *rc = recent_find(sess, counter);
	if (!rc || sodium_memcmp(rc->tag, tag, SEAL_TAG_BYTES) != 0)
		return 0;
	if (rc->reply) {
		/* a resend of an answered request: answer again */
		uint8_t *copy = malloc(rc->reply_len ? rc->reply_len : 1);
		if (!copy)
			return 0;
		memcpy(copy, rc->reply, rc->reply_len);
		out_push(r, sl, sess, 0, 0, 0, copy, rc->reply_len);
		return 1;
	}
	if (rc->pending && rc->parked) {
		/* a resend of a parked request (the old context's pipe may be
		 * gone, or not): the answer goes to both */
		struct rpc_call *c = rc->parked;
		if (c->more_count == RPC_REPLY_TARGETS_MAX) {
			slot_recv(c->more[0]); /* the oldest extra target gives way */
			memmove(c->more, c->more + 1, (RPC_REPLY_TARGETS_MAX - 1) * sizeof(c->more[0]));
			c->more_count--;
		}
		c->more[c->more_count++] = sl;
		sl->state = SLOT_PARKED;
		sl->parked = c;
		return 1;
	}
	if (rc->pending) {
		/* the resend overtook its answer, still in the outbox: answer
		 * both copies */
		for (struct out *o = r->out_head; o; o = o->next) {
			if (o->sess != sess || o->counter != counter)
				continue;
			uint8_t *copy = malloc(o->len ? o->len : 1);
			if (!copy)
				return 0;
			memcpy(copy, o->plain, o->len);
			/* the copy stays a promise only if the commit holds */
			out_push(r, sl, sess, 0, o->request_id, o->persist, copy, o->len);
			return 1;
		}
	}
	return 0;
}

static void handle_data(struct rpc *r, struct slot *sl, nng_msg *msg, uint64_t session_id,
                        uint32_t pipe_id)
{
	uint8_t *frame = nng_msg_body(msg);
	size_t len = nng_msg_len(msg);
	struct session *sess = session_id ? idmap_get(&r->sessions, session_id) : NULL;
	if (!sess) {
		uint8_t *reply = NULL;
		size_t reply_len = 0;
		count_peer(r, pipe_id, SEAL_NO_SESSION);
		int close_it = 0;
		pthread_mutex_lock(&r->mu);
		struct pipe_info *pi = pipe_id ? idmap_get(&r->pipes, pipe_id) : NULL;
		if (pi && !pi->authenticated && ++pi->unknown == PIPE_UNKNOWN_SESSION_MAX)
			close_it = 1; /* an outsider streaming made-up session ids */
		pthread_mutex_unlock(&r->mu);
		if (close_it) {
			count_peer(r, pipe_id, PEER_CONN_CLOSED);
			pipe_close_id(pipe_id);
			slot_recv(sl);
			return;
		}
		log_limited(LOG_INFO, "link", "unknown-session", 10000,
		            "data frame for an unknown session: asking the peer to handshake again");
		/* authenticated (client reject keys), so a client acts on it and
		 * only on it: a forged one cannot make a request run twice; a
		 * bounded, rate-limited answer, never a queue of them */
		if (rate_ok(r, pipe_id, 0) &&
		    seal_reject_build_auth(r->cfg.kr, session_id, seal_frame_counter(frame), CH_ERR_CLOSED,
		                           "unknown session", &reply, &reply_len) == 0)
			out_push(r, sl, NULL, 0, 0, 0, reply, reply_len);
		else
			slot_recv(sl);
		return;
	}
	uint64_t counter = 0;
	for (int i = 0; i < 8; i++)
		counter |= (uint64_t)frame[16 + i] << (8 * i);
	uint8_t tag[SEAL_TAG_BYTES];
	memcpy(tag, frame + len - SEAL_TAG_BYTES, SEAL_TAG_BYTES); /* peek checked len */
	uint8_t *plain = NULL;
	size_t plain_len = 0;
	/* the tag is verified before anything happens, resends included */
	int v = seal_frame_open(&sess->seal, frame, len, &plain, &plain_len);
	if (v == SEAL_REPLAYED) {
		/* authentic (the tag verified): a resend, or an old frame again;
		 * never held against the connection, which is a key holder's */
		pipe_authenticated(r, pipe_id);
		if (handle_resend(r, sl, sess, counter, tag)) {
			count_peer(r, pipe_id, PEER_RESENT);
			return;
		}
		count_peer(r, pipe_id, SEAL_REPLAYED);
		log_limited(LOG_WARN, "link", "replayed", 10000,
		            "dropped replayed frame (%zu bytes): authentic, seen before, and no longer "
		            "in the resend cache",
		            len);
		slot_recv(sl);
		return;
	}
	if (v != SEAL_OK) {
		refuse(r, pipe_id, v, len);
		slot_recv(sl);
		return;
	}
	pipe_authenticated(r, pipe_id);
	if (sess->half_open && !sess_promote(r, sess)) {
		/* every session slot is busy: the request is refused, the
		 * session stays half-open (and expires unless used) */
		struct rpc_call *bc = &sl->call;
		memset(bc, 0, sizeof(*bc));
		bc->rpc = r;
		bc->slot = sl;
		bc->sess = sess;
		bc->start_ns = clock_mono_ns();
		rpc_reply_error(bc, CH_ERR_FULL, "the node holds %u sessions: retry later",
		                SESSIONS_MAX);
		return;
	}
	sess->last_used_ms = r->now_ms;
	lru_unlink(r, sess);
	lru_push(r, sess);

	struct rpc_call *c = &sl->call;
	memset(c, 0, sizeof(*c));
	c->rpc = r;
	c->slot = sl;
	c->sess = sess;
	c->role = sess->role;
	c->peer_id = sess->seal.peer_id;
	c->start_ns = clock_mono_ns();
	c->pipe_id = pipe_id;
	Chorus__Envelope *env = chorus__envelope__unpack(NULL, plain_len, plain);
	if (!env) {
		refuse(r, pipe_id, SEAL_MALFORMED, len);
		rpc_reply_error(c, CH_ERR_PROTOCOL, "undecodable request");
		return;
	}
	recent_add(r, sess, counter, tag);
	c->counter = counter;
	c->request_id = env->request_id;
	c->body_case = (int)env->body_case;
	r->h.request(r->h.ctx, c, env);
	/* every request is answered at once or parked */
	assert(c->answered || c->parked);
	chorus__envelope__free_unpacked(env, NULL);
}

static void handle_slot(struct rpc *r, struct slot *sl)
{
	int rv = nng_aio_result(sl->aio);
	if (sl->sending) {
		if (rv != 0) { /* not sent: the message is still ours */
			nng_msg *m = nng_aio_get_msg(sl->aio);
			if (m)
				nng_msg_free(m);
		}
		if (rv == NNG_ETIMEDOUT && sl->pipe_id) {
			/* the peer does not read its answers: disconnect it */
			count_peer(r, sl->pipe_id, PEER_CONN_CLOSED);
			log_limited(LOG_WARN, "link", "send-timeout", 10000,
			            "a peer took no answer for %u ms: connection closed",
			            SEND_TIMEOUT_MS);
			pipe_close_id(sl->pipe_id);
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
	if (!msg) {
		/* nng 1.5.2 can complete a receive without a message at close
		 * (nanomsg/nng#1543): refuse it, never dereference it */
		slot_recv(sl);
		return;
	}
	sl->state = SLOT_BUSY;
	uint32_t pipe_id = nng_pipe_id(nng_msg_get_pipe(msg)) < 0
	                       ? 0
	                       : (uint32_t)nng_pipe_id(nng_msg_get_pipe(msg));
	sl->pipe_id = pipe_id;
	size_t len = nng_msg_len(msg);
	int kind = 0;
	uint64_t session_id = 0;
	int v = seal_frame_peek(nng_msg_body(msg), len, r->cfg.frame_bytes_max, &kind, &session_id);
	if (v != SEAL_OK) {
		refuse(r, pipe_id, v, len);
		slot_recv(sl);
	} else if (kind == SEAL_KIND_HELLO) {
		handle_hello(r, sl, msg, pipe_id);
	} else if (kind == SEAL_KIND_DATA) {
		handle_data(r, sl, msg, session_id, pipe_id);
	} else {
		refuse(r, pipe_id, SEAL_MALFORMED, len);
		slot_recv(sl);
	}
	nng_msg_free(msg);
}

/* Rounds of rpc_take_ready: requests that arrive while a round is handled
 * join this iteration (and its commit) instead of waking the next one. */
#define TAKE_ROUNDS_MAX 4

static uint32_t rpc_take_round(struct rpc *r, uint64_t now_mono_ms);

void rpc_take_ready(struct rpc *r, uint64_t now_mono_ms)
{
	for (int round = 0; round < TAKE_ROUNDS_MAX; round++)
		if (!rpc_take_round(r, now_mono_ms))
			break;
}

/* One round: returns how many slots were handled. */
static uint32_t rpc_take_round(struct rpc *r, uint64_t now_mono_ms)
{
	uint32_t batch[RPC_CONTEXTS];
	pthread_mutex_lock(&r->mu);
	r->now_ms = now_mono_ms; /* nng threads read it under the lock */
	uint32_t n = r->ready_count;
	memcpy(batch, r->ready, n * sizeof(batch[0]));
	r->ready_count = 0;
	uint32_t evict[EVICT_PENDING_MAX], ne = 0;
	for (uint32_t i = 0; i < r->evict_count; i++) {
		/* one that authenticated meanwhile is a client's: it stays */
		struct pipe_info *pi = idmap_get(&r->pipes, r->evict[i]);
		if (pi && !pi->authenticated)
			evict[ne++] = r->evict[i];
		else if (pi)
			pi->evicting = 0;
	}
	r->evict_count = 0;
	pthread_mutex_unlock(&r->mu);
	for (uint32_t i = 0; i < ne; i++)
		pipe_close_id(evict[i]);
	for (uint32_t i = 0; i < n; i++)
		handle_slot(r, &r->slots[batch[i]]);
	return n + ne;
}

void rpc_tick(struct rpc *r, uint64_t now_mono_ms)
{
	pthread_mutex_lock(&r->mu);
	r->now_ms = now_mono_ms;
	pthread_mutex_unlock(&r->mu);
	/* idle sessions go, but not one a call is parked on: it waits for an
	 * answer (an await may wait a day), so it is used, not idle */
	for (uint32_t i = 0; i < 64 && r->lru.tail &&
	                    r->lru.tail->last_used_ms + SESSION_IDLE_MS < now_mono_ms;
	     i++) {
		struct session *s = r->lru.tail;
		if (s->parked) {
			s->last_used_ms = now_mono_ms;
			lru_unlink(r, s);
			lru_push(r, s);
		} else {
			sess_free(r, s);
		}
	}
	/* a handshake nobody used: gone after the handshake timeout */
	while (r->ho.head && r->ho.head->last_used_ms + HANDSHAKE_TIMEOUT_MS < now_mono_ms)
		sess_free(r, r->ho.head);
	if (now_mono_ms >= r->next_sweep_ms) {
		r->next_sweep_ms = now_mono_ms + PIPE_SWEEP_MS;
		pipes_sweep(r);
	}
}

/* ---- set-up and teardown ---- */

int rpc_create(struct rpc **out, const struct rpc_config *cfg, const struct rpc_handler *h,
               char *err, size_t err_len)
{
	struct rpc *r = calloc(1, sizeof(*r));
	if (!r) {
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	r->cfg = *cfg;
	r->h = *h;
	pthread_mutex_init(&r->mu, NULL);
	idmap_init(&r->sessions);
	idmap_init(&r->pipes);
	r->hello_guard = seal_hello_guard_create(SEAL_HELLO_GUARD_ENTRIES_DEFAULT);
	if (!r->hello_guard) {
		snprintf(err, err_len, "out of memory");
		*out = r;
		return -1;
	}
	int rv = nng_rep0_open(&r->sock);
	if (rv == 0) {
		r->sock_open = 1;
		/* a frame, its seal and nng's request header: what an outsider
		 * can make one connection allocate */
		rv = nng_socket_set_size(r->sock, NNG_OPT_RECVMAXSZ,
		                         cfg->frame_bytes_max + SEAL_OVERHEAD_BYTES + 64);
	}
	if (rv == 0)
		rv = nng_pipe_notify(r->sock, NNG_PIPE_EV_ADD_PRE, pipe_event, r);
	if (rv == 0)
		rv = nng_pipe_notify(r->sock, NNG_PIPE_EV_REM_POST, pipe_event, r);
	for (uint32_t i = 0; rv == 0 && i < RPC_CONTEXTS; i++) {
		struct slot *sl = &r->slots[i];
		sl->rpc = r;
		sl->index = i;
		if ((rv = nng_ctx_open(&sl->ctx, r->sock)) == 0)
			rv = nng_aio_alloc(&sl->aio, slot_cb, sl);
	}
	if (rv != 0) {
		snprintf(err, err_len, "nng: %s", nng_strerror(rv));
		*out = r;
		return -1;
	}
	*out = r;
	return 0;
}

int rpc_listen(struct rpc *r, char *err, size_t err_len)
{
	int rv = nng_listen(r->sock, r->cfg.listen, NULL, 0);
	if (rv != 0) {
		snprintf(err, err_len, "cannot listen on %s: %s", r->cfg.listen, nng_strerror(rv));
		return -1;
	}
	for (uint32_t i = 0; i < RPC_CONTEXTS; i++)
		slot_recv(&r->slots[i]);
	return 0;
}

void rpc_destroy(struct rpc *r)
{
	if (!r)
		return;
	if (r->sock_open)
		nng_close(r->sock);
	for (uint32_t i = 0; i < RPC_CONTEXTS; i++) {
		struct slot *sl = &r->slots[i];
		if (!sl->aio)
			continue;
		nng_aio_stop(sl->aio);
		/* a request received but never handled (the loop ended first),
		 * or an answer nng did not take: ours to free */
		nng_msg *m = nng_aio_get_msg(sl->aio);
		int unconsumed = sl->sending ? nng_aio_result(sl->aio) != 0
		                             : nng_aio_result(sl->aio) == 0;
		if (m && unconsumed)
			nng_msg_free(m);
		nng_aio_free(sl->aio);
	}
	while (r->parked_head) {
		struct rpc_call *c = r->parked_head;
		parked_unlink(r, c);
		if (c->on_cancel)
			c->on_cancel(c->cancel_arg, c);
		if (c->local_done)
			c->local_done(c->local_arg, NULL); /* never answered */
		free(c);
	}
	while (r->out_head) {
		struct out *o = r->out_head;
		r->out_head = o->next;
		if (o->local_done)
			o->local_done(o->local_arg, NULL); /* not sent: the node stops */
		free(o->plain);
		free(o);
	}
	r->out_tail = NULL;
	while (r->ho.head)
		sess_free(r, r->ho.head);
	while (r->lru.head) {
		struct session *s = r->lru.head;
		idmap_del(&r->sessions, s->seal.session_id);
		lru_unlink(r, s);
		for (int i = 0; i < SESSION_RECENT; i++)
			recent_clear(r, &s->recent[i]);
		sodium_memzero(&s->seal, sizeof(s->seal));
		free(s);
	}
	idmap_free(&r->sessions);
	struct idmap_iter it;
	idmap_iter_init(&r->pipes, &it);
	for (struct pipe_info *pi; (pi = idmap_iter_next(&r->pipes, &it, NULL));)
		free(pi);
	idmap_free(&r->pipes);
	seal_hello_guard_free(r->hello_guard);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

int rpc_local_call(struct rpc *r, const Chorus__Envelope *env, unsigned role,
                   rpc_local_done_fn done, void *arg)
{
	if (!r || !env || !done)
		return -1;
	/* the handler may park it: rpc_park copies the call, so it can live
	 * on the stack */
	struct rpc_call c;
	memset(&c, 0, sizeof(c));
	c.rpc = r;
	c.role = role;
	c.request_id = env->request_id;
	c.body_case = (int)env->body_case;
	c.start_ns = clock_mono_ns();
	c.local_done = done;
	c.local_arg = arg;
	r->h.request(r->h.ctx, &c, env);
	assert(c.answered || c.parked);
	return 0;
}

void rpc_count_refused(struct rpc_call *c, int verdict)
{
	if (verdict < 0 || verdict >= PEER_VERDICTS)
		return;
	refuse(c->rpc, c->pipe_id, verdict, 0);
}

/* ---- status ---- */

uint32_t rpc_set_keyring(struct rpc *r, const struct seal_keyring *kr)
{
	if (!r)
		return 0;
	r->cfg.kr = kr;
	uint32_t dropped = 0;
	struct idmap_iter it;
	idmap_iter_init(&r->sessions, &it);
	for (struct session *s; (s = idmap_iter_next(&r->sessions, &it, NULL));) {
		if (!seal_keyring_has_id(kr, s->seal.key_id)) {
			sess_free(r, s);
			dropped++;
		}
	}
	return dropped;
}

uint32_t rpc_session_count(const struct rpc *r)
{
	return (uint32_t)r->sessions.count;
}

uint32_t rpc_key_sessions(const struct rpc *r, struct rpc_key_sessions *out, uint32_t max)
{
	uint32_t n = 0;
	struct idmap_iter it;
	idmap_iter_init(&r->sessions, &it);
	for (const struct session *s; (s = idmap_iter_next(&r->sessions, &it, NULL));) {
		uint32_t i = 0;
		while (i < n && out[i].key_id != s->seal.key_id)
			i++;
		if (i == n) {
			if (n == max)
				continue;
			out[n++] = (struct rpc_key_sessions){.key_id = s->seal.key_id};
		}
		out[i].sessions++;
		if (s->seal.role == SEAL_ROLE_NODE)
			out[i].node_sessions++;
	}
	return n;
}

int rpc_peer_counters(struct rpc *r, Chorus__PeerCounters ***out, size_t *n)
{
	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&r->mu);
	if (!r->peer_count) {
		pthread_mutex_unlock(&r->mu);
		return 0;
	}
	Chorus__PeerCounters **v = calloc(r->peer_count, sizeof(*v));
	Chorus__PeerCounters *pcs = calloc(r->peer_count, sizeof(*pcs));
	if (!v || !pcs) {
		pthread_mutex_unlock(&r->mu);
		free(v);
		free(pcs);
		return -1;
	}
	for (uint32_t i = 0; i < r->peer_count; i++) {
		const struct peer *p = &r->peers[i];
		chorus__peer_counters__init(&pcs[i]);
		pcs[i].truncated = p->counts[SEAL_TRUNCATED];
		pcs[i].oversized = p->counts[SEAL_OVERSIZED];
		pcs[i].malformed = p->counts[SEAL_MALFORMED];
		pcs[i].forged = p->counts[SEAL_FORGED];
		pcs[i].tampered = p->counts[SEAL_TAMPERED];
		pcs[i].replayed = p->counts[SEAL_REPLAYED];
		pcs[i].unknown_session = p->counts[SEAL_NO_SESSION];
		pcs[i].resent = p->counts[PEER_RESENT];
		pcs[i].rate_limited = p->counts[PEER_RATE_LIMITED];
		pcs[i].stale = p->counts[SEAL_STALE];
		pcs[i].busy = p->counts[SEAL_BUSY];
		pcs[i].connections_refused = p->counts[PEER_CONN_REFUSED];
		pcs[i].connections_closed = p->counts[PEER_CONN_CLOSED];
		/* the address is copied: the table may change once unlocked */
		pcs[i].peer = strdup(p->addr);
		v[i] = &pcs[i];
	}
	*out = v;
	*n = r->peer_count;
	pthread_mutex_unlock(&r->mu);
	return 0;
}

void rpc_peer_counters_free(Chorus__PeerCounters **p, size_t n)
{
	for (size_t i = 0; p && i < n; i++)
		free(p[i]->peer);
	if (p && n)
		free(p[0]); /* the array of structs, allocated at once */
	free(p);
}
