/*
 * cache_svc.c - the cache service (cache_svc.h; docs/cache.md).
 *
 * A keyed request, from a client, a peer or the RESP front door, goes to
 * the key's partition's primary under this node's map (forwarded once; a
 * node that receives a forwarded request for a partition it does not lead
 * answers CH_ERR_MOVED and the client retries). The primary:
 *   - writes (PUT, DEL, EXPIRE, PERSIST, INCR, GETDEL): stamps a version
 *     from its hybrid logical clock, applies the write to its store, then
 *     sends the resulting entry to every replica; it answers once the
 *     consistency asked is met (ONE: itself; QUORUM: a majority of the
 *     owners; ALL: every owner), CH_ERR_TIMEOUT when the replicas do not
 *     answer in time (the write stays where it was applied, as in Dynamo);
 *   - reads (GET, EXISTS, TTL) at ONE answer from its store; at QUORUM/ALL
 *     it also reads from replicas, keeps the newest version (applying it
 *     to itself when it was behind) and repairs the replicas that were
 *     behind (read repair), then answers from its store.
 * Replicas apply what they are sent when its version is newer (last writer
 * wins, cstore_apply), so replays, reordering and repairs are harmless.
 *
 * The map is rebuilt from the alive members (SWIM) whenever they change;
 * its epoch is a digest of the member set, so two nodes with the same view
 * have the same epoch.
 *
 * Cluster-wide operations: DBSIZE and FLUSH go to every member (each counts
 * the partitions it leads; each drops its entries older than the FLUSH's
 * HLC stamp, which it keeps: cache_sync.c, "FLUSH marks"); SCAN walks the members
 * in id order, each scanning its store for the keys of partitions it leads,
 * under a cursor [member ordinal 12 bits | check 20 bits | position 32].
 *
 * The replica side, anti-entropy (how partitions move on joins and leaves)
 * and hinted handoff are in cache_sync.c, get-or-compute in cache_compute.c.
 * Not here yet (docs/cache.md): isolated updates, persistence.
 *
 * Lifetimes: an operation waiting for peers is an `struct op` in the
 * service's list; it is freed once answered and every peer request it
 * made has come back (a late answer only counts), or at stop (the cluster
 * service, stopped after this one, drops the answers it still holds
 * without calling back).
 */
#include "svc/cache_svc.h"
#include "svc/cache_compute.h"
#include "svc/cache_internal.h"

#include <stddef.h>

#include "lib/prom.h"

uint64_t cache_now_wall(struct cache_svc *s)
{
	return host_now(s->host)->wall_ms;
}

/* ---- the map ---- */

static int id_cmp(const void *a, const void *b)
{
	return memcmp(a, b, ID_BYTES);
}

/* One event per map change that moves this node's partitions: how many it
 * gains and loses (not one event per partition). */
static void partitions_moved_event(struct cache_svc *s, const struct cplace_map *from,
                                   const struct cplace_map *to)
{
	if (from->partition_count != to->partition_count)
		return;
	int a = cplace_member_find(from, s->self), b = cplace_member_find(to, s->self);
	uint32_t gained = 0, lost = 0, owned = 0;
	for (uint16_t p = 0; p < to->partition_count; p++) {
		int had = a >= 0 && cplace_rank(from, p, (uint32_t)a) >= 0;
		int has = b >= 0 && cplace_rank(to, p, (uint32_t)b) >= 0;
		gained += has && !had;
		lost += had && !has;
		owned += has;
	}
	if (gained || lost)
		host_event(s->host, "partitions_moved", s->cfg->name,
		           "map %016" PRIx64 " (%u member(s)): gains %u, loses %u partition(s); owns %u of %u",
		           to->epoch, to->member_count, gained, lost, owned, to->partition_count);
}

/* Rebuilds the map when the alive members changed. */
static void map_refresh(struct cache_svc *s)
{
	static struct peer_info members[CPLACE_MEMBERS_MAX];
	static uint8_t ids[CPLACE_MEMBERS_MAX][ID_BYTES];
	uint32_t n = s->peers ? s->peers->members(s->peers->ctx, members, CPLACE_MEMBERS_MAX) : 0;
	uint32_t k = 0;
	int self_seen = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (!members[i].alive && !members[i].self)
			continue;
		memcpy(ids[k++], members[i].id, ID_BYTES);
		self_seen |= members[i].self;
	}
	if (!self_seen)
		memcpy(ids[k++], s->self, ID_BYTES);
	qsort(ids, k, ID_BYTES, id_cmp);
	unsigned char digest[8];
	static const unsigned char key[crypto_shorthash_KEYBYTES] = {0};
	crypto_shorthash(digest, (const unsigned char *)ids, (unsigned long long)k * ID_BYTES, key);
	uint64_t epoch;
	memcpy(&epoch, digest, 8);
	if (s->have_map && epoch == s->map.epoch)
		return;
	struct cplace_params params;
	cplace_params_default(&params);
	params.partition_count = (uint16_t)s->cfg->cache_partitions;
	params.owner_count = (uint8_t)s->cfg->cache_replicas;
	struct cplace_map fresh;
	int rc = cplace_map_build(&fresh, &params, epoch, (const uint8_t(*)[CPLACE_ID_BYTES])ids, k);
	if (rc != 0) {
		log_limited(LOG_ERROR, "cache", "map", 10000, "cannot build the partition map: %s",
		            err_name(rc));
		return;
	}
	if (s->have_map) {
		partitions_moved_event(s, &s->map, &fresh);
		cplace_map_free(&s->map);
	}
	s->map = fresh;
	s->have_map = 1;
	if (fresh.owner_count > s->owners_seen_max)
		s->owners_seen_max = fresh.owner_count;
	s->map_changed_ms = host_now(s->host)->mono_ms;
	/* owners changed: converge soon, and read from every owner meanwhile */
	s->settle_until_round = crepl_settle_until(s->ae.rounds, s->n_caches);
	uint64_t soon = host_now(s->host)->mono_ms + AE_AFTER_MAP_MS;
	if (s->ae.next_ms > soon)
		s->ae.next_ms = soon;
	log_info("cache", "partition map %016" PRIx64 ": %u member(s), %u partitions, %u copies", epoch,
	         k, fresh.partition_count, fresh.owner_count);
}

static int is_self(const struct cache_svc *s, const uint8_t *id)
{
	return memcmp(id, s->self, ID_BYTES) == 0;
}

/* ---- small helpers ---- */

struct cache *cache_find(struct cache_svc *s, const char *name)
{
	if (!name || !name[0])
		name = "default";
	for (uint32_t i = 0; i < s->n_caches; i++)
		if (strcmp(s->caches[i].cfg->name, name) == 0)
			return &s->caches[i];
	return NULL;
}

static int consistency_of(const struct cache *c, int asked)
{
	return asked >= CH_CACHE_ONE && asked <= CH_CACHE_ALL ? asked : c->cfg->consistency;
}

/* Answers needed from replicas (the primary counts for one). */
static uint32_t replicas_needed(const struct cplace_map *m, int consistency)
{
	return crepl_replicas_needed(m->owner_count, consistency);
}

void cache_version_to_pb(const struct cstore_version *v, Chorus__CacheVersion *pb, uint8_t *node)
{
	chorus__cache_version__init(pb);
	pb->hlc = v->hlc;
	memcpy(node, v->node, ID_BYTES);
	pb->node.data = node;
	pb->node.len = ID_BYTES;
}

int cache_version_from_pb(const Chorus__CacheVersion *pb, struct cstore_version *v)
{
	if (!pb || pb->node.len != ID_BYTES)
		return ERR_PROTOCOL;
	v->hlc = pb->hlc;
	memcpy(v->node, pb->node.data, ID_BYTES);
	return 0;
}

static struct cstore_version version_new(struct cache_svc *s)
{
	struct cstore_version v;
	v.hlc = hlc_now(&s->hlc, cache_now_wall(s));
	memcpy(v.node, s->self, ID_BYTES);
	return v;
}

