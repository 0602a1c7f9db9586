/*
 * views.c - the JSON form of each object a node answers about (views.h):
 * the one place that names their keys, for `clusterctl --json` and the
 * node's HTTP API alike.
 */
#include "views.h"

#include "chorus.h"

#include <sodium.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int view_utf8_valid(const uint8_t *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		uint8_t c = s[i];
		size_t extra;
		uint32_t cp;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xE0) == 0xC0) {
			extra = 1;
			cp = c & 0x1F;
		} else if ((c & 0xF0) == 0xE0) {
			extra = 2;
			cp = c & 0x0F;
		} else if ((c & 0xF8) == 0xF0) {
			extra = 3;
			cp = c & 0x07;
		} else {
			return 0;
		}
		if (extra > n - i - 1) /* truncated sequence */
			return 0;
		for (size_t k = 1; k <= extra; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		/* overlong forms, surrogates, beyond U+10FFFF */
		if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) ||
		    (extra == 3 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return 0;
		i += extra + 1;
	}
	return 1;
}

void view_set_bytes(json_t *o, const char *key, const char *key_b64, const uint8_t *p, size_t n)
{
	if (o == NULL)
		return;
	if (n == 0 || view_utf8_valid(p, n)) {
		json_object_set_new(o, key, json_stringn(n > 0 ? (const char *)p : "", n));
		return;
	}
	size_t b64_len = sodium_base64_encoded_len(n, sodium_base64_VARIANT_ORIGINAL);
	char *b64 = malloc(b64_len);
	if (b64 == NULL)
		return;
	sodium_bin2base64(b64, b64_len, p, n, sodium_base64_VARIANT_ORIGINAL);
	json_object_set_new(o, key_b64, json_string(b64));
	free(b64);
}

const char *view_task_state_name(int state)
{
	return ch_task_state_name(state);
}

static json_t *json_strings(char **v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a != NULL && i < n; i++)
		json_array_append_new(a, view_text(v[i]));
	return a;
}

/* jansson integers are signed 64-bit; counters never get near 2^63. */
#define JU64(v) json_integer((json_int_t)(v))

/* A string a peer reported (names and addresses travel by gossip): jansson
 * refuses invalid UTF-8, so such bytes become '?' rather than the key
 * going missing. */
json_t *view_text(const char *s)
{
	if (s == NULL)
		return json_string("");
	json_t *j = json_string(s);
	if (j != NULL)
		return j;
	char *copy = strdup(s);
	if (copy == NULL)
		return NULL;
	for (char *p = copy; *p != '\0'; p++) {
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	}
	j = json_string(copy);
	free(copy);
	return j;
}

json_t *view_member(const Chorus__MemberInfo *m)
{
	json_t *o = json_object();
	if (o == NULL)
		return NULL;
	json_object_set_new(o, "id", view_text(m->id));
	json_object_set_new(o, "name", view_text(m->name));
	json_object_set_new(o, "addr", view_text(m->addr));
	json_object_set_new(o, "state", view_text(m->state));
	json_object_set_new(o, "incarnation", JU64(m->incarnation));
	json_t *tags = json_array();
	for (size_t i = 0; tags != NULL && i < m->n_tags; i++)
		json_array_append_new(tags, view_text(m->tags[i]));
	json_object_set_new(o, "tags", tags);
	json_object_set_new(o, "capacity", JU64(m->capacity));
	json_object_set_new(o, "load", JU64(m->load));
	json_object_set_new(o, "since_ms", JU64(m->since_ms));
	json_object_set_new(o, "self", json_boolean(m->self));
	json_object_set_new(o, "protocol_version", JU64(m->protocol_version));
	return o;
}

json_t *view_members(Chorus__MemberInfo *const *v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a != NULL && i < n; i++)
		json_array_append_new(a, view_member(v[i]));
	return a;
}

/* The latency (us) under which a share q of the answers fell: the upper
 * bound of the bucket holding that rank (bucket i: < 2^(i+4) us). */
