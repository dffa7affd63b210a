"""mend's schema registry driven by Confluent's own Python client.

SchemaRegistryClient caches ids and schemas per client, so every test uses a
fresh client (and raw HTTP where the cache would hide the registry's answer).
Runs against the registry and broker that `make test` starts.
"""

import json
import os
import uuid

import pytest
import requests
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

REGISTRY = os.environ.get("MEND_REGISTRY_URL", "http://127.0.0.1:18081")
BROKERS = os.environ.get("MEND_KAFKA_BROKERS", "127.0.0.1:19092")
TIMEOUT = 60


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def client():
    return SchemaRegistryClient({"url": REGISTRY})


def record(name, *fields):
    return json.dumps({"type": "record", "name": name, "namespace": "py", "fields": list(fields)})


def avro(text, references=None):
    return Schema(text, "AVRO", references or [])


V1 = record("Order", {"name": "id", "type": "long"}, {"name": "email", "type": "string"})
V2 = record(
    "Order",
    {"name": "id", "type": "long"},
    {"name": "email", "type": "string"},
    {"name": "coupon", "type": ["null", "string"], "default": None},
)


def error_of(call):
    with pytest.raises(SchemaRegistryError) as caught:
        call()
    return caught.value.http_status_code, caught.value.error_code


def test_register_get_and_lookup():
    subject = unique("py-orders-value")
    first = client().register_schema(subject, avro(V1))
    assert client().register_schema(subject, avro(json.dumps(json.loads(V1), indent=4))) == first

    second = client().register_schema(subject, avro(V2))
    assert second != first
    latest = client().get_latest_version(subject)
    assert (latest.schema_id, latest.version, latest.subject) == (second, 2, subject)
    assert json.loads(latest.schema.schema_str) == json.loads(V2)
    v1 = client().get_version(subject, 1)
    assert (v1.schema_id, v1.version) == (first, 1)
    assert client().get_versions(subject) == [1, 2]
    assert subject in client().get_subjects()
    assert json.loads(client().get_schema(first).schema_str) == json.loads(V1)

    found = client().lookup_schema(subject, avro(V1))
    assert (found.schema_id, found.version) == (first, 1)


def test_error_codes():
    subject = unique("py-errors")
    client().register_schema(subject, avro(V1))
    assert error_of(lambda: client().get_latest_version(unique("nobody"))) == (404, 40401)
    assert error_of(lambda: client().get_version(subject, 5)) == (404, 40402)
    assert error_of(lambda: client().get_schema(987654321)) == (404, 40403)
    assert error_of(lambda: client().lookup_schema(subject, avro(record("Other", {"name": "x", "type": "int"})))) == (
        404,
        40403,
    )
    assert error_of(lambda: client().register_schema(subject, avro('{"type": "record", "name": "Broken"}'))) == (
        422,
        42201,
    )
    assert error_of(lambda: client().set_compatibility(subject, "SIDEWAYS")) == (422, 42203)
    assert error_of(lambda: client().get_compatibility(subject)) == (404, 40408)
    incompatible = record("Order", {"name": "id", "type": "string"})
    assert error_of(lambda: client().register_schema(subject, avro(incompatible))) == (409, 409)
    bad_version = requests.get(f"{REGISTRY}/subjects/{subject}/versions/first", timeout=TIMEOUT)
    assert (bad_version.status_code, bad_version.json()["error_code"]) == (422, 42202)
    broken = requests.post(f"{REGISTRY}/subjects/{subject}/versions", data="{", timeout=TIMEOUT)
    assert broken.json()["error_code"] == 42201


# Each level: (first schema, a next schema it allows, a next schema it refuses).
INT_A = record("C", {"name": "a", "type": "int"})
LONG_A = record("C", {"name": "a", "type": "long"})
STRING_A = record("C", {"name": "a", "type": "string"})
WITH_B = record("C", {"name": "a", "type": "int"}, {"name": "b", "type": "string"})
WITH_OPTIONAL_B = record("C", {"name": "a", "type": "int"}, {"name": "b", "type": "string", "default": ""})
A_DEFAULT = record("C", {"name": "a", "type": "int", "default": 0})
EMPTY = record("C")


@pytest.mark.parametrize(
    "level,allowed,refused",
    [
        ("BACKWARD", LONG_A, WITH_B),
        ("FORWARD", WITH_B, LONG_A),
        ("FULL", WITH_OPTIONAL_B, LONG_A),
        ("NONE", STRING_A, None),
    ],
)
def test_compatibility_levels(level, allowed, refused):
    subject = unique(f"py-{level.lower()}")
    assert client().set_compatibility(subject, level) == {"compatibility": level}
    assert client().get_compatibility(subject) == level
    client().register_schema(subject, avro(INT_A))
    assert client().test_compatibility(subject, avro(allowed)) is True
    if refused is not None:
        assert client().test_compatibility(subject, avro(refused)) is False
        assert error_of(lambda: client().register_schema(subject, avro(refused))) == (409, 409)
    client().register_schema(subject, avro(allowed))


