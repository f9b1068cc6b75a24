"""accessplanit poller: OData paging against a sandbox feed, ingress-identical raw events on the
real broker, and the cursor advancing only after the broker acknowledged."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest

from ledgerflow.contracts import CanonicalRecord, Invoice
from ledgerflow.contracts.events import EventAttributes, record_version_id
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
            "IssuerID": 8812,
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
        stored = await state.get_cursor("accessplanit:acme:invoices")
        assert orjson.loads(stored or "") == {"at": "2024-05-02T10:00:00", "seen": ["2"]}
        recorder = Recorder()
        poller = AccessplanitPoller("acme", feed, recorder, state, Settings().topics, page_size=2)
        # invoice 2 is read again (ge cursor) but not published again: its id is in the cursor
        assert await poller.poll_once() == 2
    assert [k for _, k, _, _ in recorder.sent] == [b"3", b"71"]
    stored = await state.get_cursor("accessplanit:acme:invoices")
    assert orjson.loads(stored or "") == {"at": "2024-05-03T11:00:00", "seen": ["3"]}
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
    assert headers["ce_id"] == record_version_id("acme", "accessplanit", "invoices", "1", "2024-05-01T09:00:00")
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
        "acme:accessplanit:invoice:1",
        "acme:accessplanit:invoice:2",
        "acme:accessplanit:invoice:3",
        "acme:accessplanit:payment:71",
    ]
    assert isinstance(mapped[2], Invoice)
    assert str(mapped[2].total) == "36.00"


def _feed_rows() -> dict[str, list[dict[str, Any]]]:
    """Seven invoices over five stamps (two pairs share one: the cursor boundary) and one transaction."""
    stamps = ["2024-06-01T08:00:00", "2024-06-01T08:00:00", "2024-06-02T08:00:00", "2024-06-03T08:00:00"]
    stamps += ["2024-06-03T08:00:00", "2024-06-04T08:00:00", "2024-06-05T08:00:00"]
    invoices = [_invoice(n, stamp) for n, stamp in enumerate(stamps, start=1)]
    return {"invoices": invoices, "transactions": FEEDS["transactions"]}


def test_a_webhook_and_a_poll_of_the_same_version_are_one_event() -> None:
    from ledgerflow.ingress.app import create_app
    from tests.ingress.ingress_signing import RecordingPublisher

    record = _invoice(4, "2024-06-03T08:00:00")
    routing = Routing.model_validate({"tenants": {"acme": {"sources": {"accessplanit": {"tokens": ["k"]}}}}})
    publisher = RecordingPublisher()
    app = create_app(Settings(), routing, publisher)

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://i") as c:
            # a webhook body need not be byte-identical to the feed's record
            body = orjson.dumps(record, option=orjson.OPT_INDENT_2)
            return await c.put("/webhooks/acme/accessplanit/invoices?token=k", content=body, headers=_JSON)

    import asyncio

    assert asyncio.run(post()).status_code == 202
    webhook_id = publisher.records[0][3]["ce_id"]
    poller = AccessplanitPoller("acme", None, Recorder(), None, Settings().topics)  # type: ignore[arg-type]
    _, _, headers = poller.raw_message(poller.resources[0], record)
    assert headers["ce_id"] == webhook_id


_JSON = {"content-type": "application/json"}


async def _raw_records(bootstrap: str, topic: str) -> list[Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        records: list[Any] = []
        for _ in range(100):
            if await consumer.position(tp) >= end:
                break
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


@pytest.mark.kafka
async def test_poller_service_pages_survives_a_restart_mid_feed_and_backfills(
    kafka_bootstrap: str, kafka_is_embedded: bool
) -> None:
    """The service against the sandbox: page size 2, an outage after the first page, a restart, --since."""
    import asyncio

    from ledgerflow.transformers.poller import normalise_since
    from ledgerflow.transformers.poller_main import run_poller

    feeds = _feed_rows()
    settings = Settings(topic_prefix=f"poll-{uuid.uuid4().hex[:8]}", kafka_enable_idempotence=not kafka_is_embedded)
    topic = settings.topics.raw("accessplanit")
    await ensure_topics(kafka_bootstrap, [topic], partitions=1)
    routing = Routing.model_validate(
        {
            "tenants": {
                "acme": {
                    "sources": {
                        "accessplanit": {
                            "tokens": ["k"],
                            "options": {"poll": True, "api_base_url": "http://sandbox", "api_key": "k", "page_size": 2},
                        }
                    }
                }
            }
        }
    )
    state = await _state()
    script = Script(fail_from=1)  # the first page answers, then the API is down
    expected_keys = [str(r["InvoiceID"]).encode() for r in feeds["invoices"]] + [b"71"]

    async def published() -> list[Any]:
        return await _raw_records(kafka_bootstrap, topic)

    async def wait_for(count: int) -> list[Any]:
        for _ in range(200):
            records = await published()
            if len(records) >= count:
                return records
            await asyncio.sleep(0.05)
        return await published()

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=accessplanit_app(script, "k", feeds))) as http:
            run = run_poller(
                settings, routing, kafka_bootstrap, embedded=kafka_is_embedded, interval=0.05, http=http, state=state,
                health_port=0,
            )  # fmt: skip
            async with run as running, httpx.AsyncClient(base_url=str(running.health_url)) as probe:
                assert len(running.pollers) == 1
                first = await wait_for(2)
                for _ in range(100):  # a round failed on the outage (after the feed client's retries)
                    if 'outcome="failed"' in (await probe.get("/metrics")).text:
                        break
                    await asyncio.sleep(0.05)
                assert (await probe.get("/healthz")).status_code == 200
                assert (await probe.get("/readyz")).status_code == 200
                scrape = (await probe.get("/metrics")).text
            assert [r.key for r in first] == expected_keys[:2]
            assert 'ledgerflow_poller_polls_total{outcome="failed",source="accessplanit",tenant="acme"}' in scrape
            assert "ledgerflow_poller_records_total" in scrape

            # Restart: a new service on the same state store once the API is back.
            script.fail_from = None
            async with run_poller(
                settings, routing, kafka_bootstrap, embedded=kafka_is_embedded, interval=0.05, http=http, state=state
            ):
                after = await wait_for(len(expected_keys))
                await asyncio.sleep(0.3)  # further rounds publish nothing new
                after = await published()
            assert [r.key for r in after] == expected_keys  # nothing lost, nothing published twice
            ids = [dict(r.headers)["ce_id"] for r in after]
            assert len(set(ids)) == len(ids)

            # Backfill from a date: the versions since then again, under the same event ids.
            async with run_poller(
                settings, routing, kafka_bootstrap, embedded=kafka_is_embedded, since=normalise_since("2024-06-03"),
                interval=60, http=http, state=state,
            ):  # fmt: skip
                backfilled = (await wait_for(len(expected_keys) + 4))[len(expected_keys) :]
    finally:
        await state.close()
    assert [r.key for r in backfilled] == [b"4", b"5", b"6", b"7"]
    by_key = {r.key: dict(r.headers)["ce_id"] for r in after}
    assert [dict(r.headers)["ce_id"] for r in backfilled] == [by_key[r.key] for r in backfilled]
