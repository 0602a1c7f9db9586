"""test_package.py - the Debian package installs, runs a node and purges in a
clean Debian 12 container (docs/deploy.md, "Debian package and systemd").

The .deb is built by scripts/package.sh (a Release build kept in
BUILD_DIR/package, so a later run only rebuilds what changed), or taken from
CHORUS_TEST_DEB. The container starts from chorus-test-base:bookworm, a
minimal Debian 12 made with debootstrap and imported into Docker once per
machine (no image can be pulled here), then reused by its tag. In a new
container:
  1. `apt-get install ./chorus_*.deb` pulls the declared dependencies from
     Debian's mirror; postinst makes the user, /etc/chorus with the secret
     and a client credential, and the data dir;
  2. Depends names the six libraries; every file is where it belongs, with
     its owner and mode; a reinstall (postinst again) keeps the secret;
  3. chorusd starts the way chorusd.service starts it: the unit's ExecStart,
     User, Group, WorkingDirectory, UMask and NoNewPrivileges, applied with
     setpriv (systemd does not run as PID 1 in a plain container);
     `clusterctl -k /etc/chorus/client.key status` answers and a task runs;
     the unit's KillSignal drains it to exit 0 within TimeoutStopSec;
  4. `systemd-analyze verify` finds nothing to say about the installed unit;
  5. `apt-get purge` removes the files, /etc/chorus, /var/lib/chorus and the
     user.
It skips, with one line saying why, when no Docker engine answers, in a
sanitizer build (the package is a Release build: the normal build's run
tests it), and when the base image is missing and cannot be made (not root,
no debootstrap) or Debian's mirror is out of reach (CHORUS_TEST_MIRROR names
another one, for debootstrap and the container's apt).

Standard library only. Every wait has a deadline; steps time themselves and
the times are printed at the end.
"""

import fcntl
import hashlib
import os
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
MIRROR = os.environ.get("CHORUS_TEST_MIRROR", "http://deb.debian.org/debian")
IMAGE_LOCK = "/tmp/chorus-test-base.lock"   # one debootstrap at a time per machine
CONTAINER_LIFETIME_S = 900  # its PID 1 is a sleep: a container left behind ends by itself
UNIT = "/lib/systemd/system/chorusd.service"
RUN_DIR = "/run/chorus-test"
CLIENT_KEY = "/etc/chorus/client.key"
APT = "DEBIAN_FRONTEND=noninteractive apt-get -q -o Acquire::Retries=3 -o Dpkg::Use-Pty=0"
LOG_TAIL_CHARS = 6000
# the whole test, inside ctest's 600 s: a step that would outlive it fails
# with its output instead of being killed without a word
BUDGET_S = 540

# path -> owner:group and mode, as `stat -c '%U:%G %a'` prints them
EXPECTED_MODES = {
    "/usr/bin/chorusd": "root:root 755",
    "/usr/bin/clusterctl": "root:root 755",
    "/usr/include/chorus.h": "root:root 644",
    "/usr/include/chorus_plugin.h": "root:root 644",
    UNIT: "root:root 644",
    "/etc/chorus": "root:chorus 750",
    "/etc/chorus/chorus.conf": "root:root 644",
    "/etc/chorus/secret": "chorus:chorus 600",
    CLIENT_KEY: "root:root 600",
    "/var/lib/chorus": "chorus:chorus 700",
}
# names the package must list (dpkg -L), wherever the multiarch libdir is
EXPECTED_TAILS = ("/libchorus.so.0", "/libchorus.a", "/pkgconfig/chorus.pc",
                  "/usr/share/doc/chorus/deploy.md")


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


def image_exists():
    rc, _ = run(["docker", "image", "inspect", IMAGE], 30)
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


