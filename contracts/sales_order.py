"""Canonical ``sales_order``: a customer order before invoicing, topic ``ledgerflow.sales_order.v1``.

Mirrors NetSuite ``salesOrder`` (QuickBooks and Xero have no sales order: their connectors skip
it). Source: AccountingSuite SalesOrder.
"""

from __future__ import annotations

from datetime import date
from typing import ClassVar

from pydantic import Field

from ledgerflow.contracts.common import Reference, StatusLiteral
from ledgerflow.contracts.document import Document

__all__ = ["SalesOrder"]


class SalesOrder(Document):
    """A sales order; amounts ``Decimal`` in :attr:`currency`, reconciled like an invoice."""

    object_type: ClassVar[str] = "sales_order"

    customer: Reference = Field(description="The customer ordering.")
    number: str | None = Field(None, description="Order number.")
    order_date: date = Field(description="Order date.")
    status: StatusLiteral = Field("approved", description="Status in the source.")
    memo: str | None = Field(None, description="Memo.")
