/*
 * test_cstore.c - unit tests of the local cache store (node/core/cstore.c).
 *
 * Every store here allocates through a counting allocator, and the tests
 * check that the store's memory_bytes equals the bytes the allocator holds
 * for it: the accounting is exact or a test fails. The allocator can also be
 * told to fail after n allocations, to check that a failed write changes
 * nothing. Time is a plain number the tests advance themselves.
 *
 * The last test is a randomized model test: 100,000 random operations
 * compared one by one with a naive reference (an array of keys), with the
 * whole state compared every 1,000. Set CSTORE_MODEL_SEED=<n> to replay one
 * seed; the seed is printed on failure. Under valgrind it runs 10,000
 * (CHORUS_TEST_SCALE_DOWN, test_scale.h), through the same ten phases.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/cstore.h"
#include "lib/err.h"
#include "test_scale.h"

/* ---- the counting allocator ---- */

struct counting {
	uint64_t live_bytes;
	uint64_t allocs;
	int64_t fail_in; /* fail the allocation after this many more; -1 = never */
};
static struct counting C;

static int take_alloc(struct counting *c)
{
	if (c->fail_in == 0)
		return 0;
	if (c->fail_in > 0)
		c->fail_in--;
	c->allocs++;
	return 1;
}

static void *c_alloc(void *ctx, size_t n)
{
	struct counting *c = ctx;
	void *p = take_alloc(c) ? malloc(n) : NULL;
	if (p)
		c->live_bytes += n;
	return p;
}

static void *c_alloc_zeroed(void *ctx, size_t n)
{
	struct counting *c = ctx;
	void *p = take_alloc(c) ? calloc(1, n) : NULL;
	if (p)
		c->live_bytes += n;
	return p;
}

static void *c_resize(void *ctx, void *p, size_t old_n, size_t new_n)
{
	struct counting *c = ctx;
	void *q = take_alloc(c) ? realloc(p, new_n) : NULL;
	if (q)
		c->live_bytes = c->live_bytes - old_n + new_n;
	return q;
}

static void c_release(void *ctx, void *p, size_t n)
{
	struct counting *c = ctx;
	assert_true(c->live_bytes >= n);
	c->live_bytes -= n;
	free(p);
}

static const struct cstore_allocator COUNTING = {c_alloc, c_alloc_zeroed, c_resize, c_release, &C};

/* ---- helpers ---- */

#define NODE_A 0xa1
#define NODE_B 0xb2

static struct cstore_config cfg_base(void)
{
	struct cstore_config c;
	memset(&c, 0, sizeof(c));
	memcpy(c.hash_key, "0123456789abcdef", CSTORE_HASH_KEY_BYTES);
	c.partition_count = 16;
	c.allocator = &COUNTING;
	return c;
}

static struct cstore *mk(const struct cstore_config *c)
{
	C.fail_in = -1;
	struct cstore *s = NULL;
	assert_int_equal(cstore_create(c, &s), 0);
	assert_non_null(s);
	return s;
}

static struct cstore *mk_default(void)
{
	struct cstore_config c = cfg_base();
	return mk(&c);
}

static int setup(void **state)
{
	(void)state;
	memset(&C, 0, sizeof(C));
	C.fail_in = -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	assert_int_equal(C.live_bytes, 0); /* every store was destroyed, every byte given back */
	return 0;
}

static struct cstore_version V(uint64_t hlc, unsigned char node)
{
	struct cstore_version v;
	v.hlc = hlc;
	memset(v.node, node, sizeof(v.node));
	return v;
}

static struct cstore_stats stats(const struct cstore *s)
{
	struct cstore_stats st;
	cstore_stats(s, &st);
	return st;
}

static void check_accounting(const struct cstore *s)
{
	assert_int_equal(stats(s).memory_bytes, C.live_bytes);
}

static uint16_t part_of(const char *k)
{
	return (uint16_t)(strlen(k) % 16);
}

static struct cstore_put P(const char *k, const char *v, uint64_t hlc)
{
	struct cstore_put p;
	memset(&p, 0, sizeof(p));
	p.key = k;
	p.key_bytes = strlen(k);
	p.value = v;
	p.value_bytes = strlen(v);
	p.version = V(hlc, NODE_A);
	p.partition = part_of(k);
	return p;
}

static int put(struct cstore *s, const char *k, const char *v, uint64_t hlc, uint64_t now)
{
	struct cstore_put p = P(k, v, hlc);
	return cstore_put(s, &p, now, NULL);
}

static int del(struct cstore *s, const char *k, uint64_t hlc, uint64_t now)
{
	struct cstore_version v = V(hlc, NODE_A);
	return cstore_delete(s, k, strlen(k), &v, part_of(k), now, NULL, NULL);
}

/* Asserts key holds value (NULL: a miss). */
static void expect(struct cstore *s, const char *k, const char *value, uint64_t now)
{
	struct cstore_item it;
	int rc = cstore_get(s, k, strlen(k), now, &it);
	if (!value) {
		assert_int_equal(rc, ERR_NOT_FOUND);
		return;
	}
	assert_int_equal(rc, 0);
	assert_int_equal(it.value_bytes, strlen(value));
	assert_memory_equal(it.value, value, it.value_bytes);
}

static void keyname(char *buf, size_t n, const char *prefix, unsigned i)
{
	snprintf(buf, n, "%s%u", prefix, i);
}

/* ---- basics ---- */

static void put_then_get_returns_value_version_and_expiry(void **state)
{
	(void)state;
	struct cstore *s = mk_default();
	struct cstore_put p = P("alpha", "one", 10);
	p.ttl_ms = 500;
	assert_int_equal(cstore_put(s, &p, 1000, NULL), 0);
	struct cstore_item it;
	assert_int_equal(cstore_get(s, "alpha", 5, 1000, &it), 0);
	assert_memory_equal(it.value, "one", 3);
	assert_int_equal(it.key_bytes, 5);
	assert_memory_equal(it.key, "alpha", 5);
	assert_int_equal(it.version.hlc, 10);
	assert_int_equal(it.version.node[0], NODE_A);
	assert_int_equal(it.expire_ms, 1500);
	assert_int_equal(it.partition, part_of("alpha"));
	assert_false(it.tombstone);
	assert_int_equal(cstore_get(s, "beta", 4, 1000, &it), ERR_NOT_FOUND);
	assert_int_equal(cstore_exists(s, "alpha", 5, 1000), 1);
	assert_int_equal(cstore_exists(s, "beta", 4, 1000), 0);
	struct cstore_stats st = stats(s);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.misses, 1);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.entry_bytes, cstore_entry_bytes(5, 3));
	/* the empty key and the empty value are ordinary */
	assert_int_equal(put(s, "", "", 11, 1000), 0);
	expect(s, "", "", 1000);
	check_accounting(s);
	cstore_destroy(s);
}

static void bad_input_is_refused_without_change(void **state)
{
	(void)state;
	struct cstore_config c = cfg_base();
	c.key_bytes_max = 8;
	c.value_bytes_max = 16;
	struct cstore *s = mk(&c);
	struct cstore_put p = P("123456789", "v", 1);
	assert_int_equal(cstore_put(s, &p, 0, NULL), ERR_TOO_LARGE);
	p = P("k", "01234567890123456", 1);
	assert_int_equal(cstore_put(s, &p, 0, NULL), ERR_TOO_LARGE);
	p = P("k", "v", 1);
	p.flags = CSTORE_PUT_NX | CSTORE_PUT_XX;
	assert_int_equal(cstore_put(s, &p, 0, NULL), ERR_INVALID);
	p.flags = CSTORE_PUT_KEEPTTL;
	p.ttl_ms = 5;
	assert_int_equal(cstore_put(s, &p, 0, NULL), ERR_INVALID);
	p.flags = 0;
	p.expire_at_ms = 9;
	assert_int_equal(cstore_put(s, &p, 0, NULL), ERR_INVALID); /* ttl and expire_at */
	p.ttl_ms = 0;
	p.expire_at_ms = 0;
	p.flags = CSTORE_PUT_GET; /* GET without somewhere to put the old value */
	assert_int_equal(cstore_put(s, &p, 0, NULL), ERR_INVALID);
	p.flags = 1u << 20;
	assert_int_equal(cstore_put(s, &p, 0, NULL), ERR_INVALID);
	p.flags = 0;
	p.partition = 16; /* partition_count is 16 */
	assert_int_equal(cstore_put(s, &p, 0, NULL), ERR_INVALID);
	p.partition = 0;
	p.ttl_ms = UINT64_MAX;
	assert_int_equal(cstore_put(s, &p, 5, NULL), ERR_INVALID); /* now + ttl overflows */
	assert_int_equal(stats(s).entries, 0);
	struct cstore_config bad = cfg_base();
	bad.partition_count = CSTORE_PARTITIONS_MAX + 1;
	struct cstore *none = NULL;
	assert_int_equal(cstore_create(&bad, &none), ERR_INVALID);
	assert_null(none);
	check_accounting(s);
	cstore_destroy(s);
}

/* ---- incremental resizing ---- */

static void table_grows_and_shrinks_incrementally_while_every_key_is_found(void **state)
{
	(void)state;
	struct cstore *s = mk_default();
	enum { N = 40000 };
	char k[32];
	uint64_t buckets_before = stats(s).buckets;
	unsigned rehash_ops = 0, resizes = 0;
	bool was = false;
	for (unsigned i = 0; i < N; i++) {
		keyname(k, sizeof(k), "key:", i);
		assert_int_equal(put(s, k, k, i + 1, 0), 0);
		/* the new key, and an older one, found whatever the table is doing */
		expect(s, k, k, 0);
		keyname(k, sizeof(k), "key:", (i * 7919u) % (i + 1));
		expect(s, k, k, 0);
		struct cstore_stats st = stats(s);
		if (st.rehashing)
			rehash_ops++;
		if (st.rehashing && !was)
			resizes++;
		was = st.rehashing;
		/* one entry per bucket at most once a grow has finished */
		if (!st.rehashing)
			assert_true(st.entries <= st.buckets);
	}
	struct cstore_stats st = stats(s);
	assert_true(st.buckets >= N);
	assert_true(resizes >= 10);     /* 4 -> 32768 buckets, one doubling at a time */
	assert_true(rehash_ops > 1000); /* the moves were spread over many calls */
	assert_true(buckets_before < st.buckets);
	check_accounting(s);
	/* delete all but every 64th, reading survivors in between: the table
	 * shrinks in steps while reads and writes go on */
	resizes = 0;
	was = false;
	for (unsigned i = 0; i < N; i++) {
		keyname(k, sizeof(k), "key:", i);
		if (i % 64) {
			assert_int_equal(del(s, k, N + i + 1, 0), 0);
			assert_int_equal(cstore_gc_tombstones(s, 1, 4), 1); /* tombstones at time 0: gone */
			expect(s, k, NULL, 0);
		}
		keyname(k, sizeof(k), "key:", (i / 64) * 64);
		expect(s, k, k, 0);
		st = stats(s);
		if (st.rehashing && !was)
			resizes++;
		was = st.rehashing;
	}
	assert_true(resizes >= 2);
	for (unsigned i = 0; i < N; i += 64) {
		keyname(k, sizeof(k), "key:", i);
		expect(s, k, k, 0);
	}
	while (stats(s).rehashing)
		cstore_tick(s, 0, 100);
	st = stats(s);
	assert_int_equal(st.entries, (N + 63) / 64);
	assert_true(st.buckets <= 8 * st.entries); /* shrunk: under 1/8 full would shrink again */
	assert_true(st.buckets < N / 8);
	check_accounting(s);
	cstore_destroy(s);
}