class PackageTest(unittest.TestCase):
    def setUp(self):
        self.times = []  # (step, seconds)
        self.container = None
        self.deadline = time.monotonic() + BUDGET_S
        self.skip_unless_possible()

    def budget(self, timeout_s):
        """timeout_s, or less when the test's budget ends sooner."""
        left = self.deadline - time.monotonic()
        if left <= 1:
            self.fail("the test used up its %d s budget (steps so far: %r)" % (BUDGET_S, self.times))
        return min(timeout_s, left)

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
            elif not image_exists():
                if os.geteuid() != 0:
                    why = "the base image %s is missing and only root can make it (debootstrap)" % IMAGE
                elif shutil.which("debootstrap") is None:
                    why = ("the base image %s is missing and debootstrap is not installed "
                           "(apt-get install debootstrap, or scripts/deps.sh)" % IMAGE)
        if why:
            print("test_package: SKIPPED: %s" % why, file=sys.stderr)
            self.skipTest(why)

    # ---- steps ----

    def timed(self, step, fn, *args):
        start = time.monotonic()
        try:
            return fn(*args)
        finally:
            self.times.append((step, time.monotonic() - start))

    def build_deb(self, out_dir):
        given = os.environ.get("CHORUS_TEST_DEB")
        if given:
            shutil.copy(given, out_dir)
            return os.path.join(out_dir, os.path.basename(given))
        script = os.path.join(harness.SOURCE_DIR, "scripts", "package.sh")
        rc, out = run(["bash", script, out_dir, os.path.join(harness.BUILD_DIR, "package")],
                      self.budget(300))
        self.assertEqual(rc, 0, "scripts/package.sh failed (rc %s, None: timed out):\n%s"
                         % (rc, tail(out)))
        deb = out.strip().splitlines()[-1]
        self.assertTrue(deb.endswith(".deb") and os.path.isfile(deb), out)
        return deb

    def make_base_image(self):
        """debootstrap + docker import, once per machine; the lock keeps two
        test runs from making it at the same time."""
        if image_exists():
            return "cached"
        with open(IMAGE_LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if image_exists():
                return "cached"
            root = tempfile.mkdtemp(prefix="chorus-base-", dir="/var/tmp")
            try:
                rc, out = run(["debootstrap", "--variant=minbase", "bookworm", root, MIRROR],
                              self.budget(300))
                if rc != 0:
                    why = "debootstrap failed (rc %s); last output:\n%s" % (rc, tail(out, 2000))
                    print("test_package: SKIPPED: %s" % why.splitlines()[0], file=sys.stderr)
                    self.skipTest(why)
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
                return "made"
            finally:
                shutil.rmtree(root, ignore_errors=True)

    def start_container(self, deb):
        """A new container with the .deb in /pkg (copied, not mounted: the
        engine may see another file system than this process)."""
        name = "chorus-pkgtest-%s" % uuid.uuid4().hex[:12]
        rc, out = run(["docker", "run", "-d", "--rm", "--name", name, "--label", "chorus-test=package",
                       IMAGE, "sleep", str(CONTAINER_LIFETIME_S)], self.budget(120))
        self.assertEqual(rc, 0, "docker run failed:\n%s" % tail(out))
        self.container = name
        self.addCleanup(run, ["docker", "rm", "-f", name], 60)
        self.sh_ok("mkdir -p /pkg")
        rc, out = run(["docker", "cp", deb, "%s:/pkg/" % name], self.budget(120))
        self.assertEqual(rc, 0, "docker cp %s failed:\n%s" % (deb, tail(out)))

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
        if not self.container:
            return ""
        # outside the budget: it is what a failure, the budget's too, prints
        rc, out = run(["docker", "exec", self.container, "cat", RUN_DIR + "/chorusd.log"], 30)
        if rc != 0 or not out.strip():
            return ""
        return "\n---- chorusd log in the container ----\n%s" % tail(out)

    def install(self):
        self.sh_ok("echo 'deb %s bookworm main' >/etc/apt/sources.list" % MIRROR)
        rc, out = self.sh("%s update" % APT, 300)
        if rc != 0:
            why = "apt-get update in the container failed (rc %s): the mirror is out of reach" % rc
            print("test_package: SKIPPED: %s" % why, file=sys.stderr)
            self.skipTest("%s\n%s" % (why, tail(out, 2000)))
        self.sh_ok("cd /pkg && %s install -y ./chorus_*.deb" % APT, 300,
                   "apt-get install ./chorus_*.deb")

    def check_files(self):
        listed = self.sh_ok("dpkg -L chorus").split()
        for path in EXPECTED_MODES:
            if not path.startswith(("/etc/chorus/secret", CLIENT_KEY, "/var/lib/chorus")):
                self.assertIn(path, listed, "the package does not hold %s" % path)
        for end in EXPECTED_TAILS:
            self.assertTrue([p for p in listed if p.endswith(end)],
                            "the package holds no *%s:\n%s" % (end, "\n".join(listed)))
        paths = " ".join(EXPECTED_MODES)
        out = self.sh_ok("stat -c '%%n %%U:%%G %%a' %s" % paths)
        seen = {}
        for line in out.splitlines():
            path, rest = line.split(" ", 1)
            seen[path] = rest
        self.assertEqual(seen, EXPECTED_MODES)

        depends = self.sh_ok("dpkg-query -W -f='${Depends}' chorus")
        for lib in ("libnng1", "libsodium23", "libsqlite3-0", "libprotobuf-c1", "libinih1",
                    "libjansson4", "adduser"):
            self.assertRegex(depends, r"(^|, )%s( |,|$)" % lib, "Depends: %s" % depends)
        conffiles = self.sh_ok("dpkg-query -W -f='${Conffiles}' chorus")
        self.assertIn("/etc/chorus/chorus.conf", conffiles)
        conf = self.sh_ok("cat /etc/chorus/chorus.conf")
        self.assertIn("\ndata_dir = /var/lib/chorus\n", conf)
        self.assertIn("\nsecret = /etc/chorus/secret\n", conf)
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
        return unit

    def check_reinstall_keeps_keys(self):
        keys = "sha256sum /etc/chorus/secret %s" % CLIENT_KEY
        before = self.sh_ok(keys)
        self.sh_ok("cd /pkg && %s install -y --reinstall ./chorus_*.deb" % APT, 120,
                   "apt-get install --reinstall")
        self.assertEqual(self.sh_ok(keys), before, "a reinstall changed the keys")

    def run_node_as_unit(self, unit):
        """Starts ExecStart as the unit would; returns the unit's settings."""
        s = unit_settings(unit)
        self.assertEqual(len(s.get("ExecStart", [])), 1, s.get("ExecStart"))
        argv = shlex.split(s["ExecStart"][0])
        self.assertTrue(argv[0].startswith("/"), "ExecStart has a prefix: %r" % argv)
        user, group = s["User"][0], s["Group"][0]
        setpriv = ["setpriv", "--reuid=" + user, "--regid=" + group, "--init-groups",
                   "--inh-caps=-all", "--bounding-set=-all"]
        if s.get("NoNewPrivileges", ["no"])[0] == "yes":
            setpriv.append("--no-new-privs")
        script = "\n".join([
            "cd %s || exit 99" % shlex.quote(s["WorkingDirectory"][0]),
            "umask %s" % s["UMask"][0],
            "%s -- %s >%s/chorusd.log 2>&1 &" % (" ".join(setpriv), shlex.join(argv), RUN_DIR),
            "echo $! >%s/pid" % RUN_DIR,
            "wait $!",
            "echo $? >%s/rc" % RUN_DIR,
        ]) + "\n"
        rc, out = self.sh("mkdir -p %s && cat >%s/run.sh" % (RUN_DIR, RUN_DIR), 30,
                          input=script.encode())
        self.assertEqual(rc, 0, out)
        rc, out = run(["docker", "exec", "-d", self.container, "sh", "%s/run.sh" % RUN_DIR],
                      self.budget(30))
        self.assertEqual(rc, 0, out)
        return s

    def status_answers(self):
        """clusterctl status's output, ("exited", code) once chorusd has
        ended, or None (not yet)."""
        rc, out = self.sh("clusterctl -k %s --timeout 2s status" % CLIENT_KEY, 30)
        if rc == 0:
            return out
        rc_file, code = self.sh("cat %s/rc" % RUN_DIR, 30)
        return ("exited", code.strip()) if rc_file == 0 and code.strip() else None

    def check_node(self, settings):
        try:
            status = harness.wait_until(self.status_answers, 30, "clusterctl status to answer",
                                        interval_s=0.2)
        except AssertionError as e:
            self.fail("%s%s" % (e, self.node_log()))
        if isinstance(status, tuple):
            self.fail("chorusd ended (exit code %s) before clusterctl status answered%s"
                      % (status[1], self.node_log()))
        self.assertIn("listen tcp://127.0.0.1:7400", status)
        out = self.sh_ok("clusterctl -k %s submit sha256 abc --wait" % CLIENT_KEY, 60)
        self.assertIn(hashlib.sha256(b"abc").hexdigest(), out)
        # the node runs as the unit's user, without new privileges, and
        # what it writes is its own (UMask)
        proc = self.sh_ok("grep -E '^(Uid|Gid|NoNewPrivs|CapEff):' /proc/$(cat %s/pid)/status" % RUN_DIR)
        uid = self.sh_ok("id -u %s" % settings["User"][0]).strip()
        self.assertRegex(proc, r"Uid:\s+%s\s+%s\s+%s\s+%s" % ((uid,) * 4))
        self.assertRegex(proc, r"NoNewPrivs:\s+1")
        self.assertRegex(proc, r"CapEff:\s+0+\n")
        files = self.sh_ok("stat -c '%U %a %n' /var/lib/chorus/chorus.db /var/lib/chorus/node_id")
        for line in files.splitlines():
            self.assertTrue(line.startswith("chorus 600 "), files)

    def stop_node(self, settings):
        signal = settings.get("KillSignal", ["SIGTERM"])[0]
        stop_s = seconds(settings.get("TimeoutStopSec", ["90s"])[0])
        self.sh_ok("kill -s %s $(cat %s/pid)" % (signal.replace("SIG", ""), RUN_DIR))

        def ended():
            rc, out = self.sh("cat %s/rc" % RUN_DIR, 30)
            return out.strip() if rc == 0 and out.strip() else None
        try:
            rc = harness.wait_until(ended, stop_s, "chorusd to stop on %s" % signal,
                                    interval_s=0.2)
        except AssertionError as e:
            self.fail("%s (TimeoutStopSec)%s" % (e, self.node_log()))
        self.assertEqual(rc, "0", "chorusd ended with %s on %s%s" % (rc, signal, self.node_log()))
        self.assertIn("stopped cleanly", self.node_log())

    def verify_unit(self):
        self.sh_ok("%s install -y --no-install-recommends systemd" % APT, 300,
                   "apt-get install systemd (for systemd-analyze)")
        out = self.sh_ok("systemd-analyze verify %s 2>&1" % UNIT, 60, "systemd-analyze verify")
        self.assertEqual(out.strip(), "", "systemd-analyze verify %s says:\n%s" % (UNIT, out))

    def purge(self):
        self.sh_ok("%s purge -y chorus" % APT, 120, "apt-get purge chorus")
        left = self.sh_ok("for p in /usr/bin/chorusd /usr/bin/clusterctl %s /etc/chorus "
                          "/var/lib/chorus /usr/include/chorus.h; do "
                          "[ -e $p ] && echo $p; done; "
                          "getent passwd chorus; getent group chorus; true" % UNIT)
        self.assertEqual(left.strip(), "", "left after apt-get purge:\n%s" % left)

    # ---- the test ----

    def test_installs_runs_and_purges_in_clean_debian_12(self):
        out_dir = tempfile.mkdtemp(prefix="chorus-deb-")
        self.addCleanup(shutil.rmtree, out_dir, True)
        deb = self.timed("package", self.build_deb, out_dir)
        image = self.timed("base image", self.make_base_image)
        self.timed("container", self.start_container, deb)
        self.timed("install", self.install)
        unit = self.timed("files", self.check_files)
        self.timed("reinstall", self.check_reinstall_keeps_keys)
        settings = self.timed("start", self.run_node_as_unit, unit)
        self.timed("status", self.check_node, settings)
        self.timed("stop", self.stop_node, settings)
        self.timed("verify", self.verify_unit)
        self.timed("purge", self.purge)
        print("test_package: %s (base image %s); %s" % (
            os.path.basename(deb), image,
            ", ".join("%s %.1f s" % (step, s) for step, s in self.times)), file=sys.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
