#!/usr/bin/env bash
# Starts the local stack, each service in the background with its log and pid file
# under $STACK_STATE/NAME/. Skips whatever already answers, waits until each one
# answers a real request, prints one line per service. Needs install.sh first.
#   up.sh [SERVICE...]   (default: all of postgresql nats kafka clickhouse seaweedfs schema_registry)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"

[ -x "$PY" ] || { echo "up.sh: $PY missing, run deploy/local/install.sh first" >&2; exit 1; }
mkdir -p "$STACK_STATE"
SERVICES=("$@"); [ ${#SERVICES[@]} -gt 0 ] || SERVICES=("${STACK_SERVICES[@]}")
for svc in "${SERVICES[@]}"; do
  [[ " ${STACK_SERVICES[*]} " == *" $svc "* ]] || { echo "up.sh: unknown service $svc (${STACK_SERVICES[*]})" >&2; exit 2; }
  "up_$svc"
done