static uint64_t bucket_quantile_us(const uint64_t *b, size_t n, double q)
{
	uint64_t total = 0;
	for (size_t i = 0; i < n; i++)
		total += b[i];
	if (total == 0)
		return 0;
	uint64_t rank = (uint64_t)(q * (double)total);
	if (rank >= total)
		rank = total - 1;
	uint64_t seen = 0;
	for (size_t i = 0; i < n; i++) {
		seen += b[i];
		if (seen > rank)
			return UINT64_C(16) << i;
	}
	return UINT64_C(16) << (n ? n - 1 : 0);
}

/* The node's request table counters: calls, errors, refusals, latency. */
static json_t *requests_to_json(Chorus__RequestStats *const *v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a != NULL && i < n; i++) {
		const Chorus__RequestStats *r = v[i];
		json_t *o = json_object();
		if (o == NULL)
			continue;
		json_object_set_new(o, "name", view_text(r->name));
		json_object_set_new(o, "calls", JU64(r->calls));
		json_object_set_new(o, "errors", JU64(r->errors));
		json_object_set_new(o, "refused", JU64(r->refused));
		json_object_set_new(o, "latency_sum_us", JU64(r->latency_sum_us));
		json_object_set_new(o, "latency_p50_us",
		                    JU64(bucket_quantile_us(r->latency_buckets, r->n_latency_buckets, 0.5)));
		json_object_set_new(o, "latency_p99_us",
		                    JU64(bucket_quantile_us(r->latency_buckets, r->n_latency_buckets, 0.99)));
		json_t *b = json_array();
		for (size_t k = 0; b != NULL && k < r->n_latency_buckets; k++)
			json_array_append_new(b, JU64(r->latency_buckets[k]));
		json_object_set_new(o, "latency_buckets", b);
		json_array_append_new(a, o);
	}
	return a;
}

