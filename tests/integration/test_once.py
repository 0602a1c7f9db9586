"""test_once.py - tasks once (issue #10, parts 2 and 4).

2. A retried request never makes a second task. The node is made to die
   right after the commit that journaled a submit and before answering it
   (CHORUS_TEST_CRASH_AFTER_COMMIT=1, a test-only hook: README); it is
   started again on the same data dir and port while the submit is still
   in flight. libchorus resends the request under a new session with the
   same idempotency key: the client gets one id and the journal holds one
   task. An application's own key (clusterctl submit --key) names one task
   across clients.
4. Ids are never reused and corruption is never silent: a zero-length
   chorus.db starts an empty journal, with a warning, and new ids are above
   every old one; damaged WAL bytes are reported by quick_check at start
   (one fatal line), and with journal_check = off the node starts and its
   ids are still new.
Also: a temporary task (the default) never starts twice, even when its node
dies right after handing it to a worker (CHORUS_TEST_CRASH_AFTER_DISPATCH=1,
also a test-only hook): the worker gets the job only once the commit that
journals it `running` is done, so a crash before that commit finds it queued
and runs it once.
"""

import json
import os
import subprocess
import unittest

from harness import (CLUSTERCTL, EXIT_OK, NodeTestCase, keygen, task_id, task_list,
                     task_state, wait_until)

CRASH_EXIT = 86  # the hook's exit code
DISPATCH_CRASH_EXIT = 87  # CHORUS_TEST_CRASH_AFTER_DISPATCH's


