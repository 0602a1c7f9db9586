/*
 * log.c - log lines on stderr: ISO-8601 UTC time with milliseconds, level,
 * component and message, as text or as one JSON object per line.
 *
 * Owns the process-wide log settings (level, format) and the rate-limit
 * table of log_limited(). Each line is formatted into a bounded buffer
 * (LOG_LINE_BYTES_MAX, longer messages are cut and marked with "...") and
 * written with a single write(2) on fd 2, so lines from different threads
 * never interleave. Text lines escape control characters (a task's error
 * text must not be able to forge a second log line); JSON lines are built
 * with jansson, which escapes them.
 *
 * Threading: any thread. Settings are atomics; the rate-limit table is
 * under a mutex.
 */
#include "io/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#define LOG_LINE_BYTES_MAX 4096
#define LOG_MSG_BYTES_MAX 3072
#define LOG_LIMIT_KEY_BYTES 96

static atomic_int log_min_level = LOG_INFO;
static atomic_int log_json_mode = 0;

struct log_limit_slot {
	char key[LOG_LIMIT_KEY_BYTES]; /* component '\x1f' key; "" = free */
	uint64_t last_printed_ms;
	uint64_t suppressed_count;
};

static pthread_mutex_t log_limit_lock = PTHREAD_MUTEX_INITIALIZER;
static struct log_limit_slot log_limit_table[LOG_LIMIT_KEYS];
static uint64_t (*log_clock_fn)(void *arg);
static void *log_clock_arg;

void log_setup(int level, int json)
{
	if (level < LOG_DEBUG)
		level = LOG_DEBUG;
	if (level > LOG_ERROR + 1) /* above error: nothing is printed */
		level = LOG_ERROR + 1;
	atomic_store(&log_min_level, level);
	atomic_store(&log_json_mode, json ? 1 : 0);
}

static const char *const log_level_names[] = {"debug", "info", "warn", "error"};
static const char *const log_level_tags[] = {"DEBUG", "INFO", "WARN", "ERROR"};

int log_level_parse(const char *s)
{
	if (!s)
		return -1;
	for (int i = LOG_DEBUG; i <= LOG_ERROR; i++)
		if (strcasecmp(s, log_level_names[i]) == 0)
			return i;
	if (strcasecmp(s, "warning") == 0)
		return LOG_WARN;
	return -1;
}

const char *log_level_name(int level)
{
	if (level < LOG_DEBUG || level > LOG_ERROR)
		return "unknown";
	return log_level_names[level];
}

void log_set_clock(uint64_t (*now_ms)(void *arg), void *arg)
{
	pthread_mutex_lock(&log_limit_lock);
	log_clock_fn = now_ms;
	log_clock_arg = arg;
	pthread_mutex_unlock(&log_limit_lock);
}

void log_limited_reset(void)
{
	pthread_mutex_lock(&log_limit_lock);
	memset(log_limit_table, 0, sizeof(log_limit_table));
	pthread_mutex_unlock(&log_limit_lock);
}

static uint64_t monotonic_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* "2026-11-25T08:10:00.123Z" */
static void log_timestamp(char *buf, size_t len)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L);
}

/* One write(2); retried on EINTR and short writes (a pipe may take part). */
static void log_write(const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(STDERR_FILENO, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return; /* nowhere left to report it */
		}
		buf += n;
		len -= (size_t)n;
	}
}

/* Appends s to out (text mode), escaping control characters. */
static size_t escape_text(char *out, size_t pos, size_t cap, const char *s)
{
	for (; *s && pos + 5 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '\n') {
			out[pos++] = '\\';
			out[pos++] = 'n';
		} else if (c == '\t' || c >= 0x20) {
			if (c == 0x7f) {
				pos += (size_t)snprintf(out + pos, cap - pos, "\\x7f");
			} else {
				out[pos++] = (char)c;
			}
		} else {
			pos += (size_t)snprintf(out + pos, cap - pos, "\\x%02x", c);
		}
	}
	if (*s && pos + 4 <= cap) { /* cut: say so */
		memcpy(out + pos, "...", 3);
		pos += 3;
	}
	return pos;
}

/* jansson wants UTF-8; replace bytes of an invalid sequence with '?'. */
static json_t *json_string_lossy(const char *s)
{
	json_t *j = json_string(s);
	if (j)
		return j;
	char *copy = strdup(s);
	if (!copy)
		return NULL;
	for (char *p = copy; *p; p++)
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	j = json_string(copy);
	free(copy);
	return j;
}

