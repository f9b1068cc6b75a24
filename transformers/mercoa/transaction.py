"""Mercoa ``transaction.*`` → canonical :class:`~contracts.Payment`.

Follows ``TransactionWebhook`` (``eventType``, ``transaction``) from the SDK fixture
``mercoa-finance/csharp`` ``TransactionWebhookTest.cs`` and ``sources.md`` §2.1–2.2:

===============================================  ==============================================
Mercoa ``transaction``                           canonical Payment
===============================================  ==============================================
``id``                                           ``source_id`` (``trx_…``)
``status`` (CREATED, PENDING, COMPLETED,
FAILED, REVERSED…) / eventType                   ``status`` pending/completed/failed/reversed;
                                                 ``transaction.returned`` → ``kind = return``
``amount`` / ``currency`` (when sent), else
the sum of ``invoices[].amount``, their currency ``amount``, ``currency``
``invoices[]``                                   ``applied_to`` (bill canonical ids)
``invoices[0].vendor`` (payee)                   ``party`` (``foreignId`` → accounting_custom_id)
``invoices[0].settlementDate`` / ``deductionDate``
/ ``transaction.createdAt``                      ``payment_date``
``paymentDestination.type``                      ``method`` (bankAccount, check, …)
``paymentSource`` (id, accountName)              ``bank_account`` (no account number)
``updatedAt``                                    ``source_updated_at``
===============================================  ==============================================

Mercoa transactions move money from the payer entity to the vendor: ``direction = outgoing``,
unless the payee is the platform's own customer (an AR receipt) → ``incoming`` from the payer.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from ledgerflow.contracts import AppliedTo, CanonicalRecord, ContractError, Payment, Reference, Source, canonical_id
from ledgerflow.transformers.base import RawEvent, as_date, as_datetime, as_decimal, require

__all__ = ["map_transaction"]

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


def _party(entity: dict[str, Any] | None, fallback_id: Any) -> Reference:
    entity = entity or {}
    party_id = entity.get("id") or fallback_id
    if not party_id and not entity.get("name"):
        raise ContractError("Mercoa transaction has no payee or payer")
    return Reference(
        source_id=str(party_id) if party_id else None,
        accounting_custom_id=entity.get("foreignId"),
        name=entity.get("name"),
    )


def map_transaction(event: RawEvent) -> Sequence[CanonicalRecord]:
    """Map one Mercoa transaction webhook to a :class:`~contracts.Payment`.

    Raises:
        contracts.ContractError: no transaction id, no invoices and no amount, unknown status,
            no currency.
        pydantic.ValidationError: a non-positive amount or bad currency.

    """
    trx = require(event.payload, "transaction")
    source_id = str(require(trx, "id"))
    invoices = [inv for inv in trx.get("invoices") or [] if isinstance(inv, dict)]
    suffix = event.event_type.rsplit(".", 1)[-1].upper()
    status_raw = str(trx.get("status") or suffix).upper()
    if suffix in {"REVERSED", "RETURNED", "FAILED", "COMPLETED"}:
        status_raw = suffix
    status = _STATUS.get(status_raw)
    if status is None:
        raise ContractError(f"unknown Mercoa transaction status {status_raw!r}")
    if trx.get("amount") is not None:
        amount = as_decimal(trx["amount"], "transaction.amount")
    elif invoices:
        amount = sum(
            (as_decimal(require(inv, "amount"), f"transaction.invoices[{i}].amount") for i, inv in enumerate(invoices)),
            Decimal(0),
        )
    else:
        raise ContractError("Mercoa transaction has neither amount nor invoices")
    currency = trx.get("currency") or (invoices[0].get("currency") if invoices else None)
    if not currency:
        raise ContractError("Mercoa transaction has no currency")
    first = invoices[0] if invoices else {}
    vendor = first.get("vendor") or {}
    incoming = bool(vendor.get("isCustomer"))
    party = _party(first.get("payer"), first.get("payerId")) if incoming else _party(vendor, first.get("vendorId"))
    when = first.get("settlementDate") if status == "completed" else None
    when = when or first.get("deductionDate") or trx.get("createdAt")
    if not when:
        raise ContractError("Mercoa transaction has no settlement, deduction or creation date")
    source = trx.get("paymentSource") or {}
    destination = trx.get("paymentDestination") or {}
    return [
        Payment(
            canonical_id=canonical_id(Source.MERCOA, "payment", source_id),
            tenant=event.tenant,
            source=Source.MERCOA,
            source_id=source_id,
            source_event=event.event_type,
            source_updated_at=as_datetime(trx["updatedAt"], "transaction.updatedAt") if trx.get("updatedAt") else None,
            direction="incoming" if incoming else "outgoing",
            kind="return" if event.event_type == "transaction.returned" else "payment",
            party=party,
            payment_date=as_date(when, "transaction date"),
            currency=str(currency),
            amount=amount,
            status=status,
            method=destination.get("type") or trx.get("type"),
            reference=first.get("invoiceNumber") if len(invoices) == 1 else None,
            bank_account=Reference(source_id=source.get("id"), name=source.get("accountName")) if source else None,
            applied_to=[
                AppliedTo(
                    document=Reference(source_id=str(require(inv, "id")), name=inv.get("invoiceNumber")),
                    document_canonical_id=canonical_id(Source.MERCOA, "bill", str(inv["id"])),
                    amount=as_decimal(require(inv, "amount"), f"transaction.invoices[{i}].amount"),
                )
                for i, inv in enumerate(invoices)
            ],
        )
    ]
