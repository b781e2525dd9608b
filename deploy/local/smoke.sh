#!/usr/bin/env bash
# Quick end-to-end check of a running stack (after up.sh): produce + consume
# SMOKE_MESSAGES (default 10000) through Kafka, one ClickHouse query.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/env.sh"
exec "$PY" "$HERE/smoke.py"
