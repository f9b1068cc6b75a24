"""What every source writer shares: the outcome of one write, the write ledger, error classification.

A *source writer* (``ledgerflow.transformers.<source>.writer``) writes a
:class:`~ledgerflow.contracts.reference.ReferenceRecord` read from an ERP into one source system
for one tenant. One record may mean several writes (a payment applied to two bills); each gives a
:class:`WriteOutcome`, which the runtime (:mod:`ledgerflow.transformers.writeback.runtime`) turns
into a ``SyncResult`` with ``direction="inbound"``.

Idempotency: every write has a deterministic key (:func:`write_key`). The :class:`WriteLedger`
keeps, per (source, tenant) and key, the id the source gave the record and the hash of what was
written (state store binder table, connection ``writeback:<source>:<tenant>``): the same content
again is a ``duplicate`` and nothing is sent; a payment already marked is never marked twice. The
ledger row is written right after the source acknowledged the write (before the result is
published), so a redelivery after a crash finds it. Where no ledger row exists yet (first write,
or a crash between the source's answer and the ledger write) the writers look the record up in
the source first (by ``custom_id``, or the document's paid state) before creating anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import weakref
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Protocol

from ledgerflow.contracts import ErrorInfo, Operation, Outcome
from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.contracts.reference import AppliedDocument, ReferenceRecord
from ledgerflow.core.outbound.json_api import EnrichmentError, RetriableEnrichmentError, counted_attempts
from ledgerflow.core.state import StateStore

__all__ = [
    "DocumentLocks",
    "PaymentMarker",
    "SourceWriter",
    "WriteLedger",
    "WriteOutcome",
    "classify",
    "content_digest",
    "counting",
    "write_key",
]


def write_key(*parts: str) -> str:
    """The deterministic key of one write: its parts joined by ``:`` (at most 400 characters, else hashed)."""
    key = ":".join(parts)
    return key if len(key) <= 400 else hashlib.sha256(key.encode()).hexdigest()


def content_digest(value: Any) -> str:
    """SHA-256 (hex) of ``value`` as canonical JSON (sorted keys; Decimal and dates as text)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """How one write into a source ended.

    ``target`` names what was written in the source's terms (``company``, ``invoice``, ``payable``);
    ``key`` is the write's deterministic key (:func:`write_key`), also the result's canonical id
    suffix. ``amount``/``currency``: payments, the amount applied to that document.
    """

    target: str
    key: str
    operation: Operation
    outcome: Outcome
    source_record_id: str | None = None
    attempts: int = 0
    http_status: int | None = None
    error: ErrorInfo | None = None
    amount: Decimal | None = None
    currency: str | None = None
    erp_record_id: str | None = None
    """The ERP id written when it is not the record's own (a Xero tracking option of a category)."""

    @property
    def retriable(self) -> bool:
        """A failed write a later attempt may make succeed (the runtime parks it on a retry tier)."""
        return self.outcome is Outcome.FAILED and self.error is not None and self.error.retriable


async def counting(write: Awaitable[WriteOutcome]) -> WriteOutcome:
    """Await one write and set its ``attempts`` to the HTTP attempts it made (retries included)."""
    with counted_attempts() as sent:
        outcome = await write
    return replace(outcome, attempts=sent[0])


def classify(exc: EnrichmentError, *, conflict: ErrorCode = ErrorCode.SOURCE_INVALID_STATE) -> ErrorInfo:
    """The :class:`ErrorInfo` of a failed source API call.

    Transient failures that outlasted the client's retries (429, 5xx, transport errors: the cause
    is a :class:`RetriableEnrichmentError`) are ``source.unavailable``, retriable; 404 is
    ``source.not_found``, 409 ``conflict`` (default ``source.invalid_state``), any other 4xx
    ``source.validation``; none of those is retriable.
    """
    status = exc.status
    if isinstance(exc.__cause__, RetriableEnrichmentError) or isinstance(exc, RetriableEnrichmentError):
        return ErrorInfo(code=ErrorCode.SOURCE_UNAVAILABLE, message=str(exc), retriable=True)
    if status == 404:
        return ErrorInfo(code=ErrorCode.SOURCE_NOT_FOUND, message=str(exc), retriable=False)
    if status == 409:
        return ErrorInfo(code=conflict, message=str(exc), retriable=False)
    if status in (401, 403):
        return ErrorInfo(code=ErrorCode.AUTH_REJECTED, message=str(exc), retriable=False)
    return ErrorInfo(code=ErrorCode.SOURCE_VALIDATION, message=str(exc), retriable=False)


