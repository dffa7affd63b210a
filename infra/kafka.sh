# Apache Kafka 4.4.0 as the local broker (sourced by up.sh and down.sh when
# MEND_BROKER=kafka): one KRaft node, broker and controller, on
# 127.0.0.1:$KAFKA_PORT (controller on the next port), its log directory
# under $STATE/kafka and its log in $STATE/kafka.log. The jars come from
# Maven Central through infra/kafka/pom.xml, once per machine, into
# $KAFKA_HOME (~/.cache/mend/kafka-4.4.0). Java 17 and Maven come from
# Debian's packages when missing.

kafka_install() {
  if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
    log "installing Java 17 and Maven from Debian's packages"
    apt-get install -y -q openjdk-17-jre-headless maven >/dev/null
  fi
  if [ ! -f "$KAFKA_HOME/libs/kafka_2.13-$KAFKA_VERSION.jar" ]; then
    log "installing Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_HOME (once per machine; 54 MB)"
    rm -rf "$KAFKA_HOME.partial"
    (cd "$ROOT/infra/kafka" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$KAFKA_HOME.partial/libs")
    rm -rf "$KAFKA_HOME" && mv "$KAFKA_HOME.partial" "$KAFKA_HOME"
  fi
}

kafka_java() { java -cp "$KAFKA_HOME/libs/*" "$@"; }

# The node's configuration, written at every start (the port may change).
kafka_config() {
  local dir=$STATE/kafka controller=$((KAFKA_PORT + 1))
  mkdir -p "$dir"
  cat >"$dir/server.properties" <<PROPERTIES
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Records up to 16 MiB (the hostile-input tests write one of 10 MiB).
message.max.bytes=16777216
replica.fetch.max.bytes=16777216
PROPERTIES
  cat >"$dir/log4j2.properties" <<PROPERTIES
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $STATE/kafka.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
PROPERTIES
}

kafka_start() {
  kafka_install
  kafka_config
  local dir=$STATE/kafka
  if [ ! -f "$dir/data/meta.properties" ]; then
    log "formatting the KRaft log directory $dir/data"
    kafka_java kafka.tools.StorageTool format --standalone -t "$(kafka_java kafka.tools.StorageTool random-uuid | tail -n 1)" \
      -c "$dir/server.properties" >"$dir/format.log"
  fi
  log "starting Apache Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (log in $STATE/kafka.log)"
  setsid java -Xms256m -Xmx512m -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$KAFKA_HOME/libs/*" \
    kafka.Kafka "$dir/server.properties" </dev/null >"$dir/stdout.log" 2>&1 &
  echo $! >"$STATE/kafka.pid"
  wait_for "Apache Kafka on port $KAFKA_PORT (see $STATE/kafka.log)" 120 port_open "$KAFKA_PORT"
}