json_t *view_status(const Chorus__StatusResp *s)
{
	json_t *o = json_object();
	if (o == NULL)
		return NULL;
	json_object_set_new(o, "node_id", view_text(s->node_id));
	json_object_set_new(o, "name", view_text(s->name));
	json_object_set_new(o, "version", view_text(s->version));
	json_object_set_new(o, "listen", view_text(s->listen));
	json_object_set_new(o, "started_ms", JU64(s->started_ms));
	json_object_set_new(o, "now_ms", JU64(s->now_ms));
	json_object_set_new(o, "queued", JU64(s->queued));
	json_object_set_new(o, "running", JU64(s->running));
	json_object_set_new(o, "submitted", JU64(s->submitted));
	json_object_set_new(o, "succeeded", JU64(s->succeeded));
	json_object_set_new(o, "failed", JU64(s->failed));
	json_object_set_new(o, "timed_out", JU64(s->timed_out));
	json_object_set_new(o, "cancelled", JU64(s->cancelled));
	json_object_set_new(o, "lost", JU64(s->lost));
	json_object_set_new(o, "retried", JU64(s->retried));
	json_object_set_new(o, "sessions", JU64(s->sessions));
	json_object_set_new(o, "handlers", json_strings(s->handlers, s->n_handlers));
	json_t *pools = json_array();
	for (size_t i = 0; pools != NULL && i < s->n_pools; i++) {
		const Chorus__PoolStatus *p = s->pools[i];
		json_t *po = json_object();
		if (po == NULL)
			continue;
		json_object_set_new(po, "name", view_text(p->name));
		json_object_set_new(po, "workers", JU64(p->workers));
		json_object_set_new(po, "alive", JU64(p->alive));
		json_object_set_new(po, "busy", JU64(p->busy));
		json_object_set_new(po, "queued", JU64(p->queued));
		json_object_set_new(po, "restarts", JU64(p->restarts));
		json_object_set_new(po, "degraded", json_boolean(p->degraded));
		json_object_set_new(po, "handlers", json_strings(p->handlers, p->n_handlers));
		json_array_append_new(pools, po);
	}
	json_object_set_new(o, "pools", pools);
	json_t *peers = json_array();
	for (size_t i = 0; peers != NULL && i < s->n_peers; i++) {
		const Chorus__PeerCounters *p = s->peers[i];
		json_t *po = json_object();
		if (po == NULL)
			continue;
		json_object_set_new(po, "peer", view_text(p->peer));
		json_object_set_new(po, "forged", JU64(p->forged));
		json_object_set_new(po, "tampered", JU64(p->tampered));
		json_object_set_new(po, "replayed", JU64(p->replayed));
		json_object_set_new(po, "truncated", JU64(p->truncated));
		json_object_set_new(po, "oversized", JU64(p->oversized));
		json_object_set_new(po, "malformed", JU64(p->malformed));
		json_object_set_new(po, "unknown_session", JU64(p->unknown_session));
		json_object_set_new(po, "resent", JU64(p->resent));
		json_object_set_new(po, "rate_limited", JU64(p->rate_limited));
		json_object_set_new(po, "stale", JU64(p->stale));
		json_object_set_new(po, "busy", JU64(p->busy));
		json_object_set_new(po, "connections_refused", JU64(p->connections_refused));
		json_object_set_new(po, "connections_closed", JU64(p->connections_closed));
		json_array_append_new(peers, po);
	}
	json_object_set_new(o, "peers", peers);
	json_object_set_new(o, "tags", json_strings(s->tags, s->n_tags));
	json_object_set_new(o, "members", view_members(s->members, s->n_members));
	json_object_set_new(o, "requests", requests_to_json(s->requests, s->n_requests));
	json_t *keys = json_array();
	for (size_t i = 0; keys != NULL && i < s->n_keys; i++) {
		json_t *ko = json_object();
		if (ko == NULL)
			continue;
		json_object_set_new(ko, "key_id", view_text(s->keys[i]->key_id));
		json_object_set_new(ko, "primary", json_boolean(s->keys[i]->primary));
		json_object_set_new(ko, "sessions", JU64(s->keys[i]->sessions));
		json_object_set_new(ko, "node_sessions", JU64(s->keys[i]->node_sessions));
		json_array_append_new(keys, ko);
	}
	json_object_set_new(o, "keys", keys);
	json_object_set_new(o, "raft_role", view_text(s->raft_role));
	json_object_set_new(o, "raft_term", JU64(s->raft_term));
	json_object_set_new(o, "raft_leader", view_text(s->raft_leader));
	json_object_set_new(o, "raft_commit", JU64(s->raft_commit));
	json_object_set_new(o, "raft_snapshot", JU64(s->raft_snapshot));
	json_object_set_new(o, "raft_first", JU64(s->raft_first));
	json_t *voters = json_array();
	for (size_t i = 0; voters != NULL && i < s->n_raft_voters; i++)
		json_array_append_new(voters, view_text(s->raft_voters[i]));
	json_object_set_new(o, "raft_voters", voters);
	json_object_set_new(o, "schedules", JU64(s->schedules));
	json_object_set_new(o, "resp_listen", view_text(s->resp_listen));
	json_object_set_new(o, "resp_clients", JU64(s->resp_clients));
	json_object_set_new(o, "resp_commands", JU64(s->resp_commands));
	json_object_set_new(o, "resp_errors", JU64(s->resp_errors));
	return o;
}

/* ---- tasks and fan-outs ---- */

json_t *view_task(const Chorus__TaskResult *r, int in_batch)
{
	json_t *o = json_object();
	if (o == NULL)
		return NULL;
	json_object_set_new(o, "task_id", JU64(r->task_id));
	if (in_batch)
		json_object_set_new(o, "index", JU64(r->batch_index));
	json_object_set_new(o, "state", json_string(view_task_state_name((int)r->state)));
	json_object_set_new(o, "exit_code", json_integer(r->exit_code));
	json_object_set_new(o, "error", view_text(r->error));
	json_object_set_new(o, "attempts", JU64(r->attempts));
	json_object_set_new(o, "node", view_text(r->node));
	json_object_set_new(o, "handler", view_text(r->handler));
	json_object_set_new(o, "submitted_ms", JU64(r->submitted_ms));
	json_object_set_new(o, "started_ms", JU64(r->started_ms));
	json_object_set_new(o, "finished_ms", JU64(r->finished_ms));
	if (in_batch)
		json_object_set_new(o, "batch_id", JU64(r->batch_id));
	view_set_bytes(o, "output", "output_base64", r->output.data, r->output.len);
	return o;
}

json_t *view_tasks(const Chorus__ListResp *l)
{
	json_t *a = json_array();
	for (size_t i = 0; a != NULL && i < l->n_tasks; i++)
		json_array_append_new(a, view_task(l->tasks[i], 0));
	return a;
}

