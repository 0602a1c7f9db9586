/*
 * crepl.c - the cache's replication decisions (crepl.h; docs/cache.md).
 *
 * The protocol follows Dynamo (DeCandia et al., SOSP 2007) in its parts:
 * a primary that stamps versions and counts replica acknowledgements
 * (§4.5, without sloppy quorums: the owners are the map's), read repair
 * (§4.6 / Cassandra), hinted handoff (§4.6), and anti-entropy by digests
 * (§4.7, one digest per partition instead of a Merkle tree: partitions are
 * small and a digest is an order-independent sum kept by the store).
 */
#include "core/crepl.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"

/* ---- waiting for replicas ---- */

uint32_t crepl_replicas_needed(uint32_t owner_count, int consistency)
{
	if (consistency == CREPL_ONE || owner_count <= 1)
		return 0;
	if (consistency == CREPL_ALL)
		return owner_count - 1;
	return owner_count / 2;
}

bool crepl_copies_enough(int consistency, uint32_t owner_count, uint32_t owners_seen_max)
{
	return consistency == CREPL_ONE || owner_count >= 2 || owners_seen_max < 2;
}

enum crepl_verdict crepl_decide(uint32_t need, uint32_t want, uint32_t outstanding)
{
	if (need == 0)
		return want == 0 || outstanding == 0 ? CREPL_DONE : CREPL_WAIT;
	/* every request still out may yet succeed: short of need even then,
	 * nothing can make it */
	return outstanding < need ? CREPL_FAIL : CREPL_WAIT;
}

void crepl_quorum_init(struct crepl_quorum *q, uint32_t need, uint32_t want)
{
	memset(q, 0, sizeof(*q));
	q->need = need;
	q->want = want > need ? want - need : 0;
}

void crepl_quorum_sent(struct crepl_quorum *q, bool sent)
{
	if (sent)
		q->outstanding++;
	else
		q->failed++;
}

void crepl_quorum_answer(struct crepl_quorum *q, bool good)
{
	assert(q->outstanding > 0);
	q->outstanding--;
	if (!good) {
		q->failed++;
		return;
	}
	q->seen++;
	if (q->need > 0)
		q->need--;
	else if (q->want > 0)
		q->want--;
}

enum crepl_verdict crepl_quorum_verdict(const struct crepl_quorum *q)
{
	return crepl_decide(q->need, q->want, q->outstanding);
}

/* ---- quorum reads ---- */

bool crepl_read_newer(bool have_newest, const struct cstore_version *newest,
                      const struct cstore_version *v)
{
	return !have_newest || cstore_version_cmp(v, newest) > 0;
}

bool crepl_read_needs_repair(bool found, const struct cstore_version *v,
                             const struct cstore_version *newest)
{
	return !found || cstore_version_cmp(v, newest) < 0;
}

uint32_t crepl_read_need(uint32_t owner_count, uint32_t need, bool settling, bool prefetch)
{
	if ((settling || prefetch) && owner_count > 1)
		return owner_count - 1 > need ? owner_count - 1 : need;
	return need;
}

uint64_t crepl_settle_until(uint64_t rounds, uint32_t cache_count)
{
	return rounds + 2ull * (cache_count ? cache_count : 1) + 1;
}

uint64_t crepl_settle_on_epoch(uint64_t settle_until, uint64_t rounds, uint32_t cache_count, uint64_t own_epoch,
                               uint64_t their_epoch)
{
	if (their_epoch == 0 || their_epoch == own_epoch)
		return settle_until;
	uint64_t until = crepl_settle_until(rounds, cache_count);
	return until > settle_until ? until : settle_until;
}

/* ---- the replica side ---- */

int crepl_apply(struct hlc *h, struct cstore *st, const struct cstore_item *it, uint64_t wall_ms)
{
	if (!it->key || it->key_bytes == 0)
		return ERR_INVALID;
	uint64_t merged;
	if (hlc_update(h, wall_ms, it->version.hlc, &merged) != 0)
		return ERR_INVALID;
	return cstore_apply(st, it, wall_ms);
}

bool crepl_apply_held(int rc)
{
	return rc == 0 || rc == CSTORE_STALE;
}

/* ---- anti-entropy ---- */

