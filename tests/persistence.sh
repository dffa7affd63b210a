#!/usr/bin/env bash
# The registry's state survives `make infra-down && make infra-up`: schemas,
# ids, versions, soft deletes and configs are rebuilt from the _schemas topic
# on the broker's durable storage.
set -euo pipefail
source "$(dirname "$0")/../infra/env.sh"
cd "$ROOT"
URL=http://127.0.0.1:$REGISTRY_PORT
CT='Content-Type: application/vnd.schemaregistry.v1+json'
subject="persist-$(date +%s%N)"
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
fail() { echo "persistence: $*" >&2; exit 1; }

v1='{"schema": "{\"type\":\"record\",\"name\":\"P\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"}]}"}'
v2='{"schema": "{\"type\":\"record\",\"name\":\"P\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"},{\"name\":\"b\",\"type\":\"int\",\"default\":0}]}"}'
id1=$(curl -sf -X POST -H "$CT" -d "$v1" "$URL/subjects/$subject/versions" | field '["id"]')
id2=$(curl -sf -X POST -H "$CT" -d "$v2" "$URL/subjects/$subject/versions" | field '["id"]')
curl -sf -X PUT -H "$CT" -d '{"compatibility":"FULL"}' "$URL/config/$subject" >/dev/null
curl -sf -X DELETE "$URL/subjects/$subject/versions/1" >/dev/null
before=$(curl -sf "$URL/subjects/$subject/versions/2")

# Restarted as they were: whoever started them (make test, or an earlier
# make demo) still owns them, and make test stops only what it started.
broker_pid=$(cat "$STATE/kafka/node-1.pid")
registry_pid=$(cat "$STATE/registry.pid")
infra/down.sh registry broker
MEND_STARTED_FILE= infra/up.sh
# Proven restarted: new processes, and the broker's own log of a new start.
[ "$(cat "$STATE/kafka/node-1.pid")" != "$broker_pid" ] || fail "the broker was not restarted"
[ "$(cat "$STATE/registry.pid")" != "$registry_pid" ] || fail "the registry was not restarted"

after=$(curl -sf "$URL/subjects/$subject/versions/2") || fail "version 2 is gone"
[ "$before" = "$after" ] || fail "version 2 changed: $before -> $after"
[ "$(curl -sf "$URL/subjects/$subject/versions")" = "[2]" ] || fail "the soft delete of version 1 was lost"
[ "$(curl -sf "$URL/subjects/$subject/versions?deleted=true")" = "[1,2]" ] || fail "version 1 is gone entirely"
[ "$(curl -sf "$URL/schemas/ids/$id1?deleted=true" | field '["schema"]')" != "" ] || fail "schema $id1 is gone"
[ "$(curl -sf "$URL/config/$subject" | field '["compatibilityLevel"]')" = FULL ] || fail "the subject's level was lost"
# Ids keep counting after a restart: a new schema gets a new id.
v3='{"schema": "{\"type\":\"record\",\"name\":\"P3\",\"fields\":[]}"}'
id3=$(curl -sf -X POST -H "$CT" -d "$v3" "$URL/subjects/$subject-other/versions" | field '["id"]')
[ "$id3" -gt "$id2" ] || fail "id $id3 reused after restart (last was $id2)"
echo "persistence: ok (subject $subject, ids $id1 $id2 $id3 survive a restart of the broker and the registry)"
