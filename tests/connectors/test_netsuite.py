"""NetSuite connector: payload mapping, spec validation, TBA signing, and the connector against its sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from oauthlib.oauth1.rfc5849 import signature
from pydantic import SecretStr

from ledgerflow.connectors.base import (
    BinderEntry,
    PermanentError,
    RetriableError,
    UnresolvedReferenceError,
    Unsupported,
)
from ledgerflow.connectors.netsuite import NetSuiteConnector, sandbox
from ledgerflow.connectors.netsuite.auth import TokenBasedAuth
from ledgerflow.connectors.netsuite.errors import NETSUITE_ERRORS, extract_error
from ledgerflow.connectors.netsuite.mapping import (
    bill_body,
    body_for,
    external_id,
    internal_id_from_location,
)
from ledgerflow.connectors.netsuite.sandbox import create_app
from ledgerflow.connectors.netsuite.schema import load_schemas
from ledgerflow.connectors.sandbox_kit import SandboxControl, serve
from ledgerflow.contracts import Bill, Invoice, LineItem, Operation, Payment, Reference, Vendor, VendorRef
from ledgerflow.core.outbound.client import dumps_json, loads_json
from ledgerflow.core.settings import ConnectionConfig
from ledgerflow.core.state import StateStore
from tests.connectors.contract import CLIENT_TIMEOUT, KNOWN_GL, ConnectorContract, ContractTarget, ctx


def make_bill(source_id: str = "inv_1", **overrides: Any) -> Bill:
    values: dict[str, Any] = {
        "canonical_id": f"acme:mercoa:bill:{source_id}",
        "tenant": "acme",
        "source": "mercoa",
        "source_id": source_id,
        "source_event": "invoice.created",
        "vendor": VendorRef(accounting_id="1234", name="Concrete Co"),
        "bill_number": "VENDOR-INV-1001",
        "bill_date": date(2024, 1, 15),
        "due_date": date(2024, 2, 14),
        "currency": "USD",
        "line_items": [
            LineItem(
                line_number=1,
                description="Concrete",
                amount=Decimal("150.00"),
                gl_account=Reference(accounting_id="58"),
                business_unit=Reference(accounting_id="3"),
                cost_code=Reference(accounting_id="2"),
            )
        ],
        "subtotal": Decimal("150.00"),
        "total": Decimal("150.00"),
        "memo": "Concrete pour, Level 2",
    }
    values.update(overrides)
    return Bill(**values)


USD: dict[str, Any] = {"currency_ids": {"USD": "1"}}
"""The connection option mapping the documents' currency to its NetSuite internal id."""


def test_external_id_is_stable_and_netsuite_safe() -> None:
    assert external_id("mercoa:bill:inv_8f2a") == "mercoa-bill-inv_8f2a"
    odd = external_id("mercoa:bill:a/b|c")
    assert odd == external_id("mercoa:bill:a/b|c")
    assert odd != external_id("mercoa:bill:a.b|c")
    assert all(ch.isalnum() or ch in "-_" for ch in odd)
    assert len(external_id("x:bill:" + "9" * 400)) <= 100


def test_internal_id_from_location() -> None:
    assert internal_id_from_location("https://h/services/rest/record/v1/vendorBill/647") == "647"
    with pytest.raises(ValueError, match="no internal id"):
        internal_id_from_location("https://h/services/rest/record/v1/vendorBill/eid:abc")


def test_bill_body_follows_reference_example() -> None:
    body = bill_body(make_bill(), {"subsidiary_id": "1", **USD})
    assert body["externalId"] == "acme-mercoa-bill-inv_1"
    assert body["entity"] == {"id": "1234"}
    assert body["subsidiary"] == {"id": "1"}
    assert body["tranId"] == "VENDOR-INV-1001"
    assert body["tranDate"] == "2024-01-15"
    assert body["dueDate"] == "2024-02-14"
    line = body["expense"]["items"][0]
    assert line == {
        "account": {"id": "58"},
        "amount": Decimal("150.00"),
        "memo": "Concrete",
        "department": {"id": "3"},
        "class": {"id": "2"},
    }
    # Money goes out as an exact JSON number, never through float.
    assert b'"amount":150.00' in dumps_json(body)


