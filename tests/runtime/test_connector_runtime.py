"""The connector runtime's decisions (binder, duplicates, retries, parking) and its Kafka wiring."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from ledgerflow.connectors.base import Booked, Connector, HandleContext, PermanentError, RetriableError, Unsupported
from ledgerflow.connectors.binder import content_hash, idempotency_key
from ledgerflow.connectors.retry import RetryPolicy
from ledgerflow.connectors.runtime import ConnectorRuntime, register
from ledgerflow.contracts import Bill, CanonicalRecord, ErrorCode, Operation, Outcome, Payment, SyncResult, VendorRef
from ledgerflow.contracts.events import EventAttributes
from ledgerflow.core.kafka import broker_from_settings, ensure_topics
from ledgerflow.core.settings import Routing, Settings
from ledgerflow.core.state import StateStore
from tests.records import FakeRecord


class ScriptedConnector(Connector):
    """A connector whose next answers are scripted: exceptions to raise, then a Booked."""

    erp = "scripted"
    supports = frozenset({"bill"})

    def __init__(self, name: str, routing: Routing, http: httpx.AsyncClient, state: StateStore) -> None:
        super().__init__(name, routing.connections[name], http, state)
        self.script: list[Exception] = []
        self.calls: list[HandleContext] = []
        self.records: list[CanonicalRecord] = []
        self.booked: dict[str, str] = {}

    async def check(self) -> None:
        return None

    async def handle(self, record: CanonicalRecord, ctx: HandleContext) -> Booked:
        self.calls.append(ctx)
        self.records.append(record)
        if self.script:
            raise self.script.pop(0)
        erp_id = self.booked.setdefault(ctx.idempotency_key, f"E{len(self.booked) + 1}")
        op = Operation.UPDATE if ctx.existing else Operation.CREATE
        return Booked(op, ctx.existing.erp_record_id if ctx.existing else erp_id, "0", 200)


def _routing() -> Routing:
    return Routing.model_validate(
        {
            "tenants": {"t": {"connections": ["erp-a", "erp-b"]}},
            "connections": {"erp-a": {"erp": "http", "objects": ["bill"]}, "erp-b": {"erp": "http"}},
        }
    )


def _bill(total: str = "100.00", source_id: str = "in_1") -> Bill:
    return Bill.model_validate(
        {
            "canonical_id": f"t:mercoa:bill:{source_id}",
            "tenant": "t",
            "source": "mercoa",
            "source_id": source_id,
            "source_event": "invoice.created",
            "vendor": {"name": "V"},
            "bill_date": "2024-01-01",
            "currency": "USD",
            "line_items": [{"line_number": 1, "amount": total}],
            "subtotal": total,
            "total": total,
        }
    )


def _attrs(event_id: str = "evt-1") -> EventAttributes:
    return EventAttributes(id=event_id, source="/tenants/t/mercoa", type="io.ledgerflow.bill.v1", tenant="t")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = StateStore(f"sqlite+aiosqlite:///{tmp_path}/state.db")
    await s.create_all()
    yield s
    await s.close()


async def _noop_publish(*_: object) -> None:
    return None


def _runtime(store: StateStore, retry: RetryPolicy | None = None, name: str = "erp-a") -> ConnectorRuntime:
    routing = _routing()
    connector = ScriptedConnector(name, routing, httpx.AsyncClient(), store)
    return ConnectorRuntime(connector, store, routing, _noop_publish, Settings(), retry or RetryPolicy(wait_initial=0))


async def test_create_then_duplicate_then_update(store: StateStore) -> None:
    rt = _runtime(store)
    first = await rt.book(_bill(), _attrs("e1"))
    assert (first.outcome, first.operation, first.erp_record_id) == (Outcome.SUCCEEDED, Operation.CREATE, "E1")
    again = await rt.book(_bill(), _attrs("e1"))
    assert (again.outcome, again.attempts, again.erp_record_id) == (Outcome.DUPLICATE, 0, "E1")
    changed = await rt.book(_bill("120.00"), _attrs("e2"))
    assert (changed.outcome, changed.operation, changed.erp_record_id) == (Outcome.SUCCEEDED, Operation.UPDATE, "E1")
    connector = rt.connector
    assert isinstance(connector, ScriptedConnector)
    assert len(connector.calls) == 2
    assert connector.calls[1].existing is not None
    assert connector.calls[1].existing.content_hash == content_hash(_bill())


async def test_retriable_errors_are_retried_then_succeed(store: StateStore) -> None:
    rt = _runtime(store)
    assert isinstance(rt.connector, ScriptedConnector)
    rt.connector.script = [
        RetriableError(ErrorCode.HTTP_429, "slow down", retry_after=0.01),
        RetriableError(ErrorCode.HTTP_5XX, "x"),
    ]
    result = await rt.book(_bill(), _attrs())
    assert result.outcome is Outcome.SUCCEEDED
    assert result.attempts == 3
    keys = {c.idempotency_key for c in rt.connector.calls}
    assert keys == {idempotency_key("erp-a", "evt-1", "t")}, "every attempt must reuse the idempotency key"


async def test_exhausted_retries_and_permanent_errors_fail_with_the_vendor_message(store: StateStore) -> None:
    rt = _runtime(store, RetryPolicy(attempts=2, wait_initial=0))
    assert isinstance(rt.connector, ScriptedConnector)
    rt.connector.script = [RetriableError(ErrorCode.HTTP_5XX, "boom", http_status=500)] * 2
    result = await rt.book(_bill(), _attrs())
    assert result.outcome is Outcome.FAILED
    assert result.error is not None
    assert (result.error.code, result.error.retriable, result.attempts) == ("http.5xx", True, 2)

    rt.connector.script = [PermanentError(ErrorCode.ERP_VALIDATION, "Account 999 does not exist", vendor_code="2500")]
    failed = await rt.book(_bill(), _attrs("e9"))
    assert failed.error is not None
    assert (failed.outcome, failed.error.retriable, failed.error.message) == (
        Outcome.FAILED,
        False,
        "Account 999 does not exist",
    )
    assert await store.get_binding("erp-a", "t:mercoa:bill:in_1") is None


async def test_unsupported_and_unconfigured_objects_are_skipped_with_a_reason(store: StateStore) -> None:
    rt = _runtime(store, name="erp-b")  # erp-b is configured for the default objects (bill)
    assert isinstance(rt.connector, ScriptedConnector)
    rt.connector.script = [Unsupported(ErrorCode.OBJECT_UNSUPPORTED, "no bills here")]
    result = await rt.book(_bill(), _attrs())
    assert result.outcome is Outcome.SKIPPED
    assert result.error is not None
    assert result.error.message == "no bills here"


async def test_parked_version_is_superseded_by_a_newer_booking(store: StateStore) -> None:
    rt = _runtime(store)
    parked_at = datetime.now(UTC).timestamp() - 5
    await rt.book(_bill("150.00"), _attrs("newer"))
    stale = await rt.book(_bill("100.00"), _attrs("older"), parked_at=parked_at)
    assert stale.outcome is Outcome.SKIPPED
    assert stale.error is not None
    assert stale.error.code == "record.superseded"


@pytest.mark.kafka
async def test_parked_record_comes_back_from_the_retry_topic_and_is_booked(
    kafka_bootstrap: str, kafka_is_embedded: bool, store: StateStore, unique: str
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=not kafka_is_embedded,
        topic_prefix=f"rt{unique}",
    )
    await ensure_topics(kafka_bootstrap, settings.topics.all(), partitions=2)
    routing = _routing()
    broker = broker_from_settings(settings, kafka_bootstrap, embedded=kafka_is_embedded)

    async def publish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        await broker.publish(value, topic=topic, key=key, headers=headers)

    async with httpx.AsyncClient() as http:
        connector = ScriptedConnector("erp-a", routing, http, store)
        # Two in-place attempts fail, the record is parked on tier 1 for 0.2 s, then it is booked.
        connector.script = [RetriableError(ErrorCode.HTTP_5XX, "down")] * 2
        runtime = ConnectorRuntime(
            connector, store, routing, publish, settings, RetryPolicy(attempts=2, wait_initial=0, park_delays=(0.2,))
        )
        register(broker, runtime, max_records=50)
        await broker.start()
        try:
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
            await producer.start()
            try:
                headers = [(k, v.encode()) for k, v in _attrs("evt-park").to_headers().items()]
                await producer.send_and_wait(
                    settings.topics.canonical("bill"), _bill().model_dump_json().encode(), key=b"k", headers=headers
                )
            finally:
                await producer.stop()
            result_ids: list[str] = []
            results = await _read_results(kafka_bootstrap, settings.topics.results, want=2, ids=result_ids)
        finally:
            await broker.stop()
    assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.SUCCEEDED]
    # Each attempt round is its own result event (the audit stores two attempts, not one).
    assert len(set(result_ids)) == 2
    assert results[0].error is not None
    assert results[0].error.retriable
    assert len(connector.calls) == 3


async def _read_results(bootstrap: str, topic: str, want: int, ids: list[str] | None = None) -> list[SyncResult]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    results: list[SyncResult] = []
    try:
        async with asyncio.timeout(30):
            while len(results) < want:
                msg = await consumer.getone()
                results.append(SyncResult.model_validate_json(msg.value or b"{}"))
                if ids is not None:
                    ids.append(dict(msg.headers)["ce_id"].decode())
    finally:
        await consumer.stop()
    return results


async def test_unapproved_documents_are_skipped_unless_the_connection_books_them(store: StateStore) -> None:
    draft = _bill().model_copy(update={"status": "draft"})
    skipped = await _runtime(store).book(draft, _attrs("d1"))
    assert skipped.outcome is Outcome.SKIPPED
    assert skipped.error is not None
    assert skipped.error.code == "record.not_approved"
    routing = _routing()
    routing.connections["erp-a"].options["book_unapproved"] = True
    connector = ScriptedConnector("erp-a", routing, httpx.AsyncClient(), store)
    runtime = ConnectorRuntime(connector, store, routing, _noop_publish, Settings(), RetryPolicy(wait_initial=0))
    assert (await runtime.book(draft, _attrs("d2"))).outcome is Outcome.SUCCEEDED


def _record(bill: Bill, event_id: str, offset: int) -> FakeRecord:
    """``bill`` as the connector consumes it from the canonical topic."""
    headers = _attrs(event_id).to_headers()
    return FakeRecord.of(
        "ledgerflow.canonical.bill.v1", offset, bill.canonical_id, bill.model_dump_json().encode(), headers
    )


def _collecting_runtime(store: StateStore) -> tuple[ConnectorRuntime, list[SyncResult]]:
    """A runtime on connection ``erp-a`` whose published SyncResults land in the returned list."""
    published: list[SyncResult] = []

    async def publish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        published.append(SyncResult.model_validate_json(value))

    routing = _routing()
    connector = ScriptedConnector("erp-a", routing, httpx.AsyncClient(), store)
    return ConnectorRuntime(connector, store, routing, publish, Settings(), RetryPolicy(wait_initial=0)), published


def _count_selects(store: StateStore) -> list[str]:
    from sqlalchemy import event

    seen: list[str] = []

    def before(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "INSERT")):
            seen.append(statement.split()[0].upper())

    event.listen(store.engine.sync_engine, "before_cursor_execute", before)
    return seen


async def test_a_batch_reads_its_binder_rows_in_one_query_and_writes_them_in_one_upsert(store: StateStore) -> None:
    rt, published = _collecting_runtime(store)
    await rt.book(_bill(source_id="in_0"), _attrs("e-0"))  # booked before the batch
    statements = _count_selects(store)
    batch = [_record(_bill(source_id=f"in_{i}"), f"e-{i}", i) for i in range(5)]
    batch.append(_record(_bill(source_id="in_3"), "e-3-again", 5))  # same record again, same batch
    batch.append(_record(_bill("120.00", source_id="in_3"), "e-3-changed", 6))  # then changed

    await rt.handle_batch(batch, concurrency=4)

    assert statements == ["SELECT", "INSERT"], statements
    outcomes = [(r.canonical_id, r.outcome, r.operation) for r in published]
    assert outcomes.count(("t:mercoa:bill:in_0", Outcome.DUPLICATE, Operation.SKIP)) == 1
    in_3 = [(o, op) for cid, o, op in outcomes if cid == "t:mercoa:bill:in_3"]
    assert in_3 == [
        (Outcome.SUCCEEDED, Operation.CREATE),
        (Outcome.DUPLICATE, Operation.SKIP),
        (Outcome.SUCCEEDED, Operation.UPDATE),
    ]
    assert await store.count_bindings("erp-a") == 5
    row = await store.get_binding("erp-a", "t:mercoa:bill:in_3")
    assert row is not None
    assert row.content_hash == content_hash(_bill("120.00", source_id="in_3"))


async def test_bookings_of_a_failed_batch_are_still_written(store: StateStore) -> None:
    calls = 0

    async def publish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        nonlocal calls
        calls += 1
        if SyncResult.model_validate_json(value).canonical_id == "t:mercoa:bill:in_2":
            raise ConnectionError("broker gone")

    routing = _routing()
    connector = ScriptedConnector("erp-a", routing, httpx.AsyncClient(), store)
    rt = ConnectorRuntime(connector, store, routing, publish, Settings(), RetryPolicy(wait_initial=0))
    batch = [_record(_bill(source_id=f"in_{i}"), f"e-{i}", i) for i in range(3)]
    with pytest.raises(ConnectionError):
        await rt.handle_batch(batch, concurrency=1)
    assert calls == 3
    # in_0 and in_1 had their results acknowledged: the binder knows them, the redelivery is a duplicate.
    assert await store.get_binding("erp-a", "t:mercoa:bill:in_0") is not None
    assert await store.get_binding("erp-a", "t:mercoa:bill:in_1") is not None
    assert await store.get_binding("erp-a", "t:mercoa:bill:in_2") is None


async def test_reference_ids_are_cached_and_the_cache_can_be_turned_off(store: StateStore) -> None:
    routing = _routing()
    connector = ScriptedConnector("erp-a", routing, httpx.AsyncClient(), store)
    assert await connector.reference_id("vendor-ref:v1") is None
    await connector.remember_reference("vendor-ref:v1", "56", erp_version=None, content_hash="h")
    statements = _count_selects(store)
    assert await connector.reference_id("vendor-ref:v1") == "56"
    assert statements == []  # served from the cache
    assert (await store.get_binding("erp-a", "vendor-ref:v1")) is not None
    statements.clear()

    routing.connections["erp-a"].options["reference_cache_seconds"] = 0
    uncached = ScriptedConnector("erp-a", routing, httpx.AsyncClient(), store)
    assert await uncached.reference_id("vendor-ref:v1") == "56"
    assert await uncached.reference_id("vendor-ref:v1") == "56"
    assert statements == ["SELECT", "SELECT"]


async def test_a_parked_record_rereads_the_binder_after_its_wait(store: StateStore) -> None:
    """What a retry batch read before a parked record's delay must not hide a booking made meanwhile."""
    import time

    from ledgerflow.connectors.retry import NOT_BEFORE_HEADER, PARKED_AT_HEADER, TARGET_HEADER, TIER_HEADER

    rt, published = _collecting_runtime(store)
    parked = _record(_bill("100.00"), "e-old", 0)
    now = time.time()
    parked.headers = [
        *parked.headers,
        (TARGET_HEADER, b"erp-a"),
        (TIER_HEADER, b"1"),
        (PARKED_AT_HEADER, f"{now - 5:.3f}".encode()),
        (NOT_BEFORE_HEADER, f"{now + 0.5:.3f}".encode()),
    ]
    retry_batch = asyncio.create_task(rt.handle_batch([parked], concurrency=1))
    await asyncio.sleep(0.1)  # the batch has read the (empty) binder and waits out the delay
    await _runtime(store).book(_bill("150.00"), _attrs("e-new"))  # the main consumer books a newer version
    await retry_batch

    (result,) = published
    assert result.outcome is Outcome.SKIPPED
    assert result.error is not None
    assert result.error.code == "record.superseded"
    row = await store.get_binding("erp-a", "t:mercoa:bill:in_1")
    assert row is not None
    assert row.content_hash == content_hash(_bill("150.00"))


