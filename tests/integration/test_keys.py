"""test_keys.py - roles are keys, HELLOs cannot be replayed, keys rotate
live (issue #9, "Secure links").

1. a client credential (clusterctl keygen --client) does everything
   clusterctl does (submit and wait, status, members) but cannot act as a
   member: its gossip is refused (denied), and chorusd refuses it as --secret
   with a message naming `keygen --client`; a node key's gossip is accepted,
   but not when it claims another member's id;
2. one HELLO replayed 300 times gets at most one WELCOME (the rest are
   refused by the node's HELLO guard), and the node keeps serving;
3. rotation on a live 3-node cluster, as memberlist's keyring: install a
   second key (SIGHUP), use it (swap the lines, SIGHUP, new client
   credentials), remove the old one (SIGHUP), with a client submitting the
   whole time: no request fails, the cluster stays whole, and `status`
   shows sessions per key id moving to the new key.
"""

import os
import re
import signal
import threading
import time
import unittest

from harness import (CLUSTERCTL, NodeTestCase, keygen, peer_counters, run_cmd, task_id,
                     task_state, wait_until)


def read_key(path):
    with open(path) as f:
        return f.read().strip()


def write_keys(path, *keys):
    tmp = path + ".next"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(k + "\n" for k in keys))
    os.replace(tmp, path)


def credential(secret, out):
    if os.path.exists(out):
        os.unlink(out)
    rc, o, e = run_cmd([CLUSTERCTL, "keygen", "--client", secret, out])
    if rc != 0:
        raise AssertionError("keygen --client: %s %s" % (o, e))
    return out


