"""One connector fleet per ERP kind, over a real broker and Xero sandboxes serving many organisations.

* many connections in one fleet, each canonical record read once (consumed == booked);
* connections added, rotated and disabled while the fleet runs (no restart);
* a connection whose daily quota is spent does not delay another connection's records on the same
  partition: its records are deferred (no retry attempt used, no result) while the other is booked;
* a dedicated (per-connection) worker picks up its stored connection's rotated credentials.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cryptography.fernet import Fernet

from ledgerflow.connectors.fleet import ConnectionDirectory, ConnectorFleet, RunningFleet, fleet_group_id, run_fleet
from ledgerflow.connectors.main import run_connector
from ledgerflow.connectors.sandbox_kit import serve
from ledgerflow.connectors.xero.sandbox import DEFAULT_CREDENTIALS, create_app, sandbox_connection
from ledgerflow.contracts import Bill, LineItem, Outcome, Reference, SyncResult, VendorRef
from ledgerflow.contracts import headers as h
from ledgerflow.contracts.events import EventAttributes
from ledgerflow.core import metrics
from ledgerflow.core.connections import ConnectionCipher, ConnectionStore, stored_routing
from ledgerflow.core.kafka import ensure_topics
from ledgerflow.core.settings import ConnectionConfig, Routing, Settings
from ledgerflow.core.state import StateStore

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]


def _org(i: int) -> str:
    """The Xero organisation id (``xero-tenant-id``) of sandbox organisation ``i``."""
    return f"00000000-0000-4000-8000-{i:012d}"


def _bill(tenant: str, n: int) -> Bill:
    amount = Decimal("100.00") + n
    return Bill(
        canonical_id=f"{tenant}:mercoa:bill:in_{n}",
        tenant=tenant,
        source="mercoa",
        source_id=f"in_{n}",
        source_event="invoice.created",
        vendor=VendorRef(source_id=f"ent_{tenant}", name=f"Supplier of {tenant}"),
        bill_number=f"INV-{n}",
        bill_date=date(2026, 3, 2),
        due_date=date(2026, 4, 1),
        currency="USD",
        line_items=[LineItem(line_number=1, amount=amount, gl_account=Reference(accounting_id="600394"))],
        subtotal=amount,
        total=amount,
    )


class Pipeline:
    """Topics, a state store with stored connections, Xero sandboxes and a producer of canonical bills."""

    def __init__(self, settings: Settings, bootstrap: str, state: StateStore, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.state = state
        self.producer = producer
        self.store = ConnectionStore(state, ConnectionCipher.from_settings(settings))
        self.published: dict[str, float] = {}

    async def add(self, name: str, url: str, tenant: str, org: str, **options: Any) -> None:
        base = ConnectionConfig(erp="xero", objects=["bill"], options={"timeout_seconds": 10, **options})
        config = sandbox_connection(base, url, replace(DEFAULT_CREDENTIALS, tenant_id=org))
        await self.store.add(name, config, [tenant])

    async def publish(self, bills: Iterable[Bill]) -> None:
        for bill in bills:
            attrs = EventAttributes(
                id=f"evt-{bill.canonical_id}", source=f"/tenants/{bill.tenant}/mercoa",
                type="io.ledgerflow.bill.v1", tenant=bill.tenant, subject=bill.canonical_id,
            )  # fmt: skip
            self.published[bill.canonical_id] = time.monotonic()
            await self.producer.send_and_wait(
                self.settings.topics.canonical("bill"),
                bill.model_dump_json().encode(),
                key=bill.canonical_id.encode(),
                headers=[(k, v.encode()) for k, v in attrs.to_headers().items()],
            )

    def fleet(self, **kwargs: Any) -> Any:
        return run_fleet(
            self.settings, Routing(), "xero", self.bootstrap, embedded=True, state=self.state,
            reload_seconds=0.2, report_lag=False, **kwargs,
        )  # fmt: skip


@pytest.fixture
async def pipeline(
    kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path: Path, unique: str
) -> AsyncIterator[Pipeline]:
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=not kafka_is_embedded,
        topic_prefix=f"fl{unique}",
        state_url=f"sqlite+aiosqlite:///{tmp_path}/state.db",
        connections_key=Fernet.generate_key().decode(),
    )
    # One partition: every record of every tenant shares it (head-of-line blocking would show).
    await ensure_topics(kafka_bootstrap, settings.topics.all(), partitions=1)
    state = StateStore.from_settings(settings)
    await state.create_all()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        yield Pipeline(settings, kafka_bootstrap, state, producer)
    finally:
        await producer.stop()
        await state.close()


class Results:
    """Reads ``SyncResult`` s from the results topic in the background."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        self.results: list[SyncResult] = []
        self.arrived: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Results:
        await self.consumer.start()
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()

    async def _read(self) -> None:
        async for msg in self.consumer:
            result = SyncResult.model_validate_json(msg.value or b"{}")
            self.results.append(result)
            self.arrived.setdefault(result.canonical_id, time.monotonic())

    def of(self, canonical_id: str) -> list[SyncResult]:
        return [r for r in self.results if r.canonical_id == canonical_id]

    async def wait_for(self, canonical_ids: Iterable[str], within: float = 30) -> None:
        wanted = set(canonical_ids)
        async with asyncio.timeout(within):
            while not wanted <= {r.canonical_id for r in self.results}:  # noqa: ASYNC110 - polling a list
                await asyncio.sleep(0.05)


