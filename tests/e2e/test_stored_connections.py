"""A connection added with ``ledgerflow connections add`` is booked by the running stack, beside the
routing's own connections: Mercoa webhook → ingress → Kafka → transformer → the stored Xero
connection (no base_url: the local sandbox)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from ledgerflow.app import demo
from ledgerflow.app.cli import app
from ledgerflow.app.stack import run_stack
from ledgerflow.contracts import Outcome
from ledgerflow.core.connections import stored_routing
from ledgerflow.core.settings import Settings

pytestmark = pytest.mark.kafka


async def test_connection_added_with_the_cli_is_booked(
    kafka_bootstrap: str,
    kafka_is_embedded: bool,
    tmp_path: Path,
    mercoa_sample: bytes,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state_url = f"sqlite+aiosqlite:///{tmp_path}/state.db"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEDGERFLOW_STATE_URL", state_url)
    monkeypatch.setenv("LEDGERFLOW_CONNECTIONS_KEY", Fernet.generate_key().decode())
    monkeypatch.delenv("LEDGERFLOW_ROUTING_FILE", raising=False)
    # The command runs its own event loop: off this test's loop, in a thread.
    added = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["connections", "add", "xero-stored", "--erp", "xero", "--tenant", "demo", "--object", "bill"],
    )
    assert added.exit_code == 0, added.output

    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=not kafka_is_embedded,
        topic_prefix=f"stored{unique}",
        topic_partitions=3,
    )
    assert settings.state_url == state_url
    routing = await stored_routing(settings, settings.load_routing())  # what every command loads
    assert routing.tenants["demo"].connections == ["quickbooks", "xero", "xero-stored"]

    payload = orjson.loads(mercoa_sample)
    canonical_id = f"demo:mercoa:bill:{payload['invoice']['id']}"
    async with run_stack(settings, routing) as stack:
        await demo.post_webhook(stack, mercoa_sample)
        results = await demo.collect_results(
            stack.bootstrap_servers,
            settings.topics.results,
            canonical_id,
            ["quickbooks", "xero", "xero-stored"],
            timeout=60,
        )
        stored = results["xero-stored"]
        assert stored.outcome is Outcome.SUCCEEDED, stored.error
        assert stored.amount == Decimal(str(payload["invoice"]["amount"]))
        assert stored.tenant == "demo"
        # The YAML-routed Xero connection and the stored one share the sandbox: two bills in it.
        totals = await demo.sandbox_totals(stack)
        assert stored.erp_record_id in totals["xero"]
        assert results["xero"].erp_record_id in totals["xero"]
        assert stored.erp_record_id != results["xero"].erp_record_id
