/*
 * resp.c - RESP2 request parser and reply writer (see resp.h for the rules
 * followed and where they come from).
 *
 * The parser is a small state machine over the reader's buffer (enum
 * resp_phase). The subtle parts:
 *   - Split input. A check only ever looks at a window of bytes that has
 *     arrived in full: a count or length line is at most 1 + 20 + 2 bytes
 *     (string2ll() accepts no more than 20 characters), an inline line at
 *     most inline_bytes_max + 1, a bulk's terminator is the two bytes after
 *     its data. So the answer for a window never depends on how the bytes
 *     came, which is what makes split and whole input agree.
 *   - Positions survive between calls (head, pos, scan are offsets), so no
 *     byte is looked at twice: a large bulk is waited for by count, and the
 *     search for an inline line's \n resumes where it stopped.
 *   - The slices of a multibulk in progress are pointers into the buffer;
 *     buf_move() is the one place the buffer moves and it moves them too.
 *   - Inline arguments are unquoted in place: an argument never grows when
 *     its quotes and escapes are removed, so the write index never passes
 *     the read index (split_inline).
 */
#include "core/resp.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"

/* The longest text string2ll() accepts: "-9223372036854775808". */
#define NUMBER_CHARS_MAX 20u
/* Upper bound for size limits, so that sums and doublings cannot overflow. */
#define SIZE_LIMIT_MAX (SIZE_MAX / 4)
/* resp_write_errorf's text and the unknown-command text. */
#define ERROR_TEXT_BYTES 512u
/* Redis's cut for the unknown command's name and argument list. */
#define UNKNOWN_CUT_BYTES 128u
#define ARGV_SLOTS_FIRST 16u
#define OUT_BYTES_FIRST 256u

enum step {
	STEP_MORE, /* wait for bytes */
	STEP_NEXT, /* the phase changed: go on */
	STEP_DONE, /* a command is complete */
	STEP_FAIL  /* r->phase is FAILED */
};

enum line {
	LINE_MORE,
	LINE_BAD,
	LINE_OK
};

void resp_limits_default(struct resp_limits *l)
{
	l->bulk_bytes_max = RESP_BULK_BYTES_MAX_DEFAULT;
	l->multibulk_count_max = RESP_MULTIBULK_COUNT_MAX_DEFAULT;
	l->inline_bytes_max = RESP_INLINE_BYTES_MAX_DEFAULT;
	l->query_bytes_max = RESP_QUERY_BYTES_MAX_DEFAULT;
	l->unauth_multibulk_count_max = RESP_UNAUTH_MULTIBULK_COUNT_MAX_DEFAULT;
	l->unauth_bulk_bytes_max = RESP_UNAUTH_BULK_BYTES_MAX_DEFAULT;
}

int resp_reader_init(struct resp_reader *r, const struct resp_limits *limits)
{
	memset(r, 0, sizeof *r);
	if (limits)
		r->limits = *limits;
	else
		resp_limits_default(&r->limits);
	const struct resp_limits *l = &r->limits;
	if (l->bulk_bytes_max == 0 || l->bulk_bytes_max > SIZE_LIMIT_MAX ||
	    l->multibulk_count_max == 0 || l->multibulk_count_max > INT32_MAX ||
	    l->inline_bytes_max == 0 || l->inline_bytes_max > UINT32_MAX ||
	    l->inline_bytes_max > SIZE_LIMIT_MAX || l->query_bytes_max == 0 ||
	    l->query_bytes_max > SIZE_LIMIT_MAX || l->unauth_multibulk_count_max == 0 ||
	    l->unauth_bulk_bytes_max == 0)
		return ERR_INVALID;
	r->phase = RESP_PHASE_START;
	return 0;
}

void resp_reader_free(struct resp_reader *r)
{
	free(r->buf);
	free(r->argv);
	memset(r, 0, sizeof *r);
}

void resp_reader_set_auth_required(struct resp_reader *r, bool required)
{
	r->auth_required = required;
}

const char *resp_reader_error(const struct resp_reader *r)
{
	return r->error_msg;
}

size_t resp_reader_pending_bytes(const struct resp_reader *r)
{
	return r->tail - r->head;
}

size_t resp_reader_memory_bytes(const struct resp_reader *r)
{
	return r->buf_bytes + (size_t)r->argv_slots * sizeof(struct resp_arg);
}

