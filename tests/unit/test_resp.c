/* test_resp.c - the RESP2 codec (node/core/resp.c): split and whole input
 * agree, malformed input fails with Redis's messages, limits hold without
 * allocating, replies are byte-exact, integers follow string2ll(). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/resp.h"
#include "lib/err.h"
#include "lib/rng.h"
#include "test_scale.h"

/* ---- transcripts: what a reader made of a stream, as bytes to compare ---- */

struct text {
	char *p;
	size_t n, cap;
};

static void text_add(struct text *t, const void *s, size_t n)
{
	if (n > ((size_t)1 << 30))
		fail_msg("text_add: %zu bytes", n); /* bounded: tells GCC n + 1 cannot wrap */
	if (t->cap - t->n < n + 1) {
		size_t cap = t->cap ? t->cap : 256;
		while (cap - t->n < n + 1)
			cap *= 2;
		t->p = realloc(t->p, cap);
		assert_non_null(t->p);
		t->cap = cap;
	}
	memcpy(t->p + t->n, s, n);
	t->n += n;
	t->p[t->n] = '\0';
}

static void text_addf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_addf(struct text *t, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < sizeof tmp);
	text_add(t, tmp, (size_t)n);
}

static void text_free(struct text *t)
{
	free(t->p);
	memset(t, 0, sizeof *t);
}

static void note_command(struct text *t, const struct resp_arg *argv, uint32_t argc)
{
	text_addf(t, "C%u[", argc);
	for (uint32_t i = 0; i < argc; i++) {
		text_addf(t, "%zu:", argv[i].len);
		text_add(t, argv[i].ptr, argv[i].len);
		text_add(t, ",", 1);
	}
	text_add(t, "]\n", 2);
}

static void note_error(struct text *t, const char *msg)
{
	text_addf(t, "ERR %s\n", msg);
}

static void note_more(struct text *t)
{
	text_add(t, "MORE\n", 5);
}

/* Prints a transcript with its bytes escaped, for a failure message. */
static void print_escaped(const char *label, const struct text *t)
{
	fprintf(stderr, "%s (%zu bytes): ", label, t->n);
	for (size_t i = 0; i < t->n && i < 600; i++) {
		unsigned char c = (unsigned char)t->p[i];
		if (c >= 0x20 && c < 0x7f)
			fputc(c, stderr);
		else
			fprintf(stderr, "\\x%02x", c);
	}
	fputc('\n', stderr);
}

static void assert_same(const struct text *want, const struct text *got, const char *what)
{
	if (want->n == got->n && memcmp(want->p, got->p, want->n) == 0)
		return;
	fprintf(stderr, "transcripts differ: %s\n", what);
	print_escaped("want", want);
	print_escaped("got ", got);
	fail();
}

/* Feeds in[0, n) in the pieces that cuts[] (increasing offsets) make,
 * parsing everything after each piece as a connection would. */
static void run(const struct resp_limits *limits, bool auth_required, const char *in, size_t n,
                const size_t *cuts, size_t cut_count, struct text *out)
{
	struct resp_reader r;
	assert_int_equal(resp_reader_init(&r, limits), 0);
	resp_reader_set_auth_required(&r, auth_required);
	size_t from = 0;
	for (size_t k = 0; k <= cut_count; k++) {
		size_t to = k < cut_count ? cuts[k] : n;
		assert_true(to >= from && to <= n);
		int rc = resp_reader_feed(&r, in + from, to - from);
		if (rc != 0) {
			text_addf(out, "FEED %d\n", rc);
			resp_reader_free(&r);
			return;
		}
		from = to;
		struct resp_command cmd;
		while ((rc = resp_parse(&r, &cmd)) == RESP_COMMAND) {
			assert_true(cmd.argc >= 1);
			assert_true(cmd.bytes >= 2);
			note_command(out, cmd.argv, cmd.argc);
		}
		if (rc != RESP_NEED_MORE) {
			assert_true(rc == ERR_PROTOCOL);
			note_error(out, resp_reader_error(&r));
			/* errors are final */
			assert_int_equal(resp_parse(&r, &cmd), rc);
			resp_reader_free(&r);
			return;
		}
	}
	note_more(out);
	resp_reader_free(&r);
}

static void run_whole(const struct resp_limits *limits, bool auth, const char *in, size_t n,
                      struct text *out)
{
	run(limits, auth, in, n, NULL, 0, out);
}

/* Whole input gives `want` (if not NULL), and so does input cut at every
 * byte boundary, fed byte by byte, and (short inputs) cut at every pair. */
static void check_splits(const struct resp_limits *limits, bool auth, const char *in, size_t n,
                         const struct text *want)
{
	struct text whole = {0};
	run_whole(limits, auth, in, n, &whole);
	if (want)
		assert_same(want, &whole, "whole input");
	char what[64];
	for (size_t k = 1; k < n; k++) {
		struct text t = {0};
		run(limits, auth, in, n, &k, 1, &t);
		snprintf(what, sizeof what, "cut at %zu", k);
		assert_same(&whole, &t, what);
		text_free(&t);
	}
	size_t *every = malloc((n ? n : 1) * sizeof *every);
	assert_non_null(every);
	for (size_t k = 0; k < n; k++)
		every[k] = k + 1;
	struct text bytewise = {0};
	run(limits, auth, in, n, every, n ? n - 1 : 0, &bytewise);
	assert_same(&whole, &bytewise, "byte by byte");
	text_free(&bytewise);
	free(every);
	if (n <= 80) {
		for (size_t a = 1; a < n; a++)
			for (size_t b = a + 1; b < n; b++) {
				size_t cuts[2] = {a, b};
				struct text t = {0};
				run(limits, auth, in, n, cuts, 2, &t);
				snprintf(what, sizeof what, "cuts at %zu and %zu", a, b);
				assert_same(&whole, &t, what);
				text_free(&t);
			}
	}
	text_free(&whole);
}

#define A(s) {s, sizeof(s) - 1}
#define IN(s) s, sizeof(s) - 1
#define ARGS(...) (const struct resp_arg[]){__VA_ARGS__}, \
	sizeof((const struct resp_arg[]){__VA_ARGS__}) / sizeof(struct resp_arg)

static void expect_valid(const char *in, size_t n, size_t command_count, ...)
{
	/* the varargs are command_count pairs (const struct resp_arg *, size_t) */
	struct text want = {0};
	va_list ap;
	va_start(ap, command_count);
	for (size_t c = 0; c < command_count; c++) {
		const struct resp_arg *argv = va_arg(ap, const struct resp_arg *);
		size_t argc = va_arg(ap, size_t);
		note_command(&want, argv, (uint32_t)argc);
	}
	va_end(ap);
	note_more(&want);
	check_splits(NULL, false, in, n, &want);
	text_free(&want);
}

/* ---- valid input ---- */

static void multibulk_commands_parse_at_every_split(void **state)
{
	(void)state;
	expect_valid(IN("*1\r\n$4\r\nPING\r\n"), 1, ARGS(A("PING")));
	expect_valid(IN("*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n"), 1,
	             ARGS(A("SET"), A("key"), A("value")));
	/* an empty argument */
	expect_valid(IN("*2\r\n$3\r\nGET\r\n$0\r\n\r\n"), 1, ARGS(A("GET"), A("")));
	/* a count with many digits */
	expect_valid(IN("*1\r\n$10\r\n0123456789\r\n"), 1, ARGS(A("0123456789")));
}

