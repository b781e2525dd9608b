# shellcheck shell=bash
# Helpers shared by install.sh, up.sh and down.sh; sourcing it also sources env.sh and
# every services/NAME.sh, so each script starts with the same one line.
# Each service of the stack lives in services/NAME.sh and defines
#   install_NAME   idempotent install (skips what is there), prints one line
#   up_NAME        starts it unless it already answers, waits until it does
#   ready_NAME     exit 0 when it answers a real request
# and is stopped by down.sh through its pid file ($STACK_STATE/NAME/NAME.pid).

STACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=env.sh
. "$STACK_DIR/env.sh"
for f in "$STACK_DIR"/services/*.sh; do
  # shellcheck disable=SC1090
  . "$f"
done

export DEBIAN_FRONTEND=noninteractive
STACK_SERVICES=(postgresql nats kafka clickhouse seaweedfs schema_registry)
UP_TIMEOUT=${UP_TIMEOUT:-90}

now() { echo "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1fs", b-a}'; }
step_t0=0
step() { step_t0=$(now); printf '[install] %s ... ' "$1"; }
done_() { echo "$1 ($(since "$step_t0"))"; }
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# pid from PIDFILE, only if that process still runs a command line matching
# PATTERN (guards against a recycled pid after a reboot or crash).
our_pid() { # PIDFILE PATTERN
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2" || return 1
  echo "$pid"
}

fail() { # NAME LOG MESSAGE
  echo "$1: FAILED: $3; last lines of $2:" >&2; tail -n 30 "$2" >&2 || true; exit 1
}

# Debian packages not yet installed, installed in one apt run. Keeps packages from
# starting their own daemons (policy-rc.d exit 101 = "action forbidden"): the stack
# runs its own processes with its own config.
apt_ensure() { # PKG...
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -gt 0 ] || { echo present; return 0; }
  local own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; own_policy=1
  fi
  local log=$STACK_HOME/apt.log rc=0
  # A fresh machine may have no (or stale) package lists: update once, retry.
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
    apt-get update -q >>"$log" 2>&1
    apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1 || rc=$?
  fi
  [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
  [ $rc -eq 0 ] || { tail -20 "$log" >&2; return $rc; }
  echo "installed ${missing[*]}"
}

# Starts a service in the background unless it already answers.
#   start_service NAME PATTERN READY_FN DESCRIPTION -- COMMAND...
# NAME: pid file $STACK_STATE/NAME/NAME.pid, log $STACK_STATE/NAME/NAME.log;
# PATTERN: part of the command line that identifies our process;
# READY_FN: a function that exits 0 once the service answers a real request.
# setsid: own session, so the service outlives the calling shell, make and CI step.
start_service() {
  local name=$1 pat=$2 ready=$3 desc=$4; shift 5
  local dir=$STACK_STATE/$name pid t0
  mkdir -p "$dir"
  t0=$(now)
  if pid=$(our_pid "$dir/$name.pid" "$pat") && "$ready"; then
    echo "$name: up at $desc (pid $pid, already running)"; return 0
  fi
  if [ -z "${pid:-}" ] && "$ready"; then
    echo "$name: up at $desc (not started by up.sh, left as is)"; return 0
  fi
  if [ -n "${pid:-}" ]; then
    # Ours but not answering: give it the start-up time, then restart it.
    local deadline=$(( SECONDS + UP_TIMEOUT ))
    until "$ready"; do
      [ $SECONDS -lt $deadline ] || { kill -9 "$pid" 2>/dev/null; pid=; break; }
      sleep 0.5
    done
    [ -z "$pid" ] || { echo "$name: up at $desc (pid $pid, already running)"; return 0; }
  fi
  local log=$dir/$name.log
  setsid nohup "$@" >>"$log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/$name.pid"
  local deadline=$(( SECONDS + UP_TIMEOUT ))
  until "$ready"; do
    kill -0 "$pid" 2>/dev/null || fail "$name" "$log" "exited during start-up"
    [ $SECONDS -lt $deadline ] || fail "$name" "$log" "not ready after ${UP_TIMEOUT}s"
    sleep 0.2
  done
  echo "$name: up at $desc (pid $pid, started in $(since "$t0"), log $log)"
}

# Stops what start_service started (SIGTERM, then SIGKILL after STOP_TIMEOUT).
stop_service() { # NAME PATTERN
  local name=$1 pat=$2 pidfile=$STACK_STATE/$1/$1.pid pid
  if ! pid=$(our_pid "$pidfile" "$pat"); then
    rm -f "$pidfile"; echo "$name: not running"; return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$(( SECONDS + ${STOP_TIMEOUT:-30} ))
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      kill -KILL "$pid" 2>/dev/null || true
      echo "$name: killed (pid $pid did not stop in ${STOP_TIMEOUT:-30}s)"; rm -f "$pidfile"; return 0
    fi
    sleep 0.1
  done
  rm -f "$pidfile"; echo "$name: stopped (pid $pid)"
}

# A generated password kept in $STACK_SECRETS/NAME (created once, mode 600).
stack_secret() { # FILE
  mkdir -p "$(dirname "$1")"; chmod 700 "$(dirname "$1")"
  [ -s "$1" ] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$1")
  cat "$1"
}
