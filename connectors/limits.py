"""Per-connection ERP budgets inside a shared connector fleet: rate, concurrency, daily quota.

Each connection served by a fleet (:mod:`ledgerflow.connectors.fleet`) gets one
:class:`ConnectionLimits`, built from the vendor's published limits of its ERP kind
(:data:`VENDOR_LIMITS`) and the connection's own options (``rate_limit_per_minute``,
``max_concurrency``, ``daily_limit``). It is the :class:`~ledgerflow.core.outbound.client.RequestGuard`
of every ERP request of that connection:

* **rate**: a GCRA token bucket (``per_minute`` refill, burst ``concurrency``). A request whose
  turn comes within ``max_wait`` seconds waits for it; a later turn is refused with
  :class:`Throttled` (nothing is sent), so the fleet parks the record instead of holding its batch;
* **what the ERP says**: ``X-MinLimit-Remaining: 0`` pauses the connection until its oldest call
  of the minute is a minute old; ``X-DayLimit-Remaining: 0`` spends the day; a 429 pauses it for
  ``Retry-After`` (a day for ``X-Rate-Limit-Problem: day``). Xero sends these headers
  (developer.xero.com/documentation/oauth2/limits); QuickBooks answers 429 only;
* **daily quota**: requests sent are counted per UTC day; at ``per_day`` (or when the ERP says
  the day is spent) the connection is blocked until the reset (``Retry-After`` when the ERP gave
  one, else the next UTC midnight), and :meth:`ConnectionLimits.wait` says how long.

The concurrency cap itself is the ERP client's semaphore (:class:`~ledgerflow.core.outbound.client.ErpClient`,
same ``max_concurrency``) and the fleet's per-connection batch concurrency. The counters live in
the worker process. With ``LEDGERFLOW_SHARED_BUDGETS=true`` a :class:`~ledgerflow.core.budgets.SharedBudget`
is the cap across processes: after its local turn every request takes one unit of the
connection's per-minute and per-day counters in the state store (shared by every fleet replica and
the sync-reference service); a refusal pauses the connection until that window resets and is
waited for (within ``max_wait``) or refused with :class:`Throttled` (reason ``shared_minute`` /
``shared_day``), exactly like the local budget. The concurrency cap stays per process.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from ledgerflow.connectors.base import RetriableError
from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.core import metrics
from ledgerflow.core.budgets import SharedBudget
from ledgerflow.core.outbound.client import parse_retry_after

__all__ = [
    "VENDOR_LIMITS",
    "ConnectionLimits",
    "Throttled",
    "VendorLimits",
    "vendor_limits",
]


@dataclass(frozen=True, slots=True)
class VendorLimits:
    """An ERP's published limits for one connection (organisation, company, account).

    ``per_minute`` requests per minute, ``concurrency`` requests in flight, ``per_day`` requests
    per day (None: no daily limit).
    """

    per_minute: float
    concurrency: int
    per_day: int | None = None


VENDOR_LIMITS: dict[str, VendorLimits] = {
    # developer.xero.com/documentation/oauth2/limits: per tenant 60/min, 5 concurrent, 5,000/day.
    "xero": VendorLimits(60, 5, 5000),
    # Intuit: 500 requests/min per realm, 10 concurrent per app and realm (shared/reference/erp_apis.md §1).
    "quickbooks": VendorLimits(500, 10),
    # The connectors' own defaults where the vendor publishes no per-connection number.
    "netsuite": VendorLimits(300, 5),
    "sap": VendorLimits(600, 5),
    "coupa": VendorLimits(25 * 60, 10),  # Coupa: 25 requests/s
    "http": VendorLimits(600, 10),
}
"""ERP kind → the limits a connection of that kind gets unless its options say otherwise."""

_DEFAULT = VendorLimits(600, 5)


def vendor_limits(erp: str, options: Mapping[str, Any]) -> VendorLimits:
    """The limits of a connection of kind ``erp``: :data:`VENDOR_LIMITS`, overridden by its options.

    Options read: ``rate_limit_per_minute``, ``max_concurrency``, ``daily_limit``.

    Raises:
        ValueError: an option is not a positive number.
    """
    base = VENDOR_LIMITS.get(erp, _DEFAULT)
    per_minute = float(options.get("rate_limit_per_minute") or base.per_minute)
    concurrency = int(options.get("max_concurrency") or base.concurrency)
    daily = options.get("daily_limit")
    per_day = int(daily) if daily is not None else base.per_day
    if per_minute <= 0 or concurrency < 1 or (per_day is not None and per_day < 1):
        raise ValueError("rate_limit_per_minute, max_concurrency and daily_limit must be positive")
    return VendorLimits(per_minute, concurrency, per_day)


class Throttled(RetriableError):  # noqa: N818 - reads as the outcome it produces
    """A request not sent: the connection's budget is spent until ``until`` (epoch seconds).

    ``reason``: ``local_rate`` (its bucket), ``local_day`` (its daily quota), ``minute`` / ``day`` /
    ``retry_after`` (what the ERP said). Retriable with ``retry_after`` = seconds until ``until``.
    """

    def __init__(self, connection: str, reason: str, until: float, now: float) -> None:
        stamp = datetime.fromtimestamp(until, UTC).isoformat(timespec="seconds")
        super().__init__(
            ErrorCode.HTTP_429,
            f"connection {connection}: its {reason} budget is spent until {stamp}",
            retry_after=max(0.0, until - now),
        )
        self.reason = reason
        self.until = until


DAY_REASONS = frozenset({"day", "local_day", "shared_day"})
"""Reasons of a spent day: the connection's records wait for the daily reset."""


