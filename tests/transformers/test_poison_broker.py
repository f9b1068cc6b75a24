"""Issue 13's poison webhook through the real broker: 50 good Mercoa invoices and one whose ``metadata``
is a list. Before, the mapper's AttributeError failed the batch and it was redelivered ~15 times a
second with its good records re-published each time (8,251 canonical records for 50 invoices in
40 s) while nothing behind it moved. Now: exactly 50 bills, one ``invalid-record`` dead letter,
and nothing more while the worker keeps running."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from ledgerflow.core.kafka import broker_from_settings, ensure_topics
from ledgerflow.core.settings import Routing, Settings
from ledgerflow.core.state import StateStore
from ledgerflow.transformers.enrichment import EnricherSet
from ledgerflow.transformers.worker import register
from tests.transformers.test_worker_broker import _drain, _headers

pytestmark = pytest.mark.kafka


async def test_a_poison_invoice_among_fifty_is_dead_lettered_once_and_the_rest_mapped_once(
    kafka_bootstrap: str, kafka_is_embedded: bool, unique: str, tmp_path: Path, shared_dir: Path
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=not kafka_is_embedded,
        topic_prefix=f"tp{unique}",
    )
    await ensure_topics(kafka_bootstrap, settings.topics.all(), partitions=2)
    sample = json.loads((shared_dir / "samples/mercoa/invoice.created.json").read_text(encoding="utf-8"))
    spec = {"event_type": "invoice.created", "tenant": "acme"}
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for n in range(50):
            payload = copy.deepcopy(sample)
            payload["invoice"]["id"] = f"in_good_{n}"
            if n == 10:  # the poison shares its partition key with good records before and after it
                poison = copy.deepcopy(sample)
                poison["invoice"]["metadata"] = ["not", "an", "object"]
                body = json.dumps(poison).encode()
                await producer.send_and_wait(
                    settings.topics.raw("mercoa"), body, key=b"same", headers=_headers("mercoa", spec, body, "poison")
                )
            body = json.dumps(payload).encode()
            await producer.send_and_wait(
                settings.topics.raw("mercoa"),
                body,
                key=b"same" if n % 5 == 0 else f"k{n}".encode(),
                headers=_headers("mercoa", spec, body, f"e{n}"),
            )
    finally:
        await producer.stop()

    broker = broker_from_settings(settings, kafka_bootstrap, embedded=kafka_is_embedded)
    store = StateStore(f"sqlite+aiosqlite:///{tmp_path}/s.db")
    topics = [settings.topics.canonical("bill"), settings.topics.dlq("transform")]
    async with httpx.AsyncClient() as http:
        register(broker, settings, EnricherSet(Routing(), http, store), max_records=20)
        await broker.start()
        try:
            for _ in range(40):
                found = await _drain(kafka_bootstrap, topics, idle=0.5)
                if len(found[topics[0]]) >= 50 and found[topics[1]]:
                    break
            await asyncio.sleep(2)  # the worker keeps running: nothing may be redelivered or re-published
            found = await _drain(kafka_bootstrap, topics, idle=0.5)
        finally:
            await broker.stop()
            await store.close()

    bills = found[topics[0]]
    assert len(bills) == 50
    assert len({json.loads(m.value)["source_id"] for m in bills}) == 50
    (dead,) = found[topics[1]]
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers["ledgerflow_dlq_reason"] == "invalid-record"
    assert "invoice.metadata must be a JSON object, got array" in headers["ledgerflow_dlq_detail"]
