#!/usr/bin/env bash
# BENCH.md scenario 'warmstart': a fleet-relay replaying 100,000 events from
# JetStream (a single nats-server) before it reports ready, against the same
# relay starting without history in the same run.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp)
WARMSTART_OUT=$out CGO_ENABLED=0 go test -count=1 -run '^$' -bench WarmStart -benchtime 1x -timeout 20m ./e2e/ >&2
echo "## warmstart"
echo
echo "A fleet-relay starts against one nats-server whose JetStream history holds ${WARMSTART_EVENTS:-100000} session.progress events (~330 B each) of one robot in 1,000 sessions; it replays them through its ingest path (decode, validate, de-dup, caches and rings) before \`/readyz\` says ready. Peer: the same relay on the same broker without history, same run. \`bash scripts/bench/warmstart.sh\` ($(date -u '+%Y-%m-%d %H:%M') UTC)."
echo
echo "| figure | target | with JetStream history | without (cold, peer) |"
echo "|---|---|---|---|"
cat "$out"
rm -f "$out"
