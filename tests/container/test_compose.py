"""test_compose.py - the container deployment end to end (issue #13):
deploy/build-image.sh, deploy/init.sh and deploy/docker-compose.yml on a
real Docker engine. Run by scripts/test.sh; prints one line and exits 0
when no Docker engine answers (or docker-compose is missing, or not root).

One scenario, in order, each step with a deadline:
 1. build the image (static binaries, FROM scratch) under a tag of its own
    (its chorusd refuses --plugin), make the secrets with init.sh, `up -d`
    under a project name of its own;
 2. every node healthy (its HEALTHCHECK: clusterctl status with the client
    credential); `clusterctl status` shows 3 alive members and a leader,
    from the host through the published port and from `run --rm ctl`;
 3. a fan-out of 1,000 tasks completes, every result in order;
 4. a cache value written on n1 is read on n3, through clusterctl and
    through the RESP ports (password from init.sh);
 5. an every-second schedule runs; a transient fan-out is in flight through
    a follower; the leader is `docker kill`ed: a new leader is elected, the
    schedule keeps firing under it, the fan-out completes with every task
    once and succeeded; the old leader is started again and follows; the
    schedule decided every second exactly once and the journals hold one
    task per dispatched occurrence;
 6. a follower is `docker network disconnect`ed, keys are written while it
    is away, it is connected again: every node sees 3 alive members and
    holds every key;
 7. a rolling restart as docs/deploy.md's upgrade does it (each node
    recreated in turn, the next once the cluster has it back) while a
    schedule runs: the cache keeps every key, the schedule decides every
    second once;
 8. `up --scale node=1 node` adds a fourth node (named after its host name,
    advertising it): it joins, is alive everywhere and leads partitions;
 9. `down -v` leaves no container, network or volume of the project.
On any failure: the logs of every container of the project, then the same
cleanup. Nothing sleeps for a fixed time: every wait polls a condition
until its deadline.

Environment: CHORUS_COMPOSE overrides the compose command ("docker
compose" for the v2 plugin; default docker-compose, else the plugin).
Standard library only.
"""

