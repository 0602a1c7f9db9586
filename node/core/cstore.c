/*
 * cstore.c - the local cache store (see cstore.h for the contract).
 *
 * Layout. One allocation per entry: a 57-byte header, then the key, then the
 * value (struct centry). The header is what the per-entry overhead target
 * (<= 80 bytes beyond key and value) is spent on:
 *     chain 8 | LRU or tombstone list 16 | hlc 8 | expiry or tombstone time 8
 *     | heap slot 4 | key length 4 | value length 4 | partition 2 | node 2
 *     | flags 1
 * plus a bucket pointer (8 bytes per bucket, 0.5 to 1 entry per bucket) and,
 * for an expiring entry, a heap slot (8 bytes). The version's 16-byte node
 * id is interned: entries hold a 16-bit index into a small table of the
 * node ids in use (reference counted, open addressing with backward-shift
 * deletion), since a cluster has few nodes and millions of entries. The
 * key's hash is not stored (4 more bytes an entry): a resize re-hashes each
 * key it moves, tens of nanoseconds for a short key.
 *
 * Hash table: Redis's dict.c scheme. Chained buckets, power-of-two sizes,
 * two tables while resizing; every call moves one bucket (and passes no
 * more than ten empty ones), every write two, cstore_tick `budget` more.
 * Grow at one entry per bucket to twice the entries; shrink below one entry
 * per eight buckets. A grow from S buckets ends within S writes, before the
 * next one is due. Unlike dict.c, no call touches a whole array: the new
 * table is cleared bucket by bucket as the move reaches it and the old one
 * is given back in slices (see "the hash table" below), so what one call
 * does is bounded by constants, not by the size of the table. SipHash
 * (crypto_shorthash) with the caller's random key, so a client cannot choose
 * keys that share a bucket.
 *
 * Scan: Redis's reverse-binary cursor (dictScan): the cursor's bits are
 * incremented from the top, so the buckets that one bucket splits into (or
 * folds from) on a resize are visited together and every entry present for
 * the whole scan comes back at least once, across any number of resizes
 * between calls. The cursor is the bucket cursor (< 2^31) with a 32-bit
 * SipHash tag of it above, under a key derived from the store's: a cursor
 * this store never handed out is refused instead of scanning from a random
 * place.
 *
 * Expiry: a binary min-heap of the expiring entries (each holds its slot;
 * the heap lives in 32 KiB segments, so it never copies a big array),
 * collected by cstore_tick within a budget, and by any call that meets an
 * expired entry (lazy). An expired entry is absent for every call, writes
 * and LWW included: whether the tick got to it first must not change a
 * result. With expire_to_tombstone the entry becomes a tombstone that keeps
 * its version (Cassandra turns expired cells into tombstones for the same
 * reason): without it, a replica that expired a newer write accepts an older
 * one arriving late (hinted handoff) that its peers refused.
 *
 * Lists: live entries are on the LRU list (front = most recently used);
 * tombstones on a FIFO in creation order (a tombstone created with a time
 * before the newest one's takes the newest one's time, so the FIFO stays
 * sorted and GC stays O(1) per tombstone; that only delays collection).
 * Eviction takes the LRU's back, then the oldest tombstones, never the entry
 * the current call wrote. Evicting a tombstone forgets a delete (an older
 * write arriving late could then bring the key back); the limit comes
 * first, as it must in a cache, and live entries go before any tombstone.
 *
 * Memory: every allocation goes through one set of functions that add to or
 * subtract from memory_bytes the size asked for, so memory_bytes is exact
 * (tests check it against a counting allocator). The limit is checked after
 * each write (which evicts until under it); a resize's second table counts.
 * The allocator's own bookkeeping (glibc: 8 bytes a chunk, rounded up to 16)
 * is not the store's to know; bench_cstore prints the RSS figure beside it.
 *
 * Partition digest: the sum (mod 2^64) over the partition's entries of a
 * hash of (key, version, tombstone): order-independent, updated in O(1) on
 * each change. Its key hash uses a fixed SipHash key, not the store's,
 * since two replicas must agree; it guards no resource, so a fixed key
 * costs nothing.
 */
#include "core/cstore.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "lib/err.h"

/* ---- entries ---- */

struct clink {
	struct clink *prev, *next;
};

struct centry {
	struct centry *chain;  /* next in the bucket */
	struct clink list;     /* LRU (live) or tombstone FIFO */
	uint64_t hlc;
	uint64_t time_ms;      /* live: absolute expiry (0 none); tombstone: creation */
	uint32_t heap_pos;     /* 1-based slot in the expiry heap; 0 = not there */
	uint32_t key_bytes;
	uint32_t value_bytes;  /* bytes allocated after the key (0 for a tombstone) */
	uint16_t partition;
	uint16_t node;         /* index into the node-id table */
	uint8_t flags;
	unsigned char data[];  /* key, then value */
};

#define ENTRY_HEADER_BYTES offsetof(struct centry, data)
_Static_assert(offsetof(struct centry, data) == 57, "the entry header is 57 bytes");

#define E_TOMB 1u

#define ENTRY_OF(l) ((struct centry *)(void *)((char *)(l) - offsetof(struct centry, list)))

struct cnode {
	unsigned char id[CSTORE_NODE_ID_BYTES]; /* a free slot keeps the next free slot + 1 here */
	uint32_t refs;
};

struct ctable {
	struct centry **b;
	uint64_t size; /* power of two */
	uint64_t used; /* entries */
};

#define HEAP_SEG_BITS 12u
#define HEAP_SEG (1u << HEAP_SEG_BITS) /* slots per heap segment (32 KiB) */
#define HEAP_FIRST_MIN 16u             /* the first segment starts this small */
#define RELEASE_SLICE_BUCKETS 4096u  /* old-table memory given back 32 KiB at a time */
#define EARLY_FINISH_BUCKETS 4096u    /* an empty table's resize ends at once below this */
#define REHASH_STEP_READ 1u
#define REHASH_STEP_WRITE 2u
#define SCAN_COUNT_DEFAULT 10u

struct cstore {
	struct cstore_config cfg; /* defaults resolved */
	struct cstore_allocator al;
	unsigned char cursor_key[CSTORE_HASH_KEY_BYTES];

	struct ctable t[2];
	uint64_t t0_alloc;        /* buckets of t[0] still allocated (released in slices while resizing) */
	uint64_t rehash_idx;      /* while resizing: buckets of t[0] below it are still to move */
	bool rehashing;

	struct clink lru;         /* live entries, front = most recently used */
	struct clink tombs;       /* tombstones, front = oldest */

	struct centry ***heap_dir; /* min-heap on time_ms of the expiring live entries, in segments */
	uint32_t heap_count, heap_segs, heap_dir_cap, heap_first_cap;

	struct cnode *nodes;
	uint16_t *node_idx;       /* open addressing: slot + 1, 0 = empty */
	uint32_t node_cap, node_used, node_free, node_live, node_idx_cap;

	struct cstore_partition_stats *parts;

	struct centry *retired;   /* an entry replaced under CSTORE_PUT_GET: freed on the next call */
	size_t retired_bytes;

	uint64_t memory_bytes, entry_bytes, kv_bytes, live_count, tomb_count;
	uint64_t hits, misses, evictions, expirations;
	bool in_callback;
};

/* ---- small helpers ---- */

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= UINT64_C(0xbf58476d1ce4e5b9);
	x ^= x >> 27;
	x *= UINT64_C(0x94d049bb133111eb);
	x ^= x >> 31;
	return x;
}

