"""Source documents: the raw events the ingress accepted, found by trace id.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``source_documents`` and its trace index."""
    op.create_table(
        "source_documents",
        sa.Column("event_id", sa.String(200), primary_key=True),
        sa.Column("tenant", sa.String(100), nullable=True),
        sa.Column("source", sa.String(50), nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("topic", sa.String(250), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_source_documents_trace", "source_documents", ["trace_id", "received_at"])


def downgrade() -> None:
    """Drop ``source_documents``."""
    op.drop_index("ix_source_documents_trace", table_name="source_documents")
    op.drop_table("source_documents")
