"""The reference cache and the operators' mapping tables (state store), shared by readers, connectors, CLI and API.

**Reference cache** (tables ``reference_cache`` and ``reference_cache_status``): every reference
record an ERP reader (:class:`ledgerflow.connectors.reference.ReferenceSync`) read from one
connection — vendors, customers, GL accounts, tax rates, tracking, projects — one row per
(connection, kind, ERP entity, ERP id) with its ``code``, ``name`` and ``active`` flag. The reader
writes a page's rows in the same transaction as its cursor, once the broker acknowledged the page.
A source's status row says when a *full* pass over it last finished (``complete_at``): only then
does the cache know every record of that source, and only then may an absent id be called unknown
(a connection never synced, or whose first pass is still running, is never judged by its cache).

Xero tracking categories carry their options inside: each option is also cached, as entity
``TrackingOption`` (kind ``tracking``, ``parent_id`` = its ``TrackingCategoryID``).

**Mapping tables** (table ``reference_mappings``): per tenant, connection and reference kind, a
source code → ERP id, edited with ``ledgerflow mappings`` and ``/v1/mappings``. The connector
runtime merges them with the connection's ``options.reference_map``; a stored mapping wins over
the YAML one for the same key (the stored table is the operator's live edit, the YAML the
deployment's default). Each value is validated against the cache when it is set
(:meth:`MappingStore.validate`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import delete, or_, select

from ledgerflow.contracts.reference import ReferenceRecord
from ledgerflow.core.state import CursorRow, MappingRow, ReferenceCacheRow, ReferenceStatusRow, StateStore

__all__ = [
    "KIND_LABELS",
    "MAPPING_CACHE_KINDS",
    "MAPPING_KINDS",
    "CacheStatus",
    "CachedReference",
    "MappingKind",
    "MappingStore",
    "MappingVerdict",
    "ReferenceCache",
    "StoredMapping",
    "cache_rows",
]

MappingKind = Literal[
    "vendor",
    "customer",
    "party",
    "gl_account",
    "cost_code",
    "cost_type",
    "project",
    "business_unit",
    "tax_rate",
    "item",
    "bank_account",
    "ap_account",
]
"""A kind a mapping (or an ``options.reference_map``) may name: a canonical reference field name."""

MAPPING_KINDS: tuple[str, ...] = get_args(MappingKind)
"""Kinds a mapping may name: the canonical reference fields (``connectors.references.REFERENCE_KINDS``)."""

MAPPING_CACHE_KINDS: dict[str, tuple[str, ...]] = {
    "vendor": ("vendor",),
    "customer": ("customer",),
    "party": ("vendor", "customer"),
    "gl_account": ("gl_account",),
    "ap_account": ("gl_account",),
    "bank_account": ("gl_account",),
    "tax_rate": ("tax_rate",),
    "cost_code": ("tracking",),
    "cost_type": ("tracking",),
    "business_unit": ("tracking",),
    "project": ("project", "customer", "tracking"),
    "item": (),
}
"""Mapping kind → the cached reference kinds its ERP id may be found in (QuickBooks projects are
customers, cost codes classes; Xero cost codes, projects and business units are tracking options).
Items are not read by any reader yet: their mappings cannot be validated."""

KIND_LABELS: dict[str, tuple[str, str]] = {
    "gl_account": ("GL account", "chart of accounts"),
    "tax_rate": ("tax rate", "tax rates"),
    "vendor": ("vendor", "vendors"),
    "customer": ("customer", "customers"),
    "tracking": ("tracking value", "tracking categories"),
    "project": ("project", "projects"),
}
"""Cached kind → (what one record is called, what the ERP's list of them is called), for messages."""

_ID_ONLY_ERPS = frozenset({"quickbooks", "netsuite", "coupa"})
"""ERPs whose connectors send a reference's ``accounting_id`` as the record's internal id (not a code)."""

_TRACKING_OPTION = "TrackingOption"
_INACTIVE = frozenset({"ARCHIVED", "DELETED"})


@dataclass(frozen=True, slots=True)
class CachedReference:
    """One cached reference record (a row of ``reference_cache``)."""

    connection: str
    kind: str
    entity: str
    erp_id: str
    code: str | None
    name: str
    active: bool
    parent_id: str | None
    synced_at: datetime

    @classmethod
    def of(cls, row: ReferenceCacheRow) -> CachedReference:
        """From a stored row."""
        return cls(
            row.connection,
            row.kind,
            row.entity,
            row.erp_id,
            row.code,
            row.name,
            row.active,
            row.parent_id,
            _aware(row.synced_at),
        )


@dataclass(frozen=True, slots=True)
class CacheStatus:
    """Whether one source (kind, ERP entity) of a connection is fully cached, and when it was last synced."""

    kind: str
    entity: str
    complete_at: datetime | None
    synced_at: datetime
    erp: str | None = None

    @property
    def complete(self) -> bool:
        """A full pass over the source finished: an id absent from the cache is absent from the ERP."""
        return self.complete_at is not None


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _now() -> datetime:
    return datetime.now(UTC)


def cache_rows(record: ReferenceRecord, synced_at: datetime) -> list[dict[str, Any]]:
    """The ``reference_cache`` rows of one reference record: itself, and a Xero category's options.

    Xero ``TrackingCategory`` records hold their ``Options`` (``TrackingOptionID``, ``Name``,
    ``Status``); each becomes a ``TrackingOption`` row whose ``parent_id`` is the category's id.
    """
    base = {"connection": record.connection, "kind": record.kind, "synced_at": synced_at}
    rows = [
        {
            **base,
            "entity": record.entity,
            "erp_id": record.erp_id,
            "code": record.code,
            "name": record.name,
            "active": record.active,
            "parent_id": record.parent_id,
            "updated_at": record.updated_at,
        }
    ]
    if record.erp == "xero" and record.entity == "TrackingCategory":
        for option in record.erp_record.get("Options") or []:
            if not isinstance(option, Mapping) or not option.get("TrackingOptionID"):
                continue
            rows.append(
                {
                    **base,
                    "entity": _TRACKING_OPTION,
                    "erp_id": str(option["TrackingOptionID"]),
                    "code": None,
                    "name": str(option.get("Name") or ""),
                    "active": record.active and str(option.get("Status") or "ACTIVE") not in _INACTIVE,
                    "parent_id": record.erp_id,
                    "updated_at": None,
                }
            )
    return rows


class ReferenceCache:
    """Reads and writes the reference cache in the state store (see the module docstring)."""

    def __init__(self, state: StateStore) -> None:
        self.state = state

    async def write(
        self,
        connection: str,
        kind: str,
        entity: str,
        records: Sequence[ReferenceRecord],
        *,
        cursor: tuple[str, str] | None = None,
        complete: bool = False,
        replace: bool = False,
        erp: str | None = None,
    ) -> None:
        """Store ``records`` of one source, its reader cursor and its status, in one transaction.

        Args:
            connection: the ERP connection read.
            kind: the reference kind of the source (``gl_account``…).
            entity: the ERP entity of the source (``Account``…).
            records: the records read (upserted by ERP id).
            cursor: ``(name, position)`` of the reader's cursor, written with the rows.
            complete: a full pass over the source ended with this write: ``complete_at`` is set.
                Otherwise the status keeps its ``complete_at`` and only ``synced_at`` moves.
            replace: ``records`` is the whole source (a snapshot read): rows not in it are deleted.
            erp: the connection's ERP kind (default: the records'), kept with the status.
        """
        erp = erp or next((record.erp for record in records), None)
        now = _now()
        rows = [row for record in records for row in cache_rows(record, now)]
        async with self.state.session() as session, session.begin():
            if replace:
                entities = {entity} | {row["entity"] for row in rows}
                if kind == "tracking" and entity == "TrackingCategory":
                    entities.add(_TRACKING_OPTION)
                await session.execute(
                    delete(ReferenceCacheRow).where(
                        ReferenceCacheRow.connection == connection,
                        ReferenceCacheRow.kind == kind,
                        ReferenceCacheRow.entity.in_(sorted(entities)),
                    )
                )
            if rows:
                stmt = self.state.upsert(ReferenceCacheRow.__table__)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["connection", "kind", "entity", "erp_id"],
                    set_={
                        k: stmt.excluded[k] for k in ("code", "name", "active", "parent_id", "updated_at", "synced_at")
                    },
                )
                await session.execute(stmt, rows)
            if cursor is not None:
                name, position = cursor
                cur = self.state.upsert(CursorRow.__table__).values(name=name, position=position, updated_at=now)
                cur = cur.on_conflict_do_update(
                    index_elements=["name"], set_={"position": cur.excluded.position, "updated_at": now}
                )
                await session.execute(cur)
            status = self.state.upsert(ReferenceStatusRow.__table__).values(
                connection=connection,
                kind=kind,
                entity=entity,
                erp=erp,
                complete_at=now if complete else None,
                synced_at=now,
            )
            update: dict[str, Any] = {"synced_at": now}
            if erp:
                update["erp"] = erp
            if complete:
                update["complete_at"] = now
            status = status.on_conflict_do_update(index_elements=["connection", "kind", "entity"], set_=update)
            await session.execute(status)

    async def status(self, connection: str) -> dict[tuple[str, str], CacheStatus]:
        """Every source of ``connection`` the cache has seen: (kind, entity) → its status."""
        async with self.state.session() as session:
            rows = await session.scalars(select(ReferenceStatusRow).where(ReferenceStatusRow.connection == connection))
            return {
                (row.kind, row.entity): CacheStatus(
                    row.kind,
                    row.entity,
                    _aware(row.complete_at) if row.complete_at else None,
                    _aware(row.synced_at),
                    row.erp,
                )
                for row in rows
            }

    async def is_complete(self, connection: str, kind: str, entity: str) -> bool:
        """Whether a full pass over (``kind``, ``entity``) of ``connection`` finished."""
        async with self.state.session() as session:
            row = await session.get(ReferenceStatusRow, (connection, kind, entity))
            return row is not None and row.complete_at is not None

    async def find(
        self,
        connection: str,
        kinds: Collection[str] | None,
        *,
        ids: Collection[str] = (),
        codes: Collection[str] = (),
        names: Collection[str] = (),
    ) -> list[CachedReference]:
        """Cached records of ``kinds`` (None: any kind) on ``connection`` with an id, code or name given.

        ``ids``, ``codes``, ``names``: the values of ``erp_id``, ``code`` and ``name`` to match.

        One query, whatever the number of values (the lists are short: one record's references).
        """
        clauses: list[Any] = []
        if ids:
            clauses.append(ReferenceCacheRow.erp_id.in_(sorted(set(ids))))
        if codes:
            clauses.append(ReferenceCacheRow.code.in_(sorted(set(codes))))
        if names:
            clauses.append(ReferenceCacheRow.name.in_(sorted(set(names))))
        if not clauses or (kinds is not None and not kinds):
            return []
        query = select(ReferenceCacheRow).where(ReferenceCacheRow.connection == connection, or_(*clauses))
        if kinds is not None:
            query = query.where(ReferenceCacheRow.kind.in_(sorted(set(kinds))))
        async with self.state.session() as session:
            rows = await session.scalars(query)
            return [CachedReference.of(row) for row in rows]

    async def count(self, connection: str, kind: str | None = None) -> int:
        """Cached rows of ``connection`` (of ``kind``): tests and diagnostics."""
        query = select(ReferenceCacheRow.erp_id).where(ReferenceCacheRow.connection == connection)
        if kind is not None:
            query = query.where(ReferenceCacheRow.kind == kind)
        async with self.state.session() as session:
            return len((await session.execute(query)).all())


