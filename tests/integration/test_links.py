"""test_links.py - the sealed links act only on what is authenticated.

1. forged resends: an outsider copies a session id and a counter from the
   wire (both travel in clear) and sends made-up bytes under them while the
   real `submit --wait` is parked, and again after it was answered. Neither
   forgery is answered; the real wait gets its result; a genuine resend of
   the answered request still gets the cached answer; the forgeries are
   counted as tampered, the genuine resend as resent;
2. a placed attempt (a coordinator's submit with origin fields) sent again
   on a new session runs once: the member deduplicates by (coordinator,
   task, attempt); the next attempt of the same task runs;
3. 60 awaits parked on one node from one client across a kill -9 and a
   restart of that node: every one is answered (the restarted node answers
   each unknown-session frame with an authenticated REJECT: no rate limit
   strands a burst of them).
"""

import subprocess
import unittest

from harness import FRAMETOOL, NodeTestCase, peer_counters, wait_until


class TestLinks(NodeTestCase):

    def test_forged_resend_of_a_parked_wait_changes_nothing(self):
        n = self.new_node("--workers", "2")
        rc, out, err = n.frametool("forge-resend", timeout_s=60)
        self.assertEqual(rc, 0, "frametool forge-resend:\n%s\n%s" % (out, err))
        self.assertIn("real wait: answered, succeeded", out)
        pc = peer_counters(n.status())
        self.assertGreaterEqual(pc["tampered"], 2, pc)
        self.assertGreaterEqual(pc["resent"], 1, pc)

    def test_a_placed_attempt_sent_twice_runs_once(self):
        n = self.new_node("--workers", "2")
        rc, out, err = n.frametool("placed-twice", timeout_s=60)
        self.assertEqual(rc, 0, "frametool placed-twice:\n%s\n%s" % (out, err))
        self.assertIn("one run per attempt", out)
        # two attempts ran, not three
        self.assertEqual(n.status()["submitted"], 2)

    def test_every_parked_await_is_answered_across_a_node_restart(self):
        # 60 awaits from one client are parked when the node is killed and
        # restarted: every one gets a REJECT (authenticated), the client
        # handshakes again and resends, and each is answered
        n = self.new_node("--workers", "2")
        p = subprocess.Popen([FRAMETOOL, n.addr, n.secret, "restart-awaits", "60"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            line = p.stdout.readline()
            self.assertTrue(line.startswith("READY"), line)
            n.kill9()
            n.start()
            p.stdin.write("go\n")
            p.stdin.flush()
            out = p.stdout.read()
            rc = p.wait(60)
        finally:
            if p.poll() is None:
                p.kill()
        self.assertEqual(rc, 0, out)
        self.assertIn("answered 60/60", out)


if __name__ == "__main__":
    unittest.main()
