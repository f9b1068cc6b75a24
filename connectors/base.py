"""The contract between the connector runtime and each ERP connector.

A connector turns one canonical record into ERP writes and reports what it did as a
:class:`Booked`. It raises :class:`RetriableError` for what may succeed later (429, 5xx,
timeouts, connection errors: the runtime retries with backoff, honouring ``retry_after``) and
:class:`PermanentError` for what will not (validation 4xx, unresolved GL account: the runtime
writes a ``failed`` result with the vendor's message). An object type the ERP cannot take is
:class:`Unsupported` (a ``skipped`` result).

Batch writes (issue 18): a connector whose ERP takes several records in one request sets
:attr:`Connector.max_batch`, says which records may share a request (:meth:`Connector.batch_kind`)
and implements :meth:`Connector.handle_batch`, which answers one :class:`Booked` or one
:class:`ConnectorError` *per record*, so one record's failure never fails its neighbours. The
runtime reaches it through :meth:`Connector.book_many` (:mod:`ledgerflow.connectors.batching`
forms the batches). Without an override every record is handled on its own.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import httpx
from cachetools import TTLCache
from pydantic import BaseModel

from ledgerflow.connectors.verify import StoredDocument
from ledgerflow.contracts import CanonicalRecord, Operation, PurchaseOrderChange, canonical_id, erp_identifiers
from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.core.outbound.errors import ConnectorError, PermanentError, RetriableError
from ledgerflow.core.settings import ConnectionConfig
from ledgerflow.core.state import StateStore

__all__ = [
    "INVALID_RESPONSE",
    "BatchItem",
    "BinderEntry",
    "Booked",
    "Connector",
    "ConnectorError",
    "HandleContext",
    "InvalidResponse",
    "PermanentError",
    "RetriableError",
    "UnresolvedReferenceError",
    "Unsupported",
    "batch_idempotency_key",
    "reference_key",
]

INVALID_RESPONSE = ErrorCode.ERP_INVALID_RESPONSE
"""Error code of a 2xx answer that is not what the ERP documents (not JSON, truncated, no record id)."""


class InvalidResponse(RetriableError):  # noqa: N818 - reads as the outcome it produces
    """The ERP answered 2xx, but the body is not what it documents: HTML, truncated JSON, no record id.

    Retriable (a proxy's error page or a cut connection may not happen again, and every connector
    writes with an idempotency key or looks up before creating), but only a few times: the runtime
    gives it at most ``RetryPolicy.invalid_response_attempts`` attempts and then dead-letters the
    record instead of parking it, so a broken ERP is not hammered.
    """

    sends: int = 1
    """ERP requests that answered this way: a batch resent as the identical request counts each send
    (:mod:`ledgerflow.connectors.batching`), so they spend the record's invalid-answer attempts."""

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(INVALID_RESPONSE, message, http_status=http_status)


class UnresolvedReferenceError(ValueError):
    """A pure mapping could not express a reference in the ERP's terms (no id, no code, no default option).

    Raised by the connectors' ``mapping.py`` (which do no I/O); the connector turns it into
    ``PermanentError(ErrorCode.REFERENCE_UNRESOLVED)`` with the same message.
    """


class Unsupported(ConnectorError):  # noqa: N818 - reads as the outcome it produces
    """The ERP (or this connection) does not take this object type or action."""


def reference_key(tenant: str, kind: str, source_id: str) -> str:
    """Binder key of a resolved reference: ``<tenant>:<kind>-ref:<source id>`` (e.g. ``acme:vendor-ref:v_1``).

    ``kind`` is the referenced object (``vendor``, ``customer``, ``item``…); the tenant is part of
    the key because source ids are only unique within one tenant's source account.
    """
    return f"{tenant}:{kind}-ref:{source_id}"


@dataclass(frozen=True, slots=True)
class BinderEntry:
    """What the binder knows of a record already booked on one connection."""

    erp_record_id: str
    erp_version: str | None
    content_hash: str


@dataclass(frozen=True, slots=True)
class HandleContext:
    """Per-record context the runtime passes to a connector.

    ``idempotency_key`` is stable across redeliveries of the same event to the same connection
    (≤ 36 characters, so it fits QuickBooks ``requestid`` and Xero ``Idempotency-Key``).
    ``existing`` is the binder entry when the record was booked before (then update, not create).
    ``tenant`` is the record's tenant: reference binder keys (:func:`reference_key`) carry it, so
    two tenants on one shared connection never resolve each other's vendors.
    """

    event_id: str
    idempotency_key: str
    existing: BinderEntry | None
    tenant: str = ""

    def for_tenant(self, tenant: str) -> HandleContext:
        """This context with ``tenant`` set (a connector calls it with its record's tenant)."""
        return self if self.tenant == tenant else replace(self, tenant=tenant)


