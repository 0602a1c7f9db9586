#!/usr/bin/env python3
"""bench_cache.py - the cache's RESP front door against redis-server (issue #12, section 6).

Measures, in one run, on loopback, with Debian's redis-benchmark (redis-tools):

1. A local redis-server (`--save '' --appendonly no`, a free port, a
   temporary dir): GET and SET, 50 clients, pipeline 1 and 16, random keys
   over 100,000 (`-r 100000`, 3-byte values). This is the baseline.
2. The same against one chorusd's RESP listener (`--resp 127.0.0.1:PORT`).
3. The same against three chorusd (R = 3 and QUORUM, the defaults),
   redis-benchmark pointed at n1, after every node's cache map has the three
   members (the nodes' partitions_primary add up to the partition count).
4. Memory per entry: a fresh redis-server and a fresh chorusd each loaded
   with 1,000,000 SETs of key:0000000..key:0999999 and a 32-byte value
   through `redis-cli --pipe`; VmRSS of the server process after the load
   minus before, divided by the entries (DBSIZE checked first).

The servers of 1-3 run at once; for each pipeline depth, ROUNDS (3) rounds
run every one of them in turn, so a burst of load from elsewhere on the
machine falls on all alike, and each figure is the median over the rounds.
Each redis-benchmark run takes about SECONDS (5) per command: a short probe
run at the same settings gives the rate, and the measured run's request
count is rate x SECONDS. The figures are redis-benchmark's own (its CSV:
requests/s, p50/p99 latency).

Targets, printed MET or MISSED, never enforced: one node >= 70% of
redis-server's ops/s at both pipeline depths; three nodes at QUORUM >= 35%;
p99 <= 2 ms at pipeline 1. Also the overhead per entry beyond key and value
(issue #12 section 4: <= 80 bytes), here from RSS, so it includes the hash
table, the allocator's slack and everything else the node grew by.

Exit 0 when the run completed, 1 when something could not be run, 2 for bad
usage. Standard library only; nodes through tests/integration/harness.py.
"""

import argparse
import csv
import importlib.util
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.normpath(os.path.join(HERE, "..", ".."))
HARNESS_PATH = os.path.join(SOURCE_DIR, "tests", "integration", "harness.py")
PARTITIONS = 271          # [cache] partitions, the default
CLIENTS = 50
KEYSPACE = 100000         # redis-benchmark -r
PIPELINES = (1, 16)
VALUE_BYTES = 32          # the memory load's values
KEY_FORMAT = "key:%07d"   # 11 bytes
READY_S = 20              # a server answering PING
AGREE_S = 60              # three cache maps agreeing
TARGET_ONE = 0.70
TARGET_THREE = 0.35
TARGET_P99_MS = 2.0
TARGET_OVERHEAD_BYTES = 80
harness = None


class RunError(Exception):
    pass


class BenchFailed(Exception):
    """redis-benchmark ended without its figures (it stops at the first error
    reply); the run goes on, the cell says so, and the exit status is 1."""


def load_harness(build_dir):
    global harness
    os.environ["CHORUS_BUILD_DIR"] = os.path.abspath(build_dir)
    spec = importlib.util.spec_from_file_location("harness", HARNESS_PATH)
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def wait(cond, timeout_s, what, interval_s=0.05):
    end = time.monotonic() + timeout_s
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= end:
            raise RunError("timed out after %.0f s waiting for %s" % (timeout_s, what))
        time.sleep(interval_s)


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    raise RunError("no VmRSS for pid %d (did it exit?)" % pid)


# ---- redis tools ----

def ensure_redis():
    """redis-server, redis-benchmark and redis-cli on PATH, installed with
    apt-get when we are root; otherwise says what to run."""
    need = ("redis-server", "redis-benchmark", "redis-cli")
    if all(shutil.which(x) for x in need):
        return
    cmd = ["apt-get", "install", "-y", "redis-server"]   # pulls in redis-tools
    if os.geteuid() != 0:
        raise RunError("redis-server / redis-tools are not installed; run: sudo %s"
                       % " ".join(cmd))
    log("== installing: %s" % " ".join(cmd))
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=900, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if r.returncode != 0 or not all(shutil.which(x) for x in need):
        raise RunError("%s failed (rc=%d): %s" % (" ".join(cmd), r.returncode, r.stderr[-2000:]))


def cli(port, *args, timeout_s=30):
    """redis-cli -p PORT ARGS: (rc, stdout stripped)."""
    try:
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port)] + [str(a) for a in args],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return -1, ""
    return r.returncode, r.stdout.strip()


