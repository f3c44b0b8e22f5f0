#!/usr/bin/env bash
# Runs every benchmark scenario (scripts/bench/*.sh, each printing a markdown
# section) and writes docs/BENCHMARKS.md. BENCH_ONLY=name runs one scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/BENCHMARKS.md
tmp=$(mktemp)
{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` on $(date -u +%Y-%m-%d) — $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM,"
  echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(go version | cut -d' ' -f3)."
  echo "Load generator and system under test share the machine: compare the ratios"
  echo "against the peer measured in the same run, and read absolute figures as context."
  echo
} > "$tmp"
for s in scripts/bench/*.sh; do
  name=$(basename "$s" .sh)
  if [ -n "${BENCH_ONLY:-}" ] && [ "$BENCH_ONLY" != "$name" ]; then continue; fi
  echo "bench: $name" >&2
  if ! bash "$s" >> "$tmp"; then
    echo "bench: $name failed" >&2
    printf '\n## %s\n\nFAILED in this run (see the make bench output).\n' "$name" >> "$tmp"
  fi
  echo >> "$tmp"
done
mv "$tmp" "$out"
echo "bench: wrote $out" >&2
