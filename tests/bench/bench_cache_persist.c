/*
 * bench_cache_persist.c - the cache's snapshots (node/svc/cache_persist.c)
 * on their own: one cache of N entries (12-byte keys, 32-byte values, one
 * in ten with a TTL, one in twenty a tombstone), written to a sqlite file in
 * a directory given on the command line (default /tmp) and loaded back.
 *
 * Prints:
 *   stop snapshot   cache_persist_write_all: time (fsync and rename
 *                   included) and the file's size, bytes per entry;
 *   periodic        the same snapshot written step by step as the loop
 *                   would (cache_persist_step): steps, the slowest step and
 *                   the 99th percentile (how long the loop is held), the
 *                   last one (close, fsync, rename), and the time from start
 *                   to switch;
 *   load            cache_persist_load into an empty store (quick_check
 *                   included): time, and sqlite's peak memory during it next
 *                   to the store's own (the entries are not held twice).
 *
 * Usage: bench_cache_persist [entries [dir]]   (default 100000 /tmp). Not a
 * ctest test; nothing is enforced.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "svc/cache_internal.h"

#define WALL0 1700000000000ull

static uint64_t ms_since(uint64_t t0_ns)
{
	return (clock_mono_ns() - t0_ns) / 1000000;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static struct cstore *store_new(void)
{
	struct cstore_config sc;
	memset(&sc, 0, sizeof(sc));
	sc.partition_count = 271;
	sc.expire_to_tombstone = true;
	struct cstore *st = NULL;
	if (cstore_create(&sc, &st) != 0) {
		fprintf(stderr, "cstore_create failed\n");
		exit(1);
	}
	return st;
}

int main(int argc, char **argv)
{
	uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 100000;
	const char *dir = argc > 2 ? argv[2] : "/tmp";
	char path[512];
	snprintf(path, sizeof(path), "%s/bench-cache-persist-%d.db", dir, (int)getpid());
	log_setup(LOG_WARN, 0);

	struct config_cache cfg;
	memset(&cfg, 0, sizeof(cfg));
	snprintf(cfg.name, sizeof(cfg.name), "default");
	struct cache c = {.cfg = &cfg, .st = store_new()};
	char key[32], value[33];
	memset(value, 'v', 32);
	value[32] = '\0';
	for (uint64_t i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "key:%08" PRIu64, i % 100000000);
		struct cstore_put p;
		memset(&p, 0, sizeof(p));
		p.key = key;
		p.key_bytes = 12;
		p.value = value;
		p.value_bytes = 32;
		p.version.hlc = hlc_pack(WALL0, 0) + i + 1;
		memset(p.version.node, 0xa1, sizeof(p.version.node));
		p.partition = cplace_partition(key, 12, 271);
		p.ttl_ms = i % 10 == 0 ? 3600000 : 0;
		if (cstore_put(c.st, &p, WALL0, NULL) != 0)
			return 1;
		if (i % 20 == 0) {
			struct cstore_version v = p.version;
			v.hlc += n;
			if (cstore_delete(c.st, key, 12, &v, p.partition, WALL0, NULL, NULL) != 0)
				return 1;
		}
	}
	struct cstore_stats ss;
	cstore_stats(c.st, &ss);
	printf("store: %" PRIu64 " entries, %" PRIu64 " tombstones, %.1f MiB\n", ss.entries,
	       ss.tombstones, ss.memory_bytes / 1048576.0);

	char err[512];
	struct cache_persist *p = NULL;
	struct cache_persist_options o = {
		.path = path,
		.interval_ms = 1000,
		.max_drift_ms = HLC_MAX_DRIFT_MS_DEFAULT,
	};
	if (cache_persist_create(&o, 0, &p, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	uint64_t t0 = clock_mono_ns();
	if (cache_persist_write_all(p, &c, 1, WALL0) != 0)
		return 1;
	uint64_t write_ms = ms_since(t0);
	struct stat sb;
	stat(path, &sb);
	printf("stop snapshot: %" PRIu64 " ms, file %.1f MiB (%.1f bytes per entry)\n", write_ms,
	       sb.st_size / 1048576.0, (double)sb.st_size / (double)(ss.entries + ss.tombstones));

	size_t cap = 1 << 16, steps = 0;
	uint64_t *step_us = malloc(cap * sizeof(*step_us));
	struct now now = {.mono_ms = 1000, .wall_ms = WALL0};
	t0 = clock_mono_ns();
	for (;;) {
		uint64_t s0 = clock_mono_ns();
		cache_persist_step(p, &c, 1, &now);
		if (steps < cap)
			step_us[steps++] = (clock_mono_ns() - s0) / 1000;
		struct cache_persist_stats ps;
		cache_persist_stats(p, &ps);
		if (!ps.writing)
			break;
	}
	uint64_t periodic_ms = ms_since(t0);
	uint64_t last_us = step_us[steps - 1];
	qsort(step_us, steps, sizeof(*step_us), cmp_u64);
	printf("periodic: %zu steps in %" PRIu64 " ms; a step p50 %.2f ms, p99 %.2f ms, "
	       "slowest %.2f ms; the last (close, fsync, rename) %.2f ms\n",
	       steps, periodic_ms, step_us[steps / 2] / 1000.0, step_us[steps * 99 / 100] / 1000.0,
	       step_us[steps - 1] / 1000.0, last_us / 1000.0);
	free(step_us);
	cache_persist_destroy(p);

	struct cache fresh = {.cfg = &cfg, .st = store_new()};
	o.interval_ms = 0;
	if (cache_persist_create(&o, 0, &p, err, sizeof(err)) != 0)
		return 1;
	(void)sqlite3_memory_highwater(1);
	struct cache_persist_load_stats ls;
	t0 = clock_mono_ns();
	if (cache_persist_load(p, &fresh, 1, 271, WALL0 + 1000, &ls, err, sizeof(err)) != 0)
		return 1;
	uint64_t load_ms = ms_since(t0);
	sqlite3_int64 peak = sqlite3_memory_highwater(0);
	cstore_stats(fresh.st, &ss);
	printf("load: %" PRIu64 " ms for %" PRIu64 " entries and %" PRIu64 " tombstones; sqlite's "
	       "peak %.1f MiB beside the store's %.1f MiB\n",
	       load_ms, ls.loaded, ls.tombstones, peak / 1048576.0, ss.memory_bytes / 1048576.0);
	cache_persist_destroy(p);
	cstore_destroy(fresh.st);
	cstore_destroy(c.st);
	unlink(path);
	snprintf(path + strlen(path), sizeof(path) - strlen(path), ".lock");
	unlink(path);
	return 0;
}
