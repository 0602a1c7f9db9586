"""test_stream.py - streamed fan-outs (issue #10 part 5) on one real chorusd.

1. an input several times the node's frame cap (--frame-max 64k), from a
   file and from stdin through a pipe: every result, in input order, with
   the batch id on stderr at the start;
2. --unordered: every result exactly once, as tasks finish (a slow head
   does not hold the rest back);
3. clusterctl's memory stays flat: its peak RSS (VmHWM) for 200,000 lines
   is within a margin of that for 20,000;
4. the coordinator killed (kill -9) mid-stream: clusterctl says which batch
   and how to re-attach; after a restart `wait --batch ID` prints every
   task the node had taken (transient tasks interrupted are run again),
   agreeing with what was printed before the kill;
5. a --deadline closes the stream: the results of what was taken, in
   order, and exit 1 saying how much was not taken;
6. wrong chunks (a gap, resends, an overlap, over the window, an unknown
   or closed batch, too many tasks) get the protocol's answers
   (chorus_frametool stream-bad), and a line that cannot fit a chunk is a
   clear error.
"""

import os
import re
import subprocess
import threading
import time
import unittest

from harness import (CLUSTERCTL, EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, NodeTestCase,
                     wait_until)

FRAME_MAX = "64k"
BATCH_RE = re.compile(r"clusterctl: batch (\d+) ")
# clusterctl's peak RSS may grow by this much (or a third) from 20k to
# 200k lines (allocator noise, a larger page of results), never with the input
RSS_MARGIN_KB = 2048


def parse_lines(text):
    """`index<TAB>state<TAB>output<TAB>node` lines -> list of tuples."""
    rows = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 4:
            raise AssertionError("not a result line: %r" % line)
        rows.append((int(parts[0]), parts[1], parts[2], parts[3]))
    return rows


