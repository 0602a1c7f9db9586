/*
 * cstore.h - the local cache store: one named cache's entries on one node.
 *
 * Owns every entry of one cache on this node: a hash table with incremental
 * resizing, an expiry heap, an LRU list for eviction under a memory or entry
 * limit, tombstones with their collection, and per-partition counters and
 * digests. The cluster layer above decides partitions, replication and
 * versions and passes them in; the store only keeps what it is given and
 * decides conflicts by last-writer-wins on the version.
 *
 * Pure (ARCHITECTURE.md): no clock, no I/O, no randomness. Every call that
 * depends on time takes now_ms (any millisecond clock, used consistently: the
 * service passes its monotonic or wall reading, the same one every time);
 * the SipHash key that protects the table from hash flooding is given at
 * create (the shell draws it from libsodium's randombytes).
 *
 * Semantics in short (docs in cstore.c's header comment):
 *  - a key is live, a tombstone (deleted, keeps its version so an older
 *    replicated write cannot bring it back), or absent. An entry whose
 *    expiry has come (expire_ms <= now_ms) is absent for every call: the call
 *    that meets it collects it (lazy expiry), cstore_tick collects the rest.
 *    With `expire_to_tombstone` an expired entry becomes a tombstone with its
 *    version instead (replicated caches want that: see cstore.c).
 *  - every write carries a version (the node's HLC + node id); a write whose
 *    version is not newer than the held live entry or tombstone is refused
 *    with CSTORE_STALE and changes nothing. Local writes and replicated
 *    writes (cstore_apply) follow the same rule, so replicas converge.
 *  - memory_bytes counts every byte the store has asked its allocator for
 *    (entries, both hash tables, the expiry heap, the node-id table, the
 *    per-partition counters and the store itself); the limit compares it.
 *
 * Results: 0 done; CSTORE_NOT_MET (a condition such as NX, XX or the
 * compare-and-set version did not hold) and CSTORE_STALE (LWW refused the
 * version) change nothing; negative lib/err.h codes for bad input
 * (ERR_INVALID, ERR_TOO_LARGE), ERR_NOT_FOUND for a read miss, ERR_NOMEM and
 * ERR_FULL (65,535 distinct node ids held) leave the store unchanged.
 *
 * Pointers handed out (cstore_item.key / .value) point into the store and
 * stay valid until the next cstore_* call on the same store, whatever it is.
 *
 * Threading: none; one caller (the node's loop thread). The scan callbacks
 * run inside cstore_scan / cstore_partition_scan and must not call the store.
 */
#ifndef CHORUS_CORE_CSTORE_H
#define CHORUS_CORE_CSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CSTORE_NODE_ID_BYTES 16u
#define CSTORE_HASH_KEY_BYTES 16u
#define CSTORE_KEY_BYTES_MAX_DEFAULT (64u * 1024u)
#define CSTORE_VALUE_BYTES_MAX_DEFAULT (512u * 1024u * 1024u) /* Redis's proto-max-bulk-len */
#define CSTORE_KEY_BYTES_LIMIT (512u * 1024u * 1024u)         /* the most key_bytes_max may be */
#define CSTORE_VALUE_BYTES_LIMIT (UINT32_MAX - 4096u)          /* the most value_bytes_max may be */
#define CSTORE_PARTITIONS_DEFAULT 271u
#define CSTORE_PARTITIONS_MAX 65536u
#define CSTORE_NODE_IDS_MAX 65535u  /* distinct version node ids held at once */
#define CSTORE_BUCKETS_MIN 4u
#define CSTORE_BUCKETS_MAX (1u << 31)
#define CSTORE_INT_DIGITS_MAX 20u   /* "-9223372036854775808" */

enum cstore_result {
	CSTORE_OK = 0,
	CSTORE_NOT_MET = 1, /* NX / XX / compare-and-set / no such key: nothing changed */
	CSTORE_STALE = 2,   /* the version is not newer than the held one (LWW): nothing changed */
};
/* "ok", "not met", "stale", or err_name() of a negative code. */
const char *cstore_result_name(int code);

/* A version: hybrid logical clock, then node id; compared in that order. */
struct cstore_version {
	uint64_t hlc;
	unsigned char node[CSTORE_NODE_ID_BYTES];
};
/* <0, 0, >0 as a is older than, equal to, newer than b. */
int cstore_version_cmp(const struct cstore_version *a, const struct cstore_version *b);

/* Every allocation of the store goes through these (NULL = malloc family).
 * The sizes passed to resize and release are the ones the store asked for,
 * so a counting allocator sees exactly what memory_bytes says. */
