"""Canonical documents → QuickBooks Online request bodies, and QuickBooks records → what they hold.

Pure functions: no I/O. The connector resolves references (vendor/customer ``Id``, ``AccountRef``
and ``ItemRef`` per line) and passes them in; every body here is what Intuit's entity pages and
``Finance.xsd`` describe (``shared/reference/erp_apis.md`` §1).

Money (the source's amounts are authoritative, ``ledgerflow.contracts.lines``):

=====================  ==============================================================================
canonical              QuickBooks
=====================  ==============================================================================
line                   bill / purchase order: ``AccountBasedExpenseLineDetail`` (``AccountRef``,
                       ``ClassRef`` = cost code, ``CustomerRef`` = project), ``Amount`` = the line
                       amount; the account-based line has no quantity, so ``quantity × unit price``
                       is kept in the ``Description``. Invoice: ``SalesItemLineDetail`` (``ItemRef``,
                       ``Qty``, ``UnitPrice`` at full precision) when ``Qty × UnitPrice`` rounded
                       half-up to the cent is the line amount (Intuit validates it), else the amount
                       alone with quantity and unit price in the ``Description`` (so is a line
                       with a discount: its net amount, ``q × p less discount d`` in the description).
header tax             option ``tax_code`` (a QuickBooks ``TaxCode`` Id): ``TxnTaxDetail`` with
                       ``TxnTaxCodeRef`` and ``TotalTax`` = the document's tax, ``GlobalTaxCalculation``
                       ``TaxExcluded`` (``TaxInclusive`` for tax-inclusive documents, lines then carry
                       ``TaxInclusiveAmt`` = the source's gross amount and ``Amount`` = net). Without it:
                       invoices a line of option ``tax_item`` (an item posting to the tax liability),
                       bills and purchase orders a line on option ``tax_account``; else ``failed``.
                       Sales lines are marked ``TaxCodeRef`` ``TAX``/``NON`` (US), or the options
                       ``taxable_line_code``/``exempt_line_code`` elsewhere.
shipping               invoice: a ``SalesItemLineDetail`` line of option ``shipping_item`` (Intuit's
                       ``SHIPPING_ITEM_ID`` when the company tracks shipping); bill / purchase order:
                       a line on option ``shipping_account``; else ``failed``.
discount               invoice: a ``DiscountLineDetail`` line (``PercentBased: false``, option
                       ``discount_account`` as ``DiscountAccountRef`` when set; QuickBooks subtracts
                       it); bill / purchase order: a negative line on option ``discount_account``;
                       else ``failed``.
=====================  ==============================================================================

Adjustment lines come after the source's lines, with the ``Description`` ``Tax``, ``Shipping`` or
``Discount`` (:data:`ADJUSTMENTS`); :func:`stored_document` reads them back by that position and
label. QuickBooks keeps amounts to the cent: an amount of a three-decimal currency (KWD) that is
not a whole cent fails with the reason, and so does a negative bill total (a vendor credit,
``VendorCredit``, which this connector does not book).

Dates: ``TxnDate`` is the bill's posting date when the source gives one, else the bill date (the
date the expense is recognised); ``DueDate`` as the source says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from ledgerflow.connectors.base import PermanentError, UnresolvedReferenceError
from ledgerflow.connectors.tracking import check_tracking
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
    "CENT",
    "LineRefs",
    "bill_body",
    "changed_order_lines",
    "check_amounts",
    "invoice_body",
    "purchase_order_body",
    "stored_document",
    "stored_payment",
]

CENT = Decimal("0.01")
"""QuickBooks keeps amounts to two decimals."""

ADJUSTMENTS: dict[str, str] = {"Tax": "tax", "Shipping": "shipping", "Discount": "discount"}
"""``Description`` of an adjustment line → the header figure it books."""


@dataclass(frozen=True, slots=True)
class LineRefs:
    """What the connector resolved for one source line: the QuickBooks ``Id`` of its account or item."""

    ref: str


def _fail(code: ErrorCode, message: str) -> PermanentError:
    return PermanentError(code, message)


def _what(document: Document) -> str:
    return f"{document.object_type} {document.canonical_id}"


def check_amounts(document: Document) -> None:
    """Refuse a document QuickBooks cannot hold exactly.

    Raises:
        PermanentError: ``erp.unsupported_amount`` for an amount that is not a whole cent (a
            three-decimal currency) or a negative bill or purchase-order total.
    """
    what = _what(document)
    figures: list[tuple[str, Decimal]] = []
    for line in document.line_items:
        figures.append((f"line {line.line_number} amount", line.amount))
        if line.tax_amount is not None:
            figures.append((f"line {line.line_number} tax amount", line.tax_amount))
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
                f"{what}: {name} {value} {document.currency} is not a whole cent; QuickBooks keeps amounts "
                "to two decimals, so it cannot be booked exactly",
            )
    if isinstance(document, Bill | PurchaseOrder) and document.total < 0:
        raise _fail(
            ErrorCode.ERP_UNSUPPORTED_AMOUNT,
            f"{what}: the total {document.total} {document.currency} is negative; in QuickBooks that is a "
            "vendor credit (VendorCredit), which this connector does not book",
        )


def _option(options: Mapping[str, Any], name: str) -> str | None:
    value = options.get(name)
    return str(value) if value not in (None, "") else None


def _quantity_note(line: LineItem) -> str | None:
    if line.quantity is None or line.unit_price is None:
        return None
    note = f"{format(line.quantity, 'f')} × {format(line.unit_price, 'f')}"
    if line.discount_amount:
        note += f" less discount {format(line.discount_amount, 'f')}"
    return note


def _description(line: LineItem, note: str | None) -> str | None:
    text = line.description or ""
    if note:
        text = f"{text} ({note})" if text else note
    return text[:4000] or None


def _net(line: LineItem, document: Document) -> Decimal:
    """The line's net amount: the source amount, less its tax when the document is tax-inclusive."""
    if document.tax_inclusive:
        return line.amount - (line.tax_amount or Decimal(0))
    return line.amount