def test_bill_tax_becomes_an_expense_line_on_the_tax_account() -> None:
    bill = make_bill(tax_total=Decimal("12.38"), total=Decimal("162.38"))
    with pytest.raises(UnresolvedReferenceError, match="tax_account"):
        bill_body(bill, USD)
    lines = bill_body(bill, {"tax_account": "77", **USD})["expense"]["items"]
    assert lines[-1] == {"account": {"id": "77"}, "amount": Decimal("12.38"), "memo": "tax"}
    assert sum(line["amount"] for line in lines) == Decimal("162.38")


def test_vendor_without_ids_resolves_to_the_external_id_ledgerflow_upserted() -> None:
    bill = make_bill(vendor=VendorRef(source_id="ent_9", name="Concrete Co"))
    assert bill_body(bill, USD)["entity"] == {"externalId": "acme-mercoa-vendor-ent_9"}
    with pytest.raises(UnresolvedReferenceError):
        bill_body(make_bill(vendor=VendorRef(name="Nobody")), USD)


def test_line_without_gl_account_needs_a_default() -> None:
    line = LineItem(line_number=1, amount=Decimal("150.00"))
    bill = make_bill(line_items=[line])
    with pytest.raises(UnresolvedReferenceError, match="GL account"):
        bill_body(bill, USD)
    assert bill_body(bill, {"default_expense_account": 61, **USD})["expense"]["items"][0]["account"] == {"id": "61"}


def test_vendor_and_invoice_bodies() -> None:
    vendor = Vendor(
        canonical_id="acme:mercoa:vendor:ent_9",
        tenant="acme",
        source="mercoa",
        source_id="ent_9",
        source_event="counterparty.created",
        name="Concrete Co",
        email="ap@concrete.example",
        active=False,
    )
    record_type, body = body_for(vendor, {})
    assert record_type == "vendor"
    assert body == {
        "externalId": "acme-mercoa-vendor-ent_9",
        "companyName": "Concrete Co",
        "email": "ap@concrete.example",
        "isInactive": True,
    }
    invoice = Invoice(
        canonical_id="acme:monite:invoice:r1",
        tenant="acme",
        source="monite",
        source_id="r1",
        source_event="receivable.created",
        customer=Reference(accounting_id="88"),
        invoice_date=date(2024, 3, 1),
        currency="USD",
        line_items=[LineItem(line_number=1, quantity=Decimal(2), unit_price=Decimal("5.25"), amount=Decimal("10.50"))],
        subtotal=Decimal("10.50"),
        total=Decimal("10.50"),
    )
    record_type, body = body_for(invoice, {"default_item": "5", **USD})
    assert record_type == "invoice"
    assert body["item"]["items"] == [
        {"item": {"id": "5"}, "amount": Decimal("10.50"), "quantity": Decimal(2), "rate": Decimal("5.25")}
    ]


@pytest.fixture(scope="module")
def ns_spec(shared_dir: Path) -> Path:
    path = shared_dir / "specs" / "netsuite-oas.json"
    if not path.is_file():
        pytest.skip("netsuite-oas.json missing from ../shared/specs")
    return path


def test_mapped_bodies_validate_against_the_netsuite_description(ns_spec: Path) -> None:
    schemas = load_schemas(ns_spec)
    body = loads_json(dumps_json(bill_body(make_bill(), {"subsidiary_id": "1", **USD})))
    assert list(schemas.problems("vendorBill", body)) == []


