/*
 * cron.c - cron expression parser and next-fire-time search (see cron.h).
 *
 * The subtle parts:
 *  - Vixie's day rule (cron(5): "if both fields are restricted (i.e.,
 *    don't start with *), the command will be run when either field matches
 *    the current time"): dom_star and dow_star record whether the field's
 *    text starts with '*', so a step over '*' counts as unrestricted, as in
 *    cronie.
 *  - "never fires" is decided at parse time, exactly: with both day fields
 *    restricted a day always matches somewhere (every month holds every
 *    weekday, and a 5th or last one in some year); otherwise some selected
 *    month must hold a selected day-of-month that can also be a selected
 *    weekday. Every (month, day) date falls on every weekday in some year of
 *    the 400-year Gregorian cycle (February 29 included), so this is exact,
 *    and the search below, bounded by one cycle, always finds what passed.
 *  - cron_next walks the zone's periods of constant UTC offset from the
 *    instant after `after` on. In each, local wall time is UTC + offset, so
 *    the calendar search runs on local seconds and maps back by subtracting
 *    the offset. The DST rule of cron.h is applied at the periods' joins:
 *    a spring-forward join fires a fixed-time job whose time fell in the gap
 *    at the join itself; after a fall-back join, a fixed-time job skips the
 *    local times it already passed before the join.
 *  - Everything is bounded: the calendar search by CRON_SEARCH_DAYS_MAX days
 *    (skipping whole unselected months and unmatched days; within a day it
 *    jumps from one selected hour/minute/second to the next), the walk by
 *    CRON_PERIODS_MAX periods.
 */
#include "core/cron.h"

#include "lib/err.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DAY_S 86400
#define SEARCH_SPAN_S ((int64_t)CRON_SEARCH_DAYS_MAX * DAY_S)
#define CRON_PERIODS_MAX 4096 /* two per year for 401 years, plus history */
#define TOKENS_MAX 8
#define NUMBER_DIGITS_MAX 9

/* ------------------------------------------------------------------ */
/* fields                                                              */

static const char *const month_names[] = { "JAN", "FEB", "MAR", "APR", "MAY", "JUN",
	                                   "JUL", "AUG", "SEP", "OCT", "NOV", "DEC" };
static const char *const dow_names[] = { "SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT" };

struct field_spec {
	const char *name;
	int min, max;
	const char *const *names; /* names[i] is value min + i; NULL = numbers only */
	int name_count;
};

static const struct field_spec spec_second = { "second", 0, 59, NULL, 0 };
static const struct field_spec spec_minute = { "minute", 0, 59, NULL, 0 };
static const struct field_spec spec_hour = { "hour", 0, 23, NULL, 0 };
static const struct field_spec spec_dom = { "day-of-month", 1, 31, NULL, 0 };
static const struct field_spec spec_month = { "month", 1, 12, month_names, 12 };
static const struct field_spec spec_dow = { "day-of-week", 0, 7, dow_names, 7 };

/* One field being parsed: its text, and where errors go. */
struct field {
	const struct field_spec *spec;
	const char *text;
	size_t len;
	char *err;
	size_t err_bytes;
};

__attribute__((format(printf, 2, 3))) static int field_fail(const struct field *f, const char *fmt,
                                                            ...)
{
	int used = snprintf(f->err, f->err_bytes, "%s: ", f->spec->name);
	if (used > 0 && (size_t)used < f->err_bytes) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(f->err + used, f->err_bytes - (size_t)used, fmt, ap);
		va_end(ap);
	}
	return ERR_INVALID;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* A value at s[*i]: a number or (if the field has them) a name. */
