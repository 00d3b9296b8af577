#!/usr/bin/env bash
# Installs etcd-backup-agent from an unpacked release tarball (the files next to this script).
# Idempotent, for config management: each item is reported as created/installed/updated/fixed
# (a change) or unchanged/kept (none); the last line says "no changes" when nothing changed.
#
#   sudo ./install.sh [--check] [--prefix DIR] [--destdir DIR] [--user NAME] [--group NAME] [--no-user]
#
#   --check         change nothing; report what a run would do ("would install ...", "would update ...")
#                   and end with the same "no changes" / "N changes" line. For Ansible's --check mode
#                   and to preview an upgrade.
#   --prefix DIR    binary goes to DIR/bin (default /usr/local; the unit's ExecStart follows it)
#   --destdir DIR   stage everything under DIR (also: DESTDIR=DIR); no user is created then
#   --user NAME     system user the service runs as (default etcd-backup); --group defaults to it
#   --no-user       create no user or group and change no owners. Implied when not run as root,
#                   so the script can be tried out (and tested) by anyone into a --destdir.
#
# What it manages (paths below DESTDIR):
#   user/group      etcd-backup, system account, no login shell, home /var/lib/etcd-backup-agent
#   PREFIX/bin/etcd-backup-agent                  root:root 0755, replaced when it differs
#   /etc/systemd/system/etcd-backup-agent.service root:root 0644, replaced when it differs
#   /etc/etcd-backup-agent/                       root:GROUP 0750
#   /etc/etcd-backup-agent/config.yaml            root:GROUP 0640, only if missing: never overwritten
#   /etc/etcd-backup-agent/credentials            root:root 0600, only if missing (an empty template:
#                                                 the unit's LoadCredential= needs the file to exist)
#   /var/lib/etcd-backup-agent/                   USER:GROUP 0700 (the ledger)
# It does not enable or start the service: that is config management's decision, after the config
# and credentials are in place (see docs/install.md).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prefix=/usr/local
destdir="${DESTDIR:-}"
user=etcd-backup
group=
manage_owners=1
dry=

die() { echo "install.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2;;
    --prefix=*) prefix="${1#*=}"; shift;;
    --destdir) destdir="${2:?--destdir needs a directory}"; shift 2;;
    --destdir=*) destdir="${1#*=}"; shift;;
    --user) user="${2:?--user needs a name}"; shift 2;;
    --user=*) user="${1#*=}"; shift;;
    --group) group="${2:?--group needs a name}"; shift 2;;
    --group=*) group="${1#*=}"; shift;;
    --no-user) manage_owners=; shift;;
    --check) dry=1; shift;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
    *) die "unknown option $1 (see --help)";;
  esac
