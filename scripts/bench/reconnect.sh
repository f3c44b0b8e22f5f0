#!/usr/bin/env bash
# BENCH.md scenario `reconnect`: BENCH_RECONNECT_AGENTS (default
# 1000) simulated agents against Mosquitto killed and restarted after
# BENCH_RECONNECT_DOWN (default 30s): time until 95 % are back, connects per
# second at the broker; the agent's reconnect schedule and the previous one
# in the same run; and fleet-relay on the same broker: time until its /readyz
# is 200 again. Prints a markdown section on stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || { echo "reconnect.sh: mosquitto missing (make test-deps)" >&2; exit 1; }
mkdir -p bin
go build -o bin/fleet-relay ./cmd/fleet-relay
go run ./scripts/bench/reconnect -agents "${BENCH_RECONNECT_AGENTS:-1000}" -down "${BENCH_RECONNECT_DOWN:-30s}" -relay bin/fleet-relay
