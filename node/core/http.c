/*
 * http.c - the HTTP/1.1 request parser (see http.h).
 *
 * Strict where leniency is an attack surface (request smuggling lives in
 * disagreements about where a request ends: RFC 9112 §6.3): one
 * Content-Length, no Transfer-Encoding, no folded header lines, no
 * whitespace before a header's colon (RFC 9112 §5.1). Lenient where it
 * costs nothing: a bare LF ends a line as CRLF does (§2.2), and empty lines
 * before the request line are skipped (§2.2).
 */
#include "core/http.h"

#include <stdio.h>
#include <string.h>

static int fail(struct http_request *req, int status, const char *why)
{
	req->status = status;
	snprintf(req->error, sizeof(req->error), "%s", why);
	return HTTP_PARSE_ERROR;
}

/* RFC 9110 §5.6.2 tchar */
static int is_tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return 1;
	return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

static int name_is(const char *name, size_t n, const char *want)
{
	size_t wn = strlen(want);
	if (n != wn)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (lower((unsigned char)name[i]) != want[i])
			return 0;
	return 1;
}

/* Whether the comma-separated list v (len n) holds token (any case). */
static int list_has(const char *v, size_t n, const char *token)
{
	size_t i = 0;
	while (i < n) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t s = i;
		while (i < n && v[i] != ',')
			i++;
		size_t e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e > s && name_is(v + s, e - s, token))
			return 1;
	}
	return 0;
}

