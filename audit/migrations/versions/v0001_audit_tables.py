"""Audit tables: sync_records, sync_attempts, canonical_records.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# Types frozen at this revision (the models use TypeDecorators with the same DDL).
AMOUNT = sa.Numeric(24, 6).with_variant(sa.String(40), "sqlite")


def UtcDateTime() -> sa.DateTime:  # noqa: N802 - reads like the column type it stands for
    """A timezone-aware timestamp column type."""
    return sa.DateTime(timezone=True)


revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the three audit tables and their indexes."""
    op.create_table(
        "sync_records",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("canonical_id", sa.String(400), nullable=False),
        sa.Column("tenant", sa.String(100), nullable=False),
        sa.Column("source", sa.String(50), nullable=False),
        sa.Column("object_type", sa.String(50), nullable=False),
        sa.Column("erp", sa.String(50), nullable=False),
        sa.Column("connection", sa.String(100), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("operation", sa.String(20), nullable=False),
        sa.Column("erp_record_id", sa.String(200), nullable=True),
        sa.Column("erp_record_version", sa.String(100), nullable=True),
        sa.Column("amount", AMOUNT, nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("last_event_id", sa.String(100), nullable=False),
        sa.Column("first_attempt_at", UtcDateTime(), nullable=False),
        sa.Column("last_attempt_at", UtcDateTime(), nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("retry_event_id", sa.String(100), nullable=True),
        sa.Column("retry_requested_at", UtcDateTime(), nullable=True),
        sa.UniqueConstraint("canonical_id", "connection", name="uq_sync_records_canonical_connection"),
    )
    op.create_index("ix_sync_records_order", "sync_records", ["created_at", "id"])
    op.create_index("ix_sync_records_tenant_last", "sync_records", ["tenant", "last_attempt_at"])
    op.create_index("ix_sync_records_outcome", "sync_records", ["outcome"])

    op.create_table(
        "sync_attempts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "sync_record_id", sa.String(32), sa.ForeignKey("sync_records.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("result_event_id", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(100), nullable=False),
        sa.Column("operation", sa.String(20), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("erp_record_id", sa.String(200), nullable=True),
        sa.Column("erp_record_version", sa.String(100), nullable=True),
        sa.Column("http_attempts", sa.Integer(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error_code", sa.String(200), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_retriable", sa.Boolean(), nullable=True),
        sa.Column("error_vendor_code", sa.String(200), nullable=True),
        sa.Column("amount", AMOUNT, nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("accepted_at", UtcDateTime(), nullable=True),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime(), nullable=False),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("result_event_id", name="uq_sync_attempts_result_event"),
    )
    op.create_index("ix_sync_attempts_record", "sync_attempts", ["sync_record_id", "finished_at"])

    op.create_table(
        "canonical_records",
        sa.Column("canonical_id", sa.String(400), primary_key=True),
        sa.Column("object_type", sa.String(50), nullable=False),
        sa.Column("tenant", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(100), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("topic", sa.String(250), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    """Drop the audit tables."""
    op.drop_table("canonical_records")
    op.drop_index("ix_sync_attempts_record", table_name="sync_attempts")
    op.drop_table("sync_attempts")
    op.drop_index("ix_sync_records_outcome", table_name="sync_records")
    op.drop_index("ix_sync_records_tenant_last", table_name="sync_records")
    op.drop_index("ix_sync_records_order", table_name="sync_records")
    op.drop_table("sync_records")
