"""Tables of the audit store (schema owned by the Alembic migrations in ``migrations/``).

``sync_records``
    One row per (canonical id, ERP connection): the latest outcome and ERP record id, the
    document amount and currency, first/last attempt times and the number of attempts.
    ``id`` is deterministic (:func:`sync_record_id`), so every replica computes the same one.
``sync_attempts``
    One row per ``SyncResult`` event received, unique on the result's CloudEvents ``ce_id``:
    a redelivered result is stored once.
``canonical_records``
    The latest canonical record per canonical id, as published on ``ledgerflow.<object>.v1``
    (JSON body and CloudEvents headers): what ``POST /sync-records/{id}/retry`` re-publishes.

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
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from ledgerflow.core.events import deterministic_id

__all__ = [
    "AuditBase",
    "CanonicalRecordRow",
    "DecimalAmount",
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


class CanonicalRecordRow(AuditBase):
    """The latest canonical record per canonical id (body and CloudEvents headers as published)."""

    __tablename__ = "canonical_records"

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
