"""Tables of the audit store (schema owned by the Alembic migrations in ``migrations/``).

``sync_records``
    One row per (canonical id, ERP connection): the latest outcome and ERP record id, the
    document amount and currency, first/last attempt times and the number of attempts; its
    ``direction`` (``outbound``: booked into the ERP; ``inbound``: a record read from that ERP
    written into a source, with the source's ``source_record_id``).
    ``id`` is deterministic (:func:`sync_record_id`), so every replica computes the same one.
``sync_attempts``
    One row per ``SyncResult`` event received, unique on the result's CloudEvents ``ce_id``:
    a redelivered result is stored once.
``canonical_records``
    The latest canonical record per canonical id, as published on ``ledgerflow.<object>.v1``
    (JSON body and CloudEvents headers): what ``POST /v1/sync-records/{id}/retry`` re-publishes;
    its source id and document number (bill/invoice/PO number) are kept for search.
``dead_letters``
    One row per message on a ``ledgerflow.dlq.<stage>`` topic (unique on its topic, partition
    and offset): stage, reason, detail, the original coordinates, and key, value and headers
    byte for byte, so it can be replayed from the API.
``source_documents``
    The source documents as the ingress accepted them (``ledgerflow.raw.<source>``: body and
    CloudEvents headers), keyed by their event id and found by trace id: the record page shows
    the document a sync record came from (one webhook is one trace, through every stage).
``api_keys``
    Keys of the sync-records API and console: a public key id, the Argon2id hash of the secret
    (never the secret), scopes and tenants, creation, last use and revocation times.

Amounts are :class:`~decimal.Decimal` end to end: ``NUMERIC(24, 6)`` on PostgreSQL and a
decimal string on SQLite (whose ``NUMERIC`` affinity would round-trip through a float).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from ledgerflow.contracts.events import deterministic_id

__all__ = [
    "ApiKeyRow",
    "AuditBase",
    "CanonicalRecordRow",
    "DeadLetterRow",
    "DecimalAmount",
    "SourceDocumentRow",
    "SyncAttemptRow",
    "SyncRecordRow",
    "UtcDateTime",
    "sync_record_id",
]


def sync_record_id(canonical_id: str, connection: str) -> str:
    """Id of the sync record of ``canonical_id`` on ``connection``: 32 hex chars, the same on every replica."""
    return deterministic_id("sync-record", canonical_id, connection)


class DecimalAmount(TypeDecorator[Decimal]):
    """A money amount: ``NUMERIC(24, 6)``, stored as a decimal string on SQLite; never a float."""

    impl = Numeric(24, 6, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """``VARCHAR(40)`` on SQLite, ``NUMERIC(24, 6)`` elsewhere."""
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(24, 6, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        """Decimal → the driver's value (a string on SQLite)."""
        if value is None:
            return None
        if dialect.name == "sqlite":
            return format(value, "f")
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        """The stored value → Decimal (exact: built from the string, never from a float)."""
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp (SQLite keeps naive values: they are read back as UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Aware datetime → UTC (naive values are taken as UTC)."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Stored value → aware UTC datetime."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class AuditBase(DeclarativeBase):
    """Declarative base of the audit tables (separate from the state store's)."""

    metadata = MetaData()


class SyncRecordRow(AuditBase):
    """One canonical record on one ERP connection, with its latest outcome."""

    __tablename__ = "sync_records"
    __table_args__ = (
        UniqueConstraint("canonical_id", "connection", name="uq_sync_records_canonical_connection"),
        Index("ix_sync_records_order", "created_at", "id"),
        Index("ix_sync_records_tenant_last", "tenant", "last_attempt_at"),
        Index("ix_sync_records_outcome", "outcome"),
        Index("ix_sync_records_direction", "direction"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    canonical_id: Mapped[str] = mapped_column(String(400))
    tenant: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(50))
    object_type: Mapped[str] = mapped_column(String(50))
    erp: Mapped[str] = mapped_column(String(50))
    connection: Mapped[str] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(20))
    operation: Mapped[str] = mapped_column(String(20))
    erp_record_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    erp_record_version: Mapped[str | None] = mapped_column(String(100), nullable=True)
    amount: Mapped[Decimal | None] = mapped_column(DecimalAmount(), nullable=True)
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    last_event_id: Mapped[str] = mapped_column(String(100))
    first_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime())
    attempt_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    retry_event_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    retry_requested_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    direction: Mapped[str] = mapped_column(String(10), server_default="outbound")
    """``outbound`` (booked into an ERP) or ``inbound`` (an ERP record written into a source)."""
    source_record_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """Inbound: the id the source gave the record written (INGENIOUS company id, Mercoa invoice id…)."""


