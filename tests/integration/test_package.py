"""test_package.py - the Debian package installs, runs a node under its
systemd unit, upgrades and purges in a clean Debian 12 container
(docs/deploy.md, "Debian package and systemd").

Two packages are built by scripts/package.sh (a Release build kept in
BUILD_DIR/package, so a later run only rebuilds what changed): 0.1.0-2 with
a changed documented example (-DCHORUS_CONF_EXAMPLE), then 0.1.0-1 as the
source has it. Or CHORUS_TEST_DEB names one built elsewhere (no upgrade is
tested then). The container starts from chorus-test-base:bookworm-systemd:
chorus-test-base:bookworm (a minimal Debian 12 made with debootstrap and
imported into Docker) with systemd installed from the mirror. No image can
be pulled here; both are made once per machine and reused by their tags
(docs/testing.md says how to remove them). systemd boots as PID 1 in it
(SYS_ADMIN, no seccomp or AppArmor profile, tmpfs /run, the host's cgroups
read-only); then:
  1. `apt-get install ./chorus_0.1.0-1_*.deb` pulls the declared
     dependencies from Debian's mirror; postinst makes the user, /etc/chorus
     with the secret and a client credential, and the data dir, and neither
     enables nor starts the node;
  2. Depends, Suggests and every file are as they should be; the conffile is
     the short host file, the documented example is under
     /usr/share/doc/chorus/examples; a reinstall keeps the keys;
  3. the admin edits the conffile ([exec] allow) and the mode of
     /etc/chorus, then `systemctl enable --now chorusd`: the node answers
     `clusterctl -k /etc/chorus/client.key`, runs a plain task and an exec
     task, and the exec'd command shows the unit's sandbox (its user, no
     capabilities, NoNewPrivs, seccomp, a read-only file system but the data
     dir, no /home, a private /tmp);
  4. `apt-get install ./chorus_0.1.0-2_*.deb` with no terminal: no conffile
     prompt, the edit and the mode kept, the new example in place, the node
     restarted by postinst (try-restart); a reinstall while policy-rc.d
     forbids actions leaves the node alone;
  5. `systemctl reload` reloads the keys in the same process; `systemctl
     stop` during a 2 s task drains it (the task succeeds, chorusd exits 0);
     journalctl -u chorusd holds the node's lines;
  6. `systemd-analyze verify` has nothing to say about the unit; the
     Suggests are what `pkg-config --static --libs chorus` needs;
  7. `apt-get purge` of the enabled, running node stops it (prerm, drained),
     removes the files, /etc/chorus, /var/lib/chorus, the enablement and the
     user.
When systemd cannot boot in a container on this engine, one line says so
and the node runs the old way: the unit's ExecStart, User, Group,
WorkingDirectory, UMask and NoNewPrivileges applied with setpriv, the
sandbox untested; everything else is checked as above.

It skips (exit 77, "Skipped" in ctest), with one line saying why, when no
Docker engine answers, in a sanitizer build (the package is a Release build:
the normal build's run tests it), and when a base image is missing and
cannot be made (not root, no debootstrap) or Debian's mirror is out of reach
(CHORUS_TEST_MIRROR names another one, for debootstrap and the container's
apt).

Standard library only. Every wait has a deadline; steps time themselves and
the times are printed at the end.
"""

import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
import uuid

import harness

IMAGE = "chorus-test-base:bookworm"
SYSTEMD_IMAGE = "chorus-test-base:bookworm-systemd"
MIRROR = os.environ.get("CHORUS_TEST_MIRROR", "http://deb.debian.org/debian")
IMAGE_LOCK = "/tmp/chorus-test-base.lock"   # one image build at a time per machine
# a container left behind ends by itself: its PID 1 is a sleep, or systemd
# with a timer that powers it off
CONTAINER_LIFETIME_S = 900
BOOT_TIMEOUT_S = 60
UNIT = "/lib/systemd/system/chorusd.service"
RUN_DIR = "/run/chorus-test"      # the setpriv fallback's pid, exit code and log
CLIENT_KEY = "/etc/chorus/client.key"
CTL = "clusterctl -k %s" % CLIENT_KEY
EXAMPLE = "/usr/share/doc/chorus/examples/chorus.conf.example"
EXAMPLE_MARK = "; test_package: the example of 0.1.0-2"
CONF_EDIT = "\n[exec]\nallow = /bin/sh\n"
CONF_DIR_MODE = "710"             # the admin's mode for /etc/chorus, kept by upgrades
APT = "DEBIAN_FRONTEND=noninteractive apt-get -q -o Acquire::Retries=3 -o Dpkg::Use-Pty=0"
# libraries a static link takes from libc6-dev, which any compiler brings
LIBC_LIBS = ("pthread", "m", "dl", "rt")
LOG_TAIL_CHARS = 6000
# the whole test, inside ctest's 600 s: a step that would outlive it fails
# with its output instead of being killed without a word
BUDGET_S = 540
EXIT_SKIPPED = 77  # ctest's SKIP_RETURN_CODE (CMakeLists.txt)

