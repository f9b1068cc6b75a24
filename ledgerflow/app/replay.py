"""``ledgerflow replay``: re-publish dead letters, or a time range of raw events, where they came from.

Two modes:

* **dead letters** (:func:`replay_dead_letters`) — read ``ledgerflow.dlq.<stage>`` for the chosen
  stages and re-publish each selected message to its original topic (header
  ``ledgerflow_dlq_original_topic``). Filters: tenant (``ce_tenant``), time range (the dead
  letter's Kafka timestamp), error reason (``ledgerflow_dlq_reason``).
* **raw** (:func:`replay_raw`) — re-publish the raw events of ``ledgerflow.raw.<source>`` written
  between two times onto the same topic, e.g. after a mapper fix, so the transformer maps them again.

A replayed message keeps its key, value and CloudEvents headers — ``ce_id`` stays the same, so
later stages recognise what they already did (connectors compare the binder's content hash) —
without the ``ledgerflow_dlq_*`` headers, plus ``ledgerflow_replayed_from:
<topic>:<partition>:<offset>``.

Reading uses a consumer without a group (assign, then seek to the first offset at or after
``since`` with ``offsets_for_times``) up to the end offsets captured at start, so a replay always
terminates, even when it appends to the topic it reads (raw mode). Each message is also filtered
on its own timestamp, so a broker with a coarse time index only costs extra reading.
``dry_run`` only counts and lists what would be replayed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from ledgerflow.contracts import headers as h
from ledgerflow.contracts.topics import STAGES
from ledgerflow.core.deadletters import REPLAYED_FROM_HEADER, DeadLetterFilter, DeadLetterInfo, replay_headers
from ledgerflow.core.kafka import kafka_client_options, producer_options
from ledgerflow.core.settings import Settings

__all__ = [
    "REPLAYED_FROM_HEADER",
    "DeadLetterFilter",
    "Progress",
    "ReplayItem",
    "ReplaySummary",
    "parse_time",
    "replay_dead_letters",
    "replay_raw",
]

log = logging.getLogger(__name__)

_MAX_IDLE_POLLS = 15
"""Empty one-second polls in a row after which a replay gives up on unfinished partitions."""

Progress = Callable[[int, int], None]
"""``progress(scanned, total)``: called as messages are read (``total`` = messages in range at start)."""


@dataclass(frozen=True, slots=True)
class ReplayItem:
    """One message selected for replay: where it was read, where it goes, and why it was dead-lettered."""

    topic: str
    partition: int
    offset: int
    timestamp: datetime
    target_topic: str
    tenant: str | None
    ce_id: str | None
    reason: str | None
    detail: str | None = None
    """The dead letter's error detail (``ledgerflow_dlq_detail``); None for raw events."""


@dataclass(slots=True)
class ReplaySummary:
    """What a replay did: messages scanned, replayed (or, in a dry run, that would be), skipped."""

    dry_run: bool
    scanned: int = 0
    replayed: int = 0
    skipped: int = 0
    items: list[ReplayItem] = field(default_factory=list)
    complete: bool = True
    """False when the broker stopped serving before the end offsets captured at start were reached."""


def parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 time (``2026-11-22T09:00:00Z``; without an offset = UTC), or None for None.

    Raises:
        ValueError: ``value`` is not ISO 8601.
    """
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 time (e.g. 2026-11-22T09:00:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _ms(moment: datetime) -> int:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _headers(record: ConsumerRecord[Any, Any]) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in record.headers}


def _replay_headers(record: ConsumerRecord[Any, Any]) -> list[tuple[str, bytes]]:
    return replay_headers(record.headers, record.topic, record.partition, record.offset)


class _Replayer:
    """Scans topics within a time range and re-publishes the records ``select`` picks."""

    def __init__(self, settings: Settings, bootstrap_servers: str, *, embedded: bool, dry_run: bool) -> None:
        self.security = kafka_client_options(settings)
        self.bootstrap = bootstrap_servers
        self.options = producer_options(settings, embedded=embedded)
        self.dry_run = dry_run

    async def run(
        self,
        topics: Sequence[str],
        since: datetime | None,
        until: datetime | None,
        select: Callable[[ConsumerRecord[Any, Any]], ReplayItem | None],
        progress: Progress | None,
    ) -> ReplaySummary:
        summary = ReplaySummary(dry_run=self.dry_run)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None, **self.security
        )
        producer = (
            None
            if self.dry_run
            else AIOKafkaProducer(bootstrap_servers=self.bootstrap, **self.options, **self.security)
        )
        await consumer.start()
        try:
            if producer is not None:
                await producer.start()
            await consumer.topics()  # refresh the cluster metadata
            partitions = [
                TopicPartition(topic, p) for topic in topics for p in sorted(consumer.partitions_for_topic(topic) or [])
            ]
            if not partitions:
                return summary
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            starts = await consumer.beginning_offsets(partitions)
            if since is not None:
                found = await consumer.offsets_for_times({tp: _ms(since) for tp in partitions})
                for tp in partitions:
                    hit = found.get(tp)
                    starts[tp] = ends[tp] if hit is None else min(max(hit.offset, starts[tp]), ends[tp])
            for tp in partitions:
                consumer.seek(tp, starts[tp])
            total = sum(ends[tp] - starts[tp] for tp in partitions)
            pending = {tp for tp in partitions if starts[tp] < ends[tp]}
            until_ms = _ms(until) if until is not None else None
            since_ms = _ms(since) if since is not None else None
            idle = 0
            while pending:
                batches = await consumer.getmany(*pending, timeout_ms=1000, max_records=500)
                idle = 0 if batches else idle + 1
                if idle >= _MAX_IDLE_POLLS:
                    log.warning(
                        "no progress for %d polls; stopping with %d partition(s) unfinished", idle, len(pending)
                    )
                    break
                for tp, records in batches.items():
                    for record in records:
                        if record.offset >= ends[tp]:
                            break
                        summary.scanned += 1
                        in_range = (since_ms is None or record.timestamp >= since_ms) and (
                            until_ms is None or record.timestamp < until_ms
                        )
                        item = select(record) if in_range else None
                        if item is None:
                            summary.skipped += 1
                            continue
                        summary.items.append(item)
                        if producer is not None:
                            await producer.send_and_wait(
                                item.target_topic, record.value, key=record.key, headers=_replay_headers(record)
                            )
                        summary.replayed += 1
                    if progress is not None:
                        progress(summary.scanned, total)
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
            return summary
        finally:
            await consumer.stop()
            if producer is not None:
                await producer.stop()


async def replay_dead_letters(
    settings: Settings,
    bootstrap_servers: str,
    filters: DeadLetterFilter,
    *,
    embedded: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ReplaySummary:
    """Re-publish the dead letters matching ``filters`` to their original topics.

    A dead letter without ``ledgerflow_dlq_original_topic`` is skipped (it cannot be routed back).

    Args:
        settings: topic prefix, Kafka security, producer idempotence.
        bootstrap_servers: Kafka bootstrap servers.
        filters: stages, tenant, time range and reasons.
        embedded: the broker is the embedded Tansu (no producer idempotence unless set).
        dry_run: only count and list.
        progress: called as messages are scanned.

    Raises:
        ValueError: an unknown stage.
        aiokafka.errors.KafkaError: the broker cannot be reached or refuses a write.
    """
    unknown = filters.unknown_stages()
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; stages are {', '.join(STAGES)}")
    reasons = set(filters.reasons)

    def select(record: ConsumerRecord[Any, Any]) -> ReplayItem | None:
        headers = _headers(record)
        info = DeadLetterInfo.of(headers)
        target = info.original_topic
        reason = headers.get(h.DLQ_REASON)
        if not target:
            log.warning("dead letter %s[%d]@%d has no original topic", record.topic, record.partition, record.offset)
            return None
        if filters.tenant is not None and headers.get(h.CE_TENANT) != filters.tenant:
            return None
        if reasons and reason not in reasons:
            return None
        return ReplayItem(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC),
            target_topic=target,
            tenant=headers.get(h.CE_TENANT),
            ce_id=headers.get(h.CE_ID),
            reason=reason,
            detail=info.detail,
        )

    topics = [settings.topics.dlq(stage) for stage in dict.fromkeys(filters.stages)]
    replayer = _Replayer(settings, bootstrap_servers, embedded=embedded, dry_run=dry_run)
    return await replayer.run(topics, filters.since, filters.until, select, progress)


async def replay_raw(
    settings: Settings,
    bootstrap_servers: str,
    source: str,
    *,
    since: datetime,
    until: datetime | None = None,
    tenant: str | None = None,
    embedded: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ReplaySummary:
    """Re-publish the raw events of ``source`` written in [``since``, ``until``) onto the same topic.

    Args:
        settings: topic prefix, Kafka security, producer idempotence.
        bootstrap_servers: Kafka bootstrap servers.
        source: source name (``mercoa``, ``monite``…): topic ``ledgerflow.raw.<source>``.
        since: first message time (inclusive; the Kafka timestamp written by the ingress).
        until: end (exclusive); None = up to the end offsets at start.
        tenant: only this tenant's events (``ce_tenant``).
        embedded: the broker is the embedded Tansu.
        dry_run: only count and list.
        progress: called as messages are scanned.

    Raises:
        aiokafka.errors.KafkaError: the broker cannot be reached or refuses a write.
    """
    topic = settings.topics.raw(source)

    def select(record: ConsumerRecord[Any, Any]) -> ReplayItem | None:
        headers = _headers(record)
        if tenant is not None and headers.get(h.CE_TENANT) != tenant:
            return None
        return ReplayItem(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC),
            target_topic=topic,
            tenant=headers.get(h.CE_TENANT),
            ce_id=headers.get(h.CE_ID),
            reason=None,
        )

    replayer = _Replayer(settings, bootstrap_servers, embedded=embedded, dry_run=dry_run)
    return await replayer.run([topic], since, until, select, progress)
