"""How each source signs a delivery, written from the vendors' descriptions (independently of ingress/sources).

``signed(source, body, secret, ...)`` returns the path suffix, query and headers a genuine sender
would use, so tests can send correctly signed requests and then break exactly one thing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from ledgerflow.ingress.publisher import BrokerUnavailable

OLD = "old"
NEW = "new"

# Standard Webhooks secrets are whsec_ + base64 of random bytes; the rest are opaque strings.
SECRETS: dict[str, dict[str, str]] = {
    "ingenious": {OLD: "Bearer ingenious-old-token", NEW: "Bearer ingenious-new-token"},
    "mercoa": {OLD: "mercoa-old-token", NEW: "mercoa-new-token"},
    "monite": {OLD: "whsec_monite-old-secret", NEW: "whsec_monite-new-secret"},
    "accountingsuite": {OLD: "as-old-secret", NEW: "as-new-secret"},
    "accessplanit": {OLD: "apk-old", NEW: "apk-new"},
    "standardwebhooks": {
        OLD: "whsec_" + base64.b64encode(b"o" * 32).decode(),
        NEW: "whsec_" + base64.b64encode(b"n" * 32).decode(),
    },
    "custom": {OLD: "custom-old-token", NEW: "custom-new-token"},
}
WRONG: dict[str, str] = {
    "ingenious": "Bearer not-the-token",
    "mercoa": "not-the-token",
    "monite": "whsec_wrong",
    "accountingsuite": "wrong-secret",
    "accessplanit": "wrong-key",
    "standardwebhooks": "whsec_" + base64.b64encode(b"w" * 32).decode(),
    "custom": "not-the-token",
}
SIGNED_SOURCES = ("monite", "standardwebhooks")

ACCEPTED = {"mercoa": 200, "monite": 200}
"""Success status per source where its vendor documents one (Mercoa, Monite: 200); others answer 202."""


def accepted(source: str) -> int:
    """The status the ingress answers an accepted webhook of ``source`` with."""
    return ACCEPTED.get(source, 202)


"""Sources whose signature covers a timestamp (stale deliveries are refused)."""
OBJECT_OF = {"ingenious": "vendor_invoice", "accessplanit": "invoices"}
TENANT = "acme"


@dataclass
class RecordingPublisher:
    """A :class:`ledgerflow.ingress.publisher.Publisher` that keeps what it was given (or fails when ``down``)."""

    records: list[tuple[str, bytes, bytes, dict[str, str]]] = field(default_factory=list)
    down: bool = False

    async def publish(self, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        if self.down:
            raise BrokerUnavailable("test broker is down")
        self.records.append((topic, key, value, headers))


def routing_dict(tenant: str) -> dict[str, Any]:
    """Routing with every source for ``tenant``, each accepting its old and new secret."""
    return {
        "tenants": {tenant: {"sources": {name: {"tokens": [pair[OLD], pair[NEW]]} for name, pair in SECRETS.items()}}}
    }


def payload(source: str, record_id: str) -> dict[str, Any]:
    """A minimal, well-formed envelope of ``source`` about ``record_id``."""
    if source == "ingenious":
        return {"name": "Vendor Invoice", "subject": "sync", "data": {"id": record_id, "gross_value": "10.00"}}
    if source == "mercoa":
        return {"eventType": "invoice.created", "invoice": {"id": record_id, "amount": 10.5}}
    if source == "monite":
        return {
            "id": f"evt-{record_id}",
            "action": "payable.created",
            "object_type": "payable",
            "object_id": record_id,
            "entity_id": "ent-1",
        }
    if source == "accountingsuite":
        return {"resource": "SalesInvoice", "action": "create", "api_code": record_id, "DocumentTotal": 12.5}
    if source == "accessplanit":
        return {"InvoiceID": record_id, "Amount": 1250}
    if source == "standardwebhooks":
        return {"type": "invoice.paid", "timestamp": "2026-01-01T00:00:00Z", "data": {"id": record_id}}
    if source == "custom":
        return {"event": "expense.approved", "data": {"id": record_id, "total": "10.00"}}
    raise ValueError(source)


@dataclass
class Delivery:
    """One HTTP delivery: where, which headers, which body."""

    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    method: str = "POST"


def signed(
    source: str,
    tenant: str,
    body: bytes | dict[str, Any],
    secret: str,
    *,
    timestamp: int | None = None,
    msg_id: str = "msg_1",
) -> Delivery:
    """A delivery of ``body`` from ``source`` to ``tenant`` carrying credentials made with ``secret``."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    ts = int(time.time()) if timestamp is None else timestamp
    obj = OBJECT_OF.get(source)
    path = f"/webhooks/{tenant}/{source}" + (f"/{obj}" if obj else "")
    headers = {"Content-Type": "application/json"}
    params: dict[str, str] = {}
    if source == "ingenious":
        headers["Authorization"] = secret
    elif source == "mercoa":
        headers["Authorization"] = f"Bearer {secret}"
    elif source == "monite":
        hexmac = hmac.new(secret.encode(), f"{ts}.".encode() + raw, hashlib.sha256).hexdigest()
        headers["Monite-Signature"] = f"t={ts},v1={hexmac}"
    elif source == "accountingsuite":
        mac = hmac.new(secret.encode(), raw, hashlib.sha256).digest()
        headers["WebhookSignatureHash"] = base64.b64encode(mac).decode()
        headers["WebhookVersion"] = "2.1"
    elif source == "accessplanit":
        params["token"] = secret
    elif source == "custom":
        headers["Authorization"] = f"Bearer {secret}"
    elif source == "standardwebhooks":
        key = base64.b64decode(secret.removeprefix("whsec_"))
        mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + raw, hashlib.sha256).digest()
        headers.update(
            {
                "webhook-id": msg_id,
                "webhook-timestamp": str(ts),
                "webhook-signature": "v1," + base64.b64encode(mac).decode(),
            }
        )
    else:
        raise ValueError(source)
    return Delivery(path=path, body=raw, headers=headers, params=params)


