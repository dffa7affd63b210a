#!/usr/bin/env bash
# `make test`: fastest first. Unit tests need nothing running; integration
# tests need the broker, the registry and PostgreSQL, which are started here
# when not already running and stopped again at the end (only those started
# here). Fails on the first failing stage.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

log "unit tests"
cargo test --workspace --lib --bins -q

log "building mend and the integration tests"
cargo build -q -p mend
cargo test -p mend-tests --no-run -q

STARTED=$(mktemp)
cleanup() {
  mapfile -t mine <"$STARTED"
  if [ ${#mine[@]} -gt 0 ]; then infra/down.sh "${mine[@]}"; fi
  rm -f "$STARTED"
}
trap cleanup EXIT
MEND_STARTED_FILE=$STARTED infra/up.sh

export MEND_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
export MEND_REGISTRY_URL=http://127.0.0.1:$REGISTRY_PORT
export MEND_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$PG_PORT/warehouse
export MEND_BIN=$CARGO_TARGET_DIR/debug/mend

log "integration tests (Rust)"
cargo test -p mend-tests -q --test registry --test runner --test plan -- --test-threads 2
# The healing stories run one at a time: on Tansu 0.6 the consumer groups of
# a SIGKILLed `mend up` never get partitions back while another deployment's
# groups are active on the broker (measured: no progress in 120 s, twice);
# alone, the same test recovers in ~20 s.
cargo test -p mend-tests -q --test healing --test approvals --test drift -- --test-threads 1

log "integration tests (Python clients)"
.mend/venv/bin/python -m pytest -q tests/python

log "persistence across infra-down and infra-up"
MEND_STARTED_FILE=$STARTED tests/persistence.sh

log "all tests passed"