@dataclass(frozen=True, slots=True)
class StoredMapping:
    """One stored mapping: (tenant, connection, kind, source code) → ERP id."""

    tenant: str
    connection: str
    kind: str
    source_code: str
    erp_id: str
    updated_at: datetime
    updated_by: str | None

    @classmethod
    def of(cls, row: MappingRow) -> StoredMapping:
        """From a stored row."""
        return cls(
            row.tenant,
            row.connection,
            row.kind,
            row.source_code,
            row.erp_id,
            _aware(row.updated_at),
            row.updated_by,
        )


@dataclass(frozen=True, slots=True)
class MappingVerdict:
    """What the cache says about an ERP id a mapping points at.

    ``accepted``: it may be stored (with ``warning`` when it was not or could not be validated);
    otherwise ``reason`` says why not.
    """

    accepted: bool
    reason: str | None = None
    warning: str | None = None


class MappingStore:
    """The mapping tables (see the module docstring)."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        self.cache = ReferenceCache(state)

    async def validate(self, connection: str, kind: str, erp_id: str, *, force: bool = False) -> MappingVerdict:
        """Whether ``erp_id`` may be stored as a ``kind`` mapping of ``connection``.

        Accepted: the id (or code) is an active record of a fully cached kind. Refused: it is
        absent from a complete cache, or inactive there, or no kind it could be in is fully
        cached (never synced). ``force`` accepts the last three with a ``warning`` instead.

        Raises:
            ValueError: ``kind`` is not one of :data:`MAPPING_KINDS`.
        """
        if kind not in MAPPING_KINDS:
            raise ValueError(f"unknown mapping kind {kind!r} (one of {', '.join(MAPPING_KINDS)})")
        kinds = MAPPING_CACHE_KINDS[kind]
        statuses = await self.cache.status(connection)
        complete = [s for s in statuses.values() if s.kind in kinds and s.complete]
        label = KIND_LABELS[kinds[0]][0] if kinds else kind.replace("_", " ")
        if not complete:
            why = (
                f"{connection} has no complete reference cache of {' or '.join(kinds)} "
                f"(run `ledgerflow sync-reference --connection {connection}`), so {label} {erp_id} cannot be validated"
                if kinds
                else f"no reader reads {label}s, so {label} {erp_id} cannot be validated"
            )
            if force:
                return MappingVerdict(True, warning=f"{why}; stored unvalidated (force)")
            return MappingVerdict(False, reason=f"{why}; force stores it unvalidated")
        cached_kinds = {s.kind for s in complete}
        # A mapping becomes the reference's accounting_id: QuickBooks, NetSuite and Coupa send it as
        # the record's internal id, Xero and SAP as its code (or id), so it must match that.
        by_id = bool(complete) and all(s.erp in _ID_ONLY_ERPS for s in complete)
        found = await self.cache.find(connection, cached_kinds, ids=[erp_id], codes=[] if by_id else [erp_id])
        synced = max(s.complete_at for s in complete if s.complete_at is not None)
        if any(r.active for r in found):
            return MappingVerdict(True)
        if found:
            why = f"{label} {erp_id} is inactive (archived) in {connection}"
        else:
            what = KIND_LABELS[kinds[0]][1]
            why = f"{label} {erp_id} is not in {connection}'s {what} (synced {synced.isoformat(timespec='seconds')})"
            coded = await self.cache.find(connection, cached_kinds, codes=[erp_id]) if by_id else []
            if coded:
                ids = ", ".join(sorted({f"{r.erp_id} ({r.name})" for r in coded}))
                why += f"; {erp_id} is the code of {ids}: map to the id, which {complete[0].erp} takes"
        if force:
            return MappingVerdict(True, warning=f"{why}; stored anyway (force)")
        return MappingVerdict(False, reason=why)

    async def put(
        self, tenant: str, connection: str, kind: str, source_code: str, erp_id: str, *, by: str | None = None
    ) -> StoredMapping:
        """Insert or replace one mapping (not validated here: :meth:`validate` first).

        Raises:
            ValueError: ``kind`` is not one of :data:`MAPPING_KINDS`.
        """
        return (await self.put_many(tenant, connection, [(kind, source_code, erp_id)], by=by))[0]

    async def put_many(
        self, tenant: str, connection: str, entries: Sequence[tuple[str, str, str]], *, by: str | None = None
    ) -> list[StoredMapping]:
        """Insert or replace ``(kind, source code, ERP id)`` mappings in one transaction (all or none).

        Raises:
            ValueError: a kind is not one of :data:`MAPPING_KINDS` (nothing stored).
        """
        for kind, _, _ in entries:
            if kind not in MAPPING_KINDS:
                raise ValueError(f"unknown mapping kind {kind!r} (one of {', '.join(MAPPING_KINDS)})")
        if not entries:
            return []
        now = _now()
        values = [
            {
                "tenant": tenant,
                "connection": connection,
                "kind": kind,
                "source_code": code,
                "erp_id": erp_id,
                "updated_at": now,
                "updated_by": by,
            }
            for kind, code, erp_id in entries
        ]
        stmt = self.state.upsert(MappingRow.__table__)
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant", "connection", "kind", "source_code"],
            set_={k: stmt.excluded[k] for k in ("erp_id", "updated_at", "updated_by")},
        )
        async with self.state.session() as session, session.begin():
            await session.execute(stmt, values)
        return [StoredMapping(tenant, connection, kind, code, erp_id, now, by) for kind, code, erp_id in entries]

    async def remove(self, tenant: str, connection: str, kind: str, source_code: str) -> bool:
        """Delete one mapping; False when there was none."""
        async with self.state.session() as session, session.begin():
            result = await session.execute(
                delete(MappingRow).where(
                    MappingRow.tenant == tenant,
                    MappingRow.connection == connection,
                    MappingRow.kind == kind,
                    MappingRow.source_code == source_code,
                )
            )
            return bool(getattr(result, "rowcount", 0))

    async def list(
        self,
        *,
        tenant: str | None = None,
        connection: str | None = None,
        kind: str | None = None,
        tenants: Iterable[str] | None = None,
    ) -> list[StoredMapping]:
        """Stored mappings matching the filters, ordered by tenant, connection, kind, code.

        ``tenants`` (None = all) limits the answer to those tenants (an API key's).
        """
        query = select(MappingRow)
        if tenant is not None:
            query = query.where(MappingRow.tenant == tenant)
        if connection is not None:
            query = query.where(MappingRow.connection == connection)
        if kind is not None:
            query = query.where(MappingRow.kind == kind)
        if tenants is not None:
            query = query.where(MappingRow.tenant.in_(sorted(set(tenants))))
        query = query.order_by(MappingRow.tenant, MappingRow.connection, MappingRow.kind, MappingRow.source_code)
        async with self.state.session() as session:
            return [StoredMapping.of(row) for row in await session.scalars(query)]

    async def tables(self, connection: str) -> dict[str, dict[str, dict[str, str]]]:
        """Every mapping of ``connection`` as tenant → kind → {source code: ERP id} (one query)."""
        tables: dict[str, dict[str, dict[str, str]]] = {}
        for item in await self.list(connection=connection):
            tables.setdefault(item.tenant, {}).setdefault(item.kind, {})[item.source_code] = item.erp_id
        return tables