json_t *view_batch(const Chorus__BatchInfo *b)
{
	json_t *o = json_object();
	if (o == NULL)
		return NULL;
	json_object_set_new(o, "batch_id", JU64(b->batch_id));
	json_object_set_new(o, "total", JU64(b->total));
	json_object_set_new(o, "done", JU64(b->done));
	json_object_set_new(o, "succeeded", JU64(b->succeeded));
	json_object_set_new(o, "failed", JU64(b->failed));
	json_object_set_new(o, "timed_out", JU64(b->timed_out));
	json_object_set_new(o, "cancelled", JU64(b->cancelled));
	json_object_set_new(o, "lost", JU64(b->lost));
	json_object_set_new(o, "running", JU64(b->running));
	json_object_set_new(o, "queued", JU64(b->queued));
	json_object_set_new(o, "submitted_ms", JU64(b->submitted_ms));
	json_object_set_new(o, "finished_ms", JU64(b->finished_ms));
	json_object_set_new(o, "state", view_text(b->state));
	json_object_set_new(o, "handler", view_text(b->handler));
	json_object_set_new(o, "input_open", json_boolean(b->input_open));
	return o;
}

json_t *view_batches(const Chorus__ListResp *l)
{
	json_t *a = json_array();
	for (size_t i = 0; a != NULL && i < l->n_batches; i++)
		json_array_append_new(a, view_batch(l->batches[i]));
	return a;
}

json_t *view_cancel_task(uint64_t task_id, const Chorus__CancelResp *c)
{
	json_t *o = json_object();
	if (o == NULL)
		return NULL;
	json_object_set_new(o, "task_id", JU64(task_id));
	json_object_set_new(o, "state", json_string(view_task_state_name((int)c->state)));
	return o;
}

json_t *view_cancel_batch(uint64_t batch_id, const Chorus__CancelResp *c)
{
	json_t *o = json_object();
	if (o == NULL)
		return NULL;
	json_object_set_new(o, "batch_id", JU64(batch_id));
	json_object_set_new(o, "cancelled", JU64(c->cancelled));
	return o;
}

/* ---- schedules ---- */

static json_t *cron_time(const struct view_clock *clk, const char *zone, int64_t t)
{
	if (t == 0)
		return json_null();
	char buf[VIEW_TIME_BYTES];
	if (clk != NULL && clk->fn != NULL) {
		clk->fn(clk->ctx, zone != NULL ? zone : "", t, buf, sizeof buf);
	} else {
		time_t tt = (time_t)t;
		struct tm tm;
		if (gmtime_r(&tt, &tm) == NULL)
			snprintf(buf, sizeof buf, "%lld", (long long)t);
		else
			strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S+00:00", &tm);
	}
	return view_text(buf);
}

void view_cron_state(const Chorus__CronInfo *ci, char *buf, size_t len)
{
	const char *note = ci->note != NULL ? ci->note : "";
	if (ci->paused && note[0] != '\0')
		snprintf(buf, len, "paused: %s", note);
	else if (ci->paused)
		snprintf(buf, len, "paused");
	else if (note[0] != '\0')
		snprintf(buf, len, "broken: %s", note);
	else if (ci->next_s == 0)
		snprintf(buf, len, "ended");
	else
		snprintf(buf, len, "active");
}

static json_t *strv(char *const *v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a != NULL && i < n; i++)
		json_array_append_new(a, view_text(v[i]));
	return a;
}

static json_t *cron_run(const struct view_clock *clk, const char *zone, const Chorus__CronRun *r)
{
	json_t *o = json_object();
	if (o == NULL)
		return NULL;
	json_object_set_new(o, "scheduled", cron_time(clk, zone, r->scheduled_s));
	json_object_set_new(o, "scheduled_s", json_integer(r->scheduled_s));
	json_object_set_new(o, "fired_ms", JU64(r->fired_ms));
	json_object_set_new(o, "outcome", view_text(r->outcome));
	json_object_set_new(o, "node", view_text(r->node));
	json_object_set_new(o, "task_id", JU64(r->task_id));
	json_object_set_new(o, "why", view_text(r->why));
	return o;
}

