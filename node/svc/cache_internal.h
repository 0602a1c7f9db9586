/*
 * cache_internal.h - what the cache service's files share (cache_svc.h
 * says what the service is; docs/cache.md how it works):
 *   cache_svc.c   the service: the map, routing, the primary's writes and
 *                 reads, replication, cluster-wide operations, requests,
 *                 the cache port, the service hooks;
 *   cache_sync.c  the replica side (CacheRepl), anti-entropy rounds and
 *                 hinted handoff.
 * One thread: the node's loop.
 */
#ifndef CHORUS_SVC_CACHE_INTERNAL_H
#define CHORUS_SVC_CACHE_INTERNAL_H

#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chorus.h"
#include "config.h"
#include "core/cplace.h"
#include "core/crepl.h"
#include "core/cstore.h"
#include "core/hlc.h"
#include "io/dispatch.h"
#include "io/host.h"
#include "io/log.h"
#include "io/rpc.h"
#include "lib/arena.h"
#include "lib/err.h"
#include "svc/ports.h"
#include "svc/service.h"

#define ID_BYTES 16
#define MAP_CHECK_MS 100         /* membership is looked at this often */
#define TICK_BUDGET 2000         /* expiries and resize steps per tick */
#define TOMBSTONE_HORIZON_MS (10u * 60u * 1000u)
#define OPS_MAX 65536            /* operations waiting for peers */
#define SCAN_COUNT_MAX 10000
#define CURSOR_ORD_BITS 12
#define CURSOR_CHECK_BITS 20

struct cache {
	const struct config_cache *cfg;
	struct cstore *st;
};

struct cache_svc;

struct op;

/* One peer asked by an operation: the peer request's callback argument,
 * so an answer says who it is from. */
struct op_slot {
	struct op *o;
	uint8_t id[ID_BYTES];
	int answered, found;
	struct cstore_version v;
};

/* An operation waiting for peers (forward, replication, quorum read,
 * fan-out). */
struct op {
	struct cache_svc *s;
	struct op *next, *prev;
	/* a write: the entry sent to the replicas, packed, kept as a hint for
	 * any that fails to acknowledge it */
	uint8_t *entry;
	size_t entry_len;
	cache_reply_fn cb;
	void *arg;
	int answered;
	uint32_t outstanding;    /* peer requests not come back */
	/* what it is */
	int kind;                /* OP_* */
	struct cache *cache;
	uint32_t op;             /* CacheOp */
	uint8_t *key;
	size_t key_len;
	uint16_t partition;
	uint32_t need;           /* acks or reads still needed to answer */
	uint32_t want;           /* a read while owners settle: answers wanted from all */
	uint32_t failed;         /* peers that failed or refused */
	uint32_t asked;
	/* the replicas asked */
	struct op_slot slots[CPLACE_OWNERS_MAX];
	uint32_t n_slots, n_seen;
	/* a quorum read: the newest entry seen (owned copy) */
	int have_newest;
	Chorus__CacheEntry *newest;
	/* the answer prepared by the primary, sent once `need` reaches 0 */
	Chorus__CacheResp resp;
	uint8_t *resp_value;
	/* fan-out (DBSIZE, FLUSH) */
	int64_t sum;
	/* SCAN relay */
	uint32_t scan_ord;
	/* a write that depends on what is held, waiting for the newest copy
	 * from the owners first (OP_PREFETCH): the request, packed */
	uint8_t *req_bytes;
	size_t req_len;
	int consistency;
	/* a forward waiting for room on its link (FIFO; req_bytes holds it) */
	uint8_t to[ID_BYTES];
	uint64_t wait_until_ms;
	struct op *wnext;
};

enum { OP_FORWARD = 1, OP_WRITE, OP_READ, OP_FANOUT, OP_SCAN, OP_SYNC, OP_PREFETCH };

/* Anti-entropy (docs/cache.md): each round, for each cache, this node
 * sends each member it shares partitions with its digests of them; the
 * member answers those that differ; then one pass over the store streams
 * the entries of those partitions to it (last writer wins on arrival). The
 * member does the same on its own round, so both converge. A partition
 * this node holds but no longer owns is dropped once every owner answered
 * an equal digest for it, or acknowledged all of it pushed this round. The
 * round's bookkeeping and the drop rule are crepl's (core/crepl.h); the
 * batches and requests are here. */
#define AE_PERIOD_MS 2000
#define AE_AFTER_MAP_MS 300
#define AE_BATCH_ENTRIES 128
#define AE_BATCH_BYTES (512u << 10)
#define AE_SCAN_BUCKETS 4096     /* per tick */

