"""test_cache_cli.py - `clusterctl cache` (libchorus's ch_cache_*) against real nodes.

Covers, on one node:
1. put / get / del, byte for byte (binary values through --value-file and
   standard input), and the --json shapes of every subcommand;
2. put's conditions (--nx, --xx: exit 1 when not met), --ttl, --keepttl,
   incr with and without DELTA, ttl, expire, and a key that expires;
3. scan over the whole keyspace, with --match, step by step with --cursor,
   binary keys in "keys_base64"; stats, dbsize, flush --yes; a named cache
   (--cache) kept apart from the default one, with its default TTL;
4. bad input: an empty key, a value over the node's value_bytes_max, an
   unknown --consistency, garbage cursors, an unknown cache, an integer
   overflow, a missing --yes; each a clear line on stderr and its exit code;
   no node at the address: exit 3.
And on a cluster of three (R = 3): a key put on n1 is read on n2 and n3 at
every consistency level, incr from every node adds up, del on one is seen on
the others, and scan, dbsize and flush are cluster-wide from any node.
"""

import base64
import json
import os
import subprocess
import unittest

from harness import (CLUSTERCTL, EXIT_OK, EXIT_TASK_FAILED, EXIT_UNREACHABLE, EXIT_USAGE,
                     EXIT_REFUSED, NodeTestCase, free_port, keygen, run_cmd, wait_until)

EXIT_NOT_FOUND = 5
PERIOD = "100ms"          # gossip period of the cluster's nodes
CONVERGE_S = 15.0
VALUE_BYTES_MAX = 1024    # the nodes' [cache] value_bytes_max in these tests
SESSIONS_TTL_MS = 30 * 60 * 1000
PARTITIONS = 271          # the nodes' default [cache] partitions

CONFIG = """[cache]
value_bytes_max = 1K

[cache sessions]
ttl = 30m
"""


def write_config(workdir):
    path = os.path.join(workdir, "chorus.conf")
    with open(path, "w") as f:
        f.write(CONFIG)
    return path


class CacheCase(NodeTestCase):

    def cache(self, node, *args, expect=EXIT_OK, json=True, input=None):
        """clusterctl [--json] cache ARGS on node; checks the exit code and
        returns (stdout (parsed JSON with json), stderr)."""
        rc, out, err = node.ctl("cache", *args, json=json, input=input)
        if expect is not None and rc != expect:
            raise AssertionError("cache %r on %s: rc=%s (expected %s) out=%r err=%s\n%s"
                                 % (args, node.name, rc, expect, out, err, node.log_tail(20)))
        return out, err

    def raw(self, node, *args, input=None):
        """clusterctl cache ARGS (text mode) with stdout as bytes."""
        cmd = [CLUSTERCTL, "-a", node.addr, "-k", node.secret, "cache"] + \
            [a if isinstance(a, bytes) else str(a) for a in args]
        p = subprocess.run(cmd, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=None if input is not None else subprocess.DEVNULL, timeout=60)
        return p.returncode, p.stdout, p.stderr.decode(errors="replace")

    def assertOneLine(self, err, *fragments):
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.startswith("clusterctl: "), err)
        for f in fragments:
            self.assertIn(f, err)

    def scan_all(self, node, *extra):
        out, _ = self.cache(node, "scan", *extra)
        self.assertEqual(out["cursor"], 0)
        return out["keys"], [base64.b64decode(k) for k in out["keys_base64"]]


