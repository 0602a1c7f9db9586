/*
 * cache_sync.c - the cache's replica side and background convergence
 * (cache_internal.h; docs/cache.md): CacheRepl from peers (replicated
 * entries, reads for quorum reads, anti-entropy digests), the
 * anti-entropy rounds, hinted handoff, and the FLUSH marks.
 *
 * FLUSH leaves no tombstones (it empties the stores), so on its own it
 * would be undone by any node that missed it: one restarted from an older
 * snapshot, or cut off while it ran, would hand the flushed entries back
 * through anti-entropy, where they win over nothing. So a FLUSH is a
 * version too: its coordinator stamps it with its HLC (flush_hlc), and
 * every node keeps the newest it knows per cache, drops its entries older
 * than it and refuses older ones from then on. The mark spreads as a
 * tombstone would, but for the whole cache at once: in every anti-entropy
 * message and every CacheReplResp (a node learns it from the first answer
 * of a peer that knows it), and in the snapshot's meta.
 */
#include "svc/cache_internal.h"

#include <assert.h>

#define READS_ANSWER_BYTES_MAX (4u << 20)

/* ---- replica side ---- */

int cache_entry_apply(struct cache_svc *s, struct cache *c, const Chorus__CacheEntry *e)
{
	struct cstore_version v;
	if (cache_version_from_pb(e->version, &v) != 0 || e->partition >= s->cfg->cache_partitions ||
	    e->key.len == 0)
		return ERR_PROTOCOL;
	if (v.hlc < c->flush_hlc)
		return CSTORE_STALE; /* written before a FLUSH: gone for good */
	uint64_t merged;
	if (hlc_update(&s->hlc, cache_now_wall(s), v.hlc, &merged) != 0) {
		s->refused_drift++;
		log_limited(LOG_WARN, "cache", "drift", 10000,
		            "a write stamped %" PRIu64 " ms ahead of this node's clock was refused",
		            (v.hlc >> 16) - cache_now_wall(s));
		return ERR_INVALID;
	}
	struct cstore_item it;
	memset(&it, 0, sizeof(it));
	it.key = e->key.data;
	it.key_bytes = (uint32_t)e->key.len;
	it.value = e->tombstone ? NULL : e->value.data;
	it.value_bytes = e->tombstone ? 0 : (uint32_t)e->value.len;
	it.version = v;
	it.expire_ms = e->tombstone ? 0 : (uint64_t)(e->expire_ms > 0 ? e->expire_ms : 0);
	it.tombstone = e->tombstone;
	it.partition = (uint16_t)e->partition;
	return cstore_apply(c->st, &it, cache_now_wall(s));
}

void cache_entry_from_item(const struct cstore_item *it, Chorus__CacheEntry *e,
                            Chorus__CacheVersion *vpb, uint8_t *node)
{
	chorus__cache_entry__init(e);
	e->key.data = (uint8_t *)it->key;
	e->key.len = it->key_bytes;
	if (!it->tombstone) {
		e->value.data = (uint8_t *)it->value;
		e->value.len = it->value_bytes;
	}
	cache_version_to_pb(&it->version, vpb, node);
	e->version = vpb;
	e->expire_ms = (int64_t)it->expire_ms;
	e->tombstone = it->tombstone;
	e->partition = it->partition;
}

