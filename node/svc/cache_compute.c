/*
 * cache_compute.c - get-or-compute (cache_compute.h; docs/cache.md
 * "Get-or-compute"): ConCache's get_or_store, cluster-wide.
 *
 * A CACHE_GET_OR_COMPUTE reaches the key's primary as every keyed request
 * does (forwarded once, CH_ERR_MOVED on a stale map), with a longer
 * forward timeout (cache_forward_timeout_ms) that the request carries
 * (CacheReq.wait_ms). The node it comes in by, when another node leads the
 * key (cache_compute_forward), keeps one forward in flight per request
 * (cache, key, compute spec, ttl, consistency) and primary: later callers
 * of the same request join it and get its answer. A forward holds one of
 * the link's request slots until its compute ends, so a node keeps at most
 * CACHE_COMPUTE_FORWARDS_PEER_MAX in flight to one primary (CH_ERR_FULL
 * beyond): a crowd of callers never takes the slots that every other
 * request to that node needs. At the key's primary:
 *   1. a compute of (cache, key) already running here: the caller joins
 *      its waiters;
 *   2. else the key is read as a GET at the request's consistency (through
 *      the cache port, so quorum reads and read repair apply): a live value
 *      is the answer (computed = false);
 *   3. else, unless a compute started meanwhile (join it) or this node no
 *      longer leads the key (CH_ERR_MOVED), the spec is submitted as a task
 *      through the task_submit port, under an idempotency key of its own,
 *      and watched (ports.h) for at most cache_compute_wait_ms, less when
 *      the node that forwarded the request would stop waiting before
 *      (cache_compute_wait_within);
 *   4. the task succeeded: its output is written as a PUT with NX and GET
 *      (through the cache port again: a version, replication at the
 *      request's consistency, routed to the current primary if the map
 *      changed since). Written: every waiter gets it (computed = true).
 *      Not written because the key holds a value written meanwhile: that
 *      value is kept and every waiter gets it (computed = false), so all
 *      callers agree on one value even across a map change;
 *   5. the task failed, timed out, was cancelled or lost (or the wait ran
 *      out: it is cancelled), or was never journaled (a failed commit:
 *      CH_ERR_STORAGE at once): every waiter gets the error
 *      (CH_ERR_TASK_FAILED with the task's error, CH_ERR_TIMEOUT), nothing
 *      is stored, and the next caller starts a new compute.
 * A compute is in the table from its submit until its value is written
 * (or it failed): a caller arriving while the value is being written joins
 * and gets it.
 *
 * Callers that go away: every caller here is a struct compute_waiter,
 * found by its callback argument (by_arg), from its arrival to its answer.
 * When its call is dropped (cache_compute_cancel: the cache service's
 * call_cancel) it leaves its compute's or forward's list at once, so it no
 * longer counts against compute_waiters_max; one whose key is being read
 * is only marked, and dropped when the read ends. A forwarded caller at
 * the primary is also dropped (answered CH_ERR_TIMEOUT) once the node that
 * forwarded it stopped waiting (cache_compute_tick), while the compute
 * goes on for the others.
 *
 * Bounds: [cache] compute_max computes per node, compute_waiters_max
 * callers per compute and per forward (CH_ERR_FULL beyond),
 * CACHE_COMPUTE_FORWARDS_PEER_MAX forwards per primary; the payload at
 * most value_bytes_max (checked where the request comes in).
 *
 * Lifetimes: a caller between steps 2 and 3 is a struct compute_call, the
 * argument of the internal GET (an operation of the service, answered at
 * stop like the others); a compute is a struct compute in the table and
 * the service's list, owned by it until its waiters are answered; a
 * forward is a struct compute_fwd, the argument of its forward (an
 * operation too). Every callback here may run inside the call that
 * started it (the cache port answers at once when it can), so nothing is
 * touched after such a call.
 */
#include "svc/cache_compute.h"

#include <assert.h>

#include "lib/idmap.h"
#include "svc/cache_internal.h"

#define COMPUTE_BUCKETS 1024              /* the tables of computes and forwards (chained) */
#define COMPUTE_LIMIT_MS_DEFAULT 60000u   /* a task without a time limit, its own or the node's */
#define COMPUTE_QUEUE_MS CH_CACHE_COMPUTE_QUEUE_MS /* a task's wait for a worker, at least */
#define COMPUTE_HANDLER_TEXT 64           /* of a handler's name in a message */
#define COMPUTE_KEY_PREFIX "cache-compute:"
#define COMPUTE_IDEM_BYTES 160            /* its task's idempotency key (the port takes 256) */
#define FORWARD_TIMEOUTS 3u               /* get-or-compute: read, write, slack */
#define RESERVE_TIMEOUTS 2u               /* the primary keeps: the write, the way back */

/* Where a caller waits. */
enum { WAITER_READING = 1, WAITER_COMPUTE, WAITER_FORWARD };

struct waiter_list {
	struct compute_waiter *head, *tail;
	uint32_t count;
};

struct compute_waiter {
	struct compute_waiter *next, *prev; /* its list's */
	struct waiter_list *list;           /* COMPUTE, FORWARD: the list it is in */
	int state;                          /* WAITER_* */
	int mapped;                         /* in by_arg under arg */
	int cancelled;                      /* READING: its call went away */
	cache_reply_fn cb;
	void *arg;
	uint64_t until_ms;                  /* monotonic: its forwarder gives up then; 0 = never */
};

