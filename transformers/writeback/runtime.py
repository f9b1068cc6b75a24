"""The source-writer runtime: ``<prefix>.inbound.<kind>.v1`` → the sources' APIs → ``<prefix>.results.v1``.

Consumer group ``<prefix>.writeback`` over every inbound topic (records read from the ERPs by
``ledgerflow sync-reference``), and ``<prefix>.writeback.retry`` over its own retry tiers
``<prefix>.retry.writeback.<tier>``. For each record:

1. a record without the CloudEvents extension ``ce_direction: inbound`` is dead-lettered
   (``not-inbound``): only records read from an ERP are written into a source;
2. the tenants whose sources take records of its ERP connection are found
   (:meth:`~ledgerflow.core.settings.Routing.writeback_tenants`), and for each tenant its enabled
   writers (:func:`build_writers`: INGENIOUS objects and payments, Mercoa and Monite payment
   marking) that take the record;
3. each writer writes (idempotent: :mod:`ledgerflow.transformers.writeback.base`), its API client
   retrying 429/5xx/transport errors in place with ``stamina`` and honouring ``Retry-After``;
4. every write gives one ``SyncResult`` with ``direction="inbound"`` on the results topic (key and
   ``canonical_id`` ``<tenant>:<source>:inbound:<kind>:<write key>``, ``erp``/``connection`` where
   the record was read, ``erp_record_id`` its ERP id, ``source_record_id`` the source's id);
5. writes that failed retriably are parked on the next retry tier, addressed to their
   (tenant, source) only (header ``ledgerflow_writeback_targets``), with a growing delay; after the
   last tier the record is dead-lettered on ``<prefix>.dlq.writeback`` (reason ``retries-exhausted``,
   ``ledgerflow_dlq_messages_total{stage="writeback"}``), naming the writes still to do, so
   ``ledgerflow replay dlq --stage writeback`` re-runs only those. Non-retriable failures (4xx)
   give a ``failed`` result at once.

A payment ledgerflow booked into the ERP from a source (the connector's binder has
``<tenant>:<source>:payment:<id>`` on that ERP payment) is not written back into that source: a
``skipped`` result with ``source.origin``.

Nothing loops: the writers only call source APIs (INGENIOUS, Mercoa, Monite), never an ERP, and
no outbound connector or transformer subscribes to the inbound topics (the connectors read the
canonical topics, the transformer the raw ones). Delivery discipline: :mod:`ledgerflow.core.delivery`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from faststream.kafka import KafkaBroker
from pydantic import SecretStr, ValidationError

from ledgerflow.contracts import ErrorInfo, Operation, Outcome, Source, SyncResult
from ledgerflow.contracts import headers as h
from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.contracts.events import EventAttributes, MissingAttributeError, deterministic_id
from ledgerflow.contracts.reference import INBOUND_KINDS, ReferenceRecord
from ledgerflow.contracts.topics import RETRY_TIERS, Topics
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
from ledgerflow.core.settings import ConfigError, Routing, Settings, SourceConfig
from ledgerflow.core.state import StateStore
from ledgerflow.transformers.ingenious.client import IngeniousClient
from ledgerflow.transformers.ingenious.writer import IngeniousWriter
from ledgerflow.transformers.mercoa.client import MercoaClient
from ledgerflow.transformers.mercoa.writer import MercoaWriter
from ledgerflow.transformers.monite.client import MoniteClient
from ledgerflow.transformers.monite.writer import MoniteWriter
from ledgerflow.transformers.writeback.base import SourceWriter, WriteLedger, WriteOutcome, write_key

__all__ = [
    "GROUP_ROLE",
    "STAGE",
    "TARGETS_HEADER",
    "SourceWriterRuntime",
    "WritebackRetry",
    "build_writers",
    "check_writeback",
    "inbound_topics",
    "register",
    "retry_topics",
]

log = logging.getLogger(__name__)

STAGE = "writeback"
"""Stage name: dead letters on ``<prefix>.dlq.writeback``, retry tiers ``<prefix>.retry.writeback.<n>``."""

GROUP_ROLE = "writeback"
"""Consumer group role: ``<prefix>.writeback`` (and ``<prefix>.writeback.retry`` for the retry tiers)."""

TARGETS_HEADER = "ledgerflow_writeback_targets"
"""Header of a parked record: the ``<tenant>/<source>`` writes still to do, comma-separated."""

_PARKING = (h.RETRY_TIER, h.RETRY_NOT_BEFORE, h.RETRY_PARKED_AT, h.RETRY_ORIGINAL_TOPIC, TARGETS_HEADER)


_SOURCES = frozenset(s.value for s in Source)


def _from_source(ref: ReferenceRecord, source: str) -> WriteOutcome:
    """The ``skipped`` outcome of a payment ledgerflow booked into the ERP from ``source`` itself."""
    return WriteOutcome(
        "payment",
        write_key(ref.connection, ref.entity, ref.erp_id),
        Operation.SKIP,
        Outcome.SKIPPED,
        error=ErrorInfo(
            code=ErrorCode.SOURCE_ORIGIN,
            message=f"{ref.erp} {ref.entity} {ref.erp_id} was booked by ledgerflow from {source}: not written back",
            retriable=False,
        ),
        amount=ref.amount,
        currency=ref.currency,
    )


def inbound_topics(topics: Topics) -> list[str]:
    """Every inbound topic, one per :data:`~ledgerflow.contracts.reference.INBOUND_KINDS`."""
    return [topics.inbound(kind) for kind in INBOUND_KINDS]


def retry_topics(topics: Topics, tiers: int = RETRY_TIERS) -> list[str]:
    """The writers' retry tiers ``<prefix>.retry.writeback.1..tiers``."""
    return [topics.retry(STAGE, tier) for tier in range(1, tiers + 1)]


