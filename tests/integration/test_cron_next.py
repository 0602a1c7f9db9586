"""test_cron_next.py - `clusterctl cron next` prints fire times without a cluster.

One ISO-8601 time per line with its offset, a JSON array with --json; bad
expressions, zones and --from values exit 2 with one line on stderr naming
the problem. DST vectors match tests/unit/test_cron.c (cronie's rule). Tests
needing real zone files skip when /usr/share/zoneinfo is missing.
"""

import os
import unittest

from harness import CLUSTERCTL, EXIT_OK, EXIT_USAGE, run_cmd

HAVE_ZONEINFO = os.path.exists("/usr/share/zoneinfo/America/New_York")


def cron_next(*args, json=False):
    cmd = [CLUSTERCTL] + (["--json"] if json else []) + ["cron", "next"] + list(args)
    return run_cmd(cmd, parse_json=json)


class TestCronNext(unittest.TestCase):

    def setUp(self):
        if not os.access(CLUSTERCTL, os.X_OK):
            self.fail("not built: %s (build with scripts/build.sh)" % CLUSTERCTL)

    def test_prints_one_time_per_line_in_utc_by_default(self):
        rc, out, err = cron_next("*/15 * * * *", "--from", "2026-01-01T00:00:00Z", "--count", "3")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertEqual(out.splitlines(), ["2026-01-01T00:15:00+00:00", "2026-01-01T00:30:00+00:00",
                                            "2026-01-01T00:45:00+00:00"])
        self.assertEqual(err, "")

    def test_default_count_is_five_from_now(self):
        rc, out, err = cron_next("@hourly")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertEqual(len(out.splitlines()), 5)

    def test_json_is_an_array_of_strings(self):
        rc, out, err = cron_next("0 0 29 2 *", "--from", "2026-01-01T00:00:00Z", "--count", "2",
                                 json=True)
        self.assertEqual(rc, EXIT_OK, err)
        self.assertEqual(out, ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"])

    @unittest.skipUnless(HAVE_ZONEINFO, "no tzdata at /usr/share/zoneinfo")
    def test_dst_gap_and_repeat_in_new_york(self):
        rc, out, err = cron_next("30 2 * * *", "--tz", "America/New_York", "--from",
                                 "2026-03-07T00:00:00-05:00", "--count", "3")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertEqual(out.splitlines(), ["2026-03-07T02:30:00-05:00", "2026-03-08T03:00:00-04:00",
                                            "2026-03-09T02:30:00-04:00"])
        rc, out, err = cron_next("*/30 1 * * *", "--tz", "America/New_York", "--from",
                                 "2026-11-01T00:59", "--count", "4", json=True)
        self.assertEqual(rc, EXIT_OK, err)
        self.assertEqual(out, ["2026-11-01T01:00:00-04:00", "2026-11-01T01:30:00-04:00",
                               "2026-11-01T01:00:00-05:00", "2026-11-01T01:30:00-05:00"])

    @unittest.skipUnless(HAVE_ZONEINFO, "no tzdata at /usr/share/zoneinfo")
    def test_lord_howe_half_hour(self):
        rc, out, err = cron_next("15 2 * * *", "--tz", "Australia/Lord_Howe", "--from",
                                 "2026-10-03T00:00:00Z", "--count", "2")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertEqual(out.splitlines(), ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"])

    def test_bad_expressions_exit_2_with_the_reason(self):
        for expr, msg in (("61 * * * *", "minute: 61 is out of range 0-59"),
                          ("* * * * FOO", 'day-of-week: unknown name "FOO"'),
                          ("* * * *", "expression: expected 5 or 6 fields, got 4"),
                          ("0 0 30 2 *", "never fires: the selected months (FEB) have no day 30")):
            rc, out, err = cron_next(expr)
            self.assertEqual(rc, EXIT_USAGE, (expr, out, err))
            self.assertEqual(out, "")
            self.assertEqual(err, "clusterctl: %s\n" % msg)

    def test_unknown_and_bad_zones_exit_2(self):
        rc, out, err = cron_next("* * * * *", "--tz", "Mars/Olympus")
        self.assertEqual(rc, EXIT_USAGE, err)
        self.assertEqual(err, 'clusterctl: unknown time zone "Mars/Olympus"\n')
        rc, out, err = cron_next("* * * * *", "--tz", "../../etc/passwd")
        self.assertEqual(rc, EXIT_USAGE, err)
        self.assertIn("bad time zone name", err)
        self.assertEqual(out, "")

    def test_usage_errors_exit_2(self):
        for args in (["*", "--count", "0"], ["* * * * *", "--count", "1001"],
                     ["* * * * *", "--from", "yesterday"], [], ["* * * * *", "extra"],
                     ["* * * * *", "--bogus"]):
            rc, out, err = cron_next(*args)
            self.assertEqual(rc, EXIT_USAGE, (args, err))
            self.assertEqual(len(err.splitlines()), 1, err)
        rc, _, err = run_cmd([CLUSTERCTL, "cron", "frob"])
        self.assertEqual(rc, EXIT_USAGE, err)

    def test_help_mentions_cron_next(self):
        rc, out, _ = run_cmd([CLUSTERCTL, "--help"])
        self.assertEqual(rc, EXIT_OK)
        self.assertIn("cron next 'EXPR'", out)
        rc, out, _ = run_cmd([CLUSTERCTL, "help", "cron"])
        self.assertEqual(rc, EXIT_OK)
        self.assertIn("clusterctl cron next 'EXPR'", out)


if __name__ == "__main__":
    unittest.main()
