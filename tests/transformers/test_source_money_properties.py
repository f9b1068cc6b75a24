"""Properties of the source mappers' money handling over generated, *consistent* documents:
nothing is rejected, nothing is changed — minor units convert exactly in 0-, 2- and 3-decimal
currencies, discounts stay on their lines, and a transaction that disagrees with its invoices by
one minor unit is refused rather than booked."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledgerflow.contracts import ContractError, Invoice, Payment, currency_precision
from tests.transformers.transformer_helpers import map_event, raw_event

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
CURRENCIES = st.sampled_from(["USD", "EUR", "JPY", "KWD", "BHD", "CLP"])


def _major(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-currency_precision(currency))


@SETTINGS
@given(
    currency=CURRENCIES,
    minors=st.lists(st.integers(min_value=1, max_value=10**9), min_size=1, max_size=5),
    off_by=st.sampled_from([0, 0, 1, -1]),
)
def test_mercoa_transaction_minor_units_convert_exactly_or_are_refused(
    currency: str, minors: list[int], off_by: int
) -> None:
    invoices = [
        {"id": f"in_{i}", "amount": str(_major(m, currency)), "currency": currency, "processedAt": "2024-05-01"}
        for i, m in enumerate(minors)
    ]
    trx = {"id": "trx_p", "status": "COMPLETED", "amount": sum(minors) + off_by, "currency": currency}
    trx |= {"vendor": {"id": "ent_v", "name": "V"}, "invoices": invoices}
    event = raw_event("mercoa", "transaction.completed", {"eventType": "transaction.completed", "transaction": trx})
    if off_by:
        with pytest.raises(ContractError, match="neither in minor units"):
            map_event(event)
        return
    (payment,) = map_event(event)
    assert isinstance(payment, Payment)
    assert payment.amount == _major(sum(minors), currency)
    assert sum((a.amount for a in payment.applied_to), Decimal(0)) == payment.amount


lines = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=50),  # quantity
        st.integers(min_value=1, max_value=10**6),  # unit price, minor units
        st.one_of(
            st.none(),
            st.tuples(st.just("amount"), st.integers(min_value=1, max_value=100)),
            st.tuples(st.just("percentage"), st.integers(min_value=1, max_value=10000)),
        ),
    ),
    min_size=1,
    max_size=5,
)


@SETTINGS
@given(currency=CURRENCIES, raw_lines=lines, vat_minor=st.integers(min_value=0, max_value=10**6))
def test_monite_line_discounts_stay_on_their_lines_and_totals_reconcile(
    currency: str, raw_lines: list[tuple[int, int, Any]], vat_minor: int
) -> None:
    items: list[dict[str, Any]] = []
    net_minor = 0
    for i, (qty, price, discount) in enumerate(raw_lines):
        gross = qty * price
        item: dict[str, Any] = {
            "quantity": qty,
            "product": {"id": f"p{i}", "name": f"P{i}", "price": {"value": price, "currency": currency}},
        }
        off = 0
        if discount is not None:
            kind, value = discount
            off = min(value, gross) if kind == "amount" else gross * value // 10000  # Monite's own figure
            if off == 0:
                off = 1
            item["discount"] = {"type": kind, "amount": off if kind == "amount" else value}
            item["total_before_vat"] = gross - off
        net_minor += gross - off
        items.append(item)
    receivable = {
        "id": "rec_p",
        "type": "invoice",
        "currency": currency,
        "status": "issued",
        "issue_date": "2024-05-10",
        "counterpart_id": "cp",
        "line_items": items,
        "total_vat_amount": vat_minor,
        "total_amount": net_minor + vat_minor,
    }
    payload = {"id": "evt", "action": "receivable.issued", "object_id": "rec_p", "entity_id": "e"}
    (invoice,) = map_event(raw_event("monite", "receivable.issued", payload, enrichment={"object": receivable}))
    assert isinstance(invoice, Invoice)
    assert invoice.total == _major(net_minor + vat_minor, currency)
    assert invoice.subtotal == _major(net_minor, currency)
    assert invoice.discount_total == 0  # line discounts are not a document discount
    assert len(invoice.line_items) == len(items)
    for line, item in zip(invoice.line_items, items, strict=True):
        assert line.quantity is not None
        assert line.unit_price is not None
        assert line.quantity * line.unit_price - (line.discount_amount or 0) == line.amount
        if "discount" not in item:
            assert line.discount_amount is None


@SETTINGS
@given(
    currency=CURRENCIES,
    net=st.integers(min_value=1, max_value=10**9),
    tax=st.integers(min_value=0, max_value=10**8),
    paid=st.integers(min_value=0, max_value=10**9),
    gross_reading=st.booleans(),
)
def test_accessplanit_minor_units_convert_exactly_in_either_amount_reading(
    currency: str, net: int, tax: int, paid: int, gross_reading: bool
) -> None:
    gross = net + tax
    paid = min(paid, gross)
    record = {
        "InvoiceID": 1,
        "IssuerID": 2,
        "Currency": currency,
        "Amount": gross if gross_reading else net,
        "Tax": tax,
        "AmountPaid": paid,
        "AmountOutstanding": gross - paid,
        "DateGenerated": "2024-05-14",
    }
    (invoice,) = map_event(raw_event("accessplanit", "invoices.post", record, object_hint="invoices"))
    assert isinstance(invoice, Invoice)
    if gross_reading and tax:  # Amount = gross is only distinguishable when there is tax
        assert invoice.subtotal == _major(net, currency)
    assert invoice.total == _major(gross, currency)
    assert invoice.amount_paid == _major(paid, currency)
