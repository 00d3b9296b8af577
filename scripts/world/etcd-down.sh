#!/usr/bin/env bash
# Stop the etcd that etcd-up.sh started in DIR (only that pid); drop its lines from DIR/env.
# Usage: etcd-down.sh DIR
set -uo pipefail
DIR=${1:?usage: $0 DIR}
[ -d "$DIR" ] || exit 0
DIR=$(cd "$DIR" && pwd)
. "$(dirname "$0")/lib.sh"
stop_pid "$DIR/etcd/etcd.pid" "$DIR/etcd/data" 10
rm -f "$DIR/etcd.env"
env_rebuild "$DIR"
