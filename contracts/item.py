"""Canonical ``item``: a product or service, topic ``ledgerflow.item.v1``.

Mirrors QuickBooks ``Item``, Xero ``Item``, NetSuite item records. Source: AccountingSuite Item.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ledgerflow.contracts.common import CanonicalRecord, CurrencyCode, Money, Reference

__all__ = ["Item"]


class Item(CanonicalRecord):
    """A product or service that can appear on lines; prices are ``Decimal`` in :attr:`currency`."""

    object_type: ClassVar[str] = "item"

    code: str | None = Field(None, description="Item code / SKU.")
    name: str = Field(min_length=1, description="Item name.")
    description: str | None = Field(None, description="Sales description.")
    kind: Literal["inventory", "non_inventory", "service", "other"] = Field("other", description="Item type.")
    currency: CurrencyCode | None = Field(None, description="Currency of the prices.")
    sales_price: Money | None = Field(None, description="Default sales price per unit.")
    purchase_cost: Money | None = Field(None, description="Default purchase cost per unit.")
    income_account: Reference | None = Field(None, description="Revenue GL account.")
    expense_account: Reference | None = Field(None, description="Expense / COGS GL account.")
    active: bool = Field(True, description="False when deleted or inactive in the source.")
