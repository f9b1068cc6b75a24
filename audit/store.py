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
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from sqlalchemy import CursorResult, Table, and_, case, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import StaticPool

from ledgerflow.audit.tables import CanonicalRecordRow, SyncAttemptRow, SyncRecordRow, UtcDateTime, sync_record_id
from ledgerflow.contracts import SyncResult

__all__ = ["AuditStore", "CanonicalEvent", "InvalidCursorError", "RecordFilter", "RecordPage"]


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
    since: datetime | None = None
    until: datetime | None = None


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


def _encode_cursor(row: SyncRecordRow) -> str:
    raw = orjson.dumps({"c": row.created_at.isoformat(), "i": row.id})
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
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self._session = async_sessionmaker(self.engine, expire_on_commit=False)
        self.dialect = self.engine.dialect.name

    async def close(self) -> None:
        """Dispose of the connection pool."""
        await self.engine.dispose()

    def _insert(self, table: Any) -> Any:
        return pg_insert(table) if self.dialect == "postgresql" else sqlite_insert(table)

    async def ingest(self, result: SyncResult, result_event_id: str) -> bool:
        """Store one ``SyncResult`` (``result_event_id``: its message's ``ce_id``).

        Returns:
            True if it was new, False if that event was stored already (nothing changed).

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database refused the write (the caller retries).
        """
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
        }
        stmt = self._insert(CanonicalRecordRow.__table__).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["canonical_id"],
            set_={k: stmt.excluded[k] for k in values if k != "canonical_id"},
        )
        async with self._session.begin() as session:
            await session.execute(stmt)

    async def get_canonical(self, canonical_id: str) -> CanonicalEvent | None:
        """The latest canonical record stored for ``canonical_id``, or None."""
        async with self._session() as session:
            row = await session.get(CanonicalRecordRow, canonical_id)
        if row is None:
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
        if not 1 <= limit <= 500:
            raise ValueError("limit must be between 1 and 500")
        stmt = select(SyncRecordRow)
        for column, value in (
            (SyncRecordRow.tenant, filters.tenant),
            (SyncRecordRow.source, filters.source),
            (SyncRecordRow.object_type, filters.object_type),
            (SyncRecordRow.erp, filters.erp),
            (SyncRecordRow.connection, filters.connection),
            (SyncRecordRow.outcome, filters.outcome),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if filters.since is not None:
            stmt = stmt.where(SyncRecordRow.last_attempt_at >= filters.since)
        if filters.until is not None:
            stmt = stmt.where(SyncRecordRow.last_attempt_at < filters.until)
        if cursor is not None:
            created, ident = _decode_cursor(cursor)
            stmt = stmt.where(
                or_(
                    SyncRecordRow.created_at < created,
                    and_(SyncRecordRow.created_at == created, SyncRecordRow.id < ident),
                )
            )
        stmt = stmt.order_by(SyncRecordRow.created_at.desc(), SyncRecordRow.id.desc()).limit(limit + 1)
        async with self._session() as session:
            rows = list((await session.scalars(stmt)).all())
        more = len(rows) > limit
        rows = rows[:limit]
        return RecordPage(rows, _encode_cursor(rows[-1]) if more and rows else None)

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

    async def count(self, table: str) -> int:
        """Rows in ``table`` (``sync_records``, ``sync_attempts`` or ``canonical_records``): tests, diagnostics."""
        model: Mapping[str, Any] = {
            "sync_records": SyncRecordRow,
            "sync_attempts": SyncAttemptRow,
            "canonical_records": CanonicalRecordRow,
        }
        async with self._session() as session:
            return int(await session.scalar(select(func.count()).select_from(model[table])) or 0)
