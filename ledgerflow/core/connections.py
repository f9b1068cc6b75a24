"""ERP connections kept in the state store, beside (not instead of) the YAML routing file.

Table ``erp_connections`` (created by :meth:`~ledgerflow.core.state.StateStore.create_all` with
the other state tables): one row per connection, the same fields as a routing file's
``connections:`` entry (:class:`~ledgerflow.core.settings.ConnectionConfig`) plus the tenants it
serves and whether it is enabled. The ``credentials`` column holds a Fernet token
(``cryptography``; AES-128-CBC + HMAC-SHA256) of the credentials' JSON, never the values; the key
is ``LEDGERFLOW_CONNECTIONS_KEY`` or the file ``LEDGERFLOW_CONNECTIONS_KEY_FILE`` (a mounted
Kubernetes Secret), one key per line: the first encrypts, every one decrypts (rotation: put the new
key first, run ``ledgerflow connections update NAME`` on each connection, then drop the old key).

:func:`merge_routing` adds the enabled stored connections to a routing loaded from YAML (or the
demo routing): the workers see one :class:`~ledgerflow.core.settings.Routing`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import JSON, Boolean, DateTime, String, Text, delete, select, update
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from ledgerflow.core.cipher import ConnectionCipher
from ledgerflow.core.settings import ConfigError, ConnectionConfig, Routing, Settings, TenantConfig
from ledgerflow.core.state import StateBase, StateStore

__all__ = [
    "ConnectionAdmin",
    "ConnectionChanges",
    "ConnectionCheck",
    "ConnectionCipher",
    "ConnectionConflict",
    "ConnectionNotFound",
    "ConnectionRow",
    "ConnectionStore",
    "StoredConnection",
    "merge_routing",
    "stored_routing",
    "validate_connection",
]


class ConnectionNotFound(ConfigError):  # noqa: N818 - reads as the condition
    """No stored connection has that name."""


class ConnectionConflict(ConfigError):  # noqa: N818 - reads as the condition
    """The name is taken (a stored connection, or one of the routing file)."""


ConnectionCheck = Callable[[str, ConnectionConfig, Sequence[str]], str | None]
"""What the composition layer checks before a connection is stored: ``(name, config, tenants)`` → a
problem or None (``ledgerflow.app.connections_cli.routing_check``: the ERP kind and its
``config.py``'s options and credentials, the routing file's names and tenants); it raises
:class:`ConnectionConflict` for a name the routing file has."""


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(moment: datetime) -> datetime:
    """``moment`` with its UTC zone (SQLite returns the stored UTC times without one)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class ConnectionRow(StateBase):
    """One ERP connection managed with ``ledgerflow connections`` (credentials encrypted)."""

    __tablename__ = "erp_connections"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    erp: Mapped[str] = mapped_column(String(50))
    tenants: Mapped[list[str]] = mapped_column(JSON)
    base_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    objects: Mapped[list[str]] = mapped_column(JSON)
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    credential_keys: Mapped[list[str]] = mapped_column(JSON)
    credentials: Mapped[str | None] = mapped_column(Text, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


@dataclass(frozen=True, slots=True)
class StoredConnection:
    """A connection as stored: its :class:`ConnectionConfig` (credentials decrypted), tenants and state."""

    name: str
    config: ConnectionConfig
    tenants: list[str] = field(default_factory=list)
    enabled: bool = True
    created_at: datetime | None = None
    updated_at: datetime | None = None


def validate_connection(
    name: str,
    *,
    erp: str,
    base_url: str | None,
    objects: Sequence[str],
    credentials: Mapping[str, str],
    options: Mapping[str, Any],
) -> ConnectionConfig:
    """A :class:`ConnectionConfig` validated exactly as a routing file's entry (unknown keys rejected).

    Raises:
        ConfigError: naming the connection and each invalid field.
    """
    raw = {
        "erp": erp,
        "base_url": base_url,
        "objects": list(objects),
        "credentials": dict(credentials),
        "options": dict(options),
    }
    try:
        return ConnectionConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(top level)'}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise ConfigError(f"connection {name!r} is invalid: {problems}") from exc


class ConnectionStore:
    """Create, read, update, disable and remove stored connections.

    Args:
        state: the state store (its ``create_all`` creates the table).
        cipher: encrypts credentials on write and decrypts them on read.
    """

    def __init__(self, state: StateStore, cipher: ConnectionCipher) -> None:
        self.state = state
        self._session = async_sessionmaker(state.engine, expire_on_commit=False)
        self._cipher = cipher

    @property
    def cipher(self) -> ConnectionCipher:
        """The cipher of the credentials (also seals pending OAuth authorizations)."""
        return self._cipher

    def _to_stored(self, row: ConnectionRow, *, decrypt: bool = True) -> StoredConnection:
        credentials = self._cipher.decrypt(row.name, row.credentials) if decrypt else {}
        config = validate_connection(
            row.name,
            erp=row.erp,
            base_url=row.base_url,
            objects=row.objects,
            credentials=credentials,
            options=row.options,
        )
        return StoredConnection(row.name, config, list(row.tenants), row.enabled, row.created_at, row.updated_at)

    async def add(self, name: str, config: ConnectionConfig, tenants: Sequence[str]) -> None:
        """Store a new, enabled connection.

        Raises:
            ConfigError: a stored connection has that name, or it has credentials and no key is set.
        """
        async with self._session.begin() as session:
            if await session.get(ConnectionRow, name) is not None:
                raise ConnectionConflict(f"a stored connection named {name!r} exists (ledgerflow connections update)")
            session.add(self._row(name, config, tenants, enabled=True))

    def _row(self, name: str, config: ConnectionConfig, tenants: Sequence[str], *, enabled: bool) -> ConnectionRow:
        credentials = {key: value.get_secret_value() for key, value in config.credentials.items()}
        now = _now()
        return ConnectionRow(
            name=name,
            erp=config.erp,
            tenants=list(dict.fromkeys(tenants)),
            base_url=config.base_url,
            objects=list(config.objects),
            options=dict(config.options),
            credential_keys=sorted(credentials),
            credentials=self._cipher.encrypt(name, credentials),
            enabled=enabled,
            created_at=now,
            updated_at=now,
        )

    async def replace(self, name: str, config: ConnectionConfig, tenants: Sequence[str]) -> None:
        """Overwrite stored connection ``name`` (re-encrypting its credentials with the first key).

        Raises:
            ConfigError: no stored connection has that name, or it has credentials and no key is set.
        """
        row = self._row(name, config, tenants, enabled=True)
        async with self._session.begin() as session:
            current = await session.get(ConnectionRow, name)
            if current is None:
                raise ConnectionNotFound(f"no stored connection named {name!r}")
            for column in ("erp", "tenants", "base_url", "objects", "options", "credential_keys", "credentials"):
                setattr(current, column, getattr(row, column))
            current.updated_at = _now()

    async def get(self, name: str) -> StoredConnection | None:
        """Stored connection ``name`` with its credentials decrypted, or None.

        Raises:
            ConfigError: its credentials cannot be decrypted (no key, wrong key).
        """
        async with self._session() as session:
            row = await session.get(ConnectionRow, name)
        return None if row is None else self._to_stored(row)

    async def all(
        self, *, enabled_only: bool = False, decrypt: Collection[str] | None = None
    ) -> list[StoredConnection]:
        """Every stored connection by name (only the enabled ones when asked).

        Args:
            enabled_only: leave out disabled connections.
            decrypt: names whose credentials are decrypted (None: every connection's); the others
                come with empty ``credentials``, so a process that books into none of them needs no key.

        Raises:
            ConfigError: a decrypted connection's credentials cannot be decrypted (no key, wrong key).
        """
        async with self._session() as session:
            query = select(ConnectionRow).order_by(ConnectionRow.name)
            if enabled_only:
                query = query.where(ConnectionRow.enabled.is_(True))
            rows = (await session.scalars(query)).all()
        return [self._to_stored(row, decrypt=decrypt is None or row.name in decrypt) for row in rows]

    async def summaries(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every stored connection (or only ``name``), without decrypting anything (what ``list`` and ``show`` print).

        Each a dict: name, erp, tenants, base_url, objects, options, credentials (the key names),
        enabled, created_at and updated_at (ISO 8601).
        """
        async with self._session() as session:
            query = select(ConnectionRow).order_by(ConnectionRow.name)
            if name is not None:
                query = query.where(ConnectionRow.name == name)
            rows = (await session.scalars(query)).all()
        return [
            {
                "name": row.name,
                "erp": row.erp,
                "tenants": list(row.tenants),
                "base_url": row.base_url,
                "objects": list(row.objects),
                "options": dict(row.options),
                "credentials": list(row.credential_keys),
                "enabled": row.enabled,
                "created_at": _utc(row.created_at).isoformat(),
                "updated_at": _utc(row.updated_at).isoformat(),
            }
            for row in rows
        ]

    async def set_enabled(self, name: str, enabled: bool) -> bool:
        """Enable or disable ``name`` (the row and its binder stay); False when no such connection."""
        async with self._session.begin() as session:
            result = await session.execute(
                update(ConnectionRow).where(ConnectionRow.name == name).values(enabled=enabled, updated_at=_now())
            )
        return bool(getattr(result, "rowcount", 0))

    async def remove(self, name: str) -> bool:
        """Delete ``name`` (its binder rows and OAuth tokens stay, keyed by name); False when no such connection."""
        async with self._session.begin() as session:
            result = await session.execute(delete(ConnectionRow).where(ConnectionRow.name == name))
        return bool(getattr(result, "rowcount", 0))


@dataclass(frozen=True, slots=True)
class ConnectionChanges:
    """What ``update`` changes; None / empty = keep.

    ``base_url`` replaces the base URL, ``sandbox`` clears it (the local sandbox); credentials
    and options are merged key by key (``set_*`` then ``drop_*``); ``tenants`` and ``objects``
    replace their lists.
    """

    tenants: Sequence[str] | None = None
    base_url: str | None = None
    sandbox: bool = False
    objects: Sequence[str] | None = None
    set_credentials: Mapping[str, str] = field(default_factory=dict)
    drop_credentials: Sequence[str] = ()
    set_options: Mapping[str, Any] = field(default_factory=dict)
    drop_options: Sequence[str] = ()


class ConnectionAdmin:
    """The operations of ``ledgerflow connections`` and of the API's ``/v1/stored-connections``, one implementation.

    Args:
        store: the stored connections.
        check: what the composition layer checks besides the shape (:data:`ConnectionCheck`);
            None = the shape only (:func:`validate_connection`).

    Every method raises :class:`ConnectionNotFound` (unknown name), :class:`ConnectionConflict`
    (name taken) or :class:`ConfigError` (invalid: the message names the field), never with a
    credential value in the message.
    """

    def __init__(self, store: ConnectionStore, check: ConnectionCheck | None = None) -> None:
        self.store = store
        self.check = check

    def validated(
        self,
        name: str,
        *,
        erp: str,
        tenants: Sequence[str],
        base_url: str | None,
        objects: Sequence[str],
        credentials: Mapping[str, str],
        options: Mapping[str, Any],
    ) -> ConnectionConfig:
        """The connection's config, validated as a routing file's entry and by :attr:`check`.

        Raises:
            ConfigError: invalid name, fields or tenants; ConnectionConflict: the routing file has the name.
        """
        if not _NAME.fullmatch(name):
            raise ConfigError(f"connection name {name!r} must be 1-100 letters, digits, '.', '_' or '-'")
        if not tenants:
            raise ConfigError(f"connection {name!r} needs at least one tenant")
        config = validate_connection(
            name, erp=erp, base_url=base_url, objects=objects, credentials=credentials, options=options
        )
        problem = self.check(name, config, tenants) if self.check is not None else None
        if problem:
            raise ConfigError(problem)
        return config

    async def add(
        self,
        name: str,
        *,
        erp: str,
        tenants: Sequence[str],
        base_url: str | None = None,
        objects: Sequence[str] = ("bill",),
        credentials: Mapping[str, str] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store a new, enabled connection; its summary (:meth:`ConnectionStore.summaries`)."""
        config = self.validated(
            name,
            erp=erp,
            tenants=tenants,
            base_url=base_url,
            objects=objects,
            credentials=credentials or {},
            options=options or {},
        )
        await self.store.add(name, config, tenants)
        return await self.show(name)

    async def update(self, name: str, changes: ConnectionChanges) -> dict[str, Any]:
        """Apply ``changes`` to stored connection ``name`` (credentials re-encrypted with the first key)."""
        current = await self.store.get(name)
        if current is None:
            raise ConnectionNotFound(f"no stored connection named {name!r}")
        credentials = {k: v.get_secret_value() for k, v in current.config.credentials.items()}
        credentials.update(changes.set_credentials)
        options = {**current.config.options, **changes.set_options}
        for key in changes.drop_credentials:
            credentials.pop(key, None)
        for key in changes.drop_options:
            options.pop(key, None)
        tenants = list(changes.tenants or current.tenants)
        config = self.validated(
            name,
            erp=current.config.erp,
            tenants=tenants,
            base_url=None if changes.sandbox else (changes.base_url or current.config.base_url),
            objects=changes.objects or current.config.objects,
            credentials=credentials,
            options=options,
        )
        await self.store.replace(name, config, tenants)
        return await self.show(name)

    async def show(self, name: str) -> dict[str, Any]:
        """The summary of ``name`` (credential key names only).

        Raises:
            ConnectionNotFound: no such stored connection.
        """
        found = await self.store.summaries(name)
        if not found:
            raise ConnectionNotFound(f"no stored connection named {name!r}")
        return found[0]

    async def set_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        """Enable or disable ``name``; its summary afterwards."""
        if not await self.store.set_enabled(name, enabled):
            raise ConnectionNotFound(f"no stored connection named {name!r}")
        return await self.show(name)

    async def remove(self, name: str) -> None:
        """Delete ``name`` (binder rows and OAuth tokens stay under its name)."""
        if not await self.store.remove(name):
            raise ConnectionNotFound(f"no stored connection named {name!r}")


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
"""A connection name (the Kafka consumer group ``ledgerflow.connector.<name>`` and metric labels use it)."""


def merge_routing(routing: Routing, stored: Sequence[StoredConnection]) -> Routing:
    """``routing`` plus the enabled ``stored`` connections, each added to its tenants' ``connections``.

    Raises:
        ConfigError: a stored connection has the name of one in ``routing`` (the message names it),
            or names a tenant the routing does not have.
    """
    enabled = [conn for conn in stored if conn.enabled]
    clashes = sorted(conn.name for conn in enabled if conn.name in routing.connections)
    if clashes:
        raise ConfigError(
            f"connection(s) {', '.join(map(repr, clashes))} defined both in the routing file and in the state "
            "store: rename or remove one (ledgerflow connections remove NAME)"
        )
    tenants: dict[str, TenantConfig] = dict(routing.tenants)
    connections: dict[str, ConnectionConfig] = dict(routing.connections)
    for conn in enabled:
        unknown = [t for t in conn.tenants if t not in tenants]
        if unknown:
            raise ConfigError(
                f"stored connection {conn.name!r} serves tenant(s) {', '.join(map(repr, unknown))} "
                "that the routing does not have"
            )
        connections[conn.name] = conn.config
        for tenant in conn.tenants:
            current = tenants[tenant]
            if conn.name not in current.connections:
                tenants[tenant] = current.model_copy(update={"connections": [*current.connections, conn.name]})
    return routing.model_copy(update={"tenants": tenants, "connections": connections})


def _state_exists(url: str) -> bool:
    """False for a SQLite state store in memory or in a file that does not exist (servers: True)."""
    if not url.startswith("sqlite"):
        return True
    path = url.partition(":///")[2]
    return bool(path) and ":memory:" not in path and Path(path).exists()


async def stored_routing(settings: Settings, routing: Routing, *, decrypt: Collection[str] | None = None) -> Routing:
    """``routing`` merged with the enabled connections in ``settings``' state store.

    ``decrypt`` names the stored connections whose credentials this process needs (a connector
    worker: its own; None: all, as ``ledgerflow up`` and ``config check``); the others are merged
    with empty ``credentials``, so the ingress and the transformer never hold the key nor any ERP
    credential. A state store without the table yet (no connection ever stored) adds nothing, and
    so does a SQLite state file that does not exist (it is not created).

    Raises:
        ConfigError: as :func:`merge_routing`, or a stored connection in ``decrypt`` cannot be
            decrypted (no key configured, wrong key).
    """
    if not _state_exists(settings.state_url):
        return routing
    state = StateStore.from_settings(settings)
    try:
        store = ConnectionStore(state, ConnectionCipher.from_settings(settings))
        try:
            stored = await store.all(enabled_only=True, decrypt=decrypt)
        except (OperationalError, ProgrammingError) as exc:
            if "erp_connections" in str(exc.orig):
                return routing
            raise
    finally:
        await state.close()
    return merge_routing(routing, stored)
