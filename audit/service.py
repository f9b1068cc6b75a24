"""The audit service in one call: migrate, consume results, serve the sync-records API.

:func:`start_audit` is what ``ledgerflow audit`` runs and what ``ledgerflow up`` can add to its
stack: it upgrades the schema, starts a broker with the results consumer, and serves the API
(``/v1/…``) and the console (``/console``) together with ``/healthz``, ``/readyz`` and ``/metrics`` on one port.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Collection, Mapping

from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy import text

from ledgerflow.audit.api import create_app
from ledgerflow.audit.auth import Authenticator, KeyStore, OidcConfig, OidcVerifier
from ledgerflow.audit.console import install_console
from ledgerflow.audit.consumer import register
from ledgerflow.audit.migrate import upgrade
from ledgerflow.audit.store import AuditStore
from ledgerflow.core.asgi import HttpLimits, serve
from ledgerflow.core.connections import ConnectionCheck
from ledgerflow.core.kafka import broker_from_settings
from ledgerflow.core.mapping_targets import KindsOf
from ledgerflow.core.service import health_app
from ledgerflow.core.settings import Settings

__all__ = ["audit_app", "start_audit"]


def audit_app(app: FastAPI, readiness: Callable[[], Awaitable[str | None]]) -> FastAPI:
    """``app`` with ``/healthz``, ``/readyz`` and ``/metrics`` (:func:`ledgerflow.core.service.health_app`) added.

    The routes are added to ``app`` itself (not mounted at ``/``), so an unknown path is still
    answered by ``app``: a problem+json 404.
    """
    app.router.routes.extend(health_app(readiness).routes)
    return app


async def start_audit(
    stack: contextlib.AsyncExitStack,
    bootstrap_servers: str,
    settings: Settings,
    *,
    embedded: bool,
    host: str = "127.0.0.1",
    port: int = 0,
    group_id: str | None = None,
    concurrency: int | None = None,
    oidc: OidcConfig | None = None,
    key_hasher: PasswordHasher | None = None,
    rate_limits: Mapping[str, float] | None = None,
    connection_check: ConnectionCheck | None = None,
    reference_connections: Mapping[str, Collection[str]] | None = None,
    mapping_kinds: KindsOf | None = None,
) -> str:
    """Start the audit service inside ``stack`` (stopped when the stack closes); return the API base URL.

    Args:
        stack: the caller's exit stack (``run_stack`` in :mod:`ledgerflow.app.stack`).
        bootstrap_servers: Kafka bootstrap servers.
        settings: ``state_url`` (audit tables live beside the state tables) and topic prefix.
        embedded: the broker is the embedded Tansu (producer idempotence off unless set).
        host: interface the API listens on.
        port: port of the API (0 = a free port).
        group_id: consumer group, ``<prefix>.audit`` by default.
        concurrency: writers per batch (default: 1 on SQLite, 8 on PostgreSQL).
        oidc: accept OIDC access tokens of this provider besides API keys.
        key_hasher: Argon2 parameters of API keys (tests use cheaper ones).
        rate_limits: connection → ``rate_limit_per_minute`` of the routing file (the connections
            page shows the headroom against the requests the audit recorded).
        connection_check: the composition layer's check of connections stored through the API.
        reference_connections: connection whose ERP has a reader → its tenants
            (``POST /v1/connections/{name}/reference-sync``; none when None).
        mapping_kinds: the connectors' table of mapping kinds each ERP honours (``/v1/mappings``
            refuses the others; ``ledgerflow.connectors.registry.mapping_kind_use``).

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database cannot be reached or migrated.
        aiokafka.errors.KafkaError: the broker cannot be reached.
        OSError: the port cannot be bound.
    """
    await upgrade(settings.state_url)
    store = AuditStore(settings.state_url)
    stack.push_async_callback(store.close)
    broker = broker_from_settings(settings, bootstrap_servers, embedded=embedded)
    register(broker, store, settings, group_id=group_id, concurrency=concurrency)

    async def publish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        await broker.publish(value, topic=topic, key=key, headers=headers)

    async def ready() -> str | None:
        if not await broker.ping(timeout=3.0):
            return "broker unreachable"
        try:
            async with store.engine.connect() as conn:
                await conn.execute(text("select 1"))
        except Exception as exc:  # any database failure means "not ready"
            return f"database unreachable: {type(exc).__name__}"
        return None

    await broker.start()
    stack.push_async_callback(broker.stop)
    verifier = OidcVerifier(oidc) if oidc is not None else None
    authenticator = Authenticator(KeyStore(store.engine, key_hasher), verifier)
    app = create_app(
        store,
        publish,
        settings,
        authenticator=authenticator,
        rate_limits=rate_limits,
        connection_check=connection_check,
        reference_connections=reference_connections,
        mapping_kinds=mapping_kinds,
    )
    install_console(app)
    app = audit_app(app, ready)
    return await stack.enter_async_context(serve(app, host=host, port=port, limits=HttpLimits.from_settings(settings)))
