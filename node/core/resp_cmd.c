/*
 * resp_cmd.c - the RESP front door's command table and option grammars
 * (see resp_cmd.h for the sources and the deliberate differences).
 *
 * The table is small (a few dozen names) and is searched by length first,
 * then by a case-insensitive compare: at the lengths commands have, that
 * costs less than hashing the name. The option parsers mirror Redis's
 * control flow closely on purpose (which option excludes which, and that
 * the syntax is checked before any number), because clients and their
 * test suites depend on which error comes first.
 */
#include "core/resp_cmd.h"

#include <assert.h>
#include <string.h>

#define W RESP_CMD_F_WRITE
#define R RESP_CMD_F_READONLY
#define D RESP_CMD_F_DENYOOM
#define A RESP_CMD_F_ADMIN
#define N RESP_CMD_F_NOSCRIPT
#define L RESP_CMD_F_LOADING
#define S RESP_CMD_F_STALE
#define F RESP_CMD_F_FAST
#define U RESP_CMD_F_NO_AUTH
#define M RESP_CMD_F_NO_MULTI
#define B RESP_CMD_F_WHOLE_DB

/* In enum order (checked by an assert in resp_cmd_get). */
static const struct resp_cmd_info CMDS[RESP_CMD_COUNT_] = {
	{"ping", -1, F, 0, 0, 0, RESP_CMD_PING},
	{"echo", 2, F, 0, 0, 0, RESP_CMD_ECHO},
	{"auth", -2, N | L | S | F | U, 0, 0, 0, RESP_CMD_AUTH},
	{"hello", -1, N | L | S | F | U, 0, 0, 0, RESP_CMD_HELLO},
	{"select", 2, L | S | F, 0, 0, 0, RESP_CMD_SELECT},
	{"quit", -1, N | L | S | F | U | M, 0, 0, 0, RESP_CMD_QUIT},
	{"get", 2, R | F, 1, 1, 1, RESP_CMD_GET},
	{"set", -3, W | D, 1, 1, 1, RESP_CMD_SET},
	{"setnx", 3, W | D | F, 1, 1, 1, RESP_CMD_SETNX},
	{"setex", 4, W | D, 1, 1, 1, RESP_CMD_SETEX},
	{"psetex", 4, W | D, 1, 1, 1, RESP_CMD_PSETEX},
	{"getdel", 2, W | F, 1, 1, 1, RESP_CMD_GETDEL},
	{"del", -2, W, 1, -1, 1, RESP_CMD_DEL},
	{"unlink", -2, W | F, 1, -1, 1, RESP_CMD_UNLINK},
	{"exists", -2, R | F, 1, -1, 1, RESP_CMD_EXISTS},
	{"type", 2, R | F, 1, 1, 1, RESP_CMD_TYPE},
	{"incr", 2, W | D | F, 1, 1, 1, RESP_CMD_INCR},
	{"incrby", 3, W | D | F, 1, 1, 1, RESP_CMD_INCRBY},
	{"decr", 2, W | D | F, 1, 1, 1, RESP_CMD_DECR},
	{"decrby", 3, W | D | F, 1, 1, 1, RESP_CMD_DECRBY},
	{"expire", -3, W | F, 1, 1, 1, RESP_CMD_EXPIRE},
	{"pexpire", -3, W | F, 1, 1, 1, RESP_CMD_PEXPIRE},
	{"ttl", 2, R | F, 1, 1, 1, RESP_CMD_TTL},
	{"pttl", 2, R | F, 1, 1, 1, RESP_CMD_PTTL},
	{"persist", 2, W | F, 1, 1, 1, RESP_CMD_PERSIST},
	{"mget", -2, R | F, 1, -1, 1, RESP_CMD_MGET},
	{"mset", -3, W | D, 1, -1, 2, RESP_CMD_MSET},
	{"scan", -2, R | B, 0, 0, 0, RESP_CMD_SCAN},
	{"dbsize", 1, R | F | B, 0, 0, 0, RESP_CMD_DBSIZE},
	{"flushdb", -1, W | B, 0, 0, 0, RESP_CMD_FLUSHDB},
	{"info", -1, L | S | B, 0, 0, 0, RESP_CMD_INFO},
	{"client", -2, L | S, 0, 0, 0, RESP_CMD_CLIENT},
	{"command", -1, L | S, 0, 0, 0, RESP_CMD_COMMAND},
	{"config", -2, A | N | L | S, 0, 0, 0, RESP_CMD_CONFIG},
	{"multi", 1, N | L | S | F | M, 0, 0, 0, RESP_CMD_MULTI},
	{"exec", 1, N | L | S | M, 0, 0, 0, RESP_CMD_EXEC},
	{"discard", 1, N | L | S | F | M, 0, 0, 0, RESP_CMD_DISCARD},
};

