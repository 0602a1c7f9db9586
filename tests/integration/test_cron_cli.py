"""test_cron_cli.py - `clusterctl cron` and `clusterctl voters` without a cluster.

`cron add` and `cron every` check the schedule (name, expression, zone name,
overlap, --on, catch-up, jitter, --start/--end, retries) before contacting a
node: a bad one exits 2 with one line on stderr naming the problem. The tests
point clusterctl at a secret file that does not exist, so a command that got
as far as connecting would exit 7, not 2. With a real secret and no node at
the address, the commands that need the cluster exit 3. Commands answered by
the schedule service are tested with a cluster elsewhere.
"""

import os
import shutil
import tempfile
import unittest

from harness import CLUSTERCTL, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, free_port, keygen, run_cmd

HAVE_ZONEINFO = os.path.exists("/usr/share/zoneinfo/America/New_York")
NO_SECRET = "/nonexistent/chorus-test-secret"


def ctl(*args, secret=NO_SECRET, addr=None, json=False):
    cmd = [CLUSTERCTL, "-k", secret]
    if addr is not None:
        cmd += ["-a", addr, "--timeout", "500ms"]
    cmd += (["--json"] if json else []) + list(args)
    return run_cmd(cmd, parse_json=json)


ADD = ["cron", "add", "nightly", "30 2 * * *", "echo", "hello"]
EVERY = ["cron", "every", "tick", "10s", "echo"]


