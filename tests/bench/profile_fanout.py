#!/usr/bin/env python3
"""profile_fanout.py - where a single-node fan-out spends its time: the
profiles of docs/performance.md, reproducible.

One node (`chorusd --workers 2`, journal on, synchronous=normal), a warm-up
fan-out of 2,000 echo tasks, then the measured `clusterctl submit echo
--fanout FILE` of --tasks tasks, under one tool:

  perf       `perf record -e cpu-clock -g` (software clock: this machine
             has no hardware counters) attached to the node and its
             workers during the fan-out; prints the top --top functions by
             self samples for the node, and each process's share.
  callgrind  the node runs under `valgrind --tool=callgrind` (its forked
             workers follow); counters are zeroed (callgrind_control -z)
             after the warm-up and dumped (-d) after the fan-out, so the
             figures are the fan-out alone; prints instructions per task of
             the node and of the workers, and the top --top functions of
             each by self instructions.
  strace     `strace -c -f` attached to the node (all its threads) and,
             separately, to its workers during the fan-out; prints system
             calls per task by name.

Default sizes: perf 100,000 tasks, callgrind 5,000, strace 20,000. Needs
perf, valgrind or strace on PATH (scripts: apt-get install linux-perf
valgrind strace). Prints markdown tables; --out DIR keeps the raw files.
Exit 0 when profiled, 1 when something could not be run, 2 for bad usage.
Standard library only.
"""

import argparse
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
HARNESS_PATH = os.path.join(HERE, "..", "integration", "harness.py")
DEFAULT_TASKS = {"perf": 100000, "callgrind": 5000, "strace": 20000}
WARMUP_TASKS = 2000
TOOL_READY_TIMEOUT_S = 120      # a node under callgrind starts slowly
FANOUT_TIMEOUT_S = 1800

harness = None


class RunError(Exception):
    pass


def load_harness(build_dir):
    global harness
    if build_dir:
        os.environ["CHORUS_BUILD_DIR"] = os.path.abspath(build_dir)
    spec = importlib.util.spec_from_file_location("harness", HARNESS_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    harness = mod


def make_node(workdir, wrapper):
    """A harness node whose chorusd runs under wrapper (a command prefix);
    clusterctl, which the harness runs with the node's prefix, does not."""
    class Wrapped(harness.Node):
        def command(self):
            return wrapper + super().command()
    return Wrapped(workdir, name="prof", args=["--workers", "2"])


def children(pid):
    """Pids of the direct children of pid (the node's workers)."""
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % e) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(e))
    return sorted(out)


def write_inputs(path, n):
    with open(path, "w") as f:
        for i in range(n):
            f.write("%d\n" % i)


def fanout(node, path, count):
    cmd = [harness.CLUSTERCTL, "-a", node.addr, "-k", node.secret, "--timeout", "600s",
           "submit", "echo", "--fanout", path]
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=FANOUT_TIMEOUT_S)
    wall = time.monotonic() - t0
    lines = p.stdout.count(b"\tsucceeded\t")
    if p.returncode != 0 or lines != count:
        raise RunError("fan-out of %d: rc=%s, %d succeeded\n%s\n%s"
                       % (count, p.returncode, lines, p.stderr.decode(errors="replace")[:2000],
                          node.log_tail(20)))
    return wall


def node_pid(node):
    """The chorusd process: under valgrind the harness's child is valgrind
    itself, which then is chorusd (valgrind runs the program in its own
    process), so the pid is the same either way."""
    return node.proc.pid


# ---------------------------------------------------------------- perf

def perf_top(data, top, children):
    """[(percentages, symbol, object)] of perf report over one file."""
    cmd = ["perf", "report", "-i", data, "--sort", "symbol,dso", "--stdio", "-g", "none"]
    cmd.append("--children" if children else "--no-children")
    rep = subprocess.run(cmd, capture_output=True, text=True)
    rows = []
    pct = r"\s*([\d.]+)%" + (r"\s+([\d.]+)%" if children else "")
    for line in rep.stdout.splitlines():
        m = re.match(pct + r"\s+\[([.k])\]\s+(\S+(?: \S+)*?)\s{2,}(\S+)", line)
        if m:
            g = m.groups()
            rows.append((g[:-3], g[-2], g[-1]))
            if len(rows) >= top:
                break
    return rows


