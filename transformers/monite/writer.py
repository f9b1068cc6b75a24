"""Monite source writer: a payable paid in the ERP is marked paid in Monite (tenant option, off by default).

Monite Partner API 2024-05-25 (OpenAPI ``team-monite/monite-sdk:packages/sdk-react/src/api/schema.json``):

===============================================  ========================================  =========================
call                                             body                                      when
===============================================  ========================================  =========================
``GET /payables/{payable_id}``                   —                                         always first: ``status``,
                                                                                           ``amount_due``,
                                                                                           ``amount_paid``,
                                                                                           ``currency``
``POST /payables/{payable_id}/mark_as_paid``     ``CommentPayload`` ``{"comment": …}``     the payment covers the
                                                 (additionalProperties false)              ``amount_due``
``POST /payables/{payable_id}/                   ``PartiallyPaidPayload``                  it covers part of it
mark_as_partially_paid``                         ``{"amount_paid": <minor units>}`` = the
                                                 sum of all payments made (the spec: "not
                                                 only the last one")
===============================================  ========================================  =========================

Headers ``Authorization: Bearer`` (``POST /auth/token``, client credentials), ``X-Monite-Version``
and ``X-Monite-Entity-Id`` (required on every path). ``status`` is a ``PayableStateEnum``: draft,
new, approve_in_progress, waiting_to_be_paid, partially_paid, paid, canceled, rejected. Monite
answers 409 "Payable couldn't be updated due to current state" for a payable that cannot take the
transition: a ``failed`` result with ``source.invalid_state``, not retried. Amounts are integers
in minor units of the payable's currency; an ERP payment in another currency, or an amount finer
than the currency's minor unit, fails with ``source.validation`` (nothing converted or rounded).

Idempotency: a payable already ``paid`` is a ``duplicate`` (nothing sent); each (ERP payment,
payable) is remembered in the write ledger once marked, so a redelivered payment never adds its
amount to ``amount_paid`` twice; payments of one payable are written one at a time (a lock per
payable in the process: ``amount_paid`` is read, added to and written). Monite documents no
idempotency key for these calls.
Receivables (``AppliedDocument.object_type`` ``invoice``) are left alone (``skipped``): Monite
deprecates their partial marking in favour of ``POST /payment_records``, not implemented here.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ledgerflow.contracts import ErrorInfo, Operation, Outcome
from ledgerflow.contracts.common import currency_precision
from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.contracts.reference import AppliedDocument, ReferenceRecord
from ledgerflow.core.outbound.json_api import EnrichmentError
from ledgerflow.transformers.monite.client import MoniteClient
from ledgerflow.transformers.writeback.base import (
    PaymentMarker,
    WriteLedger,
    WriteOutcome,
    classify,
    content_digest,
    write_key,
)

__all__ = ["MoniteWriter", "minor_units"]

SOURCE = "monite"


def minor_units(amount: Decimal, currency: str) -> int | None:
    """``amount`` (major units) in minor units of ``currency``; None when it is finer than the minor unit."""
    scaled = amount.scaleb(currency_precision(currency))
    return int(scaled) if scaled == scaled.to_integral_value() else None


class MoniteWriter(PaymentMarker):
    """Marks Monite payables paid (or partially paid) from payments read from an ERP (one tenant's Monite).

    Args:
        client: the tenant's Monite API client (its ``entity_id`` option is the entity written to).
    """

    source = SOURCE

    def __init__(self, client: MoniteClient) -> None:
        super().__init__()
        self.client = client

    async def mark_locked(self, record: ReferenceRecord, doc: AppliedDocument, ledger: WriteLedger) -> WriteOutcome:
        """Mark Monite payable ``doc`` paid by the amount ``record`` applies to it (in full or in part)."""
        assert doc.source_id is not None
        payable_id = doc.source_id
        key = write_key(record.connection, record.entity, record.erp_id, "payable", payable_id)
        money: dict[str, Any] = {"amount": doc.amount, "currency": record.currency}

        def outcome(operation: Operation, result: Outcome, error: ErrorInfo | None = None) -> WriteOutcome:
            return WriteOutcome("payable", key, operation, result, payable_id, error=error, **money)

        if doc.object_type not in (None, "bill"):
            return outcome(
                Operation.SKIP,
                Outcome.SKIPPED,
                ErrorInfo(
                    code=ErrorCode.OBJECT_UNSUPPORTED,
                    message=f"Monite {doc.object_type} {payable_id}: only payables are marked paid",
                    retriable=False,
                ),
            )
        if await ledger.get(key) is not None:
            return outcome(Operation.SKIP, Outcome.DUPLICATE)
        try:
            payable = await self.client.get(f"/payables/{payable_id}")
            if not isinstance(payable, dict):
                payable = {}
            status = str(payable.get("status", ""))
            if status == "paid":
                await ledger.put(key, payable_id, content_digest({"status": "paid"}))
                return outcome(Operation.SKIP, Outcome.DUPLICATE)
            currency = str(payable.get("currency") or record.currency or "")
            if record.currency and currency != record.currency:
                return outcome(
                    Operation.UPDATE,
                    Outcome.FAILED,
                    ErrorInfo(
                        code=ErrorCode.SOURCE_VALIDATION,
                        message=f"{record.erp} payment {record.erp_id} is in {record.currency}, Monite payable "
                        f"{payable_id} in {currency}: not converted",
                        retriable=False,
                    ),
                )
            applied = minor_units(doc.amount, currency) if currency else None
            if applied is None:
                return outcome(
                    Operation.UPDATE,
                    Outcome.FAILED,
                    ErrorInfo(
                        code=ErrorCode.SOURCE_VALIDATION,
                        message=f"applied amount {doc.amount} is not a whole number of minor units of "
                        f"{currency or 'an unknown currency'}",
                        retriable=False,
                    ),
                )
            due = payable.get("amount_due")
            paid_before = int(payable.get("amount_paid") or 0)
            if isinstance(due, int) and applied < due:
                body: dict[str, Any] = {"amount_paid": paid_before + applied}
                await self.client.post(f"/payables/{payable_id}/mark_as_partially_paid", body)
            else:
                when = f" on {record.paid_on.isoformat()}" if record.paid_on else ""
                body = {"comment": f"Paid in {record.erp} ({record.connection}), payment {record.erp_id}{when}"}
                await self.client.post(f"/payables/{payable_id}/mark_as_paid", body)
        except EnrichmentError as exc:
            error = classify(exc)
            failed = outcome(
                Operation.UPDATE,
                Outcome.FAILED,
                error,
            )
            return WriteOutcome(
                **{**{n: getattr(failed, n) for n in WriteOutcome.__slots__}, "http_status": exc.status}
            )
        await ledger.put(key, payable_id, content_digest(body))
        return outcome(Operation.UPDATE, Outcome.SUCCEEDED)
