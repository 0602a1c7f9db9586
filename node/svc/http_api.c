/*
 * http_api.c - the JSON API of the HTTP service (docs/http.md, "API
 * objects"): the routes behind the dashboard other than /metrics, the
 * static files, /api/auth and /api/events.
 *
 * Every answer is a view of client/views.c, the functions that make
 * `clusterctl --json` print the same objects: one schema. A route that
 * needs another service asks the node itself with http_call(): the same
 * Envelope clusterctl would send, handled by the request table like a
 * client's (so it is counted, refused while draining, forwarded to the
 * leader for schedules), and answered from its completion. An Error answer
 * becomes an HTTP error with a status that fits its code.
 */
#include "svc/http_api.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chorus.h"
#include "config.h"
#include "core/tz.h"
#include "io/tzload.h"
#include "lib/arena.h"
#include "svc/http_svc.h"
#include "svc/service.h"
#include "views.h"

#define API_LIST_LIMIT_DEFAULT 50u
#define API_LIST_LIMIT_MAX 10000u
#define API_PARAM_BYTES 64u
#define API_NAME_BYTES_MAX 64u /* a schedule's name (CH_CRON_NAME_BYTES_MAX) */

enum api_what {
	API_TASKS,
	API_FANOUTS,
	API_CANCEL_TASK,
	API_CANCEL_BATCH,
	API_MEMBERS,
	API_CRON_LIST,
	API_CRON_SHOW,
	API_CRON_CHANGE, /* pause, resume, trigger: the schedule after it */
	API_CACHE
};

struct api {
	struct host *host;
	struct tzcache *zones; /* schedules' zones, for their times */
};

/* What a pending call needs to turn its answer into a view. */
struct api_call {
	struct api *api;
	enum api_what what;
	uint64_t id;
	char name[API_NAME_BYTES_MAX + 1];
};

/* An Error code (CH_ERR_*) as the HTTP status that fits it. */
static int status_for(int code)
{
	return http_status_of_error(code);
}

static void zone_time(void *ctx, const char *zone, int64_t t, char *buf, size_t len)
{
	struct api *a = ctx;
	const struct tz *z = tz_utc();
	char err[TZ_ERR_BYTES];
	if (a->zones != NULL && zone != NULL && zone[0] != '\0' &&
	    tzcache_get(a->zones, zone, &z, err, sizeof err) != 0)
		z = tz_utc();
	tz_format_iso8601(t, tz_utoff_at(z, t), buf, len);
}

/* "limit" of the query: API_LIST_LIMIT_DEFAULT when absent; -1 (answered
 * 400) when not a number in 1..API_LIST_LIMIT_MAX. */
static int query_limit(struct http_exchange *x, const struct http_req *r, uint32_t *limit)
{
	char buf[API_PARAM_BYTES];
	*limit = API_LIST_LIMIT_DEFAULT;
	if (http_query_param(r, "limit", buf, sizeof buf) != 0)
		return 0;
	char *end = NULL;
	errno = 0;
	unsigned long long v = strtoull(buf, &end, 10);
	if (buf[0] < '0' || buf[0] > '9' || *end != '\0' || errno != 0 || v == 0 ||
	    v > API_LIST_LIMIT_MAX) {
		http_answer_error(x, 400, "limit must be a number from 1 to %u", API_LIST_LIMIT_MAX);
		return -1;
	}
	*limit = (uint32_t)v;
	return 0;
}

/* The decimal id at the start of s up to '/' or the end; 0 when none. */
static uint64_t path_id(const char *s, const char **rest)
{
	uint64_t v = 0;
	const char *p = s;
	while (*p >= '0' && *p <= '9') {
		uint64_t d = (uint64_t)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return 0;
		v = v * 10 + d;
		p++;
	}
	if (p == s || (*p != '\0' && *p != '/'))
		return 0;
	*rest = p;
	return v;
}

/* ---- answers of the local calls ---- */

