"""test_compose.py - the container deployment end to end (issue #13):
deploy/build-image.sh, deploy/init.sh and deploy/docker-compose.yml on a
real Docker engine. Run by scripts/test.sh; prints one line and exits 0
when no Docker engine answers (or docker-compose is missing). Runs as root
or as any user the engine answers (the docker group): init.sh needs
neither root nor sudo, and the test reads the client credential and the
RESP password through `docker cp`, as docs/deploy.md tells users to.

First, what killed runs of this test left (their cleanup never ran) is
removed: compose projects, image tags and temporary directories named
chorustest-OWNER, localhost/chorus:test-OWNER and chorus-compose-OWNER-*
whose OWNER (pid namespace, pid, the pid's start time) is no longer
running. Nothing else is looked at.

One scenario, in order, each step with a deadline:
 1. build the image (static binaries, FROM scratch) under a tag of its own
    (its chorusd refuses --plugin), make the secrets with init.sh, choose
    the published ports and `up -d` under a project name of its own (ports
    taken meanwhile: new ones, and the test squats one of its first choice
    to take that path every run); every container hardened (read-only
    root with a writable /tmp, no capability, no-new-privileges);
 2. every node healthy (its HEALTHCHECK: clusterctl status with the client
    credential); `clusterctl status` shows 3 alive members and a leader,
    from the host through the published port and from the documented
    `docker-compose run --rm ctl status`, run as printed;
 3. a fan-out of 1,000 tasks completes, every result in order;
 4. a cache value written on n1 is read on n3, through clusterctl and
    through the RESP ports (password from init.sh);
 5. an every-second schedule runs; a transient fan-out is in flight through
    a follower; the leader is `docker kill`ed: a new leader is elected, the
    schedule keeps firing under it, the fan-out completes with every task
    once and succeeded; the old leader is started again and follows; the
    schedule decided every second exactly once and the journals hold one
    task per dispatched occurrence (the history, which keeps the newest 64
    decisions, is read every few seconds throughout and the reads joined;
    the checked window must start before the kill and end after the
    restart);
 6. a follower is `docker network disconnect`ed, keys are written while it
    is away, it is connected again: every node sees 3 alive members and
    holds every key;
 7. a rolling restart as docs/deploy.md's upgrade does it (each node
    recreated in turn, the next once the cluster has it back) while a
    schedule runs: each old container exits 0 (drained within
    stop_grace_period), the cache keeps every key, the schedule decides
    every second once across all three restarts;
 8. `up --scale node=1 node` adds a fourth node (named after its host name,
    advertising it, with no warning about that name): it joins, is alive
    everywhere and leads partitions;
 9. `down -v` leaves no container, network or volume of the project.
Then, and on any failure after the logs of every container of the
project, the cleanup: `down -v`, any container still made from the
test's image (one is left outside the project on purpose), then the image,
which must be gone (a run that cannot remove it fails rather than leave it
nameless). Nothing sleeps for a fixed time:
every wait polls a condition until its deadline.

Environment: CHORUS_COMPOSE overrides the compose command ("docker
compose" for the v2 plugin; default docker-compose, else the plugin).
Standard library only.
"""

import json
import os
import random
import re
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
PROJECT_PREFIX = "chorustest-"         # + OWNER: the compose project
IMAGE_PREFIX = "localhost/chorus:test-"  # + OWNER: the image tag
WORKDIR_PREFIX = "chorus-compose-"     # + OWNER + "-": the run's directory in $TMPDIR

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
PORT_TRIES = 5            # `up` again with new ports when one was taken
HISTORY_READ_S = 5        # a schedule's history is read this often (it keeps 64 s)


class Skip(Exception):
    pass


def log(msg):
    print("%s: %s" % (NAME, msg), flush=True)


