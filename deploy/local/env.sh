# shellcheck shell=bash
# Sourced by the deploy/local scripts (and usable from Makefiles/CI):
#   . deploy/local/env.sh
# Every value can be overridden from the environment.

# Installed tools (kept across runs, so a warm machine skips the install).
export STACK_HOME=${STACK_HOME:-/opt/ingest-stack}
export STACK_VENV=${STACK_VENV:-$STACK_HOME/venv}
export STACK_JARS=${STACK_JARS:-$STACK_HOME/jars}
export STACK_LIB=${STACK_LIB:-$STACK_HOME/lib}
# Runtime data, logs and pid files (safe to wipe with reset.sh).
export STACK_STATE=${STACK_STATE:-/var/tmp/ingest-stack}

# Kafka-API broker (Tansu). Consumers against Tansu should set fetch.wait.max.ms=10.
export KAFKA_HOST=${KAFKA_HOST:-127.0.0.1}
export KAFKA_PORT=${KAFKA_PORT:-9092}
export KAFKA_BOOTSTRAP=${KAFKA_BOOTSTRAP:-$KAFKA_HOST:$KAFKA_PORT}

# ClickHouse 18.16 server (Debian package, our own config).
export CLICKHOUSE_HOST=${CLICKHOUSE_HOST:-127.0.0.1}
export CLICKHOUSE_HTTP_PORT=${CLICKHOUSE_HTTP_PORT:-8123}
export CLICKHOUSE_TCP_PORT=${CLICKHOUSE_TCP_PORT:-9000}
export CLICKHOUSE_URL=${CLICKHOUSE_URL:-http://$CLICKHOUSE_HOST:$CLICKHOUSE_HTTP_PORT}

# Python of the stack venv (confluent-kafka, pyiceberg, chdb-core, pyspark, pytest).
export PY=${PY:-$STACK_VENV/bin/python}

# Tansu binary: PATH first, then cargo's default bin dir.
if [ -z "${TANSU:-}" ]; then
  if command -v tansu >/dev/null 2>&1; then TANSU=$(command -v tansu)
  else TANSU=${CARGO_HOME:-$HOME/.cargo}/bin/tansu; fi
fi
export TANSU

# Jars for the Spark Iceberg reader (written by install.sh).
export ICEBERG_SPARK_JARS=${ICEBERG_SPARK_JARS:-$STACK_JARS/iceberg-spark-runtime.jar,$STACK_JARS/iceberg-jackson-relocated.jar,/usr/share/java/sqlite-jdbc.jar,/usr/share/java/postgresql.jar}
