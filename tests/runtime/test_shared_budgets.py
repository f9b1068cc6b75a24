"""Per-connection ERP budgets shared through the state store (ledgerflow/core/budgets.py, issues 18/19)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ledgerflow.connectors.fleet import FleetConnection
from ledgerflow.connectors.limits import ConnectionLimits, Throttled, vendor_limits
from ledgerflow.connectors.reference_main import READER_MAX_WAIT, ReferenceSyncService, reader_guards
from ledgerflow.core.budgets import SharedBudget
from ledgerflow.core.outbound.client import REQUEST_GUARD
from ledgerflow.core.reference_runs import ReferenceRuns
from ledgerflow.core.settings import ConnectionConfig, Routing, Settings
from ledgerflow.core.state import StateStore
from tests.databases import fresh_database

MINUTE = 1_800_000_000.0  # a minute boundary (and 20:00 UTC): 1_800_000_000 % 60 == 0
assert MINUTE % 60 == 0


async def _stores(url: str) -> tuple[StateStore, StateStore]:
    """Two replicas: two engines on one database."""
    first, second = StateStore(url), StateStore(url)
    await first.create_all()
    await second.create_all()
    return first, second


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with fresh_database("ledgerflow_budget") as url:
        yield url


async def _two_replicas_never_exceed_the_minute(url: str) -> None:
    a, b = await _stores(url)
    try:
        budgets = [SharedBudget(a.engine), SharedBudget(b.engine)]

        async def attempt(i: int) -> bool:
            refused = await budgets[i % 2].acquire("xero-a", per_minute=10, per_day=None, now=MINUTE + 5)
            return refused is None

        granted = await asyncio.gather(*(attempt(i) for i in range(20)))
        assert sum(granted) == 10
        refusal = await budgets[1].acquire("xero-a", per_minute=10, per_day=None, now=MINUTE + 59.9)
        assert refusal is not None
        assert (refusal.reason, refusal.until) == ("shared_minute", MINUTE + 60)
        # Another connection has its own counters.
        assert await budgets[0].acquire("xero-b", per_minute=10, per_day=None, now=MINUTE + 5) is None
        # The window rolls over by its start time; a lagging clock counts into the current window.
        assert await budgets[0].acquire("xero-a", per_minute=10, per_day=None, now=MINUTE + 60) is None
        assert await budgets[1].acquire("xero-a", per_minute=10, per_day=None, now=MINUTE + 59) is None
        assert await budgets[0].used("xero-a") == (2, 12)
    finally:
        await a.close()
        await b.close()


async def _the_daily_cap(url: str) -> None:
    a, b = await _stores(url)
    try:
        one, two = SharedBudget(a.engine), SharedBudget(b.engine)
        for budget, at in ((one, 0), (two, 61), (one, 125)):  # three minutes, three calls
            assert await budget.acquire("xero-a", per_minute=60, per_day=3, now=MINUTE + at) is None
        refusal = await two.acquire("xero-a", per_minute=60, per_day=3, now=MINUTE + 200)
        assert refusal is not None
        midnight = (MINUTE // 86_400 + 1) * 86_400
        assert (refusal.reason, refusal.until) == ("shared_day", midnight)
        assert await one.acquire("xero-a", per_minute=60, per_day=3, now=midnight) is None
    finally:
        await a.close()
        await b.close()


async def test_two_replicas_share_one_minute_on_postgresql(pg_url: str) -> None:
    await _two_replicas_never_exceed_the_minute(pg_url)


async def test_the_daily_cap_on_postgresql(pg_url: str) -> None:
    await _the_daily_cap(pg_url)


async def test_two_replicas_share_one_minute_and_day_on_sqlite(tmp_path: Path) -> None:
    await _two_replicas_never_exceed_the_minute(f"sqlite+aiosqlite:///{tmp_path / 'minute.db'}")
    await _the_daily_cap(f"sqlite+aiosqlite:///{tmp_path / 'day.db'}")


async def test_cost_of_one_acquire_on_postgresql(pg_url: str) -> None:
    (store, other) = await _stores(pg_url)
    try:
        budget = SharedBudget(store.engine)
        await budget.acquire("warm", per_minute=1e9, per_day=None, now=MINUTE)
        rounds = 200
        started = time.perf_counter()
        for i in range(rounds):
            assert await budget.acquire("xero-a", per_minute=1e9, per_day=10**9, now=MINUTE + i / 100) is None
        per_call = (time.perf_counter() - started) / rounds * 1000
        print(f"shared budget acquire on PostgreSQL: {per_call:.2f} ms per call")
        assert per_call < 50
    finally:
        await store.close()
        await other.close()


def _replica(store: StateStore, now: list[float], max_wait: float = 0.5) -> ConnectionLimits:
    limits = vendor_limits("xero", {"rate_limit_per_minute": 4, "max_concurrency": 4})
    return ConnectionLimits(
        "xero-a", "xero", limits, max_wait=max_wait, clock=lambda: now[0], shared=SharedBudget(store.engine)
    )


async def test_a_fleet_replica_defers_when_the_shared_budget_is_spent(tmp_path: Path) -> None:
    a, b = await _stores(f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}")
    try:
        now = [MINUTE + 10]
        first, second = _replica(a, now), _replica(b, now)
        for _ in range(4):  # the whole minute, on the first replica
            await first.before()
        assert second.blocked() == (0.0, "")  # its own bucket is full...
        with pytest.raises(Throttled) as refused:
            await second.before()  # ...but the connection's minute is spent
        assert refused.value.reason == "shared_minute"
        assert refused.value.retry_after == pytest.approx(50)
        wait, reason = second.blocked()
        assert wait == pytest.approx(50.0)
        assert reason == "shared_minute"

        # The fleet defers (no retry attempt, no SyncResult) until the window resets: the failed
        # request, and the next record without asking the store.
        deferred: list[tuple[str, float, str]] = []

        async def defer(connection: str, record: Any, headers: Any, until: float, reason: str) -> None:
            deferred.append((connection, until, reason))

        runtime: Any = SimpleNamespace(limits=second, connection="xero-a", fleet=SimpleNamespace(defer=defer))
        runtime._until = lambda at, wait, reason: FleetConnection._until(runtime, at, wait, reason)
        assert await FleetConnection._defer_failure(runtime, SimpleNamespace(), {}, SimpleNamespace())  # type: ignore[arg-type]
        await FleetConnection.handle(runtime, SimpleNamespace(headers=[]))
        assert [(c, r) for c, _, r in deferred] == [("xero-a", "shared_minute")] * 2
        assert deferred[0][1] >= MINUTE + 60
        assert deferred[1][1] > deferred[0][1]  # the next one queues one turn later

        now[0] = MINUTE + 60  # the next minute: both replicas may send again
        await second.before()
        await first.before()
    finally:
        await a.close()
        await b.close()


async def test_a_spent_shared_day_is_a_spent_day(tmp_path: Path) -> None:
    a, b = await _stores(f"sqlite+aiosqlite:///{tmp_path / 'day.db'}")
    try:
        now = [MINUTE + 10]
        limits = vendor_limits("xero", {"daily_limit": 1})
        first = ConnectionLimits("xero-a", "xero", limits, clock=lambda: now[0], shared=SharedBudget(a.engine))
        second = ConnectionLimits("xero-a", "xero", limits, clock=lambda: now[0], shared=SharedBudget(b.engine))
        await first.before()
        with pytest.raises(Throttled) as refused:
            await second.before()
        assert refused.value.reason == "shared_day"
        assert second.day_spent()
        assert (first.day_used, second.day_used) == (1, 0)
    finally:
        await a.close()
        await b.close()


async def test_the_reader_waits_for_the_shared_minute_and_takes_its_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'reader.db'}"
    fleet, reader = await _stores(url)
    try:
        config = ConnectionConfig(erp="xero", options={"rate_limit_per_minute": 4, "max_concurrency": 4})
        routing = Routing(connections={"xero-a": config})
        assert reader_guards(Settings(), routing, ["xero-a"], reader) == {}
        guards = reader_guards(Settings(shared_budgets=True), routing, ["xero-a"], reader)
        guard = guards["xero-a"]
        assert guard.shared is not None
        assert guard.max_wait == READER_MAX_WAIT

        now = [MINUTE + 59.8]  # the fleet spent this minute, 0.2 s before its end
        writer = _replica(fleet, now)
        for _ in range(4):
            await writer.before()
        guard.clock = lambda: now[0]
        slept: list[float] = []
        real_sleep = asyncio.sleep

        async def sleep(seconds: float) -> None:  # the reader sleeps until the window resets
            slept.append(seconds)
            now[0] += seconds
            await real_sleep(0)

        monkeypatch.setattr("ledgerflow.connectors.limits.asyncio.sleep", sleep)
        reads: list[float] = []

        class Sync:
            async def sync_once(self) -> Any:
                current = REQUEST_GUARD.get()
                assert current is guard
                await current.before()
                reads.append(now[0])
                return SimpleNamespace(published={}, reads=1)

        runs = ReferenceRuns(reader.engine)
        service = ReferenceSyncService({"xero-a": Sync()}, {}, runs, guards=guards)  # type: ignore[dict-item]
        assert await service.run_pass("xero-a") is not None
        assert slept == [pytest.approx(0.2)]
        assert reads == [pytest.approx(MINUTE + 60)]
        assert REQUEST_GUARD.get() is None
        assert await SharedBudget(reader.engine).used("xero-a") == (1, 5)
    finally:
        await fleet.close()
        await reader.close()
