#!/usr/bin/env bash
# Install (only if missing) the Debian 12 packages that the integration tests and the
# quickstart need. Idempotent; never leaves a ceph/etcd/swift/memcached/prometheus/tinyproxy daemon
# running. Also installs /etc/swift/swift.conf when it is missing (see below).
# Usage: scripts/install-deps.sh
set -euo pipefail

PKGS=(ceph-mon ceph-osd radosgw ceph-common etcd-server etcd-client prometheus
      swift-proxy swift-account swift-container swift-object python3-swift memcached  # the second S3 server
      curl uuid-runtime openssl python3 procps
      systemd ansible-core python3-seccomp  # the unit, install and package tests
      golang-go  # test zips written by Go's archive/zip, as rke-tools and k3s write them
      age openssh-client  # encryption and signature interop: the age CLI, ssh-keygen -Y
      tinyproxy tmux  # a real forward proxy for the proxy tests; a real terminal for the progress tests
      debootstrap systemd-container  # the systemd test: a Debian root booted by systemd-nspawn
      rclone  # reads the agent's objects and their mtime metadata in the interop tests
      libatomic1)  # the release executable's Node runtime links libatomic.so.1
# callers add their own (the benchmark's peers): EXTRA_PKGS="awscli"
PKGS+=(${EXTRA_PKGS:-})
# /proc, not pgrep: procps may be one of the packages still missing
daemon_pids() {
  local f c
  for f in /proc/[0-9]*/comm; do
    read -r c <"$f" 2>/dev/null || continue
    # comm is cut at 15 characters: swift-proxy-server shows as swift-proxy-ser
    case $c in ceph-mon|ceph-osd|radosgw|etcd|prometheus|memcached|rsyslogd|tinyproxy|swift-*) f=${f#/proc/}; echo "${f%/comm}";; esac
  done
}

SUDO=()
[ "$(id -u)" = 0 ] || SUDO=(sudo)

# Every Swift server reads /etc/swift/swift.conf, whatever its own config says (the path is
# fixed in Swift, swift_dir does not move it), and refuses to start without a hash path
# prefix or suffix there. Only a missing file is installed: one a real Swift on this
# machine uses is never touched (changing its hashes would orphan that Swift's data).
# Runs on every call, so a machine whose packages came another way still gets it.
swift_conf() {
  [ -e /etc/swift/swift.conf ] && return 0
  echo "installing /etc/swift/swift.conf (test-world hash prefix/suffix, storage policy 0 only)"
  "${SUDO[@]}" install -D -m 0644 "$(dirname "$0")/world/swift.conf" /etc/swift/swift.conf
}

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} = 0 ]; then
  swift_conf
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
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qE '/ceph/ceph\.conf|/etcd/data|/swift/|/tinyproxy-[^/]*/tinyproxy\.conf' && continue
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
  echo "checked: the install left no ceph/etcd/swift/memcached/prometheus/tinyproxy daemon running"
fi
swift_conf

for b in ceph-mon ceph-osd radosgw radosgw-admin ceph etcd etcdctl promtool curl uuidgen openssl python3 pgrep systemd-analyze ansible-playbook go age age-keygen ssh-keygen \
         tinyproxy tmux debootstrap systemd-nspawn \
         swift-proxy-server swift-account-server swift-container-server swift-object-server memcached; do
  command -v "$b" >/dev/null || { echo "ERROR: $b still missing after install" >&2; exit 1; }
done
# the Swift servers run on /usr/bin/python3; a python3 earlier on PATH (pyenv, venv) may lack it
/usr/bin/python3 -c 'import swift' 2>/dev/null || { echo "ERROR: /usr/bin/python3 cannot import swift (python3-swift)" >&2; exit 1; }
echo "installed: ${missing[*]}"
