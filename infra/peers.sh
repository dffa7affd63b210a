#!/usr/bin/env bash
# The peer: a Kafka Connect 4.4.0 worker (standalone, its REST API on
# 127.0.0.1:18083) with Debezium's JDBC sink connector and Apicurio's Avro
# converter reading mend's registry (infra/peers/pom.xml says why each).
# Its jars come from Maven Central once per machine into $PEERS_HOME
# (~/.cache/mend/peers-4.4.0); dlt, the other peer the bench measures,
# comes from PyPI into a venv of its own ($DLT_VENV). Connectors are
# created through the REST API by whoever measures (the peers bench).
#
#   infra/peers.sh install               the jars (Java and Maven as infra/kafka.sh) and dlt
#   infra/peers.sh up BROKERS DIR        starts the worker on BROKERS, state and log in DIR
#   infra/peers.sh down DIR              stops it
#   infra/peers.sh smoke                 install, then sink 10,000 Avro records into PostgreSQL
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$ROOT/infra/kafka.sh"
PEERS_HOME=$TOOLS/peers-$KAFKA_VERSION
DLT_VENV=$TOOLS/dlt-1.31
CONNECT_PORT=${MEND_CONNECT_PORT:-18083}

peers_install() {
  kafka_install
  if [ ! -f "$PEERS_HOME/libs/connect-runtime-$KAFKA_VERSION.jar" ]; then
    log "installing Kafka Connect $KAFKA_VERSION, Debezium's JDBC sink and Apicurio's converter from Maven Central into $PEERS_HOME (once per machine; 78 MB)"
    rm -rf "$PEERS_HOME.partial"
    (cd "$ROOT/infra/peers" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$PEERS_HOME.partial/libs")
    rm -rf "$PEERS_HOME" && mv "$PEERS_HOME.partial" "$PEERS_HOME"
  fi
  if [ ! -x "$DLT_VENV/bin/python" ]; then
    log "installing dlt from PyPI into $DLT_VENV (once per machine)"
    rm -rf "$DLT_VENV.partial"
    python3 -m venv "$DLT_VENV.partial"
    "$DLT_VENV.partial/bin/pip" install -q --disable-pip-version-check -r "$ROOT/infra/peers/requirements-dlt.txt"
    rm -rf "$DLT_VENV" && mv "$DLT_VENV.partial" "$DLT_VENV"
  fi
}

connect_ready() { curl -sf "http://127.0.0.1:$CONNECT_PORT/connectors" >/dev/null; }

peers_up() {
  local brokers=$1 dir=$2
  peers_install
  mkdir -p "$dir"
  if connect_ready; then log "Kafka Connect already answering on 127.0.0.1:$CONNECT_PORT"; return 0; fi
  cat >"$dir/worker.properties" <<PROPERTIES
bootstrap.servers=$brokers
listeners=http://127.0.0.1:$CONNECT_PORT
offset.storage.file.filename=$dir/offsets
offset.flush.interval.ms=1000
plugin.discovery=only_scan
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=io.apicurio.registry.utils.converter.AvroConverter
value.converter.apicurio.registry.url=http://127.0.0.1:$REGISTRY_PORT/apis/registry/v2
value.converter.apicurio.registry.as-confluent=true
value.converter.apicurio.registry.use-id=contentId
PROPERTIES
  cat >"$dir/log4j2.properties" <<PROPERTIES
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/connect.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
PROPERTIES
  log "starting Kafka Connect $KAFKA_VERSION on 127.0.0.1:$CONNECT_PORT (log in $dir/connect.log)"
  setsid java -Xms256m -Xmx1g -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$PEERS_HOME/libs/*" \
    org.apache.kafka.connect.cli.ConnectStandalone "$dir/worker.properties" </dev/null >"$dir/stdout.log" 2>&1 &
  echo $! >"$dir/connect.pid"
  wait_for "Kafka Connect's REST API (see $dir/connect.log)" 120 connect_ready
}

peers_down() {
  local dir=$1 pid
  [ -f "$dir/connect.pid" ] || return 0
  pid=$(cat "$dir/connect.pid")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping Kafka Connect (pid $pid)"
    kill -TERM "$pid"
    wait_for "Kafka Connect to exit" 30 gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/connect.pid"
}

case "${1:-}" in
  install) peers_install ;;
  up) peers_up "$2" "$3" ;;
  down) peers_down "$2" ;;
  smoke)
    "$ROOT/infra/up.sh"
    dir=$STATE/peers
    peers_up "127.0.0.1:$KAFKA_PORT" "$dir"
    trap 'peers_down "$dir"' EXIT
    topic="peers.smoke.$(date +%s)"
    table="peers_smoke_$(date +%s)"
    "${MEND_PYTHON:-$STATE/venv/bin/python}" "$ROOT/infra/peers/produce.py" "$topic" 10000
    curl -sf -X POST -H 'Content-Type: application/json' "http://127.0.0.1:$CONNECT_PORT/connectors" -d "{
      \"name\": \"$table\", \"config\": {
        \"connector.class\": \"io.debezium.connector.jdbc.JdbcSinkConnector\", \"tasks.max\": \"1\",
        \"topics\": \"$topic\", \"table.name.format\": \"$table\", \"schema.evolution\": \"basic\",
        \"connection.url\": \"jdbc:postgresql://127.0.0.1:$PG_PORT/warehouse\", \"connection.username\": \"postgres\",
        \"connection.password\": \"\", \"insert.mode\": \"insert\"}}" >/dev/null
    rows() { psql -qtA "postgres://postgres@127.0.0.1:$PG_PORT/warehouse" -c "SELECT count(*) FROM $table" 2>/dev/null || echo 0; }
    loaded() { [ "$(rows)" -ge 10000 ]; }
    wait_for "the JDBC sink to load 10,000 rows into $table (see $dir/connect.log)" 120 loaded \
      || { curl -s "http://127.0.0.1:$CONNECT_PORT/connectors/$table/status"; exit 1; }
    log "the JDBC sink loaded $(rows) rows into $table through Kafka Connect"
    curl -sf -X DELETE "http://127.0.0.1:$CONNECT_PORT/connectors/$table" >/dev/null
    ;;
  *) echo "usage: infra/peers.sh install | up BROKERS DIR | down DIR | smoke" >&2; exit 2 ;;
esac