void cache_answer_error(cache_reply_fn cb, void *arg, int code, const char *fmt, ...)
{
	char msg[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cb(arg, code, NULL, msg);
}

/* ---- operations in flight ---- */

static struct op *op_new(struct cache_svc *s, int kind, cache_reply_fn cb, void *arg)
{
	if (s->n_ops >= OPS_MAX)
		return NULL;
	struct op *o = calloc(1, sizeof(*o));
	if (!o)
		return NULL;
	o->s = s;
	o->kind = kind;
	o->cb = cb;
	o->arg = arg;
	chorus__cache_resp__init(&o->resp);
	o->next = s->ops;
	if (s->ops)
		s->ops->prev = o;
	s->ops = o;
	s->n_ops++;
	return o;
}

static void op_free(struct op *o)
{
	struct cache_svc *s = o->s;
	if (o->prev)
		o->prev->next = o->next;
	else
		s->ops = o->next;
	if (o->next)
		o->next->prev = o->prev;
	s->n_ops--;
	free(o->key);
	free(o->req_bytes);
	free(o->entry);
	free(o->resp_value);
	if (o->newest)
		chorus__cache_entry__free_unpacked(o->newest, NULL);
	free(o);
}

/* Frees o once it is answered and nothing of it is out. */
static void op_maybe_free(struct op *o)
{
	if (o->answered && o->outstanding == 0)
		op_free(o);
}

static void op_answer(struct op *o, int code, const Chorus__CacheResp *resp, const char *err)
{
	if (o->answered)
		return;
	o->answered = 1;
	o->cb(o->arg, code, resp, err);
}

static void op_answer_error(struct op *o, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void op_answer_error(struct op *o, int code, const char *fmt, ...)
{
	char msg[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	op_answer(o, code, NULL, msg);
}

/* What one gathered request (CacheBatch, CacheRepl) may hold: RB_BYTES_MAX,
 * or a quarter of the frame cap when that is smaller. One item alone may
 * pass it (a batch holds at least one). */
static size_t batch_bytes_max(const struct cache_svc *s)
{
	size_t quarter = s->cfg->frame_bytes_max / 4;
	return quarter < RB_BYTES_MAX ? quarter : RB_BYTES_MAX;
}

/* ---- peer requests that wait for room ----
 * A link holds a bounded number of requests in flight. A forward, replica
 * copy or replica read that finds its link full waits here, in order per
 * peer, and goes out as answers free room; after the cache timeout it
 * fails with CH_ERR_FULL through its own callback (a replica copy then
 * becomes a hint, as any failed copy does). */

static uint32_t *wq_peer_count(struct cache_svc *s, const uint8_t *to, int add)
{
	for (uint32_t i = 0; i < WQ_PEERS_MAX; i++)
		if (s->wq_peers[i].n && memcmp(s->wq_peers[i].id, to, ID_BYTES) == 0)
			return &s->wq_peers[i].n;
	if (!add)
		return NULL;
	for (uint32_t i = 0; i < WQ_PEERS_MAX; i++)
		if (!s->wq_peers[i].n) {
			memcpy(s->wq_peers[i].id, to, ID_BYTES);
			return &s->wq_peers[i].n;
		}
	return NULL;
}

static int wq_request(struct cache_svc *s, const uint8_t *to, int body, const uint8_t *bytes,
                      size_t len, uint32_t timeout_ms, peer_reply_fn cb, void *arg)
{
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = body;
	int rc;
	switch (body) {
	case CHORUS__ENVELOPE__BODY_CACHE:
		env.cache = chorus__cache_req__unpack(NULL, len, bytes);
		if (!env.cache)
			return CH_ERR_NOMEM;
		rc = s->peers->request(s->peers->ctx, to, &env, timeout_ms, cb, arg);
		chorus__cache_req__free_unpacked(env.cache, NULL);
		return rc;
	case CHORUS__ENVELOPE__BODY_CACHE_BATCH:
		env.cache_batch = chorus__cache_batch__unpack(NULL, len, bytes);
		if (!env.cache_batch)
			return CH_ERR_NOMEM;
		rc = s->peers->request(s->peers->ctx, to, &env, timeout_ms, cb, arg);
		chorus__cache_batch__free_unpacked(env.cache_batch, NULL);
		return rc;
	default:
		env.cache_repl = chorus__cache_repl__unpack(NULL, len, bytes);
		if (!env.cache_repl)
			return CH_ERR_NOMEM;
		rc = s->peers->request(s->peers->ctx, to, &env, timeout_ms, cb, arg);
		chorus__cache_repl__free_unpacked(env.cache_repl, NULL);
		return rc;
	}
}

/* env (a CacheReq, CacheBatch or CacheRepl) to `to` for o (NULL: a batch's own): sent now, or kept until its
 * link has room (behind any that wait for the same peer). 0 (one more of
 * o->outstanding; cb will be called), or a CH_ERR_* (cb never called). */
static int peer_send(struct cache_svc *s, struct op *o, const uint8_t *to,
                     const Chorus__Envelope *env, uint32_t timeout_ms, peer_reply_fn cb,
                     void *arg)
{
	uint32_t *waiting = wq_peer_count(s, to, 0);
	int rc = waiting ? CH_ERR_FULL
	                 : s->peers->request(s->peers->ctx, to, env, timeout_ms, cb, arg);
	if (rc == 0) {
		if (o)
			o->outstanding++;
		return 0;
	}
	if (rc != CH_ERR_FULL)
		return rc;
	waiting = wq_peer_count(s, to, 1);
	if (!waiting)
		return CH_ERR_FULL; /* more peers waiting than tracked: busy now */
	size_t len;
	switch (env->body_case) {
	case CHORUS__ENVELOPE__BODY_CACHE:
		len = chorus__cache_req__get_packed_size(env->cache);
		break;
	case CHORUS__ENVELOPE__BODY_CACHE_BATCH:
		len = chorus__cache_batch__get_packed_size(env->cache_batch);
		break;
	case CHORUS__ENVELOPE__BODY_CACHE_REPL:
		len = chorus__cache_repl__get_packed_size(env->cache_repl);
		break;
	default:
		return CH_ERR_INTERNAL;
	}
	struct wsend *w = malloc(sizeof(*w) + (len ? len : 1));
	if (!w)
		return CH_ERR_NOMEM;
	if (env->body_case == CHORUS__ENVELOPE__BODY_CACHE)
		chorus__cache_req__pack(env->cache, w->bytes);
	else if (env->body_case == CHORUS__ENVELOPE__BODY_CACHE_BATCH)
		chorus__cache_batch__pack(env->cache_batch, w->bytes);
	else
		chorus__cache_repl__pack(env->cache_repl, w->bytes);
	w->next = NULL;
	w->o = o;
	w->cb = cb;
	w->arg = arg;
	memcpy(w->to, to, ID_BYTES);
	w->body = env->body_case;
	w->timeout_ms = timeout_ms;
	w->until_ms = host_now(s->host)->mono_ms + s->cfg->cache_timeout_ms;
	w->len = len;
	if (s->wq_tail)
		s->wq_tail->next = w;
	else
		s->wq_head = w;
	s->wq_tail = w;
	(*waiting)++;
	s->wq_count++;
	s->fwd_waited++;
	if (o)
		o->outstanding++;
	return 0;
}

/* Sends what waits, in order per peer, while links have room; fails what
 * waited past the cache timeout. Callbacks run from here may send again. */
static void wq_kick(struct cache_svc *s)
{
	if (s->wq_busy) {
		s->wq_again = 1;
		return;
	}
	s->wq_busy = 1;
	do {
		s->wq_again = 0;
		uint8_t blocked[WQ_PEERS_MAX][ID_BYTES];
		uint32_t n_blocked = 0;
		uint64_t now = host_now(s->host)->mono_ms;
		struct wsend **pp = &s->wq_head, *prev = NULL;
		while (*pp) {
			struct wsend *w = *pp;
			int rc, skip = 0;
			if (now >= w->until_ms) {
				rc = CH_ERR_FULL;
			} else {
				for (uint32_t i = 0; i < n_blocked && !skip; i++)
					skip = memcmp(blocked[i], w->to, ID_BYTES) == 0;
				rc = skip ? CH_ERR_FULL
				          : wq_request(s, w->to, w->body, w->bytes, w->len, w->timeout_ms,
				                       w->cb, w->arg);
				if (rc == CH_ERR_FULL) {
					if (!skip && n_blocked < WQ_PEERS_MAX)
						memcpy(blocked[n_blocked++], w->to, ID_BYTES);
					prev = w;
					pp = &w->next;
					continue;
				}
			}
			*pp = w->next;
			if (s->wq_tail == w)
				s->wq_tail = prev;
			uint32_t *waiting = wq_peer_count(s, w->to, 0);
			if (waiting)
				(*waiting)--;
			s->wq_count--;
			if (rc != 0) {
				/* its callback takes back its part of o->outstanding */
				if (rc == CH_ERR_FULL)
					s->wq_expired++;
				w->cb(w->arg, rc, NULL,
				      rc == CH_ERR_FULL ? "the cache is busy: no room on the link to the "
				                          "peer within the cache timeout"
				                        : ch_strerror(rc));
			}
			free(w);
		}
	} while (s->wq_again);
	s->wq_busy = 0;
}

static void wq_clear(struct cache_svc *s)
{
	while (s->wq_head) {
		struct wsend *w = s->wq_head;
		s->wq_head = w->next;
		free(w);
	}
	s->wq_tail = NULL;
	s->wq_count = 0;
	memset(s->wq_peers, 0, sizeof(s->wq_peers));
}

/* ---- the primary ---- */

/* Sends m to a peer, no answer wanted (read repair). */
static void send_repl_oneway(struct cache_svc *s, const uint8_t *to, Chorus__CacheRepl *m)
{
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_CACHE_REPL;
	env.cache_repl = m;
	if (s->peers->request(s->peers->ctx, to, &env, s->cfg->cache_timeout_ms, NULL, NULL) == 0)
		s->repairs++;
}

/* A replica's answer (or failure) to one copy of a write. */
static void write_ack(struct op_slot *sl, int code, int ok)
{
	struct op *o = sl->o;
	o->outstanding--;
	sl->answered = 1;
	if (!ok) {
		o->failed++;
		if (code == CH_ERR_TIMEOUT)
			o->s->timeouts++;
		cache_hint_add(o->s, sl->id, (uint32_t)(o->cache - o->s->caches), o->entry, o->entry_len);
	}
	if (!o->answered) {
		if (ok && o->need > 0)
			o->need--;
		enum crepl_verdict verdict = crepl_decide(o->need, 0, o->outstanding);
		if (verdict == CREPL_DONE)
			op_answer(o, 0, &o->resp, NULL);
		else if (verdict == CREPL_FAIL)
			op_answer_error(o, code == CH_ERR_TIMEOUT ? CH_ERR_TIMEOUT : CH_ERR_UNAVAILABLE,
			                "the write is applied on the primary, but %u more replica "
			                "acknowledgement(s) were needed and %u replica(s) failed: %s",
			                o->need, o->failed, ch_strerror(code ? code : CH_ERR_PROTOCOL));
	}
	op_maybe_free(o);
}

static void batch_unlink(struct peer_batch **list, struct peer_batch *b)
{
	if (b->prev)
		b->prev->next = b->next;
	else
		*list = b->next;
	if (b->next)
		b->next->prev = b->prev;
	b->next = b->prev = NULL;
}

static void batch_push(struct peer_batch **list, struct peer_batch *b)
{
	b->prev = NULL;
	b->next = *list;
	if (*list)
		(*list)->prev = b;
	*list = b;
}

static void read_ack(struct op_slot *sl, int code, int ok, int found,
                     const Chorus__CacheEntry *entry);

/* A read of batch `from` the replica left out of its answer (the answer
 * would have been too big): into this iteration's read batch for the same
 * replica, its slot counted already. */
static void rd_requeue(struct cache_svc *s, const struct peer_batch *from, struct op_slot *sl)
{
	struct peer_batch *b = s->rb_pending;
	while (b && !(b->read && b->cache == from->cache && memcmp(b->to, from->to, ID_BYTES) == 0 &&
	              b->n < RB_ENTRIES_MAX))
		b = b->next;
	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b) {
			read_ack(sl, CH_ERR_NOMEM, 0, 0, NULL);
			return;
		}
		b->s = s;
		memcpy(b->to, from->to, ID_BYTES);
		b->cache = from->cache;
		b->read = 1;
		batch_push(&s->rb_pending, b);
	}
	b->slots[b->n++] = sl;
	b->bytes += sl->o->key_len;
}

static void rb_cb(void *arg, int code, const Chorus__Envelope *reply, const char *err)
{
	struct peer_batch *b = arg;
	struct cache_svc *s = b->s;
	(void)err;
	int ok = code == 0 && reply && reply->body_case == CHORUS__ENVELOPE__BODY_CACHE_REPL_RESP;
	batch_unlink(&s->rb_inflight, b);
	int c2 = code ? code : (ok ? 0 : CH_ERR_PROTOCOL);
	/* the replica's FLUSH mark before its answers are used: a read must
	 * not take an entry the cluster flushed for the newest */
	if (ok && reply->cache_repl_resp->flush_hlc)
		(void)cache_flush_adopt(s, &s->caches[b->cache], reply->cache_repl_resp->flush_hlc);
	if (b->read) {
		const Chorus__CacheReplResp *r = ok ? reply->cache_repl_resp : NULL;
		for (uint32_t i = 0; i < b->n; i++) {
			if (r && i < r->n_reads)
				read_ack(b->slots[i], 0, 1, r->reads[i]->found, r->reads[i]->entry);
			else if (r && r->n_reads > 0)
				rd_requeue(s, b, b->slots[i]); /* its answer was too big: ask again */
			else
				read_ack(b->slots[i], ok ? CH_ERR_PROTOCOL : c2, 0, 0, NULL);
		}
	} else {
		/* copies the replica named as not applied failed (each a hint) */
		uint8_t refused[RB_ENTRIES_MAX / 8] = {0};
		const Chorus__CacheReplResp *r = ok ? reply->cache_repl_resp : NULL;
		for (size_t k = 0; r && k < r->n_refused; k++)
			if (r->refused[k] < b->n)
				refused[r->refused[k] / 8] |= (uint8_t)(1u << (r->refused[k] % 8));
		for (uint32_t i = 0; i < b->n; i++) {
			int no = (refused[i / 8] >> (i % 8)) & 1;
			write_ack(b->slots[i], no ? CH_ERR_UNAVAILABLE : c2, ok && !no);
		}
	}
	free(b);
	if (s->wq_head)
		wq_kick(s); /* an answer freed room on a link */
}

/* Sends a batch of reads: one CacheRepl with their keys. */
static void rd_send(struct cache_svc *s, struct peer_batch *b)
{
	ProtobufCBinaryData *keys = calloc(b->n, sizeof(*keys));
	int rc = CH_ERR_NOMEM;
	if (keys) {
		for (uint32_t i = 0; i < b->n; i++) {
			keys[i].data = b->slots[i]->o->key;
			keys[i].len = b->slots[i]->o->key_len;
		}
		Chorus__CacheRepl m = CHORUS__CACHE_REPL__INIT;
		m.cache = (char *)s->caches[b->cache].cfg->name;
		m.epoch = s->map.epoch;
		m.read_keys = keys;
		m.n_read_keys = b->n;
		Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
		env.body_case = CHORUS__ENVELOPE__BODY_CACHE_REPL;
		env.cache_repl = &m;
		rc = peer_send(s, NULL, b->to, &env, s->cfg->cache_timeout_ms, rb_cb, b);
		free(keys);
	}
	if (rc == 0) {
		batch_push(&s->rb_inflight, b);
		s->rb_sent++;
		s->rb_entries += b->n;
		return;
	}
	for (uint32_t i = 0; i < b->n; i++)
		read_ack(b->slots[i], rc, 0, 0, NULL);
	free(b);
}

/* Sends one pending batch (one CacheRepl with its entries). */
static void rb_send(struct cache_svc *s, struct peer_batch *b)
{
	batch_unlink(&s->rb_pending, b);
	if (b->read) {
		rd_send(s, b);
		return;
	}
	Chorus__CacheEntry **ents = calloc(b->n, sizeof(*ents));
	uint32_t n = 0;
	for (uint32_t i = 0; ents && i < b->n; i++) {
		struct op *o = b->slots[i]->o;
		ents[n] = chorus__cache_entry__unpack(NULL, o->entry_len, o->entry);
		if (!ents[n])
			break;
		n++;
	}
	int rc = CH_ERR_NOMEM;
	if (ents && n == b->n) {
		Chorus__CacheRepl m = CHORUS__CACHE_REPL__INIT;
		m.cache = (char *)s->caches[b->cache].cfg->name;
		m.epoch = s->map.epoch;
		m.entries = ents;
		m.n_entries = n;
		Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
		env.body_case = CHORUS__ENVELOPE__BODY_CACHE_REPL;
		env.cache_repl = &m;
		rc = peer_send(s, NULL, b->to, &env, s->cfg->cache_timeout_ms, rb_cb, b);
	}
	for (uint32_t i = 0; i < n; i++)
		chorus__cache_entry__free_unpacked(ents[i], NULL);
	free(ents);
	if (rc == 0) {
		batch_push(&s->rb_inflight, b);
		s->rb_sent++;
		s->rb_entries += b->n;
		return;
	}
	for (uint32_t i = 0; i < b->n; i++)
		write_ack(b->slots[i], rc, 0);
	free(b);
}

/* Sends every pending batch (the iteration's tick, and a full batch). */
static void rb_flush(struct cache_svc *s)
{
	while (s->rb_pending)
		rb_send(s, s->rb_pending);
}

/* A copy of o's write (o->entry) for `to`: a slot of o, added to to's
 * batch for this iteration. 0, or a CH_ERR_* (nothing added). */
static int rb_add(struct op *o, const uint8_t *to, int read)
{
	struct cache_svc *s = o->s;
	if (o->n_slots == CPLACE_OWNERS_MAX || (read ? !o->key : !o->entry))
		return CH_ERR_NOMEM;
	size_t len = read ? o->key_len : o->entry_len;
	uint32_t ci = (uint32_t)(o->cache - s->caches);
	struct peer_batch *b = s->rb_pending;
	while (b && !(b->cache == ci && b->read == read && memcmp(b->to, to, ID_BYTES) == 0))
		b = b->next;
	if (b && (b->n == RB_ENTRIES_MAX || b->bytes + len > batch_bytes_max(s))) {
		rb_send(s, b);
		b = NULL;
	}
	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b)
			return CH_ERR_NOMEM;
		b->s = s;
		memcpy(b->to, to, ID_BYTES);
		b->cache = ci;
		b->read = read;
		batch_push(&s->rb_pending, b);
	}
	struct op_slot *sl = &o->slots[o->n_slots++];
	memset(sl, 0, sizeof(*sl));
	sl->o = o;
	memcpy(sl->id, to, ID_BYTES);
	b->slots[b->n++] = sl;
	b->bytes += len;
	o->asked++;
	o->outstanding++;
	return 0;
}

