"""Run the audit schema's Alembic migrations (``ledgerflow/audit/migrations/``) from code.

The audit worker calls :func:`upgrade` at start; operators can also use the ``alembic`` command
with ``-c`` pointing at no file and ``script_location`` set, but nothing needs that.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["MIGRATIONS", "alembic_config", "upgrade"]

_MIGRATION_LOCK_KEY = 0x1ED6E2F11
"""Advisory lock id held while migrating the audit tables on PostgreSQL."""

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
"""Folder of the Alembic environment and its ``versions/``."""


def alembic_config(url: str | None = None) -> Config:
    """An Alembic :class:`~alembic.config.Config` for the audit migrations (``url``: async SQLAlchemy URL)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _upgrade_on(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def upgrade(url: str | AsyncEngine, revision: str = "head") -> None:
    """Bring the audit tables at ``url`` (an async URL or engine) up to ``revision``; idempotent.

    Runs inside the caller's event loop over one connection, in one transaction. On PostgreSQL a
    transaction-scoped advisory lock makes replicas that start together migrate one at a time.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database cannot be reached or a migration fails.
        alembic.util.CommandError: ``revision`` is unknown.
    """
    engine = create_async_engine(url) if isinstance(url, str) else url
    try:
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            await connection.run_sync(_upgrade_on, revision)
    finally:
        if isinstance(url, str):
            await engine.dispose()
