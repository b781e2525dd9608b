# shellcheck shell=bash
# Apache Kafka $KAFKA_VERSION, KRaft, one combined broker + controller, run from the
# jars Maven resolves for kafka/pom.xml (the release scripts are not on Maven
# Central; they only put these jars on a classpath and call the same main classes).
KAFKA_LIBS=$STACK_HOME/kafka-$KAFKA_VERSION/libs
KAFKA_DIR=$STACK_STATE/kafka

install_kafka() {
  step "kafka $KAFKA_VERSION (maven)"
  local marker=$KAFKA_LIBS/.pom.sha256 want
  want=$(sed "s/<kafka.version>[^<]*</<kafka.version>$KAFKA_VERSION</" "$STACK_DIR/kafka/pom.xml" | sha256sum | cut -c1-64)
  if [ "$(cat "$marker" 2>/dev/null)" = "$want" ]; then done_ "present"; return; fi
  rm -rf "$KAFKA_LIBS"; mkdir -p "$KAFKA_LIBS"
  mvn -q -B -f "$STACK_DIR/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS" \
      >"$STACK_HOME/kafka-maven.log" 2>&1 || { tail -30 "$STACK_HOME/kafka-maven.log" >&2; return 1; }
  echo "$want" >"$marker"
  done_ "resolved $(ls "$KAFKA_LIBS" | wc -l) jars"
}

kafka_java() { # MAIN-CLASS ARGS...
  java $KAFKA_HEAP_OPTS -Dlog4j2.configurationFile="$STACK_DIR/kafka/log4j2.properties" \
       -cp "$KAFKA_LIBS/*" "$@"
}

ready_kafka() {
  port_open "$KAFKA_HOST" "$KAFKA_PORT" &&
    "$PY" "$STACK_DIR/kafka_admin.py" --bootstrap "$KAFKA_BOOTSTRAP" ready --timeout 3 >/dev/null 2>&1
}

up_kafka() {
  [ -d "$KAFKA_LIBS" ] || { echo "kafka: FAILED: $KAFKA_LIBS missing, run deploy/local/install.sh first" >&2; exit 1; }
  ensure_tls
  mkdir -p "$KAFKA_DIR"
  local props=$KAFKA_DIR/server.properties pw
  sed -e "s|@HOST@|$KAFKA_HOST|g" -e "s|@PORT@|$KAFKA_PORT|g" -e "s|@SASL_PORT@|$KAFKA_SASL_PORT|g" \
      -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" -e "s|@TLS@|$STACK_TLS|g" -e "s|@DIR@|$KAFKA_DIR|g" \
      "$STACK_DIR/kafka/server.properties.in" >"$props"
  if [ ! -s "$KAFKA_DIR/data/meta.properties" ] && ! our_pid "$KAFKA_DIR/kafka.pid" kafka.Kafka >/dev/null; then
    # Format once; the SCRAM user exists from the first start (no admin round trip).
    pw=$(stack_secret "$KAFKA_SASL_PASSWORD_FILE")
    kafka_java kafka.tools.StorageTool format --standalone -t "$(kafka_java kafka.tools.StorageTool random-uuid)" \
      -c "$props" --add-scram "SCRAM-SHA-512=[name=$KAFKA_SASL_USER,password=$pw]" \
      >"$KAFKA_DIR/format.log" 2>&1 || fail kafka "$KAFKA_DIR/format.log" "storage format failed"
  fi
  start_service kafka kafka.Kafka ready_kafka \
    "$KAFKA_BOOTSTRAP (PLAINTEXT), $KAFKA_SASL_BOOTSTRAP (SASL_SSL SCRAM-SHA-512)" -- \
    java $KAFKA_HEAP_OPTS -Dlog4j2.configurationFile="$STACK_DIR/kafka/log4j2.properties" \
         -cp "$KAFKA_LIBS/*" kafka.Kafka "$props"
}
