/*
 * crepl.h - the cache's replication decisions (docs/cache.md), apart from
 * the I/O that carries them out (node/svc/cache_svc.c, cache_sync.c) so
 * that the simulator (tests/sim/driver_cache.c) runs the same rules.
 *
 * Owns:
 *   - how many replica answers a consistency level needs, and the verdict
 *     of an operation waiting for them (answer now, fail, or wait);
 *   - for quorum reads: which answer is the newest, which owner needs a
 *     read repair, and how many owners' answers a read needs while owners
 *     settle after a map change (their own, or one they hear of);
 *   - the replica's rule for a replicated entry: the HLC drift check, then
 *     last writer wins, and whether the outcome may be acknowledged;
 *   - an anti-entropy round's bookkeeping: which partitions are offered to
 *     which member with which digest, which ones a member said differ
 *     (pushed to it), and which partitions this node may drop once every
 *     owner answered an equal digest (the handover rule);
 *   - the hinted-handoff queue: bounded, oldest first, batches per member
 *     and cache, delivered ones removed.
 *
 * Pure (ARCHITECTURE.md): no clock (the caller passes wall ms), no I/O, no
 * randomness. It reads and changes a cstore and an hlc it is given, and
 * reads a cplace map. Entries in hints are opaque bytes (the shell packs a
 * CacheEntry); nothing here knows protobuf.
 *
 * Subtle parts:
 *   - crepl_decide counts outstanding requests, not "asked - failed": a
 *     request that could not even be sent and an acknowledgement already
 *     counted must not make the operation wait for answers that cannot
 *     come (that arithmetic left ALL writes and reads unanswered forever
 *     when one replica acked and the other failed, and wrapped below zero
 *     when a send failed at once: found writing this module);
 *   - a replica acknowledges an entry only when it holds it or something
 *     newer (crepl_apply_held): an entry refused for clock drift or memory
 *     is not a copy, and a QUORUM counted on it would rest on the primary
 *     alone;
 *   - the handover: a node may drop a partition it no longer owns once each
 *     owner either answered an equal digest or acknowledged, as held, every
 *     entry of it pushed this round. Equal digests alone never come while
 *     the owners take new writes (their copy moves on, the old holder's
 *     does not, and owners push only to owners), so the old copy stayed
 *     forever: found by the simulator (tests/sim, invariant (b));
 *   - a node that has seen other owners and now sees only itself does not
 *     acknowledge QUORUM or ALL on its one copy (crepl_copies_enough);
 *   - only a member with the same map confirms: one with another map may
 *     itself drop, under its map, what it confirmed under ours (two nodes
 *     each dropping on the other's word while a map change spreads; found
 *     by the simulator, invariant (c));
 *   - the drop re-checks that this node's digest of the partition is still
 *     the one offered: an entry that arrived during the round (a primary
 *     with an older map still sends it writes) is otherwise dropped unseen
 *     by the owners.
 *
 * Threading: none; one caller (the node's loop, or the simulator).
 */
#ifndef CHORUS_CORE_CREPL_H
#define CHORUS_CORE_CREPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/cplace.h"
#include "core/cstore.h"
#include "core/hlc.h"

/* A replicated entry stamped more than this far ahead of the receiver's
 * wall clock is refused (hlc.h): a broken peer cannot drag every clock
 * into the future. */
#define CREPL_DRIFT_MS HLC_MAX_DRIFT_MS_DEFAULT

/* Consistency levels, as CH_CACHE_ONE / QUORUM / ALL (client/chorus.h). */
enum crepl_consistency { CREPL_ONE = 1, CREPL_QUORUM = 2, CREPL_ALL = 3 };

/* ---- waiting for replicas ---- */

/* Replica answers needed besides the primary's own: 0 for ONE or a single
 * owner, R - 1 for ALL, floor(R / 2) for QUORUM (a majority of R, the
 * primary being one). Anything but ONE and ALL counts as QUORUM. */
uint32_t crepl_replicas_needed(uint32_t owner_count, int consistency);