static void bulk_is_binary_safe(void **state)
{
	(void)state;
	/* CRLF, NUL, '*' and '$' inside the data are data */
	expect_valid(IN("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$9\r\na\r\nb\0*$\r\n\r\n"), 1,
	             ARGS(A("SET"), A("k"), A("a\r\nb\0*$\r\n")));
	expect_valid(IN("*1\r\n$2\r\n\r\n\r\n"), 1, ARGS(A("\r\n")));
	expect_valid(IN("*2\r\n$1\r\n\xff\r\n$3\r\n\x80\x00\x01\r\n"), 1,
	             ARGS(A("\xff"), A("\x80\x00\x01")));
}

static void inline_commands_parse_at_every_split(void **state)
{
	(void)state;
	expect_valid(IN("PING\r\n"), 1, ARGS(A("PING")));
	expect_valid(IN("PING\n"), 1, ARGS(A("PING")));
	expect_valid(IN("set k v\r\n"), 1, ARGS(A("set"), A("k"), A("v")));
	/* blanks before, between and after; \v and \f only between arguments */
	expect_valid(IN("  set \t k\tv  \r\n"), 1, ARGS(A("set"), A("k"), A("v")));
	expect_valid(IN("\v\fping\n"), 1, ARGS(A("ping")));
	expect_valid(IN("a\vb\n"), 1, ARGS(A("a\vb")));
	/* a \r inside the line (not before the \n) separates arguments */
	expect_valid(IN("a\rb\r\n"), 1, ARGS(A("a"), A("b")));
	/* '*' elsewhere than first, '$' first: still inline */
	expect_valid(IN("$x *y\n"), 1, ARGS(A("$x"), A("*y")));
}

static void inline_quotes_and_escapes(void **state)
{
	(void)state;
	expect_valid(IN("set \"a b\" 'c d'\r\n"), 1, ARGS(A("set"), A("a b"), A("c d")));
	expect_valid(IN("set k \"\\x41\\x4a\\x4b\\xff\\x00\\n\\r\\t\\b\\a\\\\\\\"\\q\"\r\n"), 1,
	             ARGS(A("set"), A("k"), A("AJK\xff\0\n\r\t\b\a\\\"q")));
	/* \x without two hex digits is x */
	expect_valid(IN("\"\\xZZ\" \"\\x4\"\n"), 1, ARGS(A("xZZ"), A("x4")));
	/* single quotes: only \' is an escape */
	expect_valid(IN("set k 'it\\'s' 'a\\nb'\r\n"), 1,
	             ARGS(A("set"), A("k"), A("it's"), A("a\\nb")));
	expect_valid(IN("\"\" '' x\n"), 1, ARGS(A(""), A(""), A("x")));
	/* a quote can open inside an argument */
	expect_valid(IN("foo\"bar baz\" x'y z'\n"), 1, ARGS(A("foobar baz"), A("xy z")));
	/* a closing quote may be followed by any blank */
	expect_valid(IN("\"a\"\tb \"c\"\vd\n"), 1, ARGS(A("a"), A("b"), A("c"), A("d")));
	/* quotes keep \r and blanks */
	expect_valid(IN("\"a\rb\" ' '\r\n"), 1, ARGS(A("a\rb"), A(" ")));
	/* a NUL ends the line's content (sdssplitargs reads a C string) */
	expect_valid(IN("a\0b c\nd\n"), 2, ARGS(A("a")), ARGS(A("d")));
}

static void empty_requests_are_skipped(void **state)
{
	(void)state;
	expect_valid(IN("*0\r\n*-1\r\n*-5\r\n\r\n\n \t \r\n*1\r\n$4\r\nPING\r\n*0\r\n"), 1,
	             ARGS(A("PING")));
	expect_valid(IN("*0\r\n"), 0);
	expect_valid(IN("   \r\n"), 0);
}

static void pipelined_commands_come_one_per_call(void **state)
{
	(void)state;
	expect_valid(IN("*1\r\n$4\r\nPING\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
	                "set \"x y\" 1\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\r\n\r\n"),
	             5, ARGS(A("PING")), ARGS(A("PING")), ARGS(A("GET"), A("k")),
	             ARGS(A("set"), A("x y"), A("1")), ARGS(A("SET"), A("k"), A("\r\n")));
	/* a partial command after complete ones waits */
	expect_valid(IN("PING\r\n*2\r\n$3\r\nGET\r\n$1\r\n"), 1, ARGS(A("PING")));
}

/* Each earlier command's arguments are intact when the next is parsed
 * (inline arguments are unquoted in place). */
static void commands_in_one_read_keep_their_bytes(void **state)
{
	(void)state;
	struct resp_reader r;
	assert_int_equal(resp_reader_init(&r, NULL), 0);
	const char in[] = "set \"a\\x41\" 'b'\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\nx \"\\n\"\n";
	assert_int_equal(resp_reader_feed(&r, in, sizeof in - 1), 0);
	struct resp_command c1, c2, c3;
	assert_int_equal(resp_parse(&r, &c1), RESP_COMMAND);
	const struct resp_arg a1 = c1.argv[1];
	assert_int_equal(resp_parse(&r, &c2), RESP_COMMAND);
	assert_int_equal(resp_parse(&r, &c3), RESP_COMMAND);
	assert_int_equal(resp_parse(&r, &c3), RESP_NEED_MORE);
	/* the slices (not argv) stay valid until the next reserve */
	assert_int_equal(a1.len, 2);
	assert_memory_equal(a1.ptr, "aA", 2);
	assert_int_equal(c1.bytes, 17);
	assert_int_equal(c2.bytes, 20);
	resp_reader_free(&r);
}

/* ---- malformed input ---- */

static void expect_error(const struct resp_limits *limits, bool auth, const char *in, size_t n,
                         const char *msg)
{
	struct text want = {0};
	note_error(&want, msg);
	check_splits(limits, auth, in, n, &want);
	text_free(&want);
}

static void bad_multibulk_counts_fail(void **state)
{
	(void)state;
	const char *m = "Protocol error: invalid multibulk length";
	expect_error(NULL, false, IN("*x\r\n"), m);
	expect_error(NULL, false, IN("*\r\n"), m);
	expect_error(NULL, false, IN("*+1\r\n"), m);
	expect_error(NULL, false, IN("* 1\r\n"), m);
	expect_error(NULL, false, IN("*1 \r\n"), m);
	expect_error(NULL, false, IN("*01\r\n"), m);
	expect_error(NULL, false, IN("*-0\r\n"), m);
	expect_error(NULL, false, IN("*1\rX"), m);           /* \r without \n */
	expect_error(NULL, false, IN("*1\n\r\n"), m);         /* the \n is not a digit */
	expect_error(NULL, false, IN("*1\n$1\r\nx\r\n...........\r\n"), m);
	expect_error(NULL, false, IN("*99999999999999999999\r\n"), m);   /* overflow */
	expect_error(NULL, false, IN("*123456789012345678901"), m);      /* 21 digits, no \r */
	expect_error(NULL, false, IN("*1048577\r\n"), m);                /* over the limit */
	expect_error(NULL, false, IN("*2147483648\r\n"), m);
}

