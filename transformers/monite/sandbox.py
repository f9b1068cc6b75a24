"""A local Monite Partner API sandbox: payables read and marked paid, as the source writer does.

Strict to the Monite Partner API 2024-05-25 OpenAPI (``team-monite/monite-sdk``
``packages/sdk-react/src/api/schema.json``):

* ``POST /auth/token`` (client credentials; ``X-Monite-Version`` required) → a bearer token;
* every other path needs ``Authorization: Bearer``, ``X-Monite-Version`` and ``X-Monite-Entity-Id``
  (401 / 422 otherwise); a payable of another entity is 404;
* ``GET /payables/{payable_id}`` → a ``PayableResponseSchema`` subset (``id``, ``entity_id``,
  ``status``, ``currency``, ``amount``, ``amount_due``, ``amount_paid``, ``amount_to_pay``,
  ``created_at``, ``updated_at``), amounts in minor units;
* ``POST /payables/{payable_id}/mark_as_paid`` body ``CommentPayload`` (``comment`` a string;
  ``additionalProperties: false`` → 422): allowed from ``waiting_to_be_paid`` and
  ``partially_paid``; ``amount_paid`` becomes ``amount``, ``amount_due`` 0, ``status`` ``paid``;
* ``POST /payables/{payable_id}/mark_as_partially_paid`` body ``PartiallyPaidPayload``
  (``amount_paid`` integer ≥ 0, required, no other field → 422): the sum of all payments, more than
  0 and less than ``amount`` (400 otherwise), from ``waiting_to_be_paid`` or ``partially_paid``;
* a payable in another state: 409 ``{"error": {"message": "Payable couldn't be updated due to
  current state"}}`` (the spec's 409 text).

Faults: :mod:`ledgerflow.transformers.writeback.faults` (``POST /_sandbox/faults``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse

from ledgerflow.transformers.writeback.faults import Faults, install_faults

__all__ = ["PAYABLE_STATES", "MoniteSandbox"]

PAYABLE_STATES = frozenset(
    {"draft", "new", "approve_in_progress", "waiting_to_be_paid", "partially_paid", "paid", "canceled", "rejected"}
)
"""``PayableStateEnum``."""

_PAYABLE_FROM = frozenset({"waiting_to_be_paid", "partially_paid"})


def _error(status: int, message: str) -> JSONResponse:
    """Monite's ``ErrorSchemaResponse``: ``{"error": {"message": …}}``."""
    return JSONResponse({"error": {"message": message}}, status_code=status)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class MoniteSandbox:
    """The sandbox's state: payables by id, issued tokens, faults; :meth:`app` serves it."""

    client_id: str = "monite-sandbox-client"
    client_secret: str = "monite-sandbox-secret"  # noqa: S105 - a local sandbox's fixed credential
    payables: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    faults: Faults = field(default_factory=Faults)

    def add_payable(
        self, payable_id: str, entity_id: str, amount: int, currency: str = "EUR", status: str = "waiting_to_be_paid"
    ) -> None:
        """Seed a payable (``amount`` in minor units)."""
        assert status in PAYABLE_STATES
        self.payables[payable_id] = {
            "id": payable_id,
            "entity_id": entity_id,
            "status": status,
            "currency": currency,
            "amount": amount,
            "amount_due": amount,
            "amount_paid": 0,
            "amount_to_pay": amount,
            "created_at": _now(),
            "updated_at": _now(),
        }

    def app(self) -> FastAPI:
        """The FastAPI app serving this state."""
        app = FastAPI(title="Monite Partner API sandbox")
        install_faults(app, self.faults)

        @app.post("/auth/token")
        async def token(request: Request, x_monite_version: str = Header("")) -> Any:
            if not x_monite_version:
                return _error(422, "x-monite-version header is required")
            body = await request.json()
            if not isinstance(body, dict) or body.get("grant_type") != "client_credentials":
                return _error(422, "grant_type must be client_credentials")
            if (body.get("client_id"), body.get("client_secret")) != (self.client_id, self.client_secret):
                return _error(401, "invalid client credentials")
            issued = secrets.token_hex(16)
            self.tokens.add(issued)
            return {"access_token": issued, "token_type": "Bearer", "expires_in": 1800}

        def payable_for(
            payable_id: str, authorization: str, version: str, entity: str
        ) -> dict[str, Any] | JSONResponse:
            if authorization.removeprefix("Bearer ") not in self.tokens:
                return _error(401, "invalid or missing token")
            if not version or not entity:
                return _error(422, "x-monite-version and x-monite-entity-id headers are required")
            payable = self.payables.get(payable_id)
            if payable is None or payable["entity_id"] != entity:
                return _error(404, f"payable {payable_id} not found")
            return payable

        @app.get("/payables/{payable_id}")
        async def get_payable(
            payable_id: str,
            authorization: str = Header(""),
            x_monite_version: str = Header(""),
            x_monite_entity_id: str = Header(""),
        ) -> Any:
            return payable_for(payable_id, authorization, x_monite_version, x_monite_entity_id)

        @app.post("/payables/{payable_id}/mark_as_paid")
        async def mark_as_paid(
            payable_id: str,
            request: Request,
            authorization: str = Header(""),
            x_monite_version: str = Header(""),
            x_monite_entity_id: str = Header(""),
        ) -> Any:
            payable = payable_for(payable_id, authorization, x_monite_version, x_monite_entity_id)
            if isinstance(payable, JSONResponse):
                return payable
            raw = await request.body()
            body = await request.json() if raw else {}
            if not isinstance(body, dict) or set(body) - {"comment"}:
                return _error(422, "CommentPayload takes only `comment`")
            if "comment" in body and not isinstance(body["comment"], str):
                return _error(422, "comment must be a string")
            if payable["status"] not in _PAYABLE_FROM:
                return _error(409, "Payable couldn't be updated due to current state")
            payable.update(
                status="paid", amount_paid=payable["amount"], amount_due=0, amount_to_pay=0, updated_at=_now()
            )
            if "comment" in body:
                payable["comment"] = body["comment"]
            return payable

        @app.post("/payables/{payable_id}/mark_as_partially_paid")
        async def mark_as_partially_paid(
            payable_id: str,
            request: Request,
            authorization: str = Header(""),
            x_monite_version: str = Header(""),
            x_monite_entity_id: str = Header(""),
        ) -> Any:
            payable = payable_for(payable_id, authorization, x_monite_version, x_monite_entity_id)
            if isinstance(payable, JSONResponse):
                return payable
            body = await request.json()
            if not isinstance(body, dict) or set(body) != {"amount_paid"}:
                return _error(422, "PartiallyPaidPayload takes exactly `amount_paid`")
            paid = body["amount_paid"]
            if not isinstance(paid, int) or isinstance(paid, bool) or paid < 0:
                return _error(422, "amount_paid must be an integer >= 0 (minor units)")
            if payable["status"] not in _PAYABLE_FROM:
                return _error(409, "Payable couldn't be updated due to current state")
            if not 0 < paid < payable["amount"]:
                return _error(400, "amount_paid must be greater than 0 and less than the payable's amount")
            payable.update(
                status="partially_paid",
                amount_paid=paid,
                amount_due=payable["amount"] - paid,
                amount_to_pay=payable["amount"] - paid,
                updated_at=_now(),
            )
            return payable

        return app
