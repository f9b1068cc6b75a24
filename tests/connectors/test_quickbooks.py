"""QuickBooks Online connector against its sandbox over loopback HTTP: the shared contract plus QBO rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from ledgerflow.connectors.base import PermanentError
from ledgerflow.connectors.quickbooks import QuickBooksConnector
from ledgerflow.connectors.quickbooks.sandbox import DEFAULT_CREDENTIALS, TOKEN_PATH, create_app, sandbox_connection
from ledgerflow.connectors.sandbox_kit import SandboxControl, serve
from ledgerflow.contracts import Action, Operation, Vendor
from ledgerflow.core.settings import ConnectionConfig
from ledgerflow.core.state import StateStore
from tests.connectors.contract import (
    CLIENT_TIMEOUT,
    ConnectorContract,
    ContractTarget,
    contract_bill,
    contract_sales_order,
    ctx,
    entry,
    mercoa_sample_bill,
)

pytestmark = pytest.mark.timeout(60)


def qbo_config(base_url: str, **options: Any) -> ConnectionConfig:
    base = ConnectionConfig(
        erp="quickbooks", options={"timeout_seconds": CLIENT_TIMEOUT, "rate_limit_per_minute": 6000, **options}
    )
    return sandbox_connection(base, base_url)


@pytest.fixture
async def qbo(shared_dir: Path) -> AsyncIterator[tuple[FastAPI, str]]:
    app = create_app(spec_path=shared_dir / "specs" / "Finance.xsd")
    async with serve(app) as base_url:
        yield app, base_url


class TestQuickBooksContract(ConnectorContract):
    @pytest.fixture
    async def target(self, qbo: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore) -> ContractTarget:
        _, url = qbo
        good = QuickBooksConnector("qbo", qbo_config(url), http, state)
        bad_config = qbo_config(url)
        bad_config.credentials["client_secret"] = SecretStr("wrong")
        bad = QuickBooksConnector("qbo-bad", bad_config, http, state)
        return ContractTarget(
            connector=good,
            bad_credentials=bad,
            control=SandboxControl(http, url),
            bill_kind="bill",
            unsupported=contract_sales_order(),
        )


async def _bearer(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    response = await http.post(
        url + TOKEN_PATH,
        data={"grant_type": "refresh_token", "refresh_token": DEFAULT_CREDENTIALS.refresh_token},
        auth=(DEFAULT_CREDENTIALS.client_id, DEFAULT_CREDENTIALS.client_secret),
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def test_bill_body_and_vendor_resolution(
    qbo: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore
) -> None:
    _, url = qbo
    connector = QuickBooksConnector("qbo", qbo_config(url), http, state)
    first = await connector.handle(contract_bill("in_v1"), ctx("k1"))
    second = await connector.handle(contract_bill("in_v2"), ctx("k2"))
    control = SandboxControl(http, url)
    vendors = await control.records("vendor")
    assert [v["record"]["DisplayName"] for v in vendors] == ["Acme Concrete Supply"]
    binding = await state.get_binding("qbo", "contract:vendor-ref:ent_acme")
    assert binding is not None
    assert binding.erp_record_id == vendors[0]["id"]
    bills = {b["id"]: b["record"] for b in await control.records("bill")}
    stored = bills[str(first.erp_record_id)]
    assert stored["VendorRef"] == {"value": vendors[0]["id"]}
    assert stored["Line"][0]["AccountBasedExpenseLineDetail"]["AccountRef"] == {"value": "600394"}
    assert stored["Line"][1]["Amount"] == Decimal("40.00")
    assert stored["TxnDate"] == "2026-03-02"
    assert stored["DocNumber"] == "INV-in_v1"
    assert bills[str(second.erp_record_id)]["VendorRef"] == stored["VendorRef"]

    # A name with a quote is escaped in the query and matched, not duplicated.
    quoted = contract_bill("in_q", vendor="O'Brien \\ Sons", vendor_source_id="ent_ob")
    await connector.handle(quoted, ctx("kq1"))
    await state.put_binding("qbo", "contract:vendor-ref:ent_ob", erp_record_id="0", erp_version=None, content_hash="")
    fresh = QuickBooksConnector("qbo2", qbo_config(url), http, state)
    await fresh.handle(contract_bill("in_q2", vendor="O'Brien \\ Sons", vendor_source_id="ent_ob"), ctx("kq2"))
    assert [v["record"]["DisplayName"] for v in await control.records("vendor")].count("O'Brien \\ Sons") == 1

    # Vendor creation off: an unknown vendor is unresolved.
    strict = QuickBooksConnector("qbo3", qbo_config(url, create_vendors=False), http, state)
    with pytest.raises(PermanentError) as err:
        await strict.handle(contract_bill("in_v3", vendor="Nobody Ltd", vendor_source_id="ent_x"), ctx("k3"))
    assert err.value.code == "reference.unresolved"


async def test_missing_gl_account_names_the_line(
    qbo: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore
) -> None:
    _, url = qbo
    bill = contract_bill("in_nogl")
    bill = bill.model_copy(
        update={"line_items": [bill.line_items[0].model_copy(update={"gl_account": None}), bill.line_items[1]]}
    )
    connector = QuickBooksConnector("qbo", qbo_config(url), http, state)
    with pytest.raises(PermanentError) as err:
        await connector.handle(bill, ctx("k-nogl"))
    assert err.value.code == "reference.unresolved"
    assert "line 1" in err.value.message
    defaulted = QuickBooksConnector("qbo-d", qbo_config(url, default_expense_account="7"), http, state)
    booked = await defaulted.handle(bill, ctx("k-nogl-2"))
    stored = (await SandboxControl(http, url).records("bill"))[0]["record"]
    assert booked.erp_record_id == stored["Id"]
    assert stored["Line"][0]["AccountBasedExpenseLineDetail"]["AccountRef"] == {"value": "7"}


async def test_unknown_gl_account_carries_the_intuit_fault(
    qbo: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore
) -> None:
    _, url = qbo
    connector = QuickBooksConnector("qbo", qbo_config(url), http, state)
    with pytest.raises(PermanentError) as err:
        await connector.handle(contract_bill("in_x", gl="999999"), ctx("k-x"))
    assert err.value.vendor_code == "2500"
    assert err.value.code == "erp.unknown_reference"
    assert "999999" in err.value.message


async def test_stale_sync_token_is_rejected_and_update_rereads(
    qbo: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore
) -> None:
    _, url = qbo
    connector = QuickBooksConnector("qbo", qbo_config(url), http, state)
    first = await connector.handle(contract_bill("in_stale"), ctx("k-s1"))
    headers = await _bearer(http, url)
    realm = DEFAULT_CREDENTIALS.realm_id
    bill_url = f"{url}/v3/company/{realm}/bill"
    current = (await http.get(f"{bill_url}/{first.erp_record_id}", headers=headers)).json()["Bill"]
    # Someone edits the bill in QuickBooks: SyncToken 0 → 1.
    edited = await http.post(bill_url, json={**current, "PrivateNote": "edited in QBO"}, headers=headers)
    assert edited.json()["Bill"]["SyncToken"] == "1"
    stale = await http.post(bill_url, json={**current, "PrivateNote": "stale"}, headers=headers)
    assert stale.status_code == 400
    fault = stale.json()["Fault"]
    assert fault["type"] == "ValidationFault"
    assert fault["Error"][0]["code"] == "5010"
    assert "Stale Object Error" in fault["Error"][0]["Message"]
    # The connector's update (binder says SyncToken 0) re-reads and succeeds.
    updated = await connector.handle(contract_bill("in_stale", memo="v2"), ctx("k-s2", entry(first)))
    assert updated.operation is Operation.UPDATE
    assert updated.erp_version == "2"


async def test_spec_validation_rejects_a_bill_without_required_field(
    qbo: tuple[FastAPI, str], http: httpx.AsyncClient
) -> None:
    app, url = qbo
    assert app.state.spec_validation
    headers = await _bearer(http, url)
    bill_url = f"{url}/v3/company/{DEFAULT_CREDENTIALS.realm_id}/bill"
    line = {
        "Amount": 10,
        "DetailType": "AccountBasedExpenseLineDetail",
        "AccountBasedExpenseLineDetail": {"AccountRef": {"value": "7"}},
    }
    missing = await http.post(bill_url, json={"Line": [line]}, headers=headers)
    assert missing.status_code == 400
    assert missing.json()["Fault"]["Error"][0]["code"] == "2020"
    assert "VendorRef" in missing.json()["Fault"]["Error"][0]["Detail"]
    unknown = await http.post(
        bill_url, json={"VendorRef": {"value": "1"}, "Line": [line], "Colour": "red"}, headers=headers
    )
    assert unknown.json()["Fault"]["Error"][0]["code"] == "2010"
    bad_date = await http.post(
        bill_url, json={"VendorRef": {"value": "1"}, "Line": [line], "TxnDate": "02/03/2026"}, headers=headers
    )
    assert bad_date.json()["Fault"]["Error"][0]["code"] == "2030"
    string_amount = {**line, "Amount": "10.00"}
    bad_amount = await http.post(bill_url, json={"VendorRef": {"value": "1"}, "Line": [string_amount]}, headers=headers)
    assert bad_amount.json()["Fault"]["Error"][0]["code"] == "2030"


async def test_vendor_record_create_update_and_deactivate(
    qbo: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore
) -> None:
    _, url = qbo
    connector = QuickBooksConnector("qbo", qbo_config(url), http, state)
    vendor = Vendor(
        canonical_id="t:mercoa:vendor:ent_9",
        tenant="t",
        source="mercoa",
        source_id="ent_9",
        source_event="entity.created",
        name="Rebar Ltd",
        email="ap@rebar.example",
    )
    created = await connector.handle(vendor, ctx("v1"))
    assert created.operation is Operation.CREATE
    updated = await connector.handle(vendor.model_copy(update={"phone": "+1 555 0100"}), ctx("v2", entry(created)))
    assert updated.operation is Operation.UPDATE
    assert updated.erp_record_id == created.erp_record_id
    gone = await connector.handle(vendor.model_copy(update={"action": Action.DELETE}), ctx("v3", entry(updated)))
    assert gone.operation is Operation.VOID
    stored = (await SandboxControl(http, url).records("vendor"))[0]["record"]
    assert stored["Active"] is False
    assert stored["PrimaryPhone"] == {"FreeFormNumber": "+1 555 0100"}


async def test_void_deletes_the_bill(qbo: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore) -> None:
    _, url = qbo
    connector = QuickBooksConnector("qbo", qbo_config(url), http, state)
    booked = await connector.handle(contract_bill("in_void"), ctx("k-v1"))
    void = contract_bill("in_void").model_copy(update={"action": Action.VOID})
    voided = await connector.handle(void, ctx("k-v2", entry(booked)))
    assert voided.operation is Operation.VOID
    assert await SandboxControl(http, url).records("bill") == []
    again = await connector.handle(void, ctx("k-v2", entry(booked)))  # redelivered void
    assert again.operation is Operation.VOID


async def _rotation(url: str, http: httpx.AsyncClient, state: StateStore, app: FastAPI) -> None:
    connector = QuickBooksConnector("qbo-rot", qbo_config(url), http, state)
    await connector.check()
    stored = await state.get_token("qbo-rot")
    assert stored is not None
    assert stored.refresh_token not in (None, DEFAULT_CREDENTIALS.refresh_token)
    issuer = app.state.sandbox.issuer
    assert stored.refresh_token in issuer.refresh_tokens
    # Access token revoked at Intuit's side: the next call refreshes with the persisted token.
    issuer.revoke_access_tokens()
    fresh = QuickBooksConnector("qbo-rot", qbo_config(url), http, state)
    await fresh.handle(contract_bill("in_rot"), ctx("k-rot"))
    rotated = await state.get_token("qbo-rot")
    assert rotated is not None
    assert rotated.refresh_token != stored.refresh_token
    assert rotated.refresh_token in issuer.refresh_tokens
    assert stored.refresh_token not in issuer.refresh_tokens  # single use: rotated away


async def test_token_rotation_persisted_on_sqlite(
    qbo: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore
) -> None:
    app, url = qbo
    await _rotation(url, http, state, app)


@pytest.mark.postgres
async def test_token_rotation_persisted_on_postgres(
    qbo: tuple[FastAPI, str], http: httpx.AsyncClient, postgres_url: str
) -> None:
    app, url = qbo
    store = StateStore(postgres_url)
    await store.create_all()
    try:
        await _rotation(url, http, store, app)
    finally:
        await store.close()


async def test_unwired_connection_says_how_to_wire_it(http: httpx.AsyncClient, state: StateStore) -> None:
    connector = QuickBooksConnector("qbo", ConnectionConfig(erp="quickbooks"), http, state)
    with pytest.raises(PermanentError) as err:
        await connector.check()
    assert err.value.code == "config.base_url"
    assert "sandbox_connection" in err.value.message


async def test_mercoa_sample_is_booked_with_its_amount(
    qbo: tuple[FastAPI, str], http: httpx.AsyncClient, state: StateStore, mercoa_sample: bytes
) -> None:
    _, url = qbo
    bill = mercoa_sample_bill(mercoa_sample)
    booked = await QuickBooksConnector("c", qbo_config(url), http, state).handle(bill, ctx("k-sample"))
    stored = await SandboxControl(http, url).records("bill")
    assert [s["id"] for s in stored] == [booked.erp_record_id]
    assert stored[0]["total"] == bill.total == Decimal("100")