/* ---- expiry ---- */

static void expired_entry_misses_on_read_and_is_freed(void **state)
{
	(void)state;
	struct cstore *s = mk_default();
	uint64_t base = stats(s).memory_bytes;
	struct cstore_put p = P("k", "v", 1);
	p.ttl_ms = 100;
	assert_int_equal(cstore_put(s, &p, 1000, NULL), 0);
	int64_t ttl;
	assert_int_equal(cstore_ttl(s, "k", 1, 1040, &ttl), 0);
	assert_int_equal(ttl, 60);
	expect(s, "k", "v", 1099);
	expect(s, "k", NULL, 1100); /* expire_ms <= now: gone */
	struct cstore_stats st = stats(s);
	assert_int_equal(st.expirations, 1);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.memory_bytes, base); /* entry and heap array freed */
	assert_int_equal(cstore_ttl(s, "k", 1, 1100, &ttl), ERR_NOT_FOUND);
	/* a past expire_at deletes, as Redis's SET PXAT in the past */
	p = P("k2", "v", 2);
	p.expire_at_ms = 900;
	assert_int_equal(cstore_put(s, &p, 1000, NULL), 0);
	expect(s, "k2", NULL, 1000);
	assert_int_equal(stats(s).tombstones, 1);
	check_accounting(s);
	cstore_destroy(s);
}

static void tick_expires_due_entries_within_its_budget(void **state)
{
	(void)state;
	struct cstore *s = mk_default();
	char k[16];
	for (unsigned i = 0; i < 100; i++) {
		keyname(k, sizeof(k), "e", i);
		struct cstore_put p = P(k, "x", i + 1);
		p.expire_at_ms = 1000 + (i % 10) * 100; /* 10 each at 1000, 1100, ... 1900 */
		assert_int_equal(cstore_put(s, &p, 0, NULL), 0);
	}
	assert_int_equal(put(s, "forever", "x", 500, 0), 0);
	assert_int_equal(cstore_next_expiry_ms(s), 1000);
	assert_int_equal(cstore_tick(s, 999, 1000), 0);
	assert_int_equal(cstore_tick(s, 1100, 7), 7);  /* 20 due, budget 7 */
	assert_int_equal(cstore_tick(s, 1100, 7), 7);
	assert_int_equal(cstore_tick(s, 1100, 1000), 6);
	assert_int_equal(cstore_next_expiry_ms(s), 1200);
	assert_int_equal(stats(s).entries, 81);
	assert_int_equal(cstore_tick(s, 5000, 1000), 80);
	assert_int_equal(cstore_next_expiry_ms(s), UINT64_MAX);
	struct cstore_stats st = stats(s);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.expirations, 100);
	expect(s, "forever", "x", 5000);
	check_accounting(s);
	cstore_destroy(s);
}

static void default_ttl_applies_and_touch_on_read_refreshes_it(void **state)
{
	(void)state;
	struct cstore_config c = cfg_base();
	c.default_ttl_ms = 1000;
	c.touch_on_read = true;
	struct cstore *s = mk(&c);
	assert_int_equal(put(s, "k", "v", 1, 0), 0);
	int64_t ttl;
	assert_int_equal(cstore_ttl(s, "k", 1, 0, &ttl), 0);
	assert_int_equal(ttl, 1000);
	expect(s, "k", "v", 900); /* read at 900: expires at 1900 now */
	assert_int_equal(cstore_ttl(s, "k", 1, 900, &ttl), 0);
	assert_int_equal(ttl, 1000);
	expect(s, "k", "v", 1800);
	expect(s, "k", "v", 2700);
	expect(s, "k", NULL, 3700);
	/* exists and ttl do not touch */
	assert_int_equal(put(s, "j", "v", 2, 4000), 0);
	assert_int_equal(cstore_exists(s, "j", 1, 4900), 1);
	assert_int_equal(cstore_exists(s, "j", 1, 5000), 0);
	/* PERSIST opts out of the default; a persistent entry is not given one by a read */
	struct cstore_put p = P("p", "v", 3);
	p.flags = CSTORE_PUT_PERSIST;
	assert_int_equal(cstore_put(s, &p, 5000, NULL), 0);
	expect(s, "p", "v", 5000);
	assert_int_equal(cstore_ttl(s, "p", 1, 5000, &ttl), 0);
	assert_int_equal(ttl, -1);
	/* incr creates under the default TTL */
	struct cstore_version v = V(4, NODE_A);
	int64_t r;
	assert_int_equal(cstore_incr(s, "n", 1, 5, &v, 0, 5000, &r), 0);
	assert_int_equal(cstore_ttl(s, "n", 1, 5000, &ttl), 0);
	assert_int_equal(ttl, 1000);
	check_accounting(s);
	cstore_destroy(s);
}

/* ---- eviction and accounting ---- */

static void entry_limit_evicts_least_recently_used(void **state)
{
	(void)state;
	struct cstore_config c = cfg_base();
	c.entries_max = 3;
	struct cstore *s = mk(&c);
	assert_int_equal(put(s, "a", "1", 1, 0), 0);
	assert_int_equal(put(s, "b", "2", 2, 0), 0);
	assert_int_equal(put(s, "c", "3", 3, 0), 0);
	expect(s, "a", "1", 0);                        /* a is now the most recent */
	assert_int_equal(put(s, "d", "4", 4, 0), 0);    /* evicts b */
	assert_int_equal(cstore_exists(s, "b", 1, 0), 0);
	assert_int_equal(put(s, "c", "33", 5, 0), 0);   /* a write touches too: order a d c */
	assert_int_equal(put(s, "e", "5", 6, 0), 0);    /* evicts a */
	assert_int_equal(cstore_exists(s, "a", 1, 0), 0);
	expect(s, "d", "4", 0);
	expect(s, "c", "33", 0);
	expect(s, "e", "5", 0);
	struct cstore_stats st = stats(s);
	assert_int_equal(st.evictions, 2);
	assert_int_equal(st.entries, 3);
	/* tombstones count and go after the live entries */
	assert_int_equal(del(s, "d", 7, 0), 0); /* c e + tomb d */
	assert_int_equal(put(s, "f", "6", 8, 0), 0); /* 4 > 3: evicts c (LRU), not the tombstone */
	assert_int_equal(cstore_exists(s, "c", 1, 0), 0);
	assert_int_equal(stats(s).tombstones, 1);
	/* with only tombstones left, the oldest go */
	assert_int_equal(del(s, "e", 9, 1), 0);
	assert_int_equal(del(s, "f", 10, 2), 0); /* tombstones d(0) e(1) f(2) */
	assert_int_equal(del(s, "g", 11, 3), 0); /* evicts d */
	struct cstore_stats st2 = stats(s);
	assert_int_equal(st2.entries, 0);
	assert_int_equal(st2.tombstones, 3);
	assert_int_equal(st2.evictions, 4);
	assert_int_equal(put(s, "d", "back", 5, 3), 0); /* d's tombstone (version 7) is gone */
	check_accounting(s);
	cstore_destroy(s);
}

static void memory_limit_holds_after_every_write(void **state)
{
	(void)state;
	struct cstore_config c = cfg_base();
	struct cstore *probe = mk(&c);
	uint64_t base = stats(probe).memory_bytes;
	cstore_destroy(probe);
	c.memory_bytes_max = base + 20000;
	struct cstore *s = mk(&c);
	char k[32], v[100];
	memset(v, 'v', sizeof(v) - 1);
	v[sizeof(v) - 1] = 0;
	for (unsigned i = 0; i < 2000; i++) {
		keyname(k, sizeof(k), "m", i);
		assert_int_equal(put(s, k, v, i + 1, 0), 0);
		struct cstore_stats st = stats(s);
		assert_true(st.memory_bytes <= c.memory_bytes_max);
		assert_int_equal(st.memory_bytes, C.live_bytes);
		expect(s, k, v, 0); /* never the entry just written */
	}
	struct cstore_stats st = stats(s);
	assert_true(st.evictions > 1800);
	assert_true(st.entries > 50);
	/* the oldest went, the newest stayed */
	expect(s, "m0", NULL, 0);
	expect(s, "m1999", v, 0);
	/* an entry that cannot fit even alone is refused, nothing evicted */
	uint64_t before = st.entries;
	char big[30000];
	memset(big, 'b', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	assert_int_equal(put(s, "big", big, 9999, 0), ERR_TOO_LARGE);
	assert_int_equal(stats(s).entries, before);
	check_accounting(s);
	cstore_destroy(s);
}

static void accounting_is_exact_and_returns_to_baseline(void **state)
{
	(void)state;
	struct cstore *s = mk_default();
	uint64_t base = stats(s).memory_bytes;
	assert_int_equal(base, C.live_bytes);
	char k[32], v[64];
	uint64_t kv = 0, formula = 0;
	for (unsigned i = 0; i < 3000; i++) {
		keyname(k, sizeof(k), "acc", i);
		size_t vn = i % 50;
		memset(v, 'a' + (char)(i % 26), vn);
		v[vn] = 0;
		struct cstore_put p = P(k, v, i + 1);
		p.version.node[0] = (unsigned char)(i % 5); /* a few node ids */
		if (i % 3 == 0)
			p.ttl_ms = 1000000 + i;
		assert_int_equal(cstore_put(s, &p, 0, NULL), 0);
		kv += strlen(k) + vn;
		formula += cstore_entry_bytes(strlen(k), vn);
		if (i % 97 == 0)
			check_accounting(s);
	}
	struct cstore_stats st = stats(s);
	assert_int_equal(st.key_value_bytes, kv);
	assert_int_equal(st.entry_bytes, formula);
	assert_int_equal(st.memory_bytes, C.live_bytes);
	/* overwrite with other sizes, then delete everything: tombstones, then
	 * their collection, then the shrink: back to the empty store's bytes */
	for (unsigned i = 0; i < 3000; i++) {
		keyname(k, sizeof(k), "acc", i);
		assert_int_equal(put(s, k, i % 2 ? "odd" : "even!", 10000 + i, 0), 0);
	}
	check_accounting(s);
	for (unsigned i = 0; i < 3000; i++) {
		keyname(k, sizeof(k), "acc", i);
		assert_int_equal(del(s, k, 20000 + i, 5), 0);
	}
	st = stats(s);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.tombstones, 3000);
	assert_int_equal(st.entry_bytes, st.tombstones * cstore_entry_bytes(0, 0) + st.key_value_bytes);
	check_accounting(s);
	assert_int_equal(cstore_gc_tombstones(s, 5, 100000), 0); /* not older than the horizon */
	assert_int_equal(cstore_gc_tombstones(s, 6, 1000), 1000);
	assert_int_equal(cstore_gc_tombstones(s, 6, 100000), 2000);
	for (int i = 0; i < 100 && stats(s).memory_bytes != base; i++)
		cstore_tick(s, 10, 1000);
	st = stats(s);
	assert_int_equal(st.memory_bytes, base);
	assert_int_equal(st.entry_bytes, 0);
	assert_int_equal(st.buckets, CSTORE_BUCKETS_MIN);
	check_accounting(s);
	cstore_destroy(s);
}

