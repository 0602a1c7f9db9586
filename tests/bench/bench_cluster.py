#!/usr/bin/env python3
"""bench_cluster.py - what the cluster costs and gains, on real chorusd processes (issue #4).

Measures, in one run, on loopback:

1. Failure detection: 5 nodes (every node seeds every other, one shared
   secret, --gossip-period 200ms). KILLS times: kill -9 one member (n1, n2,
   ... in turn), poll the 4 survivors in parallel threads with
   `clusterctl --json members` back to back, and take the time from the kill
   to each survivor showing the victim "dead". Per kill: the FIRST survivor
   and the LAST one (= every survivor has marked it dead). Then the victim is
   restarted on its data dir (same member, higher incarnation) and the next
   kill waits until all 5 nodes show all 5 members alive. Target: p99 of
   "every survivor" <= 2 s.
2. Spreading: 3 nodes x --workers 4; a fan-out of FANOUT `sleep` tasks of
   TASK_MS each submitted to n1; wall time of `clusterctl submit --fanout`
   against the ideal FANOUT x TASK_MS / 12. Target: ratio <= 1.15x. Also
   how many tasks each node ran (the "node" of each result).
3. Context: the same fan-out on one node with --workers 4 (ideal FANOUT x
   TASK_MS / 4), to show the speed-up of (2).

A benchmark, not a test: targets are printed as MET or MISSED and never
enforced. Exit status 0 when the run completed whatever the figures, 1 when
something could not be run (a node did not start or converge, a clusterctl
call failed, a task did not succeed), 2 for bad usage.

When the built clusterctl has no `members` command yet, the membership view of
each node is read from its log instead ("member NAME (ID) alive -> dead"
lines, each with the node's own timestamp), and the run says so.

Standard library only. Nodes are started through tests/integration/harness.py.
"""

import argparse
import calendar
import datetime
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.normpath(os.path.join(HERE, "..", ".."))
HARNESS_PATH = os.path.join(SOURCE_DIR, "tests", "integration", "harness.py")
SWIM_C = os.path.join(SOURCE_DIR, "node", "core", "swim.c")

DETECT_NODES = 5
SPREAD_NODES = 3
SPREAD_WORKERS = 4
DETECT_TARGET_P99_S = 2.0
SPREAD_TARGET_RATIO = 1.15
DETECT_TIMEOUT_S = 25.0      # a survivor that has not marked the victim dead by then: "not detected"
CONVERGE_TIMEOUT_S = 60.0    # all members alive in every view
RESTART_GRACE_S = 3.0        # a false suspicion this soon after the member's restart is counted apart
REJOIN_SLOW_S = 2.0          # a restart slower than this to converge is described in the progress
FANOUT_TIMEOUT_S = 600.0
POLL_CTL_TIMEOUT = "1s"
LOG_POLL_PAUSE_S = 0.01      # between two reads of a node log (membership from logs)      # clusterctl --timeout for one members poll

harness = None               # tests/integration/harness.py, loaded in main()


