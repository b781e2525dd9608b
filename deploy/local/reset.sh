#!/usr/bin/env bash
# Stops the stack and wipes its runtime state ($STACK_STATE: ClickHouse data,
# logs, pid files). Installed tools under $STACK_HOME are kept.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/env.sh"
"$HERE/down.sh"
case "$STACK_STATE" in ""|/) echo "reset.sh: refusing to wipe STACK_STATE='$STACK_STATE'" >&2; exit 1;; esac
rm -rf "$STACK_STATE"
echo "reset: removed $STACK_STATE"
