"""test_install.py - libchorus installs with a pkg-config file, and the example
program built from the installed header and library runs against a real node.

Installs the build into a temporary prefix (cmake --install), compiles
client/examples/fanout.c with only `pkg-config --cflags --libs chorus`, and runs
it: a fan-out of 100 sha256 tasks in order plus one async submit. Then links
the same example fully static against the installed libchorus.a with only
`pkg-config --static`, and runs that too. The install also holds the systemd
unit and the host's config file, under the prefix (the Debian package moves
them: tests/integration/test_package.py)."""

import glob
import os
import subprocess
import tempfile
import unittest

import harness


def sanitized_build():
    cache = os.path.join(harness.BUILD_DIR, "CMakeCache.txt")
    try:
        with open(cache) as f:
            return "CHORUS_SANITIZE:BOOL=ON" in f.read()
    except OSError:
        return False


class InstallTest(harness.NodeTestCase):
    def install(self):
        """cmake --install into a fresh prefix; returns (prefix, chorus.pc)."""
        prefix = tempfile.mkdtemp(prefix="chorus-inst-", dir=self.workdir)
        r = subprocess.run(["cmake", "--install", harness.BUILD_DIR, "--prefix", prefix],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        pcs = glob.glob(os.path.join(prefix, "lib*", "**", "chorus.pc"), recursive=True)
        self.assertEqual(len(pcs), 1, "installed chorus.pc: %r" % pcs)
        return prefix, pcs[0]

    def test_pkg_config_build_of_the_example_runs(self):
        prefix, pc = self.install()
        for tool in ("chorusd", "clusterctl"):
            self.assertTrue(os.access(os.path.join(prefix, "bin", tool), os.X_OK), tool)
        for path in ("include/chorus.h", "include/chorus_plugin.h",
                     "lib/systemd/system/chorusd.service", "etc/chorus/chorus.conf"):
            self.assertTrue(os.path.exists(os.path.join(prefix, path)), path)
        self.assertTrue(os.path.exists(os.path.join(os.path.dirname(os.path.dirname(pc)),
                                                    "libchorus.a")), "libchorus.a")

        env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pc))
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "chorus"], env=env,
                               capture_output=True, text=True, timeout=30)
        self.assertEqual(flags.returncode, 0, flags.stderr)
        self.assertIn("-lchorus", flags.stdout)
        exe = os.path.join(prefix, "fanout")
        extra = ["-fsanitize=address,undefined"] if sanitized_build() else []
        src = os.path.join(harness.SOURCE_DIR, "client", "examples", "fanout.c")
        cc = subprocess.run(["cc", "-Wall", "-Wextra", "-Werror", *extra, "-o", exe, src,
                             *flags.stdout.split()], capture_output=True, text=True, timeout=120)
        self.assertEqual(cc.returncode, 0, cc.stdout + cc.stderr)

        node = self.new_node()
        libdir = os.path.dirname(os.path.dirname(pc))
        run_env = dict(os.environ, LD_LIBRARY_PATH=libdir)
        r = subprocess.run([exe, node.addr, node.secret], env=run_env, capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        lines = [l for l in r.stdout.splitlines() if l.strip()]
        self.assertGreaterEqual(len(lines), 100, r.stdout)

    def test_static_link_of_the_example_runs(self):
        # the sanitizer runtimes do not link statically
        if sanitized_build():
            self.skipTest("sanitizer build: no static link")
        prefix, pc = self.install()
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pc))
        flags = subprocess.run(["pkg-config", "--static", "--cflags", "--libs", "chorus"],
                               env=env, capture_output=True, text=True, timeout=30)
        self.assertEqual(flags.returncode, 0, flags.stderr)
        exe = os.path.join(prefix, "fanout-static")
        src = os.path.join(harness.SOURCE_DIR, "client", "examples", "fanout.c")
        cc = subprocess.run(["cc", "-static", "-o", exe, src, *flags.stdout.split()],
                            capture_output=True, text=True, timeout=120)
        # glibc warns that getaddrinfo in a static program still loads NSS
        # modules at run time; a numeric address needs none
        self.assertEqual(cc.returncode, 0, cc.stdout + cc.stderr)
        r = subprocess.run(["file", "-L", exe], capture_output=True, text=True, timeout=30)
        if r.returncode == 0:
            self.assertIn("statically linked", r.stdout)

        node = self.new_node()
        r = subprocess.run([exe, node.addr, node.secret], capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        lines = [l for l in r.stdout.splitlines() if l.strip()]
        self.assertGreaterEqual(len(lines), 100, r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
