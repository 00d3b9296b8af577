#!/usr/bin/env bash
# Stops what scripts/quickstart.sh started and removes .quickstart/.
set -uo pipefail
cd "$(dirname "$0")/.."
Q=$(pwd)/.quickstart
if [ -f "$Q/agent.pid" ]; then
  pid=$(cat "$Q/agent.pid")
  if kill -0 "$pid" 2>/dev/null && grep -q "$Q/config.yaml" "/proc/$pid/cmdline" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    echo "agent stopped"
  fi
fi
[ -d "$Q/world" ] && bash scripts/world/down.sh "$Q/world"
rm -rf "$Q"
echo "removed $Q"