static void bad_bulk_lengths_fail(void **state)
{
	(void)state;
	const char *m = "Protocol error: invalid bulk length";
	expect_error(NULL, false, IN("*1\r\n$-1\r\n"), m);
	expect_error(NULL, false, IN("*1\r\n$\r\n"), m);
	expect_error(NULL, false, IN("*1\r\n$01\r\n"), m);
	expect_error(NULL, false, IN("*1\r\n$+1\r\n"), m);
	expect_error(NULL, false, IN("*1\r\n$1x\r\n"), m);
	expect_error(NULL, false, IN("*1\r\n$3\rX"), m);
	expect_error(NULL, false, IN("*1\r\n$99999999999999999999\r\n"), m);
	expect_error(NULL, false, IN("*1\r\n$2000000000\r\n"), m);  /* over 512 MiB */
	expect_error(NULL, false, IN("*1\r\n$536870913\r\n"), m);
	expect_error(NULL, false, IN("*1\r\n$1234567890123456789012"), m);
}

static void wrong_type_byte_fails_on_that_byte(void **state)
{
	(void)state;
	expect_error(NULL, false, IN("*2\r\n$1\r\na\r\n:1\r\n"), "Protocol error: expected '$', got ':'");
	expect_error(NULL, false, IN("*1\r\nx"), "Protocol error: expected '$', got 'x'");
	expect_error(NULL, false, IN("*1\r\n\r\n"), "Protocol error: expected '$', got '\\x0d'");
	expect_error(NULL, false, IN("*1\r\n\xff"), "Protocol error: expected '$', got '\\xff'");
}

static void bulk_without_crlf_fails(void **state)
{
	(void)state;
	const char *m = "Protocol error: bulk data not followed by CRLF";
	expect_error(NULL, false, IN("*1\r\n$3\r\nabcX"), m);
	expect_error(NULL, false, IN("*1\r\n$3\r\nabc\rX"), m);
	expect_error(NULL, false, IN("*1\r\n$3\r\nabcd\r\n"), m);   /* longer than announced */
	expect_error(NULL, false, IN("*2\r\n$1\r\nab\r\n$1\r\nc\r\n"), m);
}

static void unbalanced_quotes_fail(void **state)
{
	(void)state;
	const char *m = "Protocol error: unbalanced quotes in request";
	expect_error(NULL, false, IN("SET \"abc\n"), m);
	expect_error(NULL, false, IN("GET 'a\r\n"), m);
	expect_error(NULL, false, IN("\"a\"b\n"), m);         /* closing quote then a non-blank */
	expect_error(NULL, false, IN("'a'b\n"), m);
	expect_error(NULL, false, IN("\"abc\\\"\n"), m);      /* the quote is escaped */
	expect_error(NULL, false, IN("'a\\'\n"), m);
	expect_error(NULL, false, IN("\"a\\\n"), m);          /* a backslash ends the line */
	expect_error(NULL, false, IN("\"a\0\" b\n"), m);      /* the NUL ends the line */
}

static void commands_before_an_error_are_delivered(void **state)
{
	(void)state;
	struct text want = {0};
	note_command(&want, ARGS(A("PING")));
	note_command(&want, ARGS(A("x")));
	note_error(&want, "Protocol error: invalid multibulk length");
	check_splits(NULL, false, IN("PING\r\n*1\r\n$1\r\nx\r\n*a\r\nPING\r\n"), &want);
	text_free(&want);
}

static void too_big_inline_request_fails(void **state)
{
	(void)state;
	struct resp_limits l;
	resp_limits_default(&l);
	l.inline_bytes_max = 16;
	const char *m = "Protocol error: too big inline request";
	/* 16 bytes before the \n are allowed (the \r counts), 17 are not */
	expect_valid(IN("aaaaaaaa bbbbbb\r\n"), 1, ARGS(A("aaaaaaaa"), A("bbbbbb")));
	check_splits(&l, false, IN("aaaaaaaa bbbbbb\r\n"), NULL);
	expect_error(&l, false, IN("aaaaaaaa bbbbbbb\r\n"), m);
	expect_error(&l, false, IN("aaaaaaaaaaaaaaaaa"), m);   /* no \n at all */
	struct text t = {0};
	run_whole(&l, false, IN("aaaaaaaaaaaaaaaa"), &t);       /* 16 bytes: wait */
	assert_string_equal(t.p, "MORE\n");
	text_free(&t);

	/* the default: 64 KiB, as Redis's PROTO_INLINE_MAX_SIZE */
	size_t n = RESP_INLINE_BYTES_MAX_DEFAULT + 1;
	char *big = malloc(n + 1);
	assert_non_null(big);
	memset(big, 'a', n);
	struct resp_reader r;
	assert_int_equal(resp_reader_init(&r, NULL), 0);
	struct resp_command cmd;
	assert_int_equal(resp_reader_feed(&r, big, n - 1), 0);
	assert_int_equal(resp_parse(&r, &cmd), RESP_NEED_MORE);
	assert_int_equal(resp_reader_feed(&r, big, 1), 0);
	assert_int_equal(resp_parse(&r, &cmd), ERR_PROTOCOL);
	assert_string_equal(resp_reader_error(&r), m);
	resp_reader_free(&r);
	free(big);
}

/* ---- limits: announced sizes fail or wait without allocating ---- */

static void expect_memory_at_most(const char *in, size_t n, const struct resp_limits *l,
                                  int result, size_t memory_max)
{
	struct resp_reader r;
	assert_int_equal(resp_reader_init(&r, l), 0);
	assert_int_equal(resp_reader_feed(&r, in, n), 0);
	struct resp_command cmd;
	assert_int_equal(resp_parse(&r, &cmd), result);
	assert_true(resp_reader_memory_bytes(&r) <= memory_max);
	resp_reader_free(&r);
}

static void huge_announcements_fail_at_once(void **state)
{
	(void)state;
	struct resp_limits l;
	resp_limits_default(&l);
	l.bulk_bytes_max = 1000;
	l.multibulk_count_max = 100;
	/* the buffer is the first read's, the argument array not allocated */
	expect_memory_at_most(IN("*1\r\n$1001\r\n"), &l, ERR_PROTOCOL, RESP_BUF_BYTES_MIN);
	expect_memory_at_most(IN("*101\r\n"), &l, ERR_PROTOCOL, RESP_BUF_BYTES_MIN);
	expect_memory_at_most(IN("*1\r\n$1000\r\n"), &l, RESP_NEED_MORE, RESP_BUF_BYTES_MIN);
	expect_memory_at_most(IN("*100\r\n"), &l, RESP_NEED_MORE, RESP_BUF_BYTES_MIN);
	expect_memory_at_most(IN("*1\r\n$2000000000\r\n"), NULL, ERR_PROTOCOL, RESP_BUF_BYTES_MIN);
	expect_memory_at_most(IN("*2000000000\r\n"), NULL, ERR_PROTOCOL, RESP_BUF_BYTES_MIN);
	/* within the default limits: waits, still allocating nothing ahead */
	expect_memory_at_most(IN("*1\r\n$536870912\r\n"), NULL, RESP_NEED_MORE, RESP_BUF_BYTES_MIN);
	expect_memory_at_most(IN("*1048576\r\n"), NULL, RESP_NEED_MORE, RESP_BUF_BYTES_MIN);
	/* a million-argument announcement: slots grow with arguments that came */
	expect_memory_at_most(IN("*1048576\r\n$0\r\n\r\n$0\r\n\r\n"), NULL, RESP_NEED_MORE,
	                      RESP_BUF_BYTES_MIN + 16 * sizeof(struct resp_arg));
}

