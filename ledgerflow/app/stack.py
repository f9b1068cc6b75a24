"""The embedded stack behind ``ledgerflow up`` and ``ledgerflow demo``: everything in one process.

Starts, in order: the Kafka-protocol broker (embedded Tansu unless bootstrap servers are set),
every topic, the state store, a local sandbox for each ERP connection without a ``base_url``,
the transformer, one connector fleet per ERP kind (:mod:`ledgerflow.connectors.fleet`: one
consumer group per kind serving every connection of that kind, stored connections added or
changed while it runs included; a connection with option ``dedicated`` gets its own worker and
group instead), the reference sync of every connection with an ERP reader (sandboxes of ERPs with
a reader start with their vendors and customers seeded), the source writer when a tenant writes
back (INGENIOUS, Mercoa and Monite sandboxes for tenants without the source's API:
:mod:`ledgerflow.app.source_sandboxes`), the audit service (results store and sync-records API),
and the ingress. Stops them in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ledgerflow.app.connections_cli import routing_check
from ledgerflow.app.source_sandboxes import SourceSandboxes, start_source_sandboxes
from ledgerflow.audit.main import run_audit
from ledgerflow.connectors.base import Connector
from ledgerflow.connectors.fleet import ConnectorFleet, run_fleet
from ledgerflow.connectors.main import run_connector
from ledgerflow.connectors.reference import READERS
from ledgerflow.connectors.reference_main import reference_connections, run_reference_sync
from ledgerflow.connectors.registry import mapping_kind_use, sandbox_module
from ledgerflow.core.asgi import serve
from ledgerflow.core.embedded import BrokerWatchdog, EmbeddedBroker
from ledgerflow.core.kafka import ensure_topics, kafka_client_options
from ledgerflow.core.lag import lag_reporter
from ledgerflow.core.outbound.transport import worker_http_client
from ledgerflow.core.outbox import Sweeper
from ledgerflow.core.service import LagWatch
from ledgerflow.core.settings import ConnectionConfig, Routing, Settings
from ledgerflow.core.state import StateStore
from ledgerflow.ingress.main import run_ingress
from ledgerflow.transformers.main import run_transformer
from ledgerflow.transformers.poller_main import POLLED_SOURCES, run_poller
from ledgerflow.transformers.writeback.main import run_source_writer

__all__ = ["RunningStack", "run_stack"]

log = logging.getLogger(__name__)


@dataclass
class RunningStack:
    """Where the running stack listens.

    ``sandboxes`` maps ERP kind → sandbox base URL; ``connections`` maps connection name → the
    (possibly sandbox-pointed) config in use.
    """

    settings: Settings
    routing: Routing
    bootstrap_servers: str
    ingress_url: str
    audit_url: str = ""
    audit_admin_key: str | None = None
    sandboxes: dict[str, str] = field(default_factory=dict)
    connections: dict[str, ConnectionConfig] = field(default_factory=dict)
    connectors: dict[str, Connector] = field(default_factory=dict)
    """The dedicated connections' connectors (option ``dedicated``); the others are in ``fleets``."""
    fleets: dict[str, ConnectorFleet] = field(default_factory=dict)
    """ERP kind → its connector fleet (connectors built on each connection's first record)."""
    pollers: dict[str, list[str]] = field(default_factory=dict)
    """Source with a feed → the tenants its poller reads (those whose routing sets ``options.poll``)."""
    reference_sync: list[str] = field(default_factory=list)
    source_sandboxes: SourceSandboxes = field(default_factory=SourceSandboxes)
    """INGENIOUS, Mercoa and Monite sandboxes the source writers write into (tenants' ``writeback`` without an API)."""
    source_writer: bool = False
    """Whether the source writer runs (some tenant has a ``writeback`` section)."""
    """Connections whose reference data the stack's sync-reference service reads (on demand too)."""
    broker: EmbeddedBroker | None = None
    """The embedded broker (None with real Kafka)."""
    watchdog: BrokerWatchdog | None = None
    """Restarts the embedded broker when it dies (None with real Kafka)."""


def _sandbox_config(erp: str, config: ConnectionConfig, base_url: str) -> ConnectionConfig:
    """Point ``config`` at a local sandbox with the credentials that sandbox accepts.

    Each sandbox module provides ``sandbox_connection(config, base_url) -> ConnectionConfig``.

    Raises:
        TypeError: the ERP's sandbox module has no ``sandbox_connection``.
    """
    wire = getattr(sandbox_module(erp), "sandbox_connection", None)
    if wire is None:
        raise TypeError(f"the {erp} sandbox cannot wire a connection (no sandbox_connection)")
    wired = wire(config, base_url)
    if not isinstance(wired, ConnectionConfig):
        raise TypeError(f"{erp} sandbox_connection returned {type(wired).__name__}")
    return wired


