/*
 * resp_svc.c - the RESP front door of the cache (see resp_svc.h, and
 * docs/resp.md for what a Redis client sees).
 *
 * Owns the listening socket, the client connections (plain non-blocking TCP
 * polled by the host's loop: poll_fds / on_poll), each with its parser
 * (core/resp.h's resp_reader) and its unsent replies (resp_out), and the
 * translation of Redis commands into cache requests (one CacheReq per key,
 * through the "cache" port). The command table and the option grammars are
 * core/resp_cmd.c's; this file does the I/O and the ordering.
 *
 * The subtle parts:
 *  - Replies in order. A client may pipeline many commands; cache calls
 *    answer asynchronously and, when the key is local, synchronously inside
 *    submit(). Each command that cannot answer at once gets a slot in the
 *    connection's queue of replies. A reply is written straight into the
 *    connection's output when its slot is at the head of the queue, and
 *    into the slot's own buffer otherwise; when the head completes, it and
 *    every completed slot behind it move to the output (conn_advance). A
 *    command answered at once with nothing queued writes straight to the
 *    output, so the common case (a local cache) never allocates a slot
 *    buffer.
 *  - Commands run in order too. Two pipelined commands on one key must not
 *    overtake each other inside the cluster (SET k then GET k must see the
 *    SET), so a command that touches a key a still-unanswered write touches
 *    (or that writes a key an unanswered read touches, or that reads or
 *    writes the whole cache: SCAN, DBSIZE, FLUSHDB) waits until that call is
 *    answered: it is copied aside (the deferred queue) and reading pauses.
 *    Commands on other keys go on concurrently.
 *  - Lifetimes. A callback may come after its connection closed: a closed
 *    connection with calls outstanding stays allocated (fd closed, buffers
 *    freed, moved to the dead list) until its last callback, which frees it.
 *    Nothing is freed inside a callback fired during our own processing (a
 *    connection is only closed at the points marked "safe" below), so a
 *    synchronous answer can never pull memory from under the code that
 *    submitted it.
 *  - MOVED. A call answered CH_ERR_MOVED by another member (maps differ
 *    for a moment; nothing was applied) is submitted again after a backoff,
 *    as libchorus does; so a call not answered inside submit() keeps its
 *    request, packed. While it waits it still counts as owed (c->calls), so
 *    its connection cannot be freed under it; stop() answers what waits.
 *  - Bounds: connections (max_clients, and the host's poll budget), the
 *    query buffer and argument limits (the parser's), the replies queued
 *    per connection (CONN_REPLIES_MAX: reading pauses), unsent output
 *    (output_bytes_max: a client that never reads is disconnected), MULTI's
 *    queue, failed AUTHs per connection, and idle time (idle_timeout).
 *
 * Redis behaviour followed (src/networking.c, server.c processCommand,
 * acl.c authCommand, t_string.c, db.c, expire.c of Redis 7.0): the order of
 * checks (unknown command, arity, then authentication), the error texts,
 * protocol errors answered then the connection closed after the reply.
 */
#include "svc/resp_svc.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "chorus.h"
#include "config.h"
#include "core/cstore.h"
#include "core/resp.h"
#include "core/resp_cmd.h"
#include "io/log.h"
#include "lib/arena.h"
#include "lib/err.h"
#include "svc/ports.h"
#include "svc/service.h"

/* What INFO and HELLO say: a Redis 7.0 for clients that check versions. */
#define REDIS_VERSION_TEXT "7.0.0-chorus"

#define CONN_REPLIES_MAX 1024u    /* replies queued per connection; then reading pauses */
#define CONN_READ_BYTES 16384u    /* room asked of the parser per read */
#define CONN_READS_PER_POLL 16    /* fairness between connections */
#define ACCEPTS_PER_POLL 64
#define AUTH_FAILURES_MAX 10u     /* failed AUTH/HELLO AUTH, then the connection closes */
#define MULTI_COMMANDS_MAX 100000u
#define KEYS_TRACKED_MAX 64u      /* more keys: ordered like a whole-cache command */
#define CLIENT_NAME_BYTES_MAX 128u
#define OUT_KEEP_BYTES ((size_t)64 * 1024) /* an emptied output buffer above this is freed */
#define SLOT_BUF_KEEP_BYTES ((size_t)4096)
#define FREE_SLOTS_MAX 4096u
#define DRAIN_GRACE_MS 1000u      /* drain: owed answers awaited this long past the cache's */
#define LISTEN_BACKLOG 511
#define ERR_TEXT_BYTES 200u
#define ADDR_TEXT_BYTES 64u
#define LOG_EVERY_MS 10000u
#define IDLE_CHECK_MS 1000u
#define PATTERN_STACK_BYTES 512u
/* CH_ERR_MOVED (maps differ for a moment; nothing was applied) is retried
 * as libchorus does (docs/cache-client.md): 6 tries, 25 ms apart, doubling
 * to 400 ms. A Redis client would not retry it. */
#define MOVED_TRIES 6u
#define MOVED_RETRY_MS_FIRST 25u
#define MOVED_RETRY_MS_MAX 400u

struct slot;
struct conn;
struct resp_svc;

/* One cache call's callback argument: the slot and which of its calls.
 * A call still unanswered when submit() returns keeps its request, packed,
 * so that CH_ERR_MOVED can be retried (see retry_due). */
struct sub {
	struct slot *slot;
	uint32_t index;
	uint8_t *req;             /* packed CacheReq (owned), NULL = none kept */
	size_t req_bytes;
	uint32_t tries;           /* MOVED answers retried so far */
	uint64_t retry_at_ms;     /* while on the retry list */
	struct sub *retry_next;
	bool fake_moved;          /* test hook: answer MOVED when due */
};

/* MGET: one value as it came back. */
struct mval {
	char *data; /* owned */
	size_t len;
	bool found;
};

typedef void (*slot_reply_fn)(struct slot *s, uint32_t index, int code,
                              const Chorus__CacheResp *r, const char *err);
typedef void (*slot_finish_fn)(struct slot *s, struct resp_out *o);

/* One reply owed, in the connection's queue (or on the free list). */
struct slot {
	struct slot *next;
	struct conn *conn;
	struct resp_out buf;      /* the reply while an earlier one is not out yet */
	slot_reply_fn on_reply;   /* each call's answer */
	slot_finish_fn finish;    /* multi-key: the assembled reply once all answered */
	struct sub one;           /* a single call's argument */
	struct sub *subs;         /* multi-key: one per call (owned) */
	struct mval *vals;        /* MGET (owned) */
	uint32_t waiting;         /* calls not answered yet */
	uint32_t count;           /* calls made (multi-key) */
	int64_t acc;              /* DEL / EXISTS: the sum */
	int aux;                  /* per command: TTL unit, INFO sections, ... */
	int err_code;             /* multi-key: the first failure */
	char err_text[ERR_TEXT_BYTES];
	bool done;
	/* what the calls touch while they wait (see can_run) */
	bool writes, whole_db;
	uint32_t key_count;
	uint64_t key_hash;        /* key_count == 1 */
	uint64_t *key_hashes;     /* key_count > 1 (owned) */
};

/* A command copied aside: deferred (it must wait) or queued by MULTI. */
struct dcmd {
	struct dcmd *next;
	struct resp_arg *argv; /* into this allocation */
	uint32_t argc;
	size_t bytes;          /* on the wire */
	size_t size;           /* of this allocation */
};

struct conn {
	struct conn *prev, *next;  /* the live list, or the dead list */
	struct resp_svc *svc;
	int fd;                    /* -1 once closed */
	uint64_t id;
	char addr[ADDR_TEXT_BYTES], laddr[ADDR_TEXT_BYTES];
	struct resp_reader rd;
	struct resp_out out;
	struct slot *head, *tail;  /* replies owed, in order */
	uint32_t slot_count;
	uint32_t calls;            /* cache callbacks still to come */
	uint32_t waiting_slots;    /* slots with calls outstanding */
	struct dcmd *dq_head, *dq_tail; /* deferred commands, run first */
	uint32_t dq_count;
	struct dcmd *mq_head, *mq_tail; /* MULTI's queue */
	uint32_t mq_count;
	size_t mq_bytes;
	bool in_multi, multi_dirty;
	bool authed;
	uint32_t auth_failures;
	uint32_t db;
	const char *cache;         /* the selected cache's name (the port's) */
	char *name;                /* CLIENT SETNAME (owned), NULL = none */
	const char *last_cmd;
	uint64_t created_ms, active_ms; /* monotonic */
	bool kick;     /* something changed: process and flush at the next pass */
	bool eof;      /* the client closed its side: finish, flush, close */
	bool closing;  /* QUIT, a protocol error, the AUTH cap: flush, then close */
	bool kill;     /* close now, without flushing (output limit, socket error) */
	bool dead;     /* closed, waiting for callbacks */
	const char *kill_why;
};

struct resp_svc {
	struct host *host;
	const struct config *cfg;
	const struct config_resp *rc;
	const struct cache_port *cache;
	int listen_fd;
	char listen_addr[sizeof(((struct config_resp *)0)->listen) + 8]; /* bound, "" = off */
	uint16_t listen_port;
	struct resp_limits limits;
	bool has_password;
	uint8_t pw_key[crypto_generichash_KEYBYTES];
	uint8_t pw_hash[crypto_generichash_BYTES];
	const char *db0;           /* the cache of db 0 */
	struct conn *conns, *dead;
	uint32_t conn_count;
	uint64_t next_id;
	struct conn **polled;      /* poll_fds' order, for on_poll */
	uint32_t polled_count, polled_cap;
	bool listen_polled;
	int poll_budget;           /* fds the host offered at the last poll */
	struct conn *current;      /* the connection being processed */
	struct slot *free_slots;
	uint32_t free_slot_count;
	bool kick;                 /* a connection needs a pass */
	struct sub *retries;       /* calls answered MOVED, to submit again */
	struct sub *submitting;    /* the call inside submit() now */
	bool submit_answered;      /* ... and it was answered in there */
	uint32_t test_moved;       /* CHORUS_TEST_RESP_MOVED: calls answered MOVED first */
	bool draining;
	bool stopped;              /* stop() ran; freed with its last dead connection */
	uint64_t drain_started_ms;
	uint64_t idle_checked_ms;
	Chorus__CacheResp absent;  /* a miss, for calls that answer CH_ERR_NOT_FOUND */
	/* counters (INFO, status) */
	uint64_t connections_received, rejected, commands, errors, auth_failures;
	uint64_t protocol_errors, output_closed, idle_closed, deferred, moved_retries;
};

static void conn_process(struct conn *c);
static void svc_free(struct resp_svc *s);

static const char WHY_OUTPUT[] = "output buffer over its limit";

/* ---- small helpers ---- */

static uint64_t mono_ms(const struct resp_svc *s)
{
	return host_now(s->host)->mono_ms;
}

static int64_t wall_ms(const struct resp_svc *s)
{
	return (int64_t)host_now(s->host)->wall_ms;
}

/* FNV-1a over the db index and the key: collisions only make a command
 * wait when it need not. */
static uint64_t key_hash(uint32_t db, const struct resp_arg *k)
{
	uint64_t h = 14695981039346656037ull ^ db;
	for (size_t i = 0; i < k->len; i++) {
		h ^= (uint8_t)k->ptr[i];
		h *= 1099511628211ull;
	}
	return h;
}

static void err_text(struct conn *c, struct resp_out *o, const char *text)
{
	c->svc->errors++;
	resp_write_error(o, text);
}

