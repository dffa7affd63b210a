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
export MEND_PYTHON=$ROOT/.mend/venv/bin/python

log "integration tests (Rust)"
cargo test -p mend-tests -q --test registry --test runner --test plan --test blast --test loader --test guard --test values -- --test-threads 2
# Tests that start a whole `mend up` (and kill it) run one at a time: each is
# six consumers and a producer on a 2-core machine.
cargo test -p mend-tests -q --test healing --test approvals --test cost --test expand --test revert --test drift --test supervisor --test console --test browser --test audit --test hostile --test scale --test tools --test openapi -- --test-threads 1

log "integration tests (Python clients)"
.mend/venv/bin/python -m pytest -q tests/python

log "persistence across infra-down and infra-up"
tests/persistence.sh

# Chaos last: it kills stages and restarts the broker, PostgreSQL and the
# registry, so no other test shares a broker it has disturbed (one seed from
# the clock, printed; MEND_CHAOS_SEEDS=… chooses).
log "chaos"
cargo test -p mend-tests -q --test chaos -- --nocapture

log "all tests passed"