class TestOnce(NodeTestCase):

    def journal(self, node):
        rc, out, err = node.ctl("tasks", "--limit", 1000)
        self.assertEqual(rc, EXIT_OK, err)
        return task_list(out)

    def submit_across_a_crash(self, *args):
        """Starts a submit, lets the node die between journaling and
        answering, starts the node again; returns (rc, answer, node)."""
        node = self.new_node(start=False)
        node.env = {"CHORUS_TEST_CRASH_AFTER_COMMIT": "1"}
        node.start()
        cmd = [CLUSTERCTL, "-a", node.addr, "-k", node.secret, "--json", "--timeout", "30s",
               "submit", "echo", "once"] + list(args)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        node.exit_expected = True
        self.assertEqual(node.wait_exit(), CRASH_EXIT, node.log_tail())
        self.assertIn("CHORUS_TEST_CRASH_AFTER_COMMIT", node.log_text())
        node.env = None
        node.start()
        out, err = p.communicate(timeout=60)
        try:
            out = json.loads(out)
        except ValueError:
            pass
        return p.returncode, out, err, node

    def test_a_submit_retried_across_a_node_crash_makes_one_task(self):
        rc, out, err, node = self.submit_across_a_crash()
        self.assertEqual(rc, EXIT_OK, (out, err))
        tid = task_id(out)
        tasks = self.journal(node)
        self.assertEqual([task_id(t) for t in tasks], [tid], tasks)
        self.assertEqual(task_state(self.wait_task(node, tid)), "succeeded")
        self.assertEqual(node.status()["submitted"], 0)  # none new since the restart
        self.assertEqual(len(self.journal(node)), 1)

    def test_a_submit_wait_retried_across_a_node_crash_waits_on_the_first_task(self):
        rc, out, err, node = self.submit_across_a_crash("--wait")
        self.assertEqual(rc, EXIT_OK, (out, err))
        self.assertEqual(task_state(out), "succeeded")
        self.assertEqual(out["output"], "once")
        tasks = self.journal(node)
        self.assertEqual([task_id(t) for t in tasks], [task_id(out)], tasks)

    def test_an_application_key_names_one_task_across_clients(self):
        node = self.new_node()
        a = task_id(node.submit("echo", "--key", "job-42", payload="first"))
        b = task_id(node.submit("echo", "--key", "job-42", payload="second"))
        self.assertEqual(a, b)
        r = node.submit("echo", "--key", "job-42", "--wait", payload="third")
        self.assertEqual((task_id(r), r["output"]), (a, "first"))
        c = task_id(node.submit("echo", "--key", "job-43", payload="x"))
        d = task_id(node.submit("echo", payload="x"))
        self.assertEqual(len({a, c, d}), 3)
        # across a restart (the key is journaled with the task)
        node.restart()
        self.assertEqual(task_id(node.submit("echo", "--key", "job-42", payload="4")), a)
        self.assertEqual(len(self.journal(node)), 3)
        # a key names a task or a fan-out, not both
        rc, out, err = node.ctl("submit", "echo", "--fanout", "-", "--key", "job-42",
                                input="a\nb\n")
        self.assertNotEqual(rc, EXIT_OK, (out, err))
        self.assertIn("already names a task", err)
        rc, out, err = node.ctl("submit", "echo", "x", "--key", "", json=False)
        self.assertEqual(rc, 2, err)

    # ---- part 4 ----

    def test_a_temporary_task_never_starts_twice_across_a_crash_at_dispatch(self):
        node = self.new_node("--exec-allow", "/bin/sh", start=False)
        node.env = {"CHORUS_TEST_CRASH_AFTER_DISPATCH": "1"}
        node.start()
        runs = os.path.join(self.workdir, "runs.txt")
        # the answer may not leave before the crash: the client's retry,
        # after the restart, is answered with the same task (its key)
        cmd = [CLUSTERCTL, "-a", node.addr, "-k", node.secret, "--json", "--timeout", "30s",
               "submit", "exec", "--arg", "/bin/sh", "--arg", "-c",
               "--arg", "echo run >> %s" % runs]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        node.exit_expected = True
        self.assertEqual(node.wait_exit(), DISPATCH_CRASH_EXIT, node.log_tail())
        self.assertIn("CHORUS_TEST_CRASH_AFTER_DISPATCH", node.log_text())
        node.env = None
        node.start()
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, EXIT_OK, (out, err))
        t = self.wait_task(node, task_id(json.loads(out)))
        self.assertEqual(task_state(t), "succeeded", t)
        with open(runs) as f:
            self.assertEqual(f.read().split(), ["run"], "the task ran more than once")
        self.assertEqual(len(self.journal(node)), 1)

    def test_a_temporary_task_placed_elsewhere_never_starts_twice_across_a_crash(self):
        # n1 coordinates a task that must run on a member tagged w, n2: n1
        # dies right after placing it, before journaling that it started,
        # and n2 is killed too; n3, tagged w, joins, and the restarted n1
        # places the recovered task there. Held until journaled, the
        # attempt never reached n2: it runs once. (Sent at once, n2 would
        # have run it during the hook's pause, and n3 again.)
        secret = keygen(os.path.join(self.workdir, "cluster.secret"))
        common = ["--secret", secret, "--gossip-period", "200ms", "--exec-allow", "/bin/sh"]
        n1 = self.new_node(*common, name="n1", secret=secret, start=False)
        n1.env = {"CHORUS_TEST_CRASH_AFTER_DISPATCH": "1"}
        n1.start()
        n2 = self.new_node(*common, "--seeds", n1.addr, "--tags", "w", name="n2", secret=secret)
        wait_until(lambda: len(n1.members()) == 2, 20, "n2 joins")
        runs = os.path.join(self.workdir, "runs.txt")
        cmd = [CLUSTERCTL, "-a", n1.addr, "-k", secret, "--json", "--timeout", "60s",
               "submit", "exec", "--require", "w", "--arg", "/bin/sh", "--arg", "-c",
               "--arg", "echo run >> %s" % runs]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        n1.exit_expected = True
        self.assertEqual(n1.wait_exit(), DISPATCH_CRASH_EXIT, n1.log_tail())
        n2.kill9()
        self.new_node(*common, "--seeds", n1.addr, "--tags", "w", name="n3", secret=secret,
                      start=False).start(wait=False)
        n1.env = None
        n1.start()
        out, err = p.communicate(timeout=90)
        self.assertEqual(p.returncode, EXIT_OK, (out, err))
        t = self.wait_task(n1, task_id(json.loads(out)), timeout_s=60)
        self.assertEqual(task_state(t), "succeeded", t)
        self.assertEqual(t.get("node"), "n3", t)
        with open(runs) as f:
            self.assertEqual(f.read().split(), ["run"], "the task ran more than once")

    def test_a_zero_length_journal_never_reuses_ids_and_says_so(self):
        node = self.new_node()
        old = [task_id(node.submit("echo", payload=str(i))) for i in range(3)]
        node.stop()
        db = os.path.join(node.data_dir, "chorus.db")
        with open(db, "wb"):
            pass
        for suffix in ("-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.remove(db + suffix)
        node.start()
        lines = node.log_lines_since_last_start()
        warn = [l for l in lines if " WARN " in l and "journal" in l and "is new" in l]
        self.assertEqual(len(warn), 1, "\n".join(lines))
        self.assertIn("older", warn[0])
        new = [task_id(node.submit("echo", payload="n%d" % i)) for i in range(3)]
        self.assertGreater(min(new), max(old), (old, new))
        with open(os.path.join(node.data_dir, "node_id")) as f:
            self.assertEqual(node.status()["node_id"], f.read().strip())

    def test_corrupt_wal_is_reported_at_start_or_ids_stay_unique(self):
        node = self.new_node()
        old = [task_id(node.submit("echo", "--wait", payload="x" * 3000)) for _ in range(5)]
        node.kill9()  # the WAL is not checkpointed
        wal = os.path.join(node.data_dir, "chorus.db-wal")
        self.assertGreater(os.path.getsize(wal), 8192)
        with open(wal, "r+b") as f:
            f.seek(os.path.getsize(wal) // 2)
            f.write(os.urandom(4096))
        node.start(wait=False)

        def outcome():
            if not node.running():
                return "exited"
            rc, out, _ = node.ctl("--timeout", "1s", "status", timeout_s=10)
            return "ready" if rc == 0 else None
        seen = wait_until(outcome, 20, "chorusd to refuse the journal or serve")
        lines = node.log_lines_since_last_start()
        # sqlite would drop the commits after the damaged frame without a
        # word: the WAL scan at start says so, before sqlite opens it
        lost = [l for l in lines if " ERROR " in l and "chorus.db-wal" in l and "damaged" in l]
        self.assertEqual(len(lost), 1, "\n".join(lines))
        if seen == "exited":
            # quick_check found the damage: one explicit line, then start
            # anyway with the check off
            node.exit_expected = True
            fatal = [l for l in lines if "fatal" in l]
            self.assertEqual(len(fatal), 1, "\n".join(lines))
            self.assertIn("quick_check", fatal[0])
            node.args += ["--journal-check", "off"]
            node.start()
            self.assertIn("journal_check = off", node.log_text())
        # the journal lacks the commits after the damage: ids still go on
        # above every id handed out before
        new = [task_id(node.submit("echo", payload="n")) for _ in range(3)]
        self.assertGreater(min(new), max(old), (old, new))

    def test_journal_check_off_skips_the_check(self):
        node = self.new_node("--journal-check", "off")
        self.assertIn("journal_check = off", node.log_text())
        self.assertEqual(task_state(node.submit("echo", "--wait", payload="x")), "succeeded")

    def test_journal_check_setting_is_validated(self):
        rc, out, err = self.run_chorusd("--journal-check", "maybe", "--data-dir",
                                        os.path.join(self.workdir, "d"))
        self.assertNotEqual(rc, 0)
        self.assertIn("on, off", out + err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
