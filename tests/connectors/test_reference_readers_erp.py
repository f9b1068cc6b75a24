"""ERP readers of NetSuite, SAP S/4HANA and Coupa (issue 19) against their sandboxes.

Each sandbox runs on a clock the test moves. Per ERP: the first pass publishes every seeded
record of every kind once (pages of two, so records sharing one change time straddle page
boundaries); a record changed in the sandbox afterwards is the only one the next pass publishes;
a reader that fails after some pages is restarted on the same state store and publishes the rest
without gaps or duplicates; inactive records are marked inactive; a query the vendor would refuse
is refused in the vendor's error shape. One test runs the three through the real broker.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from faststream.kafka import KafkaBroker

from ledgerflow.connectors.base import Connector, PermanentError, RetriableError
from ledgerflow.connectors.binder import binder_key
from ledgerflow.connectors.coupa import sandbox as coupa_sandbox
from ledgerflow.connectors.coupa.connector import CoupaConnector
from ledgerflow.connectors.coupa.reader import CoupaReader
from ledgerflow.connectors.netsuite import sandbox as ns_sandbox
from ledgerflow.connectors.netsuite.connector import NetSuiteConnector
from ledgerflow.connectors.netsuite.reader import NetSuiteReader
from ledgerflow.connectors.reference import (
    READERS,
    KafkaReferencePublisher,
    ReferenceReader,
    ReferenceSync,
    reader_class,
)
from ledgerflow.connectors.sandbox_kit import serve
from ledgerflow.connectors.sap import sandbox as sap_sandbox
from ledgerflow.connectors.sap.connector import SapConnector
from ledgerflow.connectors.sap.reader import SapReader
from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.contracts.reference import INBOUND_KINDS, ReferenceRecord
from ledgerflow.contracts.topics import Topics
from ledgerflow.core.kafka import broker_from_settings, ensure_topics
from ledgerflow.core.outbound.transport import worker_http_client
from ledgerflow.core.settings import ConnectionConfig, Settings
from ledgerflow.core.state import StateStore
from tests.connectors.contract import contract_bill
from tests.connectors.test_reference_readers import _consume

pytestmark = pytest.mark.timeout(60)

PAGE_SIZE = 2
START = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


class Clock:
    """A sandbox clock the test moves."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float = 5) -> None:
        self.now += timedelta(seconds=seconds)


