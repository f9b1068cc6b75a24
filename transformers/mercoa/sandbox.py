"""A local Mercoa API sandbox: invoices read and updated, as the source writer marks them paid.

Strict to what Mercoa documents (``sources.md`` §2; ``mercoa-finance`` SDK): ``Authorization:
Bearer <API key>`` on every call (401 otherwise); ``GET /invoice/{invoiceId}`` → the invoice
(404 unknown); ``POST /invoice/{invoiceId}`` with an ``InvoiceUpdateRequest`` — only its fields
accepted (400 naming any other), ``status`` one of the ``InvoiceStatus`` values,
``settlementDate``/``dueDate``/``invoiceDate``/``deductionDate`` ISO 8601 date-times. Which
statuses may move to ``PAID`` is not in the public material: this sandbox lets ``APPROVED``,
``SCHEDULED``, ``PENDING`` and ``FAILED`` invoices become ``PAID`` and answers 400 for the others
(ASSUMPTION, so a draft or a canceled invoice is never marked paid in tests). The invoice keeps
what was sent and its ``updatedAt`` moves.

Faults: :mod:`ledgerflow.transformers.writeback.faults` (``POST /_sandbox/faults``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Request

from ledgerflow.transformers.writeback.faults import Faults, install_faults

__all__ = ["INVOICE_STATUSES", "MercoaSandbox"]

INVOICE_STATUSES = frozenset(
    {"DRAFT", "NEW", "APPROVED", "REFUSED", "SCHEDULED", "PENDING", "PAID", "CANCELED", "FAILED", "ARCHIVED"}
)
"""Mercoa ``InvoiceStatus`` values (``sources.md`` §2.2)."""

_UPDATE_FIELDS = frozenset(
    {
        "lineItems", "creatorEntityId", "status", "amount", "currency", "invoiceDate", "deductionDate",
        "settlementDate", "dueDate", "invoiceNumber", "noteToSelf", "serviceStartDate", "serviceEndDate",
        "payerId", "paymentSourceId", "vendorId", "paymentDestinationId", "paymentDestinationOptions",
        "approvers", "metadata", "foreignId", "document", "uploadedImage", "creatorUserId", "failureType",
        "fees", "batchPayment", "paymentSchedule", "vendorCreditIds", "taxAmount", "shippingAmount",
    }
)  # fmt: skip
"""``InvoiceUpdateRequest`` fields (``mercoa-finance/csharp`` ``InvoiceTypes/Types/InvoiceUpdateRequest.cs``)."""

_DATES = ("invoiceDate", "deductionDate", "settlementDate", "dueDate", "serviceStartDate", "serviceEndDate")
_PAYABLE_FROM = frozenset({"APPROVED", "SCHEDULED", "PENDING", "FAILED"})


@dataclass
class MercoaSandbox:
    """The sandbox's state: invoices by id and faults; :meth:`app` serves it.

    Args:
        api_key: the accepted API key (bearer).
    """

    api_key: str = "mercoa-sandbox-key"
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)

    def add_invoice(self, invoice_id: str, amount: float, currency: str = "USD", status: str = "APPROVED") -> None:
        """Seed an invoice (``amount`` in major units, as Mercoa's ``amount``)."""
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        self.invoices[invoice_id] = {
            "id": invoice_id,
            "status": status,
            "amount": amount,
            "currency": currency,
            "createdAt": now,
            "updatedAt": now,
        }

    def app(self) -> FastAPI:
        """The FastAPI app serving this state."""
        app = FastAPI(title="Mercoa API sandbox")
        install_faults(app, self.faults)

        def check(authorization: str) -> None:
            if authorization != f"Bearer {self.api_key}":
                raise HTTPException(401, "invalid API key")

        @app.get("/invoice/{invoice_id}")
        async def get_invoice(invoice_id: str, authorization: str = Header("")) -> Any:
            check(authorization)
            if invoice_id not in self.invoices:
                raise HTTPException(404, f"invoice {invoice_id} not found")
            return self.invoices[invoice_id]

        @app.post("/invoice/{invoice_id}")
        async def update_invoice(invoice_id: str, request: Request, authorization: str = Header("")) -> Any:
            check(authorization)
            invoice = self.invoices.get(invoice_id)
            if invoice is None:
                raise HTTPException(404, f"invoice {invoice_id} not found")
            body = await request.json()
            if not isinstance(body, dict):
                raise HTTPException(400, "body must be an InvoiceUpdateRequest object")
            unknown = sorted(set(body) - _UPDATE_FIELDS)
            if unknown:
                raise HTTPException(400, f"unknown InvoiceUpdateRequest field(s): {', '.join(unknown)}")
            status = body.get("status")
            if status is not None and status not in INVOICE_STATUSES:
                raise HTTPException(400, f"status {status!r} is not an InvoiceStatus")
            for name in _DATES:
                if name in body:
                    try:
                        datetime.fromisoformat(str(body[name]).replace("Z", "+00:00"))
                    except ValueError:
                        raise HTTPException(400, f"{name} must be an ISO 8601 date-time") from None
            if status == "PAID" and invoice["status"] != "PAID" and invoice["status"] not in _PAYABLE_FROM:
                raise HTTPException(400, f"invoice in status {invoice['status']} cannot be marked PAID")
            invoice.update(body)
            invoice["updatedAt"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            return invoice

        return app