static uint64_t load64(const unsigned char *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static uint64_t rev64(uint64_t v)
{
	v = ((v >> 1) & UINT64_C(0x5555555555555555)) | ((v & UINT64_C(0x5555555555555555)) << 1);
	v = ((v >> 2) & UINT64_C(0x3333333333333333)) | ((v & UINT64_C(0x3333333333333333)) << 2);
	v = ((v >> 4) & UINT64_C(0x0f0f0f0f0f0f0f0f)) | ((v & UINT64_C(0x0f0f0f0f0f0f0f0f)) << 4);
	v = ((v >> 8) & UINT64_C(0x00ff00ff00ff00ff)) | ((v & UINT64_C(0x00ff00ff00ff00ff)) << 8);
	v = ((v >> 16) & UINT64_C(0x0000ffff0000ffff)) | ((v & UINT64_C(0x0000ffff0000ffff)) << 16);
	return (v >> 32) | (v << 32);
}

static uint64_t add_sat(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t siphash(const unsigned char key[CSTORE_HASH_KEY_BYTES], const void *p, size_t n)
{
	static const unsigned char empty[1];
	unsigned char out[crypto_shorthash_BYTES];
	crypto_shorthash(out, n ? p : empty, n, key);
	return load64(out);
}

static const unsigned char DIGEST_KEY[CSTORE_HASH_KEY_BYTES] = "chorus cstore dg";

int cstore_version_cmp(const struct cstore_version *a, const struct cstore_version *b)
{
	if (a->hlc != b->hlc)
		return a->hlc < b->hlc ? -1 : 1;
	return memcmp(a->node, b->node, CSTORE_NODE_ID_BYTES);
}

const char *cstore_result_name(int code)
{
	switch (code) {
	case CSTORE_OK:
		return "ok";
	case CSTORE_NOT_MET:
		return "not met";
	case CSTORE_STALE:
		return "stale";
	default:
		return err_name(code);
	}
}

size_t cstore_entry_bytes(size_t key_bytes, size_t value_bytes)
{
	return ENTRY_HEADER_BYTES + key_bytes + value_bytes;
}

static size_t entry_size(const struct centry *e)
{
	return ENTRY_HEADER_BYTES + (size_t)e->key_bytes + e->value_bytes;
}

static bool is_tomb(const struct centry *e)
{
	return (e->flags & E_TOMB) != 0;
}

static bool is_expired(const struct centry *e, uint64_t now_ms)
{
	return !is_tomb(e) && e->time_ms != 0 && e->time_ms <= now_ms;
}

/* ---- memory: every byte the store holds passes here ---- */

static void *def_alloc(void *ctx, size_t n)
{
	(void)ctx;
	return malloc(n);
}

static void *def_alloc_zeroed(void *ctx, size_t n)
{
	(void)ctx;
	return calloc(1, n);
}

static void *def_resize(void *ctx, void *p, size_t old_n, size_t new_n)
{
	(void)ctx;
	(void)old_n;
	return realloc(p, new_n);
}

static void def_release(void *ctx, void *p, size_t n)
{
	(void)ctx;
	(void)n;
	free(p);
}

static void *m_alloc(struct cstore *s, size_t n)
{
	void *p = s->al.alloc(s->al.ctx, n);
	if (p)
		s->memory_bytes += n;
	return p;
}

static void *m_alloc_zeroed(struct cstore *s, size_t n)
{
	void *p = s->al.alloc_zeroed(s->al.ctx, n);
	if (p)
		s->memory_bytes += n;
	return p;
}

static void *m_resize(struct cstore *s, void *p, size_t old_n, size_t new_n)
{
	void *q = s->al.resize(s->al.ctx, p, old_n, new_n);
	if (q)
		s->memory_bytes = s->memory_bytes - old_n + new_n;
	return q;
}

static void m_free(struct cstore *s, void *p, size_t n)
{
	if (!p)
		return;
	assert(s->memory_bytes >= n);
	s->al.release(s->al.ctx, p, n);
	s->memory_bytes -= n;
}

/* ---- intrusive lists ---- */

static void list_init(struct clink *h)
{
	h->prev = h->next = h;
}

static bool list_empty(const struct clink *h)
{
	return h->next == h;
}

static void list_del(struct clink *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = NULL;
}

static void list_push_front(struct clink *h, struct clink *n)
{
	n->prev = h;
	n->next = h->next;
	h->next->prev = n;
	h->next = n;
}

static void list_push_back(struct clink *h, struct clink *n)
{
	n->next = h;
	n->prev = h->prev;
	h->prev->next = n;
	h->prev = n;
}

/* Tombstones stay sorted by creation time: see the top of the file. */
static void tomb_append(struct cstore *s, struct centry *e)
{
	if (!list_empty(&s->tombs)) {
		const struct centry *last = ENTRY_OF(s->tombs.prev);
		if (e->time_ms < last->time_ms)
			e->time_ms = last->time_ms;
	}
	list_push_back(&s->tombs, &e->list);
}

/* ---- the node-id table ---- */

static uint32_t node_home(const struct cstore *s, const unsigned char *id)
{
	return (uint32_t)mix64(load64(id) ^ mix64(load64(id + 8))) & (s->node_idx_cap - 1);
}

static int64_t node_lookup(const struct cstore *s, const unsigned char *id)
{
	if (!s->node_idx_cap)
		return -1;
	uint32_t mask = s->node_idx_cap - 1;
	for (uint32_t i = node_home(s, id);; i = (i + 1) & mask) {
		uint16_t v = s->node_idx[i];
		if (!v)
			return -1;
		if (memcmp(s->nodes[v - 1].id, id, CSTORE_NODE_ID_BYTES) == 0)
			return v - 1;
	}
}

static void node_index_put(struct cstore *s, uint32_t slot)
{
	uint32_t mask = s->node_idx_cap - 1;
	uint32_t i = node_home(s, s->nodes[slot].id);
	while (s->node_idx[i])
		i = (i + 1) & mask;
	s->node_idx[i] = (uint16_t)(slot + 1);
}

static int node_index_resize(struct cstore *s, uint32_t cap)
{
	uint16_t *idx = m_alloc_zeroed(s, (size_t)cap * sizeof(*idx));
	if (!idx)
		return ERR_NOMEM;
	m_free(s, s->node_idx, (size_t)s->node_idx_cap * sizeof(*idx));
	s->node_idx = idx;
	s->node_idx_cap = cap;
	for (uint32_t slot = 0; slot < s->node_used; slot++)
		if (s->nodes[slot].refs)
			node_index_put(s, slot);
	return 0;
}

/* Knuth's algorithm R (TAOCP 6.4): close the gap so every later entry of the
 * probe run stays reachable from its home. */
static void node_index_remove(struct cstore *s, uint32_t slot)
{
	uint32_t mask = s->node_idx_cap - 1;
	uint32_t i = node_home(s, s->nodes[slot].id);
	while (s->node_idx[i] != slot + 1) {
		assert(s->node_idx[i] != 0);
		i = (i + 1) & mask;
	}
	for (;;) {
		uint32_t j = i;
		for (;;) {
			j = (j + 1) & mask;
			if (!s->node_idx[j]) {
				s->node_idx[i] = 0;
				return;
			}
			uint32_t k = node_home(s, s->nodes[s->node_idx[j] - 1].id);
			bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
			if (!stays)
				break;
		}
		s->node_idx[i] = s->node_idx[j];
		i = j;
	}
}

static void node_table_free(struct cstore *s)
{
	m_free(s, s->nodes, (size_t)s->node_cap * sizeof(*s->nodes));
	m_free(s, s->node_idx, (size_t)s->node_idx_cap * sizeof(*s->node_idx));
	s->nodes = NULL;
	s->node_idx = NULL;
	s->node_cap = s->node_used = s->node_free = s->node_live = s->node_idx_cap = 0;
}

/* Takes a reference on id's slot, adding it if new. 0, ERR_NOMEM or
 * ERR_FULL; on error nothing that matters changed (a table may have grown). */
static int node_acquire(struct cstore *s, const unsigned char *id, uint16_t *out)
{
	int64_t found = node_lookup(s, id);
	if (found >= 0) {
		s->nodes[found].refs++;
		*out = (uint16_t)found;
		return 0;
	}
	if (!s->node_free && s->node_used == s->node_cap) {
		if (s->node_cap >= CSTORE_NODE_IDS_MAX)
			return ERR_FULL;
		uint32_t cap = s->node_cap ? s->node_cap * 2 : 8;
		if (cap > CSTORE_NODE_IDS_MAX)
			cap = CSTORE_NODE_IDS_MAX;
		struct cnode *p = m_resize(s, s->nodes, (size_t)s->node_cap * sizeof(*p), (size_t)cap * sizeof(*p));
		if (!p)
			return ERR_NOMEM;
		s->nodes = p;
		s->node_cap = cap;
	}
	if ((s->node_live + 1) * 2 > s->node_idx_cap) {
		if (node_index_resize(s, s->node_idx_cap ? s->node_idx_cap * 2 : 16) != 0)
			return ERR_NOMEM;
	}
	uint32_t slot;
	if (s->node_free) {
		slot = s->node_free - 1;
		memcpy(&s->node_free, s->nodes[slot].id, sizeof(s->node_free));
	} else {
		slot = s->node_used++;
	}
	memcpy(s->nodes[slot].id, id, CSTORE_NODE_ID_BYTES);
	s->nodes[slot].refs = 1;
	s->node_live++;
	node_index_put(s, slot);
	*out = (uint16_t)slot;
	return 0;
}

static void node_release(struct cstore *s, uint16_t slot)
{
	assert(slot < s->node_used && s->nodes[slot].refs > 0);
	if (--s->nodes[slot].refs)
		return;
	node_index_remove(s, slot);
	if (--s->node_live == 0) {
		node_table_free(s);
		return;
	}
	memcpy(s->nodes[slot].id, &s->node_free, sizeof(s->node_free));
	s->node_free = slot + 1u;
}

/* ---- the expiry heap ----
 * A binary min-heap on time_ms, kept in segments of HEAP_SEG slots behind a
 * small directory (the first segment grows by doubling up to HEAP_SEG): it
 * grows and shrinks a segment at a time, so no call ever copies a big array
 * (a realloc of one array of millions of slots could). */

static uint32_t heap_capacity(const struct cstore *s)
{
	return s->heap_segs == 0 ? 0 : s->heap_segs == 1 ? s->heap_first_cap : s->heap_segs * HEAP_SEG;
}

static struct centry **heap_at(const struct cstore *s, uint32_t i)
{
	return &s->heap_dir[i >> HEAP_SEG_BITS][i & (HEAP_SEG - 1)];
}

static void heap_put(struct cstore *s, uint32_t i, struct centry *e)
{
	*heap_at(s, i) = e;
	e->heap_pos = i + 1;
}

static void heap_sift_up(struct cstore *s, uint32_t i)
{
	struct centry *e = *heap_at(s, i);
	while (i > 0) {
		uint32_t parent = (i - 1) / 2;
		struct centry *pe = *heap_at(s, parent);
		if (pe->time_ms <= e->time_ms)
			break;
		heap_put(s, i, pe);
		i = parent;
	}
	heap_put(s, i, e);
}

static void heap_sift_down(struct cstore *s, uint32_t i)
{
	struct centry *e = *heap_at(s, i);
	for (;;) {
		uint32_t l = 2 * i + 1;
		if (l >= s->heap_count)
			break;
		struct centry *c = *heap_at(s, l);
		uint32_t ci = l;
		if (l + 1 < s->heap_count && (*heap_at(s, l + 1))->time_ms < c->time_ms) {
			ci = l + 1;
			c = *heap_at(s, ci);
		}
		if (e->time_ms <= c->time_ms)
			break;
		heap_put(s, i, c);
		i = ci;
	}
	heap_put(s, i, e);
}

/* Room for one more, so that heap_insert cannot fail after a write began. */
static int heap_reserve(struct cstore *s)
{
	if (s->heap_count < heap_capacity(s))
		return 0;
	if (s->heap_count >= UINT32_MAX - HEAP_SEG)
		return ERR_FULL;
	if (s->heap_segs == 1 && s->heap_first_cap < HEAP_SEG) {
		uint32_t cap = s->heap_first_cap * 2;
		struct centry **seg = m_resize(s, s->heap_dir[0], (size_t)s->heap_first_cap * sizeof(*seg),
		                               (size_t)cap * sizeof(*seg));
		if (!seg)
			return ERR_NOMEM;
		s->heap_dir[0] = seg;
		s->heap_first_cap = cap;
		return 0;
	}
	if (s->heap_segs == s->heap_dir_cap) {
		uint32_t cap = s->heap_dir_cap ? s->heap_dir_cap * 2 : 4;
		struct centry ***dir = m_resize(s, s->heap_dir, (size_t)s->heap_dir_cap * sizeof(*dir),
		                                (size_t)cap * sizeof(*dir));
		if (!dir)
			return ERR_NOMEM;
		s->heap_dir = dir;
		s->heap_dir_cap = cap;
	}
	uint32_t slots = s->heap_segs ? HEAP_SEG : HEAP_FIRST_MIN;
	struct centry **seg = m_alloc(s, (size_t)slots * sizeof(*seg));
	if (!seg)
		return ERR_NOMEM;
	if (s->heap_segs == 0)
		s->heap_first_cap = slots;
	s->heap_dir[s->heap_segs++] = seg;
	return 0;
}

static void heap_insert(struct cstore *s, struct centry *e)
{
	assert(s->heap_count < heap_capacity(s) && e->heap_pos == 0);
	heap_put(s, s->heap_count++, e);
	heap_sift_up(s, s->heap_count - 1);
}

static void heap_fix(struct cstore *s, struct centry *e)
{
	assert(e->heap_pos > 0);
	heap_sift_up(s, e->heap_pos - 1);
	heap_sift_down(s, e->heap_pos - 1);
}

static void heap_remove(struct cstore *s, struct centry *e)
{
	assert(e->heap_pos > 0 && e->heap_pos <= s->heap_count && *heap_at(s, e->heap_pos - 1) == e);
	uint32_t i = e->heap_pos - 1;
	struct centry *last = *heap_at(s, --s->heap_count);
	e->heap_pos = 0;
	if (i < s->heap_count) {
		heap_put(s, i, last);
		heap_fix(s, last);
	}
}

static void heap_free_all(struct cstore *s)
{
	for (uint32_t i = 0; i < s->heap_segs; i++)
		m_free(s, s->heap_dir[i], (size_t)(i ? HEAP_SEG : s->heap_first_cap) * sizeof(**s->heap_dir));
	m_free(s, s->heap_dir, (size_t)s->heap_dir_cap * sizeof(*s->heap_dir));
	s->heap_dir = NULL;
	s->heap_count = s->heap_segs = s->heap_dir_cap = s->heap_first_cap = 0;
}

/* Gives back heap segments once unused, keeping one spare so that an entry
 * coming and going at a boundary does not allocate each time (at the end of
 * a call, never between a reserve and its insert). */
static void heap_trim(struct cstore *s)
{
	if (s->heap_count == 0) {
		if (s->heap_segs)
			heap_free_all(s);
		return;
	}
	uint32_t used = (s->heap_count + HEAP_SEG - 1) / HEAP_SEG;
	while (s->heap_segs > used + 1 && s->heap_segs > 1)
		m_free(s, s->heap_dir[--s->heap_segs], (size_t)HEAP_SEG * sizeof(**s->heap_dir));
	if (s->heap_segs != 1 || s->heap_first_cap <= HEAP_FIRST_MIN || s->heap_count >= s->heap_first_cap / 4)
		return;
	uint32_t cap = HEAP_FIRST_MIN;
	while (cap < s->heap_count * 2)
		cap *= 2;
	struct centry **seg = m_resize(s, s->heap_dir[0], (size_t)s->heap_first_cap * sizeof(*seg),
	                               (size_t)cap * sizeof(*seg));
	if (seg) {
		s->heap_dir[0] = seg;
		s->heap_first_cap = cap;
	}
}

/* ---- accounting and digests ---- */

static uint64_t entry_digest(const struct cstore *s, const struct centry *e)
{
	const unsigned char *node = s->nodes[e->node].id;
	uint64_t h = siphash(DIGEST_KEY, e->data, e->key_bytes);
	uint64_t v = mix64(load64(node + 8) + (is_tomb(e) ? 1u : 0u));
	v = mix64(load64(node) ^ v);
	v = mix64(e->hlc ^ v);
	return mix64(h ^ v);
}

static void account_add(struct cstore *s, const struct centry *e)
{
	struct cstore_partition_stats *ps = &s->parts[e->partition];
	size_t bytes = entry_size(e);
	if (is_tomb(e)) {
		ps->tombstones++;
		s->tomb_count++;
	} else {
		ps->entries++;
		s->live_count++;
	}
	ps->bytes += bytes;
	ps->digest += entry_digest(s, e);
	s->entry_bytes += bytes;
	s->kv_bytes += (uint64_t)e->key_bytes + e->value_bytes;
}

static void account_remove(struct cstore *s, const struct centry *e)
{
	struct cstore_partition_stats *ps = &s->parts[e->partition];
	size_t bytes = entry_size(e);
	if (is_tomb(e)) {
		assert(ps->tombstones > 0 && s->tomb_count > 0);
		ps->tombstones--;
		s->tomb_count--;
	} else {
		assert(ps->entries > 0 && s->live_count > 0);
		ps->entries--;
		s->live_count--;
	}
	assert(ps->bytes >= bytes && s->entry_bytes >= bytes);
	ps->bytes -= bytes;
	ps->digest -= entry_digest(s, e);
	s->entry_bytes -= bytes;
	s->kv_bytes -= (uint64_t)e->key_bytes + e->value_bytes;
}

/* ---- the hash table ----
 * While resizing, t[0] is the old table and t[1] the new one. The old
 * table's buckets move from the top down: those at or above rehash_idx have
 * moved. A key whose old bucket is below rehash_idx is still in t[0], any
 * other is in t[1]: one bucket to look in, never two. The new table is
 * allocated without being zeroed (zeroing or copying a big array at once is
 * the pause this avoids): a bucket of t[1] is cleared when the first old
 * bucket that feeds it moves, and is read only after that (t1_ready). The
 * old table is given back in slices as the move goes down, not all at the
 * end (a single free of a big array costs a munmap of all its pages). */

struct found {
	struct centry **link; /* what points at e (bucket slot or a chain field) */
	struct centry *e;
	int table;
	uint64_t h;
};

static uint64_t key_hash(const struct cstore *s, const void *key, size_t n)
{
	return siphash(s->cfg.hash_key, key, n);
}

static bool key_eq(const struct centry *e, const void *key, uint32_t n)
{
	return e->key_bytes == n && (n == 0 || memcmp(e->data, key, n) == 0);
}

/* Has bucket j of t[1] been cleared (is it part of the table yet)? Growing,
 * old bucket j mod size0 feeds it; shrinking, old buckets j, j + size1, ...
 * feed it, and the highest of them, j + size0 - size1, moves first. */
static bool t1_ready(const struct cstore *s, uint64_t j)
{
	uint64_t s0 = s->t[0].size, s1 = s->t[1].size;
	return s1 > s0 ? (j & (s0 - 1)) >= s->rehash_idx : j + (s0 - s1) >= s->rehash_idx;
}

/* The bucket that holds (or would hold) hash h. */
static struct centry **bucket_of(struct cstore *s, uint64_t h, int *table)
{
	uint64_t i0 = h & (s->t[0].size - 1);
	if (!s->rehashing || i0 < s->rehash_idx) {
		*table = 0;
		return &s->t[0].b[i0];
	}
	*table = 1;
	return &s->t[1].b[h & (s->t[1].size - 1)];
}

/* Bucket idx of a table as a scan sees it: NULL for a moved bucket of t[0]
 * and a not yet cleared one of t[1] (both empty, as far as keys go). */
static struct centry **bucket_at(struct cstore *s, int table, uint64_t idx)
{
	if (s->rehashing && (table == 0 ? idx >= s->rehash_idx : !t1_ready(s, idx)))
		return NULL;
	return &s->t[table].b[idx];
}

static void find(struct cstore *s, const void *key, uint32_t n, struct found *f)
{
	f->h = key_hash(s, key, n);
	f->e = NULL;
	f->link = NULL;
	int table;
	for (struct centry **l = bucket_of(s, f->h, &table); *l; l = &(*l)->chain) {
		if (key_eq(*l, key, n)) {
			f->link = l;
			f->e = *l;
			f->table = table;
			return;
		}
	}
	f->table = -1;
}

/* Where e hangs in the table. */
static void locate(struct cstore *s, struct centry *e, struct found *f)
{
	f->h = key_hash(s, e->data, e->key_bytes);
	f->e = e;
	struct centry **l = bucket_of(s, f->h, &f->table);
	while (*l != e) {
		assert(*l && "entry not in the table");
		l = &(*l)->chain;
	}
	f->link = l;
}

static void table_insert(struct cstore *s, struct centry *e, uint64_t h)
{
	int table;
	struct centry **b = bucket_of(s, h, &table);
	e->chain = *b;
	*b = e;
	s->t[table].used++;
}

static void finish_rehash(struct cstore *s)
{
	assert(s->rehashing && s->rehash_idx == 0 && s->t[0].used == 0);
	m_free(s, s->t[0].b, s->t0_alloc * sizeof(*s->t[0].b));
	s->t[0] = s->t[1];
	s->t0_alloc = s->t[0].size;
	memset(&s->t[1], 0, sizeof(s->t[1]));
	s->rehashing = false;
}

/* Moves old bucket rehash_idx - 1, clearing the new buckets it is the first
 * to feed. */
static void rehash_bucket(struct cstore *s)
{
	struct ctable *t0 = &s->t[0], *t1 = &s->t[1];
	uint64_t i = --s->rehash_idx;
	if (t1->size > t0->size) {
		for (uint64_t j = i; j < t1->size; j += t0->size)
			t1->b[j] = NULL;
	} else if (i >= t0->size - t1->size) {
		t1->b[i - (t0->size - t1->size)] = NULL;
	}
	struct centry *e = t0->b[i];
	while (e) {
		struct centry *next = e->chain;
		struct centry **b = &t1->b[key_hash(s, e->data, e->key_bytes) & (t1->size - 1)];
		e->chain = *b;
		*b = e;
		t0->used--;
		t1->used++;
		e = next;
	}
}

/* Moves up to n non-empty old buckets, passing no more than 10 x n empty
 * ones (as dict.c's dictRehash bounds its work), and gives back the moved
 * part of the old table a slice at a time. */
static void rehash_step(struct cstore *s, uint32_t n)
{
	if (!s->rehashing || n == 0)
		return;
	uint64_t empty_visits = (uint64_t)n * 10;
	while (s->rehash_idx > 0) {
		bool empty = s->t[0].b[s->rehash_idx - 1] == NULL;
		rehash_bucket(s);
		if (empty ? --empty_visits == 0 : --n == 0)
			break;
	}
	if (s->rehash_idx == 0) {
		finish_rehash(s);
		return;
	}
	if (s->t0_alloc - s->rehash_idx >= RELEASE_SLICE_BUCKETS) {
		struct centry **b = m_resize(s, s->t[0].b, s->t0_alloc * sizeof(*b), s->rehash_idx * sizeof(*b));
		if (b) {
			s->t[0].b = b;
			s->t0_alloc = s->rehash_idx;
		}
	}
}

static uint64_t table_target(uint64_t count)
{
	uint64_t size = CSTORE_BUCKETS_MIN;
	while (size < count * 2 && size < CSTORE_BUCKETS_MAX)
		size *= 2;
	return size;
}

static void resize_start(struct cstore *s, uint64_t size)
{
	assert(!s->rehashing);
	if (size == s->t[0].size)
		return;
	struct centry **b = m_alloc(s, size * sizeof(*b)); /* cleared bucket by bucket */
	if (!b)
		return; /* keep the current table: longer chains, still correct */
	s->t[1].b = b;
	s->t[1].size = size;
	s->t[1].used = 0;
	s->rehash_idx = s->t[0].size;
	s->rehashing = true;
	if (!s->t[0].used && size <= EARLY_FINISH_BUCKETS) {
		memset(b, 0, size * sizeof(*b));
		s->rehash_idx = 0;
		finish_rehash(s);
	}
}

/* At the end of a call (never inside an iteration): grow at one entry per
 * bucket, shrink under one per eight; and trim the heap. */
static void maybe_resize(struct cstore *s)
{
	heap_trim(s);
	if (s->rehashing)
		return;
	uint64_t count = s->t[0].used, size = s->t[0].size;
	if ((count >= size && size < CSTORE_BUCKETS_MAX) || (size > CSTORE_BUCKETS_MIN && count * 8 < size))
		resize_start(s, table_target(count));
}

/* ---- removing, retiring, evicting ---- */

static void release_retired(struct cstore *s)
{
	if (s->retired) {
		m_free(s, s->retired, s->retired_bytes);
		s->retired = NULL;
		s->retired_bytes = 0;
	}
}

/* Every public call that may change the store starts here. */
static void enter(struct cstore *s, uint32_t rehash_buckets)
{
	assert(!s->in_callback);
	release_retired(s);
	rehash_step(s, rehash_buckets);
}

/* Takes e out of everything but the table, and frees it. */
static void entry_drop(struct cstore *s, struct centry *e)
{
	list_del(&e->list);
	if (e->heap_pos)
		heap_remove(s, e);
	account_remove(s, e);
	node_release(s, e->node);
	m_free(s, e, entry_size(e));
}

static void remove_at(struct cstore *s, struct found *f)
{
	assert(f->link && *f->link == f->e);
	*f->link = f->e->chain;
	s->t[f->table].used--;
	entry_drop(s, f->e);
	f->e = NULL;
	f->link = NULL;
	f->table = -1;
}

/* An expired entry goes (or becomes a tombstone that keeps its version). f
 * must locate e; afterwards f->e is the tombstone or NULL. */
static void collect_expired(struct cstore *s, struct found *f, uint64_t now_ms)
{
	struct centry *e = f->e;
	assert(!is_tomb(e));
	s->expirations++;
	if (!s->cfg.expire_to_tombstone) {
		remove_at(s, f);
		return;
	}
	account_remove(s, e);
	list_del(&e->list);
	if (e->heap_pos)
		heap_remove(s, e);
	struct centry *t = m_alloc(s, ENTRY_HEADER_BYTES + e->key_bytes);
	if (t) { /* a smaller copy without the value; the node reference moves over */
		memcpy(t, e, ENTRY_HEADER_BYTES + e->key_bytes);
		t->value_bytes = 0;
		*f->link = t;
		m_free(s, e, entry_size(e));
		e = t;
		f->e = t;
	} /* else: keep the value bytes allocated (and counted) until collected */
	e->flags |= E_TOMB;
	e->heap_pos = 0;
	e->time_ms = now_ms;
	tomb_append(s, e);
	account_add(s, e);
}

static bool over_limits(const struct cstore *s)
{
	if (s->cfg.memory_bytes_max && s->memory_bytes - s->retired_bytes > s->cfg.memory_bytes_max)
		return true;
	return s->cfg.entries_max && s->live_count + s->tomb_count > s->cfg.entries_max;
}

/* LRU first, then the oldest tombstones; never `keep`. */
static void enforce_limits(struct cstore *s, const struct centry *keep)
{
	while (over_limits(s)) {
		struct centry *v = NULL;
		if (!list_empty(&s->lru)) {
			v = ENTRY_OF(s->lru.prev);
			if (v == keep)
				v = v->list.prev != &s->lru ? ENTRY_OF(v->list.prev) : NULL;
		}
		if (!v && !list_empty(&s->tombs)) {
			v = ENTRY_OF(s->tombs.next);
			if (v == keep)
				v = v->list.next != &s->tombs ? ENTRY_OF(v->list.next) : NULL;
		}
		if (!v)
			return;
		struct found f;
		locate(s, v, &f);
		remove_at(s, &f);
		s->evictions++;
	}
}

/* Finds key; an expired entry met on the way is collected first. */
static void find_current(struct cstore *s, const void *key, uint32_t n, uint64_t now_ms, struct found *f)
{
	find(s, key, n, f);
	if (f->e && is_expired(f->e, now_ms))
		collect_expired(s, f, now_ms);
}

static void version_of(const struct cstore *s, const struct centry *e, struct cstore_version *v)
{
	v->hlc = e->hlc;
	memcpy(v->node, s->nodes[e->node].id, CSTORE_NODE_ID_BYTES);
}

/* LWW: is v newer than what e holds? */
static bool newer_than(const struct cstore *s, const struct cstore_version *v, const struct centry *e)
{
	if (v->hlc != e->hlc)
		return v->hlc > e->hlc;
	return memcmp(v->node, s->nodes[e->node].id, CSTORE_NODE_ID_BYTES) > 0;
}

static void fill_item(const struct cstore *s, const struct centry *e, struct cstore_item *out)
{
	out->key = e->data;
	out->key_bytes = e->key_bytes;
	out->tombstone = is_tomb(e);
	out->value = out->tombstone ? NULL : e->data + e->key_bytes;
	out->value_bytes = out->tombstone ? 0 : e->value_bytes;
	version_of(s, e, &out->version);
	out->expire_ms = out->tombstone ? 0 : e->time_ms;
	out->tombstone_ms = out->tombstone ? e->time_ms : 0;
	out->partition = e->partition;
	out->found = !out->tombstone;
}

/* ---- the one write path ---- */

struct wreq {
	const unsigned char *key;
	uint32_t key_bytes;
	const unsigned char *value;
	uint32_t value_bytes;
	const struct cstore_version *version;
	uint64_t time_ms;  /* live: expiry (0 none); tombstone: creation */
	uint16_t partition;
	bool tombstone;
	bool retire_old;   /* the caller holds a pointer into the old entry */
};

/* Writes w over f->e (or as a new entry). Every allocation comes first, so
 * a failure changes nothing. On success f->e is the written entry. */
static int write_entry(struct cstore *s, struct found *f, const struct wreq *w)
{
	uint32_t value_bytes = w->tombstone ? 0 : w->value_bytes;
	size_t size = ENTRY_HEADER_BYTES + (size_t)w->key_bytes + value_bytes;
	struct centry *old = f->e;
	bool expiring = !w->tombstone && w->time_ms != 0;

	if (s->cfg.memory_bytes_max) {
		uint64_t fixed = s->memory_bytes - s->entry_bytes - s->retired_bytes;
		if (fixed + size > s->cfg.memory_bytes_max)
			return ERR_TOO_LARGE;
	}
	uint16_t node;
	int rc = node_acquire(s, w->version->node, &node);
	if (rc != 0)
		return rc;
	if (expiring && !(old && old->heap_pos) && (rc = heap_reserve(s)) != 0) {
		node_release(s, node);
		return rc;
	}

	struct centry *e;
	if (old && !w->retire_old && entry_size(old) == size) {
		/* same size: rewrite in place (counters, equal-length values) */
		e = old;
		account_remove(s, e);
		list_del(&e->list);
		node_release(s, e->node);
		if (value_bytes)
			memmove(e->data + e->key_bytes, w->value, value_bytes);
	} else {
		e = m_alloc(s, size);
		if (!e) {
			node_release(s, node);
			return ERR_NOMEM;
		}
		e->key_bytes = w->key_bytes;
		e->heap_pos = 0;
		if (w->key_bytes)
			memcpy(e->data, w->key, w->key_bytes);
		if (value_bytes)
			memcpy(e->data + w->key_bytes, w->value, value_bytes);
		if (old) {
			e->chain = old->chain;
			*f->link = e;
			list_del(&old->list);
			if (old->heap_pos) {
				if (expiring) { /* take over the slot; re-sifted below */
					e->heap_pos = old->heap_pos;
					*heap_at(s, e->heap_pos - 1) = e;
					old->heap_pos = 0;
				} else {
					heap_remove(s, old);
				}
			}
			account_remove(s, old);
			node_release(s, old->node);
			if (w->retire_old) {
				assert(!s->retired);
				s->retired = old;
				s->retired_bytes = entry_size(old);
			} else {
				m_free(s, old, entry_size(old));
			}
		} else {
			table_insert(s, e, f->h);
		}
	}
	e->hlc = w->version->hlc;
	e->node = node;
	e->partition = w->partition;
	e->value_bytes = value_bytes;
	e->flags = w->tombstone ? E_TOMB : 0;
	e->time_ms = w->time_ms;
	if (expiring) {
		if (e->heap_pos)
			heap_fix(s, e);
		else
			heap_insert(s, e);
	} else if (e->heap_pos) {
		heap_remove(s, e);
	}
	if (w->tombstone)
		tomb_append(s, e);
	else
		list_push_front(&s->lru, &e->list);
	account_add(s, e);
	f->e = e;
	maybe_resize(s);
	enforce_limits(s, e);
	return 0;
}

/* ---- create / destroy ---- */

int cstore_create(const struct cstore_config *cfg, struct cstore **out)
{
	*out = NULL;
	if (!cfg || cfg->key_bytes_max > CSTORE_KEY_BYTES_LIMIT || cfg->value_bytes_max > CSTORE_VALUE_BYTES_LIMIT ||
	    cfg->partition_count > CSTORE_PARTITIONS_MAX)
		return ERR_INVALID;
	struct cstore_allocator al = {def_alloc, def_alloc_zeroed, def_resize, def_release, NULL};
	if (cfg->allocator) {
		al = *cfg->allocator;
		if (!al.alloc || !al.alloc_zeroed || !al.resize || !al.release)
			return ERR_INVALID;
	}
	struct cstore *s = al.alloc(al.ctx, sizeof(*s));
	if (!s)
		return ERR_NOMEM;
	memset(s, 0, sizeof(*s));
	s->al = al;
	s->memory_bytes = sizeof(*s);
	s->cfg = *cfg;
	s->cfg.allocator = NULL;
	if (!s->cfg.key_bytes_max)
		s->cfg.key_bytes_max = CSTORE_KEY_BYTES_MAX_DEFAULT;
	if (!s->cfg.value_bytes_max)
		s->cfg.value_bytes_max = CSTORE_VALUE_BYTES_MAX_DEFAULT;
	if (!s->cfg.partition_count)
		s->cfg.partition_count = CSTORE_PARTITIONS_DEFAULT;
	/* the cursor check's key, derived so that a cursor says nothing about
	 * the table's hash key */
	uint64_t k0 = siphash(s->cfg.hash_key, "chorus cstore cursor key 0", 26);
	uint64_t k1 = siphash(s->cfg.hash_key, "chorus cstore cursor key 1", 26);
	memcpy(s->cursor_key, &k0, 8);
	memcpy(s->cursor_key + 8, &k1, 8);
	list_init(&s->lru);
	list_init(&s->tombs);
	s->parts = m_alloc_zeroed(s, (size_t)s->cfg.partition_count * sizeof(*s->parts));
	s->t[0].b = m_alloc_zeroed(s, CSTORE_BUCKETS_MIN * sizeof(*s->t[0].b));
	if (s->t[0].b)
		s->t[0].size = s->t0_alloc = CSTORE_BUCKETS_MIN;
	if (!s->parts || !s->t[0].b) {
		cstore_destroy(s);
		return ERR_NOMEM;
	}
	*out = s;
	return 0;
}

static void free_entries(struct cstore *s)
{
	struct clink *heads[2] = {&s->lru, &s->tombs};
	for (int i = 0; i < 2; i++) {
		while (!list_empty(heads[i])) {
			struct centry *e = ENTRY_OF(heads[i]->next);
			list_del(&e->list);
			m_free(s, e, entry_size(e));
		}
	}
	release_retired(s);
	heap_free_all(s);
	node_table_free(s);
	s->live_count = s->tomb_count = s->entry_bytes = s->kv_bytes = 0;
	if (s->parts)
		memset(s->parts, 0, (size_t)s->cfg.partition_count * sizeof(*s->parts));
}

void cstore_destroy(struct cstore *s)
{
	if (!s)
		return;
	free_entries(s);
	m_free(s, s->t[0].b, s->t0_alloc * sizeof(*s->t[0].b));
	m_free(s, s->t[1].b, s->t[1].size * sizeof(*s->t[1].b));
	m_free(s, s->parts, (size_t)s->cfg.partition_count * sizeof(*s->parts));
	assert(s->memory_bytes == sizeof(*s));
	struct cstore_allocator al = s->al;
	al.release(al.ctx, s, sizeof(*s));
}

void cstore_flush(struct cstore *s)
{
	enter(s, 0);
	free_entries(s);
	m_free(s, s->t[1].b, s->t[1].size * sizeof(*s->t[1].b));
	memset(&s->t[1], 0, sizeof(s->t[1]));
	s->rehashing = false;
	s->rehash_idx = 0;
	struct centry **b = s->t0_alloc == CSTORE_BUCKETS_MIN ? NULL : m_alloc(s, CSTORE_BUCKETS_MIN * sizeof(*b));
	if (b) {
		m_free(s, s->t[0].b, s->t0_alloc * sizeof(*b));
		s->t[0].b = b;
		s->t0_alloc = CSTORE_BUCKETS_MIN;
	}
	/* if the small table could not be had, the old one stays, cleared (its
	 * size a power of two: while resizing it may have been cut short) */
	uint64_t size = CSTORE_BUCKETS_MIN;
	while (size * 2 <= s->t0_alloc)
		size *= 2;
	s->t[0].size = size;
	memset(s->t[0].b, 0, s->t0_alloc * sizeof(*b));
	s->t[0].used = 0;
}

/* ---- reads ---- */

/* 0 when key is a usable key; ERR_INVALID / ERR_TOO_LARGE otherwise. */
static int check_key(const struct cstore *s, const void *key, size_t key_bytes)
{
	if (!key && key_bytes)
		return ERR_INVALID;
	return key_bytes > s->cfg.key_bytes_max ? ERR_TOO_LARGE : 0;
}

int cstore_get(struct cstore *s, const void *key, size_t key_bytes, uint64_t now_ms, struct cstore_item *out)
{
	int rc = check_key(s, key, key_bytes);
	if (rc != 0 || !out)
		return rc ? rc : ERR_INVALID;
	enter(s, REHASH_STEP_READ);
	struct found f;
	find_current(s, key, (uint32_t)key_bytes, now_ms, &f);
	struct centry *e = f.e;
	if (!e || is_tomb(e)) {
		s->misses++;
		maybe_resize(s);
		return ERR_NOT_FOUND;
	}
	s->hits++;
	list_del(&e->list);
	list_push_front(&s->lru, &e->list);
	if (s->cfg.touch_on_read && s->cfg.default_ttl_ms && e->time_ms) {
		e->time_ms = add_sat(now_ms, s->cfg.default_ttl_ms);
		heap_fix(s, e);
	}
	maybe_resize(s);
	fill_item(s, e, out);
	return 0;
}

int cstore_peek(struct cstore *s, const void *key, size_t key_bytes, uint64_t now_ms,
                struct cstore_item *out)
{
	int rc = check_key(s, key, key_bytes);
	if (rc != 0 || !out)
		return rc ? rc : ERR_INVALID;
	enter(s, REHASH_STEP_READ);
	struct found f;
	find_current(s, key, (uint32_t)key_bytes, now_ms, &f);
	maybe_resize(s);
	if (!f.e)
		return ERR_NOT_FOUND;
	fill_item(s, f.e, out);
	return 0;
}

int cstore_exists(struct cstore *s, const void *key, size_t key_bytes, uint64_t now_ms)
{
	if (check_key(s, key, key_bytes) != 0)
		return 0;
	enter(s, REHASH_STEP_READ);
	struct found f;
	find_current(s, key, (uint32_t)key_bytes, now_ms, &f);
	maybe_resize(s);
	return f.e && !is_tomb(f.e);
}

int cstore_ttl(struct cstore *s, const void *key, size_t key_bytes, uint64_t now_ms, int64_t *ttl_ms)
{
	int rc = check_key(s, key, key_bytes);
	if (rc != 0 || !ttl_ms)
		return rc ? rc : ERR_INVALID;
	enter(s, REHASH_STEP_READ);
	struct found f;
	find_current(s, key, (uint32_t)key_bytes, now_ms, &f);
	maybe_resize(s);
	if (!f.e || is_tomb(f.e))
		return ERR_NOT_FOUND;
	uint64_t left = f.e->time_ms ? f.e->time_ms - now_ms : 0;
	*ttl_ms = f.e->time_ms ? (left > INT64_MAX ? INT64_MAX : (int64_t)left) : -1;
	return 0;
}

/* ---- local writes ---- */

static int check_write(const struct cstore *s, const void *key, size_t key_bytes, const struct cstore_version *v,
                       uint32_t partition)
{
	int rc = check_key(s, key, key_bytes);
	if (rc != 0)
		return rc;
	return !v || partition >= s->cfg.partition_count ? ERR_INVALID : 0;
}

#define PUT_FLAGS_ALL (CSTORE_PUT_NX | CSTORE_PUT_XX | CSTORE_PUT_KEEPTTL | CSTORE_PUT_GET | CSTORE_PUT_PERSIST)

int cstore_put(struct cstore *s, const struct cstore_put *req, uint64_t now_ms, struct cstore_item *old)
{
	if (!req)
		return ERR_INVALID;
	int rc = check_write(s, req->key, req->key_bytes, &req->version, req->partition);
	if (rc != 0)
		return rc;
	uint32_t fl = req->flags;
	bool given = req->ttl_ms || req->expire_at_ms;
	if ((fl & ~PUT_FLAGS_ALL) || ((fl & CSTORE_PUT_NX) && (fl & CSTORE_PUT_XX)) ||
	    (req->ttl_ms && req->expire_at_ms) || ((fl & CSTORE_PUT_KEEPTTL) && given) ||
	    ((fl & CSTORE_PUT_PERSIST) && (given || (fl & CSTORE_PUT_KEEPTTL))) || ((fl & CSTORE_PUT_GET) && !old) ||
	    (!req->value && req->value_bytes) || (req->ttl_ms && req->ttl_ms > UINT64_MAX - now_ms))
		return ERR_INVALID;
	if (req->value_bytes > s->cfg.value_bytes_max)
		return ERR_TOO_LARGE;

	enter(s, REHASH_STEP_WRITE);
	struct found f;
	find_current(s, req->key, (uint32_t)req->key_bytes, now_ms, &f);
	struct centry *held = f.e;
	bool live = held && !is_tomb(held);
	if (fl & CSTORE_PUT_GET) {
		memset(old, 0, sizeof(*old));
		if (live)
			fill_item(s, held, old);
	}
	rc = CSTORE_OK;
	if (((fl & CSTORE_PUT_NX) && live) || ((fl & CSTORE_PUT_XX) && !live))
		rc = CSTORE_NOT_MET;
	else if (req->if_version) {
		struct cstore_version cur;
		if (live)
			version_of(s, held, &cur);
		if (!live || cstore_version_cmp(&cur, req->if_version) != 0)
			rc = CSTORE_NOT_MET;
	}
	if (rc == CSTORE_OK && held && !newer_than(s, &req->version, held))
		rc = CSTORE_STALE;
	if (rc != CSTORE_OK) {
		maybe_resize(s);
		return rc;
	}

	uint64_t expire_ms;
	if (req->ttl_ms)
		expire_ms = now_ms + req->ttl_ms;
	else if (req->expire_at_ms)
		expire_ms = req->expire_at_ms;
	else if ((fl & CSTORE_PUT_KEEPTTL) && live)
		expire_ms = held->time_ms;
	else if (fl & CSTORE_PUT_PERSIST)
		expire_ms = 0;
	else
		expire_ms = s->cfg.default_ttl_ms ? add_sat(now_ms, s->cfg.default_ttl_ms) : 0;
	bool gone = expire_ms != 0 && expire_ms <= now_ms; /* a past expiry deletes */
	struct wreq w = {
		.key = req->key,
		.key_bytes = (uint32_t)req->key_bytes,
		.value = req->value,
		.value_bytes = (uint32_t)req->value_bytes,
		.version = &req->version,
		.time_ms = gone ? now_ms : expire_ms,
		.partition = req->partition,
		.tombstone = gone,
		.retire_old = (fl & CSTORE_PUT_GET) && live,
	};
	rc = write_entry(s, &f, &w);
	maybe_resize(s);
	return rc;
}

int cstore_delete(struct cstore *s, const void *key, size_t key_bytes, const struct cstore_version *v,
                  uint16_t partition, uint64_t now_ms, bool *existed, struct cstore_item *old)
{
	int rc = check_write(s, key, key_bytes, v, partition);
	if (rc != 0)
		return rc;
	enter(s, REHASH_STEP_WRITE);
	struct found f;
	find_current(s, key, (uint32_t)key_bytes, now_ms, &f);
	bool live = f.e && !is_tomb(f.e);
	if (old) {
		memset(old, 0, sizeof(*old));
		if (live)
			fill_item(s, f.e, old);
	}
	if (existed)
		*existed = false;
	if (f.e && !newer_than(s, v, f.e)) {
		maybe_resize(s);
		return CSTORE_STALE;
	}
	struct wreq w = {
		.key = key,
		.key_bytes = (uint32_t)key_bytes,
		.version = v,
		.time_ms = now_ms,
		.partition = partition,
		.tombstone = true,
		.retire_old = old && live,
	};
	rc = write_entry(s, &f, &w);
	if (rc == 0 && existed)
		*existed = live;
	maybe_resize(s);
	return rc;
}

/* Rewrites a live entry with a new expiry and version (expire, persist). */
static int rewrite_expiry(struct cstore *s, const void *key, size_t key_bytes, uint64_t expire_ms, bool persist,
                          const struct cstore_version *v, uint64_t now_ms)
{
	int rc = check_key(s, key, key_bytes);
	if (rc != 0)
		return rc;
	if (!v || (!persist && expire_ms == 0))
		return ERR_INVALID;
	enter(s, REHASH_STEP_WRITE);
	struct found f;
	find_current(s, key, (uint32_t)key_bytes, now_ms, &f);
	struct centry *e = f.e;
	if (!e || is_tomb(e) || (persist && !e->time_ms))
		rc = CSTORE_NOT_MET;
	else if (!newer_than(s, v, e))
		rc = CSTORE_STALE;
	if (rc != 0) {
		maybe_resize(s);
		return rc;
	}
	bool gone = !persist && expire_ms <= now_ms;
	struct wreq w = {
		.key = e->data,
		.key_bytes = e->key_bytes,
		.value = e->data + e->key_bytes,
		.value_bytes = e->value_bytes,
		.version = v,
		.time_ms = gone ? now_ms : expire_ms,
		.partition = e->partition,
		.tombstone = gone,
	};
	rc = write_entry(s, &f, &w);
	maybe_resize(s);
	return rc;
}

int cstore_expire(struct cstore *s, const void *key, size_t key_bytes, uint64_t expire_at_ms,
                  const struct cstore_version *v, uint64_t now_ms)
{
	return rewrite_expiry(s, key, key_bytes, expire_at_ms, false, v, now_ms);
}

int cstore_persist(struct cstore *s, const void *key, size_t key_bytes, const struct cstore_version *v,
                   uint64_t now_ms)
{
	return rewrite_expiry(s, key, key_bytes, 0, true, v, now_ms);
}

/* Redis's string2ll: what INCR accepts. */
static bool parse_int64(const unsigned char *p, size_t n, int64_t *out)
{
	if (n == 0 || n > CSTORE_INT_DIGITS_MAX)
		return false;
	if (n == 1 && p[0] == '0') {
		*out = 0;
		return true;
	}
	size_t i = 0;
	bool neg = p[0] == '-';
	if (neg && ++i == n)
		return false;
	if (p[i] < '1' || p[i] > '9')
		return false;
	uint64_t v = 0;
	for (; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		uint64_t d = (uint64_t)(p[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	if (neg) {
		if (v > (uint64_t)INT64_MAX + 1)
			return false;
		*out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
	} else {
		if (v > (uint64_t)INT64_MAX)
			return false;
		*out = (int64_t)v;
	}
	return true;
}

static size_t format_int64(int64_t x, unsigned char *buf)
{
	unsigned char tmp[CSTORE_INT_DIGITS_MAX];
	uint64_t v = x < 0 ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
	size_t n = 0;
	do {
		tmp[n++] = (unsigned char)('0' + v % 10);
		v /= 10;
	} while (v);
	size_t len = 0;
	if (x < 0)
		buf[len++] = '-';
	while (n)
		buf[len++] = tmp[--n];
	return len;
}

int cstore_incr(struct cstore *s, const void *key, size_t key_bytes, int64_t delta,
                const struct cstore_version *v, uint16_t partition, uint64_t now_ms, int64_t *result)
{
	int rc = check_write(s, key, key_bytes, v, partition);
	if (rc != 0 || !result)
		return rc ? rc : ERR_INVALID;
	enter(s, REHASH_STEP_WRITE);
	struct found f;
	find_current(s, key, (uint32_t)key_bytes, now_ms, &f);
	struct centry *held = f.e;
	bool live = held && !is_tomb(held);
	int64_t cur = 0, sum;
	if (live && !parse_int64(held->data + held->key_bytes, held->value_bytes, &cur))
		rc = ERR_INVALID;
	else if (__builtin_add_overflow(cur, delta, &sum))
		rc = ERR_TOO_LARGE;
	else if (held && !newer_than(s, v, held))
		rc = CSTORE_STALE;
	if (rc != 0) {
		maybe_resize(s);
		return rc;
	}
	unsigned char digits[CSTORE_INT_DIGITS_MAX];
	struct wreq w = {
		.key = key,
		.key_bytes = (uint32_t)key_bytes,
		.value = digits,
		.value_bytes = (uint32_t)format_int64(sum, digits),
		.version = v,
		.time_ms = live ? held->time_ms : (s->cfg.default_ttl_ms ? add_sat(now_ms, s->cfg.default_ttl_ms) : 0),
		.partition = partition,
	};
	rc = write_entry(s, &f, &w);
	if (rc == 0)
		*result = sum;
	maybe_resize(s);
	return rc;
}

/* ---- replication ---- */

int cstore_apply(struct cstore *s, const struct cstore_item *item, uint64_t now_ms)
{
	if (!item)
		return ERR_INVALID;
	int rc = check_write(s, item->key, item->key_bytes, &item->version, item->partition);
	if (rc != 0)
		return rc;
	if (!item->tombstone && !item->value && item->value_bytes)
		return ERR_INVALID;
	if (!item->tombstone && item->value_bytes > s->cfg.value_bytes_max)
		return ERR_TOO_LARGE;
	enter(s, REHASH_STEP_WRITE);
	struct found f;
	find_current(s, item->key, item->key_bytes, now_ms, &f);
	if (f.e && !newer_than(s, &item->version, f.e)) {
		maybe_resize(s);
		return CSTORE_STALE;
	}
	struct wreq w = {
		.key = item->key,
		.key_bytes = item->key_bytes,
		.value = item->value,
		.value_bytes = item->value_bytes,
		.version = &item->version,
		.time_ms = item->tombstone ? now_ms : item->expire_ms,
		.partition = item->partition,
		.tombstone = item->tombstone,
	};
	rc = write_entry(s, &f, &w);
	/* written then expired at once: the held older version is gone either way */
	if (rc == 0 && is_expired(f.e, now_ms)) {
		locate(s, f.e, &f);
		collect_expired(s, &f, now_ms);
	}
	maybe_resize(s);
	return rc;
}

/* ---- time ---- */

uint32_t cstore_tick(struct cstore *s, uint64_t now_ms, uint32_t budget)
{
	enter(s, 0);
	uint32_t n = 0;
	while (n < budget && s->heap_count && (*heap_at(s, 0))->time_ms <= now_ms) {
		struct found f;
		locate(s, *heap_at(s, 0), &f);
		collect_expired(s, &f, now_ms);
		n++;
	}
	rehash_step(s, budget);
	maybe_resize(s);
	return n;
}

uint64_t cstore_next_expiry_ms(const struct cstore *s)
{
	return s->heap_count ? (*heap_at(s, 0))->time_ms : UINT64_MAX;
}

uint32_t cstore_gc_tombstones(struct cstore *s, uint64_t horizon_ms, uint32_t budget)
{
	enter(s, 0);
	uint32_t n = 0;
	while (n < budget && !list_empty(&s->tombs)) {
		struct centry *e = ENTRY_OF(s->tombs.next);
		if (e->time_ms >= horizon_ms)
			break;
		struct found f;
		locate(s, e, &f);
		remove_at(s, &f);
		n++;
	}
	maybe_resize(s);
	return n;
}

/* ---- scan ---- */

static uint32_t cursor_tag(const struct cstore *s, uint64_t v)
{
	unsigned char b[8];
	memcpy(b, &v, 8);
	return (uint32_t)siphash(s->cursor_key, b, sizeof(b));
}

uint32_t cstore_cursor_position(uint64_t cursor)
{
	return (uint32_t)cursor;
}

uint64_t cstore_cursor_from_position(const struct cstore *s, uint32_t position)
{
	return position ? ((uint64_t)cursor_tag(s, position) << 32) | position : 0;
}

static uint64_t cursor_encode(const struct cstore *s, uint64_t v)
{
	assert(v < CSTORE_BUCKETS_MAX);
	return v ? ((uint64_t)cursor_tag(s, v) << 32) | v : 0;
}

static int cursor_decode(const struct cstore *s, uint64_t cursor, uint64_t *v)
{
	*v = cursor & 0xffffffffu;
	if (cursor == 0)
		return 0;
	if (*v == 0 || *v >= CSTORE_BUCKETS_MAX || (cursor >> 32) != cursor_tag(s, *v))
		return ERR_INVALID;
	return 0;
}

typedef void (*bucket_fn)(struct cstore *s, int table, uint64_t idx, void *arg);

/* One step of dict.c's dictScan: the bucket v of the smaller table, then
 * every bucket of the larger one that it expands to; returns the next v. */
static uint64_t scan_step(struct cstore *s, uint64_t v, bucket_fn fn, void *arg)
{
	if (!s->rehashing) {
		uint64_t m0 = s->t[0].size - 1;
		fn(s, 0, v & m0, arg);
		v |= ~m0;
		return rev64(rev64(v) + 1);
	}
	int small = s->t[0].size <= s->t[1].size ? 0 : 1, large = 1 - small;
	uint64_t m0 = s->t[small].size - 1, m1 = s->t[large].size - 1;
	fn(s, small, v & m0, arg);
	do {
		fn(s, large, v & m1, arg);
		v |= ~m1;
		v = rev64(rev64(v) + 1);
	} while (v & (m0 ^ m1));
	return v;
}

struct scan_arg {
	const char *pattern;
	size_t pattern_bytes;
	uint64_t now_ms;
	cstore_visit_fn fn;
	void *ctx;
	int32_t partition; /* -1 = all */
	bool tombstones;
	uint64_t older_than_hlc; /* drop_older_bucket: entries whose hlc is below it go */
	uint64_t emitted, visited, removed;
};

static void scan_bucket(struct cstore *s, int table, uint64_t idx, void *arg)
{
	struct scan_arg *a = arg;
	a->visited++;
	struct centry **b = bucket_at(s, table, idx);
	for (struct centry *e = b ? *b : NULL; e; e = e->chain) {
		if (is_tomb(e) ? !a->tombstones : is_expired(e, a->now_ms))
			continue;
		if (a->partition >= 0 && e->partition != a->partition)
			continue;
		if (a->pattern && !cstore_glob_match(a->pattern, a->pattern_bytes, (const char *)e->data, e->key_bytes))
			continue;
		struct cstore_item item;
		fill_item(s, e, &item);
		s->in_callback = true;
		a->fn(a->ctx, &item);
		s->in_callback = false;
		a->emitted++;
	}
}

static void drop_bucket(struct cstore *s, int table, uint64_t idx, void *arg)
{
	struct scan_arg *a = arg;
	a->visited++;
	struct centry **l = bucket_at(s, table, idx);
	while (l && *l) {
		struct centry *e = *l;
		if (e->partition != a->partition) {
			l = &e->chain;
			continue;
		}
		*l = e->chain;
		s->t[table].used--;
		entry_drop(s, e);
		a->removed++;
	}
}

/* As drop_bucket, for the entries older than a cluster-wide FLUSH. */
static void drop_older_bucket(struct cstore *s, int table, uint64_t idx, void *arg)
{
	struct scan_arg *a = arg;
	a->visited++;
	struct centry **l = bucket_at(s, table, idx);
	while (l && *l) {
		struct centry *e = *l;
		if (e->hlc >= a->older_than_hlc) {
			l = &e->chain;
			continue;
		}
		*l = e->chain;
		s->t[table].used--;
		entry_drop(s, e);
		a->removed++;
	}
}

int cstore_scan(struct cstore *s, uint64_t cursor, const char *pattern, size_t pattern_bytes, uint32_t count,
                uint64_t now_ms, cstore_visit_fn fn, void *ctx, uint64_t *next_cursor)
{
	uint64_t v;
	if (!fn || !next_cursor || (!pattern && pattern_bytes) || cursor_decode(s, cursor, &v) != 0)
		return ERR_INVALID;
	enter(s, REHASH_STEP_READ);
	struct scan_arg a = {.pattern = pattern, .pattern_bytes = pattern_bytes, .now_ms = now_ms, .fn = fn,
	                     .ctx = ctx, .partition = -1};
	if (!count)
		count = SCAN_COUNT_DEFAULT;
	uint64_t visits_max = (uint64_t)count * 10;
	do
		v = scan_step(s, v, scan_bucket, &a);
	while (v && a.visited < visits_max && a.emitted < count);
	*next_cursor = cursor_encode(s, v);
	return 0;
}

int cstore_partition_scan(struct cstore *s, uint16_t partition, uint64_t cursor, uint32_t buckets,
                          uint64_t now_ms, cstore_visit_fn fn, void *ctx, uint64_t *next_cursor)
{
	uint64_t v;
	if (!fn || !next_cursor || partition >= s->cfg.partition_count || cursor_decode(s, cursor, &v) != 0)
		return ERR_INVALID;
	enter(s, REHASH_STEP_READ);
	struct scan_arg a = {.now_ms = now_ms, .fn = fn, .ctx = ctx, .partition = partition, .tombstones = true};
	do
		v = scan_step(s, v, scan_bucket, &a);
	while (v && a.visited < buckets);
	*next_cursor = cursor_encode(s, v);
	return 0;
}

int cstore_replication_scan(struct cstore *s, uint64_t cursor, uint32_t buckets, uint64_t now_ms,
                            cstore_visit_fn fn, void *ctx, uint64_t *next_cursor)
{
	uint64_t v;
	if (!fn || !next_cursor || cursor_decode(s, cursor, &v) != 0)
		return ERR_INVALID;
	enter(s, REHASH_STEP_READ);
	struct scan_arg a = {.now_ms = now_ms, .fn = fn, .ctx = ctx, .partition = -1, .tombstones = true};
	do
		v = scan_step(s, v, scan_bucket, &a);
	while (v && a.visited < buckets);
	*next_cursor = cursor_encode(s, v);
	return 0;
}

int cstore_partition_drop(struct cstore *s, uint16_t partition, uint64_t cursor, uint32_t buckets,
                          uint64_t *next_cursor, uint64_t *removed)
{
	uint64_t v;
	if (!next_cursor || partition >= s->cfg.partition_count || cursor_decode(s, cursor, &v) != 0)
		return ERR_INVALID;
	enter(s, REHASH_STEP_READ);
	struct scan_arg a = {.partition = partition};
	do
		v = scan_step(s, v, drop_bucket, &a);
	while (v && a.visited < buckets);
	*next_cursor = cursor_encode(s, v);
	if (removed)
		*removed = a.removed;
	maybe_resize(s);
	return 0;
}

int cstore_drop_older(struct cstore *s, uint64_t hlc, uint64_t cursor, uint32_t buckets,
                      uint64_t *next_cursor, uint64_t *removed)
{
	uint64_t v;
	if (!next_cursor || cursor_decode(s, cursor, &v) != 0)
		return ERR_INVALID;
	enter(s, REHASH_STEP_READ);
	struct scan_arg a = {.older_than_hlc = hlc};
	do
		v = scan_step(s, v, drop_older_bucket, &a);
	while (v && a.visited < buckets);
	*next_cursor = cursor_encode(s, v);
	if (removed)
		*removed = a.removed;
	maybe_resize(s);
	return 0;
}

int cstore_partition_stats(const struct cstore *s, uint16_t partition, struct cstore_partition_stats *out)
{
	if (!out || partition >= s->cfg.partition_count)
		return ERR_INVALID;
	*out = s->parts[partition];
	return 0;
}

void cstore_stats(const struct cstore *s, struct cstore_stats *out)
{
	out->entries = s->live_count;
	out->tombstones = s->tomb_count;
	out->memory_bytes = s->memory_bytes;
	out->entry_bytes = s->entry_bytes;
	out->key_value_bytes = s->kv_bytes;
	out->hits = s->hits;
	out->misses = s->misses;
	out->evictions = s->evictions;
	out->expirations = s->expirations;
	out->buckets = s->t[0].size + s->t[1].size;
	out->node_ids = s->node_live;
	out->rehashing = s->rehashing;
}

/* ---- glob ---- */

/* Does the one-character token at pattern[*p] ('?', a class, an escape or a
 * literal; never '*') match c? Advances *p past the token. Follows Redis's
 * stringmatchlen: in a class, '\' escapes, "x-y" is a range (either order),
 * ']' closes; an unclosed class runs to the end of the pattern. */
static bool glob_one(const unsigned char *pat, size_t n, size_t *p, unsigned char c)
{
	size_t i = *p;
	switch (pat[i]) {
	case '?':
		*p = i + 1;
		return true;
	case '\\':
		if (i + 1 < n)
			i++;
		*p = i + 1;
		return pat[i] == c;
	case '[': {
		i++;
		bool negate = i < n && pat[i] == '^';
		if (negate)
			i++;
		bool match = false;
		for (;;) {
			if (i >= n)
				break; /* unclosed: the class ends with the pattern */
			if (pat[i] == '\\' && i + 1 < n) {
				i++;
				if (pat[i] == c)
					match = true;
			} else if (pat[i] == ']') {
				i++;
				break;
			} else if (i + 2 < n && pat[i + 1] == '-') {
				unsigned char lo = pat[i], hi = pat[i + 2];
				if (lo > hi) {
					unsigned char t = lo;
					lo = hi;
					hi = t;
				}
				if (c >= lo && c <= hi)
					match = true;
				i += 2;
			} else if (pat[i] == c) {
				match = true;
			}
			i++;
		}
		*p = i;
		return negate ? !match : match;
	}
	default:
		*p = i + 1;
		return pat[i] == c;
	}
}

/* Every token but '*' matches exactly one byte, so on a mismatch only the
 * last '*' needs to take one more byte: earlier stars could only produce
 * alignments the last one also reaches. No recursion; each retry advances
 * the star's start, so at most n x m token tests. */
int cstore_glob_match(const char *pattern, size_t pattern_bytes, const char *str, size_t str_bytes)
{
	const unsigned char *pat = (const unsigned char *)pattern, *s = (const unsigned char *)str;
	size_t p = 0, i = 0;
	size_t star_p = SIZE_MAX, star_i = 0;
	if (!pat && pattern_bytes)
		return 0;
	while (i < str_bytes) {
		if (p < pattern_bytes && pat[p] == '*') {
			while (p < pattern_bytes && pat[p] == '*')
				p++;
			if (p == pattern_bytes)
				return 1;
			star_p = p;
			star_i = i;
			continue;
		}
		size_t next = p;
		if (p < pattern_bytes && glob_one(pat, pattern_bytes, &next, s[i])) {
			p = next;
			i++;
			continue;
		}
		if (star_p == SIZE_MAX)
			return 0;
		p = star_p;
		i = ++star_i;
	}
	while (p < pattern_bytes && pat[p] == '*')
		p++;
	return p == pattern_bytes;
}
