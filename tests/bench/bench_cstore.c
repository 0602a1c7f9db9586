/*
 * bench_cstore.c - the local cache store (node/core/cstore.c) on its own:
 * 1,000,000 entries with 16-byte keys and 32-byte values.
 *
 * Prints:
 *   put / get      ops/s (inserting every key, then reading every key in a
 *                  scattered order), single thread, no per-op timer;
 *   overhead       bytes per entry beyond key and value, as the store
 *                  accounts them (memory_bytes minus the empty store minus
 *                  48 bytes an entry) and as the process's RSS grew (which
 *                  adds malloc's own per-chunk bookkeeping);
 *   latency        every put timed on its own while the table grows from 4
 *                  to 2^20 buckets: p50 / p99 / p99.9, then the puts made
 *                  while a resize ran (or that started or ended one) apart
 *                  from the others, each with its worst: if resizing
 *                  paused, the first worst would stand out from the second
 *                  (which is the machine's own noise: page faults, malloc
 *                  growing its heap, preemption). The baseline is what a
 *                  stop-the-world resize would pay: moving 524,288 entries
 *                  in one call (cstore_tick with an unbounded budget),
 *                  measured in this run;
 *   with TTL       the accounted overhead when every entry also expires
 *                  (an 8-byte heap slot each, plus the heap's slack).
 *
 * Usage: bench_cstore [entries]   (default 1000000). Not a ctest test;
 * nothing is enforced, the 80-byte target is reported as met or missed.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "core/cstore.h"

#define KEY_BYTES 16
#define VALUE_BYTES 32
#define OVERHEAD_TARGET_BYTES 80.0

static uint64_t ns_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, resident = 0;
	if (!f)
		return 0;
	if (fscanf(f, "%lu %lu", &size, &resident) != 2)
		resident = 0;
	fclose(f);
	return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* Zero-padded decimal, written by hand: snprintf would cost more than the
 * store call it feeds. */
static void put_digits(char *p, int width, uint64_t v)
{
	for (int i = width - 1; i >= 0; i--) {
		p[i] = (char)('0' + v % 10);
		v /= 10;
	}
}

static void make_key(uint32_t i, char *k) /* "key:" + 12 digits */
{
	memcpy(k, "key:", 4);
	put_digits(k + 4, KEY_BYTES - 4, i);
}

static void make_value(uint32_t i, char *v) /* "value-" + 10 digits + "-" + 15 digits */
{
	memcpy(v, "value-", 6);
	put_digits(v + 6, 10, i);
	v[16] = '-';
	put_digits(v + 17, VALUE_BYTES - 17, (uint64_t)i * 2654435761u);
}

static struct cstore *create(void)
{
	struct cstore_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	randombytes_buf(cfg.hash_key, sizeof(cfg.hash_key));
	struct cstore *s = NULL;
	if (cstore_create(&cfg, &s) != 0) {
		fprintf(stderr, "bench_cstore: cstore_create failed\n");
		exit(1);
	}
	return s;
}

static void put_one(struct cstore *s, uint32_t i, uint64_t ttl_ms)
{
	char k[KEY_BYTES], v[VALUE_BYTES];
	make_key(i, k);
	make_value(i, v);
	struct cstore_put p;
	memset(&p, 0, sizeof(p));
	p.key = k;
	p.key_bytes = KEY_BYTES;
	p.value = v;
	p.value_bytes = VALUE_BYTES;
	p.version.hlc = (uint64_t)i + 1;
	p.partition = (uint16_t)(i % CSTORE_PARTITIONS_DEFAULT);
	p.ttl_ms = ttl_ms;
	if (cstore_put(s, &p, 1000, NULL) != 0) {
		fprintf(stderr, "bench_cstore: put %" PRIu32 " failed\n", i);
		exit(1);
	}
}

