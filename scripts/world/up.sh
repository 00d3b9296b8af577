#!/usr/bin/env bash
# Start the test world in DIR, all on 127.0.0.1 and in parallel: Ceph RGW (S3), etcd, and
# OpenStack Swift with its S3 API (a second S3 server).
# Usage: up.sh DIR     (stop with down.sh DIR)
# Writes DIR/env (KEY=VALUE, sourceable with `set -a; . DIR/env; set +a`) and prints it:
#   S3_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION CEPH_CONF
#   ETCDCTL_API ETCDCTL_ENDPOINTS
#   SWIFT_S3_ENDPOINT SWIFT_AWS_ACCESS_KEY_ID SWIFT_AWS_SECRET_ACCESS_KEY SWIFT_AWS_REGION SWIFT_MAX_PARTS
# Env: WORLD_SWIFT=0 leaves Swift out (no SWIFT_* lines); see also rgw-up.sh, etcd-up.sh and
# swift-up.sh. Needs scripts/install-deps.sh.
set -euo pipefail
DIR=${1:?usage: $0 DIR}
mkdir -p "$DIR" && DIR=$(cd "$DIR" && pwd)
H=$(dirname "$0")
export T0=$(date +%s.%N)
. "$H/lib.sh"

pids=()
"$H/rgw-up.sh" "$DIR" & pids+=($!)
"$H/etcd-up.sh" "$DIR" & pids+=($!)
if [ "${WORLD_SWIFT:-1}" != 0 ]; then "$H/swift-up.sh" "$DIR" & pids+=($!); fi
# killed while starting (e.g. a test timeout): leave nothing running
trap 'kill "${pids[@]}" 2>/dev/null; wait; "$H/down.sh" "$DIR" >/dev/null 2>&1; exit 1' INT TERM
ok=1
for p in "${pids[@]}"; do wait "$p" || ok=0; done
if [ $ok = 0 ]; then
  log "ERROR: world did not start; stopping what did"
  "$H/down.sh" "$DIR" >/dev/null 2>&1 || true
  exit 1
fi
log "world ready in $DIR"
cat "$DIR/env"