def wait_pong(port, what):
    wait(lambda: cli(port, "PING", timeout_s=5) == (0, "PONG"), READY_S,
         "%s to answer PING" % what, 0.1)


def info_field(port, section, field):
    rc, out = cli(port, "INFO", section)
    for line in out.splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    return None


class RedisServer:
    """One redis-server on a free loopback port, in a temporary dir of its own."""

    def __init__(self, workdir, name):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir)
        self.port = harness.free_port()
        self.proc = None

    def start(self):
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
               "--logfile", os.path.join(self.dir, "redis.log")]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        wait_pong(self.port, "redis-server")
        return self

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# ---- chorus nodes ----

def cache_stats(node):
    try:
        rc, out, _ = node.ctl("--timeout", "2s", "cache", "stats", "--cache", "default",
                              timeout_s=10)
    except AssertionError:
        return None
    if rc != 0 or not out:
        return None
    if isinstance(out, list):
        return out[0]
    if isinstance(out, dict):
        return out.get("stats", [out])[0]
    return None


def maps_agree(nodes):
    """Every node's map has every node: the primaries add up to P, once."""
    total = 0
    for n in nodes:
        st = cache_stats(n)
        if st is None:
            return False
        total += st.get("partitions_primary", 0)
    return total == PARTITIONS


def chorus_nodes(workdir, count, tag, extra=()):
    """count nodes (n1 seeds the others), each with a RESP listener; ready
    when every cache map has every member."""
    secret = harness.keygen(os.path.join(workdir, tag + ".secret"))
    nodes = []
    for i in range(count):
        resp_port = harness.free_port()
        args = ["--secret", secret, "--workers", "1", "--resp", "127.0.0.1:%d" % resp_port]
        args += list(extra)
        if nodes:
            args += ["--seeds", nodes[0].addr]
        n = harness.Node(workdir, name="%s-n%d" % (tag, i + 1), args=args, secret=secret)
        n.resp_port = resp_port
        nodes.append(n)
        try:
            n.start()
        except AssertionError as e:
            raise RunError(str(e))
    wait(lambda: maps_agree(nodes), AGREE_S, "%d cache maps to agree (%d primaries)"
         % (count, PARTITIONS), 0.2)
    for n in nodes:
        wait_pong(n.resp_port, "chorusd %s's RESP listener" % n.name)
    return nodes


def check_alive(nodes):
    for n in nodes:
        if not n.running():
            raise RunError("chorusd %s exited (%s); last lines of its log:\n%s"
                           % (n.name, n.proc.returncode, n.log_tail(30)))


# ---- redis-benchmark ----

def benchmark(port, pipeline, requests, timeout_s):
    """redis-benchmark -t set,get at CLIENTS clients; returns ({test: row},
    the error lines it printed)."""
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set,get",
           "-c", str(CLIENTS), "-P", str(pipeline), "-n", str(requests), "-r", str(KEYSPACE),
           "--csv"]
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        raise RunError("%s did not finish within %.0f s (stdout %r, stderr %r)"
                       % (" ".join(cmd), timeout_s, (e.stdout or b"")[-500:],
                          (e.stderr or b"")[-500:]))
    rows = {}
    for row in csv.DictReader(io.StringIO(r.stdout)):
        try:
            rows[row["test"]] = {k: float(v) for k, v in row.items() if k != "test"}
        except (KeyError, ValueError):
            continue
    errors = [x for x in (r.stderr + "\n" + r.stdout).splitlines()
              if x.strip() and not x.startswith('"')]
    if r.returncode != 0 or "SET" not in rows or "GET" not in rows:
        raise BenchFailed("`%s` exited %d after %s: %s"
                          % (" ".join(cmd[3:]), r.returncode, "/".join(rows) or "no figures",
                             "; ".join(errors)[-600:] or "(nothing on stderr)"))
    return rows, errors


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def measure_all(targets, rounds, seconds, probe, notes):
    """targets: [(name, RESP port)]. For each pipeline depth, `rounds` rounds
    that run every target back to back (so a burst of load on the machine
    falls on all of them alike); each figure is the median over the rounds.
    Returns {name: {pipeline: {test: {field: value}} or None}}."""
    runs = {name: {p: [] for p in PIPELINES} for name, _ in targets}
    failed = set()
    sizes = {}
    for p in PIPELINES:
        for r in range(rounds):
            for name, port in targets:
                if (name, p) in failed:
                    continue
                try:
                    if (name, p) not in sizes:
                        # the probe: how many requests make a run of SECONDS
                        rows, _ = benchmark(port, p, probe * p, timeout_s=120)
                        rate = min(rows["SET"]["rps"], rows["GET"]["rps"])
                        sizes[name, p] = max(probe * p, int(rate * seconds))
                    n = sizes[name, p]
                    # a run that should take SECONDS per command gets twenty times that, and a minute
                    rows, errors = benchmark(port, p, n, timeout_s=60 + 20 * seconds * 2)
                except BenchFailed as e:
                    log("  %s, pipeline %d: FAILED: %s" % (name, p, e))
                    notes.append("%s, pipeline %d: no figures: %s" % (name, p, e))
                    failed.add((name, p))
                    continue
                runs[name][p].append(rows)
                log("  round %d/%d, %s, pipeline %d, %d requests per command: SET %.0f/s "
                    "(p99 %.2f ms), GET %.0f/s (p99 %.2f ms)"
                    % (r + 1, rounds, name, p, n, rows["SET"]["rps"], rows["SET"]["p99_latency_ms"],
                       rows["GET"]["rps"], rows["GET"]["p99_latency_ms"]))
                for e in errors[:10]:
                    notes.append("%s, pipeline %d: redis-benchmark said: %s" % (name, p, e))
                if len(errors) > 10:
                    notes.append("%s, pipeline %d: ... %d more lines" % (name, p, len(errors) - 10))
    out = {}
    for name, _ in targets:
        out[name] = {}
        for p in PIPELINES:
            rs = runs[name][p]
            if (name, p) in failed or not rs:
                out[name][p] = None
                continue
            out[name][p] = {t: {k: median([x[t][k] for x in rs]) for k in rs[0][t]}
                            for t in ("SET", "GET")}
            out[name][p]["spread"] = {t: (min(x[t]["rps"] for x in rs), max(x[t]["rps"] for x in rs))
                                      for t in ("SET", "GET")}
    return out


