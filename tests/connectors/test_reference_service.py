"""The sync-reference service (:func:`run_reference_sync`): schedule, on-demand requests, runs table, health.

Against the QuickBooks and Xero sandboxes (vendors seeded) and the real broker: both connections
get a pass at start, recorded as ``schedule`` runs with counts per kind; a request written to
``reference_sync_requests`` is claimed and run within seconds and its row carries what it read;
a failing connection records the error and does not stop the other one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from ledgerflow.connectors.quickbooks import sandbox as qbo_sandbox
from ledgerflow.connectors.reference_main import (
    ReferenceSchedule,
    reference_connections,
    reference_schedule,
    run_reference_sync,
)
from ledgerflow.connectors.sandbox_kit import serve
from ledgerflow.connectors.xero import sandbox as xero_sandbox
from ledgerflow.core.reference_runs import ReferenceRun, ReferenceRuns
from ledgerflow.core.settings import ConnectionConfig, Routing, Settings
from ledgerflow.core.state import StateStore

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(60)]


def test_schedule_options() -> None:
    assert reference_schedule(ConnectionConfig(erp="xero")) == ReferenceSchedule(900.0, True)
    config = ConnectionConfig(erp="xero", options={"reference_sync": {"interval_seconds": 60, "enabled": False}})
    assert reference_schedule(config) == ReferenceSchedule(60.0, False)
    for bad, message in (
        ({"interval_seconds": 0}, "interval_seconds: Input should be greater than 0"),
        ({"interval_seconds": "soon"}, "interval_seconds: Input should be a valid number"),
        ({"enabled": "sometimes"}, "enabled: Input should be a valid boolean"),
        ({"every": 5}, "reference_sync.every: Extra inputs are not permitted"),
        ("900", "reference_sync: Input should be a valid dictionary"),
    ):
        with pytest.raises(ValueError, match=message):
            reference_schedule(ConnectionConfig(erp="xero", options={"reference_sync": bad}))
    routing = Routing.model_validate(
        {
            "tenants": {"acme": {"sources": {}, "connections": ["q", "x", "off", "hook"]}},
            "connections": {
                "q": {"erp": "quickbooks"},
                "x": {"erp": "xero"},
                "off": {"erp": "xero", "options": {"reference_sync": {"enabled": False}}},
                "hook": {"erp": "http", "base_url": "https://example.test", "options": {"paths": {}}},
            },
        }
    )
    assert reference_connections(routing) == ["q", "x"]


async def _wait_for(runs: ReferenceRuns, run_id: str, seconds: float = 15.0) -> ReferenceRun:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        found = await runs.get(run_id)
        if found is not None and found.finished:
            return found
        assert asyncio.get_running_loop().time() < deadline, f"request {run_id} not finished: {found}"
        await asyncio.sleep(0.1)


async def _first_runs(runs: ReferenceRuns, connections: list[str]) -> dict[str, ReferenceRun]:
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        found = {c: await runs.recent(c, 1) for c in connections}
        if all(r and r[0].finished for r in found.values()):
            return {c: r[0] for c, r in found.items()}
        assert asyncio.get_running_loop().time() < deadline, found
        await asyncio.sleep(0.1)


@pytest.fixture
async def sandboxes(shared_dir: Path) -> AsyncIterator[Routing]:
    qbo = qbo_sandbox.create_app(spec_path=shared_dir / "specs" / "Finance.xsd", seed_parties=True)
    xero = xero_sandbox.create_app(
        spec_path=shared_dir / "specs" / "xero_accounting.yaml", seed_parties=True, minute_limit=10_000
    )
    async with serve(qbo) as qbo_url, serve(xero) as xero_url:
        yield Routing.model_validate(
            {
                "tenants": {"acme": {"sources": {}, "connections": ["qbo-main", "xero-main"]}},
                "connections": {
                    "qbo-main": qbo_sandbox.sandbox_connection(ConnectionConfig(erp="quickbooks"), qbo_url),
                    "xero-main": xero_sandbox.sandbox_connection(ConnectionConfig(erp="xero"), xero_url),
                },
            }
        )


async def test_scheduled_and_requested_passes(
    sandboxes: Routing, kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path: Path
) -> None:
    settings = Settings(topic_prefix=f"refsvc{uuid.uuid4().hex[:8]}", topic_partitions=1)
    state = StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    await state.create_all()
    runs = ReferenceRuns(state.engine)
    try:
        async with run_reference_sync(
            settings,
            sandboxes,
            reference_connections(sandboxes),
            kafka_bootstrap,
            embedded=kafka_is_embedded,
            state=state,
            request_poll_seconds=0.2,
            health_port=0,
            health_host="127.0.0.1",
        ) as running:
            assert running.connections == ["qbo-main", "xero-main"]
            assert running.service.schedules["qbo-main"].interval_seconds == 900.0
            first = await _first_runs(runs, running.connections)
            assert first["qbo-main"].trigger == "schedule"
            assert first["qbo-main"].status == "succeeded", first["qbo-main"].error
            assert first["qbo-main"].counts == {
                "vendor": 3,
                "customer": 2,
                "gl_account": 6,
                "tax_rate": 5,
                "tracking": 4,
                "project": 1,
                "payment": 0,
            }
            assert first["xero-main"].counts["vendor"] == 3
            assert first["xero-main"].started_at is not None
            assert first["xero-main"].finished_at is not None

            # A vendor added in QuickBooks; an operator asks for a pass now.
            qbo = sandboxes.connections["qbo-main"]
            async with httpx.AsyncClient(base_url=str(qbo.base_url)) as client:
                token = await client.post(
                    qbo_sandbox.TOKEN_PATH,
                    data={
                        "grant_type": "refresh_token",
                        "refresh_token": qbo_sandbox.DEFAULT_CREDENTIALS.refresh_token,
                    },
                    auth=(qbo_sandbox.DEFAULT_CREDENTIALS.client_id, qbo_sandbox.DEFAULT_CREDENTIALS.client_secret),
                )
                assert token.status_code == 200, token.text
                created = await client.post(
                    f"/v3/company/{qbo_sandbox.DEFAULT_CREDENTIALS.realm_id}/vendor",
                    params={"minorversion": "75"},
                    json={"DisplayName": "Acme Rebar & Mesh"},
                    headers={"authorization": f"Bearer {token.json()['access_token']}"},
                )
                assert created.status_code == 200, created.text
            started = asyncio.get_running_loop().time()
            request_id = await runs.request("qbo-main", requested_by="test")
            done = await _wait_for(runs, request_id)
            assert asyncio.get_running_loop().time() - started < 5
            assert done.trigger == "api"
            assert done.status == "succeeded"
            assert done.counts["vendor"] == 1
            assert sum(done.counts.values()) == 1
            assert done.requested_by == "test"
            assert (await runs.recent("qbo-main", 5))[0].id == request_id

            assert running.health_url is not None
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"{running.health_url}/healthz")).status_code == 200
                assert (await client.get(f"{running.health_url}/readyz")).status_code == 200
                scraped = (await client.get(f"{running.health_url}/metrics")).text
            assert 'ledgerflow_reference_syncs_total{connection="qbo-main",outcome="ok"}' in scraped
            assert 'ledgerflow_reference_sync_last_success_timestamp_seconds{connection="qbo-main"}' in scraped
    finally:
        await state.close()


async def test_a_failing_connection_records_its_error_and_the_other_runs(
    sandboxes: Routing, kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path: Path
) -> None:
    broken = sandboxes.connections["xero-main"].model_copy(update={"base_url": "http://127.0.0.1:9"})
    routing = sandboxes.model_copy(update={"connections": {**sandboxes.connections, "xero-main": broken}})
    settings = Settings(topic_prefix=f"refsvc{uuid.uuid4().hex[:8]}", topic_partitions=1)
    state = StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    await state.create_all()
    runs = ReferenceRuns(state.engine)
    try:
        # A pass left "running" by a killed service is failed at start.
        stale = await runs.start("qbo-main")
        async with run_reference_sync(
            settings,
            routing,
            ["qbo-main", "xero-main"],
            kafka_bootstrap,
            embedded=kafka_is_embedded,
            state=state,
            schedule=False,
            request_poll_seconds=0.2,
        ):
            abandoned = await runs.get(stale)
            assert abandoned is not None
            assert abandoned.status == "failed"
            assert abandoned.error == "the service stopped during the pass"
            ids = [await runs.request(name, trigger="cli") for name in ("xero-main", "qbo-main")]
            failed, ok = [await _wait_for(runs, i, 40) for i in ids]
        assert failed.status == "failed"
        assert failed.error
        assert failed.trigger == "cli"
        assert ok.status == "succeeded"
        assert ok.counts["gl_account"] == 6
        # schedule=False: only the requested passes ran.
        assert [r.trigger for r in await runs.recent("qbo-main")] == ["cli", "schedule"]
    finally:
        await state.close()


def test_config_check_plans_the_reference_sync(tmp_path: Path) -> None:
    from ledgerflow.app.config_check import check_config

    routing = tmp_path / "routing.yaml"
    routing.write_text(
        "tenants: {acme: {sources: {}, connections: [q, x]}}\n"
        "connections:\n"
        "  q: {erp: quickbooks}\n"
        "  x: {erp: xero, options: {reference_sync: {interval_seconds: 1800}}}\n"
    )
    report = check_config(Settings(routing_file=routing))
    assert report.ok, report.problems
    plan = report.plan["services"]["sync_reference"]
    assert plan["connections"] == {
        "q": {"erp": "quickbooks", "interval_seconds": 900.0, "credentials_mounted_here": True},
        "x": {"erp": "xero", "interval_seconds": 1800.0, "credentials_mounted_here": True},
    }
    routing.write_text(routing.read_text().replace("interval_seconds: 1800", "interval_seconds: -1"))
    bad = check_config(Settings(routing_file=routing))
    assert any("reference_sync.interval_seconds" in p for p in bad.problems), bad.problems
