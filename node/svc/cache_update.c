/*
 * cache_update.c - isolated updates (CACHE_UPDATE): a per-key lock at the
 * partition's primary, so that read-compute-write cycles on one key run one
 * after another, as an Agent per key or ConCache's `isolated` do.
 *
 * A client (ch_cache_update) sends three requests, each routed to the key's
 * primary like any other:
 *   begin   waits in the key's FIFO for the lock (at most the cache
 *           timeout, then CH_ERR_FULL: retry), and answers the value held
 *           then with a random token; the lock is leased for lease_ms;
 *   commit  with the token, a value (or a delete): applied through the
 *           primary's ordinary write path (versioned, replicated at the
 *           request's consistency), the lock passed to the next in line;
 *   abort   with the token: the lock passed on, nothing written.
 * A commit is applied only while its token holds the lock and the key still
 * has the version begin answered. A plain write (PUT, DEL, INCR) does not
 * wait for the lock, but an isolated update it raced with is refused
 * (applied = 0) rather than overwriting it; so is one whose lease ran out
 * or whose primary changed (the new primary knows no lock). The client
 * then begins again. The client may choose the token (begin's `lock`), so
 * that it can abort even when begin's answer never reached it: an abort
 * with a waiter's token takes that waiter out of the line. No update is lost either way; the compute step runs
 * again only after such a refusal.
 *
 * Locks live in memory at the primary: a lease runs out at most lease_ms
 * (+ one check period, MAP_CHECK_MS) after begin; a lock on a partition
 * this node no longer leads is dropped and its waiters answered MOVED.
 */
#include "svc/cache_internal.h"

#define LOCK_BUCKETS 1024u
#define LOCKS_MAX 65536u
#define LOCK_WAITERS_MAX 1024u   /* per key */
#define LEASE_DEFAULT_MS 5000u
#define LEASE_MAX_MS 60000u

enum { UPDATE_BEGIN = 1, UPDATE_COMMIT = 2, UPDATE_COMMIT_DELETE = 3, UPDATE_ABORT = 4 };

struct lock_waiter {
	struct lock_waiter *next;
	cache_reply_fn cb;
	void *arg;
	uint64_t token;              /* the caller's, or 0: one is drawn at grant */
	uint32_t lease_ms;
	uint64_t until_ms;           /* monotonic: answered "busy" then */
};

struct key_lock {
	struct key_lock *next;       /* the bucket's chain */
	uint32_t cache;              /* index into s->caches */
	uint16_t partition;
	uint64_t token;
	uint64_t expires_ms;         /* monotonic */
	int had;                     /* the key was live when the lock was granted */
	struct cstore_version v;     /* its version then */
	struct lock_waiter *wait, *wait_tail;
	uint32_t n_wait;
	size_t key_len;
	uint8_t key[];
};

struct cache_locks {
	struct key_lock *bucket[LOCK_BUCKETS];
	uint32_t n;
};

static uint32_t lock_hash(uint32_t cache, const void *key, size_t len)
{
	static const unsigned char k[crypto_shorthash_KEYBYTES] = {7};
	unsigned char d[crypto_shorthash_BYTES];
	crypto_shorthash(d, key, len, k);
	uint32_t h;
	memcpy(&h, d, sizeof(h));
	return (h ^ (cache * 0x9e3779b9u)) % LOCK_BUCKETS;
}

static struct key_lock **lock_slot(struct cache_svc *s, uint32_t cache, const void *key,
                                   size_t len)
{
	struct key_lock **pp = &s->locks->bucket[lock_hash(cache, key, len)];
	while (*pp && !((*pp)->cache == cache && (*pp)->key_len == len &&
	                memcmp((*pp)->key, key, len) == 0))
		pp = &(*pp)->next;
	return pp;
}

static void answer_code(cache_reply_fn cb, void *arg, int code, const char *msg)
{
	cb(arg, code, NULL, msg);
}

/* Takes *wp (prev before it, NULL at the head) out of lk's line and
 * answers it code/msg. */