@dataclass(frozen=True, slots=True)
class Written:
    """A write the ledger remembers: the source's id of the record and the hash of what was written."""

    source_record_id: str
    content_hash: str


@dataclass
class WriteLedger:
    """The writes already made into one source for one tenant (state store binder, ``writeback:<source>:<tenant>``).

    Args:
        state: the state store.
        source: source system written to.
        tenant: tenant whose source it is.
    """

    state: StateStore
    source: str
    tenant: str
    _name: str = field(init=False)

    def __post_init__(self) -> None:
        self._name = f"writeback:{self.source}:{self.tenant}"[:100]

    async def get(self, key: str) -> Written | None:
        """What was written under ``key``, or None."""
        row = await self.state.get_binding(self._name, key)
        return None if row is None else Written(row.erp_record_id, row.content_hash)

    async def put(self, key: str, source_record_id: str, content_hash: str) -> None:
        """Remember that ``key`` was written as ``source_record_id`` with content ``content_hash``."""
        await self.state.put_binding(
            self._name, key, erp_record_id=source_record_id, erp_version=None, content_hash=content_hash
        )

    def _applied_name(self, document: str) -> str:
        return write_key(f"{self._name}:applied", document)[:200]

    async def applied(self, document: str) -> dict[str, Decimal]:
        """The ERP payments counted against source ``document`` so far: write key → amount applied."""
        stored = await self.state.get_cursor(self._applied_name(document))
        return {k: Decimal(v) for k, v in json.loads(stored).items()} if stored else {}

    async def apply(self, document: str, key: str, amount: Decimal) -> dict[str, Decimal]:
        """Count payment ``key`` (``amount``) against ``document`` once (one row write); return all counted."""
        counted = await self.applied(document)
        counted[key] = amount
        await self.state.put_cursor(self._applied_name(document), json.dumps({k: str(v) for k, v in counted.items()}))
        return counted


class DocumentLocks:
    """One :class:`asyncio.Lock` per source document, so payments of one document are written one at a time.

    A read-modify-write (Monite ``amount_paid``, the payments counted against a Mercoa invoice)
    must not interleave with another payment of the same document handled concurrently (payments
    have their own Kafka keys). Locks live while someone holds or waits for them.
    """

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def __call__(self, document: str) -> asyncio.Lock:
        """The lock of ``document`` (keep a reference while using it)."""
        lock = self._locks.get(document)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[document] = lock
        return lock


class SourceWriter(Protocol):
    """Writes records read from an ERP into one source for one tenant."""

    source: str
    """The source system written to (``ingenious``, ``mercoa``, ``monite``)."""

    def takes(self, record: ReferenceRecord) -> bool:
        """Whether this writer writes anything for ``record`` (its kind is enabled, a payment pays its documents)."""
        ...

    async def write(self, record: ReferenceRecord, tenant: str, ledger: WriteLedger) -> Sequence[WriteOutcome]:
        """Write ``record`` into the source; one outcome per write. Never raises for API errors."""
        ...


class PaymentMarker(ABC):
    """A source writer that marks the source's own documents paid from ERP payments (Mercoa, Monite).

    It takes payments applied to at least one document booked from :attr:`source`, and marks each
    such document of the tenant one at a time (:class:`DocumentLocks`: the mark reads, adds to and
    writes what was paid). Subclasses say how one document is marked (:meth:`mark_locked`).
    """

    source: str
    """The source system written to."""

    def __init__(self) -> None:
        self._locks = DocumentLocks()

    def takes(self, record: ReferenceRecord) -> bool:
        """Payments applied to at least one document booked from this source."""
        return record.kind == "payment" and any(d.source == self.source for d in record.applied_to)

    async def write(self, record: ReferenceRecord, tenant: str, ledger: WriteLedger) -> Sequence[WriteOutcome]:
        """Mark every document of ``tenant`` in this source the payment settles; one outcome each."""
        return [
            await counting(self._mark(record, doc, ledger))
            for doc in record.applied_to
            if doc.source == self.source and doc.tenant == tenant and doc.source_id
        ]

    async def _mark(self, record: ReferenceRecord, doc: AppliedDocument, ledger: WriteLedger) -> WriteOutcome:
        assert doc.source_id is not None
        async with self._locks(doc.source_id):  # one payment of a document at a time
            return await self.mark_locked(record, doc, ledger)

    @abstractmethod
    async def mark_locked(self, record: ReferenceRecord, doc: AppliedDocument, ledger: WriteLedger) -> WriteOutcome:
        """Mark ``doc`` (its ``source_id`` set) paid by ``record``, holding its lock. Never raises for API errors."""