static void err_fmt(struct conn *c, struct resp_out *o, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void err_fmt(struct conn *c, struct resp_out *o, const char *fmt, ...)
{
	char text[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	err_text(c, o, text);
}

static void err_cmd(struct conn *c, struct resp_out *o, enum resp_cmd_err e, const char *name,
                    const struct resp_arg *detail)
{
	c->svc->errors++;
	resp_cmd_write_error(o, e, name, detail);
}

/* The cache's codes as Redis-style errors. CH_ERR_INVALID carries the
 * cache's own text ("value is not an integer or out of range"), which gets
 * an ERR code unless it starts with one (an upper-case word). */
static void cache_error(struct conn *c, struct resp_out *o, int code, const char *err)
{
	const char *detail = err && err[0] ? err : NULL;
	switch (code) {
	case CH_ERR_INVALID: {
		if (!detail) {
			err_text(c, o, "ERR invalid request");
			return;
		}
		size_t caps = 0;
		while (detail[caps] >= 'A' && detail[caps] <= 'Z')
			caps++;
		if (caps >= 2 && detail[caps] == ' ')
			err_text(c, o, detail);
		else
			err_fmt(c, o, "ERR %s", detail);
		return;
	}
	case CH_ERR_TOO_LARGE:
		/* the cache's text says whether the key or the value is over */
		err_fmt(c, o, "ERR %s too large%s%s%s",
		        detail && strncmp(detail, "a key", 5) == 0 ? "key" : "value",
		        detail ? " (" : "", detail ? detail : "", detail ? ")" : "");
		return;
	case CH_ERR_UNAVAILABLE:
		err_fmt(c, o, "ERR too few replicas alive%s%s", detail ? ": " : "",
		        detail ? detail : "");
		return;
	case CH_ERR_TIMEOUT:
		err_fmt(c, o, "ERR timed out waiting for replicas%s%s", detail ? ": " : "",
		        detail ? detail : "");
		return;
	case CH_ERR_MOVED:
	case CH_ERR_NOT_LEADER:
		err_text(c, o, "TRYAGAIN the key's partition is moving, retry");
		return;
	case CH_ERR_UNREACHABLE:
		err_fmt(c, o, "ERR the key's primary is unreachable%s%s", detail ? ": " : "",
		        detail ? detail : "");
		return;
	case CH_ERR_SHUTTING_DOWN:
		err_text(c, o, "ERR the node is shutting down");
		return;
	case CH_ERR_NOMEM:
		err_text(c, o, "OOM out of memory");
		return;
	case CH_ERR_FULL:
		err_fmt(c, o, "ERR the cache is busy, retry later%s%s", detail ? ": " : "",
		        detail ? detail : "");
		return;
	default:
		err_fmt(c, o, "ERR %s%s%s", ch_strerror(code), detail ? ": " : "", detail ? detail : "");
		return;
	}
}

/* ---- slots: replies owed, in order ---- */

static struct slot *slot_alloc(struct resp_svc *s)
{
	struct slot *sl = s->free_slots;
	if (sl) {
		s->free_slots = sl->next;
		s->free_slot_count--;
		struct resp_out keep = sl->buf;
		memset(sl, 0, sizeof *sl);
		sl->buf = keep;
		sl->buf.head = sl->buf.len = 0;
		sl->buf.error = 0;
		sl->buf.bytes_max = s->rc->output_bytes_max;
	} else {
		sl = calloc(1, sizeof *sl);
		if (!sl)
			return NULL;
		resp_out_init(&sl->buf, s->rc->output_bytes_max);
	}
	sl->one.slot = sl;
	return sl;
}

static void slot_release(struct resp_svc *s, struct slot *sl)
{
	free(sl->one.req);
	sl->one.req = NULL;
	for (uint32_t i = 0; sl->subs && i < sl->count; i++)
		free(sl->subs[i].req);
	if (sl->vals) {
		for (uint32_t i = 0; i < sl->count; i++)
			free(sl->vals[i].data);
		free(sl->vals);
	}
	free(sl->subs);
	free(sl->key_hashes);
	sl->vals = NULL;
	sl->subs = NULL;
	sl->key_hashes = NULL;
	if (s->free_slot_count >= FREE_SLOTS_MAX || sl->buf.cap > SLOT_BUF_KEEP_BYTES) {
		resp_out_free(&sl->buf);
		if (s->free_slot_count >= FREE_SLOTS_MAX) {
			free(sl);
			return;
		}
		resp_out_init(&sl->buf, s->rc->output_bytes_max);
	}
	sl->next = s->free_slots;
	s->free_slots = sl;
	s->free_slot_count++;
}

/* A new slot at the end of c's queue; NULL when out of memory (the
 * connection is then closed). */
static struct slot *slot_push(struct conn *c)
{
	struct slot *sl = slot_alloc(c->svc);
	if (!sl) {
		c->kill = true;
		c->kill_why = "out of memory";
		return NULL;
	}
	sl->conn = c;
	if (c->tail)
		c->tail->next = sl;
	else
		c->head = sl;
	c->tail = sl;
	c->slot_count++;
	return sl;
}

/* Where a slot's reply goes now: the output when every earlier reply is
 * out, its own buffer otherwise. */
static struct resp_out *slot_out(struct slot *sl)
{
	return sl == sl->conn->head ? &sl->conn->out : &sl->buf;
}

/* Moves every completed reply at the head of the queue to the output. */
static void conn_advance(struct conn *c)
{
	while (c->head && c->head->done) {
		struct slot *sl = c->head;
		size_t n;
		const char *p = resp_out_pending(&sl->buf, &n);
		if (sl->buf.error) {
			c->kill = true;
			c->kill_why = WHY_OUTPUT;
		} else if (n && resp_write_raw(&c->out, p, n) != 0) {
			c->kill = true;
			c->kill_why = WHY_OUTPUT;
		}
		c->head = sl->next;
		if (!c->head)
			c->tail = NULL;
		c->slot_count--;
		slot_release(c->svc, sl);
	}
}

/* A reply answered at once: straight to the output when nothing is owed
 * before it, else into a completed slot. NULL only when out of memory. */
static struct resp_out *sync_out(struct conn *c)
{
	if (!c->head)
		return &c->out;
	struct slot *sl = slot_push(c);
	if (!sl)
		return NULL;
	sl->done = true;
	return &sl->buf;
}

static void slot_track_key(void *arg, uint32_t index);

struct track_ctx {
	struct slot *sl;
	const struct resp_command *cmd;
	uint32_t db;
	uint32_t n;
};

static void slot_track_key(void *arg, uint32_t index)
{
	struct track_ctx *t = arg;
	uint64_t h = key_hash(t->db, &t->cmd->argv[index]);
	if (t->sl->key_count == 1)
		t->sl->key_hash = h;
	else
		t->sl->key_hashes[t->n] = h;
	t->n++;
}

/* Records what a command's calls touch, for the commands behind it. */
static void slot_track(struct conn *c, struct slot *sl, const struct resp_cmd_info *ci,
                       const struct resp_command *cmd)
{
	sl->writes = (ci->flags & RESP_CMD_F_WRITE) != 0;
	sl->whole_db = (ci->flags & RESP_CMD_F_WHOLE_DB) != 0;
	uint32_t n = resp_cmd_keys(ci, cmd->argc, NULL, NULL);
	if (n == 0 || sl->whole_db)
		return;
	if (n > KEYS_TRACKED_MAX) {
		sl->whole_db = true;
		return;
	}
	if (n > 1) {
		sl->key_hashes = malloc(n * sizeof *sl->key_hashes);
		if (!sl->key_hashes) {
			sl->whole_db = true;
			return;
		}
	}
	sl->key_count = n;
	struct track_ctx t = {sl, cmd, c->db, 0};
	resp_cmd_keys(ci, cmd->argc, slot_track_key, &t);
}

/* ---- cache calls ---- */

static void slot_complete(struct slot *sl)
{
	struct conn *c = sl->conn;
	if (sl->finish && !c->dead)
		sl->finish(sl, slot_out(sl));
	sl->done = true;
	assert(c->waiting_slots > 0);
	c->waiting_slots--;
	if (sl == c->head && !c->dead)
		conn_advance(c);
}

static void conn_free(struct conn *c);

/* Every cache answer comes here, on the loop thread, possibly inside
 * submit(). It writes or records the answer and never frees a live
 * connection (see the top of the file). */
static void on_cache_reply(void *arg, int code, const Chorus__CacheResp *r, const char *err)
{
	struct sub *sub = arg;
	struct slot *sl = sub->slot;
	struct conn *c = sl->conn;
	struct resp_svc *s = c->svc;
	assert(c->calls > 0 && sl->waiting > 0);
	if (sub == s->submitting)
		s->submit_answered = true;
	if (code == CH_ERR_MOVED && sub->req && sub->tries + 1 < MOVED_TRIES && !c->dead &&
	    !s->stopped) {
		/* still owed (c->calls unchanged): submitted again at retry_due */
		uint32_t backoff = MOVED_RETRY_MS_FIRST << sub->tries;
		sub->tries++;
		sub->retry_at_ms = mono_ms(s) + (backoff < MOVED_RETRY_MS_MAX ? backoff
		                                                               : MOVED_RETRY_MS_MAX);
		sub->retry_next = s->retries;
		s->retries = sub;
		s->moved_retries++;
		return;
	}
	free(sub->req);
	sub->req = NULL;
	c->calls--;
	sl->waiting--;
	if (code == 0 && !r)
		r = &s->absent;
	if (!c->dead)
		sl->on_reply(sl, sub->index, code, r, err);
	if (sl->waiting == 0)
		slot_complete(sl);
	if (c->dead) {
		if (c->calls == 0) {
			conn_free(c);
			/* the last answer owed after stop(): now the service can go */
			if (s->stopped && !s->dead)
				svc_free(s);
		}
		return;
	}
	c->kick = true;
	if (c != s->current)
		s->kick = true;
}

/* Submits one call of slot sl (its callback argument sub); a refused
 * submit answers through the same path. */
/* Keeps req, packed, for a MOVED retry (best effort: without it a MOVED
 * answer is the client's). */
static void keep_request(struct sub *sub, const Chorus__CacheReq *req)
{
	if (sub->req)
		return;
	size_t n = chorus__cache_req__get_packed_size(req);
	sub->req = malloc(n ? n : 1);
	if (sub->req)
		sub->req_bytes = chorus__cache_req__pack(req, sub->req);
}

/* Submits req for sub, whose call is counted in c->calls already. */
static void submit(struct conn *c, struct sub *sub, const Chorus__CacheReq *req)
{
	struct resp_svc *s = c->svc;
	if (s->test_moved > 0) {
		/* test hook: as if another member answered MOVED, a moment later */
		s->test_moved--;
		keep_request(sub, req);
		if (sub->req) {
			sub->fake_moved = true;
			sub->retry_at_ms = mono_ms(s);
			sub->retry_next = s->retries;
			s->retries = sub;
			return;
		}
	}
	char err[256] = "";
	struct sub *outer = s->submitting;
	bool outer_answered = s->submit_answered;
	s->submitting = sub;
	s->submit_answered = false;
	int rc = s->cache->submit(s->cache->ctx, req, on_cache_reply, sub, err, sizeof err);
	bool answered = s->submit_answered;
	s->submitting = outer;
	s->submit_answered = outer_answered;
	if (rc != 0) {
		on_cache_reply(sub, rc, NULL, err[0] ? err : ch_strerror(rc));
		return;
	}
	/* answered in there: sub may be gone. Otherwise another member answers
	 * later, perhaps MOVED */
	if (!answered)
		keep_request(sub, req);
}

static void call(struct conn *c, struct sub *sub, const Chorus__CacheReq *req)
{
	c->calls++;
	submit(c, sub, req);
}

/* Submits again the calls answered MOVED whose time has come; a call whose
 * connection closed meanwhile is answered MOVED, and so is every one when
 * `all` (stop). */
static void retry_due(struct resp_svc *s, uint64_t now_ms, bool all)
{
	struct sub *due = NULL;
	for (struct sub **p = &s->retries; *p;) {
		struct sub *sub = *p;
		if (all || sub->retry_at_ms <= now_ms) {
			*p = sub->retry_next;
			sub->retry_next = due;
			due = sub;
		} else {
			p = &sub->retry_next;
		}
	}
	while (due) {
		struct sub *sub = due;
		due = sub->retry_next;
		sub->retry_next = NULL;
		struct conn *c = sub->slot->conn;
		if (sub->fake_moved) {
			sub->fake_moved = false;
			if (all)
				sub->tries = MOVED_TRIES;
			on_cache_reply(sub, CH_ERR_MOVED, NULL, "test: the key's partition moved");
			continue;
		}
		Chorus__CacheReq *req = NULL;
		if (!c->dead && !all)
			req = chorus__cache_req__unpack(NULL, sub->req_bytes, sub->req);
		if (!req) {
			sub->tries = MOVED_TRIES;
			on_cache_reply(sub, CH_ERR_MOVED, NULL, "the key's partition moved");
			continue;
		}
		struct conn *outer = s->current;
		s->current = c;
		submit(c, sub, req);
		s->current = outer;
		chorus__cache_req__free_unpacked(req, NULL);
	}
}

static void req_init(struct conn *c, Chorus__CacheReq *req, Chorus__CacheOp op,
                     const struct resp_arg *key)
{
	chorus__cache_req__init(req);
	req->op = op;
	req->cache = (char *)c->cache;
	if (key) {
		req->key.data = (uint8_t *)key->ptr;
		req->key.len = key->len;
	}
}

/* One call answered by fn. */
static void call_one(struct conn *c, const struct resp_cmd_info *ci, const struct resp_command *cmd,
                     const Chorus__CacheReq *req, slot_reply_fn fn, int aux)
{
	struct slot *sl = slot_push(c);
	if (!sl)
		return;
	sl->on_reply = fn;
	sl->aux = aux;
	sl->waiting = 1;
	sl->count = 1;
	c->waiting_slots++;
	slot_track(c, sl, ci, cmd);
	call(c, &sl->one, req);
	/* sl may be gone now (answered and written) */
}

/* A slot for n calls, one per key; its callbacks' arguments ready. */
static struct slot *multi_slot(struct conn *c, const struct resp_cmd_info *ci,
                               const struct resp_command *cmd, uint32_t n, slot_reply_fn fn,
                               slot_finish_fn finish)
{
	struct slot *sl = slot_push(c);
	if (!sl)
		return NULL;
	sl->subs = malloc(n * sizeof *sl->subs);
	if (!sl->subs) {
		/* answer with an error in place of the reply */
		sl->done = true;
		err_text(c, slot_out(sl), "OOM out of memory");
		if (sl == c->head)
			conn_advance(c);
		return NULL;
	}
	for (uint32_t i = 0; i < n; i++)
		sl->subs[i] = (struct sub){.slot = sl, .index = i};
	sl->on_reply = fn;
	sl->finish = finish;
	sl->count = n;
	sl->waiting = n; /* all of them before any is made: the slot outlives the loop */
	c->waiting_slots++;
	slot_track(c, sl, ci, cmd);
	return sl;
}

static bool reply_failed(struct slot *sl, struct resp_out *o, int code, const char *err)
{
	if (code == 0)
		return false;
	cache_error(sl->conn, o, code, err);
	return true;
}

/* Multi-key: keeps the first failure for the assembled reply. */
static bool multi_failed(struct slot *sl, int code, const char *err)
{
	if (code == 0)
		return false;
	if (!sl->err_code) {
		sl->err_code = code;
		snprintf(sl->err_text, sizeof sl->err_text, "%s", err ? err : "");
	}
	return true;
}

static bool multi_finish_failed(struct slot *sl, struct resp_out *o)
{
	if (!sl->err_code)
		return false;
	cache_error(sl->conn, o, sl->err_code, sl->err_text);
	return true;
}

/* ---- replies of single-key calls ---- */

static void r_bulk_value(struct slot *sl, uint32_t i, int code, const Chorus__CacheResp *r,
                         const char *err)
{
	(void)i;
	struct resp_out *o = slot_out(sl);
	if (reply_failed(sl, o, code, err))
		return;
	if (r->found)
		resp_write_bulk(o, r->value.data, r->value.len);
	else
		resp_write_null_bulk(o);
}

/* SET: +OK, or nil when NX/XX did not hold; with GET the old value. */
static void r_set(struct slot *sl, uint32_t i, int code, const Chorus__CacheResp *r,
                  const char *err)
{
	(void)i;
	struct resp_out *o = slot_out(sl);
	if (reply_failed(sl, o, code, err))
		return;
	uint32_t flags = (uint32_t)sl->aux;
	if (flags & RESP_SET_GET) {
		if (r->found)
			resp_write_bulk(o, r->value.data, r->value.len);
		else
			resp_write_null_bulk(o);
	} else if ((flags & (RESP_SET_NX | RESP_SET_XX)) && !r->applied) {
		resp_write_null_bulk(o);
	} else {
		resp_write_ok(o);
	}
}

static void r_ok(struct slot *sl, uint32_t i, int code, const Chorus__CacheResp *r,
                 const char *err)
{
	(void)i;
	(void)r;
	struct resp_out *o = slot_out(sl);
	if (!reply_failed(sl, o, code, err))
		resp_write_ok(o);
}

static void r_applied(struct slot *sl, uint32_t i, int code, const Chorus__CacheResp *r,
                      const char *err)
{
	(void)i;
	struct resp_out *o = slot_out(sl);
	if (!reply_failed(sl, o, code, err))
		resp_write_integer(o, r->applied ? 1 : 0);
}

static void r_integer(struct slot *sl, uint32_t i, int code, const Chorus__CacheResp *r,
                      const char *err)
{
	(void)i;
	struct resp_out *o = slot_out(sl);
	if (!reply_failed(sl, o, code, err))
		resp_write_integer(o, r->integer);
}

/* EXPIRE with a time already past deletes: 1 when the key was there. */
static void r_deleted(struct slot *sl, uint32_t i, int code, const Chorus__CacheResp *r,
                      const char *err)
{
	(void)i;
	struct resp_out *o = slot_out(sl);
	if (!reply_failed(sl, o, code, err))
		resp_write_integer(o, r->integer > 0 || r->found ? 1 : 0);
}

/* TTL (aux 1000) and PTTL (aux 1): -2 absent, -1 no expiry. TTL rounds to
 * the nearest second, as Redis does. */
static void r_ttl(struct slot *sl, uint32_t i, int code, const Chorus__CacheResp *r,
                  const char *err)
{
	(void)i;
	struct resp_out *o = slot_out(sl);
	if (reply_failed(sl, o, code, err))
		return;
	int64_t ttl = r->ttl_ms;
	if (ttl < 0)
		resp_write_integer(o, ttl < -1 ? -2 : -1);
	else if (sl->aux == 1000)
		resp_write_integer(o, (ttl + 500) / 1000);
	else
		resp_write_integer(o, ttl);
}

static void r_type(struct slot *sl, uint32_t i, int code, const Chorus__CacheResp *r,
                   const char *err)
{
	(void)i;
	struct resp_out *o = slot_out(sl);
	if (!reply_failed(sl, o, code, err))
		resp_write_simple(o, r->found ? "string" : "none");
}

static void r_scan(struct slot *sl, uint32_t i, int code, const Chorus__CacheResp *r,
                   const char *err)
{
	(void)i;
	struct resp_out *o = slot_out(sl);
	if (reply_failed(sl, o, code, err))
		return;
	char cursor[24];
	int n = snprintf(cursor, sizeof cursor, "%" PRIu64, r->cursor);
	resp_write_array(o, 2);
	resp_write_bulk(o, cursor, (size_t)n);
	resp_write_array(o, r->n_keys);
	for (size_t k = 0; k < r->n_keys; k++)
		resp_write_bulk(o, r->keys[k].data, r->keys[k].len);
}

/* ---- replies of multi-key calls ---- */

static void m_count(struct slot *sl, uint32_t i, int code, const Chorus__CacheResp *r,
                    const char *err)
{
	(void)i;
	if (multi_failed(sl, code, err))
		return;
	/* DEL counts keys that existed (integer 1), EXISTS keys found */
	sl->acc += sl->aux ? (r->found ? 1 : 0) : (r->integer > 0 ? 1 : 0);
}

static void f_count(struct slot *sl, struct resp_out *o)
{
	if (!multi_finish_failed(sl, o))
		resp_write_integer(o, sl->acc);
}

static void m_mget(struct slot *sl, uint32_t i, int code, const Chorus__CacheResp *r,
                   const char *err)
{
	if (multi_failed(sl, code, err) || !r->found || !sl->vals)
		return;
	struct mval *v = &sl->vals[i];
	v->found = true;
	v->len = r->value.len;
	if (v->len) {
		v->data = malloc(v->len);
		if (!v->data)
			multi_failed(sl, CH_ERR_NOMEM, "out of memory");
		else
			memcpy(v->data, r->value.data, v->len);
	}
}

static void f_mget(struct slot *sl, struct resp_out *o)
{
	if (multi_finish_failed(sl, o))
		return;
	resp_write_array(o, sl->count);
	for (uint32_t i = 0; i < sl->count; i++) {
		if (sl->vals[i].found)
			resp_write_bulk(o, sl->vals[i].data ? sl->vals[i].data : "", sl->vals[i].len);
		else
			resp_write_null_bulk(o);
	}
}

static void m_mset(struct slot *sl, uint32_t i, int code, const Chorus__CacheResp *r,
                   const char *err)
{
	(void)i;
	(void)r;
	multi_failed(sl, code, err);
}

static void f_ok(struct slot *sl, struct resp_out *o)
{
	if (!multi_finish_failed(sl, o))
		resp_write_ok(o);
}

/* ---- commands: keys ---- */

typedef void (*cmd_fn)(struct conn *c, const struct resp_command *cmd,
                       const struct resp_cmd_info *ci);

static void cmd_get(struct conn *c, const struct resp_command *cmd, const struct resp_cmd_info *ci)
{
	Chorus__CacheReq req;
	req_init(c, &req, CHORUS__CACHE_OP__CACHE_GET, &cmd->argv[1]);
	call_one(c, ci, cmd, &req, r_bulk_value, 0);
}

static void cmd_getdel(struct conn *c, const struct resp_command *cmd,
                       const struct resp_cmd_info *ci)
{
	Chorus__CacheReq req;
	req_init(c, &req, CHORUS__CACHE_OP__CACHE_GETDEL, &cmd->argv[1]);
	call_one(c, ci, cmd, &req, r_bulk_value, 0);
}

static void put(struct conn *c, const struct resp_command *cmd, const struct resp_cmd_info *ci,
                uint32_t flags, int64_t ttl_ms, slot_reply_fn fn)
{
	Chorus__CacheReq req;
	req_init(c, &req, CHORUS__CACHE_OP__CACHE_PUT, &cmd->argv[1]);
	bool setex = ci->id == RESP_CMD_SETEX || ci->id == RESP_CMD_PSETEX;
	const struct resp_arg *v = &cmd->argv[setex ? 3 : 2];
	req.value.data = (uint8_t *)v->ptr;
	req.value.len = v->len;
	req.flags = ((flags & RESP_SET_NX) ? CH_CACHE_NX : 0) |
	            ((flags & RESP_SET_XX) ? CH_CACHE_XX : 0) |
	            ((flags & RESP_SET_KEEPTTL) ? CH_CACHE_KEEPTTL : 0) |
	            ((flags & RESP_SET_GET) ? CH_CACHE_GET : 0);
	req.ttl_ms = ttl_ms;
	call_one(c, ci, cmd, &req, fn, (int)flags);
}

static void cmd_set(struct conn *c, const struct resp_command *cmd, const struct resp_cmd_info *ci)
{
	struct resp_set_opts opts;
	enum resp_cmd_err e = resp_cmd_set_parse(cmd->argv, cmd->argc, wall_ms(c->svc), &opts);
	if (e != RESP_CMD_OK) {
		struct resp_out *o = sync_out(c);
		if (o)
			err_cmd(c, o, e, "set", NULL);
		return;
	}
	put(c, cmd, ci, opts.flags, opts.ttl_ms, r_set);
}

static void cmd_setnx(struct conn *c, const struct resp_command *cmd,
                      const struct resp_cmd_info *ci)
{
	put(c, cmd, ci, RESP_SET_NX, 0, r_applied);
}

static void cmd_setex(struct conn *c, const struct resp_command *cmd,
                      const struct resp_cmd_info *ci)
{
	int64_t ttl;
	int64_t unit = ci->id == RESP_CMD_SETEX ? 1000 : 1;
	enum resp_cmd_err e = resp_cmd_ttl_parse(&cmd->argv[2], unit, wall_ms(c->svc), &ttl);
	if (e != RESP_CMD_OK) {
		struct resp_out *o = sync_out(c);
		if (o)
			err_cmd(c, o, e, ci->name, NULL);
		return;
	}
	put(c, cmd, ci, 0, ttl, r_ok);
}

static void cmd_incr(struct conn *c, const struct resp_command *cmd, const struct resp_cmd_info *ci)
{
	int64_t delta = 1;
	if (ci->id == RESP_CMD_DECR) {
		delta = -1;
	} else if (ci->id == RESP_CMD_INCRBY || ci->id == RESP_CMD_DECRBY) {
		struct resp_out *o = NULL;
		if (resp_arg_int64(&cmd->argv[2], &delta) != 0) {
			if ((o = sync_out(c)))
				err_text(c, o, RESP_ERR_NOT_INTEGER);
			return;
		}
		if (ci->id == RESP_CMD_DECRBY) {
			if (delta == INT64_MIN) {
				if ((o = sync_out(c)))
					err_text(c, o, "ERR decrement would overflow");
				return;
			}
			delta = -delta;
		}
	}
	Chorus__CacheReq req;
	req_init(c, &req, CHORUS__CACHE_OP__CACHE_INCR, &cmd->argv[1]);
	req.delta = delta;
	call_one(c, ci, cmd, &req, r_integer, 0);
}

static void cmd_expire(struct conn *c, const struct resp_command *cmd,
                       const struct resp_cmd_info *ci)
{
	int64_t unit = ci->id == RESP_CMD_EXPIRE ? 1000 : 1;
	int64_t ttl = 0;
	/* Redis reads the options first: NX|XX|GT|LT are not supported here */
	enum resp_cmd_err e = cmd->argc > 3 ? RESP_CMD_E_OPTION
	                                    : resp_cmd_expire_parse(&cmd->argv[2], unit,
	                                                            wall_ms(c->svc), &ttl);
	if (e != RESP_CMD_OK) {
		struct resp_out *o = sync_out(c);
		if (o)
			err_cmd(c, o, e, ci->name, cmd->argc > 3 ? &cmd->argv[3] : NULL);
		return;
	}
	Chorus__CacheReq req;
	if (ttl <= 0) {
		/* a time already past: Redis deletes the key and answers 1 if it was there */
		req_init(c, &req, CHORUS__CACHE_OP__CACHE_DEL, &cmd->argv[1]);
		call_one(c, ci, cmd, &req, r_deleted, 0);
		return;
	}
	req_init(c, &req, CHORUS__CACHE_OP__CACHE_EXPIRE, &cmd->argv[1]);
	req.ttl_ms = ttl;
	call_one(c, ci, cmd, &req, r_applied, 0);
}

static void cmd_ttl(struct conn *c, const struct resp_command *cmd, const struct resp_cmd_info *ci)
{
	Chorus__CacheReq req;
	req_init(c, &req, CHORUS__CACHE_OP__CACHE_TTL, &cmd->argv[1]);
	call_one(c, ci, cmd, &req, r_ttl, ci->id == RESP_CMD_TTL ? 1000 : 1);
}

static void cmd_persist(struct conn *c, const struct resp_command *cmd,
                        const struct resp_cmd_info *ci)
{
	Chorus__CacheReq req;
	req_init(c, &req, CHORUS__CACHE_OP__CACHE_PERSIST, &cmd->argv[1]);
	call_one(c, ci, cmd, &req, r_applied, 0);
}

static void cmd_type(struct conn *c, const struct resp_command *cmd, const struct resp_cmd_info *ci)
{
	Chorus__CacheReq req;
	req_init(c, &req, CHORUS__CACHE_OP__CACHE_EXISTS, &cmd->argv[1]);
	call_one(c, ci, cmd, &req, r_type, 0);
}

/* DEL, UNLINK, EXISTS: one call per key, the count summed. */
static void cmd_count_keys(struct conn *c, const struct resp_command *cmd,
                           const struct resp_cmd_info *ci)
{
	bool exists = ci->id == RESP_CMD_EXISTS;
	uint32_t n = cmd->argc - 1;
	struct slot *sl = multi_slot(c, ci, cmd, n, m_count, f_count);
	if (!sl)
		return;
	sl->aux = exists;
	for (uint32_t i = 0; i < n; i++) {
		Chorus__CacheReq req;
		req_init(c, &req, exists ? CHORUS__CACHE_OP__CACHE_EXISTS : CHORUS__CACHE_OP__CACHE_DEL,
		         &cmd->argv[1 + i]);
		call(c, &sl->subs[i], &req);
	}
}

static void cmd_mget(struct conn *c, const struct resp_command *cmd, const struct resp_cmd_info *ci)
{
	uint32_t n = cmd->argc - 1;
	struct slot *sl = multi_slot(c, ci, cmd, n, m_mget, f_mget);
	if (!sl)
		return;
	sl->vals = calloc(n, sizeof *sl->vals);
	if (!sl->vals)
		multi_failed(sl, CH_ERR_NOMEM, "out of memory");
	for (uint32_t i = 0; i < n; i++) {
		Chorus__CacheReq req;
		req_init(c, &req, CHORUS__CACHE_OP__CACHE_GET, &cmd->argv[1 + i]);
		call(c, &sl->subs[i], &req);
	}
}

/* MSET: one PUT per pair, +OK when all are done (not atomic: docs/resp.md). */
static void cmd_mset(struct conn *c, const struct resp_command *cmd, const struct resp_cmd_info *ci)
{
	if ((cmd->argc - 1) % 2 != 0) {
		struct resp_out *o = sync_out(c);
		if (o) {
			c->svc->errors++;
			resp_write_err_arity(o, ci->name);
		}
		return;
	}
	uint32_t n = (cmd->argc - 1) / 2;
	struct slot *sl = multi_slot(c, ci, cmd, n, m_mset, f_ok);
	if (!sl)
		return;
	for (uint32_t i = 0; i < n; i++) {
		Chorus__CacheReq req;
		req_init(c, &req, CHORUS__CACHE_OP__CACHE_PUT, &cmd->argv[1 + 2 * i]);
		req.value.data = (uint8_t *)cmd->argv[2 + 2 * i].ptr;
		req.value.len = cmd->argv[2 + 2 * i].len;
		call(c, &sl->subs[i], &req);
	}
}

/* ---- commands: the whole cache ---- */

static void cmd_scan(struct conn *c, const struct resp_command *cmd, const struct resp_cmd_info *ci)
{
	struct resp_scan_opts opts;
	enum resp_cmd_err e = resp_cmd_scan_parse(cmd->argv, cmd->argc, &opts);
	struct resp_out *o = NULL;
	if (e != RESP_CMD_OK) {
		if ((o = sync_out(c)))
			err_cmd(c, o, e, ci->name, NULL);
		return;
	}
	if (opts.match.len && memchr(opts.match.ptr, '\0', opts.match.len)) {
		if ((o = sync_out(c)))
			err_text(c, o, "ERR a MATCH pattern with a NUL byte is not supported");
		return;
	}
	if (opts.type_other) {
		/* every value is a string: no other type can match */
		if ((o = sync_out(c))) {
			resp_write_array(o, 2);
			resp_write_bulk(o, "0", 1);
			resp_write_array(o, 0);
		}
		return;
	}
	char stack[PATTERN_STACK_BYTES];
	char *pattern = stack;
	if (opts.match.len >= sizeof stack) {
		pattern = malloc(opts.match.len + 1);
		if (!pattern) {
			if ((o = sync_out(c)))
				err_text(c, o, "OOM out of memory");
			return;
		}
	}
	if (opts.match.len)
		memcpy(pattern, opts.match.ptr, opts.match.len);
	pattern[opts.match.len] = '\0';
	Chorus__CacheReq req;
	req_init(c, &req, CHORUS__CACHE_OP__CACHE_SCAN, NULL);
	req.cursor = opts.cursor;
	req.pattern = pattern;
	req.count = opts.count;
	call_one(c, ci, cmd, &req, r_scan, 0);
	if (pattern != stack)
		free(pattern);
}

static void cmd_dbsize(struct conn *c, const struct resp_command *cmd,
                       const struct resp_cmd_info *ci)
{
	Chorus__CacheReq req;
	req_init(c, &req, CHORUS__CACHE_OP__CACHE_DBSIZE, NULL);
	call_one(c, ci, cmd, &req, r_integer, 0);
}

static void cmd_flushdb(struct conn *c, const struct resp_command *cmd,
                        const struct resp_cmd_info *ci)
{
	if (cmd->argc > 2 || (cmd->argc == 2 && !resp_arg_is(&cmd->argv[1], "async") &&
	                      !resp_arg_is(&cmd->argv[1], "sync"))) {
		struct resp_out *o = sync_out(c);
		if (o)
			err_text(c, o, RESP_ERR_SYNTAX);
		return;
	}
	Chorus__CacheReq req;
	req_init(c, &req, CHORUS__CACHE_OP__CACHE_FLUSH, NULL);
	call_one(c, ci, cmd, &req, r_ok, 0);
}

/* ---- INFO ---- */

enum {
	INFO_SERVER = 1 << 0,
	INFO_CLIENTS = 1 << 1,
	INFO_STATS = 1 << 2,
	INFO_KEYSPACE = 1 << 3,
	INFO_CACHE = 1 << 4,
	INFO_ALL = (1 << 5) - 1
};

struct sbuf {
	char *p;
	size_t n, cap;
	bool failed;
};

static void sb_add(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(struct sbuf *b, const char *fmt, ...)
{
	if (b->failed)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->failed = true;
			return;
		}
		if (b->p && (size_t)n < b->cap - b->n) {
			b->n += (size_t)n;
			return;
		}
		size_t cap = b->cap ? b->cap * 2 : 1024;
		while (cap < b->n + (size_t)n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->failed = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
}

static int32_t cache_db(const struct config *cfg, const char *name)
{
	for (uint32_t i = 0; i < cfg->cache_count; i++)
		if (strcmp(cfg->caches[i].name, name) == 0)
			return cfg->caches[i].db;
	return -1;
}

static void info_write(struct conn *c, struct resp_out *o, int sections,
                       const Chorus__CacheResp *r)
{
	struct resp_svc *s = c->svc;
	const struct config *cfg = s->cfg;
	struct sbuf b = {0};
	bool first = true;
	uint64_t up_s = 0;
	uint64_t started = host_started_wall_ms(s->host);
	if ((uint64_t)wall_ms(s) > started)
		up_s = ((uint64_t)wall_ms(s) - started) / 1000;
	if (sections & INFO_SERVER) {
		sb_add(&b, "# Server\r\nredis_version:%s\r\nredis_mode:standalone\r\n"
		           "chorus_version:%s\r\nchorus_node:%s\r\nos:Linux\r\narch_bits:%d\r\n"
		           "process_id:%ld\r\nrun_id:%s\r\ntcp_port:%u\r\nuptime_in_seconds:%" PRIu64
		           "\r\nuptime_in_days:%" PRIu64 "\r\n",
		       REDIS_VERSION_TEXT, CH_VERSION_STRING, cfg->name, (int)(sizeof(void *) * 8),
		       (long)getpid(), host_node_id_hex(s->host), s->listen_port, up_s, up_s / 86400);
		first = false;
	}
	if (sections & INFO_CLIENTS) {
		sb_add(&b, "%s# Clients\r\nconnected_clients:%u\r\nmaxclients:%u\r\nblocked_clients:0\r\n",
		       first ? "" : "\r\n", s->conn_count, s->rc->clients_max);
		first = false;
	}
	uint64_t hits = 0, misses = 0, evictions = 0, expirations = 0;
	for (size_t i = 0; r && i < r->n_stats; i++) {
		hits += r->stats[i]->hits;
		misses += r->stats[i]->misses;
		evictions += r->stats[i]->evictions;
		expirations += r->stats[i]->expirations;
	}
	if (sections & INFO_STATS) {
		sb_add(&b, "%s# Stats\r\ntotal_connections_received:%" PRIu64
		           "\r\ntotal_commands_processed:%" PRIu64 "\r\nrejected_connections:%" PRIu64
		           "\r\ntotal_error_replies:%" PRIu64 "\r\nchorus_auth_failures:%" PRIu64
		           "\r\nchorus_protocol_errors:%" PRIu64 "\r\nchorus_output_limit_closed:%" PRIu64
		           "\r\nchorus_idle_closed:%" PRIu64 "\r\nchorus_commands_deferred:%" PRIu64
		           "\r\nchorus_moved_retries:%" PRIu64
		           "\r\nkeyspace_hits:%" PRIu64 "\r\nkeyspace_misses:%" PRIu64
		           "\r\nevicted_keys:%" PRIu64 "\r\nexpired_keys:%" PRIu64 "\r\n",
		       first ? "" : "\r\n", s->connections_received, s->commands, s->rejected,
		       s->errors, s->auth_failures, s->protocol_errors, s->output_closed, s->idle_closed,
		       s->deferred, s->moved_retries, hits, misses,
		       evictions, expirations);
		first = false;
	}
	if (sections & INFO_KEYSPACE) {
		sb_add(&b, "%s# Keyspace\r\n", first ? "" : "\r\n");
		for (size_t i = 0; r && i < r->n_stats; i++) {
			const Chorus__CacheStatsInfo *st = r->stats[i];
			int32_t db = cache_db(cfg, st->cache);
			if (db >= 0 && st->entries > 0)
				sb_add(&b, "db%d:keys=%" PRIu64 ",expires=0,avg_ttl=0\r\n", db, st->entries);
		}
		first = false;
	}
	if (sections & INFO_CACHE) {
		sb_add(&b, "%s# Cache\r\n", first ? "" : "\r\n");
		for (size_t i = 0; r && i < r->n_stats; i++) {
			const Chorus__CacheStatsInfo *st = r->stats[i];
			sb_add(&b, "cache_%s:db=%d,entries=%" PRIu64 ",memory_bytes=%" PRIu64
			           ",hits=%" PRIu64 ",misses=%" PRIu64 ",evictions=%" PRIu64
			           ",expirations=%" PRIu64 ",tombstones=%" PRIu64 ",hints_pending=%" PRIu64
			           ",partitions_primary=%u,partitions_replica=%u,partitions_moving=%u\r\n",
			       st->cache, cache_db(cfg, st->cache), st->entries, st->memory_bytes, st->hits,
			       st->misses, st->evictions, st->expirations, st->tombstones,
			       st->hints_pending, st->partitions_primary, st->partitions_replica,
			       st->partitions_moving);
		}
	}
	if (b.failed)
		err_text(c, o, "OOM out of memory");
	else
		resp_write_bulk(o, b.p ? b.p : "", b.n);
	free(b.p);
}

static void r_info(struct slot *sl, uint32_t i, int code, const Chorus__CacheResp *r,
                   const char *err)
{
	(void)i;
	(void)err;
	/* without the cache's figures INFO still answers the rest */
	info_write(sl->conn, slot_out(sl), sl->aux, code == 0 ? r : NULL);
}

static void cmd_info(struct conn *c, const struct resp_command *cmd, const struct resp_cmd_info *ci)
{
	int sections = 0;
	if (cmd->argc == 1)
		sections = INFO_ALL;
	for (uint32_t i = 1; i < cmd->argc; i++) {
		const struct resp_arg *a = &cmd->argv[i];
		if (resp_arg_is(a, "default") || resp_arg_is(a, "all") || resp_arg_is(a, "everything"))
			sections |= INFO_ALL;
		else if (resp_arg_is(a, "server"))
			sections |= INFO_SERVER;
		else if (resp_arg_is(a, "clients"))
			sections |= INFO_CLIENTS;
		else if (resp_arg_is(a, "stats"))
			sections |= INFO_STATS;
		else if (resp_arg_is(a, "keyspace"))
			sections |= INFO_KEYSPACE;
		else if (resp_arg_is(a, "cache"))
			sections |= INFO_CACHE;
	}
	if (!(sections & (INFO_STATS | INFO_KEYSPACE | INFO_CACHE))) {
		struct resp_out *o = sync_out(c);
		if (o)
			info_write(c, o, sections, NULL);
		return;
	}
	Chorus__CacheReq req;
	req_init(c, &req, CHORUS__CACHE_OP__CACHE_STATS, NULL);
	req.cache = (char *)""; /* every cache of this node */
	call_one(c, ci, cmd, &req, r_info, sections);
}

/* ---- commands: the connection ---- */

static void cmd_ping(struct conn *c, const struct resp_command *cmd, const struct resp_cmd_info *ci)
{
	struct resp_out *o = sync_out(c);
	if (!o)
		return;
	if (cmd->argc > 2) {
		c->svc->errors++;
		resp_write_err_arity(o, ci->name);
	} else if (cmd->argc == 2) {
		resp_write_bulk(o, cmd->argv[1].ptr, cmd->argv[1].len);
	} else {
		resp_write_simple(o, "PONG");
	}
}

static void cmd_echo(struct conn *c, const struct resp_command *cmd, const struct resp_cmd_info *ci)
{
	(void)ci;
	struct resp_out *o = sync_out(c);
	if (o)
		resp_write_bulk(o, cmd->argv[1].ptr, cmd->argv[1].len);
}

static bool user_is_default(const struct resp_arg *user)
{
	return !user || (user->len == 7 && memcmp(user->ptr, "default", 7) == 0);
}

/* 1 when the pair is right. The password is compared as a keyed hash in
 * constant time, so neither its bytes nor its length leak through timing. */
static bool auth_ok(struct resp_svc *s, const struct resp_arg *user, const struct resp_arg *pass)
{
	uint8_t h[crypto_generichash_BYTES];
	crypto_generichash(h, sizeof h, (const unsigned char *)pass->ptr, pass->len, s->pw_key,
	                   sizeof s->pw_key);
	bool same = sodium_memcmp(h, s->pw_hash, sizeof h) == 0;
	return same && user_is_default(user);
}

/* A failed AUTH: WRONGPASS, counted; at the cap the connection closes. */
static void auth_failed(struct conn *c, struct resp_out *o)
{
	struct resp_svc *s = c->svc;
	c->auth_failures++;
	s->auth_failures++;
	err_text(c, o, RESP_ERR_WRONGPASS);
	log_limited(LOG_WARN, "resp", "auth", LOG_EVERY_MS,
	            "failed AUTH from %s (%u on this connection, %" PRIu64 " in all)%s", c->addr,
	            c->auth_failures, s->auth_failures,
	            c->auth_failures >= AUTH_FAILURES_MAX ? ": connection closed" : "");
	if (c->auth_failures >= AUTH_FAILURES_MAX)
		c->closing = true;
}

static void auth_succeeded(struct conn *c)
{
	c->authed = true;
	resp_reader_set_auth_required(&c->rd, false);
}

/* Authenticates with user (NULL = "default") and pass; writes an error and
 * returns false on failure. */
static bool auth_try(struct conn *c, struct resp_out *o, const struct resp_arg *user,
                     const struct resp_arg *pass)
{
	struct resp_svc *s = c->svc;
	if (!s->has_password) {
		/* the default user needs no password: any is taken for it */
		if (user_is_default(user))
			return true;
		auth_failed(c, o);
		return false;
	}
	if (!auth_ok(s, user, pass)) {
		auth_failed(c, o);
		return false;
	}
	auth_succeeded(c);
	return true;
}

static void cmd_auth(struct conn *c, const struct resp_command *cmd, const struct resp_cmd_info *ci)
{
	(void)ci;
	struct resp_out *o = sync_out(c);
	if (!o)
		return;
	if (cmd->argc > 3) {
		err_text(c, o, RESP_ERR_SYNTAX);
		return;
	}
	if (cmd->argc == 2 && !c->svc->has_password) {
		err_text(c, o, "ERR AUTH <password> called without any password configured for the "
		               "default user. Are you sure your configuration is correct?");
		return;
	}
	const struct resp_arg *user = cmd->argc == 3 ? &cmd->argv[1] : NULL;
	if (auth_try(c, o, user, &cmd->argv[cmd->argc - 1]))
		resp_write_ok(o);
}

static bool set_client_name(struct conn *c, struct resp_out *o, const struct resp_arg *a)
{
	if (!resp_cmd_client_name_ok(a)) {
		err_text(c, o, "ERR Client names cannot contain spaces, newlines or special characters.");
		return false;
	}
	if (a->len > CLIENT_NAME_BYTES_MAX) {
		err_fmt(c, o, "ERR Client names longer than %u bytes are not supported",
		        CLIENT_NAME_BYTES_MAX);
		return false;
	}
	char *name = NULL;
	if (a->len) {
		name = malloc(a->len + 1);
		if (!name) {
			err_text(c, o, "OOM out of memory");
			return false;
		}
		memcpy(name, a->ptr, a->len);
		name[a->len] = '\0';
	}
	free(c->name);
	c->name = name;
	return true;
}

/* HELLO [protover [AUTH user pass] [SETNAME name]]: RESP2 only; the reply
 * is Redis's map, flattened into an array as RESP2 does. */
static void cmd_hello(struct conn *c, const struct resp_command *cmd,
                      const struct resp_cmd_info *ci)
{
	(void)ci;
	struct resp_out *o = sync_out(c);
	if (!o)
		return;
	uint32_t next = 1;
	if (cmd->argc >= 2) {
		int64_t ver;
		if (resp_arg_int64(&cmd->argv[1], &ver) != 0) {
			err_text(c, o, "ERR Protocol version is not an integer or out of range");
			return;
		}
		next = 2;
		if (ver != 2) {
			err_text(c, o, "NOPROTO unsupported protocol version");
			return;
		}
	}
	const struct resp_arg *user = NULL, *pass = NULL, *name = NULL;
	for (uint32_t j = next; j < cmd->argc; j++) {
		uint32_t more = cmd->argc - 1 - j;
		const struct resp_arg *opt = &cmd->argv[j];
		if (resp_arg_is(opt, "auth") && more >= 2) {
			user = &cmd->argv[j + 1];
			pass = &cmd->argv[j + 2];
			j += 2;
		} else if (resp_arg_is(opt, "setname") && more >= 1) {
			name = &cmd->argv[j + 1];
			j++;
		} else {
			int n = (int)(opt->len < 128 ? opt->len : 128);
			err_fmt(c, o, "ERR Syntax error in HELLO option '%.*s'", n, opt->ptr);
			return;
		}
	}
	if (pass && !auth_try(c, o, user, pass))
		return;
	if (c->svc->has_password && !c->authed) {
		err_text(c, o, "NOAUTH HELLO must be called with the client already authenticated, "
		               "otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
		               "authenticate the client and select the RESP protocol version at the "
		               "same time");
		return;
	}
	if (name && !set_client_name(c, o, name))
		return;
	resp_write_array(o, 14);
	resp_write_bulk(o, "server", 6);
	resp_write_bulk(o, "redis", 5);
	resp_write_bulk(o, "version", 7);
	resp_write_bulk(o, REDIS_VERSION_TEXT, strlen(REDIS_VERSION_TEXT));
	resp_write_bulk(o, "proto", 5);
	resp_write_integer(o, 2);
	resp_write_bulk(o, "id", 2);
	resp_write_integer(o, (int64_t)c->id);
	resp_write_bulk(o, "mode", 4);
	resp_write_bulk(o, "standalone", 10);
	resp_write_bulk(o, "role", 4);
	resp_write_bulk(o, "master", 6);
	resp_write_bulk(o, "modules", 7);
	resp_write_array(o, 0);
}

static void cmd_select(struct conn *c, const struct resp_command *cmd,
                       const struct resp_cmd_info *ci)
{
	(void)ci;
	struct resp_out *o = sync_out(c);
	if (!o)
		return;
	int64_t db;
	if (resp_arg_int64(&cmd->argv[1], &db) != 0 || db < INT32_MIN || db > INT32_MAX) {
		err_text(c, o, RESP_ERR_NOT_INTEGER);
		return;
	}
	const char *name = NULL;
	if (db >= 0)
		name = c->svc->cache->db_name(c->svc->cache->ctx, (uint32_t)db);
	if (!name) {
		err_text(c, o, "ERR DB index is out of range");
		return;
	}
	c->db = (uint32_t)db;
	c->cache = name;
	resp_write_ok(o);
}

static void cmd_quit(struct conn *c, const struct resp_command *cmd, const struct resp_cmd_info *ci)
{
	(void)cmd;
	(void)ci;
	struct resp_out *o = sync_out(c);
	if (o)
		resp_write_ok(o);
	c->closing = true;
}

static void client_line(struct sbuf *b, const struct conn *c, uint64_t now_ms)
{
	uint64_t age = now_ms > c->created_ms ? (now_ms - c->created_ms) / 1000 : 0;
	uint64_t idle = now_ms > c->active_ms ? (now_ms - c->active_ms) / 1000 : 0;
	size_t qbuf = resp_reader_pending_bytes(&c->rd), omem;
	resp_out_pending(&c->out, &omem);
	sb_add(b, "id=%" PRIu64 " addr=%s laddr=%s fd=%d name=%s age=%" PRIu64 " idle=%" PRIu64
	          " flags=%s db=%u sub=0 psub=0 ssub=0 multi=%d qbuf=%zu qbuf-free=0 argv-mem=0 "
	          "multi-mem=%zu obl=0 oll=%u omem=%zu tot-mem=%zu events=r cmd=%s user=default "
	          "redir=-1 resp=2\n",
	       c->id, c->addr, c->laddr, c->fd, c->name ? c->name : "", age, idle,
	       c->in_multi ? "x" : "N", c->db, c->in_multi ? (int)c->mq_count : -1, qbuf, c->mq_bytes,
	       c->slot_count, omem, resp_reader_memory_bytes(&c->rd) + c->out.cap,
	       c->last_cmd ? c->last_cmd : "NULL");
}

static void write_sbuf(struct conn *c, struct resp_out *o, struct sbuf *b)
{
	if (b->failed)
		err_text(c, o, "OOM out of memory");
	else
		resp_write_bulk(o, b->p ? b->p : "", b->n);
	free(b->p);
}

static void subcommand_unknown(struct conn *c, struct resp_out *o, const struct resp_command *cmd,
                               const char *upper)
{
	const struct resp_arg *a = &cmd->argv[1];
	int n = (int)(a->len < 128 ? a->len : 128);
	err_fmt(c, o, "ERR unknown subcommand '%.*s'. Try %s HELP.", n, a->ptr, upper);
}

static void subcommand_arity(struct conn *c, struct resp_out *o, const char *full)
{
	c->svc->errors++;
	resp_write_err_arity(o, full);
}

static void write_help(struct resp_out *o, const char *const *lines)
{
	size_t n = 0;
	while (lines[n])
		n++;
	resp_write_array(o, n);
	for (size_t i = 0; i < n; i++)
		resp_write_simple(o, lines[i]);
}

static void cmd_client(struct conn *c, const struct resp_command *cmd,
                       const struct resp_cmd_info *ci)
{
	(void)ci;
	struct resp_out *o = sync_out(c);
	if (!o)
		return;
	const struct resp_arg *sub = &cmd->argv[1];
	if (resp_arg_is(sub, "id")) {
		if (cmd->argc != 2)
			{ subcommand_arity(c, o, "client|id"); return; }
		resp_write_integer(o, (int64_t)c->id);
	} else if (resp_arg_is(sub, "setname")) {
		if (cmd->argc != 3)
			{ subcommand_arity(c, o, "client|setname"); return; }
		if (set_client_name(c, o, &cmd->argv[2]))
			resp_write_ok(o);
	} else if (resp_arg_is(sub, "getname")) {
		if (cmd->argc != 2)
			{ subcommand_arity(c, o, "client|getname"); return; }
		if (c->name)
			resp_write_bulk(o, c->name, strlen(c->name));
		else
			resp_write_null_bulk(o);
	} else if (resp_arg_is(sub, "info")) {
		if (cmd->argc != 2)
			{ subcommand_arity(c, o, "client|info"); return; }
		struct sbuf b = {0};
		client_line(&b, c, mono_ms(c->svc));
		write_sbuf(c, o, &b);
	} else if (resp_arg_is(sub, "list")) {
		if (cmd->argc != 2) {
			err_text(c, o, RESP_ERR_SYNTAX);
			return;
		}
		struct sbuf b = {0};
		for (const struct conn *k = c->svc->conns; k; k = k->next)
			client_line(&b, k, mono_ms(c->svc));
		write_sbuf(c, o, &b);
	} else if (resp_arg_is(sub, "setinfo")) {
		/* LIB-NAME / LIB-VER from newer client libraries: accepted, not kept */
		if (cmd->argc != 4)
			{ subcommand_arity(c, o, "client|setinfo"); return; }
		resp_write_ok(o);
	} else if (resp_arg_is(sub, "help")) {
		static const char *const lines[] = {
			"CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
			"ID", "    Return the ID of the current connection.",
			"INFO", "    Return information about the current client connection.",
			"LIST", "    Return information about client connections.",
			"SETNAME <name>", "    Assign the name <name> to the current connection.",
			"GETNAME", "    Return the name of the current connection.",
			"HELP", "    Print this help.", NULL};
		write_help(o, lines);
	} else {
		subcommand_unknown(c, o, cmd, "CLIENT");
	}
}

static void cmd_command(struct conn *c, const struct resp_command *cmd,
                        const struct resp_cmd_info *ci)
{
	(void)ci;
	struct resp_out *o = sync_out(c);
	if (!o)
		return;
	if (cmd->argc == 1) {
		resp_write_array(o, RESP_CMD_COUNT_);
		for (int i = 0; i < RESP_CMD_COUNT_; i++)
			resp_cmd_write_info(o, resp_cmd_get((enum resp_cmd_id)i));
		return;
	}
	const struct resp_arg *sub = &cmd->argv[1];
	if (resp_arg_is(sub, "count")) {
		if (cmd->argc != 2)
			{ subcommand_arity(c, o, "command|count"); return; }
		resp_write_integer(o, RESP_CMD_COUNT_);
	} else if (resp_arg_is(sub, "docs")) {
		/* no documentation: clients (redis-cli's hints) fall back to their own */
		resp_write_array(o, 0);
	} else if (resp_arg_is(sub, "info")) {
		if (cmd->argc == 2) {
			resp_write_array(o, RESP_CMD_COUNT_);
			for (int i = 0; i < RESP_CMD_COUNT_; i++)
				resp_cmd_write_info(o, resp_cmd_get((enum resp_cmd_id)i));
			return;
		}
		resp_write_array(o, cmd->argc - 2);
		for (uint32_t i = 2; i < cmd->argc; i++) {
			const struct resp_cmd_info *k = resp_cmd_lookup(&cmd->argv[i]);
			if (k)
				resp_cmd_write_info(o, k);
			else
				resp_write_null_array(o);
		}
	} else if (resp_arg_is(sub, "list")) {
		resp_write_array(o, RESP_CMD_COUNT_);
		for (int i = 0; i < RESP_CMD_COUNT_; i++) {
			const char *name = resp_cmd_get((enum resp_cmd_id)i)->name;
			resp_write_bulk(o, name, strlen(name));
		}
	} else if (resp_arg_is(sub, "help")) {
		static const char *const lines[] = {
			"COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
			"(no subcommand)", "    Return details about all commands.",
			"COUNT", "    Return the total number of commands in this server.",
			"LIST", "    Return a list of all commands in this server.",
			"INFO [<command-name> ...]", "    Return details about the given commands.",
			"DOCS [<command-name> ...]", "    Return documentation (none here: an empty list).",
			"HELP", "    Print this help.", NULL};
		write_help(o, lines);
	} else {
		subcommand_unknown(c, o, cmd, "COMMAND");
	}
}

/* CONFIG GET: what clients and redis-benchmark ask, read-only. */
static void cmd_config(struct conn *c, const struct resp_command *cmd,
                       const struct resp_cmd_info *ci)
{
	(void)ci;
	struct resp_svc *s = c->svc;
	struct resp_out *o = sync_out(c);
	if (!o)
		return;
	const struct resp_arg *sub = &cmd->argv[1];
	if (resp_arg_is(sub, "get")) {
		if (cmd->argc < 3)
			{ subcommand_arity(c, o, "config|get"); return; }
		int32_t dbs = 0;
		for (uint32_t i = 0; i < s->cfg->cache_count; i++)
			if (s->cfg->caches[i].db + 1 > dbs)
				dbs = s->cfg->caches[i].db + 1;
		char v_clients[16], v_timeout[16], v_bulk[24], v_query[24], v_dbs[16], v_port[8];
		snprintf(v_clients, sizeof v_clients, "%u", s->rc->clients_max);
		snprintf(v_timeout, sizeof v_timeout, "%u", s->rc->idle_timeout_ms / 1000);
		snprintf(v_bulk, sizeof v_bulk, "%zu", s->rc->bulk_bytes_max);
		snprintf(v_query, sizeof v_query, "%zu", s->rc->query_bytes_max);
		snprintf(v_dbs, sizeof v_dbs, "%d", dbs);
		snprintf(v_port, sizeof v_port, "%u", s->listen_port);
		const char *const params[][2] = {
			{"save", ""},
			{"appendonly", "no"},
			{"databases", v_dbs},
			{"maxclients", v_clients},
			{"timeout", v_timeout},
			{"proto-max-bulk-len", v_bulk},
			{"client-query-buffer-limit", v_query},
			{"maxmemory", "0"},
			{"port", v_port},
		};
		const size_t np = sizeof params / sizeof params[0];
		bool hit[sizeof params / sizeof params[0]] = {false};
		size_t nhit = 0;
		for (uint32_t i = 2; i < cmd->argc; i++) {
			/* Redis matches parameter names without case */
			char pat[128];
			const struct resp_arg *a = &cmd->argv[i];
			if (a->len >= sizeof pat)
				continue;
			for (size_t k = 0; k < a->len; k++)
				pat[k] = (a->ptr[k] >= 'A' && a->ptr[k] <= 'Z') ? (char)(a->ptr[k] + 32)
				                                                : a->ptr[k];
			for (size_t p = 0; p < np; p++)
				if (!hit[p] && cstore_glob_match(pat, a->len, params[p][0],
				                                 strlen(params[p][0]))) {
					hit[p] = true;
					nhit++;
				}
		}
		resp_write_array(o, nhit * 2);
		for (size_t p = 0; p < np; p++)
			if (hit[p]) {
				resp_write_bulk(o, params[p][0], strlen(params[p][0]));
				resp_write_bulk(o, params[p][1], strlen(params[p][1]));
			}
	} else if (resp_arg_is(sub, "set")) {
		err_text(c, o, "ERR CONFIG SET is not supported: set [resp] and [cache] in the "
		               "node's config file");
	} else if (resp_arg_is(sub, "resetstat")) {
		s->commands = s->errors = s->rejected = s->auth_failures = 0;
		s->protocol_errors = s->output_closed = s->idle_closed = s->deferred = 0;
		resp_write_ok(o);
	} else if (resp_arg_is(sub, "help")) {
		static const char *const lines[] = {
			"CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
			"GET <pattern>", "    Return parameters matching the glob-like <pattern> and their values.",
			"RESETSTAT", "    Reset statistics reported by the INFO command.",
			"HELP", "    Print this help.", NULL};
		write_help(o, lines);
	} else {
		subcommand_unknown(c, o, cmd, "CONFIG");
	}
}

/* ---- MULTI / EXEC ---- */

static struct dcmd *dcmd_new(const struct resp_command *cmd)
{
	size_t data = 0;
	for (uint32_t i = 0; i < cmd->argc; i++)
		data += cmd->argv[i].len;
	size_t size = sizeof(struct dcmd) + (size_t)cmd->argc * sizeof(struct resp_arg) + data;
	struct dcmd *d = malloc(size);
	if (!d)
		return NULL;
	d->next = NULL;
	d->argv = (struct resp_arg *)(d + 1);
	d->argc = cmd->argc;
	d->bytes = cmd->bytes;
	d->size = size;
	char *p = (char *)(d->argv + cmd->argc);
	for (uint32_t i = 0; i < cmd->argc; i++) {
		if (cmd->argv[i].len)
			memcpy(p, cmd->argv[i].ptr, cmd->argv[i].len);
		d->argv[i].ptr = p;
		d->argv[i].len = cmd->argv[i].len;
		p += cmd->argv[i].len;
	}
	return d;
}

static void dcmd_list_free(struct dcmd **head, struct dcmd **tail)
{
	for (struct dcmd *d = *head, *next; d; d = next) {
		next = d->next;
		free(d);
	}
	*head = *tail = NULL;
}

static void multi_reset(struct conn *c)
{
	dcmd_list_free(&c->mq_head, &c->mq_tail);
	c->mq_count = 0;
	c->mq_bytes = 0;
	c->in_multi = false;
	c->multi_dirty = false;
}

static void multi_queue(struct conn *c, struct resp_out *o, const struct resp_command *cmd)
{
	struct dcmd *d = NULL;
	if (c->mq_count >= MULTI_COMMANDS_MAX ||
	    c->mq_bytes + cmd->bytes > c->svc->rc->query_bytes_max || !(d = dcmd_new(cmd))) {
		c->multi_dirty = true;
		err_fmt(c, o, "ERR MULTI holds at most %u commands and %zu bytes: transaction "
		              "discarded at EXEC", MULTI_COMMANDS_MAX, c->svc->rc->query_bytes_max);
		return;
	}
	if (c->mq_tail)
		c->mq_tail->next = d;
	else
		c->mq_head = d;
	c->mq_tail = d;
	c->mq_count++;
	c->mq_bytes += d->size;
	resp_write_simple(o, "QUEUED");
}

static void cmd_multi(struct conn *c, const struct resp_command *cmd,
                      const struct resp_cmd_info *ci)
{
	(void)cmd;
	(void)ci;
	struct resp_out *o = sync_out(c);
	if (!o)
		return;
	if (c->in_multi) {
		err_text(c, o, "ERR MULTI calls can not be nested");
		return;
	}
	c->in_multi = true;
	c->multi_dirty = false;
	resp_write_ok(o);
}

/* EXEC: the array's header now, then the queued commands run in order as
 * if they had just arrived (their replies are the array's elements).
 * Isolation from other clients is not promised (docs/resp.md). */
static void cmd_exec(struct conn *c, const struct resp_command *cmd, const struct resp_cmd_info *ci)
{
	(void)cmd;
	(void)ci;
	struct resp_out *o = sync_out(c);
	if (!o)
		return;
	if (!c->in_multi) {
		err_text(c, o, "ERR EXEC without MULTI");
		return;
	}
	if (c->multi_dirty) {
		multi_reset(c);
		err_text(c, o, "EXECABORT Transaction discarded because of previous errors.");
		return;
	}
	resp_write_array(o, c->mq_count);
	if (c->mq_head) {
		c->mq_tail->next = c->dq_head;
		if (!c->dq_head)
			c->dq_tail = c->mq_tail;
		c->dq_head = c->mq_head;
		c->dq_count += c->mq_count;
		c->mq_head = c->mq_tail = NULL;
	}
	c->mq_count = 0;
	c->mq_bytes = 0;
	c->in_multi = false;
}

static void cmd_discard(struct conn *c, const struct resp_command *cmd,
                        const struct resp_cmd_info *ci)
{
	(void)cmd;
	(void)ci;
	struct resp_out *o = sync_out(c);
	if (!o)
		return;
	if (!c->in_multi) {
		err_text(c, o, "ERR DISCARD without MULTI");
		return;
	}
	multi_reset(c);
	resp_write_ok(o);
}

static const cmd_fn HANDLERS[RESP_CMD_COUNT_] = {
	[RESP_CMD_PING] = cmd_ping,       [RESP_CMD_ECHO] = cmd_echo,
	[RESP_CMD_AUTH] = cmd_auth,       [RESP_CMD_HELLO] = cmd_hello,
	[RESP_CMD_SELECT] = cmd_select,   [RESP_CMD_QUIT] = cmd_quit,
	[RESP_CMD_GET] = cmd_get,         [RESP_CMD_SET] = cmd_set,
	[RESP_CMD_SETNX] = cmd_setnx,     [RESP_CMD_SETEX] = cmd_setex,
	[RESP_CMD_PSETEX] = cmd_setex,    [RESP_CMD_GETDEL] = cmd_getdel,
	[RESP_CMD_DEL] = cmd_count_keys,  [RESP_CMD_UNLINK] = cmd_count_keys,
	[RESP_CMD_EXISTS] = cmd_count_keys, [RESP_CMD_TYPE] = cmd_type,
	[RESP_CMD_INCR] = cmd_incr,       [RESP_CMD_INCRBY] = cmd_incr,
	[RESP_CMD_DECR] = cmd_incr,       [RESP_CMD_DECRBY] = cmd_incr,
	[RESP_CMD_EXPIRE] = cmd_expire,   [RESP_CMD_PEXPIRE] = cmd_expire,
	[RESP_CMD_TTL] = cmd_ttl,         [RESP_CMD_PTTL] = cmd_ttl,
	[RESP_CMD_PERSIST] = cmd_persist, [RESP_CMD_MGET] = cmd_mget,
	[RESP_CMD_MSET] = cmd_mset,       [RESP_CMD_SCAN] = cmd_scan,
	[RESP_CMD_DBSIZE] = cmd_dbsize,   [RESP_CMD_FLUSHDB] = cmd_flushdb,
	[RESP_CMD_INFO] = cmd_info,       [RESP_CMD_CLIENT] = cmd_client,
	[RESP_CMD_COMMAND] = cmd_command, [RESP_CMD_CONFIG] = cmd_config,
	[RESP_CMD_MULTI] = cmd_multi,     [RESP_CMD_EXEC] = cmd_exec,
	[RESP_CMD_DISCARD] = cmd_discard,
};

/* ---- running commands in order ---- */

static bool auth_required(const struct conn *c)
{
	return c->svc->has_password && !c->authed;
}

/* One command: Redis's order of checks (processCommand): unknown command,
 * arity, authentication, then MULTI's queue or the command itself. */
static void run_command(struct conn *c, const struct resp_command *cmd)
{
	struct resp_svc *s = c->svc;
	s->commands++;
	const struct resp_cmd_info *ci = resp_cmd_lookup(&cmd->argv[0]);
	if (!ci || !resp_cmd_arity_ok(ci, cmd->argc)) {
		struct resp_out *o = sync_out(c);
		if (!o)
			return;
		s->errors++;
		if (c->in_multi)
			c->multi_dirty = true;
		if (!ci)
			resp_write_err_unknown_command(o, cmd);
		else
			resp_write_err_arity(o, ci->name);
		return;
	}
	c->last_cmd = ci->name;
	if (auth_required(c) && !(ci->flags & RESP_CMD_F_NO_AUTH)) {
		struct resp_out *o = sync_out(c);
		if (o)
			err_text(c, o, RESP_ERR_NOAUTH);
		return;
	}
	if (c->in_multi && !(ci->flags & RESP_CMD_F_NO_MULTI)) {
		struct resp_out *o = sync_out(c);
		if (o)
			multi_queue(c, o, cmd);
		return;
	}
	HANDLERS[ci->id](c, cmd, ci);
}

struct keys_ctx {
	const struct resp_command *cmd;
	uint32_t db;
	uint64_t *hashes;
	uint32_t n;
};

static void collect_key(void *arg, uint32_t index)
{
	struct keys_ctx *k = arg;
	k->hashes[k->n++] = key_hash(k->db, &k->cmd->argv[index]);
}

static bool slot_touches(const struct slot *sl, const uint64_t *hashes, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		if (sl->key_count == 1) {
			if (sl->key_hash == hashes[i])
				return true;
			continue;
		}
		for (uint32_t j = 0; j < sl->key_count; j++)
			if (sl->key_hashes[j] == hashes[i])
				return true;
	}
	return false;
}

/* Whether cmd may run now: the queue of replies has room, and no call still
 * waiting touches what it touches with a write on either side. */
static bool can_run(struct conn *c, const struct resp_command *cmd)
{
	if (c->slot_count >= CONN_REPLIES_MAX)
		return false;
	if (c->waiting_slots == 0)
		return true;
	const struct resp_cmd_info *ci = resp_cmd_lookup(&cmd->argv[0]);
	if (!ci || !resp_cmd_arity_ok(ci, cmd->argc))
		return true; /* answered with an error at once */
	if (c->in_multi && !(ci->flags & RESP_CMD_F_NO_MULTI))
		return true; /* only queued */
	if (!(ci->flags & (RESP_CMD_F_WRITE | RESP_CMD_F_READONLY)))
		return true; /* touches no data */
	bool writes = (ci->flags & RESP_CMD_F_WRITE) != 0;
	bool whole = (ci->flags & RESP_CMD_F_WHOLE_DB) != 0;
	uint64_t hashes[KEYS_TRACKED_MAX];
	uint32_t n = 0;
	if (!whole) {
		n = resp_cmd_keys(ci, cmd->argc, NULL, NULL);
		if (n > KEYS_TRACKED_MAX) {
			whole = true;
		} else {
			struct keys_ctx k = {cmd, c->db, hashes, 0};
			resp_cmd_keys(ci, cmd->argc, collect_key, &k);
		}
	}
	for (const struct slot *sl = c->head; sl; sl = sl->next) {
		if (sl->waiting == 0 || !(writes || sl->writes))
			continue;
		if (whole || sl->whole_db || slot_touches(sl, hashes, n))
			return false;
	}
	return true;
}

static void protocol_error(struct conn *c)
{
	struct resp_svc *s = c->svc;
	s->protocol_errors++;
	log_limited(LOG_INFO, "resp", "protocol", LOG_EVERY_MS, "client %s: %s: closing it",
	            c->addr, resp_reader_error(&c->rd));
	struct resp_out *o = sync_out(c);
	if (o)
		err_fmt(c, o, "ERR %s", resp_reader_error(&c->rd));
	c->closing = true;
}

/* Runs what can run: deferred commands first, then parsed ones, until the
 * input is used up or a command must wait. */
static void conn_process(struct conn *c)
{
	struct resp_svc *s = c->svc;
	struct conn *outer = s->current;
	s->current = c;
	while (!c->kill && !c->closing && !c->dead && !s->draining) {
		if (c->dq_head) {
			struct dcmd *d = c->dq_head;
			struct resp_command cmd = {d->argv, d->argc, d->bytes};
			if (!can_run(c, &cmd))
				break;
			c->dq_head = d->next;
			if (!c->dq_head)
				c->dq_tail = NULL;
			c->dq_count--;
			run_command(c, &cmd);
			free(d);
			continue;
		}
		struct resp_command cmd;
		int rc = resp_parse(&c->rd, &cmd);
		if (rc == RESP_NEED_MORE)
			break;
		if (rc != RESP_COMMAND) {
			protocol_error(c);
			break;
		}
		if (!can_run(c, &cmd)) {
			struct dcmd *d = dcmd_new(&cmd);
			if (!d) {
				c->kill = true;
				c->kill_why = "out of memory";
				break;
			}
			c->dq_head = c->dq_tail = d;
			c->dq_count = 1;
			s->deferred++;
			break;
		}
		run_command(c, &cmd);
	}
	s->current = outer;
	if (c->out.error && !c->kill) {
		c->kill = true;
		c->kill_why = WHY_OUTPUT;
	}
}

/* ---- connections: I/O ---- */

static bool conn_wants_read(const struct conn *c)
{
	return !c->eof && !c->closing && !c->kill && !c->dead && !c->svc->draining &&
	       !c->dq_head && c->slot_count < CONN_REPLIES_MAX;
}

static void conn_read(struct conn *c, uint64_t now_ms)
{
	for (int i = 0; i < CONN_READS_PER_POLL && conn_wants_read(c); i++) {
		char *space;
		size_t room;
		int rc = resp_reader_reserve(&c->rd, CONN_READ_BYTES, &space, &room);
		if (rc == ERR_FULL) {
			/* a command as large as the query buffer: the parser fails it */
			conn_process(c);
			break;
		}
		if (rc != 0) {
			c->kill = true;
			c->kill_why = "out of memory";
			break;
		}
		ssize_t n = recv(c->fd, space, room, 0);
		if (n > 0) {
			resp_reader_commit(&c->rd, (size_t)n);
			c->active_ms = now_ms;
			conn_process(c);
			if ((size_t)n < room)
				break;
			continue;
		}
		if (n == 0) {
			c->eof = true;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			c->kill = true;
			c->kill_why = "read error";
		}
		break;
	}
}

static size_t conn_unsent(const struct conn *c)
{
	size_t n;
	resp_out_pending(&c->out, &n);
	return n;
}

static void conn_flush(struct conn *c, uint64_t now_ms)
{
	for (;;) {
		size_t n;
		const char *p = resp_out_pending(&c->out, &n);
		if (n == 0)
			break;
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w > 0) {
			resp_out_consume(&c->out, (size_t)w);
			c->active_ms = now_ms;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		c->kill = true;
		c->kill_why = "write error";
		break;
	}
	if (conn_unsent(c) == 0 && c->out.cap > OUT_KEEP_BYTES && !c->out.error) {
		size_t max = c->out.bytes_max;
		resp_out_free(&c->out);
		resp_out_init(&c->out, max);
	}
}

/* Output held for a client: sent-pending plus replies waiting their turn. */
static bool conn_over_output(const struct conn *c)
{
	size_t held = conn_unsent(c);
	for (const struct slot *sl = c->head; sl; sl = sl->next) {
		size_t n;
		resp_out_pending(&sl->buf, &n);
		held += n;
		if (sl->buf.error)
			return true;
	}
	return held > c->svc->rc->output_bytes_max;
}

static void conn_unlink(struct conn **list, struct conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		*list = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

static void conn_push(struct conn **list, struct conn *c)
{
	c->prev = NULL;
	c->next = *list;
	if (*list)
		(*list)->prev = c;
	*list = c;
}

/* Frees a closed connection once no callback can come. */
static void conn_free(struct conn *c)
{
	struct resp_svc *s = c->svc;
	assert(c->calls == 0 && c->fd < 0);
	if (c->dead)
		conn_unlink(&s->dead, c);
	for (struct slot *sl = c->head, *next; sl; sl = next) {
		next = sl->next;
		slot_release(s, sl);
	}
	free(c);
}

/* Closes a connection (a safe point: never inside a callback). */
static void conn_close(struct conn *c, const char *why)
{
	struct resp_svc *s = c->svc;
	assert(!c->dead && c->fd >= 0);
	log_debug("resp", "client %s (id %" PRIu64 ") closed: %s", c->addr, c->id, why);
	close(c->fd);
	c->fd = -1;
	conn_unlink(&s->conns, c);
	s->conn_count--;
	resp_reader_free(&c->rd);
	resp_out_free(&c->out);
	dcmd_list_free(&c->dq_head, &c->dq_tail);
	c->dq_count = 0;
	multi_reset(c);
	free(c->name);
	c->name = NULL;
	if (c->calls == 0) {
		conn_free(c);
		return;
	}
	c->dead = true;
	conn_push(&s->dead, c);
}

/* After processing and flushing: close when it is time. */
static void conn_settle(struct conn *c)
{
	struct resp_svc *s = c->svc;
	if (!c->kill && c->out.error) {
		c->kill = true;
		c->kill_why = c->out.error == ERR_NOMEM ? "out of memory" : WHY_OUTPUT;
	}
	if (c->kill) {
		if (c->kill_why == WHY_OUTPUT) {
			s->output_closed++;
			log_limited(LOG_WARN, "resp", "output", LOG_EVERY_MS,
			            "client %s does not read its replies: %zu bytes unsent, over "
			            "output_bytes_max %zu: disconnected",
			            c->addr, conn_unsent(c), s->rc->output_bytes_max);
		}
		conn_close(c, c->kill_why ? c->kill_why : "error");
		return;
	}
	bool flushed = conn_unsent(c) == 0 && !c->head;
	if (c->closing && flushed) {
		conn_close(c, "closed after its reply");
		return;
	}
	/* the client closed its side: what it sent is answered first */
	if (c->eof && flushed && !c->dq_head) {
		conn_close(c, "closed by the client");
		return;
	}
}

/* Processes, flushes and settles every connection something happened to. */
static void svc_pass(struct resp_svc *s, uint64_t now_ms)
{
	s->kick = false;
	for (struct conn *c = s->conns, *next; c; c = next) {
		next = c->next;
		if (c->kick) {
			c->kick = false;
			conn_process(c);
			if (!c->kill && conn_unsent(c))
				conn_flush(c, now_ms);
			if (!c->kill && c->head && conn_over_output(c)) {
				c->kill = true;
				c->kill_why = WHY_OUTPUT;
			}
		}
		conn_settle(c);
	}
}

/* ---- the listener ---- */

static void addr_text(const struct sockaddr_storage *ss, char *out, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
		port = ntohs(a->sin_port);
		snprintf(out, len, "%s:%u", ip, port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
		port = ntohs(a->sin6_port);
		snprintf(out, len, "[%s]:%u", ip, port);
	} else {
		snprintf(out, len, "?");
	}
}

static bool sockaddr_is_loopback(const struct sockaddr_storage *ss)
{
	char ip[INET6_ADDRSTRLEN];
	if (ss->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, ip, sizeof ip);
	else if (ss->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, ip, sizeof ip);
	else
		return false;
	return config_host_is_loopback(ip);
}

/* Refuses a connection over the cap with Redis's error, without waiting. */
static void refuse(struct resp_svc *s, int fd, const char *addr)
{
	static const char msg[] = "-ERR max number of clients reached\r\n";
	ssize_t n = send(fd, msg, sizeof msg - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)n;
	close(fd);
	s->rejected++;
	log_limited(LOG_WARN, "resp", "clients-max", LOG_EVERY_MS,
	            "client %s refused: %u clients connected (max_clients %u, poll budget %d)", addr,
	            s->conn_count, s->rc->clients_max, s->poll_budget);
}

static void conn_new(struct resp_svc *s, int fd, const struct sockaddr_storage *peer)
{
	struct conn *c = calloc(1, sizeof *c);
	if (!c || resp_reader_init(&c->rd, &s->limits) != 0) {
		free(c);
		close(fd);
		s->rejected++;
		return;
	}
	c->svc = s;
	c->fd = fd;
	c->id = ++s->next_id;
	addr_text(peer, c->addr, sizeof c->addr);
	struct sockaddr_storage local;
	socklen_t ll = sizeof local;
	if (getsockname(fd, (struct sockaddr *)&local, &ll) == 0)
		addr_text(&local, c->laddr, sizeof c->laddr);
	resp_out_init(&c->out, s->rc->output_bytes_max);
	resp_reader_set_auth_required(&c->rd, s->has_password);
	c->cache = s->db0;
	c->created_ms = c->active_ms = mono_ms(s);
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
	int idle_s = 300; /* Redis's tcp-keepalive: a vanished peer is noticed */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof idle_s);
	conn_push(&s->conns, c);
	s->conn_count++;
	s->connections_received++;
	log_debug("resp", "client %s connected (id %" PRIu64 ")", c->addr, c->id);
}

static void accept_some(struct resp_svc *s)
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
				log_limited(LOG_WARN, "resp", "accept", LOG_EVERY_MS, "accept: %s",
				            strerror(errno));
			return;
		}
		char addr[ADDR_TEXT_BYTES];
		addr_text(&peer, addr, sizeof addr);
		/* the host polls every fd of every service: keep within its budget
		 * (the listener and each client take one) */
		if (s->conn_count >= s->rc->clients_max || (int)s->conn_count + 1 >= s->poll_budget) {
			refuse(s, fd, addr);
			continue;
		}
		conn_new(s, fd, &peer);
	}
}