def run(cmd, timeout_s=CMD_TIMEOUT_S, check=True, env=None, input=None, cwd=None):
    """Runs cmd with a deadline; returns the CompletedProcess (text).
    check: a non-zero exit raises AssertionError with its output."""
    try:
        p = subprocess.run(cmd, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=timeout_s, env=env, cwd=cwd,
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


# ---- runs of this test, and what killed ones left ----

def pid_namespace():
    return os.stat("/proc/self/ns/pid").st_ino


def process_start_ticks(pid):
    """When process pid started (clock ticks since boot, field 22 of
    /proc/PID/stat), or None when there is no such process or it has
    ended (a zombie: killed, not yet reaped by its parent)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def run_owner():
    """OWNER, the part of this run's names that says who made them: pid
    namespace, pid, the pid's start time (a reused pid starts later), and
    16 random bits."""
    return "%d-%d-%d-%04x" % (pid_namespace(), os.getpid(), process_start_ticks(os.getpid()),
                              random.getrandbits(16))


def owner_gone(owner):
    """True when the run named by owner has ended; False while it runs, and
    for a name of another pid namespace or form (not ours to judge)."""
    m = re.fullmatch(r"(\d+)-(\d+)-(\d+)-[0-9a-f]{4}", owner)
    if not m or int(m.group(1)) != pid_namespace():
        return False
    return process_start_ticks(int(m.group(2))) != int(m.group(3))


def containers_made_from(ref):
    """Ids of the containers, running or not, created from image reference
    ref. By the name they were created with, not by image id: a run whose
    build was a cache hit has the same image id as another run's, and
    `--filter ancestor=` would name that run's containers too."""
    out = run(["docker", "ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Image}}"]).stdout
    return [cid for cid, image in (l.split(" ", 1) for l in out.splitlines()) if image == ref]


def sweep_stale_runs():
    """Removes the compose projects and image tags of runs of this test
    that were killed before their cleanup: containers (with their anonymous
    volumes), networks and volumes labelled with such a project, then the
    image tag and any container still using it, and the run's directory
    (secrets) when it is ours. Returns what it removed."""
    label = "com.docker.compose.project"
    projects = set()
    for what in (["ps", "-a"], ["network", "ls"], ["volume", "ls"]):
        out = run(["docker"] + what + ["--filter", "label=" + label, "--format",
                                       '{{.Label "%s"}}' % label]).stdout.split()
        projects |= {p for p in out if p.startswith(PROJECT_PREFIX)}
    tags = run(["docker", "images", "--filter", "reference=%s*" % IMAGE_PREFIX, "--format",
                "{{.Repository}}:{{.Tag}}"]).stdout.split()
    removed = []
    for project in sorted(projects):
        if not owner_gone(project[len(PROJECT_PREFIX):]):
            continue
        flt = ["--filter", "label=%s=%s" % (label, project)]
        ids = run(["docker", "ps", "-a", "-q"] + flt).stdout.split()
        if ids:
            run(["docker", "rm", "-f", "-v"] + ids, check=False)
        for kind in ("network", "volume"):
            ids = run(["docker", kind, "ls", "-q"] + flt).stdout.split()
            if ids:
                run(["docker", kind, "rm"] + ids, check=False)
        removed.append("project " + project)
    for tag in sorted(tags):
        if not tag.startswith(IMAGE_PREFIX) or not owner_gone(tag[len(IMAGE_PREFIX):]):
            continue
        ids = containers_made_from(tag)
        if ids:
            run(["docker", "rm", "-f", "-v"] + ids, check=False)
        run(["docker", "image", "rm", tag], check=False)
        removed.append("image " + tag)
    tmp = tempfile.gettempdir()
    for entry in sorted(os.listdir(tmp)):
        m = re.fullmatch(re.escape(WORKDIR_PREFIX) + r"(\d+-\d+-\d+-[0-9a-f]{4})-\w+", entry)
        path = os.path.join(tmp, entry)
        if m and owner_gone(m.group(1)) and os.stat(path).st_uid == os.geteuid():
            shutil.rmtree(path, ignore_errors=True)
            removed.append("directory " + path)
    return removed


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
        # the last line of the error, which says why (permission denied:
        # not in the docker group)
        why = (p.stderr.strip().splitlines() or ["no output"])[-1].strip()
        hint = " (is this user in the docker group?)" if "permission denied" in why else ""
        raise Skip("no Docker engine answers (docker info: %s)%s" % (why, hint))
    return p.stdout.strip(), compose_command()


# ---- the deployment under test ----

class Deployment:
    """One compose project: the image tag, secrets, ports and override file
    of this run, and the commands that act on it."""

    def __init__(self, compose):
        self.compose_cmd = compose
        owner = run_owner()
        self.project = PROJECT_PREFIX + owner
        self.image = IMAGE_PREFIX + owner
        self.image_id = None  # once built
        self.workdir = tempfile.mkdtemp(prefix="%s%s-" % (WORKDIR_PREFIX, owner))
        self.secrets = os.path.join(self.workdir, "secrets")  # init.sh's, owned by 10001
        # the test's own copies (docker cp out of a node), readable by whoever runs it
        self.client_key = os.path.join(self.workdir, "client.key")
        self.resp_password = None
        self.ports = {}     # service -> (client port, RESP port) on 127.0.0.1, once up
        self.volumes = set()  # every volume a container of the project used
        self.claimed_tasks = set()  # (node, task id) of schedules already checked
        self.watches = []   # HistoryWatch threads, stopped by cleanup
        self.override = os.path.join(self.workdir, "test-override.yml")
        with open(self.override, "w") as f:
            # faster failure detection for the test; nothing else differs
            f.write('version: "3.8"\nservices:\n')
            for svc in ("n1", "n2", "n3", "node"):
                f.write("  %s:\n    environment:\n      CHORUS_GOSSIP_PERIOD: %s\n"
                        % (svc, GOSSIP))
        self.env = dict(os.environ)
        self.env.update({"CHORUS_IMAGE": self.image, "CHORUS_SECRETS_DIR": self.secrets})

    # -- commands --

    def files(self):
        return ["-p", self.project, "-f", os.path.join(DEPLOY, "docker-compose.yml"), "-f",
                self.override]

    def compose(self, *args, timeout_s=CMD_TIMEOUT_S, check=True):
        cmd = self.compose_cmd + self.files() + ["--profile", "extra", "--profile", "tools"]
        return run(cmd + list(args), timeout_s=timeout_s, check=check, env=self.env)

    def documented(self, command):
        """A compose command exactly as docs/deploy.md and the README print
        it ("docker-compose run --rm ctl status"), run in deploy/; this
        run's project and files come from COMPOSE_PROJECT_NAME and
        COMPOSE_FILE, as a user's come from the directory."""
        words = shlex.split(command)
        assert words[0] == "docker-compose", command
        env = dict(self.env, COMPOSE_PROJECT_NAME=self.project,
                   COMPOSE_FILE=os.pathsep.join([os.path.join(DEPLOY, "docker-compose.yml"),
                                                 self.override]))
        return run(self.compose_cmd + words[1:], env=env, cwd=DEPLOY)

    def choose_ports(self, services):
        """New published ports for services, free now and distinct from
        every other port of the project."""
        for svc in services:
            taken = {p for s, pair in self.ports.items() if s != svc for p in pair}
            while True:
                pair = (free_port(), free_port())
                if pair[0] != pair[1] and not taken & set(pair):
                    break
            self.ports[svc] = pair
            self.env["CHORUS_PORT_N%s" % svc[1:]] = str(pair[0])
            self.env["CHORUS_RESP_PORT_N%s" % svc[1:]] = str(pair[1])

    def up_publishing(self, args, services, squat=False):
        """`up -d --no-build ARGS` for services that publish ports: their
        ports are chosen just before (kept, if they have some, for the first
        try) and chosen again when the engine says one was taken meanwhile,
        at most PORT_TRIES times. squat: the test holds the first port of
        its first choice during the first try, so that the retry is taken.
        Returns the number of tries."""
        compose = self.compose_cmd + self.files()
        what = " ".join(["up"] + list(args))
        for attempt in range(1, PORT_TRIES + 1):
            if attempt > 1 or not all(s in self.ports for s in services):
                self.choose_ports(services)
            squatter = None
            if squat and attempt == 1:
                squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                squatter.bind(("127.0.0.1", self.ports[services[0]][0]))
                squatter.listen(1)
            try:
                p = run(compose + ["up", "-d", "--no-build"] + list(args), timeout_s=180,
                        check=False, env=self.env)
            finally:
                if squatter:
                    squatter.close()
            if p.returncode == 0:
                return attempt
            out = p.stdout + p.stderr
            if "port is already allocated" not in out and "address already in use" not in out:
                raise AssertionError("`%s` exited %d:\n%s" % (what, p.returncode, out))
            log("%s, try %d: a published port was taken meanwhile: new ports" % (what, attempt))
        raise AssertionError("`%s`: a port was taken on each of %d tries" % (what, PORT_TRIES))

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
                   self.client_key] + base
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
        """Every step tried, in this order: the project (down -v), any
        container still made from the image (a `run` container, one made
        outside compose), the volumes it used, the image, the secrets.
        Returns what could not be removed: the tag, or an image left
        without a name (what `rmi -f` of an image in use does). An image
        that keeps another name (another run's build, a cache hit with the
        same id) is that name's."""
        problems = []
        for w in self.watches:
            w.stopping.set()
        try:
            self.compose("down", "-v", "--remove-orphans", "--timeout", "10", timeout_s=180,
                         check=False)
        except AssertionError as e:
            problems.append("down -v: %s" % e)
        users = set(self.containers())
        if self.image_id:
            users |= set(containers_made_from(self.image))
        if users:
            run(["docker", "rm", "-f", "-v"] + sorted(users), check=False)
        for v in sorted(self.volumes):
            run(["docker", "volume", "rm", "-f", v], check=False)
        if self.image_id:
            p = run(["docker", "image", "rm", self.image], check=False)
            left = run(["docker", "image", "inspect", "-f", "{{len .RepoTags}}", self.image_id],
                       check=False)
            if image_id(self.image) or (left.returncode == 0 and left.stdout.strip() == "0"):
                problems.append("image %s (%s) not removed: %s" % (self.image, self.image_id[7:19],
                                                                   p.stderr.strip()))
        # init.sh's files belong to 10001, in directories of ours: removable
        shutil.rmtree(self.workdir, ignore_errors=True)
        return problems


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


