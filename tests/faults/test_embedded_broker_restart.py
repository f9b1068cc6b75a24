"""Durable acceptance on one machine: the embedded broker dies twice while 600 webhooks arrive.

The stack ``ledgerflow up`` runs (:func:`ledgerflow.app.stack.run_stack`, embedded Tansu, memory
only) receives 600 Mercoa invoices from 8 concurrent senders; after 200 and 400 acceptances the
broker is killed (SIGKILL: everything it held is gone). The watchdog restarts it and recreates the
topics, the ingress outbox relays every accepted webhook without a final result, senders retry the
503s they got meanwhile (as webhook senders do). Every accepted webhook must end as exactly one
bill in the QuickBooks sandbox, and ``/healthz`` must say the broker was restarted twice.
"""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from ledgerflow.app.stack import RunningStack, run_stack
from ledgerflow.core.outbox import Outbox
from ledgerflow.core.settings import Routing, Settings
from ledgerflow.core.state import StateStore
from tests.faults.report import ScenarioReport, record_scenario

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

WEBHOOKS = 600
SENDERS = 8
TOKEN = "restart-token"


def _body(sample: dict[str, Any], invoice_id: str, number: str) -> bytes:
    payload = copy.deepcopy(sample)
    invoice = payload["invoice"]
    invoice["id"] = invoice_id
    invoice["invoiceNumber"] = number
    invoice["amount"] = orjson.Fragment("10.00")
    invoice["lineItems"] = invoice["lineItems"][:1]
    line = invoice["lineItems"][0]
    line.update(amount=orjson.Fragment("10.00"), unitPrice=orjson.Fragment("10.00"), quantity=1)
    return orjson.dumps(payload)


async def _bills(stack: RunningStack) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{stack.sandboxes['quickbooks']}/_sandbox/records", params={"kind": "bill"})
    response.raise_for_status()
    records: list[dict[str, Any]] = response.json()["records"]
    return records


async def test_embedded_broker_restarted_twice_during_600_webhooks_loses_and_duplicates_nothing(
    tmp_path: Path, mercoa_sample: bytes
) -> None:
    tag = uuid.uuid4().hex[:6]
    settings = Settings(
        kafka_bootstrap_servers=None,
        topic_prefix=f"restart{tag}",
        topic_partitions=3,
        state_url=f"sqlite+aiosqlite:///{tmp_path}/state.db",
        outbox_sweep_age_seconds=20,
        outbox_sweep_interval_seconds=2,
        embedded_broker_check_seconds=0.3,
        ingress_publish_timeout_seconds=2,
    )
    routing = Routing.model_validate(
        {
            "tenants": {"faults": {"sources": {"mercoa": {"tokens": [TOKEN]}}, "connections": ["qbo"]}},
            "connections": {
                "qbo": {
                    "erp": "quickbooks",
                    "objects": ["bill", "vendor"],
                    "options": {"rate_limit_per_minute": 600_000, "max_concurrency": 16},
                }
            },
        }
    )
    sample = orjson.loads(mercoa_sample)
    numbers = [f"R{tag}-{n:04d}" for n in range(WEBHOOKS)]
    accepted: set[str] = set()
    retried_503 = 0
    async with run_stack(settings, routing) as stack:
        broker, watchdog = stack.broker, stack.watchdog
        assert broker is not None
        assert watchdog is not None
        queue: asyncio.Queue[str] = asyncio.Queue()
        for number in numbers:
            queue.put_nowait(number)
        kills: list[float] = []

        async def sender() -> None:
            nonlocal retried_503
            async with httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=5.0)) as http:
                while not queue.empty():
                    number = queue.get_nowait()
                    body = _body(sample, f"in_{number}", number)
                    deadline = time.monotonic() + 90
                    while time.monotonic() < deadline:
                        try:
                            response = await http.post(
                                f"{stack.ingress_url}/webhooks/faults/mercoa",
                                content=body,
                                headers={"content-type": "application/json", "authorization": f"Bearer {TOKEN}"},
                            )
                        except httpx.TransportError:
                            await asyncio.sleep(0.2)
                            continue
                        if response.is_success:
                            accepted.add(number)
                            break
                        assert response.status_code == 503, response.text
                        retried_503 += 1
                        await asyncio.sleep(float(response.headers.get("retry-after", "1")) / 4)
                    thresholds = (WEBHOOKS // 3, 2 * WEBHOOKS // 3)
                    if len(kills) < len(thresholds) and len(accepted) >= thresholds[len(kills)]:
                        kills.append(time.monotonic())
                        broker.kill()  # SIGKILL: Tansu's memory-only data is gone

        await asyncio.gather(*(sender() for _ in range(SENDERS)))
        assert len(kills) == 2, "the broker must have been killed twice during the run"
        assert accepted == set(numbers), "every webhook is eventually accepted (503s are retried)"

        deadline = time.monotonic() + 120
        bills: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            bills = await _bills(stack)
            if len({b["record"].get("DocNumber") for b in bills} & accepted) == len(accepted):
                break
            await asyncio.sleep(1.0)
        await asyncio.sleep(2.0)  # anything still in flight would show up as a duplicate now
        bills = await _bills(stack)
        async with httpx.AsyncClient(timeout=10) as client:
            health = (await client.get(f"{stack.ingress_url}/healthz")).json()
        assert watchdog.restarts == 2
        assert health["embedded_broker"]["restarts"] == 2, health
        assert health["embedded_broker"]["state"] == "up", health
        assert broker.running
        state = StateStore(settings.state_url)
        try:
            counts = await Outbox(state).counts()
        finally:
            await state.close()

    per_number: dict[str, int] = {}
    for bill in bills:
        number = bill["record"].get("DocNumber")
        if number in accepted:
            per_number[number] = per_number.get(number, 0) + 1
    lost = len(accepted - set(per_number))
    duplicated = sum(n - 1 for n in per_number.values())
    total = sum(Decimal(str(b["record"].get("TotalAmt", 0))) for b in bills if b["record"].get("DocNumber") in accepted)
    record_scenario(
        ScenarioReport(
            "embedded broker restarted twice / 600 webhooks",
            accepted=len(accepted),
            booked=len(per_number),
            dead_lettered=0,
            lost=lost,
            duplicated=duplicated,
            note=f"{retried_503} 503s retried; outbox {counts.settled}/{counts.accepted} settled" if counts else "",
        )
    )
    assert lost == 0
    assert duplicated == 0
    assert total == Decimal("10.00") * len(accepted)
