"""test_cache_update.py - isolated updates (CACHE_UPDATE, ch_cache_update,
`clusterctl cache update`) and the small key commands (persist, exists,
getdel) against real nodes.

Covers:
1. one node: update creates, rewrites and (--delete-if-empty) deletes a key,
   the command seeing the value on stdin and CHORUS_CACHE_FOUND; a command
   that fails changes nothing (exit 1); persist, exists and getdel, text and
   --json;
2. three nodes (R = 3): 12 updaters on all three nodes increment one counter
   through `update` at once; the counter ends at exactly the number of
   updates, and the command ran exactly that many times (the primary's lock
   serialised them; none was refused and run again);
3. a plain put between an update's read and its write: the write is refused
   and the update begins again from the put's value (nothing lost);
4. a lease that runs out: an update stuck past its lease lets the next one
   through; its own write is then refused and it begins again.
"""

import json as jsonlib
import os
import subprocess
import threading
import time
import unittest

from harness import (CLUSTERCTL, EXIT_OK, EXIT_TASK_FAILED, EXIT_USAGE, NodeTestCase, keygen,
                     wait_until)

EXIT_NOT_FOUND = 5
PERIOD = "100ms"
CONVERGE_S = 15.0
PARTITIONS = 271

# Increments the decimal value on stdin (absent: 0); logs each run.
INCR = "v=$(cat); echo run >> \"$RUNS\"; echo $(( ${v:-0} + 1 ))"


class UpdateCase(NodeTestCase):

    def ctl(self, node, *args, expect=EXIT_OK, json=True, env=None, timeout=60):
        # a long client timeout: updaters wait for each other's turns, on a
        # machine that may be busy
        cmd = [CLUSTERCTL, "-a", node.addr, "-k", node.secret, "--timeout", "30s"]
        if json:
            cmd.append("--json")
        cmd += ["cache"] + list(args)
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, timeout=timeout,
                           env=dict(os.environ, **(env or {})))
        if expect is not None and p.returncode != expect:
            raise AssertionError("cache %r on %s: rc=%s (expected %s) out=%r err=%r\n%s"
                                 % (args, node.name, p.returncode, expect, p.stdout, p.stderr,
                                    node.log_tail(20)))
        out = p.stdout.decode()
        if json and p.returncode == EXIT_OK and out.strip():
            out = jsonlib.loads(out)
        return out, p.stderr.decode()

    def runs(self, path):
        if not os.path.exists(path):
            return 0
        with open(path) as f:
            return len(f.read().split())


class TestUpdateOneNode(UpdateCase):

    def setUp(self):
        super().setUp()
        self.n1 = self.new_node()

    def test_update_creates_rewrites_and_deletes(self):
        n = self.n1
        seen = os.path.join(self.workdir, "seen")
        probe = 'echo "$CHORUS_CACHE_FOUND $CHORUS_CACHE_KEY" >> "%s"; v=$(cat); ' \
                'echo "[$v]"' % seen
        out, _ = self.ctl(n, "update", "k", "--", "sh", "-c", probe, json=False)
        self.assertEqual(out, "stored 3 bytes\n")  # "[]\n"
        out, _ = self.ctl(n, "get", "k", json=False)
        self.assertEqual(out, "[]\n")
        out, _ = self.ctl(n, "update", "k", "--ttl", "1h", "--", "sh", "-c", probe)
        self.assertEqual(out, {"key": "k", "outcome": "stored"})
        self.assertEqual(self.ctl(n, "get", "k", json=False)[0], "[[]]\n")
        with open(seen) as f:
            self.assertEqual(f.read(), "0 k\n1 k\n")
        ttl = self.ctl(n, "ttl", "k")[0]["ttl_ms"]
        self.assertTrue(3500000 < ttl <= 3600000, ttl)
        # a command that fails: nothing changes, exit 1, its status said
        _, err = self.ctl(n, "update", "k", "--", "sh", "-c", "cat >/dev/null; exit 7",
                          expect=EXIT_TASK_FAILED, json=False)
        self.assertEqual(err, "clusterctl: the command exited 7: nothing changed\n")
        self.assertEqual(self.ctl(n, "get", "k", json=False)[0], "[[]]\n")
        _, err = self.ctl(n, "update", "k", "--", "/nonexistent/cmd", expect=EXIT_TASK_FAILED,
                          json=False)
        self.assertIn("cannot run the command", err)
        # --delete-if-empty: no output deletes the key
        out, _ = self.ctl(n, "update", "k", "--delete-if-empty", "--", "sh", "-c",
                          "cat >/dev/null")
        self.assertEqual(out, {"key": "k", "outcome": "deleted"})
        self.ctl(n, "get", "k", expect=EXIT_NOT_FOUND)
        # a value over the node's limit: refused, and the lock let go at once
        t0 = time.monotonic()
        _, err = self.ctl(n, "update", "big", "--", "sh", "-c", "head -c 9000000 /dev/zero",
                          expect=6, json=False)
        self.assertIn("at most", err)
        out, _ = self.ctl(n, "update", "big", "--", "sh", "-c", "echo small")
        self.assertEqual(out, {"key": "big", "outcome": "stored"})
        self.assertLess(time.monotonic() - t0, 20)  # not the 30 s lease
        # usage: no command, no --
        _, err = self.ctl(n, "update", "k", expect=EXIT_USAGE, json=False)
        self.assertIn("needs", err)
        _, err = self.ctl(n, "update", "k", "sh", expect=EXIT_USAGE, json=False)
        self.assertIn("--", err)
        _, err = self.ctl(n, "update", "k", "--lease", "2m", "--", "true", expect=EXIT_USAGE,
                          json=False)
        self.assertIn("at most 1m", err)

    def test_persist_exists_getdel(self):
        n = self.n1
        self.ctl(n, "put", "a", "1", "--ttl", "1h")
        self.ctl(n, "put", "b", "2")
        out, _ = self.ctl(n, "exists", "a", "b", "c", expect=EXIT_NOT_FOUND, json=False)
        self.assertEqual(out, "2\n")
        self.assertEqual(self.ctl(n, "exists", "a", "b")[0], {"exists": 2})
        self.assertEqual(self.ctl(n, "persist", "a")[0], {"key": "a", "persisted": True})
        self.assertEqual(self.ctl(n, "ttl", "a")[0], {"key": "a", "ttl_ms": -1})
        _, err = self.ctl(n, "persist", "a", expect=EXIT_TASK_FAILED, json=False)
        self.assertIn("had no ttl", err)
        self.assertEqual(self.ctl(n, "getdel", "b", json=False)[0], "2")
        self.ctl(n, "getdel", "b", expect=EXIT_NOT_FOUND)
        self.ctl(n, "get", "b", expect=EXIT_NOT_FOUND)


