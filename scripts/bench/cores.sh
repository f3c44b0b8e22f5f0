#!/usr/bin/env bash
# BENCH.md scenario 'cores' (see scripts/bench/relaybench/storm.go).
set -euo pipefail
cd "$(dirname "$0")/../.."
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec go run ./scripts/bench/relaybench -scenario cores ${BENCH_CORES_ARGS:-}
