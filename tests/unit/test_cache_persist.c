/*
 * test_cache_persist.c - the cache's snapshots (node/svc/cache_persist.c):
 * the row rules (pure), and whole snapshots written to and loaded from real
 * sqlite files in a temporary directory, into real stores (core/cstore.c):
 * every kind of entry round trips; a periodic snapshot is written a bounded
 * part per step while the store changes, and switched in only when whole;
 * a snapshot cut short, a write that fails (a file size limit standing in
 * for a full disk) and damaged files each leave the previous state or an
 * empty cache, never a crash, and a bad file is kept aside; a file that is
 * not ours (or a path among the node's own files, or one in use) is never
 * touched and refuses the start; a crafted schema or row is refused, not
 * obeyed; FLUSH marks round trip; rows ahead of the clock are left out;
 * the stop snapshot gives up at its deadline; loading streams (sqlite's
 * memory stays small whatever the file holds).
 *
 * Time is a number the tests choose: wall ms near T0, monotonic ms from 0.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "svc/cache_internal.h"

#define T0 1700000000000ull /* wall ms */
#define ENTRY_COLUMNS "cache, key, value, hlc, node, expire_ms, tombstone, tombstone_ms"
#define NODE_A 0xa1
#define NODE_B 0xb2
#define PARTITIONS 271

struct fixture {
	char dir[64];
	char path[128];  /* DIR/cache.db */
	char tmp[136];   /* DIR/cache.db.tmp */
	struct config_cache cfg[2];
	struct cache caches[2];   /* "default", "sessions" */
	struct cache loaded[2];   /* stores a load fills */
	uint64_t hlc;             /* the last version handed out */
};

static struct cstore *store_new(void)
{
	struct cstore_config sc;
	memset(&sc, 0, sizeof(sc));
	sc.partition_count = PARTITIONS;
	sc.expire_to_tombstone = true;
	struct cstore *st = NULL;
	assert_int_equal(cstore_create(&sc, &st), 0);
	return st;
}

static void caches_new(struct fixture *f, struct cache *c)
{
	for (int i = 0; i < 2; i++) {
		c[i].cfg = &f->cfg[i];
		c[i].st = store_new();
	}
}

static void caches_free(struct cache *c)
{
	for (int i = 0; i < 2; i++) {
		cstore_destroy(c[i].st);
		c[i].st = NULL;
	}
}

/* Removes every file in the directory, then the directory. */
static void dir_clean(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	char p[512];
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		struct stat sb;
		if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) {
			chmod(p, 0700);
			dir_clean(p);
		} else {
			unlink(p);
		}
	}
	closedir(d);
	rmdir(dir);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	strcpy(f->dir, "/tmp/chorus-persist-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/cache.db", f->dir);
	snprintf(f->tmp, sizeof(f->tmp), "%s/cache.db.tmp", f->dir);
	snprintf(f->cfg[0].name, sizeof(f->cfg[0].name), "default");
	snprintf(f->cfg[1].name, sizeof(f->cfg[1].name), "sessions");
	caches_new(f, f->caches);
	caches_new(f, f->loaded);
	f->hlc = hlc_pack(T0 - 60000, 0);
	log_setup(getenv("PERSIST_LOG") ? LOG_DEBUG : LOG_ERROR + 1, 0); /* quiet: the tests look at results, not lines */
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	caches_free(f->caches);
	caches_free(f->loaded);
	dir_clean(f->dir);
	free(f);
	return 0;
}

static struct cstore_version version(struct fixture *f, int node)
{
	struct cstore_version v;
	v.hlc = ++f->hlc;
	memset(v.node, node, sizeof(v.node));
	return v;
}

static uint16_t part(const void *key, size_t len)
{
	return cplace_partition(key, len, PARTITIONS);
}

static void put(struct fixture *f, struct cstore *st, const char *key, const char *value,
                uint64_t ttl_ms, uint64_t now)
{
	struct cstore_put p;
	memset(&p, 0, sizeof(p));
	p.key = key;
	p.key_bytes = strlen(key);
	p.value = value;
	p.value_bytes = strlen(value);
	p.version = version(f, NODE_A);
	p.partition = part(key, strlen(key));
	p.ttl_ms = ttl_ms;
	assert_int_equal(cstore_put(st, &p, now, NULL), 0);
}

static void del(struct fixture *f, struct cstore *st, const char *key, uint64_t now)
{
	struct cstore_version v = version(f, NODE_B);
	assert_int_equal(cstore_delete(st, key, strlen(key), &v, part(key, strlen(key)), now, NULL,
	                               NULL),
	                 0);
}

/* The options of a node whose data dir is the test's directory. */
static struct cache_persist_options options(struct fixture *f, uint64_t interval_ms)
{
	struct cache_persist_options o = {
		.path = f->path,
		.data_dir = f->dir,
		.interval_ms = interval_ms,
		.max_drift_ms = HLC_MAX_DRIFT_MS_DEFAULT,
	};
	return o;
}

static struct cache_persist *persist_with(const struct cache_persist_options *o)
{
	struct cache_persist *p = NULL;
	char err[512];
	int rc = cache_persist_create(o, 0, &p, err, sizeof(err));
	if (rc != 0)
		fail_msg("cache_persist_create: %s", err);
	return p;
}

static struct cache_persist *persist_new(struct fixture *f, uint64_t interval_ms)
{
	struct cache_persist_options o = options(f, interval_ms);
	return persist_with(&o);
}

/* Loads f->path with p into fresh stores (f->loaded) at wall time now. */
static int load_with(struct fixture *f, struct cache_persist *p, uint32_t n_caches, uint64_t now,
                     struct cache_persist_load_stats *st)
{
	caches_free(f->loaded);
	caches_new(f, f->loaded);
	f->loaded[0].flush_hlc = f->loaded[1].flush_hlc = 0;
	char err[512];
	err[0] = '\0';
	int rc = cache_persist_load(p, f->loaded, n_caches, PARTITIONS, now, st, err, sizeof(err));
	if (rc != 0 && rc != ERR_STORAGE)
		assert_true(err[0] != '\0'); /* a refusal to start says why */
	return rc;
}

static int load(struct fixture *f, uint32_t n_caches, uint64_t now,
                struct cache_persist_load_stats *st)
{
	struct cache_persist *p = persist_new(f, 0);
	int rc = load_with(f, p, n_caches, now, st);
	cache_persist_destroy(p);
	return rc;
}

static uint64_t held(struct cstore *st)
{
	struct cstore_stats s;
	cstore_stats(st, &s);
	return s.entries + s.tombstones;
}

static int exists(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0;
}

/* Rows of a snapshot file, read with sqlite itself (-1: unreadable). */
static int64_t file_rows(const char *path)
{
	sqlite3 *db = NULL;
	int64_t n = -1;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
		sqlite3_stmt *s = NULL;
		if (sqlite3_prepare_v2(db, "SELECT count(*) FROM entries", -1, &s, NULL) == SQLITE_OK &&
		    sqlite3_step(s) == SQLITE_ROW)
			n = sqlite3_column_int64(s, 0);
		sqlite3_finalize(s);
	}
	sqlite3_close(db);
	return n;
}

