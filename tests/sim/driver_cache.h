/*
 * driver_cache.h - the simulator's driver for the cache's replication
 * protocol (node/core/crepl.c over cstore, cplace and hlc), and the world
 * its scenarios look at (tests/sim/README.md).
 *
 * Every node is a small cache service as node/svc/cache_svc.c and
 * cache_sync.c run it: one cstore (one cache), a hybrid logical clock fed
 * the node's WALL clock, a partition map built from the members it
 * believes in, and the crepl core deciding: how many answers a write or a
 * read needs and when it is done or failed, which read answer is newest
 * and who needs a repair, the replica's drift + last-writer-wins rule and
 * whether it may acknowledge, the anti-entropy round (digests, pushes, the
 * handover drop) and the hint queue. Messages leave as bytes of the real
 * protobuf (Envelope with CacheReq / CacheResp / CacheRepl / CacheReplResp
 * / Error, proto/chorus.proto) and are decoded on arrival.
 *
 * What the node does, as the service does:
 *   - a client request at any node goes to the key's primary under that
 *     node's map (forwarded once; a primary that is not one answers
 *     CH_ERR_MOVED); a node that joined (or restarted) serves keys only
 *     once its view held still for a gossip period;
 *   - PUT and DEL at the primary: stamp (HLC + id), apply, send the entry
 *     to the replicas, answer at ONE / QUORUM / ALL; a replica that does
 *     not acknowledge gets a hint;
 *   - GET at QUORUM / ALL: the primary's own copy plus replica reads, the
 *     newest applied at the primary and repaired where behind; while
 *     settling after a map change every owner is asked;
 *   - anti-entropy every 2 s (300 ms after a map change); hints every
 *     500 ms; requests time out after 2 s (forwards after 4 s); at most
 *     link_max requests in flight per link (a send beyond it fails at
 *     once with CH_ERR_FULL, as a full nng link does).
 *
 * Membership is the scenario's, not SWIM's: the world holds the member set
 * SWIM would converge to (`truth`); each node adopts a new set after its
 * own delay, so maps disagree for a while, as they do in a cluster. A node
 * that (re)starts knows only itself until it has joined.
 *
 * Crashes lose the node's memory (the cache is in-memory): its store,
 * hints, requests and operations go, nothing answers. A restarted node has
 * the same id, an empty store and a fresh clock.
 *
 * SIM_CACHE_TRACE=P prints what happens to partition P (maps, rounds,
 * pushes, drops, writes), for reading a failure.
 *
 * SIM_CACHE_BUG (environment, comma-separated) puts back a removed
 * mechanism, to show a scenario catches its absence:
 *   drift0        the replica's drift bound 0 ms (cache_svc.c had it so)
 *   ack-refused   a replica acknowledges entries it refused
 *   accounting    the verdict as it was: "asked - failed < need"
 *   drop-race     the handover drops without re-checking its digest
 *   handover-old  the handover drops on equal digests only, no re-check
 *   no-settle     reads ask a quorum only, even after a map change
 *   alone         a node cut off from all others serves QUORUM on its one copy
 *   other-map     a member with another map confirms digests (and pushes) too
 *   epoch-deaf    a node that hears of another map does not settle
 *   settle-hope   a settling read hopes for every owner but needs a quorum
 */
#ifndef CHORUS_SIM_DRIVER_CACHE_H
#define CHORUS_SIM_DRIVER_CACHE_H

#include "core/cplace.h"
#include "core/crepl.h"
#include "core/cstore.h"
#include "core/hlc.h"
#include "proto/chorus.pb-c.h"
#include "sim.h"

#define CSIM_NODES_MAX 8
#define CSIM_PARTITIONS 32        /* few, so that partitions hold several keys */
#define CSIM_OWNERS 3
#define CSIM_TIMEOUT_MS 2000      /* [cache] timeout */
#define CSIM_GOSSIP_MS 1000       /* [cluster] gossip period: a joiner's view must hold still */
#define CSIM_AE_PERIOD_MS 2000
#define CSIM_AE_AFTER_MAP_MS 300
#define CSIM_HINTS_PERIOD_MS 500
#define CSIM_HINTS_BATCH 128
#define CSIM_AE_BATCH 128
#define CSIM_LINK_MAX 256         /* requests in flight per link, as LINK_CONTEXTS */
#define CSIM_REQS_MAX 2048        /* requests in flight per node */
#define CSIM_FRAME_BYTES_MAX (1u << 20)

extern const struct sim_driver sim_driver_cache;

