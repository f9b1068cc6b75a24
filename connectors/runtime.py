"""The connector runtime: canonical topics → one ERP connection → ``ledgerflow.results.v1``.

One consumer group per ERP connection (``ledgerflow.connector.<connection>``), so a slow or
broken ERP never holds back another one. For each canonical record:

1. records of tenants not routed to this connection are ignored (counted);
2. object types the connection does not take give a ``skipped`` result with the reason, and so
   do documents not yet approved in the source (draft, submitted) unless the connection's option
   ``book_unapproved`` is true: ledgerflow books approved records;
3. the binder says whether the record was booked already: same content hash → ``duplicate``
   (nothing is sent); different content → the connector updates the ERP record;
4. the connector is called with an idempotency key stable across redeliveries of the event
   (the ERP's own mechanism covers a crash between the ERP write and the binder write); where the
   ERP has batch writes, records of this connection waiting within a short linger share one
   request (:mod:`ledgerflow.connectors.batching`), each still with its own result;
5. :class:`~ledgerflow.connectors.base.RetriableError` is retried in place with exponential backoff
   (``stamina``), honouring ``Retry-After``, for a bounded number of attempts and time; then the
   record is *parked* on ``ledgerflow.retry.connector.<tier>`` with a growing delay (so the
   partition is not blocked), addressed to this connection only; after the last tier it is
   dead-lettered on ``ledgerflow.dlq.connector``. A :class:`~ledgerflow.connectors.base.PermanentError`
   gives a ``failed`` result at once. Every attempt round publishes a ``SyncResult``;
6. the ``SyncResult`` is published and acknowledged, then the binder is updated (for a whole
   batch at once, :class:`BatchBinder`: one read and one upsert per batch), then the offsets are
   committed (:mod:`ledgerflow.core.delivery`).

The binder lives in :mod:`ledgerflow.connectors.binder`, the retry policy and the parking headers
in :mod:`ledgerflow.connectors.retry`; this module consumes and dispatches.

A record carrying the header ``ledgerflow_target_connection`` (a retry from the sync-records
API, or a parked retry) is booked only by that connection; every other connection ignores it.

Ordering trade-off: while a record is parked, later events of the same record continue on the
main topic and may be booked first. A parked version is then booked only if nothing was booked
for that record since it was parked; otherwise it is ``skipped`` as superseded, so an older
version never overwrites a newer one.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import stamina
from faststream.kafka import KafkaBroker
from pydantic import ValidationError

from ledgerflow.connectors.base import (
    INVALID_RESPONSE,
    BinderEntry,
    Booked,
    Connector,
    ConnectorError,
    HandleContext,
    InvalidResponse,
    Unsupported,
)
from ledgerflow.connectors.batching import Batcher
from ledgerflow.connectors.binder import BatchBinder, binder_key, content_hash, idempotency_key
from ledgerflow.connectors.preflight import ReferenceGuard
from ledgerflow.connectors.references import ReferenceMapError
from ledgerflow.connectors.retry import TARGET_HEADER, Parked, RetryPolicy, parked_headers, sleep_until
from ledgerflow.connectors.verify import MISMATCH, compare, describe, verifiable, verification_enabled
from ledgerflow.contracts import (
    OBJECT_MODELS,
    Action,
    CanonicalRecord,
    Difference,
    ErrorInfo,
    Operation,
    Outcome,
    SyncResult,
)
from ledgerflow.contracts import headers as ce_headers
from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.contracts.events import EventAttributes, MissingAttributeError, deterministic_id
from ledgerflow.contracts.topics import Topics
from ledgerflow.core import metrics
from ledgerflow.core.delivery import (
    ConsumedRecord,
    DeadLetter,
    DurableOutcomes,
    batch_subscriber,
    dead_letter_headers,
    header_map,
    run_batch,
)
from ledgerflow.core.logs import log_context
from ledgerflow.core.settings import Routing, Settings
from ledgerflow.core.state import BindingValues, StateStore

__all__ = ["ConnectorRuntime", "group_id", "register", "result_event_id"]

SUPERSEDED = ErrorCode.RECORD_SUPERSEDED
"""Error code of a ``skipped`` result for a version older than the one already booked."""

INBOUND_RECORD = "inbound-record"
"""Dead-letter reason of a record read from an ERP (``ce_direction: inbound``) found on a connector's topics."""

_UNAPPROVED = frozenset({"draft", "submitted"})
"""Document statuses that are not yet approved in the source: not booked unless a connection asks."""

