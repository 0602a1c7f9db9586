/*
 * test_cron.c - cron expressions (core/cron.c), time zones (core/tz.c) and
 * the tzdata reader (io/tzload.c).
 *
 * The DST vectors were computed independently with python3's zoneinfo and a
 * brute-force minute-by-minute evaluator of the rule in cron.h (a scratch
 * script, not part of the build; it also agreed with cron_next on 600
 * random expressions around DST changes in seven zones). Tests that read real
 * zone files skip with one line when /usr/share/zoneinfo is missing; the
 * synthetic TZif tests need no file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/cron.h"
#include "core/tz.h"
#include "io/tzload.h"
#include "lib/err.h"

static struct tzcache *cache;

static int setup(void **state)
{
	(void)state;
	cache = tzcache_new(NULL);
	return cache == NULL ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	tzcache_free(cache);
	cache = NULL;
	return 0;
}

static bool zoneinfo_present(void)
{
	return access(TZLOAD_DIR_DEFAULT "/America/New_York", R_OK) == 0;
}

#define NEED_ZONEINFO()                                                                         \
	do {                                                                                    \
		if (!zoneinfo_present()) {                                                      \
			print_message("skipped: no tzdata at " TZLOAD_DIR_DEFAULT "\n");        \
			skip();                                                                 \
		}                                                                               \
	} while (0)

static const struct tz *zone(const char *name)
{
	const struct tz *z = NULL;
	char err[TZ_ERR_BYTES];
	int rc = tzcache_get(cache, name, &z, err, sizeof err);
	if (rc != 0)
		print_error("%s\n", err);
	assert_int_equal(rc, 0);
	return z;
}

static struct cron_expr parse_ok(const char *text)
{
	struct cron_expr e;
	char err[CRON_ERR_BYTES] = "";
	int rc = cron_parse(text, &e, err, sizeof err);
	if (rc != 0)
		print_error("%s: %s\n", text, err);
	assert_int_equal(rc, 0);
	return e;
}

static int64_t iso(const char *s)
{
	int64_t t;
	char err[TZ_ERR_BYTES];
	assert_int_equal(tz_parse_iso8601(s, tz_utc(), &t, err, sizeof err), 0);
	return t;
}

/* Checks the next fire times of expr in zone after from (ISO with offset). */
static void expect_next(const char *expr, const char *zone_name, const char *from, const char *const *want,
                        int want_count)
{
	struct cron_expr e = parse_ok(expr);
	const struct tz *z = zone(zone_name);
	int64_t t = iso(from);
	for (int i = 0; i < want_count; i++) {
		assert_int_equal(cron_next(&e, z, t, &t), 0);
		char got[TZ_ISO_BYTES];
		tz_format_iso8601(t, tz_utoff_at(z, t), got, sizeof got);
		if (strcmp(got, want[i]) != 0)
			print_error("%s in %s after %s, #%d: want %s got %s\n", expr, zone_name, from, i,
			            want[i], got);
		assert_string_equal(got, want[i]);
	}
}

#define EXPECT(expr, zone, from, ...)                                                          \
	do {                                                                                    \
		const char *const want_[] = { __VA_ARGS__ };                                    \
		expect_next(expr, zone, from, want_, (int)(sizeof want_ / sizeof want_[0]));   \
	} while (0)

/* ------------------------------------------------------------------ */
/* parser                                                              */

static void five_and_six_fields_parse_to_bit_sets(void **state)
{
	(void)state;
	struct cron_expr e = parse_ok("*/15 9-17 1,15 * MON-FRI");
	assert_int_equal(e.kind, CRON_KIND_FIELDS);
	assert_false(e.has_seconds);
	assert_true(e.second_bits == 1u);
	assert_true(e.minute_bits == ((1ull << 0) | (1ull << 15) | (1ull << 30) | (1ull << 45)));
	assert_int_equal(e.hour_bits, 0x3fe00u); /* 9..17 */
	assert_int_equal(e.dom_bits, (1u << 1) | (1u << 15));
	assert_int_equal(e.month_bits, 0x1ffeu);
	assert_int_equal(e.dow_bits, 0x3eu);
	assert_true(e.dow_star == false && e.dom_star == false && e.wildcard == true);

	e = parse_ok("30 10-40/5 2 * * *");
	assert_true(e.has_seconds);
	assert_true(e.second_bits == 1ull << 30);
	uint64_t m = 0;
	for (int v = 10; v <= 40; v += 5)
		m |= 1ull << v;
	assert_true(e.minute_bits == m);
	assert_int_equal(e.hour_bits, 1u << 2);
	assert_false(e.wildcard);

	e = parse_ok("5/20 * * * *"); /* A/S = A-max/S */
	assert_true(e.minute_bits == ((1ull << 5) | (1ull << 25) | (1ull << 45)));
	e = parse_ok("10-10/2 * * * *"); /* a range of one stays one */
	assert_true(e.minute_bits == 1ull << 10);
}

