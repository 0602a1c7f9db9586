/*
 * swim.c - SWIM membership with Lifeguard, as a pure state machine.
 *
 * Owns one node's membership view. See swim.h for the contract and
 * docs/membership.md for the protocol as implemented. The subtle parts:
 *
 *   - Precedence (SWIM §4.2, memberlist state.go): an update about a member
 *     wins over what we hold when its incarnation is higher, or equal with a
 *     state of higher rank (left > dead > suspect > alive). Only the member
 *     itself raises its incarnation (refutation, metadata, restart).
 *   - The update queue holds at most one entry per member and always sends
 *     the member's *current* state, so a newer update replaces an older one
 *     (memberlist's named broadcasts). Entries live in buckets by transmit
 *     count; the least transmitted (then newest) go first; an entry is dropped
 *     after lambda*ceil(log10(N+1)) sends.
 *   - Suspicion (Lifeguard §4): timeout starts at max = beta*min and falls
 *     towards min = alpha*log10(N)*period as independent confirmations
 *     arrive: max - (max-min)*log(c+1)/log(K+1).
 *   - Local health (Lifeguard §3): the multiplier scales the probe timeout
 *     and the protocol period by (LHM+1).
 *   - Push-pull merges remote `dead` as `suspect` (memberlist mergeState), so
 *     a member wrongly declared dead on the other side of a healed partition
 *     gets a suspicion timeout's time to refute instead of dying at once.
 *
 * Members live in an array indexed by slot; an open-addressing hash maps id
 * to slot. Everything is bounded by the config (see swim.h).
 */
#include "core/swim.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "lib/rng.h"

#define NONE UINT32_MAX
#define INC_MAX (UINT32_MAX - 2) /* highest incarnation accepted from outside */

struct susp {
	uint32_t member;
	uint32_t confirm_count;
	uint64_t start_ms, min_ms, max_ms, deadline_ms;
	uint32_t checks;                   /* direct pings sent to it near the end */
	uint8_t origin[SWIM_ID_BYTES];     /* who suspected first */
	uint8_t from[SWIM_ID_BYTES];       /* cited when we gossip it */
	uint8_t confirmers[SWIM_SUSPICION_K_MAX][SWIM_ID_BYTES];
};

struct relay {
	uint8_t used;
	uint32_t seq;                      /* our ping to the target */
	uint32_t origin_seq;
	uint64_t deadline_ms;              /* nack if no ack by then */
	uint8_t origin[SWIM_ID_BYTES];
	char origin_addr[SWIM_ADDR_BYTES_MAX];
};

struct swim {
	struct swim_config cfg;
	struct swim_effects fx;
	struct rng rng;
	uint64_t now_ms;
	uint64_t hash_seed;

	/* members */
	struct swim_member *m;
	uint32_t m_cap, m_slots, free_head, self;
	uint32_t *ht;                      /* slot + 1, 0 = empty */
	uint32_t ht_mask;
	uint32_t count[4];
	uint32_t member_count;

	/* shuffled round-robin probe order (SWIM §4.3) */
	uint32_t *probe;
	uint32_t probe_len, probe_pos;

	/* the probe of this period */
	int probe_active, probe_indirect;
	uint32_t probe_target, probe_seq;
	uint64_t probe_timeout_at_ms, probe_end_ms, next_probe_ms;
	uint32_t nacks_expected, nacks;
	uint32_t seq;

	/* update queue: buckets by transmit count */
	uint32_t *q_head, *q_tail;
	uint32_t q_buckets, q_count;

	/* dead/left members in state_change_ms order */
	uint32_t dead_head, dead_tail;

	struct susp *susp;
	uint32_t susp_count, susp_cap;
	uint64_t susp_min_ms;              /* lower bound of the earliest deadline */

	struct relay *relays;
	uint64_t relay_min_ms;

	/* accusers told directly that we are alive (refute_direct): the last
	 * few, so one accuser is told at most once a period */
#define SWIM_TOLD_MAX 8
	struct { uint8_t id[SWIM_ID_BYTES]; uint64_t at_ms; } told[SWIM_TOLD_MAX];
	uint32_t told_next;
	const uint8_t *msg_sender;         /* the sender of the message being applied */

	uint64_t next_pp_ms;
	uint32_t pp_rounds;
	struct swim_update *pp_buf;
	uint32_t pp_cap;

	char seeds[SWIM_SEEDS_MAX][SWIM_ADDR_BYTES_MAX];
	uint32_t seed_count;
	int joining;
	uint64_t join_next_ms;
	uint32_t join_backoff_ms;

	int left;
	uint64_t next_leave_gossip_ms;

	uint32_t lhm;
	struct swim_msg out;
	struct swim_stats st;
};

/* ---- names ---- */

const char *swim_state_name(int state)
{
	switch (state) {
	case SWIM_ALIVE: return "alive";
	case SWIM_SUSPECT: return "suspect";
	case SWIM_DEAD: return "dead";
	case SWIM_LEFT: return "left";
	default: return "unknown";
	}
}

const char *swim_msg_type_name(int type)
{
	switch (type) {
	case SWIM_MSG_PING: return "ping";
	case SWIM_MSG_ACK: return "ack";
	case SWIM_MSG_PING_REQ: return "ping_req";
	case SWIM_MSG_NACK: return "nack";
	case SWIM_MSG_PUSH_PULL: return "push_pull";
	case SWIM_MSG_PUSH_PULL_REPLY: return "push_pull_reply";
	case SWIM_MSG_GOSSIP: return "gossip";
	default: return "unknown";
	}
}

/* ---- randomness: lib/rng.h (xoshiro256** seeded by splitmix64) ---- */

/* Uniform in [0, n), n > 0 (Lemire's multiply-shift; the bias is < n/2^64). */
static uint32_t rand_below(struct swim *s, uint32_t n)
{
	assert(n > 0);
	return rng_below(&s->rng, n);
}

/* ---- small math without libm (pure and identical everywhere) ---- */

/* Natural logarithm for x > 0: x = m * 2^e with m in [1, 2), then
 * ln(m) = 2 atanh((m-1)/(m+1)) by its series. */
static double ln_approx(double x)
{
	assert(x > 0);
	int e = 0;
	while (x >= 2.0) { x /= 2.0; e++; }
	while (x < 1.0) { x *= 2.0; e--; }
	double y = (x - 1.0) / (x + 1.0), y2 = y * y, term = y, sum = 0;
	for (int k = 1; k < 40; k += 2) {
		sum += term / k;
		term *= y2;
	}
	return 2.0 * sum + e * 0.69314718055994530942;
}

/* ceil(log10(n)) for n >= 1 */
static uint32_t ceil_log10(uint64_t n)
{
	uint32_t d = 0;
	uint64_t p = 1;
	while (p < n) { p *= 10; d++; }
	return d;
}

/* ---- helpers ---- */

static int id_is_zero(const uint8_t *id)
{
	for (int i = 0; i < SWIM_ID_BYTES; i++)
		if (id[i]) return 0;
	return 1;
}

static int id_eq(const uint8_t *a, const uint8_t *b) { return memcmp(a, b, SWIM_ID_BYTES) == 0; }

static const char *str_or_empty(const char *p) { return p ? p : ""; }

static void lhm_apply(struct swim *s, int delta)
{
	int v = (int)s->lhm + delta;
	if (v < 0) v = 0;
	if (v > (int)s->cfg.lhm_max) v = (int)s->cfg.lhm_max;
	s->lhm = (uint32_t)v;
}

static uint64_t advance_now(struct swim *s, uint64_t now_ms)
{
	if (now_ms > s->now_ms) s->now_ms = now_ms; /* never go back (wall clock steps) */
	return s->now_ms;
}

static uint32_t live_count(const struct swim *s)
{
	return s->count[SWIM_ALIVE] + s->count[SWIM_SUSPECT];
}

/* memberlist: retransmit limit = RetransmitMult * ceil(log10(N+1)). */
uint32_t swim_retransmit_limit(const struct swim *s)
{
	uint32_t lim = s->cfg.retransmit_mult * ceil_log10((uint64_t)live_count(s) + 1);
	if (lim < 1) lim = 1;
	if (lim > s->q_buckets) lim = s->q_buckets;
	return lim;
}

/* ---- id hash ---- */

static uint64_t id_hash(const struct swim *s, const uint8_t *id)
{
	uint64_t a, b, x;
	memcpy(&a, id, 8);
	memcpy(&b, id + 8, 8);
	x = a ^ s->hash_seed;
	a = rng_splitmix64(&x);
	x = b ^ a;
	return rng_splitmix64(&x);
}

