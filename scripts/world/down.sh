#!/usr/bin/env bash
# Stop the world up.sh started in DIR (only its own pids). Usage: down.sh DIR [--rm]
set -uo pipefail
DIR=${1:?usage: $0 DIR [--rm]}
H=$(dirname "$0")
rc=0
"$H/etcd-down.sh" "$DIR" || rc=1
"$H/swift-down.sh" "$DIR" || rc=1
"$H/rgw-down.sh" "$DIR" || rc=1
[ "${2:-}" != --rm ] || rm -rf -- "$DIR"
exit $rc
