#!/usr/bin/env bash
# make demo: the whole system on one machine — fleet-relay with its embedded
# MQTT broker and dashboard, three robot-agents with generated sample models,
# and one optimization started through the relay. Ctrl-C stops everything.
#
#   DEMO_HTTP=127.0.0.1:8080  dashboard and /ws
#   DEMO_MQTT=127.0.0.1:1883  embedded broker
#   DEMO_ROBOTS=3             robot-agents to start
#   DEMO_SECONDS=0            stop by itself after this many seconds (0 = run until Ctrl-C)
set -euo pipefail
cd "$(dirname "$0")/.."
HTTP=${DEMO_HTTP:-127.0.0.1:8080}
MQTT=${DEMO_MQTT:-127.0.0.1:1883}
ROBOTS=${DEMO_ROBOTS:-3}
SECONDS_LIMIT=${DEMO_SECONDS:-0}
DIR=${DEMO_DIR:-$PWD/.demo}

for addr in "$HTTP" "$MQTT"; do
  if (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null; then
    echo "demo: $addr is already in use; set DEMO_HTTP / DEMO_MQTT to free addresses" >&2
    exit 1
  fi
done

rm -rf "$DIR" && mkdir -p "$DIR/models" "$DIR/logs"
go run ./agent/onnxq/internal/testmodels/genmodels "$DIR/models" >/dev/null
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "demo: stopping"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

FLEET_RELAY_LISTEN=$HTTP FLEET_RELAY_MQTT_BROKER= FLEET_RELAY_EMBEDDED_MQTT_LISTEN=$MQTT FLEET_RELAY_AUTH_SECRET= \
  bin/fleet-relay >"$DIR/logs/relay.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fs "http://$HTTP/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://$HTTP/readyz" >/dev/null || { echo "demo: relay did not become ready; see $DIR/logs/relay.log" >&2; tail -20 "$DIR/logs/relay.log" >&2; exit 1; }

for i in $(seq 1 "$ROBOTS"); do
  id=$(printf 'r-%03d' "$i")
  mkdir -p "$DIR/$id"
  ROBOT_AGENT_ROBOT_ID=$id ROBOT_AGENT_MQTT_BROKER=tcp://$MQTT ROBOT_AGENT_STATE_DIR=$DIR/$id \
    ROBOT_AGENT_MODEL_DIRS=$DIR/models ROBOT_AGENT_METRICS_INTERVAL=2s \
    bin/robot-agent run >"$DIR/logs/$id.log" 2>&1 &
  pids+=($!)
done
sleep 2

echo
echo "  Dashboard:   http://$HTTP/"
echo "  WebSocket:   ws://$HTTP/ws   (auth off: loopback only)"
echo "  MQTT broker: tcp://$MQTT     try: bin/fleetctl watch --broker tcp://$MQTT"
echo "  Robots:      $(for i in $(seq 1 "$ROBOTS"); do printf 'r-%03d ' "$i"; done)"
echo "  Logs:        $DIR/logs/"
echo
echo "demo: starting quantize-int8 on r-001 (big_mlp.onnx) through MQTT:"
bin/fleetctl send --broker "tcp://$MQTT" r-001 start_session \
  --args '{"pipeline":"quantize-int8","model":"big_mlp.onnx"}' || echo "demo: the start command failed (see logs)"
echo
if [ "$SECONDS_LIMIT" -gt 0 ]; then
  echo "demo: running for $SECONDS_LIMIT s"
  sleep "$SECONDS_LIMIT"
else
  echo "demo: running; Ctrl-C stops everything"
  wait
fi
