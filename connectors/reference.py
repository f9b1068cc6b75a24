"""ERP readers: reference data read back from an ERP, incrementally, onto the inbound topics.

Each ERP package has a ``reader.py`` with a :class:`ReferenceReader` subclass that lists its
:class:`ReferenceSource` s (one per ERP entity and :data:`~ledgerflow.contracts.reference.ReferenceKind`)
and reads one page of one source. It goes through its connector's authenticated
:class:`~ledgerflow.core.outbound.client.ErpClient` (``connector.client()``), so reads share the
connection's OAuth tokens, rate limit and concurrency cap with its writes.

:class:`ReferenceSync` does the rest for every ERP: cursors in the state store, de-duplication,
publishing :class:`~ledgerflow.contracts.reference.ReferenceRecord` s to
``<prefix>.inbound.<kind>.v1`` with ``ce_direction: inbound``.

Cursors (state store ``cursors`` table, name ``reference:<connection>:<kind>:<entity>``, JSON):

* incremental sources (the ERP filters on a change time: QuickBooks ``MetaData.LastUpdatedTime``,
  Xero ``If-Modified-Since``, NetSuite ``lastmodifieddate``, SAP change dates, Coupa ``updated-at``):
  ``{"since": <newest change time published, ISO 8601 UTC>, "seen": {id: content hash of each record
  published at exactly that time}}``. Each page asks for records changed at or after ``since`` in
  ascending change-time order, at most ``page_size`` + the ids already seen at ``since`` (keyset
  paging: a record changed while the pages are read moves to the end instead of shifting an offset
  over one not read yet). Records changed before ``since``, or at ``since`` with the content hash in
  ``seen``, are skipped; a record changed again within the same clock tick (NetSuite, SAP and Coupa
  stamp whole seconds) has another hash and is published again, under a new event id (the id is
  made of the change time and the content hash). The cursor is written after every page, once the
  broker acknowledged the page's records, in one transaction with the page's rows of the reference
  cache (:mod:`ledgerflow.core.reference_cache`): a restart re-reads nothing acknowledged and misses
  nothing; a crash between the acknowledgement and the cursor write publishes that page again with
  the same event ids. ``"checked"`` is when the last pass that read the source to its end started
  (:meth:`ReferenceReader.resume`).
* snapshot sources (the ERP has no change filter: Xero ``TaxRates`` and ``TrackingCategories``):
  the whole list is read and a record is published when its content hash differs from the one
  stored in the cursor ``{"hashes": {id: sha256}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from faststream.kafka import KafkaBroker

from ledgerflow.connectors.base import Connector
from ledgerflow.contracts.events import deterministic_id, inbound_event_attributes
from ledgerflow.contracts.reference import ReferenceKind, ReferenceRecord
from ledgerflow.contracts.topics import Topics
from ledgerflow.core import metrics
from ledgerflow.core.kafka import broker_from_settings, ensure_topics, kafka_client_options
from ledgerflow.core.outbound.transport import worker_http_client
from ledgerflow.core.reference_cache import ReferenceCache
from ledgerflow.core.settings import Routing, Settings
from ledgerflow.core.state import StateStore

__all__ = [
    "READERS",
    "KafkaReferencePublisher",
    "ReferenceCursor",
    "ReferencePage",
    "ReferencePublisher",
    "ReferenceReader",
    "ReferenceSource",
    "ReferenceSync",
    "SyncReport",
    "content_hash",
    "open_reference_sync",
    "reader_class",
    "utc",
]

log = logging.getLogger(__name__)


def content_hash(record: dict[str, Any]) -> str:
    """SHA-256 (hex) of ``record`` as canonical JSON (sorted keys; Decimal and dates as text)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ReferenceSource:
    """One ERP entity read as one kind: ``incremental`` when the ERP filters it by change time."""

    kind: ReferenceKind
    entity: str
    incremental: bool = True


@dataclass(frozen=True, slots=True)
class ReferencePage:
    """Records of one read, in ascending change-time order; ``complete`` when the ERP has no more."""

    records: list[ReferenceRecord]
    complete: bool