static void waiter_drop(struct key_lock *lk, struct lock_waiter **wp, struct lock_waiter *prev,
                        int code, const char *msg)
{
	struct lock_waiter *w = *wp;
	*wp = w->next;
	if (lk->wait_tail == w)
		lk->wait_tail = prev;
	lk->n_wait--;
	answer_code(w->cb, w->arg, code, msg);
	free(w);
}

/* Gives the lock to a caller: a fresh token, the value held now. */
static void grant(struct cache_svc *s, struct key_lock *lk, cache_reply_fn cb, void *arg,
                  uint64_t token, uint32_t lease_ms)
{
	struct cache *c = &s->caches[lk->cache];
	lk->token = token;
	while (lk->token == 0)
		randombytes_buf(&lk->token, sizeof(lk->token));
	lk->expires_ms = host_now(s->host)->mono_ms + lease_ms;
	struct cstore_item it;
	lk->had = cstore_peek(c->st, lk->key, lk->key_len, cache_now_wall(s), &it) == 0 &&
	          !it.tombstone;
	if (lk->had)
		lk->v = it.version;
	Chorus__CacheResp resp = CHORUS__CACHE_RESP__INIT;
	Chorus__CacheVersion vpb;
	uint8_t node[ID_BYTES];
	resp.epoch = s->map.epoch;
	cache_resp_from_store(s, c, lk->key, lk->key_len, &resp, &vpb, node, 1);
	resp.lock = lk->token;
	resp.applied = 1;
	s->locks_granted++;
	cb(arg, 0, &resp, NULL);
}

static void lock_unlink_free(struct cache_svc *s, struct key_lock *lk)
{
	struct key_lock **pp = lock_slot(s, lk->cache, lk->key, lk->key_len);
	if (*pp == lk) {
		*pp = lk->next;
		s->locks->n--;
	}
	while (lk->wait) {
		struct lock_waiter *w = lk->wait;
		lk->wait = w->next;
		free(w);
	}
	free(lk);
}

/* The holder is done (or gone): the next waiter still waiting gets the
 * lock; none left, the lock is freed. */
static void release(struct cache_svc *s, struct key_lock *lk)
{
	lk->token = 0;
	uint64_t now = host_now(s->host)->mono_ms;
	while (lk->wait) {
		struct lock_waiter *w = lk->wait;
		lk->wait = w->next;
		if (!lk->wait)
			lk->wait_tail = NULL;
		lk->n_wait--;
		if (now >= w->until_ms) {
			answer_code(w->cb, w->arg, CH_ERR_FULL,
			            "the key is held by another isolated update: retry");
			free(w);
			continue;
		}
		grant(s, lk, w->cb, w->arg, w->token, w->lease_ms);
		free(w);
		return;
	}
	lock_unlink_free(s, lk);
}

static void begin(struct cache_svc *s, struct cache *c, const Chorus__CacheReq *req, uint16_t p,
                  cache_reply_fn cb, void *arg)
{
	uint32_t ci = (uint32_t)(c - s->caches);
	uint32_t lease = req->lease_ms ? req->lease_ms : LEASE_DEFAULT_MS;
	if (lease > LEASE_MAX_MS) {
		cache_answer_error(cb, arg, CH_ERR_INVALID, "a lease of at most %u ms (%u given)", LEASE_MAX_MS,
		             req->lease_ms);
		return;
	}
	struct key_lock **pp = lock_slot(s, ci, req->key.data, req->key.len);
	struct key_lock *lk = *pp;
	if (!lk) {
		if (s->locks->n >= LOCKS_MAX) {
			cache_answer_error(cb, arg, CH_ERR_FULL, "too many keys locked by isolated updates (%u)",
			             LOCKS_MAX);
			return;
		}
		lk = calloc(1, sizeof(*lk) + req->key.len);
		if (!lk) {
			cache_answer_error(cb, arg, CH_ERR_NOMEM, "out of memory");
			return;
		}
		lk->cache = ci;
		lk->partition = p;
		lk->key_len = req->key.len;
		memcpy(lk->key, req->key.data, req->key.len);
		*pp = lk;
		s->locks->n++;
		grant(s, lk, cb, arg, req->lock, lease);
		return;
	}
	if (lk->n_wait >= LOCK_WAITERS_MAX) {
		cache_answer_error(cb, arg, CH_ERR_FULL,
		             "%u isolated updates already wait for this key: retry later", lk->n_wait);
		return;
	}
	struct lock_waiter *w = calloc(1, sizeof(*w));
	if (!w) {
		cache_answer_error(cb, arg, CH_ERR_NOMEM, "out of memory");
		return;
	}
	w->cb = cb;
	w->arg = arg;
	w->token = req->lock;
	w->lease_ms = lease;
	w->until_ms = host_now(s->host)->mono_ms + s->cfg->cache_timeout_ms;
	if (lk->wait_tail)
		lk->wait_tail->next = w;
	else
		lk->wait = w;
	lk->wait_tail = w;
	lk->n_wait++;
	s->locks_waited++;
}