static void rb_clear(struct cache_svc *s)
{
	while (s->rb_pending) {
		struct peer_batch *b = s->rb_pending;
		s->rb_pending = b->next;
		free(b);
	}
	while (s->rb_inflight) {
		struct peer_batch *b = s->rb_inflight;
		s->rb_inflight = b->next;
		free(b);
	}
}

/* Sends the entry at key (as now held) to the partition's replicas; answers
 * resp once `need` of them acknowledged. resp's value (if any) must be
 * owned by o (resp_value). */
static void replicate(struct cache_svc *s, struct cache *c, uint16_t p, const void *key,
                      size_t key_len, int consistency, const Chorus__CacheResp *resp,
                      const uint8_t *value, size_t value_len, cache_reply_fn cb, void *arg)
{
	uint32_t need = replicas_needed(&s->map, consistency);
	uint32_t owners = s->map.owner_count;
	if (owners <= 1) {
		cb(arg, 0, resp, NULL);
		return;
	}
	struct op *o = op_new(s, OP_WRITE, cb, arg);
	if (!o) {
		cache_answer_error(cb, arg, CH_ERR_FULL, "too many cache operations in flight");
		return;
	}
	o->resp = *resp;
	if (value_len) {
		o->resp_value = malloc(value_len);
		if (!o->resp_value) {
			op_answer_error(o, CH_ERR_NOMEM, "out of memory");
			op_maybe_free(o);
			return;
		}
		memcpy(o->resp_value, value, value_len);
		o->resp.value.data = o->resp_value;
		o->resp.value.len = value_len;
	}
	o->resp.version = NULL; /* points into the caller's frame */
	o->need = need;
	struct cstore_item it;
	if (cstore_peek(c->st, key, key_len, cache_now_wall(s), &it) != 0) {
		/* expired at once (a ttl in the past): nothing to send */
		op_answer(o, 0, &o->resp, NULL);
		op_maybe_free(o);
		return;
	}
	Chorus__CacheEntry e;
	Chorus__CacheVersion vpb;
	uint8_t node[ID_BYTES];
	cache_entry_from_item(&it, &e, &vpb, node);
	o->cache = c;
	o->entry_len = chorus__cache_entry__get_packed_size(&e);
	o->entry = malloc(o->entry_len ? o->entry_len : 1);
	if (o->entry)
		chorus__cache_entry__pack(&e, o->entry);
	else
		o->entry_len = 0;
	for (uint8_t k = 1; k < owners; k++) {
		const uint8_t *to = cplace_owner_id(&s->map, p, k);
		if (rb_add(o, to, 0) != 0) {
			o->failed++;
			cache_hint_add(s, to, (uint32_t)(c - s->caches), o->entry, o->entry_len);
		}
	}
	s->replicated++;
	if (o->need == 0)
		op_answer(o, 0, &o->resp, NULL);
	else if (o->asked < o->need)
		op_answer_error(o, CH_ERR_UNAVAILABLE, "%u replica(s) needed, %u reachable", o->need,
		                o->asked);
	op_maybe_free(o);
}

/* Fills resp from the live entry at key (GET-like answers). */
void cache_resp_from_store(struct cache_svc *s, struct cache *c, const void *key, size_t len,
                           Chorus__CacheResp *resp, Chorus__CacheVersion *vpb, uint8_t *node,
                           int count_hit)
{
	struct cstore_item it;
	int rc = count_hit ? cstore_get(c->st, key, len, cache_now_wall(s), &it)
	                   : cstore_peek(c->st, key, len, cache_now_wall(s), &it);
	if (rc != 0 || it.tombstone) {
		resp->found = 0;
		resp->ttl_ms = -2;
		return;
	}
	resp->found = 1;
	resp->value.data = (uint8_t *)it.value;
	resp->value.len = it.value_bytes;
	cache_version_to_pb(&it.version, vpb, node);
	resp->version = vpb;
	uint64_t now = cache_now_wall(s);
	resp->ttl_ms = it.expire_ms ? (int64_t)(it.expire_ms > now ? it.expire_ms - now : 0) : -1;
}


static void read_answer(struct op *o)
{
	struct cache_svc *s = o->s;
	/* the newest seen wins: applied here if this node was behind, and
	 * sent to the replicas that were (read repair) */
	if (o->have_newest) {
		int rc = cache_entry_apply(s, o->cache, o->newest);
		if (rc == 0)
			s->repairs++;
		struct cstore_version nv;
		if (cache_version_from_pb(o->newest->version, &nv) == 0) {
			Chorus__CacheEntry *ents[1] = {o->newest};
			Chorus__CacheRepl m = CHORUS__CACHE_REPL__INIT;
			m.cache = (char *)o->cache->cfg->name;
			m.epoch = s->map.epoch;
			m.entries = ents;
			m.n_entries = 1;
			for (uint32_t i = 0; i < o->n_slots; i++) {
				const struct op_slot *sl = &o->slots[i];
				if (sl->answered && crepl_read_needs_repair(sl->found, &sl->v, &nv))
					send_repl_oneway(s, sl->id, &m);
			}
		}
	}
	if (o->kind == OP_PREFETCH) {
		/* this node now holds the newest copy: the write goes on from
		 * it, and answers the caller itself */
		Chorus__CacheReq *req = chorus__cache_req__unpack(NULL, o->req_len, o->req_bytes);
		if (!req) {
			op_answer_error(o, CH_ERR_NOMEM, "out of memory");
			return;
		}
		o->answered = 1;
		cache_primary_write(s, o->cache, req, o->partition, o->consistency, o->cb, o->arg);
		chorus__cache_req__free_unpacked(req, NULL);
		return;
	}
	Chorus__CacheResp resp = CHORUS__CACHE_RESP__INIT;
	Chorus__CacheVersion vpb;
	uint8_t node[ID_BYTES];
	resp.epoch = s->map.epoch;
	switch (o->op) {
	case CHORUS__CACHE_OP__CACHE_EXISTS:
		resp.found = cstore_exists(o->cache->st, o->key, o->key_len, cache_now_wall(s)) == 1;
		break;
	case CHORUS__CACHE_OP__CACHE_TTL: {
		int64_t ttl = -2;
		if (cstore_ttl(o->cache->st, o->key, o->key_len, cache_now_wall(s), &ttl) != 0)
			ttl = -2;
		resp.ttl_ms = ttl;
		resp.found = ttl != -2;
		break;
	}
	default:
		cache_resp_from_store(s, o->cache, o->key, o->key_len, &resp, &vpb, node, 1);
		break;
	}
	op_answer(o, 0, &resp, NULL);
}

/* A replica's answer (or failure) to one read: found and entry as it
 * holds the key (entry NULL when not found). */
static void read_ack(struct op_slot *sl, int code, int ok, int found,
                     const Chorus__CacheEntry *entry)
{
	struct op *o = sl->o;
	o->outstanding--;
	if (!ok) {
		o->failed++;
	} else if (!o->answered) {
		o->n_seen++;
		sl->answered = 1;
		sl->found = found && entry;
		struct cstore_version v;
		if (sl->found && cache_version_from_pb(entry->version, &v) == 0) {
			sl->v = v;
			struct cstore_version cur;
			if (!o->have_newest || (cache_version_from_pb(o->newest->version, &cur) == 0 &&
			                        crepl_read_newer(true, &cur, &v))) {
				size_t n = chorus__cache_entry__get_packed_size(entry);
				uint8_t *buf = malloc(n ? n : 1);
				if (buf) {
					chorus__cache_entry__pack(entry, buf);
					Chorus__CacheEntry *copy = chorus__cache_entry__unpack(NULL, n, buf);
					if (copy) {
						if (o->newest)
							chorus__cache_entry__free_unpacked(o->newest, NULL);
						o->newest = copy;
						o->have_newest = 1;
					}
					free(buf);
				}
			}
		} else {
			sl->found = 0;
		}
		if (o->need > 0)
			o->need--;
	}
	if (!o->answered) {
		/* settling: every owner that can answer does, a quorum at least */
		enum crepl_verdict verdict =
		    crepl_decide(o->need, o->want > o->n_seen ? o->want - o->n_seen : 0, o->outstanding);
		if (verdict == CREPL_DONE)
			read_answer(o);
		else if (verdict == CREPL_FAIL)
			op_answer_error(o, code == CH_ERR_TIMEOUT ? CH_ERR_TIMEOUT : CH_ERR_UNAVAILABLE,
			                "%u replica read(s) needed, %u answered", o->need + o->n_seen,
			                o->n_seen);
	}
	op_maybe_free(o);
}

