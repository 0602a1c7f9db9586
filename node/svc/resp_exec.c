/*
 * resp_exec.c - the commands of the RESP front door (see resp_svc.c for the
 * service and its connections, resp_internal.h for what the two share, and
 * docs/resp.md for what a Redis client sees).
 *
 * Each command's handler translates it into cache requests (one CacheReq
 * per key, made through resp_svc.c's resp_call()) answered into the command's
 * slot in the connection's queue of replies; a multi-key command (DEL,
 * UNLINK, EXISTS, MGET, MSET) gets one slot for all its calls and writes the
 * assembled reply when the last one is answered. Commands that need no
 * cache call (PING, ECHO, AUTH, HELLO, SELECT, QUIT, CLIENT, COMMAND,
 * CONFIG, and INFO without its cache sections) answer at once through
 * resp_sync_out(). MULTI keeps copies of the commands it queues; EXEC hands them
 * to the connection's deferred queue, to run in order. run_command checks
 * in Redis's order (server.c processCommand): unknown command, arity,
 * authentication, then MULTI's queue or the handler. The command table and
 * the option grammars are core/resp_cmd.c's.
 */
#include "svc/resp_internal.h"

/* ---- cache calls: requests, and the cache's errors ---- */

/* The cache's codes as Redis-style errors. CH_ERR_INVALID carries the
 * cache's own text ("value is not an integer or out of range"), which gets
 * an ERR code unless it starts with one (an upper-case word). */