static uint32_t ht_find(const struct swim *s, const uint8_t *id)
{
	uint32_t i = (uint32_t)id_hash(s, id) & s->ht_mask;
	for (;;) {
		uint32_t v = s->ht[i];
		if (v == 0) return NONE;
		if (id_eq(s->m[v - 1].id, id)) return v - 1;
		i = (i + 1) & s->ht_mask;
	}
}

static void ht_insert(struct swim *s, uint32_t slot)
{
	uint32_t i = (uint32_t)id_hash(s, s->m[slot].id) & s->ht_mask;
	while (s->ht[i] != 0) i = (i + 1) & s->ht_mask;
	s->ht[i] = slot + 1;
}

/* Linear probing deletion by backward shift (no tombstones). */
static void ht_remove(struct swim *s, uint32_t slot)
{
	uint32_t i = (uint32_t)id_hash(s, s->m[slot].id) & s->ht_mask;
	while (s->ht[i] != slot + 1) {
		assert(s->ht[i] != 0);
		i = (i + 1) & s->ht_mask;
	}
	uint32_t j = i;
	for (;;) {
		s->ht[i] = 0;
		for (;;) {
			j = (j + 1) & s->ht_mask;
			if (s->ht[j] == 0) return;
			uint32_t k = (uint32_t)id_hash(s, s->m[s->ht[j] - 1].id) & s->ht_mask;
			/* move j back to i unless its home k lies cyclically in (i, j] */
			if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) continue;
			break;
		}
		s->ht[i] = s->ht[j];
		i = j;
	}
}

/* ---- update queue ---- */

static void q_unlink(struct swim *s, uint32_t idx)
{
	struct swim_member *m = &s->m[idx];
	assert(m->queued);
	uint32_t b = m->transmits;
	if (m->q_prev != NONE) s->m[m->q_prev].q_next = m->q_next;
	else s->q_head[b] = m->q_next;
	if (m->q_next != NONE) s->m[m->q_next].q_prev = m->q_prev;
	else s->q_tail[b] = m->q_prev;
	m->queued = 0;
	m->q_next = m->q_prev = NONE;
	assert(s->q_count > 0);
	s->q_count--;
}

static void q_link(struct swim *s, uint32_t idx, uint32_t bucket, int at_head)
{
	struct swim_member *m = &s->m[idx];
	assert(!m->queued && bucket < s->q_buckets);
	m->transmits = (uint8_t)bucket;
	if (at_head) {
		m->q_prev = NONE;
		m->q_next = s->q_head[bucket];
		if (m->q_next != NONE) s->m[m->q_next].q_prev = idx;
		else s->q_tail[bucket] = idx;
		s->q_head[bucket] = idx;
	} else {
		m->q_next = NONE;
		m->q_prev = s->q_tail[bucket];
		if (m->q_prev != NONE) s->m[m->q_prev].q_next = idx;
		else s->q_head[bucket] = idx;
		s->q_tail[bucket] = idx;
	}
	m->queued = 1;
	s->q_count++;
}

/* Queue (or re-queue with a fresh transmit count) the member's current state. */
static void q_push(struct swim *s, uint32_t idx)
{
	if (s->m[idx].queued) q_unlink(s, idx);
	if (s->q_count >= s->cfg.updates_max) {
		/* full: drop the most transmitted, oldest update */
		for (uint32_t b = s->q_buckets; b-- > 0;) {
			if (s->q_tail[b] != NONE) {
				q_unlink(s, s->q_tail[b]);
				s->st.updates_dropped++;
				break;
			}
		}
	}
	q_link(s, idx, 0, 1);
}

/* ---- members ---- */

static void fill_update(const struct swim *s, uint32_t idx, struct swim_update *u)
{
	const struct swim_member *m = &s->m[idx];
	memcpy(u->id, m->id, SWIM_ID_BYTES);
	if (m->state == SWIM_SUSPECT && m->susp != NONE) memcpy(u->from, s->susp[m->susp].from, SWIM_ID_BYTES);
	else if (m->state == SWIM_DEAD) memcpy(u->from, s->m[s->self].id, SWIM_ID_BYTES);
	else memcpy(u->from, m->id, SWIM_ID_BYTES);
	u->incarnation = m->incarnation;
	u->state = m->state;
	u->tag_count = m->tag_count;
	u->proto_version = m->proto_version;
	u->capacity = m->capacity;
	u->load = m->load;
	u->name = m->name;
	u->addr = m->addr;
	u->tags = m->tags;
}

/* Gives back a member's string block (own malloc, or the interner's). */
static void meta_release(const struct swim *s, struct swim_member *m)
{
	if (!m->tags) return;
	if (s->cfg.interner) s->cfg.interner->put(s->cfg.interner->ctx, m->tags);
	else free((void *)m->tags);
	m->tags = NULL;
}

/* One block: [tag pointers][name][addr][tags...] (see swim_interner). */
static int meta_set(const struct swim *s, struct swim_member *m, const char *name, const char *addr,
                    const char *const *tags, uint8_t tag_count)
{
	if (s->cfg.interner) {
		const char *n = NULL, *a = NULL;
		const char *const *block = s->cfg.interner->get(s->cfg.interner->ctx, str_or_empty(name),
		                                                 str_or_empty(addr), tags, tag_count, &n, &a);
		if (!block) return ERR_NOMEM;
		assert(n && a);
		meta_release(s, m);
		m->tags = block;
		m->name = n;
		m->addr = a;
		m->tag_count = tag_count;
		return 0;
	}
	size_t nl = strlen(str_or_empty(name)) + 1, al = strlen(str_or_empty(addr)) + 1, tl = 0;
	for (uint8_t i = 0; i < tag_count; i++) tl += strlen(tags[i]) + 1;
	size_t ptrs = (size_t)tag_count * sizeof(char *);
	char *blob = malloc(ptrs + nl + al + tl);
	if (!blob) return ERR_NOMEM;
	char **tp = (char **)(void *)blob;
	char *p = blob + ptrs;
	memcpy(p, str_or_empty(name), nl);
	const char *n = p;
	p += nl;
	memcpy(p, str_or_empty(addr), al);
	const char *a = p;
	p += al;
	for (uint8_t i = 0; i < tag_count; i++) {
		size_t l = strlen(tags[i]) + 1;
		memcpy(p, tags[i], l);
		tp[i] = p;
		p += l;
	}
	meta_release(s, m);
	m->tags = (const char *const *)(void *)blob;
	m->name = n;
	m->addr = a;
	m->tag_count = tag_count;
	return 0;
}

static int meta_from_update(const struct swim *s, struct swim_member *m, const struct swim_update *u)
{
	m->capacity = u->capacity;
	m->load = u->load;
	m->proto_version = u->proto_version;
	if (m->tags && !strcmp(m->name, str_or_empty(u->name)) && !strcmp(m->addr, str_or_empty(u->addr)) &&
	    m->tag_count == u->tag_count) {
		int same = 1;
		for (uint8_t i = 0; i < u->tag_count && same; i++) same = !strcmp(m->tags[i], u->tags[i]);
		if (same) return 0;
	}
	return meta_set(s, m, u->name, u->addr, u->tags, u->tag_count);
}

static int members_grow(struct swim *s)
{
	if (s->m_cap >= s->cfg.members_max) return ERR_FULL;
	uint32_t cap = s->m_cap ? s->m_cap * 2 : 16;
	if (cap > s->cfg.members_max) cap = s->cfg.members_max;
	struct swim_member *m = realloc(s->m, (size_t)cap * sizeof(*m));
	if (!m) return ERR_NOMEM;
	s->m = m;
	uint32_t *probe = realloc(s->probe, (size_t)cap * sizeof(*probe));
	if (!probe) return ERR_NOMEM;
	s->probe = probe;
	uint32_t ht_size = 1;
	while (ht_size < cap * 2) ht_size <<= 1;
	uint32_t *ht = calloc(ht_size, sizeof(*ht));
	if (!ht) return ERR_NOMEM;
	free(s->ht);
	s->ht = ht;
	s->ht_mask = ht_size - 1;
	s->m_cap = cap;
	for (uint32_t i = 0; i < s->m_slots; i++)
		if (s->m[i].used) ht_insert(s, i);
	return 0;
}

static void probe_insert(struct swim *s, uint32_t idx)
{
	if (s->probe_len >= s->m_cap) {
		/* the list holds stale slots: compact it to the live ones */
		uint32_t n = 0;
		for (uint32_t i = s->probe_pos; i < s->probe_len; i++) {
			const struct swim_member *m = &s->m[s->probe[i]];
			if (m->used && m->state <= SWIM_SUSPECT && s->probe[i] != s->self) s->probe[n++] = s->probe[i];
		}
		s->probe_len = n;
		s->probe_pos = 0;
		if (s->probe_len >= s->m_cap) return; /* already in the list */
	}
	/* memberlist: a new member goes to a random place among those not yet probed this round */
	uint32_t span = s->probe_len - s->probe_pos + 1;
	uint32_t r = s->probe_pos + rand_below(s, span);
	s->probe[s->probe_len++] = s->probe[r];
	s->probe[r] = idx;
}