static void primary_read(struct cache_svc *s, struct cache *c, const Chorus__CacheReq *req,
                         uint16_t p, int consistency, int prefetch, cache_reply_fn cb, void *arg)
{
	uint32_t need = replicas_needed(&s->map, prefetch ? CH_CACHE_QUORUM : consistency);
	if (need == 0 && prefetch) {
		cache_primary_write(s, c, req, p, consistency, cb, arg); /* no other owner to ask */
		return;
	}
	if (need == 0) {
		/* answered at once from the store */
		Chorus__CacheResp resp = CHORUS__CACHE_RESP__INIT;
		Chorus__CacheVersion vpb;
		uint8_t node[ID_BYTES];
		resp.epoch = s->map.epoch;
		if (req->op == CHORUS__CACHE_OP__CACHE_EXISTS) {
			resp.found = cstore_exists(c->st, req->key.data, req->key.len, cache_now_wall(s)) == 1;
		} else if (req->op == CHORUS__CACHE_OP__CACHE_TTL) {
			int64_t ttl = -2;
			if (cstore_ttl(c->st, req->key.data, req->key.len, cache_now_wall(s), &ttl) != 0)
				ttl = -2;
			resp.ttl_ms = ttl;
			resp.found = ttl != -2;
		} else {
			cache_resp_from_store(s, c, req->key.data, req->key.len, &resp, &vpb, node, 1);
		}
		cb(arg, 0, &resp, NULL);
		return;
	}
	struct op *o = op_new(s, prefetch ? OP_PREFETCH : OP_READ, cb, arg);
	if (!o) {
		cache_answer_error(cb, arg, CH_ERR_FULL, "too many cache operations in flight");
		return;
	}
	o->cache = c;
	o->op = req->op;
	o->partition = p;
	o->consistency = consistency;
	if (prefetch) {
		o->req_len = chorus__cache_req__get_packed_size(req);
		o->req_bytes = malloc(o->req_len ? o->req_len : 1);
		if (!o->req_bytes) {
			op_answer_error(o, CH_ERR_NOMEM, "out of memory");
			op_maybe_free(o);
			return;
		}
		chorus__cache_req__pack(req, o->req_bytes);
	}
	o->key = malloc(req->key.len);
	if (!o->key) {
		op_answer_error(o, CH_ERR_NOMEM, "out of memory");
		op_maybe_free(o);
		return;
	}
	memcpy(o->key, req->key.data, req->key.len);
	o->key_len = req->key.len;
	o->need = crepl_read_need(s->map.owner_count, need, s->ae.rounds < s->settle_until_round,
	                          prefetch);
	o->want = o->need;
	/* what this node holds starts as the newest */
	struct cstore_item it;
	if (cstore_peek(c->st, o->key, o->key_len, cache_now_wall(s), &it) == 0) {
		Chorus__CacheEntry e;
		Chorus__CacheVersion vpb;
		uint8_t node[ID_BYTES];
		cache_entry_from_item(&it, &e, &vpb, node);
		size_t n = chorus__cache_entry__get_packed_size(&e);
		uint8_t *buf = malloc(n ? n : 1);
		if (buf) {
			chorus__cache_entry__pack(&e, buf);
			o->newest = chorus__cache_entry__unpack(NULL, n, buf);
			o->have_newest = o->newest != NULL;
			free(buf);
		}
	}
	for (uint8_t k = 1; k < s->map.owner_count; k++)
		if (rb_add(o, cplace_owner_id(&s->map, p, k), 1) != 0)
			o->failed++;
	if (o->asked < o->need)
		op_answer_error(o, CH_ERR_UNAVAILABLE, "%u replica read(s) needed, %u reachable", o->need,
		                o->asked);
	op_maybe_free(o);
}

/* A write at the primary. */
void cache_primary_write(struct cache_svc *s, struct cache *c, const Chorus__CacheReq *req,
                         uint16_t p, int consistency, cache_reply_fn cb, void *arg)
{
	if (req->op == CHORUS__CACHE_OP__CACHE_UPDATE) {
		cache_update(s, c, req, p, consistency, cb, arg);
		return;
	}
	uint64_t now = cache_now_wall(s);
	Chorus__CacheResp resp = CHORUS__CACHE_RESP__INIT;
	resp.epoch = s->map.epoch;
	const void *key = req->key.data;
	size_t klen = req->key.len;
	struct cstore_item old;
	memset(&old, 0, sizeof(old));
	uint8_t *oldval = NULL;
	size_t oldlen = 0;
	int rc = 0;
	int changed = 1;
	for (int attempt = 0; attempt < 2; attempt++) {
		struct cstore_version v = version_new(s);
		switch (req->op) {
		case CHORUS__CACHE_OP__CACHE_PUT: {
			struct cstore_put put;
			memset(&put, 0, sizeof(put));
			put.key = key;
			put.key_bytes = klen;
			put.value = req->value.data;
			put.value_bytes = req->value.len;
			put.version = v;
			put.partition = p;
			put.flags = 0;
			if (req->flags & CH_CACHE_NX)
				put.flags |= CSTORE_PUT_NX;
			if (req->flags & CH_CACHE_XX)
				put.flags |= CSTORE_PUT_XX;
			if (req->flags & CH_CACHE_KEEPTTL)
				put.flags |= CSTORE_PUT_KEEPTTL;
			put.flags |= CSTORE_PUT_GET;
			if (req->ttl_ms > 0)
				put.ttl_ms = (uint64_t)req->ttl_ms;
			struct cstore_version ifv;
			if (req->if_version) {
				if (cache_version_from_pb(req->if_version, &ifv) != 0) {
					cache_answer_error(cb, arg, CH_ERR_INVALID, "if_version: a 16-byte node id is needed");
					return;
				}
				put.if_version = &ifv;
			}
			rc = cstore_put(c->st, &put, now, &old);
			resp.applied = rc == 0;
			if (rc == CSTORE_NOT_MET)
				changed = 0;
			break;
		}
		case CHORUS__CACHE_OP__CACHE_DEL:
		case CHORUS__CACHE_OP__CACHE_GETDEL: {
			bool existed = false;
			rc = cstore_delete(c->st, key, klen, &v, p, now, &existed, &old);
			resp.integer = existed ? 1 : 0;
			resp.applied = existed;
			changed = existed;
			break;
		}
		case CHORUS__CACHE_OP__CACHE_EXPIRE:
			if (req->ttl_ms <= 0) {
				cache_answer_error(cb, arg, CH_ERR_INVALID, "expire: a ttl above 0 is needed");
				return;
			}
			rc = cstore_expire(c->st, key, klen, now + (uint64_t)req->ttl_ms, &v, now);
			resp.applied = rc == 0;
			changed = rc == 0;
			break;
		case CHORUS__CACHE_OP__CACHE_PERSIST:
			rc = cstore_persist(c->st, key, klen, &v, now);
			resp.applied = rc == 0;
			changed = rc == 0;
			break;
		case CHORUS__CACHE_OP__CACHE_INCR: {
			int64_t result = 0;
			rc = cstore_incr(c->st, key, klen, req->delta, &v, p, now, &result);
			resp.integer = result;
			break;
		}
		default:
			cache_answer_error(cb, arg, CH_ERR_INVALID, "not a write");
			return;
		}
		if (rc != CSTORE_STALE)
			break;
		/* what is held is newer than this node's clock (another primary
		 * wrote it before a map change): move the clock past it */
		struct cstore_item held;
		if (cstore_peek(c->st, key, klen, now, &held) == 0) {
			uint64_t merged;
			(void)hlc_update(&s->hlc, now, held.version.hlc, &merged);
		}
	}
	if (rc == CSTORE_NOT_MET)
		rc = 0;
	if (rc != 0) {
		switch (rc) {
		case ERR_INVALID:
			cache_answer_error(cb, arg, CH_ERR_INVALID, "%s",
			             req->op == CHORUS__CACHE_OP__CACHE_INCR
			                 ? "value is not an integer or out of range"
			                 : "invalid request");
			return;
		case ERR_TOO_LARGE:
			cache_answer_error(cb, arg, req->op == CHORUS__CACHE_OP__CACHE_INCR ? CH_ERR_INVALID
			                                                             : CH_ERR_TOO_LARGE,
			             "%s", req->op == CHORUS__CACHE_OP__CACHE_INCR
			                       ? "increment or decrement would overflow"
			                       : "the entry is over the cache's limits");
			return;
		case ERR_NOMEM:
		case ERR_FULL:
			cache_answer_error(cb, arg, CH_ERR_FULL, "the cache is full");
			return;
		default:
			cache_answer_error(cb, arg, CH_ERR_INTERNAL, "store: %s", err_name(rc));
			return;
		}
	}
	if (old.found && (req->op == CHORUS__CACHE_OP__CACHE_GETDEL ||
	                  (req->op == CHORUS__CACHE_OP__CACHE_PUT && (req->flags & CH_CACHE_GET)))) {
		/* the old value: copied now (the store moves on) */
		oldlen = old.value_bytes;
		oldval = malloc(oldlen ? oldlen : 1);
		if (!oldval) {
			cache_answer_error(cb, arg, CH_ERR_NOMEM, "out of memory");
			return;
		}
		memcpy(oldval, old.value, oldlen);
		resp.found = 1;
		resp.value.data = oldval;
		resp.value.len = oldlen;
	}
	if (!changed) {
		cb(arg, 0, &resp, NULL);
		free(oldval);
		return;
	}
	replicate(s, c, p, key, klen, consistency, &resp, oldval, oldlen, cb, arg);
	free(oldval);
}

/* ---- routing ---- */

/* A SCAN cursor's check: 20 bits of a hash of (member ordinal, position),
 * so a garbage cursor is refused rather than scanned from. */
static uint64_t cursor_check(uint32_t ord, uint64_t pos)
{
	unsigned char h[8], in[12];
	static const unsigned char ck[crypto_shorthash_KEYBYTES] = {'s', 'c', 'a', 'n'};
	memcpy(in, &ord, 4);
	memcpy(in + 4, &pos, 8);
	crypto_shorthash(h, in, sizeof(in), ck);
	uint64_t check;
	memcpy(&check, h, 8);
	return check & ((1u << CURSOR_CHECK_BITS) - 1);
}

/* A member's part of a SCAN answered: its position becomes the cluster
 * cursor (the next member's start once it is done). */
static void scan_finish(struct op *o, const Chorus__CacheResp *member)
{
	Chorus__CacheResp r = *member;
	uint32_t ord = o->scan_ord;
	uint64_t pos = r.cursor & 0xffffffffu;
	if (pos == 0)
		ord++;
	if (ord >= o->s->map.member_count)
		r.cursor = 0;
	else
		r.cursor = ((uint64_t)ord << (64 - CURSOR_ORD_BITS)) | (cursor_check(ord, pos) << 32) | pos;
	op_answer(o, 0, &r, NULL);
}

static void forward_cb(void *arg, int code, const Chorus__Envelope *reply, const char *err)
{
	struct op *o = arg;
	o->outstanding--;
	if (code != 0)
		op_answer(o, code, NULL, err ? err : ch_strerror(code));
	else if (!reply || reply->body_case == CHORUS__ENVELOPE__BODY_ERROR)
		op_answer(o, reply ? reply->error->code : CH_ERR_PROTOCOL, NULL,
		          reply && reply->error->message ? reply->error->message : "no answer");
	else if (reply->body_case != CHORUS__ENVELOPE__BODY_CACHE_RESP)
		op_answer(o, CH_ERR_PROTOCOL, NULL, "an unexpected answer from the primary");
	else if (o->kind == OP_SCAN)
		scan_finish(o, reply->cache_resp);
	else
		op_answer(o, 0, reply->cache_resp, NULL);
	struct cache_svc *s = o->s;
	op_maybe_free(o);
	if (s->wq_head)
		wq_kick(s); /* an answer freed room on a link */
}

/* Sends o's request (req, already marked forwarded) to `to` on its own. */
static void forward_alone(struct cache_svc *s, struct op *o, const uint8_t *to,
                          Chorus__CacheReq *req)
{
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_CACHE;
	env.cache = req;
	int rc = peer_send(s, o, to, &env, cache_forward_timeout_ms(s->cfg, req), forward_cb, o);
	if (rc != 0) {
		if (rc == CH_ERR_FULL)
			op_answer_error(o, rc, "the cache is busy: no room on the link to the partition's "
			                       "primary");
		else
			op_answer_error(o, rc, "cannot reach the partition's primary: %s", ch_strerror(rc));
		op_maybe_free(o);
		return;
	}
	s->forwarded++;
}

/* ---- forwards gathered per primary ---- */

/* Requests a batch may carry: those whose answer holds no value, and GET,
 * which can be sent again alone when the batch's answer would be too big
 * (CacheBatchItem.resend). A GETDEL or SET ... GET is never gathered. The
 * isolated update's begin may wait for a lock, and SCAN and get-or-compute
 * have their own paths: not gathered either. */
