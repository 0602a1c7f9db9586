/*
 * resp.h - the Redis protocol (RESP2) codec of the cache's front door: an
 * incremental request parser, a reply writer and argument helpers.
 *
 * Owns, per connection, the query buffer and the parse of the command in
 * progress (struct resp_reader), and the replies not yet sent (struct
 * resp_out). It knows no command: the shell (node/svc cache + RESP listener)
 * looks at the parsed arguments and writes the replies.
 *
 * Sources: the RESP specification (redis.io/docs/reference/protocol-spec,
 * "Sending commands to a Redis server" and "Inline commands"), and Redis's
 * own behaviour, followed where a client can tell the difference:
 *   - a request whose first byte is '*' is a multibulk (*N\r\n then N times
 *     $LEN\r\n DATA\r\n); any other first byte starts an inline request, one
 *     line ended by \n (a \r before it is dropped) split as sdssplitargs()
 *     does: blanks separate arguments, "..." understands \xHH \n \r \t \b \a
 *     and \<any>, '...' understands \' only, a closing quote must be followed
 *     by a blank or the end of the line, a NUL byte ends the line's content;
 *   - *0 and any negative count (*-1) are empty requests, and so is an inline
 *     line of blanks: they are consumed and skipped, never returned;
 *   - lengths are read with string2ll()'s rules (resp_arg_int64 below);
 *   - the error texts are Redis's ("Protocol error: invalid bulk length").
 * Where Redis is lax this parser is strict, so that a desynchronised stream
 * is caught at once: a \r must be followed by \n in a count or length line,
 * a bulk's data must be followed by \r\n, and a type byte other than '$'
 * inside a multibulk fails on that byte.
 *
 * Split input: every decision is taken on bytes in a bounded window that has
 * fully arrived, so feeding a stream in any pieces gives the same commands
 * and the same final error as feeding it whole (tests/unit/test_resp.c
 * checks every split). The one limit that depends on the pieces is the query
 * buffer's: bytes fed but not yet parsed count against it, so the shell
 * parses after each read.
 *
 * Limits (struct resp_limits, Redis's defaults): a bulk's length, a
 * multibulk's count, an inline line's length, the query buffer, and the
 * smaller count and length allowed before AUTH (Redis 6.2.6+). An announced
 * length or count beyond its limit fails as soon as its line is read; one
 * within its limit allocates nothing in advance: the buffer and the argument
 * array grow by doubling as bytes actually arrive.
 *
 * Hot path: no allocation per command or per argument once a connection's
 * buffer and argument array have grown to its usual command size; arguments
 * are slices into the query buffer (inline arguments are unquoted in place).
 * A large bulk is never rescanned: the parser keeps its position across
 * calls and waits for a byte count.
 *
 * Pure: no I/O, no clock. Errors are lib/err.h codes. Threading: none; a
 * reader or an output buffer belongs to one connection on one thread.
 */
#ifndef CHORUS_CORE_RESP_H
#define CHORUS_CORE_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Redis's defaults for the settings of struct resp_limits. */
#define RESP_BULK_BYTES_MAX_DEFAULT ((size_t)512 * 1024 * 1024) /* proto-max-bulk-len */
#define RESP_MULTIBULK_COUNT_MAX_DEFAULT (1024u * 1024u)      /* Redis < 7 */
#define RESP_INLINE_BYTES_MAX_DEFAULT ((size_t)64 * 1024)     /* PROTO_INLINE_MAX_SIZE */
#define RESP_QUERY_BYTES_MAX_DEFAULT ((size_t)1024 * 1024 * 1024) /* client-query-buffer-limit */
#define RESP_UNAUTH_MULTIBULK_COUNT_MAX_DEFAULT 10u
#define RESP_UNAUTH_BULK_BYTES_MAX_DEFAULT ((size_t)16384)

/* The query buffer's first size (Redis's PROTO_IOBUF_LEN), and the size
 * above which an emptied buffer is given back rather than kept. */
#define RESP_BUF_BYTES_MIN ((size_t)16 * 1024)
#define RESP_BUF_BYTES_KEEP ((size_t)256 * 1024)
/* Argument slots kept between commands; a command with more gets a larger
 * array, released when the next command starts. */
#define RESP_ARGV_KEEP 1024u
#define RESP_ERROR_BYTES 96u

/* resp_parse's results other than an error. */
enum resp_result {
	RESP_NEED_MORE = 0, /* no complete command yet: read more bytes */
	RESP_COMMAND = 1    /* *cmd holds one command */
};

struct resp_limits {
	size_t bulk_bytes_max;               /* one argument of a multibulk */
	uint32_t multibulk_count_max;        /* arguments of a multibulk */
	size_t inline_bytes_max;             /* an inline line, before its \n */
	size_t query_bytes_max;              /* bytes received and not yet consumed */
	uint32_t unauth_multibulk_count_max; /* the same two, before AUTH */
	size_t unauth_bulk_bytes_max;
};