static void names_are_case_insensitive_and_seven_is_sunday(void **state)
{
	(void)state;
	struct cron_expr a = parse_ok("0 0 * jan-Mar,DEC sun,7");
	assert_int_equal(a.month_bits, (1u << 1) | (1u << 2) | (1u << 3) | (1u << 12));
	assert_int_equal(a.dow_bits, 1u);
	struct cron_expr b = parse_ok("0 0 * * 5-7");
	assert_int_equal(b.dow_bits, (1u << 5) | (1u << 6) | 1u);
	struct cron_expr c = parse_ok("0 0 * * 0-7");
	assert_int_equal(c.dow_bits, 0x7fu);
}

static void macros_expand_like_their_fields(void **state)
{
	(void)state;
	static const char *const pairs[][2] = {
		{ "@yearly", "0 0 1 1 *" }, { "@annually", "0 0 1 1 *" }, { "@monthly", "0 0 1 * *" },
		{ "@weekly", "0 0 * * 0" }, { "@daily", "0 0 * * *" },    { "@midnight", "0 0 * * *" },
		{ "@HOURLY", "0 * * * *" },
	};
	for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
		struct cron_expr a = parse_ok(pairs[i][0]), b = parse_ok(pairs[i][1]);
		assert_memory_equal(&a, &b, sizeof a);
	}
	assert_true(parse_ok("@hourly").wildcard);
	assert_false(parse_ok("@daily").wildcard);
}

static void every_takes_durations_within_bounds(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		int64_t s;
	} ok[] = { { "@every 90s", 90 }, { "@every 5m", 300 }, { "@every 1h30m", 5400 },
		   { "@every 1s", 1 },   { "@every 366d", 366 * 86400 }, { "@every 2d1s", 172801 } };
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		struct cron_expr e = parse_ok(ok[i].text);
		assert_int_equal(e.kind, CRON_KIND_EVERY);
		assert_int_equal(e.every_s, ok[i].s);
	}
}

