# shellcheck shell=bash
# Sourced by the deploy/local scripts (and usable from Makefiles/CI):
#   . deploy/local/env.sh
# Every value can be overridden from the environment. docs/testing.md lists each
# service with its version, ports and the tests that use it.

# Installed tools (kept across runs, so a warm machine skips the install).
export STACK_HOME=${STACK_HOME:-/opt/ingest-stack}
export STACK_VENV=${STACK_VENV:-$STACK_HOME/venv}
export STACK_JARS=${STACK_JARS:-$STACK_HOME/jars}
export STACK_LIB=${STACK_LIB:-$STACK_HOME/lib}
# Runtime data, logs and pid files (safe to wipe with reset.sh).
export STACK_STATE=${STACK_STATE:-/var/tmp/ingest-stack}

# TLS: a self-signed CA made by up.sh; it signs the Kafka SASL_SSL listener's and
# ClickHouse's HTTPS certificates (names localhost and 127.0.0.1).
export STACK_TLS=${STACK_TLS:-$STACK_STATE/tls}
export STACK_CA=${STACK_CA:-$STACK_TLS/ca.pem}
# Generated passwords, one file each (mode 600), made once per $STACK_STATE.
export STACK_SECRETS=${STACK_SECRETS:-$STACK_STATE/secrets}

# Apache Kafka (KRaft, one combined broker + controller).
export KAFKA_VERSION=${KAFKA_VERSION:-4.4.0}
export KAFKA_HOST=${KAFKA_HOST:-127.0.0.1}
export KAFKA_PORT=${KAFKA_PORT:-9092}                  # PLAINTEXT
export KAFKA_BOOTSTRAP=${KAFKA_BOOTSTRAP:-$KAFKA_HOST:$KAFKA_PORT}
export KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
export KAFKA_SASL_PORT=${KAFKA_SASL_PORT:-9094}        # SASL_SSL, SCRAM-SHA-512, $STACK_CA
export KAFKA_SASL_BOOTSTRAP=${KAFKA_SASL_BOOTSTRAP:-localhost:$KAFKA_SASL_PORT}
export KAFKA_SASL_USER=${KAFKA_SASL_USER:-ingest}
export KAFKA_SASL_PASSWORD_FILE=${KAFKA_SASL_PASSWORD_FILE:-$STACK_SECRETS/kafka-$KAFKA_SASL_USER.password}
export KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}

# ClickHouse 18.16 server (Debian package, our own config).
export CLICKHOUSE_HOST=${CLICKHOUSE_HOST:-127.0.0.1}
export CLICKHOUSE_HTTP_PORT=${CLICKHOUSE_HTTP_PORT:-8123}
export CLICKHOUSE_HTTPS_PORT=${CLICKHOUSE_HTTPS_PORT:-8443}
export CLICKHOUSE_TCP_PORT=${CLICKHOUSE_TCP_PORT:-9000}
export CLICKHOUSE_URL=${CLICKHOUSE_URL:-http://$CLICKHOUSE_HOST:$CLICKHOUSE_HTTP_PORT}
export CLICKHOUSE_HTTPS_URL=${CLICKHOUSE_HTTPS_URL:-https://localhost:$CLICKHOUSE_HTTPS_PORT}
# User `ingest` (password generated once) beside the password-less `default`.
export CLICKHOUSE_INGEST_PASSWORD_FILE=${CLICKHOUSE_INGEST_PASSWORD_FILE:-$STACK_SECRETS/clickhouse-ingest.password}

# PostgreSQL (Debian), for the SQL Iceberg catalog tests, loopback only: user
# `postgres` without password (trust), user `ingest` with a generated password.
export POSTGRES_VERSION=${POSTGRES_VERSION:-15}
export POSTGRES_PORT=${POSTGRES_PORT:-5432}
export POSTGRES_INGEST_PASSWORD_FILE=${POSTGRES_INGEST_PASSWORD_FILE:-$STACK_SECRETS/postgres-ingest.password}
# NATS (Debian nats-server, JetStream on): part of the machine's standard stack.
export NATS_PORT=${NATS_PORT:-4222}

# SeaweedFS `weed mini`: S3 and an Iceberg REST catalog, data on disk.
export SEAWEED_S3_PORT=${SEAWEED_S3_PORT:-8333}
export SEAWEED_ICEBERG_PORT=${SEAWEED_ICEBERG_PORT:-8181}
export SEAWEED_S3_URL=${SEAWEED_S3_URL:-http://127.0.0.1:$SEAWEED_S3_PORT}
export SEAWEED_ICEBERG_URL=${SEAWEED_ICEBERG_URL:-http://127.0.0.1:$SEAWEED_ICEBERG_PORT}
export SEAWEED_TABLE_BUCKET=${SEAWEED_TABLE_BUCKET:-warehouse}
export SEAWEED_ACCESS_KEY=${SEAWEED_ACCESS_KEY:-ingest-stack}
# Local test credentials of a loopback-only store, not a secret of any deployment.
export SEAWEED_SECRET_KEY=${SEAWEED_SECRET_KEY:-ingest-stack-secret}

# Schema Registry (Confluent API).
export SCHEMA_REGISTRY_PORT=${SCHEMA_REGISTRY_PORT:-8081}
export SCHEMA_REGISTRY_URL=${SCHEMA_REGISTRY_URL:-http://127.0.0.1:$SCHEMA_REGISTRY_PORT/apis/ccompat/v7}

# Python of the stack venv (confluent-kafka, pyiceberg, chdb-core, pyspark, pytest).
export PY=${PY:-$STACK_VENV/bin/python}

# Jars for the Spark Iceberg reader (written by install.sh).
export ICEBERG_SPARK_JARS=${ICEBERG_SPARK_JARS:-$STACK_JARS/iceberg-spark-runtime.jar,$STACK_JARS/iceberg-jackson-relocated.jar,/usr/share/java/sqlite-jdbc.jar,/usr/share/java/postgresql.jar}
