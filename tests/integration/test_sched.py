"""test_sched.py - election and exactly-once schedules on real chorusd
processes (issue #11).

- Three nodes form a voter set by themselves (n1 starts it, the leader adds
  n2 and n3). An every-second schedule runs; the leader is killed with
  kill -9; another is elected (the time is printed) and the schedule goes
  on. Every second from the first run to the last is decided exactly once
  (fired or skipped, with its reason), and the nodes' journals hold exactly
  one task per fired occurrence: a failover neither repeats nor drops one.
- The leader is stopped with SIGSTOP until a new leader has fired, then
  resumed: it fires nothing (it cannot commit, and learns the new term).
- Pause, resume, trigger and the refusals of bad input.
- `--on all` on three nodes: each occurrence runs once on every member, each
  run a task in its own member's journal.
"""

import collections
import os
import signal
import sys
import time
import unittest

from harness import NetLab, NodeTestCase, keygen, wait_until

PERIOD = "200ms"
EXIT_NOT_FOUND = 5


def history(node, name="tick", limit=64):
    rc, out, err = node.ctl("cron", "history", name, "--limit", limit, timeout_s=30)
    if rc != 0 or not isinstance(out, list):
        raise AssertionError("cron history on %s: rc=%s %r %s" % (node.name, rc, out, err))
    return out


