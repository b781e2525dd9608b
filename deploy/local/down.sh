#!/usr/bin/env bash
# Stops the services started by up.sh (via their pid files). Idempotent: a
# service that is not running is reported and skipped. Never kills by name.
#   down.sh [tansu] [clickhouse]   (default: both)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/env.sh"
STOP_TIMEOUT=${STOP_TIMEOUT:-30}

stop() { # NAME PIDFILE CMDLINE-PATTERN
  local name=$1 pidfile=$2 pat=$3 pid
  pid=$(cat "$pidfile" 2>/dev/null || true)
  # Only signal the pid if it is still the program we started (pids get reused).
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null \
     || ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pat"; then
    rm -f "$pidfile"; echo "$name: not running"; return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$(( SECONDS + STOP_TIMEOUT ))
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      kill -KILL "$pid" 2>/dev/null || true; echo "$name: killed (pid $pid did not stop in ${STOP_TIMEOUT}s)"
      rm -f "$pidfile"; return 0
    fi
    sleep 0.1
  done
  rm -f "$pidfile"; echo "$name: stopped (pid $pid)"
}

SERVICES=("$@"); [ ${#SERVICES[@]} -gt 0 ] || SERVICES=(clickhouse tansu)
for svc in "${SERVICES[@]}"; do
  case $svc in
    clickhouse) stop clickhouse "$STACK_STATE/clickhouse/clickhouse.pid" clickhouse-server ;;
    tansu) stop tansu "$STACK_STATE/tansu/tansu.pid" "tansu broker" ;;
    *) echo "down.sh: unknown service $svc (tansu, clickhouse)" >&2; exit 2 ;;
  esac
done