static int fb_takes(const Chorus__CacheReq *req)
{
	switch (req->op) {
	case CHORUS__CACHE_OP__CACHE_GET:
	case CHORUS__CACHE_OP__CACHE_EXISTS:
	case CHORUS__CACHE_OP__CACHE_TTL:
	case CHORUS__CACHE_OP__CACHE_DEL:
	case CHORUS__CACHE_OP__CACHE_EXPIRE:
	case CHORUS__CACHE_OP__CACHE_PERSIST:
	case CHORUS__CACHE_OP__CACHE_INCR:
		return 1;
	case CHORUS__CACHE_OP__CACHE_PUT:
		return !(req->flags & CH_CACHE_GET);
	default:
		return 0;
	}
}

static void fb_cb(void *arg, int code, const Chorus__Envelope *reply, const char *err)
{
	struct peer_batch *b = arg;
	struct cache_svc *s = b->s;
	batch_unlink(&s->fb_inflight, b);
	const Chorus__CacheBatchResp *r = NULL;
	if (code == 0 && reply && reply->body_case == CHORUS__ENVELOPE__BODY_CACHE_BATCH_RESP)
		r = reply->cache_batch_resp;
	int old_peer = code == 0 && reply && reply->body_case == CHORUS__ENVELOPE__BODY_ERROR &&
	               reply->error->code == CH_ERR_PROTOCOL && reply->error->message &&
	               strncmp(reply->error->message, "unknown request type", 20) == 0;
	for (uint32_t i = 0; i < b->n; i++) {
		struct op *o = b->ops[i];
		o->outstanding--;
		if (code != 0) {
			op_answer(o, code, NULL, err ? err : ch_strerror(code));
		} else if (reply && reply->body_case == CHORUS__ENVELOPE__BODY_ERROR && old_peer) {
			/* a node of an older version: nothing was run, each goes alone */
			Chorus__CacheReq *req = chorus__cache_req__unpack(NULL, o->req_len, o->req_bytes);
			if (req) {
				forward_alone(s, o, b->to, req);
				chorus__cache_req__free_unpacked(req, NULL);
				continue;
			}
			op_answer(o, CH_ERR_NOMEM, NULL, "out of memory");
		} else if (reply && reply->body_case == CHORUS__ENVELOPE__BODY_ERROR) {
			op_answer(o, reply->error->code, NULL,
			          reply->error->message ? reply->error->message : "no answer");
		} else if (!r || i >= r->n_items) {
			op_answer(o, CH_ERR_PROTOCOL, NULL, "an unexpected answer from the primary");
		} else if (r->items[i]->resend && o->op != CHORUS__CACHE_OP__CACHE_GET) {
			/* only a GET may be asked again: anything else ran there */
			op_answer(o, CH_ERR_PROTOCOL, NULL,
			          "the primary asked to resend a request that is not a GET");
		} else if (r->items[i]->resend) {
			Chorus__CacheReq *req = chorus__cache_req__unpack(NULL, o->req_len, o->req_bytes);
			if (!req) {
				op_answer(o, CH_ERR_NOMEM, NULL, "out of memory");
			} else {
				s->fb_resent++;
				forward_alone(s, o, b->to, req);
				chorus__cache_req__free_unpacked(req, NULL);
				continue; /* forward_alone answers or frees o */
			}
		} else if (r->items[i]->code != 0) {
			op_answer(o, r->items[i]->code, NULL,
			          r->items[i]->error && r->items[i]->error[0] ? r->items[i]->error
			                                                     : ch_strerror(r->items[i]->code));
		} else if (!r->items[i]->resp) {
			op_answer(o, CH_ERR_PROTOCOL, NULL, "an answer without a body from the primary");
		} else {
			op_answer(o, 0, r->items[i]->resp, NULL);
		}
		op_maybe_free(o);
	}
	free(b);
	if (s->wq_head)
		wq_kick(s);
}

static void fb_send(struct cache_svc *s, struct peer_batch *b)
{
	batch_unlink(&s->fb_pending, b);
	Chorus__CacheReq **reqs = calloc(b->n, sizeof(*reqs));
	uint32_t n = 0;
	for (uint32_t i = 0; reqs && i < b->n; i++) {
		reqs[n] = chorus__cache_req__unpack(NULL, b->ops[i]->req_len, b->ops[i]->req_bytes);
		if (!reqs[n])
			break;
		n++;
	}
	int rc = CH_ERR_NOMEM;
	if (reqs && n == b->n) {
		Chorus__CacheBatch m = CHORUS__CACHE_BATCH__INIT;
		m.reqs = reqs;
		m.n_reqs = n;
		Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
		env.body_case = CHORUS__ENVELOPE__BODY_CACHE_BATCH;
		env.cache_batch = &m;
		rc = peer_send(s, NULL, b->to, &env, s->cfg->cache_timeout_ms * 2, fb_cb, b);
	}
	for (uint32_t i = 0; i < n; i++)
		chorus__cache_req__free_unpacked(reqs[i], NULL);
	free(reqs);
	if (rc == 0) {
		batch_push(&s->fb_inflight, b);
		s->fb_sent++;
		s->fb_entries += b->n;
		s->forwarded += b->n;
		return;
	}
	for (uint32_t i = 0; i < b->n; i++) {
		struct op *o = b->ops[i];
		o->outstanding--;
		if (rc == CH_ERR_FULL)
			op_answer_error(o, rc, "the cache is busy: no room on the link to the partition's "
			                       "primary");
		else
			op_answer_error(o, rc, "cannot reach the partition's primary: %s", ch_strerror(rc));
		op_maybe_free(o);
	}
	free(b);
}

static void fb_flush(struct cache_svc *s)
{
	while (s->fb_pending)
		fb_send(s, s->fb_pending);
}

static void fb_clear(struct cache_svc *s)
{
	struct peer_batch **lists[2] = {&s->fb_pending, &s->fb_inflight};
	for (int k = 0; k < 2; k++)
		while (*lists[k]) {
			struct peer_batch *b = *lists[k];
			*lists[k] = b->next;
			free(b);
		}
}

/* o's request (packed in o->req_bytes) joins to's batch of this iteration. */
static void fb_add(struct cache_svc *s, struct op *o, const uint8_t *to)
{
	struct peer_batch *b = s->fb_pending;
	while (b && memcmp(b->to, to, ID_BYTES) != 0)
		b = b->next;
	if (b && (b->n == FB_ENTRIES_MAX || b->bytes + o->req_len > batch_bytes_max(s))) {
		fb_send(s, b);
		b = NULL;
	}
	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b) {
			op_answer_error(o, CH_ERR_NOMEM, "out of memory");
			op_maybe_free(o);
			return;
		}
		b->s = s;
		memcpy(b->to, to, ID_BYTES);
		batch_push(&s->fb_pending, b);
	}
	b->ops[b->n++] = o;
	b->bytes += o->req_len;
	o->outstanding++;
}

static int forward(struct cache_svc *s, const uint8_t *to, const Chorus__CacheReq *req, int kind,
                   uint32_t scan_ord, uint64_t cursor, cache_reply_fn cb, void *arg)
{
	struct op *o = op_new(s, kind, cb, arg);
	if (!o) {
		cache_answer_error(cb, arg, CH_ERR_FULL, "too many cache operations in flight");
		return 0;
	}
	o->scan_ord = scan_ord;
	o->op = req->op;
	Chorus__CacheReq copy = *req;
	copy.forwarded = 1;
	copy.epoch = s->map.epoch;
	copy.cursor = cursor;
	if (kind == OP_FORWARD && fb_takes(&copy)) {
		o->req_len = chorus__cache_req__get_packed_size(&copy);
		if (o->req_len <= batch_bytes_max(s) / 2) {
			o->req_bytes = malloc(o->req_len ? o->req_len : 1);
			if (!o->req_bytes) {
				op_answer_error(o, CH_ERR_NOMEM, "out of memory");
				op_maybe_free(o);
				return 0;
			}
			chorus__cache_req__pack(&copy, o->req_bytes);
			fb_add(s, o, to);
			return 0;
		}
		o->req_len = 0;
	}
	forward_alone(s, o, to, &copy);
	return 0;
}

void cache_forward(struct cache_svc *s, const uint8_t *to, const Chorus__CacheReq *req,
                   cache_reply_fn cb, void *arg)
{
	(void)forward(s, to, req, OP_FORWARD, 0, req->cursor, cb, arg);
}

/* ---- cluster-wide ---- */

static uint64_t local_dbsize(struct cache_svc *s, struct cache *c)
{
	uint64_t n = 0;
	int me = cplace_member_find(&s->map, s->self);
	if (me < 0)
		return 0;
	for (uint32_t p = 0; p < s->map.partition_count; p++) {
		if (cplace_owner(&s->map, (uint16_t)p, 0) != (uint32_t)me)
			continue;
		struct cstore_partition_stats ps;
		if (cstore_partition_stats(c->st, (uint16_t)p, &ps) == 0)
			n += ps.entries;
	}
	return n;
}

static void fanout_cb(void *arg, int code, const Chorus__Envelope *reply, const char *err)
{
	struct op *o = arg;
	o->outstanding--;
	if (code == 0 && reply && reply->body_case == CHORUS__ENVELOPE__BODY_CACHE_RESP)
		o->sum += reply->cache_resp->integer;
	else if (!o->answered) {
		op_answer(o, code ? code : CH_ERR_PROTOCOL, NULL,
		          err ? err : "a member did not answer");
	}
	if (!o->answered && o->outstanding == 0) {
		Chorus__CacheResp resp = CHORUS__CACHE_RESP__INIT;
		resp.integer = o->sum;
		resp.applied = 1;
		resp.epoch = o->s->map.epoch;
		op_answer(o, 0, &resp, NULL);
	}
	op_maybe_free(o);
}

static void fanout(struct cache_svc *s, struct cache *c, const Chorus__CacheReq *req,
                   cache_reply_fn cb, void *arg)
{
	struct op *o = op_new(s, OP_FANOUT, cb, arg);
	if (!o) {
		cache_answer_error(cb, arg, CH_ERR_FULL, "too many cache operations in flight");
		return;
	}
	Chorus__CacheReq copy = *req;
	if (req->op == CHORUS__CACHE_OP__CACHE_FLUSH)
		copy.flush_hlc = cache_flush_here(s, c);
	else
		o->sum = (int64_t)local_dbsize(s, c);
	copy.forwarded = 1;
	copy.epoch = s->map.epoch;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_CACHE;
	env.cache = &copy;
	for (uint32_t i = 0; i < s->map.member_count && !o->answered; i++) {
		if (is_self(s, s->map.members[i]))
			continue;
		int rc = s->peers->request(s->peers->ctx, s->map.members[i], &env,
		                           s->cfg->cache_timeout_ms, fanout_cb, o);
		if (rc == 0)
			o->outstanding++;
		else
			op_answer_error(o, rc, "a member is unreachable: %s", ch_strerror(rc));
	}
	if (!o->answered && o->outstanding == 0) {
		Chorus__CacheResp resp = CHORUS__CACHE_RESP__INIT;
		resp.integer = o->sum;
		resp.applied = 1;
		resp.epoch = s->map.epoch;
		op_answer(o, 0, &resp, NULL);
	}
	op_maybe_free(o);
}

struct scan_ctx {
	struct cache_svc *s;
	int me;
	uint8_t **keys;
	size_t *lens;
	uint32_t n, cap;
	int nomem;
};

static void scan_visit(void *arg, const struct cstore_item *it)
{
	struct scan_ctx *x = arg;
	if (cplace_owner(&x->s->map, it->partition, 0) != (uint32_t)x->me)
		return; /* another member leads it: it returns the key */
	if (x->n == x->cap) {
		uint32_t cap = x->cap ? x->cap * 2 : 64;
		uint8_t **k = realloc(x->keys, cap * sizeof(*k));
		size_t *l = k ? realloc(x->lens, cap * sizeof(*l)) : NULL;
		if (!k || !l) {
			if (k)
				x->keys = k;
			x->nomem = 1;
			return;
		}
		x->keys = k;
		x->lens = l;
		x->cap = cap;
	}
	uint8_t *copy = malloc(it->key_bytes ? it->key_bytes : 1);
	if (!copy) {
		x->nomem = 1;
		return;
	}
	memcpy(copy, it->key, it->key_bytes);
	x->keys[x->n] = copy;
	x->lens[x->n] = it->key_bytes;
	x->n++;
}

