"""The sync-reference service's one entry: :func:`run_reference_sync` (``ledgerflow sync-reference`` and the stack).

For every given ERP connection with a reader (:data:`~ledgerflow.connectors.reference.READERS`)
it runs a :class:`~ledgerflow.connectors.reference.ReferenceSync` on a schedule: one pass at start,
then one every ``options.reference_sync.interval_seconds`` of the connection (default
:data:`DEFAULT_INTERVAL_SECONDS`), each wait jittered by ±``jitter`` (default 10 %) so that
connections of one ERP do not all call it in the same second. Every pass is a row of the state
store's ``reference_sync_requests`` (:mod:`ledgerflow.core.reference_runs`): start, end, records
per kind, error. Every :data:`~ledgerflow.core.reference_runs.REQUEST_POLL_SECONDS` the service
claims the on-demand requests of its connections (API ``POST /v1/connections/{name}/reference-sync``,
``ledgerflow sync-reference --connection C --now``) and runs them at once. Passes of one connection
never overlap (one lock per connection: they share its cursors).

Routing options of a connection (``options.reference_sync``)::

    reference_sync:
      interval_seconds: 900   # seconds between scheduled passes (> 0)
      enabled: true           # false: not read by sync-reference --all nor by ledgerflow up

``/healthz``, ``/readyz`` (ready while the broker answers) and ``/metrics`` as the other services;
``ledgerflow_reference_sync_last_success_timestamp_seconds{connection}`` is set after every
successful pass (alert ``LedgerflowReferenceSyncStale``).
One replica by design (docs/deploy.md): a second would read the same ERP twice against its rate
limit; the cursors make a restart safe. With ``LEDGERFLOW_SHARED_BUDGETS=true`` every read takes
its unit from the connection's budget shared with the connector fleet (:func:`reader_guards`):
a spent minute is waited for; a spent day fails the pass (recorded; the next pass resumes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from faststream.kafka import KafkaBroker
from pydantic import ValidationError

from ledgerflow.connectors.base import Connector
from ledgerflow.connectors.config import ReferenceSyncOptions, describe_errors
from ledgerflow.connectors.limits import ConnectionLimits, vendor_limits
from ledgerflow.connectors.reference import READERS, KafkaReferencePublisher, ReferenceSync, SyncReport, reader_class
from ledgerflow.connectors.registry import connector_class
from ledgerflow.contracts.reference import INBOUND_KINDS
from ledgerflow.contracts.topics import Topics
from ledgerflow.core import metrics
from ledgerflow.core.asgi import serve
from ledgerflow.core.budgets import MINUTE_SECONDS, SharedBudget
from ledgerflow.core.kafka import broker_from_settings, ensure_topics, kafka_client_options
from ledgerflow.core.outbound.client import REQUEST_GUARD
from ledgerflow.core.outbound.transport import worker_http_client
from ledgerflow.core.reference_runs import REQUEST_POLL_SECONDS, ReferenceRuns, Trigger
from ledgerflow.core.service import broker_readiness, health_app
from ledgerflow.core.settings import ConnectionConfig, Routing, Settings
from ledgerflow.core.state import StateStore

__all__ = [
    "DEFAULT_INTERVAL_SECONDS",
    "ReferenceSchedule",
    "ReferenceSyncService",
    "RunningReferenceSync",
    "reader_guards",
    "reference_connections",
    "reference_schedule",
    "run_reference_sync",
]

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 900.0
"""Seconds between scheduled passes when a connection sets no ``reference_sync.interval_seconds``."""


@dataclass(frozen=True, slots=True)
class ReferenceSchedule:
    """When a connection is read: every ``interval_seconds`` (jittered), unless not ``enabled``."""

    interval_seconds: float = DEFAULT_INTERVAL_SECONDS
    enabled: bool = True


def reference_schedule(config: ConnectionConfig) -> ReferenceSchedule:
    """The schedule in ``config.options["reference_sync"]`` (defaults when absent).

    Raises:
        ValueError: the option does not match :class:`~ledgerflow.connectors.config.ReferenceSyncOptions`
            (the message names the key; ``ledgerflow config check`` reports the same).
    """
    raw = config.options.get("reference_sync")
    if raw is None:
        return ReferenceSchedule()
    try:
        options = ReferenceSyncOptions.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(describe_errors(exc, "options.reference_sync.")) from None
    return ReferenceSchedule(options.interval_seconds, options.enabled)


def reference_connections(routing: Routing) -> list[str]:
    """Connections of ``routing`` whose ERP has a reader and whose ``reference_sync.enabled`` is not false.

    Raises:
        ValueError: a connection's ``options.reference_sync`` is invalid (the message names it).
    """
    names = []
    for name, config in routing.connections.items():
        if config.erp not in READERS:
            continue
        try:
            schedule = reference_schedule(config)
        except ValueError as exc:
            raise ValueError(f"connection {name!r}: {exc}") from None
        if schedule.enabled:
            names.append(name)
    return names


READER_MAX_WAIT = MINUTE_SECONDS + 1.0
"""Seconds a read waits for its connection's budget (a spent minute); longer (a spent day) fails the pass."""