static int field_value(const struct field *f, const char *s, size_t n, size_t *i, int *out)
{
	size_t start = *i;
	char tok[CRON_EXPR_BYTES_MAX + 1];
	if (is_digit(s[*i])) {
		while (*i < n && is_digit(s[*i]))
			(*i)++;
		size_t len = *i - start;
		memcpy(tok, s + start, len);
		tok[len] = '\0';
		long v = len > NUMBER_DIGITS_MAX ? -1 : strtol(tok, NULL, 10);
		if (v < f->spec->min || v > f->spec->max)
			return field_fail(f, "%.32s is out of range %d-%d", tok, f->spec->min, f->spec->max);
		*out = (int)v;
		return ERR_OK;
	}
	if (is_alpha(s[*i])) {
		while (*i < n && is_alpha(s[*i]))
			(*i)++;
		size_t len = *i - start;
		memcpy(tok, s + start, len);
		tok[len] = '\0';
		if (f->spec->names == NULL)
			return field_fail(f, "\"%.32s\" is not a number", tok);
		for (int k = 0; k < f->spec->name_count; k++)
			if (strcasecmp(tok, f->spec->names[k]) == 0) {
				*out = f->spec->min + k;
				return ERR_OK;
			}
		return field_fail(f, "unknown name \"%.32s\"", tok);
	}
	if (*i >= n)
		return field_fail(f, "a value is missing in \"%.*s\"", (int)n, s);
	return field_fail(f, "unexpected character '%c'", s[*i]);
}

/* The number after sep ('/' for a step, '#' for the nth weekday), min-max. */
static int field_number(const struct field *f, char sep, const char *s, size_t n, size_t *i, int min,
                        int max, int *out)
{
	size_t start = *i;
	while (*i < n && is_digit(s[*i]))
		(*i)++;
	size_t len = *i - start;
	char tok[CRON_EXPR_BYTES_MAX + 1];
	memcpy(tok, s + start, len);
	tok[len] = '\0';
	if (len == 0)
		return field_fail(f, "a number is missing after '%c'", sep);
	long v = len > NUMBER_DIGITS_MAX ? -1 : strtol(tok, NULL, 10);
	if (v < min || v > max)
		return field_fail(f, "%s%.32s is out of range %d-%d", sep == '/' ? "step " : "#", tok, min,
		                  max);
	*out = (int)v;
	return ERR_OK;
}

static bool has_char(const char *s, size_t n, char c)
{
	return memchr(s, c, n) != NULL;
}

/* One list item of the day-of-week field with '#' or a trailing 'L'. */
static int dow_special(const struct field *f, const char *s, size_t n, struct cron_expr *e)
{
	size_t i = 0;
	int w;
	if (n > 0 && s[0] == '*')
		return field_fail(f, "# and L need one weekday before them (e.g. 5#2, FRI#2, 5L)");
	if (n == 1 && (s[0] == 'L' || s[0] == 'l'))
		return field_fail(f, "L needs a weekday before it (5L is the last Friday)");
	bool last = s[n - 1] == 'L' || s[n - 1] == 'l';
	/* "FRIL": the name is the text before the L */
	int rc = field_value(f, s, last ? n - 1 : n, &i, &w);
	if (rc != ERR_OK)
		return rc;
	w %= 7;
	if (last && i + 1 == n) {
		e->dow_last_bits |= (uint8_t)(1u << w);
		return ERR_OK;
	}
	if (i < n && s[i] == '#') {
		i++;
		int nth;
		rc = field_number(f, '#', s, n, &i, 1, 5, &nth);
		if (rc != ERR_OK)
			return rc;
		if (i != n)
			return field_fail(f, "unexpected text after #%d", nth);
		e->dow_nth[w] |= (uint8_t)(1u << nth);
		return ERR_OK;
	}
	return field_fail(f, "# and L take one weekday, no range or step (e.g. 5#2, 5L)");
}