static void argument_array_grows_only_with_arguments(void **state)
{
	(void)state;
	struct resp_reader r;
	assert_int_equal(resp_reader_init(&r, NULL), 0);
	struct resp_command cmd;
	assert_int_equal(resp_reader_feed(&r, IN("*1000000\r\n")), 0);
	for (int i = 0; i < 100; i++)
		assert_int_equal(resp_reader_feed(&r, IN("$1\r\nx\r\n")), 0);
	assert_int_equal(resp_parse(&r, &cmd), RESP_NEED_MORE);
	assert_int_equal(r.argc, 100);
	assert_true(r.argv_slots <= 200);
	resp_reader_free(&r);

	/* a 2000-argument command: its array is released at the next command
	 * or by shrink, not kept for the connection's life */
	struct text in = {0};
	text_add(&in, IN("*2000\r\n"));
	for (int i = 0; i < 2000; i++)
		text_add(&in, IN("$0\r\n\r\n"));
	assert_int_equal(resp_reader_init(&r, NULL), 0);
	assert_int_equal(resp_reader_feed(&r, in.p, in.n), 0);
	assert_int_equal(resp_parse(&r, &cmd), RESP_COMMAND);
	assert_int_equal(cmd.argc, 2000);
	assert_int_equal(r.argv_slots, 2000);
	assert_int_equal(resp_reader_feed(&r, IN("PING\r\n")), 0);
	assert_int_equal(resp_parse(&r, &cmd), RESP_COMMAND);
	assert_true(r.argv_slots <= RESP_ARGV_KEEP);
	resp_reader_free(&r);
	text_free(&in);
}

static void unauthenticated_limits_are_smaller(void **state)
{
	(void)state;
	expect_error(NULL, true, IN("*11\r\n"), "Protocol error: unauthenticated multibulk length");
	expect_error(NULL, true, IN("*1\r\n$16385\r\n"), "Protocol error: unauthenticated bulk length");
	/* at the limits, fine */
	check_splits(NULL, true, IN("*10\r\n$5\r\nhello\r\n"), NULL);
	struct text t = {0};
	run_whole(NULL, true, IN("*1\r\n$16384\r\n"), &t);
	assert_string_equal(t.p, "MORE\n");
	text_free(&t);
	/* and gone once authenticated */
	struct resp_reader r;
	assert_int_equal(resp_reader_init(&r, NULL), 0);
	resp_reader_set_auth_required(&r, true);
	struct resp_command cmd;
	assert_int_equal(resp_reader_feed(&r, IN("AUTH pw\r\n*11\r\n")), 0);
	assert_int_equal(resp_parse(&r, &cmd), RESP_COMMAND);
	assert_true(resp_arg_is(&cmd.argv[0], "auth"));
	resp_reader_set_auth_required(&r, false);
	assert_int_equal(resp_parse(&r, &cmd), RESP_NEED_MORE);
	resp_reader_free(&r);
}

static void query_buffer_limit_holds(void **state)
{
	(void)state;
	struct resp_limits l;
	resp_limits_default(&l);
	l.query_bytes_max = 64;
	const char *m = "Protocol error: query buffer limit exceeded";
	/* 4 + 5 + 50 + 2 = 61 bytes: fits */
	struct text in = {0};
	text_add(&in, IN("*1\r\n$50\r\n"));
	for (int i = 0; i < 50; i++)
		text_add(&in, "z", 1);
	text_add(&in, IN("\r\n"));
	check_splits(&l, false, in.p, in.n, NULL);
	struct text t = {0};
	run_whole(&l, false, in.p, in.n, &t);
	assert_int_equal(t.n, strlen("C1[50:") + 50 + strlen(",]\nMORE\n"));
	text_free(&t);
	text_free(&in);
	/* a bulk that cannot fit fails on its length line */
	expect_error(&l, false, IN("*2\r\n$3\r\nabc\r\n$45\r\n"), m); /* 18 + 47 > 64 */
	expect_error(&l, false, IN("*1\r\n$60\r\n"), m);
	/* an inline line longer than the buffer fails when the buffer is full */
	l.query_bytes_max = 8;
	struct resp_reader r;
	struct resp_command cmd;
	assert_int_equal(resp_reader_init(&r, &l), 0);
	assert_int_equal(resp_reader_feed(&r, IN("aaaaaaa")), 0);
	assert_int_equal(resp_parse(&r, &cmd), RESP_NEED_MORE);
	assert_int_equal(resp_reader_feed(&r, IN("a")), 0);
	assert_int_equal(resp_parse(&r, &cmd), ERR_PROTOCOL);
	assert_string_equal(resp_reader_error(&r), m);
	resp_reader_free(&r);
	/* feeding more than the limit is refused, copying nothing */
	assert_int_equal(resp_reader_init(&r, &l), 0);
	assert_int_equal(resp_reader_feed(&r, IN("123456789")), ERR_FULL);
	assert_int_equal(resp_reader_pending_bytes(&r), 0);
	assert_int_equal(resp_reader_feed(&r, IN("1234567")), 0);
	char *space;
	size_t space_bytes;
	assert_int_equal(resp_reader_reserve(&r, 100, &space, &space_bytes), 0);
	assert_int_equal(space_bytes, 1);
	resp_reader_commit(&r, 1);
	assert_int_equal(resp_reader_reserve(&r, 100, &space, &space_bytes), ERR_FULL);
	resp_reader_free(&r);
}

static void limits_are_checked(void **state)
{
	(void)state;
	struct resp_limits l;
	resp_limits_default(&l);
	struct resp_reader r;
	struct resp_limits bad = l;
	bad.bulk_bytes_max = 0;
	assert_int_equal(resp_reader_init(&r, &bad), ERR_INVALID);
	bad = l;
	bad.query_bytes_max = 0;
	assert_int_equal(resp_reader_init(&r, &bad), ERR_INVALID);
	bad = l;
	bad.multibulk_count_max = (uint32_t)INT32_MAX + 1;
	assert_int_equal(resp_reader_init(&r, &bad), ERR_INVALID);
	bad = l;
	bad.unauth_bulk_bytes_max = 0;
	assert_int_equal(resp_reader_init(&r, &bad), ERR_INVALID);
	assert_int_equal(resp_reader_init(&r, &l), 0);
	assert_int_equal(r.limits.bulk_bytes_max, 512u * 1024 * 1024);
	assert_int_equal(r.limits.multibulk_count_max, 1048576);
	assert_int_equal(r.limits.query_bytes_max, 1024u * 1024 * 1024);
	assert_int_equal(r.limits.inline_bytes_max, 65536);
	assert_int_equal(resp_reader_memory_bytes(&r), 0);
	resp_reader_free(&r);
}

/* ---- the buffer: growth, moves, compaction, giving memory back ---- */