static void dead_unlink(struct swim *s, uint32_t idx)
{
	struct swim_member *m = &s->m[idx];
	assert(m->in_dead_list);
	if (m->d_prev != NONE) s->m[m->d_prev].d_next = m->d_next;
	else s->dead_head = m->d_next;
	if (m->d_next != NONE) s->m[m->d_next].d_prev = m->d_prev;
	else s->dead_tail = m->d_prev;
	m->in_dead_list = 0;
	m->d_next = m->d_prev = NONE;
}

static void dead_append(struct swim *s, uint32_t idx)
{
	struct swim_member *m = &s->m[idx];
	assert(!m->in_dead_list);
	m->d_next = NONE;
	m->d_prev = s->dead_tail;
	if (s->dead_tail != NONE) s->m[s->dead_tail].d_next = idx;
	else s->dead_head = idx;
	s->dead_tail = idx;
	m->in_dead_list = 1;
}

/* Lifeguard §4: timeout = max - (max-min)*log(c+1)/log(K+1), never below min. */
static uint64_t susp_timeout_ms(const struct swim *s, const struct susp *x)
{
	uint32_t k = s->cfg.suspicion_k;
	/* memberlist: a cluster too small to produce k independent
	 * confirmations (N - 2 < k) waits the minimum at once */
	if (live_count(s) < k + 2) k = 0;
	if (k == 0 || x->confirm_count >= k) return x->min_ms;
	double frac = ln_approx((double)x->confirm_count + 1.0) / ln_approx((double)k + 1.0);
	double t = (double)x->max_ms - (double)(x->max_ms - x->min_ms) * frac;
	if (t < (double)x->min_ms) t = (double)x->min_ms;
	return (uint64_t)t;
}

static void susp_start(struct swim *s, uint32_t idx, const uint8_t *from)
{
	if (s->susp_count == s->susp_cap) {
		uint32_t cap = s->susp_cap ? s->susp_cap * 2 : 16;
		struct susp *n = realloc(s->susp, (size_t)cap * sizeof(*n));
		if (!n) {
			/* no memory for a timer: stay alive rather than crash; the next probe retries */
			return;
		}
		s->susp = n;
		s->susp_cap = cap;
	}
	struct susp *x = &s->susp[s->susp_count];
	memset(x, 0, sizeof(*x));
	x->member = idx;
	x->start_ms = s->now_ms;
	/* Lifeguard §4: min = alpha * log10(N) * period (memberlist: at least one) */
	uint32_t n = live_count(s);
	double lg = n > 10 ? ln_approx((double)n) / ln_approx(10.0) : 1.0;
	x->min_ms = (uint64_t)((double)s->cfg.suspicion_alpha * lg * (double)s->cfg.period_ms);
	x->max_ms = x->min_ms * s->cfg.suspicion_beta;
	memcpy(x->origin, from, SWIM_ID_BYTES);
	memcpy(x->from, from, SWIM_ID_BYTES);
	x->deadline_ms = x->start_ms + susp_timeout_ms(s, x);
	if (s->susp_count == 0 || x->start_ms < s->susp_min_ms) s->susp_min_ms = x->start_ms;
	s->m[idx].susp = s->susp_count++;
}

static void susp_stop(struct swim *s, uint32_t idx)
{
	uint32_t i = s->m[idx].susp;
	if (i == NONE) return;
	assert(i < s->susp_count && s->susp[i].member == idx);
	s->m[idx].susp = NONE;
	s->susp_count--;
	if (i != s->susp_count) {
		s->susp[i] = s->susp[s->susp_count];
		s->m[s->susp[i].member].susp = i;
	}
}

/* An independent confirmation of a suspicion (Lifeguard §4). Returns 1 when
 * it was new (then it is re-gossiped, as memberlist does). */
static int susp_confirm(struct swim *s, uint32_t idx, const uint8_t *from)
{
	uint32_t i = s->m[idx].susp;
	if (i == NONE) return 0;
	struct susp *x = &s->susp[i];
	if (x->confirm_count >= s->cfg.suspicion_k || id_eq(from, x->origin)) return 0;
	for (uint32_t c = 0; c < x->confirm_count; c++)
		if (id_eq(x->confirmers[c], from)) return 0;
	memcpy(x->confirmers[x->confirm_count++], from, SWIM_ID_BYTES);
	memcpy(x->from, from, SWIM_ID_BYTES);
	x->deadline_ms = x->start_ms + susp_timeout_ms(s, x);
	if (s->now_ms < s->susp_min_ms) s->susp_min_ms = s->now_ms; /* recomputed at the tick */
	return 1;
}

static void set_state(struct swim *s, uint32_t idx, uint8_t state, const uint8_t *from)
{
	struct swim_member *m = &s->m[idx];
	uint8_t old = m->state;
	if (old == SWIM_SUSPECT) susp_stop(s, idx);
	if (m->in_dead_list) dead_unlink(s, idx);
	assert(s->count[old] > 0);
	s->count[old]--;
	s->count[state]++;
	m->state = state;
	m->state_change_ms = s->now_ms;
	if (state == SWIM_SUSPECT && idx != s->self) susp_start(s, idx, from);
	if (state >= SWIM_DEAD) dead_append(s, idx);
	if (old >= SWIM_DEAD && state <= SWIM_SUSPECT && idx != s->self) probe_insert(s, idx);
}

static void emit(struct swim *s, int ev, uint32_t idx, int old_state)
{
	if (s->fx.event && idx != s->self) s->fx.event(s->fx.ctx, ev, &s->m[idx], old_state);
}

static void forget(struct swim *s, uint32_t idx);

/* Adds a member from an update (state alive or as given). */
static uint32_t member_add(struct swim *s, const struct swim_update *u)
{
	if (s->member_count >= s->cfg.members_max) {
		/* full: make room by forgetting the oldest dead member, if any */
		if (s->dead_head == NONE) return NONE;
		uint32_t victim = s->dead_head;
		emit(s, SWIM_EV_REAP, victim, s->m[victim].state);
		forget(s, victim);
	}
	uint32_t idx;
	if (s->free_head != NONE) {
		idx = s->free_head;
		s->free_head = s->m[idx].q_next;
	} else {
		if (s->m_slots == s->m_cap && members_grow(s) != 0) return NONE;
		idx = s->m_slots++;
	}
	struct swim_member *m = &s->m[idx];
	memset(m, 0, sizeof(*m));
	m->q_next = m->q_prev = m->d_next = m->d_prev = NONE;
	m->susp = NONE;
	memcpy(m->id, u->id, SWIM_ID_BYTES);
	if (meta_set(s, m, u->name, u->addr, u->tags, u->tag_count) != 0) {
		m->q_next = s->free_head;
		s->free_head = idx;
		return NONE;
	}
	m->capacity = u->capacity;
	m->load = u->load;
	m->proto_version = u->proto_version;
	m->incarnation = u->incarnation;
	m->used = 1;
	m->state = u->state;
	m->state_change_ms = s->now_ms;
	s->count[m->state]++;
	s->member_count++;
	ht_insert(s, idx);
	if (m->state == SWIM_SUSPECT) susp_start(s, idx, u->from);
	if (m->state >= SWIM_DEAD) dead_append(s, idx);
	if (m->state <= SWIM_SUSPECT && idx != s->self) probe_insert(s, idx);
	return idx;
}

static void forget(struct swim *s, uint32_t idx)
{
	struct swim_member *m = &s->m[idx];
	assert(m->used && idx != s->self);
	if (m->queued) q_unlink(s, idx);
	if (m->in_dead_list) dead_unlink(s, idx);
	susp_stop(s, idx);
	ht_remove(s, idx);
	s->count[m->state]--;
	s->member_count--;
	meta_release(s, m);
	m->used = 0;
	m->q_next = s->free_head;
	s->free_head = idx;
	if (s->probe_active && s->probe_target == idx) s->probe_active = 0;
}

/* ---- merging updates (SWIM §4.2, memberlist state.go) ---- */

/* Remote wins: higher incarnation, or equal with higher state rank. */
static int update_wins(uint32_t r_inc, uint8_t r_state, uint32_t l_inc, uint8_t l_state)
{
	return r_inc > l_inc || (r_inc == l_inc && r_state > l_state);
}

