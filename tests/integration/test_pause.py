"""test_pause.py - a member paused (SIGSTOP) while it runs placed tasks
(issue #10, "Tasks once", part 3).

Three nodes: n1 coordinates a fan-out of transient tasks that must run on a
member tagged `w` (n2: one worker, prefetch 2; n3: four workers, so what n2
held can start there at once). Each task, an
`exec /bin/sh` that appends its payload to a file when it starts, then
sleeps, is what a user's side effect looks like. n2 is stopped with SIGSTOP
long enough to be declared dead (its tasks are placed again on n3), then
resumed with SIGCONT.

What must hold:
- every task is reported once, succeeded;
- the jobs n2 had been given but not started (prefetched) never start on n2
  after it resumes: its workers see the node's heartbeat stop and the pause
  epoch move on, and hand them back unstarted ("handed back" in its log);
- so a task runs twice only if it was running on n2 when it stopped (one
  worker: at most one task), which is Chorus's documented at-least-once case
  for transient tasks.
"""

import collections
import os
import signal
import threading
import time
import unittest

from harness import CLUSTERCTL, NodeTestCase, keygen, run_cmd, task_list, task_state, wait_until

PERIOD = "200ms"


class TestPause(NodeTestCase):

    def member(self, name, secret, seeds=(), tags=(), workers=1):
        args = ["--secret", secret, "--gossip-period", PERIOD, "--workers", str(workers),
                "--prefetch", "2", "--exec-allow", "/bin/sh"]
        for s in seeds:
            args += ["--seeds", s.addr]
        for t in tags:
            args += ["--tags", t]
        return self.new_node(*args, name=name, secret=secret)

    def test_a_paused_member_hands_back_what_it_had_not_started(self):
        secret = keygen(os.path.join(self.workdir, "cluster.secret"))
        n1 = self.member("n1", secret)
        n2 = self.member("n2", secret, seeds=[n1], tags=["w"])
        # n3 has room, so what n2 held starts there at once
        n3 = self.member("n3", secret, seeds=[n1], tags=["w"], workers=4)
        nodes = [n1, n2, n3]
        wait_until(lambda: all(len(n.members()) == 3 and all(
            m["state"] == "alive" for m in n.members().values()) for n in nodes), 20,
            "three alive members")
        starts = os.path.join(self.workdir, "starts.txt")
        script = 'read x; echo "$x" >> %s; sleep 1; echo "$x"' % starts
        count = 12
        lines = "".join("t%d\n" % i for i in range(count))
        result = {}

        def fanout():
            result["ctl"] = n1.ctl("submit", "exec", "--arg", "/bin/sh", "--arg", "-c",
                                   "--arg", script, "--require", "w", "--transient",
                                   "--retries", "5", "--fanout", "-", input=lines,
                                   timeout_s=180)
        th = threading.Thread(target=fanout)
        th.start()

        def started():
            try:
                with open(starts) as f:
                    return len(f.read().split())
            except FileNotFoundError:
                return 0
        # n2 runs one and holds one more: then stop it
        wait_until(lambda: started() >= 5, 30, "both members running")
        n2.proc.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: any(m["name"] == "n2" and m["state"] in ("dead", "suspect")
                                   for m in n1.members().values()), 30,
                       "n1 gives n2 up")
            wait_until(lambda: n1.members()["n2"]["state"] == "dead", 30, "n2 declared dead")
            # its tasks placed again: n3 starts one more while n2 is stopped
            before = started()
            wait_until(lambda: started() > before, 30, "n3 running what n2 held")
        finally:
            n2.proc.send_signal(signal.SIGCONT)
        th.join(180)
        rc, out, err = result["ctl"]
        self.assertEqual(rc, 0, err)
        results = task_list(out)
        self.assertEqual(len(results), count)
        for r in results:
            self.assertEqual(task_state(r), "succeeded", r)
        with open(starts) as f:
            runs = collections.Counter(f.read().split())
        self.assertEqual(set(runs), {"t%d" % i for i in range(count)}, runs)
        twice = {k: v for k, v in runs.items() if v > 1}
        # only what was running on n2 when it stopped may have run twice
        self.assertLessEqual(len(twice), 1, "ran more than once: %r" % twice)
        self.assertIn("handed back", n2.log_text())


if __name__ == "__main__":
    unittest.main()
