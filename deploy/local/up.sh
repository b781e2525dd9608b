#!/usr/bin/env bash
# Starts the local stack: Tansu (Kafka API) and ClickHouse 18.16, each in the
# background with log + pid under $STACK_STATE. Skips whatever is already up
# and healthy, waits until each one answers a real request, prints one line
# per service. Needs install.sh first.
#   up.sh [tansu] [clickhouse]     (default: both)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/env.sh"

TANSU_STORAGE=${TANSU_STORAGE:-memory://tansu/}
UP_TIMEOUT=${UP_TIMEOUT:-60}
CH_DIR=$STACK_STATE/clickhouse
TANSU_DIR=$STACK_STATE/tansu

[ -x "$PY" ] || { echo "up.sh: $PY missing, run deploy/local/install.sh first" >&2; exit 1; }
mkdir -p "$TANSU_DIR" "$CH_DIR"
SERVICES=("$@"); [ ${#SERVICES[@]} -gt 0 ] || SERVICES=(tansu clickhouse)

now() { echo "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1fs", b-a}'; }
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
# pid from PIDFILE, only if that process is still the program we started
# (guards against a recycled pid after a reboot or crash).
our_pid() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2" || return 1
  echo "$pid"
}
fail() { # NAME LOG MESSAGE
  echo "$1: FAILED: $3; last lines of $2:" >&2; tail -n 30 "$2" >&2 || true; exit 1
}

# ---------------------------------------------------------------- Tansu ---
up_tansu() {
  [ -x "$TANSU" ] || { echo "tansu: FAILED: $TANSU not found, run deploy/local/install.sh first" >&2; exit 1; }
  tansu_ready() { port_open "$KAFKA_HOST" "$KAFKA_PORT" && "$PY" "$HERE/kafka_admin.py" --bootstrap "$KAFKA_BOOTSTRAP" ready --timeout 5 >/dev/null 2>&1; }
  t0=$(now)
  if pid=$(our_pid "$TANSU_DIR/tansu.pid" "tansu broker") && tansu_ready; then
    echo "tansu: up at $KAFKA_BOOTSTRAP (pid $pid, already running)"
  elif port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    # Someone else's broker (or a stuck one of ours without pid file): do not fight it.
    if tansu_ready; then echo "tansu: up at $KAFKA_BOOTSTRAP (not started by up.sh, left as is)"
    else echo "tansu: FAILED: $KAFKA_BOOTSTRAP is taken by a process that does not answer Kafka metadata" >&2; exit 1; fi
  else
    log=$TANSU_DIR/tansu.log
    # setsid: own session, so the broker survives the calling shell/make and CI step.
    # shellcheck disable=SC2086 # TANSU_EXTRA_ARGS is a word list on purpose
    setsid nohup "$TANSU" broker \
        --listener-url "tcp://$KAFKA_BOOTSTRAP" \
        --advertised-listener-url "tcp://$KAFKA_BOOTSTRAP" \
        --storage-engine "$TANSU_STORAGE" \
        ${TANSU_EXTRA_ARGS:-} >"$log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$TANSU_DIR/tansu.pid"
    deadline=$(( SECONDS + UP_TIMEOUT ))
    until port_open "$KAFKA_HOST" "$KAFKA_PORT"; do
      kill -0 "$pid" 2>/dev/null || fail tansu "$log" "broker exited"
      [ $SECONDS -lt $deadline ] || fail tansu "$log" "port $KAFKA_PORT not open after ${UP_TIMEOUT}s"
      sleep 0.1
    done
    "$PY" "$HERE/kafka_admin.py" --bootstrap "$KAFKA_BOOTSTRAP" ready --timeout "$UP_TIMEOUT" >/dev/null \
      || fail tansu "$log" "no answer to a metadata request"
    echo "tansu: up at $KAFKA_BOOTSTRAP, storage $TANSU_STORAGE (pid $pid, started in $(since "$t0"), log $log)"
  fi
}

# ----------------------------------------------------------- ClickHouse ---
up_clickhouse() {
  ch_query() { curl -sS --max-time 5 "$CLICKHOUSE_URL/" --data-binary "$1"; }
  ch_ready() { [ "$(curl -s --max-time 2 "$CLICKHOUSE_URL/ping" 2>/dev/null)" = "Ok." ] && ch_query 'SELECT version()' >/dev/null 2>&1; }
  t0=$(now)
  if pid=$(our_pid "$CH_DIR/clickhouse.pid" "clickhouse-server") && ch_ready; then
    echo "clickhouse: up at $CLICKHOUSE_URL, tcp $CLICKHOUSE_TCP_PORT, version $(ch_query 'SELECT version()') (pid $pid, already running)"
  elif port_open "$CLICKHOUSE_HOST" "$CLICKHOUSE_HTTP_PORT" || port_open "$CLICKHOUSE_HOST" "$CLICKHOUSE_TCP_PORT"; then
    if ch_ready; then echo "clickhouse: up at $CLICKHOUSE_URL, version $(ch_query 'SELECT version()') (not started by up.sh, left as is)"
    else echo "clickhouse: FAILED: port $CLICKHOUSE_HTTP_PORT or $CLICKHOUSE_TCP_PORT is taken by something that is not a healthy ClickHouse" >&2; exit 1; fi
  else
    # Our own config (not /etc/clickhouse-server): state, logs and ports under our control.
    mkdir -p "$CH_DIR"/{etc,data,tmp,user_files,format_schemas,log}
    for f in config.xml users.xml; do
      sed -e "s|@CH_DIR@|$CH_DIR|g" -e "s|@HTTP_PORT@|$CLICKHOUSE_HTTP_PORT|g" \
          -e "s|@TCP_PORT@|$CLICKHOUSE_TCP_PORT|g" -e "s|@LISTEN_HOST@|$CLICKHOUSE_HOST|g" \
          "$HERE/clickhouse/$f.in" >"$CH_DIR/etc/$f"
    done
    log=$CH_DIR/log/stdout.log
    # The server refuses to run as root with foreign-owned data; run it as the
    # Debian package's `clickhouse` user (no sudo here: setpriv).
    run_as=()
    if [ "$(id -u)" = 0 ]; then
      chown -R clickhouse:clickhouse "$CH_DIR"
      run_as=(setpriv --reuid=clickhouse --regid=clickhouse --init-groups)
    fi
    # LD_LIBRARY_PATH: the wheel's newer librdkafka, so the Kafka engine can talk to Tansu.
    (cd "$CH_DIR/data" && LD_LIBRARY_PATH="$STACK_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
       exec setsid nohup "${run_as[@]}" /usr/sbin/clickhouse-server --config-file="$CH_DIR/etc/config.xml" \
       >"$log" 2>&1 </dev/null) &
    pid=$!
    echo "$pid" >"$CH_DIR/clickhouse.pid"
    deadline=$(( SECONDS + UP_TIMEOUT ))
    until ch_ready; do
      kill -0 "$pid" 2>/dev/null || { cat "$CH_DIR/log/clickhouse-server.err.log" >>"$log" 2>/dev/null; fail clickhouse "$log" "server exited"; }
      [ $SECONDS -lt $deadline ] || fail clickhouse "$CH_DIR/log/clickhouse-server.err.log" "not ready after ${UP_TIMEOUT}s"
      sleep 0.2
    done
    echo "clickhouse: up at $CLICKHOUSE_URL, tcp $CLICKHOUSE_TCP_PORT, version $(ch_query 'SELECT version()') (pid $pid, started in $(since "$t0"), logs $CH_DIR/log)"
  fi
}

for svc in "${SERVICES[@]}"; do
  case $svc in
    tansu) up_tansu ;;
    clickhouse) up_clickhouse ;;
    *) echo "up.sh: unknown service $svc (tansu, clickhouse)" >&2; exit 2 ;;
  esac
done
