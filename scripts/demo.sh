#!/usr/bin/env bash
# Chorus's main job on embedded defaults: installs what is missing, builds,
# starts a local 3-node cluster (fresh data dirs, one shared secret, nodes 2
# and 3 join through node 1), runs a fan-out of 1,000 sha256 tasks across it,
# shows the results, who ran what, the cluster's status, events and a few
# metrics, then stops the nodes with SIGTERM (each drains and leaves
# gracefully). Node 1 serves the dashboard and /metrics on loopback
# (http://127.0.0.1:7500/ by default); run from a terminal, the demo keeps
# the cluster up until Enter is pressed, so the dashboard can be looked at.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/deps.sh
bash scripts/build.sh build
base=${CHORUS_DEMO_PORT:-7400}
http_port=${CHORUS_DEMO_HTTP_PORT:-$((base + 100))}
data=$(mktemp -d /tmp/chorus-demo.XXXXXX)
secret="$data/secret"
build/clusterctl keygen "$secret" >/dev/null
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "node logs: $data/node*.log"
}
trap cleanup EXIT
seed="tcp://127.0.0.1:$base"
# chorusd takes settings from CHORUS_* variables too (chorusd --help): none of
# the caller's (a CHORUS_SEEDS, a CHORUS_DATA_DIR left in the shell) may reach
# the demo's nodes, which get all they need as flags
no_chorus_env=()
for v in $(compgen -e); do
  case "$v" in CHORUS_*) no_chorus_env+=(-u "$v") ;; esac
done
for i in 1 2 3; do
  addr="tcp://127.0.0.1:$((base + i - 1))"
  seeds=(); [ "$i" -gt 1 ] && seeds=(--seeds "$seed")
  [ "$i" -eq 1 ] && seeds+=(--http "127.0.0.1:$http_port")
  env "${no_chorus_env[@]}" build/chorusd --name "node$i" --data-dir "$data/node$i" --listen "$addr" --secret "$secret" \
    --gossip-period 200ms "${seeds[@]}" 2>"$data/node$i.log" &
  pids+=($!)
done
ctl() { build/clusterctl -a "$seed" -k "$secret" "$@"; }
# wait (with a deadline) until node1 sees all three members alive
for _ in $(seq 1 100); do
  n=$(ctl --timeout 1s --json members 2>/dev/null | grep -o '"state": *"alive"' | wc -l || true)
  [ "$n" -ge 3 ] && break
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || { cat "$data"/node*.log; exit 1; }; done
  sleep 0.1
done
echo "== a 3-node cluster is up (data: $data)"
ctl members
echo "== submit one task and wait for it"
ctl submit echo "hello, chorus" --wait
echo
echo "== fan-out: 1,000 sha256 tasks across the cluster, results in input order (first 5 shown)"
seq 1 1000 | sed 's/^/payload-/' > "$data/payloads.txt"
time ctl submit sha256 --fanout "$data/payloads.txt" > "$data/results.txt"
head -5 "$data/results.txt"
echo "   ... $(grep -c succeeded "$data/results.txt") of 1000 succeeded"
echo "== who ran them"
ctl --json tasks --limit 1000 | grep -o '"node": *"[^"]*"' | sort | uniq -c
echo "== a cluster-wide schedule: every second, fired once by the elected leader"
ctl cron every tick 1s echo tock
sleep 3.5
ctl cron history tick
echo "== status of node1"
ctl status
echo "== the cluster's recent events, as node1 saw them"
ctl events
echo "== a few of node1's Prometheus metrics (all of them: curl http://127.0.0.1:$http_port/metrics)"
ctl metrics | grep -E '^chorus_(tasks_total|members|raft_is_leader)' | head -12
echo "== dashboard: http://127.0.0.1:$http_port/ (changes need the token: $(ctl http-token))"
if [ -t 0 ] && [ -t 1 ]; then
  read -r -p "press Enter to stop the cluster " _ || true
fi
