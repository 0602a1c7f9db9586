"""test_metrics.py - the nodes' Prometheus metrics (issue #14 section 1) on
real chorusd processes.

A three-node cluster runs single tasks, a fan-out, a failing task, a
schedule and cache traffic; then `clusterctl metrics` (the MetricsReq the
HTTP listener's /metrics serves too) is read from every node and checked
twice: with `promtool check metrics` (Debian's prometheus package) when it
is installed, and with the strict parser below, which enforces the text
format and the naming rules (HELP and TYPE before every family, no family
twice, a family's samples together, no series twice, counters ending in
_total, histograms with ascending cumulative buckets, +Inf equal to
_count, _sum present). The values are then compared with what the test
did: tasks by state and handler, members alive, one leader, the term, the
schedule's fires, cache hits and misses, the request table.
"""

import math
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import CLUSTERCTL, EXIT_USAGE, NodeTestCase, keygen, run_cmd, wait_until

PERIOD = "200ms"
PROMTOOL = shutil.which("promtool")

NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class FormatError(AssertionError):
    pass


def parse_value(text):
    if text in ("+Inf", "Inf"):
        return math.inf
    if text == "-Inf":
        return -math.inf
    if text == "NaN":
        return math.nan
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        raise FormatError("not a number: %r" % text)
    return float(text)


def parse_labels(text, lineno):
    """The inside of {...}: name="value" pairs, values escaped with \\\\,
    \\" and \\n only. Returns a tuple of (name, value) in order."""
    out = []
    i = 0
    while i < len(text):
        m = re.match(r"([a-zA-Z_][a-zA-Z0-9_]*)=\"", text[i:])
        if not m:
            raise FormatError("line %d: bad label at %r" % (lineno, text[i:]))
        name = m.group(1)
        i += m.end()
        val = []
        while True:
            if i >= len(text):
                raise FormatError("line %d: unterminated label value" % lineno)
            c = text[i]
            if c == "\\":
                nxt = text[i + 1:i + 2]
                if nxt not in ("\\", "\"", "n"):
                    raise FormatError("line %d: bad escape \\%s" % (lineno, nxt))
                val.append("\n" if nxt == "n" else nxt)
                i += 2
            elif c == "\"":
                i += 1
                break
            elif c == "\n":
                raise FormatError("line %d: raw newline in a label value" % lineno)
            else:
                val.append(c)
                i += 1
        if name in (n for n, _ in out):
            raise FormatError("line %d: label %s twice" % (lineno, name))
        out.append((name, "".join(val)))
        if i < len(text):
            if text[i] != ",":
                raise FormatError("line %d: expected ',' at %r" % (lineno, text[i:]))
            i += 1
    return tuple(out)


def parse_metrics(text):
    """Strict parser of the Prometheus text format 0.0.4. Returns
    {family: {"type", "help", "samples": [(name, labels dict, value)]}}."""
    if text and not text.endswith("\n"):
        raise FormatError("the text does not end with a newline")
    families = {}
    order = []
    current = None
    series = set()
    for lineno, line in enumerate(text.split("\n")[:-1], 1):
        if line == "":
            continue
        if line.startswith("#"):
            m = re.fullmatch(r"# (HELP|TYPE) (\S+) ?(.*)", line)
            if not m:
                continue  # a plain comment
            kind, name, rest = m.groups()
            if not NAME_RE.match(name):
                raise FormatError("line %d: bad family name %r" % (lineno, name))
            fam = families.get(name)
            if fam is None:
                fam = families[name] = {"type": None, "help": None, "samples": []}
                order.append(name)
            elif current != name:
                raise FormatError("line %d: family %s declared again" % (lineno, name))
            current = name
            if kind == "HELP":
                if fam["help"] is not None:
                    raise FormatError("line %d: second HELP for %s" % (lineno, name))
                if re.search(r"\\[^\\n]", rest.replace("\\\\", "")):
                    raise FormatError("line %d: bad escape in HELP" % lineno)
                fam["help"] = rest
            else:
                if fam["type"] is not None or fam["samples"]:
                    raise FormatError("line %d: TYPE of %s late or twice" % (lineno, name))
                if rest not in TYPES:
                    raise FormatError("line %d: unknown type %r" % (lineno, rest))
                fam["type"] = rest
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?", line)
        if not m:
            raise FormatError("line %d: not a sample: %r" % (lineno, line))
        name, _, ltext, vtext, _ = m.groups()
        labels = parse_labels(ltext or "", lineno)
        value = parse_value(vtext)
        fam = families.get(current) if current else None
        base = name
        if fam and fam["type"] == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                if name == current + suffix:
                    base = current
        if fam is None or base != current:
            raise FormatError("line %d: sample %s outside its family (current %s)"
                              % (lineno, name, current))
        key = (name, tuple(sorted(labels)))
        if key in series:
            raise FormatError("line %d: series %s%r twice" % (lineno, name, labels))
        series.add(key)
        fam["samples"].append((name, dict(labels), value))
    for name in order:
        fam = families[name]
        if fam["help"] is None or fam["type"] is None:
            raise FormatError("family %s lacks HELP or TYPE" % name)
        check_family(name, fam)
    return families


