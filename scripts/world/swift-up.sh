#!/usr/bin/env bash
# Start a throwaway single-node OpenStack Swift (Debian 12 packages, 2.30) with its S3 API
# (s3api + tempauth) on 127.0.0.1: memcached, account, container, object and proxy servers,
# one device (a plain directory), one replica. State lives in DIR/swift, wiped on each start;
# stop with swift-down.sh DIR.
# Usage: swift-up.sh DIR
# Env:   SWIFT_PORT              fixed S3 port of the proxy (default: a free port)
#        SWIFT_MAX_PARTS         s3api max_upload_part_num (default 1000, Swift's own default, what
#                                operators meet; AWS allows 10000). A low value lets a test hit the
#                                limit with a few parts; non-last parts must still be >= 5 MiB
#                                (s3api min_segment_size, as in AWS).
#        SWIFT_ENCRYPTION=1|0    keymaster + encryption in the pipeline (default 1): objects are
#                                encrypted at rest and `x-amz-server-side-encryption: AES256` is
#                                accepted; with 0 any SSE header gets 501
#        SWIFT_S3_SECRET_KEY     the S3 secret (= the tempauth key)
# Writes DIR/swift.env, merged into DIR/env (KEY=VALUE lines):
#        SWIFT_S3_ENDPOINT SWIFT_AWS_ACCESS_KEY_ID SWIFT_AWS_SECRET_ACCESS_KEY SWIFT_AWS_REGION
#        SWIFT_MAX_PARTS
#        (prefixed, so they sit next to rgw-up.sh's S3_ENDPOINT, AWS_* in DIR/env)
# Needs: scripts/install-deps.sh (the swift-* packages, memcached and /etc/swift/swift.conf).
set -euo pipefail
DIR=${1:?usage: $0 DIR}
mkdir -p "$DIR" && DIR=$(cd "$DIR" && pwd)
. "$(dirname "$0")/lib.sh"

S=$DIR/swift
SERVERS=(memcached account container object proxy)
# the servers are Python scripts for Debian's /usr/bin/python3; a python3 earlier on PATH
# (pyenv, a venv) may not have the swift module
PY=/usr/bin/python3
# eventlet's green DNS imports dnspython (and requests) in every process: ~0.3 s CPU each.
# Every address here is an IP, so no lookup ever happens.
export EVENTLET_NO_GREENDNS=yes
ACCOUNT=world
USER_NAME=tester # tempauth: the S3 access key id is ACCOUNT:USER, and neither may contain '_'
SECRET_KEY=${SWIFT_S3_SECRET_KEY:-worldswiftsecret00000000000000000000000}
REGION=us-east-1
MAX_PARTS=${SWIFT_MAX_PARTS:-1000}
ENCRYPTION=${SWIFT_ENCRYPTION:-1}
[[ $MAX_PARTS =~ ^[1-9][0-9]*$ ]] || { echo "SWIFT_MAX_PARTS must be a positive integer, not '$MAX_PARTS'" >&2; exit 1; }

for s in "${SERVERS[@]}"; do
  ! ours "$S/run/$s.pid" "$S/" || { echo "swift already running in $DIR (swift-down.sh $DIR first)" >&2; exit 1; }
done

