"""Read-back verification: the ERP must hold what the source document says.

After a connector wrote a document (bill, invoice, purchase order), the runtime compares the
ERP's record with the canonical document. A difference turns the result into ``failed`` with
code ``erp.mismatch`` and the differences in ``SyncResult.error.differences``; the metric
``ledgerflow_readback_total{erp,connection,object,result}`` counts every check (``matched``,
``mismatched``, ``unavailable`` when the connector cannot read back, ``disabled`` when the
connection's option ``verify_read_back`` is false). On by default.

API for connector authors (one hook per ERP; the comparison is shared):

1. Map the ERP's record (the write's answer, or a ``GET`` when the answer is thin) onto a
   :class:`StoredDocument`: the ERP's own figures, in the document currency, major units:

   * ``total`` — what the ERP says the document totals (QuickBooks ``TotalAmt``, Xero ``Total``,
     NetSuite ``total``/``userTotal``, SAP ``InvoiceGrossAmount``, Coupa ``total``);
   * ``tax_total``, ``shipping_total``, ``discount_total`` — the header figures the ERP holds,
     however the connector booked them (a tax detail, a tax line, an adjustment line…); None
     when the ERP record does not say (then it is not compared);
   * ``lines`` — the lines that stand for the source's lines, in the source's order
     (:class:`StoredLine`, amount net of tax), *without* the adjustment lines the connector
     added for header tax, shipping or discount; None when the ERP does not return lines;
   * ``currency``, ``txn_date`` (the posting/transaction date), ``document_date`` (the invoice date
     where the ERP has a second date), ``due_date``, ``counterparty_id`` — None = not returned.

2. Either attach it to the :class:`~ledgerflow.connectors.base.Booked` the connector returns
   (``Booked(..., stored=StoredDocument(...), counterparty_id="<ERP id sent>")``), or override
   :meth:`~ledgerflow.connectors.base.Connector.read_back` to fetch and map the record after the
   write. ``counterparty_id`` on ``Booked`` is the ERP id of the vendor/customer the connector
   sent; the stored one must equal it.

3. Nothing else: :func:`compare` (called by the runtime) decides what differs. A connector that
   neither attaches a :class:`StoredDocument` nor overrides ``read_back`` is counted
   ``unavailable`` and not failed.

What is compared (:func:`compare`), amounts after rounding both sides to the currency's minor
unit (Babel/CLDR): total, tax, shipping, discount, currency, the transaction date
(``posting_date`` or the document date of a bill; ``invoice_date``; ``order_date``), the
document date, the due date, the counterparty, the number of lines and each line's amount.
Payments: the amount (``StoredDocument.total``: what the ERP says was paid, all applications
together), currency, date (``txn_date``) and counterparty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from ledgerflow.contracts import CanonicalRecord, Difference, Document, Payment, quantize
from ledgerflow.contracts.errors import ErrorCode

__all__ = [
    "MISMATCH",
    "StoredDocument",
    "StoredLine",
    "compare",
    "describe",
    "expected_dates",
    "verifiable",
    "verification_enabled",
]

MISMATCH = ErrorCode.ERP_MISMATCH
"""Error code of a result whose ERP record differs from the canonical document."""


@dataclass(frozen=True, slots=True)
class StoredLine:
    """One ERP line standing for one source line: its net amount (document currency, major units)."""

    amount: Decimal
    description: str | None = None


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """What the ERP holds for a booked document, mapped by the ERP's connector (see the module docstring).

    Every amount is in the document currency, major units, ``Decimal``; a field left ``None`` is
    one the ERP's record does not carry and is not compared.
    """

    total: Decimal | None = None
    currency: str | None = None
    tax_total: Decimal | None = None
    shipping_total: Decimal | None = None
    discount_total: Decimal | None = None
    txn_date: date | None = None
    document_date: date | None = None
    due_date: date | None = None
    counterparty_id: str | None = None
    lines: tuple[StoredLine, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def verification_enabled(options: dict[str, Any]) -> bool:
    """Whether a connection's read-back verification is on (option ``verify_read_back``, default true)."""
    value = options.get("verify_read_back", True)
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off")
    return bool(value)


