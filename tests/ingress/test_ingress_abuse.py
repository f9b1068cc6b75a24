"""The ingress under unauthenticated abuse (issue 13): every case is bounded and counted for what it was.

* random paths do not create metric series (labels only from configured tenants, sources, objects);
* oversized heads and too many header fields get 431 before more than the limit is buffered;
* idle, trickling and kept-alive connections are closed after bounded times;
* a signed timestamp in superscript digits is a 401, never a 500 counted as accepted;
* an unexpected failure is a 500 counted as ``error``, not ``accepted``;
* a body a few hundred bytes under the 1 MiB limit is accepted by a real broker (the producer's
  request limit is above body + key + headers), and a record the broker refuses for its size is
  a 413, not a 503 to retry forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from ledgerflow.core import metrics
from ledgerflow.core.asgi import BoundedHttpToolsProtocol, HttpLimits, serve
from ledgerflow.core.settings import Routing, Settings
from ledgerflow.ingress.app import create_app
from tests.ingress.ingress_signing import NEW, SECRETS, TENANT, RecordingPublisher, payload, send, signed


def _series(metric: Any) -> list[dict[str, str]]:
    return [sample.labels for family in metric.collect() for sample in family.samples]


def _count(tenant: str, source: str, obj: str, outcome: str) -> float:
    for family in metrics.WEBHOOKS_RECEIVED.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels == {
                "tenant": tenant,
                "source": source,
                "object": obj,
                "outcome": outcome,
            }:
                return float(sample.value)
    return 0.0


async def test_random_paths_create_no_metric_series(client: httpx.AsyncClient) -> None:
    before = len(_series(metrics.WEBHOOKS_RECEIVED))
    junk = [uuid.uuid4().hex for _ in range(300)]
    for i, word in enumerate(junk):
        path = [
            f"/webhooks/{word}/mercoa",
            f"/webhooks/{TENANT}/{word}",
            f"/webhooks/{TENANT}/ingenious/{word}",
            f"/webhooks/{TENANT}/mercoa/{word}",
        ][i % 4]
        assert (await client.post(path, content=b"{}", headers={"content-type": "application/json"})).status_code == 404
    labels = _series(metrics.WEBHOOKS_RECEIVED)
    values = {v for series in labels for v in series.values()}
    assert not values & set(junk), "a path segment nobody configured became a label value"
    assert len(labels) - before <= 12  # a handful of (tenant|unknown, source|unknown, object|unknown) series


@pytest.mark.parametrize("source", ["monite", "standardwebhooks"])
async def test_superscript_timestamps_are_401_and_not_counted_as_accepted(
    client: httpx.AsyncClient, publisher: RecordingPublisher, source: str
) -> None:
    delivery = signed(source, TENANT, payload(source, "r-1"), SECRETS[source][NEW])
    now = str(int(time.time()))
    # ¹ ² ³ are single Latin-1 bytes (0xB9, 0xB2, 0xB3): what a header can carry, decoded as Latin-1.
    superscript = now.translate(str.maketrans("123", "¹²³"))
    if source == "monite":
        delivery.headers["Monite-Signature"] = delivery.headers["Monite-Signature"].replace(
            f"t={now}", f"t={superscript}"
        )
    else:
        delivery.headers["webhook-timestamp"] = superscript
    accepted = _count(TENANT, source, "-", "accepted")
    refused = _count(TENANT, source, "-", "unauthorized")
    headers = [(k.encode(), v.encode("latin-1")) for k, v in delivery.headers.items()]
    response = await client.post(delivery.path, content=delivery.body, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert publisher.records == []
    assert _count(TENANT, source, "-", "accepted") == accepted
    assert _count(TENANT, source, "-", "unauthorized") == refused + 1


async def test_an_unexpected_failure_is_a_500_counted_as_error(routing: Routing) -> None:
    class Exploding:
        async def publish(self, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None:
            raise RuntimeError("unexpected")

    app = create_app(Settings(), routing, Exploding())
    accepted = _count(TENANT, "mercoa", "-", "accepted")
    errors = _count(TENANT, "mercoa", "-", "error")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as c:
        response = await send(c, signed("mercoa", TENANT, payload("mercoa", "m-500"), SECRETS["mercoa"][NEW]))
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert _count(TENANT, "mercoa", "-", "accepted") == accepted
    assert _count(TENANT, "mercoa", "-", "error") == errors + 1


LIMITS = HttpLimits(max_header_bytes=8192, max_headers=30, request_timeout=0.6, keep_alive=0.4)


@pytest.fixture
async def server(routing: Routing) -> AsyncIterator[tuple[str, int]]:
    app = create_app(Settings(), routing, RecordingPublisher())
    async with serve(app, limits=LIMITS) as url:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        yield host, int(port)


async def _exchange(address: tuple[str, int], request: bytes, *, wait: float = 3.0) -> bytes:
    """Send ``request`` on a fresh connection and read until the server closes it (or ``wait`` passes)."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(request)
            await writer.drain()
        async with asyncio.timeout(wait):
            return await reader.read()
    finally:
        writer.close()


def _get(extra: bytes = b"") -> bytes:
    return b"GET /healthz HTTP/1.1\r\nhost: ingress\r\n" + extra + b"\r\n"