static void failed_allocation_leaves_the_store_unchanged(void **state)
{
	(void)state;
	for (int64_t fail_in = 0; fail_in < 6; fail_in++) {
		struct cstore *s = mk_default();
		assert_int_equal(put(s, "held", "old", 1, 0), 0);
		struct cstore_stats before = stats(s);
		C.fail_in = fail_in;
		/* a new node id (node table), an expiry (heap), a new entry, a bigger value */
		struct cstore_put p = P("held", "a much longer value", 2);
		p.version.node[0] = 0x77;
		p.ttl_ms = 50;
		int rc = cstore_put(s, &p, 0, NULL);
		C.fail_in = -1;
		check_accounting(s);
		if (rc == 0) {
			expect(s, "held", "a much longer value", 0);
		} else {
			assert_int_equal(rc, ERR_NOMEM);
			expect(s, "held", "old", 0);
			struct cstore_stats after = stats(s);
			assert_int_equal(after.entries, before.entries);
			assert_int_equal(after.entry_bytes, before.entry_bytes);
			assert_int_equal(cstore_next_expiry_ms(s), UINT64_MAX);
		}
		cstore_destroy(s);
	}
}

static void expiry_heap_grows_and_shrinks_by_segments(void **state)
{
	(void)state;
	struct cstore *s = mk_default();
	uint64_t base = stats(s).memory_bytes;
	enum { N = 20000 }; /* five heap segments */
	char k[32];
	for (unsigned i = 0; i < N; i++) {
		keyname(k, sizeof(k), "h", i);
		struct cstore_put p = P(k, "v", i + 1);
		p.expire_at_ms = 1000 + (i * 7919u) % N; /* out of order */
		assert_int_equal(cstore_put(s, &p, 0, NULL), 0);
	}
	check_accounting(s);
	uint64_t prev = 0, at = 1000;
	unsigned expired = 0;
	while (expired < N) {
		uint64_t next = cstore_next_expiry_ms(s);
		assert_true(next >= prev); /* the heap gives them in order */
		prev = next;
		at += 500;
		expired += cstore_tick(s, at, 1000);
		assert_int_equal(stats(s).entries, N - expired);
		check_accounting(s);
	}
	assert_int_equal(cstore_next_expiry_ms(s), UINT64_MAX);
	for (int i = 0; i < 1000 && stats(s).memory_bytes != base; i++)
		cstore_tick(s, at, 1000);
	assert_int_equal(stats(s).memory_bytes, base);
	cstore_destroy(s);
}

static void default_allocator_and_failed_create(void **state)
{
	(void)state;
	struct cstore_config c = cfg_base();
	c.allocator = NULL; /* malloc; valgrind checks that everything is freed */
	struct cstore *s = NULL;
	assert_int_equal(cstore_create(&c, &s), 0);
	char k[32];
	for (unsigned i = 0; i < 5000; i++) {
		keyname(k, sizeof(k), "d", i);
		struct cstore_put p = P(k, "value", i + 1);
		p.ttl_ms = i % 2 ? 100 : 0;
		assert_int_equal(cstore_put(s, &p, 0, NULL), 0);
	}
	assert_int_equal(cstore_tick(s, 100, 10000), 2500);
	expect(s, "d0", "value", 100);
	cstore_destroy(s);
	/* a create whose allocations fail leaks nothing */
	c = cfg_base();
	for (int64_t n = 0; n < 3; n++) {
		C.fail_in = n;
		s = NULL;
		assert_int_equal(cstore_create(&c, &s), ERR_NOMEM);
		assert_null(s);
		assert_int_equal(C.live_bytes, 0);
	}
	C.fail_in = -1;
	assert_string_equal(cstore_result_name(CSTORE_STALE), "stale");
	assert_string_equal(cstore_result_name(CSTORE_NOT_MET), "not met");
	assert_string_equal(cstore_result_name(0), "ok");
	assert_string_equal(cstore_result_name(ERR_NOMEM), err_name(ERR_NOMEM));
}

/* ---- LWW ---- */

static void apply_keeps_the_newest_version(void **state)
{
	(void)state;
	struct cstore *s = mk_default();
	struct cstore_item it;
	memset(&it, 0, sizeof(it));
	it.key = (const unsigned char *)"k";
	it.key_bytes = 1;
	it.value = (const unsigned char *)"v10";
	it.value_bytes = 3;
	it.version = V(10, NODE_A);
	it.partition = 3;
	assert_int_equal(cstore_apply(s, &it, 0), 0);
	it.value = (const unsigned char *)"v09";
	it.version = V(9, NODE_B);
	assert_int_equal(cstore_apply(s, &it, 0), CSTORE_STALE); /* older */
	it.version = V(10, NODE_A);
	assert_int_equal(cstore_apply(s, &it, 0), CSTORE_STALE); /* equal */
	expect(s, "k", "v10", 0);
	it.value = (const unsigned char *)"vB";
	it.value_bytes = 2;
	it.version = V(10, NODE_B); /* same hlc, larger node id: newer */
	assert_int_equal(cstore_apply(s, &it, 0), 0);
	expect(s, "k", "vB", 0);
	/* an older tombstone loses, a newer one wins and keeps its version */
	it.tombstone = true;
	it.value = NULL;
	it.value_bytes = 0;
	it.version = V(10, NODE_A);
	assert_int_equal(cstore_apply(s, &it, 50), CSTORE_STALE);
	expect(s, "k", "vB", 50);
	it.version = V(11, NODE_A);
	assert_int_equal(cstore_apply(s, &it, 50), 0);
	expect(s, "k", NULL, 50);
	/* a write older than the tombstone cannot resurrect the key */
	it.tombstone = false;
	it.value = (const unsigned char *)"zombie";
	it.value_bytes = 6;
	it.version = V(10, NODE_B);
	assert_int_equal(cstore_apply(s, &it, 60), CSTORE_STALE);
	expect(s, "k", NULL, 60);
	/* local writes obey the same rule */
	assert_int_equal(put(s, "k", "local-old", 11, 60), CSTORE_STALE);
	assert_int_equal(del(s, "k", 11, 60), CSTORE_STALE);
	/* a newer live write replaces the tombstone */
	it.version = V(12, NODE_A);
	assert_int_equal(cstore_apply(s, &it, 70), 0);
	expect(s, "k", "zombie", 70);
	/* an expired entry is absent: an older write is then accepted, and a
	 * replicated write that arrives already expired still removes an older one */
	it.value = (const unsigned char *)"short";
	it.value_bytes = 5;
	it.version = V(20, NODE_A);
	it.expire_ms = 100;
	assert_int_equal(cstore_apply(s, &it, 80), 0);
	it.version = V(15, NODE_A);
	it.expire_ms = 0;
	assert_int_equal(cstore_apply(s, &it, 100), 0);
	expect(s, "k", "short", 100);
	it.version = V(30, NODE_A);
	it.expire_ms = 90;
	assert_int_equal(cstore_apply(s, &it, 100), 0);
	expect(s, "k", NULL, 100);
	assert_int_equal(stats(s).entries, 0);
	check_accounting(s);
	cstore_destroy(s);
}

static void expired_entry_becomes_a_tombstone_when_configured(void **state)
{
	(void)state;
	struct cstore_config c = cfg_base();
	c.expire_to_tombstone = true;
	struct cstore *s = mk(&c);
	struct cstore_put p = P("k", "a value of some length", 20);
	p.ttl_ms = 10;
	assert_int_equal(cstore_put(s, &p, 0, NULL), 0);
	assert_int_equal(put(s, "j", "v", 21, 0), 0);
	struct cstore_version v = V(22, NODE_A);
	assert_int_equal(cstore_expire(s, "j", 1, 10, &v, 0), 0);
	assert_int_equal(cstore_tick(s, 10, 1), 1);   /* one by the tick (either) */
	expect(s, "k", NULL, 10);                     /* the other lazily */
	expect(s, "j", NULL, 10);
	struct cstore_stats st = stats(s);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.tombstones, 2);
	assert_int_equal(st.expirations, 2);
	assert_int_equal(st.entry_bytes, 2 * cstore_entry_bytes(1, 0)); /* the values were given back */
	/* the tombstone keeps the version: an older write is refused */
	struct cstore_item it;
	memset(&it, 0, sizeof(it));
	it.key = (const unsigned char *)"k";
	it.key_bytes = 1;
	it.value = (const unsigned char *)"old";
	it.value_bytes = 3;
	it.version = V(19, NODE_A);
	it.partition = part_of("k");
	assert_int_equal(cstore_apply(s, &it, 20), CSTORE_STALE);
	it.version = V(21, NODE_A);
	assert_int_equal(cstore_apply(s, &it, 20), 0);
	expect(s, "k", "old", 20);
	check_accounting(s);
	cstore_destroy(s);
}

/* ---- put flags, incr, cas, expire ---- */

static void put_honours_nx_xx_keepttl_and_get(void **state)
{
	(void)state;
	struct cstore *s = mk_default();
	struct cstore_put p = P("k", "v1", 1);
	p.flags = CSTORE_PUT_XX;
	assert_int_equal(cstore_put(s, &p, 0, NULL), CSTORE_NOT_MET);
	assert_int_equal(cstore_exists(s, "k", 1, 0), 0);
	p.flags = CSTORE_PUT_NX;
	p.ttl_ms = 1000;
	assert_int_equal(cstore_put(s, &p, 0, NULL), 0);
	p = P("k", "v2", 2);
	p.flags = CSTORE_PUT_NX;
	assert_int_equal(cstore_put(s, &p, 0, NULL), CSTORE_NOT_MET);
	expect(s, "k", "v1", 0);
	/* XX + KEEPTTL + GET: the old value comes back, the expiry stays */
	struct cstore_item old;
	p = P("k", "value-3", 3);
	p.flags = CSTORE_PUT_XX | CSTORE_PUT_KEEPTTL | CSTORE_PUT_GET;
	assert_int_equal(cstore_put(s, &p, 100, &old), 0);
	assert_true(old.found);
	assert_int_equal(old.value_bytes, 2);
	assert_memory_equal(old.value, "v1", 2); /* valid until the next call */
	assert_int_equal(old.version.hlc, 1);
	assert_int_equal(old.expire_ms, 1000);
	int64_t ttl;
	assert_int_equal(cstore_ttl(s, "k", 1, 100, &ttl), 0);
	assert_int_equal(ttl, 900);
	/* without KEEPTTL a plain put clears the expiry (no default TTL here) */
	p = P("k", "v4", 4);
	p.flags = CSTORE_PUT_GET;
	assert_int_equal(cstore_put(s, &p, 100, &old), 0);
	assert_memory_equal(old.value, "value-3", 7);
	assert_int_equal(cstore_ttl(s, "k", 1, 100, &ttl), 0);
	assert_int_equal(ttl, -1);
	/* GET on an absent key, and GET with NX that fails still reports */
	p = P("absent", "x", 5);
	p.flags = CSTORE_PUT_GET;
	assert_int_equal(cstore_put(s, &p, 100, &old), 0);
	assert_false(old.found);
	p = P("k", "v5", 6);
	p.flags = CSTORE_PUT_GET | CSTORE_PUT_NX;
	assert_int_equal(cstore_put(s, &p, 100, &old), CSTORE_NOT_MET);
	assert_true(old.found);
	assert_memory_equal(old.value, "v4", 2);
	/* NX on a tombstone: the key is absent */
	assert_int_equal(del(s, "k", 7, 100), 0);
	p = P("k", "v8", 8);
	p.flags = CSTORE_PUT_NX;
	assert_int_equal(cstore_put(s, &p, 100, NULL), 0);
	/* delete with old (GETDEL) */
	bool existed = false;
	struct cstore_version v = V(9, NODE_A);
	assert_int_equal(cstore_delete(s, "k", 1, &v, part_of("k"), 100, &existed, &old), 0);
	assert_true(existed);
	assert_memory_equal(old.value, "v8", 2);
	v = V(10, NODE_A);
	assert_int_equal(cstore_delete(s, "k", 1, &v, part_of("k"), 100, &existed, NULL), 0);
	assert_false(existed);
	check_accounting(s);
	cstore_destroy(s);
}

