"""AccountingSuite webhooks: one URL, ``WebhookSignatureHash`` over the raw body, ``WebhookVersion`` kept.

Follows seed 002 (https://help.accountingsuite.com/portal/en/kb/articles/webhooks-6-12-2019) as
summarised in ``shared/reference/sources.md`` §4: "AccountingSuite generates a hash of the
response's body with the Webhook Signature Secret Key" and sends it as ``WebhookSignatureHash``;
the digest and the encoding are not documented, so they are settings (``config.digest``, default
sha256; ``config.encoding``, base64 or hex). Every configured secret is tried (rotation).
``WebhookVersion`` is always sent; it travels on as the CloudEvents extension ``ce_webhookversion``.

The body is the record itself, flattened, with ``resource`` (``Companies``, ``SalesInvoice``…),
``action`` (``create``/``update``/``delete``) and ``api_code`` (the record's UUID) (§4.1): the event
type is ``<resource>.<action>`` and the record id ``api_code``.
"""

from __future__ import annotations

import base64
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
    require_object,
)

__all__ = ["SIGNATURE_HEADER", "VERSION_HEADER", "AccountingSuiteSource", "body_signature"]

SIGNATURE_HEADER = "WebhookSignatureHash"
VERSION_HEADER = "WebhookVersion"


def body_signature(secret: bytes, body: bytes, digest: str, encoding: str) -> bytes:
    """HMAC-``digest`` of ``body`` keyed with ``secret``, as ASCII ``encoding`` (``base64`` or lower-case ``hex``)."""
    mac = hmac.digest(secret, body, digest)
    return base64.b64encode(mac) if encoding == "base64" else mac.hex().encode()


class AccountingSuiteSource(SourceSpec):
    """AccountingSuite (``/webhooks/{tenant}/accountingsuite``)."""

    name: ClassVar[str] = "accountingsuite"
    credential_headers: ClassVar[tuple[str, ...]] = (SIGNATURE_HEADER,)
    extra_headers: ClassVar[tuple[str, ...]] = (VERSION_HEADER,)

    def verify(self, request: WebhookRequest, config: SourceConfig) -> None:
        """Check ``WebhookSignatureHash`` against the body's HMAC with each configured secret.

        Raises:
            Unauthorized: header missing, or equal to no secret's HMAC of the body.
        """
        presented = request.headers.get(SIGNATURE_HEADER.lower(), "").strip()
        if not presented:
            raise Unauthorized(f"no {SIGNATURE_HEADER} header")
        given = (presented.lower() if config.encoding == "hex" else presented).encode()
        matched = False
        for secret in config.all_secrets():
            expected = body_signature(secret.get_secret_value().encode(), request.body, config.digest, config.encoding)
            matched |= hmac.compare_digest(expected, given)
        if not matched:
            raise Unauthorized(f"{SIGNATURE_HEADER} does not match the body signed with any configured secret")

    def describe(self, payload: Any, request: WebhookRequest) -> Envelope:
        """``<resource>.<action>`` for record ``api_code``.

        Raises:
            BadEnvelope: not an object, or ``resource``/``action`` not strings, or no usable ``api_code``.
        """
        body = require_object(payload, "AccountingSuite")
        resource, action = body.get("resource"), body.get("action")
        if not isinstance(resource, str) or not resource or not isinstance(action, str) or not action:
            raise BadEnvelope("an AccountingSuite webhook needs string resource and action fields")
        event_type = f"{resource}.{action}"
        if len(event_type) > MAX_ID_LENGTH:
            raise BadEnvelope(f"resource.action is longer than {MAX_ID_LENGTH} characters")
        return Envelope(event_type=event_type, record_id=as_record_id(body.get("api_code"), "api_code"))

    def extensions(self, request: WebhookRequest) -> dict[str, str]:
        """``{"webhookversion": <WebhookVersion header>}`` when the header was sent."""
        version = request.headers.get(VERSION_HEADER.lower())
        return {"webhookversion": version[:MAX_ID_LENGTH]} if version else {}