static void answered(void *arg, struct http_exchange *x, const Chorus__Envelope *e)
{
	struct api_call *c = arg;
	if (x == NULL) { /* the HTTP client went away */
		free(c);
		return;
	}
	if (e == NULL) {
		http_answer_error(x, 500, "no answer");
		free(c);
		return;
	}
	if (e->body_case == CHORUS__ENVELOPE__BODY_ERROR && e->error != NULL) {
		http_answer_error(x, status_for(e->error->code), "%s",
		                  e->error->message != NULL && e->error->message[0] != '\0'
		                      ? e->error->message
		                      : ch_strerror(e->error->code));
		free(c);
		return;
	}
	struct view_clock clk = { zone_time, c->api };
	json_t *body = NULL;
	switch (c->what) {
	case API_TASKS:
		if (e->body_case == CHORUS__ENVELOPE__BODY_LIST_RESP)
			body = view_tasks(e->list_resp);
		break;
	case API_FANOUTS:
		if (e->body_case == CHORUS__ENVELOPE__BODY_LIST_RESP)
			body = view_batches(e->list_resp);
		break;
	case API_CANCEL_TASK:
		if (e->body_case == CHORUS__ENVELOPE__BODY_CANCEL_RESP)
			body = view_cancel_task(c->id, e->cancel_resp);
		break;
	case API_CANCEL_BATCH:
		if (e->body_case == CHORUS__ENVELOPE__BODY_CANCEL_RESP)
			body = view_cancel_batch(c->id, e->cancel_resp);
		break;
	case API_MEMBERS:
		if (e->body_case == CHORUS__ENVELOPE__BODY_MEMBERS_RESP)
			body = view_members(e->members_resp->members, e->members_resp->n_members);
		break;
	case API_CRON_LIST:
		if (e->body_case == CHORUS__ENVELOPE__BODY_CRON_RESP)
			body = view_cron_list(e->cron_resp, &clk);
		break;
	case API_CRON_SHOW:
	case API_CRON_CHANGE:
		if (e->body_case == CHORUS__ENVELOPE__BODY_CRON_RESP) {
			if (e->cron_resp->n_schedules == 0) {
				http_answer_error(x, 404, "no schedule named \"%s\"", c->name);
				free(c);
				return;
			}
			/* as clusterctl: show and trigger come with the history */
			body = view_cron_info(e->cron_resp->schedules[0],
			                      c->what == API_CRON_SHOW || c->id == CH_CRON_TRIGGER, &clk);
		}
		break;
	case API_CACHE:
		if (e->body_case == CHORUS__ENVELOPE__BODY_CACHE_RESP)
			body = view_cache(e->cache_resp);
		break;
	}
	if (body == NULL)
		http_answer_error(x, 500, "unexpected answer from the node");
	else
		http_answer_json(x, 200, body);
	free(c);
}

/* Sends env as a local request; the answer becomes c's view. */
static void call(struct http_exchange *x, Chorus__Envelope *env, struct api *a,
                 enum api_what what, uint64_t id, const char *name)
{
	struct api_call *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		http_answer_error(x, 500, "out of memory");
		return;
	}
	c->api = a;
	c->what = what;
	c->id = id;
	snprintf(c->name, sizeof c->name, "%s", name != NULL ? name : "");
	if (http_call(x, env, answered, c) != 0) {
		free(c);
		http_answer_error(x, 503, "the node cannot take the request now");
	}
}

/* ---- routes ---- */

static void get_status(void *arg, struct http_exchange *x, const struct http_req *r)
{
	struct api *a = arg;
	(void)r;
	struct arena ar = { 0 };
	Chorus__StatusResp st = CHORUS__STATUS_RESP__INIT;
	host_status_fill(a->host, &st, &ar);
	json_t *o = view_status(&st);
	arena_free(&ar);
	if (o == NULL)
		http_answer_error(x, 500, "out of memory");
	else
		http_answer_json(x, 200, o);
}

