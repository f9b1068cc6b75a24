"""Operator access: API keys, dead letters of every stage, per-attempt trace and error, search columns.

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


def UtcDateTime() -> sa.DateTime:  # noqa: N802 - reads like the column type it stands for
    """A timezone-aware timestamp column type."""
    return sa.DateTime(timezone=True)


revision: str = "0003"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``api_keys`` and ``dead_letters``, the attempts' trace id and error, canonical search columns."""
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_hash", sa.String(255), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("tenants", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("last_used_at", UtcDateTime(), nullable=True),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("stage", sa.String(50), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=True),
        sa.Column("topic", sa.String(250), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("original_topic", sa.String(250), nullable=True),
        sa.Column("original_partition", sa.Integer(), nullable=True),
        sa.Column("original_offset", sa.BigInteger(), nullable=True),
        sa.Column("tenant", sa.String(100), nullable=True),
        sa.Column("event_id", sa.String(200), nullable=True),
        sa.Column("event_type", sa.String(200), nullable=True),
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("dead_lettered_at", UtcDateTime(), nullable=False),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
        sa.Column("replay_count", sa.Integer(), nullable=False),
        sa.Column("last_replayed_at", UtcDateTime(), nullable=True),
        sa.UniqueConstraint("topic", "partition", "offset", name="uq_dead_letters_position"),
    )
    op.create_index("ix_dead_letters_order", "dead_letters", ["dead_lettered_at", "id"])
    op.create_index("ix_dead_letters_stage_reason", "dead_letters", ["stage", "reason"])
    op.create_index("ix_dead_letters_tenant", "dead_letters", ["tenant"])
    with op.batch_alter_table("sync_attempts") as batch:
        batch.add_column(sa.Column("trace_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("error", sa.JSON(), nullable=True))
    with op.batch_alter_table("canonical_records") as batch:
        batch.add_column(sa.Column("source_id", sa.String(400), nullable=True))
        batch.add_column(sa.Column("document_number", sa.String(200), nullable=True))
    op.create_index("ix_canonical_records_document_number", "canonical_records", ["document_number"])
    op.create_index("ix_canonical_records_source_id", "canonical_records", ["source_id"])


def downgrade() -> None:
    """Drop what :func:`upgrade` added."""
    op.drop_index("ix_canonical_records_source_id", table_name="canonical_records")
    op.drop_index("ix_canonical_records_document_number", table_name="canonical_records")
    with op.batch_alter_table("canonical_records") as batch:
        batch.drop_column("document_number")
        batch.drop_column("source_id")
    with op.batch_alter_table("sync_attempts") as batch:
        batch.drop_column("error")
        batch.drop_column("trace_id")
    op.drop_index("ix_dead_letters_tenant", table_name="dead_letters")
    op.drop_index("ix_dead_letters_stage_reason", table_name="dead_letters")
    op.drop_index("ix_dead_letters_order", table_name="dead_letters")
    op.drop_table("dead_letters")
    op.drop_table("api_keys")
