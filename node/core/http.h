/*
 * http.h - a pure HTTP/1.1 request parser (RFC 9110, RFC 9112) for the
 * node's HTTP service (svc/http_svc.c): request line, headers, a
 * Content-Length body. No I/O and no allocation: the caller holds the bytes
 * received so far and asks whether they make a whole request.
 *
 * What it refuses, with the status to answer (then the connection closes):
 *   400  a malformed request line, method, target or header line, a version
 *        other than HTTP/1.0 or HTTP/1.1, a header folded over lines, a
 *        bad or repeated-and-different Content-Length, Transfer-Encoding
 *        together with Content-Length, HTTP/1.1 without Host, a Host over
 *        HTTP_HOST_BYTES_MAX, a path that decodes to NUL, an encoded '/' or
 *        a "." / ".." segment, an absolute-form target (http://host/path:
 *        we are no proxy)
 *   411  Transfer-Encoding (chunked request bodies are not taken: a body
 *        needs Content-Length)
 *   413  a body over HTTP_BODY_BYTES_MAX
 *   414  a target over HTTP_TARGET_BYTES_MAX
 *   431  request line and headers over HTTP_HEAD_BYTES_MAX, or more than
 *        HTTP_HEADERS_MAX header lines
 * Pipelining: a request's bytes end at total_bytes; the next request starts
 * there (the caller parses again after answering).
 */
#ifndef CHORUS_CORE_HTTP_H
#define CHORUS_CORE_HTTP_H

#include <stddef.h>
#include <stdint.h>

#define HTTP_HEAD_BYTES_MAX (16u * 1024u)  /* request line + headers + blank line */
#define HTTP_BODY_BYTES_MAX (64u * 1024u)
#define HTTP_TARGET_BYTES_MAX 4096u        /* the request target as sent */
#define HTTP_HEADERS_MAX 100u
#define HTTP_METHOD_BYTES_MAX 16u
#define HTTP_AUTH_BYTES_MAX 256u           /* Authorization values kept (longer: not ours) */
#define HTTP_EVENT_ID_BYTES_MAX 32u
#define HTTP_HOST_BYTES_MAX 300u          /* a Host value (a 255-byte name and a port) */

enum http_parse_result {
	HTTP_PARSE_DONE = 0,   /* a whole request: see req */
	HTTP_PARSE_MORE = 1,   /* not yet: read more bytes */
	HTTP_PARSE_ERROR = -1, /* refused: req->status and req->error say why */
};

struct http_request {
	char method[HTTP_METHOD_BYTES_MAX];
	char path[HTTP_TARGET_BYTES_MAX + 1];  /* percent-decoded, no query */
	char query[HTTP_TARGET_BYTES_MAX + 1]; /* raw, after '?'; "" when none */
	int version_minor;                     /* HTTP/1.0 or HTTP/1.1 */
	int keep_alive;                        /* the connection stays open after */
	int has_host;
	char host[HTTP_HOST_BYTES_MAX + 1];      /* the Host header's value; "" when none */
	int expect_continue;                   /* Expect: 100-continue */
	int has_content_length;
	size_t content_length;
	char authorization[HTTP_AUTH_BYTES_MAX + 1]; /* "" when none or too long */
	char last_event_id[HTTP_EVENT_ID_BYTES_MAX + 1];
	size_t head_bytes;                     /* request line through the blank line */
	size_t total_bytes;                    /* head and body: where the next request starts */
	const char *body;                      /* into the caller's buffer; NULL when none */
	/* HTTP_PARSE_ERROR: the status to answer and one line saying why */
	int status;
	char error[128];
};

/* Parses buf[0..len) (the bytes received on a connection since the end of
 * the last request). HTTP_PARSE_MORE may come back with len well over the
 * head: a body is still arriving (head_bytes and content_length are set
 * then, so the caller can answer Expect: 100-continue). Never reads past
 * len; terminates for every input. */
int http_parse_request(const char *buf, size_t len, struct http_request *req);

/* Percent-decodes the path part of a request target into out (NUL-ended).
 * 0, or -1 when it is not an origin-form path ("/..."), has a bad escape, or
 * decodes to NUL, an encoded '/' ("%2f"), a backslash, or a "." or ".."
 * segment. */
int http_path_decode(const char *raw, size_t raw_len, char *out, size_t out_len);

/* Percent-decodes a query component ('+' is a space) into out. 0, or -1
 * (bad escape, NUL, too long). */
int http_query_decode(const char *raw, size_t raw_len, char *out, size_t out_len);

/* The value of the query parameter name in query (raw, "a=1&b=2"),
 * decoded into out. 0 when present (a name without '=' gives ""), -1 when
 * absent or undecodable. */
int http_query_get(const char *query, const char *name, char *out, size_t out_len);

/* The reason phrase of a status ("Not Found"); "Unknown" for others. */
const char *http_status_text(int status);

#endif