class ReferenceReader(ABC):
    """Reads reference data of one ERP connection, one source and page at a time.

    Args:
        connector: the connection's connector (its authenticated client, name and config).
        page_size: records per page (QuickBooks ``MAXRESULTS`` ≤ 1000, Xero ``pageSize`` ≤ 1000).
    """

    erp: ClassVar[str]
    sources: ClassVar[tuple[ReferenceSource, ...]]

    def __init__(self, connector: Connector, *, page_size: int = 100) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.connector = connector
        self.page_size = page_size

    @property
    def connection(self) -> str:
        """The connection name."""
        return self.connector.name

    def resume(self, source: ReferenceSource, checked: datetime | None) -> None:
        """Told before a pass reads incremental ``source``: when the last pass that read it to the end started.

        Every change before ``checked`` (less clock skew) was read then, so a reader whose change
        feed only reaches back so far (QuickBooks change data capture: 30 days) may start there
        when ``since`` is older. None: no such pass, or the source is read again from the start.
        The default ignores it.
        """
        return None

    @abstractmethod
    async def read(self, source: ReferenceSource, since: datetime | None, limit: int) -> ReferencePage:
        """Up to ``limit`` records of ``source`` changed at or after ``since`` (all when None), oldest change first.

        Snapshot sources (``incremental`` False) ignore ``since`` and ``limit`` and return every record.

        Raises:
            RetriableError, PermanentError: as the connector's client raises them.
        """


