/* test_resp_cmd.c - the RESP front door's command table and option
 * grammars (node/core/resp_cmd.c): lookups ignore case, arities and key
 * positions are Redis 7's, SET/EXPIRE/SCAN refuse what Redis refuses with
 * its error texts and in its order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/resp.h"
#include "core/resp_cmd.h"

#define NOW_MS 1700000000000LL /* a wall clock reading, ms */

/* Arguments from C strings (no binary needed here). */
struct args {
	struct resp_arg v[16];
	uint32_t n;
};

static struct args mk(const char *first, ...)
{
	struct args a = {0};
	va_list ap;
	va_start(ap, first);
	for (const char *s = first; s; s = va_arg(ap, const char *)) {
		assert_true(a.n < 16);
		a.v[a.n].ptr = s;
		a.v[a.n].len = strlen(s);
		a.n++;
	}
	va_end(ap);
	return a;
}

static struct resp_arg arg(const char *s)
{
	return (struct resp_arg){s, strlen(s)};
}

static void expect_text(struct resp_out *o, const char *want)
{
	size_t n;
	const char *p = resp_out_pending(o, &n);
	if (n != strlen(want) || memcmp(p, want, n) != 0) {
		fprintf(stderr, "want %s\ngot  %.*s\n", want, (int)n, p);
		fail();
	}
	resp_out_consume(o, n);
}

/* ---- the table ---- */

static void commands_are_found_without_case(void **state)
{
	(void)state;
	struct resp_arg a = arg("GeT");
	const struct resp_cmd_info *ci = resp_cmd_lookup(&a);
	assert_non_null(ci);
	assert_string_equal(ci->name, "get");
	assert_int_equal(ci->id, RESP_CMD_GET);
	a = arg("psetex");
	assert_int_equal(resp_cmd_lookup(&a)->id, RESP_CMD_PSETEX);
	a = arg("COMMAND");
	assert_int_equal(resp_cmd_lookup(&a)->id, RESP_CMD_COMMAND);
	const char *unknown[] = {"", "ge", "gett", "hgetall", "keys", "averyveryverylongname"};
	for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
		a = arg(unknown[i]);
		assert_null(resp_cmd_lookup(&a));
	}
	/* a NUL inside the name is not the name */
	struct resp_arg nul = {"get\0x", 5};
	assert_null(resp_cmd_lookup(&nul));
	/* every entry is reachable by its name and sits at its id */
	for (int i = 0; i < RESP_CMD_COUNT_; i++) {
		const struct resp_cmd_info *e = resp_cmd_get((enum resp_cmd_id)i);
		struct resp_arg n = arg(e->name);
		assert_ptr_equal(resp_cmd_lookup(&n), e);
		assert_int_equal(e->id, i);
	}
}

static void arity_is_exact_or_at_least(void **state)
{
	(void)state;
	const struct resp_cmd_info *get = resp_cmd_get(RESP_CMD_GET);
	assert_false(resp_cmd_arity_ok(get, 1));
	assert_true(resp_cmd_arity_ok(get, 2));
	assert_false(resp_cmd_arity_ok(get, 3));
	const struct resp_cmd_info *set = resp_cmd_get(RESP_CMD_SET);
	assert_false(resp_cmd_arity_ok(set, 2));
	assert_true(resp_cmd_arity_ok(set, 3));
	assert_true(resp_cmd_arity_ok(set, 9));
	const struct resp_cmd_info *ping = resp_cmd_get(RESP_CMD_PING);
	assert_true(resp_cmd_arity_ok(ping, 1));
	assert_true(resp_cmd_arity_ok(ping, 2));
	assert_true(resp_cmd_arity_ok(resp_cmd_get(RESP_CMD_DBSIZE), 1));
	assert_false(resp_cmd_arity_ok(resp_cmd_get(RESP_CMD_DBSIZE), 2));
	assert_false(resp_cmd_arity_ok(resp_cmd_get(RESP_CMD_EXPIRE), 2));
}

