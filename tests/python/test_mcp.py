"""mend's MCP server driven by the official Python `mcp` SDK (2.3), against a
live `mend up` on PostgreSQL with a real incident: over streamable HTTP with
bearer tokens (both protocol generations: 2026-07-28 without a handshake,
2025-11-25 with initialize) and over stdio (`mend mcp`). The records a tool
returns are the ones this test produced; a viewer cannot approve; an
approver's approval through MCP heals the incident and is recorded with the
caller's name and channel `mcp`.
"""

import asyncio
import json
import os
import socket
import subprocess
import time
import uuid

import httpx2
import psycopg2
import pytest
import requests
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

REGISTRY = os.environ.get("MEND_REGISTRY_URL", "http://127.0.0.1:18081")
BROKERS = os.environ.get("MEND_KAFKA_BROKERS", "127.0.0.1:19092")
POSTGRES = os.environ.get("MEND_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:15432/warehouse")
MEND = os.environ.get("MEND_BIN", "mend")
TIMEOUT = 90
TOOLS = {
    "propose_plan": False,
    "list_incidents": True,
    "get_incident": True,
    "blast_radius": True,
    "describe_table": True,
    "sample_records": True,
    "registry_history": True,
    "quarantined_records": True,
    "compare_schema": True,
    "approve_proposal": False,
    "reject_proposal": False,
}


def schema(version):
    email = {"name": "email", "type": "string"}
    if version >= 2:
        email = {"name": "customer_email", "type": "string", "aliases": ["email"]}
    fields = [{"name": "id", "type": "long"}, email, {"name": "amount", "type": "double"}]
    return json.dumps({"type": "record", "name": "Order", "namespace": "mcp.shop", "fields": fields})


