"""Every source end to end through the real broker over TCP: accepted records land on ``<prefix>.raw.<source>``
with the record id as key and CloudEvents headers; refused requests leave nothing on the topic."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from ledgerflow.core.kafka import ensure_topics
from ledgerflow.core.settings import Routing, Settings
from ledgerflow.ingress.app import create_app
from ledgerflow.ingress.publisher import KafkaPublisher, ingress_producer
from tests.ingress.ingress_signing import (
    NEW,
    OLD,
    SECRETS,
    SIGNED_SOURCES,
    TENANT,
    WRONG,
    payload,
    read_topic,
    routing_dict,
    send,
    signed,
    tampered,
    without_credentials,
)

pytestmark = pytest.mark.kafka

SETTINGS = Settings(topic_prefix=f"ingress-{uuid.uuid4().hex[:8]}", ingress_publish_timeout_seconds=5)
BODY_SIGNED = ("monite", "accountingsuite", "standardwebhooks")


@pytest.fixture(scope="module")
async def kafka_client(kafka_bootstrap: str) -> AsyncIterator[httpx.AsyncClient]:
    await ensure_topics(kafka_bootstrap, [SETTINGS.topics.raw(s) for s in SECRETS], partitions=2)
    producer = ingress_producer(SETTINGS, kafka_bootstrap, embedded=True)
    await producer.start()
    try:
        publisher = KafkaPublisher(producer, SETTINGS.ingress_publish_timeout_seconds)
        app = create_app(SETTINGS, Routing.model_validate(routing_dict(TENANT)), publisher)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as c:
            yield c
    finally:
        await producer.stop()


@pytest.mark.parametrize("source", list(SECRETS))
async def test_source_end_to_end(kafka_client: httpx.AsyncClient, kafka_bootstrap: str, source: str) -> None:
    good_old = signed(source, TENANT, payload(source, "good-old"), SECRETS[source][OLD], msg_id="m-old")
    good_new = signed(source, TENANT, payload(source, "good-new"), SECRETS[source][NEW], msg_id="m-new")
    accepted: dict[bytes, str] = {}
    for key, delivery in ((b"good-old", good_old), (b"good-new", good_new)):
        resp = await send(kafka_client, delivery)
        assert resp.status_code == (200 if source in ("mercoa", "monite") else 202), resp.text
        accepted[key] = resp.json()["event_id"]

    refused = [
        (signed(source, TENANT, payload(source, "bad-wrong"), WRONG[source]), 401),
        (
            without_credentials(signed(source, TENANT, payload(source, "bad-missing"), SECRETS[source][NEW]), source),
            401,
        ),
        (signed(source, TENANT, b'{"not": "closed"', SECRETS[source][NEW]), 400),
    ]
    if source in SIGNED_SOURCES:
        stale = int(time.time()) - 3600
        refused.append(
            (signed(source, TENANT, payload(source, "bad-stale"), SECRETS[source][NEW], timestamp=stale), 401)
        )
    if source in BODY_SIGNED:
        refused.append((tampered(signed(source, TENANT, payload(source, "bad-tampered"), SECRETS[source][NEW])), 401))
    for delivery, status in refused:
        resp = await send(kafka_client, delivery)
        assert resp.status_code == status, (delivery, resp.text)

    records = await read_topic(kafka_bootstrap, SETTINGS.topics.raw(source))
    by_key = {key: (value, headers) for key, value, headers in records}
    assert set(by_key) == {b"good-old", b"good-new"}, "refused requests must not reach Kafka"
    for key, event_id in accepted.items():
        value, headers = by_key[key]
        assert headers["ce_id"] == event_id
        assert headers["ce_specversion"] == "1.0"
        assert headers["ce_source"] == f"/tenants/{TENANT}/{source}"
        assert headers["ce_type"].startswith(f"io.ledgerflow.raw.{source}.")
        assert headers["ce_tenant"] == TENANT
        assert headers["ce_subject"] == key.decode()
        assert headers["content-type"] == "application/json"
        assert headers["traceparent"].startswith("00-")
        assert value == (good_old if key == b"good-old" else good_new).body, "the body is published untouched"
    if source == "accountingsuite":
        assert by_key[b"good-new"][1]["ce_webhookversion"] == "2.1"
