"""test_drain.py - the drain contract of SIGTERM (README "What survives what",
docs/design.md "Shutdown").

1. One node, two tasks running, one awaited by `clusterctl wait`, the other by
   `clusterctl submit --wait`; SIGTERM: a new submit is refused (exit 6,
   "node shutting down"), both waits are answered with `succeeded` once their
   tasks finish, and the node exits 0.
2. Three nodes: n1 coordinates a fan-out that requires tag `t` (n2 and n3
   have it). n2 is busy with a task of its own, so the task n1 places there
   waits in n2's queue. SIGTERM to n2: that task is handed back, runs on n3,
   and every task of the fan-out succeeds with attempts = 1 (no attempt
   charged for the hand-back); n2 finishes its own task and exits 0.
"""

import json
import os
import subprocess
import unittest

from harness import (CLUSTERCTL, EXIT_OK, EXIT_REFUSED, NodeTestCase, keygen, task_id,
                     task_list, task_state, wait_until)

SLEEP_MS = 2500
PERIOD = "100ms"


class TestDrain(NodeTestCase):

    def background_ctl(self, node, name, *args):
        """clusterctl --json ARGS against node, in the background; returns
        a function that waits for it and returns (rc, parsed stdout, stderr)."""
        out_path = os.path.join(self.workdir, name + ".out")
        err_path = os.path.join(self.workdir, name + ".err")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            p = subprocess.Popen([CLUSTERCTL, "-a", node.addr, "-k", node.secret, "--json"]
                                 + [str(a) for a in args],
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        self.addCleanup(lambda: p.poll() is None and p.kill())

        def finish(timeout_s=60):
            try:
                rc = p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.fail("clusterctl %s did not finish within %d s" % (" ".join(args), timeout_s))
            with open(out_path) as f, open(err_path) as f2:
                text, err = f.read(), f2.read()
            try:
                return rc, json.loads(text), err
            except ValueError:
                return rc, text, err
        return finish

    def test_sigterm_refuses_new_submits_and_answers_open_waits(self):
        node = self.new_node("--workers", "2", "--shutdown-grace", "60s")
        a = task_id(node.submit("sleep", payload=str(SLEEP_MS)))
        wait_a = self.background_ctl(node, "wait-a", "wait", a, "--timeout", "60s")
        wait_b = self.background_ctl(node, "submit-b", "--timeout", "60s", "submit", "sleep",
                                     str(SLEEP_MS), "--wait")
        self.wait_status(node, lambda s: s["running"] == 2 and s["submitted"] == 2,
                         "both sleeps running")

        node.sigterm()
        wait_until(lambda: "draining" in "\n".join(node.log_lines_since_last_start()), 15,
                   "the node logs its drain")
        rc, out, err = node.ctl("submit", "echo", "too late")
        self.assertEqual(rc, EXIT_REFUSED, (out, err))
        self.assertIn("shutting down", err)

        for name, finish in (("wait", wait_a), ("submit --wait", wait_b)):
            rc, r, err = finish()
            self.assertEqual(rc, EXIT_OK, "%s: %r %s" % (name, r, err))
            self.assertEqual(task_state(r), "succeeded", r)
            self.assertGreaterEqual(r["finished_ms"] - r["started_ms"], SLEEP_MS - 10, r)
        self.assertEqual(node.wait_exit(), 0, node.log_tail())
        self.assertIn("stopped cleanly", node.log_text())

    def test_unstarted_placed_task_is_handed_back_without_charging_an_attempt(self):
        secret = keygen(os.path.join(self.workdir, "cluster.secret"))
        common = ["--secret", secret, "--gossip-period", PERIOD]
        n1 = self.new_node(*common, name="n1", secret=secret)
        # one slot: while n2 runs its own task, a task placed there waits
        n2 = self.new_node(*(common + ["--seeds", n1.addr, "--tags", "t", "--workers", "1",
                                       "--prefetch", "1", "--shutdown-grace", "60s"]),
                           name="n2", secret=secret)
        n3 = self.new_node(*(common + ["--seeds", n1.addr, "--tags", "t", "--workers", "2",
                                       "--prefetch", "1"]),
                           name="n3", secret=secret)

        def joined():
            v = n1.members()
            return (set(v) == {"n1", "n2", "n3"}
                    and all(m["state"] == "alive" for m in v.values())
                    and all("t" in v[n]["tags"] for n in ("n2", "n3")))
        wait_until(joined, 15, "n1 sees n2 and n3 alive with tag t")

        # long enough that the fan-out is placed while it still runs
        own = task_id(n2.submit("sleep", payload=str(4 * SLEEP_MS)))
        self.wait_task(n2, own, states=("running",), timeout_s=15)

        # n3 takes two, n2 (one free slot in n1's eyes) one, one waits at n1
        count = 4
        path = os.path.join(self.workdir, "sleeps.txt")
        with open(path, "w") as f:
            f.write(("%d\n" % SLEEP_MS) * count)
        fanout = self.background_ctl(n1, "fanout", "--timeout", "60s", "submit", "sleep",
                                     "--fanout", path, "--require", "t")

        def placed_on_n2():
            if n2.status()["queued"] < 1:
                return None
            rc, out, err = n1.ctl("tasks")
            if rc != 0:
                return None
            on_n2 = [t for t in task_list(out) if t.get("node") == "n2"]
            return on_n2 or None
        on_n2 = wait_until(placed_on_n2, 15, "a fan-out task placed on n2, queued there")
        self.assertEqual(len(on_n2), 1, on_n2)
        handed = task_id(on_n2[0])

        n2.sigterm()
        rc, out, err = fanout()
        self.assertEqual(rc, EXIT_OK, "%r %s" % (out, err))
        results = task_list(out)
        self.assertEqual(len(results), count, results)
        for r in results:
            self.assertEqual(task_state(r), "succeeded", r)
            self.assertEqual(r["attempts"], 1, "an attempt was charged: %r" % r)
        back = [r for r in results if task_id(r) == handed]
        self.assertEqual(len(back), 1, results)
        self.assertEqual(back[0]["node"], "n3", "the handed-back task ran on %r" % back[0])
        self.assertEqual(n2.wait_exit(), 0, n2.log_tail())
        self.assertIn("stopped cleanly", n2.log_text())


if __name__ == "__main__":
    unittest.main(verbosity=2)