class TestCronCli(unittest.TestCase):

    def setUp(self):
        if not os.access(CLUSTERCTL, os.X_OK):
            self.fail("not built: %s (build with scripts/build.sh)" % CLUSTERCTL)

    def assertUsage(self, args, message):
        rc, out, err = ctl(*args)
        self.assertEqual(rc, EXIT_USAGE, (args, out, err))
        self.assertEqual(out, "")
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.startswith("clusterctl: "), err)
        self.assertIn(message, err)

    def test_a_good_add_gets_as_far_as_connecting(self):
        # the control for every test below: with nothing wrong, clusterctl
        # tries to read the secret and fails there (7), not on usage (2)
        for args in (ADD, EVERY, ADD + ["--tz", "America/New_York", "--overlap", "buffer-one",
                                        "--catchup", "5m", "--jitter", "30s", "--max-runs", "3",
                                        "--start", "2026-01-01T00:00:00Z", "--end", "1893456000",
                                        "--on", "tag:gpu", "--pause-on-failure", "--timeout", "1m",
                                        "--transient", "--retries", "3", "--require", "ssd"]):
            rc, out, err = ctl(*args)
            self.assertNotEqual(rc, EXIT_USAGE, (args, err))
            self.assertIn("cannot read key file", err)

    def test_bad_overlap_exits_2(self):
        self.assertUsage(ADD + ["--overlap", "sometimes"], "--overlap: unknown policy 'sometimes'")

    def test_bad_start_and_end_exit_2(self):
        self.assertUsage(ADD + ["--start", "yesterday"], "--start:")
        self.assertUsage(ADD + ["--end", "2026-13-01T00:00:00Z"], "--end:")
        self.assertUsage(ADD + ["--start", "2026-02-01T00:00:00Z", "--end", "2026-01-01T00:00:00Z"],
                         "--end is before --start")

    def test_bad_names_exit_2(self):
        for name in ("has space", "x" * 65, "slash/no", ""):
            self.assertUsage(["cron", "add", name, "* * * * *", "echo"], "is not a schedule name")

    def test_bad_expressions_exit_2_with_the_parser_reason(self):
        rc, out, err = ctl("cron", "add", "j", "61 * * * *", "echo")
        self.assertEqual(rc, EXIT_USAGE, err)
        self.assertEqual(err, "clusterctl: minute: 61 is out of range 0-59\n")
        rc, out, err = ctl("cron", "every", "j", "5x", "echo")
        self.assertEqual(rc, EXIT_USAGE, err)
        self.assertIn("@every", err)

    def test_bad_options_exit_2(self):
        for extra, message in ((["--tz", "../../etc/passwd"], "bad time zone name"),
                               (["--on", "gpu"], "--on takes tag:NAME"),
                               (["--catchup", "100ms"], "--catchup must be at least 1s"),
                               (["--catchup", "200h"], "--catchup must be at most 7 days"),
                               (["--jitter", "2h"], "--jitter must be at most 1h"),
                               (["--retries", "3"], "--retries and --backoff go with --transient"),
                               (["--max-runs", "many"], "--max-runs needs a number"),
                               (["--timeout", "soon"], "--timeout needs a duration"),
                               (["--bogus"], "unknown option '--bogus'"),
                               (["--tz"], "--tz needs a value")):
            self.assertUsage(ADD + extra, message)
        self.assertUsage(EVERY + ["--jitter", "10s"], "--jitter must be shorter than the interval")
        self.assertUsage(["cron", "add", "j", "* * * * *"], "cron add needs NAME 'EXPR' HANDLER")
        self.assertUsage(["cron", "every", "j", "5s"], "cron every needs NAME DURATION HANDLER")
        self.assertUsage(ADD + ["extra"], "unexpected argument 'extra'")
        self.assertUsage(ADD + ["-f", "/etc/hostname"], "give one of PAYLOAD, -f FILE or -")

    @unittest.skipUnless(HAVE_ZONEINFO, "no tzdata at /usr/share/zoneinfo")
    def test_a_local_start_is_read_in_the_zone(self):
        # no offset: a local time in --tz, which must be readable here
        rc, _, err = ctl(*ADD, "--tz", "America/New_York", "--start", "2026-03-08T02:30")
        self.assertNotEqual(rc, EXIT_USAGE, err)
        self.assertUsage(ADD + ["--tz", "Mars/Olympus", "--start", "2026-03-08T02:30"],
                         "has no offset and the zone cannot be read here")

    def test_named_subcommands_check_their_arguments(self):
        for args, message in ((["cron", "show"], "cron show needs a schedule NAME"),
                              (["cron", "rm", "a b"], "is not a schedule name"),
                              (["cron", "show", "j", "--limit", "0"], "--limit must be at least 1"),
                              (["cron", "history", "j", "--limit", "x"], "--limit needs a number"),
                              (["cron", "pause", "j", "--note", "n" * 257], "at most 256 bytes"),
                              (["cron", "resume", "j", "--note", "x"], "unknown option '--note'"),
                              (["cron", "trigger", "j", "k"], "unexpected argument 'k'"),
                              (["cron", "list", "j"], "unexpected argument 'j'"),
                              (["cron", "frob"], "unknown subcommand 'frob'"),
                              (["cron"], "cron needs a subcommand")):
            self.assertUsage(args, message)

    def test_backfill_needs_a_range_with_offsets(self):
        self.assertUsage(["cron", "backfill", "j"], "needs --from T and --to T")
        self.assertUsage(["cron", "backfill", "j", "--from", "2026-01-01T00:00", "--to",
                          "2026-01-02T00:00:00Z"], "needs an offset (Z or +HH:MM)")
        self.assertUsage(["cron", "backfill", "j", "--from", "2026-01-02T00:00:00Z", "--to",
                          "2026-01-01T00:00:00Z"], "--to is before --from")
        self.assertUsage(["cron", "backfill", "j", "--from", "1767225600", "--to", "1767312000",
                          "--overlap", "maybe"], "unknown policy 'maybe'")
        rc, _, err = ctl("cron", "backfill", "j", "--from", "1767225600", "--to",
                         "2026-01-02T00:00:00+01:00", "--overlap", "allow_all")
        self.assertNotEqual(rc, EXIT_USAGE, err)

    def test_voters_check_their_arguments(self):
        self.assertUsage(["voters", "add"], "voters add needs a MEMBER")
        self.assertUsage(["voters", "remove"], "voters remove needs a MEMBER")
        self.assertUsage(["voters", "promote", "n1"], "unknown subcommand 'promote'")
        self.assertUsage(["voters", "list", "n1"], "unexpected argument 'n1'")

    def test_no_node_at_the_address_exits_3(self):
        tmp = tempfile.mkdtemp(prefix="chorus-cron-cli-")
        try:
            secret = os.path.join(tmp, "secret")
            keygen(secret)
            addr = "tcp://127.0.0.1:%d" % free_port()
            for args in (["cron", "list"], ["cron", "show", "j"], ["cron", "rm", "j"],
                         ADD, ["voters"], ["voters", "add", "n2"]):
                rc, out, err = ctl(*args, secret=secret, addr=addr)
                self.assertEqual(rc, EXIT_UNREACHABLE, (args, out, err))
                self.assertIn("cannot reach", err)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_help_lists_the_commands(self):
        rc, out, _ = run_cmd([CLUSTERCTL, "--help"])
        self.assertEqual(rc, EXIT_OK)
        for text in ("cron add NAME 'EXPR' HANDLER", "cron every NAME DURATION HANDLER",
                     "cron list", "cron show NAME", "cron history NAME", "cron pause NAME",
                     "cron backfill NAME --from T --to T", "voters add|remove MEMBER",
                     "no leader elected in time", "no such task, schedule or member"):
            self.assertIn(text, out)
        rc, out, _ = run_cmd([CLUSTERCTL, "help", "cron"])
        self.assertEqual(rc, EXIT_OK)
        for text in ("--overlap POLICY", "--catchup DUR", "--pause-on-failure", "--max-runs N",
                     "clusterctl cron history NAME", "buffer_one"):
            self.assertIn(text, out)
        rc, out, _ = run_cmd([CLUSTERCTL, "help", "voters"])
        self.assertEqual(rc, EXIT_OK)
        self.assertIn("usage: clusterctl voters [list]", out)
        rc, out, _ = run_cmd([CLUSTERCTL, "cron", "add", "--help"])
        self.assertEqual(rc, EXIT_OK)
        self.assertIn("usage: clusterctl cron add", out)


if __name__ == "__main__":
    unittest.main()
