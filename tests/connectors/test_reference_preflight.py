"""Issue 19: the reference cache the readers write, and the check the runtime makes before calling an ERP.

The readers run against the QuickBooks and Xero sandboxes with an in-memory publisher (the
publishing path is covered with the real broker by ``test_reference_readers.py``); the connector
runtime then books into the same sandbox, whose request counter proves that a record refused by
the check cost no ERP call at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from ledgerflow.connectors.base import Connector
from ledgerflow.connectors.preflight import ReferenceGuard
from ledgerflow.connectors.quickbooks import QuickBooksConnector
from ledgerflow.connectors.quickbooks import sandbox as qbo_sandbox
from ledgerflow.connectors.quickbooks.reader import QuickBooksReader
from ledgerflow.connectors.reference import ReferenceReader, ReferenceSync
from ledgerflow.connectors.retry import RetryPolicy
from ledgerflow.connectors.runtime import ConnectorRuntime
from ledgerflow.connectors.sandbox_kit import serve
from ledgerflow.connectors.xero import XeroConnector
from ledgerflow.connectors.xero import sandbox as xero_sandbox
from ledgerflow.connectors.xero.reader import XeroReader
from ledgerflow.contracts import ErrorCode, Outcome, Reference, SyncResult
from ledgerflow.contracts.events import EventAttributes
from ledgerflow.contracts.reference import ReferenceRecord
from ledgerflow.contracts.topics import Topics
from ledgerflow.core.outbound.transport import worker_http_client
from ledgerflow.core.reference_cache import MappingStore, ReferenceCache
from ledgerflow.core.settings import ConnectionConfig, Routing, Settings
from ledgerflow.core.state import StateStore
from tests.connectors.erp_documents import XERO_OPTIONS, document

pytestmark = pytest.mark.timeout(60)


class ListPublisher:
    """A publisher that acknowledges at once and keeps what it was given."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def publish(self, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        self.sent.append((topic, key))


@dataclass
class Erp:
    name: str
    connection: str
    connector: Connector
    reader: ReferenceReader
    state: StateStore
    app: Any

    @property
    def requests(self) -> int:
        """Requests the sandbox received so far (every API and token call)."""
        count: int = self.app.state.sandbox.requests
        return count

    async def sync(self) -> ListPublisher:
        publisher = ListPublisher()
        await ReferenceSync(self.reader, self.state, publisher, Topics("pf"), tenant="t").sync_once()
        return publisher

    def runtime(self, **options: Any) -> ConnectorRuntime:
        self.connector.config.options.update(options)
        routing = Routing.model_validate(
            {
                "tenants": {"t": {"connections": [self.connection]}},
                "connections": {self.connection: self.connector.config},
            }
        )
        return ConnectorRuntime(
            self.connector, self.state, routing, _no_publish, Settings(), RetryPolicy(attempts=1, wait_initial=0)
        )


async def _no_publish(*_: object) -> None:
    return None


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[StateStore]:
    store = StateStore(f"sqlite+aiosqlite:///{tmp_path}/state.db")
    await store.create_all()
    yield store
    await store.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with worker_http_client("httpx", timeout=httpx.Timeout(5.0)) as client:
        yield client


@pytest.fixture
async def xero(shared_dir: Path, state: StateStore, http: httpx.AsyncClient) -> AsyncIterator[Erp]:
    app = xero_sandbox.create_app(
        spec_path=shared_dir / "specs" / "xero_accounting.yaml", seed_parties=True, minute_limit=10_000
    )
    async with serve(app) as url:
        options = {**XERO_OPTIONS, "rate_limit_per_minute": 6000, "reference_refresh_seconds": 0}
        config = xero_sandbox.sandbox_connection(ConnectionConfig(erp="xero", objects=["bill"], options=options), url)
        connector = XeroConnector("xero-main", config, http, state)
        yield Erp("xero", "xero-main", connector, XeroReader(connector, page_size=50), state, app)


