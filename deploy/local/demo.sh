#!/usr/bin/env bash
# `make demo`: installs what is missing, starts the local stack (Apache Kafka, ClickHouse, ...), builds the
# service, produces sample events to two topics, runs the pipeline until both sinks
# hold them, stops it with SIGTERM, and prints one aggregate from each sink.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$HERE/env.sh"
EVENTS=${DEMO_EVENTS:-200000}
LOGS=${DEMO_LOGS:-50000}

step() { printf '\n== %s\n' "$*"; }

step "install (skips what is already there)"
"$HERE/install.sh"
step "start the local stack"
"$HERE/up.sh"
step "build the service"
(cd "$ROOT" && cargo build --release -p ingest 2>&1 | tail -n 1)
BIN=$ROOT/target/release/ingest

# Every demo run starts from empty tables and new topics, so its answer is exact.
export DEMO_RUN="-$(date +%s)"
DEMO_DIR=$STACK_STATE/demo
rm -rf "$DEMO_DIR"
curl -sf "$CLICKHOUSE_URL/" --data-binary "DROP DATABASE IF EXISTS analytics" >/dev/null
"$HERE/topic.sh" "demo-events$DEMO_RUN" 4
"$HERE/topic.sh" "demo-logs$DEMO_RUN" 3
"$HERE/topic.sh" demo-dead-letter 1
"$BIN" validate --config "$HERE/demo.yaml" --connect

step "produce $EVENTS events and $LOGS log lines"
"$BIN" produce --brokers "$KAFKA_BOOTSTRAP" --topic "demo-events$DEMO_RUN" \
  --schema "$ROOT/schemas/examples/events.yaml" --id-field event_id --count "$EVENTS"
"$BIN" produce --brokers "$KAFKA_BOOTSTRAP" --topic "demo-logs$DEMO_RUN" \
  --schema "$ROOT/schemas/examples/logs.yaml" --id-field log_id --count "$LOGS"

step "run the pipeline until both sinks hold every event"
mkdir -p "$DEMO_DIR"
"$BIN" run --config "$HERE/demo.yaml" >"$DEMO_DIR/ingest.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
start=$(date +%s.%N)
if ! "$PY" "$HERE/demo_compare.py" --clickhouse-url "$CLICKHOUSE_URL" --database analytics \
  --catalog-uri "sqlite://$DEMO_DIR/catalog.db" --warehouse "file://$DEMO_DIR/warehouse" \
  --table analytics.events --wait-rows "$EVENTS" --timeout 300 >"$DEMO_DIR/compare.txt"; then
  cat "$DEMO_DIR/compare.txt"; tail -n 20 "$DEMO_DIR/ingest.log"; exit 1
fi
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
kill -TERM $PID
wait $PID && status=0 || status=$?
trap - EXIT
echo "pipeline stopped with exit code $status after ingesting $EVENTS events into both sinks in ${elapsed}s"
echo "(log: $DEMO_DIR/ingest.log)"

step "where each route and sink stands, from Kafka and the sinks alone (ingest status)"
"$BIN" status --config "$HERE/demo.yaml"

step "the same aggregate from ClickHouse and from the Iceberg table (read by pyiceberg)"
cat "$DEMO_DIR/compare.txt"
[ "$status" -eq 0 ]