static bool in_multibulk(const struct resp_reader *r)
{
	return r->phase == RESP_PHASE_BULK_LEN || r->phase == RESP_PHASE_BULK_DATA;
}

static void argv_release(struct resp_reader *r)
{
	free(r->argv);
	r->argv = NULL;
	r->argv_slots = 0;
	r->argc = 0;
}

void resp_reader_shrink(struct resp_reader *r)
{
	if (r->head == r->tail) {
		free(r->buf);
		r->buf = NULL;
		r->buf_bytes = 0;
		r->head = r->tail = r->pos = r->scan = 0;
	}
	if (!in_multibulk(r) && r->argv_slots > RESP_ARGV_KEEP)
		argv_release(r);
}

/* Moves the pending bytes buf[head, tail) to the start of dst (r->buf itself,
 * or a new buffer of dst_bytes that replaces it) and every offset and
 * in-progress slice with them. */
static void buf_move(struct resp_reader *r, char *dst, size_t dst_bytes)
{
	assert(r->head <= r->scan && r->scan <= r->tail);
	assert(r->head <= r->pos && r->pos <= r->tail);
	size_t n = r->tail - r->head;
	const char *src = r->buf ? r->buf + r->head : NULL;
	assert(dst_bytes >= n);
	if (n)
		memmove(dst, src, n);
	if (in_multibulk(r))
		for (uint32_t i = 0; i < r->argc; i++)
			r->argv[i].ptr = dst + (r->argv[i].ptr - src);
	r->pos -= r->head;
	r->scan -= r->head;
	r->tail = n;
	r->head = 0;
	if (dst != r->buf) {
		free(r->buf);
		r->buf = dst;
		r->buf_bytes = dst_bytes;
	}
}

int resp_reader_reserve(struct resp_reader *r, size_t want_bytes, char **space,
                        size_t *space_bytes)
{
	size_t used = r->tail - r->head;
	assert(used <= r->limits.query_bytes_max);
	size_t room = r->limits.query_bytes_max - used;
	if (room == 0)
		return ERR_FULL;
	size_t want = want_bytes == 0 ? 1 : want_bytes;
	if (want > room)
		want = room;
	if (used == 0) {
		/* nothing pending: start over at offset 0, and give back a buffer a
		 * large command grew */
		if (r->buf_bytes > RESP_BUF_BYTES_KEEP) {
			free(r->buf);
			r->buf = NULL;
			r->buf_bytes = 0;
		}
		r->head = r->tail = r->pos = r->scan = 0;
	}
	if (r->buf_bytes - r->tail < want) {
		if (r->head > 0 && r->buf_bytes - used >= want) {
			buf_move(r, r->buf, r->buf_bytes);
		} else {
			/* doubling: a large bulk costs O(its size) in copies */
			size_t cap = r->buf_bytes ? r->buf_bytes : RESP_BUF_BYTES_MIN;
			while (cap - used < want)
				cap *= 2;
			if (cap > r->limits.query_bytes_max)
				cap = r->limits.query_bytes_max;
			assert(cap >= used + want);
			char *nb = malloc(cap);
			if (!nb)
				return ERR_NOMEM;
			buf_move(r, nb, cap);
		}
	}
	*space = r->buf + r->tail;
	size_t free_bytes = r->buf_bytes - r->tail;
	*space_bytes = free_bytes < room ? free_bytes : room;
	assert(*space_bytes >= want);
	return 0;
}

void resp_reader_commit(struct resp_reader *r, size_t n)
{
	assert(n <= r->buf_bytes - r->tail);
	assert(r->tail - r->head + n <= r->limits.query_bytes_max);
	r->tail += n;
}

int resp_reader_feed(struct resp_reader *r, const void *data, size_t n)
{
	if (n == 0)
		return 0;
	if (n > r->limits.query_bytes_max - (r->tail - r->head))
		return ERR_FULL;
	char *space;
	size_t space_bytes;
	int rc = resp_reader_reserve(r, n, &space, &space_bytes);
	if (rc != 0)
		return rc;
	assert(space_bytes >= n);
	memcpy(space, data, n);
	resp_reader_commit(r, n);
	return 0;
}

/* ---- the parser ---- */