static int listener_open(struct resp_svc *s, char *err, size_t err_len)
{
	char host[256];
	uint16_t port;
	if (config_parse_hostport(s->rc->listen, host, sizeof host, &port) != 0) {
		snprintf(err, err_len, "resp listen '%s' is not HOST:PORT", s->rc->listen);
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
		snprintf(err, err_len, "resp listen %s: %s", s->rc->listen, gai_strerror(gai));
		return -1;
	}
	int fd = -1, last_errno = 0;
	for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
		struct sockaddr_storage ss;
		memset(&ss, 0, sizeof ss);
		memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
		if (!sockaddr_is_loopback(&ss) && !s->has_password && !s->rc->allow_open) {
			freeaddrinfo(res);
			snprintf(err, err_len, "resp listen %s resolves to a non-loopback address and "
			                       "[resp] has no password: set password (or password_file), "
			                       "or allow_open = true",
			         s->rc->listen);
			return -1;
		}
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
		snprintf(err, err_len, "resp listen %s: %s", s->rc->listen,
		         strerror(last_errno ? last_errno : EADDRNOTAVAIL));
		return -1;
	}
	struct sockaddr_storage bound;
	socklen_t bl = sizeof bound;
	if (getsockname(fd, (struct sockaddr *)&bound, &bl) == 0)
		addr_text(&bound, s->listen_addr, sizeof s->listen_addr);
	else
		snprintf(s->listen_addr, sizeof s->listen_addr, "%s", s->rc->listen);
	s->listen_fd = fd;
	s->listen_port = port;
	return 0;
}

