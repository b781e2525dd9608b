# shellcheck shell=bash
# PostgreSQL $POSTGRES_VERSION (Debian) for the SQL Iceberg catalog tests: our own
# cluster under $STACK_STATE/postgresql on loopback, not Debian's service. User
# `postgres` connects without password (trust, loopback only); user `ingest` has a
# generated password, so a wrong password is refused as in production.
PG_BIN=/usr/lib/postgresql/$POSTGRES_VERSION/bin
PG_DIR=$STACK_STATE/postgresql

install_postgresql() {
  step "postgresql $POSTGRES_VERSION (apt)"
  local r; r=$(apt_ensure "postgresql-$POSTGRES_VERSION" postgresql-client); done_ "$r"
}

ready_postgresql() {
  "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$POSTGRES_PORT" -t 2 &&
    psql -h 127.0.0.1 -p "$POSTGRES_PORT" -U postgres -d postgres -tAqc 'select 1' >/dev/null 2>&1
}

as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

up_postgresql() {
  mkdir -p "$PG_DIR"
  chown postgres:postgres "$PG_DIR"; chmod 755 "$STACK_STATE"
  if [ ! -s "$PG_DIR/data/PG_VERSION" ]; then
    rm -rf "$PG_DIR/data"
    as_postgres "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      >"$PG_DIR/initdb.log" 2>&1 || fail postgresql "$PG_DIR/initdb.log" "initdb failed"
    printf 'host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust\n%s' \
      "$(cat "$PG_DIR/data/pg_hba.conf")" >"$PG_DIR/data/pg_hba.conf"
  fi
  start_service postgresql "$PG_BIN/postgres" ready_postgresql "127.0.0.1:$POSTGRES_PORT" -- \
    setpriv --reuid=postgres --regid=postgres --init-groups \
    "$PG_BIN/postgres" -D "$PG_DIR/data" -h 127.0.0.1 -p "$POSTGRES_PORT" -k "$PG_DIR"
  local pw
  pw=$(stack_secret "$POSTGRES_INGEST_PASSWORD_FILE")
  psql -h 127.0.0.1 -p "$POSTGRES_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qc \
    "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ingest') THEN
       CREATE ROLE ingest LOGIN CREATEDB; END IF; END \$\$;
     ALTER ROLE ingest PASSWORD '$pw';" >/dev/null
}