static enum step fail(struct resp_reader *r, int code, const char *msg)
{
	r->phase = RESP_PHASE_FAILED;
	r->error = code;
	snprintf(r->error_msg, sizeof r->error_msg, "%s", msg);
	return STEP_FAIL;
}

/* Makes room for one more argument. The array starts at ARGV_SLOTS_FIRST
 * and doubles, but past that never beyond slots_max (the multibulk's
 * announced count), and it grows only when an argument has arrived: an
 * announced count allocates nothing. */
static int argv_reserve(struct resp_reader *r, uint64_t slots_max)
{
	if (r->argc < r->argv_slots)
		return 0;
	uint64_t slots = r->argv_slots ? (uint64_t)r->argv_slots * 2 : ARGV_SLOTS_FIRST;
	if (slots > slots_max)
		slots = slots_max > ARGV_SLOTS_FIRST ? slots_max : ARGV_SLOTS_FIRST;
	assert(slots > r->argc && slots <= UINT32_MAX);
	struct resp_arg *a = realloc(r->argv, (size_t)slots * sizeof *a);
	if (!a)
		return ERR_NOMEM;
	r->argv = a;
	r->argv_slots = (uint32_t)slots;
	return 0;
}

/* Reads the count or length line whose type byte is at r->pos: the number
 * in *value and the offset after its \r\n in *next. */
static enum line read_number_line(const struct resp_reader *r, int64_t *value, size_t *next)
{
	size_t digits = r->pos + 1;
	size_t window_end = digits + NUMBER_CHARS_MAX + 1; /* the digits and the \r */
	size_t end = r->tail < window_end ? r->tail : window_end;
	const char *cr = end > digits ? memchr(r->buf + digits, '\r', end - digits) : NULL;
	if (!cr)
		return r->tail >= window_end ? LINE_BAD : LINE_MORE;
	size_t at = (size_t)(cr - r->buf);
	if (at + 1 == r->tail)
		return LINE_MORE;
	if (r->buf[at + 1] != '\n')
		return LINE_BAD;
	if (resp_int64_parse(r->buf + digits, at - digits, value) != 0)
		return LINE_BAD;
	*next = at + 2;
	return LINE_OK;
}

static enum step step_start(struct resp_reader *r)
{
	if (r->head == r->tail)
		return STEP_MORE;
	if (r->argv_slots > RESP_ARGV_KEEP)
		argv_release(r);
	r->argc = 0;
	r->pos = r->scan = r->head;
	r->phase = r->buf[r->head] == '*' ? RESP_PHASE_COUNT : RESP_PHASE_INLINE;
	return STEP_NEXT;
}

static enum step step_count(struct resp_reader *r)
{
	int64_t count;
	size_t next;
	switch (read_number_line(r, &count, &next)) {
	case LINE_MORE:
		return STEP_MORE;
	case LINE_BAD:
		return fail(r, ERR_PROTOCOL, "Protocol error: invalid multibulk length");
	case LINE_OK:
		break;
	}
	if (count > (int64_t)r->limits.multibulk_count_max)
		return fail(r, ERR_PROTOCOL, "Protocol error: invalid multibulk length");
	if (r->auth_required && count > (int64_t)r->limits.unauth_multibulk_count_max)
		return fail(r, ERR_PROTOCOL, "Protocol error: unauthenticated multibulk length");
	r->pos = r->scan = next;
	if (count <= 0) {
		/* *0 and *-1 are empty requests: Redis skips them */
		r->head = next;
		r->phase = RESP_PHASE_START;
		return STEP_NEXT;
	}
	r->args_left = (uint32_t)count;
	r->phase = RESP_PHASE_BULK_LEN;
	return STEP_NEXT;
}

