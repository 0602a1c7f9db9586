/*
 * hlc.h - hybrid logical clock, and the cache's version type built on it.
 *
 * Follows Kulkarni, Demirbas, Madeppa, Avva, Leone, "Logical Physical
 * Clocks" (OPODIS 2014), Fig. 5 (HLC). A timestamp is (l, c): l is the
 * largest physical time (wall ms) this node has heard of, c a logical counter
 * that orders events sharing the same l.
 *
 * Layout of a timestamp (uint64_t, compared as a plain integer):
 *
 *     bit 63 ................. 16 15 ........ 0
 *         l: physical, wall ms     c: logical
 *         since the Unix epoch     counter
 *         (48 bits: to year 10889) (16 bits)
 *
 * so ts = l << 16 | c, and comparing two timestamps as integers compares
 * (l, c) lexicographically.
 *
 * What it guarantees, and why:
 * - Monotonic: every hlc_now / hlc_update result is strictly greater than
 *   every timestamp this clock issued or accepted before, even when the wall
 *   clock steps back (NTP, `date -s`): l never decreases, c breaks the tie.
 * - Causal: a timestamp issued after receiving a message is greater than the
 *   message's timestamp (HLC receive rule), so last-writer-wins never lets a
 *   write lose to one it has seen.
 * - Close to wall time: l is the greatest wall reading seen here unless a
 *   peer was ahead; with the drift limit below, l exceeds the greatest wall
 *   reading passed in by at most max_drift_ms, plus one ms per 65536 events
 *   that carried (the paper's bound |l - pt| <= epsilon, Theorem 3).
 * - Bounded by our own wall clock: a remote timestamp whose l is more than
 *   max_drift_ms ahead of *our wall clock* is refused (ERR_INVALID) and not
 *   adopted, so a broken or forged peer cannot push our clock into the future.
 *   The reference is the wall clock, not our HLC: otherwise a peer could
 *   ratchet us forward by max_drift_ms per message.
 * - No wrap: when c would pass 0xffff the carry goes into l (l + 1 ms, c = 0);
 *   in the packed form that is simply ts + 1. Reaching the top of the 48-bit
 *   l needs a wall clock near year 10889; it is asserted, not handled.
 *
 * The packed form makes the paper's rules short: a local event takes
 * max(last + 1, wall << 16); a receive takes max(last + 1, remote + 1,
 * wall << 16). Each case of Fig. 5 (which of l, l_m, pt is largest) gives the
 * same (l, c), carries included (see hlc.c).
 *
 * Pure: no clock is read here; the caller passes its wall reading in ms
 * (lib/clock.h). One struct hlc per node, used from the loop thread only.
 */
#ifndef CHORUS_CORE_HLC_H
#define CHORUS_CORE_HLC_H

#include <stdint.h>

#define HLC_LOGICAL_BITS 16
#define HLC_LOGICAL_MAX 0xffffu                       /* c: 0 .. 65535 */
#define HLC_PHYSICAL_MAX ((UINT64_C(1) << 48) - 1)    /* l: 0 .. 2^48 - 1 ms */
#define HLC_MAX_DRIFT_MS_DEFAULT 500u                 /* as CockroachDB's max offset */
#define HLC_MAX_DRIFT_MS_MAX 86400000u                /* one day: a sanity bound */

struct hlc {
	uint64_t last;            /* the greatest timestamp issued or accepted */
	uint32_t max_drift_ms;    /* <= HLC_MAX_DRIFT_MS_MAX */
	uint64_t refused_count;   /* remote timestamps refused for drift (a stat) */
};

/* Starts a clock at 0 (the first hlc_now takes the wall time). */
void hlc_init(struct hlc *h, uint32_t max_drift_ms);

/* Raises the clock to at least `ts`: for a node that restarts and reloads
 * the greatest version it wrote or accepted, so that a wall clock that went
 * back across the restart does not make its new writes lose to its old ones.
 * Never lowers the clock. Returns ERR_INVALID (clock unchanged) for a ts
 * whose physical part is more than max_drift_ms ahead of wall_ms, as
 * hlc_update does: the node's next writes would be stamped past it, and
 * every peer refuses a timestamp that far ahead of its own wall clock, so a
 * clock restored there would have all of them refused. Also ERR_INVALID for
 * a ts in the reserved last ms. */
int hlc_restore(struct hlc *h, uint64_t wall_ms, uint64_t ts);

/* A local event or a send: returns a timestamp greater than every earlier
 * one. wall_ms is the caller's wall clock (ms since the Unix epoch); a reading
 * at or beyond HLC_PHYSICAL_MAX is clamped to HLC_PHYSICAL_MAX - 1 (the last
 * ms of the range is kept for carries). */
uint64_t hlc_now(struct hlc *h, uint64_t wall_ms);

/* A receive of a message stamped remote_ts: on success (0) stores in *out
 * the receive event's timestamp, greater than both the clock's last and
 * remote_ts, and the clock has adopted it. Returns ERR_INVALID, leaving the
 * clock as it was (but counting refused_count), when remote_ts's physical
 * part is more than max_drift_ms ahead of wall_ms, or is HLC_PHYSICAL_MAX. */
int hlc_update(struct hlc *h, uint64_t wall_ms, uint64_t remote_ts, uint64_t *out);

/* The greatest timestamp issued or accepted (0 before the first). */
uint64_t hlc_last(const struct hlc *h);

static inline uint64_t hlc_pack(uint64_t physical_ms, uint32_t logical)
{
	return physical_ms << HLC_LOGICAL_BITS | (logical & HLC_LOGICAL_MAX);
}
static inline uint64_t hlc_physical_ms(uint64_t ts) { return ts >> HLC_LOGICAL_BITS; }
static inline uint32_t hlc_logical(uint64_t ts) { return (uint32_t)(ts & HLC_LOGICAL_MAX); }

/*
 * The version of a cache entry: the HLC timestamp of the write and the id of
 * the node that made it. Total order: hlc first, then the node id bytes
 * compared as unsigned (memcmp), so two writes in the same HLC tick on two
 * nodes still have one winner, the same on every replica (last writer wins).
 * Equal only when both fields are equal: one node never issues the same
 * timestamp twice.
 */
#define CACHE_VERSION_NODE_BYTES 16

struct cache_version {
	uint64_t hlc;
	uint8_t node[CACHE_VERSION_NODE_BYTES];
};

/* -1, 0 or 1 as a is older than, the same as, or newer than b. */
int cache_version_cmp(const struct cache_version *a, const struct cache_version *b);

#endif
