"""The transformer service's one entry: :func:`run_transformer` (``ledgerflow transformer`` and the stack).

Starts a FastStream broker with the transformer subscribed to the raw topic of every routed
source (:data:`~ledgerflow.transformers.registry.ROUTERS`, consumer group ``<prefix>.transformer``),
the enrichment ports (:class:`~ledgerflow.transformers.enrichment.EnricherSet`), optionally the
``/healthz``/``/readyz``/``/metrics`` server and the consumer-lag reporter; stops them in reverse order.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from faststream.kafka import KafkaBroker

from ledgerflow.core.asgi import serve
from ledgerflow.core.kafka import broker_from_settings, kafka_client_options
from ledgerflow.core.lag import lag_reporter
from ledgerflow.core.outbound.transport import worker_http_client
from ledgerflow.core.service import LagWatch, broker_readiness, health_app
from ledgerflow.core.settings import Routing, Settings
from ledgerflow.core.state import StateStore
from ledgerflow.transformers.declarative import tenant_routers
from ledgerflow.transformers.enrichment import EnricherSet
from ledgerflow.transformers.worker import GROUP_ROLE, Transformer, raw_topics, register

__all__ = ["RunningTransformer", "run_transformer"]


@dataclass(frozen=True, slots=True)
class RunningTransformer:
    """A started transformer: its broker, the worker, and the consumer group it consumes in with its topics."""

    broker: KafkaBroker
    transformer: Transformer
    watched: LagWatch


@contextlib.asynccontextmanager
async def run_transformer(
    settings: Settings,
    routing: Routing,
    bootstrap_servers: str,
    *,
    embedded: bool,
    http: httpx.AsyncClient | None = None,
    state: StateStore | None = None,
    concurrency: int = 16,
    health_port: int | None = None,
    health_host: str = "127.0.0.1",
    report_lag: bool = True,
) -> AsyncIterator[RunningTransformer]:
    """Run the transformer until the block exits.

    Args:
        settings: topic prefix, Kafka client and HTTP transport settings.
        routing: tenants and connections (enrichment credentials of the source APIs).
        bootstrap_servers: Kafka bootstrap servers.
        embedded: the broker is the embedded Tansu (producer idempotence off unless set).
        http: the outbound HTTP client of the enrichment calls (one is made, and closed, when None).
        state: the state store (one is opened, created and closed when None).
        concurrency: records of different keys mapped at once.
        health_port: serve ``/healthz``, ``/readyz`` (the broker answers) and ``/metrics`` there; None: no server.
        health_host: interface of that server (the CLI passes ``LEDGERFLOW_METRICS_HOST``, 0.0.0.0 in a pod).
        report_lag: report the consumer lag of ``<prefix>.transformer`` (off when the caller reports it).

    Raises:
        aiokafka.errors.KafkaError: the broker cannot be reached.
        sqlalchemy.exc.SQLAlchemyError: the state store cannot be opened.
        OSError: the health port cannot be bound.
        ledgerflow.transformers.declarative.MappingError: a tenant's mapping file does not fit the contracts.
    """
    mapped = tenant_routers(routing)  # every tenant's mapping file checked before anything starts
    async with contextlib.AsyncExitStack() as stack:
        if state is None:
            state = StateStore.from_settings(settings)
            await state.create_all()
            stack.push_async_callback(state.close)
        if http is None:
            http = await stack.enter_async_context(worker_http_client(settings.http_transport))
        broker = broker_from_settings(settings, bootstrap_servers, embedded=embedded)
        transformer = register(
            broker,
            settings,
            EnricherSet(routing, http, state),
            concurrency=concurrency,
            tenant_routers=mapped,
        )
        await broker.start()
        stack.push_async_callback(broker.stop)
        watched: LagWatch = [(settings.topics.group(GROUP_ROLE), raw_topics(settings))]
        if health_port is not None:
            await stack.enter_async_context(
                serve(health_app(broker_readiness(broker)), host=health_host, port=health_port)
            )
        if report_lag:
            await stack.enter_async_context(
                lag_reporter(bootstrap_servers, watched, client_options=kafka_client_options(settings))
            )
        yield RunningTransformer(broker, transformer, watched)
