"""Canonical documents → Xero Accounting API request bodies, and Xero records → what they hold.

Pure functions: no I/O. The connector resolves the ``ContactID`` and passes it in; the bodies are
the ``Invoice`` / ``PurchaseOrder`` / ``LineItem`` schemas of ``xero_accounting.yaml`` and
developer.xero.com "Invoices" (``shared/reference/erp_apis.md`` §2). Writes carry ``unitdp=4``
(:data:`UNITDP`) so unit amounts keep four decimals.

Money (the source's amounts are authoritative, ``ledgerflow.contracts.lines``):

=====================  ==============================================================================
canonical              Xero
=====================  ==============================================================================
tax treatment          ``LineAmountTypes`` from the document: ``Inclusive`` when its line amounts
                       include tax, ``Exclusive`` when it carries tax, else ``NoTax``
line                   ``Description``, ``Quantity``, ``UnitAmount`` (≤ 4 decimals), ``LineAmount`` =
                       the source amount, ``AccountCode``/``AccountID``, ``TaxType`` (the line's tax
                       rate as its Xero code, else option ``default_tax_type``; untaxed lines
                       option ``no_tax_type``, default ``NONE``), ``TaxAmount``.
                       Xero recomputes ``Quantity × UnitAmount`` (less ``DiscountAmount``) rounded
                       half-up to the cent; when that is not the source amount (a unit price with
                       more than four decimals, a truncating source, a discounted bill line) the
                       line is sent as quantity 1 at its amount, with ``quantity × unit price`` kept
                       in the ``Description``
tracking               ``Tracking`` ``{Name, Option}`` (``LineItemTracking``: category name and option
                       name, developer.xero.com "Invoices") for the line's cost code, project and
                       business unit, categories from option ``tracking_categories``; the option is
                       the reference's code, else its ``accounting_id`` (a mapping's value: the option
                       name, or a ``TrackingOptionID`` the connector resolves to its name through the
                       reference cache), else its name; an untrackable one fails (option
                       ``unresolved_tracking: omit`` books without it)
line discount          ``DiscountAmount`` on sales invoices (ACCREC); Xero supports no discount on
                       bills, so a discounted bill line is sent at its net amount (see above)
header tax             tax no line carries, or every tax when a taxed line has no ``TaxType``: a
                       line on option ``tax_account`` (``TaxType`` ``NONE``); else ``failed``
shipping / discount    a line on option ``shipping_account`` / a negative line on option
                       ``discount_account``; else ``failed``
=====================  ==============================================================================

Adjustment lines follow the source's lines with the ``Description`` ``Tax``, ``Shipping`` or
``Discount`` (:data:`ADJUSTMENTS`), which :func:`stored_document` reads back. Xero keeps amounts to
two decimals: an amount of a three-decimal currency that is not a whole cent fails with the
reason, as does a negative total (a credit note, ``ACCPAYCREDIT``/``ACCRECCREDIT``, which this
connector does not book).

Dates: ``Date`` is the bill's posting date when the source gives one, else the bill date;
invoices their invoice date; ``DueDate`` as the source says.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from ledgerflow.connectors.base import PermanentError
from ledgerflow.connectors.verify import StoredDocument, StoredLine
from ledgerflow.contracts import (
    Bill,
    Document,
    Invoice,
    LineItem,
    PurchaseOrder,
    PurchaseOrderChange,
    Reference,
    erp_identifiers,
)
from ledgerflow.contracts.errors import ErrorCode

__all__ = [
    "ADJUSTMENTS",
    "UNITDP",
    "account_field",
    "changed_order_lines",
    "check_amounts",
    "invoice_body",
    "line_amount_types",
    "purchase_order_body",
    "stored_document",
    "stored_payments",
    "tracking_option",
    "tracking_option_ids",
]

CENT = Decimal("0.01")
UNITDP = 4
"""Decimals of ``UnitAmount`` Xero keeps when a write carries ``unitdp=4``."""

ADJUSTMENTS: dict[str, str] = {"Tax": "tax", "Shipping": "shipping", "Discount": "discount"}
"""``Description`` of an adjustment line → the header figure it books."""

NO_TAX = "NONE"
"""Xero's ``TaxType`` for a line without tax."""


def _what(document: Document) -> str:
    return f"{document.object_type} {document.canonical_id}"


def _fail(code: ErrorCode, message: str) -> PermanentError:
    return PermanentError(code, message)


def _option(options: Mapping[str, Any], name: str) -> str | None:
    value = options.get(name)
    return str(value) if value not in (None, "") else None


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def account_field(code: str) -> tuple[str, str]:
    """``("AccountID", id)`` for a UUID, else ``("AccountCode", code)``."""
    return ("AccountID", code) if _is_uuid(code) else ("AccountCode", code)