class SyncAttemptRow(AuditBase):
    """One ``SyncResult`` event: one attempt of booking a record on a connection."""

    __tablename__ = "sync_attempts"
    __table_args__ = (
        UniqueConstraint("result_event_id", name="uq_sync_attempts_result_event"),
        Index("ix_sync_attempts_record", "sync_record_id", "finished_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sync_record_id: Mapped[str] = mapped_column(String(32), ForeignKey("sync_records.id", ondelete="CASCADE"))
    result_event_id: Mapped[str] = mapped_column(String(100))
    event_id: Mapped[str] = mapped_column(String(100))
    operation: Mapped[str] = mapped_column(String(20))
    outcome: Mapped[str] = mapped_column(String(20))
    erp_record_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    erp_record_version: Mapped[str | None] = mapped_column(String(100), nullable=True)
    http_attempts: Mapped[int] = mapped_column(Integer)
    http_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(200), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_retriable: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    error_vendor_code: Mapped[str | None] = mapped_column(String(200), nullable=True)
    amount: Mapped[Decimal | None] = mapped_column(DecimalAmount(), nullable=True)
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    accepted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime] = mapped_column(UtcDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())
    trace_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    source_record_id: Mapped[str | None] = mapped_column(String(200), nullable=True)


class CanonicalRecordRow(AuditBase):
    """The latest canonical record per canonical id (body and CloudEvents headers as published)."""

    __tablename__ = "canonical_records"
    __table_args__ = (
        Index("ix_canonical_records_document_number", "document_number"),
        Index("ix_canonical_records_source_id", "source_id"),
    )

    canonical_id: Mapped[str] = mapped_column(String(400), primary_key=True)
    object_type: Mapped[str] = mapped_column(String(50))
    tenant: Mapped[str] = mapped_column(String(100))
    event_id: Mapped[str] = mapped_column(String(100))
    headers: Mapped[dict[str, str]] = mapped_column(JSON)
    body: Mapped[str] = mapped_column(Text)
    topic: Mapped[str] = mapped_column(String(250))
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())
    source_id: Mapped[str | None] = mapped_column(String(400), nullable=True)
    document_number: Mapped[str | None] = mapped_column(String(200), nullable=True)


class DeadLetterRow(AuditBase):
    """One dead letter of any stage, as read from ``ledgerflow.dlq.<stage>`` (replayable byte for byte)."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        UniqueConstraint("topic", "partition", "offset", name="uq_dead_letters_position"),
        Index("ix_dead_letters_order", "dead_lettered_at", "id"),
        Index("ix_dead_letters_stage_reason", "stage", "reason"),
        Index("ix_dead_letters_tenant", "tenant"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    stage: Mapped[str] = mapped_column(String(50))
    reason: Mapped[str] = mapped_column(String(200))
    detail: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int | None] = mapped_column(Integer, nullable=True)
    topic: Mapped[str] = mapped_column(String(250))
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    original_topic: Mapped[str | None] = mapped_column(String(250), nullable=True)
    original_partition: Mapped[int | None] = mapped_column(Integer, nullable=True)
    original_offset: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tenant: Mapped[str | None] = mapped_column(String(100), nullable=True)
    event_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    event_type: Mapped[str | None] = mapped_column(String(200), nullable=True)
    trace_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, str]] = mapped_column(JSON)
    dead_lettered_at: Mapped[datetime] = mapped_column(UtcDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())
    replay_count: Mapped[int] = mapped_column(Integer, default=0)
    last_replayed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class ApiKeyRow(AuditBase):
    """An API key: public id, Argon2id hash of its secret, scopes and tenants (``*`` = every tenant)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(255))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    tenants: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class SourceDocumentRow(AuditBase):
    """A source document as accepted by the ingress (one raw event): its body, headers and trace id."""

    __tablename__ = "source_documents"
    __table_args__ = (Index("ix_source_documents_trace", "trace_id", "received_at"),)

    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    tenant: Mapped[str | None] = mapped_column(String(100), nullable=True)
    source: Mapped[str] = mapped_column(String(50))
    trace_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, str]] = mapped_column(JSON)
    topic: Mapped[str] = mapped_column(String(250))
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
