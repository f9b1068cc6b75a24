"""Consumer lag measured against the real broker and exported as ledgerflow_consumer_lag_messages."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import REGISTRY

from ledgerflow.core.kafka import ensure_topics
from ledgerflow.core.lag import group_lag, lag_reporter
from tests.lagging import leave_group_behind

pytestmark = pytest.mark.kafka


async def test_lag_counts_messages_behind_the_committed_offsets(kafka_bootstrap: str, unique: str) -> None:
    topic, group = f"lag.{unique}", f"lag-group-{unique}"
    await ensure_topics(kafka_bootstrap, [topic], partitions=1)
    await leave_group_behind(kafka_bootstrap, topic, group, produced=10, consumed=4)

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
