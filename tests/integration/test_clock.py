"""test_clock.py - a step of the wall clock expires nothing.

The node reads both clocks once per loop iteration and gives every timeout,
deadline, backoff and suspicion the monotonic one (node/lib/clock.h); the
wall clock is only what users see. Here chorusd runs under libfaketime
(Debian's libfaketime) with DONT_FAKE_MONOTONIC=1 and a timestamp file, so the
test steps the node's wall clock by hours while its monotonic clock runs on:

1. a running task with a 30 s timeout and a `wait` parked on it survive a
   +2 h and then a -2 h step: the task (`exec /bin/cat FIFO`, which runs
   until the test writes to the FIFO, since libfaketime also bends the
   workers' sleeps) is still running after both steps, and succeeds once
   released, on its first attempt; the wait is answered then, not before;
2. in a 3-node cluster, a +1 h step on one member makes no member suspect or
   dead in any view (SWIM's suspicion runs on the monotonic clock);
3. a cache replica whose wall clock is 5 s behind refuses the copies the
   others stamp (an HLC version too far ahead of its clock): it names them
   refused, so a write at ALL is not acknowledged (exit 3) while QUORUM
   writes go on; before, the refused copies counted as held.

Skips with one line when libfaketime is not installed.
"""

import os
import subprocess
import sys
import threading
import time
import unittest

from harness import CHORUSD, Node, NodeTestCase, keygen, task_id, task_state, wait_until

LIBFAKETIME = None
for cand in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
             "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
             "/usr/lib/faketime/libfaketimeMT.so.1"):
    if os.path.exists(cand):
        LIBFAKETIME = cand
        break


