"""Every golden source record through every connector that takes its object, against the sandboxes.

:func:`golden_records` maps each ``tests/golden/<source>/<object>.input.json`` through the
transformers (as ``tests/transformers/test_golden.py`` does); :class:`Matrix` wires one
connector per ERP kind to its in-process sandbox (``httpx.ASGITransport``, no sockets) with the
options an accountant would configure, books each record, reads the ERP's record back
(``Booked.stored`` or ``Connector.read_back``, as the runtime does) and classifies the outcome:

* ``reconciled`` — booked, and what the ERP holds equals the canonical document
  (:func:`ledgerflow.connectors.verify.compare`: total, tax, shipping, discount, currency, dates,
  counterparty, lines); for records without figures (vendors, payments), booked;
* ``precise`` — ``skipped`` (:class:`Unsupported`) or ``failed`` (:class:`PermanentError`) with a
  reason naming what is wrong (a message of more than a few words);
* ``wrong`` — booked but the ERP holds something else, or a failure without a usable reason;
* ``unverified`` — booked, the connector cannot read back, and the sandbox's own total (what the
  ERP computed) is used instead: equal total → ``reconciled``, else ``wrong``.

Run ``python -m tests.connectors.matrix`` for the table.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from ledgerflow.connectors.base import (
    Booked,
    Connector,
    ConnectorError,
    HandleContext,
    PermanentError,
    RetriableError,
    Unsupported,
)
from ledgerflow.connectors.coupa import sandbox as coupa_sandbox
from ledgerflow.connectors.registry import connector_class, sandbox_module
from ledgerflow.connectors.sap import sandbox as sap_sandbox
from ledgerflow.connectors.sap.mapping import supplier_number as sap_supplier_number
from ledgerflow.connectors.verify import compare, describe
from ledgerflow.contracts import OBJECT_MODELS, Bill, CanonicalRecord, Document, Operation, Party
from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.core.settings import ConnectionConfig
from ledgerflow.core.state import StateStore
from ledgerflow.transformers.base import SkipEvent
from tests.transformers.transformer_helpers import map_event, raw_event

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
SHARED = Path(__file__).resolve().parents[3] / "shared"
ERPS = ("quickbooks", "xero", "netsuite", "sap", "coupa", "http")

OPTIONS: dict[str, dict[str, Any]] = {
    "quickbooks": {
        "default_expense_account": "600394",
        "tax_account": "7",
        "shipping_account": "7",
        "discount_account": "7",
        "default_item": "1",
        "default_bank_account": "35",
        "create_vendors": True,
    },
    "xero": {
        "default_expense_account": "429",
        "default_revenue_account": "200",
        "tax_account": "429",
        "shipping_account": "429",
        "discount_account": "429",
        "default_bank_account": "090",
        "create_vendors": True,
    },
    "netsuite": {"default_expense_account": "600394", "default_item": "5"},
    "sap": {"default_expense_account": "61008000", "default_tax_code": "V1", "discount_gl_account": "52080000"},
    "coupa": {"default_expense_account": "6000", "discount_account": "4900"},
    "http": {},
}
"""What an accountant configures per connection (default accounts and items, charge accounts)."""


def golden_records(shared: Path = SHARED) -> list[tuple[str, CanonicalRecord]]:
    """``(golden case, canonical record)`` for every golden input, mapped through the transformers."""
    out: list[tuple[str, CanonicalRecord]] = []
    for path in sorted(GOLDEN.glob("*/*.input.json")):
        spec = json.loads(path.read_text(encoding="utf-8"))
        if "payload_from_shared" in spec:
            source = shared / spec["payload_from_shared"]
            if not source.is_file():
                continue
            spec["payload"] = json.loads(source.read_text(encoding="utf-8"))
        event = raw_event(
            path.parent.name,
            spec["event_type"],
            spec["payload"],
            tenant=spec.get("tenant", "acme"),
            object_hint=spec.get("object_hint"),
            method=spec.get("method", "POST"),
            enrichment=spec.get("enrichment"),
        )
        case = f"{path.parent.name}/{path.name.removesuffix('.input.json')}"
        try:
            records = map_event(event)
        except (ValueError, SkipEvent):
            continue  # refused (dead-lettered) or skipped by the transformers: nothing reaches an ERP
        out.extend((case, record) for record in records)
    return out


def _order(record: CanonicalRecord) -> int:
    """Parties first (so documents can name them), then documents, then payments."""
    if isinstance(record, Party):
        return 0
    if isinstance(record, Document):
        return 1
    return 2


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one record fared in one ERP."""

    case: str
    canonical_id: str
    object_type: str
    erp: str
    verdict: str  # reconciled | precise | wrong
    detail: str


