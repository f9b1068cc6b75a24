"""The audit app in-process for API and console tests: SQLite store, a recording publisher, cheap Argon2."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from argon2 import PasswordHasher
from fastapi import FastAPI

from ledgerflow.audit.api import create_app
from ledgerflow.audit.auth import Authenticator, KeyStore, OidcConfig, OidcVerifier
from ledgerflow.audit.console import install_console
from ledgerflow.audit.migrate import upgrade
from ledgerflow.audit.service import audit_app
from ledgerflow.audit.store import AuditStore
from ledgerflow.core.connections import ConnectionCheck
from ledgerflow.core.mapping_targets import KindsOf
from ledgerflow.core.settings import Settings

CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
"""Argon2id with test parameters (the service uses argon2-cffi's RFC 9106 defaults)."""


@dataclass
class Published:
    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, str]


@dataclass
class AuditApi:
    app: FastAPI
    store: AuditStore
    keys: KeyStore
    published: list[Published] = field(default_factory=list)

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://audit", headers=headers)

    async def key(self, scopes: list[str], tenants: list[str], name: str = "test") -> str:
        return (await self.keys.create(name, scopes, tenants)).key


@asynccontextmanager
async def audit_api(
    tmp_path: Path,
    oidc: OidcConfig | None = None,
    url: str | None = None,
    rate_limits: dict[str, float] | None = None,
    settings: Settings | None = None,
    connection_check: ConnectionCheck | None = None,
    mapping_kinds: KindsOf | None = None,
) -> AsyncIterator[AuditApi]:
    """The audit app over a fresh SQLite file in ``tmp_path`` (or the database at ``url``)."""
    url = url or f"sqlite+aiosqlite:///{tmp_path / 'audit-api.db'}"
    await upgrade(url)
    store = AuditStore(url)
    keys = KeyStore(store.engine, CHEAP_HASHER)
    published: list[Published] = []

    async def publish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        published.append(Published(topic, key, value, headers))

    authenticator = Authenticator(keys, OidcVerifier(oidc) if oidc else None)
    app = create_app(
        store,
        publish,
        settings or Settings(),
        authenticator=authenticator,
        rate_limits=rate_limits,
        connection_check=connection_check,
        mapping_kinds=mapping_kinds,
    )
    install_console(app)

    async def ready() -> str | None:
        return None

    app = audit_app(app, ready)
    try:
        yield AuditApi(app, store, keys, published)
    finally:
        await store.close()