/* This member's part of a SCAN: the keys of the partitions it leads. */
static void local_scan(struct cache_svc *s, struct cache *c, const Chorus__CacheReq *req,
                       cache_reply_fn cb, void *arg)
{
	struct scan_ctx x = {.s = s, .me = cplace_member_find(&s->map, s->self)};
	uint32_t count = req->count ? req->count : 10;
	if (count > SCAN_COUNT_MAX)
		count = SCAN_COUNT_MAX;
	uint64_t next = 0;
	int rc = 0;
	if (x.me >= 0) {
		uint64_t cur = cstore_cursor_from_position(c->st, (uint32_t)req->cursor);
		const char *pat = req->pattern && req->pattern[0] ? req->pattern : NULL;
		rc = cstore_scan(c->st, cur, pat, pat ? strlen(pat) : 0, count, cache_now_wall(s), scan_visit,
		                 &x, &next);
	}
	if (rc != 0 || x.nomem) {
		cache_answer_error(cb, arg, rc ? CH_ERR_INVALID : CH_ERR_NOMEM, "%s",
		             rc ? "invalid cursor" : "out of memory");
	} else {
		Chorus__CacheResp resp = CHORUS__CACHE_RESP__INIT;
		ProtobufCBinaryData *keys = calloc(x.n ? x.n : 1, sizeof(*keys));
		if (!keys) {
			cache_answer_error(cb, arg, CH_ERR_NOMEM, "out of memory");
		} else {
			for (uint32_t i = 0; i < x.n; i++) {
				keys[i].data = x.keys[i];
				keys[i].len = x.lens[i];
			}
			resp.keys = keys;
			resp.n_keys = x.n;
			resp.cursor = cstore_cursor_position(next);
			resp.epoch = s->map.epoch;
			cb(arg, 0, &resp, NULL);
			free(keys);
		}
	}
	for (uint32_t i = 0; i < x.n; i++)
		free(x.keys[i]);
	free(x.keys);
	free(x.lens);
}

static void scan_local_done(void *arg, int code, const Chorus__CacheResp *resp, const char *err)
{
	struct op *o = arg;
	if (code != 0)
		op_answer(o, code, NULL, err);
	else
		scan_finish(o, resp);
}

static void cluster_scan(struct cache_svc *s, const Chorus__CacheReq *req, cache_reply_fn cb,
                         void *arg)
{
	uint64_t cursor = req->cursor;
	uint32_t ord = (uint32_t)(cursor >> (64 - CURSOR_ORD_BITS));
	uint64_t pos = cursor & 0xffffffffu;
	if (cursor != 0 && (((cursor >> 32) & ((1u << CURSOR_CHECK_BITS) - 1)) != cursor_check(ord, pos) ||
	                    ord >= s->map.member_count)) {
		cache_answer_error(cb, arg, CH_ERR_INVALID, "invalid cursor");
		return;
	}
	if (s->map.member_count == 0) {
		cache_answer_error(cb, arg, CH_ERR_UNAVAILABLE, "no member holds the cache");
		return;
	}
	if (!is_self(s, s->map.members[ord])) {
		forward(s, s->map.members[ord], req, OP_SCAN, ord, pos, cb, arg);
		return;
	}
	struct op *o = op_new(s, OP_SCAN, cb, arg);
	if (!o) {
		cache_answer_error(cb, arg, CH_ERR_FULL, "too many cache operations in flight");
		return;
	}
	o->scan_ord = ord;
	Chorus__CacheReq local = *req;
	local.cursor = pos;
	local_scan(s, cache_find(s, req->cache), &local, scan_local_done, o);
	op_maybe_free(o);
}

static void stats(struct cache_svc *s, const Chorus__CacheReq *req, cache_reply_fn cb, void *arg)
{
	Chorus__CacheStatsInfo infos[CONFIG_CACHES_MAX], *ptrs[CONFIG_CACHES_MAX];
	uint32_t n = 0;
	uint32_t prim = 0, repl = 0;
	int me = cplace_member_find(&s->map, s->self);
	if (me >= 0)
		cplace_member_load(&s->map, (uint32_t)me, &prim, &repl);
	char node[64];
	snprintf(node, sizeof(node), "%s", s->cfg->name);
	for (uint32_t i = 0; i < s->n_caches; i++) {
		struct cache *c = &s->caches[i];
		if (req->cache && req->cache[0] && strcmp(req->cache, c->cfg->name) != 0)
			continue;
		struct cstore_stats st;
		cstore_stats(c->st, &st);
		Chorus__CacheStatsInfo *x = &infos[n];
		chorus__cache_stats_info__init(x);
		x->cache = (char *)c->cfg->name;
		x->node = node;
		x->entries = st.entries;
		x->memory_bytes = st.memory_bytes;
		x->hits = st.hits;
		x->misses = st.misses;
		x->evictions = st.evictions;
		x->expirations = st.expirations;
		x->tombstones = st.tombstones;
		x->partitions_primary = prim;
		x->hints_pending = s->hintq.count;
		x->partitions_replica = repl >= prim ? repl - prim : 0;
		ptrs[n] = x;
		n++;
	}
	if (n == 0) {
		cache_answer_error(cb, arg, CH_ERR_NOT_FOUND, "no cache named \"%s\"", req->cache);
		return;
	}
	Chorus__CacheResp resp = CHORUS__CACHE_RESP__INIT;
	resp.stats = ptrs;
	resp.n_stats = n;
	resp.epoch = s->map.epoch;
	/* the map by member name (an id the membership no longer knows is
	 * shown as its hex prefix) */
	uint32_t P = s->map.partition_count, R = s->map.owner_count, M = s->map.member_count;
	Chorus__CachePartition *parts = P ? calloc(P, sizeof(*parts)) : NULL;
	Chorus__CachePartition **pptrs = P ? calloc(P, sizeof(*pptrs)) : NULL;
	char **owners = P && R ? calloc((size_t)P * R, sizeof(*owners)) : NULL;
	char (*names)[64] = M ? calloc(M, sizeof(*names)) : NULL;
	if (parts && pptrs && owners && names) {
		for (uint32_t m = 0; m < M; m++) {
			struct peer_info pi;
			if (s->peers && s->peers->find(s->peers->ctx, s->map.members[m], &pi) && pi.name)
				snprintf(names[m], sizeof(names[m]), "%s", pi.name);
			else
				snprintf(names[m], sizeof(names[m]), "%02x%02x%02x%02x", s->map.members[m][0],
				         s->map.members[m][1], s->map.members[m][2], s->map.members[m][3]);
		}
		for (uint32_t p = 0; p < P; p++) {
			chorus__cache_partition__init(&parts[p]);
			for (uint32_t k = 0; k < R; k++)
				owners[(size_t)p * R + k] = names[cplace_owner(&s->map, (uint16_t)p, (uint8_t)k)];
			parts[p].owners = &owners[(size_t)p * R];
			parts[p].n_owners = R;
			pptrs[p] = &parts[p];
		}
		resp.partition_map = pptrs;
		resp.n_partition_map = P;
	}
	cb(arg, 0, &resp, NULL);
	free(parts);
	free(pptrs);
	free(owners);
	free(names);
}

/* ---- entry point ---- */

/* Whether this node routes and leads keys yet. A node started without
 * seeds (a cluster's first) serves at once; one that joins through seeds
 * once it knows more than itself and its member view has held still for a
 * gossip period. */
static int serving(struct cache_svc *s)
{
	if (s->serving)
		return 1;
	uint64_t now = host_now(s->host)->mono_ms, period = s->cfg->gossip_period_ms;
	if (s->cfg->seed_count == 0 ||
	    (s->map.member_count > 1 && now >= s->map_changed_ms + period))
		s->serving = 1;
	return s->serving;
}

static int depends_on_held(const Chorus__CacheReq *req)
{
	switch (req->op) {
	case CHORUS__CACHE_OP__CACHE_INCR:
	case CHORUS__CACHE_OP__CACHE_GETDEL:
	case CHORUS__CACHE_OP__CACHE_EXPIRE:
	case CHORUS__CACHE_OP__CACHE_PERSIST:
		return 1;
	case CHORUS__CACHE_OP__CACHE_PUT:
		return req->flags != 0 || req->if_version != NULL;
	case CHORUS__CACHE_OP__CACHE_UPDATE:
		return req->update == 1; /* begin answers what is held */
	default:
		return 0;
	}
}

static int port_submit(void *ctx, const Chorus__CacheReq *req, cache_reply_fn cb, void *arg,
                       char *err, size_t err_len)
{
	struct cache_svc *s = ctx;
	if (s->stopping) {
		/* answers given while stopping must not start new work that
		 * nothing would free */
		snprintf(err, err_len, "the node is stopping");
		return CH_ERR_SHUTTING_DOWN;
	}
	if (!s->have_map)
		map_refresh(s);
	if (req->op == CHORUS__CACHE_OP__CACHE_STATS) {
		stats(s, req, cb, arg);
		return 0;
	}
	struct cache *c = cache_find(s, req->cache);
	if (!c) {
		cache_answer_error(cb, arg, CH_ERR_NOT_FOUND, "no cache named \"%s\"", req->cache);
		return 0;
	}
	switch (req->op) {
	case CHORUS__CACHE_OP__CACHE_SCAN:
		if (req->forwarded)
			local_scan(s, c, req, cb, arg);
		else
			cluster_scan(s, req, cb, arg);
		return 0;
	case CHORUS__CACHE_OP__CACHE_DBSIZE:
	case CHORUS__CACHE_OP__CACHE_FLUSH:
		if (req->forwarded) {
			Chorus__CacheResp resp = CHORUS__CACHE_RESP__INIT;
			if (req->op == CHORUS__CACHE_OP__CACHE_DBSIZE) {
				resp.integer = (int64_t)local_dbsize(s, c);
			} else if (!req->flush_hlc) {
				(void)cache_flush_here(s, c); /* from a node that sends no stamp */
			} else if (cache_flush_adopt(s, c, req->flush_hlc) != 0) {
				cache_answer_error(cb, arg, CH_ERR_INVALID, "the FLUSH is stamped further ahead "
				             "of this node's clock than the drift allows");
				return 0;
			}
			resp.applied = 1;
			cb(arg, 0, &resp, NULL);
		} else {
			fanout(s, c, req, cb, arg);
		}
		return 0;
	case CHORUS__CACHE_OP__CACHE_GET:
	case CHORUS__CACHE_OP__CACHE_EXISTS:
	case CHORUS__CACHE_OP__CACHE_TTL:
	case CHORUS__CACHE_OP__CACHE_PUT:
	case CHORUS__CACHE_OP__CACHE_DEL:
	case CHORUS__CACHE_OP__CACHE_GETDEL:
	case CHORUS__CACHE_OP__CACHE_EXPIRE:
	case CHORUS__CACHE_OP__CACHE_PERSIST:
	case CHORUS__CACHE_OP__CACHE_INCR:
	case CHORUS__CACHE_OP__CACHE_UPDATE:
		break;
	case CHORUS__CACHE_OP__CACHE_GET_OR_COMPUTE:
		if (cache_compute_check(s, req, cb, arg))
			return 0;
		break;
	default:
		cache_answer_error(cb, arg, CH_ERR_INVALID, "cache operation %d is not supported", req->op);
		return 0;
	}
	if (req->key.len == 0 || req->key.len > s->cfg->cache_key_bytes_max) {
		cache_answer_error(cb, arg, req->key.len ? CH_ERR_TOO_LARGE : CH_ERR_INVALID,
		             "a key of 1 to %zu bytes is needed (%zu given)", s->cfg->cache_key_bytes_max,
		             req->key.len);
		return 0;
	}
	if (req->value.len > s->cfg->cache_value_bytes_max &&
	    req->op != CHORUS__CACHE_OP__CACHE_UPDATE /* checked there: the lock is let go */) {
		cache_answer_error(cb, arg, CH_ERR_TOO_LARGE, "a value of at most %zu bytes (%zu given)",
		             s->cfg->cache_value_bytes_max, req->value.len);
		return 0;
	}
	if (s->map.member_count == 0) {
		s->unavailable++;
		cache_answer_error(cb, arg, CH_ERR_UNAVAILABLE, "no member holds the cache");
		return 0;
	}
	if (!serving(s)) {
		/* MOVED: clients retry it (libchorus, the RESP listener) */
		s->moved++;
		cache_answer_error(cb, arg, CH_ERR_MOVED,
		             "this node is still learning its cluster's members: retry");
		return 0;
	}
	uint16_t p = cplace_partition(req->key.data, req->key.len, s->map.partition_count);
	const uint8_t *primary = cplace_owner_id(&s->map, p, 0);
	if (!is_self(s, primary)) {
		if (req->forwarded) {
			s->moved++;
			cache_answer_error(cb, arg, CH_ERR_MOVED,
			             "partition %u is not led here under map %016" PRIx64 ": retry", p,
			             s->map.epoch);
			return 0;
		}
		if (req->op == CHORUS__CACHE_OP__CACHE_GET_OR_COMPUTE) {
			/* one forward per request in flight, whatever the callers */
			cache_compute_forward(s, c, primary, req, cb, arg);
			return 0;
		}
		return forward(s, primary, req, OP_FORWARD, 0, req->cursor, cb, arg);
	}
	int consistency = consistency_of(c, req->consistency);
	if (!crepl_copies_enough(consistency, s->map.owner_count, s->owners_seen_max)) {
		/* cut off from every other member: one copy is no quorum */
		s->unavailable++;
		cache_answer_error(cb, arg, CH_ERR_UNAVAILABLE,
		             "this node sees no other member now: QUORUM and ALL need a second copy");
		return 0;
	}
	switch (req->op) {
	case CHORUS__CACHE_OP__CACHE_GET:
	case CHORUS__CACHE_OP__CACHE_EXISTS:
	case CHORUS__CACHE_OP__CACHE_TTL:
		primary_read(s, c, req, p, consistency, 0, cb, arg);
		break;
	case CHORUS__CACHE_OP__CACHE_GET_OR_COMPUTE:
		cache_compute_primary(s, c, req, cb, arg);
		break;
	default:
		/* while owners settle after a map change, this node may not hold
		 * the newest copy yet: a write whose outcome depends on what is
		 * held (INCR from the old value, NX/XX/CAS, GET, EXPIRE) first
		 * fetches it from every owner, as a read does */
		if (s->ae.rounds < s->settle_until_round && depends_on_held(req))
			primary_read(s, c, req, p, consistency, 1, cb, arg);
		else
			cache_primary_write(s, c, req, p, consistency, cb, arg);
		break;
	}
	return 0;
}

