/*
 * cplace.h - cache placement: keys to partitions, partitions to owners.
 *
 * A key belongs to one of P partitions (default 271); a partition has R
 * owners (default 3, capped by the member count): a primary and R - 1
 * replicas, chosen from the alive members by rendezvous (highest random
 * weight) hashing, Thaler & Ravishankar, "Using name-based mappings to
 * increase hit rates" (IEEE/ACM ToN, 1998), with a bounded-load refinement
 * after Mirrokni, Thorup & Zadimoghaddam, "Consistent Hashing with Bounded
 * Loads" (SODA 2018). A partition map is built from a member list and an
 * epoch the caller bumps on every membership change, so that a request routed
 * on a stale map can be told apart and redirected.
 *
 * What it guarantees, and why:
 *
 * - Same answer on every node and every version. Everything below is a
 *   function of the bytes given, specified here, with no seed, no pointer
 *   order and no host byte order in it. Changing any of it is a wire change:
 *   tests/unit/test_cplace.c pins values to catch that.
 *     key hash     h(key)   = SipHash-2-4 (libsodium crypto_shorthash) of the
 *                             key bytes under the all-zero 16-byte key, its 8
 *                             output bytes read little-endian;
 *     partition             = h(key) mod P;
 *     member seed  s(m)     = the same SipHash of the member's 16 id bytes;
 *     weight       w(m, p)  = mix64(s(m) XOR mix64(p + 1)), mix64 being
 *                             splitmix64's finaliser (Steele, Lea & Flood,
 *                             "Fast splittable pseudorandom number
 *                             generators", OOPSLA 2014), see cplace.c;
 *                             equal weights rank the smaller id first.
 *   The key is fixed so that every node agrees without sharing a secret; the
 *   price is that anyone can aim many keys at one partition (per-partition
 *   limits, not the hash, must bound that). SipHash runs once per member,
 *   then one multiply-xorshift mix per (member, partition): SipHash per pair
 *   would cost ~0.8 ms for the weights alone at 100 members x 271 partitions;
 *   the whole build takes ~0.1-0.15 ms this way, and the ranks measure as
 *   uniform (each order of 3 members equally likely; primaries per member
 *   with the binomial's spread).
 *
 * - Independent of the member list's order: the map keeps its own copy of
 *   the ids, sorted by their bytes; owners are indexes into that table.
 *
 * - Balance (load_max_pct, default 120). Plain rendezvous is only balanced on
 *   average: at 5 members and P = 271 a member's primaries are Binomial(271,
 *   1/5), mean 54.2, sd 6.6, and in about 20% of random 5-member clusters
 *   some member has more than 65 (1.2x the mean; worst seen 73, 1.35x);
 *   counting all R owners (mean 162.6, sd 8.1) about 1 cluster in 10,000
 *   passes 1.2x. So each member gets two caps (N members, R in use),
 *       cap_primary = max(floor(1.2 P / N),   ceil(P / N) + 1)
 *       cap_owned   = max(floor(1.2 P R / N), ceil(P R / N) + 1)
 *   (1.2 being load_max_pct / 100). The "+ 1" arm leaves the members at
 *   least one spare slot each, which the greedy walk needs to finish under
 *   its caps; it is the larger arm only when the mean is small (under about
 *   5 to 10 per member, e.g. 2.71 primaries at 100 members: cap 4), where
 *   1.2x the mean cannot be promised. Partitions are walked in order 0..P-1:
 *     1. the owner set: the R highest-weighted members not yet at cap_owned;
 *     2. the primary: the highest-weighted of that set not yet at
 *        cap_primary; the others are replicas in weight order;
 *     3. if the whole set is at cap_primary, the highest-weighted member
 *        outside it under both caps becomes primary and displaces the set's
 *        lowest-weighted member (displaced_count);
 *     4. if a step finds no member under its cap, it takes the best one over
 *        it: the caps are soft, so a map always exists (overflow_count).
 *        Measured over ~58,000 random maps (P 1..1024, N 1..1000, R 1..5):
 *        never at P >= 64; 6 times at P <= 16 with N close to R.
 *   Step 2 is the point: the primary cap is met by choosing *which of the
 *   owners* is primary, which moves no data, so the owner sets stay those of
 *   plain rendezvous unless cap_owned binds (rare, above) or step 3 runs
 *   (not seen in the tests' 200 clusters of 5 members at P = 271).
 *   load_max_pct = 0 gives plain rendezvous (no caps).
 *
 * - Minimal movement. Plain rendezvous changes a partition's owner set only
 *   where the joining member enters its top R (about R / (N + 1) of all) or
 *   where the leaving member was in it. The caps keep that for owner sets,
 *   except where cap_owned or step 3 diverted a partition in the old or new
 *   map. What they can move besides is the primary role: when counts change,
 *   the walk may pick another of the same owners as primary (a role change,
 *   no data copied). Measured at P = 271, R = 3 over 200 random clusters
 *   (tests/unit/test_cplace.c prints it): 5 -> 6 members, owner sets change
 *   in 135.9 partitions on average (ideal R/6 = 135.5), as plain rendezvous,
 *   primaries in 46.3 (plain 45.6); 5 -> 4, no owner set changes outside the
 *   leaver's partitions, and 0.23 primaries on average change there (plain 0).
 *
 * Cost: cplace_map_build is O(P N R) time (N + P R words of memory);
 * cplace_partition is one SipHash of the key. Pure (no I/O, no clock, no
 * randomness); a map is read-only once built, so it can be shared by readers.
 */