async def test_one_fleet_serves_many_connections_and_reads_each_record_once(pipeline: Pipeline) -> None:
    tenants = [f"t{i:02d}" for i in range(50)]
    app = create_app(minute_limit=10_000, concurrent_limit=50, tenant_ids=[_org(i) for i in range(50)])
    async with serve(app) as url:
        for i, tenant in enumerate(tenants):
            await pipeline.add(f"xero-{tenant}", url, tenant, _org(i))
        bills = [_bill(t, n) for n in (1, 2) for t in tenants]
        async with Results(pipeline.bootstrap, pipeline.settings.topics.results) as results, pipeline.fleet() as run:
            running: RunningFleet = run
            await pipeline.publish(bills)
            await results.wait_for(b.canonical_id for b in bills)
            assert running.fleet.consumed == len(bills), "each canonical record is read once for the ERP kind"
            assert len(running.fleet.connections) == 50
            assert next(g for g, _ in running.watched) == fleet_group_id("xero", pipeline.settings)
    by_id = {r.canonical_id: r for r in results.results}
    assert len(results.results) == len(bills), "one result per record: booked once, by its tenant's connection"
    for bill in bills:
        assert by_id[bill.canonical_id].outcome is Outcome.SUCCEEDED, by_id[bill.canonical_id].error
        assert by_id[bill.canonical_id].connection == f"xero-{bill.tenant}"
    assert len(app.state.sandbox.store.all("invoice")) == len(bills)


