"""``ledgerflow up`` reads reference data, and an operator can ask for a pass now (issue 19).

The stack starts a reference sync of its QuickBooks and Xero connections (sandboxes seeded with
vendors and customers): the first scheduled pass is listed by ``GET
/v1/connections/{name}/reference-sync`` with its counts. A vendor created in QuickBooks afterwards
arrives through ``POST /v1/connections/quickbooks/reference-sync``: 202 with a request id, the
running service performs the pass within seconds, and the request shows ``vendor: 1``. The
endpoints check the scope (redrive to request) and the tenant (another tenant's key: 404).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledgerflow.app.stack import run_stack
from ledgerflow.audit.auth import KeyStore
from ledgerflow.audit.store import AuditStore
from ledgerflow.connectors.quickbooks import QuickBooksConnector
from ledgerflow.core.settings import Settings, demo_routing
from tests.audit.api_helpers import CHEAP_HASHER

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]


async def _until(client: httpx.AsyncClient, url: str, headers: dict[str, str], done: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        resp = await client.get(url, headers=headers)
        assert resp.status_code == 200, resp.text
        if done(resp.json()):
            return resp.json()
        assert time.monotonic() < deadline, resp.json()
        await asyncio.sleep(0.1)


async def test_up_syncs_reference_data_and_runs_a_pass_on_demand(
    kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path: Path, unique: str
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=not kafka_is_embedded,
        topic_prefix=f"refdemand{unique}",
        topic_partitions=1,
        state_url=f"sqlite+aiosqlite:///{tmp_path}/state.db",
    )
    async with run_stack(settings, demo_routing()) as stack:
        assert stack.reference_sync == ["quickbooks", "xero"]
        assert stack.audit_admin_key is not None
        admin = {"authorization": f"Bearer {stack.audit_admin_key}"}
        store = AuditStore(settings.state_url)
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

            connector = stack.connectors["quickbooks"]
            assert isinstance(connector, QuickBooksConnector)
            await connector.client().request(
                "POST",
                "/vendor",
                operation="vendor.create",
                params={"minorversion": "75"},
                json_body={"DisplayName": "Acme Rebar & Mesh"},
            )
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