#undef W
#undef R
#undef D
#undef A
#undef N
#undef L
#undef S
#undef F
#undef U
#undef M
#undef B

const struct resp_cmd_info *resp_cmd_get(enum resp_cmd_id id)
{
	assert((unsigned)id < RESP_CMD_COUNT_);
	assert(CMDS[id].id == id);
	return &CMDS[id];
}

const struct resp_cmd_info *resp_cmd_lookup(const struct resp_arg *a)
{
	if (a->len == 0 || a->len > 8)
		return NULL; /* no name is longer than "psetex"/"persist"/"discard"/"command" */
	for (size_t i = 0; i < RESP_CMD_COUNT_; i++)
		if (resp_arg_is(a, CMDS[i].name))
			return &CMDS[i];
	return NULL;
}

bool resp_cmd_arity_ok(const struct resp_cmd_info *ci, uint32_t argc)
{
	if (ci->arity >= 0)
		return argc == (uint32_t)ci->arity;
	return argc >= (uint32_t)-ci->arity;
}

uint32_t resp_cmd_keys(const struct resp_cmd_info *ci, uint32_t argc,
                       void (*fn)(void *arg, uint32_t index), void *arg)
{
	if (ci->first_key <= 0 || argc <= (uint32_t)ci->first_key)
		return 0;
	uint32_t last = ci->last_key < 0 ? argc - 1 : (uint32_t)ci->last_key;
	if (last >= argc)
		last = argc - 1;
	uint32_t n = 0;
	for (uint32_t i = (uint32_t)ci->first_key; i <= last; i += (uint32_t)ci->key_step) {
		if (fn)
			fn(arg, i);
		n++;
	}
	return n;
}

int resp_cmd_write_error(struct resp_out *o, enum resp_cmd_err e, const char *name,
                         const struct resp_arg *detail)
{
	switch (e) {
	case RESP_CMD_OK:
		break;
	case RESP_CMD_E_SYNTAX:
		return resp_write_error(o, RESP_ERR_SYNTAX);
	case RESP_CMD_E_NOT_INTEGER:
		return resp_write_error(o, RESP_ERR_NOT_INTEGER);
	case RESP_CMD_E_EXPIRE:
		return resp_write_errorf(o, "ERR invalid expire time in '%s' command", name);
	case RESP_CMD_E_CURSOR:
		return resp_write_error(o, "ERR invalid cursor");
	case RESP_CMD_E_OPTION: {
		int n = detail ? (int)(detail->len < 128 ? detail->len : 128) : 0;
		return resp_write_errorf(o, "ERR Unsupported option %.*s", n, detail ? detail->ptr : "");
	}
	}
	assert(0 && "no error to write");
	return resp_write_error(o, "ERR internal error");
}

/* ---- SET ---- */

/* Which expiry option was given (Redis's OBJ_EX / OBJ_PX / OBJ_EXAT /
 * OBJ_PXAT). */
enum set_expiry { EXP_NONE = 0, EXP_EX, EXP_PX, EXP_EXAT, EXP_PXAT };

