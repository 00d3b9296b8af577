#!/usr/bin/env bash
# Install (only if missing) the Debian 12 packages that the integration tests and the
# quickstart need. Idempotent; never leaves a ceph/etcd/prometheus daemon running.
# Usage: scripts/install-deps.sh
set -euo pipefail

PKGS=(ceph-mon ceph-osd radosgw ceph-common etcd-server etcd-client prometheus
      curl uuid-runtime openssl python3 procps
      systemd ansible-core python3-seccomp  # the unit, install and package tests
      debootstrap systemd-container         # the systemd test: a Debian root booted by systemd-nspawn
      libatomic1)                           # the release executable's Node runtime links libatomic.so.1
# callers add their own (the benchmark's peers): EXTRA_PKGS="awscli rclone"
PKGS+=(${EXTRA_PKGS:-})
# /proc, not pgrep: procps may be one of the packages still missing
daemon_pids() {
  local f c
  for f in /proc/[0-9]*/comm; do
    read -r c <"$f" 2>/dev/null || continue
    case $c in ceph-mon|ceph-osd|radosgw|etcd|prometheus) f=${f#/proc/}; echo "${f%/comm}";; esac
  done
}

SUDO=()
[ "$(id -u)" = 0 ] || SUDO=(sudo)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} = 0 ]; then
  echo "all dependencies present"
  exit 0
fi
echo "installing: ${missing[*]}"

# daemons that ran before we started are not ours to judge
before=" $(daemon_pids | tr '\n' ' ') "

# postinst scripts call invoke-rc.d, which starts services unless policy-rc.d says 101
# (sysvinit scripts exist for etcd, prometheus and radosgw; there is no systemd here)
POLICY=/usr/sbin/policy-rc.d
policy_added=
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
  "${SUDO[@]}" chmod 755 "$POLICY"
  policy_added=1
fi
cleanup() { [ -z "$policy_added" ] || "${SUDO[@]}" rm -f "$POLICY"; }
trap cleanup EXIT

"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
# no recommends: ceph would otherwise pull in mgr/dashboard and ~1 GiB more
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"

# stop whatever the install started: new pids of these daemons, except test worlds
# (scripts/world/*) that may have been started meanwhile
started=()
for pid in $(daemon_pids); do
  case "$before" in *" $pid "*) continue;; esac
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qE '/ceph/ceph\.conf|/etcd/data' && continue
  started+=("$pid")
done
if [ ${#started[@]} -gt 0 ]; then
  echo "install started daemons, stopping them: ${started[*]}"
  "${SUDO[@]}" kill -TERM "${started[@]}" 2>/dev/null || true
  sleep 5
  "${SUDO[@]}" kill -KILL "${started[@]}" 2>/dev/null || true
  left=$(daemon_pids | tr '\n' ' ')
  for pid in "${started[@]}"; do
    case " $left " in *" $pid "*) echo "ERROR: could not stop pid $pid" >&2; exit 1;; esac
  done
else
  echo "checked: the install left no ceph/etcd/prometheus daemon running"
fi

for b in ceph-mon ceph-osd radosgw radosgw-admin ceph etcd etcdctl promtool curl uuidgen openssl python3 pgrep systemd-analyze ansible-playbook debootstrap systemd-nspawn; do
  command -v "$b" >/dev/null || { echo "ERROR: $b still missing after install" >&2; exit 1; }
done
echo "installed: ${missing[*]}"
