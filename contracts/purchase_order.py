"""Canonical ``purchase_order`` and ``purchase_order_change``: commitments to a vendor.

Topics ``ledgerflow.purchase_order.v1`` and ``ledgerflow.purchase_order_change.v1``. Mirrors
QuickBooks ``PurchaseOrder``, Xero ``PurchaseOrder``, NetSuite ``purchaseOrder``. Source:
INGENIOUS.BUILD Vendor Contract (a subcontract or PO) and Vendor Contract Change (a change order).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import ClassVar, Self

from pydantic import Field, model_validator

from contracts.bill import VendorRef
from contracts.common import CanonicalRecord, CurrencyCode, Money, Reference, StatusLiteral
from contracts.lines import LineItem, reconcile

__all__ = ["PurchaseOrder", "PurchaseOrderChange"]


class _Commitment(CanonicalRecord):
    vendor: VendorRef = Field(description="The vendor committed to.")
    number: str | None = Field(None, description="PO, contract or change-order number.")
    title: str | None = Field(None, description="Title or description.")
    order_date: date = Field(description="Date the commitment was made or approved.")
    currency: CurrencyCode = Field(description="ISO 4217 currency.")
    line_items: list[LineItem] = Field(min_length=1, description="Commitment lines (cost codes, amounts).")
    subtotal: Money = Field(description="Sum of line amounts.")
    tax_total: Money = Field(Decimal(0), description="Total tax.")
    total: Money = Field(description="Committed amount: subtotal + tax.")
    status: StatusLiteral = Field("approved", description="Status in the source.")
    project: Reference | None = Field(None, description="Project the commitment belongs to.")
    retention_percent: Money | None = Field(None, description="Retainage withheld, in percent.")

    @model_validator(mode="after")
    def _reconciles(self) -> Self:
        reconcile(
            currency=self.currency,
            line_items=self.line_items,
            subtotal=self.subtotal,
            tax_total=self.tax_total,
            total=self.total,
            what=f"{self.object_type} {self.canonical_id}",
        )
        return self


class PurchaseOrder(_Commitment):
    """A purchase order or vendor contract (subcontract); amounts ``Decimal`` in :attr:`currency`."""

    object_type: ClassVar[str] = "purchase_order"


class PurchaseOrderChange(_Commitment):
    """A change order against a purchase order; line amounts are the *change* (may be negative)."""

    object_type: ClassVar[str] = "purchase_order_change"

    purchase_order: Reference = Field(description="The purchase order or contract being changed.")
