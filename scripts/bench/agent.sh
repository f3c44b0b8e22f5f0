#!/usr/bin/env bash
# BENCH.md scenario `agent`: robot-agent binary size, RSS and CPU at 1 Hz
# metrics over BENCH_AGENT_SECONDS (default 120) against Mosquitto on
# loopback, and the spool replay rate of BENCH_AGENT_EVENTS (default 100000)
# events queued during an outage. Prints a markdown section on stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || { echo "agent.sh: mosquitto missing (make test-deps)" >&2; exit 1; }
make -s build >/dev/null
go run ./scripts/bench/agentbench -bin bin/robot-agent \
  -seconds "${BENCH_AGENT_SECONDS:-120}" -events "${BENCH_AGENT_EVENTS:-100000}"
