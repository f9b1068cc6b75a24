"""The transformer worker: ``ledgerflow.raw.<source>`` → ``ledgerflow.<object>.v1`` (or the DLQ).

For each raw event: pick the route of its source (``ledgerflow.transformers.registry.ROUTERS``), run the
route's enrichment if any, run the pure mapper, and publish each canonical record with a
deterministic event id derived from the raw event id and the canonical id. The writes of a batch
are pipelined (:class:`~ledgerflow.core.delivery.PipelinedWrites`): handed to the producer as soon as
they are mapped, acknowledged together before the batch's offsets are committed. Unknown event types
are counted and skipped; records that fail validation go to ``ledgerflow.dlq.transform`` with
the reason in headers; so do events whose enrichment failed after the client's bounded retries
(reason ``enrichment-failed``, replayable once the source API is back). Commit discipline: see
:mod:`ledgerflow.core.delivery`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import orjson
from faststream.kafka import KafkaBroker
from pydantic import ValidationError

from ledgerflow.contracts import CanonicalRecord, ContractError
from ledgerflow.contracts import headers as wire
from ledgerflow.contracts.events import EventAttributes, MissingAttributeError, deterministic_id
from ledgerflow.core import metrics
from ledgerflow.core.delivery import (
    ConsumedRecord,
    DeadLetter,
    DurableOutcomes,
    PipelinedWrites,
    Publish,
    batch_subscriber,
    header_map,
    run_batch,
)
from ledgerflow.core.outbound.json_api import EnrichmentError
from ledgerflow.core.settings import Settings
from ledgerflow.transformers.base import Enrichers, RawEvent, Router, SkipEvent
from ledgerflow.transformers.registry import ROUTERS

__all__ = ["GROUP_ROLE", "Transformer", "raw_topics", "register"]

RAW_EVENT_EXTENSION = wire.CE_RAW_EVENT.removeprefix(wire.CE_PREFIX)
"""CloudEvents extension carrying the accepted webhook's event id (``ce_rawevent``)."""

log = logging.getLogger(__name__)

GROUP_ROLE = "transformer"
"""Every transformer replica consumes in group ``<prefix>.transformer`` (``ledgerflow.transformer``)."""


