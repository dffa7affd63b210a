"""Produces N Avro records to a topic in Confluent's wire format with
confluent-kafka's AvroSerializer, registering the schema in mend's registry:
records a third-party client wrote, for the peer to read.

    python infra/peers/produce.py TOPIC N
"""

import json
import sys

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

SCHEMA = {
    "type": "record",
    "name": "Order",
    "namespace": "peers",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "email", "type": "string"},
        {"name": "amount", "type": "int"},
    ],
}


def main() -> None:
    topic, count = sys.argv[1], int(sys.argv[2])
    registry = SchemaRegistryClient({"url": "http://127.0.0.1:18081"})
    serialize = AvroSerializer(registry, json.dumps(SCHEMA))
    producer = Producer({"bootstrap.servers": "127.0.0.1:19092", "linger.ms": 20})
    context = SerializationContext(topic, MessageField.VALUE)
    for i in range(count):
        value = serialize({"id": i, "email": f"c{i}@example.com", "amount": i}, context)
        producer.produce(topic, key=str(i), value=value)
        if i % 10000 == 0:
            producer.poll(0)
    producer.flush()
    print(f"produced {count} records to {topic}", file=sys.stderr)


if __name__ == "__main__":
    main()
