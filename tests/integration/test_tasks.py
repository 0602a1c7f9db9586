"""test_tasks.py - tasks on one real chorusd, driven through clusterctl.

Covers: submit/await, fire-and-forget + wait, ordered fan-out (1,000 sha256
checked against hashlib), --max-concurrency, status counters, listing by
state, one task's status, cancel (queued and running), supervision of
crashing workers (temporary and transient), timeouts, exec (allowlisted,
exit code kept, refused), plugins and unknown handlers.
"""

import hashlib
import os
import time
import unittest

from harness import (EXIT_REFUSED, EXIT_TASK_FAILED, PLUGIN_UPPER, NodeTestCase, pool, task_id,
                     task_list, task_state)


# The node stamps a task's start with its loop iteration's clock reading and
# a result with a fresh one, so a task dispatched in the iteration that saw
# its predecessor finish may show a start a millisecond before that finish.
STAMP_SLACK_MS = 5


def max_overlap(results):
    """The largest number of tasks whose [started_ms, finished_ms) overlap
    (by more than STAMP_SLACK_MS)."""
    events = []
    for r in results:
        events.append((r["started_ms"], 1))
        events.append((r["finished_ms"] - STAMP_SLACK_MS, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same ms
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


class TestTasks(NodeTestCase):

    def test_submit_wait_returns_the_echoed_payload(self):
        node = self.new_node()
        r = node.submit("echo", "--wait", payload="hello, chorus")
        self.assertEqual(task_state(r), "succeeded")
        self.assertEqual(r["output"], "hello, chorus")
        self.assertEqual(r["handler"], "echo")
        self.assertEqual(r["attempts"], 1)

    def test_fire_and_forget_then_wait(self):
        node = self.new_node()
        ack = node.submit("sleep", payload="200")
        tid = task_id(ack)
        self.assertGreater(tid, 0)
        rc, r, err = node.ctl("wait", tid, "--timeout", "10s")
        self.assertEqual(rc, 0, err)
        self.assertEqual(task_id(r), tid)
        self.assertEqual(task_state(r), "succeeded")
        self.assertGreaterEqual(r["finished_ms"] - r["started_ms"], 190)

    def test_fanout_of_1000_sha256_keeps_input_order(self):
        node = self.new_node("--workers", "2")
        lines = ["payload-%d-%s" % (i, "x" * (i % 7)) for i in range(1000)]
        path = os.path.join(self.workdir, "lines.txt")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        rc, out, err = node.ctl("submit", "sha256", "--fanout", path, timeout_s=60)
        self.assertEqual(rc, 0, err)
        results = task_list(out)
        self.assertEqual(len(results), 1000)
        for i, (line, r) in enumerate(zip(lines, results)):
            self.assertEqual(r["index"], i)
            self.assertEqual(task_state(r), "succeeded", r)
            self.assertEqual(r["output"], hashlib.sha256(line.encode()).hexdigest(),
                             "result %d is not the digest of line %d" % (i, i))
        self.assertEqual(len({task_id(r) for r in results}), 1000)
        self.assertEqual(len({r["batch_id"] for r in results}), 1)

    def test_fanout_max_concurrency_bounds_running_tasks(self):
        node = self.new_node("--workers", "4")
        path = os.path.join(self.workdir, "sleeps.txt")
        with open(path, "w") as f:
            f.write("250\n" * 6)
        t0 = time.monotonic()
        rc, out, err = node.ctl("submit", "sleep", "--fanout", path, "--max-concurrency", "2")
        elapsed = time.monotonic() - t0
        self.assertEqual(rc, 0, err)
        results = task_list(out)
        self.assertEqual([task_state(r) for r in results], ["succeeded"] * 6)
        self.assertLessEqual(max_overlap(results), 2, results)
        # 6 tasks of 250 ms, 2 at a time: at least 3 rounds
        self.assertGreaterEqual(elapsed, 0.7)

    def test_status_counters_increase(self):
        node = self.new_node()
        before = node.status()
        for i in range(3):
            node.submit("echo", "--wait", payload="c%d" % i)
        node.submit("fail", "--wait", payload="on purpose", expect_rc=EXIT_TASK_FAILED)
        after = node.status()
        self.assertEqual(after["submitted"] - before["submitted"], 4)
        self.assertEqual(after["succeeded"] - before["succeeded"], 3)
        self.assertEqual(after["failed"] - before["failed"], 1)
        self.assertIn("echo", after["handlers"])
        self.assertEqual(after["name"], node.name)

    def test_tasks_by_state_and_status_of_one_task(self):
        node = self.new_node()
        ok_ids = [task_id(node.submit("echo", "--wait", payload="ok%d" % i)) for i in range(3)]
        bad = node.submit("fail", "--wait", payload="boom", expect_rc=EXIT_TASK_FAILED)
        rc, out, err = node.ctl("tasks", "--state", "succeeded", "--limit", "100")
        self.assertEqual(rc, 0, err)
        listed = task_list(out)
        self.assertTrue(all(task_state(t) == "succeeded" for t in listed), listed)
        self.assertTrue(set(ok_ids) <= {task_id(t) for t in listed})
        self.assertNotIn(task_id(bad), {task_id(t) for t in listed})
        # newest first
        ids = [task_id(t) for t in listed]
        self.assertEqual(ids, sorted(ids, reverse=True))

        t = node.task(ok_ids[1])
        self.assertEqual(task_id(t), ok_ids[1])
        self.assertEqual(task_state(t), "succeeded")
        self.assertEqual(t["output"], "ok1")
        self.assertEqual(t["handler"], "echo")
        self.assertEqual(t["node"], node.name)
        t = node.task(task_id(bad))
        self.assertEqual(task_state(t), "failed")
        self.assertIn("boom", t["error"])
        rc, _, err = node.ctl("status", 999999)
        self.assertEqual(rc, 5, err)

    def test_cancel_queued_and_running_tasks(self):
        node = self.new_node("--workers", "1", "--prefetch", "1")
        running = task_id(node.submit("sleep", payload="5000"))
        queued = task_id(node.submit("sleep", payload="5000"))
        self.wait_task(node, running, states=("running",), timeout_s=10)
        rc, out, err = node.ctl("cancel", queued)
        self.assertEqual(rc, 0, err)
        self.assertEqual(task_state(self.wait_task(node, queued, timeout_s=10)), "cancelled")
        rc, out, err = node.ctl("cancel", running)
        self.assertEqual(rc, 0, err)
        cancelled = self.wait_task(node, running, timeout_s=10)
        self.assertEqual(task_state(cancelled), "cancelled")
        # the worker running it was stopped: by the node's own clock, a new
        # task is done long before the 5 s sleep would have ended
        r = node.submit("echo", "--wait", payload="after cancel")
        self.assertEqual(r["output"], "after cancel")
        self.assertLess(r["finished_ms"], cancelled["started_ms"] + 4000)

    def test_crash_temporary_fails_and_pool_restarts(self):
        node = self.new_node("--workers", "2")
        r = node.submit("crash", "--wait", payload="", expect_rc=EXIT_TASK_FAILED)
        self.assertEqual(task_state(r), "failed")
        self.assertEqual(r["attempts"], 1)
        st = self.wait_status(node, lambda s: pool(s)["restarts"] >= 1 and pool(s)["alive"] == 2,
                              "default pool restarted and back to 2 alive workers")
        self.assertFalse(pool(st)["degraded"])
        r = node.submit("echo", "--wait", payload="still here")
        self.assertEqual(r["output"], "still here")

    def test_crash_transient_is_retried_up_to_max_attempts(self):
        node = self.new_node("--workers", "2")
        before = node.status()
        r = node.submit("crash", "--transient", "--retries", "3", "--backoff", "50ms", "--wait",
                        payload="", expect_rc=EXIT_TASK_FAILED)
        self.assertEqual(task_state(r), "failed")
        self.assertEqual(r["attempts"], 3)
        after = self.wait_status(node, lambda s: pool(s)["alive"] == 2, "workers back")
        self.assertEqual(after["retried"] - before["retried"], 2)
        self.assertGreaterEqual(pool(after)["restarts"], 3)

    def test_timeout_kills_the_task_and_the_worker_is_replaced(self):
        node = self.new_node("--workers", "1")
        r = node.submit("sleep", "--timeout", "300ms", "--wait", payload="5000",
                        expect_rc=EXIT_TASK_FAILED)
        self.assertEqual(task_state(r), "timed_out")
        # by the node's own clock: ended at the timeout, not after 5 s
        self.assertGreaterEqual(r["finished_ms"] - r["started_ms"], 300)
        self.assertLess(r["finished_ms"] - r["started_ms"], 4000)
        # one worker only: the next task needs the killed worker's successor
        e = node.submit("echo", "--wait", payload="next")
        self.assertEqual(e["output"], "next")
        self.assertLess(e["finished_ms"], r["started_ms"] + 4500)
        self.assertGreaterEqual(node.status()["timed_out"], 1)

    def test_exec_allowlisted_and_refused(self):
        node = self.new_node("--exec-allow", "/bin/cat", "--exec-allow", "/bin/sh")
        rc, r, err = node.ctl("submit", "exec", "-", "--wait", "--arg", "/bin/cat",
                              input="stdin goes\nthrough cat\n")
        self.assertEqual(rc, 0, err)
        self.assertEqual(task_state(r), "succeeded")
        self.assertEqual(r["output"], "stdin goes\nthrough cat\n")
        self.assertEqual(r["exit_code"], 0)

        rc, r, err = node.ctl("submit", "exec", "--wait", "--", "/bin/sh", "-c", "exit 3")
        self.assertEqual(rc, EXIT_TASK_FAILED, err)
        self.assertEqual(task_state(r), "failed")
        self.assertEqual(r["exit_code"], 3)

        rc, out, err = node.ctl("submit", "exec", "--wait", "--arg", "/bin/echo", "--arg", "hi")
        self.assertEqual(rc, EXIT_REFUSED, (out, err))
        self.assertIn("/bin/echo", err)
        self.assertIn("allowlist", err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)

    def test_plugin_handler_and_unknown_handler(self):
        node = self.new_node("--plugin", PLUGIN_UPPER)
        r = node.submit("upper", "--wait", payload="hello, plugin")
        self.assertEqual(r["output"], "HELLO, PLUGIN")
        self.assertIn("upper", node.status()["handlers"])

        rc, out, err = node.ctl("submit", "no_such_handler", "x", "--wait")
        self.assertEqual(rc, EXIT_REFUSED, (out, err))
        self.assertIn("no_such_handler", err)
        for known in ("echo", "sleep", "sha256", "upper"):
            self.assertIn(known, err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
