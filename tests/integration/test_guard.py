"""test_guard.py - an outsider without the key cannot stop a node, exhaust
it, or make it hold much for long (issue #9, "Secure links").

The outsider here is tests/integration/attack.py: raw TCP speaking nng's
protocol from other loopback addresses (127.0.0.2 and up), bounded in time.

1. one connection that streams data frames with made-up session ids and
   never reads an answer, for 8 s, against a member of a 3-node cluster:
   a legitimate client's sequential submit-and-awaits all succeed, none is
   slow (the node used to stop within seconds: every context blocked on a
   send to the attacker), and no member is ever declared dead;
2. idle connections: at most 8 not-yet-authenticated connections per
   address (a ninth makes the oldest of them give way, counted
   `connections_closed`, so a new client at a busy address still gets in),
   and every connection that has not authenticated within the handshake
   timeout (10 s) is closed; a legitimate client is served meanwhile;
3. partial frames: connections that declare a frame of --frame-max and send
   most of it, then hold: the node holds at most 8 of them per address, and
   closes them after the handshake timeout; its memory stays bounded.
"""

import os
import threading
import time
import unittest

import attack
from harness import NodeTestCase, keygen, peer_counters, wait_until

HANDSHAKE_TIMEOUT_S = 10.0      # node/io/rpc.c HANDSHAKE_TIMEOUT_MS
PREAUTH_PER_SOURCE = 8          # node/io/rpc.c PREAUTH_PER_SOURCE_MAX


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class TestGuard(NodeTestCase):

    def test_a_peer_that_never_reads_cannot_stop_the_node(self):
        secret = keygen(os.path.join(self.workdir, "cluster.secret"))
        common = ("--secret", secret, "--gossip-period", "200ms", "--workers", "2")
        n1 = self.new_node(*common, name="n1", secret=secret)
        n2 = self.new_node(*common, "--seeds", n1.addr, name="n2", secret=secret)
        n3 = self.new_node(*common, "--seeds", n1.addr, name="n3", secret=secret)
        nodes = [n1, n2, n3]
        wait_until(lambda: all(len(n.members()) == 3 and
                               all(m["state"] == "alive" for m in n.members().values())
                               for n in nodes), 20, "three alive members everywhere")
        dead_seen = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                for n in nodes:
                    try:
                        for name, m in n.members().items():
                            if m["state"] in ("dead", "left"):
                                dead_seen.append((n.name, name, m["state"]))
                    except AssertionError:
                        pass  # a slow answer is the client's problem here
                time.sleep(0.2)
        watcher = threading.Thread(target=watch)
        watcher.start()
        attacked = {}

        def attack_it():
            attacked["sent"], attacked["conns"] = attack.stream_unknown_sessions(n1.port, 8.0)
        attacker = threading.Thread(target=attack_it)
        attacker.start()
        runs = []
        try:
            # the legitimate client: sequential submit-and-awaits, round
            # after round, for as long as the attack runs
            while attacker.is_alive():
                rc, out, err = n1.frametool("hammer", 200, timeout_s=120)
                runs.append((rc, out, err))
                if rc != 0:
                    break
        finally:
            attacker.join(30)
            stop.set()
            watcher.join(30)
        self.assertGreaterEqual(len(runs), 2, runs)
        for rc, out, err in runs:
            self.assertEqual(rc, 0, "legitimate client during the attack:\n%s\n%s" % (out, err))
            self.assertIn("ok 200", out)
            slowest = int(out.split("slowest call ")[1].split(" ms")[0])
            self.assertLess(slowest, 2000, out)
        self.assertEqual(dead_seen, [], "members declared dead during the attack")
        self.assertGreater(attacked["sent"], 1000, attacked)
        pc = peer_counters(n1.status(), peer="127.0.0.2")
        self.assertGreater(pc.get("unknown_session", 0), 0, pc)
        # the node answered at most a trickle of those frames
        self.assertGreater(pc.get("rate_limited", 0) + pc.get("connections_closed", 0), 0, pc)

    def test_idle_connections_are_capped_and_closed(self):
        n = self.new_node()
        t0 = time.monotonic()
        socks, failed = attack.hold_connections(n.port, 5 * 8,
                                                ["127.0.0.%d" % i for i in range(3, 11)])
        flood, _ = attack.hold_connections(n.port, 20, ["127.0.0.11"])
        try:
            self.wait_status(n, lambda s: peer_counters(s, "127.0.0.11").get(
                "connections_closed", 0) >= 20 - PREAUTH_PER_SOURCE,
                "the oldest connections over the per-address cap closed")
            # 8 of that address's connections are still open, the rest closed
            wait_until(lambda: sum(1 for s in flood if attack.closed_by_peer(s)) >=
                       20 - PREAUTH_PER_SOURCE, 10, "12 of the flood's connections closed")
            # a legitimate client is served at once meanwhile
            r = n.submit("echo", "--wait", payload="served")
            self.assertEqual(r["output"], "served")
            # every idle one is closed after the handshake timeout
            wait_until(lambda: all(attack.closed_by_peer(s) for s in socks + flood),
                       HANDSHAKE_TIMEOUT_S + 15, "idle connections closed by the node")
            self.assertGreaterEqual(time.monotonic() - t0, HANDSHAKE_TIMEOUT_S - 1)
            st = n.status()
            closed = sum(p.get("connections_closed", 0) for p in st["peers"])
            self.assertGreaterEqual(closed, 40 + PREAUTH_PER_SOURCE, st["peers"])
        finally:
            for s in socks + flood:
                s.close()

    def test_partial_frames_are_bounded_and_dropped(self):
        n = self.new_node("--frame-max", "4M")
        base = rss_kib(n.proc.pid)
        socks, failed = attack.hold_connections(n.port, 12, ["127.0.0.12"],
                                                declare_bytes=4 * 1024 * 1024,
                                                send_bytes=3500 * 1024)
        try:
            st = self.wait_status(n, lambda s: peer_counters(s, "127.0.0.12").get(
                "connections_closed", 0) >= 12 - PREAUTH_PER_SOURCE,
                "partial-frame connections over the cap closed")
            grown = rss_kib(n.proc.pid) - base
            # at most 8 partial frames of 4 MiB held, plus slack
            self.assertLess(grown, (PREAUTH_PER_SOURCE * 4 + 24) * 1024,
                            "node grew by %d KiB" % grown)
            wait_until(lambda: all(attack.closed_by_peer(s) for s in socks),
                       HANDSHAKE_TIMEOUT_S + 15, "partial-frame connections closed")
            r = n.submit("echo", "--wait", payload="served")
            self.assertEqual(r["output"], "served")
        finally:
            for s in socks:
                s.close()


if __name__ == "__main__":
    unittest.main()
