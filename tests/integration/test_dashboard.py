"""test_dashboard.py - the web dashboard (node/web/, served by `chorusd
--http`) in a real headless browser against a 3-node cluster (issue #14,
sections 2 and 4).

Debian's `chromium` and `chromium-driver`, driven by selenium (Debian's
python3-selenium: scripts/deps.sh installs all three; the library is pure
Python, so an interpreter other than /usr/bin/python3 finds it in
/usr/lib/python3/dist-packages, as the redis tests do). One test, in steps:

1. n1 (with `--http 127.0.0.1:PORT`), n2 and n3 seeded by n1, one secret;
   the page loads and shows the three members, each with state alive, and
   the node's name in the header;
2. a fan-out of 500 `sleep` tasks of 20 ms (`clusterctl submit sleep
   --fanout`), running in the background: the page's progress for that
   batch (its row's data-progress) reaches 100 and its state done;
3. a long exec task (/bin/sleep 60, allowed with --exec-allow): its Cancel
   button is disabled without a token (and says why); the token from
   `clusterctl http-token` is entered in the page, the button is enabled,
   a click cancels it: `clusterctl --json wait ID` says cancelled;
4. a schedule (`cron every`, 1 h) shows with its next fire time; schedules
   named `constructor` and `__proto__` show with their history closed;
5. n3 stops: the events panel shows a member event naming n3, and the
   members table shows n3 no longer alive;
6. the browser's console has no errors (SEVERE entries); a screenshot is
   saved as BUILD_DIR/artifacts/dashboard.png and its path printed.

Without a browser (no chromium, no chromedriver, no selenium) it prints one
line `test_dashboard: skipped: REASON` and exits 77 (ctest's
SKIP_RETURN_CODE, CMakeLists.txt). Every wait has a deadline.
"""

import os
import re
import shutil
import subprocess
import sys
import time
import unittest

from harness import (BUILD_DIR, CLUSTERCTL, NodeTestCase, keygen, run_cmd, task_id,
                     wait_until)

EXIT_SKIPPED = 77
CHROMIUM_NAMES = ("chromium", "chromium-browser")
DRIVER_NAMES = ("chromedriver",)
DEBIAN_DIST = "/usr/lib/python3/dist-packages"
PERIOD = "200ms"
FANOUT_TASKS = 500
FANOUT_TASK_MS = 20
PAGE_S = 30.0          # deadline for what the page shows (it polls every 2 s)
ARTIFACT = os.path.join(BUILD_DIR, "artifacts", "dashboard.png")


def import_selenium():
    """selenium's webdriver: this interpreter's, or Debian's
    python3-selenium. None when neither imports."""
    try:
        from selenium import webdriver  # noqa: F401
        return sys.modules["selenium.webdriver"]
    except ImportError:
        pass
    if os.path.isdir(DEBIAN_DIST) and DEBIAN_DIST not in sys.path:
        sys.path.append(DEBIAN_DIST)
    try:
        from selenium import webdriver  # noqa: F401
        return sys.modules["selenium.webdriver"]
    except ImportError:
        return None


def which_any(names):
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    return None


def browser_missing():
    """Why no browser can be driven here (one line), or None."""
    if not which_any(CHROMIUM_NAMES):
        return "no chromium (scripts/deps.sh installs Debian's chromium)"
    if not which_any(DRIVER_NAMES):
        return "no chromedriver (scripts/deps.sh installs Debian's chromium-driver)"
    if import_selenium() is None:
        return "no selenium module (scripts/deps.sh installs Debian's python3-selenium)"
    return None