def _next_midnight(now: float) -> float:
    day = datetime.fromtimestamp(now, UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


class ConnectionLimits:
    """One connection's rate, daily quota and ERP-announced pauses (see the module docstring).

    Args:
        connection: connection name (metrics label, messages).
        erp: ERP kind (metrics label).
        limits: its :class:`VendorLimits`.
        max_wait: seconds a request may wait for its turn before it is refused with :class:`Throttled`.
        clock: epoch seconds (tests pass their own).
        shared: the cross-process budget (None: this process's budget only).
    """

    def __init__(
        self,
        connection: str,
        erp: str,
        limits: VendorLimits,
        *,
        max_wait: float = 1.0,
        clock: Callable[[], float] = time.time,
        shared: SharedBudget | None = None,
    ) -> None:
        self.connection = connection
        self.shared = shared
        self.erp = erp
        self.limits = limits
        self.max_wait = max_wait
        self.clock = clock
        self.interval = 60.0 / limits.per_minute
        burst = max(1.0, min(float(limits.concurrency), limits.per_minute))
        self.tolerance = (burst - 1.0) * self.interval
        self._tat = 0.0  # GCRA theoretical arrival time of the next request
        self._paused_until = 0.0
        self._pause_reason = "retry_after"
        self._day_blocked_until = 0.0
        self._day_reason = "day"
        self._day_reset = 0.0
        self.day_used = 0
        self._sent: collections.deque[float] = collections.deque()
        self._queue_tail = 0.0  # the turn reserved by the last record deferred for rate
        self._labels = (erp, connection)

    @property
    def concurrency(self) -> int:
        """Requests (and records) of this connection in flight at once."""
        return self.limits.concurrency

    def _roll_day(self, now: float) -> None:
        if now >= self._day_reset:
            self._day_reset = _next_midnight(now)
            self.day_used = 0

    def blocked(self, now: float | None = None) -> tuple[float, str]:
        """Seconds until this connection may send its next request, and why (``""`` when it may now)."""
        now = self.clock() if now is None else now
        self._roll_day(now)
        waits = [(self._tat - self.tolerance - now, "local_rate")]
        if self._paused_until > now:
            waits.append((self._paused_until - now, self._pause_reason))
        if self._day_blocked_until > now:
            waits.append((self._day_blocked_until - now, self._day_reason))
        if self.limits.per_day is not None and self.day_used >= self.limits.per_day:
            waits.append((self._day_reset - now, "local_day"))
        wait, reason = max(waits)
        return (wait, reason) if wait > 0 else (0.0, "")

    def wait(self, now: float | None = None) -> float:
        """Seconds until this connection may send its next request (0: now)."""
        return self.blocked(now)[0]

    def queued(self, now: float | None = None) -> float:
        """Seconds until the records deferred for rate so far have had their turns (0: none waiting).

        A new record queues behind them (:meth:`slot`) instead of taking a token they wait for.
        """
        now = self.clock() if now is None else now
        return max(0.0, self._queue_tail - now)

    def slot(self, wait: float, now: float | None = None) -> float:
        """Reserve the turn (epoch seconds) of a record deferred now for rate.

        After ``wait`` and after every record deferred before it, one bucket interval apart, so each
        comes back when a token is there for it (deferred once, not once per second).
        """
        now = self.clock() if now is None else now
        at = max(now + wait, self._queue_tail + self.interval)
        self._queue_tail = at
        return at

    def day_spent(self, now: float | None = None) -> bool:
        """Whether the connection's daily budget is spent (its records wait for the reset)."""
        _, reason = self.blocked(now)
        return reason in DAY_REASONS

    async def before(self) -> None:
        """Reserve the next request's turn and wait for it (at most ``max_wait``).

        Raises:
            Throttled: the turn is further than ``max_wait`` away (nothing reserved, nothing sent).
        """
        now = self.clock()
        wait, reason = self.blocked(now)
        if wait > self.max_wait:
            metrics.CONNECTION_THROTTLED.labels(*self._labels, reason).inc()
            raise Throttled(self.connection, reason, now + wait, now)
        self._tat = max(self._tat, now) + self.interval
        self.day_used += 1
        send_at = now + wait
        self._sent.append(send_at)
        while self._sent and self._sent[0] <= now - 60:
            self._sent.popleft()
        if self.limits.per_day is not None:
            metrics.CONNECTION_QUOTA_REMAINING.labels(*self._labels, "day").set(self.limits.per_day - self.day_used)
        if wait > 0:
            await asyncio.sleep(wait)
        if self.shared is not None:
            await self._acquire_shared()

    async def _acquire_shared(self) -> None:
        """Take the request from the shared budget, waiting (at most ``max_wait`` each time) for its window.

        Raises:
            Throttled: the shared window resets further than ``max_wait`` away (the connection is
                paused until then, so its next records are deferred without asking the store).
        """
        assert self.shared is not None
        while True:
            now = self.clock()
            refusal = await self.shared.acquire(
                self.connection, per_minute=self.limits.per_minute, per_day=self.limits.per_day, now=now
            )
            if refusal is None:
                return
            if refusal.reason == "shared_day":
                self._spend_day(refusal.until, refusal.reason)
            else:
                self._pause(refusal.until, refusal.reason)
            wait = refusal.until - now
            if wait > self.max_wait:
                self.day_used -= 1  # not sent
                metrics.CONNECTION_THROTTLED.labels(*self._labels, refusal.reason).inc()
                raise Throttled(self.connection, refusal.reason, refusal.until, now)
            await asyncio.sleep(max(wait, 0.001))

    def after(self, response: httpx.Response) -> None:
        """Learn from one ERP answer: ``X-MinLimit-Remaining``, ``X-DayLimit-Remaining``, 429 + ``Retry-After``."""
        now = self.clock()
        headers = response.headers
        minute = _int(headers.get("X-MinLimit-Remaining"))
        if minute is not None:
            metrics.CONNECTION_QUOTA_REMAINING.labels(*self._labels, "minute").set(minute)
            if minute <= 0:
                oldest = self._sent[0] if self._sent else now
                self._pause(max(oldest + 60.0, now + self.interval), "minute")
        day = _int(headers.get("X-DayLimit-Remaining"))
        if day is not None:
            metrics.CONNECTION_QUOTA_REMAINING.labels(*self._labels, "day").set(day)
            if day <= 0:
                self._spend_day(_next_midnight(now), "day")
        if response.status_code == 429:
            retry_after = parse_retry_after(headers.get("Retry-After"))
            problem = (headers.get("X-Rate-Limit-Problem") or "").lower()
            metrics.CONNECTION_THROTTLED.labels(*self._labels, problem or "retry_after").inc()
            if problem == "day":
                self._spend_day(now + retry_after if retry_after is not None else _next_midnight(now), "day")
            else:
                # No Retry-After (QuickBooks): back off for a few turns of the bucket.
                pause = retry_after if retry_after is not None else max(2.0, 5 * self.interval)
                self._pause(now + pause, problem or "retry_after")

    def _pause(self, until: float, reason: str) -> None:
        if until > self._paused_until:
            self._paused_until = until
            self._pause_reason = reason

    def _spend_day(self, until: float, reason: str) -> None:
        if until > self._day_blocked_until:
            self._day_blocked_until = until
            self._day_reason = reason


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None
