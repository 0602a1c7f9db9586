/*
 * hlc.c - hybrid logical clock (see hlc.h for the layout and guarantees).
 *
 * Why the packed rules equal the paper's (Kulkarni et al. 2014, Fig. 5),
 * writing ts = l << 16 | c and pt for the wall clock:
 *
 * Send or local event. Paper: l' = max(l, pt); c' = (l' == l) ? c + 1 : 0.
 *   - pt > l:  l' = pt, c' = 0, i.e. pt << 16, which is > last (its l is
 *              smaller) and so is the max of the two candidates.
 *   - pt <= l: l' = l, c' = c + 1, i.e. last + 1, which is >= pt << 16.
 *   A c + 1 that would pass 0xffff carries into l: l + 1, c = 0. That is the
 *   required "advance the physical part by 1 ms rather than wrap".
 *
 * Receive of (l_m, c_m). Paper: l' = max(l, l_m, pt); c' = max(c, c_m) + 1
 * if l' == l == l_m, c + 1 if only l' == l, c_m + 1 if only l' == l_m, else 0.
 *   Each case is the largest of last + 1, remote + 1 and pt << 16: the
 *   candidate with the largest l wins; with equal l the larger c + 1 wins;
 *   pt << 16 wins only when pt is strictly the largest l (its c is 0).
 */
#include "core/hlc.h"

#include <assert.h>
#include <string.h>

#include "lib/err.h"

void hlc_init(struct hlc *h, uint32_t max_drift_ms)
{
	assert(h);
	assert(max_drift_ms <= HLC_MAX_DRIFT_MS_MAX);
	memset(h, 0, sizeof(*h));
	h->max_drift_ms = max_drift_ms;
}

/* The last millisecond of the range is kept for carries: a wall reading is
 * clamped below it and a remote timestamp in it is refused, so that only
 * 65536 local events within that last ms could exhaust the clock. */
static uint64_t wall_clamped(uint64_t wall_ms)
{
	return wall_ms >= HLC_PHYSICAL_MAX ? HLC_PHYSICAL_MAX - 1 : wall_ms;
}

int hlc_restore(struct hlc *h, uint64_t wall_ms, uint64_t ts)
{
	if (hlc_physical_ms(ts) >= HLC_PHYSICAL_MAX ||
	    hlc_physical_ms(ts) > wall_clamped(wall_ms) + h->max_drift_ms)
		return ERR_INVALID;
	if (ts > h->last)
		h->last = ts;
	return 0;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

uint64_t hlc_now(struct hlc *h, uint64_t wall_ms)
{
	/* only a wall clock near year 10889 (or a restore of such a value)
	 * gets here: there is no greater timestamp to give */
	assert(h->last < UINT64_MAX);
	uint64_t pt = hlc_pack(wall_clamped(wall_ms), 0);
	uint64_t ts = max_u64(h->last + 1, pt);
	assert(ts > h->last);
	h->last = ts;
	return ts;
}

int hlc_update(struct hlc *h, uint64_t wall_ms, uint64_t remote_ts, uint64_t *out)
{
	assert(out);
	uint64_t wall = wall_clamped(wall_ms);
	/* the drift rule: judged against our wall clock, never our HLC, so that
	 * accepted timestamps cannot ratchet the clock forward (hlc.h) */
	uint64_t remote_ms = hlc_physical_ms(remote_ts);
	if (remote_ms > wall + h->max_drift_ms || remote_ms >= HLC_PHYSICAL_MAX) {
		h->refused_count++;
		return ERR_INVALID;
	}
	assert(h->last < UINT64_MAX); /* as in hlc_now */
	uint64_t ts = max_u64(max_u64(h->last + 1, remote_ts + 1), hlc_pack(wall, 0));
	assert(ts > h->last && ts > remote_ts);
	h->last = ts;
	*out = ts;
	return 0;
}

uint64_t hlc_last(const struct hlc *h)
{
	return h->last;
}

int cache_version_cmp(const struct cache_version *a, const struct cache_version *b)
{
	if (a->hlc != b->hlc)
		return a->hlc < b->hlc ? -1 : 1;
	int c = memcmp(a->node, b->node, sizeof(a->node));
	return (c > 0) - (c < 0);
}
