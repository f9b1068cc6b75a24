"""End to end: the demo fan-out to every ERP reconciles to zero; an ERP that books something else shows up.

`ledgerflow demo --all-erps` routing over the real broker: the Mercoa sample bill booked into
QuickBooks, Xero, NetSuite, SAP, Coupa and the HTTP target; the control totals
(:mod:`ledgerflow.audit.reconcile`) read from the audit store are balanced. Then the QuickBooks
sandbox is told to store the next bill with another total: read-back verification fails that
result with ``erp.mismatch`` and the control totals show the difference with the reason.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest

from ledgerflow.app import demo
from ledgerflow.app.demo import all_erps_routing
from ledgerflow.app.stack import run_stack
from ledgerflow.audit.reconcile import Reconciliation, reconcile
from ledgerflow.audit.store import AuditStore
from ledgerflow.connectors.registry import ERP_KINDS as ALL_ERPS
from ledgerflow.connectors.sandbox_kit import SandboxControl
from ledgerflow.contracts import Outcome
from ledgerflow.core.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


async def _totals_once_recorded(url: str, since: datetime, expected: int) -> Reconciliation:
    """The control totals once the audit has recorded ``expected`` booked-or-failed documents (≤ 30 s)."""
    store = AuditStore(url)
    try:
        deadline = time.monotonic() + 30
        while True:
            result = await reconcile(store, tenant="demo", since=since)
            seen = sum(t.booked.count + t.failed.count for t in result.totals)
            if seen >= expected or time.monotonic() > deadline:
                return result
            await asyncio.sleep(0.2)
    finally:
        await store.close()


async def test_demo_fan_out_reconciles_and_an_altered_booking_is_the_difference(
    kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path: Path, mercoa_sample: bytes, unique: str
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=not kafka_is_embedded,
        topic_prefix=f"rec{unique}",
        topic_partitions=3,
        state_url=f"sqlite+aiosqlite:///{tmp_path}/state.db",
    )
    payload = orjson.loads(mercoa_sample)
    amount = Decimal(str(payload["invoice"]["amount"]))
    since = datetime.now(UTC) - timedelta(minutes=1)
    async with run_stack(settings, all_erps_routing()) as stack:
        await demo.post_webhook(stack, mercoa_sample)
        first = f"demo:mercoa:bill:{payload['invoice']['id']}"
        results = await demo.collect_results(
            stack.bootstrap_servers, settings.topics.results, first, list(ALL_ERPS), timeout=90
        )
        assert {r.outcome for r in results.values()} == {Outcome.SUCCEEDED}, {e: r.error for e, r in results.items()}
        balanced = await _totals_once_recorded(settings.state_url, since, len(ALL_ERPS))
        assert balanced.balanced, [t.as_json() for t in balanced.totals]
        assert {t.connection for t in balanced.totals} == set(ALL_ERPS)
        for total in balanced.totals:
            assert (total.accepted.count, total.accepted.amount) == (1, amount), total.as_json()
            assert (total.booked.amount, total.difference.amount) == (amount, Decimal(0)), total.as_json()

        # QuickBooks now books every bill 1.00 short of what it is sent.
        async with httpx.AsyncClient(timeout=10) as http:
            await SandboxControl(http, stack.sandboxes["quickbooks"]).alter_next(
                "bill", {"TotalAmt": format(amount - 1, "f")}
            )
        second = dict(payload)
        second["invoice"] = {**payload["invoice"], "id": f"{payload['invoice']['id']}-2"}
        await demo.post_webhook(stack, orjson.dumps(second))
        results = await demo.collect_results(
            stack.bootstrap_servers,
            settings.topics.results,
            f"demo:mercoa:bill:{second['invoice']['id']}",
            list(ALL_ERPS),
            timeout=90,
        )
        qbo = results["quickbooks"]
        assert qbo.outcome is Outcome.FAILED
        assert qbo.error is not None
        assert qbo.error.code == "erp.mismatch"
        assert qbo.error.differences is not None
        assert ("total", f"{amount:.2f}", f"{amount - 1:.2f}") in [
            (d.field, d.expected, d.actual) for d in qbo.error.differences
        ]
        unbalanced = await _totals_once_recorded(settings.state_url, since, 2 * len(ALL_ERPS))
    assert not unbalanced.balanced
    rows = {t.connection: t for t in unbalanced.totals}
    assert (rows["quickbooks"].difference.count, rows["quickbooks"].difference.amount) == (1, amount)
    assert [(u.outcome, u.code) for u in rows["quickbooks"].unbooked] == [("failed", "erp.mismatch")]
    assert "total: source" in str(rows["quickbooks"].unbooked[0].reason)
    for erp in set(ALL_ERPS) - {"quickbooks"}:
        assert rows[erp].difference.count == 0, rows[erp].as_json()
