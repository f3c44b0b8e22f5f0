#!/usr/bin/env bash
# Line counts of cloud/ (Go), before the relay-core refactor (issue 10, commit
# 9e9903d) and now, per package, source and tests apart.
set -euo pipefail
cd "$(dirname "$0")/../.."
before=9e9903d
count_before() { git ls-tree -r --name-only "$before" cloud | grep '\.go$' | while read -r f; do printf '%s %s\n' "$f" "$(git show "$before:$f" | wc -l)"; done; }
count_now() { find cloud -name '*.go' | while read -r f; do printf '%s %s\n' "$f" "$(wc -l < "$f")"; done; }
sum() { awk '{split($1,a,"/"); t=($1 ~ /_test\.go$/)?"test":"src"; s[a[2]" "t]+=$2; s["(all) "t]+=$2} END {for (k in s) print k, s[k]}'; }
b=$(mktemp); n=$(mktemp)
count_before | sum > "$b"
count_now | sum > "$n"
echo "## lines"
echo
echo "Go lines under \`cloud/\` (\`wc -l\`), before the relay-core refactor of issue 10 (commit \`$before\`) and now; other issues' packages (history, metricshistory, broker) grew in the same period."
echo
echo "| package | source before | source now | tests before | tests now |"
echo "|---|---|---|---|---|"
pkgs=$(cat "$b" "$n" | awk '{print $1}' | sort -u)
for p in $pkgs; do
  g() { awk -v p="$p" -v t="$2" '$1==p && $2==t {print $3}' "$1"; }
  printf '| %s | %s | %s | %s | %s |\n' "$p" "$(g "$b" src)" "$(g "$n" src)" "$(g "$b" test)" "$(g "$n" test)"
done
rm -f "$b" "$n"
echo
echo "Command: \`bash scripts/bench/lines.sh\`"
