"""Canonical records → Coupa Core API JSON bodies (pure functions).

Follows the Coupa Invoice API element tables (header: ``invoice-number`` string(40),
``invoice-date`` date only, ``supplier``, ``currency``, ``line-level-taxation``, ``account-type``,
``invoice-lines``; line: ``type``, ``line-num``, ``description``, ``price``, ``quantity``,
``account`` with chart-of-accounts ``segment-1..20``) and the assembled example in reference
``erp_apis.md`` §5.2. Coupa's JSON uses hyphenated keys and writes decimals as strings; so do
these bodies (``"150.00"``, never a float).

Supplier references: ``accounting_id`` → ``{"id"}`` (Coupa's internal id), else
``accounting_custom_id`` → ``{"number"}`` (the supplier number), else ``name`` → ``{"name"}``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Any

from ledgerflow.connectors.amounts import as_source_lines, document_amounts
from ledgerflow.connectors.base import UnresolvedReferenceError
from ledgerflow.connectors.tracking import check_tracking
from ledgerflow.connectors.verify import StoredDocument, StoredLine
from ledgerflow.contracts import Bill, LineItem, Reference, Vendor
from ledgerflow.contracts.common import quantize

__all__ = [
    "DEFAULT_ACCOUNT_SEGMENTS",
    "invoice_body",
    "invoice_lookup_params",
    "invoice_number",
    "stored_document",
    "supplier_body",
    "supplier_number",
    "supplier_ref",
]

DEFAULT_ACCOUNT_SEGMENTS: dict[str, str] = {"segment-1": "gl_account", "segment-2": "project", "segment-3": "cost_code"}
"""Default chart-of-accounts layout: Coupa account segment → canonical line reference."""


def _code(ref: Reference | None) -> str | None:
    if ref is None:
        return None
    return ref.accounting_custom_id or ref.accounting_id or None


def supplier_ref(ref: Reference) -> dict[str, str]:
    """The Coupa ``supplier`` object for a vendor reference (``id`` > ``number`` > ``name``).

    Raises:
        UnresolvedReferenceError: the reference carries none of them.

    """
    if ref.accounting_id:
        return {"id": ref.accounting_id}
    if ref.accounting_custom_id:
        return {"number": ref.accounting_custom_id}
    if ref.name:
        return {"name": ref.name}
    raise UnresolvedReferenceError(f"supplier {ref.source_id or '?'} has no Coupa id, number or name")


INVOICE_NUMBER_MAX = 40
"""Longest ``invoice-number`` Coupa stores (Invoice API element table: string(40))."""


def invoice_number(bill: Bill) -> str:
    """The Coupa ``invoice-number``: the vendor's bill number, else the source id (max 40 characters).

    A source id longer than 40 characters becomes its first 23 characters, ``-`` and 16 hex
    digits of its SHA-256 (stable, so the look-up before create finds it again).

    Raises:
        UnresolvedReferenceError: the vendor's bill number is longer than Coupa stores (it is
            the supplier's document number: never shortened).
    """
    if bill.bill_number:
        if len(bill.bill_number) > INVOICE_NUMBER_MAX:
            raise UnresolvedReferenceError(
                f"bill {bill.canonical_id}: invoice number {bill.bill_number!r} is longer than Coupa's "
                f"{INVOICE_NUMBER_MAX}-character invoice-number"
            )
        return bill.bill_number
    if len(bill.source_id) <= INVOICE_NUMBER_MAX:
        return bill.source_id
    digest = hashlib.sha256(bill.source_id.encode()).hexdigest()[:16]
    return f"{bill.source_id[: INVOICE_NUMBER_MAX - 17]}-{digest}"


def invoice_lookup_params(bill: Bill) -> dict[str, str]:
    """Query of the look-up-before-create: ``invoice-number`` and ``supplier[id|number|name]``.

    Raises:
        UnresolvedReferenceError: the supplier cannot be referenced.

    """
    params = {"invoice-number": invoice_number(bill)}
    for key, value in supplier_ref(bill.vendor).items():
        params[f"supplier[{key}]"] = value
    return params


def _account(line: LineItem, header_project: Reference | None, options: Mapping[str, Any]) -> dict[str, Any]:
    layout: Mapping[str, str] = options.get("account_segments", DEFAULT_ACCOUNT_SEGMENTS)
    account: dict[str, Any] = {}
    if options.get("chart_of_accounts"):
        account["account-type"] = {"name": str(options["chart_of_accounts"])}
    for segment, field in layout.items():
        ref = getattr(line, field, None)
        if ref is None and field == "project":
            ref = header_project
        value = _code(ref) if isinstance(ref, Reference) else None
        if value is None and field == "gl_account" and options.get("default_expense_account"):
            value = str(options["default_expense_account"])
        elif value is None and isinstance(ref, Reference):
            # Leaving a segment out books another account combination: refuse unless told to.
            check_tracking(ref, field, f"line {line.line_number}", "Coupa", options)
        if value is not None:
            account[segment] = value
    if not any(key.startswith("segment-") for key in account):
        raise UnresolvedReferenceError(
            f"line {line.line_number} has no GL account and the connection has no options.default_expense_account "
            "(the Coupa GL account segment that books lines without one)"
        )
    return account


def _line(
    line: LineItem, amount: Decimal, currency: str, header_project: Reference | None, options: Mapping[str, Any]
) -> dict[str, Any]:
    """One invoice line; ``amount`` is the line's amount at the currency's minor unit.

    Coupa computes a quantity line's total as quantity × price, so a line is sent as an
    ``InvoiceQuantityLine`` only when that product rounds to the source's amount; otherwise as an
    ``InvoiceAmountLine`` of the amount (the source's line amount is authoritative).
    """
    out: dict[str, Any] = {
        "line-num": line.line_number,
        "description": (line.description or f"Line {line.line_number}")[:255],
        "account": _account(line, header_project, options),
    }
    if (
        line.quantity is not None
        and line.unit_price is not None
        and line.quantity != 0
        and quantize(line.quantity * line.unit_price, currency) == amount
    ):
        out["type"] = "InvoiceQuantityLine"
        out["quantity"] = format(line.quantity, "f")
        out["price"] = format(line.unit_price, "f")
    else:
        out["type"] = "InvoiceAmountLine"
        out["price"] = format(amount, "f")
    out["total"] = format(amount, "f")
    return out


def invoice_body(bill: Bill, options: Mapping[str, Any]) -> dict[str, Any]:
    """Map a canonical :class:`~contracts.Bill` to a Coupa ``POST /api/invoices`` body.

    Header-level taxation (``line-level-taxation: false``): tax goes to ``tax-amount`` and shipping
    to ``shipping-amount``; a discount becomes a negative ``InvoiceAmountLine`` booked to
    ``options["discount_account"]`` (segment-1). Amounts are at the currency's minor unit and add
    up to the bill's total (:func:`~ledgerflow.connectors.amounts.document_amounts`). A line
    without a GL account is booked to ``options["default_expense_account"]`` (segment-1).
    ``options["chart_of_accounts"]`` names the ``account-type``; ``options["account_segments"]``
    maps segments to canonical line references.

    Raises:
        UnresolvedReferenceError: no supplier reference, a line without account segments, or a
            discount without ``discount_account``.

    """
    body: dict[str, Any] = {
        "invoice-number": invoice_number(bill),
        "invoice-date": bill.bill_date.isoformat(),
        "supplier": supplier_ref(bill.vendor),
        "currency": {"code": bill.currency},
        "line-level-taxation": False,
    }
    if options.get("chart_of_accounts"):
        body["account-type"] = {"name": str(options["chart_of_accounts"])}
    amounts = document_amounts(bill)
    if amounts.tax:
        body["tax-amount"] = format(amounts.tax, "f")
    if amounts.shipping:
        body["shipping-amount"] = format(amounts.shipping, "f")
    if bill.memo:
        body["comments"] = bill.memo
    lines = [
        _line(line, amount, bill.currency, bill.project, options)
        for line, amount in zip(bill.line_items, amounts.lines, strict=True)
    ]
    if amounts.discount:
        if not options.get("discount_account"):
            raise UnresolvedReferenceError(
                f"bill {bill.canonical_id} has a discount of {amounts.discount} but the connection has no "
                "options.discount_account"
            )
        discount = format(-amounts.discount, "f")
        lines.append(
            {
                "type": "InvoiceAmountLine",
                "line-num": max(line.line_number for line in bill.line_items) + 1,
                "description": "Discount",
                "price": discount,
                "total": discount,
                "account": {"segment-1": str(options["discount_account"])},
            }
        )
    body["invoice-lines"] = lines
    return body


def supplier_number(vendor: Vendor) -> str:
    """The Coupa supplier ``number``: the accounting id the source sent, else ``<source>-<source id>``."""
    return vendor.accounting_id or f"{vendor.source}-{vendor.source_id}"


def supplier_body(vendor: Vendor) -> dict[str, Any]:
    """Map a canonical :class:`~contracts.Vendor` to a Coupa ``POST /api/suppliers`` body.

    ``name`` (unique in Coupa), ``number``, ``status`` (active/inactive), ``tax-id``,
    ``primary-contact.email``.
    """
    body: dict[str, Any] = {
        "name": vendor.name[:100],
        "number": supplier_number(vendor),
        "status": "active" if vendor.active else "inactive",
    }
    if vendor.tax_id:
        body["tax-id"] = vendor.tax_id
    if vendor.email:
        body["primary-contact"] = {"email": vendor.email}
    return body


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else Decimal(0)


def stored_document(bill: Bill, invoice: Mapping[str, Any]) -> StoredDocument:
    """What Coupa holds for ``bill``, read back as ``invoice`` (``GET /api/invoices/:id``).

    Total ``gross-total`` (lines plus tax, shipping, handling and misc amounts); currency
    ``currency.code``; ``invoice-date`` is the document date (Coupa keeps no separate posting
    date); counterparty ``supplier.id``; tax ``tax-amount``, shipping ``shipping-amount``; the
    first ``len(line_items)`` invoice lines (by ``line-num``) are the source's lines, a line after
    them is the discount line :func:`invoice_body` added.
    """
    raw = invoice.get("invoice-lines")
    lines = sorted(
        (line for line in raw or [] if isinstance(line, Mapping)), key=lambda line: int(_dec(line.get("line-num")))
    )
    count = len(bill.line_items)
    currency = invoice.get("currency")
    supplier = invoice.get("supplier")
    invoice_date = invoice.get("invoice-date")
    try:
        document_date = date.fromisoformat(str(invoice_date)[:10]) if invoice_date else None
    except ValueError:
        document_date = None
    return StoredDocument(
        total=_dec(invoice.get("gross-total")) if invoice.get("gross-total") is not None else None,
        currency=str(currency.get("code")) if isinstance(currency, Mapping) and currency.get("code") else None,
        tax_total=_dec(invoice.get("tax-amount")),
        shipping_total=_dec(invoice.get("shipping-amount")),
        discount_total=-sum((_dec(line.get("total")) for line in lines[count:]), Decimal(0)),
        document_date=document_date,
        counterparty_id=str(supplier["id"]) if isinstance(supplier, Mapping) and supplier.get("id") else None,
        lines=tuple(
            StoredLine(amount, line.get("description"))
            for line, amount in zip(
                lines[:count], as_source_lines(bill, [_dec(x.get("total")) for x in lines[:count]]), strict=True
            )
        ),
    )