/* Parses one field into bits (bit v = value v). */
static int field_parse(const struct field *f, uint64_t *bits, struct cron_expr *e)
{
	const char *s = f->text;
	size_t n = f->len;
	*bits = 0;
	size_t pos = 0;
	for (size_t items = 0; pos <= n && items < CRON_EXPR_BYTES_MAX; items++) {
		size_t end = pos;
		while (end < n && s[end] != ',')
			end++;
		const char *it = s + pos;
		size_t len = end - pos;
		char item[CRON_EXPR_BYTES_MAX + 1];
		memcpy(item, it, len);
		item[len] = '\0';
		if (len == 0) {
			snprintf(f->err, f->err_bytes, "%s: empty item in the list \"%.*s\"", f->spec->name,
			         (int)n, s);
			return ERR_INVALID;
		}
		if (has_char(it, len, 'W') || has_char(it, len, 'w')) {
			if (f->spec == &spec_dom)
				return field_fail(f, "W (nearest weekday) is not supported");
		}
		if (has_char(it, len, '?'))
			return field_fail(f, "? is not supported (use *)");
		if (f->spec == &spec_dom && (it[0] == 'L' || it[0] == 'l')) {
			if (len != 1)
				return field_fail(f, "L stands alone (the last day of the month), got \"%.32s\"",
				                  item);
			e->dom_last = true;
			pos = end + 1;
			if (end >= n)
				break;
			continue;
		}
		if (f->spec == &spec_dow &&
		    (has_char(it, len, '#') || (len >= 1 && (it[len - 1] == 'L' || it[len - 1] == 'l') &&
		                                 (len == 1 || is_digit(it[len - 2]) || len == 4)))) {
			int rc = dow_special(f, it, len, e);
			if (rc != ERR_OK)
				return rc;
			pos = end + 1;
			if (end >= n)
				break;
			continue;
		}
		int lo, hi, step = 1;
		size_t i = 0;
		bool star = false, ranged = false;
		if (it[0] == '*') {
			star = true;
			lo = f->spec->min;
			hi = f->spec->max;
			i = 1;
		} else {
			int rc = field_value(f, it, len, &i, &lo);
			if (rc != ERR_OK)
				return rc;
			hi = lo;
			if (i < len && it[i] == '-') {
				i++;
				ranged = true;
				rc = field_value(f, it, len, &i, &hi);
				if (rc != ERR_OK)
					return rc;
				if (hi < lo)
					return field_fail(f, "range %d-%d goes backwards", lo, hi);
			}
		}
		if (i < len && it[i] == '/') {
			i++;
			int span = f->spec->max - f->spec->min + 1;
			int rc = field_number(f, '/', it, len, &i, 1, span, &step);
			if (rc != ERR_OK)
				return rc;
			if (!star && !ranged)
				hi = f->spec->max; /* A/S: from A to the end */
		}
		if (i < len)
			return field_fail(f, "unexpected character '%c'", it[i]);
		for (int v = lo; v <= hi; v += step)
			*bits |= (uint64_t)1 << v;
		pos = end + 1;
		if (end >= n)
			break;
	}
	return ERR_OK;
}

/* ------------------------------------------------------------------ */
/* @every and macros                                                   */

static int every_parse(const char *s, int64_t *out, char *err, size_t err_bytes)
{
	int64_t total = 0;
	size_t i = 0, n = strlen(s);
	int parts = 0;
	while (i < n && parts < 8) {
		size_t start = i;
		while (i < n && is_digit(s[i]))
			i++;
		if (i == start || i - start > NUMBER_DIGITS_MAX || i >= n)
			goto bad;
		int64_t v = 0;
		for (size_t k = start; k < i; k++)
			v = v * 10 + (s[k] - '0');
		int64_t unit;
		switch (s[i]) {
		case 'd': unit = DAY_S; break;
		case 'h': unit = 3600; break;
		case 'm': unit = 60; break;
		case 's': unit = 1; break;
		default: goto bad;
		}
		i++;
		total += v * unit; /* <= 8 * 999999999 * 86400: no overflow */
		parts++;
	}
	if (i < n || parts == 0)
		goto bad;
	if (total < CRON_EVERY_S_MIN) {
		snprintf(err, err_bytes, "@every: %s is below the minimum 1s", s);
		return ERR_INVALID;
	}
	if (total > CRON_EVERY_S_MAX) {
		snprintf(err, err_bytes, "@every: %s is above the maximum 366d", s);
		return ERR_INVALID;
	}
	*out = total;
	return ERR_OK;
bad:
	snprintf(err, err_bytes, "@every: \"%s\" is not a duration like 90s, 5m or 1h30m", s);
	return ERR_INVALID;
}

static const struct {
	const char *name;
	const char *fields;
} macros[] = {
	{ "@yearly", "0 0 1 1 *" }, { "@annually", "0 0 1 1 *" }, { "@monthly", "0 0 1 * *" },
	{ "@weekly", "0 0 * * 0" }, { "@daily", "0 0 * * *" },    { "@midnight", "0 0 * * *" },
	{ "@hourly", "0 * * * *" },
};

