/*
 * http_svc.c - the HTTP service (see http_svc.h and docs/http.md): the
 * listener, its connections, the route table, the bearer token, and the
 * routes of its own: /metrics, the dashboard's files, /api/auth,
 * /api/events (long-poll) and /api/events/stream (server-sent events).
 * The JSON API's other routes are svc/http_api.c's.
 *
 * Connections are plain non-blocking TCP polled by the host's loop
 * (poll_fds / on_poll), parsed by core/http.c. One request at a time per
 * connection: pipelined requests wait in the input buffer until the one
 * before is answered, so answers go out in order.
 *
 * The subtle parts:
 *  - Lifetimes. An exchange (one request) can outlive its connection: a
 *    local call (http_call) it made is answered after the commit, maybe
 *    after the client went. The connection only drops its pointer
 *    (x->c = NULL); the exchange is freed when answered or orphaned and no
 *    call is outstanding. A connection is closed at once (fd) but its
 *    memory is freed only in poll_fds, at the start of an iteration, when
 *    nothing can hold it.
 *  - Re-entry. Answers may come from callbacks that run inside other code:
 *    an event (host_event, called from any service), a local call's answer
 *    (after the commit). Those only queue bytes and try a write; parsing the
 *    next pipelined request (which runs routes, which call into other
 *    services) happens only from on_poll and tick (a "kick" flag).
 *  - Bounds: connections (max_connections; beyond, 503 and close), the
 *    request head and body (core/http.h), one request's time from its first
 *    byte (request_timeout, then 408), idle keep-alive time, unsent output
 *    (reading pauses over OUT_PAUSE_BYTES; over OUT_BYTES_MAX, or no write
 *    progress for request_timeout, the connection is closed), event streams
 *    (SSE_STREAMS_MAX, and SSE_OUT_BYTES_MAX unsent per stream).
 */
#include "svc/http_svc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "chorus.h"
#include "config.h"
#include "core/http.h"
#include "io/events.h"
#include "io/log.h"
#include "io/rpc.h"
#include "lib/prom.h"
#include "proto/seal.h"
#include "svc/service.h"
#include "svc/web_assets.h"
#include "views.h"

#define IN_BYTES_MAX (HTTP_HEAD_BYTES_MAX + HTTP_BODY_BYTES_MAX)
#define IN_CHUNK_BYTES 4096
#define OUT_PAUSE_BYTES (256u << 10)  /* unsent: no new request is read */
#define OUT_BYTES_MAX (32u << 20)     /* unsent: the connection is closed */
#define SSE_STREAMS_MAX 32
#define SSE_OUT_BYTES_MAX (256u << 10)
#define SSE_KEEPALIVE_MS 15000
#define SSE_RETRY_MS 3000
#define SSE_REPLAY_DEFAULT 64         /* events a new stream starts with */
#define IDLE_TIMEOUT_MS 60000         /* a keep-alive connection with no request */
#define EVENTS_WAIT_MS_MAX 30000
#define EVENTS_PAGE_DEFAULT 100
#define EVENTS_PAGE_MAX 1000
#define DRAIN_MS_MAX 5000             /* answers owed at a drain: waited for this long */
#define ACCEPTS_PER_POLL 64
#define LISTEN_BACKLOG 128
#define CODES_MAX 32                  /* distinct statuses counted */
#define LOG_EVERY_MS 10000
#define ADDR_BYTES 64

struct route {
	char method[8];
	char pattern[128];
	size_t pattern_len;
	unsigned flags;
	http_route_fn fn;
	void *arg;
};

struct conn;

struct http_exchange {
	struct http_svc *s;
	struct conn *c;           /* NULL once the connection is gone */
	struct http_request req;
	struct http_req r;
	char *body;               /* a copy: the connection's buffer moves on */
	int head_only;            /* HEAD: headers only */
	int answered;
	uint32_t calls;           /* local calls outstanding */
	/* a parked /api/events long-poll */
	int waiting;
	uint64_t after;
	uint32_t max;
	uint64_t deadline_ms;
	struct http_exchange *wnext, *wprev;
};

struct conn {
	struct http_svc *s;
	int fd;
	char addr[ADDR_BYTES];
	char *in;
	size_t in_len, in_cap;
	char *out;
	size_t out_len, out_off, out_cap;
	uint64_t request_start_ms;  /* first byte of the request being read; 0 = none */
	uint64_t idle_since_ms;     /* last answer (or accept) */
	uint64_t write_stall_ms;    /* since when unsent bytes made no progress; 0 = none */
	struct http_exchange *x;    /* the request being answered */
	int close_after;            /* close once the output is sent */
	int dead;                   /* closed; freed at the next poll_fds */
	int kick;                   /* parse the next request at the next chance */
	int continue_sent;
	uint64_t served;            /* requests taken */
	int sse;                    /* an event stream */
	uint64_t sse_keepalive_ms;  /* next keepalive comment */
	uint64_t sse_seq;           /* the newest event written to the stream */
	struct conn *next, *prev;
};

struct code_count {
	int code;
	uint64_t count;
};

struct http_svc {
	struct host *host;
	const struct config_http *hc;
	int listen_fd;
	char listen_addr[ADDR_BYTES];
	struct route routes[HTTP_ROUTES_MAX];
	uint32_t route_count;
	struct conn *conns;
	uint32_t conn_count, sse_count;
	struct conn **polled;       /* the conns poll_fds gave, by fd index */
	int polled_count, polled_cap;
	int listen_polled;
	int poll_budget;            /* fds the host last let us poll */
	struct http_exchange *waiting; /* parked long-polls */
	int subscribed;
	int kick;
	int draining;
	uint64_t drain_started_ms;
	struct code_count codes[CODES_MAX];
	uint32_t code_count;
	uint64_t refused_connections;
};

static void conn_process(struct conn *c);

/* ---- small helpers ---- */

static uint64_t now_ms(const struct http_svc *s)
{
	return host_now(s->host)->mono_ms;
}

static void count_code(struct http_svc *s, int code)
{
	for (uint32_t i = 0; i < s->code_count; i++)
		if (s->codes[i].code == code) {
			s->codes[i].count++;
			return;
		}
	if (s->code_count < CODES_MAX)
		s->codes[s->code_count++] = (struct code_count){code, 1};
}

