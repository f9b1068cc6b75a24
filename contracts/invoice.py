"""Canonical ``invoice``: an accounts-receivable (sales) invoice, topic ``ledgerflow.invoice.v1``.

Mirrors QuickBooks ``Invoice``, Xero ``Invoice`` of ``Type: ACCREC``, NetSuite ``invoice``.
Sources: Monite ``receivable`` (type invoice), AccountingSuite SalesInvoice/CashSale,
accessplanit Invoices.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import ClassVar

from pydantic import Field

from ledgerflow.contracts.common import Money, Reference, StatusLiteral
from ledgerflow.contracts.document import Document

__all__ = ["Invoice"]


class Invoice(Document):
    """An AR invoice to a customer; amounts in :attr:`currency`, major units, ``Decimal``.

    Raises:
        pydantic.ValidationError: when lines, tax and total do not reconcile.

    """

    object_type: ClassVar[str] = "invoice"

    customer: Reference = Field(description="The customer billed.")
    invoice_number: str | None = Field(None, description="Invoice number shown to the customer.")
    invoice_date: date = Field(description="Issue date.")
    due_date: date | None = Field(None, description="Payment due date.")
    amount_paid: Money = Field(Decimal(0), description="Amount already received against the invoice.")
    status: StatusLiteral = Field("approved", description="Status in the source.")
    memo: str | None = Field(None, description="Customer memo.")
    project: Reference | None = Field(None, description="Project or job.")
    sales_order: Reference | None = Field(None, description="Sales order the invoice fulfils.")
