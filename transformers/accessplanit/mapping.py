"""accessplanit API v2 Invoices (with Invoice Items) and Transactions → canonical invoice and payment.

Fields are the ones the accessplanit Financial API feeds document (``sources.md`` §5.1, seed
004): the feeds name them with spaces ("Invoice ID"); the JSON spelling used here drops the
spaces (``InvoiceID``), as the ingress does when it reads the record id
(``ingress/sources/accessplanit.py``). The webhook payload shape and the Transactions field
table are NOT FOUND publicly (§5.1–5.2: copies truncated), so the fields marked *assumed*
follow the same spelling; a tenant whose payloads spell a field differently sets
``options.field_names`` (``{InvoiceID: "Invoice ID"}``:
:func:`~ledgerflow.transformers.base.with_field_names`). The record may sit at the top level or
under ``data``.

=============================================  =====================================================
accessplanit                                   canonical
=============================================  =====================================================
Invoices ``InvoiceID``                         invoice ``source_id``
``InvoiceRef``                                 ``invoice_number``
``IssuerID``                                   ``customer.source_id`` (the invoiced account); its
                                               name from the API v2 account (:func:`enrich`)
``Amount`` (pence/cents), ``Tax`` (pence)      ``subtotal`` (net), ``tax_total`` (see :func:`_amounts`)
``DateGenerated`` / ``DateDue``                ``invoice_date`` / ``due_date``
``DateUpdated``                                ``source_updated_at``
``InvoiceStatus``                              ``status`` (cancel/void/credit → void), else from
                                               ``AmountPaid`` / ``AmountOutstanding``
``AmountPaid`` (pence)                         ``amount_paid``
``PONumber``, ``TargetLink``                   ``custom_fields`` (po_number, target_link)
``InvoiceItems[]``: ``InvoiceItemID``,
``LineDescription``, ``InvoiceItemAmount``,
``InvoiceItemTax`` (pence)                     ``line_items`` (amount, tax_amount)
``Currency`` *assumed*, else the tenant's
``options.currency`` (via enrichment)          ``currency``
Transactions ``TransactionID`` *assumed*       payment ``source_id``
``InvoiceID``, ``Amount`` (pence),
``TransactionType`` (Payment/Refund),
``TransactionDate``, ``PaymentMethod``,
``Reference`` — *assumed*                      ``applied_to``, ``amount``, ``kind``, ``payment_date``,
                                               ``method``, ``reference``
=============================================  =====================================================

The HTTP method is the action (§5.2): POST/PUT/PATCH → upsert, DELETE → void. Amounts are minor
units → major-unit ``Decimal`` by the currency's precision (CLDR: GBP 2, JPY 0, KWD 3), exactly:
a fractional minor-unit amount is refused, never rounded. A transaction whose ``TransactionType``
says refund, or whose amount is negative, is a refund (seed 004: "payments and refunds"):
``kind = refund`` with the absolute amount — money paid *back* to the customer, which an ERP books
as a refund (or refuses with the reason), never as money received.

Dates (seed 004; ``sources.md`` §5.1):

=====================  ==========================================  ===========================
accessplanit           meaning                                      canonical
=====================  ==========================================  ===========================
``DateGenerated``      the day the invoice was generated (issued)   ``invoice_date``
``DateDue``            payment due date (PUT-able)                  ``due_date``
``DateUpdated``        last change of the record                    ``source_updated_at``
``TransactionDate``    the day the payment/refund was taken         ``payment_date``
(none)                 no posting date                              the ERP posts on the document date
=====================  ==========================================  ===========================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from ledgerflow.contracts import (
    Action,
    AppliedTo,
    CanonicalRecord,
    ContractError,
    Invoice,
    LineItem,
    Payment,
    Reference,
    Source,
    canonical_id,
    currency_precision,
)
from ledgerflow.transformers.base import (
    Enrichers,
    RawEvent,
    as_date,
    as_datetime,
    as_decimal,
    as_object,
    as_objects,
    require,
    with_field_names,
)

__all__ = ["enrich", "map_invoice", "map_transaction", "minor_to_major"]


def minor_to_major(value: Any, currency: str, what: str) -> Decimal:
    """A minor-unit amount (pence, cents) as a major-unit ``Decimal`` (``1250``, ``GBP`` → ``12.50``).

    Raises:
        contracts.ContractError: not a whole number of minor units, or an unknown currency.

    """
    amount = as_decimal(value, what)
    if abs(amount) >= Decimal(10) ** 15:  # 10 trillion major units: far beyond any invoice
        raise ContractError(f"{what} is out of range: {value!r}")
    if amount != amount.to_integral_value():
        raise ContractError(f"{what} is not a whole number of minor units: {value!r}")
    try:
        digits = currency_precision(currency)
    except Exception as exc:  # Babel raises several types for unknown codes
        raise ContractError(f"{what}: unknown currency {currency!r}") from exc
    return amount.scaleb(-digits)


async def enrich(event: RawEvent, enrichers: Enrichers) -> RawEvent:
    """Add the tenant's default currency and fetch the customer the record names only by id.

    ``enrichment["currency"]``: the tenant's ``options.currency`` (for records without
    ``Currency``). ``enrichment["customer"]``: the account ``IssuerID`` names, from the API v2
    (:class:`~ledgerflow.transformers.accessplanit.client.AccessplanitClient`), when the tenant configured
    ``api_base_url`` and ``api_key`` — QuickBooks and Xero need the customer's name to find or
    create it. A DELETE carries nothing to book against a customer and is not enriched.

    Raises:
        ledgerflow.core.outbound.json_api.EnrichmentError: the API call failed after retries.

    """
    found: dict[str, Any] = {}
    currency = enrichers.get("accessplanit").for_tenant(event.tenant)
    if currency:
        found["currency"] = currency
    names = ((enrichers.get("defaults").for_tenant(event.tenant) or {}).get("accessplanit") or {}).get("field_names")
    if names:
        found["field_names"] = names
    client = enrichers.get("accessplanit_api").for_tenant(event.tenant)
    body = event.payload.get("data") if isinstance(event.payload, dict) else None
    record = body if isinstance(body, dict) else event.payload
    if isinstance(record, dict) and names:
        record = with_field_names(record, names)
    customer_id = _text(record.get("IssuerID")) if isinstance(record, dict) else None
    if client is not None and customer_id and event.method.upper() != "DELETE":
        found["customer"] = await client.customer(customer_id)
    if not found:
        return event
    return dataclasses.replace(event, enrichment={**event.enrichment, **found})


_NAME_KEYS = ("Name", "AccountName", "CompanyName", "OrganisationName")
"""Account name fields read from the customer record, first present wins (*assumed* spellings)."""


def _customer(event: RawEvent, record: dict[str, Any]) -> Reference:
    """The customer reference: ``IssuerID`` and, when enriched, the account's name."""
    customer_id = _text(record.get("IssuerID"))
    account = as_object(event.enrichment.get("customer"), "customer")
    name = next((str(account[k]) for k in _NAME_KEYS if _text(account.get(k))), None)
    if name is None:
        person = " ".join(str(account[k]) for k in ("FirstName", "Surname") if _text(account.get(k)))
        name = person or None
    if not customer_id and not name:
        raise ContractError("accessplanit record has no IssuerID (the customer)")
    return Reference(source_id=customer_id, name=name)


