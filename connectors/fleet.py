"""One connector fleet per ERP kind: every connection of that kind served by one consumer group.

``ledgerflow connector --erp xero`` runs a :class:`ConnectorFleet`: one consumer group
(``<prefix>.connector.fleet.<erp>``, :func:`fleet_group_id`) reads each canonical record once for
the whole ERP kind, whatever the number of connections. For each record:

1. its tenant (``ce_tenant``) finds the tenant's connections of this kind in the
   :class:`ConnectionDirectory` (the routing file's connections plus the state store's,
   re-read every few seconds: connections added, rotated, disabled or removed take effect in
   the running fleet); a record addressed to one connection (``ledgerflow_target_connection``:
   a parked retry, a sync-records API retry) goes to that one only;
2. each connection gets a :class:`FleetConnection`, built on its first record and cached (only
   that connection's credentials are decrypted, then); a changed connection (credentials rotated,
   options changed: its ``updated_at`` moved) is rebuilt;
3. the batch's records are split per connection and the connections run concurrently, each
   with its own :class:`~ledgerflow.connectors.runtime.ConnectorRuntime` discipline (binder,
   per-key order, results, parking, dead letters) and its own budget
   (:class:`~ledgerflow.connectors.limits.ConnectionLimits`: token bucket, concurrency cap,
   daily quota, ``X-MinLimit-Remaining`` / ``X-DayLimit-Remaining`` / ``Retry-After``);
4. the offsets are committed once every connection's records of the batch are durably resolved.

No head-of-line blocking: a connection whose budget would make a record wait longer than
``max_wait`` seconds does not hold the batch. Its record is *deferred*: written to a retry topic
with ``ledgerflow_deferred_until`` (when its budget allows again: the bucket's next turn, the
ERP's ``Retry-After``, or the daily reset) and ``ledgerflow_deferred_from`` (the topic it was
read from), addressed to the connection, **without using a retry attempt** and without a
``SyncResult`` (``ledgerflow_connection_deferred_total`` counts it). A retriable failure caused by
the budget (a 429, a spent day) is deferred the same way; other retriable failures (5xx,
timeouts) are retried in place for a short budget and then parked on the retry tiers as in
the per-connection mode. The other connections' records of the batch are booked meanwhile.

Retry topics: one consumer per tier (group ``<fleet group>.retry.<tier>``). It never sleeps in
line behind one record: records due within ``max_wait`` are handled (per connection,
concurrently); when nothing in a batch is due it sleeps until the earliest is (at most the
tier's park delay), then writes back to the same topic the records still not due. A deferred
record comes back as read from ``ledgerflow_deferred_from`` (same attempt round, same result id).

Disabled and removed connections: a disabled connection gets no new records (its tenant's
records are counted ``ledgerflow_fleet_records_total{outcome="disabled"}`` and not booked, as
with the per-connection worker stopped); a parked or deferred record addressed to a connection
that is disabled, removed, or cannot be built (invalid settings, credentials that do not
decrypt) is dead-lettered with reason ``connection-unavailable`` (replayable once it is back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from faststream.kafka import KafkaBroker
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import async_sessionmaker

from ledgerflow.connectors.base import RetriableError
from ledgerflow.connectors.limits import DAY_REASONS, ConnectionLimits, Throttled, vendor_limits
from ledgerflow.connectors.registry import connection_problem, connector_class
from ledgerflow.connectors.retry import NOT_BEFORE_HEADER, TARGET_HEADER, RetryPolicy
from ledgerflow.connectors.runtime import ConnectorRuntime
from ledgerflow.contracts import OBJECT_MODELS, SyncResult
from ledgerflow.contracts import headers as h
from ledgerflow.core import metrics
from ledgerflow.core.budgets import SharedBudget
from ledgerflow.core.connections import ConnectionCipher, ConnectionRow, ConnectionStore
from ledgerflow.core.delivery import (
    ConsumedRecord,
    DeadLetter,
    batch_subscriber,
    dead_letter_headers,
    header_map,
)
from ledgerflow.core.outbound.client import REQUEST_GUARD
from ledgerflow.core.settings import ConfigError, ConnectionConfig, Routing, Settings, TenantConfig
from ledgerflow.core.state import StateStore

__all__ = [
    "UNAVAILABLE",
    "ConnectionDirectory",
    "ConnectorFleet",
    "DirectoryEntry",
    "FleetConnection",
    "FleetRetryPolicy",
    "fleet_group_id",
    "fleet_lag_watch",
    "fleet_retry_groups",
    "register_fleet",
    "run_fleet",
]

log = logging.getLogger(__name__)

UNAVAILABLE = "connection-unavailable"
"""Dead-letter reason of a record addressed to a connection that is disabled, removed or cannot be built."""

Publish = Callable[[str, bytes | None, bytes, dict[str, str]], Awaitable[Any]]
Prepare = Callable[[str, ConnectionConfig], ConnectionConfig]


def fleet_group_id(erp: str, settings_or_topics: Any = None) -> str:
    """Consumer group of the fleet of ``erp``: ``<prefix>.connector.fleet.<erp>``."""
    from ledgerflow.contracts.topics import Topics

    topics = getattr(settings_or_topics, "topics", settings_or_topics) or Topics()
    return str(topics.group(f"connector.fleet.{erp}"))


def fleet_retry_groups(erp: str, settings: Settings, tiers: int) -> list[tuple[str, list[str]]]:
    """The fleet's retry consumers: ``(group, [retry topic of tier])`` for tiers 1..``tiers``."""
    group = fleet_group_id(erp, settings)
    return [(f"{group}.retry.{t}", [settings.topics.retry("connector", t)]) for t in range(1, tiers + 1)]


