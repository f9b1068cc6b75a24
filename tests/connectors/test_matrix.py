"""The matrix: every golden source record through every connector that takes it, against the sandboxes.

For each ERP, every golden record (all sources × objects, mapped through the transformers)
either reconciles — the ERP's stored record equals the canonical document: dates, currency,
counterparty, lines, tax, shipping, discount, total — or gets a precise ``skipped``/``failed``
(or ``pending``) reason; never a booking that differs from the source (see
:mod:`tests.connectors.matrix`). Then read-back verification is shown to notice a record the
ERP changed (the sandboxes' ``PATCH /_sandbox/records`` knob).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from ledgerflow.connectors.base import Booked, HandleContext, PermanentError
from ledgerflow.connectors.verify import compare
from ledgerflow.contracts import (
    Bill,
    CanonicalRecord,
    LineItem,
    Operation,
    PurchaseOrderChange,
    Reference,
    VendorRef,
)
from tests.connectors.matrix import ERPS, Matrix, _unique, golden_records


@pytest.fixture(scope="module")
def cases() -> list[tuple[str, CanonicalRecord]]:
    found = _unique(golden_records())
    assert len({case for case, _ in found}) >= 20, "golden inputs missing"
    return found


@pytest.mark.parametrize("erp", ERPS)
async def test_every_golden_record_reconciles_or_fails_precisely(
    erp: str, cases: list[tuple[str, CanonicalRecord]]
) -> None:
    async with Matrix.open([r for _, r in cases], erps=[erp]) as matrix:
        outcomes = await matrix.run(cases)
    wrong = [f"{o.case} {o.object_type}: {o.detail}" for o in outcomes if o.verdict == "wrong"]
    assert not wrong, "\n".join(wrong)
    booked = [o for o in outcomes if o.verdict == "reconciled"]
    assert booked, f"nothing booked in {erp}: the matrix would prove nothing"


@pytest.fixture
async def one_bill_matrix(cases: list[tuple[str, CanonicalRecord]]) -> AsyncIterator[tuple[Matrix, Bill]]:
    bill = next(r for case, r in cases if case == "mercoa/invoice" and isinstance(r, Bill))
    async with Matrix.open([bill], erps=["netsuite", "sap", "coupa", "http"]) as matrix:
        yield matrix, bill


ALTER: dict[str, tuple[str, Any]] = {
    "netsuite": ("vendorBill", [{"op": "replace", "path": "/total", "value": 99}]),
    "sap": ("supplier_invoice", {"InvoiceGrossAmount": "99.00"}),
    "coupa": ("invoice", {"gross-total": "99.00"}),
    "http": ("bill", {"body": {"data": {"total": "99.00"}}}),
}


@pytest.mark.parametrize("erp", sorted(ALTER))
async def test_read_back_notices_what_the_erp_changed(erp: str, one_bill_matrix: tuple[Matrix, Bill]) -> None:
    matrix, bill = one_bill_matrix
    connector = matrix.connectors[erp]
    booked = await connector.handle(bill, HandleContext(event_id="evt-alter", idempotency_key="alter-1", existing=None))
    assert booked.erp_record_id
    stored = booked.stored or await connector.read_back(bill, booked)
    assert stored is not None
    assert compare(bill, stored, counterparty_id=booked.counterparty_id) == []
    kind, patch = ALTER[erp]
    matrix.apps[erp].state.sandbox.alter(kind, booked.erp_record_id, patch)
    changed = await connector.read_back(bill, booked)
    assert changed is not None
    differences = compare(bill, changed, counterparty_id=booked.counterparty_id)
    assert [(d.field, d.expected, d.actual) for d in differences] == [("total", "100.00", "99.00")]


@pytest.mark.parametrize("erp", ["sap", "coupa"])
async def test_another_document_with_the_same_number_is_not_taken_for_a_redelivery(
    erp: str, one_bill_matrix: tuple[Matrix, Bill]
) -> None:
    """SAP and Coupa find earlier bookings by invoice number and supplier (no idempotency key).

    A different document under the same number must not be reported as booked (it would point
    at the other document's record): it fails as a duplicate, naming both amounts.
    """
    matrix, bill = one_bill_matrix
    connector = matrix.connectors[erp]
    first = await connector.handle(bill, HandleContext(event_id="evt-d1", idempotency_key="dup-1", existing=None))
    again = await connector.handle(bill, HandleContext(event_id="evt-d1", idempotency_key="dup-1", existing=None))
    assert again.erp_record_id == first.erp_record_id  # a redelivery finds its own booking
    line = bill.line_items[0].model_copy(update={"amount": Decimal(90), "unit_price": Decimal(90)})
    other = bill.model_copy(
        update={
            "canonical_id": bill.canonical_id + "-other",
            "source_id": bill.source_id + "-other",
            "line_items": [line],
            "subtotal": Decimal(90),
            "total": Decimal(90),
        }
    )
    with pytest.raises(PermanentError) as refused:
        await connector.handle(other, HandleContext(event_id="evt-d2", idempotency_key="dup-2", existing=None))
    assert refused.value.code == "erp.duplicate_document"


async def test_netsuite_does_not_compare_a_change_order_with_the_order_it_amends(
    cases: list[tuple[str, CanonicalRecord]],
) -> None:
    change = next(r for _, r in cases if isinstance(r, PurchaseOrderChange))
    async with Matrix.open([change], erps=["netsuite"]) as matrix:
        booked = Booked(Operation.UPDATE, "42")
        assert await matrix.connectors["netsuite"].read_back(change, booked) is None


@pytest.mark.parametrize(("tax", "booked"), [("19.00", True), ("18.99", False)])
async def test_sap_calculated_tax_books_only_when_it_balances(tax: str, booked: bool) -> None:
    """With ``tax_calculation: sap`` SAP computes the tax from the tax codes; a source whose tax
    differs is refused by SAP's balance check (a precise failure), never booked with SAP's figure.
    """
    line = LineItem(line_number=1, amount=Decimal("100.00"), gl_account=Reference(accounting_custom_id="61008000"))
    bill = Bill(
        canonical_id=f"acme:monite:bill:calc-{tax}",
        tenant="acme",
        source="monite",
        source_id=f"calc-{tax}",
        source_event="payable.approved",
        vendor=VendorRef(accounting_custom_id="17300001", name="Concrete GmbH"),
        bill_number=f"C-{tax}",
        bill_date=date(2026, 3, 2),
        currency="EUR",
        line_items=[line],
        subtotal=Decimal("100.00"),
        tax_total=Decimal(tax),
        total=Decimal("100.00") + Decimal(tax),
    )
    async with Matrix.open([bill], erps=["sap"]) as matrix:
        connector = matrix.connectors["sap"]
        connector.config.options["tax_calculation"] = "sap"
        context = HandleContext(event_id=f"evt-{tax}", idempotency_key=f"calc-{tax}", existing=None)
        if not booked:
            with pytest.raises(PermanentError) as refused:
                await connector.handle(bill, context)
            assert "Balance" in refused.value.message
            return
        done = await connector.handle(bill, context)
        stored = await connector.read_back(bill, done)
        assert stored is not None
        assert compare(bill, stored, counterparty_id=done.counterparty_id) == []
