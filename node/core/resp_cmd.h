/*
 * resp_cmd.h - the command table of the cache's Redis front door and the
 * pure parts of its commands: names, arities and flags, the keys a command
 * touches, and the option grammars of SET, EXPIRE and SCAN, with Redis 7's
 * error texts.
 *
 * Owns nothing at run time: a static table and functions over a command's
 * arguments (struct resp_arg slices from core/resp.h). The listener
 * (node/svc/resp_svc.c) looks a command up, checks its arity, and calls the
 * parsers here before it builds a cache request; what a command does is the
 * service's.
 *
 * Sources: Redis 7.0's command table (the JSON files of src/commands: arity counts
 * the name, negative = at least; key positions first/last/step, last -1 =
 * to the end) and its argument parsing (t_string.c
 * parseExtendedStringArgumentsOrReply and getExpireMillisecondsOrReply,
 * expire.c expireGenericCommand, db.c parseScanCursorOrReply and
 * scanGenericCommand), followed where a client can tell the difference.
 * Differences, all deliberate:
 *   - SET ... EXAT/PXAT at or before now: Redis stores and deletes the key
 *     at once; the cache takes no absolute time, so the key is written with
 *     a 1 ms ttl (it is gone by the next command that could observe it);
 *   - a SCAN cursor is digits only (Redis's strtoul also takes a sign and
 *     the empty string, which a well-behaved client never sends).
 *
 * Pure: no I/O, no clock (the wall time comes in as an argument).
 */
#ifndef CHORUS_CORE_RESP_CMD_H
#define CHORUS_CORE_RESP_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/resp.h"

/* The commands, in table order. */
enum resp_cmd_id {
	RESP_CMD_PING = 0,
	RESP_CMD_ECHO,
	RESP_CMD_AUTH,
	RESP_CMD_HELLO,
	RESP_CMD_SELECT,
	RESP_CMD_QUIT,
	RESP_CMD_GET,
	RESP_CMD_SET,
	RESP_CMD_SETNX,
	RESP_CMD_SETEX,
	RESP_CMD_PSETEX,
	RESP_CMD_GETDEL,
	RESP_CMD_DEL,
	RESP_CMD_UNLINK,
	RESP_CMD_EXISTS,
	RESP_CMD_TYPE,
	RESP_CMD_INCR,
	RESP_CMD_INCRBY,
	RESP_CMD_DECR,
	RESP_CMD_DECRBY,
	RESP_CMD_EXPIRE,
	RESP_CMD_PEXPIRE,
	RESP_CMD_TTL,
	RESP_CMD_PTTL,
	RESP_CMD_PERSIST,
	RESP_CMD_MGET,
	RESP_CMD_MSET,
	RESP_CMD_SCAN,
	RESP_CMD_DBSIZE,
	RESP_CMD_FLUSHDB,
	RESP_CMD_INFO,
	RESP_CMD_CLIENT,
	RESP_CMD_COMMAND,
	RESP_CMD_CONFIG,
	RESP_CMD_MULTI,
	RESP_CMD_EXEC,
	RESP_CMD_DISCARD,
	RESP_CMD_COUNT_
};

/* Flags of a command (the first ones are Redis's COMMAND flags). */
enum {
	RESP_CMD_F_WRITE = 1u << 0,
	RESP_CMD_F_READONLY = 1u << 1,
	RESP_CMD_F_DENYOOM = 1u << 2,
	RESP_CMD_F_ADMIN = 1u << 3,
	RESP_CMD_F_NOSCRIPT = 1u << 4,
	RESP_CMD_F_LOADING = 1u << 5,
	RESP_CMD_F_STALE = 1u << 6,
	RESP_CMD_F_FAST = 1u << 7,
	RESP_CMD_F_NO_AUTH = 1u << 8, /* allowed before AUTH */
	/* Chorus's own: */
	RESP_CMD_F_NO_MULTI = 1u << 9, /* runs at once inside MULTI (MULTI, EXEC, DISCARD, QUIT) */
	RESP_CMD_F_WHOLE_DB = 1u << 10 /* reads or writes the whole selected cache */
};

struct resp_cmd_info {
	const char *name;   /* lower case, as Redis 7 names it in errors */
	int32_t arity;      /* the name included; negative: at least -arity */
	uint32_t flags;     /* RESP_CMD_F_* */
	int32_t first_key;  /* 0 = no key */
	int32_t last_key;   /* -1 = the last argument */
	int32_t key_step;
	enum resp_cmd_id id;
};

/* The entry of id (id < RESP_CMD_COUNT_). */
const struct resp_cmd_info *resp_cmd_get(enum resp_cmd_id id);
/* The command named by argument a, ignoring ASCII case; NULL when unknown. */
const struct resp_cmd_info *resp_cmd_lookup(const struct resp_arg *a);
/* Whether argc arguments (the name included) fit the command's arity. */
bool resp_cmd_arity_ok(const struct resp_cmd_info *ci, uint32_t argc);

/* The keys of a command whose arity was checked: calls fn for each key
 * argument index in order, and returns how many. MSET's step of 2 skips
 * the values. */
