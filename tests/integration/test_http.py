#!/usr/bin/env python3
"""test_http.py - chorusd --http (docs/http.md) against raw sockets: the
routes of the HTTP service itself (/metrics, the dashboard's files,
/api/auth, /api/events long-poll and stream), local calls through the
request table (the test routes of CHORUS_HTTP_TEST_ROUTES=1), the auth
rules, and hostile clients: oversized and malformed requests, path
traversal, slow clients that never finish a request (the node keeps
serving), clients that never read, the connection cap; and the start-up
refusals (a non-loopback address without --http-auth all, a port taken).

Every wait is a condition with a deadline (harness.wait_until)."""

import json
import os
import re
import socket
import struct
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import NodeTestCase, free_port, wait_until  # noqa: E402

TIMEOUT_S = 10.0


def connect(port, timeout_s=TIMEOUT_S):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Reader:
    """Reads HTTP answers off one socket (Content-Length framed, or to the
    close for an event stream)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _more(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def answer(self, head_only=False):
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = 0 if head_only else int(headers.get("content-length", "0"))
        self.buf = rest
        while len(self.buf) < n:
            self._more()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def closed(self, timeout_s=TIMEOUT_S):
        """True once the server closed the connection (EOF or reset)."""
        self.sock.settimeout(timeout_s)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


def request(port, raw, head_only=False):
    """Sends raw bytes on a new connection; returns (status, headers, body,
    reader)."""
    s = connect(port)
    s.sendall(raw)
    r = Reader(s)
    status, headers, body = r.answer(head_only)
    return status, headers, body, r


def get(port, path, token=None, method="GET", body=b"", extra=""):
    auth = "Authorization: Bearer %s\r\n" % token if token else ""
    raw = ("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%sContent-Length: %d\r\n"
           "Connection: close\r\n\r\n" % (method, path, auth, extra, len(body))).encode() + body
    status, headers, data, r = request(port, raw, head_only=(method == "HEAD"))
    r.sock.close()
    return status, headers, data


def jget(port, path, **kw):
    status, headers, data = get(port, path, **kw)
    return status, json.loads(data.decode()) if data else None


class HttpTest(NodeTestCase):
    def http_node(self, *extra, env=None, conf=None):
        self.http_port = free_port()
        args = ["--http", "127.0.0.1:%d" % self.http_port] + list(extra)
        if conf is not None:
            path = os.path.join(self.workdir, "http.conf")
            with open(path, "w") as f:
                f.write(conf)
            args += ["--config", path]
        node = self.new_node(*args, start=False)
        node.env = dict(env or {}, CHORUS_HTTP_TEST_ROUTES="1")
        node.start()
        return node

    def token(self, node, secret=None):
        rc, out, err = harness.run_cmd([harness.CLUSTERCTL, "-k", secret or node.secret,
                                        "http-token"])
        self.assertEqual(rc, 0, err)
        tok = out.strip()
        self.assertEqual(len(tok), 64)
        return tok

    # ---- the routes and the auth rules ----

    def test_routes_auth_and_local_calls(self):
        node = self.http_node()
        port = self.http_port
        tok = self.token(node)

        # a client credential gives the same token as the secret
        cred = os.path.join(self.workdir, "client.cred")
        rc, _, err = harness.run_cmd([harness.CLUSTERCTL, "keygen", "--client", node.secret,
                                      cred])
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.token(node, cred), tok)

        status, a = jget(port, "/api/auth")
        self.assertEqual((status, a["write"], a["read"]), (200, False, True))
        status, a = jget(port, "/api/auth", token=tok)
        self.assertEqual((status, a["write"]), (200, True))
        status, a = jget(port, "/api/auth", token="0" * 64)
        self.assertEqual((status, a["write"]), (200, False))

        status, h, body = get(port, "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(h["content-type"].startswith("text/plain; version=0.0.4"))

        # the dashboard's files, from the binary
        for path, ctype in (("/", "text/html"), ("/index.html", "text/html"),
                            ("/app.js", "text/javascript"), ("/style.css", "text/css")):
            status, h, body = get(port, path)
            self.assertEqual(status, 200, path)
            self.assertTrue(h["content-type"].startswith(ctype), (path, h))
            self.assertEqual(h["cache-control"], "no-cache")
            self.assertIn("etag", h)
            self.assertTrue(body)
            # HEAD: the same headers, no body
            status, h2, body2 = get(port, path, method="HEAD")
            self.assertEqual((status, body2), (200, b""))
            self.assertEqual(h2["content-length"], h["content-length"])

        status, e = jget(port, "/no/such/thing")
        self.assertEqual((status, e["status"]), (404, 404))
        self.assertIn("error", e)
        status, h, body = get(port, "/metrics", method="POST")
        self.assertEqual(status, 405)
        self.assertIn("GET", h["allow"])
        self.assertEqual(json.loads(body)["status"], 405)
        status, h, body = get(port, "/metrics", method="DELETE")
        self.assertEqual(status, 405)

        # a local call through the request table (status), as GET and POST
        status, j = jget(port, "/api/_test/status")
        self.assertEqual(status, 200)
        self.assertEqual(j["name"], node.name)
        self.assertTrue(j["local_call"])
        # POST needs the token: none, a wrong one, a malformed one, the right one
        self.assertEqual(get(port, "/api/_test/status", method="POST")[0], 401)
        status, h, _ = get(port, "/api/_test/status", method="POST", token="ab" * 32)
        self.assertEqual(status, 401)
        self.assertIn("bearer", h.get("www-authenticate", "").lower())
        self.assertEqual(get(port, "/api/_test/status", method="POST", token="zz")[0], 401)
        self.assertEqual(get(port, "/api/_test/status", method="POST", token=tok[:-1] + "0"
                             if tok[-1] != "0" else tok[:-1] + "1")[0], 401)
        status, j = jget(port, "/api/_test/status", method="POST", token=tok)
        self.assertEqual((status, j["name"]), (200, node.name))

        # keep-alive: several requests on one connection, and pipelined
        s = connect(port)
        r = Reader(s)
        for _ in range(5):
            s.sendall(b"GET /api/auth HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, h, body = r.answer()
            self.assertEqual(status, 200)
            self.assertEqual(h["connection"], "keep-alive")
        s.sendall(b"GET /api/auth HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 3 +
                  b"GET /api/_test/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                  b"GET /style.css HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answers = [r.answer() for _ in range(5)]
        self.assertEqual([a[0] for a in answers], [200] * 5)
        self.assertEqual(json.loads(answers[3][2])["name"], node.name)  # in order
        self.assertTrue(answers[4][1]["content-type"].startswith("text/css"))
        self.assertTrue(r.closed())
        s.close()

        # the counters show up in /metrics (once lib/prom.c writes text)
        status, h, body = get(port, "/metrics")
        if body:
            self.assertIn(b"chorus_http_requests_total", body)

    def test_auth_all_needs_the_token_for_reading(self):
        node = self.http_node("--http-auth", "all")
        port = self.http_port
        tok = self.token(node)
        self.assertEqual(get(port, "/metrics")[0], 401)
        self.assertEqual(get(port, "/api/events")[0], 401)
        self.assertEqual(get(port, "/api/_test/status")[0], 401)
        self.assertEqual(get(port, "/metrics", token=tok)[0], 200)
        self.assertEqual(jget(port, "/api/events", token=tok)[0], 200)
        # an EventSource cannot send headers: ?token= on a GET
        self.assertEqual(get(port, "/api/events?token=" + tok)[0], 200)
        # the page itself holds no data: open, and it learns it must ask
        self.assertEqual(get(port, "/")[0], 200)
        status, a = jget(port, "/api/auth")
        self.assertEqual((status, a["read"], a["write"], a["auth"]), (200, False, False, "all"))

    def test_open_reads_only_for_loopback_host_names(self):
        """DNS rebinding: a web page whose own name resolves to 127.0.0.1
        reaches a loopback listener, and its browser sends that name as
        Host. With --http-auth open only loopback names are answered."""
        node = self.http_node()
        port = self.http_port

        def with_host(host, path="/api/status", token=None):
            auth = "Authorization: Bearer %s\r\n" % token if token else ""
            raw = ("GET %s HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n"
                   % (path, host, auth)).encode()
            status, h, body, r = request(port, raw)
            r.sock.close()
            return status, body

        for host in ("127.0.0.1", "127.0.0.1:%d" % port, "localhost:%d" % port,
                     "LOCALHOST", "[::1]:%d" % port, "127.1.2.3"):
            self.assertEqual(with_host(host)[0], 200, host)
        for host in ("attacker.example:%d" % port, "attacker.example", "127.0.0.1.nip.io",
                     "localhost.attacker.example", "127.0.0.1:%d:1" % port, "[::1",
                     "10.0.0.1", "0.0.0.0"):
            for path in ("/api/status", "/api/events", "/metrics", "/"):
                status, body = with_host(host, path)
                self.assertEqual(status, 403, (host, path))
                self.assertNotIn(node.name.encode(), body)
                self.assertEqual(json.loads(body)["status"], 403)
        # HTTP/1.0 without Host (a local script) is still served
        status, h, body, r = request(port, b"GET /api/auth HTTP/1.0\r\n\r\n")
        self.assertEqual(status, 200)
        r.sock.close()

    def test_auth_all_serves_any_host_name_with_the_token(self):
        node = self.http_node("--http-auth", "all")
        port = self.http_port
        tok = self.token(node)
        raw = ("GET /api/status HTTP/1.1\r\nHost: chorus.example.net\r\n"
               "Authorization: Bearer %s\r\nConnection: close\r\n\r\n" % tok).encode()
        status, h, body, r = request(port, raw)
        r.sock.close()
        self.assertEqual(status, 200)

    def test_errors_stay_json_for_any_bytes(self):
        """An error quoting a path or a parameter that is not UTF-8 is
        still {"error": ..., "status": N}."""
        self.http_node()
        port = self.http_port
        for target, want in ((b"/api/\xff\xfe", 404), (b"/%c0%ae%c0%ae/x", 404),
                             (b"/api/tasks?state=%ff", 400)):
            status, h, body, r = request(port, b"GET " + target +
                                         b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            r.sock.close()
            self.assertEqual(status, want, target)
            e = json.loads(body)
            self.assertEqual(e["status"], want, (target, body))
            self.assertTrue(e["error"], (target, body))

    # ---- events ----

    def test_events_long_poll_and_stream(self):
        node = self.http_node()
        port = self.http_port
        tok = self.token(node)
        # a new single node reports its start and, within about a second,
        # its own election: wait for that, so no event of the node's own
        # arrives while the test counts what it made
        deadline = time.monotonic() + 15
        while True:
            status, page = jget(port, "/api/events")
            self.assertEqual(status, 200)
            if any(e["kind"] == "leader" for e in page["events"]):
                break
            self.assertLess(time.monotonic(), deadline, "no leader event: %r" % page)
            time.sleep(0.05)
        for k in ("node", "node_id", "started_ms", "first_seq", "last_seq", "events"):
            self.assertIn(k, page)
        last = page["last_seq"]
        self.assertEqual(jget(port, "/api/events?wait_ms=30001")[0], 400)
        self.assertEqual(jget(port, "/api/events?after=x")[0], 400)
        self.assertEqual(jget(port, "/api/events?max=0")[0], 400)

        # a long-poll with nothing new ends at its deadline, empty
        t0 = time.monotonic()
        status, page = jget(port, "/api/events?after=%d&wait_ms=700" % last)
        waited = time.monotonic() - t0
        self.assertEqual((status, page["events"]), (200, []))
        self.assertGreaterEqual(waited, 0.6)
        self.assertLess(waited, 5)

        # a long-poll is answered when an event arrives
        s = connect(port)
        s.sendall(("GET /api/events?after=%d&wait_ms=20000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                   % last).encode())
        # the stream: the headers, then events as they come
        sse = connect(port)
        sse.sendall(("GET /api/events/stream?after=%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                     % last).encode())
        sr = Reader(sse)
        status, h, _ = sr.answer(head_only=True)
        self.assertEqual(status, 200)
        self.assertEqual(h["content-type"], "text/event-stream")
        t0 = time.monotonic()
        status, j = jget(port, "/api/_test/event?kind=member&subject=n9", method="POST",
                         token=tok)
        self.assertEqual(status, 200)
        seq = j["seq"]
        status, _, body = Reader(s).answer()
        self.assertLess(time.monotonic() - t0, 5)
        page = json.loads(body)
        self.assertEqual(status, 200)
        self.assertEqual([(e["seq"], e["kind"], e["subject"]) for e in page["events"]],
                         [(seq, "member", "n9")])
        for k in ("seq", "wall_ms", "kind", "subject", "message"):
            self.assertIn(k, page["events"][0])
        s.close()

        def sse_has(text):
            try:
                sse.settimeout(0.2)
                sr.buf += sse.recv(65536)
            except socket.timeout:
                pass
            return text.encode() in sr.buf
        wait_until(lambda: sse_has("id: %d\nevent: member\ndata: {" % seq), 10,
                   "the event on the stream")
        self.assertIn(b"retry: ", sr.buf)
        sse.close()

        # Last-Event-ID: a reconnecting stream gets what came after it
        jget(port, "/api/_test/event?kind=leader&subject=n2", method="POST", token=tok)
        sse = connect(port)
        sse.sendall(("GET /api/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nLast-Event-ID: %d\r\n\r\n"
                     % seq).encode())
        sr = Reader(sse)
        sr.answer(head_only=True)
        wait_until(lambda: sse_has("event: leader"), 10, "the later event after Last-Event-ID")
        self.assertNotIn(b"event: member", sr.buf)
        sse.close()

    def test_event_stream_replays_a_full_ring(self):
        """A stream that starts (or reconnects with Last-Event-ID) far back
        gets every event the ring holds, at its own pace: a replay of more
        than the stream's 256 KiB of unsent output is not taken for a slow
        reader (it was closed at once, and at every reconnection)."""
        node = self.http_node()
        port = self.http_port
        tok = self.token(node)
        subject = "s" * 127
        body = "m" * 200
        s = connect(port)
        n = 1100  # more than the ring holds (1024); distinct kinds: no rate limit past 16
        s.sendall(b"".join(("POST /api/_test/event?kind=t%d&subject=%s HTTP/1.1\r\n"
                            "Host: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                            "Content-Length: %d\r\n\r\n%s"
                            % (i, subject, tok, len(body), body)).encode() for i in range(n)))
        r = Reader(s)
        for _ in range(n):
            self.assertEqual(r.answer()[0], 200)
        s.close()
        status, page = jget(port, "/api/events?max=1")
        first, last = page["first_seq"], page["last_seq"]
        self.assertGreaterEqual(last - first + 1, 1000)
        for start in (b"?after=0", b"", b"Last-Event-ID: 1"):
            sse = connect(port)
            if start.startswith(b"?"):
                sse.sendall(b"GET /api/events/stream" + start +
                            b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            else:
                sse.sendall(b"GET /api/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
                            start + b"\r\n\r\n")
            sr = Reader(sse)
            self.assertEqual(sr.answer(head_only=True)[0], 200)
            want = b"id: %d\n" % last
            deadline = time.monotonic() + 20
            while want not in sr.buf:
                self.assertLess(time.monotonic(), deadline, "the replay did not reach %d" % last)
                sr._more()  # EOFError / reset: the stream was closed
            ids = [int(x) for x in re.findall(rb"^id: (\d+)$", sr.buf, re.M)]
            lo = first if start else last - 63
            self.assertEqual(ids, list(range(lo, last + 1)), start)
            self.assertGreater(len(sr.buf), 256 * 1024 if start else 0)
            sse.close()

    # ---- bad input ----

    def test_bad_requests_are_refused(self):
        self.http_node()
        port = self.http_port

        def refused(raw, want, closes=True):
            status, h, body, r = request(port, raw)
            self.assertEqual(status, want, (raw[:80], body))
            self.assertEqual(json.loads(body)["status"], want)
            if closes:
                self.assertEqual(h["connection"], "close")
                self.assertTrue(r.closed(), "not closed after %d" % want)
            r.sock.close()
            return body

        refused(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431)
        refused(b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\n\r\n", 431)
        refused(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X: 1\r\n" * 200 + b"\r\n", 431)
        refused(b"POST /api/_test/status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 70000\r\n\r\n",
                413)
        refused(b"POST /api/_test/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411)
        refused(b"GARBAGE\r\n\r\n", 400)
        refused(b"GET / HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n", 400)
        refused(b"GET / FTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400)
        refused(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n", 400)
        refused(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: a\r\n  folded\r\n\r\n", 400)
        refused(b"GET / HTTP/1.1\r\n\r\n", 400)  # no Host
        refused(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400)  # a TLS hello
        # path traversal: never a file from disk
        for target in (b"/../../../../etc/passwd", b"/%2e%2e/%2e%2e/etc/passwd",
                       b"/static/..%2f..%2fetc%2fpasswd", b"/.%2e/secret", b"/app.js%00.html",
                       b"http://127.0.0.1/etc/passwd", b"//etc/passwd", b"/etc/passwd",
                       b"/index.html/../../secret", b"/..\\..\\secret"):
            status, h, body, r = request(port, b"GET " + target +
                                         b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            self.assertIn(status, (400, 404), target)
            self.assertNotIn(b"root:", body)
            self.assertTrue(body.startswith(b"{"), (target, body[:100]))
            r.sock.close()
        # a body that is fine, then the node still serves
        status, h, body, r = request(port, b"POST /api/_test/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                           b"Content-Length: 3\r\n\r\nabc")
        self.assertEqual(status, 401)
        r.sock.close()
        self.assertEqual(get(port, "/api/auth")[0], 200)

    # ---- hostile clients ----

    def test_slow_clients_do_not_stop_the_node(self):
        node = self.http_node(conf="[http]\nrequest_timeout = 3s\n")
        port = self.http_port
        # 60 connections that never finish their request (slowloris)
        slow = []
        for i in range(60):
            s = connect(port)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-%d: " % i)
            slow.append(s)
        # meanwhile the node answers, promptly, over HTTP and its link
        for _ in range(3):
            t0 = time.monotonic()
            self.assertEqual(get(port, "/metrics")[0], 200)
            self.assertLess(time.monotonic() - t0, 1.0)
            t0 = time.monotonic()
            rc, out, err = node.ctl("status")
            self.assertEqual(rc, 0, err)
            self.assertLess(time.monotonic() - t0, 2.0)
            for s in slow:
                s.sendall(b"a")  # a trickle keeps none of them alive past the deadline
        # each gets 408 and is closed at its deadline
        t0 = time.monotonic()
        for s in slow:
            r = Reader(s)
            status, h, body = r.answer()
            self.assertEqual(status, 408)
            self.assertTrue(r.closed())
            s.close()
        self.assertLess(time.monotonic() - t0, 10)
        # a connection that sends nothing at all is closed too
        s = connect(port)
        self.assertTrue(Reader(s).closed(timeout_s=10))
        s.close()
        self.assertEqual(get(port, "/api/auth")[0], 200)

    def test_reset_with_full_input_is_closed_at_once(self):
        """A parked long-poll with a full input buffer behind it (so the
        node does not poll it for input), then a reset: the connection is
        closed at once. It was kept, and poll reported the reset on every
        turn of the loop (a core busy) until the long-poll's end."""
        self.http_node()
        port = self.http_port

        def open_conns():
            text = get(port, "/metrics")[2].decode()
            return int(re.search(r"^chorus_http_connections (\d+)$", text, re.M).group(1))
        # the node's own election is an event: after it, nothing comes
        wait_until(lambda: any(e["kind"] == "leader"
                               for e in jget(port, "/api/events")[1]["events"]),
                   15, "the node's leader event")
        base = open_conns()  # the scrape's own connection
        last = jget(port, "/api/events")[1]["last_seq"]
        s = connect(port)
        s.sendall(b"GET /api/events?after=%d&wait_ms=30000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                  % last + b"X" * (96 * 1024))
        wait_until(lambda: open_conns() == base + 1, 10, "the long-poll's connection open")
        time.sleep(0.3)  # the node has read all it takes
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST
        wait_until(lambda: open_conns() == base, 5, "the reset connection closed")

    def test_client_that_never_reads_is_closed(self):
        self.http_node(conf="[http]\nrequest_timeout = 2s\n")
        port = self.http_port
        s = connect(port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        one = b"GET /app.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        sent = 0
        # pipelined requests, answers never read: the node stops reading
        # (our sends block), then closes it when its answers do not move
        s.settimeout(0.5)
        deadline = time.monotonic() + 20
        closed = False
        while time.monotonic() < deadline:
            try:
                s.sendall(one * 64)
                sent += 64
            except socket.timeout:
                break
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        self.assertTrue(closed or sent < 1000000, "the node read everything")

        def gone():
            # the kernel's view of our end (Linux TCP_INFO, first byte: the
            # state): reset (CLOSE) or closed by the node (CLOSE_WAIT);
            # nothing is read, so the answers stay unread
            state = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
            return state in (7, 8)
        if not closed:
            wait_until(gone, 20, "the node closing a connection that never reads")
        s.close()
        self.assertEqual(get(port, "/api/auth")[0], 200)

    def test_connection_cap(self):
        self.http_node(conf="[http]\nmax_connections = 8\n")
        port = self.http_port
        held = []
        for _ in range(8):
            s = connect(port)
            s.sendall(b"GET /api/auth HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            Reader(s).answer()
            held.append(s)
        status, h, body, r = request(port, b"GET /api/auth HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.assertEqual(status, 503)
        self.assertEqual(json.loads(body)["status"], 503)
        self.assertTrue(r.closed())
        r.sock.close()
        held.pop().close()

        def served():
            try:
                return get(port, "/api/auth")[0] == 200
            except (ConnectionError, EOFError, ValueError):
                return False
        wait_until(served, 10, "a connection once one closed")
        for s in held:
            s.close()

    # ---- start-up ----

    def test_refused_starts(self):
        port = free_port()
        rc, out, err = self.run_chorusd("--data-dir", os.path.join(self.workdir, "d1"),
                                        "--http", "0.0.0.0:%d" % port)
        self.assertEqual(rc, 2)
        self.assertIn("--http-auth all", err)
        rc, out, err = self.run_chorusd("--http-auth", "maybe")
        self.assertEqual(rc, 2)
        rc, out, err = self.run_chorusd("--data-dir", os.path.join(self.workdir, "d1"),
                                        "--http", "127.0.0.1")
        self.assertEqual(rc, 2)
        self.assertIn("HOST:PORT", err)
        # the port is taken: a clear line, and no node
        blocker = socket.socket()
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", port))
        blocker.listen(1)
        try:
            rc, out, err = self.run_chorusd("--data-dir", os.path.join(self.workdir, "d2"),
                                            "--listen", "tcp://127.0.0.1:%d" % free_port(),
                                            "--http", "127.0.0.1:%d" % port)
            self.assertEqual(rc, 1)
            self.assertIn("cannot serve HTTP on 127.0.0.1:%d" % port, out + err)
        finally:
            blocker.close()
        rc, out, err = self.run_chorusd("--help")
        self.assertEqual(rc, 0)
        self.assertIn("--http HOST:PORT", out)
        self.assertIn("--http-auth", out)
        # the variables, as for every flag
        rc, out, err = self.run_chorusd("--data-dir", os.path.join(self.workdir, "d3"),
                                        env_extra={"CHORUS_HTTP": "0.0.0.0:%d" % port})
        self.assertEqual(rc, 2)
        self.assertIn("not a loopback address", err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