static void bump_self(struct swim *s, uint32_t above)
{
	struct swim_member *me = &s->m[s->self];
	uint32_t inc = (above > me->incarnation ? above : me->incarnation);
	assert(inc < UINT32_MAX);
	me->incarnation = inc + 1;
	q_push(s, s->self);
}

static void refute_direct(struct swim *s, const uint8_t *accuser);

/* An update about ourselves: refute anything that is not our current self
 * (SWIM §4.2: bump the incarnation and gossip alive; Lifeguard §3: a refutation
 * means others had trouble reaching us, so LHM + 1). */
static void apply_self(struct swim *s, const struct swim_update *u)
{
	struct swim_member *me = &s->m[s->self];
	if (s->left) return; /* we are leaving: nothing to defend */
	if (u->state == SWIM_ALIVE) {
		/* a previous life of ours with a higher incarnation (lost on restart) */
		if (u->incarnation > me->incarnation) bump_self(s, u->incarnation);
		return;
	}
	if (u->incarnation >= me->incarnation) {
		bump_self(s, u->incarnation);
		lhm_apply(s, +1);
		s->st.refuted++;
	}
	/* The gossip of our refutation may never reach the one who accused
	 * us (its retransmit budget is spent among the others at 10% loss),
	 * and that one alone then declares us dead when its timer ends. So the
	 * accuser is told directly, now and whenever its (stale) accusation
	 * comes round again. */
	refute_direct(s, u->from);
	if (s->msg_sender && !id_eq(s->msg_sender, u->from)) refute_direct(s, s->msg_sender);
}

#define APPLY_GOSSIP 1    /* queue what changed for dissemination */
#define APPLY_PUSH_PULL 2 /* from a full-state exchange */

static void apply_update(struct swim *s, const struct swim_update *u, int flags)
{
	uint32_t idx = ht_find(s, u->id);
	if (idx == s->self) {
		apply_self(s, u);
		return;
	}
	uint8_t state = u->state;
	/* memberlist mergeState: a remote `dead` is only a suspicion here */
	if ((flags & APPLY_PUSH_PULL) && state == SWIM_DEAD) state = SWIM_SUSPECT;
	if (idx == NONE) {
		/* only an alive update introduces a member (memberlist aliveNode) */
		if (state != SWIM_ALIVE) return;
		idx = member_add(s, u);
		if (idx == NONE) {
			s->st.members_refused++;
			return;
		}
		emit(s, SWIM_EV_JOIN, idx, SWIM_ALIVE);
		if (flags & APPLY_GOSSIP) q_push(s, idx);
		return;
	}
	struct swim_member *m = &s->m[idx];
	if (state == SWIM_SUSPECT && m->state == SWIM_SUSPECT && u->incarnation == m->incarnation) {
		if (susp_confirm(s, idx, u->from) && (flags & APPLY_GOSSIP)) q_push(s, idx);
		return;
	}
	if (!update_wins(u->incarnation, state, m->incarnation, m->state)) return;
	uint8_t old = m->state;
	m->incarnation = u->incarnation;
	if (state == SWIM_ALIVE && meta_from_update(s, m, u) != 0) {
		/* no memory for the new strings: keep the old ones, state still advances */
	}
	if (state != old) {
		if (state == SWIM_SUSPECT) s->st.suspected++;
		if (state == SWIM_DEAD) s->st.declared_dead++;
		set_state(s, idx, state, u->from);
		emit(s, SWIM_EV_STATE, idx, old);
	} else {
		emit(s, SWIM_EV_META, idx, old);
	}
	if (flags & APPLY_GOSSIP) q_push(s, idx);
}

/* Our own view says: this member is `state` (suspect after a failed probe,
 * dead after the suspicion timeout). */
static void declare(struct swim *s, uint32_t idx, uint8_t state)
{
	struct swim_update u;
	fill_update(s, idx, &u);
	u.state = state;
	memcpy(u.from, s->m[s->self].id, SWIM_ID_BYTES);
	apply_update(s, &u, APPLY_GOSSIP);
}

/* ---- sending ---- */

static struct swim_msg *msg_begin(struct swim *s, uint8_t type, uint32_t seq)
{
	struct swim_msg *o = &s->out;
	o->type = type;
	o->proto_version = s->cfg.proto_version;
	o->seq = seq;
	memcpy(o->from, s->m[s->self].id, SWIM_ID_BYTES);
	o->from_addr = s->m[s->self].addr;
	memset(o->target, 0, SWIM_ID_BYTES);
	o->target_addr = NULL;
	o->join = 0;
	o->update_count = 0;
	o->state_count = 0;
	o->states = NULL;
	return o;
}

/* Piggybacks up to piggyback_max queued updates, least transmitted first
 * (memberlist TransmitLimitedQueue). `first` (or NONE) goes first when queued:
 * the Lifeguard buddy system tells a suspect member about its suspicion.
 * Taken entries are put back one bucket up only after the scan, so one
 * message never carries the same update twice. */
static void piggyback(struct swim *s, struct swim_msg *o, uint32_t first)
{
	uint32_t limit = swim_retransmit_limit(s), max = s->cfg.piggyback_max;
	uint32_t taken[SWIM_PIGGYBACK_MAX], n = 0;
	assert(max <= SWIM_PIGGYBACK_MAX && o->update_count == 0);
	int buddy_extra = 0;
	if (first != NONE && s->m[first].queued) {
		taken[n++] = first;
		q_unlink(s, first);
	} else if (first != NONE && s->m[first].state == SWIM_SUSPECT && max > 0) {
		/* memberlist builds a fresh suspect message for every ping to a
		 * suspect member: its retransmit budget may be spent before the
		 * gossip reached it (10% loss), and a member that never hears
		 * its suspicion cannot refute it. Not queued again. */
		fill_update(s, first, &o->updates[o->update_count++]);
		buddy_extra = 1;
	}
	for (uint32_t b = 0; b < s->q_buckets && n + buddy_extra < max; b++) {
		while (s->q_head[b] != NONE && n + buddy_extra < max) {
			uint32_t idx = s->q_head[b];
			q_unlink(s, idx);
			if (b < limit) taken[n++] = idx; /* else: the limit shrank with the cluster, spent */
		}
	}
	for (uint32_t i = 0; i < n; i++) {
		fill_update(s, taken[i], &o->updates[o->update_count++]);
		uint32_t t = s->m[taken[i]].transmits + 1u;
		if (t < limit) q_link(s, taken[i], t, 0);
	}
}

static void out_send(struct swim *s, const char *addr, struct swim_msg *o)
{
	assert(o->type < SWIM_MSG_TYPE_COUNT);
	s->st.sent[o->type]++;
	s->fx.send(s->fx.ctx, addr, o);
}

/* Sends our current alive update to accuser, first in a ping (its ack is
 * ignored: no probe waits for that seq), at most once a period per accuser. */
static void refute_direct(struct swim *s, const uint8_t *accuser)
{
	if (id_is_zero(accuser)) return;
	uint32_t a = ht_find(s, accuser);
	if (a == NONE || a == s->self) return;
	if (s->m[a].state != SWIM_ALIVE && s->m[a].state != SWIM_SUSPECT) return;
	uint32_t slot = SWIM_TOLD_MAX;
	for (uint32_t i = 0; i < SWIM_TOLD_MAX; i++) {
		if (!id_eq(s->told[i].id, accuser)) continue;
		if (s->now_ms < s->told[i].at_ms + s->cfg.period_ms) return;
		slot = i;
		break;
	}
	if (slot == SWIM_TOLD_MAX) {
		slot = s->told_next;
		s->told_next = (s->told_next + 1) % SWIM_TOLD_MAX;
		memcpy(s->told[slot].id, accuser, SWIM_ID_BYTES);
	}
	s->told[slot].at_ms = s->now_ms;
	struct swim_msg *o = msg_begin(s, SWIM_MSG_PING, ++s->seq);
	memcpy(o->target, s->m[a].id, SWIM_ID_BYTES);
	if (s->cfg.piggyback_max > 0) fill_update(s, s->self, &o->updates[o->update_count++]);
	char addr[SWIM_ADDR_BYTES_MAX];
	snprintf(addr, sizeof addr, "%s", s->m[a].addr);
	out_send(s, addr, o);
}