class TestStream(NodeTestCase):

    def ctl_cmd(self, node, *args, json=False):
        cmd = [CLUSTERCTL, "-a", node.addr, "-k", node.secret]
        if json:
            cmd.append("--json")
        return cmd + [str(a) for a in args]

    def check_in_order(self, rows, count, prefix="p"):
        self.assertEqual(len(rows), count)
        for i, (index, state, output, node) in enumerate(rows):
            self.assertEqual(index, i)
            self.assertEqual(state, "succeeded", rows[i])
            self.assertEqual(output, "%s%d" % (prefix, i))

    # ---- 1 ----

    def test_input_over_the_frame_cap_from_a_file_and_a_pipe(self):
        node = self.new_node("--frame-max", FRAME_MAX)
        count = 30000  # ~200 kB of input: three frames' worth and more
        path = os.path.join(self.workdir, "in.txt")
        with open(path, "w") as f:
            f.write("".join("p%d\n" % i for i in range(count)))
        self.assertGreater(os.path.getsize(path), 3 * 64 * 1024)
        rc, out, err = node.ctl("submit", "echo", "--fanout", path, json=False, timeout_s=120)
        self.assertEqual(rc, EXIT_OK, err)
        self.assertRegex(err.splitlines()[0], BATCH_RE)
        self.check_in_order(parse_lines(out), count)

        # stdin through a real pipe, fed by another process as it goes
        gen = "i=0; while [ $i -lt %d ]; do echo p$i; i=$((i+1)); done" % count
        cmd = "(%s) | %s" % (gen, " ".join(self.ctl_cmd(node, "submit", "echo", "--fanout",
                                                           "-", json=True)))
        p = subprocess.run(["sh", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=180)
        err = p.stderr.decode()
        self.assertEqual(p.returncode, EXIT_OK, err)
        import json as jsonlib
        results = jsonlib.loads(p.stdout)
        self.assertEqual([r["index"] for r in results], list(range(count)))
        self.assertTrue(all(r["output"] == "p%d" % r["index"] for r in results))
        batch = int(BATCH_RE.search(err).group(1))
        self.assertEqual({r["batch_id"] for r in results}, {batch})

    # ---- 2 ----

    def test_unordered_gives_every_result_once_as_they_finish(self):
        # prefetch 1: nothing waits behind a slow task on its worker
        node = self.new_node("--workers", "4", "--prefetch", "1")
        # the first two are slow: in order they would hold back the rest
        lines = ["1500", "1500"] + ["0"] * 300
        rc, out, err = node.ctl("submit", "sleep", "--unordered", "--fanout", "-",
                                input="".join(l + "\n" for l in lines), json=False,
                                timeout_s=60)
        self.assertEqual(rc, EXIT_OK, err)
        rows = parse_lines(out)
        indexes = [r[0] for r in rows]
        self.assertEqual(sorted(indexes), list(range(len(lines))))
        self.assertTrue(all(r[1] == "succeeded" for r in rows))
        # the slow ones came last
        self.assertEqual(set(indexes[-2:]), {0, 1}, indexes[:5])

    # ---- 3 ----

    def peak_rss_kb(self, node, count):
        """Runs a fan-out of `count` echo tasks fed by a pipe; returns
        clusterctl's peak RSS in kB: its VmHWM, read from /proc while it
        runs (the high-water mark of its own image: rusage would count the
        test's Python that forked it)."""
        gen = subprocess.Popen(["seq", "1", str(count)], stdout=subprocess.PIPE)
        # under ASan, freed memory waits in a quarantine (256 MB) before it
        # is reused: without it, RSS shows what the program holds
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") +
                               ":quarantine_size_mb=0:thread_local_quarantine_size_kb=0").lstrip(":")
        with open(os.devnull, "w") as null:
            p = subprocess.Popen(self.ctl_cmd(node, "submit", "echo", "--fanout", "-"),
                                 stdin=gen.stdout, stdout=null, stderr=subprocess.PIPE, env=env)
            gen.stdout.close()
            hwm = 0
            while p.poll() is None:
                try:
                    with open("/proc/%d/status" % p.pid) as f:
                        for line in f:
                            if line.startswith("VmHWM:"):
                                hwm = max(hwm, int(line.split()[1]))
                except OSError:
                    pass
                time.sleep(0.02)
            err = p.stderr.read().decode()
            p.stderr.close()
        gen.wait()
        self.assertEqual(p.returncode, EXIT_OK, err)
        self.assertGreater(hwm, 0)
        return hwm

    def test_client_memory_stays_flat_in_the_input_size(self):
        node = self.new_node("--frame-max", FRAME_MAX)
        small = self.peak_rss_kb(node, 20000)
        large = self.peak_rss_kb(node, 200000)
        print("\n  clusterctl peak RSS: %d kB for 20,000 lines, %d kB for 200,000" % (small, large),
              end=" ", flush=True)
        # a third more at most (an ASan build's allocator adds a little as
        # it goes), never ten times: the input is ten times larger
        self.assertLessEqual(large, small + max(RSS_MARGIN_KB, small // 3), (small, large))

    # ---- 4 ----

    def test_coordinator_killed_mid_stream_then_wait_batch_collects_everything(self):
        node = self.new_node("--workers", "4")
        # the node takes them all at once (its window is 4096), and after the
        # restart runs what was left: 1000 x 30 ms on 4 workers is ~7.5 s;
        # at most ~200 can end in the 1.5 s before the kill, so it is mid-stream
        count = 1000
        path = os.path.join(self.workdir, "sleeps.txt")
        with open(path, "w") as f:
            f.write("30\n" * count)
        p = subprocess.Popen(self.ctl_cmd(node, "--timeout", "2s", "submit", "sleep",
                                          "--transient", "--retries", "5", "--fanout", path),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        got = []
        reader = threading.Thread(target=lambda: got.extend(p.stdout.read().decode()
                                                            .splitlines()))
        reader.start()
        err_lines = []

        def first_line():
            line = p.stderr.readline().decode()
            err_lines.append(line)
            return line
        self.assertRegex(first_line(), BATCH_RE)
        batch = int(BATCH_RE.search(err_lines[0]).group(1))
        # some results out, many to go
        time.sleep(1.5)
        node.kill9()
        rest = p.stderr.read().decode()
        rc = p.wait(timeout=60)
        reader.join(timeout=10)
        p.stdout.close()
        p.stderr.close()
        self.assertEqual(rc, EXIT_UNREACHABLE, rest)
        self.assertIn("coordinator lost: re-attach with clusterctl wait --batch %d" % batch, rest)
        before = parse_lines("\n".join(got))
        self.assertGreater(len(before), 0)
        self.assertLess(len(before), count)

        node.start()
        rc, out, err = node.ctl("wait", "--batch", batch, json=False, timeout_s=120)
        self.assertEqual(rc, EXIT_OK, err)
        after = parse_lines(out)
        # every task the node had taken, in order, all succeeded (the ones
        # running at the kill were run again: transient)
        self.assertGreaterEqual(len(after), len(before))
        self.assertEqual([r[0] for r in after], list(range(len(after))))
        self.assertTrue(all(r[1] == "succeeded" for r in after), [r for r in after
                                                                if r[1] != "succeeded"][:3])
        self.assertEqual(after[:len(before)], before)
        # re-attaching from an index gives the rest only
        rc, out, err = node.ctl("wait", "--batch", batch, "--from", len(after) - 5, json=False)
        self.assertEqual(rc, EXIT_OK, err)
        self.assertEqual(parse_lines(out), after[-5:])
        # the batch is closed: it takes no more
        rc, out, err = node.ctl("wait", "--batch", batch + 1000, json=False)
        self.assertEqual(rc, 5, (out, err))

    def test_a_deadline_closes_the_stream_and_the_rest_is_not_taken(self):
        node = self.new_node("--workers", "2")
        lines = "50\n" * 200  # 200 x 50 ms on 2 workers: ~5 s, the deadline is 1 s
        rc, out, err = node.ctl("submit", "sleep", "--fanout", "-", "--deadline", "1s",
                                "--window", "16", input=lines, json=False, timeout_s=60)
        self.assertEqual(rc, 1, (out, err))
        self.assertIn("were not taken", err)
        rows = parse_lines(out)
        self.assertGreater(len(rows), 0)
        self.assertLess(len(rows), 200)
        self.assertEqual([r[0] for r in rows], list(range(len(rows))))
        self.assertTrue({r[1] for r in rows} <= {"succeeded", "timed_out"}, rows)
        self.assertIn("timed_out", {r[1] for r in rows})

    # ---- 5 ----

    def test_wrong_chunks_get_clear_answers(self):
        node = self.new_node()
        rc, out, err = node.frametool("stream-bad")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("chunk is missing", out)
        self.assertIn("no batch", out)
        self.assertIn("at most 65536 per chunk", out)
        self.assertIn("input is closed", out)
        self.assertIn("every answer as expected", out)

    def test_a_line_over_the_frame_cap_is_refused_clearly(self):
        node = self.new_node("--frame-max", FRAME_MAX)
        lines = "short\n" + "x" * (80 * 1024) + "\n"
        rc, out, err = node.ctl("submit", "echo", "--fanout", "-", input=lines, json=False)
        self.assertEqual(rc, EXIT_REFUSED, (out, err))
        self.assertIn("does not fit a chunk", err)


if __name__ == "__main__":
    unittest.main()
