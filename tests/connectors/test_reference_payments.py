"""ERP readers, issue 19: payments, projects and QuickBooks change data capture.

A bill booked by the QuickBooks / Xero connector (binder row as the runtime writes it) and paid in
the sandbox in two parts comes back as two payment records whose ``applied_to`` names the source
document, with the exact Decimal amounts; a payment of a bill ledgerflow did not book has no
source. QuickBooks incremental passes read by change data capture (a change and a deletion),
fall back to the query past 30 days, and a restart resumes without gaps or duplicates. Projects
are read from QuickBooks (``Job`` customers) and the Xero Projects API. No broker: the publisher
keeps what it is given (the Kafka path is ``test_reference_readers``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import inspect

from ledgerflow.connectors.base import Connector, PermanentError
from ledgerflow.connectors.binder import BinderKey, binder_key, documents_of_erp_records, parse_binder_key
from ledgerflow.connectors.quickbooks import QuickBooksConnector
from ledgerflow.connectors.quickbooks import sandbox as qbo_sandbox
from ledgerflow.connectors.quickbooks.reader import QuickBooksReader
from ledgerflow.connectors.reference import ReferenceReader, ReferenceSync
from ledgerflow.connectors.sandbox_kit import serve
from ledgerflow.connectors.xero import XeroConnector
from ledgerflow.connectors.xero import sandbox as xero_sandbox
from ledgerflow.connectors.xero.reader import XeroReader
from ledgerflow.contracts import canonical_id, tenant_scoped
from ledgerflow.contracts.reference import ReferenceRecord
from ledgerflow.contracts.topics import Topics
from ledgerflow.core.outbound.transport import worker_http_client
from ledgerflow.core.settings import ConnectionConfig
from ledgerflow.core.state import StateStore
from tests.connectors.contract import contract_bill, ctx

pytestmark = pytest.mark.timeout(60)

PAGE_SIZE = 2


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """One transport is enough here (the connector tests cover both)."""
    async with worker_http_client("httpx", timeout=httpx.Timeout(5.0)) as client:
        yield client


class _Collected:
    """Publisher that keeps what it was given, parsed back from the bytes a broker would get."""

    def __init__(self) -> None:
        self.records: list[ReferenceRecord] = []

    async def publish(self, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        assert topic.endswith(f".inbound.{json.loads(value)['kind']}.v1")
        self.records.append(ReferenceRecord.model_validate_json(value))

    def of(self, kind: str) -> list[ReferenceRecord]:
        return [r for r in self.records if r.kind == kind]


@dataclass
class Erp:
    """One ERP under test: its connector and reader, and how to pay a bill in its sandbox."""

    name: str
    connector: Connector
    reader: Callable[[], ReferenceReader]
    pay: Callable[[str, Decimal], Awaitable[httpx.Response]]
    store: Any
    paid_entity: str


async def _qbo_pay(connector: QuickBooksConnector, bill_id: str, amount: Decimal) -> httpx.Response:
    response = await connector.client().request(
        "GET", f"/bill/{bill_id}", operation="bill.read", params={"minorversion": "75"}
    )
    vendor = response.json()["Bill"]["VendorRef"]
    body = {
        "VendorRef": {"value": vendor["value"]},
        "PayType": "Check",
        "CheckPayment": {"BankAccountRef": {"value": "35"}},
        "TotalAmt": amount,
        "Line": [{"Amount": amount, "LinkedTxn": [{"TxnId": bill_id, "TxnType": "Bill"}]}],
    }
    return await connector.client().request(
        "POST", "/billpayment", operation="billpayment.create", params={"minorversion": "75"}, json_body=body, ok=(400,)
    )


async def _xero_pay(connector: XeroConnector, bill_id: str, amount: Decimal) -> httpx.Response:
    body = {
        "Payments": [
            {"Invoice": {"InvoiceID": bill_id}, "Account": {"Code": "090"}, "Amount": amount, "Date": "2026-03-20"}
        ]
    }
    return await connector.client().request("PUT", "/Payments", operation="payments.create", json_body=body, ok=(400,))


@pytest.fixture(params=["quickbooks", "xero"])
async def erp(
    request: pytest.FixtureRequest, shared_dir: Path, http: httpx.AsyncClient, state: StateStore
) -> AsyncIterator[Erp]:
    options = {"rate_limit_per_minute": 6000, "create_vendors": True}
    name = f"{request.param}-{uuid.uuid4().hex[:6]}"
    if request.param == "quickbooks":
        app = qbo_sandbox.create_app(spec_path=shared_dir / "specs" / "Finance.xsd", seed_parties=True)
        async with serve(app) as url:
            config = qbo_sandbox.sandbox_connection(ConnectionConfig(erp="quickbooks", options=options), url)
            qbo = QuickBooksConnector(name, config, http, state)
            yield Erp(
                "quickbooks",
                qbo,
                lambda: QuickBooksReader(qbo, page_size=PAGE_SIZE),
                lambda bill, amount: _qbo_pay(qbo, bill, amount),
                app.state.sandbox.store,
                "Bill",
            )
    else:
        app = xero_sandbox.create_app(
            spec_path=shared_dir / "specs" / "xero_accounting.yaml", seed_parties=True, minute_limit=10_000
        )
        async with serve(app) as url:
            config = xero_sandbox.sandbox_connection(ConnectionConfig(erp="xero", options=options), url)
            xero = XeroConnector(name, config, http, state)
            yield Erp(
                "xero",
                xero,
                lambda: XeroReader(xero, page_size=PAGE_SIZE),
                lambda bill, amount: _xero_pay(xero, bill, amount),
                app.state.sandbox.store,
                "Invoice",
            )


def _sync(erp: Erp, state: StateStore, collected: _Collected) -> ReferenceSync:
    return ReferenceSync(erp.reader(), state, collected, Topics("t"), tenant="contract")


async def test_payments_of_a_booked_bill_name_its_source_with_exact_amounts(erp: Erp, state: StateStore) -> None:
    ours = contract_bill("in_paid_1", amounts=("60.00", "40.05"))
    booked = await erp.connector.book(ours, ctx("b1"))
    assert booked.erp_record_id
    await state.put_binding(
        erp.connector.name, binder_key(ours), erp_record_id=booked.erp_record_id, erp_version=None, content_hash="h"
    )
    # Booked in the ERP but not bound: a bill ledgerflow does not know.
    foreign = await erp.connector.book(contract_bill("in_foreign", amounts=("25.00",)), ctx("b2"))
    assert foreign.erp_record_id

    collected = _Collected()
    await _sync(erp, state, collected).sync_once(["payment"])
    assert collected.of("payment") == []

    first = await erp.pay(booked.erp_record_id, Decimal("30.01"))
    assert first.status_code == 200, first.text
    other = await erp.pay(foreign.erp_record_id, Decimal("25.00"))
    assert other.status_code == 200, other.text
    report = await _sync(erp, state, collected).sync_once(["payment"])
    assert report.published == {"payment": 2}

    rest = await erp.pay(booked.erp_record_id, Decimal("70.04"))
    assert rest.status_code == 200, rest.text
    too_much = await erp.pay(booked.erp_record_id, Decimal("0.01"))
    assert too_much.status_code == 400, "the sandbox accepted a payment beyond the open balance"
    # A restarted reader (same state store) reads the new payment and nothing else.
    assert (await _sync(erp, state, collected).sync_once(["payment"])).published == {"payment": 1}
    assert (await _sync(erp, state, collected).sync_once(["payment"])).published == {"payment": 0}

    payments = collected.of("payment")
    assert len({p.erp_id for p in payments}) == 3
    by_document: dict[str, list[ReferenceRecord]] = {}
    for payment in payments:
        (applied,) = payment.applied_to
        by_document.setdefault(applied.erp_id, []).append(payment)
        assert payment.active
        assert payment.currency == "USD"
        assert payment.paid_on is not None
        assert payment.updated_at is not None
        assert applied.entity == erp.paid_entity
        assert applied.amount == payment.amount
        assert isinstance(payment.amount, Decimal)
    ours_paid = by_document[booked.erp_record_id]
    assert [p.amount for p in ours_paid] == [Decimal("30.01"), Decimal("70.04")]
    assert sum((p.amount or Decimal(0) for p in ours_paid), Decimal(0)) == ours.total
    for payment in ours_paid:
        (applied,) = payment.applied_to
        assert (applied.tenant, applied.source, applied.object_type, applied.source_id) == (
            "contract",
            "mercoa",
            "bill",
            "in_paid_1",
        )
        assert Decimal(str(payment.erp_record["Amount" if erp.name == "xero" else "TotalAmt"])) == payment.amount
    (foreign_paid,) = by_document[foreign.erp_record_id]
    (applied,) = foreign_paid.applied_to
    assert applied.amount == Decimal("25.00")
    assert (applied.tenant, applied.source, applied.object_type, applied.source_id) == (None, None, None, None)
    # The ERP agrees: the bill is settled.
    stored = erp.store.get("bill" if erp.name == "quickbooks" else "invoice", booked.erp_record_id)
    if erp.name == "quickbooks":
        assert stored["Balance"] == 0
    else:
        assert (stored["AmountDue"], stored["Status"]) == (0, "PAID")


async def test_projects_are_read(erp: Erp) -> None:
    reader = erp.reader()
    source = next(s for s in reader.sources if s.kind == "project")
    page = await reader.read(source, None, 10)
    (project,) = page.records
    assert (project.kind, project.name, project.active) == ("project", "Harbour St Tower", True)
    if erp.name == "quickbooks":
        assert (project.entity, project.parent_id) == ("Customer", "61")
        customers = next(s for s in reader.sources if s.kind == "customer")
        names = {r.name for r in (await reader.read(customers, None, 10)).records}
        assert "Harbour St Tower" not in names
        assert names
    else:
        riverside = next(c for c in erp.store.all("contact") if c["Name"] == "Riverside Developments")
        assert (project.entity, project.parent_id) == ("Project", riverside["ContactID"])


async def test_quickbooks_cdc_reads_changes_and_deletions(
    shared_dir: Path, http: httpx.AsyncClient, state: StateStore
) -> None:
    app = qbo_sandbox.create_app(spec_path=shared_dir / "specs" / "Finance.xsd", seed_parties=True)
    async with serve(app) as url:
        options = {"rate_limit_per_minute": 6000}
        config = qbo_sandbox.sandbox_connection(ConnectionConfig(erp="quickbooks", options=options), url)
        name = f"qbo-cdc-{uuid.uuid4().hex[:6]}"
        connector = QuickBooksConnector(name, config, http, state)
        client = connector.client()
        params = {"minorversion": "75"}
        bill = await client.request(
            "POST",
            "/bill",
            operation="bill.create",
            params=params,
            json_body={
                "VendorRef": {"value": "56"},
                "Line": [
                    {
                        "Amount": Decimal("500.00"),
                        "DetailType": "AccountBasedExpenseLineDetail",
                        "AccountBasedExpenseLineDetail": {"AccountRef": {"value": "600394"}},
                    }
                ],
            },
        )
        bill_id = bill.json()["Bill"]["Id"]
        payment = await _qbo_pay(connector, bill_id, Decimal("120.50"))
        assert payment.status_code == 200, payment.text
        paid = payment.json()["BillPayment"]

        collected = _Collected()
        first = await ReferenceSync(
            QuickBooksReader(connector, page_size=PAGE_SIZE), state, collected, Topics("t"), tenant="acme"
        ).sync_once()
        assert (first.published["vendor"], first.published["payment"]) == (3, 1)

        def cdc_reads(entity: str) -> float:
            labels = {"erp": "quickbooks", "connection": name, "operation": f"{entity}.cdc", "status": "2xx"}
            return REGISTRY.get_sample_value("ledgerflow_erp_requests_total", labels) or 0.0

        # Pages after the first of a source already have a young cursor: change data capture reads them.
        cdc_before = cdc_reads("vendor") + cdc_reads("billpayment")
        await asyncio.sleep(1.05)  # QuickBooks stamps to the second
        renamed = await client.request(
            "POST",
            "/vendor",
            operation="vendor.update",
            params=params,
            json_body={"Id": "57", "SyncToken": "0", "sparse": True, "DisplayName": "Northwind Electrical Inc"},
        )
        assert renamed.status_code == 200
        deleted = await client.request(
            "POST",
            "/billpayment",
            operation="billpayment.delete",
            params={**params, "operation": "delete"},
            json_body={"Id": paid["Id"], "SyncToken": paid["SyncToken"]},
        )
        assert deleted.status_code == 200
        assert app.state.sandbox.store.get("bill", bill_id)["Balance"] == Decimal("500.00")

        # A restart: a new reader on the same cursors.
        second = await ReferenceSync(
            QuickBooksReader(connector, page_size=PAGE_SIZE), state, collected, Topics("t"), tenant="acme"
        ).sync_once()
        assert (second.published["vendor"], second.published["payment"], second.total) == (1, 1, 2)
        assert cdc_reads("vendor") + cdc_reads("billpayment") >= cdc_before + 2
        vendor = collected.records[-2]
        assert (vendor.erp_id, vendor.name, vendor.active) == ("57", "Northwind Electrical Inc", True)
        gone = collected.records[-1]
        assert (gone.kind, gone.entity, gone.erp_id, gone.active) == ("payment", "BillPayment", paid["Id"], False)
        assert gone.amount is None
        assert gone.applied_to == []
        third = await ReferenceSync(
            QuickBooksReader(connector, page_size=PAGE_SIZE), state, collected, Topics("t"), tenant="acme"
        ).sync_once()
        assert third.total == 0
        keys = [(r.kind, r.key, r.updated_at) for r in collected.records]
        assert len(keys) == len(set(keys)), "a version was published twice"

        # A cursor 40 days old reads by query (the sandbox refuses such a changedSince, as Intuit does).
        reader = QuickBooksReader(connector, page_size=PAGE_SIZE)
        vendors = reader.sources[0]
        old = datetime.now(UTC) - timedelta(days=40)
        assert not reader.uses_cdc(vendors, old)
        assert reader.uses_cdc(vendors, datetime.now(UTC) - timedelta(days=29))
        assert (await reader.read(vendors, old, 10)).complete
        with pytest.raises(PermanentError, match="30 days"):
            await client.request(
                "GET",
                "/cdc",
                operation="cdc",
                params={"entities": "Vendor", "changedSince": old.isoformat(timespec="seconds")},
            )
        with pytest.raises(PermanentError, match="entities"):
            await client.request("GET", "/cdc", operation="cdc", params={"changedSince": datetime.now(UTC).isoformat()})


async def test_quickbooks_sandbox_refuses_payments_qbo_refuses(
    shared_dir: Path, http: httpx.AsyncClient, state: StateStore
) -> None:
    app = qbo_sandbox.create_app(spec_path=shared_dir / "specs" / "Finance.xsd", seed_parties=True)
    async with serve(app) as url:
        config = qbo_sandbox.sandbox_connection(ConnectionConfig(erp="quickbooks"), url)
        connector = QuickBooksConnector("qbo", config, http, state)
        client = connector.client()
        line = {
            "Amount": Decimal("80.00"),
            "DetailType": "SalesItemLineDetail",
            "SalesItemLineDetail": {"ItemRef": {"value": "1"}},
        }
        invoice = await client.request(
            "POST",
            "/invoice",
            operation="invoice.create",
            params={"minorversion": "75"},
            json_body={"CustomerRef": {"value": "61"}, "Line": [line]},
        )
        invoice_id = invoice.json()["Invoice"]["Id"]

        async def pay(customer: str, txn_type: str, amount: str) -> httpx.Response:
            body = {
                "CustomerRef": {"value": customer},
                "TotalAmt": Decimal(amount),
                "Line": [{"Amount": Decimal(amount), "LinkedTxn": [{"TxnId": invoice_id, "TxnType": txn_type}]}],
            }
            return await client.request(
                "POST", "/payment", operation="payment.create", params={"minorversion": "75"}, json_body=body, ok=(400,)
            )

        assert "another customer" in (await pay("62", "Invoice", "10.00")).text
        assert "Invalid Reference Id" in (await pay("61", "Bill", "10.00")).text
        assert "exceeds the open balance" in (await pay("61", "Invoice", "80.01")).text
        assert (await pay("61", "Invoice", "80.00")).status_code == 200
        assert app.state.sandbox.store.get("invoice", invoice_id)["Balance"] == 0
        # The customer payment is read with the invoice it settles (not booked by ledgerflow: no source).
        reader = QuickBooksReader(connector)
        payments = next(s for s in reader.sources if s.entity == "Payment")
        (record,) = (await reader.read(payments, None, 10)).records
        (applied,) = record.applied_to
        assert (record.amount, applied.entity, applied.erp_id, applied.amount) == (
            Decimal("80.00"),
            "Invoice",
            invoice_id,
            Decimal("80.00"),
        )
        assert applied.tenant is None


@pytest.mark.parametrize(
    ("tenant", "source", "object_type", "source_id"),
    [
        ("acme", "mercoa", "bill", "in_1"),
        ("acme-eu", "ingenious", "invoice", "inv:with:colons"),
        ("a:b", "monite", "payment", "p_1"),
    ],
)
def test_binder_keys_parse_back(tenant: str, source: str, object_type: str, source_id: str) -> None:
    bill = contract_bill("in_x")
    key = canonical_id(tenant, source, object_type, source_id)
    assert parse_binder_key(key) == BinderKey(tenant, source, object_type, source_id)
    assert parse_binder_key(binder_key(bill)) == BinderKey("contract", "mercoa", "bill", "in_x")
    assert parse_binder_key(tenant_scoped("acme", "mercoa:bill:in_1")) == BinderKey("acme", "mercoa", "bill", "in_1")


@pytest.mark.parametrize("key", ["acme:vendor-ref:v1", "mercoa:bill:in_1", "vendor-ref:v1", "acme:nosuch:bill:1", ""])
def test_keys_naming_no_document_parse_to_none(key: str) -> None:
    assert parse_binder_key(key) is None


async def test_binder_rows_are_found_by_erp_id_on_an_index(state: StateStore) -> None:
    await state.put_binding("qbo", "acme:mercoa:bill:in_1", erp_record_id="145", erp_version=None, content_hash="h")
    # QuickBooks numbers vendors apart from bills: a vendor reference may share the id.
    await state.put_binding("qbo", "acme:vendor-ref:ent_1", erp_record_id="145", erp_version=None, content_hash="h")
    await state.put_binding("qbo", "acme:monite:invoice:i_9", erp_record_id="146", erp_version=None, content_hash="h")
    await state.put_binding("other", "acme:mercoa:bill:in_2", erp_record_id="145", erp_version=None, content_hash="h")
    rows = await state.bindings_of_erp_records("qbo", ["145", "146", "999"])
    assert [(r.erp_record_id, r.key) for r in rows] == [
        ("145", "acme:mercoa:bill:in_1"),
        ("145", "acme:vendor-ref:ent_1"),
        ("146", "acme:monite:invoice:i_9"),
    ]
    documents = await documents_of_erp_records(state, "qbo", ["145", "146"])
    assert documents == {
        ("145", "bill"): BinderKey("acme", "mercoa", "bill", "in_1"),
        ("146", "invoice"): BinderKey("acme", "monite", "invoice", "i_9"),
    }
    async with state.engine.connect() as conn:
        indexes = await conn.run_sync(lambda sync: inspect(sync).get_indexes("binder"))
    assert {index["name"]: index["column_names"] for index in indexes}["ix_binder_erp_record"] == [
        "connection",
        "erp_record_id",
    ]


class _Failing(_Collected):
    """Publisher that fails (no acknowledgement) on its ``fail_at``-th message, keeping the event ids."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.calls = 0
        self.event_ids: list[tuple[str, str]] = []

    async def publish(self, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise ConnectionError("broker gone")
        await super().publish(topic, key, value, headers)
        self.event_ids.append((key.decode(), headers["ce_id"]))


async def test_a_pass_cut_mid_page_resumes_without_gaps_and_repeats_only_under_the_same_ids(
    erp: Erp, state: StateStore
) -> None:
    bills = []
    for n in range(3):
        booked = await erp.connector.book(contract_bill(f"in_cut_{n}", amounts=("50.00",)), ctx(f"c{n}"))
        assert booked.erp_record_id
        bills.append(booked.erp_record_id)
    for bill in bills:
        for amount in ("10.00", "15.50"):
            assert (await erp.pay(bill, Decimal(amount))).status_code == 200
    failing = _Failing(fail_at=4)  # pages of two: the second record of the second page never reaches Kafka
    with pytest.raises(ConnectionError):
        await _sync(erp, state, failing).sync_once(["payment"])
    resumed = _Failing(fail_at=0)
    await _sync(erp, state, resumed).sync_once(["payment"])
    ids = [r.erp_id for r in failing.records + resumed.records]
    assert len(set(ids)) == 6, "a payment was never published"
    events = failing.event_ids + resumed.event_ids
    repeated = [key for key, _ in events if [k for k, _ in events].count(key) > 1]
    # The record published before the cut, on the page whose cursor was not written, comes again.
    assert len(set(repeated)) == 1, "more than the cut page was published again"
    for key in set(repeated):
        assert len({event for k, event in events if k == key}) == 1, "a repeat under a new event id"
    assert sum((r.amount or Decimal(0) for r in resumed.records), Decimal(0)) > 0
    assert (await _sync(erp, state, _Collected()).sync_once(["payment"])).published == {"payment": 0}


async def test_a_cdc_answer_at_the_cap_is_read_by_query_instead(
    shared_dir: Path, http: httpx.AsyncClient, state: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledgerflow.connectors.quickbooks import reader as qbo_reader

    app = qbo_sandbox.create_app(spec_path=shared_dir / "specs" / "Finance.xsd", seed_parties=True)
    async with serve(app) as url:
        config = qbo_sandbox.sandbox_connection(ConnectionConfig(erp="quickbooks"), url)
        connector = QuickBooksConnector(f"qbo-cap-{uuid.uuid4().hex[:6]}", config, http, state)
        reader = QuickBooksReader(connector, page_size=10)
        vendors = reader.sources[0]
        recent = datetime.now(UTC) - timedelta(minutes=5)
        assert len((await reader.read(vendors, recent, 10)).records) == 3
        monkeypatch.setattr(qbo_reader, "CDC_MAX_OBJECTS", 3)
        calls: list[str] = []
        original = reader._query

        async def spy(source: Any, since: Any, limit: int) -> Any:
            calls.append(source.entity)
            return await original(source, since, limit)

        monkeypatch.setattr(reader, "_query", spy)
        page = await reader.read(vendors, recent, 10)
        assert calls == ["Vendor"], "three objects (the cap) must be read again by query"
        assert {r.erp_id for r in page.records} == {"56", "57", "58"}


@pytest.mark.parametrize("erp", ["xero"], indirect=True)
async def test_xero_refuses_payments_of_one_request_beyond_the_amount_due(erp: Erp) -> None:
    booked = await erp.connector.book(contract_bill("in_two", amounts=("40.00",)), ctx("two"))
    assert isinstance(erp.connector, XeroConnector)
    invoice = {"InvoiceID": booked.erp_record_id}
    body = {
        "Payments": [
            {"Invoice": invoice, "Account": {"Code": "090"}, "Amount": Decimal("30.00"), "Date": "2026-03-20"},
            {"Invoice": invoice, "Account": {"Code": "090"}, "Amount": Decimal("10.01"), "Date": "2026-03-20"},
        ]
    }
    answer = await erp.connector.client().request(
        "PUT", "/Payments", operation="payments.create", json_body=body, ok=(400,)
    )
    assert answer.status_code == 400
    assert "exceeds the amount outstanding" in answer.text
    assert erp.store.all("payment") == []
    zero = await erp.pay(str(booked.erp_record_id), Decimal("0"))
    assert "greater than zero" in zero.text


@pytest.mark.parametrize("erp", ["xero"], indirect=True)
async def test_xero_projects_are_read_page_after_page_as_a_snapshot(
    erp: Erp, state: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledgerflow.connectors.xero import reader as xero_reader

    closed = {"projectId": str(uuid.uuid4()), "name": "Old Depot", "status": "CLOSED", "currencyCode": "USD"}
    erp.store.put("project", closed["projectId"], closed)
    monkeypatch.setattr(xero_reader, "PROJECTS_PAGE_SIZE", 1)
    collected = _Collected()
    first = await _sync(erp, state, collected).sync_once(["project"])
    assert first.published == {"project": 2}
    assert first.reads == 1, "one read of the snapshot source (its pages inside)"
    labels = {"erp": "xero", "connection": erp.connector.name, "operation": "projects.read", "status": "2xx"}
    assert REGISTRY.get_sample_value("ledgerflow_erp_requests_total", labels) == 2, "two pages of one project"
    assert {(r.name, r.active) for r in collected.records} == {("Harbour St Tower", True), ("Old Depot", False)}
    assert (await _sync(erp, state, collected).sync_once(["project"])).published == {"project": 0}
    closed["name"] = "Old Depot (sold)"
    assert (await _sync(erp, state, collected).sync_once(["project"])).published == {"project": 1}
    assert collected.records[-1].name == "Old Depot (sold)"


async def test_a_quiet_quickbooks_entity_stays_on_cdc_and_its_deletions_are_seen(
    shared_dir: Path, http: httpx.AsyncClient, state: StateStore
) -> None:
    """A payment last changed 40 days ago: the cursor is old, but the last complete pass is not."""
    app = qbo_sandbox.create_app(spec_path=shared_dir / "specs" / "Finance.xsd", seed_parties=True)
    store = app.state.sandbox.store
    async with serve(app) as url:
        config = qbo_sandbox.sandbox_connection(ConnectionConfig(erp="quickbooks"), url)
        connector = QuickBooksConnector(f"qbo-quiet-{uuid.uuid4().hex[:6]}", config, http, state)
        client = connector.client()
        line = {
            "Amount": Decimal("75.00"),
            "DetailType": "AccountBasedExpenseLineDetail",
            "AccountBasedExpenseLineDetail": {"AccountRef": {"value": "600394"}},
        }
        bill = await client.request(
            "POST", "/bill", operation="bill.create", json_body={"VendorRef": {"value": "56"}, "Line": [line]}
        )
        paid = (await _qbo_pay(connector, bill.json()["Bill"]["Id"], Decimal("75.00"))).json()["BillPayment"]
        long_ago = (datetime.now(UTC) - timedelta(days=40)).isoformat(timespec="seconds")
        store.get("billpayment", paid["Id"])["MetaData"]["LastUpdatedTime"] = long_ago

        collected = _Collected()

        def sync() -> ReferenceSync:
            return ReferenceSync(QuickBooksReader(connector), state, collected, Topics("t"), tenant="acme")

        assert (await sync().sync_once(["payment"])).published == {"payment": 1}
        cursor = json.loads(await state.get_cursor(f"reference:{connector.name}:payment:BillPayment") or "{}")
        assert cursor["since"] == long_ago
        assert "checked" in cursor
        await client.request(
            "POST",
            "/billpayment",
            operation="billpayment.delete",
            params={"operation": "delete"},
            json_body={"Id": paid["Id"], "SyncToken": paid["SyncToken"]},
        )
        assert (await sync().sync_once(["payment"])).published == {"payment": 1}
        gone = collected.records[-1]
        assert (gone.erp_id, gone.active) == (paid["Id"], False)
        assert (await sync().sync_once(["payment"])).published == {"payment": 0}
