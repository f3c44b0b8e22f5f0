#!/usr/bin/env bash
# BENCH.md scenario 'cluster': the same fan-out load through 2 relay replicas
# on a 3-node NATS cluster, 1 relay on the cluster, 1 relay on 1 NATS node,
# and 1 relay on its embedded broker, in one run, at two rates.
set -euo pipefail
cd "$(dirname "$0")/../.."
rates=${CLUSTER_RATES:-"250 1000"}
echo "## cluster"
echo
echo "The same load in four shapes, one after the other: 2 robot accounts publish session.progress events (QoS 1) over MQTT to 10 sessions; 20 WebSocket clients per session room (200), spread evenly over the relays; 15 s measured, then 2 s to drain. NATS 2.9 (Debian), each relay with its JetStream history on. Everything shares this machine's 2 cores (3 nats-server nodes, up to 2 relays, the generator), so the rows compare shapes at a fixed load rather than show what more machines would add. \`bash scripts/bench/cluster.sh\` ($(date -u '+%Y-%m-%d %H:%M') UTC)."
for rate in $rates; do
  out=$(mktemp)
  CLUSTER_RATE=$rate CLUSTER_OUT=$out CGO_ENABLED=0 go test -count=1 -run '^$' -bench Cluster -benchtime 1x -timeout 20m ./e2e/ >&2
  echo
  echo "At $rate events/s ($((rate * 20)) deliveries/s expected):"
  echo
  echo "| shape | published | delivered | deliveries/s | p50 | p99 | not delivered 2 s after the load |"
  echo "|---|---|---|---|---|---|---|"
  cat "$out"
  rm -f "$out"
done
