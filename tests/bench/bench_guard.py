#!/usr/bin/env python3
"""bench_guard.py - a legitimate client's submit-and-await latency while an
outsider floods the node (issue #9: "Secure links"), beside the same
client's latency on a quiet node, measured in one run.

The flood, bounded in time (--seconds), all on loopback:
  - replayed HELLOs: one HELLO made with the key (captured: chorus_frametool
    hello-dump) sent again and again from 127.0.0.4;
  - data frames with made-up session ids, never reading answers, from
    127.0.0.2 (tests/integration/attack.py);
  - garbage frames from 127.0.0.3.
The client: chorus_frametool hammer N (sequential ch_submit_await of a small
echo), which prints p50 and p99. Target: flood p99 <= 3x quiet p99.

    python3 tests/bench/bench_guard.py [--build DIR] [--seconds 8] [--calls 2000]

Prints a table; exit 0 when the run completed (targets are reported, not
enforced), 1 when a step failed.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import attack  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hammer(frametool, addr, secret, calls):
    p = subprocess.run([frametool, addr, secret, "hammer", str(calls)], capture_output=True,
                       text=True, timeout=600)
    m = re.search(r"ok (\d+) .*slowest call (\d+) ms, p50 (\d+) us, p99 (\d+) us", p.stdout)
    if p.returncode != 0 or not m:
        raise RuntimeError("hammer failed: %s %s" % (p.stdout[-2000:], p.stderr[-2000:]))
    return {"slowest_ms": int(m.group(2)), "p50_us": int(m.group(3)), "p99_us": int(m.group(4))}


def garbage_flood(port, seconds, src="127.0.0.3"):
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            s = attack.sp_connect(port, src)
        except OSError:
            time.sleep(0.05)
            continue
        try:
            while time.monotonic() < end:
                s.settimeout(max(0.05, end - time.monotonic()))
                s.sendall(b"".join(attack.sp_message(os.urandom(40)) for _ in range(64)))
                sent += 64
        except OSError:
            pass
        finally:
            s.close()
    return sent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "..", "build"))
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--calls", type=int, default=2000)
    a = ap.parse_args()
    chorusd = os.path.join(a.build, "chorusd")
    frametool = os.path.join(a.build, "chorus_frametool")
    clusterctl = os.path.join(a.build, "clusterctl")
    tmp = tempfile.mkdtemp(prefix="bench_guard.")
    port = free_port()
    addr = "tcp://127.0.0.1:%d" % port
    data = os.path.join(tmp, "data")
    log = open(os.path.join(tmp, "node.log"), "wb")
    node = subprocess.Popen([chorusd, "--data-dir", data, "--listen", addr, "--workers", "2"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    secret = os.path.join(data, "secret")
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(secret) or subprocess.run(
                [clusterctl, "-a", addr, "-k", secret, "status"], capture_output=True).returncode:
            if time.monotonic() > deadline or node.poll() is not None:
                raise RuntimeError("node did not start")
            time.sleep(0.1)
        hammer(frametool, addr, secret, 200)  # warm-up
        quiet = hammer(frametool, addr, secret, a.calls)
        stop = time.monotonic() + a.seconds
        counts = {}

        hello = bytes.fromhex(subprocess.run([frametool, addr, secret, "hello-dump"],
                                             capture_output=True, text=True).stdout.strip())

        def hellos():
            n = 0
            while time.monotonic() < stop:
                try:
                    s = attack.sp_connect(port, "127.0.0.4")
                except OSError:
                    time.sleep(0.05)
                    continue
                try:
                    while time.monotonic() < stop:
                        s.settimeout(max(0.05, stop - time.monotonic()))
                        s.sendall(b"".join(attack.sp_message(hello) for _ in range(32)))
                        n += 32
                except OSError:
                    pass
                finally:
                    s.close()
            counts["hellos"] = n

        def unknown():
            counts["unknown"], counts["conns"] = attack.stream_unknown_sessions(port, a.seconds)

        def garbage():
            counts["garbage"] = garbage_flood(port, a.seconds)
        threads = [threading.Thread(target=f) for f in (hellos, unknown, garbage)]
        for t in threads:
            t.start()
        time.sleep(0.5)  # the flood is under way
        flood = hammer(frametool, addr, secret, a.calls)
        for t in threads:
            t.join(120)
        st = subprocess.run([clusterctl, "-a", addr, "-k", secret, "--json", "status"],
                            capture_output=True, text=True).stdout
        ratio = flood["p99_us"] / max(1, quiet["p99_us"])
        print("bench_guard: %d sequential submit+await calls, flood of %.0f s" %
              (a.calls, a.seconds))
        print("| figure | quiet | during the flood | ratio |")
        print("|---|---|---|---|")
        print("| p50 | %d us | %d us | %.2fx |" % (quiet["p50_us"], flood["p50_us"],
                                                 flood["p50_us"] / max(1, quiet["p50_us"])))
        print("| p99 | %d us | %d us | %.2fx (target <= 3x: %s) |" %
              (quiet["p99_us"], flood["p99_us"], ratio, "MET" if ratio <= 3 else "MISSED"))
        print("| slowest | %d ms | %d ms | |" % (quiet["slowest_ms"], flood["slowest_ms"]))
        print("flood sent: %d replayed HELLOs, %d unknown-session frames over %d connections, "
              "%d garbage frames" % (counts.get("hellos", 0), counts.get("unknown", 0),
                                     counts.get("conns", 0), counts.get("garbage", 0)))
        try:
            import json
            for p in json.loads(st).get("peers", []):
                print("peer %s: %s" % (p["peer"], {k: v for k, v in p.items()
                                                   if k != "peer" and v}))
        except ValueError:
            pass
        return 0
    except Exception as e:  # noqa: BLE001
        print("bench_guard: %s" % e, file=sys.stderr)
        return 1
    finally:
        try:
            os.killpg(node.pid, signal.SIGTERM)
            node.wait(20)
        except Exception:  # noqa: BLE001
            os.killpg(node.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