int http_path_decode(const char *raw, size_t raw_len, char *out, size_t out_len)
{
	if (raw_len == 0 || raw[0] != '/' || out_len == 0)
		return -1;
	size_t o = 0;
	for (size_t i = 0; i < raw_len; i++) {
		unsigned char c = (unsigned char)raw[i];
		if (c == '%') {
			if (raw_len - i < 3)
				return -1;
			int hi = hexval((unsigned char)raw[i + 1]), lo = hexval((unsigned char)raw[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			c = (unsigned char)(hi << 4 | lo);
			/* an encoded slash would make one segment look like two to
			 * whatever splits the path after us */
			if (c == 0 || c == '/')
				return -1;
			i += 2;
		} else if (c <= 0x20 || c == 0x7f) {
			return -1;
		}
		if (c == '\\')
			return -1;
		if (o + 1 >= out_len)
			return -1;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	/* no "." or ".." segment, however it was spelled */
	for (size_t s = 0; s < o;) {
		size_t e = s + 1;
		while (e < o && out[e] != '/')
			e++;
		size_t n = e - s - 1;
		const char *seg = out + s + 1;
		if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
			return -1;
		s = e;
	}
	return 0;
}

int http_query_decode(const char *raw, size_t raw_len, char *out, size_t out_len)
{
	if (out_len == 0)
		return -1;
	size_t o = 0;
	for (size_t i = 0; i < raw_len; i++) {
		unsigned char c = (unsigned char)raw[i];
		if (c == '+') {
			c = ' ';
		} else if (c == '%') {
			if (raw_len - i < 3)
				return -1;
			int hi = hexval((unsigned char)raw[i + 1]), lo = hexval((unsigned char)raw[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			c = (unsigned char)(hi << 4 | lo);
			if (c == 0)
				return -1;
			i += 2;
		}
		if (o + 1 >= out_len)
			return -1;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return 0;
}

int http_query_get(const char *query, const char *name, char *out, size_t out_len)
{
	size_t nn = strlen(name);
	const char *p = query;
	while (p && *p) {
		const char *end = strchr(p, '&');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *eq = memchr(p, '=', len);
		size_t klen = eq ? (size_t)(eq - p) : len;
		if (klen == nn && memcmp(p, name, nn) == 0) {
			if (!eq)
				return http_query_decode("", 0, out, out_len);
			return http_query_decode(eq + 1, len - klen - 1, out, out_len);
		}
		p = end ? end + 1 : NULL;
	}
	return -1;
}

/* The end of the line starting at buf[i] (index of its '\n'), or -1. */
static long line_end(const char *buf, size_t len, size_t i)
{
	const char *nl = memchr(buf + i, '\n', len - i);
	return nl ? (long)(nl - buf) : -1;
}

/* Length of a line without its CR. */
static size_t trim_cr(const char *buf, size_t s, size_t nl)
{
	return nl > s && buf[nl - 1] == '\r' ? nl - 1 - s : nl - s;
}

static int parse_request_line(const char *line, size_t n, struct http_request *req)
{
	size_t i = 0;
	while (i < n && is_tchar((unsigned char)line[i]))
		i++;
	if (i == 0 || i >= n || line[i] != ' ')
		return fail(req, 400, "malformed request line");
	if (i >= HTTP_METHOD_BYTES_MAX)
		return fail(req, 400, "method too long");
	memcpy(req->method, line, i);
	req->method[i] = '\0';
	size_t t = ++i;
	while (i < n && line[i] != ' ')
		i++;
	if (i >= n || i == t)
		return fail(req, 400, "malformed request line");
	size_t tlen = i - t;
	if (tlen > HTTP_TARGET_BYTES_MAX)
		return fail(req, 414, "request target too long");
	const char *v = line + i + 1;
	size_t vn = n - i - 1;
	if (vn != 8 || memcmp(v, "HTTP/1.", 7) != 0 || (v[7] != '0' && v[7] != '1'))
		return fail(req, 400, "unsupported HTTP version (HTTP/1.0 and HTTP/1.1 only)");
	req->version_minor = v[7] - '0';
	const char *target = line + t;
	if (target[0] != '/')
		return fail(req, 400, "request target must be a path (origin form)");
	const char *q = memchr(target, '?', tlen);
	size_t plen = q ? (size_t)(q - target) : tlen;
	const char *hash = memchr(target, '#', tlen);
	if (hash)
		return fail(req, 400, "fragment in request target");
	if (http_path_decode(target, plen, req->path, sizeof(req->path)) != 0)
		return fail(req, 400, "bad path (bad escape, NUL, encoded '/', or a '.' or '..' "
		                      "segment)");
	if (q) {
		size_t qn = tlen - plen - 1;
		for (size_t k = 0; k < qn; k++)
			if ((unsigned char)q[1 + k] <= 0x20 || (unsigned char)q[1 + k] == 0x7f)
				return fail(req, 400, "bad query");
		memcpy(req->query, q + 1, qn);
		req->query[qn] = '\0';
	}
	return HTTP_PARSE_DONE;
}

static int parse_header(const char *line, size_t n, struct http_request *req, int *te_seen)
{
	if (line[0] == ' ' || line[0] == '\t')
		return fail(req, 400, "folded header line");
	size_t i = 0;
	while (i < n && is_tchar((unsigned char)line[i]))
		i++;
	if (i == 0 || i >= n || line[i] != ':')
		return fail(req, 400, "malformed header line");
	size_t name_len = i++;
	while (i < n && (line[i] == ' ' || line[i] == '\t'))
		i++;
	size_t e = n;
	while (e > i && (line[e - 1] == ' ' || line[e - 1] == '\t'))
		e--;
	const char *v = line + i;
	size_t vn = e - i;
	for (size_t k = 0; k < vn; k++) {
		unsigned char c = (unsigned char)v[k];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return fail(req, 400, "control character in a header value");
	}
	if (name_is(line, name_len, "content-length")) {
		if (vn == 0 || vn > 19)
			return fail(req, 400, "bad Content-Length");
		size_t cl = 0;
		for (size_t k = 0; k < vn; k++) {
			if (v[k] < '0' || v[k] > '9')
				return fail(req, 400, "bad Content-Length");
			cl = cl * 10 + (size_t)(v[k] - '0');
		}
		if (req->has_content_length && req->content_length != cl)
			return fail(req, 400, "conflicting Content-Length headers");
		req->has_content_length = 1;
		req->content_length = cl;
	} else if (name_is(line, name_len, "transfer-encoding")) {
		*te_seen = 1;
	} else if (name_is(line, name_len, "host")) {
		if (req->has_host)
			return fail(req, 400, "more than one Host header");
		if (vn > HTTP_HOST_BYTES_MAX)
			return fail(req, 400, "Host header too long");
		req->has_host = 1;
		memcpy(req->host, v, vn);
		req->host[vn] = '\0';
	} else if (name_is(line, name_len, "connection")) {
		if (list_has(v, vn, "close"))
			req->keep_alive = 0;
		else if (list_has(v, vn, "keep-alive"))
			req->keep_alive = 1;
	} else if (name_is(line, name_len, "authorization")) {
		if (vn <= HTTP_AUTH_BYTES_MAX) {
			memcpy(req->authorization, v, vn);
			req->authorization[vn] = '\0';
		}
	} else if (name_is(line, name_len, "last-event-id")) {
		if (vn <= HTTP_EVENT_ID_BYTES_MAX) {
			memcpy(req->last_event_id, v, vn);
			req->last_event_id[vn] = '\0';
		}
	} else if (name_is(line, name_len, "expect")) {
		if (name_is(v, vn, "100-continue"))
			req->expect_continue = 1;
	}
	return HTTP_PARSE_DONE;
}

int http_parse_request(const char *buf, size_t len, struct http_request *req)
{
	memset(req, 0, sizeof(*req));
	size_t i = 0;
	/* RFC 9112 §2.2: empty lines before the request line are ignored */
	while (i < len && (buf[i] == '\r' || buf[i] == '\n'))
		i++;
	if (i >= HTTP_HEAD_BYTES_MAX)
		return fail(req, 431, "request head too large");
	long nl = line_end(buf, len, i);
	size_t scan = len < HTTP_HEAD_BYTES_MAX ? len : HTTP_HEAD_BYTES_MAX;
	if (nl < 0 || (size_t)nl >= scan) {
		if (len >= HTTP_HEAD_BYTES_MAX)
			return fail(req, 431, "request line too large");
		/* an early refusal for a line that cannot be a request line */
		for (size_t k = i; k < len; k++) {
			unsigned char c = (unsigned char)buf[k];
			if (c == 0 || (c < 0x20 && c != '\r') || c == 0x7f)
				return fail(req, 400, "malformed request line");
		}
		return HTTP_PARSE_MORE;
	}
	size_t rl_len = trim_cr(buf, i, (size_t)nl);
	for (size_t k = 0; k < rl_len; k++) {
		unsigned char c = (unsigned char)buf[i + k];
		if (c < 0x20 || c == 0x7f)
			return fail(req, 400, "malformed request line");
	}
	int rc = parse_request_line(buf + i, rl_len, req);
	if (rc != HTTP_PARSE_DONE)
		return rc;
	req->keep_alive = req->version_minor == 1;
	int te_seen = 0;
	uint32_t headers = 0;
	size_t pos = (size_t)nl + 1;
	for (;;) {
		if (pos >= scan) {
			if (len >= HTTP_HEAD_BYTES_MAX)
				return fail(req, 431, "request headers too large");
			return HTTP_PARSE_MORE;
		}
		nl = line_end(buf, len, pos);
		if (nl < 0 || (size_t)nl >= scan) {
			if (len >= HTTP_HEAD_BYTES_MAX)
				return fail(req, 431, "request headers too large");
			return HTTP_PARSE_MORE;
		}
		size_t ln = trim_cr(buf, pos, (size_t)nl);
		if (ln == 0) {
			pos = (size_t)nl + 1;
			break;
		}
		if (++headers > HTTP_HEADERS_MAX)
			return fail(req, 431, "too many header lines");
		rc = parse_header(buf + pos, ln, req, &te_seen);
		if (rc != HTTP_PARSE_DONE)
			return rc;
		pos = (size_t)nl + 1;
	}
	/* the head is complete: its Connection: close must be honoured even
	 * when the request is refused below */
	req->head_bytes = pos;
	if (te_seen && req->has_content_length)
		return fail(req, 400, "both Transfer-Encoding and Content-Length");
	if (te_seen)
		return fail(req, 411, "Transfer-Encoding is not accepted: send Content-Length");
	if (req->version_minor == 1 && !req->has_host)
		return fail(req, 400, "HTTP/1.1 request without Host");
	if (req->content_length > HTTP_BODY_BYTES_MAX)
		return fail(req, 413, "request body too large");
	if (len - pos < req->content_length)
		return HTTP_PARSE_MORE;
	req->body = req->content_length ? buf + pos : NULL;
	req->total_bytes = pos + req->content_length;
	return HTTP_PARSE_DONE;
}

const char *http_status_text(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 204: return "No Content";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "Unknown";
	}
}
