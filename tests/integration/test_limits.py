"""test_limits.py - answers respect the node's frame cap; the request table
counts.

1. a fan-out whose results add up to several times the node's --frame-max:
   the node pages them (each page shrinks to fit a frame), and every result
   arrives, in input order, intact;
2. one result bigger than the frame cap: the client gets a clear "too large"
   error instead of a frame it would have to refuse, and the node keeps
   serving;
3. `status --json` shows the request table's counters: calls, errors and
   latency buckets per request type.
"""

import os
import unittest

from harness import NodeTestCase, task_id

FRAME_MAX = "64k"


class TestLimits(NodeTestCase):

    def test_result_pages_shrink_to_the_frame_cap(self):
        n = self.new_node("--frame-max", FRAME_MAX, "--exec-allow", "/usr/bin/head")
        lines = "".join("%d\n" % i for i in range(30))
        # each task prints 8,000 bytes: 240 kB of results, 64 kB frames
        rc, out, err = n.ctl("submit", "exec", "--arg", "/usr/bin/head", "--arg", "-c",
                             "--arg", "8000", "--arg", "/dev/zero", "--fanout", "-",
                             input=lines, timeout_s=60)
        self.assertEqual(rc, 0, "rc=%s err=%s" % (rc, err))
        results = out if isinstance(out, list) else out.get("results")
        self.assertEqual(len(results), 30, out if not isinstance(out, list) else len(out))
        for i, r in enumerate(results):
            self.assertEqual(r["state"], "succeeded", r)
            self.assertEqual(r.get("batch_index", i), i)
            self.assertEqual(len(r["output"]), 8000, "result %d: %d bytes" % (i, len(r["output"])))
        reqs = {r["name"]: r for r in n.status()["requests"]}
        # 240 kB cannot come back in fewer than four 64 kB pages
        self.assertGreaterEqual(reqs["batch_await"]["calls"], 4, reqs["batch_await"])

    def test_a_result_over_the_cap_is_an_error_not_a_dead_frame(self):
        n = self.new_node("--frame-max", FRAME_MAX, "--exec-allow", "/usr/bin/head")
        tid = task_id(n.submit("exec", "--arg", "/usr/bin/head", "--arg", "-c", "--arg",
                               "100000", "--arg", "/dev/zero"))
        rc, out, err = n.ctl("wait", tid, "--timeout", "20s")
        self.assertNotEqual(rc, 0, out)
        self.assertIn("too large", (err + str(out)).lower())
        # still serving, and the task itself is fine in the journal
        st = n.status()
        self.assertGreaterEqual(st["succeeded"], 1)

    def test_status_shows_request_counters(self):
        n = self.new_node()
        for i in range(5):
            n.submit("echo", payload="x%d" % i)
        n.submit("no-such-handler", payload="x", expect_rc=None)
        reqs = {r["name"]: r for r in n.status()["requests"]}
        for name in ("submit", "map", "await", "status", "gossip", "members"):
            self.assertIn(name, reqs)
        sub = reqs["submit"]
        self.assertEqual(sub["calls"], 6, sub)
        self.assertEqual(sub["errors"], 1, sub)
        self.assertEqual(sum(sub["latency_buckets"]), 6, sub)
        self.assertGreater(sub["latency_p99_us"], 0, sub)


if __name__ == "__main__":
    unittest.main()
