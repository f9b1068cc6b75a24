"""Vendor rate limits for the local ERP sandboxes: sliding windows and a concurrency cap per tenant.

The sandboxes answer like the vendor when a client goes over a published limit
(``shared/reference/erp_apis.md``): Xero 60 calls per minute, 5 in flight and 5,000 per day per
organisation; QuickBooks Online 500 requests per minute and 10 in flight per company, and 40
batch requests per minute (Intuit, "Building smarter with Intuit: batch without a scratch",
2023). :class:`QuotaGate` keeps those counts; each sandbox turns a :class:`Refusal` into its
vendor's 429 answer.

Time scale: a benchmark cannot wait a real day for a daily quota. ``time_scale`` shrinks every
window by that factor (``time_scale=60``: a quota-minute lasts one real second, a quota-day 24
real minutes); ``Retry-After`` values are then real seconds (with a fraction), which is what a
client waits.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

__all__ = ["QuotaGate", "Refusal", "Window"]


@dataclass(frozen=True, slots=True)
class Window:
    """At most ``limit`` calls in any ``seconds`` (quota time) per tenant; ``problem`` names it in a 429.

    ``only`` restricts the window to calls carrying one of those tags (e.g. ``{"batch"}`` for
    Intuit's 40 batch requests per minute); empty = every call.
    """

    problem: str
    limit: int
    seconds: float
    only: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Refusal:
    """A call over a limit: which one (``problem``) and how long to wait, in real seconds."""

    problem: str
    retry_after: float

    def header(self) -> str:
        """``Retry-After`` as sent: whole seconds when unscaled, else seconds with three decimals."""
        if self.retry_after >= 1 and float(self.retry_after).is_integer():
            return str(int(self.retry_after))
        return f"{math.ceil(self.retry_after * 1000) / 1000:.3f}"


@dataclass
class QuotaGate:
    """Sliding-window limits and a concurrency cap, per tenant, in (scaled) quota time.

    Args:
        windows: the vendor's windows.
        concurrent: calls in flight at once per tenant (None = no cap).
        time_scale: quota seconds per real second (1 = real time).

    :meth:`admit` either refuses a call (nothing is counted) or counts it and marks it in
    flight until :meth:`release`. ``refusals`` counts the 429s answered, per problem; ``admitted``
    the calls let through, per tag (``""`` for every call).
    """

    windows: Sequence[Window]
    concurrent: int | None = None
    time_scale: float = 1.0
    refusals: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    admitted: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _calls: dict[tuple[str, str], deque[float]] = field(default_factory=lambda: defaultdict(deque))
    _in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")

    def _span(self, window: Window) -> float:
        return window.seconds / self.time_scale

    def _applies(self, window: Window, tags: Collection[str]) -> bool:
        return not window.only or bool(window.only & set(tags))

    def admit(self, tenant: str, tags: Collection[str] = ()) -> Refusal | None:
        """Count one call of ``tenant`` (tagged ``tags``), or the :class:`Refusal` if a limit is reached."""
        now = time.monotonic()
        applicable = [w for w in self.windows if self._applies(w, tags)]
        for window in applicable:
            calls = self._calls[(tenant, window.problem)]
            while calls and calls[0] <= now - self._span(window):
                calls.popleft()
            if len(calls) >= window.limit:
                self.refusals[window.problem] += 1
                return Refusal(window.problem, max(0.001, calls[0] + self._span(window) - now))
        if self.concurrent is not None and self._in_flight[tenant] >= self.concurrent:
            self.refusals["concurrent"] += 1
            return Refusal("concurrent", 1.0 / self.time_scale)
        for window in applicable:
            self._calls[(tenant, window.problem)].append(now)
        self._in_flight[tenant] += 1
        self.admitted[""] += 1
        for tag in tags:
            self.admitted[tag] += 1
        return None

    def release(self, tenant: str) -> None:
        """The admitted call of ``tenant`` finished."""
        self._in_flight[tenant] = max(0, self._in_flight[tenant] - 1)

    def remaining(self, tenant: str, problem: str) -> int:
        """Calls ``tenant`` has left in window ``problem`` now."""
        for window in self.windows:
            if window.problem == problem:
                now = time.monotonic()
                calls = self._calls[(tenant, problem)]
                return max(0, window.limit - sum(1 for t in calls if t > now - self._span(window)))
        raise KeyError(problem)