/* ------------------------------------------------------------------ */
/* never fires                                                         */

static unsigned month_len_max(unsigned m)
{
	return tz_month_days(2000, m); /* a leap year: February has 29 */
}

/* 0, or ERR_INVALID with "never fires: ..." (see the top of the file). */
static int check_fires(const struct cron_expr *e, char *err, size_t err_bytes)
{
	if (!e->dom_star && !e->dow_star)
		return ERR_OK;
	bool dom_any = false;
	for (unsigned m = 1; m <= 12; m++) {
		if (!(e->month_bits >> m & 1u))
			continue;
		unsigned max = month_len_max(m), min = m == 2 ? 28 : max;
		for (unsigned d = 1; d <= max; d++) {
			bool dom_ok = (e->dom_bits >> d & 1u) || (e->dom_last && (d == max || d == min));
			if (!dom_ok)
				continue;
			dom_any = true;
			unsigned week = (d - 1) / 7 + 1;
			bool dow_ok = e->dow_bits != 0 || (e->dow_last_bits != 0 && d + 7 > min);
			for (unsigned w = 0; w < 7 && !dow_ok; w++)
				dow_ok = e->dow_nth[w] >> week & 1u;
			if (dow_ok)
				return ERR_OK;
		}
	}
	if (!dom_any) {
		char months[64] = "";
		size_t used = 0;
		for (unsigned m = 1; m <= 12; m++)
			if (e->month_bits >> m & 1u)
				used += (size_t)snprintf(months + used, sizeof months - used, "%s%s",
				                         used ? "," : "", month_names[m - 1]);
		unsigned first = 1;
		while (first < 31 && !(e->dom_bits >> first & 1u))
			first++;
		snprintf(err, err_bytes, "never fires: the selected months (%s) have no day %u", months, first);
	} else {
		snprintf(err, err_bytes,
		         "never fires: no selected day-of-month can be the selected weekday of the month (# or L)");
	}
	return ERR_INVALID;
}

/* ------------------------------------------------------------------ */
/* parse                                                               */

static int parse_fields(const char *tok[], const size_t tok_len[], int count, struct cron_expr *e,
                        char *err, size_t err_bytes)
{
	const struct field_spec *specs6[] = { &spec_second, &spec_minute, &spec_hour,
		                              &spec_dom,    &spec_month,  &spec_dow };
	const struct field_spec *const *specs = count == 6 ? specs6 : specs6 + 1;
	uint64_t bits[6];
	for (int k = 0; k < count; k++) {
		struct field f = { specs[k], tok[k], tok_len[k], err, err_bytes };
		int rc = field_parse(&f, &bits[k], e);
		if (rc != ERR_OK)
			return rc;
	}
	int b = 0;
	e->has_seconds = count == 6;
	e->second_bits = count == 6 ? bits[b++] : 1u;
	e->minute_bits = bits[b++];
	e->hour_bits = (uint32_t)bits[b++];
	e->dom_bits = (uint32_t)bits[b++];
	e->month_bits = (uint16_t)bits[b++];
	uint64_t dow = bits[b];
	e->dow_bits = (uint8_t)((dow | dow >> 7) & 0x7fu); /* 7 is Sunday too */
	const char *dom_text = tok[count - 3], *dow_text = tok[count - 1];
	e->dom_star = dom_text[0] == '*';
	e->dow_star = dow_text[0] == '*';
	e->wildcard = tok[count - 5][0] == '*' || tok[count - 4][0] == '*';
	return check_fires(e, err, err_bytes);
}

