/*
 * log.h - log lines: time, level, component, message; text or JSON.
 *
 * Text:  2026-11-25T08:10:00.123Z INFO  link: handshake from 127.0.0.1:5000
 * JSON:  {"ts":"2026-11-25T08:10:00.123Z","level":"info","component":"link","msg":"..."}
 * Lines go to stderr, one write(2) each, so lines from threads never mix.
 * log_limited() lets a caller log a repeated event at most once per
 * interval per key, reporting how many were suppressed.
 */
#ifndef CHORUS_IO_LOG_H
#define CHORUS_IO_LOG_H

#include <stdint.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

void log_setup(int level, int json); /* defaults: LOG_INFO, text; level > LOG_ERROR: silent */
int log_level_parse(const char *s);  /* "debug|info|warn|error" or -1 */
const char *log_level_name(int level); /* "debug".."error"; "unknown" */
void log_msg(int level, const char *component, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Rate-limited logging: at most one line per `interval_ms` for each distinct
 * (component, key); the next line printed says how many were suppressed.
 * Keys are kept in a fixed table (LOG_LIMIT_KEYS); oldest evicted. */
#define LOG_LIMIT_KEYS 128
void log_limited(int level, const char *component, const char *key, uint32_t interval_ms,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Tests: the clock log_limited() measures intervals with (NULL restores
 * CLOCK_MONOTONIC), and forgetting every rate-limit key. */
void log_set_clock(uint64_t (*now_ms)(void *arg), void *arg);
void log_limited_reset(void);

#define log_debug(c, ...) log_msg(LOG_DEBUG, c, __VA_ARGS__)
#define log_info(c, ...) log_msg(LOG_INFO, c, __VA_ARGS__)
#define log_warn(c, ...) log_msg(LOG_WARN, c, __VA_ARGS__)
#define log_error(c, ...) log_msg(LOG_ERROR, c, __VA_ARGS__)

#endif
