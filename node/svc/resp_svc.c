/*
 * resp_svc.c - the RESP front door of the cache (see resp_svc.h, and
 * docs/resp.md for what a Redis client sees): the service and its
 * connections. The commands themselves are resp_exec.c's; what the two
 * files share is in resp_internal.h.
 *
 * Owns the listening socket, the client connections (plain non-blocking TCP
 * polled by the host's loop: poll_fds / on_poll), each with its parser
 * (core/resp.h's resp_reader) and its unsent replies (resp_out), the queue
 * of replies owed, the cache calls (through the "cache" port) with their
 * MOVED retries, and the order in which commands run. The translation of
 * Redis commands into cache requests (one CacheReq per key) is
 * resp_exec.c's, the command table and the option grammars are
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
 * protocol errors answered then the connection closed after the reply. The
 * order of checks and the error texts are resp_exec.c's (run_command, the
 * handlers).
 */
#include "svc/resp_internal.h"

#include "lib/prom.h"

static void conn_process(struct conn *c);
static void svc_free(struct resp_svc *s);

static const char WHY_OUTPUT[] = "output buffer over its limit";

/* ---- small helpers ---- */

uint64_t resp_mono_ms(const struct resp_svc *s)
{
	return host_now(s->host)->mono_ms;
}

int64_t resp_wall_ms(const struct resp_svc *s)
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

void resp_err_text(struct conn *c, struct resp_out *o, const char *text)
{
	c->svc->errors++;
	resp_write_error(o, text);
}

void resp_err_fmt(struct conn *c, struct resp_out *o, const char *fmt, ...)
{
	char text[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	resp_err_text(c, o, text);
}

void resp_err_cmd(struct conn *c, struct resp_out *o, enum resp_cmd_err e, const char *name,
             const struct resp_arg *detail)
{
	c->svc->errors++;
	resp_cmd_write_error(o, e, name, detail);
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
struct slot *resp_slot_push(struct conn *c)
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
struct resp_out *resp_slot_out(struct slot *sl)
{
	return sl == sl->conn->head ? &sl->conn->out : &sl->buf;
}

/* Moves every completed reply at the head of the queue to the output. */
void resp_conn_advance(struct conn *c)
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
struct resp_out *resp_sync_out(struct conn *c)
{
	if (!c->head)
		return &c->out;
	struct slot *sl = resp_slot_push(c);
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
void resp_slot_track(struct conn *c, struct slot *sl, const struct resp_cmd_info *ci,
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
		sl->finish(sl, resp_slot_out(sl));
	sl->done = true;
	assert(c->waiting_slots > 0);
	c->waiting_slots--;
	if (sl == c->head && !c->dead)
		resp_conn_advance(c);
}

static void conn_free(struct conn *c);
static void keep_request(struct sub *sub, const Chorus__CacheReq *req);

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
	if (code == CH_ERR_MOVED && !sub->req && sub == s->submitting && s->submitting_req)
		keep_request(sub, s->submitting_req); /* answered inside submit(): retry it too */
	if (code == CH_ERR_MOVED && sub->req && sub->tries + 1 < MOVED_TRIES && !c->dead &&
	    !s->stopped) {
		/* still owed (c->calls unchanged): submitted again at retry_due */
		uint32_t backoff = MOVED_RETRY_MS_FIRST << sub->tries;
		sub->tries++;
		sub->retry_at_ms = resp_mono_ms(s) + (backoff < MOVED_RETRY_MS_MAX ? backoff
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
			sub->retry_at_ms = resp_mono_ms(s);
			sub->retry_next = s->retries;
			s->retries = sub;
			return;
		}
	}
	char err[256] = "";
	struct sub *outer = s->submitting;
	const Chorus__CacheReq *outer_req = s->submitting_req;
	bool outer_answered = s->submit_answered;
	s->submitting = sub;
	s->submitting_req = req;
	s->submit_answered = false;
	int rc = s->cache->submit(s->cache->ctx, req, on_cache_reply, sub, err, sizeof err);
	bool answered = s->submit_answered;
	s->submitting = outer;
	s->submitting_req = outer_req;
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

void resp_call(struct conn *c, struct sub *sub, const Chorus__CacheReq *req)
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

/* ---- running commands in order ---- */

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
	struct resp_out *o = resp_sync_out(c);
	if (o)
		resp_err_fmt(c, o, "ERR %s", resp_reader_error(&c->rd));
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
			resp_run_command(c, &cmd);
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
			struct dcmd *d = resp_dcmd_new(&cmd);
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
		resp_run_command(c, &cmd);
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
	resp_dcmd_list_free(&c->dq_head, &c->dq_tail);
	c->dq_count = 0;
	resp_multi_reset(c);
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
	c->created_ms = c->active_ms = resp_mono_ms(s);
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

/* The RESP listener, when on (docs/metrics.md). */
static void svc_metrics(void *svc, struct prom *p)
{
	struct resp_svc *s = svc;
	if (!s->listen_addr[0])
		return;
	prom_family(p, "chorus_resp_clients", PROM_GAUGE, "Open RESP (redis protocol) connections.");
	prom_sample(p, "chorus_resp_clients", s->conn_count, NULL);
	prom_family(p, "chorus_resp_connections_total", PROM_COUNTER,
	            "RESP connections by outcome at arrival (accepted, rejected over the cap).");
	prom_sample(p, "chorus_resp_connections_total",
	            (double)s->connections_received, "outcome", "accepted", NULL);
	prom_sample(p, "chorus_resp_connections_total", (double)s->rejected, "outcome", "rejected",
	            NULL);
	prom_family(p, "chorus_resp_commands_total", PROM_COUNTER, "RESP commands taken.");
	prom_sample(p, "chorus_resp_commands_total", (double)s->commands, NULL);
	prom_family(p, "chorus_resp_errors_total", PROM_COUNTER,
	            "RESP error answers and closes, by kind.");
	prom_sample(p, "chorus_resp_errors_total", (double)s->errors, "kind", "command", NULL);
	prom_sample(p, "chorus_resp_errors_total", (double)s->auth_failures, "kind", "auth", NULL);
	prom_sample(p, "chorus_resp_errors_total", (double)s->protocol_errors, "kind", "protocol",
	            NULL);
	prom_sample(p, "chorus_resp_errors_total", (double)s->output_closed, "kind", "output_full",
	            NULL);
	prom_sample(p, "chorus_resp_errors_total", (double)s->idle_closed, "kind", "idle", NULL);
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
	.metrics = svc_metrics,
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