void cache_handle_repl(void *svc, struct rpc_call *call, const Chorus__Envelope *env)
{
	struct cache_svc *s = svc;
	const Chorus__CacheRepl *m = env->cache_repl;
	struct cache *c = cache_find(s, m->cache);
	if (!c) {
		rpc_reply_error(call, CH_ERR_NOT_FOUND, "no cache named \"%s\" here", m->cache);
		return;
	}
	/* the sender's FLUSH mark first: its entries older than it are refused */
	if (m->flush_hlc)
		(void)cache_flush_adopt(s, c, m->flush_hlc);
	Chorus__CacheReplResp resp = CHORUS__CACHE_REPL_RESP__INIT;
	resp.flush_hlc = c->flush_hlc;
	/* an entry that could not be applied (a version too far ahead of this
	 * node's clock, no memory) is named, so that the primary does not count
	 * it as held here; one that is older than held is held, by a newer one */
	uint32_t *refused = m->n_entries ? malloc(m->n_entries * sizeof(*refused)) : NULL;
	for (size_t i = 0; i < m->n_entries; i++) {
		int rc = cache_entry_apply(s, c, m->entries[i]);
		if (rc == 0)
			resp.applied++;
		else if (rc != CSTORE_STALE && refused)
			refused[resp.n_refused++] = (uint32_t)i;
	}
	resp.refused = refused;
	uint32_t *differ = NULL;
	if (m->sync && m->n_sync_partitions == m->n_sync_digests && m->n_sync_partitions &&
	    m->n_sync_partitions <= CPLACE_PARTITIONS_MAX) {
		differ = malloc(m->n_sync_partitions * sizeof(*differ));
		if (differ) {
			cstore_tick(c->st, cache_now_wall(s), TICK_BUDGET);
			for (size_t i = 0; i < m->n_sync_partitions; i++) {
				struct cstore_partition_stats ps;
				if (m->sync_partitions[i] >= s->cfg->cache_partitions ||
				    cstore_partition_stats(c->st, (uint16_t)m->sync_partitions[i], &ps) != 0)
					continue;
				if (ps.digest != m->sync_digests[i])
					differ[resp.n_differ++] = m->sync_partitions[i];
			}
			resp.differ = differ;
		}
	}
	Chorus__CacheEntry e;
	Chorus__CacheVersion vpb;
	uint8_t node[ID_BYTES];
	if (m->read) {
		struct cstore_item it;
		if (m->read_key.len && cstore_peek(c->st, m->read_key.data, m->read_key.len, cache_now_wall(s),
		                                   &it) == 0) {
			cache_entry_from_item(&it, &e, &vpb, node);
			resp.entry = &e;
			resp.found = 1;
		}
	}
	/* gathered reads: each key's entry as held, in order */
	size_t nr = m->n_read_keys <= RB_READS_RECV_MAX ? m->n_read_keys : 0;
	Chorus__CacheReadResult *rr = nr ? calloc(nr, sizeof(*rr)) : NULL;
	Chorus__CacheReadResult **rrp = nr ? calloc(nr, sizeof(*rrp)) : NULL;
	Chorus__CacheEntry *re = nr ? calloc(nr, sizeof(*re)) : NULL;
	Chorus__CacheVersion *rv = nr ? calloc(nr, sizeof(*rv)) : NULL;
	uint8_t(*rn)[ID_BYTES] = nr ? calloc(nr, ID_BYTES) : NULL;
	if (m->n_read_keys && (!rr || !rrp || !re || !rv || !rn)) {
		free(rr);
		free(rrp);
		free(re);
		free(rv);
		free(rn);
		free(differ);
		free(refused);
		rpc_reply_error(call, nr ? CH_ERR_NOMEM : CH_ERR_INVALID,
		                nr ? "out of memory" : "too many reads in one request (at most %u)",
		                RB_READS_RECV_MAX);
		return;
	}
	/* the answer stays under a quarter of the frame cap (4 MiB at most):
	 * the reads past it are left out (n_reads < n) and the sender asks
	 * them again; the first is always answered */
	size_t budget = s->cfg->frame_bytes_max / 4, used = 0, answered = 0;
	if (budget > READS_ANSWER_BYTES_MAX)
		budget = READS_ANSWER_BYTES_MAX;
	uint64_t now = cache_now_wall(s);
	for (size_t i = 0; i < nr; i++) {
		chorus__cache_read_result__init(&rr[i]);
		rrp[i] = &rr[i];
		struct cstore_item it;
		if (m->read_keys[i].len &&
		    cstore_peek(c->st, m->read_keys[i].data, m->read_keys[i].len, now, &it) == 0) {
			size_t size = it.key_bytes + it.value_bytes + 64;
			if (i > 0 && used + size > budget)
				break;
			used += size;
			cache_entry_from_item(&it, &re[i], &rv[i], rn[i]);
			rr[i].entry = &re[i];
			rr[i].found = 1;
		}
		answered = i + 1;
	}
	resp.reads = rrp;
	resp.n_reads = answered;
	rpc_reply_body(call, CHORUS__ENVELOPE__BODY_CACHE_REPL_RESP, cache_repl_resp, &resp);
	free(refused);
	free(rr);
	free(rrp);
	free(re);
	free(rv);
	free(rn);
	free(differ);
}

/* ---- FLUSH marks ---- */