def image_id(ref):
    p = run(["docker", "image", "inspect", "-f", "{{.Id}}", ref], check=False)
    return p.stdout.strip() if p.returncode == 0 else None


def copy_out(cid, path, dest):
    """A file of a container (a compose secret) copied to dest as the
    user running the test, its mode kept: how docs/deploy.md has users
    take a copy of the client credential without root."""
    run(["docker", "cp", "%s:%s" % (cid, path), dest])
    st = os.stat(dest)
    assert (st.st_uid, st.st_mode & 0o777) == (os.geteuid(), 0o600), (dest, st)


def check_hardened(d, cid, svc):
    """The compose file's hardening, as the engine applied it, and what it
    means inside: the image's files are read-only, /tmp is writable by the
    containers' user."""
    hc = d.inspect(cid)["HostConfig"]
    assert hc["ReadonlyRootfs"] is True, (svc, hc["ReadonlyRootfs"])
    assert hc["CapDrop"] == ["ALL"], (svc, hc["CapDrop"])
    assert "no-new-privileges:true" in (hc["SecurityOpt"] or []), (svc, hc["SecurityOpt"])
    assert list(hc["Tmpfs"] or {}) == ["/tmp"], (svc, hc["Tmpfs"])
    keygen = ["docker", "exec", cid, "/usr/bin/clusterctl", "keygen"]
    p = run(keygen + ["/etc/chorus/probe.key"], check=False)
    assert p.returncode != 0 and "Read-only file system" in p.stderr, (svc, p.returncode, p.stderr)
    run(keygen + ["/tmp/probe.key"])


