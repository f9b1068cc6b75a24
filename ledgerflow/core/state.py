"""The state store: binder, OAuth tokens and cursors, on SQLAlchemy (SQLite default, PostgreSQL in production).

Tables
  ``binder``        (connection, key) → ERP record id, ERP version, content hash and the source's
                    version time (``source_updated_at`` of the booked record, to refuse older
                    versions). ``key`` is a canonical id (``acme:mercoa:bill:in_…``) or, for
                    references, ``<tenant>:vendor-ref:<source id>``; keys of rows written before
                    carried no tenant (:meth:`StateStore.migrate_legacy_keys`). Index
                    ``ix_binder_erp_record`` on (connection, erp_record_id) serves the ERP readers'
                    reverse look-up (:meth:`StateStore.bindings_of_erp_records`).
  ``oauth_tokens``  connection → access/refresh token and expiry (refresh-token rotation persisted);
                    with a key configured (``LEDGERFLOW_CONNECTIONS_KEY[_FILE]``) both tokens are
                    stored Fernet-encrypted (``fernet:…``, :class:`~ledgerflow.core.cipher.ConnectionCipher`);
                    rows written in plaintext by earlier releases are read once and rewritten
                    encrypted (:meth:`StateStore.encrypt_tokens`, run by ``create_all``).
  ``cursors``       name → opaque position (pollers).
  ``reference_cache`` / ``reference_cache_status`` / ``reference_mappings``: the ERP reference data
                    the readers saw, whether a full pass over each source finished, and the
                    operators' source code → ERP id tables (:mod:`ledgerflow.core.reference_cache`).
  ``connection_budgets``: per-connection request counters of the current minute and UTC day shared
                    by every replica (:mod:`ledgerflow.core.budgets`, ``LEDGERFLOW_SHARED_BUDGETS``).

Writes are upserts so that two replicas racing on the same key leave one row.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    delete,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import StaticPool

from ledgerflow.contracts import is_legacy_key, tenant_scoped
from ledgerflow.core.cipher import SEALED_PREFIX, ConnectionCipher
from ledgerflow.core.settings import Settings

__all__ = [
    "BinderRow",
    "BindingValues",
    "MappingRow",
    "ReferenceCacheRow",
    "ReferenceStatusRow",
    "StateBase",
    "StateStore",
    "StoredToken",
]


class _NoValueEcho(logging.Filter):
    """Drops DEBUG records that echo values: aiosqlite's operations and SQLAlchemy's result rows.

    At DEBUG both printed every OAuth access and refresh token the state store wrote or read
    (statement parameters, rows); statements themselves stay logged (INFO), parameters hidden.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


for _logger in ("aiosqlite", "sqlalchemy.engine.Engine"):
    logging.getLogger(_logger).addFilter(_NoValueEcho())

_IN_CHUNK = 500
"""Keys per ``IN (…)`` list when reading binder rows in bulk."""


_DDL_LOCK_KEY = 0x1ED6E2F10
"""Advisory lock id held while creating the state tables on PostgreSQL."""


class StateBase(DeclarativeBase):
    """Declarative base of the state tables (the audit tables have their own base)."""

    metadata = MetaData()


def _now() -> datetime:
    return datetime.now(UTC)