/* The password from [resp] password or password_file, kept only as a keyed
 * hash (auth_ok). */
static int password_setup(struct resp_svc *s, char *err, size_t err_len)
{
	char pw[CONFIG_RESP_PASSWORD_BYTES_MAX + 2];
	size_t n = 0;
	if (s->rc->password_file[0]) {
		const char *path = s->rc->password_file;
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			snprintf(err, err_len, "resp password_file %s: %s", path, strerror(errno));
			return -1;
		}
		struct stat st;
		if (fstat(fd, &st) == 0 && (st.st_mode & 0077))
			log_warn("resp", "password_file %s is readable by others (mode %o): chmod 600",
			         path, (unsigned)(st.st_mode & 0777));
		for (;;) {
			ssize_t r = read(fd, pw + n, sizeof pw - 1 - n);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			n += (size_t)r;
			if (n == sizeof pw - 1)
				break;
		}
		close(fd);
		while (n > 0 && (pw[n - 1] == '\n' || pw[n - 1] == '\r'))
			n--;
		if (n > CONFIG_RESP_PASSWORD_BYTES_MAX) {
			sodium_memzero(pw, sizeof pw);
			snprintf(err, err_len, "resp password_file %s: longer than %d bytes", path,
			         CONFIG_RESP_PASSWORD_BYTES_MAX);
			return -1;
		}
		if (n == 0) {
			snprintf(err, err_len, "resp password_file %s is empty", path);
			return -1;
		}
	} else if (s->rc->password[0]) {
		n = strlen(s->rc->password);
		memcpy(pw, s->rc->password, n);
	} else {
		return 0;
	}
	randombytes_buf(s->pw_key, sizeof s->pw_key);
	crypto_generichash(s->pw_hash, sizeof s->pw_hash, (const unsigned char *)pw, n, s->pw_key,
	                   sizeof s->pw_key);
	sodium_memzero(pw, sizeof pw);
	s->has_password = true;
	return 0;
}