static void cache_error(struct conn *c, struct resp_out *o, int code, const char *err)
{
	const char *detail = err && err[0] ? err : NULL;
	switch (code) {
	case CH_ERR_INVALID: {
		if (!detail) {
			resp_err_text(c, o, "ERR invalid request");
			return;
		}
		size_t caps = 0;
		while (detail[caps] >= 'A' && detail[caps] <= 'Z')
			caps++;
		if (caps >= 2 && detail[caps] == ' ')
			resp_err_text(c, o, detail);
		else
			resp_err_fmt(c, o, "ERR %s", detail);
		return;
	}
	case CH_ERR_TOO_LARGE:
		/* the cache's text says whether the key or the value is over */
		resp_err_fmt(c, o, "ERR %s too large%s%s%s",
		        detail && strncmp(detail, "a key", 5) == 0 ? "key" : "value",
		        detail ? " (" : "", detail ? detail : "", detail ? ")" : "");
		return;
	case CH_ERR_UNAVAILABLE:
		resp_err_fmt(c, o, "ERR too few replicas alive%s%s", detail ? ": " : "",
		        detail ? detail : "");
		return;
	case CH_ERR_TIMEOUT:
		resp_err_fmt(c, o, "ERR timed out waiting for replicas%s%s", detail ? ": " : "",
		        detail ? detail : "");
		return;
	case CH_ERR_MOVED:
	case CH_ERR_NOT_LEADER:
		resp_err_text(c, o, "TRYAGAIN the key's partition is moving, retry");
		return;
	case CH_ERR_UNREACHABLE:
		resp_err_fmt(c, o, "ERR the key's primary is unreachable%s%s", detail ? ": " : "",
		        detail ? detail : "");
		return;
	case CH_ERR_SHUTTING_DOWN:
		resp_err_text(c, o, "ERR the node is shutting down");
		return;
	case CH_ERR_NOMEM:
		resp_err_text(c, o, "OOM out of memory");
		return;
	case CH_ERR_FULL:
		resp_err_fmt(c, o, "ERR the cache is busy, retry later%s%s", detail ? ": " : "",
		        detail ? detail : "");
		return;
	default:
		resp_err_fmt(c, o, "ERR %s%s%s", ch_strerror(code), detail ? ": " : "", detail ? detail : "");
		return;
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
	struct slot *sl = resp_slot_push(c);
	if (!sl)
		return;
	sl->on_reply = fn;
	sl->aux = aux;
	sl->waiting = 1;
	sl->count = 1;
	c->waiting_slots++;
	resp_slot_track(c, sl, ci, cmd);
	resp_call(c, &sl->one, req);
	/* sl may be gone now (answered and written) */
}

/* A slot for n calls, one per key; its callbacks' arguments ready. */
static struct slot *multi_slot(struct conn *c, const struct resp_cmd_info *ci,
                               const struct resp_command *cmd, uint32_t n, slot_reply_fn fn,
                               slot_finish_fn finish)
{
	struct slot *sl = resp_slot_push(c);
	if (!sl)
		return NULL;
	sl->subs = malloc(n * sizeof *sl->subs);
	if (!sl->subs) {
		/* answer with an error in place of the reply */
		sl->done = true;
		resp_err_text(c, resp_slot_out(sl), "OOM out of memory");
		if (sl == c->head)
			resp_conn_advance(c);
		return NULL;
	}
	for (uint32_t i = 0; i < n; i++)
		sl->subs[i] = (struct sub){.slot = sl, .index = i};
	sl->on_reply = fn;
	sl->finish = finish;
	sl->count = n;
	sl->waiting = n; /* all of them before any is made: the slot outlives the loop */
	c->waiting_slots++;
	resp_slot_track(c, sl, ci, cmd);
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
	struct resp_out *o = resp_slot_out(sl);
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
	struct resp_out *o = resp_slot_out(sl);
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
	struct resp_out *o = resp_slot_out(sl);
	if (!reply_failed(sl, o, code, err))
		resp_write_ok(o);
}

static void r_applied(struct slot *sl, uint32_t i, int code, const Chorus__CacheResp *r,
                      const char *err)
{
	(void)i;
	struct resp_out *o = resp_slot_out(sl);
	if (!reply_failed(sl, o, code, err))
		resp_write_integer(o, r->applied ? 1 : 0);
}

static void r_integer(struct slot *sl, uint32_t i, int code, const Chorus__CacheResp *r,
                      const char *err)
{
	(void)i;
	struct resp_out *o = resp_slot_out(sl);
	if (!reply_failed(sl, o, code, err))
		resp_write_integer(o, r->integer);
}

/* EXPIRE with a time already past deletes: 1 when the key was there. */
static void r_deleted(struct slot *sl, uint32_t i, int code, const Chorus__CacheResp *r,
                      const char *err)
{
	(void)i;
	struct resp_out *o = resp_slot_out(sl);
	if (!reply_failed(sl, o, code, err))
		resp_write_integer(o, r->integer > 0 || r->found ? 1 : 0);
}

/* TTL (aux 1000) and PTTL (aux 1): -2 absent, -1 no expiry. TTL rounds to
 * the nearest second, as Redis does. */
static void r_ttl(struct slot *sl, uint32_t i, int code, const Chorus__CacheResp *r,
                  const char *err)
{
	(void)i;
	struct resp_out *o = resp_slot_out(sl);
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
	struct resp_out *o = resp_slot_out(sl);
	if (!reply_failed(sl, o, code, err))
		resp_write_simple(o, r->found ? "string" : "none");
}

static void r_scan(struct slot *sl, uint32_t i, int code, const Chorus__CacheResp *r,
                   const char *err)
{
	(void)i;
	struct resp_out *o = resp_slot_out(sl);
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
	enum resp_cmd_err e = resp_cmd_set_parse(cmd->argv, cmd->argc, resp_wall_ms(c->svc), &opts);
	if (e != RESP_CMD_OK) {
		struct resp_out *o = resp_sync_out(c);
		if (o)
			resp_err_cmd(c, o, e, "set", NULL);
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
	enum resp_cmd_err e = resp_cmd_ttl_parse(&cmd->argv[2], unit, resp_wall_ms(c->svc), &ttl);
	if (e != RESP_CMD_OK) {
		struct resp_out *o = resp_sync_out(c);
		if (o)
			resp_err_cmd(c, o, e, ci->name, NULL);
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
			if ((o = resp_sync_out(c)))
				resp_err_text(c, o, RESP_ERR_NOT_INTEGER);
			return;
		}
		if (ci->id == RESP_CMD_DECRBY) {
			if (delta == INT64_MIN) {
				if ((o = resp_sync_out(c)))
					resp_err_text(c, o, "ERR decrement would overflow");
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
	                                                            resp_wall_ms(c->svc), &ttl);
	if (e != RESP_CMD_OK) {
		struct resp_out *o = resp_sync_out(c);
		if (o)
			resp_err_cmd(c, o, e, ci->name, cmd->argc > 3 ? &cmd->argv[3] : NULL);
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
		resp_call(c, &sl->subs[i], &req);
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
		resp_call(c, &sl->subs[i], &req);
	}
}

/* MSET: one PUT per pair, +OK when all are done (not atomic: docs/resp.md). */
static void cmd_mset(struct conn *c, const struct resp_command *cmd, const struct resp_cmd_info *ci)
{
	if ((cmd->argc - 1) % 2 != 0) {
		struct resp_out *o = resp_sync_out(c);
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
		resp_call(c, &sl->subs[i], &req);
	}
}

/* ---- commands: the whole cache ---- */

static void cmd_scan(struct conn *c, const struct resp_command *cmd, const struct resp_cmd_info *ci)
{
	struct resp_scan_opts opts;
	enum resp_cmd_err e = resp_cmd_scan_parse(cmd->argv, cmd->argc, &opts);
	struct resp_out *o = NULL;
	if (e != RESP_CMD_OK) {
		if ((o = resp_sync_out(c)))
			resp_err_cmd(c, o, e, ci->name, NULL);
		return;
	}
	if (opts.match.len && memchr(opts.match.ptr, '\0', opts.match.len)) {
		if ((o = resp_sync_out(c)))
			resp_err_text(c, o, "ERR a MATCH pattern with a NUL byte is not supported");
		return;
	}
	if (opts.type_other) {
		/* every value is a string: no other type can match */
		if ((o = resp_sync_out(c))) {
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
			if ((o = resp_sync_out(c)))
				resp_err_text(c, o, "OOM out of memory");
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
		struct resp_out *o = resp_sync_out(c);
		if (o)
			resp_err_text(c, o, RESP_ERR_SYNTAX);
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
	if ((uint64_t)resp_wall_ms(s) > started)
		up_s = ((uint64_t)resp_wall_ms(s) - started) / 1000;
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
		resp_err_text(c, o, "OOM out of memory");
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
	info_write(sl->conn, resp_slot_out(sl), sl->aux, code == 0 ? r : NULL);
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
		struct resp_out *o = resp_sync_out(c);
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
	struct resp_out *o = resp_sync_out(c);
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
	struct resp_out *o = resp_sync_out(c);
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
	resp_err_text(c, o, RESP_ERR_WRONGPASS);
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
	struct resp_out *o = resp_sync_out(c);
	if (!o)
		return;
	if (cmd->argc > 3) {
		resp_err_text(c, o, RESP_ERR_SYNTAX);
		return;
	}
	if (cmd->argc == 2 && !c->svc->has_password) {
		resp_err_text(c, o, "ERR AUTH <password> called without any password configured for the "
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
		resp_err_text(c, o, "ERR Client names cannot contain spaces, newlines or special characters.");
		return false;
	}
	if (a->len > CLIENT_NAME_BYTES_MAX) {
		resp_err_fmt(c, o, "ERR Client names longer than %u bytes are not supported",
		        CLIENT_NAME_BYTES_MAX);
		return false;
	}
	char *name = NULL;
	if (a->len) {
		name = malloc(a->len + 1);
		if (!name) {
			resp_err_text(c, o, "OOM out of memory");
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
	struct resp_out *o = resp_sync_out(c);
	if (!o)
		return;
	uint32_t next = 1;
	if (cmd->argc >= 2) {
		int64_t ver;
		if (resp_arg_int64(&cmd->argv[1], &ver) != 0) {
			resp_err_text(c, o, "ERR Protocol version is not an integer or out of range");
			return;
		}
		next = 2;
		if (ver != 2) {
			resp_err_text(c, o, "NOPROTO unsupported protocol version");
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
			resp_err_fmt(c, o, "ERR Syntax error in HELLO option '%.*s'", n, opt->ptr);
			return;
		}
	}
	if (pass && !auth_try(c, o, user, pass))
		return;
	if (c->svc->has_password && !c->authed) {
		resp_err_text(c, o, "NOAUTH HELLO must be called with the client already authenticated, "
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
	struct resp_out *o = resp_sync_out(c);
	if (!o)
		return;
	int64_t db;
	if (resp_arg_int64(&cmd->argv[1], &db) != 0 || db < INT32_MIN || db > INT32_MAX) {
		resp_err_text(c, o, RESP_ERR_NOT_INTEGER);
		return;
	}
	const char *name = NULL;
	if (db >= 0)
		name = c->svc->cache->db_name(c->svc->cache->ctx, (uint32_t)db);
	if (!name) {
		resp_err_text(c, o, "ERR DB index is out of range");
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
	struct resp_out *o = resp_sync_out(c);
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
		resp_err_text(c, o, "OOM out of memory");
	else
		resp_write_bulk(o, b->p ? b->p : "", b->n);
	free(b->p);
}

static void subcommand_unknown(struct conn *c, struct resp_out *o, const struct resp_command *cmd,
                               const char *upper)
{
	const struct resp_arg *a = &cmd->argv[1];
	int n = (int)(a->len < 128 ? a->len : 128);
	resp_err_fmt(c, o, "ERR unknown subcommand '%.*s'. Try %s HELP.", n, a->ptr, upper);
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
	struct resp_out *o = resp_sync_out(c);
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
		client_line(&b, c, resp_mono_ms(c->svc));
		write_sbuf(c, o, &b);
	} else if (resp_arg_is(sub, "list")) {
		if (cmd->argc != 2) {
			resp_err_text(c, o, RESP_ERR_SYNTAX);
			return;
		}
		struct sbuf b = {0};
		for (const struct conn *k = c->svc->conns; k; k = k->next)
			client_line(&b, k, resp_mono_ms(c->svc));
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
	struct resp_out *o = resp_sync_out(c);
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
	struct resp_out *o = resp_sync_out(c);
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
		resp_err_text(c, o, "ERR CONFIG SET is not supported: set [resp] and [cache] in the "
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

struct dcmd *resp_dcmd_new(const struct resp_command *cmd)
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

void resp_dcmd_list_free(struct dcmd **head, struct dcmd **tail)
{
	for (struct dcmd *d = *head, *next; d; d = next) {
		next = d->next;
		free(d);
	}
	*head = *tail = NULL;
}

void resp_multi_reset(struct conn *c)
{
	resp_dcmd_list_free(&c->mq_head, &c->mq_tail);
	c->mq_count = 0;
	c->mq_bytes = 0;
	c->in_multi = false;
	c->multi_dirty = false;
}

static void multi_queue(struct conn *c, struct resp_out *o, const struct resp_command *cmd)
{
	struct dcmd *d = NULL;
	if (c->mq_count >= MULTI_COMMANDS_MAX ||
	    c->mq_bytes + cmd->bytes > c->svc->rc->query_bytes_max || !(d = resp_dcmd_new(cmd))) {
		c->multi_dirty = true;
		resp_err_fmt(c, o, "ERR MULTI holds at most %u commands and %zu bytes: transaction "
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
	struct resp_out *o = resp_sync_out(c);
	if (!o)
		return;
	if (c->in_multi) {
		resp_err_text(c, o, "ERR MULTI calls can not be nested");
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
	struct resp_out *o = resp_sync_out(c);
	if (!o)
		return;
	if (!c->in_multi) {
		resp_err_text(c, o, "ERR EXEC without MULTI");
		return;
	}
	if (c->multi_dirty) {
		resp_multi_reset(c);
		resp_err_text(c, o, "EXECABORT Transaction discarded because of previous errors.");
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
	struct resp_out *o = resp_sync_out(c);
	if (!o)
		return;
	if (!c->in_multi) {
		resp_err_text(c, o, "ERR DISCARD without MULTI");
		return;
	}
	resp_multi_reset(c);
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

/* ---- running one command ---- */

static bool auth_required(const struct conn *c)
{
	return c->svc->has_password && !c->authed;
}

/* One command: Redis's order of checks (processCommand): unknown command,
 * arity, authentication, then MULTI's queue or the command itself. */
void resp_run_command(struct conn *c, const struct resp_command *cmd)
{
	struct resp_svc *s = c->svc;
	s->commands++;
	const struct resp_cmd_info *ci = resp_cmd_lookup(&cmd->argv[0]);
	if (!ci || !resp_cmd_arity_ok(ci, cmd->argc)) {
		struct resp_out *o = resp_sync_out(c);
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
		struct resp_out *o = resp_sync_out(c);
		if (o)
			resp_err_text(c, o, RESP_ERR_NOAUTH);
		return;
	}
	if (c->in_multi && !(ci->flags & RESP_CMD_F_NO_MULTI)) {
		struct resp_out *o = resp_sync_out(c);
		if (o)
			multi_queue(c, o, cmd);
		return;
	}
	HANDLERS[ci->id](c, cmd, ci);
}
