/*
 * tz.c - TZif parsing, POSIX TZ rules, UTC <-> local wall time (see tz.h).
 *
 * The subtle parts:
 *  - RFC 8536 §3.2: before the first transition the offset is type 0's; from
 *    the last transition on, the footer's POSIX rule decides (when there is
 *    one). Files built "slim" (zic -b slim) stop the table at the last rule
 *    change and rely on the footer for every later year; "fat" ones run to
 *    2037. Both give the same answers here.
 *  - A POSIX rule's DST start is written in standard time and its end in
 *    DST (POSIX.1-2017 §8.3 "rule"), so the UTC instant of each subtracts a
 *    different offset. Southern zones (Lord Howe) start DST late in the year
 *    and end it early, so a year's two changes come in either order; the
 *    periods below come from the sorted changes of four consecutive years
 *    and never assume an order.
 *  - Local to UTC (tz_local_resolve) finds every u with u + offset(u) = L by
 *    walking the periods of the UTC window L +- 27 h (|offset| <= 26 h is
 *    checked at parse time): none is a gap, two a repeat.
 */
#include "core/tz.h"

#include "lib/err.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DAY_S 86400
#define HOUR_S 3600
#define UTOFF_ABS_MAX_S (26 * HOUR_S)   /* RFC 8536 §3.2: -89999..93599 */
#define RULE_TIME_ABS_MAX_S (167 * HOUR_S) /* RFC 8536 §3.3.1 */
#define RESOLVE_WINDOW_S (27 * HOUR_S)
#define RESOLVE_PERIODS_MAX 64
#define TZIF_HEADER_BYTES 44u
#define TZIF_CHARS_MAX 65536u
#define TZIF_LEAPS_MAX 4096u

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;
	if ((a % b != 0) && ((a < 0) != (b < 0)))
		q--;
	return q;
}

/* ------------------------------------------------------------------ */
/* civil calendar (H. Hinnant's days_from_civil / civil_from_days)     */

int64_t tz_days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (int64_t)(m > 2 ? m - 3 : m + 9) + 2) / 5 + (int64_t)d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

