"""The ingress service's one entry: :func:`run_ingress` (``ledgerflow ingress`` and the stack).

Starts the ingress's Kafka producer and serves the webhook app (:func:`~ledgerflow.ingress.app.create_app`)
with ``/readyz`` ready while the broker answers and the raw topic of every source some tenant
configured exists (those are the only topics the ingress writes); stops both in reverse order.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator

from ledgerflow.core.asgi import HttpLimits, serve
from ledgerflow.core.kafka import kafka_client_options, missing_topics
from ledgerflow.core.settings import Routing, Settings
from ledgerflow.ingress.app import create_app
from ledgerflow.ingress.publisher import KafkaPublisher, ingress_producer
from ledgerflow.ingress.readiness import all_ready, build_readiness, secrets_readiness

__all__ = ["ingress_topics", "routing_sources", "run_ingress"]


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
) -> AsyncIterator[str]:
    """Serve the ingress on ``host:port`` (0: a free port) until the block exits; yield its base URL.

    Args:
        settings: body limit, publish timeout, topic prefix, Kafka client settings.
        routing: tenants and their source credentials.
        bootstrap_servers: Kafka bootstrap servers.
        embedded: the broker is the embedded Tansu (producer idempotence off unless set).
        host: interface to listen on.
        port: port to listen on.

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
        publisher = KafkaPublisher(producer, settings.ingress_publish_timeout_seconds)
        app = create_app(settings, routing, publisher, readiness=ready)
        async with serve(app, host=host, port=port, limits=HttpLimits.from_settings(settings)) as url:
            yield url
    finally:
        await producer.stop()