static void sql(const char *path, const char *text)
{
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	char *msg = NULL;
	if (sqlite3_exec(db, text, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", text, msg);
	sqlite3_close(db);
}

static void copy_file(const char *from, const char *to)
{
	FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
	assert_non_null(in);
	assert_non_null(out);
	char buf[8192];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		assert_int_equal(fwrite(buf, 1, n, out), n);
	fclose(in);
	assert_int_equal(fclose(out), 0);
}

/* ---- the row rules ---- */

static struct cache_persist_row row_live(void)
{
	static const uint8_t node[CSTORE_NODE_ID_BYTES] = {1};
	struct cache_persist_row r = {
		.types_ok = 1,
		.cache = 0,
		.key = "k",
		.key_bytes = 1,
		.value = "v",
		.value_bytes = 1,
		.has_value = 1,
		.hlc = (int64_t)hlc_pack(T0 - 1000, 0),
		.node = node,
		.node_bytes = sizeof(node),
	};
	return r;
}

#define DRIFT HLC_MAX_DRIFT_MS_DEFAULT

static void expect_bad(const struct cache_persist_row *r, const char *reason)
{
	char why[160];
	assert_int_equal(cache_persist_row_check(r, T0, DRIFT, why, sizeof(why)), PERSIST_ROW_BAD);
	assert_string_equal(why, reason);
}

static void row_rules_load_expire_forget_or_refuse(void **state)
{
	(void)state;
	char why[160];
	struct cache_persist_row r = row_live();
	assert_int_equal(cache_persist_row_check(&r, T0, DRIFT, why, sizeof(why)), PERSIST_ROW_LOAD);
	assert_string_equal(why, "");
	r.has_value = 1; /* an empty value is a value */
	r.value_bytes = 0;
	assert_int_equal(cache_persist_row_check(&r, T0, DRIFT, why, sizeof(why)), PERSIST_ROW_LOAD);
	/* expiry: still to come, just come (expired), come a horizon ago */
	r.expire_ms = T0 + 1;
	assert_int_equal(cache_persist_row_check(&r, T0, DRIFT, why, sizeof(why)), PERSIST_ROW_LOAD);
	r.expire_ms = T0;
	assert_int_equal(cache_persist_row_check(&r, T0, DRIFT, why, sizeof(why)), PERSIST_ROW_EXPIRED);
	r.expire_ms = T0 - TOMBSTONE_HORIZON_MS + 1;
	assert_int_equal(cache_persist_row_check(&r, T0, DRIFT, why, sizeof(why)), PERSIST_ROW_EXPIRED);
	r.expire_ms = T0 - TOMBSTONE_HORIZON_MS;
	assert_int_equal(cache_persist_row_check(&r, T0, DRIFT, why, sizeof(why)), PERSIST_ROW_GONE);
	/* a tombstone: kept within the horizon */
	r = row_live();
	r.has_value = 0;
	r.value = NULL;
	r.value_bytes = 0;
	r.tombstone = 1;
	r.tombstone_ms = T0 - TOMBSTONE_HORIZON_MS + 1;
	assert_int_equal(cache_persist_row_check(&r, T0, DRIFT, why, sizeof(why)), PERSIST_ROW_LOAD);
	r.tombstone_ms = T0 - TOMBSTONE_HORIZON_MS;
	assert_int_equal(cache_persist_row_check(&r, T0, DRIFT, why, sizeof(why)), PERSIST_ROW_GONE);
	r.tombstone_ms = T0 + 5000; /* the wall clock went back: still a tombstone */
	assert_int_equal(cache_persist_row_check(&r, T0, DRIFT, why, sizeof(why)), PERSIST_ROW_LOAD);
	assert_string_equal(cache_persist_verdict_name(PERSIST_ROW_GONE), "gone");

	/* every broken rule refuses the row (and the file) with its reason */
	r = row_live();
	r.types_ok = 0;
	expect_bad(&r, "a column holds the wrong type");
	r = row_live();
	r.cache = CONFIG_CACHES_MAX;
	expect_bad(&r, "cache id 16 is out of range");
	r.cache = -1;
	expect_bad(&r, "cache id -1 is out of range");
	r = row_live();
	r.key_bytes = 0;
	expect_bad(&r, "an empty key");
	r = row_live();
	r.node_bytes = 15;
	expect_bad(&r, "a version node id of 15 bytes");
	r = row_live();
	r.hlc = 0;
	expect_bad(&r, "a version hlc of 0");
	r.hlc = -5;
	expect_bad(&r, "a version hlc of -5");
	/* ahead of the wall clock: within the drift a replica accepts, loaded;
	 * further, left out (its clock would be refused); beyond a day, damage */
	r.hlc = (int64_t)hlc_pack(T0 + DRIFT, HLC_LOGICAL_MAX);
	assert_int_equal(cache_persist_row_check(&r, T0, DRIFT, why, sizeof(why)), PERSIST_ROW_LOAD);
	r.hlc = (int64_t)hlc_pack(T0 + DRIFT + 1, 0);
	assert_int_equal(cache_persist_row_check(&r, T0, DRIFT, why, sizeof(why)), PERSIST_ROW_AHEAD);
	assert_string_equal(cache_persist_verdict_name(PERSIST_ROW_AHEAD), "ahead");
	r.hlc = (int64_t)hlc_pack(T0 + 3600 * 1000, 0);
	assert_int_equal(cache_persist_row_check(&r, T0, DRIFT, why, sizeof(why)), PERSIST_ROW_AHEAD);
	r.hlc = (int64_t)hlc_pack(T0 + 24ull * 3600 * 1000, 0);
	assert_int_equal(cache_persist_row_check(&r, T0, DRIFT, why, sizeof(why)), PERSIST_ROW_AHEAD);
	r.expire_ms = T0 - 1; /* whatever else it is */
	assert_int_equal(cache_persist_row_check(&r, T0, DRIFT, why, sizeof(why)), PERSIST_ROW_AHEAD);
	r.expire_ms = 0;
	r.hlc = (int64_t)hlc_pack(T0 + 24ull * 3600 * 1000 + 1, 0); /* beyond: damage */
	expect_bad(&r, "a version 86400001 ms ahead of the wall clock");
	r = row_live();
	r.tombstone = 2;
	expect_bad(&r, "a tombstone flag of 2");
	r = row_live();
	r.expire_ms = -1;
	expect_bad(&r, "a negative time");
	r = row_live();
	r.tombstone = 1;
	r.tombstone_ms = T0;
	expect_bad(&r, "a tombstone with a value");
	r.has_value = 0;
	r.expire_ms = T0 + 1;
	expect_bad(&r, "a tombstone with an expiry");
	r.expire_ms = 0;
	r.tombstone_ms = 0;
	expect_bad(&r, "a tombstone without its time");
	r = row_live();
	r.has_value = 0;
	expect_bad(&r, "a live entry without a value");
	r = row_live();
	r.tombstone_ms = T0;
	expect_bad(&r, "a live entry with a tombstone time");
}

/* ---- whole snapshots ---- */

static void expect_held_value(struct cstore *st, const void *key, size_t key_len, const void *value,
                         size_t value_len, uint64_t now)
{
	struct cstore_item it;
	assert_int_equal(cstore_peek(st, key, key_len, now, &it), 0);
	assert_false(it.tombstone);
	assert_int_equal(it.value_bytes, value_len);
	assert_memory_equal(it.value, value, value_len);
}

static void expect_same_entry(struct cstore *a, struct cstore *b, const char *key, uint64_t now)
{
	struct cstore_item x, y;
	assert_int_equal(cstore_peek(a, key, strlen(key), now, &x), 0);
	uint8_t value[64];
	size_t value_bytes = x.value_bytes;
	assert_true(value_bytes <= sizeof(value));
	if (value_bytes)
		memcpy(value, x.value, value_bytes);
	struct cstore_version v = x.version;
	uint64_t expire_ms = x.expire_ms;
	bool tomb = x.tombstone;
	assert_int_equal(cstore_peek(b, key, strlen(key), now, &y), 0);
	assert_int_equal(y.tombstone, tomb);
	assert_int_equal(y.value_bytes, value_bytes);
	assert_memory_equal(y.value ? y.value : (const unsigned char *)"", value, value_bytes);
	assert_int_equal(cstore_version_cmp(&y.version, &v), 0);
	assert_int_equal(y.expire_ms, expire_ms);
	assert_int_equal(y.partition, part(key, strlen(key)));
}

static void every_kind_of_entry_round_trips(void **state)
{
	struct fixture *f = *state;
	struct cstore *d = f->caches[0].st, *sess = f->caches[1].st;
	put(f, d, "plain", "value one", 0, T0);
	put(f, d, "empty", "", 0, T0);
	put(f, d, "ttl", "for an hour", 3600 * 1000, T0);
	put(f, d, "brief", "1.5 s", 1500, T0);            /* expires before the load */
	put(f, d, "was-gone", "x", 500, T0 - 1000);       /* expired before the write */
	/* (tombstones in the order of their times, as the store keeps them) */
	del(f, d, "never-there", T0 - TOMBSTONE_HORIZON_MS + 1000); /* old by the load */
	put(f, d, "deleted", "x", 0, T0);
	del(f, d, "deleted", T0);
	struct cstore_put bin;
	memset(&bin, 0, sizeof(bin));
	static const uint8_t bkey[] = {0, 0xff, 'k', 0}, bval[] = {0xde, 0xad, 0, 0xbe, 0xef};
	bin.key = bkey;
	bin.key_bytes = sizeof(bkey);
	bin.value = bval;
	bin.value_bytes = sizeof(bval);
	bin.version = version(f, NODE_B);
	bin.partition = part(bkey, sizeof(bkey));
	assert_int_equal(cstore_put(d, &bin, T0, NULL), 0);
	put(f, sess, "plain", "the other cache", 60000, T0);
	uint64_t newest = f->hlc;

	struct cache_persist *p = persist_new(f, 0);
	assert_int_equal(cache_persist_write_all(p, f->caches, 2, T0), 0);
	struct cache_persist_stats ps;
	cache_persist_stats(p, &ps);
	assert_int_equal(ps.written, 1);
	assert_int_equal(ps.rows, 8); /* every entry but the one expired before */
	cache_persist_destroy(p);
	assert_false(exists(f->tmp));
	assert_int_equal(file_rows(f->path), 8);
	struct stat sb;
	assert_int_equal(stat(f->path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600); /* the cache's data: the node's user only */

	uint64_t now = T0 + 2000;
	struct cache_persist_load_stats st;
	assert_int_equal(load(f, 2, now, &st), 0);
	assert_int_equal(st.rows, 8);
	assert_int_equal(st.loaded, 5);     /* plain, empty, ttl, binary, sessions' plain */
	assert_int_equal(st.tombstones, 1); /* deleted */
	assert_int_equal(st.expired, 1);    /* brief: a tombstone now */
	assert_int_equal(st.gone, 1);       /* never-there: past the horizon */
	assert_int_equal(st.stale + st.unknown_cache + st.refused + (uint64_t)st.bad, 0);
	assert_int_equal(st.hlc_max, newest);
	assert_int_equal(st.written_wall_ms, T0);
	struct cstore *ld = f->loaded[0].st;
	expect_same_entry(d, ld, "plain", now);
	expect_same_entry(d, ld, "empty", now);
	expect_same_entry(d, ld, "ttl", now); /* the same absolute expiry: the TTL left is right */
	expect_same_entry(d, ld, "deleted", now);
	expect_same_entry(f->caches[1].st, f->loaded[1].st, "plain", now);
	expect_held_value(ld, bkey, sizeof(bkey), bval, sizeof(bval), now);
	int64_t ttl = 0;
	assert_int_equal(cstore_ttl(ld, "ttl", 3, now, &ttl), 0);
	assert_int_equal(ttl, 3600 * 1000 - 2000);
	struct cstore_item it;
	assert_int_equal(cstore_get(ld, "brief", 5, now, &it), ERR_NOT_FOUND);
	assert_int_equal(cstore_peek(ld, "brief", 5, now, &it), 0); /* its version, as a tombstone */
	assert_true(it.tombstone);
	assert_int_equal(cstore_get(ld, "deleted", 7, now, &it), ERR_NOT_FOUND);
	assert_int_equal(cstore_peek(ld, "never-there", 11, now, &it), ERR_NOT_FOUND);
	assert_int_equal(cstore_peek(ld, "was-gone", 8, now, &it), ERR_NOT_FOUND);
	assert_int_equal(held(ld), 6);
	assert_int_equal(held(f->loaded[1].st), 1);
	/* the partition digests agree with the original's, so anti-entropy
	 * sees nothing to send for the partitions nothing changed in */
	struct cstore_partition_stats a, b;
	uint16_t pp = part("plain", 5);
	cstore_partition_stats(f->caches[1].st, pp, &a);
	cstore_partition_stats(f->loaded[1].st, pp, &b);
	assert_int_equal(a.digest, b.digest);
}

/* Rows of a cache this node does not have are left out; an older duplicate
 * of a row (an entry met twice while the store was walked) loses. */
static void unknown_caches_and_older_duplicates(void **state)
{
	struct fixture *f = *state;
	put(f, f->caches[0].st, "a", "old", 0, T0);
	put(f, f->caches[0].st, "a", "new", 0, T0);
	put(f, f->caches[1].st, "s1", "x", 0, T0);
	put(f, f->caches[1].st, "s2", "y", 0, T0);
	struct cache_persist *p = persist_new(f, 0);
	assert_int_equal(cache_persist_write_all(p, f->caches, 2, T0), 0);
	cache_persist_destroy(p);
	/* a duplicate of "a" with an older version, after the newer one */
	sql(f->path, "INSERT INTO entries SELECT cache, key, x'6f6c64', hlc - 1, node, expire_ms, "
	             "tombstone, tombstone_ms FROM entries WHERE key = x'61';"
	             "UPDATE meta SET value = value + 1 WHERE key = 'rows';");
	struct cache_persist_load_stats st;
	assert_int_equal(load(f, 1, T0, &st), 0); /* only "default" configured */
	assert_int_equal(st.rows, 4);
	assert_int_equal(st.loaded, 1);
	assert_int_equal(st.stale, 1);
	assert_int_equal(st.unknown_cache, 2);
	expect_held_value(f->loaded[0].st, "a", 1, "new", 3, T0);
}

/* A periodic snapshot: nothing before its time; then each step writes a
 * bounded part; the file in place is the previous snapshot until the new
 * one is whole; every entry present for the whole walk is in it, entries
 * changed meanwhile with a version at least as new as at the start. */
static void periodic_snapshot_is_written_in_bounded_steps(void **state)
{
	struct fixture *f = *state;
	struct cstore *d = f->caches[0].st;
	char key[32], value[32];
	const int n = 20000;
	for (int i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "key-%05d", i);
		snprintf(value, sizeof(value), "v1-%05d", i);
		put(f, d, key, value, 0, T0);
	}
	struct cache_persist *p = persist_new(f, 1000);
	assert_int_equal(cache_persist_write_all(p, f->caches, 2, T0), 0); /* the previous one */
	struct stat before;
	assert_int_equal(stat(f->path, &before), 0);
	assert_int_equal(cache_persist_deadline(p), 1000);
	struct now now = {.mono_ms = 999, .wall_ms = T0};
	cache_persist_step(p, f->caches, 2, &now);
	struct cache_persist_stats ps;
	cache_persist_stats(p, &ps);
	assert_false(ps.writing);
	assert_false(exists(f->tmp));

	int steps = 0;
	for (now.mono_ms = 1000;; now.mono_ms++, now.wall_ms++) {
		cache_persist_step(p, f->caches, 2, &now);
		steps++;
		cache_persist_stats(p, &ps);
		if (!ps.writing)
			break;
		assert_int_equal(cache_persist_deadline(p), 0); /* go on at once */
		assert_true(exists(f->tmp));
		/* the previous snapshot is untouched until the switch */
		struct stat mid;
		assert_int_equal(stat(f->path, &mid), 0);
		assert_int_equal(mid.st_ino, before.st_ino);
		/* the store changes under the walk: new values, new keys, deletes */
		int i = (steps * 997) % n;
		snprintf(key, sizeof(key), "key-%05d", i);
		snprintf(value, sizeof(value), "v2-%05d", i);
		put(f, d, key, value, 0, now.wall_ms);
		snprintf(key, sizeof(key), "new-%05d", steps);
		put(f, d, key, "n", 0, now.wall_ms);
		if (steps % 3 == 0) {
			snprintf(key, sizeof(key), "key-%05d", (i + 1) % n);
			del(f, d, key, now.wall_ms);
		}
		assert_true(steps < 1000);
	}
	assert_int_equal(ps.written, 2);
	assert_int_equal(ps.failed, 0);
	/* bounded: a step passes PERSIST_TICK_ROWS by one scan call at most */
	assert_true(ps.tick_rows_max <= PERSIST_TICK_ROWS + 8 * PERSIST_SCAN_BUCKETS);
	assert_true(steps >= n / (PERSIST_TICK_ROWS + 8 * PERSIST_SCAN_BUCKETS));
	assert_int_equal(cache_persist_deadline(p), now.mono_ms + 1000);
	struct stat after;
	assert_int_equal(stat(f->path, &after), 0);
	assert_true(after.st_ino != before.st_ino);
	assert_false(exists(f->tmp));
	cache_persist_destroy(p);

	struct cache_persist_load_stats st;
	assert_int_equal(load(f, 2, now.wall_ms, &st), 0);
	assert_false(st.bad);
	struct cstore *ld = f->loaded[0].st;
	for (int i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "key-%05d", i);
		struct cstore_item now_held, got;
		assert_int_equal(cstore_peek(d, key, strlen(key), now.wall_ms, &now_held), 0);
		struct cstore_version v = now_held.version;
		if (v.hlc <= hlc_pack(T0 - 60000, 0) + (uint64_t)n) {
			/* never changed during the walk: exactly as held */
			expect_same_entry(d, ld, key, now.wall_ms);
			continue;
		}
		/* changed meanwhile: at least its version from before the walk */
		assert_int_equal(cstore_peek(ld, key, strlen(key), now.wall_ms, &got), 0);
		assert_true(got.version.hlc > hlc_pack(T0 - 60000, 0));
		assert_true(cstore_version_cmp(&got.version, &v) <= 0);
	}
}

/* A node that stops while a periodic snapshot is being written (a crash,
 * kill -9) leaves PATH.tmp half written beside the previous snapshot: the
 * next start removes it and loads the previous one. */
static void a_snapshot_cut_short_leaves_the_previous_one(void **state)
{
	struct fixture *f = *state;
	struct cstore *d = f->caches[0].st;
	put(f, d, "before", "1", 0, T0);
	struct cache_persist *p = persist_new(f, 100);
	assert_int_equal(cache_persist_write_all(p, f->caches, 2, T0), 0);
	char key[32];
	for (int i = 0; i < 10000; i++) {
		snprintf(key, sizeof(key), "after-%05d", i);
		put(f, d, key, "2", 0, T0);
	}
	struct now now = {.mono_ms = 100, .wall_ms = T0};
	cache_persist_step(p, f->caches, 2, &now);
	cache_persist_step(p, f->caches, 2, &now);
	struct cache_persist_stats ps;
	cache_persist_stats(p, &ps);
	assert_true(ps.writing);
	char saved[160];
	snprintf(saved, sizeof(saved), "%s/saved", f->dir);
	copy_file(f->tmp, saved);
	cache_persist_destroy(p); /* an ordinary end removes it ... */
	assert_false(exists(f->tmp));
	assert_int_equal(rename(saved, f->tmp), 0); /* ... a crash leaves it */

	struct cache_persist_load_stats st;
	assert_int_equal(load(f, 2, T0, &st), 0);
	assert_false(exists(f->tmp));
	assert_int_equal(st.loaded, 1);
	expect_held_value(f->loaded[0].st, "before", 6, "1", 1, T0);
}

/* A write that fails part way (here a file size limit: write(2) fails as
 * on a full disk) leaves the previous snapshot in place and no PATH.tmp;
 * the next attempt, once there is room, succeeds. */
static void a_failed_write_keeps_the_previous_snapshot(void **state)
{
	struct fixture *f = *state;
	struct cstore *d = f->caches[0].st;
	put(f, d, "before", "1", 0, T0);
	struct cache_persist *p = persist_new(f, 100);
	assert_int_equal(cache_persist_write_all(p, f->caches, 2, T0), 0);
	char key[32], value[600];
	memset(value, 'x', sizeof(value) - 1);
	value[sizeof(value) - 1] = '\0';
	for (int i = 0; i < 2000; i++) { /* about 1.2 MB */
		snprintf(key, sizeof(key), "big-%05d", i);
		put(f, d, key, value, 0, T0);
	}
	struct rlimit old, small = {.rlim_cur = 256 * 1024};
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	small.rlim_max = old.rlim_max;
	void (*was)(int) = signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
	int rc = cache_persist_write_all(p, f->caches, 2, T0);
	/* and a periodic one, step by step */
	struct now now = {.mono_ms = 100, .wall_ms = T0};
	struct cache_persist_stats ps;
	for (int i = 0; i < 100; i++) {
		cache_persist_step(p, f->caches, 2, &now);
		cache_persist_stats(p, &ps);
		if (!ps.writing)
			break;
	}
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, was);
	assert_int_equal(rc, ERR_STORAGE);
	assert_int_equal(ps.failed, 2);
	assert_int_equal(ps.written, 1);
	assert_false(ps.writing);
	assert_int_equal(cache_persist_deadline(p), 200); /* tried again an interval later */
	assert_false(exists(f->tmp));
	assert_int_equal(file_rows(f->path), 1);
	struct cache_persist_load_stats st;
	assert_int_equal(load_with(f, p, 2, T0, &st), 0);
	assert_int_equal(st.loaded, 1);
	/* room again */
	assert_int_equal(cache_persist_write_all(p, f->caches, 2, T0), 0);
	assert_int_equal(file_rows(f->path), 2001);
	cache_persist_destroy(p);
}

