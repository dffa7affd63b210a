"""One incident is one trace: `mend up` exports its spans over OTLP/HTTP
(protobuf) to a receiver of this test's own, decoded with the
OpenTelemetry project's own protobuf definitions (`opentelemetry-proto`).
A rename that waits for approval is approved through the CLI; the
detection, diagnosis, proposal, decision and application of that incident
are spans of one trace (its id is the incident's), each a child of the
span of the event it answers, and every event on the topics carries the
same trace in its W3C `traceparent` header.
"""

import json
import os
import socket
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

REGISTRY = os.environ.get("MEND_REGISTRY_URL", "http://127.0.0.1:18081")
BROKERS = os.environ.get("MEND_KAFKA_BROKERS", "127.0.0.1:19092")
MEND = os.environ.get("MEND_BIN", "mend")
TIMEOUT = 90
STAGES = ["mend.detections", "mend.diagnoses", "mend.proposals", "mend.decisions", "mend.applications"]


class Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver: keeps every span it is sent."""

    spans = []
    requests = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Receiver.requests.append((self.path, self.headers.get("Content-Type")))
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        for resource in export.resource_spans:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}.get("service.name")
            for scope in resource.scope_spans:
                for span in scope.spans:
                    Receiver.spans.append((service, span))
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def schema(version):
    fields = [{"name": "id", "type": "long"}, {"name": "sku", "type": "string"}]
    if version >= 2:
        fields[1] = {"name": "product_sku", "type": "string", "aliases": ["sku"]}
    return json.dumps({"type": "record", "name": "Item", "namespace": "py.traces", "fields": fields})


def wait_for(what, check):
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _incidents(env, name):
    listed = subprocess.run([MEND, "incidents", "--json", "--dataset", name], env=env, capture_output=True, text=True)
    return json.loads(listed.stdout) if listed.returncode == 0 else []


def _healthy(api):
    try:
        return requests.get(f"http://{api}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _traceparents(topic, name):
    """The traceparent header of every event of dataset `name` on `topic`."""
    consumer = Consumer({"bootstrap.servers": BROKERS, "group.id": f"traces-{uuid.uuid4()}", "enable.auto.commit": False})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, low)])
        found, offset = [], low
        while offset < high - 1:
            message = consumer.poll(5)
            if message is None:
                break
            offset = message.offset()
            if message.key() == name.encode():
                found.append(dict(message.headers() or []).get("traceparent", b"").decode())
        return found
    finally:
        consumer.close()


def test_one_incident_is_one_trace_across_the_stages(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    name = f"tr_{uuid.uuid4().hex[:12]}"
    topic = f"{name}.items"
    (tmp_path / "mend.toml").write_text(f'[[dataset]]\nname = "{name}"\ntopic = "{topic}"\ntable = "{name}"\nkey = ["id"]\n')
    api = f"127.0.0.1:{_free_port()}"
    env = dict(
        os.environ,
        MEND_CONFIG=str(tmp_path / "mend.toml"),
        MEND_WAREHOUSE_URL=f"sqlite://{tmp_path}/warehouse.db",
        MEND_API_ADDR=api,
        MEND_GROUP_PREFIX=name,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}",
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    log = open(tmp_path / "up.log", "w")
    up = subprocess.Popen([MEND, "up"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_for("mend up", lambda: _healthy(api))
        requests.put(f"{REGISTRY}/config/{topic}-value", json={"compatibility": "NONE"}, timeout=10)
        producer = Producer({"bootstrap.servers": BROKERS})
        for version in (1, 2):
            serializer = AvroSerializer(SchemaRegistryClient({"url": REGISTRY}), schema(version))
            for n in range(5):
                key = version * 100 + n
                record = {"id": key, ("product_sku" if version >= 2 else "sku"): f"SKU-{key}"}
                producer.produce(topic, key=str(key), value=serializer(record, SerializationContext(topic, MessageField.VALUE)))
            producer.flush(30)
        waiting = wait_for(
            "the rename to wait for approval",
            lambda: next((i for i in _incidents(env, name) if i["status"] == "awaiting_approval"), None),
        )
        approved = subprocess.run(
            [MEND, "approve", waiting["proposal_id"], "--by", "trace-test"], env=env, capture_output=True, text=True
        )
        assert approved.returncode == 0, approved.stderr
        wait_for("the rename healed", lambda: any(i["status"] == "healed" for i in _incidents(env, name)))

        trace = uuid.UUID(waiting["id"]).hex

        def spans_of_the_incident():
            spans = [(s, span) for s, span in Receiver.spans if span.trace_id.hex() == trace]
            topics = {span.name.split(" ")[-1] for _, span in spans}
            return spans if all(stage in topics for stage in STAGES) else None

        spans = wait_for("the incident's spans", spans_of_the_incident)
        assert all(path == "/v1/traces" and kind == "application/x-protobuf" for path, kind in Receiver.requests)
        assert {service for service, _ in spans} == {"mend"}
        by_topic = {}
        for _, span in spans:
            if span.kind == span.SPAN_KIND_PRODUCER:
                by_topic.setdefault(span.name.split(" ")[-1], []).append(span)
        # Each event's span is a child of the span of the event it answers.
        for cause, effect in zip(STAGES, STAGES[1:]):
            parents = {s.span_id for s in by_topic[cause]}
            assert any(s.parent_span_id in parents for s in by_topic[effect]), (cause, effect)
        decision = by_topic["mend.decisions"][0]
        attributes = {a.key: a.value.string_value for a in decision.attributes}
        assert attributes["mend.incident_id"] == waiting["id"] and attributes["mend.dataset"] == name, attributes
        assert attributes["mend.service"] == "control", attributes
        # The stages that consumed the events continued the trace too.
        assert any(span.kind != span.SPAN_KIND_PRODUCER for _, span in spans), [s.name for _, s in spans]

        # On the topics: every event of the incident carries the trace.
        for stage in STAGES:
            headers = _traceparents(stage, name)
            assert headers and all(h.startswith("00-") and len(h) == 55 for h in headers), (stage, headers)
            assert any(h.split("-")[1] == trace for h in headers), (stage, headers, trace)
    finally:
        up.terminate()
        assert up.wait(60) == 0, (tmp_path / "up.log").read_text()[-2000:]
        server.shutdown()
