"""mend's dbt patches are valid: the dbt_patch step of a `mend plan` is a
unified diff that `git apply` applies to tests/dbt/models/schema.yml, and the
patched project passes `dbt parse` (dbt-core and dbt-postgres from PyPI).
"""

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import requests
import yaml

REGISTRY = os.environ.get("MEND_REGISTRY_URL", "http://127.0.0.1:18081")
MEND = os.environ.get("MEND_BIN", "mend")
PROJECT = Path(__file__).resolve().parent.parent / "dbt"
DBT = Path(sys.executable).parent / "dbt"


def schema(version):
    status_symbols = ["paid", "shipped"] + (["refunded"] if version == 2 else [])
    email = (
        {"name": "customer_email", "type": "string", "aliases": ["email"]}
        if version == 2
        else {"name": "email", "type": "string"}
    )
    fields = [
        {"name": "id", "type": "long"},
        email,
        {"name": "amount", "type": "double"},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": status_symbols}},
    ]
    if version == 2:
        fields.append({"name": "coupon", "type": ["null", "string"], "default": None, "doc": "Promotion code used"})
    return {"type": "record", "name": "Order", "namespace": "shop", "fields": fields}


def test_plan_patch_applies_and_dbt_parses(tmp_path):
    name = f"dbt_{uuid.uuid4().hex[:12]}"
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("target", "logs"))
    subject = f"{name}.orders-value"
    answer = requests.post(
        f"{REGISTRY}/subjects/{subject}/versions",
        json={"schema": json.dumps(schema(1))},
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    (tmp_path / "mend.toml").write_text(
        f'[[dataset]]\nname = "{name}"\ntopic = "{name}.orders"\ntable = "orders"\nkey = ["id"]\n'
        f'dbt = {{ project = "{project}", schema = "models/schema.yml", model = "orders" }}\n'
    )
    (tmp_path / "v2.avsc").write_text(json.dumps(schema(2)))
    env = dict(os.environ, MEND_CONFIG=str(tmp_path / "mend.toml"), MEND_WAREHOUSE_URL=f"sqlite://{tmp_path}/w.db")
    plan = subprocess.run(
        [MEND, "plan", "--dataset", name, "--schema", str(tmp_path / "v2.avsc"), "--json"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert plan.returncode == 2, plan.stdout + plan.stderr  # the rename waits for approval
    report = json.loads(plan.stdout)
    kinds = sorted(change["kind"] for change in report["changes"])
    assert kinds == ["enum_symbols_added", "field_added", "field_renamed"], kinds
    patches = [step["patch"] for step in report["steps"] if step["kind"] == "dbt_patch"]
    assert len(patches) == 1, report["steps"]
    (tmp_path / "mend.patch").write_text(patches[0])

    applied = subprocess.run(
        ["git", "apply", "--verbose", str(tmp_path / "mend.patch")], cwd=project, capture_output=True, text=True
    )
    assert applied.returncode == 0, applied.stderr
    models = yaml.safe_load((project / "models" / "schema.yml").read_text())["models"]
    columns = {column["name"]: column for column in models[0]["columns"]}
    assert columns["coupon"]["description"] == "Promotion code used"
    assert columns["email"]["meta"] == {"mend_source_field": "customer_email", "mend_renamed_from": "email"}
    tests = columns["status"]["data_tests"][0]["accepted_values"]
    assert tests["values"] == ["paid", "shipped", "refunded"]

    parsed = subprocess.run(
        [str(DBT), "parse", "--project-dir", str(project), "--profiles-dir", str(project)],
        capture_output=True, text=True, timeout=300,
    )
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr
