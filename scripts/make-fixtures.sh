#!/usr/bin/env bash
# Regenerates the small, real etcd snapshots in test/fixtures/ (they are committed; run this only to refresh
# them). Starts a throwaway etcd on free loopback ports with a temporary data dir and leaves nothing behind.
#
#   bash scripts/make-fixtures.sh [out-dir]     (default: test/fixtures)
#
# Needs etcd and etcdctl (Debian: etcd-server, etcd-client). Optional: zip (Info-ZIP) and python3, which
# make zips with producers other than Go (the tests make Go-made ones with test/support/gozip).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$here/test/fixtures}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

for tool in etcd etcdctl; do
  command -v "$tool" >/dev/null || { echo "make-fixtures: $tool not found (apt-get install etcd-server etcd-client)" >&2; exit 1; }
done

work="$(mktemp -d /tmp/etcd-fixtures.XXXXXX)"
etcd_pid=""
cleanup() {
  if [[ -n "$etcd_pid" ]] && kill -0 "$etcd_pid" 2>/dev/null; then
    kill "$etcd_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$etcd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$etcd_pid" 2>/dev/null || true
    wait "$etcd_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Two distinct free ports, chosen by the kernel.
read -r client_port peer_port < <(node -e '
  const net = require("node:net");
  const grab = () => new Promise((r) => { const s = net.createServer(); s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => r(p)); }); });
  (async () => { const a = await grab(); let b = await grab(); while (b === a) b = await grab(); console.log(a, b); })();
')

client="http://127.0.0.1:$client_port"
peer="http://127.0.0.1:$peer_port"
etcd --name fixture --data-dir "$work/data" \
  --listen-client-urls "$client" --advertise-client-urls "$client" \
  --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
  --initial-cluster "fixture=$peer" --initial-cluster-state new --initial-cluster-token fixtures \
  --log-level error >"$work/etcd.log" 2>&1 &
etcd_pid=$!

export ETCDCTL_API=3
ctl() { etcdctl --endpoints="$client" --command-timeout=10s "$@"; }
for _ in $(seq 100); do
  ctl endpoint health >/dev/null 2>&1 && break
  kill -0 "$etcd_pid" 2>/dev/null || { cat "$work/etcd.log" >&2; exit 1; }
  sleep 0.1
done
ctl endpoint health >/dev/null 2>&1 || { cat "$work/etcd.log" >&2; exit 1; }

# Keys shaped like Kubernetes objects, written through etcd's JSON gateway (one etcdctl per key is slow).
put_keys() { # first count value_bytes
  node - "$client" "$1" "$2" "$3" <<'JS'
const [url, first, count, bytes] = process.argv.slice(2);
const b64 = (s) => Buffer.from(s).toString('base64');
(async () => {
  for (let i = Number(first); i < Number(first) + Number(count); i++) {
    const id = String(i).padStart(5, '0');
    const body = JSON.stringify({ key: b64(`/registry/configmaps/default/cm-${id}`), value: b64(`${'x'.repeat(Number(bytes))}-${id}`) });
    const res = await fetch(`${url}/v3/kv/put`, { method: 'POST', body });
    if (!res.ok) throw new Error(`put ${id}: HTTP ${res.status}`);
  }
})().catch((e) => { console.error(e); process.exit(1); });
JS
}

put_keys 0 300 200
ctl snapshot save "$work/etcd-small.db" >>"$work/etcdctl.log" 2>&1 || { cat "$work/etcdctl.log" >&2; exit 1; }
put_keys 300 600 400
ctl snapshot save "$work/etcd-medium.db" >>"$work/etcdctl.log" 2>&1 || { cat "$work/etcdctl.log" >&2; exit 1; }

cp "$work/etcd-small.db" "$work/etcd-medium.db" "$out/"
chmod 0644 "$out/etcd-small.db" "$out/etcd-medium.db"

# Zips by independent producers, to keep our reader honest about more than our own writer.
if command -v zip >/dev/null; then
  rm -f "$out/etcd-small.db.zip"
  (cd "$out" && zip -q -X -9 etcd-small.db.zip etcd-small.db)
fi
if command -v python3 >/dev/null; then
  python3 - "$out/etcd-small.db" "$out/etcd-small-py64.zip" <<'PY'
import sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as zf:
    info = zipfile.ZipInfo("etcd-small-py64", date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    with open(src, "rb") as f, zf.open(info, "w", force_zip64=True) as w:
        while chunk := f.read(1 << 16):
            w.write(chunk)
PY
fi

for f in "$out"/etcd-*; do
  printf '%-28s %8d bytes  sha256 %s\n' "$(basename "$f")" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -c1-16)"
done
