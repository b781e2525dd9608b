#!/usr/bin/env bash
# Stops the services started by up.sh (through their pid files). Idempotent: a
# service that is not running is reported and skipped. Never kills by name.
#   down.sh [SERVICE...]   (default: all, in reverse start order)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"

# The command-line part that identifies each service's process (see services/*.sh).
declare -A PATTERN=([postgresql]=bin/postgres [nats]=nats-server [kafka]=kafka.Kafka
                    [clickhouse]=clickhouse-server [seaweedfs]="weed mini" [schema_registry]=schema-registry/apicurio-registry-)
SERVICES=("$@")
if [ ${#SERVICES[@]} -eq 0 ]; then
  for (( i=${#STACK_SERVICES[@]}-1; i>=0; i-- )); do SERVICES+=("${STACK_SERVICES[$i]}"); done
fi
for svc in "${SERVICES[@]}"; do
  [ -n "${PATTERN[$svc]:-}" ] || { echo "down.sh: unknown service $svc (${STACK_SERVICES[*]})" >&2; exit 2; }
  stop_service "$svc" "${PATTERN[$svc]}"
done