CREDENTIAL_HEADERS = {
    "ingenious": ("authorization",),
    "mercoa": ("authorization",),
    "monite": ("monite-signature",),
    "accountingsuite": ("webhooksignaturehash",),
    "accessplanit": (),
    "standardwebhooks": ("webhook-signature",),
    "custom": ("authorization",),
}


def without_credentials(delivery: Delivery, source: str) -> Delivery:
    """``delivery`` with its credential header (or ``?token=``) removed."""
    drop = CREDENTIAL_HEADERS[source]
    headers = {k: v for k, v in delivery.headers.items() if k.lower() not in drop}
    return Delivery(delivery.path, delivery.body, headers, {}, delivery.method)


def tampered(delivery: Delivery) -> Delivery:
    """``delivery`` with one byte of the body changed after signing (still valid JSON)."""
    idx = delivery.body.rfind(b"}")
    changed = delivery.body[:idx] + b', "x": 1' + delivery.body[idx:]
    return Delivery(delivery.path, changed, dict(delivery.headers), dict(delivery.params), delivery.method)


async def send(client: httpx.AsyncClient, delivery: Delivery) -> httpx.Response:
    """Send ``delivery`` as is."""
    return await client.request(
        delivery.method, delivery.path, content=delivery.body, headers=delivery.headers, params=delivery.params
    )


async def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes, dict[str, str]]]:
    """Every record now on ``topic`` (key, value, headers), read from the beginning up to the end offsets."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            await consumer.force_metadata_update()
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        out: list[tuple[bytes | None, bytes, dict[str, str]]] = []
        for _ in range(200):  # bounded: each getmany waits at most 200 ms
            positions = [await consumer.position(tp) for tp in partitions]
            if all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True)):
                break
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for rec in records:
                    out.append((rec.key, rec.value, {k: v.decode() for k, v in rec.headers}))
        return out
    finally:
        await consumer.stop()
