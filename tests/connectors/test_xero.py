"""Xero connector against its sandbox over loopback HTTP: the shared contract plus Xero rules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from ledgerflow.connectors.base import PermanentError, RetriableError
from ledgerflow.connectors.sandbox_kit import SandboxControl, serve
from ledgerflow.connectors.xero import XeroConnector
from ledgerflow.connectors.xero.sandbox import DEFAULT_CREDENTIALS, TOKEN_PATH, create_app, sandbox_connection
from ledgerflow.contracts import Action, AppliedTo, Operation, Payment, Reference
from ledgerflow.core.settings import ConnectionConfig
from ledgerflow.core.state import StateStore
from tests.connectors.contract import (
    CLIENT_TIMEOUT,
    ConnectorContract,
    ContractTarget,
    contract_bill,
    contract_budget,
    ctx,
    entry,
    mercoa_sample_bill,
)

pytestmark = pytest.mark.timeout(60)


def xero_config(base_url: str, **options: Any) -> ConnectionConfig:
    base = ConnectionConfig(
        erp="xero", options={"timeout_seconds": CLIENT_TIMEOUT, "rate_limit_per_minute": 6000, **options}
    )
    return sandbox_connection(base, base_url)


@pytest.fixture
async def xero(shared_dir: Path) -> AsyncIterator[tuple[FastAPI, str]]:
    app = create_app(spec_path=shared_dir / "specs" / "xero_accounting.yaml")
    async with serve(app) as base_url:
        yield app, base_url


class TestXeroContract(ConnectorContract):
    @pytest.fixture
    async def target(self, xero: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore) -> ContractTarget:
        _, url = xero
        bad_config = xero_config(url)
        bad_config.credentials["client_secret"] = SecretStr("wrong")
        return ContractTarget(
            connector=XeroConnector("xero", xero_config(url), http, state),
            bad_credentials=XeroConnector("xero-bad", bad_config, http, state),
            control=SandboxControl(http, url),
            bill_kind="invoice",
            unsupported=contract_budget(),
        )


async def _headers(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    response = await http.post(
        url + TOKEN_PATH,
        data={"grant_type": "refresh_token", "refresh_token": DEFAULT_CREDENTIALS.refresh_token},
        auth=(DEFAULT_CREDENTIALS.client_id, DEFAULT_CREDENTIALS.client_secret),
    )
    response.raise_for_status()
    return {
        "Authorization": f"Bearer {response.json()['access_token']}",
        "xero-tenant-id": DEFAULT_CREDENTIALS.tenant_id,
    }


async def test_bill_is_an_authorised_accpay_invoice_with_the_payload_total(
    xero: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore
) -> None:
    _, url = xero
    connector = XeroConnector("xero", xero_config(url), http, state)
    bill = contract_bill("in_x1", amounts=("1234.56", "0.10"))
    booked = await connector.handle(bill, ctx("x1"))
    await connector.handle(contract_bill("in_x2"), ctx("x2"))
    control = SandboxControl(http, url)
    invoices = {r["id"]: r for r in await control.records("invoice")}
    stored = invoices[str(booked.erp_record_id)]
    assert stored["total"] == Decimal("1234.66")
    record = stored["record"]
    assert record["Type"] == "ACCPAY"
    assert record["Status"] == "AUTHORISED"
    assert record["LineItems"][0]["AccountCode"] == "600394"
    assert record["LineItems"][0]["LineAmount"] == Decimal("1234.56")
    contacts = await control.records("contact")
    assert [c["record"]["Name"] for c in contacts] == ["Acme Concrete Supply"]
    binding = await state.get_binding("xero", "contract:vendor-ref:ent_acme")
    assert binding is not None
    assert binding.erp_record_id == contacts[0]["id"]
    # A name with quotes is matched by the where filter, not created twice.
    quoted = 'Smith "Steel" \\ Co'
    await connector.handle(contract_bill("in_q1", vendor=quoted, vendor_source_id="s1"), ctx("q1"))
    await connector.handle(contract_bill("in_q2", vendor=quoted, vendor_source_id="s2"), ctx("q2"))
    names = [c["record"]["Name"] for c in await control.records("contact")]
    assert names.count(quoted) == 1


async def test_concurrent_bills_of_a_new_vendor_share_one_contact(
    xero: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore
) -> None:
    """Two bills of a vendor Xero does not know yet, booked at once: both look it up, both try to
    create it, Xero refuses the second name; the loser uses the winner's contact."""
    _, url = xero
    connector = XeroConnector("xero", xero_config(url), http, state)
    bills = [contract_bill(f"in_race{n}", vendor="Race Lumber", vendor_source_id=f"ent_race{n}") for n in range(4)]
    booked = await asyncio.gather(*(connector.handle(b, ctx(f"race{n}")) for n, b in enumerate(bills)))
    assert all(b.erp_record_id for b in booked)
    contacts = [c for c in await SandboxControl(http, url).records("contact") if c["record"]["Name"] == "Race Lumber"]
    assert len(contacts) == 1


