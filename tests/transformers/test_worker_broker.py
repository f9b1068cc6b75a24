"""The transformer worker through the real broker: raw events of every source in, canonical
events out (equal to the golden files), dead letters for broken ones, unknown events skipped."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ledgerflow.contracts import OBJECT_MODELS, Source
from ledgerflow.contracts.events import EventAttributes, deterministic_id
from ledgerflow.core.asgi import serve
from ledgerflow.core.kafka import broker_from_settings, ensure_topics
from ledgerflow.core.settings import Routing, Settings
from ledgerflow.core.state import StateStore
from ledgerflow.transformers.enrichment import EnricherSet
from ledgerflow.transformers.worker import register
from tests.transformers.source_sandboxes import Script, monite_app

pytestmark = pytest.mark.kafka

GOLDEN = Path(__file__).resolve().parent.parent / "golden"


def _cases(shared_dir: Path | None) -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """(source, input spec, expected records) for every golden case that needs no enrichment and maps to records.

    Golden cases whose expectation is ``{"skipped": …}`` or ``{"error": …}`` are left out: they publish nothing.
    """
    cases = []
    for path in sorted(GOLDEN.glob("*/*.input.json")):
        spec = json.loads(path.read_text(encoding="utf-8"))
        if spec.get("enrichment"):
            continue
        if "payload_from_shared" in spec:
            if shared_dir is None:
                continue
            spec["payload"] = json.loads((shared_dir / spec["payload_from_shared"]).read_text(encoding="utf-8"))
        expected = json.loads(path.with_name(path.name.replace(".input.", ".expected.")).read_text(encoding="utf-8"))
        if not isinstance(expected, list):
            continue
        cases.append((path.parent.name, spec, expected))
    return cases


def _headers(source: str, spec: dict[str, Any], body: bytes, event_id: str) -> list[tuple[str, bytes]]:
    ext = {"sourceevent": spec["event_type"], "method": spec.get("method", "POST")}
    if spec.get("object_hint"):
        ext["object"] = spec["object_hint"]
    tenant = spec.get("tenant", "acme")
    attrs = EventAttributes(
        id=event_id,
        source=f"/tenants/{tenant}/{source}",
        type=f"io.ledgerflow.raw.{source}.{spec['event_type']}",
        tenant=tenant,
        extensions=ext,
    )
    return [(k, v.encode()) for k, v in attrs.to_headers().items()]


@pytest.fixture
async def monite_api() -> AsyncIterator[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """A Monite API sandbox serving the payable of the golden file, and that golden case."""
    path = GOLDEN / "monite" / "payable.input.json"
    spec = json.loads(path.read_text(encoding="utf-8"))
    object_id = spec["payload"]["object_id"]
    objects = {
        f"/payables/{object_id}": spec["enrichment"]["object"],
        f"/payables/{object_id}/line_items": spec["enrichment"]["line_items"],
    }
    expected = json.loads(path.with_name("payable.expected.json").read_text(encoding="utf-8"))
    async with serve(monite_app(Script(), "cid", "secret", objects)) as url:
        yield url, spec, expected


async def _drain(bootstrap: str, topics: list[str], idle: float = 3.0) -> dict[str, list[Any]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    out: dict[str, list[Any]] = {t: [] for t in topics}
    try:
        tps = []
        for topic in topics:
            tps += [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or {0, 1}]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        quiet_since = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - quiet_since < idle:
            batch = await consumer.getmany(timeout_ms=200)
            for tp, messages in batch.items():
                out[tp.topic].extend(messages)
                if messages:
                    quiet_since = asyncio.get_running_loop().time()
    finally:
        await consumer.stop()
    return out


async def test_raw_events_of_every_source_become_canonical_events(
    kafka_bootstrap: str,
    kafka_is_embedded: bool,
    unique: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monite_api: tuple[str, dict[str, Any], list[dict[str, Any]]],
) -> None:
    try:
        shared: Path | None = request.getfixturevalue("shared_dir")
    except pytest.skip.Exception:
        shared = None
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=not kafka_is_embedded,
        topic_prefix=f"tw{unique}",
    )
    await ensure_topics(kafka_bootstrap, settings.topics.all(), partitions=2)
    monite_url, monite_spec, monite_expected = monite_api
    routing = Routing.model_validate(
        {
            "tenants": {
                monite_spec.get("tenant", "acme"): {
                    "sources": {
                        "monite": {
                            "options": {"api_base_url": monite_url, "client_id": "cid", "client_secret": "secret"}
                        }
                    }
                }
            }
        }
    )
    cases = [*_cases(shared), ("monite", monite_spec, monite_expected)]
    assert {source for source, _, _ in cases} == {s.value for s in Source}

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for n, (source, spec, _) in enumerate(cases):
            body = json.dumps(spec["payload"]).encode()
            await producer.send_and_wait(
                settings.topics.raw(source), body, key=f"k{n}".encode(), headers=_headers(source, spec, body, f"e{n}")
            )
        # A record that fails validation (a bill whose totals do not reconcile) and an unknown event.
        broken = {"eventType": "invoice.created", "invoice": {"id": "in_broken", "currency": "USD", "amount": 5,
                  "invoiceDate": "2024-01-01T00:00:00Z", "vendor": {"id": "v", "name": "V"},
                  "lineItems": [{"amount": 4, "glAccountId": "1"}]}}  # fmt: skip
        for event_id, payload, kind in (
            ("bad", broken, "invoice.created"),
            ("ocr", {"eventType": "ocr.job.completed"}, "ocr.job.completed"),
        ):
            body = json.dumps(payload).encode()
            spec = {"event_type": kind, "tenant": "acme"}
            await producer.send_and_wait(
                settings.topics.raw("mercoa"),
                body,
                key=event_id.encode(),
                headers=_headers("mercoa", spec, body, event_id),
            )
    finally:
        await producer.stop()

    broker = broker_from_settings(settings, kafka_bootstrap, embedded=kafka_is_embedded)
    store = StateStore(f"sqlite+aiosqlite:///{tmp_path}/s.db")
    async with httpx.AsyncClient() as http:
        register(broker, settings, EnricherSet(routing, http, store))
        await broker.start()
        try:
            expected_total = sum(len(expected) for _, _, expected in cases)
            topics = [settings.topics.canonical(o) for o in OBJECT_MODELS] + [settings.topics.dlq("transform")]
            for _ in range(40):
                found = await _drain(kafka_bootstrap, topics, idle=0.5)
                canonical = [m for t, ms in found.items() if ".dlq." not in t for m in ms]
                if len(canonical) >= expected_total and found[settings.topics.dlq("transform")]:
                    break
        finally:
            await broker.stop()
            await store.close()

    # Each canonical event's id derives from its raw event's id and its canonical id.
    by_event_id = {}
    for topic, messages in found.items():
        if ".dlq." in topic:
            continue
        for msg in messages:
            record = json.loads(msg.value)
            assert msg.key == record["canonical_id"].encode()
            ce_id = dict(msg.headers)["ce_id"].decode()
            by_event_id[ce_id] = {"object_type": topic.split(".")[-2], **record}
    for n, (source, spec, expected) in enumerate(cases):
        for want in expected:
            got = by_event_id.get(deterministic_id(f"e{n}", want["canonical_id"]))
            assert got == want, f"{source} {spec['event_type']}"
    dead = found[settings.topics.dlq("transform")]
    assert len(dead) == 1
    headers = {k: v.decode() for k, v in dead[0].headers}
    assert headers["ledgerflow_dlq_reason"] == "invalid-record"
    assert "= 4.00 USD, but total is 5" in headers["ledgerflow_dlq_detail"]
    assert headers["ledgerflow_dlq_original_topic"] == settings.topics.raw("mercoa")
    assert dead[0].key == b"bad"
