"""Issue 19 against one stack (``ledgerflow up`` with the write-back demo routing), shared by the module.

* ``ledgerflow up`` reads reference data: the first scheduled pass is listed by
  ``GET /v1/connections/{name}/reference-sync`` with its counts; a vendor created afterwards
  arrives through ``POST /v1/connections/quickbooks/reference-sync`` (202, request id, the running
  service performs the pass within seconds); scope and tenant are checked.
* ``ledgerflow sync-reference --connection quickbooks --now`` asks the same running service.
* ``ledgerflow demo --writeback`` end to end ("done when"): a vendor and GL accounts created in
  the QuickBooks sandbox arrive in the INGENIOUS sandbox with custom_id = their QuickBooks Id; an
  INGENIOUS vendor invoice carrying those custom ids is booked in QuickBooks with them; the bill
  paid in QuickBooks is synced back and the INGENIOUS invoice is paid. Asserted on what the
  sandboxes hold, not on the demo's report only.

Every test stands whatever ran before it on the shared stack (each reads only what it created).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from ledgerflow.app.cli import app as cli_app
from ledgerflow.app.stack import RunningStack, run_stack
from ledgerflow.app.writeback_demo import DemoStep, run_writeback_demo, writeback_routing
from ledgerflow.audit.auth import KeyStore
from ledgerflow.audit.store import AuditStore
from ledgerflow.connectors.quickbooks import QuickBooksConnector
from ledgerflow.core.settings import Settings
from tests.audit.api_helpers import CHEAP_HASHER

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningStack]:
    state = tmp_path_factory.mktemp("writeback") / "state.db"
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=not kafka_is_embedded,
        topic_prefix=f"wbdemo{uuid.uuid4().hex[:8]}",
        topic_partitions=1,
        state_url=f"sqlite+aiosqlite:///{state}",
    )
    async with run_stack(settings, writeback_routing()) as running:
        yield running


async def _until(client: httpx.AsyncClient, url: str, headers: dict[str, str], done: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        resp = await client.get(url, headers=headers)
        assert resp.status_code == 200, resp.text
        if done(resp.json()):
            return resp.json()
        assert time.monotonic() < deadline, resp.json()
        await asyncio.sleep(0.1)


async def _new_vendor(stack: RunningStack, name: str) -> str:
    connector = stack.connectors["quickbooks"]
    assert isinstance(connector, QuickBooksConnector)
    response = await connector.client().request(
        "POST", "/vendor", operation="vendor.create", params={"minorversion": "75"}, json_body={"DisplayName": name}
    )
    return str(response.json()["Vendor"]["Id"])


async def test_up_syncs_reference_data_and_runs_a_pass_on_demand(stack: RunningStack) -> None:
    assert stack.reference_sync == ["quickbooks"]
    assert stack.audit_admin_key is not None
    admin = {"authorization": f"Bearer {stack.audit_admin_key}"}
    store = AuditStore(stack.settings.state_url)
    try:
        keys = KeyStore(store.engine, CHEAP_HASHER)
        reader = (await keys.create("reader", ["read"], ["demo"])).key
        other = (await keys.create("other", ["redrive"], ["other-tenant"])).key
    finally:
        await store.close()
    async with httpx.AsyncClient(base_url=stack.audit_url, timeout=10) as client:
        url = "/v1/connections/quickbooks/reference-sync"
        # The pass at start: every seeded record of every kind.
        runs = await _until(client, url, admin, lambda runs: runs and runs[-1]["status"] == "succeeded", 30)
        first = runs[-1]
        assert first["trigger"] == "schedule"
        assert first["counts"]["vendor"] == 3
        assert first["counts"]["gl_account"] == 6
        assert first["started_at"] is not None
        assert first["finished_at"] is not None

        await _new_vendor(stack, f"Acme Rebar & Mesh {uuid.uuid4().hex[:6]}")
        started = time.monotonic()
        accepted = await client.post(url, headers=admin)
        assert accepted.status_code == 202, accepted.text
        request = accepted.json()
        assert request["status"] == "pending"
        assert request["status_url"] == f"{url}/{request['id']}"
        done = await _until(
            client, request["status_url"], admin, lambda run: run["status"] in ("succeeded", "failed"), 10
        )
        elapsed = time.monotonic() - started
        assert done["status"] == "succeeded", done["error"]
        assert done["trigger"] == "api"
        assert done["counts"]["vendor"] == 1
        assert sum(done["counts"].values()) == 1
        assert elapsed < 5, f"the request took {elapsed:.1f}s"
        listed = (await client.get(url, headers=admin)).json()
        assert listed[0]["id"] == request["id"]

        # Scope and tenant: a read key sees the runs but cannot request one; another tenant's
        # key does not see the connection; unknown connections and no credential are refused.
        as_reader = {"authorization": f"Bearer {reader}"}
        assert (await client.get(url, headers=as_reader)).status_code == 200
        refused = await client.post(url, headers=as_reader)
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        as_other = {"authorization": f"Bearer {other}"}
        assert (await client.post(url, headers=as_other)).status_code == 404
        assert (await client.get(url, headers=as_other)).status_code == 404
        assert (await client.post("/v1/connections/nope/reference-sync", headers=admin)).status_code == 404
        assert (await client.post(url)).status_code == 401


async def test_sync_reference_now_asks_the_running_service(
    stack: RunningStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    await _new_vendor(stack, f"Delta Drywall {uuid.uuid4().hex[:6]}")
    monkeypatch.setenv("LEDGERFLOW_STATE_URL", stack.settings.state_url)
    monkeypatch.delenv("LEDGERFLOW_ROUTING_FILE", raising=False)  # the demo routing names quickbooks too
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke, cli_app, ["sync-reference", "--connection", "quickbooks", "--now", "--timeout", "15"]
    )
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.output
    assert "vendor 1" in result.output
    both = await asyncio.to_thread(runner.invoke, cli_app, ["sync-reference", "--connection", "quickbooks", "--all"])
    assert both.exit_code == 2
    assert "--connection, or --all" in both.output


async def test_the_writeback_demo_runs_every_step(stack: RunningStack) -> None:
    assert stack.source_writer
    ingenious = stack.source_sandboxes.ingenious
    assert ingenious is not None
    seen: list[DemoStep] = []
    steps = await run_writeback_demo(stack, timeout=30, on_step=seen.append)

    assert [s.number for s in steps] == [1, 2, 3, 4, 5, 6, 7]
    assert seen == steps
    vendor_id = steps[0].data["vendor_id"]
    account_ids = steps[0].data["account_ids"]
    assert len(account_ids) == 2
    # 2: the on-demand pass read the new vendor and accounts.
    run = steps[1].data["run"]
    assert run["trigger"] == "api"
    assert run["counts"]["vendor"] == 1
    assert run["counts"]["gl_account"] == 2
    # 3: in the INGENIOUS sandbox itself, with custom_id = the QuickBooks Id.
    company = ingenious.find("company", vendor_id)
    assert company is not None
    assert company["name"].startswith("Harbour Ready-Mix")
    for account_id in account_ids:
        assert ingenious.find("entity", account_id) is not None
    # 5: the bill in QuickBooks carries them.
    assert steps[4].data["bill_id"]
    assert f"VendorRef {vendor_id}" in steps[4].detail
    assert f"AccountRef {account_ids[0]}" in steps[4].detail
    # 7: the INGENIOUS invoice is paid by the QuickBooks payment, recorded once.
    invoice = ingenious.invoices[steps[3].data["invoice_id"]]
    assert invoice["status"] == "paid"
    assert len(invoice["payments"]) == 1
    assert invoice["payments"][0]["custom_id"] == steps[5].data["payment_id"]
    assert Decimal(invoice["payments"][0]["amount"]) == Decimal(steps[3].data["total"])
    assert steps[6].data["invoice"]["status"] == "paid"
