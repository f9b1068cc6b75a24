"""Fixtures of the audit tests: a migrated SQLite audit store, a SyncResult factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ledgerflow.audit.migrate import upgrade
from ledgerflow.audit.store import AuditStore
from tests.audit.audit_helpers import MakeResult
from tests.audit.audit_helpers import make_result as _make_result


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[AuditStore]:
    await upgrade(sqlite_url)
    audit = AuditStore(sqlite_url)
    try:
        yield audit
    finally:
        await audit.close()


@pytest.fixture
def make_result() -> MakeResult:
    """``make_result(n, connection=..., outcome=..., minutes=...)``: a SyncResult for bill ``n``."""
    return _make_result
