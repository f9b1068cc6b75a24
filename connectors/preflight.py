"""Before a record reaches its connector: the stored mapping tables, then a check against the reference cache.

:class:`ReferenceGuard` is what the connector runtime calls (:mod:`ledgerflow.connectors.runtime`):

1. :meth:`ReferenceGuard.apply_maps` applies the connection's ``options.reference_map`` (YAML)
   merged with the tenant's stored mapping tables (``ledgerflow mappings``, ``/v1/mappings``;
   :mod:`ledgerflow.core.reference_cache`). For the same kind and source key **the stored mapping
   wins**: it is the operator's live edit, the YAML is the deployment's default.
2. :meth:`ReferenceGuard.check` looks every ERP identifier the connector is about to send up in
   the connection's reference cache (what ``ledgerflow sync-reference`` read from that ERP). An
   identifier absent from a *complete* cache of its kind, or inactive there, fails the record
   with ``reference.unknown`` before any ERP call, naming every missing code, its kind and when
   the cache was synced. A kind whose cache is not complete (never synced, first pass not
   finished) is not checked, so a connection that was never synced is never blocked. Option
   ``reference_check: false`` turns the check off for a connection.

What is checked is exactly what each connector sends, and matched the way the ERP resolves it:

===========  =============================================================================================
ERP          identifiers checked (canonical field → ERP field → cached record matched)
===========  =============================================================================================
quickbooks   bill / purchase order: ``vendor.accounting_id`` → ``VendorRef`` → Vendor ``Id``; invoice:
             ``customer.accounting_id`` → ``CustomerRef`` → Customer ``Id``; bill / purchase order lines:
             ``gl_account.accounting_id`` → ``AccountRef`` → Account ``Id``, else its
             ``accounting_custom_id`` → Account ``AcctNum`` (the connector looks the number up);
             ``project.accounting_id`` → ``CustomerRef`` → Customer ``Id``; every document's lines:
             ``cost_code.accounting_id`` → ``ClassRef`` → Class ``Id``; bill: ``ap_account.accounting_id``
             → ``APAccountRef`` → Account ``Id``, ``business_unit.accounting_id`` → ``DepartmentRef``
             → Department ``Id``. Tax codes come from connection options, not the record: not checked.
             A Customer ``Id`` is found among customers and projects (``Job`` customers, kind ``project``).
xero         ``vendor`` / ``customer.accounting_id`` → ``ContactID`` → Contact (supplier or customer);
             lines: ``gl_account.accounting_custom_id`` or else ``accounting_id`` → ``AccountCode`` →
             Account ``Code`` (a UUID → ``AccountID`` → Account id); ``tax_rate.accounting_custom_id``
             or ``accounting_id`` → ``TaxType`` → TaxRate ``TaxType`` (documents with tax only);
             ``cost_code`` / ``project`` / ``business_unit`` code, else ``accounting_id`` (a mapping),
             else name → ``Tracking.Option`` in the category ``options.tracking_categories`` names →
             TrackingCategory by ``Name``, then one of its options by ``Name`` (a UUID
             ``accounting_id`` is a ``TrackingOptionID``: matched by id, the connector sends its name).
netsuite     internal ids only (``{"id"}``; an ``accounting_custom_id`` goes as ``externalId``, not cached):
             bill / purchase order ``vendor``, invoice ``customer`` → vendor / customer ``id``; bill /
             purchase order lines ``gl_account`` → account ``id``, the ``line_segments`` (default
             ``business_unit`` → department, ``cost_code`` → class (``classification``), ``project`` →
             customer, a customer or a job) → their ``id``.
sap          bill: the supplier number (``accounting_custom_id``, else ``accounting_id``, ≤ 10) →
             ``InvoicingParty`` → business partner ``Supplier``; lines: G/L account code (after
             ``options.gl_accounts``) → ``GLAccount``; ``line_assignments`` ``CostCenter`` → cost
             center, ``WBSElement`` → WBS element (``ProjectElement``). Tax codes and internal orders
             are not read: not checked.
coupa        bill: ``vendor.accounting_id`` → supplier ``id``, else ``accounting_custom_id`` → supplier
             ``number``. Account segments are not checked (Coupa caches whole segment combinations).
===========  =============================================================================================

Identifiers taken from connection
options (``default_expense_account``, ``tax_account``…) are not the record's and are not checked;
a name-only vendor (matched or created by the connector) is not checked either.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from ledgerflow.connectors.base import Connector
from ledgerflow.connectors.references import apply_reference_map
from ledgerflow.contracts import CanonicalRecord, Document, ErrorInfo, Reference
from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.core import metrics
from ledgerflow.core.reference_cache import KIND_LABELS, CachedReference, CacheStatus, MappingStore, ReferenceCache
from ledgerflow.core.state import StateStore

__all__ = ["Need", "ReferenceGuard", "needs_of"]

R = TypeVar("R", bound=CanonicalRecord)

Match = Literal["id", "code", "name"]

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True, slots=True)
class Need:
    """One ERP identifier a connector will send, and where in the cache it must be.

    ``sources`` are the (kind, ERP entity) pairs it may be found in; ``requires`` those whose
    cache must be complete for the check to run (default: ``sources``); ``match`` is the cached
    field compared (``erp_id``, ``code`` or ``name``); ``parent_name`` (Xero tracking) is the
    name of the category the matched option must belong to.
    """

    kind: str
    sources: tuple[tuple[str, str], ...]
    value: str
    match: Match
    where: str
    parent_name: str | None = None
    requires: tuple[tuple[str, str], ...] = ()

    @property
    def complete_needed(self) -> tuple[tuple[str, str], ...]:
        """The sources whose complete cache the check needs."""
        return self.requires or self.sources

    def matches(self, row: CachedReference) -> bool:
        """Whether ``row`` is this identifier (kind, entity and field)."""
        if (row.kind, row.entity) not in self.sources or (row.entity == "TrackingCategory" and self.parent_name):
            return False
        return _field(row, self.match) == self.value


def _field(row: CachedReference, match: Match) -> str | None:
    """The cached field ``match`` names: ``erp_id``, ``code`` or ``name``."""
    return row.erp_id if match == "id" else row.code if match == "code" else row.name


_FOUND_MAX = 50_000
"""Most looked-up values a :class:`ReferenceGuard` keeps in process (then it starts over)."""


def _id(ref: Reference | None) -> str | None:
    return ref.accounting_id or None if ref is not None else None


_CUSTOMERS = (("customer", "Customer"), ("project", "Customer"))
"""Where a QuickBooks ``CustomerRef`` id is cached: plain customers and projects (``Job`` customers)."""


def _quickbooks(record: CanonicalRecord, options: Mapping[str, Any]) -> list[Need]:
    needs: list[Need] = []
    obj = record.object_type
    party_field, entity, kind = (
        ("customer", "Customer", "customer") if obj == "invoice" else ("vendor", "Vendor", "vendor")
    )
    party = getattr(record, party_field, None)
    if isinstance(party, Reference) and (value := _id(party)):
        # A QuickBooks project is a Customer with Job = true, read as kind "project".
        sources = _CUSTOMERS if kind == "customer" else ((kind, entity),)
        needs.append(Need(kind, sources, value, "id", party_field))
    if not isinstance(record, Document):
        return needs
    expense = obj in ("bill", "purchase_order", "purchase_order_change")
    account = (("gl_account", "Account"),)
    for line in record.line_items:
        where = f"line {line.line_number}"
        if expense and line.gl_account is not None:
            if value := _id(line.gl_account):
                needs.append(Need("gl_account", account, value, "id", where))
            elif line.gl_account.accounting_custom_id:
                needs.append(Need("gl_account", account, line.gl_account.accounting_custom_id, "code", where))
        if value := _id(line.cost_code):
            needs.append(Need("tracking", (("tracking", "Class"),), value, "id", f"{where} cost code"))
        if expense and (value := _id(line.project)):
            needs.append(Need("customer", _CUSTOMERS, value, "id", f"{where} project"))
    if obj == "bill":
        if value := _id(getattr(record, "ap_account", None)):
            needs.append(Need("gl_account", account, value, "id", "AP account"))
        if value := _id(getattr(record, "business_unit", None)):
            needs.append(Need("tracking", (("tracking", "Department"),), value, "id", "department"))
    return needs


def _xero(record: CanonicalRecord, options: Mapping[str, Any]) -> list[Need]:
    from ledgerflow.connectors.xero.mapping import TRACKED, line_amount_types

    needs: list[Need] = []
    contacts = (("vendor", "Contact"), ("customer", "Contact"))
    for field in ("vendor", "customer"):
        party = getattr(record, field, None)
        if isinstance(party, Reference) and (value := _id(party)):
            needs.append(Need("vendor" if field == "vendor" else "customer", contacts, value, "id", field))
    if not isinstance(record, Document):
        return needs
    taxed = line_amount_types(record) != "NoTax"
    categories = options.get("tracking_categories") or {}
    for line in record.line_items:
        where = f"line {line.line_number}"
        ref = line.gl_account
        if ref is not None and (value := ref.accounting_custom_id or ref.accounting_id):
            match: Match = "id" if _UUID.match(value) else "code"
            needs.append(Need("gl_account", (("gl_account", "Account"),), value, match, where))
        tax = line.tax_rate
        if taxed and tax is not None and (value := tax.accounting_custom_id or tax.accounting_id):
            needs.append(Need("tax_rate", (("tax_rate", "TaxRate"),), value, "id", where))
        for field in TRACKED:
            ref = getattr(line, field)
            category = categories.get(field) if isinstance(categories, Mapping) else None
            if ref is None or not category:
                continue
            # As the connector books it (mapping.tracking_option): code, else the mapped accounting_id
            # (an option name, or a TrackingOptionID matched by id), else the name.
            option = ref.accounting_custom_id or ref.accounting_id or ref.name
            if option:
                by_id = not ref.accounting_custom_id and bool(ref.accounting_id) and bool(_UUID.match(option))
                needs.append(
                    Need(
                        "tracking",
                        (("tracking", "TrackingCategory"), ("tracking", "TrackingOption")),
                        option if by_id else option[:100],
                        "id" if by_id else "name",
                        f"{where} {field.replace('_', ' ')} ({category})",
                        parent_name=str(category),
                        requires=(("tracking", "TrackingCategory"),),  # options are cached with their category
                    )
                )
    return needs


_NS_SEGMENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "department": (("tracking", "department"),),
    "class": (("tracking", "classification"),),
    "location": (("tracking", "location"),),
    "customer": (("customer", "customer"), ("project", "job")),
}
"""NetSuite line field → where its internal id is cached (a line ``customer`` is a customer or a job)."""


def _netsuite(record: CanonicalRecord, options: Mapping[str, Any]) -> list[Need]:
    from ledgerflow.connectors.netsuite.mapping import DEFAULT_LINE_SEGMENTS

    # Only internal ids ({"id": …}) are checked: an accounting_custom_id is sent as an externalId,
    # which the reader does not cache.
    needs: list[Need] = []
    obj = record.object_type
    party_field, kind = ("customer", "customer") if obj == "invoice" else ("vendor", "vendor")
    party = getattr(record, party_field, None)
    if isinstance(party, Reference) and (value := _id(party)):
        needs.append(Need(kind, ((kind, kind),), value, "id", party_field))
    if not isinstance(record, Document) or obj not in ("bill", "purchase_order"):
        return needs
    segments: Mapping[str, str] = options.get("line_segments", DEFAULT_LINE_SEGMENTS)
    header_project = getattr(record, "project", None)
    for line in record.line_items:
        where = f"line {line.line_number}"
        if value := _id(line.gl_account):
            needs.append(Need("gl_account", (("gl_account", "account"),), value, "id", where))
        for field, ns_field in segments.items():
            ref = getattr(line, field, None)
            if ref is None and field == "project":
                ref = header_project
            sources = _NS_SEGMENTS.get(ns_field)
            if sources and isinstance(ref, Reference) and (value := _id(ref)):
                needs.append(Need(sources[0][0], sources, value, "id", f"{where} {ns_field}"))
    return needs


_SAP_PARTNERS = (("vendor", "A_BusinessPartner"),)
_SAP_ASSIGNMENTS: dict[str, tuple[str, str]] = {
    "CostCenter": ("tracking", "A_CostCenter"),
    "WBSElement": ("tracking", "A_EnterpriseProjectElement"),
}
"""SAP account-assignment property → where its code is cached (internal orders are not read)."""


def _sap(record: CanonicalRecord, options: Mapping[str, Any]) -> list[Need]:
    from ledgerflow.connectors.sap.mapping import DEFAULT_LINE_ASSIGNMENTS, supplier_number

    needs: list[Need] = []
    if record.object_type != "bill" or not isinstance(record, Document):
        return needs
    vendor = getattr(record, "vendor", None)
    if vendor is not None and (number := supplier_number(vendor)):
        needs.append(
            Need(
                "vendor",
                _SAP_PARTNERS,
                number,
                "code",
                "vendor (InvoicingParty)",
                requires=(("vendor", "A_BusinessPartner"), ("vendor", "A_BusinessPartner:created")),
            )
        )
    accounts = options.get("gl_accounts") or {}
    assignments: Mapping[str, str] = options.get("line_assignments", DEFAULT_LINE_ASSIGNMENTS)
    header_project = getattr(record, "project", None)
    for line in record.line_items:
        where = f"line {line.line_number}"
        ref = line.gl_account
        if ref is not None and (code := ref.accounting_custom_id or ref.accounting_id):
            account = str(accounts.get(code, code)) if isinstance(accounts, Mapping) else code
            needs.append(Need("gl_account", (("gl_account", "A_GLAccountInChartOfAccounts"),), account, "code", where))
        for field, sap_property in assignments.items():
            ref = getattr(line, field, None)
            if ref is None and field == "project":
                ref = header_project
            source = _SAP_ASSIGNMENTS.get(sap_property)
            if source and isinstance(ref, Reference) and (code := ref.accounting_custom_id or ref.accounting_id):
                needs.append(Need("tracking", (source,), code, "code", f"{where} {sap_property}"))
    return needs


def _coupa(record: CanonicalRecord, options: Mapping[str, Any]) -> list[Need]:
    # Coupa accounts are combinations of segments: one segment value is not an account code the
    # reader caches, so only the supplier is checked (id, else number).
    vendor = getattr(record, "vendor", None)
    if record.object_type != "bill" or not isinstance(vendor, Reference):
        return []
    suppliers = (("vendor", "suppliers"),)
    if value := _id(vendor):
        return [Need("vendor", suppliers, value, "id", "supplier")]
    if vendor.accounting_custom_id:
        return [Need("vendor", suppliers, vendor.accounting_custom_id, "code", "supplier")]
    return []


_RULES = {"quickbooks": _quickbooks, "xero": _xero, "netsuite": _netsuite, "sap": _sap, "coupa": _coupa}
"""ERP kind → the identifiers its connector sends for a record (see the module docstring); an ERP
without an entry (the generic webhook connector) is not checked."""


def needs_of(erp: str, record: CanonicalRecord, options: Mapping[str, Any]) -> list[Need]:
    """The ERP identifiers ``record`` makes the ``erp`` connector send, to check against the cache."""
    rule = _RULES.get(erp)
    return rule(record, options) if rule is not None else []


def _merged(options: Mapping[str, Any], stored: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """``options`` with the stored tables merged into ``reference_map`` (stored keys win)."""
    yaml_map = options.get("reference_map") or {}
    if not isinstance(yaml_map, Mapping):
        return dict(options)  # malformed: apply_reference_map reports it
    merged: dict[str, Any] = dict(yaml_map)
    for kind, entries in stored.items():
        base = merged.get(kind)
        merged[kind] = {**base, **entries} if isinstance(base, Mapping) else (base if base else dict(entries))
    return {**options, "reference_map": merged}


class ReferenceGuard:
    """Mapping tables and the reference-cache check of one connection (see the module docstring).

    The stored mapping tables and the cache status are read at most every
    ``options.reference_refresh_seconds`` (default 10) per process. A record's identifiers are
    looked up in one query, only those not looked up since the cache status last changed, and
    only when one of the kinds it names is completely cached.
    """

    def __init__(self, connector: Connector, state: StateStore) -> None:
        self.connection = connector.name
        self.erp = connector.erp
        self.options = connector.config.options
        self.enabled = bool(self.options.get("reference_check", True)) and self.erp in _RULES
        self.ttl = float(self.options.get("reference_refresh_seconds", 10))
        self.cache = ReferenceCache(state)
        self.mappings = MappingStore(state)
        self._lock = asyncio.Lock()
        self._tables: dict[str, dict[str, dict[str, str]]] = {}
        self._tables_at = -1e18
        self._status: dict[tuple[str, str], CacheStatus] = {}
        self._status_at = -1e18
        self._found: dict[tuple[Match, str], list[CachedReference]] = {}

    async def _fresh_tables(self) -> dict[str, dict[str, dict[str, str]]]:
        async with self._lock:
            if time.monotonic() - self._tables_at >= self.ttl:
                self._tables = await self.mappings.tables(self.connection)
                self._tables_at = time.monotonic()
            return self._tables

    async def _fresh_status(self) -> dict[tuple[str, str], CacheStatus]:
        async with self._lock:
            if time.monotonic() - self._status_at >= self.ttl:
                status = await self.cache.status(self.connection)
                if status != self._status:
                    self._found.clear()  # a sync wrote the cache: look values up again
                self._status = status
                self._status_at = time.monotonic()
            return self._status

    async def _lookup(self, keys: set[tuple[Match, str]]) -> list[CachedReference]:
        """Cached rows (any kind) whose id, code or name is one of ``keys``; one query for those not seen yet.

        What a value was found as is kept until the cache status changes (a sync pass wrote it),
        at most :data:`_FOUND_MAX` values: the same accounts and vendors recur on most records.
        """
        missing = keys - self._found.keys()
        if missing:
            rows = await self.cache.find(
                self.connection,
                None,
                ids=[v for m, v in missing if m == "id"],
                codes=[v for m, v in missing if m == "code"],
                names=[v for m, v in missing if m == "name"],
            )
            if len(self._found) + len(missing) > _FOUND_MAX:
                self._found.clear()
            for key in missing:
                self._found[key] = [row for row in rows if _field(row, key[0]) == key[1]]
        return [row for key in keys for row in self._found.get(key, [])]

    async def apply_maps(self, record: R) -> R:
        """``record`` with ``options.reference_map`` and the tenant's stored mappings applied (stored wins).

        Raises:
            ReferenceMapError: the YAML table is malformed.
        """
        stored = (await self._fresh_tables()).get(record.tenant)
        options = _merged(self.options, stored) if stored else self.options
        return apply_reference_map(record, options)

    async def check(self, record: CanonicalRecord) -> ErrorInfo | None:
        """``reference.unknown`` naming every identifier of ``record`` absent or inactive in a complete cache, or None.

        Counts ``ledgerflow_reference_preflight_failures_total{connection, kind}`` per missing identifier.
        """
        if not self.enabled:
            return None
        needs = needs_of(self.erp, record, self.options)
        if not needs:
            return None
        status = await self._fresh_status()
        needs = [n for n in needs if all(s in status and status[s].complete for s in n.complete_needed)]
        if not needs:
            return None
        keys: set[tuple[Match, str]] = {(n.match, n.value) for n in needs}
        keys |= {("name", n.parent_name) for n in needs if n.parent_name}
        rows = await self._lookup(keys)
        problems: list[str] = []
        for need in needs:
            found = [row for row in rows if need.matches(row)]
            label, collection = KIND_LABELS.get(need.kind, (need.kind, f"{need.kind}s"))
            synced = min(status[s].synced_at for s in need.complete_needed).isoformat(timespec="seconds")
            if need.parent_name is not None:
                parents = {
                    row.erp_id for row in rows if row.entity == "TrackingCategory" and row.name == need.parent_name
                }
                if not parents:
                    metrics.REFERENCE_PREFLIGHT_FAILURES.labels(self.connection, need.kind).inc()
                    problems.append(
                        f"{need.where}: tracking category {need.parent_name!r} is not in "
                        f"{self.connection}'s {collection} (synced {synced})"
                    )
                    continue
                found = [row for row in found if row.parent_id in parents]
            if any(row.active for row in found):
                continue
            metrics.REFERENCE_PREFLIGHT_FAILURES.labels(self.connection, need.kind).inc()
            state = "is inactive (archived) in" if found else "is not in"
            problems.append(
                f"{need.where}: {label} {need.value} {state} {self.connection}'s {collection} (synced {synced})"
            )
        if not problems:
            return None
        return ErrorInfo(
            code=ErrorCode.REFERENCE_UNKNOWN,
            message="; ".join(problems)
            + f". Nothing was sent to {self.erp}: add or reactivate it there and run `ledgerflow sync-reference "
            f"--connection {self.connection}`, or map the source code to an existing one "
            "(`ledgerflow mappings set`), then retry",
            retriable=False,
        )