/* One argument: a slice of the reader's buffer, not NUL-terminated, may hold
 * any byte. */
struct resp_arg {
	const char *ptr;
	size_t len;
};

/* One parsed command. argv and the bytes it points to are the reader's: argv
 * is valid until the next resp_parse() on the reader, the bytes until the
 * next resp_reader_reserve() or resp_reader_feed(); both until
 * resp_reader_shrink() or resp_reader_free(). */
struct resp_command {
	const struct resp_arg *argv;
	uint32_t argc; /* >= 1 */
	size_t bytes;  /* the command's size on the wire */
};

/* Private phase of the reader (in the header only so a connection can embed
 * struct resp_reader). */
enum resp_phase {
	RESP_PHASE_START = 0, /* between commands */
	RESP_PHASE_INLINE,    /* looking for the inline line's \n */
	RESP_PHASE_COUNT,     /* reading *N\r\n */
	RESP_PHASE_BULK_LEN,  /* reading $LEN\r\n */
	RESP_PHASE_BULK_DATA, /* waiting for LEN bytes and \r\n */
	RESP_PHASE_FAILED     /* a protocol error: the connection must close */
};

/* A connection's parser. Fields are private: use the functions below.
 * Buffer layout: buf[0, head) consumed, buf[head, tail) received and not
 * consumed (the command in progress starts at head), buf[tail, buf_bytes)
 * free. */
struct resp_reader {
	struct resp_limits limits;
	bool auth_required;     /* the unauth_* limits apply */
	enum resp_phase phase;
	char *buf;              /* owned */
	size_t buf_bytes;       /* allocated */
	size_t head, tail;
	size_t pos;             /* parse position, head <= pos <= tail */
	size_t scan;            /* INLINE: bytes before it hold no \n */
	uint32_t args_left;     /* multibulk: arguments still to read */
	size_t bulk_len;        /* BULK_DATA: the argument's length */
	struct resp_arg *argv;  /* owned; argv_slots allocated */
	uint32_t argc, argv_slots;
	int error;              /* FAILED: the code resp_parse returns */
	char error_msg[RESP_ERROR_BYTES];
};

/* Fills *l with Redis's defaults (the *_DEFAULT values above). */
void resp_limits_default(struct resp_limits *l);

/* An empty reader with the given limits (NULL: the defaults). Allocates
 * nothing yet. 0, or ERR_INVALID if a limit is 0. */
int resp_reader_init(struct resp_reader *r, const struct resp_limits *limits);
/* Releases the buffer and the argument array; r may be re-initialised. */
void resp_reader_free(struct resp_reader *r);

/* While required, the smaller unauth_* limits apply to commands whose count
 * or length line is read from now on (set it while a password is configured
 * and the connection has not authenticated, as Redis's authRequired()). */
void resp_reader_set_auth_required(struct resp_reader *r, bool required);

/* Room to receive bytes: *space points to *space_bytes >= 1 writable bytes
 * at the end of the received data, at least min(want_bytes, what the query
 * limit still allows). Write into it (read(2)), then resp_reader_commit()
 * the count. Invalidates the bytes of commands returned earlier (the buffer
 * may move). 0; ERR_FULL if the query buffer is at its limit (parse first:
 * resp_parse fails a command that cannot fit); ERR_NOMEM. */
int resp_reader_reserve(struct resp_reader *r, size_t want_bytes, char **space,
                        size_t *space_bytes);
/* Adds n bytes written into the space of the last reserve (n <= its size). */
void resp_reader_commit(struct resp_reader *r, size_t n);
/* reserve + copy + commit of n bytes. 0; ERR_FULL (nothing copied) if they do
 * not fit under the query limit; ERR_NOMEM. */
int resp_reader_feed(struct resp_reader *r, const void *data, size_t n);

/* Parses the next command from the received bytes. RESP_COMMAND with *cmd
 * filled and its bytes consumed; RESP_NEED_MORE (empty requests are consumed
 * and skipped); or, on a protocol error, ERR_PROTOCOL (ERR_NOMEM if an
 * argument array could not grow), with resp_reader_error() saying why.
 * Errors are final: the connection must be closed after replying
 * "-ERR <message>" (resp_write_errorf(o, "ERR %s", resp_reader_error(r))),
 * and every later call returns the same error. Call it until it returns
 * something other than RESP_COMMAND after every commit: commands pipelined
 * in one read are returned one per call. */
int resp_parse(struct resp_reader *r, struct resp_command *cmd);

/* The message of the last error ("Protocol error: invalid bulk length"), ""
 * if none. Owned by the reader. */
