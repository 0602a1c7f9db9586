/*
 * placement.h - where a task runs: power of two choices over the members.
 *
 * Pure: the caller passes the candidates (one per alive member, itself
 * included) with their capacity and load, and a PRNG (lib/rng.h) it owns. Follows
 * Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing"
 * (2001): sample two eligible candidates at random, take the less loaded.
 * That keeps the maximum load close to the mean with O(1) work per task and
 * without a global view that would be stale anyway (gossiped loads lag).
 *
 * Eligible: has every required tag, and room (inflight < capacity).
 * Load of a candidate = max(inflight, gossiped load) / capacity, where
 * inflight counts the tasks this coordinator placed there and not yet got
 * back (fresh), and the gossiped load is what the member last reported
 * (covers other coordinators' work).
 */
#ifndef CHORUS_CORE_PLACEMENT_H
#define CHORUS_CORE_PLACEMENT_H

#include <stdint.h>

struct rng;

#define PLACEMENT_TAGS_MAX 16

struct placement_candidate {
	uint32_t capacity;       /* task slots (workers x prefetch) */
	uint32_t load;           /* gossiped: tasks held by the member */
	uint32_t inflight;       /* placed there by us, not back yet */
	const char *const *tags; /* tag_count strings */
	uint32_t tag_count;
};

/* Returns the index of the chosen candidate, or -1 when no candidate is
 * eligible. `require` lists tags a candidate must all have. */
int placement_pick(const struct placement_candidate *c, uint32_t n, const char *const *require,
                   uint32_t require_count, struct rng *rng);

/* 1 when some candidate has every required tag (room or not): tells a task
 * that can never be placed (fail it) from one that must wait (keep it). */
int placement_satisfiable(const struct placement_candidate *c, uint32_t n,
                          const char *const *require, uint32_t require_count);

#endif
