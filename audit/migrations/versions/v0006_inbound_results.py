"""Inbound results: ``direction`` and ``source_record_id`` of sync records and attempts.

The source writers (``ledgerflow source-writer``) publish ``SyncResult`` s with
``direction="inbound"`` (a record read from an ERP written into a source) and the id the source
gave it; rows written before are outbound.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``sync_records.direction`` (default ``outbound``), ``source_record_id`` on both tables, an index."""
    with op.batch_alter_table("sync_records") as batch:
        batch.add_column(sa.Column("direction", sa.String(10), nullable=False, server_default="outbound"))
        batch.add_column(sa.Column("source_record_id", sa.String(200), nullable=True))
    with op.batch_alter_table("sync_attempts") as batch:
        batch.add_column(sa.Column("source_record_id", sa.String(200), nullable=True))
    op.create_index("ix_sync_records_direction", "sync_records", ["direction"])


def downgrade() -> None:
    """Drop them again."""
    op.drop_index("ix_sync_records_direction", table_name="sync_records")
    with op.batch_alter_table("sync_attempts") as batch:
        batch.drop_column("source_record_id")
    with op.batch_alter_table("sync_records") as batch:
        batch.drop_column("source_record_id")
        batch.drop_column("direction")