struct cstore_allocator {
	void *(*alloc)(void *ctx, size_t bytes);
	void *(*alloc_zeroed)(void *ctx, size_t bytes);
	void *(*resize)(void *ctx, void *p, size_t old_bytes, size_t new_bytes);
	void (*release)(void *ctx, void *p, size_t bytes);
	void *ctx;
};

struct cstore_config {
	unsigned char hash_key[CSTORE_HASH_KEY_BYTES]; /* SipHash key: random per store */
	uint64_t memory_bytes_max; /* 0 = no limit; LRU eviction above it */
	uint64_t entries_max;      /* 0 = no limit; live entries + tombstones */
	uint32_t key_bytes_max;    /* 0 = CSTORE_KEY_BYTES_MAX_DEFAULT */
	uint32_t value_bytes_max;  /* 0 = CSTORE_VALUE_BYTES_MAX_DEFAULT */
	uint32_t partition_count;  /* partition ids 0..count-1; 0 = CSTORE_PARTITIONS_DEFAULT */
	uint64_t default_ttl_ms;   /* 0 = entries do not expire unless told */
	bool touch_on_read;        /* a hit resets an expiring entry's TTL to default_ttl_ms */
	bool expire_to_tombstone;  /* an expired entry becomes a tombstone instead of vanishing */
	const struct cstore_allocator *allocator; /* NULL = malloc; copied, its ctx must outlive the store */
};

/* One entry as the store shows it. key and value point into the store (valid
 * until the next cstore_* call). */
struct cstore_item {
	const unsigned char *key;
	const unsigned char *value; /* NULL for a tombstone */
	uint32_t key_bytes;
	uint32_t value_bytes;
	struct cstore_version version;
	uint64_t expire_ms;    /* absolute; 0 = none (always 0 for a tombstone) */
	uint64_t tombstone_ms; /* a tombstone's creation time; 0 for a live entry */
	uint16_t partition;
	bool tombstone;
	bool found;            /* for the `old` outputs: there was a live entry */
};

struct cstore_stats {
	uint64_t entries;      /* live entries held (expired ones not yet collected included) */
	uint64_t tombstones;
	uint64_t memory_bytes; /* every byte allocated by the store, itself included */
	uint64_t entry_bytes;  /* of which entries: header + key + value */
	uint64_t key_value_bytes; /* of which key and value bytes */
	uint64_t hits, misses, evictions, expirations;
	uint64_t buckets;      /* both tables */
	uint32_t node_ids;     /* distinct version node ids held (interned) */
	bool rehashing;
};

struct cstore_partition_stats {
	uint64_t entries;    /* live entries (expired ones not yet collected included) */
	uint64_t tombstones;
	uint64_t bytes;      /* entry bytes (header + key + value) */
	uint64_t digest;     /* sum over entries of a hash of (key, version, tombstone) */
};

struct cstore;

/* Creates a store. *out owned by the caller (cstore_destroy). 0, ERR_INVALID
 * (a limit out of range) or ERR_NOMEM. */
int cstore_create(const struct cstore_config *cfg, struct cstore **out);
void cstore_destroy(struct cstore *s);

/* ---- reads ---- */

/* 0 and *out for a live entry (counted as a hit; moves it to the front of
 * the LRU; with touch_on_read, an expiring entry's expiry becomes now_ms +
 * default_ttl_ms); ERR_NOT_FOUND for absent, expired or tombstone (a miss). */
int cstore_get(struct cstore *s, const void *key, size_t key_bytes, uint64_t now_ms,
               struct cstore_item *out);
/* The entry as held, tombstones included (expired ones are absent), for
 * replication: counts no hit or miss, leaves the LRU and TTL alone. 0 and
 * *out; ERR_NOT_FOUND. */
int cstore_peek(struct cstore *s, const void *key, size_t key_bytes, uint64_t now_ms,
                struct cstore_item *out);
/* 1 if live, 0 if not. Counts no hit or miss and leaves the LRU alone. */
int cstore_exists(struct cstore *s, const void *key, size_t key_bytes, uint64_t now_ms);
/* 0 and the time left in *ttl_ms (-1: no expiry); ERR_NOT_FOUND. */
int cstore_ttl(struct cstore *s, const void *key, size_t key_bytes, uint64_t now_ms, int64_t *ttl_ms);

/* ---- local writes (the caller's version on each) ---- */

#define CSTORE_PUT_NX (1u << 0)      /* only if absent (a tombstone is absent) */
#define CSTORE_PUT_XX (1u << 1)      /* only if live */
#define CSTORE_PUT_KEEPTTL (1u << 2) /* keep the live entry's expiry */
#define CSTORE_PUT_GET (1u << 3)     /* fill *old with the live entry before the write */
#define CSTORE_PUT_PERSIST (1u << 4) /* no expiry, even when the store has a default TTL */