def check_family(name, fam):
    if not name.startswith("chorus_"):
        raise FormatError("family %s lacks the chorus_ prefix" % name)
    t = fam["type"]
    if t == "counter":
        if not name.endswith("_total"):
            raise FormatError("counter %s does not end in _total" % name)
        for _, _, v in fam["samples"]:
            if not v >= 0:
                raise FormatError("counter %s is %r" % (name, v))
    if t != "counter" and name.endswith("_total"):
        raise FormatError("%s ends in _total but is a %s" % (name, t))
    if t == "histogram":
        check_histogram(name, fam["samples"])


def check_histogram(name, samples):
    groups = {}
    for sname, labels, v in samples:
        rest = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
        g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if sname == name + "_bucket":
            if "le" not in labels:
                raise FormatError("%s bucket without le" % name)
            g["buckets"].append((parse_value(labels["le"]), v))
        elif sname == name + "_sum":
            g["sum"] = v
        elif sname == name + "_count":
            g["count"] = v
    for rest, g in groups.items():
        les = [le for le, _ in g["buckets"]]
        if not les or les[-1] != math.inf:
            raise FormatError("%s%r: no +Inf bucket" % (name, rest))
        if les != sorted(les) or len(set(les)) != len(les):
            raise FormatError("%s%r: bounds not ascending: %r" % (name, rest, les))
        counts = [c for _, c in g["buckets"]]
        if any(b < a for a, b in zip(counts, counts[1:])):
            raise FormatError("%s%r: buckets not cumulative: %r" % (name, rest, counts))
        if g["count"] is None or g["sum"] is None:
            raise FormatError("%s%r: _count or _sum missing" % (name, rest))
        if g["count"] != counts[-1]:
            raise FormatError("%s%r: _count %r != +Inf bucket %r"
                              % (name, rest, g["count"], counts[-1]))


def family_of(fams, sample_name):
    """The family a sample name belongs to (a histogram's _bucket, _sum and
    _count are its family's)."""
    if sample_name in fams:
        return fams[sample_name]
    for suffix in ("_bucket", "_sum", "_count"):
        base = sample_name[:-len(suffix)]
        if sample_name.endswith(suffix) and fams.get(base, {}).get("type") == "histogram":
            return fams[base]
    raise AssertionError("no family for %s" % sample_name)


def value(fams, name, /, **labels):
    """The value of the one sample of family `name` whose labels include
    `labels`; 0 when none matches (a series not created yet)."""
    fam = family_of(fams, name)
    hits = [v for n, l, v in fam["samples"]
            if n == name and all(l.get(k) == x for k, x in labels.items())]
    if len(hits) > 1:
        raise AssertionError("%s%r matches %d series" % (name, labels, len(hits)))
    return hits[0] if hits else 0


def total(fams, name, /, **labels):
    fam = family_of(fams, name)
    return sum(v for n, l, v in fam["samples"]
               if n == name and all(l.get(k) == x for k, x in labels.items()))


