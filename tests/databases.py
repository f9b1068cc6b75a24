"""PostgreSQL helpers for the suite: is the server up, and a fresh database per use."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import AsyncIterator

import pytest

__all__ = ["fresh_database", "postgres_up"]


def postgres_up(host: str = "127.0.0.1", port: int = 5432) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.asynccontextmanager
async def fresh_database(prefix: str = "ledgerflow_test") -> AsyncIterator[str]:
    """A new, empty PostgreSQL database on 127.0.0.1:5432 (async SQLAlchemy URL), dropped afterwards.

    Skips the calling test when PostgreSQL is not running.
    """
    if not postgres_up():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(user="postgres", host="127.0.0.1", port=5432, database="postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin = await asyncpg.connect(user="postgres", host="127.0.0.1", port=5432, database="postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
