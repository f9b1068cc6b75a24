"""Canonical ``invoice``: an accounts-receivable (sales) invoice, topic ``ledgerflow.invoice.v1``.

Mirrors QuickBooks ``Invoice``, Xero ``Invoice`` of ``Type: ACCREC``, NetSuite ``invoice``.
Sources: Monite ``receivable`` (type invoice), AccountingSuite SalesInvoice/CashSale,
accessplanit Invoices.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import ClassVar, Self

from pydantic import Field, model_validator

from contracts.common import CanonicalRecord, CurrencyCode, Money, Reference, StatusLiteral
from contracts.lines import LineItem, reconcile

__all__ = ["Invoice"]


class Invoice(CanonicalRecord):
    """An AR invoice to a customer; amounts in :attr:`currency`, major units, ``Decimal``.

    Raises:
        pydantic.ValidationError: when lines, tax and total do not reconcile.

    """

    object_type: ClassVar[str] = "invoice"

    customer: Reference = Field(description="The customer billed.")
    invoice_number: str | None = Field(None, description="Invoice number shown to the customer.")
    invoice_date: date = Field(description="Issue date.")
    due_date: date | None = Field(None, description="Payment due date.")
    currency: CurrencyCode = Field(description="ISO 4217 currency of every amount.")
    line_items: list[LineItem] = Field(min_length=1, description="Invoice lines.")
    subtotal: Money = Field(description="Sum of line amounts before tax.")
    tax_total: Money = Field(Decimal(0), description="Total tax.")
    shipping_total: Money = Field(Decimal(0), description="Shipping charged.")
    discount_total: Money = Field(Decimal(0), description="Discounts given.")
    total: Money = Field(description="Total due: subtotal + tax + shipping - discount.")
    amount_paid: Money = Field(Decimal(0), description="Amount already received against the invoice.")
    status: StatusLiteral = Field("approved", description="Status in the source.")
    memo: str | None = Field(None, description="Customer memo.")
    project: Reference | None = Field(None, description="Project or job.")
    sales_order: Reference | None = Field(None, description="Sales order the invoice fulfils.")

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
            what=f"invoice {self.canonical_id}",
        )
        return self
