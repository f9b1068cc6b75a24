"""Canonical records → NetSuite SuiteTalk REST record v1 request bodies (pure functions).

Field names follow the NetSuite REST record API and its OpenAPI description (``vendorBill``,
``vendorBill-expenseElement``, ``vendor``, ``customer``, ``invoice``, ``invoice-itemElement`` in
the account's metadata catalog; captured copy ``specs/netsuite-oas.json``) and the assembled
example in ``reference/erp_apis.md`` §3.2. Amounts are JSON *numbers* in NetSuite (``"type":
"number"``): the bodies keep them as :class:`decimal.Decimal` and
:func:`ledgerflow.connectors.http.dumps_json` writes them as exact JSON numbers (never through ``float``).

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

from ledgerflow.contracts import (
    Bill,
    CanonicalRecord,
    Customer,
    Invoice,
    LineItem,
    Party,
    PurchaseOrder,
    Reference,
    Vendor,
)
from ledgerflow.contracts.common import quantize

__all__ = [
    "RECORD_TYPES",
    "UnresolvedReferenceError",
    "bill_body",
    "body_for",
    "external_id",
    "internal_id_from_location",
    "invoice_body",
    "party_body",
    "purchase_order_body",
]

RECORD_TYPES: dict[str, str] = {
    "bill": "vendorBill",
    "vendor": "vendor",
    "customer": "customer",
    "invoice": "invoice",
    "purchase_order": "purchaseOrder",
}
"""Canonical object type → NetSuite REST record type (path segment under ``/record/v1``)."""

_EID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_EID_MAX = 100

#: Default line segments: canonical line field → NetSuite expense/item line field.
DEFAULT_LINE_SEGMENTS: dict[str, str] = {
    "business_unit": "department",
    "cost_code": "class",
    "project": "customer",
}


class UnresolvedReferenceError(ValueError):
    """A reference the record needs (vendor, GL account, item) has no id NetSuite can resolve."""


def external_id(canonical_id: str) -> str:
    """Derive the stable NetSuite external id of a canonical record.

    NetSuite external ids allow ``[A-Za-z0-9_-]`` only (a pipe breaks ``eid:`` parsing; reference
    §3.3). Every other run of characters becomes ``-``; ids longer than 100 characters keep a
    prefix plus a SHA-256 suffix, so the result is stable and unique per canonical id.

    Example: ``mercoa:bill:inv_8f2a`` → ``mercoa-bill-inv_8f2a``.
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


def _party_ref(ref: Reference, source: str, object_type: str) -> dict[str, str]:
    resolved = _ref(ref)
    if resolved is not None:
        return resolved
    if ref.source_id:
        return {"externalId": external_id(f"{source}:{object_type}:{ref.source_id}")}
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
        resolved = _ref(ref) if isinstance(ref, Reference) else None
        if resolved is not None:
            out[ns_field] = resolved
    if options.get("location_id"):
        out.setdefault("location", {"id": str(options["location_id"])})
    return out


def _expense_lines(
    lines: list[LineItem],
    currency: str,
    options: Mapping[str, Any],
    header_project: Reference | None,
    *,
    extra: Mapping[str, Decimal],
) -> list[dict[str, Any]]:
    default_account = options.get("default_expense_account")
    items: list[dict[str, Any]] = []
    for line in lines:
        account = _ref(line.gl_account) or ({"id": str(default_account)} if default_account else None)
        if account is None:
            raise UnresolvedReferenceError(f"line {line.line_number} has no GL account and no default_expense_account")
        item: dict[str, Any] = {"account": account, "amount": quantize(line.amount, currency)}
        if line.description:
            item["memo"] = line.description
        item.update(_segments(line, options, header_project))
        items.append(item)
    # Header-level charges become their own expense lines so the bill total matches the source.
    for kind, amount in extra.items():
        if amount == 0:
            continue
        account_id = options.get(f"{kind}_account")
        if not account_id:
            raise UnresolvedReferenceError(
                f"bill has a {kind} amount of {amount} but the connection has no {kind}_account"
            )
        signed = -amount if kind == "discount" else amount
        items.append({"account": {"id": str(account_id)}, "amount": quantize(signed, currency), "memo": kind})
    return items


