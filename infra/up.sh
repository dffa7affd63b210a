#!/usr/bin/env bash
# Starts the local broker (Apache Kafka, one KRaft node: infra/kafka.sh),
# PostgreSQL and the schema registry, each
# only when it is not already running, and waits until each is ready.
# Installs what is missing (Kafka's jars, Java, PostgreSQL). Idempotent.
# With MEND_STARTED_FILE set, appends the names of the services it started.
set -euo pipefail
source "$(dirname "$0")/env.sh"
mkdir -p "$STATE"
started() { [ -n "${MEND_STARTED_FILE:-}" ] && echo "$1" >>"$MEND_STARTED_FILE"; return 0; }

# ---- broker ---------------------------------------------------------------
if port_open "$KAFKA_PORT"; then
  log "broker already listening on 127.0.0.1:$KAFKA_PORT"
else
  source "$(dirname "$0")/kafka.sh"
  kafka_up "$KAFKA_DIR" "$KAFKA_PORT" 1
  started broker
fi

PGBIN=$(pg_bin)
if [ -z "$PGBIN" ]; then
  log "installing PostgreSQL from Debian's packages"
  apt-get install -y -q postgresql >/dev/null
  PGBIN=$(pg_bin)
fi
PGDIR=$(pg_dir)
if [ ! -f "$PGDIR/data/PG_VERSION" ]; then
  mkdir -p "$PGDIR/data"
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$PGDIR"
  if ! as_postgres test -w "$PGDIR/data"; then
    # The checkout is not reachable by the postgres user (say, under a
    # private home directory): keep the cluster in a directory of its own
    # (reused by later clones at the same path) and point .mend/postgres at it.
    rm -rf "$PGDIR"
    PGDIR=/var/tmp/mend-postgres-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)
    mkdir -p "$PGDIR/data"
    chown -R postgres:postgres "$PGDIR"
    ln -sfn "$PGDIR" "$STATE/postgres"
  fi
fi
if [ ! -f "$PGDIR/data/PG_VERSION" ]; then
  log "initialising PostgreSQL in $PGDIR/data"
  as_postgres "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust -E UTF8 >"$STATE/initdb.log"
fi
if "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
  log "PostgreSQL already running on 127.0.0.1:$PG_PORT"
else
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  as_postgres "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/postgres.log" -w -t 60 \
    -o "-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1 -c fsync=on" start >/dev/null
  started postgres
fi
if ! "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "select 1 from pg_database where datname='warehouse'" | grep -q 1; then
  "$PGBIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres warehouse
fi

# ---- schema registry ------------------------------------------------------
registry_ready() { curl -sf "http://127.0.0.1:$REGISTRY_PORT/subjects" >/dev/null; }
if registry_ready; then
  log "schema registry already answering on 127.0.0.1:$REGISTRY_PORT"
else
  # MEND_SKIP_BUILD=1: a test restarting the registry while cargo runs it.
  if [ "${MEND_SKIP_BUILD:-}" != 1 ] || [ ! -x "$CARGO_TARGET_DIR/debug/mend-registry" ]; then
    log "building the schema registry"
    (cd "$ROOT" && cargo build -q -p mend-registry)
  fi
  log "starting the schema registry on 127.0.0.1:$REGISTRY_PORT"
  MEND_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT" MEND_REGISTRY_ADDR="127.0.0.1:$REGISTRY_PORT" \
    setsid "$CARGO_TARGET_DIR/debug/mend-registry" </dev/null >"$STATE/registry.log" 2>&1 &
  echo $! >"$STATE/registry.pid"
  wait_for "the schema registry (see $STATE/registry.log)" 60 registry_ready
  started registry
fi
log "infrastructure ready: broker 127.0.0.1:$KAFKA_PORT, registry http://127.0.0.1:$REGISTRY_PORT, postgres://postgres@127.0.0.1:$PG_PORT/warehouse"
