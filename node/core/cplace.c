/*
 * cplace.c - cache placement (see cplace.h for the hash, the weights, the
 * caps and what they guarantee).
 *
 * The subtle part is the walk in cplace_map_build: its result depends on the
 * partitions before it (the counts), so the order (0 .. P-1), the tie rule
 * (smaller index, i.e. smaller id, first) and the steps must stay exactly as
 * written for all nodes to agree.
 */
#include "core/cplace.h"

#include <assert.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"

/* the fixed SipHash key: all zero (cplace.h says why) */
static const unsigned char hash_key[crypto_shorthash_KEYBYTES];

static uint64_t siphash_le(const void *bytes, size_t len)
{
	unsigned char out[crypto_shorthash_BYTES];
	int rc = crypto_shorthash(out, bytes, (unsigned long long)len, hash_key);
	assert(rc == 0); /* SipHash cannot fail */
	(void)rc;
	uint64_t v = 0;
	for (int i = crypto_shorthash_BYTES - 1; i >= 0; i--)
		v = v << 8 | out[i];
	return v;
}

/* splitmix64's output function (Steele, Lea & Flood 2014; constants from
 * Stafford's "Mix13"): a bijection of 64 bits with full avalanche */
static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

uint16_t cplace_partition(const void *key, size_t len, uint16_t partition_count)
{
	assert(partition_count >= 1);
	return (uint16_t)(siphash_le(key, len) % partition_count);
}

void cplace_params_default(struct cplace_params *params)
{
	params->partition_count = CPLACE_PARTITIONS_DEFAULT;
	params->owner_count = CPLACE_OWNERS_DEFAULT;
	params->load_max_pct = CPLACE_LOAD_PCT_DEFAULT;
}

static int params_valid(const struct cplace_params *params)
{
	if (params->partition_count < 1)
		return 0;
	if (params->owner_count < 1 || params->owner_count > CPLACE_OWNERS_MAX)
		return 0;
	if (params->load_max_pct != 0 &&
	    (params->load_max_pct < CPLACE_LOAD_PCT_MIN || params->load_max_pct > CPLACE_LOAD_PCT_MAX))
		return 0;
	return 1;
}

static int id_cmp(const void *a, const void *b)
{
	return memcmp(a, b, CPLACE_ID_BYTES);
}

/* max(floor(slots * pct / (100 n)), ceil(slots / n) + 1): the most a member
 * may hold, pct% of the mean, but never so tight that the members' spare room
 * falls below one slot each (cap * n >= slots + n), which the greedy walk
 * needs to finish under its caps (cplace.h) */
static uint32_t cap_for(uint64_t slots, uint32_t n, uint32_t pct)
{
	uint64_t roomy = (slots + n - 1) / n + 1;
	uint64_t loose = slots * pct / (100 * (uint64_t)n);
	uint64_t cap = loose > roomy ? loose : roomy;
	assert(cap * n >= slots + n);
	assert(cap <= UINT32_MAX);
	return (uint32_t)cap;
}

/* scratch of one build, one allocation */
struct walk {
	uint32_t n;
	uint64_t *seed;     /* n: s(m) */
	uint64_t *weight;   /* n: w(m, p) for the current p */
	uint32_t *primary;  /* n: primaries so far */
	uint32_t *owned;    /* n: partitions owned so far */
};

/* a ranks above b: greater weight, or equal weight and smaller index */
static int ranks_above(const struct walk *w, uint32_t a, uint32_t b)
{
	return w->weight[a] > w->weight[b] || (w->weight[a] == w->weight[b] && a < b);
}

static int in_set(const uint32_t *set, uint32_t count, uint32_t i)
{
	for (uint32_t k = 0; k < count; k++)
		if (set[k] == i)
			return 1;
	return 0;
}

/* The best-ranked member outside set[0..count) that is under both caps
 * (a cap of 0 means none), or UINT32_MAX. */
static uint32_t best_under(const struct walk *w, const uint32_t *set, uint32_t count,
                           uint32_t cap_primary, uint32_t cap_owned)
{
	uint32_t best = UINT32_MAX;
	for (uint32_t i = 0; i < w->n; i++) {
		if (cap_owned && w->owned[i] >= cap_owned)
			continue;
		if (cap_primary && w->primary[i] >= cap_primary)
			continue;
		if (in_set(set, count, i))
			continue;
		if (best == UINT32_MAX || ranks_above(w, i, best))
			best = i;
	}
	return best;
}