static void incr_accepts_redis_integers_and_refuses_overflow(void **state)
{
	(void)state;
	struct cstore *s = mk_default();
	uint64_t hlc = 1;
	struct cstore_version v;
	int64_t r;
#define INCR(key, d) (v = V(hlc++, NODE_A), cstore_incr(s, key, strlen(key), d, &v, part_of(key), 0, &r))
	assert_int_equal(INCR("n", 5), 0);
	assert_int_equal(r, 5);
	assert_int_equal(INCR("n", -7), 0);
	assert_int_equal(r, -2);
	expect(s, "n", "-2", 0);
	static const struct {
		const char *value;
		int ok;
		int64_t parsed;
	} vec[] = {
		{"0", 1, 0}, {"9223372036854775807", 1, INT64_MAX}, {"-9223372036854775808", 1, INT64_MIN},
		{"-1", 1, -1}, {"12", 1, 12}, {"", 0, 0}, {"-", 0, 0}, {"-0", 0, 0}, {"01", 0, 0}, {"+1", 0, 0},
		{" 1", 0, 0}, {"1 ", 0, 0}, {"1.5", 0, 0}, {"abc", 0, 0}, {"9223372036854775808", 0, 0},
		{"-9223372036854775809", 0, 0}, {"99999999999999999999", 0, 0}, {"184467440737095516160", 0, 0},
	};
	for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
		assert_int_equal(put(s, "x", vec[i].value, hlc++, 0), 0);
		int rc = INCR("x", 0);
		if (vec[i].ok) {
			assert_int_equal(rc, 0);
			assert_int_equal(r, vec[i].parsed);
		} else {
			assert_int_equal(rc, ERR_INVALID);
			expect(s, "x", vec[i].value, 0); /* unchanged */
		}
	}
	assert_int_equal(put(s, "x", "9223372036854775806", hlc++, 0), 0);
	assert_int_equal(INCR("x", 1), 0);
	assert_int_equal(INCR("x", 1), ERR_TOO_LARGE);
	expect(s, "x", "9223372036854775807", 0);
	assert_int_equal(put(s, "x", "-9223372036854775807", hlc++, 0), 0);
	assert_int_equal(INCR("x", -1), 0);
	assert_int_equal(r, INT64_MIN);
	assert_int_equal(INCR("x", -1), ERR_TOO_LARGE);
	/* incr keeps the expiry; a stale version is refused */
	struct cstore_put p = P("t", "10", hlc++);
	p.ttl_ms = 500;
	assert_int_equal(cstore_put(s, &p, 0, NULL), 0);
	assert_int_equal(INCR("t", 1), 0);
	int64_t ttl;
	assert_int_equal(cstore_ttl(s, "t", 1, 0, &ttl), 0);
	assert_int_equal(ttl, 500);
	v = V(1, NODE_A);
	assert_int_equal(cstore_incr(s, "t", 1, 1, &v, part_of("t"), 0, &r), CSTORE_STALE);
	expect(s, "t", "11", 0);
#undef INCR
	check_accounting(s);
	cstore_destroy(s);
}

static void compare_and_set_needs_the_current_version(void **state)
{
	(void)state;
	struct cstore *s = mk_default();
	assert_int_equal(put(s, "k", "a", 5, 0), 0);
	struct cstore_version wrong = V(4, NODE_A), right = V(5, NODE_A);
	struct cstore_put p = P("k", "b", 6);
	p.if_version = &wrong;
	assert_int_equal(cstore_put(s, &p, 0, NULL), CSTORE_NOT_MET);
	expect(s, "k", "a", 0);
	p.if_version = &right;
	assert_int_equal(cstore_put(s, &p, 0, NULL), 0);
	expect(s, "k", "b", 0);
	assert_int_equal(cstore_put(s, &p, 0, NULL), CSTORE_NOT_MET); /* version moved on */
	p = P("absent", "b", 7);
	p.if_version = &right;
	assert_int_equal(cstore_put(s, &p, 0, NULL), CSTORE_NOT_MET);
	check_accounting(s);
	cstore_destroy(s);
}

static void expire_persist_and_ttl(void **state)
{
	(void)state;
	struct cstore *s = mk_default();
	struct cstore_version v = V(2, NODE_A);
	assert_int_equal(cstore_expire(s, "k", 1, 500, &v, 0), CSTORE_NOT_MET);
	assert_int_equal(put(s, "k", "v", 1, 0), 0);
	int64_t ttl;
	assert_int_equal(cstore_ttl(s, "k", 1, 0, &ttl), 0);
	assert_int_equal(ttl, -1);
	assert_int_equal(cstore_persist(s, "k", 1, &v, 0), CSTORE_NOT_MET); /* nothing to persist */
	assert_int_equal(cstore_expire(s, "k", 1, 500, &v, 0), 0);
	assert_int_equal(cstore_ttl(s, "k", 1, 100, &ttl), 0);
	assert_int_equal(ttl, 400);
	assert_int_equal(cstore_expire(s, "k", 1, 900, &v, 0), CSTORE_STALE); /* same version */
	v = V(3, NODE_A);
	assert_int_equal(cstore_persist(s, "k", 1, &v, 100), 0);
	assert_int_equal(cstore_ttl(s, "k", 1, 100, &ttl), 0);
	assert_int_equal(ttl, -1);
	assert_int_equal(cstore_next_expiry_ms(s), UINT64_MAX);
	struct cstore_item it;
	assert_int_equal(cstore_get(s, "k", 1, 100, &it), 0);
	assert_int_equal(it.version.hlc, 3);
	/* an expiry in the past deletes, leaving a tombstone with the version */
	v = V(4, NODE_A);
	assert_int_equal(cstore_expire(s, "k", 1, 100, &v, 100), 0);
	expect(s, "k", NULL, 100);
	assert_int_equal(stats(s).tombstones, 1);
	assert_int_equal(put(s, "k", "v", 4, 100), CSTORE_STALE);
	v = V(5, NODE_A);
	assert_int_equal(cstore_expire(s, "k", 1, 0, &v, 100), ERR_INVALID);
	check_accounting(s);
	cstore_destroy(s);
}

struct tomb_seen {
	unsigned count;
	uint64_t d_ms;
};

static void on_tomb(void *ctx, const struct cstore_item *it)
{
	struct tomb_seen *t = ctx;
	t->count++;
	if (it->key_bytes == 1 && it->key[0] == 'd') {
		assert_true(it->tombstone);
		t->d_ms = it->tombstone_ms;
	}
}

static void tombstones_are_collected_after_the_horizon_oldest_first(void **state)
{
	(void)state;
	struct cstore *s = mk_default();
	assert_int_equal(del(s, "a", 1, 100), 0); /* a tombstone even for an absent key */
	assert_int_equal(put(s, "b", "v", 2, 100), 0);
	assert_int_equal(del(s, "b", 3, 200), 0);
	assert_int_equal(del(s, "c", 4, 300), 0);
	struct cstore_stats st = stats(s);
	assert_int_equal(st.tombstones, 3);
	assert_int_equal(st.entries, 0);
	assert_int_equal(cstore_gc_tombstones(s, 100, 10), 0); /* created at 100: not before 100 */
	assert_int_equal(cstore_gc_tombstones(s, 250, 10), 2);
	assert_int_equal(stats(s).tombstones, 1);
	/* c's tombstone still refuses an older write; a's is gone */
	assert_int_equal(put(s, "c", "v", 3, 300), CSTORE_STALE);
	assert_int_equal(put(s, "a", "v", 1, 300), 0);
	/* a tombstone created with an earlier time takes the newest one's, so
	 * the FIFO stays in time order */
	assert_int_equal(del(s, "d", 5, 50), 0);
	struct tomb_seen ts = {0};
	uint64_t cursor = 0;
	do
		assert_int_equal(cstore_partition_scan(s, part_of("d"), cursor, 100, 300, on_tomb, &ts, &cursor), 0);
	while (cursor);
	assert_int_equal(ts.count, 3); /* a c d: one-letter keys share a partition; "a" is live again */
	assert_int_equal(ts.d_ms, 300);
	assert_int_equal(cstore_gc_tombstones(s, 100, 10), 0);
	assert_int_equal(cstore_gc_tombstones(s, 301, 10), 2);
	check_accounting(s);
	cstore_destroy(s);
}

/* ---- scan and glob ---- */

struct seen {
	uint8_t *hits;   /* per key index */
	unsigned count;
	unsigned calls;
};

static void on_scan(void *ctx, const struct cstore_item *it)
{
	struct seen *sn = ctx;
	char k[32];
	assert_true(it->key_bytes < sizeof(k));
	memcpy(k, it->key, it->key_bytes);
	k[it->key_bytes] = 0;
	unsigned idx;
	if (sscanf(k, "stable:%u", &idx) == 1) {
		if (!sn->hits[idx])
			sn->count++;
		if (sn->hits[idx] < 255)
			sn->hits[idx]++;
	}
	sn->calls++;
}

