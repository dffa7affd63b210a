"""dlt loading the peers bench's records into PostgreSQL: confluent-kafka's
consumer decodes them (Avro in Confluent's wire format, its schema from
mend's registry) and hands them to a dlt pipeline in batches of 10,000, the
way dlt's Kafka source does. Prints one JSON line: the seconds from the
pipeline's start to the last row loaded, and the CPU seconds of this
process and its children.

    python infra/peers/dlt_load.py BROKERS REGISTRY TOPIC COUNT DSN DATASET TABLE append|merge
"""

import json
import resource
import sys
import tempfile
import time

import dlt
from confluent_kafka import DeserializingConsumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer

BATCH = 10_000


def records(brokers: str, registry: str, topic: str, count: int, group: str):
    consumer = DeserializingConsumer(
        {
            "bootstrap.servers": brokers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "value.deserializer": AvroDeserializer(SchemaRegistryClient({"url": registry})),
        }
    )
    consumer.subscribe([topic])
    seen, batch = 0, []
    try:
        while seen < count:
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error():
                raise RuntimeError(f"consuming {topic}: {message.error()}")
            batch.append(message.value())
            seen += 1
            if len(batch) >= BATCH:
                yield batch
                batch = []
        if batch:
            yield batch
    finally:
        consumer.close()


def cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    brokers, registry, topic, count, dsn, dataset, table, disposition = sys.argv[1:9]
    with tempfile.TemporaryDirectory() as pipelines:
        pipeline = dlt.pipeline(
            pipeline_name=table,
            destination=dlt.destinations.postgres(credentials=dsn),
            dataset_name=dataset,
            pipelines_dir=pipelines,
        )
        rows = dlt.resource(
            records(brokers, registry, topic, int(count), f"dlt-{table}"),
            name=table,
            write_disposition=disposition,
            primary_key="id" if disposition == "merge" else None,
        )
        started, used = time.monotonic(), cpu()
        pipeline.run(rows)
        print(json.dumps({"seconds": time.monotonic() - started, "cpu": cpu() - used}))


if __name__ == "__main__":
    main()
