"""Batch writes (issue 18): Xero ``PUT /Invoices?summarizeErrors=false`` and QuickBooks ``POST /batch``.

A failing item among good ones fails alone with the ERP's message; a batch sent again books
nothing twice; the runtime forms batches per connection within the linger.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ledgerflow.connectors import batching
from ledgerflow.connectors.base import (
    BatchItem,
    Booked,
    Connector,
    ConnectorError,
    HandleContext,
    InvalidResponse,
    PermanentError,
    RetriableError,
)
from ledgerflow.connectors.batching import Batcher
from ledgerflow.connectors.quickbooks import QuickBooksConnector
from ledgerflow.connectors.quickbooks.sandbox import MAX_BATCH as QBO_MAX
from ledgerflow.connectors.quickbooks.sandbox import create_app as qbo_app
from ledgerflow.connectors.quickbooks.sandbox import sandbox_connection as qbo_connection
from ledgerflow.connectors.retry import RetryPolicy
from ledgerflow.connectors.runtime import ConnectorRuntime
from ledgerflow.connectors.sandbox_kit import serve
from ledgerflow.connectors.xero import XeroConnector
from ledgerflow.connectors.xero.sandbox import MAX_BATCH as XERO_MAX
from ledgerflow.connectors.xero.sandbox import create_app as xero_app
from ledgerflow.connectors.xero.sandbox import sandbox_connection as xero_connection
from ledgerflow.contracts import Bill, CanonicalRecord, Operation, Outcome, SyncResult
from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.contracts.events import EventAttributes
from ledgerflow.core.settings import ConnectionConfig, Routing, Settings
from ledgerflow.core.state import StateStore
from tests.connectors.contract import CLIENT_TIMEOUT, KNOWN_GL, UNKNOWN_GL, contract_bill, ctx
from tests.records import FakeRecord

pytestmark = pytest.mark.timeout(60)

QBO_UNKNOWN_ACCOUNT = "99999"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A client that records the body of every batch write it sends."""
    sent: list[dict[str, Any]] = []

    async def record(request: httpx.Request) -> None:
        if request.method in ("PUT", "POST") and request.url.path.endswith(("/Invoices", "/batch")):
            sent.append(json.loads(request.content))

    async with httpx.AsyncClient(timeout=5.0, event_hooks={"request": [record]}) as client:
        client.sent = sent  # type: ignore[attr-defined]
        yield client


@pytest.fixture
async def xero(shared_dir: Path) -> AsyncIterator[tuple[FastAPI, str]]:
    app = xero_app(spec_path=shared_dir / "specs" / "xero_accounting.yaml")
    async with serve(app) as url:
        yield app, url


@pytest.fixture
async def qbo(shared_dir: Path) -> AsyncIterator[tuple[FastAPI, str]]:
    app = qbo_app(spec_path=shared_dir / "specs" / "Finance.xsd")
    async with serve(app) as url:
        yield app, url


def _options(**more: Any) -> dict[str, Any]:
    return {
        "timeout_seconds": CLIENT_TIMEOUT,
        "rate_limit_per_minute": 6000,
        "batch_rate_limit_per_minute": 6000,
        "max_batch": 50,  # batch writes are opt-in per connection
        **more,
    }


def _xero(url: str, http: httpx.AsyncClient, state: StateStore, name: str = "xero", **options: Any) -> XeroConnector:
    options.setdefault("rate_limit_per_minute", 6000)
    config = xero_connection(
        ConnectionConfig(erp="xero", options={"timeout_seconds": CLIENT_TIMEOUT, "max_batch": 50, **options}), url
    )
    return XeroConnector(name, config, http, state)


def _qbo(url: str, http: httpx.AsyncClient, state: StateStore, **options: Any) -> QuickBooksConnector:
    config = qbo_connection(ConnectionConfig(erp="quickbooks", options=_options(**options)), url)
    return QuickBooksConnector("qbo", config, http, state)