class Transformer:
    """Maps raw events to canonical records and publishes them.

    Args:
        broker: the FastStream broker used to publish outputs and dead letters.
        settings: topic prefix.
        enrichers: enrichment ports handed to routes that need them.
        tenant_routers: ``(tenant, source)`` → router of a tenant's declarative mapping file
            (:func:`ledgerflow.transformers.declarative.tenant_routers`); they take precedence over
            the source's built-in router for that tenant.
    """

    def __init__(
        self,
        broker: KafkaBroker,
        settings: Settings,
        enrichers: Enrichers,
        tenant_routers: Mapping[tuple[str, str], Router] | None = None,
    ) -> None:
        self.broker = broker
        self.topics = settings.topics
        self.enrichers = enrichers
        self.tenant_routers = dict(tenant_routers or {})
        self.durable = DurableOutcomes()

    async def publish(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        """Publish and wait for the broker's acknowledgement."""
        await self.broker.publish(value, topic=topic, key=key, headers=headers)

    async def enqueue(
        self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str]
    ) -> asyncio.Future[Any]:
        """Hand the record to the producer; return the future of the broker's acknowledgement.

        Raises:
            TypeError: the broker returned something other than an acknowledgement future.
            aiokafka.errors.KafkaError: the producer refused the record (buffer, size, closed).
        """
        ack = await self.broker.publish(value, topic=topic, key=key, headers=headers, no_confirm=True)
        if not isinstance(ack, asyncio.Future):  # FastStream returns the producer's future with no_confirm
            raise TypeError(f"expected the acknowledgement future from the broker, got {type(ack).__name__}")
        return ack

    async def handle_batch(self, records: Sequence[ConsumedRecord], *, concurrency: int) -> None:
        """Map a batch (:func:`~ledgerflow.core.delivery.run_batch`), its outputs and dead letters pipelined.

        Every output is handed to the producer as soon as it is mapped; the acknowledgements are
        awaited together at the end (:class:`~ledgerflow.core.delivery.PipelinedWrites`), before the
        offsets are committed. Records already made durable by an earlier delivery of the batch
        are skipped (:class:`~ledgerflow.core.delivery.DurableOutcomes`); one that raises an
        unexpected error is dead-lettered after bounded attempts and the others proceed.

        Raises:
            Exception: a write was refused (the batch is redelivered; outputs have deterministic ids).
        """
        writes = PipelinedWrites(self.enqueue)
        completed: list[ConsumedRecord] = []
        try:
            await run_batch(
                records,
                lambda record: self.handle(record, writes.publish),
                stage="transform",
                dlq_topic=self.topics.dlq("transform"),
                publish=writes.publish,
                concurrency=concurrency,
                durable=self.durable,
                completed=completed,
            )
        finally:
            await writes.wait()
            # Every write of the completed records is acknowledged: a redelivery of this batch
            # (another record's write failed) skips them instead of publishing them again.
            self.durable.remember(completed)

    def _raw_event(self, record: ConsumedRecord, source: str) -> RawEvent:
        try:
            attrs = EventAttributes.from_headers(header_map(record))
        except MissingAttributeError as exc:
            raise DeadLetter("missing-attributes", str(exc)) from None
        if attrs.extensions.get("direction") == "inbound":
            # Read from an ERP (sync-reference): not a source's webhook, never mapped into a booking.
            raise DeadLetter("inbound-record", "a record read from an ERP (ce_direction: inbound) is never mapped")
        try:
            payload = orjson.loads(record.value or b"")
        except orjson.JSONDecodeError as exc:
            raise DeadLetter("malformed-json", f"raw event body is not JSON: {exc}") from None
        ext = attrs.extensions
        return RawEvent(
            tenant=attrs.tenant,
            source=source,
            event_type=ext.get("sourceevent") or attrs.type.rsplit(f"{source}.", 1)[-1],
            payload=payload,
            body=record.value or b"",
            attributes=attrs,
            object_hint=ext.get("object"),
            method=ext.get("method", "POST"),
        )

    async def handle(self, record: ConsumedRecord, publish: Publish | None = None) -> None:
        """Map one raw record and publish its canonical records (through ``publish``, default :meth:`publish`).

        Raises:
            DeadLetter: the event cannot be mapped (reason in the message).
            Exception: publishing failed (the batch is redelivered).
        """
        source = record.topic.rsplit(".", 1)[-1]
        router = ROUTERS.get(source)
        if router is None:
            raise DeadLetter("unknown-source", f"no transformer for source {source!r}")
        event = self._raw_event(record, source)
        router = self.tenant_routers.get((event.tenant, source), router)
        object_label = event.object_hint or "-"
        try:
            route = router(event)
            object_label = route.object_type
            if route.enrich is not None:
                event = await route.enrich(event, self.enrichers)
            records = route.mapper(event)
        except SkipEvent as skip:
            metrics.TRANSFORM_EVENTS.labels(source, object_label, "skipped").inc()
            log.info("skipped %s event %s: %s", source, event.event_type, skip.reason)
            return
        except (ContractError, ValidationError) as exc:
            metrics.TRANSFORM_EVENTS.labels(source, object_label, "dead_lettered").inc()
            raise DeadLetter("invalid-record", _reason(exc)) from None
        except EnrichmentError as exc:
            # The enrichment client already retried (bounded, honouring Retry-After): park the event
            # in the dead-letter topic, from where `ledgerflow replay dlq --reason enrichment-failed`
            # sends it back once the source API is healthy, instead of blocking the partition.
            metrics.TRANSFORM_EVENTS.labels(source, object_label, "dead_lettered").inc()
            raise DeadLetter("enrichment-failed", str(exc)) from None
        except DeadLetter:
            metrics.TRANSFORM_EVENTS.labels(source, object_label, "dead_lettered").inc()
            raise
        for canonical in records:
            await self._publish_record(canonical, event.attributes, publish or self.publish)
        metrics.TRANSFORM_EVENTS.labels(source, object_label, "mapped").inc()

    async def _publish_record(self, record: CanonicalRecord, raw: EventAttributes, publish: Publish) -> None:
        object_type = record.object_type
        attrs = raw.derive(
            id=deterministic_id(raw.id, record.canonical_id),
            type=f"io.ledgerflow.{object_type}.v1",
            subject=record.canonical_id,
        )
        if RAW_EVENT_EXTENSION not in raw.extensions:
            # The accepted webhook's id travels on to the results: it settles the ingress outbox.
            attrs = replace(attrs, extensions={**raw.extensions, RAW_EVENT_EXTENSION: raw.id})
        await publish(
            self.topics.canonical(object_type),
            record.canonical_id.encode(),
            record.model_dump_json().encode(),
            attrs.to_headers(),
        )


def _reason(exc: ContractError | ValidationError) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors(include_url=False):
            loc = ".".join(str(p) for p in err["loc"]) or "record"
            parts.append(f"{loc}: {err['msg']}")
        return "; ".join(parts)
    return str(exc)


def raw_topics(settings: Settings) -> list[str]:
    """The topics the transformer consumes: ``<prefix>.raw.<source>`` of every routed source (``ROUTERS``)."""
    return [settings.topics.raw(source) for source in ROUTERS]


def register(
    broker: KafkaBroker,
    settings: Settings,
    enrichers: Enrichers,
    *,
    concurrency: int = 16,
    max_records: int = 500,
    tenant_routers: Mapping[tuple[str, str], Router] | None = None,
) -> Transformer:
    """Subscribe a transformer to every raw topic on ``broker`` (consumer group ``<prefix>.transformer``).

    Args:
        broker: a not-yet-started FastStream broker.
        settings: topic prefix.
        enrichers: enrichment ports.
        concurrency: records of different keys handled at once within a batch.
        max_records: largest batch fetched at once.
        tenant_routers: routers of tenants' declarative mapping files (see :class:`Transformer`).

    Returns:
        The transformer (its :meth:`Transformer.handle` is what each record goes through).
    """
    transformer = Transformer(broker, settings, enrichers, tenant_routers)
    topics = raw_topics(settings)

    @batch_subscriber(
        broker,
        *topics,
        group_id=settings.topics.group(GROUP_ROLE),
        max_records=max_records,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )
    async def on_raw(records: Any) -> None:
        await transformer.handle_batch(records, concurrency=concurrency)

    return transformer
