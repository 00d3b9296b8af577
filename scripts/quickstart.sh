#!/usr/bin/env bash
# Quick start on a fresh Debian machine: installs what is needed, starts a local S3 (Ceph RGW) and
# etcd on 127.0.0.1, runs the agent on them, takes a real etcd snapshot, waits until it is shipped
# and confirmed, then lists it, fetches it back and restores it with etcdctl.
# Everything lives in .quickstart/; stop it all with: npm run quickstart:down
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
Q=$ROOT/.quickstart
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

if [ -f "$Q/agent.pid" ] && kill -0 "$(cat "$Q/agent.pid")" 2>/dev/null; then
  echo "a quickstart is already running in $Q; stop it first: npm run quickstart:down" >&2
  exit 1
fi

say "installing dependencies (Debian packages, npm) and building"
bash scripts/install-deps.sh
[ -d node_modules ] || npm ci --no-audit --no-fund
npm run build --silent

say "starting Ceph RGW (S3) and etcd on 127.0.0.1"
rm -rf "$Q"
mkdir -p "$Q/snapshots" "$Q/state"
# the demo needs one S3 server: no Swift
WORLD_SWIFT=0 bash scripts/world/up.sh "$Q/world" >/dev/null
set -a; . "$Q/world/env"; set +a

# The agent never creates buckets; an operator does, once.
node -e '
const { S3Client, CreateBucketCommand } = require("@aws-sdk/client-s3");
new S3Client({ endpoint: process.env.S3_ENDPOINT, region: "us-east-1", forcePathStyle: true,
  requestChecksumCalculation: "WHEN_REQUIRED" })
  .send(new CreateBucketCommand({ Bucket: "etcd-backups" })).then(() => console.log("bucket etcd-backups created"),
  (e) => { console.error(e.name, e.message); process.exit(1); });' 2>/dev/null

# Credentials go in a 0600 AWS credentials file, never in the config.
umask 077
cat > "$Q/credentials" <<CRED
[default]
aws_access_key_id = $AWS_ACCESS_KEY_ID
aws_secret_access_key = $AWS_SECRET_ACCESS_KEY
CRED
umask 022
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
cat > "$Q/config.yaml" <<CFG
# Written by scripts/quickstart.sh. See the README's configuration reference.
cluster: quickstart
node: $(hostname -s | tr -c 'A-Za-z0-9._\n-' '-')
snapshotDir: $Q/snapshots
stateDir: $Q/state
s3:
  bucket: etcd-backups
  endpoint: $S3_ENDPOINT
  credentialsFile: $Q/credentials
metrics:
  listen: 127.0.0.1:$PORT
CFG
AGENT=(node "$ROOT/dist/agent/cli/main.js" --config "$Q/config.yaml")
env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY "${AGENT[@]}" check-config

say "starting the agent (logs: $Q/agent.log)"
env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY setsid "${AGENT[@]}" run >"$Q/agent.log" 2>&1 < /dev/null &
echo $! > "$Q/agent.pid"
for _ in $(seq 1 100); do grep -q '"watching snapshot directory"' "$Q/agent.log" && break; sleep 0.1; done

say "writing keys to etcd and taking a snapshot with etcdctl"
for i in $(seq 1 50); do etcdctl put "/quickstart/key-$i" "value-$i" >/dev/null; done
NAME=quickstart-$(date -u +%Y%m%dT%H%M%SZ).db
etcdctl snapshot save "$Q/snapshots/$NAME" >/dev/null 2>&1
echo "saved $Q/snapshots/$NAME"

for _ in $(seq 1 300); do grep -q '"snapshot shipped and confirmed"' "$Q/agent.log" && break; sleep 0.1; done
if ! grep -q '"snapshot shipped and confirmed"' "$Q/agent.log"; then
  echo "the snapshot was not shipped within 30 s; the agent log says:" >&2
  tail -n 20 "$Q/agent.log" >&2
  exit 1
fi
grep '"snapshot shipped and confirmed"' "$Q/agent.log" | tail -n 1

say "etcd-backup-agent list"
env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY "${AGENT[@]}" list

say "etcd-backup-agent fetch --latest, then etcdctl snapshot restore"
env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY "${AGENT[@]}" fetch --latest --output "$Q/restore/latest.db"
etcdctl snapshot restore "$Q/restore/latest.db" --data-dir "$Q/restored" >/dev/null 2>&1
echo "etcdctl snapshot restore accepted it: $Q/restored"

cat <<DONE

Shipped and confirmed. Where to look:
  agent log (JSON lines) $Q/agent.log
  metrics                http://127.0.0.1:$PORT/metrics   (readiness: /readyz)
  in S3                  $S3_ENDPOINT/etcd-backups/$(grep -o '"key":"[^"]*"' "$Q/agent.log" | tail -n 1 | cut -d'"' -f4)
  ledger                 $Q/state/ledger.json

Try it yourself (the agent keeps watching $Q/snapshots):
  set -a; . $Q/world/env; set +a
  etcdctl snapshot save $Q/snapshots/another.db
  node dist/agent/cli/main.js --config $Q/config.yaml list
  node dist/agent/cli/main.js --config $Q/config.yaml fetch --latest --output /tmp/latest.db
Stop everything: npm run quickstart:down
DONE