struct compute {
	struct cache_compute *cc;
	struct compute *hnext;       /* its bucket's chain */
	struct compute *next, *prev; /* every compute */
	uint32_t cache;              /* index into the service's caches */
	uint64_t hash;
	uint8_t *key;
	size_t key_len;
	int64_t ttl_ms;              /* of the PUT: 0 = the cache's default */
	int consistency;             /* the request's (0 = the cache's) */
	uint64_t task_id;
	uint32_t wait_ms;            /* given up (the task cancelled) after this long */
	char handler[COMPUTE_HANDLER_TEXT + 1];
	int watching;                /* its watch is registered (not told yet) */
	uint8_t *value;              /* the task's output, while it is written */
	size_t value_len;
	struct waiter_list waiters;
	uint64_t until_min_ms;       /* no waiter's until_ms is earlier (0 = none has one) */
};

/* A get-or-compute forwarded from here, and the callers that wait on it. */
struct compute_fwd {
	struct cache_compute *cc;
	struct compute_fwd *hnext;         /* its bucket's chain */
	struct compute_fwd *next, *prev;   /* every forward */
	uint64_t hash;
	uint8_t to[ID_BYTES];              /* the primary it went to */
	uint8_t *req;                      /* what its callers asked (fwd_identity), packed */
	size_t req_len;
	struct waiter_list waiters;
};

/* Forwards in flight to one primary. */
struct fwd_peer {
	uint8_t id[ID_BYTES];
	uint32_t count;
};

struct cache_compute {
	struct cache_svc *s;
	struct task_submit_port *tasks;
	unsigned char hash_key[crypto_shorthash_KEYBYTES];
	struct compute *buckets[COMPUTE_BUCKETS];
	struct compute *all;
	uint32_t count;
	struct compute_fwd *fwd_buckets[COMPUTE_BUCKETS];
	struct compute_fwd *fwds;
	uint32_t fwd_count;
	struct fwd_peer *peers;            /* those with a forward in flight */
	uint32_t peer_count, peer_cap;
	struct idmap by_arg;               /* callback argument -> struct compute_waiter */
	uint64_t joined_fwd, refused_fwd, cancelled, expired;
};

/* A caller whose key is being read (step 2): its request, packed. */
struct compute_call {
	struct cache_compute *cc;
	uint32_t cache;
	uint8_t *req;
	size_t req_len;
	struct compute_waiter *w;
	uint64_t arrived_ms;         /* monotonic */
};

