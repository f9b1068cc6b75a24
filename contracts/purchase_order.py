"""Canonical ``purchase_order`` and ``purchase_order_change``: commitments to a vendor.

Topics ``ledgerflow.purchase_order.v1`` and ``ledgerflow.purchase_order_change.v1``. Mirrors
QuickBooks ``PurchaseOrder``, Xero ``PurchaseOrder``, NetSuite ``purchaseOrder``. Source:
INGENIOUS.BUILD Vendor Contract (a subcontract or PO) and Vendor Contract Change (a change order).
"""

from __future__ import annotations

from datetime import date
from typing import ClassVar

from pydantic import Field

from ledgerflow.contracts.bill import VendorRef
from ledgerflow.contracts.common import Money, Reference, StatusLiteral
from ledgerflow.contracts.document import Document

__all__ = ["PurchaseOrder", "PurchaseOrderChange"]


class _Commitment(Document):
    vendor: VendorRef = Field(description="The vendor committed to.")
    number: str | None = Field(None, description="PO, contract or change-order number.")
    title: str | None = Field(None, description="Title or description.")
    order_date: date = Field(description="Date the commitment was made or approved.")
    status: StatusLiteral = Field("approved", description="Status in the source.")
    project: Reference | None = Field(None, description="Project the commitment belongs to.")
    retention_percent: Money | None = Field(None, description="Retainage withheld, in percent.")


class PurchaseOrder(_Commitment):
    """A purchase order or vendor contract (subcontract); amounts ``Decimal`` in :attr:`currency`."""

    object_type: ClassVar[str] = "purchase_order"


class PurchaseOrderChange(_Commitment):
    """A change order against a purchase order; line amounts are the *change* (may be negative)."""

    object_type: ClassVar[str] = "purchase_order_change"

    purchase_order: Reference = Field(description="The purchase order or contract being changed.")
