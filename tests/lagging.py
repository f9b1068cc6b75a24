"""A consumer group left behind on purpose, for the consumer-lag tests (plain and over TLS)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def leave_group_behind(
    bootstrap: str,
    topic: str,
    group: str,
    *,
    produced: int,
    consumed: int,
    client_options: Mapping[str, Any] | None = None,
) -> None:
    """Write ``produced`` messages to ``topic``, then commit ``group`` after reading only ``consumed``.

    The group's lag on ``topic`` is then ``produced - consumed`` (one partition).
    """
    options = dict(client_options or {})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **options)
    await producer.start()
    try:
        for n in range(produced):
            await producer.send_and_wait(topic, f"m{n}".encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **options,
    )
    await consumer.start()
    try:
        seen = 0
        async with asyncio.timeout(20):
            while seen < consumed:
                batch = await consumer.getmany(timeout_ms=500, max_records=consumed - seen)
                seen += sum(len(m) for m in batch.values())
        await consumer.commit()
    finally:
        await consumer.stop()
