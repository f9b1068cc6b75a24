"""Mercoa ``invoice.*`` → canonical :class:`~contracts.Bill`.

Follows Mercoa's ``InvoiceResponse`` as sent in the ``invoice.created`` webhook
(``shared/seeds/003``, ``shared/samples/mercoa/invoice.created.json``) and the SDK's
``InvoiceWebhook``/``InvoiceStatusChangedWebhook`` envelopes (``shared/reference/sources.md`` §2):

============================  ==========================================
Mercoa                        canonical Bill
============================  ==========================================
``invoice.id``                ``source_id`` (``in_…``)
``invoice.foreignId``         ``custom_fields["foreign_id"]``
``invoice.vendor``            ``vendor`` (id, name, foreignId → accounting_custom_id, email, address)
``invoice.invoiceNumber``     ``bill_number``
``invoice.invoiceDate``       ``bill_date`` (date part of the midnight-UTC timestamp)
``invoice.dueDate``           ``due_date``
``invoice.deductionDate``     ``custom_fields["deduction_date"]`` — a *payment* date, not booked
``invoice.currency``          ``currency``
``invoice.lineItems[]``       ``line_items`` (``glAccountId`` → gl_account.accounting_id); lines of
                              ``category`` TAX / SHIPPING / DISCOUNT (SDK ``InvoiceLineItemCategory``)
                              are totals, not lines: they make ``tax_total`` / ``shipping_total`` /
                              ``discount_total`` and must agree with ``taxAmount``/``shippingAmount``
``invoice.taxAmount``         ``tax_total`` (else the TAX lines, else 0)
``invoice.shippingAmount``    ``shipping_total`` (else the SHIPPING lines, else 0)
``invoice.amount``            ``total``
``invoice.status``            ``status`` (case-normalised; ``CANCELED``/``invoice.deleted`` → void)
``invoice.noteToSelf``        ``memo``
``invoice.metadata``          ``custom_fields`` (prefixed ``metadata.``)
============================  ==========================================

Date semantics (Mercoa ``InvoiceResponse``, seed 003 l.94–97 and l.250–253;
``docs.mercoa.com/api-reference/invoice``):

==========================  ========================================================  ==================
Mercoa field                meaning in Mercoa                                         canonical
==========================  ========================================================  ==================
``invoiceDate``             date printed on the vendor's invoice (document date)      ``bill_date``
``dueDate``                 date the vendor wants to be paid by                       ``due_date``
(none)                      Mercoa has no GL posting date                             ``posting_date``
                                                                                      unset: the ERP posts
                                                                                      on ``bill_date``
``deductionDate``           when funds are scheduled to leave the payer's account     kept in
                            (a payment date)                                          ``custom_fields``
``processedAt``             when Mercoa initiated the payment                         kept in
                                                                                      ``custom_fields``
``settlementDate``          when the funds reach the vendor                           kept in
                                                                                      ``custom_fields``
``serviceStartDate``/``…End``  the period the invoice covers                          line ``service_*``
==========================  ========================================================  ==================

Booking a bill on its ``deductionDate`` would put it in the period it is *paid* in, not the
one it was incurred in; the payment dates belong to the payment (:mod:`.transaction`).

Amounts are JSON numbers in major units; they become ``Decimal`` through their text, so no
float rounding enters. An invoice without line items gets one line for the whole amount
(its GL account then stays unresolved, which the connector reports).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from ledgerflow.contracts import (
    Action,
    Address,
    Bill,
    ContractError,
    LineItem,
    Reference,
    Source,
    VendorRef,
    canonical_id,
)
from ledgerflow.transformers.base import (
    RawEvent,
    SkipEvent,
    as_date,
    as_datetime,
    as_decimal,
    as_object,
    as_objects,
    require,
)

__all__ = ["map_invoice"]

_STATUS = {
    "DRAFT": "draft",
    "NEW": "submitted",
    "APPROVED": "approved",
    "SCHEDULED": "scheduled",
    "PENDING": "scheduled",
    "PAID": "paid",
    "FAILED": "approved",
    "CANCELED": "void",
    "CANCELLED": "void",
    "REFUSED": "void",
    "ARCHIVED": "void",
}


def _vendor(invoice: dict[str, Any]) -> VendorRef:
    vendor = as_object(invoice.get("vendor"), "invoice.vendor")
    vendor_id = vendor.get("id") or invoice.get("vendorId")
    if not vendor_id and not vendor.get("name"):
        raise SkipEvent("invoice has no vendor yet (Mercoa drafts may lack one)")
    profile = as_object(vendor.get("profile"), "invoice.vendor.profile")
    business = as_object(profile.get("business"), "invoice.vendor.profile.business")
    address = as_object(business.get("address"), "invoice.vendor.profile.business.address")
    return VendorRef(
        source_id=vendor_id,
        accounting_custom_id=vendor.get("foreignId"),
        name=vendor.get("name") or business.get("legalBusinessName"),
        email=vendor.get("email") or business.get("email"),
        address=Address(
            line1=address.get("addressLine1"),
            line2=address.get("addressLine2"),
            city=address.get("city"),
            region=address.get("stateOrProvince"),
            postal_code=address.get("postalCode"),
            country=address.get("country"),
        )
        if address
        else None,
    )


_CATEGORY_TOTALS = {"TAX": "tax", "SHIPPING": "shipping", "DISCOUNT": "discount"}
"""Line ``category`` values (SDK ``InvoiceLineItemCategory``) that are document totals, not lines."""


def _lines(invoice: dict[str, Any]) -> tuple[list[LineItem], dict[str, Decimal]]:
    """The invoice's booked lines, and the sums of its TAX / SHIPPING / DISCOUNT category lines.

    EXPENSE, REVENUE, OTHER and uncategorised lines are lines; a discount line's amount counts as
    a positive discount whatever its sign.
    """
    lines: list[LineItem] = []
    sums = {"tax": Decimal(0), "shipping": Decimal(0), "discount": Decimal(0)}
    for index, raw in enumerate(as_objects(invoice.get("lineItems"), "invoice.lineItems")):
        where = f"invoice.lineItems[{index}]"
        amount = as_decimal(require(raw, "amount"), f"{where}.amount")
        total_kind = _CATEGORY_TOTALS.get(str(raw.get("category") or "").upper())
        if total_kind is not None:
            sums[total_kind] += abs(amount) if total_kind == "discount" else amount
            continue
        gl = raw.get("glAccountId")
        lines.append(
            LineItem(
                line_number=len(lines) + 1,
                source_id=raw.get("id"),
                description=raw.get("description") or raw.get("name"),
                quantity=as_decimal(raw["quantity"], f"{where}.quantity") if raw.get("quantity") is not None else None,
                unit_price=as_decimal(raw["unitPrice"], f"{where}.unitPrice")
                if raw.get("unitPrice") is not None
                else None,
                amount=amount,
                gl_account=Reference(accounting_id=str(gl)) if gl else None,
                service_start=str(as_date(raw["serviceStartDate"], "serviceStartDate"))
                if raw.get("serviceStartDate")
                else None,
                service_end=str(as_date(raw["serviceEndDate"], "serviceEndDate"))
                if raw.get("serviceEndDate")
                else None,
            )
        )
    return lines, sums


def _header_amount(invoice: dict[str, Any], field: str, from_lines: Decimal, what: str) -> Decimal:
    """``invoice[field]`` when sent, else the sum of its category lines; both must agree when both exist.

    Raises:
        contracts.ContractError: the header figure and the category lines disagree.
    """
    if invoice.get(field) is None:
        return from_lines
    header = as_decimal(invoice[field], f"invoice.{field}")
    if from_lines and from_lines != header:
        raise ContractError(
            f"Mercoa invoice.{field} is {header} but its {what} line items add up to {from_lines}: "
            "the invoice does not say which is right"
        )
    return header


def map_invoice(event: RawEvent) -> Sequence[Bill]:
    """Map one Mercoa invoice webhook to a :class:`~contracts.Bill`.

    Args:
        event: a raw ``invoice.*`` event; ``event.enrichment["invoice"]``, when present (the
            optional re-fetch), replaces the invoice in the payload.

    Returns:
        One bill.

    Raises:
        SkipEvent: the invoice has no vendor yet or no amount (incomplete draft).
        contracts.ContractError: a required field is missing or malformed.
        pydantic.ValidationError: the bill does not validate (e.g. totals do not reconcile).

    """
    invoice = as_object(event.enrichment.get("invoice") or require(event.payload, "invoice"), "invoice")
    source_id = str(require(invoice, "id"))
    if invoice.get("amount") is None:
        raise SkipEvent("invoice has no amount yet (draft)")
    currency = str(require(invoice, "currency"))
    total = as_decimal(invoice["amount"], "invoice.amount")
    line_items, category_sums = _lines(invoice)
    tax = _header_amount(invoice, "taxAmount", category_sums["tax"], "TAX")
    shipping = _header_amount(invoice, "shippingAmount", category_sums["shipping"], "SHIPPING")
    discount = category_sums["discount"]
    if not line_items:
        line_items = [
            LineItem(line_number=1, description=invoice.get("noteToSelf"), amount=total - tax - shipping + discount)
        ]
    subtotal = sum((line.amount for line in line_items), Decimal(0))

    status_raw = str(
        as_object(event.payload, "webhook body").get("newStatus") or invoice.get("status") or "NEW"
    ).upper()
    status = _STATUS.get(status_raw)
    if status is None:
        raise SkipEvent(f"unknown Mercoa invoice status {status_raw!r}")
    action = Action.VOID if event.event_type == "invoice.deleted" or status == "void" else Action.UPSERT

    metadata = {f"metadata.{k}": str(v) for k, v in as_object(invoice.get("metadata"), "invoice.metadata").items()}
    if invoice.get("foreignId"):
        metadata["foreign_id"] = str(invoice["foreignId"])
    for key, label in (
        ("deductionDate", "deduction_date"),
        ("processedAt", "processed_at"),
        ("settlementDate", "settlement_date"),
    ):
        if invoice.get(key):
            metadata[label] = str(as_date(invoice[key], f"invoice.{key}"))

    return [
        Bill(
            canonical_id=canonical_id(event.tenant, Source.MERCOA, "bill", source_id),
            tenant=event.tenant,
            source=Source.MERCOA,
            source_id=source_id,
            source_event=event.event_type,
            action=action,
            source_updated_at=as_datetime(invoice["updatedAt"], "invoice.updatedAt")
            if invoice.get("updatedAt")
            else None,
            custom_fields=metadata,
            vendor=_vendor(invoice),
            bill_number=invoice.get("invoiceNumber"),
            bill_date=as_date(require(invoice, "invoiceDate"), "invoice.invoiceDate"),
            due_date=as_date(invoice["dueDate"], "invoice.dueDate") if invoice.get("dueDate") else None,
            currency=currency,
            line_items=line_items,
            subtotal=subtotal,
            tax_total=tax,
            shipping_total=shipping,
            discount_total=discount,
            total=total,
            status=status,
            memo=invoice.get("noteToSelf"),
        )
    ]
