"""test_cache_persist.py - the cache's snapshots on real nodes ([cache]
persist; docs/cache.md, "Persistence"). Keys go in and come out through the
RESP listener (a small pipelining client below), in bulk.

1. One node, persist = on: 1,000 keys, 200 with a one-hour TTL, 100 deleted,
   50 that expire while the node is down, a binary and an empty value;
   SIGTERM (the stop snapshot), restart: every live key reads back with its
   value and its remaining TTL, deleted and expired keys are absent, and a
   write after the restart beats the loaded version.
2. persist_interval = 300ms: keys written, a periodic snapshot holding them
   seen in the file (read with python's sqlite3), then kill -9 (no stop
   snapshot): after the restart every one of them is back. A snapshot made
   to look older than the tombstone horizon loads with a warning.
3. A damaged snapshot (pages overwritten; then a file that is not a
   database): the node starts, says why in its log, serves an empty cache,
   keeps the bad file aside byte for byte (cache.db.bad-MS), and writes a
   fresh snapshot at its next stop.
4. Three nodes (R = 3): one stops (its snapshot holds the keys), keys are
   changed, deleted and added while it is down, it restarts from its
   snapshot and catches up by anti-entropy: reads at ONE through it give the
   new values, and still do once the two others are killed (every key then
   answered from its own store).
5. A full disk (root: the snapshot on a 1 MiB tmpfs): a periodic snapshot
   that no longer fits fails with the reason in the log, the previous file
   stays, the node keeps serving; the stop snapshot fails the same way and
   the node still exits 0; the restart loads the previous snapshot.
6. Paths that are not a snapshot's: persist naming the journal is refused
   by the config check, a symbolic link to it and another program's file by
   the start, each left as it was (the journal still opens); two nodes
   cannot share one snapshot file (PATH.lock).
7. FLUSH is not undone: a node stopped (its snapshot holding every key)
   while the cluster is flushed, then restarted from that snapshot, and a
   node SIGSTOPped out of the cluster while it is flushed, then let go: in
   both, every node ends with only the keys written after the FLUSH, and
   stays so over anti-entropy rounds.
8. A snapshot row stamped an hour ahead (a crafted file): left out with a
   warning, and the node's clock not raised to it, so its writes are still
   accepted by its replicas.

Every wait is a condition with a deadline; no fixed sleeps.
"""

import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
import unittest

from harness import NodeTestCase, free_port, keygen, run_cmd, wait_until

PERIOD = "100ms"        # gossip period of the cluster test
PARTITIONS = 271
IO_TIMEOUT_S = 30.0
CONVERGE_S = 60.0


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = b"%d" % a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RespError(str):
    pass


class Resp:
    """One RESP connection; run() pipelines many commands at once."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
        self.buf = b""

    def close(self):
        self.s.close()

    def _fill(self):
        data = self.s.recv(1 << 16)
        if not data:
            raise EOFError("the node closed the connection")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise AssertionError("not a RESP reply: %r" % line)

    def run(self, cmds):
        """Sends every command, then reads one reply each (in order)."""
        self.s.sendall(b"".join(encode(*c) for c in cmds))
        return [self.reply() for _ in cmds]


def file_rows(path):
    """Rows of a snapshot file as sqlite reads it; None when there is no
    file (or not a whole one yet)."""
    if not os.path.exists(path):
        return None
    try:
        db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
        try:
            return db.execute("SELECT count(*) FROM entries").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return None


class PersistCase(NodeTestCase):

    def conf(self, name, text):
        path = os.path.join(self.workdir, "%s.conf" % name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def resp_node(self, name, conf_text, *extra, **kw):
        """A node with its config and a RESP listener; returns (node, port)."""
        port = free_port()
        node = self.new_node("--config", self.conf(name, conf_text), "--resp",
                             "127.0.0.1:%d" % port, *extra, name=name, **kw)
        return node, port

    def run_resp(self, port, cmds, chunk=500):
        """Runs cmds in pipelines of `chunk` on a fresh connection; the
        replies in order."""
        r = Resp(port)
        try:
            out = []
            for i in range(0, len(cmds), chunk):
                out += r.run(cmds[i:i + chunk])
            return out
        finally:
            r.close()

    def get_all(self, port, keys):
        return dict(zip(keys, self.run_resp(port, [("GET", k) for k in keys])))

    def assertAllOk(self, replies, what):
        bad = [r for r in replies if r != "OK" and not isinstance(r, int)]
        self.assertEqual(bad, [], what)

    def log_since_start(self, node):
        return "\n".join(node.log_lines_since_last_start())

    def stats(self, node):
        rc, out, err = node.ctl("cache", "stats", "--cache", "default")
        if rc != 0 or not out:
            return None
        return out[0]

    def refused_start(self, node):
        """Starts node expecting it to refuse: returns its exit code and the
        log of that start."""
        node.start(wait=False)
        node.exit_expected = True
        rc = node.wait_exit(30)
        return rc, self.log_since_start(node)

    def maps_agree(self, nodes):
        total = 0
        for x in nodes:
            st = self.stats(x)
            if not st:
                return False
            total += st.get("partitions_primary", 0)
        return total == PARTITIONS

    def hold_for(self, cond, seconds, what):
        """cond stays true for `seconds` (polled): a property that must not
        change over that many anti-entropy rounds."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.assertTrue(cond(), what)
            time.sleep(0.2)