static void get_members(void *arg, struct http_exchange *x, const struct http_req *r)
{
	(void)r;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	Chorus__MembersReq mr = CHORUS__MEMBERS_REQ__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_MEMBERS;
	env.members = &mr;
	call(x, &env, arg, API_MEMBERS, 0, NULL);
}

static void get_tasks(void *arg, struct http_exchange *x, const struct http_req *r)
{
	uint32_t limit;
	if (query_limit(x, r, &limit) != 0)
		return;
	Chorus__ListReq lr = CHORUS__LIST_REQ__INIT;
	lr.limit = limit;
	char state[API_PARAM_BYTES];
	if (http_query_param(r, "state", state, sizeof state) == 0 && state[0] != '\0' &&
	    strcmp(state, "any") != 0) {
		int s = ch_task_state_parse(state);
		if (s == CH_TASK_UNKNOWN) {
			http_answer_error(x, 400, "unknown state \"%s\" (queued, running, succeeded, "
			                  "failed, timed_out, cancelled, lost)", state);
			return;
		}
		lr.state = (Chorus__TaskState)s;
	}
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_LIST;
	env.list = &lr;
	call(x, &env, arg, API_TASKS, 0, NULL);
}

static void get_fanouts(void *arg, struct http_exchange *x, const struct http_req *r)
{
	uint32_t limit;
	if (query_limit(x, r, &limit) != 0)
		return;
	Chorus__ListReq lr = CHORUS__LIST_REQ__INIT;
	lr.limit = limit;
	lr.batches = 1;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_LIST;
	env.list = &lr;
	call(x, &env, arg, API_FANOUTS, 0, NULL);
}

/* POST /api/tasks/ID/cancel and /api/fanouts/ID/cancel */
static void post_cancel(void *arg, struct http_exchange *x, const struct http_req *r, int batch)
{
	const char *prefix = batch ? "/api/fanouts/" : "/api/tasks/";
	const char *rest = NULL;
	uint64_t id = path_id(r->path + strlen(prefix), &rest);
	if (id == 0) {
		http_answer_error(x, 400, "%s: not a %s id", r->path, batch ? "batch" : "task");
		return;
	}
	if (strcmp(rest, "/cancel") != 0) {
		http_answer_error(x, 404, "no route %s", r->path);
		return;
	}
	Chorus__CancelReq cr = CHORUS__CANCEL_REQ__INIT;
	if (batch)
		cr.batch_id = id;
	else
		cr.task_id = id;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_CANCEL;
	env.cancel = &cr;
	call(x, &env, arg, batch ? API_CANCEL_BATCH : API_CANCEL_TASK, id, NULL);
}

static void post_cancel_task(void *arg, struct http_exchange *x, const struct http_req *r)
{
	post_cancel(arg, x, r, 0);
}

static void post_cancel_batch(void *arg, struct http_exchange *x, const struct http_req *r)
{
	post_cancel(arg, x, r, 1);
}

static void get_schedules(void *arg, struct http_exchange *x, const struct http_req *r)
{
	(void)r;
	Chorus__CronReq req = CHORUS__CRON_REQ__INIT;
	req.op = CH_CRON_LIST;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_CRON;
	env.cron = &req;
	call(x, &env, arg, API_CRON_LIST, 0, NULL);
}

/* A schedule's name as clusterctl accepts it: letters, digits, '-', '_',
 * '.', 1..64 bytes (the node checks again). */
static int name_ok(const char *s, size_t n)
{
	if (n == 0 || n > API_NAME_BYTES_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return 0;
	}
	return 1;
}