static double overhead_per_entry(const struct cstore *s, uint64_t empty_bytes, uint32_t n)
{
	struct cstore_stats st;
	cstore_stats(s, &st);
	return ((double)st.memory_bytes - (double)empty_bytes - (double)n * (KEY_BYTES + VALUE_BYTES)) / n;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	uint32_t n = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 1000000u;
	if (n < 1000 || sodium_init() < 0) {
		fprintf(stderr, "usage: bench_cstore [entries >= 1000]\n");
		return 2;
	}
	printf("bench_cstore: %" PRIu32 " entries, %d-byte keys, %d-byte values\n", n, KEY_BYTES, VALUE_BYTES);

	/* 1. throughput and memory */
	uint64_t rss0 = rss_bytes();
	struct cstore *s = create();
	struct cstore_stats st;
	cstore_stats(s, &st);
	uint64_t empty_bytes = st.memory_bytes;
	uint64_t t0 = ns_now();
	for (uint32_t i = 0; i < n; i++)
		put_one(s, i, 0);
	uint64_t put_ns = ns_now() - t0;
	uint64_t rss1 = rss_bytes();
	cstore_stats(s, &st);
	double accounted = overhead_per_entry(s, empty_bytes, n);
	double rss_per = ((double)rss1 - (double)rss0) / n - (KEY_BYTES + VALUE_BYTES);
	/* a scattered read order: a stride coprime with n */
	uint32_t stride = 2654435761u % n;
	while (stride < 2 || n % stride == 0 || (stride % 2 == 0 && n % 2 == 0))
		stride++;
	uint64_t found = 0, idx = 0;
	t0 = ns_now();
	for (uint32_t j = 0; j < n; j++) {
		char k[KEY_BYTES];
		make_key((uint32_t)idx, k);
		struct cstore_item it;
		if (cstore_get(s, k, KEY_BYTES, 1000, &it) == 0 && it.value_bytes == VALUE_BYTES)
			found++;
		idx = (idx + stride) % n;
	}
	uint64_t get_ns = ns_now() - t0;
	if (found != n) {
		fprintf(stderr, "bench_cstore: %" PRIu64 " of %" PRIu32 " keys found\n", found, n);
		return 1;
	}
	printf("put           %10.0f ops/s  (%.0f ns/op, table grew to %" PRIu64 " buckets)\n",
	       n / (put_ns / 1e9), (double)put_ns / n, st.buckets);
	printf("get           %10.0f ops/s  (%.0f ns/op, every key found)\n", n / (get_ns / 1e9), (double)get_ns / n);
	printf("overhead      %10.1f bytes/entry accounted (memory_bytes %" PRIu64 "; header %zu, buckets %.1f)  "
	       "target <= %.0f: %s\n",
	       accounted, st.memory_bytes, cstore_entry_bytes(0, 0), (double)st.buckets * sizeof(void *) / n,
	       OVERHEAD_TARGET_BYTES, accounted <= OVERHEAD_TARGET_BYTES ? "MET" : "MISSED");
	printf("              %10.1f bytes/entry by RSS (+%.1f MiB; malloc's chunk headers and rounding "
	       "included)\n",
	       rss_per, ((double)rss1 - (double)rss0) / (1024 * 1024));
	cstore_destroy(s);

	/* 2. latency during growth, against a stop-the-world resize */
	uint64_t *lat = malloc(sizeof(*lat) * n);
	uint8_t *during = malloc(n);
	if (!lat || !during)
		return 1;
	s = create();
	uint64_t worst[2] = {0, 0}, worst_at[2] = {0, 0}, sum[2] = {0, 0}, ops[2] = {0, 0}, slow[2] = {0, 0};
	for (uint32_t i = 0; i < n; i++) {
		uint64_t a = ns_now();
		put_one(s, i, 0);
		lat[i] = ns_now() - a;
		cstore_stats(s, &st);
		/* a put that started or finished a resize, or ran during one */
		int r = st.rehashing || (i > 0 && during[i - 1]);
		during[i] = (uint8_t)st.rehashing;
		if (lat[i] > worst[r]) {
			worst[r] = lat[i];
			worst_at[r] = i;
		}
		sum[r] += lat[i];
		ops[r]++;
		if (lat[i] > 100000)
			slow[r]++;
	}
	cstore_destroy(s);
	free(during);
	qsort(lat, n, sizeof(*lat), cmp_u64);
	uint64_t p50 = lat[n / 2], p99 = lat[(uint64_t)n * 99 / 100], p999 = lat[(uint64_t)n * 999 / 1000];
	free(lat);

	s = create();
	uint32_t grow_at = 0;
	for (uint32_t i = 0; i < n; i++) {
		put_one(s, i, 0);
		cstore_stats(s, &st);
		if (st.rehashing && i + 1 >= n / 2)
			grow_at = i + 1;
		if (grow_at)
			break;
	}
	uint64_t stw_ns = 0;
	if (grow_at) {
		t0 = ns_now();
		cstore_tick(s, 1000, UINT32_MAX); /* the whole move in one call */
		stw_ns = ns_now() - t0;
		cstore_stats(s, &st);
		if (st.rehashing) {
			fprintf(stderr, "bench_cstore: an unbounded tick left the resize unfinished\n");
			return 1;
		}
	}
	cstore_destroy(s);
	printf("put latency   p50 %" PRIu64 " ns, p99 %" PRIu64 " ns, p99.9 %" PRIu64 " ns over all %" PRIu32 " puts\n",
	       p50, p99, p999, n);
	printf("  resizing    %7" PRIu64 " puts: mean %4.0f ns, worst %7.1f us (entry %" PRIu64 "), %" PRIu64
	       " over 100 us\n",
	       ops[1], ops[1] ? (double)sum[1] / ops[1] : 0.0, worst[1] / 1e3, worst_at[1], slow[1]);
	printf("  not         %7" PRIu64 " puts: mean %4.0f ns, worst %7.1f us (entry %" PRIu64 "), %" PRIu64
	       " over 100 us\n",
	       ops[0], ops[0] ? (double)sum[0] / ops[0] : 0.0, worst[0] / 1e3, worst_at[0], slow[0]);
	if (grow_at)
		printf("baseline      stop-the-world resize of %" PRIu32 " entries: %.2f ms; worst put while resizing / "
		       "that = %.4f\n",
		       grow_at, stw_ns / 1e6, (double)worst[1] / (double)stw_ns);

	/* 3. the same entries, each with a TTL */
	s = create();
	cstore_stats(s, &st);
	empty_bytes = st.memory_bytes;
	for (uint32_t i = 0; i < n; i++)
		put_one(s, i, 3600u * 1000u + i);
	printf("with TTL      %10.1f bytes/entry accounted (expiry heap included)  target <= %.0f: %s\n",
	       overhead_per_entry(s, empty_bytes, n), OVERHEAD_TARGET_BYTES,
	       overhead_per_entry(s, empty_bytes, n) <= OVERHEAD_TARGET_BYTES ? "MET" : "MISSED");
	cstore_destroy(s);
	return 0;
}