def perf_samples(data):
    rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--sort", "comm"],
                         capture_output=True, text=True)
    m = re.search(r"# Samples: (\S+)", rep.stdout)
    return m.group(1) if m else "?"


def run_perf(args, workdir, node, path):
    """Two recorders at once: the node (every thread of it) and its
    workers, each in its own file, so each table is that side alone."""
    pid = node_pid(node)
    workers = children(pid)
    files = {"node": os.path.join(workdir, "perf.node.data"),
             "workers": os.path.join(workdir, "perf.workers.data")}
    recs = []
    for side, pids in (("node", [pid]), ("workers", workers)):
        recs.append(subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999", "-g",
                                      "-o", files[side], "-p", ",".join(map(str, pids))],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    time.sleep(1.0)   # perf attaches asynchronously; the fan-out must not start before
    for r in recs:
        if r.poll() is not None:
            raise RunError("perf record exited: %s" % r.stderr.read().decode(errors="replace"))
    c0 = {p: cpu_of(p) for p in [pid] + workers}
    wall = fanout(node, path, args.tasks)
    cpu = {p: cpu_of(p) - c0[p] for p in c0}
    for r in recs:
        r.send_signal(signal.SIGINT)
        r.wait(timeout=120)
    print("fan-out of %d tasks under perf: %.2f s (%.0f tasks/s); CPU (user+sys) of the node "
          "%.2f s, of the workers %.2f s\n"
          % (args.tasks, wall, args.tasks / wall, cpu[pid],
             sum(v for p, v in cpu.items() if p != pid)))
    rep = subprocess.run(["perf", "report", "-i", files["node"], "--no-children", "--sort",
                          "comm", "--stdio"], capture_output=True, text=True)
    print("the node's samples per thread name (%s samples):\n" % perf_samples(files["node"]))
    print("| thread | share |\n|---|---:|")
    for line in rep.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S.*?)\s*$", line)
        if m:
            print("| %s | %s%% |" % (m.group(2), m.group(1)))
    print()
    for side in ("node", "workers"):
        print("top %d functions of the %s by self samples (software clock, %s samples):\n"
              % (args.top, side, perf_samples(files[side])))
        print("| # | self | function | object |\n|---:|---:|---|---|")
        for i, (p, sym, obj) in enumerate(perf_top(files[side], args.top, False)):
            print("| %d | %s%% | `%s` | %s |" % (i + 1, p[0], sym, obj))
        print()
    print("top %d of the node by inclusive samples (self + callees; user-space call chains "
          "are cut short where there are no frame pointers):\n" % args.top)
    print("| # | inclusive | self | function | object |\n|---:|---:|---:|---|---|")
    for i, (p, sym, obj) in enumerate(perf_top(files["node"], args.top, True)):
        print("| %d | %s%% | %s%% | `%s` | %s |" % (i + 1, p[0], p[1], sym, obj))
    print()