uint32_t resp_cmd_keys(const struct resp_cmd_info *ci, uint32_t argc,
                       void (*fn)(void *arg, uint32_t index), void *arg);

/* Why an argument was refused; resp_cmd_write_error() writes Redis's text. */
enum resp_cmd_err {
	RESP_CMD_OK = 0,
	RESP_CMD_E_SYNTAX,        /* ERR syntax error */
	RESP_CMD_E_NOT_INTEGER,   /* ERR value is not an integer or out of range */
	RESP_CMD_E_EXPIRE,        /* ERR invalid expire time in 'NAME' command */
	RESP_CMD_E_CURSOR,        /* ERR invalid cursor */
	RESP_CMD_E_OPTION         /* ERR Unsupported option ARG (EXPIRE NX|XX|GT|LT) */
};

/* Writes the error reply of e for command `name` (detail: the refused
 * argument, used by RESP_CMD_E_OPTION). Returns resp_out's result. */
int resp_cmd_write_error(struct resp_out *o, enum resp_cmd_err e, const char *name,
                         const struct resp_arg *detail);

/* SET's options, as the cache takes them. */
enum {
	RESP_SET_NX = 1u << 0,
	RESP_SET_XX = 1u << 1,
	RESP_SET_KEEPTTL = 1u << 2,
	RESP_SET_GET = 1u << 3
};

struct resp_set_opts {
	uint32_t flags;  /* RESP_SET_* (the same bits as the cache's CACHE_F_*) */
	int64_t ttl_ms;  /* > 0: expire after this long; 0: no expiry given */
};

/* Parses SET key value [NX|XX] [GET] [EX s|PX ms|EXAT unix-s|PXAT unix-ms|
 * KEEPTTL] from argv[3..argc) as Redis 7 does: every option once in any
 * order (a repeated one is allowed, the last time given wins), NX with XX,
 * two expiry options, or an expiry with KEEPTTL are RESP_CMD_E_SYNTAX; a
 * time that is not an integer RESP_CMD_E_NOT_INTEGER, one <= 0 or that
 * overflows in milliseconds RESP_CMD_E_EXPIRE (checked after the whole
 * syntax, as Redis does). now_wall_ms converts EXAT/PXAT. On
 * RESP_CMD_E_SYNTAX *bad is the argument refused. */
enum resp_cmd_err resp_cmd_set_parse(const struct resp_arg *argv, uint32_t argc,
                                     int64_t now_wall_ms, struct resp_set_opts *out);

/* SETEX / PSETEX's time (unit_ms 1000 or 1) as the relative ttl in ms: as
 * SET EX / PX (RESP_CMD_E_NOT_INTEGER, RESP_CMD_E_EXPIRE). */
enum resp_cmd_err resp_cmd_ttl_parse(const struct resp_arg *a, int64_t unit_ms,
                                     int64_t now_wall_ms, int64_t *ttl_ms);

/* EXPIRE / PEXPIRE's time (unit_ms 1000 or 1) as a ttl relative to now in
 * ms, which may be <= 0 (Redis then deletes the key): RESP_CMD_E_NOT_INTEGER,
 * or RESP_CMD_E_EXPIRE when the unit conversion or now_wall_ms + the time
 * would overflow. */
enum resp_cmd_err resp_cmd_expire_parse(const struct resp_arg *a, int64_t unit_ms,
                                        int64_t now_wall_ms, int64_t *ttl_ms);

/* A SCAN cursor: unsigned decimal digits, 1..20 of them, within uint64.
 * RESP_CMD_E_CURSOR otherwise. */
enum resp_cmd_err resp_cmd_cursor_parse(const struct resp_arg *a, uint64_t *cursor);

#define RESP_SCAN_COUNT_DEFAULT 10u

struct resp_scan_opts {
	uint64_t cursor;
	struct resp_arg match;  /* len 0: no MATCH */
	uint32_t count;         /* COUNT, capped at UINT32_MAX; default 10 */
	bool type_other;        /* TYPE other than "string": nothing can match */
};

/* SCAN cursor [MATCH pattern] [COUNT n] [TYPE type] from argv[1..argc):
 * RESP_CMD_E_CURSOR, RESP_CMD_E_NOT_INTEGER (COUNT), RESP_CMD_E_SYNTAX
 * (COUNT < 1, an unknown option or one without its value). */
enum resp_cmd_err resp_cmd_scan_parse(const struct resp_arg *argv, uint32_t argc,
                                      struct resp_scan_opts *out);

/* Redis's rule for a client name: bytes '!'..'~' only (no blanks, no
 * newlines); the empty name is allowed (it clears the name). */
bool resp_cmd_client_name_ok(const struct resp_arg *a);

/* COMMAND's entry for one command, Redis 7's ten fields: name, arity,
 * flags, first key, last key, step, ACL categories, tips, key specs and
 * subcommands (the last four empty). */
int resp_cmd_write_info(struct resp_out *o, const struct resp_cmd_info *ci);

#endif