@pytest.mark.parametrize(
    "level,history,refused",
    [
        ("BACKWARD_TRANSITIVE", [STRING_A, EMPTY], A_DEFAULT),
        ("FORWARD_TRANSITIVE", [INT_A, A_DEFAULT], EMPTY),
        ("FULL_TRANSITIVE", [INT_A, A_DEFAULT], EMPTY),
    ],
)
def test_transitive_levels(level, history, refused):
    """The refused schema is compatible with the latest version, not with the first."""
    subject = unique(f"py-{level.lower()}")
    client().set_compatibility(subject, level)
    for schema in history:
        client().register_schema(subject, avro(schema))
    assert client().test_compatibility_all_versions(subject, avro(refused)) is False
    assert error_of(lambda: client().register_schema(subject, avro(refused))) == (409, 409)
    plain = level.removesuffix("_TRANSITIVE")
    client().set_compatibility(subject, plain)
    assert client().test_compatibility(subject, avro(refused)) is True
    client().register_schema(subject, avro(refused))


def test_global_config_round_trips():
    before = requests.get(f"{REGISTRY}/config", timeout=TIMEOUT).json()["compatibilityLevel"]
    assert client().get_compatibility() == before
    raw = requests.get(f"{REGISTRY}/config/{unique('py-noconf')}?defaultToGlobal=true", timeout=TIMEOUT)
    assert raw.json()["compatibilityLevel"] == before


def test_soft_and_permanent_deletes():
    subject = unique("py-delete")
    first = client().register_schema(subject, avro(V1))
    client().register_schema(subject, avro(V2))
    assert error_of(lambda: client().delete_version(subject, 1, permanent=True)) == (404, 40407)
    assert client().delete_version(subject, 1) == 1
    assert client().get_versions(subject) == [2]
    assert client().lookup_schema(subject, avro(V1), deleted=True).schema_id == first
    assert client().delete_subject(subject) == [2]
    assert subject not in client().get_subjects()
    assert error_of(lambda: client().get_versions(subject)) == (404, 40401)
    assert client().delete_subject(subject, permanent=True) == [1, 2]
    gone = requests.get(f"{REGISTRY}/subjects/{subject}/versions?deleted=true", timeout=TIMEOUT)
    assert (gone.status_code, gone.json()["error_code"]) == (404, 40401)


def test_references():
    address_subject = unique("py-address")
    address = json.dumps(
        {"type": "record", "name": "Address", "namespace": "py", "fields": [{"name": "city", "type": "string"}]}
    )
    client().register_schema(address_subject, avro(address))
    customer = record("Customer", {"name": "home", "type": "py.Address"})
    subject = unique("py-customer")
    reference = SchemaReference("py.Address", address_subject, 1)
    schema_id = client().register_schema(subject, avro(customer, [reference]))
    fetched = client().get_schema(schema_id)
    assert [(r.name, r.subject, r.version) for r in fetched.references] == [("py.Address", address_subject, 1)]


def create_topic(name):
    admin = AdminClient({"bootstrap.servers": BROKERS})
    for future in admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)]).values():
        future.result(TIMEOUT)


def test_avro_serializer_through_the_broker():
    """Confluent's serializer registers and frames; the deserializer resolves
    the id through the registry; records travel through the real broker."""
    topic = unique("py-orders")
    create_topic(topic)
    serializer = AvroSerializer(client(), V1)
    producer = Producer({"bootstrap.servers": BROKERS, "acks": "all"})
    sent = [{"id": i, "email": f"user{i}@example.com"} for i in range(20)]
    for value in sent:
        payload = serializer(value, SerializationContext(topic, MessageField.VALUE))
        producer.produce(topic, key=str(value["id"]), value=payload)
    assert producer.flush(TIMEOUT) == 0

    latest = client().get_latest_version(f"{topic}-value")
    deserializer = AvroDeserializer(client())
    consumer = Consumer(
        {"bootstrap.servers": BROKERS, "group.id": unique("py-group"), "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    received = []
    try:
        while len(received) < len(sent):
            message = consumer.poll(TIMEOUT)
            assert message is not None, f"timed out after {len(received)} records"
            assert message.error() is None, message.error()
            assert message.value()[0] == 0 and int.from_bytes(message.value()[1:5], "big") == latest.schema_id
            received.append(deserializer(message.value(), SerializationContext(topic, MessageField.VALUE)))
    finally:
        consumer.close()
    assert received == sent