static void send_push_pull(struct swim *s, const char *addr, uint8_t type, int join)
{
	if (s->pp_cap < s->member_count) {
		uint32_t cap = s->member_count;
		struct swim_update *n = realloc(s->pp_buf, (size_t)cap * sizeof(*n));
		if (!n) return; /* no memory: skip this exchange */
		s->pp_buf = n;
		s->pp_cap = cap;
	}
	uint32_t n = 0;
	for (uint32_t i = 0; i < s->m_slots; i++)
		if (s->m[i].used) fill_update(s, i, &s->pp_buf[n++]);
	assert(n == s->member_count);
	struct swim_msg *o = msg_begin(s, type, 0);
	o->join = (uint8_t)join;
	o->states = s->pp_buf;
	o->state_count = n;
	s->st.push_pulls++;
	out_send(s, addr, o);
	/* push-pull is rare (every M periods): do not keep N entries per node around */
	free(s->pp_buf);
	s->pp_buf = NULL;
	s->pp_cap = 0;
}

/* ---- random choices ---- */

/* A random used member in a state set by mask (1 << state), not self and
 * not in `skip`. Samples slots, then falls back to a scan from a random
 * start so a match is always found when one exists. */
static uint32_t random_member(struct swim *s, unsigned mask, const uint32_t *skip, uint32_t skip_count)
{
	if (s->m_slots == 0) return NONE;
	for (int pass = 0; pass < 2; pass++) {
		uint32_t tries = pass == 0 ? 32 : s->m_slots;
		uint32_t start = rand_below(s, s->m_slots);
		for (uint32_t t = 0; t < tries; t++) {
			uint32_t i = pass == 0 ? rand_below(s, s->m_slots) : (start + t) % s->m_slots;
			const struct swim_member *m = &s->m[i];
			if (!m->used || i == s->self || !(mask & (1u << m->state))) continue;
			int skipped = 0;
			for (uint32_t k = 0; k < skip_count; k++) skipped |= skip[k] == i;
			if (!skipped) return i;
		}
	}
	return NONE;
}

/* ---- the protocol period (SWIM §4.1, Lifeguard §3) ---- */

static uint32_t probe_next_target(struct swim *s)
{
	for (int round = 0; round < 2; round++) {
		while (s->probe_pos < s->probe_len) {
			uint32_t idx = s->probe[s->probe_pos++];
			const struct swim_member *m = &s->m[idx];
			if (m->used && idx != s->self && m->state <= SWIM_SUSPECT) return idx;
		}
		/* SWIM §4.3: a new round over a fresh random permutation */
		s->probe_len = 0;
		s->probe_pos = 0;
		for (uint32_t i = 0; i < s->m_slots; i++)
			if (s->m[i].used && i != s->self && s->m[i].state <= SWIM_SUSPECT) s->probe[s->probe_len++] = i;
		for (uint32_t i = s->probe_len; i > 1; i--) {
			uint32_t j = rand_below(s, i);
			uint32_t t = s->probe[i - 1];
			s->probe[i - 1] = s->probe[j];
			s->probe[j] = t;
		}
	}
	return NONE;
}

static void probe_start(struct swim *s)
{
	uint64_t scale = s->lhm + 1ull; /* Lifeguard §3: timeouts and period scale by LHM+1 */
	s->next_probe_ms = s->now_ms + s->cfg.period_ms * scale;
	uint32_t idx = probe_next_target(s);
	if (idx == NONE) return;
	s->probe_active = 1;
	s->probe_indirect = 0;
	s->probe_target = idx;
	s->probe_seq = ++s->seq;
	s->probe_timeout_at_ms = s->now_ms + s->cfg.probe_timeout_ms * scale;
	s->probe_end_ms = s->next_probe_ms;
	s->nacks_expected = s->nacks = 0;
	s->st.probes++;
	struct swim_msg *o = msg_begin(s, SWIM_MSG_PING, s->probe_seq);
	memcpy(o->target, s->m[idx].id, SWIM_ID_BYTES);
	piggyback(s, o, idx);
	out_send(s, s->m[idx].addr, o);
}

/* SWIM §4.1: no ack within the timeout, ask k other members to probe. */
static void probe_indirect(struct swim *s)
{
	s->probe_indirect = 1;
	uint32_t picked[64];
	uint32_t k = s->cfg.indirect_count, n = 0;
	picked[n++] = s->probe_target;
	const struct swim_member *t = &s->m[s->probe_target];
	char target_addr[SWIM_ADDR_BYTES_MAX];
	uint8_t target_id[SWIM_ID_BYTES];
	snprintf(target_addr, sizeof target_addr, "%s", t->addr);
	memcpy(target_id, t->id, SWIM_ID_BYTES);
	for (uint32_t i = 0; i < k; i++) {
		uint32_t r = random_member(s, 1u << SWIM_ALIVE, picked, n);
		if (r == NONE) break;
		picked[n++] = r;
		struct swim_msg *o = msg_begin(s, SWIM_MSG_PING_REQ, s->probe_seq);
		memcpy(o->target, target_id, SWIM_ID_BYTES);
		o->target_addr = target_addr;
		piggyback(s, o, NONE);
		out_send(s, s->m[r].addr, o);
		if (s->cfg.nack) s->nacks_expected++;
	}
	/* memberlist also re-probes the target directly (its TCP fallback ping)
	 * alongside the relays: one more message, and a lost ping or ack alone
	 * no longer costs a suspicion. The same seq, so either answer counts. */
	struct swim_msg *o = msg_begin(s, SWIM_MSG_PING, s->probe_seq);
	memcpy(o->target, target_id, SWIM_ID_BYTES);
	piggyback(s, o, s->probe_target);
	out_send(s, target_addr, o);
}

static void probe_fail(struct swim *s)
{
	s->probe_active = 0;
	s->st.probes_failed++;
	/* Lifeguard §3 (memberlist awareness): with relays that nack, only the
	 * missing nacks count against us; without, the failed probe does. */
	if (s->nacks_expected > 0) {
		if (s->nacks < s->nacks_expected) {
			lhm_apply(s, (int)(s->nacks_expected - s->nacks));
			s->st.nacks_missed += s->nacks_expected - s->nacks;
		}
	} else {
		lhm_apply(s, +1);
	}
	struct swim_member *m = &s->m[s->probe_target];
	if (m->used && m->state <= SWIM_SUSPECT) declare(s, s->probe_target, SWIM_SUSPECT);
}

/* ---- lifecycle ---- */

void swim_config_defaults(struct swim_config *c)
{
	memset(c, 0, sizeof(*c));
	c->proto_version = SWIM_PROTO_VERSION;
	c->period_ms = 1000;
	c->probe_timeout_ms = 500;
	c->indirect_count = 3;
	c->retransmit_mult = 4;
	c->suspicion_alpha = 4;
	c->suspicion_beta = 6;
	c->suspicion_k = 2; /* memberlist: SuspicionMult - 2 */
	c->lhm_max = 8;
	c->push_pull_periods = 30;
	c->push_pull_scale = 1;
	c->seed_push_pull_every = 8;
	c->join_backoff_ms = 0; /* = period_ms */
	c->join_backoff_max_ms = 30000;
	c->reap_after_ms = 30000;
	c->gossip_fanout = 3;
	c->piggyback_max = 24;
	c->members_max = 16384;
	c->updates_max = 0; /* = members_max */
	c->relays_max = 64;
	c->nack = 1;
}

static int tags_valid(const char *const *tags, uint32_t tag_count)
{
	if (tag_count > SWIM_TAGS_MAX || (tag_count && !tags)) return 0;
	for (uint32_t i = 0; i < tag_count; i++)
		if (!tags[i] || strnlen(tags[i], SWIM_TAG_BYTES_MAX) >= SWIM_TAG_BYTES_MAX) return 0;
	return 1;
}

static int str_ok(const char *p, size_t max) { return !p || strnlen(p, max) < max; }

