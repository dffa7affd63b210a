#!/usr/bin/env bash
# Stops the local infrastructure: every service, or only those named
# (registry, broker, postgres). Idempotent; waits until each has exited.
set -euo pipefail
source "$(dirname "$0")/env.sh"
services=("$@")
[ ${#services[@]} -eq 0 ] && services=(registry broker postgres)

stop_pid() {
  local name=$1 pidfile=$STATE/$2
  [ -f "$pidfile" ] || return 0
  local pid; pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping the $name (pid $pid)"
    kill -TERM "$pid"
    wait_for "the $name to exit" 30 gone "$pid" || { kill -KILL "$pid" 2>/dev/null || true; }
  fi
  rm -f "$pidfile"
}

for service in "${services[@]}"; do
  case $service in
    registry) stop_pid "schema registry" registry.pid ;;
    # A KRaft node shuts down in a controlled way on SIGTERM.
    broker) source "$(dirname "$0")/kafka.sh"; kafka_down "$KAFKA_DIR" ;;
    postgres)
      PGBIN=$(pg_bin)
      PGDIR=$(pg_dir)
      if [ -n "$PGBIN" ] && [ -f "$PGDIR/data/postmaster.pid" ]; then
        log "stopping PostgreSQL"
        as_postgres "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop >/dev/null || true
      fi ;;
    *) log "unknown service $service (known: registry broker postgres)"; exit 2 ;;
  esac
done