static enum step step_bulk_len(struct resp_reader *r)
{
	if (r->pos == r->tail)
		return STEP_MORE;
	unsigned char type = (unsigned char)r->buf[r->pos];
	if (type != '$') {
		char msg[RESP_ERROR_BYTES];
		if (type >= 0x20 && type < 0x7f)
			snprintf(msg, sizeof msg, "Protocol error: expected '$', got '%c'", type);
		else
			snprintf(msg, sizeof msg, "Protocol error: expected '$', got '\\x%02x'", type);
		return fail(r, ERR_PROTOCOL, msg);
	}
	int64_t len;
	size_t next;
	switch (read_number_line(r, &len, &next)) {
	case LINE_MORE:
		return STEP_MORE;
	case LINE_BAD:
		return fail(r, ERR_PROTOCOL, "Protocol error: invalid bulk length");
	case LINE_OK:
		break;
	}
	if (len < 0 || (uint64_t)len > r->limits.bulk_bytes_max)
		return fail(r, ERR_PROTOCOL, "Protocol error: invalid bulk length");
	if (r->auth_required && (uint64_t)len > r->limits.unauth_bulk_bytes_max)
		return fail(r, ERR_PROTOCOL, "Protocol error: unauthenticated bulk length");
	/* the whole command has to fit in the query buffer: say so now rather
	 * than after buffering up to the limit */
	size_t so_far = next - r->head;
	size_t max = r->limits.query_bytes_max;
	if (so_far > max || (size_t)len + 2 > max - so_far)
		return fail(r, ERR_PROTOCOL, "Protocol error: query buffer limit exceeded");
	r->bulk_len = (size_t)len;
	r->pos = r->scan = next;
	r->phase = RESP_PHASE_BULK_DATA;
	return STEP_NEXT;
}

static enum step step_bulk_data(struct resp_reader *r)
{
	size_t have = r->tail - r->pos;
	size_t len = r->bulk_len;
	if (have < len + 1)
		return STEP_MORE;
	if (r->buf[r->pos + len] != '\r')
		return fail(r, ERR_PROTOCOL, "Protocol error: bulk data not followed by CRLF");
	if (have < len + 2)
		return STEP_MORE;
	if (r->buf[r->pos + len + 1] != '\n')
		return fail(r, ERR_PROTOCOL, "Protocol error: bulk data not followed by CRLF");
	if (argv_reserve(r, (uint64_t)r->argc + r->args_left) != 0)
		return fail(r, ERR_NOMEM, "out of memory");
	r->argv[r->argc].ptr = r->buf + r->pos;
	r->argv[r->argc].len = len;
	r->argc++;
	r->pos += len + 2;
	r->scan = r->pos;
	r->args_left--;
	if (r->args_left == 0)
		return STEP_DONE;
	r->phase = RESP_PHASE_BULK_LEN;
	return STEP_NEXT;
}

/* isspace() in the C locale, as sdssplitargs() uses it between arguments. */
static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static char unescape(char c)
{
	switch (c) {
	case 'n':
		return '\n';
	case 'r':
		return '\r';
	case 't':
		return '\t';
	case 'b':
		return '\b';
	case 'a':
		return '\a';
	default:
		return c;
	}
}

/* Splits the inline line s[0, n) into r->argv with sdssplitargs()'s rules,
 * unquoting in place: the write index w never passes the read index i, as
 * no argument is longer than its text. 0, ERR_PROTOCOL (unbalanced quotes,
 * or a closing quote followed by something other than a blank), ERR_NOMEM. */
static int split_inline(struct resp_reader *r, char *s, size_t n)
{
	/* sdssplitargs() reads a C string: a NUL ends the line */
	const char *nul = memchr(s, '\0', n);
	if (nul)
		n = (size_t)(nul - s);
	size_t i = 0, w = 0;
	r->argc = 0;
	for (;;) {
		while (i < n && is_blank(s[i]))
			i++;
		if (i == n)
			return 0;
		size_t start = w;
		bool dq = false, sq = false, done = false;
		while (!done) {
			/* '\0' stands for the end of the line, as in the C string */
			char c = i < n ? s[i] : '\0';
			char c1 = i + 1 < n ? s[i + 1] : '\0';
			assert(w <= i);
			if (dq) {
				int hi, lo;
				if (c == '\\' && c1 == 'x' && i + 3 < n &&
				    (hi = hex_value(s[i + 2])) >= 0 && (lo = hex_value(s[i + 3])) >= 0) {
					s[w++] = (char)(hi * 16 + lo);
					i += 3;
				} else if (c == '\\' && c1 != '\0') {
					i++;
					s[w++] = unescape(c1);
				} else if (c == '"') {
					if (c1 != '\0' && !is_blank(c1))
						return ERR_PROTOCOL;
					done = true;
				} else if (c == '\0') {
					return ERR_PROTOCOL;
				} else {
					s[w++] = c;
				}
			} else if (sq) {
				if (c == '\\' && c1 == '\'') {
					i++;
					s[w++] = '\'';
				} else if (c == '\'') {
					if (c1 != '\0' && !is_blank(c1))
						return ERR_PROTOCOL;
					done = true;
				} else if (c == '\0') {
					return ERR_PROTOCOL;
				} else {
					s[w++] = c;
				}
			} else {
				switch (c) {
				case ' ':
				case '\n':
				case '\r':
				case '\t':
				case '\0':
					done = true;
					break;
				case '"':
					dq = true;
					break;
				case '\'':
					sq = true;
					break;
				default:
					s[w++] = c;
					break;
				}
			}
			if (i < n)
				i++;
		}
		if (argv_reserve(r, UINT32_MAX) != 0)
			return ERR_NOMEM;
		r->argv[r->argc].ptr = s + start;
		r->argv[r->argc].len = w - start;
		r->argc++;
	}
}

