/* test_http.c - the HTTP/1.1 request parser (node/core/http.c): whole
 * requests, split input, pipelining, every refusal with its status, the
 * path decoder's refusals (traversal, encoded slashes, NUL), query
 * parameters, and random input over many seeds that must never crash, never
 * read past the input, and always end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/http.h"
#include "proto/seal.h"
#include "lib/rng.h"
#include "test_scale.h"

static struct http_request req;

static int parse(const char *s)
{
	return http_parse_request(s, strlen(s), &req);
}

/* Parses s and expects a refusal with status. */
static void refused(const char *s, int status)
{
	int rc = parse(s);
	if (rc != HTTP_PARSE_ERROR || req.status != status)
		fail_msg("expected %d for %s, got rc %d status %d (%s)", status, s, rc, req.status,
		         req.error);
}

static void simple_get_parses(void **state)
{
	(void)state;
	const char *s = "GET /api/events?after=3&wait_ms=10 HTTP/1.1\r\nHost: x\r\n"
	                "Authorization: Bearer abc\r\nLast-Event-ID: 42\r\n\r\n";
	assert_int_equal(parse(s), HTTP_PARSE_DONE);
	assert_string_equal(req.method, "GET");
	assert_string_equal(req.path, "/api/events");
	assert_string_equal(req.query, "after=3&wait_ms=10");
	assert_int_equal(req.version_minor, 1);
	assert_true(req.keep_alive);
	assert_string_equal(req.authorization, "Bearer abc");
	assert_string_equal(req.last_event_id, "42");
	assert_string_equal(req.host, "x");
	assert_int_equal(req.total_bytes, strlen(s));
	assert_null(req.body);
}

/* The Host value is kept (the service answers open reads only for a
 * loopback name: DNS rebinding); one too long to be a name is refused. */
static void host_is_kept_and_bounded(void **state)
{
	(void)state;
	assert_int_equal(parse("GET / HTTP/1.1\r\nHost:  localhost:7480 \r\n\r\n"), HTTP_PARSE_DONE);
	assert_string_equal(req.host, "localhost:7480");
	assert_int_equal(parse("GET / HTTP/1.0\r\n\r\n"), HTTP_PARSE_DONE);
	assert_string_equal(req.host, "");
	char buf[HTTP_HOST_BYTES_MAX + 64];
	int n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: %0*d\r\n\r\n",
	                 (int)HTTP_HOST_BYTES_MAX, 0);
	assert_true(n > 0 && (size_t)n < sizeof buf);
	assert_int_equal(parse(buf), HTTP_PARSE_DONE);
	assert_int_equal(strlen(req.host), HTTP_HOST_BYTES_MAX);
	n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: %0*d\r\n\r\n",
	             (int)HTTP_HOST_BYTES_MAX + 1, 0);
	assert_true(n > 0 && (size_t)n < sizeof buf);
	refused(buf, 400);
}

static void post_body_parses_and_pipelines(void **state)
{
	(void)state;
	const char *s = "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
	                "GET /y HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
	assert_int_equal(parse(s), HTTP_PARSE_DONE);
	assert_string_equal(req.method, "POST");
	assert_int_equal(req.content_length, 5);
	assert_memory_equal(req.body, "hello", 5);
	size_t first = req.total_bytes;
	assert_int_equal(http_parse_request(s + first, strlen(s) - first, &req), HTTP_PARSE_DONE);
	assert_string_equal(req.path, "/y");
	assert_false(req.keep_alive);
	assert_int_equal(first + req.total_bytes, strlen(s));
}

static void every_split_needs_more_until_whole(void **state)
{
	(void)state;
	const char *s = "POST /a%20b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz";
	size_t n = strlen(s);
	for (size_t k = 0; k < n; k++) {
		int rc = http_parse_request(s, k, &req);
		if (rc != HTTP_PARSE_MORE)
			fail_msg("prefix of %zu bytes gave %d (%s)", k, rc, req.error);
	}
	assert_int_equal(http_parse_request(s, n, &req), HTTP_PARSE_DONE);
	assert_string_equal(req.path, "/a b");
}

