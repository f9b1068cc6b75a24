"""Versions are ordered: a record older than what the binder holds is ``skipped`` (superseded), never written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from ledgerflow.contracts import Bill, Outcome, SyncResult
from ledgerflow.core.state import StateStore
from tests.records import FakeRecord
from tests.runtime.test_connector_runtime import ScriptedConnector, _attrs, _bill, _runtime

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _version(total: str, at: datetime) -> Bill:
    return _bill(total).model_copy(update={"source_updated_at": at})


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = StateStore(f"sqlite+aiosqlite:///{tmp_path}/state.db")
    await s.create_all()
    yield s
    await s.close()


async def test_an_older_version_delivered_late_is_skipped_as_superseded(store: StateStore) -> None:
    rt = _runtime(store)
    connector = rt.connector
    assert isinstance(connector, ScriptedConnector)
    newer = await rt.book(_version("150.00", T0 + timedelta(minutes=5)), _attrs("newer"))
    assert newer.outcome is Outcome.SUCCEEDED
    stale = await rt.book(_version("100.00", T0), _attrs("older"))
    assert stale.outcome is Outcome.SKIPPED
    assert stale.error is not None
    assert stale.error.code == "record.superseded"
    assert stale.erp_record_id == newer.erp_record_id
    assert len(connector.calls) == 1, "the older version reached the ERP"
    # The same version time with new content is an update, and a newer one too.
    same_time = await rt.book(_version("160.00", T0 + timedelta(minutes=5)), _attrs("same-time"))
    assert same_time.outcome is Outcome.SUCCEEDED
    later = await rt.book(_version("170.00", T0 + timedelta(minutes=9)), _attrs("later"))
    assert later.outcome is Outcome.SUCCEEDED
    assert [getattr(r, "total", None) for r in connector.records] == [
        _bill("150.00").total,
        _bill("160.00").total,
        _bill("170.00").total,
    ]
    row = await store.get_binding("erp-a", "t:mercoa:bill:in_1")
    assert row is not None
    assert row.source_updated_at is not None
    assert row.source_updated_at.replace(tzinfo=UTC) == T0 + timedelta(minutes=9)


async def test_a_version_without_time_keeps_the_known_version(store: StateStore) -> None:
    rt = _runtime(store)
    await rt.book(_version("150.00", T0 + timedelta(minutes=5)), _attrs("v1"))
    await rt.book(_bill("155.00"), _attrs("no-time"))  # a source that sent no updatedAt this time
    stale = await rt.book(_version("100.00", T0), _attrs("old"))
    assert stale.outcome is Outcome.SKIPPED


async def test_within_one_batch_the_newer_version_wins_whatever_the_order(store: StateStore) -> None:
    published: list[SyncResult] = []

    async def publish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        if topic.endswith("results.v1"):
            published.append(SyncResult.model_validate_json(value))

    rt = _runtime(store)
    rt.publish = publish
    newer, older = _version("150.00", T0 + timedelta(hours=1)), _version("100.00", T0)
    batch = [
        FakeRecord.of(
            "ledgerflow.bill.v1", i, bill.canonical_id, bill.model_dump_json().encode(), _attrs(eid).to_headers()
        )
        for i, (bill, eid) in enumerate([(newer, "e-new"), (older, "e-old")])
    ]
    await rt.handle_batch(batch, concurrency=4)
    assert [(r.event_id, r.outcome) for r in published] == [("e-new", Outcome.SUCCEEDED), ("e-old", Outcome.SKIPPED)]


async def test_a_state_database_from_before_version_times_gets_the_column(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/old.db"
    engine = sa.create_engine(f"sqlite:///{tmp_path}/old.db")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE binder (connection VARCHAR(100) NOT NULL, key VARCHAR(400) NOT NULL, "
                "erp_record_id VARCHAR(200) NOT NULL, erp_version VARCHAR(100), content_hash VARCHAR(64) NOT NULL, "
                "updated_at DATETIME NOT NULL, PRIMARY KEY (connection, key))"
            )
        )
        conn.execute(sa.text("INSERT INTO binder VALUES ('erp-a', 'k', 'E9', NULL, 'h', '2026-01-01 00:00:00')"))
    engine.dispose()
    store = StateStore(url)
    try:
        await store.create_all()
        await store.create_all()  # idempotent
        row = await store.get_binding("erp-a", "k")
        assert row is not None
        assert (row.erp_record_id, row.source_updated_at) == ("E9", None)
    finally:
        await store.close()
