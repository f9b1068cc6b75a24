"""The ingress service's one entry: :func:`run_ingress` (``ledgerflow ingress`` and the stack).

Starts the ingress's Kafka producer and serves the webhook app (:func:`~ledgerflow.ingress.app.create_app`)
with ``/readyz`` ready while the broker answers and the raw topic of every source some tenant
configured exists (those are the only topics the ingress writes); stops both in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from ledgerflow.core.asgi import HttpLimits, serve
from ledgerflow.core.kafka import kafka_client_options, missing_topics
from ledgerflow.core.outbox import Outbox, OutboxPublisher, SettlementTracker, Sweeper
from ledgerflow.core.settings import Routing, Settings
from ledgerflow.core.state import StateStore
from ledgerflow.ingress.app import create_app
from ledgerflow.ingress.publisher import KafkaPublisher, Publisher, ingress_producer
from ledgerflow.ingress.readiness import all_ready, build_readiness, secrets_readiness

__all__ = ["ingress_topics", "outbox_enabled", "routing_sources", "run_ingress"]


def routing_sources(routing: Routing) -> set[str]:
    """Every source some tenant has configured."""
    return {source for tenant in routing.tenants.values() for source in tenant.sources}


def ingress_topics(settings: Settings, routing: Routing) -> list[str]:
    """The raw topics the ingress writes (and ``/readyz`` requires): one per configured source, sorted."""
    return [settings.topics.raw(source) for source in sorted(routing_sources(routing))]


@contextlib.asynccontextmanager
async def run_ingress(
    settings: Settings,
    routing: Routing,
    bootstrap_servers: str,
    *,
    embedded: bool,
    host: str,
    port: int,
    state: StateStore | None = None,
    on_outbox: Callable[[Sweeper], None] | None = None,
    health: Callable[[], Mapping[str, Any]] | None = None,
) -> AsyncIterator[str]:
    """Serve the ingress on ``host:port`` (0: a free port) until the block exits; yield its base URL.

    Args:
        settings: body limit, publish timeout, topic prefix, Kafka client settings.
        routing: tenants and their source credentials.
        bootstrap_servers: Kafka bootstrap servers.
        embedded: the broker is the embedded Tansu (producer idempotence off unless set).
        host: interface to listen on.
        port: port to listen on.
        state: the state store holding the outbox (one is opened from the settings when the outbox
            is on and none is given).
        on_outbox: called with the outbox's :class:`~ledgerflow.core.outbox.Sweeper` when the outbox
            is on (``ledgerflow up`` relays through it after restarting its broker).
        health: extra facts for ``/healthz`` (the embedded broker's restarts).

    Raises:
        aiokafka.errors.KafkaError: the producer cannot reach the broker.
        OSError: the port cannot be bound.
    """
    producer = ingress_producer(settings, bootstrap_servers, embedded=embedded)
    await producer.start()
    try:
        metadata = functools.partial(missing_topics, client_options=kafka_client_options(settings))
        ready = all_ready(
            secrets_readiness(routing),
            build_readiness(bootstrap_servers, ingress_topics(settings, routing), check=metadata),
        )
        kafka = KafkaPublisher(producer, settings.ingress_publish_timeout_seconds)
        publisher: Publisher = kafka
        async with contextlib.AsyncExitStack() as stack:
            if outbox_enabled(settings, embedded=embedded):
                if state is None:
                    state = StateStore.from_settings(settings)
                    await state.create_all()
                    stack.push_async_callback(state.close)
                outbox = Outbox(state)
                publisher = OutboxPublisher(outbox, kafka)
                sweeper = Sweeper(
                    outbox,
                    kafka.publish,
                    age_seconds=settings.outbox_sweep_age_seconds,
                    max_sends=settings.outbox_max_sends,
                    interval_seconds=settings.outbox_sweep_interval_seconds,
                )
                tracker = SettlementTracker(
                    outbox,
                    bootstrap_servers,
                    results_topic=settings.topics.results,
                    dlq_topics=[settings.topics.dlq(stage) for stage in ("transform", "connector")],
                    connections_of={t: frozenset(c.connections) for t, c in routing.tenants.items()},
                    group_id=settings.topics.group("outbox"),
                    client_options=kafka_client_options(settings),
                )
                for task in (sweeper.run(), tracker.run()):
                    running = asyncio.create_task(task)
                    stack.callback(running.cancel)
                if on_outbox is not None:
                    on_outbox(sweeper)
            app = create_app(settings, routing, publisher, readiness=ready, health=health)
            async with serve(app, host=host, port=port, limits=HttpLimits.from_settings(settings)) as url:
                yield url
    finally:
        await producer.stop()


def outbox_enabled(settings: Settings, *, embedded: bool) -> bool:
    """Whether the ingress keeps an outbox: ``LEDGERFLOW_INGRESS_OUTBOX`` on, or auto with the embedded broker."""
    return settings.ingress_outbox == "on" or (settings.ingress_outbox == "auto" and embedded)