static const char *port_db_name(void *ctx, uint32_t db)
{
	struct cache_svc *s = ctx;
	for (uint32_t i = 0; i < s->n_caches; i++)
		if (s->caches[i].cfg->db >= 0 && (uint32_t)s->caches[i].cfg->db == db)
			return s->caches[i].cfg->name;
	return NULL;
}

/* ---- requests from the wire ---- */

struct call_wait {
	struct rpc_call *call;
	struct cache_svc *s;
};

static void call_reply(void *arg, int code, const Chorus__CacheResp *resp, const char *err)
{
	struct call_wait *w = arg;
	if (w->call) {
		if (code != 0)
			rpc_reply_error(w->call, code, "%s", err ? err : ch_strerror(code));
		else
			rpc_reply_body(w->call, CHORUS__ENVELOPE__BODY_CACHE_RESP, cache_resp,
			               (Chorus__CacheResp *)resp);
		w->call = NULL;
	}
	free(w);
}

static void call_cancel(void *arg, struct rpc_call *c)
{
	(void)c;
	struct call_wait *w = arg;
	/* a get-or-compute caller leaves its compute now, rather than count
	 * against its bound until the compute ends */
	if (cache_compute_cancel(w->s, w)) {
		free(w);
		return;
	}
	w->call = NULL; /* the session went: the answer has nowhere to go */
}

static void handle_cache(void *svc, struct rpc_call *call, const Chorus__Envelope *env)
{
	struct cache_svc *s = svc;
	const Chorus__CacheReq *req = env->cache;
	if (req->forwarded && !(call->role & RPC_ROLE_PEER)) {
		rpc_reply_error(call, CH_ERR_DENIED, "only a node may forward cache requests");
		return;
	}
	struct call_wait *w = calloc(1, sizeof(*w));
	if (!w) {
		rpc_reply_error(call, CH_ERR_NOMEM, "out of memory");
		return;
	}
	w->s = s;
	w->call = rpc_park(call, call_cancel, w);
	if (!w->call) {
		free(w);
		return;
	}
	char err[256];
	int rc = port_submit(s, req, call_reply, w, err, sizeof(err));
	if (rc != 0) {
		if (w->call)
			rpc_reply_error(w->call, rc, "%s", err);
		free(w);
	}
}

/* ---- a CacheBatch from a peer: each request as if it came alone ---- */

#define BATCH_ITEM_OVERHEAD 64   /* an item's framing, version, counters */

/* What a batch's answer may hold: FB_REPLY_BYTES_MAX, or a quarter of the
 * frame cap when that is smaller (the rest: items that are not GETs, whose
 * answers are small, and one GET whatever its size). */
static size_t batch_reply_budget(const struct cache_svc *s)
{
	size_t quarter = s->cfg->frame_bytes_max / 4;
	return quarter < FB_REPLY_BYTES_MAX ? quarter : FB_REPLY_BYTES_MAX;
}

struct batch_slot {
	struct batch_wait *bw;
	int code;
	int get;                     /* a GET: may be answered "resend" */
	int resend;
	char *err;
	uint8_t *resp;               /* the answer, packed */
	size_t resp_len;
};

struct batch_wait {
	struct rpc_call *call;
	uint32_t n, pending;
	int submitting;
	size_t bytes, budget;        /* the answer's size so far, and its cap */
	int get_kept;                /* one GET's answer is kept, whatever its size */
	struct batch_slot slots[];
};

static void batch_finish(struct batch_wait *bw)
{
	if (bw->call) {
		Chorus__CacheBatchItem *items = calloc(bw->n, sizeof(*items));
		Chorus__CacheBatchItem **ptrs = calloc(bw->n, sizeof(*ptrs));
		Chorus__CacheResp **resps = calloc(bw->n, sizeof(*resps));
		if (!items || !ptrs || !resps) {
			rpc_reply_error(bw->call, CH_ERR_NOMEM, "out of memory");
		} else {
			for (uint32_t i = 0; i < bw->n; i++) {
				struct batch_slot *sl = &bw->slots[i];
				chorus__cache_batch_item__init(&items[i]);
				ptrs[i] = &items[i];
				if (sl->code != 0) {
					items[i].code = sl->code;
					items[i].error = sl->err ? sl->err : (char *)"";
				} else if (sl->resend) {
					items[i].resend = 1; /* a GET: the sender asks again, alone */
				} else if (!(resps[i] = chorus__cache_resp__unpack(NULL, sl->resp_len,
				                                                   sl->resp))) {
					items[i].code = CH_ERR_NOMEM;
					items[i].error = (char *)"out of memory";
				} else {
					items[i].resp = resps[i];
				}
			}
			Chorus__CacheBatchResp r = CHORUS__CACHE_BATCH_RESP__INIT;
			r.items = ptrs;
			r.n_items = bw->n;
			rpc_reply_body(bw->call, CHORUS__ENVELOPE__BODY_CACHE_BATCH_RESP, cache_batch_resp,
			               &r);
		}
		for (uint32_t i = 0; resps && i < bw->n; i++)
			if (resps[i])
				chorus__cache_resp__free_unpacked(resps[i], NULL);
		free(items);
		free(ptrs);
		free(resps);
		bw->call = NULL;
	}
	for (uint32_t i = 0; i < bw->n; i++) {
		free(bw->slots[i].err);
		free(bw->slots[i].resp);
	}
	free(bw);
}

static void batch_item_reply(void *arg, int code, const Chorus__CacheResp *resp, const char *err)
{
	struct batch_slot *sl = arg;
	struct batch_wait *bw = sl->bw;
	sl->code = code;
	if (code != 0) {
		sl->err = strdup(err ? err : ch_strerror(code));
		bw->bytes += BATCH_ITEM_OVERHEAD + (sl->err ? strlen(sl->err) : 0);
	} else if (resp && sl->get && bw->get_kept &&
	           bw->bytes + chorus__cache_resp__get_packed_size(resp) + BATCH_ITEM_OVERHEAD >
	               bw->budget) {
		/* the batch's answer would pass its cap: a GET is asked again,
		 * alone, and not held here meanwhile */
		sl->resend = 1;
		bw->bytes += BATCH_ITEM_OVERHEAD;
	} else if (resp) {
		sl->resp_len = chorus__cache_resp__get_packed_size(resp);
		bw->bytes += sl->resp_len + BATCH_ITEM_OVERHEAD;
		bw->get_kept |= sl->get;
		sl->resp = malloc(sl->resp_len ? sl->resp_len : 1);
		if (sl->resp) {
			chorus__cache_resp__pack(resp, sl->resp);
		} else {
			sl->code = CH_ERR_NOMEM;
			sl->err = strdup("out of memory");
		}
	} else {
		sl->code = CH_ERR_INTERNAL;
	}
	if (--bw->pending == 0 && !bw->submitting)
		batch_finish(bw);
}

static void batch_cancel(void *arg, struct rpc_call *c)
{
	(void)c;
	struct batch_wait *bw = arg;
	bw->call = NULL; /* answers still come; they have nowhere to go */
}

static void handle_cache_batch(void *svc, struct rpc_call *call, const Chorus__Envelope *env)
{
	struct cache_svc *s = svc;
	const Chorus__CacheBatch *m = env->cache_batch;
	if (m->n_reqs == 0 || m->n_reqs > FB_RECV_MAX) {
		rpc_reply_error(call, CH_ERR_INVALID, "a cache batch holds 1 to %u requests (%zu given)",
		                FB_RECV_MAX, m->n_reqs);
		return;
	}
	struct batch_wait *bw = calloc(1, sizeof(*bw) + m->n_reqs * sizeof(struct batch_slot));
	if (!bw) {
		rpc_reply_error(call, CH_ERR_NOMEM, "out of memory");
		return;
	}
	bw->n = (uint32_t)m->n_reqs;
	bw->pending = bw->n;
	bw->submitting = 1;
	bw->budget = batch_reply_budget(s);
	bw->call = rpc_park(call, batch_cancel, bw);
	if (!bw->call) {
		free(bw);
		return;
	}
	for (uint32_t i = 0; i < bw->n; i++) {
		struct batch_slot *sl = &bw->slots[i];
		sl->bw = bw;
		sl->get = m->reqs[i]->op == CHORUS__CACHE_OP__CACHE_GET;
		Chorus__CacheReq req = *m->reqs[i];
		req.forwarded = 1;
		char err[256] = "";
		int rc = port_submit(s, &req, batch_item_reply, sl, err, sizeof(err));
		if (rc != 0) {
			sl->code = rc;
			sl->err = strdup(err);
			bw->pending--;
		}
	}
	bw->submitting = 0;
	if (bw->pending == 0)
		batch_finish(bw);
}

static const struct req_spec REQUESTS[] = {
    {CHORUS__ENVELOPE__BODY_CACHE, "cache", handle_cache, RPC_ROLE_CLIENT | RPC_ROLE_PEER,
     REQ_MAY_PARK},
    {CHORUS__ENVELOPE__BODY_CACHE_REPL, "cache_repl", cache_handle_repl, RPC_ROLE_PEER, 0},
    {CHORUS__ENVELOPE__BODY_CACHE_BATCH, "cache_batch", handle_cache_batch, RPC_ROLE_PEER,
     REQ_MAY_PARK},
};

/* ---- the service ---- */