static void log_emit(int level, const char *component, const char *msg,
		     uint64_t suppressed_count)
{
	char ts[96]; /* room for any int fields: -Wformat-truncation */
	char line[LOG_LINE_BYTES_MAX];
	size_t pos = 0;
	log_timestamp(ts, sizeof(ts));
	if (!component)
		component = "-";

	if (atomic_load(&log_json_mode)) {
		char text[LOG_MSG_BYTES_MAX + 64];
		if (suppressed_count)
			snprintf(text, sizeof(text), "%s (%llu similar suppressed)", msg,
				 (unsigned long long)suppressed_count);
		else
			snprintf(text, sizeof(text), "%s", msg);
		json_t *o = json_object();
		if (o) {
			json_object_set_new(o, "ts", json_string(ts));
			json_object_set_new(o, "level", json_string(log_level_name(level)));
			json_object_set_new(o, "component", json_string_lossy(component));
			json_object_set_new(o, "msg", json_string_lossy(text));
			if (suppressed_count)
				json_object_set_new(o, "suppressed", json_integer((json_int_t)suppressed_count));
			const size_t flags = JSON_COMPACT | JSON_PRESERVE_ORDER;
			size_t n = json_dumpb(o, line, sizeof(line) - 1, flags);
			if (n > 0 && n < sizeof(line) - 1) {
				json_decref(o);
				line[n++] = '\n';
				log_write(line, n);
				return;
			}
			/* escapes made it longer than the line buffer (at most 6x
			 * LOG_MSG_BYTES_MAX): one heap buffer, still one write */
			char *big = n > 0 ? malloc(n + 1) : NULL;
			if (big && json_dumpb(o, big, n, flags) == n) {
				big[n] = '\n';
				log_write(big, n + 1);
				free(big);
				json_decref(o);
				return;
			}
			free(big);
			json_decref(o);
		}
		/* no memory or too long for the line buffer: say so, still as JSON */
		pos = (size_t)snprintf(line, sizeof(line),
				       "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"(log line lost)\"}\n",
				       ts, log_level_name(level));
		log_write(line, pos);
		return;
	}

	pos = (size_t)snprintf(line, sizeof(line), "%s %-5s ", ts, log_level_tags[level]);
	pos = escape_text(line, pos, sizeof(line) - 64, component);
	line[pos++] = ':';
	line[pos++] = ' ';
	pos = escape_text(line, pos, sizeof(line) - 64, msg);
	if (suppressed_count)
		pos += (size_t)snprintf(line + pos, sizeof(line) - pos, " (%llu similar suppressed)",
					(unsigned long long)suppressed_count);
	line[pos++] = '\n';
	log_write(line, pos);
}

/* Formats into buf, marking a cut message with "...". */
static void log_format(char *buf, size_t len, const char *fmt, va_list ap)
{
	int n = vsnprintf(buf, len, fmt, ap);
	if (n < 0)
		snprintf(buf, len, "(bad log format)");
	else if ((size_t)n >= len && len > 4)
		memcpy(buf + len - 4, "...", 4);
}

void log_msg(int level, const char *component, const char *fmt, ...)
{
	if (level < atomic_load(&log_min_level))
		return;
	if (level > LOG_ERROR)
		level = LOG_ERROR;
	char msg[LOG_MSG_BYTES_MAX];
	va_list ap;
	va_start(ap, fmt);
	log_format(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_emit(level, component, msg, 0);
}

void log_limited(int level, const char *component, const char *key, uint32_t interval_ms,
		 const char *fmt, ...)
{
	if (level < atomic_load(&log_min_level))
		return;
	if (level > LOG_ERROR)
		level = LOG_ERROR;

	/* Keys longer than a slot are cut; such keys share one limit. */
	char slot_key[LOG_LIMIT_KEY_BYTES];
	snprintf(slot_key, sizeof(slot_key), "%s\x1f%s", component ? component : "",
		 key ? key : "");

	uint64_t suppressed_count = 0;
	pthread_mutex_lock(&log_limit_lock);
	uint64_t now_ms = log_clock_fn ? log_clock_fn(log_clock_arg) : monotonic_ms();
	struct log_limit_slot *slot = NULL, *oldest = &log_limit_table[0];
	for (size_t i = 0; i < LOG_LIMIT_KEYS; i++) {
		struct log_limit_slot *s = &log_limit_table[i];
		if (s->key[0] && strcmp(s->key, slot_key) == 0) {
			slot = s;
			break;
		}
		/* free slots first, then the one printed longest ago */
		if (oldest->key[0] &&
		    (!s->key[0] || s->last_printed_ms < oldest->last_printed_ms))
			oldest = s;
	}
	if (slot && now_ms - slot->last_printed_ms < interval_ms) {
		slot->suppressed_count++;
		pthread_mutex_unlock(&log_limit_lock);
		return;
	}
	if (!slot) {
		slot = oldest;
		memset(slot, 0, sizeof(*slot));
		memcpy(slot->key, slot_key, sizeof(slot_key));
	}
	suppressed_count = slot->suppressed_count;
	slot->suppressed_count = 0;
	slot->last_printed_ms = now_ms;
	pthread_mutex_unlock(&log_limit_lock);

	char msg[LOG_MSG_BYTES_MAX];
	va_list ap;
	va_start(ap, fmt);
	log_format(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_emit(level, component, msg, suppressed_count);
}