int swim_create(struct swim **out, const struct swim_config *cfg, const struct swim_effects *fx,
                uint64_t now_ms, char *err, size_t err_bytes)
{
	const char *why = NULL;
	*out = NULL;
	if (!fx || !fx->send) why = "no send effect";
	else if (id_is_zero(cfg->id)) why = "id is all zero";
	else if (!cfg->addr || !cfg->addr[0] || !str_ok(cfg->addr, SWIM_ADDR_BYTES_MAX)) why = "bad address";
	else if (!str_ok(cfg->name, SWIM_NAME_BYTES_MAX)) why = "name too long";
	else if (!tags_valid(cfg->tags, cfg->tag_count)) why = "bad tags";
	else if (cfg->period_ms == 0 || cfg->probe_timeout_ms == 0 || cfg->probe_timeout_ms >= cfg->period_ms)
		why = "need 0 < probe_timeout_ms < period_ms";
	else if (cfg->indirect_count > 16) why = "indirect_count over 16";
	else if (cfg->retransmit_mult < 1 || cfg->retransmit_mult > 32) why = "retransmit_mult not in 1..32";
	else if (cfg->suspicion_alpha < 1 || cfg->suspicion_beta < 1) why = "suspicion alpha/beta below 1";
	else if (cfg->suspicion_k > SWIM_SUSPICION_K_MAX) why = "suspicion_k too large";
	else if (cfg->lhm_max > SWIM_LHM_MAX) why = "lhm_max too large";
	else if (cfg->piggyback_max < 1 || cfg->piggyback_max > SWIM_PIGGYBACK_MAX) why = "bad piggyback_max";
	else if (cfg->members_max < 1 || cfg->members_max > (1u << 24)) why = "bad members_max";
	else if (cfg->relays_max < 1 || cfg->relays_max > 4096) why = "bad relays_max";
	else if (cfg->incarnation > INC_MAX) why = "incarnation too large";
	else if (cfg->interner && (!cfg->interner->get || !cfg->interner->put)) why = "interner without get/put";
	if (why) {
		if (err && err_bytes) snprintf(err, err_bytes, "swim: %s", why);
		return ERR_INVALID;
	}
	struct swim *s = calloc(1, sizeof(*s));
	if (!s) return ERR_NOMEM;
	s->cfg = *cfg;
	if (!s->cfg.join_backoff_ms) s->cfg.join_backoff_ms = s->cfg.period_ms;
	if (!s->cfg.updates_max) s->cfg.updates_max = s->cfg.members_max;
	if (!s->cfg.proto_version) s->cfg.proto_version = SWIM_PROTO_VERSION;
	s->cfg.name = s->cfg.addr = NULL;
	s->cfg.tags = NULL;
	s->fx = *fx;
	rng_seed(&s->rng, cfg->seed);
	s->hash_seed = rng_next(&s->rng);
	s->now_ms = now_ms;
	s->free_head = s->dead_head = s->dead_tail = NONE;
	s->relay_min_ms = UINT64_MAX;
	s->q_buckets = s->cfg.retransmit_mult * ceil_log10((uint64_t)s->cfg.members_max + 1) + 1;
	s->q_head = malloc(s->q_buckets * sizeof(uint32_t));
	s->q_tail = malloc(s->q_buckets * sizeof(uint32_t));
	s->relays = calloc(s->cfg.relays_max, sizeof(*s->relays));
	if (!s->q_head || !s->q_tail || !s->relays) goto nomem;
	for (uint32_t b = 0; b < s->q_buckets; b++) s->q_head[b] = s->q_tail[b] = NONE;

	struct swim_update me = {0};
	memcpy(me.id, cfg->id, SWIM_ID_BYTES);
	me.incarnation = cfg->incarnation;
	me.state = SWIM_ALIVE;
	me.tag_count = cfg->tag_count;
	me.proto_version = s->cfg.proto_version;
	me.capacity = cfg->capacity;
	me.load = cfg->load;
	me.name = cfg->name;
	me.addr = cfg->addr;
	me.tags = cfg->tags;
	s->self = NONE;
	s->self = member_add(s, &me);
	if (s->self == NONE) goto nomem;
	assert(s->self == 0);
	s->probe_len = 0; /* self was never inserted; keep the list empty */
	q_push(s, s->self);
	/* first probe at a random point of the first period: nodes started
	 * together do not probe in lockstep */
	s->next_probe_ms = now_ms + rand_below(s, s->cfg.period_ms);
	if (s->cfg.push_pull_periods) {
		/* desynchronise the push-pull rounds of nodes started together */
		uint64_t every = (uint64_t)s->cfg.push_pull_periods * s->cfg.period_ms;
		s->next_pp_ms = now_ms + every / 2 + rand_below(s, (uint32_t)(every > UINT32_MAX ? UINT32_MAX : every));
	}
	*out = s;
	return 0;
nomem:
	swim_destroy(s);
	return ERR_NOMEM;
}

void swim_destroy(struct swim *s)
{
	if (!s) return;
	for (uint32_t i = 0; i < s->m_slots; i++)
		if (s->m[i].used) meta_release(s, &s->m[i]);
	free(s->m);
	free(s->ht);
	free(s->probe);
	free(s->q_head);
	free(s->q_tail);
	free(s->susp);
	free(s->relays);
	free(s->pp_buf);
	free(s);
}

int swim_join(struct swim *s, uint64_t now_ms, const char *const *seed_addrs, uint32_t seed_count)
{
	advance_now(s, now_ms);
	if (seed_count > SWIM_SEEDS_MAX || (seed_count && !seed_addrs)) return ERR_INVALID;
	for (uint32_t i = 0; i < seed_count; i++)
		if (!seed_addrs[i] || !seed_addrs[i][0] || !str_ok(seed_addrs[i], SWIM_ADDR_BYTES_MAX))
			return ERR_INVALID;
	s->seed_count = 0;
	for (uint32_t i = 0; i < seed_count; i++) {
		if (!strcmp(seed_addrs[i], s->m[s->self].addr)) continue; /* ourselves */
		snprintf(s->seeds[s->seed_count++], SWIM_ADDR_BYTES_MAX, "%s", seed_addrs[i]);
	}
	if (s->seed_count == 0) return 0; /* a one-member cluster */
	s->joining = 1;
	s->join_next_ms = s->now_ms;
	s->join_backoff_ms = s->cfg.join_backoff_ms;
	swim_tick(s, s->now_ms);
	return 0;
}

int swim_joining(const struct swim *s) { return s->joining; }

/* ---- incoming messages ---- */

static int update_valid(const struct swim_update *u)
{
	if (id_is_zero(u->id) || u->state > SWIM_LEFT || u->incarnation > INC_MAX) return 0;
	if (!str_ok(u->name, SWIM_NAME_BYTES_MAX) || !str_ok(u->addr, SWIM_ADDR_BYTES_MAX)) return 0;
	if (!tags_valid(u->tags, u->tag_count)) return 0;
	if (u->state == SWIM_ALIVE && (!u->addr || !u->addr[0])) return 0; /* unreachable member */
	return 1;
}

static int msg_valid(const struct swim *s, const struct swim_msg *m)
{
	if (m->type < SWIM_MSG_PING || m->type >= SWIM_MSG_TYPE_COUNT) return 0;
	if (id_is_zero(m->from) || !m->from_addr || !m->from_addr[0] || !str_ok(m->from_addr, SWIM_ADDR_BYTES_MAX))
		return 0;
	if (m->update_count > SWIM_PIGGYBACK_MAX) return 0;
	for (uint32_t i = 0; i < m->update_count; i++)
		if (!update_valid(&m->updates[i])) return 0;
	if (m->type == SWIM_MSG_PING_REQ &&
	    (id_is_zero(m->target) || !m->target_addr || !m->target_addr[0] ||
	     !str_ok(m->target_addr, SWIM_ADDR_BYTES_MAX)))
		return 0;
	int pp = m->type == SWIM_MSG_PUSH_PULL || m->type == SWIM_MSG_PUSH_PULL_REPLY;
	if (!pp && m->state_count) return 0;
	if (m->state_count > s->cfg.members_max || (m->state_count && !m->states)) return 0;
	for (uint32_t i = 0; i < m->state_count; i++)
		if (!update_valid(&m->states[i])) return 0;
	return 1;
}

static struct relay *relay_find(struct swim *s, uint32_t seq)
{
	for (uint32_t i = 0; i < s->cfg.relays_max; i++)
		if (s->relays[i].used && s->relays[i].seq == seq) return &s->relays[i];
	return NULL;
}

static void on_ping_req(struct swim *s, const struct swim_msg *m)
{
	const uint8_t *self_id = s->m[s->self].id;
	if (id_eq(m->target, self_id)) {
		/* asked to probe ourselves: we are evidently alive */
		struct swim_msg *o = msg_begin(s, SWIM_MSG_ACK, m->seq);
		memcpy(o->target, self_id, SWIM_ID_BYTES);
		piggyback(s, o, NONE);
		out_send(s, m->from_addr, o);
		return;
	}
	struct relay *r = NULL;
	for (uint32_t i = 0; i < s->cfg.relays_max && !r; i++)
		if (!s->relays[i].used) r = &s->relays[i];
	if (!r) {
		s->st.relays_refused++;
		return;
	}
	r->used = 1;
	r->seq = ++s->seq;
	r->origin_seq = m->seq;
	memcpy(r->origin, m->from, SWIM_ID_BYTES);
	snprintf(r->origin_addr, sizeof r->origin_addr, "%s", m->from_addr);
	/* nack early enough to reach the origin before its period ends
	 * (memberlist sends it at 80% of the probe timeout) */
	r->deadline_ms = s->now_ms + (uint64_t)s->cfg.probe_timeout_ms * 4 / 5;
	if (r->deadline_ms < s->relay_min_ms) s->relay_min_ms = r->deadline_ms;
	struct swim_msg *o = msg_begin(s, SWIM_MSG_PING, r->seq);
	memcpy(o->target, m->target, SWIM_ID_BYTES);
	uint32_t t = ht_find(s, m->target);
	piggyback(s, o, t);
	out_send(s, m->target_addr, o);
}