async def test_connections_are_added_rotated_and_disabled_while_the_fleet_runs(pipeline: Pipeline) -> None:
    app = create_app(minute_limit=10_000, tenant_ids=[_org(1), _org(2)])
    async with serve(app) as url:
        await pipeline.add("xero-a", url, "ta", _org(1))
        async with Results(pipeline.bootstrap, pipeline.settings.topics.results) as results, pipeline.fleet() as run:
            running: RunningFleet = run
            await pipeline.publish([_bill("ta", 1), _bill("tb", 1)])
            await results.wait_for([_bill("ta", 1).canonical_id])

            # Added at run time: served without a restart (tb's first bill came before it existed).
            await pipeline.add("xero-b", url, "tb", _org(2))
            await asyncio.sleep(0.6)
            await pipeline.publish([_bill("tb", 2)])
            await results.wait_for([_bill("tb", 2).canonical_id])
            assert results.of(_bill("tb", 2).canonical_id)[0].outcome is Outcome.SUCCEEDED
            assert results.of(_bill("tb", 1).canonical_id) == [], "a record before the connection existed"

            # Rotated: new credentials (an organisation the sandbox does not serve) rebuild the connector.
            stored = await pipeline.store.get("xero-b")
            assert stored is not None
            rotated = sandbox_connection(stored.config, url, replace(DEFAULT_CREDENTIALS, tenant_id=_org(3)))
            await pipeline.store.replace("xero-b", rotated, ["tb"])
            await asyncio.sleep(0.6)
            await pipeline.publish([_bill("tb", 3)])
            await results.wait_for([_bill("tb", 3).canonical_id])
            failed = results.of(_bill("tb", 3).canonical_id)[0]
            assert failed.outcome is Outcome.FAILED
            assert failed.http_status == 403, "booked with the rotated credentials"

            # Disabled: its tenant's records are no longer booked; the other connection goes on.
            disabled_before = metrics.FLEET_RECORDS.labels("xero", "disabled")._value.get()
            assert await pipeline.store.set_enabled("xero-a", False)
            await asyncio.sleep(0.6)
            await pipeline.publish([_bill("ta", 2)])
            back = sandbox_connection(rotated, url, replace(DEFAULT_CREDENTIALS, tenant_id=_org(2)))
            await pipeline.store.replace("xero-b", back, ["tb"])
            await asyncio.sleep(0.6)
            await pipeline.publish([_bill("tb", 4)])
            await results.wait_for([_bill("tb", 4).canonical_id])
            assert results.of(_bill("tb", 4).canonical_id)[0].outcome is Outcome.SUCCEEDED
            assert results.of(_bill("ta", 2).canonical_id) == []
            assert metrics.FLEET_RECORDS.labels("xero", "disabled")._value.get() == disabled_before + 1
            assert "xero-a" not in running.fleet.connections


async def test_a_connection_with_its_day_spent_does_not_delay_another_on_the_same_partition(
    pipeline: Pipeline, unique: str
) -> None:
    # The hot organisation's sandbox allows 2 calls a day: its first bill spends them (contact
    # look-up and creation), then Xero answers X-DayLimit-Remaining: 0 / 429 "day".
    hot_app = create_app(minute_limit=10_000, day_limit=2)
    quiet_app = create_app(minute_limit=10_000)
    async with AsyncExitStack() as stack:
        hot_url = await stack.enter_async_context(serve(hot_app))
        quiet_url = await stack.enter_async_context(serve(quiet_app))
        # Per-minute budgets out of the way: only the hot organisation's day is spent.
        await pipeline.add("xero-hot", hot_url, "hot", DEFAULT_CREDENTIALS.tenant_id, rate_limit_per_minute=6000)
        await pipeline.add("xero-quiet", quiet_url, "quiet", DEFAULT_CREDENTIALS.tenant_id, rate_limit_per_minute=6000)
        results = await stack.enter_async_context(Results(pipeline.bootstrap, pipeline.settings.topics.results))
        deferred = AIOKafkaConsumer(
            *[pipeline.settings.topics.retry("connector", t) for t in (1, 2, 3)],
            bootstrap_servers=pipeline.bootstrap,
            auto_offset_reset="earliest",
        )
        await deferred.start()
        stack.push_async_callback(deferred.stop)
        running: RunningFleet = await stack.enter_async_context(pipeline.fleet())
        bills = [b for n in range(1, 11) for b in (_bill("hot", n), _bill("quiet", n))]
        started = time.monotonic()
        await pipeline.publish(bills)
        quiet = [b.canonical_id for b in bills if b.tenant == "quiet"]
        hot = [b.canonical_id for b in bills if b.tenant == "hot"]
        await results.wait_for(quiet, within=20)
        quiet_done = max(results.arrived[c] for c in quiet) - started

        parked: dict[str, dict[str, str]] = {}
        async with asyncio.timeout(20):
            while len(parked) < len(hot):
                msg = await deferred.getone()
                headers = {k: v.decode() for k, v in msg.headers}
                if headers.get(h.TARGET_CONNECTION) == "xero-hot":
                    parked.setdefault(headers[h.CE_SUBJECT], headers)
        limits = running.fleet.limits("xero-hot")
        assert limits is not None
        assert limits.day_spent()

    assert all(r.outcome is Outcome.SUCCEEDED for c in quiet for r in results.of(c))
    assert quiet_done < 10, f"the quiet tenant's 10 bills took {quiet_done:.1f}s behind the throttled one"
    assert all(results.of(c) == [] for c in hot), "a spent day is no failed attempt: no result, no retry round"
    assert sorted(parked) == sorted(hot)
    for headers in parked.values():
        assert h.RETRY_TIER not in headers, "deferred without using a retry attempt"
        assert float(headers[h.DEFERRED_UNTIL]) > time.time() + 60, "parked until the daily reset"
        assert headers[h.DEFERRED_FROM] == pipeline.settings.topics.canonical("bill")
    assert len(hot_app.state.sandbox.store.all("invoice")) == 0
    assert len(quiet_app.state.sandbox.store.all("invoice")) == 10