static void collect(void *arg, uint32_t index)
{
	uint32_t *v = arg;
	v[1 + v[0]++] = index;
}

static void keys_follow_first_last_step(void **state)
{
	(void)state;
	uint32_t got[16] = {0};
	assert_int_equal(resp_cmd_keys(resp_cmd_get(RESP_CMD_GET), 2, collect, got), 1);
	assert_int_equal(got[1], 1);
	memset(got, 0, sizeof got);
	assert_int_equal(resp_cmd_keys(resp_cmd_get(RESP_CMD_DEL), 4, collect, got), 3);
	assert_int_equal(got[1], 1);
	assert_int_equal(got[3], 3);
	memset(got, 0, sizeof got);
	/* MSET k1 v1 k2 v2: the values are not keys */
	assert_int_equal(resp_cmd_keys(resp_cmd_get(RESP_CMD_MSET), 5, collect, got), 2);
	assert_int_equal(got[1], 1);
	assert_int_equal(got[2], 3);
	assert_int_equal(resp_cmd_keys(resp_cmd_get(RESP_CMD_SET), 5, NULL, NULL), 1);
	assert_int_equal(resp_cmd_keys(resp_cmd_get(RESP_CMD_SCAN), 4, NULL, NULL), 0);
	assert_int_equal(resp_cmd_keys(resp_cmd_get(RESP_CMD_PING), 1, NULL, NULL), 0);
	/* flags that order commands */
	assert_true(resp_cmd_get(RESP_CMD_FLUSHDB)->flags & RESP_CMD_F_WHOLE_DB);
	assert_true(resp_cmd_get(RESP_CMD_FLUSHDB)->flags & RESP_CMD_F_WRITE);
	assert_true(resp_cmd_get(RESP_CMD_SCAN)->flags & RESP_CMD_F_READONLY);
	assert_true(resp_cmd_get(RESP_CMD_AUTH)->flags & RESP_CMD_F_NO_AUTH);
	assert_true(resp_cmd_get(RESP_CMD_HELLO)->flags & RESP_CMD_F_NO_AUTH);
	assert_true(resp_cmd_get(RESP_CMD_QUIT)->flags & RESP_CMD_F_NO_AUTH);
	assert_false(resp_cmd_get(RESP_CMD_GET)->flags & RESP_CMD_F_NO_AUTH);
	assert_true(resp_cmd_get(RESP_CMD_EXEC)->flags & RESP_CMD_F_NO_MULTI);
}

/* ---- SET ---- */

static enum resp_cmd_err set_parse(struct args a, struct resp_set_opts *o)
{
	return resp_cmd_set_parse(a.v, a.n, NOW_MS, o);
}

static void set_options_parse_like_redis(void **state)
{
	(void)state;
	struct resp_set_opts o;
	assert_int_equal(set_parse(mk("SET", "k", "v", NULL), &o), RESP_CMD_OK);
	assert_int_equal(o.flags, 0);
	assert_int_equal(o.ttl_ms, 0);
	assert_int_equal(set_parse(mk("set", "k", "v", "nx", "GET", "ex", "10", NULL), &o),
	                 RESP_CMD_OK);
	assert_int_equal(o.flags, RESP_SET_NX | RESP_SET_GET);
	assert_int_equal(o.ttl_ms, 10000);
	assert_int_equal(set_parse(mk("set", "k", "v", "XX", "PX", "1500", NULL), &o), RESP_CMD_OK);
	assert_int_equal(o.flags, RESP_SET_XX);
	assert_int_equal(o.ttl_ms, 1500);
	assert_int_equal(set_parse(mk("set", "k", "v", "KEEPTTL", NULL), &o), RESP_CMD_OK);
	assert_int_equal(o.flags, RESP_SET_KEEPTTL);
	/* a repeated option is allowed, the last value wins */
	assert_int_equal(set_parse(mk("set", "k", "v", "EX", "1", "EX", "2", "NX", "NX", NULL), &o),
	                 RESP_CMD_OK);
	assert_int_equal(o.ttl_ms, 2000);
	/* absolute times */
	char at[32];
	snprintf(at, sizeof at, "%lld", (NOW_MS + 5000) / 1000);
	assert_int_equal(set_parse(mk("set", "k", "v", "EXAT", at, NULL), &o), RESP_CMD_OK);
	assert_int_equal(o.ttl_ms, 5000);
	snprintf(at, sizeof at, "%lld", NOW_MS + 250);
	assert_int_equal(set_parse(mk("set", "k", "v", "pxat", at, NULL), &o), RESP_CMD_OK);
	assert_int_equal(o.ttl_ms, 250);
	/* at or before now: gone at once (1 ms) */
	assert_int_equal(set_parse(mk("set", "k", "v", "PXAT", "1", NULL), &o), RESP_CMD_OK);
	assert_int_equal(o.ttl_ms, 1);
}