json_t *view_cron_history(const Chorus__CronInfo *ci, const struct view_clock *clk)
{
	const char *zone = ci->spec != NULL && ci->spec->tz != NULL ? ci->spec->tz : "";
	json_t *a = json_array();
	for (size_t i = 0; a != NULL && i < ci->n_history; i++)
		json_array_append_new(a, cron_run(clk, zone, ci->history[i]));
	return a;
}

json_t *view_cron_info(const Chorus__CronInfo *ci, int with_history, const struct view_clock *clk)
{
	Chorus__CronSpec empty = CHORUS__CRON_SPEC__INIT;
	Chorus__TaskOptions no_opts = CHORUS__TASK_OPTIONS__INIT;
	const Chorus__CronSpec *s = ci->spec != NULL ? ci->spec : &empty;
	const Chorus__TaskOptions *op = s->opts != NULL ? s->opts : &no_opts;
	const char *zone = s->tz != NULL ? s->tz : "";
	char state[1024];
	view_cron_state(ci, state, sizeof state);
	json_t *o = json_object();
	if (o == NULL)
		return NULL;
	json_object_set_new(o, "name", view_text(s->name));
	json_object_set_new(o, "expr", view_text(s->expr));
	json_object_set_new(o, "tz", view_text(zone[0] != '\0' ? zone : "UTC"));
	json_object_set_new(o, "next", cron_time(clk, zone, ci->next_s));
	json_object_set_new(o, "next_s", json_integer(ci->next_s));
	json_object_set_new(o, "last", cron_time(clk, zone, ci->last_s));
	json_object_set_new(o, "last_s", json_integer(ci->last_s));
	json_object_set_new(o, "runs", JU64(ci->runs));
	json_object_set_new(o, "state", view_text(state));
	json_object_set_new(o, "paused", json_boolean(ci->paused));
	json_object_set_new(o, "note", view_text(ci->note));
	json_object_set_new(o, "handler", view_text(s->handler));
	view_set_bytes(o, "payload", "payload_base64", s->payload.data, s->payload.len);
	json_object_set_new(o, "on", view_text(s->on));
	json_object_set_new(o, "overlap", json_string(ch_overlap_name((int)s->overlap)));
	json_object_set_new(o, "catchup_ms", JU64(s->catchup_ms));
	json_object_set_new(o, "start", cron_time(clk, zone, s->start_s));
	json_object_set_new(o, "start_s", json_integer(s->start_s));
	json_object_set_new(o, "end", cron_time(clk, zone, s->end_s));
	json_object_set_new(o, "end_s", json_integer(s->end_s));
	json_object_set_new(o, "max_runs", JU64(s->max_runs));
	json_object_set_new(o, "jitter_ms", JU64(s->jitter_ms));
	json_object_set_new(o, "pause_on_failure", json_boolean(s->pause_on_failure));
	json_object_set_new(o, "timeout_ms", JU64(op->timeout_ms));
	json_object_set_new(o, "restart", json_string(op->restart ==
	                                                      CHORUS__RESTART_POLICY__RESTART_TRANSIENT
	                                                      ? "transient"
	                                                      : "temporary"));
	json_object_set_new(o, "max_attempts", JU64(op->max_attempts));
	json_object_set_new(o, "backoff_ms", JU64(op->backoff_ms));
	json_object_set_new(o, "argv", strv(op->argv, op->n_argv));
	json_object_set_new(o, "require", strv(op->require, op->n_require));
	if (with_history)
		json_object_set_new(o, "history", view_cron_history(ci, clk));
	return o;
}

json_t *view_cron_list(const Chorus__CronResp *r, const struct view_clock *clk)
{
	json_t *a = json_array();
	for (size_t i = 0; a != NULL && i < r->n_schedules; i++)
		json_array_append_new(a, view_cron_info(r->schedules[i], 0, clk));
	return a;
}

/* ---- the cache ---- */