@pytest.fixture
async def quickbooks(shared_dir: Path, state: StateStore, http: httpx.AsyncClient) -> AsyncIterator[Erp]:
    app = qbo_sandbox.create_app(spec_path=shared_dir / "specs" / "Finance.xsd", seed_parties=True)
    async with serve(app) as url:
        options = {"rate_limit_per_minute": 6000, "reference_refresh_seconds": 0}
        config = qbo_sandbox.sandbox_connection(
            ConnectionConfig(erp="quickbooks", objects=["bill"], options=options), url
        )
        connector = QuickBooksConnector("qbo-main", config, http, state)
        yield Erp("quickbooks", "qbo-main", connector, QuickBooksReader(connector, page_size=50), state, app)


def _bill(number: str, *accounts: dict[str, Any], **header: Any) -> Any:
    lines = [{"amount": "10.00", "description": f"line {i}", "gl_account": a} for i, a in enumerate(accounts)]
    bill = document("bill", number, lines, **header)
    return bill.model_copy(update={"canonical_id": f"t:mercoa:bill:{number}"})


def _attrs(event_id: str) -> EventAttributes:
    return EventAttributes(id=event_id, source="/tenants/t/mercoa", type="io.ledgerflow.bill.v1", tenant="t")


def _failures(connection: str, kind: str) -> float:
    value = REGISTRY.get_sample_value(
        "ledgerflow_reference_preflight_failures_total", {"connection": connection, "kind": kind}
    )
    return value or 0.0


async def test_the_readers_fill_the_cache_and_mark_each_source_complete(xero: Erp) -> None:
    published = await xero.sync()
    cache = ReferenceCache(xero.state)
    assert await cache.count("xero-main", "gl_account") == 6
    assert await cache.count("xero-main", "tax_rate") == 3
    assert await cache.count("xero-main", "tracking") == 2 + 4  # two categories, four options
    status = await cache.status("xero-main")
    assert {key for key, s in status.items() if s.complete} == {
        ("vendor", "Contact"),
        ("customer", "Contact"),
        ("gl_account", "Account"),
        ("tax_rate", "TaxRate"),
        ("tracking", "TrackingCategory"),
        ("payment", "Payment"),
        ("project", "Project"),
    }
    codes = {r.code for r in await cache.find("xero-main", ["gl_account"], codes=["429", "6999"])}
    assert codes == {"429"}

    # A cache lost (or a cursor older than the cache): the next pass re-reads the sources in full
    # into the cache, and publishes nothing the cursors already cover.
    async with xero.state.session() as session, session.begin():
        from sqlalchemy import delete

        from ledgerflow.core.state import ReferenceCacheRow, ReferenceStatusRow

        await session.execute(delete(ReferenceCacheRow))
        await session.execute(delete(ReferenceStatusRow))
    again = await xero.sync()
    assert again.sent == []
    assert len(published.sent) > 0
    assert await cache.count("xero-main", "gl_account") == 6
    assert (await cache.status("xero-main"))[("gl_account", "Account")].complete


async def test_an_outbound_bill_with_an_unknown_gl_account_fails_before_any_erp_call(xero: Erp) -> None:
    await xero.sync()
    runtime = xero.runtime()
    before_metric = _failures("xero-main", "gl_account")
    before = xero.requests

    result = await runtime.book(
        _bill("unknown-gl", {"accounting_custom_id": "429"}, {"accounting_custom_id": "6999"}), _attrs("e-unknown")
    )

    assert xero.requests == before, "the sandbox must receive no request at all"
    assert (result.outcome, result.attempts) == (Outcome.FAILED, 0)
    assert result.error is not None
    assert result.error.code == ErrorCode.REFERENCE_UNKNOWN
    assert not result.error.retriable
    message = result.error.message
    assert "line 2: GL account 6999 is not in xero-main's chart of accounts (synced " in message
    assert "429" not in message.split(". Nothing")[0]
    assert _failures("xero-main", "gl_account") == before_metric + 1


async def test_known_references_are_booked(xero: Erp) -> None:
    await xero.sync()
    runtime = xero.runtime(tracking_categories={"cost_code": "Cost Code"})
    bill = _bill("known", {"accounting_custom_id": "429"}, {"accounting_custom_id": "400"})
    from ledgerflow.contracts import Reference

    lines = [line.model_copy(update={"cost_code": Reference(name="03-3000 Concrete")}) for line in bill.line_items]
    result = await runtime.book(bill.model_copy(update={"line_items": lines}), _attrs("e-known"))
    assert result.outcome is Outcome.SUCCEEDED, result.error


