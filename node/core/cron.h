/*
 * cron.h - cron expressions: parsing and the next fire time in a time zone.
 *
 * Owns the parsed form of one expression (struct cron_expr, a plain value:
 * no pointers, copy it freely) and the search for the first fire time after
 * an instant. Pure: no clock, no files, no getenv, never the TZ variable;
 * zones come in as parsed struct tz (core/tz.h).
 *
 * Syntax (docs/design.md "Cron expressions and time zones"):
 *   5 fields   minute hour day-of-month month day-of-week
 *   6 fields   second minute hour day-of-month month day-of-week
 *   each field: a comma list of items: '*', N, A-B, and the steps
 *   '*' + "/S", A-B/S and A/S (A/S means A-max/S);
 *   months JAN-DEC and weekdays SUN-SAT by name (any case); 0 and 7 = Sunday;
 *   day-of-month: L = the last day of the month;
 *   day-of-week: D#N = the Nth weekday D of the month (N 1-5), DL = the last
 *   weekday D of the month (5L = the last Friday).
 *   W (nearest weekday) and ? are refused with a message.
 *   macros: @yearly @annually @monthly @weekly @daily @midnight @hourly,
 *   @every DURATION (1s to 366d, units d h m s combined: 90s, 1h30m).
 *
 * Day matching follows Vixie cron: when both day-of-month and day-of-week
 * are restricted (neither field starts with '*'), a day matches if either
 * matches; otherwise both must.
 *
 * DST follows cronie (cron(8), "Daylight Saving Time"): see cron_next.
 *
 * Threading: none needed; every function is reentrant.
 */
#ifndef CHORUS_CORE_CRON_H
#define CHORUS_CORE_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/tz.h"

#define CRON_EXPR_BYTES_MAX 256u
#define CRON_ERR_BYTES 160u
#define CRON_EVERY_S_MIN 1
#define CRON_EVERY_S_MAX (366 * 86400)
/* The search never looks further than one 400-year Gregorian cycle (plus a
 * year): the calendar repeats after it, so a day pattern that did not match
 * in it never will. */
#define CRON_SEARCH_DAYS_MAX (146097 + 366)
/* Instants cron_next accepts and returns: 1900-01-01 to 9999-12-31 UTC. */
#define CRON_TIME_MIN_S (-2208988800LL)
#define CRON_TIME_MAX_S (253402300799LL)

enum cron_kind {
	CRON_KIND_FIELDS = 0, /* the five or six fields (macros other than @every too) */
	CRON_KIND_EVERY = 1   /* @every DURATION: a fixed interval of elapsed time */
};

struct cron_expr {
	enum cron_kind kind;
	int64_t every_s;       /* CRON_KIND_EVERY */
	uint64_t second_bits;  /* bit s: second s (only bit 0 for 5 fields) */
	uint64_t minute_bits;
	uint32_t hour_bits;
	uint32_t dom_bits;     /* bit d: day d, 1-31 */
	uint16_t month_bits;   /* bit m: month m, 1-12 */
	uint8_t dow_bits;      /* bit w: weekday w, 0 = Sunday */
	uint8_t dow_last_bits; /* bit w: the last weekday w of the month (wL) */
	uint8_t dow_nth[7];    /* bit n: the nth weekday w of the month (w#n), n 1-5 */
	bool dom_last;         /* L in day-of-month */
	bool dom_star, dow_star; /* the field starts with '*' (Vixie's rule) */
	bool wildcard;         /* minute or hour starts with '*' (cronie's DST rule) */
	bool has_seconds;
};

/* Parses text. 0, or ERR_INVALID with a message naming the field and the
 * reason in err ("minute: 61 is out of range 0-59"), or for an expression
 * that can match no day at all, "never fires: ...". */
int cron_parse(const char *text, struct cron_expr *out, char *err, size_t err_bytes);

/* The first fire time strictly after after_unix_s, in zone z.
 *
 * Fields are matched against local wall time in z. DST, as cronie does it:
 *  - a wildcard job (minute or hour field starts with '*', and @hourly)
 *    follows the wall clock: it fires at every local time that exists and
 *    matches; local times in a spring-forward gap do not exist, so nothing
 *    fires for them; in a fall-back repeat it fires at each occurrence of a
 *    matching local time (01:30 EDT and then 01:30 EST);
 *  - a fixed-time job (any other: "30 2 * * *", @daily) whose local time
 *    falls in a gap fires once at the first instant after the gap (03:00
 *    when 02:00-03:00 is skipped), however many of its times fall in the gap
 *    (cronie runs each of them then; one occurrence is enough for a cluster);
 *    a matching time that occurs twice fires at its first occurrence only.
 * @every ignores zones: the multiples of every_s since the Unix epoch (use
 * cron_next_every for another anchor).
 *
 * 0 and *next_unix_s; ERR_INVALID when after_unix_s is outside
 * [CRON_TIME_MIN_S, CRON_TIME_MAX_S]; ERR_NOT_FOUND when no fire time comes
 * within CRON_SEARCH_DAYS_MAX days or before CRON_TIME_MAX_S. */
int cron_next(const struct cron_expr *e, const struct tz *z, int64_t after_unix_s,
              int64_t *next_unix_s);

/* @every from an anchor: the first anchor_unix_s + k * every_s (k any
 * integer) strictly after after_unix_s. ERR_INVALID for a non-@every
 * expression or an out-of-range time. */
int cron_next_every(const struct cron_expr *e, int64_t anchor_unix_s, int64_t after_unix_s,
                    int64_t *next_unix_s);

#endif