# path -> owner:group and mode, as `stat -c '%U:%G %a'` prints them
EXPECTED_MODES = {
    "/usr/bin/chorusd": "root:root 755",
    "/usr/bin/clusterctl": "root:root 755",
    "/usr/include/chorus.h": "root:root 644",
    "/usr/include/chorus_plugin.h": "root:root 644",
    UNIT: "root:root 644",
    "/etc/chorus": "root:chorus 750",
    "/etc/chorus/chorus.conf": "root:root 644",
    EXAMPLE: "root:root 644",
    "/etc/chorus/secret": "chorus:chorus 600",
    CLIENT_KEY: "root:root 600",
    "/var/lib/chorus": "chorus:chorus 700",
}
MADE_BY_POSTINST = ("/etc/chorus/secret", CLIENT_KEY, "/var/lib/chorus")
# names the package must list (dpkg -L), wherever the multiarch libdir is
EXPECTED_TAILS = ("/libchorus.so.0", "/libchorus.a", "/pkgconfig/chorus.pc",
                  "/usr/share/doc/chorus/deploy.md")
DEPENDS = ("libnng1", "libsodium23", "libsqlite3-0", "libprotobuf-c1", "libinih1", "libjansson4",
           "adduser", "init-system-helpers")
SUGGESTS = ("libsodium-dev", "libprotobuf-c-dev", "libjansson-dev", "libnng-dev", "libmbedtls-dev")
# what deb-systemd-helper's state and `systemctl enable chorusd` leave
ENABLE_LINK = "/etc/systemd/system/multi-user.target.wants/chorusd.service"
DSH_STATE = "/var/lib/systemd/deb-systemd-helper-enabled/chorusd.service.dsh-also"


def tail(text, chars=LOG_TAIL_CHARS):
    text = text if isinstance(text, str) else text.decode(errors="replace")
    return text if len(text) <= chars else "...\n" + text[-chars:]


def run(cmd, timeout_s, input=None):
    """(rc, stdout+stderr) of cmd, or rc None when it outlived timeout_s."""
    try:
        p = subprocess.run(cmd, input=input, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=None if input is not None else subprocess.DEVNULL,
                           timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        return None, (e.stdout or b"").decode(errors="replace")
    return p.returncode, p.stdout.decode(errors="replace")


def sanitized_build():
    try:
        with open(os.path.join(harness.BUILD_DIR, "CMakeCache.txt")) as f:
            return "CHORUS_SANITIZE:BOOL=ON" in f.read()
    except OSError:
        return False


def docker_answers():
    if shutil.which("docker") is None:
        return False
    rc, _ = run(["docker", "info", "--format", "{{.ServerVersion}}"], 30)
    return rc == 0


def image_exists(image):
    rc, _ = run(["docker", "image", "inspect", image], 30)
    return rc == 0


def mirror_reachable():
    """None when Debian's mirror answers, else why not."""
    url = MIRROR.rstrip("/") + "/dists/bookworm/InRelease"
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            r.read(1)
        return None
    except OSError as e:
        return "%s: %s" % (url, e)


def systemd_run_options():
    """docker run options under which systemd boots as PID 1 without
    --privileged (which this engine refuses). Tried on cgroup v1 (this
    machine): the host's hierarchy read-only is enough, systemd works in its
    container's own subtree. cgroup v2 is not tried here: systemd 252 needs a
    writable cgroup2 mount there, which only --privileged gives; the test
    falls back to setpriv."""
    rc, out = run(["docker", "info", "--format", "{{.CgroupVersion}}"], 30)
    if rc != 0 or out.strip() != "1":
        return None, "the engine's cgroup version is %r, not 1" % out.strip()
    return ["--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined",
            "--security-opt", "apparmor=unconfined", "--tmpfs", "/run", "--tmpfs", "/run/lock",
            "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro"], None


def unit_settings(text):
    """The [Service] settings of a unit file: name -> list of values."""
    settings, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]" and "=" in line:
            k, v = line.split("=", 1)
            settings.setdefault(k.strip(), []).append(v.strip())
    return settings


def seconds(value):
    """A systemd time span of the forms the unit uses: 60, 60s, 2min."""
    for suffix, mult in (("min", 60), ("ms", 0.001), ("s", 1)):
        if value.endswith(suffix):
            return float(value[:-len(suffix)]) * mult
    return float(value)


class SystemdNode:
    """chorusd as systemd runs it: the unit, whole."""

    def __init__(self, test):
        self.t = test

    def start(self):
        # what docs/deploy.md tells an admin to run
        self.t.sh_ok("systemctl enable --now chorusd", 60)

    def prop(self, name):
        return self.t.sh_ok("systemctl show -p %s --value chorusd" % name).strip()

    def main_pid(self):
        return self.prop("MainPID")

    def ended(self):
        """chorusd's exit status once the unit is no longer running, else None."""
        if self.prop("ActiveState") in ("active", "reloading", "activating", "deactivating"):
            return None
        return self.prop("ExecMainStatus")

    def log(self):
        rc, out = run(["docker", "exec", self.t.container, "journalctl", "-u", "chorusd",
                       "-o", "cat", "--no-pager"], 30)
        return out if rc == 0 else ""

    def reload(self):
        self.t.sh_ok("systemctl reload chorusd", 60)

    def stop(self, timeout_s):
        self.t.sh_ok("systemctl stop chorusd", timeout_s)
        result = self.prop("Result")
        self.t.assertEqual(result, "success", "systemctl stop: Result=%s%s"
                           % (result, self.t.node_log()))
        return self.prop("ExecMainStatus")