static void on_ack(struct swim *s, const struct swim_msg *m)
{
	if (s->probe_active && m->seq == s->probe_seq) {
		s->probe_active = 0;
		if (s->probe_indirect) s->st.probes_indirect_ok++;
		lhm_apply(s, -1); /* Lifeguard §3: a successful probe */
		return;
	}
	struct relay *r = relay_find(s, m->seq);
	if (!r) return; /* late or duplicate */
	struct swim_msg *o = msg_begin(s, SWIM_MSG_ACK, r->origin_seq);
	memcpy(o->target, m->from, SWIM_ID_BYTES);
	piggyback(s, o, NONE);
	char addr[SWIM_ADDR_BYTES_MAX];
	memcpy(addr, r->origin_addr, sizeof addr);
	r->used = 0;
	out_send(s, addr, o);
}

int swim_on_message(struct swim *s, uint64_t now_ms, const struct swim_msg *m)
{
	advance_now(s, now_ms);
	if (!m || !msg_valid(s, m)) {
		s->st.invalid++;
		return ERR_PROTOCOL;
	}
	s->st.received[m->type]++;
	uint8_t self_id[SWIM_ID_BYTES]; /* a copy: merging may grow (move) the member array */
	memcpy(self_id, s->m[s->self].id, SWIM_ID_BYTES);
	if (id_eq(m->from, self_id)) return 0; /* our own message looped back (e.g. a seed is us) */
	s->msg_sender = m->from;
	for (uint32_t i = 0; i < m->update_count; i++) apply_update(s, &m->updates[i], APPLY_GOSSIP);
	s->msg_sender = NULL;
	switch (m->type) {
	case SWIM_MSG_PING: {
		/* a ping meant for a previous owner of our address is not ours to ack */
		if (!id_is_zero(m->target) && !id_eq(m->target, self_id)) return 0;
		struct swim_msg *o = msg_begin(s, SWIM_MSG_ACK, m->seq);
		memcpy(o->target, m->from, SWIM_ID_BYTES);
		piggyback(s, o, ht_find(s, m->from));
		out_send(s, m->from_addr, o);
		break;
	}
	case SWIM_MSG_ACK:
		on_ack(s, m);
		break;
	case SWIM_MSG_PING_REQ:
		on_ping_req(s, m);
		break;
	case SWIM_MSG_NACK:
		if (s->probe_active && m->seq == s->probe_seq) s->nacks++;
		break;
	case SWIM_MSG_PUSH_PULL:
	case SWIM_MSG_PUSH_PULL_REPLY:
		/* merge first, so a refutation of what they think of us rides in the reply */
		s->msg_sender = m->from;
		for (uint32_t i = 0; i < m->state_count; i++)
			apply_update(s, &m->states[i], APPLY_GOSSIP | APPLY_PUSH_PULL);
		s->msg_sender = NULL;
		if (m->type == SWIM_MSG_PUSH_PULL) {
			send_push_pull(s, m->from_addr, SWIM_MSG_PUSH_PULL_REPLY, 0);
		} else if (s->joining) {
			s->joining = 0; /* a seed answered */
		}
		break;
	case SWIM_MSG_GOSSIP:
		break;
	default:
		assert(0);
	}
	return 0;
}

/* ---- time ---- */

static void tick_relays(struct swim *s)
{
	if (s->relay_min_ms > s->now_ms) return;
	uint64_t next = UINT64_MAX;
	for (uint32_t i = 0; i < s->cfg.relays_max; i++) {
		struct relay *r = &s->relays[i];
		if (!r->used) continue;
		if (r->deadline_ms > s->now_ms) {
			if (r->deadline_ms < next) next = r->deadline_ms;
			continue;
		}
		r->used = 0;
		if (!s->cfg.nack) continue;
		struct swim_msg *o = msg_begin(s, SWIM_MSG_NACK, r->origin_seq);
		piggyback(s, o, NONE);
		out_send(s, r->origin_addr, o);
	}
	s->relay_min_ms = next;
}

/* A suspicion's next moment: a check near its end, or its deadline. Two
 * checks, one and two periods before the deadline: a direct ping to the
 * suspect carrying its suspicion (the buddy system), so a member that
 * refuted long ago but whose refutation never reached us (gossip is
 * probabilistic; at 10% loss an epidemic now and then misses a node) tells
 * us directly (refute_direct) before we declare it dead. A dead member
 * answers nothing and dies on time. */
#define SWIM_SUSP_CHECKS 2u
static uint64_t susp_due(const struct swim *s, const struct susp *x)
{
	if (x->checks >= SWIM_SUSP_CHECKS) return x->deadline_ms;
	uint64_t back = (uint64_t)(SWIM_SUSP_CHECKS - x->checks) * s->cfg.period_ms;
	uint64_t at = x->deadline_ms > x->start_ms + back ? x->deadline_ms - back : x->start_ms;
	return at < x->deadline_ms ? at : x->deadline_ms;
}

static void susp_check(struct swim *s, uint32_t idx)
{
	struct swim_msg *o = msg_begin(s, SWIM_MSG_PING, ++s->seq);
	memcpy(o->target, s->m[idx].id, SWIM_ID_BYTES);
	piggyback(s, o, idx);
	char addr[SWIM_ADDR_BYTES_MAX];
	snprintf(addr, sizeof addr, "%s", s->m[idx].addr);
	out_send(s, addr, o);
}

static void tick_suspicions(struct swim *s)
{
	if (s->susp_count == 0 || s->susp_min_ms > s->now_ms) return;
	uint64_t next = UINT64_MAX;
	uint32_t i = 0;
	while (i < s->susp_count) {
		struct susp *x = &s->susp[i];
		if (x->deadline_ms <= s->now_ms && x->checks > 0) {
			/* SWIM §4.2: the suspicion timed out unrefuted */
			declare(s, x->member, SWIM_DEAD); /* removes record i */
			continue;
		}
		if (x->deadline_ms <= s->now_ms) {
			/* the deadline came at once (confirmations): check once, one period more */
			susp_check(s, x->member);
			x = &s->susp[i];
			x->checks = SWIM_SUSP_CHECKS;
			x->deadline_ms = s->now_ms + s->cfg.period_ms;
		} else if (susp_due(s, x) <= s->now_ms) {
			susp_check(s, x->member);
			x = &s->susp[i];
			x->checks++;
		}
		uint64_t due = susp_due(s, x);
		if (due < next) next = due;
		i++;
	}
	s->susp_min_ms = next;
}

static void tick_push_pull(struct swim *s)
{
	if (!s->cfg.push_pull_periods || s->now_ms < s->next_pp_ms) return;
	uint64_t every = (uint64_t)s->cfg.push_pull_periods * s->cfg.period_ms;
	if (s->cfg.push_pull_scale) {
		/* memberlist pushPullScale: x (ceil(log2(N) - log2(32)) + 1) above 32 members */
		uint32_t n = live_count(s), mult = 1;
		while (n > 32u << (mult - 1)) mult++;
		every *= mult;
	}
	s->next_pp_ms = s->now_ms + every;
	s->pp_rounds++;
	if (s->seed_count && s->cfg.seed_push_pull_every && s->pp_rounds % s->cfg.seed_push_pull_every == 0) {
		send_push_pull(s, s->seeds[rand_below(s, s->seed_count)], SWIM_MSG_PUSH_PULL, 0);
		return;
	}
	/* dead (not yet reaped) members too: that is how views heal after a partition */
	uint32_t idx = random_member(s, (1u << SWIM_ALIVE) | (1u << SWIM_SUSPECT) | (1u << SWIM_DEAD), NULL, 0);
	if (idx == NONE) return;
	char addr[SWIM_ADDR_BYTES_MAX];
	snprintf(addr, sizeof addr, "%s", s->m[idx].addr);
	send_push_pull(s, addr, SWIM_MSG_PUSH_PULL, 0);
}

