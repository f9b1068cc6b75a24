"""Batch writes: the records of one connection waiting within a linger share one ERP request.

The connector runtime books every record on its own (binder, retries, parking, results: one per
record); only the ERP write itself goes through a :class:`Batcher`. When the connector says a
record may share a request (:meth:`~ledgerflow.connectors.base.Connector.batch_kind`, e.g. a new
Xero bill), the record waits up to ``batch_linger_ms`` (connection option, default 200 ms) for
others of the same kind; the batch is written as soon as it holds ``max_batch`` records (the
ERP's largest batch, lowered by the connection option) or the linger is over, through
:meth:`~ledgerflow.connectors.base.Connector.book_many`. Each record then gets *its own* outcome:
its :class:`~ledgerflow.connectors.base.Booked`, or its error raised to its own caller, so a
failing item is that record's ``failed`` / parked / dead-lettered result and its neighbours
succeed; a retriable failure is retried by that record's retry loop, which submits it again (it
joins a later batch).

A partial batch whose linger is over is held back while the connection has batch requests in
flight (Nagle's rule): it would only queue behind them for the ERP's rate and concurrency, so it
keeps filling, and goes when they have all finished, or as soon as it is full. Under a backlog
every request is then full (a partial one costs a whole call of the quota); at low traffic a
record waits at most the linger.

One batcher per connection (per :class:`~ledgerflow.connectors.runtime.ConnectorRuntime`), so a
batch never mixes connections; records of different kinds (Xero invoices and contacts) never
share a request either. Records a connector does not batch, and every record when the batch
size is 1, go straight to :meth:`~ledgerflow.connectors.base.Connector.book`.

Batches fill only when enough records are in flight at once: the runtime books up to
``concurrency`` records of different keys concurrently, so it raises that bound to at least
``max_batch`` times the ERP's concurrency (:meth:`Batcher.concurrency_for`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cachetools import TTLCache

from ledgerflow.connectors.base import (
    BatchItem,
    Booked,
    Connector,
    ConnectorError,
    HandleContext,
    InvalidResponse,
    RetriableError,
)
from ledgerflow.contracts import CanonicalRecord
from ledgerflow.contracts.errors import ErrorCode

__all__ = ["DEFAULT_LINGER_MS", "Batcher"]

DEFAULT_LINGER_MS = 200.0
"""How long a record waits for others to share its batch write, by default (milliseconds)."""

log = logging.getLogger(__name__)

_Waiting = tuple[BatchItem, "asyncio.Future[Booked | ConnectorError]"]

AMBIGUOUS_ATTEMPTS = 3
"""Times one batch request is sent, identically, while its whole answer is ambiguous (see :func:`ambiguous`)."""

AMBIGUOUS_BACKOFF = 0.5
"""Seconds before the first identical resend of an ambiguous batch; doubled for each next one."""


_NO_ANSWER = frozenset({ErrorCode.HTTP_TIMEOUT, ErrorCode.HTTP_TRANSPORT})
"""Codes of a request that got no answer and may have reached the ERP."""


AMBIGUOUS_MAX_WAIT = 30.0
"""Seconds at most an ambiguous batch waits before its identical resend (a longer Retry-After: not resent)."""


def ambiguous(outcomes: list[Booked | ConnectorError]) -> bool:
    """True when every item of a batch failed in a way that leaves unknown whether the ERP booked it.

    That is: the answer was 2xx but unreadable (:class:`InvalidResponse`: truncated, HTML, no ids),
    or the request timed out, broke in transport or got a 5xx. A 429, a 4xx or a request the
    connection's budget held back is not ambiguous: nothing was booked.
    """

    def unknown(outcome: Booked | ConnectorError) -> bool:
        if isinstance(outcome, InvalidResponse):
            return True
        if not isinstance(outcome, RetriableError):
            return False
        if outcome.http_status is not None:
            return outcome.http_status >= 500
        # No answer: a timeout or a broken connection may have reached the ERP; a request the
        # connection's budget held back (limits.Throttled, code http.429) never left.
        return outcome.code in _NO_ANSWER

    return bool(outcomes) and all(unknown(outcome) for outcome in outcomes)


class Batcher:
    """Forms the batch writes of one connection (see the module docstring).

    Args:
        connector: the connection's connector.
        linger: seconds a record waits for others (default: option ``batch_linger_ms`` / 1000).
        max_size: records per request at most (default: :meth:`Connector.batch_size`).
    """

    def __init__(self, connector: Connector, *, linger: float | None = None, max_size: int | None = None) -> None:
        options = connector.config.options
        self.connector = connector
        self.linger = linger if linger is not None else float(options.get("batch_linger_ms", DEFAULT_LINGER_MS)) / 1000
        self.max_size = max(1, max_size if max_size is not None else connector.batch_size())
        self._waiting: dict[str, list[_Waiting]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self._due: set[str] = set()
        self.max_in_flight = self._erp_concurrency()
        self.requests = 0
        """Batch requests sent so far (each a :meth:`Connector.book_many` call)."""
        self._by_key: TTLCache[str, asyncio.Future[Booked | ConnectorError]] = TTLCache(maxsize=100_000, ttl=3600)
        """Idempotency key → the outcome of its batch write (in flight or booked), for an hour."""

    def _erp_concurrency(self) -> int:
        """Requests the connection sends at once: option ``max_concurrency``, else the connector's default."""
        configured: Any = self.connector.config.options.get("max_concurrency")
        if configured is None:
            configured = getattr(self.connector, "MAX_CONCURRENCY", 1)
        return max(1, int(configured))

    def concurrency_for(self, concurrency: int) -> int:
        """The records to book at once so batches can fill: at least ``max_size`` × the ERP's concurrency.

        ``concurrency`` itself when the connection does not batch.
        """
        if self.max_size <= 1:
            return concurrency
        return max(concurrency, self.max_size * self.max_in_flight)

    def fetch_size(self, max_records: int, rounds: int = 4) -> int:
        """Records to fetch per consumer batch: ``rounds`` rounds of full batches at the ERP's concurrency.

        A consumer batch ends with its last requests in flight and the next one starts with no
        batch formed yet: the ERP's pace is lost for that moment, so fewer, larger consumer
        batches lose less (Xero: 4 × 50 × 5 = 1,000 records, QuickBooks 4 × 30 × 10 = 1,200).
        ``max_records`` when the connection does not batch.
        """
        if self.max_size <= 1:
            return max_records
        return max(max_records, rounds * self.concurrency_for(1))

    async def book(self, record: CanonicalRecord, ctx: HandleContext) -> Booked:
        """Book ``record``: alone, or in a batch with the records of its kind waiting with it.

        Raises:
            ConnectorError: this record's own failure (its neighbours' outcomes are theirs).
        """
        kind = self.connector.batch_kind(record, ctx) if self.max_size > 1 else None
        if kind is None:
            return await self.connector.book(record, ctx)
        # The same event more than once (a transformer redelivery, the same record twice in one
        # consumer batch before the binder is written): a single write would be replayed by the
        # ERP under its idempotency key, but a batch's key is its whole composition, so the copy
        # would be booked again in another batch. It gets the first copy's booking instead.
        earlier = self._by_key.get(ctx.idempotency_key)
        if earlier is not None:
            outcome = await asyncio.shield(earlier)
            if isinstance(outcome, Booked):
                return outcome
            # The first copy failed: this one is sent (a retry of the same record).
        future: asyncio.Future[Booked | ConnectorError] = asyncio.get_running_loop().create_future()
        self._by_key[ctx.idempotency_key] = future
        waiting = self._waiting.setdefault(kind, [])
        waiting.append((BatchItem(record, ctx), future))
        if len(waiting) >= self.max_size:
            self._flush(kind)
        elif kind not in self._timers and kind not in self._due:
            self._timers[kind] = asyncio.get_running_loop().call_later(self.linger, self._linger_over, kind)
        outcome = await future
        if isinstance(outcome, ConnectorError):
            raise outcome
        return outcome

    def _linger_over(self, kind: str) -> None:
        """The first record of a partial batch waited the linger: send it, unless requests are in flight."""
        self._timers.pop(kind, None)
        if self._sending:
            self._due.add(kind)  # sent when the requests in flight have finished (or when full)
            return
        self._flush(kind)

    def _flush(self, kind: str) -> None:
        """Send what waits under ``kind`` now, in requests of at most ``max_size``."""
        self._due.discard(kind)
        timer = self._timers.pop(kind, None)
        if timer is not None:
            timer.cancel()
        waiting = self._waiting.pop(kind, [])
        for start in range(0, len(waiting), self.max_size):
            task = asyncio.create_task(self._send(kind, waiting[start : start + self.max_size]))
            self._sending.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        """A batch request finished: when none is left in flight, send the partial batches held back."""
        self._sending.discard(task)
        if not self._sending:
            for kind in list(self._due):
                self._flush(kind)

    async def _send(self, kind: str, batch: list[_Waiting]) -> None:
        """Send one batch request and hand each record its outcome.

        A batch whose whole answer is :func:`ambiguous` (the ERP may have booked it and the answer
        was lost or garbled) is sent again *as the same request* — same records, same order, so the
        same batch idempotency key (Xero ``Idempotency-Key``, QuickBooks ``requestid``), which the
        ERP answers by replaying the first booking instead of booking again — up to
        :data:`AMBIGUOUS_ATTEMPTS` times, honouring ``Retry-After``. Handing the records to their
        own retry loops at once would re-form them into other batches under other keys, and a
        booking the ERP did make would be made twice.
        """
        items = [item for item, _ in batch]
        delay = AMBIGUOUS_BACKOFF
        for attempt in range(1, AMBIGUOUS_ATTEMPTS + 1):
            self.requests += 1
            try:
                outcomes = await self.connector.book_many(items)
            except Exception as exc:  # not an ERP answer (a bug): every record of the batch fails with it
                log.exception("%s: batch write of %d %s failed", self.connector.name, len(batch), kind)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            if not ambiguous(outcomes):
                break
            if attempt == AMBIGUOUS_ATTEMPTS:
                for outcome in outcomes:
                    if isinstance(outcome, InvalidResponse):
                        outcome.sends = attempt  # the record's invalid-answer attempts are spent on them
                break
            first = outcomes[0]
            # Retry-After honoured up to a bound: a batch waiting longer goes to its records' retry loops.
            wait = max(delay, first.retry_after or 0.0) if isinstance(first, RetriableError) else delay
            if wait > AMBIGUOUS_MAX_WAIT:
                break
            log.warning(
                "%s: batch write of %d %s answered ambiguously (%s); sending the same request again in %.1f s",
                self.connector.name,
                len(batch),
                kind,
                first,
                wait,
            )
            await asyncio.sleep(wait)
            delay *= 2
        log.debug("%s: batch write of %d %s", self.connector.name, len(batch), kind)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if not future.done():  # its caller may have been cancelled meanwhile
                future.set_result(outcome)

    async def aclose(self) -> None:
        """Send what still waits and wait for every batch in flight."""
        for kind in list(self._waiting):
            self._flush(kind)
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
