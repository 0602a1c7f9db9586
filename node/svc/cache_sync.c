/*
 * cache_sync.c - the cache's replica side and background convergence
 * (cache_internal.h; docs/cache.md): CacheRepl from peers (replicated
 * entries, reads for quorum reads, anti-entropy digests), the
 * anti-entropy rounds, hinted handoff, and the FLUSH marks. What to decide
 * is crepl's (core/crepl.h: the drift and last-writer-wins rule, digest
 * comparison, the round's bookkeeping and the handover rule, the hint
 * queue); this file packs, sends and scans.
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
	uint64_t refused = s->hlc.refused_count;
	int rc = crepl_apply(&s->hlc, c->st, &it, cache_now_wall(s));
	if (s->hlc.refused_count != refused) {
		s->refused_drift++;
		log_limited(LOG_WARN, "cache", "drift", 10000,
		            "a write stamped %" PRIu64 " ms ahead of this node's clock was refused",
		            (v.hlc >> 16) - cache_now_wall(s));
	}
	return rc;
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
	if (s->have_map) /* another map spreading: read from every owner meanwhile */
		s->settle_until_round = crepl_settle_on_epoch(s->settle_until_round, s->ae.rounds,
		                                              s->n_caches, s->map.epoch, m->epoch);
	Chorus__CacheReplResp resp = CHORUS__CACHE_REPL_RESP__INIT;
	resp.flush_hlc = c->flush_hlc;
	/* an entry that could not be applied (a version too far ahead of this
	 * node's clock, no memory) is named, so that the primary does not count
	 * it as held here (it keeps a hint and tries again); one older than
	 * held is held, by a newer one */
	uint32_t *refused = m->n_entries ? malloc(m->n_entries * sizeof(*refused)) : NULL;
	for (size_t i = 0; i < m->n_entries; i++) {
		int rc = cache_entry_apply(s, c, m->entries[i]);
		if (rc == 0)
			resp.applied++;
		else if (!crepl_apply_held(rc) && refused)
			refused[resp.n_refused++] = (uint32_t)i;
	}
	resp.refused = refused;
	if (m->sync && s->have_map && m->epoch != s->map.epoch) {
		/* confirmations count between nodes with the same map only
		 * (crepl_ae_answer_other_map): the sender pushes instead */
		free(refused);
		rpc_reply_error(call, CH_ERR_MOVED, "this node's partition map is %016" PRIx64
		                ", not %016" PRIx64, s->map.epoch, m->epoch);
		return;
	}
	uint32_t *differ = NULL;
	if (m->sync && m->n_sync_partitions == m->n_sync_digests && m->n_sync_partitions &&
	    m->n_sync_partitions <= CPLACE_PARTITIONS_MAX) {
		differ = malloc(m->n_sync_partitions * sizeof(*differ));
		if (differ) {
			cstore_tick(c->st, cache_now_wall(s), TICK_BUDGET);
			resp.n_differ = crepl_ae_differ(c->st, s->cfg->cache_partitions, m->sync_partitions,
			                                m->sync_digests, m->n_sync_partitions, differ);
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

static void ae_batch_clear(struct ae_batch *b)
{
	for (uint32_t i = 0; i < b->n; i++)
		chorus__cache_entry__free_unpacked(b->ents[i], NULL);
	free(b->ents);
	memset(b, 0, sizeof(*b));
}

void cache_ae_clear(struct cache_svc *s)
{
	for (uint32_t i = 0; i < s->ae.round.peer_count; i++)
		ae_batch_clear(&s->ae.peers[i].batch);
	memset(s->ae.peers, 0, sizeof(s->ae.peers));
	crepl_ae_clear(&s->ae.round);
}

static void ae_finish(struct cache_svc *s, uint64_t now_mono);

/* A push batch came back: an acknowledgement means every entry is held
 * there (cache_handle_repl answers an error otherwise), which lets the
 * handover drop what was pushed (crepl_ae_droppable). */
static void ae_push_cb(void *arg, int code, const Chorus__Envelope *reply, const char *err)
{
	struct ae_peer *pe = arg;
	struct cache_svc *s = pe->s;
	(void)err;
	s->ae.outstanding--;
	crepl_ae_push_done(&s->ae.round, pe->k,
	                   code == 0 && reply && reply->body_case == CHORUS__ENVELOPE__BODY_CACHE_REPL_RESP);
	if (s->ae.outstanding == 0 && s->ae.phase == 3)
		ae_finish(s, host_now(s->host)->mono_ms);
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
	int rc = s->peers->request(s->peers->ctx, s->ae.round.peers[pe->k].id, &env,
	                           s->cfg->cache_timeout_ms, ae_push_cb, pe);
	crepl_ae_push_sent(&s->ae.round, pe->k, rc == 0);
	if (rc == 0) {
		s->ae.pushed += b->n;
		s->ae.outstanding++;
	}
	ae_batch_clear(b);
}

static void ae_visit(void *arg, const struct cstore_item *it)
{
	struct cache_svc *s = arg;
	for (uint32_t k = 0; k < s->ae.round.peer_count; k++) {
		struct ae_peer *pe = &s->ae.peers[k];
		if (!crepl_ae_wants(&s->ae.round, k, it->partition))
			continue;
		struct ae_batch *b = &pe->batch;
		if (!b->ents)
			b->ents = calloc(AE_BATCH_ENTRIES, sizeof(*b->ents));
		if (!b->ents || b->n == AE_BATCH_ENTRIES || b->bytes >= AE_BATCH_BYTES) {
			/* full (flushed after this bucket): the next round sends the
			 * rest, and this one cannot hand the partition over */
			crepl_ae_skipped(&s->ae.round, k, it->partition);
			continue;
		}
		Chorus__CacheEntry e;
		Chorus__CacheVersion vpb;
		uint8_t node[ID_BYTES];
		cache_entry_from_item(it, &e, &vpb, node);
		size_t n = chorus__cache_entry__get_packed_size(&e);
		uint8_t *buf = malloc(n ? n : 1);
		Chorus__CacheEntry *copy = NULL;
		if (buf) {
			chorus__cache_entry__pack(&e, buf);
			copy = chorus__cache_entry__unpack(NULL, n, buf);
			free(buf);
		}
		if (!copy) {
			crepl_ae_skipped(&s->ae.round, k, it->partition);
			continue;
		}
		b->ents[b->n++] = copy;
		b->bytes += n;
	}
}

/* The round is over: partitions held here but owned elsewhere go once
 * every owner said its digest equals ours or acknowledged all of them
 * (crepl_ae_droppable). */
static void ae_finish(struct cache_svc *s, uint64_t now_mono)
{
	struct cache *c = &s->caches[s->ae.cache];
	for (uint32_t p = 0; p < s->map.partition_count; p++) {
		if (!crepl_ae_droppable(&s->ae.round, &s->map, c->st, p))
			continue;
		uint64_t cur = 0, removed = 0, total = 0;
		do {
			if (cstore_partition_drop(c->st, (uint16_t)p, cur, 1u << 20, &cur, &removed) != 0)
				break;
			total += removed;
		} while (cur);
		s->ae.dropped += total;
		log_debug("cache", "partition %u of %s handed over: %" PRIu64 " entries dropped here", p,
		          c->cfg->name, total);
	}
	/* a round the map changed under (it may have waited for a member that
	 * is gone) pushed nothing: the partitions this node just lost are
	 * handed over by the next one, as soon as after any map change */
	uint64_t next = s->ae.round.epoch == s->map.epoch ? AE_PERIOD_MS : AE_AFTER_MAP_MS;
	cache_ae_clear(s);
	s->ae.phase = 0;
	s->ae.rounds++;
	s->ae.next_ms = now_mono + next;
}

/* The push pass is over (or cut short): the round ends once its push
 * batches came back. */
static void ae_end(struct cache_svc *s, uint64_t now_mono)
{
	if (s->ae.outstanding) {
		s->ae.phase = 3;
		return;
	}
	ae_finish(s, now_mono);
}

static void ae_push_start(struct cache_svc *s, uint64_t now_mono)
{
	if (!crepl_ae_push_any(&s->ae.round) || s->ae.round.epoch != s->map.epoch) {
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
		if (r->flush_hlc)
			(void)cache_flush_adopt(s, &s->caches[s->ae.cache], r->flush_hlc);
		crepl_ae_answer(&s->ae.round, pe->k, r->differ, r->n_differ);
	} else if (code == CH_ERR_MOVED ||
	           (reply && reply->body_case == CHORUS__ENVELOPE__BODY_ERROR && reply->error &&
	            reply->error->code == CH_ERR_MOVED)) {
		crepl_ae_answer_other_map(&s->ae.round, pe->k); /* its map differs */
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
	if (cplace_member_find(&s->map, s->self) < 0)
		return;
	cache_ae_clear(s);
	s->ae.phase = 1;
	cstore_tick(c->st, host_now(s->host)->wall_ms, TICK_BUDGET);
	(void)crepl_ae_plan(&s->ae.round, &s->map, s->self, c->st); /* ERR_NOMEM: the peers planned */
	uint32_t P = s->map.partition_count;
	uint32_t *parts = malloc(P * sizeof(*parts));
	uint64_t *digests = malloc(P * sizeof(*digests));
	for (uint32_t k = 0; parts && digests && k < s->ae.round.peer_count; k++) {
		struct ae_peer *pe = &s->ae.peers[k];
		memset(pe, 0, sizeof(*pe));
		pe->s = s;
		pe->k = k;
		uint32_t n = crepl_ae_offer(&s->ae.round, k, parts, digests);
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
		if (s->peers->request(s->peers->ctx, s->ae.round.peers[k].id, &env, s->cfg->cache_timeout_ms,
		                      ae_digest_cb, pe) == 0)
			s->ae.outstanding++;
		else
			crepl_ae_unsent(&s->ae.round, k);
	}
	if (!parts || !digests)
		for (uint32_t k = 0; k < s->ae.round.peer_count; k++)
			crepl_ae_unsent(&s->ae.round, k);
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
	if (s->ae.round.epoch != s->map.epoch ||
	    cstore_replication_scan(c->st, s->ae.cursor, AE_SCAN_BUCKETS, host_now(s->host)->wall_ms,
	                            ae_visit, s, &next) != 0) {
		ae_end(s, now_mono);
		return;
	}
	for (uint32_t k = 0; k < s->ae.round.peer_count; k++)
		ae_flush(s, &s->ae.peers[k]);
	s->ae.cursor = next;
	if (next == 0) {
		crepl_ae_pass_done(&s->ae.round);
		ae_end(s, now_mono);
	}
}

/* ---- hinted handoff ---- */

void cache_hint_add(struct cache_svc *s, const uint8_t *to, uint32_t cache, const uint8_t *entry,
                     size_t len)
{
	if (!entry || !len)
		return;
	if (s->hintq.count_max == 0) /* the first hint: the queue takes its limits */
		crepl_hints_init(&s->hintq, HINTS_MAX, HINTS_BYTES_MAX);
	(void)crepl_hints_add(&s->hintq, to, cache, entry, len); /* ERR_NOMEM: counted as dropped */
}

static void hints_cb(void *arg, int code, const Chorus__Envelope *reply, const char *err)
{
	struct hint_batch *b = arg;
	struct cache_svc *s = b->s;
	(void)err;
	int ok = code == 0 && reply && reply->body_case == CHORUS__ENVELOPE__BODY_CACHE_REPL_RESP;
	if (ok && reply->cache_repl_resp->n_refused)
		ok = 0; /* some not held there: all stay and go again (applying twice is harmless) */
	if (ok && b->n && reply->cache_repl_resp->flush_hlc)
		(void)cache_flush_adopt(s, &s->caches[b->h[0]->cache],
		                        reply->cache_repl_resp->flush_hlc);
	crepl_hints_done(&s->hintq, b->h, b->n, ok);
	if (b->prev)
		b->prev->next = b->next;
	else
		s->hint_batches = b->next;
	if (b->next)
		b->next->prev = b->prev;
	free(b);
}

static int hint_member(void *ctx, const uint8_t *id)
{
	struct cache_svc *s = ctx;
	return cplace_member_find(&s->map, id) >= 0;
}

/* Hints for members back in the map go to them, a batch per member and
 * cache at a time. */
void cache_hints_replay(struct cache_svc *s)
{
	for (struct crepl_hint *h = NULL; (h = crepl_hints_next(&s->hintq, h, hint_member, s)) != NULL;) {
		struct hint_batch *b = calloc(1, sizeof(*b));
		if (!b)
			return;
		b->s = s;
		struct crepl_hint *group[HINTS_BATCH];
		uint32_t n = crepl_hints_gather(&s->hintq, h, group, HINTS_BATCH);
		Chorus__CacheEntry *ents[HINTS_BATCH];
		for (uint32_t i = 0; i < n; i++) {
			ents[b->n] = chorus__cache_entry__unpack(NULL, group[i]->len, group[i]->entry);
			if (!ents[b->n])
				continue;
			b->h[b->n++] = group[i];
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
		crepl_hints_sent(b->h, b->n);
		b->next = s->hint_batches;
		if (b->next)
			b->next->prev = b;
		s->hint_batches = b;
	}
}

void cache_hints_clear(struct cache_svc *s)
{
	while (s->hint_batches) {
		struct hint_batch *b = s->hint_batches;
		s->hint_batches = b->next;
		free(b);
	}
	crepl_hints_clear(&s->hintq);
}
