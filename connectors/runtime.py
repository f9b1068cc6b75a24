"""The connector runtime: canonical topics → one ERP connection → ``ledgerflow.results.v1``.

One consumer group per ERP connection (``ledgerflow.connector.<connection>``), so a slow or
broken ERP never holds back another one. For each canonical record:

1. records of tenants not routed to this connection are ignored (counted);
2. object types the connection does not take give a ``skipped`` result with the reason;
3. the binder says whether the record was booked already: same content hash → ``duplicate``
   (nothing is sent); different content → the connector updates the ERP record;
4. the connector is called with an idempotency key stable across redeliveries of the event
   (the ERP's own mechanism covers a crash between the ERP write and the binder write);
5. :class:`~connectors.base.RetriableError` is retried with exponential backoff (``stamina``),
   honouring ``Retry-After``, a bounded number of attempts; a
   :class:`~connectors.base.PermanentError` or exhausted retries give a ``failed`` result;
6. the binder is updated, then the ``SyncResult`` is published and acknowledged before the
   offset is committed (:mod:`ledgerflow.delivery`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import stamina
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from pydantic import ValidationError

from connectors.base import (
    BinderEntry,
    Booked,
    Connector,
    ConnectorError,
    HandleContext,
    RetriableError,
    Unsupported,
)
from contracts import OBJECT_MODELS, Action, CanonicalRecord, ErrorInfo, Operation, Outcome, SyncResult
from ledgerflow import metrics
from ledgerflow.delivery import ConsumedRecord, DeadLetter, header_map, run_batch
from ledgerflow.events import EventAttributes, MissingAttributeError, deterministic_id
from ledgerflow.settings import Routing, Settings
from ledgerflow.state import StateStore

__all__ = ["ConnectorRuntime", "RetryPolicy", "content_hash", "group_id", "idempotency_key", "register"]

log = logging.getLogger(__name__)


def group_id(connection: str) -> str:
    """Consumer group of ``connection``: ``ledgerflow.connector.<connection>``."""
    return f"ledgerflow.connector.{connection}"


def idempotency_key(connection: str, event_id: str) -> str:
    """A 36-character key stable for (connection, event): QuickBooks ``requestid``, Xero ``Idempotency-Key``."""
    return hashlib.sha256(f"{connection}\x00{event_id}".encode()).hexdigest()[:36]


def content_hash(record: CanonicalRecord) -> str:
    """SHA-256 of what would be booked: the record without the fields that only describe the event."""
    body = record.model_dump_json(exclude={"source_event", "source_updated_at"})
    return hashlib.sha256(body.encode()).hexdigest()


class RetryPolicy:
    """How often and how long a retriable ERP error is retried in place.

    Args:
        attempts: total attempts including the first.
        timeout: overall seconds budget for one record.
        wait_initial, wait_max: exponential backoff bounds in seconds (``Retry-After`` wins when sent,
            capped at ``wait_max_retry_after``).
    """

    def __init__(
        self,
        attempts: int = 5,
        timeout: float = 60.0,
        wait_initial: float = 0.2,
        wait_max: float = 5.0,
        wait_max_retry_after: float = 30.0,
    ) -> None:
        self.attempts = attempts
        self.timeout = timeout
        self.wait_initial = wait_initial
        self.wait_max = wait_max
        self.wait_max_retry_after = wait_max_retry_after

    def hook(self, exc: Exception) -> bool | float:
        """Stamina backoff hook: retry RetriableError, waiting ``Retry-After`` when the ERP sent one."""
        if not isinstance(exc, RetriableError):
            return False
        if exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), self.wait_max_retry_after)
        return True


def _amount(record: CanonicalRecord) -> tuple[Decimal | None, str | None]:
    total = getattr(record, "total", None) or getattr(record, "amount", None)
    currency = getattr(record, "currency", None)
    return (total if isinstance(total, Decimal) else None, currency if isinstance(currency, str) else None)


class ConnectorRuntime:
    """Runs one connector for one ERP connection.

    Args:
        connector: the ERP connector (its ``name`` is the connection name).
        state: binder store.
        routing: which tenants feed this connection and which objects it takes.
        publish: ``publish(topic, key, value, headers)`` returning after the broker's ack.
        settings: topic prefix.
        retry: retry policy for retriable ERP errors.
    """

    def __init__(
        self,
        connector: Connector,
        state: StateStore,
        routing: Routing,
        publish: Callable[[str, bytes | None, bytes, dict[str, str]], Awaitable[Any]],
        settings: Settings,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.connector = connector
        self.connection = connector.name
        self.state = state
        self.publish = publish
        self.topics = settings.topics
        self.retry = retry or RetryPolicy()
        self.tenants = routing.tenants_for(self.connection)
        self.objects = set(routing.connections[self.connection].objects)

    async def handle(self, record: ConsumedRecord) -> None:
        """Book one canonical record and publish its SyncResult.

        Raises:
            DeadLetter: the message is not a valid canonical record (it cannot be booked at all).
            Exception: the result could not be published (the batch is redelivered).
        """
        try:
            attrs = EventAttributes.from_headers(header_map(record))
        except MissingAttributeError as exc:
            raise DeadLetter("missing-attributes", str(exc)) from None
        if attrs.tenant not in self.tenants:
            return
        object_type = record.topic.rsplit(".", 2)[-2]
        model = OBJECT_MODELS.get(object_type)
        if model is None:
            raise DeadLetter("unknown-object", f"no canonical model for topic {record.topic}")
        try:
            canonical = model.model_validate_json(record.value or b"")
        except ValidationError as exc:
            raise DeadLetter("invalid-record", str(exc)) from None
        result = await self.book(canonical, attrs)
        await self.publish(
            self.topics.results,
            canonical.canonical_id.encode(),
            result.model_dump_json().encode(),
            attrs.derive(
                id=deterministic_id(attrs.id, self.connection),
                type="io.ledgerflow.sync_result.v1",
                subject=canonical.canonical_id,
            ).to_headers(),
        )
        erp = self.connector.erp
        metrics.CONNECTOR_RESULTS.labels(attrs.tenant, object_type, erp, self.connection, result.outcome.value).inc()
        if result.accepted_at is not None:
            metrics.END_TO_END_LATENCY.labels(erp, object_type).observe(
                (result.finished_at - result.accepted_at).total_seconds()
            )

    async def book(self, record: CanonicalRecord, attrs: EventAttributes) -> SyncResult:
        """Decide and perform what to do with ``record`` on this connection; never raises for ERP errors."""
        started = datetime.now(UTC)
        base: dict[str, Any] = {
            "event_id": attrs.id,
            "canonical_id": record.canonical_id,
            "object_type": record.object_type,
            "tenant": record.tenant,
            "source": record.source.value,
            "erp": self.connector.erp,
            "connection": self.connection,
            "accepted_at": attrs.time,
            "started_at": started,
        }
        base["amount"], base["currency"] = _amount(record)

        def result(**fields: Any) -> SyncResult:
            return SyncResult(**base, finished_at=datetime.now(UTC), **fields)

        if record.object_type not in self.objects or record.object_type not in self.connector.supports:
            why = (
                f"connection {self.connection} is not configured for {record.object_type}"
                if record.object_type not in self.objects
                else f"{self.connector.erp} connector does not support {record.object_type}"
            )
            return result(
                operation=Operation.SKIP,
                outcome=Outcome.SKIPPED,
                attempts=0,
                error=ErrorInfo(code="object.unsupported", message=why, retriable=False),
            )

        digest = content_hash(record)
        row = await self.state.get_binding(self.connection, record.canonical_id)
        existing = BinderEntry(row.erp_record_id, row.erp_version, row.content_hash) if row else None
        if existing is not None and existing.content_hash == digest:
            return result(
                operation=Operation.SKIP,
                outcome=Outcome.DUPLICATE,
                attempts=0,
                erp_record_id=existing.erp_record_id,
                erp_record_version=existing.erp_version,
            )
        if existing is None and record.action is not Action.UPSERT:
            return result(
                operation=Operation.SKIP,
                outcome=Outcome.SKIPPED,
                attempts=0,
                error=ErrorInfo(
                    code="record.not_booked",
                    message=f"nothing to {record.action.value}: {record.canonical_id} was never booked here",
                    retriable=False,
                ),
            )

        ctx = HandleContext(
            event_id=attrs.id, idempotency_key=idempotency_key(self.connection, attrs.id), existing=existing
        )
        attempts = 0
        try:
            booked: Booked | None = None
            async for attempt in stamina.retry_context(
                on=self.retry.hook,
                attempts=self.retry.attempts,
                timeout=self.retry.timeout,
                wait_initial=self.retry.wait_initial,
                wait_max=self.retry.wait_max,
            ):
                with attempt:
                    attempts += 1
                    if attempts > 1:
                        metrics.RETRIES.labels("connector", self.connector.erp).inc()
                    booked = await self.connector.handle(record, ctx)
            assert booked is not None
        except Unsupported as exc:
            return result(
                operation=Operation.SKIP,
                outcome=Outcome.SKIPPED,
                attempts=attempts,
                error=ErrorInfo(code=exc.code, message=exc.message, retriable=False),
            )
        except ConnectorError as exc:
            log.warning("%s: %s failed after %d attempt(s): %s", self.connection, record.canonical_id, attempts, exc)
            return result(
                operation=Operation.UPDATE if existing else Operation.CREATE,
                outcome=Outcome.FAILED,
                attempts=attempts,
                http_status=exc.http_status,
                error=ErrorInfo(
                    code=exc.code, message=exc.message, retriable=exc.retriable, vendor_code=exc.vendor_code
                ),
            )
        if booked.erp_record_id is not None:
            await self.state.put_binding(
                self.connection,
                record.canonical_id,
                erp_record_id=booked.erp_record_id,
                erp_version=booked.erp_version,
                content_hash=digest,
            )
        return result(
            operation=booked.operation,
            outcome=Outcome.SUCCEEDED,
            attempts=max(attempts, booked.attempts),
            erp_record_id=booked.erp_record_id,
            erp_record_version=booked.erp_version,
            http_status=booked.http_status,
        )


def register(
    broker: KafkaBroker,
    runtime: ConnectorRuntime,
    *,
    concurrency: int = 8,
    max_records: int = 200,
) -> None:
    """Subscribe ``runtime`` to every canonical topic in its own consumer group on ``broker``.

    Args:
        broker: a not-yet-started FastStream broker.
        runtime: the connection's runtime.
        concurrency: records of different keys booked at once (bounded further by the ERP rate limit).
        max_records: largest batch fetched at once.
    """
    topics = [runtime.topics.canonical(obj) for obj in OBJECT_MODELS]
    dlq = runtime.topics.dlq("connector")

    @broker.subscriber(
        *topics,
        group_id=group_id(runtime.connection),
        batch=True,
        max_records=max_records,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )
    async def on_canonical(body: list[bytes], msg: KafkaMessage) -> None:
        started = time.perf_counter()
        raw: Any = msg.raw_message
        await run_batch(
            raw,
            runtime.handle,
            stage="connector",
            dlq_topic=dlq,
            publish=runtime.publish,
            concurrency=concurrency,
        )
        log.debug("%s: batch of %d in %.3fs", runtime.connection, len(raw), time.perf_counter() - started)
