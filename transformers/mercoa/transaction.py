"""Mercoa ``transaction.*`` → canonical :class:`~contracts.Payment` — only money that moved.

Follows ``TransactionWebhook`` (``eventType``, ``transaction``) from the SDK fixture
``mercoa-finance/csharp`` ``TransactionWebhookTest.cs``, the SDK's ``TransactionStatus`` enum
(CREATED, PENDING, QUEUED, COMPLETED, FAILED, REVERSED, CANCELED) and ``sources.md`` §2.1–2.2:

===============================================  ==============================================
Mercoa ``transaction``                           canonical Payment
===============================================  ==============================================
``id``                                           ``source_id`` (``trx_…``)
``status`` / eventType suffix                    see *Status* below
``amount`` (unit decided by the invoices, *Units*)
``currency``, else the sum of ``invoices[].amount``
(major units) and their currency                 ``amount``, ``currency``
``invoices[]``                                   ``applied_to`` (bill canonical ids, major units)
``vendor`` / ``invoices[0].vendor`` (payee)      ``party`` (``foreignId`` → accounting_custom_id)
``payer`` (when the payee is a customer)         ``party`` of an incoming payment
dates, see *Dates*                               ``payment_date``
``paymentDestination.type``                      ``method`` (bankAccount, check, …)
``paymentSource`` (id, accountName)              ``bank_account`` (no account number)
``updatedAt``                                    ``source_updated_at``
===============================================  ==============================================

*Status.* Only a settled transaction is booked. ``CREATED``, ``PENDING``, ``QUEUED`` (and
``transaction.created``/``.pending``) are skipped with that reason: no money has moved yet.
``COMPLETED`` → ``upsert`` with ``status = completed``. ``FAILED``, ``CANCELED``, ``REVERSED``
and the ``transaction.failed``/``.returned``/``.reversed`` events → ``action = void`` with
``status = failed``/``reversed`` (``kind = return`` for a return): the connector voids or
reverses the payment it booked when the transaction completed, and books nothing when it
never did.

*Units.* Mercoa does not state the unit of ``transaction.amount``: the SDK types it as a bare
number (``mercoa-finance/python`` ``TransactionResponseBase.amount: float``; invoice and line
amounts are documented "in major units"), while the API reference's invoice example (seed 003
l.56 and l.254–260; ``shared/samples/mercoa/invoice.created.json``) shows an invoice of
``amount: 100`` USD paid by a ``COMPLETED`` transaction of ``amount: 10000`` USD — minor units.
So the unit is decided by the invoices the transaction pays: the amount must equal the sum of
their (major-unit) amounts read either as minor units converted by the currency's precision
(CLDR) or as major units; when it matches neither, the record is refused with the figures,
never booked. A transaction without invoices is read in the unit the tenant configures
(``options.transaction_amount_unit``: ``minor`` or ``major``), else refused with that reason.

*Dates* (``InvoiceResponse`` fields of the paid invoice, seed 003 l.94–97 and l.250–253; the
SDK's ``InvoiceResponse``: ``deductionDate`` is the "initial date when funds are scheduled to be
deducted from payer's account. The actual deduction date may differ from this date, and will be
reflected in the processedAt field"):

======================  =================================================  =========================
Mercoa                  meaning                                            ``payment_date`` of
======================  =================================================  =========================
``processedAt``         when Mercoa initiated the payment (funds leave)    outgoing: 1st choice
``deductionDate``       when funds are scheduled to leave the payer        outgoing: 2nd choice
``settlementDate``      when funds reach the vendor                        incoming: 1st choice
``updatedAt``           when Mercoa last changed the transaction           fallback (then
                        (completed, failed…)                               ``createdAt``)
======================  =================================================  =========================

An outgoing (AP) payment is dated when the funds leave the payer's account; an incoming one
when they arrive.

Mercoa transactions move money from the payer entity to the vendor: ``direction = outgoing``,
unless the payee is the platform's own customer (an AR receipt) → ``incoming`` from the payer.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from ledgerflow.contracts import (
    Action,
    AppliedTo,
    CanonicalRecord,
    ContractError,
    Payment,
    Reference,
    Source,
    canonical_id,
    currency_precision,
    quantize,
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

__all__ = ["map_transaction", "transaction_amount"]

_STATUS = {
    "CREATED": "pending",
    "PENDING": "pending",
    "PROCESSING": "pending",
    "QUEUED": "pending",
    "COMPLETED": "completed",
    "FAILED": "failed",
    "CANCELED": "failed",
    "CANCELLED": "failed",
    "REVERSED": "reversed",
    "RETURNED": "reversed",
}
_EVENT_STATUS = {"COMPLETED", "FAILED", "REVERSED", "RETURNED", "PENDING", "CREATED"}


def _party(value: Any, fallback_id: Any, what: str) -> Reference:
    entity = as_object(value, what)
    party_id = entity.get("id") or fallback_id
    if not party_id and not entity.get("name"):
        raise ContractError("Mercoa transaction has no payee or payer")
    return Reference(
        source_id=str(party_id) if party_id else None,
        accounting_custom_id=entity.get("foreignId"),
        name=entity.get("name"),
    )


def transaction_amount(
    trx: dict[str, Any], invoices: list[dict[str, Any]], unit: str | None = None
) -> tuple[Decimal, str]:
    """The amount (major units, ``Decimal``) and currency of a Mercoa transaction (see *Units*).

    Args:
        trx: the ``transaction`` object.
        invoices: its ``invoices`` (major-unit amounts).
        unit: the tenant's ``transaction_amount_unit`` (``minor``/``major``) for a transaction
            without invoices.

    Raises:
        contracts.ContractError: no amount and no invoices, no currency, an amount that matches its
            invoices in neither unit, or no invoices and no configured unit.

    """
    currency = trx.get("currency") or (invoices[0].get("currency") if invoices else None)
    if not currency:
        raise ContractError("Mercoa transaction has no currency")
    currency = str(currency).upper()
    invoice_sum = (
        sum(
            (as_decimal(require(inv, "amount"), f"transaction.invoices[{i}].amount") for i, inv in enumerate(invoices)),
            Decimal(0),
        )
        if invoices
        else None
    )
    if trx.get("amount") is None:
        if invoice_sum is None:
            raise ContractError("Mercoa transaction has neither amount nor invoices")
        return invoice_sum, currency
    raw = as_decimal(trx["amount"], "transaction.amount")
    try:
        as_minor = raw.scaleb(-currency_precision(currency))
    except Exception as exc:  # Babel raises several types for unknown codes
        raise ContractError(f"Mercoa transaction: unknown currency {currency!r}") from exc
    if invoice_sum is None:
        if unit == "major":
            return raw, currency
        if unit == "minor" and raw == raw.to_integral_value():
            return as_minor, currency
        raise ContractError(
            f"Mercoa transaction.amount {trx['amount']} {currency} pays no invoice, so its unit cannot be checked: "
            "set the tenant's mercoa options.transaction_amount_unit to minor or major"
        )
    if raw == raw.to_integral_value() and quantize(as_minor, currency) == quantize(invoice_sum, currency):
        return as_minor, currency
    if quantize(raw, currency) == quantize(invoice_sum, currency):
        return raw, currency
    raise ContractError(
        f"Mercoa transaction.amount {trx['amount']} {currency} matches the {invoice_sum} {currency} of the invoices "
        f"it pays neither in minor units ({as_minor}) nor in major units"
    )


def _status(event: RawEvent, trx: dict[str, Any]) -> str:
    suffix = event.event_type.rsplit(".", 1)[-1].upper()
    status_raw = suffix if suffix in _EVENT_STATUS else str(trx.get("status") or suffix).upper()
    status = _STATUS.get(status_raw)
    if status is None:
        raise ContractError(f"unknown Mercoa transaction status {status_raw!r}")
    return status


def map_transaction(event: RawEvent) -> Sequence[CanonicalRecord]:
    """Map one Mercoa transaction webhook to a :class:`~contracts.Payment` (see the module table).

    Raises:
        SkipEvent: the transaction is not settled yet (created, pending, queued).
        contracts.ContractError: no transaction id, no invoices and no amount, unknown status,
            no currency, no date, an amount that does not match its invoices.
        pydantic.ValidationError: a non-positive amount or bad currency.

    """
    trx = as_object(require(event.payload, "transaction"), "transaction")
    source_id = str(require(trx, "id"))
    status = _status(event, trx)
    if status == "pending":
        raise SkipEvent(
            f"Mercoa transaction {source_id} is {str(trx.get('status') or event.event_type)!r}: not settled, "
            "booked when it completes"
        )
    invoices = as_objects(trx.get("invoices"), "transaction.invoices")
    unit = event.enrichment.get("transaction_amount_unit")
    amount, currency = transaction_amount(trx, invoices, str(unit) if unit else None)
    first = invoices[0] if invoices else {}
    vendor = as_object(trx.get("vendor") or first.get("vendor"), "transaction vendor")
    incoming = bool(vendor.get("isCustomer"))
    if incoming:
        party = _party(
            trx.get("payer") or first.get("payer"), trx.get("payerId") or first.get("payerId"), "transaction payer"
        )
    else:
        party = _party(vendor, trx.get("vendorId") or first.get("vendorId"), "transaction vendor")
    dates = [first.get("processedAt"), first.get("deductionDate"), trx.get("updatedAt"), trx.get("createdAt")]
    if incoming:
        dates.insert(0, first.get("settlementDate"))
    when = next((d for d in dates if d), None)
    if not when:
        raise ContractError("Mercoa transaction has no processed, deduction, settlement or update date")
    reversal = status in {"failed", "reversed"}
    source = as_object(trx.get("paymentSource"), "transaction.paymentSource")
    destination = as_object(trx.get("paymentDestination"), "transaction.paymentDestination")
    return [
        Payment(
            canonical_id=canonical_id(event.tenant, Source.MERCOA, "payment", source_id),
            tenant=event.tenant,
            source=Source.MERCOA,
            source_id=source_id,
            source_event=event.event_type,
            action=Action.VOID if reversal else Action.UPSERT,
            source_updated_at=as_datetime(trx["updatedAt"], "transaction.updatedAt") if trx.get("updatedAt") else None,
            direction="incoming" if incoming else "outgoing",
            kind="return" if event.event_type.lower() == "transaction.returned" else "payment",
            party=party,
            payment_date=as_date(when, "transaction date"),
            currency=currency,
            amount=amount,
            status=status,
            method=destination.get("type") or trx.get("type"),
            reference=first.get("invoiceNumber") if len(invoices) == 1 else None,
            bank_account=Reference(source_id=source.get("id"), name=source.get("accountName")) if source else None,
            applied_to=[
                AppliedTo(
                    document=Reference(source_id=str(require(inv, "id")), name=inv.get("invoiceNumber")),
                    document_canonical_id=canonical_id(event.tenant, Source.MERCOA, "bill", str(inv["id"])),
                    amount=as_decimal(require(inv, "amount"), f"transaction.invoices[{i}].amount"),
                )
                for i, inv in enumerate(invoices)
            ],
        )
    ]