static enum step step_inline(struct resp_reader *r)
{
	size_t max = r->limits.inline_bytes_max;
	/* a line of max bytes may have its \n at pos + max */
	size_t window_end = r->tail - r->pos > max ? r->pos + max + 1 : r->tail;
	assert(r->scan >= r->pos && r->scan <= window_end);
	const char *nl = window_end > r->scan
	                 ? memchr(r->buf + r->scan, '\n', window_end - r->scan) : NULL;
	if (!nl) {
		if (r->tail - r->pos > max)
			return fail(r, ERR_PROTOCOL, "Protocol error: too big inline request");
		r->scan = window_end;
		return STEP_MORE;
	}
	size_t at = (size_t)(nl - r->buf);
	size_t line = at - r->pos;
	if (line > 0 && r->buf[at - 1] == '\r')
		line--;
	int rc = split_inline(r, r->buf + r->pos, line);
	if (rc == ERR_NOMEM)
		return fail(r, ERR_NOMEM, "out of memory");
	if (rc != 0)
		return fail(r, ERR_PROTOCOL, "Protocol error: unbalanced quotes in request");
	r->pos = r->scan = at + 1;
	if (r->argc == 0) {
		/* a blank line: an empty request */
		r->head = r->pos;
		r->phase = RESP_PHASE_START;
		return STEP_NEXT;
	}
	return STEP_DONE;
}

int resp_parse(struct resp_reader *r, struct resp_command *cmd)
{
	for (;;) {
		enum step s = STEP_FAIL;
		switch (r->phase) {
		case RESP_PHASE_START:
			s = step_start(r);
			break;
		case RESP_PHASE_INLINE:
			s = step_inline(r);
			break;
		case RESP_PHASE_COUNT:
			s = step_count(r);
			break;
		case RESP_PHASE_BULK_LEN:
			s = step_bulk_len(r);
			break;
		case RESP_PHASE_BULK_DATA:
			s = step_bulk_data(r);
			break;
		case RESP_PHASE_FAILED:
			return r->error;
		}
		switch (s) {
		case STEP_NEXT:
			continue;
		case STEP_DONE:
			assert(r->argc >= 1 && r->pos <= r->tail);
			cmd->argv = r->argv;
			cmd->argc = r->argc;
			cmd->bytes = r->pos - r->head;
			r->head = r->scan = r->pos;
			r->phase = RESP_PHASE_START;
			return RESP_COMMAND;
		case STEP_FAIL:
			return r->error;
		case STEP_MORE:
			break;
		}
		/* a command in progress that fills the query buffer can never
		 * complete (resp_reader_reserve would give no more room) */
		if (r->tail - r->head >= r->limits.query_bytes_max) {
			fail(r, ERR_PROTOCOL, "Protocol error: query buffer limit exceeded");
			return r->error;
		}
		return RESP_NEED_MORE;
	}
}

/* ---- replies ---- */

void resp_out_init(struct resp_out *o, size_t bytes_max)
{
	memset(o, 0, sizeof *o);
	o->bytes_max = bytes_max < SIZE_LIMIT_MAX ? bytes_max : SIZE_LIMIT_MAX;
}

void resp_out_free(struct resp_out *o)
{
	free(o->data);
	memset(o, 0, sizeof *o);
}

const char *resp_out_pending(const struct resp_out *o, size_t *bytes)
{
	*bytes = o->len - o->head;
	return o->data ? o->data + o->head : "";
}