class BinderRow(StateBase):
    """One booked record (or resolved reference) on one ERP connection."""

    __tablename__ = "binder"

    connection: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    erp_record_id: Mapped[str] = mapped_column(String(200))
    erp_version: Mapped[str | None] = mapped_column(String(100), nullable=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    source_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_binder_erp_record", "connection", "erp_record_id"),)


_ADDED_COLUMNS: dict[str, dict[str, str]] = {
    "binder": {"source_updated_at": "TIMESTAMP WITH TIME ZONE"},
    "reference_cache_status": {"erp": "VARCHAR(40)"},
}
"""Columns added to existing state tables after their first release: :meth:`StateStore.create_all` adds them
(table → column → its PostgreSQL type; :data:`_SQLITE_TYPES` gives SQLite's)."""

_SQLITE_TYPES: dict[str, str] = {"TIMESTAMP WITH TIME ZONE": "DATETIME"}
"""PostgreSQL type of an added column → the type SQLAlchemy gives it on SQLite (others are the same)."""


class TokenRow(StateBase):
    """OAuth tokens of one connection."""

    __tablename__ = "oauth_tokens"

    connection: Mapped[str] = mapped_column(String(100), primary_key=True)
    access_token: Mapped[str] = mapped_column(Text)
    refresh_token: Mapped[str | None] = mapped_column(Text, nullable=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CursorRow(StateBase):
    """Position of a poller."""

    __tablename__ = "cursors"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    position: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class BudgetRow(StateBase):
    """One connection's shared ERP budget: fixed-window counters (:mod:`ledgerflow.core.budgets`).

    ``minute_start`` / ``day_start`` are the epoch seconds their window began (a minute, a UTC day);
    ``*_count`` the requests granted in it by every process of the deployment.
    """

    __tablename__ = "connection_budgets"

    connection: Mapped[str] = mapped_column(String(200), primary_key=True)
    minute_start: Mapped[int] = mapped_column(BigInteger)
    minute_count: Mapped[int] = mapped_column(Integer)
    day_start: Mapped[int] = mapped_column(BigInteger)
    day_count: Mapped[int] = mapped_column(Integer)


class ReferenceCacheRow(StateBase):
    """One reference record an ERP reader read (:mod:`ledgerflow.core.reference_cache`)."""

    __tablename__ = "reference_cache"

    connection: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), primary_key=True)
    entity: Mapped[str] = mapped_column(String(60), primary_key=True)
    erp_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    code: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    name: Mapped[str] = mapped_column(String(400))
    active: Mapped[bool] = mapped_column(Boolean)
    parent_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    synced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class ReferenceStatusRow(StateBase):
    """Whether the cache of one (connection, kind, entity) holds a full pass (``complete_at`` set)."""

    __tablename__ = "reference_cache_status"

    connection: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), primary_key=True)
    entity: Mapped[str] = mapped_column(String(60), primary_key=True)
    erp: Mapped[str | None] = mapped_column(String(40), nullable=True)
    complete_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    synced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class MappingRow(StateBase):
    """One operator mapping: (tenant, connection, kind, source code) → ERP id."""

    __tablename__ = "reference_mappings"

    tenant: Mapped[str] = mapped_column(String(100), primary_key=True)
    connection: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), primary_key=True)
    source_code: Mapped[str] = mapped_column(String(200), primary_key=True)
    erp_id: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


@dataclass(frozen=True, slots=True)
class BindingValues:
    """One binder row to write: ``key`` → the ERP's record id and version, the booked content's hash.

    ``source_updated_at`` is the booked record's version time in its source (None when the source
    sends none); an existing row keeps its own when this is None.
    """

    key: str
    erp_record_id: str
    erp_version: str | None
    content_hash: str
    source_updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredToken:
    """An OAuth token pair as persisted."""

    access_token: str
    refresh_token: str | None
    expires_at: datetime


def _add_missing_columns(connection: Any) -> None:
    """Add the :data:`_ADDED_COLUMNS` a state database created by an earlier release lacks (nullable, no default)."""
    inspector = inspect(connection)
    for table, columns in _ADDED_COLUMNS.items():
        present = {column["name"] for column in inspector.get_columns(table)}
        for name, sql_type in columns.items():
            if name not in present:
                kind = sql_type if connection.dialect.name == "postgresql" else _SQLITE_TYPES.get(sql_type, sql_type)
                connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {kind} NULL"))
    for index in StateBase.metadata.tables["binder"].indexes:  # indexes added after the first release
        index.create(connection, checkfirst=True)