async def test_the_connections_reference_map_is_applied_before_the_connector_sees_the_record(
    store: StateStore,
) -> None:
    routing = _routing()
    routing.connections["erp-a"].options["reference_map"] = {"vendor": {"ent_v": "56"}}
    connector = ScriptedConnector("erp-a", routing, httpx.AsyncClient(), store)
    rt = ConnectorRuntime(connector, store, routing, _noop_publish, Settings(), RetryPolicy(wait_initial=0))
    bill = _bill().model_copy(update={"vendor": VendorRef(source_id="ent_v", name="V")})
    result = await rt.book(bill, _attrs("e-map"))
    assert result.outcome is Outcome.SUCCEEDED
    (seen,) = connector.records
    assert isinstance(seen, Bill)
    assert (seen.vendor.source_id, seen.vendor.accounting_id) == ("ent_v", "56")


async def test_a_malformed_reference_map_fails_with_what_to_configure(store: StateStore) -> None:
    routing = _routing()
    routing.connections["erp-a"].options["reference_map"] = {"ledger": {"x": "1"}}
    connector = ScriptedConnector("erp-a", routing, httpx.AsyncClient(), store)
    rt = ConnectorRuntime(connector, store, routing, _noop_publish, Settings(), RetryPolicy(wait_initial=0))
    result = await rt.book(_bill(), _attrs("e-bad-map"))
    assert result.outcome is Outcome.FAILED
    assert result.error is not None
    assert result.error.code == "config.reference_map"
    assert "unknown reference kind" in result.error.message
    assert connector.records == []