/* GET /api/schedules/NAME, POST /api/schedules/NAME/pause|resume|trigger */
static void schedule_route(void *arg, struct http_exchange *x, const struct http_req *r)
{
	const char *s = r->path + strlen("/api/schedules/");
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	char name[API_NAME_BYTES_MAX + 1];
	if (!name_ok(s, n)) {
		http_answer_error(x, 400, "not a schedule name");
		return;
	}
	memcpy(name, s, n);
	name[n] = '\0';
	const char *verb = slash ? slash + 1 : "";
	int get = strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0;
	Chorus__CronReq req = CHORUS__CRON_REQ__INIT;
	req.name = name;
	req.note = "";
	enum api_what what = API_CRON_CHANGE;
	if (get && verb[0] == '\0') {
		char buf[API_PARAM_BYTES];
		uint32_t limit = CH_CRON_HISTORY_DEFAULT;
		if (http_query_param(r, "limit", buf, sizeof buf) == 0 &&
		    query_limit(x, r, &limit) != 0)
			return;
		req.op = CH_CRON_SHOW;
		req.limit = limit;
		what = API_CRON_SHOW;
	} else if (!get && strcmp(verb, "pause") == 0) {
		req.op = CH_CRON_PAUSE;
	} else if (!get && strcmp(verb, "resume") == 0) {
		req.op = CH_CRON_RESUME;
	} else if (!get && strcmp(verb, "trigger") == 0) {
		req.op = CH_CRON_TRIGGER;
		/* as libchorus: the trigger names its second, so a retry runs once */
		req.from_s = (int64_t)time(NULL);
	} else if (get && (!strcmp(verb, "pause") || !strcmp(verb, "resume") ||
	                   !strcmp(verb, "trigger"))) {
		http_answer_error(x, 405, "%s takes POST", r->path);
		return;
	} else {
		http_answer_error(x, 404, "no route %s", r->path);
		return;
	}
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_CRON;
	env.cron = &req;
	call(x, &env, arg, what, req.op, name);
}

static void get_cache(void *arg, struct http_exchange *x, const struct http_req *r)
{
	(void)r;
	Chorus__CacheReq req = CHORUS__CACHE_REQ__INIT;
	req.op = CHORUS__CACHE_OP__CACHE_STATS;
	req.cache = ""; /* every cache */
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_CACHE;
	env.cache = &req;
	call(x, &env, arg, API_CACHE, 0, NULL);
}

/* ---- registration ---- */

static const struct service_ops API_OPS;

static void api_stop(void *svc)
{
	struct api *a = svc;
	tzcache_free(a->zones);
	free(a);
}

static const struct service_ops API_OPS = {
	.name = "http_api",
	.stop = api_stop,
};

int http_api_register(struct host *h)
{
	struct http_svc *s = http_svc_get(h);
	if (s == NULL)
		return 0; /* --http off */
	struct api *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return -1;
	a->host = h;
	a->zones = tzcache_new(NULL);
	if (host_register(h, &API_OPS, a) != 0) {
		tzcache_free(a->zones);
		free(a);
		return -1;
	}
	int rc = 0;
	rc |= http_route_add(s, "GET", "/api/status", 0, get_status, a);
	rc |= http_route_add(s, "GET", "/api/members", 0, get_members, a);
	rc |= http_route_add(s, "GET", "/api/tasks", 0, get_tasks, a);
	rc |= http_route_add(s, "POST", "/api/tasks/", HTTP_ROUTE_WRITE | HTTP_ROUTE_PREFIX,
	                     post_cancel_task, a);
	rc |= http_route_add(s, "GET", "/api/fanouts", 0, get_fanouts, a);
	rc |= http_route_add(s, "POST", "/api/fanouts/", HTTP_ROUTE_WRITE | HTTP_ROUTE_PREFIX,
	                     post_cancel_batch, a);
	rc |= http_route_add(s, "GET", "/api/schedules", 0, get_schedules, a);
	rc |= http_route_add(s, "GET", "/api/schedules/", HTTP_ROUTE_PREFIX, schedule_route, a);
	rc |= http_route_add(s, "POST", "/api/schedules/", HTTP_ROUTE_WRITE | HTTP_ROUTE_PREFIX,
	                     schedule_route, a);
	rc |= http_route_add(s, "GET", "/api/cache", 0, get_cache, a);
	return rc != 0 ? -1 : 0;
}
