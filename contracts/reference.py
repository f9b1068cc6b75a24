"""Reference data read from an ERP (inbound): vendors, customers, GL accounts, tax rates, tracking.

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

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["INBOUND_KINDS", "ReferenceKind", "ReferenceRecord"]

ReferenceKind = Literal["vendor", "customer", "gl_account", "tax_rate", "tracking"]
"""Kinds of reference data the readers publish (one inbound topic each)."""

INBOUND_KINDS: tuple[ReferenceKind, ...] = ("vendor", "customer", "gl_account", "tax_rate", "tracking")
"""Every :data:`ReferenceKind`, in reading order."""


class ReferenceRecord(BaseModel):
    """One reference record as the ERP holds it, read by an ERP reader."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ReferenceKind = Field(description="What the record is: vendor, customer, gl_account, tax_rate or tracking.")
    erp: str = Field(description="ERP kind of the connection it was read from (quickbooks, xero).")
    connection: str = Field(description="The ERP connection name (routing file) it was read from.")
    entity: str = Field(
        description="The ERP's own entity name: QuickBooks Vendor, Account, TaxCode, TaxRate, Class, Department; "
        "Xero Contact, Account, TaxRate, TrackingCategory."
    )
    erp_id: str = Field(
        description="The ERP's id of the record "
        "(QuickBooks Id; Xero ContactID, AccountID, TaxType, TrackingCategoryID)."
    )
    code: str | None = Field(
        default=None,
        description="The code users type for it where the ERP has one: "
        "QuickBooks AcctNum or TaxCode Name, Xero account Code or TaxType.",
    )
    name: str = Field(description="Display name (QuickBooks DisplayName / Name, Xero Name).")
    active: bool = Field(description="False when the ERP marks it inactive or archived.")
    updated_at: datetime | None = Field(
        default=None,
        description="When the ERP last changed it (QuickBooks MetaData.LastUpdatedTime, Xero UpdatedDateUTC); "
        "None for Xero tax rates and tracking categories, which carry no change time.",
    )
    parent_id: str | None = Field(
        default=None, description="The enclosing record's ERP id: QuickBooks ParentRef of a class or department."
    )
    erp_record: dict[str, Any] = Field(description="The record exactly as the ERP answered it (its own JSON).")

    @property
    def key(self) -> str:
        """Kafka key: ``<connection>:<entity>:<erp id>`` (versions of one record stay in order)."""
        return f"{self.connection}:{self.entity}:{self.erp_id}"