static void addr_text(const struct sockaddr_storage *ss, char *out, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
		snprintf(out, len, "%s:%u", ip, ntohs(a->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
		snprintf(out, len, "[%s]:%u", ip, ntohs(a->sin6_port));
	} else {
		snprintf(out, len, "?");
	}
}

/* ---- connections: output ---- */

/* Closes the connection now (its memory goes at the next poll_fds). The
 * exchange it was answering loses it: a parked long-poll is dropped, one
 * with local calls outstanding waits for them. */
static void exchange_maybe_free(struct http_exchange *x);

static void waiting_unlink(struct http_svc *s, struct http_exchange *x)
{
	if (!x->waiting)
		return;
	if (x->wprev)
		x->wprev->wnext = x->wnext;
	else
		s->waiting = x->wnext;
	if (x->wnext)
		x->wnext->wprev = x->wprev;
	x->wnext = x->wprev = NULL;
	x->waiting = 0;
}

/* Closes a connection whose client does not read: an abortive close
 * (RST), so the kernel drops the unsent bytes too instead of holding them
 * for a reader that never comes. */
static void conn_kill(struct conn *c, const char *why);
static void conn_abort(struct conn *c, const char *why)
{
	if (c->dead)
		return;
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	(void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	conn_kill(c, why);
}

static void conn_kill(struct conn *c, const char *why)
{
	if (c->dead)
		return;
	struct http_svc *s = c->s;
	if (why)
		log_limited(LOG_INFO, "http", why, LOG_EVERY_MS, "closed %s: %s", c->addr, why);
	c->dead = 1;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	if (c->sse)
		s->sse_count--;
	c->sse = 0;
	struct http_exchange *x = c->x;
	c->x = NULL;
	if (x) {
		x->c = NULL;
		waiting_unlink(s, x);
		exchange_maybe_free(x);
	}
	free(c->in);
	free(c->out);
	c->in = c->out = NULL;
	c->in_len = c->in_cap = c->out_len = c->out_off = c->out_cap = 0;
	s->conn_count--;
}

/* Sends what it can of the output; 0, or -1 when the connection died. */
static int conn_flush(struct conn *c)
{
	while (!c->dead && c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
		                 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			c->out_off += (size_t)n;
			c->write_stall_ms = now_ms(c->s);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		conn_kill(c, NULL); /* the peer went */
		return -1;
	}
	if (c->dead)
		return -1;
	if (c->out_off == c->out_len) {
		c->out_off = c->out_len = 0;
		c->write_stall_ms = 0;
		/* a request read while answers were stuck starts its clock now */
		if (c->request_start_ms)
			c->request_start_ms = now_ms(c->s);
		if (c->close_after) {
			/* everything said: a FIN after the last byte */
			shutdown(c->fd, SHUT_WR);
			conn_kill(c, NULL);
			return -1;
		}
	}
	return 0;
}

/* Appends to the output; 0, or -1 when the connection was closed for it
 * (the unsent output would exceed its cap). */
static int conn_write(struct conn *c, const void *data, size_t len)
{
	if (c->dead)
		return -1;
	size_t cap = c->sse ? SSE_OUT_BYTES_MAX : OUT_BYTES_MAX;
	if (c->out_len - c->out_off + len > cap) {
		conn_abort(c, c->sse ? "event stream reader too slow: unsent output over its cap"
		                     : "client does not read its answers: unsent output over its cap");
		return -1;
	}
	if (c->out_off && c->out_len + len > c->out_cap) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	if (c->out_len + len > c->out_cap) {
		size_t cap2 = c->out_cap ? c->out_cap : 4096;
		while (cap2 < c->out_len + len)
			cap2 *= 2;
		char *p = realloc(c->out, cap2);
		if (!p) {
			conn_kill(c, "out of memory");
			return -1;
		}
		c->out = p;
		c->out_cap = cap2;
	}
	if (c->out_len == c->out_off && !c->write_stall_ms)
		c->write_stall_ms = now_ms(c->s);
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
	return 0;
}

/* One whole answer: status line, headers, body. extra: more header lines,
 * each ending in CRLF (or NULL). */
static void conn_respond(struct conn *c, int status, const char *ctype, const char *extra,
                         const void *body, size_t len, int head_only, int keep_alive)
{
	struct http_svc *s = c->s;
	count_code(s, status);
	if (s->draining)
		keep_alive = 0;
	if (!keep_alive)
		c->close_after = 1;
	char head[1024];
	int n = snprintf(head, sizeof head,
	                 "HTTP/1.1 %d %s\r\n"
	                 "Content-Type: %s\r\n"
	                 "Content-Length: %zu\r\n"
	                 "X-Content-Type-Options: nosniff\r\n"
	                 "X-Frame-Options: DENY\r\n"
	                 "Referrer-Policy: no-referrer\r\n"
	                 "%s"
	                 "Connection: %s\r\n\r\n",
	                 status, http_status_text(status), ctype, len, extra ? extra : "",
	                 keep_alive ? "keep-alive" : "close");
	if (n < 0 || (size_t)n >= sizeof head) {
		conn_kill(c, "answer headers too long");
		return;
	}
	if (conn_write(c, head, (size_t)n) != 0)
		return;
	if (!head_only && len && conn_write(c, body, len) != 0)
		return;
	c->idle_since_ms = now_ms(s);
	(void)conn_flush(c);
}

static char *error_body(int status, const char *msg, size_t *len)
{
	json_t *o = json_pack("{s:s, s:i}", "error", msg, "status", status);
	if (!o) {
		/* msg is not UTF-8 (it may quote a request's path or query, which
		 * can hold any byte): still an error object, its bytes beyond
		 * ASCII as '?' */
		char ascii[1024];
		size_t i = 0;
		for (; msg[i] && i + 1 < sizeof ascii; i++)
			ascii[i] = (unsigned char)msg[i] < 0x80 ? msg[i] : '?';
		ascii[i] = '\0';
		o = json_pack("{s:s, s:i}", "error", ascii, "status", status);
	}
	char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	*len = text ? strlen(text) : 0;
	return text;
}

/* An error answer outside any exchange (a refused request): the
 * connection closes after it. */
static void conn_error(struct conn *c, int status, const char *msg)
{
	size_t len;
	char *body = error_body(status, msg, &len);
	conn_respond(c, status, "application/json", "Cache-Control: no-store\r\n",
	             body ? body : "{}", body ? len : 2, 0, 0);
	free(body);
}

/* ---- exchanges ---- */

static void exchange_free(struct http_exchange *x)
{
	free(x->body);
	free(x);
}

/* Frees x once nothing refers to it: answered (or orphaned), not waiting,
 * no local call outstanding. A connection it was answering goes on with
 * its next request. */
static void exchange_maybe_free(struct http_exchange *x)
{
	if (x->calls || x->waiting)
		return;
	if (x->c && !x->answered)
		return;
	struct conn *c = x->c;
	if (c) {
		c->x = NULL;
		c->kick = 1;
		x->s->kick = 1;
	}
	exchange_free(x);
}

static void answer_raw(struct http_exchange *x, int status, const char *ctype, const char *extra,
                       const void *body, size_t len)
{
	if (x->answered)
		return;
	x->answered = 1;
	struct conn *c = x->c;
	if (c) {
		/* detached first: writing may close the connection, which must
		 * not free x under us */
		x->c = NULL;
		c->x = NULL;
		c->kick = 1;
		x->s->kick = 1;
		conn_respond(c, status, ctype, extra, body, len, x->head_only, x->req.keep_alive);
	}
	exchange_maybe_free(x);
}

void http_answer_text(struct http_exchange *x, int status, const char *content_type,
                      const char *text, size_t len)
{
	if (!x)
		return;
	answer_raw(x, status, content_type, "Cache-Control: no-store\r\n", text, len);
}

void http_answer_json(struct http_exchange *x, int status, json_t *body)
{
	if (!x) {
		json_decref(body);
		return;
	}
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (!text) {
		http_answer_error(x, 500, "could not encode the answer");
		return;
	}
	http_answer_text(x, status, "application/json", text, strlen(text));
	free(text);
}

void http_answer_error(struct http_exchange *x, int status, const char *fmt, ...)
{
	if (!x || x->answered)
		return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	size_t len;
	char *body = error_body(status, msg, &len);
	const char *extra = status == 401 ? "Cache-Control: no-store\r\n"
	                                    "WWW-Authenticate: Bearer realm=\"chorus\"\r\n"
	                                  : "Cache-Control: no-store\r\n";
	answer_raw(x, status, "application/json", extra, body ? body : "{}", body ? len : 2);
	free(body);
}

int http_status_of_error(int ch_err)
{
	/* the one table (docs/http.md "Errors"): every route maps a node's
	 * error through it */
	switch (ch_err) {
	case CH_ERR_INVALID:
	case CH_ERR_UNKNOWN_HANDLER:
		return 400;
	case CH_ERR_AUTH:
		return 401;
	case CH_ERR_DENIED:
		return 403;
	case CH_ERR_NOT_FOUND:
		return 404;
	case CH_ERR_CLOSED:
		return 409;
	case CH_ERR_TOO_LARGE:
		return 413;
	case CH_ERR_FULL:
		return 429;
	case CH_ERR_SHUTTING_DOWN:
	case CH_ERR_NOT_LEADER:
	case CH_ERR_UNAVAILABLE:
	case CH_ERR_MOVED:
	case CH_ERR_UNREACHABLE:
		return 503;
	case CH_ERR_TIMEOUT:
		return 504;
	default:
		return 500;
	}
}

void http_answer_from_error(struct http_exchange *x, const Chorus__Error *e)
{
	if (!e) {
		http_answer_error(x, 500, "the node gave no answer");
		return;
	}
	http_answer_error(x, http_status_of_error(e->code), "%s",
	                  e->message && e->message[0] ? e->message : ch_strerror(e->code));
}

struct host *http_exchange_host(struct http_exchange *x)
{
	return x->s->host;
}

int http_query_param(const struct http_req *r, const char *name, char *buf, size_t len)
{
	return http_query_get(r->query ? r->query : "", name, buf, len);
}

/* ---- local calls ---- */

struct local {
	struct http_exchange *x;
	void (*done)(void *arg, struct http_exchange *x, const Chorus__Envelope *answer);
	void *arg;
};

static void local_done(void *arg, const Chorus__Envelope *answer)
{
	struct local *l = arg;
	struct http_exchange *x = l->x;
	Chorus__Error e = CHORUS__ERROR__INIT;
	Chorus__Envelope stopped = CHORUS__ENVELOPE__INIT;
	if (!answer) {
		/* the node stopped before answering */
		e.code = CH_ERR_SHUTTING_DOWN;
		e.message = (char *)"the node is stopping";
		stopped.body_case = CHORUS__ENVELOPE__BODY_ERROR;
		stopped.error = &e;
		answer = &stopped;
	}
	l->done(l->arg, x->c ? x : NULL, answer);
	x->calls--;
	free(l);
	exchange_maybe_free(x);
}

int http_call(struct http_exchange *x, Chorus__Envelope *env,
              void (*done)(void *arg, struct http_exchange *x, const Chorus__Envelope *answer),
              void *arg)
{
	if (!x || !env || !done || !x->c || x->answered)
		return -1;
	struct rpc *r = host_rpc(x->s->host);
	if (!r)
		return -1;
	struct local *l = calloc(1, sizeof *l);
	if (!l)
		return -1;
	l->x = x;
	l->done = done;
	l->arg = arg;
	x->calls++;
	if (env->version == 0)
		env->version = CH_PROTOCOL_VERSION;
	if (rpc_local_call(r, env, RPC_ROLE_CLIENT, local_done, l) != 0) {
		x->calls--;
		free(l);
		return -1;
	}
	return 0;
}

/* ---- routes ---- */

int http_route_add(struct http_svc *s, const char *method, const char *pattern, unsigned flags,
                   http_route_fn fn, void *arg)
{
	if (!s || !method || !pattern || !fn || s->route_count >= HTTP_ROUTES_MAX ||
	    strlen(method) >= sizeof(s->routes[0].method) ||
	    strlen(pattern) >= sizeof(s->routes[0].pattern) || pattern[0] != '/')
		return -1;
	struct route *rt = &s->routes[s->route_count++];
	snprintf(rt->method, sizeof rt->method, "%s", method);
	snprintf(rt->pattern, sizeof rt->pattern, "%s", pattern);
	rt->pattern_len = strlen(pattern);
	rt->flags = flags;
	rt->fn = fn;
	rt->arg = arg;
	return 0;
}

static int route_matches_path(const struct route *rt, const char *path)
{
	if (rt->flags & HTTP_ROUTE_PREFIX)
		return strncmp(path, rt->pattern, rt->pattern_len) == 0;
	return strcmp(path, rt->pattern) == 0;
}

/* The route for method and path; an exact pattern wins over a prefix, a
 * longer prefix over a shorter. allow: the methods the path has (for 405). */
static const struct route *route_find(const struct http_svc *s, const char *method,
                                      const char *path, char *allow, size_t allow_len)
{
	const struct route *best = NULL;
	size_t allow_used = 0;
	allow[0] = '\0';
	const char *m = strcmp(method, "HEAD") == 0 ? "GET" : method;
	for (uint32_t i = 0; i < s->route_count; i++) {
		const struct route *rt = &s->routes[i];
		if (!route_matches_path(rt, path))
			continue;
		if (!strstr(allow, rt->method)) {
			int n = snprintf(allow + allow_used, allow_len - allow_used, "%s%s%s",
			                 allow_used ? ", " : "", rt->method,
			                 strcmp(rt->method, "GET") == 0 ? ", HEAD" : "");
			if (n > 0 && (size_t)n < allow_len - allow_used)
				allow_used += (size_t)n;
		}
		if (strcmp(rt->method, m) != 0)
			continue;
		if (!best || (!(rt->flags & HTTP_ROUTE_PREFIX) && (best->flags & HTTP_ROUTE_PREFIX)) ||
		    ((rt->flags & HTTP_ROUTE_PREFIX) && (best->flags & HTTP_ROUTE_PREFIX) &&
		     rt->pattern_len > best->pattern_len))
			best = rt;
	}
	return best;
}

/* ---- auth ---- */

/* Whether the request carries a valid token: "Authorization: Bearer HEX",
 * or for a GET ?token=HEX (EventSource cannot set headers). */
static int request_authorized(struct http_svc *s, const struct http_request *req)
{
	char hex[2 * SEAL_HTTP_TOKEN_BYTES + 8] = "";
	const char *a = req->authorization;
	if (strncasecmp(a, "Bearer ", 7) == 0) {
		a += 7;
		while (*a == ' ')
			a++;
		snprintf(hex, sizeof hex, "%s", a);
	} else if (strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0) {
		if (http_query_get(req->query, "token", hex, sizeof hex) != 0)
			hex[0] = '\0';
	}
	if (strlen(hex) != 2 * SEAL_HTTP_TOKEN_BYTES)
		return 0;
	uint8_t tok[SEAL_HTTP_TOKEN_BYTES];
	size_t got = 0;
	if (sodium_hex2bin(tok, sizeof tok, hex, strlen(hex), NULL, &got, NULL) != 0 ||
	    got != sizeof tok)
		return 0;
	int ok = seal_http_token_check(host_keyring(s->host), tok);
	sodium_memzero(tok, sizeof tok);
	return ok;
}

/* Whether a Host value names this machine's loopback: localhost,
 * 127.x.x.x or [::1], with or without a port. With --http-auth open,
 * reading needs no token because only local processes reach a loopback
 * listener; a web page can still reach it through DNS rebinding (its own
 * name made to resolve to 127.0.0.1), and then the browser sends that name
 * as Host. Answering only loopback names keeps such a page from reading
 * the cluster's state. */
static int host_is_loopback_name(const char *value)
{
	char h[HTTP_HOST_BYTES_MAX + 1];
	const char *rest;
	size_t n;
	if (value[0] == '[') {
		const char *close_b = strchr(value, ']');
		if (!close_b)
			return 0;
		n = (size_t)(close_b - value - 1);
		memcpy(h, value + 1, n);
		rest = close_b + 1;
	} else {
		const char *colon = strchr(value, ':');
		n = colon ? (size_t)(colon - value) : strlen(value);
		memcpy(h, value, n);
		rest = value + n;
	}
	h[n] = '\0';
	if (rest[0] == ':') {
		rest++;
		if (!rest[0])
			return 0;
		for (; *rest; rest++)
			if (*rest < '0' || *rest > '9')
				return 0;
	} else if (rest[0]) {
		return 0;
	}
	for (size_t i = 0; i < n; i++)
		if (h[i] >= 'A' && h[i] <= 'Z')
			h[i] = (char)(h[i] - 'A' + 'a');
	if (n > 1 && h[n - 1] == '.') /* "localhost." is localhost */
		h[n - 1] = '\0';
	return config_host_is_loopback(h);
}

/* ---- requests ---- */

static void conn_request(struct conn *c, const struct http_request *req)
{
	struct http_svc *s = c->s;
	struct http_exchange *x = calloc(1, sizeof *x);
	if (!x) {
		conn_error(c, 500, "out of memory");
		return;
	}
	x->s = s;
	x->c = c;
	x->req = *req;
	x->req.body = NULL;
	if (req->body && req->content_length) {
		x->body = malloc(req->content_length + 1);
		if (!x->body) {
			free(x);
			conn_error(c, 500, "out of memory");
			return;
		}
		memcpy(x->body, req->body, req->content_length);
		x->body[req->content_length] = '\0';
	}
	x->head_only = strcmp(req->method, "HEAD") == 0;
	x->r.method = x->head_only ? "GET" : x->req.method;
	x->r.path = x->req.path;
	x->r.query = x->req.query;
	x->r.body = x->body;
	x->r.body_len = x->body ? req->content_length : 0;
	x->r.authorized = request_authorized(s, req);
	c->x = x;
	if (s->draining) {
		http_answer_error(x, 503, "the node is shutting down");
		return;
	}
	if (!s->hc->auth_all && x->req.has_host && !host_is_loopback_name(x->req.host)) {
		log_limited(LOG_INFO, "http", "host", LOG_EVERY_MS,
		            "refused %s %s from %s: Host is not a loopback name", x->req.method,
		            x->req.path, c->addr);
		http_answer_error(x, 403, "with --http-auth open the node answers only requests "
		                          "addressed to a loopback name (localhost, 127.0.0.1, "
		                          "[::1]); this Host is not one");
		return;
	}
	char allow[128];
	const struct route *rt = route_find(s, x->req.method, x->req.path, allow, sizeof allow);
	if (!rt) {
		if (allow[0]) {
			char extra[200];
			snprintf(extra, sizeof extra, "Allow: %s\r\nCache-Control: no-store\r\n", allow);
			size_t len;
			char msg[HTTP_TARGET_BYTES_MAX + 256];
			snprintf(msg, sizeof msg, "%s is not allowed on %s (allowed: %s)", x->req.method,
			         x->req.path, allow);
			char *body = error_body(405, msg, &len);
			answer_raw(x, 405, "application/json", extra, body ? body : "{}",
			           body ? len : 2);
			free(body);
			return;
		}
		http_answer_error(x, 404, "no such path: %s", x->req.path);
		return;
	}
	int needs_token = (rt->flags & HTTP_ROUTE_WRITE) ||
	                  (s->hc->auth_all && !(rt->flags & HTTP_ROUTE_PUBLIC));
	if (needs_token && !x->r.authorized) {
		log_limited(LOG_INFO, "http", "unauthorized", LOG_EVERY_MS,
		            "refused %s %s from %s: no valid token", x->req.method, x->req.path,
		            c->addr);
		http_answer_error(x, 401, "%s needs the token: Authorization: Bearer TOKEN, TOKEN "
		                          "from `clusterctl http-token`",
		                  x->req.path);
		return;
	}
	rt->fn(rt->arg, x, &x->r);
	/* the route answered, parked, or made a local call */
}

/* Parses and serves what the input holds, one request at a time. Only
 * from on_poll and tick (routes run from here). */
static void conn_process(struct conn *c)
{
	struct http_svc *s = c->s;
	c->kick = 0;
	while (!c->dead && !c->x && !c->close_after && !c->sse &&
	       c->out_len - c->out_off < OUT_PAUSE_BYTES) {
		if (c->in_len == 0) {
			c->request_start_ms = 0;
			return;
		}
		if (!c->request_start_ms)
			c->request_start_ms = now_ms(s);
		struct http_request *req = malloc(sizeof *req);
		if (!req) {
			conn_kill(c, "out of memory");
			return;
		}
		int rc = http_parse_request(c->in, c->in_len, req);
		if (rc == HTTP_PARSE_MORE) {
			if (req->expect_continue && req->head_bytes && !c->continue_sent) {
				static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
				c->continue_sent = 1;
				if (conn_write(c, cont, sizeof cont - 1) == 0)
					(void)conn_flush(c);
			}
			free(req);
			return;
		}
		if (rc == HTTP_PARSE_ERROR) {
			log_limited(LOG_INFO, "http", "refused", LOG_EVERY_MS,
			            "refused a request from %s: %d %s", c->addr, req->status,
			            req->error);
			c->in_len = 0; /* nothing after a refused request is read */
			conn_error(c, req->status, req->error);
			free(req);
			return;
		}
		/* consumed before the route runs (a pipelined request stays in
		 * the input); the body points into the input, so it is copied
		 * first */
		char *body = NULL;
		if (req->content_length) {
			body = malloc(req->content_length);
			if (!body) {
				free(req);
				conn_kill(c, "out of memory");
				return;
			}
			memcpy(body, req->body, req->content_length);
		}
		req->body = body;
		c->request_start_ms = 0;
		c->continue_sent = 0;
		c->served++;
		memmove(c->in, c->in + req->total_bytes, c->in_len - req->total_bytes);
		c->in_len -= req->total_bytes;
		conn_request(c, req);
		free(body);
		free(req);
		if (!c->dead && !c->x)
			c->kick = 0;
	}
}

/* Reads what arrived; 0, or -1 when the connection died. */
static int conn_read(struct conn *c)
{
	for (int rounds = 0; rounds < 16 && !c->dead; rounds++) {
		if (c->in_len == IN_BYTES_MAX)
			return 0; /* full: the parser will answer 413/431 or a request is pending */
		if (c->in_cap - c->in_len < IN_CHUNK_BYTES && c->in_cap < IN_BYTES_MAX) {
			size_t cap = c->in_cap ? c->in_cap * 2 : IN_CHUNK_BYTES;
			if (cap > IN_BYTES_MAX)
				cap = IN_BYTES_MAX;
			char *p = realloc(c->in, cap);
			if (!p) {
				conn_kill(c, "out of memory");
				return -1;
			}
			c->in = p;
			c->in_cap = cap;
		}
		ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
		if (n > 0) {
			if (c->in_len == 0 && !c->x && !c->request_start_ms)
				c->request_start_ms = now_ms(c->s);
			c->in_len += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		conn_kill(c, NULL); /* closed by the peer, or reset */
		return -1;
	}
	return 0;
}

/* ---- the listener ---- */

static void conn_new(struct http_svc *s, int fd, const struct sockaddr_storage *peer)
{
	struct conn *c = calloc(1, sizeof *c);
	if (!c) {
		close(fd);
		return;
	}
	c->s = s;
	c->fd = fd;
	addr_text(peer, c->addr, sizeof c->addr);
	c->idle_since_ms = now_ms(s);
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->conn_count++;
}

static void accept_some(struct http_svc *s)
{
	for (int i = 0; i < ACCEPTS_PER_POLL && s->listen_fd >= 0; i++) {
		struct sockaddr_storage peer;
		socklen_t len = sizeof peer;
		int fd = accept4(s->listen_fd, (struct sockaddr *)&peer, &len,
		                 SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				log_limited(LOG_WARN, "http", "accept", LOG_EVERY_MS, "accept: %s",
				            strerror(errno));
			return;
		}
		if (s->conn_count >= s->hc->connections_max ||
		    (s->poll_budget && (int)s->conn_count + 2 > s->poll_budget)) {
			/* a bounded answer, never a wait: the client learns why */
			static const char body[] =
				"{\"error\":\"too many connections: retry later\",\"status\":503}";
			char busy[512];
			int bn = snprintf(busy, sizeof busy,
			                  "HTTP/1.1 503 Service Unavailable\r\n"
			                  "Content-Type: application/json\r\n"
			                  "Content-Length: %zu\r\n"
			                  "Retry-After: 1\r\n"
			                  "Connection: close\r\n\r\n%s",
			                  sizeof body - 1, body);
			ssize_t n = send(fd, busy, (size_t)bn, MSG_NOSIGNAL | MSG_DONTWAIT);
			(void)n;
			close(fd);
			s->refused_connections++;
			count_code(s, 503);
			char addr[ADDR_BYTES];
			addr_text(&peer, addr, sizeof addr);
			log_limited(LOG_WARN, "http", "connections-max", LOG_EVERY_MS,
			            "connection from %s refused: %u connections open (max_connections "
			            "%u)",
			            addr, s->conn_count, s->hc->connections_max);
			continue;
		}
		conn_new(s, fd, &peer);
	}
}

static int listener_open(struct http_svc *s, char *err, size_t err_len)
{
	char host[256];
	uint16_t port;
	if (config_parse_hostport(s->hc->listen, host, sizeof host, &port) != 0) {
		snprintf(err, err_len, "http listen '%s' is not HOST:PORT", s->hc->listen);
		return -1;
	}
	char service[8];
	snprintf(service, sizeof service, "%u", port);
	struct addrinfo hints = {0}, *res = NULL;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	int gai = getaddrinfo(host, service, &hints, &res);
	if (gai != 0) {
		snprintf(err, err_len, "http listen %s: %s", s->hc->listen, gai_strerror(gai));
		return -1;
	}
	int fd = -1, last_errno = 0;
	for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			last_errno = errno;
			continue;
		}
		int one = 1;
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (ai->ai_family == AF_INET6)
			(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
			last_errno = errno;
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(err, err_len, "cannot serve HTTP on %s: %s%s", s->hc->listen,
		         strerror(last_errno ? last_errno : EADDRNOTAVAIL),
		         last_errno == EADDRINUSE ? " (another process has the port: choose another "
		                                    "--http port)"
		                                  : "");
		return -1;
	}
	struct sockaddr_storage bound;
	socklen_t bl = sizeof bound;
	if (getsockname(fd, (struct sockaddr *)&bound, &bl) == 0)
		addr_text(&bound, s->listen_addr, sizeof s->listen_addr);
	else
		snprintf(s->listen_addr, sizeof s->listen_addr, "%.*s", ADDR_BYTES - 1, s->hc->listen);
	s->listen_fd = fd;
	return 0;
}

/* ---- events: JSON, long-poll, stream ---- */

/* One event as the API shows it (the same object `clusterctl --json
 * events` prints: client/views.c should share this shape). */
/* The event as the events request sends it, through the one view of it
 * (client/views.c): /api/events and `clusterctl --json events` agree. */
static json_t *event_json(const struct event *e)
{
	Chorus__Event w = CHORUS__EVENT__INIT;
	w.seq = e->seq;
	w.wall_ms = e->wall_ms;
	w.kind = (char *)e->kind;
	w.subject = (char *)e->subject;
	w.message = (char *)e->message;
	return view_event(&w);
}

/* A page of events after `after`, at most max. */
static json_t *events_page(struct http_svc *s, uint64_t after, uint32_t max)
{
	struct events *ev = host_events(s->host);
	const struct event **v = max ? calloc(max, sizeof *v) : NULL;
	uint32_t n = ev && v ? events_since(ev, after, v, max) : 0;
	Chorus__Event *ws = n ? calloc(n, sizeof *ws) : NULL;
	Chorus__Event **wp = n ? calloc(n, sizeof *wp) : NULL;
	if (n && (!ws || !wp))
		n = 0;
	for (uint32_t i = 0; i < n; i++) {
		chorus__event__init(&ws[i]);
		ws[i].seq = v[i]->seq;
		ws[i].wall_ms = v[i]->wall_ms;
		ws[i].kind = (char *)v[i]->kind;
		ws[i].subject = (char *)v[i]->subject;
		ws[i].message = (char *)v[i]->message;
		wp[i] = &ws[i];
	}
	Chorus__EventsResp page = CHORUS__EVENTS_RESP__INIT;
	page.node = (char *)host_config(s->host)->name;
	page.node_id = (char *)host_node_id_hex(s->host);
	page.started_ms = host_started_wall_ms(s->host);
	page.first_seq = ev ? events_first_seq(ev) : 0;
	page.last_seq = ev ? events_last_seq(ev) : 0;
	page.events = wp;
	page.n_events = n;
	json_t *o = view_events_page(&page);
	free(ws);
	free(wp);
	free(v);
	return o;
}

static void waiting_answer(struct http_svc *s, struct http_exchange *x)
{
	waiting_unlink(s, x);
	http_answer_json(x, 200, events_page(s, x->after, x->max));
}

static void sse_send_event(struct conn *c, const struct event *e)
{
	json_t *j = event_json(e);
	char *data = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!data)
		return;
	size_t cap = strlen(data) + EVENT_KIND_BYTES + 64;
	char *frame = malloc(cap);
	if (frame) {
		int n = snprintf(frame, cap, "id: %" PRIu64 "\nevent: %s\ndata: %s\n\n", e->seq,
		                 e->kind, data);
		if (n > 0 && (size_t)n < cap)
			(void)conn_write(c, frame, (size_t)n);
		free(frame);
	}
	free(data);
}

/* Writes the stream's next events from the ring, oldest first, while its
 * unsent output is under half its cap: a new stream's replay, or a reader
 * catching up, goes at the reader's pace instead of being queued at once
 * (a replay of the whole ring can be more than the cap: the stream would
 * be closed at its start, and again at each reconnection). A reader so
 * far behind that the ring moved past its events gets the oldest held: the
 * jump in ids tells it. */
static void sse_pump(struct conn *c)
{
	struct events *ev = host_events(c->s->host);
	while (ev && !c->dead && c->sse && c->out_len - c->out_off < SSE_OUT_BYTES_MAX / 2) {
		const struct event *batch[16];
		uint32_t got = events_since(ev, c->sse_seq, batch, 16);
		if (got == 0)
			break;
		for (uint32_t i = 0; i < got && !c->dead; i++) {
			sse_send_event(c, batch[i]);
			c->sse_seq = batch[i]->seq;
		}
	}
}

/* Pumps and sends until the stream is caught up or the socket is full
 * (then POLLOUT brings us back). */
static void sse_feed(struct conn *c)
{
	struct events *ev = host_events(c->s->host);
	while (ev && !c->dead && c->sse) {
		sse_pump(c);
		if (c->dead || conn_flush(c) != 0)
			return;
		if (c->out_len > c->out_off || c->sse_seq >= events_last_seq(ev))
			return;
	}
}

/* An event was added (events_subscribe): wakes the long-polls waiting for
 * it and writes it to every stream. Runs inside whoever reported it: only
 * queues bytes. */
static void on_event(void *arg, const struct event *e)
{
	struct http_svc *s = arg;
	for (struct http_exchange *x = s->waiting, *n; x; x = n) {
		n = x->wnext;
		if (e->seq > x->after)
			waiting_answer(s, x);
	}
	for (struct conn *c = s->conns; c; c = c->next) {
		if (c->dead || !c->sse)
			continue;
		sse_feed(c);
	}
}

static uint64_t parse_u64(const char *v, int *ok)
{
	char *end = NULL;
	errno = 0;
	if (!v[0] || v[0] == '-') {
		*ok = 0;
		return 0;
	}
	unsigned long long n = strtoull(v, &end, 10);
	*ok = errno == 0 && end && *end == '\0';
	return (uint64_t)n;
}

static void route_events(void *arg, struct http_exchange *x, const struct http_req *r)
{
	struct http_svc *s = arg;
	char v[32];
	int ok = 1;
	uint64_t after = 0, wait_ms = 0, max = EVENTS_PAGE_DEFAULT;
	if (http_query_param(r, "after", v, sizeof v) == 0 && (after = parse_u64(v, &ok), !ok)) {
		http_answer_error(x, 400, "after must be a sequence number");
		return;
	}
	if (http_query_param(r, "wait_ms", v, sizeof v) == 0 &&
	    ((wait_ms = parse_u64(v, &ok)), !ok || wait_ms > EVENTS_WAIT_MS_MAX)) {
		http_answer_error(x, 400, "wait_ms must be 0..%u", EVENTS_WAIT_MS_MAX);
		return;
	}
	if (http_query_param(r, "max", v, sizeof v) == 0 &&
	    ((max = parse_u64(v, &ok)), !ok || max < 1 || max > EVENTS_PAGE_MAX)) {
		http_answer_error(x, 400, "max must be 1..%u", EVENTS_PAGE_MAX);
		return;
	}
	struct events *ev = host_events(s->host);
	uint64_t last = ev ? events_last_seq(ev) : 0;
	/* an `after` beyond the newest is from before a restart of the node
	 * (seqs start again at 1): the reader gets what there is */
	if (after > last)
		after = 0;
	if (wait_ms == 0 || last > after || !s->subscribed) {
		http_answer_json(x, 200, events_page(s, after, (uint32_t)max));
		return;
	}
	x->after = after;
	x->max = (uint32_t)max;
	x->deadline_ms = now_ms(s) + wait_ms;
	x->waiting = 1;
	x->wprev = NULL;
	x->wnext = s->waiting;
	if (s->waiting)
		s->waiting->wprev = x;
	s->waiting = x;
}

static void route_events_stream(void *arg, struct http_exchange *x, const struct http_req *r)
{
	struct http_svc *s = arg;
	struct conn *c = x->c;
	if (s->sse_count >= SSE_STREAMS_MAX) {
		http_answer_error(x, 503, "too many event streams open (%u)", SSE_STREAMS_MAX);
		return;
	}
	if (!s->subscribed) {
		http_answer_error(x, 503, "events are not available");
		return;
	}
	struct events *ev = host_events(s->host);
	uint64_t last = events_last_seq(ev);
	/* where to start: Last-Event-ID (a reconnecting EventSource), else
	 * ?after=, else the last SSE_REPLAY_DEFAULT events */
	int ok = 1;
	uint64_t after = last > SSE_REPLAY_DEFAULT ? last - SSE_REPLAY_DEFAULT : 0;
	char v[32];
	if (x->req.last_event_id[0]) {
		after = parse_u64(x->req.last_event_id, &ok);
		if (!ok)
			after = 0;
	} else if (http_query_param(r, "after", v, sizeof v) == 0) {
		after = parse_u64(v, &ok);
		if (!ok) {
			http_answer_error(x, 400, "after must be a sequence number");
			return;
		}
	}
	if (after > last) /* from before a restart of the node */
		after = 0;
	int head_only = x->head_only;
	x->answered = 1;
	count_code(s, 200);
	static const char head[] = "HTTP/1.1 200 OK\r\n"
	                           "Content-Type: text/event-stream\r\n"
	                           "Cache-Control: no-store\r\n"
	                           "X-Content-Type-Options: nosniff\r\n"
	                           "X-Accel-Buffering: no\r\n"
	                           "Connection: close\r\n\r\n";
	exchange_maybe_free(x); /* c->x is now NULL */
	if (conn_write(c, head, sizeof head - 1) != 0)
		return;
	if (head_only) {
		c->close_after = 1;
		(void)conn_flush(c);
		return;
	}
	char retry[32];
	int rn = snprintf(retry, sizeof retry, "retry: %u\n\n", SSE_RETRY_MS);
	if (conn_write(c, retry, (size_t)rn) != 0)
		return;
	c->sse = 1;
	s->sse_count++;
	c->sse_keepalive_ms = now_ms(s) + SSE_KEEPALIVE_MS;
	c->sse_seq = after;
	sse_feed(c);
}

/* ---- the other routes of this file ---- */

static void route_metrics(void *arg, struct http_exchange *x, const struct http_req *r)
{
	struct http_svc *s = arg;
	(void)r;
	struct prom p;
	prom_init(&p);
	host_metrics_fill(s->host, &p);
	if (p.oom) {
		prom_free(&p);
		http_answer_error(x, 500, "out of memory building the metrics");
		return;
	}
	size_t len = 0;
	const char *text = prom_text(&p, &len);
	http_answer_text(x, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
	prom_free(&p);
}

static void route_auth(void *arg, struct http_exchange *x, const struct http_req *r)
{
	struct http_svc *s = arg;
	http_answer_json(x, 200,
	                 json_pack("{s:b, s:b, s:s}", "write", r->authorized, "read",
	                           r->authorized || !s->hc->auth_all, "auth",
	                           s->hc->auth_all ? "all" : "open"));
}

/* The dashboard's files, from the table built into the binary (never from
 * disk): an ETag of their bytes lets a browser revalidate cheaply. */
static void route_asset(void *arg, struct http_exchange *x, const struct http_req *r)
{
	const struct web_asset *a = arg;
	(void)r;
	uint8_t h[8];
	crypto_generichash(h, sizeof h, a->data, a->len, NULL, 0);
	char etag[2 * sizeof h + 3];
	etag[0] = '"';
	sodium_bin2hex(etag + 1, 2 * sizeof h + 1, h, sizeof h);
	etag[2 * sizeof h + 1] = '"';
	etag[2 * sizeof h + 2] = '\0';
	char extra[256];
	snprintf(extra, sizeof extra,
	         "Cache-Control: no-cache\r\nETag: %s\r\n"
	         "Content-Security-Policy: default-src 'self'; frame-ancestors 'none'\r\n",
	         etag);
	/* If-None-Match is not parsed (core/http.c keeps only what it needs):
	 * browsers then get the bytes again, which are small */
	answer_raw(x, 200, a->content_type, extra, a->data, a->len);
}

/* ---- test routes (CHORUS_HTTP_TEST_ROUTES=1 only) ----
 * The JSON API's routes are http_api.c's; these two let the integration
 * test check http_call (a local request through the request table, parked
 * or not, answered after the commit) and the token on a POST without
 * depending on them. */

static void test_status_done(void *arg, struct http_exchange *x, const Chorus__Envelope *answer)
{
	(void)arg;
	if (!x)
		return;
	if (answer->body_case == CHORUS__ENVELOPE__BODY_ERROR) {
		http_answer_from_error(x, answer->error);
		return;
	}
	if (answer->body_case != CHORUS__ENVELOPE__BODY_STATUS_RESP || !answer->status_resp) {
		http_answer_error(x, 500, "unexpected answer %d", (int)answer->body_case);
		return;
	}
	const Chorus__StatusResp *st = answer->status_resp;
	http_answer_json(x, 200,
	                 json_pack("{s:s, s:s, s:b}", "name", st->name ? st->name : "", "node_id",
	                           st->node_id ? st->node_id : "", "local_call", 1));
}

static void route_test_status(void *arg, struct http_exchange *x, const struct http_req *r)
{
	(void)arg;
	(void)r;
	Chorus__StatusReq req = CHORUS__STATUS_REQ__INIT;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_STATUS;
	env.status = &req;
	if (http_call(x, &env, test_status_done, NULL) != 0)
		http_answer_error(x, 500, "local call refused");
}

/* POST /api/_test/event?kind=K&subject=S: reports an event (the services
 * report theirs through host_event as well); a body is its message's end. */
static void route_test_event(void *arg, struct http_exchange *x, const struct http_req *r)
{
	struct http_svc *s = arg;
	char kind[EVENT_KIND_BYTES], subject[EVENT_SUBJECT_BYTES];
	if (http_query_param(r, "kind", kind, sizeof kind) != 0)
		snprintf(kind, sizeof kind, "test");
	if (http_query_param(r, "subject", subject, sizeof subject) != 0)
		snprintf(subject, sizeof subject, "http");
	host_event(s->host, kind, subject, "a test event (%zu body bytes)%s%.240s", r->body_len,
	           r->body_len ? ": " : "", r->body_len ? r->body : "");
	http_answer_json(x, 200, json_pack("{s:I}", "seq",
	                                   (json_int_t)events_last_seq(host_events(s->host))));
}

/* ---- the service ---- */

static int svc_start(void *svc, struct host *h, const struct now *now, char *err, size_t err_len)
{
	struct http_svc *s = svc;
	(void)now;
	s->host = h;
	struct events *ev = host_events(h);
	if (ev && events_subscribe(ev, on_event, s) == 0)
		s->subscribed = 1;
	else
		log_warn("http", "cannot follow the node's events: /api/events answers at once and "
		                 "/api/events/stream is refused");
	if (listener_open(s, err, err_len) != 0)
		return -1;
	log_info("http", "HTTP on http://%s/ (auth %s: %s)", s->listen_addr,
	         s->hc->auth_all ? "all" : "open",
	         s->hc->auth_all ? "every request needs the token"
	                         : "reading is open, changes need the token");
	return 0;
}

static void conn_free_dead(struct http_svc *s)
{
	for (struct conn *c = s->conns, *n; c; c = n) {
		n = c->next;
		if (!c->dead)
			continue;
		if (c->prev)
			c->prev->next = c->next;
		else
			s->conns = c->next;
		if (c->next)
			c->next->prev = c->prev;
		free(c);
	}
}

static int svc_poll_fds(void *svc, struct pollfd *fds, int max)
{
	struct http_svc *s = svc;
	/* the start of an iteration: nothing holds a dead connection now */
	conn_free_dead(s);
	s->poll_budget = max;
	if (s->polled_cap < max) {
		struct conn **p = realloc(s->polled, (size_t)max * sizeof *p);
		if (!p)
			return 0;
		s->polled = p;
		s->polled_cap = max;
	}
	int n = 0;
	s->listen_polled = 0;
	if (s->listen_fd >= 0 && n < max) {
		fds[n] = (struct pollfd){.fd = s->listen_fd, .events = POLLIN};
		s->polled[n++] = NULL;
		s->listen_polled = 1;
	}
	for (struct conn *c = s->conns; c && n < max; c = c->next) {
		short ev = 0;
		if (c->in_len < IN_BYTES_MAX)
			ev |= POLLIN;
		if (c->out_len > c->out_off)
			ev |= POLLOUT;
		fds[n] = (struct pollfd){.fd = c->fd, .events = ev};
		s->polled[n++] = c;
	}
	s->polled_count = n;
	return n;
}

static void svc_on_poll(void *svc, const struct pollfd *fds, int n, const struct now *now)
{
	struct http_svc *s = svc;
	(void)now;
	for (int i = 0; i < n && i < s->polled_count; i++) {
		struct conn *c = s->polled[i];
		if (!c) {
			if (fds[i].revents & POLLIN)
				accept_some(s);
			continue;
		}
		if (c->dead || !fds[i].revents)
			continue;
		if (fds[i].revents & POLLOUT) {
			if (conn_flush(c) != 0)
				continue;
			if (c->sse) {
				/* room again: the stream's next events */
				sse_feed(c);
				if (c->dead)
					continue;
			}
		}
		if ((fds[i].revents & (POLLHUP | POLLERR)) && !(fds[i].revents & POLLIN)) {
			/* reset, or gone both ways, while its input is full (a
			 * request parked with more behind it, so POLLIN was not
			 * asked): nothing will be read or delivered, and poll
			 * would report it at once again and again */
			conn_kill(c, NULL);
			continue;
		}
		if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
			if (c->sse) {
				/* a stream's client sends nothing more: read to see it go */
				char sink[512];
				ssize_t r = recv(c->fd, sink, sizeof sink, MSG_DONTWAIT);
				if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
					conn_kill(c, NULL);
				continue;
			}
			if (conn_read(c) != 0)
				continue;
		}
		conn_process(c);
	}
}

static void svc_tick(void *svc, const struct now *now)
{
	struct http_svc *s = svc;
	uint64_t t = now->mono_ms;
	uint64_t timeout = s->hc->request_timeout_ms;
	for (struct http_exchange *x = s->waiting, *n; x; x = n) {
		n = x->wnext;
		if (t >= x->deadline_ms || s->draining)
			waiting_answer(s, x);
	}
	for (struct conn *c = s->conns; c; c = c->next) {
		if (c->dead)
			continue;
		if (c->out_len > c->out_off && c->write_stall_ms && t - c->write_stall_ms >= timeout) {
			conn_abort(c, "client took no answer bytes for the request timeout");
			continue;
		}
		if (c->sse) {
			if (s->draining) {
				c->close_after = 1;
				if (c->out_len == c->out_off) {
					shutdown(c->fd, SHUT_WR);
					conn_kill(c, NULL);
				}
				continue;
			}
			if (t >= c->sse_keepalive_ms) {
				static const char ka[] = ": keepalive\n\n";
				c->sse_keepalive_ms = t + SSE_KEEPALIVE_MS;
				if (conn_write(c, ka, sizeof ka - 1) == 0)
					(void)conn_flush(c);
			}
			continue;
		}
		/* (a request waiting only because answers are unsent is the
		 * stalled-output case above, not a slow request) */
		if (!c->x && c->request_start_ms && c->out_len == c->out_off &&
		    t - c->request_start_ms >= timeout) {
			/* slowloris: a request not whole within the timeout */
			log_limited(LOG_INFO, "http", "timeout", LOG_EVERY_MS,
			            "closed %s: no whole request within %" PRIu64 " ms", c->addr,
			            timeout);
			c->in_len = 0;
			conn_error(c, 408, "the request did not arrive within the request timeout");
			continue;
		}
		/* a connection that never sent a request has only the request
		 * timeout to start one: silent connections cannot hold the
		 * slots for long */
		uint64_t idle_max = c->served ? IDLE_TIMEOUT_MS : timeout;
		if (!c->x && !c->in_len && c->out_len == c->out_off &&
		    (s->draining || t - c->idle_since_ms >= idle_max)) {
			conn_kill(c, NULL);
			continue;
		}
		if (c->kick)
			conn_process(c);
	}
	s->kick = 0;
}

static uint64_t svc_next_deadline(void *svc)
{
	struct http_svc *s = svc;
	if (s->kick)
		return 0;
	uint64_t next = UINT64_MAX;
	uint64_t timeout = s->hc->request_timeout_ms;
	for (struct http_exchange *x = s->waiting; x; x = x->wnext)
		if (x->deadline_ms < next)
			next = x->deadline_ms;
	for (struct conn *c = s->conns; c; c = c->next) {
		if (c->dead)
			continue;
		uint64_t d = UINT64_MAX;
		if (c->sse)
			d = c->sse_keepalive_ms;
		else if (!c->x && c->request_start_ms && c->out_len == c->out_off)
			d = c->request_start_ms + timeout;
		else if (!c->x && !c->in_len)
			d = c->idle_since_ms + (c->served ? IDLE_TIMEOUT_MS : timeout);
		if (c->out_len > c->out_off && c->write_stall_ms &&
		    c->write_stall_ms + timeout < d)
			d = c->write_stall_ms + timeout;
		if (d < next)
			next = d;
	}
	return next;
}

static void svc_drain(void *svc, const struct now *now)
{
	struct http_svc *s = svc;
	s->draining = 1;
	s->drain_started_ms = now->mono_ms;
	s->kick = 1;
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		s->listen_fd = -1;
		log_info("http", "draining: the HTTP listener %s is closed; %u connection(s) get "
		                 "the answers they are owed",
		         s->listen_addr, s->conn_count);
	}
}

