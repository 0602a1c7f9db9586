"""test_api.py - the JSON API (docs/http.md, "API objects") and `clusterctl
--json` print the same objects: one schema, made by client/views.c.

Three real nodes; n1 serves HTTP on loopback (`--http 127.0.0.1:PORT`). For
each object the test GETs the API and runs `clusterctl --json` for the same
thing, and compares keys and the values that do not move between the two
looks. Also: a fan-out of 2,000 tasks shows in /api/fanouts and `clusterctl
fanouts` with its progress reaching done == total; a POST cancel with the
token cancels a running task and without it gets 401; cron pause, resume
and trigger by POST change the schedule as `clusterctl cron show` sees it;
/api/cache counts partitions owned adding up to P*R over the nodes; bad ids
and unknown schedules get 400 and 404.

The fan-out listing and `cancel --batch` need no HTTP and always run; the
HTTP cases skip with one line when this chorusd has no --http.
"""

import json
import os
import subprocess
import tempfile
import unittest
import urllib.error
import urllib.request

from harness import (CHORUSD, CLUSTERCTL, EXIT_OK, NodeTestCase, free_port, keygen, run_cmd,
                     task_id, wait_until)

PERIOD = "100ms"
CONVERGE_S = 20.0
FANOUT_TASKS = 2000
PARTITIONS = 271   # the nodes' default [cache] partitions
REPLICAS = 3       # and replicas


