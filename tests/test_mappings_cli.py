"""``ledgerflow mappings``: set, list, remove and CSV import, validated against the reference cache (issue 19)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from ledgerflow.app.cli import app
from ledgerflow.connectors.base import Booked, Connector, HandleContext
from ledgerflow.connectors.preflight import ReferenceGuard
from ledgerflow.contracts import Bill, CanonicalRecord
from ledgerflow.contracts.reference import ReferenceRecord
from ledgerflow.core.reference_cache import ReferenceCache
from ledgerflow.core.settings import ConnectionConfig
from ledgerflow.core.state import StateStore


def _account(code: str, *, active: bool = True) -> ReferenceRecord:
    return ReferenceRecord(
        kind="gl_account",
        erp="xero",
        connection="xero-main",
        entity="Account",
        erp_id=f"id-{code}",
        code=code,
        name=f"Account {code}",
        active=active,
        updated_at=datetime(2026, 11, 1, tzinfo=UTC),
        erp_record={},
    )


async def _seed(url: str) -> None:
    state = StateStore(url)
    await state.create_all()
    records = [_account("400"), _account("429"), _account("455", active=False)]
    await ReferenceCache(state).write("xero-main", "gl_account", "Account", records, complete=True)
    await state.close()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    routing = tmp_path / "routing.yaml"
    routing.write_text(
        yaml.safe_dump(
            {
                "tenants": {
                    "acme": {"sources": {"mercoa": {"tokens": ["t"]}}, "connections": ["xero-main", "qbo-main"]},
                    "beta": {"sources": {"mercoa": {"tokens": ["u"]}}},
                },
                "connections": {
                    "xero-main": {"erp": "xero", "objects": ["bill"]},
                    "qbo-main": {"erp": "quickbooks", "objects": ["bill"]},
                },
            }
        ),
        encoding="utf-8",
    )
    url = f"sqlite+aiosqlite:///{tmp_path}/state.db"
    monkeypatch.setenv("LEDGERFLOW_ROUTING_FILE", str(routing))
    monkeypatch.setenv("LEDGERFLOW_STATE_URL", url)
    asyncio.run(_seed(url))
    return url


def _bill(code: str) -> Bill:
    return Bill.model_validate(
        {
            "canonical_id": "acme:mercoa:bill:b1",
            "tenant": "acme",
            "source": "mercoa",
            "source_id": "b1",
            "source_event": "invoice.created",
            "vendor": {"name": "V"},
            "bill_date": "2026-11-01",
            "currency": "USD",
            "line_items": [{"line_number": 1, "amount": "10.00", "gl_account": {"accounting_custom_id": code}}],
            "subtotal": "10.00",
            "total": "10.00",
        }
    )


class _Xero(Connector):
    erp = "xero"
    supports = frozenset({"bill"})

    async def check(self) -> None:
        return None

    async def handle(self, record: CanonicalRecord, ctx: HandleContext) -> Booked:
        raise AssertionError("never called: only the mappings are applied")


async def _applied(url: str, code: str) -> str | None:
    state = StateStore(url)
    try:
        connector = _Xero("xero-main", ConnectionConfig(erp="xero"), httpx.AsyncClient(), state)
        mapped = await ReferenceGuard(connector, state).apply_maps(_bill(code))
        account = mapped.line_items[0].gl_account
        return account.accounting_id if account else None
    finally:
        await state.close()


def test_set_list_remove_and_the_runtime_applies_it(env: str) -> None:
    runner = CliRunner()
    target = ["--tenant", "acme", "--connection", "xero-main", "--kind", "gl_account"]

    ok = runner.invoke(app, ["mappings", "set", *target, "materials", "400"])
    assert ok.exit_code == 0, ok.output
    assert asyncio.run(_applied(env, "materials")) == "400"

    unknown = runner.invoke(app, ["mappings", "set", *target, "travel", "6999"])
    assert unknown.exit_code == 2
    assert "GL account 6999 is not in xero-main's chart of accounts" in " ".join(unknown.output.split())
    inactive = runner.invoke(app, ["mappings", "set", *target, "travel", "455"])
    assert inactive.exit_code == 2
    assert "inactive" in inactive.output
    forced = runner.invoke(app, ["mappings", "set", *target, "travel", "6999", "--force"])
    assert forced.exit_code == 0, forced.output
    assert "stored anyway (force)" in " ".join(forced.output.split())

    not_routed = runner.invoke(
        app, ["mappings", "set", "--tenant", "beta", "--connection", "xero-main", "--kind", "gl_account", "x", "400"]
    )
    assert not_routed.exit_code == 2
    assert "does not route to" in not_routed.output

    listed = runner.invoke(app, ["mappings", "list", "--tenant", "acme", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(r["source_code"], r["erp_id"]) for r in rows] == [("materials", "400"), ("travel", "6999")]

    assert runner.invoke(app, ["mappings", "remove", *target, "materials"]).exit_code == 0
    assert runner.invoke(app, ["mappings", "remove", *target, "materials"]).exit_code == 1
    assert asyncio.run(_applied(env, "materials")) is None  # unmapped: the source's own code only


def test_import_is_all_or_nothing(env: str, tmp_path: Path) -> None:
    runner = CliRunner()
    target = ["--tenant", "acme", "--connection", "xero-main"]
    bad = tmp_path / "bad.csv"
    bad.write_text("kind,source_code,erp_id\ngl_account,materials,400\ngl_account,travel,6999\nnope,x,1\n")
    refused = runner.invoke(app, ["mappings", "import", str(bad), *target])
    assert refused.exit_code == 2
    output = " ".join(refused.output.split())
    assert "bad.csv:3: gl_account travel → 6999" in output
    assert "bad.csv:4: unknown kind 'nope'" in output
    listed = runner.invoke(app, ["mappings", "list", "--json"])
    assert json.loads(listed.stdout) == []

    good = tmp_path / "good.csv"
    good.write_text("source_code,erp_id\nmaterials,400\ntravel,429\n")
    imported = runner.invoke(app, ["mappings", "import", str(good), *target, "--kind", "gl_account"])
    assert imported.exit_code == 0, imported.output
    rows = json.loads(runner.invoke(app, ["mappings", "list", "--json"]).stdout)
    assert {(r["kind"], r["source_code"], r["erp_id"]) for r in rows} == {
        ("gl_account", "materials", "400"),
        ("gl_account", "travel", "429"),
    }


def test_a_kind_the_connection_does_not_use_is_refused_naming_what_it_uses(env: str, tmp_path: Path) -> None:
    # Issue 19: QuickBooks takes its tax codes from the connection's options; a tax_rate mapping
    # would be stored and do nothing, so it is refused, even with --force.
    runner = CliRunner()
    target = ["--tenant", "acme", "--connection", "qbo-main"]
    refused = runner.invoke(app, ["mappings", "set", *target, "--kind", "tax_rate", "vat20", "TAX", "--force"])
    assert refused.exit_code == 2
    output = " ".join(refused.output.split())
    assert "tax_rate vat20 → TAX refused: qbo-main: quickbooks books tax through the connection's options" in output
    assert "tax_rate mappings are not used" in output

    csv_file = tmp_path / "codes.csv"
    csv_file.write_text("kind,source_code,erp_id\ncost_code,03-3000,5\ntax_rate,vat20,TAX\n")
    imported = runner.invoke(app, ["mappings", "import", str(csv_file), *target, "--force"])
    assert imported.exit_code == 2
    assert "codes.csv:3: qbo-main: quickbooks books tax" in " ".join(imported.output.split())
    assert json.loads(runner.invoke(app, ["mappings", "list", "--json"]).stdout) == []
