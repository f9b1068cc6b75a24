"""Durable acceptance: the ingress outbox, its settlement by final results, and the sweeper.

The embedded broker (Tansu) keeps everything in memory: when it dies, every message it held is
gone, including webhooks the ingress already answered 202 for. So in the embedded mode the ingress
writes each accepted webhook to the ``outbox`` table of the state store *before* it publishes and
answers (:class:`OutboxPublisher`: one local insert on the hot path).

An outbox row is *settled* once every ERP connection routed for its tenant published a final
result for it (``succeeded``, ``duplicate``, ``skipped``, or ``failed`` without retry), or a stage
dead-lettered it (:class:`SettlementTracker` reads ``ledgerflow.results.v1`` and the dead-letter
topics; results carry the raw event id in the ``ce_rawevent`` header, set by the transformer).

The :class:`Sweeper` re-publishes the raw event of every row still unsettled ``age`` seconds after
it was last sent, at most ``max_sends`` times, and at once everything unsettled when the broker
was restarted (:meth:`Sweeper.relay_unsettled`). A re-published raw event keeps its event id: the
transformer re-makes the same canonical records with the same deterministic ids, and each
connection's binder answers ``duplicate`` for what it booked already, so a record is booked once.
With real Kafka (replicated, durable) the outbox is off; the sweeper still runs where enabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError
from sqlalchemy import JSON, DateTime, Integer, LargeBinary, String, Text, func, select, update
from sqlalchemy.orm import Mapped, mapped_column

from ledgerflow.contracts import Outcome, SyncResult
from ledgerflow.contracts import headers as wire
from ledgerflow.core import metrics
from ledgerflow.core.state import StateBase, StateStore

__all__ = [
    "Outbox",
    "OutboxPublisher",
    "OutboxRow",
    "SettlementTracker",
    "Sweeper",
]

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, bytes, dict[str, str]], Awaitable[Any]]
"""``publish(topic, key, value, headers)`` returning once the broker acknowledged."""


_GROUP_MAX = 500
"""Outbox rows written in one transaction at most."""


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class OutboxRow(StateBase):
    """One accepted webhook: its raw Kafka message and whether it reached a final result."""

    __tablename__ = "outbox"

    tenant: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    topic: Mapped[str] = mapped_column(String(250))
    key: Mapped[bytes] = mapped_column(LargeBinary)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, str]] = mapped_column(JSON)
    accepted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    last_sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    sends: Mapped[int] = mapped_column(Integer, default=1)
    settled_connections: Mapped[str] = mapped_column(Text, default="")
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, index=True)


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    """Rows accepted, settled, and still waiting for a final result."""

    accepted: int
    settled: int

    @property
    def pending(self) -> int:
        """Accepted rows without a final result yet."""
        return self.accepted - self.settled


class Outbox:
    """The ``outbox`` table of the state store.

    Args:
        state: the state store (its ``create_all`` creates the table).
    """

    def __init__(self, state: StateStore) -> None:
        self.state = state
        self._session = state._session
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def put(
        self, tenant: str, event_id: str, topic: str, key: bytes, value: bytes, headers: dict[str, str]
    ) -> None:
        """Record one accepted webhook; returns once its row is committed.

        Rows of concurrent requests are written together (group commit: one transaction and one
        multi-row insert for whatever arrived while the previous one was being written), so the
        cost of a commit is shared instead of paid per webhook. A redelivery of the same event id
        changes nothing.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the state store refused the batch this row was in.
        """
        now = _now()
        row = {
            "tenant": tenant,
            "event_id": event_id,
            "topic": topic,
            "key": key,
            "value": value,
            "headers": headers,
            "accepted_at": now,
            "last_sent_at": now,
            "sends": 1,
            "settled_connections": "",
        }
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        await done

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:_GROUP_MAX], self._pending[_GROUP_MAX:]
            unique = {(r["tenant"], r["event_id"]): r for r, _ in batch}
            stmt = self.state._insert(OutboxRow.__table__).on_conflict_do_nothing(index_elements=["tenant", "event_id"])
            try:
                async with self._session.begin() as session:
                    await session.execute(stmt, list(unique.values()))
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def settle(self, tenant: str, event_id: str, connection: str | None, needed: frozenset[str]) -> bool:
        """Note a final outcome of ``event_id`` on ``connection`` (None: a stage dead-lettered it).

        The row is settled when every connection of ``needed`` has one, or at once for a dead
        letter. Returns True when this call settled it.
        """
        async with self._session.begin() as session:
            row = await session.get(OutboxRow, (tenant, event_id))
            if row is None or row.settled_at is not None:
                return False
            done = {c for c in row.settled_connections.split(",") if c}
            if connection is not None:
                done.add(connection)
                row.settled_connections = ",".join(sorted(done))
            if connection is None or needed <= done:
                row.settled_at = _now()
                return True
            return False

    async def due(self, sent_before: datetime, max_sends: int, limit: int = 500) -> list[OutboxRow]:
        """Unsettled rows last sent before ``sent_before`` and sent fewer than ``max_sends`` times, oldest first."""
        async with self._session() as session:
            rows = await session.scalars(
                select(OutboxRow)
                .where(
                    OutboxRow.settled_at.is_(None),
                    OutboxRow.last_sent_at < sent_before,
                    OutboxRow.sends < max_sends,
                )
                .order_by(OutboxRow.accepted_at)
                .limit(limit)
            )
            return list(rows)

    async def mark_sent(self, rows: list[OutboxRow]) -> None:
        """Count one more send of each of ``rows``, now."""
        if not rows:
            return
        now = _now()
        async with self._session.begin() as session:
            for row in rows:
                await session.execute(
                    update(OutboxRow)
                    .where(OutboxRow.tenant == row.tenant, OutboxRow.event_id == row.event_id)
                    .values(last_sent_at=now, sends=OutboxRow.sends + 1)
                )

    async def counts(self) -> OutboxCounts:
        """How many rows were accepted and how many are settled."""
        async with self._session() as session:
            total = await session.scalar(select(func.count()).select_from(OutboxRow))
            settled = await session.scalar(
                select(func.count()).select_from(OutboxRow).where(OutboxRow.settled_at.is_not(None))
            )
        return OutboxCounts(int(total or 0), int(settled or 0))


class _Publisher(Protocol):
    async def publish(self, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None: ...


class OutboxPublisher:
    """The ingress's publisher in the embedded mode: the outbox row and the broker, both before the answer.

    The row is committed before the webhook is answered, so a webhook answered 2xx is in the outbox
    even if the broker dies the next moment; when the broker refuses (503 to the sender), the row
    stays too and the sweeper sends it (the sender's retry carries the same event id: one row).

    Args:
        outbox: the outbox table.
        inner: the broker publisher (:class:`~ledgerflow.ingress.publisher.KafkaPublisher`).
    """

    def __init__(self, outbox: Outbox, inner: _Publisher) -> None:
        self.outbox = outbox
        self.inner = inner

    async def publish(self, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        """Write the outbox row, then publish and wait for the broker's ack.

        Raises:
            Whatever the inner publisher raises (the ingress maps it to 503 / 413).
            sqlalchemy.exc.SQLAlchemyError: the state store refused the row (nothing was published).
        """
        # Both must be done before the answer; neither waits for the other (nothing is answered
        # before both are, so a 2xx always has its outbox row).
        await asyncio.gather(
            self.outbox.put(headers[wire.CE_TENANT], headers[wire.CE_ID], topic, key, value, headers),
            self.inner.publish(topic, key, value, headers),
        )


_FINAL = frozenset({Outcome.SUCCEEDED, Outcome.DUPLICATE, Outcome.SKIPPED})


def _is_final(result: SyncResult) -> bool:
    if result.outcome in _FINAL:
        return True
    return result.outcome is Outcome.FAILED and not (result.error is not None and result.error.retriable)


class SettlementTracker:
    """Settles outbox rows from ``ledgerflow.results.v1`` and the dead-letter topics.

    Args:
        outbox: the outbox table.
        bootstrap_servers: the broker.
        results_topic, dlq_topics: what to read.
        connections_of: tenant → the ERP connections routed for it.
        group_id: consumer group (committed offsets; the table is idempotent anyway).
        client_options: extra aiokafka client options (TLS/SASL).
    """

    def __init__(
        self,
        outbox: Outbox,
        bootstrap_servers: str,
        *,
        results_topic: str,
        dlq_topics: list[str],
        connections_of: Mapping[str, frozenset[str]],
        group_id: str,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.outbox = outbox
        self.bootstrap_servers = bootstrap_servers
        self.results_topic = results_topic
        self.topics = [results_topic, *dlq_topics]
        self.connections_of = connections_of
        self.group_id = group_id
        self.client_options = dict(client_options or {})
        self.settled = 0

    async def handle(self, topic: str, value: bytes | None, headers: Mapping[str, str]) -> None:
        """Settle what one message says is final (messages without ``ce_rawevent`` are ignored)."""
        tenant = headers.get(wire.CE_TENANT)
        raw = headers.get(wire.CE_RAW_EVENT)
        if topic != self.results_topic:
            # A dead letter of the raw event itself (transform) carries its id as ce_id.
            raw = raw or headers.get(wire.CE_ID)
            if tenant and raw and await self.outbox.settle(tenant, raw, None, frozenset()):
                self.settled += 1
            return
        if not tenant or not raw:
            return
        try:
            result = SyncResult.model_validate_json(value or b"")
        except ValidationError:
            return
        if _is_final(result):
            needed = self.connections_of.get(tenant, frozenset())
            if await self.outbox.settle(tenant, raw, result.connection, needed):
                self.settled += 1

    async def run(self) -> None:
        """Consume until cancelled; a broker that vanishes is waited for (the consumer reconnects)."""
        while True:
            consumer = AIOKafkaConsumer(
                *self.topics,
                bootstrap_servers=self.bootstrap_servers,
                group_id=self.group_id,
                auto_offset_reset="earliest",
                enable_auto_commit=True,
                **self.client_options,
            )
            try:
                await consumer.start()
                while True:
                    batch = await consumer.getmany(timeout_ms=500, max_records=500)
                    for records in batch.values():
                        for r in records:
                            headers = {k: v.decode("utf-8", "replace") for k, v in r.headers}
                            await self.handle(r.topic, r.value, headers)
            except asyncio.CancelledError:
                raise
            except Exception:  # a broker restart, a database hiccup: start over
                log.warning("outbox settlement consumer failed; starting again", exc_info=True)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()


class Sweeper:
    """Re-drives accepted webhooks that have no final result.

    Args:
        outbox: the outbox table.
        publish: ``publish(topic, key, value, headers)`` to the broker.
        age_seconds: how long after its last send an unsettled event is sent again.
        max_sends: sends per event at most (the first included); then it is left for an operator
            (logged, ``ledgerflow_outbox_redrives_total{outcome="given_up"}``).
        interval_seconds: how often the table is looked at.
    """

    def __init__(
        self,
        outbox: Outbox,
        publish: Publish,
        *,
        age_seconds: float = 300.0,
        max_sends: int = 4,
        interval_seconds: float = 5.0,
    ) -> None:
        self.outbox = outbox
        self.publish = publish
        self.age = timedelta(seconds=age_seconds)
        self.max_sends = max_sends
        self.interval = interval_seconds
        self.redriven = 0

    async def _send(self, rows: list[OutboxRow]) -> int:
        sent: list[OutboxRow] = []
        for row in rows:
            try:
                await self.publish(row.topic, row.key, row.value, dict(row.headers))
            except Exception:  # the broker is down again: the next round tries
                log.warning("outbox: re-drive of %s/%s failed", row.tenant, row.event_id, exc_info=True)
                break
            sent.append(row)
            if row.sends + 1 >= self.max_sends:
                log.error(
                    "outbox: %s/%s has no final result after %d sends; leaving it for an operator",
                    row.tenant,
                    row.event_id,
                    row.sends + 1,
                )
                metrics.OUTBOX_REDRIVES.labels("given_up").inc()
        await self.outbox.mark_sent(sent)
        self.redriven += len(sent)
        metrics.OUTBOX_REDRIVES.labels("redriven").inc(len(sent))
        return len(sent)

    async def sweep_once(self) -> int:
        """Re-send every event due now; return how many were sent."""
        rows = await self.outbox.due(_now() - self.age, self.max_sends)
        return await self._send(rows) if rows else 0

    async def relay_after_restart(self) -> int:
        """Re-send at once every unsettled event: the broker was restarted and lost what it held.

        Returns how many were sent. Not subject to the age rule (the restart is the reason), and
        not limited by ``max_sends`` (a broker restart is not the event's fault).
        """
        started = _now()
        total = 0
        while True:
            rows = await self.outbox.due(started, max_sends=2**31 - 1, limit=500)
            if not rows:
                return total
            sent = await self._send(rows)
            total += sent
            if sent < len(rows):  # the broker is gone again; the next restart relays the rest
                return total

    async def run(self) -> None:
        """Sweep every ``interval_seconds`` until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("outbox sweep failed", exc_info=True)