static void refused(cache_reply_fn cb, void *arg, struct cache_svc *s)
{
	Chorus__CacheResp resp = CHORUS__CACHE_RESP__INIT;
	resp.epoch = s->map.epoch;
	resp.applied = 0;
	s->locks_refused++;
	cb(arg, 0, &resp, NULL);
}

void cache_update(struct cache_svc *s, struct cache *c, const Chorus__CacheReq *req, uint16_t p,
                  int consistency, cache_reply_fn cb, void *arg)
{
	if (req->update == UPDATE_BEGIN) {
		begin(s, c, req, p, cb, arg);
		return;
	}
	if (req->update != UPDATE_COMMIT && req->update != UPDATE_COMMIT_DELETE &&
	    req->update != UPDATE_ABORT) {
		cache_answer_error(cb, arg, CH_ERR_INVALID,
		             "update: a step of 1 (begin), 2 (commit), 3 (commit a delete) or 4 (abort) "
		             "is needed (%u given)",
		             req->update);
		return;
	}
	uint32_t ci = (uint32_t)(c - s->caches);
	struct key_lock *lk = *lock_slot(s, ci, req->key.data, req->key.len);
	if (lk && req->update == UPDATE_ABORT && req->lock != 0 && req->lock != lk->token) {
		/* the caller gave up while waiting (its begin's answer lost or
		 * late): it leaves the line, so the lock never goes to nobody */
		struct lock_waiter **wp = &lk->wait, *prev = NULL;
		while (*wp && (*wp)->token != req->lock) {
			prev = *wp;
			wp = &(*wp)->next;
		}
		if (*wp) {
			waiter_drop(lk, wp, prev, CH_ERR_FULL, "the isolated update was aborted");
			Chorus__CacheResp resp = CHORUS__CACHE_RESP__INIT;
			resp.epoch = s->map.epoch;
			resp.applied = 1;
			cb(arg, 0, &resp, NULL);
			return;
		}
	}
	if (!lk || lk->token == 0 || req->lock != lk->token) {
		/* never held, its lease ran out, or another primary granted it */
		refused(cb, arg, s);
		return;
	}
	if (req->update != UPDATE_ABORT && req->value.len > s->cfg->cache_value_bytes_max) {
		/* refused here, not before, so that the lock is let go */
		release(s, lk);
		cache_answer_error(cb, arg, CH_ERR_TOO_LARGE, "a value of at most %zu bytes (%zu given)",
		             s->cfg->cache_value_bytes_max, req->value.len);
		return;
	}
	if (req->update == UPDATE_ABORT) {
		Chorus__CacheResp resp = CHORUS__CACHE_RESP__INIT;
		resp.epoch = s->map.epoch;
		resp.applied = 1;
		release(s, lk);
		cb(arg, 0, &resp, NULL);
		return;
	}
	/* the key must be as the lock found it: a plain write since then wins */
	struct cstore_item it;
	int has = cstore_peek(c->st, req->key.data, req->key.len, cache_now_wall(s), &it) == 0 &&
	          !it.tombstone;
	int same = has == lk->had &&
	           (!has || (it.version.hlc == lk->v.hlc &&
	                     memcmp(it.version.node, lk->v.node, sizeof(it.version.node)) == 0));
	if (!same) {
		release(s, lk);
		refused(cb, arg, s);
		return;
	}
	Chorus__CacheReq w = *req;
	w.op = req->update == UPDATE_COMMIT ? CHORUS__CACHE_OP__CACHE_PUT : CHORUS__CACHE_OP__CACHE_DEL;
	w.flags = 0;
	w.if_version = NULL;
	w.update = 0;
	w.lock = 0;
	if (req->update == UPDATE_COMMIT_DELETE && !has) {
		/* deleting what is absent: nothing to write */
		Chorus__CacheResp resp = CHORUS__CACHE_RESP__INIT;
		resp.epoch = s->map.epoch;
		resp.applied = 1;
		release(s, lk);
		cb(arg, 0, &resp, NULL);
		return;
	}
	s->locks_committed++;
	/* applied here before it returns; answered once replicas acknowledge.
	 * The next in line then reads the committed value. */
	cache_primary_write(s, c, &w, p, consistency, cb, arg);
	/* cache_primary_write answers through cb, which may end in a new begin
	 * for this key: look the lock up again rather than trust lk */
	lk = *lock_slot(s, ci, req->key.data, req->key.len);
	if (lk && lk->token == req->lock)
		release(s, lk);
}

