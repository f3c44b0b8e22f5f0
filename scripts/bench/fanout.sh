#!/usr/bin/env bash
# BENCH.md scenario 'fanout': fleet-relay against Mosquitto's websockets listener in the same run.
set -euo pipefail
cd "$(dirname "$0")/../.."
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec go run ./scripts/bench/relaybench -scenario fanout ${BENCH_FANOUT_ARGS:-}
