# Shared helpers for scripts/world/*.sh (sourced, not run).
# Layout of a world DIR: DIR/ceph/ (conf, data, logs, pids), DIR/etcd/ and DIR/swift/ (same
# for etcd and Swift), DIR/{rgw,etcd,swift}.env (one per component), DIR/env (all, concatenated).

T0=${T0:-$(date +%s.%N)}
log() { printf '[%5.1fs] %s\n' "$(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN{print a-b}')" "$*" >&2; }

# N distinct free loopback ports (all held open together so they differ)
free_ports() {
  python3 -c 'import socket,sys
ss=[socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

# start_bg PIDFILE LOGFILE CMD...: detached (own session, so a test runner's Ctrl-C
# does not hit it), pid recorded for *-down.sh
start_bg() {
  local pidfile=$1 logfile=$2; shift 2
  setsid "$@" >>"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
}

# alive PID: running and not a zombie (an init that reaps lazily keeps exited daemons
# around as zombies for seconds, and kill -0 succeeds on those)
alive() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  [ "${st%% *}" != Z ]
}

# ours PIDFILE MARK: the pid is alive and still the process we started
# (its command line mentions MARK, a path inside DIR), not a recycled pid
ours() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && alive "$pid" &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# stop_pid PIDFILE MARK [TIMEOUT_S=10]: TERM, wait, KILL; removes PIDFILE
stop_pid() {
  local pidfile=$1 mark=$2 n=$(( ${3:-10} * 20 )) pid i
  if ours "$pidfile" "$mark"; then
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < n; i++)); do alive "$pid" || break; sleep 0.05; done
    if alive "$pid"; then
      log "$(basename "$pidfile" .pid) ($pid) ignored TERM, sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.05; done
    fi
    log "stopped $(basename "$pidfile" .pid) ($pid)"
  fi
  rm -f "$pidfile"
}

# rebuild DIR/env from the component files; flock because up.sh starts them all at once
env_rebuild() {
  local dir=$1
  (
    flock 9
    cat "$dir"/rgw.env "$dir"/etcd.env "$dir"/swift.env 2>/dev/null >"$dir/env.tmp" || true
    mv -f "$dir/env.tmp" "$dir/env"
  ) 9>"$dir/.env.lock"
}

# wait_until SECONDS PIDFILE... -- CMD...: poll CMD every 0.1 s; give up early (rc 2)
# if one of the daemons died
wait_until() {
  local secs=$1 i f pidfiles=(); shift
  while [ "$1" != -- ]; do pidfiles+=("$1"); shift; done; shift
  for ((i = 0; i < secs * 10; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    for f in "${pidfiles[@]}"; do alive "$(cat "$f")" || return 2; done
    sleep 0.1
  done
  "$@" >/dev/null 2>&1
}
