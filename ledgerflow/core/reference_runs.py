"""Reference sync runs and on-demand requests: the state store's ``reference_sync_requests`` table.

One row per reference sync pass of one ERP connection, whatever started it:

* ``trigger = "schedule"``: the sync-reference service's own schedule (inserted ``running``);
* ``trigger = "api"`` / ``"cli"``: an operator asked for a pass now
  (``POST /v1/connections/{name}/reference-sync``, ``ledgerflow sync-reference --connection C --now``):
  inserted ``pending``; the running service polls the table every
  :data:`REQUEST_POLL_SECONDS`, claims a pending row (``pending → running``, one conditional
  ``UPDATE``, so two services never run the same request), runs the pass and finishes it.

A finished row has ``status`` ``succeeded`` (``counts``: records published per kind, ``reads``:
ERP reads) or ``failed`` (``error``: what the ERP or the broker said; the sources read before the
failure keep their progress, see :mod:`ledgerflow.connectors.reference`). Rows older than the
newest :data:`KEEP_RUNS` of a connection are deleted when a new one is written.

Why a table rather than a Kafka command topic: the status (started, finished, counts, error) has
to be kept and queried anyway, the audit API already holds the state store and no producer for
new topics, a request survives a restart of the service (a ``running`` row left by a killed pod
is failed by the next start: :meth:`ReferenceRuns.abandon_running`), and a 2-second indexed poll
of one small table costs nothing beside the pass itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import JSON, DateTime, Integer, String, Text, delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from ledgerflow.core.state import StateBase

__all__ = [
    "KEEP_RUNS",
    "REQUEST_POLL_SECONDS",
    "ReferenceRun",
    "ReferenceRunRow",
    "ReferenceRuns",
    "RunStatus",
    "Trigger",
    "run_json",
]

REQUEST_POLL_SECONDS = 2.0
"""How often the sync-reference service looks for pending on-demand requests."""

KEEP_RUNS = 50
"""Runs kept per connection (older ones are deleted when a new one is written)."""

RunStatus = Literal["pending", "running", "succeeded", "failed"]
Trigger = Literal["schedule", "api", "cli"]

_DDL_LOCK_KEY = 0x1ED6E2F11
"""Advisory lock id held while creating the table on PostgreSQL (beside the state store's own)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class ReferenceRunRow(StateBase):
    """One reference sync pass (or a request for one) of one connection."""

    __tablename__ = "reference_sync_requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    connection: Mapped[str] = mapped_column(String(100), index=True)
    trigger: Mapped[str] = mapped_column(String(20))
    requested_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(20), index=True)
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    counts: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)
    reads: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


@dataclass(frozen=True, slots=True)
class ReferenceRun:
    """A row of ``reference_sync_requests`` as read (times are aware UTC)."""

    id: str
    connection: str
    trigger: str
    status: str
    requested_at: datetime
    requested_by: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    counts: dict[str, int] = field(default_factory=dict)
    reads: int | None = None
    error: str | None = None

    @classmethod
    def of(cls, row: ReferenceRunRow) -> ReferenceRun:
        """The run stored as ``row``."""
        return cls(
            id=row.id,
            connection=row.connection,
            trigger=row.trigger,
            status=row.status,
            requested_at=_aware(row.requested_at) or _now(),
            requested_by=row.requested_by,
            started_at=_aware(row.started_at),
            finished_at=_aware(row.finished_at),
            counts=dict(row.counts or {}),
            reads=row.reads,
            error=row.error,
        )

    @property
    def finished(self) -> bool:
        """The pass ended (succeeded or failed)."""
        return self.status in ("succeeded", "failed")