class SetprivNode:
    """chorusd started the way the unit starts it, without systemd: its
    ExecStart, User, Group, WorkingDirectory, UMask and NoNewPrivileges
    applied with setpriv; the signals its ExecReload and KillSignal send."""

    def __init__(self, test, settings):
        self.t = test
        self.s = settings

    def start(self):
        s = self.s
        self.t.assertEqual(len(s.get("ExecStart", [])), 1, s.get("ExecStart"))
        argv = shlex.split(s["ExecStart"][0])
        self.t.assertTrue(argv[0].startswith("/"), "ExecStart has a prefix: %r" % argv)
        setpriv = ["setpriv", "--reuid=" + s["User"][0], "--regid=" + s["Group"][0],
                   "--init-groups", "--inh-caps=-all", "--bounding-set=-all"]
        if s.get("NoNewPrivileges", ["no"])[0] == "yes":
            setpriv.append("--no-new-privs")
        script = "\n".join([
            "cd %s || exit 99" % shlex.quote(s["WorkingDirectory"][0]),
            "umask %s" % s["UMask"][0],
            "%s -- %s >>%s/chorusd.log 2>&1 &" % (" ".join(setpriv), shlex.join(argv), RUN_DIR),
            "echo $! >%s/pid" % RUN_DIR,
            "wait $!",
            "echo $? >%s/rc" % RUN_DIR,
        ]) + "\n"
        rc, out = self.t.sh("mkdir -p %s && rm -f %s/rc && cat >%s/run.sh"
                            % (RUN_DIR, RUN_DIR, RUN_DIR), 30, input=script.encode())
        self.t.assertEqual(rc, 0, out)
        rc, out = run(["docker", "exec", "-d", self.t.container, "sh", "%s/run.sh" % RUN_DIR],
                      self.t.budget(30))
        self.t.assertEqual(rc, 0, out)
        harness.wait_until(lambda: self.t.sh("cat %s/pid" % RUN_DIR, 30)[0] == 0, 10,
                           "the setpriv node's pid file", interval_s=0.1)

    def main_pid(self):
        return self.t.sh_ok("cat %s/pid" % RUN_DIR).strip()

    def ended(self):
        rc, out = self.t.sh("cat %s/rc" % RUN_DIR, 30)
        return out.strip() if rc == 0 and out.strip() else None

    def log(self):
        rc, out = run(["docker", "exec", self.t.container, "cat", RUN_DIR + "/chorusd.log"], 30)
        return out if rc == 0 else ""

    def reload(self):
        self.t.sh_ok("kill -HUP %s" % self.main_pid())

    def stop(self, timeout_s):
        signal = self.s.get("KillSignal", ["SIGTERM"])[0]
        self.t.sh_ok("kill -s %s %s" % (signal.replace("SIG", ""), self.main_pid()))
        try:
            return harness.wait_until(self.ended, timeout_s, "chorusd to stop on %s" % signal,
                                      interval_s=0.2)
        except AssertionError as e:
            self.t.fail("%s (TimeoutStopSec)%s" % (e, self.t.node_log()))