def _tracking_id(ref: Reference | None, field: str, where: str, options: Mapping[str, Any]) -> str | None:
    """The QuickBooks Id of a line's cost code (``ClassRef``) or project (``CustomerRef``), or None.

    QuickBooks takes these by ``Id`` only. A reference without one fails the document (never
    dropped silently) unless the connection's option ``unresolved_tracking`` is ``omit``.

    Raises:
        PermanentError: ``reference.unresolved`` naming the reference.
    """
    if ref is None:
        return None
    erp_id, _, _ = erp_identifiers(ref)
    if erp_id:
        return erp_id
    try:
        check_tracking(ref, field, where, "QuickBooks Id", options)
    except UnresolvedReferenceError as exc:
        raise _fail(ErrorCode.REFERENCE_UNRESOLVED, str(exc)) from None
    return None


def _tax_mode(document: Document, options: Mapping[str, Any], line_option: str) -> str:
    """How tax is booked: ``none``, ``detail`` (TxnTaxDetail, option tax_code) or ``line`` (an adjustment line).

    Raises:
        PermanentError: ``config.missing`` naming the options to set.
    """
    if document.tax_total == 0 and not any(line.tax_amount for line in document.line_items):
        return "none"
    if _option(options, "tax_code"):
        if document.tax_inclusive and document.header_tax != 0:
            raise _fail(
                ErrorCode.ERP_UNSUPPORTED_AMOUNT,
                f"{_what(document)}: a tax-inclusive document whose tax ({document.tax_total}) is not all "
                "carried by its lines cannot be split into net amounts for QuickBooks",
            )
        return "detail"
    if document.tax_inclusive:
        raise _fail(
            ErrorCode.CONFIG_MISSING,
            f"{_what(document)}: amounts include tax {document.tax_total} {document.currency}; QuickBooks books "
            "tax-inclusive documents with a tax code: set the connection option tax_code (a QuickBooks TaxCode Id)",
        )
    if _option(options, line_option):
        return "line"
    raise _fail(
        ErrorCode.CONFIG_MISSING,
        f"{_what(document)}: carries tax {document.tax_total} {document.currency}; set the connection option "
        f"tax_code (a QuickBooks TaxCode Id, booked as TxnTaxDetail) or {line_option} (booked as a tax line)",
    )


def _tax_detail(document: Document, options: Mapping[str, Any], body: dict[str, Any]) -> None:
    body["TxnTaxDetail"] = {"TxnTaxCodeRef": {"value": _option(options, "tax_code")}, "TotalTax": document.tax_total}
    body["GlobalTaxCalculation"] = "TaxInclusive" if document.tax_inclusive else "TaxExcluded"


def _account_line(number: int, amount: Decimal, label: str, account: str) -> dict[str, Any]:
    return {
        "LineNum": number,
        "Amount": amount,
        "Description": label,
        "DetailType": "AccountBasedExpenseLineDetail",
        "AccountBasedExpenseLineDetail": {"AccountRef": {"value": account}},
    }


