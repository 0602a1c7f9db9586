"""test_reconnect.py - calls survive connections that keep breaking.

A TCP proxy between libchorus and chorusd cuts every connection about every
200 ms while chorus_frametool's `hammer` mode makes sequential
ch_submit_await("echo") calls through it. A call takes well under a
millisecond on loopback, so the proxy also cuts by traffic: after every
CUT_EVERY_CHUNKS-th chunk from the client it either drops the chunk and cuts
(the request is lost: the resend must be executed) or forwards it and cuts
(the answer is lost: the resend must be answered from the node's cache).
Every call must succeed: nng reconnects and resends the request on the new
pipe, and the node answers a resend from its per-session cache (or moves a
parked wait to the new pipe) instead of running the task twice.

Also: a lost answer too big for that cache, and a resend that reaches the
node before the original was answered (frametool `dup`).
"""

import socket
import threading
import time
import unittest

from harness import NodeTestCase, peer_counters, wait_until

CALLS = 300
PARKED_CALLS = 25
PARKED_SLEEP_MS = 150
DUP_SUBMITS = 10
CUT_EVERY_S = 0.2
CUT_EVERY_CHUNKS = 30
PROXY_BUF_BYTES = 65536


class CuttingProxy:
    """Forwards 127.0.0.1:listen_port to target_port; cut() closes every
    live connection pair. Runs on daemon threads; close() stops it."""

    def __init__(self, target_port, cut_every_chunks=0, cut_answers_over_bytes=0):
        self.target_port = target_port
        self.cut_every_chunks = cut_every_chunks
        # > 0: the first answer chunk (node -> client) at least this long is
        # dropped and its connection cut, once
        self.cut_answers_over_bytes = cut_answers_over_bytes
        self.chunks = 0       # client -> node chunks seen
        self.lost_requests = 0
        self.lost_replies = 0
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.pairs = []
        self.accepted = 0
        self.cuts = 0         # cut() calls that closed at least one connection
        self.closed = False
        self.threads = [threading.Thread(target=self.accept_loop, daemon=True)]
        self.threads[0].start()

    def accept_loop(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            pair = (client, upstream)
            with self.lock:
                if self.closed:
                    client.close()
                    upstream.close()
                    return
                self.pairs.append(pair)
                self.accepted += 1
            for src, dst, up in ((client, upstream, True), (upstream, client, False)):
                t = threading.Thread(target=self.pump, args=(src, dst, pair, up), daemon=True)
                t.start()

    def chaos(self):
        """For a client -> node chunk: None (forward), "before" (drop it and
        cut) or "after" (forward it, then cut)."""
        if not self.cut_every_chunks:
            return None
        with self.lock:
            self.chunks += 1
            k = self.chunks % self.cut_every_chunks
        if k == 0:
            return "after"
        if k == self.cut_every_chunks // 2:
            return "before"
        return None

    def answer_chaos(self, n):
        """For a node -> client chunk of n bytes: "before" once for the
        first big one, else None."""
        with self.lock:
            if self.cut_answers_over_bytes and n >= self.cut_answers_over_bytes:
                self.cut_answers_over_bytes = 0
                self.lost_replies += 1
                return "before"
        return None

    def pump(self, src, dst, pair, upstream):
        try:
            while True:
                data = src.recv(PROXY_BUF_BYTES)
                if not data:
                    break
                what = self.chaos() if upstream else self.answer_chaos(len(data))
                if what == "before":
                    if upstream:
                        self.lost_requests += 1
                    break
                dst.sendall(data)
                if what == "after":
                    self.lost_replies += 1
                    break
        except OSError:
            pass
        self.drop(pair)

    def drop(self, pair):
        with self.lock:
            if pair in self.pairs:
                self.pairs.remove(pair)
        for s in pair:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def cut(self):
        with self.lock:
            pairs = list(self.pairs)
        for p in pairs:
            self.drop(p)
        if pairs:
            self.cuts += 1
        return len(pairs)

    def close(self):
        with self.lock:
            self.closed = True
        try:
            self.listener.close()
        except OSError:
            pass
        self.cut()


class TestReconnect(NodeTestCase):

    def test_calls_succeed_while_connections_are_cut(self):
        node = self.new_node("--workers", "2")
        proxy = CuttingProxy(node.port, cut_every_chunks=CUT_EVERY_CHUNKS)
        self.addCleanup(proxy.close)
        stop = threading.Event()

        def cutter():
            while not stop.wait(CUT_EVERY_S):
                proxy.cut()
        ct = threading.Thread(target=cutter, daemon=True)
        ct.start()
        self.addCleanup(stop.set)

        t0 = time.monotonic()
        rc, out, err = node.frametool("hammer", CALLS, addr="tcp://127.0.0.1:%d" % proxy.port,
                                      timeout_s=120)
        took = time.monotonic() - t0
        stop.set()
        ct.join(timeout=5)
        lines = out.strip().splitlines()
        print("\n  %s\n  %d calls in %.1f s through %d connections: %d timed cuts, %d requests"
              " and %d replies cut off" % (lines[-1] if lines else "", CALLS, took, proxy.accepted,
                                           proxy.cuts, proxy.lost_requests, proxy.lost_replies),
              end=" ", flush=True)
        self.assertEqual(rc, 0, "hammer failed:\n%s\n%s" % ("\n".join(lines[-20:]), err))
        self.assertTrue(lines[-1].startswith("ok %d " % CALLS), lines[-1])
        # the proxy really broke connections while the calls ran
        self.assertGreaterEqual(proxy.lost_requests, 5, "too few cuts to test anything")
        self.assertGreaterEqual(proxy.lost_replies, 5, "too few cuts to test anything")
        # a cut costs at most one reconnect (nng waits up to its reconnect time)
        self.assertLess(took, 60)

        # nothing ran twice: one echo task per call
        st = wait_until(lambda: (lambda s: s if s["running"] == 0 and s["queued"] == 0 else None)(
            node.status()), 10, "node idle")
        self.assertEqual(st["submitted"], CALLS, st)
        self.assertEqual(st["succeeded"], CALLS, st)

    def test_parked_waits_survive_cuts(self):
        """Each call waits ~150 ms on the node (a parked await) while the
        proxy cuts every 200 ms, so cuts land on parked requests: the node
        must move the parked wait to the resend's new pipe and answer it."""
        node = self.new_node("--workers", "2")
        proxy = CuttingProxy(node.port)
        self.addCleanup(proxy.close)
        stop = threading.Event()

        def cutter():
            while not stop.wait(CUT_EVERY_S):
                proxy.cut()
        ct = threading.Thread(target=cutter, daemon=True)
        ct.start()
        self.addCleanup(stop.set)
        rc, out, err = node.frametool("hammer", PARKED_CALLS, PARKED_SLEEP_MS,
                                      addr="tcp://127.0.0.1:%d" % proxy.port, timeout_s=120)
        stop.set()
        ct.join(timeout=5)
        lines = out.strip().splitlines()
        print("\n  %s\n  %d connections, %d timed cuts"
              % (lines[-1] if lines else "", proxy.accepted, proxy.cuts), end=" ", flush=True)
        self.assertEqual(rc, 0, "hammer failed:\n%s\n%s" % ("\n".join(lines[-20:]), err))
        self.assertTrue(lines[-1].startswith("ok %d " % PARKED_CALLS), lines[-1])
        self.assertGreaterEqual(proxy.cuts, 5, "too few cuts to test anything")
        st = node.status()
        self.assertEqual(st["submitted"], PARKED_CALLS, st)
        self.assertEqual(st["succeeded"], PARKED_CALLS, st)

    def lose_one_answer(self, payload_bytes):
        """One echo call whose answer (payload_bytes long) is lost with its
        connection; the resend on the next connection must be answered."""
        node = self.new_node()
        proxy = CuttingProxy(node.port, cut_answers_over_bytes=payload_bytes // 2)
        self.addCleanup(proxy.close)
        rc, out, err = node.frametool("hammer-big", 3, payload_bytes,
                                      addr="tcp://127.0.0.1:%d" % proxy.port, timeout_s=60)
        lines = out.strip().splitlines()
        self.assertEqual(proxy.lost_replies, 1, "the proxy did not cut an answer")
        self.assertEqual(rc, 0, "calls failed after a lost answer of %d bytes:\n%s\n%s"
                         % (payload_bytes, "\n".join(lines[-10:]), err))
        self.assertTrue(lines[-1].startswith("ok 3 "), lines[-1])
        st = node.status()
        self.assertEqual(st["submitted"], 3, "a resend was run again: %s" % st)

    def test_lost_small_answer_is_resent_from_the_cache(self):
        self.lose_one_answer(8 * 1024)

    def test_lost_large_answer_is_resent(self):
        # answers over the node's resend cache limit (16 KiB) are not kept
        self.lose_one_answer(20 * 1024)

    def test_resend_that_overtakes_the_answer_is_answered(self):
        """A resend can reach the node before the original's answer left
        (nng resends at once on a new pipe). frametool's `dup` sends one
        sealed submit twice back to back on two contexts: both copies must
        be answered, and the task must run once."""
        node = self.new_node()
        rc, out, err = node.frametool("dup", DUP_SUBMITS, timeout_s=60)
        st = node.status()
        self.assertEqual(st["submitted"], DUP_SUBMITS, "a resend was run again: %s" % st)
        self.assertEqual(rc, 0, "%s %s\nrefused as replayed: %s"
                         % (out, err, peer_counters(st)["replayed"]))


if __name__ == "__main__":
    unittest.main(verbosity=2)
