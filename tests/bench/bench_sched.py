#!/usr/bin/env python3
"""bench_sched.py - election and schedules on real chorusd processes (issue #11).

Measures, in one run, on loopback, 3 nodes (--gossip-period 200ms, the default
election_timeout of 500 ms):

1. Failover, KILLS times: an every-second schedule runs; kill -9 the leader;
   time to a new leader (polling `status` of the survivors) and to the first
   run the new leader decides (the history's fired_ms, against the kill's
   wall time). The old leader is restarted and follows before the next
   kill. Target: new leader p99 <= 2 s.
2. Lateness: SCHEDULES every-second schedules for LATE_S seconds; fire
   lateness = the occurrence's task started_ms (its journal) - the
   scheduled time, over every fired occurrence: the quorum commit of the
   FIRE, the dispatch, the task journal's commit and the worker's start.
   Target: p99 <= 50 ms.
3. Schedules held: HELD schedules (@every 1h: they hold memory, fire
   nothing; default 100,000) added to the leader by bench_cron_add (16
   libchorus threads): the leader's and a follower's RSS before and after,
   per schedule, and raft.db's size (the snapshots compact the log). Then
   phase 2 again with them held: lateness with 100,000 schedules against
   lateness without (the ratio is the figure).

Baselines measured in the same run, because machines are noisy: the
configured minimum election timeout (1), and a `clusterctl status` round trip
p50 on the leader (2). A benchmark, not a test: targets are printed MET or
MISSED, never enforced. Exit 0 when the run completed, 1 when something could
not be run, 2 for bad usage. Standard library only; nodes through
tests/integration/harness.py.
"""

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.normpath(os.path.join(HERE, "..", ".."))
HARNESS_PATH = os.path.join(SOURCE_DIR, "tests", "integration", "harness.py")
ELECTION_MS = 500
harness = None


def load_harness(build_dir):
    global harness
    if build_dir:
        os.environ["CHORUS_BUILD_DIR"] = os.path.abspath(build_dir)
    spec = importlib.util.spec_from_file_location("harness", HARNESS_PATH)
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)