/* Drops every entry of c older than its flush_hlc, in one go (as FLUSH
 * itself did: a pause of its own). Returns how many went. */
static uint64_t flush_drop(struct cache *c)
{
	uint64_t cursor = 0, removed = 0, total = 0;
	do {
		/* the cursor is the store's own: never refused */
		if (cstore_drop_older(c->st, c->flush_hlc, cursor, 1u << 20, &cursor, &removed) != 0)
			break;
		total += removed;
	} while (cursor);
	return total;
}

uint64_t cache_flush_here(struct cache_svc *s, struct cache *c)
{
	uint64_t stamp = hlc_now(&s->hlc, cache_now_wall(s));
	assert(stamp > c->flush_hlc); /* every mark adopted went through this clock */
	c->flush_hlc = stamp;
	uint64_t dropped = flush_drop(c);
	log_info("cache", "cache %s flushed (hlc %" PRIu64 "): %" PRIu64 " entries dropped here",
	         c->cfg->name, stamp, dropped);
	return stamp;
}

int cache_flush_adopt(struct cache_svc *s, struct cache *c, uint64_t flush_hlc)
{
	if (flush_hlc <= c->flush_hlc)
		return 0;
	/* the clock goes past it, so this node's next writes are newer than
	 * the FLUSH (else they would be dropped as older everywhere); a mark
	 * too far ahead is refused as a version would be */
	uint64_t merged;
	if (hlc_update(&s->hlc, cache_now_wall(s), flush_hlc, &merged) != 0) {
		s->refused_drift++;
		log_limited(LOG_WARN, "cache", "drift", 10000,
		            "a FLUSH of cache %s stamped %" PRIu64 " ms ahead of this node's clock was "
		            "refused", c->cfg->name, hlc_physical_ms(flush_hlc) - cache_now_wall(s));
		return ERR_INVALID;
	}
	c->flush_hlc = flush_hlc;
	uint64_t dropped = flush_drop(c);
	log_info("cache", "cache %s flushed (hlc %" PRIu64 ", from a peer): %" PRIu64 " entries "
	                  "dropped here", c->cfg->name, flush_hlc, dropped);
	return 0;
}

/* ---- anti-entropy ---- */

static int bit_get(const uint8_t *b, uint32_t i) { return b && (b[i / 8] >> (i % 8)) & 1; }
static void bit_set(uint8_t *b, uint32_t i) { b[i / 8] |= (uint8_t)(1u << (i % 8)); }

static void ae_batch_clear(struct ae_batch *b)
{
	for (uint32_t i = 0; i < b->n; i++)
		chorus__cache_entry__free_unpacked(b->ents[i], NULL);
	free(b->ents);
	memset(b, 0, sizeof(*b));
}

void cache_ae_clear(struct cache_svc *s)
{
	for (uint32_t i = 0; i < s->ae.n_peers; i++) {
		free(s->ae.peers[i].differ);
		free(s->ae.peers[i].equal);
		ae_batch_clear(&s->ae.peers[i].batch);
	}
	memset(s->ae.peers, 0, sizeof(s->ae.peers));
	s->ae.n_peers = 0;
}

static void ae_flush(struct cache_svc *s, struct ae_peer *pe)
{
	struct ae_batch *b = &pe->batch;
	if (!b->n)
		return;
	Chorus__CacheRepl m = CHORUS__CACHE_REPL__INIT;
	m.cache = (char *)s->caches[s->ae.cache].cfg->name;
	m.epoch = s->map.epoch;
	m.flush_hlc = s->caches[s->ae.cache].flush_hlc;
	m.entries = b->ents;
	m.n_entries = b->n;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_CACHE_REPL;
	env.cache_repl = &m;
	if (s->peers->request(s->peers->ctx, pe->id, &env, s->cfg->cache_timeout_ms, NULL, NULL) == 0)
		s->ae.pushed += b->n;
	ae_batch_clear(b);
}