static void large_bulk_grows_buffer_and_keeps_earlier_arguments(void **state)
{
	(void)state;
	size_t big = 300 * 1024;
	struct text in = {0};
	text_add(&in, IN("*4\r\n$3\r\nSET\r\n$3\r\nkey\r\n"));
	text_addf(&in, "$%zu\r\n", big);
	for (size_t i = 0; i < big; i++) {
		char c = (char)('a' + i % 26);
		text_add(&in, &c, 1);
	}
	text_add(&in, IN("\r\n$2\r\nEX\r\n"));
	struct resp_reader r;
	assert_int_equal(resp_reader_init(&r, NULL), 0);
	struct resp_command cmd;
	/* 1000-byte reads: the buffer moves several times under the slices of
	 * SET and key */
	int moves = 0;
	const char *last = NULL;
	for (size_t off = 0; off < in.n; off += 1000) {
		size_t n = in.n - off < 1000 ? in.n - off : 1000;
		assert_int_equal(resp_reader_feed(&r, in.p + off, n), 0);
		if (r.buf != last)
			moves++;
		last = r.buf;
		int rc = resp_parse(&r, &cmd);
		assert_int_equal(rc, off + n == in.n ? RESP_COMMAND : RESP_NEED_MORE);
	}
	assert_true(moves >= 4);
	assert_int_equal(cmd.argc, 4);
	assert_memory_equal(cmd.argv[0].ptr, "SET", 3);
	assert_memory_equal(cmd.argv[1].ptr, "key", 3);
	assert_int_equal(cmd.argv[2].len, big);
	assert_memory_equal(cmd.argv[2].ptr, in.p + (in.n - big - 10), big);
	assert_memory_equal(cmd.argv[3].ptr, "EX", 2);
	assert_int_equal(cmd.bytes, in.n);
	/* the grown buffer is given back when the next read starts empty */
	assert_true(resp_reader_memory_bytes(&r) > RESP_BUF_BYTES_KEEP);
	char *space;
	size_t space_bytes;
	assert_int_equal(resp_reader_reserve(&r, 100, &space, &space_bytes), 0);
	assert_int_equal(r.buf_bytes, RESP_BUF_BYTES_MIN);
	resp_reader_shrink(&r);
	assert_int_equal(resp_reader_memory_bytes(&r), 16 * sizeof(struct resp_arg));
	resp_reader_free(&r);
	text_free(&in);
}

/* The shell's loop: reserve, read, commit, parse. Pipelined commands in a
 * steady stream cause no allocation and no buffer growth. */
static void steady_pipeline_does_not_allocate(void **state)
{
	(void)state;
	struct text in = {0};
	for (int i = 0; i < 5000; i++)
		text_addf(&in, "*3\r\n$3\r\nSET\r\n$10\r\nkey:%06d\r\n$3\r\nxxx\r\n", i);
	struct resp_reader r;
	assert_int_equal(resp_reader_init(&r, NULL), 0);
	struct resp_command cmd;
	size_t off = 0, memory = 0;
	const char *buf = NULL;
	int commands = 0;
	while (off < in.n) {
		char *space;
		size_t space_bytes;
		assert_int_equal(resp_reader_reserve(&r, 4096, &space, &space_bytes), 0);
		size_t n = in.n - off < 4096 ? in.n - off : 4096; /* a short read */
		memcpy(space, in.p + off, n);
		resp_reader_commit(&r, n);
		off += n;
		int rc;
		while ((rc = resp_parse(&r, &cmd)) == RESP_COMMAND) {
			char key[16];
			snprintf(key, sizeof key, "key:%06d", commands);
			assert_int_equal(cmd.argc, 3);
			assert_memory_equal(cmd.argv[1].ptr, key, 10);
			commands++;
		}
		assert_int_equal(rc, RESP_NEED_MORE);
		if (!buf) {
			buf = r.buf;
			memory = resp_reader_memory_bytes(&r);
		}
		assert_ptr_equal(r.buf, buf);
		assert_int_equal(resp_reader_memory_bytes(&r), memory);
	}
	assert_int_equal(commands, 5000);
	assert_int_equal(memory, RESP_BUF_BYTES_MIN + 16 * sizeof(struct resp_arg));
	resp_reader_free(&r);
	text_free(&in);
}

/* ---- randomized: generate, serialize, chunk, parse back ---- */

struct gen_arg {
	char *p;
	size_t len;
};

static bool bare_safe(const struct gen_arg *a)
{
	/* not empty, and not starting a multibulk */
	if (a->len == 0 || a->p[0] == '*')
		return false;
	for (size_t i = 0; i < a->len; i++) {
		unsigned char c = (unsigned char)a->p[i];
		if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\'' || c == '\\')
			return false;
	}
	return true;
}

static bool single_quote_safe(const struct gen_arg *a)
{
	for (size_t i = 0; i < a->len; i++)
		if (a->p[i] == '\n' || a->p[i] == '\0' || a->p[i] == '\\')
			return false;
	return true;
}

/* An inline argument that sdssplitargs() reads back as a. */
static void encode_inline_arg(struct text *t, const struct gen_arg *a, struct rng *rng)
{
	if (bare_safe(a) && rng_below(rng, 3) > 0) {
		text_add(t, a->p, a->len);
		return;
	}
	if (single_quote_safe(a) && rng_below(rng, 2) == 0) {
		text_add(t, "'", 1);
		for (size_t i = 0; i < a->len; i++) {
			if (a->p[i] == '\'')
				text_add(t, "\\'", 2);
			else
				text_add(t, &a->p[i], 1);
		}
		text_add(t, "'", 1);
		return;
	}
	text_add(t, "\"", 1);
	for (size_t i = 0; i < a->len; i++) {
		unsigned char c = (unsigned char)a->p[i];
		switch (c) {
		case '\\': text_add(t, "\\\\", 2); break;
		case '"': text_add(t, "\\\"", 2); break;
		case '\n': text_add(t, "\\n", 2); break;
		case '\r':
			/* escaped, or raw: quotes keep a \r */
			if (rng_below(rng, 2))
				text_add(t, "\\r", 2);
			else
				text_add(t, "\r", 1);
			break;
		case '\t': text_add(t, "\\t", 2); break;
		case '\a': text_add(t, "\\a", 2); break;
		case '\b': text_add(t, "\\b", 2); break;
		default:
			if (c >= 0x20 && c < 0x7f && !(c == 'x' && rng_below(rng, 2)))
				text_add(t, &a->p[i], 1);
			else
				text_addf(t, rng_below(rng, 2) ? "\\x%02x" : "\\x%02X", c);
		}
	}
	text_add(t, "\"", 1);
}

static void random_blanks(struct text *t, struct rng *rng, unsigned at_least)
{
	unsigned n = at_least + rng_below(rng, 3);
	for (unsigned i = 0; i < n; i++)
		text_add(t, rng_below(rng, 4) ? " " : "\t", 1);
}

