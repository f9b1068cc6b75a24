"""The audit service through the real broker: results consumer, sync-records API, retry re-publish."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ledgerflow.audit.api import TARGET_CONNECTION_HEADER
from ledgerflow.audit.auth import KeyStore
from ledgerflow.audit.service import start_audit
from ledgerflow.audit.store import AuditStore
from ledgerflow.audit.tables import sync_record_id
from ledgerflow.contracts import Bill, Outcome, SyncResult, VendorRef
from ledgerflow.contracts.events import EventAttributes
from ledgerflow.core.kafka import ensure_topics
from ledgerflow.core.settings import Settings
from tests.audit.api_helpers import CHEAP_HASHER
from tests.audit.audit_helpers import make_result

pytestmark = pytest.mark.kafka

CANONICAL_ID = "acme:mercoa:bill:in_1"


def _bill() -> Bill:
    return Bill(
        canonical_id=CANONICAL_ID,
        tenant="acme",
        source="mercoa",
        source_id="in_1",
        source_event="invoice.created",
        vendor=VendorRef(source_id="ent_1", name="Acme Supplies"),
        bill_date="2026-11-01",
        currency="USD",
        line_items=[{"line_number": 1, "amount": "1234.56"}],
        subtotal=Decimal("1234.56"),
        total=Decimal("1234.56"),
        custom_fields={"vendor_bank_account_number": "000123456789"},
    )


@dataclass
class Audit:
    url: str
    settings: Settings
    bootstrap: str
    producer: AIOKafkaProducer

    async def send(self, topic: str, key: str, value: bytes, headers: dict[str, str]) -> None:
        await self.producer.send_and_wait(
            topic, value, key=key.encode(), headers=[(k, v.encode()) for k, v in headers.items()]
        )

    async def send_result(self, result: SyncResult, ce_id: str) -> None:
        attrs = EventAttributes(
            id=ce_id, source="/tenants/acme/mercoa", type="io.ledgerflow.sync_result.v1", tenant="acme"
        )
        await self.send(
            self.settings.topics.results, result.canonical_id, result.model_dump_json().encode(), attrs.to_headers()
        )


@pytest.fixture
async def audit(kafka_bootstrap: str, kafka_is_embedded: bool, unique: str, tmp_path: object) -> AsyncIterator[Audit]:
    settings = Settings(
        topic_prefix=f"audit{unique}",
        state_url=f"sqlite+aiosqlite:///{tmp_path}/audit.db",
        kafka_enable_idempotence=False if kafka_is_embedded else None,
    )
    await ensure_topics(kafka_bootstrap, settings.topics.all(), partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=not kafka_is_embedded)
    await producer.start()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(producer.stop)
        url = await start_audit(
            stack, kafka_bootstrap, settings, embedded=kafka_is_embedded, group_id=f"ledgerflow.audit.{unique}"
        )
        yield Audit(url, settings, kafka_bootstrap, producer)


async def _wait_for(store: AuditStore, table: str, count: int) -> None:
    for _ in range(400):  # 20 s at most
        if await store.count(table) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{table} never reached {count} rows")


async def _read_all(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None, dict[str, str]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the cluster metadata
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        out = []
        async with asyncio.timeout(10):
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    out += [(r.key, r.value, {k: v.decode() for k, v in r.headers}) for r in records]
        return out
    finally:
        await consumer.stop()


async def test_results_are_recorded_listed_masked_and_retried(audit: Audit) -> None:
    topics = audit.settings.topics
    canonical_attrs = EventAttributes(
        id="canon-evt-1",
        source="/tenants/acme/mercoa",
        type="io.ledgerflow.bill.v1",
        tenant="acme",
        subject=CANONICAL_ID,
    )
    await audit.send(
        topics.canonical("bill"), CANONICAL_ID, _bill().model_dump_json().encode(), canonical_attrs.to_headers()
    )
    failed = make_result(
        1,
        connection="xero-main",
        erp="xero",
        outcome=Outcome.FAILED,
        event_id="canon-evt-1",
        error={
            "code": "erp.validation",
            "message": "Bank account 000123456789 is invalid; token sk_live_51HxYz9AbCdEfGhIjKlMnOpQrStUvWx",
            "retriable": False,
            "vendor_code": "ValidationException",
        },
    )
    succeeded = make_result(1, connection="qbo-main", erp="quickbooks", event_id="canon-evt-1")
    await audit.send_result(failed, "res-xero-1")
    await audit.send_result(failed, "res-xero-1")  # redelivered: stored once
    await audit.send_result(succeeded, "res-qbo-1")
    await audit.send(topics.results, "garbage", b"{not json", {"ce_id": "junk-1"})

    store = AuditStore(audit.settings.state_url)
    try:
        await _wait_for(store, "sync_attempts", 2)
        await _wait_for(store, "canonical_records", 1)
        dead = await _read_all(audit.bootstrap, topics.dlq("audit"))
        assert [h["ledgerflow_dlq_reason"] for _, _, h in dead] == ["invalid-result"]
        assert await store.count("sync_attempts") == 2
        # The audit's own dead letter is stored too (every stage's dead letters are), and not looped.
        await _wait_for(store, "dead_letters", 1)
        api_key = (await KeyStore(store.engine, CHEAP_HASHER).create("ops", ["redrive"], ["acme"])).key
    finally:
        await store.close()

    async with httpx.AsyncClient(base_url=audit.url) as anonymous:
        refused = await anonymous.get("/v1/sync-records")
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"

    async with httpx.AsyncClient(base_url=audit.url, headers={"authorization": f"Bearer {api_key}"}) as client:
        letters = (await client.get("/v1/dead-letters", params={"stage": "audit"})).json()["data"]
        # A dead letter without a tenant is visible only to keys of every tenant.
        assert letters == []
        listed = (await client.get("/v1/sync-records", params={"tenant": "acme"})).json()
        assert {r["connection"] for r in listed["data"]} == {"xero-main", "qbo-main"}
        assert listed["next_cursor"] is None
        only_failed = (await client.get("/v1/sync-records", params={"outcome": "failed"})).json()["data"]
        assert [r["connection"] for r in only_failed] == ["xero-main"]
        assert only_failed[0]["amount"] == "1234.56"
        # Bad parameters are RFC 9457 problems with status 400 (FastAPI's 422 was not a problem document).
        assert (await client.get("/v1/sync-records", params={"limit": 501})).status_code == 400
        assert (await client.get("/v1/sync-records", params={"cursor": "zzz"})).status_code == 400

        xero_id = sync_record_id(CANONICAL_ID, "xero-main")
        detail = (await client.get(f"/v1/sync-records/{xero_id}")).json()
        assert detail["attempt_count"] == 1
        message = detail["attempts"][0]["error_message"]
        assert "000123456789" not in message
        assert "****6789" in message
        assert "sk_live_51HxYz9AbCdEfGhIjKlMnOpQrStUvWx" not in message
        assert detail["canonical_record"]["custom_fields"]["vendor_bank_account_number"] == "****6789"
        assert detail["canonical_record"]["total"] == "1234.56"

        assert (await client.get("/v1/sync-records/unknown")).status_code == 404
        assert (await client.post("/v1/sync-records/unknown/retry")).status_code == 404
        qbo_id = sync_record_id(CANONICAL_ID, "qbo-main")
        assert (await client.post(f"/v1/sync-records/{qbo_id}/retry")).status_code == 409

        first = await client.post(f"/v1/sync-records/{xero_id}/retry")
        assert first.status_code == 202, first.text
        again = await client.post(f"/v1/sync-records/{xero_id}/retry")
        assert again.json()["event_id"] == first.json()["event_id"]  # same event until a result arrives
        openapi = (await client.get("/v1/openapi.json")).json()
        assert {"/v1/sync-records", "/v1/sync-records/{record_id}", "/v1/sync-records/{record_id}/retry"} <= set(
            openapi["paths"]
        )
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).json() == {"status": "ready"}

    retried = [m for m in await _read_all(audit.bootstrap, topics.canonical("bill")) if m[2]["ce_id"] != "canon-evt-1"]
    assert len(retried) == 2
    key, value, headers = retried[0]
    assert key == CANONICAL_ID.encode()
    assert Bill.model_validate_json(value or b"") == _bill()
    assert headers[TARGET_CONNECTION_HEADER] == "xero-main"
    assert headers["ce_id"] == first.json()["event_id"]
    assert headers["ce_tenant"] == "acme"
    assert headers["ledgerflow_retry_of"] == "canon-evt-1"
