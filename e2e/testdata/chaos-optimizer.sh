#!/bin/sh
# chaos-optimizer.sh — the fault suite's pipeline: exactly STEPS progress
# lines, one every DELAY seconds (slower than the agent's 4/s progress
# throttle, so none is coalesced), then a result. A session therefore
# publishes exactly STEPS + 3 events (queued, started, STEPS x progress,
# completed): the suite knows how many were produced without trusting any
# observer that a fault might also cut.
steps=${ROBOT_AGENT_PARAM_STEPS:-10}
delay=${ROBOT_AGENT_PARAM_DELAY:-0.5}
trap 'exit 143' TERM
i=1
while [ "$i" -le "$steps" ]; do
  sleep "$delay"
  echo "{\"progress\": $((100 * i / steps)), \"stage\": \"chaos\", \"message\": \"step $i/$steps\"}"
  i=$((i + 1))
done
echo "{\"result\": {\"metrics\": {\"steps\": $steps}}}"