def _amounts(record: dict[str, Any], currency: str) -> tuple[Decimal, Decimal]:
    """``(net, tax)`` of an invoice, in major units.

    The feed documents ``Amount`` and ``Tax`` in pence/cents but not whether ``Amount`` includes
    the tax (``sources.md`` §5.1). When ``AmountPaid`` and ``AmountOutstanding`` are both sent
    their sum is the gross amount and decides it: ``Amount + Tax`` = gross → ``Amount`` is net;
    ``Amount`` = gross → net is ``Amount − Tax``; anything else is refused with the figures.
    Without them ``Amount`` is taken as net (the Invoice Items' amounts must then add up to it).

    Raises:
        contracts.ContractError: amounts missing, not whole minor units, or inconsistent.
    """
    amount = minor_to_major(require(record, "Amount"), currency, "Amount")
    tax = minor_to_major(record["Tax"], currency, "Tax") if record.get("Tax") is not None else Decimal(0)
    if record.get("AmountPaid") is None or record.get("AmountOutstanding") is None:
        return amount, tax
    gross = minor_to_major(record["AmountPaid"], currency, "AmountPaid") + minor_to_major(
        record["AmountOutstanding"], currency, "AmountOutstanding"
    )
    if amount + tax == gross:
        return amount, tax
    if amount == gross:
        return amount - tax, tax
    raise ContractError(
        f"accessplanit invoice: Amount {amount} and Tax {tax} {currency} agree with neither reading of "
        f"AmountPaid + AmountOutstanding = {gross} {currency}"
    )


def _record(event: RawEvent) -> dict[str, Any]:
    """The record (top level or under ``data``) with the tenant's ``options.field_names`` applied."""
    body = event.payload
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        body = body["data"]
    if not isinstance(body, dict):
        raise ContractError("accessplanit record is not a JSON object")
    names = event.enrichment.get("field_names")
    if not isinstance(names, dict) or not names:
        return body
    body = with_field_names(body, names)
    items = body.get("InvoiceItems")
    if isinstance(items, list):
        body["InvoiceItems"] = [with_field_names(i, names) if isinstance(i, dict) else i for i in items]
    return body


def _currency(event: RawEvent, record: dict[str, Any]) -> str:
    currency = record.get("Currency") or event.enrichment.get("currency")
    if not currency:
        raise ContractError("accessplanit record has no Currency and the tenant sets no options.currency")
    return str(currency)