async def test_an_unknown_tracking_option_and_tax_rate_are_each_named(xero: Erp) -> None:
    await xero.sync()
    runtime = xero.runtime(tracking_categories={"cost_code": "Cost Code", "project": "Job"})
    from ledgerflow.contracts import Reference

    bill = _bill("tracked", {"accounting_custom_id": "429"}, tax_total="0.89")
    line = bill.line_items[0].model_copy(
        update={
            "cost_code": Reference(name="99-9999 Nothing"),
            "project": Reference(accounting_custom_id="P-1"),
            "tax_rate": Reference(accounting_custom_id="INPUT2"),
            "tax_amount": Decimal("0.89"),
        }
    )
    bill = bill.model_validate({**bill.model_dump(), "line_items": [line.model_dump()]})
    before = xero.requests
    result = await runtime.book(bill, _attrs("e-tracked"))
    assert xero.requests == before
    assert result.error is not None
    assert result.error.code == ErrorCode.REFERENCE_UNKNOWN
    message = result.error.message
    assert "line 1: tax rate INPUT2 is not in xero-main's tax rates" in message
    assert "tracking value 99-9999 Nothing is not in xero-main's tracking categories" in message
    assert "tracking category 'Job' is not in xero-main's tracking categories" in message


async def test_an_inactive_account_fails(xero: Erp) -> None:
    await xero.sync()
    record = ReferenceRecord(
        kind="gl_account",
        erp="xero",
        connection="xero-main",
        entity="Account",
        erp_id="acc-old",
        code="455",
        name="Old expenses",
        active=False,
        updated_at=datetime.now(UTC),
        erp_record={},
    )
    await ReferenceCache(xero.state).write("xero-main", "gl_account", "Account", [record])
    result = await xero.runtime().book(_bill("inactive", {"accounting_custom_id": "455"}), _attrs("e-inactive"))
    assert result.error is not None
    assert result.error.code == ErrorCode.REFERENCE_UNKNOWN
    assert "GL account 455 is inactive (archived) in xero-main's chart of accounts" in result.error.message


@pytest.mark.parametrize("synced", [False, True], ids=["never-synced", "check-off"])
async def test_no_cache_or_the_check_turned_off_never_blocks(xero: Erp, synced: bool) -> None:
    if synced:
        await xero.sync()
    runtime = xero.runtime(reference_check=False) if synced else xero.runtime()
    before = xero.requests
    result = await runtime.book(_bill(f"off-{synced}", {"accounting_custom_id": "6999"}), _attrs(f"e-off-{synced}"))
    assert xero.requests > before, "the ERP is asked (and judges the account itself)"
    assert result.error is None or result.error.code != ErrorCode.REFERENCE_UNKNOWN


async def test_quickbooks_checks_the_ids_it_sends_and_the_vendor(quickbooks: Erp) -> None:
    await quickbooks.sync()
    runtime = quickbooks.runtime()
    before = quickbooks.requests
    # QuickBooks takes AccountRef by Id: "6010" is Advertising's AcctNum, not an Id; 58 is an inactive vendor.
    bill = _bill("qbo", {"accounting_id": "7"}, {"accounting_id": "6010"}, {"accounting_custom_id": "6000"})
    bill = bill.model_copy(update={"vendor": bill.vendor.model_copy(update={"accounting_id": "58"})})
    result = await runtime.book(bill, _attrs("e-qbo"))
    assert quickbooks.requests == before
    assert result.error is not None
    assert result.error.code == ErrorCode.REFERENCE_UNKNOWN
    message = result.error.message
    assert "vendor: vendor 58 is inactive (archived) in qbo-main's vendors" in message
    assert "line 2: GL account 6010 is not in qbo-main's chart of accounts" in message
    assert "line 1" not in message
    assert "line 3" not in message

    # A mapping becomes the accounting_id, which QuickBooks sends as the Id: an AcctNum is refused, with the Id.
    mappings = MappingStore(quickbooks.state)
    assert (await mappings.validate("qbo-main", "gl_account", "7")).accepted
    by_number = await mappings.validate("qbo-main", "gl_account", "6010")
    assert not by_number.accepted
    assert "6010 is the code of 7 (Advertising): map to the id, which quickbooks takes" in (by_number.reason or "")

    ok = _bill("qbo-ok", {"accounting_id": "7"}, {"accounting_custom_id": "6000"})
    ok = ok.model_copy(update={"vendor": ok.vendor.model_copy(update={"accounting_id": "56"})})
    booked = await runtime.book(ok, _attrs("e-qbo-ok"))
    assert booked.outcome is Outcome.SUCCEEDED, booked.error


