"""test_resp.py - the cache's Redis-protocol front door (chorusd --resp),
checked with the real redis-cli (Debian's redis-tools), with a Redis client
library used as an application would use it (Debian's python3-redis), and
with raw sockets for what no well-behaved client sends.

1. redis-cli: PING, SET/GET, a binary value byte for byte, TTL/EXPIRE/
   PERSIST, INCR and its error on a non-integer, MGET/MSET, DEL of several
   keys, SCAN with MATCH over every key (redis-cli --scan and by hand),
   DBSIZE, Redis's errors for unknown commands and wrong arity on a
   connection that stays usable, INFO and CONFIG GET as clients ask them;
2. pipelining: `redis-cli --pipe` mass insert of 10,000 SETs, then DBSIZE;
   and 3,000 commands in one write, answered in order;
3. pipelining against a three-node cluster, where most keys live on other
   members and answers come back asynchronously: every reply in order, and
   a GET after a SET of the same key in one pipeline sees that SET;
4. AUTH with a configured password: NOAUTH before, WRONGPASS for a wrong
   one, then OK; HELLO 2 AUTH; HELLO 3 refused with NOPROTO;
5. SELECT maps to a named cache of the config file ([cache NAME] db = N);
   an index with no cache is "ERR DB index is out of range";
6. python3-redis: set/get, pipelines (MULTI/EXEC and plain), scan_iter,
   expire/ttl, incr, mget, delete, info, client names;
7. bad input, the node serving others throughout: malformed RESP (an error,
   then that connection closes), a bulk over the configured limit, a value
   and a key over the cache's limits, garbage SCAN cursors, an AUTH flood
   (connections closed at the cap, failures logged without flooding), a
   client that sends many commands and never reads (disconnected at the
   output cap), a half-open connection (sends half a command; closed at the
   idle timeout), one client over max_clients (refused with Redis's error);
8. a non-loopback --resp address without a password is refused at start;
   status shows the listener; SIGTERM drains to exit 0.

Every wait is a condition with a deadline; no fixed sleeps.
"""

import os
import select
import shutil
import socket
import subprocess
import sys
import time
import unittest

from harness import NodeTestCase, free_port, keygen, run_cmd, wait_until

REDIS_CLI = shutil.which("redis-cli")
MISSING = None if REDIS_CLI else "redis-cli not found (apt-get install redis-tools): RESP tests skipped"
if MISSING:
    sys.stderr.write(MISSING + "\n")

IO_TIMEOUT_S = 20.0     # one socket read or write in these tests
CLI_TIMEOUT_S = 60.0    # one redis-cli run
PASSWORD = "correct horse battery staple"
PERIOD = "100ms"        # gossip period of the cluster test


class RespError(str):
    """An error reply (its text, without the leading '-')."""


def encode(*args):
    """One command as a RESP multibulk."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = b"%d" % a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Raw:
    """A plain socket speaking RESP, for what clients do not send."""

    def __init__(self, port, rcvbuf=None, timeout_s=IO_TIMEOUT_S):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(timeout_s)
        self.s.connect(("127.0.0.1", port))
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def cmd(self, *args):
        self.send(encode(*args))
        return self.reply()

    def _fill(self):
        data = self.s.recv(1 << 16)
        if not data:
            raise EOFError("the node closed the connection")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise AssertionError("not a RESP reply: %r" % line)

    def closed_within(self, timeout_s):
        """True once the node closed the connection (EOF or a reset) within
        timeout_s; what it sent before is kept in buf."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = self.s.recv(1 << 16)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not data:
                return True
            self.buf += data
        return False

    def close(self):
        self.s.close()


