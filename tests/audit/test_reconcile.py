"""Control totals: accepted against booked per connection, object type and currency, with the reasons."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledgerflow.app.cli import app as cli
from ledgerflow.audit.migrate import upgrade
from ledgerflow.audit.reconcile import reconcile
from ledgerflow.audit.store import AuditStore, CanonicalEvent
from ledgerflow.contracts import Difference, ErrorInfo, Outcome
from tests.audit.api_helpers import audit_api
from tests.audit.audit_helpers import T0, MakeResult


async def _accept(store: AuditStore, n: int, total: str, *, currency: str = "USD", action: str = "upsert") -> None:
    body = {"canonical_id": f"mercoa:bill:in_{n}", "total": total, "currency": currency, "action": action}
    await store.put_canonical(
        CanonicalEvent(
            canonical_id=f"mercoa:bill:in_{n}",
            object_type="bill",
            tenant="acme",
            event_id=f"c{n}",
            headers={},
            body=json.dumps(body).encode(),
            topic="ledgerflow.bill.v1",
            partition=0,
            offset=n,
            source_id=f"in_{n}",
            document_number=None,
        )
    )


async def _seed(store: AuditStore, make_result: MakeResult) -> None:
    for n, total in ((1, "100.00"), (2, "250.50"), (3, "99.99"), (4, "10.00"), (5, "5.00")):
        await _accept(store, n, total)
    await _accept(store, 6, "7000", currency="JPY")
    await _accept(store, 7, "1.00", action="void")
    await store.ingest(make_result(1, amount=Decimal("100.00")), "r1")
    await store.ingest(make_result(2, amount=Decimal("250.50")), "r2")
    mismatch = ErrorInfo(
        code="erp.mismatch",
        message="quickbooks record differs from the source document: total: source 99.99, quickbooks 90.00",
        retriable=False,
        differences=[Difference(field="total", expected="99.99", actual="90.00")],
    )
    await store.ingest(make_result(3, outcome=Outcome.FAILED, error=mismatch, amount=Decimal("99.99")), "r3")
    skip = ErrorInfo(code="record.not_approved", message="bill is draft in mercoa", retriable=False)
    await store.ingest(make_result(4, outcome=Outcome.SKIPPED, error=skip, amount=Decimal("10.00")), "r4")
    await store.ingest(make_result(6, amount=Decimal("7000"), currency="JPY"), "r6")
    # bill 5 has no result yet; another connection booked bill 1 only.
    await store.ingest(make_result(1, connection="xero-main", erp="xero"), "x1")


async def test_control_totals_name_every_unbooked_document(store: AuditStore, make_result: MakeResult) -> None:
    await _seed(store, make_result)
    result = await reconcile(
        store,
        tenant="acme",
        since=T0 - timedelta(days=1),
        routes={"qbo-main": ["bill", "vendor"], "xero-main": ["bill"]},
    )
    rows = {(t.connection, t.currency): t for t in result.totals}
    usd = rows[("qbo-main", "USD")]
    assert (usd.accepted.count, usd.accepted.amount) == (5, Decimal("465.49"))
    assert (usd.booked.count, usd.booked.amount) == (2, Decimal("350.50"))
    assert (usd.skipped.count, usd.failed.count, usd.pending.count) == (1, 1, 1)
    assert (usd.difference.count, usd.difference.amount) == (2, Decimal("104.99"))
    reasons = {u.canonical_id: (u.outcome, u.code) for u in usd.unbooked}
    assert reasons == {
        "mercoa:bill:in_3": ("failed", "erp.mismatch"),
        "mercoa:bill:in_4": ("skipped", "record.not_approved"),
        "mercoa:bill:in_5": ("pending", None),
    }
    assert "quickbooks 90.00" in str(next(u.reason for u in usd.unbooked if u.code == "erp.mismatch"))
    jpy = rows[("qbo-main", "JPY")]
    assert (jpy.accepted.amount, jpy.booked.amount, jpy.difference.amount) == (Decimal(7000), Decimal(7000), Decimal(0))
    xero = rows[("xero-main", "USD")]
    assert (xero.booked.count, xero.pending.count, xero.difference.count) == (1, 4, 4)
    assert not result.balanced


async def test_a_fully_booked_period_is_balanced(store: AuditStore, make_result: MakeResult) -> None:
    await _accept(store, 1, "100.00")
    await store.ingest(make_result(1, amount=Decimal("100.00")), "r1")
    result = await reconcile(store, tenant="acme", since=T0 - timedelta(days=1), connection="qbo-main")
    assert result.balanced
    assert [(t.connection, t.difference.count, t.difference.amount) for t in result.totals] == [
        ("qbo-main", 0, Decimal(0))
    ]
    assert await reconcile(store, tenant="other", since=T0 - timedelta(days=1)) == type(result)(
        tenant="other", since=T0 - timedelta(days=1), until=None, totals=[], dead_letters={}
    )


@pytest.mark.parametrize("balanced", [True, False])
def test_the_cli_prints_json_and_exits_1_on_a_difference(
    sqlite_url: str, tmp_path: Path, make_result: MakeResult, balanced: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def seed() -> None:
        await upgrade(sqlite_url)
        store = AuditStore(sqlite_url)
        try:
            await _accept(store, 1, "100.00")
            if balanced:
                await store.ingest(make_result(1, amount=Decimal("100.00")), "r1")
            else:
                await store.ingest(make_result(1, outcome=Outcome.FAILED), "r1")
        finally:
            await store.close()

    asyncio.run(seed())
    monkeypatch.setenv("LEDGERFLOW_STATE_URL", sqlite_url)
    monkeypatch.delenv("LEDGERFLOW_ROUTING_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    run = CliRunner().invoke(cli, ["reconcile", "--tenant", "acme", "--since", "2026-10-31", "--json"])
    assert run.exit_code == (0 if balanced else 1), run.output
    data = json.loads(run.stdout)
    assert data["balanced"] is balanced
    assert data["totals"][0]["accepted"] == {"count": 1, "amount": "100.00"}
    assert data["totals"][0]["difference"]["count"] == (0 if balanced else 1)
    table = CliRunner().invoke(cli, ["reconcile", "--tenant", "acme", "--since", "2026-10-31"])
    assert ("balanced" if balanced else "NOT balanced") in table.stdout
    if not balanced:
        assert "erp.validation: Vendor not found" in table.stdout


async def test_the_api_serves_the_control_totals_to_readers_of_the_tenant(
    tmp_path: Path, make_result: MakeResult
) -> None:
    async with audit_api(tmp_path) as api:
        await _accept(api.store, 1, "100.00")
        await api.store.ingest(make_result(1, outcome=Outcome.FAILED), "r1")
        reader = await api.key(["read"], ["acme"])
        stranger = await api.key(["read"], ["other"])
        async with api.client(reader) as http:
            answer = await http.get("/v1/reconciliation", params={"tenant": "acme", "since": "2026-10-31T00:00:00Z"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["balanced"] is False
        assert body["totals"][0]["difference"] == {"count": 1, "amount": "100.00"}
        assert body["totals"][0]["unbooked"][0]["code"] == "erp.validation"
        async with api.client(stranger) as http:
            hidden = await http.get("/v1/reconciliation", params={"tenant": "acme", "since": "2026-10-31"})
        assert hidden.status_code == 404
        assert hidden.headers["content-type"].startswith("application/problem+json")