static void random_round(uint64_t seed)
{
	struct rng rng;
	rng_seed(&rng, seed);
	struct text in = {0}, want = {0};
	unsigned commands = 1 + rng_below(&rng, 40);
	bool big_allowed = rng_below(&rng, 8) == 0;
	for (unsigned c = 0; c < commands; c++) {
		/* empty requests between commands */
		if (rng_below(&rng, 6) == 0) {
			static const char *const empties[] = {"*0\r\n", "*-1\r\n", "\r\n", " \t \n", "\n"};
			const char *e = empties[rng_below(&rng, 5)];
			text_add(&in, e, strlen(e));
		}
		uint32_t argc = 1 + rng_below(&rng, 6);
		struct gen_arg args[6];
		size_t total = 0;
		for (uint32_t i = 0; i < argc; i++) {
			uint32_t kind = rng_below(&rng, 100);
			size_t len = kind < 70 ? rng_below(&rng, 21)
			             : kind < 98 || !big_allowed ? 21 + rng_below(&rng, 300)
			             : 1000 + rng_below(&rng, 70000);
			args[i].p = malloc(len ? len : 1);
			assert_non_null(args[i].p);
			args[i].len = len;
			bool binary = rng_below(&rng, 3) == 0;
			for (size_t k = 0; k < len; k++)
				args[i].p[k] = binary ? (char)rng_below(&rng, 256)
				                      : (char)('!' + rng_below(&rng, 94));
			total += len;
		}
		bool as_inline = total < 4000 && rng_below(&rng, 3) == 0;
		if (as_inline) {
			if (rng_below(&rng, 4) == 0)
				random_blanks(&in, &rng, 1);
			for (uint32_t i = 0; i < argc; i++) {
				if (i)
					random_blanks(&in, &rng, 1);
				encode_inline_arg(&in, &args[i], &rng);
			}
			if (rng_below(&rng, 4) == 0)
				random_blanks(&in, &rng, 1);
			if (rng_below(&rng, 2))
				text_add(&in, "\r\n", 2);
			else
				text_add(&in, "\n", 1);
		} else {
			text_addf(&in, "*%u\r\n", argc);
			for (uint32_t i = 0; i < argc; i++) {
				text_addf(&in, "$%zu\r\n", args[i].len);
				text_add(&in, args[i].p, args[i].len);
				text_add(&in, "\r\n", 2);
			}
		}
		text_addf(&want, "C%u[", argc);
		for (uint32_t i = 0; i < argc; i++) {
			text_addf(&want, "%zu:", args[i].len);
			text_add(&want, args[i].p, args[i].len);
			text_add(&want, ",", 1);
			free(args[i].p);
		}
		text_add(&want, "]\n", 2);
	}
	note_more(&want);

	/* random pieces: tiny, small or read-sized */
	size_t piece_max = in.n < 6000 && rng_below(&rng, 3) == 0 ? 3
	                   : rng_below(&rng, 2) ? 64 : 8192;
	size_t *cuts = malloc((in.n + 1) * sizeof *cuts);
	assert_non_null(cuts);
	size_t cut_count = 0, at = 0;
	for (;;) {
		at += 1 + rng_below(&rng, (uint32_t)piece_max);
		if (at >= in.n)
			break;
		cuts[cut_count++] = at;
	}
	struct text got = {0};
	run(NULL, false, in.p, in.n, cuts, cut_count, &got);
	char what[64];
	snprintf(what, sizeof what, "random round, seed %llu", (unsigned long long)seed);
	assert_same(&want, &got, what);
	struct text whole = {0};
	run_whole(NULL, false, in.p, in.n, &whole);
	assert_same(&want, &whole, what);
	free(cuts);
	text_free(&got);
	text_free(&whole);
	text_free(&in);
	text_free(&want);
}

static void random_commands_round_trip(void **state)
{
	(void)state;
	/* 250 seeds; 25 under valgrind (test_scale.h) */
	const uint64_t seed_count = test_scaled(250, 25);
	for (uint64_t seed = 1; seed <= seed_count; seed++)
		random_round(seed);
}

/* ---- replies ---- */

static void expect_out(struct resp_out *o, const char *want, size_t n)
{
	size_t have;
	const char *p = resp_out_pending(o, &have);
	if (have != n || memcmp(p, want, n) != 0) {
		struct text w = {0}, g = {0};
		text_add(&w, want, n);
		text_add(&g, p, have);
		print_escaped("want", &w);
		print_escaped("got ", &g);
		text_free(&w);
		text_free(&g);
		fail();
	}
	resp_out_consume(o, have);
}

static void replies_are_byte_exact(void **state)
{
	(void)state;
	struct resp_out o;
	resp_out_init(&o, 1 << 20);
	assert_int_equal(resp_write_ok(&o), 0);
	expect_out(&o, IN("+OK\r\n"));
	assert_int_equal(resp_write_simple(&o, "PONG"), 0);
	expect_out(&o, IN("+PONG\r\n"));
	assert_int_equal(resp_write_simple(&o, ""), 0);
	expect_out(&o, IN("+\r\n"));
	assert_int_equal(resp_write_error(&o, RESP_ERR_SYNTAX), 0);
	expect_out(&o, IN("-ERR syntax error\r\n"));
	assert_int_equal(resp_write_integer(&o, 0), 0);
	assert_int_equal(resp_write_integer(&o, 42), 0);
	assert_int_equal(resp_write_integer(&o, -1), 0);
	assert_int_equal(resp_write_integer(&o, INT64_MAX), 0);
	assert_int_equal(resp_write_integer(&o, INT64_MIN), 0);
	expect_out(&o, IN(":0\r\n:42\r\n:-1\r\n:9223372036854775807\r\n:-9223372036854775808\r\n"));
	assert_int_equal(resp_write_bulk(&o, "hello", 5), 0);
	assert_int_equal(resp_write_bulk(&o, "", 0), 0);
	assert_int_equal(resp_write_bulk(&o, "a\r\nb\0c", 6), 0);
	assert_int_equal(resp_write_null_bulk(&o), 0);
	expect_out(&o, IN("$5\r\nhello\r\n$0\r\n\r\n$6\r\na\r\nb\0c\r\n$-1\r\n"));
	assert_int_equal(resp_write_array(&o, 2), 0);
	assert_int_equal(resp_write_bulk(&o, "k", 1), 0);
	assert_int_equal(resp_write_null_bulk(&o), 0);
	assert_int_equal(resp_write_array(&o, 0), 0);
	assert_int_equal(resp_write_null_array(&o), 0);
	expect_out(&o, IN("*2\r\n$1\r\nk\r\n$-1\r\n*0\r\n*-1\r\n"));
	assert_int_equal(resp_write_array(&o, 1048576), 0);
	expect_out(&o, IN("*1048576\r\n"));
	resp_out_free(&o);
}

static void status_and_error_lines_hold_no_newline(void **state)
{
	(void)state;
	struct resp_out o;
	resp_out_init(&o, 1 << 20);
	assert_int_equal(resp_write_simple(&o, "a\r\nb\nc\r"), 0);
	expect_out(&o, IN("+a  b c \r\n"));
	assert_int_equal(resp_write_error(&o, "ERR bad\r\n+OK"), 0);
	expect_out(&o, IN("-ERR bad  +OK\r\n"));
	assert_int_equal(resp_write_errorf(&o, "ERR %s", "Protocol error: invalid bulk length"), 0);
	expect_out(&o, IN("-ERR Protocol error: invalid bulk length\r\n"));
	assert_int_equal(resp_write_errorf(&o, "ERR %s %d", "x\ny", 7), 0);
	expect_out(&o, IN("-ERR x y 7\r\n"));
	resp_out_free(&o);
}

