"""The audit store: idempotent ingestion of ``SyncResult`` events and the sync-records queries.

Ingestion of one result is one transaction:

1. create the sync record if missing (insert, ignoring a conflict on its id);
2. insert the attempt, ignoring a conflict on its ``ce_id`` (a redelivered result is stored once);
3. only if the attempt was new, update the record: the attempt count goes up by one, first/last
   attempt times widen, and the latest outcome / ERP record id are taken from the attempt only
   if it finished at or after the record's last attempt (results may arrive out of order).

The update is one statement computing from the row's current values, so replicas racing on the
same record leave the right count on SQLite and PostgreSQL alike.

Listing uses keyset ("cursor") pagination in a stable order — newest record first by
``created_at`` then ``id``, both immutable — so pages never repeat or skip a record, even while
results keep arriving.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import orjson
from sqlalchemy import CursorResult, Select, Table, and_, case, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.pool import StaticPool

from ledgerflow.audit.tables import (
    CanonicalRecordRow,
    DeadLetterRow,
    SourceDocumentRow,
    SyncAttemptRow,
    SyncRecordRow,
    UtcDateTime,
    sync_record_id,
)
from ledgerflow.contracts import SyncResult
from ledgerflow.contracts.events import deterministic_id
from ledgerflow.core.deadletters import DeadLetterInfo

__all__ = [
    "AuditStore",
    "CanonicalEvent",
    "ConnectionHealth",
    "DeadLetterFilter",
    "DeadLetterIn",
    "DeadLetterPage",
    "InvalidCursorError",
    "RecordFilter",
    "RecordPage",
    "SourceDocumentIn",
    "document_number",
]

DOCUMENT_NUMBER_FIELDS = ("bill_number", "invoice_number", "po_number", "order_number", "document_number", "number")
"""Canonical fields holding a document's number, in the order they are looked for (search by number)."""


def document_number(record: Mapping[str, Any]) -> str | None:
    """The document number of a canonical record (bill, invoice, PO, order…), or None when it has none."""
    for name in DOCUMENT_NUMBER_FIELDS:
        value = record.get(name)
        if isinstance(value, str) and value:
            return value[:200]
    return None