static void http10_closes_unless_keep_alive(void **state)
{
	(void)state;
	assert_int_equal(parse("GET / HTTP/1.0\r\n\r\n"), HTTP_PARSE_DONE);
	assert_false(req.keep_alive);
	assert_int_equal(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), HTTP_PARSE_DONE);
	assert_true(req.keep_alive);
	/* bare LF line ends and leading empty lines are taken */
	assert_int_equal(parse("\r\n\nGET / HTTP/1.1\nHost: h\n\n"), HTTP_PARSE_DONE);
	assert_string_equal(req.path, "/");
}

static void malformed_request_lines_are_400(void **state)
{
	(void)state;
	refused("GET\r\n\r\n", 400);
	refused("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	refused("GET / HTTP/1.1 extra\r\nHost: h\r\n\r\n", 400);
	refused("G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	refused("GET / HTTP/2.0\r\nHost: h\r\n\r\n", 400);
	refused("GET / HTTP/1.2\r\nHost: h\r\n\r\n", 400);
	refused("GET / http/1.1\r\nHost: h\r\n\r\n", 400);
	refused("GET / HTTP/1.1\r\n\r\n", 400); /* no Host */
	refused("GET http://evil/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	refused("GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	refused("GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	refused("VERYLONGMETHODNAMEX / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	/* a control byte refuses at once, before the line is whole */
	assert_int_equal(http_parse_request("GET /\x01", 6, &req), HTTP_PARSE_ERROR);
	assert_int_equal(req.status, 400);
	assert_int_equal(http_parse_request("GE\0T", 4, &req), HTTP_PARSE_ERROR);
}

static void bad_headers_are_400(void **state)
{
	(void)state;
	refused("GET / HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n", 400);
	refused("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400);
	refused("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n", 400);
	refused("GET / HTTP/1.1\r\nHost: h\r\nX : a\r\n\r\n", 400);
	refused("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01z\r\n\r\n", 400);
	refused("GET / HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n", 400);
	refused("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400);
	refused("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n", 400);
	refused("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n", 400);
	refused("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400);
	refused("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
	        "Transfer-Encoding: chunked\r\n\r\nx",
	        400);
	/* a repeated, equal Content-Length is one */
	assert_int_equal(parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
	                       "content-length: 1\r\n\r\nx"),
	                 HTTP_PARSE_DONE);
}

static void chunked_bodies_are_411(void **state)
{
	(void)state;
	refused("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411);
}

static void limits_give_413_414_431(void **state)
{
	(void)state;
	char buf[HTTP_HEAD_BYTES_MAX + HTTP_BODY_BYTES_MAX + 256];
	/* body over the cap: refused as soon as the head says so */
	snprintf(buf, sizeof buf, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %u\r\n\r\n",
	         HTTP_BODY_BYTES_MAX + 1);
	refused(buf, 413);
	/* a body at the cap is fine */
	int n = snprintf(buf, sizeof buf, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %u\r\n\r\n",
	                 HTTP_BODY_BYTES_MAX);
	memset(buf + n, 'b', HTTP_BODY_BYTES_MAX);
	assert_int_equal(http_parse_request(buf, (size_t)n + HTTP_BODY_BYTES_MAX, &req),
	                 HTTP_PARSE_DONE);
	/* a target over its cap */
	n = snprintf(buf, sizeof buf, "GET /");
	memset(buf + n, 'a', HTTP_TARGET_BYTES_MAX + 10);
	n += HTTP_TARGET_BYTES_MAX + 10;
	n += snprintf(buf + n, sizeof buf - (size_t)n, " HTTP/1.1\r\nHost: h\r\n\r\n");
	refused(buf, 414);
	/* a request line that never ends */
	memcpy(buf, "GET /", 5);
	memset(buf + 5, 'a', HTTP_HEAD_BYTES_MAX);
	assert_int_equal(http_parse_request(buf, HTTP_HEAD_BYTES_MAX + 5, &req), HTTP_PARSE_ERROR);
	assert_int_equal(req.status, 431);
	/* headers that never end */
	n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\n");
	while ((size_t)n < HTTP_HEAD_BYTES_MAX + 100)
		n += snprintf(buf + n, sizeof buf - (size_t)n, "X-A: %0100d\r\n", 1);
	assert_int_equal(http_parse_request(buf, (size_t)n, &req), HTTP_PARSE_ERROR);
	assert_int_equal(req.status, 431);
	/* too many header lines, each small */
	n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: h\r\n");
	for (unsigned i = 0; i < HTTP_HEADERS_MAX + 1; i++)
		n += snprintf(buf + n, sizeof buf - (size_t)n, "X: 1\r\n");
	n += snprintf(buf + n, sizeof buf - (size_t)n, "\r\n");
	refused(buf, 431);
	/* an incomplete head under the cap asks for more */
	assert_int_equal(parse("GET / HTTP/1.1\r\nHost: h\r\nX-Slow: 1"), HTTP_PARSE_MORE);
}

static void expect_continue_is_seen_before_the_body(void **state)
{
	(void)state;
	const char *s = "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
	                "Content-Length: 10\r\n\r\n";
	assert_int_equal(parse(s), HTTP_PARSE_MORE);
	assert_true(req.expect_continue);
	assert_int_equal(req.head_bytes, strlen(s));
}

static void path_decoding_refuses_traversal(void **state)
{
	(void)state;
	char out[256];
	static const char *bad[] = {
		"/..", "/../etc/passwd", "/a/../b", "/%2e%2e/x", "/%2E%2E", "/.%2e/x", "/a/.",
		"/./a", "/a%2fb", "/a%2Fb", "/a%00b", "/a%zz", "/a%2", "/a%", "/a\\b", "/a%5cb",
		"relative", "", "/a b",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (http_path_decode(bad[i], strlen(bad[i]), out, sizeof out) == 0)
			fail_msg("%s decoded to %s", bad[i], out);
	static const char *good[][2] = {
		{"/", "/"}, {"/app.js", "/app.js"}, {"/a%20b", "/a b"}, {"/...", "/..."},
		{"/a..b", "/a..b"}, {"/.well", "/.well"}, {"/api/tasks/12/cancel", "/api/tasks/12/cancel"},
	};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		assert_int_equal(http_path_decode(good[i][0], strlen(good[i][0]), out, sizeof out), 0);
		assert_string_equal(out, good[i][1]);
	}
	/* too long for out */
	assert_int_equal(http_path_decode("/abcdef", 7, out, 4), -1);
	/* the request parser says 400 for each bad one */
	refused("GET /%2e%2e/secret HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	refused("GET /static%2f..%2fkey HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	refused("GET /../../etc/passwd HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

static void query_parameters_decode(void **state)
{
	(void)state;
	char out[64];
	assert_int_equal(http_query_get("a=1&b=x%20y+z&c", "b", out, sizeof out), 0);
	assert_string_equal(out, "x y z");
	assert_int_equal(http_query_get("a=1&b=2&c", "c", out, sizeof out), 0);
	assert_string_equal(out, "");
	assert_int_equal(http_query_get("a=1", "b", out, sizeof out), -1);
	assert_int_equal(http_query_get("ab=1", "a", out, sizeof out), -1);
	assert_int_equal(http_query_get("a=%00", "a", out, sizeof out), -1);
	assert_int_equal(http_query_get("a=%4", "a", out, sizeof out), -1);
	assert_int_equal(http_query_get("", "a", out, sizeof out), -1);
	assert_int_equal(http_query_get("a=0123456789", "a", out, 4), -1);
}

static void status_texts_are_known(void **state)
{
	(void)state;
	assert_string_equal(http_status_text(404), "Not Found");
	assert_string_equal(http_status_text(431), "Request Header Fields Too Large");
	assert_string_equal(http_status_text(999), "Unknown");
}

/* Random bytes, and random mutations of valid requests: the parser must
 * end with a verdict, never claim more bytes than it was given, and give a
 * status for every refusal. Valgrind (scripts/test.sh) checks that it
 * never reads past the input: each input is its own exact-size block. */
static void random_input_never_crashes(void **state)
{
	(void)state;
	static const char *seeds_text[] = {
		"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
		("POST /api/tasks/1/cancel HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
		 "Authorization: Bearer 00\r\n\r\nbody"),
		"GET /a%20b?x=1&y=%41 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"HEAD /app.js HTTP/1.1\nHost: h\nLast-Event-ID: 7\n\n",
	};
	const char alphabet[] = "GETPOS /%.:?&=\r\n\t HTTP/1.10x\x00\x7f\xff";
	unsigned seeds = test_scaled(2000, 100);
	for (unsigned seed = 1; seed <= seeds; seed++) {
		struct rng r;
		rng_seed(&r, seed);
		size_t len = rng_below(&r, 600);
		char *buf = malloc(len ? len : 1);
		assert_non_null(buf);
		if (seed % 2) {
			for (size_t i = 0; i < len; i++)
				buf[i] = (char)(seed % 4 == 1 ? alphabet[rng_below(&r, sizeof alphabet - 1)]
				                              : (char)rng_below(&r, 256));
		} else {
			const char *base = seeds_text[rng_below(&r, 4)];
			size_t bl = strlen(base);
			for (size_t i = 0; i < len; i++)
				buf[i] = base[i % bl];
			for (unsigned m = rng_below(&r, 6); m > 0 && len; m--)
				buf[rng_below(&r, (uint32_t)len)] = alphabet[rng_below(&r, sizeof alphabet - 1)];
		}
		int rc = http_parse_request(buf, len, &req);
		if (rc == HTTP_PARSE_DONE) {
			assert_true(req.total_bytes <= len);
			assert_true(req.total_bytes > 0);
			assert_true(req.path[0] == '/');
			assert_null(strstr(req.path, "/../"));
		} else if (rc == HTTP_PARSE_ERROR) {
			if (req.status < 400 || req.status > 599)
				fail_msg("seed %u: refusal without a status (%d)", seed, req.status);
		} else {
			assert_int_equal(rc, HTTP_PARSE_MORE);
			assert_true(len < HTTP_HEAD_BYTES_MAX + HTTP_BODY_BYTES_MAX);
		}
		free(buf);
	}
}

/* The bearer token: a credential gives the secret's token, both keys of a
 * rotation are accepted, anything else is refused. */
static void http_token_follows_the_keyring(void **state)
{
	(void)state;
	assert_true(sodium_init() >= 0);
	uint8_t secrets[2 * SEAL_SECRET_BYTES];
	for (size_t i = 0; i < sizeof secrets; i++)
		secrets[i] = (uint8_t)(i * 7 + 1);
	struct seal_keyring *one = seal_keyring_from_secrets(secrets, 1);
	struct seal_keyring *two = seal_keyring_from_secrets(secrets, 2);
	struct seal_keyring *cred = seal_keyring_client_only(one);
	struct seal_keyring *other = seal_keyring_from_secrets(secrets + SEAL_SECRET_BYTES, 1);
	assert_non_null(one);
	assert_non_null(two);
	assert_non_null(cred);
	assert_non_null(other);
	uint8_t t1[SEAL_HTTP_TOKEN_BYTES], tc[SEAL_HTTP_TOKEN_BYTES], t2[SEAL_HTTP_TOKEN_BYTES];
	assert_int_equal(seal_keyring_http_token(one, 0, t1), 0);
	assert_int_equal(seal_keyring_http_token(cred, 0, tc), 0);
	assert_memory_equal(t1, tc, sizeof t1);
	assert_int_equal(seal_keyring_http_token(one, 1, t2), -1);
	assert_int_equal(seal_keyring_http_token(other, 0, t2), 0);
	assert_memory_not_equal(t1, t2, sizeof t1);
	assert_true(seal_http_token_check(one, t1));
	assert_false(seal_http_token_check(one, t2));
	assert_true(seal_http_token_check(two, t1)); /* rotation: both keys */
	assert_true(seal_http_token_check(two, t2));
	assert_false(seal_http_token_check(other, t1));
	t1[31] ^= 1;
	assert_false(seal_http_token_check(one, t1));
	seal_keyring_free(one);
	seal_keyring_free(two);
	seal_keyring_free(cred);
	seal_keyring_free(other);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(simple_get_parses),
		cmocka_unit_test(host_is_kept_and_bounded),
		cmocka_unit_test(post_body_parses_and_pipelines),
		cmocka_unit_test(every_split_needs_more_until_whole),
		cmocka_unit_test(http10_closes_unless_keep_alive),
		cmocka_unit_test(malformed_request_lines_are_400),
		cmocka_unit_test(bad_headers_are_400),
		cmocka_unit_test(chunked_bodies_are_411),
		cmocka_unit_test(limits_give_413_414_431),
		cmocka_unit_test(expect_continue_is_seen_before_the_body),
		cmocka_unit_test(path_decoding_refuses_traversal),
		cmocka_unit_test(query_parameters_decode),
		cmocka_unit_test(status_texts_are_known),
		cmocka_unit_test(random_input_never_crashes),
		cmocka_unit_test(http_token_follows_the_keyring),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
