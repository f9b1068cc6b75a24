"""SAP connector: supplier invoice mapping, EDMX validation, CSRF refetch, look-up before create — over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from ledgerflow.connectors.base import (
    BinderEntry,
    PermanentError,
    RetriableError,
    UnresolvedReferenceError,
    Unsupported,
)
from ledgerflow.connectors.sandbox_kit import SandboxControl, serve
from ledgerflow.connectors.sap import SapConnector, sandbox
from ledgerflow.connectors.sap.edmx import load_entity_types, property_problems
from ledgerflow.connectors.sap.errors import SAP_ERRORS, extract_error
from ledgerflow.connectors.sap.mapping import (
    edm_datetime,
    invoice_reference,
    lookup_filter,
    supplier_invoice_body,
    supplier_name_filter,
)
from ledgerflow.connectors.sap.sandbox import create_app, parse_filter
from ledgerflow.contracts import Address, Bill, LineItem, Operation, Reference, Vendor, VendorRef
from ledgerflow.core.settings import ConnectionConfig
from ledgerflow.core.state import StateStore
from tests.connectors.contract import CLIENT_TIMEOUT, KNOWN_GL, ConnectorContract, ContractTarget, contract_bill, ctx
from tests.connectors.contract import entry as contract_entry

OPTIONS = {"company_code": "1010", "default_tax_code": "V1"}


def make_bill(source_id: str = "inv_1", **overrides: Any) -> Bill:
    values: dict[str, Any] = {
        "canonical_id": f"acme:monite:bill:{source_id}",
        "tenant": "acme",
        "source": "monite",
        "source_id": source_id,
        "source_event": "payable.approved",
        "vendor": VendorRef(accounting_custom_id="17300001", name="Concrete GmbH"),
        "bill_number": f"V-{source_id}",
        "bill_date": date(2024, 1, 15),
        "currency": "EUR",
        "line_items": [
            LineItem(
                line_number=1,
                description="Concrete",
                amount=Decimal("100.00"),
                gl_account=Reference(accounting_custom_id="61008000"),
                business_unit=Reference(accounting_custom_id="10101101"),
            )
        ],
        "subtotal": Decimal("100.00"),
        "tax_total": Decimal("19.00"),
        "total": Decimal("119.00"),
    }
    values.update(overrides)
    return Bill(**values)


def test_supplier_invoice_body_follows_the_reference_example() -> None:
    body = supplier_invoice_body(make_bill(), OPTIONS)
    assert body["CompanyCode"] == "1010"
    assert body["DocumentDate"] == "/Date(1705276800000)/"
    assert body["PostingDate"] == body["DocumentDate"]
    assert body["SupplierInvoiceIDByInvcgParty"] == "V-inv_1"
    assert body["InvoicingParty"] == "17300001"
    assert body["InvoiceGrossAmount"] == "119.00"
    # The source's tax is posted as it is (SAP does not recalculate it to a different amount).
    assert body["TaxIsCalculatedAutomatically"] is False
    assert body["to_SupplierInvoiceTax"]["results"] == [
        {
            "SupplierInvoiceTaxCounter": "1",
            "TaxCode": "V1",
            "DocumentCurrency": "EUR",
            "TaxAmount": "19.00",
            "TaxBaseAmountInTransCrcy": "100.00",
        }
    ]
    assert body["to_SupplierInvoiceItemGLAcct"]["results"] == [
        {
            "SupplierInvoiceItem": "1",
            "CompanyCode": "1010",
            "GLAccount": "61008000",
            "DocumentCurrency": "EUR",
            "SupplierInvoiceItemAmount": "100.00",
            "DebitCreditCode": "S",
            "TaxCode": "V1",
            "SupplierInvoiceItemText": "Concrete",
            "CostCenter": "10101101",
        }
    ]
    assert lookup_filter(make_bill()) == "SupplierInvoiceIDByInvcgParty eq 'V-inv_1' and InvoicingParty eq '17300001'"


def test_mapping_rules_and_unresolved_references() -> None:
    assert edm_datetime(date(1970, 1, 2)) == "/Date(86400000)/"
    long_number = make_bill(bill_number="A-VERY-LONG-INVOICE-NUMBER-1")
    ref = invoice_reference(long_number)
    assert len(ref) == 16
    assert ref == invoice_reference(long_number)
    quoted = make_bill(vendor=VendorRef(accounting_custom_id="O'NEIL"))
    assert "InvoicingParty eq 'O''NEIL'" in lookup_filter(quoted)
    with pytest.raises(UnresolvedReferenceError, match="company_code"):
        supplier_invoice_body(make_bill(), {})
    with pytest.raises(UnresolvedReferenceError, match="tax code"):
        supplier_invoice_body(make_bill(), {"company_code": "1010"})
    with pytest.raises(UnresolvedReferenceError, match="supplier number"):
        supplier_invoice_body(make_bill(vendor=VendorRef(name="x")), OPTIONS)


@pytest.fixture(scope="module")
def edmx(shared_dir: Path) -> Path:
    path = shared_dir / "specs" / "sap_si.edmx"
    if not path.is_file():
        pytest.skip("sap_si.edmx missing from ../shared/specs")
    return path


def test_mapped_body_matches_the_edmx_types(edmx: Path) -> None:
    types = load_entity_types(edmx)
    body = supplier_invoice_body(make_bill(), OPTIONS)
    assert property_problems(types["A_SupplierInvoiceType"], body) == []
    for item in body["to_SupplierInvoiceItemGLAcct"]["results"]:
        assert property_problems(types["A_SupplierInvoiceItemGLAcctType"], item) == []
    bad = {**body, "InvoiceGrossAmount": 119.0, "CompanyCod": "1010", "DocumentHeaderText": "x" * 26}
    problems = property_problems(types["A_SupplierInvoiceType"], bad)
    assert any("CompanyCod" in p for p in problems)
    assert any("decimal string" in p for p in problems)
    assert any("longer than 25" in p for p in problems)


def test_error_extraction() -> None:
    response = httpx.Response(
        400, json={"error": {"code": "M8/108", "message": {"lang": "en", "value": "Check if invoice already entered"}}}
    )
    found = extract_error(response)
    assert (found.vendor_code, found.message) == ("M8/108", "Check if invoice already entered")
    assert SAP_ERRORS.classify(400, "M8/108").code == "erp.duplicate"
    assert SAP_ERRORS.classify(503, None).retriable


@pytest.fixture
async def sap(edmx: Path) -> AsyncIterator[str]:
    async with serve(create_app(edmx, users={"COMM_USER": "pw"}, suppliers={"17300001"})) as base_url:
        yield base_url


def sap_config(base_url: str, password: str = "pw") -> ConnectionConfig:
    return ConnectionConfig(
        erp="sap",
        base_url=base_url,
        credentials={"username": "COMM_USER", "password": password},
        options=OPTIONS,
    )


async def test_create_then_redelivery_finds_the_invoice(sap: str, http: httpx.AsyncClient, state: StateStore) -> None:
    connector = SapConnector("sap", sap_config(sap), http, state)
    await connector.check()
    booked = await connector.handle(make_bill(), ctx())
    assert booked.operation is Operation.CREATE
    assert booked.http_status == 201
    assert booked.erp_record_id == "5105600001/2024"
    again = await connector.handle(make_bill(), ctx())
    assert again.erp_record_id == booked.erp_record_id
    records = await SandboxControl(http, sap).records("supplier_invoice")
    assert len(records) == 1
    assert records[0]["total"] == Decimal("119.00")
    entry = BinderEntry(erp_record_id=booked.erp_record_id, erp_version=None, content_hash="h")
    with pytest.raises(Unsupported) as update:
        await connector.handle(make_bill(memo="changed"), ctx("k2", entry))
    assert update.value.code == "erp.unsupported_action"


async def test_stale_csrf_token_is_refetched_once(sap: str, http: httpx.AsyncClient, state: StateStore) -> None:
    connector = SapConnector("sap", sap_config(sap), http, state)
    await connector.handle(make_bill("inv_a"), ctx())
    assert connector.csrf_fetches == 1
    (await http.post(f"{sap}/_sandbox/csrf/expire")).raise_for_status()
    booked = await connector.handle(make_bill("inv_b"), ctx())
    assert booked.erp_record_id
    assert connector.csrf_fetches == 2
    assert len(await SandboxControl(http, sap).records("supplier_invoice")) == 2


async def test_unbalanced_unknown_supplier_and_auth_errors_are_permanent(
    sap: str, http: httpx.AsyncClient, state: StateStore
) -> None:
    connector = SapConnector("sap", sap_config(sap), http, state)
    with pytest.raises(PermanentError) as unknown:
        await connector.handle(make_bill(vendor=VendorRef(accounting_custom_id="99999999")), ctx())
    assert (unknown.value.vendor_code, unknown.value.code) == ("M8/152", "erp.unknown_reference")
    untaxed = make_bill("inv_c", tax_total=Decimal(0), total=Decimal("100.00"))
    assert (await connector.handle(untaxed, ctx())).erp_record_id
    bad = SapConnector("sap", sap_config(sap, password="nope"), http, state)
    with pytest.raises(PermanentError) as rejected:
        await bad.check()
    assert rejected.value.code == "auth.rejected"


async def test_429_5xx_and_unsupported(sap: str, http: httpx.AsyncClient, state: StateStore) -> None:
    connector = SapConnector("sap", sap_config(sap), http, state)
    control = SandboxControl(http, sap)
    await control.inject(status=429, retry_after=4)
    with pytest.raises(RetriableError) as limited:
        await connector.handle(make_bill(), ctx())
    assert limited.value.retry_after == 4
    await control.inject(status=500)
    with pytest.raises(RetriableError):
        await connector.handle(make_bill(), ctx())
    vendor = Vendor(
        canonical_id="acme:monite:vendor:c1",
        tenant="acme",
        source="monite",
        source_id="c1",
        source_event="counterpart.created",
        name="Concrete GmbH",
    )
    with pytest.raises(Unsupported):
        await connector.handle(vendor, ctx())


# --------------------------------------------------------------------------------------------
# The shared contract suite

CONTRACT_SUPPLIER = "17300042"


def sap_contract_bill(*args: Any, **kwargs: Any) -> Bill:
    """The contract bill with the vendor's SAP supplier number (SAP resolves suppliers by number)."""
    bill = contract_bill(*args, **kwargs)
    vendor = VendorRef(source_id="ent_acme", accounting_custom_id=CONTRACT_SUPPLIER, name=bill.vendor.name)
    return bill.model_copy(update={"vendor": vendor})