def cpu_of(pid):
    """utime + stime of one process (all its threads), in seconds."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- callgrind

def callgrind_totals(path, inclusive=False):
    """(total Ir, [(Ir, function, object)] by self Ir) of one callgrind file."""
    rep = subprocess.run(["callgrind_annotate", "--inclusive=%s" % ("yes" if inclusive else "no"),
                          "--threshold=100", path],
                         capture_output=True, text=True)
    total = None
    funcs = []
    for line in rep.stdout.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\([\s\d.]+%\)\s+)?PROGRAM TOTALS", line)
        if m:
            total = int(m.group(1).replace(",", ""))
            continue
        m = re.match(r"\s*([\d,]+)\s+(?:\([\s\d.]+%\)\s+)?(\S.*?):(\S.*?)(?:\s+\[(.*)\])?\s*$",
                     line)
        if m and total is not None:
            funcs.append((int(m.group(1).replace(",", "")), m.group(3), m.group(4) or m.group(2)))
    # In a dump taken while the program runs (callgrind_control -d), the
    # frames still on a stack (main, the thread starts, the worker's
    # host_run -> ... -> worker_spawn) are listed with their inclusive cost,
    # the same figure for every frame of one stack: drop every figure that
    # appears more than once (the real functions' figures are distinct).
    if inclusive:
        return total, funcs
    seen = {}
    for ir, _, _ in funcs:
        seen[ir] = seen.get(ir, 0) + 1
    return total, [f for f in funcs if seen[f[0]] == 1]


def run_callgrind(args, workdir, node, path, outdir):
    pid = node_pid(node)
    workers = children(pid)
    for p in [pid] + workers:
        subprocess.run(["callgrind_control", "-z", str(p)], capture_output=True, timeout=120)
    wall = fanout(node, path, args.tasks)
    for p in [pid] + workers:
        subprocess.run(["callgrind_control", "-d", "fanout", str(p)], capture_output=True,
                       timeout=300)
    print("fan-out of %d tasks under callgrind: %.2f s\n" % (args.tasks, wall))
    files = {}
    # a dump writes callgrind.out.PID.N (N = 1 for the first dump)
    for name in os.listdir(outdir):
        m = re.match(r"callgrind\.out\.(\d+)\.(\d+)$", name)
        if m and int(m.group(1)) in [pid] + workers:
            files.setdefault(int(m.group(1)), []).append(os.path.join(outdir, name))
    if pid not in files:
        raise RunError("no callgrind dump of the node in %s" % outdir)
    print("| process | instructions per task |\n|---|---:|")
    per = {}
    for p in [pid] + workers:
        if p not in files:
            continue
        total, funcs = callgrind_totals(sorted(files[p])[-1])
        per[p] = (total, funcs)
        print("| %s %d | %s |" % ("node" if p == pid else "worker", p,
                                  "{:,.0f}".format((total or 0) / args.tasks)))
    print()
    for title, pids in (("node", [pid]), ("workers (summed)", workers)):
        merged = {}
        total = 0
        for p in pids:
            if p not in per:
                continue
            total += per[p][0] or 0
            for ir, fn, obj in per[p][1]:
                merged[(fn, obj)] = merged.get((fn, obj), 0) + ir
        print("top %d functions of the %s by self instructions (%s per task in all):\n"
              % (args.top, title, "{:,.0f}".format(total / args.tasks)))
        print("| # | Ir per task | share | function | object |\n|---:|---:|---:|---|---|")
        for i, ((fn, obj), ir) in enumerate(sorted(merged.items(), key=lambda kv: -kv[1])
                                             [:args.top]):
            print("| %d | %s | %.1f%% | `%s` | %s |" % (i + 1, "{:,.0f}".format(ir / args.tasks),
                                                       100.0 * ir / total if total else 0, fn,
                                                       os.path.basename(obj)))
        print()
        objs = {}
        for (fn, obj), ir in merged.items():
            objs[os.path.basename(obj)] = objs.get(os.path.basename(obj), 0) + ir
        print("self instructions of the %s per object:\n" % title)
        print("| object | Ir per task | share |\n|---|---:|---:|")
        for obj, ir in sorted(objs.items(), key=lambda kv: -kv[1])[:8]:
            print("| %s | %s | %.1f%% |" % (obj, "{:,.0f}".format(ir / args.tasks),
                                           100.0 * ir / total if total else 0))
        print()
    # where the node's own code leads: inclusive, chorusd's functions only,
    # without the frames every instruction is under (main, thread starts)
    total, funcs = callgrind_totals(sorted(files[pid])[-1], inclusive=True)
    own = [f for f in funcs if os.path.basename(f[2]) == "chorusd" and f[0] < 0.9 * total]
    print("top %d functions of chorusd (the node) by inclusive instructions:\n" % args.top)
    print("| # | Ir per task, inclusive | share | function |\n|---:|---:|---:|---|")
    for i, (ir, fn, _) in enumerate(sorted(own, key=lambda f: -f[0])[:args.top]):
        print("| %d | %s | %.1f%% | `%s` |" % (i + 1, "{:,.0f}".format(ir / args.tasks),
                                              100.0 * ir / total, fn))
    print()


# ---------------------------------------------------------------- strace

def parse_strace_c(path):
    calls = {}
    with open(path) as f:
        for line in f:
            cols = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(cols) >= 5 and re.match(r"^[\d.]+$", cols[0]) and cols[-1] != "total":
                try:
                    calls[cols[-1]] = calls.get(cols[-1], 0) + int(cols[3])
                except ValueError:
                    pass
    return calls


def run_strace(args, workdir, node, path):
    pid = node_pid(node)
    workers = children(pid)
    outs = {"node": os.path.join(workdir, "strace.node"),
            "workers": os.path.join(workdir, "strace.workers")}
    procs = [subprocess.Popen(["strace", "-c", "-f", "-o", outs["node"], "-p", str(pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    cmd = ["strace", "-c", "-f", "-o", outs["workers"]]
    for w in workers:
        cmd += ["-p", str(w)]
    procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1.0)   # strace attaches asynchronously
    wall = fanout(node, path, args.tasks)
    for p in procs:
        p.send_signal(signal.SIGINT)
        p.wait(timeout=60)
    print("fan-out of %d tasks under strace: %.2f s\n" % (args.tasks, wall))
    node_calls = parse_strace_c(outs["node"])
    worker_calls = parse_strace_c(outs["workers"])
    names = sorted(set(node_calls) | set(worker_calls),
                   key=lambda s: -(node_calls.get(s, 0) + worker_calls.get(s, 0)))
    print("| system call | node, per task | workers, per task |\n|---|---:|---:|")
    for s in names[:args.top]:
        print("| `%s` | %.2f | %.2f |" % (s, node_calls.get(s, 0) / args.tasks,
                                          worker_calls.get(s, 0) / args.tasks))
    print("| **all** | **%.2f** | **%.2f** |\n" % (sum(node_calls.values()) / args.tasks,
                                                  sum(worker_calls.values()) / args.tasks))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tool", choices=("perf", "callgrind", "strace"))
    ap.add_argument("--build-dir", help="where chorusd and clusterctl are (default build/)")
    ap.add_argument("--tasks", type=int, help="tasks of the profiled fan-out")
    ap.add_argument("--top", type=int, default=15, help="functions per table (default 15)")
    ap.add_argument("--out", help="keep the raw files (perf.data, callgrind.out.*) here")
    args = ap.parse_args()
    args.tasks = args.tasks or DEFAULT_TASKS[args.tool]
    if args.tasks < 1 or args.top < 1:
        ap.error("--tasks and --top must be at least 1")
    exe = {"perf": "perf", "callgrind": "valgrind", "strace": "strace"}[args.tool]
    if shutil.which(exe) is None:
        sys.stderr.write("profile_fanout: %s is not installed (apt-get install %s)\n"
                         % (exe, {"perf": "linux-perf"}.get(exe, exe)))
        return 1
    load_harness(args.build_dir)
    workdir = tempfile.mkdtemp(prefix="profile_fanout.")
    outdir = os.path.abspath(args.out) if args.out else workdir
    os.makedirs(outdir, exist_ok=True)
    wrapper = []
    if args.tool == "callgrind":
        wrapper = ["valgrind", "--tool=callgrind", "--trace-children=yes",
                   "--callgrind-out-file=%s/callgrind.out.%%p" % outdir]
    node = make_node(workdir, wrapper)
    try:
        try:
            node.start(wait=False)
            node.wait_ready(timeout_s=TOOL_READY_TIMEOUT_S)
        except AssertionError as e:
            raise RunError(str(e))
        path = os.path.join(workdir, "tasks.txt")
        write_inputs(path, args.tasks)
        warm = os.path.join(workdir, "warm.txt")
        write_inputs(warm, WARMUP_TASKS)
        fanout(node, warm, WARMUP_TASKS)
        {"perf": lambda: run_perf(args, outdir, node, path),
         "callgrind": lambda: run_callgrind(args, workdir, node, path, outdir),
         "strace": lambda: run_strace(args, outdir, node, path)}[args.tool]()
    except RunError as e:
        sys.stderr.write("profile_fanout: %s\n" % e)
        return 1
    finally:
        node.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
