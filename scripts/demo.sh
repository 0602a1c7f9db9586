#!/usr/bin/env bash
# Chorus's main job on embedded defaults: installs what is missing, builds,
# starts a local node (fresh data dir, secret created by the node), runs a
# fan-out of 1,000 sha256 tasks across its workers, shows the results and the
# node's status, then stops the node with SIGTERM (a clean drain).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/deps.sh
bash scripts/build.sh build
port=${CHORUS_DEMO_PORT:-7400}
data=$(mktemp -d /tmp/chorus-demo.XXXXXX)
addr="tcp://127.0.0.1:$port"
build/chorusd --data-dir "$data/node1" --listen "$addr" --name node1 2>"$data/node1.log" &
pid=$!
cleanup() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; echo "node log: $data/node1.log"; }
trap cleanup EXIT
ctl() { build/clusterctl -a "$addr" -k "$data/node1/secret" "$@"; }
# wait (with a deadline) for the node to create its secret and answer
for _ in $(seq 1 100); do
  [ -f "$data/node1/secret" ] && ctl --timeout 1s status >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$data/node1.log"; exit 1; }
  sleep 0.1
done
echo "== node is up at $addr (data: $data/node1)"
echo "== submit one task and wait for it"
ctl submit echo "hello, chorus" --wait
echo "== fan-out: 1,000 sha256 tasks, results in input order (first 5 shown)"
seq 1 1000 | sed 's/^/payload-/' > "$data/payloads.txt"
time ctl submit sha256 --fanout "$data/payloads.txt" > "$data/results.txt"
head -5 "$data/results.txt"
echo "   ... $(grep -c succeeded "$data/results.txt") of 1000 succeeded"
echo "== status"
ctl status
