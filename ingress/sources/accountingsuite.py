"""AccountingSuite webhooks: one URL; ``WebhookSignatureHash`` or a token; ``WebhookVersion`` checked.

Follows seed 002 (https://help.accountingsuite.com/portal/en/kb/articles/webhooks-6-12-2019) as
summarised in ``shared/reference/sources.md`` §4: "AccountingSuite generates a hash of the
response's body with the Webhook Signature Secret Key" and sends it as ``WebhookSignatureHash``;
the digest and the encoding are not documented, so they are settings (``config.digest``, default
sha256; ``config.encoding``, base64 or hex). Every configured secret is tried (rotation).

The header is "available when the Webhook is triggered for a Developer Partner Application" only
(seed 002). Every other subscriber sets ``options: {auth: token}`` on the tenant's source and puts
a token in the webhook URL it registers (``?token=…``) or in a header (``Authorization: Bearer``,
``X-Webhook-Token``, or the configured ``header``); the token is compared in constant time with
every configured secret. With ``auth: signature`` (the default) the signature path is unchanged.

``WebhookVersion`` is "always returned" (seed 002) but its values are not documented: the versions
ledgerflow maps are ``options.webhook_versions`` (default :data:`DEFAULT_VERSIONS`, the version of
the deliveries the AccountingSuite mapper was written and tested against). A missing header or
another version is refused with 400 naming the version, so a payload of a format nobody checked
never reaches the mapper; the accepted version travels on as the CloudEvents extension
``ce_webhookversion``.

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
    any_secret_matches,
    as_record_id,
    require_object,
)
from ledgerflow.ingress.sources.mercoa import token_from

__all__ = ["DEFAULT_VERSIONS", "SIGNATURE_HEADER", "VERSION_HEADER", "AccountingSuiteSource", "body_signature"]

SIGNATURE_HEADER = "WebhookSignatureHash"
VERSION_HEADER = "WebhookVersion"
DEFAULT_VERSIONS = ("2.1",)
"""``WebhookVersion`` values accepted when the tenant's ``options.webhook_versions`` does not say."""


def body_signature(secret: bytes, body: bytes, digest: str, encoding: str) -> bytes:
    """HMAC-``digest`` of ``body`` keyed with ``secret``, as ASCII ``encoding`` (``base64`` or lower-case ``hex``)."""
    mac = hmac.digest(secret, body, digest)
    return base64.b64encode(mac) if encoding == "base64" else mac.hex().encode()


class AccountingSuiteSource(SourceSpec):
    """AccountingSuite (``/webhooks/{tenant}/accountingsuite``)."""

    name: ClassVar[str] = "accountingsuite"
    credential_headers: ClassVar[tuple[str, ...]] = (SIGNATURE_HEADER, "Authorization", "X-Webhook-Token")
    credential_query: ClassVar[tuple[str, ...]] = ("token",)
    extra_headers: ClassVar[tuple[str, ...]] = (VERSION_HEADER,)

    def verify(self, request: WebhookRequest, config: SourceConfig) -> None:
        """Authenticate (signature, or token with ``options.auth: token``), then check ``WebhookVersion``.

        Raises:
            Unauthorized: signature or token missing or matching no configured secret; an unknown
                ``options.auth``.
            BadEnvelope: ``WebhookVersion`` missing or not one of the accepted versions (answered 400).
        """
        auth = config.options.get("auth", "signature")
        if auth == "token":
            token = token_from(request, config.header)
            if not token:
                raise Unauthorized(
                    "no AccountingSuite token: register the webhook URL with ?token=<token>, or send "
                    "Authorization: Bearer <token> or X-Webhook-Token"
                )
            if not any_secret_matches(token, config.all_secrets()):
                raise Unauthorized("the AccountingSuite token does not match any token configured for this tenant")
        elif auth == "signature":
            self._verify_signature(request, config)
        else:
            raise Unauthorized(f"tenant option auth is {auth!r}: use signature or token")
        self._check_version(request, config)

    def _check_version(self, request: WebhookRequest, config: SourceConfig) -> None:
        accepted = [str(v) for v in config.options.get("webhook_versions", DEFAULT_VERSIONS)]
        version = request.headers.get(VERSION_HEADER.lower(), "").strip()
        if not version:
            raise BadEnvelope(f"no {VERSION_HEADER} header (AccountingSuite always sends it)")
        if version not in accepted:
            shown = version if version.isprintable() and len(version) <= 32 else repr(version[:32])
            raise BadEnvelope(
                f"{VERSION_HEADER} {shown} is not a version ledgerflow maps (accepted: {', '.join(accepted)}); "
                "check a delivery of that version and add it to the source's options.webhook_versions"
            )

    def _verify_signature(self, request: WebhookRequest, config: SourceConfig) -> None:
        presented = request.headers.get(SIGNATURE_HEADER.lower(), "").strip()
        if not presented:
            raise Unauthorized(
                f"no {SIGNATURE_HEADER} header (only Developer Partner applications sign; other subscribers "
                "set options.auth: token and send a token)"
            )
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
