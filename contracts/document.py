"""``Document``: the base of every canonical record with line items and totals.

Bills, invoices, sales orders, purchase orders and change orders share the same money fields and
the same rule: lines, tax, shipping and discount reconcile with the total to the currency's
precision (:func:`ledgerflow.contracts.lines.reconcile`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Self

from pydantic import Field, model_validator

from ledgerflow.contracts.common import CanonicalRecord, CurrencyCode, Money
from ledgerflow.contracts.lines import LineItem, header_tax, reconcile

__all__ = ["Document"]


class Document(CanonicalRecord):
    """A record with line items and totals; every amount in :attr:`currency`, major units, ``Decimal``.

    Raises:
        pydantic.ValidationError: when lines, tax, shipping, discount and total do not reconcile.
    """

    currency: CurrencyCode = Field(description="ISO 4217 currency of every amount on the document.")
    line_items: list[LineItem] = Field(min_length=1, description="The document's lines, at least one.")
    subtotal: Money = Field(description="Sum of line amounts before tax.")
    tax_total: Money = Field(Decimal(0), description="Total tax.")
    shipping_total: Money = Field(Decimal(0), description="Shipping or freight charged.")
    discount_total: Money = Field(Decimal(0), description="Discounts deducted.")
    total: Money = Field(description="subtotal + tax + shipping - discount (tax not added when tax_inclusive).")
    tax_inclusive: bool = Field(
        False,
        description="Whether line amounts (and so the subtotal) include tax; tax_total is then the part that is tax.",
    )

    @model_validator(mode="after")
    def _reconciles(self) -> Self:
        reconcile(
            currency=self.currency,
            line_items=self.line_items,
            subtotal=self.subtotal,
            tax_total=self.tax_total,
            shipping_total=self.shipping_total,
            discount_total=self.discount_total,
            tax_inclusive=self.tax_inclusive,
            total=self.total,
            what=f"{self.object_type} {self.canonical_id}",
        )
        return self

    @property
    def header_tax(self) -> Decimal:
        """Tax no line carries: ``tax_total`` minus the lines' ``tax_amount`` (document currency)."""
        return header_tax(self.line_items, self.tax_total)
