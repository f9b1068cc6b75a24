"""Delivery discipline shared by every consuming stage: batches, per-key order, dead letters.

Every worker consumes with FastStream batch subscribers and ``AckPolicy.NACK_ON_ERROR``:

1. a batch of records arrives (across partitions);
2. :func:`run_batch` handles records with the same (topic, partition, key) *in offset order*,
   different keys concurrently up to a bound;
3. each record ends in a durable outcome written to Kafka and acknowledged (its output, its
   result event, or its dead letter — :func:`dead_letter`);
4. only when every record of the batch has its durable outcome does the handler return, and
   FastStream commits the batch's offsets. If anything could not be made durable (the broker
   refused a write, the state store is unreachable: :func:`is_infrastructure_error`), the handler
   raises, FastStream seeks back, and the batch is redelivered; later stages drop what they
   already did by event id / binder (at-least-once, effectively-once).

No record can stall a stage: any other exception a record causes (a bug, an input shape nobody
foresaw) is retried in place a bounded number of times and then becomes a dead letter with the
reason ``unexpected-error``, the exception's type and message and the stage, while the batch's
other records proceed. A redelivered batch never re-publishes what was already made durable: the
stage remembers the records whose outcome was acknowledged (:class:`DurableOutcomes`) and
:func:`run_batch` skips them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

import sqlalchemy.exc
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from faststream.middlewares import AckPolicy

from ledgerflow.contracts import headers as h
from ledgerflow.core import metrics, tracing
from ledgerflow.core.logs import log_context

__all__ = [
    "ConsumedRecord",
    "DeadLetter",
    "DurableOutcomes",
    "PipelinedWrites",
    "batch_subscriber",
    "dead_letter_headers",
    "header_map",
    "is_infrastructure_error",
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
    timestamp: int
    """Kafka timestamp, epoch milliseconds."""


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


def record_log_fields(record: ConsumedRecord) -> dict[str, str]:
    """The log context of a consumed record: ``tenant``, ``source``, ``event_id`` from its CloudEvents headers.

    ``source`` is the last segment of ``ce_source`` (``/tenants/acme/mercoa`` → ``mercoa``);
    headers that are absent are left out.
    """
    fields: dict[str, str] = {}
    for name, value in record.headers:
        if name in ("ce_tenant", "ce_id", "ce_source"):
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            key = {"ce_tenant": "tenant", "ce_id": "event_id", "ce_source": "source"}[name]
            fields[key] = text.rsplit("/", 1)[-1] if key == "source" else text
    return fields


def header_map(record: ConsumedRecord) -> dict[str, str]:
    """The record's headers as ``str → str`` (last value wins; undecodable bytes replaced)."""
    return {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for k, v in record.headers}


class DeadLetter(Exception):  # noqa: N818 - it names the outcome
    """Raised by a stage handler to dead-letter the record: ``reason`` is a short slug, ``detail`` the why.

    ``exception`` is the unexpected exception behind an ``unexpected-error`` dead letter (its type
    goes into the headers).
    """

    def __init__(self, reason: str, detail: str, *, attempts: int = 1, exception: BaseException | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.attempts = attempts
        self.exception = exception


def dead_letter_headers(
    record: ConsumedRecord, stage: str, error: DeadLetter, *, original_topic: str | None = None
) -> dict[str, str]:
    """Headers of a dead letter: the original headers plus the error and the original coordinates.

    ``original_topic`` is where a replay sends the dead letter back to (default: the topic it was
    read from; the connector names the canonical topic of a record read from a retry tier).
    Header names: :mod:`ledgerflow.contracts.headers` (``ledgerflow_dlq_*``).
    """
    headers = header_map(record)
    headers.update(
        {
            h.DLQ_STAGE: stage,
            h.DLQ_REASON: error.reason,
            h.DLQ_DETAIL: error.detail[:4000],
            h.DLQ_ATTEMPTS: str(error.attempts),
            h.DLQ_ORIGINAL_TOPIC: original_topic or record.topic,
            h.DLQ_ORIGINAL_PARTITION: str(record.partition),
            h.DLQ_ORIGINAL_OFFSET: str(record.offset),
        }
    )
    if error.exception is not None:
        headers[h.DLQ_EXCEPTION] = f"{type(error.exception).__module__}.{type(error.exception).__qualname__}"
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


UNEXPECTED_ERROR = "unexpected-error"
"""Dead-letter reason of a record whose handling raised an exception nobody foresaw (after bounded attempts)."""

_INFRASTRUCTURE = (
    KafkaError,
    OSError,  # includes ConnectionError and TimeoutError (asyncio.TimeoutError since 3.11)
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,
)


def is_infrastructure_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the stage's infrastructure failed (not the record).

    Kafka errors (a refused or timed-out write), OS-level connection errors and timeouts, and the
    state store being unreachable (SQLAlchemy operational, interface, disconnection and pool
    timeout errors) are not the record's fault: :func:`run_batch` lets them fail the batch, which
    is redelivered once the infrastructure is back, instead of dead-lettering good records.
    """
    return isinstance(exc, _INFRASTRUCTURE)


class DurableOutcomes:
    """The records of one stage whose outcome was made durable, so a redelivered batch skips them.

    A batch is redelivered from its first offsets when any record of it could not be made
    durable; without this, every record handled before the failure would be handled (and its
    output published) again on each round. The stage calls :meth:`remember` with the records
    :func:`run_batch` completed once their writes are acknowledged. Records are identified by
    topic, partition, offset and a hash of key and value, so a topic re-created with offsets from
    zero is not mistaken for the old one. At most ``capacity`` records are remembered (oldest
    forgotten first): a redelivery starts at the last committed offset, so a few batches' worth
    (batches are at most 500 records) is enough; 10,000 entries cost about 2 MB.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[tuple[str, int, int, int], None] = OrderedDict()

    @staticmethod
    def _id(record: ConsumedRecord) -> tuple[str, int, int, int]:
        return (record.topic, record.partition, record.offset, hash((record.key, record.value)))

    def __contains__(self, record: ConsumedRecord) -> bool:
        return self._id(record) in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def remember(self, records: Iterable[ConsumedRecord]) -> None:
        """Mark ``records`` as durably handled (call only after their writes were acknowledged)."""
        for record in records:
            self._seen[self._id(record)] = None
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)


