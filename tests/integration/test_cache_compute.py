"""test_cache_compute.py - the cache's get-or-compute on real nodes (issue #12;
docs/cache.md "Get-or-compute"; `clusterctl cache get-or-compute`).

The computes are `exec /bin/sh` tasks that append a line to a file when
they start, so the test counts how many times a compute ran (every node of
a test runs on this machine, so a task placed on any of them writes the
same file), then take a moment (the window in which other callers arrive)
and print a value unique to the run.

On three nodes (R = 3):
1. eight callers, spread over the three nodes, ask for one absent key at
   once: the task ran exactly once, every caller got the same value
   (at least two of them as the compute's output: they waited on it), and
   a later get on every node, and a later get-or-compute, return it
   without running anything;
2. a failing task: every caller gets the task's error (exit 1), nothing is
   stored (get: exit 5 on every node), the next call runs the task again,
   and a call with a task that succeeds stores its value;
3. a key that holds a value: get-or-compute returns it, computed false,
   and runs no task.
On one node with small bounds ([cache] value_bytes_max = 1K, compute_max =
1, compute_waiters_max = 2):
4. bad input answered with a clear line and its exit code, the node still
   serving after: no HANDLER or an empty one (2), an unknown handler, an
   exec command not allowlisted, a payload over value_bytes_max, an output
   over it (6, nothing stored), a task over its time limit (3), requests
   libchorus would not send (chorus_frametool compute-bad: no compute, an
   empty handler, a negative ttl, no key, `forwarded` from a client);
5. the bounds: while one compute runs, a compute of another key is refused
   (compute_max, exit 6), and of two more callers of the running key one
   joins and one is refused (compute_waiters_max, exit 6);
6. a node stopped (SIGTERM, a short grace) while a compute runs answers its
   caller "the node is stopping" (exit 6) and exits 0 (under ASan: with no
   leak of the compute it gave up);
7. a compute whose task waits for a worker longer than the primary allows
   (its time limit plus as long again, at least 30 s: a 300-ms task is
   given 30.3 s) is given up: the caller gets a timeout (exit 3) naming the
   wait, the task is cancelled, nothing is stored.
"""

import concurrent.futures
import os
import sys
import time
import unittest

from harness import (EXIT_OK, EXIT_REFUSED, EXIT_TASK_FAILED, EXIT_UNREACHABLE, EXIT_USAGE,
                     NodeTestCase, keygen, wait_until)

EXIT_NOT_FOUND = 5
PERIOD = "100ms"
CONVERGE_S = 20.0
PARTITIONS = 271
CALLERS = 8
COMPUTE_S = 2           # how long the test's tasks take after they start
VALUE_BYTES_MAX = 1024

CLUSTER_CONFIG = """[cache]
value_bytes_max = 1K
"""

BOUNDS_CONFIG = """[cache]
value_bytes_max = 1K
compute_max = 1
compute_waiters_max = 2
"""


