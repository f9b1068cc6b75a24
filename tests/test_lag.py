"""Consumer lag measured against the real broker and exported as ledgerflow_consumer_lag_messages."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import REGISTRY

from ledgerflow.core.kafka import ensure_topics
from ledgerflow.core.lag import group_lag, lag_reporter

pytestmark = pytest.mark.kafka


async def test_lag_counts_messages_behind_the_committed_offsets(kafka_bootstrap: str, unique: str) -> None:
    topic, group = f"lag.{unique}", f"lag-group-{unique}"
    await ensure_topics(kafka_bootstrap, [topic], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for n in range(10):
            await producer.send_and_wait(topic, f"m{n}".encode())
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        seen = 0
        async with asyncio.timeout(20):
            while seen < 4:
                batch = await consumer.getmany(timeout_ms=500, max_records=4 - seen)
                seen += sum(len(m) for m in batch.values())
        await consumer.commit()
    finally:
        await consumer.stop()

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    reader = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await reader.start()
    try:
        await reader.topics()
        assert await group_lag(admin, reader, group, [topic]) == {topic: 6}
        assert await group_lag(admin, reader, f"{group}-new", [topic]) == {topic: 10}
    finally:
        await reader.stop()
        await admin.close()

    async with lag_reporter(kafka_bootstrap, [(group, [topic])], interval=0.2):
        for _ in range(50):
            value = REGISTRY.get_sample_value("ledgerflow_consumer_lag_messages", {"group": group, "topic": topic})
            if value is not None:
                break
            await asyncio.sleep(0.1)
    assert value == 6
