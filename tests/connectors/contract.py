"""The contract every ERP connector passes, against its sandbox over real HTTP.

Plug a connector in by subclassing :class:`ConnectorContract` in a ``test_<erp>.py`` module and
providing a ``target`` fixture that yields a :class:`ContractTarget`::

    from contract import ConnectorContract, ContractTarget

    class TestNetSuiteContract(ConnectorContract):
        @pytest.fixture
        async def target(self, http, state):
            async with serve(create_app()) as url:
                yield ContractTarget(connector=..., bad_credentials=..., control=SandboxControl(http, url),
                                     bill_kind="vendorBill", unsupported=some_record)

The connector must be configured with ``options.timeout_seconds`` ≤ :data:`CLIENT_TIMEOUT` and
must accept GL account ``600394`` (the sandbox seeds it) and reject ``999999``. Bills come from
:func:`contract_bill`; override :meth:`ContractTarget.make_bill` for ERP-specific references.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest

from ledgerflow.connectors.base import (
    BinderEntry,
    Booked,
    Connector,
    ConnectorError,
    HandleContext,
    PermanentError,
    RetriableError,
    Unsupported,
)
from ledgerflow.connectors.sandbox_kit import SandboxControl
from ledgerflow.contracts import (
    Bill,
    Budget,
    BudgetLine,
    CanonicalRecord,
    LineItem,
    Operation,
    Reference,
    SalesOrder,
    VendorRef,
)

KNOWN_GL = "600394"
UNKNOWN_GL = "999999"
CLIENT_TIMEOUT = 0.5
"""``options.timeout_seconds`` contract targets use; injected delays exceed it."""


def contract_bill(
    source_id: str = "in_contract_1",
    *,
    amounts: tuple[str, ...] = ("60.00", "40.00"),
    gl: str = KNOWN_GL,
    vendor: str = "Acme Concrete Supply",
    vendor_source_id: str = "ent_acme",
    memo: str | None = None,
    currency: str = "USD",
) -> Bill:
    """A valid canonical bill with one line per amount, all on GL account ``gl``."""
    lines = [
        LineItem(
            line_number=i + 1,
            description=f"Concrete pour {i + 1}",
            amount=Decimal(a),
            gl_account=Reference(accounting_id=gl),
        )
        for i, a in enumerate(amounts)
    ]
    total = sum((Decimal(a) for a in amounts), Decimal(0))
    return Bill(
        canonical_id=f"contract:mercoa:bill:{source_id}",
        tenant="contract",
        source="mercoa",
        source_id=source_id,
        source_event="invoice.created",
        vendor=VendorRef(source_id=vendor_source_id, name=vendor),
        bill_number=f"INV-{source_id[-6:]}",
        bill_date=date(2026, 3, 2),
        due_date=date(2026, 4, 1),
        currency=currency,
        line_items=lines,
        subtotal=total,
        total=total,
        memo=memo,
    )


def contract_sales_order() -> SalesOrder:
    """A valid canonical sales order (for ERPs without sales orders)."""
    line = LineItem(line_number=1, description="Formwork rental", amount=Decimal("250.00"))
    return SalesOrder(
        canonical_id="contract:accountingsuite:sales_order:so_1",
        tenant="contract",
        source="accountingsuite",
        source_id="so_1",
        source_event="SalesOrder.created",
        customer=Reference(name="Harbour Builders"),
        order_date=date(2026, 3, 2),
        currency="USD",
        line_items=[line],
        subtotal=Decimal("250.00"),
        total=Decimal("250.00"),
    )


def contract_budget() -> Budget:
    """A valid canonical project budget (read-only or absent in several ERPs)."""
    line = BudgetLine(line_number=1, gl_account=Reference(accounting_id=KNOWN_GL), amount=Decimal("5000.00"))
    return Budget(
        canonical_id="contract:ingenious:budget:b_1",
        tenant="contract",
        source="ingenious",
        source_id="b_1",
        source_event="budget.approved",
        currency="USD",
        lines=[line],
        total=Decimal("5000.00"),
    )


def mercoa_sample_bill(sample: bytes) -> Bill:
    """The canonical bill the Mercoa mapper makes of the real ``invoice.created`` sample."""
    import json

    from ledgerflow.contracts.events import EventAttributes
    from ledgerflow.transformers.base import RawEvent
    from ledgerflow.transformers.mercoa.invoice import map_invoice

    attributes = EventAttributes(id="evt-sample", source="mercoa", type="invoice.created", tenant="demo")
    event = RawEvent("demo", "mercoa", "invoice.created", json.loads(sample), sample, attributes)
    (bill,) = map_invoice(event)
    return bill


def ctx(key: str = "k1", existing: BinderEntry | None = None) -> HandleContext:
    """A handle context with idempotency key ``key`` (event id ``evt-<key>``)."""
    return HandleContext(event_id=f"evt-{key}", idempotency_key=key, existing=existing)


def entry(booked: Booked) -> BinderEntry:
    """The binder entry a runtime would store after ``booked``."""
    assert booked.erp_record_id is not None
    return BinderEntry(erp_record_id=booked.erp_record_id, erp_version=booked.erp_version, content_hash="x")


@dataclass
class ContractTarget:
    """What a connector's contract fixture provides.

    ``connector`` is wired to a running sandbox with valid credentials and
    ``options.timeout_seconds = CLIENT_TIMEOUT``; ``bad_credentials`` the same connection with a
    wrong client secret; ``bill_kind`` the sandbox record kind holding bills; ``unsupported`` a
    record the connector must refuse with :class:`Unsupported`.
    """

    connector: Connector
    bad_credentials: Connector
    control: SandboxControl
    bill_kind: str
    unsupported: CanonicalRecord
    make_bill: Callable[..., Bill] = field(default=contract_bill)
    canonical_json: bool = False
    """The ERP receives the canonical JSON itself (in-house ERPs over HTTP)."""

    async def bills(self) -> list[dict[str, Any]]:
        """Bills stored in the sandbox (``{"kind", "id", "total", "record"}``)."""
        return await self.control.records(self.bill_kind)


async def book_with_retries(
    connector: Connector, record: CanonicalRecord, context: HandleContext, *, attempts: int = 6
) -> tuple[Booked, list[RetriableError]]:
    """Call ``handle`` like the runtime does: retry what is retriable (sleeps capped for test speed)."""
    failures: list[RetriableError] = []
    for _ in range(attempts):
        try:
            return await connector.handle(record, context), failures
        except RetriableError as exc:
            failures.append(exc)
            await asyncio.sleep(min(exc.retry_after or 0.01, 0.05))
    raise AssertionError(f"not booked after {attempts} attempts: {[f.code for f in failures]}")


class ConnectorContract:
    """The shared contract suite (collected through ``Test*`` subclasses that provide ``target``)."""

    async def test_create_books_one_record_with_the_payload_total(self, target: ContractTarget) -> None:
        bill = target.make_bill("in_create")
        booked = await target.connector.handle(bill, ctx("k-create"))
        assert booked.operation is Operation.CREATE
        assert booked.erp_record_id
        stored = await target.bills()
        assert [s["id"] for s in stored] == [booked.erp_record_id]
        assert stored[0]["total"] == bill.total

    async def test_update_changes_the_record_in_place(self, target: ContractTarget) -> None:
        first = await target.connector.handle(target.make_bill("in_update"), ctx("k-up-1"))
        changed = target.make_bill("in_update", amounts=("60.00", "45.50"), memo="revised")
        second = await target.connector.handle(changed, ctx("k-up-2", entry(first)))
        assert second.operation is Operation.UPDATE
        assert second.erp_record_id == first.erp_record_id
        stored = await target.bills()
        assert len(stored) == 1
        assert stored[0]["total"] == Decimal("105.50")

    async def test_redelivery_without_binder_entry_books_once(self, target: ContractTarget) -> None:
        bill = target.make_bill("in_redeliver")
        first = await target.connector.handle(bill, ctx("k-redeliver"))
        again = await target.connector.handle(bill, ctx("k-redeliver"))
        assert again.erp_record_id == first.erp_record_id
        assert len(await target.bills()) == 1

    async def test_unknown_gl_account_is_permanent(self, target: ContractTarget) -> None:
        with pytest.raises(PermanentError) as err:
            await target.connector.handle(target.make_bill("in_badgl", gl=UNKNOWN_GL), ctx("k-badgl"))
        assert err.value.message
        assert not err.value.retriable
        assert await target.bills() == []

    async def test_429_storm_is_retriable_with_retry_after_then_succeeds(self, target: ContractTarget) -> None:
        await target.connector.check()
        await target.control.inject(status=429, retry_after=1, count=3)
        booked, failures = await book_with_retries(target.connector, target.make_bill("in_429"), ctx("k-429"))
        assert [f.code for f in failures] == ["http.429"] * 3
        assert all(f.retry_after == 1.0 for f in failures)
        assert booked.erp_record_id
        assert len(await target.bills()) == 1

    async def test_5xx_storm_is_retriable_then_succeeds(self, target: ContractTarget) -> None:
        await target.connector.check()
        await target.control.inject(status=503, count=2)
        booked, failures = await book_with_retries(target.connector, target.make_bill("in_503"), ctx("k-503"))
        assert len(failures) == 2
        assert all(f.http_status == 503 for f in failures)
        await target.control.inject(status=500, count=1)
        with pytest.raises(RetriableError):
            await target.connector.handle(target.make_bill("in_500"), ctx("k-500"))
        assert booked.erp_record_id

    async def test_timeout_is_retriable_and_the_retry_books_once(self, target: ContractTarget) -> None:
        await target.connector.check()
        await target.control.inject(delay=CLIENT_TIMEOUT + 0.5, count=1)
        bill = target.make_bill("in_timeout")
        with pytest.raises(RetriableError) as err:
            await target.connector.handle(bill, ctx("k-timeout"))
        assert err.value.code == "http.timeout"
        booked, _ = await book_with_retries(target.connector, bill, ctx("k-timeout"))
        await asyncio.sleep(CLIENT_TIMEOUT + 0.6)  # let the late request finish on the server side
        again = await target.connector.handle(bill, ctx("k-timeout"))
        assert again.erp_record_id == booked.erp_record_id
        assert len(await target.bills()) == 1

    async def test_connection_drop_is_retriable(self, target: ContractTarget) -> None:
        await target.connector.check()
        await target.control.inject(drop=True, count=1)
        with pytest.raises(RetriableError) as err:
            await target.connector.handle(target.make_bill("in_drop"), ctx("k-drop"))
        assert err.value.code == "http.transport"

    async def test_bad_credentials_are_permanent(self, target: ContractTarget) -> None:
        with pytest.raises(PermanentError) as checked:
            await target.bad_credentials.check()
        assert checked.value.code.startswith("auth.")
        with pytest.raises(PermanentError) as handled:
            await target.bad_credentials.handle(target.make_bill("in_badcreds"), ctx("k-badcreds"))
        assert handled.value.code.startswith("auth.")

    async def test_unsupported_object_is_refused_with_a_reason(self, target: ContractTarget) -> None:
        with pytest.raises(Unsupported) as err:
            await target.connector.handle(target.unsupported, ctx("k-unsupported"))
        assert err.value.message

    @pytest.mark.parametrize("case", ["custom_id", "internal_id_only", "neither"])
    async def test_ingenious_internal_ids_never_reach_the_erp(self, target: ContractTarget, case: str) -> None:
        """Seed 000's three accounting-id cases, for vendor, GL account, cost code and project.

        Whatever the connector does with the bill (books it, or refuses it with a reason), no
        request it sends carries an INGENIOUS internal id (``accounting_*_id``) — in a body, a
        path or a query — and with custom ids present it uses them.
        """
        bill = ingenious_bill(case)
        internal = {ref for ref in INGENIOUS_INTERNAL_IDS.values()}
        sent: list[str] = []

        async def capture(request: httpx.Request) -> None:
            await request.aread()
            sent.append(f"{request.method} {request.url} {request.content.decode('utf-8', 'replace')}")

        http = target.connector.http
        http.event_hooks["request"].append(capture)
        refusal: ConnectorError | None = None
        try:
            await target.connector.handle(bill, ctx(f"k-ingenious-{case}"))
        except (Unsupported, PermanentError) as exc:
            refusal = exc  # a precise refusal is fine; what matters is what was sent
        finally:
            http.event_hooks["request"].remove(capture)
        assert sent or (refusal is not None and refusal.message), "the connector neither sent nor refused"
        if target.canonical_json:
            # in-house ERPs receive the canonical JSON: the ids may only appear labelled as source ids
            sent = [re.sub(r'"source_accounting_id":\s*"[^"]*"', "", line) for line in sent]
        leaked = sorted({i for i in internal for line in sent if i in line})
        assert not leaked, f"INGENIOUS internal ids sent to the ERP: {leaked}"
        if case == "custom_id" and refusal is None:
            used = {c for c in INGENIOUS_CUSTOM_IDS.values() if any(c in line for line in sent)}
            assert used, "custom ids present, but the connector sent none of them"


INGENIOUS_INTERNAL_IDS = {
    "company": "ingint-company-88",
    "entity": "ingint-entity-5",
    "cost_code": "ingint-costcode-310",
    "project": "ingint-project-9",
}
"""INGENIOUS internal ids (``accounting_<kind>_id``) used by :func:`ingenious_bill`."""
INGENIOUS_CUSTOM_IDS = {"company": "V-00412", "entity": KNOWN_GL, "cost_code": "03-3000", "project": "JOB-2024-017"}
"""ERP identifiers (``accounting_<kind>_custom_id``) used by :func:`ingenious_bill`."""


def ingenious_bill(case: str) -> Bill:
    """The canonical bill the INGENIOUS mapper makes of a vendor invoice in one of seed 000's cases.

    ``custom_id``: internal and custom ids set; ``internal_id_only``: only ``accounting_*_id``
    (no Public API configured, so no custom id was fetched); ``neither``: no accounting ids.
    """
    from ledgerflow.contracts.events import EventAttributes
    from ledgerflow.transformers.base import RawEvent
    from ledgerflow.transformers.ingenious.mapping import map_vendor_invoice

    def ids(kind: str) -> dict[str, str]:
        if case == "neither":
            return {}
        found = {f"accounting_{kind}_id": INGENIOUS_INTERNAL_IDS[kind]}
        if case == "custom_id":
            found[f"accounting_{kind}_custom_id"] = INGENIOUS_CUSTOM_IDS[kind]
        return found

    data: dict[str, Any] = {
        "id": f"vi_{case}",
        "vendor_id": "ing-vendor-1",
        "vendor_name": "Acme Concrete Supply",
        "project_id": "ing-project-1",
        "number": f"VI-{case[:6]}",
        "date": "2026-03-02",
        "due_date": "2026-04-01",
        "currency": "USD",
        **ids("company"),
        **ids("project"),
        **ids("entity"),
        "line_items": [
            {
                "id": "li1",
                "cost_code_id": "ing-cc-1",
                "description": "Concrete pour",
                "gross_value": "60.00",
                **ids("cost_code"),
            },
            {
                "id": "li2",
                "cost_code_id": "ing-cc-1",
                "description": "Rebar",
                "gross_value": "40.00",
                **ids("cost_code"),
            },
        ],
    }
    import json

    payload = {"name": "Vendor Invoice", "subject": data["number"], "data": data}
    body = json.dumps(payload).encode()
    attributes = EventAttributes(id=f"evt-{case}", source="ingenious", type="vendor_invoice", tenant="contract")
    event = RawEvent(
        "contract", "ingenious", "vendor_invoice.sync", payload, body, attributes, object_hint="vendor_invoice"
    )
    (bill,) = map_vendor_invoice(event)
    assert isinstance(bill, Bill)
    return bill