async def test_unknown_account_code_carries_xero_validation_message(
    xero: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore
) -> None:
    _, url = xero
    connector = XeroConnector("xero", xero_config(url), http, state)
    with pytest.raises(PermanentError) as err:
        await connector.handle(contract_bill("in_bad", gl="999999"), ctx("bad"))
    assert err.value.vendor_code == "ValidationException"
    assert "Account code '999999' is not a valid code" in err.value.message


async def test_spec_validation_rejects_an_invoice_without_required_field(
    xero: tuple[FastAPI, str], http: httpx.AsyncClient
) -> None:
    app, url = xero
    assert app.state.spec_validation
    headers = await _headers(http, url)
    line = {"Description": "x", "Quantity": 1, "UnitAmount": 10, "AccountCode": "600394"}
    no_contact = await http.put(
        f"{url}/api.xro/2.0/Invoices", json={"Invoices": [{"Type": "ACCPAY", "LineItems": [line]}]}, headers=headers
    )
    assert no_contact.status_code == 400
    body = no_contact.json()
    assert body["Type"] == "ValidationException"
    assert any("'Contact' is a required property" in e["Message"] for e in body["Elements"][0]["ValidationErrors"])
    bad_type = {"Type": "ACCPAY", "Contact": {"Name": "A"}, "LineItems": [{**line, "Quantity": "one"}]}
    wrong = await http.put(f"{url}/api.xro/2.0/Invoices", json={"Invoices": [bad_type]}, headers=headers)
    assert wrong.status_code == 400
    assert "Quantity" in wrong.text
    unknown = {"Type": "ACCPAY", "Contact": {"Name": "A"}, "LineItems": [line], "Colour": "red"}
    assert (
        await http.put(f"{url}/api.xro/2.0/Invoices", json={"Invoices": [unknown]}, headers=headers)
    ).status_code == 400
    no_tenant = {k: v for k, v in headers.items() if k != "xero-tenant-id"}
    assert (await http.get(f"{url}/api.xro/2.0/Organisation", headers=no_tenant)).status_code == 403


async def test_per_tenant_minute_limit_is_a_retriable_429(http: httpx.AsyncClient, state: StateStore) -> None:
    app = create_app(minute_limit=3, spec_path=Path("/nonexistent"))
    assert not app.state.spec_validation
    async with serve(app) as url:
        connector = XeroConnector("xero", xero_config(url, rate_limit_per_minute=1000), http, state)
        for _ in range(3):
            await connector.check()
        with pytest.raises(RetriableError) as err:
            await connector.check()
        assert err.value.code == "http.429"
        assert err.value.retry_after is not None
        assert 1 <= err.value.retry_after <= 60
        assert "minute" in err.value.message


async def test_per_tenant_concurrency_limit(http: httpx.AsyncClient) -> None:
    app = create_app(concurrent_limit=5, latency=0.2, spec_path=Path("/nonexistent"))
    async with serve(app) as url:
        headers = await _headers(http, url)
        responses = await asyncio.gather(
            *(http.get(f"{url}/api.xro/2.0/Organisation", headers=headers) for _ in range(8))
        )
        limited = [r for r in responses if r.status_code == 429]
        assert len([r for r in responses if r.status_code == 200]) == 5
        assert len(limited) == 3
        assert all(r.headers["X-Rate-Limit-Problem"] == "concurrent" for r in limited)
        assert all(r.headers["Retry-After"] for r in limited)


