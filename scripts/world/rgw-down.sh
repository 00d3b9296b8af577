#!/usr/bin/env bash
# Stop the Ceph daemons rgw-up.sh started in DIR (only those pids) and drop the S3 lines
# from DIR/env. Data in DIR/ceph is kept for post-mortems; rgw-up.sh wipes it.
# Usage: rgw-down.sh DIR
set -uo pipefail
DIR=${1:?usage: $0 DIR}
[ -d "$DIR" ] || exit 0
DIR=$(cd "$DIR" && pwd)
. "$(dirname "$0")/lib.sh"
C=$DIR/ceph
# rgw first (it talks to both), mon last: an OSD without its mon hangs for seconds on TERM
for d in rgw osd mon; do stop_pid "$C/run/$d.pid" "$C/ceph.conf" 10; done
rm -f "$DIR/rgw.env"
env_rebuild "$DIR"