enum csim_bug {
	CSIM_BUG_DRIFT0 = 1u << 0,
	CSIM_BUG_ACK_REFUSED = 1u << 1,
	CSIM_BUG_ACCOUNTING = 1u << 2,
	CSIM_BUG_DROP_RACE = 1u << 3,
	CSIM_BUG_NO_SETTLE = 1u << 4,
	CSIM_BUG_HANDOVER_OLD = 1u << 5,
	CSIM_BUG_ALONE = 1u << 6,
	CSIM_BUG_OTHER_MAP = 1u << 8,
	CSIM_BUG_EPOCH_DEAF = 1u << 9,
	CSIM_BUG_SETTLE_HOPE = 1u << 10,
};

/* An answer to a client request: code 0 and resp, or a CH_ERR_* code. The
 * driver fills resp->version for writes too (the version the primary
 * stamped), and for a GET whose key is a tombstone (found = 0), so that a
 * checker can compare versions; resp is valid during the call only. */
typedef void (*csim_reply_fn)(void *arg, int code, const Chorus__CacheResp *resp);

/* Called before a node drops a partition it handed over (invariant (c)
 * is checked there). */
typedef void (*csim_drop_fn)(void *ctx, uint32_t node, uint32_t partition);

struct cache_world {
	struct sim *sim;
	uint32_t n;
	uint8_t ids[CSIM_NODES_MAX][CPLACE_ID_BYTES];
	uint32_t truth;               /* the member set SWIM converges to (bit per node) */
	uint32_t seeded;              /* nodes that join through seeds when they start */
	uint32_t link_max;
	uint32_t bugs;                /* CSIM_BUG_* */
	uint32_t trace;               /* SIM_CACHE_TRACE: partition + 1 whose events are printed */
	uint32_t lives[CSIM_NODES_MAX];      /* starts so far */
	uint32_t downs[CSIM_NODES_MAX];      /* crashes and stops so far */
	uint64_t started_at[CSIM_NODES_MAX]; /* virtual ms of the last start */
	csim_drop_fn on_drop;
	void *hook_ctx;
	/* statistics over the run */
	uint64_t writes, reads, forwards, moved, repairs, hints_added, hints_delivered;
	uint64_t ae_rounds, ae_pushed, dropped_partitions, dropped_entries;
	uint64_t refused_drift, send_full, timeouts, settle_reads;
};

/* A world of n nodes (none started) on a new simulator: ids from the run's
 * seed, wall clocks within +-100 ms of each other (NTP; the drift bound is
 * 500 ms), the network as sim.c's with no duplication (links are streams). */
struct cache_world *cache_world_new(const struct sim_run *run, uint32_t n);
void cache_world_free(struct cache_world *w);

/* Starts a node (or restarts it after a crash: empty store, same id). A
 * node in `seeded` knows only itself until the world's member set reaches
 * it after join_ms; one not seeded starts knowing `truth` and serving. */
void cache_world_start(struct cache_world *w, uint32_t node, uint64_t join_ms);
void cache_world_crash(struct cache_world *w, uint32_t node);
/* The member set SWIM converges to: every up node adopts it after its own
 * delay in [min_ms, max_ms]. */
void cache_world_members(struct cache_world *w, uint32_t truth, uint64_t min_ms, uint64_t max_ms);
/* The members a subset of nodes believe in (a partition's sides), after a
 * delay in [min_ms, max_ms]. */
void cache_world_view(struct cache_world *w, uint32_t nodes, uint32_t view, uint64_t min_ms, uint64_t max_ms);

/* A client request at `node` (must be up). The answer comes through cb,
 * maybe before this returns, or never if the node crashes first. */
void cache_world_submit(struct cache_world *w, uint32_t node, const Chorus__CacheReq *req, csim_reply_fn cb,
                        void *arg);

/* Inspection, for checkers (NULL / false when the node is down). */
struct cstore *cache_world_store(const struct cache_world *w, uint32_t node);
const struct cplace_map *cache_world_map(const struct cache_world *w, uint32_t node);
uint32_t cache_world_view_of(const struct cache_world *w, uint32_t node);
bool cache_world_serving(const struct cache_world *w, uint32_t node);
bool cache_world_settling(const struct cache_world *w, uint32_t node);
/* Operations still waiting at a node (answered ones excluded). */
uint32_t cache_world_ops_open(const struct cache_world *w, uint32_t node, uint64_t older_than_ms);
uint64_t cache_world_hints(const struct cache_world *w, uint32_t node);
/* The node index of a member id, or SIM_NONE. */
uint32_t cache_world_node_of(const struct cache_world *w, const uint8_t *id);
/* A wall reading of the node's clock, for cstore calls on its store. */
uint64_t cache_world_wall(const struct cache_world *w, uint32_t node);

#endif
