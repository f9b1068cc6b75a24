"""Coupa connector: invoice mapping, draft-then-submit (and its recovery), suppliers, errors — over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest

from ledgerflow.connectors.base import (
    BinderEntry,
    PermanentError,
    RetriableError,
    UnresolvedReferenceError,
    Unsupported,
)
from ledgerflow.connectors.coupa import CoupaConnector, sandbox
from ledgerflow.connectors.coupa.errors import COUPA_ERRORS, extract_error
from ledgerflow.connectors.coupa.mapping import invoice_body, invoice_lookup_params
from ledgerflow.connectors.coupa.sandbox import create_app
from ledgerflow.connectors.sandbox_kit import SandboxControl, serve
from ledgerflow.contracts import Bill, Invoice, LineItem, Operation, Payment, Reference, Vendor, VendorRef
from ledgerflow.core.settings import ConnectionConfig
from ledgerflow.core.state import StateStore
from tests.connectors.contract import CLIENT_TIMEOUT, KNOWN_GL, ConnectorContract, ContractTarget, ctx


def make_bill(source_id: str = "inv_1", **overrides: Any) -> Bill:
    values: dict[str, Any] = {
        "canonical_id": f"acme:ingenious:bill:{source_id}",
        "tenant": "acme",
        "source": "ingenious",
        "source_id": source_id,
        "source_event": "vendor_invoice.approved",
        "vendor": VendorRef(accounting_custom_id="S-0042", name="Concrete Co"),
        "bill_number": f"VENDOR-{source_id}",
        "bill_date": date(2024, 1, 15),
        "currency": "USD",
        "line_items": [
            LineItem(
                line_number=1,
                description="Concrete",
                amount=Decimal("150.00"),
                gl_account=Reference(accounting_custom_id="6000"),
                project=Reference(accounting_custom_id="PROJ-17"),
                cost_code=Reference(accounting_custom_id="03-300"),
            )
        ],
        "subtotal": Decimal("150.00"),
        "tax_total": Decimal("12.00"),
        "total": Decimal("162.00"),
    }
    values.update(overrides)
    return Bill(**values)


def test_invoice_body_follows_the_reference_example() -> None:
    body = invoice_body(make_bill(), {"chart_of_accounts": "US Chart of Accounts"})
    assert body["invoice-number"] == "VENDOR-inv_1"
    assert body["invoice-date"] == "2024-01-15"
    assert body["supplier"] == {"number": "S-0042"}
    assert body["currency"] == {"code": "USD"}
    assert body["account-type"] == {"name": "US Chart of Accounts"}
    assert body["line-level-taxation"] is False
    assert body["tax-amount"] == "12.00"
    assert body["invoice-lines"] == [
        {
            "line-num": 1,
            "description": "Concrete",
            "account": {
                "account-type": {"name": "US Chart of Accounts"},
                "segment-1": "6000",
                "segment-2": "PROJ-17",
                "segment-3": "03-300",
            },
            "type": "InvoiceAmountLine",
            "price": "150.00",
            "total": "150.00",
        }
    ]
    assert invoice_lookup_params(make_bill()) == {"invoice-number": "VENDOR-inv_1", "supplier[number]": "S-0042"}


def test_quantity_lines_discounts_and_unresolvable_lines() -> None:
    line = LineItem(
        line_number=1,
        quantity=Decimal(3),
        unit_price=Decimal("2.50"),
        amount=Decimal("7.50"),
        gl_account=Reference(accounting_id="6100"),
    )
    bill = make_bill(
        line_items=[line],
        subtotal=Decimal("7.50"),
        tax_total=Decimal(0),
        discount_total=Decimal("1.00"),
        total=Decimal("6.50"),
    )
    with pytest.raises(UnresolvedReferenceError, match="discount_account"):
        invoice_body(bill, {})
    lines = invoice_body(bill, {"discount_account": "4900"})["invoice-lines"]
    assert lines[0]["type"] == "InvoiceQuantityLine"
    assert (lines[0]["quantity"], lines[0]["price"]) == ("3", "2.50")
    assert lines[1]["price"] == "-1.00"
    no_account = make_bill(line_items=[LineItem(line_number=1, amount=Decimal("150.00"))])
    with pytest.raises(UnresolvedReferenceError, match="account segment"):
        invoice_body(no_account, {})


def test_error_extraction_uses_the_first_field_as_code() -> None:
    response = httpx.Response(400, json={"errors": {"supplier": ["is invalid"], "account": ["can't be blank"]}})
    found = extract_error(response)
    assert found.vendor_code == "supplier"
    assert found.message == "supplier: is invalid; account: can't be blank"
    assert COUPA_ERRORS.classify(400, "supplier").code == "erp.unknown_reference"
    assert COUPA_ERRORS.classify(429, None).retriable


@pytest.fixture
async def coupa() -> AsyncIterator[str]:
    async with serve(create_app(suppliers={"17": ("S-0042", "Concrete Co")})) as base_url:
        yield base_url


def coupa_config(base_url: str, secret: str = "sandbox-secret") -> ConnectionConfig:
    return ConnectionConfig(
        erp="coupa",
        base_url=base_url,
        objects=["bill", "vendor"],
        credentials={"client_id": "ledgerflow", "client_secret": secret},
        # Coupa requires the chart of accounts (account-type) on every invoice.
        options={"chart_of_accounts": "US Chart of Accounts"},
    )


async def test_create_submits_the_draft_and_redelivery_books_nothing_new(
    coupa: str, http: httpx.AsyncClient, state: StateStore
) -> None:
    connector = CoupaConnector("coupa", coupa_config(coupa), http, state)
    await connector.check()
    booked = await connector.handle(make_bill(), ctx())
    assert booked.operation is Operation.CREATE
    again = await connector.handle(make_bill(), ctx())
    assert again.erp_record_id == booked.erp_record_id
    records = await SandboxControl(http, coupa).records("invoice")
    assert len(records) == 1
    assert records[0]["record"]["status"] == "pending_approval"
    assert records[0]["total"] == Decimal("162.00")
    # An update of the booked invoice changes it in place.
    entry = BinderEntry(erp_record_id=str(booked.erp_record_id), erp_version=None, content_hash="h")
    updated = await connector.handle(make_bill(memo="Level 3"), ctx("k2", entry))
    assert updated.operation is Operation.UPDATE
    records = await SandboxControl(http, coupa).records("invoice")
    assert records[0]["record"]["comments"] == "Level 3"


async def test_a_draft_left_by_an_interrupted_attempt_is_found_and_submitted(
    coupa: str, http: httpx.AsyncClient, state: StateStore
) -> None:
    connector = CoupaConnector("coupa", coupa_config(coupa), http, state)
    control = SandboxControl(http, coupa)
    # The create succeeds, the submit (under /api/invoices/<id>) fails: the draft is left behind.
    await control.inject(status=503, count=1, path_prefix="/api/invoices/")
    with pytest.raises(RetriableError):
        await connector.handle(make_bill("inv_2"), ctx())
    drafts = await control.records("invoice")
    assert [r["record"]["status"] for r in drafts] == ["draft"]
    booked = await connector.handle(make_bill("inv_2"), ctx())
    assert booked.erp_record_id == drafts[0]["id"]
    final = await control.records("invoice")
    assert len(final) == 1
    assert final[0]["record"]["status"] == "pending_approval"


async def test_sandbox_refuses_a_second_submit(coupa: str, http: httpx.AsyncClient, state: StateStore) -> None:
    connector = CoupaConnector("coupa", coupa_config(coupa), http, state)
    booked = await connector.handle(make_bill("inv_3"), ctx())
    with pytest.raises(PermanentError) as twice:
        await connector._submit(str(booked.erp_record_id))
    assert twice.value.code == "erp.invalid_state"


async def test_unknown_supplier_errors_and_bad_credentials(
    coupa: str, http: httpx.AsyncClient, state: StateStore
) -> None:
    connector = CoupaConnector("coupa", coupa_config(coupa), http, state)
    with pytest.raises(PermanentError) as unknown:
        await connector.handle(make_bill(vendor=VendorRef(accounting_id="999")), ctx())
    assert unknown.value.code == "erp.unknown_reference"
    control = SandboxControl(http, coupa)
    await control.inject(status=429, retry_after=1.5)
    with pytest.raises(RetriableError) as limited:
        await connector.handle(make_bill(), ctx())
    assert limited.value.retry_after == 1.5
    bad = CoupaConnector("coupa-bad", coupa_config(coupa, secret="wrong"), http, state)
    with pytest.raises(PermanentError) as rejected:
        await bad.check()
    assert rejected.value.code == "auth.rejected"


async def test_suppliers_upsert_by_number_and_unsupported_objects(
    coupa: str, http: httpx.AsyncClient, state: StateStore
) -> None:
    connector = CoupaConnector("coupa", coupa_config(coupa), http, state)
    vendor = Vendor(
        canonical_id="acme:ingenious:vendor:c1",
        tenant="acme",
        source="ingenious",
        source_id="c1",
        source_event="company.created",
        name="Rebar Ltd",
    )
    created = await connector.handle(vendor, ctx("v1"))
    again = await connector.handle(vendor.model_copy(update={"active": False}), ctx("v2"))
    assert again.erp_record_id == created.erp_record_id
    stored = [r for r in await SandboxControl(http, coupa).records("supplier") if r["id"] == created.erp_record_id]
    assert stored[0]["record"]["number"] == "ingenious-c1"
    assert stored[0]["record"]["status"] == "inactive"
    invoice = Invoice(
        canonical_id="acme:monite:invoice:r1",
        tenant="acme",
        source="monite",
        source_id="r1",
        source_event="receivable.created",
        customer=Reference(accounting_id="88"),
        invoice_date=date(2024, 3, 1),
        currency="USD",
        line_items=[LineItem(line_number=1, amount=Decimal("10.50"))],
        subtotal=Decimal("10.50"),
        total=Decimal("10.50"),
    )
    with pytest.raises(Unsupported):
        await connector.handle(invoice, ctx())


# --------------------------------------------------------------------------------------------
# The shared contract suite


class TestCoupaContract(ConnectorContract):
    @pytest.fixture
    async def target(self, http: httpx.AsyncClient, state: StateStore) -> AsyncIterator[ContractTarget]:
        app = create_app(suppliers={"31": ("S-0031", "Acme Concrete Supply")}, accounts=[KNOWN_GL])
        async with serve(app) as base_url:
            good = coupa_config(base_url)
            good.options["timeout_seconds"] = CLIENT_TIMEOUT
            bad = coupa_config(base_url, secret="not-the-secret")
            bad.options["timeout_seconds"] = CLIENT_TIMEOUT
            payment = Payment(
                canonical_id="contract:mercoa:payment:tx_contract",
                tenant="contract",
                source="mercoa",
                source_id="tx_contract",
                source_event="transaction.created",
                direction="outgoing",
                party=Reference(name="Acme Concrete Supply"),
                payment_date=date(2026, 3, 9),
                currency="USD",
                amount=Decimal("100.00"),
            )
            yield ContractTarget(
                connector=CoupaConnector("coupa-contract", good, http, state),
                bad_credentials=CoupaConnector("coupa-contract-bad", bad, http, state),
                control=SandboxControl(http, base_url),
                bill_kind="invoice",
                unsupported=payment,
            )


async def test_default_sandbox_wired_by_sandbox_connection(http: httpx.AsyncClient, state: StateStore) -> None:
    async with serve(sandbox.create_app()) as base_url:
        connector = CoupaConnector(
            "coupa-default", sandbox.sandbox_connection(ConnectionConfig(erp="coupa"), base_url), http, state
        )
        bill = make_bill(vendor=VendorRef(accounting_custom_id="MY-DB-ID-90909", name="Big Box Store"))
        assert (await connector.handle(bill, ctx())).erp_record_id