static int svc_start(void *svc, struct host *h, const struct now *now, char *err, size_t err_len)
{
	struct cache_svc *s = svc;
	s->host = h;
	s->cfg = host_config(h);
	(void)now;
	memcpy(s->self, host_node_id(h), ID_BYTES);
	hlc_init(&s->hlc, CREPL_DRIFT_MS);
	for (size_t i = 0; i < sizeof(REQUESTS) / sizeof(REQUESTS[0]); i++)
		if (dispatch_register(host_dispatch(h), &REQUESTS[i], s) != 0) {
			snprintf(err, err_len, "request %s registered twice", REQUESTS[i].name);
			return -1;
		}
	s->peers = host_port_get(h, PORT_PEERS);
	if (!s->peers) {
		snprintf(err, err_len, "the cache service needs the cluster service");
		return -1;
	}
	for (uint32_t i = 0; i < s->cfg->cache_count; i++) {
		const struct config_cache *cc = &s->cfg->caches[i];
		struct cstore_config sc;
		memset(&sc, 0, sizeof(sc));
		randombytes_buf(sc.hash_key, sizeof(sc.hash_key));
		sc.memory_bytes_max = cc->memory_max ? cc->memory_max : s->cfg->cache_memory_max;
		sc.entries_max = cc->entries_max;
		sc.key_bytes_max = (uint32_t)s->cfg->cache_key_bytes_max;
		sc.value_bytes_max = (uint32_t)s->cfg->cache_value_bytes_max;
		sc.partition_count = s->cfg->cache_partitions;
		sc.default_ttl_ms = cc->ttl_ms;
		sc.touch_on_read = cc->touch_on_read != 0;
		sc.expire_to_tombstone = true; /* an expiry is a version replicas agree on */
		int rc = cstore_create(&sc, &s->caches[i].st);
		if (rc != 0) {
			snprintf(err, err_len, "cache %s: %s", cc->name, err_name(rc));
			return -1;
		}
		s->caches[i].cfg = cc;
		s->n_caches++;
	}
	if (cache_update_init(s) != 0) {
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	if (cache_persist_svc_start(s, now, err, err_len) != 0)
		return -1;
	s->port.ctx = s;
	s->port.submit = port_submit;
	s->port.db_name = port_db_name;
	if (host_port_set(h, PORT_CACHE, &s->port) != 0) {
		snprintf(err, err_len, "the cache port is taken");
		return -1;
	}
	return cache_compute_start(s, err, err_len);
}

static uint64_t svc_next_deadline(void *svc)
{
	struct cache_svc *s = svc;
	if (s->ae.phase == 2)
		return 0; /* a push pass goes on every iteration */
	uint64_t next = s->next_map_ms;
	if (s->rb_pending || s->fb_pending)
		return 0;
	if (s->wq_head)
		return host_now(s->host)->mono_ms + 2;
	if (s->hintq.head && s->next_hints_ms < next)
		next = s->next_hints_ms;
	if (s->ae.phase == 0 && s->ae.next_ms < next)
		next = s->ae.next_ms;
	if (s->persist && cache_persist_deadline(s->persist) < next)
		next = cache_persist_deadline(s->persist);
	return next;
}

static void svc_tick(void *svc, const struct now *now)
{
	struct cache_svc *s = svc;
	if (now->mono_ms >= s->next_map_ms) {
		s->next_map_ms = now->mono_ms + MAP_CHECK_MS;
		map_refresh(s);
		cache_update_tick(s);
		cache_compute_tick(s, now->mono_ms);
		for (uint32_t i = 0; i < s->n_caches; i++) {
			cstore_tick(s->caches[i].st, now->wall_ms, TICK_BUDGET);
			if (now->wall_ms > TOMBSTONE_HORIZON_MS)
				cstore_gc_tombstones(s->caches[i].st, now->wall_ms - TOMBSTONE_HORIZON_MS,
				                     TICK_BUDGET);
		}
	}
	fb_flush(s);
	rb_flush(s);
	if (s->wq_head)
		wq_kick(s);
	if (s->hintq.head && now->mono_ms >= s->next_hints_ms) {
		s->next_hints_ms = now->mono_ms + HINTS_PERIOD_MS;
		cache_hints_replay(s);
	}
	if (s->ae.phase == 0 && now->mono_ms >= s->ae.next_ms) {
		s->ae.next_ms = now->mono_ms + AE_PERIOD_MS;
		cache_ae_start(s, now->mono_ms);
	} else if (s->ae.phase == 2) {
		cache_ae_step(s, now->mono_ms);
	}
	if (s->persist)
		cache_persist_step(s->persist, s->caches, s->n_caches, now);
}

static void svc_status(void *svc, Chorus__StatusResp *st, struct arena *a)
{
	(void)svc;
	(void)st;
	(void)a;
}

/* Per cache: its store; per node: the partition map, hinted handoff,
 * replication and anti-entropy (docs/metrics.md). */
static void svc_metrics(void *svc, struct prom *p)
{
	struct cache_svc *s = svc;
	if (s->n_caches == 0)
		return;
	struct cstore_stats st[CONFIG_CACHES_MAX];
	for (uint32_t i = 0; i < s->n_caches; i++)
		cstore_stats(s->caches[i].st, &st[i]);
	static const struct {
		const char *name, *help;
		enum prom_type type;
		size_t off;
	} per_cache[] = {
		{"chorus_cache_hits_total", "Reads of a cache's store here that found the key.",
		 PROM_COUNTER, offsetof(struct cstore_stats, hits)},
		{"chorus_cache_misses_total", "Reads of a cache's store here that did not find the key.",
		 PROM_COUNTER, offsetof(struct cstore_stats, misses)},
		{"chorus_cache_evictions_total", "Entries evicted to stay within the memory limit.",
		 PROM_COUNTER, offsetof(struct cstore_stats, evictions)},
		{"chorus_cache_expirations_total", "Entries removed when their time to live ran out.",
		 PROM_COUNTER, offsetof(struct cstore_stats, expirations)},
		{"chorus_cache_memory_bytes", "Memory a cache's store holds here, its tables included.",
		 PROM_GAUGE, offsetof(struct cstore_stats, memory_bytes)},
		{"chorus_cache_entries", "Entries a cache's store holds here (replicas included).",
		 PROM_GAUGE, offsetof(struct cstore_stats, entries)},
		{"chorus_cache_tombstones", "Deletion markers a cache's store holds here.", PROM_GAUGE,
		 offsetof(struct cstore_stats, tombstones)},
	};
	for (size_t f = 0; f < sizeof(per_cache) / sizeof(per_cache[0]); f++) {
		prom_family(p, per_cache[f].name, per_cache[f].type, per_cache[f].help);
		for (uint32_t i = 0; i < s->n_caches; i++) {
			uint64_t v;
			memcpy(&v, (const char *)&st[i] + per_cache[f].off, sizeof(v));
			prom_sample(p, per_cache[f].name, (double)v, "cache", s->caches[i].cfg->name, NULL);
		}
	}
	/* partitions this node owns in the map, and those it still holds
	 * entries of but no longer owns (handed over by anti-entropy) */
	uint32_t prim = 0, owned = 0;
	int me = s->have_map ? cplace_member_find(&s->map, s->self) : -1;
	if (me >= 0)
		cplace_member_load(&s->map, (uint32_t)me, &prim, &owned);
	prom_family(p, "chorus_cache_partitions_owned", PROM_GAUGE,
	            "Partitions of the map this node owns, by role (primary, replica).");
	prom_sample(p, "chorus_cache_partitions_owned", prim, "role", "primary", NULL);
	prom_sample(p, "chorus_cache_partitions_owned", owned >= prim ? owned - prim : 0, "role",
	            "replica", NULL);
	prom_family(p, "chorus_cache_partitions_moving", PROM_GAUGE,
	            "Partitions a cache still holds entries of here that the map gives to other "
	            "members (waiting to be handed over).");
	for (uint32_t i = 0; i < s->n_caches; i++) {
		uint32_t moving = 0;
		for (uint32_t q = 0; s->have_map && q < s->map.partition_count; q++) {
			if (me >= 0 && cplace_rank(&s->map, (uint16_t)q, (uint32_t)me) >= 0)
				continue;
			struct cstore_partition_stats ps;
			if (cstore_partition_stats(s->caches[i].st, (uint16_t)q, &ps) == 0 &&
			    (ps.entries || ps.tombstones))
				moving++;
		}
		prom_sample(p, "chorus_cache_partitions_moving", moving, "cache", s->caches[i].cfg->name,
		            NULL);
	}
	prom_family(p, "chorus_cache_map_epoch", PROM_GAUGE, "Epoch of the partition map in use here.");
	prom_sample(p, "chorus_cache_map_epoch", (double)(s->have_map ? s->map.epoch : 0), NULL);
	prom_family(p, "chorus_cache_hints_pending", PROM_GAUGE,
	            "Hinted writes kept for replicas that did not acknowledge them.");
	prom_sample(p, "chorus_cache_hints_pending", (double)s->hintq.count, NULL);
	prom_family(p, "chorus_cache_hints_pending_bytes", PROM_GAUGE,
	            "Bytes of the hinted writes kept for replicas.");
	prom_sample(p, "chorus_cache_hints_pending_bytes", (double)s->hintq.bytes, NULL);
	prom_family(p, "chorus_cache_hints_total", PROM_COUNTER,
	            "Hinted writes by outcome (delivered to their replica, dropped over the limits).");
	prom_sample(p, "chorus_cache_hints_total", (double)s->hintq.delivered, "outcome", "delivered",
	            NULL);
	prom_sample(p, "chorus_cache_hints_total", (double)s->hintq.dropped, "outcome", "dropped",
	            NULL);
	static const struct {
		const char *what;
		size_t off;
	} ops[] = {
		{"forwarded", offsetof(struct cache_svc, forwarded)},
		{"replicated", offsetof(struct cache_svc, replicated)},
		{"read_repair", offsetof(struct cache_svc, repairs)},
		{"unavailable", offsetof(struct cache_svc, unavailable)},
		{"timeout", offsetof(struct cache_svc, timeouts)},
		{"moved", offsetof(struct cache_svc, moved)},
	};
	prom_family(p, "chorus_cache_operations_total", PROM_COUNTER,
	            "Cache routing and replication events here: forwarded to a primary, copies sent "
	            "to replicas, read repairs, refused unavailable, timed out, answered MOVED.");
	for (size_t k = 0; k < sizeof(ops) / sizeof(ops[0]); k++) {
		uint64_t v;
		memcpy(&v, (const char *)s + ops[k].off, sizeof(v));
		prom_sample(p, "chorus_cache_operations_total", (double)v, "op", ops[k].what, NULL);
	}
	prom_family(p, "chorus_cache_anti_entropy_rounds_total", PROM_COUNTER,
	            "Anti-entropy rounds this node ran.");
	prom_sample(p, "chorus_cache_anti_entropy_rounds_total", (double)s->ae.rounds, NULL);
	prom_family(p, "chorus_cache_anti_entropy_entries_total", PROM_COUNTER,
	            "Entries anti-entropy moved: pushed to other owners, dropped after a hand-over.");
	prom_sample(p, "chorus_cache_anti_entropy_entries_total", (double)s->ae.pushed, "action",
	            "pushed", NULL);
	prom_sample(p, "chorus_cache_anti_entropy_entries_total", (double)s->ae.dropped, "action",
	            "dropped", NULL);
}

static void svc_stop(void *svc)
{
	struct cache_svc *s = svc;
	s->stopping = 1;
	cache_persist_svc_stop(s); /* a snapshot of the stores as they are now */
	wq_clear(s); /* their ops are freed below */
	rb_clear(s);
	fb_clear(s);
	cache_update_clear(s);
	while (s->ops) {
		struct op *o = s->ops;
		if (!o->answered) {
			o->answered = 1;
			o->cb(o->arg, CH_ERR_SHUTTING_DOWN, NULL, "the node is stopping");
		}
		op_free(o);
	}
	cache_compute_stop(s); /* after the ops: a compute's read or write is one */
	cache_ae_clear(s);
	cache_hints_clear(s);
	for (uint32_t i = 0; i < s->n_caches; i++)
		cstore_destroy(s->caches[i].st);
	if (s->have_map)
		cplace_map_free(&s->map);
	free(s);
}

static const struct service_ops CACHE_OPS = {
    .name = "cache",
    .start = svc_start,
    .next_deadline = svc_next_deadline,
    .tick = svc_tick,
    .status = svc_status,
    .metrics = svc_metrics,
    .stop = svc_stop,
};

int cache_svc_register(struct host *h)
{
	struct cache_svc *s = calloc(1, sizeof(*s));
	if (!s)
		return -1;
	if (host_register(h, &CACHE_OPS, s) != 0) {
		free(s);
		return -1;
	}
	return 0;
}