/* Redis's getExpireMillisecondsOrReply: the option's value to a ttl. */
static enum resp_cmd_err set_expiry_ms(const struct resp_arg *a, enum set_expiry kind,
                                       int64_t now_wall_ms, int64_t *ttl_ms)
{
	int64_t v;
	if (resp_arg_int64(a, &v) != 0)
		return RESP_CMD_E_NOT_INTEGER;
	bool seconds = kind == EXP_EX || kind == EXP_EXAT;
	if (v <= 0 || (seconds && v > INT64_MAX / 1000))
		return RESP_CMD_E_EXPIRE;
	int64_t ms = seconds ? v * 1000 : v;
	if (kind == EXP_EX || kind == EXP_PX) {
		/* Redis adds the time now and fails when that overflows */
		if (now_wall_ms > 0 && ms > INT64_MAX - now_wall_ms)
			return RESP_CMD_E_EXPIRE;
		*ttl_ms = ms;
		return RESP_CMD_OK;
	}
	/* an absolute time at or before now: gone at once (1 ms, resp_cmd.h) */
	*ttl_ms = ms > now_wall_ms ? ms - now_wall_ms : 1;
	return RESP_CMD_OK;
}

enum resp_cmd_err resp_cmd_set_parse(const struct resp_arg *argv, uint32_t argc,
                                     int64_t now_wall_ms, struct resp_set_opts *out)
{
	uint32_t flags = 0;
	enum set_expiry kind = EXP_NONE;
	const struct resp_arg *expire = NULL;
	for (uint32_t j = 3; j < argc; j++) {
		const struct resp_arg *opt = &argv[j];
		bool has_next = j + 1 < argc;
		if (resp_arg_is(opt, "nx") && !(flags & RESP_SET_XX)) {
			flags |= RESP_SET_NX;
		} else if (resp_arg_is(opt, "xx") && !(flags & RESP_SET_NX)) {
			flags |= RESP_SET_XX;
		} else if (resp_arg_is(opt, "get")) {
			flags |= RESP_SET_GET;
		} else if (resp_arg_is(opt, "keepttl") && kind == EXP_NONE) {
			flags |= RESP_SET_KEEPTTL;
		} else if (has_next && !(flags & RESP_SET_KEEPTTL) &&
		           ((resp_arg_is(opt, "ex") && (kind == EXP_NONE || kind == EXP_EX)) ||
		            (resp_arg_is(opt, "px") && (kind == EXP_NONE || kind == EXP_PX)) ||
		            (resp_arg_is(opt, "exat") && (kind == EXP_NONE || kind == EXP_EXAT)) ||
		            (resp_arg_is(opt, "pxat") && (kind == EXP_NONE || kind == EXP_PXAT)))) {
			if (opt->len == 2)
				kind = (opt->ptr[0] | 0x20) == 'e' ? EXP_EX : EXP_PX;
			else
				kind = (opt->ptr[0] | 0x20) == 'e' ? EXP_EXAT : EXP_PXAT;
			expire = &argv[++j];
		} else {
			return RESP_CMD_E_SYNTAX;
		}
	}
	out->flags = flags;
	out->ttl_ms = 0;
	if (expire)
		return set_expiry_ms(expire, kind, now_wall_ms, &out->ttl_ms);
	return RESP_CMD_OK;
}

enum resp_cmd_err resp_cmd_ttl_parse(const struct resp_arg *a, int64_t unit_ms,
                                     int64_t now_wall_ms, int64_t *ttl_ms)
{
	assert(unit_ms == 1000 || unit_ms == 1);
	/* SETEX is SET EX and PSETEX is SET PX */
	return set_expiry_ms(a, unit_ms == 1000 ? EXP_EX : EXP_PX, now_wall_ms, ttl_ms);
}

enum resp_cmd_err resp_cmd_expire_parse(const struct resp_arg *a, int64_t unit_ms,
                                        int64_t now_wall_ms, int64_t *ttl_ms)
{
	assert(unit_ms == 1000 || unit_ms == 1);
	int64_t when;
	if (resp_arg_int64(a, &when) != 0)
		return RESP_CMD_E_NOT_INTEGER;
	/* negative times are allowed (the key goes); overflows are not */
	if (unit_ms == 1000) {
		if (when > INT64_MAX / 1000 || when < INT64_MIN / 1000)
			return RESP_CMD_E_EXPIRE;
		when *= 1000;
	}
	if (now_wall_ms > 0 && when > INT64_MAX - now_wall_ms)
		return RESP_CMD_E_EXPIRE;
	*ttl_ms = when;
	return RESP_CMD_OK;
}

/* ---- SCAN ---- */