struct ae_batch {
	Chorus__CacheEntry **ents;   /* owned copies */
	uint32_t n;
	size_t bytes;
};

struct ae_peer {
	struct cache_svc *s;
	uint32_t k;                  /* its index in the round (struct crepl_ae) */
	struct ae_batch batch;
};

#define HINTS_MAX 100000
#define HINTS_BYTES_MAX (64u << 20)
#define HINTS_PERIOD_MS 500
#define HINTS_BATCH 128

/* A batch of hints sent, waiting for its answer. */
struct hint_batch {
	struct cache_svc *s;
	struct hint_batch *next, *prev; /* the service's list (freed at stop) */
	struct crepl_hint *h[HINTS_BATCH];
	uint32_t n;
};

struct cache_svc {
	struct host *host;
	const struct config *cfg;
	struct peers_port *peers;
	uint8_t self[ID_BYTES];
	struct hlc hlc;
	struct cache caches[CONFIG_CACHES_MAX];
	uint32_t n_caches;
	struct cplace_map map;
	int have_map;
	uint32_t owners_seen_max;    /* the most owners a map of this process gave a partition */
	uint64_t next_map_ms;
	struct op *ops;
	uint32_t n_ops;
	struct cache_port port;
	/* anti-entropy */
	struct {
		uint64_t next_ms;
		int phase;               /* 0 idle, 1 digests out, 2 pushing, 3 pushes out */
		uint32_t cache;          /* the cache of this round */
		uint32_t outstanding;    /* digests (phase 1) or push batches (2, 3) out */
		struct crepl_ae round;   /* its map, peers, offers and answers */
		struct ae_peer peers[CREPL_AE_PEERS_MAX];
		uint64_t cursor;
		uint64_t rounds, pushed, dropped;
	} ae;
	/* counters */
	uint64_t forwarded, replicated, repairs, unavailable, timeouts, moved, refused_drift;
	/* after a map change, until anti-entropy went round every cache twice,
	 * QUORUM and ALL reads ask every owner (a new owner may not hold yet
	 * what the old ones acknowledged) */
	uint64_t settle_until_round;
	/* a node starting up serves no key before its view of the members has
	 * held still: one that knows only itself (or half the cluster) would
	 * think itself the primary of partitions others lead */
	uint64_t map_changed_ms;
	/* forwards whose link to the primary was full: sent in order as room
	 * comes, or answered "busy" after the cache timeout */
	struct op *fwd_wait, *fwd_wait_tail;
	uint64_t fwd_waited;
	int serving;
	/* hinted handoff: writes a replica failed to acknowledge, kept for it
	 * (oldest first) and sent again while it is in the map */
	struct crepl_hints hintq;
	uint64_t next_hints_ms;
	struct hint_batch *hint_batches; /* sent, not answered */
};

/* ---- cache_svc.c ---- */
uint64_t cache_now_wall(struct cache_svc *s);
struct cache *cache_find(struct cache_svc *s, const char *name);
void cache_version_to_pb(const struct cstore_version *v, Chorus__CacheVersion *pb, uint8_t *node);
int cache_version_from_pb(const Chorus__CacheVersion *pb, struct cstore_version *v);

/* ---- cache_sync.c ---- */
/* A replicated entry, applied when newer (0), CSTORE_STALE, or an error. */
int cache_entry_apply(struct cache_svc *s, struct cache *c, const Chorus__CacheEntry *e);
/* it as an entry on the wire (pointers into it and into vpb/node). */
void cache_entry_from_item(const struct cstore_item *it, Chorus__CacheEntry *e,
                           Chorus__CacheVersion *vpb, uint8_t *node);
/* A CacheRepl from a peer: entries, a read, or an anti-entropy digest. */
void cache_handle_repl(void *svc, struct rpc_call *call, const Chorus__Envelope *env);
void cache_ae_start(struct cache_svc *s, uint64_t now_mono);
void cache_ae_step(struct cache_svc *s, uint64_t now_mono);
void cache_ae_clear(struct cache_svc *s);
/* A write `to` did not acknowledge: kept for it (packed entry copied). */
void cache_hint_add(struct cache_svc *s, const uint8_t *to, uint32_t cache, const uint8_t *entry,
                    size_t len);
void cache_hints_replay(struct cache_svc *s);
/* Frees every hint and every batch in flight (at stop). */
void cache_hints_clear(struct cache_svc *s);

#endif