@dataclass(frozen=True, slots=True)
class Booked:
    """What the connector did: the operation, the ERP's record id and version, and HTTP facts.

    For documents, ``stored`` is what the ERP's answer says it holds (mapped by the connector,
    see :mod:`ledgerflow.connectors.verify`) and ``counterparty_id`` the ERP id of the vendor or
    customer sent; the runtime compares both with the canonical document (read-back verification).
    """

    operation: Operation
    erp_record_id: str | None
    erp_version: str | None = None
    http_status: int | None = None
    attempts: int = 1
    stored: StoredDocument | None = None
    counterparty_id: str | None = None


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One record of a batch write and its context (what :meth:`Connector.handle` would get)."""

    record: CanonicalRecord
    ctx: HandleContext


def batch_idempotency_key(keys: Sequence[str]) -> str:
    """The ERP idempotency key of one batch request: 36 hex characters from its items' keys, in order.

    The same records in the same order give the same key, so a batch request repeated after a
    crash (before the binder was written) is replayed by the ERP instead of executed again
    (Xero ``Idempotency-Key``, QuickBooks ``requestid``, at most 36 characters for a batch).
    """
    return hashlib.sha256("\x00".join(keys).encode()).hexdigest()[:36]


class Connector(ABC):
    """One ERP connection's client logic. Subclasses set :attr:`erp` and :attr:`supports`.

    Args:
        name: the connection name (also its consumer group suffix and rate-limit scope).
        config: the connection's routing config (base URL, credentials, options).
        http: the shared ``httpx.AsyncClient`` (the runtime owns and closes it).
        state: the state store (reference binder rows, persisted OAuth tokens).

    Reference binder rows (``<tenant>:vendor-ref:<source id>`` from :func:`reference_key` → the
    ERP's vendor id, and the like) are read through :meth:`reference_id` and written through
    :meth:`remember_reference`, which keep them in an in-process cache for
    ``options.reference_cache_seconds`` (default 300; 0 turns the cache off). Every bill of a
    vendor needs that vendor's ERP id; without the cache each one cost a state-store round trip.
    A vendor merged or deleted in the ERP meanwhile is noticed by the
    ERP's answer (a failed result) at most that long after.

    """

    erp: ClassVar[str]
    supports: ClassVar[frozenset[str]]
    options_model: ClassVar[type[BaseModel] | None] = None
    """The connector's typed ``Options`` (its ``config.py``): ``config.options`` is validated against it."""
    credentials_model: ClassVar[type[BaseModel] | None] = None
    """The connector's typed ``Credentials`` (its ``config.py``): ``config.credentials`` is validated against it."""
    payment_kinds: ClassVar[frozenset[str]] = frozenset({"payment"})
    """Payment ``kind`` values the connector books as what they are (``payment``; ``refund`` and
    ``return`` only where the ERP's refund document is implemented). The runtime fails any other
    kind with ``payment.kind_unsupported`` rather than let it be booked as money received."""
    max_batch: ClassVar[int] = 1
    """Most records the ERP takes in one write request (1: no batch endpoint; option ``max_batch`` lowers it)."""
    mapping_kinds: ClassVar[frozenset[str]]
    """Reference kinds (``ledgerflow.connectors.references.REFERENCE_KINDS``) whose mapped
    ``accounting_id`` this connector sends to its ERP (read off its ``mapping.py``). A stored or
    YAML mapping of another kind would do nothing, so it is refused (``ledgerflow mappings``,
    ``/v1/mappings``, ``ledgerflow config check``). Every connector sets it."""
    unused_mapping_kinds: ClassVar[Mapping[str, str]] = {}
    """Kind the connector does not honour → what it uses instead (completes "<erp> …" in the refusal)."""

    @classmethod
    def honoured_mapping_kinds(cls, options: Mapping[str, Any]) -> frozenset[str]:
        """The mapping kinds a connection with ``options`` honours.

        :attr:`mapping_kinds`, plus what options that choose line fields (NetSuite ``line_segments``,
        SAP ``line_assignments``, Coupa ``account_segments``) add in the connectors that have them.
        """
        return cls.mapping_kinds

    def __init__(self, name: str, config: ConnectionConfig, http: httpx.AsyncClient, state: StateStore) -> None:
        if self.options_model is not None and self.credentials_model is not None:
            from ledgerflow.connectors.config import validate_connection

            validate_connection(name, config, self.options_model, self.credentials_model)
        self.name = name
        self.config = config
        self.http = http
        self.state = state
        ttl = float(config.options.get("reference_cache_seconds", 300))
        self._references: TTLCache[str, str] | None = TTLCache(maxsize=50_000, ttl=ttl) if ttl > 0 else None

    async def reference_id(self, key: str) -> str | None:
        """The ERP id bound to reference ``key`` (e.g. ``acme:vendor-ref:<source id>``) on this connection, or None.

        Served from the in-process cache when fresh, else read from the state store (and cached).
        """
        if self._references is not None and (cached := self._references.get(key)) is not None:
            return cached
        row = await self.state.get_binding(self.name, key)
        if row is None:
            return None
        if self._references is not None:
            self._references[key] = row.erp_record_id
        return row.erp_record_id

    async def remember_reference(
        self, key: str, erp_record_id: str, *, erp_version: str | None, content_hash: str
    ) -> None:
        """Bind reference ``key`` to the ERP id ``erp_record_id`` in the state store and the cache."""
        await self.state.put_binding(
            self.name, key, erp_record_id=erp_record_id, erp_version=erp_version, content_hash=content_hash
        )
        if self._references is not None:
            self._references[key] = erp_record_id

    async def changed_order_id(self, change: PurchaseOrderChange) -> str:
        """The ERP id of the purchase order ``change`` changes, on this connection.

        ``change.purchase_order.accounting_id`` when the source sent the ERP's id, else the binder
        row of the order's canonical id (``<source>:purchase_order:<source id>``), written when this
        connection booked the order.

        Raises:
            RetriableError: ``record.not_booked``: the order is not booked here yet (records of one
                source are not ordered across keys; it usually is moments later).
        """
        erp_id, _, _ = erp_identifiers(change.purchase_order)
        if erp_id:
            return erp_id
        source_id = change.purchase_order.source_id
        if source_id:
            row = await self.state.get_binding(
                self.name, canonical_id(change.tenant, change.source, "purchase_order", source_id)
            )
            if row is not None:
                return row.erp_record_id
        raise RetriableError(
            ErrorCode.RECORD_NOT_BOOKED,
            f"{change.canonical_id} changes purchase order {source_id or '?'}, which is not booked on {self.name} yet",
        )

    def credential(self, key: str) -> str:
        """The connection's credential ``key`` (e.g. ``realm_id``), as plain text.

        Raises:
            PermanentError: ``auth.config`` when it is missing or empty.
        """
        value = self.config.credentials.get(key)
        if value is None or not value.get_secret_value():
            raise PermanentError(ErrorCode.AUTH_CONFIG, f"connection {self.name!r}: credentials need {key}")
        return value.get_secret_value()

    def api_root(self, erp_label: str, sandbox_module: str) -> str:
        """``config.base_url`` without a trailing slash.

        Raises:
            PermanentError: ``config.base_url`` when the connection has none, naming the ERP and the
                sandbox module whose ``sandbox_connection`` wires a local sandbox.
        """
        if not self.config.base_url:
            raise PermanentError(
                ErrorCode.CONFIG_BASE_URL,
                f"connection {self.name!r} has no base_url: point it at {erp_label} or at the local sandbox "
                f"({sandbox_module}.sandbox_connection)",
            )
        return self.config.base_url.rstrip("/")

    @abstractmethod
    async def check(self) -> None:
        """Verify credentials and reachability (backs readiness).

        Raises:
            ConnectorError: naming what is wrong.

        """

    async def book(self, record: CanonicalRecord, ctx: HandleContext) -> Booked:
        """:meth:`handle`, with the evidence of a booking required: what the runtime calls.

        Any error reading the ERP's answers (a body that is not JSON, truncated JSON, a field of
        the wrong type or missing) becomes :class:`InvalidResponse`, and so does a booking without
        the ERP's record id: no ``succeeded`` without evidence.

        Raises:
            InvalidResponse: as above (retriable, bounded by the runtime).
            RetriableError, PermanentError, Unsupported: as :meth:`handle` raises them.
        """
        try:
            booked = await self.handle(record, ctx)
        except ConnectorError:
            raise
        except (ValueError, LookupError, TypeError, AttributeError, ArithmeticError) as exc:
            raise InvalidResponse(
                f"{self.erp} answered with a body ledgerflow cannot read: {type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
        if not booked.erp_record_id:
            raise InvalidResponse(
                f"{self.erp} answered {booked.http_status or '2xx'} without the record's id: "
                f"nothing shows {record.canonical_id} was booked",
                http_status=booked.http_status,
            )
        return booked

    def batch_size(self) -> int:
        """Largest batch for this connection: option ``max_batch`` up to :attr:`max_batch`; 1 when unset.

        Batch writes are opt-in per connection: a kill -9 between a batch's ERP write and its binder
        write can book a record twice when it comes back in a differently formed batch (neither Xero
        nor QuickBooks has a per-item key; fault suite: 150 of 1,000 bills). Unset, every record is
        written on its own under its own idempotency key, which the ERP replays.
        """
        wanted = self.config.options.get("max_batch")
        return max(1, min(self.max_batch, int(wanted))) if wanted is not None else 1

    def batch_kind(self, record: CanonicalRecord, ctx: HandleContext) -> str | None:
        """Which batch ``record`` may join (records of one kind share a request), or None to write it alone.

        The default (no batch endpoint) is None for every record.
        """
        return None

    async def handle_batch(self, items: Sequence[BatchItem]) -> list[Booked | ConnectorError]:
        """Book ``items`` (all of one :meth:`batch_kind`), answering one outcome per item, in order.

        An item's outcome is its :class:`Booked` or the :class:`ConnectorError` it failed with;
        an error of the whole request (throttled, unreachable, rejected credentials) may be
        raised instead and then is every item's outcome. The default handles each item on its own.

        Raises:
            ConnectorError: the request as a whole failed.
        """

        async def one(item: BatchItem) -> Booked | ConnectorError:
            try:
                return await self.handle(item.record, item.ctx)
            except ConnectorError as exc:
                return exc

        return list(await asyncio.gather(*(one(item) for item in items)))

    async def book_many(self, items: Sequence[BatchItem]) -> list[Booked | ConnectorError]:
        """:meth:`handle_batch` with the evidence rules of :meth:`book`, per item: what the runtime calls.

        Never raises for ERP errors: an error of the whole request becomes every item's outcome
        (each its own copy); an unreadable answer becomes :class:`InvalidResponse` for every item;
        a ``Booked`` without the ERP's record id becomes :class:`InvalidResponse` for that item.
        """
        try:
            outcomes = await self.handle_batch(items)
        except ConnectorError as exc:
            return [copy.copy(exc) for _ in items]
        except (ValueError, LookupError, TypeError, AttributeError, ArithmeticError) as exc:
            message = f"{self.erp} answered with a body ledgerflow cannot read: {type(exc).__name__}: {str(exc)[:300]}"
            return [InvalidResponse(message) for _ in items]
        if len(outcomes) != len(items):
            miscount = f"{self.erp} answered {len(outcomes)} results for {len(items)} records"
            return [InvalidResponse(miscount) for _ in items]
        checked: list[Booked | ConnectorError] = []
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, Booked) and not outcome.erp_record_id:
                outcome = InvalidResponse(
                    f"{self.erp} answered {outcome.http_status or '2xx'} without the record's id: "
                    f"nothing shows {item.record.canonical_id} was booked",
                    http_status=outcome.http_status,
                )
            checked.append(outcome)
        return checked

    @abstractmethod
    async def handle(self, record: CanonicalRecord, ctx: HandleContext) -> Booked:
        """Book ``record`` in the ERP (create, update or void) and say what was done.

        Raises:
            RetriableError, PermanentError, Unsupported: see the module docstring.

        """

    async def read_back(self, record: CanonicalRecord, booked: Booked) -> StoredDocument | None:
        """What the ERP holds for ``record`` just booked as ``booked`` (read-back verification hook).

        Called by the runtime after a create or update of a document when ``booked.stored`` is
        None. Override it to read the record (``GET`` by ``booked.erp_record_id``) and map it onto a
        :class:`~ledgerflow.connectors.verify.StoredDocument`; the default returns None (the
        booking is counted as not verifiable, not failed).

        Raises:
            RetriableError, PermanentError: the read failed (the result is ``failed`` with that error).
        """
        return None

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources the connector holds beyond the shared HTTP client."""
