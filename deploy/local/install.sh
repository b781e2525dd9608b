#!/usr/bin/env bash
# Installs the local service stack: the Python venv with the independent readers'
# libraries, the Spark jar fix, then every service of services/*.sh (PostgreSQL,
# NATS, Apache Kafka, ClickHouse 18.16, SeaweedFS, the Schema Registry).
# Idempotent: every step checks what is already there and skips it, so a warm
# machine re-runs this in a few seconds. Safe to run from make/CI as root. Each
# step prints how long it took (a fresh machine's times are in docs/testing.md).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
mkdir -p "$STACK_HOME" "$STACK_JARS" "$STACK_LIB"

# One install at a time (make demo and make test may race on a fresh machine).
exec 9>"$STACK_HOME/.install.lock"
flock 9

# ------------------------------------------------------------------ apt ---
# JDBC drivers and jarjar for the Spark reader; openssl for the stack's CA; prometheus
# for the tests of deploy/monitoring (rules and dashboard queries, tests/e2e/test_prometheus.py);
# chromium (headless, through chromium-driver) loads the status page in tests/e2e/test_status_page.py.
step "apt packages"
r=$(apt_ensure libxerial-sqlite-jdbc-java libpostgresql-jdbc-java libjarjar-java openssl curl prometheus chromium chromium-driver); done_ "$r"

# ---------------------------------------------------------- python venv ---
# The readers' and tests' libraries, and the deployment checks' pinned tools (make deploy-check).
REQS=("$HERE/requirements.txt" "$HERE/../../tests/deploy/requirements.txt")
step "python venv"
if ! "$PY" -c 'import sys' >/dev/null 2>&1; then
  rm -rf "$STACK_VENV"
  base=${STACK_PYTHON:-python3}
  if ! "$base" -m venv "$STACK_VENV" >/dev/null 2>&1; then
    # Debian's python3 needs python3-venv for ensurepip.
    apt-get install -y -q python3-venv >>"$STACK_HOME/apt.log" 2>&1 || { apt-get update -q; apt-get install -y -q python3-venv; }
    rm -rf "$STACK_VENV"; /usr/bin/python3 -m venv "$STACK_VENV"
  fi
fi
marker="$STACK_VENV/.requirements.sha256"
want=$(cat "${REQS[@]}" | sha256sum | cut -c1-64)
if [ "$(cat "$marker" 2>/dev/null)" = "$want" ]; then
  done_ "requirements unchanged"
else
  "$PY" -m pip install -q --disable-pip-version-check --no-input --progress-bar off -r "${REQS[0]}" -r "${REQS[1]}"
  echo "$want" >"$marker"
  done_ "pip installed"
fi

SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# ------------------------------------------------------- Spark jar fix ---
# iceberg-spark-runtime 1.10.2 (from snowpark-connect-deps-iceberg) lacks its
# relocated Jackson classes (NoClassDefFoundError .../shaded/.../JsonFactoryBuilder).
# Rebuild them from pyspark's own Jackson 2.15.2 jars, relocated with jarjar.
step "spark jars"
# newest matching file of a glob, or fail with a clear message
newest() { local f; f=$(find "$(dirname "$1")" -maxdepth 1 -name "$(basename "$1")" | sort -V | tail -1)
           [ -n "$f" ] || { echo "install.sh: nothing matches $1 (pip install incomplete?)" >&2; exit 1; }; echo "$f"; }
rt=$(newest "$SITE/snowpark_connect_deps_iceberg/jars/iceberg-spark-runtime-3.5_2.12-*.jar")
ln -sfn "$rt" "$STACK_JARS/$(basename "$rt")"
ln -sfn "$rt" "$STACK_JARS/iceberg-spark-runtime.jar"
jackson=()
for a in core databind annotations; do
  jackson+=("$(newest "$SITE/pyspark/jars/jackson-$a-2.*.jar")")
done
out="$STACK_JARS/iceberg-jackson-relocated.jar"
fresh=1
for j in "${jackson[@]}"; do [ "$out" -nt "$j" ] || fresh=; done
if [ -n "$fresh" ]; then
  done_ "present ($(basename "$rt"))"
else
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  # Merge the three jars; multi-release and module descriptors confuse jarjar.
  "$PY" - "$tmp/merged.jar" "${jackson[@]}" <<'PYEOF'
import sys, zipfile
out, jars = sys.argv[1], sys.argv[2:]
seen = set()
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for j in jars:
        with zipfile.ZipFile(j) as src:
            for info in src.infolist():
                n = info.filename
                if n.startswith("META-INF/versions/") or n.endswith("module-info.class") or n in seen:
                    continue
                seen.add(n)
                z.writestr(info, src.read(n))
PYEOF
  echo 'rule com.fasterxml.jackson.** org.apache.iceberg.shaded.com.fasterxml.jackson.@1' >"$tmp/rules.txt"
  java -jar /usr/share/java/jarjar.jar process "$tmp/rules.txt" "$tmp/merged.jar" "$tmp/relocated.jar"
  mv "$tmp/relocated.jar" "$out"
  rm -rf "$tmp"; trap - EXIT
  done_ "built $(basename "$out")"
fi

# ------------------------------------------------------------ librdkafka ---
# Debian's librdkafka 2.0.2 is linked by clickhouse-server's Kafka engine (the
# benchmark's baseline); the wheel's newer ABI-compatible copy, first on
# LD_LIBRARY_PATH, gives it a client as current as the one the service uses.
step "librdkafka"
src=$(newest "$SITE/confluent_kafka.libs/librdkafka-*.so.1")
if cmp -s "$src" "$STACK_LIB/librdkafka.so.1"; then
  done_ "present"
else
  cp "$src" "$STACK_LIB/librdkafka.so.1.tmp" && mv "$STACK_LIB/librdkafka.so.1.tmp" "$STACK_LIB/librdkafka.so.1"
  done_ "copied $(basename "$src")"
fi

# ------------------------------------------------------------- services ---
for svc in "${STACK_SERVICES[@]}"; do "install_$svc"; done

echo "[install] ok: STACK_HOME=$STACK_HOME"
