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
from ledgerflow.core.settings import ConfigError, Routing

__all__ = ["MissingTopics", "all_ready", "build_readiness", "secrets_readiness"]

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


def secrets_readiness(routing: Routing) -> Callable[[], Awaitable[str | None]]:
    """A readiness check that every tenant's ``secrets_file`` can be read (None when all can).

    A Secret that is not mounted yet, or was rotated into an unreadable file, makes the ingress
    not ready (the load balancer sends webhooks elsewhere) instead of answering 500 per request.
    """
    sources = [
        (tenant, name, config)
        for tenant, tenant_config in routing.tenants.items()
        for name, config in tenant_config.sources.items()
        if config.secrets_file is not None
    ]

    async def readiness() -> str | None:
        for tenant, name, config in sources:
            try:
                config.all_secrets()
            except ConfigError as exc:
                return f"{tenant}/{name}: {exc}"
        return None

    return readiness


def all_ready(*checks: Callable[[], Awaitable[str | None]]) -> Callable[[], Awaitable[str | None]]:
    """One readiness check from several: the first reason any of them gives, else None."""

    async def readiness() -> str | None:
        for check in checks:
            reason = await check()
            if reason:
                return reason
        return None

    return readiness
