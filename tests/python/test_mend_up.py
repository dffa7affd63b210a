"""`mend up` driven the way a producer team's services would: Confluent's own
Python producer and AvroSerializer (auto-registering each schema version),
and mend observed only through its interfaces (`mend incidents --json`,
`mend approve`, the warehouse). A drift story of its own: a new field with a
default, then a field renamed with an alias (approved with the CLI).
"""

import json
import os
import socket
import sqlite3
import subprocess
import time
import uuid

import requests
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

REGISTRY = os.environ.get("MEND_REGISTRY_URL", "http://127.0.0.1:18081")
BROKERS = os.environ.get("MEND_KAFKA_BROKERS", "127.0.0.1:19092")
MEND = os.environ.get("MEND_BIN", "mend")
TIMEOUT = 90


def schema(version):
    fields = [{"name": "id", "type": "long"}, {"name": "sku", "type": "string"}, {"name": "price", "type": "double"}]
    if version >= 2:
        fields.append({"name": "currency", "type": "string", "default": "EUR"})
    if version >= 3:
        fields[1] = {"name": "product_sku", "type": "string", "aliases": ["sku"]}
    return json.dumps({"type": "record", "name": "Item", "namespace": "py.shop", "fields": fields})


def wait_for(what, check):
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_python_producers_drift_is_healed(tmp_path):
    name = f"py_{uuid.uuid4().hex[:12]}"
    topic = f"{name}.items"
    (tmp_path / "mend.toml").write_text(
        f'[[dataset]]\nname = "{name}"\ntopic = "{topic}"\ntable = "{name}"\nkey = ["id"]\n'
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        api = f"127.0.0.1:{s.getsockname()[1]}"
    env = dict(
        os.environ,
        MEND_CONFIG=str(tmp_path / "mend.toml"),
        MEND_WAREHOUSE_URL=f"sqlite://{tmp_path}/warehouse.db",
        MEND_API_ADDR=api,
        MEND_GROUP_PREFIX=name,
    )
    log = open(tmp_path / "up.log", "w")
    up = subprocess.Popen([MEND, "up"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_for("mend up", lambda: _healthy(api))
        requests.put(f"{REGISTRY}/config/{topic}-value", json={"compatibility": "NONE"}, timeout=10)
        producer = Producer({"bootstrap.servers": BROKERS})
        expected = {}
        for version in (1, 2, 3):
            serializer = AvroSerializer(SchemaRegistryClient({"url": REGISTRY}), schema(version))
            for n in range(10):
                key = version * 100 + n
                record = {"id": key, ("product_sku" if version >= 3 else "sku"): f"SKU-{key}", "price": key + 0.5}
                if version >= 2:
                    record["currency"] = "USD" if n % 2 else "EUR"
                expected[key] = (f"SKU-{key}", key + 0.5, record.get("currency"))
                payload = serializer(record, SerializationContext(topic, MessageField.VALUE))
                producer.produce(topic, key=str(key), value=payload)
            producer.flush(30)
            if version == 3:
                incident = wait_for(
                    "the rename to wait for approval", lambda: _incident(env, name, "field_renamed", "awaiting_approval")
                )
                approved = subprocess.run(
                    [MEND, "approve", incident["proposal_id"], "--by", "py-test"], env=env, capture_output=True, text=True
                )
                assert approved.returncode == 0, approved.stderr
            wait_for(f"version {version} loaded", lambda: _count(tmp_path, name) >= len(expected))

        incidents = wait_for("both incidents healed", lambda: _healed(env, name, 2))
        kinds = sorted(c["kind"] for i in incidents for c in i["changes"])
        assert kinds == ["field_added", "field_renamed"], incidents
        assert all(i["status"] == "healed" for i in incidents), incidents
        rows = sqlite3.connect(tmp_path / "warehouse.db").execute(f'SELECT sku, price, currency FROM "{name}"').fetchall()
        assert sorted(rows, key=lambda r: r[1]) == sorted(
            [(sku, price, currency) for sku, price, currency in expected.values()], key=lambda r: r[1]
        )
    finally:
        up.terminate()
        assert up.wait(60) == 0, (tmp_path / "up.log").read_text()[-2000:]


def _healthy(api):
    try:
        return requests.get(f"http://{api}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _incidents(env, name):
    listed = subprocess.run([MEND, "incidents", "--json", "--dataset", name], env=env, capture_output=True, text=True)
    return json.loads(listed.stdout) if listed.returncode == 0 else []


def _healed(env, name, count):
    healed = [i for i in _incidents(env, name) if i["status"] == "healed"]
    return healed if len(healed) == count else None


def _incident(env, name, kind, status):
    for incident in _incidents(env, name):
        if incident["status"] == status and any(c["kind"] == kind for c in incident["changes"]):
            return incident
    return None


def _count(tmp_path, name):
    try:
        return sqlite3.connect(tmp_path / "warehouse.db").execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0]
    except sqlite3.Error:
        return 0