# ---- memory per entry ----

def write_load(path, entries):
    """SET key:0000000 .. in RESP, one 32-byte value each, for redis-cli --pipe."""
    with open(path, "wb") as f:
        chunk = []
        for i in range(entries):
            k = (KEY_FORMAT % i).encode()
            v = (b"%032d" % i)[-VALUE_BYTES:]
            chunk.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
            if len(chunk) == 4096:
                f.write(b"".join(chunk))
                chunk = []
        f.write(b"".join(chunk))


def load(port, path, entries, what):
    """Pipes the file into the server; returns the seconds it took."""
    t = time.monotonic()
    with open(path, "rb") as f:
        try:
            r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--pipe"],
                               stdin=f, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise RunError("redis-cli --pipe into %s did not finish within 600 s" % what)
    secs = time.monotonic() - t
    if r.returncode != 0 or ("errors: 0, replies: %d" % entries) not in r.stdout:
        raise RunError("redis-cli --pipe into %s: rc=%d %s %s" % (what, r.returncode,
                                                                  r.stdout[-1000:], r.stderr[-1000:]))
    rc, out = cli(port, "DBSIZE", timeout_s=60)
    if rc != 0 or out != str(entries):
        raise RunError("%s holds %r keys after the load, not %d" % (what, out, entries))
    return secs


def memory(pid, port, path, entries, what, accounted):
    """(RSS before KiB, after KiB, load seconds, accounted bytes before, after)."""
    before = rss_kb(pid)
    acc_before = accounted()
    secs = load(port, path, entries, what)
    after = rss_kb(pid)
    log("  %s: RSS %d -> %d KiB, %.0f B per entry; %d entries loaded in %.1f s"
        % (what, before, after, (after - before) * 1024.0 / entries, entries, secs))
    return before, after, secs, acc_before, accounted()


def redis_used_memory(port):
    v = info_field(port, "memory", "used_memory")
    return int(v) if v else 0


def chorus_memory_bytes(port):
    """The cache's own accounting (INFO cache: memory_bytes of cache default)."""
    v = info_field(port, "cache", "cache_default")
    if not v:
        return 0
    for kv in v.split(","):
        if kv.startswith("memory_bytes="):
            return int(kv.split("=", 1)[1])
    return 0


# ---- the table ----

def fig(res, p, t, k):
    """One figure of a run, None when that run failed."""
    return res[p][t][k] if res.get(p) else None


def ratio(a, b):
    return a / b if a is not None and b else None


def cell(v, fmt, failed="failed (notes)"):
    return failed if v is None else fmt % v


def met(ok):
    return "MET" if ok else "MISSED"