async def test_a_dedicated_worker_picks_up_rotated_credentials(pipeline: Pipeline) -> None:
    app = create_app(minute_limit=10_000, tenant_ids=[_org(1)])
    async with serve(app) as url:
        await pipeline.add("xero-own", url, "ta", _org(1), dedicated=True)
        settings = pipeline.settings.model_copy(update={"connections_reload_seconds": 0.2})
        routing = await stored_routing(settings, Routing.model_validate({"tenants": {"ta": {}}}), decrypt=["xero-own"])
        async with (
            Results(pipeline.bootstrap, settings.topics.results) as results,
            run_connector(settings, routing, "xero-own", pipeline.bootstrap, embedded=True, state=pipeline.state),
        ):
            await pipeline.publish([_bill("ta", 1)])
            await results.wait_for([_bill("ta", 1).canonical_id])
            assert results.of(_bill("ta", 1).canonical_id)[0].outcome is Outcome.SUCCEEDED
            stored = await pipeline.store.get("xero-own")
            assert stored is not None
            rotated = sandbox_connection(stored.config, url, replace(DEFAULT_CREDENTIALS, tenant_id=_org(3)))
            await pipeline.store.replace("xero-own", rotated, ["ta"])
            await asyncio.sleep(0.8)
            await pipeline.publish([_bill("ta", 2)])
            await results.wait_for([_bill("ta", 2).canonical_id])
    rotated_result = results.of(_bill("ta", 2).canonical_id)[0]
    assert rotated_result.outcome is Outcome.FAILED
    assert rotated_result.http_status == 403, "booked with the rotated credentials, without a restart"


async def test_the_least_recently_used_connectors_are_closed_beyond_the_bound(tmp_path: Path) -> None:
    settings = Settings(state_url=f"sqlite+aiosqlite:///{tmp_path}/lru.db")
    state = StateStore.from_settings(settings)
    await state.create_all()
    config = {"erp": "xero", "base_url": "https://api.xero.com", "credentials": {"tenant_id": "x"}}
    routing = Routing.model_validate(
        {
            "tenants": {f"t{i}": {"connections": [f"c{i}"]} for i in range(3)},
            "connections": {f"c{i}": config for i in range(3)},
        }
    )
    directory = ConnectionDirectory("xero", routing, settings, None)

    async def publish(*_: object) -> None:
        return None

    async with httpx.AsyncClient() as http:
        fleet = ConnectorFleet("xero", directory, state, http, publish, settings, max_built=2)
        first = await fleet.connection("c0")
        await fleet.connection("c1")
        assert await fleet.connection("c0") is first  # used again: now the most recent
        await fleet.connection("c2")
        assert list(fleet.connections) == ["c0", "c2"], "c1, the least recently used, is dropped"
        rebuilt = await fleet.connection("c1")
        assert rebuilt is not None
        assert list(fleet.connections) == ["c2", "c1"]
        assert fleet.limits("c0") is not None, "a dropped connector's budget is kept"
        await fleet.aclose()
    await state.close()
