"""Enrichment clients against local sandboxes: auth, paths, retries on 429/5xx, clear errors, caching."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from ledgerflow.contracts import Bill, Invoice, Payment
from ledgerflow.core.outbound.json_api import EnrichmentError
from ledgerflow.core.settings import Routing
from ledgerflow.core.state import StateStore
from ledgerflow.transformers.enrichment import EnricherSet
from ledgerflow.transformers.ingenious.client import IngeniousClient
from ledgerflow.transformers.monite.client import MoniteClient
from ledgerflow.transformers.registry import ROUTERS
from tests.transformers.source_sandboxes import Script, ingenious_app, mercoa_app, monite_app
from tests.transformers.transformer_helpers import raw_event

FAST: dict[str, Any] = {"wait_initial": 0.01, "wait_max": 0.05}


def _http(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox")


async def test_ingenious_custom_id_cached_and_authenticated() -> None:
    script = Script()
    app = ingenious_app(script, "tok", {("cost_code", "acc_cc_315"): {"id": "acc_cc_315", "custom_id": "03-3150"}})
    async with _http(app) as http:
        client = IngeniousClient(http, "http://sandbox", "tok", **FAST)
        assert await client.custom_id("cost_code", "acc_cc_315") == "03-3150"
        assert await client.custom_id("cost_code", "acc_cc_315") == "03-3150"
        assert script.calls == ["/accounting-cost-codes/acc_cc_315"], "second read must come from the TTL cache"
        bad = IngeniousClient(http, "http://sandbox", "wrong", **FAST)
        with pytest.raises(EnrichmentError, match="401") as info:
            await bad.custom_id("cost_code", "acc_cc_315")
        assert info.value.status == 401


async def test_ingenious_retries_429_with_retry_after_then_5xx() -> None:
    script = Script(fail=[(429, "0.2"), (503, None)])
    app = ingenious_app(script, "tok", {("company", "c1"): {"id": "c1", "custom_id": "V-1"}})
    async with _http(app) as http:
        client = IngeniousClient(http, "http://sandbox", "tok", **FAST)
        started = time.monotonic()
        assert await client.custom_id("company", "c1") == "V-1"
        assert time.monotonic() - started >= 0.2, "Retry-After was not honoured"
        assert len(script.calls) == 3


async def test_ingenious_gives_up_after_bounded_attempts() -> None:
    script = Script(fail=[(500, None)] * 10)
    app = ingenious_app(script, "tok", {})
    async with _http(app) as http:
        client = IngeniousClient(http, "http://sandbox", "tok", attempts=3, **FAST)
        with pytest.raises(EnrichmentError, match=r"answered 500 \(gave up after 3 attempts\)"):
            await client.custom_id("entity", "e1")
        assert len(script.calls) == 3


async def test_ingenious_route_enriches_only_missing_custom_ids(tmp_path: Any) -> None:
    script = Script()
    app = ingenious_app(script, "tok", {("cost_code", "acc_cc_315"): {"custom_id": "03-3150", "name": "Concrete"}})
    routing = Routing.model_validate(
        {
            "tenants": {
                "acme": {"sources": {"ingenious": {"options": {"api_base_url": "http://sandbox", "api_token": "tok"}}}}
            }
        }
    )
    payload = {
        "name": "Vendor Invoice",
        "subject": "X",
        "data": {
            "id": "vi_1",
            "vendor_id": "v1",
            "accounting_company_id": "co1",
            "accounting_company_custom_id": "V-9",
            "date": "2024-05-02",
            "currency": "USD",
            "line_items": [
                {"cost_code_id": "cc1", "accounting_cost_code_id": "acc_cc_315", "gross_value": "10.00"},
                {"cost_code_id": "cc2", "gross_value": "5.00"},
            ],
        },
    }
    event = raw_event("ingenious", "vendor_invoice.sync", payload, object_hint="vendor_invoice")
    async with _http(app) as http:
        enrichers = EnricherSet(routing, http, StateStore("sqlite+aiosqlite://"))
        route = ROUTERS["ingenious"](event)
        assert route.enrich is not None
        enriched = await route.enrich(event, enrichers)
        bill = route.mapper(enriched)[0]
    assert script.calls == ["/accounting-cost-codes/acc_cc_315"]
    lines = bill.model_dump()["line_items"]
    # INGENIOUS's internal id stays a source id; only the custom id (the ERP's) is an ERP identifier.
    assert lines[0]["cost_code"] == {
        "source_id": "cc1",
        "source_accounting_id": "acc_cc_315",
        "accounting_id": None,
        "accounting_custom_id": "03-3150",
        "name": "Concrete",
    }
    assert lines[1]["cost_code"] == {
        "source_id": "cc2",
        "source_accounting_id": None,
        "accounting_id": None,
        "accounting_custom_id": None,
        "name": None,
    }
    other = raw_event("ingenious", "vendor_invoice.sync", payload, tenant="nobody", object_hint="vendor_invoice")
    async with _http(app) as http:
        enrichers = EnricherSet(routing, http, StateStore("sqlite+aiosqlite://"))
        assert await route.enrich(other, enrichers) is other, "a tenant without API options is left as is"


async def test_monite_payable_enrichment_token_headers_and_retry() -> None:
    payable = {
        "id": "p1",
        "status": "waiting_to_be_paid",
        "currency": "USD",
        "issued_at": "2024-05-01",
        "counterpart_id": "cp1",
        "subtotal": 1000,
        "tax_amount": 100,
        "total_amount": 1100,
    }
    objects = {
        "/payables/p1": payable,
        "/payables/p1/line_items": {"data": [{"id": "l1", "quantity": 2, "unit_price": 500, "subtotal": 1000}]},
    }
    script = Script(fail=[(502, None)])
    app = monite_app(script, "cid", "secret", objects)
    routing = Routing.model_validate(
        {
            "tenants": {
                "acme": {
                    "sources": {
                        "monite": {
                            "options": {
                                "api_base_url": "http://sandbox",
                                "client_id": "cid",
                                "client_secret": "secret",
                                "retry_wait_initial": 0.01,
                            }
                        }
                    }
                }
            }
        }
    )
    event = raw_event(
        "monite", "payable.approved", {"id": "e1", "action": "payable.approved", "entity_id": "ent1", "object_id": "p1"}
    )
    async with _http(app) as http:
        enrichers = EnricherSet(routing, http, StateStore("sqlite+aiosqlite://"))
        route = ROUTERS["monite"](event)
        assert route.enrich is not None
        bill = route.mapper(await route.enrich(event, enrichers))[0]
    assert isinstance(bill, Bill)
    assert script.calls == ["/auth/token", "/payables/p1", "/payables/p1", "/payables/p1/line_items"]
    assert str(bill.total) == "11.00"
    assert str(bill.line_items[0].unit_price) == "5.00"


async def test_monite_ledger_accounts_and_tax_rates_are_resolved_from_the_api() -> None:
    payable = {
        "id": "p2",
        "status": "waiting_to_be_paid",
        "currency": "EUR",
        "issued_at": "2024-05-01",
        "counterpart_id": "cp1",
        "subtotal": 1500,
        "tax_amount": 285,
        "total_amount": 1785,
    }
    lines = [
        {"id": "l1", "subtotal": 1000, "ledger_account_id": "la-1", "accounting_tax_rate_id": "tr-1"},
        {"id": "l2", "subtotal": 500, "ledger_account_id": "la-unknown"},
    ]
    objects = {
        "/payables/p2": payable,
        "/payables/p2/line_items": {"data": lines},
        "/ledger_accounts/la-1": {"id": "la-1", "name": "Office Expenses", "nominal_code": "6810"},
        "/accounting_tax_rates/tr-1": {"id": "tr-1", "code": "INPUT19", "name": "VSt 19 %"},
    }
    script = Script()
    app = monite_app(script, "cid", "secret", objects)
    routing = Routing.model_validate(
        {
            "tenants": {
                "acme": {
                    "sources": {
                        "monite": {
                            "options": {"api_base_url": "http://sandbox", "client_id": "cid", "client_secret": "secret"}
                        }
                    }
                }
            }
        }
    )
    event = raw_event(
        "monite", "payable.approved", {"id": "e2", "action": "payable.approved", "entity_id": "ent1", "object_id": "p2"}
    )
    async with _http(app) as http:
        enrichers = EnricherSet(routing, http, StateStore("sqlite+aiosqlite://"))
        route = ROUTERS["monite"](event)
        assert route.enrich is not None
        bill = route.mapper(await route.enrich(event, enrichers))[0]
        again = route.mapper(await route.enrich(event, enrichers))[0]  # accounts cached: not fetched twice
    assert again == bill
    assert isinstance(bill, Bill)
    assert "/ledger_accounts/la-1" in script.calls
    assert "/accounting_tax_rates/tr-1" in script.calls
    assert script.calls.count("/ledger_accounts/la-1") == 1
    first, second = bill.line_items
    assert first.gl_account is not None
    assert (first.gl_account.accounting_custom_id, first.gl_account.name) == ("6810", "Office Expenses")
    assert first.gl_account.source_accounting_id == "la-1"
    assert first.gl_account.accounting_id is None  # Monite's id is never an ERP id
    assert first.tax_rate is not None
    assert first.tax_rate.accounting_custom_id == "INPUT19"
    # an account Monite does not know (404) keeps only its Monite id: the connection's map or default decides
    assert second.gl_account is not None
    assert (second.gl_account.source_accounting_id, second.gl_account.accounting_custom_id) == ("la-unknown", None)


async def test_monite_bad_credentials_fail_clearly() -> None:
    app = monite_app(Script(), "cid", "secret", {})
    async with _http(app) as http:
        client = MoniteClient(http, "http://sandbox", "cid", "wrong", entity_id="ent1", **FAST)
        with pytest.raises(EnrichmentError, match=r"Monite POST /auth/token answered 401"):
            await client.get("/payables/p1")


async def test_mercoa_refetch_replaces_webhook_invoice(mercoa_sample: bytes) -> None:
    import orjson

    body = orjson.loads(mercoa_sample)
    fresh = {**body["invoice"], "invoiceNumber": "INV-123-REFETCHED"}
    script = Script(fail=[(429, "0")])
    app = mercoa_app(script, "key", {fresh["id"]: fresh}, {})

    def routing(refetch: bool) -> Routing:
        opts = {"api_base_url": "http://sandbox", "api_key": "key", "refetch": refetch, "retry_wait_initial": 0.01}
        return Routing.model_validate({"tenants": {"acme": {"sources": {"mercoa": {"options": opts}}}}})

    event = raw_event("mercoa", "invoice.updated", body)
    route = ROUTERS["mercoa"](event)
    assert route.enrich is not None
    async with _http(app) as http:
        off = await route.enrich(event, EnricherSet(routing(False), http, StateStore("sqlite+aiosqlite://")))
        assert off is event
        assert script.calls == []
        on = await route.enrich(event, EnricherSet(routing(True), http, StateStore("sqlite+aiosqlite://")))
    refetched = route.mapper(on)[0]
    assert isinstance(refetched, Bill)
    assert refetched.bill_number == "INV-123-REFETCHED"
    assert script.calls == [f"/invoice/{fresh['id']}"] * 2


async def test_accessplanit_customer_is_fetched_once_and_named_on_invoice_and_refund() -> None:
    from fastapi import FastAPI, Header, HTTPException

    calls: list[str] = []
    app = FastAPI()

    @app.get("/accounts/{account_id}")
    async def account(account_id: str, x_api_key: str = Header("")) -> Any:
        if x_api_key != "k1":
            raise HTTPException(401, "bad key")
        calls.append(account_id)
        return {"value": [{"AccountID": int(account_id), "Name": "Northwind Training Ltd"}]}

    routing = Routing.model_validate(
        {
            "tenants": {
                "acme": {
                    "sources": {
                        "accessplanit": {
                            "options": {"api_base_url": "http://sandbox", "api_key": "k1", "currency": "GBP"}
                        }
                    }
                }
            }
        }
    )
    invoice = {"InvoiceID": 1, "IssuerID": 8812, "Amount": 1000, "Tax": 200, "DateGenerated": "2024-05-14"}
    refund = {"TransactionID": 2, "InvoiceID": 1, "IssuerID": 8812, "Amount": 1200, "TransactionType": "Refund"}
    refund["TransactionDate"] = "2024-05-20"
    async with _http(app) as http:
        enrichers = EnricherSet(routing, http, StateStore("sqlite+aiosqlite://"))
        records = []
        for hint, payload in (("invoices", invoice), ("transactions", refund)):
            event = raw_event("accessplanit", f"{hint}.post", payload, object_hint=hint)
            route = ROUTERS["accessplanit"](event)
            assert route.enrich is not None
            records.append(route.mapper(await route.enrich(event, enrichers))[0])
    assert calls == ["8812"]  # cached for the second record
    inv, pay = records
    assert isinstance(inv, Invoice)
    assert (inv.customer.source_id, inv.customer.name, inv.currency, str(inv.total)) == (
        "8812",
        "Northwind Training Ltd",
        "GBP",
        "12.00",
    )
    assert isinstance(pay, Payment)
    assert (pay.kind, pay.party.name, str(pay.amount)) == ("refund", "Northwind Training Ltd", "12.00")


async def test_ingenious_tenant_default_currency_fills_a_payload_without_one() -> None:
    routing = Routing.model_validate(
        {"tenants": {"acme": {"sources": {"ingenious": {"options": {"currency": "cad"}}}}}}
    )
    payload = {
        "name": "Vendor Invoice",
        "subject": "X",
        "data": {"id": "vi_9", "vendor_name": "Hudson", "date": "2024-05-02", "line_items": [{"gross_value": "5"}]},
    }
    event = raw_event("ingenious", "vendor_invoice.sync", payload, object_hint="vendor_invoice")
    async with httpx.AsyncClient() as http:
        enrichers = EnricherSet(routing, http, StateStore("sqlite+aiosqlite://"))
        route = ROUTERS["ingenious"](event)
        assert route.enrich is not None
        bill = route.mapper(await route.enrich(event, enrichers))[0]
    assert isinstance(bill, Bill)
    assert bill.currency == "CAD"


async def test_tenant_field_names_reach_the_ingenious_mapper_and_its_enrichment() -> None:
    script = Script()
    app = ingenious_app(script, "tok", {("cost_code", "acc_cc_1"): {"custom_id": "03-1000", "name": "Sitework"}})
    options = {
        "api_base_url": "http://sandbox",
        "api_token": "tok",
        "field_names": {"date": "invoice_date", "line_items": "items"},
    }
    routing = Routing.model_validate({"tenants": {"acme": {"sources": {"ingenious": {"options": options}}}}})
    payload = {
        "name": "Vendor Invoice",
        "subject": "X",
        "data": {
            "id": "vi_fn",
            "vendor_name": "Hudson",
            "invoice_date": "2024-05-02",
            "currency": "USD",
            "items": [{"gross_value": "5.00", "cost_code_id": "cc1", "accounting_cost_code_id": "acc_cc_1"}],
        },
    }
    event = raw_event("ingenious", "vendor_invoice.sync", payload, object_hint="vendor_invoice")
    async with _http(app) as http:
        enrichers = EnricherSet(routing, http, StateStore("sqlite+aiosqlite://"))
        route = ROUTERS["ingenious"](event)
        assert route.enrich is not None
        bill = route.mapper(await route.enrich(event, enrichers))[0]
    assert isinstance(bill, Bill)
    assert str(bill.bill_date) == "2024-05-02"
    cost_code = bill.line_items[0].cost_code
    assert cost_code is not None
    assert (cost_code.accounting_custom_id, cost_code.name) == ("03-1000", "Sitework")


def test_source_api_retry_after_is_parsed_like_the_erps() -> None:
    """One Retry-After parser for ERPs and source APIs: NaN and infinity are ignored, a zone-less date is UTC."""
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    from ledgerflow.core.outbound.json_api import MAX_RETRY_AFTER_SECONDS, _retry_after

    def after(value: str) -> float | None:
        return _retry_after(httpx.Response(429, headers={"Retry-After": value}))

    assert after("nan") is None
    assert after("inf") is None
    assert after("2") == 2.0
    assert after("3600") == MAX_RETRY_AFTER_SECONDS
    naive = format_datetime(datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=20))
    waited = after(naive)
    assert waited is not None
    assert 15.0 <= waited <= 20.0