static void scan_across_resizes_returns_every_stable_key(void **state)
{
	(void)state;
	struct cstore *s = mk_default();
	enum { STABLE = 1000, CHURN = 15000, ROUND = 200 };
	char k[32];
	for (unsigned i = 0; i < STABLE; i++) {
		keyname(k, sizeof(k), "stable:", i);
		assert_int_equal(put(s, k, "v", i + 1, 0), 0);
	}
	struct seen sn = {.hits = calloc(STABLE, 1)};
	assert_non_null(sn.hits);
	uint64_t cursor = 0, hlc = STABLE + 1;
	unsigned calls = 0, churn_added = 0, resizes_seen = 0;
	bool was = false, churn_done = false;
	do {
		assert_int_equal(cstore_scan(s, cursor, NULL, 0, 20, 0, on_scan, &sn, &cursor), 0);
		calls++;
		/* between calls: first grow the table (16x), then shrink it back */
		if (churn_added < CHURN && !churn_done) {
			for (unsigned j = 0; j < ROUND; j++, churn_added++) {
				keyname(k, sizeof(k), "churn:", churn_added);
				assert_int_equal(put(s, k, "c", hlc++, 0), 0);
			}
		} else {
			churn_done = true;
			for (unsigned j = 0; j < ROUND; j++) {
				if (!churn_added)
					break;
				keyname(k, sizeof(k), "churn:", --churn_added + 0u);
				assert_int_equal(del(s, k, hlc++, 0), 0);
			}
			cstore_gc_tombstones(s, 1, 100000);
			cstore_tick(s, 0, 3);
		}
		bool r = stats(s).rehashing;
		if (r && !was)
			resizes_seen++;
		was = r;
	} while (cursor != 0);
	assert_int_equal(sn.count, STABLE);
	assert_true(resizes_seen >= 3);
	assert_true(calls > 10);
	free(sn.hits);
	check_accounting(s);
	cstore_destroy(s);
}

static void scan_filters_by_pattern_and_refuses_garbage_cursors(void **state)
{
	(void)state;
	struct cstore *s = mk_default();
	char k[32];
	for (unsigned i = 0; i < 500; i++) {
		keyname(k, sizeof(k), "stable:", i);
		assert_int_equal(put(s, k, "v", i + 1, 0), 0);
		keyname(k, sizeof(k), "other:", i);
		assert_int_equal(put(s, k, "v", i + 1, 0), 0);
	}
	struct seen sn = {.hits = calloc(500, 1)};
	assert_non_null(sn.hits);
	uint64_t cursor = 0;
	unsigned rounds = 0;
	do {
		assert_int_equal(cstore_scan(s, cursor, "stable:*", 8, 50, 0, on_scan, &sn, &cursor), 0);
		rounds++;
	} while (cursor);
	assert_int_equal(sn.count, 500);
	assert_int_equal(sn.calls, 500); /* no resize here: each once, no other keys */
	assert_true(rounds >= 5);        /* the COUNT hint bounds each call */
	/* cursors this store never handed out */
	uint64_t next = 1234;
	uint64_t rng = 88172645463325252ull;
	for (int i = 0; i < 1000; i++) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		assert_int_equal(cstore_scan(s, rng, NULL, 0, 10, 0, on_scan, &sn, &next), ERR_INVALID);
	}
	assert_int_equal(cstore_scan(s, 5, NULL, 0, 10, 0, on_scan, &sn, &next), ERR_INVALID);
	assert_int_equal(cstore_scan(s, UINT64_MAX, NULL, 0, 10, 0, on_scan, &sn, &next), ERR_INVALID);
	assert_int_equal(next, 1234);
	/* a cursor from another store (another hash key) is refused too */
	assert_int_equal(cstore_scan(s, 0, NULL, 0, 10, 0, on_scan, &sn, &cursor), 0);
	assert_int_not_equal(cursor, 0);
	struct cstore_config c2 = cfg_base();
	c2.hash_key[0] ^= 1;
	struct cstore *other = mk(&c2);
	assert_int_equal(cstore_scan(other, cursor, NULL, 0, 10, 0, on_scan, &sn, &next), ERR_INVALID);
	cstore_destroy(other);
	free(sn.hits);
	cstore_destroy(s);
}

static int gm(const char *p, const char *s)
{
	return cstore_glob_match(p, strlen(p), s, strlen(s));
}

static void glob_matches_like_redis(void **state)
{
	(void)state;
	static const struct {
		const char *pat, *str;
		int match;
	} vec[] = {
		{"*", "", 1}, {"*", "anything", 1}, {"", "", 1}, {"", "a", 0}, {"a", "", 0},
		{"h?llo", "hello", 1}, {"h?llo", "hllo", 0}, {"h*llo", "hllo", 1}, {"h*llo", "heeeello", 1},
		{"h[ae]llo", "hello", 1}, {"h[ae]llo", "hallo", 1}, {"h[ae]llo", "hillo", 0},
		{"h[^e]llo", "hallo", 1}, {"h[^e]llo", "hello", 0}, {"h[a-b]llo", "hbllo", 1},
		{"h[a-b]llo", "hcllo", 0}, {"h[b-a]llo", "hallo", 1}, /* reversed range */
		{"h\\*llo", "h*llo", 1}, {"h\\*llo", "hello", 0}, {"\\?", "?", 1}, {"\\?", "a", 0},
		{"[\\]]", "]", 1}, {"[\\-]", "-", 1}, {"[a\\-z]", "b", 0}, {"[]", "a", 0},
		{"[^]", "a", 1}, {"a[", "a", 0}, {"a[b", "ab", 1}, /* unclosed class: runs to the end */
		{"a[b-", "ab", 1}, {"x\\", "x\\", 1}, /* a trailing backslash is literal */
		{"*a*b*c*", "xxaxxbxxcxx", 1}, {"*a*b*c*", "xxaxxcxxbxx", 0}, {"a*", "a", 1}, {"*a", "ba", 1},
		{"*a", "ab", 0}, {"**a**", "a", 1}, {"user:*:name", "user:42:name", 1},
		{"user:*:name", "user:42:nam", 0}, {"*[0-9]", "key7", 1}, {"*[0-9]", "key", 0},
		{"[a-]", "]", 1}, /* Redis: "a-]" is a range a..] */
		{"?*?", "ab", 1}, {"?*?", "a", 0}, {"*?*?*", "a", 0},
	};
	for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
		if (gm(vec[i].pat, vec[i].str) != vec[i].match)
			fail_msg("glob '%s' vs '%s': want %d", vec[i].pat, vec[i].str, vec[i].match);
	}
	/* bytes above 0x7f compare as unsigned, and a NUL inside is an ordinary byte */
	assert_int_equal(cstore_glob_match("[\x80-\xff]", 5, "\xc3", 1), 1);
	assert_int_equal(cstore_glob_match("a?c", 3, "a\0c", 3), 1);
}

static void glob_pathological_patterns_stay_fast_and_shallow(void **state)
{
	(void)state;
	/* Redis's recursive matcher is exponential on these */
	enum { N = 20000 };
	char *str = malloc(N + 1), *pat = malloc(4 * N + 2);
	assert_non_null(str);
	assert_non_null(pat);
	memset(str, 'a', N);
	str[N] = 0;
	size_t pn = 0;
	for (int i = 0; i < 30; i++) {
		pat[pn++] = 'a';
		pat[pn++] = '*';
	}
	pat[pn++] = 'b';
	clock_t t0 = clock();
	assert_int_equal(cstore_glob_match(pat, pn, str, N), 0);
	/* 20,000 stars in a row, and 10,000 classes: no recursion to overflow */
	memset(pat, '*', N);
	assert_int_equal(cstore_glob_match(pat, N, str, N), 1);
	pat[N] = 'b';
	assert_int_equal(cstore_glob_match(pat, N + 1, str, N), 0);
	pn = 0;
	for (int i = 0; i < 1000; i++) {
		memcpy(pat + pn, "*[a]", 4);
		pn += 4;
	}
	pat[pn++] = 'b';
	assert_int_equal(cstore_glob_match(pat, pn, str, 2000), 0);
	double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
	assert_true(secs < 10.0); /* bounded work (valgrind-slow machines included) */
	free(str);
	free(pat);
}

/* ---- partitions ---- */

static void fill_partition_store(struct cstore *s, const unsigned *order, unsigned n)
{
	char k[32], v[32];
	for (unsigned j = 0; j < n; j++) {
		unsigned i = order[j];
		keyname(k, sizeof(k), "pk", i);
		keyname(v, sizeof(v), "val", i * 3);
		struct cstore_item it;
		memset(&it, 0, sizeof(it));
		it.key = (const unsigned char *)k;
		it.key_bytes = (uint32_t)strlen(k);
		it.value = (const unsigned char *)v;
		it.value_bytes = (uint32_t)strlen(v);
		it.version = V(100 + i, (unsigned char)(i % 3));
		it.partition = (uint16_t)(i % 4);
		it.tombstone = i % 5 == 0;
		if (it.tombstone) {
			it.value = NULL;
			it.value_bytes = 0;
		}
		assert_int_equal(cstore_apply(s, &it, 0), 0);
	}
}

static void partition_digest_ignores_order_and_sees_one_version(void **state)
{
	(void)state;
	enum { N = 400 };
	unsigned fwd[N], rev[N];
	for (unsigned i = 0; i < N; i++) {
		fwd[i] = i;
		rev[i] = N - 1 - i;
	}
	struct cstore_config c1 = cfg_base(), c2 = cfg_base();
	c2.hash_key[5] ^= 0x5a; /* another node: another table key, same digests */
	struct cstore *a = mk(&c1), *b = mk(&c2);
	fill_partition_store(a, fwd, N);
	/* b gets an older version of some keys first, then the same content */
	fill_partition_store(b, rev, N);
	for (uint16_t p = 0; p < 4; p++) {
		struct cstore_partition_stats pa, pb;
		assert_int_equal(cstore_partition_stats(a, p, &pa), 0);
		assert_int_equal(cstore_partition_stats(b, p, &pb), 0);
		assert_int_equal(pa.entries, pb.entries);
		assert_int_equal(pa.tombstones, pb.tombstones);
		assert_int_equal(pa.bytes, pb.bytes);
		assert_int_equal(pa.digest, pb.digest);
		assert_int_equal(pa.entries + pa.tombstones, N / 4);
		assert_int_not_equal(pa.digest, 0);
	}
	/* one newer version in b's partition 1: digests differ there only */
	struct cstore_item it;
	memset(&it, 0, sizeof(it));
	it.key = (const unsigned char *)"pk1";
	it.key_bytes = 3;
	it.value = (const unsigned char *)"val3";
	it.value_bytes = 4;
	it.version = V(101, 2); /* same hlc, another node */
	it.partition = 1;
	assert_int_equal(cstore_apply(b, &it, 0), 0);
	struct cstore_partition_stats pa, pb;
	cstore_partition_stats(a, 1, &pa);
	cstore_partition_stats(b, 1, &pb);
	assert_int_equal(pa.entries, pb.entries);
	assert_int_equal(pa.bytes, pb.bytes);
	assert_int_not_equal(pa.digest, pb.digest);
	cstore_partition_stats(a, 2, &pa);
	cstore_partition_stats(b, 2, &pb);
	assert_int_equal(pa.digest, pb.digest);
	/* same version, tombstone instead of value: differs too */
	it.key = (const unsigned char *)"pk2";
	it.version = V(200, 0);
	it.partition = 2;
	assert_int_equal(cstore_apply(a, &it, 0), 0);
	it.tombstone = true;
	assert_int_equal(cstore_apply(b, &it, 0), 0);
	cstore_partition_stats(a, 2, &pa);
	cstore_partition_stats(b, 2, &pb);
	assert_int_not_equal(pa.digest, pb.digest);
	assert_int_equal(cstore_partition_stats(a, 16, &pa), ERR_INVALID);
	assert_int_equal(stats(a).memory_bytes + stats(b).memory_bytes, C.live_bytes);
	cstore_destroy(a);
	cstore_destroy(b);
}

struct collect {
	struct cstore *dst;
	unsigned live, tombs;
};

