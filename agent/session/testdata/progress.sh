#!/bin/sh
# Test child: emits N progress lines fast, noise on stdout and stderr, writes
# one artifact and a result. Args: OUTPUT_DIR N
out=$1; n=${2:-50}
echo "starting, not JSON"
echo "to stderr" >&2
i=1
while [ "$i" -le "$n" ]; do
  echo "{\"progress\": $((i * 100 / n)), \"stage\": \"step\", \"message\": \"step $i/$n\"}"
  i=$((i + 1))
done
printf 'artifact-bytes' > "$out/model.bin"
mkdir -p "$out/sub" && printf 'x' > "$out/sub/extra.txt"
echo '{"result": {"metrics": {"size_before": 100, "size_after": 14}}}'
