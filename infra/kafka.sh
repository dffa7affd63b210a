#!/usr/bin/env bash
# Apache Kafka 4.4.0, the broker. The jars come from Maven Central through
# infra/kafka/pom.xml, once per machine, into $KAFKA_HOME
# (~/.cache/mend/kafka-4.4.0); Java 17 and Maven come from Debian's
# packages when missing.
#
# A cluster is N KRaft nodes on loopback, each broker and controller. Node
# i listens on BASE + 2(i-1) (its controller on the port after), keeps its
# log directory in DIR/node-i and its log in DIR/node-i.log, its process id
# in DIR/node-i.pid. One node (make infra-up: BASE 19092, DIR .mend/kafka)
# or three (replication factor 3, min.insync.replicas 2, unclean leader
# election off), as the chaos test runs.
#
# Sourced by up.sh and down.sh, or run:
#   infra/kafka.sh up DIR BASE NODES     formats (first time) and starts every node
#   infra/kafka.sh down DIR              stops every node (controlled shutdown)
#   infra/kafka.sh start DIR BASE NODES I   starts node I (when it is not running)
#   infra/kafka.sh kill DIR I            SIGKILLs node I
#   infra/kafka.sh pid DIR I             prints node I's process id
# Memory per node: a 512 MiB heap (about 370 MB resident, measured).

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

# kafka_node_config DIR BASE NODES I: writes node I's server.properties.
kafka_node_config() {
  local dir=$1 base=$2 nodes=$3 i=$4
  local port=$((base + 2 * (i - 1))) voters="" n replicas=1 isr=1
  for ((n = 1; n <= nodes; n++)); do voters+="${voters:+,}$n@127.0.0.1:$((base + 2 * (n - 1) + 1))"; done
  # Three controllers sharing two cores with everything else starve each
  # other's Raft fetches: at Kafka's 1 s election timeout (2 s fetch
  # timeout) the chaos test saw the quorum elect a new leader every few
  # seconds and a restarted node unable to finish starting for over a
  # minute. 3 s (6 s) holds it; a lost controller costs 3 s more.
  local election=1000
  if ((nodes >= 3)); then replicas=3; isr=2; election=3000; fi
  mkdir -p "$dir/node-$i"
  cat >"$dir/node-$i/server.properties" <<PROPERTIES
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$((port + 1))
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/node-$i/data
num.partitions=1
default.replication.factor=$replicas
min.insync.replicas=$isr
unclean.leader.election.enable=false
offsets.topic.replication.factor=$replicas
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
controller.quorum.election.timeout.ms=$election
controller.quorum.fetch.timeout.ms=$((election * 2))
message.max.bytes=16777216
replica.fetch.max.bytes=16777216
PROPERTIES
  cat >"$dir/node-$i/log4j2.properties" <<PROPERTIES
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/node-$i.log
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
PROPERTIES
}

# kafka_node_running DIR I
kafka_node_running() { [ -f "$1/node-$2.pid" ] && kill -0 "$(cat "$1/node-$2.pid")" 2>/dev/null; }

# kafka_start_node DIR BASE NODES I: starts node I unless it runs; does not
# wait for it (a node of three cannot serve until a quorum is up).
kafka_start_node() {
  local dir=$1 base=$2 nodes=$3 i=$4
  kafka_node_running "$dir" "$i" && return 0
  kafka_node_config "$dir" "$base" "$nodes" "$i"
  if [ ! -f "$dir/node-$i/data/meta.properties" ]; then
    [ -f "$dir/cluster.id" ] || kafka_java kafka.tools.StorageTool random-uuid | tail -n 1 >"$dir/cluster.id"
    kafka_java kafka.tools.StorageTool format -t "$(cat "$dir/cluster.id")" \
      -c "$dir/node-$i/server.properties" >"$dir/node-$i/format.log"
  fi
  # The serial collector: no GC threads of its own competing for two cores.
  setsid java -Xms256m -Xmx512m -XX:+UseSerialGC -Dlog4j2.configurationFile="$dir/node-$i/log4j2.properties" -cp "$KAFKA_HOME/libs/*" \
    kafka.Kafka "$dir/node-$i/server.properties" </dev/null >"$dir/node-$i/stdout.log" 2>&1 &
  echo $! >"$dir/node-$i.pid"
}

# kafka_up DIR BASE NODES: every node, then waits until each listens.
kafka_up() {
  local dir=$1 base=$2 nodes=$3 i
  kafka_install
  mkdir -p "$dir"
  log "starting Apache Kafka $KAFKA_VERSION: $nodes node(s) from 127.0.0.1:$base (logs in $dir)"
  for ((i = 1; i <= nodes; i++)); do kafka_start_node "$dir" "$base" "$nodes" "$i"; done
  for ((i = 1; i <= nodes; i++)); do
    wait_for "Apache Kafka node $i on port $((base + 2 * (i - 1))) (see $dir/node-$i.log)" 120 \
      port_open "$((base + 2 * (i - 1)))"
  done
}

# kafka_down DIR: a controlled shutdown of every node (SIGTERM), SIGKILL
# after 30 s.
kafka_down() {
  local dir=$1 pidfile pid
  for pidfile in "$dir"/node-*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      log "stopping Apache Kafka $(basename "$pidfile" .pid) (pid $pid)"
      kill -TERM "$pid"
      wait_for "Apache Kafka to exit" 30 gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  source "$(dirname "$0")/env.sh"
  command=${1:-}
  case $command in
    up) kafka_up "$2" "$3" "$4" ;;
    down) kafka_down "$2" ;;
    start) kafka_install; kafka_start_node "$2" "$3" "$4" "$5" ;;
    kill) kafka_node_running "$2" "$3" && kill -KILL "$(cat "$2/node-$3.pid")" ;;
    pid) cat "$2/node-$3.pid" ;;
    *) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
fi