def reader_guards(
    settings: Settings, routing: Routing, connections: Sequence[str], state: StateStore
) -> dict[str, ConnectionLimits]:
    """The budgets the reads of ``connections`` go through: empty unless ``settings.shared_budgets``.

    Each is the connection's :class:`~ledgerflow.connectors.limits.ConnectionLimits` (its vendor
    limits and options, as in the fleet) capped by the state store's shared counters, waiting up to
    :data:`READER_MAX_WAIT` for its turn.

    Raises:
        ValueError: a connection's rate options are not positive numbers.
    """
    if not settings.shared_budgets:
        return {}
    shared = SharedBudget(state.engine)
    guards: dict[str, ConnectionLimits] = {}
    for name in connections:
        config = routing.connections[name]
        limits = vendor_limits(config.erp, config.options)
        guards[name] = ConnectionLimits(name, config.erp, limits, max_wait=READER_MAX_WAIT, shared=shared)
    return guards


def _error_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 2000 else text[:1997] + "..."


@dataclass
class ReferenceSyncService:
    """The scheduled and on-demand passes of several connections' :class:`ReferenceSync` s.

    Args:
        syncs: connection → its sync.
        schedules: connection → its schedule.
        runs: the ``reference_sync_requests`` table.
        jitter: each wait is ``interval × uniform(1 - jitter, 1 + jitter)``.
        guards: connection → the budget its reads go through (``LEDGERFLOW_SHARED_BUDGETS``: the
            per-connection counters shared with the connector fleet); a connection without one reads
            unguarded.
    """

    syncs: dict[str, ReferenceSync]
    schedules: dict[str, ReferenceSchedule]
    runs: ReferenceRuns
    jitter: float = 0.1
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    guards: dict[str, ConnectionLimits] = field(default_factory=dict)

    def lock(self, connection: str) -> asyncio.Lock:
        """The lock every pass of ``connection`` holds (passes share its cursors)."""
        return self.locks.setdefault(connection, asyncio.Lock())

    async def run_pass(
        self, connection: str, *, trigger: Trigger = "schedule", run_id: str | None = None
    ) -> SyncReport | None:
        """One pass of ``connection``, recorded as ``run_id`` (a claimed request) or a new ``trigger`` row.

        Returns the report, or None when the pass failed (the error is in the row and the log;
        the next pass resumes from the cursors).
        """
        async with self.lock(connection):
            if run_id is None:
                run_id = await self.runs.start(connection, trigger=trigger)
            guard = REQUEST_GUARD.set(self.guards.get(connection))
            try:
                report = await self.syncs[connection].sync_once()
            except Exception as exc:  # recorded on the run; a pass must never end the service
                log.exception("reference sync of %s (%s) failed", connection, trigger)
                await self.runs.finish(run_id, error=_error_text(exc))
                return None
            finally:
                REQUEST_GUARD.reset(guard)
            await self.runs.finish(run_id, counts=report.published, reads=report.reads)
            metrics.REFERENCE_LAST_SUCCESS.labels(connection).set(time.time())
            return report

    def next_wait(self, connection: str) -> float:
        """Seconds until the next scheduled pass of ``connection`` (its interval, jittered)."""
        interval = self.schedules[connection].interval_seconds
        return interval * random.uniform(1 - self.jitter, 1 + self.jitter)

    async def scheduled(self, connection: str, stop: asyncio.Event) -> None:
        """A pass of ``connection`` now and then after every :meth:`next_wait`, until ``stop`` is set."""
        while not stop.is_set():
            await self.run_pass(connection, trigger="schedule")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.next_wait(connection))

    async def serve_requests(self, stop: asyncio.Event, poll: float = REQUEST_POLL_SECONDS) -> None:
        """Claim and run the pending on-demand requests of these connections every ``poll`` s until ``stop``."""
        running: set[asyncio.Task[Any]] = set()
        try:
            while not stop.is_set():
                try:
                    claimed = await self.runs.claim(self.syncs)
                except Exception as exc:  # the state store is unreachable: try again at the next poll
                    log.warning("cannot read the reference sync requests (next look in %gs): %s", poll, exc)
                    claimed = []
                for run in claimed:
                    log.info("reference sync of %s requested (%s, request %s)", run.connection, run.trigger, run.id)
                    task = asyncio.create_task(
                        self.run_pass(run.connection, trigger="cli" if run.trigger == "cli" else "api", run_id=run.id),
                        name=f"reference-{run.id}",
                    )
                    running.add(task)
                    task.add_done_callback(running.discard)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=poll)
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class RunningReferenceSync:
    """A started sync-reference service: its broker, the service, and its health URL (None without one)."""

    broker: KafkaBroker
    service: ReferenceSyncService
    health_url: str | None

    @property
    def connections(self) -> list[str]:
        """The connections read."""
        return list(self.service.syncs)