@unittest.skipIf(MISSING, MISSING)
class RespCase(NodeTestCase):

    def resp_node(self, conf="", extra=(), name=None, env=None, **kw):
        """A node with the RESP listener on a free port and `conf` as its
        config file (and env added to its environment); returns (node,
        port)."""
        port = free_port()
        args = ["--resp", "127.0.0.1:%d" % port]
        if conf:
            path = os.path.join(self.workdir, "%s.conf" % (name or "n%d" % (len(self.nodes) + 1)))
            with open(path, "w") as f:
                f.write(conf)
            args += ["--config", path]
        node = self.new_node(*(args + list(extra)), name=name, start=False, **kw)
        node.env = env
        node.start()
        self.assertEqual(node.status().get("resp_listen"), "127.0.0.1:%d" % port)
        return node, port

    def cli(self, port, *args, password=None, input=None, db=None, timeout_s=CLI_TIMEOUT_S):
        """redis-cli -p PORT [-a PASSWORD] [-n DB] ARGS: (exit code, stdout
        text, stderr text)."""
        cmd = [REDIS_CLI, "-p", str(port)]
        if password is not None:
            cmd += ["-a", password, "--no-auth-warning"]
        if db is not None:
            cmd += ["-n", str(db)]
        return run_cmd(cmd + [str(a) for a in args], timeout_s=timeout_s, input=input)

    def out(self, port, *args, **kw):
        """redis-cli's output lines of one command (it must exit 0)."""
        rc, out, err = self.cli(port, *args, **kw)
        self.assertEqual(rc, 0, "redis-cli %s: rc=%s %s %s" % (args, rc, out, err))
        return out.rstrip("\n").split("\n") if out.rstrip("\n") else []

    def one(self, port, *args, **kw):
        lines = self.out(port, *args, **kw)
        self.assertEqual(len(lines), 1, "%s -> %r" % (args, lines))
        return lines[0]

    def serving(self, port, password=None):
        """The listener still answers a new client."""
        r = Raw(port)
        try:
            if password:
                self.assertEqual(r.cmd("AUTH", password), "OK")
            self.assertEqual(r.cmd("PING"), "PONG")
        finally:
            r.close()

    def info(self, port, section, password=None):
        fields = {}
        r = Raw(port)
        try:
            if password:
                r.cmd("AUTH", password)
            text = r.cmd("INFO", section)
        finally:
            r.close()
        for line in text.decode().splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                fields[k] = v
        return fields


