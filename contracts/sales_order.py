"""Canonical ``sales_order``: a customer order before invoicing, topic ``ledgerflow.sales_order.v1``.

Mirrors NetSuite ``salesOrder`` (QuickBooks and Xero have no sales order: their connectors skip
it). Source: AccountingSuite SalesOrder.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import ClassVar, Self

from pydantic import Field, model_validator

from contracts.common import CanonicalRecord, CurrencyCode, Money, Reference, StatusLiteral
from contracts.lines import LineItem, reconcile

__all__ = ["SalesOrder"]


class SalesOrder(CanonicalRecord):
    """A sales order; amounts ``Decimal`` in :attr:`currency`, reconciled like an invoice."""

    object_type: ClassVar[str] = "sales_order"

    customer: Reference = Field(description="The customer ordering.")
    number: str | None = Field(None, description="Order number.")
    order_date: date = Field(description="Order date.")
    currency: CurrencyCode = Field(description="ISO 4217 currency.")
    line_items: list[LineItem] = Field(min_length=1, description="Order lines.")
    subtotal: Money = Field(description="Sum of line amounts.")
    tax_total: Money = Field(Decimal(0), description="Total tax.")
    shipping_total: Money = Field(Decimal(0), description="Shipping charged.")
    discount_total: Money = Field(Decimal(0), description="Discounts given.")
    total: Money = Field(description="Order total.")
    status: StatusLiteral = Field("approved", description="Status in the source.")
    memo: str | None = Field(None, description="Memo.")

    @model_validator(mode="after")
    def _reconciles(self) -> Self:
        reconcile(
            currency=self.currency,
            line_items=self.line_items,
            subtotal=self.subtotal,
            tax_total=self.tax_total,
            shipping_total=self.shipping_total,
            discount_total=self.discount_total,
            total=self.total,
            what=f"sales order {self.canonical_id}",
        )
        return self