def step_up(d):
    t0 = time.monotonic()
    try:
        p = run(["bash", os.path.join(DEPLOY, "build-image.sh"), d.image],
                timeout_s=BUILD_TIMEOUT_S, env=d.env)
    finally:
        d.image_id = image_id(d.image)
    log("image %s built in %.1f s (%s)" % (d.image, time.monotonic() - t0,
                                          p.stdout.strip().splitlines()[-1]))
    # a static chorusd cannot load a plugin: refused at start, exit 2
    p = run(["docker", "run", "--rm", "--network", "none", d.image, "--plugin", "/x.so"],
            check=False)
    assert p.returncode == 2 and "statically linked and cannot load plugins" in p.stderr, \
        (p.returncode, p.stderr)
    # a container of the image outside the project, left for the cleanup:
    # the image must go all the same (removed after it, not untagged)
    run(["docker", "create", "--name", d.project + "-straggler", d.image, "--version"])
    # as whoever runs the test: init.sh needs neither root nor sudo
    run(["bash", os.path.join(DEPLOY, "init.sh")], env=d.env)
    for f in ("cluster.secret", "client.key", "resp.password"):
        st = os.stat(os.path.join(d.secrets, f))
        assert (st.st_uid, st.st_mode & 0o777) == (10001, 0o600), (f, st)
    assert sorted(os.listdir(d.secrets)) == ["client.key", "cluster.secret", "resp.password"], \
        os.listdir(d.secrets)
    # without --profile: `up` must start n1..n3 alone
    tries = d.up_publishing([], ["n1", "n2", "n3"], squat=True)
    d.record_volumes()
    cids = {svc: d.container(svc) for svc in ("n1", "n2", "n3")}
    assert sorted(s for s in ("node", "ctl") if d.containers(s)) == [], "up started a profile"
    wait_until(lambda: all(d.health(c) == "healthy" for c in cids.values()), HEALTHY_S,
               "n1, n2, n3 healthy")
    ports = ", ".join("%s %d/%d" % (s, c, r) for s, (c, r) in sorted(d.ports.items()))
    if tries == 1:
        # an engine without the userland proxy does not bind host ports
        log("up: the engine did not refuse the port the test held; ports %s" % ports)
    else:
        log("up after %d tries (the first refused: the test held a port), ports %s"
            % (tries, ports))
    for svc, cid in cids.items():
        info = d.inspect(cid)
        assert info["Config"]["User"] == "10001:10001", info["Config"]["User"]
        for port, binds in info["NetworkSettings"]["Ports"].items():
            for b in binds or []:
                assert b["HostIp"] == "127.0.0.1", "%s publishes %s on %s" % (svc, port, b)
                assert int(b["HostPort"]) in d.ports[svc], (svc, b, d.ports[svc])
        check_hardened(d, cid, svc)
    # the test's own copies of the client credential and the RESP password
    copy_out(cids["n1"], "/run/secrets/chorus_client", d.client_key)
    pw = os.path.join(d.workdir, "resp.password")
    copy_out(cids["n1"], "/run/secrets/chorus_resp_password", pw)
    with open(pw) as f:
        d.resp_password = f.read().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", d.resp_password), "the RESP password is not 32 bytes in hex"
    return cids


