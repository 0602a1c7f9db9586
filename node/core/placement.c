/*
 * placement.c - power of two choices (see placement.h).
 */
#include "core/placement.h"

#include <assert.h>
#include <string.h>

#include "lib/rng.h"

static int has_tags(const struct placement_candidate *c, const char *const *require,
                    uint32_t require_count)
{
	for (uint32_t r = 0; r < require_count; r++) {
		int found = 0;
		for (uint32_t t = 0; t < c->tag_count && !found; t++)
			found = strcmp(c->tags[t], require[r]) == 0;
		if (!found)
			return 0;
	}
	return 1;
}

static int eligible(const struct placement_candidate *c, const char *const *require,
                    uint32_t require_count)
{
	return c->capacity > 0 && c->inflight < c->capacity && has_tags(c, require, require_count);
}

/* load as a fraction of capacity, compared without division:
 * a/b < c/d  <=>  a*d < c*b (all small, no overflow in 64 bits) */
static int less_loaded(const struct placement_candidate *a, const struct placement_candidate *b)
{
	uint64_t la = a->load > a->inflight ? a->load : a->inflight;
	uint64_t lb = b->load > b->inflight ? b->load : b->inflight;
	return la * b->capacity < lb * a->capacity;
}

int placement_satisfiable(const struct placement_candidate *c, uint32_t n,
                          const char *const *require, uint32_t require_count)
{
	for (uint32_t i = 0; i < n; i++)
		if (c[i].capacity > 0 && has_tags(&c[i], require, require_count))
			return 1;
	return 0;
}

int placement_pick(const struct placement_candidate *c, uint32_t n, const char *const *require,
                   uint32_t require_count, struct rng *rng)
{
	assert(rng);
	uint32_t count = 0;
	for (uint32_t i = 0; i < n; i++)
		count += (uint32_t)eligible(&c[i], require, require_count);
	if (count == 0)
		return -1;
	/* the k-th eligible candidate, for two random k */
	uint32_t k1 = rng_below(rng, count);
	uint32_t k2 = count > 1 ? rng_below(rng, count - 1) : 0;
	if (count > 1 && k2 >= k1)
		k2++; /* two distinct picks */
	int p1 = -1, p2 = -1;
	for (uint32_t i = 0, k = 0; i < n; i++) {
		if (!eligible(&c[i], require, require_count))
			continue;
		if (k == k1)
			p1 = (int)i;
		if (k == k2)
			p2 = (int)i;
		k++;
	}
	assert(p1 >= 0 && p2 >= 0);
	if (p1 == p2)
		return p1;
	if (less_loaded(&c[p2], &c[p1]))
		return p2;
	if (less_loaded(&c[p1], &c[p2]))
		return p1;
	/* a tie: the first pick (random already) */
	return p1;
}
