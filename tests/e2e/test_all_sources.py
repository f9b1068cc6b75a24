"""Every source end to end: signed webhooks of every source (Standard Webhooks included) posted to the running ingress,
through the broker and the transformer, reach their canonical topics as the golden files say,
and are booked by an ERP connection that takes every object type (the generic HTTP target)."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledgerflow.app import demo
from ledgerflow.app.stack import run_stack
from ledgerflow.contracts import OBJECT_MODELS, Outcome, Source
from ledgerflow.core.asgi import serve
from ledgerflow.core.settings import Routing, Settings
from ledgerflow.ingress.sources import SOURCES
from tests.ingress.ingress_signing import NEW, SECRETS, Delivery, send, signed
from tests.transformers.source_sandboxes import Script, accessplanit_app, monite_app
from tests.transformers.test_worker_broker import GOLDEN, _cases, _drain

pytestmark = pytest.mark.kafka

MAPPINGS = Path(__file__).resolve().parents[2] / "docs" / "mappings"
MAPPING_GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "mappings"


TALLYBOX = {
    "tokens": ["tb-secret"],
    "header": "X-Tallybox-Signature",
    "encoding": "hex",
    "options": {
        "auth": "hmac",
        "signature_prefix": "sha256=",
        "event_type_path": "event",
        "id_path": "purchase.number",
    },
    "mapping": str(MAPPINGS / "tallybox.yaml"),
}

POLLED_INVOICE = {
    "InvoiceID": 9001,
    "InvoiceRef": "APL-9001",
    "IssuerID": 8812,
    "Amount": 10000,
    "Tax": 2000,
    "Currency": "GBP",
    "DateGenerated": "2024-06-01T09:00:00",
    "DateUpdated": "2024-06-01T09:00:00",
    "InvoiceItems": [{"InvoiceItemID": 90010, "LineDescription": "Course", "InvoiceItemAmount": 10000}],
}


def _as_tenant(record: dict[str, Any], tenant: str) -> dict[str, Any]:
    """A golden record (mapped for tenant acme) as tenant ``tenant`` gets it: tenant and canonical id."""
    _, rest = record["canonical_id"].split(":", 1)
    return {**record, "tenant": tenant, "canonical_id": f"{tenant}:{rest}"}


def _routing(monite_url: str, feed_url: str) -> dict[str, Any]:
    sources: dict[str, Any] = {name: {"tokens": [pair[NEW]]} for name, pair in SECRETS.items()}
    sources["monite"]["options"] = {"api_base_url": monite_url, "client_id": "cid", "client_secret": "secret"}
    # accessplanit's batched mode too: the stack's poller reads tenant "polled"'s feed.
    polled = {"tokens": ["feed-key"], "options": {"poll": True, "api_base_url": feed_url, "api_key": "feed-key"}}
    fieldops = {"tokens": [SECRETS["standardwebhooks"][NEW]], "mapping": str(MAPPINGS / "fieldops.yaml")}
    return {
        "tenants": {
            "acme": {"sources": sources, "connections": ["inhouse"]},
            # A sender ledgerflow has no code for, mapped by a tenant's mapping file (docs/mappings.md).
            "fieldco": {"sources": {"standardwebhooks": fieldops}, "connections": ["inhouse"]},
            "polled": {"sources": {"accessplanit": polled}, "connections": ["inhouse"]},
            # A plain HMAC-signed sender (not Standard Webhooks), mapped by its tenant's mapping file.
            "tallyco": {"sources": {"custom": TALLYBOX}, "connections": ["inhouse"]},
        },
        "connections": {"inhouse": {"erp": "http", "objects": list(OBJECT_MODELS)}},
    }


def _delivery(source: str, spec: dict[str, Any], n: int) -> Delivery:
    body = json.dumps(spec["payload"]).encode()
    delivery = signed(source, "acme", body, SECRETS[source][NEW], msg_id=f"msg_{n}")
    if spec.get("object_hint"):
        delivery.path = f"/webhooks/acme/{source}/{spec['object_hint']}"
    delivery.method = spec.get("method", "POST")
    return delivery


async def test_webhooks_of_every_source_reach_their_canonical_topics_and_the_erp(
    kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path: Path, shared_dir: Path, unique: str
) -> None:
    spec_path = GOLDEN / "monite" / "payable.input.json"
    monite_spec = json.loads(spec_path.read_text(encoding="utf-8"))
    object_id = monite_spec["payload"]["object_id"]
    objects = {
        f"/payables/{object_id}": monite_spec["enrichment"]["object"],
        f"/payables/{object_id}/line_items": monite_spec["enrichment"]["line_items"],
    }
    monite_expected = json.loads(spec_path.with_name("payable.expected.json").read_text(encoding="utf-8"))
    cases = [*_cases(shared_dir), ("monite", monite_spec, monite_expected)]
    assert {source for source, _, _ in cases} == {s.value for s in Source}

    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=not kafka_is_embedded,
        topic_prefix=f"src{unique}",
        topic_partitions=2,
        state_url=f"sqlite+aiosqlite:///{tmp_path}/state.db",
        poller_interval_seconds=0.5,
    )
    accounts = [{"AccountID": 8812, "Name": "Northwind Training Ltd"}]
    feed = accessplanit_app(
        Script(), "feed-key", {"invoices": [POLLED_INVOICE], "transactions": [], "accounts": accounts}
    )
    async with serve(monite_app(Script(), "cid", "secret", objects)) as monite_url, serve(feed) as feed_url:
        routing = Routing.model_validate(_routing(monite_url, feed_url))
        async with run_stack(settings, routing) as stack, httpx.AsyncClient(base_url=stack.ingress_url) as client:
            assert stack.pollers == {"accessplanit": ["polled"]}
            for n, (source, spec, _) in enumerate(cases):
                resp = await send(client, _delivery(source, spec, n))
                assert resp.status_code == SOURCES[source].success_status, (source, spec["event_type"], resp.text)
            fieldops_body = (MAPPINGS / "fieldops.expense.approved.json").read_bytes()
            resp = await send(
                client, signed("standardwebhooks", "fieldco", fieldops_body, SECRETS["standardwebhooks"][NEW])
            )
            assert resp.status_code == 202, resp.text
            tally_body = (MAPPINGS / "tallybox.purchase.approved.json").read_bytes()
            tally_sig = "sha256=" + hmac.new(b"tb-secret", tally_body, hashlib.sha256).hexdigest()
            resp = await client.post(
                "/webhooks/tallyco/custom",
                content=tally_body,
                headers={"content-type": "application/json", "X-Tallybox-Signature": tally_sig},
            )
            assert resp.status_code == 202, resp.text
            tally_bill = json.loads((MAPPING_GOLDEN / "tallybox.purchase.approved.expected.json").read_text())
            fieldops_bill = json.loads((MAPPING_GOLDEN / "fieldops.expense.approved.expected.json").read_text())
            expected = [want for _, _, wants in cases for want in wants] + [
                _as_tenant(fieldops_bill, "fieldco"),
                _as_tenant(tally_bill, "tallyco"),
            ]
            topics = [settings.topics.canonical(o) for o in OBJECT_MODELS]
            canonical: dict[str, list[dict[str, Any]]] = {}
            for _ in range(30):
                found = await _drain(stack.bootstrap_servers, topics, idle=0.5)
                canonical = {}
                for topic, messages in found.items():
                    for msg in messages:
                        record = json.loads(msg.value)
                        canonical.setdefault(record["canonical_id"], []).append(
                            {"object_type": topic.split(".")[-2], **record}
                        )
                if all(want["canonical_id"] in canonical for want in expected):
                    break
            for want in expected:
                assert want in canonical.get(want["canonical_id"], []), want["canonical_id"]

            ids = sorted({want["canonical_id"] for want in expected} | {"polled:accessplanit:invoice:9001"})
            results = {}
            for canonical_id in ids:
                got = await demo.collect_results(
                    stack.bootstrap_servers, settings.topics.results, canonical_id, ["inhouse"], timeout=30
                )
                results[canonical_id] = got.get("inhouse")
    missing = [cid for cid, r in results.items() if r is None]
    assert not missing, f"no result for {missing}"
    # Booked, or skipped with the precise reason (a void of a payment that was never booked, …).
    unbooked = {
        cid: (r.outcome, r.error.message if r.error else None)
        for cid, r in results.items()
        if r and r.outcome is not Outcome.SUCCEEDED
    }
    assert {cid: why for cid, why in unbooked.items() if why[0] is not Outcome.SKIPPED or not why[1]} == {}
    booked_sources = {cid.split(":")[1] for cid, r in results.items() if r and r.outcome is Outcome.SUCCEEDED}
    assert booked_sources == {s.value for s in Source}
