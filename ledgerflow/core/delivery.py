"""Delivery discipline shared by every consuming stage: batches, per-key order, dead letters.

Every worker consumes with FastStream batch subscribers and ``AckPolicy.NACK_ON_ERROR``:

1. a batch of records arrives (across partitions);
2. :func:`run_batch` handles records with the same (topic, partition, key) *in offset order*,
   different keys concurrently up to a bound;
3. each record ends in a durable outcome written to Kafka and acknowledged (its output, its
   result event, or its dead letter — :func:`dead_letter`);
4. only when every record of the batch has its durable outcome does the handler return, and
   FastStream commits the batch's offsets. If anything could not be made durable (the broker
   refused a write), the handler raises, FastStream seeks back, and the batch is redelivered;
   later stages drop what they already did by event id / binder (at-least-once, effectively-once).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from faststream.kafka import KafkaBroker
from faststream.middlewares import AckPolicy

from ledgerflow.core import metrics

__all__ = [
    "ConsumedRecord",
    "DeadLetter",
    "PipelinedWrites",
    "batch_subscriber",
    "dead_letter_headers",
    "header_map",
    "raw_records",
    "run_batch",
]

log = logging.getLogger(__name__)


class ConsumedRecord(Protocol):
    """The parts of an aiokafka ``ConsumerRecord`` the stages use."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


async def raw_records(message: Any) -> Any:
    """FastStream decoder of batch subscribers: the handler's body is the batch's aiokafka ``ConsumerRecord`` s.

    The stages read keys, headers and offsets themselves. Letting FastStream parse every JSON body
    would cost a decode per message for nothing, and asking for the message through a
    ``msg: KafkaMessage`` parameter made FastStream's dependency injection resolve it in a worker
    thread on every batch (a measurable share of a worker's CPU when batches are small).
    """
    return message.raw_message


def batch_subscriber(
    broker: KafkaBroker,
    *topics: str,
    group_id: str,
    max_records: int,
    fetch_max_wait_ms: int,
    **extra: Any,
) -> Callable[[Callable[[Any], Awaitable[None]]], object]:
    """The subscriber decorator every consuming stage uses, with the delivery discipline of this module.

    Batches of at most ``max_records`` in consumer group ``group_id``, from the earliest offset
    for a new group, offsets committed only when the handler returns (``NACK_ON_ERROR``: an
    exception seeks back and the batch is redelivered), bodies handed over as raw records
    (:func:`raw_records`). ``extra`` goes to FastStream as is (e.g. ``max_poll_interval_ms``).
    """
    decorator: Callable[[Callable[[Any], Awaitable[None]]], object] = broker.subscriber(
        *topics,
        group_id=group_id,
        batch=True,
        max_records=max_records,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=raw_records,
        fetch_max_wait_ms=fetch_max_wait_ms,
        **extra,
    )
    return decorator


def header_map(record: ConsumedRecord) -> dict[str, str]:
    """The record's headers as ``str → str`` (last value wins; undecodable bytes replaced)."""
    return {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for k, v in record.headers}


class DeadLetter(Exception):  # noqa: N818 - it names the outcome
    """Raised by a stage handler to dead-letter the record: ``reason`` is a short slug, ``detail`` the why."""

    def __init__(self, reason: str, detail: str, *, attempts: int = 1) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.attempts = attempts


def dead_letter_headers(record: ConsumedRecord, stage: str, error: DeadLetter) -> dict[str, str]:
    """Headers of a dead letter: the original headers plus the error and the original coordinates."""
    headers = header_map(record)
    headers.update(
        {
            "ledgerflow_dlq_stage": stage,
            "ledgerflow_dlq_reason": error.reason,
            "ledgerflow_dlq_detail": error.detail[:4000],
            "ledgerflow_dlq_attempts": str(error.attempts),
            "ledgerflow_dlq_original_topic": record.topic,
            "ledgerflow_dlq_original_partition": str(record.partition),
            "ledgerflow_dlq_original_offset": str(record.offset),
        }
    )
    return headers


Publish = Callable[[str, bytes | None, bytes, dict[str, str]], Awaitable[Any]]
"""``publish(topic, key, value, headers)`` that returns once the broker acknowledged."""

Enqueue = Callable[[str, bytes | None, bytes, dict[str, str]], Awaitable["asyncio.Future[Any]"]]
"""``enqueue(topic, key, value, headers)``: hand the record to the producer, return its acknowledgement future."""


class PipelinedWrites:
    """The writes of one batch, handed to the producer at once and acknowledged together.

    Awaiting every write's acknowledgement before the next caps a stage at
    ``concurrency / ack latency`` records per second (16 / ~4 ms on a loopback broker).
    :meth:`publish` only waits until the producer has the record (in call order, so records of one
    key keep their order on their partition) and keeps its acknowledgement; :meth:`wait` awaits all
    of them. Call :meth:`wait` before the batch's offsets are committed: the guarantee of
    :func:`run_batch` (every record's outcome durable before the commit) holds at the commit.

    Args:
        enqueue: hands one record to the producer and returns its acknowledgement future (FastStream:
            ``broker.publish(..., no_confirm=True)``).
    """

    def __init__(self, enqueue: Enqueue) -> None:
        self._enqueue = enqueue
        self._acks: list[asyncio.Future[Any]] = []

    async def publish(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        """Hand one record to the producer (a :data:`Publish` whose acknowledgement :meth:`wait` awaits)."""
        self._acks.append(await self._enqueue(topic, key, value, headers))

    async def wait(self) -> int:
        """Await every acknowledgement; return how many writes were acknowledged.

        Raises:
            Exception: the first write the broker refused (after the producer's own retries).
        """
        acks, self._acks = self._acks, []
        results = await asyncio.gather(*acks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return len(results)


async def run_batch(
    records: Iterable[ConsumedRecord],
    handle: Callable[[ConsumedRecord], Awaitable[None]],
    *,
    stage: str,
    dlq_topic: str,
    publish: Publish,
    concurrency: int,
) -> None:
    """Handle a batch: same key in order, different keys concurrently (at most ``concurrency``).

    ``handle`` either returns (its output is durable), raises :class:`DeadLetter` (the record is
    written to ``dlq_topic`` here, unchanged, with the reason in headers), or raises anything else
    (propagated after the other keys finish, so the batch is redelivered).

    Raises:
        Exception: the first unexpected error of any record, after all groups ran.
    """
    groups: dict[tuple[str, int, bytes | None], list[ConsumedRecord]] = defaultdict(list)
    for record in records:
        groups[(record.topic, record.partition, record.key)].append(record)
    gate = asyncio.Semaphore(max(1, concurrency))

    async def run_group(group: list[ConsumedRecord]) -> None:
        async with gate:
            for record in sorted(group, key=lambda r: r.offset):
                metrics.STAGE_IN_FLIGHT.labels(stage).inc()
                try:
                    with metrics.STAGE_DURATION.labels(stage).time():
                        await handle(record)
                except DeadLetter as dl:
                    log.warning("dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, dl)
                    await publish(dlq_topic, record.key, record.value or b"", dead_letter_headers(record, stage, dl))
                    metrics.DLQ_MESSAGES.labels(stage, dl.reason).inc()
                finally:
                    metrics.STAGE_IN_FLIGHT.labels(stage).dec()

    results = await asyncio.gather(*(run_group(g) for g in groups.values()), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
