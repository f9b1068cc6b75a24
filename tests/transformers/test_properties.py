"""Property tests: over generated payloads a mapper raises only ContractError / ValidationError /
SkipEvent, and every document it accepts reconciles in Decimal (lines == subtotal; subtotal +
tax + shipping − discount == total, at the currency's precision)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pydantic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledgerflow.contracts import Bill, CanonicalRecord, ContractError, Invoice, Payment, SalesOrder, quantize
from ledgerflow.transformers.base import SkipEvent
from ledgerflow.transformers.registry import ROUTERS
from tests.transformers.transformer_helpers import raw_event

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

amounts = st.one_of(
    st.decimals(min_value=-10_000, max_value=1_000_000, places=2, allow_nan=False, allow_infinity=False).map(str),
    st.integers(min_value=-1000, max_value=10**7),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.just(None),
    st.text(max_size=5),
)
currencies = st.sampled_from(["USD", "EUR", "GBP", "JPY", "KWD", "usd", "QQQ1", ""])
dates = st.one_of(st.dates().map(str), st.just("2024-05-01T00:00:00Z"), st.text(max_size=8), st.just(None))


def _check(records: Any) -> None:
    for record in records:
        assert isinstance(record, CanonicalRecord)
        if isinstance(record, Bill | Invoice | SalesOrder):
            cur = record.currency
            assert quantize(sum((li.amount for li in record.line_items), Decimal(0)), cur) == quantize(
                record.subtotal, cur
            )
            expected = record.subtotal + record.tax_total + record.shipping_total - record.discount_total
            assert quantize(expected, cur) == quantize(record.total, cur)
        if isinstance(record, Payment):
            assert record.amount > 0


def _run(source: str, event_type: str, payload: Any, **kw: Any) -> None:
    event = raw_event(source, event_type, payload, **kw)
    try:
        route = ROUTERS[source](event)
        _check(route.mapper(event))
    except (ContractError, pydantic.ValidationError, SkipEvent):
        pass


lines_ing = st.lists(
    st.fixed_dictionaries(
        {"qty": st.one_of(st.none(), st.integers(0, 100)), "unit_value": amounts, "gross_value": amounts},
        optional={"accounting_cost_code_id": st.text(max_size=4), "cost_code_id": st.text(max_size=4)},
    ),
    max_size=4,
)


@SETTINGS
@given(
    hint=st.sampled_from(
        ["vendor_invoice", "vendor_contract", "vendor_contract_change", "budget", "budget_change", "x"]
    ),
    data=st.fixed_dictionaries(
        {
            "id": st.one_of(st.text(max_size=6), st.none()),
            "currency": currencies,
            "date": dates,
            "line_items": lines_ing,
        },
        optional={
            "vendor_id": st.text(max_size=4),
            "contract_id": st.text(max_size=4),
            "tax_value": amounts,
            "total_value": amounts,
            "due_date": dates,
        },
    ),
)
def test_ingenious_mappers_fail_only_with_contract_errors(hint: str, data: dict[str, Any]) -> None:
    _run("ingenious", f"{hint}.sync", {"name": "n", "subject": "s", "data": data}, object_hint=hint)


@SETTINGS
@given(
    event_type=st.sampled_from(["invoice.created", "invoice.status.new", "transaction.completed", "invoice.deleted"]),
    invoice=st.fixed_dictionaries(
        {
            "id": st.text(min_size=1, max_size=6),
            "currency": currencies,
            "amount": amounts,
            "invoiceDate": dates,
            "vendor": st.fixed_dictionaries({"id": st.text(max_size=4), "name": st.text(max_size=4)}),
            "lineItems": st.lists(
                st.fixed_dictionaries({"amount": amounts, "quantity": amounts, "unitPrice": amounts}), max_size=3
            ),
        },
        optional={
            "taxAmount": amounts,
            "shippingAmount": amounts,
            "status": st.sampled_from(["NEW", "new", "PAID", "BOGUS"]),
        },
    ),
)
def test_mercoa_mappers_fail_only_with_contract_errors(event_type: str, invoice: dict[str, Any]) -> None:
    if event_type.startswith("transaction."):
        payload = {
            "eventType": event_type,
            "transaction": {"id": "trx_1", "status": "COMPLETED", "invoices": [invoice]},
        }
    else:
        payload = {"eventType": event_type, "invoice": invoice}
    _run("mercoa", event_type, payload)


minor = st.one_of(st.integers(-100, 10**8), st.just(None), st.floats(allow_nan=False, allow_infinity=False, width=32))


@SETTINGS
@given(
    payable=st.fixed_dictionaries(
        {
            "id": st.text(min_size=1, max_size=4),
            "currency": currencies,
            "issued_at": dates,
            "status": st.sampled_from(["waiting_to_be_paid", "paid", "draft", "nope"]),
            "counterpart_id": st.text(max_size=4),
        },
        optional={"subtotal": minor, "tax_amount": minor, "total_amount": minor},
    ),
    items=st.lists(st.fixed_dictionaries({"quantity": minor, "unit_price": minor, "subtotal": minor}), max_size=3),
)
def test_monite_payable_fails_only_with_contract_errors(payable: dict[str, Any], items: list[dict[str, Any]]) -> None:
    _run(
        "monite", "payable.updated", {"action": "payable.updated"}, enrichment={"object": payable, "line_items": items}
    )


@SETTINGS
@given(
    resource=st.sampled_from(["SalesInvoice", "SaleOrder", "CashSale", "CashReceipt"]),
    record=st.fixed_dictionaries(
        {
            "api_code": st.text(max_size=6),
            "Company_Key": st.text(max_size=4),
            "Currency": currencies,
            "Date": dates,
            "DocumentTotal": amounts,
            "LineItems": st.lists(
                st.fixed_dictionaries({"LineTotal": amounts, "QtyUnits": amounts, "PriceUnits": amounts}), max_size=3
            ),
        },
        optional={
            "SalesTax": amounts,
            "Shipping": amounts,
            "Discount": amounts,
            "Balance": amounts,
            "CashPayment": amounts,
        },
    ),
)
def test_accountingsuite_mappers_fail_only_with_contract_errors(resource: str, record: dict[str, Any]) -> None:
    _run("accountingsuite", f"{resource}.create", {**record, "resource": resource, "action": "create"})


@SETTINGS
@given(
    resource=st.sampled_from(["invoices", "transactions"]),
    method=st.sampled_from(["POST", "PUT", "PATCH", "DELETE", "GET"]),
    record=st.fixed_dictionaries(
        {
            "InvoiceID": st.integers(1, 10**6),
            "TransactionID": st.integers(1, 10**6),
            "Amount": minor,
            "Currency": currencies,
        },
        optional={
            "Tax": minor,
            "DateGenerated": dates,
            "TransactionDate": dates,
            "InvoiceItems": st.lists(st.fixed_dictionaries({"InvoiceItemAmount": minor}), max_size=3),
        },
    ),
)
def test_accessplanit_mappers_fail_only_with_contract_errors(
    resource: str, method: str, record: dict[str, Any]
) -> None:
    _run("accessplanit", f"{resource}.{method.lower()}", record, object_hint=resource, method=method)


def test_accepted_documents_are_generated_at_all() -> None:
    """Guard against a vacuous property: a well-formed payload is accepted and reconciles."""
    record = {
        "api_code": "a1",
        "Company_Key": "c1",
        "Currency": "USD",
        "Date": "2024-01-02",
        "DocumentTotal": 12.5,
        "SalesTax": 2.5,
        "LineItems": [{"LineTotal": 10, "QtyUnits": 2, "PriceUnits": 5}],
    }
    event = raw_event("accountingsuite", "SalesInvoice.create", record)
    records = ROUTERS["accountingsuite"](event).mapper(event)
    _check(records)
    assert isinstance(records[0], Invoice)
    assert str(records[0].total) == "12.5"
