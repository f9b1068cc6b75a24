"""Standard Webhooks: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` (spec v1.0.0).

Follows ``standard-webhooks/standard-webhooks:spec/standard-webhooks.md`` (``shared/reference/
sources.md`` §6.1): the signature is ``v1,<base64 HMAC-SHA256>`` over
``"<webhook-id>.<webhook-timestamp>.<raw body>"`` keyed with the base64-decoded ``whsec_…``
secret; ``webhook-signature`` may list several, space-separated. Signing uses the reference
``standardwebhooks`` package (:meth:`standardwebhooks.Webhook.sign`); the timestamp window is
checked here so that ``config.tolerance_seconds`` applies (the package fixes it at 5 minutes),
in both directions, and every configured secret is tried (rotation).

The recommended payload is ``{type, timestamp, data}``: the event type is ``type``, the record id
``data.id`` (else the ``webhook-id``), and the event id the ``webhook-id`` (stable across retries).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from datetime import UTC, datetime
from typing import Any, ClassVar

from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError

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

__all__ = ["ID_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "StandardWebhooksSource"]

log = logging.getLogger(__name__)

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


def _presented_signatures(header: str) -> list[bytes]:
    """The decoded ``v1`` signatures of a ``webhook-signature`` header (others and undecodable ones skipped)."""
    found: list[bytes] = []
    for item in header.split():
        version, sep, value = item.partition(",")
        if version != "v1" or not sep:
            continue
        try:
            found.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


class StandardWebhooksSource(SourceSpec):
    """Any sender following Standard Webhooks (``/webhooks/{tenant}/standardwebhooks``)."""

    name: ClassVar[str] = "standardwebhooks"
    credential_headers: ClassVar[tuple[str, ...]] = (SIGNATURE_HEADER,)
    extra_headers: ClassVar[tuple[str, ...]] = (ID_HEADER, TIMESTAMP_HEADER)

    def verify(self, request: WebhookRequest, config: SourceConfig) -> None:
        """Check ``webhook-signature`` with each configured ``whsec_`` secret, within the tolerance.

        Raises:
            Unauthorized: a header missing, a timestamp that is not an integer or is outside
                ``config.tolerance_seconds``, a body that is not UTF-8, or no matching v1 signature.
        """
        msg_id = request.headers.get(ID_HEADER)
        raw_ts = request.headers.get(TIMESTAMP_HEADER, "").strip()
        header = request.headers.get(SIGNATURE_HEADER)
        if not msg_id or not raw_ts or not header:
            raise Unauthorized(
                f"Standard Webhooks needs the {ID_HEADER}, {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} headers"
            )
        if not is_unix_seconds(raw_ts):
            raise Unauthorized(f"{TIMESTAMP_HEADER} is not a unix timestamp")
        timestamp = int(raw_ts)
        skew = request.received_at - timestamp
        if abs(skew) > config.tolerance_seconds:
            direction = "old" if skew > 0 else "far in the future"
            raise Unauthorized(f"{TIMESTAMP_HEADER} is too {direction} (tolerance {config.tolerance_seconds}s)")
        try:
            text = request.body.decode()
        except UnicodeDecodeError:
            raise Unauthorized("the body is not UTF-8, so it cannot carry a Standard Webhooks signature") from None
        presented = _presented_signatures(header)
        when = datetime.fromtimestamp(timestamp, tz=UTC)
        matched = False
        for secret in config.all_secrets():
            try:
                signer = Webhook(secret.get_secret_value())
            except (binascii.Error, EmptyWebhookSecretError) as exc:
                log.warning("skipping an unusable Standard Webhooks secret: %s", type(exc).__name__)
                continue
            expected = base64.b64decode(signer.sign(msg_id=msg_id, timestamp=when, data=text).split(",", 1)[1])
            for sig in presented:
                matched |= hmac.compare_digest(expected, sig)
        if not matched:
            raise Unauthorized(f"no {SIGNATURE_HEADER} v1 signature matches a secret configured for this tenant")

    def describe(self, payload: Any, request: WebhookRequest) -> Envelope:
        """Event ``type`` for ``data.id`` (else the ``webhook-id``), event id = ``webhook-id``.

        Raises:
            BadEnvelope: not an object, no string ``type``, or an unusable id.
        """
        body = require_object(payload, "Standard Webhooks")
        event_type = body.get("type")
        if not isinstance(event_type, str) or not event_type:
            raise BadEnvelope("a Standard Webhooks payload needs a string type")
        if len(event_type) > MAX_ID_LENGTH:
            raise BadEnvelope(f"type is longer than {MAX_ID_LENGTH} characters")
        delivery_id = as_record_id(request.headers.get(ID_HEADER), ID_HEADER)
        data = body.get("data")
        if isinstance(data, dict) and data.get("id") is not None:
            record_id = as_record_id(data["id"], "data.id")
        else:
            record_id = delivery_id
        return Envelope(event_type=event_type, record_id=record_id, delivery_id=delivery_id)