class TestSapContract(ConnectorContract):
    @pytest.fixture
    async def target(self, edmx: Path, http: httpx.AsyncClient, state: StateStore) -> AsyncIterator[ContractTarget]:
        app = create_app(edmx, users={"COMM_USER": "pw"}, suppliers={CONTRACT_SUPPLIER}, gl_accounts=[KNOWN_GL])
        async with serve(app) as base_url:
            good = sap_config(base_url)
            good.options["timeout_seconds"] = CLIENT_TIMEOUT
            bad = sap_config(base_url, password="not-the-password")
            bad.options["timeout_seconds"] = CLIENT_TIMEOUT
            vendor = Vendor(
                canonical_id="contract:mercoa:vendor:ent_acme",
                tenant="contract",
                source="mercoa",
                source_id="ent_acme",
                source_event="counterparty.created",
                name="Acme Concrete Supply",
            )
            yield ContractTarget(
                connector=SapConnector("sap-contract", good, http, state),
                bad_credentials=SapConnector("sap-contract-bad", bad, http, state),
                control=SandboxControl(http, base_url),
                bill_kind="supplier_invoice",
                unsupported=vendor,
                make_bill=sap_contract_bill,
            )

    async def test_update_changes_the_record_in_place(self, target: ContractTarget) -> None:
        """SAP variant: posted supplier invoices are immutable in API_SUPPLIERINVOICE_PROCESS_SRV.

        The update is refused with a reason (a ``skipped`` result) and the posted invoice is left
        exactly as it was, instead of the shared contract's in-place change.
        """
        first = await target.connector.handle(target.make_bill("in_update"), ctx("k-up-1"))
        changed = target.make_bill("in_update", amounts=("60.00", "45.50"), memo="revised")
        with pytest.raises(Unsupported) as refused:
            await target.connector.handle(changed, ctx("k-up-2", contract_entry(first)))
        assert refused.value.code == "erp.unsupported_action"
        stored = await target.bills()
        assert [s["id"] for s in stored] == [first.erp_record_id]
        assert stored[0]["total"] == Decimal("100.00")