static void ae_visit(void *arg, const struct cstore_item *it)
{
	struct cache_svc *s = arg;
	for (uint32_t k = 0; k < s->ae.n_peers; k++) {
		struct ae_peer *pe = &s->ae.peers[k];
		if (!bit_get(pe->differ, it->partition))
			continue;
		struct ae_batch *b = &pe->batch;
		if (!b->ents) {
			b->ents = calloc(AE_BATCH_ENTRIES, sizeof(*b->ents));
			if (!b->ents)
				return;
		}
		if (b->n == AE_BATCH_ENTRIES || b->bytes >= AE_BATCH_BYTES)
			continue; /* full: flushed after this bucket; the next round sends the rest */
		Chorus__CacheEntry e;
		Chorus__CacheVersion vpb;
		uint8_t node[ID_BYTES];
		cache_entry_from_item(it, &e, &vpb, node);
		size_t n = chorus__cache_entry__get_packed_size(&e);
		uint8_t *buf = malloc(n ? n : 1);
		if (!buf)
			return;
		chorus__cache_entry__pack(&e, buf);
		Chorus__CacheEntry *copy = chorus__cache_entry__unpack(NULL, n, buf);
		free(buf);
		if (!copy)
			return;
		b->ents[b->n++] = copy;
		b->bytes += n;
	}
}

/* The round is over: partitions held here but owned elsewhere go once
 * every owner said its digest equals ours. */
static void ae_finish(struct cache_svc *s, uint64_t now_mono)
{
	struct cache *c = &s->caches[s->ae.cache];
	int me = cplace_member_find(&s->map, s->self);
	if (s->ae.map_epoch == s->map.epoch && me >= 0) {
		for (uint32_t p = 0; p < s->map.partition_count; p++) {
			if (cplace_rank(&s->map, (uint16_t)p, (uint32_t)me) >= 0)
				continue;
			struct cstore_partition_stats ps;
			if (cstore_partition_stats(c->st, (uint16_t)p, &ps) != 0 ||
			    ps.entries + ps.tombstones == 0)
				continue;
			int all_equal = 1;
			for (uint8_t k = 0; k < s->map.owner_count && all_equal; k++) {
				const uint8_t *o = cplace_owner_id(&s->map, (uint16_t)p, k);
				int found = 0;
				for (uint32_t j = 0; j < s->ae.n_peers; j++)
					if (memcmp(s->ae.peers[j].id, o, ID_BYTES) == 0)
						found = s->ae.peers[j].answered && bit_get(s->ae.peers[j].equal, p);
				all_equal = found;
			}
			if (!all_equal)
				continue;
			uint64_t cur = 0, removed = 0, total = 0;
			do {
				if (cstore_partition_drop(c->st, (uint16_t)p, cur, 1u << 20, &cur, &removed) != 0)
					break;
				total += removed;
			} while (cur);
			s->ae.dropped += total;
			log_debug("cache", "partition %u of %s handed over: %" PRIu64 " entries dropped here",
			          p, c->cfg->name, total);
		}
	}
	cache_ae_clear(s);
	s->ae.phase = 0;
	s->ae.rounds++;
	s->ae.next_ms = now_mono + AE_PERIOD_MS;
}

static void ae_push_start(struct cache_svc *s, uint64_t now_mono)
{
	int any = 0;
	for (uint32_t k = 0; k < s->ae.n_peers; k++)
		for (uint32_t p = 0; p < s->map.partition_count && !any; p++)
			any = bit_get(s->ae.peers[k].differ, p);
	if (!any || s->ae.map_epoch != s->map.epoch) {
		ae_finish(s, now_mono);
		return;
	}
	s->ae.phase = 2;
	s->ae.cursor = 0;
}

static void ae_digest_cb(void *arg, int code, const Chorus__Envelope *reply, const char *err)
{
	struct ae_peer *pe = arg;
	struct cache_svc *s = pe->s;
	(void)err;
	s->ae.outstanding--;
	if (code == 0 && reply && reply->body_case == CHORUS__ENVELOPE__BODY_CACHE_REPL_RESP) {
		const Chorus__CacheReplResp *r = reply->cache_repl_resp;
		pe->answered = 1;
		if (r->flush_hlc)
			(void)cache_flush_adopt(s, &s->caches[s->ae.cache], r->flush_hlc);
		for (size_t i = 0; i < r->n_differ; i++)
			if (r->differ[i] < s->map.partition_count && bit_get(pe->equal, r->differ[i])) {
				bit_set(pe->differ, r->differ[i]);
				pe->equal[r->differ[i] / 8] &= (uint8_t)~(1u << (r->differ[i] % 8));
			}
	}
	if (s->ae.outstanding == 0 && s->ae.phase == 1)
		ae_push_start(s, host_now(s->host)->mono_ms);
}