static bool bit_get(const uint8_t *b, uint32_t i)
{
	return b && ((b[i / 8] >> (i % 8)) & 1);
}

static void bit_set(uint8_t *b, uint32_t i)
{
	b[i / 8] |= (uint8_t)(1u << (i % 8));
}

static void bit_clear(uint8_t *b, uint32_t i)
{
	b[i / 8] &= (uint8_t)~(1u << (i % 8));
}

void crepl_ae_clear(struct crepl_ae *ae)
{
	for (uint32_t k = 0; k < ae->peer_count; k++) {
		free(ae->peers[k].differ);
		free(ae->peers[k].equal);
		free(ae->peers[k].skipped);
	}
	free(ae->held);
	free(ae->digest);
	memset(ae, 0, sizeof(*ae));
}

int crepl_ae_plan(struct crepl_ae *ae, const struct cplace_map *m, const uint8_t self[CPLACE_ID_BYTES],
                  struct cstore *st)
{
	crepl_ae_clear(ae);
	int me = cplace_member_find(m, self);
	if (me < 0)
		return ERR_NOT_FOUND;
	uint32_t P = m->partition_count, bytes = (P + 7) / 8;
	ae->epoch = m->epoch;
	ae->partition_count = P;
	ae->me = me;
	ae->held = calloc(bytes ? bytes : 1, 1);
	ae->digest = calloc(P ? P : 1, sizeof(*ae->digest));
	if (!ae->held || !ae->digest)
		return ERR_NOMEM;
	for (uint32_t p = 0; p < P; p++) {
		struct cstore_partition_stats ps;
		if (cstore_partition_stats(st, (uint16_t)p, &ps) == 0 && ps.entries + ps.tombstones > 0) {
			bit_set(ae->held, p);
			ae->digest[p] = ps.digest;
		}
	}
	for (uint32_t i = 0; i < m->member_count && ae->peer_count < CREPL_AE_PEERS_MAX; i++) {
		if ((int)i == me)
			continue;
		struct crepl_ae_peer *pe = &ae->peers[ae->peer_count];
		memset(pe, 0, sizeof(*pe));
		for (uint32_t p = 0; p < P; p++) {
			if (cplace_rank(m, (uint16_t)p, i) < 0)
				continue; /* it does not own p */
			if (cplace_rank(m, (uint16_t)p, (uint32_t)me) < 0 && !bit_get(ae->held, p))
				continue; /* nothing of p here */
			if (!pe->equal) {
				pe->equal = calloc(bytes, 1);
				pe->differ = calloc(bytes, 1);
				pe->skipped = calloc(bytes, 1);
				if (!pe->equal || !pe->differ || !pe->skipped) {
					free(pe->equal);
					free(pe->differ);
					free(pe->skipped);
					memset(pe, 0, sizeof(*pe));
					return ERR_NOMEM;
				}
			}
			bit_set(pe->equal, p); /* until it says otherwise */
		}
		if (!pe->equal)
			continue; /* no partition in common */
		pe->member = i;
		memcpy(pe->id, m->members[i], CPLACE_ID_BYTES);
		ae->peer_count++;
	}
	return 0;
}

uint32_t crepl_ae_offer(const struct crepl_ae *ae, uint32_t k, uint32_t *partitions, uint64_t *digests)
{
	assert(k < ae->peer_count);
	uint32_t n = 0;
	for (uint32_t p = 0; p < ae->partition_count; p++) {
		if (!bit_get(ae->peers[k].equal, p))
			continue;
		partitions[n] = p;
		digests[n] = bit_get(ae->held, p) ? ae->digest[p] : 0;
		n++;
	}
	return n;
}

void crepl_ae_unsent(struct crepl_ae *ae, uint32_t k)
{
	assert(k < ae->peer_count);
	memset(ae->peers[k].equal, 0, (ae->partition_count + 7) / 8);
}

void crepl_ae_answer(struct crepl_ae *ae, uint32_t k, const uint32_t *differ, size_t differ_count)
{
	assert(k < ae->peer_count);
	struct crepl_ae_peer *pe = &ae->peers[k];
	pe->answered = true;
	for (size_t i = 0; i < differ_count; i++) {
		uint32_t p = differ[i];
		/* only what was offered: an answer cannot make this node push
		 * (or keep) a partition it did not ask about */
		if (p < ae->partition_count && bit_get(pe->equal, p)) {
			bit_set(pe->differ, p);
			bit_clear(pe->equal, p);
		}
	}
}

