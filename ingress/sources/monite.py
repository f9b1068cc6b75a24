"""Monite webhooks: one URL, ``Monite-Signature: t=<unix>,v1=<hex>`` HMAC-SHA256 signatures.

Follows https://docs.monite.com/references/webhooks/signatures as summarised in
``shared/reference/sources.md`` §3.3: the signature is the hex HMAC-SHA256, keyed with the
subscription secret (``whsec_…``, used as its UTF-8 string, Stripe-style), over
``"<t>.<raw body>"``. Several ``v1=`` values may appear (the sender signs with each live
secret); any match with any configured secret is accepted. ``t`` must lie within
``config.tolerance_seconds`` of the receive time, in both directions (replay protection).

The envelope (§3.1) is ``{id, created_at, action, api_version, entity_id, object_type,
object_id | object: {id}, webhook_subscription_id, …}``: the event type is ``action``
(``payable.created``; older deliveries sent a bare ``created`` next to ``object_type``, which
becomes ``payable.created``), the record id ``object_id`` (or ``object.id``), and the event id
``id`` — stable across Monite's retries, so a redelivery keeps its event id.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, ClassVar

from ledgerflow.core.settings import SourceConfig
from ledgerflow.ingress.sources.base import (
    MAX_ID_LENGTH,
    BadEnvelope,
    Envelope,
    SourceSpec,
    Unauthorized,
    WebhookRequest,
    as_record_id,
    is_unix_seconds,
    require_object,
)

__all__ = ["SIGNATURE_HEADER", "MoniteSource", "parse_signature_header"]

SIGNATURE_HEADER = "Monite-Signature"


def parse_signature_header(value: str) -> tuple[int, list[str]]:
    """Split ``t=<unix seconds>,v1=<hex>[,v1=<hex>…]`` into the timestamp and the v1 signatures.

    Other schemes (``v0=`` …) are ignored. Signatures are returned lower-cased.

    Raises:
        Unauthorized: no ``t``, a ``t`` that is not an integer, or no ``v1``.
    """
    timestamp: int | None = None
    signatures: list[str] = []
    for part in value.split(","):
        key, sep, item = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            item = item.strip()
            if not is_unix_seconds(item):
                raise Unauthorized(f"{SIGNATURE_HEADER} t= is not a unix timestamp")
            timestamp = int(item)
        elif key == "v1":
            signatures.append(item.strip().lower())
    if timestamp is None:
        raise Unauthorized(f"{SIGNATURE_HEADER} has no t= timestamp")
    if not signatures:
        raise Unauthorized(f"{SIGNATURE_HEADER} has no v1= signature")
    return timestamp, signatures


class MoniteSource(SourceSpec):
    """Monite (``/webhooks/{tenant}/monite``)."""

    name: ClassVar[str] = "monite"
    success_status: ClassVar[int] = 200
    """Monite: the listener must "accept POST requests, and respond with status code 200"
    (``shared/reference/sources.md`` §3.4)."""
    credential_headers: ClassVar[tuple[str, ...]] = (SIGNATURE_HEADER,)

    def verify(self, request: WebhookRequest, config: SourceConfig) -> None:
        """Check ``Monite-Signature`` against every configured secret, within the timestamp tolerance.

        Raises:
            Unauthorized: header missing or malformed, timestamp outside ``config.tolerance_seconds``
                (too old or too far in the future), or no signature matching any secret.
        """
        header = request.headers.get(SIGNATURE_HEADER.lower())
        if not header:
            raise Unauthorized(f"no {SIGNATURE_HEADER} header")
        timestamp, signatures = parse_signature_header(header)
        skew = request.received_at - timestamp
        if abs(skew) > config.tolerance_seconds:
            direction = "old" if skew > 0 else "far in the future"
            raise Unauthorized(
                f"{SIGNATURE_HEADER} timestamp is too {direction} (tolerance {config.tolerance_seconds}s)"
            )
        signed = str(timestamp).encode() + b"." + request.body
        presented = [sig.encode() for sig in signatures]
        matched = False
        for secret in config.all_secrets():
            expected = hmac.new(secret.get_secret_value().encode(), signed, hashlib.sha256).hexdigest().encode()
            for sig in presented:
                matched |= hmac.compare_digest(expected, sig)
        if not matched:
            raise Unauthorized(f"no {SIGNATURE_HEADER} v1 signature matches a secret configured for this tenant")

    def describe(self, payload: Any, request: WebhookRequest) -> Envelope:
        """Event type from ``action`` (and ``object_type`` for bare actions), record ``object_id``, event ``id``.

        Raises:
            BadEnvelope: not an object, no string ``action``, no ``object_id``/``object.id``, or a bad ``id``.
        """
        body = require_object(payload, "Monite")
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise BadEnvelope("a Monite webhook needs a string action")
        object_type = body.get("object_type")
        event_type = action if "." in action or not isinstance(object_type, str) else f"{object_type}.{action}"
        if len(event_type) > MAX_ID_LENGTH:
            raise BadEnvelope(f"action is longer than {MAX_ID_LENGTH} characters")
        if body.get("object_id") is not None:
            record_id = as_record_id(body["object_id"], "object_id")
        else:
            obj = body.get("object")
            if not isinstance(obj, dict) or obj.get("id") is None:
                raise BadEnvelope("a Monite webhook needs object_id (or object.id)")
            record_id = as_record_id(obj["id"], "object.id")
        delivery_id = as_record_id(body["id"], "id") if body.get("id") is not None else None
        return Envelope(event_type=event_type, record_id=record_id, delivery_id=delivery_id)
