"""test_place_batch.py - placement in batches (PlaceReq, docs/design.md
"Placement in batches").

Three real nodes on one machine, n1 the coordinator:

1. a fan-out of 20,000 echo tasks: every result arrives exactly once, in
   input order, with its own payload, and every member ran a share (the
   attempts travelled as PlaceReq frames and came back as PlaceResp);
2. a member stopped with SIGSTOP mid fan-out (transient tasks): the credit
   (its slots) stops the coordinator from piling work on it, so once it is
   declared dead at most its slots of tasks are placed again, and every task
   still ends exactly once, succeeded.
"""

import os
import signal
import time
import unittest

import test_cluster
from harness import EXIT_OK, NodeTestCase, task_id, task_list, task_state, wait_until



class TestPlaceBatch(NodeTestCase):

    def setUp(self):
        super().setUp()
        self.secret = test_cluster.keygen(os.path.join(self.workdir, "cluster.secret"))
        self.t0 = time.monotonic()

    # test_cluster's helpers (not its tests)
    locals().update({k: v for k, v in vars(test_cluster.TestCluster).items()
                     if not k.startswith("test_") and k != "setUp"})

    def test_fanout_of_20000_exactly_once_in_order(self):
        nodes = self.cluster(3)
        self.wait_placement_warm(nodes[0], nodes)
        count = 20000
        lines = ["p-%d" % i for i in range(count)]
        path = self.lines_file("echo.txt", lines)
        t0 = time.monotonic()
        rc, out, err = nodes[0].ctl("submit", "echo", "--fanout", path, timeout_s=150)
        took = time.monotonic() - t0
        self.assertEqual(rc, EXIT_OK, err)
        results = task_list(out)
        self.check_fanout_order(results, count)
        shares = {}
        for i, r in enumerate(results):
            self.assertEqual(task_state(r), "succeeded", r)
            self.assertEqual(r["output"], lines[i], "result %d is not line %d" % (i, i))
            self.assertEqual(r["attempts"], 1, r)
            shares[r["node"]] = shares.get(r["node"], 0) + 1
        self.assertEqual(set(shares), {n.name for n in nodes}, shares)
        self.note("20,000 echo in %.1f s (%.0f/s), shares %r" % (took, count / took, shares))

    def test_stopped_member_gets_no_more_than_its_slots(self):
        nodes = self.cluster(3)
        coord, victim = nodes[0], nodes[2]
        capacity = test_cluster.WORKERS * test_cluster.PREFETCH
        count = 300
        p, out_path, err_path = self.fanout_in_background(coord, "stopped", count,
                                                          ("--transient",))
        base = coord.status()["succeeded"]
        wait_until(lambda: coord.status()["succeeded"] - base >= count // 10, 30,
                   "a tenth of the fan-out done")
        os.kill(victim.proc.pid, signal.SIGSTOP)
        self.addCleanup(lambda: victim.running() and os.kill(victim.proc.pid, signal.SIGCONT))
        try:
            rc = p.wait(timeout=90)
        except Exception:
            self.fail("the fan-out did not finish with %s stopped" % victim.name)
        os.kill(victim.proc.pid, signal.SIGCONT)
        with open(out_path) as f:
            import json
            results = task_list(json.loads(f.read()))
        self.assertEqual(rc, EXIT_OK)
        self.check_fanout_order(results, count)
        self.assertEqual([r for r in results if task_state(r) != "succeeded"], [])
        replaced = [r for r in results if r["attempts"] > 1]
        self.assertLessEqual(len(replaced), capacity,
                             "more placed again than %s could hold" % victim.name)
        self.assertEqual(len({task_id(r) for r in results}), count)
        self.note("%d placed again after SIGSTOP of %s (its slots: %d)"
                  % (len(replaced), victim.name, capacity))


if __name__ == "__main__":
    unittest.main(verbosity=2)