/* Whether a QUORUM or ALL request may be served by a primary whose map
 * gives the partition owner_count owners, on a node whose maps have had up
 * to owners_seen_max owners. One copy is no quorum for a node that has
 * been part of a larger cluster: seeing only itself, it is cut off, not
 * alone, and what it acknowledged would rest on its memory alone (one
 * crash and the write is lost; found by the simulator). ONE is always
 * served, and so is everything on a node that never saw another owner (a
 * one-node cluster, or R = 1). */
bool crepl_copies_enough(int consistency, uint32_t owner_count, uint32_t owners_seen_max);

enum crepl_verdict {
	CREPL_WAIT = 0, /* answers may still come that decide it */
	CREPL_DONE = 1, /* enough good answers: answer the client */
	CREPL_FAIL = 2, /* too few requests left out to reach `need` */
};

/* The verdict of an operation waiting for replicas:
 *   need         good answers still needed;
 *   want         good answers still hoped for beyond that (a read while
 *                owners settle waits for every owner that can answer;
 *                0 otherwise);
 *   outstanding  requests sent that have not come back.
 * DONE once need is 0 and nothing more is hoped for or can come; FAIL
 * once fewer requests are out than good answers needed; WAIT otherwise. */
enum crepl_verdict crepl_decide(uint32_t need, uint32_t want, uint32_t outstanding);

/* The same, kept in one place for a caller that has no counters of its own
 * (the simulator). */
struct crepl_quorum {
	uint32_t need;        /* good answers still needed */
	uint32_t want;        /* good answers hoped for beyond need (see crepl_decide) */
	uint32_t outstanding; /* requests out, not come back */
	uint32_t seen;        /* good answers */
	uint32_t failed;      /* failed answers and sends that failed at once */
};
/* want: good answers hoped for in all (>= need; less is taken as need). */
void crepl_quorum_init(struct crepl_quorum *q, uint32_t need, uint32_t want);
/* A request went out (sent = true) or could not be sent. */
void crepl_quorum_sent(struct crepl_quorum *q, bool sent);
/* A request came back, good or not. */
void crepl_quorum_answer(struct crepl_quorum *q, bool good);
enum crepl_verdict crepl_quorum_verdict(const struct crepl_quorum *q);

/* ---- quorum reads ---- */

/* Whether an answer with version v becomes the newest seen (none seen yet,
 * or v is newer than *newest). */
bool crepl_read_newer(bool have_newest, const struct cstore_version *newest,
                      const struct cstore_version *v);
/* Whether an owner that answered (found, v) needs the newest sent to it
 * (read repair): it had nothing, or an older version. */
bool crepl_read_needs_repair(bool found, const struct cstore_version *v,
                             const struct cstore_version *newest);
/* Replica answers a quorum read needs: `need` (crepl_replicas_needed),
 * but every other owner's while owners settle after a map change, and for
 * a write that first fetches the newest copy (prefetch). A settling
 * primary's own copy vouches for nothing (it restarted empty, or took the
 * partition over), so without every other owner's answer a read could miss
 * what a quorum acknowledged: when the one copy's answer was lost it did,
 * answering from the others (found by the simulator). Such a read fails
 * instead, until settled. */
uint32_t crepl_read_need(uint32_t owner_count, uint32_t need, bool settling, bool prefetch);

/* Owners settle after a map change until anti-entropy went round every
 * cache twice (a new owner may not hold yet what the old ones
 * acknowledged): the round count at which settling ends. */
uint64_t crepl_settle_until(uint64_t rounds, uint32_t cache_count);
/* A message stamped with the sender's map epoch arrived: if it is not this
 * node's, a map change is spreading (one side has it, the other not yet)
 * and this node settles too, as after its own change. Returns the new
 * settle_until (never earlier than the old). A primary on the old map that
 * read a quorum of the old owners could miss a write a primary on the new
 * map got acknowledged by a quorum of the new ones (found by the
 * simulator); asking every old owner meets that quorum, a single change
 * leaving all but one owner in place. */