int cron_parse(const char *text, struct cron_expr *out, char *err, size_t err_bytes)
{
	memset(out, 0, sizeof *out);
	size_t n = strnlen(text, CRON_EXPR_BYTES_MAX + 1);
	if (n > CRON_EXPR_BYTES_MAX) {
		snprintf(err, err_bytes, "expression: longer than %u bytes", CRON_EXPR_BYTES_MAX);
		return ERR_TOO_LARGE;
	}
	const char *tok[TOKENS_MAX];
	size_t tok_len[TOKENS_MAX];
	int count = 0, seen = 0;
	for (size_t i = 0; i < n;) {
		while (i < n && (text[i] == ' ' || text[i] == '\t'))
			i++;
		if (i >= n)
			break;
		size_t start = i;
		while (i < n && text[i] != ' ' && text[i] != '\t')
			i++;
		if (count < TOKENS_MAX) {
			tok[count] = text + start;
			tok_len[count] = i - start;
			count++;
		}
		seen++;
	}
	if (seen == 0) {
		snprintf(err, err_bytes, "expression: empty");
		return ERR_INVALID;
	}
	if (tok[0][0] == '@') {
		char name[CRON_EXPR_BYTES_MAX + 1];
		memcpy(name, tok[0], tok_len[0]);
		name[tok_len[0]] = '\0';
		if (strcasecmp(name, "@every") == 0) {
			if (seen != 2) {
				snprintf(err, err_bytes, "expression: @every takes one duration, got %d", seen - 1);
				return ERR_INVALID;
			}
			char dur[CRON_EXPR_BYTES_MAX + 1];
			memcpy(dur, tok[1], tok_len[1]);
			dur[tok_len[1]] = '\0';
			out->kind = CRON_KIND_EVERY;
			return every_parse(dur, &out->every_s, err, err_bytes);
		}
		for (size_t k = 0; k < sizeof macros / sizeof macros[0]; k++) {
			if (strcasecmp(name, macros[k].name) != 0)
				continue;
			if (seen != 1) {
				snprintf(err, err_bytes, "expression: %s takes no fields, got %d", macros[k].name,
				         seen - 1);
				return ERR_INVALID;
			}
			return cron_parse(macros[k].fields, out, err, err_bytes);
		}
		if (strcasecmp(name, "@reboot") == 0)
			snprintf(err, err_bytes, "expression: @reboot is not supported (a cluster has no boot)");
		else
			snprintf(err, err_bytes, "expression: unknown macro \"%.*s\"", 32, name);
		return ERR_INVALID;
	}
	if (seen != 5 && seen != 6) {
		snprintf(err, err_bytes, "expression: expected 5 or 6 fields, got %d", seen);
		return ERR_INVALID;
	}
	out->kind = CRON_KIND_FIELDS;
	return parse_fields(tok, tok_len, count, out, err, err_bytes);
}

/* ------------------------------------------------------------------ */
/* search                                                              */

static int next_bit(uint64_t mask, int from, int max)
{
	if (from > max || from >= 64)
		return -1;
	uint64_t m = mask >> from;
	if (m == 0)
		return -1;
	int v = from + __builtin_ctzll(m);
	return v <= max ? v : -1;
}

static bool day_matches(const struct cron_expr *e, int64_t y, unsigned m, unsigned d, unsigned wd)
{
	unsigned len = tz_month_days(y, m);
	bool dom_ok = (e->dom_bits >> d & 1u) || (e->dom_last && d == len);
	bool dow_ok = (e->dow_bits >> wd & 1u) || (e->dow_nth[wd] >> ((d - 1) / 7 + 1) & 1u) ||
	              ((e->dow_last_bits >> wd & 1u) && d + 7 > len);
	if (e->dom_star || e->dow_star)
		return dom_ok && dow_ok;
	return dom_ok || dow_ok;
}

/* The first selected second of the day at or after sod, or -1. */
static int64_t day_first_time(const struct cron_expr *e, int64_t sod)
{
	int h0 = (int)(sod / 3600), m0 = (int)(sod / 60 % 60), s0 = (int)(sod % 60);
	for (int h = next_bit(e->hour_bits, h0, 23); h >= 0; h = next_bit(e->hour_bits, h + 1, 23)) {
		int mfrom = h == h0 ? m0 : 0;
		for (int mi = next_bit(e->minute_bits, mfrom, 59); mi >= 0;
		     mi = next_bit(e->minute_bits, mi + 1, 59)) {
			int s = next_bit(e->second_bits, (h == h0 && mi == m0) ? s0 : 0, 59);
			if (s >= 0)
				return (int64_t)h * 3600 + mi * 60 + s;
		}
	}
	return -1;
}

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;
	if ((a % b != 0) && ((a < 0) != (b < 0)))
		q--;
	return q;
}