const char *resp_reader_error(const struct resp_reader *r);
/* Bytes received and not yet consumed (the command in progress, if any). */
size_t resp_reader_pending_bytes(const struct resp_reader *r);
/* Heap bytes the reader holds (buffer and argument array). */
size_t resp_reader_memory_bytes(const struct resp_reader *r);
/* For an idle connection: gives back the buffer if nothing is pending, and
 * an argument array grown beyond RESP_ARGV_KEEP. */
void resp_reader_shrink(struct resp_reader *r);

/* ---- replies ---- */

/* A connection's unsent replies: data[head, len) is to be written. Growable
 * up to bytes_max unsent bytes. The first failed write (ERR_NOMEM, or
 * ERR_FULL at the limit) is kept in `error` and every later write returns it
 * without writing: a reply may be cut short, so the connection must then be
 * closed (as Redis closes a client over its output buffer limit). */
struct resp_out {
	char *data; /* owned */
	size_t head, len, cap;
	size_t bytes_max;
	int error;
};

void resp_out_init(struct resp_out *o, size_t bytes_max);
void resp_out_free(struct resp_out *o);
/* The unsent bytes: returns data + head and sets *bytes = len - head. */
const char *resp_out_pending(const struct resp_out *o, size_t *bytes);
/* Marks n unsent bytes as written (n <= the pending count). */
void resp_out_consume(struct resp_out *o, size_t n);

/* Every writer returns 0 or the output's error (see struct resp_out). */

/* +TEXT\r\n. A \r or \n in text is written as a space (a status line cannot
 * hold one). */
int resp_write_simple(struct resp_out *o, const char *text);
int resp_write_ok(struct resp_out *o); /* +OK */
/* -TEXT\r\n, TEXT starting with its code ("ERR syntax error"); \r and \n
 * are written as spaces, as Redis does. */
int resp_write_error(struct resp_out *o, const char *text);
/* -FORMATTED\r\n, the same rule; the text is cut at 511 bytes. */
int resp_write_errorf(struct resp_out *o, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int resp_write_integer(struct resp_out *o, int64_t v);  /* :V\r\n */
int resp_write_bulk(struct resp_out *o, const void *data, size_t len); /* $LEN\r\nDATA\r\n */
int resp_write_null_bulk(struct resp_out *o);          /* $-1\r\n */
int resp_write_array(struct resp_out *o, size_t count); /* *COUNT\r\n, then the elements */
int resp_write_null_array(struct resp_out *o);         /* *-1\r\n */
/* Bytes that are RESP already (replies rendered earlier into another
 * resp_out), appended as they are. */
int resp_write_raw(struct resp_out *o, const void *data, size_t len);

/* Redis's standard errors, for resp_write_error(). */
#define RESP_ERR_NOT_INTEGER "ERR value is not an integer or out of range"
#define RESP_ERR_SYNTAX "ERR syntax error"
#define RESP_ERR_NOAUTH "NOAUTH Authentication required."
#define RESP_ERR_WRONGPASS "WRONGPASS invalid username-password pair or user is disabled."

/* "ERR unknown command 'NAME', with args beginning with: 'A' 'B' " as Redis
 * writes it: the name cut at 128 bytes, then quoted arguments while fewer
 * than 128 bytes of them were written (each cut to what is left of the 128),
 * each argument's text ending at a NUL byte as in Redis's "%.*s". */
int resp_write_err_unknown_command(struct resp_out *o, const struct resp_command *cmd);
/* "ERR wrong number of arguments for 'NAME' command"; name is the command
 * table's (lower case, as Redis 7 writes it). */
int resp_write_err_arity(struct resp_out *o, const char *name);

/* ---- arguments ---- */

/* Whether the argument is name, ignoring ASCII case ("GET", "get"). */
bool resp_arg_is(const struct resp_arg *a, const char *name);
/* Parses a decimal int64 with Redis's string2ll() rules: an optional '-',
 * then "0" alone or digits not starting with 0; no '+', no blanks, no "-0";
 * within [INT64_MIN, INT64_MAX]. 0, or ERR_INVALID. */
int resp_int64_parse(const char *s, size_t len, int64_t *out);
int resp_arg_int64(const struct resp_arg *a, int64_t *out);
/* A duration: an integer (as resp_arg_int64) >= 0 in units of unit_ms
 * (1000 for seconds, 1 for milliseconds), converted to milliseconds. 0;
 * ERR_INVALID if not an integer (Redis: RESP_ERR_NOT_INTEGER); ERR_TOO_LARGE
 * if negative or over INT64_MAX in milliseconds (Redis: "invalid expire
 * time"). The caller refuses 0 where Redis does (SET EX 0). */
int resp_arg_duration_ms(const struct resp_arg *a, int64_t unit_ms, int64_t *out_ms);

#endif