def _action(event: RawEvent) -> Action:
    return Action.VOID if event.method.upper() == "DELETE" else Action.UPSERT


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def map_invoice(event: RawEvent) -> Sequence[CanonicalRecord]:
    """An accessplanit invoice with its items → :class:`~contracts.Invoice`.

    Raises:
        contracts.ContractError: missing ``InvoiceID``, ``Amount``, ``DateGenerated``, currency;
            amounts not in whole minor units.
        pydantic.ValidationError: item amounts do not add up to ``Amount``, or Amount + Tax mismatch.

    """
    record = _record(event)
    source_id = str(require(record, "InvoiceID"))
    currency = _currency(event, record)
    subtotal, tax = _amounts(record, currency)
    lines: list[LineItem] = []
    for index, item in enumerate(as_objects(record.get("InvoiceItems"), "InvoiceItems"), start=1):
        where = f"InvoiceItems[{index - 1}]"
        lines.append(
            LineItem(
                line_number=index,
                source_id=_text(item.get("InvoiceItemID")),
                description=_text(item.get("LineDescription")),
                amount=minor_to_major(require(item, "InvoiceItemAmount"), currency, f"{where}.InvoiceItemAmount"),
                tax_amount=minor_to_major(item["InvoiceItemTax"], currency, f"{where}.InvoiceItemTax")
                if item.get("InvoiceItemTax") is not None
                else None,
            )
        )
    if not lines:
        lines = [LineItem(line_number=1, description=_text(record.get("InvoiceRef")), amount=subtotal)]
    total = subtotal + tax
    paid = minor_to_major(record["AmountPaid"], currency, "AmountPaid") if record.get("AmountPaid") else Decimal(0)
    status_text = str(record.get("InvoiceStatus") or "").lower()
    if _action(event) == Action.VOID or any(w in status_text for w in ("cancel", "void", "credit")):
        status = "void"
    elif paid >= total > 0 or status_text == "paid":
        status = "paid"
    elif paid > 0:
        status = "partially_paid"
    else:
        status = "approved"
    custom = {
        label: str(record[key])
        for key, label in (("PONumber", "po_number"), ("TargetLink", "target_link"))
        if _text(record.get(key))
    }
    if status_text:
        custom["invoice_status"] = str(record["InvoiceStatus"])
    return [
        Invoice(
            canonical_id=canonical_id(event.tenant, Source.ACCESSPLANIT, "invoice", source_id),
            tenant=event.tenant,
            source=Source.ACCESSPLANIT,
            source_id=source_id,
            source_event=event.event_type,
            action=Action.VOID if status == "void" else Action.UPSERT,
            source_updated_at=as_datetime(record["DateUpdated"], "DateUpdated") if record.get("DateUpdated") else None,
            custom_fields=custom,
            customer=_customer(event, record),
            invoice_number=_text(record.get("InvoiceRef")),
            invoice_date=as_date(require(record, "DateGenerated"), "DateGenerated"),
            due_date=as_date(record["DateDue"], "DateDue") if record.get("DateDue") else None,
            currency=currency,
            line_items=lines,
            subtotal=subtotal,
            tax_total=tax,
            total=total,
            amount_paid=paid,
            status=status,
        )
    ]


def map_transaction(event: RawEvent) -> Sequence[CanonicalRecord]:
    """An accessplanit transaction (payment or refund on an invoice) → :class:`~contracts.Payment`.

    Raises:
        contracts.ContractError: missing ``TransactionID``, ``Amount``, date or currency; a zero amount.

    """
    record = _record(event)
    source_id = str(require(record, "TransactionID"))
    currency = _currency(event, record)
    signed = minor_to_major(require(record, "Amount"), currency, "Amount")
    if signed == 0:
        raise ContractError("accessplanit transaction amount is zero")
    kind_text = str(record.get("TransactionType") or "").lower()
    refund = "refund" in kind_text or signed < 0
    amount = abs(signed)
    invoice_id = _text(record.get("InvoiceID"))
    when = record.get("TransactionDate") or record.get("DateCreated") or record.get("DateUpdated")
    if not when:
        raise ContractError("accessplanit transaction has no TransactionDate")
    return [
        Payment(
            canonical_id=canonical_id(event.tenant, Source.ACCESSPLANIT, "payment", source_id),
            tenant=event.tenant,
            source=Source.ACCESSPLANIT,
            source_id=source_id,
            source_event=event.event_type,
            action=_action(event),
            source_updated_at=as_datetime(record["DateUpdated"], "DateUpdated") if record.get("DateUpdated") else None,
            direction="incoming",
            kind="refund" if refund else "payment",
            party=_customer(event, record),
            payment_date=as_date(when, "TransactionDate"),
            currency=currency,
            amount=amount,
            status="reversed" if _action(event) == Action.VOID else "completed",
            method=_text(record.get("PaymentMethod")),
            reference=_text(record.get("Reference")),
            applied_to=[
                AppliedTo(
                    document=Reference(source_id=invoice_id),
                    document_canonical_id=canonical_id(event.tenant, Source.ACCESSPLANIT, "invoice", invoice_id),
                    amount=amount,
                )
            ]
            if invoice_id
            else [],
        )
    ]
