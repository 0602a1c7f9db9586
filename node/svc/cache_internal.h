/*
 * cache_internal.h - what the cache service's files share (cache_svc.h
 * says what the service is; docs/cache.md how it works):
 *   cache_svc.c   the service: the map, routing, the primary's writes and
 *                 reads, replication, cluster-wide operations, requests,
 *                 the cache port, the service hooks;
 *   cache_sync.c  the replica side (CacheRepl), anti-entropy rounds and
 *                 hinted handoff;
 *   cache_persist.c  snapshots of the caches in a sqlite file ([cache]
 *                 persist), loaded at start;
 *   cache_compute.c  get-or-compute (cache_compute.h);
 *   cache_update.c   isolated updates (per-key locks at the primary).
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
	/* "flushed before": the HLC of the newest cluster-wide FLUSH this node
	 * knows (0 none). Entries older than it were removed and are refused
	 * (cache_entry_apply); anti-entropy and snapshots carry it, so a node
	 * that missed the FLUSH cannot bring the entries back. */
	uint64_t flush_hlc;
};

struct cache_svc;
struct cache_compute; /* cache_compute.c: get-or-compute */

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

/* A peer request whose link had no room, kept packed (its envelope body)
 * until room comes. It holds one of o->outstanding. */
#define WQ_PEERS_MAX 64
struct wsend {
	struct wsend *next;
	struct op *o;
	peer_reply_fn cb;
	void *arg;
	uint8_t to[ID_BYTES];
	int body;                /* CHORUS__ENVELOPE__BODY_CACHE, _CACHE_BATCH or _CACHE_REPL */
	uint32_t timeout_ms;
	uint64_t until_ms;
	size_t len;
	uint8_t bytes[];
};

/* Forwards for one primary gathered during one loop iteration, sent as
 * one CacheBatch at the iteration's tick (cache_svc.c, fb_add / fb_flush).
 * Only requests that are safe to send again alone are gathered (see
 * fb_takes). */
#define FB_ENTRIES_MAX 256
#define FB_REPLY_BYTES_MAX (4u << 20)   /* a batch's answer; the rest is sent alone */
#define FB_RECV_MAX 1024                /* requests in one CacheBatch received */

/* Replica copies for one peer and cache gathered during one loop
 * iteration, sent as one CacheRepl at the iteration's tick (cache_svc.c,
 * rb_add / rb_flush): one request and one answer for many writes. */
#define RB_ENTRIES_MAX 256
#define RB_BYTES_MAX (1u << 20)
/* One gathered request to one peer: replica copies or reads (slots) of one
 * cache, or forwards (ops); on a pending list until the tick sends it, then
 * on an in-flight list until its answer (freed at stop). */
struct peer_batch {
	struct peer_batch *next, *prev;
	struct cache_svc *s;
	uint8_t to[ID_BYTES];
	uint32_t cache;              /* copies and reads */
	int read;                    /* reads (read_keys), not copies (entries) */
	uint32_t n;
	size_t bytes;
	union {
		struct op_slot *slots[RB_ENTRIES_MAX]; /* copies and reads */
		struct op *ops[FB_ENTRIES_MAX];        /* forwards */
	};
};
#define RB_READS_RECV_MAX 4096   /* read_keys in one CacheRepl received */

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
	/* peer requests (forwards, replica copies and reads) whose link was
	 * full: sent in order as room comes, or failed "busy" after the cache
	 * timeout (cache_svc.c, peer_send) */
	struct wsend *wq_head, *wq_tail;
	struct {
		uint8_t id[ID_BYTES];
		uint32_t n;
	} wq_peers[WQ_PEERS_MAX];   /* how many wait for each peer */
	uint32_t wq_count;
	int wq_busy, wq_again;
	uint64_t fwd_waited, wq_expired;
	int serving;
	int stopping;                /* svc_stop began: no new request is taken */
	/* hinted handoff: writes a replica failed to acknowledge, kept for it
	 * (oldest first) and sent again while it is in the map */
	struct crepl_hints hintq;
	uint64_t next_hints_ms;
	struct hint_batch *hint_batches; /* sent, not answered */
	/* replica copies waiting for this iteration's tick, and those sent */
	struct peer_batch *rb_pending, *rb_inflight;
	uint64_t rb_sent, rb_entries;
	/* forwards waiting for this iteration's tick, and those sent */
	struct peer_batch *fb_pending, *fb_inflight;
	uint64_t fb_sent, fb_entries, fb_resent;
	/* isolated updates: per-key locks at the primary (cache_update.c) */
	struct cache_locks *locks;
	uint64_t locks_granted, locks_waited, locks_refused, locks_committed, locks_expired;
	/* persistence ([cache] persist): NULL when off */
	struct cache_persist *persist;
	struct cache_compute *compute;   /* get-or-compute (cache_compute.c) */
};