#ifndef CHORUS_CORE_CPLACE_H
#define CHORUS_CORE_CPLACE_H

#include <stddef.h>
#include <stdint.h>

#define CPLACE_ID_BYTES 16              /* a member id, as SWIM_ID_BYTES */
#define CPLACE_PARTITIONS_DEFAULT 271
#define CPLACE_PARTITIONS_MAX 65535
#define CPLACE_OWNERS_DEFAULT 3         /* R: primary + replicas */
#define CPLACE_OWNERS_MAX 8
#define CPLACE_MEMBERS_MAX 16384        /* as SWIM's default members_max */
#define CPLACE_LOAD_PCT_DEFAULT 120     /* caps at 1.2x the mean */
#define CPLACE_LOAD_PCT_MIN 100         /* a cap below the mean makes no sense */
#define CPLACE_LOAD_PCT_MAX 1000

struct cplace_params {
	uint16_t partition_count;  /* P: 1 .. CPLACE_PARTITIONS_MAX */
	uint8_t owner_count;       /* R asked: 1 .. CPLACE_OWNERS_MAX */
	uint16_t load_max_pct;     /* 0 (plain) or CPLACE_LOAD_PCT_MIN .. _MAX */
};

/* Fills P = 271, R = 3, load_max_pct = 120. */
void cplace_params_default(struct cplace_params *params);

struct cplace_map {
	uint64_t epoch;
	uint16_t partition_count;  /* P */
	uint8_t owner_count;       /* R in use: min(R asked, member_count); 0 if no members */
	uint16_t load_max_pct;
	uint32_t member_count;     /* <= CPLACE_MEMBERS_MAX */
	uint8_t (*members)[CPLACE_ID_BYTES]; /* member_count ids, ascending bytes */
	uint16_t *owners;          /* partition_count * owner_count member indexes:
	                            * owners[p * R + 0] primary, then replicas */
	uint32_t cap_primary;      /* the caps used (0 when load_max_pct = 0) */
	uint32_t cap_owned;
	uint32_t displaced_count;  /* partitions that took step 3 above */
	uint32_t overflow_count;   /* soft caps exceeded (step 4 above) */
};

/* The partition of a key (see the hash above); partition_count >= 1. */
uint16_t cplace_partition(const void *key, size_t len, uint16_t partition_count);

/*
 * Builds the map for `ids` (id_count members, any order) into *map, which
 * then owns its memory (free it with cplace_map_free); `ids` is not kept.
 * id_count may be 0 (every partition without owners).
 * Returns 0, ERR_INVALID (params out of range, a duplicate id), ERR_FULL
 * (id_count > CPLACE_MEMBERS_MAX) or ERR_NOMEM; on error *map is empty
 * (cplace_map_free on it is a no-op).
 */
int cplace_map_build(struct cplace_map *map, const struct cplace_params *params, uint64_t epoch,
                     const uint8_t (*ids)[CPLACE_ID_BYTES], uint32_t id_count);

/* Releases what cplace_map_build allocated; leaves *map empty. */
void cplace_map_free(struct cplace_map *map);

/* The k-th owner of partition p (k = 0 the primary), as a member index. */
static inline uint32_t cplace_owner(const struct cplace_map *map, uint16_t p, uint8_t k)
{
	return map->owners[(size_t)p * map->owner_count + k];
}

/* The id of the k-th owner of partition p. */
static inline const uint8_t *cplace_owner_id(const struct cplace_map *map, uint16_t p, uint8_t k)
{
	return map->members[cplace_owner(map, p, k)];
}

/* The index of a member id in the map, or -1 when it is not a member. */
int cplace_member_find(const struct cplace_map *map, const uint8_t id[CPLACE_ID_BYTES]);

/* The rank of a member for partition p: 0 primary, 1 .. R - 1 replica,
 * -1 not an owner. */
int cplace_rank(const struct cplace_map *map, uint16_t p, uint32_t member);

/* How many partitions a member is primary of, and owns at any rank. */
void cplace_member_load(const struct cplace_map *map, uint32_t member, uint32_t *primary_count,
                        uint32_t *owned_count);

/*
 * Movement between two maps of the same P (typically old and new epoch):
 * per partition, the members that gain it (must receive its entries) and
 * those that lose it (may drop them once the gainers have them). Members are
 * matched by id, so the maps may have different member tables.
 */
struct cplace_move {
	uint16_t partition;
	uint8_t gain_count;
	uint8_t lose_count;
	uint8_t primary_changed;           /* the primary's id differs (role or set) */
	uint16_t gain[CPLACE_OWNERS_MAX];  /* member indexes in `to` */
	uint16_t lose[CPLACE_OWNERS_MAX];  /* member indexes in `from` */
};

/* Fills *move for partition p; returns 1 when anything changed (a gain, a
 * loss or the primary), else 0. Both maps must have the same P. */
int cplace_diff_partition(const struct cplace_map *from, const struct cplace_map *to, uint16_t p,
                          struct cplace_move *move);

/*
 * Lists the partitions that changed, in partition order, into moves (room
 * for moves_max; P entries always suffice) and sets *move_count to how many
 * changed. Returns 0, ERR_INVALID when the maps' P differ, or ERR_FULL when
 * more than moves_max changed (the first moves_max are filled).
 */
int cplace_diff(const struct cplace_map *from, const struct cplace_map *to, struct cplace_move *moves,
                uint32_t moves_max, uint32_t *move_count);

#endif
