"""Mercoa webhooks: one URL, every ``eventType``; authenticated by a per-tenant token.

Mercoa publishes no signature scheme (``shared/reference/sources.md`` §2.3), so the tenant's
token travels in the URL (``?token=…``) or a header (``Authorization: Bearer …`` or
``X-Webhook-Token``) and is compared in constant time against every configured token.
The envelope is ``{"eventType": …, <family object>: {...}}`` (§2.1); the record id is the id
of the invoice, entity, transaction, payment method or counterparty the event is about.
"""

from __future__ import annotations

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
)

__all__ = ["MercoaSource", "token_from"]


def token_from(request: WebhookRequest, header: str | None = None) -> str | None:
    """The token a request presents: configured header, ``Authorization: Bearer``, ``X-Webhook-Token``, ``?token=``."""
    if header and request.headers.get(header.lower()):
        return request.headers[header.lower()]
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-webhook-token") or request.query.get("token")


def _record_id(payload: dict[str, Any]) -> str | None:
    """The id of the object the event is about, or None; raises BadEnvelope for an unusable id."""
    for family in ("invoice", "entity", "transaction", "paymentMethod"):
        obj = payload.get(family)
        if isinstance(obj, dict) and obj.get("id"):
            return as_record_id(obj["id"], f"{family}.id")
    for key in ("counterpartyId", "entityId", "existingInvoiceId", "jobId"):
        if payload.get(key):
            return as_record_id(payload[key], key)
    return None


class MercoaSource(SourceSpec):
    """Mercoa (``/webhooks/{tenant}/mercoa``)."""

    name: ClassVar[str] = "mercoa"
    success_status: ClassVar[int] = 200
    """Mercoa documents, on every webhook page: "Response 200 — Return a 200 status to indicate
    that the data was received successfully" (seed 003; ``shared/reference/sources.md`` §2.4)."""
    credential_headers: ClassVar[tuple[str, ...]] = ("Authorization", "X-Webhook-Token")
    credential_query: ClassVar[tuple[str, ...]] = ("token",)

    def verify(self, request: WebhookRequest, config: SourceConfig) -> None:
        """Accept the request when its token matches one of the tenant's Mercoa tokens."""
        token = token_from(request, config.header)
        if not token:
            raise Unauthorized("no Mercoa token: send Authorization: Bearer <token>, X-Webhook-Token or ?token=")
        if not any_secret_matches(token, config.all_secrets()):
            raise Unauthorized("the Mercoa token does not match any token configured for this tenant")

    def describe(self, payload: Any, request: WebhookRequest) -> Envelope:
        """Read ``eventType`` and the id of the object the event is about."""
        if not isinstance(payload, dict):
            raise BadEnvelope("a Mercoa webhook body is a JSON object")
        event_type = payload.get("eventType")
        if not isinstance(event_type, str) or not event_type:
            raise BadEnvelope("a Mercoa webhook needs a string eventType")
        if len(event_type) > MAX_ID_LENGTH:
            raise BadEnvelope(f"eventType is longer than {MAX_ID_LENGTH} characters")
        record_id = _record_id(payload)
        if record_id is None:
            if event_type.startswith("invoice.") and "bulk" not in event_type:
                raise BadEnvelope(f"{event_type} event has no invoice.id")
            record_id = event_type
        return Envelope(event_type=event_type, record_id=record_id)