class StateStore:
    """Async access to the state tables.

    Args:
        url: SQLAlchemy async URL, e.g. ``sqlite+aiosqlite:///state.db`` or
            ``postgresql+asyncpg://postgres@127.0.0.1/ledgerflow``.
        pool_size, max_overflow: connections kept open, and opened beyond them at peaks (server
            databases only; SQLite files use SQLAlchemy's defaults).
        cipher: encrypts OAuth tokens at rest when it has a key (None or keyless: plaintext, as
            before keys existed; reading an encrypted row then raises ``ConfigError``).

    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        max_overflow: int = 20,
        cipher: ConnectionCipher | None = None,
        engine: AsyncEngine | None = None,
    ) -> None:
        self.url = url
        self.cipher = cipher
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite") and (":memory:" in url or url.endswith("://")):
            kwargs = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
        elif not url.startswith("sqlite"):
            # Connections beyond pool_size are closed when returned: with more concurrent records
            # than that, every overflow use paid a fresh connect (measured: a tenth of a
            # connector's CPU at 32 records in flight with SQLAlchemy's default pool of 5).
            kwargs = {"pool_size": pool_size, "max_overflow": max_overflow}
        # hide_parameters: SQL parameters never reach logs or exception messages. At DEBUG the
        # engine logged every OAuth access and refresh token written to or read from oauth_tokens.
        # ``engine``: share one already open on the same database (the audit service's).
        self.engine: AsyncEngine = engine or create_async_engine(url, hide_parameters=True, **kwargs)
        self._session = async_sessionmaker(self.engine, expire_on_commit=False)
        self._dialect = self.engine.dialect.name

    @classmethod
    def on_engine(cls, engine: AsyncEngine, *, cipher: ConnectionCipher | None = None) -> StateStore:
        """A store over an engine its owner disposes of (the audit service's: same database).

        Do not :meth:`close` it: that disposes of the owner's pool.
        """
        store = cls.__new__(cls)
        store.url = engine.url.render_as_string(hide_password=True)
        store.cipher = cipher
        store.engine = engine
        store._session = async_sessionmaker(engine, expire_on_commit=False)
        store._dialect = engine.dialect.name
        return store

    @classmethod
    def from_settings(cls, settings: Settings) -> StateStore:
        """The store at ``LEDGERFLOW_STATE_URL`` with the ``LEDGERFLOW_STATE_POOL_SIZE`` / ``…_MAX_OVERFLOW`` pool.

        Each process holds at most pool size + overflow connections: size PostgreSQL's
        ``max_connections`` for the replicas of every worker times that.
        """
        return cls(
            settings.state_url,
            pool_size=settings.state_pool_size,
            max_overflow=settings.state_max_overflow,
            cipher=ConnectionCipher.from_settings(settings),
        )

    async def create_all(self) -> None:
        """Create the state tables if they do not exist (idempotent, safe from several processes at once).

        On PostgreSQL a transaction-scoped advisory lock serialises concurrent start-ups: two
        workers racing ``CREATE TABLE IF NOT EXISTS`` otherwise fail on the catalog's unique index.
        """
        async with self.engine.begin() as conn:
            if self._dialect == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK_KEY})
            await conn.run_sync(StateBase.metadata.create_all)
            await conn.run_sync(_add_missing_columns)
        await self.encrypt_tokens()

    async def close(self) -> None:
        """Dispose of the connection pool."""
        await self.engine.dispose()

    def _insert(self, table: Any) -> Any:
        return pg_insert(table) if self._dialect == "postgresql" else sqlite_insert(table)

    def upsert(self, table: Any) -> Any:
        """An ``INSERT`` on ``table`` that takes ``on_conflict_do_update`` (PostgreSQL or SQLite dialect)."""
        return self._insert(table)

    def session(self) -> AsyncSession:
        """A new session on the state database (``async with store.session() as s, s.begin(): …``)."""
        return self._session()

    async def get_binding(self, connection: str, key: str) -> BinderRow | None:
        """The binder row for ``key`` on ``connection``, or None."""
        async with self._session() as session:
            return await session.get(BinderRow, (connection, key))

    async def get_bindings(self, connection: str, keys: Collection[str]) -> dict[str, BinderRow]:
        """The binder rows of ``keys`` on ``connection`` that exist, by key, in one query.

        A connector batch reads the rows of all its records at once instead of one round trip each.
        """
        if not keys:
            return {}
        found: dict[str, BinderRow] = {}
        unique = sorted(set(keys))
        async with self._session() as session:
            for start in range(0, len(unique), _IN_CHUNK):
                chunk = unique[start : start + _IN_CHUNK]
                rows = await session.scalars(
                    select(BinderRow).where(BinderRow.connection == connection, BinderRow.key.in_(chunk))
                )
                found.update((row.key, row) for row in rows)
        return found

    async def bindings_of_erp_records(self, connection: str, erp_record_ids: Collection[str]) -> list[BinderRow]:
        """Every binder row on ``connection`` whose ERP record id is one of ``erp_record_ids`` (reverse look-up).

        One query per 500 ids on the ``ix_binder_erp_record`` index. An ERP id can have several
        rows (QuickBooks numbers vendors and bills apart, so a vendor reference and a bill may share
        an id): callers tell them apart by the key (:func:`ledgerflow.connectors.binder.parse_binder_key`).
        Rows come ordered by ERP id, then key.
        """
        unique = sorted(set(erp_record_ids))
        found: list[BinderRow] = []
        async with self._session() as session:
            for start in range(0, len(unique), _IN_CHUNK):
                chunk = unique[start : start + _IN_CHUNK]
                rows = await session.scalars(
                    select(BinderRow)
                    .where(BinderRow.connection == connection, BinderRow.erp_record_id.in_(chunk))
                    .order_by(BinderRow.erp_record_id, BinderRow.key)
                )
                found.extend(rows)
        return found

    async def put_binding(
        self, connection: str, key: str, *, erp_record_id: str, erp_version: str | None, content_hash: str
    ) -> None:
        """Insert or replace the binder row for ``key`` on ``connection``."""
        await self.put_bindings(connection, [BindingValues(key, erp_record_id, erp_version, content_hash)])

    async def put_bindings(self, connection: str, rows: Sequence[BindingValues]) -> None:
        """Insert or replace several binder rows on ``connection`` in one statement and one transaction.

        The last of several rows with the same key wins.
        """
        latest = {row.key: row for row in rows}
        if not latest:
            return
        now = _now()
        values = [
            {
                "connection": connection,
                "key": row.key,
                "erp_record_id": row.erp_record_id,
                "erp_version": row.erp_version,
                "content_hash": row.content_hash,
                "updated_at": now,
                "source_updated_at": row.source_updated_at,
            }
            for row in latest.values()
        ]
        stmt = self._insert(BinderRow.__table__)
        stmt = stmt.on_conflict_do_update(
            index_elements=["connection", "key"],
            set_={
                **{k: stmt.excluded[k] for k in ("erp_record_id", "erp_version", "content_hash", "updated_at")},
                # A booking of a record without a version time keeps the version time already known.
                "source_updated_at": func.coalesce(
                    stmt.excluded.source_updated_at, BinderRow.__table__.c.source_updated_at
                ),
            },
        )
        # One statement with a list of parameter sets: SQLAlchemy batches it into multi-row
        # INSERTs ("insertmanyvalues") and compiles it once, where a .values(rows) statement was
        # compiled anew for every batch size (a twentieth of a connector's CPU under py-spy).
        async with self._session.begin() as session:
            await session.execute(stmt, values)

    async def legacy_keys(self, connection: str) -> list[str]:
        """Binder keys of ``connection`` that carry no tenant yet (:func:`~ledgerflow.contracts.is_legacy_key`)."""
        async with self._session() as session:
            keys = await session.scalars(select(BinderRow.key).where(BinderRow.connection == connection))
            return [key for key in keys if is_legacy_key(key)]

    async def migrate_legacy_keys(self, connection: str, tenant: str) -> int:
        """Give ``tenant`` to every legacy binder key of ``connection``; return how many rows moved.

        ``mercoa:bill:in_1`` becomes ``<tenant>:mercoa:bill:in_1`` and ``vendor-ref:v1``
        ``<tenant>:vendor-ref:v1`` (:func:`~ledgerflow.contracts.tenant_scoped`), in one transaction.
        A row already present under the new key was written after the upgrade and is newer: it is
        kept and the legacy row dropped. Idempotent; run by a connector at start when exactly one
        tenant feeds its connection, and by ``ledgerflow state migrate-keys`` for shared ones.
        OAuth tokens and cursors need no move: tokens belong to the ERP connection, cursors
        already carry their tenant in their name.
        """
        legacy = await self.legacy_keys(connection)
        if not legacy:
            return 0
        async with self._session.begin() as session:
            for start in range(0, len(legacy), _IN_CHUNK):
                chunk = legacy[start : start + _IN_CHUNK]
                rows = (
                    await session.scalars(
                        select(BinderRow).where(BinderRow.connection == connection, BinderRow.key.in_(chunk))
                    )
                ).all()
                values = [
                    {
                        "connection": connection,
                        "key": tenant_scoped(tenant, row.key),
                        "erp_record_id": row.erp_record_id,
                        "erp_version": row.erp_version,
                        "content_hash": row.content_hash,
                        "updated_at": row.updated_at,
                        "source_updated_at": row.source_updated_at,
                    }
                    for row in rows
                ]
                if values:
                    stmt = self._insert(BinderRow.__table__).on_conflict_do_nothing(
                        index_elements=["connection", "key"]
                    )
                    await session.execute(stmt, values)
                await session.execute(
                    delete(BinderRow).where(BinderRow.connection == connection, BinderRow.key.in_(chunk))
                )
        return len(legacy)

    async def count_bindings(self, connection: str) -> int:
        """Number of binder rows on ``connection`` (tests, diagnostics)."""
        async with self._session() as session:
            rows = await session.execute(select(BinderRow.key).where(BinderRow.connection == connection))
            return len(rows.all())

    def _sealing(self) -> ConnectionCipher | None:
        return self.cipher if self.cipher is not None and self.cipher.configured else None

    def _seal(self, connection: str, value: str | None) -> str | None:
        cipher = self._sealing()
        return value if value is None or cipher is None else cipher.seal(connection, value)

    def _unseal(self, connection: str, value: str | None) -> str | None:
        if value is None or not value.startswith(SEALED_PREFIX):
            return value
        return (self.cipher or ConnectionCipher([])).unseal(connection, value)

    async def get_token(self, connection: str) -> StoredToken | None:
        """The persisted OAuth tokens of ``connection`` (decrypted), or None.

        A plaintext row (written before a key was configured) is returned as it is and, when a
        key is configured now, rewritten encrypted.

        Raises:
            ConfigError: the row is encrypted and no configured key decrypts it.
        """
        async with self._session() as session:
            row = await session.get(TokenRow, connection)
            if row is None:
                return None
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
        token = StoredToken(
            self._unseal(connection, row.access_token) or "", self._unseal(connection, row.refresh_token), expires
        )
        if self._sealing() is not None and not row.access_token.startswith(SEALED_PREFIX):
            await self._reseal(connection, row.access_token, token)
        return token

    async def _reseal(self, connection: str, plain_access: str, token: StoredToken) -> None:
        """Rewrite a plaintext row encrypted, unless another process changed it meanwhile."""
        async with self._session.begin() as session:
            await session.execute(
                update(TokenRow)
                .where(TokenRow.connection == connection, TokenRow.access_token == plain_access)
                .values(
                    access_token=self._seal(connection, token.access_token),
                    refresh_token=self._seal(connection, token.refresh_token),
                )
            )

    async def encrypt_tokens(self) -> int:
        """Rewrite every plaintext ``oauth_tokens`` row encrypted (no key configured: nothing); return how many.

        The migration path of the tokens persisted by releases that stored them in plaintext:
        each is read once and rewritten sealed; a row rotated meanwhile by another process is left
        to that process (it wrote it encrypted). Idempotent.
        """
        if self._sealing() is None:
            return 0
        async with self._session() as session:
            rows = (
                await session.execute(
                    select(TokenRow.connection, TokenRow.access_token, TokenRow.refresh_token).where(
                        TokenRow.access_token.not_like(SEALED_PREFIX + "%")
                    )
                )
            ).all()
        for connection, access, refresh in rows:
            token = StoredToken(access, self._unseal(connection, refresh), datetime.now(UTC))
            await self._reseal(connection, access, token)
        return len(rows)

    async def put_token(self, connection: str, token: StoredToken) -> None:
        """Persist rotated OAuth tokens of ``connection`` (encrypted when a key is configured)."""
        stmt = self._insert(TokenRow.__table__).values(
            connection=connection,
            access_token=self._seal(connection, token.access_token),
            refresh_token=self._seal(connection, token.refresh_token),
            expires_at=token.expires_at,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["connection"],
            set_={k: stmt.excluded[k] for k in ("access_token", "refresh_token", "expires_at")},
        )
        async with self._session.begin() as session:
            await session.execute(stmt)

    async def get_cursor(self, name: str) -> str | None:
        """The stored position of poller ``name``, or None."""
        async with self._session() as session:
            row = await session.get(CursorRow, name)
            return row.position if row else None

    async def put_cursor(self, name: str, position: str) -> None:
        """Store the position of poller ``name``."""
        stmt = self._insert(CursorRow.__table__).values(name=name, position=position, updated_at=_now())
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"], set_={"position": stmt.excluded.position, "updated_at": stmt.excluded.updated_at}
        )
        async with self._session.begin() as session:
            await session.execute(stmt)