@dataclass(frozen=True, slots=True)
class WritebackRetry:
    """Where a write that failed retriably after the client's in-place retries waits: seconds per retry tier.

    After the last tier the record is dead-lettered. Each delay is at most 540 s (below the retry
    consumer's ten-minute poll interval); at most :data:`~ledgerflow.contracts.topics.RETRY_TIERS` tiers.

    Raises:
        ValueError: a delay out of range or too many tiers.
    """

    park_delays: tuple[float, ...] = (10.0, 60.0, 300.0)

    def __post_init__(self) -> None:
        if any(d < 0 or d > 540 for d in self.park_delays):
            raise ValueError("park delays must be between 0 and 540 seconds")
        if len(self.park_delays) > RETRY_TIERS:
            raise ValueError(f"at most {RETRY_TIERS} park delays (one per retry topic)")


def _option(config: SourceConfig, key: str) -> str | None:
    value = config.options.get(key)
    if value is None or value == "":
        return None
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def _required(tenant: str, routing: Routing) -> dict[str, SourceConfig]:
    """The source configs ``tenant``'s enabled writers need, by source.

    Raises:
        ConfigError: a writer is enabled without its source's credentials (names the missing options).
    """
    wb = routing.tenants[tenant].writeback
    needs: dict[str, list[str]] = {}
    if wb is not None and wb.ingenious is not None:
        needs["ingenious"] = ["api_token"] if wb.ingenious.base_url else ["api_base_url", "api_token"]
    if wb is not None and wb.mercoa.mark_paid:
        needs["mercoa"] = ["api_base_url", "api_key"]
    if wb is not None and wb.monite.mark_paid:
        needs["monite"] = ["api_base_url", "client_id", "client_secret", "entity_id"]
    found: dict[str, SourceConfig] = {}
    for name, options in needs.items():
        src = routing.tenants[tenant].sources.get(name)
        missing = [k for k in options if src is None or _option(src, k) is None]
        if src is None or missing:
            raise ConfigError(
                f"tenant {tenant!r} writes back into {name} but sources.{name}.options lacks {', '.join(missing)}"
            )
        found[name] = src
    return found


def check_writeback(routing: Routing) -> None:
    """Check that every enabled source writer has its source's credentials (before a worker starts).

    Raises:
        ConfigError: the first tenant and source whose options are missing.
    """
    for tenant in routing.tenants:
        _required(tenant, routing)


