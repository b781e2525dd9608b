#!/usr/bin/env bash
# Installs the local service stack (Tansu broker, ClickHouse 18.16, JDBC jars,
# Python venv with the independent readers' libraries, Spark jar fix).
# Idempotent: every step checks what is already there and skips it, so a warm
# machine re-runs this in a second or two. Safe to run from make/CI as root.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/env.sh"

export DEBIAN_FRONTEND=noninteractive
mkdir -p "$STACK_HOME" "$STACK_JARS" "$STACK_LIB"

# One install at a time (make demo and make test may race on a fresh machine).
exec 9>"$STACK_HOME/.install.lock"
flock 9

step_t0=0
step() { step_t0=$(date +%s); printf '[install] %s ... ' "$1"; }
done_() { echo "$1 ($(( $(date +%s) - step_t0 ))s)"; }

# ------------------------------------------------------------------ apt ---
APT_PKGS=(clickhouse-server clickhouse-client
          libxerial-sqlite-jdbc-java libpostgresql-jdbc-java libjarjar-java)
step "apt packages"
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  done_ "present"
else
  # Keep the Debian package from starting its own clickhouse-server (its
  # postinst runs invoke-rc.d ... start): we run our own process and config.
  # policy-rc.d exit 101 = "action forbidden"; only add it if none exists.
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  cleanup_policy() { [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d; }
  trap cleanup_policy EXIT
  apt_install() { apt-get install -y -q --no-install-recommends "${missing[@]}" >"$STACK_HOME/apt.log" 2>&1; }
  # A fresh machine may have no (or stale) package lists: update once, retry.
  if ! apt_install; then
    apt-get update -q >>"$STACK_HOME/apt.log" 2>&1
    apt_install || { tail -20 "$STACK_HOME/apt.log" >&2; exit 1; }
  fi
  cleanup_policy; trap - EXIT
  done_ "installed ${missing[*]}"
fi

# ---------------------------------------------------------- python venv ---
REQ="$HERE/requirements.txt"
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
want=$(sha256sum "$REQ" | cut -c1-64)
if [ "$(cat "$marker" 2>/dev/null)" = "$want" ]; then
  done_ "requirements unchanged"
else
  "$PY" -m pip install -q --disable-pip-version-check --no-input --progress-bar off -r "$REQ"
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
# Debian's librdkafka 2.0.2 (linked by clickhouse-server's Kafka engine and kcat)
# is rejected by Tansu ("Read underflow"); the wheel's newer ABI-compatible copy,
# first on LD_LIBRARY_PATH, fixes that.
step "librdkafka"
src=$(newest "$SITE/confluent_kafka.libs/librdkafka-*.so.1")
if cmp -s "$src" "$STACK_LIB/librdkafka.so.1"; then
  done_ "present"
else
  cp "$src" "$STACK_LIB/librdkafka.so.1.tmp" && mv "$STACK_LIB/librdkafka.so.1.tmp" "$STACK_LIB/librdkafka.so.1"
  done_ "copied $(basename "$src")"
fi

# ---------------------------------------------------------------- Tansu ---
# Build with a storage engine: default features have none (broker exits with
# FeatureNotEnabled). ~12 min on 2 cores, so only when missing, and last so the
# quick steps are done first on a fresh machine.
TANSU_FEATURES=${TANSU_FEATURES:-dynostore,postgres}
# Pinned: the flags used by up.sh are those of 0.6.0.
TANSU_VERSION=${TANSU_VERSION:-0.6.0}
step "tansu"
tansu_present() { command -v tansu >/dev/null 2>&1 || [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]; }
# A tansu that cargo installed without a storage feature is useless: rebuild it.
tansu_featureless() {
  python3 - "${CARGO_HOME:-$HOME/.cargo}/.crates2.json" <<'PYEOF'
import json, sys
try:
    installs = json.load(open(sys.argv[1]))["installs"]
except Exception:
    sys.exit(1)
sys.exit(0 if any(k.startswith("tansu ") and "dynostore" not in v.get("features", []) for k, v in installs.items()) else 1)
PYEOF
}
if tansu_present && ! tansu_featureless; then
  done_ "present ($(tansu_bin=$(command -v tansu || echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"); "$tansu_bin" --version 2>/dev/null))"
else
  # Another `cargo install tansu` (e.g. a previous run in the background) would
  # race us for the same target dir and output: wait for it instead.
  if pgrep -f '^[^ ]*cargo install tansu' >/dev/null; then
    printf 'waiting for the running cargo install tansu... '
    while pgrep -f '^[^ ]*cargo install tansu' >/dev/null; do sleep 10; done
  fi
  if tansu_present; then
    done_ "built by the other cargo install"
  else
    echo
    cargo install tansu --locked --force --features "$TANSU_FEATURES" ${TANSU_VERSION:+--version "$TANSU_VERSION"}
    done_ "installed"
  fi
fi

echo "[install] ok: STACK_HOME=$STACK_HOME tansu=$(command -v tansu || echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu")"