def _bills(gl_of_second: str, count: int = 3) -> list[BatchItem]:
    """``count`` bills of one vendor; the second one's line is on ``gl_of_second``."""
    return [
        BatchItem(
            contract_bill(f"in_batch_{i}", gl=gl_of_second if i == 1 else KNOWN_GL, amounts=(f"{10 + i}.00",)),
            ctx(f"key-{i}"),
        )
        for i in range(count)
    ]


def _sent(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    return http.sent  # type: ignore[attr-defined,no-any-return]


async def test_xero_batch_books_the_good_invoices_and_fails_the_bad_one_with_xeros_message(
    xero: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore
) -> None:
    app, url = xero
    connector = _xero(url, http, state)
    items = _bills(UNKNOWN_GL)

    outcomes = await connector.book_many(items)

    assert [type(o).__name__ for o in outcomes] == ["Booked", "PermanentError", "Booked"]
    failed = outcomes[1]
    assert isinstance(failed, PermanentError)
    assert f"Account code '{UNKNOWN_GL}' is not a valid code" in failed.message
    assert len(_sent(http)) == 1, "three invoices, one request"
    assert len(_sent(http)[0]["Invoices"]) == 3
    stored = app.state.sandbox.store.all("invoice")
    assert sorted(s["InvoiceNumber"] for s in stored) == ["INV-atch_0", "INV-atch_2"]
    booked = [o for o in outcomes if isinstance(o, Booked)]
    assert {b.erp_record_id for b in booked} == {s["InvoiceID"] for s in stored}
    assert [b.stored.total if b.stored else None for b in booked] == [
        items[0].record.total,  # type: ignore[attr-defined]
        items[2].record.total,  # type: ignore[attr-defined]
    ]

    # The same batch again (a crash before the binder was written): Xero replays, books nothing.
    again = await connector.book_many(items)
    assert len(app.state.sandbox.store.all("invoice")) == 2
    assert [o.erp_record_id if isinstance(o, Booked) else None for o in again] == [
        o.erp_record_id if isinstance(o, Booked) else None for o in outcomes
    ]
    assert isinstance(again[1], PermanentError)


async def test_qbo_batch_books_the_good_bills_and_fails_the_bad_one_with_its_fault(
    qbo: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore
) -> None:
    app, url = qbo
    connector = _qbo(url, http, state)
    items = _bills(QBO_UNKNOWN_ACCOUNT)

    outcomes = await connector.book_many(items)

    assert [type(o).__name__ for o in outcomes] == ["Booked", "PermanentError", "Booked"]
    failed = outcomes[1]
    assert isinstance(failed, PermanentError)
    assert failed.vendor_code == "2500"
    assert f"Accounts element id {QBO_UNKNOWN_ACCOUNT} not found" in failed.message
    batches = _sent(http)
    assert len(batches) == 1
    assert [item["bId"] for item in batches[0]["BatchItemRequest"]] == ["key-0", "key-1", "key-2"]
    assert len(app.state.sandbox.store.all("bill")) == 2

    again = await connector.book_many(items)
    assert len(app.state.sandbox.store.all("bill")) == 2, "the batch requestid replays: nothing booked twice"
    assert [getattr(o, "erp_record_id", None) for o in again] == [getattr(o, "erp_record_id", None) for o in outcomes]


async def test_sandboxes_refuse_batches_over_the_vendor_maximum(
    xero: tuple[FastAPI, str], qbo: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore
) -> None:
    xero_connector = _xero(xero[1], http, state)
    too_many = [BatchItem(contract_bill(f"in_big_{i}"), ctx(f"big-{i}")) for i in range(XERO_MAX + 1)]
    outcomes = await xero_connector.handle_batch(too_many[:1])  # resolves the vendor once
    assert isinstance(outcomes[0], Booked)
    with pytest.raises(PermanentError, match=f"at most {XERO_MAX} Invoices"):
        await xero_connector.handle_batch([*too_many[1:], BatchItem(contract_bill("in_big_x"), ctx("big-x"))])
    qbo_connector = _qbo(qbo[1], http, state)
    with pytest.raises(PermanentError, match=f"the maximum is {QBO_MAX}"):
        await qbo_connector.handle_batch(
            [BatchItem(contract_bill(f"in_q_{i}"), ctx(f"q-{i}")) for i in range(QBO_MAX + 1)]
        )


# ------------------------------------------------------------------ through the runtime


def _routing(**connections: ConnectionConfig) -> Routing:
    return Routing(
        tenants={"contract": {"connections": list(connections)}},
        connections=connections,
    )


def _records(bills: Sequence[Bill], prefix: str) -> list[FakeRecord]:
    records = []
    for offset, bill in enumerate(bills):
        attrs = EventAttributes(
            id=f"{prefix}-{bill.source_id}",
            source="/tenants/contract/mercoa",
            type="io.ledgerflow.bill.v1",
            tenant="contract",
        )
        records.append(
            FakeRecord.of(
                "ledgerflow.canonical.bill.v1",
                offset,
                bill.canonical_id,
                bill.model_dump_json().encode(),
                attrs.to_headers(),
            )
        )
    return records


def _runtime(connector: Connector, routing: Routing, state: StateStore) -> tuple[ConnectorRuntime, list[SyncResult]]:
    results: list[SyncResult] = []

    async def publish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        if topic.endswith("results.v1"):
            results.append(SyncResult.model_validate_json(value))

    retry = RetryPolicy(wait_initial=0, attempts=2, park_delays=())
    return ConnectorRuntime(connector, state, routing, publish, Settings(), retry), results


async def test_runtime_batches_per_record_results_and_a_redelivery_books_nothing_twice(
    xero: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore
) -> None:
    app, url = xero
    bills = [contract_bill(f"in_rt_{i}", gl=UNKNOWN_GL if i == 3 else KNOWN_GL) for i in range(8)]
    connector = _xero(url, http, state, batch_linger_ms=50)
    routing = _routing(xero=connector.config)
    runtime, results = _runtime(connector, routing, state)

    await runtime.handle_batch(_records(bills, "evt"), concurrency=8)

    by_id = {r.canonical_id: r for r in results}
    assert len(results) == 8
    assert by_id[bills[3].canonical_id].outcome is Outcome.FAILED
    error = by_id[bills[3].canonical_id].error
    assert error is not None
    assert UNKNOWN_GL in error.message
    assert [by_id[b.canonical_id].outcome for i, b in enumerate(bills) if i != 3] == [Outcome.SUCCEEDED] * 7
    assert len(_sent(http)) == 1, "eight records waiting together: one request"
    assert len(app.state.sandbox.store.all("invoice")) == 7

    # Redelivered to a restarted worker (nothing remembered but the binder): nothing booked twice.
    restarted, again = _runtime(_xero(url, http, state, batch_linger_ms=50), routing, state)
    await restarted.handle_batch(_records(bills, "evt"), concurrency=8)
    assert len(app.state.sandbox.store.all("invoice")) == 7
    outcomes = [r.outcome for r in again]
    assert outcomes.count(Outcome.DUPLICATE) == 7
    assert outcomes.count(Outcome.FAILED) == 1
    assert all(r.operation is Operation.SKIP for r in again if r.outcome is Outcome.DUPLICATE)


async def test_a_batch_never_mixes_connections(
    xero: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore
) -> None:
    _, url = xero
    first = _xero(url, http, state, name="xero-a", batch_linger_ms=100)
    second = _xero(url, http, state, name="xero-b", batch_linger_ms=100)
    routing = _routing(**{"xero-a": first.config, "xero-b": second.config})
    runtime_a, results_a = _runtime(first, routing, state)
    runtime_b, results_b = _runtime(second, routing, state)
    bills = [contract_bill(f"in_mix_{i}") for i in range(6)]

    await asyncio.gather(
        runtime_a.handle_batch(_records(bills[:3], "a"), concurrency=8),
        runtime_b.handle_batch(_records(bills[3:], "b"), concurrency=8),
    )

    assert [r.outcome for r in results_a + results_b] == [Outcome.SUCCEEDED] * 6
    numbers = sorted(sorted(i["InvoiceNumber"] for i in batch["Invoices"]) for batch in _sent(http))
    assert numbers == [["INV-_mix_0", "INV-_mix_1", "INV-_mix_2"], ["INV-_mix_3", "INV-_mix_4", "INV-_mix_5"]]


# ------------------------------------------------------------------ the linger


class _Recording(Connector):
    """Books every record; remembers each batch it was handed and when."""

    erp = "recording"
    supports = frozenset({"bill"})
    max_batch = 10

    def __init__(self, seconds: float = 0.0, max_concurrency: int = 5) -> None:
        config = ConnectionConfig(erp="http", options={"max_concurrency": max_concurrency, "max_batch": 10})
        super().__init__("rec", config, httpx.AsyncClient(), None)  # type: ignore[arg-type]
        self.batches: list[tuple[float, int]] = []
        self.seconds = seconds

    async def check(self) -> None:
        return None

    def batch_kind(self, record: CanonicalRecord, ctx: HandleContext) -> str | None:
        return "bills"

    async def handle(self, record: CanonicalRecord, ctx: HandleContext) -> Booked:
        return Booked(Operation.CREATE, f"E-{ctx.idempotency_key}")

    async def handle_batch(self, items: Sequence[BatchItem]) -> list[Booked | ConnectorError]:
        self.batches.append((time.monotonic(), len(items)))
        await asyncio.sleep(self.seconds)
        return [Booked(Operation.CREATE, f"E-{item.ctx.idempotency_key}") for item in items]


async def test_records_wait_the_linger_for_company_and_a_full_batch_goes_at_once() -> None:
    connector = _Recording()
    batcher = Batcher(connector, linger=0.3)
    started = time.monotonic()
    booked = await asyncio.gather(*(batcher.book(contract_bill(f"in_l_{i}"), ctx(f"l-{i}")) for i in range(3)))
    assert [b.erp_record_id for b in booked] == ["E-l-0", "E-l-1", "E-l-2"]
    assert len(connector.batches) == 1
    sent_at, size = connector.batches[0]
    assert size == 3
    assert sent_at - started >= 0.28, "a partial batch waits out the linger"

    started = time.monotonic()
    await asyncio.gather(*(batcher.book(contract_bill(f"in_f_{i}"), ctx(f"f-{i}")) for i in range(25)))
    assert [size for _, size in connector.batches[1:]] == [10, 10, 5]
    first_full = connector.batches[1][0]
    assert first_full - started < 0.1, "a full batch does not wait"
    assert batcher.requests == 4


async def test_a_partial_batch_keeps_filling_while_the_erp_is_busy() -> None:
    connector = _Recording(seconds=0.4)
    batcher = Batcher(connector, linger=0.05)

    async def trickle(i: int) -> Booked:
        await asyncio.sleep(0.02 * i)  # one record every 20 ms
        return await batcher.book(contract_bill(f"in_t_{i}"), ctx(f"t-{i}"))

    await asyncio.gather(*(trickle(i) for i in range(12)))
    sizes = [size for _, size in connector.batches]
    assert sum(sizes) == 12
    assert sizes[0] <= 4, "nothing in flight: the first records go after the linger"
    assert sizes[1] >= 8, "held back while the one request in flight lasted, then sent in one"


class _Garbling(_Recording):
    """Books every batch, but the first ``garbled`` answers are lost: every item unreadable (2xx garbage)."""

    def __init__(self, garbled: int, failure: type[ConnectorError] = InvalidResponse) -> None:
        super().__init__()
        self.garbled = garbled
        self.failure = failure
        self.keys: list[tuple[str, ...]] = []

    async def handle_batch(self, items: Sequence[BatchItem]) -> list[Booked | ConnectorError]:
        self.keys.append(tuple(item.ctx.idempotency_key for item in items))
        if len(self.keys) <= self.garbled:
            if self.failure is InvalidResponse:
                return [InvalidResponse("truncated JSON") for _ in items]
            return [PermanentError(ErrorCode.ERP_VALIDATION, "refused") for _ in items]
        return await super().handle_batch(items)


async def test_a_batch_answered_ambiguously_is_sent_again_as_the_same_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its records are not scattered into other batches under other keys (the ERP may have booked them)."""
    monkeypatch.setattr(batching, "AMBIGUOUS_BACKOFF", 0.01)
    connector = _Garbling(garbled=2)
    batcher = Batcher(connector, linger=0.05)
    booked = await asyncio.gather(*(batcher.book(contract_bill(f"in_g_{i}"), ctx(f"g-{i}")) for i in range(4)))
    assert [b.erp_record_id for b in booked] == ["E-g-0", "E-g-1", "E-g-2", "E-g-3"]
    assert len(connector.keys) == 3
    assert len(set(connector.keys)) == 1, "every resend is the identical request (same batch idempotency key)"
    assert batcher.requests == 3


async def test_an_ambiguous_batch_gives_up_after_its_attempts_and_a_refusal_is_not_resent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batching, "AMBIGUOUS_BACKOFF", 0.01)
    connector = _Garbling(garbled=10)
    batcher = Batcher(connector, linger=0.05)
    with pytest.raises(InvalidResponse):
        await batcher.book(contract_bill("in_h_0"), ctx("h-0"))
    assert len(connector.keys) == batching.AMBIGUOUS_ATTEMPTS

    refusing = _Garbling(garbled=1, failure=PermanentError)
    batcher = Batcher(refusing, linger=0.05)
    with pytest.raises(PermanentError):
        await batcher.book(contract_bill("in_r_0"), ctx("r-0"))
    assert len(refusing.keys) == 1, "a refusal booked nothing: it is not sent again"


async def test_the_same_event_twice_is_written_once_and_both_get_its_booking() -> None:
    """A redelivered copy must not join another batch under another batch key (the ERP would book it again)."""
    connector = _Recording()
    batcher = Batcher(connector, linger=0.05)
    together = await asyncio.gather(
        batcher.book(contract_bill("in_d_0"), ctx("d-0")),
        batcher.book(contract_bill("in_d_0"), ctx("d-0")),
        batcher.book(contract_bill("in_d_1"), ctx("d-1")),
    )
    later = await batcher.book(contract_bill("in_d_0"), ctx("d-0"))
    assert [b.erp_record_id for b in [*together, later]] == ["E-d-0", "E-d-0", "E-d-1", "E-d-0"]
    assert sum(size for _, size in connector.batches) == 2, "d-0 written once"


async def test_a_copy_of_a_failed_write_is_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batching, "AMBIGUOUS_BACKOFF", 0.01)
    refusing = _Garbling(garbled=1, failure=PermanentError)
    batcher = Batcher(refusing, linger=0.02)
    with pytest.raises(PermanentError):
        await batcher.book(contract_bill("in_e_0"), ctx("e-0"))
    booked = await batcher.book(contract_bill("in_e_0"), ctx("e-0"))
    assert booked.erp_record_id == "E-e-0"
    assert len(refusing.keys) == 2


async def test_a_throttled_batch_is_not_resent(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request the budget held back (or a 429) booked nothing: its records go back to their retry loops."""
    monkeypatch.setattr(batching, "AMBIGUOUS_BACKOFF", 0.01)

    class _Throttled(_Garbling):
        async def handle_batch(self, items: Sequence[BatchItem]) -> list[Booked | ConnectorError]:
            self.keys.append(tuple(item.ctx.idempotency_key for item in items))
            return [RetriableError(ErrorCode.HTTP_429, "day spent", retry_after=3600) for _ in items]

    connector = _Throttled(garbled=0)
    batcher = Batcher(connector, linger=0.02)
    with pytest.raises(RetriableError):
        await asyncio.wait_for(batcher.book(contract_bill("in_t_0"), ctx("t-0")), timeout=5)
    assert len(connector.keys) == 1
