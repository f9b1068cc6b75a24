"""``SyncResult``: what a connector did with one canonical record, topic ``ledgerflow.results.v1``.

Modelled on Monite's accounting synced records and Codat's push operations
(``shared/reference/peers.md``): one result per (event, ERP connection), with the outcome, the
ERP's record id and the error when there is one.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ledgerflow.contracts.common import Money
from ledgerflow.contracts.errors import ErrorCode

__all__ = ["Difference", "Direction", "ErrorInfo", "Operation", "Outcome", "SyncResult"]

Direction = Literal["outbound", "inbound"]
"""``outbound``: a source record booked into an ERP; ``inbound``: an ERP record written into a source."""


class Operation(StrEnum):
    """What the connector did (or would have done) in the ERP."""

    CREATE = "create"
    UPDATE = "update"
    VOID = "void"
    SKIP = "skip"


class Outcome(StrEnum):
    """How it ended.

    ``duplicate`` means the record was already booked with the same content: nothing was written.
    ``skipped`` means the ERP connection does not take this object type or action (reason given).
    """

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    DUPLICATE = "duplicate"


class Difference(BaseModel):
    """One field where the ERP's record differs from the canonical document (read-back verification).

    ``field`` names the canonical figure (``total``, ``tax_total``, ``date``, ``line[2].amount``…);
    ``expected`` is the source's value and ``actual`` the ERP's, both as strings (amounts at the
    currency's minor unit, dates ISO 8601).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(description="Canonical field that differs, e.g. `total`, `line[2].amount`.")
    expected: str = Field(description="The source document's value.")
    actual: str = Field(description="The ERP record's value.")


class ErrorInfo(BaseModel):
    """Why an attempt failed: a stable code, the vendor's message, and whether a retry may help."""

    model_config = ConfigDict(extra="forbid")

    code: ErrorCode = Field(
        description="Stable error code (ledgerflow.contracts.errors.ErrorCode), e.g. `erp.validation`, "
        "`reference.unresolved`, `http.429`."
    )
    message: str = Field(description="Human-readable message, the ERP's own text where it sent one.")
    retriable: bool = Field(description="Whether retrying the same request may succeed.")
    vendor_code: str | None = Field(None, description="The ERP's own error code (QuickBooks `6240`…).")
    differences: list[Difference] | None = Field(
        None, description="For `erp.mismatch`: each field where the ERP's record differs from the source."
    )


class SyncResult(BaseModel):
    """The result of handling one record, in either direction.

    Outbound (the default): a canonical record booked into one ERP connection. Inbound
    (``direction="inbound"``): a record read from an ERP connection written into a source.
    For inbound results ``object_type`` is the reference kind (``vendor``, ``gl_account``,
    ``payment``…), ``source`` the source system written to, ``erp``/``connection`` the ERP connection
    the record was read from, ``erp_record_id`` its id there and ``source_record_id`` the id the
    source gave it.
    """

    model_config = ConfigDict(extra="forbid")

    direction: Direction = Field(
        "outbound", description="`outbound`: booked into an ERP; `inbound`: an ERP record written into a source."
    )

    event_id: str = Field(description="CloudEvents `ce_id` of the canonical event handled.")
    canonical_id: str = Field(description="Canonical id of the record.")
    object_type: str = Field(description="Canonical object type, e.g. `bill`.")
    tenant: str = Field(description="Tenant.")
    source: str = Field(description="Source system of the record.")
    erp: str = Field(description="ERP kind (a key of the connector registry: quickbooks, xero, …).")
    connection: str = Field(description="Name of the ERP connection (one consumer group each).")
    operation: Operation = Field(description="Operation performed or attempted.")
    outcome: Outcome = Field(description="How it ended.")
    erp_record_id: str | None = Field(None, description="Id of the record in the ERP.")
    erp_record_version: str | None = Field(None, description="ERP version token (QuickBooks `SyncToken`).")
    source_record_id: str | None = Field(
        None, description="Inbound: id of the record written in the source (INGENIOUS company id, Mercoa invoice id…)."
    )
    attempts: int = Field(ge=0, description="HTTP attempts made for this result (0 when nothing was sent).")
    http_status: int | None = Field(None, description="Status of the last ERP response.")
    error: ErrorInfo | None = Field(None, description="Set when the outcome is `failed` (or why skipped).")
    amount: Money | None = Field(None, description="Document total booked, major units (bills, invoices).")
    currency: str | None = Field(None, description="Currency of `amount`.")
    accepted_at: datetime | None = Field(None, description="When the ingress accepted the webhook (`ce_time`).")
    started_at: datetime = Field(description="When the connector started handling the record.")
    finished_at: datetime = Field(description="When it finished.")

    @property
    def latency_seconds(self) -> Decimal | None:
        """Seconds from webhook accepted to result, when the acceptance time is known."""
        if self.accepted_at is None:
            return None
        return Decimal(str((self.finished_at - self.accepted_at).total_seconds()))