/* The first matching local second in [from, limit), into *out. */
static bool local_next(const struct cron_expr *e, int64_t from, int64_t limit, int64_t *out)
{
	int64_t days = floor_div(from, DAY_S);
	int64_t sod = from - days * DAY_S;
	for (int64_t step = 0; step < CRON_SEARCH_DAYS_MAX; step++) {
		if (days * DAY_S >= limit)
			return false;
		int64_t y;
		unsigned m, d;
		tz_civil_from_days(days, &y, &m, &d);
		if (!(e->month_bits >> m & 1u)) {
			/* the whole month is out: on to the 1st of the next */
			days = tz_days_from_civil(m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1, 1);
			sod = 0;
			continue;
		}
		if (day_matches(e, y, m, d, tz_weekday(days))) {
			int64_t t = day_first_time(e, sod);
			if (t >= 0) {
				int64_t w = days * DAY_S + t;
				if (w >= limit)
					return false;
				*out = w;
				return true;
			}
		}
		days++;
		sod = 0;
	}
	return false;
}

int cron_next_every(const struct cron_expr *e, int64_t anchor_unix_s, int64_t after_unix_s,
                    int64_t *next_unix_s)
{
	if (e->kind != CRON_KIND_EVERY || e->every_s < CRON_EVERY_S_MIN ||
	    after_unix_s < CRON_TIME_MIN_S || after_unix_s > CRON_TIME_MAX_S ||
	    anchor_unix_s < CRON_TIME_MIN_S || anchor_unix_s > CRON_TIME_MAX_S)
		return ERR_INVALID;
	int64_t k = floor_div(after_unix_s - anchor_unix_s, e->every_s) + 1;
	int64_t next = anchor_unix_s + k * e->every_s;
	if (next > CRON_TIME_MAX_S)
		return ERR_NOT_FOUND;
	*next_unix_s = next;
	return ERR_OK;
}

int cron_next(const struct cron_expr *e, const struct tz *z, int64_t after_unix_s,
              int64_t *next_unix_s)
{
	assert(e != NULL && z != NULL && next_unix_s != NULL);
	if (e->kind == CRON_KIND_EVERY)
		return cron_next_every(e, 0, after_unix_s, next_unix_s);
	assert(e->second_bits != 0 && e->minute_bits != 0 && e->hour_bits != 0 && e->month_bits != 0);
	if (after_unix_s < CRON_TIME_MIN_S || after_unix_s > CRON_TIME_MAX_S)
		return ERR_INVALID;
	int64_t u = after_unix_s + 1;
	for (int period = 0; period < CRON_PERIODS_MAX; period++) {
		if (u > CRON_TIME_MAX_S || u - after_unix_s > SEARCH_SPAN_S)
			return ERR_NOT_FOUND;
		struct tz_period p;
		tz_period_at(z, u, &p);
		int32_t o = p.utoff_s;
		int64_t w;
		/* spring forward at u: local [u + prev, u + o) never exists; a
		 * fixed-time job due in it fires now, at the first instant after */
		if (!e->wildcard && p.start_s == u && p.prev_utoff_s < o &&
		    local_next(e, u + p.prev_utoff_s, u + o, &w)) {
			*next_unix_s = u;
			return ERR_OK;
		}
		int64_t from = u + o;
		/* after a fall back, local times up to start + prev were seen
		 * before it: a fixed-time job fired at their first occurrence */
		if (!e->wildcard && p.start_s != INT64_MIN && p.prev_utoff_s > o &&
		    from < p.start_s + p.prev_utoff_s)
			from = p.start_s + p.prev_utoff_s;
		int64_t limit = after_unix_s + SEARCH_SPAN_S + o;
		if (p.end_s != INT64_MAX && p.end_s + o < limit)
			limit = p.end_s + o;
		if (from < limit && local_next(e, from, limit, &w)) {
			assert(w >= from && w < limit && w - o > after_unix_s);
			if (w - o > CRON_TIME_MAX_S)
				return ERR_NOT_FOUND;
			*next_unix_s = w - o;
			return ERR_OK;
		}
		if (p.end_s == INT64_MAX)
			return ERR_NOT_FOUND;
		u = p.end_s;
	}
	return ERR_NOT_FOUND;
}