async def test_default_sandbox_wired_by_sandbox_connection(http: httpx.AsyncClient, state: StateStore) -> None:
    async with serve(sandbox.create_app()) as base_url:
        config = sandbox.sandbox_connection(ConnectionConfig(erp="sap"), base_url)
        assert config.options["company_code"] == "1010"
        connector = SapConnector("sap-default", config, http, state)
        untaxed = make_bill(tax_total=Decimal(0), total=Decimal("100.00"))
        assert (await connector.handle(untaxed, ctx())).erp_record_id


def test_long_accounting_ids_are_never_truncated_into_supplier_numbers() -> None:
    with pytest.raises(UnresolvedReferenceError, match="at most 10"):
        lookup_filter(make_bill(vendor=VendorRef(accounting_custom_id="MY-DB-ID-90909")))
    assert "InvoicingParty eq '4711'" in lookup_filter(
        make_bill(vendor=VendorRef(accounting_custom_id="MY-DB-ID-90909", accounting_id="4711"))
    )


# --------------------------------------------------------------------------------------------
# Supplier resolution: accounting id → binder row → Business Partner API by name (→ place)


def test_supplier_name_filter_and_sandbox_filter_parser() -> None:
    assert supplier_name_filter("O'Brien Lumber") == "SupplierName eq 'O''Brien Lumber'"
    assert supplier_name_filter("x" * 36).startswith("SupplierFullName eq ")
    assert parse_filter("SupplierName eq 'Smith and Sons' or Supplier eq 'O''x' and Country eq 'US'") == [
        [("SupplierName", "Smith and Sons")],
        [("Supplier", "O'x"), ("Country", "US")],
    ]
    for bad in ("Supplier ne '1'", "Supplier eq '1' or", "Supplier eq '1' Country eq 'US'"):
        with pytest.raises(ValueError, match="filter"):
            parse_filter(bad)