/* ---- damaged and foreign files ---- */

enum damage {
	ENTRIES_A_VIEW,
	AN_INDEX_MORE,
	NEWER_SCHEMA,
	NOT_SQLITE_PAST_HEADER,
	BAD_ROW_LAST,
	ROW_COUNT_OFF,
	CACHE_ID_UNKNOWN,
	TRUNCATED,
	PAGES_OVERWRITTEN,
	DAMAGE_COUNT,
};

static void damage(struct fixture *f, enum damage how)
{
	switch (how) {
	case AN_INDEX_MORE:
		sql(f->path, "CREATE INDEX by_key ON entries(key)");
		break;
	case ENTRIES_A_VIEW:
		/* a read of it never ends: the load must not read it at all */
		sql(f->path, "DROP TABLE entries; CREATE VIEW entries(" ENTRY_COLUMNS ") AS "
		             "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) "
		             "SELECT 0, x'6b', x'76', n, zeroblob(16), 0, 0, 0 FROM r");
		break;
	case NOT_SQLITE_PAST_HEADER: { /* sqlite's header, then garbage */
		int fd = open(f->path, O_WRONLY);
		assert_true(fd >= 0);
		static uint8_t junk[4096];
		memset(junk, 0xa5, sizeof(junk));
		assert_int_equal(pwrite(fd, junk, sizeof(junk) - 100, 100), (ssize_t)sizeof(junk) - 100);
		close(fd);
		break;
	}
	case NEWER_SCHEMA:
		sql(f->path, "PRAGMA user_version = 2");
		break;
	case BAD_ROW_LAST: /* found after the other rows were applied */
		sql(f->path, "UPDATE entries SET node = x'00' WHERE rowid = (SELECT max(rowid) FROM "
		             "entries)");
		break;
	case ROW_COUNT_OFF:
		sql(f->path, "DELETE FROM entries WHERE rowid = 7");
		break;
	case CACHE_ID_UNKNOWN:
		sql(f->path, "UPDATE entries SET cache = 5 WHERE rowid = 9");
		break;
	case TRUNCATED: {
		struct stat sb;
		assert_int_equal(stat(f->path, &sb), 0);
		assert_int_equal(truncate(f->path, sb.st_size / 2), 0);
		break;
	}
	case PAGES_OVERWRITTEN: {
		int fd = open(f->path, O_WRONLY);
		assert_true(fd >= 0);
		static uint8_t junk[4096];
		memset(junk, 0x5a, sizeof(junk));
		/* pages 3 and 4: past the header and the schema */
		assert_int_equal(pwrite(fd, junk, sizeof(junk), 2 * 4096), (ssize_t)sizeof(junk));
		assert_int_equal(pwrite(fd, junk, sizeof(junk), 3 * 4096), (ssize_t)sizeof(junk));
		close(fd);
		break;
	}
	case DAMAGE_COUNT:
		break;
	}
}

