"""Mercoa transactions end to end in QuickBooks and Xero: only a settled payment is booked, and a
failure or return after booking voids it (issue 14: payments booked that did not happen)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledgerflow.connectors.base import Connector
from ledgerflow.connectors.quickbooks import QuickBooksConnector
from ledgerflow.connectors.quickbooks.sandbox import create_app as qbo_app
from ledgerflow.connectors.quickbooks.sandbox import sandbox_connection as qbo_connection
from ledgerflow.connectors.sandbox_kit import SandboxControl, serve
from ledgerflow.connectors.xero import XeroConnector
from ledgerflow.connectors.xero.sandbox import create_app as xero_app
from ledgerflow.connectors.xero.sandbox import sandbox_connection as xero_connection
from ledgerflow.contracts import Action, Operation, Payment
from ledgerflow.core.settings import ConnectionConfig
from ledgerflow.core.state import StateStore
from ledgerflow.transformers.base import SkipEvent
from tests.connectors.contract import CLIENT_TIMEOUT, contract_bill, ctx, entry
from tests.transformers.transformer_helpers import map_event, raw_event


def _transaction(event_type: str, status: str) -> dict[str, Any]:
    """A Mercoa transaction paying the contract bill ``in_pay`` (100.00 USD): amount in cents."""
    return {
        "eventType": event_type,
        "transaction": {
            "id": "trx_pay_1",
            "status": status,
            "amount": 10000,
            "currency": "USD",
            "createdAt": "2026-03-20T10:00:00Z",
            "updatedAt": "2026-03-21T10:00:00Z",
            "vendor": {"id": "ent_acme", "name": "Acme Concrete Supply", "isCustomer": False},
            "invoices": [
                {
                    "id": "in_pay",
                    "amount": 100,
                    "currency": "USD",
                    "invoiceNumber": "INV-in_pay",
                    "processedAt": "2026-03-20T00:00:00Z",
                }
            ],
        },
    }


def _payment(event_type: str, status: str) -> Payment:
    (payment,) = map_event(raw_event("mercoa", event_type, _transaction(event_type, status), tenant="contract"))
    assert isinstance(payment, Payment)
    return payment


ERPS: dict[str, tuple[Callable[..., Any], Callable[..., Any], type[Connector], str, str]] = {
    "quickbooks": (qbo_app, qbo_connection, QuickBooksConnector, "Finance.xsd", "35"),
    "xero": (xero_app, xero_connection, XeroConnector, "xero_accounting.yaml", "090"),
}


@pytest.mark.parametrize("erp", sorted(ERPS))
async def test_settled_payment_is_booked_then_voided_when_the_transaction_fails(
    erp: str, http: httpx.AsyncClient, state: StateStore, shared_dir: Path
) -> None:
    make_app, connection, connector_type, spec, bank = ERPS[erp]
    with pytest.raises(SkipEvent, match="not settled"):
        _payment("transaction.pending", "PENDING")
    async with serve(make_app(spec_path=shared_dir / "specs" / spec)) as url:
        config = connection(
            ConnectionConfig(
                erp=erp,
                options={
                    "timeout_seconds": CLIENT_TIMEOUT,
                    "rate_limit_per_minute": 6000,
                    "default_bank_account": bank,
                },
            ),
            url,
        )
        connector = connector_type(erp, config, http, state)
        bill = contract_bill("in_pay")
        booked = await connector.handle(bill, ctx("b1"))
        assert booked.erp_record_id
        await state.put_binding(
            erp, bill.canonical_id, erp_record_id=booked.erp_record_id, erp_version=None, content_hash=""
        )

        completed = _payment("transaction.completed", "COMPLETED")
        assert (completed.action, str(completed.amount)) == (Action.UPSERT, "100.00")
        paid = await connector.handle(completed, ctx("p1"))
        assert paid.operation is Operation.CREATE

        failed = _payment("transaction.failed", "FAILED")
        assert (failed.action, failed.status) == (Action.VOID, "failed")
        voided = await connector.handle(failed, ctx("p2", entry(paid)))
        assert voided.operation is Operation.VOID

        control = SandboxControl(http, url)
        kind = "billpayment" if erp == "quickbooks" else "payment"
        stored = [r["record"] for r in await control.records(kind)]
        assert stored, f"no {kind} in the {erp} sandbox"
        if erp == "xero":
            assert all(r.get("Status") == "DELETED" for r in stored)
        else:  # QuickBooks voids a bill payment by zeroing it (what the sandbox stores, as QBO does)
            assert all(r["TotalAmt"] == 0 and r["PrivateNote"] == "Voided" for r in stored), stored