def chorusd_has_http():
    p = subprocess.run([CHORUSD, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return b"--http" in p.stdout


def http(method, url, token=None, timeout_s=10):
    """(status, parsed JSON body) of one request."""
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return r.status, json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        body = e.read().decode()
        try:
            return e.code, json.loads(body)
        except ValueError:
            return e.code, body


class ApiCase(NodeTestCase):

    def setUp(self):
        super().setUp()
        self.secret = keygen(os.path.join(self.workdir, "cluster.secret"))
        self.http_port = free_port()
        self.have_http = chorusd_has_http()
        common = ["--secret", self.secret, "--gossip-period", PERIOD]
        first = common + (["--http", "127.0.0.1:%d" % self.http_port] if self.have_http else [])
        self.n1 = self.new_node(*first, name="n1", secret=self.secret)
        self.n2 = self.new_node(*common, "--seeds", self.n1.addr, name="n2", secret=self.secret)
        self.n3 = self.new_node(*common, "--seeds", self.n1.addr, name="n3", secret=self.secret)
        self.all = [self.n1, self.n2, self.n3]
        wait_until(lambda: all(len(x.members()) == 3 and
                               all(m["state"] == "alive" for m in x.members().values())
                               for x in self.all), CONVERGE_S, "three alive members everywhere")
        self.base = "http://127.0.0.1:%d" % self.http_port

    def need_http(self):
        if not self.have_http:
            self.skipTest("this chorusd has no --http (the HTTP service is not built in)")

    def ctl(self, *args, node=None):
        rc, out, err = (node or self.n1).ctl(*args)
        self.assertEqual(rc, EXIT_OK, "clusterctl %r: %s" % (args, err))
        return out

    def token(self):
        rc, out, err = self.n1.ctl("http-token", json=False)
        if rc != 0:
            self.skipTest("no `clusterctl http-token` in this build: %s" % err.strip())
        return out.strip()

    def fanout(self, n, handler="echo", extra=()):
        """Starts a fan-out of n tasks through n1; returns (process, batch id)."""
        path = os.path.join(self.workdir, "lines-%d" % n)
        with open(path, "w") as f:
            f.write("".join("%d\n" % i for i in range(n)))
        cmd = [CLUSTERCTL, "-a", self.n1.addr, "-k", self.secret, "--json", "submit", handler,
               "--fanout", path] + list(extra)
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        return p


class TestFanoutsCli(ApiCase):
    """Needs no HTTP."""

    def test_a_fanout_is_listed_with_progress_to_the_end(self):
        p = self.fanout(FANOUT_TASKS)
        _, err = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 0, err)
        out = self.ctl("fanouts")
        self.assertEqual(len(out), 1, out)
        b = out[0]
        self.assertEqual((b["total"], b["done"], b["succeeded"], b["state"], b["handler"]),
                         (FANOUT_TASKS, FANOUT_TASKS, FANOUT_TASKS, "done", "echo"))
        self.assertEqual((b["running"], b["queued"], b["failed"]), (0, 0, 0))
        self.assertGreaterEqual(b["finished_ms"], b["submitted_ms"])
        # the other nodes coordinate none
        self.assertEqual(self.ctl("fanouts", node=self.n2), [])
        rc, text, err = self.n1.ctl("fanouts", json=False)
        self.assertEqual(rc, 0, err)
        self.assertIn("done", text)

    def test_cancel_batch_cancels_the_rest(self):
        p = self.fanout(40, handler="sleep", extra=["--max-concurrency", "1"])
        wait_until(lambda: any(b["state"] == "running" for b in self.ctl("fanouts")), 20,
                   "the fan-out listed as running")
        bid = self.ctl("fanouts")[0]["batch_id"]
        out = self.ctl("cancel", "--batch", bid)
        self.assertEqual(out["batch_id"], bid)
        self.assertGreater(out["cancelled"], 0)
        wait_until(lambda: self.ctl("fanouts")[0]["state"] == "cancelled", 30,
                   "the fan-out ends cancelled")
        self.assertGreater(self.ctl("fanouts")[0]["cancelled"], 0)
        p.communicate(timeout=30)


class TestApi(ApiCase):

    def get(self, path):
        status, body = http("GET", self.base + path)
        self.assertEqual(status, 200, (path, body))
        return body

    def setUp(self):
        super().setUp()
        self.need_http()

    def test_status_and_members_are_clusterctl_s(self):
        api, cli = self.get("/api/status"), self.ctl("status")
        self.assertEqual(sorted(api), sorted(cli))
        for k in ("node_id", "name", "version", "listen", "started_ms", "raft_voters"):
            self.assertEqual(api[k], cli[k], k)
        api, cli = self.get("/api/members"), self.ctl("members")
        self.assertEqual(sorted(m["name"] for m in api), ["n1", "n2", "n3"])
        key = lambda m: m["name"]
        for a, c in zip(sorted(api, key=key), sorted(cli, key=key)):
            self.assertEqual(sorted(a), sorted(c))
            for k in ("id", "name", "addr", "tags", "self"):
                self.assertEqual(a[k], c[k], k)

    def test_tasks_are_clusterctl_s(self):
        tids = [task_id(self.n1.submit("echo", "--wait", payload="x%d" % i)) for i in range(3)]
        api, cli = self.get("/api/tasks?limit=2"), self.ctl("tasks", "--limit", "2")
        self.assertEqual(api, cli)
        self.assertEqual([t["task_id"] for t in api], sorted(tids, reverse=True)[:2])
        self.assertEqual(self.get("/api/tasks?state=failed"), [])
        for bad in ("/api/tasks?limit=x", "/api/tasks?limit=0", "/api/tasks?state=sleepy"):
            status, body = http("GET", self.base + bad)
            self.assertEqual(status, 400, (bad, body))
            self.assertIn("error", body)

    def test_a_fanout_shows_with_progress_reaching_the_total(self):
        p = self.fanout(FANOUT_TASKS)
        seen_running = []

        def done():
            fo = self.get("/api/fanouts")
            if fo and fo[0]["state"] == "running":
                seen_running.append(fo[0]["done"])
            return len(fo) == 1 and fo[0]["done"] == fo[0]["total"] == FANOUT_TASKS and \
                fo[0]["state"] == "done"
        wait_until(done, 120, "the fan-out done in /api/fanouts")
        p.communicate(timeout=30)
        self.assertEqual(self.get("/api/fanouts"), self.ctl("fanouts"))
        self.assertEqual(self.get("/api/fanouts?limit=1"), self.ctl("fanouts", "--limit", "1"))

    def test_cancel_needs_the_token_and_cancels(self):
        tid = task_id(self.n1.submit("sleep", payload="60000"))
        wait_until(lambda: self.n1.task(tid)["state"] == "running", 20, "the task running")
        status, body = http("POST", "%s/api/tasks/%d/cancel" % (self.base, tid))
        self.assertEqual(status, 401, body)
        self.assertEqual(self.n1.task(tid)["state"], "running")
        token = self.token()
        status, body = http("POST", "%s/api/tasks/%d/cancel" % (self.base, tid), token=token)
        self.assertEqual(status, 200, body)
        self.assertEqual(sorted(body), ["state", "task_id"])
        self.assertEqual(body["task_id"], tid)
        wait_until(lambda: self.n1.task(tid)["state"] == "cancelled", 20, "the task cancelled")
        # the same object as clusterctl's (cancelling again changes nothing)
        cli = self.ctl("cancel", tid)
        status, api = http("POST", "%s/api/tasks/%d/cancel" % (self.base, tid), token=token)
        self.assertEqual((status, api), (200, cli))
        for bad, want in (("/api/tasks/NOTANUMBER/cancel", 400), ("/api/tasks/0/cancel", 400),
                          ("/api/tasks/99999999/cancel", 404),
                          ("/api/fanouts/x/cancel", 400), ("/api/fanouts/424242/cancel", 404)):
            status, body = http("POST", self.base + bad, token=token)
            self.assertEqual(status, want, (bad, body))

    def test_schedules_pause_resume_trigger(self):
        rc, out, err = self.n1.ctl("cron", "every", "tick", "1h", "echo", "hi")
        self.assertEqual(rc, 0, err)
        api, cli = self.get("/api/schedules"), self.ctl("cron", "list")
        self.assertEqual(api, cli)
        self.assertEqual(self.get("/api/schedules/tick"), self.ctl("cron", "show", "tick"))
        token = self.token()
        status, body = http("POST", self.base + "/api/schedules/tick/pause")
        self.assertEqual(status, 401, body)
        status, body = http("POST", self.base + "/api/schedules/tick/pause", token=token)
        self.assertEqual(status, 200, body)
        self.assertTrue(body["paused"])
        self.assertTrue(self.ctl("cron", "show", "tick")["paused"])
        status, body = http("POST", self.base + "/api/schedules/tick/resume", token=token)
        self.assertEqual(status, 200, body)
        self.assertFalse(self.ctl("cron", "show", "tick")["paused"])
        status, body = http("POST", self.base + "/api/schedules/tick/trigger", token=token)
        self.assertEqual(status, 200, body)
        self.assertIn("history", body)
        wait_until(lambda: any(r["why"] == "triggered"
                               for r in self.ctl("cron", "show", "tick")["history"]), 30,
                   "the triggered run in the history")
        for path, want in (("/api/schedules/nope", 404), ("/api/schedules/bad%20name", 400)):
            status, body = http("GET", self.base + path)
            self.assertEqual(status, want, (path, body))
        status, body = http("POST", self.base + "/api/schedules/nope/pause", token=token)
        self.assertEqual(status, 404, body)

    def test_cache_partitions_add_up(self):
        api = self.get("/api/cache")
        cli = self.ctl("cache", "stats")
        self.assertEqual([sorted(s) for s in api["stats"]], [sorted(s) for s in cli])
        self.assertEqual((api["partitions"]["partitions"], api["partitions"]["replicas"]),
                         (PARTITIONS, REPLICAS))

        def owned_sum():
            total = 0
            for x in self.all:
                st = self.ctl("cache", "stats", "--cache", "default", node=x)[0]
                total += st["partitions_primary"] + st["partitions_replica"]
            return total
        wait_until(lambda: owned_sum() == PARTITIONS * REPLICAS, 30,
                   "partitions owned adding up to P*R")
        self.assertEqual(self.get("/api/cache")["partitions"]["owned"],
                         self.ctl("cache", "stats", "--cache", "default")[0]["partitions_primary"] +
                         self.ctl("cache", "stats", "--cache", "default")[0]["partitions_replica"])

        # the map: one schema with `clusterctl --json cache partitions`,
        # P partitions of R distinct owners, every member owning some, and
        # the node's own count matching the map
        def same_map():
            api = self.get("/api/cache")["partitions"]
            cli = self.ctl("cache", "partitions")["partitions"]
            return api if api == cli else None
        part = wait_until(same_map, 30, "the API's map equal to clusterctl's")
        self.assertEqual(len(part["map"]), PARTITIONS)
        names = set()
        for owners in part["map"]:
            self.assertEqual(len(owners), REPLICAS)
            self.assertEqual(len(set(owners)), REPLICAS, owners)
            names.update(owners)
        self.assertEqual(names, {"n1", "n2", "n3"})
        self.assertEqual(sum(o[0] == "n1" for o in part["map"]), part["primary"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