def build_writers(routing: Routing, http: httpx.AsyncClient) -> dict[str, list[SourceWriter]]:
    """The source writers of every tenant with a ``writeback`` section, by tenant.

    Credentials and base URLs are the tenant's ``sources.<source>.options`` (as enrichment reads
    them): INGENIOUS ``api_base_url`` (or ``writeback.ingenious.base_url``) and ``api_token``;
    Mercoa ``api_base_url`` and ``api_key``; Monite ``api_base_url``, ``client_id``,
    ``client_secret`` and ``entity_id`` [, ``api_version``]. ``retry_attempts``,
    ``retry_wait_initial`` and ``retry_wait_max`` tune the in-place retries.

    Raises:
        ConfigError: a tenant enables a writer whose source credentials are missing (names them).
    """
    writers: dict[str, list[SourceWriter]] = {}
    for tenant, config in routing.tenants.items():
        wb = config.writeback
        if wb is None:
            continue
        sources = _required(tenant, routing)
        found: list[SourceWriter] = []

        def retry(src: SourceConfig) -> dict[str, Any]:
            return {
                "attempts": int(src.options.get("retry_attempts", 4)),
                "wait_max": float(src.options.get("retry_wait_max", 5.0)),
                "wait_initial": float(src.options.get("retry_wait_initial", 0.2)),
            }

        if wb.ingenious is not None:
            src = sources["ingenious"]
            base = wb.ingenious.base_url or str(_option(src, "api_base_url"))
            client = IngeniousClient(http, base, str(_option(src, "api_token")), **retry(src))
            found.append(IngeniousWriter(client, wb.ingenious))
        if "mercoa" in sources:
            src = sources["mercoa"]
            mercoa = MercoaClient(
                http, str(_option(src, "api_base_url")), str(_option(src, "api_key")), refetch=False, **retry(src)
            )
            found.append(MercoaWriter(mercoa))
        if "monite" in sources:
            src = sources["monite"]
            monite = MoniteClient(
                http,
                str(_option(src, "api_base_url")),
                str(_option(src, "client_id")),
                str(_option(src, "client_secret")),
                entity_id=_option(src, "entity_id"),
                api_version=str(src.options.get("api_version", "2024-05-25")),
                **retry(src),
            )
            found.append(MoniteWriter(monite))
        writers[tenant] = found
    return writers


Publish = Callable[[str, bytes | None, bytes, dict[str, str]], Awaitable[Any]]