@pytest.fixture
async def sap_app(edmx: Path) -> AsyncIterator[tuple[str, Any]]:
    """The default-seeded sandbox (``DEFAULT_SUPPLIERS``) with the test user; ``(base_url, app.state.sap)``."""
    app = create_app(edmx, users={"COMM_USER": "pw"}, suppliers={"17300001"})
    async with serve(app) as base_url:
        yield base_url, app.state.sap


def by_name(name: str, source_id: str | None = "ven_1", address: Address | None = None) -> VendorRef:
    """A vendor with only a source id, a name and an address (no SAP number: Mercoa's foreignId is long)."""
    return VendorRef(source_id=source_id, accounting_custom_id="MY-DB-ID-90909", name=name, address=address)


def untaxed(source_id: str, vendor: VendorRef) -> Bill:
    return make_bill(source_id, vendor=vendor, tax_total=Decimal(0), total=Decimal("100.00"))


async def test_supplier_resolved_by_name_then_from_the_binder(
    sap_app: tuple[str, Any], http: httpx.AsyncClient, state: StateStore
) -> None:
    base_url, app = sap_app
    connector = SapConnector("sap", sap_config(base_url), http, state)
    booked = await connector.handle(untaxed("inv_n1", by_name("Big Box Store")), ctx())
    assert app.queries["A_Supplier"] == 1
    row = await state.get_binding("sap", "acme:vendor-ref:ven_1")
    assert row is not None
    assert row.erp_record_id == "1000090"
    records = {r["id"]: r for r in await SandboxControl(http, base_url).records("supplier_invoice")}
    assert records[booked.erp_record_id]["record"]["InvoicingParty"] == "1000090"
    # Second bill of the same vendor (renamed at the source meanwhile): the binder row answers, no API call.
    second = await connector.handle(untaxed("inv_n2", by_name("Big Box Store Inc.")), ctx("k2"))
    assert app.queries["A_Supplier"] == 1
    records = {r["id"]: r for r in await SandboxControl(http, base_url).records("supplier_invoice")}
    assert records[second.erp_record_id]["record"]["InvoicingParty"] == "1000090"
    # An SAP number sent by the source wins over the binder row.
    assert await connector.resolve_supplier(
        by_name("x").model_copy(update={"accounting_id": "17300001"}), tenant="acme"
    ) == ("17300001")


async def test_same_named_suppliers_are_narrowed_by_country_then_city(
    sap_app: tuple[str, Any], http: httpx.AsyncClient, state: StateStore
) -> None:
    base_url, app = sap_app
    connector = SapConnector("sap", sap_config(base_url), http, state)
    in_us = by_name("Northwind Traders", "ven_us", Address(city="Seattle", country="US"))
    assert await connector.resolve_supplier(in_us, tenant="acme") == "1000100"
    in_leeds = by_name("Northwind Traders", "ven_leeds", Address(city="leeds", country="gb"))
    booked = await connector.handle(untaxed("inv_leeds", in_leeds), ctx())
    records = {r["id"]: r for r in await SandboxControl(http, base_url).records("supplier_invoice")}
    assert records[booked.erp_record_id]["record"]["InvoicingParty"] == "1000102"
    assert app.queries["A_BusinessPartnerAddress"] == 2
    row = await state.get_binding("sap", "acme:vendor-ref:ven_leeds")
    assert row is not None
    assert row.erp_record_id == "1000102"