def _required(options: Mapping[str, Any], name: str, document: Document, label: str, amount: Decimal) -> str:
    value = _option(options, name)
    if value is None:
        raise _fail(
            ErrorCode.CONFIG_MISSING,
            f"{_what(document)}: {label} of {amount} {document.currency} needs the connection option {name}",
        )
    return value


def _expense_lines(document: Document, accounts: Sequence[LineRefs], options: Mapping[str, Any]) -> list[Any]:
    """Source lines and adjustment lines of a bill or purchase order; also decides the tax mode."""
    lines: list[dict[str, Any]] = []
    detail_tax = _tax_mode(document, options, "tax_account") == "detail"
    for line, refs in zip(document.line_items, accounts, strict=True):
        detail: dict[str, Any] = {"AccountRef": {"value": refs.ref}}
        where = f"{_what(document)} line {line.line_number}"
        cost_id = _tracking_id(line.cost_code, "cost_code", where, options)
        if cost_id:
            detail["ClassRef"] = {"value": cost_id}
        project_id = _tracking_id(line.project, "project", where, options)
        if project_id:
            detail["CustomerRef"] = {"value": project_id}
        if detail_tax and line.tax_amount:
            detail["TaxCodeRef"] = {"value": _option(options, "tax_code")}
            detail["TaxAmount"] = line.tax_amount
        if detail_tax and document.tax_inclusive:
            detail["TaxInclusiveAmt"] = line.amount
        entry: dict[str, Any] = {
            "LineNum": line.line_number,
            "Amount": _net(line, document),
            "DetailType": "AccountBasedExpenseLineDetail",
            "AccountBasedExpenseLineDetail": detail,
        }
        description = _description(line, _quantity_note(line))
        if description:
            entry["Description"] = description
        lines.append(entry)
    number = len(lines)
    adjustments: list[tuple[Decimal, str, str]] = []
    if not detail_tax and document.tax_total:
        adjustments.append((document.tax_total, "Tax", "tax_account"))
    if document.shipping_total:
        adjustments.append((document.shipping_total, "Shipping", "shipping_account"))
    if document.discount_total:
        adjustments.append((-document.discount_total, "Discount", "discount_account"))
    for amount, label, option in adjustments:
        number += 1
        account = _required(options, option, document, label.lower(), amount)
        lines.append(_account_line(number, amount, label, account))
    return lines


def bill_body(
    bill: Bill, *, vendor_id: str, accounts: Sequence[LineRefs], options: Mapping[str, Any]
) -> dict[str, Any]:
    """``POST /bill`` body for ``bill`` (see the module docstring).

    Args:
        bill: the canonical bill.
        vendor_id: the QuickBooks Vendor ``Id``.
        accounts: the ``AccountRef`` Id of each line, in line order.
        options: the connection's options (``tax_code``, ``tax_account``, ``shipping_account``,
            ``discount_account``).

    Raises:
        PermanentError: ``erp.unsupported_amount`` or ``config.missing`` with what to configure.
    """
    check_amounts(bill)
    body: dict[str, Any] = {
        "VendorRef": {"value": vendor_id},
        "Line": _expense_lines(bill, accounts, options),
        "TxnDate": (bill.posting_date or bill.bill_date).isoformat(),
        "CurrencyRef": {"value": bill.currency},
    }
    if _tax_mode(bill, options, "tax_account") == "detail":
        _tax_detail(bill, options, body)
    if bill.due_date:
        body["DueDate"] = bill.due_date.isoformat()
    if bill.bill_number:
        body["DocNumber"] = bill.bill_number[:21]
    if bill.memo:
        body["PrivateNote"] = bill.memo[:4000]
    ap_id, _, _ = erp_identifiers(bill.ap_account)
    if ap_id:
        body["APAccountRef"] = {"value": ap_id}
    unit_id, _, _ = erp_identifiers(bill.business_unit)
    if unit_id:
        body["DepartmentRef"] = {"value": unit_id}
    return body


def purchase_order_body(
    order: PurchaseOrder, *, vendor_id: str, accounts: Sequence[LineRefs], options: Mapping[str, Any]
) -> dict[str, Any]:
    """``POST /purchaseorder`` body for ``order``: account-based lines and adjustments as for bills.

    Raises:
        PermanentError: ``erp.unsupported_amount`` or ``config.missing`` with what to configure.
    """
    check_amounts(order)
    body: dict[str, Any] = {
        "VendorRef": {"value": vendor_id},
        "Line": _expense_lines(order, accounts, options),
        "TxnDate": order.order_date.isoformat(),
        "CurrencyRef": {"value": order.currency},
        "POStatus": "Open",
    }
    if _tax_mode(order, options, "tax_account") == "detail":
        _tax_detail(order, options, body)
    if order.number:
        body["DocNumber"] = order.number[:21]
    if order.title:
        body["Memo"] = order.title[:4000]
    return body


