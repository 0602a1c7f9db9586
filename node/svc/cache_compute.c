/*
 * cache_compute.c - get-or-compute (cache_compute.h; docs/cache.md
 * "Get-or-compute"): ConCache's get_or_store, cluster-wide.
 *
 * A CACHE_GET_OR_COMPUTE reaches the key's primary as every keyed request
 * does (forwarded once, CH_ERR_MOVED on a stale map), with a longer
 * forward timeout (cache_forward_timeout_ms). There:
 *   1. a compute of (cache, key) already running here: the caller joins
 *      its waiters;
 *   2. else the key is read as a GET at the request's consistency (through
 *      the cache port, so quorum reads and read repair apply): a live value
 *      is the answer (computed = false);
 *   3. else, unless a compute started meanwhile (join it) or this node no
 *      longer leads the key (CH_ERR_MOVED), the spec is submitted as a task
 *      through the task_submit port, under an idempotency key of its own,
 *      and watched (ports.h) for at most cache_compute_wait_ms;
 *   4. the task succeeded: its output is written as a PUT with NX and GET
 *      (through the cache port again: a version, replication at the
 *      request's consistency, routed to the current primary if the map
 *      changed since). Written: every waiter gets it (computed = true).
 *      Not written because the key holds a value written meanwhile: that
 *      value is kept and every waiter gets it (computed = false), so all
 *      callers agree on one value even across a map change;
 *   5. the task failed, timed out, was cancelled or lost (or the wait ran
 *      out: it is cancelled): every waiter gets the error
 *      (CH_ERR_TASK_FAILED with the task's error, CH_ERR_TIMEOUT), nothing
 *      is stored, and the next caller starts a new compute.
 * A compute is in the table from its submit until its value is written
 * (or it failed): a caller arriving while the value is being written joins
 * and gets it.
 *
 * Bounds: [cache] compute_max computes per node, compute_waiters_max
 * callers per compute (CH_ERR_FULL beyond); the payload at most
 * value_bytes_max (checked where the request comes in).
 *
 * Lifetimes: a caller between steps 2 and 3 is a struct compute_call, the
 * argument of the internal GET (an operation of the service, answered at
 * stop like the others); a compute is a struct compute in the table and
 * the service's list, owned by it until its waiters are answered. Every
 * callback here may run inside the call that started it (the cache port
 * answers at once when it can), so nothing is touched after such a call.
 */
#include "svc/cache_compute.h"

#include <assert.h>

#include "svc/cache_internal.h"

#define COMPUTE_BUCKETS 1024              /* the table of computes (chained) */
#define COMPUTE_LIMIT_MS_DEFAULT 60000u   /* a task without a time limit, its own or the node's */
#define COMPUTE_QUEUE_MS CH_CACHE_COMPUTE_QUEUE_MS /* a task's wait for a worker */
#define COMPUTE_HANDLER_TEXT 64           /* of a handler's name in a message */
#define COMPUTE_KEY_PREFIX "cache-compute:"
#define COMPUTE_IDEM_BYTES 160            /* its task's idempotency key (the port takes 256) */
#define FORWARD_TIMEOUTS 3u               /* get-or-compute: read, write, slack */

struct compute_waiter {
	struct compute_waiter *next;
	cache_reply_fn cb;
	void *arg;
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
	struct compute_waiter *waiters, *waiters_tail;
	uint32_t waiter_count;
};

struct cache_compute {
	struct cache_svc *s;
	struct task_submit_port *tasks;
	unsigned char hash_key[crypto_shorthash_KEYBYTES];
	struct compute *buckets[COMPUTE_BUCKETS];
	struct compute *all;
	uint32_t count;
};

/* A caller whose key is being read (step 2): its request, packed. */
struct compute_call {
	struct cache_compute *cc;
	uint32_t cache;
	uint8_t *req;
	size_t req_len;
	cache_reply_fn cb;
	void *arg;
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
	uint64_t wait = COMPUTE_QUEUE_MS;
	uint64_t backoff = o && o->backoff_ms ? o->backoff_ms : cfg->backoff_ms;
	for (uint64_t i = 0; i < attempts && wait < CH_CACHE_COMPUTE_WAIT_MS_MAX; i++) {
		wait += limit;
		if (i + 1 < attempts) {
			wait += backoff < cfg->backoff_max_ms ? backoff : cfg->backoff_max_ms;
			backoff *= 2;
		}
	}
	return wait < CH_CACHE_COMPUTE_WAIT_MS_MAX ? (uint32_t)wait : CH_CACHE_COMPUTE_WAIT_MS_MAX;
}

uint32_t cache_forward_timeout_ms(const struct config *cfg, const Chorus__CacheReq *req)
{
	uint64_t t = 2ull * cfg->cache_timeout_ms;
	if (req->op == CHORUS__CACHE_OP__CACHE_GET_OR_COMPUTE)
		t = cache_compute_wait_ms(cfg, req->compute ? req->compute->opts : NULL) +
		    (uint64_t)FORWARD_TIMEOUTS * cfg->cache_timeout_ms;
	return t < UINT32_MAX ? (uint32_t)t : UINT32_MAX;
}

/* ---- the table ---- */

