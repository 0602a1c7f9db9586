/*
 * test_client_cache.c - libchorus's cache calls without a node: the names
 * of the consistency levels, the free functions, and the arguments each
 * ch_cache_* call refuses before anything is sent.
 *
 * The argument checks run before the client is looked at, so they are
 * called with a NULL client: a call whose arguments pass says "client is
 * required" instead, which is how the tests tell which check answered. The
 * calls against a node (routing, the CH_ERR_MOVED retries) are in
 * test_client.c (a fake node) and tests/integration/test_cache_cli.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "chorus.h"

#include <stdlib.h>
#include <string.h>

#define ERR_BYTES 256

static void consistency_names_round_trip(void **state)
{
	(void)state;
	for (int i = CH_CACHE_DEFAULT; i <= CH_CACHE_ALL; i++)
		assert_int_equal(ch_cache_consistency_parse(ch_cache_consistency_name(i)), i);
	assert_string_equal(ch_cache_consistency_name(CH_CACHE_QUORUM), "quorum");
	assert_string_equal(ch_cache_consistency_name(4), "unknown");
	assert_string_equal(ch_cache_consistency_name(-1), "unknown");
	assert_int_equal(ch_cache_consistency_parse("ALL"), CH_CACHE_ALL);
	assert_int_equal(ch_cache_consistency_parse("One"), CH_CACHE_ONE);
	assert_int_equal(ch_cache_consistency_parse("most"), -1);
	assert_int_equal(ch_cache_consistency_parse(""), -1);
	assert_int_equal(ch_cache_consistency_parse(NULL), -1);
}

static void flags_are_the_wire_numbers(void **state)
{
	(void)state;
	/* CacheReq.flags in proto/chorus.proto: NX 1, XX 2, KEEPTTL 4, GET 8 */
	assert_int_equal(CH_CACHE_NX, 1);
	assert_int_equal(CH_CACHE_XX, 2);
	assert_int_equal(CH_CACHE_KEEPTTL, 4);
	assert_int_equal(CH_CACHE_GET, 8);
	assert_string_equal(ch_strerror(CH_ERR_MOVED), "partition moved: retry");
	assert_string_equal(ch_strerror(CH_ERR_UNAVAILABLE), "too few replicas alive");
}

static void free_functions_take_null_and_partial_arrays(void **state)
{
	(void)state;
	ch_bytes_free(NULL, 3);
	ch_cache_stats_free(NULL, 3);
	struct ch_bytes *v = calloc(2, sizeof *v);
	assert_non_null(v);
	v[0].data = strdup("k");
	v[0].len = 1;
	ch_bytes_free(v, 2); /* v[1].data NULL: a miss of ch_cache_mget */
	struct ch_cache_stats *s = calloc(1, sizeof *s);
	assert_non_null(s);
	s->cache = strdup("default");
	ch_cache_stats_free(s, 1); /* node NULL */
}