def changed_order_lines(
    current: Sequence[Mapping[str, Any]],
    change: PurchaseOrderChange | None,
    tag: str,
    *,
    accounts: Sequence[LineRefs],
    options: Mapping[str, Any],
) -> list[Any]:
    """The ``Line`` of a purchase order after applying (``change`` set) or removing (None) a change order.

    Lines tagged ``tag`` (an earlier version of this change) are dropped; the change's lines are
    appended as account-based lines whose description starts with ``tag``, amounts as the change
    says (a negative amount lowers the order). The order's other lines are kept as QuickBooks
    holds them, ``LineNum`` renumbered.

    Raises:
        PermanentError: as :func:`purchase_order_body` for the change's amounts.
    """
    kept = [dict(line) for line in current if not str(line.get("Description") or "").startswith(tag)]
    added: list[Any] = []
    if change is not None:
        check_amounts(change)
        for line in _expense_lines(change, accounts, options):
            description = str(line.get("Description") or "")
            added.append({**line, "Description": (tag + description)[:4000]})
    lines = [line for line in kept if line.get("DetailType") != "SubTotalLineDetail"] + added
    for number, line in enumerate(lines, start=1):
        line["LineNum"] = number
    return lines


def _line_codes(options: Mapping[str, Any]) -> tuple[str, str]:
    """The sales-line ``TaxCodeRef`` of a taxable and of an untaxed line.

    QuickBooks US companies mark lines ``TAX``/``NON`` (the defaults); other regions use their tax
    code Ids: options ``taxable_line_code`` and ``exempt_line_code``.
    """
    return _option(options, "taxable_line_code") or "TAX", _option(options, "exempt_line_code") or "NON"


def _sales_line(
    line: LineItem, item: str, invoice: Invoice, detail_tax: bool, options: Mapping[str, Any]
) -> dict[str, Any]:
    detail: dict[str, Any] = {"ItemRef": {"value": item}}
    class_id = _tracking_id(line.cost_code, "cost_code", f"{_what(invoice)} line {line.line_number}", options)
    if class_id:
        detail["ClassRef"] = {"value": class_id}
    net = _net(line, invoice)
    note = _quantity_note(line)
    # Intuit validates Amount = Qty × UnitPrice (rounded half-up to the cent); a line discount has
    # no place in that equation outside the regions with line discounts, so a discounted line is
    # sent at its net amount with the quantity, price and discount in the description.
    priceable = not invoice.tax_inclusive and not line.discount_amount
    if (
        line.quantity is not None
        and line.unit_price is not None
        and priceable
        and (line.quantity * line.unit_price).quantize(CENT, rounding=ROUND_HALF_UP) == line.amount
    ):
        detail["Qty"] = line.quantity
        detail["UnitPrice"] = line.unit_price
        note = None
    if detail_tax:
        taxable, exempt = _line_codes(options)
        detail["TaxCodeRef"] = {"value": taxable if line.tax_amount else exempt}
        if invoice.tax_inclusive:
            detail["TaxInclusiveAmt"] = line.amount
    entry: dict[str, Any] = {
        "LineNum": line.line_number,
        "Amount": net,
        "DetailType": "SalesItemLineDetail",
        "SalesItemLineDetail": detail,
    }
    description = _description(line, note)
    if description:
        entry["Description"] = description
    return entry