class Collected:
    """Publisher that keeps what it was given (no broker)."""

    def __init__(self) -> None:
        self.records: list[ReferenceRecord] = []

    async def publish(self, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        record = ReferenceRecord.model_validate_json(value)
        assert topic.endswith(f".inbound.{record.kind}.v1")
        assert headers["ce_direction"] == "inbound"
        self.records.append(record)


@dataclass
class Erp:
    """One ERP under test: connector and reader factories, seeded counts, how to change a record."""

    name: str
    connector: Callable[[httpx.AsyncClient, StateStore], Connector]
    seeded: dict[str, int]
    inactive: set[tuple[str, str]]
    """(entity, erp id) of seeded records the ERP marks inactive."""
    change_vendor: Callable[[Connector], Awaitable[str]]
    """Rename one seeded vendor through the sandbox; returns its ERP id."""
    bad_query: Callable[[Connector], Awaitable[Any]]
    """A read the vendor refuses (bad filter syntax)."""
    clock: Clock = field(default_factory=Clock)

    def reader(self, connector: Connector, page_size: int = PAGE_SIZE) -> ReferenceReader:
        return reader_class(self.name)(connector, page_size=page_size)


# NetSuite


async def _ns_change_vendor(connector: Connector) -> str:
    assert isinstance(connector, NetSuiteConnector)
    await connector.client.request(
        "PATCH", "/vendor/1003", operation="vendor.update", json_body={"companyName": "Northwind Electrical Pty"}
    )
    return "1003"


async def _ns_bad_query(connector: Connector) -> Any:
    assert isinstance(connector, NetSuiteConnector)
    url = connector.client.base_url.removesuffix("/services/rest/record/v1") + ns_sandbox.SUITEQL_PATH
    return await connector.client.request(
        "POST",
        url,
        operation="vendor.suiteql",
        params={"limit": 10, "offset": 0},
        json_body={"q": "SELECT id FROM vendor WHERE lastmodifieddate >= '2026-01-01'"},
        headers={"Prefer": "transient"},
    )


# SAP


def _sap_change_vendor(app: Any) -> Callable[[Connector], Awaitable[str]]:
    async def change(connector: Connector) -> str:
        # A supplier never changed since its creation: its first change moves it to the other source.
        app.state.sap.reference.change("A_BusinessPartner", "1000100", {"BusinessPartnerFullName": "Northwind US"})
        return "1000100"

    return change


async def _sap_bad_query(connector: Connector) -> Any:
    assert isinstance(connector, SapConnector)
    url = str(connector.config.base_url).rstrip("/") + "/sap/opu/odata/sap/API_BUSINESS_PARTNER/A_BusinessPartner"
    # A date compared with a text literal: SAP Gateway refuses the $filter.
    return await connector.client.request(
        "GET", url, operation="bp.read", params={"$filter": "LastChangeDate ge '2026-01-01'", "$format": "json"}
    )


# Coupa


async def _coupa_change_vendor(connector: Connector) -> str:
    assert isinstance(connector, CoupaConnector)
    await connector.client.request(
        "PUT", "/api/suppliers/22", operation="vendor.update", json_body={"name": "Northwind Electrical Pty"}
    )
    return "22"


async def _coupa_bad_query(connector: Connector) -> Any:
    assert isinstance(connector, CoupaConnector)
    # "contains" is not used with date fields (Compass "Querying Options").
    return await connector.client.request(
        "GET", "/api/suppliers", operation="suppliers.read", params={"updated_at[contains]": "2026"}
    )


@pytest.fixture(params=["netsuite", "sap", "coupa"])
async def erp(request: pytest.FixtureRequest, shared_dir: Path) -> AsyncIterator[Erp]:
    clock = Clock()
    if request.param == "netsuite":
        app = ns_sandbox.create_app(shared_dir / "specs" / "netsuite-oas.json", seed_parties=True, clock=clock)
        async with serve(app) as url:
            config = ns_sandbox.sandbox_connection(
                ConnectionConfig(erp="netsuite", options={"rate_limit_per_minute": 60000}), url
            )
            yield Erp(
                "netsuite",
                lambda http, state: NetSuiteConnector("ns", config, http, state),
                {"vendor": 4, "customer": 2, "gl_account": 8, "tax_rate": 3, "tracking": 6, "project": 2},
                {("vendor", "1004"), ("classification", "112"), ("job", "132")},
                _ns_change_vendor,
                _ns_bad_query,
                clock,
            )
    elif request.param == "sap":
        app = sap_sandbox.create_app(shared_dir / "specs" / "sap_si.edmx", seed_parties=True, clock=clock)
        async with serve(app) as url:
            config = sap_sandbox.sandbox_connection(
                ConnectionConfig(erp="sap", options={"rate_limit_per_minute": 60000}), url
            )
            yield Erp(
                "sap",
                lambda http, state: SapConnector("s4", config, http, state),
                {"vendor": 8, "customer": 2, "gl_account": 7, "tracking": 6, "project": 2},
                {
                    ("A_BusinessPartner", "1000130"),
                    ("A_GLAccountInChartOfAccounts", "61009000"),
                    ("A_CostCenter", "10101301"),
                    ("A_EnterpriseProject", "0a1b2c3d-0000-4000-8000-000000000009"),
                },
                _sap_change_vendor(app),
                _sap_bad_query,
                clock,
            )
    else:
        app = coupa_sandbox.create_app(seed_parties=True, clock=clock)
        async with serve(app) as url:
            config = coupa_sandbox.sandbox_connection(
                ConnectionConfig(erp="coupa", options={"rate_limit_per_minute": 60000}), url
            )
            yield Erp(
                "coupa",
                lambda http, state: CoupaConnector("coupa", config, http, state),
                {"vendor": 4, "gl_account": 4, "tax_rate": 3, "tracking": 4},
                {("suppliers", "23"), ("accounts", "104"), ("tax_codes", "203"), ("lookup_values", "304")},
                _coupa_change_vendor,
                _coupa_bad_query,
                clock,
            )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with worker_http_client("httpx", timeout=httpx.Timeout(5.0)) as client:
        yield client


def _published(records: list[ReferenceRecord]) -> dict[str, int]:
    counts = Counter(r.kind for r in records)
    return {kind: counts[kind] for kind in sorted(counts)}


async def test_every_kind_once_then_only_what_changed(erp: Erp, http: httpx.AsyncClient, state: StateStore) -> None:
    connector = erp.connector(http, state)
    collected = Collected()
    sync = ReferenceSync(erp.reader(connector), state, collected, Topics("t"), tenant="acme")
    first = await sync.sync_once()
    assert {k: v for k, v in first.published.items() if v} == erp.seeded
    assert _published(collected.records) == dict(sorted(erp.seeded.items()))
    keys = Counter(r.key for r in collected.records)
    assert max(keys.values()) == 1, "a record was published twice"
    # Pages of two over records sharing one change time: more reads than sources.
    assert first.reads > len(sync.reader.sources)
    for record in collected.records:
        assert record.erp == erp.name
        assert record.name
        assert record.active is ((record.entity, record.erp_id) not in erp.inactive), record

    # Nothing changed: nothing published.
    assert (await sync.sync_once()).total == 0

    erp.clock.tick()
    changed = await erp.change_vendor(connector)
    collected.records.clear()
    second = await sync.sync_once()
    assert second.total == 1
    (again,) = collected.records
    assert (again.kind, again.erp_id) == ("vendor", changed)
    assert again.updated_at == erp.clock.now.replace(microsecond=0)

    # A restart on the same state store: nothing new.
    restarted = ReferenceSync(erp.reader(erp.connector(http, state)), state, collected, Topics("t"), tenant="acme")
    assert (await restarted.sync_once()).total == 0


@pytest.mark.parametrize("erp", ["netsuite"], indirect=True)
async def test_a_record_changed_twice_within_one_second_is_published_again(
    erp: Erp, http: httpx.AsyncClient, state: StateStore
) -> None:
    """NetSuite stamps lastModifiedDate to the second: a second change within it is not lost."""
    connector = erp.connector(http, state)
    assert isinstance(connector, NetSuiteConnector)
    collected = Collected()
    sync = ReferenceSync(erp.reader(connector), state, collected, Topics("t"), tenant="acme")
    await sync.sync_once()
    erp.clock.tick()
    names = []
    for name in ("Northwind Electrical Pty", "Northwind Electrical Pty Ltd"):
        # Same clock second for both changes: the ERP's change time does not move between them.
        await connector.client.request(
            "PATCH", "/vendor/1003", operation="vendor.update", json_body={"companyName": name}
        )
        collected.records.clear()
        assert (await sync.sync_once()).total == 1
        (record,) = collected.records
        names.append(record.name)
    assert names == ["Northwind Electrical Pty", "Northwind Electrical Pty Ltd"]
    # Nothing changed since: nothing published, after a restart either.
    assert (await sync.sync_once()).total == 0
    restarted = ReferenceSync(erp.reader(erp.connector(http, state)), state, collected, Topics("t"), tenant="acme")
    assert (await restarted.sync_once()).total == 0


async def test_a_restart_resumes_without_gaps_or_duplicates(
    erp: Erp, http: httpx.AsyncClient, state: StateStore
) -> None:
    """The reader fails on its second read (vendors sharing one change time, the first page published).

    A new reader on the same cursors publishes exactly the rest: the seen ids at the cursor's
    change time are skipped, the others of that time are not.
    """
    connector = erp.connector(http, state)
    collected = Collected()
    reader = erp.reader(connector)
    original = reader.read
    reads = 0

    async def failing(source: Any, since: Any, limit: int) -> Any:
        nonlocal reads
        reads += 1
        if reads == 2:
            raise RetriableError(ErrorCode.HTTP_5XX, "injected")
        return await original(source, since, limit)

    reader.read = failing  # type: ignore[method-assign]
    sync = ReferenceSync(reader, state, collected, Topics("t"), tenant="acme")
    with pytest.raises(RetriableError):
        await sync.sync_once()
    assert [r.kind for r in collected.records] == ["vendor"] * PAGE_SIZE

    restarted = ReferenceSync(erp.reader(erp.connector(http, state)), state, collected, Topics("t"), tenant="acme")
    await restarted.sync_once()
    keys = Counter(r.key for r in collected.records)
    assert max(keys.values()) == 1, f"published twice: {[k for k, n in keys.items() if n > 1]}"
    assert _published(collected.records) == dict(sorted(erp.seeded.items()))


async def test_a_query_the_vendor_refuses_is_a_permanent_error(
    erp: Erp, http: httpx.AsyncClient, state: StateStore
) -> None:
    with pytest.raises(PermanentError) as caught:
        await erp.bad_query(erp.connector(http, state))
    assert caught.value.code == ErrorCode.ERP_VALIDATION


async def test_a_page_holds_at_most_the_page_size(erp: Erp, http: httpx.AsyncClient, state: StateStore) -> None:
    reader = erp.reader(erp.connector(http, state))
    vendors = [s for s in reader.sources if s.kind == "vendor"]
    page = await reader.read(vendors[0], None, PAGE_SIZE)
    assert len(page.records) == PAGE_SIZE
    assert not page.complete
    everything = []
    for source in vendors:
        rest = await reader.read(source, None, 50)
        assert rest.complete
        stamps = [r.updated_at for r in rest.records]
        assert all(s is not None for s in stamps)
        assert stamps == sorted(stamps)  # type: ignore[type-var]
        everything.extend(rest.records)
    assert len(everything) == erp.seeded["vendor"]
    # Asked from the newest change time on: only what changed then.
    erp.clock.tick()
    changed = await erp.change_vendor(erp.connector(http, state))
    latest = [r.erp_id for source in vendors for r in (await reader.read(source, erp.clock.now, 50)).records]
    assert latest == [changed]


def test_sync_reference_help_names_every_erp_with_a_reader() -> None:
    from typer.testing import CliRunner

    from ledgerflow.app.cli import app as cli_app

    result = CliRunner().invoke(cli_app, ["sync-reference", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for erp_name in READERS:
        assert erp_name in result.output, erp_name


def test_readers_are_registered() -> None:
    assert {"netsuite", "sap", "coupa"} <= set(READERS)
    assert reader_class("coupa") is CoupaReader
    assert reader_class("netsuite") is NetSuiteReader
    assert reader_class("sap") is SapReader


@pytest.mark.kafka
async def test_published_to_the_inbound_topics(
    erp: Erp, http: httpx.AsyncClient, state: StateStore, kafka_bootstrap: str
) -> None:
    topics = Topics(f"erp{uuid.uuid4().hex[:8]}")
    await ensure_topics(kafka_bootstrap, [topics.inbound(kind) for kind in INBOUND_KINDS], partitions=1)
    kafka: KafkaBroker = broker_from_settings(Settings(), kafka_bootstrap, embedded=True)
    await kafka.connect()
    try:
        sync = ReferenceSync(
            erp.reader(erp.connector(http, state), page_size=50),
            state,
            KafkaReferencePublisher(kafka),
            topics,
            tenant="acme",
        )
        report = await sync.sync_once()
    finally:
        await kafka.stop()
    expected = sum(erp.seeded.values())
    assert report.total == expected
    messages = await _consume(kafka_bootstrap, topics, expected)
    assert len(messages) == expected
    for message in messages:
        headers = {k: v.decode() for k, v in message.headers}
        assert headers["ce_direction"] == "inbound"
        body = json.loads(message.value)
        assert message.topic == topics.inbound(body["kind"])
        assert body["erp"] == erp.name


async def test_coupa_pages_beyond_50_records_sharing_one_change_time(
    http: httpx.AsyncClient, state: StateStore
) -> None:
    """Coupa answers at most 50 a request: 64 suppliers changed in one second, pages of 40, each once."""
    clock = Clock()
    app = coupa_sandbox.create_app(seed_parties=True, clock=clock)
    async with serve(app) as url:
        config = coupa_sandbox.sandbox_connection(
            ConnectionConfig(erp="coupa", options={"rate_limit_per_minute": 60000}), url
        )
        connector = CoupaConnector("coupa", config, http, state)
        clock.tick()
        for n in range(60):
            await connector.client.request(
                "POST", "/api/suppliers", operation="vendor.create", json_body={"name": f"Trade {n:02d}"}
            )
        collected = Collected()
        reader = CoupaReader(connector, page_size=40)
        sync = ReferenceSync(reader, state, collected, Topics("t"), tenant="acme")
        vendors = next(s for s in reader.sources if s.kind == "vendor")
        report = await sync.sync_once(kinds=["vendor"])
        assert report.published == {"vendor": 64}
        assert len({r.erp_id for r in collected.records}) == 64
        assert report.reads >= 2
        assert (await sync.sync_once(kinds=["vendor"])).total == 0
        # A page larger than 50 is read in requests of 50.
        page = await reader.read(vendors, None, 70)
        assert len(page.records) == 64
        assert page.complete


@pytest.mark.parametrize(
    ("erp_name", "method", "path", "params", "body", "headers"),
    [
        (
            "netsuite",
            "POST",
            ns_sandbox.SUITEQL_PATH,
            {"limit": 10, "offset": 5},
            {"q": "SELECT id FROM vendor"},
            {"Prefer": "transient"},
        ),
        ("netsuite", "POST", ns_sandbox.SUITEQL_PATH, {"limit": 10}, {"q": "SELECT id FROM vendor"}, {}),
        (
            "netsuite",
            "POST",
            ns_sandbox.SUITEQL_PATH,
            {"limit": 10},
            {"q": "SELECT id, nosuchcolumn FROM vendor"},
            {"Prefer": "transient"},
        ),
        (
            "netsuite",
            "POST",
            ns_sandbox.SUITEQL_PATH,
            {"limit": 10},
            {"q": "SELECT id FROM nosuchtable"},
            {"Prefer": "transient"},
        ),
    ],
)
async def test_netsuite_sandbox_refuses_what_netsuite_refuses(
    erp_name: str,
    method: str,
    path: str,
    params: dict[str, Any],
    body: Any,
    headers: dict[str, str],
    shared_dir: Path,
    http: httpx.AsyncClient,
    state: StateStore,
) -> None:
    app = ns_sandbox.create_app(shared_dir / "specs" / "netsuite-oas.json")
    async with serve(app) as url:
        config = ns_sandbox.sandbox_connection(ConnectionConfig(erp="netsuite"), url)
        connector = NetSuiteConnector("ns", config, http, state)
        with pytest.raises(PermanentError) as caught:
            await connector.client.request(
                method, url + path, operation="q", params=params, json_body=body, headers=headers
            )
        assert caught.value.code == ErrorCode.ERP_VALIDATION


@pytest.mark.parametrize(
    "params",
    [
        {"$filter": "NoSuchProperty eq 'x'"},
        {"$filter": "LastChangeDate ge datetimeoffset'2026-01-01T00:00:00Z'"},
        {"$filter": "Supplier ne '' and (LastChangeDate gt datetime'2026-01-01T00:00:00'"},
        {"$orderby": "LastChangeDate sideways"},
        {"$top": "ten"},
        {"$expand": "to_Supplier"},
        {"$inlinecount": "allpages"},
    ],
)
async def test_sap_sandbox_refuses_what_sap_gateway_refuses(
    params: dict[str, str], shared_dir: Path, http: httpx.AsyncClient, state: StateStore
) -> None:
    app = sap_sandbox.create_app(shared_dir / "specs" / "sap_si.edmx")
    async with serve(app) as url:
        config = sap_sandbox.sandbox_connection(ConnectionConfig(erp="sap"), url)
        connector = SapConnector("s4", config, http, state)
        bp = url + "/sap/opu/odata/sap/API_BUSINESS_PARTNER/A_BusinessPartner"
        with pytest.raises(PermanentError):
            await connector.client.request("GET", bp, operation="bp.read", params=params)


@pytest.mark.parametrize(
    "params",
    [
        {"no_such_attribute": "1"},
        {"updated_at[sideways]": "2026-01-01"},
        {"updated_at[gt]": "yesterday"},
        {"order_by": "colour"},
        {"order_by": "updated_at", "dir": "up"},
        {"active": "maybe"},
    ],
)
async def test_coupa_sandbox_refuses_bad_arguments(
    params: dict[str, str], http: httpx.AsyncClient, state: StateStore
) -> None:
    app = coupa_sandbox.create_app()
    async with serve(app) as url:
        config = coupa_sandbox.sandbox_connection(ConnectionConfig(erp="coupa"), url)
        connector = CoupaConnector("coupa", config, http, state)
        with pytest.raises(PermanentError):
            await connector.client.request("GET", "/api/accounts", operation="accounts.read", params=params)


async def _ns_post(connector: NetSuiteConnector, record_type: str, body: dict[str, Any]) -> str:
    response = await connector.client.request(
        "POST", f"/{record_type}", operation=f"{record_type}.create", json_body=body
    )
    return response.headers["Location"].rsplit("/", 1)[1]


def _ns_bill(vendor: str, *amounts: str) -> dict[str, Any]:
    lines = [{"account": {"id": "600394"}, "amount": float(a), "memo": f"line {i}"} for i, a in enumerate(amounts)]
    return {"entity": {"id": vendor}, "tranDate": "2026-03-02", "currency": {"id": "1"}, "expense": {"items": lines}}


def _ns_payment(bill: str, amount: str, number: str) -> dict[str, Any]:
    line = {"doc": {"id": bill}, "amount": amount, "apply": True}
    return {
        "entity": {"id": "1002"},
        "tranId": number,
        "tranDate": "2026-03-20",
        "currency": {"id": "1"},
        "apply": {"items": [line]},
    }


async def test_netsuite_vendor_payments_name_the_bills_they_settle(
    shared_dir: Path, http: httpx.AsyncClient, state: StateStore
) -> None:
    """Two payments of a bill ledgerflow booked (binder row) and one of a bill it did not: exact
    Decimal amounts, the source document named, nothing re-published, overpayment refused."""
    clock = Clock()
    app = ns_sandbox.create_app(shared_dir / "specs" / "netsuite-oas.json", seed_parties=True, clock=clock)
    async with serve(app) as url:
        config = ns_sandbox.sandbox_connection(ConnectionConfig(erp="netsuite"), url)
        connector = NetSuiteConnector("ns", config, http, state)
        ours = await _ns_post(connector, "vendorBill", _ns_bill("1002", "60.00", "40.05"))
        foreign = await _ns_post(connector, "vendorBill", _ns_bill("1003", "25.00"))
        bill = contract_bill("in_paid_1", amounts=("60.00", "40.05"))
        await state.put_binding("ns", binder_key(bill), erp_record_id=ours, erp_version=None, content_hash="h")

        def sync() -> ReferenceSync:
            reader = NetSuiteReader(NetSuiteConnector("ns", config, http, state), page_size=PAGE_SIZE)
            return ReferenceSync(reader, state, collected, Topics("t"), tenant="contract")

        collected = Collected()
        assert (await sync().sync_once(["payment"])).published == {"payment": 0}
        clock.tick()
        await _ns_post(connector, "vendorPayment", _ns_payment(ours, "30.01", "PAY-1"))
        await _ns_post(connector, "vendorPayment", _ns_payment(foreign, "25.00", "PAY-2"))
        assert (await sync().sync_once(["payment"])).published == {"payment": 2}
        clock.tick()
        await _ns_post(connector, "vendorPayment", _ns_payment(ours, "70.04", "PAY-3"))
        with pytest.raises(PermanentError, match="exceeds its amount due"):
            await _ns_post(connector, "vendorPayment", _ns_payment(ours, "0.01", "PAY-4"))
        assert (await sync().sync_once(["payment"])).published == {"payment": 1}
        assert (await sync().sync_once(["payment"])).published == {"payment": 0}

    payments = {p.code: p for p in collected.records if p.kind == "payment"}
    assert set(payments) == {"PAY-1", "PAY-2", "PAY-3"}
    for payment in payments.values():
        (applied,) = payment.applied_to
        assert applied.entity == "vendorBill"
        assert applied.amount == payment.amount
        assert isinstance(payment.amount, Decimal)
        assert payment.currency == "USD"
        assert payment.paid_on == date(2026, 3, 20)
    assert [payments[c].amount for c in ("PAY-1", "PAY-3")] == [Decimal("30.01"), Decimal("70.04")]
    assert payments["PAY-1"].amount + payments["PAY-3"].amount == bill.total  # type: ignore[operator]
    for code in ("PAY-1", "PAY-3"):
        (applied,) = payments[code].applied_to
        assert (applied.erp_id, applied.tenant, applied.source, applied.object_type, applied.source_id) == (
            ours,
            "contract",
            "mercoa",
            "bill",
            "in_paid_1",
        )
    (applied,) = payments["PAY-2"].applied_to
    assert (applied.erp_id, applied.amount, applied.source_id) == (foreign, Decimal("25.00"), None)


@pytest.mark.kafka
def test_sync_reference_command_reads_an_sap_connection(
    shared_dir: Path, kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command wires a reader of another ERP than QuickBooks / Xero (connector, state, broker) end to end."""
    from typer.testing import CliRunner

    from ledgerflow.app.cli import app as cli_app
    from tests.connectors.test_reference_readers import _sandbox_in_thread

    app = sap_sandbox.create_app(shared_dir / "specs" / "sap_si.edmx")
    with _sandbox_in_thread(app) as url:
        user, password = next(iter(sap_sandbox.DEFAULT_USERS.items()))
        routing = {
            "tenants": {"acme": {"sources": {}, "connections": ["s4-main"]}},
            "connections": {
                "s4-main": {
                    "erp": "sap",
                    "base_url": url,
                    "credentials": {"username": user, "password": password},
                    "options": {"company_code": "1010"},
                }
            },
        }
        routing_file = tmp_path / "routing.yaml"
        routing_file.write_text(json.dumps(routing))
        monkeypatch.setenv("LEDGERFLOW_ROUTING_FILE", str(routing_file))
        monkeypatch.setenv("LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
        monkeypatch.setenv("LEDGERFLOW_STATE_URL", f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
        monkeypatch.setenv("LEDGERFLOW_TOPIC_PREFIX", f"cli{uuid.uuid4().hex[:8]}")
        monkeypatch.setenv("LEDGERFLOW_TOPIC_PARTITIONS", "1")
        if kafka_is_embedded:
            monkeypatch.setenv("LEDGERFLOW_KAFKA_ENABLE_IDEMPOTENCE", "false")
        runner = CliRunner()
        first = runner.invoke(cli_app, ["sync-reference", "--connection", "s4-main", "--once", "--page-size", "2"])
        assert first.exit_code == 0, first.output
        # 6 suppliers (never changed), 7 G/L accounts, 3 cost centers + 3 WBS elements, 2 projects.
        assert "21 record(s) published" in first.output
        again = runner.invoke(cli_app, ["sync-reference", "--connection", "s4-main", "--once"])
        assert again.exit_code == 0, again.output
        assert "0 record(s) published" in again.output