class FleetRetryPolicy(RetryPolicy):
    """The connection's :class:`RetryPolicy` with in-place retries bounded for a shared fleet.

    A budget refusal (:class:`~ledgerflow.connectors.limits.Throttled`) and a ``Retry-After`` longer
    than ``max_wait`` are not retried in place (the fleet defers the record); other retriable
    errors are retried in place for at most ``in_place_seconds`` in all (then parked), so one
    failing ERP holds its batch that long at most, not a minute.
    """

    max_wait: float = 1.0

    def hook(self, exc: Exception) -> bool | float:
        """Stamina hook: no in-place wait for a spent budget; otherwise :meth:`RetryPolicy.hook`."""
        if isinstance(exc, Throttled):
            return False
        if isinstance(exc, RetriableError) and exc.retry_after is not None and exc.retry_after > self.max_wait:
            return False
        return super().hook(exc)

    @classmethod
    def for_fleet(cls, options: dict[str, Any], *, max_wait: float, in_place_seconds: float) -> FleetRetryPolicy:
        """:meth:`RetryPolicy.from_options` with ``timeout`` capped at ``in_place_seconds``.

        Raises:
            ValueError: as :meth:`RetryPolicy.from_options`.
        """
        policy = cls.from_options(options)
        assert isinstance(policy, FleetRetryPolicy)
        policy.max_wait = max_wait
        policy.timeout = min(policy.timeout, in_place_seconds)
        policy.wait_max_retry_after = min(policy.wait_max_retry_after, max_wait)
        return policy


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """One connection of the fleet's kind: its config (credentials not decrypted), tenants, state.

    ``version`` changes when the connection changes (the stored row's ``updated_at``; ``yaml``
    for a routing-file connection): a cached connector of another version is rebuilt.
    """

    name: str
    config: ConnectionConfig
    tenants: frozenset[str]
    enabled: bool
    version: str
    stored: bool


