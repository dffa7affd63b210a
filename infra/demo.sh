#!/usr/bin/env bash
# `make demo`: runs the main job (`mend up`) on the embedded defaults (SQLite
# warehouse under .mend/, local broker and registry) and drives a drifting
# orders stream through it: an added field heals on its own, a rename waits
# for approval and is approved, an incompatible type change is quarantined
# and blocked. Each run uses a dataset of its own (orders_<run>), so the story
# starts from a clean baseline every time without deleting anything. At the
# end it prints the console's address; in a terminal, mend up keeps running
# for it (the blocked type change waits there) until Ctrl-C.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
RECORDS=${MEND_DEMO_RECORDS:-500}
API=${MEND_API_ADDR:-127.0.0.1:18080}

log "building mend"
cargo build -q -p mend
MEND=$CARGO_TARGET_DIR/debug/mend

RUN=$(date +%Y%m%d%H%M%S)
DIR=$STATE/demo/$RUN
mkdir -p "$DIR"
cat >"$DIR/mend.toml" <<TOML
[[dataset]]
name = "orders_$RUN"
topic = "shop.orders.$RUN"
table = "orders_$RUN"
key = ["id"]
TOML
# Consumer groups of this run only: an earlier run's groups have
# committed offsets on other topics.
export MEND_CONFIG=$DIR/mend.toml MEND_API_ADDR=$API MEND_GROUP_PREFIX=mend-demo-$RUN
export MEND_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT MEND_REGISTRY_URL=http://127.0.0.1:$REGISTRY_PORT

if curl -sf "http://$API/health" >/dev/null 2>&1; then
  log "something already answers on $API: stop it (or set MEND_API_ADDR) and run make demo again"
  exit 1
fi
# The sealer signs the audit log's digests with a key of this run's own.
"$MEND" audit keygen --out "$DIR/sealer.key" 2>/dev/null
export MEND_AUDIT_SIGNING_KEY=$DIR/sealer.key
log "starting mend up (log: $DIR/up.log)"
"$MEND" up >"$DIR/up.log" 2>&1 &
UP=$!
stop_up() {
  if kill -0 "$UP" 2>/dev/null; then
    kill -TERM "$UP"
    wait "$UP" || { log "mend up exited with $? (see $DIR/up.log)"; return 1; }
  fi
}
trap 'stop_up || true' EXIT
up_healthy() { curl -sf "http://$API/health" >/dev/null; }
wait_for "mend up to be healthy (see $DIR/up.log)" 120 up_healthy

"$MEND" demo --records "$RECORDS" --report "$DIR/report.json"
echo
"$MEND" incidents --dataset "orders_$RUN"
echo
log "the audit log of orders_$RUN, exported and checked offline with the sealer's public key ($DIR/sealer.key.pub)"
"$MEND" audit export --dataset "orders_$RUN" --out "$DIR/audit.jsonl"
"$MEND" audit verify --file "$DIR/audit.jsonl" --public-key "$DIR/sealer.key.pub"
echo
log "the console: http://$API/ (sign in with your name: this mend has no tokens and serves this machine only);"
log "the blocked type change of orders_$RUN waits there for a person"
if [ -t 0 ] && [ "${MEND_DEMO_STAY:-1}" != 0 ]; then
  log "mend up keeps running for the console; press Ctrl-C to stop it"
  trap 'echo; stop_up; log "mend up stopped cleanly"; exit 0' INT TERM
  wait "$UP" || true
  exit 0
fi
trap - EXIT
stop_up
log "mend up stopped cleanly (not a terminal: it does not wait for the console); the warehouse is .mend/warehouse.db, the report $DIR/report.json"