@contextlib.asynccontextmanager
async def run_reference_sync(
    settings: Settings,
    routing: Routing,
    connections: Sequence[str],
    bootstrap_servers: str,
    *,
    embedded: bool,
    http: httpx.AsyncClient | None = None,
    state: StateStore | None = None,
    connectors: Mapping[str, Connector] | None = None,
    page_size: int = 100,
    interval: float | None = None,
    jitter: float = 0.1,
    schedule: bool = True,
    request_poll_seconds: float = REQUEST_POLL_SECONDS,
    health_port: int | None = None,
    health_host: str = "0.0.0.0",  # noqa: S104 - the probes and the scrape come from outside the pod
) -> AsyncIterator[RunningReferenceSync]:
    """Run the reference sync of ``connections`` until the block exits.

    Args:
        settings: topic prefix, Kafka client and HTTP transport settings.
        routing: the connections (with ``base_url``: the stack points connections without one at sandboxes).
        connections: connection names to read (:func:`reference_connections` for every one with a reader).
        bootstrap_servers: Kafka bootstrap servers.
        embedded: the broker is the embedded Tansu.
        http: the outbound HTTP client (one is made, and closed, when None).
        state: the state store: cursors, OAuth tokens, runs (one is opened, created and closed when None).
        connectors: already running connectors to read through, by connection (the stack's: reads then
            share the connection's tokens and rate limit with its writes); the others are built here.
        page_size: records per ERP read.
        interval: seconds between scheduled passes for every connection (None: each connection's
            ``options.reference_sync.interval_seconds``, default 900).
        jitter: each wait between passes is the interval × uniform(1 - jitter, 1 + jitter).
        schedule: run the scheduled passes (False: on-demand requests only).
        request_poll_seconds: how often pending on-demand requests are looked for.
        health_port: serve ``/healthz``, ``/readyz`` and ``/metrics`` there; None: no server.
        health_host: interface of that server.

    Raises:
        KeyError: a connection is not in ``routing``.
        LookupError: a connection's ERP has no reader.
        ValueError: a connection's ``options.reference_sync`` is invalid, or ``jitter`` is not in [0, 1).
        aiokafka.errors.KafkaError: the broker cannot be reached.
        OSError: the health port cannot be bound.
    """
    if not 0 <= jitter < 1:
        raise ValueError("jitter must be at least 0 and below 1")
    schedules: dict[str, ReferenceSchedule] = {}
    for name in connections:
        config = routing.connections[name]
        reader_class(config.erp)
        try:
            found = reference_schedule(config)
        except ValueError as exc:
            raise ValueError(f"connection {name!r}: {exc}") from None
        schedules[name] = ReferenceSchedule(interval, found.enabled) if interval is not None else found
    topics = Topics(settings.topic_prefix)
    async with contextlib.AsyncExitStack() as stack:
        if state is None:
            state = StateStore.from_settings(settings)
            await state.create_all()
            stack.push_async_callback(state.close)
        if http is None:
            http = await stack.enter_async_context(worker_http_client(settings.http_transport))
        await ensure_topics(
            bootstrap_servers,
            [topics.inbound(kind) for kind in INBOUND_KINDS],
            partitions=settings.topic_partitions,
            client_options=kafka_client_options(settings),
        )
        broker = broker_from_settings(settings, bootstrap_servers, embedded=embedded)
        await broker.connect()
        stack.push_async_callback(broker.stop)
        publisher = KafkaReferencePublisher(broker)
        syncs: dict[str, ReferenceSync] = {}
        for name in connections:
            config = routing.connections[name]
            connector = (connectors or {}).get(name)
            if connector is None:
                connector = connector_class(config.erp)(name, config, http, state)
                stack.push_async_callback(connector.aclose)
            tenants = sorted(routing.tenants_for(name))
            syncs[name] = ReferenceSync(
                reader_class(config.erp)(connector, page_size=page_size),
                state,
                publisher,
                topics,
                tenant=tenants[0] if len(tenants) == 1 else name,
            )
        runs = ReferenceRuns(state.engine)
        await runs.create_table()
        abandoned = await runs.abandon_running(list(syncs))
        if abandoned:
            log.warning("%d reference sync pass(es) were left running by a stopped service: marked failed", abandoned)
        guards = reader_guards(settings, routing, connections, state)
        service = ReferenceSyncService(syncs, schedules, runs, jitter=jitter, guards=guards)
        health_url = None
        if health_port is not None:
            health_url = await stack.enter_async_context(
                serve(health_app(broker_readiness(broker)), host=health_host, port=health_port)
            )
        stop = asyncio.Event()
        tasks = [asyncio.create_task(service.serve_requests(stop, request_poll_seconds), name="reference-requests")]
        if schedule:
            tasks += [asyncio.create_task(service.scheduled(name, stop), name=f"reference-{name}") for name in syncs]

        async def finish() -> None:
            # A pass in flight ends its acknowledged writes and cursor; one stuck on the ERP is cancelled.
            stop.set()
            _, stuck = await asyncio.wait(tasks, timeout=30)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        stack.push_async_callback(finish)
        log.info(
            "reference sync running for %s",
            ", ".join(f"{n} every {schedules[n].interval_seconds:g}s" for n in syncs) or "no connection",
        )
        yield RunningReferenceSync(broker, service, health_url)
