"""Property tests: whatever the document, NetSuite, SAP, Coupa and HTTP store the source's total, or fail precisely.

Hypothesis generates bills (and NetSuite AR invoices) with tax (on lines or only in the header),
shipping, discounts, credit lines, up to 12 lines, line amounts with more digits than the
currency has (unrounded quantity × unit price), and currencies with 0, 2 and 3 minor digits.
Each is booked through the connector into its in-process sandbox and read back: the ERP's total,
tax, shipping, discount and lines equal the source's to the minor unit, or the connector refused
it with a precise reason. Bounded: ``max_examples`` per ERP, ``deadline=None``, derandomized.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledgerflow.connectors.base import HandleContext, PermanentError, Unsupported
from ledgerflow.connectors.verify import compare
from ledgerflow.contracts import Bill, Invoice, LineItem, Reference, VendorRef
from ledgerflow.contracts.common import currency_precision
from tests.connectors.matrix import Matrix

CURRENCIES = ("USD", "EUR", "JPY", "KWD", "BHD", "GBP")
ERP_VENDORS = {
    "netsuite": VendorRef(accounting_id="1001", name="Big Box Store"),
    "sap": VendorRef(accounting_custom_id="17300001", name="Concrete GmbH"),
    "coupa": VendorRef(accounting_custom_id="MY-DB-ID-90909", name="Big Box Store"),
    "http": VendorRef(source_id="v1", name="Big Box Store"),
}
_counter = itertools.count(1)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """The figures of a document: lines (some credit, some unrounded), tax, shipping, discount."""
    currency = draw(st.sampled_from(CURRENCIES))
    digits = currency_precision(currency)
    minor = Decimal(1).scaleb(-digits)
    count = draw(st.integers(1, 12))
    lines: list[dict[str, Any]] = []
    for _ in range(count):
        kind = draw(st.sampled_from(("amount", "quantity", "unrounded", "credit")))
        if kind == "quantity":
            quantity = Decimal(draw(st.integers(1, 40)))
            price = Decimal(draw(st.integers(1, 10**6))) * minor
            lines.append({"quantity": quantity, "unit_price": price, "amount": quantity * price})
        elif kind == "unrounded":
            # Quantity × unit price with more digits than the currency has, commercially rounded
            # by the source (half up): the amount is the source's, the unit price keeps its digits.
            quantity = Decimal(draw(st.integers(1, 999))) / 100
            price = Decimal(draw(st.integers(1, 10**6))) / 1000
            amount = (quantity * price).quantize(minor, rounding=ROUND_HALF_UP)
            lines.append({"quantity": quantity, "unit_price": price, "amount": amount})
        elif kind == "credit":
            lines.append({"amount": -Decimal(draw(st.integers(1, 10**5))) * minor})
        else:
            lines.append({"amount": Decimal(draw(st.integers(0, 10**7))) * minor})
        if draw(st.booleans()):
            lines[-1]["tax_amount"] = Decimal(draw(st.integers(0, 10**5))) * minor
    subtotal = sum((line["amount"] for line in lines), Decimal(0))
    line_tax = sum((line.get("tax_amount", Decimal(0)) for line in lines), Decimal(0))
    header_tax = Decimal(draw(st.integers(0, 10**5))) * minor if draw(st.booleans()) else Decimal(0)
    shipping = Decimal(draw(st.integers(0, 10**5))) * minor if draw(st.booleans()) else Decimal(0)
    discount = Decimal(draw(st.integers(0, 10**5))) * minor if draw(st.booleans()) else Decimal(0)
    tax = line_tax + header_tax
    inclusive = draw(st.booleans()) and draw(st.booleans())
    return {
        "currency": currency,
        "lines": lines,
        "subtotal": subtotal,
        "tax_total": tax,
        "shipping_total": shipping,
        "discount_total": discount,
        "tax_inclusive": inclusive,
        "total": subtotal + shipping - discount + (0 if inclusive else tax),
    }


def _lines(figures: dict[str, Any]) -> list[LineItem]:
    return [
        LineItem(line_number=n, description=f"Line {n}", gl_account=Reference(accounting_id="600394"), **line)
        for n, line in enumerate(figures["lines"], start=1)
    ]


def make_bill(figures: dict[str, Any], erp: str) -> Bill:
    n = next(_counter)
    return Bill(
        canonical_id=f"mercoa:bill:prop-{erp}-{n}",
        tenant="acme",
        source="mercoa",
        source_id=f"prop-{erp}-{n}",
        source_event="invoice.created",
        vendor=ERP_VENDORS[erp],
        bill_number=f"P-{n}",
        bill_date=date(2026, 3, 2),
        due_date=date(2026, 4, 1),
        currency=figures["currency"],
        line_items=_lines(figures),
        subtotal=figures["subtotal"],
        tax_total=figures["tax_total"],
        shipping_total=figures["shipping_total"],
        discount_total=figures["discount_total"],
        tax_inclusive=figures["tax_inclusive"],
        total=figures["total"],
    )


def make_invoice(figures: dict[str, Any]) -> Invoice:
    n = next(_counter)
    return Invoice(
        canonical_id=f"monite:invoice:prop-{n}",
        tenant="acme",
        source="monite",
        source_id=f"prop-{n}",
        source_event="receivable.issued",
        customer=Reference(accounting_id="2001", name="Harbour Builders"),
        invoice_number=f"R-{n}",
        invoice_date=date(2026, 3, 2),
        due_date=date(2026, 4, 1),
        currency=figures["currency"],
        line_items=_lines(figures),
        subtotal=figures["subtotal"],
        tax_total=figures["tax_total"],
        shipping_total=figures["shipping_total"],
        discount_total=figures["discount_total"],
        tax_inclusive=figures["tax_inclusive"],
        total=figures["total"],
    )


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    new = asyncio.new_event_loop()
    yield new
    new.close()


@pytest.fixture(scope="module")
def matrix(loop: asyncio.AbstractEventLoop) -> Iterator[Matrix]:
    context = Matrix.open([], erps=["netsuite", "sap", "coupa", "http"])
    opened = loop.run_until_complete(context.__aenter__())
    yield opened
    loop.run_until_complete(context.__aexit__(None, None, None))


def _book(loop: asyncio.AbstractEventLoop, matrix: Matrix, erp: str, document: Bill | Invoice) -> None:
    """Book ``document``; the ERP's record must equal it, or the refusal must say why."""
    connector = matrix.connectors[erp]

    async def run() -> None:
        context = HandleContext(event_id=f"evt-{document.source_id}", idempotency_key=document.source_id, existing=None)
        refusal: str | None
        try:
            booked = await connector.handle(document, context)
        except (PermanentError, Unsupported) as exc:
            refusal = f"{exc.code}: {exc.message}"
        else:
            refusal = None
        if refusal is not None:
            assert len(refusal.split()) >= 5, f"imprecise refusal: {refusal}"
            return
        stored = booked.stored or await connector.read_back(document, booked)
        assert stored is not None, f"{erp} cannot read back"
        differences = compare(document, stored, counterparty_id=booked.counterparty_id)
        assert differences == [], [(d.field, d.expected, d.actual) for d in differences]

    loop.run_until_complete(run())


PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("erp", ["netsuite", "sap", "coupa", "http"])
@PROPERTY_SETTINGS
@given(figures=documents())
def test_bills_book_the_source_total_or_fail_precisely(
    erp: str, figures: dict[str, Any], matrix: Matrix, loop: asyncio.AbstractEventLoop
) -> None:
    _book(loop, matrix, erp, make_bill(figures, erp))


@PROPERTY_SETTINGS
@given(figures=documents())
def test_netsuite_invoices_book_the_source_total_or_fail_precisely(
    figures: dict[str, Any], matrix: Matrix, loop: asyncio.AbstractEventLoop
) -> None:
    _book(loop, matrix, "netsuite", make_invoice(figures))