class TestCacheOneNode(CacheCase):

    def setUp(self):
        super().setUp()
        self.n1 = self.new_node("--config", write_config(self.workdir))

    def test_put_get_del_and_their_json(self):
        n = self.n1
        out, _ = self.cache(n, "put", "greeting", "héllo wörld")
        self.assertEqual(out, {"key": "greeting", "stored": True})
        out, _ = self.cache(n, "get", "greeting")
        self.assertEqual(set(out), {"key", "value", "ttl_ms", "version"})
        self.assertEqual(out["key"], "greeting")
        self.assertEqual(out["value"], "héllo wörld")
        self.assertEqual(out["ttl_ms"], -1)
        self.assertGreater(out["version"]["hlc"], 0)
        self.assertRegex(out["version"]["node"], "^[0-9a-f]{32}$")
        # a later write has a newer version
        hlc = out["version"]["hlc"]
        self.cache(n, "put", "greeting", "again")
        out, _ = self.cache(n, "get", "greeting")
        self.assertGreater(out["version"]["hlc"], hlc)
        # text mode: the bytes as stored, no newline added (not a terminal)
        rc, stdout, err = self.raw(n, "get", "greeting")
        self.assertEqual((rc, stdout), (EXIT_OK, b"again"), err)
        rc, stdout, _ = self.raw(n, "put", "k2", "-")  # "-" is a value like any other
        self.assertEqual(stdout, b"stored 'k2' (1 byte) in cache default\n")
        self.assertEqual(self.raw(n, "get", "k2")[1], b"-")
        out, _ = self.cache(n, "del", "greeting", "k2", "never-there")
        self.assertEqual(out, {"deleted": 2})
        rc, stdout, _ = self.raw(n, "del", "greeting")
        self.assertEqual(stdout, b"deleted 0 of 1 key\n")
        out, err = self.cache(n, "get", "greeting", expect=EXIT_NOT_FOUND)
        self.assertEqual(out, "")
        self.assertEqual(err, "clusterctl: not found: no key 'greeting' in cache default\n")
        # a key that starts with '-' after --
        self.cache(n, "put", "--", "-dash", "v")
        self.assertEqual(self.cache(n, "get", "--", "-dash")[0]["value"], "v")

    def test_binary_values_round_trip(self):
        n = self.n1
        blob = bytes(range(256)) * 3 + b"\xff\xfe\x00"
        path = os.path.join(self.workdir, "blob")
        with open(path, "wb") as f:
            f.write(blob)
        self.cache(n, "put", "blob", "--value-file", path)
        rc, stdout, err = self.raw(n, "get", "blob")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertEqual(stdout, blob)
        out, _ = self.cache(n, "get", "blob")
        self.assertNotIn("value", out)
        self.assertEqual(base64.b64decode(out["value_base64"]), blob)
        # standard input, and an empty value
        self.cache(n, "put", "stdin", "--value-file", "-", input=b"\x00from stdin\n")
        self.assertEqual(self.raw(n, "get", "stdin")[1], b"\x00from stdin\n")
        self.cache(n, "put", "empty", "--value-file", "-", input=b"")
        out, _ = self.cache(n, "get", "empty")
        self.assertEqual(out["value"], "")
        # a key that is not UTF-8: base64 in JSON, escaped in text
        key = b"bin\xffkey"
        rc, stdout, err = self.raw(n, "put", key, "v")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertEqual(stdout, b"stored 'bin\\xffkey' (1 byte) in cache default\n")
        rc, stdout, err = self.raw(n, "get", key, "--json")
        self.assertEqual(rc, EXIT_OK, err)
        out = json.loads(stdout)
        self.assertNotIn("key", out)
        self.assertEqual(base64.b64decode(out["key_base64"]), key)
        self.assertEqual(out["value"], "v")

    def test_conditions_ttls_and_incr(self):
        n = self.n1
        self.cache(n, "put", "lock", "me", "--nx")
        out, err = self.cache(n, "put", "lock", "you", "--nx", expect=EXIT_TASK_FAILED)
        self.assertEqual(out, {"key": "lock", "stored": False})
        rc, stdout, err = self.raw(n, "put", "lock", "you", "--nx")
        self.assertEqual((rc, stdout), (EXIT_TASK_FAILED, b""))
        self.assertEqual(err, "clusterctl: not stored (--nx: the key exists)\n")
        self.assertEqual(self.cache(n, "get", "lock")[0]["value"], "me")
        self.cache(n, "put", "absent", "x", "--xx", expect=EXIT_TASK_FAILED)
        self.cache(n, "get", "absent", expect=EXIT_NOT_FOUND)
        self.cache(n, "put", "lock", "us", "--xx")
        self.assertEqual(self.cache(n, "get", "lock")[0]["value"], "us")

        # ttl: none, then set by put, kept by --keepttl, dropped by a plain put
        self.assertEqual(self.cache(n, "ttl", "lock")[0], {"key": "lock", "ttl_ms": -1})
        self.assertEqual(self.raw(n, "ttl", "lock")[1], b"no expiry\n")
        self.cache(n, "put", "lock", "v", "--ttl", "1h")
        ttl = self.cache(n, "ttl", "lock")[0]["ttl_ms"]
        self.assertTrue(3600000 - 60000 < ttl <= 3600000, ttl)
        self.cache(n, "put", "lock", "w", "--keepttl")
        self.assertGreater(self.cache(n, "ttl", "lock")[0]["ttl_ms"], 0)
        self.assertGreater(self.cache(n, "get", "lock")[0]["ttl_ms"], 0)
        self.cache(n, "put", "lock", "z")
        self.assertEqual(self.cache(n, "ttl", "lock")[0]["ttl_ms"], -1)
        out, _ = self.cache(n, "expire", "lock", "2d")
        self.assertEqual(out, {"key": "lock", "ttl_ms": 2 * 86400 * 1000})
        self.assertTrue(self.raw(n, "ttl", "lock")[1].startswith(b"1d 23h 59m"))
        _, err = self.cache(n, "ttl", "nope", expect=EXIT_NOT_FOUND)
        self.assertOneLine(err, "no key 'nope' in cache default")
        self.cache(n, "expire", "nope", "10s", expect=EXIT_NOT_FOUND)
        # a key that expires is gone for get and ttl
        self.cache(n, "put", "brief", "v", "--ttl", "300ms")
        wait_until(lambda: n.ctl("cache", "get", "brief")[0] == EXIT_NOT_FOUND, 10,
                   "the key 'brief' to expire")
        self.cache(n, "ttl", "brief", expect=EXIT_NOT_FOUND)

        # incr: absent counts as 0, DELTA may be negative
        self.assertEqual(self.cache(n, "incr", "hits")[0], {"key": "hits", "value": 1})
        self.assertEqual(self.cache(n, "incr", "hits", "41")[0]["value"], 42)
        self.assertEqual(self.raw(n, "incr", "hits", "-50")[1], b"-8\n")
        self.assertEqual(self.raw(n, "get", "hits")[1], b"-8")
        _, err = self.cache(n, "incr", "lock", expect=EXIT_USAGE)
        self.assertOneLine(err, "not an integer")
        self.cache(n, "put", "big", "9223372036854775807")
        _, err = self.cache(n, "incr", "big", expect=EXIT_USAGE)
        self.assertOneLine(err, "overflow")

    def test_scan_stats_dbsize_flush_and_named_caches(self):
        n = self.n1
        keys = ["user:%d" % i for i in range(40)] + ["order:%d" % i for i in range(15)]
        for k in keys:
            self.cache(n, "put", k, "v-" + k)
        self.raw(n, "put", b"raw\x80key", "v")
        utf8, binary = self.scan_all(n)
        self.assertEqual(sorted(utf8), sorted(keys))
        self.assertEqual(binary, [b"raw\x80key"])
        rc, stdout, err = self.raw(n, "scan")
        self.assertEqual(rc, EXIT_OK, err)
        lines = stdout.decode().splitlines()
        self.assertEqual(sorted(lines), sorted(keys + ["raw\\x80key"]))
        utf8, binary = self.scan_all(n, "--match", "user:1*", "--count", "3")
        self.assertEqual(sorted(utf8), sorted(k for k in keys if k.startswith("user:1")))
        self.assertEqual(binary, [])
        # step by step: every key once the cursor comes back to 0
        seen, cursor, steps = [], 0, 0
        while True:
            out, _ = self.cache(n, "scan", "--cursor", cursor, "--count", "7")
            self.assertEqual(set(out), {"cursor", "keys", "keys_base64"})
            seen += out["keys"]
            cursor, steps = out["cursor"], steps + 1
            if cursor == 0:
                break
            self.assertLess(steps, 1000)
        self.assertGreater(steps, 1)
        self.assertEqual(sorted(set(seen)), sorted(keys))
        rc, stdout, err = self.raw(n, "scan", "--cursor", "0", "--count", "1000")
        self.assertEqual(err, "next cursor: 0 (the scan is complete)\n")

        self.assertEqual(self.cache(n, "dbsize")[0], {"cache": "default", "entries": len(keys) + 1})
        self.assertEqual(self.raw(n, "dbsize")[1], b"%d\n" % (len(keys) + 1))
        stats, _ = self.cache(n, "stats")
        self.assertEqual(sorted(s["cache"] for s in stats), ["default", "sessions"])
        fields = {"cache", "node", "entries", "memory_bytes", "hits", "misses", "evictions",
                  "expirations", "hints_pending", "tombstones", "partitions_primary",
                  "partitions_replica", "partitions_moving"}
        for s in stats:
            self.assertEqual(set(s), fields)
            self.assertEqual(s["node"], "n1")
        default = [s for s in stats if s["cache"] == "default"][0]
        self.assertEqual(default["entries"], len(keys) + 1)
        self.assertGreater(default["memory_bytes"], 0)
        self.assertEqual(default["partitions_primary"], PARTITIONS)
        rc, stdout, err = self.raw(n, "stats")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertTrue(stdout.startswith(b"NODE  CACHE "), stdout)

        # the named cache: apart from the default one, with its own default TTL
        self.cache(n, "put", "user:1", "session", "--cache", "sessions")
        self.assertEqual(self.cache(n, "get", "user:1", "--cache", "sessions")[0]["value"],
                         "session")
        self.assertEqual(self.cache(n, "get", "user:1")[0]["value"], "v-user:1")
        ttl = self.cache(n, "ttl", "user:1", "--cache", "sessions")[0]["ttl_ms"]
        self.assertTrue(SESSIONS_TTL_MS - 60000 < ttl <= SESSIONS_TTL_MS, ttl)
        stats, _ = self.cache(n, "stats", "--cache", "sessions")
        self.assertEqual([(s["cache"], s["entries"]) for s in stats], [("sessions", 1)])
        self.assertEqual(self.cache(n, "dbsize", "--cache", "sessions")[0]["entries"], 1)

        # flush needs --yes, and empties only the cache named
        _, err = self.cache(n, "flush", expect=EXIT_USAGE)
        self.assertOneLine(err, "add --yes")
        self.assertEqual(self.cache(n, "flush", "--yes")[0], {"cache": "default", "flushed": True})
        self.assertEqual(self.cache(n, "dbsize")[0]["entries"], 0)
        self.assertEqual(self.scan_all(n), ([], []))
        self.assertEqual(self.cache(n, "dbsize", "--cache", "sessions")[0]["entries"], 1)
        self.assertEqual(self.raw(n, "flush", "--yes", "--cache", "sessions")[1],
                         b"flushed cache sessions\n")
        self.cache(n, "get", "user:1", "--cache", "sessions", expect=EXIT_NOT_FOUND)

    def test_bad_input_is_refused_with_a_reason(self):
        n = self.n1
        # refused before contacting the node (exit 2, one line, nothing on stdout)
        for args, message in ((["get", ""], "KEY is empty"),
                              (["put", "", "v"], "KEY is empty"),
                              (["del", "a", ""], "KEY is empty"),
                              (["get", "k", "--consistency", "most"],
                               "--consistency: unknown level 'most' (one, quorum or all)"),
                              (["scan", "--cursor", "garbage"], "--cursor needs a cursor"),
                              (["scan", "--cursor", "-1"], "--cursor needs a cursor"),
                              (["put", "k", "v", "--nx", "--xx"], "exclude each other"),
                              (["put", "k", "v", "--ttl", "soon"], "--ttl needs a duration"),
                              (["put", "k", "v", "--ttl", "0"], "--ttl must be more than 0"),
                              (["put", "k", "v", "--keepttl", "--ttl", "5s"], "exclude each other"),
                              (["put", "k"], "cache put needs KEY VALUE"),
                              (["put", "k", "v", "--value-file", "/dev/null"], "not both"),
                              (["incr", "k", "many"], "DELTA must be a 64-bit integer"),
                              (["incr", "k", "99999999999999999999"], "DELTA must be"),
                              (["expire", "k", "0"], "must be more than 0"),
                              (["get", "k", "--ttl", "5s"], "unknown option '--ttl'"),
                              (["get", "k", "extra"], "unexpected argument 'extra'"),
                              (["get", "k", "--cache", ""], "--cache needs a name"),
                              (["get", "k", "--cache", "c" * 49], "at most 48 bytes"),
                              (["frob"], "unknown subcommand 'frob'"),
                              ([], "cache needs a subcommand")):
            rc, out, err = n.ctl("cache", *args, json=False)
            self.assertEqual(rc, EXIT_USAGE, (args, out, err))
            self.assertEqual(out, "")
            self.assertOneLine(err, message)

        # refused by the node
        big = os.path.join(self.workdir, "big")
        with open(big, "wb") as f:
            f.write(b"x" * (VALUE_BYTES_MAX + 1))
        _, err = self.cache(n, "put", "k", "--value-file", big, expect=EXIT_REFUSED)
        self.assertOneLine(err, "too large", "at most %d bytes" % VALUE_BYTES_MAX)
        self.cache(n, "get", "k", expect=EXIT_NOT_FOUND)
        with open(big, "wb") as f:
            f.write(b"x" * VALUE_BYTES_MAX)
        self.cache(n, "put", "k", "--value-file", big)  # exactly the limit is fine
        _, err = self.cache(n, "scan", "--cursor", "123456789", expect=EXIT_USAGE)
        self.assertOneLine(err, "invalid cursor")
        _, err = self.cache(n, "scan", "--cursor", "18446744073709551615", expect=EXIT_USAGE)
        self.assertOneLine(err, "invalid cursor")
        _, err = self.cache(n, "get", "k", "--cache", "nope", expect=EXIT_NOT_FOUND)
        self.assertOneLine(err, 'no cache named "nope"')
        _, err = self.cache(n, "stats", "--cache", "nope", expect=EXIT_NOT_FOUND)
        self.assertOneLine(err, 'no cache named "nope"')
        # the node is fine afterwards
        self.assertEqual(self.cache(n, "get", "k")[0]["value"], "x" * VALUE_BYTES_MAX)

    def test_help_is_there_and_the_top_usage_names_cache(self):
        for args in (["help", "cache"], ["cache", "put", "k", "v", "--help"], ["cache", "-h"]):
            rc, out, err = run_cmd([CLUSTERCTL] + args)
            self.assertEqual(rc, EXIT_OK, (args, err))
            self.assertTrue(out.startswith("usage: clusterctl cache get KEY\n"), out)
            self.assertIn("--consistency LEVEL", out)
            self.assertIn("value_base64", out)
        rc, out, _ = run_cmd([CLUSTERCTL, "--help"])
        self.assertIn("cache get|put|del|incr|ttl|expire|persist|exists|getdel|update KEY", out)
        self.assertIn("a cache put --nx or", out)

    def test_no_node_at_the_address_exits_3(self):
        secret = keygen(os.path.join(self.workdir, "other.secret"))
        addr = "tcp://127.0.0.1:%d" % free_port()
        for args in (["get", "k"], ["put", "k", "v"], ["scan"], ["stats"]):
            rc, out, err = run_cmd([CLUSTERCTL, "-a", addr, "-k", secret, "--timeout", "500ms",
                                    "cache"] + args)
            self.assertEqual(rc, EXIT_UNREACHABLE, (args, out, err))
            self.assertOneLine(err, "cannot reach")


