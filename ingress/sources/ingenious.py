"""INGENIOUS.BUILD Custom Accounting Integration webhooks: one URL per object type, a static header.

INGENIOUS.BUILD documents no signature: the customer adds "any authorization headers your
endpoint expects, for example ``Authorization: Bearer your-token-here``" to each object type's URL
(``shared/reference/sources.md`` §1.2, seed 000 "Custom Accounting Integration Setup Guide", Step 3).
The ingress compares that header's whole value (``config.header``, default ``Authorization``) in
constant time against every configured secret, so a secret is configured as e.g. ``Bearer abc…``.

Every payload is ``{"name": …, "subject": …, "data": {…}}`` (§1.1); the route's object type is
authoritative, the only action is "Sync to Accounting", so the event type is ``<object>.sync``
and the record id is ``data.id``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ledgerflow.core.settings import SourceConfig
from ledgerflow.ingress.sources.base import (
    BadEnvelope,
    Envelope,
    SourceSpec,
    Unauthorized,
    WebhookRequest,
    any_secret_matches,
    as_record_id,
    require_object,
)

__all__ = ["DEFAULT_HEADER", "IngeniousSource"]

DEFAULT_HEADER = "Authorization"
"""Header checked when the tenant's INGENIOUS source sets no ``header``."""


class IngeniousSource(SourceSpec):
    """INGENIOUS.BUILD (``/webhooks/{tenant}/ingenious/{object}``), one URL per CAI object type."""

    name: ClassVar[str] = "ingenious"
    objects: ClassVar[frozenset[str] | None] = frozenset(
        {"budget", "budget_change", "vendor_contract", "vendor_contract_change", "vendor_invoice"}
    )
    credential_headers: ClassVar[tuple[str, ...]] = (DEFAULT_HEADER,)

    def verify(self, request: WebhookRequest, config: SourceConfig) -> None:
        """Accept the request when the configured header's value equals one of the tenant's secrets.

        Raises:
            Unauthorized: the header is absent or matches no secret.
        """
        header = config.header or DEFAULT_HEADER
        presented = request.headers.get(header.lower())
        if not presented:
            raise Unauthorized(f"no {header} header: INGENIOUS.BUILD sends the header configured for this URL")
        if not any_secret_matches(presented, config.all_secrets()):
            raise Unauthorized(f"the {header} header does not match any value configured for this tenant")

    def describe(self, payload: Any, request: WebhookRequest) -> Envelope:
        """``<object>.sync`` for ``data.id``; the body must be ``{name, subject, data: {...}}``.

        Raises:
            BadEnvelope: not an object, a missing ``name``/``subject``/``data``, ``data`` not an object,
                or no usable ``data.id``.
        """
        body = require_object(payload, "INGENIOUS.BUILD")
        missing = [key for key in ("name", "subject", "data") if key not in body]
        if missing:
            raise BadEnvelope(f"an INGENIOUS.BUILD webhook has name, subject and data; missing: {', '.join(missing)}")
        data = body["data"]
        if not isinstance(data, dict):
            raise BadEnvelope("INGENIOUS.BUILD data must be a JSON object")
        record_id = as_record_id(data.get("id"), "data.id")
        return Envelope(event_type=f"{request.object}.sync", record_id=record_id)
