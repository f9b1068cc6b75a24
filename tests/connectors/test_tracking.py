"""Tracking references without an ERP identifier are never dropped silently (NetSuite, SAP, Coupa)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from ledgerflow.connectors.base import UnresolvedReferenceError
from ledgerflow.connectors.coupa.mapping import invoice_body
from ledgerflow.connectors.netsuite.mapping import bill_body
from ledgerflow.connectors.sap.mapping import supplier_invoice_body
from ledgerflow.contracts import Bill, LineItem, Reference, VendorRef

UNRESOLVED = Reference(source_id="cc_310", name="Concrete")
"""A cost code the source knows only by its own id (INGENIOUS, neither accounting id)."""


def bill_with(**line: Any) -> Bill:
    item = LineItem(line_number=1, amount=Decimal("100.00"), gl_account=Reference(accounting_custom_id="6000"), **line)
    return Bill(
        canonical_id="ingenious:bill:t1",
        tenant="acme",
        source="ingenious",
        source_id="t1",
        source_event="vendor_invoice.approved",
        vendor=VendorRef(accounting_id="1001", accounting_custom_id="17300001", name="Big Box Store"),
        bill_number="T-1",
        bill_date=date(2026, 3, 2),
        currency="USD",
        line_items=[item],
        subtotal=Decimal("100.00"),
        total=Decimal("100.00"),
    )


def _netsuite(bill: Bill, options: dict[str, Any]) -> dict[str, Any]:
    return bill_body(bill, {"currency_ids": {"USD": "1"}, **options})


def _sap(bill: Bill, options: dict[str, Any]) -> dict[str, Any]:
    return supplier_invoice_body(bill, {"company_code": "1010", **options})


CASES: dict[str, tuple[Callable[[Bill, dict[str, Any]], dict[str, Any]], str]] = {
    "netsuite": (_netsuite, "class"),
    "sap": (_sap, "InternalOrder"),
    "coupa": (invoice_body, "segment-3"),
}


@pytest.mark.parametrize("erp", sorted(CASES))
def test_an_unresolved_cost_code_fails_naming_the_option(erp: str) -> None:
    build, _ = CASES[erp]
    with pytest.raises(UnresolvedReferenceError, match="unresolved_tracking: omit") as refused:
        build(bill_with(cost_code=UNRESOLVED), {})
    assert "Concrete" in str(refused.value)


@pytest.mark.parametrize("erp", sorted(CASES))
def test_omit_books_without_it_and_a_resolved_code_is_sent(erp: str) -> None:
    build, field = CASES[erp]
    omitted = build(bill_with(cost_code=UNRESOLVED), {"unresolved_tracking": "omit"})
    assert field not in str(omitted)
    sent = build(bill_with(cost_code=Reference(accounting_id="2", accounting_custom_id="2")), {})
    assert field in str(sent)
