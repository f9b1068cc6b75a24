"""Mercoa source writer: an invoice paid in the ERP is marked ``PAID`` in Mercoa (tenant option, off by default).

Mercoa's documented invoice update is ``POST /invoice/{invoiceId}`` with an ``InvoiceUpdateRequest``
body, every field optional (``mercoa-finance`` SDK ``InvoiceClient.UpdateAsync``,
``InvoiceTypes/Types/InvoiceUpdateRequest.cs``); invoice statuses are ``DRAFT``, ``NEW``,
``APPROVED``, ``REFUSED``, ``SCHEDULED``, ``PENDING``, ``CANCELED``, ``PAID``, ``FAILED``,
``ARCHIVED`` (``sources.md`` §2.2). The writer sends:

==================  ==============================================  ===================================
field               value                                           basis
==================  ==============================================  ===================================
``status``          ``"PAID"``                                      InvoiceUpdateRequest.status
``settlementDate``  the ERP payment date (``paid_on``), midnight    InvoiceUpdateRequest.settlementDate
                    UTC, ISO 8601 ("Date of funds settlement")
==================  ==============================================  ===================================

Before writing, the invoice is read (``GET /invoice/{invoiceId}``): an invoice already ``PAID`` is
a ``duplicate`` (nothing sent), so a redelivered payment marks nothing twice. Mercoa has no
partially paid status: the ERP payments applied to an invoice are counted in the write ledger
(each once), and while they cover less than the invoice ``amount`` the result is ``skipped`` with
``source.partial_payment``; the payment that completes it marks the invoice ``PAID``. Which
statuses Mercoa lets move to ``PAID`` is not in the public material:
the writer does not guess, Mercoa's refusal (4xx) becomes a ``failed`` result with its message.
Mercoa documents no idempotency key; the read-before-write and the write ledger stand in for one.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from ledgerflow.contracts import ErrorInfo, Operation, Outcome
from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.contracts.reference import AppliedDocument, ReferenceRecord
from ledgerflow.core.outbound.json_api import EnrichmentError
from ledgerflow.transformers.mercoa.client import MercoaClient
from ledgerflow.transformers.writeback.base import (
    PaymentMarker,
    WriteLedger,
    WriteOutcome,
    classify,
    content_digest,
    write_key,
)

__all__ = ["MercoaWriter"]

SOURCE = "mercoa"


class MercoaWriter(PaymentMarker):
    """Marks Mercoa invoices paid from payments read from an ERP (one tenant's Mercoa).

    Args:
        client: the tenant's Mercoa API client.
    """

    source = SOURCE

    def __init__(self, client: MercoaClient) -> None:
        super().__init__()
        self.client = client

    async def mark_locked(self, record: ReferenceRecord, doc: AppliedDocument, ledger: WriteLedger) -> WriteOutcome:
        """Mark Mercoa invoice ``doc`` PAID once the ERP payments counted against it cover its amount."""
        assert doc.source_id is not None
        invoice_id = doc.source_id
        key = write_key(record.connection, record.entity, record.erp_id, "invoice", invoice_id)
        money: dict[str, Any] = {"amount": doc.amount, "currency": record.currency}
        known = await ledger.get(key)
        if known is not None:
            return WriteOutcome("invoice", key, Operation.SKIP, Outcome.DUPLICATE, invoice_id, **money)
        try:
            invoice = await self.client.invoice(invoice_id)
            status = str(invoice.get("status", "")).upper() if isinstance(invoice, dict) else ""
            if status == "PAID":
                await ledger.put(key, invoice_id, content_digest({"status": "PAID"}))
                return WriteOutcome("invoice", key, Operation.SKIP, Outcome.DUPLICATE, invoice_id, **money)
            total = _decimal(invoice.get("amount") if isinstance(invoice, dict) else None)
            counted = await ledger.applied(invoice_id)
            counted[key] = doc.amount
            paid = sum(counted.values(), Decimal(0))
            if total is not None and paid < total:
                await ledger.apply(invoice_id, key, doc.amount)
                return WriteOutcome(
                    "invoice",
                    key,
                    Operation.SKIP,
                    Outcome.SKIPPED,
                    invoice_id,
                    error=ErrorInfo(
                        code=ErrorCode.SOURCE_PARTIAL_PAYMENT,
                        message=f"{record.erp} payments cover {paid} of the {total} of Mercoa invoice {invoice_id} "
                        f"(this one {doc.amount}); Mercoa has no partially paid status: left {status or 'as is'} "
                        "until the payments cover it",
                        retriable=False,
                    ),
                    **money,
                )
            body: dict[str, Any] = {"status": "PAID"}
            if record.paid_on is not None:
                body["settlementDate"] = (
                    datetime.combine(record.paid_on, time(), UTC).isoformat().replace("+00:00", "Z")
                )
            updated = await self.client.update_invoice(invoice_id, body)
        except EnrichmentError as exc:
            error = classify(exc)
            return WriteOutcome(
                "invoice",
                key,
                Operation.UPDATE,
                Outcome.FAILED,
                invoice_id,
                http_status=exc.status,
                error=error,
                **money,
            )
        got = str(updated.get("status", "")).upper() if isinstance(updated, dict) else ""
        if got != "PAID":
            return WriteOutcome(
                "invoice",
                key,
                Operation.UPDATE,
                Outcome.FAILED,
                invoice_id,
                error=ErrorInfo(
                    code=ErrorCode.SOURCE_INVALID_STATE,
                    message=f"Mercoa kept invoice {invoice_id} in status {got or '(none)'} after the update to PAID",
                    retriable=False,
                ),
                **money,
            )
        await ledger.put(key, invoice_id, content_digest(body))
        await ledger.apply(invoice_id, key, doc.amount)
        return WriteOutcome("invoice", key, Operation.UPDATE, Outcome.SUCCEEDED, invoice_id, **money)


def _decimal(value: Any) -> Decimal | None:
    """Mercoa's ``amount`` (major units, a JSON number) as an exact Decimal; None when absent or not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None