def load_harness(build_dir):
    global harness
    if build_dir:
        os.environ["CHORUS_BUILD_DIR"] = os.path.abspath(build_dir)
    spec = importlib.util.spec_from_file_location("harness", HARNESS_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    harness = mod


class RunError(Exception):
    """Something could not be run: the bench exits 1."""


# ---------------------------------------------------------------- statistics

def pct(sorted_xs, p):
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_xs:
        return None
    rank = max(1, -(-len(sorted_xs) * p // 100))   # ceil(n * p / 100)
    return sorted_xs[int(rank) - 1]


def fmt_s(x):
    return "-" if x is None else ("%.3f" % x)


# ------------------------------------------------------------- machine, settings

def machine_text():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = ", %.0f GiB RAM" % (int(line.split()[1]) / 1048576.0)
                    break
    except OSError:
        pass
    try:
        load = "load average %s" % " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        load = ""
    return "%s %s, %d cores%s, Linux %s, %s at start" % (
        platform.machine(), model, os.cpu_count() or 0, mem, platform.release(), load)


def swim_defaults():
    """The fields set by swim_config_defaults() in node/core/swim.c, so the
    printed settings follow the code (empty when it cannot be read)."""
    try:
        with open(SWIM_C) as f:
            text = f.read()
    except OSError:
        return {}
    m = re.search(r"void swim_config_defaults\([^)]*\)\s*\{(.*?)\n\}", text, re.S)
    if not m:
        return {}
    return {k: int(v) for k, v in re.findall(r"c->(\w+)\s*=\s*(\d+)\s*;", m.group(1))}


def parse_ms(text):
    m = re.fullmatch(r"\s*(\d+)\s*(ms|s|m)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError("a duration like 200ms or 1s: %r" % text)
    n = int(m.group(1))
    return n * {"ms": 1, None: 1000, "s": 1000, "m": 60000}[m.group(2)]


def protocol_settings(period_ms, live_count):
    """The SWIM/Lifeguard parameters the nodes run with (the shell sets
    probe_timeout = period/2 unless the config file says otherwise)."""
    d = swim_defaults()
    alpha = d.get("suspicion_alpha")
    beta = d.get("suspicion_beta")
    k = d.get("suspicion_k")
    s = {
        "gossip_period_ms": period_ms,
        "probe_timeout_ms": period_ms // 2,
        "indirect_count": d.get("indirect_count"),
        "suspicion_alpha": alpha,
        "suspicion_beta": beta,
        "suspicion_k": k,
        "lhm_max": d.get("lhm_max"),
        "retransmit_mult": d.get("retransmit_mult"),
        "push_pull_periods": d.get("push_pull_periods"),
        "source": os.path.relpath(SWIM_C, SOURCE_DIR) if d else "(swim.c not readable)",
    }
    if alpha and beta and k is not None:
        # swim.c susp_start: min = alpha * log10(N) * period, log10 taken as 1 for N <= 10;
        # max = beta * min; the timeout shrinks from max towards min as
        # ln(c+1)/ln(k+1) with c independent confirmations (Lifeguard §4)
        import math
        lg = math.log10(live_count) if live_count > 10 else 1.0
        smin = int(alpha * lg * period_ms)
        smax = smin * beta
        s["suspicion_min_ms"] = smin
        s["suspicion_max_ms"] = smax
        s["suspicion_by_confirmations_ms"] = [
            int(max(smin, smax - (smax - smin) * (math.log(c + 1) / math.log(k + 1) if k else 1)))
            for c in range(0, (k or 0) + 1)]
    return s


def settings_lines(s):
    out = ["gossip period %d ms, probe timeout %d ms (period/2), indirect probes %s, "
           "retransmit mult %s, push-pull every %s periods"
           % (s["gossip_period_ms"], s["probe_timeout_ms"], s["indirect_count"],
              s["retransmit_mult"], s["push_pull_periods"])]
    if "suspicion_min_ms" in s:
        out.append("suspicion (Lifeguard): alpha %s, beta %s, k %s, lhm max %s -> with %d live "
                   "members min %d ms, max %d ms; timeout after 0..k confirmations: %s ms"
                   % (s["suspicion_alpha"], s["suspicion_beta"], s["suspicion_k"], s["lhm_max"],
                      DETECT_NODES, s["suspicion_min_ms"], s["suspicion_max_ms"],
                      ", ".join(str(x) for x in s["suspicion_by_confirmations_ms"])))
    out.append("(defaults read from %s)" % s["source"])
    return out


# ------------------------------------------------------------- membership views

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z\s+\S+\s+cluster: member (\S+) "
                      r"\(([0-9a-f]+)\) (?:(\w+) -> (\w+)|joined at (\S+)|forgotten)")


def log_ts_ms(date, millis):
    return calendar.timegm(time.strptime(date, "%Y-%m-%dT%H:%M:%S")) * 1000 + int(millis)


class MembersView:
    """One look at a node's membership: name -> (state, since unix ms)."""

    def __init__(self, states, ok=True):
        self.states = states
        self.ok = ok

    def state(self, name):
        return self.states.get(name, (None, None))


def view_by_ctl(node):
    """`clusterctl --json members` on the node."""
    try:
        rc, out, err = node.ctl("--timeout", POLL_CTL_TIMEOUT, "members", timeout_s=10)
    except AssertionError:
        return MembersView({}, ok=False)
    if rc != 0 or not isinstance(out, list):
        return MembersView({}, ok=False)
    states = {}
    for m in out:
        if isinstance(m, dict) and "name" in m:
            states[m["name"]] = (m.get("state"), m.get("since_ms"))
    return MembersView(states)


def view_by_log(node):
    """The node's view rebuilt from its log since its last start (itself
    counted alive: it does not log its own state)."""
    states = {node.name: ("alive", None)}
    for line in node.log_lines_since_last_start():
        m = LOG_LINE.match(line)
        if not m:
            continue
        date, millis, name = m.group(1), m.group(2), m.group(3)
        ts = log_ts_ms(date, millis)
        if m.group(6):
            states[name] = (m.group(6), ts)
        elif m.group(7):
            states[name] = ("alive", ts)
        else:
            states.pop(name, None)
    return MembersView(states, ok=node.running())


def have_members_command():
    try:
        rc, out, err = harness.run_cmd([harness.CLUSTERCTL, "help"], timeout_s=10)
    except AssertionError:
        return False
    return re.search(r"^\s+members\b", out + err, re.M) is not None


# ------------------------------------------------------------- cluster helpers

class Cluster:
    """N nodes on loopback sharing one secret, each seeding all the others."""

    def __init__(self, workdir, prefix, count, extra_args):
        self.dir = os.path.join(workdir, prefix)
        os.makedirs(self.dir)
        self.secret = os.path.join(self.dir, "secret")
        rc, out, err = harness.run_cmd([harness.CLUSTERCTL, "keygen", self.secret], timeout_s=30)
        if rc != 0 or not os.path.exists(self.secret):
            raise RunError("clusterctl keygen failed: rc=%s %s" % (rc, err.strip()))
        self.nodes = [harness.Node(self.dir, name="n%d" % (i + 1), secret=self.secret)
                      for i in range(count)]
        for n in self.nodes:
            args = ["--secret", self.secret] + list(extra_args)
            seeds = [o.addr for o in self.nodes if o is not n]
            if seeds:
                args += ["--seeds", ",".join(seeds)]
            n.args = args

    def start(self):
        for n in self.nodes:
            n.start(wait=False)
        for n in self.nodes:
            try:
                n.wait_ready()
            except AssertionError as e:
                raise RunError(str(e))

    def names(self):
        return [n.name for n in self.nodes]

    def cleanup(self):
        for n in self.nodes:
            kill_node(n)


def kill_node(node):
    """kill -9 of a running chorusd and its process group, sent before the
    process is reaped so that its pid (= its group id) cannot have been
    reused by then. Its workers die with it (PR_SET_PDEATHSIG). Groups of
    earlier starts are forgotten, never signalled: with the bench spawning
    hundreds of clusterctl processes a second, pids wrap (pid_max 32768)
    within minutes and a stale group id may belong to someone else by then
    (harness.Node.cleanup would signal them all)."""
    p = node.proc
    if p is not None and p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            p.kill()
        try:
            p.wait(timeout=harness.STOP_TIMEOUT_S)
        except Exception:
            pass
    node.pgids = []


def check_running(nodes, expected_down=()):
    """A node that exited although the bench did not stop it: the run is void."""
    for n in nodes:
        if n not in expected_down and not n.running():
            rc = n.proc.returncode if n.proc else None
            raise RunError("node %s exited on its own (exit status %s%s) while the bench ran; "
                           "its log:\n%s" % (n.name, rc, " = killed by signal %d" % -rc
                                             if rc is not None and rc < 0 else "",
                                             n.log_tail(30)))


def wait_converged(nodes, names, view, timeout_s=CONVERGE_TIMEOUT_S):
    """Until every node in `nodes` shows every name in `names` alive. Returns
    the last view that was not there yet: (node name, {member: state} of the
    members not alive), or None when all were converged at the first look."""
    deadline = time.monotonic() + timeout_s
    last = {}
    lag = None
    while True:
        done = True
        for n in nodes:
            v = view(n)
            last[n.name] = {k: s for k, (s, _) in v.states.items()}
            if not v.ok or any(v.state(name)[0] != "alive" for name in names):
                lag = (n.name, {name: v.state(name)[0] for name in names
                                if v.state(name)[0] != "alive"} if v.ok else "no answer")
                done = False
                break
        if done:
            return lag
        check_running(nodes)
        if time.monotonic() >= deadline:
            raise RunError("membership did not converge within %.0f s: %r\n%s"
                           % (timeout_s, last, "\n".join(
                               "-- %s:\n%s" % (n.name, n.log_tail(15)) for n in nodes)))
        time.sleep(0.02)


# ------------------------------------------------------------- 1. failure detection

def measure_one_kill(victim, survivors, view):
    """kill -9 victim; poll every survivor in its own thread until it shows the
    victim dead. Returns per survivor: dead (polled, s after kill), dead by the
    node's own clock (s), first suspect seen (s), polls made."""
    results = {}
    lock = threading.Lock()
    stop = threading.Event()
    ready = threading.Barrier(len(survivors) + 1)
    t0 = {}
    # reading a log file costs microseconds: without a pause the four threads
    # would spin and take a core from the nodes measured
    pause_s = LOG_POLL_PAUSE_S if view is view_by_log else 0.0

    def poll(node):
        r = {"dead_s": None, "dead_node_s": None, "suspect_s": None, "polls": 0, "errors": 0}
        ready.wait()
        kill_mono, kill_unix_ms = t0["mono"], t0["unix_ms"]
        deadline = kill_mono + DETECT_TIMEOUT_S
        while not stop.is_set():
            v = view(node)
            now = time.monotonic()
            r["polls"] += 1
            if not v.ok:
                r["errors"] += 1
            state, since_ms = v.state(victim.name)
            if state == "suspect" and r["suspect_s"] is None:
                r["suspect_s"] = now - kill_mono
            if state == "dead":
                r["dead_s"] = now - kill_mono
                if since_ms:
                    r["dead_node_s"] = (since_ms - kill_unix_ms) / 1000.0
                if r["suspect_s"] is None:   # suspicion ran out between two polls
                    r["suspect_s"] = r["dead_s"]
                break
            if now >= deadline:
                break
            if pause_s:
                time.sleep(pause_s)
        with lock:
            results[node.name] = r

    threads = [threading.Thread(target=poll, args=(n,), daemon=True) for n in survivors]
    for t in threads:
        t.start()
    t0["unix_ms"] = time.time() * 1000.0
    t0["mono"] = time.monotonic()
    kill_node(victim)
    ready.wait()
    for t in threads:
        t.join(DETECT_TIMEOUT_S + 15)
    stop.set()
    return results, t0["unix_ms"]


def run_detection(workdir, args, view, log):
    period = args.gossip_period_ms
    cl = Cluster(workdir, "detect", DETECT_NODES,
                 ["--gossip-period", "%dms" % period, "--workers", "1"])
    try:
        log("detection: starting %d nodes (gossip period %d ms)" % (DETECT_NODES, period))
        cl.start()
        wait_converged(cl.nodes, cl.names(), view)
        kills = []
        for i in range(args.kills):
            victim = cl.nodes[i % DETECT_NODES]
            survivors = [n for n in cl.nodes if n is not victim]
            r, kill_unix_ms = measure_one_kill(victim, survivors, view)
            check_running(survivors)
            dead = [x["dead_s"] for x in r.values()]
            k = {
                "victim": victim.name,
                "first_s": min((d for d in dead if d is not None), default=None),
                "all_s": None if None in dead else max(dead),
                "detected_by": sum(1 for d in dead if d is not None),
                "node_clock_first_s": min((x["dead_node_s"] for x in r.values()
                                           if x["dead_node_s"] is not None), default=None),
                "node_clock_all_s": (None if any(x["dead_node_s"] is None for x in r.values())
                                     else max(x["dead_node_s"] for x in r.values())),
                "first_suspect_s": min((x["suspect_s"] for x in r.values()
                                        if x["suspect_s"] is not None), default=None),
                "polls": sum(x["polls"] for x in r.values()),
                "poll_errors": sum(x["errors"] for x in r.values()),
                "per_survivor": r,
                "kill_unix_ms": kill_unix_ms,
            }
            kills.append(k)
            log("  kill %2d/%d %s: first dead %s s, all dead %s s (node clocks %s / %s), "
                "first suspect %s s, %d polls"
                % (i + 1, args.kills, victim.name, fmt_s(k["first_s"]), fmt_s(k["all_s"]),
                   fmt_s(k["node_clock_first_s"]), fmt_s(k["node_clock_all_s"]),
                   fmt_s(k["first_suspect_s"]), k["polls"]))
            t_restart = time.monotonic()
            k["restart_unix_ms"] = time.time() * 1000.0
            try:
                victim.start(wait=True)
            except AssertionError as e:
                raise RunError("restart of %s failed: %s" % (victim.name, e))
            k["restart_s"] = time.monotonic() - t_restart
            lag = wait_converged(cl.nodes, cl.names(), view)
            k["rejoin_s"] = time.monotonic() - t_restart
            if k["rejoin_s"] > REJOIN_SLOW_S:
                log("    slow rejoin: %.3f s (answering after %.3f s); last view not converged: "
                    "%s %s" % (k["rejoin_s"], k["restart_s"], lag[0] if lag else "-",
                               lag[1] if lag else ""))
        return kills, false_transitions(cl.nodes, kills, time.time() * 1000.0)
    finally:
        if args.keep:
            for n in cl.nodes:
                if n.running():
                    n.stop()
        cl.cleanup()


def false_transitions(nodes, kills, end_unix_ms):
    """From every node's log, between the first kill and end_unix_ms: how
    often a member that was running was marked suspect or dead (a member is
    down from its kill to its restart), and how many of those hit a member
    restarted less than RESTART_GRACE_S before."""
    out = {"suspect": 0, "dead": 0, "suspect_after_restart": 0, "dead_after_restart": 0}
    if not kills:
        return out
    start_ms = kills[0]["kill_unix_ms"]
    for n in nodes:
        for line in n.log_text().splitlines():
            m = LOG_LINE.match(line)
            if not m or m.group(6) not in ("suspect", "dead"):
                continue
            ts = log_ts_ms(m.group(1), m.group(2))
            if ts < start_ms or ts > end_unix_ms:
                continue
            name = m.group(3)
            if any(k["victim"] == name and k["kill_unix_ms"] <= ts <= k["restart_unix_ms"]
                   for k in kills):
                continue
            out[m.group(6)] += 1
            if any(k["victim"] == name and
                   0 <= ts - k["restart_unix_ms"] <= RESTART_GRACE_S * 1000 for k in kills):
                out[m.group(6) + "_after_restart"] += 1
    return out


def detection_summary(kills, false):
    def dist(key):
        xs = [k[key] for k in kills]
        missing = sum(1 for x in xs if x is None)
        got = sorted(x for x in xs if x is not None)
        # an undetected kill counts as slower than any detected one
        full = got + [float("inf")] * missing
        return {"p50": pct(full, 50), "p99": pct(full, 99), "max": full[-1] if full else None,
                "mean": statistics.mean(got) if got else None, "missing": missing, "n": len(xs)}
    polls = sum(k["polls"] for k in kills)
    poll_time = sum(x["dead_s"] or DETECT_TIMEOUT_S
                    for k in kills for x in k["per_survivor"].values())
    return {
        "all": dist("all_s"),
        "first": dist("first_s"),
        "node_clock_all": dist("node_clock_all_s"),
        "first_suspect": dist("first_suspect_s"),
        "rejoin": dist("rejoin_s"),
        "poll_interval_ms": 1000.0 * poll_time / polls if polls else None,
        "poll_errors": sum(k["poll_errors"] for k in kills),
        "false": false,
    }


# ------------------------------------------------------------- 2./3. spreading

def fanout_once(node, path, count):
    t0 = time.monotonic()
    try:
        rc, out, err = node.ctl("--timeout", "120s", "submit", "sleep", "--fanout", path,
                                timeout_s=FANOUT_TIMEOUT_S)
    except AssertionError as e:
        raise RunError(str(e))
    wall = time.monotonic() - t0
    if rc != 0:
        raise RunError("fan-out on %s failed: rc=%s %s\n%s" % (node.name, rc, err.strip()[:2000],
                                                             node.log_tail(20)))
    try:
        results = harness.task_list(out)
    except AssertionError as e:
        raise RunError(str(e)[:2000])
    bad = [r for r in results if r.get("state") != "succeeded"]
    if len(results) != count or bad:
        raise RunError("fan-out on %s: %d results, %d not succeeded (e.g. %r)"
                       % (node.name, len(results), len(bad), bad[:2]))
    per_node = {}
    for r in results:
        who = r.get("node") or "(no node field)"
        per_node[who] = per_node.get(who, 0) + 1
    starts = [r["started_ms"] for r in results if "started_ms" in r]
    ends = [r["finished_ms"] for r in results if "finished_ms" in r]
    span = (max(ends) - min(starts)) / 1000.0 if starts and ends else None
    return {"wall_s": wall, "span_s": span, "per_node": per_node}


def run_fanout(workdir, args, label, count, log):
    """One fan-out setting: returns the rounds and the median round."""
    nodes = count
    ideal = args.fanout * args.task_ms / 1000.0 / (nodes * SPREAD_WORKERS)
    cl = Cluster(workdir, label, nodes,
                 ["--gossip-period", "%dms" % args.gossip_period_ms,
                  "--workers", str(SPREAD_WORKERS)])
    try:
        log("%s: starting %d node(s) x %d workers" % (label, nodes, SPREAD_WORKERS))
        cl.start()
        wait_converged(cl.nodes, cl.names(), args.view)
        path = os.path.join(cl.dir, "sleeps.txt")
        with open(path, "w") as f:
            f.write(("%d\n" % args.task_ms) * args.fanout)
        warm = os.path.join(cl.dir, "warm.txt")
        with open(warm, "w") as f:
            f.write("1\n" * (nodes * SPREAD_WORKERS * 4))
        fanout_once(cl.nodes[0], warm, nodes * SPREAD_WORKERS * 4)
        rounds = []
        for i in range(args.rounds):
            r = fanout_once(cl.nodes[0], path, args.fanout)
            r["ratio"] = r["wall_s"] / ideal
            rounds.append(r)
            log("  round %d/%d: %.3f s (ideal %.3f s, %.2fx), node-side span %s s, per node %s"
                % (i + 1, args.rounds, r["wall_s"], ideal, r["ratio"], fmt_s(r["span_s"]),
                   json.dumps(r["per_node"], sort_keys=True)))
        med = sorted(rounds, key=lambda r: r["wall_s"])[(len(rounds) - 1) // 2]
        return {"nodes": nodes, "workers": SPREAD_WORKERS, "tasks": args.fanout,
                "task_ms": args.task_ms, "ideal_s": ideal, "rounds": rounds, "median": med}
    finally:
        cl.cleanup()


# ------------------------------------------------------------- report

def figures(det, spread, single):
    """The table rows: key, label, value, unit, target text, met (None = no target)."""
    rows = []
    if det:
        a, f, nc, su = det["all"], det["first"], det["node_clock_all"], det["first_suspect"]
        n = a["n"]
        rows += [
            ("detect_all_p50", "detection, every survivor marks dead, p50", a["p50"], "s", None, None),
            ("detect_all_p99", "detection, every survivor marks dead, p99", a["p99"], "s",
             "<= %.0f s" % DETECT_TARGET_P99_S,
             a["p99"] is not None and a["p99"] <= DETECT_TARGET_P99_S),
            ("detect_all_max", "detection, every survivor marks dead, max", a["max"], "s", None, None),
            ("detect_first_p50", "detection, first survivor marks dead, p50", f["p50"], "s", None, None),
            ("detect_first_p99", "detection, first survivor marks dead, p99", f["p99"], "s", None, None),
            ("detect_first_max", "detection, first survivor marks dead, max", f["max"], "s", None, None),
            ("detect_all_node_clock_p50", "  same by the nodes' own clocks, p50", nc["p50"], "s",
             None, None),
            ("detect_all_node_clock_p99", "  same by the nodes' own clocks, p99", nc["p99"], "s",
             None, None),
            ("suspect_first_p50", "first suspect seen, p50", su["p50"], "s", None, None),
            ("rejoin_p50", "restart of the victim to all 5 alive in every view, p50",
             det["rejoin"]["p50"], "s", None, None),
            ("rejoin_max", "restart of the victim to all 5 alive in every view, max",
             det["rejoin"]["max"], "s", None, None),
            ("false_suspect", "running members marked suspect (of them: < %.0f s after "
             "their restart)" % RESTART_GRACE_S, "%d (%d)" % (det["false"]["suspect"],
                                                             det["false"]["suspect_after_restart"]),
             "", None, None),
            ("false_dead", "running members marked dead (of them: < %.0f s after their restart)"
             % RESTART_GRACE_S, "%d (%d)" % (det["false"]["dead"],
                                             det["false"]["dead_after_restart"]), "", None, None),
            ("detect_undetected", "kills not detected by all within %.0f s (of %d)"
             % (DETECT_TIMEOUT_S, n), a["missing"], "", None, None),
            ("poll_interval", "poll interval per survivor, mean", det["poll_interval_ms"], "ms",
             None, None),
        ]
    if spread:
        m = spread["median"]
        rows += [
            ("spread_wall", "fan-out %d x %d ms on %d nodes x %d workers, wall (median)"
             % (spread["tasks"], spread["task_ms"], spread["nodes"], spread["workers"]),
             m["wall_s"], "s", None, None),
            ("spread_ideal", "  ideal (tasks x duration / %d workers)"
             % (spread["nodes"] * spread["workers"]), spread["ideal_s"], "s", None, None),
            ("spread_ratio", "  wall / ideal", m["ratio"], "x", "<= %.2fx" % SPREAD_TARGET_RATIO,
             m["ratio"] <= SPREAD_TARGET_RATIO),
            ("spread_span", "  node-side span (first start to last finish)", m["span_s"], "s",
             None, None),
            ("spread_per_node", "  tasks run per node", ", ".join(
                "%s %d" % (k, v) for k, v in sorted(m["per_node"].items())), "", None, None),
        ]
    if single:
        m = single["median"]
        rows += [
            ("single_wall", "same fan-out on 1 node x %d workers, wall (median)" % single["workers"],
             m["wall_s"], "s", None, None),
            ("single_ideal", "  ideal", single["ideal_s"], "s", None, None),
            ("single_ratio", "  wall / ideal", m["ratio"], "x", None, None),
        ]
        if spread:
            rows.append(("speedup", "speed-up, %d nodes over 1 (ideal %dx)"
                         % (spread["nodes"], spread["nodes"]),
                         m["wall_s"] / spread["median"]["wall_s"], "x", None, None))
    return rows


def table_text(rows):
    lines = ["%-66s %10s %-5s %s" % ("figure", "value", "unit", "target"), "-" * 100]
    for key, label, value, unit, target, met in rows:
        if isinstance(value, str):
            v = value
        elif value is None:
            v = "-"
        elif value == float("inf"):
            v = "undetected"
        elif unit == "s":
            v = "%.3f" % value
        elif unit == "x":
            v = "%.2fx" % value
            unit = ""
        elif unit == "ms":
            v = "%.1f" % value
        else:
            v = "%d" % value
        t = "" if target is None else "%s %s" % (target, "MET" if met else "MISSED")
        if isinstance(value, str) and len(value) > 10:
            lines.append("%-34s %s" % (label, v))
        else:
            lines.append("%-66s %10s %-5s %s" % (label, v, unit, t))
    return "\n".join(lines)


def json_safe(x):
    """inf (an undetected kill in a percentile) becomes null: JSON has no infinity."""
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 5 kills, a fan-out of 240, one round")
    ap.add_argument("--json", action="store_true",
                    help="one JSON object on stdout; progress and the table on stderr")
    ap.add_argument("--build-dir", help="where chorusd and clusterctl are (default: build/)")
    ap.add_argument("--kills", type=int, help="kill -9 rounds (default 20, quick 5)")
    ap.add_argument("--fanout", type=int, help="tasks in the fan-out (default 1200, quick 240)")
    ap.add_argument("--task-ms", type=int, default=50, help="duration of one sleep task (default 50)")
    ap.add_argument("--rounds", type=int, help="fan-out rounds, the median is the figure "
                    "(default 3, quick 1)")
    ap.add_argument("--gossip-period", type=parse_ms, default=200, dest="gossip_period_ms",
                    help="chorusd --gossip-period for every node (default 200ms)")
    ap.add_argument("--only", choices=("detect", "spread"), help="run one part only")
    ap.add_argument("--skip-single", action="store_true", help="skip the one-node fan-out (3)")
    ap.add_argument("--membership-from", choices=("auto", "ctl", "log"), default="auto",
                    help="read membership with clusterctl members or from node logs "
                    "(default: ctl when the command exists)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    args.kills = args.kills if args.kills is not None else (5 if args.quick else 20)
    args.fanout = args.fanout if args.fanout is not None else (240 if args.quick else 1200)
    args.rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    if args.kills < 1 or args.fanout < 1 or args.rounds < 1 or args.task_ms < 1:
        ap.error("--kills, --fanout, --rounds and --task-ms must be at least 1")

    load_harness(args.build_dir)
    missing = [p for p in (harness.CHORUSD, harness.CLUSTERCTL) if not os.access(p, os.X_OK)]
    if missing:
        sys.stderr.write("not built: %s (bash scripts/build.sh build, or --build-dir)\n"
                         % ", ".join(missing))
        return 1

    out = sys.stderr if args.json else sys.stdout

    def log(msg):
        out.write(msg + "\n")
        out.flush()

    mode = args.membership_from
    if mode == "auto":
        mode = "ctl" if have_members_command() else "log"
    elif mode == "ctl" and not have_members_command():
        sys.stderr.write("clusterctl has no members command (build/clusterctl help)\n")
        return 1
    args.view = view_by_ctl if mode == "ctl" else view_by_log
    how = ("clusterctl --json members, polled back to back" if mode == "ctl" else
           "node logs (clusterctl has no members command in this build), polled back to back")

    # SIGTERM -> the finally below still cleans the nodes up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    workdir = tempfile.mkdtemp(prefix="bench_cluster.")
    started = datetime.datetime.now()
    settings = protocol_settings(args.gossip_period_ms, DETECT_NODES)
    machine = machine_text()
    log("bench_cluster %s, %s" % (started.strftime("%Y-%m-%d %H:%M"), machine))
    for line in settings_lines(settings):
        log(line)
    log("membership read from: %s" % how)

    det = spread = single = None
    kills = []
    failed = None
    try:
        if args.only in (None, "detect"):
            kills, false = run_detection(workdir, args, args.view, log)
            det = detection_summary(kills, false)
        if args.only in (None, "spread"):
            spread = run_fanout(workdir, args, "spread", SPREAD_NODES, log)
            if not args.skip_single:
                single = run_fanout(workdir, args, "single", 1, log)
    except RunError as e:
        failed = str(e)
    except KeyboardInterrupt:
        failed = "interrupted"
    finally:
        if failed or args.keep:
            log("(kept %s)" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    rows = figures(det, spread, single)
    log("")
    log(table_text(rows))
    if failed:
        log("\nbench_cluster: could not complete: %s" % failed)
    if args.json:
        doc = {
            "date": started.isoformat(timespec="seconds"),
            "machine": machine,
            "settings": settings,
            "membership_from": mode,
            "kills": args.kills, "fanout": args.fanout, "task_ms": args.task_ms,
            "rounds": args.rounds,
            "figures": [{"key": k, "label": lbl,
                         "value": (None if v == float("inf") else v), "unit": u,
                         "target": t, "met": m} for k, lbl, v, u, t, m in rows],
            "detection": {"summary": det, "kills": kills} if det else None,
            "spread": spread, "single": single,
            "error": failed,
        }
        json.dump(json_safe(doc), sys.stdout, indent=1)
        sys.stdout.write("\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