class TestParser(unittest.TestCase):
    """The test's own parser refuses what it must (else passing proves
    nothing)."""

    GOOD = ("# HELP chorus_a_total A.\n# TYPE chorus_a_total counter\n"
            "chorus_a_total{k=\"x\\\"y\\\\z\\n\"} 3\n"
            "# HELP chorus_h_seconds H.\n# TYPE chorus_h_seconds histogram\n"
            "chorus_h_seconds_bucket{le=\"0.1\"} 1\nchorus_h_seconds_bucket{le=\"+Inf\"} 2\n"
            "chorus_h_seconds_sum 0.3\nchorus_h_seconds_count 2\n")

    def test_good_text_parses(self):
        fams = parse_metrics(self.GOOD)
        self.assertEqual(value(fams, "chorus_a_total", k="x\"y\\z\n"), 3)

    def test_bad_texts_are_refused(self):
        bad = [
            self.GOOD.replace("chorus_h_seconds_count 2", "chorus_h_seconds_count 3"),
            self.GOOD.replace("le=\"0.1\"} 1", "le=\"0.1\"} 5"),
            self.GOOD.replace("chorus_h_seconds_bucket{le=\"+Inf\"} 2\n", ""),
            self.GOOD + "# HELP chorus_a_total again\n",
            self.GOOD + "chorus_a_total{k=\"q\"} 1\n",
            self.GOOD.replace("# HELP chorus_a_total A.\n", ""),
            self.GOOD.replace("chorus_a_total", "chorus_a"),
            self.GOOD.replace("\\n\"} 3", "\\t\"} 3"),
            self.GOOD.replace("} 3", "} three"),
            self.GOOD.rstrip("\n"),
        ]
        for text in bad:
            with self.assertRaises(FormatError, msg=text):
                parse_metrics(text)


class TestMetricsUsage(unittest.TestCase):

    def test_bad_usage_exits_2_before_connecting(self):
        for args in (["metrics", "extra"], ["--json", "metrics"]):
            rc, out, err = run_cmd([CLUSTERCTL, "-k", "/nonexistent/secret"] + args)
            self.assertEqual(rc, EXIT_USAGE, (args, err))
            self.assertEqual(out, "")
            self.assertIn("metrics:", err)


