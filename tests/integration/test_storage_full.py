"""test_storage_full.py - a failed journal commit turns acknowledgements into
storage errors (docs/design.md, "Group commit and persist before promise").

The node's data dir lives on a small tmpfs (mounted here, so root only). Once
a filler file takes every free byte, a submit whose payload cannot fit in the
journal must be answered with CH_ERR_STORAGE (clusterctl: "storage error",
exit 7) instead of a task id; the node keeps serving (status answers), and
once the filler is removed submits succeed again.

Not checked on purpose: whether the refused task still runs later (a known
bug, left to a later issue).
"""

import os
import subprocess
import unittest

from harness import EXIT_OK, NodeTestCase, run_cmd, task_state

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

    def test_full_disk_answers_submits_with_a_storage_error_and_recovers(self):
        mnt = self.mount_tmpfs()
        node = self.new_node(start=False)
        node.data_dir = os.path.join(mnt, "data")
        node.secret = os.path.join(self.workdir, "secret")
        node.args += ["--secret", node.secret]
        rc, _, err = node.ctl("keygen", node.secret, json=False)
        self.assertEqual(rc, EXIT_OK, err)
        node.start()
        self.assertEqual(node.submit("echo", "--wait", payload="before")["output"], "before")

        filler = os.path.join(mnt, "filler")
        self.fill(filler)
        payload = os.path.join(self.workdir, "payload")
        with open(payload, "wb") as f:
            f.write(b"p" * PAYLOAD_BYTES)
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


if __name__ == "__main__":
    unittest.main(verbosity=2)