static void on_stream(void *ctx, const struct cstore_item *it)
{
	struct collect *c = ctx;
	if (it->tombstone)
		c->tombs++;
	else
		c->live++;
	assert_int_equal(cstore_apply(c->dst, it, 0), 0);
}

static void partition_streams_to_another_store_and_drops(void **state)
{
	(void)state;
	enum { N = 2000 };
	unsigned order[N];
	for (unsigned i = 0; i < N; i++)
		order[i] = i;
	struct cstore *src = mk_default(), *dst = mk_default();
	fill_partition_store(src, order, N);
	struct collect col = {.dst = dst};
	uint64_t cursor = 0;
	do
		assert_int_equal(cstore_partition_scan(src, 3, cursor, 64, 0, on_stream, &col, &cursor), 0);
	while (cursor);
	struct cstore_partition_stats ps, pd;
	cstore_partition_stats(src, 3, &ps);
	cstore_partition_stats(dst, 3, &pd);
	assert_int_equal(col.live, ps.entries);
	assert_int_equal(col.tombs, ps.tombstones);
	assert_int_equal(ps.digest, pd.digest);
	assert_int_equal(ps.bytes, pd.bytes);
	assert_int_equal(stats(dst).entries + stats(dst).tombstones, N / 4);
	/* drop partition 3 in slices */
	uint64_t removed_total = 0, removed;
	cursor = 0;
	do {
		assert_int_equal(cstore_partition_drop(src, 3, cursor, 16, &cursor, &removed), 0);
		removed_total += removed;
	} while (cursor);
	assert_int_equal(removed_total, N / 4);
	cstore_partition_stats(src, 3, &ps);
	assert_int_equal(ps.entries + ps.tombstones, 0);
	assert_int_equal(ps.bytes, 0);
	assert_int_equal(ps.digest, 0);
	cstore_partition_stats(src, 2, &ps);
	assert_int_equal(ps.entries + ps.tombstones, N / 4); /* others untouched */
	assert_int_equal(cstore_partition_drop(src, 99, 0, 16, &cursor, &removed), ERR_INVALID);
	assert_int_equal(stats(src).memory_bytes + stats(dst).memory_bytes, C.live_bytes);
	cstore_destroy(src);
	cstore_destroy(dst);
}

/* A cluster-wide FLUSH stamped F: every entry whose version is below F
 * goes, live or tombstone, expiring or not, in slices across a resize;
 * writes newer than F (made before the pass, or between its slices) stay,
 * and the partition digests end equal to a store that only ever held those. */
static void entries_older_than_a_flush_are_dropped_and_newer_ones_kept(void **state)
{
	(void)state;
	enum { N = 3000, F = 1000 + N / 2 };
	struct cstore *s = mk_default(), *want = mk_default();
	char k[32], v[32];
	for (unsigned i = 0; i < N; i++) {
		keyname(k, sizeof(k), "fk", i);
		keyname(v, sizeof(v), "val", i);
		if (i % 7 == 0) {
			assert_int_equal(del(s, k, 1000 + i, 10), 0);
			continue;
		}
		struct cstore_put p = P(k, v, 1000 + i);
		p.ttl_ms = i % 5 == 0 ? 60000 : 0; /* some in the expiry heap */
		assert_int_equal(cstore_put(s, &p, 10, NULL), 0);
	}
	/* newer writes, until the table starts growing: the pass meets a resize */
	unsigned late = 0;
	do {
		keyname(k, sizeof(k), "late", late);
		assert_int_equal(put(s, k, "after", 5000 + late, 10), 0);
		late++;
	} while (!stats(s).rehashing && late < 4000);
	assert_true(stats(s).rehashing);
	uint64_t cursor = 0, removed = 0, removed_total = 0;
	unsigned step = 0;
	do {
		assert_int_equal(cstore_drop_older(s, F, cursor, 16, &cursor, &removed), 0);
		removed_total += removed;
		/* a write made after the flush, between two slices */
		keyname(k, sizeof(k), "between", step++);
		assert_int_equal(put(s, k, "new", 9000 + step, 10), 0);
	} while (cursor);
	assert_int_equal(removed_total, N / 2);
	for (unsigned i = 0; i < N; i++) {
		keyname(k, sizeof(k), "fk", i);
		keyname(v, sizeof(v), "val", i);
		struct cstore_item it;
		if (1000 + i < F) {
			assert_int_equal(cstore_peek(s, k, strlen(k), 10, &it), ERR_NOT_FOUND);
			continue;
		}
		if (i % 7 == 0) {
			assert_int_equal(cstore_peek(s, k, strlen(k), 10, &it), 0);
			assert_true(it.tombstone);
			assert_int_equal(del(want, k, 1000 + i, 10), 0);
			continue;
		}
		expect(s, k, v, 10);
		struct cstore_put p = P(k, v, 1000 + i);
		p.ttl_ms = i % 5 == 0 ? 60000 : 0;
		assert_int_equal(cstore_put(want, &p, 10, NULL), 0);
	}
	for (unsigned i = 0; i < late; i++) {
		keyname(k, sizeof(k), "late", i);
		expect(s, k, "after", 10);
		assert_int_equal(put(want, k, "after", 5000 + i, 10), 0);
	}
	for (unsigned i = 0; i < step; i++) {
		keyname(k, sizeof(k), "between", i);
		expect(s, k, "new", 10);
		assert_int_equal(put(want, k, "new", 9000 + i + 1, 10), 0);
	}
	for (uint16_t p = 0; p < 16; p++) {
		struct cstore_partition_stats a, b;
		cstore_partition_stats(s, p, &a);
		cstore_partition_stats(want, p, &b);
		assert_int_equal(a.entries, b.entries);
		assert_int_equal(a.tombstones, b.tombstones);
		assert_int_equal(a.bytes, b.bytes);
		assert_int_equal(a.digest, b.digest);
	}
	/* the dropped expiring entries left the heap: the expiries to come are
	 * the kept ones' */
	assert_int_equal(cstore_tick(s, 60010, 100000), cstore_tick(want, 60010, 100000));
	assert_int_equal(stats(s).entries, stats(want).entries);
	/* nothing older is left: a second pass removes nothing */
	cursor = 0;
	removed_total = 0;
	do {
		assert_int_equal(cstore_drop_older(s, F, cursor, 1u << 20, &cursor, &removed), 0);
		removed_total += removed;
	} while (cursor);
	assert_int_equal(removed_total, 0);
	assert_int_equal(cstore_drop_older(s, F, 12345, 16, &cursor, &removed), ERR_INVALID);
	assert_int_equal(stats(s).memory_bytes + stats(want).memory_bytes, C.live_bytes);
	cstore_destroy(s);
	cstore_destroy(want);
}

static void flush_and_many_node_ids_give_memory_back(void **state)
{
	(void)state;
	struct cstore *s = mk_default();
	uint64_t base = stats(s).memory_bytes;
	char k[32];
	/* 3000 distinct node ids: the node table grows, and shrinks away again */
	for (unsigned i = 0; i < 3000; i++) {
		keyname(k, sizeof(k), "n", i);
		struct cstore_put p = P(k, "v", 1);
		memcpy(p.version.node, &i, sizeof(i));
		if (i % 2)
			p.ttl_ms = 100 + i;
		assert_int_equal(cstore_put(s, &p, 0, NULL), 0);
	}
	for (unsigned i = 0; i < 3000; i++) {
		keyname(k, sizeof(k), "n", i);
		struct cstore_item it;
		assert_int_equal(cstore_get(s, k, strlen(k), 0, &it), 0);
		unsigned got;
		memcpy(&got, it.version.node, sizeof(got));
		assert_int_equal(got, i);
	}
	/* rewrite half under one node: the others' slots are freed and reused */
	for (unsigned i = 0; i < 3000; i += 2) {
		keyname(k, sizeof(k), "n", i);
		assert_int_equal(put(s, k, "w", 2, 0), 0);
	}
	for (unsigned i = 1; i < 3000; i += 2) {
		keyname(k, sizeof(k), "n", i);
		struct cstore_item it;
		assert_int_equal(cstore_get(s, k, strlen(k), 0, &it), 0);
		unsigned got;
		memcpy(&got, it.version.node, sizeof(got));
		assert_int_equal(got, i);
	}
	check_accounting(s);
	cstore_flush(s);
	struct cstore_stats st = stats(s);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.memory_bytes, base);
	assert_int_equal(cstore_next_expiry_ms(s), UINT64_MAX);
	expect(s, "n1", NULL, 0);
	assert_int_equal(put(s, "after", "flush", 3, 0), 0);
	expect(s, "after", "flush", 0);
	check_accounting(s);
	cstore_destroy(s);
}

static void node_ids_are_interned_and_their_slots_reused(void **state)
{
	(void)state;
	struct cstore *s = mk_default();
	char k[16];
	/* many entries, few writers: one table slot per writer */
	for (unsigned i = 0; i < 2000; i++) {
		keyname(k, sizeof(k), "w", i);
		struct cstore_put p = P(k, "v", i + 1);
		p.version.node[0] = (unsigned char)(i % 7);
		assert_int_equal(cstore_put(s, &p, 0, NULL), 0);
	}
	assert_int_equal(stats(s).node_ids, 7);
	cstore_flush(s);
	assert_int_equal(stats(s).node_ids, 0);
	/* churn: 400 ids come and go, at most 128 held at once; the table
	 * finds every held id (one slot each) and reuses freed slots */
	enum { KEYS = 128, IDS = 400, ROUNDS = 20000 };
	unsigned holder[KEYS];
	uint64_t rng = 0x9e3779b97f4a7c15u;
	for (unsigned r = 0; r < ROUNDS; r++) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		unsigned key = r % KEYS, id = (unsigned)(rng % IDS); /* often an id still held */
		holder[key] = id;
		keyname(k, sizeof(k), "n", key);
		struct cstore_put p = P(k, "v", r + 1);
		memset(p.version.node, 0, sizeof(p.version.node));
		memcpy(p.version.node + 3, &id, sizeof(id));
		assert_int_equal(cstore_put(s, &p, 0, NULL), 0);
		struct cstore_item it;
		assert_int_equal(cstore_get(s, k, strlen(k), 0, &it), 0);
		assert_int_equal(cstore_version_cmp(&it.version, &p.version), 0);
		if (r % 16 == 0 || r > ROUNDS - KEYS) {
			unsigned distinct = 0;
			uint8_t seen[IDS] = {0};
			for (unsigned j = 0; j < KEYS && j <= r; j++)
				if (!seen[holder[j]]++)
					distinct++;
			assert_int_equal(stats(s).node_ids, distinct);
		}
	}
	check_accounting(s);
	cstore_destroy(s);
}