class TestOneNode(PersistCase):

    def test_a_clean_stop_and_restart_keep_every_live_key(self):
        n, port = self.resp_node("n1", "[cache]\npersist = on\n")
        db = os.path.join(n.data_dir, "cache.db")
        plain = {"k%04d" % i: ("value %d " % i + "x" * (i % 50)).encode() for i in range(1000)}
        ttl = {"t%03d" % i: b"lives an hour %d" % i for i in range(200)}
        deleted = ["d%03d" % i for i in range(100)]
        short = ["s%02d" % i for i in range(50)]
        binary = bytes(range(256)) + b"\r\n\x00"
        cmds = [("SET", k, v) for k, v in plain.items()]
        cmds += [("SET", k, v, "PX", 3600000) for k, v in ttl.items()]
        cmds += [("SET", k, "soon gone") for k in deleted] + [("DEL", k) for k in deleted]
        cmds += [("SET", "binary", binary), ("SET", "empty", "")]
        t_ttl = time.time()
        self.assertAllOk(self.run_resp(port, cmds), "the writes")
        short_ms = 4000
        t_short = time.time()
        self.assertAllOk(self.run_resp(port, [("SET", k, "v", "PX", short_ms) for k in short]),
                         "the short-lived writes")

        self.assertEqual(n.stop(), 0)
        t_stopped = time.time()
        self.assertFalse(os.path.exists(db + ".tmp"))
        log = self.log_since_start(n)
        self.assertRegex(log, r"snapshot of \d+ entries .* written to %s" % db)
        # live keys and tombstones, and the short ones unless they expired
        # before the stop snapshot walked them (a slow machine)
        rows = file_rows(db)
        self.assertTrue(1000 + 200 + 100 + 2 <= rows <= 1000 + 200 + 100 + 2 + 50, rows)

        # the short-lived keys expire while the node is down
        wait_until(lambda: time.time() > t_short + short_ms / 1000.0 + 0.1, 10,
                   "the short-lived keys' expiry to pass")
        n.start()
        log = self.log_since_start(n)
        self.assertIn("loaded 1202 entries and 100 tombstones from snapshot %s" % db, log)
        if t_stopped < t_short + short_ms / 1000.0:
            # all of them were live in the file: loaded as tombstones
            self.assertIn("50 expired meanwhile", log)

        got = self.get_all(port, list(plain))
        self.assertEqual(got, plain)
        got = self.get_all(port, list(ttl))
        self.assertEqual(got, ttl)
        pttls = self.run_resp(port, [("PTTL", k) for k in ttl])
        elapsed_ms = (time.time() - t_ttl) * 1000
        for k, left in zip(ttl, pttls):
            # the absolute expiry was kept: what is left is an hour minus the
            # time since the write, downtime included
            self.assertTrue(3600000 - elapsed_ms - 2000 <= left <= 3600000 - elapsed_ms + 2000,
                            (k, left, elapsed_ms))
        self.assertEqual(self.get_all(port, deleted), {k: None for k in deleted})
        self.assertEqual(self.get_all(port, short), {k: None for k in short})
        self.assertEqual(self.get_all(port, ["binary", "empty"]), {"binary": binary, "empty": b""})
        self.assertEqual(self.run_resp(port, [("DBSIZE",)]), [1202])
        # the clock went past every loaded version: a new write wins
        self.assertEqual(self.run_resp(port, [("SET", "k0001", "after"), ("GET", "k0001")]),
                         ["OK", b"after"])
        self.assertEqual(n.stop(), 0)

    def test_periodic_snapshots_survive_kill_9(self):
        n, port = self.resp_node("n1", "[cache]\npersist = on\npersist_interval = 300ms\n")
        db = os.path.join(n.data_dir, "cache.db")
        keys = {"p%04d" % i: b"periodic %d" % i for i in range(2000)}
        self.assertAllOk(self.run_resp(port, [("SET", k, v) for k, v in keys.items()]),
                         "the writes")
        # a periodic snapshot that holds every key (read from the file itself)
        wait_until(lambda: file_rows(db) == len(keys), 30, "a snapshot with every key")
        n.kill9()
        self.assertNotIn("snapshot of", self.log_since_start(n))  # no stop snapshot
        n.start()
        log = self.log_since_start(n)
        self.assertIn("loaded %d entries" % len(keys), log)
        self.assertEqual(self.get_all(port, list(keys)), keys)
        self.assertEqual(self.run_resp(port, [("DBSIZE",)]), [len(keys)])

        # a snapshot older than the tombstone horizon still loads, with a
        # warning: deletes made elsewhere meanwhile could come back
        self.assertEqual(n.stop(), 0)
        db_conn = sqlite3.connect(db)
        db_conn.execute("UPDATE meta SET value = value - 11 * 60 * 1000 "
                        "WHERE key = 'written_wall_ms'")
        db_conn.commit()
        db_conn.close()
        n.start()
        log = self.log_since_start(n)
        self.assertRegex(log, r"WARN  cache: the snapshot is 6\d\d s old, older than the 600 s "
                              r"tombstone horizon")
        self.assertEqual(self.run_resp(port, [("DBSIZE",)]), [len(keys)])

    def damaged_start(self, n, port, db, bad_bytes):
        """Restarts n on a damaged snapshot; checks it serves an empty cache
        and kept the file aside as it was. Returns the aside file's path."""
        n.start()
        log = self.log_since_start(n)
        self.assertRegex(log, r"ERROR cache: snapshot %s is unusable \(.+\): the caches start "
                              r"empty" % db)
        aside = [f for f in os.listdir(n.data_dir) if f.startswith("cache.db.bad-")]
        self.assertEqual(len(aside), 1, aside)
        aside = os.path.join(n.data_dir, aside[0])
        self.assertIn("the file is kept as %s" % aside, log)
        with open(aside, "rb") as f:
            self.assertEqual(f.read(), bad_bytes)
        self.assertFalse(os.path.exists(db))
        self.assertEqual(self.run_resp(port, [("DBSIZE",), ("GET", "c0001")]), [0, None])
        self.assertTrue(n.running())
        return aside

    def test_a_damaged_snapshot_is_kept_aside_and_the_cache_starts_empty(self):
        n, port = self.resp_node("n1", "[cache]\npersist = on\n")
        db = os.path.join(n.data_dir, "cache.db")
        keys = {"c%04d" % i: b"x" * 300 for i in range(500)}
        self.assertAllOk(self.run_resp(port, [("SET", k, v) for k, v in keys.items()]), "writes")
        self.assertEqual(n.stop(), 0)
        # pages in the middle overwritten (a disk that lost writes)
        with open(db, "r+b") as f:
            f.seek(3 * 4096)
            f.write(b"\x5a" * 8192)
        with open(db, "rb") as f:
            bad = f.read()
        aside = self.damaged_start(n, port, db, bad)

        # the next stop writes a fresh snapshot; the bad file stays as it is
        self.assertEqual(self.run_resp(port, [("SET", "fresh", "1")]), ["OK"])
        self.assertEqual(n.stop(), 0)
        self.assertEqual(file_rows(db), 1)
        with open(aside, "rb") as f:
            self.assertEqual(f.read(), bad)
        os.remove(aside)

        # a file that is not a database at all is not recognisably ours:
        # never moved, never written over; the node does not start
        with open(db, "wb") as f:
            f.write(b"not a database\n" * 100)
        with open(db, "rb") as f:
            bad = f.read()
        rc, log = self.refused_start(n)
        self.assertNotEqual(rc, 0)
        self.assertIn("ERROR cache: [cache] persist: %s is not a Chorus cache snapshot (not a "
                      "sqlite database); it is left as it is and the node does not start" % db,
                      log)
        with open(db, "rb") as f:
            self.assertEqual(f.read(), bad)
        self.assertEqual([f for f in os.listdir(n.data_dir) if f.startswith("cache.db.bad-")],
                         [])
        # moved away by a human: the node starts, empty
        os.rename(db, db + ".notes")
        n.start()
        self.assertEqual(self.run_resp(port, [("DBSIZE",)]), [0])

    def test_paths_that_are_not_a_snapshots_are_refused_and_left_alone(self):
        n, port = self.resp_node("n1", "[cache]\npersist = off\n")
        self.assertAllOk(self.run_resp(port, [("SET", "k", "v")]), "a write")
        identity = re.search(r"node n1 \(([0-9a-f]{32})\)", self.log_since_start(n)).group(1)
        self.assertEqual(n.stop(), 0)
        journal = os.path.join(n.data_dir, "chorus.db")

        # the journal named as the snapshot: refused before anything opens
        conf = self.conf("journal", "[cache]\npersist = %s\n" % journal)
        rc, out, err = self.run_chorusd("--config", conf, "--data-dir", n.data_dir,
                                        "--listen", n.addr)
        self.assertEqual(rc, 2, out + err)
        self.assertIn("[cache] persist = %s is inside the data dir" % journal, out + err)

        # a symbolic link to it, from outside the data dir: refused at start
        link = os.path.join(self.workdir, "link.db")
        os.symlink(journal, link)
        n.args = ["--config", self.conf("link", "[cache]\npersist = %s\n" % link)]
        rc, log = self.refused_start(n)
        self.assertNotEqual(rc, 0)
        self.assertIn("ERROR cache: [cache] persist: %s is a symbolic link" % link, log)

        # another program's file: never moved, never replaced
        notes = os.path.join(self.workdir, "notes.txt")
        with open(notes, "w") as f:
            f.write("not the cache's\n")
        n.args = ["--config", self.conf("notes", "[cache]\npersist = %s\n" % notes)]
        rc, log = self.refused_start(n)
        self.assertNotEqual(rc, 0)
        self.assertIn("%s is not a Chorus cache snapshot (not a sqlite database)" % notes, log)
        with open(notes) as f:
            self.assertEqual(f.read(), "not the cache's\n")
        self.assertEqual([f for f in os.listdir(self.workdir) if ".bad-" in f], [])

        # the journal is where it was, and still the node's: it starts on
        # it with the same identity (a refused start opened it, as any
        # start does before the services, and changed nothing else)
        self.assertTrue(os.path.islink(link))
        self.assertTrue(os.path.isfile(journal) and not os.path.islink(journal))
        self.assertEqual([f for f in os.listdir(n.data_dir) if ".bad-" in f], [])
        n.args = ["--config", self.conf("off", "[cache]\npersist = off\n")]
        n.start()
        self.assertIn("node n1 (%s)" % identity, self.log_since_start(n))

        # two nodes, one snapshot file: the second is refused while the
        # first holds it
        shared = os.path.join(self.workdir, "shared.db")
        n.stop()
        n.args = ["--config", self.conf("shared", "[cache]\npersist = %s\n" % shared),
                  "--resp", "127.0.0.1:%d" % port]
        n.start()
        m = self.new_node("--config", self.conf("shared2", "[cache]\npersist = %s\n" % shared),
                          name="n2", start=False)
        rc, log = self.refused_start(m)
        self.assertNotEqual(rc, 0)
        self.assertIn("%s is in use by another chorusd" % shared, log)
        self.assertTrue(n.running())
        self.assertEqual(n.stop(), 0)
        m.start()  # the file is free once n1 is gone (n1's stop snapshot in it)
        self.assertIn("from snapshot %s" % shared, self.log_since_start(m))