static void tick_join(struct swim *s)
{
	/* lost every other member (long partition, reaped): go back to the seeds */
	if (!s->joining && s->seed_count && live_count(s) <= 1) {
		s->joining = 1;
		s->join_next_ms = s->now_ms;
		s->join_backoff_ms = s->cfg.join_backoff_ms;
	}
	if (!s->joining || s->now_ms < s->join_next_ms) return;
	s->st.join_attempts++;
	for (uint32_t i = 0; i < s->seed_count; i++) send_push_pull(s, s->seeds[i], SWIM_MSG_PUSH_PULL, 1);
	s->join_next_ms = s->now_ms + s->join_backoff_ms;
	uint64_t next = (uint64_t)s->join_backoff_ms * 2;
	s->join_backoff_ms = (uint32_t)(next > s->cfg.join_backoff_max_ms ? s->cfg.join_backoff_max_ms : next);
	if (s->join_backoff_ms == 0) s->join_backoff_ms = 1;
}

static void tick_reap(struct swim *s)
{
	while (s->dead_head != NONE) {
		uint32_t idx = s->dead_head;
		if (s->m[idx].state_change_ms + s->cfg.reap_after_ms > s->now_ms) break;
		emit(s, SWIM_EV_REAP, idx, s->m[idx].state);
		forget(s, idx);
	}
}

static void tick_leave(struct swim *s)
{
	if (s->now_ms < s->next_leave_gossip_ms || !s->m[s->self].queued) return;
	s->next_leave_gossip_ms = s->now_ms + s->cfg.period_ms;
	uint32_t picked[64], n = 0;
	uint32_t fan = s->cfg.gossip_fanout < 64 ? s->cfg.gossip_fanout : 64;
	for (uint32_t i = 0; i < fan && s->m[s->self].queued; i++) {
		uint32_t r = random_member(s, (1u << SWIM_ALIVE) | (1u << SWIM_SUSPECT), picked, n);
		if (r == NONE) {
			/* nobody to tell: the update is spent */
			q_unlink(s, s->self);
			break;
		}
		picked[n++] = r;
		struct swim_msg *o = msg_begin(s, SWIM_MSG_GOSSIP, 0);
		piggyback(s, o, s->self);
		out_send(s, s->m[r].addr, o);
	}
}

void swim_tick(struct swim *s, uint64_t now_ms)
{
	advance_now(s, now_ms);
	tick_relays(s);
	tick_suspicions(s);
	if (s->left) {
		tick_leave(s);
	} else {
		if (s->probe_active && !s->probe_indirect && s->now_ms >= s->probe_timeout_at_ms) probe_indirect(s);
		if (s->probe_active && s->now_ms >= s->probe_end_ms) probe_fail(s);
		if (!s->probe_active && s->now_ms >= s->next_probe_ms) probe_start(s);
		tick_push_pull(s);
		tick_join(s);
	}
	tick_reap(s);
}

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

uint64_t swim_next_deadline_ms(const struct swim *s)
{
	uint64_t d = UINT64_MAX;
	if (s->left) {
		if (s->m[s->self].queued) d = s->next_leave_gossip_ms;
	} else {
		d = s->next_probe_ms;
		if (s->probe_active) d = min_u64(d, s->probe_indirect ? s->probe_end_ms : s->probe_timeout_at_ms);
		if (s->cfg.push_pull_periods) d = min_u64(d, s->next_pp_ms);
		if (s->joining) d = min_u64(d, s->join_next_ms);
	}
	if (s->susp_count) d = min_u64(d, s->susp_min_ms);
	d = min_u64(d, s->relay_min_ms);
	if (s->dead_head != NONE) d = min_u64(d, s->m[s->dead_head].state_change_ms + s->cfg.reap_after_ms);
	return d;
}

/* ---- leave, metadata, bootstrap ---- */

int swim_leave(struct swim *s, uint64_t now_ms)
{
	advance_now(s, now_ms);
	if (s->left) return 0;
	struct swim_member *me = &s->m[s->self];
	/* memberlist Leave: a `left` with a bumped incarnation, so it beats any alive we sent */
	assert(me->incarnation < UINT32_MAX);
	me->incarnation++;
	set_state(s, s->self, SWIM_LEFT, me->id);
	dead_unlink(s, s->self); /* we never reap ourselves */
	s->left = 1;
	s->joining = 0;
	s->probe_active = 0;
	q_push(s, s->self);
	/* Tell every member directly, once, besides the epidemic below: a
	 * member that misses the gossip (it is spread by only
	 * lambda*log10(N+1) sends per node, and the network loses some) would
	 * otherwise suspect us and declare us dead before `left` reaches it.
	 * One message per member, once; memberlist's Leave likewise waits for
	 * its broadcast to go out. The direct sends do not count against the
	 * update's retransmit limit. */
	struct swim_update me_now;
	fill_update(s, s->self, &me_now);
	for (uint32_t i = 0; i < s->m_slots; i++) {
		const struct swim_member *m = &s->m[i];
		if (!m->used || i == s->self || (m->state != SWIM_ALIVE && m->state != SWIM_SUSPECT))
			continue;
		struct swim_msg *o = msg_begin(s, SWIM_MSG_GOSSIP, 0);
		o->updates[0] = me_now;
		o->update_count = 1;
		out_send(s, m->addr, o);
	}
	s->next_leave_gossip_ms = s->now_ms;
	tick_leave(s);
	return 0;
}

int swim_leave_done(const struct swim *s) { return s->left && !s->m[s->self].queued; }

int swim_set_meta(struct swim *s, uint64_t now_ms, uint32_t capacity, uint32_t load, const char *const *tags,
                  uint8_t tag_count)
{
	advance_now(s, now_ms);
	if (!tags_valid(tags, tag_count)) return ERR_INVALID;
	struct swim_member *me = &s->m[s->self];
	if (s->left) return ERR_INVALID;
	struct swim_update u;
	fill_update(s, s->self, &u);
	u.capacity = capacity;
	u.load = load;
	u.tags = tags;
	u.tag_count = tag_count;
	int rc = meta_from_update(s, me, &u);
	if (rc) return rc;
	bump_self(s, 0);
	return 0;
}

int swim_add_member(struct swim *s, uint64_t now_ms, const struct swim_update *u)
{
	advance_now(s, now_ms);
	if (!u || !update_valid(u)) return ERR_PROTOCOL;
	uint64_t refused = s->st.members_refused;
	apply_update(s, u, 0);
	return s->st.members_refused != refused ? ERR_FULL : 0;
}

/* ---- accessors ---- */

const uint8_t *swim_self_id(const struct swim *s) { return s->m[s->self].id; }
const struct swim_member *swim_self(const struct swim *s) { return &s->m[s->self]; }
uint32_t swim_self_incarnation(const struct swim *s) { return s->m[s->self].incarnation; }
uint32_t swim_count(const struct swim *s, int state) { return state >= 0 && state <= SWIM_LEFT ? s->count[state] : 0; }
uint32_t swim_member_count(const struct swim *s) { return s->member_count; }
uint32_t swim_lhm(const struct swim *s) { return s->lhm; }
uint32_t swim_queued_updates(const struct swim *s) { return s->q_count; }
const struct swim_stats *swim_stats(const struct swim *s) { return &s->st; }

const struct swim_member *swim_find(const struct swim *s, const uint8_t id[SWIM_ID_BYTES])
{
	uint32_t i = ht_find(s, id);
	return i == NONE ? NULL : &s->m[i];
}

const struct swim_member *swim_next_member(const struct swim *s, uint32_t *cursor)
{
	while (*cursor < s->m_slots) {
		uint32_t i = (*cursor)++;
		if (s->m[i].used) return &s->m[i];
	}
	return NULL;
}

uint32_t swim_pick_two(struct swim *s, int include_self, int (*accept)(void *ctx, const struct swim_member *m),
                       void *ctx, const struct swim_member **a, const struct swim_member **b)
{
	*a = *b = NULL;
	uint32_t got[2], n = 0;
	/* sample first; if that fails, reservoir-sample over all (bounded by m_slots) */
	for (uint32_t t = 0; t < 64 && n < 2 && s->m_slots; t++) {
		uint32_t i = rand_below(s, s->m_slots);
		const struct swim_member *m = &s->m[i];
		if (!m->used || m->state != SWIM_ALIVE || (i == s->self && !include_self)) continue;
		if (n == 1 && got[0] == i) continue;
		if (accept && !accept(ctx, m)) continue;
		got[n++] = i;
	}
	if (n < 2) {
		uint32_t seen = 0;
		n = 0;
		for (uint32_t i = 0; i < s->m_slots; i++) {
			const struct swim_member *m = &s->m[i];
			if (!m->used || m->state != SWIM_ALIVE || (i == s->self && !include_self)) continue;
			if (accept && !accept(ctx, m)) continue;
			seen++;
			if (n < 2) got[n++] = i;
			else {
				uint32_t r = rand_below(s, seen);
				if (r < 2) got[r] = i;
			}
		}
	}
	if (n > 0) *a = &s->m[got[0]];
	if (n > 1) *b = &s->m[got[1]];
	return n;
}
