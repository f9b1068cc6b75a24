"""The ingress outbox: group-committed rows, settlement by final results, sweeper and relay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from ledgerflow.contracts import ErrorInfo, Operation, Outcome, SyncResult
from ledgerflow.contracts import headers as wire
from ledgerflow.core.outbox import Outbox, OutboxPublisher, SettlementTracker, Sweeper
from ledgerflow.core.state import StateStore


@pytest.fixture
async def outbox() -> AsyncIterator[Outbox]:
    state = StateStore("sqlite+aiosqlite://")
    await state.create_all()
    try:
        yield Outbox(state)
    finally:
        await state.close()


def _headers(event_id: str, tenant: str = "acme") -> dict[str, str]:
    return {wire.CE_ID: event_id, wire.CE_TENANT: tenant}


def _result(connection: str, outcome: Outcome, *, retriable: bool = False) -> bytes:
    now = datetime.now(UTC)
    error = ErrorInfo(code="http.5xx", message="x", retriable=retriable) if outcome is Outcome.FAILED else None
    return (
        SyncResult(
            event_id="canon-1",
            canonical_id="acme:mercoa:bill:in_1",
            object_type="bill",
            tenant="acme",
            source="mercoa",
            erp="quickbooks",
            connection=connection,
            operation=Operation.CREATE,
            outcome=outcome,
            attempts=1,
            error=error,
            started_at=now,
            finished_at=now,
        )
        .model_dump_json()
        .encode()
    )


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[str] = []
        self.fail = fail

    async def publish(self, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        if self.fail:
            raise RuntimeError("broker gone")
        self.sent.append(headers[wire.CE_ID])


async def test_rows_are_written_together_and_once_per_event(outbox: Outbox) -> None:
    broker = Recorder()
    publisher = OutboxPublisher(outbox, broker)
    await asyncio.gather(*(publisher.publish("raw", b"k", b"{}", _headers(f"e{n}")) for n in range(50)))
    await publisher.publish("raw", b"k", b"{}", _headers("e1"))  # the sender's retry: same event id
    counts = await outbox.counts()
    assert (counts.accepted, counts.settled, counts.pending) == (50, 0, 50)
    assert len(broker.sent) == 51


async def test_a_refused_publish_still_leaves_the_row_for_the_sweeper(outbox: Outbox) -> None:
    with pytest.raises(RuntimeError):
        await OutboxPublisher(outbox, Recorder(fail=True)).publish("raw", b"k", b"{}", _headers("e1"))
    assert (await outbox.counts()).pending == 1


async def test_settled_when_every_connection_of_the_tenant_has_a_final_result(outbox: Outbox) -> None:
    await outbox.put("acme", "e1", "raw", b"k", b"{}", _headers("e1"))
    await outbox.put("acme", "e2", "raw", b"k", b"{}", _headers("e2"))
    tracker = SettlementTracker(
        outbox,
        "unused:9092",
        results_topic="results",
        dlq_topics=["dlq.transform"],
        connections_of={"acme": frozenset({"qbo", "xero"})},
        group_id="g",
    )
    result_headers = {wire.CE_TENANT: "acme", wire.CE_RAW_EVENT: "e1"}
    await tracker.handle("results", _result("qbo", Outcome.SUCCEEDED), result_headers)
    await tracker.handle("results", _result("xero", Outcome.FAILED, retriable=True), result_headers)
    assert (await outbox.counts()).settled == 0, "a parked (retriable) failure is not final"
    await tracker.handle("results", _result("xero", Outcome.DUPLICATE), result_headers)
    assert (await outbox.counts()).settled == 1
    # A dead letter of the raw event settles it at once.
    await tracker.handle("dlq.transform", b"{}", {wire.CE_TENANT: "acme", wire.CE_ID: "e2"})
    assert (await outbox.counts()).settled == 2
    assert tracker.settled == 2


async def test_sweeper_resends_what_is_due_up_to_max_sends_and_relays_everything_after_a_restart(
    outbox: Outbox,
) -> None:
    await outbox.put("acme", "e1", "raw", b"k", b"{}", _headers("e1"))
    broker = Recorder()
    sweeper = Sweeper(outbox, broker.publish, age_seconds=0.01, max_sends=3, interval_seconds=1)
    await asyncio.sleep(0.02)
    assert await sweeper.sweep_once() == 1  # send 2
    await asyncio.sleep(0.02)
    assert await sweeper.sweep_once() == 1  # send 3: the last one
    await asyncio.sleep(0.02)
    assert await sweeper.sweep_once() == 0
    assert broker.sent == ["e1", "e1"]
    # A broker restart relays every unsettled row, whatever its sends.
    assert await sweeper.relay_after_restart() == 1
    assert broker.sent == ["e1", "e1", "e1"]