class ReferencePublisher(Protocol):
    """Writes one message and returns once the broker acknowledged it."""

    async def publish(self, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        """Publish ``value`` under ``key`` to ``topic`` with ``headers``."""


class KafkaReferencePublisher:
    """:class:`ReferencePublisher` over a connected FastStream ``KafkaBroker`` (acks=all producer)."""

    def __init__(self, broker: KafkaBroker) -> None:
        self.broker = broker

    async def publish(self, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        """Publish and wait for the acknowledgement (raises what the producer raises)."""
        await self.broker.publish(value, topic=topic, key=key, headers=headers)


@dataclass(slots=True)
class ReferenceCursor:
    """Where one source was read up to (see the module docstring for the stored JSON)."""

    since: datetime | None = None
    seen: dict[str, str] = field(default_factory=dict)
    """ERP id → content hash of the records published at exactly ``since`` (a record changed again
    within the same clock tick — NetSuite, SAP and Coupa stamp whole seconds — differs in hash and
    is published again)."""
    hashes: dict[str, str] = field(default_factory=dict)
    checked: datetime | None = None
    """When the last pass that read the source to its end started (local UTC clock), None if none did."""

    @classmethod
    def parse(cls, stored: str | None) -> ReferenceCursor:
        """The cursor stored as ``stored`` (None: nothing read yet)."""
        if not stored:
            return cls()
        data = json.loads(stored)
        since = datetime.fromisoformat(data["since"]) if data.get("since") else None
        checked = datetime.fromisoformat(data["checked"]) if data.get("checked") else None
        stored_seen = data.get("seen", {})
        # Cursors written before the hashes were kept hold a list of ids: an empty hash matches
        # nothing, so those few records are published once more (same content, writers de-duplicate).
        seen = dict(stored_seen) if isinstance(stored_seen, dict) else dict.fromkeys(stored_seen, "")
        return cls(since=since, seen=seen, hashes=dict(data.get("hashes", {})), checked=checked)

    def dump(self) -> str:
        """The cursor as stored."""
        data: dict[str, Any] = {}
        if self.since is not None:
            data["since"] = self.since.isoformat()
            data["seen"] = dict(sorted(self.seen.items()))
        if self.hashes:
            data["hashes"] = self.hashes
        if self.checked is not None:
            data["checked"] = self.checked.isoformat()
        return json.dumps(data, sort_keys=True)

    def covers(self, record: ReferenceRecord) -> bool:
        """True when ``record`` (incremental) was published before: older than ``since``, or at it, same content."""
        if self.since is None or record.updated_at is None:
            return False
        if record.updated_at < self.since:
            return True
        return record.updated_at == self.since and self.seen.get(record.erp_id) == content_hash(record.erp_record)

    def advance(self, record: ReferenceRecord) -> None:
        """Record that ``record`` (incremental) was published."""
        if record.updated_at is None:
            return
        if self.since is None or record.updated_at > self.since:
            self.since = record.updated_at
            self.seen = {record.erp_id: content_hash(record.erp_record)}
        elif record.updated_at == self.since:
            self.seen[record.erp_id] = content_hash(record.erp_record)


@dataclass(slots=True)
class SyncReport:
    """What one pass published (records per kind) and how many ERP reads it took."""

    published: dict[str, int] = field(default_factory=dict)
    reads: int = 0

    @property
    def total(self) -> int:
        """Records published in all kinds."""
        return sum(self.published.values())


class ReferenceSync:
    """Reads every source of ``reader`` from its cursor and publishes what changed.

    Args:
        reader: the connection's ERP reader.
        state: the state store holding the cursors.
        publisher: acknowledged writes to Kafka.
        topics: topic names (prefix).
        tenant: ``ce_tenant`` of the published events (the connection's tenant, or the connection
            name when several tenants share it).
    """

    def __init__(
        self,
        reader: ReferenceReader,
        state: StateStore,
        publisher: ReferencePublisher,
        topics: Topics,
        *,
        tenant: str,
    ) -> None:
        self.reader = reader
        self.state = state
        self.publisher = publisher
        self.topics = topics
        self.tenant = tenant
        self.cache = ReferenceCache(state)

    def cursor_name(self, source: ReferenceSource) -> str:
        """State-store cursor name of ``source``: ``reference:<connection>:<kind>:<entity>``."""
        return f"reference:{self.reader.connection}:{source.kind}:{source.entity}"

    async def _publish(self, record: ReferenceRecord) -> None:
        # The change time and the content: a record changed twice within one clock tick (whole-second
        # stamps) gets a new event id; the same content read again keeps its id (stored once).
        digest = content_hash(record.erp_record)
        version = f"{record.updated_at.isoformat()}:{digest}" if record.updated_at else digest
        attributes = inbound_event_attributes(
            id=deterministic_id(record.connection, record.kind, record.entity, record.erp_id, version),
            tenant=self.tenant,
            erp=record.erp,
            connection=record.connection,
            kind=record.kind,
            subject=record.key,
            time=record.updated_at,
        )
        await self.publisher.publish(
            self.topics.inbound(record.kind),
            record.key.encode(),
            record.model_dump_json().encode(),
            attributes.to_headers(),
        )
        metrics.REFERENCE_RECORDS.labels(record.connection, record.kind).inc()

    async def sync_source(self, source: ReferenceSource, report: SyncReport) -> int:
        """Read ``source`` from its cursor to the end, publish what is new; return how many were published.

        Each page's records go to the reference cache (:class:`~ledgerflow.core.reference_cache.ReferenceCache`)
        in the transaction that writes the cursor, after the broker acknowledged them. A source
        the cache does not hold completely yet (first pass, or a cursor older than the cache) is
        read from the start: every record is cached, only those the cursor does not cover are
        published. The pass that reaches the end marks the source complete.
        """
        name = self.cursor_name(source)
        cursor = ReferenceCursor.parse(await self.state.get_cursor(name))
        connection = self.reader.connection
        published = 0
        if not source.incremental:
            page = await self.reader.read(source, None, self.reader.page_size)
            report.reads += 1
            for record in page.records:
                digest = content_hash(record.erp_record)
                if cursor.hashes.get(record.erp_id) != digest:
                    await self._publish(record)
                    cursor.hashes[record.erp_id] = digest
                    published += 1
            await self.cache.write(
                connection,
                source.kind,
                source.entity,
                page.records,
                cursor=(name, cursor.dump()),
                complete=True,
                replace=True,
                erp=self.reader.erp,
            )
            return published
        full = not await self.cache.is_complete(connection, source.kind, source.entity)
        position = ReferenceCursor() if full else cursor
        allowance = len(position.seen)
        started = datetime.now(UTC)
        self.reader.resume(source, None if full else cursor.checked)
        while True:
            limit = self.reader.page_size + allowance
            page = await self.reader.read(source, position.since, limit)
            report.reads += 1
            fresh = [record for record in page.records if not position.covers(record)]
            for record in fresh:
                if not cursor.covers(record):
                    await self._publish(record)
                    cursor.advance(record)
                    published += 1
                position.advance(record)
            done = page.complete or len(page.records) < limit
            if done:
                cursor.checked = started
            if fresh or done:
                await self.cache.write(
                    connection,
                    source.kind,
                    source.entity,
                    fresh,
                    cursor=(name, cursor.dump()),
                    complete=done,
                    erp=self.reader.erp,
                )
            if done:
                return published
            # A full page of records seen before (many sharing one change time): ask for more at once.
            allowance = len(position.seen) if fresh else limit

    async def sync_once(self, kinds: Sequence[str] | None = None) -> SyncReport:
        """One pass over every source (or those of ``kinds``); returns what was published.

        Counted in ``ledgerflow_reference_syncs_total{connection, outcome}``; each record published
        in ``ledgerflow_reference_records_total{connection, kind}``.

        Raises:
            RetriableError, PermanentError: a read failed (sources before it keep their progress).
        """
        report = SyncReport()
        try:
            for source in self.reader.sources:
                if kinds is not None and source.kind not in kinds:
                    continue
                count = await self.sync_source(source, report)
                report.published[source.kind] = report.published.get(source.kind, 0) + count
        except Exception:
            metrics.REFERENCE_SYNCS.labels(self.reader.connection, "failed").inc()
            raise
        metrics.REFERENCE_SYNCS.labels(self.reader.connection, "ok").inc()
        log.info(
            "reference sync of %s: %d record(s) published in %d read(s) %s",
            self.reader.connection,
            report.total,
            report.reads,
            report.published,
        )
        return report

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """:meth:`sync_once` every ``interval`` seconds until ``stop`` is set.

        A failed pass is logged and the next one, ``interval`` later, resumes from the cursors.
        """
        while not stop.is_set():
            try:
                await self.sync_once()
            except Exception:  # a scheduled pass must not end the schedule; the next one resumes from the cursors
                log.exception("reference sync of %s failed; next attempt in %.0f s", self.reader.connection, interval)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                continue


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (naive values are taken as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


READERS: dict[str, str] = {
    "quickbooks": "ledgerflow.connectors.quickbooks.reader:QuickBooksReader",
    "xero": "ledgerflow.connectors.xero.reader:XeroReader",
    "netsuite": "ledgerflow.connectors.netsuite.reader:NetSuiteReader",
    "sap": "ledgerflow.connectors.sap.reader:SapReader",
    "coupa": "ledgerflow.connectors.coupa.reader:CoupaReader",
}
"""ERP kind → ``module:Class`` of its :class:`ReferenceReader` (ERPs without one cannot be read yet)."""


def reader_class(erp: str) -> type[ReferenceReader]:
    """The reader class of ERP kind ``erp``.

    Raises:
        LookupError: ``erp`` has no reader (see :data:`READERS`).
    """
    target = READERS.get(erp)
    if target is None:
        raise LookupError(f"no reference reader for ERP {erp!r} (readers exist for {', '.join(READERS)})")
    module, _, name = target.partition(":")
    cls: type[ReferenceReader] = getattr(importlib.import_module(module), name)
    return cls


@contextlib.asynccontextmanager
async def open_reference_sync(
    settings: Settings,
    routing: Routing,
    connection: str,
    bootstrap_servers: str,
    *,
    embedded: bool,
    page_size: int = 100,
    state: StateStore | None = None,
) -> AsyncIterator[ReferenceSync]:
    """A :class:`ReferenceSync` of ``connection`` with its connector, HTTP client, state store and producer.

    The inbound topics are created when missing. The events' tenant is the connection's only
    tenant, or the connection name when several tenants (or none) route to it.

    Raises:
        KeyError: ``connection`` is not in ``routing``.
        LookupError: its ERP has no reader.
        aiokafka.errors.KafkaError: the broker cannot be reached.
    """
    from ledgerflow.connectors.registry import connector_class
    from ledgerflow.contracts.reference import INBOUND_KINDS

    config = routing.connections[connection]
    reader_cls = reader_class(config.erp)
    topics = Topics(settings.topic_prefix)
    async with contextlib.AsyncExitStack() as stack:
        if state is None:
            state = StateStore.from_settings(settings)
            await state.create_all()
            stack.push_async_callback(state.close)
        http = await stack.enter_async_context(worker_http_client(settings.http_transport))
        connector = connector_class(config.erp)(connection, config, http, state)
        stack.push_async_callback(connector.aclose)
        await ensure_topics(
            bootstrap_servers,
            [topics.inbound(kind) for kind in INBOUND_KINDS],
            partitions=settings.topic_partitions,
            client_options=kafka_client_options(settings),
        )
        broker = broker_from_settings(settings, bootstrap_servers, embedded=embedded)
        await broker.connect()
        stack.push_async_callback(broker.stop)
        tenants = sorted(routing.tenants_for(connection))
        reader = reader_cls(connector, page_size=page_size)
        yield ReferenceSync(
            reader,
            state,
            KafkaReferencePublisher(broker),
            topics,
            tenant=tenants[0] if len(tenants) == 1 else connection,
        )
