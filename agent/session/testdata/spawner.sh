#!/bin/sh
# Test child: starts two grandchildren that would outlive it, records every
# pid in PIDFILE, reports progress and then waits. With ignore_term the
# whole group ignores SIGTERM (param ignore_term), so only SIGKILL stops it.
pidfile=$1
if [ "${ROBOT_AGENT_PARAM_IGNORE_TERM:-}" = true ]; then trap '' TERM; fi
sleep 300 &
echo $! >> "$pidfile.tmp"
( sleep 300 ) &
echo $! >> "$pidfile.tmp"
echo $$ >> "$pidfile.tmp"
mv "$pidfile.tmp" "$pidfile"
echo '{"progress": 10, "stage": "spawned", "message": "children running"}'
while :; do sleep 1; done
