"""Per-source credential checks and envelopes, in process (recording publisher)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path

import httpx
import orjson
import pytest

from ledgerflow.core.settings import Routing, Settings
from ledgerflow.ingress.app import create_app
from tests.ingress.ingress_signing import (
    NEW,
    OLD,
    SECRETS,
    SIGNED_SOURCES,
    TENANT,
    WRONG,
    RecordingPublisher,
    accepted,
    payload,
    send,
    signed,
    tampered,
    without_credentials,
)

ALL = list(SECRETS)
BODY_SIGNED = ("monite", "accountingsuite", "standardwebhooks")


def _problem(resp: httpx.Response, status: int) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    doc: dict[str, object] = orjson.loads(resp.content)
    assert doc["status"] == status
    return doc


@pytest.mark.parametrize("source", ALL)
@pytest.mark.parametrize("which", [OLD, NEW])
async def test_rotated_secrets_both_accepted(
    client: httpx.AsyncClient, publisher: RecordingPublisher, source: str, which: str
) -> None:
    resp = await send(client, signed(source, TENANT, payload(source, "rec-1"), SECRETS[source][which]))
    assert resp.status_code == accepted(source), resp.text
    assert resp.json()["event_id"]
    [(topic, key, value, headers)] = publisher.records
    assert topic == f"ledgerflow.raw.{source}"
    assert key == b"rec-1"
    assert orjson.loads(value) == payload(source, "rec-1")
    assert headers["ce_tenant"] == TENANT
    assert headers["ce_source"] == f"/tenants/{TENANT}/{source}"


@pytest.mark.parametrize("source", ALL)
async def test_wrong_secret_refused(client: httpx.AsyncClient, publisher: RecordingPublisher, source: str) -> None:
    resp = await send(client, signed(source, TENANT, payload(source, "rec-1"), WRONG[source]))
    doc = _problem(resp, 401)
    for secret in (*SECRETS[source].values(), WRONG[source]):
        assert secret not in resp.text
    assert doc["type"] == "https://ledgerflow.dev/problems/unauthorized"
    assert publisher.records == []


@pytest.mark.parametrize("source", ALL)
async def test_missing_credentials_refused(
    client: httpx.AsyncClient, publisher: RecordingPublisher, source: str
) -> None:
    delivery = without_credentials(signed(source, TENANT, payload(source, "rec-1"), SECRETS[source][NEW]), source)
    _problem(await send(client, delivery), 401)
    assert publisher.records == []


@pytest.mark.parametrize("source", SIGNED_SOURCES)
@pytest.mark.parametrize("offset", [-310, 310])
async def test_stale_or_future_timestamp_refused(
    client: httpx.AsyncClient, publisher: RecordingPublisher, source: str, offset: int
) -> None:
    delivery = signed(source, TENANT, payload(source, "r"), SECRETS[source][NEW], timestamp=int(time.time()) + offset)
    doc = _problem(await send(client, delivery), 401)
    assert "too" in str(doc["detail"])
    assert publisher.records == []


@pytest.mark.parametrize("source", BODY_SIGNED)
async def test_tampered_body_refused(client: httpx.AsyncClient, publisher: RecordingPublisher, source: str) -> None:
    delivery = tampered(signed(source, TENANT, payload(source, "r"), SECRETS[source][NEW]))
    _problem(await send(client, delivery), 401)
    assert publisher.records == []


async def test_unknown_tenant_with_valid_secret_is_404(
    client: httpx.AsyncClient, publisher: RecordingPublisher
) -> None:
    delivery = signed("monite", "nobody", payload("monite", "r"), SECRETS["monite"][NEW])
    _problem(await send(client, delivery), 404)
    assert publisher.records == []


async def test_monite_envelope_and_delivery_id(client: httpx.AsyncClient, publisher: RecordingPublisher) -> None:
    body = {"id": "evt-9", "action": "created", "object_type": "payable", "object": {"id": "pay-9"}}
    resp = await send(client, signed("monite", TENANT, body, SECRETS["monite"][NEW]))
    assert resp.status_code == 200  # Monite: "respond with status code 200"
    assert resp.json() == {"event_id": "evt-9"}
    _, key, _, headers = publisher.records[0]
    assert key == b"pay-9"
    assert headers["ce_type"] == "io.ledgerflow.raw.monite.payable.created"
    assert headers["ce_id"] == "evt-9"


async def test_monite_accepts_any_of_several_v1(client: httpx.AsyncClient, publisher: RecordingPublisher) -> None:
    delivery = signed("monite", TENANT, payload("monite", "r"), SECRETS["monite"][OLD])
    delivery.headers["Monite-Signature"] = delivery.headers["Monite-Signature"].replace("v1=", "v1=00ff,v1=", 1)
    assert (await send(client, delivery)).status_code == 200


async def test_monite_malformed_signature_header(client: httpx.AsyncClient) -> None:
    for value in ("garbage", "t=abc,v1=00", "t=1", "v1=00", "t=" + "9" * 50 + ",v1=00"):
        delivery = signed("monite", TENANT, payload("monite", "r"), SECRETS["monite"][NEW])
        delivery.headers["Monite-Signature"] = value
        _problem(await send(client, delivery), 401)


async def test_standardwebhooks_ids(client: httpx.AsyncClient, publisher: RecordingPublisher) -> None:
    secret = SECRETS["standardwebhooks"][NEW]
    resp = await send(
        client, signed("standardwebhooks", TENANT, payload("standardwebhooks", "in_1"), secret, msg_id="m-7")
    )
    assert resp.json() == {"event_id": "m-7"}
    body = {"type": "ping", "data": {}}
    resp = await send(client, signed("standardwebhooks", TENANT, body, secret, msg_id="m-8"))
    assert resp.status_code == 202
    assert [r[1] for r in publisher.records] == [b"in_1", b"m-8"]
    assert publisher.records[0][3]["ce_type"] == "io.ledgerflow.raw.standardwebhooks.invoice.paid"


async def test_standardwebhooks_verified_by_reference_library(client: httpx.AsyncClient) -> None:
    """A delivery signed by the ``standardwebhooks`` package itself is accepted."""
    from datetime import UTC, datetime

    from standardwebhooks import Webhook

    secret = SECRETS["standardwebhooks"][OLD]
    body = orjson.dumps(payload("standardwebhooks", "x"))
    now = datetime.now(tz=UTC)
    sig = Webhook(secret).sign("msg_lib", now, body.decode())
    headers = {
        "content-type": "application/json",
        "webhook-id": "msg_lib",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": f"v1a,abc {sig}",
    }
    resp = await client.post(f"/webhooks/{TENANT}/standardwebhooks", content=body, headers=headers)
    assert resp.status_code == 202, resp.text


async def test_accountingsuite_version_extension(client: httpx.AsyncClient, publisher: RecordingPublisher) -> None:
    resp = await send(
        client, signed("accountingsuite", TENANT, payload("accountingsuite", "u-1"), SECRETS["accountingsuite"][OLD])
    )
    assert resp.status_code == 202
    _, key, _, headers = publisher.records[0]
    assert key == b"u-1"
    assert headers["ce_webhookversion"] == "2.1"
    assert headers["ce_type"] == "io.ledgerflow.raw.accountingsuite.SalesInvoice.create"


async def test_accountingsuite_hex_sha1_and_secret_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "as.secrets"
    secret_file.write_text("first\n\nsecond\n")
    routing = Routing.model_validate(
        {
            "tenants": {
                "hexco": {
                    "sources": {
                        "accountingsuite": {"tokens_file": str(secret_file), "digest": "sha1", "encoding": "hex"}
                    }
                }
            }
        }
    )
    publisher = RecordingPublisher()
    app = create_app(Settings(), routing, publisher)
    body = orjson.dumps(payload("accountingsuite", "h-1"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://i") as c:
        for secret, status in (("second", 202), ("first", 202), ("third", 401)):
            sig = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest().upper()
            resp = await c.post(
                "/webhooks/hexco/accountingsuite",
                content=body,
                headers={"content-type": "application/json", "WebhookSignatureHash": sig, "WebhookVersion": "2.1"},
            )
            assert resp.status_code == status, resp.text
        # base64 of the right HMAC is not accepted when the tenant says hex
        b64 = base64.b64encode(hmac.new(b"first", body, hashlib.sha1).digest()).decode()
        resp = await c.post(
            "/webhooks/hexco/accountingsuite",
            content=body,
            headers={"content-type": "application/json", "WebhookSignatureHash": b64, "WebhookVersion": "2.1"},
        )
        assert resp.status_code == 401
    assert len(publisher.records) == 2


async def test_ingenious_custom_header_and_object_routes() -> None:
    routing = Routing.model_validate(
        {"tenants": {"t": {"sources": {"ingenious": {"tokens": ["k-1"], "header": "X-Ingenious-Key"}}}}}
    )
    publisher = RecordingPublisher()
    app = create_app(Settings(), routing, publisher)
    body = {"name": "n", "subject": "s", "data": {"id": 42}}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://i") as c:
        for obj in ("budget", "budget_change", "vendor_contract", "vendor_contract_change", "vendor_invoice"):
            resp = await c.post(f"/webhooks/t/ingenious/{obj}", json=body, headers={"X-Ingenious-Key": "k-1"})
            assert resp.status_code == 202, resp.text
        resp = await c.post("/webhooks/t/ingenious/budget", json=body, headers={"Authorization": "k-1"})
        assert resp.status_code == 401
        resp = await c.post("/webhooks/t/ingenious", json=body, headers={"X-Ingenious-Key": "k-1"})
        assert resp.status_code == 404
    assert publisher.records[0][3]["ce_type"] == "io.ledgerflow.raw.ingenious.budget.sync"
    assert {r[1] for r in publisher.records} == {b"42"}


@pytest.mark.parametrize(
    "bad",
    [
        {"subject": "s", "data": {"id": 1}},
        {"name": "n", "subject": "s", "data": [1]},
        {"name": "n", "subject": "s", "data": {}},
        {"name": "n", "subject": "s", "data": {"id": {"nested": 1}}},
        {"name": "n", "subject": "s", "data": {"id": True}},
    ],
)
async def test_ingenious_bad_envelope(client: httpx.AsyncClient, publisher: RecordingPublisher, bad: object) -> None:
    delivery = signed("ingenious", TENANT, orjson.dumps(bad), SECRETS["ingenious"][NEW])
    _problem(await send(client, delivery), 400)
    assert publisher.records == []


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize(
    ("resource", "body", "record"),
    [
        ("invoices", {"InvoiceId": 7}, b"7"),
        ("invoices", {"Id": "INV-8"}, b"INV-8"),
        ("transactions", {"TransactionID": "T-1", "InvoiceID": "I-1"}, b"T-1"),
        ("transactions", {"data": {"id": "T-2"}}, b"T-2"),
    ],
)
async def test_accessplanit_methods_and_ids(
    client: httpx.AsyncClient, publisher: RecordingPublisher, method: str, resource: str, body: object, record: bytes
) -> None:
    resp = await client.request(
        method,
        f"/webhooks/{TENANT}/accessplanit/{resource}",
        content=orjson.dumps(body),
        headers={"content-type": "application/json", "X-API-Key": SECRETS["accessplanit"][OLD]},
    )
    assert resp.status_code == 202, resp.text
    _, key, _, headers = publisher.records[0]
    assert key == record
    assert headers["ce_type"] == f"io.ledgerflow.raw.accessplanit.{resource}.{method.lower()}"
    assert headers["ce_method"] == method
    assert headers["ce_object"] == resource


async def test_accessplanit_without_id_is_400(client: httpx.AsyncClient) -> None:
    delivery = signed("accessplanit", TENANT, {"Amount": 1}, SECRETS["accessplanit"][NEW])
    _problem(await send(client, delivery), 400)


async def test_redelivery_keeps_event_id(client: httpx.AsyncClient) -> None:
    """Sources without a delivery id get an id hashed from tenant, source, object and body."""
    delivery = signed("ingenious", TENANT, payload("ingenious", "d-1"), SECRETS["ingenious"][NEW])
    first, second = await send(client, delivery), await send(client, delivery)
    assert first.json() == second.json()
    other = signed("ingenious", TENANT, payload("ingenious", "d-2"), SECRETS["ingenious"][NEW])
    assert (await send(client, other)).json() != first.json()


@pytest.mark.parametrize("source", SIGNED_SOURCES)
async def test_tolerance_is_a_tenant_setting(source: str) -> None:
    secret = SECRETS[source][NEW]
    routing = Routing.model_validate(
        {
            "tenants": {
                "strict": {"sources": {source: {"tokens": [secret], "tolerance_seconds": 60}}},
                "lenient": {"sources": {source: {"tokens": [secret], "tolerance_seconds": 900}}},
            }
        }
    )
    publisher = RecordingPublisher()
    app = create_app(Settings(), routing, publisher)
    aged = int(time.time()) - 400
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://i") as c:
        strict = await send(c, signed(source, "strict", payload(source, "r"), secret, timestamp=aged))
        lenient = await send(c, signed(source, "lenient", payload(source, "r"), secret, timestamp=aged))
        recent = await send(c, signed(source, "strict", payload(source, "r"), secret, timestamp=int(time.time()) - 30))
    ok = accepted(source)
    assert (strict.status_code, lenient.status_code, recent.status_code) == (401, ok, ok)
    assert len(publisher.records) == 2


def _accountingsuite_app(options: dict[str, object]) -> tuple[httpx.AsyncClient, RecordingPublisher]:
    routing = Routing.model_validate(
        {"tenants": {"as": {"sources": {"accountingsuite": {"tokens": ["tok-1", "tok-2"], "options": options}}}}}
    )
    publisher = RecordingPublisher()
    app = create_app(Settings(), routing, publisher)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://i"), publisher


async def test_accountingsuite_subscriber_without_partner_signing_uses_a_token() -> None:
    """Seed 002: WebhookSignatureHash only for Developer Partner apps; others authenticate with a token."""
    body = orjson.dumps(payload("accountingsuite", "t-1"))
    json_v = {"content-type": "application/json", "WebhookVersion": "2.1"}
    client, publisher = _accountingsuite_app({"auth": "token"})
    async with client as c:
        by_query = await c.post("/webhooks/as/accountingsuite?token=tok-2", content=body, headers=json_v)
        by_header = await c.post(
            "/webhooks/as/accountingsuite", content=body, headers={**json_v, "Authorization": "Bearer tok-1"}
        )
        wrong = await c.post("/webhooks/as/accountingsuite?token=nope", content=body, headers=json_v)
        none = await c.post("/webhooks/as/accountingsuite", content=body, headers=json_v)
    assert (by_query.status_code, by_header.status_code) == (202, 202), by_query.text
    _problem(wrong, 401)
    assert "register the webhook URL with ?token=" in str(_problem(none, 401)["detail"])
    assert len(publisher.records) == 2
    # The signature path is unchanged: without auth: token a token is not enough.
    client, publisher = _accountingsuite_app({})
    async with client as c:
        resp = await c.post("/webhooks/as/accountingsuite?token=tok-1", content=body, headers=json_v)
        assert "only Developer Partner applications sign" in str(_problem(resp, 401)["detail"])
        sig = base64.b64encode(hmac.new(b"tok-1", body, hashlib.sha256).digest()).decode()
        signed_ok = await c.post(
            "/webhooks/as/accountingsuite", content=body, headers={**json_v, "WebhookSignatureHash": sig}
        )
        assert signed_ok.status_code == 202, signed_ok.text


async def test_accountingsuite_webhook_version_is_checked() -> None:
    body = orjson.dumps(payload("accountingsuite", "v-1"))
    client, publisher = _accountingsuite_app({"auth": "token", "webhook_versions": ["2.1", "3.0"]})
    async with client as c:
        url = "/webhooks/as/accountingsuite?token=tok-1"
        ok = await c.post(url, content=body, headers={"content-type": "application/json", "WebhookVersion": "3.0"})
        unknown = await c.post(url, content=body, headers={"content-type": "application/json", "WebhookVersion": "4.2"})
        missing = await c.post(url, content=body, headers={"content-type": "application/json"})
        forged = await c.post(
            "/webhooks/as/accountingsuite?token=bad",
            content=body,
            headers={"content-type": "application/json", "WebhookVersion": "4.2"},
        )
    assert ok.status_code == 202
    assert publisher.records[0][3]["ce_webhookversion"] == "3.0"
    assert str(_problem(unknown, 400)["detail"]).startswith("WebhookVersion 4.2 is not a version ledgerflow maps")
    assert "no WebhookVersion header" in str(_problem(missing, 400)["detail"])
    _problem(forged, 401)  # credentials are checked before the version
    assert len(publisher.records) == 1


def _tallybox_app() -> tuple[httpx.AsyncClient, RecordingPublisher]:
    custom = {
        "tokens": ["tb-secret"],
        "header": "X-Tallybox-Signature",
        "encoding": "hex",
        "options": {
            "auth": "hmac",
            "signature_prefix": "sha256=",
            "event_type_path": "event",
            "id_path": "purchase.number",
            "delivery_id_header": "X-Tallybox-Delivery",
        },
    }
    routing = Routing.model_validate({"tenants": {"t": {"sources": {"custom": custom}}}})
    publisher = RecordingPublisher()
    app = create_app(Settings(), routing, publisher)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://i"), publisher


async def test_custom_source_hmac_signature_and_envelope_paths_from_the_tenant() -> None:
    body = orjson.dumps({"event": "purchase.approved", "purchase": {"number": "TB-1"}})
    sig = "sha256=" + hmac.new(b"tb-secret", body, hashlib.sha256).hexdigest()
    headers = {"content-type": "application/json", "X-Tallybox-Signature": sig, "X-Tallybox-Delivery": "d-77"}
    client, publisher = _tallybox_app()
    async with client as c:
        ok = await c.post("/webhooks/t/custom", content=body, headers=headers)
        unprefixed = await c.post(
            "/webhooks/t/custom", content=body, headers={**headers, "X-Tallybox-Signature": sig[7:]}
        )
        tampered = await c.post("/webhooks/t/custom", content=body + b" ", headers=headers)
        no_type = await c.post(
            "/webhooks/t/custom",
            content=b'{"type": "x"}',
            headers={
                **headers,
                "X-Tallybox-Signature": "sha256=" + hmac.new(b"tb-secret", b'{"type": "x"}', "sha256").hexdigest(),
            },
        )
    assert ok.status_code == 202, ok.text
    assert ok.json() == {"event_id": "d-77"}
    _, key, _, sent = publisher.records[0]
    assert (key, sent["ce_type"]) == (b"TB-1", "io.ledgerflow.raw.custom.purchase.approved")
    assert "does not start with 'sha256='" in str(_problem(unprefixed, 401)["detail"])
    _problem(tampered, 401)
    assert str(_problem(no_type, 400)["detail"]) == "no string event type at event"
    assert len(publisher.records) == 1
