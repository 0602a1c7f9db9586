#!/usr/bin/env python3
"""bench_perf.py - issue #15's targets beside their baselines, in one run.

One table, every figure measured in this run:

1. Elixir's in-VM `Task.async_stream` of N no-op tasks (default 100,000;
   max_concurrency = 2 x schedulers), timed inside one VM that stays up
   for the whole run (a warm-up, then one timed run per round), tasks/s.
   Debian's `elixir` is installed with apt-get when it is missing and the
   bench runs as root (not with --quick or --no-install); otherwise the row
   says "not measured" and the ratio targets that need it too.
2. Chorus, one node (`--workers 2`, journal on, synchronous=normal, the
   default): `clusterctl submit echo --fanout FILE` of the same N tasks
   (echo is the cheapest built-in handler), every result line checked;
   tasks/s, the ratio to Elixir (target >= 1.0x) and the absolute target
   (>= 80,000 tasks/s). The node's CPU per 1,000 tasks is shown beside it:
   it moves less with the neighbours' load than the wall clock.
3. Three nodes on this machine (one secret, each seeding the others,
   `--workers 2` each): the same fan-out submitted to n1, placed over all
   three; tasks/s and the ratio to the single node (target >= 1.0x), and
   how many tasks each node ran.
   1-3 run in rounds, Elixir, one node, three nodes in turn (median of
   --rounds), so a drift of the machine's load falls on all of them.
4. `bench_chorus --json --skip-full` (tests/bench/bench.c): submit-and-await
   p50 against the raw nng req/rep round trip measured in the same process
   (target <= 1.5x), 8 threads submit-and-await (target >= 2 x 9,000/s, the
   issue's figure for today), the idle node's RSS (target <= 16 MiB), and
   its ch_map fan-out of 10,000 for context.
5. `bench_chorus --stream --json`: streamed fan-outs of 100,000 and
   1,000,000 tasks (quick: 10,000 and 100,000) on fresh nodes; the
   coordinator's and clusterctl's peak RSS at both sizes and their ratio
   (target <= 1.25x: flat).

Prints the table as markdown (stdout; with --json, the table and progress
go to stderr and one JSON object to stdout). Targets are reported MET or
MISSED, never enforced. Exit 0 when the run completed whatever the
figures; 1 when something could not be run (a node did not start, a
fan-out failed or returned a wrong result, bench_chorus failed); 2 for bad
usage. Standard library only; nodes are started through
tests/integration/harness.py.
"""

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
HARNESS_PATH = os.path.join(HERE, "..", "integration", "harness.py")

TARGET_ELIXIR_RATIO = 1.0
TARGET_FANOUT_MIN = 80000.0
TARGET_AWAIT_RATIO = 1.5
ISSUE_CONCURRENT_BASELINE = 9000.0   # the issue's "today" for 8 threads
TARGET_CONCURRENT_MIN = 2 * ISSUE_CONCURRENT_BASELINE
TARGET_CLUSTER_RATIO = 1.0
TARGET_IDLE_RSS_MIB = 16.0
TARGET_RSS_GROWTH = 1.25

FANOUT_TIMEOUT_S = 900
ELIXIR_ROUND_TIMEOUT_S = 300
BENCH_CHORUS_TIMEOUT_S = 900
CLUSTER_FORM_TIMEOUT_S = 60
WARMUP_TASKS = 2000
APT_TIMEOUT_S = 900

# The Elixir side: one VM for the whole run, told over stdin how many tasks
# to run; it answers with the microseconds the run took, timed inside the VM
# (no VM start-up in the figure).
ELIXIR_SCRIPT = r"""
conc = System.schedulers_online() * 2
IO.puts("ready elixir=#{System.version()} otp=#{System.otp_release()} " <>
        "schedulers=#{System.schedulers_online()} max_concurrency=#{conc}")
loop = fn loop ->
  case IO.gets("") do
    :eof -> :ok
    {:error, _} -> :ok
    line ->
      case Integer.parse(String.trim(line)) do
        {n, ""} when n > 0 ->
          t0 = System.monotonic_time(:microsecond)
          1..n |> Task.async_stream(fn x -> x end, max_concurrency: conc) |> Stream.run()
          IO.puts("us #{System.monotonic_time(:microsecond) - t0}")
          loop.(loop)
        _ -> :ok
      end
  end
end
loop.(loop)
"""