async def test_a_quickbooks_project_on_a_line_is_known(quickbooks: Erp) -> None:
    """Customer 63 is a project (``Job`` true): cached as kind ``project``, still a valid ``CustomerRef``."""
    await quickbooks.sync()
    bill = _bill("qbo-project", {"accounting_id": "7"})
    line = bill.line_items[0].model_copy(update={"project": Reference(accounting_id="63")})
    unknown = bill.line_items[0].model_copy(update={"project": Reference(accounting_id="64")})
    bill = bill.model_copy(update={"vendor": bill.vendor.model_copy(update={"accounting_id": "56"})})
    booked = await quickbooks.runtime().book(bill.model_copy(update={"line_items": [line]}), _attrs("e-qbo-project"))
    assert booked.outcome is Outcome.SUCCEEDED, booked.error
    refused = await quickbooks.runtime().book(
        bill.model_copy(update={"canonical_id": "t:mercoa:bill:qbo-p2", "line_items": [unknown]}), _attrs("e-qbo-p2")
    )
    assert refused.error is not None
    assert refused.error.code == ErrorCode.REFERENCE_UNKNOWN


async def test_a_stored_mapping_is_applied_and_wins_over_the_yaml_map(xero: Erp) -> None:
    await xero.sync()
    mappings = MappingStore(xero.state)
    refused = await mappings.validate("xero-main", "gl_account", "6999")
    assert not refused.accepted
    assert refused.reason is not None
    assert "GL account 6999 is not in xero-main's chart of accounts" in refused.reason
    assert (await mappings.validate("xero-main", "gl_account", "400")).accepted
    await mappings.put("t", "xero-main", "gl_account", "materials", "400")
    await mappings.put("other", "xero-main", "gl_account", "materials", "6999")  # another tenant's: not applied

    runtime = xero.runtime(reference_map={"gl_account": {"materials": "6999", "travel": "429"}})
    bill = _bill("mapped", {"source_id": "materials"}, {"source_id": "travel"})
    result: SyncResult = await runtime.book(bill, _attrs("e-mapped"))
    assert result.outcome is Outcome.SUCCEEDED, result.error
    stored = xero.app.state.sandbox.store.all("invoice")
    codes = [line["AccountCode"] for line in stored[-1]["LineItems"]]
    assert codes == ["400", "429"]