def _header(record: CanonicalRecord, options: Mapping[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"externalId": external_id(record.canonical_id)}
    if options.get("subsidiary_id"):
        body["subsidiary"] = {"id": str(options["subsidiary_id"])}
    return body


def _currency(code: str, options: Mapping[str, Any]) -> dict[str, str] | None:
    ids: Mapping[str, Any] = options.get("currency_ids", {})
    return {"id": str(ids[code])} if code in ids else None


def bill_body(bill: Bill, options: Mapping[str, Any]) -> dict[str, Any]:
    """Map a canonical :class:`~contracts.Bill` to a NetSuite ``vendorBill`` body.

    Lines go to the ``expense`` sublist (GL-account lines, reference §3.2); tax, shipping and
    discount become extra expense lines on ``options["tax_account"]``/``shipping_account``/
    ``discount_account`` so NetSuite's total equals :attr:`Bill.total`. ``tranDate`` is the posting
    date when given (NetSuite's posting date), else the bill date.

    Options: ``subsidiary_id``, ``location_id``, ``currency_ids`` (ISO code → internal id),
    ``default_expense_account``, ``line_segments`` (canonical line field → NetSuite line field).

    Raises:
        UnresolvedReferenceError: the vendor or a GL account cannot be resolved.

    """
    body = _header(bill, options)
    body["entity"] = _party_ref(bill.vendor, bill.source, "vendor")
    body["tranDate"] = _date(bill.posting_date or bill.bill_date)
    if bill.bill_number:
        body["tranId"] = bill.bill_number[:45]
    if bill.due_date:
        body["dueDate"] = _date(bill.due_date)
    if bill.memo:
        body["memo"] = bill.memo
    if (currency := _currency(bill.currency, options)) is not None:
        body["currency"] = currency
    extra = {"tax": bill.tax_total, "shipping": bill.shipping_total, "discount": bill.discount_total}
    body["expense"] = {"items": _expense_lines(bill.line_items, bill.currency, options, bill.project, extra=extra)}
    return body


def purchase_order_body(order: PurchaseOrder, options: Mapping[str, Any]) -> dict[str, Any]:
    """Map a canonical :class:`~contracts.PurchaseOrder` to a NetSuite ``purchaseOrder`` body.

    Same line rules as :func:`bill_body` (expense sublist, tax on ``options["tax_account"]``).

    Raises:
        UnresolvedReferenceError: the vendor or a GL account cannot be resolved.

    """
    body = _header(order, options)
    body["entity"] = _party_ref(order.vendor, order.source, "vendor")
    body["tranDate"] = _date(order.order_date)
    if order.number:
        body["tranId"] = order.number[:45]
    if order.title:
        body["memo"] = order.title
    if (currency := _currency(order.currency, options)) is not None:
        body["currency"] = currency
    body["expense"] = {
        "items": _expense_lines(
            order.line_items, order.currency, options, order.project, extra={"tax": order.tax_total}
        )
    }
    return body


def invoice_body(invoice: Invoice, options: Mapping[str, Any]) -> dict[str, Any]:
    """Map a canonical AR :class:`~contracts.Invoice` to a NetSuite ``invoice`` body.

    NetSuite invoices carry item lines (``item.items`` with ``item``, ``quantity``, ``rate``,
    ``amount``, ``description``); a line without an item uses ``options["default_item_id"]``.

    Raises:
        UnresolvedReferenceError: the customer or an item cannot be resolved.

    """
    body = _header(invoice, options)
    body["entity"] = _party_ref(invoice.customer, invoice.source, "customer")
    body["tranDate"] = _date(invoice.invoice_date)
    if invoice.invoice_number:
        body["tranId"] = invoice.invoice_number[:45]
    if invoice.due_date:
        body["dueDate"] = _date(invoice.due_date)
    if invoice.memo:
        body["memo"] = invoice.memo
    if (currency := _currency(invoice.currency, options)) is not None:
        body["currency"] = currency
    default_item = options.get("default_item_id")
    items: list[dict[str, Any]] = []
    for line in invoice.line_items:
        item_ref = _ref(line.item) or ({"id": str(default_item)} if default_item else None)
        if item_ref is None:
            raise UnresolvedReferenceError(f"invoice line {line.line_number} has no item and no default_item_id")
        element: dict[str, Any] = {"item": item_ref, "amount": quantize(line.amount, invoice.currency)}
        if line.quantity is not None:
            element["quantity"] = line.quantity
        if line.unit_price is not None:
            element["rate"] = line.unit_price
        if line.description:
            element["description"] = line.description
        element.update(_segments(line, {**options, "line_segments": {"business_unit": "department"}}, None))
        items.append(element)
    body["item"] = {"items": items}
    return body


def party_body(party: Party, options: Mapping[str, Any]) -> dict[str, Any]:
    """Map a canonical :class:`~contracts.Vendor` or :class:`~contracts.Customer` to a NetSuite entity body.

    ``companyName`` = name, ``legalName``, ``email``, ``phone``, ``isInactive`` = not active,
    ``subsidiary`` from ``options["subsidiary_id"]`` (mandatory in OneWorld accounts).
    """
    body = _header(party, options)
    body["companyName"] = party.name[:83]
    if party.legal_name and isinstance(party, Vendor):
        body["legalName"] = party.legal_name
    if party.email:
        body["email"] = party.email
    if party.phone:
        body["phone"] = party.phone
    body["isInactive"] = not party.active
    if party.currency and (currency := _currency(party.currency, options)) is not None:
        body["currency"] = currency
    return body


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