die() {
  log "ERROR: $*"
  for f in "$S"/log/*.log; do [ -s "$f" ] && { echo "--- tail $f" >&2; tail -n 12 "$f" >&2; }; done
  "$(dirname "$0")/swift-down.sh" "$DIR" >/dev/null 2>&1 || true
  exit 1
}

# Swift reads /etc/swift/swift.conf whatever swift_dir says, and refuses to start without a
# hash path prefix or suffix there
grep -qE '^[[:space:]]*swift_hash_path_(prefix|suffix)[[:space:]]*=[[:space:]]*[^[:space:]]' /etc/swift/swift.conf 2>/dev/null || {
  echo "/etc/swift/swift.conf is missing or has no swift_hash_path_prefix/suffix:" \
    "run scripts/install-deps.sh (as root; it installs the swift packages and that file)" >&2
  exit 1
}
[ -x /usr/bin/swift-proxy-server ] && command -v memcached >/dev/null ||
  { echo "Swift or memcached is not installed: run scripts/install-deps.sh" >&2; exit 1; }

read -r P_MC P_ACC P_CON P_OBJ P_PROXY < <(free_ports 5)
P_PROXY=${SWIFT_PORT:-$P_PROXY}
# Swift binds with SO_REUSEPORT (eventlet's default): on a port another Swift of the same
# user listens on, it binds without error and the kernel splits the connections between the
# two. So a taken port is refused here, before anything starts.
port_hex=$(printf '%04X' "$P_PROXY")
if awk -v p=":$port_hex" '$4 == "0A" && substr($2, length($2) - 4) == p {f = 1} END {exit !f}' /proc/net/tcp /proc/net/tcp6; then
  echo "port $P_PROXY (SWIFT_PORT) is taken on this machine" >&2
  exit 1
fi
rm -rf -- "$S"
mkdir -p "$S"/{node/d1,run,log}
# the object server keeps metadata in user.* xattrs (ext4, xfs, btrfs have them; tmpfs only
# from Linux 6.6)
$PY -c 'import os, sys; open(sys.argv[1], "w").close(); os.setxattr(sys.argv[1], "user.probe", b"1"); os.remove(sys.argv[1])' \
  "$S/node/d1/.xattr-probe" 2>/dev/null || { echo "$S: this filesystem has no user xattrs, which Swift needs" >&2; exit 1; }
log "swift: dir=$S proxy=$P_PROXY max_parts=$MAX_PARTS encryption=$ENCRYPTION"

# Settings every server shares. workers = 0: the server is one process, so the recorded pid
# is the server itself. Logs go to stderr (DIR/swift/log/NAME.log, see swift-start.py); Swift
# also always adds a syslog handler, sent here to a UDP port on loopback where nothing listens.
common() { # port
  cat <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $1
workers = 0
user = $(id -un)
swift_dir = $S
devices = $S/node
mount_check = false
disable_fallocate = true
fallocate_reserve = 0
log_udp_host = 127.0.0.1
# a taken port fails the start after 10 s instead of Swift's 30
bind_timeout = 10
EOF
}
for s in account container object; do
  case $s in account) port=$P_ACC;; container) port=$P_CON;; object) port=$P_OBJ;; esac
  { common "$port"; printf '\n[pipeline:main]\npipeline = healthcheck %s-server\n\n' "$s"
    printf '[app:%s-server]\nuse = egg:swift#%s\n\n[filter:healthcheck]\nuse = egg:swift#healthcheck\n' "$s" "$s"
  } >"$S/$s-server.conf"
done

CRYPT=
[ "$ENCRYPTION" = 0 ] || CRYPT="keymaster encryption "
{ common "$P_PROXY"; cat <<EOF

[pipeline:main]
# s3api before tempauth (it turns S3 signatures into auth details tempauth checks);
# slo after s3api (multipart uploads are stored as static large objects); versioned_writes
# is listed because the proxy would insert it anyway (s3api needs it)
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo versioned_writes ${CRYPT}proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
# the first S3 call creates the Swift account
account_autocreate = true

[filter:s3api]
use = egg:swift#s3api
# SigV4 must be signed for this region
location = $REGION
# over it UploadPart is refused (InvalidArgument) before its body is read
max_upload_part_num = $MAX_PARTS
# the smallest non-last part CompleteMultipartUpload takes (EntityTooSmall), as in AWS
min_segment_size = 5242880
# no storage_domain: path-style requests only

[filter:tempauth]
use = egg:swift#tempauth
user_${ACCOUNT}_${USER_NAME} = $SECRET_KEY .admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$P_MC

[filter:slo]
use = egg:swift#slo
# a completed upload is one manifest with a segment per part
max_manifest_segments = $MAX_PARTS

[filter:keymaster]
use = egg:swift#keymaster
encryption_root_secret = $(head -c 32 /dev/urandom | base64)

[filter:encryption]
use = egg:swift#encryption

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:copy]
use = egg:swift#copy
[filter:dlo]
use = egg:swift#dlo
[filter:versioned_writes]
use = egg:swift#versioned_writes
EOF
} >"$S/proxy-server.conf"
chmod 600 "$S/proxy-server.conf"

# memcached: without it tempauth has no token cache and every request re-reads account and
# container info. -P (a pid file of its own) puts DIR in its command line, which is how
# stop_pid recognises it.
start_bg "$S/run/memcached.pid" "$S/log/memcached.log" memcached -l 127.0.0.1 -p "$P_MC" -U 0 -m 64 -t 1 \
  -u "$(id -un)" -P "$S/run/memcached.self.pid"
# rings, then the account, container, object and proxy servers (forked from one Python that
# imported Swift once: see swift-start.py); DIR/swift/ in its command line marks them as ours
$PY "$(dirname "$0")/swift-start.py" "$S/" "$P_ACC" "$P_CON" "$P_OBJ" >"$S/log/start.log" 2>&1 ||
  die "swift-start.py failed"

# listens PIDFILE PORT: that process has a listening socket on 127.0.0.1:PORT. An answer on
# the port alone proves nothing: if something took the port after free_ports, it answers
# there while ours retries its bind.
listens() {
  local pid inode port_hex
  pid=$(cat "$1") && port_hex=$(printf '%04X' "$2") || return 1
  for inode in $(awk -v a="0100007F:$port_hex" '$2 == a && $4 == "0A" {print $10}' /proc/net/tcp); do
    [ -n "$(find "/proc/$pid/fd" -lname "socket:\[$inode\]" 2>/dev/null | head -n 1)" ] && return 0
  done
  return 1
}
healthy() { listens "$S/run/$1.pid" "$2" && curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$2/healthcheck"; }
mc_ok() {
  listens "$S/run/memcached.pid" "$P_MC" &&
    [ "$(printf 'version\r\nquit\r\n' | curl -s --max-time 2 "telnet://127.0.0.1:$P_MC" | head -c 7)" = VERSION ]
}
wait_until 30 "$S/run/memcached.pid" -- mc_ok || die "memcached not answering on $P_MC"
for s in account:$P_ACC container:$P_CON object:$P_OBJ proxy:$P_PROXY; do
  wait_until 40 "$S/run/${s%%:*}.pid" -- healthy "${s%%:*}" "${s#*:}" || die "swift ${s%%:*} server not healthy on ${s#*:}"
done
log "swift servers healthy"

ENDPOINT=http://127.0.0.1:$P_PROXY
# One signed S3 call (ListBuckets, SigV4, Python standard library only): proves the pipeline,
# tempauth's user and the region. curl --aws-sigv4 cannot be used: the access key id has a ':'.
s3_ok() {
  $PY - "$ENDPOINT" "$ACCOUNT:$USER_NAME" "$SECRET_KEY" "$REGION" <<'EOF'
import datetime, hashlib, hmac, sys, urllib.request
endpoint, key_id, secret, region = sys.argv[1:5]
now = datetime.datetime.now(datetime.timezone.utc)
amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
host = endpoint.split("://", 1)[1]
empty = hashlib.sha256(b"").hexdigest()
signed = "host;x-amz-content-sha256;x-amz-date"
canonical = "\n".join(["GET", "/", "", "host:" + host, "x-amz-content-sha256:" + empty,
                       "x-amz-date:" + amz_date, "", signed, empty])
scope = "/".join([day, region, "s3", "aws4_request"])
to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
k = ("AWS4" + secret).encode()
for part in (day, region, "s3", "aws4_request"):
    k = hmac.new(k, part.encode(), hashlib.sha256).digest()
sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
req = urllib.request.Request(endpoint + "/", headers={
    "x-amz-date": amz_date, "x-amz-content-sha256": empty,
    "Authorization": "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (key_id, scope, signed, sig)})
body = urllib.request.urlopen(req, timeout=5).read()
sys.exit(0 if b"<ListAllMyBucketsResult" in body else "unexpected ListBuckets answer: %r" % body[:200])
EOF
}
wait_until 20 "$S"/run/{memcached,account,container,object,proxy}.pid -- s3_ok ||
  die "S3 ListBuckets failed: $(s3_ok 2>&1 | tail -n 1)"

cat >"$DIR/swift.env" <<EOF
SWIFT_S3_ENDPOINT=$ENDPOINT
SWIFT_AWS_ACCESS_KEY_ID=$ACCOUNT:$USER_NAME
SWIFT_AWS_SECRET_ACCESS_KEY=$SECRET_KEY
SWIFT_AWS_REGION=$REGION
SWIFT_MAX_PARTS=$MAX_PARTS
EOF
env_rebuild "$DIR"
log "Swift S3 ready at $ENDPOINT"
