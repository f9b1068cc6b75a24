"""A 503 after the publish timeout says the event may still land; the sender's retry books it once.

One ingress replica answers 503 because its producer holds the record longer than the publish
timeout (a 400 ms linger against a 100 ms timeout: the broker acknowledges too late, but the
record lands). The sender retries on another replica, which answers with the same event id. Both
copies of the raw event reach the pipeline; each ERP holds one bill, the second copy is a
``duplicate`` result.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from ledgerflow.app import demo
from ledgerflow.app.stack import run_stack
from ledgerflow.contracts import Outcome, SyncResult
from ledgerflow.core.asgi import serve
from ledgerflow.core.settings import Settings, demo_routing
from ledgerflow.ingress.app import create_app
from ledgerflow.ingress.publisher import KafkaPublisher

pytestmark = pytest.mark.kafka


async def _results(bootstrap: str, topic: str, connections: set[str], want: int) -> dict[str, list[SyncResult]]:
    """Every result on ``topic`` per connection, read until each has ``want`` (or 60 s passed)."""
    found: dict[str, list[SyncResult]] = {}
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        async with asyncio.timeout(60):
            while not all(len(found.get(c, [])) >= want for c in connections):
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        result = SyncResult.model_validate_json(record.value)
                        found.setdefault(result.connection, []).append(result)
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return found


async def test_a_retry_after_a_publish_timeout_books_once(
    kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path: Path, unique: str
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=not kafka_is_embedded,
        topic_prefix=f"late{unique}",
        topic_partitions=2,
        state_url=f"sqlite+aiosqlite:///{tmp_path}/state.db",
    )
    routing = demo_routing()
    body = demo.load_sample(None)
    amount = Decimal(str(orjson.loads(body)["invoice"]["amount"]))
    headers = {"content-type": "application/json", "authorization": "Bearer demo-token"}

    async with run_stack(settings, routing) as stack:
        slow_producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap_servers, acks="all", linger_ms=400)
        await slow_producer.start()
        try:
            slow = create_app(settings, routing, KafkaPublisher(slow_producer, timeout=0.1))
            async with serve(slow, host="127.0.0.1", port=0) as slow_url, httpx.AsyncClient() as client:
                first = await client.post(f"{slow_url}/webhooks/demo/mercoa", content=body, headers=headers)
                assert first.status_code == 503, first.text
                problem = first.json()
                assert "may still be stored" in problem["detail"]
                assert "booked once" in problem["detail"]
                assert first.headers["retry-after"]

                retry = await client.post(f"{stack.ingress_url}/webhooks/demo/mercoa", content=body, headers=headers)
                assert retry.status_code in (200, 202), retry.text
                assert retry.json()["event_id"] in problem["detail"]
        finally:
            await slow_producer.stop()

        results = await _results(stack.bootstrap_servers, settings.topics.results, {"quickbooks", "xero"}, 2)
        totals = await demo.sandbox_totals(stack)
    for connection in ("quickbooks", "xero"):
        outcomes = sorted(r.outcome.value for r in results[connection])
        assert outcomes == [Outcome.DUPLICATE.value, Outcome.SUCCEEDED.value], outcomes
        assert list(totals[connection].values()) == [amount], "one bill, the webhook's amount"