def check_amounts(document: Document) -> None:
    """Refuse a document Xero cannot hold exactly.

    Raises:
        PermanentError: ``erp.unsupported_amount`` for an amount that is not a whole cent or a negative total.
    """
    what = _what(document)
    figures: list[tuple[str, Decimal]] = []
    for line in document.line_items:
        figures.append((f"line {line.line_number} amount", line.amount))
        for name in ("tax_amount", "discount_amount"):
            value = getattr(line, name)
            if value is not None:
                figures.append((f"line {line.line_number} {name.replace('_', ' ')}", value))
    figures += [
        ("tax total", document.tax_total),
        ("shipping total", document.shipping_total),
        ("discount total", document.discount_total),
        ("total", document.total),
    ]
    for name, value in figures:
        if value != value.quantize(CENT):
            raise _fail(
                ErrorCode.ERP_UNSUPPORTED_AMOUNT,
                f"{what}: {name} {value} {document.currency} is not a whole cent; Xero keeps amounts to two "
                "decimals, so it cannot be booked exactly",
            )
    if document.total < 0:
        raise _fail(
            ErrorCode.ERP_UNSUPPORTED_AMOUNT,
            f"{what}: the total {document.total} {document.currency} is negative; in Xero that is a credit note "
            "(ACCPAYCREDIT/ACCRECCREDIT), which this connector does not book",
        )


def line_amount_types(document: Document) -> Literal["Inclusive", "Exclusive", "NoTax"]:
    """Xero's ``LineAmountTypes`` for ``document``: Inclusive, Exclusive or NoTax (see the module docstring)."""
    if document.tax_inclusive:
        return "Inclusive"
    if document.tax_total != 0 or any(line.tax_amount for line in document.line_items):
        return "Exclusive"
    return "NoTax"


def _tax_type(line: LineItem, options: Mapping[str, Any]) -> str | None:
    erp_id, code, _ = erp_identifiers(line.tax_rate)
    return code or erp_id or _option(options, "default_tax_type")


def _tax_on_lines(document: Document, options: Mapping[str, Any]) -> bool:
    """Whether every taxed line has a ``TaxType`` (so tax is booked per line); else tax goes on a tax line.

    Raises:
        PermanentError: ``config.missing`` when neither is possible.
    """
    taxed = [line for line in document.line_items if line.tax_amount]
    missing = [line for line in taxed if _tax_type(line, options) is None]
    if not missing:
        return True
    line = missing[0]
    if document.tax_inclusive:
        raise _fail(
            ErrorCode.CONFIG_MISSING,
            f"{_what(document)}: line {line.line_number} includes tax {line.tax_amount} but has no Xero TaxType; "
            "give the line a tax rate (its Xero TaxType) or set the connection option default_tax_type",
        )
    if _option(options, "tax_account") is None:
        raise _fail(
            ErrorCode.CONFIG_MISSING,
            f"{_what(document)}: line {line.line_number} carries tax {line.tax_amount} {document.currency} but has "
            "no Xero TaxType; give the line a tax rate (its Xero TaxType), set the connection option "
            "default_tax_type, or set tax_account to book the tax as a line",
        )
    return False