class PackageTest(unittest.TestCase):
    def setUp(self):
        self.times = []  # (step, seconds)
        self.container = None
        self.node = None
        self.systemd = False
        self.deadline = time.monotonic() + BUDGET_S
        self.skip_unless_possible()

    def budget(self, timeout_s):
        """timeout_s, or less when the test's budget ends sooner."""
        left = self.deadline - time.monotonic()
        if left <= 1:
            self.fail("the test used up its %d s budget (steps so far: %r)" % (BUDGET_S, self.times))
        return min(timeout_s, left)

    def skip(self, why, detail=""):
        print("test_package: SKIPPED: %s" % why, file=sys.stderr)
        self.skipTest("%s\n%s" % (why, detail) if detail else why)

    def skip_unless_possible(self):
        why = None
        if sanitized_build():
            why = "a sanitizer build: the package is a Release build, tested by the normal build's run"
        elif not docker_answers():
            why = "no Docker engine answers here"
        else:
            why = mirror_reachable()
            if why:
                why = "Debian's mirror is out of reach (%s)" % why
            elif not image_exists(SYSTEMD_IMAGE):
                if os.geteuid() != 0:
                    why = "the base image %s is missing and only root can make it" % SYSTEMD_IMAGE
                elif not image_exists(IMAGE) and shutil.which("debootstrap") is None:
                    why = ("the base image %s is missing and debootstrap is not installed "
                           "(apt-get install debootstrap, or scripts/deps.sh)" % IMAGE)
        if why:
            self.skip(why)

    # ---- helpers ----

    def timed(self, step, fn, *args):
        start = time.monotonic()
        try:
            return fn(*args)
        finally:
            self.times.append((step, time.monotonic() - start))

    def sh(self, script, timeout_s=60, input=None):
        """(rc, output) of a shell script run in the container as root."""
        cmd = ["docker", "exec"] + (["-i"] if input is not None else [])
        return run(cmd + [self.container, "sh", "-c", script], self.budget(timeout_s), input=input)

    def sh_ok(self, script, timeout_s=60, what=None):
        rc, out = self.sh(script, timeout_s)
        if rc is None:
            self.fail("%s: did not finish within %s s; output:\n%s%s"
                      % (what or script, timeout_s, tail(out), self.node_log()))
        self.assertEqual(rc, 0, "%s: rc %s, output:\n%s%s"
                         % (what or script, rc, tail(out), self.node_log()))
        return out

    def node_log(self):
        if not self.container or not self.node:
            return ""
        out = self.node.log()  # outside the budget: what a failure prints
        if not out.strip():
            return ""
        return "\n---- chorusd's log in the container ----\n%s" % tail(out)

    def ctl(self, args, timeout_s=60):
        return self.sh_ok("%s %s" % (CTL, args), timeout_s)

    def wait_answers(self, what):
        """Waits for `clusterctl status` to answer; returns its output."""
        def answers():
            rc, out = self.sh("%s --timeout 2s status" % CTL, 30)
            if rc == 0:
                return out
            code = self.node.ended()
            return ("exited", code) if code is not None else None
        try:
            status = harness.wait_until(answers, 30, "clusterctl status to answer (%s)" % what,
                                        interval_s=0.2)
        except AssertionError as e:
            self.fail("%s%s" % (e, self.node_log()))
        if isinstance(status, tuple):
            self.fail("chorusd ended (exit status %s) before clusterctl status answered (%s)%s"
                      % (status[1], what, self.node_log()))
        return status

    def wait_log(self, text, what, timeout_s=15):
        try:
            harness.wait_until(lambda: text in self.node.log(), timeout_s, what, interval_s=0.2)
        except AssertionError as e:
            self.fail("%s%s" % (e, self.node_log()))

    def keys_digest(self):
        return self.sh_ok("sha256sum /etc/chorus/secret %s" % CLIENT_KEY)

    def apt_install(self, deb, what, extra=""):
        """apt-get install of a .deb in /pkg, no terminal (so a conffile
        prompt would fail it); returns its output."""
        return self.sh_ok("cd /pkg && %s install -y %s ./%s" % (APT, extra, deb), 300, what)

    # ---- steps ----

    def build_debs(self, out_dir):
        """(the .deb to install, the .deb to upgrade to or None)."""
        given = os.environ.get("CHORUS_TEST_DEB")
        if given:
            shutil.copy(given, out_dir)
            return os.path.join(out_dir, os.path.basename(given)), None
        source_example = os.path.join(harness.SOURCE_DIR, "deploy", "chorus.conf.example")
        changed = os.path.join(out_dir, "chorus.conf.example")
        with open(source_example) as f, open(changed, "w") as out:
            out.write(f.read() + "\n" + EXAMPLE_MARK + "\n")
        # 2 first, so the build dir is left configured as the source has it
        second = self.package(out_dir, "2", changed)
        first = self.package(out_dir, "1", source_example)
        for deb, release in ((first, "1"), (second, "2")):
            self.assertRegex(os.path.basename(deb), r"^chorus_[0-9.]+-%s_[a-z0-9]+\.deb$" % release)
        return first, second

    def package(self, out_dir, release, example):
        script = os.path.join(harness.SOURCE_DIR, "scripts", "package.sh")
        rc, out = run(["bash", script, out_dir, os.path.join(harness.BUILD_DIR, "package"),
                       "-DCHORUS_DEB_RELEASE=" + release, "-DCHORUS_CONF_EXAMPLE=" + example],
                      self.budget(300))
        self.assertEqual(rc, 0, "scripts/package.sh (release %s) failed (rc %s, None: timed "
                         "out):\n%s" % (release, rc, tail(out)))
        deb = out.strip().splitlines()[-1]
        self.assertTrue(deb.endswith(".deb") and os.path.isfile(deb), out)
        return deb

    def make_images(self):
        """The two base images, each made once per machine; the lock keeps
        two test runs from making them at the same time."""
        if image_exists(SYSTEMD_IMAGE):
            return "cached"
        with open(IMAGE_LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if image_exists(SYSTEMD_IMAGE):
                return "cached"
            made = []
            if not image_exists(IMAGE):
                self.debootstrap_image()
                made.append(IMAGE)
            self.systemd_image()
            made.append(SYSTEMD_IMAGE)
            return "made " + ", ".join(made)

    def debootstrap_image(self):
        root = tempfile.mkdtemp(prefix="chorus-base-", dir="/var/tmp")
        try:
            rc, out = run(["debootstrap", "--variant=minbase", "bookworm", root, MIRROR],
                          self.budget(300))
            if rc != 0:
                why = "debootstrap failed (rc %s)" % rc
                self.skip(why, "last output:\n%s" % tail(out, 2000))
            tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
            imp = subprocess.Popen(["docker", "import", "-", IMAGE], stdin=tar.stdout,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            tar.stdout.close()  # docker import holds the pipe's only reader
            limit_s = self.budget(180)
            try:
                out, _ = imp.communicate(timeout=limit_s)
                tar.wait(timeout=30)
            except subprocess.TimeoutExpired:
                imp.kill()
                tar.kill()
                imp.wait()
                tar.wait()
                self.fail("tar | docker import %s did not finish within %.0f s" % (IMAGE, limit_s))
            self.assertEqual((tar.returncode, imp.returncode), (0, 0),
                             "tar | docker import failed:\n%s" % tail(out))
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def systemd_image(self):
        """IMAGE with systemd (and systemd-sysv's /sbin/init) from the
        mirror, committed as SYSTEMD_IMAGE; apt's lists are left out."""
        name = "chorus-pkgimage-%s" % uuid.uuid4().hex[:12]
        rc, out = run(["docker", "run", "-d", "--name", name, "--label", "chorus-test=package",
                       IMAGE, "sleep", str(CONTAINER_LIFETIME_S)], self.budget(120))
        self.assertEqual(rc, 0, "docker run %s failed:\n%s" % (IMAGE, tail(out)))
        try:
            self.container = name
            rc, out = self.sh("echo 'deb %s bookworm main' >/etc/apt/sources.list && %s update"
                              % (MIRROR, APT), 300)
            if rc != 0:
                self.skip("apt-get update failed (rc %s) making %s: the mirror is out of reach"
                          % (rc, SYSTEMD_IMAGE), tail(out, 2000))
            self.sh_ok("%s install -y --no-install-recommends systemd systemd-sysv && "
                       "apt-get clean && rm -rf /var/lib/apt/lists/*" % APT, 300,
                       "apt-get install systemd (for %s)" % SYSTEMD_IMAGE)
            rc, out = run(["docker", "commit", name, SYSTEMD_IMAGE], self.budget(180))
            self.assertEqual(rc, 0, "docker commit %s failed:\n%s" % (SYSTEMD_IMAGE, tail(out)))
        finally:
            self.container = None
            run(["docker", "rm", "-f", name], 60)

    def start_container(self, debs):
        """A new container with the .debs in /pkg (copied, not mounted: the
        engine may see another file system than this process): systemd as
        PID 1 when it boots here, else a sleep (the setpriv fallback)."""
        options, why = systemd_run_options()
        if options is not None:
            why = self.boot_systemd(options)
        if why is not None:
            print("test_package: systemd cannot run as PID 1 in a container here (%s): chorusd "
                  "runs under setpriv instead, the unit's sandbox is not tested" % why,
                  file=sys.stderr)
            self.new_container([], ["sleep", str(CONTAINER_LIFETIME_S)])
        self.sh_ok("mkdir -p /pkg")
        for deb in debs:
            rc, out = run(["docker", "cp", deb, "%s:/pkg/" % self.container], self.budget(120))
            self.assertEqual(rc, 0, "docker cp %s failed:\n%s" % (deb, tail(out)))
        return "systemd" if self.systemd else "setpriv"

    def new_container(self, options, command):
        """Starts a container from SYSTEMD_IMAGE; None, or why it did not."""
        name = "chorus-pkgtest-%s" % uuid.uuid4().hex[:12]
        rc, out = run(["docker", "run", "-d", "--rm", "--name", name, "--label",
                       "chorus-test=package"] + options + [SYSTEMD_IMAGE] + command,
                      self.budget(120))
        if rc != 0:
            run(["docker", "rm", "-f", name], 60)
            if options:
                return "docker run failed: %s" % tail(out, 300).strip()
            self.fail("docker run failed:\n%s" % tail(out))
        self.container = name
        self.addCleanup(run, ["docker", "rm", "-f", name], 60)
        return None

    def boot_systemd(self, options):
        why = self.new_container(options, ["/sbin/init"])
        if why is not None:
            return why
        # "degraded": some unit failed, as a few may in a container; chorusd's
        # own unit is what the test looks at. Until systemd has made its
        # socket, systemctl answers "Failed to connect to bus".
        last = []

        def booted():
            rc, out = self.sh("systemctl is-system-running", 30)
            last[:] = [out.strip()]
            return rc is not None and out.strip() in ("running", "degraded")
        try:
            harness.wait_until(booted, BOOT_TIMEOUT_S, "systemd to boot", interval_s=0.2)
        except AssertionError:
            run(["docker", "rm", "-f", self.container], 60)
            self.container = None
            return "the boot did not finish within %d s: %r" % (BOOT_TIMEOUT_S, last)
        self.systemd = True
        self.sh_ok("systemd-run --quiet --unit chorus-test-lifetime --on-active=%ds "
                   "/bin/systemctl --force poweroff" % CONTAINER_LIFETIME_S)
        return None

    def install(self, deb):
        self.sh_ok("echo 'deb %s bookworm main' >/etc/apt/sources.list" % MIRROR)
        rc, out = self.sh("%s update" % APT, 300)
        if rc != 0:
            self.skip("apt-get update in the container failed (rc %s): the mirror is out of reach"
                      % rc, tail(out, 2000))
        self.apt_install(os.path.basename(deb), "apt-get install ./%s" % os.path.basename(deb))

    def check_files(self):
        listed = self.sh_ok("dpkg -L chorus").split()
        for path in EXPECTED_MODES:
            if path not in MADE_BY_POSTINST:
                self.assertIn(path, listed, "the package does not hold %s" % path)
        for end in EXPECTED_TAILS:
            self.assertTrue([p for p in listed if p.endswith(end)],
                            "the package holds no *%s:\n%s" % (end, "\n".join(listed)))
        out = self.sh_ok("stat -c '%%n %%U:%%G %%a' %s" % " ".join(EXPECTED_MODES))
        seen = dict(line.split(" ", 1) for line in out.splitlines())
        self.assertEqual(seen, EXPECTED_MODES)

        for field, names in (("Depends", DEPENDS), ("Suggests", SUGGESTS)):
            value = self.sh_ok("dpkg-query -W -f='${%s}' chorus" % field)
            for name in names:
                self.assertRegex(value, r"(^|, )%s( |,|$)" % re.escape(name),
                                 "%s: %s" % (field, value))
        conffiles = self.sh_ok("dpkg-query -W -f='${Conffiles}' chorus").split()
        self.assertEqual(conffiles[0::2], ["/etc/chorus/chorus.conf"], conffiles)
        conf = self.sh_ok("cat /etc/chorus/chorus.conf")
        with open(os.path.join(harness.SOURCE_DIR, "deploy", "debian", "chorus.conf")) as f:
            self.assertEqual(conf, f.read(), "/etc/chorus/chorus.conf is not deploy/debian/chorus.conf")
        for line in ("data_dir = /var/lib/chorus", "secret = /etc/chorus/secret", "seeds ="):
            self.assertIn("\n%s\n" % line, conf)
        self.assertIn(EXAMPLE, conf, "the conffile does not say where the example is")
        user = self.sh_ok("getent passwd chorus").strip().split(":")
        self.assertEqual(user[5:], ["/var/lib/chorus", "/usr/sbin/nologin"], user)
        self.assertLess(int(user[2]), 1000, "chorus is not a system user: %r" % user)
        for lib in ("/usr/bin/chorusd", "/usr/bin/clusterctl",
                    [p for p in listed if p.endswith("/libchorus.so.0")][0]):
            out = self.sh_ok("ldd %s" % lib)
            self.assertNotIn("not found", out, "%s misses a library:\n%s" % (lib, out))
        unit = self.sh_ok("cat %s" % UNIT)
        if not os.environ.get("CHORUS_TEST_DEB"):
            with open(os.path.join(harness.SOURCE_DIR, "deploy", "chorusd.service")) as f:
                self.assertEqual(unit, f.read(), "the installed unit is not deploy/chorusd.service")
        # the install neither enables nor starts the node, and postinst
        # recorded what an enable would link, for purge
        self.sh_ok("test -e %s" % DSH_STATE, what="deb-systemd-helper's state for the unit")
        self.sh_ok("test ! -e %s" % ENABLE_LINK, what="no enablement link after the install")
        if self.systemd:
            self.assertEqual(self.sh("systemctl is-enabled chorusd")[1].strip(), "disabled")
            self.assertEqual(self.sh("systemctl is-active chorusd")[1].strip(), "inactive")
        return unit

    def check_reinstall_keeps_keys(self, deb):
        before = self.keys_digest()
        self.apt_install(os.path.basename(deb), "apt-get install --reinstall", "--reinstall")
        self.assertEqual(self.keys_digest(), before, "a reinstall changed the keys")

    def admin_edits(self):
        """What an admin does before the first start: the conffile (the exec
        handler may run /bin/sh) and the mode of /etc/chorus. Plus what the
        sandbox checks look at: a world-readable file under /home, a
        directory of chorus's own outside the data dir, a file in /tmp."""
        self.sh_ok("printf '%s' >>/etc/chorus/chorus.conf && chmod %s /etc/chorus"
                   % (CONF_EDIT.replace("\n", "\\n"), CONF_DIR_MODE))
        self.sh_ok("mkdir -p /home/alice /srv/chorus-open && echo note >/home/alice/note && "
                   "chmod 755 /home/alice && chmod 644 /home/alice/note && "
                   "chown chorus:chorus /srv/chorus-open && echo host >/tmp/host-tmp-file")

    def start_node(self, unit):
        settings = unit_settings(unit)
        self.node = SystemdNode(self) if self.systemd else SetprivNode(self, settings)
        self.node.start()
        return settings

    def check_node(self, settings):
        status = self.wait_answers("after the start")
        self.assertIn("listen tcp://127.0.0.1:7400", status)
        out = self.ctl("submit sha256 abc --wait")
        self.assertIn(hashlib.sha256(b"abc").hexdigest(), out)

        # the node runs as the unit's user, without capabilities or new
        # privileges, and what it writes is its own (UMask)
        pid = self.node.main_pid()
        proc = self.sh_ok("grep -E '^(Uid|NoNewPrivs|CapEff|Seccomp):' /proc/%s/status" % pid)
        uid = self.sh_ok("id -u %s" % settings["User"][0]).strip()
        self.assertRegex(proc, r"Uid:\s+%s\s+%s\s+%s\s+%s" % ((uid,) * 4))
        self.assertRegex(proc, r"NoNewPrivs:\s+1")
        self.assertRegex(proc, r"CapEff:\s+0+\n")
        files = self.sh_ok("stat -c '%U %a %n' /var/lib/chorus/chorus.db /var/lib/chorus/node_id")
        for line in files.splitlines():
            self.assertTrue(line.startswith("chorus 600 "), files)

        # an exec task, and what its command sees of the sandbox
        probe = "; ".join([
            "exec 2>&1", "id -un",
            "grep -E '^(NoNewPrivs|CapEff|CapBnd|Seccomp):' /proc/self/status",
            "touch /srv/chorus-open/x && echo srv-writable",
            "cat /home/alice/note && echo home-readable",
            "test -e /tmp/host-tmp-file && echo host-tmp-seen",
            "touch /var/lib/chorus/probe && rm /var/lib/chorus/probe && echo data-writable",
            "true"])
        out = self.ctl("submit exec --wait -- /bin/sh -c %s" % shlex.quote(probe))
        self.assertIn("\nNoNewPrivs:\t1\n", "\n" + out)
        self.assertRegex(out, r"(^|\n)chorus\n")
        self.assertRegex(out, r"CapEff:\s+0+\n")
        self.assertIn("data-writable", out)
        if self.systemd:
            self.assertRegex(out, r"CapBnd:\s+0+\n", "CapabilityBoundingSet=")
            self.assertRegex(out, r"Seccomp:\s+2\n", "SystemCallFilter=")
            self.assertRegex(proc, r"Seccomp:\s+2")
            self.assertIn("Read-only file system", out, "ProtectSystem=strict:\n" + out)
            self.assertNotIn("srv-writable", out, "ProtectSystem=strict:\n" + out)
            self.assertNotIn("home-readable", out, "ProtectHome=yes:\n" + out)
            self.assertNotIn("host-tmp-seen", out, "PrivateTmp=yes:\n" + out)

    def upgrade(self, deb):
        """0.1.0-1 -> 0.1.0-2, with no terminal: no prompt, the admin's edit
        and mode kept, postinst's upgrade path (try-restart) taken."""
        keys = self.keys_digest()
        before = self.node.main_pid() if self.systemd else None
        invocation = self.node.prop("InvocationID") if self.systemd else None
        out = self.apt_install(os.path.basename(deb), "apt-get install (the upgrade to %s)"
                               % os.path.basename(deb))
        self.assertNotIn("Configuration file", out, "dpkg asked about the conffile:\n" + tail(out))
        version = self.sh_ok("dpkg-query -W -f='${Version}' chorus").strip()
        self.assertTrue(version.endswith("-2"), version)
        conf = self.sh_ok("cat /etc/chorus/chorus.conf")
        self.assertTrue(conf.endswith(CONF_EDIT), "the upgrade lost the admin's edit:\n" + conf)
        left = self.sh_ok("ls /etc/chorus | grep -E '\\.dpkg-|\\.ucf-' || true").strip()
        self.assertEqual(left, "", "the upgrade left conffile copies: %s" % left)
        self.assertIn(EXAMPLE_MARK, self.sh_ok("cat %s" % EXAMPLE), "the example was not upgraded")
        self.assertEqual(self.sh_ok("stat -c %a /etc/chorus").strip(), CONF_DIR_MODE,
                         "the upgrade reset the mode of /etc/chorus")
        self.assertEqual(self.keys_digest(), keys, "the upgrade changed the keys")
        if not self.systemd:
            return "no systemd: no restart to see"
        # try-restart: a new run of the unit in a new process, drained first
        self.assertNotEqual(self.node.prop("InvocationID"), invocation,
                            "postinst did not restart the node%s" % self.node_log())
        self.assertNotEqual(self.node.main_pid(), before)
        self.wait_answers("after the upgrade")
        self.assertEqual(self.node.log().count("node: stopped cleanly"), 1, self.node_log())
        self.assertEqual(self.sh("systemctl is-enabled chorusd")[1].strip(), "enabled")

        # a policy-rc.d that forbids every action: deb-systemd-invoke obeys it
        invocation = self.node.prop("InvocationID")
        self.sh_ok("printf '#!/bin/sh\\nexit 101\\n' >/usr/sbin/policy-rc.d && "
                   "chmod 755 /usr/sbin/policy-rc.d")
        try:
            self.apt_install(os.path.basename(deb), "apt-get install --reinstall under a "
                             "forbidding policy-rc.d", "--reinstall")
        finally:
            self.sh_ok("rm -f /usr/sbin/policy-rc.d")
        self.assertEqual(self.node.prop("InvocationID"), invocation,
                         "postinst restarted the node though policy-rc.d forbade it")
        return "restarted by postinst"

    def reload(self):
        pid = self.node.main_pid()
        self.node.reload()
        self.wait_log("SIGHUP: keys reloaded", "the node to reload its keys")
        self.assertEqual(self.node.main_pid(), pid, "the reload restarted the node")
        self.wait_answers("after the reload")

    def stop(self, settings):
        """A stop while a 2 s task runs: the node drains (the task succeeds)
        and exits 0 within TimeoutStopSec; with systemd, the workers are
        spared the SIGTERM (KillMode=mixed)."""
        stop_s = seconds(settings.get("TimeoutStopSec", ["90s"])[0])
        task = self.ctl("submit sleep 2000").strip()
        self.assertRegex(task, r"^[0-9]+$")
        harness.wait_until(lambda: "state      running" in self.ctl("status %s" % task), 10,
                           "task %s to run" % task, interval_s=0.1)
        start = time.monotonic()
        code = self.node.stop(stop_s)
        took_s = time.monotonic() - start
        self.assertEqual(code, "0", "chorusd ended with %s on the stop%s" % (code, self.node_log()))
        self.assertLess(took_s, stop_s)
        self.wait_log("node: stopped cleanly", "the node's last line")
        self.assertIn("draining", self.node.log())
        # again, to read the task's end from the journal it was written to
        self.node.start()
        self.wait_answers("after the stop")
        out = self.ctl("status %s" % task)
        self.assertIn("state      succeeded", out, "the task did not outlive the stop:\n" + out)
        return "%.1f s" % took_s

    def check_journal(self):
        if not self.systemd:
            return
        log = self.node.log()
        for line in ("listening on tcp://127.0.0.1:7400", "elected leader",
                     "SIGHUP: keys reloaded", "draining", "stopped cleanly"):
            self.assertIn(line, log, "journalctl -u chorusd lacks %r:\n%s" % (line, tail(log)))

    def verify_unit(self):
        out = self.sh_ok("systemd-analyze verify %s 2>&1" % UNIT, 60, "systemd-analyze verify")
        self.assertEqual(out.strip(), "", "systemd-analyze verify %s says:\n%s" % (UNIT, out))

    def check_dev_suggests(self):
        """With what the package suggests, pkg-config gives the flags of
        both links, and each -l it names has its library."""
        suggests = self.sh_ok("dpkg-query -W -f='${Suggests}' chorus").replace(",", " ")
        self.sh_ok("%s install -y --no-install-recommends pkgconf %s" % (APT, suggests), 300,
                   "apt-get install the Suggests")
        self.sh_ok("pkg-config --cflags --libs chorus")
        flags = self.sh_ok("pkg-config --static --libs chorus").split()
        libs = [f[2:] for f in flags if f.startswith("-l") and f[2:] not in LIBC_LIBS]
        self.assertIn("chorus", libs)
        missing = self.sh_ok("for l in %s; do ls /usr/lib/*/lib$l.a >/dev/null 2>&1 || echo $l; "
                             "done" % " ".join(libs)).split()
        self.assertEqual(missing, [], "pkg-config --static names libraries the Suggests do not "
                         "bring: %s" % " ".join(missing))

    def purge(self):
        """The node runs and is enabled: prerm stops it (drained), purge
        removes everything, its enablement too."""
        if self.systemd:
            self.assertEqual(self.sh("systemctl is-enabled chorusd")[1].strip(), "enabled")
            clean_stops = self.node.log().count("node: stopped cleanly")
        else:
            self.node.stop(60)
        self.sh_ok("%s purge -y chorus" % APT, 120, "apt-get purge chorus")
        left = self.sh_ok("for p in /usr/bin/chorusd /usr/bin/clusterctl %s /etc/chorus "
                          "/var/lib/chorus /usr/include/chorus.h %s %s /usr/share/doc/chorus; do "
                          "[ -e $p ] && echo $p; done; "
                          "getent passwd chorus; getent group chorus; "
                          "grep -l chorusd /proc/[0-9]*/comm 2>/dev/null; true"
                          % (UNIT, ENABLE_LINK, DSH_STATE))
        self.assertEqual(left.strip(), "", "left after apt-get purge:\n%s" % left)
        if self.systemd:
            self.assertEqual(self.node.log().count("node: stopped cleanly"), clean_stops + 1,
                             "prerm did not stop the node cleanly%s" % self.node_log())

    # ---- the test ----

    def test_installs_runs_upgrades_and_purges_in_clean_debian_12(self):
        out_dir = tempfile.mkdtemp(prefix="chorus-deb-")
        self.addCleanup(shutil.rmtree, out_dir, True)
        first, second = self.timed("packages", self.build_debs, out_dir)
        images = self.timed("images", self.make_images)
        mode = self.timed("container", self.start_container, [d for d in (first, second) if d])
        self.timed("install", self.install, first)
        unit = self.timed("files", self.check_files)
        self.timed("reinstall", self.check_reinstall_keeps_keys, first)
        self.admin_edits()
        settings = self.timed("start", self.start_node, unit)
        self.timed("node", self.check_node, settings)
        if second:
            upgraded = self.timed("upgrade", self.upgrade, second)
        else:
            upgraded = "not tested (CHORUS_TEST_DEB is one package)"
        self.timed("reload", self.reload)
        stopped = self.timed("stop", self.stop, settings)
        self.timed("journal", self.check_journal)
        self.timed("verify", self.verify_unit)
        self.timed("suggests", self.check_dev_suggests)
        self.timed("purge", self.purge)
        print("test_package: %s (images %s, node under %s, upgrade %s, stop with a running task "
              "%s); %s" % (", ".join(os.path.basename(d) for d in (first, second) if d), images,
                           mode, upgraded, stopped,
                           ", ".join("%s %.1f s" % (step, s) for step, s in self.times)),
              file=sys.stderr)


if __name__ == "__main__":
    result = unittest.main(verbosity=2, exit=False).result
    if not result.wasSuccessful():
        sys.exit(1)
    # every test skipped: ctest shows "Skipped" (SKIP_RETURN_CODE)
    sys.exit(EXIT_SKIPPED if result.testsRun and len(result.skipped) == result.testsRun else 0)
