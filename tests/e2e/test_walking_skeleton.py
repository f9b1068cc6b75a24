"""End to end through the real broker over TCP: Mercoa webhook → ingress → Kafka → transformer →
QuickBooks and Xero connectors (each its own consumer group) → results, and the sandboxes' books."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from ledgerflow.app import demo
from ledgerflow.app.stack import run_stack
from ledgerflow.contracts import Outcome, SyncResult
from ledgerflow.core.settings import Settings, demo_routing

pytestmark = pytest.mark.kafka


def _settings(kafka_bootstrap: str, embedded: bool, tmp_path: Path, prefix: str) -> Settings:
    return Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=not embedded,
        topic_prefix=prefix,
        topic_partitions=3,
        state_url=f"sqlite+aiosqlite:///{tmp_path}/state.db",
    )


async def test_mercoa_invoice_lands_once_in_quickbooks_and_xero(
    kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path: Path, mercoa_sample: bytes, unique: str
) -> None:
    settings = _settings(kafka_bootstrap, kafka_is_embedded, tmp_path, f"e2e{unique}")
    routing = demo_routing()
    payload = orjson.loads(mercoa_sample)
    canonical_id = f"demo:mercoa:bill:{payload['invoice']['id']}"
    amount = Decimal(str(payload["invoice"]["amount"]))

    async with run_stack(settings, routing) as stack:
        first = await demo.post_webhook(stack, mercoa_sample)
        results = await demo.collect_results(
            stack.bootstrap_servers, settings.topics.results, canonical_id, ["quickbooks", "xero"], timeout=60
        )
        assert set(results) == {"quickbooks", "xero"}
        for result in results.values():
            assert result.outcome is Outcome.SUCCEEDED, result.error
            assert result.erp_record_id
            assert result.amount == amount
            assert result.tenant == "demo"
        totals = await demo.sandbox_totals(stack)
        assert totals["quickbooks"] == {results["quickbooks"].erp_record_id: amount}
        assert totals["xero"] == {results["xero"].erp_record_id: amount}

        # The same delivery again: same event id, and no second bill in either ERP.
        second = await demo.post_webhook(stack, mercoa_sample)
        assert second == first
        again = await _wait_for_duplicates(stack, settings, canonical_id)
        assert {r.outcome for r in again.values()} == {Outcome.DUPLICATE}
        totals = await demo.sandbox_totals(stack)
        assert len(totals["quickbooks"]) == 1
        assert len(totals["xero"]) == 1

        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"{stack.ingress_url}/metrics")).text
        assert (
            'ledgerflow_webhooks_received_total{object="-",outcome="accepted",source="mercoa",tenant="demo"}' in metrics
        )
        # FastStream's Prometheus middleware counts what every worker's subscribers received.
        received = sum(
            sample.value
            for family in REGISTRY.collect()
            if family.name == "faststream_received_messages"
            for sample in family.samples
            if sample.name == "faststream_received_messages_total"
        )
        assert received > 0

        # The audit answers with the local admin key the stack made (what `ledgerflow up` prints),
        # and nothing without it: every attempt of both connections, and the webhook they came from.
        assert stack.audit_admin_key
        async with httpx.AsyncClient(base_url=stack.audit_url) as client:
            assert (await client.get("/v1/sync-records")).status_code == 401
            auth = {"authorization": f"Bearer {stack.audit_admin_key}"}
            for _ in range(100):
                listed = (
                    await client.get("/v1/sync-records", params={"q": payload["invoice"]["id"]}, headers=auth)
                ).json()
                if len(listed["data"]) == 2:
                    break
                await asyncio.sleep(0.1)
            assert {r["connection"] for r in listed["data"]} == {"quickbooks", "xero"}
            # The redelivery is the same event (same result id): stored once, the booking stays the outcome.
            assert [r["outcome"] for r in listed["data"]] == ["succeeded", "succeeded"]
            detail = (await client.get(f"/v1/sync-records/{listed['data'][0]['id']}", headers=auth)).json()
            assert detail["source_document"]["event_id"] == first
            console = await client.post("/console/login", data={"key": stack.audit_admin_key})
            assert console.status_code == 303


async def _wait_for_duplicates(stack: object, settings: Settings, canonical_id: str) -> dict[str, SyncResult]:
    """Read results until both connections have answered the redelivery (the latest result is a duplicate)."""
    import asyncio

    for _ in range(100):
        found = await demo.collect_results(
            settings.kafka_bootstrap_servers or "", settings.topics.results, canonical_id, ["quickbooks", "xero"], 2
        )
        if all(r.outcome is Outcome.DUPLICATE for r in found.values()) and len(found) == 2:
            return found
        await asyncio.sleep(0.2)
    return found


def test_demo_command_prints_two_succeeded_results(kafka_is_embedded: bool, tmp_path: Path) -> None:
    """`ledgerflow demo --json` as a user runs it: its own embedded broker, real processes, exit code 0.

    It leaves no state file behind (the sandboxes' OAuth tokens were in it).
    """
    if not kafka_is_embedded:
        pytest.skip("the demo command starts its own embedded broker")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERFLOW_")}
    env["LEDGERFLOW_UP_STATE_DIR"] = str(tmp_path / "state")
    proc = subprocess.run(
        [sys.executable, "-m", "ledgerflow.app.cli", "demo", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    results = json.loads(proc.stdout)
    assert sorted(r["erp"] for r in results) == ["quickbooks", "xero"]
    assert all(r["outcome"] == "succeeded" and r["erp_record_id"] for r in results)
    assert list((tmp_path / "state").iterdir()) == []


async def test_one_bill_booked_in_all_five_erps_and_the_http_target(
    kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path: Path, mercoa_sample: bytes, unique: str
) -> None:
    """The `ledgerflow demo --all-erps` routing: one tenant fanned out to six ERP connections at once."""
    from ledgerflow.app.demo import all_erps_routing
    from ledgerflow.connectors.registry import ERP_KINDS as ALL_ERPS

    settings = _settings(kafka_bootstrap, kafka_is_embedded, tmp_path, f"all{unique}")
    payload = orjson.loads(mercoa_sample)
    amount = Decimal(str(payload["invoice"]["amount"]))
    async with run_stack(settings, all_erps_routing()) as stack:
        await demo.post_webhook(stack, mercoa_sample)
        results = await demo.collect_results(
            stack.bootstrap_servers,
            settings.topics.results,
            f"demo:mercoa:bill:{payload['invoice']['id']}",
            list(ALL_ERPS),
            timeout=90,
        )
        totals = await demo.sandbox_totals(stack)
    assert set(results) == set(ALL_ERPS)
    for erp, result in results.items():
        assert result.outcome is Outcome.SUCCEEDED, (erp, result.error)
        assert totals[erp][result.erp_record_id or ""] == amount, erp