/* The call's code and that err holds `want`. */
#define assert_refused(call, code, want)                                                     \
	do {                                                                                     \
		char err_[ERR_BYTES] = "";                                                           \
		int rv_ = (call);                                                                    \
		if (rv_ != (code) || strstr(err_, (want)) == NULL)                                   \
			fail_msg("%s: got %d '%s', want %d '%s'", #call, rv_, err_, (code), (want));     \
	} while (0)
#define ERR err_, sizeof err_

static void empty_and_null_keys_are_invalid(void **state)
{
	(void)state;
	void *value = (void *)&value;
	size_t len = 99;
	int64_t ttl = 5;
	assert_refused(ch_cache_get(NULL, NULL, "", 0, &value, &len, NULL, &ttl, ERR),
	               CH_ERR_INVALID, "a key is required");
	assert_null(value);
	assert_int_equal(len, 0);
	assert_int_equal(ttl, -2);
	assert_refused(ch_cache_get(NULL, NULL, NULL, 3, &value, &len, NULL, NULL, ERR),
	               CH_ERR_INVALID, "a key is required");
	assert_refused(ch_cache_put(NULL, NULL, "", 0, "v", 1, 0, 0, NULL, NULL, ERR),
	               CH_ERR_INVALID, "a key is required");
	int flag = 7;
	assert_refused(ch_cache_del(NULL, NULL, "", 0, &flag, ERR), CH_ERR_INVALID,
	               "a key is required");
	assert_int_equal(flag, 0);
	assert_refused(ch_cache_exists(NULL, NULL, "", 0, &flag, ERR), CH_ERR_INVALID,
	               "a key is required");
	assert_refused(ch_cache_ttl(NULL, NULL, "", 0, &ttl, ERR), CH_ERR_INVALID,
	               "a key is required");
	assert_refused(ch_cache_incr(NULL, NULL, "", 0, 1, &ttl, ERR), CH_ERR_INVALID,
	               "a key is required");
	assert_refused(ch_cache_getdel(NULL, NULL, "", 0, &value, &len, ERR), CH_ERR_INVALID,
	               "a key is required");
	assert_refused(ch_cache_persist(NULL, NULL, "", 0, NULL, ERR), CH_ERR_INVALID,
	               "a key is required");
	/* a good key gets as far as the client */
	assert_refused(ch_cache_get(NULL, NULL, "k", 1, &value, &len, NULL, NULL, ERR),
	               CH_ERR_INVALID, "client is required");
	assert_refused(ch_cache_del(NULL, NULL, "k", 1, NULL, ERR), CH_ERR_INVALID,
	               "client is required");
}

static void put_flags_and_ttls_are_checked(void **state)
{
	(void)state;
	int applied = 7;
	assert_refused(ch_cache_put(NULL, NULL, "k", 1, "v", 1, 0, CH_CACHE_NX | CH_CACHE_XX, NULL,
	                            &applied, ERR),
	               CH_ERR_INVALID, "NX and XX exclude each other");
	assert_int_equal(applied, 0);
	assert_refused(ch_cache_put(NULL, NULL, "k", 1, "v", 1, 1000, CH_CACHE_KEEPTTL, NULL, NULL,
	                            ERR),
	               CH_ERR_INVALID, "KEEPTTL takes no ttl");
	assert_refused(ch_cache_put(NULL, NULL, "k", 1, "v", 1, -1, 0, NULL, NULL, ERR),
	               CH_ERR_INVALID, "ttl_ms is negative");
	assert_refused(ch_cache_put(NULL, NULL, "k", 1, "v", 1, 0, 16u, NULL, NULL, ERR),
	               CH_ERR_INVALID, "unknown put flags 0x10");
	assert_refused(ch_cache_put(NULL, NULL, "k", 1, "v", 1, 0, CH_CACHE_GET, NULL, NULL, ERR),
	               CH_ERR_INVALID, "use ch_cache_getset");
	assert_refused(ch_cache_put(NULL, NULL, "k", 1, NULL, 4, 0, 0, NULL, NULL, ERR),
	               CH_ERR_INVALID, "value is NULL");
	/* an empty value is a value */
	assert_refused(ch_cache_put(NULL, NULL, "k", 1, NULL, 0, 0, CH_CACHE_KEEPTTL, NULL, NULL,
	                            ERR),
	               CH_ERR_INVALID, "client is required");
	void *old = (void *)&old;
	size_t old_len = 3;
	assert_refused(ch_cache_getset(NULL, NULL, "k", 1, "v", 1, 0, CH_CACHE_GET, &old, &old_len,
	                               NULL, ERR),
	               CH_ERR_INVALID, "client is required");
	assert_null(old);
	assert_int_equal(old_len, 0);
	assert_refused(ch_cache_getset(NULL, NULL, "k", 1, "v", 1, 0, 0, NULL, &old_len, NULL, ERR),
	               CH_ERR_INVALID, "old and old_len are required");
	assert_refused(ch_cache_expire(NULL, NULL, "k", 1, 0, &applied, ERR), CH_ERR_INVALID,
	               "expire needs a ttl above 0");
	assert_refused(ch_cache_expire(NULL, NULL, "k", 1, -5, NULL, ERR), CH_ERR_INVALID,
	               "expire needs a ttl above 0");
}

static void options_are_checked(void **state)
{
	(void)state;
	void *value = NULL;
	size_t len = 0;
	struct ch_cache_opts bad_level = { .consistency = 4 };
	assert_refused(ch_cache_get(NULL, &bad_level, "k", 1, &value, &len, NULL, NULL, ERR),
	               CH_ERR_INVALID, "unknown consistency level 4");
	bad_level.consistency = -1;
	assert_refused(ch_cache_dbsize(NULL, &bad_level, &(uint64_t){ 0 }, ERR), CH_ERR_INVALID,
	               "unknown consistency level -1");
	char name[CH_CACHE_NAME_BYTES_MAX + 2];
	memset(name, 'c', sizeof name - 1);
	name[sizeof name - 1] = '\0';
	struct ch_cache_opts long_name = { .cache = name };
	assert_refused(ch_cache_flush(NULL, &long_name, ERR), CH_ERR_INVALID,
	               "a cache name has at most 48 bytes");
	struct ch_cache_stats *st = NULL;
	size_t n = 0;
	assert_refused(ch_cache_stats(NULL, name, &st, &n, ERR), CH_ERR_INVALID,
	               "a cache name has at most 48 bytes");
	name[CH_CACHE_NAME_BYTES_MAX] = '\0'; /* exactly the limit */
	struct ch_cache_opts ok = { .cache = name, .consistency = CH_CACHE_ALL };
	assert_refused(ch_cache_flush(NULL, &ok, ERR), CH_ERR_INVALID, "client is required");
	assert_refused(ch_cache_stats(NULL, NULL, &st, &n, ERR), CH_ERR_INVALID,
	               "client is required");
	assert_refused(ch_cache_stats(NULL, NULL, NULL, &n, ERR), CH_ERR_INVALID,
	               "out and n are required");
}

static void multi_key_calls_check_every_key_and_the_count(void **state)
{
	(void)state;
	const void *keys[3] = { "a", "", "c" };
	size_t lens[3] = { 1, 0, 1 };
	const void *values[3] = { "1", "2", "3" };
	size_t vlens[3] = { 1, 1, 1 };
	struct ch_bytes *out = (struct ch_bytes *)&out;
	assert_refused(ch_cache_mget(NULL, NULL, keys, lens, 3, &out, ERR), CH_ERR_INVALID,
	               "key 1: a key is required");
	assert_null(out);
	size_t written = 9;
	assert_refused(ch_cache_mset(NULL, NULL, keys, lens, values, vlens, 3, 0, &written, ERR),
	               CH_ERR_INVALID, "key 1: a key is required");
	assert_int_equal(written, 0);
	assert_refused(ch_cache_mget(NULL, NULL, keys, lens, (size_t)CH_CACHE_MULTI_KEYS_MAX + 1,
	                             &out, ERR),
	               CH_ERR_INVALID, "at most 65536 in one call");
	assert_refused(ch_cache_mset(NULL, NULL, keys, lens, NULL, vlens, 1, 0, NULL, ERR),
	               CH_ERR_INVALID, "values and value_lens are required");
	/* no keys at all is fine (the fake node's test gets CH_OK for it) */
	assert_refused(ch_cache_mget(NULL, NULL, NULL, NULL, 0, &out, ERR), CH_ERR_INVALID,
	               "client is required");
	assert_refused(ch_cache_mset(NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, &written, ERR),
	               CH_ERR_INVALID, "client is required");
}

static void scan_needs_its_outputs(void **state)
{
	(void)state;
	uint64_t next = 5;
	struct ch_bytes *keys = NULL;
	size_t n = 0;
	assert_refused(ch_cache_scan(NULL, NULL, 0, "*", 10, NULL, &keys, &n, ERR), CH_ERR_INVALID,
	               "next, keys and n are required");
	assert_refused(ch_cache_scan(NULL, NULL, 0, NULL, 0, &next, &keys, &n, ERR), CH_ERR_INVALID,
	               "client is required");
	assert_int_equal(next, 0);
}

static void get_or_compute_checks_its_arguments(void **state)
{
	(void)state;
	void *value = (void *)&value;
	size_t len = 7;
	int computed = 5;
	struct ch_cache_version v = { .hlc = 9 };
	assert_refused(ch_cache_get_or_compute(NULL, NULL, "k", 1, "echo", "p", 1, NULL, 0, NULL,
	                                       &len, &computed, &v, ERR),
	               CH_ERR_INVALID, "value and value_len are required");
	assert_int_equal(len, 0);
	assert_int_equal(computed, 0);
	assert_int_equal(v.hlc, 0);
	assert_refused(ch_cache_get_or_compute(NULL, NULL, "", 0, "echo", "p", 1, NULL, 0, &value,
	                                       &len, NULL, NULL, ERR),
	               CH_ERR_INVALID, "a key is required");
	assert_null(value);
	assert_refused(ch_cache_get_or_compute(NULL, NULL, "k", 1, NULL, "p", 1, NULL, 0, &value,
	                                       &len, NULL, NULL, ERR),
	               CH_ERR_INVALID, "a handler name is required");
	assert_refused(ch_cache_get_or_compute(NULL, NULL, "k", 1, "", "p", 1, NULL, 0, &value,
	                                       &len, NULL, NULL, ERR),
	               CH_ERR_INVALID, "a handler name is required");
	assert_refused(ch_cache_get_or_compute(NULL, NULL, "k", 1, "echo", NULL, 3, NULL, 0, &value,
	                                       &len, NULL, NULL, ERR),
	               CH_ERR_INVALID, "payload is NULL");
	assert_refused(ch_cache_get_or_compute(NULL, NULL, "k", 1, "echo", "p", 1, NULL, -1, &value,
	                                       &len, NULL, NULL, ERR),
	               CH_ERR_INVALID, "ttl_ms is negative");
	struct ch_task_opts keyed = { .key = "mine" };
	assert_refused(ch_cache_get_or_compute(NULL, NULL, "k", 1, "echo", "p", 1, &keyed, 0, &value,
	                                       &len, NULL, NULL, ERR),
	               CH_ERR_INVALID, "task_opts.key is not taken here");
	struct ch_task_opts bad_restart = { .restart = 7 };
	assert_refused(ch_cache_get_or_compute(NULL, NULL, "k", 1, "echo", "p", 1, &bad_restart, 0,
	                                       &value, &len, NULL, NULL, ERR),
	               CH_ERR_INVALID, "unknown restart policy 7");
	struct ch_cache_opts bad_level = { .consistency = 9 };
	assert_refused(ch_cache_get_or_compute(NULL, &bad_level, "k", 1, "echo", "p", 1, NULL, 0,
	                                       &value, &len, NULL, NULL, ERR),
	               CH_ERR_INVALID, "unknown consistency level 9");
	/* an empty payload, NULL outputs that may be NULL: as far as the client */
	assert_refused(ch_cache_get_or_compute(NULL, NULL, "k", 1, "echo", NULL, 0, NULL, 0, &value,
	                                       &len, NULL, NULL, ERR),
	               CH_ERR_INVALID, "client is required");
	assert_string_equal(ch_strerror(CH_ERR_TASK_FAILED), "the task failed");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(consistency_names_round_trip),
		cmocka_unit_test(flags_are_the_wire_numbers),
		cmocka_unit_test(free_functions_take_null_and_partial_arrays),
		cmocka_unit_test(empty_and_null_keys_are_invalid),
		cmocka_unit_test(put_flags_and_ttls_are_checked),
		cmocka_unit_test(options_are_checked),
		cmocka_unit_test(multi_key_calls_check_every_key_and_the_count),
		cmocka_unit_test(scan_needs_its_outputs),
		cmocka_unit_test(get_or_compute_checks_its_arguments),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
