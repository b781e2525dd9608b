#!/usr/bin/env bash
# Creates a Kafka topic on the local broker if missing: topic.sh NAME PARTITIONS
# Idempotent ("already exists" is fine; a different partition count is an error).
# Uses confluent-kafka's AdminClient, so it works with any Kafka-API broker.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/env.sh"
[ $# -eq 2 ] || { echo "usage: $0 NAME PARTITIONS" >&2; exit 2; }
exec "$PY" "$HERE/kafka_admin.py" --bootstrap "$KAFKA_BOOTSTRAP" create-topic "$1" "$2"