/* ---- cache_svc.c ---- */
uint64_t cache_now_wall(struct cache_svc *s);
struct cache *cache_find(struct cache_svc *s, const char *name);
void cache_version_to_pb(const struct cstore_version *v, Chorus__CacheVersion *pb, uint8_t *node);
int cache_version_from_pb(const Chorus__CacheVersion *pb, struct cstore_version *v);
/* Answers cb with code and a formatted message. */
void cache_answer_error(cache_reply_fn cb, void *arg, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* A write at the primary (PUT, DEL, INCR, ...): applied here at once,
 * answered through cb once `consistency` replicas acknowledged it. */
void cache_primary_write(struct cache_svc *s, struct cache *c, const Chorus__CacheReq *req,
                         uint16_t p, int consistency, cache_reply_fn cb, void *arg);
/* req forwarded to `to`, its key's primary, as any request this node does
 * not lead is: its answer through cb, exactly once, maybe before it
 * returns. */
void cache_forward(struct cache_svc *s, const uint8_t *to, const Chorus__CacheReq *req,
                   cache_reply_fn cb, void *arg);
/* Fills resp from the live entry at key (GET-like answers; pointers into
 * the store and into vpb/node). */
void cache_resp_from_store(struct cache_svc *s, struct cache *c, const void *key, size_t len,
                           Chorus__CacheResp *resp, Chorus__CacheVersion *vpb, uint8_t *node,
                           int count_hit);

/* ---- cache_update.c (isolated updates) ---- */
int cache_update_init(struct cache_svc *s);
/* A CACHE_UPDATE at the key's primary (begin, commit or abort). */
void cache_update(struct cache_svc *s, struct cache *c, const Chorus__CacheReq *req, uint16_t p,
                  int consistency, cache_reply_fn cb, void *arg);
/* Leases run out, waits end, locks of partitions led elsewhere dropped. */
void cache_update_tick(struct cache_svc *s);
void cache_update_clear(struct cache_svc *s);
uint32_t cache_update_locks(const struct cache_svc *s);

/* ---- cache_sync.c ---- */
/* A replicated entry, applied when newer (0), CSTORE_STALE (also for one
 * older than the cache's flush_hlc), or an error. */
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
/* FLUSH here, as its coordinator: stamps a flush_hlc from this node's
 * clock, records it and drops every entry older; returns the stamp, which
 * the fan-out carries to the other members. */
uint64_t cache_flush_here(struct cache_svc *s, struct cache *c);
/* A flush_hlc learned from a peer (a FLUSH fanned out, anti-entropy, an
 * answer): a newer one than c's is recorded, the clock raised past it
 * (hlc_update) and the older entries dropped. 0 (also when not newer), or
 * ERR_INVALID when it is further ahead of this node's wall clock than the
 * drift allows (refused as a version would be; counted, logged). */
int cache_flush_adopt(struct cache_svc *s, struct cache *c, uint64_t flush_hlc);

/* ---- cache_persist.c ---- */
/* Snapshots of every cache's entries in one sqlite file (docs/cache.md,
 * "Persistence"): written whole at a clean stop and, with persist_interval,
 * over many ticks (the bounds below per tick), switched in by a rename;
 * loaded at start with last-writer-wins apply. */
#define CACHE_PERSIST_SCHEMA_VERSION 1
#define CACHE_PERSIST_FILE "cache.db"       /* in the data dir, for persist = on */
#define PERSIST_TICK_ROWS 2000              /* rows one tick writes (a scan step may pass it) */
#define PERSIST_TICK_BYTES (4u << 20)       /* key and value bytes one tick writes */
#define PERSIST_TICK_BUCKETS 16384          /* buckets one tick visits */
#define PERSIST_SCAN_BUCKETS 8              /* buckets per cstore_replication_scan call */
#define PERSIST_ROW_SLACK_BYTES (64u << 10) /* a row's length limit beyond key and value */

struct cache_persist;

/* What cache_persist_create is given (the strings are copied). */
struct cache_persist_options {
	const char *path;          /* the snapshot file: an absolute path */
	const char *data_dir;      /* the node's data dir, where the journal is (NULL: none) */
	uint64_t interval_ms;      /* periodic snapshots; 0 = only cache_persist_write_all */
	uint64_t stop_timeout_ms;  /* cache_persist_write_all gives up after it; 0 = never */
	uint32_t max_drift_ms;     /* the clock's: rows stamped further ahead are left out */
	uint64_t row_bytes_max;    /* sqlite's length limit while loading; 0 = sqlite's own */
};

/* One row of the file as read (pointers into sqlite's row). */
struct cache_persist_row {
	int types_ok;              /* every column had its type (value: blob or NULL) */
	int64_t cache;             /* the file's cache id */
	const void *key;
	size_t key_bytes;
	const void *value;
	size_t value_bytes;
	int has_value;             /* the value column is not NULL */
	int64_t hlc;
	const void *node;
	size_t node_bytes;
	int64_t expire_ms;         /* absolute wall ms, 0 = none */
	int64_t tombstone;         /* 0 or 1 */
	int64_t tombstone_ms;      /* a tombstone's wall time, else 0 */
};

enum {
	PERSIST_ROW_LOAD = 0,
	PERSIST_ROW_EXPIRED,
	PERSIST_ROW_GONE,
	PERSIST_ROW_AHEAD,
	PERSIST_ROW_BAD,
};
/* What load does with a row (pure): PERSIST_ROW_LOAD (a live entry or a
 * tombstone, as it is); _EXPIRED (a live entry whose expiry came less than
 * TOMBSTONE_HORIZON_MS ago: loaded as a tombstone with its version, as the
 * store turns an expired entry); _GONE (a tombstone or an expiry that old:
 * left out); _AHEAD (its version is more than max_drift_ms ahead of the
 * wall clock: left out, and not raising the clock, since the replicas
 * refuse such a version and would refuse every later write of this node
 * too); _BAD with the reason in why (the file is refused as a whole). */
int cache_persist_row_check(const struct cache_persist_row *r, uint64_t now_wall_ms,
                            uint32_t max_drift_ms, char *why, size_t why_len);
const char *cache_persist_verdict_name(int verdict);
/* in (a NUL-terminated string read from a file) into out for a log line:
 * printable ASCII as it is, every other byte and the backslash as \xNN;
 * cut to fit, always terminated. Returns out. */
char *cache_persist_escape(const char *in, char *out, size_t out_len);
/* Whether path may be a snapshot file beside the node's own files (data_dir
 * NULL: no data dir to compare with): not a symbolic link, not something
 * other than a regular file, not the journal (chorus.db and its -wal and
 * -shm, by identity), and, when its directory is the data dir or inside it,
 * only DATA_DIR/cache.db. The directory must exist. 0, or ERR_DENIED /
 * ERR_STORAGE with err set. */
int cache_persist_path_check(const char *path, const char *data_dir, char *err, size_t err_len);

struct cache_persist_load_stats {
	uint64_t rows;             /* read from the file */
	uint64_t loaded;           /* live entries applied to a store */
	uint64_t tombstones;       /* tombstones applied */
	uint64_t expired;          /* expired meanwhile: applied as tombstones */
	uint64_t gone;             /* tombstones and expiries past the horizon: left out */
	uint64_t stale;            /* an older duplicate of a row already applied */
	uint64_t unknown_cache;    /* rows of a cache not configured here */
	uint64_t refused;          /* over this node's limits */
	uint64_t flushed;          /* older than their cache's FLUSH mark: left out */
	uint64_t ahead;            /* versions (or FLUSH marks) too far ahead: left out */
	uint64_t ahead_ms_max;     /* the furthest of them, ms ahead of the wall clock */
	uint64_t hlc_max;          /* the greatest version kept (0 = none) */
	uint64_t written_wall_ms;  /* when the snapshot was written (0 = none loaded) */
	int bad;                   /* the file was refused and set aside */
};

struct cache_persist_stats {
	uint64_t written, failed;  /* snapshots */
	int writing;               /* a periodic one is in progress */
	uint64_t rows;             /* rows of the current or last one */
	uint64_t tick_rows_max;    /* the most rows one periodic step wrote */
	int disabled;
};

/* Checks the path (cache_persist_path_check) and that its directory can be
 * read, written and entered, and takes an exclusive lock on PATH.lock (held
 * until destroy), so that two nodes never share a snapshot. PATH.tmp is
 * written beside PATH. 0, or ERR_INVALID / ERR_STORAGE / ERR_DENIED /
 * ERR_BUSY (the lock is held elsewhere) / ERR_NOMEM with err set. *out owned
 * by the caller (cache_persist_destroy). */
int cache_persist_create(const struct cache_persist_options *o, uint64_t now_mono_ms,
                         struct cache_persist **out, char *err, size_t err_len);
/* Ends a snapshot in progress without keeping it, lets the lock go, frees p
 * (NULL ok). */
void cache_persist_destroy(struct cache_persist *p);
/* Loads the snapshot into the stores (empty ones, at start) and their FLUSH
 * marks (caches[i].flush_hlc). 0 (loaded, or no file); ERR_STORAGE: a
 * Chorus snapshot that cannot be used was refused, logged, renamed to
 * PATH.bad-<now_wall_ms> and every store flushed; ERR_DENIED with err set:
 * PATH (or PATH.tmp) is not recognisably a Chorus snapshot, so it was left
 * as it is, nothing loaded, and the node must not start (it would write
 * over the file at its next snapshot). Logs what it did. */
int cache_persist_load(struct cache_persist *p, struct cache *caches, uint32_t n_caches,
                       uint16_t partition_count, uint64_t now_wall_ms,
                       struct cache_persist_load_stats *st, char *err, size_t err_len);
/* Writes a whole snapshot now, in one transaction (replacing one in
 * progress), giving up after the stop timeout. 0, or ERR_STORAGE /
 * ERR_TIMEOUT (logged; the previous snapshot stays). */
int cache_persist_write_all(struct cache_persist *p, const struct cache *caches, uint32_t n_caches,
                            uint64_t now_wall_ms);
/* Each tick: starts a periodic snapshot when it is due, writes a bounded
 * part of one in progress, switches it in when complete. Failures are
 * logged (rate-limited); the previous snapshot stays. */
void cache_persist_step(struct cache_persist *p, const struct cache *caches, uint32_t n_caches,
                        const struct now *now);
/* Monotonic ms of the next step with work: 0 while writing, UINT64_MAX never. */
uint64_t cache_persist_deadline(const struct cache_persist *p);
void cache_persist_stats(const struct cache_persist *p, struct cache_persist_stats *st);
/* The service's hooks: start (after the stores exist: creates s->persist,
 * loads, raises the HLC past the loaded versions; -1 with err for a path
 * that cannot be used, a directory that cannot be written, a lock held by
 * another node, or a file at the path that is not a Chorus snapshot) and
 * stop (a whole snapshot if the node drained, then destroy). */
int cache_persist_svc_start(struct cache_svc *s, const struct now *now, char *err, size_t err_len);
void cache_persist_svc_stop(struct cache_svc *s);
/* Frees every hint and every batch in flight (at stop). */
void cache_hints_clear(struct cache_svc *s);

#endif