static int bytes_equal(const char *a, const char *b)
{
	FILE *x = fopen(a, "rb"), *y = fopen(b, "rb");
	int same = x && y;
	while (same) {
		int c = fgetc(x), d = fgetc(y);
		same = c == d;
		if (c == EOF)
			break;
	}
	if (x)
		fclose(x);
	if (y)
		fclose(y);
	return same;
}

static void damaged_files_are_set_aside_and_the_caches_start_empty(void **state)
{
	struct fixture *f = *state;
	char key[32], value[200];
	memset(value, 'v', sizeof(value) - 1);
	value[sizeof(value) - 1] = '\0';
	for (int i = 0; i < 2000; i++) {
		snprintf(key, sizeof(key), "key-%05d", i);
		put(f, f->caches[0].st, key, value, 0, T0);
	}
	char copy[160], aside[200];
	snprintf(copy, sizeof(copy), "%s/copy", f->dir);
	for (int how = 0; how < DAMAGE_COUNT; how++) {
		struct cache_persist *p = persist_new(f, 0);
		assert_int_equal(cache_persist_write_all(p, f->caches, 2, T0), 0);
		cache_persist_destroy(p);
		damage(f, (enum damage)how);
		copy_file(f->path, copy);
		uint64_t now = T0 + (uint64_t)how;
		struct cache_persist_load_stats st;
		alarm(60); /* a load that never ends (ENTRIES_A_VIEW) fails here, not at ctest's end */
		if (load(f, 2, now, &st) != ERR_STORAGE)
			fail_msg("damage %d was loaded", how);
		alarm(0);
		assert_true(st.bad);
		assert_int_equal(st.hlc_max, 0);
		assert_int_equal(held(f->loaded[0].st), 0); /* empty, even after a late bad row */
		assert_int_equal(held(f->loaded[1].st), 0);
		assert_false(exists(f->path));
		snprintf(aside, sizeof(aside), "%s.bad-%llu", f->path, (unsigned long long)now);
		assert_true(exists(aside));
		assert_true(bytes_equal(aside, copy)); /* kept as it was */
	}
	/* no file is the ordinary first start, not an error */
	struct cache_persist_load_stats st;
	assert_int_equal(load(f, 2, T0, &st), 0);
	assert_false(st.bad);
	assert_int_equal(st.rows, 0);
}

