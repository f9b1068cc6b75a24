"""Retrying a retriable ERP error: in place with backoff, then parked on the retry tiers.

A :class:`~ledgerflow.connectors.base.RetriableError` is retried in place (``stamina``) as the
connection's :class:`RetryPolicy` says, honouring ``Retry-After``; then the record is *parked* on
``<prefix>.retry.connector.<tier>`` with the headers of :func:`parked_headers` (addressed to this
connection only, not before a growing delay), so the partition is not blocked. After the last tier
it is dead-lettered on ``<prefix>.dlq.connector`` (reason ``retries-exhausted``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ledgerflow.connectors.base import RetriableError
from ledgerflow.contracts import headers
from ledgerflow.contracts.topics import RETRY_TIERS

__all__ = [
    "NOT_BEFORE_HEADER",
    "ORIGINAL_TOPIC_HEADER",
    "PARKED_AT_HEADER",
    "TARGET_HEADER",
    "TIER_HEADER",
    "Parked",
    "RetryPolicy",
    "parked_headers",
    "sleep_until",
]

TARGET_HEADER = headers.TARGET_CONNECTION
TIER_HEADER = headers.RETRY_TIER
NOT_BEFORE_HEADER = headers.RETRY_NOT_BEFORE
PARKED_AT_HEADER = headers.RETRY_PARKED_AT
ORIGINAL_TOPIC_HEADER = headers.RETRY_ORIGINAL_TOPIC

_PARKING = (TIER_HEADER, NOT_BEFORE_HEADER, PARKED_AT_HEADER, ORIGINAL_TOPIC_HEADER, TARGET_HEADER)


class RetryPolicy:
    """How often and how long a retriable ERP error is retried in place.

    Args:
        attempts: total attempts including the first.
        timeout: overall seconds budget for one record.
        wait_initial, wait_max: exponential backoff bounds in seconds (``Retry-After`` wins when sent,
            capped at ``wait_max_retry_after``).
        park_delays: seconds a record waits on retry topic tier 1, 2, … after the in-place retries
            failed; after the last tier it is dead-lettered. Each must stay below the consumer's
            ``max.poll.interval.ms`` (10 minutes for the retry consumer).
        invalid_response_attempts: attempts at most (within ``attempts``) when the ERP answers 2xx
            with a body that is not what it documents (``erp.invalid_response``); then the record is
            dead-lettered without parking.
    """

    def __init__(
        self,
        attempts: int = 5,
        timeout: float = 60.0,
        wait_initial: float = 0.2,
        wait_max: float = 5.0,
        wait_max_retry_after: float = 30.0,
        park_delays: tuple[float, ...] = (10.0, 60.0, 300.0),
        invalid_response_attempts: int = 3,
    ) -> None:
        if any(d < 0 or d > 540 for d in park_delays):
            raise ValueError("park delays must be between 0 and 540 seconds")
        if len(park_delays) > RETRY_TIERS:
            raise ValueError(f"at most {RETRY_TIERS} park delays (one per retry topic)")
        self.park_delays = park_delays
        self.invalid_response_attempts = max(1, invalid_response_attempts)
        self.attempts = attempts
        self.timeout = timeout
        self.wait_initial = wait_initial
        self.wait_max = wait_max
        self.wait_max_retry_after = wait_max_retry_after

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> RetryPolicy:
        """The policy a connection's routing options ask for (``options.retry``), defaults otherwise.

        Keys: ``attempts``, ``timeout``, ``wait_initial``, ``wait_max``, ``wait_max_retry_after``
        (seconds), ``park_delays`` (a list of seconds, one per retry tier) and
        ``invalid_response_attempts``.

        Raises:
            ValueError: an unknown key or a park delay outside 0–540 s.
        """
        raw = dict(options.get("retry") or {})
        known = {
            "attempts",
            "timeout",
            "wait_initial",
            "wait_max",
            "wait_max_retry_after",
            "park_delays",
            "invalid_response_attempts",
        }
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown retry option(s): {', '.join(sorted(unknown))}")
        if "park_delays" in raw:
            raw["park_delays"] = tuple(float(d) for d in raw["park_delays"])
        return cls(**raw)

    def hook(self, exc: Exception) -> bool | float:
        """Stamina backoff hook: retry RetriableError, waiting ``Retry-After`` when the ERP sent one."""
        if not isinstance(exc, RetriableError):
            return False
        if exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), self.wait_max_retry_after)
        return True


@dataclass(frozen=True, slots=True)
class Parked:
    """What the headers of a consumed record say about parking.

    ``tier`` is 0 for a record read from a canonical topic; for a parked one, ``not_before`` and
    ``parked_at`` are epoch seconds and ``original_topic`` is the canonical topic it came from.
    """

    tier: int
    not_before: float
    parked_at: float | None
    original_topic: str | None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Parked:
        """Read the ``ledgerflow_retry_*`` headers (absent or empty: not parked)."""
        tier = int(headers.get(TIER_HEADER, "0") or 0)
        if not tier:
            return cls(0, 0.0, None, None)
        return cls(
            tier,
            float(headers.get(NOT_BEFORE_HEADER, "0") or 0),
            float(headers.get(PARKED_AT_HEADER, "0") or 0),
            headers.get(ORIGINAL_TOPIC_HEADER),
        )


def parked_headers(
    headers: Mapping[str, str], *, connection: str, tier: int, delay: float, original_topic: str
) -> dict[str, str]:
    """The headers of a record parked on retry ``tier`` (1-based) for ``connection``, ``delay`` seconds from now.

    The record's own headers are kept, its earlier parking headers replaced; the moment it was
    first parked is kept across tiers (a newer booking after it supersedes the parked version).
    """
    parked = {k: v for k, v in headers.items() if k not in _PARKING}
    now = time.time()
    parked.update(
        {
            TARGET_HEADER: connection,
            TIER_HEADER: str(tier),
            PARKED_AT_HEADER: headers.get(PARKED_AT_HEADER) or f"{now:.3f}",
            NOT_BEFORE_HEADER: f"{now + delay:.3f}",
            ORIGINAL_TOPIC_HEADER: original_topic,
        }
    )
    return parked


async def sleep_until(epoch_seconds: float) -> None:
    """Wait until the wall-clock time ``epoch_seconds`` (at most 540 s, the park bound)."""
    delay = epoch_seconds - time.time()
    if delay > 0:
        await asyncio.sleep(min(delay, 540.0))