import hashlib
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("CHORUS_SOURCE_DIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
DEPLOY = os.path.join(SOURCE_DIR, "deploy")
STATIC_DIR = os.environ.get("CHORUS_STATIC_BUILD_DIR") or os.path.join(SOURCE_DIR, "build-static")
CLUSTERCTL = os.path.join(STATIC_DIR, "clusterctl")
NAME = "test_compose"

POLL_S = 0.2
CMD_TIMEOUT_S = 120       # one docker / compose command
BUILD_TIMEOUT_S = 600     # the static build and the image, on a fresh tree
HEALTHY_S = 90            # containers healthy after up
CONVERGE_S = 60           # membership, leaders, cache
FANOUT = 1000
INFLIGHT = 240            # transient sleeps in flight while the leader dies
INFLIGHT_MS = 100
PART_KEYS = 40            # cache keys written while a node is cut off
GOSSIP = "200ms"          # the test's gossip period (an override file)
LOG_TAIL_LINES = 400


class Skip(Exception):
    pass


def log(msg):
    print("%s: %s" % (NAME, msg), flush=True)


def run(cmd, timeout_s=CMD_TIMEOUT_S, check=True, env=None, input=None):
    """Runs cmd with a deadline; returns the CompletedProcess (text).
    check: a non-zero exit raises AssertionError with its output."""
    try:
        p = subprocess.run(cmd, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=timeout_s, env=env,
                           stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("`%s` did not finish within %d s (stdout %r, stderr %r)"
                             % (" ".join(cmd), timeout_s, e.stdout, e.stderr))
    if check and p.returncode != 0:
        raise AssertionError("`%s` exited %d:\n%s%s" % (" ".join(cmd), p.returncode, p.stdout,
                                                        p.stderr))
    return p


def wait_until(cond, timeout_s, what):
    """Polls cond() until it returns something truthy (returned) or the
    deadline passes (AssertionError naming what, and the last value or
    error seen)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        try:
            last = cond()
            if last:
                return last
        except AssertionError as e:
            last = "error: %s" % e
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.0f s waiting for %s (last: %s)"
                                 % (timeout_s, what, str(last)[:2000]))
        time.sleep(POLL_S)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- where the test can run ----

def compose_command():
    """The compose command as a list, or raises Skip."""
    forced = os.environ.get("CHORUS_COMPOSE")
    if forced:
        return shlex.split(forced)
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    p = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if p.returncode == 0:
        return ["docker", "compose"]
    raise Skip("neither docker-compose nor the docker compose plugin is installed")


def check_environment():
    """Raises Skip, with the reason, when the test cannot run here."""
    if shutil.which("docker") is None:
        raise Skip("no docker command (no Docker engine)")
    try:
        p = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                           capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        raise Skip("no Docker engine answers (docker info timed out)")
    if p.returncode != 0 or not p.stdout.strip():
        raise Skip("no Docker engine answers (docker info: %s)"
                   % (p.stderr.strip().splitlines() or ["no output"])[-1])
    if os.geteuid() != 0:
        # init.sh gives the secrets to the image's user (10001): root, or a
        # sudo that may ask for a password, which a test cannot answer
        raise Skip("needs root (init.sh gives the secrets to uid 10001)")
    return p.stdout.strip(), compose_command()


# ---- the deployment under test ----

class Deployment:
    """One compose project: the image tag, secrets, ports and override file
    of this run, and the commands that act on it."""

    def __init__(self, compose):
        self.compose_cmd = compose
        tag = "%x%04x" % (os.getpid(), random.getrandbits(16))
        self.project = "chorustest" + tag
        self.image = "localhost/chorus:test-" + tag
        self.workdir = tempfile.mkdtemp(prefix="chorus-compose-")
        self.secrets = os.path.join(self.workdir, "secrets")
        self.ports = {}     # service -> (client port, RESP port) on 127.0.0.1
        self.volumes = set()  # every volume a container of the project used
        self.image_built = False
        self.override = os.path.join(self.workdir, "test-override.yml")
        with open(self.override, "w") as f:
            # faster failure detection for the test; nothing else differs
            f.write('version: "3.8"\nservices:\n')
            for svc in ("n1", "n2", "n3", "node"):
                f.write("  %s:\n    environment:\n      CHORUS_GOSSIP_PERIOD: %s\n"
                        % (svc, GOSSIP))
        self.env = dict(os.environ)
        self.env.update({"CHORUS_IMAGE": self.image, "CHORUS_SECRETS_DIR": self.secrets})
        for i, svc in enumerate(("n1", "n2", "n3"), 1):
            client, resp = free_port(), free_port()
            self.ports[svc] = (client, resp)
            self.env["CHORUS_PORT_N%d" % i] = str(client)
            self.env["CHORUS_RESP_PORT_N%d" % i] = str(resp)

    # -- commands --

    def compose(self, *args, timeout_s=CMD_TIMEOUT_S, check=True):
        cmd = self.compose_cmd + ["-p", self.project, "-f",
                                  os.path.join(DEPLOY, "docker-compose.yml"), "-f",
                                  self.override, "--profile", "extra", "--profile", "tools"]
        return run(cmd + list(args), timeout_s=timeout_s, check=check, env=self.env)

    def up(self, *args):
        # without --profile: `up` must start n1..n3 alone
        cmd = self.compose_cmd + ["-p", self.project, "-f",
                                  os.path.join(DEPLOY, "docker-compose.yml"), "-f",
                                  self.override, "up", "-d", "--no-build"]
        return run(cmd + list(args), env=self.env)

    def containers(self, service=None):
        """Ids of the project's containers (of one service), running or not."""
        flt = ["--filter", "label=com.docker.compose.project=%s" % self.project]
        if service:
            flt += ["--filter", "label=com.docker.compose.service=%s" % service]
        out = run(["docker", "ps", "-a", "-q", "--no-trunc"] + flt).stdout.split()
        return out

    def container(self, service):
        ids = self.containers(service)
        if len(ids) != 1:
            raise AssertionError("service %s has %d containers, expected 1" % (service, len(ids)))
        return ids[0]

    def inspect(self, cid):
        return json.loads(run(["docker", "inspect", cid]).stdout)[0]

    def health(self, cid):
        st = self.inspect(cid)["State"]
        return (st.get("Health") or {}).get("Status", "none") if st["Running"] else st["Status"]

    def ctl(self, service, *args, timeout_s=30, check=True, json_out=True):
        """clusterctl with the client credential against a node: from the
        host through its published port (n1..n3), or inside its container
        (extra nodes publish none). Returns the parsed JSON (or the text)."""
        base = ["--timeout", "5s"] + (["--json"] if json_out else [])
        if service in self.ports:
            cmd = [CLUSTERCTL, "-a", "tcp://127.0.0.1:%d" % self.ports[service][0], "-k",
                   os.path.join(self.secrets, "client.key")] + base
        else:
            cmd = ["docker", "exec", service, "/usr/bin/clusterctl", "-k",
                   "/run/secrets/chorus_client"] + base
        p = run(cmd + [str(a) for a in args], timeout_s=timeout_s, check=check)
        if not json_out:
            return p
        try:
            return json.loads(p.stdout)
        except ValueError:
            raise AssertionError("clusterctl %s: not JSON: %r %r" % (args, p.stdout[:500],
                                                                     p.stderr[:500]))

    def status(self, service):
        return self.ctl(service, "status")

    def member_state(self, service, name):
        """The state of member `name` in the view of `service` (None: not
        listed)."""
        for m in self.status(service)["members"]:
            if m["name"] == name:
                return m["state"]
        return None

    def alive(self, service):
        """Names of the members `service` sees alive."""
        return sorted(m["name"] for m in self.status(service)["members"]
                      if m["state"] == "alive")

    def record_volumes(self):
        for cid in self.containers():
            for m in self.inspect(cid).get("Mounts", []):
                if m.get("Type") == "volume":
                    self.volumes.add(m["Name"])

    # -- failure and cleanup --

    def print_logs(self):
        for cid in self.containers():
            info = self.inspect(cid)
            name = info["Name"].lstrip("/")
            p = run(["docker", "logs", "--timestamps", "--tail", str(LOG_TAIL_LINES), cid],
                    check=False)
            sys.stdout.write("\n==== %s: log of container %s (%s, %s), last %d lines ====\n%s%s\n"
                             % (NAME, name, cid[:12], info["State"]["Status"], LOG_TAIL_LINES,
                                p.stdout, p.stderr))
        sys.stdout.flush()

    def down(self):
        """down -v, then checks that nothing of the project is left."""
        self.record_volumes()
        self.compose("down", "-v", "--remove-orphans", "--timeout", "30", timeout_s=180)
        left = []
        label = "label=com.docker.compose.project=%s" % self.project
        for what, cmd in (("container", ["docker", "ps", "-a", "-q", "--filter", label]),
                          ("network", ["docker", "network", "ls", "-q", "--filter", label]),
                          ("volume", ["docker", "volume", "ls", "-q", "--filter", label])):
            left += ["%s %s" % (what, x) for x in run(cmd).stdout.split()]
        existing = set(run(["docker", "volume", "ls", "-q"]).stdout.split())
        left += ["volume %s" % v for v in sorted(self.volumes & existing)]
        return left

    def cleanup(self):
        """Best effort, every step tried: containers, networks, volumes,
        the image tag, the secrets."""
        try:
            self.compose("down", "-v", "--remove-orphans", "--timeout", "10", timeout_s=180,
                         check=False)
        except AssertionError as e:
            log("cleanup: %s" % e)
        for v in sorted(self.volumes):
            run(["docker", "volume", "rm", "-f", v], check=False)
        if self.image_built:
            run(["docker", "image", "rm", "-f", self.image], check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)


# ---- the steps ----

def leader_of(d, services):
    """The service whose node is the Raft leader, asked of services in
    turn; None while there is none."""
    for svc in services:
        try:
            st = d.status(svc)
        except AssertionError:
            continue
        if st.get("raft_role") == "leader":
            return svc
    return None


def history(d, service, name):
    out = d.ctl(service, "cron", "history", name, "--limit", 64)
    if not isinstance(out, list):
        raise AssertionError("cron history: %r" % (out,))
    return out


def step_up(d):
    t0 = time.monotonic()
    p = run(["bash", os.path.join(DEPLOY, "build-image.sh"), d.image], timeout_s=BUILD_TIMEOUT_S,
            env=d.env)
    d.image_built = True
    log("image %s built in %.1f s (%s)" % (d.image, time.monotonic() - t0,
                                          p.stdout.strip().splitlines()[-1]))
    # a static chorusd cannot load a plugin: refused at start, exit 2
    p = run(["docker", "run", "--rm", "--network", "none", d.image, "--plugin", "/x.so"],
            check=False)
    assert p.returncode == 2 and "statically linked and cannot load plugins" in p.stderr, \
        (p.returncode, p.stderr)
    run(["bash", os.path.join(DEPLOY, "init.sh")], env=d.env)
    for f in ("cluster.secret", "client.key", "resp.password"):
        st = os.stat(os.path.join(d.secrets, f))
        assert (st.st_uid, st.st_mode & 0o777) == (10001, 0o600), (f, st)
    d.up()
    d.record_volumes()
    cids = {svc: d.container(svc) for svc in ("n1", "n2", "n3")}
    assert sorted(s for s in ("node", "ctl") if d.containers(s)) == [], "up started a profile"
    wait_until(lambda: all(d.health(c) == "healthy" for c in cids.values()), HEALTHY_S,
               "n1, n2, n3 healthy")
    for svc, cid in cids.items():
        info = d.inspect(cid)
        assert info["Config"]["User"] == "10001:10001", info["Config"]["User"]
        for port, binds in info["NetworkSettings"]["Ports"].items():
            for b in binds or []:
                assert b["HostIp"] == "127.0.0.1", "%s publishes %s on %s" % (svc, port, b)
    return cids


def step_status(d):
    def ready():
        st = d.status("n1")
        alive = [m["name"] for m in st["members"] if m["state"] == "alive"]
        return (sorted(alive) == ["n1", "n2", "n3"] and st.get("raft_leader") and
                len(st.get("raft_voters", [])) == 3) and st
    st = wait_until(ready, CONVERGE_S, "3 alive members, 3 voters and a leader")
    # the ctl service: clusterctl in a container with the client credential
    p = d.compose("run", "--rm", "-T", "ctl", "--json", "status")
    ctl = json.loads(p.stdout)
    assert sorted(m["name"] for m in ctl["members"] if m["state"] == "alive") == \
        ["n1", "n2", "n3"], ctl["members"]
    assert ctl.get("raft_leader") == st["raft_leader"], (ctl.get("raft_leader"), st["raft_leader"])
    return st["raft_leader"]


def step_fanout(d):
    lines = "".join("t%d\n" % i for i in range(FANOUT))
    path = os.path.join(d.workdir, "fanout.txt")
    with open(path, "w") as f:
        f.write(lines)
    t0 = time.monotonic()
    out = d.ctl("n2", "submit", "echo", "--fanout", path, timeout_s=120)
    took = time.monotonic() - t0
    assert isinstance(out, list) and len(out) == FANOUT, "%d results" % len(out)
    bad = [r for r in out if r.get("state") != "succeeded"]
    assert not bad, bad[:5]
    outputs = [r.get("output") for r in out]
    assert outputs == ["t%d" % i for i in range(FANOUT)], "results out of order or wrong"
    nodes = sorted({r.get("node") for r in out})
    assert len(nodes) >= 2, "a fan-out ran on %s only" % nodes
    log("fan-out of %d tasks: %.1f s, ran on %s" % (FANOUT, took, ", ".join(nodes)))


def resp_call(port, password, *args):
    """One RESP command after AUTH on a fresh connection; returns the reply
    line or the bulk string."""
    def frame(parts):
        b = b"*%d\r\n" % len(parts)
        for p in parts:
            p = p.encode() if isinstance(p, str) else p
            b += b"$%d\r\n%s\r\n" % (len(p), p)
        return b
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        s.sendall(frame(["AUTH", password]) + frame(list(args)))
        auth = f.readline().rstrip(b"\r\n")
        assert auth == b"+OK", "AUTH answered %r" % auth
        line = f.readline().rstrip(b"\r\n")
        if line.startswith(b"$") and line != b"$-1":
            n = int(line[1:])
            return f.read(n + 2)[:n].decode()
        return line.decode()


def step_cache(d):
    rc = d.ctl("n1", "cache", "put", "deploy:greeting", "hello from n1", json_out=False)
    assert rc.returncode == 0
    p = d.ctl("n3", "cache", "get", "deploy:greeting", json_out=False)
    assert p.stdout == "hello from n1", repr(p.stdout)
    with open(os.path.join(d.secrets, "resp.password")) as f:
        pw = f.read().strip()
    assert resp_call(d.ports["n1"][1], pw, "SET", "deploy:resp", "via n1") == "+OK"
    assert resp_call(d.ports["n3"][1], pw, "GET", "deploy:resp") == "via n1"
    return {"deploy:greeting", "deploy:resp"}


class Stream:
    """A streamed fan-out run by clusterctl in the background; its result
    lines ("index<TAB>state<TAB>output<TAB>node") collected as they come."""

    def __init__(self, cmd, stdin_text):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.err = ""
        self.lock = threading.Lock()
        self.proc.stdin.write(stdin_text)
        self.proc.stdin.close()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.lock:
                self.lines.append(line.rstrip("\n").split("\t"))
        self.err = self.proc.stderr.read()

    def count(self):
        with self.lock:
            return len(self.lines)

    def finish(self, timeout_s):
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("the fan-out did not finish within %d s (%d results)"
                                 % (timeout_s, self.count()))
        self.reader.join(10)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def step_failover(d, cids):
    services = ["n1", "n2", "n3"]
    d.ctl("n1", "cron", "every", "tick", "1s", "sha256", "tick", json_out=False)
    wait_until(lambda: sum(1 for r in history(d, "n1", "tick") if r["outcome"] == "succeeded") >= 3,
               30, "three runs of the schedule")
    old = wait_until(lambda: leader_of(d, services), 10, "a leader")
    followers = [s for s in services if s != old]
    # a transient fan-out in flight through a follower while the leader dies
    coord = followers[0]
    stream = Stream([CLUSTERCTL, "-a", "tcp://127.0.0.1:%d" % d.ports[coord][0], "-k",
                     os.path.join(d.secrets, "client.key"), "--timeout", "10s", "submit",
                     "sleep", "--fanout", "-", "--transient", "--retries", "5"],
                    "%d\n" % INFLIGHT_MS * INFLIGHT)
    try:
        wait_until(lambda: stream.count() >= 20, 60, "the first results of the fan-out")
        run(["docker", "kill", cids[old]])
        t0 = time.monotonic()
        new = wait_until(lambda: leader_of(d, followers), 20, "a new leader")
        log("leader %s killed: %s elected after %.1f s (from the test's polling)"
            % (old, new, time.monotonic() - t0))
        rc = stream.finish(120)
    finally:
        stream.kill()
    assert rc == 0, "the fan-out exited %d: %s" % (rc, stream.err[-2000:])
    idx = [int(l[0]) for l in stream.lines]
    assert sorted(idx) == list(range(INFLIGHT)), "results: %d, distinct %d" % (len(idx), len(set(idx)))
    states = {l[1] for l in stream.lines}
    assert states == {"succeeded"}, states
    ran_on = sorted({l[3] for l in stream.lines if len(l) > 3})
    log("in-flight fan-out of %d: every task once, succeeded, ran on %s"
        % (INFLIGHT, ", ".join(ran_on)))
    # the schedule goes on under the new leader
    wait_until(lambda: sum(1 for r in history(d, new, "tick") if r["node"] == new and
                           r["outcome"] == "succeeded") >= 3, 30,
               "three runs decided by the new leader %s" % new)
    # the old leader comes back as a follower
    run(["docker", "start", cids[old]])
    wait_until(lambda: d.status(old).get("raft_leader") == new, CONVERGE_S,
               "%s restarted and following %s" % (old, new))
    wait_until(lambda: d.health(cids[old]) == "healthy", HEALTHY_S, "%s healthy again" % old)
    check_exactly_once(d, services, "tick")
    return new


def check_exactly_once(d, services, name):
    """Every second from the first decision to the last decided once (fired
    or skipped with a reason), and one task per dispatched occurrence in
    the journals (the schedule runs sha256 on its own name: its tasks are
    those with that output): the schedule is paused first and its runs
    awaited, so history and journals are read at rest."""
    d.ctl("n1", "cron", "pause", name, "--note", "checking", json_out=False)
    wait_until(lambda: not any(r["outcome"] in ("fired", "dispatched", "queued", "running")
                               for r in history(d, "n1", name)), 30, "the runs to end")
    runs = history(d, "n1", name)
    times = [r["scheduled_s"] for r in runs]
    dup = sorted({t for t in times if times.count(t) > 1})
    assert not dup, "decided more than once: %r" % dup
    assert sorted(times) == list(range(min(times), max(times) + 1)), "a second undecided: %r" % runs
    for r in runs:
        if r["outcome"] == "skipped":
            assert r.get("why"), r
    # the history keeps the newest 64 decisions: count the tasks of the
    # occurrences it holds (an occurrence's task is submitted after its time)
    since_ms = min(times) * 1000
    digest = hashlib.sha256(name.encode()).hexdigest()
    tasks = 0
    for svc in services:
        out = d.ctl(svc, "tasks", "--limit", 10000)
        tasks += sum(1 for t in out if t.get("output") == digest and
                     t.get("submitted_ms", 0) >= since_ms)
    dispatched = [r for r in runs if r.get("task_id")]
    assert tasks == len(dispatched), "%d tick tasks in the journals, %d dispatched: %r" % (
        tasks, len(dispatched), runs)
    outcomes = {}
    for r in runs:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    why = sorted({r.get("why") for r in runs if r["outcome"] != "succeeded"} - {None, ""})
    log("schedule %s: %d seconds decided once each (%s; %s), %d tasks for %d dispatched"
        % (name, len(runs), ", ".join("%s %d" % kv for kv in sorted(outcomes.items())),
           "; ".join(why) or "-", tasks, len(dispatched)))


def step_partition(d, cids, keys):
    leader = leader_of(d, ["n1", "n2", "n3"])
    victim = "n3" if leader != "n3" else "n2"
    writer = "n1" if leader != "n1" else ("n2" if victim != "n2" else "n3")
    others = [s for s in ("n1", "n2", "n3") if s != victim]
    cid = cids[victim]
    nets = list(d.inspect(cid)["NetworkSettings"]["Networks"])
    assert len(nets) == 1, nets
    net = nets[0]
    run(["docker", "network", "disconnect", net, cid])
    t0 = time.monotonic()
    try:
        # dead, not only suspect: the cache's map keeps suspect members
        wait_until(lambda: all(d.member_state(s, victim) in ("dead", None) for s in others),
                   CONVERGE_S, "%s seen dead by %s" % (victim, others))
        log("%s disconnected: seen dead after %.1f s" % (victim, time.monotonic() - t0))
        for i in range(PART_KEYS):
            k = "deploy:cut:%d" % i
            d.ctl(writer, "cache", "put", k, "v%d" % i, json_out=False)
            keys.add(k)
    finally:
        # the service name is an alias on the network: give it back
        run(["docker", "network", "connect", "--alias", victim, net, cid])
    t0 = time.monotonic()
    wait_until(lambda: all(d.alive(s) == ["n1", "n2", "n3"] for s in ("n1", "n2", "n3")),
               CONVERGE_S, "3 alive members seen from every node")
    log("%s reconnected: membership converged after %.1f s" % (victim, time.monotonic() - t0))

    wait_until(lambda: cache_converged(d, keys), CONVERGE_S,
               "every node holding all %d keys" % len(keys))
    log("cache converged after %.1f s: %d keys on each node" % (time.monotonic() - t0, len(keys)))
    for i in (0, PART_KEYS - 1):
        p = d.ctl(victim, "cache", "get", "deploy:cut:%d" % i, "--consistency", "all",
                  json_out=False)
        assert p.stdout == "v%d" % i, repr(p.stdout)


def cache_converged(d, keys):
    """True once every one of n1..n3 holds every key and no partition is
    moving (3 members, 3 replicas: every node holds every key); until then
    an AssertionError saying what each holds (wait_until shows the last)."""
    stats = {s: d.ctl(s, "cache", "stats")[0] for s in ("n1", "n2", "n3")}
    if all(st["entries"] == len(keys) and st["partitions_moving"] == 0 for st in stats.values()):
        return True
    raise AssertionError("entries, partitions moving: %s (want %d, 0)" % (
        {s: (st["entries"], st["partitions_moving"]) for s, st in stats.items()}, len(keys)))


def step_rolling(d, cids, keys):
    """The upgrade of docs/deploy.md: each node recreated in turn (SIGTERM,
    a new container on the same volume), the next once the cluster has it
    back; a schedule runs throughout."""
    d.ctl("n1", "cron", "every", "tock", "1s", "sha256", "tock", json_out=False)
    wait_until(lambda: sum(1 for r in history(d, "n1", "tock") if r["outcome"] == "succeeded") >= 2,
               30, "two runs of the schedule")
    for svc in ("n1", "n2", "n3"):
        t0 = time.monotonic()
        d.compose("up", "-d", "--no-deps", "--no-build", "--force-recreate", svc, timeout_s=180)
        cid = d.container(svc)
        assert cid != cids[svc], "%s was not recreated" % svc
        cids[svc] = cid
        d.record_volumes()
        wait_until(lambda: d.health(cid) == "healthy", HEALTHY_S, "%s healthy" % svc)
        wait_until(lambda: all(d.alive(s) == ["n1", "n2", "n3"] for s in ("n1", "n2", "n3")),
                   CONVERGE_S, "3 alive members seen from every node")
        wait_until(lambda: (lambda st: len(st.get("raft_voters", [])) == 3 and
                            st.get("raft_leader"))(d.status(svc)), CONVERGE_S,
                   "%s back among 3 voters, with a leader" % svc)
        wait_until(lambda: cache_converged(d, keys), CONVERGE_S,
                   "every node holding all %d keys" % len(keys))
        log("%s recreated and back in %.1f s" % (svc, time.monotonic() - t0))
    for k in sorted(keys)[:3]:
        d.ctl("n2", "cache", "get", k, "--consistency", "all", json_out=False)
    check_exactly_once(d, ["n1", "n2", "n3"], "tock")


def step_scale(d):
    d.up("--scale", "node=1", "node")
    d.record_volumes()
    cid = d.container("node")
    wait_until(lambda: d.health(cid) == "healthy", HEALTHY_S, "the fourth node healthy")
    name = d.inspect(cid)["Config"]["Hostname"]
    t0 = time.monotonic()
    wait_until(lambda: all(d.alive(s) == sorted(["n1", "n2", "n3", name])
                           for s in ("n1", "n2", "n3")), CONVERGE_S,
               "4 alive members seen from n1, n2, n3")
    me = [m for m in d.status("n1")["members"] if m["name"] == name][0]
    assert me["addr"] == "tcp://%s:7400" % name, me
    def took_partitions():
        st = d.ctl(cid, "cache", "stats")[0]
        if st["partitions_primary"] > 0 and st["entries"] > 0 and st["partitions_moving"] == 0:
            return st
        raise AssertionError("stats of the fourth node: %s" % st)
    wait_until(took_partitions, CONVERGE_S, "the fourth node leading partitions and holding keys")
    st = d.ctl(cid, "cache", "stats")[0]
    log("fourth node %s joined in %.1f s: leads %d partitions, holds %d keys"
        % (name, time.monotonic() - t0, st["partitions_primary"], st["entries"]))


def step_down(d):
    left = d.down()
    assert not left, "left behind after down -v: %s" % ", ".join(left)


def check_dockerfiles_agree():
    """deploy/Dockerfile and Dockerfile.bookworm must give the same image:
    their lines after the marker are the same."""
    def tail(path):
        with open(path) as f:
            text = f.read()
        i = text.index("# ---- the image")
        return text[text.index("\n", i) + 1:]
    a = tail(os.path.join(DEPLOY, "Dockerfile"))
    b = tail(os.path.join(DEPLOY, "Dockerfile.bookworm"))
    assert a == b, "deploy/Dockerfile and deploy/Dockerfile.bookworm differ after the marker"


def main():
    try:
        engine, compose = check_environment()
    except Skip as e:
        log("skipped: %s" % e)
        return 0
    check_dockerfiles_agree()
    d = Deployment(compose)
    log("Docker %s, %s, project %s" % (engine, " ".join(compose), d.project))

    def on_signal(signo, frame):
        raise KeyboardInterrupt("signal %d" % signo)
    signal.signal(signal.SIGTERM, on_signal)
    start = time.monotonic()
    failed = None
    state = {}
    steps = (
        ("build, init.sh, up, healthy", lambda: state.update(cids=step_up(d))),
        ("status: 3 alive members and a leader", lambda: step_status(d)),
        ("fan-out of 1,000 tasks", lambda: step_fanout(d)),
        ("a cache value written on n1, read on n3", lambda: state.update(keys=step_cache(d))),
        ("leader killed: failover, schedule, tasks", lambda: step_failover(d, state["cids"])),
        ("network cut and healed: convergence",
         lambda: step_partition(d, state["cids"], state["keys"])),
        ("rolling restart: each node recreated in turn",
         lambda: step_rolling(d, state["cids"], state["keys"])),
        ("scale: a fourth node", lambda: step_scale(d)),
        ("down -v", lambda: step_down(d)),
    )
    step = "setup"
    try:
        for step, fn in steps:
            t = time.monotonic()
            fn()
            log("ok: %s (%.1f s)" % (step, time.monotonic() - t))
    except (Exception, KeyboardInterrupt) as e:  # any failure: logs, then cleanup
        failed = "%s: %s: %s" % (step, type(e).__name__, e)
        try:
            d.print_logs()
        except Exception as le:
            log("could not print the logs: %s" % le)
    finally:
        d.cleanup()
    took = time.monotonic() - start
    if failed:
        log("FAILED at %s" % failed)
        print("%s: 0 passed, 1 failed (%.0f s)" % (NAME, took))
        return 1
    print("%s: 1 passed, 0 failed (%.0f s)" % (NAME, took))
    return 0


if __name__ == "__main__":
    sys.exit(main())