async def test_client_concurrency_cap_stays_under_the_tenant_limit(http: httpx.AsyncClient, state: StateStore) -> None:
    app = create_app(concurrent_limit=5, latency=0.05, spec_path=Path("/nonexistent"))
    async with serve(app) as url:
        connector = XeroConnector("xero", xero_config(url, rate_limit_per_minute=6000), http, state)
        await asyncio.gather(*(connector.check() for _ in range(12)))  # default cap 5: no 429


async def test_void_and_payment(xero: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore) -> None:
    _, url = xero
    connector = XeroConnector("xero", xero_config(url, default_bank_account="090"), http, state)
    bill = contract_bill("in_pay")
    booked = await connector.handle(bill, ctx("p1"))
    await state.put_binding(
        "xero", bill.canonical_id, erp_record_id=str(booked.erp_record_id), erp_version=None, content_hash=""
    )
    payment = Payment(
        canonical_id="t:mercoa:payment:tr_1",
        tenant="t",
        source="mercoa",
        source_id="tr_1",
        source_event="transaction.completed",
        direction="outgoing",
        party=Reference(name="Acme Concrete Supply"),
        payment_date=bill.bill_date,
        currency="USD",
        amount=Decimal("100.00"),
        applied_to=[
            AppliedTo(
                document=Reference(source_id="in_pay"),
                document_canonical_id=bill.canonical_id,
                amount=Decimal("100.00"),
            )
        ],
    )
    paid = await connector.handle(payment, ctx("p2"))
    assert paid.operation is Operation.CREATE
    control = SandboxControl(http, url)
    invoice = (await control.records("invoice"))[0]["record"]
    assert invoice["Status"] == "PAID"
    assert invoice["AmountDue"] == Decimal("0.00")
    # Voiding a paid bill is refused by Xero (a permanent error with its message).
    with pytest.raises(PermanentError):
        await connector.handle(bill.model_copy(update={"action": Action.VOID}), ctx("p3", entry(booked)))
    await connector.handle(payment.model_copy(update={"action": Action.VOID}), ctx("p4", entry(paid)))
    voided = await connector.handle(bill.model_copy(update={"action": Action.VOID}), ctx("p5", entry(booked)))
    assert voided.operation is Operation.VOID
    assert (await control.records("invoice"))[0]["record"]["Status"] == "VOIDED"


async def _rotation(url: str, http: httpx.AsyncClient, store: StateStore, app: FastAPI) -> None:
    connector = XeroConnector("xero-rot", xero_config(url), http, store)
    await connector.check()
    first = await store.get_token("xero-rot")
    assert first is not None
    assert first.refresh_token not in (None, DEFAULT_CREDENTIALS.refresh_token)
    issuer = app.state.sandbox.issuer
    issuer.revoke_access_tokens()
    restarted = XeroConnector("xero-rot", xero_config(url), http, store)
    await restarted.handle(contract_bill("in_rot"), ctx("rot"))
    second = await store.get_token("xero-rot")
    assert second is not None
    assert second.refresh_token != first.refresh_token
    assert first.refresh_token not in issuer.refresh_tokens
    assert second.refresh_token in issuer.refresh_tokens


async def test_token_rotation_persisted_on_sqlite(
    xero: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore
) -> None:
    app, url = xero
    await _rotation(url, http, state, app)


@pytest.mark.postgres
async def test_token_rotation_persisted_on_postgres(
    xero: tuple[FastAPI, str], http: httpx.AsyncClient, postgres_url: str
) -> None:
    app, url = xero
    store = StateStore(postgres_url)
    await store.create_all()
    try:
        await _rotation(url, http, store, app)
    finally:
        await store.close()


async def test_mercoa_sample_is_booked_with_its_amount(
    xero: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore, mercoa_sample: bytes
) -> None:
    _, url = xero
    bill = mercoa_sample_bill(mercoa_sample)
    booked = await XeroConnector("c", xero_config(url), http, state).handle(bill, ctx("k-sample"))
    stored = await SandboxControl(http, url).records("invoice")
    assert [s["id"] for s in stored] == [booked.erp_record_id]
    assert stored[0]["total"] == bill.total == Decimal("100")
