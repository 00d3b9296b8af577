#!/usr/bin/env bash
# Restart only radosgw (mon and OSD keep running, so stored objects survive).
# Usage: rgw-restart.sh DIR
set -euo pipefail
DIR=${1:?usage: $0 DIR}
DIR=$(cd "$DIR" && pwd)
. "$(dirname "$0")/lib.sh"
C=$DIR/ceph
ENDPOINT=$(sed -n 's/^S3_ENDPOINT=//p' "$DIR/rgw.env")
stop_pid "$C/run/rgw.pid" "$C/ceph.conf" 10
start_bg "$C/run/rgw.pid" "$C/log/rgw.out" radosgw -c "$C/ceph.conf" -n client.rgw.a -f
if ! wait_until 60 "$C/run/rgw.pid" -- curl -s -o /dev/null --max-time 2 "$ENDPOINT/"; then
  log "ERROR: radosgw did not come back"; tail -n 25 "$C/log/client.rgw.a.log" "$C/log/rgw.out" >&2; exit 1
fi
log "radosgw restarted (pid $(cat "$C/run/rgw.pid"))"