/* Loading goes row by row into the stores: sqlite's memory stays at its
 * page cache whatever the file holds, so the entries are never held twice. */
static void loading_streams_rows(void **state)
{
	struct fixture *f = *state;
	char key[32], value[1024];
	memset(value, 'v', sizeof(value) - 1);
	value[sizeof(value) - 1] = '\0';
	for (int i = 0; i < 20000; i++) { /* 20 MB of values */
		snprintf(key, sizeof(key), "key-%05d", i);
		put(f, f->caches[0].st, key, value, 0, T0);
	}
	struct cache_persist *p = persist_new(f, 0);
	assert_int_equal(cache_persist_write_all(p, f->caches, 2, T0), 0);
	cache_persist_destroy(p);
	caches_free(f->caches); /* what a restarted node has: nothing */
	caches_new(f, f->caches);
	(void)sqlite3_memory_highwater(1);
	struct cache_persist_load_stats st;
	assert_int_equal(load(f, 2, T0, &st), 0);
	assert_int_equal(st.loaded, 20000);
	sqlite3_int64 peak = sqlite3_memory_highwater(0);
	if (peak > 8ll << 20)
		fail_msg("sqlite held %lld bytes while loading 20 MB", (long long)peak);
	struct cstore_stats ss;
	cstore_stats(f->loaded[0].st, &ss);
	assert_int_equal(ss.entries, 20000);
}