class TestUpdateCluster(UpdateCase):

    def setUp(self):
        super().setUp()
        secret = keygen(os.path.join(self.workdir, "cluster.secret"))
        common = ["--secret", secret, "--gossip-period", PERIOD]
        self.trio = [self.new_node(*common, name="n1", secret=secret)]
        for i in (2, 3):
            self.trio.append(self.new_node(*common, "--seeds", self.trio[0].addr,
                                            name="n%d" % i, secret=secret))

        def maps_agree():
            led = []
            for x in self.trio:
                rc, out, _ = x.ctl("cache", "stats", "--cache", "default")
                if rc != EXIT_OK:
                    return False
                led.append(out[0]["partitions_primary"])
            return sum(led) == PARTITIONS and all(0 < k < PARTITIONS for k in led)
        wait_until(maps_agree, CONVERGE_S, "every partition map with three members")

    def test_concurrent_updates_are_serialised(self):
        runs = os.path.join(self.workdir, "runs")
        per, updaters = 4, 12
        errors = []

        def updater(i):
            node = self.trio[i % 3]
            for _ in range(per):
                try:
                    self.ctl(node, "update", "counter", "--", "sh", "-c", INCR, json=False,
                             env={"RUNS": runs}, timeout=120)
                except AssertionError as e:
                    errors.append(str(e))
        threads = [threading.Thread(target=updater, args=(i,)) for i in range(updaters)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        self.assertEqual(errors, [])
        total = per * updaters
        for node in self.trio:
            out, _ = self.ctl(node, "get", "counter", json=False)
            self.assertEqual(out.strip(), str(total))
        # serialised by the lock: every run's write was applied
        self.assertEqual(self.runs(runs), total)

    def test_a_plain_put_between_read_and_write_is_not_lost(self):
        n1, n2, _ = self.trio
        self.ctl(n1, "put", "k", "10")
        runs = os.path.join(self.workdir, "runs")
        started = os.path.join(self.workdir, "started")
        go = os.path.join(self.workdir, "go")
        # the first run waits for `go` after reading; later runs do not
        script = ('v=$(cat); echo run >> "%s"; if [ ! -e "%s" ]; then touch "%s"; '
                  'while [ ! -e "%s" ]; do sleep 0.02; done; fi; echo "$v+1"'
                  % (runs, go, started, go))
        p = subprocess.Popen([CLUSTERCTL, "-a", n2.addr, "-k", n2.secret, "cache", "update",
                              "k", "--", "sh", "-c", script],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: os.path.exists(started), 30, "the update to read the value")
            self.ctl(n1, "put", "k", "20")
            open(go, "w").close()
            out, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, EXIT_OK, err)
        self.assertEqual(self.ctl(n1, "get", "k", json=False)[0].strip(), "20+1")
        self.assertEqual(self.runs(runs), 2)

    def test_a_lease_that_runs_out_lets_the_next_update_through(self):
        n1, n2, n3 = self.trio
        self.ctl(n1, "put", "k", "a")
        runs = os.path.join(self.workdir, "runs")
        started = os.path.join(self.workdir, "started")
        go = os.path.join(self.workdir, "go")
        stuck = ('v=$(cat); echo run >> "%s"; if [ ! -e "%s" ]; then touch "%s"; '
                 'while [ ! -e "%s" ]; do sleep 0.02; done; fi; echo "${v}b"'
                 % (runs, go, started, go))
        p = subprocess.Popen([CLUSTERCTL, "-a", n2.addr, "-k", n2.secret, "cache", "update",
                              "k", "--lease", "500ms", "--", "sh", "-c", stuck],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: os.path.exists(started), 30, "the stuck update to read")
            t0 = time.monotonic()
            # waits for the lock until the stuck one's lease runs out
            self.ctl(n3, "update", "k", "--", "sh", "-c", 'v=$(cat); echo "${v}c"', json=False)
            self.assertLess(time.monotonic() - t0, 20)
            self.assertEqual(self.ctl(n1, "get", "k", json=False)[0].strip(), "ac")
            self.assertIsNone(p.poll())  # still stuck: the lease ended its turn, not it
            open(go, "w").close()
            out, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, EXIT_OK, err)
        # its first write was refused; it began again from "ac"
        self.assertEqual(self.ctl(n1, "get", "k", json=False)[0].strip(), "acb")
        self.assertEqual(self.runs(runs), 2)


if __name__ == "__main__":
    unittest.main()
