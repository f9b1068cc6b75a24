"""The poller service's one entry: :func:`run_poller` (``ledgerflow poller`` and the stack).

A poller reads a source's API feed for the tenants that asked for the batched mode and publishes
each record to the source's raw topic exactly as the ingress publishes a webhook of it
(:mod:`ledgerflow.transformers.poller`), so the transformer cannot tell the two paths apart.
Sources with a feed: :data:`POLLED_SOURCES` (accessplanit API v2; seed 004 recommends requesting
"recently generated invoices" in batches). One task per tenant, one cursor per tenant and
resource in the state store; ``/healthz``, ``/readyz`` (the broker answers) and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
from faststream.kafka import KafkaBroker

from ledgerflow.contracts.topics import Topics
from ledgerflow.core.asgi import serve
from ledgerflow.core.kafka import broker_from_settings
from ledgerflow.core.outbound.transport import worker_http_client
from ledgerflow.core.service import broker_readiness, health_app
from ledgerflow.core.settings import Routing, Settings
from ledgerflow.core.state import StateStore
from ledgerflow.transformers.poller import AccessplanitPoller, KafkaRawPublisher, RawPublisher, pollers_from_routing

__all__ = ["POLLED_SOURCES", "RunningPoller", "run_poller"]

log = logging.getLogger(__name__)

PollerFactory = Callable[[Routing, httpx.AsyncClient, RawPublisher, StateStore, Topics], list[AccessplanitPoller]]

POLLED_SOURCES: dict[str, PollerFactory] = {"accessplanit": pollers_from_routing}
"""Sources with a feed → the factory of one poller per tenant that enabled polling (``options.poll``)."""


@dataclass(frozen=True, slots=True)
class RunningPoller:
    """A started poller service: its broker (publishing only), one poller per tenant, its health URL."""

    broker: KafkaBroker
    pollers: list[AccessplanitPoller]
    health_url: str | None


@contextlib.asynccontextmanager
async def run_poller(
    settings: Settings,
    routing: Routing,
    bootstrap_servers: str,
    *,
    embedded: bool,
    source: str = "accessplanit",
    since: str | None = None,
    interval: float = 60.0,
    http: httpx.AsyncClient | None = None,
    state: StateStore | None = None,
    health_port: int | None = None,
    health_host: str = "0.0.0.0",  # noqa: S104 - the probes and the scrape come from outside the pod
) -> AsyncIterator[RunningPoller]:
    """Run the pollers of ``source`` until the block exits.

    Args:
        settings: topic prefix, Kafka client and HTTP transport settings.
        routing: tenants; a tenant polls when its source ``options`` set ``poll: true`` with the API settings.
        bootstrap_servers: Kafka bootstrap servers.
        embedded: the broker is the embedded Tansu (producer idempotence off unless set).
        source: a source of :data:`POLLED_SOURCES`.
        since: backfill: set every polled tenant's cursors to this feed stamp before the first round
            (see :func:`~ledgerflow.transformers.poller.normalise_since`).
        interval: seconds between rounds (failed rounds back off, see ``AccessplanitPoller.run``).
        http: the outbound HTTP client (one is made, and closed, when None).
        state: the state store holding the cursors (one is opened, created and closed when None).
        health_port: serve ``/healthz``, ``/readyz`` and ``/metrics`` there; None: no server.
        health_host: interface of that server.

    Raises:
        ValueError: ``source`` has no feed.
        aiokafka.errors.KafkaError: the broker cannot be reached.
        sqlalchemy.exc.SQLAlchemyError: the state store cannot be opened.
        OSError: the health port cannot be bound.
    """
    factory = POLLED_SOURCES.get(source)
    if factory is None:
        raise ValueError(f"no poller for source {source!r} (sources with a feed: {', '.join(sorted(POLLED_SOURCES))})")
    async with contextlib.AsyncExitStack() as stack:
        if state is None:
            state = StateStore.from_settings(settings)
            await state.create_all()
            stack.push_async_callback(state.close)
        if http is None:
            http = await stack.enter_async_context(worker_http_client(settings.http_transport))
        broker = broker_from_settings(settings, bootstrap_servers, embedded=embedded)
        await broker.connect()
        stack.push_async_callback(broker.stop)
        pollers = factory(routing, http, KafkaRawPublisher(broker), state, settings.topics)
        if since is not None:
            for poller in pollers:
                await poller.backfill_from(since)
        health_url = None
        if health_port is not None:
            health_url = await stack.enter_async_context(
                serve(health_app(broker_readiness(broker)), host=health_host, port=health_port)
            )
        stop = asyncio.Event()
        tasks = [asyncio.create_task(p.run(interval, stop), name=f"poller-{source}-{p.tenant}") for p in pollers]

        async def finish() -> None:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

        stack.push_async_callback(finish)
        log.info("%s poller running for %d tenant(s) every %gs", source, len(pollers), interval)
        yield RunningPoller(broker, pollers, health_url)