class TestRedisCli(RespCase):

    def test_basic_commands_answer_as_redis_does(self):
        n, port = self.resp_node()
        self.assertEqual(self.one(port, "PING"), "PONG")
        self.assertEqual(self.one(port, "PING", "hello"), "hello")
        self.assertEqual(self.one(port, "ECHO", "x y"), "x y")
        self.assertEqual(self.one(port, "SET", "greeting", "hello world"), "OK")
        self.assertEqual(self.one(port, "GET", "greeting"), "hello world")
        self.assertEqual(self.out(port, "GET", "nope"), [])   # nil: an empty line
        # SET's options
        self.assertEqual(self.out(port, "SET", "greeting", "x", "NX"), [])
        self.assertEqual(self.one(port, "SET", "greeting", "bye", "XX", "GET"), "hello world")
        self.assertEqual(self.one(port, "SET", "fresh", "1", "NX"), "OK")
        self.assertIn("syntax error", self.one(port, "SET", "k", "v", "NX", "XX"))
        self.assertIn("invalid expire time in 'set' command",
                      self.one(port, "SET", "k", "v", "EX", "0"))
        self.assertEqual(self.one(port, "GETDEL", "greeting"), "bye")
        self.assertEqual(self.out(port, "GET", "greeting"), [])
        # TTL, EXPIRE, PERSIST
        self.assertEqual(self.one(port, "SET", "t", "v", "EX", "100"), "OK")
        self.assertIn(int(self.one(port, "TTL", "t")), (99, 100))
        self.assertGreater(int(self.one(port, "PTTL", "t")), 98000)
        self.assertEqual(self.one(port, "PERSIST", "t"), "1")
        self.assertEqual(self.one(port, "TTL", "t"), "-1")
        self.assertEqual(self.one(port, "PERSIST", "t"), "0")
        self.assertEqual(self.one(port, "TTL", "missing"), "-2")
        self.assertEqual(self.one(port, "EXPIRE", "t", "1000"), "1")
        self.assertEqual(self.one(port, "EXPIRE", "missing", "1000"), "0")
        self.assertIn("not an integer", self.one(port, "EXPIRE", "t", "soon"))
        self.assertEqual(self.one(port, "PEXPIRE", "t", "50"), "1")
        wait_until(lambda: self.out(port, "GET", "t") == [], 10, "t to expire")
        self.assertEqual(self.one(port, "SET", "gone", "v"), "OK")
        self.assertEqual(self.one(port, "EXPIRE", "gone", "-1"), "1")  # a past time deletes
        self.assertEqual(self.out(port, "GET", "gone"), [])
        # INCR and friends
        self.assertEqual(self.one(port, "INCR", "counter"), "1")
        self.assertEqual(self.one(port, "INCRBY", "counter", "41"), "42")
        self.assertEqual(self.one(port, "DECR", "counter"), "41")
        self.assertEqual(self.one(port, "DECRBY", "counter", "40"), "1")
        self.assertIn("decrement would overflow",
                      self.one(port, "DECRBY", "counter", "-9223372036854775808"))
        self.assertEqual(self.one(port, "SET", "word", "abc"), "OK")
        self.assertEqual(self.one(port, "INCR", "word"),
                         "ERR value is not an integer or out of range")
        self.assertEqual(self.one(port, "INCRBY", "counter", "x"),
                         "ERR value is not an integer or out of range")
        # MSET, MGET, DEL, EXISTS, TYPE
        self.assertEqual(self.one(port, "MSET", "a", "1", "b", "2", "c", "3"), "OK")
        self.assertEqual(self.out(port, "MGET", "a", "b", "nope", "c"), ["1", "2", "", "3"])
        self.assertEqual(self.one(port, "EXISTS", "a", "a", "nope"), "2")
        self.assertEqual(self.one(port, "TYPE", "a"), "string")
        self.assertEqual(self.one(port, "TYPE", "nope"), "none")
        self.assertEqual(self.one(port, "DEL", "a", "b", "nope"), "2")
        self.assertEqual(self.out(port, "MGET", "a", "b", "c"), ["", "", "3"])
        self.assertIn("wrong number of arguments for 'mset'",
                      self.one(port, "MSET", "a", "1", "b"))
        # errors keep the connection: one redis-cli session, several commands
        r = Raw(port)
        e = r.cmd("FLY", "me", "to")
        self.assertEqual(e, "ERR unknown command 'FLY', with args beginning with: 'me' 'to' ")
        self.assertEqual(r.cmd("GET"), "ERR wrong number of arguments for 'get' command")
        self.assertEqual(r.cmd("GET", "a", "b"), "ERR wrong number of arguments for 'get' command")
        self.assertEqual(r.cmd("PING"), "PONG")
        r.close()
        # what client libraries and tools ask
        self.assertIn("NOPROTO", self.one(port, "HELLO", "3"))
        hello = self.out(port, "HELLO", "2")
        self.assertEqual(hello[:4], ["server", "redis", "version", "7.0.0-chorus"])
        self.assertGreaterEqual(int(self.one(port, "COMMAND", "COUNT")), 30)
        self.assertEqual(self.out(port, "COMMAND", "DOCS"), [])
        r = Raw(port)
        self.assertEqual(r.cmd("CONFIG", "GET", "save"), [b"save", b""])
        self.assertEqual(r.cmd("CONFIG", "GET", "APPEND*"), [b"appendonly", b"no"])
        self.assertEqual(r.cmd("CONFIG", "GET", "nothing-like-this"), [])
        r.close()
        info = self.info(port, "server")
        self.assertEqual(info["redis_version"], "7.0.0-chorus")
        self.assertEqual(info["tcp_port"], str(port))
        self.assertGreaterEqual(int(self.info(port, "clients")["connected_clients"]), 1)
        self.assertIn("DB index is out of range", self.one(port, "SELECT", "9"))
        self.assertEqual(self.one(port, "QUIT"), "OK")
        st = n.status()
        self.assertGreater(st["resp_commands"], 50)
        self.assertGreater(st["resp_errors"], 5)

    def test_binary_values_round_trip_byte_for_byte(self):
        _, port = self.resp_node()
        value = bytes(range(256)) * 40 + b"\r\n$3\r\n*1\r\n\x00"
        path = os.path.join(self.workdir, "blob")
        with open(path, "wb") as f:
            f.write(value)
        with open(path, "rb") as f:
            p = subprocess.run([REDIS_CLI, "-p", str(port), "-x", "SET", "blob"], stdin=f,
                               capture_output=True, timeout=CLI_TIMEOUT_S)
        self.assertEqual(p.stdout.strip(), b"OK", p)
        r = Raw(port)
        self.assertEqual(r.cmd("GET", "blob"), value)
        key = b"k\x00\r\n\xff"
        self.assertEqual(r.cmd("SET", key, b"\x00"), "OK")
        self.assertEqual(r.cmd("MGET", key, "blob"), [b"\x00", value])
        self.assertEqual(r.cmd("SET", "empty", ""), "OK")
        self.assertEqual(r.cmd("GET", "empty"), b"")
        self.assertEqual(r.cmd("MGET", "empty", "none"), [b"", None])
        r.close()

    def test_scan_visits_every_key_with_match(self):
        _, port = self.resp_node()
        users = {"user:%d" % i for i in range(300)}
        others = {"other:%d" % i for i in range(60)}
        lines = "".join("SET %s v\n" % k for k in sorted(users | others))
        rc, out, err = self.cli(port, "--pipe", input=lines)
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(self.one(port, "DBSIZE"), "360")
        got = self.out(port, "--scan", "--pattern", "user:*")
        self.assertEqual(set(got), users)
        # by hand: the cursor is opaque and ends at 0
        seen, cursor, rounds = set(), "0", 0
        r = Raw(port)
        while True:
            cursor, keys = r.cmd("SCAN", cursor, "MATCH", "other:*", "COUNT", "25")
            cursor = cursor.decode()
            seen |= {k.decode() for k in keys}
            rounds += 1
            self.assertLess(rounds, 1000, "SCAN never ends")
            if cursor == "0":
                break
        self.assertEqual(seen, others)
        self.assertEqual(r.cmd("SCAN", "0", "TYPE", "hash"), [b"0", []])
        self.assertEqual(r.cmd("SCAN", "0", "COUNT", "0"), "ERR syntax error")
        r.close()

    def test_pipe_mass_insert_of_10000_sets(self):
        _, port = self.resp_node()
        payload = b"".join(encode("SET", "key:%05d" % i, "value-%d" % i) for i in range(10000))
        rc, out, err = self.cli(port, "--pipe", input=payload)
        self.assertEqual(rc, 0, out + err)
        self.assertIn("errors: 0, replies: 10000", out)
        self.assertEqual(self.one(port, "DBSIZE"), "10000")
        self.assertEqual(self.one(port, "GET", "key:09999"), "value-9999")

    def test_pipelined_commands_answer_in_order(self):
        _, port = self.resp_node()
        r = Raw(port)
        cmds, want = [], []
        for i in range(1000):
            k = "p%d" % (i % 17)
            cmds += [encode("SET", k, i), encode("GET", k), encode("INCR", "n")]
            want += ["OK", b"%d" % i, i + 1]
        r.send(b"".join(cmds))
        got = [r.reply() for _ in want]
        self.assertEqual(got, want)
        # inline commands, as telnet sends them, pipelined too
        r.send(b"PING\r\nECHO \"a b\"\r\nGET p0\n")
        self.assertEqual([r.reply(), r.reply(), r.reply()], ["PONG", b"a b", b"986"])
        r.close()


