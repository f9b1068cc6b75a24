"""Canonical records → NetSuite SuiteTalk REST record v1 request bodies (pure functions).

Field names follow the NetSuite REST record API and its OpenAPI description (``vendorBill``,
``vendorBill-expenseElement``, ``vendor``, ``customer``, ``invoice``, ``invoice-itemElement`` in
the account's metadata catalog; captured copy ``specs/netsuite-oas.json``) and the assembled
example in ``reference/erp_apis.md`` §3.2. Amounts are JSON *numbers* in NetSuite (``"type":
"number"``): the bodies keep them as :class:`decimal.Decimal` and
:func:`ledgerflow.core.outbound.client.dumps_json` writes them as exact JSON numbers (never through ``float``).

Reference resolution (a NetSuite reference is ``{"id": internal id}`` or ``{"externalId": …}``):
``accounting_id`` → ``{"id"}`` (NetSuite's internal id is what the REST API keys on, so it comes
before the human code); then ``accounting_custom_id`` → ``{"externalId"}``; then, for vendors,
customers and documents that ledgerflow itself upserted, the external id derived from their
canonical id (:func:`external_id`). A reference that resolves to none of these is an
:class:`UnresolvedReferenceError`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Any

from ledgerflow.connectors.amounts import DocumentAmounts, as_source_lines, document_amounts
from ledgerflow.connectors.base import UnresolvedReferenceError
from ledgerflow.connectors.tracking import check_tracking
from ledgerflow.connectors.verify import StoredDocument, StoredLine
from ledgerflow.contracts import (
    Bill,
    CanonicalRecord,
    Customer,
    Document,
    Invoice,
    LineItem,
    Party,
    PurchaseOrder,
    PurchaseOrderChange,
    Reference,
    Vendor,
    canonical_id,
)
from ledgerflow.contracts.common import quantize

__all__ = [
    "RECORD_TYPES",
    "bill_body",
    "body_for",
    "changed_order_expense",
    "external_id",
    "internal_id_from_location",
    "invoice_body",
    "party_body",
    "purchase_order_body",
    "sent_entity_id",
    "stored_document",
]

RECORD_TYPES: dict[str, str] = {
    "bill": "vendorBill",
    "vendor": "vendor",
    "customer": "customer",
    "invoice": "invoice",
    "purchase_order": "purchaseOrder",
}
"""Canonical object type → NetSuite REST record type (path segment under ``/record/v1``)."""

TRAN_ID_MAX = 45
"""Longest ``tranId`` (document number) NetSuite stores."""

COMPANY_NAME_MAX = 83
"""Longest ``companyName`` NetSuite stores on a vendor or customer."""

_EID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_EID_MAX = 100

#: Default line segments: canonical line field → NetSuite expense/item line field.
DEFAULT_LINE_SEGMENTS: dict[str, str] = {
    "business_unit": "department",
    "cost_code": "class",
    "project": "customer",
}


def external_id(canonical_id: str) -> str:
    """Derive the stable NetSuite external id of a canonical record.

    NetSuite external ids allow ``[A-Za-z0-9_-]`` only (a pipe breaks ``eid:`` parsing; reference
    §3.3). Every other run of characters becomes ``-``; ids longer than 100 characters keep a
    prefix plus a SHA-256 suffix, so the result is stable and unique per canonical id.

    Example: ``acme:mercoa:bill:inv_8f2a`` → ``acme-mercoa-bill-inv_8f2a``.
    """
    safe = _EID_UNSAFE.sub("-", canonical_id).strip("-")
    if safe != canonical_id.replace(":", "-") or len(safe) > _EID_MAX:
        digest = hashlib.sha256(canonical_id.encode()).hexdigest()[:16]
        safe = f"{safe[: _EID_MAX - 17]}-{digest}"
    return safe


def internal_id_from_location(location: str) -> str:
    """Parse the internal id from a create response's ``Location`` header.

    NetSuite answers a create/upsert with 204 and ``Location: …/record/v1/vendorBill/123``.

    Raises:
        ValueError: the header does not end in a record id.

    """
    tail = location.rstrip("/").rsplit("/", 1)[-1]
    if not tail or tail.startswith("eid:") or "?" in tail:
        raise ValueError(f"no internal id in Location {location!r}")
    return tail


def _ref(ref: Reference | None) -> dict[str, str] | None:
    if ref is None:
        return None
    if ref.accounting_id:
        return {"id": ref.accounting_id}
    if ref.accounting_custom_id:
        return {"externalId": ref.accounting_custom_id}
    return None


def _party_ref(ref: Reference, tenant: str, source: str, object_type: str) -> dict[str, str]:
    resolved = _ref(ref)
    if resolved is not None:
        return resolved
    if ref.source_id:
        return {"externalId": external_id(canonical_id(tenant, source, object_type, ref.source_id))}
    raise UnresolvedReferenceError(f"{object_type} {ref.name or '?'} has no NetSuite id, custom id or source id")


def _date(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _segments(line: LineItem, options: Mapping[str, Any], header_project: Reference | None) -> dict[str, Any]:
    mapping: Mapping[str, str] = options.get("line_segments", DEFAULT_LINE_SEGMENTS)
    out: dict[str, Any] = {}
    for canonical_field, ns_field in mapping.items():
        ref = getattr(line, canonical_field, None)
        if ref is None and canonical_field == "project":
            ref = header_project
        if not isinstance(ref, Reference):
            continue
        resolved = _ref(ref)
        if resolved is None:
            check_tracking(ref, canonical_field, f"line {line.line_number}", "NetSuite", options)
            continue
        out[ns_field] = resolved
    if options.get("location_id"):
        out.setdefault("location", {"id": str(options["location_id"])})
    return out


def _expense_lines(
    document: Document,
    options: Mapping[str, Any],
    header_project: Reference | None,
) -> list[dict[str, Any]]:
    amounts = document_amounts(document)
    default_account = options.get("default_expense_account")
    items: list[dict[str, Any]] = []
    for line, amount in zip(document.line_items, amounts.lines, strict=True):
        account = _ref(line.gl_account) or ({"id": str(default_account)} if default_account else None)
        if account is None:
            raise UnresolvedReferenceError(f"line {line.line_number} has no GL account and no default_expense_account")
        item: dict[str, Any] = {"account": account, "amount": amount}
        if line.description:
            item["memo"] = line.description
        item.update(_segments(line, options, header_project))
        items.append(item)
    # Header-level charges become their own expense lines so the bill total matches the source.
    for kind, amount in (("tax", amounts.tax), ("shipping", amounts.shipping), ("discount", -amounts.discount)):
        if amount == 0:
            continue
        account_id = options.get(f"{kind}_account")
        if not account_id:
            raise UnresolvedReferenceError(
                f"{document.object_type} {document.canonical_id} has a {kind} amount of {abs(amount)} but the "
                f"connection has no options.{kind}_account (the NetSuite account that books it)"
            )
        items.append({"account": {"id": str(account_id)}, "amount": amount, "memo": kind})
    return items


def _header(record: CanonicalRecord, options: Mapping[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"externalId": external_id(record.canonical_id)}
    if options.get("subsidiary_id"):
        body["subsidiary"] = {"id": str(options["subsidiary_id"])}
    return body


def _currency(code: str, options: Mapping[str, Any], what: str) -> dict[str, str]:
    """``{"id": <internal id>}`` of ISO currency ``code`` from ``options["currency_ids"]``.

    NetSuite keys currencies by internal id (``currency`` is a reference, not an ISO code), and a
    transaction sent without one is booked in the entity's default currency: every amount would
    silently change currency. So a currency the connection has not mapped is an error.

    Raises:
        UnresolvedReferenceError: ``code`` is not in ``options["currency_ids"]``.
    """
    ids: Mapping[str, Any] = options.get("currency_ids") or {}
    if code not in ids:
        known = ", ".join(sorted(ids)) or "none"
        raise UnresolvedReferenceError(
            f"{what} is in {code}, which is not in the connection's options.currency_ids (ISO code → NetSuite "
            f"currency internal id; mapped: {known}): add {code} to book it"
        )
    return {"id": str(ids[code])}


def _tran_id(number: str, what: str) -> str:
    """``tranId`` (NetSuite's document number, at most 45 characters): never shortened.

    Raises:
        UnresolvedReferenceError: the number is longer than NetSuite holds.
    """
    if len(number) > TRAN_ID_MAX:
        raise UnresolvedReferenceError(
            f"{what}: document number {number!r} is longer than NetSuite's {TRAN_ID_MAX}-character tranId"
        )
    return number


def bill_body(bill: Bill, options: Mapping[str, Any]) -> dict[str, Any]:
    """Map a canonical :class:`~contracts.Bill` to a NetSuite ``vendorBill`` body.

    Lines go to the ``expense`` sublist (GL-account lines, reference §3.2); tax, shipping and
    discount become extra expense lines on ``options["tax_account"]``/``shipping_account``/
    ``discount_account`` so NetSuite's total equals :attr:`Bill.total`. ``tranDate`` is the posting
    date when given (NetSuite's posting date), else the bill date.

    Options: ``subsidiary_id``, ``location_id``, ``currency_ids`` (ISO code → internal id; required
    for the bill's currency), ``default_expense_account``, ``tax_account``, ``shipping_account``,
    ``discount_account``, ``line_segments`` (canonical line field → NetSuite line field).

    Raises:
        UnresolvedReferenceError: the vendor, a GL account, the currency or a charge account cannot
            be resolved; the bill number is longer than ``tranId`` holds.

    """
    what = f"bill {bill.canonical_id}"
    body = _header(bill, options)
    body["entity"] = _party_ref(bill.vendor, bill.tenant, bill.source, "vendor")
    body["tranDate"] = _date(bill.posting_date or bill.bill_date)
    if bill.bill_number:
        body["tranId"] = _tran_id(bill.bill_number, what)
    if bill.due_date:
        body["dueDate"] = _date(bill.due_date)
    if bill.memo:
        body["memo"] = bill.memo
    body["currency"] = _currency(bill.currency, options, what)
    body["expense"] = {"items": _expense_lines(bill, options, bill.project)}
    return body


def purchase_order_body(order: PurchaseOrder, options: Mapping[str, Any]) -> dict[str, Any]:
    """Map a canonical :class:`~contracts.PurchaseOrder` to a NetSuite ``purchaseOrder`` body.

    Same line rules as :func:`bill_body` (expense sublist; tax, shipping and discount on
    ``options["tax_account"]`` / ``shipping_account`` / ``discount_account``).

    Raises:
        UnresolvedReferenceError: the vendor or a GL account cannot be resolved.

    """
    what = f"purchase order {order.canonical_id}"
    body = _header(order, options)
    body["entity"] = _party_ref(order.vendor, order.tenant, order.source, "vendor")
    body["tranDate"] = _date(order.order_date)
    if order.number:
        body["tranId"] = _tran_id(order.number, what)
    if order.title:
        body["memo"] = order.title
    body["currency"] = _currency(order.currency, options, what)
    body["expense"] = {"items": _expense_lines(order, options, order.project)}
    return body


def invoice_body(invoice: Invoice, options: Mapping[str, Any]) -> dict[str, Any]:
    """Map a canonical AR :class:`~contracts.Invoice` to a NetSuite ``invoice`` body.

    NetSuite invoices carry item lines (``item.items`` with ``item``, ``quantity``, ``rate``,
    ``amount``, ``description``); a line without an item uses ``options["default_item"]``.
    ``amount`` is the source's line amount (authoritative); ``rate`` (the unit price, at the
    source's precision) is sent only when ``quantity × rate`` rounds to that amount, otherwise
    NetSuite would recompute a different amount.

    The invoice record of the account's description (``specs/netsuite-oas.json``) has no header
    tax or shipping fields, so, as NetSuite does for sales tax and charges without SuiteTax, they
    are item lines on configured items (Oracle help "Other Charge items", "Discount items"):

    * line tax: one line per taxed source line on ``options["tax_item_id"]`` ("Tax on line n");
      header tax not carried by lines: one more "Tax" line for the rest;
    * shipping: a line on ``options["shipping_item_id"]``;
    * discount: a negative line on ``options["discount_item_id"]``.

    So NetSuite's total (sum of item amounts) equals :attr:`Invoice.total` to the cent.

    Raises:
        UnresolvedReferenceError: the customer, an item, the currency or a charge item cannot be
            resolved (naming the option to configure).

    """
    what = f"invoice {invoice.canonical_id}"
    currency_code = invoice.currency
    body = _header(invoice, options)
    body["entity"] = _party_ref(invoice.customer, invoice.tenant, invoice.source, "customer")
    body["tranDate"] = _date(invoice.invoice_date)
    if invoice.invoice_number:
        body["tranId"] = _tran_id(invoice.invoice_number, what)
    if invoice.due_date:
        body["dueDate"] = _date(invoice.due_date)
    if invoice.memo:
        body["memo"] = invoice.memo
    body["currency"] = _currency(currency_code, options, what)
    default_item = options.get("default_item")
    segments = {**options, "line_segments": {"business_unit": "department"}}
    amounts = document_amounts(invoice)
    items: list[dict[str, Any]] = []
    for line, amount in zip(invoice.line_items, amounts.lines, strict=True):
        item_ref = _ref(line.item) or ({"id": str(default_item)} if default_item else None)
        if item_ref is None:
            raise UnresolvedReferenceError(
                f"{what} line {line.line_number} has no NetSuite item and the connection has no default_item"
            )
        element: dict[str, Any] = {"item": item_ref, "amount": amount}
        if line.quantity is not None:
            element["quantity"] = line.quantity
            if line.unit_price is not None and quantize(line.quantity * line.unit_price, currency_code) == amount:
                element["rate"] = line.unit_price
        elif line.unit_price is not None and quantize(line.unit_price, currency_code) == amount:
            element["rate"] = line.unit_price
        if line.description:
            element["description"] = line.description
        element.update(_segments(line, segments, None))
        items.append(element)
    items.extend(_charge_items(invoice, amounts, options, what))
    body["item"] = {"items": items}
    return body


def _charge_item(options: Mapping[str, Any], option: str, label: str, amount: Decimal, what: str) -> dict[str, Any]:
    item_id = options.get(option)
    if not item_id:
        raise UnresolvedReferenceError(
            f"{what} has {label} of {amount} but the connection has no options.{option} "
            f"(the NetSuite item that books {label})"
        )
    return {"item": {"id": str(item_id)}, "amount": amount}


def _charge_items(
    invoice: Invoice, amounts: DocumentAmounts, options: Mapping[str, Any], what: str
) -> list[dict[str, Any]]:
    """Tax (per taxed line, then the rest), shipping and discount as item lines (see :func:`invoice_body`)."""
    currency_code = invoice.currency
    out: list[dict[str, Any]] = []
    line_tax = Decimal(0)
    for line in invoice.line_items:
        if not line.tax_amount:
            continue
        tax = quantize(line.tax_amount, currency_code)
        if not tax:
            continue
        line_tax += tax
        element = _charge_item(options, "tax_item_id", "tax", tax, what)
        rate = f" ({line.tax_rate_percent.normalize():f} %)" if line.tax_rate_percent is not None else ""
        element["description"] = f"Tax on line {line.line_number}{rate}"
        out.append(element)
    if rest := amounts.tax - line_tax:
        element = _charge_item(options, "tax_item_id", "tax", rest, what)
        element["description"] = "Tax" if not line_tax else "Tax not carried by the lines"
        out.append(element)
    if amounts.shipping:
        element = _charge_item(options, "shipping_item_id", "shipping", amounts.shipping, what)
        element["description"] = "Shipping"
        out.append(element)
    if amounts.discount:
        element = _charge_item(options, "discount_item_id", "a discount", -amounts.discount, what)
        element["description"] = "Discount"
        out.append(element)
    return out


def party_body(party: Party, options: Mapping[str, Any]) -> dict[str, Any]:
    """Map a canonical :class:`~contracts.Vendor` or :class:`~contracts.Customer` to a NetSuite entity body.

    ``companyName`` = name, ``legalName``, ``email``, ``phone``, ``isInactive`` = not active,
    ``subsidiary`` from ``options["subsidiary_id"]`` (mandatory in OneWorld accounts), ``currency``
    when the party has one (from ``options["currency_ids"]``).

    Raises:
        UnresolvedReferenceError: the name is longer than NetSuite holds, or the party's currency
            is not in ``options["currency_ids"]``.
    """
    if len(party.name) > COMPANY_NAME_MAX:
        raise UnresolvedReferenceError(
            f"{party.object_type} {party.canonical_id}: name {party.name!r} is longer than NetSuite's "
            f"{COMPANY_NAME_MAX}-character companyName"
        )
    body = _header(party, options)
    body["companyName"] = party.name
    if party.legal_name and isinstance(party, Vendor):
        body["legalName"] = party.legal_name
    if party.email:
        body["email"] = party.email
    if party.phone:
        body["phone"] = party.phone
    body["isInactive"] = not party.active
    if party.currency:
        body["currency"] = _currency(party.currency, options, f"{party.object_type} {party.canonical_id}")
    return body


def _sendable(line: Mapping[str, Any]) -> dict[str, Any]:
    """An expense line read from NetSuite as it can be sent back: no ``links``, references by ``id``."""
    out: dict[str, Any] = {}
    for key, value in line.items():
        if key in ("links", "line", "refName"):
            continue
        out[key] = {"id": value["id"]} if isinstance(value, dict) and "id" in value else value
    return out


def changed_order_expense(
    current: Mapping[str, Any], change: PurchaseOrderChange | None, tag: str, options: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``expense`` sublist of a purchase order after applying (``change`` set) or removing (None) a change.

    ``current`` is the order as NetSuite returns it (``expense.items``). Lines whose ``memo`` starts
    with ``tag`` (an earlier version of this change) are dropped, the others kept; the change's lines
    are appended (same rules as :func:`purchase_order_body`) with ``memo`` starting with ``tag``.
    Sent with ``?replace=expense``, so NetSuite replaces the sublist with exactly these lines.

    Raises:
        UnresolvedReferenceError: a GL account of the change cannot be resolved.
    """
    expense = current.get("expense")
    items = expense.get("items") if isinstance(expense, dict) else None
    kept = [_sendable(line) for line in items or [] if not str(line.get("memo") or "").startswith(tag)]
    if change is None:
        return {"items": kept}
    added = _expense_lines(change, options, change.project)
    for line in added:
        line["memo"] = (tag + str(line.get("memo") or ""))[:4000]
    return {"items": kept + added}


def body_for(record: CanonicalRecord, options: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Return ``(NetSuite record type, request body)`` for any supported canonical record.

    Raises:
        UnresolvedReferenceError: a reference the record needs cannot be resolved.
        KeyError: the object type has no NetSuite mapping (see :data:`RECORD_TYPES`).

    """
    record_type = RECORD_TYPES[record.object_type]
    if isinstance(record, Bill):
        return record_type, bill_body(record, options)
    if isinstance(record, PurchaseOrder):
        return record_type, purchase_order_body(record, options)
    if isinstance(record, Invoice):
        return record_type, invoice_body(record, options)
    if isinstance(record, Vendor | Customer):
        return record_type, party_body(record, options)
    raise KeyError(record.object_type)


def _number(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


def _iso_date(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def sent_entity_id(body: Mapping[str, Any]) -> str | None:
    """The internal id of the ``entity`` a body names, None when it names it by external id.

    NetSuite answers a read with the entity's internal id only, so only an internal id sent can
    be compared with what it stored.
    """
    entity = body.get("entity")
    return str(entity["id"]) if isinstance(entity, dict) and entity.get("id") is not None else None


def stored_document(document: Document, stored: Mapping[str, Any], options: Mapping[str, Any]) -> StoredDocument:
    """What NetSuite holds for ``document``, read back as ``stored`` (``GET …/<recordType>/<id>``).

    ``total`` is NetSuite's ``total``; the currency its internal id mapped back through
    ``options["currency_ids"]`` (an id not mapped reads as ``id:<id>``, a difference); the date
    ``tranDate`` and ``dueDate``; the counterparty ``entity.id``. The lines standing for the
    source's lines are the first ``len(line_items)`` lines of the sublist the mapping wrote
    (``expense`` for bills and purchase orders, ``item`` for invoices); the lines after them are
    the charges :func:`bill_body` / :func:`invoice_body` added, read back as tax, shipping and
    discount (by memo on expense lines, by the configured items on item lines).
    """
    sublist = "item" if isinstance(document, Invoice) else "expense"
    container = stored.get(sublist)
    raw = container.get("items") if isinstance(container, dict) else None
    lines = [line for line in raw or [] if isinstance(line, dict)]
    count = len(document.line_items)
    charges = {"tax": Decimal(0), "shipping": Decimal(0), "discount": Decimal(0)}
    items = {str(options.get(f"{kind}_item_id")): kind for kind in charges if options.get(f"{kind}_item_id")}
    for line in lines[count:]:
        if sublist == "expense":
            kind = str(line.get("memo") or "")
        else:
            item = line.get("item")
            kind = items.get(str(item.get("id")) if isinstance(item, dict) else "", "")
        if kind in charges:
            charges[kind] += _number(line.get("amount"))
    currency = stored.get("currency")
    currency_id = str(currency.get("id")) if isinstance(currency, dict) and currency.get("id") is not None else None
    codes = {str(internal): code for code, internal in (options.get("currency_ids") or {}).items()}
    entity = stored.get("entity")
    total = stored.get("total")
    return StoredDocument(
        total=_number(total) if total is not None else sum((_number(x.get("amount")) for x in lines), Decimal(0)),
        currency=codes.get(currency_id, f"id:{currency_id}") if currency_id is not None else None,
        tax_total=charges["tax"],
        shipping_total=charges["shipping"],
        discount_total=-charges["discount"],
        txn_date=_iso_date(stored.get("tranDate")),
        due_date=_iso_date(stored.get("dueDate")),
        counterparty_id=str(entity["id"]) if isinstance(entity, dict) and entity.get("id") is not None else None,
        lines=tuple(
            StoredLine(amount, line.get("memo") or line.get("description"))
            for line, amount in zip(
                lines[:count], as_source_lines(document, [_number(x.get("amount")) for x in lines[:count]]), strict=True
            )
        ),
    )