class ConnectionDirectory:
    """The connections of one ERP kind: the routing file's plus the state store's, kept current.

    Args:
        erp: the ERP kind.
        routing: the routing file's (or demo) routing; its connections of ``erp`` are static.
        settings: the state store URL and the connections key (credentials are decrypted only by
            :meth:`config`, for a connection being built).
        state: the state store (None: no stored connections, the routing file only).
        prefer_stored: a stored connection replaces a routing connection of the same name (``ledgerflow
            up``, whose routing has the stored connections merged in already); otherwise it is ignored.
    """

    def __init__(
        self, erp: str, routing: Routing, settings: Settings, state: StateStore | None, *, prefer_stored: bool = False
    ) -> None:
        self.erp = erp
        self.prefer_stored = prefer_stored
        self._static: dict[str, DirectoryEntry] = {
            name: DirectoryEntry(name, config, frozenset(routing.tenants_for(name)), True, "yaml", False)
            for name, config in routing.connections.items()
            if config.erp == erp and not config.options.get("dedicated")
        }
        self._store = ConnectionStore(state, ConnectionCipher.from_settings(settings)) if state is not None else None
        self._sessions = async_sessionmaker(state.engine) if state is not None else None
        self._stamp: tuple[int, datetime | None] | None = None
        self.entries: dict[str, DirectoryEntry] = dict(self._static)
        self._by_tenant: dict[str, list[DirectoryEntry]] = {}
        self._index()

    def _index(self) -> None:
        by_tenant: dict[str, list[DirectoryEntry]] = defaultdict(list)
        for entry in self.entries.values():
            for tenant in entry.tenants:
                by_tenant[tenant].append(entry)
        self._by_tenant = dict(by_tenant)
        enabled = sum(1 for e in self.entries.values() if e.enabled)
        metrics.FLEET_CONNECTIONS.labels(self.erp, "enabled").set(enabled)
        metrics.FLEET_CONNECTIONS.labels(self.erp, "disabled").set(len(self.entries) - enabled)

    def for_tenant(self, tenant: str) -> list[DirectoryEntry]:
        """The connections of this kind that ``tenant`` is routed to (enabled or not)."""
        return self._by_tenant.get(tenant, [])

    def get(self, name: str) -> DirectoryEntry | None:
        """Connection ``name`` if it is of this kind (enabled or not)."""
        return self.entries.get(name)

    async def _stamp_now(self) -> tuple[int, datetime | None] | None:
        """Count and newest ``updated_at`` of the stored connections of this kind (one cheap query)."""
        if self._sessions is None:
            return None
        query = select(func.count(), func.max(ConnectionRow.updated_at)).where(ConnectionRow.erp == self.erp)
        try:
            async with self._sessions() as session:
                row = (await session.execute(query)).one()
        except (OperationalError, ProgrammingError) as exc:
            if "erp_connections" in str(exc.orig):
                return (0, None)  # no connection ever stored
            raise
        return (int(row[0]), row[1])

    async def refresh(self) -> bool:
        """Re-read the stored connections of this kind if any changed; True when they did.

        Change detection is one query (count and newest ``updated_at``); the rows are read, without
        decrypting anything, only when it moved. A stored connection with the name of a routing-file
        connection is ignored (logged), as :func:`~ledgerflow.core.connections.merge_routing` refuses it.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the state store cannot be read (the caller retries).
        """
        stamp = await self._stamp_now()
        if stamp is None or stamp == self._stamp:
            return False
        assert self._store is not None
        rows = [
            s
            for s in await self._store.all(decrypt=())
            if s.config.erp == self.erp and not s.config.options.get("dedicated")
        ]
        entries = dict(self._static)
        for stored in rows:
            if stored.name in self._static and not self.prefer_stored:
                log.error("stored connection %s has the name of a routing-file connection: ignored", stored.name)
                continue
            version = stored.updated_at.isoformat() if stored.updated_at else "stored"
            entries[stored.name] = DirectoryEntry(
                stored.name, stored.config, frozenset(stored.tenants), stored.enabled, version, True
            )
        self._stamp = stamp
        self.entries = entries
        self._index()
        return True

    async def config(self, entry: DirectoryEntry) -> ConnectionConfig:
        """``entry``'s config with its credentials (decrypted now for a stored connection).

        Raises:
            ConfigError: the connection is gone from the store, or its credentials do not decrypt.
        """
        if not entry.stored:
            return entry.config
        assert self._store is not None
        stored = await self._store.get(entry.name)
        if stored is None:
            raise ConfigError(f"stored connection {entry.name!r} was removed")
        return stored.config