enum resp_cmd_err resp_cmd_cursor_parse(const struct resp_arg *a, uint64_t *cursor)
{
	if (a->len == 0 || a->len > 20)
		return RESP_CMD_E_CURSOR;
	uint64_t v = 0;
	for (size_t i = 0; i < a->len; i++) {
		char c = a->ptr[i];
		if (c < '0' || c > '9')
			return RESP_CMD_E_CURSOR;
		uint64_t d = (uint64_t)(c - '0');
		if (v > (UINT64_MAX - d) / 10)
			return RESP_CMD_E_CURSOR;
		v = v * 10 + d;
	}
	*cursor = v;
	return RESP_CMD_OK;
}

enum resp_cmd_err resp_cmd_scan_parse(const struct resp_arg *argv, uint32_t argc,
                                      struct resp_scan_opts *out)
{
	memset(out, 0, sizeof *out);
	out->count = RESP_SCAN_COUNT_DEFAULT;
	if (argc < 2)
		return RESP_CMD_E_SYNTAX;
	/* Redis parses the cursor first: a garbage cursor wins over bad options */
	enum resp_cmd_err e = resp_cmd_cursor_parse(&argv[1], &out->cursor);
	if (e != RESP_CMD_OK)
		return e;
	for (uint32_t i = 2; i < argc; i += 2) {
		const struct resp_arg *opt = &argv[i];
		if (i + 1 >= argc)
			return RESP_CMD_E_SYNTAX;
		const struct resp_arg *val = &argv[i + 1];
		if (resp_arg_is(opt, "count")) {
			int64_t n;
			if (resp_arg_int64(val, &n) != 0)
				return RESP_CMD_E_NOT_INTEGER;
			if (n < 1)
				return RESP_CMD_E_SYNTAX;
			out->count = n > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)n;
		} else if (resp_arg_is(opt, "match")) {
			out->match = *val;
		} else if (resp_arg_is(opt, "type")) {
			/* every value of the cache is a string */
			out->type_other = !resp_arg_is(val, "string");
		} else {
			return RESP_CMD_E_SYNTAX;
		}
	}
	return RESP_CMD_OK;
}

bool resp_cmd_client_name_ok(const struct resp_arg *a)
{
	for (size_t i = 0; i < a->len; i++)
		if (a->ptr[i] < '!' || a->ptr[i] > '~')
			return false;
	return true;
}

/* ---- COMMAND ---- */

static const struct {
	uint32_t flag;
	const char *name;
} FLAG_NAMES[] = {
	{RESP_CMD_F_WRITE, "write"},     {RESP_CMD_F_READONLY, "readonly"},
	{RESP_CMD_F_DENYOOM, "denyoom"}, {RESP_CMD_F_ADMIN, "admin"},
	{RESP_CMD_F_NOSCRIPT, "noscript"}, {RESP_CMD_F_LOADING, "loading"},
	{RESP_CMD_F_STALE, "stale"},     {RESP_CMD_F_FAST, "fast"},
	{RESP_CMD_F_NO_AUTH, "no_auth"},
};

int resp_cmd_write_info(struct resp_out *o, const struct resp_cmd_info *ci)
{
	size_t nflags = 0;
	for (size_t i = 0; i < sizeof FLAG_NAMES / sizeof FLAG_NAMES[0]; i++)
		nflags += (ci->flags & FLAG_NAMES[i].flag) != 0;
	resp_write_array(o, 10);
	resp_write_bulk(o, ci->name, strlen(ci->name));
	resp_write_integer(o, ci->arity);
	resp_write_array(o, nflags);
	for (size_t i = 0; i < sizeof FLAG_NAMES / sizeof FLAG_NAMES[0]; i++)
		if (ci->flags & FLAG_NAMES[i].flag)
			resp_write_simple(o, FLAG_NAMES[i].name);
	resp_write_integer(o, ci->first_key);
	resp_write_integer(o, ci->last_key);
	resp_write_integer(o, ci->key_step);
	resp_write_array(o, 0); /* ACL categories */
	resp_write_array(o, 0); /* tips */
	resp_write_array(o, 0); /* key specs */
	return resp_write_array(o, 0); /* subcommands */
}