def test_description_rejects_misspelt_fields_wrong_types_and_read_only(ns_spec: Path) -> None:
    schemas = load_schemas(ns_spec)
    body = loads_json(dumps_json(bill_body(make_bill(), USD)))
    body["tranDte"] = "2024-01-15"
    body["expense"]["items"][0]["amount"] = "150.00"
    body["links"] = []
    problems = {p.path: p.message for p in schemas.problems("vendorBill", body)}
    assert "tranDte" in problems[""]
    assert "number" in problems["expense.items[0].amount"]
    assert "read-only" in problems["links"]


def test_error_table_and_extractor() -> None:
    response = httpx.Response(
        400,
        json={
            "type": "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1",
            "title": "Bad Request",
            "status": 400,
            "o:errorDetails": [
                {"detail": "Invalid reference 999", "o:errorCode": "INVALID_KEY_OR_REF", "o:errorPath": "entity"}
            ],
        },
    )
    found = extract_error(response)
    assert found.vendor_code == "INVALID_KEY_OR_REF"
    assert found.message == "Invalid reference 999 (at entity)"
    assert NETSUITE_ERRORS.classify(400, "INVALID_KEY_OR_REF").retriable is False
    assert NETSUITE_ERRORS.classify(400, "CONCURRENCY_LIMIT_EXCEEDED").retriable is True
    assert NETSUITE_ERRORS.classify(429, None).retriable is True
    overridden = NETSUITE_ERRORS.with_overrides({"INVALID_KEY_OR_REF": "retriable"})
    assert overridden.classify(400, "INVALID_KEY_OR_REF").retriable is True


async def test_tba_signature_verifies_with_hmac_sha256() -> None:
    creds = {
        "account_id": SecretStr("1234567_sb1"),
        "consumer_key": SecretStr("ck"),
        "consumer_secret": SecretStr("cs"),
        "token_id": SecretStr("tk"),
        "token_secret": SecretStr("ts"),
    }
    auth = TokenBasedAuth(creds)
    request = httpx.Request("PUT", "http://127.0.0.1:9/services/rest/record/v1/vendorBill/eid:x?replace=expense")
    await auth.apply(request)
    header = request.headers["Authorization"]
    assert header.startswith('OAuth realm="1234567_SB1"')
    assert 'oauth_signature_method="HMAC-SHA256"' in header
    params = signature.collect_parameters(
        uri_query=urlparse(str(request.url)).query, headers={"Authorization": header}, exclude_oauth_signature=False
    )
    signed: Any = SimpleNamespace(
        uri=str(request.url),
        http_method="PUT",
        params=[(k, v) for k, v in params if k != "oauth_signature"],
        signature=dict(params)["oauth_signature"],
    )
    assert signature.verify_hmac_sha256(signed, "cs", "ts")
    assert not signature.verify_hmac_sha256(signed, "cs", "wrong")


# --------------------------------------------------------------------------------------------
# Against the sandbox over loopback HTTP

TBA = {"consumer_key": "ck", "consumer_secret": "cs", "token_id": "tk", "token_secret": "ts"}


@pytest.fixture
async def ns_sandbox(shared_dir: Path) -> AsyncIterator[str]:
    app = create_app(shared_dir / "specs" / "netsuite-oas.json", tba=TBA, vendors={"1234": "Concrete Co"})
    async with serve(app) as base_url:
        yield base_url


def ns_config(base_url: str, **options: Any) -> ConnectionConfig:
    creds = {"account_id": "1234567_SB1", **TBA}
    return ConnectionConfig(erp="netsuite", base_url=base_url, credentials=creds, options={**USD, **options})