/* Inserts member i into set[0..*count), kept best first, if it ranks among
 * the first `room`. Members come in index order, so a tie keeps the earlier
 * (smaller id) first, as ranks_above says. */
static void keep_best(const struct walk *w, uint32_t *set, uint32_t *count, uint32_t room, uint32_t i)
{
	if (*count == room && !ranks_above(w, i, set[room - 1]))
		return;
	uint32_t k = *count < room ? (*count)++ : room - 1;
	while (k > 0 && ranks_above(w, i, set[k - 1])) {
		set[k] = set[k - 1];
		k--;
	}
	set[k] = i;
}

/* Owners of partition p into out[0..R): the steps of cplace.h. */
static void place_partition(struct cplace_map *m, struct walk *w, uint16_t p, uint16_t *out)
{
	const uint32_t R = m->owner_count;
	const uint64_t px = mix64((uint64_t)p + 1);

	/* 1. the owner set, best first, under cap_owned: one pass that also
	 * computes the weights */
	uint32_t set[CPLACE_OWNERS_MAX];
	uint32_t count = 0;
	for (uint32_t i = 0; i < w->n; i++) {
		w->weight[i] = mix64(w->seed[i] ^ px);
		if (m->cap_owned == 0 || w->owned[i] < m->cap_owned)
			keep_best(w, set, &count, R, i);
	}
	for (; count < R; count++) { /* 4. soft: the best over the cap */
		set[count] = best_under(w, set, count, 0, 0);
		m->overflow_count++;
	}

	/* 2. the primary: the best of the set under cap_primary */
	uint32_t lead = R;
	for (uint32_t k = 0; k < R && lead == R; k++)
		if (m->cap_primary == 0 || w->primary[set[k]] < m->cap_primary)
			lead = k;
	if (lead == R) {
		/* 3. from outside the set, displacing its last member */
		uint32_t pick = best_under(w, set, R, m->cap_primary, m->cap_owned);
		if (pick == UINT32_MAX) {
			lead = 0; /* 4. soft */
			m->overflow_count++;
		} else {
			set[R - 1] = pick;
			lead = R - 1;
			m->displaced_count++;
		}
	}

	out[0] = (uint16_t)set[lead];
	uint32_t k_out = 1;
	for (uint32_t k = 0; k < R; k++)
		if (k != lead)
			out[k_out++] = (uint16_t)set[k];
	assert(k_out == R);
	w->primary[set[lead]]++;
	for (uint32_t k = 0; k < R; k++)
		w->owned[set[k]]++;
}

int cplace_map_build(struct cplace_map *map, const struct cplace_params *params, uint64_t epoch,
                     const uint8_t (*ids)[CPLACE_ID_BYTES], uint32_t id_count)
{
	memset(map, 0, sizeof(*map));
	if (!params_valid(params))
		return ERR_INVALID;
	if (id_count > CPLACE_MEMBERS_MAX)
		return ERR_FULL;
	const uint32_t n = id_count;
	const uint32_t P = params->partition_count;
	const uint32_t R = params->owner_count < n ? params->owner_count : n;

	map->members = malloc((size_t)(n ? n : 1) * CPLACE_ID_BYTES);
	map->owners = malloc((size_t)P * (R ? R : 1) * sizeof(uint16_t));
	size_t scratch_bytes = (size_t)(n ? n : 1) * (2 * sizeof(uint64_t) + 2 * sizeof(uint32_t));
	void *scratch = malloc(scratch_bytes);
	if (!map->members || !map->owners || !scratch) {
		free(scratch);
		cplace_map_free(map);
		return ERR_NOMEM;
	}
	if (n)
		memcpy(map->members, ids, (size_t)n * CPLACE_ID_BYTES);
	qsort(map->members, n, CPLACE_ID_BYTES, id_cmp);
	for (uint32_t i = 1; i < n; i++)
		if (memcmp(map->members[i - 1], map->members[i], CPLACE_ID_BYTES) == 0) {
			free(scratch);
			cplace_map_free(map);
			return ERR_INVALID;
		}

	map->epoch = epoch;
	map->partition_count = (uint16_t)P;
	map->owner_count = (uint8_t)R;
	map->load_max_pct = params->load_max_pct;
	map->member_count = n;
	if (n == 0) {
		free(scratch);
		return 0;
	}
	if (params->load_max_pct) {
		map->cap_primary = cap_for(P, n, params->load_max_pct);
		map->cap_owned = cap_for((uint64_t)P * R, n, params->load_max_pct);
	}

	struct walk w = {.n = n};
	w.seed = scratch;
	w.weight = w.seed + n;
	w.primary = (uint32_t *)(w.weight + n);
	w.owned = w.primary + n;
	memset(w.primary, 0, 2 * (size_t)n * sizeof(uint32_t));
	for (uint32_t i = 0; i < n; i++)
		w.seed[i] = siphash_le(map->members[i], CPLACE_ID_BYTES);
	for (uint32_t p = 0; p < P; p++)
		place_partition(map, &w, (uint16_t)p, &map->owners[(size_t)p * R]);

#ifndef NDEBUG
	uint32_t total = 0;
	for (uint32_t i = 0; i < n; i++)
		total += w.owned[i];
	assert(total == P * R);
#endif
	free(scratch);
	return 0;
}

