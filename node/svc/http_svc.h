/*
 * http_svc.h - the HTTP service (`chorusd --http ADDR`, off by default):
 * /metrics (Prometheus), the dashboard's static files, and the JSON API
 * (docs/http.md). It runs on the loop like every service: non-blocking
 * sockets in poll_fds/on_poll, bounded requests, timeouts for clients that
 * never finish one.
 *
 * Routes: a module adds its routes at registration time (before start)
 * with http_route_add(); the service finds them by method and path.
 * A route answers at once with http_answer_*(), or asks the node itself
 * with http_call() (a local request through the request table, handled
 * exactly as a client's, answered after the iteration's commit) and
 * answers from its completion.
 *
 * Auth (docs/http.md): on a loopback listener reading is open and every
 * route flagged HTTP_ROUTE_WRITE needs `Authorization: Bearer TOKEN`,
 * TOKEN = `clusterctl http-token` (derived from the client root of the
 * cluster secret, compared in constant time). A non-loopback listener is
 * refused at start unless every request needs the token (--http-auth all).
 */
#ifndef CHORUS_SVC_HTTP_SVC_H
#define CHORUS_SVC_HTTP_SVC_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "proto/chorus.pb-c.h"

struct host;
struct http_svc;
struct http_exchange; /* one request being answered */

enum http_route_flags {
	HTTP_ROUTE_WRITE = 1u << 0, /* changes state: needs the bearer token */
	HTTP_ROUTE_PREFIX = 1u << 1, /* pattern matches any path starting with it */
	HTTP_ROUTE_PUBLIC = 1u << 2 /* no token even under --http-auth all (static
	                               files, /api/auth: they hold no cluster data) */
};

struct http_req {
	const char *method;   /* "GET", "POST", ... */
	const char *path;     /* decoded path, no query: "/api/tasks/12/cancel" */
	const char *query;    /* raw query after '?', "" when none */
	const char *body;     /* NULL when none */
	size_t body_len;
	int authorized;       /* the request carried a valid bearer token */
};

typedef void (*http_route_fn)(void *arg, struct http_exchange *x, const struct http_req *r);

/* Registers the service (main.c) when --http is set (0 and nothing
 * registered when it is not). */
int http_svc_register(struct host *h);
/* The service, for modules adding routes (NULL when --http is off). Routes
 * may be added from registration on (main.c registers the API's after
 * http_svc_register). */
struct http_svc *http_svc_get(struct host *h);

/* pattern: an exact path, or with HTTP_ROUTE_PREFIX a prefix. method:
 * "GET" or "POST" (a GET route also answers HEAD). -1 when the table is
 * full (a programming error). */
int http_route_add(struct http_svc *s, const char *method, const char *pattern, unsigned flags,
                   http_route_fn fn, void *arg);
#define HTTP_ROUTES_MAX 64

/* The query parameter `name` of r, decoded, into buf; 0 when present. */
int http_query_param(const struct http_req *r, const char *name, char *buf, size_t len);

/* Answers: each exactly once per exchange (later calls are ignored). */
void http_answer_json(struct http_exchange *x, int status, json_t *body); /* steals body */
void http_answer_error(struct http_exchange *x, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4))); /* {"error": "...", "status": status} */
/* The HTTP status for a CH_ERR_* code of an answer's Error (404 not found,
 * 400 invalid, 403 denied, 503 shutting down/full/no leader, 504 timeout,
 * 500 others). */
int http_status_of_error(int ch_err);
/* Answers x from an Error body: http_status_of_error and its message. */
void http_answer_from_error(struct http_exchange *x, const Chorus__Error *e);
void http_answer_text(struct http_exchange *x, int status, const char *content_type,
                      const char *text, size_t len);

/* A local request: env is handled as a request from a client session
 * (roles: client); done(arg, x, answer) runs on the loop with the answer
 * envelope (an Error body for failures; CH_ERR_SHUTTING_DOWN when the node
 * stopped first), after the iteration's commit. If the HTTP client went
 * away meanwhile, x is NULL in done (free what arg holds; do not answer).
 * Several calls may be outstanding for one exchange (answer once). Returns
 * 0, or -1 (then done never runs and the caller answers). */
int http_call(struct http_exchange *x, Chorus__Envelope *env,
              void (*done)(void *arg, struct http_exchange *x, const Chorus__Envelope *answer),
              void *arg);

/* The node, for routes. */
struct host *http_exchange_host(struct http_exchange *x);

#endif
