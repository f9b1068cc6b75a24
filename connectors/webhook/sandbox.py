"""A receiving endpoint for the generic HTTP connector: verifies Standard Webhooks signatures.

Used by the tests and by ``ledgerflow up`` as the "custom ERP" when no real endpoint is
configured. ``POST /`` and ``POST /<path>`` verify ``webhook-id``/``webhook-timestamp``/
``webhook-signature`` against the raw body with the ``standardwebhooks`` package (constant-time
compare, 5-minute timestamp tolerance), then handle the delivery once per ``webhook-id``: a
redelivery answers the same record id and stores nothing new (what the Standard Webhooks
specification asks receivers to do with the message id). Like a small ERP, it keeps one record
per canonical id: a ledgerflow envelope (``{"type": "<object>.<action>", "data": {"canonical_id":
…}}``) upserts the record of kind ``<object>`` with that canonical id, so an update keeps its
record id; other bodies are stored as kind ``delivery``, one per message. Answers:

* 200 ``{"id": "<record id>", "duplicate": bool}`` — accepted;
* 401 ``{"message": …}`` — missing or bad signature;
* 422 ``{"message": …}`` — a line's GL account is not in ``known_gl_accounts`` (when given);
* 400 — body is not JSON; injected faults through the kit's ``/_sandbox/faults``.

``GET /records/<record id>`` answers the body stored for that record (the envelope: the
canonical document under ``data``), what the connector's read-back verification reads.

Stored records are visible at ``GET /_sandbox/records?kind=<object>`` (each with the path, the
last ``webhook-id`` and the parsed body).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ledgerflow.connectors.sandbox_kit import DecimalJSONResponse, OAuthIssuer, Sandbox
from ledgerflow.core.outbound.client import loads_json
from ledgerflow.core.settings import ConnectionConfig

__all__ = ["DEFAULT_SECRET", "create_app", "create_receiver", "sandbox_connection"]


def _total(kind: str, record: dict[str, Any]) -> Decimal | None:
    data = record.get("body", {}).get("data") if isinstance(record.get("body"), dict) else None
    if isinstance(data, dict) and isinstance(data.get("total"), str):
        return Decimal(data["total"])
    return None


def _unknown_gl(data: Any, known: frozenset[str]) -> str | None:
    lines = data.get("line_items") if isinstance(data, dict) else None
    for line in lines if isinstance(lines, list) else []:
        account = line.get("gl_account") if isinstance(line, dict) else None
        if isinstance(account, dict):
            code = account.get("accounting_id") or account.get("accounting_custom_id")
            if code is not None and code not in known:
                return str(code)
    return None


def create_receiver(secret: str, *, known_gl_accounts: Iterable[str] | None = None) -> FastAPI:
    """Build the receiver app for ``secret`` (``whsec_<base64>``, as configured on the connection).

    ``known_gl_accounts``: when given, envelopes whose lines name another GL account (by
    ``accounting_id`` or ``accounting_custom_id``) are refused with 422, as an ERP would.

    Returns:
        The FastAPI app; its :class:`~ledgerflow.connectors.sandbox_kit.Sandbox` is ``app.state.sandbox``.

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
    by_canonical: dict[str, str] = {}
    known = frozenset(known_gl_accounts) if known_gl_accounts is not None else None

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
        data = parsed.get("data") if isinstance(parsed, dict) else None
        if known is not None and (code := _unknown_gl(data, known)) is not None:
            return DecimalJSONResponse({"message": f"unknown GL account {code}"}, status_code=422)
        canonical = data.get("canonical_id") if isinstance(data, dict) else None
        kind = "delivery"
        if isinstance(canonical, str) and isinstance(parsed.get("type"), str):
            kind = parsed["type"].split(".", 1)[0]
        record_id = by_canonical.get(canonical) if isinstance(canonical, str) else None
        if record_id is None:
            record_id = f"rcv-{sandbox.store.next_id()}"
            if isinstance(canonical, str):
                by_canonical[canonical] = record_id
        by_message[msg_id] = record_id
        sandbox.store.put(kind, record_id, {"path": "/" + path, "webhook_id": msg_id, "body": parsed})
        return DecimalJSONResponse({"id": record_id, "duplicate": False})

    async def read(record_id: str) -> Response:
        for records in sandbox.store.records.values():
            if record_id in records:
                return DecimalJSONResponse(records[record_id].get("body"))
        return DecimalJSONResponse({"message": f"no record {record_id}"}, status_code=404)

    sandbox.app.add_api_route("/records/{record_id}", read, methods=["GET"])
    sandbox.app.add_api_route("/", receive, methods=["POST"])
    sandbox.app.add_api_route("/{path:path}", receive, methods=["POST"])
    return sandbox.app


DEFAULT_SECRET = "whsec_bGVkZ2VyZmxvdy1zYW5kYm94LXJlY2VpdmVyLXNlY3JldA=="  # noqa: S105 - local sandbox only
"""The Standard Webhooks secret the default receiver verifies (see :func:`sandbox_connection`)."""


def create_app(secret: str = DEFAULT_SECRET, *, known_gl_accounts: Iterable[str] | None = None) -> FastAPI:
    """The receiver as the ``http`` ERP kind's sandbox (``ledgerflow up``); see :func:`create_receiver`."""
    return create_receiver(secret, known_gl_accounts=known_gl_accounts)


def sandbox_connection(config: ConnectionConfig, base_url: str) -> ConnectionConfig:
    """``config`` pointed at a running receiver, with the default secret.

    Options: ``record_id_pointer`` ``/id`` and read-back from ``/records/{record_id}`` under the
    connection's own options, which win.
    """
    data = config.model_dump()
    data.update(base_url=base_url, credentials={"secret": DEFAULT_SECRET})
    data["options"] = {
        "record_id_pointer": "/id",
        "read_back_path": "/records/{record_id}",
        "read_back_pointer": "/data",
        **data.get("options", {}),
    }
    return ConnectionConfig.model_validate(data)
