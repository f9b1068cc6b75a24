"""Feeding several ERPs at once: one tenant's bills go to three ERP connections; one ERP fails for a
while; the other two are not held back, and the failing one catches up without booking twice."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from ledgerflow.app import demo
from ledgerflow.app.stack import run_stack
from ledgerflow.connectors.sandbox_kit import SandboxControl
from ledgerflow.contracts import Outcome, SyncResult
from ledgerflow.core.settings import Routing, Settings
from tests.transformers.test_worker_broker import _drain

pytestmark = pytest.mark.kafka

ERPS = ("quickbooks", "xero", "netsuite")
BILLS = 4


async def test_a_failing_erp_does_not_hold_back_the_others_and_catches_up(
    kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path: Path, mercoa_sample: bytes, unique: str
) -> None:
    retry = {"attempts": 2, "wait_initial": 0.05, "wait_max": 0.1, "park_delays": [1.0, 2.0, 4.0]}
    routing = Routing.model_validate(
        {
            "tenants": {"demo": {"sources": {"mercoa": {"tokens": ["demo-token"]}}, "connections": list(ERPS)}},
            "connections": {
                erp: {"erp": erp, "objects": ["bill", "vendor"], "options": {"retry": retry}} for erp in ERPS
            },
        }
    )
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=not kafka_is_embedded,
        topic_prefix=f"three{unique}",
        topic_partitions=2,
        state_url=f"sqlite+aiosqlite:///{tmp_path}/state.db",
    )
    payload = orjson.loads(mercoa_sample)
    ids = [f"in_three-{unique}-{n}" for n in range(BILLS)]
    async with run_stack(settings, routing) as stack, httpx.AsyncClient() as http:
        # Xero answers 503 to the next 12 requests: every bill's in-place attempts fail and it is
        # parked on the retry topics; QuickBooks and NetSuite are healthy.
        await SandboxControl(http, stack.sandboxes["xero"]).inject(status=503, count=12)
        for invoice_id in ids:
            payload["invoice"]["id"] = invoice_id
            await demo.post_webhook(stack, orjson.dumps(payload))
        # Read every result until each bill's latest result on every connection is a success
        # (Xero catches up from the retry topics); one record's results share a partition, in order.
        finals: dict[str, dict[str, SyncResult]] = {}
        xero_attempts: dict[str, list[Outcome]] = {}
        for _ in range(60):
            found = await _drain(stack.bootstrap_servers, [settings.topics.results], idle=0.5)
            finals, xero_attempts = {}, {}
            for msg in found[settings.topics.results]:
                result = SyncResult.model_validate_json(msg.value)
                finals.setdefault(result.canonical_id.rsplit(":", 1)[-1], {})[result.connection] = result
                if result.connection == "xero":
                    xero_attempts.setdefault(result.canonical_id, []).append(result.outcome)
            done = [
                all(finals.get(i, {}).get(erp) and finals[i][erp].outcome is Outcome.SUCCEEDED for erp in ERPS)
                for i in ids
            ]
            if all(done):
                break
        totals = await demo.sandbox_totals(stack)
        xero_faults_left = (await http.get(f"{stack.sandboxes['xero']}/_sandbox/faults")).json()

    for invoice_id in ids:
        results = finals[invoice_id]
        assert {erp: r.outcome for erp, r in results.items()} == dict.fromkeys(ERPS, Outcome.SUCCEEDED), invoice_id
        # The healthy ERPs finished before the failing one recovered.
        healthy_done = max(results["quickbooks"].finished_at, results["netsuite"].finished_at)
        assert healthy_done < results["xero"].finished_at
    # Xero really failed first: bills had failed (retriable) results before their success, and every
    # bill ends succeeded. Not every bill: the 12 injected 503s are spread over the in-place
    # attempts of the bills in flight, and a bill first tried after they were spent succeeds at once.
    assert any(outcomes[0] is Outcome.FAILED for outcomes in xero_attempts.values())
    assert all(outcomes[-1] is Outcome.SUCCEEDED for outcomes in xero_attempts.values())
    for erp in ERPS:
        assert len(totals[erp]) == BILLS, f"{erp} booked {len(totals[erp])} bills for {BILLS} invoices"
    assert xero_faults_left["remaining"] == 0, "Xero answered every injected 503 (it really was failing)"
