#!/usr/bin/env bash
# Stop the world up.sh started in DIR (only its own pids). Usage: down.sh DIR [--rm]
set -uo pipefail
DIR=${1:?usage: $0 DIR [--rm]}
H=$(dirname "$0")
# the components share nothing, so they stop in parallel (memcached alone takes ~0.5 s)
pids=()
for c in etcd swift rgw; do "$H/$c-down.sh" "$DIR" & pids+=($!); done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
[ "${2:-}" != --rm ] || rm -rf -- "$DIR"
exit $rc