static void node_id_table_refuses_a_writer_past_its_limit(void **state)
{
	(void)state;
	struct cstore *s = mk_default();
	char k[32];
	for (unsigned i = 0; i <= CSTORE_NODE_IDS_MAX; i++) {
		keyname(k, sizeof(k), "w", i);
		struct cstore_put p = P(k, "v", 1);
		memcpy(p.version.node, &i, sizeof(i));
		int rc = cstore_put(s, &p, 0, NULL);
		if (i < CSTORE_NODE_IDS_MAX) {
			assert_int_equal(rc, 0);
			continue;
		}
		assert_int_equal(rc, ERR_FULL); /* the 65,536th distinct id */
		assert_int_equal(cstore_exists(s, k, strlen(k), 0), 0);
		p.version.node[0] = 0; /* a writer already held is fine */
		assert_int_equal(cstore_put(s, &p, 0, NULL), 0);
	}
	struct cstore_stats st = stats(s);
	assert_int_equal(st.node_ids, CSTORE_NODE_IDS_MAX);
	assert_int_equal(st.entries, CSTORE_NODE_IDS_MAX + 1);
	/* a new writer needs a slot even to delete */
	assert_int_equal(del(s, "w7", 2, 0), ERR_FULL);
	/* writer 7's only entry deleted by writer 0: 7's slot serves a new writer */
	struct cstore_version v0 = V(2, NODE_A);
	memset(v0.node, 0, 4); /* writer 0's id, as P() and the loop made it */
	assert_int_equal(cstore_delete(s, "w7", 2, &v0, part_of("w7"), 0, NULL, NULL), 0);
	struct cstore_put p = P("late", "v", 3);
	memset(p.version.node, 0xee, sizeof(p.version.node));
	assert_int_equal(cstore_put(s, &p, 0, NULL), 0);
	p = P("later", "v", 3);
	memset(p.version.node, 0xef, sizeof(p.version.node));
	assert_int_equal(cstore_put(s, &p, 0, NULL), ERR_FULL);
	assert_int_equal(stats(s).node_ids, CSTORE_NODE_IDS_MAX);
	check_accounting(s);
	cstore_destroy(s);
}

/* ---- the randomized model test ---- */

#define MK 512      /* keys */
#define MV 24       /* value bytes max */
#define M_DEFAULT_TTL 40

enum { M_ABSENT = 0, M_LIVE, M_TOMB };

struct mentry {
	int state;
	char value[MV + 1];
	size_t value_bytes;
	struct cstore_version v;
	uint64_t expire_ms, tomb_ms;
	uint16_t partition;
};

struct model {
	struct mentry e[MK];
	uint64_t now;
	uint64_t rng;
	uint64_t hlc;
};

static uint64_t mrand(struct model *m)
{
	m->rng ^= m->rng << 13;
	m->rng ^= m->rng >> 7;
	m->rng ^= m->rng << 17;
	return m->rng;
}

static uint64_t mr(struct model *m, uint64_t n)
{
	return mrand(m) % n;
}

static void mkey(unsigned i, char *k)
{
	snprintf(k, 16, "key-%u", i);
}

/* The model's view of key i now: an expired live entry is absent. */
static struct mentry *mget(struct model *m, unsigned i)
{
	struct mentry *e = &m->e[i];
	if (e->state == M_LIVE && e->expire_ms && e->expire_ms <= m->now)
		e->state = M_ABSENT;
	return e;
}

static bool mnewer(const struct cstore_version *v, const struct mentry *e)
{
	return e->state == M_ABSENT || cstore_version_cmp(v, &e->v) > 0;
}

static void mset_live(struct model *m, struct mentry *e, const char *val, size_t n, const struct cstore_version *v,
                      uint64_t expire, uint16_t part)
{
	if (expire && expire <= m->now) { /* a past expiry: absent (apply) */
		e->state = M_ABSENT;
		return;
	}
	e->state = M_LIVE;
	memcpy(e->value, val, n);
	e->value_bytes = n;
	e->v = *v;
	e->expire_ms = expire;
	e->partition = part;
}

static void mset_tomb(struct model *m, struct mentry *e, const struct cstore_version *v, uint16_t part)
{
	e->state = M_TOMB;
	e->v = *v;
	e->tomb_ms = m->now;
	e->partition = part;
	e->expire_ms = 0;
}

static void random_value(struct model *m, char *buf, size_t *n)
{
	switch (mr(m, 4)) {
	case 0:
		*n = (size_t)snprintf(buf, MV + 1, "%" PRId64, (int64_t)(mrand(m) % 2000) - 1000);
		break;
	case 1:
		*n = (size_t)snprintf(buf, MV + 1, "%" PRId64, INT64_MAX - (int64_t)mr(m, 3));
		break;
	default:
		*n = (size_t)mr(m, MV + 1);
		for (size_t i = 0; i < *n; i++)
			buf[i] = (char)('a' + mr(m, 26));
	}
}

static struct cstore_version mversion(struct model *m, bool any)
{
	/* local writes mostly move forward; replicated ones are anywhere near */
	uint64_t hlc = any ? m->hlc + 3 - mr(m, 12) : (mr(m, 20) ? ++m->hlc : m->hlc - mr(m, 3));
	struct cstore_version v = V(hlc, (unsigned char)mr(m, 3));
	return v;
}

static uint64_t mexpiry(struct model *m)
{
	switch (mr(m, 4)) {
	case 0:
		return 0;
	case 1:
		return m->now + mr(m, 60);
	default:
		return m->now + 1 + mr(m, 100);
	}
}

static bool mparse(const char *p, size_t n, int64_t *out)
{
	char buf[MV + 2];
	if (n == 0 || n > 20)
		return false;
	memcpy(buf, p, n);
	buf[n] = 0;
	if (buf[0] == '+' || buf[0] == ' ' || (buf[0] == '0' && n > 1) || (buf[0] == '-' && (n == 1 || buf[1] == '0')))
		return false;
	char *end;
	errno = 0;
	long long v = strtoll(buf, &end, 10);
	if (errno || *end || end == buf)
		return false;
	*out = v;
	return true;
}

static void model_check_key(struct cstore *s, struct model *m, unsigned i)
{
	char k[16];
	mkey(i, k);
	struct mentry *e = mget(m, i);
	struct cstore_item it;
	int rc = cstore_get(s, k, strlen(k), m->now, &it);
	if (e->state != M_LIVE) {
		assert_int_equal(rc, ERR_NOT_FOUND);
		return;
	}
	assert_int_equal(rc, 0);
	assert_int_equal(it.value_bytes, e->value_bytes);
	if (e->value_bytes)
		assert_memory_equal(it.value, e->value, e->value_bytes);
	assert_int_equal(cstore_version_cmp(&it.version, &e->v), 0);
	/* the model touches too (touch_on_read) */
	if (e->expire_ms)
		e->expire_ms = m->now + M_DEFAULT_TTL;
	assert_int_equal(it.expire_ms, e->expire_ms);
	assert_int_equal(it.partition, e->partition);
}

static void model_check_all(struct cstore *s, struct model *m)
{
	/* collect every expired entry, then counters must match exactly */
	while (cstore_tick(s, m->now, 1000) > 0)
		;
	uint64_t live = 0, tombs = 0, bytes = 0;
	for (unsigned i = 0; i < MK; i++) {
		struct mentry *e = mget(m, i);
		char k[16];
		mkey(i, k);
		if (e->state == M_LIVE) {
			live++;
			bytes += cstore_entry_bytes(strlen(k), e->value_bytes);
		} else if (e->state == M_TOMB) {
			tombs++;
			bytes += cstore_entry_bytes(strlen(k), 0);
		}
	}
	struct cstore_stats st = stats(s);
	assert_int_equal(st.entries, live);
	assert_int_equal(st.tombstones, tombs);
	assert_int_equal(st.entry_bytes, bytes);
	assert_int_equal(st.memory_bytes, C.live_bytes);
	/* the incremental digests equal those of a store rebuilt from the model */
	struct cstore_config c = cfg_base();
	c.partition_count = 7;
	c.hash_key[0] ^= 0xff;
	struct cstore *fresh = mk(&c);
	for (unsigned i = 0; i < MK; i++) {
		struct mentry *e = &m->e[i];
		if (e->state == M_ABSENT)
			continue;
		char k[16];
		mkey(i, k);
		struct cstore_item it = {.key = (const unsigned char *)k, .key_bytes = (uint32_t)strlen(k),
		                         .value = (const unsigned char *)e->value, .value_bytes = (uint32_t)e->value_bytes,
		                         .version = e->v, .expire_ms = e->expire_ms, .partition = e->partition,
		                         .tombstone = e->state == M_TOMB};
		assert_int_equal(cstore_apply(fresh, &it, m->now), 0);
	}
	for (uint16_t p = 0; p < 7; p++) {
		struct cstore_partition_stats a, b;
		cstore_partition_stats(s, p, &a);
		cstore_partition_stats(fresh, p, &b);
		assert_int_equal(a.entries, b.entries);
		assert_int_equal(a.tombstones, b.tombstones);
		assert_int_equal(a.bytes, b.bytes);
		assert_int_equal(a.digest, b.digest);
	}
	cstore_destroy(fresh);
	for (unsigned i = 0; i < MK; i++)
		model_check_key(s, m, i);
}

static void on_model_scan(void *ctx, const struct cstore_item *it)
{
	uint8_t *hits = ctx;
	char k[16];
	unsigned j;
	assert_true(it->key_bytes < sizeof(k));
	memcpy(k, it->key, it->key_bytes);
	k[it->key_bytes] = 0;
	assert_int_equal(sscanf(k, "key-%u", &j), 1);
	assert_true(j < MK);
	hits[j] = 1; /* a resize between calls may return a key twice: at least once is the promise */
}