static void standard_errors_match_redis(void **state)
{
	(void)state;
	struct resp_out o;
	resp_out_init(&o, 1 << 20);
	assert_int_equal(resp_write_error(&o, RESP_ERR_NOT_INTEGER), 0);
	expect_out(&o, IN("-ERR value is not an integer or out of range\r\n"));
	assert_int_equal(resp_write_error(&o, RESP_ERR_NOAUTH), 0);
	expect_out(&o, IN("-NOAUTH Authentication required.\r\n"));
	assert_int_equal(resp_write_error(&o, RESP_ERR_WRONGPASS), 0);
	expect_out(&o, IN("-WRONGPASS invalid username-password pair or user is disabled.\r\n"));
	assert_int_equal(resp_write_err_arity(&o, "get"), 0);
	expect_out(&o, IN("-ERR wrong number of arguments for 'get' command\r\n"));

	struct resp_command cmd = {.argv = ARGS(A("foo"), A("a"), A("b"))};
	assert_int_equal(resp_write_err_unknown_command(&o, &cmd), 0);
	expect_out(&o, IN("-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n"));
	cmd = (struct resp_command){.argv = ARGS(A("foo"))};
	assert_int_equal(resp_write_err_unknown_command(&o, &cmd), 0);
	expect_out(&o, IN("-ERR unknown command 'foo', with args beginning with: \r\n"));
	/* newlines become spaces, a NUL ends an argument's text */
	cmd = (struct resp_command){.argv = ARGS(A("f\r\no"), A("a\0b"), A("\n"))};
	assert_int_equal(resp_write_err_unknown_command(&o, &cmd), 0);
	expect_out(&o, IN("-ERR unknown command 'f  o', with args beginning with: 'a' ' ' \r\n"));

	/* the name is cut at 128 bytes, the arguments once 128 bytes are written */
	char name[200], arg[100];
	memset(name, 'n', sizeof name);
	memset(arg, 'a', sizeof arg);
	struct resp_arg argv[4] = {{name, 200}, {arg, 100}, {arg, 100}, {arg, 100}};
	cmd = (struct resp_command){.argv = argv, .argc = 4};
	assert_int_equal(resp_write_err_unknown_command(&o, &cmd), 0);
	struct text want = {0};
	text_add(&want, IN("-ERR unknown command '"));
	text_add(&want, name, 128);
	text_add(&want, IN("', with args beginning with: '"));
	text_add(&want, arg, 100);
	text_add(&want, IN("' '"));
	text_add(&want, arg, 128 - 103);
	text_add(&want, IN("' \r\n"));
	expect_out(&o, want.p, want.n);
	text_free(&want);
	resp_out_free(&o);
}

static void output_limit_is_sticky(void **state)
{
	(void)state;
	struct resp_out o;
	resp_out_init(&o, 16);
	assert_int_equal(resp_write_bulk(&o, "0123456", 7), 0);  /* 13 bytes */
	assert_int_equal(resp_write_integer(&o, 12345), ERR_FULL); /* 8 more: over */
	assert_int_equal(o.error, ERR_FULL);
	assert_int_equal(resp_write_ok(&o), ERR_FULL);           /* would fit, but sticky */
	expect_out(&o, IN("$7\r\n0123456\r\n"));
	resp_out_free(&o);

	/* partial sends: the unsent tail moves to the front when room is needed,
	 * and the bytes stay in order */
	resp_out_init(&o, 64);
	struct text all = {0};
	size_t sent = 0;
	for (int i = 0; i < 300; i++) {
		assert_int_equal(resp_write_integer(&o, i * 7919), 0);
		text_addf(&all, ":%d\r\n", i * 7919);
		size_t n;
		const char *p = resp_out_pending(&o, &n);
		assert_int_equal(n, all.n - sent);
		assert_memory_equal(p, all.p + sent, n);
		size_t k = i % 7 == 6 ? n : (size_t)(i % 3); /* send some, or all */
		if (k > n)
			k = n;
		resp_out_consume(&o, k);
		sent += k;
	}
	assert_int_equal(o.error, 0);
	assert_true(o.cap <= 64);
	text_free(&all);
	resp_out_free(&o);
}

/* Replies rendered into one output move to another byte for byte, and
 * the destination's limit still holds. */
static void raw_bytes_append_as_they_are(void **state)
{
	(void)state;
	struct resp_out a, b;
	resp_out_init(&a, 1024);
	resp_out_init(&b, 24);
	assert_int_equal(resp_write_bulk(&a, "x\0y", 3), 0);
	assert_int_equal(resp_write_integer(&a, -5), 0);
	size_t n;
	const char *p = resp_out_pending(&a, &n);
	assert_int_equal(resp_write_ok(&b), 0);
	assert_int_equal(resp_write_raw(&b, p, n), 0);
	assert_int_equal(resp_write_raw(&b, "", 0), 0);
	expect_out(&b, IN("+OK\r\n$3\r\nx\0y\r\n:-5\r\n"));
	assert_int_equal(resp_write_raw(&b, p, n), 0);        /* 14 bytes */
	assert_int_equal(resp_write_raw(&b, p, n), ERR_FULL); /* 28 > 24 */
	assert_int_equal(resp_write_raw(&b, "", 0), ERR_FULL); /* sticky, even for nothing */
	resp_out_free(&a);
	resp_out_free(&b);
}

/* ---- arguments ---- */

static void command_names_compare_without_case(void **state)
{
	(void)state;
	struct resp_arg a = A("GeT");
	assert_true(resp_arg_is(&a, "get"));
	assert_true(resp_arg_is(&a, "GET"));
	assert_false(resp_arg_is(&a, "ge"));
	assert_false(resp_arg_is(&a, "gets"));
	struct resp_arg at = A("@");   /* 0x40 and 0x60 differ by the case bit */
	assert_false(resp_arg_is(&at, "`"));
	struct resp_arg nul = A("ge\0");
	assert_false(resp_arg_is(&nul, "ge"));
	struct resp_arg empty = A("");
	assert_true(resp_arg_is(&empty, ""));
}

static void integers_follow_string2ll(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		size_t len;
		int ok;
		int64_t v;
	} vec[] = {
		{IN("0"), 1, 0},
		{IN("1"), 1, 1},
		{IN("99"), 1, 99},
		{IN("-1"), 1, -1},
		{IN("-99"), 1, -99},
		{IN("9223372036854775807"), 1, INT64_MAX},
		{IN("-9223372036854775808"), 1, INT64_MIN},
		{IN("9223372036854775808"), 0, 0},
		{IN("-9223372036854775809"), 0, 0},
		{IN("18446744073709551615"), 0, 0},
		{IN("18446744073709551616"), 0, 0},
		{IN("99999999999999999999"), 0, 0},
		{IN("100000000000000000000"), 0, 0},
		{IN(""), 0, 0},
		{IN("-"), 0, 0},
		{IN("+1"), 0, 0},
		{IN(" 1"), 0, 0},
		{IN("1 "), 0, 0},
		{IN("01"), 0, 0},
		{IN("00"), 0, 0},
		{IN("-0"), 0, 0},
		{IN("-01"), 0, 0},
		{IN("1a"), 0, 0},
		{IN("1\0"), 0, 0},
		{IN("1.5"), 0, 0},
		{IN("1e3"), 0, 0},
		{IN("0x10"), 0, 0},
		{IN("--1"), 0, 0},
	};
	for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
		int64_t v = 12345;
		struct resp_arg a = {vec[i].s, vec[i].len};
		int rc = resp_arg_int64(&a, &v);
		if (vec[i].ok) {
			if (rc != 0 || v != vec[i].v)
				fail_msg("'%s' should parse to %lld", vec[i].s, (long long)vec[i].v);
		} else {
			if (rc != ERR_INVALID || v != 12345)
				fail_msg("'%s' should be refused", vec[i].s);
		}
	}
}