class TestCacheCluster(CacheCase):

    def setUp(self):
        super().setUp()
        secret = keygen(os.path.join(self.workdir, "cluster.secret"))
        common = ["--secret", secret, "--gossip-period", PERIOD,
                  "--config", write_config(self.workdir)]
        self.nodes3 = [self.new_node(*common, name="n1", secret=secret)]
        for i in (2, 3):
            self.nodes3.append(self.new_node(*common, "--seeds", self.nodes3[0].addr,
                                             name="n%d" % i, secret=secret))

        def all_see_three():
            for x in self.nodes3:
                m = x.members()
                if len(m) != 3 or any(v["state"] != "alive" for v in m.values()):
                    return False
            return True
        wait_until(all_see_three, CONVERGE_S, "three alive members in every view")

        # The cache's partition map follows the membership a moment later
        # (each node rebuilds it on its own tick). Every node counts the
        # partitions it leads under its own map: they add up to all of them,
        # none twice, once every map has the three members. (A write made
        # before, under a map of one, would stay on that node alone: the
        # service does not yet stream partitions to new owners.)
        def maps_agree():
            led = []
            for x in self.nodes3:
                rc, out, _ = x.ctl("cache", "stats", "--cache", "default")
                if rc != EXIT_OK:
                    return False
                led.append(out[0]["partitions_primary"])
            return sum(led) == PARTITIONS and all(0 < n < PARTITIONS for n in led)
        wait_until(maps_agree, CONVERGE_S, "every partition map with three members")

    def test_a_key_put_on_one_node_is_read_on_the_others(self):
        n1, n2, n3 = self.nodes3
        keys = ["k%d" % i for i in range(30)]
        for k in keys:
            self.cache(n1, "put", k, "v-" + k)
        for node in (n2, n3):
            for level in ("one", "quorum", "all"):
                out, _ = self.cache(node, "get", "k7", "--consistency", level)
                self.assertEqual(out["value"], "v-k7", (node.name, level))
            for k in keys:
                self.assertEqual(self.cache(node, "get", k)[0]["value"], "v-" + k)
        # every node holds a copy of every key (R = 3): ONE reads agree
        for node in (n1, n2, n3):
            self.assertEqual(self.cache(node, "get", "k29", "--consistency", "one")[0]["value"],
                             "v-k29")
        # writes from every node, one counter
        for node in (n1, n2, n3, n2):
            self.cache(node, "incr", "counter")
        self.assertEqual(self.cache(n3, "get", "counter")[0]["value"], "4")
        # a delete on one node is seen on the others
        self.cache(n3, "del", "k3")
        self.cache(n1, "get", "k3", expect=EXIT_NOT_FOUND)
        self.cache(n2, "get", "k3", "--consistency", "all", expect=EXIT_NOT_FOUND)
        self.cache(n2, "put", "k3", "back", "--nx")
        self.assertEqual(self.cache(n1, "get", "k3")[0]["value"], "back")
        # the write's version names the primary, whoever was asked
        versions = {self.cache(node, "get", "k5")[0]["version"]["node"] for node in (n1, n2, n3)}
        self.assertEqual(len(versions), 1)
        # ttl and expire through another node
        self.cache(n2, "expire", "k4", "1h")
        self.assertGreater(self.cache(n3, "ttl", "k4")[0]["ttl_ms"], 3500000)

    def test_scan_dbsize_stats_and_flush_are_cluster_wide(self):
        n1, n2, n3 = self.nodes3
        keys = ["item:%d" % i for i in range(60)]
        for i, k in enumerate(keys):
            self.cache(self.nodes3[i % 3], "put", k, "v")
        for node in (n1, n2, n3):
            utf8, binary = self.scan_all(node, "--count", "5")
            self.assertEqual(sorted(utf8), sorted(keys), node.name)
            self.assertEqual(self.cache(node, "dbsize")[0]["entries"], len(keys))
        # each node's stats are its own; with three copies each node holds all
        names = []
        for node in (n1, n2, n3):
            stats, _ = self.cache(node, "stats", "--cache", "default")
            self.assertEqual(len(stats), 1)
            names.append(stats[0]["node"])
            self.assertEqual(stats[0]["entries"], len(keys))
        self.assertEqual(names, ["n1", "n2", "n3"])
        primaries = [self.cache(x, "stats", "--cache", "default")[0][0]["partitions_primary"]
                     for x in (n1, n2, n3)]
        self.assertEqual(sum(primaries), PARTITIONS)
        self.cache(n2, "flush", "--yes")
        for node in (n1, n2, n3):
            self.assertEqual(self.cache(node, "dbsize")[0]["entries"], 0)
            self.assertEqual(self.scan_all(node), ([], []))
            self.cache(node, "get", "item:1", "--consistency", "all", expect=EXIT_NOT_FOUND)


if __name__ == "__main__":
    unittest.main()
