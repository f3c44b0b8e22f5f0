#!/usr/bin/env bash
# BENCH.md scenario `agent`: robot-agent binary size, RSS and CPU at 1 Hz
# metrics over BENCH_AGENT_SECONDS (default 120) against Mosquitto on
# loopback, and the spool replay rate of BENCH_AGENT_EVENTS (default 100000)
# events queued during an outage. Prints a markdown section on stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || { echo "agent.sh: mosquitto missing (make test-deps)" >&2; exit 1; }
# The release build of `make build` (CGO off, -trimpath, stripped), robot-agent only.
mkdir -p bin
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/robotfleet/fleetlink/internal/version.Version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)" \
  -o bin/robot-agent ./cmd/robot-agent
go run ./scripts/bench/agentbench -bin bin/robot-agent \
  -seconds "${BENCH_AGENT_SECONDS:-120}" -events "${BENCH_AGENT_EVENTS:-100000}"
