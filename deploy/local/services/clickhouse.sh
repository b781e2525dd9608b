# shellcheck shell=bash
# ClickHouse 18.16 (Debian's clickhouse-server, the only server installable here),
# run with our own config under $STACK_STATE/clickhouse: HTTP, HTTPS (the stack's
# CA) and native TCP on loopback. ClickHouse 26.9 is reached in process through
# chDB instead (tests/fixtures), see docs/testing.md.
CH_DIR=$STACK_STATE/clickhouse

install_clickhouse() {
  step "clickhouse 18.16 (apt)"
  local r; r=$(apt_ensure clickhouse-server clickhouse-client); done_ "$r"
}

ch_query() { curl -sS --max-time 5 "$CLICKHOUSE_URL/" --data-binary "$1"; }
ready_clickhouse() {
  [ "$(curl -s --max-time 2 "$CLICKHOUSE_URL/ping" 2>/dev/null)" = "Ok." ] && ch_query 'SELECT version()' >/dev/null 2>&1
}

# Renders the config and hands the data directory to the server's user: only while
# the server is not running (it rewrites its parts meanwhile).
prepare_clickhouse() {
  ensure_tls
  mkdir -p "$CH_DIR"/{etc,data,tmp,user_files,format_schemas,log}
  local pw sha
  pw=$(stack_secret "$CLICKHOUSE_INGEST_PASSWORD_FILE")
  sha=$(printf '%s' "$pw" | sha256sum | cut -c1-64)
  for f in config.xml users.xml; do
    sed -e "s|@CH_DIR@|$CH_DIR|g" -e "s|@HTTP_PORT@|$CLICKHOUSE_HTTP_PORT|g" \
        -e "s|@HTTPS_PORT@|$CLICKHOUSE_HTTPS_PORT|g" -e "s|@TLS@|$STACK_TLS|g" \
        -e "s|@TCP_PORT@|$CLICKHOUSE_TCP_PORT|g" -e "s|@LISTEN_HOST@|$CLICKHOUSE_HOST|g" \
        -e "s|@INGEST_PASSWORD_SHA256@|$sha|g" \
        "$STACK_DIR/clickhouse/$f.in" >"$CH_DIR/etc/$f"
  done
  # The server reads its key as the `clickhouse` user: a copy it owns.
  install -m 600 "$STACK_TLS/server.key" "$CH_DIR/etc/server.key"
  if [ "$(id -u)" = 0 ]; then
    chown -R clickhouse:clickhouse "$CH_DIR"
    chmod 755 "$STACK_STATE" "$STACK_TLS"; chmod 644 "$STACK_TLS/server.pem"
  fi
}

up_clickhouse() {
  ready_clickhouse || prepare_clickhouse
  # The server refuses to run as root with foreign-owned data; run it as the
  # Debian package's `clickhouse` user (no sudo here: setpriv).
  local run_as=()
  [ "$(id -u)" != 0 ] || run_as=(setpriv --reuid=clickhouse --regid=clickhouse --init-groups)
  # LD_LIBRARY_PATH: install.sh's newer librdkafka for the Kafka table engine (the
  # benchmark's baseline) instead of Debian's 2.0.2.
  (cd "$CH_DIR/data" && export LD_LIBRARY_PATH="$STACK_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" &&
   start_service clickhouse clickhouse-server ready_clickhouse \
     "$CLICKHOUSE_URL, $CLICKHOUSE_HTTPS_URL, tcp $CLICKHOUSE_TCP_PORT" -- \
     "${run_as[@]}" /usr/sbin/clickhouse-server --config-file="$CH_DIR/etc/config.xml")
}