class TestCluster(RespCase):

    def test_pipelines_stay_in_order_when_keys_live_on_other_members(self):
        secret = keygen(os.path.join(self.workdir, "cluster.secret"))
        common = ["--secret", secret, "--gossip-period", PERIOD]
        n1, port = self.resp_node(extra=common, name="n1", secret=secret)
        n2 = self.new_node(*(common + ["--seeds", n1.addr]), name="n2", secret=secret)
        n3 = self.new_node(*(common + ["--seeds", n1.addr]), name="n3", secret=secret)

        def three_alive():
            return all(sum(1 for m in x.members().values() if m["state"] == "alive") == 3
                       for x in (n1, n2, n3))
        wait_until(three_alive, 30, "three alive members")
        r = Raw(port)

        # the cache's map follows the members: each node leads about a third
        # of the partitions once its map has all three (until then a key's
        # primary may change under a test that counts: docs/cache.md)
        def maps_of_three():
            for x in (n1, n2, n3):
                rc, out, err = x.ctl("cache", "stats")
                if rc != 0 or not isinstance(out, list):
                    return False
                if any(st["partitions_primary"] >= 200 for st in out):
                    return False
            return True
        wait_until(maps_of_three, 30, "every node's cache map with three members")

        def writes_work():
            return r.cmd("SET", "probe", "1") == "OK"
        wait_until(writes_work, 30, "cache writes across the cluster")
        cmds, want = [], []
        for i in range(600):
            k = "key-%d" % (i % 40)
            cmds += [encode("SET", k, i), encode("GET", k), encode("EXISTS", k, "nope"),
                     encode("INCR", "ctr-%d" % (i % 7))]
            want += ["OK", b"%d" % i, 1, i // 7 + 1]
        cmds.append(encode("MGET", *["key-%d" % j for j in range(40)]))
        want.append([b"%d" % (560 + j) for j in range(40)])
        cmds.append(encode("DBSIZE"))
        want.append(40 + 7 + 1)
        r.send(b"".join(cmds))
        got = [r.reply() for _ in want]
        for i, (g, w) in enumerate(zip(got, want)):
            self.assertEqual(g, w, "reply %d" % i)
        r.close()
        # the ordering was needed: commands waited for earlier ones on their key
        self.assertGreater(int(self.info(port, "stats")["chorus_commands_deferred"]), 0)
        # clients that hang up with answers still owed by other members
        for round_ in range(5):
            r = Raw(port)
            r.send(b"".join(encode("SET", "gone-%d-%d" % (round_, i), "v") + encode("GET", "x%d" % i)
                            for i in range(500)))
            r.close()
        self.serving(port)
        wait_until(lambda: n1.status()["resp_clients"] == 0, 30, "the hung-up clients gone")


class TestMovedRetry(RespCase):

    def test_moved_answers_are_retried_then_given_up(self):
        # the hook answers the first 8 cache calls MOVED, a moment later, as
        # a member on another map would: the first command gets 6 (its every
        # try: TRYAGAIN), the next 2 and then succeeds; replies stay in order
        n, port = self.resp_node(env={"CHORUS_TEST_RESP_MOVED": "8"})
        r = Raw(port)
        e = r.cmd("SET", "a", "1")
        self.assertIsInstance(e, RespError)
        self.assertTrue(e.startswith("TRYAGAIN"), e)
        r.send(encode("SET", "b", "2") + encode("PING") + encode("GET", "b"))
        self.assertEqual([r.reply(), r.reply(), r.reply()], ["OK", "PONG", b"2"])
        self.assertIsNone(r.cmd("GET", "a"))
        self.assertEqual(int(self.info(port, "stats")["chorus_moved_retries"]), 7)
        r.close()
        n.stop()
        # a client that hangs up while its calls wait for a retry, and a
        # node stopping with retries pending: nothing leaks (ASan builds)
        n.env = {"CHORUS_TEST_RESP_MOVED": "1000"}
        n.start()
        for i in range(3):
            r = Raw(port)
            r.send(b"".join(encode("SET", "k%d" % j, "v") for j in range(50)))
            r.close()
        r = Raw(port)
        r.send(encode("MGET", "x", "y", "z"))
        self.assertEqual(n.stop(), 0)
        r.close()


class TestAuth(RespCase):

    def test_password_is_required_and_checked(self):
        _, port = self.resp_node("[resp]\npassword = %s\n" % PASSWORD)
        r = Raw(port)
        self.assertEqual(r.cmd("PING"), "NOAUTH Authentication required.")
        self.assertEqual(r.cmd("GET", "k"), "NOAUTH Authentication required.")
        self.assertTrue(r.cmd("AUTH", "wrong").startswith("WRONGPASS"))
        self.assertTrue(r.cmd("AUTH", "admin", PASSWORD).startswith("WRONGPASS"))
        self.assertEqual(r.cmd("AUTH", PASSWORD), "OK")
        self.assertEqual(r.cmd("SET", "k", "v"), "OK")
        r.close()
        r = Raw(port)
        self.assertEqual(r.cmd("AUTH", "default", PASSWORD), "OK")
        self.assertEqual(r.cmd("GET", "k"), b"v")
        r.close()
        r = Raw(port)
        self.assertTrue(r.cmd("HELLO", "2").startswith("NOAUTH HELLO must be called"))
        hello = r.cmd("HELLO", "2", "AUTH", "default", PASSWORD, "SETNAME", "app-1")
        self.assertEqual(hello[:6], [b"server", b"redis", b"version", b"7.0.0-chorus", b"proto", 2])
        self.assertEqual(r.cmd("CLIENT", "GETNAME"), b"app-1")
        r.close()
        # redis-cli with -a, and without
        self.assertEqual(self.one(port, "GET", "k", password=PASSWORD), "v")
        self.assertIn("NOAUTH", self.one(port, "GET", "k"))
        # before AUTH, Redis's small limits: a big unauthenticated command is a protocol error
        r = Raw(port)
        r.send(encode("AUTH", "x" * 20000))
        self.assertIn("Protocol error", r.reply())
        self.assertTrue(r.closed_within(IO_TIMEOUT_S))
        r.close()

    def test_password_file_is_read_at_start(self):
        path = os.path.join(self.workdir, "resp.pw")
        with open(path, "w") as f:
            f.write(PASSWORD + "\n")
        os.chmod(path, 0o600)
        _, port = self.resp_node("[resp]\npassword_file = %s\n" % path)
        self.assertEqual(self.one(port, "PING", password=PASSWORD), "PONG")
        rc, out, err = self.cli(port, "PING", password="nope")
        self.assertIn("WRONGPASS", out + err)
        self.assertIn("NOAUTH", out)

    def test_auth_flood_closes_connections_and_the_node_keeps_serving(self):
        n, port = self.resp_node("[resp]\npassword = %s\n" % PASSWORD)
        for _ in range(8):
            r = Raw(port)
            replies = []
            try:
                for i in range(50):
                    replies.append(r.cmd("AUTH", "guess-%d" % i))
            except (EOFError, ConnectionResetError, BrokenPipeError):
                pass
            # every failure answered, then the connection closed at the cap (10)
            self.assertEqual(len(replies), 10, replies)
            self.assertTrue(all(x.startswith("WRONGPASS") for x in replies), replies)
            self.assertTrue(r.closed_within(IO_TIMEOUT_S))
            r.close()
        self.serving(port, PASSWORD)
        self.assertEqual(int(self.info(port, "stats", PASSWORD)["chorus_auth_failures"]), 80)
        # logged, but not once per failure
        lines = [l for l in n.log_lines_since_last_start() if "failed AUTH" in l]
        self.assertGreaterEqual(len(lines), 1)
        self.assertLess(len(lines), 10, lines)


class TestSelect(RespCase):

    def test_select_maps_to_named_caches(self):
        _, port = self.resp_node("[cache sessions]\ndb = 2\n\n[cache rates]\ndb = 5\n")
        r = Raw(port)
        self.assertEqual(r.cmd("SET", "who", "db0"), "OK")
        self.assertEqual(r.cmd("SELECT", "2"), "OK")
        self.assertIsNone(r.cmd("GET", "who"))
        self.assertEqual(r.cmd("SET", "who", "sessions"), "OK")
        self.assertEqual(r.cmd("DBSIZE"), 1)
        self.assertEqual(r.cmd("SELECT", "1"), "ERR DB index is out of range")
        self.assertEqual(r.cmd("GET", "who"), b"sessions")  # still db 2
        self.assertEqual(r.cmd("SELECT", "x"), "ERR value is not an integer or out of range")
        self.assertEqual(r.cmd("SELECT", "-1"), "ERR DB index is out of range")
        self.assertEqual(r.cmd("SELECT", "0"), "OK")
        self.assertEqual(r.cmd("GET", "who"), b"db0")
        r.close()
        self.assertEqual(self.one(port, "GET", "who", db=2), "sessions")
        self.assertEqual(self.out(port, "GET", "who", db=5), [])
        self.assertEqual(self.one(port, "FLUSHDB", db=2), "OK")
        self.assertEqual(self.one(port, "DBSIZE", db=2), "0")
        self.assertEqual(self.one(port, "GET", "who"), "db0")
        keyspace = self.info(port, "keyspace")
        self.assertEqual(keyspace.get("db0"), "keys=1,expires=0,avg_ttl=0")


def python_with_redis():
    """An interpreter that has the redis module (python3-redis installs it
    for Debian's python3, which may not be the one running the tests)."""
    for exe in (sys.executable, "/usr/bin/python3"):
        if exe and os.path.exists(exe):
            p = subprocess.run([exe, "-c", "import redis"], capture_output=True, timeout=60)
            if p.returncode == 0:
                return exe
    return None


CLIENT_SCRIPT = r'''
import sys, redis
port, password = int(sys.argv[1]), sys.argv[2]
r = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=20,
                client_name="lib-test")
assert r.ping() is True
assert r.client_getname() == "lib-test"
assert r.set("user:1", "ada") is True
assert r.get("user:1") == b"ada"
assert r.set("user:1", "bob", nx=True) is None
assert r.set("user:1", "cy", xx=True, get=True) == b"ada"
assert r.set("session", "s", ex=100) is True
assert 99 <= r.ttl("session") <= 100
assert r.expire("user:1", 50) is True
assert 0 < r.pttl("user:1") <= 50000
assert r.persist("user:1") is True
assert r.incr("hits") == 1 and r.incrby("hits", 9) == 10 and r.decr("hits") == 9
try:
    r.incr("user:1")
    raise AssertionError("INCR of a word succeeded")
except redis.ResponseError as e:
    assert "not an integer" in str(e), e
# a transaction pipeline (MULTI/EXEC) and a plain one
with r.pipeline() as p:
    for i in range(200):
        p.set("item:%d" % i, i)
    p.incr("hits")
    res = p.execute()
assert res[:200] == [True] * 200 and res[200] == 10, res[195:]
with r.pipeline(transaction=False) as p:
    for i in range(200):
        p.get("item:%d" % i)
    res = p.execute()
assert res == [b"%d" % i for i in range(200)], res[:5]
assert r.mget(["item:1", "nope", "item:2"]) == [b"1", None, b"2"]
assert set(r.scan_iter(match="item:1*", count=30)) == {b"item:1"} | {
    b"item:%d" % i for i in range(10, 20)} | {b"item:%d" % i for i in range(100, 200)}
assert r.delete("item:1", "item:2", "nope") == 2
assert r.exists("item:3", "item:3") == 2
assert r.dbsize() == 198 + 3
info = r.info()
assert info["redis_version"] == "7.0.0-chorus", info
assert info["connected_clients"] >= 1
assert r.getdel("session") == b"s" and r.get("session") is None
r.flushdb()
assert r.dbsize() == 0
print("client library: ok")
'''


class TestClientLibrary(RespCase):

    def test_python_redis_as_an_application_uses_it(self):
        exe = python_with_redis()
        if exe is None:
            self.skipTest("no python with the redis module (apt-get install python3-redis)")
        _, port = self.resp_node("[resp]\npassword = %s\n" % PASSWORD)
        rc, out, err = run_cmd([exe, "-c", CLIENT_SCRIPT, str(port), PASSWORD], timeout_s=120)
        self.assertEqual(rc, 0, out + err)
        self.assertIn("client library: ok", out)


class TestBadInput(RespCase):

    def test_malformed_resp_closes_only_that_connection(self):
        _, port = self.resp_node()
        keep = Raw(port)
        self.assertEqual(keep.cmd("SET", "k", "v"), "OK")
        for junk, why in ((b"*1\r\n$x\r\n", "invalid bulk length"),
                          (b"*abc\r\n", "invalid multibulk length"),
                          (b"*2\r\n$3\r\nGET\r\n:1\r\n", "expected '$', got ':'"),
                          (b"*1\r\n$4\r\nPINGxx\r\n", "bulk data not followed by CRLF"),
                          (b"ECHO \"unbalanced\r\n", "unbalanced quotes")):
            r = Raw(port)
            # a good command first: its answer comes before the error
            r.send(encode("PING") + junk)
            self.assertEqual(r.reply(), "PONG")
            e = r.reply()
            self.assertIsInstance(e, RespError)
            self.assertIn("Protocol error", e)
            self.assertIn(why, e)
            self.assertTrue(r.closed_within(IO_TIMEOUT_S), junk)
            r.close()
            self.assertEqual(keep.cmd("GET", "k"), b"v")
        keep.close()
        self.assertGreaterEqual(int(self.info(port, "stats")["chorus_protocol_errors"]), 5)

    def test_oversized_arguments_are_refused(self):
        conf = ("[resp]\nbulk_bytes_max = 64k\nquery_bytes_max = 256k\n\n"
                "[cache]\nvalue_bytes_max = 4k\nkey_bytes_max = 64\n")
        _, port = self.resp_node(conf)
        # over the cache's value limit, within the protocol's: an error reply
        r = Raw(port)
        e = r.cmd("SET", "k", "x" * 5000)
        self.assertIsInstance(e, RespError)
        self.assertIn("value too large", e)
        e = r.cmd("SET", "k" * 100, "v")
        self.assertIsInstance(e, RespError)
        self.assertIn("key too large", e)
        self.assertEqual(r.cmd("SET", "k", "x" * 4000), "OK")
        # over the protocol's bulk limit: refused as soon as its length is read
        r.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % (100 * 1024))
        e = r.reply()
        self.assertIn("Protocol error: invalid bulk length", e)
        self.assertTrue(r.closed_within(IO_TIMEOUT_S))
        r.close()
        # an inline line with no end, past the inline limit
        r = Raw(port)
        r.send(b"SET k " + b"y" * (70 * 1024))
        e = r.reply()
        self.assertIn("Protocol error", e)
        self.assertTrue(r.closed_within(IO_TIMEOUT_S))
        r.close()
        self.serving(port)
        self.assertEqual(len(self.one(port, "GET", "k")), 4000)

    def test_garbage_scan_cursors_are_errors(self):
        _, port = self.resp_node()
        r = Raw(port)
        for i in range(30):
            r.cmd("SET", "k%d" % i, i)
        self.assertEqual(r.cmd("SCAN", "garbage"), "ERR invalid cursor")
        self.assertEqual(r.cmd("SCAN", "-1"), "ERR invalid cursor")
        self.assertEqual(r.cmd("SCAN", "99999999999999999999999"), "ERR invalid cursor")
        # digits the node never handed out
        self.assertEqual(r.cmd("SCAN", "12345678901234"), "ERR invalid cursor")
        cursor, keys = r.cmd("SCAN", "0", "COUNT", "5")
        self.assertTrue(cursor.isdigit())
        self.assertEqual(r.cmd("PING"), "PONG")
        r.close()

    def test_a_client_that_never_reads_is_disconnected_at_the_output_cap(self):
        n, port = self.resp_node("[resp]\noutput_bytes_max = 64k\n")
        self.assertEqual(self.one(port, "SET", "big", "z" * 4000), "OK")
        r = Raw(port, rcvbuf=4096)
        r.s.setblocking(False)
        chunk = encode("GET", "big") * 500
        deadline = time.monotonic() + 60
        sent, cut = 0, False
        # tens of MB of replies asked for, none read: the node must hang up
        while sent < 20000 and not cut and time.monotonic() < deadline:
            try:
                _, writable, _ = select.select([], [r.s], [], 0.2)
                if writable:
                    r.s.send(chunk)
                    sent += 500
            except (BrokenPipeError, ConnectionResetError):
                cut = True
            except BlockingIOError:
                pass

        def counted():
            return int(self.info(port, "stats")["chorus_output_limit_closed"]) >= 1
        wait_until(counted, 30, "the non-reading client disconnected")
        r.close()
        self.serving(port)
        self.assertIn("does not read its replies", n.log_text())

    def test_half_open_connection_is_harmless_and_closed_when_idle(self):
        n, port = self.resp_node("[resp]\nidle_timeout = 1s\n")
        half = Raw(port)
        half.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\nabc")
        # the node serves others meanwhile
        for i in range(5):
            self.assertEqual(self.one(port, "SET", "other", str(i)), "OK")
        self.assertEqual(self.out(port, "GET", "k"), [])
        self.assertTrue(half.closed_within(IO_TIMEOUT_S), "the idle half command was not closed")
        self.assertEqual(half.buf, b"")  # no reply to half a command
        half.close()
        self.serving(port)

    def test_clients_over_max_clients_are_refused(self):
        _, port = self.resp_node("[resp]\nmax_clients = 3\n")
        held = [Raw(port) for _ in range(3)]
        for r in held:
            self.assertEqual(r.cmd("PING"), "PONG")
        extra = Raw(port)
        self.assertTrue(extra.closed_within(IO_TIMEOUT_S))
        self.assertEqual(extra.buf, b"-ERR max number of clients reached\r\n")
        extra.close()
        held.pop().close()

        def room_again():
            r = Raw(port)
            try:
                return r.cmd("PING") == "PONG"
            except (EOFError, ConnectionResetError):
                return False
            finally:
                r.close()
        wait_until(room_again, 20, "a free client slot")
        for r in held:
            self.assertEqual(r.cmd("PING"), "PONG")
            r.close()
        self.assertGreaterEqual(int(self.info(port, "stats")["rejected_connections"]), 1)


class TestStartAndStop(RespCase):

    def test_open_address_without_password_is_refused(self):
        rc, out, err = self.run_chorusd("--data-dir", os.path.join(self.workdir, "d"),
                                        "--resp", "0.0.0.0:%d" % free_port())
        self.assertEqual(rc, 2, out + err)
        self.assertIn("not a loopback address and has no password", err)
        rc, out, err = self.run_chorusd("--help")
        self.assertEqual(rc, 0)
        self.assertIn("--resp HOST:PORT", out)

    def test_status_and_drain(self):
        n, port = self.resp_node()
        r = Raw(port)
        self.assertEqual(r.cmd("SET", "k", "v"), "OK")
        st = n.status()
        self.assertEqual(st["resp_clients"], 1)
        self.assertGreaterEqual(st["resp_commands"], 1)
        rc, out, err = n.ctl("status", json=False)
        self.assertEqual(rc, 0, err)
        self.assertIn("resp       127.0.0.1:%d  clients 1" % port, out)
        self.assertEqual(n.stop(), 0)
        self.assertTrue(r.closed_within(IO_TIMEOUT_S))
        r.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
