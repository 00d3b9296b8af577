#!/usr/bin/env bash
# Start a throwaway single-node Ceph (1 mon, 1 OSD, no mgr) + radosgw (beast) on 127.0.0.1,
# with one S3 user. State lives in DIR/ceph; stop with rgw-down.sh DIR.
# Usage: rgw-up.sh DIR
# Env:   RGW_PORT, MON_PORT            fixed ports (default: free random ports)
#        S3_ACCESS_KEY, S3_SECRET_KEY  S3 credentials (defaults below)
#        OSD_BACKEND=memstore|bluestore, MEMSTORE_BYTES (reported capacity, default 32 GiB)
# Writes DIR/rgw.env and DIR/env (KEY=VALUE lines):
#        S3_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION CEPH_CONF
set -euo pipefail
DIR=${1:?usage: $0 DIR}
mkdir -p "$DIR" && DIR=$(cd "$DIR" && pwd)
. "$(dirname "$0")/lib.sh"

C=$DIR/ceph
CONF=$C/ceph.conf
ACCESS_KEY=${S3_ACCESS_KEY:-worldaccesskey000000}
SECRET_KEY=${S3_SECRET_KEY:-worldsecretkey0000000000000000000000000}
BACKEND=${OSD_BACKEND:-memstore}

for d in mon osd rgw; do
  ! ours "$C/run/$d.pid" "$CONF" || { echo "ceph already running in $DIR (rgw-down.sh $DIR first)" >&2; exit 1; }
done

die() {
  log "ERROR: $*"
  for f in "$C"/log/{mkfs,cli,mon,osd,rgw}.out "$C"/log/{mon.a,osd.0,client.rgw.a}.log; do
    [ -s "$f" ] && { echo "--- tail $f" >&2; tail -n 12 "$f" >&2; }
  done
  "$(dirname "$0")/rgw-down.sh" "$DIR" >/dev/null 2>&1 || true
  exit 1
}

read -r p1 p2 < <(free_ports 2)
MON_PORT=${MON_PORT:-$p1}
RGW_PORT=${RGW_PORT:-$p2}
rm -rf -- "$C"
mkdir -p "$C"/{mon,osd,rgw,run,log}
FSID=$(uuidgen)

cat >"$CONF" <<EOF
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$MON_PORT]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
ms bind msgr1 = false
# no keys to manage; but then every on-wire mode must be crc, or radosgw fails
# to open its mon session ("get_initial_auth_request returned -13")
auth cluster required = none
auth service required = none
auth client required = none
ms cluster mode = crc
ms service mode = crc
ms client mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
ms mon client mode = crc
keyring = $C/keyring
run dir = $C/run
admin socket = $C/run/\$name.\$pid.asok
log file = $C/log/\$name.log
log to stderr = false
mon cluster log file = $C/log/cluster.log
# one OSD: one replica, few PGs (defaults exceed the per-OSD PG limit)
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon warn on no mgr = false
mon warn on insecure global id reclaim allowed = false
# tiny disks in CI must not make the cluster refuse writes
mon data avail warn = 1
mon data avail crit = 0
mon osd full ratio = .99
mon osd backfillfull ratio = .99
mon osd nearfull ratio = .99
osd failsafe full ratio = .99
# commit map changes (pool creation, OSD boot) without the default 1 s batching
paxos propose interval = 0.05
paxos min wait = 0.01

[mon]
mon data = $C/mon

[osd]
osd data = $C/osd
osd objectstore = $BACKEND
# memstore reports 1 GiB by default, then refuses writes; RAM is used only for what is stored
memstore device bytes = ${MEMSTORE_BYTES:-34359738368}
bluestore block path = $C/osd-block
bluestore block create = true
bluestore block size = 21474836480
osd op num shards = 2
osd op num threads per shard = 1

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw data = $C/rgw
rgw dns name =
# deleted objects are freed by GC, by default after 2 h; memstore needs the RAM back
rgw gc obj min wait = 10
rgw gc processor period = 10
rgw enable usage log = false
EOF
CC=(-c "$CONF")
log "ceph: dir=$C mon=$MON_PORT rgw=$RGW_PORT backend=$BACKEND"

ceph-authtool --create-keyring "$C/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$C/monmap" >/dev/null
ceph-mon "${CC[@]}" --mkfs -i a --monmap "$C/monmap" >"$C/log/mkfs.out" 2>&1 || die "mon mkfs"
start_bg "$C/run/mon.pid" "$C/log/mon.out" ceph-mon "${CC[@]}" -i a -f
# probe the port first: the ceph CLI backs off for seconds when its first connect fails
mon_listening() { (exec 3<>"/dev/tcp/127.0.0.1/$MON_PORT") 2>/dev/null; }
wait_until 30 "$C/run/mon.pid" -- mon_listening || die "ceph-mon not listening"
OSD_UUID=$(uuidgen)
OSD_ID=$(ceph "${CC[@]}" --connect-timeout 20 osd new "$OSD_UUID" 2>>"$C/log/cli.out") || die "osd new"
[ "$OSD_ID" = 0 ] || die "osd new gave '$OSD_ID'"
log "mon up"

ceph-osd "${CC[@]}" -i 0 --mkfs --osd-uuid "$OSD_UUID" >>"$C/log/mkfs.out" 2>&1 || die "osd mkfs"
start_bg "$C/run/osd.pid" "$C/log/osd.out" ceph-osd "${CC[@]}" -i 0 -f
# no wait for the OSD to boot: radosgw's first writes simply wait for it.
# radosgw creates its pools on first start (size 1, 8 PGs from the defaults above)
start_bg "$C/run/rgw.pid" "$C/log/rgw.out" radosgw "${CC[@]}" -n client.rgw.a -f
ENDPOINT=http://127.0.0.1:$RGW_PORT
wait_until 60 "$C"/run/{mon,osd,rgw}.pid -- curl -s -o /dev/null --max-time 2 "$ENDPOINT/" ||
  die "radosgw not answering"
log "rgw up"

radosgw-admin "${CC[@]}" user create --uid=world --display-name=world \
  --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >"$C/log/user.json" 2>>"$C/log/cli.out" || die "user create"

cat >"$DIR/rgw.env" <<EOF
S3_ENDPOINT=$ENDPOINT
AWS_ACCESS_KEY_ID=$ACCESS_KEY
AWS_SECRET_ACCESS_KEY=$SECRET_KEY
AWS_REGION=us-east-1
CEPH_CONF=$CONF
EOF
env_rebuild "$DIR"
log "S3 ready at $ENDPOINT"