/* A round: digests to every member sharing partitions with this node. */
void cache_ae_start(struct cache_svc *s, uint64_t now_mono)
{
	if (s->n_caches == 0 || !s->have_map || s->map.member_count < 2)
		return;
	s->ae.cache = (s->ae.cache + 1) % s->n_caches;
	struct cache *c = &s->caches[s->ae.cache];
	int me = cplace_member_find(&s->map, s->self);
	if (me < 0)
		return;
	cache_ae_clear(s);
	s->ae.map_epoch = s->map.epoch;
	s->ae.phase = 1;
	cstore_tick(c->st, host_now(s->host)->wall_ms, TICK_BUDGET);
	uint32_t P = s->map.partition_count;
	uint32_t *parts = malloc(P * sizeof(*parts));
	uint64_t *digests = malloc(P * sizeof(*digests));
	for (uint32_t i = 0; parts && digests && i < s->map.member_count; i++) {
		if ((int)i == me || s->ae.n_peers == AE_PEERS_MAX)
			continue;
		uint32_t n = 0;
		for (uint32_t p = 0; p < P; p++) {
			if (cplace_rank(&s->map, (uint16_t)p, i) < 0)
				continue; /* it does not own p */
			struct cstore_partition_stats ps;
			int held = cstore_partition_stats(c->st, (uint16_t)p, &ps) == 0 &&
			           ps.entries + ps.tombstones > 0;
			if (cplace_rank(&s->map, (uint16_t)p, (uint32_t)me) < 0 && !held)
				continue; /* nothing of p here */
			parts[n] = p;
			digests[n] = held ? ps.digest : 0;
			n++;
		}
		if (n == 0)
			continue;
		struct ae_peer *pe = &s->ae.peers[s->ae.n_peers];
		memset(pe, 0, sizeof(*pe));
		pe->s = s;
		memcpy(pe->id, s->map.members[i], ID_BYTES);
		pe->differ = calloc((P + 7) / 8, 1);
		pe->equal = calloc((P + 7) / 8, 1);
		if (!pe->differ || !pe->equal) {
			free(pe->differ);
			free(pe->equal);
			break;
		}
		for (uint32_t k = 0; k < n; k++)
			bit_set(pe->equal, parts[k]); /* until it says otherwise */
		s->ae.n_peers++;
		Chorus__CacheRepl m = CHORUS__CACHE_REPL__INIT;
		m.cache = (char *)c->cfg->name;
		m.epoch = s->map.epoch;
		m.flush_hlc = c->flush_hlc;
		m.sync = 1;
		m.sync_partitions = parts;
		m.n_sync_partitions = n;
		m.sync_digests = digests;
		m.n_sync_digests = n;
		Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
		env.body_case = CHORUS__ENVELOPE__BODY_CACHE_REPL;
		env.cache_repl = &m;
		if (s->peers->request(s->peers->ctx, pe->id, &env, s->cfg->cache_timeout_ms, ae_digest_cb,
		                      pe) == 0)
			s->ae.outstanding++;
		else
			memset(pe->equal, 0, (P + 7) / 8);
	}
	free(parts);
	free(digests);
	if (s->ae.outstanding == 0)
		ae_push_start(s, now_mono);
}

/* One step of the push pass. */
void cache_ae_step(struct cache_svc *s, uint64_t now_mono)
{
	struct cache *c = &s->caches[s->ae.cache];
	uint64_t next = 0;
	if (s->ae.map_epoch != s->map.epoch ||
	    cstore_replication_scan(c->st, s->ae.cursor, AE_SCAN_BUCKETS, host_now(s->host)->wall_ms,
	                            ae_visit, s, &next) != 0) {
		ae_finish(s, now_mono);
		return;
	}
	for (uint32_t k = 0; k < s->ae.n_peers; k++)
		ae_flush(s, &s->ae.peers[k]);
	s->ae.cursor = next;
	if (next == 0)
		ae_finish(s, now_mono);
}



