#!/usr/bin/env bash
# Start a single-member etcd (Debian etcd-server 3.4) on 127.0.0.1, data in DIR/etcd.
# Usage: etcd-up.sh DIR
# Env:   ETCD_PORT, ETCD_PEER_PORT (default: free random ports)
#        ETCD_EXTRA_ARGS: more flags (the benchmark's large databases raise the quota)
# Writes DIR/etcd.env, merged into DIR/env (same file rgw-up.sh writes its lines to):
#        ETCDCTL_API=3  ETCDCTL_ENDPOINTS=http://127.0.0.1:PORT
set -euo pipefail
DIR=${1:?usage: $0 DIR}
mkdir -p "$DIR" && DIR=$(cd "$DIR" && pwd)
. "$(dirname "$0")/lib.sh"
E=$DIR/etcd
! ours "$E/etcd.pid" "$E/data" || { echo "etcd already running in $DIR (etcd-down.sh $DIR first)" >&2; exit 1; }

read -r p1 p2 < <(free_ports 2)
PORT=${ETCD_PORT:-$p1}
PEER=${ETCD_PEER_PORT:-$p2}
rm -rf -- "$E"
mkdir -p "$E"
URL=http://127.0.0.1:$PORT
# single member: a short election timeout only makes it lead sooner (default ~1 s);
# --max-txn-ops: lets test helpers load keys in few large transactions
start_bg "$E/etcd.pid" "$E/etcd.log" etcd --name world --data-dir "$E/data" \
  --listen-client-urls "$URL" --advertise-client-urls "$URL" \
  --listen-peer-urls "http://127.0.0.1:$PEER" --initial-advertise-peer-urls "http://127.0.0.1:$PEER" \
  --initial-cluster "world=http://127.0.0.1:$PEER" --initial-cluster-state new \
  --heartbeat-interval 10 --election-timeout 100 --max-txn-ops 10000 --logger zap ${ETCD_EXTRA_ARGS:-}
if ! wait_until 30 "$E/etcd.pid" -- env ETCDCTL_API=3 etcdctl --endpoints "$URL" --dial-timeout 1s endpoint health; then
  log "ERROR: etcd not healthy"; tail -n 25 "$E/etcd.log" >&2
  "$(dirname "$0")/etcd-down.sh" "$DIR" >/dev/null 2>&1 || true
  exit 1
fi
printf 'ETCDCTL_API=3\nETCDCTL_ENDPOINTS=%s\n' "$URL" >"$DIR/etcd.env"
env_rebuild "$DIR"
log "etcd ready at $URL"