@contextlib.asynccontextmanager
async def run_stack(
    settings: Settings,
    routing: Routing,
    *,
    ingress_port: int = 0,
    audit_port: int = 0,
    host: str = "127.0.0.1",
    reference_interval: float | None = None,
) -> AsyncIterator[RunningStack]:
    """Run the whole pipeline in this process until the block exits.

    ``reference_interval``: seconds between the reference sync's scheduled passes (None: each
    connection's ``options.reference_sync.interval_seconds``, default 900); a pass runs at start.

    Raises:
        ledgerflow.core.embedded.EmbeddedBrokerError: the embedded broker cannot start.
        aiokafka.errors.KafkaError: the broker cannot be reached or topics cannot be created.
        ImportError: a configured ERP's connector or sandbox is not installed.
    """
    async with contextlib.AsyncExitStack() as stack:
        embedded = settings.kafka_bootstrap_servers is None
        if embedded:
            broker_proc = EmbeddedBroker()
            broker_proc.start()
            stack.callback(broker_proc.stop)
            bootstrap = broker_proc.bootstrap_servers
        else:
            bootstrap = str(settings.kafka_bootstrap_servers)
        await ensure_topics(
            bootstrap,
            settings.topics.all(),
            partitions=settings.topic_partitions,
            client_options=kafka_client_options(settings),
        )

        state = StateStore.from_settings(settings)
        await state.create_all()
        stack.push_async_callback(state.close)
        http = worker_http_client(settings.http_transport)
        stack.push_async_callback(http.aclose)

        running = RunningStack(settings, routing, bootstrap, ingress_url="")
        for name, config in routing.connections.items():
            if config.base_url is None:
                if config.erp not in running.sandboxes:
                    # Readable ERPs start with vendors and customers, as a company file has them.
                    create_app = sandbox_module(config.erp).create_app
                    seeds = "seed_parties" in inspect.signature(create_app).parameters and config.erp in READERS
                    app = create_app(**({"seed_parties": True} if seeds else {}))
                    running.sandboxes[config.erp] = await stack.enter_async_context(serve(app, host=host))
                config = _sandbox_config(config.erp, config, running.sandboxes[config.erp])
            running.connections[name] = config
        effective = routing.model_copy(update={"connections": running.connections})
        effective, running.source_sandboxes = await start_source_sandboxes(stack, effective, host)

        # Each service through its one entry (the same as its CLI command), sharing the HTTP
        # client and the state store; one lag reporter watches every service's groups.
        watched: LagWatch = []
        transformer = await stack.enter_async_context(
            run_transformer(settings, effective, bootstrap, embedded=embedded, http=http, state=state, report_lag=False)
        )
        watched += transformer.watched
        for source in POLLED_SOURCES:
            poller = await stack.enter_async_context(
                run_poller(
                    settings,
                    effective,
                    bootstrap,
                    embedded=embedded,
                    source=source,
                    interval=settings.poller_interval_seconds,
                    http=http,
                    state=state,
                )
            )
            running.pollers[source] = [p.tenant for p in poller.pollers]

        def prepare(name: str, config: ConnectionConfig) -> ConnectionConfig:
            """A connection stored while ``up`` runs, without a base URL, books into its ERP's sandbox."""
            if config.base_url is None and config.erp in running.sandboxes:
                return _sandbox_config(config.erp, config, running.sandboxes[config.erp])
            return config

        for erp in sorted({config.erp for config in running.connections.values()}):
            fleet = await stack.enter_async_context(
                run_fleet(
                    settings,
                    effective,
                    erp,
                    bootstrap,
                    embedded=embedded,
                    http=http,
                    state=state,
                    prepare=prepare,
                    prefer_stored=True,
                    reload_seconds=settings.connections_reload_seconds,
                    report_lag=False,
                )
            )
            running.fleets[erp] = fleet.fleet
            watched += fleet.watched
        for name, config in running.connections.items():
            if config.options.get("dedicated"):
                conn = await stack.enter_async_context(
                    run_connector(
                        settings,
                        effective,
                        name,
                        bootstrap,
                        embedded=embedded,
                        http=http,
                        state=state,
                        report_lag=False,
                    )
                )
                running.connectors[name] = conn.connector
                watched += conn.watched
        reference = await stack.enter_async_context(
            run_reference_sync(
                settings,
                effective,
                reference_connections(effective),
                bootstrap,
                embedded=embedded,
                http=http,
                state=state,
                connectors=running.connectors,
                interval=reference_interval,
            )
        )
        running.reference_sync = reference.connections
        if any(tenant.writeback is not None for tenant in effective.tenants.values()):
            writer = await stack.enter_async_context(
                run_source_writer(
                    settings, effective, bootstrap, embedded=embedded, http=http, state=state, report_lag=False
                )
            )
            watched += writer.watched
            running.source_writer = True
        audit = await stack.enter_async_context(
            run_audit(
                # The local sandboxes serve the vendors' OAuth paths: connect may point there.
                settings.model_copy(update={"oauth_allow_custom_root": True}),
                bootstrap,
                embedded=embedded,
                host=host,
                port=audit_port,
                report_lag=False,
                local_admin_key=True,
                routing=effective,
                connection_check=routing_check(settings),
                reference_connections=running.reference_sync,
                mapping_kinds=mapping_kind_use,
            )
        )
        running.audit_url = audit.url
        running.audit_admin_key = audit.admin_key
        watched += audit.watched
        await stack.enter_async_context(lag_reporter(bootstrap, watched, client_options=kafka_client_options(settings)))
        sweepers: list[Sweeper] = []
        watchdog: BrokerWatchdog | None = None
        if embedded:

            async def recreate() -> None:
                # The restarted broker has nothing: topics first, then what the outbox says was
                # accepted and has no final result yet.
                await ensure_topics(bootstrap, settings.topics.all(), partitions=settings.topic_partitions)
                for sweeper in sweepers:
                    relayed = await sweeper.relay_after_restart()
                    log.warning("relayed %d accepted webhook(s) without a final result", relayed)

            watchdog = BrokerWatchdog(broker_proc, recreate, interval=settings.embedded_broker_check_seconds)
        running.ingress_url = await stack.enter_async_context(
            run_ingress(
                settings,
                routing,
                bootstrap,
                embedded=embedded,
                host=host,
                port=ingress_port,
                state=state,
                on_outbox=sweepers.append,
                health=watchdog.health if watchdog else None,
            )
        )
        if watchdog is not None:
            running.broker = broker_proc
            running.watchdog = watchdog
            task = asyncio.create_task(watchdog.run())
            stack.callback(task.cancel)
        yield running
