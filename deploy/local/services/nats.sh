# shellcheck shell=bash
# NATS (Debian nats-server, JetStream on), loopback. Part of this machine kind's
# standard services, which it no longer starts itself; no test of ours uses it yet.
NATS_DIR=$STACK_STATE/nats

install_nats() {
  step "nats-server (apt)"
  local r; r=$(apt_ensure nats-server); done_ "$r"
}

ready_nats() {
  # A NATS server greets every connection with an INFO line.
  ( exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT" && read -r -t 2 line <&3 && [[ $line == INFO* ]] ) 2>/dev/null
}

up_nats() {
  mkdir -p "$NATS_DIR/jetstream"
  start_service nats nats-server ready_nats "nats://127.0.0.1:$NATS_PORT" -- \
    nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$NATS_DIR/jetstream"
}