def _precise(exc: ConnectorError) -> bool:
    """A reason an operator can act on: a code and a message of a few words at least."""
    return bool(exc.code) and len(exc.message.split()) >= 4


def _seed_apps(records: Iterable[CanonicalRecord]) -> dict[str, FastAPI]:
    """Each ERP's sandbox, seeded with the counterparties the golden documents name.

    Reference checks stay as strict as the ERPs (the strictness tests cover them; NetSuite's
    entity and account existence checks are off here); what the matrix measures is whether the
    figures an ERP stores are the source's.
    """
    bills = [r for r in records if isinstance(r, Bill)]
    sap_suppliers: dict[str, dict[str, str]] = {row["Supplier"]: dict(row) for row in sap_sandbox.DEFAULT_SUPPLIERS}
    for row in sap_suppliers.values():
        row["SupplierFullName"] = row["SupplierName"]
    coupa_suppliers: dict[str, tuple[str, str]] = dict(coupa_sandbox.DEMO_SUPPLIERS)
    for n, bill in enumerate(bills, start=1):
        name = bill.vendor.name or f"Vendor {n}"
        number = sap_supplier_number(bill.vendor)
        if number is not None:
            sap_suppliers.setdefault(number, {"Supplier": number, "SupplierName": name[:35], "SupplierFullName": name})
        elif not any(row["SupplierFullName"] == name for row in sap_suppliers.values()):
            sap_suppliers[f"90{n:05d}"] = {
                "Supplier": f"90{n:05d}",
                "SupplierName": name[:35],
                "SupplierFullName": name,
            }
        vendor_id = bill.vendor.accounting_id if (bill.vendor.accounting_id or "").isdigit() else str(100 + n)
        coupa_suppliers.setdefault(str(vendor_id), (bill.vendor.accounting_custom_id or f"S-{n}", name))
    return {
        "quickbooks": sandbox_module("quickbooks").create_app(),
        "xero": sandbox_module("xero").create_app(minute_limit=100_000, concurrent_limit=100),
        "netsuite": sandbox_module("netsuite").create_app(strict=False),
        "sap": sandbox_module("sap").create_app(supplier_records=list(sap_suppliers.values())),
        "coupa": sandbox_module("coupa").create_app(suppliers=coupa_suppliers),
        "http": sandbox_module("http").create_app(),
    }


def _unique(records: list[tuple[str, CanonicalRecord]]) -> list[tuple[str, CanonicalRecord]]:
    """Golden cases that share a source id or document number (variants of one document) become distinct.

    The second and later records with a canonical id or document number already seen get
    ``~<n>`` appended to their source id and document number, so each variant is booked as its
    own document (an ERP would otherwise, rightly, see a redelivery, an update or a duplicate).
    """
    seen: set[str] = set()
    numbers: set[str] = set()
    out: list[tuple[str, CanonicalRecord]] = []
    for n, (case, record) in enumerate(records):
        number = next(
            (str(getattr(record, k)) for k in ("bill_number", "invoice_number") if getattr(record, k, None)), None
        )
        if record.canonical_id in seen or (number is not None and f"{record.object_type}:{number}" in numbers):
            suffix = f"~{n}"
            update: dict[str, Any] = {
                "source_id": record.source_id + suffix,
                "canonical_id": record.canonical_id + suffix,
            }
            for number in ("bill_number", "invoice_number", "number"):
                if getattr(record, number, None):
                    update[number] = getattr(record, number) + suffix
            record = record.model_copy(update=update)
        seen.add(record.canonical_id)
        for k in ("bill_number", "invoice_number"):
            if getattr(record, k, None):
                numbers.add(f"{record.object_type}:{getattr(record, k)}")
        out.append((case, record))
    return out


