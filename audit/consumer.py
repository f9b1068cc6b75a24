"""The results consumer: ``ledgerflow.results.v1`` and the canonical topics → the audit store.

One FastStream batch subscriber in consumer group :data:`GROUP_ID` reads

* ``ledgerflow.results.v1`` — each ``SyncResult`` becomes an attempt row (idempotent on ``ce_id``)
  and updates its sync record;
* every ``ledgerflow.<object>.v1`` — the latest canonical record per canonical id is kept, so
  ``POST /v1/sync-records/{id}/retry`` can re-publish it without scanning Kafka;
* every ``ledgerflow.raw.<source>`` — each source document as the ingress accepted it, so a
  record's page shows the document it came from (found by trace id: one webhook, one trace);
* every ``ledgerflow.dlq.<stage>`` (ingress, transform, connector, audit) — each dead letter is
  stored byte for byte with its stage, reason and detail, so the API lists and replays it. A dead
  letter is never dead-lettered again (anything is storable), so ``ledgerflow.dlq.audit`` cannot loop.

Commit discipline is :func:`ledgerflow.core.delivery.run_batch` (stage ``audit``): offsets commit only
after every row of the batch is written; a message that cannot be understood goes to
``ledgerflow.dlq.audit`` with the reason; a database failure redelivers the batch.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from faststream.kafka import KafkaBroker
from pydantic import ValidationError

from ledgerflow.audit.store import AuditStore, CanonicalEvent, DeadLetterIn, SourceDocumentIn, document_number
from ledgerflow.contracts import OBJECT_MODELS, Source, SyncResult, tenant_scoped
from ledgerflow.contracts import headers as wire
from ledgerflow.contracts.topics import STAGES
from ledgerflow.core.delivery import (
    ConsumedRecord,
    DeadLetter,
    DurableOutcomes,
    batch_subscriber,
    header_map,
    run_batch,
)
from ledgerflow.core.settings import Settings

__all__ = ["GROUP_ID", "AuditConsumer", "register", "trace_id"]

log = logging.getLogger(__name__)

GROUP_ID = "ledgerflow.audit"
"""The audit's consumer group with the default prefix (``<prefix>.audit`` in general)."""


class AuditConsumer:
    """Writes results and canonical records into the audit store.

    Args:
        store: the audit store (migrated).
        settings: topic prefix.
    """

    def __init__(self, store: AuditStore, settings: Settings) -> None:
        self.store = store
        self.topics = settings.topics
        self._canonical = {self.topics.canonical(obj): obj for obj in OBJECT_MODELS}
        self._dlq = {self.topics.dlq(stage): stage for stage in STAGES}
        self._raw = {self.topics.raw(source.value): source.value for source in Source}

    @property
    def subscribed_topics(self) -> list[str]:
        """The results topic, every canonical, dead-letter and raw topic."""
        return [self.topics.results, *self._canonical, *self._dlq, *self._raw]

    async def handle(self, record: ConsumedRecord) -> None:
        """Store one consumed message.

        Raises:
            DeadLetter: no ``ce_id``, or a body that is not a ``SyncResult`` / canonical record.
            sqlalchemy.exc.SQLAlchemyError: the database refused the write (the batch is redelivered).
        """
        headers = header_map(record)
        source = self._raw.get(record.topic)
        if source is not None:
            await self.store.put_source_document(
                SourceDocumentIn(
                    source=source,
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC),
                    key=record.key,
                    value=record.value or b"",
                    headers=headers,
                )
            )
            return
        stage = self._dlq.get(record.topic)
        if stage is not None:
            await self.store.put_dead_letter(
                DeadLetterIn(
                    stage=stage,
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC),
                    key=record.key,
                    value=record.value or b"",
                    headers=headers,
                )
            )
            return
        event_id = headers.get(wire.CE_ID)
        if not event_id:
            raise DeadLetter("missing-attributes", "message has no ce_id header")
        if record.topic == self.topics.results:
            try:
                result = SyncResult.model_validate_json(record.value or b"")
            except ValidationError as exc:
                raise DeadLetter("invalid-result", str(exc)) from None
            scoped = tenant_scoped(result.tenant, result.canonical_id)
            if scoped != result.canonical_id:  # published before canonical ids carried the tenant
                result = result.model_copy(update={"canonical_id": scoped})
            await self.store.ingest(result, event_id, trace_id=trace_id(headers.get(wire.TRACEPARENT)))
            return
        object_type = self._canonical.get(record.topic)
        if object_type is None:
            raise DeadLetter("unknown-topic", f"the audit does not read {record.topic}")
        try:
            canonical = OBJECT_MODELS[object_type].model_validate_json(record.value or b"")
        except ValidationError as exc:
            raise DeadLetter("invalid-record", str(exc)) from None
        await self.store.put_canonical(
            CanonicalEvent(
                canonical_id=tenant_scoped(canonical.tenant, canonical.canonical_id),
                object_type=object_type,
                tenant=canonical.tenant,
                event_id=event_id,
                headers=headers,
                body=record.value or b"",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                source_id=canonical.source_id[:400],
                document_number=document_number(canonical.model_dump(mode="json")),
            )
        )


def trace_id(traceparent: str | None) -> str | None:
    """The trace id (32 hex chars) of a W3C ``traceparent``, or None when absent or malformed."""
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def register(
    broker: KafkaBroker,
    store: AuditStore,
    settings: Settings,
    *,
    concurrency: int | None = None,
    max_records: int = 500,
    group_id: str | None = None,
) -> AuditConsumer:
    """Subscribe the audit consumer on ``broker`` (not yet started) in consumer group ``group_id``.

    Args:
        broker: FastStream broker; also used to publish dead letters.
        store: the audit store.
        settings: topic prefix.
        concurrency: records of different keys written at once; default 1 on SQLite (one writer), else 8.
        max_records: largest batch fetched at once.
        group_id: consumer group; default ``<prefix>.audit``.

    Returns:
        The consumer (its :meth:`AuditConsumer.handle` is what each message goes through).
    """
    consumer = AuditConsumer(store, settings)
    writers = concurrency or (1 if store.dialect == "sqlite" else 8)
    dlq = settings.topics.dlq("audit")
    durable = DurableOutcomes()

    async def publish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        await broker.publish(value, topic=topic, key=key, headers=headers)

    @batch_subscriber(
        broker,
        *consumer.subscribed_topics,
        group_id=group_id or settings.topics.group("audit"),
        max_records=max_records,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )
    async def on_audit(records: Any) -> None:
        completed: list[ConsumedRecord] = []
        try:
            await run_batch(
                records,
                consumer.handle,
                stage="audit",
                dlq_topic=dlq,
                publish=publish,
                concurrency=writers,
                durable=durable,
                completed=completed,
            )
        finally:
            # Each completed record's row is committed (or its dead letter acknowledged) already.
            durable.remember(completed)

    return consumer