struct cstore_put {
	const void *key;
	size_t key_bytes;
	const void *value;
	size_t value_bytes;
	struct cstore_version version;
	uint16_t partition;
	uint32_t flags;         /* CSTORE_PUT_* */
	uint64_t ttl_ms;        /* expire now_ms + ttl_ms; 0 = not given */
	uint64_t expire_at_ms;  /* absolute expiry; 0 = not given */
	/* compare-and-set: write only if the live entry's version equals this */
	const struct cstore_version *if_version;
};

/* Writes key = value. Expiry: ttl_ms or expire_at_ms if given (at most one,
 * and not with KEEPTTL), else the live entry's with KEEPTTL, else none with
 * PERSIST, else default_ttl_ms (0 = none). An expiry at or before now_ms
 * makes the write a delete (a tombstone), as Redis does for a past PXAT.
 * 0 written; CSTORE_NOT_MET (NX, XX or if_version failed); CSTORE_STALE;
 * ERR_INVALID (conflicting flags or expiries, a partition out of range, a
 * NULL pointer with a non-zero size); ERR_TOO_LARGE (key or value over its
 * limit, or the entry alone over memory_bytes_max); ERR_NOMEM; ERR_FULL.
 * With CSTORE_PUT_GET, *old (required) holds the live entry as it was
 * (old->found = false if none), whatever the result. */
int cstore_put(struct cstore *s, const struct cstore_put *req, uint64_t now_ms, struct cstore_item *old);

/* Deletes key: writes a tombstone with version v (also when the key is
 * absent, so that an older write arriving later cannot resurrect it).
 * 0, and *existed (may be NULL) = a live entry was removed; CSTORE_STALE;
 * errors as cstore_put. If old is not NULL it receives the live entry. */
int cstore_delete(struct cstore *s, const void *key, size_t key_bytes, const struct cstore_version *v,
                  uint16_t partition, uint64_t now_ms, bool *existed, struct cstore_item *old);

/* Sets a live entry's absolute expiry (expire_at_ms > 0), a new version on
 * it. An expiry at or before now_ms deletes the key (tombstone with v), as
 * Redis's EXPIRE does. 0; CSTORE_NOT_MET (no live entry); CSTORE_STALE. */
int cstore_expire(struct cstore *s, const void *key, size_t key_bytes, uint64_t expire_at_ms,
                  const struct cstore_version *v, uint64_t now_ms);
/* Removes a live entry's expiry. 0; CSTORE_NOT_MET (no live entry, or it had
 * no expiry: nothing written); CSTORE_STALE. */
int cstore_persist(struct cstore *s, const void *key, size_t key_bytes, const struct cstore_version *v,
                   uint64_t now_ms);

/* Adds delta to the decimal integer held at key (absent = 0, created with
 * the default TTL; a live entry keeps its expiry). The value must be an
 * integer in Redis's sense (optional '-', no '+', no spaces, no leading
 * zeros, fits int64). 0 and *result; ERR_INVALID (not an integer);
 * ERR_TOO_LARGE (the sum overflows int64); CSTORE_STALE; ERR_NOMEM.
 * DECRBY d is delta = -d; the caller refuses d = INT64_MIN, as Redis does. */
int cstore_incr(struct cstore *s, const void *key, size_t key_bytes, int64_t delta,
                const struct cstore_version *v, uint16_t partition, uint64_t now_ms, int64_t *result);

/* ---- replication ---- */

/* A replicated write (LWW): item->key, value, version, expire_ms, tombstone,
 * partition are used (a tombstone's time is now_ms here, where it is held).
 * Applied only if item->version is newer than the held live entry or
 * tombstone (an expired entry is absent). 0 applied; CSTORE_STALE not
 * applied (older or equal); errors as cstore_put. */
int cstore_apply(struct cstore *s, const struct cstore_item *item, uint64_t now_ms);

/* ---- time ---- */

/* Expires at most budget due entries (expire_ms <= now_ms), moves at most
 * budget buckets of an incremental resize, and starts a shrink if the table
 * is sparse. Returns the number of entries expired. */
uint32_t cstore_tick(struct cstore *s, uint64_t now_ms, uint32_t budget);
/* The earliest expiry held, or UINT64_MAX when none. */
uint64_t cstore_next_expiry_ms(const struct cstore *s);
/* Removes at most budget tombstones created before horizon_ms (oldest
 * first). Returns the number removed. */
uint32_t cstore_gc_tombstones(struct cstore *s, uint64_t horizon_ms, uint32_t budget);

