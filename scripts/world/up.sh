#!/usr/bin/env bash
# Start the test world in DIR: Ceph RGW (S3) and etcd, both on 127.0.0.1, in parallel.
# Usage: up.sh DIR     (stop with down.sh DIR)
# Writes DIR/env (KEY=VALUE, sourceable with `set -a; . DIR/env; set +a`) and prints it:
#   S3_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION CEPH_CONF
#   ETCDCTL_API ETCDCTL_ENDPOINTS
# Env: see rgw-up.sh and etcd-up.sh. Needs scripts/install-deps.sh.
set -euo pipefail
DIR=${1:?usage: $0 DIR}
mkdir -p "$DIR" && DIR=$(cd "$DIR" && pwd)
H=$(dirname "$0")
export T0=$(date +%s.%N)
. "$H/lib.sh"

"$H/rgw-up.sh" "$DIR" & rgw=$!
"$H/etcd-up.sh" "$DIR" & etcd=$!
# killed while starting (e.g. a test timeout): leave nothing running
trap 'kill "$rgw" "$etcd" 2>/dev/null; wait; "$H/down.sh" "$DIR" >/dev/null 2>&1; exit 1' INT TERM
ok=1
wait "$rgw" || ok=0
wait "$etcd" || ok=0
if [ $ok = 0 ]; then
  log "ERROR: world did not start; stopping what did"
  "$H/down.sh" "$DIR" >/dev/null 2>&1 || true
  exit 1
fi
log "world ready in $DIR"
cat "$DIR/env"
