"""A receiving endpoint for the generic HTTP connector: verifies Standard Webhooks signatures.

Used by the tests and by ``ledgerflow up`` as the "custom ERP" when no real endpoint is
configured. ``POST /`` and ``POST /<path>`` verify ``webhook-id``/``webhook-timestamp``/
``webhook-signature`` against the raw body with the ``standardwebhooks`` package (constant-time
compare, 5-minute timestamp tolerance), then store the delivery once per ``webhook-id``: a
redelivery answers the same record id and stores nothing new (what the Standard Webhooks
specification asks receivers to do with the message id). Answers:

* 200 ``{"id": "<record id>", "duplicate": bool}`` — accepted;
* 401 ``{"message": …}`` — missing or bad signature;
* 400 — body is not JSON; injected faults through the kit's ``/_sandbox/faults``.

Stored deliveries are visible at ``GET /_sandbox/records?kind=delivery`` (each with its headers
and parsed body).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from connectors.http import loads_json
from connectors.sandbox_kit import DecimalJSONResponse, OAuthIssuer, Sandbox

__all__ = ["create_receiver"]


def _total(kind: str, record: dict[str, Any]) -> Decimal | None:
    data = record.get("body", {}).get("data") if isinstance(record.get("body"), dict) else None
    if isinstance(data, dict) and isinstance(data.get("total"), str):
        return Decimal(data["total"])
    return None


def create_receiver(secret: str) -> FastAPI:
    """Build the receiver app for ``secret`` (``whsec_<base64>``, as configured on the connection).

    Returns:
        The FastAPI app; its :class:`~connectors.sandbox_kit.Sandbox` is ``app.state.sandbox``.

    Raises:
        ValueError: ``secret`` is not a valid Standard Webhooks secret.

    """
    webhook = Webhook(secret)
    sandbox = Sandbox(
        "Standard Webhooks receiver",
        issuer=OAuthIssuer({}),
        token_path="/_oauth/token",  # noqa: S106 - unused token route the kit requires, not a secret
        total_of=_total,
    )
    by_message: dict[str, str] = {}

    async def receive(request: Request, path: str = "") -> Response:
        body = await request.body()
        try:
            webhook.verify(body, dict(request.headers), json_parse=False)
        except WebhookVerificationError as exc:
            return DecimalJSONResponse({"message": f"signature rejected: {exc}"}, status_code=401)
        try:
            parsed = loads_json(body)
        except ValueError:
            return DecimalJSONResponse({"message": "body is not JSON"}, status_code=400)
        msg_id = request.headers["webhook-id"]
        if msg_id in by_message:
            return DecimalJSONResponse({"id": by_message[msg_id], "duplicate": True})
        record_id = f"rcv-{sandbox.store.next_id()}"
        by_message[msg_id] = record_id
        sandbox.store.put(
            "delivery",
            record_id,
            {"path": "/" + path, "webhook_id": msg_id, "body": parsed},
        )
        return DecimalJSONResponse({"id": record_id, "duplicate": False})

    sandbox.app.add_api_route("/", receive, methods=["POST"])
    sandbox.app.add_api_route("/{path:path}", receive, methods=["POST"])
    return sandbox.app