harness = None
out = sys.stdout


class RunError(Exception):
    """Something could not be run: the bench exits 1."""


def log(msg):
    out.write(msg + "\n")
    out.flush()


def load_harness(build_dir):
    global harness
    if build_dir:
        os.environ["CHORUS_BUILD_DIR"] = os.path.abspath(build_dir)
    spec = importlib.util.spec_from_file_location("harness", HARNESS_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    harness = mod


def machine_text():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()[0]
    return "%s, %s, %d cores, Linux %s, load average %.2f" % (
        platform.machine(), cpu, os.cpu_count() or 0, platform.release(), load)


def cpu_seconds(pid):
    """utime + stime of one process (not its children), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- Elixir

def ensure_elixir(may_install):
    """Path of `elixir`, installing Debian's package when allowed; else
    (None, why)."""
    path = shutil.which("elixir")
    if path:
        return path, ""
    if not may_install:
        return None, "elixir is not installed (apt-get install elixir; not installed with " \
                     "--quick or --no-install)"
    if os.geteuid() != 0:
        return None, "elixir is not installed and this is not root: apt-get install elixir"
    if shutil.which("apt-get") is None:
        return None, "elixir is not installed and there is no apt-get"
    size = ""
    try:
        show = subprocess.run(["apt-cache", "show", "elixir"], capture_output=True, text=True,
                              timeout=60)
        for line in show.stdout.splitlines():
            if line.startswith("Installed-Size:"):
                size = " (elixir's Installed-Size %s KiB, plus erlang)" % line.split(":")[1].strip()
                break
    except (OSError, subprocess.TimeoutExpired):
        pass
    log("installing Debian's elixir%s: apt-get install -y elixir" % size)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        p = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "elixir"],
                           capture_output=True, text=True, timeout=APT_TIMEOUT_S, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, "apt-get install elixir failed: %s" % e
    path = shutil.which("elixir")
    if p.returncode != 0 or not path:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["?"]
        return None, "apt-get install elixir failed (exit %d): %s" % (p.returncode, tail[0])
    return path, ""


class ElixirVM:
    """One `elixir` process running ELIXIR_SCRIPT; run(n) returns tasks/s."""

    def __init__(self, elixir, workdir):
        script = os.path.join(workdir, "async_stream.exs")
        with open(script, "w") as f:
            f.write(ELIXIR_SCRIPT)
        self.proc = subprocess.Popen([elixir, script], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, start_new_session=True)
        line = self._line(60)
        if not line.startswith("ready "):
            raise RunError("elixir did not start: %r" % line)
        self.versions = line[len("ready "):]

    def _line(self, timeout_s):
        # the VM answers one line per request; a stuck VM is killed by the
        # caller's deadline (the alarm below), never waited on forever
        def on_alarm(*_):
            raise RunError("elixir did not answer within %d s" % timeout_s)
        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(timeout_s)
        try:
            line = self.proc.stdout.readline()
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
        if not line:
            raise RunError("elixir exited (status %s)" % self.proc.poll())
        return line.strip()

    def run(self, n):
        self.proc.stdin.write("%d\n" % n)
        self.proc.stdin.flush()
        line = self._line(ELIXIR_ROUND_TIMEOUT_S)
        if not line.startswith("us "):
            raise RunError("elixir: unexpected answer %r" % line)
        us = int(line[3:])
        return n * 1e6 / max(us, 1)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# ---------------------------------------------------------------- Chorus

def write_inputs(path, n):
    with open(path, "w") as f:
        for i in range(n):
            f.write("%d\n" % i)


def fanout(node, path, count, workdir, cpu_nodes):
    """`clusterctl submit echo --fanout path` against node; checks every
    line (index in order, succeeded, output = payload). Returns the rate,
    the wall time, the CPU the nodes in cpu_nodes used, tasks per node."""
    out_path = os.path.join(workdir, "fanout.out")
    cmd = [harness.CLUSTERCTL, "-a", node.addr, "-k", node.secret, "--timeout", "120s",
           "submit", "echo", "--fanout", path]
    cpu0 = sum(cpu_seconds(n.proc.pid) for n in cpu_nodes)
    t0 = time.monotonic()
    with open(out_path, "wb") as f:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.PIPE,
                           timeout=FANOUT_TIMEOUT_S)
    wall = time.monotonic() - t0
    cpu = sum(cpu_seconds(n.proc.pid) for n in cpu_nodes) - cpu0
    if p.returncode != 0:
        raise RunError("fan-out of %d on %s failed: rc=%s %s\n%s"
                       % (count, node.name, p.returncode,
                          p.stderr.decode(errors="replace")[:2000], node.log_tail(20)))
    per_node = {}
    lines = 0
    with open(out_path, "rb") as f:
        for line in f:
            cols = line.rstrip(b"\n").split(b"\t")
            want = str(lines).encode()
            if len(cols) != 4 or cols[0] != want or cols[1] != b"succeeded" or cols[2] != want:
                raise RunError("fan-out on %s: line %d is %r" % (node.name, lines + 1, line[:200]))
            name = cols[3].decode(errors="replace")
            per_node[name] = per_node.get(name, 0) + 1
            lines += 1
    if lines != count:
        raise RunError("fan-out on %s: %d result lines of %d" % (node.name, lines, count))
    return {"rate": count / wall, "wall_s": wall, "nodes_cpu_s": cpu, "per_node": per_node}


def start_single(workdir):
    node = harness.Node(workdir, name="single", args=["--workers", "2"])
    try:
        node.start()
    except AssertionError as e:
        node.cleanup()
        raise RunError(str(e))
    return node


def start_cluster(workdir, count):
    """count nodes sharing one secret, each seeding the others; returns
    once n1 sees them all alive."""
    secret = os.path.join(workdir, "cluster.secret")
    rc, _, err = harness.run_cmd([harness.CLUSTERCTL, "keygen", secret], timeout_s=30)
    if rc != 0 or not os.path.exists(secret):
        raise RunError("clusterctl keygen failed: rc=%s %s" % (rc, err.strip()))
    nodes = [harness.Node(workdir, name="c%d" % (i + 1), secret=secret) for i in range(count)]
    for n in nodes:
        seeds = [o.addr for o in nodes if o is not n]
        n.args = ["--workers", "2", "--secret", secret, "--seeds", ",".join(seeds)]
    for n in nodes:
        n.start(wait=False)
    try:
        for n in nodes:
            n.wait_ready()
        names = {n.name for n in nodes}

        def formed():
            m = nodes[0].members()
            return all(m.get(x, {}).get("state") == "alive" for x in names)
        harness.wait_until(formed, CLUSTER_FORM_TIMEOUT_S, "n1 to see %d alive members" % count,
                           interval_s=0.2)
    except AssertionError as e:
        for n in nodes:
            n.cleanup()
        raise RunError(str(e))
    return nodes


def run_bench_chorus(args, extra):
    """Runs bench_chorus --json EXTRA; returns {key: figure} and the JSON."""
    exe = os.path.join(harness.BUILD_DIR, "bench_chorus")
    cmd = [exe, "--json", "--chorusd", harness.CHORUSD] + extra + (["--quick"] if args.quick else [])
    log("running %s" % " ".join(os.path.basename(c) if c == exe else c for c in cmd))
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=BENCH_CHORUS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RunError("bench_chorus %s took over %d s" % (" ".join(extra),
                                                          BENCH_CHORUS_TIMEOUT_S))
    if p.returncode != 0:
        raise RunError("bench_chorus %s failed (exit %d):\n%s"
                       % (" ".join(extra), p.returncode, p.stderr[-3000:]))
    try:
        doc = json.loads(p.stdout)
    except ValueError as e:
        raise RunError("bench_chorus %s: JSON does not parse: %s" % (" ".join(extra), e))
    return {f["key"]: f for f in doc["figures"]}, doc


# ---------------------------------------------------------------- table

def fmt(value, unit):
    if value is None:
        return "not measured"
    if unit in ("tasks/s", "/s"):
        return "{:,.0f} {}".format(value, unit)
    if unit == "us":
        return "%.1f us" % value
    if unit == "MiB":
        return "%.2f MiB" % value
    if unit == "ms":
        return "%.1f ms" % value
    return "%.2f %s" % (value, unit)


class Table:
    def __init__(self):
        self.rows = []

    def add(self, key, label, value, unit, baseline=None, baseline_label="", ratio=None,
            target="", met=None):
        self.rows.append({"key": key, "label": label, "value": value, "unit": unit,
                          "baseline": baseline, "baseline_label": baseline_label,
                          "ratio": ratio, "target": target, "met": met})

    def markdown(self):
        lines = ["| figure | value | baseline (same run) | ratio | target | status |",
                 "|---|---:|---|---:|---|---|"]
        for r in self.rows:
            base = ""
            if r["baseline_label"]:
                base = r["baseline_label"]
                if r["baseline"] is not None:
                    base += " " + fmt(r["baseline"], r["unit"] if r["unit"] != "x" else "")
            ratio = "%.2fx" % r["ratio"] if r["ratio"] is not None else ""
            if not r["target"]:
                status = ""
            elif r["met"] is None:
                status = "not measured"
            else:
                status = "MET" if r["met"] else "MISSED"
            lines.append("| %s | %s | %s | %s | %s | %s |" % (
                r["label"], fmt(r["value"], r["unit"]), base, ratio, r["target"], status))
        return "\n".join(lines)


def ratio_of(a, b):
    return a / b if a is not None and b else None


# ---------------------------------------------------------------- main

def main():
    global out
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", help="where chorusd, clusterctl and bench_chorus are "
                    "(default build/, or CHORUS_BUILD_DIR); give a Release tree for figures")
    ap.add_argument("--tasks", type=int, help="tasks per fan-out, Elixir and Chorus "
                    "(default 100000, quick 5000)")
    ap.add_argument("--rounds", type=int, help="rounds of Elixir / 1 node / 3 nodes "
                    "(default 3, quick 1)")
    ap.add_argument("--nodes", type=int, default=3, help="nodes of the cluster (default 3)")
    ap.add_argument("--quick", action="store_true", help="smoke run: small counts, never "
                    "installs elixir")
    ap.add_argument("--no-install", action="store_true", help="do not apt-get install elixir")
    ap.add_argument("--skip-stream", action="store_true",
                    help="skip bench_chorus --stream (the 1,000,000-task RSS check)")
    ap.add_argument("--json", action="store_true",
                    help="one JSON object on stdout; progress and the table on stderr")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    args.tasks = args.tasks if args.tasks is not None else (5000 if args.quick else 100000)
    args.rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    if args.tasks < 1 or args.rounds < 1 or not 2 <= args.nodes <= 9:
        ap.error("--tasks and --rounds must be at least 1, --nodes 2..9")

    load_harness(args.build_dir)
    exes = (harness.CHORUSD, harness.CLUSTERCTL, os.path.join(harness.BUILD_DIR, "bench_chorus"))
    missing = [p for p in exes if not os.access(p, os.X_OK)]
    if missing:
        sys.stderr.write("not built: %s (bash scripts/build.sh build-release "
                         "-DCMAKE_BUILD_TYPE=Release, then --build-dir build-release)\n"
                         % ", ".join(missing))
        return 1
    if args.json:
        out = sys.stderr
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    started = datetime.datetime.now()
    machine = machine_text()
    build_type = "?"
    try:
        with open(os.path.join(harness.BUILD_DIR, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("CMAKE_BUILD_TYPE:"):
                    build_type = line.split("=", 1)[1].strip() or "?"
    except OSError:
        pass
    log("bench_perf %s, %s; build %s (%s)" % (started.strftime("%Y-%m-%d %H:%M"), machine,
                                              harness.BUILD_DIR, build_type))
    if build_type != "Release":
        log("note: not a Release build; figures for docs/performance.md come from one")

    elixir, why = ensure_elixir(not (args.quick or args.no_install))
    if elixir is None:
        log("Elixir: not measured: %s" % why)
    workdir = tempfile.mkdtemp(prefix="bench_perf.")
    vm = None
    single = None
    cluster = []
    rounds = []
    elixir_versions = None
    try:
        if elixir is not None:
            vm = ElixirVM(elixir, workdir)
            elixir_versions = vm.versions
            log("Elixir VM up (%s); warm-up of %d tasks" % (vm.versions, args.tasks))
            vm.run(args.tasks)
        single = start_single(workdir)
        cluster = start_cluster(workdir, args.nodes)
        path = os.path.join(workdir, "tasks.txt")
        write_inputs(path, args.tasks)
        warm = os.path.join(workdir, "warm.txt")
        write_inputs(warm, WARMUP_TASKS)
        fanout(single, warm, WARMUP_TASKS, workdir, [single])
        fanout(cluster[0], warm, WARMUP_TASKS, workdir, cluster)
        for i in range(args.rounds):
            r = {"round": i + 1}
            if vm is not None:
                r["elixir"] = vm.run(args.tasks)
            r["single"] = fanout(single, path, args.tasks, workdir, [single])
            r["cluster"] = fanout(cluster[0], path, args.tasks, workdir, cluster)
            rounds.append(r)
            log("round %d: Elixir %s, 1 node %.0f tasks/s (node CPU %.1f ms/1,000), "
                "%d nodes %.0f tasks/s (%s)"
                % (i + 1, "%.0f tasks/s" % r["elixir"] if "elixir" in r else "not measured",
                   r["single"]["rate"], r["single"]["nodes_cpu_s"] * 1e6 / args.tasks,
                   args.nodes, r["cluster"]["rate"],
                   ", ".join("%s %d" % kv for kv in sorted(r["cluster"]["per_node"].items()))))
        for n in [single] + cluster:
            if not n.running():
                raise RunError("node %s exited during the run:\n%s" % (n.name, n.log_tail(30)))
    except RunError as e:
        sys.stderr.write("bench_perf: %s\n" % e)
        return 1
    finally:
        if vm is not None:
            vm.close()
        for n in ([single] if single else []) + cluster:
            n.cleanup()

    try:
        bc, bc_doc = run_bench_chorus(args, ["--skip-full"])
        st, st_doc = (None, None) if args.skip_stream else run_bench_chorus(args, ["--stream"])
    except RunError as e:
        sys.stderr.write("bench_perf: %s\n" % e)
        return 1
    finally:
        if args.keep:
            sys.stderr.write("kept %s\n" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    ex = statistics.median([r["elixir"] for r in rounds]) if vm is not None else None
    one = statistics.median([r["single"]["rate"] for r in rounds])
    one_cpu = statistics.median([r["single"]["nodes_cpu_s"] * 1e6 / args.tasks for r in rounds])
    many = statistics.median([r["cluster"]["rate"] for r in rounds])
    many_cpu = statistics.median([r["cluster"]["nodes_cpu_s"] * 1e6 / args.tasks for r in rounds])
    # tasks per node of the round whose rate is the median
    mid = sorted(rounds, key=lambda r: r["cluster"]["rate"])[len(rounds) // 2]
    spread_text = ", ".join("%s %d" % kv for kv in sorted(mid["cluster"]["per_node"].items()))
    t = Table()
    n_text = "{:,}".format(args.tasks)
    t.add("elixir_tasks_per_s", "Elixir `Task.async_stream`, %s no-op tasks, in-VM" % n_text,
          ex, "tasks/s")
    r_ex = ratio_of(one, ex)
    t.add("fanout_vs_elixir", "Chorus fan-out, 1 node, %s echo tasks, journaled "
          "(sync=normal)" % n_text, one, "tasks/s", ex, "Elixir", r_ex, ">= 1.0x Elixir",
          r_ex >= TARGET_ELIXIR_RATIO if r_ex is not None else None)
    t.add("fanout_tasks_per_s", "  same, absolute", one, "tasks/s", target=">= 80,000 tasks/s",
          met=one >= TARGET_FANOUT_MIN)
    t.add("fanout_node_cpu_ms_per_1000", "  node CPU per 1,000 tasks", one_cpu, "ms")
    t.add("fanout_chmap_tasks_per_s", "  ch_map of %s echo tasks (bench_chorus, median)"
          % "{:,.0f}".format(10000 if not args.quick else 2000),
          bc["fanout_tasks_per_s"]["value"], "tasks/s")
    floor = bc["floor_rtt_p50_us"]["value"]
    aw = bc["await_p50_us"]["value"]
    t.add("await_p50_us", "submit-and-await p50 (echo)", aw, "us", floor, "raw nng round trip p50",
          aw / floor, "<= 1.5x floor", aw / floor <= TARGET_AWAIT_RATIO)
    conc = bc["concurrent_tasks_per_s"]["value"]
    t.add("concurrent_tasks_per_s", "8 threads submit-and-await", conc, "tasks/s",
          ISSUE_CONCURRENT_BASELINE, "issue's today", conc / ISSUE_CONCURRENT_BASELINE,
          ">= 18,000 tasks/s (2x)", conc >= TARGET_CONCURRENT_MIN)
    r_cl = many / one
    t.add("cluster_vs_single", "%d nodes on this machine, fan-out of %s (%s)"
          % (args.nodes, n_text, spread_text), many, "tasks/s", one, "1 node", r_cl,
          ">= 1.0x 1 node", r_cl >= TARGET_CLUSTER_RATIO)
    t.add("cluster_nodes_cpu_ms_per_1000", "  %d nodes' CPU per 1,000 tasks" % args.nodes,
          many_cpu, "ms", one_cpu, "1 node", many_cpu / one_cpu if one_cpu else None)
    idle = bc["idle_rss_mib"]["value"]
    t.add("idle_rss_mib", "node RSS idle", idle, "MiB", target="<= 16 MiB",
          met=idle <= TARGET_IDLE_RSS_MIB)
    if st is not None:
        sizes = sorted(int(k.split("_")[1]) for k in st if k.endswith("_node_hwm_mib"))
        small, large = sizes[0], sizes[-1]
        for who, key in (("coordinator", "node"), ("clusterctl", "client")):
            a = st["stream_%d_%s_hwm_mib" % (small, key)]["value"]
            b = st["stream_%d_%s_hwm_mib" % (large, key)]["value"]
            t.add("stream_%s_hwm_growth" % key, "streamed fan-out of %s: %s peak RSS"
                  % ("{:,}".format(large), who), b, "MiB", a, "at %s" % "{:,}".format(small),
                  b / a, "<= 1.25x (flat)", b / a <= TARGET_RSS_GROWTH)
        for size in (small, large):
            t.add("stream_%d_tasks_per_s" % size, "  streamed fan-out of %s, rate"
                  % "{:,}".format(size), st["stream_%d_tasks_per_s" % size]["value"], "tasks/s")

    log("")
    log("bench_perf: %s; %s; build %s; Elixir %s" % (
        started.strftime("%Y-%m-%d %H:%M"), machine, build_type,
        elixir_versions or "not measured"))
    log("")
    log(t.markdown())
    log("")
    log("rounds (Elixir / 1 node / %d nodes, tasks/s): %s" % (args.nodes, "; ".join(
        "%s / %.0f / %.0f" % ("%.0f" % r["elixir"] if "elixir" in r else "-",
                              r["single"]["rate"], r["cluster"]["rate"]) for r in rounds)))
    if args.json:
        print(json.dumps({
            "date": started.isoformat(timespec="seconds"), "machine": machine,
            "build_dir": harness.BUILD_DIR, "build_type": build_type,
            "elixir": elixir_versions, "tasks": args.tasks, "nodes": args.nodes,
            "quick": args.quick, "rows": t.rows, "rounds": rounds,
            "bench_chorus": bc_doc, "bench_chorus_stream": st_doc}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