/* ---- the service ---- */

static int svc_start(void *svc, struct host *h, const struct now *now, char *err, size_t err_len)
{
	struct resp_svc *s = svc;
	(void)now;
	s->host = h;
	s->cfg = host_config(h);
	s->rc = &s->cfg->resp;
	if (!s->rc->listen[0])
		return 0;
	s->cache = host_port_get(h, PORT_CACHE);
	if (!s->cache) {
		snprintf(err, err_len, "--resp needs the cache service, which is not running");
		return -1;
	}
	const char *hook = getenv("CHORUS_TEST_RESP_MOVED");
	if (hook && *hook) {
		s->test_moved = (uint32_t)strtoul(hook, NULL, 10);
		log_warn("resp", "CHORUS_TEST_RESP_MOVED: the first %u cache calls are answered "
		                 "MOVED (a test hook; never set it in production)",
		         s->test_moved);
	}
	s->db0 = s->cache->db_name(s->cache->ctx, 0);
	if (!s->db0)
		s->db0 = "";
	resp_limits_default(&s->limits);
	s->limits.bulk_bytes_max = s->rc->bulk_bytes_max;
	s->limits.multibulk_count_max = s->rc->multibulk_count_max;
	s->limits.query_bytes_max = s->rc->query_bytes_max;
	s->limits.inline_bytes_max = s->rc->inline_bytes_max;
	/* before AUTH, Redis's small limits, but never above the settings */
	if (s->limits.unauth_bulk_bytes_max > s->limits.bulk_bytes_max)
		s->limits.unauth_bulk_bytes_max = s->limits.bulk_bytes_max;
	if (s->limits.unauth_multibulk_count_max > s->limits.multibulk_count_max)
		s->limits.unauth_multibulk_count_max = s->limits.multibulk_count_max;
	s->polled_cap = s->rc->clients_max;
	s->polled = calloc(s->polled_cap, sizeof *s->polled);
	if (!s->polled) {
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	if (password_setup(s, err, err_len) != 0 || listener_open(s, err, err_len) != 0)
		return -1;
	s->poll_budget = (int)s->rc->clients_max + 1;
	log_info("resp", "RESP listener on %s (max_clients %u%s)", s->listen_addr,
	         s->rc->clients_max,
	         s->has_password ? ", password required" : ", no password");
	return 0;
}

static uint64_t svc_next_deadline(void *svc)
{
	struct resp_svc *s = svc;
	if (s->kick)
		return 0;
	uint64_t next = UINT64_MAX;
	for (const struct sub *sub = s->retries; sub; sub = sub->retry_next)
		if (sub->retry_at_ms < next)
			next = sub->retry_at_ms;
	if (s->conns && s->idle_checked_ms + IDLE_CHECK_MS < next)
		next = s->idle_checked_ms + IDLE_CHECK_MS;
	return next;
}

static int svc_poll_fds(void *svc, struct pollfd *fds, int max)
{
	struct resp_svc *s = svc;
	s->poll_budget = max;
	s->polled_count = 0;
	s->listen_polled = false;
	int n = 0;
	if (s->listen_fd >= 0 && n < max) {
		fds[n++] = (struct pollfd){.fd = s->listen_fd, .events = POLLIN};
		s->listen_polled = true;
	}
	for (struct conn *c = s->conns; c && n < max && s->polled_count < s->polled_cap;
	     c = c->next) {
		short ev = 0;
		if (conn_wants_read(c))
			ev |= POLLIN;
		if (conn_unsent(c))
			ev |= POLLOUT;
		fds[n++] = (struct pollfd){.fd = c->fd, .events = ev};
		s->polled[s->polled_count++] = c;
	}
	return n;
}

static void svc_on_poll(void *svc, const struct pollfd *fds, int n, const struct now *now)
{
	struct resp_svc *s = svc;
	int i = 0;
	if (s->listen_polled) {
		if (n > 0 && (fds[0].revents & POLLIN))
			accept_some(s);
		i = 1;
	}
	for (uint32_t k = 0; i < n && k < s->polled_count; i++, k++) {
		struct conn *c = s->polled[k];
		short re = fds[i].revents;
		assert(c->fd == fds[i].fd);
		if (!re)
			continue;
		if (re & POLLIN)
			conn_read(c, now->mono_ms);
		else if (re & (POLLERR | POLLHUP | POLLNVAL)) {
			c->kill = true;
			c->kill_why = "connection reset";
		}
		c->kick = true;
	}
	svc_pass(s, now->mono_ms);
}

/* Once a second: idle clients give their parse buffers back, and those
 * idle longer than idle_timeout are closed. */
static void housekeeping(struct resp_svc *s, uint64_t now_ms)
{
	uint32_t idle_ms = s->rc->idle_timeout_ms;
	s->idle_checked_ms = now_ms;
	for (struct conn *c = s->conns, *next; c; c = next) {
		next = c->next;
		if (c->calls || c->head || now_ms - c->active_ms < IDLE_CHECK_MS)
			continue;
		if (idle_ms && now_ms - c->active_ms >= idle_ms) {
			s->idle_closed++;
			conn_close(c, "idle timeout");
			continue;
		}
		if (!c->dq_head)
			resp_reader_shrink(&c->rd);
	}
}

static void svc_tick(void *svc, const struct now *now)
{
	struct resp_svc *s = svc;
	if (!s->rc || !s->rc->listen[0])
		return;
	if (s->retries)
		retry_due(s, now->mono_ms, false);
	if (s->kick)
		svc_pass(s, now->mono_ms);
	if (s->conns && now->mono_ms >= s->idle_checked_ms + IDLE_CHECK_MS)
		housekeeping(s, now->mono_ms);
}

/* Drain: no new clients, no new commands; answers already owed go out. */
static void svc_drain(void *svc, const struct now *now)
{
	struct resp_svc *s = svc;
	s->draining = true;
	s->drain_started_ms = now->mono_ms;
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		s->listen_fd = -1;
		log_info("resp", "draining: the RESP listener %s is closed, %u client(s) get the "
		                 "answers they are owed",
		         s->listen_addr, s->conn_count);
	}
}

