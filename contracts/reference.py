"""Reference data and payments read from an ERP (inbound): vendors, GL accounts, tax rates, projects….

Kinds: vendors, customers, GL accounts, tax rates, tracking dimensions, projects and payments.

The ERP readers (``ledgerflow sync-reference``) publish one :class:`ReferenceRecord` per record
they read to ``<prefix>.inbound.<kind>.v1`` (:meth:`ledgerflow.contracts.topics.Topics.inbound`),
key ``<connection>:<entity>:<erp id>``, with the CloudEvents extension ``direction: inbound``
(:func:`ledgerflow.contracts.events.inbound_event_attributes`). These topics are never
consumed by the outbound connectors, so a vendor read from an ERP is not booked back into it.

The ERP's own JSON is kept in :attr:`ReferenceRecord.erp_record` untouched; the other fields are
the few every consumer needs, read by the ERP's reader (``connectors/<erp>/reader.py``, whose
module docstring has the field table).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ledgerflow.contracts.common import Money

__all__ = ["INBOUND_KINDS", "AppliedDocument", "ReferenceKind", "ReferenceRecord"]

ReferenceKind = Literal["vendor", "customer", "gl_account", "tax_rate", "tracking", "project", "payment"]
"""Kinds of reference data the readers publish (one inbound topic each)."""

INBOUND_KINDS: tuple[ReferenceKind, ...] = (
    "vendor",
    "customer",
    "gl_account",
    "tax_rate",
    "tracking",
    "project",
    "payment",
)
"""Every :data:`ReferenceKind`, in reading order (payments last: they point at bills and invoices)."""


class AppliedDocument(BaseModel):
    """One bill or invoice a payment read from an ERP settles (part of), with the source document it came from.

    ``tenant``, ``source``, ``source_id`` and ``object_type`` are filled by the reader from the
    binder when ledgerflow booked the document (its binder key names them); they are None for a
    document ledgerflow did not book, which the source writers then leave alone.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    entity: str = Field(description="ERP entity paid: QuickBooks Bill/Invoice, Xero Invoice, NetSuite vendorBill.")
    erp_id: str = Field(description="The ERP's id of the paid document.")
    amount: Money = Field(description="Amount of this payment applied to the document, major units, payment currency.")
    object_type: str | None = Field(
        default=None, description="Canonical object type ledgerflow booked it from (bill, invoice); None if not ours."
    )
    tenant: str | None = Field(default=None, description="Tenant of the source document; None if not ours.")
    source: str | None = Field(default=None, description="Source system of the document (ingenious, mercoa, monite…).")
    source_id: str | None = Field(default=None, description="The document's id in its source system.")


class ReferenceRecord(BaseModel):
    """One reference record as the ERP holds it, read by an ERP reader."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ReferenceKind = Field(
        description="What the record is: vendor, customer, gl_account, tax_rate, tracking, project or payment."
    )
    erp: str = Field(description="ERP kind of the connection it was read from (quickbooks, xero, netsuite, sap…).")
    connection: str = Field(description="The ERP connection name (routing file) it was read from.")
    entity: str = Field(
        description="The ERP's own entity name: QuickBooks Vendor, Account, TaxCode, Class, BillPayment…; "
        "Xero Contact, Account, TaxRate, TrackingCategory, Payment…; NetSuite vendor, account, department, job, "
        "vendorPayment…; SAP A_BusinessPartner, A_GLAccountInChartOfAccounts, A_CostCenter…; Coupa suppliers, "
        "accounts, tax_codes, lookup_values. Each reader's module docstring lists its own."
    )
    erp_id: str = Field(
        description="The ERP's id of the record "
        "(QuickBooks Id; Xero ContactID, AccountID, TaxType, TrackingCategoryID; NetSuite internal id; "
        "SAP key such as Supplier or GLAccount; Coupa id)."
    )
    code: str | None = Field(
        default=None,
        description="The code users type for it where the ERP has one: "
        "QuickBooks AcctNum or TaxCode Name, Xero account Code or TaxType, NetSuite acctNumber, "
        "SAP G/L account or cost center, Coupa account code.",
    )
    name: str = Field(description="Display name as the ERP shows it (QuickBooks DisplayName / Name, Xero Name…).")
    active: bool = Field(description="False when the ERP marks it inactive or archived.")
    updated_at: datetime | None = Field(
        default=None,
        description="When the ERP last changed it (QuickBooks MetaData.LastUpdatedTime, Xero UpdatedDateUTC, "
        "NetSuite lastModifiedDate, SAP change date, Coupa updated-at); None for snapshot sources, which carry "
        "no change time (Xero tax rates and tracking categories, NetSuite sales tax items, SAP cost centers).",
    )
    parent_id: str | None = Field(
        default=None,
        description="The enclosing record's ERP id: QuickBooks ParentRef of a class, department or project…",
    )
    amount: Money | None = Field(
        default=None, description="Payments: total paid, major units of `currency` (Decimal, serialised as text)."
    )
    currency: str | None = Field(default=None, description="Payments: ISO 4217 currency of `amount`.")
    paid_on: date | None = Field(default=None, description="Payments: the payment (posting) date in the ERP.")
    applied_to: list[AppliedDocument] = Field(
        default_factory=list, description="Payments: the bills / invoices it settles, with the applied amounts."
    )
    erp_record: dict[str, Any] = Field(description="The record exactly as the ERP answered it (its own JSON).")

    @property
    def key(self) -> str:
        """Kafka key: ``<connection>:<entity>:<erp id>`` (versions of one record stay in order)."""
        return f"{self.connection}:{self.entity}:{self.erp_id}"
