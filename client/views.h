/*
 * views.h - the JSON form of the objects a node answers about: one
 * definition of each object's keys, shared by `clusterctl --json` (through
 * libchorus) and the node's HTTP API (node/svc/http_api.c), so the two can
 * never drift apart (issue #14: "one schema, not two"; docs/http.md lists
 * the objects).
 *
 * Each view takes a decoded protobuf message and returns a new jansson
 * value (the caller owns the reference), or NULL only when out of memory.
 * Strings that came from peers (names, addresses, errors, outputs) may be
 * any bytes: a view never drops a key for invalid UTF-8 (view_text turns
 * such bytes into '?'; task output and schedule payloads that are not
 * UTF-8 go as base64 under a "_base64" key instead).
 *
 * Internal to the tree (not installed): libchorus, clusterctl and chorusd
 * include it. Pure: no I/O; times of schedules are formatted by a callback
 * the caller gives (clusterctl and the node read time zones their own way),
 * UTC when none.
 */
#ifndef CHORUS_CLIENT_VIEWS_H
#define CHORUS_CLIENT_VIEWS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "proto/chorus.pb-c.h"

/* Bytes a formatted time may take (enough for TZ_ISO_BYTES of core/tz.h). */
#define VIEW_TIME_BYTES 48u

/* t (unix s, never 0) as ISO-8601 in `zone` ("" = UTC) into buf. */
typedef void (*view_time_fn)(void *ctx, const char *zone, int64_t t_s, char *buf, size_t len);

struct view_clock {
	view_time_fn fn; /* NULL: UTC, "YYYY-MM-DDTHH:MM:SS+00:00" */
	void *ctx;
};

/* A string (NULL reads as ""); bytes that are not UTF-8 become '?'. */
json_t *view_text(const char *s);
/* 1 when s[0..n) is well-formed UTF-8 (no overlongs, no surrogates). */
int view_utf8_valid(const uint8_t *s, size_t n);
/* Sets o[key] to the bytes as a string when they are UTF-8, else
 * o[key_b64] to their base64 (standard alphabet, padded). */
void view_set_bytes(json_t *o, const char *key, const char *key_b64, const uint8_t *p, size_t n);
/* The state's name as clusterctl prints it ("queued", "succeeded", ...). */
const char *view_task_state_name(int state);

/* `clusterctl --json status`, GET /api/status. */
json_t *view_status(const Chorus__StatusResp *s);
/* One member; the array of `clusterctl --json members`, GET /api/members. */
json_t *view_member(const Chorus__MemberInfo *m);
json_t *view_members(Chorus__MemberInfo *const *v, size_t n);

/* One task's result (tasks, wait, submit --wait): with in_batch the
 * "index" and "batch_id" of a fan-out's result too. */
json_t *view_task(const Chorus__TaskResult *r, int in_batch);
/* The array of `clusterctl --json tasks`, GET /api/tasks. */
json_t *view_tasks(const Chorus__ListResp *l);
/* One fan-out; the array of `clusterctl --json fanouts`, GET /api/fanouts. */
json_t *view_batch(const Chorus__BatchInfo *b);
json_t *view_batches(const Chorus__ListResp *l);
/* `clusterctl --json cancel ID`: {"task_id", "state"}; with batch_id
 * (`cancel --batch ID`): {"batch_id", "cancelled"}. */
json_t *view_cancel_task(uint64_t task_id, const Chorus__CancelResp *c);
json_t *view_cancel_batch(uint64_t batch_id, const Chorus__CancelResp *c);

/* A schedule (`clusterctl --json cron list|show|pause|...`,
 * GET /api/schedules[/NAME]); times both as unix seconds and as ISO-8601
 * in the schedule's zone. with_history adds "history". */
json_t *view_cron_info(const Chorus__CronInfo *ci, int with_history, const struct view_clock *clk);
json_t *view_cron_history(const Chorus__CronInfo *ci, const struct view_clock *clk);
json_t *view_cron_list(const Chorus__CronResp *r, const struct view_clock *clk);
/* The state text: "active", "paused[: NOTE]", "broken: NOTE", "ended". */
void view_cron_state(const Chorus__CronInfo *ci, char *buf, size_t len);

/* One cache's stats on one node; the array of `clusterctl --json cache
 * stats` (GET /api/cache's "stats"). */
json_t *view_cache_stats(const Chorus__CacheStatsInfo *s);
json_t *view_cache_stats_list(const Chorus__CacheResp *r);
/* The partition map of a CACHE_STATS answer: {"partitions" (P), "replicas"
 * (R), "epoch", "primary", "owned", "moving" (this node's counts), "map":
 * [[owner names of partition 0, primary first], ...]}. */
json_t *view_cache_partitions(const Chorus__CacheResp *r);
/* {"stats": view_cache_stats_list, "partitions": view_cache_partitions}:
 * GET /api/cache and `clusterctl --json cache overview`. */
json_t *view_cache(const Chorus__CacheResp *r);
/* An event {"seq", "wall_ms", "kind", "subject", "message"}, and a page of
 * them {"node", "node_id", "started_ms", "first_seq", "last_seq", "events"}:
 * `clusterctl --json events`, GET /api/events and each SSE data line. */
json_t *view_event(const Chorus__Event *e);
json_t *view_events_page(const Chorus__EventsResp *r);

/* Text of o (indented, keys in insertion order), malloc'd; releases o.
 * NULL when o is NULL or out of memory. */
char *view_dump(json_t *o);

#endif
