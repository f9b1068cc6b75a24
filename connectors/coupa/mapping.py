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

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from ledgerflow.contracts import Bill, LineItem, Reference, Vendor
from ledgerflow.contracts.common import quantize

__all__ = [
    "DEFAULT_ACCOUNT_SEGMENTS",
    "UnresolvedReferenceError",
    "invoice_body",
    "invoice_lookup_params",
    "invoice_number",
    "supplier_body",
    "supplier_number",
    "supplier_ref",
]

DEFAULT_ACCOUNT_SEGMENTS: dict[str, str] = {"segment-1": "gl_account", "segment-2": "project", "segment-3": "cost_code"}
"""Default chart-of-accounts layout: Coupa account segment → canonical line reference."""


class UnresolvedReferenceError(ValueError):
    """The supplier or a line's GL account cannot be expressed in Coupa terms."""


def _money(amount: Decimal, currency: str) -> str:
    return format(quantize(amount, currency), "f")


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


def invoice_number(bill: Bill) -> str:
    """The Coupa ``invoice-number``: the vendor's bill number, else the source id (max 40 characters)."""
    return (bill.bill_number or bill.source_id)[:40]


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
        if value is not None:
            account[segment] = value
    if not any(key.startswith("segment-") for key in account):
        raise UnresolvedReferenceError(f"line {line.line_number} has no account segment (GL account) to book to")
    return account


def _line(
    line: LineItem, currency: str, header_project: Reference | None, options: Mapping[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "line-num": line.line_number,
        "description": (line.description or f"Line {line.line_number}")[:255],
        "account": _account(line, header_project, options),
    }
    if line.quantity is not None and line.unit_price is not None:
        out["type"] = "InvoiceQuantityLine"
        out["quantity"] = format(line.quantity, "f")
        out["price"] = format(line.unit_price, "f")
    else:
        out["type"] = "InvoiceAmountLine"
        out["price"] = _money(line.amount, currency)
    out["total"] = _money(line.amount, currency)
    return out


def invoice_body(bill: Bill, options: Mapping[str, Any]) -> dict[str, Any]:
    """Map a canonical :class:`~contracts.Bill` to a Coupa ``POST /api/invoices`` body.

    Header-level taxation (``line-level-taxation: false``): tax goes to ``tax-amount`` and shipping
    to ``shipping-amount``; a discount becomes a negative ``InvoiceAmountLine`` booked to
    ``options["discount_account"]`` (segment-1). ``options["chart_of_accounts"]`` names the
    ``account-type``; ``options["account_segments"]`` maps segments to canonical line references.

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
    if bill.tax_total:
        body["tax-amount"] = _money(bill.tax_total, bill.currency)
    if bill.shipping_total:
        body["shipping-amount"] = _money(bill.shipping_total, bill.currency)
    if bill.memo:
        body["comments"] = bill.memo
    lines = [_line(line, bill.currency, bill.project, options) for line in bill.line_items]
    if bill.discount_total:
        if not options.get("discount_account"):
            raise UnresolvedReferenceError("bill has a discount but the connection has no discount_account")
        discount = _money(-bill.discount_total, bill.currency)
        lines.append(
            {
                "type": "InvoiceAmountLine",
                "line-num": len(lines) + 1,
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
