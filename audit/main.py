"""The audit service's one entry: :func:`run_audit` (``ledgerflow audit`` and the stack).

Migrates the audit tables, consumes the results, canonical, raw and dead-letter topics (group
``<prefix>.audit``), serves the sync-records API (``/v1``) and the console (``/console``) with
``/healthz``, ``/readyz`` and ``/metrics`` (:func:`~ledgerflow.audit.service.start_audit`), and
optionally reports the group's consumer lag; stops everything when the block exits.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass

from ledgerflow.audit.auth import KeyStore, OidcConfig
from ledgerflow.audit.service import start_audit
from ledgerflow.audit.store import AuditStore
from ledgerflow.contracts import OBJECT_MODELS, Source
from ledgerflow.contracts.topics import STAGES
from ledgerflow.core.connections import ConnectionCheck
from ledgerflow.core.kafka_security import kafka_client_options
from ledgerflow.core.lag import lag_reporter
from ledgerflow.core.mapping_targets import KindsOf
from ledgerflow.core.service import LagWatch
from ledgerflow.core.settings import Routing, Settings

__all__ = ["RunningAudit", "audit_lag_watch", "rate_limits", "run_audit"]


@dataclass(frozen=True, slots=True)
class RunningAudit:
    """A started audit service: the API's base URL, its consumer group with its topics, and the local admin key.

    ``admin_key`` is set only when :func:`run_audit` was asked for one (``ledgerflow up``): it is
    the key's only copy (the database keeps its hash).
    """

    url: str
    watched: LagWatch
    admin_key: str | None = None


def audit_lag_watch(settings: Settings) -> LagWatch:
    """The audit group and its topics: the results topic, every canonical, dead-letter and raw topic."""
    topics = settings.topics
    return [
        (
            topics.group("audit"),
            [
                topics.results,
                *(topics.canonical(o) for o in OBJECT_MODELS),
                *(topics.dlq(s) for s in STAGES),
                *(topics.raw(s.value) for s in Source),
            ],
        )
    ]


def rate_limits(routing: Routing) -> dict[str, float]:
    """Connection → ``options.rate_limit_per_minute``, for the connections that set one."""
    limits: dict[str, float] = {}
    for name, connection in routing.connections.items():
        value = connection.options.get("rate_limit_per_minute")
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            limits[name] = float(value)
    return limits


@contextlib.asynccontextmanager
async def run_audit(
    settings: Settings,
    bootstrap_servers: str,
    *,
    embedded: bool,
    host: str = "127.0.0.1",
    port: int = 0,
    concurrency: int | None = None,
    report_lag: bool = True,
    oidc: OidcConfig | None = None,
    local_admin_key: bool = False,
    routing: Routing | None = None,
    connection_check: ConnectionCheck | None = None,
    reference_connections: Collection[str] = (),
    mapping_kinds: KindsOf | None = None,
) -> AsyncIterator[RunningAudit]:
    """Run the audit service until the block exits.

    Args:
        settings: ``state_url`` (audit tables live beside the state tables) and topic prefix.
        bootstrap_servers: Kafka bootstrap servers.
        embedded: the broker is the embedded Tansu.
        host: interface the API listens on.
        port: port of the API (0 = a free port).
        concurrency: writers per batch (default: 1 on SQLite, 8 on PostgreSQL).
        report_lag: report the audit group's consumer lag (off when the caller reports it).
        oidc: also accept OIDC access tokens of this provider (API keys are always accepted).
        local_admin_key: make a new admin key for every tenant (revoking the previous local one)
            and return it in :attr:`RunningAudit.admin_key`: the embedded default of ``ledgerflow up``.
        routing: the routing in use; connections' ``options.rate_limit_per_minute`` give the
            rate-limit headroom of the connections page.
        connection_check: what connections stored through the API must pass besides their shape
            (``ledgerflow.app.connections_cli.routing_check``).
        reference_connections: connections of ``routing`` whose ERP has a reader: the API takes
            on-demand reference sync requests for them (the caller knows the readers; audit does not).
        mapping_kinds: the mapping kinds each ERP's connector honours (``/v1/mappings`` refuses the others).

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database cannot be reached or migrated.
        aiokafka.errors.KafkaError: the broker cannot be reached.
        OSError: the port cannot be bound.
    """
    async with contextlib.AsyncExitStack() as stack:
        url = await start_audit(
            stack,
            bootstrap_servers,
            settings,
            embedded=embedded,
            host=host,
            port=port,
            concurrency=concurrency,
            oidc=oidc,
            rate_limits=rate_limits(routing) if routing is not None else None,
            connection_check=connection_check,
            reference_connections={n: routing.tenants_for(n) for n in reference_connections} if routing else None,
            mapping_kinds=mapping_kinds,
        )
        admin_key = None
        if local_admin_key:
            store = AuditStore(settings.state_url)
            try:
                admin_key = await KeyStore(store.engine).replace_local_admin()
            finally:
                await store.close()
        watched = audit_lag_watch(settings)
        if report_lag:
            await stack.enter_async_context(
                lag_reporter(bootstrap_servers, watched, client_options=kafka_client_options(settings))
            )
        yield RunningAudit(url, watched, admin_key)