uint64_t crepl_settle_on_epoch(uint64_t settle_until, uint64_t rounds, uint32_t cache_count, uint64_t own_epoch,
                               uint64_t their_epoch);

/* ---- the replica side ---- */

/* A replicated entry (it->key, value, version, expire_ms, tombstone,
 * partition): its version's clock is merged into h unless it is more than
 * h's drift bound ahead of wall_ms (then ERR_INVALID, nothing applied),
 * then cstore_apply (last writer wins). 0 applied, CSTORE_STALE (held is
 * as new or newer), ERR_INVALID (drift or a bad entry), or cstore_apply's
 * errors. */
int crepl_apply(struct hlc *h, struct cstore *st, const struct cstore_item *it, uint64_t wall_ms);
/* Whether crepl_apply's result leaves the entry (or a newer one) held, so
 * that it may be acknowledged: 0 and CSTORE_STALE. */
bool crepl_apply_held(int rc);

/* ---- anti-entropy ---- */

#define CREPL_AE_PEERS_MAX 64

struct crepl_ae_peer {
	uint32_t member;              /* index in the round's map */
	uint8_t id[CPLACE_ID_BYTES];
	uint8_t *differ;              /* bitmap over partitions: push these to it */
	uint8_t *equal;               /* offered and not said to differ */
	uint8_t *skipped;             /* differ partitions not wholly pushed (a batch was full) */
	uint32_t pushes_out;          /* push batches sent, not come back */
	bool push_failed;             /* a push batch was not sent or not acknowledged */
	bool answered;
};

/* One round (docs/cache.md "Anti-entropy and moves"). Zeroed = empty. */
struct crepl_ae {
	uint64_t epoch;               /* the map it was planned on */
	uint32_t partition_count;
	int me;                       /* this node's index in that map */
	uint8_t *held;                /* bitmap: partitions this node held at the plan */
	uint64_t *digest;             /* per partition: this node's digest at the plan */
	struct crepl_ae_peer peers[CREPL_AE_PEERS_MAX];
	uint32_t peer_count;
	bool pass_done;               /* the push pass went through the whole store */
};

/* Plans a round on map m for the node `self`: every other member it shares
 * partitions with becomes a peer, offered the digests of the partitions
 * that member owns and this node owns or holds. 0 (maybe no peers),
 * ERR_NOT_FOUND (self is not in m), ERR_NOMEM (the peers planned so far
 * stay). Clears any previous round first. */
int crepl_ae_plan(struct crepl_ae *ae, const struct cplace_map *m, const uint8_t self[CPLACE_ID_BYTES],
                  struct cstore *st);
/* Peer k's offer: the partitions and digests to send it (room for the
 * map's partition count in each). Returns how many. */
uint32_t crepl_ae_offer(const struct crepl_ae *ae, uint32_t k, uint32_t *partitions, uint64_t *digests);
/* The offer to peer k could not be sent: none of its partitions is equal. */
void crepl_ae_unsent(struct crepl_ae *ae, uint32_t k);
/* Peer k answered: the partitions it said differ are pushed to it. */
void crepl_ae_answer(struct crepl_ae *ae, uint32_t k, const uint32_t *differ, size_t differ_count);
/* Peer k has another map (it answered CH_ERR_MOVED): everything offered is
 * pushed to it, but nothing it holds or acknowledges counts for a handover
 * this round, since its own map may let it drop what it confirmed. */
void crepl_ae_answer_other_map(struct crepl_ae *ae, uint32_t k);
/* Whether partition p goes to peer k in the push pass. */
bool crepl_ae_wants(const struct crepl_ae *ae, uint32_t k, uint32_t p);
/* Whether anything goes to anyone. */
bool crepl_ae_push_any(const struct crepl_ae *ae);
/* The push pass left an entry of partition p out of peer k's batch (full:
 * the next round sends it). */
