"""test_storage_full.py - a failed journal commit turns acknowledgements into
storage errors (docs/design.md, "Group commit and persist before promise").

The node's data dir lives on a small tmpfs (mounted here, so root only). Once
a filler file takes every free byte, a submit whose payload cannot fit in the
journal must be answered with CH_ERR_STORAGE (clusterctl: "storage error",
exit 7) instead of a task id; the node keeps serving (status answers), and
once the filler is removed submits succeed again.

Nothing starts before it is journaled (issue #10, part 1): a refused task
never runs (exec of /usr/bin/touch FILE: the file is never created), the
node's counters agree with the journal, and the log holds one line for the
condition, bounded reminders, and one line when it clears.

A cache get-or-compute whose task cannot be journaled is answered
CH_ERR_STORAGE at once (docs/cache.md, "Get-or-compute"), not after the
compute's wait, and the next call once there is room computes the value.
"""

import os
import subprocess
import sys
import time
import unittest

from harness import EXIT_OK, NodeTestCase, run_cmd, task_list, task_state, wait_until

TMPFS_BYTES = 4 * 1024 * 1024
PAYLOAD_BYTES = 256 * 1024  # more than any free page the journal could reuse
EXIT_OTHER = 7              # clusterctl --help: any other error


class TestStorageFull(NodeTestCase):

    def mount_tmpfs(self):
        """A fresh tmpfs of TMPFS_BYTES under the work dir, unmounted at
        the end (after the node is gone); skips the test when it cannot be
        mounted."""
        mnt = os.path.join(self.workdir, "tmpfs")
        os.mkdir(mnt)
        if os.geteuid() != 0:
            self.skipTest("tmpfs cannot be mounted: not root")
        rc, out, err = run_cmd(["mount", "-t", "tmpfs", "-o", "size=%d" % TMPFS_BYTES, "tmpfs",
                                mnt], timeout_s=30)
        if rc != 0:
            self.skipTest("tmpfs cannot be mounted: %s" % (err.strip() or out.strip()))
        # registered before the node's cleanup, so it runs after it
        self.addCleanup(lambda: subprocess.run(["umount", "-l", mnt], capture_output=True))
        return mnt

    def fill(self, path):
        """Writes zeros to path until the file system is full."""
        chunk = b"\0" * 65536
        with open(path, "wb") as f:
            try:
                while True:
                    f.write(chunk)
                    f.flush()
            except OSError:
                pass

    def node_on_tmpfs(self, *args):
        mnt = self.mount_tmpfs()
        node = self.new_node(*args, start=False)
        node.data_dir = os.path.join(mnt, "data")
        node.secret = os.path.join(self.workdir, "secret")
        node.args += ["--secret", node.secret]
        rc, _, err = node.ctl("keygen", node.secret, json=False)
        self.assertEqual(rc, EXIT_OK, err)
        node.start()
        return mnt, node

    def big_payload(self):
        payload = os.path.join(self.workdir, "payload")
        with open(payload, "wb") as f:
            f.write(b"p" * PAYLOAD_BYTES)
        return payload

    def test_full_disk_answers_submits_with_a_storage_error_and_recovers(self):
        mnt, node = self.node_on_tmpfs()
        self.assertEqual(node.submit("echo", "--wait", payload="before")["output"], "before")

        filler = os.path.join(mnt, "filler")
        self.fill(filler)
        payload = self.big_payload()
        rc, out, err = node.ctl("submit", "echo", "-f", payload, json=False)
        self.assertEqual(rc, EXIT_OTHER, (out, err))
        self.assertIn("storage error", err)
        self.assertEqual(out.strip(), "", "a task id was printed for a task not journaled")
        self.assertIn("journal commit failed", node.log_text())

        # still serving
        self.assertTrue(node.running())
        st = node.status()
        self.assertEqual(st["name"], node.name)

        # space again: the same submit is journaled and runs
        os.remove(filler)
        rc, r, err = node.ctl("submit", "echo", "-f", payload, "--wait")
        self.assertEqual(rc, EXIT_OK, (r, err))
        self.assertEqual(task_state(r), "succeeded")
        self.assertEqual(len(r["output"]), PAYLOAD_BYTES)

    def test_a_refused_task_never_runs_and_counters_agree_with_the_journal(self):
        mnt, node = self.node_on_tmpfs("--exec-allow", "/usr/bin/touch")
        self.assertEqual(node.submit("echo", "--wait", payload="before")["output"], "before")
        marks = [os.path.join(self.workdir, "ran-%d" % i) for i in range(3)]
        filler = os.path.join(mnt, "filler")
        self.fill(filler)
        payload = self.big_payload()
        for mark in marks:
            rc, out, err = node.ctl("submit", "exec", "-f", payload, "--", "/usr/bin/touch",
                                    mark, json=False)
            self.assertEqual(rc, EXIT_OTHER, (out, err))
            self.assertIn("storage error", err)
        # the same with --wait: refused at once, not parked on a task that
        # does not exist
        rc, out, err = node.ctl("submit", "exec", "-f", payload, "--wait", "--",
                                "/usr/bin/touch", marks[0], json=False)
        self.assertEqual(rc, EXIT_OTHER, (out, err))
        self.assertIn("storage error", err)
        time.sleep(1.0)  # on purpose: time for a wrongly started task to run
        for mark in marks:
            self.assertFalse(os.path.exists(mark), "a refused task ran: %s exists" % mark)
        st = node.status()
        self.assertEqual(st["submitted"], 1, st)
        self.assertEqual(st["queued"] + st["running"], 0, st)

        os.remove(filler)
        r = node.submit("echo", "--wait", payload="after")
        self.assertEqual(r["output"], "after")
        rc, out, err = node.ctl("tasks", "--limit", 100)
        self.assertEqual(rc, EXIT_OK, err)
        journal = task_list(out)
        self.assertEqual(len(journal), 2, journal)
        self.assertEqual([t["handler"] for t in journal], ["echo", "echo"])
        st = node.status()
        self.assertEqual(st["submitted"], len(journal), st)
        self.assertEqual(st["succeeded"], len(journal), st)
        for mark in marks:
            self.assertFalse(os.path.exists(mark), "a refused task ran: %s exists" % mark)

        # the log: the condition once, no reminder within the reminder
        # period (30 s), one line when it cleared
        lines = node.log_lines_since_last_start()
        failed = [l for l in lines if "journal commit failed" in l]
        self.assertEqual(len(failed), 1, "\n".join(lines))
        errors = [l for l in lines if " ERROR " in l]
        self.assertLessEqual(len(errors), 2, "\n".join(errors))
        cleared = [l for l in lines if "failure cleared" in l]
        self.assertEqual(len(cleared), 1, "\n".join(lines))
        self.assertLess(lines.index(failed[0]), lines.index(cleared[0]))

    def test_a_compute_whose_task_cannot_be_journaled_fails_at_once(self):
        mnt, node = self.node_on_tmpfs("--exec-allow", "/bin/sh")
        self.assertEqual(node.submit("echo", "--wait", payload="before")["output"], "before")
        filler = os.path.join(mnt, "filler")
        self.fill(filler)
        # a task bigger than any free page the journal could reuse: its
        # payload and two arguments (an argument is at most 128 KiB)
        part = "x" * (120 * 1024)
        args = ["cache", "get-or-compute", "k", "exec", part, "--arg", "/bin/sh", "--arg", "-c",
                "--arg", "printf computed; exit 0; " + part, "--arg", part]
        t0 = time.monotonic()
        rc, out, err = node.ctl(*args, json=False)
        took = time.monotonic() - t0
        self.assertEqual(rc, EXIT_OTHER, (out, err))
        self.assertIn("storage error", err)
        self.assertIn("could not be journaled", err)
        # at once: the compute's wait would be 2 minutes (60 s default
        # limit, as long again for a worker)
        self.assertLess(took, 10.0, err)
        print("get-or-compute on a full disk: storage error after %.2f s" % took,
              file=sys.stderr)
        self.assertTrue(node.running())

        os.remove(filler)
        rc, out, err = node.ctl(*args, json=False)
        self.assertEqual((rc, out), (EXIT_OK, "computed"), err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
