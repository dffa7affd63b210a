# Shared settings of the infra scripts (sourced, not run).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${MEND_STATE_DIR:-$ROOT/.mend}
# Tools built once per machine live outside the checkout, so a fresh clone
# (and CI) reuses them.
TOOLS=${MEND_TOOLS_DIR:-$HOME/.cache/mend}
# Apache Kafka from Maven Central (infra/kafka.sh): one node, its state in
# $STATE/kafka.
KAFKA_VERSION=4.4.0
KAFKA_HOME=$TOOLS/kafka-$KAFKA_VERSION
KAFKA_DIR=$STATE/kafka
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$TOOLS/target}
KAFKA_PORT=${MEND_INFRA_KAFKA_PORT:-19092}
REGISTRY_PORT=18081
PG_PORT=15432

log() { printf '[infra] %s\n' "$*" >&2; }

# port_open PORT: true when something accepts connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for DESCRIPTION TIMEOUT_SECONDS COMMAND...: polls COMMAND until it
# succeeds; fails with the description after the timeout.
wait_for() {
  local what=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then log "timed out after ${timeout}s waiting for $what"; return 1; fi
    sleep 0.2
  done
}

# The cluster's directory: .mend/postgres (possibly a link, see up.sh).
pg_dir() { if [ -L "$STATE/postgres" ]; then readlink "$STATE/postgres"; else echo "$STATE/postgres"; fi; }

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# as_postgres CMD...: PostgreSQL refuses to run as root.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# gone PID: true when the process has exited.
gone() { ! kill -0 "$1" 2>/dev/null; }