static int svc_drained(void *svc, const struct now *now)
{
	struct http_svc *s = svc;
	if (now->mono_ms - s->drain_started_ms >= DRAIN_MS_MAX)
		return 1;
	for (struct conn *c = s->conns; c; c = c->next)
		if (!c->dead && (c->x || c->out_len > c->out_off))
			return 0;
	return 1;
}

static void svc_metrics(void *svc, struct prom *p)
{
	struct http_svc *s = svc;
	prom_family(p, "chorus_http_requests_total", PROM_COUNTER,
	            "HTTP requests answered, by status code (refused connections included).");
	for (uint32_t i = 0; i < s->code_count; i++) {
		char code[16];
		snprintf(code, sizeof code, "%d", s->codes[i].code);
		prom_sample(p, "chorus_http_requests_total", (double)s->codes[i].count, "code", code,
		            NULL);
	}
	prom_family(p, "chorus_http_connections", PROM_GAUGE, "HTTP connections open.");
	prom_sample(p, "chorus_http_connections", (double)s->conn_count, NULL);
	prom_family(p, "chorus_http_event_streams", PROM_GAUGE,
	            "Open /api/events/stream connections.");
	prom_sample(p, "chorus_http_event_streams", (double)s->sse_count, NULL);
}

static void svc_stop(void *svc)
{
	struct http_svc *s = svc;
	if (s->subscribed)
		events_unsubscribe(host_events(s->host), on_event, s);
	while (s->waiting) {
		struct http_exchange *x = s->waiting;
		waiting_unlink(s, x);
		x->answered = 1;
	}
	for (struct conn *c = s->conns; c; c = c->next)
		conn_kill(c, NULL);
	conn_free_dead(s);
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	free(s->polled);
	free(s);
}

