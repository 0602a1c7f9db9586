"""test_remote_outcomes.py - how a task that ran on another member ends, as
its coordinator reports it.

Two real nodes share a secret: n1, the coordinator (loads the example plugin,
so it knows the `upper` handler), and n2, tagged `remote`, without the plugin.
Every task is submitted to n1 with `--require remote`, so placement must put
it on n2 (docs/design.md, "Cluster"). For each outcome the result at n1 must
name n2 as the node and carry the right state and error:

1. cancel at n1 of a task running on n2: `cancelled`, and n2 stops running it;
2. a crash on n2 (handler `crash`): `failed`, the worker's death as the error,
   and n2 keeps serving with a restarted worker;
3. a timeout on n2 (`sleep` with --timeout): `timed_out`;
4. a handler n2 does not have (`upper`, known to n1 only): `failed`, the error
   names n2 and the handler.
"""

import os
import unittest

from harness import (EXIT_OK, EXIT_TASK_FAILED, PLUGIN_UPPER, NodeTestCase, keygen, pool,
                     task_id, task_state, wait_until)

PERIOD = "100ms"
TAG = "remote"
JOIN_S = 15


class TestRemoteOutcomes(NodeTestCase):

    def setUp(self):
        super().setUp()
        secret = keygen(os.path.join(self.workdir, "cluster.secret"))
        common = ["--secret", secret, "--gossip-period", PERIOD, "--workers", "2"]
        self.coord = self.new_node(*(common + ["--plugin", PLUGIN_UPPER]), name="n1",
                                   secret=secret)
        self.remote = self.new_node(*(common + ["--seeds", self.coord.addr, "--tags", TAG]),
                                    name="n2", secret=secret)

        def remote_tagged_and_alive():
            m = self.coord.members().get("n2")
            return m is not None and m["state"] == "alive" and TAG in m["tags"]
        wait_until(remote_tagged_and_alive, JOIN_S, "n1 sees n2 alive with tag %s" % TAG)

    def submit_remote(self, *args, expect_rc):
        rc, out, err = self.coord.ctl("submit", *(list(args) + ["--require", TAG, "--wait"]))
        self.assertEqual(rc, expect_rc, (out, err))
        self.assertIsInstance(out, dict, (out, err))
        self.assertEqual(out.get("node"), "n2", out)
        self.assertEqual(out.get("attempts"), 1, out)
        return out

    def test_cancel_of_a_task_running_on_another_member(self):
        rc, ack, err = self.coord.ctl("submit", "sleep", "60000", "--require", TAG)
        self.assertEqual(rc, EXIT_OK, err)
        tid = task_id(ack)
        t = self.wait_task(self.coord, tid, states=("running",), timeout_s=15)
        self.assertEqual(t["node"], "n2", t)
        self.wait_status(self.remote, lambda s: pool(s)["busy"] == 1, "n2 runs the sleep")

        rc, out, err = self.coord.ctl("cancel", tid)
        self.assertEqual(rc, EXIT_OK, (out, err))
        t = self.wait_task(self.coord, tid, timeout_s=15)
        self.assertEqual(task_state(t), "cancelled", t)
        self.assertEqual(t["node"], "n2", t)
        # the member really stopped it: its worker is free long before 60 s
        self.wait_status(self.remote, lambda s: pool(s)["busy"] == 0 and s["running"] == 0,
                         "n2 no longer runs the cancelled sleep", timeout_s=20)
        r = self.submit_remote("echo", "after the cancel", expect_rc=EXIT_OK)
        self.assertEqual(r["output"], "after the cancel")

    def test_crash_on_another_member_is_a_failure_naming_it(self):
        restarts = pool(self.remote.status())["restarts"]
        r = self.submit_remote("crash", expect_rc=EXIT_TASK_FAILED)
        self.assertEqual(task_state(r), "failed", r)
        self.assertIn("killed by signal", r["error"])
        # the member's supervisor restarted the worker, and it keeps serving
        self.wait_status(self.remote, lambda s: pool(s)["restarts"] > restarts
                         and pool(s)["alive"] == pool(s)["workers"], "n2 restarted its worker")
        r = self.submit_remote("echo", "after the crash", expect_rc=EXIT_OK)
        self.assertEqual(r["output"], "after the crash")

    def test_timeout_on_another_member_is_timed_out(self):
        r = self.submit_remote("sleep", "60000", "--timeout", "500ms", expect_rc=EXIT_TASK_FAILED)
        self.assertEqual(task_state(r), "timed_out", r)
        self.assertIn("timed out", r["error"])
        self.assertLess(r["finished_ms"] - r["started_ms"], 30000, r)
        self.wait_status(self.remote, lambda s: pool(s)["busy"] == 0,
                         "n2 stopped the timed-out sleep", timeout_s=20)

    def test_handler_unknown_on_the_member_fails_naming_it(self):
        # n1 has the plugin: there the handler runs
        rc, local, err = self.coord.ctl("submit", "upper", "abc", "--wait")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertEqual(local["output"], "ABC")
        r = self.submit_remote("upper", "abc", expect_rc=EXIT_TASK_FAILED)
        self.assertEqual(task_state(r), "failed", r)
        self.assertIn("n2", r["error"])
        self.assertIn("unknown handler", r["error"])
        self.assertIn("upper", r["error"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
