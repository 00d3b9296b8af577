#!/usr/bin/env bash
# Builds, once, a minimal Debian root that boots a real systemd under systemd-nspawn: the "host" of
# the systemd test (test/system/). Prints the root's path as the last line of stdout.
#
#   scripts/systemd-root.sh            build if missing, print the path
#   scripts/systemd-root.sh --path     print where it would be, build nothing
#
# The root is cached outside the repository, under ETCD_BACKUP_AGENT_CACHE (default
# ~/.cache/etcd-backup-agent), as nspawn-root-<hash>, where the hash covers this script's commands
# (not its comments), the suite, the package list and the mirror: change any of them and a new root is
# built next to the old one (~260 MiB each; remove old ones with rm -rf). Tests never write into it:
# they boot an overlay of it (test/system/container.ts).
#
# Packages: systemd, systemd-sysv and dbus to boot; ansible-core so that the Ansible example runs on the
# "host" itself against its real systemd (connection local), as ansible-pull would; python3-cffi-backend
# because debootstrap does not resolve the virtual package python3-cryptography needs.
# Not installed: libatomic1, which the release's Node runtime needs and a minimal Debian lacks. Its
# .deb is left in /root/debs, so that a test can meet the missing library first and then install it
# the way an operator would (dpkg -i stands in for apt-get install, with no network in the test).
# Mirror: the first Debian mirror serving SUITE in /etc/apt/sources.list*, or DEBIAN_MIRROR=URL.
# Needs root and the Debian package debootstrap (scripts/install-deps.sh installs it).
set -euo pipefail

SUITE=bookworm
PACKAGES=systemd,systemd-sysv,dbus,ansible-core,python3-cffi-backend
self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
cache="${ETCD_BACKUP_AGENT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/etcd-backup-agent}"

# Both forms of apt sources: one-line "deb [opts] URL SUITE ..." and deb822 stanzas (URIs:/Suites:).
find_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v s="$SUITE" '$1 == "deb" { sub(/^deb +(\[[^]]*\] +)?/, ""); if ($2 == s) { print $1; exit } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # a stanza ends at a blank line; print its URI when its suites include SUITE
    awk -v s="$SUITE" 'BEGIN { RS = "" } {
        uri = ""; ok = 0
        n = split($0, lines, "\n")
        for (i = 1; i <= n; i++) {
          if (lines[i] ~ /^URIs:/) { split(lines[i], w, /[ \t]+/); uri = w[2] }
          if (lines[i] ~ /^Suites:/) { m = split(lines[i], w, /[ \t]+/); for (j = 2; j <= m; j++) if (w[j] == s) ok = 1 }
        }
        if (ok && uri != "") { print uri; exit }
      }' "$f"
  done
}
mirror="${DEBIAN_MIRROR:-$(find_mirror | head -n 1)}"
[ -n "$mirror" ] || { echo "systemd-root: no Debian mirror for $SUITE in /etc/apt/sources.list*; set DEBIAN_MIRROR=URL" >&2; exit 1; }

hash="$( (echo "$SUITE $PACKAGES $mirror"; grep -v '^[[:space:]]*#' "$self") | sha256sum | cut -c1-12)"
root="$cache/nspawn-root-$hash"
if [ "${1:-}" = --path ]; then echo "$root"; exit 0; fi

# the marker sits next to the root, not in it: the container never sees it
if [ -f "$root.ok" ] && [ -d "$root" ]; then
  echo "systemd-root: cached $root"
  echo "$root"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "systemd-root: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "systemd-root: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }

mkdir -p "$cache"
# one builder at a time; a second caller waits and then finds the root built
exec 9>"$cache/nspawn-root.lock"
flock 9
if [ -f "$root.ok" ] && [ -d "$root" ]; then echo "$root"; exit 0; fi

t0=$(date +%s)
tmp="$root.tmp"
rm -rf "$tmp"
echo "systemd-root: debootstrap --variant=minbase --include=$PACKAGES $SUITE from $mirror" >&2
if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$tmp" "$mirror" >"$cache/debootstrap.log" 2>&1; then
  tail -n 30 "$cache/debootstrap.log" >&2
  [ ! -f "$tmp/debootstrap/debootstrap.log" ] || tail -n 30 "$tmp/debootstrap/debootstrap.log" >&2
  exit 1
fi

mkdir -p "$tmp/root/debs"
(cd "$tmp/root/debs" && apt-get download -q libatomic1 >&2)

# An empty machine-id: every boot of an overlay gets its own (nspawn supplies one).
: >"$tmp/etc/machine-id"
echo etcd-host >"$tmp/etc/hostname"
# No login prompt on the console: nobody types there, and it would hold the console open.
ln -sf /dev/null "$tmp/etc/systemd/system/console-getty.service"
ln -sf /dev/null "$tmp/etc/systemd/system/getty@.service"
# The downloaded packages are 60+ MiB the root never needs again.
rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*_Packages
mv "$tmp" "$root"
touch "$root.ok"
echo "systemd-root: built $root in $(( $(date +%s) - t0 ))s ($(du -sh "$root" | cut -f1))" >&2
echo "$root"