async def test_a_normal_request_passes_the_limits(server: tuple[str, int]) -> None:
    answer = await _exchange(server, _get(b"connection: close\r\n"))
    assert answer.startswith(b"HTTP/1.1 200")


async def test_an_oversized_head_is_431_before_it_is_buffered(routing: Routing) -> None:
    # What the server reads is counted on the server: the client's count would include what its
    # kernel buffers took (client and server share this event loop; SO_SNDBUF is megabytes on Linux).
    read: list[int] = []

    class Counting(BoundedHttpToolsProtocol):
        limits = LIMITS

        def data_received(self, data: bytes) -> None:
            read.append(len(data))
            super().data_received(data)

    app = create_app(Settings(), routing, RecordingPublisher())
    async with serve(app, limits=LIMITS, http=Counting) as url:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        server = (host, int(port))
        assert (await _exchange(server, _get(b"x-big: " + b"a" * 20_000 + b"\r\n"))).startswith(b"HTTP/1.1 431")
        # 20 MB of header: the server answers and closes long before it has read them all.
        read.clear()
        _, writer = await asyncio.open_connection(*server)
        sent = 0
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: ingress\r\nx-big: ")
        refused = False
        try:
            async with asyncio.timeout(10):
                while sent < 20_000_000:
                    try:
                        writer.write(b"a" * 65_536)
                        await writer.drain()
                    except ConnectionError:
                        refused = True
                        break
                    sent += 65_536
        finally:
            writer.close()
    assert refused
    # The limit (8 KiB) plus at most one socket read (256 KiB) before the 431 closes the connection.
    assert 0 < sum(read) <= LIMITS.max_header_bytes + 262_144, f"the server read {sum(read)} bytes of one header"
    assert len(read) <= 2, f"the server kept reading after the limit: {read}"


async def test_too_many_header_fields_is_431(server: tuple[str, int]) -> None:
    many = b"".join(b"x-h%d: v\r\n" % i for i in range(40))
    assert (await _exchange(server, _get(many))).startswith(b"HTTP/1.1 431")


async def test_idle_and_trickling_connections_are_closed(server: tuple[str, int]) -> None:
    started = time.monotonic()
    assert (await _exchange(server, b"")).startswith(b"HTTP/1.1 408")  # connected, never sent a byte
    assert time.monotonic() - started < 2.5

    reader, writer = await asyncio.open_connection(*server)
    answer = asyncio.create_task(reader.read())
    try:
        started = time.monotonic()
        with contextlib.suppress(ConnectionError):
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: ingress\r\n")
            for n in range(40):  # slowloris: a header line every 0.1 s, never the end of the head
                if answer.done():
                    break
                writer.write(b"x-%d: v\r\n" % n)
                await writer.drain()
                await asyncio.sleep(0.1)
        async with asyncio.timeout(3):
            with contextlib.suppress(ConnectionError):
                assert (await answer).startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started < 2.0
    finally:
        writer.close()


async def test_an_idle_keep_alive_connection_is_closed(server: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*server)
    try:
        writer.write(_get())
        await writer.drain()
        async with asyncio.timeout(3):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            length = int(
                next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(b":")[1]
            )
            await reader.readexactly(length)
            started = time.monotonic()
            assert await reader.read() == b""  # closed by the server
        assert time.monotonic() - started < 2.0
    finally:
        writer.close()


@pytest.mark.kafka
async def test_a_body_just_under_the_limit_is_accepted_by_the_broker(kafka_bootstrap: str, unique: str) -> None:
    from ledgerflow.core.kafka import ensure_topics
    from ledgerflow.ingress.publisher import KafkaPublisher, ingress_producer

    settings = Settings(topic_prefix=unique)
    routing = Routing.model_validate({"tenants": {TENANT: {"sources": {"mercoa": {"tokens": ["t0k"]}}}}})
    await ensure_topics(kafka_bootstrap, [settings.topics.raw("mercoa")], partitions=1)
    producer = ingress_producer(settings, kafka_bootstrap, embedded=True)
    await producer.start()
    try:
        app = create_app(settings, routing, KafkaPublisher(producer, timeout=10))
        body = payload("mercoa", "big")
        body["invoice"]["noteToSelf"] = ""
        size = len(orjson.dumps(body))
        body["invoice"]["noteToSelf"] = "n" * (settings.ingress_max_body_bytes - 300 - size)
        raw = orjson.dumps(body)
        assert settings.ingress_max_body_bytes - 400 < len(raw) <= settings.ingress_max_body_bytes
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as c:
            response = await send(c, signed("mercoa", TENANT, raw, "t0k"))
        assert response.status_code == 200, response.text
    finally:
        await producer.stop()


async def test_a_record_the_broker_refuses_for_its_size_is_413(routing: Routing) -> None:
    from aiokafka.errors import MessageSizeTooLargeError

    from ledgerflow.ingress.publisher import KafkaPublisher

    class Refusing:
        async def send(self, *args: Any, **kwargs: Any) -> Any:
            raise MessageSizeTooLargeError("too large")

    app = create_app(Settings(), routing, KafkaPublisher(Refusing(), timeout=1))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as c:
        response = await send(c, signed("mercoa", TENANT, payload("mercoa", "m-413"), SECRETS["mercoa"][NEW]))
    assert response.status_code == 413
