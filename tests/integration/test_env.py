"""test_env.py - chorusd configured by environment variables, as a container
runs it (docs/deploy.md): real processes started with no flag at all, or
with flags, a config file and variables together.

- Two nodes configured by CHORUS_* variables only form a cluster: names,
  listen addresses, data dirs, the secret and the seed all come from the
  environment, and the start log names the variables it applied.
- Precedence on a real process: a flag beats its variable, a variable beats
  the file CHORUS_CONFIG names, the file beats the default.
- A wildcard listen address is advertised under the host name; a WARN at
  start says when that name looks unreachable from other hosts (it does not
  resolve here, or resolves to loopback only while a seed is elsewhere),
  as this machine's resolver classifies it.
- A bad value in a variable is refused at start, naming the variable.
"""

import os
import shutil
import subprocess
import socket
import unittest

from harness import CHORUSD, Node, NodeTestCase, free_port, keygen, wait_until


def host_kind(host):
    """How this machine resolves host, as chorusd's config_host_resolve
    classifies it: "unresolved", "loopback" (only) or "routable"."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return "unresolved"
    def loopback(ip):
        ip = ip.split("%")[0]
        return ip == "::1" or ip.startswith("127.") or ip.startswith("::ffff:127.")
    return "loopback" if all(loopback(i[4][0]) for i in infos) else "routable"


class EnvNode(Node):
    """A node whose settings are given by the test alone: no --data-dir,
    --listen or --name added (see Node.command)."""

    def command(self):
        return self.prefix + [CHORUSD] + self.args


class TestEnv(NodeTestCase):

    def env_node(self, name, env, args=(), client_host="127.0.0.1", port=None):
        """A node started with these variables (and flags); the harness talks
        to it at tcp://client_host:port with the cluster secret."""
        secret = os.path.join(self.workdir, "cluster.secret")
        if not os.path.exists(secret):
            keygen(secret)
        node = EnvNode(self.workdir, name=name, args=args, secret=secret,
                       port=port or free_port(), host=client_host)
        node.env = dict(env)
        self.nodes.append(node)
        self.addCleanup(node.cleanup)
        node.start()
        return node

    def test_a_cluster_from_the_environment_alone(self):
        secret = os.path.join(self.workdir, "cluster.secret")
        keygen(secret)
        p1, p2 = free_port(), free_port()
        base = {"CHORUS_SECRET": secret, "CHORUS_GOSSIP_PERIOD": "200ms"}
        n1 = self.env_node("e1", dict(base, CHORUS_NAME="e1",
                                      CHORUS_LISTEN="tcp://127.0.0.1:%d" % p1,
                                      CHORUS_DATA_DIR=os.path.join(self.workdir, "e1-data")),
                           port=p1)
        n2 = self.env_node("e2", dict(base, CHORUS_NAME="e2",
                                      CHORUS_LISTEN="tcp://127.0.0.1:%d" % p2,
                                      CHORUS_DATA_DIR=os.path.join(self.workdir, "e2-data"),
                                      CHORUS_SEEDS="tcp://127.0.0.1:%d" % p1),
                           port=p2)
        for n in (n1, n2):
            wait_until(lambda: {m["name"]: m["state"] for m in n.members().values()} ==
                       {"e1": "alive", "e2": "alive"}, 20, "both alive, seen from %s" % n.name)
        self.assertTrue(os.path.isdir(os.path.join(self.workdir, "e2-data")))
        self.assertIn("settings from the environment: CHORUS_DATA_DIR CHORUS_LISTEN "
                      "CHORUS_SECRET CHORUS_NAME CHORUS_SEEDS CHORUS_GOSSIP_PERIOD",
                      n2.log_text())

    def test_flag_beats_variable_beats_file_beats_default(self):
        conf = os.path.join(self.workdir, "chorus.conf")
        with open(conf, "w") as f:
            f.write("[node]\nname = from-file\nworkers = 3\nprefetch = 3\n"
                    "[cluster]\ngossip_period = 300ms\n")
        port = free_port()
        n = self.env_node("p1", {
            "CHORUS_CONFIG": conf,
            "CHORUS_NAME": "from-env",
            "CHORUS_PREFETCH": "2",
            "CHORUS_LISTEN": "tcp://127.0.0.1:%d" % port,
            "CHORUS_DATA_DIR": os.path.join(self.workdir, "p1-data"),
            "CHORUS_SECRET": os.path.join(self.workdir, "cluster.secret"),
        }, args=["--name", "from-flag"], port=port)
        st = n.status()
        self.assertEqual(st["name"], "from-flag")                      # flag over variable
        me = [m for m in st["members"] if m.get("self")][0]
        self.assertEqual(me["capacity"], 3 * 2)                        # file's workers, variable's prefetch
        self.assertEqual([p["workers"] for p in st["pools"] if p["name"] == "default"], [3])
        self.assertIn("settings from the environment: CHORUS_DATA_DIR CHORUS_LISTEN "
                      "CHORUS_SECRET CHORUS_PREFETCH CHORUS_NAME", n.log_text())

    def test_a_wildcard_listen_address_is_advertised_under_the_host_name(self):
        port = free_port()
        n = self.env_node("w1", {
            "CHORUS_LISTEN": "tcp://0.0.0.0:%d" % port,
            "CHORUS_DATA_DIR": os.path.join(self.workdir, "w1-data"),
            "CHORUS_SECRET": os.path.join(self.workdir, "cluster.secret"),
        }, args=["--name", "w1"], port=port)
        want = "tcp://%s:%d" % (socket.gethostname(), port)
        me = [m for m in n.status()["members"] if m.get("self")][0]
        self.assertEqual(me["addr"], want)
        self.assertIn("advertising %s to other nodes" % want, n.log_text())
        # no seeds: only a name that does not resolve here is worth a warning
        unresolved = host_kind(socket.gethostname()) == "unresolved"
        self.assertEqual("does not resolve on this host" in n.log_text(), unresolved,
                         n.log_text())
        self.assertNotIn("resolves only to loopback", n.log_text())

    def test_a_host_name_others_may_not_reach_is_warned_about(self):
        # a seed elsewhere (192.0.2.1, TEST-NET-1: never answers): a host name
        # that resolves to loopback only here is a risk, and says so; one
        # that does not resolve is one too; a routable one is not
        port = free_port()
        seed = "tcp://192.0.2.1:7400"
        n = self.env_node("w2", {
            "CHORUS_LISTEN": "tcp://0.0.0.0:%d" % port,
            "CHORUS_SEEDS": seed,
            "CHORUS_DATA_DIR": os.path.join(self.workdir, "w2-data"),
            "CHORUS_SECRET": os.path.join(self.workdir, "cluster.secret"),
        }, args=["--name", "w2"], port=port)
        host = socket.gethostname()
        advertised = "tcp://%s:%d" % (host, port)
        kind = host_kind(host)
        warn = [l for l in n.log_text().splitlines() if " WARN " in l and
                ("advertising %s, but" % advertised) in l]
        if kind == "routable":
            self.assertEqual(warn, [], "%s resolves to a routable address here" % host)
            return
        self.assertEqual(len(warn), 1, n.log_text())
        if kind == "loopback":
            self.assertIn("the host name '%s' resolves only to loopback addresses" % host, warn[0])
            self.assertIn("seed %s is not on loopback" % seed, warn[0])
        else:
            self.assertIn("the host name '%s' does not resolve on this host" % host, warn[0])
        self.assertIn("set --advertise (CHORUS_ADVERTISE)", warn[0])
        # a warning, not a refusal: the node runs
        me = [m for m in n.status()["members"] if m.get("self")][0]
        self.assertEqual(me["addr"], advertised)

    def test_a_host_name_that_does_not_resolve_is_warned_about(self):
        # the node in a UTS namespace of its own, under a name no resolver
        # knows (.invalid, RFC 6761): needs root for unshare
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            self.skipTest("needs root and unshare(1) to give chorusd another host name")
        probe = subprocess.run(["unshare", "--uts", "true"], capture_output=True, timeout=30)
        if probe.returncode != 0:
            # root in a container without CAP_SYS_ADMIN (fresh-machine)
            self.skipTest("unshare --uts is not permitted here: %s"
                          % probe.stderr.decode(errors="replace").strip())
        host = "chorus-nowhere-%d.invalid" % os.getpid()
        self.assertEqual(host_kind(host), "unresolved")
        port = free_port()
        prefix = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host]
        secret = os.path.join(self.workdir, "cluster.secret")
        keygen(secret)
        node = EnvNode(self.workdir, name="w3", args=["--name", "w3"], secret=secret, port=port)
        node.prefix = prefix
        node.env = {"CHORUS_LISTEN": "tcp://0.0.0.0:%d" % port,
                    "CHORUS_DATA_DIR": os.path.join(self.workdir, "w3-data"),
                    "CHORUS_SECRET": secret}
        self.nodes.append(node)
        self.addCleanup(node.cleanup)
        node.start()
        advertised = "tcp://%s:%d" % (host, port)
        warn = [l for l in node.log_text().splitlines() if " WARN " in l and
                ("advertising %s, but the host name '%s' does not resolve on this host"
                 % (advertised, host)) in l]
        self.assertEqual(len(warn), 1, node.log_text())
        me = [m for m in node.status()["members"] if m.get("self")][0]
        self.assertEqual(me["addr"], advertised)

    def test_a_bad_variable_is_refused_at_start_naming_it(self):
        rc, out, err = self.run_chorusd("--data-dir", os.path.join(self.workdir, "x"),
                                        env_extra={"CHORUS_WORKERS": "0"})
        self.assertEqual(rc, 2, err)
        self.assertIn("chorusd: environment CHORUS_WORKERS: '0' is out of range 1..256", err)
        rc, out, err = self.run_chorusd(env_extra={"CHORUS_CONFIG": "/nonexistent/chorus.conf"})
        self.assertEqual(rc, 2, err)
        self.assertIn("/nonexistent/chorus.conf", err)
        self.assertFalse(os.path.exists(os.path.join(self.workdir, "x")))


if __name__ == "__main__":
    unittest.main()
