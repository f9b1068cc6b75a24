"""accessplanit poller: OData paging against a sandbox feed, ingress-identical raw events on the
real broker, and the cursor advancing only after the broker acknowledged."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest

from ledgerflow.contracts import CanonicalRecord, Invoice
from ledgerflow.core.events import EventAttributes, deterministic_id
from ledgerflow.core.kafka import broker_from_settings, ensure_topics
from ledgerflow.core.settings import Routing, Settings
from ledgerflow.core.state import StateStore
from ledgerflow.transformers.base import RawEvent
from ledgerflow.transformers.poller import AccessplanitFeed, AccessplanitPoller, KafkaRawPublisher, pollers_from_routing
from ledgerflow.transformers.registry import ROUTERS
from tests.transformers.source_sandboxes import Script, accessplanit_app


def _invoice(n: int, updated: str) -> dict[str, Any]:
    return {
        "InvoiceID": n,
        "InvoiceRef": f"APL-{n}",
        "IssuerID": 8812,
        "Amount": 1000 * n,
        "Tax": 200 * n,
        "Currency": "GBP",
        "DateGenerated": "2024-05-01T09:00:00",
        "DateUpdated": updated,
        "InvoiceItems": [{"InvoiceItemID": n * 10, "LineDescription": "Course", "InvoiceItemAmount": 1000 * n}],
    }


FEEDS = {
    "invoices": [
        _invoice(1, "2024-05-01T09:00:00"),
        _invoice(2, "2024-05-02T10:00:00"),
        _invoice(3, "2024-05-03T11:00:00"),
    ],
    "transactions": [
        {
            "TransactionID": 71,
            "InvoiceID": 1,
            "Amount": 1200,
            "Currency": "GBP",
            "TransactionType": "Payment",
            "TransactionDate": "2024-05-04T12:00:00",
            "DateUpdated": "2024-05-04T12:00:00",
        }
    ],
}


class Recorder:
    def __init__(self, fail_at: int | None = None) -> None:
        self.sent: list[tuple[str, bytes, bytes, dict[str, str]]] = []
        self.fail_at = fail_at

    async def publish(self, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        if self.fail_at is not None and len(self.sent) == self.fail_at:
            raise ConnectionError("broker did not acknowledge")
        self.sent.append((topic, key, value, headers))


async def _state() -> StateStore:
    state = StateStore("sqlite+aiosqlite://")
    await state.create_all()
    return state


async def test_cursor_advances_only_after_acknowledged_pages() -> None:
    script = Script()
    state = await _state()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=accessplanit_app(script, "k", FEEDS))) as http:
        feed = AccessplanitFeed(http, "http://sandbox", "k", wait_initial=0.01)
        failing = AccessplanitPoller("acme", feed, Recorder(fail_at=2), state, Settings().topics, page_size=2)
        with pytest.raises(ConnectionError):
            await failing.poll_once()
        assert await state.get_cursor("accessplanit:acme:invoices") == "2024-05-02T10:00:00"
        recorder = Recorder()
        poller = AccessplanitPoller("acme", feed, recorder, state, Settings().topics, page_size=2)
        assert await poller.poll_once() == 3  # invoice 2 again (ge cursor), invoice 3, transaction 71
    assert [k for _, k, _, _ in recorder.sent] == [b"2", b"3", b"71"]
    assert await state.get_cursor("accessplanit:acme:invoices") == "2024-05-03T11:00:00"
    assert "%24filter=DateUpdated+ge+2024-05-02T10%3A00%3A00" in script.calls[-3]
    await state.close()


def test_pollers_from_routing_only_for_polling_tenants() -> None:
    routing = Routing.model_validate(
        {
            "tenants": {
                "a": {
                    "sources": {"accessplanit": {"options": {"poll": True, "api_base_url": "http://x", "api_key": "k"}}}
                },
                "b": {"sources": {"accessplanit": {"options": {"api_base_url": "http://x", "api_key": "k"}}}},
                "c": {"sources": {"mercoa": {}}},
            }
        }
    )
    pollers = pollers_from_routing(
        routing, httpx.AsyncClient(), Recorder(), StateStore("sqlite+aiosqlite://"), Settings().topics
    )
    assert [p.tenant for p in pollers] == ["a"]


@pytest.mark.kafka
async def test_poller_publishes_like_the_ingress_and_mappers_accept_it(kafka_bootstrap: str) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    settings = Settings(topic_prefix=f"poller-{uuid.uuid4().hex[:8]}")
    topic = settings.topics.raw("accessplanit")
    await ensure_topics(kafka_bootstrap, [topic], partitions=1)
    broker = broker_from_settings(settings, kafka_bootstrap, embedded=True)
    await broker.connect()
    state = await _state()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=accessplanit_app(Script(), "k", FEEDS))) as http:
            feed = AccessplanitFeed(http, "http://sandbox", "k")
            poller = AccessplanitPoller("acme", feed, KafkaRawPublisher(broker), state, settings.topics)
            assert await poller.poll_once() == 4
    finally:
        await broker.stop()
        await state.close()

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        records = []
        for _ in range(50):
            if await consumer.position(tp) >= end:
                break
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    assert [r.key for r in records] == [b"1", b"2", b"3", b"71"]
    first = records[0]
    headers = {k: v.decode() for k, v in first.headers}
    assert headers["ce_id"] == deterministic_id("acme", "accessplanit", "invoices", first.value)
    assert headers["ce_sourceevent"] == "invoices.post"
    assert headers["ce_object"] == "invoices"
    assert headers["ce_method"] == "POST"
    assert headers["ce_source"] == "/tenants/acme/accessplanit"
    assert orjson.loads(first.value) == FEEDS["invoices"][0]
    mapped: list[CanonicalRecord] = []
    for rec in records:
        attrs = EventAttributes.from_headers({k: v for k, v in rec.headers})
        event = RawEvent(
            tenant=attrs.tenant,
            source="accessplanit",
            event_type=attrs.extensions["sourceevent"],
            payload=orjson.loads(rec.value),
            body=rec.value,
            attributes=attrs,
            object_hint=attrs.extensions["object"],
            method=attrs.extensions["method"],
        )
        mapped += ROUTERS["accessplanit"](event).mapper(event)
    assert [r.canonical_id for r in mapped] == [
        "accessplanit:invoice:1",
        "accessplanit:invoice:2",
        "accessplanit:invoice:3",
        "accessplanit:payment:71",
    ]
    assert isinstance(mapped[2], Invoice)
    assert str(mapped[2].total) == "36.00"