void crepl_ae_answer_other_map(struct crepl_ae *ae, uint32_t k)
{
	assert(k < ae->peer_count);
	struct crepl_ae_peer *pe = &ae->peers[k];
	pe->answered = false;
	for (uint32_t b = 0; b < (ae->partition_count + 7) / 8; b++) {
		pe->differ[b] |= pe->equal[b];
		pe->equal[b] = 0;
	}
}

bool crepl_ae_wants(const struct crepl_ae *ae, uint32_t k, uint32_t p)
{
	return k < ae->peer_count && p < ae->partition_count && bit_get(ae->peers[k].differ, p);
}

bool crepl_ae_push_any(const struct crepl_ae *ae)
{
	uint32_t bytes = (ae->partition_count + 7) / 8;
	for (uint32_t k = 0; k < ae->peer_count; k++)
		for (uint32_t b = 0; b < bytes; b++)
			if (ae->peers[k].differ[b])
				return true;
	return false;
}

void crepl_ae_skipped(struct crepl_ae *ae, uint32_t k, uint32_t p)
{
	assert(k < ae->peer_count);
	if (p < ae->partition_count)
		bit_set(ae->peers[k].skipped, p);
}

void crepl_ae_push_sent(struct crepl_ae *ae, uint32_t k, bool sent)
{
	assert(k < ae->peer_count);
	if (sent)
		ae->peers[k].pushes_out++;
	else
		ae->peers[k].push_failed = true;
}

void crepl_ae_push_done(struct crepl_ae *ae, uint32_t k, bool acked)
{
	assert(k < ae->peer_count && ae->peers[k].pushes_out > 0);
	ae->peers[k].pushes_out--;
	if (!acked)
		ae->peers[k].push_failed = true;
}

void crepl_ae_pass_done(struct crepl_ae *ae)
{
	ae->pass_done = true;
}

uint32_t crepl_ae_pushes_out(const struct crepl_ae *ae)
{
	uint32_t n = 0;
	for (uint32_t k = 0; k < ae->peer_count; k++)
		n += ae->peers[k].pushes_out;
	return n;
}

/* Whether owner peer k holds all this node holds of p: equal digests, or
 * every entry pushed to it and acknowledged as held. */
static bool owner_has_all(const struct crepl_ae *ae, const struct crepl_ae_peer *pe, uint32_t p)
{
	if (!pe->answered)
		return false;
	if (bit_get(pe->equal, p))
		return true;
	return ae->pass_done && bit_get(pe->differ, p) && !bit_get(pe->skipped, p) && pe->pushes_out == 0 &&
	       !pe->push_failed;
}

bool crepl_ae_droppable(const struct crepl_ae *ae, const struct cplace_map *m, struct cstore *st, uint32_t p)
{
	if (ae->peer_count == 0 && !ae->held)
		return false; /* no round */
	if (m->epoch != ae->epoch || p >= ae->partition_count || p >= m->partition_count || ae->me < 0 ||
	    (uint32_t)ae->me >= m->member_count)
		return false;
	if (cplace_rank(m, (uint16_t)p, (uint32_t)ae->me) >= 0)
		return false; /* still an owner */
	struct cstore_partition_stats ps;
	if (cstore_partition_stats(st, (uint16_t)p, &ps) != 0 || ps.entries + ps.tombstones == 0)
		return false; /* nothing to drop */
	/* what the owners said equal is what was offered: anything that came
	 * since (a write from a primary with an older map, a hint, a repair)
	 * waits for the next round */
	if (!bit_get(ae->held, p) || ps.digest != ae->digest[p])
		return false;
	for (uint8_t r = 0; r < m->owner_count; r++) {
		const uint8_t *o = cplace_owner_id(m, (uint16_t)p, r);
		bool has = false;
		for (uint32_t k = 0; k < ae->peer_count; k++)
			if (memcmp(ae->peers[k].id, o, CPLACE_ID_BYTES) == 0)
				has = owner_has_all(ae, &ae->peers[k], p);
		if (!has)
			return false;
	}
	return true;
}

