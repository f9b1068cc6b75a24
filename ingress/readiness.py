"""``/readyz`` for the ingress: the broker answers and every raw topic exists, checked at most every few seconds.

Kubernetes probes every pod every few seconds; asking the broker's metadata on each probe would
put load on it for nothing, so the answer is cached for ``cache_seconds`` and concurrent probes
share one check.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable

from aiokafka.errors import KafkaError

from ledgerflow.core.kafka import missing_topics

__all__ = ["MissingTopics", "build_readiness"]

MissingTopics = Callable[[str, list[str], float], Awaitable[list[str]]]
"""Signature of :func:`ledgerflow.core.kafka.missing_topics` (bootstrap servers, topic names, timeout)."""


def build_readiness(
    bootstrap_servers: str,
    topics: Iterable[str],
    *,
    cache_seconds: float = 5.0,
    timeout: float = 3.0,
    check: MissingTopics = missing_topics,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[], Awaitable[str | None]]:
    """A readiness check for :func:`ledgerflow.ingress.app.create_app`: None when ready, else the reason.

    Args:
        bootstrap_servers: the Kafka bootstrap servers the ingress publishes to.
        topics: topics that must exist (the raw topic of every source).
        cache_seconds: how long an answer (ready or not) is reused.
        timeout: seconds the broker has to answer one check.
        check: the metadata query, :func:`ledgerflow.core.kafka.missing_topics` by default.
        clock: monotonic seconds (tests replace it).

    The returned coroutine never raises: an unreachable broker is a reason, not an error.
    """
    names = list(dict.fromkeys(topics))
    lock = asyncio.Lock()
    cached: dict[str, float | str | None] = {"at": None, "reason": None}

    async def readiness() -> str | None:
        async with lock:
            at = cached["at"]
            if isinstance(at, float) and clock() - at < cache_seconds:
                reason = cached["reason"]
                return reason if isinstance(reason, str) else None
            try:
                missing = await check(bootstrap_servers, names, timeout)
                reason = f"missing topics: {', '.join(missing)}" if missing else None
            except TimeoutError:
                reason = f"broker did not answer within {timeout:g}s"
            except (KafkaError, OSError) as exc:
                reason = f"broker unreachable: {type(exc).__name__}"
            cached["at"], cached["reason"] = float(clock()), reason
            return reason

    return readiness