def wait_for(what, check):
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """`mend up` with API tokens, and an order stream whose `email` was
    renamed with an alias: an incident waiting for approval."""
    tmp = tmp_path_factory.mktemp("mcp")
    name = f"mcp_{uuid.uuid4().hex[:12]}"
    topic = f"{name}.orders"
    (tmp / "mend.toml").write_text(f'[[dataset]]\nname = "{name}"\ntopic = "{topic}"\ntable = "{name}"\nkey = ["id"]\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        api = f"127.0.0.1:{s.getsockname()[1]}"
    env = dict(
        os.environ,
        MEND_CONFIG=str(tmp / "mend.toml"),
        MEND_WAREHOUSE_URL=POSTGRES,
        MEND_API_ADDR=api,
        MEND_GROUP_PREFIX=name,
        MEND_API_TOKENS="vera:viewer:viewer-token,alice:approver:approver-token",
    )
    log = open(tmp / "up.log", "w")
    up = subprocess.Popen([MEND, "up"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_for("mend up", lambda: _healthy(api))
        requests.put(f"{REGISTRY}/config/{topic}-value", json={"compatibility": "NONE"}, timeout=10)
        producer = Producer({"bootstrap.servers": BROKERS})
        produced = {}
        for version in (1, 2):
            serializer = AvroSerializer(SchemaRegistryClient({"url": REGISTRY}), schema(version))
            for n in range(20):
                key = version * 100 + n
                field = "customer_email" if version == 2 else "email"
                record = {"id": key, field: f"c{key}@example.com", "amount": key + 0.25}
                produced[key] = record
                producer.produce(topic, key=str(key), value=serializer(record, SerializationContext(topic, MessageField.VALUE)))
            producer.flush(30)
            if version == 1:
                wait_for("the baseline loaded", lambda: _count(name) >= 20)
        incident = wait_for("the rename to wait for approval", lambda: _waiting(api, name))
        yield {"api": api, "env": env, "name": name, "topic": topic, "incident": incident, "produced": produced}
    finally:
        up.terminate()
        assert up.wait(60) == 0, (tmp / "up.log").read_text()[-3000:]


def _healthy(api):
    try:
        return requests.get(f"http://{api}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _count(name):
    with psycopg2.connect(POSTGRES) as db, db.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
        if not cursor.fetchone()[0]:
            return 0
        cursor.execute(f'SELECT COUNT(*) FROM "{name}"')
        return cursor.fetchone()[0]


def _waiting(api, name):
    incidents = requests.get(f"http://{api}/incidents", headers=_bearer("viewer-token"), timeout=5).json()
    found = [i for i in incidents if i["dataset"] == name and i["status"] == "awaiting_approval"]
    return found[0] if found else None


def _bearer(token):
    return {"Authorization": f"Bearer {token}"}


def http_client(deployment, token, mode):
    transport = streamable_http_client(
        f"http://{deployment['api']}/mcp", http_client=httpx2.AsyncClient(headers=_bearer(token), timeout=30)
    )
    return Client(transport, mode=mode)


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.mark.parametrize("mode", ["2026-07-28", "legacy"])
def test_read_tools_over_http_in_both_protocol_generations(deployment, mode):
    async def session():
        async with http_client(deployment, "viewer-token", mode) as client:
            expected = "2026-07-28" if mode != "legacy" else "2025-11-25"
            assert client.protocol_version == expected
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert set(TOOLS) <= set(tools), sorted(tools)
            for name, read_only in TOOLS.items():
                tool = tools[name]
                assert tool.input_schema["type"] == "object", name
                assert tool.output_schema and tool.output_schema["type"] == "object", name
                assert tool.annotations.read_only_hint is read_only, name
            assert "incident_id" in tools["get_incident"].input_schema["properties"]

            name, incident = deployment["name"], deployment["incident"]
            got = await client.call_tool("get_incident", {"incident_id": incident["id"]})
            assert not got.is_error, got
            assert got.structured_content["incident"]["proposal_id"] == incident["proposal_id"]
            assert [c["kind"] for c in got.structured_content["incident"]["changes"]] == ["field_renamed"]
            assert json.loads(got.content[0].text) == got.structured_content

            table = (await client.call_tool("describe_table", {"dataset": name})).structured_content
            assert table["table"] == name and table["dialect"] == "postgres"
            assert [c["name"] for c in table["columns"]] == ["id", "email", "amount"]
            assert table["row_count"] == 20
            assert table["contract"]["version"] == 1 and table["contract"]["mapping"]["email"] == "email"

            sample = (await client.call_tool("sample_records", {"dataset": name, "limit": 25})).structured_content
            assert [r["offset"] for r in sample["records"]] == list(range(15, 40))
            for record in sample["records"]:
                key = record["value"]["id"]
                assert record["value"] == deployment["produced"][key], record

            quarantined = await client.call_tool("quarantined_records", {"incident_id": incident["id"], "limit": 5})
            records = quarantined.structured_content["records"]
            assert [r["offset"] for r in records] == list(range(20, 25)), records
            for record in records:
                assert record["reason_kind"] == "schema_mismatch", record
                assert record["value"] == deployment["produced"][record["value"]["id"]], record
            assert quarantined.structured_content["counts"] == {str(incident["writer_schema_id"]): 20}

            history = (await client.call_tool("registry_history", {"dataset": name})).structured_content
            assert [v["version"] for v in history["versions"]] == [1, 2]
            assert [c["kind"] for c in history["versions"][1]["changes"]] == ["field_renamed"]

            compared = await client.call_tool("compare_schema", {"dataset": name, "schema": schema(2)})
            planned = subprocess.run(
                [MEND, "plan", "--dataset", name, "--schema", "/dev/stdin", "--json"],
                input=schema(2),
                env=deployment["env"],
                capture_output=True,
                text=True,
            )
            assert planned.returncode == 2, planned.stderr
            assert compared.structured_content == json.loads(planned.stdout)

            templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
            assert templates == {"mend://incidents/{id}", "mend://datasets/{name}/contract"}
            timeline = await client.read_resource(f"mend://incidents/{incident['id']}")
            assert json.loads(timeline.contents[0].text)["proposal_id"] == incident["proposal_id"]
            contract = await client.read_resource(f"mend://datasets/{name}/contract")
            assert json.loads(contract.contents[0].text)["fields"][1]["name"] == "email"
            prompts = {p.name for p in (await client.list_prompts()).prompts}
            assert prompts == {"diagnose_incident"}
            prompt = await client.get_prompt("diagnose_incident", {"incident_id": incident["id"]})
            text = prompt.messages[0].content.text
            assert incident["id"] in text and "propose_plan" in text

            missing = await client.call_tool("describe_table", {"dataset": "nope"})
            assert missing.is_error and "no dataset" in missing.content[0].text

            refused = await client.call_tool("approve_proposal", {"proposal_id": incident["proposal_id"]})
            assert refused.is_error and "approver" in refused.content[0].text, refused

    run(session())
    assert _waiting(deployment["api"], deployment["name"]), "a viewer's approval decided nothing"


def test_a_call_without_a_known_token_gets_401(deployment):
    response = requests.post(
        f"http://{deployment['api']}/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28"},
        timeout=5,
    )
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")


def test_drafted_plans_pass_the_guardrails_or_are_refused_with_their_reasons(deployment):
    name, incident = deployment["name"], deployment["incident"]
    table = f'"{name}"'
    drafts = {
        "drop": f"DROP TABLE {table}",
        "two statements": f"ALTER TABLE {table} ADD COLUMN a TEXT; ALTER TABLE {table} ADD COLUMN b TEXT",
        "another table": "ALTER TABLE mend_offsets ADD COLUMN a TEXT",
        "narrowing": f"ALTER TABLE {table} ALTER COLUMN amount TYPE INTEGER",
        "invalid": f"ALTER TABLE {table} ADD COLUMN",
    }

    async def session():
        async with http_client(deployment, "approver-token", "2026-07-28") as client:
            before = (await client.call_tool("describe_table", {"dataset": name})).structured_content["columns"]
            for what, sql in drafts.items():
                steps = [{"kind": "ddl", "description": what, "sql": sql}, {"kind": "replay", "description": "replay"}]
                answer = await client.call_tool(
                    "propose_plan", {"incident_id": incident["id"], "steps": steps, "rationale": f"test: {what}"}
                )
                assert not answer.is_error, answer
                assert answer.structured_content["accepted"] is False, (what, answer.structured_content)
                assert answer.structured_content["refused"], what
            after = (await client.call_tool("describe_table", {"dataset": name})).structured_content["columns"]
            assert after == before, "a refused draft changed the table"

            steps = [
                {"kind": "ddl", "description": "a column for notes", "sql": f"ALTER TABLE {table} ADD COLUMN note TEXT"},
                {"kind": "mapping", "description": "the renamed field", "field": "customer_email", "column": "email"},
                {"kind": "replay", "description": "replay the quarantined records"},
            ]
            answer = await client.call_tool(
                "propose_plan", {"incident_id": incident["id"], "steps": steps, "rationale": "keep email, add notes"}
            )
            assert answer.structured_content["accepted"] is True, answer.structured_content
            draft = answer.structured_content["proposal_id"]
            assert draft != incident["proposal_id"]

            got = (await client.call_tool("get_incident", {"incident_id": incident["id"]})).structured_content
            recorded = got["incident"]["drafts"]
            assert [d["accepted"] for d in recorded] == [False] * len(drafts) + [True], recorded
            assert all(d["rules"][0].startswith("drafted by alice") for d in recorded), recorded
            assert got["incident"]["status"] == "awaiting_approval" and got["incident"]["proposal_id"] == draft
            assert got["incident"]["decision"] is None, "a drafted plan is never applied on its own"
            assert (await client.call_tool("describe_table", {"dataset": name})).structured_content["columns"] == before

            invalid = await client.call_tool("propose_plan", {"incident_id": incident["id"], "steps": "nope"})
            assert invalid.is_error

    run(session())


def test_stdio_reads_locally_and_decides_through_the_api(deployment):
    env = dict(deployment["env"], MEND_API_TOKEN="approver-token")
    env.pop("MEND_API_TOKENS")
    params = StdioServerParameters(command=MEND, args=["mcp"], env=env)

    async def session():
        async with Client(params) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            assert set(TOOLS) <= tools
            table = await client.call_tool("describe_table", {"dataset": deployment["name"]})
            assert table.structured_content["contract"]["schema_id"] > 0
            listed = await client.call_tool("list_incidents", {"dataset": deployment["name"]})
            assert [i["id"] for i in listed.structured_content["incidents"]] == [deployment["incident"]["id"]]
            approved = await client.call_tool(
                "approve_proposal", {"proposal_id": deployment["incident"]["proposal_id"], "reason": "alias proves it"}
            )
            assert not approved.is_error, approved
            decision = approved.structured_content["decision"]
            assert decision["by"] == "alice" and decision["channel"] == "mcp", decision

    run(session())
    api, name = deployment["api"], deployment["name"]
    healed = wait_for(
        "the incident healed",
        lambda: [
            i
            for i in requests.get(f"http://{api}/incidents", headers=_bearer("viewer-token"), timeout=5).json()
            if i["dataset"] == name and i["status"] == "healed"
        ],
    )
    assert healed[0]["decision"]["by"] == "alice" and healed[0]["decision"]["channel"] == "mcp"
    assert _count(name) == 40


INSPECTOR = os.environ.get("MEND_MCP_INSPECTOR", ".mend/node/node_modules/.bin/mcp-inspector")


def test_the_mcp_inspector_lists_and_calls_tools(deployment):
    """The MCP Inspector CLI (0.15.0, the newest that runs on Node 20)
    starting `mend mcp` itself."""
    env_args = []
    for key in ("MEND_CONFIG", "MEND_WAREHOUSE_URL", "MEND_KAFKA_BROKERS", "MEND_REGISTRY_URL", "MEND_API_ADDR"):
        if key in deployment["env"]:
            env_args += ["-e", f"{key}={deployment['env'][key]}"]
    base = [INSPECTOR, "--cli", MEND, *env_args, "mcp"]
    listed = subprocess.run([*base, "--method", "tools/list"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert set(TOOLS) <= {tool["name"] for tool in json.loads(listed.stdout)["tools"]}
    called = subprocess.run(
        [*base, "--method", "tools/call", "--tool-name", "describe_table", "--tool-arg", f"dataset={deployment['name']}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert called.returncode == 0, called.stderr
    answer = json.loads(called.stdout)
    assert not answer["isError"] and answer["structuredContent"]["table"] == deployment["name"], answer


def test_metrics_count_what_happened(deployment):
    """`/metrics` read with prometheus_client's OpenMetrics parser (strict: it
    refuses what is not OpenMetrics): the rows and
    quarantined records of the dataset are the ones produced, the healed
    incident is counted with its time to heal, and the MCP calls above are
    counted per tool."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    name = deployment["name"]
    text = requests.get(f"http://{deployment['api']}/metrics", headers=_bearer("viewer-token"), timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert samples[("mend_rows", (("dataset", name),))] == 40
    assert samples[("mend_records_quarantined", (("dataset", name),))] == 20
    healed = ("mend_incidents", (("dataset", name), ("kind", "field_renamed"), ("status", "healed")))
    assert samples[healed] == 1, sorted(k for k in samples if k[0] == "mend_incidents")
    assert samples[("mend_time_to_heal_seconds_count", ())] >= 1
    assert samples[("mend_mcp_tool_calls_total", (("outcome", "ok"), ("tool", "describe_table")))] >= 2
    assert samples[("mend_mcp_tool_calls_total", (("outcome", "error"), ("tool", "describe_table")))] >= 1
    assert samples[("mend_stage_records_total", (("stage", "loader"),))] >= 40
    # The registry cache: every record and event after the first of its
    # schema is a hit; a miss per distinct schema (the dataset's two and
    # mend's own event schemas).
    hits = samples[("mend_registry_cache_total", (("result", "hit"),))]
    misses = samples[("mend_registry_cache_total", (("result", "miss"),))]
    assert 2 <= misses <= 20 and hits > misses, (hits, misses)

    # Every record was loaded, so the loader's group catches up with the
    # dataset topic (offsets are committed a second after they are stored).
    def loader_lag():
        text = requests.get(f"http://{deployment['api']}/metrics", headers=_bearer("viewer-token"), timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "mend_consumer_lag" and sample.labels == {"stage": "loader", "topic": deployment["topic"]}:
                    return sample.value
        return None

    assert wait_for("the loader's lag to reach 0", lambda: loader_lag() == 0)
    env = dict(deployment["env"], MEND_API_TOKEN="viewer-token")
    stats = subprocess.run([MEND, "stats", "--json"], env=env, capture_output=True, text=True)
    assert stats.returncode == 0, stats.stderr
    row = next(r for r in json.loads(stats.stdout) if r["dataset"] == name)
    assert row["incidents"] == 1 and row["healed"] == 1, row
    assert row["time_to_heal_p50_seconds"] > 0 and row["waiting_for_person_p50_seconds"] > 0, row
