#!/bin/sh
# fake-optimizer.sh — a complete example of an exec pipeline runner for
# robot-agent (see docs/PIPELINES.md). It "optimizes" a model by copying it,
# speaking the progress protocol on stdout:
#
#   {"progress": 0..100, "stage": "...", "message": "...", "eta_s": 12}   any number of times
#   {"result": {"metrics": {"name": number, ...}}}                        once, at the end
#
# Every other stdout line and all of stderr go to the session log; the last
# 4 KiB of stderr become error.detail when the run fails (exit code != 0).
#
# Pipeline config:
#   - name: fake-optimize
#     runner: exec
#     command: ["/opt/robot-agent/fake-optimizer.sh", "--model", "{model}",
#               "--out", "{output_dir}", "--steps", "{param.steps}"]
#     params:
#       - {name: steps, type: int, min: 1, max: 1000, default: 5}
#       - {name: step_delay, type: float, min: 0, max: 10, default: 0.2}
#       - {name: fail, type: bool, default: false}
#     timeout: 10m
#
# The agent also sets ROBOT_AGENT_SESSION_ID, ROBOT_AGENT_OUTPUT_DIR,
# ROBOT_AGENT_MODEL and ROBOT_AGENT_PARAM_<NAME> (upper case) for every param.
set -eu

model=${ROBOT_AGENT_MODEL:-}
out=${ROBOT_AGENT_OUTPUT_DIR:-}
steps=${ROBOT_AGENT_PARAM_STEPS:-5}
delay=${ROBOT_AGENT_PARAM_STEP_DELAY:-0.2}
fail=${ROBOT_AGENT_PARAM_FAIL:-false}
while [ $# -gt 0 ]; do
  case $1 in
    --model) model=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    *) echo "fake-optimizer: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$model" ] && [ -n "$out" ] || { echo "fake-optimizer: need --model and --out" >&2; exit 2; }

# On cancel the agent sends SIGTERM to the whole process group, then SIGKILL
# after its grace period: clean up and leave quickly.
trap 'echo "fake-optimizer: cancelled, cleaning up" >&2; rm -f "$out/.partial"; exit 143' TERM

echo "fake-optimizer: session ${ROBOT_AGENT_SESSION_ID:-?} model $model"   # plain line: goes to the session log
echo '{"progress": 0, "stage": "load", "message": "reading model"}'
size_before=$(wc -c < "$model")

i=1
while [ "$i" -le "$steps" ]; do
  sleep "$delay"
  pct=$((10 + 80 * i / steps))
  left=$(awk "BEGIN { print ($steps - $i) * $delay }")
  echo "{\"progress\": $pct, \"stage\": \"optimize\", \"message\": \"pass $i/$steps\", \"eta_s\": $left}"
  i=$((i + 1))
done

if [ "$fail" = true ]; then
  echo "fake-optimizer: asked to fail" >&2
  exit 1
fi

echo '{"progress": 95, "stage": "write", "message": "writing output"}'
name=$(basename "$model")
cp "$model" "$out/.partial"
mv "$out/.partial" "$out/${name%.*}.optimized.${name##*.}"
size_after=$(wc -c < "$out/${name%.*}.optimized.${name##*.}")
echo '{"progress": 100, "stage": "done", "message": "finished"}'
echo "{\"result\": {\"metrics\": {\"size_before\": $size_before, \"size_after\": $size_after, \"passes\": $steps}}}"
