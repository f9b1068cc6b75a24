"""The binder: which canonical record is booked as which ERP record, per ERP connection.

The binder rows live in the state store (:class:`~ledgerflow.core.state.StateStore`, table
``binder``); :class:`BatchBinder` reads the rows of one consumer batch in one query up front and
writes its bookings in one upsert at the end. :func:`content_hash` is what a row remembers of
what was booked (a redelivery with the same hash is a ``duplicate``), :func:`idempotency_key`
what the ERP is told so that a booking repeated after a crash is recognised by the ERP itself.
:func:`parse_binder_key` reads a key back into its tenant, source, object type and source id
(the ERP readers name the source document a payment settles with it).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from ledgerflow.contracts import OBJECT_MODELS, CanonicalRecord, Source, is_legacy_key, tenant_scoped
from ledgerflow.core.state import BinderRow, BindingValues, StateStore

__all__ = [
    "BatchBinder",
    "BinderKey",
    "Bound",
    "binder_key",
    "content_hash",
    "documents_of_erp_records",
    "idempotency_key",
    "parse_binder_key",
]

log = logging.getLogger(__name__)


def idempotency_key(connection: str, event_id: str, tenant: str) -> str:
    """A 36-character key stable for (connection, tenant, event): QuickBooks ``requestid``, Xero ``Idempotency-Key``.

    The tenant is part of the key, so two tenants' events on one shared ERP connection never
    share an idempotency key, even when their sources used the same delivery id.
    """
    return hashlib.sha256(f"{connection}\x00{tenant}\x00{event_id}".encode()).hexdigest()[:36]


def binder_key(record: CanonicalRecord) -> str:
    """The binder key of ``record``: its canonical id, which carries the tenant.

    A record published before canonical ids carried the tenant (still in a topic at the upgrade)
    gets its tenant put in front (:func:`~ledgerflow.contracts.tenant_scoped`), so it meets the
    binder row the state-store migration moved there.
    """
    return tenant_scoped(record.tenant, record.canonical_id)


@dataclass(frozen=True, slots=True)
class BinderKey:
    """The parts of a document's binder key ``<tenant>:<source>:<object type>:<source id>``."""

    tenant: str
    source: str
    object_type: str
    source_id: str


_SOURCES = frozenset(s.value for s in Source)


def parse_binder_key(key: str) -> BinderKey | None:
    """The tenant, source, object type and source id of binder key ``key`` (:func:`binder_key` read back).

    ``acme:mercoa:bill:in_1`` → ``BinderKey("acme", "mercoa", "bill", "in_1")``; the source id
    may itself hold colons (everything after the object type is the source id). The source is
    found as the first known :class:`~ledgerflow.contracts.Source` followed by a known object
    type (:data:`~ledgerflow.contracts.OBJECT_MODELS`) after a non-empty tenant, so a tenant name
    with colons still parses. Returns None for keys that name no document: reference keys
    (``<tenant>:vendor-ref:<source id>``), legacy keys without a tenant
    (:func:`~ledgerflow.contracts.is_legacy_key`; ``ledgerflow state migrate-keys`` moves them),
    anything else.
    """
    if is_legacy_key(key):
        return None
    parts = key.split(":")
    for index in range(1, len(parts) - 2):
        if parts[index] in _SOURCES and parts[index + 1] in OBJECT_MODELS:
            tenant = ":".join(parts[:index])
            source_id = ":".join(parts[index + 2 :])
            if tenant and source_id:
                return BinderKey(tenant, parts[index], parts[index + 1], source_id)
            return None
    return None