class TestSched(NodeTestCase):

    def cluster(self, n=3, lab=None, extra=()):
        secret = keygen(os.path.join(self.workdir, "cluster.secret"))
        common = ["--secret", secret, "--gossip-period", PERIOD] + list(extra)

        def where(i):
            if not lab:
                return {}
            return {"port": 7400, "netns": lab.names[i], "host": lab.host(i)}
        nodes = [self.new_node(*common, name="n1", secret=secret, **where(0))]
        for i in range(2, n + 1):
            nodes.append(self.new_node(*common, "--seeds", nodes[0].addr, name="n%d" % i,
                                       secret=secret, **where(i - 1)))
        wait_until(lambda: all(len(x.status().get("raft_voters", [])) == n and
                               x.status().get("raft_leader") for x in nodes), 30,
                   "%d voters and a leader" % n)
        return nodes

    def leader_of(self, nodes):
        for x in nodes:
            if x.running():
                try:
                    st = x.status()
                except AssertionError:
                    continue
                if st.get("raft_role") == "leader":
                    return x
        return None

    def check_exactly_once(self, nodes, name="tick"):
        """Every second between the first and the last decision decided
        once; one task per fired occurrence across the journals. The
        schedule is paused first, and its runs awaited, so that history
        and journals are read at rest."""
        some = next(x for x in nodes if x.running())
        rc, out, err = some.ctl("cron", "pause", name, "--note", "checking")
        self.assertEqual(rc, 0, err)
        wait_until(lambda: not any(r["outcome"] in ("fired", "dispatched", "queued", "running")
                                   for r in history(some, name)), 30, "its runs to end")
        runs = history(some, name)
        fired = [r["scheduled_s"] for r in runs if r["outcome"] != "skipped"]
        skipped = [r["scheduled_s"] for r in runs if r["outcome"] == "skipped"]
        dup = [t for t, c in collections.Counter(fired + skipped).items() if c > 1]
        self.assertEqual(dup, [], "decided more than once: %r" % runs)
        everything = sorted(fired + skipped)
        # occurrences older than the history kept are not compared
        self.assertEqual(everything, list(range(everything[0], everything[-1] + 1)),
                         "a second left undecided: %r" % runs)
        for r in runs:
            if r["outcome"] == "skipped":
                self.assertTrue(r["why"], r)
        tasks = 0
        for x in nodes:
            rc, out, err = x.ctl("tasks", "--limit", 1000)
            self.assertEqual(rc, 0, err)
            tasks += sum(1 for t in out if t.get("handler") == "echo")
        dispatched = [r for r in runs if r.get("task_id")]
        # every fired occurrence kept in the history made one task, no more
        self.assertEqual(tasks, len(dispatched) + (runs_beyond(runs)),
                         "tasks in the journals vs occurrences dispatched: %r" % runs)
        return runs

    def test_a_leader_killed_mid_schedule_neither_repeats_nor_drops(self):
        nodes = self.cluster()
        rc, out, err = nodes[1].ctl("cron", "every", "tick", "1s", "echo", "x")
        self.assertEqual(rc, 0, err)
        wait_until(lambda: sum(1 for r in history(nodes[1]) if r["outcome"] == "succeeded") >= 3,
                   30, "three runs")
        old = self.leader_of(nodes)
        self.assertIsNotNone(old)
        old.kill9()
        t0 = time.monotonic()
        others = [x for x in nodes if x is not old]
        wait_until(lambda: self.leader_of(others) is not None, 10, "a new leader")
        elected_s = time.monotonic() - t0
        print("new leader %.2f s after kill -9 of the leader" % elected_s, file=sys.stderr)
        # decided by a survivor: on a loaded machine a stalled new leader
        # may lose its term to the other survivor, which is fine here
        names = {x.name for x in others}
        wait_until(lambda: sum(1 for r in history(others[0]) if r["node"] in names and
                               r["outcome"] == "succeeded") >= 3, 30,
                   "three runs decided by a new leader")
        old.start()

        def follows():
            lead = self.leader_of(others)
            return lead is not None and old.status().get("raft_leader") == lead.name
        wait_until(follows, 30, "the old leader follows the new one")
        self.check_exactly_once(nodes)

    def test_a_paused_leader_fires_nothing_when_it_comes_back(self):
        nodes = self.cluster()
        rc, out, err = nodes[0].ctl("cron", "every", "tick", "1s", "echo", "x")
        self.assertEqual(rc, 0, err)
        wait_until(lambda: len(history(nodes[0])) >= 2, 30, "two runs")
        old = self.leader_of(nodes)
        others = [x for x in nodes if x is not old]
        old.proc.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: self.leader_of(others) is not None, 15, "a new leader")
            new = self.leader_of(others)
            wait_until(lambda: sum(1 for r in history(new) if r["node"] == new.name) >= 2, 30,
                       "the new leader fires")
        finally:
            old.proc.send_signal(signal.SIGCONT)
        wait_until(lambda: old.status().get("raft_role") == "follower", 30,
                   "the old leader steps down")
        wait_until(lambda: len(history(new)) >= 8, 30, "more runs")
        runs = self.check_exactly_once(nodes)
        # after it stopped, the old leader decided nothing more
        late = [r for r in runs if r["node"] == old.name and r["fired_ms"] > 0 and
                r["scheduled_s"] > max(x["scheduled_s"] for x in runs if x["node"] == new.name)]
        self.assertEqual(late, [])
        self.assertIn("no longer the leader", old.log_text())

    @unittest.skipIf(NetLab.unavailable() is not None,
                     "network-namespace tests skipped: %s" % NetLab.unavailable())
    def test_a_leader_cut_off_fires_nothing_and_the_majority_goes_on(self):
        lab = NetLab(3)
        self.addCleanup(lab.cleanup)
        lab.setup()
        nodes = self.cluster(lab=lab)
        rc, out, err = nodes[0].ctl("cron", "every", "tick", "1s", "echo", "x")
        self.assertEqual(rc, 0, err)
        wait_until(lambda: len(history(nodes[0])) >= 2, 30, "two runs")
        old = self.leader_of(nodes)
        i = nodes.index(old)
        others = [x for x in nodes if x is not old]
        lab.cut(i)
        try:
            wait_until(lambda: self.leader_of(others) is not None, 15, "a new leader")
            new = self.leader_of(others)
            wait_until(lambda: sum(1 for r in history(new) if r["node"] == new.name and
                                   r["outcome"] == "succeeded") >= 3, 30,
                       "the majority's leader fires")
            # cut off in a minority: check-quorum made it step down, and it
            # could commit nothing
            wait_until(lambda: old.status().get("raft_role") != "leader", 15,
                       "the cut-off leader steps down")
        finally:
            lab.heal(i)
        wait_until(lambda: old.status().get("raft_leader") == new.name, 30,
                   "the old leader follows the new one")
        self.check_exactly_once(nodes)

    def test_pause_resume_trigger_and_bad_input(self):
        node = self.new_node()
        rc, out, err = node.ctl("cron", "every", "tick", "1s", "echo", "x")
        self.assertEqual(rc, 0, err)
        wait_until(lambda: len(history(node)) >= 1, 30, "a run")
        rc, out, err = node.ctl("cron", "pause", "tick", "--note", "maintenance")
        self.assertEqual(rc, 0, err)
        rc, out, err = node.ctl("cron", "show", "tick")
        self.assertEqual(rc, 0, err)
        self.assertTrue(out["paused"], out)
        self.assertEqual(out["note"], "maintenance")
        before = len(history(node))
        time.sleep(2.5)  # on purpose: time passes while paused
        self.assertEqual(len(history(node)), before, "a paused schedule fired")
        rc, out, err = node.ctl("cron", "trigger", "tick")
        self.assertEqual(rc, 0, err)
        wait_until(lambda: any(r["why"] == "triggered" and r["outcome"] == "succeeded"
                               for r in history(node)), 30, "the triggered run")
        rc, out, err = node.ctl("cron", "resume", "tick")
        self.assertEqual(rc, 0, err)
        wait_until(lambda: any(r["outcome"] == "skipped" and "paused" in r["why"]
                               for r in history(node)), 30, "the paused seconds recorded")
        # bad input: each refused with its reason
        cases = [
            (("cron", "add", "x", "61 * * * *", "echo"), 2, "minute: 61 is out of range 0-59"),
            (("cron", "add", "x", "0 0 30 2 *", "echo"), 2, "never fires"),
            (("cron", "add", "x", "0 3 * * *", "echo", "--tz", "Mars/Olympus"), 2,
             "Mars/Olympus"),
            (("cron", "every", "tick", "5s", "echo"), 2, "exists"),
            (("cron", "every", "x", "5s", "echo", "--on", "all", "--require", "gpu"), 2,
             "--require"),
            (("cron", "rm", "nope"), EXIT_NOT_FOUND, "nope"),
            (("cron", "pause", "nope"), EXIT_NOT_FOUND, "nope"),
        ]
        for args, code, text in cases:
            rc, out, err = node.ctl(*args, json=False)
            self.assertEqual(rc, code, (args, out, err))
            self.assertIn(text, err, (args, err))
        rc, out, err = node.ctl("cron", "rm", "tick")
        self.assertEqual(rc, 0, err)
        rc, out, err = node.ctl("cron", "list")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, [])

    def test_on_all_runs_each_occurrence_once_on_every_member(self):
        nodes = self.cluster()
        names = sorted(x.name for x in nodes)
        rc, out, err = nodes[1].ctl("cron", "every", "all1", "1s", "echo", "x", "--on", "all")
        self.assertEqual(rc, 0, err)

        def complete(runs):
            """Occurrences that succeeded on every node."""
            where = collections.defaultdict(list)
            for r in runs:
                if r["outcome"] == "succeeded":
                    where[r["scheduled_s"]].append(r["node"])
            return [t for t, v in where.items() if sorted(v) == names]
        wait_until(lambda: len(complete(history(nodes[0], "all1"))) >= 3, 60,
                   "three occurrences succeeded on each of the 3 nodes")
        rc, out, err = nodes[2].ctl("cron", "pause", "all1", "--note", "checking")
        self.assertEqual(rc, 0, err)
        wait_until(lambda: not any(r["outcome"] in ("fired", "dispatched", "queued", "running")
                                   for r in history(nodes[0], "all1")), 30, "its runs to end")
        runs = history(nodes[0], "all1")
        fired = [r for r in runs if r["fired_ms"] > 0]
        # one run per node per occurrence, on every node (the oldest
        # occurrence may have lost lines to the 64 the history keeps)
        per = collections.Counter((r["scheduled_s"], r["node"]) for r in fired)
        self.assertEqual([k for k, c in per.items() if c > 1], [], runs)
        oldest = min(r["scheduled_s"] for r in fired)
        for t in {r["scheduled_s"] for r in fired}:
            got = sorted(r["node"] for r in fired if r["scheduled_s"] == t)
            if t != oldest or len(runs) < 64:
                self.assertEqual(got, names, "occurrence %d: %r" % (t, runs))
        for r in fired:
            self.assertEqual(r["outcome"], "succeeded", r)
        # each run is a task in its own node's journal, run there
        for x in nodes:
            rc, out, err = x.ctl("tasks", "--limit", 1000)
            self.assertEqual(rc, 0, err)
            mine = {t["task_id"]: t for t in out if t.get("handler") == "echo"}
            ids = [r["task_id"] for r in fired if r["node"] == x.name]
            for tid in ids:
                self.assertIn(tid, mine, "%s's run %d is not in its journal" % (x.name, tid))
                self.assertEqual(mine[tid]["node"], x.name, mine[tid])
                self.assertEqual(mine[tid]["state"], "succeeded", mine[tid])
            if len(runs) < 64:
                self.assertEqual(len(mine), len(ids), "%s: tasks %r vs runs %r" % (x.name, mine, runs))
        # a trigger runs on every member too, once each
        rc, out, err = nodes[0].ctl("cron", "trigger", "all1")
        self.assertEqual(rc, 0, err)

        def triggered():
            return sorted(r["node"] for r in history(nodes[0], "all1")
                          if r["why"] == "triggered" and r["outcome"] == "succeeded")
        wait_until(lambda: triggered() == names, 30, "the triggered run on each node")

    def test_a_member_that_is_no_voter_forwards_to_the_leader(self):
        secret = keygen(os.path.join(self.workdir, "cluster.secret"))
        common = ["--secret", secret, "--gossip-period", PERIOD, "--voters-target", "2"]
        n1 = self.new_node(*common, name="n1", secret=secret)
        n2 = self.new_node(*common, "--seeds", n1.addr, name="n2", secret=secret)
        n3 = self.new_node(*common, "--seeds", n1.addr, name="n3", secret=secret)
        nodes = [n1, n2, n3]
        wait_until(lambda: all(x.status().get("raft_leader") and
                               len(x.status().get("raft_voters", [])) == 2 for x in nodes), 30,
                   "every node knows the leader and the two voters")
        learner = next(x for x in nodes if x.status().get("raft_role") == "")
        self.assertEqual(len(learner.status()["raft_voters"]), 2)
        rc, out, err = learner.ctl("cron", "every", "tick", "1s", "echo", "x")
        self.assertEqual(rc, 0, err)
        wait_until(lambda: len(history(learner)) >= 2, 30, "runs, seen from the learner")
        self.assertEqual(learner.status()["schedules"], 1)

    def test_voters_pinned_by_name(self):
        secret = keygen(os.path.join(self.workdir, "cluster.secret"))
        common = ["--secret", secret, "--gossip-period", PERIOD, "--voters", "n2,n3"]
        n1 = self.new_node(*common, name="n1", secret=secret)
        n2 = self.new_node(*common, "--seeds", n1.addr, name="n2", secret=secret)
        n3 = self.new_node(*common, "--seeds", n1.addr, name="n3", secret=secret)
        # n1 starts the set (no seeds), adds the pinned members, then leaves it
        wait_until(lambda: all(sorted(x.status().get("raft_voters", [])) == ["n2", "n3"] and
                               x.status().get("raft_leader") in ("n2", "n3")
                               for x in (n1, n2, n3)), 30, "voters n2 and n3 only")
        self.assertEqual(n1.status()["raft_role"], "")

    def test_a_voter_change_that_loses_the_majority_is_refused(self):
        nodes = self.cluster()
        leader = self.leader_of(nodes)
        followers = [x for x in nodes if x is not leader]
        followers[0].kill9()
        wait_until(lambda: leader.members()[followers[0].name]["state"] == "dead", 30,
                   "%s declared dead" % followers[0].name)
        # 3 voters, one dead: removing the other live follower would leave
        # the leader alone of two voters
        rc, out, err = leader.ctl("voters", "remove", followers[1].name, json=False)
        self.assertEqual(rc, 2, (out, err))
        self.assertIn("majority", err)
        rc, out, err = leader.ctl("voters")
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(out["voters"]), 3, out)
        # and the leader still leads: the refusal changed nothing
        self.assertEqual(leader.status()["raft_role"], "leader")
        # removing the dead one is fine
        rc, out, err = leader.ctl("voters", "remove", followers[0].name, json=False)
        self.assertEqual(rc, 0, (out, err))
        wait_until(lambda: len(leader.status()["raft_voters"]) == 2, 30, "two voters")

    def test_a_follower_behind_the_snapshot_and_a_restart_from_snapshots(self):
        """Snapshots and log compaction: the log is compacted every 16
        entries; a follower down while the leader compacted past its log
        gets the leader's snapshot; a whole-cluster restart rebuilds the
        schedules from the snapshots; through all of it every second is
        decided exactly once."""
        nodes = self.cluster(extra=["--raft-snapshot-entries", "16"])
        rc, out, err = nodes[0].ctl("cron", "every", "tick", "1s", "echo", "x")
        self.assertEqual(rc, 0, err)
        wait_until(lambda: sum(1 for r in history(nodes[0]) if r["outcome"] == "succeeded") >= 3,
                   30, "three runs")
        leader = self.leader_of(nodes)
        self.assertIsNotNone(leader)
        f = next(x for x in nodes if x is not leader)
        behind = f.status()["raft_commit"]
        f.kill9()
        # the leader compacts past everything f holds (its log may run a
        # few entries past its commit index; 3 entries a second)
        wait_until(lambda: leader.status().get("raft_first", 0) > behind + 12, 60,
                   "the leader to compact past index %d" % (behind + 12))
        snap = leader.status()["raft_snapshot"]
        self.assertGreater(snap, behind)
        f.start()
        wait_until(lambda: f.status().get("raft_snapshot", 0) >= snap and
                   f.status().get("schedules") == 1, 60, "%s to install a snapshot" % f.name)
        self.assertIn("installed the leader's snapshot", f.log_text())
        wait_until(lambda: f.status()["raft_commit"] >= leader.status()["raft_commit"] - 3, 30,
                   "%s to catch up" % f.name)
        # every node stopped and started: the schedule comes back from the
        # snapshots (its history and watermark too) and goes on
        before = {r["scheduled_s"] for r in history(leader)}
        for x in nodes:
            x.stop()
        for x in nodes:
            x.start()
        wait_until(lambda: self.leader_of(nodes) is not None, 30, "a leader after the restart")
        new = self.leader_of(nodes)
        self.assertGreater(new.status().get("raft_snapshot", 0), 0)
        after = {r["scheduled_s"] for r in history(new)}
        self.assertTrue(before & after, "the history before the restart is kept")
        wait_until(lambda: max(r["scheduled_s"] for r in history(new)
                               if r["outcome"] == "succeeded") > max(before), 30,
                   "a run after the restart")
        runs = self.check_exactly_once(nodes)
        print("compaction: %d decisions checked; snapshots at %s" %
              (len(runs), [x.status().get("raft_snapshot") for x in nodes]), file=sys.stderr)


def runs_beyond(runs):
    return 0


if __name__ == "__main__":
    unittest.main()