def expected_dates(document: Document) -> tuple[date | None, date | None, date | None]:
    """The (transaction date, document date, due date) a document is booked with.

    Bills: the posting date when the source gives one, else the bill date; the document date is
    the bill date. Invoices: the invoice date. Purchase orders: the order date. Others: the
    ``date``/``document_date`` attribute when present.
    """
    document_date = None
    for name in ("bill_date", "invoice_date", "order_date", "document_date", "date"):
        value = getattr(document, name, None)
        if isinstance(value, date):
            document_date = value
            break
    posting = getattr(document, "posting_date", None)
    txn_date = posting if isinstance(posting, date) else document_date
    due = getattr(document, "due_date", None)
    return txn_date, document_date, due if isinstance(due, date) else None


def _money(value: Decimal, currency: str) -> str:
    return format(quantize(value, currency), "f")


def compare(
    document: CanonicalRecord, stored: StoredDocument, *, counterparty_id: str | None = None
) -> list[Difference]:
    """The differences between a canonical document and what the ERP stored (empty = matches).

    Args:
        document: the canonical record booked (only :class:`~ledgerflow.contracts.Document`
            subclasses carry figures; anything else gives no differences).
        stored: the ERP's record mapped by the connector.
        counterparty_id: the ERP id of the vendor/customer the connector sent, if known.

    Returns:
        One :class:`~ledgerflow.contracts.Difference` per field that differs, with the expected
        (source) and actual (ERP) values as strings, amounts at the currency's minor unit.
    """
    if isinstance(document, Payment):
        return _compare_payment(document, stored, counterparty_id)
    if not isinstance(document, Document):
        return []
    currency = document.currency
    out: list[Difference] = []

    def amount(name: str, expected: Decimal, actual: Decimal | None) -> None:
        if actual is None:
            return
        if quantize(expected, currency) != quantize(actual, currency):
            out.append(Difference(field=name, expected=_money(expected, currency), actual=_money(actual, currency)))

    def same(name: str, expected: object, actual: object) -> None:
        if actual is None or expected is None:
            return
        if str(expected) != str(actual):
            out.append(Difference(field=name, expected=str(expected), actual=str(actual)))

    if stored.currency is not None and stored.currency.upper() != currency:
        out.append(Difference(field="currency", expected=currency, actual=stored.currency))
    amount("total", document.total, stored.total)
    amount("tax_total", document.tax_total, stored.tax_total)
    amount("shipping_total", document.shipping_total, stored.shipping_total)
    amount("discount_total", document.discount_total, stored.discount_total)
    txn_date, document_date, due_date = expected_dates(document)
    same("date", txn_date, stored.txn_date)
    same("document_date", document_date, stored.document_date)
    same("due_date", due_date, stored.due_date)
    same("counterparty", counterparty_id, stored.counterparty_id)
    if stored.lines is not None:
        if len(stored.lines) != len(document.line_items):
            out.append(
                Difference(field="line_count", expected=str(len(document.line_items)), actual=str(len(stored.lines)))
            )
        for line, kept in zip(document.line_items, stored.lines, strict=False):
            amount(f"line[{line.line_number}].amount", line.amount, kept.amount)
    return out


def verifiable(record: CanonicalRecord) -> bool:
    """Whether read-back verification applies to ``record``: documents (bills, invoices, orders) and payments."""
    return isinstance(record, Document | Payment)


def _compare_payment(payment: Payment, stored: StoredDocument, counterparty_id: str | None) -> list[Difference]:
    """A payment's differences: amount (``stored.total``), currency, date (``stored.txn_date``), counterparty."""
    out: list[Difference] = []
    currency = payment.currency
    if stored.currency is not None and stored.currency.upper() != currency:
        out.append(Difference(field="currency", expected=currency, actual=stored.currency))
    if stored.total is not None and quantize(stored.total, currency) != quantize(payment.amount, currency):
        out.append(
            Difference(field="amount", expected=_money(payment.amount, currency), actual=_money(stored.total, currency))
        )
    if stored.txn_date is not None and stored.txn_date != payment.payment_date:
        out.append(
            Difference(field="date", expected=payment.payment_date.isoformat(), actual=stored.txn_date.isoformat())
        )
    if counterparty_id is not None and stored.counterparty_id is not None and counterparty_id != stored.counterparty_id:
        out.append(Difference(field="counterparty", expected=counterparty_id, actual=stored.counterparty_id))
    return out


def describe(differences: list[Difference], erp: str) -> str:
    """A one-line message naming every difference: ``"<erp> holds … : total 100.00 ≠ 99.99; …"``."""
    parts = "; ".join(f"{d.field}: source {d.expected}, {erp} {d.actual}" for d in differences)
    return f"{erp} record differs from the source document: {parts}"