class RunError(Exception):
    pass


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    rank = max(1, -(-len(xs) * p // 100))
    return xs[int(rank) - 1]


def ctl(node, *args, timeout_s=30):
    rc, out, err = node.ctl(*args, timeout_s=timeout_s)
    if rc != 0:
        raise RunError("clusterctl %s on %s: rc=%d %s" % (" ".join(map(str, args)), node.name,
                                                           rc, err))
    return out


def status(node):
    try:
        rc, out, _ = node.ctl("--timeout", "1s", "status", timeout_s=5)
    except Exception:
        return {}
    return out if rc == 0 and isinstance(out, dict) else {}


def leader_among(nodes):
    for x in nodes:
        if x.running() and status(x).get("raft_role") == "leader":
            return x
    return None


def wait(cond, timeout_s, what, interval_s=0.02):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(interval_s)
    raise RunError("timed out waiting for " + what)


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cluster(workdir):
    secret = harness.keygen(os.path.join(workdir, "cluster.secret"))
    common = ["--secret", secret, "--gossip-period", "200ms"]
    nodes = [harness.Node(workdir, name="n1", args=common, secret=secret)]
    nodes[0].start()
    for i in (2, 3):
        n = harness.Node(workdir, name="n%d" % i, args=common + ["--seeds", nodes[0].addr],
                         secret=secret)
        n.start()
        nodes.append(n)
    wait(lambda: all(len(status(x).get("raft_voters", [])) == 3 and status(x).get("raft_leader")
                     for x in nodes), 30, "3 voters and a leader", 0.1)
    return nodes


def failover(nodes, kills):
    ctl(nodes[0], "cron", "every", "tick", "1s", "echo", "x")
    elected, first_fire = [], []
    for k in range(kills):
        old = wait(lambda: leader_among(nodes), 15, "a leader")
        # the old leader must have fired since its election
        t_wall = time.time()
        t0 = time.monotonic()
        old.kill9()
        others = [x for x in nodes if x is not old]
        new = wait(lambda: leader_among(others), 15, "a new leader", 0.01)
        elected.append(time.monotonic() - t0)

        def fired_by_new():
            rc, out, _ = new.ctl("cron", "history", "tick", "--limit", 5, timeout_s=10)
            if rc != 0:
                return None
            runs = [r for r in out if r["node"] == new.name and r["fired_ms"] / 1000.0 > t_wall]
            return min(r["fired_ms"] for r in runs) if runs else None
        ms = wait(fired_by_new, 15, "a run decided by the new leader", 0.05)
        first_fire.append(ms / 1000.0 - t_wall)
        old.start()
        wait(lambda: status(old).get("raft_leader") == new.name, 30, "the old leader follows", 0.05)
        print("  kill %d/%d: new leader %.3f s, its first run %.3f s after the kill"
              % (k + 1, kills, elected[-1], first_fire[-1]), file=sys.stderr)
    ctl(nodes[0], "cron", "rm", "tick")
    return elected, first_fire


def lateness(nodes, schedules, seconds):
    leader = leader_among(nodes)
    rtt = []
    for _ in range(20):
        t = time.monotonic()
        ctl(leader, "status")
        rtt.append(time.monotonic() - t)
    for i in range(schedules):
        ctl(leader, "cron", "every", "late%d" % i, "1s", "echo", "x")
    time.sleep(seconds)  # on purpose: the schedules run
    for i in range(schedules):
        ctl(leader, "cron", "pause", "late%d" % i)
    time.sleep(1)  # on purpose: the last runs end
    tasks = {t["task_id"]: t for t in ctl(leader, "tasks", "--limit", 100000)}
    decided, started = [], []
    for i in range(schedules):
        for r in ctl(leader, "cron", "history", "late%d" % i, "--limit", 64):
            if r["fired_ms"] and r["node"] == leader.name and r["task_id"] in tasks:
                t = tasks[r["task_id"]]
                decided.append(r["fired_ms"] - r["scheduled_s"] * 1000)
                if t.get("started_ms"):
                    started.append(t["started_ms"] - r["scheduled_s"] * 1000)
        ctl(leader, "cron", "rm", "late%d" % i)
    return decided, started, rtt


def held(nodes, count, build_dir):
    leader = leader_among(nodes)
    follower = next(x for x in nodes if x is not leader)
    before = rss_kb(leader.proc.pid), rss_kb(follower.proc.pid)
    tool = os.path.join(build_dir, "bench_cron_add")
    t = time.monotonic()
    r = subprocess.run([tool, leader.addr, leader.secret, "held", str(count), "16", "@every 1h"],
                       capture_output=True, text=True, timeout=3600)
    secs = time.monotonic() - t
    if r.returncode != 0:
        raise RunError("bench_cron_add: %s %s" % (r.stdout, r.stderr))
    # every node applied them all
    wait(lambda: all(status(x).get("schedules", 0) >= count for x in nodes), 300,
         "every node to hold %d schedules" % count, interval_s=0.5)
    after = rss_kb(leader.proc.pid), rss_kb(follower.proc.pid)
    db = os.path.getsize(os.path.join(leader.data_dir, "raft.db"))
    wal = os.path.join(leader.data_dir, "raft.db-wal")
    db += os.path.getsize(wal) if os.path.exists(wal) else 0
    return before, after, secs, db, status(leader)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default=os.path.join(SOURCE_DIR, "build"))
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--schedules", type=int, default=40)
    ap.add_argument("--late-s", type=int, default=30)
    ap.add_argument("--held", type=int, default=100000)
    ap.add_argument("--quick", action="store_true", help="3 kills, 10 schedules x 8 s, 2,000 held")
    args = ap.parse_args()
    if args.quick:
        args.kills, args.schedules, args.late_s, args.held = 3, 10, 8, 2000
    load_harness(args.build_dir)
    workdir = tempfile.mkdtemp(prefix="chorus-bench-sched-")
    nodes = []
    try:
        nodes = cluster(workdir)
        print("== failover: %d kills of the leader" % args.kills, file=sys.stderr)
        elected, first = failover(nodes, args.kills)
        print("== lateness: %d every-second schedules for %d s" % (args.schedules, args.late_s),
              file=sys.stderr)
        decided, late, rtt = lateness(nodes, args.schedules, args.late_s)
        print("== held: %d schedules" % args.held, file=sys.stderr)
        # the lateness schedules are part of the total held
        before, after, add_s, db_bytes, lst = held(nodes, args.held - args.schedules,
                                                   args.build_dir)
        print("== lateness again, with them held", file=sys.stderr)
        _, late_held, _ = lateness(nodes, args.schedules, args.late_s)
    except RunError as e:
        print("bench_sched: %s" % e, file=sys.stderr)
        return 1
    finally:
        for n in nodes:
            n.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    e50, e99 = pct(elected, 50), pct(elected, 99)
    f50, f99 = pct(first, 50), pct(first, 99)
    l50, l99 = pct(late, 50), pct(late, 99)
    d50, d99 = pct(decided, 50), pct(decided, 99)
    r50 = pct(rtt, 50)
    print("\n| figure | value | baseline (same run) | ratio |")
    print("|---|---|---|---|")
    print("| new leader after kill -9, p50 / p99 (%d kills) | %.3f / %.3f s | election timeout %.3f s "
          "| %.2fx / %.2fx |" % (len(elected), e50, e99, ELECTION_MS / 1000, e50 / (ELECTION_MS / 1000),
                                 e99 / (ELECTION_MS / 1000)))
    print("| its first run after the kill, p50 / p99 | %.3f / %.3f s | - | - |" % (f50, f99))
    print("| decided (FIRE proposed) after its time, p50 / p99 | %d / %d ms | - | - |" % (d50, d99))
    print("| fire lateness: task started after its time, p50 / p99 (%d fires) | %d / %d ms "
          "| status round trip p50 %.1f ms | %.1fx / %.1fx |"
          % (len(late), l50, l99, r50 * 1000, l50 / (r50 * 1000), l99 / (r50 * 1000)))
    h50, h99 = pct(late_held, 50), pct(late_held, 99)
    print("| schedules held: %d, leader RSS | %d -> %d KiB (%.0f B each) | - | - |"
          % (args.held, before[0], after[0], (after[0] - before[0]) * 1024.0 / max(1, args.held)))
    print("| same, a follower's RSS | %d -> %d KiB (%.0f B each) | - | - |"
          % (before[1], after[1], (after[1] - before[1]) * 1024.0 / max(1, args.held)))
    print("| adding them (bench_cron_add, 16 threads) | %.1f s (%.0f adds/s) | - | - |"
          % (add_s, (args.held - args.schedules) / max(add_s, 1e-9)))
    print("| raft.db + WAL on the leader, snapshot at %d, log from %d | %.1f MiB | - | - |"
          % (lst.get("raft_snapshot", 0), lst.get("raft_first", 0), db_bytes / 1048576.0))
    print("| fire lateness with them held, p50 / p99 (%d fires) | %d / %d ms | without: %d / %d ms "
          "| %.2fx / %.2fx |" % (len(late_held), h50, h99, l50, l99, h50 / max(l50, 1),
                                 h99 / max(l99, 1)))
    print("\ntargets: new leader p99 <= 2 s: %s; lateness p99 <= 50 ms: %s (with %d held: %s)"
          % ("MET" if e99 <= 2.0 else "MISSED", "MET" if l99 <= 50 else "MISSED", args.held,
             "MET" if h99 <= 50 else "MISSED"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
