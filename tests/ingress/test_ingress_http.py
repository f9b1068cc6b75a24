"""HTTP behaviour of the ingress: 404/405/413/415 answers, hostile inputs, 503, health, readiness, metrics, OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from ledgerflow.core.settings import Routing, Settings
from ledgerflow.ingress.app import create_app
from ledgerflow.ingress.readiness import build_readiness
from tests.ingress.ingress_signing import NEW, SECRETS, TENANT, RecordingPublisher, payload, send, signed

TOKEN = SECRETS["mercoa"][NEW]
AUTH = {"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"}


def _is_problem(resp: httpx.Response, status: int) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    doc = orjson.loads(resp.content)
    assert doc["status"] == status
    assert doc["type"].startswith("https://ledgerflow.dev/problems/")
    assert TOKEN not in resp.text


async def test_413_declared_length(client: httpx.AsyncClient, publisher: RecordingPublisher) -> None:
    body = b'{"eventType": "invoice.created", "pad": "' + b"x" * 70_000 + b'"}'
    _is_problem(await client.post(f"/webhooks/{TENANT}/mercoa", content=body, headers=AUTH), 413)
    assert publisher.records == []


async def test_413_chunked_without_length(client: httpx.AsyncClient, publisher: RecordingPublisher) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"eventType": "invoice.created", "pad": "'
        for _ in range(20):
            yield b"x" * 4096
        yield b'"}'

    resp = await client.post(f"/webhooks/{TENANT}/mercoa", content=chunks(), headers=AUTH)
    _is_problem(resp, 413)
    assert publisher.records == []


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded", "application/xml"])
async def test_415(client: httpx.AsyncClient, publisher: RecordingPublisher, ctype: str | None) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if ctype:
        headers["content-type"] = ctype
    body = orjson.dumps(payload("mercoa", "i"))
    _is_problem(await client.post(f"/webhooks/{TENANT}/mercoa", content=body, headers=headers), 415)
    assert publisher.records == []


async def test_json_with_charset_is_fine(client: httpx.AsyncClient) -> None:
    headers = {**AUTH, "content-type": "application/json; charset=utf-8"}
    resp = await client.post(
        f"/webhooks/{TENANT}/mercoa", content=orjson.dumps(payload("mercoa", "i")), headers=headers
    )
    assert resp.status_code == 200  # Mercoa: "Return a 200 status"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", f"/webhooks/{TENANT}/mercoa"),
        ("GET", f"/webhooks/{TENANT}/monite"),
        ("DELETE", f"/webhooks/{TENANT}/ingenious/budget"),
        ("PATCH", f"/webhooks/{TENANT}/standardwebhooks"),
    ],
)
async def test_405(client: httpx.AsyncClient, method: str, path: str) -> None:
    resp = await client.request(method, path, content=b"{}", headers=AUTH)
    _is_problem(resp, 405)
    assert resp.headers["allow"] == "POST"


@pytest.mark.parametrize(
    "path",
    [
        "/webhooks/nobody/mercoa",
        f"/webhooks/{TENANT}/stripe",
        f"/webhooks/{TENANT}/ingenious/invoice",
        f"/webhooks/{TENANT}/ingenious",
        f"/webhooks/{TENANT}/mercoa/invoice",
        f"/webhooks/{TENANT}/accessplanit/customers",
        "/webhooks",
        "/nothing/here",
    ],
)
async def test_404(client: httpx.AsyncClient, publisher: RecordingPublisher, path: str) -> None:
    _is_problem(await client.post(path, content=b"{}", headers=AUTH), 404)
    assert publisher.records == []


async def test_source_not_configured_for_tenant_is_404() -> None:
    routing = Routing.model_validate({"tenants": {"t": {"sources": {"mercoa": {"tokens": ["x"]}}}}})
    app = create_app(Settings(), routing, RecordingPublisher())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://i") as c:
        _is_problem(await c.post("/webhooks/t/monite", content=b"{}", headers=AUTH), 404)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"[]",
        b'"a string"',
        b"12345678901234567890123456789012345678901234567890",
        b"1e999999",
        b'{"eventType": "invoice.created", "invoice": {"id": 1e999999}}',
        b'{"eventType": "invoice.created", "invoice": {"id": 123456789012345678901234567890}}',
        b"[" * 5000 + b"]" * 5000,
        b'{"a":' * 3000 + b"1" + b"}" * 3000,
        b"\xff\xfe\x00{",
        b'{"eventType": "\xed\xa0\x80"}',
        b'{"eventType": 5, "invoice": {"id": "x"}}',
        b'{"eventType": "invoice.created", "invoice": {"id": "' + b"i" * 5000 + b'"}}',
    ],
)
async def test_hostile_bodies_are_400(client: httpx.AsyncClient, publisher: RecordingPublisher, body: bytes) -> None:
    _is_problem(await client.post(f"/webhooks/{TENANT}/mercoa", content=body, headers=AUTH), 400)
    assert publisher.records == []


async def test_hostile_headers_do_not_crash(client: httpx.AsyncClient, publisher: RecordingPublisher) -> None:
    body = orjson.dumps(payload("monite", "r"))
    for value in (b"t=\xff\xfe,v1=\xc3\x28", b"\xe2\x82", b"t=1,v1=" + b"a" * 8000):
        resp = await client.post(
            f"/webhooks/{TENANT}/monite",
            content=body,
            headers=[(b"content-type", b"application/json"), (b"Monite-Signature", value)],
        )
        _is_problem(resp, 401)
    delivery = signed("accountingsuite", TENANT, payload("accountingsuite", "a"), SECRETS["accountingsuite"][NEW])
    headers = [(k.encode(), v.encode()) for k, v in delivery.headers.items() if k != "WebhookVersion"]
    headers.append((b"WebhookVersion", b"v\xff\xfe"))
    resp = await client.post(delivery.path, content=delivery.body, headers=headers)
    _is_problem(resp, 400)
    assert "is not a version ledgerflow maps (accepted: 2.1)" in resp.json()["detail"]
    assert publisher.records == []


async def test_503_with_retry_after_when_broker_unavailable(
    client: httpx.AsyncClient, publisher: RecordingPublisher
) -> None:
    publisher.down = True
    resp = await send(client, signed("mercoa", TENANT, payload("mercoa", "i"), TOKEN))
    _is_problem(resp, 503)
    assert int(resp.headers["retry-after"]) > 0
    publisher.down = False
    assert (await send(client, signed("mercoa", TENANT, payload("mercoa", "i"), TOKEN))).status_code == 200


async def test_health_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200
    await send(client, signed("mercoa", TENANT, payload("mercoa", "m-1"), TOKEN))
    await client.post(f"/webhooks/{TENANT}/mercoa", content=b"{}", headers={"content-type": "application/json"})
    text = (await client.get("/metrics")).text
    assert 'ledgerflow_webhooks_received_total{object="-",outcome="accepted",source="mercoa",tenant="acme"}' in text
    assert 'outcome="unauthorized",source="mercoa",tenant="acme"' in text
    assert "ledgerflow_webhook_request_duration_seconds_bucket" in text
    assert "ledgerflow_webhook_body_bytes_total" in text


async def test_readiness_cached_and_reasons() -> None:
    calls: list[list[str]] = []
    now = [100.0]
    answers: list[list[str] | BaseException] = [["t.raw.monite"], [], TimeoutError(), OSError("refused")]

    async def check(bootstrap: str, names: list[str], timeout: float) -> list[str]:  # noqa: ASYNC109
        calls.append(names)
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    ready = build_readiness(
        "b:9092", ["t.raw.mercoa", "t.raw.monite"], cache_seconds=5, check=check, clock=lambda: now[0]
    )
    assert await ready() == "missing topics: t.raw.monite"
    assert await ready() == "missing topics: t.raw.monite"
    assert len(calls) == 1, "answers are cached"
    now[0] += 6
    assert await ready() is None
    now[0] += 6
    assert "did not answer" in (await ready() or "")
    now[0] += 6
    assert "unreachable" in (await ready() or "")
    assert len(calls) == 4

    app = create_app(Settings(), Routing(), RecordingPublisher(), readiness=ready)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://i") as c:
        resp = await c.get("/readyz")
    assert resp.status_code == 503
    assert "unreachable" in resp.json()["reason"]


@pytest.mark.kafka
async def test_readiness_against_real_broker(kafka_bootstrap: str, unique: str) -> None:
    from ledgerflow.core.kafka import ensure_topics

    topics = [f"ready-{unique}.raw.mercoa"]
    ready = build_readiness(kafka_bootstrap, topics, cache_seconds=0)
    assert await ready() == f"missing topics: {topics[0]}"
    await ensure_topics(kafka_bootstrap, topics, partitions=1)
    assert await ready() is None
    down = build_readiness("127.0.0.1:1", topics, cache_seconds=0, timeout=0.5)
    assert await down() is not None


async def test_openapi_documents_every_source(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    paths = doc["paths"]
    expected = {
        "/webhooks/{tenant}/mercoa": ({"post"}, {"Authorization", "X-Webhook-Token", "token"}),
        "/webhooks/{tenant}/monite": ({"post"}, {"Monite-Signature"}),
        "/webhooks/{tenant}/accountingsuite": (
            {"post"},
            {"WebhookSignatureHash", "WebhookVersion", "Authorization", "X-Webhook-Token", "token"},
        ),
        "/webhooks/{tenant}/standardwebhooks": ({"post"}, {"webhook-id", "webhook-timestamp", "webhook-signature"}),
        "/webhooks/{tenant}/ingenious/{object}": ({"post"}, {"Authorization"}),
        "/webhooks/{tenant}/accessplanit/{object}": ({"post", "put", "patch", "delete"}, {"X-API-Key", "token"}),
    }
    for path, (methods, params) in expected.items():
        assert set(paths[path]) == methods
        success = "200" if path.split("/")[3] in ("mercoa", "monite") else "202"
        for op in paths[path].values():
            names = {p["name"] for p in op["parameters"]}
            assert params <= names
            assert {success, "400", "401", "404", "405", "413", "415", "503"} <= set(op["responses"])
    obj = next(p for p in paths["/webhooks/{tenant}/ingenious/{object}"]["post"]["parameters"] if p["name"] == "object")
    assert set(obj["schema"]["enum"]) == {
        "budget",
        "budget_change",
        "vendor_contract",
        "vendor_contract_change",
        "vendor_invoice",
    }
    assert {"/healthz", "/readyz", "/metrics"} <= set(paths)