void resp_out_consume(struct resp_out *o, size_t n)
{
	assert(n <= o->len - o->head);
	o->head += n;
	if (o->head == o->len)
		o->head = o->len = 0;
}

/* Appends n bytes of room at the end and returns where they start; the
 * caller fills all n. */
static int out_grow(struct resp_out *o, size_t n, char **at)
{
	if (o->error)
		return o->error;
	size_t unsent = o->len - o->head;
	if (n > o->bytes_max - unsent)
		return o->error = ERR_FULL;
	if (o->cap - o->len < n) {
		if (o->head > 0) {
			memmove(o->data, o->data + o->head, unsent);
			o->head = 0;
			o->len = unsent;
		}
		if (o->cap - o->len < n) {
			size_t cap = o->cap ? o->cap : OUT_BYTES_FIRST;
			while (cap - o->len < n)
				cap *= 2;
			if (cap > o->bytes_max)
				cap = o->bytes_max;
			assert(cap >= o->len + n);
			char *d = realloc(o->data, cap);
			if (!d)
				return o->error = ERR_NOMEM;
			o->data = d;
			o->cap = cap;
		}
	}
	*at = o->data + o->len;
	o->len += n;
	return 0;
}

/* TYPE TEXT \r\n with \r and \n in the text written as spaces. */
static int write_line(struct resp_out *o, char type, const char *text, size_t n)
{
	char *at;
	int rc = out_grow(o, n + 3, &at);
	if (rc != 0)
		return rc;
	*at++ = type;
	for (size_t i = 0; i < n; i++)
		at[i] = text[i] == '\r' || text[i] == '\n' ? ' ' : text[i];
	at[n] = '\r';
	at[n + 1] = '\n';
	return 0;
}

/* Writes TYPE, the decimal value and \r\n into tmp (>= 24 bytes). */
static size_t format_number(char *tmp, char type, bool negative, uint64_t magnitude)
{
	char digits[20];
	size_t d = 0;
	do {
		digits[d++] = (char)('0' + magnitude % 10);
		magnitude /= 10;
	} while (magnitude);
	size_t n = 0;
	tmp[n++] = type;
	if (negative)
		tmp[n++] = '-';
	while (d)
		tmp[n++] = digits[--d];
	tmp[n++] = '\r';
	tmp[n++] = '\n';
	return n;
}

static int write_number(struct resp_out *o, char type, bool negative, uint64_t magnitude)
{
	char tmp[24];
	size_t n = format_number(tmp, type, negative, magnitude);
	char *at;
	int rc = out_grow(o, n, &at);
	if (rc != 0)
		return rc;
	memcpy(at, tmp, n);
	return 0;
}

static int write_raw(struct resp_out *o, const char *s, size_t n)
{
	char *at;
	int rc = out_grow(o, n, &at);
	if (rc != 0)
		return rc;
	memcpy(at, s, n);
	return 0;
}

int resp_write_raw(struct resp_out *o, const void *data, size_t len)
{
	return len ? write_raw(o, data, len) : o->error;
}

int resp_write_simple(struct resp_out *o, const char *text)
{
	return write_line(o, '+', text, strlen(text));
}

int resp_write_ok(struct resp_out *o)
{
	return write_raw(o, "+OK\r\n", 5);
}

int resp_write_error(struct resp_out *o, const char *text)
{
	return write_line(o, '-', text, strlen(text));
}

int resp_write_errorf(struct resp_out *o, const char *fmt, ...)
{
	char text[ERROR_TEXT_BYTES];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof text)
		n = sizeof text - 1;
	return write_line(o, '-', text, (size_t)n);
}

int resp_write_integer(struct resp_out *o, int64_t v)
{
	/* the magnitude of INT64_MIN does not fit in an int64_t */
	uint64_t magnitude = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
	return write_number(o, ':', v < 0, magnitude);
}

int resp_write_bulk(struct resp_out *o, const void *data, size_t len)
{
	/* h + len + 2 must not wrap; out_grow refuses it against bytes_max */
	if (len > SIZE_LIMIT_MAX)
		return o->error ? o->error : (o->error = ERR_FULL);
	char tmp[24];
	size_t h = format_number(tmp, '$', false, len);
	char *at;
	int rc = out_grow(o, h + len + 2, &at);
	if (rc != 0)
		return rc;
	memcpy(at, tmp, h);
	if (len)
		memcpy(at + h, data, len);
	at[h + len] = '\r';
	at[h + len + 1] = '\n';
	return 0;
}