class TestKeys(NodeTestCase):

    def test_a_client_credential_cannot_act_as_a_member(self):
        n = self.new_node()
        cred = credential(n.secret, os.path.join(self.workdir, "client.cred"))
        rc, r, err = n.ctl("submit", "echo", "hi", "--wait", secret=cred)
        self.assertEqual(rc, 0, err)
        self.assertEqual(r["output"], "hi")
        rc, st, err = n.ctl("status", secret=cred)
        self.assertEqual(rc, 0, err)
        rc, ms, err = n.ctl("members", secret=cred)
        self.assertEqual(rc, 0, err)
        rc, out, err = n.frametool("gossip", "client", "denied", secret=cred)
        self.assertEqual(rc, 0, "client credential's gossip: %s %s" % (out, err))
        rc, out, err = n.frametool("gossip", "impostor", "denied")
        self.assertEqual(rc, 0, "a member claiming another's id: %s %s" % (out, err))
        rc, out, err = n.frametool("gossip", "node", "ack")
        self.assertEqual(rc, 0, "a member's own gossip: %s %s" % (out, err))
        # as a node's secret, a credential is refused, naming the remedy
        rc, out, err = self.run_chorusd("--data-dir", os.path.join(self.workdir, "other"),
                                        "--listen", "tcp://127.0.0.1:9", "--secret", cred)
        self.assertNotEqual(rc, 0)
        self.assertIn("keygen --client", out + err)

    def test_a_replayed_hello_gets_no_session(self):
        n = self.new_node()
        rc, out, err = n.frametool("hello-flood", 300, timeout_s=120)
        self.assertEqual(rc, 0, (out, err))
        m = re.search(r"(\d+) sent, (\d+) answered", out)
        sent, answered = int(m.group(1)), int(m.group(2))
        self.assertEqual(sent, 300)
        st = n.status()
        pc = peer_counters(st)
        # one WELCOME; every other copy refused as a replay, unanswered (a
        # connection that keeps sending them is closed after 16), and none
        # made a session
        self.assertLessEqual(answered, 1, out)
        self.assertGreaterEqual(pc.get("replayed", 0), 16, pc)
        self.assertGreaterEqual(pc.get("connections_closed", 0), 1, pc)
        self.assertLessEqual(st["sessions"], 3, st["sessions"])
        r = n.submit("echo", "--wait", payload="still serving")
        self.assertEqual(r["output"], "still serving")

    def test_keys_rotate_on_a_live_cluster(self):
        old = keygen(os.path.join(self.workdir, "a.key"))
        new = keygen(os.path.join(self.workdir, "b.key"))
        a, b = read_key(old), read_key(new)
        nodes = []
        for i in range(3):
            path = os.path.join(self.workdir, "n%d.keys" % (i + 1))
            write_keys(path, a)
            args = ["--secret", path, "--gossip-period", "200ms", "--workers", "2"]
            if nodes:
                args += ["--seeds", nodes[0].addr]
            nodes.append(self.new_node(*args, name="n%d" % (i + 1), secret=path))
        wait_until(lambda: all(len(n.members()) == 3 and all(
            m["state"] == "alive" for m in n.members().values()) for n in nodes), 20,
            "three alive members")
        cred_path = os.path.join(self.workdir, "client.cred")
        write_keys(os.path.join(self.workdir, "ab.keys"), a)
        credential(os.path.join(self.workdir, "ab.keys"), cred_path)
        failures, done = [], []
        stop = threading.Event()

        def client():
            i = 0
            while not stop.is_set():
                target = nodes[i % 3]
                rc, out, err = target.ctl("submit", "echo", "r%d" % i, "--wait",
                                          "--timeout", "20s", secret=cred_path)
                if rc != 0 or not isinstance(out, dict) or out.get("output") != "r%d" % i:
                    failures.append((i, target.name, rc, out, err))
                done.append(i)
                i += 1
        th = threading.Thread(target=client)
        th.start()

        def key_ids(n):
            return {k["key_id"]: k for k in n.status().get("keys", [])}

        def hup_all(*keys):
            for n in nodes:
                write_keys(n.secret, *keys)
                n.proc.send_signal(signal.SIGHUP)

        try:
            wait_until(lambda: len(done) >= 5, 30, "the client under way")
            # 1. install: A primary, B accepted
            hup_all(a, b)
            wait_until(lambda: all(len(key_ids(n)) == 2 for n in nodes), 15,
                       "every node holds both keys")
            ids = key_ids(nodes[0])
            old_id = [k for k, v in ids.items() if v["primary"]][0]
            new_id = [k for k in ids if k != old_id][0]
            # 2. use: B primary, A accepted; the client moves to B
            hup_all(b, a)
            wait_until(lambda: all(key_ids(n)[new_id]["primary"] for n in nodes), 15,
                       "B primary everywhere")
            write_keys(os.path.join(self.workdir, "ba.keys"), b, a)
            tmp_cred = cred_path + ".new"
            credential(os.path.join(self.workdir, "ba.keys"), tmp_cred)
            os.replace(tmp_cred, cred_path)
            n_before = len(done)
            wait_until(lambda: len(done) >= n_before + 5, 30, "the client on the new key")
            # 3. remove: B alone
            hup_all(b)
            wait_until(lambda: all(old_id not in key_ids(n) for n in nodes), 15,
                       "A gone from every node")
            n_before = len(done)
            wait_until(lambda: len(done) >= n_before + 5, 30, "the client after the removal")
            # the cluster is whole, members talk under B
            wait_until(lambda: all(len(n.members()) == 3 and all(
                m["state"] == "alive" for m in n.members().values()) for n in nodes), 20,
                "three alive members after the rotation")
            wait_until(lambda: all(key_ids(n)[new_id]["node_sessions"] >= 1 for n in nodes), 20,
                       "member sessions under the new key")
        finally:
            stop.set()
            th.join(60)
        self.assertEqual(failures, [], "requests failed during the rotation")
        self.assertGreaterEqual(len(done), 15)
        for n in nodes:
            self.assertIn("keys reloaded", n.log_text())


if __name__ == "__main__":
    unittest.main()
