#!/usr/bin/env bash
# Builds test/support/gozip (etcd snapshot zips written by Go's own archive/zip, called as rke-tools and k3s
# call it) into a cache outside the repository, only when that build is missing, and prints the binary's path.
# The cache key covers the source and the Go version: another archive/zip may write other bytes.
#
#   bash scripts/build-gozip.sh        → e.g. ~/.cache/etcd-backup-agent/gozip-<hash>/gozip
#
# Needs Go (Debian: golang-go; scripts/install-deps.sh installs it). The Go standard library only: no network.
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/../test/support/gozip" && pwd)"
if ! command -v go >/dev/null; then
  echo "build-gozip: 'go' not found; install Go (Debian: apt-get install --no-install-recommends golang-go, or run scripts/install-deps.sh)" >&2
  exit 1
fi

key="$( { cat "$src/go.mod" "$src/main.go"; go version; } | sha256sum | cut -c1-16)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/etcd-backup-agent"
dir="$cache/gozip-$key"
bin="$dir/gozip"
if [ ! -x "$bin" ]; then
  mkdir -p "$dir"
  # Several test workers may build at once: each builds to its own name, the rename is atomic.
  tmp="$(mktemp "$dir/.gozip.XXXXXX")"
  trap 'rm -f "$tmp"' EXIT
  (cd "$src" && GOPROXY=off go build -o "$tmp" .) >&2
  mv -f "$tmp" "$bin"
  trap - EXIT
fi
echo "$bin"