def step_status(d):
    def ready():
        st = d.status("n1")
        alive = [m["name"] for m in st["members"] if m["state"] == "alive"]
        return (sorted(alive) == ["n1", "n2", "n3"] and st.get("raft_leader") and
                len(st.get("raft_voters", [])) == 3) and st
    st = wait_until(ready, CONVERGE_S, "3 alive members, 3 voters and a leader")
    # the ctl service, as the README and docs/deploy.md print it: clusterctl
    # in a container with the client credential, n1's status as text
    p = d.documented("docker-compose run --rm ctl status")
    text = p.stdout
    assert re.search(r"^cluster +3 members, 3 alive$", text, re.M), text
    m = re.search(r"^raft +leader (\S+) ", text, re.M)
    assert m and m.group(1) == st["raft_leader"], (m and m.group(1), st["raft_leader"], text)
    for name in ("n1", "n2", "n3"):
        assert re.search(r"^%s\*? +alive +tcp://%s:7400 " % (name, name), text, re.M), text
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
    pw = d.resp_password
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
    watch = HistoryWatch(d, "tick", services)
    marks = {}
    wait_until(lambda: sum(1 for r in history(d, "n1", "tick") if r["outcome"] == "succeeded") >= 3,
               30, "three runs of the schedule")
    old = wait_until(lambda: leader_of(d, services), 10, "a leader")
    followers = [s for s in services if s != old]
    # a transient fan-out in flight through a follower while the leader dies
    coord = followers[0]
    stream = Stream([CLUSTERCTL, "-a", "tcp://127.0.0.1:%d" % d.ports[coord][0], "-k",
                     d.client_key, "--timeout", "10s", "submit",
                     "sleep", "--fanout", "-", "--transient", "--retries", "5"],
                    "%d\n" % INFLIGHT_MS * INFLIGHT)
    try:
        wait_until(lambda: stream.count() >= 20, 60, "the first results of the fan-out")
        marks["the kill of %s" % old] = time.time()
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
    marks["the restart of %s" % old] = time.time()
    run(["docker", "start", cids[old]])
    wait_until(lambda: d.status(old).get("raft_leader") == new, CONVERGE_S,
               "%s restarted and following %s" % (old, new))
    wait_until(lambda: d.health(cids[old]) == "healthy", HEALTHY_S, "%s healthy again" % old)
    check_exactly_once(d, watch, services, marks)
    return new


