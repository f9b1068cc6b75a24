"""Alembic environment of the audit tables; works with async URLs (``sqlite+aiosqlite``, ``postgresql+asyncpg``).

Two ways in:

* :func:`ledgerflow.audit.migrate.upgrade` hands an open connection in
  ``config.attributes["connection"]`` (it runs inside the service's event loop);
* the ``alembic`` command line (``-x url=...`` or ``sqlalchemy.url``) gets a fresh async engine
  and runs the migrations through ``AsyncConnection.run_sync``.

The version table is ``ledgerflow_audit_version`` so the audit schema can share a database with
other ledgerflow tables without clashing with another Alembic history.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from ledgerflow.audit.tables import AuditBase

VERSION_TABLE = "ledgerflow_audit_version"

config = context.config
target_metadata = AuditBase.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_configure)
            await connection.commit()
    finally:
        await engine.dispose()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: pass -x url=... or set sqlalchemy.url")
    return url


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, version_table=VERSION_TABLE, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    shared = config.attributes.get("connection")
    if isinstance(shared, Connection):
        _configure(shared)
    else:
        asyncio.run(_run_async(_url()))
