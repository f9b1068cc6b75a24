"""Fixtures for connector tests: a shared HTTP client and a fresh SQLite state store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from ledgerflow.core.outbound.transport import worker_http_client
from ledgerflow.core.state import StateStore


@pytest.fixture(params=["aiohttp", "httpx"])
async def http(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    """The shared client a worker hands to connectors (short timeout), on each transport it offers."""
    async with worker_http_client(request.param, timeout=httpx.Timeout(5.0)) as client:
        yield client


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[StateStore]:
    """A fresh SQLite state store on disk (tables created)."""
    store = StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    await store.create_all()
    try:
        yield store
    finally:
        await store.close()
