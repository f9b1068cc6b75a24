"""Canonical ``bill``: an accounts-payable (vendor) invoice, topic ``ledgerflow.bill.v1``.

Mirrors what the ERPs book as a bill: QuickBooks ``Bill``, Xero ``Invoice`` of ``Type: ACCPAY``,
NetSuite ``vendorBill``, SAP ``A_SupplierInvoice``, Coupa ``invoice``. Sources: Mercoa
``invoice.*``, Monite ``payable``, INGENIOUS.BUILD Vendor Invoice.
"""

from __future__ import annotations

from datetime import date
from typing import ClassVar, Self

from pydantic import Field, model_validator

from ledgerflow.contracts.common import Address, Reference, StatusLiteral
from ledgerflow.contracts.document import Document

__all__ = ["Bill", "VendorRef"]


class VendorRef(Reference):
    """The vendor a bill or payment is owed to, with what is needed to match or create it in an ERP."""

    email: str | None = Field(None, description="Vendor e-mail address.")
    tax_id: str | None = Field(None, description="Vendor tax id (EIN, VAT number).")
    address: Address | None = Field(None, description="Vendor address, used to match by name and place.")


class Bill(Document):
    """An AP bill: what the company owes a vendor, with its line items and totals.

    All amounts are in :attr:`currency`, major units, as ``Decimal``. The model validates that
    line amounts, tax and total reconcile (see :func:`ledgerflow.contracts.lines.reconcile`).

    Raises:
        pydantic.ValidationError: on a missing field, a bad date or currency, or totals that
            do not reconcile.

    """

    object_type: ClassVar[str] = "bill"

    vendor: VendorRef = Field(description="The vendor the bill is owed to.")
    bill_number: str | None = Field(None, description="The vendor's invoice number (QuickBooks `DocNumber`).")
    bill_date: date = Field(description="Invoice date printed on the vendor's invoice.")
    due_date: date | None = Field(None, description="Date the bill is due for payment.")
    posting_date: date | None = Field(None, description="Accounting (GL posting) date, when it differs.")
    status: StatusLiteral = Field("approved", description="Approval/payment status in the source.")
    memo: str | None = Field(None, description="Note or memo for the bill.")
    project: Reference | None = Field(None, description="Project or job the whole bill belongs to.")
    business_unit: Reference | None = Field(None, description="Business unit / department / location.")
    purchase_order: Reference | None = Field(None, description="Purchase order or vendor contract billed.")
    ap_account: Reference | None = Field(None, description="Accounts-payable control account, if not default.")

    @model_validator(mode="after")
    def _dates_in_order(self) -> Self:
        if self.due_date is not None and self.due_date < self.bill_date:
            raise ValueError(f"due date {self.due_date} is before the bill date {self.bill_date}")
        return self
