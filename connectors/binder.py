"""The binder: which canonical record is booked as which ERP record, per ERP connection.

The binder rows live in the state store (:class:`~ledgerflow.core.state.StateStore`, table
``binder``); :class:`BatchBinder` reads the rows of one consumer batch in one query up front and
writes its bookings in one upsert at the end. :func:`content_hash` is what a row remembers of
what was booked (a redelivery with the same hash is a ``duplicate``), :func:`idempotency_key`
what the ERP is told so that a booking repeated after a crash is recognised by the ERP itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from ledgerflow.contracts import CanonicalRecord, tenant_scoped
from ledgerflow.core.state import BinderRow, BindingValues, StateStore

__all__ = ["BatchBinder", "Bound", "binder_key", "content_hash", "idempotency_key"]


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