def invoice_body(
    invoice: Invoice, *, customer_id: str, items: Sequence[LineRefs], options: Mapping[str, Any]
) -> dict[str, Any]:
    """``POST /invoice`` body for ``invoice`` (see the module docstring).

    Args:
        invoice: the canonical AR invoice.
        customer_id: the QuickBooks Customer ``Id``.
        items: the ``ItemRef`` Id of each line, in line order.
        options: ``tax_code``, ``tax_item``, ``shipping_item``, ``discount_account``.

    Raises:
        PermanentError: ``erp.unsupported_amount`` or ``config.missing`` with what to configure.
    """
    check_amounts(invoice)
    mode = _tax_mode(invoice, options, "tax_item")
    detail_tax = mode == "detail"
    lines = [
        _sales_line(line, refs.ref, invoice, detail_tax, options)
        for line, refs in zip(invoice.line_items, items, strict=True)
    ]
    number = len(lines)
    for amount, label, option in (
        (invoice.tax_total if mode == "line" else Decimal(0), "Tax", "tax_item"),
        (invoice.shipping_total, "Shipping", "shipping_item"),
    ):
        if amount:
            number += 1
            item = _required(options, option, invoice, label.lower(), amount)
            detail: dict[str, Any] = {"ItemRef": {"value": item}}
            if detail_tax:
                detail["TaxCodeRef"] = {"value": _line_codes(options)[1]}
            lines.append(
                {
                    "LineNum": number,
                    "Amount": amount,
                    "Description": label,
                    "DetailType": "SalesItemLineDetail",
                    "SalesItemLineDetail": detail,
                }
            )
    if invoice.discount_total:
        number += 1
        discount: dict[str, Any] = {"PercentBased": False}
        account = _option(options, "discount_account")
        if account:
            discount["DiscountAccountRef"] = {"value": account}
        lines.append(
            {
                "LineNum": number,
                "Amount": invoice.discount_total,
                "Description": "Discount",
                "DetailType": "DiscountLineDetail",
                "DiscountLineDetail": discount,
            }
        )
    body: dict[str, Any] = {
        "CustomerRef": {"value": customer_id},
        "Line": lines,
        "TxnDate": invoice.invoice_date.isoformat(),
        "CurrencyRef": {"value": invoice.currency},
    }
    if detail_tax:
        _tax_detail(invoice, options, body)
    if invoice.due_date:
        body["DueDate"] = invoice.due_date.isoformat()
    if invoice.invoice_number:
        body["DocNumber"] = invoice.invoice_number[:21]
    if invoice.memo:
        body["CustomerMemo"] = {"value": invoice.memo[:1000]}
    return body


def _decimal(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value if value is not None else 0))


def _date(value: Any) -> date | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def stored_document(record: Mapping[str, Any], *, source_lines: int) -> StoredDocument:
    """What a QuickBooks Bill, Invoice or PurchaseOrder holds, as :class:`StoredDocument` (read-back).

    The first ``source_lines`` item lines (``SubTotalLineDetail`` and ``DiscountLineDetail`` left
    out) stand for the source's lines: their gross amount (``TaxInclusiveAmt`` on tax-inclusive
    records) in order. Later lines are adjustments by their ``Description`` (:data:`ADJUSTMENTS`);
    any other later line counts as an extra line. Tax is ``TxnTaxDetail.TotalTax`` plus tax lines;
    the discount is the ``DiscountLineDetail`` amounts plus discount lines (negated).
    """
    inclusive = record.get("GlobalTaxCalculation") == "TaxInclusive"
    kept: list[StoredLine] = []
    extra = {"tax": Decimal(0), "shipping": Decimal(0), "discount": Decimal(0)}
    for line in record.get("Line") or []:
        kind = line.get("DetailType")
        if kind == "SubTotalLineDetail":
            continue
        amount = _decimal(line.get("Amount"))
        if kind == "DiscountLineDetail":
            extra["discount"] += amount
            continue
        if len(kept) < source_lines:
            detail = line.get(str(kind)) or {}
            if inclusive and detail.get("TaxInclusiveAmt") is not None:
                amount = _decimal(detail["TaxInclusiveAmt"])
            kept.append(StoredLine(amount, line.get("Description")))
            continue
        label = ADJUSTMENTS.get(str(line.get("Description")))
        if label is None:
            kept.append(StoredLine(amount, line.get("Description")))
        elif label == "discount":
            extra["discount"] -= amount
        else:
            extra[label] += amount
    tax_detail = record.get("TxnTaxDetail") or {}
    party = record.get("VendorRef") or record.get("CustomerRef") or {}
    return StoredDocument(
        total=_decimal(record.get("TotalAmt")) if record.get("TotalAmt") is not None else None,
        currency=(record.get("CurrencyRef") or {}).get("value"),
        tax_total=_decimal(tax_detail.get("TotalTax")) + extra["tax"],
        shipping_total=extra["shipping"],
        discount_total=extra["discount"],
        txn_date=_date(record.get("TxnDate")),
        due_date=_date(record.get("DueDate")),
        counterparty_id=str(party["value"]) if party.get("value") is not None else None,
        lines=tuple(kept),
    )


def stored_payment(record: Mapping[str, Any]) -> StoredDocument:
    """What a QuickBooks BillPayment or Payment holds (read-back): ``TotalAmt``, currency, ``TxnDate``, party."""
    party = record.get("VendorRef") or record.get("CustomerRef") or {}
    return StoredDocument(
        total=_decimal(record.get("TotalAmt")) if record.get("TotalAmt") is not None else None,
        currency=(record.get("CurrencyRef") or {}).get("value"),
        txn_date=_date(record.get("TxnDate")),
        counterparty_id=str(party["value"]) if party.get("value") is not None else None,
    )
