"""test_cache_batch.py - the cache's gathered peer traffic, through a Redis
client library on three real nodes.

A node gathers, per loop iteration, the requests it forwards to each
primary into one CacheBatch and the replica copies it sends to each replica
into one CacheRepl (docs/cache.md, "Batching"). Pipelined clients make those
batches large. Covered (Python's `redis` library, Debian's python3-redis):
1. 3,000 pipelined SETs through one node, then every key read back,
   pipelined, through each node at QUORUM: every value as written;
2. INCRs pipelined on all three nodes at once: the counters add up exactly;
3. values big enough that one batch's answer would pass its cap (4 MiB):
   the GETs over it are sent again alone, and every value comes back whole;
   replica reads of them (QUORUM) past the replica's answer cap are asked
   again; INCRs in the same pipeline, gathered with those GETs, run once
   (only a GET is ever sent again);
4. a pipeline mixing every gathered operation (SET with EX, EXISTS, TTL,
   EXPIRE, PERSIST, DEL) with those never gathered (GETDEL, SET ... GET):
   each answer is the one its own command asked for, in order.
"""

import os
import sys
import threading
import unittest

from harness import NodeTestCase, free_port, keygen, wait_until

def import_redis():
    """The redis module: this interpreter's, or Debian's python3-redis (which
    scripts/deps.sh installs for /usr/bin/python3, maybe not the interpreter
    running the tests; the library is pure Python)."""
    try:
        import redis as mod
        return mod
    except ImportError:
        pass
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        import redis as mod
        return mod
    except ImportError:
        return None
    finally:
        if sys.path[-1] == "/usr/lib/python3/dist-packages":
            sys.path.pop()


redis = import_redis()
MISSING = None if redis else "no redis module (scripts/deps.sh installs python3-redis)"

PERIOD = "100ms"
PARTITIONS = 271
CONF = """[cache]
value_bytes_max = 6M
"""


@unittest.skipIf(MISSING, MISSING)
class TestCacheBatch(NodeTestCase):

    def setUp(self):
        super().setUp()
        secret = keygen(os.path.join(self.workdir, "cluster.secret"))
        conf = os.path.join(self.workdir, "chorus.conf")
        with open(conf, "w") as f:
            f.write(CONF)
        self.trio, self.ports = [], []
        for i in range(3):
            port = free_port()
            args = ["--secret", secret, "--gossip-period", PERIOD, "--config", conf,
                    "--resp", "127.0.0.1:%d" % port]
            if self.trio:
                args += ["--seeds", self.trio[0].addr]
            self.trio.append(self.new_node(*args, name="n%d" % (i + 1), secret=secret))
            self.ports.append(port)

        def maps_agree():
            led = []
            for x in self.trio:
                rc, out, _ = x.ctl("cache", "stats", "--cache", "default")
                if rc != 0:
                    return False
                led.append(out[0]["partitions_primary"])
            return sum(led) == PARTITIONS and all(0 < k < PARTITIONS for k in led)
        wait_until(maps_agree, 30, "every partition map with three members")
        self.clients = [redis.Redis(host="127.0.0.1", port=p, socket_timeout=30)
                        for p in self.ports]

    def tearDown(self):
        for c in getattr(self, "clients", []):
            c.close()
        super().tearDown()

    def test_pipelined_sets_are_read_back_everywhere(self):
        n = 3000
        p = self.clients[0].pipeline(transaction=False)
        for i in range(n):
            p.set("key:%05d" % i, "value-%d" % i)
        self.assertEqual(p.execute(), [True] * n)
        for c in self.clients:
            p = c.pipeline(transaction=False)
            for i in range(n):
                p.get("key:%05d" % i)
            got = p.execute()
            bad = [(i, v) for i, v in enumerate(got) if v != b"value-%d" % i]
            self.assertEqual(bad, [])
        self.assertEqual(self.clients[2].dbsize(), n)

    def test_pipelined_incrs_on_every_node_add_up(self):
        rounds, keys = 200, 16
        errors = []

        def incr(c):
            try:
                for _ in range(rounds // 50):
                    p = c.pipeline(transaction=False)
                    for _ in range(50):
                        for k in range(keys):
                            p.incr("counter:%d" % k)
                    p.execute()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
        threads = [threading.Thread(target=incr, args=(c,)) for c in self.clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        for c in self.clients:
            got = c.mget(["counter:%d" % k for k in range(keys)])
            self.assertEqual(got, [str(rounds * 3).encode()] * keys)

    def test_big_answers_are_sent_again_alone(self):
        count, size = 16, 600 * 1024       # 9.6 MB of answers
        values = {("big:%d" % i): bytes([i % 251]) * (size - i) for i in range(count)}
        p = self.clients[0].pipeline(transaction=False)
        for k, v in values.items():
            p.set(k, v)
        self.assertEqual(p.execute(), [True] * count)
        for c in self.clients:
            p = c.pipeline(transaction=False)
            for k in values:
                p.get(k)
            got = p.execute()
            for (k, v), g in zip(values.items(), got):
                self.assertEqual(len(g or b""), len(v), k)
                self.assertEqual(g, v, k)

    def test_big_gets_and_incrs_in_one_pipeline_run_once(self):
        count, size = 6, 5 * 1024 * 1024     # 30 MiB of answers, past the 16 MiB frame
        for i in range(count):
            self.assertTrue(self.clients[0].set("huge:%d" % i, bytes([65 + i]) * size))
        counters = ["once:%d" % i for i in range(200)]
        for c in self.clients:
            p = c.pipeline(transaction=False)
            for i in range(count):
                p.get("huge:%d" % i)
            for k in counters:
                p.incr(k)
            got = p.execute()
            for i in range(count):
                self.assertEqual(got[i], bytes([65 + i]) * size, "huge:%d" % i)
        # each node incremented each counter once: 3, never 4 or more
        vals = self.clients[2].mget(counters)
        self.assertEqual(vals, [b"3"] * len(counters))

    def test_a_mixed_pipeline_is_answered_in_order(self):
        c = self.clients[1]
        n = 200
        p = c.pipeline(transaction=False)
        for i in range(n):
            k = "mix:%d" % i
            p.set(k, "a%d" % i, ex=3600)       # gathered
            p.exists(k)                        # gathered
            p.set(k, "b%d" % i, get=True)      # alone: answers the old value
            p.ttl(k)                           # gathered: SET dropped the ttl
            p.expire(k, 100)                   # gathered
            p.persist(k)                       # gathered
            p.getdel(k)                        # alone
            p.delete(k)                        # gathered: already gone
        got = p.execute()
        want = []
        for i in range(n):
            want += [True, 1, b"a%d" % i, -1, True, True, b"b%d" % i, 0]
        self.assertEqual(got, want)
        self.assertEqual(self.clients[0].dbsize(), 0)


if __name__ == "__main__":
    unittest.main()