class TestCluster(PersistCase):

    def cluster(self, persist):
        """Three nodes (R = 3: each holds every key), persist as given per
        node; returns the nodes and their RESP ports."""
        secret = keygen(os.path.join(self.workdir, "cluster.secret"))
        common = ["--secret", secret, "--gossip-period", PERIOD]
        nodes, ports = [], []
        for i, mode in enumerate(persist):
            seeds = ["--seeds", nodes[0].addr] if nodes else []
            n, p = self.resp_node("n%d" % (i + 1), "[cache]\npersist = %s\n" % mode, *common,
                                  *seeds, secret=secret)
            nodes.append(n)
            ports.append(p)
        wait_until(lambda: self.maps_agree(nodes), CONVERGE_S, "three nodes in every map")
        return nodes, ports

    def entries(self, node):
        st = self.stats(node)
        return st.get("entries", 0) if st else -1

    def only_after_keys_everywhere(self, nodes, ports, after, flushed):
        """Every node holds exactly the keys written after the FLUSH, and
        none of the flushed ones is readable through any node."""
        if any(self.entries(x) != len(after) for x in nodes):
            return False
        for p in ports:
            got = self.get_all(p, flushed[:50] + list(after))
            if any(got[k] is not None for k in flushed[:50]):
                return False
            if any(got[k] != v for k, v in after.items()):
                return False
        return True

    def test_a_flush_is_not_undone_by_a_node_restarted_from_an_older_snapshot(self):
        (n1, n2, n3), (p1, p2, p3) = self.cluster(["off", "on", "off"])
        keys = {"f%03d" % i: b"before %d" % i for i in range(200)}
        self.assertAllOk(self.run_resp(p1, [("SET", k, v) for k, v in keys.items()]), "writes")
        wait_until(lambda: self.entries(n2) == len(keys), CONVERGE_S, "n2 to hold every key")
        self.assertEqual(n2.stop(), 0)
        self.assertIn("snapshot of %d entries" % len(keys), self.log_since_start(n2))
        wait_until(lambda: self.maps_agree([n1, n3]), CONVERGE_S, "n2 out of the maps")

        self.assertEqual(self.run_resp(p1, [("FLUSHDB",)]), ["OK"])
        after = {"a%02d" % i: b"after %d" % i for i in range(20)}
        self.assertAllOk(self.run_resp(p3, [("SET", k, v) for k, v in after.items()]), "writes")

        n2.start()  # from its snapshot, taken before the FLUSH
        self.assertIn("loaded %d entries" % len(keys), self.log_since_start(n2))
        wait_until(lambda: self.maps_agree([n1, n2, n3]), CONVERGE_S, "n2 back in every map")
        nodes, ports = [n1, n2, n3], [p1, p2, p3]
        wait_until(lambda: self.only_after_keys_everywhere(nodes, ports, after, list(keys)),
                   CONVERGE_S, "only the keys written after the FLUSH, on every node")
        self.assertRegex(self.log_since_start(n2),
                         r"cache default flushed \(hlc \d+, from a peer\): 200 entries dropped")
        # and it stays so over anti-entropy rounds (every 2 s)
        self.hold_for(lambda: all(self.entries(x) == len(after) for x in nodes), 6,
                      "flushed entries came back")
        self.assertEqual(self.run_resp(p2, [("DBSIZE",)]), [len(after)])

        # n2's next snapshot keeps the FLUSH: restarted alone, it still
        # refuses what the FLUSH removed and the others do not bring it
        self.assertEqual(n2.stop(), 0)
        n2.start()
        self.assertIn("loaded %d entries" % len(after), self.log_since_start(n2))

    def test_a_flush_is_not_undone_by_a_node_cut_off_while_it_ran(self):
        (n1, n2, n3), (p1, p2, p3) = self.cluster(["off", "off", "off"])
        keys = {"c%03d" % i: b"before %d" % i for i in range(200)}
        self.assertAllOk(self.run_resp(p1, [("SET", k, v) for k, v in keys.items()]), "writes")
        wait_until(lambda: self.entries(n3) == len(keys), CONVERGE_S, "n3 to hold every key")
        n3.proc.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: self.maps_agree([n1, n2]), CONVERGE_S, "n3 out of the maps")
            self.assertEqual(self.run_resp(p1, [("FLUSHDB",)]), ["OK"])
            after = {"a%02d" % i: b"after %d" % i for i in range(20)}
            self.assertAllOk(self.run_resp(p2, [("SET", k, v) for k, v in after.items()]),
                             "writes")
        finally:
            n3.proc.send_signal(signal.SIGCONT)
        nodes, ports = [n1, n2, n3], [p1, p2, p3]
        wait_until(lambda: self.maps_agree(nodes), CONVERGE_S, "n3 back in every map")
        wait_until(lambda: self.only_after_keys_everywhere(nodes, ports, after, list(keys)),
                   CONVERGE_S, "only the keys written after the FLUSH, on every node")
        self.hold_for(lambda: all(self.entries(x) == len(after) for x in nodes), 6,
                      "flushed entries came back")

    def test_a_snapshot_row_an_hour_ahead_does_not_move_the_clock(self):
        (n1, n2, n3), (p1, p2, p3) = self.cluster(["on", "off", "off"])
        db = os.path.join(n1.data_dir, "cache.db")
        keys = {"h%03d" % i: b"v %d" % i for i in range(30)}
        self.assertAllOk(self.run_resp(p1, [("SET", k, v) for k, v in keys.items()]), "writes")
        wait_until(lambda: self.entries(n1) == len(keys), CONVERGE_S, "n1 to hold every key")
        self.assertEqual(n1.stop(), 0)
        conn = sqlite3.connect(db)
        conn.execute("UPDATE entries SET hlc = hlc + (3600000 << 16) WHERE rowid = 1")
        conn.commit()
        conn.close()
        n1.start()
        log = self.log_since_start(n1)
        self.assertRegex(log, r"WARN  cache: snapshot %s: 1 versions stamped more than 500 ms "
                              r"\(the clock's drift\) ahead of this node's wall clock, up to "
                              r"3[56]\d{5} ms, were left out" % db)
        self.assertIn("loaded %d entries" % (len(keys) - 1), log)
        wait_until(lambda: self.maps_agree([n1, n2, n3]), CONVERGE_S, "n1 back in every map")
        # writes through n1 (a third of them led by n1 itself, stamped by its
        # clock) are accepted by their replicas: QUORUM answers OK
        more = {"m%03d" % i: b"more %d" % i for i in range(60)}
        self.assertAllOk(self.run_resp(p1, [("SET", k, v) for k, v in more.items()]),
                         "writes after the restart")
        wait_until(lambda: self.entries(n2) == len(keys) + len(more), CONVERGE_S,
                   "n2 to hold every key")
        self.assertEqual(self.get_all(p2, list(more)), more)

    def test_a_restarted_node_loads_its_snapshot_and_catches_up(self):
        secret = keygen(os.path.join(self.workdir, "cluster.secret"))
        # ONE everywhere: a primary answers from its own store, so no read
        # repair brings n3 anything; only anti-entropy does
        conf = "[cache]\npersist = %s\n[cache default]\nconsistency = one\n"
        common = ["--secret", secret, "--gossip-period", PERIOD]
        n1, p1 = self.resp_node("n1", conf % "off", *common, secret=secret)
        n2, _ = self.resp_node("n2", conf % "off", *common, "--seeds", n1.addr, secret=secret)
        n3, p3 = self.resp_node("n3", conf % "on", *common, "--seeds", n1.addr, secret=secret)
        db = os.path.join(n3.data_dir, "cache.db")

        def maps_agree(nodes):
            total = 0
            for x in nodes:
                st = self.stats(x)
                if not st:
                    return False
                total += st.get("partitions_primary", 0)
            return total == PARTITIONS

        def n3_entries():
            st = self.stats(n3)
            return st.get("entries", 0) + st.get("tombstones", 0) if st else 0

        wait_until(lambda: maps_agree([n1, n2, n3]), CONVERGE_S, "three nodes in every map")
        old = {"r%03d" % i: b"v1-%d" % i for i in range(300)}
        self.assertAllOk(self.run_resp(p1, [("SET", k, v) for k, v in old.items()]), "writes")
        # R = 3 on three nodes: n3 holds every key
        wait_until(lambda: n3_entries() == len(old), CONVERGE_S, "n3 to hold every key")
        self.assertEqual(n3.stop(), 0)
        self.assertIn("snapshot of %d entries" % len(old), self.log_since_start(n3))
        wait_until(lambda: maps_agree([n1, n2]), CONVERGE_S, "n3 out of the maps")

        # while n3 is down: changed, deleted and new keys
        new = dict(old)
        cmds = []
        for i in range(100):
            k = "r%03d" % i
            new[k] = b"v2-%d" % i
            cmds.append(("SET", k, new[k]))
        for i in range(100, 150):
            k = "r%03d" % i
            new[k] = None
            cmds.append(("DEL", k))
        for i in range(300, 400):
            k = "r%03d" % i
            new[k] = b"v1-%d" % i
            cmds.append(("SET", k, new[k]))
        self.assertAllOk(self.run_resp(p1, cmds), "the writes while n3 is down")

        n3.start()
        self.assertIn("loaded %d entries" % len(old), self.log_since_start(n3))
        wait_until(lambda: maps_agree([n1, n2, n3]), CONVERGE_S, "n3 back in every map")
        # reads at ONE through n3: the keys it leads come from its store
        wait_until(lambda: self.get_all(p3, list(new)) == new, CONVERGE_S,
                   "reads through n3 to give the new values")
        # and with the others gone every key comes from n3's store alone
        n1.kill9()
        n2.kill9()
        wait_until(lambda: (self.stats(n3) or {}).get("partitions_primary") == PARTITIONS,
                   CONVERGE_S, "n3 to lead every partition")
        got = self.get_all(p3, list(new))
        self.assertEqual({k: v for k, v in got.items() if v != new[k]}, {},
                         "keys n3 did not catch up on")