class TestMetrics(NodeTestCase):

    def cluster(self):
        secret = keygen(os.path.join(self.workdir, "cluster.secret"))
        common = ["--secret", secret, "--gossip-period", PERIOD]
        nodes = [self.new_node(*common, name="n1", secret=secret)]
        for i in (2, 3):
            nodes.append(self.new_node(*common, "--seeds", nodes[0].addr, name="n%d" % i,
                                       secret=secret))
        wait_until(lambda: all(len(x.status().get("raft_voters", [])) == 3 and
                               x.status().get("raft_leader") for x in nodes), 30,
                   "3 voters and a leader")
        return nodes

    def metrics(self, node):
        rc, out, err = node.ctl("metrics", json=False)
        self.assertEqual(rc, 0, err)
        return out

    def parsed(self, node):
        return parse_metrics(self.metrics(node))

    def promtool(self, text):
        if PROMTOOL is None:
            return
        p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
        self.assertEqual((p.returncode, p.stdout + p.stderr), (0, ""),
                         "promtool check metrics refused the text")

    def test_a_cluster_s_metrics_parse_and_count_what_happened(self):
        if PROMTOOL is None:
            print("\nnote: promtool not installed (apt-get install prometheus): "
                  "checked with the test's own parser only")
        n1, n2, n3 = nodes = self.cluster()

        # tasks: three echoes and a failing task on n1, a fan-out of six
        for i in range(3):
            n1.submit("echo", payload="hello %d" % i)
        n1.submit("fail", expect_rc=None)
        path = os.path.join(self.workdir, "fan.txt")
        with open(path, "w") as f:
            f.write("".join("line %d\n" % i for i in range(6)))
        rc, out, err = n1.ctl("submit", "echo", "--fanout", path, json=False, timeout_s=60)
        self.assertEqual(rc, 0, err)

        # a schedule, run by the leader under its own handler
        rc, out, err = n2.ctl("cron", "every", "tick", "1s", "sha256", "x")
        self.assertEqual(rc, 0, err)

        def succeeded_runs():
            rc, out, err = n1.ctl("cron", "history", "tick", "--limit", 100)
            self.assertEqual(rc, 0, err)
            return [r for r in out if r["outcome"] == "succeeded"]
        wait_until(lambda: len(succeeded_runs()) >= 2, 20, "two runs of the schedule")
        rc, out, err = n1.ctl("cron", "pause", "tick")
        self.assertEqual(rc, 0, err)

        def at_rest():
            rc, out, err = n1.ctl("cron", "history", "tick", "--limit", 100)
            return rc == 0 and not any(r["outcome"] in ("fired", "dispatched", "queued", "running")
                                       for r in out)
        wait_until(at_rest, 20, "the schedule's runs to end")
        sched_ok = len(succeeded_runs())

        # cache: hits and misses move where the test says
        before = [self.parsed(x) for x in nodes]
        rc, out, err = n1.ctl("cache", "put", "metrics:k", "v")
        self.assertEqual(rc, 0, err)
        rc, out, err = n2.ctl("cache", "get", "metrics:k")
        self.assertEqual(rc, 0, err)
        mid = [self.parsed(x) for x in nodes]
        rc, out, err = n3.ctl("cache", "get", "metrics:absent")
        self.assertEqual(rc, 5, err)  # not found
        after = [self.parsed(x) for x in nodes]

        def moved(a, b, fam):
            return sum(total(y, fam) for y in b) - sum(total(x, fam) for x in a)
        self.assertGreaterEqual(moved(before, mid, "chorus_cache_hits_total"), 1)
        self.assertEqual(moved(mid, after, "chorus_cache_hits_total"), 0)
        self.assertGreaterEqual(moved(mid, after, "chorus_cache_misses_total"), 1)
        self.assertGreaterEqual(sum(value(x, "chorus_cache_entries", cache="default")
                                    for x in after), 1)

        # every node's text, through promtool and the parser
        texts = {}
        for x in nodes:
            # the members settle (every node sees 3 alive) before the read
            wait_until(lambda: value(self.parsed(x), "chorus_members", state="alive") == 3, 15,
                       "%s sees 3 members alive" % x.name)
            texts[x.name] = self.metrics(x)
            self.promtool(texts[x.name])
        fams = {name: parse_metrics(t) for name, t in texts.items()}
        f1 = fams["n1"]

        # tasks by state and handler, counted once, by the node that owns them
        self.assertEqual(value(f1, "chorus_tasks_total", state="succeeded", handler="echo"), 9)
        self.assertEqual(value(f1, "chorus_tasks_total", state="failed", handler="fail"), 1)
        self.assertEqual(sum(total(f, "chorus_tasks_total", handler="echo") for f in fams.values()),
                         9)
        self.assertEqual(sum(total(f, "chorus_tasks_total", state="succeeded", handler="sha256")
                             for f in fams.values()), sched_ok)
        self.assertEqual(value(f1, "chorus_task_run_seconds_count", handler="echo"), 9)
        self.assertEqual(value(f1, "chorus_task_queue_wait_seconds_count", handler="echo"), 9)
        self.assertEqual(value(f1, "chorus_tasks", state="running"), 0)
        self.assertEqual(value(f1, "chorus_pool_workers", pool="default", state="configured"), 2)
        self.assertEqual(value(f1, "chorus_pool_degraded", pool="default"), 0)
        self.assertGreaterEqual(value(f1, "chorus_requests_total", type="submit"), 4)
        # every submit was answered: each one is in the latency histogram
        self.assertEqual(value(f1, "chorus_request_duration_seconds_count", type="submit"),
                         value(f1, "chorus_requests_total", type="submit"))
        self.assertGreaterEqual(value(f1, "chorus_requests_total", type="metrics"), 1)
        self.assertEqual(value(f1, "chorus_node_info", name="n1"), 1)

        # membership, gossip, sessions
        for name, f in fams.items():
            self.assertEqual(value(f, "chorus_members", state="alive"), 3, name)
            self.assertGreater(value(f, "chorus_gossip_messages_total", direction="sent",
                                     type="ping"), 0, name)
            self.assertGreater(total(f, "chorus_sessions", role="node"), 0, name)
            self.assertGreater(value(f, "chorus_journal_bytes", file="db"), 0, name)
            self.assertGreater(value(f, "chorus_journal_commit_seconds_count"), 0, name)

        # the election: one leader, one term, named the same everywhere
        leaders = [name for name, f in fams.items() if value(f, "chorus_raft_is_leader") == 1]
        self.assertEqual(len(leaders), 1, leaders)
        for name, f in fams.items():
            self.assertGreater(value(f, "chorus_raft_term"), 0, name)
            self.assertGreater(value(f, "chorus_raft_commit_index"), 0, name)
            self.assertEqual(value(f, "chorus_raft_leader", leader=leaders[0]), 1, name)
        fires = sum(value(f, "chorus_schedule_fires_total") for f in fams.values())
        self.assertGreaterEqual(fires, sched_ok)
        self.assertEqual(sum(value(f, "chorus_schedule_lateness_seconds_count")
                             for f in fams.values()), fires)


if __name__ == "__main__":
    unittest.main()