json_t *view_cache_stats(const Chorus__CacheStatsInfo *s)
{
	json_t *o = json_object();
	if (o == NULL)
		return NULL;
	json_object_set_new(o, "cache", view_text(s->cache));
	json_object_set_new(o, "node", view_text(s->node));
	json_object_set_new(o, "entries", JU64(s->entries));
	json_object_set_new(o, "memory_bytes", JU64(s->memory_bytes));
	json_object_set_new(o, "hits", JU64(s->hits));
	json_object_set_new(o, "misses", JU64(s->misses));
	json_object_set_new(o, "evictions", JU64(s->evictions));
	json_object_set_new(o, "expirations", JU64(s->expirations));
	json_object_set_new(o, "hints_pending", JU64(s->hints_pending));
	json_object_set_new(o, "tombstones", JU64(s->tombstones));
	json_object_set_new(o, "partitions_primary", JU64(s->partitions_primary));
	json_object_set_new(o, "partitions_replica", JU64(s->partitions_replica));
	json_object_set_new(o, "partitions_moving", JU64(s->partitions_moving));
	return o;
}

json_t *view_cache_stats_list(const Chorus__CacheResp *r)
{
	json_t *a = json_array();
	for (size_t i = 0; a != NULL && i < r->n_stats; i++)
		json_array_append_new(a, view_cache_stats(r->stats[i]));
	return a;
}

json_t *view_cache_partitions(const Chorus__CacheResp *r)
{
	json_t *o = json_object();
	if (o == NULL)
		return NULL;
	/* every cache shares the node's partition map: the first one's counts
	 * are this node's */
	const Chorus__CacheStatsInfo *s0 = r->n_stats > 0 ? r->stats[0] : NULL;
	size_t replicas = r->n_partition_map > 0 ? r->partition_map[0]->n_owners : 0;
	json_object_set_new(o, "partitions", JU64(r->n_partition_map));
	json_object_set_new(o, "replicas", JU64(replicas));
	char epoch[17];
	snprintf(epoch, sizeof epoch, "%016" PRIx64, r->epoch);
	json_object_set_new(o, "epoch", json_string(epoch)); /* an id, as the node logs it */
	json_object_set_new(o, "primary", JU64(s0 ? s0->partitions_primary : 0));
	json_object_set_new(o, "owned", JU64(s0 ? (uint64_t)s0->partitions_primary +
	                                                s0->partitions_replica
	                                          : 0));
	json_object_set_new(o, "moving", JU64(s0 ? s0->partitions_moving : 0));
	json_t *map = json_array();
	for (size_t p = 0; map != NULL && p < r->n_partition_map; p++) {
		json_t *owners = json_array();
		for (size_t k = 0; owners != NULL && k < r->partition_map[p]->n_owners; k++)
			json_array_append_new(owners, view_text(r->partition_map[p]->owners[k]));
		json_array_append_new(map, owners);
	}
	json_object_set_new(o, "map", map);
	return o;
}

json_t *view_cache(const Chorus__CacheResp *r)
{
	json_t *o = json_object();
	if (o == NULL)
		return NULL;
	json_object_set_new(o, "stats", view_cache_stats_list(r));
	json_object_set_new(o, "partitions", view_cache_partitions(r));
	return o;
}

/* ---- events ---- */

json_t *view_event(const Chorus__Event *e)
{
	json_t *o = json_object();
	if (o == NULL)
		return NULL;
	json_object_set_new(o, "seq", JU64(e->seq));
	json_object_set_new(o, "wall_ms", JU64(e->wall_ms));
	json_object_set_new(o, "kind", view_text(e->kind));
	json_object_set_new(o, "subject", view_text(e->subject));
	json_object_set_new(o, "message", view_text(e->message));
	return o;
}

json_t *view_events_page(const Chorus__EventsResp *r)
{
	json_t *o = json_object();
	json_t *a = json_array();
	if (o == NULL || a == NULL) {
		json_decref(o);
		json_decref(a);
		return NULL;
	}
	json_object_set_new(o, "node", view_text(r->node));
	json_object_set_new(o, "node_id", view_text(r->node_id));
	json_object_set_new(o, "started_ms", JU64(r->started_ms));
	json_object_set_new(o, "first_seq", JU64(r->first_seq));
	json_object_set_new(o, "last_seq", JU64(r->last_seq));
	for (size_t i = 0; i < r->n_events; i++)
		json_array_append_new(a, view_event(r->events[i]));
	json_object_set_new(o, "events", a);
	return o;
}

char *view_dump(json_t *o)
{
	if (o == NULL)
		return NULL;
	char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(o);
	return text;
}