async def documents_of_erp_records(
    state: StateStore, connection: str, erp_record_ids: Collection[str]
) -> dict[tuple[str, str], BinderKey]:
    """The source documents ledgerflow booked as ``erp_record_ids`` on ``connection``, by (ERP id, object type).

    One look-up on the binder's ERP-id index per 500 ids
    (:meth:`~ledgerflow.core.state.StateStore.bindings_of_erp_records`); rows whose key names no
    document (references, legacy keys) are left out. When two documents of one object type are
    bound to one ERP record (which a booking never does) neither is returned and a warning names
    them: a payment must not be told to the wrong source document.
    """
    found: dict[tuple[str, str], BinderKey] = {}
    ambiguous: set[tuple[str, str]] = set()
    for row in await state.bindings_of_erp_records(connection, erp_record_ids):
        parsed = parse_binder_key(row.key)
        if parsed is None:
            continue
        slot = (row.erp_record_id, parsed.object_type)
        if slot in found and found[slot] != parsed:
            ambiguous.add(slot)
        found[slot] = parsed
    for slot in ambiguous:
        log.warning("binder of %s: several %s documents are bound to ERP record %s", connection, slot[1], slot[0])
        del found[slot]
    return found


def content_hash(record: CanonicalRecord) -> str:
    """SHA-256 of what would be booked: the record without the fields that only describe the event."""
    body = record.model_dump_json(exclude={"source_event", "source_updated_at"})
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Bound:
    """What the binder holds for one record: the ERP's id and version, the booked hash, when (UTC).

    ``source_updated_at`` is the source's version time of the booked record (None if unknown).
    """

    erp_record_id: str
    erp_version: str | None
    content_hash: str
    updated_at: datetime
    source_updated_at: datetime | None = None


class BatchBinder:
    """The binder rows of one consumer batch: read in one query up front, written in one upsert at the end.

    :meth:`load` reads the rows of the batch's record keys (the canonical ids); :meth:`get` answers
    from them (a key not loaded costs one query); :meth:`put` records a booking in memory, so a
    later record of the same key in the batch sees it; :meth:`flush` writes every booking of the
    batch. The runtime flushes after every result of the batch was acknowledged and before the
    offsets are committed, so what the binder says is never ahead of the results topic.

    Args:
        state: the state store.
        connection: the ERP connection whose rows these are.
    """

    def __init__(self, state: StateStore, connection: str) -> None:
        self.state = state
        self.connection = connection
        self._rows: dict[str, Bound | None] = {}
        self._pending: dict[str, BindingValues] = {}

    async def load(self, keys: Collection[str]) -> None:
        """Read the rows of ``keys`` (one query per 500 keys); absent keys are remembered as absent."""
        wanted = [k for k in keys if k not in self._rows]
        found = await self.state.get_bindings(self.connection, wanted)
        for key in wanted:
            row = found.get(key)
            self._rows[key] = _bound(row) if row is not None else None

    async def get(self, key: str) -> Bound | None:
        """The row of ``key`` as this batch knows it (its own bookings included), or None."""
        if key not in self._rows:
            row = await self.state.get_binding(self.connection, key)
            self._rows[key] = _bound(row) if row is not None else None
        return self._rows[key]

    def forget(self, key: str) -> None:
        """Drop what was read for ``key`` (not this batch's own bookings): the next :meth:`get` reads it again.

        For a parked record that waited out its delay: what the batch read before the wait may
        be older than a booking made meanwhile by the main consumer.
        """
        if key not in self._pending:
            self._rows.pop(key, None)

    def put(self, values: BindingValues) -> None:
        """Record a booking; it is written by :meth:`flush`."""
        known = self._rows.get(values.key)
        version = values.source_updated_at or (known.source_updated_at if known else None)
        self._pending[values.key] = values
        self._rows[values.key] = Bound(
            values.erp_record_id, values.erp_version, values.content_hash, datetime.now(UTC), version
        )

    async def flush(self) -> int:
        """Write the batch's bookings in one upsert; return how many rows were written."""
        pending = list(self._pending.values())
        self._pending.clear()
        await self.state.put_bindings(self.connection, pending)
        return len(pending)


def _bound(row: BinderRow) -> Bound:
    version = _aware(row.source_updated_at) if row.source_updated_at is not None else None
    return Bound(row.erp_record_id, row.erp_version, row.content_hash, _aware(row.updated_at), version)


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes for UTC columns: make them aware."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
