/*
 * tz.h - IANA time zones from TZif bytes: UTC offsets, and local wall time
 * back to UTC with the DST gap and repeat made explicit.
 *
 * Owns the parsed form of one zone (struct tz): the 64-bit transition table
 * of a TZif file (RFC 8536, versions 1 to 4; the v2+ block when there is one)
 * and its footer, a POSIX TZ string (POSIX.1-2017 §8.3, with RFC 8536 §3.3's
 * extensions: hours -167..167 in rule times) that gives the offset after the
 * last transition, e.g. "EST5EDT,M3.2.0,M11.1.0" or Lord Howe's
 * "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0".
 *
 * Pure: the caller hands over the file's bytes (node/io/tzload.c reads
 * /usr/share/zoneinfo); no files, no clock, no getenv, never the TZ variable
 * or localtime(3), which are process-global and not thread-safe.
 *
 * Times are Unix seconds (int64_t, UTC). A "local" second is the local wall
 * clock written as if it were UTC (local = utc + utoff_s), so calendar maths
 * on it needs no zone. Leap-second zones ("right/...") are refused.
 *
 * Threading: a parsed struct tz is immutable; share it freely.
 */
#ifndef CHORUS_CORE_TZ_H
#define CHORUS_CORE_TZ_H

#include <stddef.h>
#include <stdint.h>

#define TZ_NAME_BYTES_MAX 64u
#define TZ_TRANSITIONS_MAX 8192u   /* real zones hold a few hundred */
#define TZ_TYPES_MAX 256u          /* RFC 8536 §3.1: typecnt <= 256 */
#define TZ_FOOTER_BYTES_MAX 128u
#define TZ_ERR_BYTES 160u          /* a message buffer that fits every message */

/* Years the civil helpers and the POSIX rules accept. */
#define TZ_YEAR_MIN 1
#define TZ_YEAR_MAX 9999

/* The footer's POSIX rule: standard offset, and DST with its two dates. */
struct tz_rule_date {
	uint8_t kind;   /* 'M' month.week.day, 'J' julian 1-365 (no Feb 29), 'N' zero-based 0-365 */
	uint8_t month;  /* 'M': 1-12 */
	uint8_t week;   /* 'M': 1-5, 5 = the last */
	uint8_t wday;   /* 'M': 0 = Sunday */
	uint16_t day;   /* 'J', 'N' */
	int32_t time_s; /* local time of day of the change, -167h..167h */
};

struct tz_posix {
	int32_t std_utoff_s; /* east of UTC is positive (the POSIX text has it negated) */
	int32_t dst_utoff_s;
	uint8_t has_dst;
	struct tz_rule_date start, end; /* DST starts (in standard time), ends (in DST) */
};

struct tz {
	char name[TZ_NAME_BYTES_MAX];
	uint32_t transition_count;
	int64_t *trans_s;        /* ascending; owned */
	int32_t *trans_utoff_s;  /* offset from trans_s[i] on; owned */
	int32_t first_utoff_s;   /* before the first transition (RFC 8536: type 0) */
	uint8_t has_footer;
	struct tz_posix footer;
};

/* A period of constant offset: [start_s, end_s). start_s is INT64_MIN when no
 * transition precedes; end_s is INT64_MAX when none follows. */
struct tz_period {
	int64_t start_s, end_s;
	int32_t utoff_s;
	int32_t prev_utoff_s; /* before start_s (== utoff_s when start_s is INT64_MIN) */
};

/* Parses a TZif file's bytes. name (at most TZ_NAME_BYTES_MAX-1 bytes) is
 * copied for messages. On success *out is a new zone the caller frees with
 * tz_free; on error it returns ERR_INVALID (malformed, leap seconds) or
 * ERR_TOO_LARGE (over a limit) or ERR_NOMEM and writes a message naming the
 * zone to err. */
int tz_parse(const uint8_t *buf, size_t len, const char *name, struct tz **out, char *err,
             size_t err_bytes);
void tz_free(struct tz *z);

/* The UTC zone, built in (no file). Static: never freed. */
const struct tz *tz_utc(void);

/* Parses a POSIX TZ string (the footer form: an offset is required, a rule
 * is required when there is DST). 0 or ERR_INVALID with a message. */
int tz_posix_parse(const char *s, struct tz_posix *out, char *err, size_t err_bytes);

/* The offset in effect at utc_s. */
int32_t tz_utoff_at(const struct tz *z, int64_t utc_s);
/* The period of constant offset that holds utc_s. */
void tz_period_at(const struct tz *z, int64_t utc_s, struct tz_period *p);

/* How a local wall time maps to UTC. */
enum tz_local_kind {
	TZ_LOCAL_UNIQUE = 0, /* one instant: first_s */
	TZ_LOCAL_REPEAT = 1, /* fall-back: twice, first_s then second_s */
	TZ_LOCAL_GAP = 2     /* spring-forward: never; first_s = the transition,
	                        the first instant after the gap */
};
struct tz_local {
	enum tz_local_kind kind;
	int64_t first_s, second_s;
};
void tz_local_resolve(const struct tz *z, int64_t local_s, struct tz_local *out);

/* Calendar helpers (proleptic Gregorian; days since 1970-01-01). */
int64_t tz_days_from_civil(int64_t y, unsigned m, unsigned d);
void tz_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d);
unsigned tz_month_days(int64_t y, unsigned m);
unsigned tz_weekday(int64_t days); /* 0 = Sunday */

/* "2026-03-08T03:00:00-04:00" (UTC gives "+00:00"). buf needs
 * TZ_ISO_BYTES. Years outside 0-9999 are written as they are. */
#define TZ_ISO_BYTES 40u
void tz_format_iso8601(int64_t utc_s, int32_t utoff_s, char *buf, size_t buf_bytes);
/* Parses "YYYY-MM-DDTHH:MM[:SS]" followed by "Z", "+HH:MM", "-HH:MM" or
 * nothing (a 'T' or one space between date and time). Without an offset the
 * time is local in z: a repeated time is its first instant, a time in a gap
 * the first instant after the gap. 0 or ERR_INVALID with a message. */
int tz_parse_iso8601(const char *s, const struct tz *z, int64_t *utc_s, char *err,
                     size_t err_bytes);

#endif
