"""test_recovery.py - what survives kill -9 and SIGTERM.

1. Persist before promise: 2,000 individual fire-and-forget submits; chorusd
   is killed with SIGKILL half-way; after a restart on the same data dir every
   task whose id was acknowledged reaches a final state (queued ones run; a
   temporary one that was running may end `lost`) and none vanishes.
2. Drain: SIGTERM while a task runs -> chorusd waits for it, exits 0, and
   after a restart the task is `succeeded`.
"""

import subprocess
import time
import unittest

from harness import (FINAL_STATES, FRAMETOOL, NodeTestCase, task_id, task_list, task_state,
                     wait_until)

SUBMITS = 2000
KILL_AFTER = 1000   # acknowledged submits before the kill -9
WORKERS = 2
PREFETCH = 2


class TestRecovery(NodeTestCase):

    def list_tasks(self, node, limit):
        rc, out, err = node.ctl("tasks", "--limit", limit)
        self.assertEqual(rc, 0, err)
        return {task_id(t): t for t in task_list(out)}

    def test_kill9_loses_no_acknowledged_task(self):
        node = self.new_node("--workers", str(WORKERS), "--prefetch", str(PREFETCH))
        submitter = subprocess.Popen(
            [FRAMETOOL, node.addr, node.secret, "submit", str(SUBMITS), "sleep", "5"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: submitter.poll() is None and submitter.kill())
        acked = []
        deadline = time.monotonic() + 40
        try:
            for line in submitter.stdout:
                if line.startswith("id "):
                    acked.append(int(line.split()[1]))
                    if len(acked) == KILL_AFTER:
                        node.kill9()
                elif line.startswith("submitted") or line.startswith("error"):
                    pass
                self.assertLess(time.monotonic(), deadline, "submitter too slow")
        finally:
            rc = submitter.wait(timeout=30)
            submitter.stdout.close()
            submit_err = submitter.stderr.read()
            submitter.stderr.close()
        self.assertGreaterEqual(len(acked), KILL_AFTER)
        self.assertLess(len(acked), SUBMITS, "the node was killed after all submits finished")
        self.assertNotEqual(rc, 0, "submits after the kill must fail: %s" % submit_err)
        self.assertEqual(len(set(acked)), len(acked), "an id was acknowledged twice")

        node.restart()
        expected = set(acked)

        def all_final():
            seen = self.list_tasks(node, len(acked) + 100)
            missing = expected - set(seen)
            open_ = [i for i in expected & set(seen) if task_state(seen[i]) not in FINAL_STATES]
            if missing:
                # a missing id is a lost promise; fail at once, not at the deadline
                self.fail("%d acknowledged task(s) vanished after kill -9, e.g. %s"
                          % (len(missing), sorted(missing)[:10]))
            return seen if not open_ else None

        seen = wait_until(all_final, 45, "every acknowledged task final after restart",
                          interval_s=0.25)
        states = {}
        for i in expected:
            states.setdefault(task_state(seen[i]), []).append(i)
        counts = {k: len(v) for k, v in states.items()}
        self.assertLessEqual(set(states), {"succeeded", "lost"}, counts)
        # only tasks handed to a worker when the node died may be lost
        self.assertLessEqual(counts.get("lost", 0), WORKERS * (1 + PREFETCH), states.get("lost"))
        for i in states.get("lost", []):
            self.assertEqual(seen[i]["attempts"], 1, seen[i])
        self.assertIn("recovered", node.log_text())
        print("\n  %d acknowledged before kill -9; after restart: %s" % (len(acked), counts),
              end=" ", flush=True)

    def test_sigterm_drains_a_running_task(self):
        node = self.new_node("--workers", "1", "--shutdown-grace", "10s")
        tid = task_id(node.submit("sleep", payload="1500"))
        t = self.wait_task(node, tid, states=("running",), timeout_s=10)
        code = node.stop(timeout_s=15)
        self.assertEqual(code, 0, node.log_tail())
        # it exited only after the task (1.5 s from its start) was done
        self.assertGreaterEqual(time.time() * 1000 - t["started_ms"], 1450)
        self.assertIn("stopped cleanly", node.log_text())

        node.restart()
        t = node.task(tid)
        self.assertEqual(task_state(t), "succeeded")
        self.assertEqual(t["attempts"], 1)
        self.assertGreaterEqual(t["finished_ms"] - t["started_ms"], 1490)


if __name__ == "__main__":
    unittest.main(verbosity=2)