int resp_write_null_bulk(struct resp_out *o)
{
	return write_raw(o, "$-1\r\n", 5);
}

int resp_write_array(struct resp_out *o, size_t count)
{
	return write_number(o, '*', false, count);
}

int resp_write_null_array(struct resp_out *o)
{
	return write_raw(o, "*-1\r\n", 5);
}

/* Appends s[0, n) cut at its first NUL (what printf's "%.*s" copies) to
 * text at *len; returns the count copied. */
static size_t append_cstr(char *text, size_t *len, const char *s, size_t n)
{
	const char *nul = n ? memchr(s, '\0', n) : NULL;
	if (nul)
		n = (size_t)(nul - s);
	memcpy(text + *len, s, n);
	*len += n;
	return n;
}

int resp_write_err_unknown_command(struct resp_out *o, const struct resp_command *cmd)
{
	assert(cmd->argc >= 1);
	static const char head[] = "ERR unknown command '";
	static const char mid[] = "', with args beginning with: ";
	char text[ERROR_TEXT_BYTES];
	size_t len = 0;
	memcpy(text, head, sizeof head - 1);
	len += sizeof head - 1;
	const struct resp_arg *name = &cmd->argv[0];
	append_cstr(text, &len, name->ptr,
	            name->len < UNKNOWN_CUT_BYTES ? name->len : UNKNOWN_CUT_BYTES);
	memcpy(text + len, mid, sizeof mid - 1);
	len += sizeof mid - 1;
	/* Redis: for each argument while the list is under 128 bytes, "'%.*s' "
	 * with what is left of the 128 */
	size_t args_len = 0;
	for (uint32_t i = 1; i < cmd->argc && args_len < UNKNOWN_CUT_BYTES; i++) {
		size_t budget = UNKNOWN_CUT_BYTES - args_len;
		const struct resp_arg *a = &cmd->argv[i];
		text[len++] = '\'';
		size_t copied = append_cstr(text, &len, a->ptr, a->len < budget ? a->len : budget);
		text[len++] = '\'';
		text[len++] = ' ';
		args_len += copied + 3;
	}
	assert(len <= sizeof text);
	return write_line(o, '-', text, len);
}

int resp_write_err_arity(struct resp_out *o, const char *name)
{
	return resp_write_errorf(o, "ERR wrong number of arguments for '%s' command", name);
}

/* ---- arguments ---- */

static char ascii_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

bool resp_arg_is(const struct resp_arg *a, const char *name)
{
	size_t n = strlen(name);
	if (a->len != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (ascii_lower(a->ptr[i]) != ascii_lower(name[i]))
			return false;
	return true;
}

int resp_int64_parse(const char *s, size_t len, int64_t *out)
{
	if (len == 0 || len > NUMBER_CHARS_MAX)
		return ERR_INVALID;
	if (len == 1 && s[0] == '0') {
		*out = 0;
		return 0;
	}
	size_t i = 0;
	bool negative = s[0] == '-';
	if (negative)
		i++;
	/* the first digit is 1-9: no leading zero, and no "-0" */
	if (i == len || s[i] < '1' || s[i] > '9')
		return ERR_INVALID;
	uint64_t v = 0;
	for (; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return ERR_INVALID;
		uint64_t d = (uint64_t)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return ERR_INVALID;
		v = v * 10 + d;
	}
	uint64_t limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	if (v > limit)
		return ERR_INVALID;
	if (!negative)
		*out = (int64_t)v;
	else if (v == (uint64_t)INT64_MAX + 1)
		*out = INT64_MIN;
	else
		*out = -(int64_t)v;
	return 0;
}

int resp_arg_int64(const struct resp_arg *a, int64_t *out)
{
	return resp_int64_parse(a->ptr, a->len, out);
}

int resp_arg_duration_ms(const struct resp_arg *a, int64_t unit_ms, int64_t *out_ms)
{
	assert(unit_ms >= 1);
	int64_t v;
	if (resp_arg_int64(a, &v) != 0)
		return ERR_INVALID;
	if (v < 0 || v > INT64_MAX / unit_ms)
		return ERR_TOO_LARGE;
	*out_ms = v * unit_ms;
	return 0;
}
