"""Sandboxes as strict as the ERPs: bodies the real ERP rejects are rejected, totals are the ERP's.

Each test talks to a sandbox app in process (``httpx.ASGITransport``, no sockets) with the bodies
a wrong connector would send: the real ERP refuses them (reference ``erp_apis.md``, the specs in
``../shared/specs``), so the sandbox must too, or a connector bug would pass every test. The
stored record's total is what the ERP computes (not what the body claims), and the sandbox's
``PATCH /_sandbox/records/{kind}/{id}`` knob alters what it stored, so read-back and
reconciliation can be shown to notice a difference.
"""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ledgerflow.connectors.coupa import sandbox as coupa_sandbox
from ledgerflow.connectors.netsuite import sandbox as ns_sandbox
from ledgerflow.connectors.netsuite.connector import RECORD_PATH
from ledgerflow.connectors.quickbooks import sandbox as qbo_sandbox
from ledgerflow.connectors.sandbox_kit import SandboxControl
from ledgerflow.connectors.sap import sandbox as sap_sandbox
from ledgerflow.connectors.sap.connector import SERVICE_PATH
from ledgerflow.connectors.webhook import sandbox as receiver
from ledgerflow.connectors.xero import sandbox as xero_sandbox
from ledgerflow.core.outbound.client import dumps_json, loads_json

TOKEN = "strictness-token"


def _client(app: FastAPI, **headers: str) -> httpx.AsyncClient:
    """A client of ``app`` in process, holding a live bearer token of its issuer."""
    app.state.sandbox.issuer.access_tokens[TOKEN] = time.monotonic() + 3600
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://sandbox",
        headers={"authorization": f"Bearer {TOKEN}", **headers},
    )


async def _send(client: httpx.AsyncClient, method: str, path: str, body: Any, **kw: Any) -> httpx.Response:
    return await client.request(
        method, path, content=dumps_json(body), headers={"content-type": "application/json"}, **kw
    )


# ------------------------------------------------------------------------------------------------
# NetSuite