def report(base, one, three, mem, args, notes):
    print("\nredis-benchmark -t set,get -c %d -r %d, 3-byte values; medians of %d round(s), "
          "ops/s with (slowest-fastest round)" % (CLIENTS, KEYSPACE, args.rounds))
    print("\n| figure | redis-server | Chorus, 1 node | ratio | Chorus, 3 nodes (R=3, QUORUM; "
          "redis-benchmark at n1) | ratio |")
    print("|---|---|---|---|---|---|")
    rows = [("%s ops/s, pipeline %d" % (t, p), p, t, "rps", "%.0f") for p in PIPELINES
            for t in ("SET", "GET")]
    rows += [("%s %s latency, pipeline %d" % (t, q, p), p, t, q + "_latency_ms", "%.3f ms")
             for p in PIPELINES for t in ("SET", "GET") for q in ("p50", "p99")]
    def value(res, p, t, k, fmt):
        v = fig(res, p, t, k)
        if v is None or k != "rps" or args.rounds == 1:
            return cell(v, fmt)
        lo, hi = res[p]["spread"][t]    # the slowest and the fastest round
        return (fmt + " (%.0f-%.0f)") % (v, lo, hi)

    for name, p, t, k, fmt in rows:
        b, o, h = fig(base, p, t, k), fig(one, p, t, k), fig(three, p, t, k)
        print("| %s | %s | %s | %s | %s | %s |"
              % (name, value(base, p, t, k, fmt), value(one, p, t, k, fmt),
                 cell(ratio(o, b), "%.2fx", "-"), value(three, p, t, k, fmt),
                 cell(ratio(h, b), "%.2fx", "-")))
    r_before, r_after, r_secs, r_acc0, r_acc1 = mem["redis"]
    c_before, c_after, c_secs, c_acc0, c_acc1 = mem["chorus"]
    n = args.entries
    r_per = (r_after - r_before) * 1024.0 / n
    c_per = (c_after - c_before) * 1024.0 / n
    payload = len(KEY_FORMAT % 0) + VALUE_BYTES
    print("| memory per entry (RSS growth / %d entries, %d-byte key + %d-byte value) "
          "| %.1f B | %.1f B | %.2fx | - | - |" % (n, len(KEY_FORMAT % 0), VALUE_BYTES, r_per, c_per,
                                                   c_per / r_per))
    print("| same, beyond key and value | %.1f B | %.1f B | %.2fx | - | - |"
          % (r_per - payload, c_per - payload, (c_per - payload) / (r_per - payload)))
    print("| memory per entry, the server's own count (redis used_memory; Chorus INFO cache "
          "memory_bytes) | %.1f B | %.1f B | %s | - | - |"
          % ((r_acc1 - r_acc0) / n, (c_acc1 - c_acc0) / n,
             cell(ratio(c_acc1 - c_acc0, r_acc1 - r_acc0), "%.2fx", "-")))
    print("| RSS before / after the load | %.1f / %.1f MiB | %.1f / %.1f MiB | - | - | - |"
          % (r_before / 1024.0, r_after / 1024.0, c_before / 1024.0, c_after / 1024.0))
    print("| loading them (redis-cli --pipe) | %.1f s | %.1f s | %.2fx | - | - |"
          % (r_secs, c_secs, c_secs / r_secs))

    print("\n| target | figure | result |")
    print("|---|---|---|")
    for what, res, target in (("1 node", one, TARGET_ONE), ("3 nodes at QUORUM", three,
                                                             TARGET_THREE)):
        for p in PIPELINES:
            rs = [ratio(fig(res, p, t, "rps"), fig(base, p, t, "rps")) for t in ("SET", "GET")]
            if None in rs:
                print("| %s >= %d%% of redis-server's ops/s, pipeline %d | no figure | MISSED |"
                      % (what, target * 100, p))
                continue
            print("| %s >= %d%% of redis-server's ops/s, pipeline %d | lower of SET/GET %.0f%% "
                  "| %s |" % (what, target * 100, p, min(rs) * 100, met(min(rs) >= target)))
    b99 = max(fig(base, 1, t, "p99_latency_ms") or 0 for t in ("SET", "GET"))
    for what, res in (("1 node", one), ("3 nodes", three)):
        if not res.get(1):
            print("| %s: p99 <= %g ms at pipeline 1 | no figure | MISSED |" % (what, TARGET_P99_MS))
            continue
        p99 = max(res[1][t]["p99_latency_ms"] for t in ("SET", "GET"))
        print("| %s: p99 <= %g ms at pipeline 1 | higher of SET/GET %.3f ms (redis-server %.3f ms) "
              "| %s |" % (what, TARGET_P99_MS, p99, b99, met(p99 <= TARGET_P99_MS)))
    print("| overhead per entry beyond key and value <= %d B (issue #12 section 4; here by RSS) "
          "| %.1f B | %s |" % (TARGET_OVERHEAD_BYTES, c_per - payload,
                               met(c_per - payload <= TARGET_OVERHEAD_BYTES)))
    if notes:
        print("\nnotes:")
        for x in notes:
            print("- " + x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default=os.environ.get("CHORUS_BUILD_DIR")
                    or os.path.join(SOURCE_DIR, "build"),
                    help="where chorusd and clusterctl are (default build/, or CHORUS_BUILD_DIR)")
    ap.add_argument("--seconds", type=float, default=5.0,
                    help="about how long each command's measured run takes (default 5)")
    ap.add_argument("--entries", type=int, default=1000000,
                    help="entries of the memory load (default 1,000,000)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of every target in turn; figures are medians (default 3)")
    ap.add_argument("--quick", action="store_true",
                    help="1 round, 1 s per command, 100,000 entries: a smoke run")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.entries, args.rounds = 1.0, 100000, 1
    if args.seconds <= 0 or not 1 <= args.entries <= 10000000 or not 1 <= args.rounds <= 100:
        ap.error("--seconds must be > 0, --entries 1..10,000,000, --rounds 1..100")
    probe = 2000 if args.quick else 10000
    load_harness(args.build_dir)
    missing = harness.binaries_missing()
    if missing:
        print("bench_cache: not built: %s (bash scripts/build.sh build; or --build-dir)"
              % ", ".join(missing), file=sys.stderr)
        return 1
    workdir = tempfile.mkdtemp(prefix="chorus-bench-cache-")
    servers, nodes, notes = [], [], []
    try:
        ensure_redis()
        log("== redis: %s; chorusd: %s" % (subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True).stdout.strip(),
            harness.CHORUSD))
        log("== starting redis-server, Chorus 1 node, Chorus 3 nodes (R=3, QUORUM)")
        servers.append(RedisServer(workdir, "redis").start())
        one = chorus_nodes(workdir, 1, "one")
        three = chorus_nodes(workdir, 3, "three")
        nodes = one + three
        log("== redis-benchmark: %d round(s), each target in turn; the 3 nodes through %s"
            % (args.rounds, three[0].name))
        res = measure_all([("redis-server", servers[0].port), ("chorus 1 node", one[0].resp_port),
                           ("chorus 3 nodes", three[0].resp_port)],
                          args.rounds, args.seconds, probe, notes)
        base, one_res, three_res = res["redis-server"], res["chorus 1 node"], res["chorus 3 nodes"]
        check_alive(nodes)
        if not maps_agree(three):
            notes.append("after the 3-node runs the cache maps no longer agreed")
        for n in nodes:
            n.cleanup()
        nodes = []
        servers.pop().cleanup()

        log("== memory: %d entries, fresh servers" % args.entries)
        path = os.path.join(workdir, "load.resp")
        write_load(path, args.entries)
        mem = {}
        servers.append(RedisServer(workdir, "redis-mem").start())
        s = servers[-1]
        mem["redis"] = memory(s.proc.pid, s.port, path, args.entries, "redis-server",
                              lambda: redis_used_memory(s.port))
        servers.pop().cleanup()
        conf = os.path.join(workdir, "mem.conf")
        with open(conf, "w") as f:   # room for the load: no eviction may happen
            f.write("[cache]\nmemory_max = 4G\n")
        nodes = chorus_nodes(workdir, 1, "mem", extra=["--config", conf])
        n = nodes[0]
        mem["chorus"] = memory(n.proc.pid, n.resp_port, path, args.entries, "chorus 1 node",
                               lambda: chorus_memory_bytes(n.resp_port))
        check_alive(nodes)
    except (RunError, AssertionError, OSError, subprocess.SubprocessError) as e:
        print("bench_cache: %s" % e, file=sys.stderr)
        return 1
    finally:
        for n in nodes:
            n.cleanup()
        for s in servers:
            s.cleanup()
        if args.keep:
            log("(kept %s)" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report(base, one_res, three_res, mem, args, notes)
    # a redis-benchmark run without figures is something that could not be run
    failed = [w for w, res in (("redis-server", base), ("1 node", one_res),
                               ("3 nodes", three_res))
              if None in res.values()]
    if failed:
        print("\nbench_cache: runs without figures (%s): see notes" % ", ".join(failed),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
