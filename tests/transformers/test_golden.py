"""Golden files: ``tests/golden/<source>/<object>.input.json`` → mapper → ``.expected.json``.

An input file holds ``tenant``, ``event_type``, optional ``object_hint``/``method``, the
``enrichment`` the route's enricher would have fetched, and the raw ``payload`` (or
``payload_from_shared``: a path under ``../shared``). A case whose document must not be booked
expects ``{"skipped": reason}`` (:class:`SkipEvent`) or ``{"error": reason}`` (a contract error:
dead letter) instead of the list of canonical records. Regenerate with
``LEDGERFLOW_UPDATE_GOLDEN=1`` after reviewing a deliberate change; CI never sets it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ledgerflow.contracts import ContractError
from ledgerflow.transformers.base import SkipEvent
from tests.transformers.transformer_helpers import map_event, raw_event

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
CASES = sorted(GOLDEN.glob("*/*.input.json"))
UPDATE = os.environ.get("LEDGERFLOW_UPDATE_GOLDEN") == "1"


def test_every_source_and_object_has_a_golden_file() -> None:
    found = {(p.parent.name, p.name.removesuffix(".input.json")) for p in CASES}
    expected = {
        ("ingenious", o)
        for o in ("vendor_invoice", "vendor_contract", "vendor_contract_change", "budget", "budget_change")
    }
    expected |= {
        ("mercoa", o) for o in ("invoice", "invoice_bulk", "entity", "counterparty", "payment_method", "transaction")
    }
    expected |= {("monite", o) for o in ("payable", "receivable", "counterpart", "payment_record")}
    expected |= {
        ("accountingsuite", o)
        for o in ("companies", "item", "sales_order", "sales_invoice", "cash_sale", "cash_receipt")
    }
    expected |= {("accessplanit", o) for o in ("invoices", "transactions")}
    expected |= {("standardwebhooks", o) for o in ("bill", "vendor")}
    expected |= {("custom", "bill")}
    assert expected <= found, f"missing golden inputs: {sorted(expected - found)}"
    for path in CASES:
        assert path.with_name(path.name.replace(".input.", ".expected.")).is_file() or UPDATE, (
            f"no expected file for {path}"
        )


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.name.removesuffix('.input.json')}")
def test_golden(path: Path, request: pytest.FixtureRequest) -> None:
    spec = json.loads(path.read_text(encoding="utf-8"))
    if "payload_from_shared" in spec:
        shared: Path = request.getfixturevalue("shared_dir")
        spec["payload"] = json.loads((shared / spec["payload_from_shared"]).read_text(encoding="utf-8"))
    event = raw_event(
        path.parent.name,
        spec["event_type"],
        spec["payload"],
        tenant=spec.get("tenant", "acme"),
        object_hint=spec.get("object_hint"),
        method=spec.get("method", "POST"),
        enrichment=spec.get("enrichment"),
    )
    actual: Any
    try:
        records = map_event(event)
    except SkipEvent as exc:
        actual = {"skipped": exc.reason}
    except (ContractError, ValidationError) as exc:
        actual = {"error": str(exc).splitlines()[0] if isinstance(exc, ContractError) else _first_error(exc)}
    else:
        actual = [{"object_type": r.object_type, **r.model_dump(mode="json")} for r in records]
    expected_path = path.with_name(path.name.replace(".input.", ".expected."))
    if UPDATE:
        expected_path.write_text(json.dumps(actual, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert actual == json.loads(expected_path.read_text(encoding="utf-8"))


def _first_error(exc: ValidationError) -> str:
    """The first validation error's message, without pydantic's version-specific URL."""
    return str(exc.errors()[0]["msg"])
