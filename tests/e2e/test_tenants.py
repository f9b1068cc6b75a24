"""Tenants never meet: the same source id from two tenants through one shared ERP connection.

Tenants ``acme`` and ``beta`` both send a Mercoa ``invoice.created`` with the same invoice id (and
different amounts) to one QuickBooks connection: two canonical ids, two binder rows, two
idempotency keys, two bills in the sandbox. The audit keeps them apart: each tenant's API key
lists only its own sync record, the record detail shows its own canonical record, and the other
tenant's record is not found.
"""

from __future__ import annotations

import asyncio
import copy
import time
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest

from ledgerflow.app import demo
from ledgerflow.app.stack import run_stack
from ledgerflow.audit.auth import KeyStore
from ledgerflow.audit.store import AuditStore
from ledgerflow.contracts import Outcome
from ledgerflow.core.settings import Routing, Settings
from tests.audit.api_helpers import CHEAP_HASHER

pytestmark = pytest.mark.kafka

TOKENS = {"acme": "acme-token", "beta": "beta-token"}


def _body(sample: bytes, amount: Decimal, number: str) -> bytes:
    payload = orjson.loads(sample)
    invoice = copy.deepcopy(payload["invoice"])
    invoice["id"] = "in_shared_1"
    invoice["invoiceNumber"] = number
    invoice["amount"] = orjson.Fragment(str(amount))
    invoice["lineItems"] = invoice["lineItems"][:1]
    line = invoice["lineItems"][0]
    line["amount"] = orjson.Fragment(str(amount))
    line["unitPrice"] = orjson.Fragment(str(amount))
    line["quantity"] = 1
    payload["invoice"] = invoice
    return orjson.dumps(payload)


async def test_same_source_id_from_two_tenants_books_two_documents_and_audits_apart(
    kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path: Path, mercoa_sample: bytes, unique: str
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=not kafka_is_embedded,
        topic_prefix=f"tenants{unique}",
        topic_partitions=3,
        state_url=f"sqlite+aiosqlite:///{tmp_path}/state.db",
    )
    routing = Routing.model_validate(
        {
            "tenants": {
                tenant: {"sources": {"mercoa": {"tokens": [token]}}, "connections": ["qbo-shared"]}
                for tenant, token in TOKENS.items()
            },
            "connections": {"qbo-shared": {"erp": "quickbooks", "objects": ["bill", "vendor"]}},
        }
    )
    amounts = {"acme": Decimal("100.00"), "beta": Decimal("250.00")}
    async with run_stack(settings, routing, audit_port=0) as stack:
        for tenant, token in TOKENS.items():
            body = _body(mercoa_sample, amounts[tenant], f"{tenant.upper()}-1")
            await demo.post_webhook(stack, body, tenant=tenant, token=token)
        results = {}
        for tenant in TOKENS:
            got = await demo.collect_results(
                stack.bootstrap_servers,
                settings.topics.results,
                f"{tenant}:mercoa:bill:in_shared_1",
                ["qbo-shared"],
                timeout=60,
            )
            results[tenant] = got["qbo-shared"]
        for tenant, result in results.items():
            assert result.outcome is Outcome.SUCCEEDED, result.error
            assert result.tenant == tenant
            assert result.amount == amounts[tenant]
        assert results["acme"].erp_record_id != results["beta"].erp_record_id
        totals = (await demo.sandbox_totals(stack))["quickbooks"]
        assert totals == {results[t].erp_record_id: amounts[t] for t in TOKENS}, "two ERP documents, each its own"

        store = AuditStore(settings.state_url)
        try:
            keys = KeyStore(store.engine, CHEAP_HASHER)
            api_keys = {t: (await keys.create(f"{t}-reader", ["read"], [t])).key for t in TOKENS}
        finally:
            await store.close()
        records = {}
        async with httpx.AsyncClient(base_url=stack.audit_url, timeout=10) as client:
            deadline = time.monotonic() + 30
            for tenant, key in api_keys.items():
                auth = {"authorization": f"Bearer {key}"}
                while True:
                    listed = await client.get("/v1/sync-records", params={"tenant": tenant}, headers=auth)
                    assert listed.status_code == 200, listed.text
                    data = listed.json()["data"]
                    if data or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.3)
                assert [(r["tenant"], r["canonical_id"]) for r in data] == [
                    (tenant, f"{tenant}:mercoa:bill:in_shared_1")
                ]
                # Unfiltered, a tenant's key still lists only that tenant's records.
                everything = (await client.get("/v1/sync-records", headers=auth)).json()["data"]
                assert {r["tenant"] for r in everything} == {tenant}
                records[tenant] = data[0]["id"]
            for tenant, key in api_keys.items():
                auth = {"authorization": f"Bearer {key}"}
                detail = (await client.get(f"/v1/sync-records/{records[tenant]}", headers=auth)).json()
                assert detail["tenant"] == tenant
                assert detail["erp_record_id"] == results[tenant].erp_record_id
                canonical = detail["canonical_record"]
                assert canonical is not None
                assert (canonical["tenant"], canonical["canonical_id"]) == (
                    tenant,
                    f"{tenant}:mercoa:bill:in_shared_1",
                )
                assert Decimal(canonical["total"]) == amounts[tenant]
                other = "beta" if tenant == "acme" else "acme"
                hidden = await client.get(f"/v1/sync-records/{records[other]}", headers=auth)
                assert hidden.status_code == 404
