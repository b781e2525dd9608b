# shellcheck shell=bash
# Schema Registry with the Confluent API: Apicurio Registry, the real server, run
# from the Quarkus distribution Apicurio publishes on Maven Central (the `all`
# tar.gz of io.apicurio:apicurio-registry-app, fetched by schema-registry/pom.xml).
# Confluent-compatible API at $SCHEMA_REGISTRY_URL (/apis/ccompat/v7), storage in
# memory (H2): every start begins empty. Loopback only.
# Apicurio 3.x needs Java 21+: we use the newest JDK found (Temurin 25 in
# /usr/lib/jvm on this machine kind); with only Java 17 we run 2.6.x, which has the
# same ccompat v7 API. SCHEMA_REGISTRY_JAVA / SCHEMA_REGISTRY_APICURIO_VERSION
# override the choice.
SCHEMA_REGISTRY_HOME=$STACK_HOME/schema-registry
SCHEMA_REGISTRY_DIR=$STACK_STATE/schema_registry
SCHEMA_REGISTRY_HEAP_OPTS=${SCHEMA_REGISTRY_HEAP_OPTS:--Xms64m -Xmx384m}
SCHEMA_REGISTRY_APICURIO_3=3.3.3          # Java 21+
SCHEMA_REGISTRY_APICURIO_2=2.6.13.Final   # Java 17

# Major version of a java binary (from its JDK's release file, else `java -version`).
_schema_registry_java_major() { # JAVA
  local rel v
  rel=$(dirname "$(dirname "$(readlink -f "$1")")")/release
  v=$(sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$rel" 2>/dev/null)
  [ -n "$v" ] || v=$("$1" -version 2>&1 | sed -n 's/.* version "\([0-9]*\).*/\1/p' | head -1)
  echo "${v:-0}"
}

# Sets SR_JAVA, SR_JAVA_MAJOR, SR_VERSION, SR_APP (install dir) and SR_JAR.
_schema_registry_pick() {
  local j m best='' best_m=0
  if [ -n "${SCHEMA_REGISTRY_JAVA:-}" ]; then
    best=$SCHEMA_REGISTRY_JAVA; best_m=$(_schema_registry_java_major "$best")
  else
    for j in /usr/lib/jvm/*/bin/java "$(command -v java 2>/dev/null || true)"; do
      [ -x "$j" ] || continue
      m=$(_schema_registry_java_major "$j")
      [ "$m" -gt "$best_m" ] && { best=$j; best_m=$m; }
    done
  fi
  if [ -z "$best" ] || [ "$best_m" -lt 17 ]; then
    echo "schema_registry: FAILED: no Java 17+ found (set SCHEMA_REGISTRY_JAVA)" >&2; return 1
  fi
  SR_JAVA=$best; SR_JAVA_MAJOR=$best_m
  if [ -n "${SCHEMA_REGISTRY_APICURIO_VERSION:-}" ]; then SR_VERSION=$SCHEMA_REGISTRY_APICURIO_VERSION
  elif [ "$best_m" -ge 21 ]; then SR_VERSION=$SCHEMA_REGISTRY_APICURIO_3
  else SR_VERSION=$SCHEMA_REGISTRY_APICURIO_2; fi
  if [[ $SR_VERSION != 2.* ]] && [ "$best_m" -lt 21 ]; then
    echo "schema_registry: FAILED: Apicurio $SR_VERSION needs Java 21+, found $best_m ($best)" >&2; return 1
  fi
  SR_APP=$SCHEMA_REGISTRY_HOME/apicurio-registry-$SR_VERSION
  # 3.x: Quarkus fast-jar (quarkus-run.jar); 2.x: legacy-jar (...-runner.jar).
  SR_JAR=$SR_APP/quarkus-run.jar
  [ -f "$SR_JAR" ] || SR_JAR=$SR_APP/apicurio-registry-app-$SR_VERSION-runner.jar
}

install_schema_registry() {
  _schema_registry_pick || return 1
  step "schema registry (apicurio-registry $SR_VERSION, maven)"
  if [ "$(cat "$SR_APP/.installed" 2>/dev/null)" = "$SR_VERSION" ] && [ -f "$SR_JAR" ]; then
    done_ "present (java $SR_JAVA_MAJOR)"; return
  fi
  mkdir -p "$SCHEMA_REGISTRY_HOME"
  rm -rf "$SCHEMA_REGISTRY_HOME"/.install.*   # left by an interrupted run (install.sh holds a lock)
  local tmp log=$STACK_HOME/schema-registry-maven.log
  tmp=$(mktemp -d "$SCHEMA_REGISTRY_HOME/.install.XXXXXX")
  # -C: fail on a checksum mismatch of the ~160 MB archive.
  if ! mvn -q -B -C -f "$STACK_DIR/schema-registry/pom.xml" -Dapicurio.version="$SR_VERSION" \
         dependency:copy-dependencies -DoutputDirectory="$tmp/dl" >"$log" 2>&1; then
    tail -30 "$log" >&2; rm -rf "$tmp"; return 1
  fi
  mkdir "$tmp/app"
  tar -xzf "$tmp/dl/apicurio-registry-app-$SR_VERSION-all.tar.gz" -C "$tmp/app" --no-same-owner ||
    { rm -rf "$tmp"; return 1; }
  rm -rf "$tmp/dl" "$SR_APP"
  mv "$tmp/app" "$SR_APP"; rmdir "$tmp"
  _schema_registry_pick
  [ -f "$SR_JAR" ] || { echo "FAILED: no runnable jar in $SR_APP" >&2; return 1; }
  echo "$SR_VERSION" >"$SR_APP/.installed"
  done_ "installed ($(du -sm "$SR_APP" | cut -f1) MB, java $SR_JAVA_MAJOR)"
}

ready_schema_registry() {
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$SCHEMA_REGISTRY_URL/subjects" 2>/dev/null)" = 200 ]
}

up_schema_registry() {
  _schema_registry_pick || exit 1
  if [ ! -f "$SR_APP/.installed" ] || [ ! -f "$SR_JAR" ]; then
    echo "schema_registry: FAILED: $SR_APP missing, run deploy/local/install.sh first" >&2; exit 1
  fi
  mkdir -p "$SCHEMA_REGISTRY_DIR/tmp"
  # Small pool for the in-memory H2 (the default keeps 20 connections open).
  local pool
  if [[ $SR_VERSION == 2.* ]]; then
    pool=(-Dquarkus.datasource.jdbc.min-size=2 -Dquarkus.datasource.jdbc.initial-size=2)
  else
    pool=(-Dapicurio.datasource.jdbc.min-size=2 -Dapicurio.datasource.jdbc.initial-size=2)
  fi
  # 3.x also opens a management interface (health, metrics), by default on
  # 0.0.0.0:9000, ClickHouse's TCP port: keep it on loopback, on a free port.
  # C1 only and the serial GC: a quick start and little CPU next to the builds.
  # shellcheck disable=SC2086
  start_service schema_registry "schema-registry/apicurio-registry-" ready_schema_registry \
    "$SCHEMA_REGISTRY_URL (Apicurio Registry $SR_VERSION, in memory)" -- \
    "$SR_JAVA" $SCHEMA_REGISTRY_HEAP_OPTS -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
      -Djava.io.tmpdir="$SCHEMA_REGISTRY_DIR/tmp" \
      -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$SCHEMA_REGISTRY_PORT" \
      -Dquarkus.management.host=127.0.0.1 -Dquarkus.management.port=0 \
      "${pool[@]}" -jar "$SR_JAR"
}