class TestDashboard(NodeTestCase):

    def setUp(self):
        super().setUp()
        self.secret = keygen(os.path.join(self.workdir, "cluster.secret"))
        self.driver = None

    # ---- the cluster ----

    def cluster(self):
        from harness import free_port
        self.http_port = free_port()
        common = ["--secret", self.secret, "--gossip-period", PERIOD, "--workers", "2",
                  "--exec-allow", "/bin/sleep"]
        n1 = self.new_node(*(common + ["--http", "127.0.0.1:%d" % self.http_port]),
                           name="n1", secret=self.secret)
        others = [self.new_node(*(common + ["--seeds", n1.addr]), name=n, secret=self.secret,
                                start=False) for n in ("n2", "n3")]
        for n in others:
            n.start(wait=False)
        for n in others:
            n.wait_ready()
        nodes = [n1] + others
        names = {n.name for n in nodes}

        def converged():
            for n in nodes:
                view = n.members()
                if {k for k, m in view.items() if m.get("state") == "alive"} != names:
                    return None
            return True
        wait_until(converged, 30, "3 members alive in every view")
        return nodes

    # ---- the browser ----

    def start_browser(self):
        webdriver = import_selenium()
        from selenium.webdriver.chrome.service import Service
        opts = webdriver.ChromeOptions()
        opts.binary_location = which_any(CHROMIUM_NAMES)
        # --no-sandbox: tests run as root, where chromium's sandbox refuses
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1400,1200", "--no-first-run", "--disable-extensions",
                  "--user-data-dir=" + os.path.join(self.workdir, "chromium-profile")):
            opts.add_argument(a)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(which_any(DRIVER_NAMES),
                          log_path=os.path.join(self.workdir, "chromedriver.log"))
        self.driver = webdriver.Chrome(service=service, options=opts)
        self.addCleanup(self.driver.quit)
        self.driver.set_page_load_timeout(30)
        self.console = []

    def page(self, script, *args):
        """Runs script in the page; returns its value."""
        return self.driver.execute_script(script, *args)

    def collect_console(self):
        """The browser's console entries since the last call (kept)."""
        got = self.driver.get_log("browser")
        self.console.extend(got)
        return got

    def wait_page(self, script, what, timeout_s=PAGE_S, *args):
        """Polls a script in the page until it returns something truthy."""
        return wait_until(lambda: self.page(script, *args), timeout_s, what, interval_s=0.2)

    # ---- steps ----

    def check_members(self):
        got = self.wait_page("""
            var rows = document.querySelectorAll('#members tr[data-member]');
            var out = {};
            rows.forEach(function (r) { out[r.dataset.member] = r.dataset.state; });
            return Object.keys(out).length === 3 &&
                Object.keys(out).every(function (k) { return out[k] === 'alive'; }) ? out : null;
            """, "the page showing 3 members alive")
        self.assertEqual(set(got), {"n1", "n2", "n3"})
        self.wait_page("return document.getElementById('node-name').textContent === 'n1'",
                       "the node's name in the header")
        size = self.page("return document.getElementById('cluster-size').textContent")
        self.assertIn("3 alive of 3", size)

    def start_fanout(self, node):
        path = os.path.join(self.workdir, "sleeps.txt")
        with open(path, "w") as f:
            f.write(("%d\n" % FANOUT_TASK_MS) * FANOUT_TASKS)
        err_path = os.path.join(self.workdir, "fanout.err")
        out = open(os.path.join(self.workdir, "fanout.out"), "wb")
        err = open(err_path, "wb")
        proc = subprocess.Popen([CLUSTERCTL, "-a", node.addr, "-k", self.secret, "--timeout",
                                 "60s", "submit", "sleep", "--fanout", path],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        out.close()
        err.close()
        self.addCleanup(lambda: proc.poll() is None and proc.kill())

        def batch():
            with open(err_path) as f:
                m = re.search(r"batch (\d+)", f.read())
            return int(m.group(1)) if m else None
        bid = wait_until(batch, 30, "the fan-out's batch id on clusterctl's stderr")
        return proc, bid

    def check_fanout(self, proc, bid):
        seen = []

        def progress():
            p = self.page("""
                var r = document.querySelector('#fanouts tr[data-fanout-id="' + arguments[0] + '"]');
                return r ? [Number(r.dataset.progress), r.dataset.state] : null;""", str(bid))
            if p and (not seen or seen[-1] != p[0]):
                seen.append(p[0])
            return p if p and p[0] == 100 and p[1] == "done" else None
        wait_until(progress, 60, "fan-out %d at 100%% and done on the page" % bid,
                   interval_s=0.2)
        rc = proc.wait(timeout=60)
        self.assertEqual(rc, 0, "the fan-out's clusterctl exited %s" % rc)
        text = self.page("""return document.querySelector(
            '#fanouts tr[data-fanout-id="' + arguments[0] + '"]').cells[4].textContent""", str(bid))
        self.assertIn("%d / %d" % (FANOUT_TASKS, FANOUT_TASKS), text)
        return seen

    def check_cancel(self, n1):
        out = n1.submit("exec", "--arg", "/bin/sleep", "--arg", "60")
        tid = task_id(out)
        # the row, running, with a Cancel button that needs the token first
        sel = '#tasks tr[data-task-id="%d"]' % tid
        self.wait_page("var r = document.querySelector(arguments[0]); "
                       "return r && r.dataset.state === 'running'",
                       "task %d running on the page" % tid, PAGE_S, sel)
        b = self.driver.find_element("css selector", sel + " button[data-action=cancel-task]")
        self.assertTrue(b.is_displayed())
        self.assertFalse(b.is_enabled(), "Cancel is enabled without a token")
        self.assertIn("token", b.get_attribute("title"))
        # a wrong token is refused by /api/auth: still read only
        tok = self.driver.find_element("id", "token")
        tok.send_keys("00" * 32)
        self.driver.find_element("id", "token-save").click()
        self.wait_page("return document.getElementById('auth-state').textContent"
                       ".indexOf('not accepted') >= 0", "a wrong token not accepted")
        self.assertFalse(b.is_enabled())
        # the real token
        rc, token, err = run_cmd([CLUSTERCTL, "-k", self.secret, "http-token"])
        self.assertEqual(rc, 0, "clusterctl http-token: %s" % err)
        token = token.strip()
        self.assertRegex(token, r"^[0-9a-f]{64}$")
        tok.clear()
        tok.send_keys(token)
        self.driver.find_element("id", "token-save").click()
        self.wait_page("return document.getElementById('auth-state').dataset.write === 'true'",
                       "the token accepted by the page")
        wait_until(b.is_enabled, 10, "the Cancel button enabled")
        b.click()
        rc, res, err = n1.ctl("wait", tid, "--timeout", "30s", timeout_s=40)
        self.assertEqual(res.get("state") if isinstance(res, dict) else res, "cancelled",
                         "task %d after the page's Cancel: rc=%s %r %s" % (tid, rc, res, err))
        self.wait_page("var r = document.querySelector(arguments[0]); "
                       "return r && r.dataset.state === 'cancelled'",
                       "task %d shown cancelled" % tid, PAGE_S, sel)
        self.wait_page("return document.getElementById('action-status').textContent"
                       ".indexOf('done') >= 0", "the page saying the cancel was done")
        return tid

    def check_schedule(self, n1):
        rc, out, err = n1.ctl("cron", "every", "dash-tick", "1h", "echo", "x")
        self.assertEqual(rc, 0, "cron every: %r %s" % (out, err))
        rc, shown, err = n1.ctl("cron", "show", "dash-tick")
        self.assertEqual(rc, 0, err)
        nxt = self.wait_page("""
            var r = document.querySelector('#schedules tr[data-schedule="dash-tick"]');
            return r && r.dataset.next ? [r.dataset.next, r.cells[3].textContent,
                                          r.dataset.paused] : null;""",
                             "schedule dash-tick with its next fire time")
        self.assertEqual(nxt[0], shown["next"])
        self.assertIn(shown["next"], nxt[1])
        self.assertEqual(nxt[2], "false")
        # names that are also properties of every JavaScript object: their
        # history stays closed until asked for (it was shown at once,
        # empty, and __proto__'s could not be closed)
        for name in ("constructor", "__proto__"):
            rc, out, err = n1.ctl("cron", "every", name, "1h", "echo", "x")
            self.assertEqual(rc, 0, "cron every %s: %r %s" % (name, out, err))
        rows = self.wait_page("""
            var rows = document.querySelectorAll('#schedules tbody tr');
            var keys = Array.prototype.map.call(rows, function (r) { return r.dataset.key; });
            return keys.indexOf('s:constructor') >= 0 && keys.indexOf('s:__proto__') >= 0
                ? keys : null;""", "the schedules constructor and __proto__")
        self.assertEqual([k for k in rows if k.startswith("h:")], [], rows)

    def check_member_event(self, n3):
        n3.stop()
        ev = self.wait_page("""
            var li = Array.prototype.slice.call(document.querySelectorAll('#events li'));
            var hit = li.filter(function (e) {
                return e.dataset.kind.indexOf('member') === 0 && e.textContent.indexOf('n3') >= 0;
            })[0];
            return hit ? hit.textContent : null;""", "a member event about n3 in the events panel",
                            60)
        state = self.wait_page("""
            var r = document.querySelector('#members tr[data-member="n3"]');
            return r && r.dataset.state !== 'alive' ? r.dataset.state : null;""",
                               "n3 no longer alive in the members table", 60)
        return ev, state

    def save_screenshot(self):
        os.makedirs(os.path.dirname(ARTIFACT), exist_ok=True)
        self.assertTrue(self.driver.save_screenshot(ARTIFACT), "screenshot not written")
        self.assertGreater(os.path.getsize(ARTIFACT), 1000)
        print("test_dashboard: screenshot %s" % ARTIFACT, file=sys.stderr)

    def check_console(self):
        self.collect_console()
        bad = [e for e in self.console if e.get("level") == "SEVERE"]
        self.assertEqual(bad, [], "errors in the browser's console: %r" % bad)

    # ---- the test ----

    def test_dashboard_in_headless_chromium(self):
        n1, n2, n3 = self.cluster()
        self.start_browser()
        url = "http://127.0.0.1:%d/" % self.http_port
        self.driver.get(url)
        self.assertIn("Chorus", self.driver.title)
        self.check_members()

        proc, bid = self.start_fanout(n1)
        seen = self.check_fanout(proc, bid)
        tid = self.check_cancel(n1)
        self.check_schedule(n1)
        ev, n3_state = self.check_member_event(n3)
        self.wait_page("return document.getElementById('banner').hidden", "no unreachable banner")
        self.save_screenshot()
        self.check_console()
        print("test_dashboard: members ok; fan-out %d progress seen %s; task %d cancelled from "
              "the page; schedule shown; event %r; n3 %s" % (bid, seen, tid, ev.strip()[:120],
                                                            n3_state), file=sys.stderr)


if __name__ == "__main__":
    why = browser_missing()
    if why:
        print("test_dashboard: skipped: %s" % why)
        sys.exit(EXIT_SKIPPED)
    result = unittest.main(verbosity=2, exit=False).result
    sys.exit(0 if result.wasSuccessful() else 1)