async def test_xero_tracking_mappings_book_the_mapped_option(xero: Erp) -> None:
    # Issue 19: a stored or YAML cost_code / business_unit mapping sets accounting_id; Xero books
    # LineItemTracking by category and option name, so a mapped TrackingOptionID is resolved to its name.
    await xero.sync()
    cache = ReferenceCache(xero.state)
    (concrete,) = [r for r in await cache.find("xero-main", ["tracking"], names=["03-3000 Concrete"])]
    mappings = MappingStore(xero.state)
    assert (await mappings.validate("xero-main", "cost_code", concrete.erp_id)).accepted
    await mappings.put("t", "xero-main", "cost_code", "cc-concrete", concrete.erp_id)
    runtime = xero.runtime(
        tracking_categories={"cost_code": "Cost Code", "business_unit": "Region"},
        reference_map={"cost_code": {"cc-finish": "09-9000 Finishes"}, "business_unit": {"bu-n": "North"}},
    )
    bill = _bill("tracked-map", {"accounting_custom_id": "429"}, {"accounting_custom_id": "400"})
    tracked = [("cc-concrete", "Concrete work"), ("cc-finish", "Finishing")]
    lines = [
        line.model_copy(
            update={
                "cost_code": Reference(source_id=code, name=name),
                "business_unit": Reference(source_id="bu-n", name="Northern branch"),
            }
        )
        for line, (code, name) in zip(bill.line_items, tracked, strict=True)
    ]
    result = await runtime.book(bill.model_copy(update={"line_items": lines}), _attrs("e-tracked-map"))
    assert result.outcome is Outcome.SUCCEEDED, result.error
    stored = xero.app.state.sandbox.store.all("invoice")[-1]
    assert [sorted((t["Name"], t["Option"]) for t in line["Tracking"]) for line in stored["LineItems"]] == [
        [("Cost Code", "03-3000 Concrete"), ("Region", "North")],
        [("Cost Code", "09-9000 Finishes"), ("Region", "North")],
    ]


async def test_an_unknown_mapped_tracking_option_id_is_refused_before_any_call(xero: Erp) -> None:
    await xero.sync()
    runtime = xero.runtime(
        tracking_categories={"cost_code": "Cost Code"},
        reference_map={"cost_code": {"cc-x": "6f1c1d7e-0000-4000-8000-000000000001"}},
    )
    bill = _bill("tracked-unknown", {"accounting_custom_id": "429"})
    lines = [line.model_copy(update={"cost_code": Reference(source_id="cc-x", name="X")}) for line in bill.line_items]
    before = xero.requests
    result = await runtime.book(bill.model_copy(update={"line_items": lines}), _attrs("e-tracked-unknown"))
    assert xero.requests == before
    assert result.error is not None
    assert result.error.code == ErrorCode.REFERENCE_UNKNOWN
    assert "tracking value 6f1c1d7e-0000-4000-8000-000000000001 is not in" in result.error.message


class _Stub(Connector):
    """A connector of any ERP kind that is never called (the check runs before it)."""

    supports = frozenset({"bill"})

    async def check(self) -> None:
        return None

    async def handle(self, record: Any, ctx: Any) -> Any:
        raise AssertionError("the reference check runs before the connector")


def _stub(erp: str, state: StateStore, options: dict[str, Any]) -> Connector:
    cls = type(f"Stub_{erp}", (_Stub,), {"erp": erp})
    connector: Connector = cls(f"{erp}-main", ConnectionConfig(erp=erp, options=options), httpx.AsyncClient(), state)
    return connector


async def _cache(state: StateStore, erp: str, kind: str, entity: str, *rows: tuple[str, str | None]) -> None:
    records = [
        ReferenceRecord(
            kind=kind,
            erp=erp,
            connection=f"{erp}-main",
            entity=entity.split(":")[0],
            erp_id=erp_id,
            code=code,
            name=f"{entity} {erp_id}",
            active=True,
            erp_record={},
        )
        for erp_id, code in rows
    ]
    await ReferenceCache(state).write(f"{erp}-main", kind, entity, records, complete=True)


async def test_netsuite_checks_internal_ids_only(state: StateStore) -> None:
    await _cache(state, "netsuite", "vendor", "vendor", ("12", "ACME"))
    await _cache(state, "netsuite", "gl_account", "account", ("58", "6000"))
    await _cache(state, "netsuite", "tracking", "classification", ("5", None))
    await _cache(state, "netsuite", "tracking", "department", ("3", None))
    await _cache(state, "netsuite", "customer", "customer", ("70", None))
    await _cache(state, "netsuite", "project", "job", ("71", None))
    guard = ReferenceGuard(_stub("netsuite", state, {}), state)
    bill = _bill("ns", {"accounting_id": "58"}, {"accounting_id": "99"}, {"accounting_custom_id": "7000"})
    lines = [
        bill.line_items[0].model_copy(
            update={"cost_code": Reference(accounting_id="5"), "project": Reference(accounting_id="71")}
        ),
        bill.line_items[1].model_copy(update={"business_unit": Reference(accounting_id="4")}),
        bill.line_items[2],  # an externalId: not cached, not checked
    ]
    bill = bill.model_copy(
        update={"vendor": bill.vendor.model_copy(update={"accounting_id": "12"}), "line_items": lines}
    )
    error = await guard.check(bill)
    assert error is not None
    assert error.code == ErrorCode.REFERENCE_UNKNOWN
    problems = error.message.split(". Nothing")[0].split("; ")
    assert [p.split(" is ")[0] for p in problems] == ["line 2: GL account 99", "line 2 department: tracking value 4"]