static void bad_input_names_the_field_and_the_reason(void **state)
{
	(void)state;
	static const char *const cases[][2] = {
		{ "61 * * * *", "minute: 61 is out of range 0-59" },
		{ "* 24 * * *", "hour: 24 is out of range 0-23" },
		{ "* * 0 * *", "day-of-month: 0 is out of range 1-31" },
		{ "* * * 13 *", "month: 13 is out of range 1-12" },
		{ "* * * * 8", "day-of-week: 8 is out of range 0-7" },
		{ "60 * * * * *", "second: 60 is out of range 0-59" },
		{ "* * * * FOO", "day-of-week: unknown name \"FOO\"" },
		{ "* * * FOO *", "month: unknown name \"FOO\"" },
		{ "x * * * *", "minute: \"x\" is not a number" },
		{ "* * * *", "expression: expected 5 or 6 fields, got 4" },
		{ "* * * * * * *", "expression: expected 5 or 6 fields, got 7" },
		{ "", "expression: empty" },
		{ "   ", "expression: empty" },
		{ "5-3 * * * *", "minute: range 5-3 goes backwards" },
		{ "*/0 * * * *", "minute: step 0 is out of range 1-60" },
		{ "*/ * * * *", "minute: a number is missing after '/'" },
		{ "1,,2 * * * *", "minute: empty item in the list \"1,,2\"" },
		{ "1-2-3 * * * *", "minute: unexpected character '-'" },
		{ "1% * * * *", "minute: unexpected character '%'" },
		{ "* * 15W * *", "day-of-month: W (nearest weekday) is not supported" },
		{ "* * ? * *", "day-of-month: ? is not supported (use *)" },
		{ "* * L-2 * *", "day-of-month: L stands alone (the last day of the month), got \"L-2\"" },
		{ "* * * * L", "day-of-week: L needs a weekday before it (5L is the last Friday)" },
		{ "* * * * 5#6", "day-of-week: #6 is out of range 1-5" },
		{ "* * * * 1-5L", "day-of-week: # and L take one weekday, no range or step (e.g. 5#2, 5L)" },
		{ "@foo", "expression: unknown macro \"@foo\"" },
		{ "@reboot", "expression: @reboot is not supported (a cluster has no boot)" },
		{ "@daily 1", "expression: @daily takes no fields, got 1" },
		{ "@every", "expression: @every takes one duration, got 0" },
		{ "@every 90", "@every: \"90\" is not a duration like 90s, 5m or 1h30m" },
		{ "@every 5x", "@every: \"5x\" is not a duration like 90s, 5m or 1h30m" },
		{ "@every 0s", "@every: 0s is below the minimum 1s" },
		{ "@every 367d", "@every: 367d is above the maximum 366d" },
		{ "99999999999 * * * *", "minute: 99999999999 is out of range 0-59" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct cron_expr e;
		char err[CRON_ERR_BYTES] = "";
		int rc = cron_parse(cases[i][0], &e, err, sizeof err);
		if (rc != ERR_INVALID || strcmp(err, cases[i][1]) != 0)
			print_error("'%s': want '%s' got %d '%s'\n", cases[i][0], cases[i][1], rc, err);
		assert_int_equal(rc, ERR_INVALID);
		assert_string_equal(err, cases[i][1]);
	}
}

static void an_expression_over_the_length_limit_is_refused(void **state)
{
	(void)state;
	char text[CRON_EXPR_BYTES_MAX + 16];
	memset(text, '1', sizeof text - 1);
	text[sizeof text - 1] = '\0';
	struct cron_expr e;
	char err[CRON_ERR_BYTES];
	assert_int_equal(cron_parse(text, &e, err, sizeof err), ERR_TOO_LARGE);
	assert_string_equal(err, "expression: longer than 256 bytes");
}

static void an_expression_that_never_fires_is_refused_at_parse_time(void **state)
{
	(void)state;
	static const char *const cases[][2] = {
		{ "0 0 30 2 *", "never fires: the selected months (FEB) have no day 30" },
		{ "0 0 30,31 2 *", "never fires: the selected months (FEB) have no day 30" },
		{ "0 0 31 4,6 *", "never fires: the selected months (APR,JUN) have no day 31" },
		{ "0 0 31 2,4,6,9,11 */2", "never fires: the selected months (FEB,APR,JUN,SEP,NOV) have no day 31" },
		{ "0 0 */28 * 1#3",
		  "never fires: no selected day-of-month can be the selected weekday of the month (# or L)" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct cron_expr e;
		char err[CRON_ERR_BYTES] = "";
		assert_int_equal(cron_parse(cases[i][0], &e, err, sizeof err), ERR_INVALID);
		assert_string_equal(err, cases[i][1]);
	}
	/* rare but possible: accepted */
	parse_ok("0 0 29 2 *");
	parse_ok("0 0 31 4,6 1"); /* Vixie: either day field, so every Monday */
	parse_ok("0 0 * 2 1#5");  /* a Monday February 29 */
	parse_ok("0 0 L 2 *");
}

/* ------------------------------------------------------------------ */
/* next fire times (UTC)                                               */

static void month_ends_and_the_last_day(void **state)
{
	(void)state;
	EXPECT("0 0 31 * *", "UTC", "2026-01-31T00:00:00Z", "2026-03-31T00:00:00+00:00",
	       "2026-05-31T00:00:00+00:00", "2026-07-31T00:00:00+00:00");
	EXPECT("0 12 L * *", "UTC", "2026-01-31T12:00:00Z", "2026-02-28T12:00:00+00:00",
	       "2026-03-31T12:00:00+00:00", "2026-04-30T12:00:00+00:00");
	EXPECT("0 0 L 2 *", "UTC", "2027-03-01T00:00:00Z", "2028-02-29T00:00:00+00:00",
	       "2029-02-28T00:00:00+00:00");
	EXPECT("59 23 31 12 *", "UTC", "2026-06-01T00:00:00Z", "2026-12-31T23:59:00+00:00",
	       "2027-12-31T23:59:00+00:00");
}

static void february_29_fires_only_in_leap_years(void **state)
{
	(void)state;
	EXPECT("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z", "2028-02-29T00:00:00+00:00",
	       "2032-02-29T00:00:00+00:00", "2036-02-29T00:00:00+00:00");
	/* 2100 is not a leap year */
	EXPECT("0 0 29 2 *", "UTC", "2096-03-01T00:00:00Z", "2104-02-29T00:00:00+00:00");
	/* the far one: a Monday February 29 (found within the bounded search) */
	EXPECT("0 0 * 2 1#5", "UTC", "2026-01-01T00:00:00Z", "2044-02-29T00:00:00+00:00");
}

static void vixie_day_rule_either_when_both_restricted(void **state)
{
	(void)state;
	/* 2026-01-02 and 01-09 are Fridays: the 13th or any Friday */
	EXPECT("0 0 13 * 5", "UTC", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00+00:00",
	       "2026-01-09T00:00:00+00:00", "2026-01-13T00:00:00+00:00", "2026-01-16T00:00:00+00:00");
	/* day-of-month starts with '*': both must match (odd days that are Fridays) */
	EXPECT("0 0 */2 * 5", "UTC", "2026-01-01T00:00:00Z", "2026-01-09T00:00:00+00:00",
	       "2026-01-23T00:00:00+00:00", "2026-02-13T00:00:00+00:00");
	/* day-of-week is '*': the 13th only */
	EXPECT("0 0 13 * *", "UTC", "2026-01-01T00:00:00Z", "2026-01-13T00:00:00+00:00",
	       "2026-02-13T00:00:00+00:00");
}

static void nth_and_last_weekday(void **state)
{
	(void)state;
	EXPECT("0 9 * * 1#2", "UTC", "2026-01-01T00:00:00Z", "2026-01-12T09:00:00+00:00",
	       "2026-02-09T09:00:00+00:00", "2026-03-09T09:00:00+00:00");
	EXPECT("0 9 * * FRIL", "UTC", "2026-01-01T00:00:00Z", "2026-01-30T09:00:00+00:00",
	       "2026-02-27T09:00:00+00:00", "2026-03-27T09:00:00+00:00");
}

static void six_fields_fire_on_seconds(void **state)
{
	(void)state;
	EXPECT("*/15 * * * * *", "UTC", "2026-01-01T00:00:00Z", "2026-01-01T00:00:15+00:00",
	       "2026-01-01T00:00:30+00:00", "2026-01-01T00:00:45+00:00", "2026-01-01T00:01:00+00:00");
	EXPECT("30 59 23 31 12 *", "UTC", "2026-12-31T23:59:30Z", "2027-12-31T23:59:30+00:00");
	EXPECT("0 0 0 * * *", "UTC", "2026-02-28T00:00:00Z", "2026-03-01T00:00:00+00:00");
}

static void next_is_strictly_after(void **state)
{
	(void)state;
	EXPECT("* * * * *", "UTC", "2026-01-01T00:00:00Z", "2026-01-01T00:01:00+00:00");
	EXPECT("* * * * *", "UTC", "2026-01-01T00:00:59Z", "2026-01-01T00:01:00+00:00");
	EXPECT("0 0 1 1 *", "UTC", "2026-12-31T23:59:59Z", "2027-01-01T00:00:00+00:00");
}

static void every_counts_from_the_epoch_or_an_anchor(void **state)
{
	(void)state;
	struct cron_expr e = parse_ok("@every 90s");
	int64_t t;
	assert_int_equal(cron_next(&e, tz_utc(), 100, &t), 0);
	assert_int_equal(t, 180);
	assert_int_equal(cron_next(&e, tz_utc(), 180, &t), 0);
	assert_int_equal(t, 270);
	assert_int_equal(cron_next(&e, tz_utc(), -1, &t), 0);
	assert_int_equal(t, 0);
	assert_int_equal(cron_next_every(&e, 1000, 1000, &t), 0);
	assert_int_equal(t, 1090);
	assert_int_equal(cron_next_every(&e, 1000, 999, &t), 0);
	assert_int_equal(t, 1000);
	assert_int_equal(cron_next_every(&e, 1000, 100, &t), 0);
	assert_int_equal(t, 190); /* 1000 - 9 * 90 */
	struct cron_expr f = parse_ok("* * * * *");
	assert_int_equal(cron_next_every(&f, 0, 0, &t), ERR_INVALID);
}

static void search_limits_are_errors(void **state)
{
	(void)state;
	struct cron_expr e = parse_ok("0 0 1 1 *");
	int64_t t;
	assert_int_equal(cron_next(&e, tz_utc(), CRON_TIME_MAX_S + 1, &t), ERR_INVALID);
	assert_int_equal(cron_next(&e, tz_utc(), CRON_TIME_MIN_S - 1, &t), ERR_INVALID);
	assert_int_equal(cron_next(&e, tz_utc(), iso("9999-06-01T00:00:00Z"), &t), ERR_NOT_FOUND);
	/* a pattern parse refuses, built by hand: the search still ends */
	struct cron_expr never = parse_ok("0 0 1 * *");
	never.dom_bits = 1u << 30;
	never.month_bits = 1u << 2;
	assert_int_equal(cron_next(&never, tz_utc(), 0, &t), ERR_NOT_FOUND);
}

/* ------------------------------------------------------------------ */
/* DST (real zones)                                                    */

static void new_york_spring_forward_gap(void **state)
{
	(void)state;
	NEED_ZONEINFO();
	/* 2026-03-08 02:00 EST -> 03:00 EDT: a fixed job due in the gap fires
	 * once, at 03:00 EDT */
	EXPECT("30 2 * * *", "America/New_York", "2026-03-07T00:00:00-05:00", "2026-03-07T02:30:00-05:00",
	       "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00");
	/* two times in the gap: still once */
	EXPECT("0,30 2 * * *", "America/New_York", "2026-03-08T00:00:00-05:00",
	       "2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00", "2026-03-09T02:30:00-04:00");
	/* a wildcard job follows the wall clock: nothing for 02:00-02:59 */
	EXPECT("*/30 * * * *", "America/New_York", "2026-03-08T01:00:00-05:00",
	       "2026-03-08T01:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00");
	EXPECT("30 * * * *", "America/New_York", "2026-03-08T01:00:00-05:00",
	       "2026-03-08T01:30:00-05:00", "2026-03-08T03:30:00-04:00");
}

static void new_york_fall_back_repeat(void **state)
{
	(void)state;
	NEED_ZONEINFO();
	/* 2026-11-01 02:00 EDT -> 01:00 EST: a fixed job fires at the first
	 * 01:30 only */
	EXPECT("30 1 * * *", "America/New_York", "2026-10-31T00:00:00-04:00", "2026-10-31T01:30:00-04:00",
	       "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00");
	/* asked from inside the repeat, after the first 01:30: not again */
	EXPECT("30 1 * * *", "America/New_York", "2026-11-01T01:10:00-05:00", "2026-11-02T01:30:00-05:00");
	/* a wildcard job fires at each occurrence of a matching wall time */
	EXPECT("*/30 * * * *", "America/New_York", "2026-11-01T00:00:00-04:00",
	       "2026-11-01T00:30:00-04:00", "2026-11-01T01:00:00-04:00", "2026-11-01T01:30:00-04:00",
	       "2026-11-01T01:00:00-05:00", "2026-11-01T01:30:00-05:00", "2026-11-01T02:00:00-05:00");
}

static void london_gap_and_repeat(void **state)
{
	(void)state;
	NEED_ZONEINFO();
	/* 2026-03-29 01:00 GMT -> 02:00 BST */
	EXPECT("30 1 * * *", "Europe/London", "2026-03-28T12:00:00Z", "2026-03-29T02:00:00+01:00",
	       "2026-03-30T01:30:00+01:00");
	/* 2026-10-25 02:00 BST -> 01:00 GMT */
	EXPECT("30 1 * * *", "Europe/London", "2026-10-24T12:00:00Z", "2026-10-25T01:30:00+01:00",
	       "2026-10-26T01:30:00+00:00");
	EXPECT("*/30 1 * * *", "Europe/London", "2026-10-25T00:00:00+01:00", "2026-10-25T01:00:00+01:00",
	       "2026-10-25T01:30:00+01:00", "2026-10-25T01:00:00+00:00", "2026-10-25T01:30:00+00:00",
	       "2026-10-26T01:00:00+00:00");
}

static void lord_howe_half_hour_shift(void **state)
{
	(void)state;
	NEED_ZONEINFO();
	/* zdump: 2026-04-05 02:00 +11 -> 01:30 +1030; 2026-10-04 02:00 +1030
	 * -> 02:30 +11 */
	EXPECT("45 1 * * *", "Australia/Lord_Howe", "2026-04-04T12:00:00Z", "2026-04-05T01:45:00+11:00",
	       "2026-04-06T01:45:00+10:30");
	EXPECT("*/15 * * * *", "Australia/Lord_Howe", "2026-04-05T01:00:00+11:00",
	       "2026-04-05T01:15:00+11:00", "2026-04-05T01:30:00+11:00", "2026-04-05T01:45:00+11:00",
	       "2026-04-05T01:30:00+10:30", "2026-04-05T01:45:00+10:30", "2026-04-05T02:00:00+10:30");
	EXPECT("15 2 * * *", "Australia/Lord_Howe", "2026-10-03T00:00:00Z", "2026-10-04T02:30:00+11:00",
	       "2026-10-05T02:15:00+11:00");
	EXPECT("*/15 * * * *", "Australia/Lord_Howe", "2026-10-04T01:30:00+10:30",
	       "2026-10-04T01:45:00+10:30", "2026-10-04T02:30:00+11:00", "2026-10-04T02:45:00+11:00");
}

static void far_future_uses_the_footer_rule(void **state)
{
	(void)state;
	NEED_ZONEINFO();
	EXPECT("30 2 * * *", "America/New_York", "2100-03-13T12:00:00Z", "2100-03-14T03:00:00-04:00",
	       "2100-03-15T02:30:00-04:00");
	EXPECT("30 1 * * *", "America/New_York", "2100-11-06T12:00:00Z", "2100-11-07T01:30:00-04:00",
	       "2100-11-08T01:30:00-05:00");
	EXPECT("0 3 * * *", "Australia/Lord_Howe", "2076-04-04T12:00:00Z", "2076-04-05T03:00:00+10:30");
	EXPECT("15 2 * * 0", "Australia/Lord_Howe", "2076-10-03T00:00:00Z", "2076-10-04T02:30:00+11:00");
}

/* ------------------------------------------------------------------ */
/* time zones                                                          */

static void posix_footers_parse(void **state)
{
	(void)state;
	struct tz_posix p;
	char err[TZ_ERR_BYTES];
	assert_int_equal(tz_posix_parse("EST5EDT,M3.2.0,M11.1.0", &p, err, sizeof err), 0);
	assert_int_equal(p.std_utoff_s, -5 * 3600);
	assert_int_equal(p.dst_utoff_s, -4 * 3600);
	assert_true(p.has_dst);
	assert_int_equal(p.start.month, 3);
	assert_int_equal(p.start.week, 2);
	assert_int_equal(p.end.month, 11);
	assert_int_equal(p.end.time_s, 7200);
	assert_int_equal(tz_posix_parse("<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", &p, err, sizeof err), 0);
	assert_int_equal(p.std_utoff_s, 10 * 3600 + 1800);
	assert_int_equal(p.dst_utoff_s, 11 * 3600);
	assert_int_equal(tz_posix_parse("<-03>3", &p, err, sizeof err), 0);
	assert_int_equal(p.std_utoff_s, -3 * 3600);
	assert_false(p.has_dst);
	assert_int_equal(tz_posix_parse("IST-2IDT,M3.4.4/26,M10.5.0", &p, err, sizeof err), 0);
	assert_int_equal(p.start.time_s, 26 * 3600);
	assert_int_equal(tz_posix_parse("<-02>2<-01>,M3.5.0/-1,M10.5.0/0", &p, err, sizeof err), 0);
	assert_int_equal(p.start.time_s, -3600);
	assert_int_equal(tz_posix_parse("EST5EDT,M13.1.0,M11.1.0", &p, err, sizeof err), ERR_INVALID);
	assert_string_equal(err, "bad POSIX TZ string \"EST5EDT,M13.1.0,M11.1.0\"");
	assert_int_equal(tz_posix_parse("E5", &p, err, sizeof err), ERR_INVALID);
	assert_int_equal(tz_posix_parse("EST", &p, err, sizeof err), ERR_INVALID);
}

/* A v2 TZif file: no v1 data, the given transitions and footer. */
static size_t tzif_build(uint8_t *buf, size_t cap, char version, const int64_t *times, const uint8_t *idx,
                         uint32_t time_count, const int32_t *utoff, uint32_t type_count,
                         const char *footer)
{
	size_t n = 0;
	memset(buf, 0, cap);
	for (int block = 0; block < 2; block++) {
		bool v2 = block == 1;
		memcpy(buf + n, "TZif", 4);
		buf[n + 4] = (uint8_t)version;
		uint32_t counts[6] = { 0, 0, 0, v2 ? time_count : 0, v2 ? type_count : 1, 4 };
		for (int k = 0; k < 6; k++) {
			uint8_t *p = buf + n + 20 + 4 * k;
			p[0] = (uint8_t)(counts[k] >> 24);
			p[1] = (uint8_t)(counts[k] >> 16);
			p[2] = (uint8_t)(counts[k] >> 8);
			p[3] = (uint8_t)counts[k];
		}
		n += 44;
		if (!v2) {
			n += 6 + 4; /* one zero type, four chars */
			continue;
		}
		for (uint32_t i = 0; i < time_count; i++)
			for (int b = 0; b < 8; b++)
				buf[n++] = (uint8_t)((uint64_t)times[i] >> (56 - 8 * b));
		for (uint32_t i = 0; i < time_count; i++)
			buf[n++] = idx[i];
		for (uint32_t i = 0; i < type_count; i++) {
			uint32_t u = (uint32_t)utoff[i];
			buf[n++] = (uint8_t)(u >> 24);
			buf[n++] = (uint8_t)(u >> 16);
			buf[n++] = (uint8_t)(u >> 8);
			buf[n++] = (uint8_t)u;
			buf[n++] = 0;
			buf[n++] = 0;
		}
		memcpy(buf + n, "LMT", 4);
		n += 4;
	}
	buf[n++] = '\n';
	size_t fl = strlen(footer);
	memcpy(buf + n, footer, fl);
	n += fl;
	buf[n++] = '\n';
	assert_true(n <= cap);
	return n;
}

static void a_footer_only_zone_matches_its_rule(void **state)
{
	(void)state;
	uint8_t buf[512];
	int32_t utoff[1] = { -5 * 3600 };
	size_t n = tzif_build(buf, sizeof buf, '2', NULL, NULL, 0, utoff, 1, "EST5EDT,M3.2.0,M11.1.0");
	struct tz *z;
	char err[TZ_ERR_BYTES];
	assert_int_equal(tz_parse(buf, n, "Test/Footer", &z, err, sizeof err), 0);
	assert_int_equal(tz_utoff_at(z, iso("2026-03-08T06:59:59Z")), -5 * 3600);
	assert_int_equal(tz_utoff_at(z, iso("2026-03-08T07:00:00Z")), -4 * 3600);
	assert_int_equal(tz_utoff_at(z, iso("2026-11-01T05:59:59Z")), -4 * 3600);
	assert_int_equal(tz_utoff_at(z, iso("2026-11-01T06:00:00Z")), -5 * 3600);
	struct tz_local r;
	tz_local_resolve(z, iso("2026-03-08T02:30:00Z"), &r); /* local 02:30: in the gap */
	assert_int_equal(r.kind, TZ_LOCAL_GAP);
	assert_int_equal(r.first_s, iso("2026-03-08T07:00:00Z"));
	tz_local_resolve(z, iso("2026-11-01T01:30:00Z"), &r);
	assert_int_equal(r.kind, TZ_LOCAL_REPEAT);
	assert_int_equal(r.first_s, iso("2026-11-01T05:30:00Z"));
	assert_int_equal(r.second_s, iso("2026-11-01T06:30:00Z"));
	tz_local_resolve(z, iso("2026-07-01T12:00:00Z"), &r);
	assert_int_equal(r.kind, TZ_LOCAL_UNIQUE);
	assert_int_equal(r.first_s, iso("2026-07-01T16:00:00Z"));
	struct cron_expr e = parse_ok("30 2 * * *");
	int64_t t;
	assert_int_equal(cron_next(&e, z, iso("2026-03-07T12:00:00Z"), &t), 0);
	assert_int_equal(t, iso("2026-03-08T07:00:00Z"));
	tz_free(z);
}

static void the_table_and_the_footer_agree(void **state)
{
	(void)state;
	NEED_ZONEINFO();
	/* a slim synthetic New York (footer only) against the real file,
	 * every 6 hours for 20 years */
	uint8_t buf[512];
	int32_t utoff[1] = { -5 * 3600 };
	size_t n = tzif_build(buf, sizeof buf, '3', NULL, NULL, 0, utoff, 1, "EST5EDT,M3.2.0,M11.1.0");
	struct tz *slim;
	char err[TZ_ERR_BYTES];
	assert_int_equal(tz_parse(buf, n, "Slim/New_York", &slim, err, sizeof err), 0);
	const struct tz *real = zone("America/New_York");
	for (int64_t t = iso("2010-01-01T00:00:00Z"); t < iso("2030-01-01T00:00:00Z"); t += 6 * 3600)
		assert_int_equal(tz_utoff_at(real, t), tz_utoff_at(slim, t));
	tz_free(slim);
}

static void transitions_from_a_table(void **state)
{
	(void)state;
	uint8_t buf[512];
	int64_t times[2] = { 1000000, 2000000 };
	uint8_t idx[2] = { 1, 0 };
	int32_t utoff[2] = { 3600, 7200 };
	size_t n = tzif_build(buf, sizeof buf, '2', times, idx, 2, utoff, 2, "");
	struct tz *z;
	char err[TZ_ERR_BYTES];
	assert_int_equal(tz_parse(buf, n, "Test/Table", &z, err, sizeof err), 0);
	assert_int_equal(tz_utoff_at(z, 0), 3600);
	assert_int_equal(tz_utoff_at(z, 999999), 3600);
	assert_int_equal(tz_utoff_at(z, 1000000), 7200);
	assert_int_equal(tz_utoff_at(z, 2000000), 3600);
	struct tz_period p;
	tz_period_at(z, 1500000, &p);
	assert_int_equal(p.start_s, 1000000);
	assert_int_equal(p.end_s, 2000000);
	assert_int_equal(p.prev_utoff_s, 3600);
	tz_period_at(z, 3000000, &p);
	assert_true(p.end_s == INT64_MAX);
	tz_free(z);
}

static void malformed_tzif_is_refused(void **state)
{
	(void)state;
	uint8_t buf[512];
	char err[TZ_ERR_BYTES];
	struct tz *z;
	int32_t utoff[1] = { 0 };
	size_t n = tzif_build(buf, sizeof buf, '2', NULL, NULL, 0, utoff, 1, "UTC0");
	/* every truncation is an error, never a crash */
	for (size_t cut = 0; cut < n; cut++) {
		int rc = tz_parse(buf, cut, "Test/Cut", &z, err, sizeof err);
		assert_int_equal(rc, ERR_INVALID);
	}
	assert_int_equal(tz_parse((const uint8_t *)"hello, world", 12, "Test/Text", &z, err, sizeof err),
	                 ERR_INVALID);
	assert_string_equal(err, "time zone \"Test/Text\": not a TZif file");
	/* out-of-order transitions */
	int64_t times[2] = { 2000, 1000 };
	uint8_t idx[2] = { 0, 0 };
	n = tzif_build(buf, sizeof buf, '2', times, idx, 2, utoff, 1, "");
	assert_int_equal(tz_parse(buf, n, "Test/Order", &z, err, sizeof err), ERR_INVALID);
	assert_string_equal(err, "time zone \"Test/Order\": bad transition 1");
	/* a bad footer */
	n = tzif_build(buf, sizeof buf, '2', NULL, NULL, 0, utoff, 1, "junk");
	assert_int_equal(tz_parse(buf, n, "Test/Footer", &z, err, sizeof err), ERR_INVALID);
	assert_string_equal(err, "time zone \"Test/Footer\": bad POSIX TZ string \"junk\"");
}

static void zone_names_and_unknown_zones(void **state)
{
	(void)state;
	const struct tz *z;
	char err[TZ_ERR_BYTES];
	static const char *const bad[] = { "../etc/passwd", "/etc/passwd", "Europe/../../etc",
		                           "Europe/Lon don", "", "Europe/", "Europe//London",
		                           "America/.hidden", "a;b" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(tzcache_get(cache, bad[i], &z, err, sizeof err), ERR_INVALID);
		assert_non_null(strstr(err, "bad time zone name"));
	}
	char long_name[TZ_NAME_BYTES_MAX + 8];
	memset(long_name, 'a', sizeof long_name - 1);
	long_name[sizeof long_name - 1] = '\0';
	assert_int_equal(tzcache_get(cache, long_name, &z, err, sizeof err), ERR_INVALID);

	/* UTC needs no file at all */
	struct tzcache *empty = tzcache_new("/nonexistent-zoneinfo");
	assert_non_null(empty);
	assert_int_equal(tzcache_get(empty, "UTC", &z, err, sizeof err), 0);
	assert_ptr_equal(z, tz_utc());
	assert_int_equal(tzcache_get(empty, "Mars/Olympus", &z, err, sizeof err), ERR_NOT_FOUND);
	assert_string_equal(err, "unknown time zone \"Mars/Olympus\"");
	tzcache_free(empty);
}

static void real_zones_load_once(void **state)
{
	(void)state;
	NEED_ZONEINFO();
	const struct tz *a = zone("Europe/London"), *b = zone("Europe/London");
	assert_ptr_equal(a, b);
	const struct tz *z;
	char err[TZ_ERR_BYTES];
	assert_int_equal(tzcache_get(cache, "Mars/Olympus", &z, err, sizeof err), ERR_NOT_FOUND);
	assert_string_equal(err, "unknown time zone \"Mars/Olympus\"");
	assert_int_equal(tzcache_get(cache, "America", &z, err, sizeof err), ERR_NOT_FOUND); /* a directory */
	assert_int_equal(tz_utoff_at(zone("Asia/Kolkata"), iso("2026-01-01T00:00:00Z")), 5 * 3600 + 1800);
	assert_int_equal(tz_utoff_at(zone("Australia/Lord_Howe"), iso("2026-01-01T00:00:00Z")), 11 * 3600);
	assert_int_equal(tz_utoff_at(zone("Australia/Lord_Howe"), iso("2026-07-01T00:00:00Z")),
	                 10 * 3600 + 1800);
}

static void iso8601_formats_and_parses(void **state)
{
	(void)state;
	char buf[TZ_ISO_BYTES];
	tz_format_iso8601(0, 0, buf, sizeof buf);
	assert_string_equal(buf, "1970-01-01T00:00:00+00:00");
	tz_format_iso8601(-1, -5 * 3600, buf, sizeof buf);
	assert_string_equal(buf, "1969-12-31T18:59:59-05:00");
	tz_format_iso8601(0, 10 * 3600 + 1800, buf, sizeof buf);
	assert_string_equal(buf, "1970-01-01T10:30:00+10:30");
	tz_format_iso8601(0, -(4 * 3600 + 56 * 60 + 2), buf, sizeof buf);
	assert_string_equal(buf, "1969-12-31T19:03:58-04:56:02");

	assert_int_equal(iso("2026-03-08T03:00:00-04:00"), iso("2026-03-08T07:00:00Z"));
	assert_int_equal(iso("2026-03-08 07:00Z"), iso("2026-03-08T07:00:00Z"));
	assert_int_equal(iso("2026-03-08T12:30:00+0530"), iso("2026-03-08T07:00:00Z"));
	assert_int_equal(iso("2026-03-08T07:00:00"), iso("2026-03-08T07:00:00Z")); /* local in UTC */
	int64_t t;
	char err[TZ_ERR_BYTES];
	static const char *const bad[] = { "2026-02-30T00:00:00Z", "2026-03-08", "2026-03-08T24:00Z",
		                           "tomorrow", "2026-03-08T07:00:00+5", "2026-03-08T07:00:00Zulu" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(tz_parse_iso8601(bad[i], tz_utc(), &t, err, sizeof err), ERR_INVALID);
	assert_string_equal(err,
	                    "\"2026-03-08T07:00:00Zulu\" is not an ISO-8601 time like 2026-03-08T01:30:00-05:00");
}

static void iso8601_local_times_resolve_in_the_zone(void **state)
{
	(void)state;
	NEED_ZONEINFO();
	const struct tz *ny = zone("America/New_York");
	int64_t t;
	char err[TZ_ERR_BYTES];
	assert_int_equal(tz_parse_iso8601("2026-03-08T02:30:00", ny, &t, err, sizeof err), 0);
	assert_int_equal(t, iso("2026-03-08T07:00:00Z")); /* in the gap: its end */
	assert_int_equal(tz_parse_iso8601("2026-11-01T01:30", ny, &t, err, sizeof err), 0);
	assert_int_equal(t, iso("2026-11-01T05:30:00Z")); /* repeated: the first */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(five_and_six_fields_parse_to_bit_sets),
		cmocka_unit_test(names_are_case_insensitive_and_seven_is_sunday),
		cmocka_unit_test(macros_expand_like_their_fields),
		cmocka_unit_test(every_takes_durations_within_bounds),
		cmocka_unit_test(bad_input_names_the_field_and_the_reason),
		cmocka_unit_test(an_expression_over_the_length_limit_is_refused),
		cmocka_unit_test(an_expression_that_never_fires_is_refused_at_parse_time),
		cmocka_unit_test(month_ends_and_the_last_day),
		cmocka_unit_test(february_29_fires_only_in_leap_years),
		cmocka_unit_test(vixie_day_rule_either_when_both_restricted),
		cmocka_unit_test(nth_and_last_weekday),
		cmocka_unit_test(six_fields_fire_on_seconds),
		cmocka_unit_test(next_is_strictly_after),
		cmocka_unit_test(every_counts_from_the_epoch_or_an_anchor),
		cmocka_unit_test(search_limits_are_errors),
		cmocka_unit_test(new_york_spring_forward_gap),
		cmocka_unit_test(new_york_fall_back_repeat),
		cmocka_unit_test(london_gap_and_repeat),
		cmocka_unit_test(lord_howe_half_hour_shift),
		cmocka_unit_test(far_future_uses_the_footer_rule),
		cmocka_unit_test(posix_footers_parse),
		cmocka_unit_test(a_footer_only_zone_matches_its_rule),
		cmocka_unit_test(the_table_and_the_footer_agree),
		cmocka_unit_test(transitions_from_a_table),
		cmocka_unit_test(malformed_tzif_is_refused),
		cmocka_unit_test(zone_names_and_unknown_zones),
		cmocka_unit_test(real_zones_load_once),
		cmocka_unit_test(iso8601_formats_and_parses),
		cmocka_unit_test(iso8601_local_times_resolve_in_the_zone),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