static int create_at(const char *path, const char *data_dir, struct cache_persist **p, char *err,
                     size_t err_len)
{
	struct cache_persist_options o = {.path = path, .data_dir = data_dir,
	                                  .max_drift_ms = HLC_MAX_DRIFT_MS_DEFAULT};
	return cache_persist_create(&o, 0, p, err, err_len);
}

static void bad_paths_are_refused_at_create(void **state)
{
	struct fixture *f = *state;
	struct cache_persist *p = (struct cache_persist *)1;
	char err[512], path[200], want[512];
	assert_int_equal(create_at("cache.db", NULL, &p, err, sizeof(err)), ERR_INVALID);
	assert_null(p);
	assert_string_equal(err, "[cache] persist: 'cache.db' is not an absolute file path");
	assert_int_equal(create_at("/tmp/", NULL, &p, err, sizeof(err)), ERR_INVALID);
	snprintf(path, sizeof(path), "%s/missing/cache.db", f->dir);
	assert_int_equal(create_at(path, NULL, &p, err, sizeof(err)), ERR_STORAGE);
	snprintf(want, sizeof(want), "[cache] persist: directory %s/missing: No such file or "
	         "directory (the node must read, write and enter it)", f->dir);
	assert_string_equal(err, want);
	/* interval 0: never a periodic snapshot */
	p = persist_new(f, 0);
	assert_int_equal(cache_persist_deadline(p), UINT64_MAX);
	struct now now = {.mono_ms = UINT64_MAX - 1, .wall_ms = T0};
	cache_persist_step(p, f->caches, 2, &now);
	assert_false(exists(f->tmp));
	assert_false(exists(f->path));
	cache_persist_destroy(p);
	cache_persist_destroy(NULL);
}

/* persist = PATH must never name the node's own files: in the data dir
 * only cache.db may be the snapshot (the journal, the identity and
 * whatever else is there are the node's); the journal is found by identity
 * wherever PATH is; links and non-files are refused. */