async def test_sap_checks_codes_after_its_gl_account_map(state: StateStore) -> None:
    await _cache(state, "sap", "vendor", "A_BusinessPartner", ("BP1", "1000001"))
    await _cache(state, "sap", "vendor", "A_BusinessPartner:created")
    await _cache(state, "sap", "gl_account", "A_GLAccountInChartOfAccounts", ("0000400000", "0000400000"))
    await _cache(state, "sap", "tracking", "A_CostCenter", ("CC-1", "CC-1"))
    guard = ReferenceGuard(_stub("sap", state, {"gl_accounts": {"materials": "0000400000"}}), state)
    bill = _bill("sap", {"accounting_custom_id": "materials"}, {"accounting_custom_id": "0000500000"})
    lines = [
        bill.line_items[0].model_copy(update={"business_unit": Reference(accounting_custom_id="CC-1")}),
        bill.line_items[1].model_copy(update={"business_unit": Reference(accounting_custom_id="CC-9")}),
    ]
    vendor = bill.vendor.model_copy(update={"accounting_custom_id": "1000099"})
    error = await guard.check(bill.model_copy(update={"vendor": vendor, "line_items": lines}))
    assert error is not None
    message = error.message
    assert "vendor (InvoicingParty): vendor 1000099 is not in sap-main's vendors" in message
    assert "line 2: GL account 0000500000 is not in" in message
    assert "line 2 CostCenter: tracking value CC-9 is not in" in message
    assert "line 1" not in message

    known = bill.model_copy(update={"vendor": bill.vendor.model_copy(update={"accounting_custom_id": "1000001"})})
    known = known.model_copy(update={"line_items": [lines[0]], "subtotal": Decimal("10.00"), "total": Decimal("10.00")})
    assert await guard.check(known) is None


async def test_coupa_checks_the_supplier(state: StateStore) -> None:
    await _cache(state, "coupa", "vendor", "suppliers", ("17", "SUP-17"))
    guard = ReferenceGuard(_stub("coupa", state, {}), state)
    bill = _bill("coupa", {"accounting_custom_id": "6000-100"})
    by_number = bill.model_copy(update={"vendor": bill.vendor.model_copy(update={"accounting_custom_id": "SUP-17"})})
    assert await guard.check(by_number) is None
    unknown = bill.model_copy(update={"vendor": bill.vendor.model_copy(update={"accounting_id": "18"})})
    error = await guard.check(unknown)
    assert error is not None
    assert "supplier: vendor 18 is not in coupa-main's vendors" in error.message


async def test_values_are_looked_up_once_until_the_cache_changes(state: StateStore) -> None:
    from sqlalchemy import event

    await _cache(state, "coupa", "vendor", "suppliers", ("17", "SUP-17"))
    guard = ReferenceGuard(_stub("coupa", state, {"reference_refresh_seconds": 0}), state)
    bill = _bill("memo", {"accounting_custom_id": "6000-100"})
    known = bill.model_copy(update={"vendor": bill.vendor.model_copy(update={"accounting_id": "17"})})
    assert await guard.check(known) is None
    selects: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM reference_cache " in statement.replace("\n", " "):
            selects.append(statement)

    event.listen(state.engine.sync_engine, "before_cursor_execute", count)
    for _ in range(5):
        assert await guard.check(known) is None
    assert selects == [], "a value looked up before is not looked up again"

    await _cache(state, "coupa", "vendor", "suppliers", ("17", "SUP-17"))  # a sync pass: the status changes
    assert await guard.check(known) is None
    assert len(selects) == 1
