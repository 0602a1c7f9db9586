"""test_node.py - node-level settings on a real chorusd: result retention,
JSON logs, named pools, one node per data dir, protocol, a degraded pool in
status.

Each test waits on conditions with deadlines (harness.wait_until)."""

import json
import os
import unittest

from harness import EXIT_TASK_FAILED, NodeTestCase, pool, task_id, task_state, wait_until


class TestNode(NodeTestCase):

    def test_results_expire_after_result_ttl(self):
        node = self.new_node("--result-ttl", "1s")
        r = node.submit("echo", "--wait", payload="short-lived")
        tid = task_id(r)
        self.assertEqual(task_state(r), "succeeded")
        # right after: still there
        self.assertEqual(task_state(node.task(tid)), "succeeded")

        def gone():
            rc, _, err = node.ctl("status", tid)
            return rc == 5 and "no task" in err
        wait_until(gone, 15, "task %d purged after its 1 s retention" % tid)

    def test_json_log_lines_parse_and_carry_the_fields(self):
        node = self.new_node("--log-format", "json")
        node.submit("nope", payload="x", expect_rc=6)  # logs a warning too
        lines = [l for l in node.log_lines_since_last_start() if l.strip()]
        self.assertGreater(len(lines), 3)
        levels = set()
        for l in lines:
            obj = json.loads(l)
            for key in ("ts", "level", "component", "msg"):
                self.assertIn(key, obj, l)
            self.assertRegex(obj["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            levels.add(obj["level"])
        self.assertIn("info", levels)
        self.assertIn("warn", levels)

    def test_named_pool_throttles_its_handlers_only(self):
        node = self.new_node("--pool", "slow:1:sleep", "--workers", "2")
        st = node.status()
        pools = {p["name"]: p for p in st["pools"]}
        self.assertEqual(pools["slow"]["workers"], 1)
        self.assertEqual(pools["slow"]["handlers"], ["sleep"])
        # two sleeps share the one slow worker: they run one after the other
        a = task_id(node.submit("sleep", payload="1200"))
        b = task_id(node.submit("sleep", payload="1200"))
        # the default pool is not held up by them: the echo is done before
        # the second sleep even starts
        e = node.submit("echo", "--wait", payload="not blocked")
        self.assertEqual(task_state(e), "succeeded")
        for tid in (a, b):
            rc, _, err = node.ctl("wait", tid, "--timeout", "20s")
            self.assertEqual(rc, 0, err)
        ra, rb = node.task(a), node.task(b)
        first, second = sorted((ra, rb), key=lambda r: r["started_ms"])
        self.assertGreaterEqual(second["started_ms"], first["finished_ms"] - 5,
                                "the 1-worker pool ran two sleeps at once")
        self.assertLess(e["finished_ms"], second["started_ms"],
                        "the echo waited for the slow pool")

    def test_a_second_node_on_the_same_data_dir_is_refused(self):
        node = self.new_node()
        rc, _, err = self.run_chorusd("--data-dir", node.data_dir, "--listen", "tcp://127.0.0.1:1")
        self.assertNotEqual(rc, 0)
        self.assertIn("in use by another chorusd", err)
        # the first one is unaffected
        self.assertEqual(task_state(node.submit("echo", "--wait", payload="still here")),
                         "succeeded")

    def test_pool_whose_workers_keep_crashing_is_shown_degraded(self):
        # [supervisor] intensity = 1: a second restart within the period is
        # beyond the limit; the period is long so both crashes fall in it
        conf = os.path.join(self.workdir, "chorus.conf")
        with open(conf, "w") as f:
            f.write("[supervisor]\nintensity = 1\nperiod = 10m\n")
        node = self.new_node("--config", conf, "--workers", "1")
        self.assertFalse(pool(node.status())["degraded"])
        for i in range(3):
            r = node.submit("crash", "--wait", expect_rc=EXIT_TASK_FAILED)
            self.assertEqual(task_state(r), "failed", r)
        st = self.wait_status(node, lambda s: pool(s)["degraded"], "the default pool degraded")
        self.assertGreaterEqual(pool(st)["restarts"], 2, st)
        # a degraded pool still gets its (spaced) restarts and serves
        r = node.submit("echo", "--wait", payload="still served")
        self.assertEqual(r["output"], "still served")
        rc, text, err = node.ctl("status", json=False)
        self.assertEqual(rc, 0, err)
        header = [l for l in text.splitlines() if l.startswith("POOL")]
        row = [l for l in text.splitlines() if l.startswith("default ")]
        self.assertEqual(len(header), 1, text)
        self.assertIn("DEGRADED", header[0])
        self.assertEqual(len(row), 1, text)
        self.assertEqual(row[0].split()[header[0].split().index("DEGRADED")], "yes", text)

    def test_help_and_version(self):
        rc, out, err = self.run_chorusd("--help")
        self.assertEqual(rc, 0, err)
        for flag in ("--seeds", "--tags", "--gossip-period", "--workers", "--exec-allow",
                     "--synchronous", "--log-format"):
            self.assertIn(flag, out)
        rc, out, err = self.run_chorusd("--version")
        self.assertEqual(rc, 0, err)
        self.assertIn("chorusd", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