static void paths_among_the_nodes_own_files_are_refused(void **state)
{
	struct fixture *f = *state;
	char data[160], path[300], journal[200], err[512];
	struct cache_persist *p = NULL;
	snprintf(data, sizeof(data), "%s/data", f->dir);
	assert_int_equal(mkdir(data, 0700), 0);
	snprintf(journal, sizeof(journal), "%s/chorus.db", data);
	sql(journal, "CREATE TABLE journal(x); INSERT INTO journal VALUES (42);");
	static const char *const inside[] = {"chorus.db", "chorus.db-wal", "secret", "other.db"};
	for (size_t i = 0; i < sizeof(inside) / sizeof(inside[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", data, inside[i]);
		assert_int_equal(create_at(path, data, &p, err, sizeof(err)), ERR_DENIED);
		assert_null(p);
		/* the journal itself is found first by what it is */
		assert_non_null(strstr(err, i == 0 ? "is the node's journal" : "is inside the data dir"));
		assert_int_equal(cache_persist_path_check(path, data, err, sizeof(err)), ERR_DENIED);
	}
	/* under it, and through "..": the real directory counts */
	snprintf(path, sizeof(path), "%s/sub", data);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/sub/cache.db", data);
	assert_int_equal(cache_persist_path_check(path, data, err, sizeof(err)), ERR_DENIED);
	snprintf(path, sizeof(path), "%s/sub/../chorus.db", data);
	assert_int_equal(cache_persist_path_check(path, data, err, sizeof(err)), ERR_DENIED);
	/* DATA_DIR/cache.db is what persist = on means */
	snprintf(path, sizeof(path), "%s/cache.db", data);
	assert_int_equal(cache_persist_path_check(path, data, err, sizeof(err)), 0);
	/* the journal by another name, outside: a hard link */
	snprintf(path, sizeof(path), "%s/elsewhere.db", f->dir);
	assert_int_equal(link(journal, path), 0);
	assert_int_equal(cache_persist_path_check(path, data, err, sizeof(err)), ERR_DENIED);
	assert_non_null(strstr(err, "is the node's journal"));
	unlink(path);
	/* a symbolic link (to the journal or anything): a rename would replace
	 * the link, a load would read what it points to */
	snprintf(path, sizeof(path), "%s/link.db", f->dir);
	assert_int_equal(symlink(journal, path), 0);
	assert_int_equal(cache_persist_path_check(path, data, err, sizeof(err)), ERR_DENIED);
	assert_non_null(strstr(err, "symbolic link"));
	unlink(path);
	/* not a file */
	snprintf(path, sizeof(path), "%s/adir", f->dir);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(cache_persist_path_check(path, data, err, sizeof(err)), ERR_DENIED);
	assert_non_null(strstr(err, "not a regular file"));
	/* elsewhere is fine, and nothing was touched */
	snprintf(path, sizeof(path), "%s/snap.db", f->dir);
	assert_int_equal(create_at(path, data, &p, err, sizeof(err)), 0);
	cache_persist_destroy(p);
	assert_int_equal(file_rows(journal), -1); /* no entries table: still the journal */
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	assert_int_equal(sqlite3_open(journal, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT x FROM journal", -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(s, 0), 42);
	sqlite3_finalize(s);
	sqlite3_close(db);
}

/* Two nodes must not share a snapshot: the second one is refused while the
 * first holds PATH.lock, and gets it once the first is gone. */
static void a_path_in_use_is_refused(void **state)
{
	struct fixture *f = *state;
	struct cache_persist *p = persist_new(f, 0), *q = (struct cache_persist *)1;
	char err[512], lock[200];
	struct cache_persist_options o = options(f, 0);
	assert_int_equal(cache_persist_create(&o, 0, &q, err, sizeof(err)), ERR_BUSY);
	assert_null(q);
	snprintf(lock, sizeof(lock), "%s.lock", f->path);
	assert_non_null(strstr(err, "is in use by another chorusd"));
	assert_non_null(strstr(err, lock));
	cache_persist_destroy(p);
	q = persist_with(&o);
	cache_persist_destroy(q);
}

/* A file at PATH that is not recognisably a Chorus snapshot (another
 * program's file, a database of another application, an empty file) is
 * never moved or loaded: the load says why and the node must not start.
 * A PATH.tmp of that kind is left alone too; one a crash can leave
 * (empty, zeros) is removed. */
static void foreign_files_are_left_alone(void **state)
{
	struct fixture *f = *state;
	char copy[160];
	snprintf(copy, sizeof(copy), "%s/copy", f->dir);
	static const char *const why[] = {"not a sqlite database", "application_id 0",
	                                  "an empty file", "zero bytes"};
	for (int how = 0; how < 4; how++) {
		unlink(f->path);
		if (how == 0) {
			FILE *fp = fopen(f->path, "w");
			assert_non_null(fp);
			fputs("this is not a database, nor anything of the node's\n", fp);
			fclose(fp);
		} else if (how == 1) {
			sql(f->path, "CREATE TABLE entries(x); INSERT INTO entries VALUES (1);");
		} else {
			FILE *fp = fopen(f->path, "w");
			assert_non_null(fp);
			if (how == 3) {
				static const char zeros[4096];
				assert_int_equal(fwrite(zeros, 1, sizeof(zeros), fp), sizeof(zeros));
			}
			fclose(fp);
		}
		copy_file(f->path, copy);
		struct cache_persist *p = persist_new(f, 0);
		struct cache_persist_load_stats st;
		char err[512];
		caches_free(f->loaded);
		caches_new(f, f->loaded);
		assert_int_equal(cache_persist_load(p, f->loaded, 2, PARTITIONS, T0, &st, err,
		                                    sizeof(err)),
		                 ERR_DENIED);
		cache_persist_destroy(p);
		assert_non_null(strstr(err, "is not a Chorus cache snapshot"));
		assert_non_null(strstr(err, why[how]));
		assert_non_null(strstr(err, "the node does not start"));
		assert_true(bytes_equal(f->path, copy)); /* where it was, as it was */
		char aside[200];
		snprintf(aside, sizeof(aside), "%s.bad-%llu", f->path, (unsigned long long)T0);
		assert_false(exists(aside));
		assert_false(st.bad);
		assert_int_equal(held(f->loaded[0].st), 0);
	}
	unlink(f->path);
	/* PATH.tmp: another program's file stays, and stops the start */
	FILE *fp = fopen(f->tmp, "w");
	assert_non_null(fp);
	fputs("someone's notes\n", fp);
	fclose(fp);
	struct cache_persist_load_stats st;
	assert_int_equal(load(f, 2, T0, &st), ERR_DENIED);
	assert_true(exists(f->tmp));
	/* what a crash leaves is removed */
	fp = fopen(f->tmp, "w");
	assert_non_null(fp);
	fclose(fp);
	assert_int_equal(load(f, 2, T0, &st), 0);
	assert_false(exists(f->tmp));
}

/* FLUSH marks: each cache's flush_hlc goes into the snapshot and comes
 * back; rows older than their cache's mark (a periodic snapshot may walk
 * them before the FLUSH comes) are left out; a mark further ahead of the
 * wall clock than the drift is left out, as such a row is. */
static void flush_marks_round_trip_and_leave_older_rows_out(void **state)
{
	struct fixture *f = *state;
	struct cstore *d = f->caches[0].st;
	put(f, d, "before-1", "x", 0, T0);
	put(f, d, "before-2", "x", 0, T0);
	del(f, d, "before-3", T0);
	uint64_t mark = f->hlc + 1;
	f->hlc += 10;
	put(f, d, "after", "kept", 0, T0);
	put(f, f->caches[1].st, "sessions-old", "x", 0, T0);
	f->caches[0].flush_hlc = mark;
	struct cache_persist *p = persist_new(f, 0);
	assert_int_equal(cache_persist_write_all(p, f->caches, 2, T0), 0);
	cache_persist_destroy(p);
	struct cache_persist_load_stats st;
	assert_int_equal(load(f, 2, T0 + 1000, &st), 0);
	assert_int_equal(st.rows, 5);
	assert_int_equal(st.flushed, 3);
	assert_int_equal(st.loaded, 2);
	assert_int_equal(f->loaded[0].flush_hlc, mark);
	assert_int_equal(f->loaded[1].flush_hlc, 0); /* marks are per cache */
	expect_held_value(f->loaded[0].st, "after", 5, "kept", 4, T0);
	struct cstore_item it;
	assert_int_equal(cstore_peek(f->loaded[0].st, "before-1", 8, T0, &it), ERR_NOT_FOUND);
	assert_int_equal(cstore_peek(f->loaded[0].st, "before-3", 8, T0, &it), ERR_NOT_FOUND);
	expect_held_value(f->loaded[1].st, "sessions-old", 12, "x", 1, T0);

	/* a mark an hour ahead: not loaded, not raising the clock */
	f->caches[0].flush_hlc = hlc_pack(T0 + 3600 * 1000, 0);
	p = persist_new(f, 0);
	assert_int_equal(cache_persist_write_all(p, f->caches, 2, T0), 0);
	cache_persist_destroy(p);
	assert_int_equal(load(f, 2, T0, &st), 0);
	assert_int_equal(st.ahead, 1);
	assert_int_equal(st.ahead_ms_max, 3600 * 1000);
	assert_int_equal(f->loaded[0].flush_hlc, 0);
	assert_true(hlc_physical_ms(st.hlc_max) <= T0);
	assert_int_equal(st.loaded, 4);
	assert_int_equal(st.tombstones, 1);

	/* a mark that is not one refuses the file */
	f->caches[0].flush_hlc = mark;
	p = persist_new(f, 0);
	assert_int_equal(cache_persist_write_all(p, f->caches, 2, T0), 0);
	cache_persist_destroy(p);
	sql(f->path, "INSERT INTO meta(key, value) VALUES ('flush_hlc.x', 1)");
	assert_int_equal(load(f, 2, T0, &st), ERR_STORAGE);
	assert_true(st.bad);
}

/* A snapshot row stamped further ahead of the wall clock than the drift
 * (a crafted file, or a wall clock that went back more than that across
 * the restart) is left out and does not raise the clock, which stays where
 * the replicas accept this node's writes. */
static void rows_ahead_of_the_clock_are_left_out(void **state)
{
	struct fixture *f = *state;
	struct cstore *d = f->caches[0].st;
	put(f, d, "now", "1", 0, T0);
	struct cstore_put w;
	memset(&w, 0, sizeof(w));
	w.key = "hour";
	w.key_bytes = 4;
	w.value = "2";
	w.value_bytes = 1;
	w.version.hlc = hlc_pack(T0 + 3600 * 1000, 0);
	memset(w.version.node, NODE_A, sizeof(w.version.node));
	w.partition = part("hour", 4);
	assert_int_equal(cstore_put(d, &w, T0, NULL), 0);
	w.key = "near";
	w.version.hlc = hlc_pack(T0 + 400, 7); /* within the drift */
	w.partition = part("near", 4);
	assert_int_equal(cstore_put(d, &w, T0, NULL), 0);
	struct cache_persist *p = persist_new(f, 0);
	assert_int_equal(cache_persist_write_all(p, f->caches, 2, T0), 0);
	cache_persist_destroy(p);
	struct cache_persist_load_stats st;
	assert_int_equal(load(f, 2, T0, &st), 0);
	assert_int_equal(st.rows, 3);
	assert_int_equal(st.ahead, 1);
	assert_int_equal(st.ahead_ms_max, 3600 * 1000);
	assert_int_equal(st.loaded, 2);
	assert_int_equal(st.hlc_max, hlc_pack(T0 + 400, 7));
	struct cstore_item it;
	assert_int_equal(cstore_peek(f->loaded[0].st, "hour", 4, T0, &it), ERR_NOT_FOUND);
	/* the clock can take what was kept, and its next write is one a
	 * replica accepts */
	struct hlc h, replica;
	hlc_init(&h, DRIFT);
	hlc_init(&replica, DRIFT);
	assert_int_equal(hlc_restore(&h, T0, st.hlc_max), 0);
	uint64_t merged;
	assert_int_equal(hlc_update(&replica, T0, hlc_now(&h, T0), &merged), 0);
}

/* A row longer than a key and a value of this node can be is refused by
 * sqlite's length limit before it is read into memory. */
static void rows_longer_than_the_limit_refuse_the_file(void **state)
{
	struct fixture *f = *state;
	static char big[8192];
	memset(big, 'b', sizeof(big) - 1);
	put(f, f->caches[0].st, "big", big, 0, T0);
	struct cache_persist *p = persist_new(f, 0);
	assert_int_equal(cache_persist_write_all(p, f->caches, 2, T0), 0);
	cache_persist_destroy(p);
	struct cache_persist_options o = options(f, 0);
	o.row_bytes_max = 4096;
	p = persist_with(&o);
	struct cache_persist_load_stats st;
	assert_int_equal(load_with(f, p, 2, T0, &st), ERR_STORAGE);
	cache_persist_destroy(p);
	assert_true(st.bad);
	/* under the limit it loads */
	o.row_bytes_max = sizeof(big) + PERSIST_ROW_SLACK_BYTES;
	char aside[200];
	snprintf(aside, sizeof(aside), "%s.bad-%llu", f->path, (unsigned long long)T0);
	assert_int_equal(rename(aside, f->path), 0);
	p = persist_with(&o);
	assert_int_equal(load_with(f, p, 2, T0, &st), 0);
	cache_persist_destroy(p);
	assert_int_equal(st.loaded, 1);
}

/* The stop snapshot gives up at its deadline, between steps: the previous
 * snapshot stays, no PATH.tmp is left, and it says why. */
static void the_stop_snapshot_gives_up_at_its_deadline(void **state)
{
	struct fixture *f = *state;
	struct cstore *d = f->caches[0].st;
	put(f, d, "before", "1", 0, T0);
	struct cache_persist *p = persist_new(f, 0);
	assert_int_equal(cache_persist_write_all(p, f->caches, 2, T0), 0);
	cache_persist_destroy(p);
	struct stat before;
	assert_int_equal(stat(f->path, &before), 0);
	char key[32], value[200];
	memset(value, 'v', sizeof(value) - 1);
	value[sizeof(value) - 1] = '\0';
	for (int i = 0; i < 100000; i++) { /* far more than 1 ms of writing */
		snprintf(key, sizeof(key), "key-%06d", i);
		put(f, d, key, value, 0, T0);
	}
	struct cache_persist_options o = options(f, 0);
	o.stop_timeout_ms = 1;
	p = persist_with(&o);
	assert_int_equal(cache_persist_write_all(p, f->caches, 2, T0), ERR_TIMEOUT);
	struct cache_persist_stats ps;
	cache_persist_stats(p, &ps);
	assert_int_equal(ps.failed, 1);
	assert_int_equal(ps.written, 0);
	assert_true(ps.rows < 100001);
	cache_persist_destroy(p);
	assert_false(exists(f->tmp));
	struct stat after;
	assert_int_equal(stat(f->path, &after), 0);
	assert_int_equal(after.st_ino, before.st_ino);
	assert_int_equal(file_rows(f->path), 1);
	/* with time enough it is written */
	o.stop_timeout_ms = 600000;
	p = persist_with(&o);
	assert_int_equal(cache_persist_write_all(p, f->caches, 2, T0), 0);
	cache_persist_destroy(p);
	assert_int_equal(file_rows(f->path), 100001);
}

/* The directory must be readable too: its fsync opens it. Checked as
 * another user when the tests run as root (root may read anything). */
static void a_directory_that_cannot_be_read_is_refused(void **state)
{
	struct fixture *f = *state;
	char dir[160], path[200];
	snprintf(dir, sizeof(dir), "%s/wx", f->dir);
	assert_int_equal(mkdir(dir, 0700), 0);
	snprintf(path, sizeof(path), "%s/cache.db", dir);
	assert_int_equal(chmod(f->dir, 0711), 0); /* the other user must reach wx */
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (geteuid() == 0 && (chown(dir, 65534, 65534) != 0 || setgid(65534) != 0 ||
		                       setuid(65534) != 0))
			_exit(3);
		if (chmod(dir, 0300) != 0) /* write and enter, not read */
			_exit(4);
		struct cache_persist *p = NULL;
		char err[512];
		int rc = create_at(path, NULL, &p, err, sizeof(err));
		_exit(rc == ERR_STORAGE && strstr(err, "Permission denied") && !p ? 0 : 1);
	}
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(chmod(dir, 0700), 0);
	assert_int_equal(chmod(f->dir, 0700), 0);
}

/* Names and messages read from a file are shown escaped in the log. */
static void what_the_file_says_is_escaped(void **state)
{
	(void)state;
	char out[64];
	assert_string_equal(cache_persist_escape("sessions-1.a_b", out, sizeof(out)), "sessions-1.a_b");
	assert_string_equal(cache_persist_escape("a\nERROR forged\x1b[0m", out, sizeof(out)),
	                    "a\\x0aERROR forged\\x1b[0m");
	assert_string_equal(cache_persist_escape("q'\\\t\x7f\xc3\xa9", out, sizeof(out)),
	                    "q'\\x5c\\x09\\x7f\\xc3\\xa9");
	/* cut to fit, never in the middle of an escape */
	char small[6];
	assert_string_equal(cache_persist_escape("ab\ncd", small, sizeof(small)), "ab");
	assert_string_equal(cache_persist_escape("abcdefgh", small, sizeof(small)), "abcde");
	assert_string_equal(cache_persist_escape("x", small, 1), "");
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(row_rules_load_expire_forget_or_refuse),
		T(every_kind_of_entry_round_trips),
		T(unknown_caches_and_older_duplicates),
		T(periodic_snapshot_is_written_in_bounded_steps),
		T(a_snapshot_cut_short_leaves_the_previous_one),
		T(a_failed_write_keeps_the_previous_snapshot),
		T(damaged_files_are_set_aside_and_the_caches_start_empty),
		T(loading_streams_rows),
		T(bad_paths_are_refused_at_create),
		T(paths_among_the_nodes_own_files_are_refused),
		T(a_path_in_use_is_refused),
		T(foreign_files_are_left_alone),
		T(flush_marks_round_trip_and_leave_older_rows_out),
		T(rows_ahead_of_the_clock_are_left_out),
		T(rows_longer_than_the_limit_refuse_the_file),
		T(the_stop_snapshot_gives_up_at_its_deadline),
		T(a_directory_that_cannot_be_read_is_refused),
		T(what_the_file_says_is_escaped),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