static void durations_are_non_negative_milliseconds(void **state)
{
	(void)state;
	int64_t ms = 0;
	struct resp_arg ten = A("10"), zero = A("0"), neg = A("-1"), word = A("ten");
	struct resp_arg max = A("9223372036854775807"), edge = A("9223372036854775");
	assert_int_equal(resp_arg_duration_ms(&ten, 1000, &ms), 0);
	assert_int_equal(ms, 10000);
	assert_int_equal(resp_arg_duration_ms(&ten, 1, &ms), 0);
	assert_int_equal(ms, 10);
	assert_int_equal(resp_arg_duration_ms(&zero, 1000, &ms), 0);
	assert_int_equal(ms, 0);
	assert_int_equal(resp_arg_duration_ms(&neg, 1, &ms), ERR_TOO_LARGE);
	assert_int_equal(resp_arg_duration_ms(&word, 1, &ms), ERR_INVALID);
	assert_int_equal(resp_arg_duration_ms(&max, 1, &ms), 0);
	assert_int_equal(ms, INT64_MAX);
	assert_int_equal(resp_arg_duration_ms(&max, 1000, &ms), ERR_TOO_LARGE);
	assert_int_equal(resp_arg_duration_ms(&edge, 1000, &ms), 0);
	assert_int_equal(ms, 9223372036854775000LL);
}

/* ---- throughput (printed, never asserted) ---- */

static double seconds_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Best of up to 5 passes, stopping after 0.3 s (valgrind runs are slow). */
static void measure(const char *label, const struct text *in, int commands)
{
	double best = 0, start = seconds_now();
	for (int pass = 0; pass < 5 && (pass == 0 || seconds_now() - start < 0.3); pass++) {
		struct resp_reader r;
		assert_int_equal(resp_reader_init(&r, NULL), 0);
		double t0 = seconds_now();
		size_t off = 0;
		int parsed = 0;
		while (off < in->n) {
			char *space;
			size_t space_bytes;
			assert_int_equal(resp_reader_reserve(&r, RESP_BUF_BYTES_MIN, &space, &space_bytes), 0);
			size_t n = in->n - off < space_bytes ? in->n - off : space_bytes;
			if (n > RESP_BUF_BYTES_MIN)
				n = RESP_BUF_BYTES_MIN;
			memcpy(space, in->p + off, n);
			resp_reader_commit(&r, n);
			off += n;
			struct resp_command cmd;
			int rc;
			while ((rc = resp_parse(&r, &cmd)) == RESP_COMMAND)
				parsed++;
			assert_int_equal(rc, RESP_NEED_MORE);
		}
		double dt = seconds_now() - t0;
		assert_int_equal(parsed, commands);
		resp_reader_free(&r);
		if (pass == 0 || dt < best)
			best = dt;
	}
	if (best <= 0)
		best = 1e-9;
	printf("resp_parse %s: %d commands, %.1f MB in 16 KiB reads: %.0f MB/s, %.2f M commands/s\n",
	       label, commands, (double)in->n / 1e6, (double)in->n / 1e6 / best,
	       (double)commands / 1e6 / best);
}

static void parse_throughput(void **state)
{
	(void)state;
	/* a tenth under valgrind, where the figure means little (test_scale.h) */
	const int commands = (int)test_scaled(100000, 10000);
	struct text mb = {0}, inl = {0};
	static const char mb_one[] = "*3\r\n$3\r\nSET\r\n$10\r\nkey:000000\r\n$3\r\nxxx\r\n";
	static const char inl_one[] = "SET key:000000 xxx\r\n";
	for (int i = 0; i < commands; i++) {
		/* the six digits of the key, without printf per command */
		char digits[6];
		for (int d = 5, v = i; d >= 0; d--, v /= 10)
			digits[d] = (char)('0' + v % 10);
		size_t at = mb.n;
		text_add(&mb, mb_one, sizeof mb_one - 1);
		memcpy(mb.p + at + 22, digits, 6);
		at = inl.n;
		text_add(&inl, inl_one, sizeof inl_one - 1);
		memcpy(inl.p + at + 8, digits, 6);
	}
	char last[16];
	snprintf(last, sizeof last, "key:%06d", commands - 1);
	assert_memory_equal(mb.p + mb.n - 21, last, 10);
	assert_memory_equal(inl.p + inl.n - 16, last, 10);
	measure("SET key:NNNNNN xxx, multibulk", &mb, commands);
	measure("SET key:NNNNNN xxx, inline", &inl, commands);
	text_free(&mb);
	text_free(&inl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(multibulk_commands_parse_at_every_split),
		cmocka_unit_test(bulk_is_binary_safe),
		cmocka_unit_test(inline_commands_parse_at_every_split),
		cmocka_unit_test(inline_quotes_and_escapes),
		cmocka_unit_test(empty_requests_are_skipped),
		cmocka_unit_test(pipelined_commands_come_one_per_call),
		cmocka_unit_test(commands_in_one_read_keep_their_bytes),
		cmocka_unit_test(bad_multibulk_counts_fail),
		cmocka_unit_test(bad_bulk_lengths_fail),
		cmocka_unit_test(wrong_type_byte_fails_on_that_byte),
		cmocka_unit_test(bulk_without_crlf_fails),
		cmocka_unit_test(unbalanced_quotes_fail),
		cmocka_unit_test(commands_before_an_error_are_delivered),
		cmocka_unit_test(too_big_inline_request_fails),
		cmocka_unit_test(huge_announcements_fail_at_once),
		cmocka_unit_test(argument_array_grows_only_with_arguments),
		cmocka_unit_test(unauthenticated_limits_are_smaller),
		cmocka_unit_test(query_buffer_limit_holds),
		cmocka_unit_test(limits_are_checked),
		cmocka_unit_test(large_bulk_grows_buffer_and_keeps_earlier_arguments),
		cmocka_unit_test(steady_pipeline_does_not_allocate),
		cmocka_unit_test(random_commands_round_trip),
		cmocka_unit_test(replies_are_byte_exact),
		cmocka_unit_test(status_and_error_lines_hold_no_newline),
		cmocka_unit_test(standard_errors_match_redis),
		cmocka_unit_test(output_limit_is_sticky),
		cmocka_unit_test(raw_bytes_append_as_they_are),
		cmocka_unit_test(command_names_compare_without_case),
		cmocka_unit_test(integers_follow_string2ll),
		cmocka_unit_test(durations_are_non_negative_milliseconds),
		cmocka_unit_test(parse_throughput),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
