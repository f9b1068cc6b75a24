"""Published contracts: the JSON Schemas validate real messages; the AsyncAPI document passes the official parser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from ledgerflow.app.schemas import asyncapi_document, export
from ledgerflow.contracts import OBJECT_MODELS, Operation, Outcome, SyncResult
from ledgerflow.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("contracts")
    export(folder, Settings())
    return folder


def _schema(folder: Path, name: str) -> Draft202012Validator:
    schema = json.loads((folder / f"{name}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_every_object_has_a_valid_schema(exported: Path) -> None:
    names = {p.name for p in exported.iterdir()}
    assert {f"{name}.schema.json" for name in OBJECT_MODELS} | {"sync_result.schema.json", "asyncapi.json"} == names


def test_golden_canonical_records_validate(exported: Path) -> None:
    """Every canonical record the mappers produce for the golden inputs is valid under its object's schema."""
    checked = 0
    for expected in sorted(GOLDEN.glob("*/*.expected.json")):
        records = json.loads(expected.read_text())
        for record in records if isinstance(records, list) else []:
            if not isinstance(record, dict) or record.get("object_type") not in OBJECT_MODELS:
                continue
            # The golden harness names the type beside the record; on the wire the topic says it.
            message = {k: v for k, v in record.items() if k != "object_type"}
            errors = list(_schema(exported, record["object_type"]).iter_errors(message))
            assert not errors, f"{expected.name}: {errors[0].message} at {list(errors[0].absolute_path)}"
            checked += 1
    assert checked >= 30


def test_a_sync_result_validates(exported: Path) -> None:
    now = datetime.now(UTC)
    result = SyncResult(
        event_id="ev-1",
        canonical_id="acme:mercoa:bill:in_1",
        object_type="bill",
        tenant="acme",
        source="mercoa",
        erp="quickbooks",
        connection="qbo-main",
        operation=Operation.CREATE,
        outcome=Outcome.SUCCEEDED,
        erp_record_id="146",
        attempts=1,
        amount=Decimal("1250.40"),
        currency="USD",
        started_at=now,
        finished_at=now,
    )
    document = json.loads(result.model_dump_json())
    assert not list(_schema(exported, "sync_result").iter_errors(document))
    document["outcome"] = "booked-probably"
    assert list(_schema(exported, "sync_result").iter_errors(document))


def test_asyncapi_covers_every_topic_and_who_sends_and_receives_it() -> None:
    settings = Settings()
    document: dict[str, Any] = asyncapi_document(settings)
    addresses = {c["address"] for c in document["channels"].values()}
    assert set(settings.topics.all()) <= addresses
    operations = document["operations"]
    assert operations["ingress-send-raw-mercoa"]["action"] == "send"
    assert operations["transformer-receive-raw-mercoa"]["action"] == "receive"
    assert operations["connector-receive-bill-v1"]["action"] == "receive"
    assert operations["connector-send-results-v1"]["action"] == "send"
    assert operations["audit-receive-results-v1"]["action"] == "receive"
    bill = document["components"]["messages"]["Bill"]
    assert "ce_id" in bill["headers"]["properties"]
    assert "ce_tenant" in bill["headers"]["required"]
    assert bill["payload"]["properties"]["total"]


def _parser_modules() -> Path | None:
    for candidate in (os.environ.get("LEDGERFLOW_NODE_MODULES"), ROOT / ".venv" / "node" / "node_modules"):
        if candidate and (Path(candidate) / "@asyncapi" / "parser").is_dir():
            return Path(candidate)
    return None


def test_asyncapi_document_passes_the_official_parser(exported: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the official AsyncAPI parser runs on Node")
    modules = _parser_modules()
    if modules is None:
        pytest.skip("@asyncapi/parser is not installed (.ci/run installs it into .venv/node)")
    proc = subprocess.run(
        [node, str(ROOT / "tests" / "asyncapi_parse.cjs"), str(exported / "asyncapi.json")],
        env={**os.environ, "NODE_PATH": str(modules)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    verdict = json.loads(proc.stdout.strip().splitlines()[-1])
    assert verdict["valid"], verdict["errors"]
    assert verdict["warnings"] == []
    assert verdict["channels"] == len(asyncapi_document(Settings())["channels"])
