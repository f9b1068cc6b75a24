"""Canonical ``payment``: an AP bill payment or an AR receipt/refund, topic ``ledgerflow.payment.v1``.

Mirrors QuickBooks ``BillPayment``/``Payment``, Xero ``Payment``, NetSuite ``vendorPayment``/
``customerPayment``. Sources: Mercoa ``transaction.*``, Monite payment records, AccountingSuite
CashReceipt/CashSale, accessplanit Transactions.
"""

from __future__ import annotations

from datetime import date
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from ledgerflow.contracts.common import CanonicalRecord, CurrencyCode, Money, Reference

__all__ = ["AppliedTo", "Payment"]


class AppliedTo(BaseModel):
    """The part of a payment applied to one bill or invoice."""

    model_config = ConfigDict(extra="forbid")

    document: Reference = Field(description="The bill or invoice paid (source id = its source id).")
    document_canonical_id: str | None = Field(None, description="Canonical id of that bill or invoice.")
    amount: Money = Field(description="Amount applied, in the payment currency.")


class Payment(CanonicalRecord):
    """Money moved to a vendor (``direction = outgoing``) or from a customer (``incoming``).

    ``amount`` is positive; a refund is ``kind = refund`` with a positive amount.
    """

    object_type: ClassVar[str] = "payment"

    direction: Literal["outgoing", "incoming"] = Field(description="AP payment (outgoing) or AR receipt.")
    kind: Literal["payment", "refund", "return"] = Field("payment", description="Payment, refund or return.")
    party: Reference = Field(description="Vendor (outgoing) or customer (incoming).")
    payment_date: date = Field(description="Date the payment was made or received.")
    currency: CurrencyCode = Field(description="ISO 4217 currency.")
    amount: Money = Field(gt=0, description="Amount paid, major units, positive.")
    status: Literal["pending", "completed", "failed", "reversed"] = Field(
        "completed", description="Settlement status in the source."
    )
    method: str | None = Field(None, description="Payment method: ACH, check, card, cash, …")
    reference: str | None = Field(None, description="Payment reference or check number.")
    bank_account: Reference | None = Field(None, description="Bank/GL account the money moved through.")
    applied_to: list[AppliedTo] = Field(default_factory=list, description="Bills or invoices settled.")