void tz_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d)
{
	int64_t z = days + 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	*d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
	*m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

unsigned tz_month_days(int64_t y, unsigned m)
{
	static const unsigned char len[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	if (m < 1 || m > 12)
		return 0;
	return len[m - 1] + (m == 2 && is_leap(y) ? 1u : 0u);
}

unsigned tz_weekday(int64_t days)
{
	int64_t w = (days + 4) % 7; /* 1970-01-01 was a Thursday */
	return (unsigned)(w < 0 ? w + 7 : w);
}

/* ------------------------------------------------------------------ */
/* POSIX TZ strings                                                    */

struct cursor {
	const char *s;
	size_t i;
};

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* A zone abbreviation: 3+ letters, or <...> of letters, digits, '+', '-'. */
static bool posix_name(struct cursor *c)
{
	size_t n = 0;
	if (c->s[c->i] == '<') {
		c->i++;
		while (c->s[c->i] != '>') {
			char ch = c->s[c->i];
			if (!(is_alpha(ch) || is_digit(ch) || ch == '+' || ch == '-'))
				return false;
			c->i++;
			n++;
		}
		c->i++;
	} else {
		while (is_alpha(c->s[c->i])) {
			c->i++;
			n++;
		}
	}
	return n >= 3;
}

/* [+-]h[hh][:mm[:ss]], hours at most hours_max. */
static bool posix_hms(struct cursor *c, int hours_max, int32_t *out_s)
{
	int sign = 1;
	if (c->s[c->i] == '+' || c->s[c->i] == '-') {
		sign = c->s[c->i] == '-' ? -1 : 1;
		c->i++;
	}
	int32_t parts[3] = { 0, 0, 0 };
	for (int k = 0; k < 3; k++) {
		if (k > 0) {
			if (c->s[c->i] != ':')
				break;
			c->i++;
		}
		int digits = 0;
		int32_t v = 0;
		while (is_digit(c->s[c->i]) && digits < 3) {
			v = v * 10 + (c->s[c->i] - '0');
			c->i++;
			digits++;
		}
		if (digits == 0 || (k > 0 && (digits != 2 || v > 59)))
			return false;
		parts[k] = v;
	}
	if (parts[0] > hours_max)
		return false;
	*out_s = sign * (parts[0] * HOUR_S + parts[1] * 60 + parts[2]);
	return true;
}

static bool posix_number(struct cursor *c, unsigned max, unsigned *out)
{
	unsigned v = 0;
	int digits = 0;
	while (is_digit(c->s[c->i]) && digits < 4) {
		v = v * 10 + (unsigned)(c->s[c->i] - '0');
		c->i++;
		digits++;
	}
	if (digits == 0 || v > max)
		return false;
	*out = v;
	return true;
}

static bool posix_date(struct cursor *c, struct tz_rule_date *d)
{
	unsigned a, b, w;
	memset(d, 0, sizeof *d);
	if (c->s[c->i] == 'M') {
		c->i++;
		if (!posix_number(c, 12, &a) || a < 1 || c->s[c->i++] != '.' ||
		    !posix_number(c, 5, &b) || b < 1 || c->s[c->i++] != '.' || !posix_number(c, 6, &w))
			return false;
		d->kind = 'M';
		d->month = (uint8_t)a;
		d->week = (uint8_t)b;
		d->wday = (uint8_t)w;
	} else if (c->s[c->i] == 'J') {
		c->i++;
		if (!posix_number(c, 365, &a) || a < 1)
			return false;
		d->kind = 'J';
		d->day = (uint16_t)a;
	} else if (is_digit(c->s[c->i])) {
		if (!posix_number(c, 365, &a))
			return false;
		d->kind = 'N';
		d->day = (uint16_t)a;
	} else {
		return false;
	}
	d->time_s = 2 * HOUR_S;
	if (c->s[c->i] == '/') {
		c->i++;
		if (!posix_hms(c, 167, &d->time_s))
			return false;
	}
	return true;
}

int tz_posix_parse(const char *s, struct tz_posix *out, char *err, size_t err_bytes)
{
	struct cursor c = { s, 0 };
	memset(out, 0, sizeof *out);
	int32_t v;
	if (strlen(s) >= TZ_FOOTER_BYTES_MAX)
		goto bad;
	if (!posix_name(&c) || !posix_hms(&c, 24, &v))
		goto bad;
	out->std_utoff_s = -v; /* POSIX counts west of Greenwich as positive */
	if (s[c.i] == '\0')
		return ERR_OK;
	if (!posix_name(&c))
		goto bad;
	out->has_dst = 1;
	out->dst_utoff_s = out->std_utoff_s + HOUR_S;
	if (s[c.i] != ',' && s[c.i] != '\0') {
		if (!posix_hms(&c, 24, &v))
			goto bad;
		out->dst_utoff_s = -v;
	}
	if (s[c.i] == '\0') {
		/* no rule: the US rule since 2007, as tzcode assumes */
		out->start = (struct tz_rule_date){ 'M', 3, 2, 0, 0, 2 * HOUR_S };
		out->end = (struct tz_rule_date){ 'M', 11, 1, 0, 0, 2 * HOUR_S };
		return ERR_OK;
	}
	if (s[c.i++] != ',' || !posix_date(&c, &out->start) || s[c.i++] != ',' ||
	    !posix_date(&c, &out->end) || s[c.i] != '\0')
		goto bad;
	return ERR_OK;
bad:
	snprintf(err, err_bytes, "bad POSIX TZ string \"%.*s\"", (int)TZ_FOOTER_BYTES_MAX, s);
	return ERR_INVALID;
}

/* The day (days since the epoch) a rule date falls on in year y. */
static int64_t rule_day(const struct tz_rule_date *d, int64_t y)
{
	int64_t jan1 = tz_days_from_civil(y, 1, 1);
	switch (d->kind) {
	case 'J': /* 1-365, February 29 never counted */
		return jan1 + d->day - 1 + (is_leap(y) && d->day >= 60 ? 1 : 0);
	case 'N':
		return jan1 + d->day;
	default: {
		int64_t first = tz_days_from_civil(y, d->month, 1);
		int64_t day = first + (int64_t)((d->wday + 7 - tz_weekday(first)) % 7) +
		              7 * (int64_t)(d->week - 1);
		int64_t end = first + tz_month_days(y, d->month);
		if (day >= end) /* week 5 = the last: one week back is always enough */
			day -= 7;
		return day;
	}
	}
}

struct change {
	int64_t t;
	int64_t year;
	int32_t utoff_after;
	int32_t utoff_before;
};

/* The POSIX rule's changes in years y0..y0+3, sorted by instant (ties: the
 * earlier year's first, so that a DST lasting all year stays on). */
static int posix_changes(const struct tz_posix *p, int64_t y0, struct change out[8])
{
	int n = 0;
	for (int64_t y = y0; y < y0 + 4; y++) {
		out[n++] = (struct change){ rule_day(&p->start, y) * DAY_S + p->start.time_s - p->std_utoff_s,
		                            y, p->dst_utoff_s, p->std_utoff_s };
		out[n++] = (struct change){ rule_day(&p->end, y) * DAY_S + p->end.time_s - p->dst_utoff_s,
		                            y, p->std_utoff_s, p->dst_utoff_s };
	}
	for (int i = 1; i < n; i++) { /* insertion sort of 8 */
		struct change x = out[i];
		int j = i - 1;
		while (j >= 0 && (out[j].t > x.t || (out[j].t == x.t && out[j].year > x.year))) {
			out[j + 1] = out[j];
			j--;
		}
		out[j + 1] = x;
	}
	return n;
}

/* The footer's period at u (ignoring the table). */
static void posix_period(const struct tz_posix *p, int64_t u, struct tz_period *out)
{
	if (!p->has_dst) {
		*out = (struct tz_period){ INT64_MIN, INT64_MAX, p->std_utoff_s, p->std_utoff_s };
		return;
	}
	int64_t y;
	unsigned m, d;
	tz_civil_from_days(floor_div(u + p->std_utoff_s, DAY_S), &y, &m, &d);
	struct change ch[8];
	int n = posix_changes(p, y - 2, ch);
	int cur = -1;
	for (int i = 0; i < n; i++)
		if (ch[i].t <= u)
			cur = i;
	/* years y-2 and y-1 are wholly before u, so cur >= 1 and cur+1 < n */
	if (cur < 0 || cur + 1 >= n) {
		*out = (struct tz_period){ INT64_MIN, INT64_MAX, p->std_utoff_s, p->std_utoff_s };
		return;
	}
	out->start_s = ch[cur].t;
	out->utoff_s = ch[cur].utoff_after;
	out->prev_utoff_s = ch[cur].utoff_before;
	out->end_s = ch[cur + 1].t;
}

/* ------------------------------------------------------------------ */
/* periods                                                             */

void tz_period_at(const struct tz *z, int64_t u, struct tz_period *p)
{
	uint32_t n = z->transition_count;
	if (z->has_footer && (n == 0 || u >= z->trans_s[n - 1])) {
		posix_period(&z->footer, u, p);
		if (n > 0 && p->start_s <= z->trans_s[n - 1]) {
			p->start_s = z->trans_s[n - 1];
			p->prev_utoff_s = n >= 2 ? z->trans_utoff_s[n - 2] : z->first_utoff_s;
		}
		return;
	}
	/* the last transition <= u, by binary search: lo = count of them */
	uint32_t lo = 0, hi = n;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (z->trans_s[mid] <= u)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0) {
		p->start_s = INT64_MIN;
		p->utoff_s = z->first_utoff_s;
		p->prev_utoff_s = z->first_utoff_s;
	} else {
		p->start_s = z->trans_s[lo - 1];
		p->utoff_s = z->trans_utoff_s[lo - 1];
		p->prev_utoff_s = lo >= 2 ? z->trans_utoff_s[lo - 2] : z->first_utoff_s;
	}
	/* past the table there is no footer here (that took the branch above) */
	p->end_s = lo < n ? z->trans_s[lo] : INT64_MAX;
}

int32_t tz_utoff_at(const struct tz *z, int64_t utc_s)
{
	struct tz_period p;
	tz_period_at(z, utc_s, &p);
	return p.utoff_s;
}

void tz_local_resolve(const struct tz *z, int64_t local_s, struct tz_local *out)
{
	int64_t sol[2];
	int sol_count = 0;
	int64_t gap_at = INT64_MIN;
	int64_t u = local_s - RESOLVE_WINDOW_S;
	for (int i = 0; i < RESOLVE_PERIODS_MAX; i++) {
		struct tz_period p;
		tz_period_at(z, u, &p);
		int64_t cand = local_s - p.utoff_s;
		if (cand >= p.start_s && cand < p.end_s) {
			if (sol_count < 2)
				sol[sol_count++] = cand;
			else
				sol[1] = cand; /* three or more: keep the first and last */
		}
		if (gap_at == INT64_MIN && p.start_s != INT64_MIN && p.start_s + p.prev_utoff_s <= local_s &&
		    local_s < p.start_s + p.utoff_s)
			gap_at = p.start_s;
		if (p.end_s == INT64_MAX || p.end_s > local_s + RESOLVE_WINDOW_S)
			break;
		u = p.end_s;
	}
	if (sol_count == 0) {
		out->kind = TZ_LOCAL_GAP;
		/* gap_at is always found for a real gap; the fallback keeps
		 * a malformed zone from returning garbage */
		out->first_s = gap_at != INT64_MIN ? gap_at : local_s - tz_utoff_at(z, local_s);
		out->second_s = out->first_s;
	} else if (sol_count == 1) {
		out->kind = TZ_LOCAL_UNIQUE;
		out->first_s = out->second_s = sol[0];
	} else {
		out->kind = TZ_LOCAL_REPEAT;
		out->first_s = sol[0];
		out->second_s = sol[1];
	}
}

/* ------------------------------------------------------------------ */
/* TZif (RFC 8536)                                                     */

static const struct tz utc_zone = {
	.name = "UTC",
	.transition_count = 0,
	.first_utoff_s = 0,
	.has_footer = 1,
	.footer = { .std_utoff_s = 0, .dst_utoff_s = 0, .has_dst = 0 },
};

const struct tz *tz_utc(void)
{
	return &utc_zone;
}

void tz_free(struct tz *z)
{
	if (z == NULL || z == &utc_zone)
		return;
	free(z->trans_s);
	free(z->trans_utoff_s);
	free(z);
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64s(const uint8_t *p)
{
	uint64_t v = (uint64_t)be32(p) << 32 | be32(p + 4);
	return (int64_t)v;
}

struct tzif_counts {
	uint32_t isut, isstd, leap, time, type, chars;
};

/* The header at buf[off]; 0 or -1 (message in err). */
static int tzif_header(const uint8_t *buf, size_t len, size_t off, struct tzif_counts *c,
                       uint8_t *version, const char *name, char *err, size_t err_bytes)
{
	if (len - off < TZIF_HEADER_BYTES || memcmp(buf + off, "TZif", 4) != 0) {
		snprintf(err, err_bytes, "time zone \"%s\": not a TZif file", name);
		return -1;
	}
	*version = buf[off + 4];
	if (*version != 0 && *version != '2' && *version != '3' && *version != '4') {
		snprintf(err, err_bytes, "time zone \"%s\": unknown TZif version 0x%02x", name, *version);
		return -1;
	}
	const uint8_t *p = buf + off + 20;
	c->isut = be32(p);
	c->isstd = be32(p + 4);
	c->leap = be32(p + 8);
	c->time = be32(p + 12);
	c->type = be32(p + 16);
	c->chars = be32(p + 20);
	if (c->time > TZ_TRANSITIONS_MAX || c->type == 0 || c->type > TZ_TYPES_MAX ||
	    c->chars > TZIF_CHARS_MAX || c->leap > TZIF_LEAPS_MAX ||
	    (c->isut != 0 && c->isut != c->type) || (c->isstd != 0 && c->isstd != c->type)) {
		snprintf(err, err_bytes, "time zone \"%s\": TZif counts out of range", name);
		return -1;
	}
	return 0;
}

static uint64_t tzif_block_bytes(const struct tzif_counts *c, unsigned time_bytes)
{
	return (uint64_t)c->time * time_bytes + c->time + (uint64_t)c->type * 6 + c->chars +
	       (uint64_t)c->leap * (time_bytes + 4) + c->isstd + c->isut;
}

int tz_parse(const uint8_t *buf, size_t len, const char *name, struct tz **out, char *err,
             size_t err_bytes)
{
	*out = NULL;
	struct tzif_counts c;
	uint8_t version;
	if (tzif_header(buf, len, 0, &c, &version, name, err, err_bytes) != 0)
		return ERR_INVALID;
	size_t off = TZIF_HEADER_BYTES;
	unsigned time_bytes = 4;
	uint64_t block = tzif_block_bytes(&c, 4);
	if (block > len - off)
		goto truncated;
	if (version != 0) {
		/* skip the v1 block: the v2+ header and its 64-bit data follow */
		off += (size_t)block;
		uint8_t v2;
		if (tzif_header(buf, len, off, &c, &v2, name, err, err_bytes) != 0)
			return ERR_INVALID;
		off += TZIF_HEADER_BYTES;
		time_bytes = 8;
		block = tzif_block_bytes(&c, 8);
		if (block > len - off)
			goto truncated;
	}
	if (c.leap != 0) {
		snprintf(err, err_bytes, "time zone \"%s\": leap-second zones are not supported", name);
		return ERR_INVALID;
	}
	const uint8_t *times = buf + off;
	const uint8_t *idx = times + (size_t)c.time * time_bytes;
	const uint8_t *types = idx + c.time;
	int32_t utoff[TZ_TYPES_MAX];
	for (uint32_t i = 0; i < c.type; i++) {
		int32_t v = (int32_t)be32(types + 6 * i);
		if (v < -UTOFF_ABS_MAX_S || v > UTOFF_ABS_MAX_S) {
			snprintf(err, err_bytes, "time zone \"%s\": UTC offset %ld s out of range", name,
			         (long)v);
			return ERR_INVALID;
		}
		utoff[i] = v;
	}
	struct tz *z = calloc(1, sizeof *z);
	if (z == NULL)
		goto nomem;
	snprintf(z->name, sizeof z->name, "%s", name);
	z->first_utoff_s = utoff[0];
	if (c.time > 0) {
		z->trans_s = malloc(sizeof(int64_t) * c.time);
		z->trans_utoff_s = malloc(sizeof(int32_t) * c.time);
		if (z->trans_s == NULL || z->trans_utoff_s == NULL) {
			tz_free(z);
			goto nomem;
		}
	}
	for (uint32_t i = 0; i < c.time; i++) {
		int64_t t = time_bytes == 8 ? be64s(times + 8 * i) : (int64_t)(int32_t)be32(times + 4 * i);
		if (idx[i] >= c.type || (i > 0 && t <= z->trans_s[i - 1])) {
			snprintf(err, err_bytes, "time zone \"%s\": bad transition %u", name, i);
			tz_free(z);
			return ERR_INVALID;
		}
		z->trans_s[i] = t;
		z->trans_utoff_s[i] = utoff[idx[i]];
	}
	z->transition_count = c.time;
	off += (size_t)block;
	if (version != 0) {
		/* footer: "\n" POSIX-TZ "\n"; empty means none */
		if (off >= len || buf[off] != '\n')
			goto bad_footer;
		size_t start = off + 1, end = start;
		while (end < len && buf[end] != '\n' && end - start < TZ_FOOTER_BYTES_MAX)
			end++;
		if (end >= len || buf[end] != '\n')
			goto bad_footer;
		if (end > start) {
			char tzs[TZ_FOOTER_BYTES_MAX + 1];
			memcpy(tzs, buf + start, end - start);
			tzs[end - start] = '\0';
			char why[TZ_ERR_BYTES];
			if (tz_posix_parse(tzs, &z->footer, why, sizeof why) != 0) {
				snprintf(err, err_bytes, "time zone \"%s\": %s", name, why);
				tz_free(z);
				return ERR_INVALID;
			}
			z->has_footer = 1;
		}
	}
	*out = z;
	return ERR_OK;
bad_footer:
	snprintf(err, err_bytes, "time zone \"%s\": bad TZif footer", name);
	tz_free(z);
	return ERR_INVALID;
truncated:
	snprintf(err, err_bytes, "time zone \"%s\": TZif file is truncated", name);
	return ERR_INVALID;
nomem:
	snprintf(err, err_bytes, "time zone \"%s\": out of memory", name);
	return ERR_NOMEM;
}

/* ------------------------------------------------------------------ */
/* ISO 8601                                                            */

void tz_format_iso8601(int64_t utc_s, int32_t utoff_s, char *buf, size_t buf_bytes)
{
	int64_t local = utc_s + utoff_s;
	int64_t days = floor_div(local, DAY_S);
	int64_t sod = local - days * DAY_S;
	int64_t y;
	unsigned m, d;
	tz_civil_from_days(days, &y, &m, &d);
	int32_t a = utoff_s < 0 ? -utoff_s : utoff_s;
	char off[16];
	if (a % 60 != 0) /* local mean time before 1900: ISO has no seconds here */
		snprintf(off, sizeof off, "%c%02d:%02d:%02d", utoff_s < 0 ? '-' : '+', (int)(a / 3600),
		         (int)(a / 60 % 60), (int)(a % 60));
	else
		snprintf(off, sizeof off, "%c%02d:%02d", utoff_s < 0 ? '-' : '+', (int)(a / 3600),
		         (int)(a / 60 % 60));
	snprintf(buf, buf_bytes, "%04lld-%02u-%02uT%02d:%02d:%02d%s", (long long)y, m, d,
	         (int)(sod / 3600), (int)(sod / 60 % 60), (int)(sod % 60), off);
}

/* Exactly n digits at *p. */
static bool digits_n(const char **p, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (!is_digit((*p)[i]))
			return false;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*out = v;
	return true;
}

int tz_parse_iso8601(const char *s, const struct tz *z, int64_t *utc_s, char *err,
                     size_t err_bytes)
{
	const char *p = s;
	int y, mo, d, h, mi, sec = 0;
	if (!digits_n(&p, 4, &y) || *p++ != '-' || !digits_n(&p, 2, &mo) || *p++ != '-' ||
	    !digits_n(&p, 2, &d) || (*p != 'T' && *p != 't' && *p != ' '))
		goto bad;
	p++;
	if (!digits_n(&p, 2, &h) || *p++ != ':' || !digits_n(&p, 2, &mi))
		goto bad;
	if (*p == ':') {
		p++;
		if (!digits_n(&p, 2, &sec))
			goto bad;
	}
	if (y < TZ_YEAR_MIN || mo < 1 || mo > 12 || d < 1 || (unsigned)d > tz_month_days(y, (unsigned)mo) ||
	    h > 23 || mi > 59 || sec > 59)
		goto bad;
	int64_t local = tz_days_from_civil(y, (unsigned)mo, (unsigned)d) * DAY_S + h * HOUR_S + mi * 60 + sec;
	if (*p == '\0') {
		struct tz_local r;
		tz_local_resolve(z, local, &r);
		*utc_s = r.first_s;
		return ERR_OK;
	}
	if ((*p == 'Z' || *p == 'z') && p[1] == '\0') {
		*utc_s = local;
		return ERR_OK;
	}
	if (*p != '+' && *p != '-')
		goto bad;
	int sign = *p++ == '-' ? -1 : 1;
	int oh, om;
	if (!digits_n(&p, 2, &oh))
		goto bad;
	if (*p == ':')
		p++;
	if (!digits_n(&p, 2, &om) || *p != '\0' || oh > 23 || om > 59)
		goto bad;
	*utc_s = local - sign * (oh * HOUR_S + om * 60);
	return ERR_OK;
bad:
	snprintf(err, err_bytes, "\"%.*s\" is not an ISO-8601 time like 2026-03-08T01:30:00-05:00", 48, s);
	return ERR_INVALID;
}