done
group="${group:-$user}"
case $prefix in /*) ;; *) die "--prefix must be an absolute path";; esac
[ -z "$destdir" ] || destdir="$(mkdir -p "$destdir" && cd "$destdir" && pwd)"

bin_src="$here/etcd-backup-agent"
unit_src="$here/etcd-backup-agent.service"
config_src="$here/config.example.yaml"
for f in "$bin_src" "$unit_src" "$config_src"; do
  [ -f "$f" ] || die "$f is missing: run install.sh from an unpacked release tarball"
done
# Fails early on a host the binary cannot run on (another architecture, glibc older than 2.28, a
# missing shared library), with the package that provides the library when it is a known one.
if ! version="$("$bin_src" --version 2>&1)"; then
  case $version in
    *libatomic.so.1*) hint="; install the package libatomic1 (Debian, Ubuntu, SUSE) or libatomic (RHEL, Rocky, Alma, Fedora)";;
    *libstdc++.so.6*) hint="; install the package libstdc++6 (Debian, Ubuntu) or libstdc++ (RHEL family)";;
    *) hint=;;
  esac
  die "$bin_src does not run on this host: $version$hint"
fi

bindir="$prefix/bin"
unitdir=/etc/systemd/system
confdir=/etc/etcd-backup-agent
statedir=/var/lib/etcd-backup-agent

changes=0
# With --check every change is reported as "would <verb>" and nothing is done.
report() { # STATUS WHAT [DETAIL]
  local status=$1
  case $1 in
    unchanged|kept|skipped) ;;
    *) changes=$((changes + 1))
       if [ -n "$dry" ]; then
         case $1 in created) status="would create";; installed) status="would install";; updated) status="would update";;
           fixed) status="would fix";; reloaded) status="would reload";; esac
       fi;;
  esac
  printf '%-9s %s%s\n' "$status" "$2" "${3:+ ($3)}"
}
# run CMD...: runs it, unless --check
run() { [ -n "$dry" ] || "$@"; }

# --- user and group -------------------------------------------------------------------------------
owner_note=
if [ "$(id -u)" != 0 ]; then
  manage_owners=
  owner_note="not root: no user created, files stay owned by $(id -un)"
elif [ -z "$manage_owners" ]; then
  owner_note="--no-user: no user created, owners left as they are"
elif [ -n "$destdir" ]; then
  # staging: accounts belong to the target host; use them only if this host has them too
  if getent passwd "$user" >/dev/null && getent group "$group" >/dev/null; then
    report unchanged "user $user" "exists"
  else
    manage_owners=
    owner_note="DESTDIR set: user $user not created here, create it on the target host"
  fi
else
  if getent group "$group" >/dev/null; then
    report unchanged "group $group" "exists"
  else
    run groupadd --system "$group"
    report created "group $group" "system group"
  fi
  if getent passwd "$user" >/dev/null; then
    report unchanged "user $user" "exists"
  else
    nologin="$(command -v nologin || echo /usr/sbin/nologin)"
    run useradd --system --gid "$group" --no-create-home --home-dir "$statedir" --shell "$nologin" \
      --comment "etcd-backup-agent" "$user"
    report created "user $user" "system user, no login, home $statedir"
  fi
fi
[ -z "$owner_note" ] || report skipped "user $user" "$owner_note"

# --- helpers --------------------------------------------------------------------------------------
# ensure_attrs PATH OWNER:GROUP MODE: fixes owner (when managed) and mode; echoes what it fixed
ensure_attrs() {
  local path=$1 want_owner=$2 want_mode=$3 fixed=
  if [ -n "$manage_owners" ] && [ "$(stat -c '%U:%G' "$path")" != "$want_owner" ]; then
    run chown "$want_owner" "$path"
    fixed="owner $want_owner"
  fi
  if [ "$(stat -c '%a' "$path")" != "${want_mode#0}" ]; then
    run chmod "$want_mode" "$path"
    fixed="${fixed:+$fixed, }mode $want_mode"
  fi
  echo "$fixed"
}

ensure_dir() { # PATH OWNER:GROUP MODE
  local path="$destdir$1" fixed
  if [ -d "$path" ]; then
    fixed="$(ensure_attrs "$path" "$2" "$3")"
    if [ -n "$fixed" ]; then report fixed "$path/" "$fixed"; else report unchanged "$path/" "$(describe "$path")"; fi
  elif [ -n "$dry" ]; then
    report created "$path/" "${manage_owners:+$2 }$3"
  else
    mkdir -p "$path"
    ensure_attrs "$path" "$2" "$3" >/dev/null
    report created "$path/" "$(describe "$path")"
  fi
}

describe() { stat -c '%U:%G 0%a' "$1"; }

# put_file SRC DEST OWNER:GROUP MODE: writes DEST atomically. A rename, not a copy over: a running
# binary cannot be written (ETXTBSY), and readers never see half a file.
put_file() {
  local tmp
  [ -z "$dry" ] || return 0
  mkdir -p "$(dirname "$2")"
  tmp="$(mktemp "$2.XXXXXX")"
  cat "$1" >"$tmp"
  ensure_attrs "$tmp" "$3" "$4" >/dev/null
  mv -f "$tmp" "$2"
}

# install_file SRC DEST OWNER:GROUP MODE [DETAIL]: replaces DEST when its content differs
install_file() {
  local dest="$destdir$2" fixed
  if [ -f "$dest" ] && cmp -s "$1" "$dest"; then
    fixed="$(ensure_attrs "$dest" "$3" "$4")"
    if [ -n "$fixed" ]; then report fixed "$dest" "$fixed"; else report unchanged "$dest"; fi
    return 1
  fi
  if [ -e "$dest" ]; then
    put_file "$1" "$dest" "$3" "$4"
    report updated "$dest" "${5:-}"
  else
    put_file "$1" "$dest" "$3" "$4"
    report installed "$dest" "${5:-}"
  fi
}

# keep_or_create SRC DEST OWNER:GROUP MODE: never touches an existing file
keep_or_create() {
  local dest="$destdir$2"
  if [ -e "$dest" ]; then
    report kept "$dest" "exists; never overwritten"
    return 1
  fi
  put_file "$1" "$dest" "$3" "$4"
  if [ -n "$dry" ]; then report installed "$dest" "${manage_owners:+$3 }$4"; else report installed "$dest" "$(describe "$dest")"; fi
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- directories ----------------------------------------------------------------------------------
ensure_dir "$confdir" "root:$group" 0750
ensure_dir "$statedir" "$user:$group" 0700

# --- binary and unit ------------------------------------------------------------------------------
install_file "$bin_src" "$bindir/etcd-backup-agent" root:root 0755 "version $version" || true

# The unit names the binary, the user and the group: follow --prefix, --user and --group.
sed -e "s#^ExecStart=/usr/local/bin/etcd-backup-agent #ExecStart=$bindir/etcd-backup-agent #" \
    -e "s#^User=.*#User=$user#" -e "s#^Group=.*#Group=$group#" "$unit_src" >"$work/unit"
grep -q "^ExecStart=$bindir/etcd-backup-agent " "$work/unit" || die "$unit_src has an unexpected ExecStart= line"
unit_changed=
install_file "$work/unit" "$unitdir/etcd-backup-agent.service" root:root 0644 && unit_changed=1

# --- configuration and credentials ----------------------------------------------------------------
config_new=
keep_or_create "$config_src" "$confdir/config.yaml" "root:$group" 0640 && config_new=1
cat >"$work/credentials" <<'EOF'
# S3 keys for etcd-backup-agent, in AWS shared-credentials format. Mode 0600, owner root.
# The unit hands this file to the agent through LoadCredential= (AWS_SHARED_CREDENTIALS_FILE).
# Leave it without a [default] section to use the environment file or an instance role instead.
#
# [default]
# aws_access_key_id = ...
# aws_secret_access_key = ...
EOF
keep_or_create "$work/credentials" "$confdir/credentials" root:root 0600 || {
  mode="$(stat -c '%a' "$destdir$confdir/credentials")"
  case $mode in ??0) ;; *) echo "warning: $destdir$confdir/credentials is mode $mode: other users can read the S3 keys; chmod 600 it" >&2;; esac
}

# --- systemd --------------------------------------------------------------------------------------
if [ -n "$unit_changed" ] && [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
  run systemctl daemon-reload
  report reloaded "systemd units" "daemon-reload"
fi

if [ -n "$config_new" ] && [ -z "$dry" ]; then
  echo "next: set s3.bucket (and s3.endpoint) in $destdir$confdir/config.yaml, the keys in $destdir$confdir/credentials,"
  echo "      check with: $bindir/etcd-backup-agent --config $confdir/config.yaml check-config"
  echo "      then: systemctl enable --now etcd-backup-agent"
fi
if [ "$changes" = 0 ]; then echo "install.sh: no changes"; else echo "install.sh: $changes changes${dry:+ (--check: none made)}"; fi