void cplace_map_free(struct cplace_map *map)
{
	free(map->members);
	free(map->owners);
	memset(map, 0, sizeof(*map));
}

int cplace_member_find(const struct cplace_map *map, const uint8_t id[CPLACE_ID_BYTES])
{
	uint32_t lo = 0, hi = map->member_count;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		int c = memcmp(map->members[mid], id, CPLACE_ID_BYTES);
		if (c == 0)
			return (int)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

int cplace_rank(const struct cplace_map *map, uint16_t p, uint32_t member)
{
	assert(p < map->partition_count);
	for (uint8_t k = 0; k < map->owner_count; k++)
		if (cplace_owner(map, p, k) == member)
			return k;
	return -1;
}

void cplace_member_load(const struct cplace_map *map, uint32_t member, uint32_t *primary_count,
                        uint32_t *owned_count)
{
	uint32_t primaries = 0, owned = 0;
	for (uint32_t p = 0; p < map->partition_count; p++) {
		int rank = cplace_rank(map, (uint16_t)p, member);
		primaries += rank == 0;
		owned += rank >= 0;
	}
	*primary_count = primaries;
	*owned_count = owned;
}

/* the rank in `in` for partition p of the member with this id, or -1 */
static int owner_slot_by_id(const struct cplace_map *in, uint16_t p, const uint8_t *id)
{
	for (uint8_t k = 0; k < in->owner_count; k++)
		if (memcmp(cplace_owner_id(in, p, k), id, CPLACE_ID_BYTES) == 0)
			return k;
	return -1;
}

int cplace_diff_partition(const struct cplace_map *from, const struct cplace_map *to, uint16_t p,
                          struct cplace_move *move)
{
	assert(from->partition_count == to->partition_count);
	assert(p < from->partition_count);
	memset(move, 0, sizeof(*move));
	move->partition = p;
	for (uint8_t k = 0; k < to->owner_count; k++)
		if (owner_slot_by_id(from, p, cplace_owner_id(to, p, k)) < 0)
			move->gain[move->gain_count++] = (uint16_t)cplace_owner(to, p, k);
	for (uint8_t k = 0; k < from->owner_count; k++)
		if (owner_slot_by_id(to, p, cplace_owner_id(from, p, k)) < 0)
			move->lose[move->lose_count++] = (uint16_t)cplace_owner(from, p, k);
	if (from->owner_count == 0 || to->owner_count == 0)
		move->primary_changed = from->owner_count != to->owner_count;
	else
		move->primary_changed =
			memcmp(cplace_owner_id(from, p, 0), cplace_owner_id(to, p, 0), CPLACE_ID_BYTES) != 0;
	return move->gain_count || move->lose_count || move->primary_changed;
}

int cplace_diff(const struct cplace_map *from, const struct cplace_map *to, struct cplace_move *moves,
                uint32_t moves_max, uint32_t *move_count)
{
	*move_count = 0;
	if (from->partition_count != to->partition_count)
		return ERR_INVALID;
	uint32_t count = 0;
	for (uint32_t p = 0; p < from->partition_count; p++) {
		struct cplace_move move;
		if (!cplace_diff_partition(from, to, (uint16_t)p, &move))
			continue;
		if (count < moves_max)
			moves[count] = move;
		count++;
	}
	*move_count = count;
	return count > moves_max ? ERR_FULL : 0;
}