class Matrix:
    """One connector per ERP kind, each on its own in-process sandbox."""

    def __init__(self, apps: dict[str, FastAPI], connectors: dict[str, Connector]) -> None:
        self.apps = apps
        self.connectors = connectors
        self.seconds: dict[str, float] = {}

    @classmethod
    @asynccontextmanager
    async def open(cls, records: list[CanonicalRecord], erps: Iterable[str] = ERPS) -> AsyncIterator[Matrix]:
        """Sandboxes and connectors for ``erps``, torn down on exit."""
        apps = _seed_apps(records)
        objects = sorted({r.object_type for r in records} or OBJECT_MODELS)
        async with AsyncExitStack() as stack:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            state = StateStore(f"sqlite+aiosqlite:///{folder / 'state.db'}")
            await state.create_all()
            stack.push_async_callback(state.close)
            connectors: dict[str, Connector] = {}
            for erp in erps:
                app = apps[erp]
                http = await stack.enter_async_context(
                    httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=10)
                )
                # The ERPs' per-minute limits are the sandboxes' business here, not the client's.
                options = {**OPTIONS[erp], "rate_limit_per_minute": 1_000_000}
                base = ConnectionConfig(erp=erp, objects=objects, options=options)
                config = sandbox_module(erp).sandbox_connection(base, f"http://{erp}.sandbox")
                connectors[erp] = connector_class(erp)(f"matrix-{erp}", config, http, state)
            yield cls(apps, connectors)

    async def book(self, case: str, record: CanonicalRecord, erp: str) -> Outcome:
        """Book ``record`` in ``erp`` and judge what the ERP holds."""
        connector = self.connectors[erp]

        def outcome(verdict: str, detail: str) -> Outcome:
            return Outcome(case, record.canonical_id, record.object_type, erp, verdict, detail)

        if record.object_type not in connector.supports:
            return outcome("precise", f"skipped: {erp} does not take {record.object_type}")
        key = hashlib.sha256(f"{erp}\x00{record.canonical_id}".encode()).hexdigest()[:32]
        context = HandleContext(event_id=f"evt-{record.canonical_id}", idempotency_key=key, existing=None)
        booked: Booked | None = None
        last = RetriableError(ErrorCode.HTTP_5XX, "not tried")
        for _ in range(3):
            try:
                booked = await connector.handle(record, context)
                break
            except RetriableError as exc:
                last = exc
                await asyncio.sleep(min(exc.retry_after or 0.01, 0.05))
            except (Unsupported, PermanentError) as exc:
                kind = "skipped" if isinstance(exc, Unsupported) else "failed"
                verdict = "precise" if _precise(exc) else "wrong"
                return outcome(verdict, f"{kind} {exc.code}: {exc.message}")
        if booked is None:
            if last.code in (ErrorCode.REFERENCE_PENDING, ErrorCode.RECORD_NOT_BOOKED):
                # Waiting for the document it refers to (parked and retried by the runtime).
                return outcome("precise", f"pending: {last.message}")
            return outcome("wrong", f"retriable until the end: {last.code}: {last.message}")
        if not isinstance(record, Document) or booked.operation not in (Operation.CREATE, Operation.UPDATE):
            return outcome("reconciled", f"booked {booked.erp_record_id}")
        try:
            stored = booked.stored or await connector.read_back(record, booked)
        except ConnectorError as exc:
            return outcome("wrong", f"booked but the read-back failed: {exc.code}: {exc.message}")
        if stored is None:
            totals = [
                Decimal(str(t))
                for kind, items in self.apps[erp].state.sandbox.store.records.items()
                for rid, rec in items.items()
                if rid == booked.erp_record_id and (t := self.apps[erp].state.sandbox.total_of(kind, rec)) is not None
            ]
            if totals and totals[0] == record.total:
                return outcome("reconciled", "total matches (the connector cannot read back)")
            return outcome("wrong", f"stored total {totals[:1]} vs source {record.total} (no read-back)")
        differences = compare(record, stored, counterparty_id=booked.counterparty_id)
        if differences:
            return outcome("wrong", describe(differences, erp))
        return outcome("reconciled", f"booked {booked.erp_record_id}, read back equal")

    async def run(self, cases: list[tuple[str, CanonicalRecord]]) -> list[Outcome]:
        """Book every record in every ERP of the matrix (parties first)."""
        ordered = sorted(cases, key=lambda item: _order(item[1]))
        out: list[Outcome] = []
        for erp in self.connectors:
            started = time.monotonic()
            for case, record in ordered:
                out.append(await self.book(case, record, erp))
            self.seconds[erp] = time.monotonic() - started
        return out


def summary(outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
    """Verdict counts per ERP."""
    table: dict[str, dict[str, int]] = {}
    for item in outcomes:
        row = table.setdefault(item.erp, {"reconciled": 0, "precise": 0, "wrong": 0})
        row[item.verdict] += 1
    return table


def _lines(outcomes: list[Outcome]) -> Iterator[str]:
    for erp, row in summary(outcomes).items():
        yield f"{erp:<11} " + "  ".join(f"{k} {v:>3}" for k, v in row.items())
    for item in outcomes:
        if item.verdict != "reconciled":
            yield f"  {item.verdict:<8} {item.erp:<10} {item.case:<32} {item.object_type:<15} {item.detail[:160]}"


async def _main() -> None:
    started = time.monotonic()
    cases = _unique(golden_records())
    async with Matrix.open([r for _, r in cases]) as matrix:
        outcomes = await matrix.run(cases)
    for line in _lines(outcomes):
        print(line)
    print(matrix.seconds)
    print(f"{len(cases)} records × {len(ERPS)} ERPs in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    asyncio.run(_main())