class ReferenceRuns:
    """Reads and writes ``reference_sync_requests`` through ``engine`` (the state store's database).

    Args:
        engine: an async engine on the state database (``StateStore.engine`` or ``AuditStore.engine``:
            the audit tables live beside the state tables).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._session = async_sessionmaker(engine, expire_on_commit=False)
        self._created = False

    async def create_table(self) -> None:
        """Create the table if missing (idempotent; the state store's ``create_all`` creates it too)."""
        if self._created:
            return
        async with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK_KEY})
            await conn.run_sync(lambda sync: ReferenceRunRow.__table__.create(sync, checkfirst=True))  # type: ignore[attr-defined]
        self._created = True

    async def _insert(self, connection: str, trigger: Trigger, status: RunStatus, requested_by: str | None) -> str:
        await self.create_table()
        run_id = uuid.uuid4().hex
        now = _now()
        async with self._session.begin() as session:
            session.add(
                ReferenceRunRow(
                    id=run_id,
                    connection=connection,
                    trigger=trigger,
                    requested_by=requested_by,
                    status=status,
                    requested_at=now,
                    started_at=now if status == "running" else None,
                )
            )
        await self._prune(connection)
        return run_id

    async def request(self, connection: str, *, trigger: Trigger = "api", requested_by: str | None = None) -> str:
        """Ask the running sync-reference service for a pass of ``connection`` now; returns the request id.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the state store refused the write.
        """
        return await self._insert(connection, trigger, "pending", requested_by)

    async def start(self, connection: str, *, trigger: Trigger = "schedule") -> str:
        """Record a pass of ``connection`` starting now (not a request); returns its id."""
        return await self._insert(connection, trigger, "running", None)

    async def claim(self, connections: Collection[str]) -> list[ReferenceRun]:
        """Claim the pending requests of ``connections`` (oldest first): each becomes ``running``.

        A request another process claimed first is not returned (conditional update).
        """
        if not connections:
            return []
        await self.create_table()
        async with self._session() as session:
            pending = (
                await session.scalars(
                    select(ReferenceRunRow.id)
                    .where(ReferenceRunRow.status == "pending", ReferenceRunRow.connection.in_(list(connections)))
                    .order_by(ReferenceRunRow.requested_at)
                )
            ).all()
        claimed: list[ReferenceRun] = []
        for run_id in pending:
            async with self._session.begin() as session:
                result = await session.execute(
                    update(ReferenceRunRow)
                    .where(ReferenceRunRow.id == run_id, ReferenceRunRow.status == "pending")
                    .values(status="running", started_at=_now())
                )
                if result.rowcount != 1:  # type: ignore[attr-defined]
                    continue
                row = await session.get(ReferenceRunRow, run_id)
                if row is not None:
                    claimed.append(ReferenceRun.of(row))
        return claimed

    async def finish(
        self,
        run_id: str,
        *,
        counts: Mapping[str, int] | None = None,
        reads: int | None = None,
        error: str | None = None,
    ) -> None:
        """Mark ``run_id`` finished: ``failed`` with ``error`` when given, else ``succeeded`` with its counts."""
        async with self._session.begin() as session:
            await session.execute(
                update(ReferenceRunRow)
                .where(ReferenceRunRow.id == run_id)
                .values(
                    status="failed" if error is not None else "succeeded",
                    finished_at=_now(),
                    counts=dict(counts or {}),
                    reads=reads,
                    error=error,
                )
            )

    async def abandon_running(self, connections: Collection[str]) -> int:
        """Fail the ``running`` rows of ``connections`` left by a process that stopped mid-pass; returns how many.

        Called by a starting service (one replica by design, see docs/deploy.md): the next pass
        resumes from the cursors, so nothing read is lost.
        """
        if not connections:
            return 0
        await self.create_table()
        async with self._session.begin() as session:
            result = await session.execute(
                update(ReferenceRunRow)
                .where(ReferenceRunRow.status == "running", ReferenceRunRow.connection.in_(list(connections)))
                .values(status="failed", finished_at=_now(), error="the service stopped during the pass")
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def get(self, run_id: str) -> ReferenceRun | None:
        """The run ``run_id``, or None."""
        await self.create_table()
        async with self._session() as session:
            row = await session.get(ReferenceRunRow, run_id)
            return ReferenceRun.of(row) if row is not None else None

    async def recent(self, connection: str, limit: int = 20) -> list[ReferenceRun]:
        """The newest ``limit`` runs and requests of ``connection``, newest first."""
        await self.create_table()
        async with self._session() as session:
            rows = await session.scalars(
                select(ReferenceRunRow)
                .where(ReferenceRunRow.connection == connection)
                .order_by(ReferenceRunRow.requested_at.desc(), ReferenceRunRow.id.desc())
                .limit(limit)
            )
            return [ReferenceRun.of(row) for row in rows]

    async def _prune(self, connection: str) -> None:
        async with self._session.begin() as session:
            keep = (
                select(ReferenceRunRow.id)
                .where(ReferenceRunRow.connection == connection)
                .order_by(ReferenceRunRow.requested_at.desc(), ReferenceRunRow.id.desc())
                .limit(KEEP_RUNS)
            ).scalar_subquery()
            await session.execute(
                delete(ReferenceRunRow).where(
                    ReferenceRunRow.connection == connection,
                    ReferenceRunRow.status.in_(["succeeded", "failed"]),
                    ReferenceRunRow.id.not_in(keep),
                )
            )


def run_json(run: ReferenceRun) -> dict[str, Any]:
    """``run`` as JSON-ready values (ISO 8601 times), as the CLI prints it."""
    return {
        "id": run.id,
        "connection": run.connection,
        "trigger": run.trigger,
        "status": run.status,
        "requested_at": run.requested_at.isoformat(),
        "requested_by": run.requested_by,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "counts": run.counts,
        "reads": run.reads,
        "error": run.error,
    }