async def test_a_refund_is_never_booked_as_money_received_by_a_connector_without_refunds(store: StateStore) -> None:
    routing = Routing.model_validate(
        {
            "tenants": {"t": {"connections": ["erp-p"]}},
            "connections": {"erp-p": {"erp": "http", "objects": ["payment"]}},
        }
    )
    connector = PaymentsConnector("erp-p", routing, httpx.AsyncClient(), store)
    rt = ConnectorRuntime(connector, store, routing, _noop_publish, Settings(), RetryPolicy(wait_initial=0))
    refund = Payment.model_validate(
        {
            "canonical_id": "accessplanit:payment:7732",
            "tenant": "t",
            "source": "accessplanit",
            "source_id": "7732",
            "source_event": "transactions.post",
            "direction": "incoming",
            "kind": "refund",
            "party": {"source_id": "8812", "name": "Northwind"},
            "payment_date": "2024-05-28",
            "currency": "GBP",
            "amount": "250.00",
        }
    )
    result = await rt.book(refund, _attrs("e-refund"))
    assert result.outcome is Outcome.FAILED
    assert result.error is not None
    assert result.error.code == "payment.kind_unsupported"
    assert connector.records == []
    refunds = RefundsConnector("erp-p", routing, httpx.AsyncClient(), store)
    rt = ConnectorRuntime(refunds, store, routing, _noop_publish, Settings(), RetryPolicy(wait_initial=0))
    booked = await rt.book(refund, _attrs("e-refund-2"))
    assert booked.outcome is Outcome.SUCCEEDED
    assert refunds.records == [refund]