def _decimals(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _source_line(
    line: LineItem,
    document: Document,
    code: str,
    *,
    taxed_lines: bool,
    sales: bool,
    options: Mapping[str, Any],
    option_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"Description": line.description or f"Line {line.line_number}"}
    discount = line.discount_amount or Decimal(0)
    priced = False
    if line.quantity is not None and line.unit_price is not None and _decimals(line.unit_price) <= UNITDP:
        if discount and not sales:
            priced = False
        else:
            exact = line.quantity * line.unit_price - discount
            priced = exact.quantize(CENT, rounding=ROUND_HALF_UP) == line.amount
    if priced:
        entry["Quantity"] = line.quantity
        entry["UnitAmount"] = line.unit_price
        if discount:
            entry["DiscountAmount"] = discount
    else:
        entry["Quantity"] = Decimal(1)
        entry["UnitAmount"] = line.amount
        if line.quantity is not None and line.unit_price is not None:
            note = f"{format(line.quantity, 'f')} × {format(line.unit_price, 'f')}"
            if discount:
                note += f" less discount {format(discount, 'f')}"
            entry["Description"] = f"{entry['Description']} ({note})"
    entry["Description"] = entry["Description"][:4000]
    entry["LineAmount"] = line.amount
    if line_amount_types(document) != "NoTax":
        if taxed_lines:
            entry["TaxType"] = _tax_type(line, options) or _no_tax(options)
            entry["TaxAmount"] = line.tax_amount or Decimal(0)
        else:
            entry["TaxType"] = _no_tax(options)
            entry["TaxAmount"] = Decimal(0)
    field, value = account_field(code)
    entry[field] = value
    tracking = _tracking(line, f"{_what(document)} line {line.line_number}", options, option_names)
    if tracking:
        entry["Tracking"] = tracking
    _, item_code, _ = erp_identifiers(line.item)
    if sales and item_code:
        entry["ItemCode"] = item_code
    return entry


def _no_tax(options: Mapping[str, Any]) -> str:
    """The ``TaxType`` of an untaxed line: option ``no_tax_type``, else ``NONE``."""
    return _option(options, "no_tax_type") or NO_TAX


TRACKED = ("cost_code", "project", "business_unit")
"""Line references booked as Xero tracking (``LineItem.Tracking``), each in the category the option names."""


def tracking_option(ref: Reference, option_names: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The Xero tracking option name a line reference books as, and a TrackingOptionID left unresolved.

    In order: the reference's ``accounting_custom_id`` (its code), its ``accounting_id`` (what a
    mapping sets: the option's name, or its ``TrackingOptionID``, a UUID, which ``option_names``
    (TrackingOptionID → option name, from the reference cache) turns into the name), its name.
    Returns ``(None, option_id)`` when the ``accounting_id`` is a TrackingOptionID not in
    ``option_names`` (Xero's ``LineItemTracking`` is booked by category and option *name*).
    """
    if ref.accounting_custom_id:
        return ref.accounting_custom_id, None
    if ref.accounting_id:
        if not _is_uuid(ref.accounting_id):
            return ref.accounting_id, None
        name = option_names.get(ref.accounting_id.lower()) or option_names.get(ref.accounting_id)
        return (name, None) if name else (None, ref.accounting_id)
    return ref.name or None, None


def _tracking(
    line: LineItem, where: str, options: Mapping[str, Any], option_names: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
    """The line's ``Tracking``: ``{"Name": <category>, "Option": <option>}`` per tracked reference.

    The category of each canonical field comes from the option ``tracking_categories`` (e.g.
    ``{cost_code: "Cost Code", project: "Project"}``); the option is :func:`tracking_option`
    (code, else mapped ``accounting_id``, a TrackingOptionID resolved through ``option_names``,
    else name). A reference that cannot be expressed fails the document (never dropped silently)
    unless the option ``unresolved_tracking`` is ``omit``.

    Raises:
        PermanentError: ``reference.unresolved`` naming the reference and what to configure.
    """
    categories = options.get("tracking_categories") or {}
    out: list[dict[str, str]] = []
    for field in TRACKED:
        ref = getattr(line, field)
        if ref is None:
            continue
        category = categories.get(field) if isinstance(categories, Mapping) else None
        option, unknown_id = tracking_option(ref, option_names or {})
        if category and option:
            out.append({"Name": str(category), "Option": option[:100]})
            continue
        if options.get("unresolved_tracking") == "omit":
            continue
        label = field.replace("_", " ")
        if not category:
            why = f"set the connection option tracking_categories.{field} (the Xero tracking category for it)"
        elif unknown_id:
            why = (
                f"its TrackingOptionID {unknown_id} is not in the connection's reference cache, so its option name "
                "is unknown (run `ledgerflow sync-reference`, or map it to the option's name)"
            )
        else:
            why = "the source sent no code or name for it (map it in the source)"
        raise _fail(
            ErrorCode.REFERENCE_UNRESOLVED,
            f"{where}: {label} {ref.name or ref.source_id or '?'!r} cannot be booked as Xero tracking: {why}, or "
            "set unresolved_tracking: omit to book without it",
        )
    if len(out) > 2:
        raise _fail(
            ErrorCode.REFERENCE_UNRESOLVED,
            f"{where}: Xero takes at most two tracking categories per line, the line has {len(out)}",
        )
    return out


def tracking_option_ids(document: Document) -> set[str]:
    """The TrackingOptionIDs (UUID ``accounting_id``) of ``document``'s tracked line references, to resolve."""
    return {
        ref.accounting_id
        for line in document.line_items
        for field in TRACKED
        if (ref := getattr(line, field)) is not None
        and not ref.accounting_custom_id
        and ref.accounting_id
        and _is_uuid(ref.accounting_id)
    }


def _adjustment(amount: Decimal, label: str, code: str, taxed: bool, options: Mapping[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"Description": label, "Quantity": Decimal(1), "UnitAmount": amount, "LineAmount": amount}
    if taxed:
        entry["TaxType"] = _no_tax(options)
        entry["TaxAmount"] = Decimal(0)
    field, value = account_field(code)
    entry[field] = value
    return entry


def _lines(
    document: Document,
    accounts: list[str],
    options: Mapping[str, Any],
    *,
    sales: bool,
    option_names: Mapping[str, str] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """The line items and ``LineAmountTypes`` of a document.

    Raises:
        PermanentError: ``config.missing`` naming the option to set.
    """
    amount_types = line_amount_types(document)
    on_lines = _tax_on_lines(document, options) if amount_types != "NoTax" else True
    if not on_lines:
        amount_types = "NoTax"  # every tax goes on the tax line
    if document.tax_inclusive and document.header_tax != 0:
        raise _fail(
            ErrorCode.ERP_UNSUPPORTED_AMOUNT,
            f"{_what(document)}: a tax-inclusive document whose tax ({document.tax_total}) is not all carried by "
            "its lines cannot be booked as Xero Inclusive line amounts",
        )
    taxed = amount_types != "NoTax"
    lines = []
    for line, code in zip(document.line_items, accounts, strict=True):
        entry = _source_line(
            line, document, code, taxed_lines=on_lines, sales=sales, options=options, option_names=option_names
        )
        if not taxed:
            entry.pop("TaxType", None)
            entry.pop("TaxAmount", None)
        lines.append(entry)
    header_tax = document.header_tax if on_lines else document.tax_total
    for amount, label, option in (
        (header_tax if not document.tax_inclusive else Decimal(0), "Tax", "tax_account"),
        (document.shipping_total, "Shipping", "shipping_account"),
        (-document.discount_total, "Discount", "discount_account"),
    ):
        if amount:
            account = _option(options, option)
            if account is None:
                raise _fail(
                    ErrorCode.CONFIG_MISSING,
                    f"{_what(document)}: {label.lower()} of {abs(amount)} {document.currency} needs the connection "
                    f"option {option} (the Xero account code it is booked to)",
                )
            lines.append(_adjustment(amount, label, account, taxed, options))
    return lines, amount_types


_STATUS = {"draft": "DRAFT", "submitted": "SUBMITTED"}


def invoice_body(
    document: Bill | Invoice,
    *,
    contact_id: str,
    accounts: list[str],
    options: Mapping[str, Any],
    option_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``PUT /Invoices`` element for a bill (``ACCPAY``) or a sales invoice (``ACCREC``).

    Args:
        document: the canonical bill or invoice.
        contact_id: the Xero ``ContactID`` of the vendor or customer.
        accounts: the account code (or AccountID) of each line, in line order.
        options: ``default_tax_type``, ``tax_account``, ``shipping_account``, ``discount_account``.
        option_names: TrackingOptionID → option name (the reference cache) for mapped tracking ids.

    Raises:
        PermanentError: ``erp.unsupported_amount`` or ``config.missing`` with what to configure.
    """
    check_amounts(document)
    sales = isinstance(document, Invoice)
    lines, amount_types = _lines(document, accounts, options, sales=sales, option_names=option_names)
    body: dict[str, Any] = {
        "Type": "ACCREC" if sales else "ACCPAY",
        "Contact": {"ContactID": contact_id},
        "LineItems": lines,
        "CurrencyCode": document.currency,
        "Status": _STATUS.get(document.status, "AUTHORISED"),
        "LineAmountTypes": amount_types,
    }
    if isinstance(document, Invoice):
        body["Date"] = document.invoice_date.isoformat()
        if document.invoice_number:
            body["InvoiceNumber"] = document.invoice_number[:255]
        if document.memo:
            body["Reference"] = document.memo[:255]
    else:
        body["Date"] = (document.posting_date or document.bill_date).isoformat()
        if document.bill_number:
            body["InvoiceNumber"] = document.bill_number[:255]
    if document.due_date:
        body["DueDate"] = document.due_date.isoformat()
    return body


def purchase_order_body(
    order: PurchaseOrder,
    *,
    contact_id: str,
    accounts: list[str],
    options: Mapping[str, Any],
    option_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``PUT /PurchaseOrders`` element for ``order``: lines as for bills.

    Raises:
        PermanentError: ``erp.unsupported_amount`` or ``config.missing`` with what to configure.
    """
    check_amounts(order)
    lines, amount_types = _lines(order, accounts, options, sales=False, option_names=option_names)
    body: dict[str, Any] = {
        "Contact": {"ContactID": contact_id},
        "LineItems": lines,
        "Date": order.order_date.isoformat(),
        "CurrencyCode": order.currency,
        "Status": _STATUS.get(order.status, "AUTHORISED"),
        "LineAmountTypes": amount_types,
    }
    if order.number:
        body["PurchaseOrderNumber"] = order.number[:255]
    if order.title:
        body["Reference"] = order.title[:255]
    return body


def changed_order_lines(
    current: list[Mapping[str, Any]],
    change: PurchaseOrderChange | None,
    tag: str,
    *,
    accounts: list[str],
    options: Mapping[str, Any],
    option_names: Mapping[str, str] | None = None,
) -> list[Any]:
    """The ``LineItems`` of a purchase order after applying (``change`` set) or removing (None) a change order.

    Lines whose description starts with ``tag`` (an earlier version of this change) are dropped;
    the others are kept with their ``LineItemID`` (Xero keeps them as they are); the change's lines
    are appended with descriptions starting with ``tag``, amounts as the change says.

    Raises:
        PermanentError: as :func:`purchase_order_body` for the change's amounts.
    """
    kept = [dict(line) for line in current if not str(line.get("Description") or "").startswith(tag)]
    if change is None:
        return kept
    check_amounts(change)
    lines, _ = _lines(change, accounts, options, sales=False, option_names=option_names)
    return kept + [{**line, "Description": (tag + str(line.get("Description") or ""))[:4000]} for line in lines]


_MS_DATE = re.compile(r"/Date\((-?\d+)([+-]\d{4})?\)/")


def parse_date(value: Any) -> date | None:
    """A Xero date: ``2024-03-01``, ``2024-03-01T00:00:00`` or the JSON ``/Date(1709251200000+0000)/``."""
    if not isinstance(value, str) or not value:
        return None
    match = _MS_DATE.fullmatch(value)
    if match:
        return datetime.fromtimestamp(int(match.group(1)) / 1000, tz=UTC).date()
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _decimal(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value if value is not None else 0))


def stored_document(record: Mapping[str, Any], *, source_lines: int) -> StoredDocument:
    """What a Xero invoice or purchase order holds, as :class:`StoredDocument` (read-back).

    The first ``source_lines`` line items stand for the source's lines (``LineAmount``: gross on
    ``Inclusive`` records, as the source's amounts are). Later lines are adjustments by their
    ``Description`` (:data:`ADJUSTMENTS`); any other later line counts as an extra line. Tax is
    ``TotalTax`` plus tax lines (less the tax inside inclusive lines is already in ``TotalTax``).
    """
    kept: list[StoredLine] = []
    extra = {"tax": Decimal(0), "shipping": Decimal(0), "discount": Decimal(0)}
    for line in record.get("LineItems") or []:
        amount = _decimal(line.get("LineAmount"))
        if len(kept) < source_lines:
            kept.append(StoredLine(amount, line.get("Description")))
            continue
        label = ADJUSTMENTS.get(str(line.get("Description")))
        if label is None:
            kept.append(StoredLine(amount, line.get("Description")))
        elif label == "discount":
            extra["discount"] -= amount
        else:
            extra[label] += amount
    contact = record.get("Contact") or {}
    return StoredDocument(
        total=_decimal(record["Total"]) if record.get("Total") is not None else None,
        currency=record.get("CurrencyCode"),
        tax_total=_decimal(record.get("TotalTax")) + extra["tax"],
        shipping_total=extra["shipping"],
        discount_total=extra["discount"],
        txn_date=parse_date(record.get("DateString") or record.get("Date")),
        due_date=parse_date(record.get("DueDateString") or record.get("DueDate")),
        counterparty_id=str(contact["ContactID"]) if contact.get("ContactID") else None,
        lines=tuple(kept),
    )


def stored_payments(records: Sequence[Mapping[str, Any]]) -> StoredDocument:
    """What Xero holds for one canonical payment booked as one Payment per applied document (read-back).

    ``total`` is the sum of their ``Amount``; ``txn_date`` their ``Date`` when they agree; the
    currency is the paid invoices' ``CurrencyCode`` when the answer carries it.
    """
    total = sum((_decimal(p.get("Amount")) for p in records), Decimal(0)) if records else None
    dates = {parse_date(p.get("Date")) for p in records}
    currencies = {
        str((p.get("Invoice") or {}).get("CurrencyCode"))
        for p in records
        if (p.get("Invoice") or {}).get("CurrencyCode")
    }
    return StoredDocument(
        total=total,
        currency=currencies.pop() if len(currencies) == 1 else None,
        txn_date=dates.pop() if len(dates) == 1 else None,
    )