void cache_hint_add(struct cache_svc *s, const uint8_t *to, uint32_t cache, const uint8_t *entry,
                     size_t len)
{
	if (!entry || !len)
		return;
	struct hint *h = calloc(1, sizeof(*h));
	uint8_t *copy = malloc(len);
	if (!h || !copy) {
		free(h);
		free(copy);
		s->hints_dropped++;
		return;
	}
	memcpy(copy, entry, len);
	memcpy(h->to, to, ID_BYTES);
	h->cache = cache;
	h->entry = copy;
	h->len = len;
	if (s->hints_tail)
		s->hints_tail->next = h;
	else
		s->hints = h;
	s->hints_tail = h;
	s->hints_count++;
	s->hints_bytes += len;
	/* bounded: the oldest go (anti-entropy still brings them) */
	while (s->hints && (s->hints_count > HINTS_MAX || s->hints_bytes > HINTS_BYTES_MAX) &&
	       !s->hints->inflight) {
		struct hint *old = s->hints;
		s->hints = old->next;
		if (!s->hints)
			s->hints_tail = NULL;
		s->hints_count--;
		s->hints_bytes -= old->len;
		s->hints_dropped++;
		free(old->entry);
		free(old);
	}
}


static void hints_cb(void *arg, int code, const Chorus__Envelope *reply, const char *err)
{
	struct hint_batch *b = arg;
	struct cache_svc *s = b->s;
	(void)err;
	int ok = code == 0 && reply && reply->body_case == CHORUS__ENVELOPE__BODY_CACHE_REPL_RESP;
	if (ok && b->n && reply->cache_repl_resp->flush_hlc)
		(void)cache_flush_adopt(s, &s->caches[b->h[0]->cache],
		                        reply->cache_repl_resp->flush_hlc);
	for (uint32_t i = 0; i < b->n; i++) {
		b->h[i]->inflight = 0;
		if (ok)
			b->h[i]->len = 0; /* delivered: removed below */
	}
	if (ok)
		s->hints_delivered += b->n;
	struct hint **pp = &s->hints;
	s->hints_tail = NULL;
	while (*pp) {
		struct hint *h = *pp;
		if (h->len == 0 && !h->inflight) {
			*pp = h->next;
			s->hints_count--;
			free(h->entry);
			free(h);
			continue;
		}
		s->hints_tail = h;
		pp = &h->next;
	}
	s->hints_bytes = 0;
	for (struct hint *h = s->hints; h; h = h->next)
		s->hints_bytes += h->len;
	if (b->prev)
		b->prev->next = b->next;
	else
		s->hint_batches = b->next;
	if (b->next)
		b->next->prev = b->prev;
	free(b);
}

/* Hints for members back in the map go to them, a batch per member and
 * cache at a time. */
void cache_hints_replay(struct cache_svc *s)
{
	for (struct hint *h = s->hints; h; h = h->next) {
		if (h->inflight || h->len == 0 || cplace_member_find(&s->map, h->to) < 0)
			continue;
		struct hint_batch *b = calloc(1, sizeof(*b));
		if (!b)
			return;
		b->s = s;
		Chorus__CacheEntry *ents[HINTS_BATCH];
		for (struct hint *g = h; g && b->n < HINTS_BATCH; g = g->next) {
			if (g->inflight || g->len == 0 || g->cache != h->cache ||
			    memcmp(g->to, h->to, ID_BYTES) != 0)
				continue;
			ents[b->n] = chorus__cache_entry__unpack(NULL, g->len, g->entry);
			if (!ents[b->n])
				continue;
			b->h[b->n++] = g;
		}
		Chorus__CacheRepl m = CHORUS__CACHE_REPL__INIT;
		m.cache = (char *)s->caches[h->cache].cfg->name;
		m.epoch = s->map.epoch;
		m.entries = ents;
		m.n_entries = b->n;
		Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
		env.body_case = CHORUS__ENVELOPE__BODY_CACHE_REPL;
		env.cache_repl = &m;
		int rc = b->n ? s->peers->request(s->peers->ctx, h->to, &env, s->cfg->cache_timeout_ms,
		                                  hints_cb, b)
		              : -1;
		for (uint32_t i = 0; i < b->n; i++)
			chorus__cache_entry__free_unpacked(ents[i], NULL);
		if (rc != 0) {
			free(b);
			continue;
		}
		for (uint32_t i = 0; i < b->n; i++)
			b->h[i]->inflight = 1;
		b->next = s->hint_batches;
		if (b->next)
			b->next->prev = b;
		s->hint_batches = b;
	}
}

