"""Any plain webhook sender ledgerflow has no code for: a token or an HMAC signature, a JSON body.

``/webhooks/{tenant}/custom`` is for a sender that does not follow Standard Webhooks: the tenant's
``custom`` source says how it authenticates and where its envelope keeps the event type and the
record id, and a mapping file (``docs/mappings.md``) maps its events. Options:

==========================  =====================================================================
``auth``                    ``token`` (default): a token in ``config.header``, ``Authorization:
                            Bearer``, ``X-Webhook-Token`` or ``?token=``, compared in constant time
                            with every configured secret; ``hmac``: ``config.header`` carries the
                            HMAC-``config.digest`` of the raw body keyed with a secret, in
                            ``config.encoding`` (hex or base64), after an optional
                            ``signature_prefix`` (GitHub-style ``sha256=``)
``event_type_path``         dotted path of the event type in the body (default: the first of
                            ``type``, ``event``, ``event_type``, ``eventType``)
``id_path``                 dotted path of the record id (default: ``data.id``, then ``id``)
``delivery_id_header``      header carrying the sender's delivery id (then it is the event id)
==========================  =====================================================================
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

__all__ = ["DEFAULT_EVENT_TYPE_PATHS", "DEFAULT_ID_PATHS", "CustomSource"]

DEFAULT_EVENT_TYPE_PATHS = ("type", "event", "event_type", "eventType")
"""Where the event type is looked for when the tenant names no ``event_type_path``."""
DEFAULT_ID_PATHS = ("data.id", "id")
"""Where the record id is looked for when the tenant names no ``id_path``."""


def _at(body: Any, path: str) -> Any:
    node = body
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


class CustomSource(SourceSpec):
    """A plain signed or tokened webhook (``/webhooks/{tenant}/custom``), described by the tenant's options."""

    name: ClassVar[str] = "custom"
    credential_headers: ClassVar[tuple[str, ...]] = ("Authorization", "X-Webhook-Token")
    credential_query: ClassVar[tuple[str, ...]] = ("token",)

    def verify(self, request: WebhookRequest, config: SourceConfig) -> None:
        """Check the token or the HMAC signature (``options.auth``) against every configured secret.

        Raises:
            Unauthorized: credential missing or matching no secret; ``auth: hmac`` without ``header``;
                an unknown ``auth``.
        """
        auth = config.options.get("auth", "token")
        if auth == "token":
            token = token_from(request, config.header)
            if not token:
                raise Unauthorized("no token: send Authorization: Bearer <token>, X-Webhook-Token or ?token=")
            if not any_secret_matches(token, config.all_secrets()):
                raise Unauthorized("the token does not match any token configured for this tenant")
            return
        if auth != "hmac":
            raise Unauthorized(f"tenant option auth is {auth!r}: use token or hmac")
        if not config.header:
            raise Unauthorized("auth: hmac needs the signature header named in the source's header setting")
        presented = request.headers.get(config.header.lower(), "").strip()
        prefix = str(config.options.get("signature_prefix", ""))
        if not presented:
            raise Unauthorized(f"no {config.header} header")
        if prefix and not presented.startswith(prefix):
            raise Unauthorized(f"{config.header} does not start with {prefix!r}")
        given = presented[len(prefix) :]
        given_bytes = (given.lower() if config.encoding == "hex" else given).encode()
        matched = False
        for secret in config.all_secrets():
            mac = hmac.digest(secret.get_secret_value().encode(), request.body, config.digest)
            expected = mac.hex().encode() if config.encoding == "hex" else base64.b64encode(mac)
            matched |= hmac.compare_digest(expected, given_bytes)
        if not matched:
            raise Unauthorized(f"{config.header} does not match the body signed with any configured secret")

    def describe(self, payload: Any, request: WebhookRequest) -> Envelope:
        """The envelope by the default paths (see :meth:`describe_with` for the tenant's)."""
        return self._envelope(payload, request, DEFAULT_EVENT_TYPE_PATHS, DEFAULT_ID_PATHS, None)

    def describe_with(self, payload: Any, request: WebhookRequest, config: SourceConfig) -> Envelope:
        """The event type and record id at the tenant's ``event_type_path``/``id_path`` (else the defaults).

        Raises:
            BadEnvelope: not an object, or no string event type at the path(s).
        """
        opts = config.options
        types = (str(opts["event_type_path"]),) if opts.get("event_type_path") else DEFAULT_EVENT_TYPE_PATHS
        ids = (str(opts["id_path"]),) if opts.get("id_path") else DEFAULT_ID_PATHS
        header = str(opts["delivery_id_header"]) if opts.get("delivery_id_header") else None
        return self._envelope(payload, request, types, ids, header)

    def _envelope(
        self,
        payload: Any,
        request: WebhookRequest,
        type_paths: tuple[str, ...],
        id_paths: tuple[str, ...],
        delivery_header: str | None,
    ) -> Envelope:
        body = require_object(payload, "custom")
        event_type = next((v for p in type_paths if isinstance(v := _at(body, p), str) and v), None)
        if event_type is None:
            raise BadEnvelope(f"no string event type at {' or '.join(type_paths)}")
        if len(event_type) > MAX_ID_LENGTH:
            raise BadEnvelope(f"the event type is longer than {MAX_ID_LENGTH} characters")
        found = next(((p, v) for p in id_paths if (v := _at(body, p)) is not None), None)
        delivery = request.headers.get(delivery_header.lower()) if delivery_header else None
        delivery_id = as_record_id(delivery, delivery_header or "delivery id") if delivery else None
        if found is None:
            # No record id: the event is its own record (keyed by the event type, like Mercoa's jobs).
            return Envelope(event_type=event_type, record_id=event_type, delivery_id=delivery_id)
        path, value = found
        return Envelope(event_type=event_type, record_id=as_record_id(value, path), delivery_id=delivery_id)