def write_config(workdir, text):
    path = os.path.join(workdir, "chorus.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def shell(script):
    """The exec arguments of a `/bin/sh -c SCRIPT` task."""
    return ["--arg", "/bin/sh", "--arg", "-c", "--arg", script]


class ComputeCase(NodeTestCase):

    def runs_file(self, name):
        return os.path.join(self.workdir, name + ".runs")

    def runs(self, name):
        """How many tasks appended to the runs file `name`."""
        try:
            with open(self.runs_file(name)) as f:
                return len(f.read().splitlines())
        except FileNotFoundError:
            return 0

    def counted(self, name, then, seconds=COMPUTE_S):
        """A script that records a run in the runs file `name`, lets other
        callers arrive for `seconds`, then does `then`."""
        return "echo run >> '%s'; sleep %d; %s" % (self.runs_file(name), seconds, then)

    def compute(self, node, key, *args, json=True, timeout_s=60):
        """clusterctl [--json] cache get-or-compute KEY ARGS on node:
        (exit code, stdout (parsed with json), stderr)."""
        return node.ctl("cache", "get-or-compute", key, *args, json=json, timeout_s=timeout_s)

    def at_once(self, calls):
        """Runs the calls (functions) in threads, all at once; their results
        in order."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(calls)) as ex:
            futures = [ex.submit(c) for c in calls]
            return [f.result() for f in futures]


class TestComputeCluster(ComputeCase):

    def setUp(self):
        super().setUp()
        secret = keygen(os.path.join(self.workdir, "cluster.secret"))
        common = ["--secret", secret, "--gossip-period", PERIOD, "--exec-allow", "/bin/sh",
                  "--config", write_config(self.workdir, CLUSTER_CONFIG)]
        self.n = [self.new_node(*common, name="n1", secret=secret)]
        for i in (2, 3):
            self.n.append(self.new_node(*common, "--seeds", self.n[0].addr, name="n%d" % i,
                                        secret=secret))

        def maps_agree():
            led = []
            for x in self.n:
                rc, out, _ = x.ctl("cache", "stats", "--cache", "default")
                if rc != EXIT_OK:
                    return False
                led.append(out[0]["partitions_primary"])
            return sum(led) == PARTITIONS and all(0 < p < PARTITIONS for p in led)
        wait_until(maps_agree, CONVERGE_S, "every partition map with three members")

    def test_concurrent_callers_on_every_node_share_one_run(self):
        key = "report:2024"
        script = self.counted("report", "printf 'v-%s-%s' $$ $(date +%s%N)")
        t0 = time.monotonic()
        answers = self.at_once([
            (lambda i=i: self.compute(self.n[i % 3], key, "exec", *shell(script)))
            for i in range(CALLERS)])
        elapsed = time.monotonic() - t0
        for rc, out, err in answers:
            self.assertEqual(rc, EXIT_OK, err)
        values = {out["value"] for _, out, _ in answers}
        self.assertEqual(len(values), 1, "every caller got the same value: %r" % answers)
        value = values.pop()
        self.assertRegex(value, r"^v-\d+-\d+$")
        self.assertEqual(self.runs("report"), 1, "the task ran exactly once")
        computed = sum(1 for _, out, _ in answers if out["computed"])
        # callers that came while it ran waited for it; one that came after
        # the value was stored (a slow machine) got it as a plain hit
        self.assertGreaterEqual(computed, 2, "callers waited on the running compute")
        hlcs = {out["version"]["hlc"] for _, out, _ in answers}
        self.assertNotIn(0, hlcs)
        print("get-or-compute: %d callers on 3 nodes, 1 run, %d answered with its output, "
              "%.2f s in all (the task takes %d s)" % (CALLERS, computed, elapsed, COMPUTE_S),
              file=sys.stderr)
        # stored and replicated: every node reads it
        for x in self.n:
            rc, out, err = x.ctl("cache", "get", key, "--consistency", "all")
            self.assertEqual((rc, out["value"]), (EXIT_OK, value), err)
        # a later call is a hit: no run
        rc, out, err = self.compute(self.n[1], key, "exec", *shell(script))
        self.assertEqual(rc, EXIT_OK, err)
        self.assertEqual((out["value"], out["computed"]), (value, False))
        self.assertEqual(self.runs("report"), 1)

    def test_a_failing_compute_fails_every_caller_and_stores_nothing(self):
        key = "flaky"
        failing = self.counted("flaky", "echo 'no data for flaky' >&2; exit 3")
        answers = self.at_once([
            (lambda i=i: self.compute(self.n[i % 3], key, "exec", *shell(failing), json=False))
            for i in range(4)])
        for rc, out, err in answers:
            self.assertEqual(rc, EXIT_TASK_FAILED, (out, err))
            self.assertEqual(out, "")
            self.assertEqual(len(err.splitlines()), 1, err)
            self.assertIn("the compute (task ", err)
            self.assertIn("exit status 3: no data for flaky", err)
        self.assertEqual(self.runs("flaky"), 1, "one run for the four callers")
        for x in self.n:
            rc, _, err = x.ctl("cache", "get", key, "--consistency", "all")
            self.assertEqual(rc, EXIT_NOT_FOUND, "nothing stored: %s" % err)
        # the next call computes again
        rc, _, err = self.compute(self.n[2], key, "exec", *shell(failing), json=False)
        self.assertEqual(rc, EXIT_TASK_FAILED, err)
        self.assertEqual(self.runs("flaky"), 2)
        # and a task that succeeds stores its value
        rc, out, err = self.compute(self.n[0], key, "echo", "fine now", "--ttl", "1h")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertEqual((out["value"], out["computed"]), ("fine now", True))
        rc, out, err = self.n[1].ctl("cache", "ttl", key)
        self.assertEqual(rc, EXIT_OK, err)
        self.assertGreater(out["ttl_ms"], 3500 * 1000)

    def test_a_value_present_runs_no_task(self):
        rc, _, err = self.n[0].ctl("cache", "put", "held", "already here")
        self.assertEqual(rc, EXIT_OK, err)
        script = self.counted("held", "printf computed")
        for x in self.n:
            rc, out, err = self.compute(x, "held", "exec", *shell(script))
            self.assertEqual(rc, EXIT_OK, err)
            self.assertEqual((out["value"], out["computed"]), ("already here", False))
        rc, out, err = self.compute(self.n[1], "held", "exec", *shell(script), json=False)
        self.assertEqual((rc, out), (EXIT_OK, "already here"), err)
        self.assertEqual(self.runs("held"), 0)


class TestComputeOneNode(ComputeCase):

    def setUp(self):
        super().setUp()
        self.n1 = self.new_node("--exec-allow", "/bin/sh", "--config",
                                write_config(self.workdir, BOUNDS_CONFIG))

    def assertOneLine(self, err, *fragments):
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.startswith("clusterctl: "), err)
        for f in fragments:
            self.assertIn(f, err)

    def test_bad_input_is_refused_and_the_node_keeps_serving(self):
        n = self.n1
        rc, _, err = self.compute(n, "k", json=False)
        self.assertEqual(rc, EXIT_USAGE)
        self.assertIn("get-or-compute needs KEY HANDLER [PAYLOAD]", err)
        rc, _, err = self.compute(n, "k", "", json=False)
        self.assertEqual(rc, EXIT_USAGE)
        self.assertIn("HANDLER is empty", err)
        rc, _, err = self.compute(n, "k", "nope", json=False)
        self.assertEqual(rc, EXIT_REFUSED)
        self.assertOneLine(err, "unknown handler 'nope'", "known: echo")
        rc, _, err = self.compute(n, "k", "exec", "--arg", "/bin/true", json=False)
        self.assertEqual(rc, EXIT_REFUSED)
        self.assertOneLine(err, "'/bin/true' is not allowlisted")
        rc, _, err = self.compute(n, "k", "echo", "p" * (VALUE_BYTES_MAX + 1), json=False)
        self.assertEqual(rc, EXIT_REFUSED)
        self.assertOneLine(err, "payload of at most 1024 bytes", "1025 given")
        # an output over value_bytes_max: computed, not stored
        big = "head -c %d /dev/zero | tr '\\0' x" % (VALUE_BYTES_MAX + 1)
        rc, _, err = self.compute(n, "big", "exec", *shell(big), json=False)
        self.assertEqual(rc, EXIT_REFUSED)
        self.assertOneLine(err, "computed a value of 1025 bytes, but it was not stored")
        self.assertEqual(n.ctl("cache", "get", "big")[0], EXIT_NOT_FOUND)
        # a task over its time limit
        rc, _, err = self.compute(n, "slow", "sleep", "5000", "--timeout", "300ms", json=False)
        self.assertEqual(rc, EXIT_UNREACHABLE)
        self.assertOneLine(err, "the compute (task ", "timed out")
        self.assertEqual(n.ctl("cache", "get", "slow")[0], EXIT_NOT_FOUND)
        # what libchorus would not send
        rc, out, err = n.frametool("compute-bad")
        self.assertEqual(rc, 0, out + err)
        # the node still serves
        rc, out, err = self.compute(n, "k", "echo", "still here")
        self.assertEqual((rc, out["value"], out["computed"]), (EXIT_OK, "still here", True), err)
        self.assertTrue(n.running())

    def test_computes_and_waiters_are_bounded(self):
        n = self.n1
        script = self.counted("bounded", "printf first", seconds=4)
        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as ex:
            first = ex.submit(self.compute, n, "slow-key", "exec", *shell(script))
            wait_until(lambda: self.runs("bounded") == 1, 30, "the first compute to start")
            # compute_max = 1: no second compute while it runs
            rc, _, err = self.compute(n, "other-key", "echo", "x", json=False)
            self.assertEqual(rc, EXIT_REFUSED)
            self.assertOneLine(err, "1 computes are running on this node", "compute_max")
            # compute_waiters_max = 2: the first caller and one more
            more = [ex.submit(self.compute, n, "slow-key", "exec", *shell(script))
                    for _ in range(2)]
            got = [f.result() for f in more] + [first.result()]
        codes = sorted(rc for rc, _, _ in got)
        self.assertEqual(codes, [EXIT_OK, EXIT_OK, EXIT_REFUSED], got)
        refused = [err for rc, _, err in got if rc == EXIT_REFUSED][0]
        self.assertIn("compute_waiters_max", refused)
        self.assertEqual({out["value"] for rc, out, _ in got if rc == EXIT_OK}, {"first"})
        self.assertEqual(self.runs("bounded"), 1)


class TestComputeEnds(ComputeCase):

    def test_a_node_stopping_answers_the_callers_of_a_running_compute(self):
        n = self.new_node("--exec-allow", "/bin/sh", "--shutdown-grace", "300ms")
        script = self.counted("stopped", "printf late", seconds=30)
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
            caller = ex.submit(self.compute, n, "k", "exec", *shell(script), json=False)
            wait_until(lambda: self.runs("stopped") == 1, 30, "the compute to start")
            n.sigterm()
            rc, out, err = caller.result()
        self.assertEqual((rc, out), (EXIT_REFUSED, ""), err)
        self.assertIn("the node is stopping", err)
        self.assertEqual(n.wait_exit(), 0)

    def test_a_compute_stuck_in_the_queue_is_given_up(self):
        n = self.new_node("--workers", "1", "--prefetch", "1")
        rc, out, err = n.ctl("submit", "sleep", "90000")
        self.assertEqual(rc, EXIT_OK, err)
        busy = out["task_id"] if isinstance(out, dict) else int(out)
        wait_until(lambda: n.task(busy)["state"] == "running", 30, "the worker to be busy")
        t0 = time.monotonic()
        rc, out, err = self.compute(n, "queued", "echo", "never", "--timeout", "300ms",
                                    json=False)
        waited = time.monotonic() - t0
        self.assertEqual((rc, out), (EXIT_UNREACHABLE, ""), err)
        self.assertIn("did not end within 30300 ms: cancelled", err)
        self.assertGreater(waited, 30.0)
        tid = int(err.split("(task ")[1].split(",")[0])
        wait_until(lambda: n.task(tid)["state"] == "cancelled", 30, "the task to be cancelled")
        self.assertEqual(n.ctl("cache", "get", "queued")[0], EXIT_NOT_FOUND)
        n.ctl("cancel", busy)


if __name__ == "__main__":
    unittest.main()
