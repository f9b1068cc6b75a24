"""Declarative mapping files: checked against the contracts at load time, golden-tested, run by the CLI.

Golden files for mapping files work like the built-in mappers' ones: every sample
``docs/mappings/<name>.<event type>.json`` is mapped with ``docs/mappings/<name>.yaml`` and compared
with ``tests/golden/mappings/<name>.<event type>.expected.json`` (regenerate with
``LEDGERFLOW_UPDATE_GOLDEN=1`` after reviewing a deliberate change).
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from ledgerflow.app.cli import app
from ledgerflow.contracts import Bill, ContractError
from ledgerflow.core.settings import Routing
from ledgerflow.transformers.base import SkipEvent
from ledgerflow.transformers.declarative import (
    MappingError,
    load_mapping,
    map_payload,
    parse_mapping,
    tenant_routers,
)
from ledgerflow.transformers.standardwebhooks import canonical_mapping
from tests.transformers.transformer_helpers import raw_event

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "mappings"
GOLDEN = ROOT / "tests" / "golden" / "mappings"
SAMPLES = sorted(p for p in EXAMPLES.glob("*.json"))
UPDATE = os.environ.get("LEDGERFLOW_UPDATE_GOLDEN") == "1"


def _mapping_of(sample: Path) -> Path:
    return EXAMPLES / f"{sample.name.split('.', 1)[0]}.yaml"


def test_every_example_mapping_has_samples_and_golden_files() -> None:
    assert {p.stem for p in EXAMPLES.glob("*.yaml")} == {"fieldops", "tallybox"}
    assert len(SAMPLES) >= 2
    for sample in SAMPLES:
        assert _mapping_of(sample).is_file(), sample
        assert (GOLDEN / f"{sample.stem}.expected.json").is_file() or UPDATE, f"no golden file for {sample}"


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_mapping_golden(sample: Path) -> None:
    mapping = load_mapping(_mapping_of(sample))
    payload = json.loads(sample.read_text(encoding="utf-8"), parse_float=Decimal)
    event_type = payload.get("type") or payload["event"]  # Standard Webhooks' type, Tallybox's event
    record = map_payload(mapping, payload, event_type=event_type, tenant="acme", settings={"currency": "GBP"})
    actual = {"object_type": record.object_type, **json.loads(record.model_dump_json())}
    expected = GOLDEN / f"{sample.stem}.expected.json"
    if UPDATE:
        expected.write_text(json.dumps(actual, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert actual == json.loads(expected.read_text(encoding="utf-8"))


def test_amounts_stay_exact_decimals_through_expressions() -> None:
    mapping = load_mapping(EXAMPLES / "fieldops.yaml")
    payload = json.loads((EXAMPLES / "fieldops.expense.approved.json").read_text(encoding="utf-8"))
    payload["data"]["totals"] = {"net_cents": 30, "vat_cents": 0, "gross_cents": 30}
    payload["data"]["items"] = [
        {"id": "a", "text": "a", "net_cents": 10, "category": "materials"},
        {"id": "b", "text": "b", "net_cents": 20, "category": "labour"},
    ]
    bill = map_payload(mapping, payload, event_type="expense.approved")
    assert isinstance(bill, Bill)
    assert [line.amount for line in bill.line_items] == [Decimal("0.10"), Decimal("0.20")]
    assert bill.total == Decimal("0.30")
    assert [line.gl_account.accounting_custom_id for line in bill.line_items if line.gl_account] == ["5000", "5100"]


def test_tenant_setting_fills_a_missing_currency_and_a_missing_lookup_key_is_a_precise_error() -> None:
    mapping = load_mapping(EXAMPLES / "fieldops.yaml")
    payload = json.loads((EXAMPLES / "fieldops.expense.approved.json").read_text(encoding="utf-8"))
    del payload["data"]["currency"]
    bill = map_payload(mapping, payload, event_type="expense.approved", settings={"currency": "JPY"})
    assert isinstance(bill, Bill)
    assert bill.currency == "JPY"
    assert bill.total == Decimal(150000)  # JPY has no minor unit: cents are yen
    payload["data"]["items"][0]["category"] = "travel"
    with pytest.raises(ContractError, match="'travel' is not in lookup table 'gl_accounts'"):
        map_payload(mapping, payload, event_type="expense.approved", settings={"currency": "JPY"})


def test_unmapped_and_skipped_event_types_are_skips_and_an_invalid_record_is_a_validation_error() -> None:
    mapping = load_mapping(EXAMPLES / "fieldops.yaml")
    with pytest.raises(SkipEvent, match=r"'timesheet\.approved' is not mapped"):
        map_payload(mapping, {"type": "timesheet.approved"}, event_type="timesheet.approved")
    with pytest.raises(SkipEvent, match="drafts are not approved"):
        map_payload(mapping, {"type": "expense.draft"}, event_type="expense.draft")
    payload = json.loads((EXAMPLES / "fieldops.expense.approved.json").read_text(encoding="utf-8"))
    payload["data"]["totals"]["gross_cents"] = 150001
    with pytest.raises(ValidationError, match=r"total is 1500\.01"):
        map_payload(mapping, payload, event_type="expense.approved")


def test_the_shipped_standard_webhooks_mapping_is_the_identity_and_the_body_cannot_claim_a_tenant() -> None:
    mapping = canonical_mapping()
    data = {
        "source_id": "B-1",
        "tenant": "intruder",
        "vendor": {"name": "Acme"},
        "bill_date": "2026-01-02",
        "currency": "USD",
        "line_items": [{"line_number": 1, "amount": "0.10"}, {"line_number": 2, "amount": "0.20"}],
        "subtotal": "0.30",
        "total": "0.30",
    }
    bill = map_payload(mapping, {"type": "bill.created", "data": data}, event_type="bill.created", tenant="acme")
    assert bill.tenant == "acme"
    assert bill.canonical_id == "acme:standardwebhooks:bill:B-1"
    dumped = json.loads(bill.model_dump_json())
    for key in ("source_id", "bill_date", "currency", "subtotal", "total"):
        assert dumped[key] == data[key]
    assert dumped["vendor"]["name"] == "Acme"
    assert [line["amount"] for line in dumped["line_items"]] == ["0.10", "0.20"]


BROKEN = """\
source: standardwebhooks
lookups:
  gl: {a: "5000"}