uint32_t crepl_ae_differ(const struct cstore *st, uint32_t partition_count, const uint32_t *partitions,
                         const uint64_t *digests, size_t n, uint32_t *differ)
{
	uint32_t k = 0;
	for (size_t i = 0; i < n; i++) {
		struct cstore_partition_stats ps;
		if (partitions[i] >= partition_count ||
		    cstore_partition_stats(st, (uint16_t)partitions[i], &ps) != 0)
			continue;
		if (ps.digest != digests[i])
			differ[k++] = partitions[i];
	}
	return k;
}

/* ---- hinted handoff ---- */

void crepl_hints_init(struct crepl_hints *q, uint64_t count_max, uint64_t bytes_max)
{
	memset(q, 0, sizeof(*q));
	q->count_max = count_max;
	q->bytes_max = bytes_max;
}

static void hint_free(struct crepl_hint *h)
{
	free(h->entry);
	free(h);
}

int crepl_hints_add(struct crepl_hints *q, const uint8_t to[CPLACE_ID_BYTES], uint32_t cache,
                    const uint8_t *entry, size_t len)
{
	if (!entry || !len)
		return ERR_INVALID;
	struct crepl_hint *h = calloc(1, sizeof(*h));
	uint8_t *copy = malloc(len);
	if (!h || !copy) {
		free(h);
		free(copy);
		q->dropped++;
		return ERR_NOMEM;
	}
	memcpy(copy, entry, len);
	memcpy(h->to, to, CPLACE_ID_BYTES);
	h->cache = cache;
	h->entry = copy;
	h->len = len;
	if (q->tail)
		q->tail->next = h;
	else
		q->head = h;
	q->tail = h;
	q->count++;
	q->bytes += len;
	/* bounded: the oldest go (anti-entropy still brings them); one in
	 * flight stays until its answer */
	while (q->head && (q->count > q->count_max || q->bytes > q->bytes_max) && !q->head->inflight) {
		struct crepl_hint *old = q->head;
		q->head = old->next;
		if (!q->head)
			q->tail = NULL;
		q->count--;
		q->bytes -= old->len;
		q->dropped++;
		hint_free(old);
	}
	return 0;
}

struct crepl_hint *crepl_hints_next(struct crepl_hints *q, struct crepl_hint *after,
                                    int (*is_member)(void *ctx, const uint8_t *id), void *ctx)
{
	for (struct crepl_hint *h = after ? after->next : q->head; h; h = h->next)
		if (!h->inflight && !h->delivered && is_member(ctx, h->to))
			return h;
	return NULL;
}

uint32_t crepl_hints_gather(const struct crepl_hints *q, struct crepl_hint *h, struct crepl_hint **out,
                            uint32_t max)
{
	(void)q;
	uint32_t n = 0;
	for (struct crepl_hint *g = h; g && n < max; g = g->next) {
		if (g->inflight || g->delivered || g->cache != h->cache ||
		    memcmp(g->to, h->to, CPLACE_ID_BYTES) != 0)
			continue;
		out[n++] = g;
	}
	return n;
}

void crepl_hints_sent(struct crepl_hint *const *batch, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		assert(!batch[i]->inflight);
		batch[i]->inflight = true;
	}
}

void crepl_hints_done(struct crepl_hints *q, struct crepl_hint *const *batch, uint32_t n, bool ok)
{
	for (uint32_t i = 0; i < n; i++) {
		batch[i]->inflight = false;
		if (ok)
			batch[i]->delivered = true;
	}
	if (ok)
		q->delivered += n;
	struct crepl_hint **pp = &q->head;
	q->tail = NULL;
	while (*pp) {
		struct crepl_hint *h = *pp;
		if (h->delivered && !h->inflight) {
			*pp = h->next;
			q->count--;
			q->bytes -= h->len;
			hint_free(h);
			continue;
		}
		q->tail = h;
		pp = &h->next;
	}
}

void crepl_hints_clear(struct crepl_hints *q)
{
	while (q->head) {
		struct crepl_hint *h = q->head;
		q->head = h->next;
		hint_free(h);
	}
	q->tail = NULL;
	q->count = 0;
	q->bytes = 0;
}
