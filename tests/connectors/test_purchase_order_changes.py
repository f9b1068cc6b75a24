"""An INGENIOUS Vendor Contract Change updates the purchase order it changes, in each ERP that allows it.

The golden INGENIOUS records (``tests/golden/ingenious/vendor_contract*.expected.json``): contract
``vc_3391`` (127,000.00 USD) and its change ``vcc_77`` (+9,500.00, -2,000.00). The order is booked,
the binder row the runtime writes is stored, the change is handled, and the test reads the order
the ERP sandbox holds: the change's lines are on it and its total moved by the change's total.
A new version of the change replaces its lines (not added twice); a void removes them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ledgerflow.connectors.base import Connector, RetriableError
from ledgerflow.connectors.netsuite import NetSuiteConnector
from ledgerflow.connectors.netsuite.sandbox import create_app as netsuite_app
from ledgerflow.connectors.quickbooks import QuickBooksConnector
from ledgerflow.connectors.quickbooks.sandbox import create_app as qbo_app
from ledgerflow.connectors.sandbox_kit import SandboxControl, serve
from ledgerflow.connectors.xero import XeroConnector
from ledgerflow.connectors.xero.sandbox import create_app as xero_app
from ledgerflow.contracts import Action, Operation, PurchaseOrder, PurchaseOrderChange
from ledgerflow.core.state import StateStore
from tests.connectors.contract import ctx, entry
from tests.connectors.test_netsuite import TBA, ns_config
from tests.connectors.test_quickbooks import qbo_config
from tests.connectors.test_xero import xero_config

pytestmark = pytest.mark.timeout(60)

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "ingenious"


def _golden(name: str) -> dict[str, Any]:
    (record,) = json.loads((GOLDEN / f"{name}.expected.json").read_text(encoding="utf-8"))
    record.pop("object_type")
    return dict(record)


def _order() -> PurchaseOrder:
    return PurchaseOrder.model_validate(_golden("vendor_contract"))


def _change(**update: Any) -> PurchaseOrderChange:
    return PurchaseOrderChange.model_validate({**_golden("vendor_contract_change"), **update})


async def _book_order(connector: Connector, state: StateStore) -> str:
    order = _order()
    booked = await connector.handle(order, ctx("po-1"))
    assert booked.erp_record_id is not None
    # What the runtime writes after booking: canonical id → the ERP's id.
    await state.put_binding(
        connector.name, order.canonical_id, erp_record_id=booked.erp_record_id, erp_version=None, content_hash="h"
    )
    return booked.erp_record_id


@pytest.fixture
async def qbo() -> AsyncIterator[tuple[FastAPI, str]]:
    app = qbo_app()
    async with serve(app) as base_url:
        yield app, base_url


def _qbo_total(order: dict[str, Any]) -> Decimal:
    return sum((Decimal(str(line["Amount"])) for line in order["Line"]), Decimal(0))


async def test_quickbooks_purchase_order_takes_the_change(
    qbo: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore
) -> None:
    _, url = qbo
    connector = QuickBooksConnector(
        "qbo", qbo_config(url, default_expense_account="600394", unresolved_tracking="omit"), http, state
    )
    control = SandboxControl(http, url)

    with pytest.raises(RetriableError) as early:  # the change arrived before its order was booked
        await connector.handle(_change(), ctx("c-0"))
    assert early.value.code == "record.not_booked"

    order_id = await _book_order(connector, state)
    booked = await connector.handle(_change(), ctx("c-1"))
    assert (booked.operation, booked.erp_record_id) == (Operation.UPDATE, order_id)
    (stored,) = [r["record"] for r in await control.records("purchaseorder")]
    assert [line["Description"] for line in stored["Line"]] == [
        "Foundations (1 × 85000.00)",
        "Slabs on grade (1 × 42000.00)",
        "Change order CO-003: Retaining wall (1 × 9500.00)",
        "Change order CO-003: Slab scope reduction (1 × -2000.00)",
    ]
    assert [Decimal(str(line["Amount"])) for line in stored["Line"][2:]] == [Decimal("9500.00"), Decimal("-2000.00")]
    assert Decimal(str(stored["TotalAmt"])) == _qbo_total(stored) == Decimal("134500.00")
    assert stored["SyncToken"] == "1"

    # A new version of the same change replaces its lines; it is not applied twice.
    revised = _change(
        line_items=[{"line_number": 1, "description": "Additional footings", "amount": "9000.00"}],
        subtotal="9000.00",
        total="9000.00",
    )
    await connector.handle(revised, ctx("c-2", entry(booked)))
    (stored,) = [r["record"] for r in await control.records("purchaseorder")]
    assert Decimal(str(stored["TotalAmt"])) == Decimal("136000.00")
    assert [line["LineNum"] for line in stored["Line"]] == [1, 2, 3]

    # Voiding the change takes its lines off the order again.
    voided = await connector.handle(revised.model_copy(update={"action": Action.VOID}), ctx("c-3", entry(booked)))
    assert voided.operation is Operation.VOID
    (stored,) = [r["record"] for r in await control.records("purchaseorder")]
    assert Decimal(str(stored["TotalAmt"])) == Decimal("127000.00")
    assert len(stored["Line"]) == 2


@pytest.fixture
async def xero(shared_dir: Path) -> AsyncIterator[tuple[FastAPI, str]]:
    app = xero_app(spec_path=shared_dir / "specs" / "xero_accounting.yaml")
    async with serve(app) as base_url:
        yield app, base_url


async def test_xero_purchase_order_takes_the_change(
    xero: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore
) -> None:
    _, url = xero
    connector = XeroConnector(
        "xero", xero_config(url, default_expense_account="429", unresolved_tracking="omit"), http, state
    )
    control = SandboxControl(http, url)
    order_id = await _book_order(connector, state)
    (before,) = [r["record"] for r in await control.records("purchase_order")]
    kept_ids = [line["LineItemID"] for line in before["LineItems"]]

    booked = await connector.handle(_change(), ctx("c-1"))
    assert (booked.operation, booked.erp_record_id) == (Operation.UPDATE, order_id)
    (stored,) = [r["record"] for r in await control.records("purchase_order")]
    lines = stored["LineItems"]
    assert [line.get("LineItemID") for line in lines[:2]] == kept_ids  # the order's own lines untouched
    assert [line["Description"].split(":")[0] for line in lines[2:]] == ["Change order CO-003"] * 2
    assert [Decimal(str(line["LineAmount"])) for line in lines[2:]] == [Decimal("9500.00"), Decimal("-2000.00")]
    assert Decimal(str(stored["Total"])) == Decimal("134500.00")

    revised = _change(
        line_items=[{"line_number": 1, "description": "Additional footings", "amount": "9000.00"}],
        subtotal="9000.00",
        total="9000.00",
    )
    await connector.handle(revised, ctx("c-2", entry(booked)))
    (stored,) = [r["record"] for r in await control.records("purchase_order")]
    assert Decimal(str(stored["Total"])) == Decimal("136000.00")
    assert len(stored["LineItems"]) == 3

    await connector.handle(revised.model_copy(update={"action": Action.VOID}), ctx("c-3", entry(booked)))
    (stored,) = [r["record"] for r in await control.records("purchase_order")]
    assert Decimal(str(stored["Total"])) == Decimal("127000.00")
    assert [line["LineItemID"] for line in stored["LineItems"]] == kept_ids


async def test_netsuite_purchase_order_takes_the_change(
    shared_dir: Path, http: httpx.AsyncClient, state: StateStore
) -> None:
    app = netsuite_app(shared_dir / "specs" / "netsuite-oas.json", tba=TBA, vendors={"1234": "Hudson Concrete LLC"})
    async with serve(app) as url:
        connector = NetSuiteConnector(
            "ns", ns_config(url, default_expense_account=61, unresolved_tracking="omit"), http, state
        )
        order = _order()
        order = order.model_copy(update={"vendor": order.vendor.model_copy(update={"accounting_id": "1234"})})
        booked_order = await connector.handle(order, ctx("po-1"))
        assert booked_order.erp_record_id is not None
        await state.put_binding(
            "ns", order.canonical_id, erp_record_id=booked_order.erp_record_id, erp_version=None, content_hash="h"
        )
        control = SandboxControl(http, url)

        async def stored() -> dict[str, Any]:
            (record,) = [r["record"] for r in await control.records("purchaseOrder")]
            return dict(record)

        before = await stored()
        booked = await connector.handle(_change(), ctx("c-1"))
        assert (booked.operation, booked.erp_record_id) == (Operation.UPDATE, booked_order.erp_record_id)
        after = await stored()
        lines = after["expense"]["items"]
        assert [line["memo"] for line in lines[:2]] == [line["memo"] for line in before["expense"]["items"]]
        assert [line["memo"].split(":")[0] for line in lines[2:]] == ["Change order CO-003"] * 2
        assert sum((Decimal(str(line["amount"])) for line in lines), Decimal(0)) == Decimal("134500.00")

        change = _change()
        await connector.handle(change.model_copy(update={"action": Action.VOID}), ctx("c-2", entry(booked)))
        lines = (await stored())["expense"]["items"]
        assert sum((Decimal(str(line["amount"])) for line in lines), Decimal(0)) == Decimal("127000.00")


@pytest.mark.parametrize(
    ("erp", "object_type", "says"),
    [
        ("sap", "purchase_order_change", "no purchase order was booked to SAP"),
        ("sap", "budget", "has no budget entity"),
        ("netsuite", "budget", "specs/netsuite-oas.json has no budget record"),
        ("quickbooks", "budget", "QuickBooks budgets are GL budgets"),
        ("xero", "budget", "Xero budgets are read-only"),
    ],
)
async def test_objects_an_erp_does_not_take_are_skipped_with_the_precise_reason(
    erp: str, object_type: str, says: str, http: httpx.AsyncClient, state: StateStore
) -> None:
    from ledgerflow.connectors.base import Unsupported
    from ledgerflow.connectors.registry import connector_class, sandbox_module
    from ledgerflow.contracts import OBJECT_MODELS
    from ledgerflow.core.settings import ConnectionConfig
    from tests.connectors.contract import contract_budget

    record: Any = contract_budget() if object_type == "budget" else _change()
    assert record.object_type == object_type
    assert object_type in OBJECT_MODELS
    async with serve(sandbox_module(erp).create_app()) as url:
        config = sandbox_module(erp).sandbox_connection(ConnectionConfig(erp=erp), url)
        connector = connector_class(erp)(erp, config, http, state)
        with pytest.raises(Unsupported) as skipped:
            await connector.handle(record, ctx("u-1"))
    assert says in skipped.value.message
