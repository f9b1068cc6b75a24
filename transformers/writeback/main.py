"""The source writers' one entry: :func:`run_source_writer` (``ledgerflow source-writer`` and the stack).

Builds every tenant's source writers from the routing file (``build_writers`` of
:mod:`ledgerflow.transformers.writeback.runtime`), starts a FastStream broker with the
``SourceWriterRuntime`` subscribed to every inbound topic (group ``<prefix>.writeback``) and its
retry tiers (group ``<prefix>.writeback.retry``), optionally the ``/healthz``/``/readyz``/``/metrics``
server and the consumer-lag reporter; stops them in reverse order. Part of the transformer service
(it writes into the sources, as the transformer reads from them), with a consumer group of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from faststream.kafka import KafkaBroker

from ledgerflow.core.asgi import serve
from ledgerflow.core.kafka import broker_from_settings, kafka_client_options
from ledgerflow.core.lag import lag_reporter
from ledgerflow.core.outbound.transport import worker_http_client
from ledgerflow.core.service import LagWatch, broker_readiness, health_app
from ledgerflow.core.settings import Routing, Settings
from ledgerflow.core.state import StateStore
from ledgerflow.transformers.writeback.runtime import (
    GROUP_ROLE,
    SourceWriterRuntime,
    WritebackRetry,
    build_writers,
    inbound_topics,
    register,
    retry_topics,
)

__all__ = ["RunningSourceWriter", "run_source_writer", "source_writer_lag_watch"]


@dataclass(frozen=True, slots=True)
class RunningSourceWriter:
    """A started source writer: its broker, runtime, and its consumer groups with their topics."""

    broker: KafkaBroker
    runtime: SourceWriterRuntime
    watched: LagWatch


def source_writer_lag_watch(settings: Settings, tiers: int | None = None) -> LagWatch:
    """The source writer's groups and their topics: the inbound topics, and the retry tiers."""
    group = settings.topics.group(GROUP_ROLE)
    retries = retry_topics(settings.topics) if tiers is None else retry_topics(settings.topics, tiers)
    return [(group, inbound_topics(settings.topics)), (f"{group}.retry", retries)]


def _publisher(broker: KafkaBroker) -> Callable[[str, bytes | None, bytes, dict[str, str]], Awaitable[Any]]:
    async def publish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        await broker.publish(value, topic=topic, key=key, headers=headers)

    return publish


@contextlib.asynccontextmanager
async def run_source_writer(
    settings: Settings,
    routing: Routing,
    bootstrap_servers: str,
    *,
    embedded: bool,
    http: httpx.AsyncClient | None = None,
    state: StateStore | None = None,
    concurrency: int = 8,
    retry: WritebackRetry | None = None,
    health_port: int | None = None,
    health_host: str = "127.0.0.1",
    report_lag: bool = True,
) -> AsyncIterator[RunningSourceWriter]:
    """Run the source writers until the block exits.

    Args:
        settings: topic prefix, Kafka client and HTTP transport settings.
        routing: tenants with their ``writeback`` sections and source credentials.
        bootstrap_servers: Kafka bootstrap servers.
        embedded: the broker is the embedded Tansu (producer idempotence off unless set).
        http: the HTTP client of the source API calls (one is made, and closed, when None).
        state: the state store of the write ledger (one is opened, created and closed when None).
        concurrency: records of different keys written at once.
        retry: delays of the retry tiers (default 10 s, 60 s, 300 s).
        health_port: serve ``/healthz``, ``/readyz`` (the broker answers) and ``/metrics`` there; None: no server.
        health_host: interface of that server.
        report_lag: report the consumer lag of the writer's groups (off when the caller reports it).

    Raises:
        ledgerflow.core.settings.ConfigError: a tenant enables a writer without its source credentials.
        aiokafka.errors.KafkaError: the broker cannot be reached.
        OSError: the health port cannot be bound.
    """
    async with contextlib.AsyncExitStack() as stack:
        if http is None:
            http = await stack.enter_async_context(worker_http_client(settings.http_transport))
        writers = build_writers(routing, http)  # configuration errors before anything starts
        if state is None:
            state = StateStore.from_settings(settings)
            await state.create_all()
            stack.push_async_callback(state.close)
        broker = broker_from_settings(settings, bootstrap_servers, embedded=embedded)
        runtime = SourceWriterRuntime(routing, state, writers, _publisher(broker), settings, retry)
        register(broker, runtime, concurrency=concurrency)
        await broker.start()
        stack.push_async_callback(broker.stop)
        watched = source_writer_lag_watch(settings, len(runtime.retry.park_delays))
        if health_port is not None:
            await stack.enter_async_context(
                serve(health_app(broker_readiness(broker)), host=health_host, port=health_port)
            )
        if report_lag:
            await stack.enter_async_context(
                lag_reporter(bootstrap_servers, watched, client_options=kafka_client_options(settings))
            )
        yield RunningSourceWriter(broker, runtime, watched)