void cache_update_tick(struct cache_svc *s)
{
	if (!s->locks || s->locks->n == 0)
		return;
	uint64_t now = host_now(s->host)->mono_ms;
	for (uint32_t b = 0; b < LOCK_BUCKETS; b++) {
		struct key_lock *lk = s->locks->bucket[b];
		while (lk) {
			struct key_lock *next = lk->next;
			const uint8_t *primary = cplace_owner_id(&s->map, lk->partition, 0);
			if (memcmp(primary, s->self, ID_BYTES) != 0) {
				/* another node leads the partition now: its clients retry there */
				while (lk->wait) {
					struct lock_waiter *w = lk->wait;
					lk->wait = w->next;
					answer_code(w->cb, w->arg, CH_ERR_MOVED,
					            "the key's partition moved while waiting for its lock: retry");
					free(w);
				}
				lk->wait_tail = NULL;
				lk->n_wait = 0;
				lock_unlink_free(s, lk);
				lk = next;
				continue;
			}
			/* waiters past their wait are answered "busy", in place */
			struct lock_waiter **wp = &lk->wait, *prev = NULL;
			while (*wp) {
				if (now >= (*wp)->until_ms) {
					waiter_drop(lk, wp, prev, CH_ERR_FULL,
					            "the key is held by another isolated update: retry");
				} else {
					prev = *wp;
					wp = &(*wp)->next;
				}
			}
			if (lk->token && now >= lk->expires_ms) {
				s->locks_expired++;
				log_limited(LOG_WARN, "cache", "lease", 10000,
				            "an isolated update's lease ran out before its commit; the "
				            "key's next waiter gets the lock");
				release(s, lk);
			}
			lk = next;
		}
	}
}

int cache_update_init(struct cache_svc *s)
{
	s->locks = calloc(1, sizeof(*s->locks));
	return s->locks ? 0 : CH_ERR_NOMEM;
}

void cache_update_clear(struct cache_svc *s)
{
	if (!s->locks)
		return;
	for (uint32_t b = 0; b < LOCK_BUCKETS; b++) {
		while (s->locks->bucket[b]) {
			struct key_lock *lk = s->locks->bucket[b];
			s->locks->bucket[b] = lk->next;
			while (lk->wait) {
				struct lock_waiter *w = lk->wait;
				lk->wait = w->next;
				answer_code(w->cb, w->arg, CH_ERR_SHUTTING_DOWN, "the node is stopping");
				free(w);
			}
			free(lk);
		}
	}
	free(s->locks);
	s->locks = NULL;
}

uint32_t cache_update_locks(const struct cache_svc *s)
{
	return s->locks ? s->locks->n : 0;
}
