"""harness.py - real chorusd processes on loopback for the integration tests.

Owns: finding the built binaries (CHORUS_BUILD_DIR, else SOURCE/build), free
TCP ports, one Node per chorusd process (temporary data dir, log file, start,
wait_ready, stop with SIGTERM, kill -9, restart on the same data dir), running
clusterctl and chorus_frametool against a node, a node's membership view,
cluster secrets (keygen), and NodeTestCase, which
cleans every process up even when a test fails and prints the node logs of a
failed test.

At the end of every test NodeTestCase checks that each node the test did not
stop on purpose (stop, kill9) is still running, and scans the output of every
chorusd the test started for sanitizer reports (ASan, UBSan, LeakSanitizer):
the nodes' log files, and the output of one-shot runs (--help, a refused
start) made through NodeTestCase.run_chorusd. Tests start chorusd only
through new_node or run_chorusd, so no output goes unscanned.

Rules the tests keep: never sleep-and-hope. Every wait is a condition polled
with a deadline (wait_until); a fixed sleep appears only where the test needs
time to pass on purpose (e.g. to let a proxy cut connections).

Standard library only.
"""

import json as jsonlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("CHORUS_SOURCE_DIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
BUILD_DIR = os.environ.get("CHORUS_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")

CHORUSD = os.path.join(BUILD_DIR, "chorusd")
CLUSTERCTL = os.path.join(BUILD_DIR, "clusterctl")
FRAMETOOL = os.path.join(BUILD_DIR, "chorus_frametool")
PLUGIN_UPPER = os.path.join(BUILD_DIR, "example_upper.so")

POLL_S = 0.05          # interval between two looks at a condition
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 20.0
CTL_TIMEOUT_S = 60.0   # a clusterctl run that takes longer is a failure
LOG_TAIL_LINES = 60

# clusterctl exit codes (clusterctl --help)
EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_REFUSED = 6

FINAL_STATES = ("succeeded", "failed", "timed_out", "cancelled", "lost")

# reports of AddressSanitizer, LeakSanitizer and UBSan in a node's log
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def nng_resend_leak_only(report):
    """True when a LeakSanitizer report holds only the leak of nng 1.5.2
    known to this project (docs/design.md): a request message nng was
    holding for a resend, lost when its connection closes at the wrong
    moment (seen at node shutdown). Every leak block must be an allocation
    inside libnng reached from frame_request (libchorus handing nng the
    request), and nothing else may be reported."""
    blocks = re.split(r"\n(?=(?:Direct|Indirect) leak of )", report)
    leaks = [b for b in blocks if b.startswith(("Direct leak of", "Indirect leak of"))]
    if not leaks:
        return False
    for b in leaks:
        frames = re.findall(r"^\s+#(\d+) 0x[0-9a-f]+ (?:in )?(.*)$", b, re.M)
        names = [f[1] for f in frames]
        # #0 the allocator, then libnng's own frames, then frame_request
        i = 1
        while i < len(names) and "libnng.so" in names[i]:
            i += 1
        if i == 1 or i >= len(names) or not names[i].startswith("frame_request "):
            return False
    return "ERROR: AddressSanitizer" not in report and "runtime error:" not in report


def is_settings_var(name):
    """Whether chorusd could read the environment variable `name` as a
    setting: every CHORUS_* but the test hooks (CHORUS_TEST_*) and the
    test runner's CHORUS_BUILD_DIR and CHORUS_SOURCE_DIR."""
    return (name.startswith("CHORUS_") and not name.startswith("CHORUS_TEST_")
            and name not in ("CHORUS_BUILD_DIR", "CHORUS_SOURCE_DIR"))


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout_s, what, interval_s=POLL_S):
    """Polls cond() until it returns something truthy (returned) or the
    deadline passes (AssertionError naming `what` and the last value)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        last = cond()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1f s waiting for %s (last: %r)"
                                 % (timeout_s, what, last))
        time.sleep(interval_s)


def keygen(path):
    """Writes a new cluster secret to path (clusterctl keygen) and returns
    path: one secret file shared by every node of a cluster."""
    rc, out, err = run_cmd([CLUSTERCTL, "keygen", path])
    if rc != 0 or not os.path.exists(path):
        raise AssertionError("clusterctl keygen %s failed: rc=%s %s %s" % (path, rc, out, err))
    return path


def binaries_missing():
    """Names of the binaries the tests need that are not built."""
    return [p for p in (CHORUSD, CLUSTERCTL, FRAMETOOL) if not os.access(p, os.X_OK)]


# ---- task JSON helpers: clusterctl --json prints task results as objects ----

def task_id(obj):
    """The task id in a clusterctl JSON answer (a result or a submit ack)."""
    if isinstance(obj, int):
        return obj
    if isinstance(obj, dict):
        for k in ("task_id", "id"):
            if k in obj:
                return int(obj[k])
    raise AssertionError("no task id in %r" % (obj,))


def task_state(obj):
    if isinstance(obj, dict) and "state" in obj:
        return obj["state"]
    raise AssertionError("no state in %r" % (obj,))


def task_list(obj):
    """A list of task results from a JSON answer: a list, or an object
    holding one under results/tasks."""
    if isinstance(obj, list):
        return obj
    if isinstance(obj, dict):
        for k in ("results", "tasks"):
            if isinstance(obj.get(k), list):
                return obj[k]
    raise AssertionError("no list of tasks in %r" % (obj,))


def pool(status, name="default"):
    for p in status.get("pools", []):
        if p.get("name") == name:
            return p
    raise AssertionError("no pool %r in status %r" % (name, status))


def peer_counters(status, peer="127.0.0.1"):
    """The refused-frame counters of one peer address (zeros when absent)."""
    for p in status.get("peers", []):
        if p.get("peer") == peer:
            return p
    return {k: 0 for k in ("forged", "tampered", "replayed", "truncated", "oversized", "malformed")}


class Node:
    """One chorusd process with its own data dir and log file."""

    def __init__(self, workdir, name="n1", args=(), port=None, secret=None, netns=None,
                 host="127.0.0.1"):
        self.workdir = workdir
        self.name = name
        self.args = list(args)
        self.port = port or free_port()
        self.addr = "tcp://%s:%d" % (host, self.port)
        # chorusd and the clients run in this network namespace (NetLab)
        self.prefix = ["ip", "netns", "exec", netns] if netns else []
        self.data_dir = os.path.join(workdir, name + "-data")
        self.log_path = os.path.join(workdir, name + ".log")
        self.secret = secret or os.path.join(self.data_dir, "secret")
        self.proc = None
        self.pgids = []     # process groups we started (chorusd and its workers)
        self.starts = 0
        self.exit_expected = False  # set by stop() and kill9(): its end is on purpose
        self.env = None     # extra environment variables for the next start

    # ---- process control ----

    def start(self, wait=True):
        """Starts chorusd; with wait, returns once it answers status."""
        assert self.proc is None or self.proc.poll() is not None, "node already running"
        self.starts += 1
        self.exit_expected = False
        log = open(self.log_path, "ab")
        log.write(("---- start %d: %s\n" % (self.starts, " ".join(self.command()))).encode())
        log.flush()
        try:
            # a session of its own, so that cleanup can reap orphaned workers;
            # chorusd takes settings from CHORUS_* variables (chorusd --help):
            # none of the caller's reach a test node, only what the test sets
            env = {k: v for k, v in os.environ.items() if not is_settings_var(k)}
            env.update(self.env or {})
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         env=env)
        finally:
            log.close()
        self.pgids.append(self.proc.pid)
        if wait:
            return self.wait_ready()
        return None

    def command(self):
        return self.prefix + [CHORUSD, "--data-dir", self.data_dir, "--listen", self.addr,
                "--name", self.name] + self.args

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def died_unexpectedly(self):
        """The exit code when chorusd was started and has exited although
        nobody stopped or killed it on purpose; None otherwise."""
        if self.proc is None or self.exit_expected:
            return None
        return self.proc.poll()

    def wait_ready(self, timeout_s=READY_TIMEOUT_S):
        """Polls `clusterctl status --json` until it answers; fails at once
        when chorusd exits. Returns the status object."""
        deadline = time.monotonic() + timeout_s
        last = ""
        while True:
            if not self.running():
                raise AssertionError("chorusd %s exited with %s before it was ready:\n%s"
                                     % (self.name, self.proc.returncode, self.log_tail()))
            if os.path.exists(self.secret):
                rc, out, err = self.ctl("--timeout", "1s", "status", timeout_s=10)
                if rc == 0 and isinstance(out, dict):
                    return out
                last = "rc=%s %s" % (rc, err.strip())
            if time.monotonic() >= deadline:
                raise AssertionError("chorusd %s not ready after %.0f s (%s):\n%s"
                                     % (self.name, timeout_s, last, self.log_tail()))
            time.sleep(POLL_S)

    def wait_exit(self, timeout_s=STOP_TIMEOUT_S):
        """Waits for chorusd to exit; returns its exit code (fails on timeout)."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError("chorusd %s did not exit within %.0f s:\n%s"
                                 % (self.name, timeout_s, self.log_tail()))

    def stop(self, timeout_s=STOP_TIMEOUT_S):
        """SIGTERM (a drain), then waits; returns the exit code."""
        self.exit_expected = True
        if not self.running():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout_s)

    def sigterm(self):
        """SIGTERM without waiting: the node drains while the test looks."""
        self.exit_expected = True
        if self.running():
            self.proc.send_signal(signal.SIGTERM)

    def kill9(self):
        """kill -9 of chorusd alone (its workers are left to notice)."""
        self.exit_expected = True
        if self.running():
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)

    def restart(self, wait=True):
        """Starts again on the same data dir, port and secret."""
        if self.running():
            self.stop()
        return self.start(wait=wait)

    def cleanup(self):
        """Kills chorusd and its process group (workers, exec children).

        Only the group of the process still running is signalled, before it
        is reaped: while its leader is unreaped the group id cannot belong to
        anyone else. Groups of earlier runs are not signalled, since their ids
        may have been reused by now; their workers die with their node
        (PR_SET_PDEATHSIG)."""
        if self.running():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass

    def log_text(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_lines_since_last_start(self):
        text = self.log_text()
        i = text.rfind("---- start ")
        return text[i:].splitlines()[1:] if i >= 0 else text.splitlines()

    def log_tail(self, n=LOG_TAIL_LINES):
        return "\n".join(self.log_text().splitlines()[-n:])

    # ---- clients ----

    def ctl(self, *args, json=True, timeout_s=CTL_TIMEOUT_S, input=None, secret=None, addr=None):
        """Runs clusterctl -a ADDR -k SECRET [--json] ARGS. Returns
        (exit code, parsed JSON (or the text when it does not parse, or
        json=False), stderr text)."""
        cmd = self.prefix + [CLUSTERCTL, "-a", addr or self.addr, "-k", secret or self.secret]
        if json:
            cmd.append("--json")
        cmd += [str(a) for a in args]
        return run_cmd(cmd, timeout_s=timeout_s, input=input, parse_json=json)

    def status(self):
        rc, out, err = self.ctl("status")
        if rc != 0 or not isinstance(out, dict):
            raise AssertionError("status failed: rc=%s out=%r err=%s" % (rc, out, err))
        return out

    def members(self):
        """The node's membership view (clusterctl --json members) as a dict
        name -> member object."""
        rc, out, err = self.ctl("members")
        if rc != 0 or not isinstance(out, list):
            raise AssertionError("members of %s failed: rc=%s out=%r err=%s"
                                 % (self.name, rc, out, err))
        return {m["name"]: m for m in out}

    def task(self, tid):
        """One task's result object (clusterctl status ID)."""
        rc, out, err = self.ctl("status", tid)
        if rc != 0 or not isinstance(out, dict):
            raise AssertionError("status %s failed: rc=%s out=%r err=%s" % (tid, rc, out, err))
        return out

    def submit(self, handler, *args, payload=None, expect_rc=0):
        """clusterctl submit HANDLER [PAYLOAD] ARGS...; checks the exit code
        and returns the JSON answer."""
        cmd = ["submit", handler]
        if payload is not None:
            cmd.append(payload)
        rc, out, err = self.ctl(*(cmd + list(args)))
        if expect_rc is not None and rc != expect_rc:
            raise AssertionError("submit %s %r: rc=%s (expected %s) out=%r err=%s\n%s"
                                 % (handler, args, rc, expect_rc, out, err, self.log_tail(20)))
        return out

    def frametool(self, mode, *args, timeout_s=60, secret=None, addr=None):
        """Runs chorus_frametool; returns (exit code, stdout, stderr)."""
        cmd = self.prefix + [FRAMETOOL, addr or self.addr, secret or self.secret, mode] + \
            [str(a) for a in args]
        # nng 1.5.2 can leak a request it was holding for a resend when a
        # connection is cut at the wrong moment (seen about once in 15 runs of
        # the cutting-proxy test, inside libnng). The frametool is the client
        # that drives those cuts: its leak report is still printed on stderr,
        # but does not turn its exit code into a failure. chorusd and the
        # unit tests (valgrind, ASan) keep full leak checking.
        env = dict(os.environ)
        env["LSAN_OPTIONS"] = (env.get("LSAN_OPTIONS", "") + ":exitcode=0").lstrip(":")
        return run_cmd(cmd, timeout_s=timeout_s, parse_json=False, env=env)


class NetLab:
    """Hosts of their own: one network namespace per node, each with a veth
    into a bridge that lives in a hub namespace of its own (nothing of the
    machine's own network is touched). cut(i) takes node i's port on the
    bridge down: its packets are dropped silently, both ways, as when a
    cable is pulled; heal(i) brings it back. Needs root and iproute2;
    unavailable() says why not, in one line, for the test's skip."""

    SUBNET = "10.231.0"

    def __init__(self, count):
        tag = "%x" % (os.getpid() & 0xfffff)
        self.hub = "chub" + tag
        self.names = ["cn%d-%s" % (i, tag) for i in range(count)]
        self.ports = ["cv%d%s" % (i, tag) for i in range(count)]
        self.made = []

    @staticmethod
    def unavailable():
        if os.geteuid() != 0:
            return "network namespaces need root"
        if shutil.which("ip") is None:
            return "no ip command (iproute2)"
        probe = "cprobe%x" % (os.getpid() & 0xfffff)
        r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
        if r.returncode != 0:
            return "cannot create a network namespace: %s" % r.stderr.strip()
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
        return None

    def _ip(self, *args):
        r = subprocess.run(["ip"] + list(args), capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("ip %s: %s" % (" ".join(args), r.stderr.strip()))

    def host(self, i):
        return "%s.%d" % (self.SUBNET, i + 1)

    def setup(self):
        self._ip("netns", "add", self.hub)
        self.made.append(self.hub)
        self._ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        self._ip("-n", self.hub, "link", "set", "br0", "up")
        for i, ns in enumerate(self.names):
            self._ip("netns", "add", ns)
            self.made.append(ns)
            self._ip("-n", ns, "link", "set", "lo", "up")
            # both ends made in the node's namespace, one moved to the hub
            self._ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name",
                     self.ports[i])
            self._ip("-n", ns, "link", "set", self.ports[i], "netns", self.hub)
            self._ip("-n", ns, "addr", "add", self.host(i) + "/24", "dev", "eth0")
            self._ip("-n", ns, "link", "set", "eth0", "up")
            self._ip("-n", self.hub, "link", "set", self.ports[i], "master", "br0")
            self._ip("-n", self.hub, "link", "set", self.ports[i], "up")

    def cut(self, i):
        self._ip("-n", self.hub, "link", "set", self.ports[i], "down")

    def heal(self, i):
        self._ip("-n", self.hub, "link", "set", self.ports[i], "up")

    def cleanup(self):
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.made = []


def run_cmd(cmd, timeout_s=CTL_TIMEOUT_S, input=None, parse_json=False, env=None):
    """Runs a command with a deadline; returns (rc, stdout (JSON-parsed when
    asked and possible), stderr)."""
    if isinstance(input, str):
        input = input.encode()
    try:
        p = subprocess.run(cmd, input=input,
                           stdin=None if input is not None else subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout_s,
                           env=env)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("%s did not finish within %.0f s (stdout %r stderr %r)"
                             % (" ".join(cmd), timeout_s, e.stdout, e.stderr))
    out = p.stdout.decode(errors="replace")
    err = p.stderr.decode(errors="replace")
    if parse_json:
        try:
            out = jsonlib.loads(out)
        except ValueError:
            pass
    return p.returncode, out, err


class NodeTestCase(unittest.TestCase):
    """A test case with a temporary directory and nodes that are always
    cleaned up; the logs of a failed test's nodes are printed."""

    def setUp(self):
        missing = binaries_missing()
        if missing:
            self.fail("not built: %s (build with scripts/build.sh; set CHORUS_BUILD_DIR)"
                      % ", ".join(missing))
        self.workdir = tempfile.mkdtemp(prefix="chorus-it-")
        self.nodes = []
        self.chorusd_runs = []  # (command line, output) of one-shot chorusd runs
        # registered first, so it runs last: after every node was stopped
        self.addCleanup(self.check_sanitizer_reports)

    def tearDown(self):
        # before the cleanups kill the nodes: a node that died on its own
        # (a crash, an abort, a sanitizer halting it) fails the test
        self.check_nodes_alive()
        super().tearDown()

    def check_nodes_alive(self):
        """Fails the test when a node it did not stop or kill on purpose is
        no longer running, with the tail of that node's log."""
        dead = [(n, n.died_unexpectedly()) for n in self.nodes]
        dead = [(n, rc) for n, rc in dead if rc is not None]
        if dead:
            self.fail("\n".join("node %s died unexpectedly (exit code %s); last lines of %s:\n%s"
                                % (n.name, rc, n.log_path, n.log_tail(30)) for n, rc in dead))

    def check_sanitizer_reports(self):
        """Fails the test when a chorusd it started (a node, its workers, or
        a one-shot run) printed a sanitizer report (ASan+UBSan builds)."""
        sources = [("the log of node %s (%s)" % (n.name, n.log_path), n.log_text())
                   for n in self.nodes]
        sources += [("the output of `%s`" % cmd, text) for cmd, text in self.chorusd_runs]
        reports = []
        for where, text in sources:
            hits = [i for i in (text.find(m) for m in SANITIZER_MARKS) if i >= 0]
            if hits:
                i = min(hits)
                if nng_resend_leak_only(text[i:]):
                    print("note: %s has nng 1.5.2's known resend leak only (ignored)" % where,
                          file=sys.stderr)
                    continue
                reports.append("sanitizer report in %s:\n%s" % (where, text[max(0, i - 200):i + 3000]))
        if reports:
            self.fail("\n".join(reports))

    def run_chorusd(self, *args, timeout_s=30, env_extra=None):
        """Runs chorusd ARGS to its end (--help, a start that must be
        refused), with the variables of env_extra; returns (exit code,
        stdout, stderr). Its output is scanned for sanitizer reports at the
        end of the test."""
        cmd = [CHORUSD] + [str(a) for a in args]
        env = {k: v for k, v in os.environ.items() if not is_settings_var(k)}
        env.update(env_extra or {})
        rc, out, err = run_cmd(cmd, timeout_s=timeout_s, env=env)
        self.chorusd_runs.append((" ".join(cmd), out + err))
        return rc, out, err

    def new_node(self, *args, name=None, start=True, **kw):
        """A node with extra chorusd flags; started and ready unless start=False."""
        node = Node(self.workdir, name=name or "n%d" % (len(self.nodes) + 1), args=args, **kw)
        self.nodes.append(node)
        self.addCleanup(node.cleanup)
        if start:
            node.start()
        return node

    def run(self, result=None):
        result = result if result is not None else self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        super().run(result)
        failed = len(result.failures) + len(result.errors) > before
        nodes = getattr(self, "nodes", [])
        if failed:
            for n in nodes:
                sys.stderr.write("\n==== %s: log of node %s (%s), last %d lines ====\n%s\n"
                                 % (self.id(), n.name, n.log_path, LOG_TAIL_LINES, n.log_tail()))
        workdir = getattr(self, "workdir", None)
        if workdir and not failed:
            shutil.rmtree(workdir, ignore_errors=True)
        elif workdir:
            sys.stderr.write("(kept %s)\n" % workdir)
        return result

    # ---- assertions on tasks ----

    def wait_task(self, node, tid, states=FINAL_STATES, timeout_s=30):
        """Polls one task until its state is one of `states`; returns it."""
        def look():
            t = node.task(tid)
            return t if task_state(t) in states else None
        return wait_until(look, timeout_s, "task %s in %s" % (tid, states))

    def wait_status(self, node, pred, what, timeout_s=15):
        """Polls node status until pred(status) holds; returns the status."""
        seen = {}

        def look():
            seen["status"] = node.status()
            return seen["status"] if pred(seen["status"]) else None
        try:
            return wait_until(look, timeout_s, what)
        except AssertionError as e:
            raise AssertionError("%s; last status: %r" % (e, seen.get("status")))