events:
  expense.approved:
    object: bill
    fields:
      source_id: data.id
      vendor.nmae: data.supplier
      bill_date: {value: not-a-date}
      currency: {expr: data.currency, default: 12}
      tenant: data.tenant
      total: data.total[
      memo: {expr: data.memo, lookup: nowhere}
      line_items:
        each: data.items
        fields:
          description: text
  refund.approved:
    object: refund
    fields: {source_id: data.id}
"""


def test_a_broken_mapping_file_names_every_problem_with_its_line() -> None:
    with pytest.raises(MappingError) as caught:
        parse_mapping(BROKEN, "broken.yaml")
    problems = caught.value.problems
    text = "\n".join(problems)
    assert "broken.yaml:9: unknown field 'vendor.nmae': vendor has no field 'nmae'" in text
    assert "broken.yaml:10: bill_date: value: wrong type for the field" in text
    assert "broken.yaml:11: currency: default: wrong type for the field" in text
    assert "broken.yaml:12: 'tenant' is filled by ledgerflow from the route" in text
    assert "broken.yaml:13: total: expression 'data.total[' does not parse" in text
    assert "broken.yaml:14: memo: no lookup table 'nowhere'" in text
    assert "broken.yaml:7: missing required field 'subtotal' of bill" in text
    assert "broken.yaml:15: missing required field 'amount' of LineItem" in text
    assert "broken.yaml:20: event 'refund.approved': unknown object 'refund'" in text
    assert all(p.startswith("broken.yaml:") for p in problems)


def test_yaml_errors_and_wrongly_typed_lookup_tables_name_the_line() -> None:
    with pytest.raises(MappingError, match=r"^bad.yaml:4: not valid YAML"):
        parse_mapping("source: x\nevents:\n  a: [\n", "bad.yaml")
    text = (
        "source: standardwebhooks\nlookups:\n  flags: {yes_: maybe}\nevents:\n  supplier.*:\n    object: vendor\n"
        "    fields:\n      source_id: data.id\n      name: data.name\n      active: {expr: data.s, lookup: flags}\n"
    )
    with pytest.raises(MappingError, match=r"x.yaml:10: active: lookup flags\['yes_'\]: wrong type"):
        parse_mapping(text, "x.yaml")


def test_tenant_mapping_files_come_from_the_routing_file_and_take_over_that_tenants_events(tmp_path: Path) -> None:
    routing = Routing.model_validate(
        {
            "tenants": {
                "acme": {
                    "sources": {
                        "standardwebhooks": {
                            "tokens": ["whsec_x"],
                            "mapping": str(EXAMPLES / "fieldops.yaml"),
                            "options": {"currency": "GBP"},
                        }
                    }
                },
                "other": {"sources": {"standardwebhooks": {"tokens": ["whsec_y"]}}},
            }
        }
    )
    routers = tenant_routers(routing)
    assert set(routers) == {("acme", "standardwebhooks")}
    payload = json.loads((EXAMPLES / "fieldops.expense.approved.json").read_text(encoding="utf-8"))
    del payload["data"]["currency"]
    event = raw_event("standardwebhooks", "expense.approved", payload)
    route = routers[("acme", "standardwebhooks")](event)
    (bill,) = route.mapper(event)
    assert isinstance(bill, Bill)
    assert route.object_type == "bill"
    assert (bill.currency, bill.total) == ("GBP", Decimal("1500.00"))

    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN, encoding="utf-8")
    config = routing.tenants["other"].sources["standardwebhooks"]
    config.mapping = broken
    with pytest.raises(MappingError, match=r"broken.yaml:9: unknown field"):
        tenant_routers(routing)


def test_cli_mapping_test_prints_the_record_checks_a_golden_file_and_reports_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    sample = EXAMPLES / "fieldops.expense.approved.json"
    golden = GOLDEN / "fieldops.expense.approved.expected.json"
    result = runner.invoke(
        app,
        [
            "mapping",
            "test",
            str(EXAMPLES / "fieldops.yaml"),
            "--input",
            str(sample),
            "--tenant",
            "acme",
            "--setting",
            "currency=GBP",
            "--expect",
            str(golden),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["canonical_id"] == "acme:standardwebhooks:bill:exp_9f2c"

    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN, encoding="utf-8")
    result = runner.invoke(app, ["mapping", "test", str(broken), "--input", str(sample)])
    assert result.exit_code == 2
    assert f"{broken}:9: unknown field 'vendor.nmae'" in result.output.replace("\n", "")

    bad = tmp_path / "bad.json"
    payload = json.loads(sample.read_text(encoding="utf-8"))
    payload["data"]["approved_at"] = None
    bad.write_text(json.dumps(payload), encoding="utf-8")
    result = runner.invoke(app, ["mapping", "test", str(EXAMPLES / "fieldops.yaml"), "--input", str(bad)])
    assert result.exit_code == 1
    assert "bill_date: Field required" in result.output