/* ---- iteration ---- */

/* Called for each entry a scan returns; must not call the store. */
typedef void (*cstore_visit_fn)(void *ctx, const struct cstore_item *item);

/* Redis's SCAN: start with cursor 0, continue with *next_cursor until it is
 * 0. Every entry live for the whole scan is returned at least once, across
 * any resizes; some may come twice. pattern (a glob, NULL = all) filters
 * keys; count is a hint (0 = 10): a call stops once it returned count
 * entries or visited 10 x count buckets (a step visits one bucket and,
 * while resizing, those it splits into, so a call may pass either a little).
 * Live entries only. 0, or ERR_INVALID for a cursor this store never handed
 * out (cursors carry a keyed check). */
int cstore_scan(struct cstore *s, uint64_t cursor, const char *pattern, size_t pattern_bytes,
                uint32_t count, uint64_t now_ms, cstore_visit_fn fn, void *ctx, uint64_t *next_cursor);

/* A cursor's position (its low 32 bits) and the cursor again from it, for
 * a caller that packs positions into a cursor of its own (the cluster-wide
 * SCAN) and so cannot carry the keyed check: a position is any value; one
 * this store never handed out is refused by cstore_scan as usual. */
uint32_t cstore_cursor_position(uint64_t cursor);
uint64_t cstore_cursor_from_position(const struct cstore *s, uint32_t position);

/* Redis's glob matching (stringmatchlen): '*', '?', '[abc]', '[^a]', '[a-z]'
 * (reversed ranges allowed), '\' escapes. 1 match, 0 not. No recursion;
 * O(pattern x string) time at worst. Bytes compare as unsigned. */
int cstore_glob_match(const char *pattern, size_t pattern_bytes, const char *str, size_t str_bytes);

/* ---- partitions ---- */

/* Entries of one partition, tombstones included (live expired ones are
 * not), for streaming it to another node: the same cursor as cstore_scan;
 * a call stops once it visited `buckets` buckets (the table is shared by all
 * partitions: a whole pass visits every bucket, whatever the partition's
 * size). Each entry present for the whole pass is visited at least once.
 * 0, or ERR_INVALID. */
int cstore_partition_scan(struct cstore *s, uint16_t partition, uint64_t cursor, uint32_t buckets,
                          uint64_t now_ms, cstore_visit_fn fn, void *ctx, uint64_t *next_cursor);
/* Every entry of every partition, tombstones included (live expired ones
 * not), in one pass, for anti-entropy: cursor and budget as above. */
int cstore_replication_scan(struct cstore *s, uint64_t cursor, uint32_t buckets, uint64_t now_ms,
                            cstore_visit_fn fn, void *ctx, uint64_t *next_cursor);
/* Removes the partition's entries (live and tombstones, no tombstones left
 * behind) from at most `buckets` buckets per call, cursor as above. *removed
 * (may be NULL) gets the count. 0, or ERR_INVALID. */
int cstore_partition_drop(struct cstore *s, uint16_t partition, uint64_t cursor, uint32_t buckets,
                          uint64_t *next_cursor, uint64_t *removed);
/* Removes every entry (live and tombstones, no tombstones left behind)
 * whose version's hlc is below `hlc`, from at most `buckets` buckets per
 * call, cursor as above: what a cluster-wide FLUSH stamped `hlc` removes,
 * leaving the writes made after it. Each entry present for the whole pass
 * is met; the caller refuses older entries meanwhile (an entry that arrives
 * behind the cursor is not removed). *removed (may be NULL) gets the count.
 * 0, or ERR_INVALID. */
int cstore_drop_older(struct cstore *s, uint64_t hlc, uint64_t cursor, uint32_t buckets,
                      uint64_t *next_cursor, uint64_t *removed);
/* Counters of one partition, kept up to date on every change (O(1)).
 * Two replicas holding the same keys with the same versions and tombstone
 * flags have equal digests, whatever the order of their writes. 0, or
 * ERR_INVALID for a partition id out of range. */
int cstore_partition_stats(const struct cstore *s, uint16_t partition, struct cstore_partition_stats *out);

/* ---- whole store ---- */

/* Removes every entry (live and tombstones) at once; counters such as hits
 * stay. O(entries): a pause of its own, as Redis's synchronous FLUSHDB. */
void cstore_flush(struct cstore *s);
void cstore_stats(const struct cstore *s, struct cstore_stats *out);
/* Bytes an entry with these key and value sizes takes (header + key +
 * value); a tombstone takes cstore_entry_bytes(key_bytes, 0). */
size_t cstore_entry_bytes(size_t key_bytes, size_t value_bytes);

#endif