def _unexpected(exc: Exception, attempts: int) -> DeadLetter:
    return DeadLetter(UNEXPECTED_ERROR, f"{type(exc).__name__}: {exc}", attempts=attempts, exception=exc)


async def run_batch(
    records: Iterable[ConsumedRecord],
    handle: Callable[[ConsumedRecord], Awaitable[None]],
    *,
    stage: str,
    dlq_topic: str,
    publish: Publish,
    concurrency: int,
    attempts: int = 3,
    retry_wait: float = 0.05,
    durable: DurableOutcomes | None = None,
    completed: list[ConsumedRecord] | None = None,
) -> None:
    """Handle a batch: same key in order, different keys concurrently (at most ``concurrency``).

    ``handle`` either returns (its output is durable), raises :class:`DeadLetter` (the record is
    written to ``dlq_topic`` here, unchanged, with the reason in headers), raises an
    infrastructure error (:func:`is_infrastructure_error`: propagated after the other keys
    finish, so the batch is redelivered; the records of that key after it wait for the
    redelivery, keeping their order), or raises anything else: then the record is tried again in
    place, up to ``attempts`` times in all (``retry_wait`` seconds, doubling, between tries), and
    then dead-lettered with reason ``unexpected-error`` (headers name the exception type, its
    message and the stage); its key's later records proceed.

    Records in ``durable`` (made durable by an earlier delivery of this batch) are skipped. Each
    record whose outcome (output or dead letter) was handed over is appended to ``completed``;
    the caller passes those to :meth:`DurableOutcomes.remember` once the writes are acknowledged.

    Raises:
        Exception: the first infrastructure error of any record (or of writing a dead letter),
            after all groups ran.
    """
    groups: dict[tuple[str, int, bytes | None], list[ConsumedRecord]] = defaultdict(list)
    for record in records:
        if durable is not None and record in durable:
            metrics.REDELIVERED_SKIPPED.labels(stage).inc()
            continue
        groups[(record.topic, record.partition, record.key)].append(record)
    gate = asyncio.Semaphore(max(1, concurrency))
    tries = max(1, attempts)

    async def handle_bounded(record: ConsumedRecord) -> None:
        for attempt in range(1, tries + 1):
            try:
                await handle(record)
                return
            except DeadLetter:
                raise
            except Exception as exc:
                if is_infrastructure_error(exc):
                    raise
                if attempt == tries:
                    log.exception(
                        "%s: %s[%d]@%d failed %d time(s) with an unexpected error; dead-lettering it",
                        stage,
                        record.topic,
                        record.partition,
                        record.offset,
                        attempt,
                    )
                    raise _unexpected(exc, attempt) from exc
                metrics.RETRIES.labels(stage, "-").inc()
                await asyncio.sleep(retry_wait * 2 ** (attempt - 1))

    async def run_group(group: list[ConsumedRecord]) -> None:
        async with gate:
            for record in sorted(group, key=lambda r: r.offset):
                with log_context(stage=stage, **record_log_fields(record)), tracing.record_span(stage, record):
                    await run_one(record)

    async def run_one(record: ConsumedRecord) -> None:
        metrics.STAGE_IN_FLIGHT.labels(stage).inc()
        try:
            with metrics.STAGE_DURATION.labels(stage).time():
                await handle_bounded(record)
        except DeadLetter as dl:
            tracing.dead_lettered(dl.reason, dl.detail)
            log.warning("dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, dl)
            await publish(dlq_topic, record.key, record.value or b"", dead_letter_headers(record, stage, dl))
            metrics.DLQ_MESSAGES.labels(stage, dl.reason).inc()
        finally:
            metrics.STAGE_IN_FLIGHT.labels(stage).dec()
        if completed is not None:
            completed.append(record)

    results = await asyncio.gather(*(run_group(g) for g in groups.values()), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
