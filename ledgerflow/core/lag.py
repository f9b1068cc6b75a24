"""Consumer lag: how many messages each consumer group is behind, exported as a Prometheus gauge.

``ledgerflow_consumer_lag_messages{group, topic}`` = sum over the topic's partitions of
(log end offset − the group's committed offset); a partition the group never committed counts
from the log start. Every worker process reports the groups it consumes in, every ``interval``
seconds, so the alert rules and KEDA see the same number.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from ledgerflow.core.metrics import CONSUMER_LAG

__all__ = ["group_lag", "lag_reporter"]

log = logging.getLogger(__name__)


async def group_lag(
    admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, group: str, topics: Sequence[str]
) -> dict[str, int]:
    """Messages ``group`` is behind on each of ``topics`` (topics the broker does not know are left out).

    Raises:
        aiokafka.errors.KafkaError: the broker cannot answer.
    """
    partitions = [
        TopicPartition(topic, p) for topic in topics for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    if not partitions:
        return {}
    committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
    ends = await consumer.end_offsets(partitions)
    starts = await consumer.beginning_offsets(partitions)
    lag: dict[str, int] = {}
    for tp in partitions:
        meta = committed.get(tp)
        position = meta.offset if meta is not None and meta.offset >= 0 else starts.get(tp, 0)
        lag[tp.topic] = lag.get(tp.topic, 0) + max(0, ends.get(tp, 0) - position)
    return lag


@contextlib.asynccontextmanager
async def lag_reporter(
    bootstrap_servers: str,
    groups: Iterable[tuple[str, Sequence[str]]],
    *,
    interval: float = 15.0,
    client_options: Mapping[str, Any] | None = None,
) -> AsyncIterator[None]:
    """Update :data:`~ledgerflow.core.metrics.CONSUMER_LAG` for each (group, topics) every ``interval`` s.

    Runs in the background while the block runs; broker errors are logged and retried at the
    next interval (lag is an observation, never a reason to stop a worker). ``client_options``: the
    connection's security (:func:`ledgerflow.core.kafka_security.kafka_client_options`).
    """
    watched = [(group, list(topics)) for group, topics in groups]

    async def loop() -> None:
        options = dict(client_options or {})
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **options)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False, **options)
        started = False
        try:
            while True:
                try:
                    if not started:
                        await admin.start()
                        await consumer.start()
                        started = True
                    await consumer.topics()  # refreshes the cluster metadata
                    for group, topics in watched:
                        for topic, behind in (await group_lag(admin, consumer, group, topics)).items():
                            CONSUMER_LAG.labels(group, topic).set(behind)
                except (KafkaError, OSError, TimeoutError) as exc:
                    log.warning("consumer lag not measured: %s", exc)
                await asyncio.sleep(interval)
        finally:
            if started:
                await consumer.stop()
                await admin.close()

    task = asyncio.create_task(loop(), name="ledgerflow-lag-reporter")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