async def test_upsert_by_eid_answers_204_location_and_updates_in_place(
    ns_sandbox: str, http: httpx.AsyncClient, state: StateStore
) -> None:
    connector = NetSuiteConnector("ns", ns_config(ns_sandbox), http, state)
    await connector.check()
    first = await connector.handle(make_bill(), ctx())
    assert first.operation is Operation.CREATE
    assert first.http_status == 204
    assert first.erp_record_id
    assert first.erp_record_id.isdigit()
    # A redelivery (runtime retry) upserts the same record: still one vendor bill.
    again = await connector.handle(make_bill(), ctx())
    assert again.erp_record_id == first.erp_record_id
    # An update with a binder entry changes the record in place.
    changed = make_bill(memo="Concrete pour, Level 3")
    entry = BinderEntry(erp_record_id=first.erp_record_id, erp_version=None, content_hash="h")
    updated = await connector.handle(changed, ctx("k2", entry))
    assert updated.operation is Operation.UPDATE
    assert updated.erp_record_id == first.erp_record_id
    records = await SandboxControl(http, ns_sandbox).records("vendorBill")
    assert len(records) == 1
    assert records[0]["record"]["memo"] == "Concrete pour, Level 3"
    assert records[0]["record"]["externalId"] == "acme-mercoa-bill-inv_1"
    assert records[0]["total"] == Decimal("150.00")


async def test_bill_for_a_vendor_upserted_by_ledgerflow_resolves_by_external_id(
    ns_sandbox: str, http: httpx.AsyncClient, state: StateStore
) -> None:
    connector = NetSuiteConnector("ns", ns_config(ns_sandbox), http, state)
    vendor = Vendor(
        canonical_id="acme:mercoa:vendor:ent_9",
        tenant="acme",
        source="mercoa",
        source_id="ent_9",
        source_event="counterparty.created",
        name="Rebar Ltd",
    )
    booked_vendor = await connector.handle(vendor, ctx("v"))
    bill = make_bill("inv_2", vendor=VendorRef(source_id="ent_9", name="Rebar Ltd"))
    booked = await connector.handle(bill, ctx("b"))
    stored = await SandboxControl(http, ns_sandbox).records("vendorBill")
    assert stored[0]["record"]["entity"] == {"externalId": "acme-mercoa-vendor-ent_9"}
    assert booked.erp_record_id != booked_vendor.erp_record_id


async def test_unknown_vendor_and_invalid_content_are_permanent(
    ns_sandbox: str, http: httpx.AsyncClient, state: StateStore
) -> None:
    connector = NetSuiteConnector("ns", ns_config(ns_sandbox), http, state)
    with pytest.raises(PermanentError) as unknown:
        await connector.handle(make_bill(vendor=VendorRef(accounting_id="999")), ctx())
    assert unknown.value.vendor_code == "INVALID_KEY_OR_REF"
    assert unknown.value.code == "erp.unknown_reference"
    with pytest.raises(PermanentError) as unresolved:
        await connector.handle(make_bill(vendor=VendorRef(name="Nobody")), ctx())
    assert unresolved.value.code == "reference.unresolved"
    # A connection option that puts a bad field in the body is caught by the OAS validation.
    bad = NetSuiteConnector("ns", ns_config(ns_sandbox, line_segments={"cost_code": "klass"}), http, state)
    with pytest.raises(PermanentError) as invalid:
        await bad.handle(make_bill(), ctx())
    assert invalid.value.vendor_code == "INVALID_CONTENT"
    assert "klass" in invalid.value.message


async def test_429_and_5xx_are_retriable_with_retry_after(
    ns_sandbox: str, http: httpx.AsyncClient, state: StateStore
) -> None:
    connector = NetSuiteConnector("ns", ns_config(ns_sandbox), http, state)
    control = SandboxControl(http, ns_sandbox)
    await control.inject(status=429, retry_after=2, count=1)
    with pytest.raises(RetriableError) as limited:
        await connector.handle(make_bill(), ctx())
    assert limited.value.retry_after == 2
    assert limited.value.vendor_code == "CONCURRENCY_LIMIT_EXCEEDED"
    await control.inject(status=503, count=1)
    with pytest.raises(RetriableError):
        await connector.handle(make_bill(), ctx())
    assert (await connector.handle(make_bill(), ctx())).erp_record_id