static int svc_drained(void *svc, const struct now *now)
{
	struct resp_svc *s = svc;
	/* the cache answers or times out every call within its timeout */
	uint64_t grace = DRAIN_GRACE_MS + 2ull * s->cfg->cache_timeout_ms;
	if (now->mono_ms - s->drain_started_ms >= grace)
		return 1;
	if (s->dead)
		return 0;
	for (const struct conn *c = s->conns; c; c = c->next)
		if (c->calls || conn_unsent(c))
			return 0;
	return 1;
}

static void svc_status(void *svc, Chorus__StatusResp *st, struct arena *a)
{
	struct resp_svc *s = svc;
	if (!s->listen_addr[0])
		return;
	st->resp_listen = arena_strdup(a, s->listen_addr);
	st->resp_clients = s->conn_count;
	st->resp_commands = s->commands;
	st->resp_errors = s->errors;
}

static void svc_free(struct resp_svc *s)
{
	assert(!s->conns && !s->dead);
	while (s->free_slots) {
		struct slot *sl = s->free_slots;
		s->free_slots = sl->next;
		resp_out_free(&sl->buf);
		free(sl);
	}
	free(s->polled);
	free(s);
}

static void svc_stop(void *svc)
{
	struct resp_svc *s = svc;
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	s->listen_fd = -1;
	while (s->conns)
		conn_close(s->conns, "node stopping");
	/* retries are owed by us, not by the cache: answered now (which frees
	 * the connections they held), before stopped lets a last answer free
	 * the service */
	retry_due(s, 0, true);
	s->stopped = true;
	if (s->dead) {
		/* the cache, stopped after us, still owes answers (it gives them
		 * all at its stop): the last one frees the service (on_cache_reply) */
		log_debug("resp", "stopping with cache calls unanswered: freed when they are");
		return;
	}
	svc_free(s);
}

static const struct service_ops RESP_OPS = {
	.name = "resp",
	.start = svc_start,
	.next_deadline = svc_next_deadline,
	.poll_fds = svc_poll_fds,
	.on_poll = svc_on_poll,
	.tick = svc_tick,
	.drain = svc_drain,
	.drained = svc_drained,
	.status = svc_status,
	.stop = svc_stop,
};

int resp_svc_register(struct host *h)
{
	struct resp_svc *s = calloc(1, sizeof *s);
	if (!s)
		return -1;
	s->host = h;
	s->listen_fd = -1;
	chorus__cache_resp__init(&s->absent);
	s->absent.ttl_ms = -2;
	if (host_register(h, &RESP_OPS, s) != 0) {
		free(s);
		return -1;
	}
	return 0;
}