class InvalidCursorError(ValueError):
    """A pagination cursor that this store did not produce (or from an incompatible version)."""


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Filters of :meth:`AuditStore.list_records`; ``None`` means "any".

    ``since``/``until`` bound the record's *last* attempt time (``since`` inclusive, ``until``
    exclusive), so "what happened between 9:00 and 10:00" lists every record attempted then.
    """

    tenant: str | None = None
    source: str | None = None
    object_type: str | None = None
    erp: str | None = None
    connection: str | None = None
    outcome: str | None = None
    direction: str | None = None
    """``outbound`` or ``inbound`` (:attr:`ledgerflow.contracts.SyncResult.direction`)."""
    since: datetime | None = None
    until: datetime | None = None
    search: str | None = None
    """Exact source id, document number, event id (canonical or result) or sync record id."""
    tenants: tuple[str, ...] | None = None
    """Only these tenants (the caller's visibility); None = every tenant."""


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Filters of :meth:`AuditStore.list_dead_letters`; ``None``/empty means "any".

    ``since`` (inclusive) and ``until`` (exclusive) bound the time it was dead-lettered.
    ``tenants`` is the caller's visibility: dead letters without a tenant are then hidden.
    """

    stages: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    search: str | None = None
    """Exact event id (``ce_id``) or dead letter id."""
    tenants: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class DeadLetterIn:
    """A message read from ``ledgerflow.dlq.<stage>``: where it was read, its bytes and headers.

    ``timestamp`` is the Kafka timestamp (when it was dead-lettered).
    """

    stage: str
    topic: str
    partition: int
    offset: int
    timestamp: datetime
    key: bytes | None
    value: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class SourceDocumentIn:
    """A raw event read from ``ledgerflow.raw.<source>``: where it was read, its bytes and headers.

    ``timestamp`` is the Kafka timestamp (when the ingress accepted it).
    """

    source: str
    topic: str
    partition: int
    offset: int
    timestamp: datetime
    key: bytes | None
    value: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    """One page of dead letters and the cursor of the next page (None on the last page)."""

    dead_letters: list[DeadLetterRow]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ConnectionHealth:
    """One ERP connection as the audit sees it.

    ``error_rate`` is failed / all attempts finished in the window (None without attempts);
    ``health`` is ``healthy`` (no failure in the window), ``degraded`` (some), ``failing`` (every
    attempt in the window failed), or ``idle`` (no attempt in the window).
    """

    connection: str
    erp: str
    tenants: list[str]
    records: int
    failed_records: int
    last_success_at: datetime | None
    last_attempt_at: datetime | None
    attempts_in_window: int
    failures_in_window: int
    requests_last_minute: int
    """ERP requests (HTTP attempts, in-place retries included) of the attempts that finished in the last minute."""
    error_rate: float | None
    health: str


@dataclass(frozen=True, slots=True)
class RecordPage:
    """One page of sync records and the cursor of the next page (None on the last page)."""

    records: list[SyncRecordRow]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class CanonicalEvent:
    """A canonical record as published: Kafka value, CloudEvents headers, and where it was read."""

    canonical_id: str
    object_type: str
    tenant: str
    event_id: str
    headers: dict[str, str]
    body: bytes
    topic: str
    partition: int
    offset: int
    source_id: str | None = None
    document_number: str | None = None


R = TypeVar("R", SyncRecordRow, DeadLetterRow)
"""A row kind the keyset pages of :meth:`AuditStore._keyset_page` are made of."""


def _encode_cursor(row: SyncRecordRow | DeadLetterRow) -> str:
    created = row.created_at if isinstance(row, SyncRecordRow) else row.dead_lettered_at
    raw = orjson.dumps({"c": created.isoformat(), "i": row.id})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = orjson.loads(raw)
        created = datetime.fromisoformat(data["c"])
        ident = data["i"]
    except (binascii.Error, ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise InvalidCursorError("invalid cursor") from exc
    if not isinstance(ident, str) or created.tzinfo is None:
        raise InvalidCursorError("invalid cursor")
    return created, ident


def _now() -> datetime:
    return datetime.now(UTC)


def _no_nul(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with NUL characters in text (and in text inside dicts) replaced by U+FFFD.

    PostgreSQL refuses NUL in text columns; a message carrying one (an ERP answer, a dead letter's
    detail) must not become a batch that fails forever. Bytes columns keep their bytes exactly.
    """

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("\x00", "\ufffd")
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return {k: clean(v) for k, v in values.items()}


def _record_conditions(filters: RecordFilter) -> list[Any]:
    conditions: list[Any] = []
    for column, value in (
        (SyncRecordRow.tenant, filters.tenant),
        (SyncRecordRow.source, filters.source),
        (SyncRecordRow.object_type, filters.object_type),
        (SyncRecordRow.erp, filters.erp),
        (SyncRecordRow.connection, filters.connection),
        (SyncRecordRow.outcome, filters.outcome),
        (SyncRecordRow.direction, filters.direction),
    ):
        if value is not None:
            conditions.append(column == value)
    if filters.tenants is not None:
        conditions.append(SyncRecordRow.tenant.in_(filters.tenants))
    if filters.since is not None:
        conditions.append(SyncRecordRow.last_attempt_at >= filters.since)
    if filters.until is not None:
        conditions.append(SyncRecordRow.last_attempt_at < filters.until)
    if filters.search:
        q = filters.search.strip()
        by_canonical = select(CanonicalRecordRow.canonical_id).where(
            or_(
                CanonicalRecordRow.document_number == q,
                CanonicalRecordRow.source_id == q,
                CanonicalRecordRow.event_id == q,
            )
        )
        by_attempt = select(SyncAttemptRow.sync_record_id).where(
            or_(SyncAttemptRow.event_id == q, SyncAttemptRow.result_event_id == q)
        )
        conditions.append(
            or_(
                SyncRecordRow.id == q,
                SyncRecordRow.canonical_id == q,
                SyncRecordRow.canonical_id.endswith(":" + q, autoescape=True),
                SyncRecordRow.last_event_id == q,
                SyncRecordRow.canonical_id.in_(by_canonical),
                SyncRecordRow.id.in_(by_attempt),
            )
        )
    return conditions


def _dead_letter_conditions(filters: DeadLetterFilter) -> list[Any]:
    conditions: list[Any] = []
    if filters.stages:
        conditions.append(DeadLetterRow.stage.in_(filters.stages))
    if filters.reasons:
        conditions.append(DeadLetterRow.reason.in_(filters.reasons))
    if filters.tenant is not None:
        conditions.append(DeadLetterRow.tenant == filters.tenant)
    if filters.tenants is not None:
        conditions.append(DeadLetterRow.tenant.in_(filters.tenants))
    if filters.since is not None:
        conditions.append(DeadLetterRow.dead_lettered_at >= filters.since)
    if filters.until is not None:
        conditions.append(DeadLetterRow.dead_lettered_at < filters.until)
    if filters.search:
        q = filters.search.strip()
        conditions.append(or_(DeadLetterRow.id == q, DeadLetterRow.event_id == q))
    return conditions


class AuditStore:
    """Async access to the audit tables (created by :func:`ledgerflow.audit.migrate.upgrade`).

    Args:
        url: SQLAlchemy async URL, e.g. ``sqlite+aiosqlite:///ledgerflow-state.db`` or
            ``postgresql+asyncpg://ledgerflow@db/ledgerflow`` (usually ``LEDGERFLOW_STATE_URL``).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite") and (":memory:" in url or url.endswith("://")):
            kwargs = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
        # SQL parameters (API key hashes, masked payloads) never reach logs or exception messages.
        self.engine: AsyncEngine = create_async_engine(url, hide_parameters=True, **kwargs)
        self._session = async_sessionmaker(self.engine, expire_on_commit=False)
        self.dialect = self.engine.dialect.name

    async def close(self) -> None:
        """Dispose of the connection pool."""
        await self.engine.dispose()

    def _insert(self, table: Any) -> Any:
        return pg_insert(table) if self.dialect == "postgresql" else sqlite_insert(table)

    async def ingest(self, result: SyncResult, result_event_id: str, *, trace_id: str | None = None) -> bool:
        """Store one ``SyncResult`` (``result_event_id``: its message's ``ce_id``; ``trace_id``: W3C trace id).

        The attempt keeps the whole error object (``error``: code, message, retriable, vendor code
        and whatever detail the connector attached, such as read-back differences).

        Returns:
            True if it was new, False if that event was stored already (nothing changed).

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database refused the write (the caller retries).
        """
        result_event_id = result_event_id.replace("\x00", "\ufffd")
        record_id = sync_record_id(result.canonical_id, result.connection)
        now = _now()
        error = result.error
        attempt = {
            "sync_record_id": record_id,
            "result_event_id": result_event_id,
            "event_id": result.event_id,
            "operation": result.operation.value,
            "outcome": result.outcome.value,
            "erp_record_id": result.erp_record_id,
            "erp_record_version": result.erp_record_version,
            "http_attempts": result.attempts,
            "http_status": result.http_status,
            "error_code": error.code if error else None,
            "error_message": error.message if error else None,
            "error_retriable": error.retriable if error else None,
            "error_vendor_code": error.vendor_code if error else None,
            "amount": result.amount,
            "currency": result.currency,
            "accepted_at": result.accepted_at,
            "started_at": result.started_at,
            "finished_at": result.finished_at,
            "recorded_at": now,
            "trace_id": trace_id,
            "error": error.model_dump(mode="json") if error else None,
        }
        record = {
            "id": record_id,
            "canonical_id": result.canonical_id,
            "tenant": result.tenant,
            "source": result.source,
            "object_type": result.object_type,
            "erp": result.erp,
            "connection": result.connection,
            "outcome": result.outcome.value,
            "operation": result.operation.value,
            "erp_record_id": result.erp_record_id,
            "erp_record_version": result.erp_record_version,
            "amount": result.amount,
            "currency": result.currency,
            "last_event_id": result.event_id,
            "first_attempt_at": result.finished_at,
            "last_attempt_at": result.finished_at,
            "attempt_count": 0,
            "created_at": now,
        }
        # Inbound results (the source writers') carry their direction and the source's id; an
        # outbound one is written exactly as before those columns existed (their defaults hold).
        inbound: dict[str, Any] = {}
        if result.direction != "outbound":
            record["direction"] = result.direction
        if result.source_record_id is not None:
            attempt["source_record_id"] = record["source_record_id"] = result.source_record_id
            inbound["source_record_id"] = record["source_record_id"]
        attempt, record = _no_nul(attempt), _no_nul(record)
        table: Table = SyncRecordRow.__table__  # type: ignore[assignment]
        create_record = self._insert(table).values(**record).on_conflict_do_nothing(index_elements=["id"])
        insert_attempt = (
            self._insert(SyncAttemptRow.__table__)
            .values(**attempt)
            .on_conflict_do_nothing(index_elements=["result_event_id"])
        )
        finished = literal(result.finished_at, UtcDateTime())
        newer = table.c.last_attempt_at <= finished

        def latest(column: str) -> Any:
            value = literal(record[column], table.c[column].type)
            return case((newer, value), else_=table.c[column])

        def latest_known(column: str) -> Any:
            # ERP id, version and amount: a later attempt without one (a failure) keeps the known one.
            if record[column] is None:
                return table.c[column]
            return latest(column)

        count_attempt = (
            update(table)
            .where(table.c.id == record_id)
            .values(
                outcome=latest("outcome"),
                operation=latest("operation"),
                last_event_id=latest("last_event_id"),
                erp_record_id=latest_known("erp_record_id"),
                erp_record_version=latest_known("erp_record_version"),
                amount=latest_known("amount"),
                currency=latest_known("currency"),
                **{column: latest(column) for column in inbound},
                first_attempt_at=case(
                    (table.c.first_attempt_at > finished, finished),
                    else_=table.c.first_attempt_at,
                ),
                last_attempt_at=case((newer, finished), else_=table.c.last_attempt_at),
                attempt_count=table.c.attempt_count + 1,
            )
        )
        async with self._session.begin() as session:
            # 1. the record row exists (count 0 when just created: the attempt's foreign key needs it);
            # 2. the attempt is inserted unless its ce_id was seen (then nothing else changes);
            # 3. the record counts it and takes its outcome if it is the latest. Row locks on
            #    PostgreSQL (and SQLite's single writer) serialise racing replicas on the UPDATE.
            await session.execute(create_record)
            inserted = await session.execute(insert_attempt)
            if cast(CursorResult[Any], inserted).rowcount != 1:
                return False
            await session.execute(count_attempt)
        return True

    async def put_canonical(self, event: CanonicalEvent) -> None:
        """Keep ``event`` as the latest version of its canonical record (replacing the stored one).

        Records of one canonical id share a Kafka key, hence a partition, and arrive in order.
        """
        values = {
            "canonical_id": event.canonical_id,
            "object_type": event.object_type,
            "tenant": event.tenant,
            "event_id": event.event_id,
            "headers": dict(event.headers),
            "body": event.body.decode("utf-8"),
            "topic": event.topic,
            "partition": event.partition,
            "offset": event.offset,
            "recorded_at": _now(),
            "source_id": event.source_id,
            "document_number": event.document_number,
        }
        values = _no_nul(values)
        stmt = self._insert(CanonicalRecordRow.__table__).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["canonical_id"],
            set_={k: stmt.excluded[k] for k in values if k != "canonical_id"},
        )
        async with self._session.begin() as session:
            await session.execute(stmt)

    async def get_canonical(self, canonical_id: str, *, tenant: str) -> CanonicalEvent | None:
        """The latest canonical record of ``tenant`` stored for ``canonical_id``, or None.

        The tenant is checked as well as the id: a record of another tenant is never returned.
        """
        async with self._session() as session:
            row = await session.get(CanonicalRecordRow, canonical_id)
        if row is None or row.tenant != tenant:
            return None
        return CanonicalEvent(
            canonical_id=row.canonical_id,
            object_type=row.object_type,
            tenant=row.tenant,
            event_id=row.event_id,
            headers=dict(row.headers),
            body=row.body.encode("utf-8"),
            topic=row.topic,
            partition=row.partition,
            offset=row.offset,
            source_id=row.source_id,
            document_number=row.document_number,
        )

    async def list_records(self, filters: RecordFilter, *, limit: int = 100, cursor: str | None = None) -> RecordPage:
        """One page of sync records matching ``filters``, newest first (``created_at``, ``id`` descending).

        Args:
            filters: field filters and the last-attempt time range.
            limit: page size, 1–500.
            cursor: ``next_cursor`` of the previous page, or None for the first page.

        Raises:
            InvalidCursorError: ``cursor`` is not one this store produced.
            ValueError: ``limit`` is out of range.
        """
        stmt = select(SyncRecordRow).where(*_record_conditions(filters))
        rows, next_cursor = await self._keyset_page(stmt, SyncRecordRow.created_at, SyncRecordRow.id, limit, cursor)
        return RecordPage(rows, next_cursor)

    async def get_record(self, record_id: str) -> tuple[SyncRecordRow, list[SyncAttemptRow]] | None:
        """One sync record and its attempts (oldest first), or None when unknown."""
        async with self._session() as session:
            row = await session.get(SyncRecordRow, record_id)
            if row is None:
                return None
            attempts = await session.scalars(
                select(SyncAttemptRow)
                .where(SyncAttemptRow.sync_record_id == record_id)
                .order_by(SyncAttemptRow.finished_at, SyncAttemptRow.id)
            )
            return row, list(attempts.all())

    async def mark_retry(self, record_id: str, retry_event_id: str) -> None:
        """Remember that a retry of ``record_id`` was published as event ``retry_event_id``."""
        async with self._session.begin() as session:
            await session.execute(
                update(SyncRecordRow)
                .where(SyncRecordRow.id == record_id)
                .values(retry_event_id=retry_event_id, retry_requested_at=_now())
            )

    async def count_outcomes(self, filters: RecordFilter) -> dict[str, int]:
        """Records matching ``filters`` per latest outcome (``{"failed": 3, "succeeded": 120}``)."""
        stmt = (
            select(SyncRecordRow.outcome, func.count())
            .where(*_record_conditions(filters))
            .group_by(SyncRecordRow.outcome)
        )
        async with self._session() as session:
            rows = (await session.execute(stmt)).all()
        return {str(outcome): int(n) for outcome, n in rows}

    async def facets(self, tenants: tuple[str, ...] | None) -> dict[str, list[str]]:
        """Distinct tenants, sources, connections and object types of the visible records (filter choices)."""
        out: dict[str, list[str]] = {}
        async with self._session() as session:
            for name, column in (
                ("tenant", SyncRecordRow.tenant),
                ("source", SyncRecordRow.source),
                ("connection", SyncRecordRow.connection),
                ("object_type", SyncRecordRow.object_type),
            ):
                stmt = select(column).distinct().order_by(column).limit(500)
                if tenants is not None:
                    stmt = stmt.where(SyncRecordRow.tenant.in_(tenants))
                out[name] = [str(v) for v in (await session.scalars(stmt)).all()]
        return out

    async def put_dead_letter(self, letter: DeadLetterIn) -> bool:
        """Store one dead letter (idempotent on its topic, partition and offset). True if it was new."""
        info = DeadLetterInfo.of(letter.headers)
        values = {
            "id": deterministic_id("dead-letter", letter.topic, str(letter.partition), str(letter.offset)),
            "stage": info.stage or letter.stage,
            "reason": info.reason[:200],
            "detail": info.detail,
            "attempts": info.attempts,
            "topic": letter.topic,
            "partition": letter.partition,
            "offset": letter.offset,
            "original_topic": info.original_topic,
            "original_partition": info.original_partition,
            "original_offset": info.original_offset,
            "tenant": info.tenant[:100] if info.tenant else None,
            "event_id": info.event_id[:200] if info.event_id else None,
            "event_type": info.event_type[:200] if info.event_type else None,
            "trace_id": info.trace_id,
            "key": letter.key,
            "value": letter.value,
            "headers": dict(letter.headers),
            "dead_lettered_at": letter.timestamp,
            "recorded_at": _now(),
            "replay_count": 0,
        }
        stmt = (
            self._insert(DeadLetterRow.__table__)
            .values(**_no_nul(values))
            .on_conflict_do_nothing(index_elements=["id"])
        )
        async with self._session.begin() as session:
            inserted = await session.execute(stmt)
        return cast(CursorResult[Any], inserted).rowcount == 1

    async def list_dead_letters(
        self, filters: DeadLetterFilter, *, limit: int = 100, cursor: str | None = None
    ) -> DeadLetterPage:
        """One page of dead letters matching ``filters``, newest first (dead-letter time, id descending).

        Raises:
            InvalidCursorError: ``cursor`` is not one this store produced.
            ValueError: ``limit`` is out of range (1–500).
        """
        stmt = select(DeadLetterRow).where(*_dead_letter_conditions(filters))
        rows, next_cursor = await self._keyset_page(
            stmt, DeadLetterRow.dead_lettered_at, DeadLetterRow.id, limit, cursor
        )
        return DeadLetterPage(rows, next_cursor)

    async def _keyset_page(
        self,
        stmt: Select[R],
        at: InstrumentedAttribute[datetime],
        ident: InstrumentedAttribute[str],
        limit: int,
        cursor: str | None,
    ) -> tuple[list[R], str | None]:
        """One page of ``stmt`` newest first by (``at``, ``ident``), after ``cursor``; the next page's cursor.

        Raises:
            InvalidCursorError: ``cursor`` is not one this store produced.
            ValueError: ``limit`` is out of range (1–500).
        """
        if not 1 <= limit <= 500:
            raise ValueError("limit must be between 1 and 500")
        if cursor is not None:
            created, last = _decode_cursor(cursor)
            stmt = stmt.where(or_(at < created, and_(at == created, ident < last)))
        stmt = stmt.order_by(at.desc(), ident.desc()).limit(limit + 1)
        async with self._session() as session:
            rows = list((await session.scalars(stmt)).all())
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (_encode_cursor(rows[-1]) if more and rows else None)

    async def dead_letters_in_order(self, filters: DeadLetterFilter, *, limit: int) -> list[DeadLetterRow]:
        """Up to ``limit`` dead letters matching ``filters`` in the order they were written (per partition).

        Replaying in this order keeps the order of each original key, as ``ledgerflow replay`` does.
        """
        stmt = (
            select(DeadLetterRow)
            .where(*_dead_letter_conditions(filters))
            .order_by(DeadLetterRow.topic, DeadLetterRow.partition, DeadLetterRow.offset)
            .limit(limit)
        )
        async with self._session() as session:
            return list((await session.scalars(stmt)).all())

    async def count_dead_letters(self, filters: DeadLetterFilter) -> dict[str, int]:
        """Dead letters matching ``filters`` per stage."""
        stmt = (
            select(DeadLetterRow.stage, func.count())
            .where(*_dead_letter_conditions(filters))
            .group_by(DeadLetterRow.stage)
        )
        async with self._session() as session:
            rows = (await session.execute(stmt)).all()
        return {str(stage): int(n) for stage, n in rows}

    async def get_dead_letter(self, dead_letter_id: str) -> DeadLetterRow | None:
        """One dead letter, or None when unknown."""
        async with self._session() as session:
            return await session.get(DeadLetterRow, dead_letter_id)

    async def mark_replayed(self, dead_letter_ids: list[str]) -> None:
        """Count one more replay of each of ``dead_letter_ids`` (now)."""
        if not dead_letter_ids:
            return
        async with self._session.begin() as session:
            await session.execute(
                update(DeadLetterRow)
                .where(DeadLetterRow.id.in_(dead_letter_ids))
                .values(replay_count=DeadLetterRow.replay_count + 1, last_replayed_at=_now())
            )

    async def connections(
        self, tenants: tuple[str, ...] | None, *, window: timedelta = timedelta(hours=24)
    ) -> list[ConnectionHealth]:
        """Every connection with records visible to ``tenants``: counts, last success, error rate in ``window``.

        Only outbound records count (bookings into the ERP): a source the source writers could not
        write into says nothing about the ERP connection's health.
        """
        since = _now() - window
        visible = [SyncRecordRow.direction == "outbound"]
        if tenants is not None:
            visible.append(SyncRecordRow.tenant.in_(tenants))
        records = (
            select(
                SyncRecordRow.connection,
                SyncRecordRow.erp,
                func.count(),
                func.sum(case((SyncRecordRow.outcome == "failed", 1), else_=0)),
                func.max(SyncRecordRow.last_attempt_at),
            )
            .where(*visible)
            .group_by(SyncRecordRow.connection, SyncRecordRow.erp)
            .order_by(SyncRecordRow.connection)
        )
        attempts = (
            select(
                SyncRecordRow.connection,
                func.count(),
                func.sum(case((SyncAttemptRow.outcome == "failed", 1), else_=0)),
            )
            .join(SyncRecordRow, SyncRecordRow.id == SyncAttemptRow.sync_record_id)
            .where(SyncAttemptRow.finished_at >= since, *visible)
            .group_by(SyncRecordRow.connection)
        )
        recent_requests = (
            select(SyncRecordRow.connection, func.sum(SyncAttemptRow.http_attempts))
            .join(SyncRecordRow, SyncRecordRow.id == SyncAttemptRow.sync_record_id)
            .where(SyncAttemptRow.finished_at >= _now() - timedelta(minutes=1), *visible)
            .group_by(SyncRecordRow.connection)
        )
        successes = (
            select(SyncRecordRow.connection, func.max(SyncAttemptRow.finished_at))
            .join(SyncRecordRow, SyncRecordRow.id == SyncAttemptRow.sync_record_id)
            .where(SyncAttemptRow.outcome == "succeeded", *visible)
            .group_by(SyncRecordRow.connection)
        )
        async with self._session() as session:
            by_conn = (await session.execute(records)).all()
            window_counts = {c: (int(n), int(f or 0)) for c, n, f in (await session.execute(attempts)).all()}
            requests = {c: int(n or 0) for c, n in (await session.execute(recent_requests)).all()}
            last_success = {
                c: UtcDateTime().process_result_value(t, self.engine.dialect)
                for c, t in (await session.execute(successes)).all()
            }
            tenant_rows = (
                await session.execute(select(SyncRecordRow.connection, SyncRecordRow.tenant).where(*visible).distinct())
            ).all()
        tenants_of: dict[str, set[str]] = {}
        for conn, tenant in tenant_rows:
            tenants_of.setdefault(conn, set()).add(tenant)
        out = []
        for conn, erp, n, failed, last in by_conn:
            total, failures = window_counts.get(conn, (0, 0))
            rate = failures / total if total else None
            if total == 0:
                health = "idle"
            elif failures == 0:
                health = "healthy"
            elif failures == total:
                health = "failing"
            else:
                health = "degraded"
            out.append(
                ConnectionHealth(
                    connection=conn,
                    erp=erp,
                    tenants=sorted(tenants_of.get(conn, set())),
                    records=int(n),
                    failed_records=int(failed or 0),
                    last_success_at=last_success.get(conn),
                    last_attempt_at=UtcDateTime().process_result_value(last, self.engine.dialect),
                    attempts_in_window=total,
                    failures_in_window=failures,
                    requests_last_minute=requests.get(conn, 0),
                    error_rate=rate,
                    health=health,
                )
            )
        return out

    async def put_source_document(self, document: SourceDocumentIn) -> bool:
        """Store one source document (idempotent on its ``ce_id``; a replayed raw event is stored once).

        Returns:
            True if it was new.
        """
        info = DeadLetterInfo.of(document.headers)
        event_id = info.event_id or deterministic_id(
            "raw", document.topic, str(document.partition), str(document.offset)
        )
        values = {
            "event_id": event_id[:200],
            "tenant": info.tenant[:100] if info.tenant else None,
            "source": document.source,
            "trace_id": info.trace_id,
            "key": document.key,
            "body": document.value,
            "headers": dict(document.headers),
            "topic": document.topic,
            "partition": document.partition,
            "offset": document.offset,
            "received_at": document.timestamp,
        }
        stmt = (
            self._insert(SourceDocumentRow.__table__)
            .values(**_no_nul(values))
            .on_conflict_do_nothing(index_elements=["event_id"])
        )
        async with self._session.begin() as session:
            inserted = await session.execute(stmt)
        return cast(CursorResult[Any], inserted).rowcount == 1

    async def source_document(self, trace_id: str, tenant: str) -> SourceDocumentRow | None:
        """The latest source document of ``tenant`` in trace ``trace_id`` (the webhook a record came from)."""
        stmt = (
            select(SourceDocumentRow)
            .where(SourceDocumentRow.trace_id == trace_id, SourceDocumentRow.tenant == tenant)
            .order_by(SourceDocumentRow.received_at.desc())
            .limit(1)
        )
        async with self._session() as session:
            return (await session.scalars(stmt)).first()

    async def count(self, table: str) -> int:
        """Rows in ``table`` (``sync_records``, ``sync_attempts`` or ``canonical_records``): tests, diagnostics."""
        model: Mapping[str, Any] = {
            "sync_records": SyncRecordRow,
            "sync_attempts": SyncAttemptRow,
            "canonical_records": CanonicalRecordRow,
            "dead_letters": DeadLetterRow,
            "source_documents": SourceDocumentRow,
        }
        async with self._session() as session:
            return int(await session.scalar(select(func.count()).select_from(model[table])) or 0)