class FakeClockNode(Node):
    """A node whose wall clock the test steps (its monotonic clock is real)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.clock_file = os.path.join(self.workdir, self.name + ".faketime")
        self.set_offset("+0")

    def set_offset(self, text):
        tmp = self.clock_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, self.clock_file)

    def command(self):
        env = ["LD_PRELOAD=" + LIBFAKETIME, "FAKETIME_TIMESTAMP_FILE=" + self.clock_file,
               "FAKETIME_NO_CACHE=1", "DONT_FAKE_MONOTONIC=1",
               # ASan wants to be first in the library list; faketime is
               # preloaded before it here on purpose
               "ASAN_OPTIONS=" + (os.environ.get("ASAN_OPTIONS", "") +
                                  ":verify_asan_link_order=0").lstrip(":")]
        return ["env"] + env + super().command()


def node_wall_ms(node):
    return int(node.status()["now_ms"])


@unittest.skipIf(LIBFAKETIME is None, "libfaketime not installed (apt-get install libfaketime)")
class TestWallClockStep(NodeTestCase):

    def fake_node(self, *args, name=None, secret=None):
        node = FakeClockNode(self.workdir, name=name or "n%d" % (len(self.nodes) + 1),
                             args=args, secret=secret)
        self.nodes.append(node)
        self.addCleanup(node.cleanup)
        node.start()
        return node

    def step(self, node, offset, expect_ahead_s):
        """Sets the node's wall clock offset and waits until status shows it."""
        node.set_offset(offset)
        real = time.time() * 1000
        wait_until(lambda: abs(node_wall_ms(node) - real - expect_ahead_s * 1000) < 600_000,
                   10, "the node's wall clock at %s" % offset)

    def test_running_task_and_parked_wait_survive_steps(self):
        n = self.fake_node("--workers", "2", "--exec-allow", "/bin/cat")
        fifo = os.path.join(self.workdir, "release")
        os.mkfifo(fifo)
        tid = task_id(n.submit("exec", "--arg", "/bin/cat", "--arg", fifo, "--timeout", "30s"))
        self.wait_task(n, tid, states=("running",), timeout_s=10)
        # a parked wait on the same task, from another client
        waited = {}

        def wait_it():
            waited["res"] = n.ctl("wait", tid, "--timeout", "40s", timeout_s=60)
        th = threading.Thread(target=wait_it)
        th.start()
        t0 = time.monotonic()
        self.step(n, "+2h", 7200)
        self.step(n, "-2h", -7200)
        # both steps seen by the node's loop: nothing expired
        t = n.task(tid)
        self.assertEqual(task_state(t), "running", t)
        self.assertTrue(th.is_alive(), "the parked wait was answered at a clock step: %r"
                        % (waited.get("res"),))
        with open(fifo, "w") as f:
            f.write("done\n")
        th.join(60)
        elapsed = time.monotonic() - t0
        rc, out, err = waited["res"]
        self.assertEqual(rc, 0, "wait: rc=%s out=%r err=%s" % (rc, out, err))
        self.assertEqual(task_state(out), "succeeded", out)
        t = n.task(tid)
        self.assertEqual(task_state(t), "succeeded", t)
        self.assertEqual(t.get("attempts"), 1, t)
        # the wait ended when the task did, not at a stepped deadline
        self.assertLess(elapsed, 30, "the wait took %.1f s" % elapsed)

    def test_a_replica_that_refuses_a_copy_does_not_acknowledge_it(self):
        secret = keygen(os.path.join(self.workdir, "cluster.secret"))
        common = ["--secret", secret, "--gossip-period", "100ms"]
        n1 = self.new_node(*common, name="n1", secret=secret)
        slow = self.fake_node(*common, "--seeds", n1.addr, name="slow", secret=secret)
        n3 = self.new_node(*common, "--seeds", n1.addr, name="n3", secret=secret)
        nodes = [n1, slow, n3]

        def maps_agree():
            led = []
            for x in nodes:
                rc, out, _ = x.ctl("cache", "stats", "--cache", "default")
                if rc != 0:
                    return False
                led.append(out[0]["partitions_primary"])
            return sum(led) == 271 and all(0 < k < 271 for k in led)
        wait_until(maps_agree, 30, "every partition map with three members")
        # behind by more than the cache's drift bound (500 ms), well within
        # the links' HELLO skew window, so the links stay up
        self.step(slow, "-5", -5)
        results = {"all": [], "quorum": []}
        for i in range(30):
            for level in results:
                rc, _, err = n1.ctl("cache", "put", "%s-%d" % (level, i), "v",
                                    "--consistency", level, json=False, timeout_s=30)
                results[level].append((rc, err.strip()))
        self.assertTrue(all(rc == 0 for rc, _ in results["quorum"]), results["quorum"])
        refused = [e for rc, e in results["all"] if rc == 3]
        # keys the slow node leads are stamped by its own (late) clock and
        # taken by the others: only the others' keys fail at ALL
        self.assertGreater(len(refused), 0, results["all"])
        self.assertTrue(all("replica" in e for e in refused), refused)
        self.assertEqual(len(refused), len(results["all"]) - sum(1 for rc, _ in results["all"]
                                                                 if rc == 0))
        self.assertIn("ahead of this node's clock was refused", slow.log_tail(400))

    def test_cluster_member_clock_step_suspects_nobody(self):
        secret = keygen(os.path.join(self.workdir, "cluster.secret"))
        period = "200ms"
        seed = self.new_node("--secret", secret, "--gossip-period", period, name="seed",
                             secret=secret)
        jumper = self.fake_node("--secret", secret, "--gossip-period", period, "--seeds",
                                seed.addr, name="jumper", secret=secret)
        third = self.new_node("--secret", secret, "--gossip-period", period, "--seeds",
                              seed.addr, name="third", secret=secret)
        nodes = [seed, jumper, third]

        def all_alive():
            views = [n.members() for n in nodes]
            return all(len(v) == 3 and all(m["state"] == "alive" for m in v.values())
                       for v in views)
        wait_until(all_alive, 20, "three alive members in every view")
        self.step(jumper, "+1h", 3600)
        # 25 periods: a clock-driven suspicion would expire within a few
        end = time.monotonic() + 5.0
        while time.monotonic() < end:
            for n in nodes:
                for name, m in n.members().items():
                    self.assertNotIn(m["state"], ("dead", "left"),
                                     "%s sees %s %s after the step" % (n.name, name, m["state"]))
            time.sleep(0.2)
        wait_until(all_alive, 20, "three alive members in every view after the step")


if __name__ == "__main__":
    unittest.main()