class HistoryWatch:
    """A schedule's decisions, all of them: the cluster keeps the newest 64
    (SCHED_HISTORY_MAX), fewer than a failover or a rolling restart lasts
    at one a second, so a thread reads the history every HISTORY_READ_S
    seconds, from whichever node answers, and joins the reads by second.
    Each read is checked as it comes: no second twice in one read, and no
    second that an earlier read showed decided otherwise (skipped against
    dispatched, or another task) even if that decision scrolled out since.
    A read that failed leaves a gap only if 64 decisions passed before the
    next one: the joined seconds must then be contiguous, which finds it."""

    def __init__(self, d, name, services):
        self.d = d
        self.name = name
        self.services = list(services)
        self.runs = {}      # scheduled_s -> the newest state seen
        self.errors = []
        self.reads = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        d.watches.append(self)
        self.thread.start()

    def _loop(self):
        while not self.stopping.wait(HISTORY_READ_S):
            self.read()

    def read(self, service=None):
        """One read, joined; False when no node answered."""
        for svc in [service] if service else self.services:
            try:
                runs = history(self.d, svc, self.name)
            except AssertionError:
                continue
            self.join(runs, svc)
            return True
        return False

    def join(self, runs, svc):
        with self.lock:
            self.reads += 1
            times = [r["scheduled_s"] for r in runs]
            dup = sorted({t for t in times if times.count(t) > 1})
            if dup:
                self.errors.append("read %d (%s): seconds decided twice: %s" % (
                    self.reads, svc, [r for r in runs if r["scheduled_s"] in dup]))
            for r in runs:
                t = r["scheduled_s"]
                prev = self.runs.get(t)
                if prev is not None:
                    skipped = (prev["outcome"] == "skipped", r["outcome"] == "skipped")
                    tasks = ((prev["node"], prev["task_id"]), (r["node"], r["task_id"]))
                    if skipped[0] != skipped[1] or (prev["task_id"] and r["task_id"] and
                                                    tasks[0] != tasks[1]):
                        self.errors.append("second %d decided twice: %s, then %s (read %d, %s)"
                                           % (t, prev, r, self.reads, svc))
                    if prev["task_id"] and not r["task_id"]:
                        continue  # a follower behind: keep what was seen
                self.runs[t] = r

    def finish(self):
        """Stops the thread and reads once more from n1 (it must answer);
        returns the joined runs, oldest first."""
        self.stopping.set()
        self.thread.join(30)
        assert self.read("n1"), "the last read of %s's history failed" % self.name
        with self.lock:
            return [self.runs[t] for t in sorted(self.runs)]