class SourceWriterRuntime:
    """Writes the inbound records of every routed ERP connection into the tenants' sources.

    Args:
        routing: tenants, their ``writeback`` sections and source credentials.
        state: the write ledger's store.
        writers: source writers by tenant (:func:`build_writers`).
        publish: ``publish(topic, key, value, headers)`` returning after the broker's ack.
        settings: topic prefix and fetch wait.
        retry: the retry tiers' delays.
    """

    def __init__(
        self,
        routing: Routing,
        state: StateStore,
        writers: Mapping[str, Sequence[SourceWriter]],
        publish: Publish,
        settings: Settings,
        retry: WritebackRetry | None = None,
    ) -> None:
        self.routing = routing
        self.state = state
        self.writers = writers
        self.publish = publish
        self.topics = settings.topics
        self.fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms
        self.retry = retry or WritebackRetry()
        self.durable = DurableOutcomes()

    async def handle_batch(self, records: Sequence[ConsumedRecord], *, concurrency: int) -> None:
        """Write a batch (:func:`~ledgerflow.core.delivery.run_batch`); same key in order.

        Raises:
            Exception: a result or dead letter could not be written (the batch is redelivered).
        """
        completed: list[ConsumedRecord] = []
        try:
            await run_batch(
                records,
                self.handle,
                stage=STAGE,
                dlq_topic=self.topics.dlq(STAGE),
                publish=self.publish,
                concurrency=concurrency,
                durable=self.durable,
                completed=completed,
            )
        finally:
            self.durable.remember(completed)

    async def handle(self, record: ConsumedRecord) -> None:
        """Write one inbound record into every source that takes it; publish a result per write.

        Raises:
            DeadLetter: the record is not an inbound reference record (cannot be written at all).
            Exception: a result could not be published (the batch is redelivered).
        """
        headers = header_map(record)
        try:
            attrs = EventAttributes.from_headers(headers)
        except MissingAttributeError as exc:
            raise DeadLetter("missing-attributes", str(exc)) from None
        if headers.get(h.CE_DIRECTION) != h.DIRECTION_INBOUND:
            raise DeadLetter("not-inbound", f"{h.CE_DIRECTION} is {headers.get(h.CE_DIRECTION)!r}, not inbound")
        tier = int(headers.get(h.RETRY_TIER, "0") or 0)
        original_topic = headers.get(h.RETRY_ORIGINAL_TOPIC) if tier else record.topic
        if tier:
            delay = float(headers.get(h.RETRY_NOT_BEFORE, "0") or 0) - time.time()
            if delay > 0:
                await asyncio.sleep(min(delay, 540.0))
        try:
            ref = ReferenceRecord.model_validate_json(record.value or b"")
        except ValidationError as exc:
            raise DeadLetter("invalid-record", str(exc)) from None
        # A parked record, or a dead letter replayed, carries the (tenant, source) writes still to do.
        wanted = {t for t in headers.get(TARGETS_HEADER, "").split(",") if t} or None
        pending: list[str] = []
        last_error = ""
        origin = await self._origin(ref)
        with log_context(connection=ref.connection, kind=ref.kind):
            for tenant in sorted(self.routing.writeback_tenants(ref.connection)):
                for writer in self.writers.get(tenant, ()):
                    target = f"{tenant}/{writer.source}"
                    if (wanted is not None and target not in wanted) or not writer.takes(ref):
                        continue
                    started = datetime.now(UTC)
                    if (tenant, writer.source) in origin:
                        outcomes: Sequence[WriteOutcome] = [_from_source(ref, writer.source)]
                    else:
                        outcomes = await writer.write(ref, tenant, WriteLedger(self.state, writer.source, tenant))
                    for outcome in outcomes:
                        await self._publish_result(ref, attrs, tenant, writer.source, outcome, started, tier)
                        if outcome.retriable:
                            pending.append(target)
                            last_error = outcome.error.message if outcome.error else "retriable failure"
        if pending:
            await self._park_or_give_up(record, headers, original_topic or record.topic, tier, pending, last_error)

    async def _origin(self, ref: ReferenceRecord) -> set[tuple[str, str]]:
        """The (tenant, source) a payment came from when ledgerflow booked it into the ERP itself.

        The connector's binder holds ``<tenant>:<source>:payment:<source id>`` → the ERP payment id
        on the connection (``ledgerflow.connectors.binder``); such a payment read back from the ERP
        is not written into the source it came from (Monite's ``amount_paid`` would count it twice).
        """
        if ref.kind != "payment":
            return set()
        found: set[tuple[str, str]] = set()
        for row in await self.state.bindings_of_erp_records(ref.connection, [ref.erp_id]):
            parts = row.key.split(":")
            for index in range(1, len(parts) - 2):
                if parts[index] in _SOURCES and parts[index + 1] == "payment":
                    found.add((":".join(parts[:index]), parts[index]))
                    break
        return found

    async def _publish_result(
        self,
        ref: ReferenceRecord,
        attrs: EventAttributes,
        tenant: str,
        source: str,
        outcome: WriteOutcome,
        started: datetime,
        tier: int,
    ) -> None:
        canonical_id = f"{tenant}:{source}:inbound:{ref.kind}:{outcome.key}"
        result = SyncResult(
            direction="inbound",
            event_id=attrs.id,
            canonical_id=canonical_id,
            object_type=ref.kind,
            tenant=tenant,
            source=source,
            erp=ref.erp,
            connection=ref.connection,
            operation=outcome.operation,
            outcome=outcome.outcome,
            erp_record_id=outcome.erp_record_id or ref.erp_id,
            source_record_id=outcome.source_record_id,
            attempts=outcome.attempts,
            http_status=outcome.http_status,
            error=outcome.error,
            amount=outcome.amount,
            currency=outcome.currency,
            started_at=started,
            finished_at=datetime.now(UTC),
        )
        event_id = deterministic_id(attrs.id, tenant, source, outcome.key, f"writeback-tier-{tier}")
        result_attrs = EventAttributes(
            id=event_id,
            source=f"/tenants/{tenant}/{source}",
            type="io.ledgerflow.sync_result.v1",
            tenant=tenant,
            subject=canonical_id,
            traceparent=attrs.traceparent,
            extensions={h.CE_DIRECTION.removeprefix(h.CE_PREFIX): h.DIRECTION_INBOUND},
        )
        await self.publish(
            self.topics.results, canonical_id.encode(), result.model_dump_json().encode(), result_attrs.to_headers()
        )
        metrics.WRITEBACK_RESULTS.labels(tenant, source, ref.kind, ref.connection, outcome.outcome.value).inc()

    async def _park_or_give_up(
        self,
        record: ConsumedRecord,
        headers: dict[str, str],
        original_topic: str,
        tier: int,
        pending: list[str],
        reason: str,
    ) -> None:
        """Park the record on the next tier for the ``pending`` writes, or dead-letter it after the last tier."""
        delays = self.retry.park_delays
        if tier < len(delays):
            now = time.time()
            parked = {k: v for k, v in headers.items() if k not in _PARKING}
            parked.update(
                {
                    h.RETRY_TIER: str(tier + 1),
                    h.RETRY_PARKED_AT: headers.get(h.RETRY_PARKED_AT) or f"{now:.3f}",
                    h.RETRY_NOT_BEFORE: f"{now + delays[tier]:.3f}",
                    h.RETRY_ORIGINAL_TOPIC: original_topic,
                    TARGETS_HEADER: ",".join(sorted(set(pending))),
                }
            )
            await self.publish(self.topics.retry(STAGE, tier + 1), record.key, record.value or b"", parked)
            log.info("writeback: parked %s for %s on retry tier %d", record.key, ",".join(pending), tier + 1)
            return
        error = DeadLetter("retries-exhausted", f"{','.join(sorted(set(pending)))}: {reason}", attempts=tier + 1)
        dl_headers = {
            k: v
            for k, v in dead_letter_headers(record, STAGE, error, original_topic=original_topic).items()
            if k not in _PARKING  # a replay starts again at the first round
        }
        dl_headers[TARGETS_HEADER] = ",".join(sorted(set(pending)))
        await self.publish(self.topics.dlq(STAGE), record.key, record.value or b"", dl_headers)
        metrics.DLQ_MESSAGES.labels(STAGE, error.reason).inc()


def register(
    broker: KafkaBroker, runtime: SourceWriterRuntime, *, concurrency: int = 8, max_records: int = 200
) -> None:
    """Subscribe ``runtime`` to every inbound topic (group ``<prefix>.writeback``) and its retry tiers.

    Args:
        broker: a not-yet-started FastStream broker.
        runtime: the source writers' runtime.
        concurrency: records of different keys written at once.
        max_records: largest batch fetched at once.
    """
    group = runtime.topics.group(GROUP_ROLE)

    @batch_subscriber(
        broker,
        *inbound_topics(runtime.topics),
        group_id=group,
        max_records=max_records,
        fetch_max_wait_ms=runtime.fetch_max_wait_ms,
    )
    async def on_inbound(records: Any) -> None:
        await runtime.handle_batch(records, concurrency=concurrency)

    tiers = retry_topics(runtime.topics, len(runtime.retry.park_delays))
    if tiers:

        @batch_subscriber(
            broker,
            *tiers,
            group_id=f"{group}.retry",
            max_records=max_records,
            fetch_max_wait_ms=runtime.fetch_max_wait_ms,
            max_poll_interval_ms=600_000,
        )
        async def on_retry(records: Any) -> None:
            await runtime.handle_batch(records, concurrency=concurrency)
