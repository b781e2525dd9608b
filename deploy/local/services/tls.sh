# shellcheck shell=bash
# The stack's private CA and one server certificate (names localhost, 127.0.0.1),
# made once per $STACK_STATE with openssl. The Kafka SASL_SSL listener and
# ClickHouse's HTTPS port use it; clients trust $STACK_CA.
ensure_tls() {
  [ -s "$STACK_TLS/server-bundle.pem" ] && [ -s "$STACK_CA" ] && return 0
  local d=$STACK_TLS
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=ingest local stack CA" \
    -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$d/san.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 3650 -extfile "$d/san.ext" -out "$d/server.pem" 2>/dev/null
  # Kafka's PEM key store: PKCS#8 key, then the certificate chain, in one file.
  openssl pkcs8 -topk8 -nocrypt -in "$d/server.key" -out "$d/server.pk8"
  cat "$d/server.pk8" "$d/server.pem" "$d/ca.pem" >"$d/server-bundle.pem"
  rm -f "$d/server.csr" "$d/san.ext"
  chmod 600 "$d"/*.key "$d"/server.pk8 "$d/server-bundle.pem"
}