def check_exactly_once(d, watch, services, marks):
    """Every second from the first decision to the last decided once (fired
    or skipped with a reason), over a window that starts before each of
    marks (name -> wall time of a kill or a restart) and ends after it, and
    one task per dispatched occurrence in the journals: the schedule runs
    sha256, so its tasks are the journals' sha256 tasks that no earlier
    schedule claimed, matched by node and task id (a task lost in a kill
    has no output but still counts). The schedule is paused first and its
    runs awaited, so history and journals are read at rest."""
    name = watch.name
    d.ctl("n1", "cron", "pause", name, "--note", "checking", json_out=False)
    wait_until(lambda: not any(r["outcome"] in ("fired", "dispatched", "queued", "running")
                               for r in history(d, "n1", name)), 30, "the runs to end")
    runs = watch.finish()
    assert not watch.errors, "\n".join(watch.errors)
    times = [r["scheduled_s"] for r in runs]
    assert times == list(range(times[0], times[-1] + 1)), "seconds undecided (or unread): %s" % [
        t for t in range(times[0], times[-1] + 1) if t not in watch.runs]
    for what, at in sorted(marks.items(), key=lambda kv: kv[1]):
        assert times[0] < at < times[-1] + 1, "the checked window %d..%d misses %s at %.1f" % (
            times[0], times[-1], what, at)
    for r in runs:
        if r["outcome"] == "skipped":
            assert r.get("why"), r
    dispatched = {(r["node"], r["task_id"]) for r in runs if r["task_id"]}
    assert len(dispatched) == sum(1 for r in runs if r["task_id"]), "a task for two seconds"
    journals = set()
    for svc in services:
        for t in d.ctl(svc, "tasks", "--limit", 10000):
            if t.get("handler") == "sha256" and (svc, t["task_id"]) not in d.claimed_tasks:
                journals.add((svc, t["task_id"]))
    assert journals == dispatched, "journals without a decision: %s; decisions without a task: %s" % (
        sorted(journals - dispatched), sorted(dispatched - journals))
    d.claimed_tasks |= journals
    outcomes = {}
    for r in runs:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    why = sorted({r.get("why") for r in runs if r["outcome"] != "succeeded"} - {None, ""})
    log("schedule %s: %d seconds decided once each (%s; %s), %d tasks for %d dispatched; "
        "%d reads of the history, the window %d s before %s and %d s after %s"
        % (name, len(runs), ", ".join("%s %d" % kv for kv in sorted(outcomes.items())),
           "; ".join(why) or "-", len(journals), len(dispatched), watch.reads,
           min(marks.values()) - times[0], min(marks, key=marks.get),
           times[-1] - max(marks.values()), max(marks, key=marks.get)))


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
        # a put that reaches the writer between its membership marking the
        # victim dead and its cache dropping the victim from the partition
        # map (the same tick, but a status poll can fall between) is
        # forwarded to the victim and times out: put again (same value, so
        # idempotent), as a client that decides to retry would
        retried = []
        for i in range(PART_KEYS):
            k = "deploy:cut:%d" % i
            tries = []
            def put():
                tries.append(1)
                return d.ctl(writer, "cache", "put", k, "v%d" % i, json_out=False)
            wait_until(put, 30, "a put of %s through %s" % (k, writer))
            if len(tries) > 1:
                retried.append("%s (%d tries)" % (k, len(tries)))
            keys.add(k)
        if retried:
            log("puts while %s was away, put again after a timeout: %s"
                % (victim, ", ".join(retried)))
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
    back; a schedule runs throughout. Each old container must exit 0: it
    drained within stop_grace_period rather than being killed."""
    services = ["n1", "n2", "n3"]
    d.ctl("n1", "cron", "every", "tock", "1s", "sha256", "tock", json_out=False)
    watch = HistoryWatch(d, "tock", services)
    marks = {}
    wait_until(lambda: sum(1 for r in history(d, "n1", "tock") if r["outcome"] == "succeeded") >= 2,
               30, "two runs of the schedule")
    grace_s = d.inspect(cids["n1"])["Config"]["StopTimeout"]
    for svc in services:
        t0 = time.monotonic()
        marks["the recreation of %s" % svc] = time.time()
        # the old container's exit code, reported when it stops (before
        # compose removes it)
        waiter = subprocess.Popen(["docker", "wait", cids[svc]], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            d.up_publishing(["--no-deps", "--force-recreate", svc], [svc])
            out, err = waiter.communicate(timeout=30)
        finally:
            if waiter.poll() is None:
                waiter.kill()
                waiter.wait()
        assert out.strip() == "0", "the old %s exited %r (%s): not drained within %s s" % (
            svc, out.strip(), err.strip(), grace_s)
        stopped_s = time.monotonic() - t0
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
        log("%s recreated (the old one exited 0, in %.1f s with the new one up) and back in "
            "%.1f s" % (svc, stopped_s, time.monotonic() - t0))
    for k in sorted(keys)[:3]:
        d.ctl("n2", "cache", "get", k, "--consistency", "all", json_out=False)
    check_exactly_once(d, watch, services, marks)


def step_scale(d):
    run(d.compose_cmd + d.files() + ["up", "-d", "--no-build", "--scale", "node=1", "node"],
        env=d.env)
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
    # its host name resolves to its own address on the compose network:
    # advertised, and nothing to warn about
    p = run(["docker", "logs", cid])
    logs = p.stdout + p.stderr
    assert "advertising tcp://%s:7400 to other nodes" % name in logs, logs[-3000:]
    assert " WARN  node: advertising" not in logs, logs[-3000:]
    check_hardened(d, cid, "node")
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
    for what in sweep_stale_runs():
        log("removed %s, left by a run that was killed" % what)
    d = Deployment(compose)
    log("Docker %s, %s, project %s, as uid %d" % (engine, " ".join(compose), d.project,
                                                  os.geteuid()))

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
        problems = d.cleanup()
    if problems and not failed:
        failed = "cleanup: %s" % "; ".join(problems)
    elif problems:
        log("cleanup: %s" % "; ".join(problems))
    took = time.monotonic() - start
    if failed:
        log("FAILED at %s" % failed)
        print("%s: 0 passed, 1 failed (%.0f s)" % (NAME, took))
        return 1
    print("%s: 1 passed, 0 failed (%.0f s)" % (NAME, took))
    return 0


if __name__ == "__main__":
    sys.exit(main())