@pytest.fixture
async def netsuite(shared_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    spec = shared_dir / "specs" / "netsuite-oas.json"
    if not spec.is_file():
        pytest.skip("netsuite-oas.json missing from ../shared/specs")
    async with _client(ns_sandbox.create_app(spec)) as client:
        yield client


NS_BILL: dict[str, Any] = {
    "externalId": "strict-1",
    "entity": {"id": "1001"},
    "tranDate": "2024-01-15",
    "currency": {"id": "1"},
    "expense": {"items": [{"account": {"id": "600394"}, "amount": Decimal("150.00")}]},
}


def _ns_bill(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(NS_BILL)
    body.update(changes)
    return body


@pytest.mark.parametrize(
    ("body", "code", "path"),
    [
        (_ns_bill(tranDate="01/15/2024"), "INVALID_CONTENT", "tranDate"),
        (_ns_bill(dueDate="2024-02-30"), "INVALID_CONTENT", "dueDate"),
        (_ns_bill(entity={"id": "424242"}), "INVALID_KEY_OR_REF", "entity"),
        (_ns_bill(entity={"externalId": "nobody"}), "INVALID_KEY_OR_REF", "entity"),
        (_ns_bill(entity={"id": "abc"}), "INVALID_KEY_OR_REF", "entity"),
        (_ns_bill(currency={"id": "999"}), "INVALID_KEY_OR_REF", "currency"),
        (
            _ns_bill(expense={"items": [{"account": {"id": "99999"}, "amount": Decimal(1)}]}),
            "INVALID_KEY_OR_REF",
            "expense.items[0].account",
        ),
        (_ns_bill(expense={"items": [{"amount": Decimal(1)}]}), "USER_ERROR", "expense.items[0].account"),
        (_ns_bill(expense={"items": []}), "USER_ERROR", "item"),
        ({k: v for k, v in NS_BILL.items() if k != "entity"}, "USER_ERROR", "entity"),
        (_ns_bill(tranDte="2024-01-15"), "INVALID_CONTENT", ""),
    ],
    ids=[
        "non-iso-date",
        "impossible-date",
        "unknown-vendor",
        "unknown-vendor-eid",
        "non-numeric-id",
        "unknown-currency",
        "unknown-account",
        "line-without-account",
        "no-lines",
        "no-entity",
        "misspelt-field",
    ],
)
async def test_netsuite_rejects_what_netsuite_rejects(
    netsuite: httpx.AsyncClient, body: dict[str, Any], code: str, path: str
) -> None:
    response = await _send(netsuite, "PUT", f"{RECORD_PATH}/vendorBill/eid:strict-1", body)
    assert response.status_code == 400, response.text
    detail = response.json()["o:errorDetails"][0]
    assert detail["o:errorCode"] == code
    assert detail.get("o:errorPath", "") == path


async def test_netsuite_invoice_item_lines_need_a_known_item(netsuite: httpx.AsyncClient) -> None:
    invoice = {
        "entity": {"id": "2001"},
        "tranDate": "2024-01-15",
        "currency": {"id": "1"},
        "item": {"items": [{"item": {"id": "777"}, "amount": Decimal(10)}]},
    }
    response = await _send(netsuite, "PUT", f"{RECORD_PATH}/invoice/eid:inv-1", invoice)
    assert response.json()["o:errorDetails"][0]["o:errorPath"] == "item.items[0].item"
    del invoice["item"]["items"][0]["item"]  # type: ignore[index]
    response = await _send(netsuite, "PUT", f"{RECORD_PATH}/invoice/eid:inv-1", invoice)
    assert response.json()["o:errorDetails"][0]["o:errorCode"] == "USER_ERROR"


async def test_netsuite_stores_its_own_total_and_the_knob_alters_it(netsuite: httpx.AsyncClient) -> None:
    invoice = {
        "entity": {"id": "2001"},
        "tranDate": "2024-01-15",
        "currency": {"id": "5"},  # JPY: no minor unit
        "item": {
            "items": [
                {"item": {"id": "5"}, "quantity": Decimal(3), "rate": Decimal("333.4")},
                {"item": {"id": "90"}, "amount": Decimal("100")},
            ]
        },
    }
    response = await _send(netsuite, "PUT", f"{RECORD_PATH}/invoice/eid:inv-jpy", invoice)
    assert response.status_code == 204, response.text
    record_id = response.headers["location"].rsplit("/", 1)[-1]
    collapsed = (await netsuite.get(f"{RECORD_PATH}/invoice/{record_id}")).json()
    assert set(collapsed["item"]) == {"links"}  # sublists are links unless expanded, as in NetSuite
    read = await netsuite.get(f"{RECORD_PATH}/invoice/{record_id}", params={"expandSubResources": "true"})
    stored = read.json()
    assert stored["item"]["items"][0]["amount"] == 1000  # 3 × 333.4 rounded to the yen
    assert stored["total"] == 1100
    control = SandboxControl(netsuite, "http://sandbox")
    altered = await control.alter("invoice", record_id, [{"op": "replace", "path": "/total", "value": 1099}])
    assert altered["record"]["total"] == 1099
    assert (await netsuite.get(f"{RECORD_PATH}/invoice/{record_id}")).json()["total"] == 1099


# ------------------------------------------------------------------------------------------------
# SAP


@pytest.fixture
async def sap(shared_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    edmx = shared_dir / "specs" / "sap_si.edmx"
    if not edmx.is_file():
        pytest.skip("sap_si.edmx missing from ../shared/specs")
    async with _client(sap_sandbox.create_app(edmx)) as client:
        fetched = await client.get(SERVICE_PATH + "/", headers={"x-csrf-token": "Fetch"})
        client.headers["x-csrf-token"] = fetched.headers["x-csrf-token"]
        yield client


def _sap_invoice(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "CompanyCode": "1010",
        "DocumentDate": "/Date(1705276800000)/",
        "PostingDate": "/Date(1705276800000)/",
        "SupplierInvoiceIDByInvcgParty": "STRICT-1",
        "InvoicingParty": "17300001",
        "DocumentCurrency": "EUR",
        "InvoiceGrossAmount": "119.00",
        "TaxIsCalculatedAutomatically": True,
        "to_SupplierInvoiceItemGLAcct": {
            "results": [
                {
                    "SupplierInvoiceItem": "1",
                    "CompanyCode": "1010",
                    "GLAccount": "61008000",
                    "DocumentCurrency": "EUR",
                    "SupplierInvoiceItemAmount": "100.00",
                    "DebitCreditCode": "S",
                    "TaxCode": "V1",
                }
            ]
        },
    }
    body.update(changes)
    return body


def _sap_item(**changes: Any) -> dict[str, Any]:
    invoice = _sap_invoice()
    item: dict[str, Any] = invoice["to_SupplierInvoiceItemGLAcct"]["results"][0]
    item.update(changes)
    return invoice


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ({k: v for k, v in _sap_invoice().items() if k != "InvoicingParty"}, "/IWBEP/CM_MGW_RT/020", "InvoicingParty"),
        ({k: v for k, v in _sap_invoice().items() if k != "CompanyCode"}, "/IWBEP/CM_MGW_RT/020", "CompanyCode"),
        (_sap_invoice(InvoicingParty="9999999"), "M8/152", "does not exist"),
        (_sap_item(DebitCreditCode="X"), "/IWBEP/CM_MGW_RT/020", "DebitCreditCode"),
        (_sap_item(SupplierInvoiceItemAmount="-100.00"), "/IWBEP/CM_MGW_RT/020", "negative"),
        (_sap_invoice(InvoiceGrossAmount="118.00"), "M8/534", "Balance"),
        (_sap_item(TaxCode="ZZ"), "FF/704", "ZZ"),
        (
            _sap_invoice(
                TaxIsCalculatedAutomatically=False,
                to_SupplierInvoiceTax={"results": [{"TaxCode": "V1", "DocumentCurrency": "EUR", "TaxAmount": "18.99"}]},
            ),
            "M8/534",
            "Balance",
        ),
        (
            {**_sap_item(DocumentCurrency="JPY", SupplierInvoiceItemAmount="100.50"), "DocumentCurrency": "JPY"},
            "/IWBEP/CM_MGW_RT/020",
            "decimals",
        ),
        (_sap_item(TaxCode="DE19"), "/IWBEP/CM_MGW_RT/020", "TaxCode"),
    ],
    ids=[
        "no-invoicing-party",
        "no-company-code",
        "unknown-supplier",
        "bad-debit-credit-code",
        "negative-amount",
        "unbalanced-with-calculated-tax",
        "unknown-tax-code",
        "unbalanced-with-posted-tax",
        "decimals-in-jpy",
        "tax-code-too-long",
    ],
)
async def test_sap_rejects_what_sap_rejects(
    sap: httpx.AsyncClient, body: dict[str, Any], code: str, words: str
) -> None:
    response = await _send(sap, "POST", SERVICE_PATH + "/A_SupplierInvoice", body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert words in error["message"]["value"]


async def test_sap_calculates_tax_like_sap_and_stores_it(sap: httpx.AsyncClient) -> None:
    response = await _send(sap, "POST", SERVICE_PATH + "/A_SupplierInvoice", _sap_invoice())
    assert response.status_code == 201, response.text
    booked = response.json()["d"]
    assert booked["to_SupplierInvoiceTax"]["results"][0]["TaxAmount"] == "19.00"
    credit = _sap_invoice(SupplierInvoiceIDByInvcgParty="STRICT-2", InvoiceGrossAmount="59.50")
    credit["to_SupplierInvoiceItemGLAcct"]["results"].append(
        {**credit["to_SupplierInvoiceItemGLAcct"]["results"][0], "SupplierInvoiceItem": "2", "DebitCreditCode": "H"}
    )
    credit["to_SupplierInvoiceItemGLAcct"]["results"][1]["SupplierInvoiceItemAmount"] = "50.00"
    response = await _send(sap, "POST", SERVICE_PATH + "/A_SupplierInvoice", credit)
    assert response.status_code == 201, response.text  # 100 - 50 net, 9.50 tax at 19 %


# ------------------------------------------------------------------------------------------------
# Coupa


@pytest.fixture
async def coupa() -> AsyncIterator[httpx.AsyncClient]:
    async with _client(coupa_sandbox.create_app(), accept="application/json") as client:
        yield client


def _coupa_invoice(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "invoice-number": "STRICT-1",
        "invoice-date": "2024-01-15",
        "supplier": {"number": "MY-DB-ID-90909"},
        "currency": {"code": "USD"},
        "account-type": {"name": "US Chart of Accounts"},
        "line-level-taxation": False,
        "invoice-lines": [
            {
                "type": "InvoiceAmountLine",
                "line-num": 1,
                "description": "Concrete",
                "price": "150.00",
                "account": {"segment-1": "6000"},
            }
        ],
    }
    body.update(changes)
    return body


def _coupa_line(**changes: Any) -> dict[str, Any]:
    body = _coupa_invoice()
    body["invoice-lines"][0].update(changes)
    return body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({k: v for k, v in _coupa_invoice().items() if k != "account-type"}, "account-type"),
        ({k: v for k, v in _coupa_invoice().items() if k != "line-level-taxation"}, "line-level-taxation"),
        (_coupa_invoice(**{"invoice-date": "2024-01-15T00:00:00Z"}), "invoice-date"),
        (_coupa_invoice(**{"invoice-number": "N" * 41}), "invoice-number"),
        (_coupa_invoice(currency={"code": "XYZ"}), "currency"),
        (_coupa_invoice(**{"account-type": {"name": "Other Chart"}}), "account-type"),
        (_coupa_invoice(**{"tax-amount": 12.5}), "tax-amount"),
        (_coupa_invoice(**{"invoice-lines": []}), "invoice-lines"),
        (_coupa_line(type="InvoiceQuantityLine"), "invoice-lines[0].quantity"),
        (_coupa_line(type="Line"), "invoice-lines[0].type"),
        (_coupa_line(account={"segment-2": "PROJ-1"}), "invoice-lines[0].account"),
        (_coupa_line(price="150.005"), "invoice-lines[0].price"),
        (_coupa_invoice(supplier={"number": "NOBODY"}), "supplier"),
    ],
    ids=[
        "no-chart-of-accounts",
        "no-line-level-taxation",
        "timestamp-date",
        "number-too-long",
        "unknown-currency",
        "unknown-chart",
        "float-amount",
        "no-lines",
        "quantity-line-without-quantity",
        "unknown-line-type",
        "account-without-gl-segment",
        "sub-cent-amount",
        "unknown-supplier",
    ],
)
async def test_coupa_rejects_what_coupa_rejects(coupa: httpx.AsyncClient, body: dict[str, Any], field: str) -> None:
    response = await _send(coupa, "POST", "/api/invoices", body)
    assert response.status_code == 400, response.text
    assert field in response.json()["errors"]