static const struct service_ops HTTP_OPS = {
	.name = "http",
	.start = svc_start,
	.next_deadline = svc_next_deadline,
	.poll_fds = svc_poll_fds,
	.on_poll = svc_on_poll,
	.tick = svc_tick,
	.drain = svc_drain,
	.drained = svc_drained,
	.metrics = svc_metrics,
	.stop = svc_stop,
};

struct http_svc *http_svc_get(struct host *h)
{
	return host_port_get(h, "http");
}

int http_svc_register(struct host *h)
{
	const struct config *cfg = host_config(h);
	if (!cfg->http.listen[0])
		return 0;
	struct http_svc *s = calloc(1, sizeof *s);
	if (!s)
		return -1;
	s->host = h;
	s->hc = &cfg->http;
	s->listen_fd = -1;
	int rc = 0;
	rc |= http_route_add(s, "GET", "/metrics", 0, route_metrics, s);
	rc |= http_route_add(s, "GET", "/api/auth", HTTP_ROUTE_PUBLIC, route_auth, s);
	rc |= http_route_add(s, "GET", "/api/events", 0, route_events, s);
	rc |= http_route_add(s, "GET", "/api/events/stream", 0, route_events_stream, s);
	const char *test = getenv("CHORUS_HTTP_TEST_ROUTES");
	if (test && strcmp(test, "1") == 0) {
		rc |= http_route_add(s, "GET", "/api/_test/status", 0, route_test_status, s);
		rc |= http_route_add(s, "POST", "/api/_test/status", HTTP_ROUTE_WRITE,
		                     route_test_status, s);
		rc |= http_route_add(s, "POST", "/api/_test/event", HTTP_ROUTE_WRITE,
		                     route_test_event, s);
	}
	for (unsigned i = 0; i < web_asset_count; i++) {
		const struct web_asset *a = &web_assets[i];
		rc |= http_route_add(s, "GET", a->path, HTTP_ROUTE_PUBLIC, route_asset, (void *)a);
		if (strcmp(a->path, "/index.html") == 0)
			rc |= http_route_add(s, "GET", "/", HTTP_ROUTE_PUBLIC, route_asset, (void *)a);
	}
	if (rc != 0 || host_register(h, &HTTP_OPS, s) != 0 || host_port_set(h, "http", s) != 0) {
		free(s);
		return -1;
	}
	return 0;
}
