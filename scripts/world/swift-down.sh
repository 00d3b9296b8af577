#!/usr/bin/env bash
# Stop the Swift that swift-up.sh started in DIR (only its pids) and drop its lines from
# DIR/env. Data and logs in DIR/swift are kept for post-mortems; swift-up.sh wipes them.
# Usage: swift-down.sh DIR
set -uo pipefail
DIR=${1:?usage: $0 DIR}
[ -d "$DIR" ] || exit 0
DIR=$(cd "$DIR" && pwd)
. "$(dirname "$0")/lib.sh"
S=$DIR/swift
# the proxy first, so no request reaches a half-stopped backend; the rest depend on nothing
stop_pid "$S/run/proxy.pid" "$S/" 10
for s in object container account memcached; do stop_pid "$S/run/$s.pid" "$S/" 10 & done
wait
rm -f "$DIR/swift.env"
env_rebuild "$DIR"