static void answer(cache_reply_fn cb, void *arg, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void answer(cache_reply_fn cb, void *arg, int code, const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cb(arg, code, NULL, msg);
}

static uint64_t now_mono(const struct cache_compute *cc)
{
	return host_now(cc->s->host)->mono_ms;
}

/* ---- waiters ---- */

static uint64_t arg_id(const void *arg)
{
	return (uint64_t)(uintptr_t)arg;
}

/* A caller, findable by arg when no other caller here has the same one
 * (an argument shared by two callers is not cancellable: 0 is reserved). */
static struct compute_waiter *waiter_new(struct cache_compute *cc, int state, cache_reply_fn cb,
                                         void *arg)
{
	struct compute_waiter *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->state = state;
	w->cb = cb;
	w->arg = arg;
	uint64_t id = arg_id(arg);
	if (id != 0 && !idmap_get(&cc->by_arg, id) && idmap_put(&cc->by_arg, id, w) == 0)
		w->mapped = 1;
	return w;
}

static void waiter_unmap(struct cache_compute *cc, struct compute_waiter *w)
{
	if (!w->mapped)
		return;
	if (idmap_get(&cc->by_arg, arg_id(w->arg)) == w)
		(void)idmap_del(&cc->by_arg, arg_id(w->arg));
	w->mapped = 0;
}

static void list_push(struct waiter_list *l, struct compute_waiter *w)
{
	w->list = l;
	w->next = NULL;
	w->prev = l->tail;
	if (l->tail)
		l->tail->next = w;
	else
		l->head = w;
	l->tail = w;
	l->count++;
}

static void list_remove(struct waiter_list *l, struct compute_waiter *w)
{
	assert(w->list == l && l->count > 0);
	if (w->prev)
		w->prev->next = w->next;
	else
		l->head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		l->tail = w->prev;
	w->next = w->prev = NULL;
	w->list = NULL;
	l->count--;
}

/* Takes every waiter off l, none findable any more (a callback run while
 * they are answered cannot cancel one): the first, linked by next. */
static struct compute_waiter *list_take(struct cache_compute *cc, struct waiter_list *l)
{
	struct compute_waiter *first = l->head;
	for (struct compute_waiter *w = first; w; w = w->next) {
		waiter_unmap(cc, w);
		w->list = NULL;
	}
	l->head = l->tail = NULL;
	l->count = 0;
	return first;
}

/* Answers w (no longer in any list) and frees it. */
static void waiter_answer(struct cache_compute *cc, struct compute_waiter *w, int code,
                          const Chorus__CacheResp *resp, const char *err)
{
	assert(!w->list);
	cache_reply_fn cb = w->cb;
	void *arg = w->arg;
	waiter_unmap(cc, w);
	free(w);
	cb(arg, code, code == 0 ? resp : NULL, code == 0 ? NULL : err);
}

static void waiter_fail(struct cache_compute *cc, struct compute_waiter *w, int code,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void waiter_fail(struct cache_compute *cc, struct compute_waiter *w, int code,
                        const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	waiter_answer(cc, w, code, NULL, msg);
}

/* ---- time ---- */

uint32_t cache_compute_wait_ms(const struct config *cfg, const Chorus__TaskOptions *o)
{
	uint64_t limit = o && o->timeout_ms ? o->timeout_ms : cfg->default_timeout_ms;
	if (limit == 0)
		limit = COMPUTE_LIMIT_MS_DEFAULT;
	uint64_t attempts = 1;
	if (o && o->restart == CHORUS__RESTART_POLICY__RESTART_TRANSIENT)
		attempts = o->max_attempts ? o->max_attempts : cfg->max_attempts;
	if (attempts == 0)
		attempts = 1;
	uint64_t run = 0;
	uint64_t backoff = o && o->backoff_ms ? o->backoff_ms : cfg->backoff_ms;
	for (uint64_t i = 0; i < attempts && run < CH_CACHE_COMPUTE_WAIT_MS_MAX; i++) {
		run += limit;
		if (i + 1 < attempts) {
			run += backoff < cfg->backoff_max_ms ? backoff : cfg->backoff_max_ms;
			backoff *= 2;
		}
	}
	/* a task's time limit counts from its start, and a node under load may
	 * keep it queued a while (each retry queues again): as long again as
	 * the run, and never less than COMPUTE_QUEUE_MS, so that a busy node
	 * does not cancel computes only for them to be started again */
	uint64_t wait = run + (run > COMPUTE_QUEUE_MS ? run : COMPUTE_QUEUE_MS);
	return wait < CH_CACHE_COMPUTE_WAIT_MS_MAX ? (uint32_t)wait : CH_CACHE_COMPUTE_WAIT_MS_MAX;
}

uint32_t cache_forward_timeout_ms(const struct config *cfg, const Chorus__CacheReq *req)
{
	uint64_t t = 2ull * cfg->cache_timeout_ms;
	if (req->op == CHORUS__CACHE_OP__CACHE_GET_OR_COMPUTE)
		t = req->wait_ms ? req->wait_ms
		                 : cache_compute_wait_ms(cfg, req->compute ? req->compute->opts : NULL) +
		                       (uint64_t)FORWARD_TIMEOUTS * cfg->cache_timeout_ms;
	return t < UINT32_MAX ? (uint32_t)t : UINT32_MAX;
}

uint32_t cache_compute_wait_within(uint32_t own_ms, uint32_t forwarded_ms, uint64_t elapsed_ms,
                                   uint64_t reserve_ms)
{
	if (forwarded_ms == 0)
		return own_ms;
	uint64_t used = elapsed_ms + reserve_ms;
	if (used >= forwarded_ms)
		return 0;
	uint64_t left = forwarded_ms - used;
	return left < own_ms ? (uint32_t)left : own_ms;
}

/* ---- the table of computes ---- */

static uint64_t bytes_hash(const struct cache_compute *cc, const void *bytes, size_t len)
{
	unsigned char h[crypto_shorthash_BYTES];
	crypto_shorthash(h, bytes, len, cc->hash_key);
	uint64_t x;
	memcpy(&x, h, sizeof(x));
	return x;
}

static uint64_t key_hash(const struct cache_compute *cc, uint32_t cache, const void *key,
                         size_t len)
{
	return bytes_hash(cc, key, len) ^ ((uint64_t)cache * 0x9e3779b97f4a7c15ull);
}

static struct compute *compute_find(struct cache_compute *cc, uint32_t cache, const void *key,
                                    size_t len)
{
	uint64_t h = key_hash(cc, cache, key, len);
	for (struct compute *k = cc->buckets[h % COMPUTE_BUCKETS]; k; k = k->hnext)
		if (k->hash == h && k->cache == cache && k->key_len == len &&
		    memcmp(k->key, key, len) == 0)
			return k;
	return NULL;
}

static void compute_link(struct cache_compute *cc, struct compute *k)
{
	struct compute **b = &cc->buckets[k->hash % COMPUTE_BUCKETS];
	k->hnext = *b;
	*b = k;
	k->next = cc->all;
	if (cc->all)
		cc->all->prev = k;
	cc->all = k;
	cc->count++;
}

static void compute_unlink(struct cache_compute *cc, struct compute *k)
{
	for (struct compute **p = &cc->buckets[k->hash % COMPUTE_BUCKETS]; *p; p = &(*p)->hnext) {
		if (*p == k) {
			*p = k->hnext;
			break;
		}
	}
	if (k->prev)
		k->prev->next = k->next;
	else
		cc->all = k->next;
	if (k->next)
		k->next->prev = k->prev;
	k->hnext = k->next = k->prev = NULL;
	assert(cc->count > 0);
	cc->count--;
}

/* Adds a caller to k's waiters (or answers it CH_ERR_FULL). */
static void compute_join(struct compute *k, struct compute_waiter *w)
{
	const struct config *cfg = k->cc->s->cfg;
	if (k->waiters.count >= cfg->cache_compute_waiters_max) {
		waiter_fail(k->cc, w, CH_ERR_FULL,
		            "%u callers wait for this key's compute already (the most [cache] "
		            "compute_waiters_max allows): retry later",
		            k->waiters.count);
		return;
	}
	w->state = WAITER_COMPUTE;
	list_push(&k->waiters, w);
	if (w->until_ms && (!k->until_min_ms || w->until_ms < k->until_min_ms))
		k->until_min_ms = w->until_ms;
}

/* The end of a compute: out of the table first (a waiter's callback may
 * bring the same key back), then every waiter answered, in arrival order,
 * then freed. */
static void compute_end(struct compute *k, int code, const Chorus__CacheResp *resp,
                        const char *err)
{
	struct cache_compute *cc = k->cc;
	compute_unlink(cc, k);
	struct compute_waiter *w = list_take(cc, &k->waiters);
	while (w) {
		struct compute_waiter *n = w->next;
		waiter_answer(cc, w, code, resp, err);
		w = n;
	}
	free(k->key);
	free(k->value);
	free(k);
}

/* ---- step 4: the value written ---- */

static void store_done(void *arg, int code, const Chorus__CacheResp *resp, const char *err)
{
	struct compute *k = arg;
	struct cache_svc *s = k->cc->s;
	if (code != 0) {
		char msg[400];
		snprintf(msg, sizeof(msg), "task %" PRIu64 " computed a value of %zu bytes, but it was "
		         "not stored: %s", k->task_id, k->value_len, err ? err : ch_strerror(code));
		log_debug("cache", "get-or-compute: %s", msg);
		compute_end(k, code, NULL, msg);
		return;
	}
	Chorus__CacheResp out = CHORUS__CACHE_RESP__INIT;
	Chorus__CacheVersion vpb;
	uint8_t node[ID_BYTES];
	out.found = 1;
	out.epoch = s->map.epoch;
	if (resp->applied || !resp->found) {
		out.value.data = k->value;
		out.value.len = k->value_len;
		out.computed = 1;
	} else {
		/* a write made while the task ran is kept (NX): it is the value */
		out.value = resp->value;
		out.computed = 0;
	}
	/* its version and time left, when this node holds that very value
	 * (the write went to another primary if the map changed meanwhile) */
	struct cache *c = &s->caches[k->cache];
	struct cstore_item it;
	uint64_t now = cache_now_wall(s);
	out.ttl_ms = -1;
	if (cstore_peek(c->st, k->key, k->key_len, now, &it) == 0 && !it.tombstone &&
	    it.value_bytes == out.value.len &&
	    (out.value.len == 0 || memcmp(it.value, out.value.data, out.value.len) == 0)) {
		cache_version_to_pb(&it.version, &vpb, node);
		out.version = &vpb;
		out.ttl_ms = it.expire_ms ? (int64_t)(it.expire_ms > now ? it.expire_ms - now : 0) : -1;
	}
	log_debug("cache", "get-or-compute: task %" PRIu64 " (%s): %s, %u caller(s) answered",
	          k->task_id, k->handler, out.computed ? "value stored" : "a value written meanwhile kept",
	          k->waiters.count);
	compute_end(k, 0, &out, NULL);
}

/* ---- the task's end ---- */

static void compute_done(void *arg, int rc, const Chorus__TaskResult *r)
{
	struct compute *k = arg;
	struct cache_compute *cc = k->cc;
	struct cache_svc *s = cc->s;
	k->watching = 0;
	if (rc != 0) {
		/* never journaled (its iteration's commit failed): it never runs */
		char msg[400];
		snprintf(msg, sizeof(msg),
		         "the compute's task (%" PRIu64 ", handler %s) could not be journaled on the "
		         "key's primary (%s): it does not run; retry once the node's disk has room",
		         k->task_id, k->handler, ch_strerror(rc));
		log_debug("cache", "get-or-compute: %s (%u caller(s))", msg, k->waiters.count);
		compute_end(k, rc, NULL, msg);
		return;
	}
	if (r->state == CHORUS__TASK_STATE__TASK_SUCCEEDED) {
		k->value_len = r->output.len;
		k->value = malloc(k->value_len ? k->value_len : 1);
		if (!k->value) {
			compute_end(k, CH_ERR_NOMEM, NULL, "out of memory");
			return;
		}
		if (k->value_len)
			memcpy(k->value, r->output.data, k->value_len);
		Chorus__CacheReq put = CHORUS__CACHE_REQ__INIT;
		put.op = CHORUS__CACHE_OP__CACHE_PUT;
		put.cache = (char *)s->caches[k->cache].cfg->name;
		put.key.data = k->key;
		put.key.len = k->key_len;
		put.value.data = k->value;
		put.value.len = k->value_len;
		put.ttl_ms = k->ttl_ms;
		put.flags = CH_CACHE_NX | CH_CACHE_GET;
		put.consistency = (Chorus__Consistency)k->consistency;
		char err[256] = "";
		/* k may be freed inside: store_done answers at once when it can */
		int src = s->port.submit(s->port.ctx, &put, store_done, k, err, sizeof(err));
		if (src != 0)
			store_done(k, src, NULL, err);
		return;
	}
	int code;
	char msg[400];
	const char *why = r->error && r->error[0] ? r->error : "no error given";
	switch (r->state) {
	case CHORUS__TASK_STATE__TASK_TIMED_OUT:
		code = CH_ERR_TIMEOUT;
		snprintf(msg, sizeof(msg), "the compute (task %" PRIu64 ", handler %s) timed out: %s",
		         k->task_id, k->handler, why);
		break;
	case CHORUS__TASK_STATE__TASK_FAILED:
	case CHORUS__TASK_STATE__TASK_CANCELLED:
	case CHORUS__TASK_STATE__TASK_LOST:
		code = CH_ERR_TASK_FAILED;
		snprintf(msg, sizeof(msg), "the compute (task %" PRIu64 ", handler %s) %s: %s",
		         k->task_id, k->handler,
		         r->state == CHORUS__TASK_STATE__TASK_CANCELLED ? "was cancelled"
		         : r->state == CHORUS__TASK_STATE__TASK_LOST    ? "was lost"
		                                                        : "failed",
		         why);
		break;
	default:
		/* not over: the wait ran out, or the node is closing */
		if (host_closing(s->host)) {
			code = CH_ERR_SHUTTING_DOWN;
			snprintf(msg, sizeof(msg), "the node is stopping (task %" PRIu64 " not over)",
			         k->task_id);
		} else {
			code = CH_ERR_TIMEOUT;
			snprintf(msg, sizeof(msg),
			         "the compute (task %" PRIu64 ", handler %s) did not end within %u ms: "
			         "cancelled",
			         k->task_id, k->handler, k->wait_ms);
			cc->tasks->cancel(cc->tasks->ctx, k->task_id);
		}
		break;
	}
	log_debug("cache", "get-or-compute: %s (%u caller(s))", msg, k->waiters.count);
	compute_end(k, code, NULL, msg);
}

/* ---- step 3: a new compute ---- */

/* Submits req's compute and answers w once it is over. arrived_ms: when
 * w's request came to this node (monotonic). */
static void compute_start(struct cache_compute *cc, uint32_t cache, const Chorus__CacheReq *req,
                          struct compute_waiter *w, uint64_t arrived_ms)
{
	struct cache_svc *s = cc->s;
	if (!cc->tasks) {
		waiter_fail(cc, w, CH_ERR_UNAVAILABLE, "this node runs no tasks: get-or-compute is off");
		return;
	}
	if (cc->count >= s->cfg->cache_compute_max) {
		waiter_fail(cc, w, CH_ERR_FULL,
		            "%u computes are running on this node (the most [cache] compute_max "
		            "allows): retry later",
		            cc->count);
		return;
	}
	/* the node that forwarded the request stops waiting after wait_ms: the
	 * compute ends before, so that its answer (and its waiter's slot) is
	 * not left behind */
	uint32_t own = cache_compute_wait_ms(s->cfg, req->compute->opts);
	uint64_t elapsed = now_mono(cc) - arrived_ms;
	uint32_t wait = cache_compute_wait_within(own, req->forwarded ? req->wait_ms : 0, elapsed,
	                                          (uint64_t)RESERVE_TIMEOUTS * s->cfg->cache_timeout_ms);
	if (wait == 0) {
		waiter_fail(cc, w, CH_ERR_TIMEOUT,
		            "the node that forwarded this get-or-compute waits %u ms for it; after "
		            "%" PRIu64 " ms here, no time is left for a compute (nothing was run)",
		            req->wait_ms, elapsed);
		return;
	}
	struct compute *k = calloc(1, sizeof(*k));
	if (!k || !(k->key = malloc(req->key.len))) {
		free(k);
		waiter_fail(cc, w, CH_ERR_NOMEM, "out of memory");
		return;
	}
	k->cc = cc;
	k->cache = cache;
	memcpy(k->key, req->key.data, req->key.len);
	k->key_len = req->key.len;
	k->hash = key_hash(cc, cache, k->key, k->key_len);
	k->ttl_ms = req->ttl_ms;
	k->consistency = (int)req->consistency;
	snprintf(k->handler, sizeof(k->handler), "%s", req->compute->handler);
	/* a key of its own for every compute, never one a task had before:
	 * the cache, the key's hash, a fresh clock reading and a nonce */
	uint8_t nonce[8];
	randombytes_buf(nonce, sizeof(nonce));
	uint64_t nonce64;
	memcpy(&nonce64, nonce, sizeof(nonce64));
	char idem[COMPUTE_IDEM_BYTES];
	snprintf(idem, sizeof(idem), COMPUTE_KEY_PREFIX "%s:%016" PRIx64 ":%016" PRIx64 ":%016" PRIx64,
	         s->caches[cache].cfg->name, k->hash, hlc_now(&s->hlc, cache_now_wall(s)), nonce64);
	char err[300] = "";
	int rc = cc->tasks->submit(cc->tasks->ctx, req->compute, idem, &k->task_id, err, sizeof(err));
	if (rc != 0) {
		free(k->key);
		free(k);
		waiter_fail(cc, w, rc, "the compute's task was refused: %s",
		            err[0] ? err : ch_strerror(rc));
		return;
	}
	k->wait_ms = wait;
	rc = cc->tasks->watch(cc->tasks->ctx, k->task_id, k->wait_ms, compute_done, k);
	if (rc != 0) {
		cc->tasks->cancel(cc->tasks->ctx, k->task_id);
		free(k->key);
		free(k);
		waiter_fail(cc, w, rc, "cannot follow the compute's task: %s", ch_strerror(rc));
		return;
	}
	k->watching = 1;
	compute_link(cc, k);
	compute_join(k, w);
	log_debug("cache", "get-or-compute: task %" PRIu64 " (%s) computes a key of cache %s (at "
	          "most %u ms)", k->task_id, k->handler, s->caches[cache].cfg->name, k->wait_ms);
}

/* 1 when this node leads key's partition under its current map. */
static int leads(const struct cache_svc *s, const void *key, size_t len)
{
	if (s->map.member_count == 0)
		return 0;
	uint16_t p = cplace_partition(key, len, s->map.partition_count);
	return memcmp(cplace_owner_id(&s->map, p, 0), s->self, ID_BYTES) == 0;
}

/* ---- step 2: the read ---- */

static void call_free(struct compute_call *call)
{
	free(call->req);
	free(call);
}

static void read_done(void *arg, int code, const Chorus__CacheResp *resp, const char *err)
{
	struct compute_call *call = arg;
	struct cache_compute *cc = call->cc;
	struct compute_waiter *w = call->w;
	uint64_t arrived_ms = call->arrived_ms;
	if (w->cancelled) {
		/* its call went away while the key was read: nothing to start */
		assert(!w->mapped);
		free(w);
		call_free(call);
		return;
	}
	if (code != 0) {
		call_free(call);
		waiter_answer(cc, w, code, NULL, err ? err : ch_strerror(code));
		return;
	}
	if (resp->found) {
		Chorus__CacheResp hit = *resp;
		hit.computed = 0;
		call_free(call);
		waiter_answer(cc, w, 0, &hit, NULL);
		return;
	}
	Chorus__CacheReq *req = chorus__cache_req__unpack(NULL, call->req_len, call->req);
	uint32_t cache = call->cache;
	call_free(call);
	if (!req) {
		waiter_fail(cc, w, CH_ERR_NOMEM, "out of memory");
		return;
	}
	struct compute *k = compute_find(cc, cache, req->key.data, req->key.len);
	if (k) {
		compute_join(k, w); /* started while this caller read */
	} else if (!leads(cc->s, req->key.data, req->key.len)) {
		cc->s->moved++;
		waiter_fail(cc, w, CH_ERR_MOVED, "the key's partition moved while it was read: retry");
	} else {
		compute_start(cc, cache, req, w, arrived_ms);
	}
	chorus__cache_req__free_unpacked(req, NULL);
}

/* ---- at the node a request comes in by: one forward per request ---- */

/* The count of forwards in flight to `to` (added when absent and add), or
 * NULL (absent; or out of memory). */
static uint32_t *peer_count(struct cache_compute *cc, const uint8_t *to, int add)
{
	for (uint32_t i = 0; i < cc->peer_count; i++)
		if (memcmp(cc->peers[i].id, to, ID_BYTES) == 0)
			return &cc->peers[i].count;
	if (!add)
		return NULL;
	if (cc->peer_count == cc->peer_cap) {
		uint32_t cap = cc->peer_cap ? cc->peer_cap * 2 : 8;
		struct fwd_peer *p = realloc(cc->peers, cap * sizeof(*p));
		if (!p)
			return NULL;
		cc->peers = p;
		cc->peer_cap = cap;
	}
	struct fwd_peer *p = &cc->peers[cc->peer_count++];
	memcpy(p->id, to, ID_BYTES);
	p->count = 0;
	return &p->count;
}

static void peer_release(struct cache_compute *cc, const uint8_t *to)
{
	for (uint32_t i = 0; i < cc->peer_count; i++) {
		if (memcmp(cc->peers[i].id, to, ID_BYTES) != 0)
			continue;
		assert(cc->peers[i].count > 0);
		if (--cc->peers[i].count == 0)
			cc->peers[i] = cc->peers[--cc->peer_count];
		return;
	}
	assert(0 && "a forward's primary is counted");
}

static struct compute_fwd *fwd_find(struct cache_compute *cc, uint64_t hash, const uint8_t *to,
                                    const uint8_t *req, size_t len)
{
	for (struct compute_fwd *f = cc->fwd_buckets[hash % COMPUTE_BUCKETS]; f; f = f->hnext)
		if (f->hash == hash && f->req_len == len && memcmp(f->to, to, ID_BYTES) == 0 &&
		    memcmp(f->req, req, len) == 0)
			return f;
	return NULL;
}

static void fwd_link(struct cache_compute *cc, struct compute_fwd *f)
{
	struct compute_fwd **b = &cc->fwd_buckets[f->hash % COMPUTE_BUCKETS];
	f->hnext = *b;
	*b = f;
	f->next = cc->fwds;
	if (cc->fwds)
		cc->fwds->prev = f;
	cc->fwds = f;
	cc->fwd_count++;
}

static void fwd_unlink(struct cache_compute *cc, struct compute_fwd *f)
{
	for (struct compute_fwd **p = &cc->fwd_buckets[f->hash % COMPUTE_BUCKETS]; *p;
	     p = &(*p)->hnext) {
		if (*p == f) {
			*p = f->hnext;
			break;
		}
	}
	if (f->prev)
		f->prev->next = f->next;
	else
		cc->fwds = f->next;
	if (f->next)
		f->next->prev = f->prev;
	f->hnext = f->next = f->prev = NULL;
	assert(cc->fwd_count > 0);
	cc->fwd_count--;
	peer_release(cc, f->to);
}

/* A copy of resp that owns what it points to (free_unpacked), or NULL. */
static Chorus__CacheResp *resp_copy(const Chorus__CacheResp *resp)
{
	size_t len = chorus__cache_resp__get_packed_size(resp);
	uint8_t *buf = malloc(len ? len : 1);
	if (!buf)
		return NULL;
	chorus__cache_resp__pack(resp, buf);
	Chorus__CacheResp *copy = chorus__cache_resp__unpack(NULL, len, buf);
	free(buf);
	return copy;
}

/* The forward's answer: every caller of it gets it. The forward leaves
 * the table first (a caller answered below may ask again: a new forward). */
static void fwd_done(void *arg, int code, const Chorus__CacheResp *resp, const char *err)
{
	struct compute_fwd *f = arg;
	struct cache_compute *cc = f->cc;
	fwd_unlink(cc, f);
	/* the reply is the transport's: the answer is copied once, out of it,
	 * and each caller gets a CacheResp of its own over that copy */
	Chorus__CacheResp *copy = NULL;
	if (code == 0 && !(copy = resp_copy(resp))) {
		code = CH_ERR_NOMEM;
		err = "out of memory";
	}
	if (code != 0 && !err)
		err = ch_strerror(code);
	log_debug("cache", "get-or-compute: a forward answered %s for %u caller(s)",
	          code == 0 ? "a value" : err, f->waiters.count);
	struct compute_waiter *w = list_take(cc, &f->waiters);
	while (w) {
		struct compute_waiter *n = w->next;
		if (code == 0) {
			Chorus__CacheResp mine = *copy;
			waiter_answer(cc, w, 0, &mine, NULL);
		} else {
			waiter_answer(cc, w, code, NULL, err);
		}
		w = n;
	}
	if (copy)
		chorus__cache_resp__free_unpacked(copy, NULL);
	free(f->req);
	free(f);
}

void cache_compute_forward(struct cache_svc *s, struct cache *c, const uint8_t *to,
                           const Chorus__CacheReq *req, cache_reply_fn cb, void *arg)
{
	struct cache_compute *cc = s->compute;
	/* what the callers of one forward share: the request as a client
	 * sends it, the cache under its own name */
	Chorus__CacheReq id = *req;
	id.cache = (char *)c->cfg->name;
	id.forwarded = 0;
	id.epoch = 0;
	id.wait_ms = 0;
	size_t len = chorus__cache_req__get_packed_size(&id);
	uint8_t *bytes = malloc(len ? len : 1);
	struct compute_waiter *w = bytes ? waiter_new(cc, WAITER_FORWARD, cb, arg) : NULL;
	if (!w) {
		free(bytes);
		answer(cb, arg, CH_ERR_NOMEM, "out of memory");
		return;
	}
	chorus__cache_req__pack(&id, bytes);
	uint64_t hash = bytes_hash(cc, bytes, len);
	struct compute_fwd *f = fwd_find(cc, hash, to, bytes, len);
	if (f) {
		free(bytes);
		if (f->waiters.count >= s->cfg->cache_compute_waiters_max) {
			waiter_fail(cc, w, CH_ERR_FULL,
			            "%u callers wait on this node for the same get-or-compute already "
			            "(the most [cache] compute_waiters_max allows): retry later",
			            f->waiters.count);
			return;
		}
		list_push(&f->waiters, w);
		cc->joined_fwd++;
		return;
	}
	uint32_t *n = peer_count(cc, to, 0);
	if (n && *n >= CACHE_COMPUTE_FORWARDS_PEER_MAX) {
		free(bytes);
		cc->refused_fwd++;
		waiter_fail(cc, w, CH_ERR_FULL,
		            "%u get-or-compute requests wait on the key's primary from this node "
		            "already (the most one node sends one primary at once, so that they "
		            "leave the link between them to other requests): retry later",
		            *n);
		return;
	}
	f = calloc(1, sizeof(*f));
	n = f ? peer_count(cc, to, 1) : NULL;
	if (!n) {
		free(f);
		free(bytes);
		waiter_fail(cc, w, CH_ERR_NOMEM, "out of memory");
		return;
	}
	f->cc = cc;
	f->hash = hash;
	memcpy(f->to, to, ID_BYTES);
	f->req = bytes;
	f->req_len = len;
	(*n)++;
	fwd_link(cc, f);
	list_push(&f->waiters, w);
	/* the wait this node gives the forward goes with it: the primary ends
	 * the compute within it */
	Chorus__CacheReq out = id;
	out.wait_ms = cache_forward_timeout_ms(s->cfg, &id);
	/* f may be freed inside: fwd_done runs at once when it cannot be sent */
	cache_forward(s, to, &out, fwd_done, f);
}

/* ---- the hooks ---- */

int cache_compute_check(struct cache_svc *s, const Chorus__CacheReq *req, cache_reply_fn cb,
                        void *arg)
{
	if (!req->compute || !req->compute->handler || !req->compute->handler[0]) {
		answer(cb, arg, CH_ERR_INVALID, "get-or-compute needs a handler to compute the value");
		return 1;
	}
	if (req->compute->payload.len > s->cfg->cache_value_bytes_max) {
		answer(cb, arg, CH_ERR_TOO_LARGE,
		       "a compute's payload of at most %zu bytes (value_bytes_max; %zu given)",
		       s->cfg->cache_value_bytes_max, req->compute->payload.len);
		return 1;
	}
	if (req->ttl_ms < 0) {
		answer(cb, arg, CH_ERR_INVALID, "a ttl of 0 (the cache's default) or more is needed");
		return 1;
	}
	return 0;
}

void cache_compute_primary(struct cache_svc *s, struct cache *c, const Chorus__CacheReq *req,
                           cache_reply_fn cb, void *arg)
{
	struct cache_compute *cc = s->compute;
	uint32_t cache = (uint32_t)(c - s->caches);
	uint64_t now = now_mono(cc);
	struct compute_waiter *w = waiter_new(cc, WAITER_READING, cb, arg);
	if (!w) {
		answer(cb, arg, CH_ERR_NOMEM, "out of memory");
		return;
	}
	/* a forwarded caller is given up when its forwarder gives up on it */
	if (req->forwarded && req->wait_ms)
		w->until_ms = now + req->wait_ms;
	struct compute *k = compute_find(cc, cache, req->key.data, req->key.len);
	if (k) {
		compute_join(k, w);
		return;
	}
	struct compute_call *call = calloc(1, sizeof(*call));
	if (!call) {
		waiter_fail(cc, w, CH_ERR_NOMEM, "out of memory");
		return;
	}
	call->cc = cc;
	call->cache = cache;
	call->w = w;
	call->arrived_ms = now;
	call->req_len = chorus__cache_req__get_packed_size(req);
	call->req = malloc(call->req_len ? call->req_len : 1);
	if (!call->req) {
		free(call);
		waiter_fail(cc, w, CH_ERR_NOMEM, "out of memory");
		return;
	}
	chorus__cache_req__pack(req, call->req);
	Chorus__CacheReq get = CHORUS__CACHE_REQ__INIT;
	get.op = CHORUS__CACHE_OP__CACHE_GET;
	get.cache = (char *)c->cfg->name;
	get.key = req->key;
	get.consistency = req->consistency;
	char err[256] = "";
	/* call may be freed inside: read_done answers at once when it can */
	int rc = s->port.submit(s->port.ctx, &get, read_done, call, err, sizeof(err));
	if (rc != 0)
		read_done(call, rc, NULL, err);
}

int cache_compute_cancel(struct cache_svc *s, void *arg)
{
	struct cache_compute *cc = s->compute;
	uint64_t id = arg_id(arg);
	struct compute_waiter *w = cc && id ? idmap_get(&cc->by_arg, id) : NULL;
	if (!w)
		return 0;
	waiter_unmap(cc, w);
	cc->cancelled++;
	if (w->state == WAITER_READING) {
		w->cancelled = 1; /* freed when its read ends (read_done) */
		return 1;
	}
	/* a compute or a forward goes on for its other callers, or none */
	list_remove(w->list, w);
	free(w);
	return 1;
}

void cache_compute_tick(struct cache_svc *s, uint64_t now_mono_ms)
{
	struct cache_compute *cc = s->compute;
	if (!cc)
		return;
	/* taken off their computes first, answered after the walk: an answer's
	 * callback may end or start computes */
	struct waiter_list gone = {0};
	for (struct compute *k = cc->all; k; k = k->next) {
		if (!k->until_min_ms || k->until_min_ms > now_mono_ms)
			continue;
		k->until_min_ms = 0;
		for (struct compute_waiter *w = k->waiters.head, *n; w; w = n) {
			n = w->next;
			if (w->until_ms && w->until_ms <= now_mono_ms) {
				list_remove(&k->waiters, w);
				list_push(&gone, w);
			} else if (w->until_ms && (!k->until_min_ms || w->until_ms < k->until_min_ms)) {
				k->until_min_ms = w->until_ms;
			}
		}
	}
	if (gone.count)
		log_debug("cache", "get-or-compute: %u forwarded caller(s) no longer waited for",
		          gone.count);
	cc->expired += gone.count;
	struct compute_waiter *w = list_take(cc, &gone);
	while (w) {
		struct compute_waiter *n = w->next;
		waiter_answer(cc, w, CH_ERR_TIMEOUT, NULL,
		              "the node that forwarded this get-or-compute stopped waiting for it (the "
		              "compute goes on)");
		w = n;
	}
}

int cache_compute_start(struct cache_svc *s, char *err, size_t err_len)
{
	struct cache_compute *cc = calloc(1, sizeof(*cc));
	if (!cc) {
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	cc->s = s;
	cc->tasks = host_port_get(s->host, PORT_TASK_SUBMIT);
	if (cc->tasks && (!cc->tasks->watch || !cc->tasks->unwatch))
		cc->tasks = NULL;
	crypto_shorthash_keygen(cc->hash_key);
	idmap_init(&cc->by_arg);
	s->compute = cc;
	return 0;
}

void cache_compute_stop(struct cache_svc *s)
{
	struct cache_compute *cc = s->compute;
	if (!cc)
		return;
	while (cc->all) {
		struct compute *k = cc->all;
		if (k->watching && cc->tasks)
			cc->tasks->unwatch(cc->tasks->ctx, k->task_id, k);
		compute_end(k, CH_ERR_SHUTTING_DOWN, NULL, "the node is stopping");
	}
	/* a forward is an operation of the service: answered before this */
	assert(!cc->fwds && cc->fwd_count == 0 && cc->peer_count == 0);
	assert(cc->by_arg.count == 0); /* every caller answered, or gone */
	log_debug("cache", "get-or-compute: %" PRIu64 " caller(s) joined a forward in flight, %" PRIu64
	          " refused at the bound per primary, %" PRIu64 " went away, %" PRIu64
	          " given up after their forwarder", cc->joined_fwd, cc->refused_fwd, cc->cancelled,
	          cc->expired);
	idmap_free(&cc->by_arg);
	free(cc->peers);
	free(cc);
	s->compute = NULL;
}