class PaymentsConnector(ScriptedConnector):
    """Books payments only (the default ``payment_kinds``)."""

    supports = frozenset({"payment"})


class RefundsConnector(PaymentsConnector):
    """Books payments and refunds."""

    payment_kinds = frozenset({"payment", "refund"})


async def test_a_payment_that_is_not_settled_is_never_booked(store: StateStore) -> None:
    routing = Routing.model_validate(
        {
            "tenants": {"t": {"connections": ["erp-p"]}},
            "connections": {"erp-p": {"erp": "http", "objects": ["payment"]}},
        }
    )
    connector = PaymentsConnector("erp-p", routing, httpx.AsyncClient(), store)
    rt = ConnectorRuntime(connector, store, routing, _noop_publish, Settings(), RetryPolicy(wait_initial=0))
    pending = Payment.model_validate(
        {
            "canonical_id": "mercoa:payment:trx_1",
            "tenant": "t",
            "source": "mercoa",
            "source_id": "trx_1",
            "source_event": "transaction.pending",
            "direction": "outgoing",
            "party": {"name": "Vendor"},
            "payment_date": "2024-05-28",
            "currency": "USD",
            "amount": "10.00",
            "status": "pending",
        }
    )
    result = await rt.book(pending, _attrs("e-pending"))
    assert result.outcome is Outcome.SKIPPED
    assert result.error is not None
    assert result.error.code == "payment.not_settled"
    assert connector.records == []