async def test_coupa_computes_line_totals_as_coupa(coupa: httpx.AsyncClient) -> None:
    body = _coupa_line(type="InvoiceQuantityLine", quantity="3", price="33.335", total="100.00")
    body["shipping-amount"] = "10.00"
    response = await _send(coupa, "POST", "/api/invoices", body)
    assert response.status_code == 201, response.text
    invoice = response.json()
    assert invoice["invoice-lines"][0]["total"] == "100.01"  # quantity × price, not the total sent
    assert invoice["gross-total"] == "110.01"


# ------------------------------------------------------------------------------------------------
# QuickBooks


@pytest.fixture
async def quickbooks(shared_dir: Path) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    spec = shared_dir / "specs" / "Finance.xsd"
    if not spec.is_file():
        pytest.skip("Finance.xsd missing from ../shared/specs")
    prefix = f"/v3/company/{qbo_sandbox.DEFAULT_CREDENTIALS.realm_id}"
    async with _client(qbo_sandbox.create_app(spec_path=spec)) as client:
        yield client, prefix


async def _qbo(client: httpx.AsyncClient, path: str, body: Any) -> httpx.Response:
    return await _send(client, "POST", path, body, params={"minorversion": "75"})


async def test_quickbooks_payment_lines_need_no_detail_type_but_a_linked_transaction(
    quickbooks: tuple[httpx.AsyncClient, str],
) -> None:
    client, prefix = quickbooks
    customer = (await _qbo(client, f"{prefix}/customer", {"DisplayName": "Harbour Builders"})).json()["Customer"]
    invoice_body = {
        "CustomerRef": {"value": customer["Id"]},
        "Line": [
            {
                "DetailType": "SalesItemLineDetail",
                "Amount": 100,
                "SalesItemLineDetail": {"ItemRef": {"value": "1"}},
            },
            {"DetailType": "DiscountLineDetail", "Amount": 10, "DiscountLineDetail": {"PercentBased": False}},
        ],
        "TxnTaxDetail": {"TotalTax": Decimal("7.20")},
    }
    created = await _qbo(client, f"{prefix}/invoice", invoice_body)
    assert created.status_code == 200, created.text
    invoice = created.json()["Invoice"]
    assert Decimal(str(invoice["TotalAmt"])) == Decimal("97.20")  # 100 - 10 discount + 7.20 tax
    payment = {
        "CustomerRef": {"value": customer["Id"]},
        "TotalAmt": 50,
        "Line": [{"Amount": 50, "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}],
    }
    accepted = await _qbo(client, f"{prefix}/payment", payment)
    assert accepted.status_code == 200, accepted.text
    payment["Line"] = [{"Amount": 50}]
    refused = await _qbo(client, f"{prefix}/payment", payment)
    assert refused.status_code == 400
    assert "LinkedTxn" in refused.text


async def test_quickbooks_document_lines_still_need_a_detail_type(quickbooks: tuple[httpx.AsyncClient, str]) -> None:
    client, prefix = quickbooks
    bill = {"VendorRef": {"value": "1"}, "Line": [{"Amount": 10}]}
    refused = await _qbo(client, f"{prefix}/bill", bill)
    assert refused.status_code == 400
    assert "DetailType" in refused.text


# ------------------------------------------------------------------------------------------------
# Xero


@pytest.fixture
async def xero() -> AsyncIterator[httpx.AsyncClient]:
    tenant = xero_sandbox.DEFAULT_CREDENTIALS.tenant_id
    async with _client(xero_sandbox.create_app(), **{"xero-tenant-id": tenant}) as client:
        yield client


def _xero_bill(line_amount_types: str, currency: str = "USD", **line: Any) -> dict[str, Any]:
    item = {"Description": "Concrete", "Quantity": 1, "UnitAmount": 119, "AccountCode": "429", "TaxAmount": 19}
    item.update(line)
    return {
        "Invoices": [
            {
                "Type": "ACCPAY",
                "Contact": {"Name": "Concrete Co"},
                "CurrencyCode": currency,
                "LineAmountTypes": line_amount_types,
                "LineItems": [item],
            }
        ]
    }


@pytest.mark.parametrize(
    ("kind", "total", "tax"),
    [("Inclusive", "119", "19"), ("Exclusive", "138", "19"), ("NoTax", "119", "0")],
)
async def test_xero_totals_follow_line_amount_types(xero: httpx.AsyncClient, kind: str, total: str, tax: str) -> None:
    response = await _send(xero, "PUT", "/api.xro/2.0/Invoices", _xero_bill(kind))
    assert response.status_code == 200, response.text
    stored = loads_json(response.content)["Invoices"][0]
    assert (Decimal(str(stored["Total"])), Decimal(str(stored["TotalTax"]))) == (Decimal(total), Decimal(tax))


async def test_xero_rounds_line_amounts_to_the_currency(xero: httpx.AsyncClient) -> None:
    body = _xero_bill("NoTax", "JPY", Quantity=3, UnitAmount=Decimal("333.4"), TaxAmount=0, LineAmount=1000)
    response = await _send(xero, "PUT", "/api.xro/2.0/Invoices", body)
    assert response.status_code == 200, response.text
    assert Decimal(str(loads_json(response.content)["Invoices"][0]["Total"])) == Decimal(1000)


# ------------------------------------------------------------------------------------------------
# HTTP receiver and the alter knob of every sandbox


async def test_the_alter_knob_answers_404_and_422_precisely() -> None:
    app = receiver.create_app()
    sandbox = app.state.sandbox
    sandbox.store.put("bill", "rcv-1", {"body": {"data": {"total": "10.00"}}})
    async with _client(app) as client:
        control = SandboxControl(client, "http://sandbox")
        merged = await control.alter("bill", "rcv-1", {"body": {"data": {"total": "9.00"}}})
        assert merged["total"] == Decimal("9.00")
        with pytest.raises(httpx.HTTPStatusError) as missing:
            await control.alter("bill", "rcv-404", {"x": 1})
        assert missing.value.response.status_code == 404
        with pytest.raises(httpx.HTTPStatusError) as bad:
            await control.alter("bill", "rcv-1", [{"op": "replace", "path": "/nope/deeper", "value": 1}])
        assert bad.value.response.status_code == 422