@dataclass(slots=True)
class RestoredRecord:
    """A deferred record as it was read before it was deferred (topic ``ledgerflow_deferred_from``).

    Its partition is ``-1 - <retry partition>`` so it is never taken for a record of the topic it
    names (the runtimes remember handled records by topic, partition and offset).
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    timestamp: int


def _due(headers: dict[str, str]) -> float:
    """Epoch seconds from which a record read from a retry topic may be handled."""
    until = headers.get(h.DEFERRED_UNTIL) or headers.get(NOT_BEFORE_HEADER) or "0"
    try:
        return float(until)
    except ValueError:
        return 0.0


def _restore(record: ConsumedRecord, headers: dict[str, str]) -> ConsumedRecord:
    """The record as read before deferral, or ``record`` itself when it was parked, not deferred."""
    origin = headers.get(h.DEFERRED_FROM)
    if origin is None:
        return record
    kept = [(k, v.encode()) for k, v in headers.items() if k not in (h.DEFERRED_FROM, h.DEFERRED_UNTIL)]
    return RestoredRecord(
        origin, -1 - record.partition, record.offset, record.key, record.value, kept, record.timestamp
    )


class FleetConnection(ConnectorRuntime):
    """A :class:`~ledgerflow.connectors.runtime.ConnectorRuntime` for one connection inside a fleet.

    Every ERP request it makes goes through its :class:`~ledgerflow.connectors.limits.ConnectionLimits`
    (the request guard); a record whose connection must wait longer than ``limits.max_wait`` is
    deferred (see the module docstring) instead of booked or waited for.
    """

    def __init__(
        self,
        fleet: ConnectorFleet,
        entry: DirectoryEntry,
        runtime_args: tuple[Any, StateStore, Routing, Publish, Settings],
        limits: ConnectionLimits,
        retry: FleetRetryPolicy,
    ) -> None:
        connector, state, routing, publish, settings = runtime_args
        super().__init__(connector, state, routing, publish, settings, retry)
        self.fleet = fleet
        self.entry = entry
        self.limits = limits
        self.defer = self._defer_failure

    async def handle(self, record: ConsumedRecord, binder: Any = None) -> None:
        """Book ``record`` under this connection's budget, or defer it when the budget is spent.

        Raises:
            DeadLetter, Exception: as :meth:`ConnectorRuntime.handle`.
        """
        now = time.time()
        wait, reason = self.limits.blocked(now)
        if not isinstance(record, RestoredRecord) and wait <= self.limits.max_wait:
            # A new record queues behind those deferred for rate (a deferred one comes back at its turn).
            queued = self.limits.queued(now)
            if queued > self.limits.max_wait:
                wait, reason = queued, "local_rate"
        if wait > self.limits.max_wait:
            await self.fleet.defer(self.connection, record, header_map(record), self._until(now, wait, reason), reason)
            return
        token = REQUEST_GUARD.set(self.limits)
        try:
            await super().handle(record, binder)
        finally:
            REQUEST_GUARD.reset(token)

    async def _defer_failure(self, record: ConsumedRecord, headers: dict[str, str], result: SyncResult) -> bool:
        """Defer a retriable failure caused by the budget (a 429, a spent day); False for any other."""
        now = time.time()
        wait, reason = self.limits.blocked(now)
        if wait <= self.limits.max_wait:
            return False
        await self.fleet.defer(self.connection, record, headers, self._until(now, wait, reason), reason)
        return True

    def _until(self, now: float, wait: float, reason: str) -> float:
        """When a record deferred now comes back: the daily reset, or its own turn of the bucket."""
        if reason in DAY_REASONS:
            return now + wait
        return self.limits.slot(wait, now)


class ConnectorFleet:
    """Serves every connection of one ERP kind from shared consumers (see the module docstring).

    Args:
        erp: the ERP kind.
        directory: its connections (kept current by :meth:`reload_forever`).
        state: binder and reference cache.
        http: the shared outbound HTTP client.
        publish: ``publish(topic, key, value, headers)`` returning after the broker's ack.
        settings: topic prefix; ``shared_budgets``: every connection's budget is also capped by
            the state store's shared counters (:class:`~ledgerflow.core.budgets.SharedBudget`).
        prepare: applied to a connection's config before its connector is built (the stack points
            connections without a ``base_url`` at its sandboxes).
        max_wait: seconds a record may wait for its connection's budget before it is deferred.
        in_place_seconds: in-place retry budget of a record (then it is parked on a retry tier).
        park_delays: the retry tiers' delays, seconds (connections' ``retry.park_delays`` may differ).
        max_built: connectors kept built at most; the least recently used one is closed beyond it
            (rebuilt on its next record, its OAuth tokens are in the state store; its budget is kept).
            A connector costs ~70 KB, a worker ~120 MiB before any: 256 keeps a worker near 150 MiB.
    """

    def __init__(
        self,
        erp: str,
        directory: ConnectionDirectory,
        state: StateStore,
        http: httpx.AsyncClient,
        publish: Publish,
        settings: Settings,
        *,
        prepare: Prepare | None = None,
        max_wait: float = 1.0,
        in_place_seconds: float = 5.0,
        park_delays: tuple[float, ...] | None = None,
        max_built: int = 256,
    ) -> None:
        self.erp = erp
        self.max_built = max(1, max_built)
        self.directory = directory
        self.state = state
        self.http = http
        self.publish = publish
        self.settings = settings
        self.topics = settings.topics
        self.prepare = prepare
        self.max_wait = max_wait
        self.in_place_seconds = in_place_seconds
        self.park_delays = park_delays if park_delays is not None else RetryPolicy().park_delays
        self.connections: OrderedDict[str, FleetConnection] = OrderedDict()
        self._limits: dict[str, ConnectionLimits] = {}
        self._shared = SharedBudget(state.engine) if settings.shared_budgets else None
        self._retired: list[Any] = []
        self._closing: list[Any] = []
        self._building: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._stopping = asyncio.Event()
        self.consumed = 0
        """Canonical records consumed (each once per ERP kind, whatever the number of connections)."""

    # ------------------------------------------------------------------ connections

    async def connection(self, name: str) -> FleetConnection | None:
        """The runtime of enabled connection ``name``, built on first use (None: unknown or disabled).

        A runtime built from an older version of the connection is replaced (its budget is kept).

        Raises:
            ConfigError: the connection's settings are invalid or its credentials do not decrypt.
            ImportError: the ERP's connector is not installed.
        """
        entry = self.directory.get(name)
        if entry is None or not entry.enabled:
            return None
        current = self.connections.get(name)
        if current is not None and current.entry.version == entry.version:
            self.connections.move_to_end(name)
            return current
        async with self._building[name]:
            current = self.connections.get(name)
            if current is not None and current.entry.version == entry.version:
                return current
            built = await self._build(entry)
            if current is not None:
                self._retired.append(current.connector)
                log.info("%s: connection changed (%s): connector rebuilt", name, entry.version)
            self.connections[name] = built
            self.connections.move_to_end(name)
            while len(self.connections) > self.max_built:
                _, evicted = self.connections.popitem(last=False)
                self._retired.append(evicted.connector)  # closed one reload interval later at least
            metrics.FLEET_CONNECTIONS.labels(self.erp, "built").set(len(self.connections))
            return built

    async def _build(self, entry: DirectoryEntry) -> FleetConnection:
        config = await self.directory.config(entry)
        if self.prepare is not None:
            config = self.prepare(entry.name, config)
        problem = connection_problem(entry.name, config)
        if problem:
            raise ConfigError(problem)
        connector = connector_class(config.erp)(entry.name, config, self.http, self.state)
        routing = Routing(
            tenants={t: TenantConfig(connections=[entry.name]) for t in entry.tenants},
            connections={entry.name: config},
        )
        limits = vendor_limits(config.erp, config.options)
        budget = self._limits.get(entry.name)
        if budget is None or budget.limits != limits:
            budget = ConnectionLimits(entry.name, config.erp, limits, max_wait=self.max_wait, shared=self._shared)
            self._limits[entry.name] = budget
        retry = FleetRetryPolicy.for_fleet(
            config.options, max_wait=self.max_wait, in_place_seconds=self.in_place_seconds
        )
        runtime = FleetConnection(
            self, entry, (connector, self.state, routing, self.publish, self.settings), budget, retry
        )
        await runtime.migrate_legacy_keys()
        return runtime

    def limits(self, name: str) -> ConnectionLimits | None:
        """The budget of connection ``name`` (None until its first record)."""
        return self._limits.get(name)

    async def reload(self) -> bool:
        """Re-read the stored connections; drop the runtimes of connections disabled or removed.

        Connectors replaced, evicted or dropped before the previous reload are closed now (their
        in-flight records had at least a reload interval to finish). Returns whether anything changed.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the state store cannot be read.
        """
        retired, self._closing, self._retired = self._closing, self._retired, []
        for connector in retired:
            with contextlib.suppress(Exception):
                await connector.aclose()
        changed = await self.directory.refresh()
        if changed:
            for name in list(self.connections):
                entry = self.directory.get(name)
                if entry is None or not entry.enabled:
                    self._retired.append(self.connections.pop(name).connector)
                    log.info("%s: connection disabled or removed: no longer served", name)
            metrics.FLEET_CONNECTIONS.labels(self.erp, "built").set(len(self.connections))
        return changed

    async def reload_forever(self, interval: float) -> None:
        """:meth:`reload` every ``interval`` seconds until cancelled (a failed read is logged and retried)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload()
            except Exception:
                log.exception("%s fleet: reading the stored connections failed; retrying", self.erp)

    def stop(self) -> None:
        """Wake the retry consumers sleeping for records not yet due (call before the broker stops)."""
        self._stopping.set()

    async def aclose(self) -> None:
        """Close every connector built (the shared HTTP client stays the caller's)."""
        connectors = [c.connector for c in self.connections.values()] + self._retired + self._closing
        self._closing = []
        self.connections.clear()
        self._retired = []
        for connector in connectors:
            with contextlib.suppress(Exception):
                await connector.aclose()

    # ------------------------------------------------------------------ deferral

    def _deferral_topic(self, wait: float) -> str:
        """The retry tier whose delay is the largest not above ``wait`` (tier 1 at least)."""
        tier = 1
        for index, delay in enumerate(self.park_delays, start=1):
            if delay <= wait:
                tier = index
        return self.topics.retry("connector", tier)

    async def defer(
        self, connection: str, record: ConsumedRecord, headers: dict[str, str], until: float, why: str
    ) -> None:
        """Park ``record`` for ``connection`` until ``until`` (epoch seconds) without using a retry attempt.

        Raises:
            Exception: the write was refused (the batch is redelivered).
        """
        deferred = dict(headers)
        deferred.pop(h.DEFERRED_FROM, None)
        deferred.update(
            {
                TARGET_HEADER: connection,
                h.DEFERRED_UNTIL: f"{until:.3f}",
                h.DEFERRED_FROM: record.topic,
            }
        )
        await self.publish(self._deferral_topic(until - time.time()), record.key, record.value or b"", deferred)
        reason = "day" if why in DAY_REASONS else "rate"
        metrics.CONNECTION_DEFERRED.labels(self.erp, connection, reason).inc()

    # ------------------------------------------------------------------ batches

    async def _unavailable(self, record: ConsumedRecord, name: str, why: str) -> None:
        error = DeadLetter(UNAVAILABLE, f"connection {name}: {why}")
        dl_headers = dead_letter_headers(record, "connector", error)
        dl_headers[TARGET_HEADER] = name
        await self.publish(self.topics.dlq("connector"), record.key, record.value or b"", dl_headers)
        metrics.DLQ_MESSAGES.labels("connector", UNAVAILABLE).inc()

    async def _run(self, routes: dict[str, list[ConsumedRecord]]) -> None:
        """Handle each connection's records, the connections concurrently; raise the first failure after all ran."""

        async def one(name: str, records: list[ConsumedRecord]) -> None:
            try:
                runtime = await self.connection(name)
            except (ConfigError, ImportError, ValueError) as exc:
                log.error("%s: cannot build the connector: %s", name, exc)
                for record in records:
                    await self._unavailable(record, name, f"cannot be built: {exc}")
                return
            if runtime is None:
                for record in records:
                    await self._unavailable(record, name, "disabled or removed")
                return
            await runtime.handle_batch(records, concurrency=runtime.limits.concurrency)

        results = await asyncio.gather(*(one(n, r) for n, r in routes.items()), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def handle_batch(self, records: Iterable[ConsumedRecord]) -> None:
        """Route a batch of canonical records to their tenants' connections and book them.

        Raises:
            Exception: a result, deferral or dead letter could not be written (the batch is redelivered).
        """
        routes: dict[str, list[ConsumedRecord]] = defaultdict(list)
        for record in records:
            self.consumed += 1
            headers = header_map(record)
            target = headers.get(TARGET_HEADER)
            tenant = headers.get(h.CE_TENANT)
            if target is not None:
                entry = self.directory.get(target)
                entries = [entry] if entry is not None else []
            elif tenant is not None:
                entries = self.directory.for_tenant(tenant)
            else:
                # The runtime dead-letters it (missing attributes): give it to any connection.
                entries = [e for e in self.directory.entries.values() if e.enabled][:1]
            if not entries:
                metrics.FLEET_RECORDS.labels(self.erp, "no_connection").inc()
                continue
            for entry in entries:
                if entry.enabled:
                    routes[entry.name].append(record)
                    metrics.FLEET_RECORDS.labels(self.erp, "routed").inc()
                elif target is not None:
                    routes[entry.name].append(record)  # dead-lettered as unavailable
                else:
                    metrics.FLEET_RECORDS.labels(self.erp, "disabled").inc()
        await self._run(routes)

    async def handle_retry_batch(self, records: Sequence[ConsumedRecord], *, hold: float) -> None:
        """Handle the due records of a retry-topic batch; put back those not due (see the module docstring).

        ``hold``: the longest this call sleeps for the earliest record when none is due.

        Raises:
            Exception: a write was refused (the batch is redelivered).
        """
        pending = []
        for record in records:
            headers = header_map(record)
            target = headers.get(TARGET_HEADER)
            # Other ERP kinds' records (and dedicated connections') are their own consumers' business.
            if target is not None and self.directory.get(target) is not None:
                pending.append((record, headers))
        now = time.time()
        due = [(r, hd) for r, hd in pending if _due(hd) <= now + self.max_wait]
        later = [(r, hd) for r, hd in pending if _due(hd) > now + self.max_wait]
        if later and not due:
            earliest = min(_due(hd) for _, hd in later)
            with contextlib.suppress(TimeoutError):
                # Stopping ends the wait: the records not due are written back, then the consumer stops.
                await asyncio.wait_for(self._stopping.wait(), max(0.0, min(earliest - now, hold)))
            now = time.time()
            due = [(r, hd) for r, hd in later if _due(hd) <= now + self.max_wait]
            later = [(r, hd) for r, hd in later if _due(hd) > now + self.max_wait]
        routes: dict[str, list[ConsumedRecord]] = defaultdict(list)
        for record, headers in due:
            routes[headers[TARGET_HEADER]].append(_restore(record, headers))
        await self._run(routes)
        # Written back only once the due ones are resolved: a redelivered batch does not write them twice.
        for record, headers in later:
            await self.publish(record.topic, record.key, record.value or b"", headers)
            metrics.CONNECTION_DEFERRED.labels(self.erp, headers[TARGET_HEADER], "requeued").inc()


def register_fleet(broker: KafkaBroker, fleet: ConnectorFleet, *, max_records: int = 200) -> None:
    """Subscribe ``fleet`` to every canonical topic (one group) and to each retry tier (a group each).

    Args:
        broker: a not-yet-started FastStream broker.
        fleet: the ERP kind's fleet.
        max_records: largest batch fetched at once.
    """
    topics = [fleet.topics.canonical(obj) for obj in OBJECT_MODELS]
    fetch_wait = fleet.settings.kafka_fetch_max_wait_ms

    @batch_subscriber(
        broker,
        *topics,
        group_id=fleet_group_id(fleet.erp, fleet.topics),
        max_records=max_records,
        fetch_max_wait_ms=fetch_wait,
    )
    async def on_canonical(records: Any) -> None:
        await fleet.handle_batch(records)

    for group, retry_topics in fleet_retry_groups(fleet.erp, fleet.settings, len(fleet.park_delays)):
        hold = max(fleet.max_wait, fleet.park_delays[int(group.rsplit(".", 1)[1]) - 1])

        def on_retry_for(hold: float) -> Callable[[Any], Awaitable[None]]:
            async def on_retry(records: Any) -> None:
                await fleet.handle_retry_batch(records, hold=hold)

            return on_retry

        batch_subscriber(
            broker,
            *retry_topics,
            group_id=group,
            max_records=max_records,
            fetch_max_wait_ms=fetch_wait,
            max_poll_interval_ms=600_000,
        )(on_retry_for(hold))


@dataclass
class RunningFleet:
    """A started fleet: its broker, the fleet and its consumer groups with their topics."""

    broker: KafkaBroker
    fleet: ConnectorFleet
    watched: list[tuple[str, list[str]]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def _reloading(fleet: ConnectorFleet, interval: float) -> AsyncIterator[None]:
    task = asyncio.create_task(fleet.reload_forever(interval), name=f"fleet-reload-{fleet.erp}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _publisher(broker: KafkaBroker) -> Publish:
    async def publish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        await broker.publish(value, topic=topic, key=key, headers=headers)

    return publish


@contextlib.asynccontextmanager
async def run_fleet(
    settings: Settings,
    routing: Routing,
    erp: str,
    bootstrap_servers: str,
    *,
    embedded: bool,
    http: httpx.AsyncClient | None = None,
    state: StateStore | None = None,
    prepare: Prepare | None = None,
    prefer_stored: bool = False,
    reload_seconds: float = 5.0,
    max_wait: float = 1.0,
    in_place_seconds: float = 5.0,
    max_built: int = 256,
    max_records: int = 200,
    health_port: int | None = None,
    health_host: str = "127.0.0.1",
    report_lag: bool = True,
) -> AsyncIterator[RunningFleet]:
    """Run the fleet of ERP kind ``erp`` until the block exits (``ledgerflow connector --erp``).

    Args:
        settings: topic prefix, Kafka client, state store and connections key.
        routing: the routing file's routing (stored connections are read by the fleet itself).
        erp: the ERP kind served.
        bootstrap_servers: Kafka bootstrap servers.
        embedded: the broker is the embedded Tansu.
        http: the outbound HTTP client (one is made, and closed, when None).
        state: the state store (one is opened, created and closed when None).
        prepare: applied to each connection's config before its connector is built.
        prefer_stored: ``routing`` has the stored connections merged in already (``ledgerflow up``):
            the stored rows replace them (see :class:`ConnectionDirectory`).
        reload_seconds: how often the stored connections are checked for changes.
        max_wait: seconds a record may wait for its connection's budget before it is deferred.
        in_place_seconds: in-place retry budget of one record.
        max_built: connectors kept built at most (least recently used closed beyond it).
        max_records: largest batch fetched at once.
        health_port: serve ``/healthz``, ``/readyz`` and ``/metrics`` there; None: no server.
        health_host: interface of that server.
        report_lag: report the consumer lag of the fleet's groups.

    Raises:
        KeyError: ``erp`` is not a registered ERP kind.
        aiokafka.errors.KafkaError: the broker cannot be reached.
        OSError: the health port cannot be bound.
    """
    from ledgerflow.connectors.registry import ERPS
    from ledgerflow.core.asgi import serve
    from ledgerflow.core.kafka import broker_from_settings, kafka_client_options
    from ledgerflow.core.lag import lag_reporter
    from ledgerflow.core.outbound.transport import worker_http_client
    from ledgerflow.core.service import broker_readiness, health_app

    if erp not in ERPS:
        raise KeyError(f"unknown ERP kind {erp!r} (known: {', '.join(ERPS)})")
    async with contextlib.AsyncExitStack() as stack:
        if state is None:
            state = StateStore.from_settings(settings)
            await state.create_all()
            stack.push_async_callback(state.close)
        if http is None:
            http = await stack.enter_async_context(worker_http_client(settings.http_transport))
        broker = broker_from_settings(settings, bootstrap_servers, embedded=embedded)
        directory = ConnectionDirectory(erp, routing, settings, state, prefer_stored=prefer_stored)
        await directory.refresh()
        fleet = ConnectorFleet(
            erp,
            directory,
            state,
            http,
            _publisher(broker),
            settings,
            prepare=prepare,
            max_wait=max_wait,
            in_place_seconds=in_place_seconds,
            max_built=max_built,
        )
        stack.push_async_callback(fleet.aclose)
        register_fleet(broker, fleet, max_records=max_records)
        await broker.start()
        stack.push_async_callback(broker.stop)
        stack.callback(fleet.stop)
        await stack.enter_async_context(_reloading(fleet, reload_seconds))
        watched = fleet_lag_watch(erp, settings, len(fleet.park_delays))
        if health_port is not None:
            await stack.enter_async_context(
                serve(health_app(broker_readiness(broker)), host=health_host, port=health_port)
            )
        if report_lag:
            await stack.enter_async_context(
                lag_reporter(bootstrap_servers, watched, client_options=kafka_client_options(settings))
            )
        yield RunningFleet(broker, fleet, watched)


def fleet_lag_watch(erp: str, settings: Settings, tiers: int) -> list[tuple[str, list[str]]]:
    """The fleet's consumer groups and their topics: the canonical topics, and one group per retry tier."""
    canonical = [settings.topics.canonical(o) for o in OBJECT_MODELS]
    return [(fleet_group_id(erp, settings), canonical), *fleet_retry_groups(erp, settings, tiers)]