class TestFullDisk(PersistCase):

    TMPFS_BYTES = 1024 * 1024

    def mount_tmpfs(self):
        mnt = os.path.join(self.workdir, "tmpfs")
        os.mkdir(mnt)
        if os.geteuid() != 0:
            self.skipTest("tmpfs cannot be mounted: not root")
        rc, out, err = run_cmd(["mount", "-t", "tmpfs", "-o", "size=%d" % self.TMPFS_BYTES,
                                "tmpfs", mnt], timeout_s=30)
        if rc != 0:
            self.skipTest("tmpfs cannot be mounted: %s" % (err.strip() or out.strip()))
        # registered before the node's cleanup, so it runs after it
        self.addCleanup(lambda: subprocess.run(["umount", "-l", mnt], capture_output=True))
        return mnt

    def test_a_full_disk_keeps_the_previous_snapshot_and_the_node_running(self):
        mnt = self.mount_tmpfs()
        db = os.path.join(mnt, "cache.db")
        n, port = self.resp_node("n1", "[cache]\npersist = %s\npersist_interval = 200ms\n" % db)
        small = {"f%03d" % i: b"small %d" % i for i in range(100)}
        self.assertAllOk(self.run_resp(port, [("SET", k, v) for k, v in small.items()]), "writes")
        wait_until(lambda: file_rows(db) == len(small), 30, "a snapshot of the small keys")
        # 2 MiB of values: no snapshot fits in the 1 MiB file system any more
        big = [("SET", "big%02d" % i, b"b" * 65536) for i in range(32)]
        self.assertAllOk(self.run_resp(port, big), "the big writes")
        wait_until(lambda: "periodic snapshot not written" in self.log_since_start(n), 30,
                   "a periodic snapshot to fail")
        log = self.log_since_start(n)
        self.assertIn("database or disk is full", log)
        self.assertIn("the previous snapshot %s is kept" % db, log)
        self.assertEqual(file_rows(db), len(small))
        # still serving
        self.assertEqual(self.run_resp(port, [("GET", "f001"), ("SET", "more", "1")]),
                         [b"small 1", "OK"])
        self.assertTrue(n.running())

        # the stop snapshot fails the same way; the stop is still clean
        self.assertEqual(n.stop(), 0)
        log = self.log_since_start(n)
        self.assertRegex(log, r"ERROR cache: snapshot not written: .*database or disk is full.*; "
                              r"the previous snapshot %s is kept" % db)
        self.assertFalse(os.path.exists(db + ".tmp"))
        self.assertEqual(file_rows(db), len(small))

        n.start()
        self.assertIn("loaded %d entries" % len(small), self.log_since_start(n))
        self.assertEqual(self.get_all(port, list(small)), small)
        self.assertEqual(self.run_resp(port, [("DBSIZE",)]), [len(small)])


if __name__ == "__main__":
    unittest.main(verbosity=2)