log = logging.getLogger(__name__)


def result_event_id(event_id: str, connection: str, tier: int = 0) -> str:
    """``ce_id`` of the ``SyncResult`` of canonical event ``event_id`` on ``connection``, attempt round ``tier``.

    One id per attempt round: the first round (tier 0, from the canonical topic) and each round
    from retry topic ``tier`` get their own, so the audit stores every attempt as its own row; a
    redelivery of the same round publishes the same id again (stored once).
    """
    if tier == 0:
        return deterministic_id(event_id, connection)
    return deterministic_id(event_id, connection, f"retry-tier-{tier}")


def group_id(connection: str, topics: Topics | None = None) -> str:
    """Consumer group of ``connection``: ``<prefix>.connector.<connection>`` (prefix ``ledgerflow`` by default)."""
    return (topics or Topics()).group(f"connector.{connection}")


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
        self.fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms
        self.retry = retry or RetryPolicy.from_options(routing.connections[self.connection].options)
        self.tenants = routing.tenants_for(self.connection)
        self.objects = set(routing.connections[self.connection].objects)
        self.book_unapproved = bool(routing.connections[self.connection].options.get("book_unapproved", False))
        self.verify_read_back = verification_enabled(routing.connections[self.connection].options)
        self.durable = DurableOutcomes()
        self.batcher = Batcher(connector)
        self.references = ReferenceGuard(connector, state)
        self.defer: Callable[[ConsumedRecord, dict[str, str], SyncResult], Awaitable[bool]] | None = None
        """Set by the connector fleet: ``defer(record, headers, result)`` parks a retriable failure without
        using a retry tier when the connection's budget is spent (True: parked, no result published)."""

    def replace_connector(self, connector: Connector) -> Connector:
        """Book with ``connector`` (same connection, rotated credentials or new options) from now on.

        Returns the connector replaced (the caller closes it once its in-flight records are done).
        """
        old, self.connector = self.connector, connector
        self.batcher = Batcher(connector)
        self.references = ReferenceGuard(connector, self.state)
        return old

    async def migrate_legacy_keys(self) -> int:
        """Move this connection's binder rows written before keys carried the tenant; return how many.

        With exactly one tenant routed to the connection the rows are that tenant's, and are moved
        (:meth:`~ledgerflow.core.state.StateStore.migrate_legacy_keys`). A connection shared by
        several tenants cannot tell whose a legacy row is: it is left in place with a warning
        naming ``ledgerflow state migrate-keys``, and the record is booked again under its new key
        only if its source sends it again (the ERP's idempotency does not cover that case).
        """
        if len(self.tenants) == 1:
            moved = await self.state.migrate_legacy_keys(self.connection, next(iter(self.tenants)))
            if moved:
                log.warning("%s: moved %d binder rows to tenant-scoped keys", self.connection, moved)
            return moved
        legacy = await self.state.legacy_keys(self.connection) if self.tenants else []
        if legacy:
            log.warning(
                "%s: %d binder rows predate tenant-scoped keys and the connection is shared by %s: "
                "assign them with `ledgerflow state migrate-keys --connection %s --tenant <tenant>`",
                self.connection,
                len(legacy),
                ", ".join(sorted(self.tenants)),
                self.connection,
            )
        return 0

    def batch_binder(self) -> BatchBinder:
        """A :class:`BatchBinder` for one batch of this connection's records."""
        return BatchBinder(self.state, self.connection)

    async def handle_batch(self, records: Sequence[ConsumedRecord], *, concurrency: int) -> None:
        """Book a batch (:func:`~ledgerflow.core.delivery.run_batch`) with its binder rows read and written in bulk.

        The rows of every record key are read in one query first; the bookings are written in one
        upsert once every result of the batch is acknowledged (also when a record failed and the
        batch will be redelivered: what was booked and acknowledged stays known, so the
        redelivery answers ``duplicate`` instead of calling the ERP again).

        Raises:
            Exception: a result or dead letter could not be written (the batch is redelivered).
        """
        binder = self.batch_binder()
        await binder.load({r.key.decode("utf-8", "replace") for r in records if r.key})
        completed: list[ConsumedRecord] = []
        try:
            with log_context(connection=self.connection):
                await run_batch(
                    records,
                    lambda record: self.handle(record, binder),
                    stage="connector",
                    dlq_topic=self.topics.dlq("connector"),
                    publish=self.publish,
                    concurrency=self.batcher.concurrency_for(concurrency),
                    durable=self.durable,
                    completed=completed,
                )
        finally:
            await binder.flush()
            # Results and dead letters of the completed records are acknowledged and the binder
            # knows their bookings: a redelivery of this batch skips them.
            self.durable.remember(completed)

    async def handle(self, record: ConsumedRecord, binder: BatchBinder | None = None) -> None:
        """Book one canonical record and publish its SyncResult.

        ``binder`` is the batch's (:meth:`handle_batch`); without one the record's binder row is
        read and written on its own.

        Raises:
            DeadLetter: the message is not a valid canonical record (it cannot be booked at all).
            Exception: the result could not be published (the batch is redelivered).
        """
        own_binder = binder is None
        binder = binder or self.batch_binder()
        headers = header_map(record)
        if headers.get(ce_headers.CE_DIRECTION) == ce_headers.DIRECTION_INBOUND:
            # Read from an ERP (sync-reference): never booked back into one, whatever topic it is on.
            raise DeadLetter(INBOUND_RECORD, "a record read from an ERP (ce_direction: inbound) is never booked")
        try:
            attrs = EventAttributes.from_headers(headers)
        except MissingAttributeError as exc:
            raise DeadLetter("missing-attributes", str(exc)) from None
        if attrs.tenant not in self.tenants:
            return
        target = headers.get(TARGET_HEADER)
        if target and target != self.connection:
            return
        parked = Parked.from_headers(headers)
        if parked.tier:
            await sleep_until(parked.not_before)
            if record.key:
                binder.forget(record.key.decode("utf-8", "replace"))
        topic = (parked.original_topic or record.topic) if parked.tier else record.topic
        object_type = topic.rsplit(".", 2)[-2]
        model = OBJECT_MODELS.get(object_type)
        if model is None:
            raise DeadLetter("unknown-object", f"no canonical model for topic {topic}")
        try:
            canonical = model.model_validate_json(record.value or b"")
        except ValidationError as exc:
            raise DeadLetter("invalid-record", str(exc)) from None
        result, binding = await self._book(canonical, attrs, binder, parked_at=parked.parked_at)
        if result.outcome is Outcome.FAILED and result.error is not None and result.error.code == INVALID_RESPONSE:
            # The ERP answers 2xx with bodies that are not what it documents: retried in place a
            # few times already; parking would only hammer it again. Dead-letter at once.
            await self._park_or_give_up(record, headers, topic, parked.tier, result, give_up=True)
        elif result.outcome is Outcome.FAILED and result.error is not None and result.error.retriable:
            if self.defer is not None and await self.defer(record, headers, result):
                return
            await self._park_or_give_up(record, headers, topic, parked.tier, result)
        await self.publish(
            self.topics.results,
            canonical.canonical_id.encode(),
            result.model_dump_json().encode(),
            attrs.derive(
                id=result_event_id(attrs.id, self.connection, parked.tier),
                type="io.ledgerflow.sync_result.v1",
                subject=canonical.canonical_id,
            ).to_headers(),
        )
        # The binder is written only once the result is acknowledged (by the batch, after every
        # result of it). A crash before that redelivers the record; the binder does not know it
        # yet, so the connector books again with the same idempotency key, the ERP answers with
        # the record it already has, and the same `succeeded` result (same deterministic event
        # id) is published again.
        if binding is not None:
            binder.put(binding)
        if own_binder:
            await binder.flush()
        erp = self.connector.erp
        metrics.CONNECTOR_RESULTS.labels(attrs.tenant, object_type, erp, self.connection, result.outcome.value).inc()
        if result.accepted_at is not None:
            metrics.END_TO_END_LATENCY.labels(erp, object_type).observe(
                (result.finished_at - result.accepted_at).total_seconds()
            )

    async def _park_or_give_up(
        self,
        record: ConsumedRecord,
        headers: dict[str, str],
        topic: str,
        tier: int,
        result: SyncResult,
        *,
        give_up: bool = False,
    ) -> None:
        """Park the record on the next retry tier for this connection, or dead-letter it after the last.

        ``give_up`` dead-letters at once (reason: the result's error code), whatever the tier.

        Raises:
            DeadLetter: never (the dead letter is written here so the result is still published).
        """
        delays = self.retry.park_delays
        if tier < len(delays) and not give_up:
            parked = parked_headers(
                headers, connection=self.connection, tier=tier + 1, delay=delays[tier], original_topic=topic
            )
            await self.publish(self.topics.retry("connector", tier + 1), record.key, record.value or b"", parked)
            log.info("%s: parked %s on retry tier %d", self.connection, result.canonical_id, tier + 1)
            return
        error = DeadLetter(
            result.error.code if give_up and result.error else "retries-exhausted",
            result.error.message if result.error else "retriable failure",
            attempts=result.attempts,
        )
        dl_headers = dead_letter_headers(record, "connector", error, original_topic=topic)
        dl_headers[TARGET_HEADER] = self.connection
        await self.publish(self.topics.dlq("connector"), record.key, record.value or b"", dl_headers)
        metrics.DLQ_MESSAGES.labels("connector", error.reason).inc()

    async def book(
        self, record: CanonicalRecord, attrs: EventAttributes, *, parked_at: float | None = None
    ) -> SyncResult:
        """Decide and perform what to do with ``record`` on this connection, and update the binder.

        Never raises for ERP errors. ``parked_at`` (epoch seconds) is set for a record coming back
        from a retry tier: if the binder changed after that moment, a newer version was booked
        meanwhile and this one is skipped as superseded. (:meth:`handle` writes the binder only
        after the result is acknowledged; this method is for callers without a results topic.)
        """
        binder = self.batch_binder()
        result, binding = await self._book(record, attrs, binder, parked_at=parked_at)
        if binding is not None:
            binder.put(binding)
        await binder.flush()
        return result

    async def _book(
        self, record: CanonicalRecord, attrs: EventAttributes, binder: BatchBinder, *, parked_at: float | None = None
    ) -> tuple[SyncResult, BindingValues | None]:
        """What :meth:`book` does, returning the binder row to write instead of writing it."""
        started = datetime.now(UTC)
        base: dict[str, Any] = {
            "event_id": attrs.id,
            "canonical_id": binder_key(record),  # tenant-scoped, also for a record published before
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

        def done(**fields: Any) -> tuple[SyncResult, None]:
            """A result that needs no binder write."""
            return result(**fields), None

        try:
            record = await self.references.apply_maps(record)  # options.reference_map + stored mappings
        except ReferenceMapError as exc:
            return done(
                operation=Operation.SKIP,
                outcome=Outcome.FAILED,
                attempts=0,
                error=ErrorInfo(code=ErrorCode.CONFIG_REFERENCE_MAP, message=str(exc), retriable=False),
            )

        if record.object_type not in self.objects or record.object_type not in self.connector.supports:
            why = (
                f"connection {self.connection} is not configured for {record.object_type}"
                if record.object_type not in self.objects
                else f"{self.connector.erp} connector does not support {record.object_type}"
            )
            return done(
                operation=Operation.SKIP,
                outcome=Outcome.SKIPPED,
                attempts=0,
                error=ErrorInfo(code=ErrorCode.OBJECT_UNSUPPORTED, message=why, retriable=False),
            )
        settled = getattr(record, "status", "completed") if record.object_type == "payment" else "completed"
        if record.action is Action.UPSERT and settled != "completed":
            return done(
                operation=Operation.SKIP,
                outcome=Outcome.SKIPPED,
                attempts=0,
                error=ErrorInfo(
                    code=ErrorCode.PAYMENT_NOT_SETTLED,
                    message=f"payment is {settled} in {record.source.value}: only settled payments are booked",
                    retriable=False,
                ),
            )
        kind = getattr(record, "kind", None) if record.object_type == "payment" else None
        if kind and record.action is Action.UPSERT and kind not in self.connector.payment_kinds:
            return done(
                operation=Operation.SKIP,
                outcome=Outcome.FAILED,
                attempts=0,
                error=ErrorInfo(
                    code=ErrorCode.PAYMENT_KIND_UNSUPPORTED,
                    message=f"a {kind} is money paid back, not received or paid: the {self.connector.erp} connector "
                    f"books no {kind}s, so it is not booked as a payment; record it in {self.connector.erp} by hand",
                    retriable=False,
                ),
            )

        status = getattr(record, "status", None)
        if status in _UNAPPROVED and not self.book_unapproved:
            return done(
                operation=Operation.SKIP,
                outcome=Outcome.SKIPPED,
                attempts=0,
                error=ErrorInfo(
                    code=ErrorCode.RECORD_NOT_APPROVED,
                    message=f"{record.object_type} is {status} in {record.source.value}: only approved records "
                    "are booked (connection option book_unapproved: true books drafts too)",
                    retriable=False,
                ),
            )
        digest = content_hash(record)
        key = binder_key(record)
        row = await binder.get(key)
        existing = BinderEntry(row.erp_record_id, row.erp_version, row.content_hash) if row else None
        if existing is not None and existing.content_hash == digest:
            return done(
                operation=Operation.SKIP,
                outcome=Outcome.DUPLICATE,
                attempts=0,
                erp_record_id=existing.erp_record_id,
                erp_record_version=existing.erp_version,
            )
        held = row.source_updated_at if row is not None else None
        if held is not None and record.source_updated_at is not None and record.source_updated_at < held:
            metrics.SUPERSEDED.labels(self.connector.erp, self.connection).inc()
            return done(
                operation=Operation.SKIP,
                outcome=Outcome.SKIPPED,
                attempts=0,
                erp_record_id=row.erp_record_id if row else None,
                error=ErrorInfo(
                    code=SUPERSEDED,
                    message=f"this version ({record.source_updated_at.isoformat()}) is older than the one "
                    f"already booked ({held.isoformat()}): an older version never overwrites a newer one",
                    retriable=False,
                ),
            )
        if row is not None and parked_at is not None and row.updated_at.timestamp() > parked_at:
            return done(
                operation=Operation.SKIP,
                outcome=Outcome.SKIPPED,
                attempts=0,
                erp_record_id=row.erp_record_id,
                error=ErrorInfo(
                    code=SUPERSEDED,
                    message="a newer version of this record was booked while this one waited for a retry",
                    retriable=False,
                ),
            )
        if existing is None and record.action is not Action.UPSERT:
            return done(
                operation=Operation.SKIP,
                outcome=Outcome.SKIPPED,
                attempts=0,
                error=ErrorInfo(
                    code=ErrorCode.RECORD_NOT_BOOKED,
                    message=f"nothing to {record.action.value}: {record.canonical_id} was never booked here",
                    retriable=False,
                ),
            )

        if record.action is Action.UPSERT and (unknown := await self.references.check(record)) is not None:
            # A reference the ERP does not have (complete reference cache): refused before any ERP call.
            return done(operation=Operation.SKIP, outcome=Outcome.FAILED, attempts=0, error=unknown)

        ctx = HandleContext(
            event_id=attrs.id,
            idempotency_key=idempotency_key(self.connection, attrs.id, record.tenant),
            existing=existing,
            tenant=record.tenant,
        )
        attempts = 0
        try:
            booked: Booked | None = None
            invalid_answers = 0

            def retry_on(exc: Exception) -> bool | float:
                nonlocal invalid_answers
                if isinstance(exc, InvalidResponse):
                    invalid_answers += exc.sends  # a batch resent as the same request: each send counts
                    if invalid_answers >= self.retry.invalid_response_attempts:
                        return False
                return self.retry.hook(exc)

            async for attempt in stamina.retry_context(
                on=retry_on,
                attempts=self.retry.attempts,
                timeout=self.retry.timeout,
                wait_initial=self.retry.wait_initial,
                wait_max=self.retry.wait_max,
            ):
                with attempt, log_context(connection=self.connection, attempt=attempts + 1):
                    attempts += 1
                    if attempts > 1:
                        metrics.RETRIES.labels("connector", self.connector.erp).inc()
                    booked = await self.batcher.book(record, ctx)
            assert booked is not None
        except Unsupported as exc:
            return done(
                operation=Operation.SKIP,
                outcome=Outcome.SKIPPED,
                attempts=attempts,
                error=ErrorInfo(code=exc.code, message=exc.message, retriable=False),
            )
        except ConnectorError as exc:
            log.warning("%s: %s failed after %d attempt(s): %s", self.connection, record.canonical_id, attempts, exc)
            # An unreadable answer is not retried beyond the in-place attempts (it is dead-lettered).
            retriable = exc.retriable and not isinstance(exc, InvalidResponse)
            return done(
                operation=Operation.UPDATE if existing else Operation.CREATE,
                outcome=Outcome.FAILED,
                attempts=attempts,
                http_status=exc.http_status,
                error=ErrorInfo(code=exc.code, message=exc.message, retriable=retriable, vendor_code=exc.vendor_code),
            )
        try:
            differences = await self._read_back(record, booked)
        except ConnectorError as exc:
            log.warning("%s: read-back of %s failed: %s", self.connection, record.canonical_id, exc)
            return done(
                operation=booked.operation,
                outcome=Outcome.FAILED,
                attempts=max(attempts, booked.attempts),
                erp_record_id=booked.erp_record_id,
                http_status=exc.http_status,
                error=ErrorInfo(
                    code=exc.code,
                    message=f"booked, but the read-back failed: {exc.message}",
                    retriable=exc.retriable,
                    vendor_code=exc.vendor_code,
                ),
            )
        booked_fields: dict[str, Any] = {
            "operation": booked.operation,
            "attempts": max(attempts, booked.attempts),
            "erp_record_id": booked.erp_record_id,
            "erp_record_version": booked.erp_version,
            "http_status": booked.http_status,
        }
        if differences:
            log.error("%s: %s", self.connection, describe(differences, self.connector.erp))
            mismatched = result(
                **booked_fields,
                outcome=Outcome.FAILED,
                error=ErrorInfo(
                    code=MISMATCH,
                    message=describe(differences, self.connector.erp),
                    retriable=False,
                    differences=differences,
                ),
            )
            if booked.erp_record_id is None:
                return mismatched, None
            # Bound (the ERP record exists, a new version updates it) under a hash that never equals
            # the content's, so the same content sent again is written again instead of `duplicate`.
            unverified = hashlib.sha256(f"mismatch\x00{digest}".encode()).hexdigest()
            return mismatched, BindingValues(
                key, booked.erp_record_id, booked.erp_version, unverified, record.source_updated_at
            )
        succeeded = result(**booked_fields, outcome=Outcome.SUCCEEDED)
        if booked.erp_record_id is None:
            return succeeded, None
        return succeeded, BindingValues(key, booked.erp_record_id, booked.erp_version, digest, record.source_updated_at)

    async def _read_back(self, record: CanonicalRecord, booked: Booked) -> list[Difference]:
        """Compare the ERP's record of a booked document with ``record`` (:mod:`ledgerflow.connectors.verify`).

        Returns the differences (empty when it matches, when the record is not a document, when
        nothing was created or updated, when the connector cannot read back, or when the
        connection's option ``verify_read_back`` is false). Counts ``ledgerflow_readback_total``.

        Raises:
            ConnectorError: the connector's read of the record failed.
        """
        if not verifiable(record) or booked.operation not in (Operation.CREATE, Operation.UPDATE):
            return []
        labels = (record.tenant, record.object_type, self.connector.erp, self.connection)
        if not self.verify_read_back:
            metrics.READ_BACK.labels(*labels, "disabled").inc()
            return []
        stored = booked.stored or await self.connector.read_back(record, booked)
        if stored is None:
            metrics.READ_BACK.labels(*labels, "unavailable").inc()
            return []
        differences = compare(record, stored, counterparty_id=booked.counterparty_id)
        metrics.READ_BACK.labels(*labels, "mismatched" if differences else "matched").inc()
        return differences


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
        max_records: largest batch fetched at once (raised to four rounds of full ERP batch writes
            at the ERP's concurrency where the connector batches: :meth:`Batcher.fetch_size`).
    """
    topics = [runtime.topics.canonical(obj) for obj in OBJECT_MODELS]
    # Batch writes fill only from records fetched together, and the ERP's pace is lost while a
    # consumer batch drains and the next one fills: fetch four rounds of full ERP batches at the
    # ERP's concurrency (connectors/batching.py; Xero 1,000 records, QuickBooks 1,200).
    max_records = max(max_records, runtime.batcher.fetch_size(max_records))

    @batch_subscriber(
        broker,
        *topics,
        group_id=group_id(runtime.connection, runtime.topics),
        max_records=max_records,
        fetch_max_wait_ms=runtime.fetch_max_wait_ms,
    )
    async def on_canonical(records: Any) -> None:
        started = time.perf_counter()
        await runtime.handle_batch(records, concurrency=concurrency)
        log.debug("%s: batch of %d in %.3fs", runtime.connection, len(records), time.perf_counter() - started)

    # Parked records wait out their delay in a consumer of their own, so they never hold back
    # the canonical topics; records are in delay order within a tier, so waiting in line is exact.
    retry_topics = [runtime.topics.retry("connector", tier) for tier in range(1, len(runtime.retry.park_delays) + 1)]
    if retry_topics:

        @batch_subscriber(
            broker,
            *retry_topics,
            group_id=f"{group_id(runtime.connection, runtime.topics)}.retry",
            max_records=max_records,
            fetch_max_wait_ms=runtime.fetch_max_wait_ms,
            max_poll_interval_ms=600_000,
        )
        async def on_retry(records: Any) -> None:
            await runtime.handle_batch(records, concurrency=concurrency)