void crepl_ae_skipped(struct crepl_ae *ae, uint32_t k, uint32_t p);
/* A push batch to peer k went out (sent) or could not be sent. */
void crepl_ae_push_sent(struct crepl_ae *ae, uint32_t k, bool sent);
/* A push batch to peer k came back: acknowledged (every entry held there)
 * or not (an error, a timeout). */
void crepl_ae_push_done(struct crepl_ae *ae, uint32_t k, bool acked);
/* The push pass went through the whole store (a pass cut short pushed
 * only part of what differs). */
void crepl_ae_pass_done(struct crepl_ae *ae);
/* Push batches out, all peers: the round ends once none is. */
uint32_t crepl_ae_pushes_out(const struct crepl_ae *ae);
/* The handover rule, at the round's end: partition p may be dropped here
 * when m is still the round's map, this node does not own p but holds
 * entries of it, its digest of p is still the one offered, and every owner
 * of p answered and either said its digest equals it, or said it differs
 * and then acknowledged every push of a whole push pass, p's entries all
 * among them (none skipped). */
bool crepl_ae_droppable(const struct crepl_ae *ae, const struct cplace_map *m, struct cstore *st, uint32_t p);
/* Frees the round's memory; leaves *ae empty. */
void crepl_ae_clear(struct crepl_ae *ae);

/* The receiving side: of the offered partitions (and the sender's
 * digests), those whose digest here differs, into differ (room for n).
 * Partitions out of range are skipped. Returns how many. */
uint32_t crepl_ae_differ(const struct cstore *st, uint32_t partition_count, const uint32_t *partitions,
                         const uint64_t *digests, size_t n, uint32_t *differ);

/* ---- hinted handoff ---- */

struct crepl_hint {
	struct crepl_hint *next;
	uint8_t to[CPLACE_ID_BYTES];
	uint32_t cache;               /* the caller's cache index */
	uint8_t *entry;               /* owned copy of the caller's bytes */
	size_t len;
	bool inflight;                /* in a batch sent, not answered */
	bool delivered;
};

/* Writes a replica did not acknowledge, oldest first. Zeroed + limits =
 * empty (crepl_hints_init). */
struct crepl_hints {
	struct crepl_hint *head, *tail;
	uint64_t count, bytes;
	uint64_t count_max, bytes_max;
	uint64_t dropped, delivered;  /* statistics */
};

void crepl_hints_init(struct crepl_hints *q, uint64_t count_max, uint64_t bytes_max);
/* Keeps a copy of entry for `to`; beyond the limits the oldest hints go
 * (anti-entropy still brings them), unless in flight. 0, ERR_INVALID (no
 * entry), ERR_NOMEM (counted as dropped). */
int crepl_hints_add(struct crepl_hints *q, const uint8_t to[CPLACE_ID_BYTES], uint32_t cache,
                    const uint8_t *entry, size_t len);
/* The first hint after `after` (NULL: from the oldest) that may be sent
 * now: not in flight, not delivered, and for a member (is_member(ctx, id)
 * nonzero). NULL when none. */
struct crepl_hint *crepl_hints_next(struct crepl_hints *q, struct crepl_hint *after,
                                    int (*is_member)(void *ctx, const uint8_t *id), void *ctx);
/* A batch starting at h: h and the next hints for the same member and
 * cache that are not in flight, at most max, into out. Returns how many. */
uint32_t crepl_hints_gather(const struct crepl_hints *q, struct crepl_hint *h, struct crepl_hint **out,
                            uint32_t max);
/* The batch was sent: in flight until crepl_hints_done. */
void crepl_hints_sent(struct crepl_hint *const *batch, uint32_t n);
/* The batch's answer: delivered ones (ok) are removed, the others may go
 * again. The pointers in batch are invalid afterwards. */
void crepl_hints_done(struct crepl_hints *q, struct crepl_hint *const *batch, uint32_t n, bool ok);
/* Frees every hint, in flight or not. */
void crepl_hints_clear(struct crepl_hints *q);

#endif