@pytest.mark.parametrize(
    ("address", "why"),
    [
        (None, "has no address"),
        (Address(country="GB"), "in GB"),
        (Address(city="Paris", country="FR"), "in Paris, FR"),
    ],
)
async def test_unresolved_ambiguity_is_permanent(
    sap_app: tuple[str, Any], http: httpx.AsyncClient, state: StateStore, address: Address | None, why: str
) -> None:
    base_url, _ = sap_app
    connector = SapConnector("sap", sap_config(base_url), http, state)
    with pytest.raises(PermanentError) as ambiguous:
        await connector.handle(untaxed("inv_amb", by_name("Northwind Traders", address=address)), ctx())
    assert ambiguous.value.code == "reference.ambiguous"
    assert not ambiguous.value.retriable
    assert "1000100, 1000101, 1000102" in str(ambiguous.value)
    assert why in str(ambiguous.value)
    assert await state.get_binding("sap", "acme:vendor-ref:ven_1") is None
    assert await SandboxControl(http, base_url).records("supplier_invoice") == []


async def test_unknown_supplier_name_is_permanent_and_quotes_are_escaped(
    sap_app: tuple[str, Any], http: httpx.AsyncClient, state: StateStore
) -> None:
    base_url, app = sap_app
    connector = SapConnector("sap", sap_config(base_url), http, state)
    with pytest.raises(PermanentError) as unknown:
        await connector.handle(untaxed("inv_u", by_name("No Such Vendor Ltd")), ctx())
    assert unknown.value.code == "reference.unresolved"
    assert "No Such Vendor Ltd" in str(unknown.value)
    assert await state.get_binding("sap", "acme:vendor-ref:ven_1") is None
    with pytest.raises(PermanentError) as nameless:
        await connector.handle(untaxed("inv_u2", VendorRef(source_id="ven_2")), ctx())
    assert nameless.value.code == "reference.unresolved"
    assert app.queries["A_Supplier"] == 1
    assert await connector.resolve_supplier(by_name("O'Brien Lumber", None), tenant="acme") == "1000120"


async def test_supplier_lookup_outage_is_retriable(
    sap_app: tuple[str, Any], http: httpx.AsyncClient, state: StateStore
) -> None:
    base_url, _ = sap_app
    connector = SapConnector("sap", sap_config(base_url), http, state)
    await SandboxControl(http, base_url).inject(status=503)
    with pytest.raises(RetriableError):
        await connector.handle(untaxed("inv_o", by_name("Big Box Store")), ctx())
    assert await state.get_binding("sap", "acme:vendor-ref:ven_1") is None


async def test_mercoa_sample_vendor_is_found_by_name_in_the_default_sandbox(
    mercoa_sample: bytes, http: httpx.AsyncClient, state: StateStore
) -> None:
    vendor = orjson.loads(mercoa_sample)["invoice"]["vendor"]
    ref = VendorRef(source_id=vendor["id"], accounting_custom_id=vendor["foreignId"], name=vendor["name"])
    async with serve(sandbox.create_app()) as base_url:
        config = sandbox.sandbox_connection(ConnectionConfig(erp="sap"), base_url)
        connector = SapConnector("sap-default", config, http, state)
        assert await connector.resolve_supplier(ref, tenant="acme") == "1000090"
        booked = await connector.handle(untaxed("inv_mercoa", ref), ctx())
        records = await SandboxControl(http, base_url).records("supplier_invoice")
        assert [r["record"]["InvoicingParty"] for r in records if r["id"] == booked.erp_record_id] == ["1000090"]


def test_a_long_vendor_invoice_number_is_kept_as_the_payment_reference() -> None:
    body = supplier_invoice_body(make_bill(bill_number="A-VERY-LONG-INVOICE-NUMBER-1"), OPTIONS)
    assert len(body["SupplierInvoiceIDByInvcgParty"]) == 16
    assert body["PaymentReference"] == "A-VERY-LONG-INVOICE-NUMBER-1"
    assert "PaymentReference" not in supplier_invoice_body(make_bill(), OPTIONS)
    with pytest.raises(UnresolvedReferenceError, match="longer than SAP holds"):
        supplier_invoice_body(make_bill(bill_number="X" * 31), OPTIONS)