async def test_bad_tba_credentials_are_permanent(ns_sandbox: str, http: httpx.AsyncClient, state: StateStore) -> None:
    config = ns_config(ns_sandbox)
    config.credentials["token_secret"] = SecretStr("wrong")
    connector = NetSuiteConnector("ns", config, http, state)
    with pytest.raises(PermanentError) as rejected:
        await connector.check()
    assert rejected.value.code == "auth.rejected"
    assert rejected.value.vendor_code == "INVALID_LOGIN"


async def test_oauth2_client_credentials_and_unsupported_objects(
    ns_sandbox: str, http: httpx.AsyncClient, state: StateStore
) -> None:
    config = ConnectionConfig(
        erp="netsuite",
        base_url=ns_sandbox,
        credentials={"client_id": "ledgerflow", "client_secret": "sandbox-secret"},
        options=USD,
    )
    connector = NetSuiteConnector("ns-m2m", config, http, state)
    assert (await connector.handle(make_bill(), ctx())).erp_record_id
    payment = Payment(
        canonical_id="acme:mercoa:payment:tx1",
        tenant="acme",
        source="mercoa",
        source_id="tx1",
        source_event="transaction.created",
        direction="outgoing",
        party=Reference(accounting_id="1234"),
        payment_date=date(2024, 2, 1),
        currency="USD",
        amount=Decimal("150.00"),
    )
    with pytest.raises(Unsupported):
        await connector.handle(payment, ctx())
    with pytest.raises(Unsupported):
        await connector.handle(make_bill(action="void"), ctx())


# --------------------------------------------------------------------------------------------
# The shared contract suite

CONTRACT_VENDOR_EID = "contract-mercoa-vendor-ent_acme"


def contract_payment() -> Payment:
    return Payment(
        canonical_id="contract:mercoa:payment:tx_contract",
        tenant="contract",
        source="mercoa",
        source_id="tx_contract",
        source_event="transaction.created",
        direction="outgoing",
        party=Reference(source_id="ent_acme"),
        payment_date=date(2026, 3, 9),
        currency="USD",
        amount=Decimal("100.00"),
    )


class TestNetSuiteContract(ConnectorContract):
    @pytest.fixture
    async def target(
        self, shared_dir: Path, http: httpx.AsyncClient, state: StateStore
    ) -> AsyncIterator[ContractTarget]:
        app = create_app(
            shared_dir / "specs" / "netsuite-oas.json",
            tba=TBA,
            vendors={"501": "Acme Concrete Supply"},
            external_ids={"501": CONTRACT_VENDOR_EID},
            accounts=[KNOWN_GL],
        )
        async with serve(app) as base_url:
            good = ns_config(base_url, timeout_seconds=CLIENT_TIMEOUT)
            bad = ns_config(base_url, timeout_seconds=CLIENT_TIMEOUT)
            bad.credentials["token_secret"] = SecretStr("not-the-secret")
            yield ContractTarget(
                connector=NetSuiteConnector("ns-contract", good, http, state),
                bad_credentials=NetSuiteConnector("ns-contract-bad", bad, http, state),
                control=SandboxControl(http, base_url),
                bill_kind="vendorBill",
                unsupported=contract_payment(),
            )


async def test_default_sandbox_wired_by_sandbox_connection(http: httpx.AsyncClient, state: StateStore) -> None:
    async with serve(sandbox.create_app()) as base_url:
        config = sandbox.sandbox_connection(ConnectionConfig(erp="netsuite", options={"subsidiary_id": 1}), base_url)
        assert config.options == {**sandbox.SANDBOX_OPTIONS, "subsidiary_id": 1}
        connector = NetSuiteConnector("ns-default", config, http, state)
        await connector.check()
        seeded = VendorRef(accounting_id="1001", name="Big Box Store")
        assert (await connector.handle(make_bill(vendor=seeded), ctx())).erp_record_id