static void model_step(struct cstore *s, struct model *m, unsigned active)
{
	unsigned i = (unsigned)mr(m, active);
	char k[16];
	mkey(i, k);
	size_t kn = strlen(k);
	uint16_t part = (uint16_t)(i % 7);
	struct mentry *e = mget(m, i);
	bool live = e->state == M_LIVE;
	char val[MV + 1];
	size_t vn;
	int rc;
	m->now += mr(m, 4);

	e = mget(m, i); /* the clock moved */
	live = e->state == M_LIVE;
	switch (mr(m, 14)) {
	case 0:
	case 1:
		model_check_key(s, m, i);
		break;
	case 2: {
		assert_int_equal(cstore_exists(s, k, kn, m->now), live);
		int64_t ttl;
		rc = cstore_ttl(s, k, kn, m->now, &ttl);
		if (!live) {
			assert_int_equal(rc, ERR_NOT_FOUND);
		} else {
			assert_int_equal(rc, 0);
			assert_int_equal(ttl, e->expire_ms ? (int64_t)(e->expire_ms - m->now) : -1);
		}
		break;
	}
	case 3:
	case 4:
	case 5: { /* put with random flags */
		random_value(m, val, &vn);
		struct cstore_put p;
		memset(&p, 0, sizeof(p));
		p.key = k;
		p.key_bytes = kn;
		p.value = val;
		p.value_bytes = vn;
		p.version = mversion(m, false);
		p.partition = part;
		uint64_t r = mr(m, 8);
		if (r == 0)
			p.flags |= CSTORE_PUT_NX;
		else if (r == 1)
			p.flags |= CSTORE_PUT_XX;
		r = mr(m, 6);
		if (r == 0)
			p.flags |= CSTORE_PUT_KEEPTTL;
		else if (r == 1)
			p.ttl_ms = 1 + mr(m, 80);
		else if (r == 2) {
			uint64_t t = m->now + mr(m, 80);
			p.expire_at_ms = t > 5 ? t - 5 : 1; /* sometimes in the past */
		}
		else if (r == 3)
			p.flags |= CSTORE_PUT_PERSIST;
		if (mr(m, 3) == 0)
			p.flags |= CSTORE_PUT_GET;
		struct cstore_version cas;
		if (mr(m, 10) == 0) {
			cas = mr(m, 2) && live ? e->v : mversion(m, true);
			p.if_version = &cas;
		}
		struct cstore_item old;
		rc = cstore_put(s, &p, m->now, &old);
		if (p.flags & CSTORE_PUT_GET) {
			assert_int_equal(old.found, live);
			if (live) {
				assert_int_equal(old.value_bytes, e->value_bytes);
				if (e->value_bytes)
					assert_memory_equal(old.value, e->value, e->value_bytes);
			}
		}
		int want = 0;
		if (((p.flags & CSTORE_PUT_NX) && live) || ((p.flags & CSTORE_PUT_XX) && !live))
			want = CSTORE_NOT_MET;
		else if (p.if_version && (!live || cstore_version_cmp(&e->v, p.if_version) != 0))
			want = CSTORE_NOT_MET;
		else if (!mnewer(&p.version, e))
			want = CSTORE_STALE;
		assert_int_equal(rc, want);
		if (want)
			break;
		uint64_t exp;
		if (p.ttl_ms)
			exp = m->now + p.ttl_ms;
		else if (p.expire_at_ms)
			exp = p.expire_at_ms;
		else if ((p.flags & CSTORE_PUT_KEEPTTL) && live)
			exp = e->expire_ms;
		else if (p.flags & CSTORE_PUT_PERSIST)
			exp = 0;
		else
			exp = m->now + M_DEFAULT_TTL;
		if (exp && exp <= m->now)
			mset_tomb(m, e, &p.version, part);
		else
			mset_live(m, e, val, vn, &p.version, exp, part);
		break;
	}
	case 6: { /* delete */
		struct cstore_version v = mversion(m, false);
		bool existed;
		struct cstore_item old;
		rc = cstore_delete(s, k, kn, &v, part, m->now, &existed, mr(m, 2) ? &old : NULL);
		if (!mnewer(&v, e)) {
			assert_int_equal(rc, CSTORE_STALE);
			break;
		}
		assert_int_equal(rc, 0);
		assert_int_equal(existed, live);
		mset_tomb(m, e, &v, part);
		break;
	}
	case 7: { /* expire / persist */
		struct cstore_version v = mversion(m, false);
		bool persist = mr(m, 3) == 0;
		uint64_t at = m->now + mr(m, 60);
		at = at > 10 ? at - 10 : 1;
		rc = persist ? cstore_persist(s, k, kn, &v, m->now) : cstore_expire(s, k, kn, at, &v, m->now);
		if (!live || (persist && !e->expire_ms)) {
			assert_int_equal(rc, CSTORE_NOT_MET);
			break;
		}
		if (!mnewer(&v, e)) {
			assert_int_equal(rc, CSTORE_STALE);
			break;
		}
		assert_int_equal(rc, 0);
		if (persist) {
			e->expire_ms = 0;
			e->v = v;
		} else if (at <= m->now) {
			mset_tomb(m, e, &v, e->partition);
		} else {
			e->expire_ms = at;
			e->v = v;
		}
		break;
	}
	case 8: { /* incr */
		struct cstore_version v = mversion(m, false);
		int64_t delta = mr(m, 4) == 0 ? INT64_MAX - (int64_t)mr(m, 3) : (int64_t)mr(m, 200) - 100;
		int64_t cur = 0, sum, r;
		rc = cstore_incr(s, k, kn, delta, &v, part, m->now, &r);
		if (live && !mparse(e->value, e->value_bytes, &cur)) {
			assert_int_equal(rc, ERR_INVALID);
			break;
		}
		if (__builtin_add_overflow(cur, delta, &sum)) {
			assert_int_equal(rc, ERR_TOO_LARGE);
			break;
		}
		if (!mnewer(&v, e)) {
			assert_int_equal(rc, CSTORE_STALE);
			break;
		}
		assert_int_equal(rc, 0);
		assert_int_equal(r, sum);
		vn = (size_t)snprintf(val, sizeof(val), "%" PRId64, sum);
		mset_live(m, e, val, vn, &v, live ? e->expire_ms : m->now + M_DEFAULT_TTL, part);
		break;
	}
	case 9:
	case 10: { /* replicated write */
		struct cstore_item it;
		memset(&it, 0, sizeof(it));
		random_value(m, val, &vn);
		it.key = (const unsigned char *)k;
		it.key_bytes = (uint32_t)kn;
		it.tombstone = mr(m, 4) == 0;
		it.value = it.tombstone ? NULL : (const unsigned char *)val;
		it.value_bytes = it.tombstone ? 0 : (uint32_t)vn;
		it.version = mversion(m, true);
		it.expire_ms = mexpiry(m);
		it.partition = part;
		rc = cstore_apply(s, &it, m->now);
		if (!mnewer(&it.version, e)) {
			assert_int_equal(rc, CSTORE_STALE);
			break;
		}
		assert_int_equal(rc, 0);
		if (it.tombstone)
			mset_tomb(m, e, &it.version, part);
		else
			mset_live(m, e, val, vn, &it.version, it.expire_ms, part);
		break;
	}
	case 11:
		cstore_tick(s, m->now, (uint32_t)mr(m, 8)); /* expiry collection: no visible change */
		break;
	case 12: { /* tombstone GC, all of them older than the horizon */
		uint64_t horizon = m->now > 50 ? m->now - mr(m, 50) : 0;
		uint32_t want = 0;
		for (unsigned j = 0; j < MK; j++) {
			if (m->e[j].state == M_TOMB && m->e[j].tomb_ms < horizon) {
				m->e[j].state = M_ABSENT;
				want++;
			}
		}
		assert_int_equal(cstore_gc_tombstones(s, horizon, UINT32_MAX), want);
		break;
	}
	default: { /* a scan sees every live key and nothing else */
		static uint8_t hits[MK];
		memset(hits, 0, sizeof(hits));
		uint64_t cursor = 0;
		do
			assert_int_equal(cstore_scan(s, cursor, "key-*", 5, 16, m->now, on_model_scan, hits, &cursor), 0);
		while (cursor);
		for (unsigned j = 0; j < MK; j++)
			assert_int_equal(hits[j], mget(m, j)->state == M_LIVE ? 1 : 0);
		break;
	}
	}
	if (mr(m, 64) == 0)
		assert_int_equal(stats(s).memory_bytes, C.live_bytes);
}

static void randomized_ops_match_a_reference_model(void **state)
{
	(void)state;
	uint64_t seed = 20240601;
	const char *env = getenv("CSTORE_MODEL_SEED");
	if (env)
		seed = strtoull(env, NULL, 10);
	struct cstore_config c = cfg_base();
	c.partition_count = 7;
	c.default_ttl_ms = M_DEFAULT_TTL;
	c.touch_on_read = true;
	struct cstore *s = mk(&c);
	static struct model m;
	memset(&m, 0, sizeof(m));
	m.rng = seed * 2654435761u + 1;
	m.hlc = 1000;
	m.now = 1;
	/* the active key range changes, so the table grows and shrinks: ten
	 * phases of a tenth of the operations each, whatever their count */
	static const unsigned active[] = {8, 64, 512, 64, 8, 512, 32, 512, 16, 256};
	const unsigned op_count = test_scaled(100000, 10000);
	for (unsigned n = 0; n < op_count; n++) {
		model_step(s, &m, active[n / (op_count / 10) % 10]);
		if (n % 1000 == 999) {
			model_check_all(s, &m);
			if (n % 10000 == 9999 && getenv("CSTORE_MODEL_VERBOSE"))
				print_message("model seed %" PRIu64 ": %u ops, %" PRIu64 " buckets\n", seed, n + 1,
				              stats(s).buckets);
		}
	}
	struct cstore_stats st = stats(s);
	if (st.hits == 0 || st.expirations == 0 || st.tombstones + st.entries == 0)
		fail_msg("model seed %" PRIu64 ": the run did not exercise the store", seed);
	cstore_destroy(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(put_then_get_returns_value_version_and_expiry, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_input_is_refused_without_change, setup, teardown),
		cmocka_unit_test_setup_teardown(table_grows_and_shrinks_incrementally_while_every_key_is_found, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(expired_entry_misses_on_read_and_is_freed, setup, teardown),
		cmocka_unit_test_setup_teardown(tick_expires_due_entries_within_its_budget, setup, teardown),
		cmocka_unit_test_setup_teardown(default_ttl_applies_and_touch_on_read_refreshes_it, setup, teardown),
		cmocka_unit_test_setup_teardown(entry_limit_evicts_least_recently_used, setup, teardown),
		cmocka_unit_test_setup_teardown(memory_limit_holds_after_every_write, setup, teardown),
		cmocka_unit_test_setup_teardown(accounting_is_exact_and_returns_to_baseline, setup, teardown),
		cmocka_unit_test_setup_teardown(failed_allocation_leaves_the_store_unchanged, setup, teardown),
		cmocka_unit_test_setup_teardown(expiry_heap_grows_and_shrinks_by_segments, setup, teardown),
		cmocka_unit_test_setup_teardown(default_allocator_and_failed_create, setup, teardown),
		cmocka_unit_test_setup_teardown(apply_keeps_the_newest_version, setup, teardown),
		cmocka_unit_test_setup_teardown(expired_entry_becomes_a_tombstone_when_configured, setup, teardown),
		cmocka_unit_test_setup_teardown(put_honours_nx_xx_keepttl_and_get, setup, teardown),
		cmocka_unit_test_setup_teardown(incr_accepts_redis_integers_and_refuses_overflow, setup, teardown),
		cmocka_unit_test_setup_teardown(compare_and_set_needs_the_current_version, setup, teardown),
		cmocka_unit_test_setup_teardown(expire_persist_and_ttl, setup, teardown),
		cmocka_unit_test_setup_teardown(tombstones_are_collected_after_the_horizon_oldest_first, setup, teardown),
		cmocka_unit_test_setup_teardown(scan_across_resizes_returns_every_stable_key, setup, teardown),
		cmocka_unit_test_setup_teardown(scan_filters_by_pattern_and_refuses_garbage_cursors, setup, teardown),
		cmocka_unit_test_setup_teardown(glob_matches_like_redis, setup, teardown),
		cmocka_unit_test_setup_teardown(glob_pathological_patterns_stay_fast_and_shallow, setup, teardown),
		cmocka_unit_test_setup_teardown(partition_digest_ignores_order_and_sees_one_version, setup, teardown),
		cmocka_unit_test_setup_teardown(partition_streams_to_another_store_and_drops, setup, teardown),
		cmocka_unit_test_setup_teardown(entries_older_than_a_flush_are_dropped_and_newer_ones_kept,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(flush_and_many_node_ids_give_memory_back, setup, teardown),
		cmocka_unit_test_setup_teardown(node_ids_are_interned_and_their_slots_reused, setup, teardown),
		cmocka_unit_test_setup_teardown(node_id_table_refuses_a_writer_past_its_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(randomized_ops_match_a_reference_model, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
