"""The connector service's one entry: :func:`run_connector` (``ledgerflow connector`` and the stack).

For one ERP connection: builds its connector (:func:`~ledgerflow.connectors.registry.connector_class`),
starts a FastStream broker with the :class:`~ledgerflow.connectors.runtime.ConnectorRuntime`
subscribed to every canonical topic (group ``<prefix>.connector.<connection>``) and to the retry
topics (group ``….retry``), optionally the ``/healthz``/``/readyz``/``/metrics`` server (ready while
the broker answers and the ERP's ``check`` passes) and the consumer-lag reporter; stops them in
reverse order and closes the connector.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from faststream.kafka import KafkaBroker

from ledgerflow.connectors.base import Connector
from ledgerflow.connectors.registry import connector_class
from ledgerflow.connectors.runtime import ConnectorRuntime, group_id, register
from ledgerflow.contracts import OBJECT_MODELS
from ledgerflow.contracts.topics import RETRY_TIERS
from ledgerflow.core import metrics
from ledgerflow.core.asgi import serve
from ledgerflow.core.kafka import broker_from_settings, kafka_client_options
from ledgerflow.core.lag import lag_reporter
from ledgerflow.core.outbound.transport import worker_http_client
from ledgerflow.core.service import LagWatch, broker_readiness, health_app
from ledgerflow.core.settings import Routing, Settings
from ledgerflow.core.state import StateStore

__all__ = ["RunningConnector", "connector_lag_watch", "follow_stored_connection", "run_connector"]


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunningConnector:
    """A started connection: its broker, connector and runtime, and its consumer groups with their topics."""

    broker: KafkaBroker
    connector: Connector
    runtime: ConnectorRuntime
    watched: LagWatch


def connector_lag_watch(connection: str, settings: Settings) -> LagWatch:
    """The groups of ``connection`` and their topics: the canonical topics, and the retry tiers."""
    topics = settings.topics
    group = group_id(connection, topics)
    canonical = [topics.canonical(o) for o in OBJECT_MODELS]
    retries = [topics.retry("connector", tier) for tier in range(1, RETRY_TIERS + 1)]
    return [(group, canonical), (f"{group}.retry", retries)]


def _publisher(broker: KafkaBroker) -> Callable[[str, bytes | None, bytes, dict[str, str]], Awaitable[Any]]:
    async def publish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        await broker.publish(value, topic=topic, key=key, headers=headers)

    return publish


@contextlib.asynccontextmanager
async def erp_health_probe(connector: Connector, interval: float) -> AsyncIterator[None]:
    """Check the ERP (``connector.check()``) every ``interval`` seconds while the block runs.

    The outcome is the gauge ``ledgerflow_erp_up{connection,erp}`` (1 passed, 0 failed) and
    ``ledgerflow_erp_check_timestamp_seconds``, watched by the ``LedgerflowERPDown`` alert. It is
    never a reason to restart or unready the pod: an ERP outage is waited out by the retry tiers,
    and a probe per Kubernetes readiness check spent 12 of Xero's 60 calls a minute with three
    replicas. ``interval`` 0 turns the probe off.
    """
    labels = (connector.name, connector.erp)

    async def loop() -> None:
        while True:
            try:
                await connector.check()
                metrics.ERP_UP.labels(*labels).set(1)
            except Exception as exc:  # the connector's own error says what is wrong
                metrics.ERP_UP.labels(*labels).set(0)
                log.warning("ERP check of %s failed: %s", connector.name, exc)
            metrics.ERP_CHECKED.labels(*labels).set(time.time())
            await asyncio.sleep(interval)

    if interval <= 0:
        yield
        return
    task = asyncio.create_task(loop(), name=f"erp-health-{connector.name}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def follow_stored_connection(
    runtime: ConnectorRuntime, settings: Settings, state: StateStore, http: httpx.AsyncClient, interval: float
) -> None:
    """Rebuild ``runtime``'s connector when its stored connection changes (credentials rotated, options).

    Polls the stored row of the connection every ``interval`` seconds until cancelled; a
    routing-file connection (no stored row) is never changed. The replaced connector is closed one
    interval later (its in-flight records finish with it). Disabling the connection is logged:
    a dedicated worker keeps running until it is stopped.
    """
    from ledgerflow.core.connections import ConnectionCipher, ConnectionStore

    store = ConnectionStore(state, ConnectionCipher.from_settings(settings))
    name = runtime.connection
    seen: Any = None
    retired: list[Connector] = []
    while True:
        to_close, retired = retired, []
        try:
            summary = next((s for s in await store.summaries() if s["name"] == name), None)
            if summary is None:
                seen = None
            elif seen is None:
                seen = summary["updated_at"]
            elif summary["updated_at"] != seen:
                seen = summary["updated_at"]
                if not summary["enabled"]:
                    log.warning("%s: the stored connection is disabled; stop this dedicated worker", name)
                elif (stored := await store.get(name)) is not None:
                    new = connector_class(stored.config.erp)(name, stored.config, http, state)
                    retired.append(runtime.replace_connector(new))
                    log.info("%s: stored connection changed: connector rebuilt", name)
        except Exception:
            log.exception("%s: reading the stored connection failed; retrying", name)
        await asyncio.sleep(interval)
        for connector in to_close:
            with contextlib.suppress(Exception):
                await connector.aclose()


@contextlib.asynccontextmanager
async def run_connector(
    settings: Settings,
    routing: Routing,
    connection: str,
    bootstrap_servers: str,
    *,
    embedded: bool,
    http: httpx.AsyncClient | None = None,
    state: StateStore | None = None,
    concurrency: int = 8,
    health_port: int | None = None,
    health_host: str = "127.0.0.1",
    report_lag: bool = True,
) -> AsyncIterator[RunningConnector]:
    """Run the connector of ``connection`` until the block exits.

    Args:
        settings: topic prefix, Kafka client and HTTP transport settings.
        routing: tenants and connections; ``routing.connections[connection]`` is the ERP's config
            (with ``base_url`` set: the stack points a connection without one at a local sandbox first).
        connection: the ERP connection's name.
        bootstrap_servers: Kafka bootstrap servers.
        embedded: the broker is the embedded Tansu (producer idempotence off unless set).
        http: the outbound HTTP client (one is made, and closed, when None).
        state: the state store: binder and reference cache (one is opened, created and closed when None).
        concurrency: records of different keys booked at once (bounded further by the ERP rate limit).
        health_port: serve ``/healthz``, ``/readyz`` and ``/metrics`` there; None: no server.
        health_host: interface of that server (the CLI passes ``LEDGERFLOW_METRICS_HOST``, 0.0.0.0 in a pod).
        report_lag: report the consumer lag of the connection's groups (off when the caller reports it).

    Raises:
        KeyError: ``connection`` is not in ``routing``.
        ImportError: the ERP's connector is not installed (its extra is missing).
        aiokafka.errors.KafkaError: the broker cannot be reached.
        OSError: the health port cannot be bound.
    """
    config = routing.connections[connection]
    async with contextlib.AsyncExitStack() as stack:
        if state is None:
            state = StateStore.from_settings(settings)
            await state.create_all()
            stack.push_async_callback(state.close)
        if http is None:
            http = await stack.enter_async_context(worker_http_client(settings.http_transport))
        connector = connector_class(config.erp)(connection, config, http, state)
        stack.push_async_callback(connector.aclose)
        broker = broker_from_settings(settings, bootstrap_servers, embedded=embedded)
        runtime = ConnectorRuntime(connector, state, routing, _publisher(broker), settings)
        await runtime.migrate_legacy_keys()
        register(broker, runtime, concurrency=concurrency)
        await broker.start()
        stack.push_async_callback(broker.stop)
        watched = connector_lag_watch(connection, settings)
        if health_port is not None:
            await stack.enter_async_context(
                serve(health_app(broker_readiness(broker)), host=health_host, port=health_port)
            )
        if report_lag:
            await stack.enter_async_context(
                lag_reporter(bootstrap_servers, watched, client_options=kafka_client_options(settings))
            )
        await stack.enter_async_context(erp_health_probe(connector, settings.erp_check_interval_seconds))
        follow = asyncio.create_task(
            follow_stored_connection(runtime, settings, state, http, settings.connections_reload_seconds)
        )
        stack.push_async_callback(_cancel, follow)
        yield RunningConnector(broker, connector, runtime, watched)
