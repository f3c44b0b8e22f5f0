#!/usr/bin/env bash
# Runs every benchmark scenario (scripts/bench/*.sh, each printing a markdown
# section that starts with "## <name>") and writes docs/BENCHMARKS.md.
# BENCH_ONLY=name runs one scenario and replaces only its section in the
# existing docs/BENCHMARKS.md (appending it when new), keeping the others.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/BENCHMARKS.md
if [ -n "${BENCH_ONLY:-}" ]; then
  s=scripts/bench/$BENCH_ONLY.sh
  [ -f "$s" ] || { echo "bench: no scenario $s" >&2; exit 2; }
  section=$(mktemp)
  echo "bench: $BENCH_ONLY" >&2
  if ! bash "$s" > "$section"; then
    printf '\n## %s\n\nFAILED in this run (see the make bench output).\n' "$BENCH_ONLY" > "$section"
  fi
  tmp=$(mktemp)
  # Copy the file, swapping the "## NAME" section (up to the next "## ")
  # for the new one.
  awk -v name="## $BENCH_ONLY" -v sec="$section" '
    function emit(  line) { while ((getline line < sec) > 0) print line; print ""; done = 1 }
    $0 == name || index($0, name " ") == 1 { skip = 1; emit(); next }
    skip && /^## / { skip = 0 }
    !skip { print }
    END { if (!done) { print ""; emit() } }
  ' "$out" > "$tmp"
  mv "$tmp" "$out"
  rm -f "$section"
  echo "bench: updated the $BENCH_ONLY section of $out" >&2
  exit 0
fi
tmp=$(mktemp)
{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` on $(date -u +%Y-%m-%d) — $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM,"
  echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(go version | cut -d' ' -f3)."
  echo "Load generator and system under test share the machine: compare the ratios"
  echo "against the peer measured in the same run, and read absolute figures as context."
  echo "\`BENCH_ONLY=NAME make bench\` re-runs one section in place."
  echo
} > "$tmp"
for s in scripts/bench/*.sh; do
  name=$(basename "$s" .sh)
  echo "bench: $name" >&2
  if ! bash "$s" >> "$tmp"; then
    echo "bench: $name failed" >&2
    printf '\n## %s\n\nFAILED in this run (see the make bench output).\n' "$name" >> "$tmp"
  fi
  echo >> "$tmp"
done
mv "$tmp" "$out"
echo "bench: wrote $out" >&2