static void set_refuses_bad_combinations_with_syntax_error(void **state)
{
	(void)state;
	struct resp_set_opts o;
	const struct args bad[] = {
		mk("set", "k", "v", "NX", "XX", NULL),
		mk("set", "k", "v", "XX", "NX", NULL),
		mk("set", "k", "v", "EX", "1", "PX", "1", NULL),
		mk("set", "k", "v", "PX", "1", "EXAT", "1", NULL),
		mk("set", "k", "v", "EX", "1", "KEEPTTL", NULL),
		mk("set", "k", "v", "KEEPTTL", "PX", "1", NULL),
		mk("set", "k", "v", "EX", NULL),          /* no value */
		mk("set", "k", "v", "FOO", NULL),
		mk("set", "k", "v", "NXX", NULL),
		mk("set", "k", "v", "PERSIST", NULL),     /* GETEX's, not SET's */
		/* the syntax is checked before any number */
		mk("set", "k", "v", "EX", "abc", "NX", "XX", NULL),
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(set_parse(bad[i], &o), RESP_CMD_E_SYNTAX);
}

static void set_times_must_be_positive_integers(void **state)
{
	(void)state;
	struct resp_set_opts o;
	assert_int_equal(set_parse(mk("set", "k", "v", "EX", "abc", NULL), &o),
	                 RESP_CMD_E_NOT_INTEGER);
	assert_int_equal(set_parse(mk("set", "k", "v", "EX", " 1", NULL), &o),
	                 RESP_CMD_E_NOT_INTEGER);
	assert_int_equal(set_parse(mk("set", "k", "v", "EX", "0", NULL), &o), RESP_CMD_E_EXPIRE);
	assert_int_equal(set_parse(mk("set", "k", "v", "PX", "-5", NULL), &o), RESP_CMD_E_EXPIRE);
	/* seconds that overflow in milliseconds */
	assert_int_equal(set_parse(mk("set", "k", "v", "EX", "9223372036854776", NULL), &o),
	                 RESP_CMD_E_EXPIRE);
	/* relative times that overflow once now is added */
	assert_int_equal(set_parse(mk("set", "k", "v", "PX", "9223372036854775807", NULL), &o),
	                 RESP_CMD_E_EXPIRE);
	assert_int_equal(set_parse(mk("set", "k", "v", "EXAT", "0", NULL), &o), RESP_CMD_E_EXPIRE);

	int64_t ttl;
	struct resp_arg a = arg("7");
	assert_int_equal(resp_cmd_ttl_parse(&a, 1000, NOW_MS, &ttl), RESP_CMD_OK);
	assert_int_equal(ttl, 7000);
	assert_int_equal(resp_cmd_ttl_parse(&a, 1, NOW_MS, &ttl), RESP_CMD_OK);
	assert_int_equal(ttl, 7);
	a = arg("0");
	assert_int_equal(resp_cmd_ttl_parse(&a, 1000, NOW_MS, &ttl), RESP_CMD_E_EXPIRE);
	a = arg("x");
	assert_int_equal(resp_cmd_ttl_parse(&a, 1, NOW_MS, &ttl), RESP_CMD_E_NOT_INTEGER);
}

/* ---- EXPIRE ---- */

static void expire_takes_negative_times_but_not_overflows(void **state)
{
	(void)state;
	int64_t ttl;
	struct resp_arg a = arg("100");
	assert_int_equal(resp_cmd_expire_parse(&a, 1000, NOW_MS, &ttl), RESP_CMD_OK);
	assert_int_equal(ttl, 100000);
	a = arg("-3");
	assert_int_equal(resp_cmd_expire_parse(&a, 1000, NOW_MS, &ttl), RESP_CMD_OK);
	assert_int_equal(ttl, -3000); /* the key goes */
	a = arg("0");
	assert_int_equal(resp_cmd_expire_parse(&a, 1, NOW_MS, &ttl), RESP_CMD_OK);
	assert_int_equal(ttl, 0);
	a = arg("9223372036854775807");
	assert_int_equal(resp_cmd_expire_parse(&a, 1000, NOW_MS, &ttl), RESP_CMD_E_EXPIRE);
	assert_int_equal(resp_cmd_expire_parse(&a, 1, NOW_MS, &ttl), RESP_CMD_E_EXPIRE);
	a = arg("-9223372036854775808");
	assert_int_equal(resp_cmd_expire_parse(&a, 1000, NOW_MS, &ttl), RESP_CMD_E_EXPIRE);
	a = arg("1.5");
	assert_int_equal(resp_cmd_expire_parse(&a, 1000, NOW_MS, &ttl), RESP_CMD_E_NOT_INTEGER);
}

/* ---- SCAN ---- */

static void scan_cursor_is_unsigned_decimal(void **state)
{
	(void)state;
	uint64_t c;
	struct resp_arg a = arg("0");
	assert_int_equal(resp_cmd_cursor_parse(&a, &c), RESP_CMD_OK);
	assert_int_equal(c, 0);
	a = arg("18446744073709551615");
	assert_int_equal(resp_cmd_cursor_parse(&a, &c), RESP_CMD_OK);
	assert_true(c == UINT64_MAX);
	const char *bad[] = {"", "18446744073709551616", "-1", "+1", " 1", "1 ", "0x10", "abc",
	                     "123456789012345678901"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		a = arg(bad[i]);
		assert_int_equal(resp_cmd_cursor_parse(&a, &c), RESP_CMD_E_CURSOR);
	}
}

static void scan_options_parse_like_redis(void **state)
{
	(void)state;
	struct resp_scan_opts o;
	struct args a = mk("SCAN", "42", NULL);
	assert_int_equal(resp_cmd_scan_parse(a.v, a.n, &o), RESP_CMD_OK);
	assert_true(o.cursor == 42);
	assert_int_equal(o.count, RESP_SCAN_COUNT_DEFAULT);
	assert_int_equal(o.match.len, 0);
	a = mk("scan", "7", "MATCH", "user:*", "count", "100", "TYPE", "string", NULL);
	assert_int_equal(resp_cmd_scan_parse(a.v, a.n, &o), RESP_CMD_OK);
	assert_int_equal(o.count, 100);
	assert_int_equal(o.match.len, 6);
	assert_memory_equal(o.match.ptr, "user:*", 6);
	assert_false(o.type_other);
	a = mk("scan", "0", "TYPE", "hash", NULL);
	assert_int_equal(resp_cmd_scan_parse(a.v, a.n, &o), RESP_CMD_OK);
	assert_true(o.type_other);
	a = mk("scan", "0", "COUNT", "99999999999", NULL);
	assert_int_equal(resp_cmd_scan_parse(a.v, a.n, &o), RESP_CMD_OK);
	assert_true(o.count == UINT32_MAX);

	a = mk("scan", "0", "COUNT", "0", NULL);
	assert_int_equal(resp_cmd_scan_parse(a.v, a.n, &o), RESP_CMD_E_SYNTAX);
	a = mk("scan", "0", "COUNT", "x", NULL);
	assert_int_equal(resp_cmd_scan_parse(a.v, a.n, &o), RESP_CMD_E_NOT_INTEGER);
	a = mk("scan", "0", "MATCH", NULL);
	assert_int_equal(resp_cmd_scan_parse(a.v, a.n, &o), RESP_CMD_E_SYNTAX);
	a = mk("scan", "0", "LIMIT", "3", NULL);
	assert_int_equal(resp_cmd_scan_parse(a.v, a.n, &o), RESP_CMD_E_SYNTAX);
	/* a garbage cursor is reported before a bad option */
	a = mk("scan", "garbage", "LIMIT", NULL);
	assert_int_equal(resp_cmd_scan_parse(a.v, a.n, &o), RESP_CMD_E_CURSOR);
}

/* ---- the rest ---- */

static void client_names_are_printable_without_blanks(void **state)
{
	(void)state;
	struct resp_arg a = arg("worker-7:a~b");
	assert_true(resp_cmd_client_name_ok(&a));
	a = arg("");
	assert_true(resp_cmd_client_name_ok(&a));
	const char *bad[] = {"two words", "tab\there", "nl\n", "\x7f"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		a = arg(bad[i]);
		assert_false(resp_cmd_client_name_ok(&a));
	}
	struct resp_arg hi = {"\xc3\xa9", 2};
	assert_false(resp_cmd_client_name_ok(&hi));
}

static void errors_use_redis_texts(void **state)
{
	(void)state;
	struct resp_out o;
	resp_out_init(&o, 4096);
	resp_cmd_write_error(&o, RESP_CMD_E_SYNTAX, "set", NULL);
	expect_text(&o, "-ERR syntax error\r\n");
	resp_cmd_write_error(&o, RESP_CMD_E_NOT_INTEGER, "set", NULL);
	expect_text(&o, "-ERR value is not an integer or out of range\r\n");
	resp_cmd_write_error(&o, RESP_CMD_E_EXPIRE, "expire", NULL);
	expect_text(&o, "-ERR invalid expire time in 'expire' command\r\n");
	resp_cmd_write_error(&o, RESP_CMD_E_CURSOR, "scan", NULL);
	expect_text(&o, "-ERR invalid cursor\r\n");
	struct resp_arg gt = arg("GT");
	resp_cmd_write_error(&o, RESP_CMD_E_OPTION, "expire", &gt);
	expect_text(&o, "-ERR Unsupported option GT\r\n");
	resp_out_free(&o);
}

static void command_info_has_redis7_fields(void **state)
{
	(void)state;
	struct resp_out o;
	resp_out_init(&o, 4096);
	resp_cmd_write_info(&o, resp_cmd_get(RESP_CMD_GET));
	expect_text(&o, "*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n"
	                "*0\r\n*0\r\n*0\r\n*0\r\n");
	resp_cmd_write_info(&o, resp_cmd_get(RESP_CMD_MSET));
	expect_text(&o, "*10\r\n$4\r\nmset\r\n:-3\r\n*2\r\n+write\r\n+denyoom\r\n:1\r\n:-1\r\n:2\r\n"
	                "*0\r\n*0\r\n*0\r\n*0\r\n");
	resp_out_free(&o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(commands_are_found_without_case),
		cmocka_unit_test(arity_is_exact_or_at_least),
		cmocka_unit_test(keys_follow_first_last_step),
		cmocka_unit_test(set_options_parse_like_redis),
		cmocka_unit_test(set_refuses_bad_combinations_with_syntax_error),
		cmocka_unit_test(set_times_must_be_positive_integers),
		cmocka_unit_test(expire_takes_negative_times_but_not_overflows),
		cmocka_unit_test(scan_cursor_is_unsigned_decimal),
		cmocka_unit_test(scan_options_parse_like_redis),
		cmocka_unit_test(client_names_are_printable_without_blanks),
		cmocka_unit_test(errors_use_redis_texts),
		cmocka_unit_test(command_info_has_redis7_fields),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