static uint64_t key_hash(const struct cache_compute *cc, uint32_t cache, const void *key,
                         size_t len)
{
	unsigned char h[crypto_shorthash_BYTES];
	crypto_shorthash(h, key, len, cc->hash_key);
	uint64_t x;
	memcpy(&x, h, sizeof(x));
	return x ^ ((uint64_t)cache * 0x9e3779b97f4a7c15ull);
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
static void compute_join(struct compute *k, cache_reply_fn cb, void *arg)
{
	const struct config *cfg = k->cc->s->cfg;
	if (k->waiter_count >= cfg->cache_compute_waiters_max) {
		answer(cb, arg, CH_ERR_FULL,
		       "%u callers wait for this key's compute already (the most [cache] "
		       "compute_waiters_max allows): retry later",
		       k->waiter_count);
		return;
	}
	struct compute_waiter *w = calloc(1, sizeof(*w));
	if (!w) {
		answer(cb, arg, CH_ERR_NOMEM, "out of memory");
		return;
	}
	w->cb = cb;
	w->arg = arg;
	if (k->waiters_tail)
		k->waiters_tail->next = w;
	else
		k->waiters = w;
	k->waiters_tail = w;
	k->waiter_count++;
}

/* The end of a compute: out of the table first (a waiter's callback may
 * bring the same key back), then every waiter answered, in arrival order,
 * then freed. */
static void compute_end(struct compute *k, int code, const Chorus__CacheResp *resp,
                        const char *err)
{
	compute_unlink(k->cc, k);
	struct compute_waiter *w = k->waiters;
	k->waiters = k->waiters_tail = NULL;
	while (w) {
		struct compute_waiter *n = w->next;
		w->cb(w->arg, code, code == 0 ? resp : NULL, code == 0 ? NULL : err);
		free(w);
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
	          k->waiter_count);
	compute_end(k, 0, &out, NULL);
}

/* ---- the task's end ---- */

static void compute_done(void *arg, const Chorus__TaskResult *r)
{
	struct compute *k = arg;
	struct cache_compute *cc = k->cc;
	struct cache_svc *s = cc->s;
	k->watching = 0;
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
		int rc = s->port.submit(s->port.ctx, &put, store_done, k, err, sizeof(err));
		if (rc != 0)
			store_done(k, rc, NULL, err);
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
	log_debug("cache", "get-or-compute: %s (%u caller(s))", msg, k->waiter_count);
	compute_end(k, code, NULL, msg);
}

/* ---- step 3: a new compute ---- */

/* Submits req's compute and answers through the caller once it is over. */
static void compute_start(struct cache_compute *cc, uint32_t cache, const Chorus__CacheReq *req,
                          cache_reply_fn cb, void *arg)
{
	struct cache_svc *s = cc->s;
	if (!cc->tasks) {
		answer(cb, arg, CH_ERR_UNAVAILABLE, "this node runs no tasks: get-or-compute is off");
		return;
	}
	if (cc->count >= s->cfg->cache_compute_max) {
		answer(cb, arg, CH_ERR_FULL,
		       "%u computes are running on this node (the most [cache] compute_max allows): "
		       "retry later",
		       cc->count);
		return;
	}
	struct compute *k = calloc(1, sizeof(*k));
	if (!k || !(k->key = malloc(req->key.len))) {
		free(k);
		answer(cb, arg, CH_ERR_NOMEM, "out of memory");
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
		answer(cb, arg, rc, "the compute's task was refused: %s", err[0] ? err : ch_strerror(rc));
		return;
	}
	k->wait_ms = cache_compute_wait_ms(s->cfg, req->compute->opts);
	rc = cc->tasks->watch(cc->tasks->ctx, k->task_id, k->wait_ms, compute_done, k);
	if (rc != 0) {
		cc->tasks->cancel(cc->tasks->ctx, k->task_id);
		free(k->key);
		free(k);
		answer(cb, arg, rc, "cannot follow the compute's task: %s", ch_strerror(rc));
		return;
	}
	k->watching = 1;
	compute_link(cc, k);
	compute_join(k, cb, arg);
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
	cache_reply_fn cb = call->cb;
	void *cb_arg = call->arg;
	if (code != 0) {
		call_free(call);
		cb(cb_arg, code, NULL, err ? err : ch_strerror(code));
		return;
	}
	if (resp->found) {
		Chorus__CacheResp hit = *resp;
		hit.computed = 0;
		call_free(call);
		cb(cb_arg, 0, &hit, NULL);
		return;
	}
	Chorus__CacheReq *req = chorus__cache_req__unpack(NULL, call->req_len, call->req);
	uint32_t cache = call->cache;
	call_free(call);
	if (!req) {
		answer(cb, cb_arg, CH_ERR_NOMEM, "out of memory");
		return;
	}
	struct compute *k = compute_find(cc, cache, req->key.data, req->key.len);
	if (k) {
		compute_join(k, cb, cb_arg); /* started while this caller read */
	} else if (!leads(cc->s, req->key.data, req->key.len)) {
		cc->s->moved++;
		answer(cb, cb_arg, CH_ERR_MOVED,
		       "the key's partition moved while it was read: retry");
	} else {
		compute_start(cc, cache, req, cb, cb_arg);
	}
	chorus__cache_req__free_unpacked(req, NULL);
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
	struct compute *k = compute_find(cc, cache, req->key.data, req->key.len);
	if (k) {
		compute_join(k, cb, arg);
		return;
	}
	struct compute_call *call = calloc(1, sizeof(*call));
	if (!call) {
		answer(cb, arg, CH_ERR_NOMEM, "out of memory");
		return;
	}
	call->cc = cc;
	call->cache = cache;
	call->cb = cb;
	call->arg = arg;
	call->req_len = chorus__cache_req__get_packed_size(req);
	call->req = malloc(call->req_len ? call->req_len : 1);
	if (!call->req) {
		free(call);
		answer(cb, arg, CH_ERR_NOMEM, "out of memory");
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
	free(cc);
	s->compute = NULL;
}
