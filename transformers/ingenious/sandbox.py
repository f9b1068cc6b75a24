"""A local INGENIOUS Public API sandbox that takes the source writer's writes and keeps them.

It answers on the writer's default paths (``writer.DEFAULT_INGENIOUS_WRITE_PATHS``)
and the enrichment client's GET by id, so the demo and ``ledgerflow up`` can run the whole loop
locally. What it enforces is what ``shared/reference/sources.md`` records (bearer access token;
accounting objects carry ``custom_id`` and ``name``) plus the writer's ASSUMPTIONS, strictly:

* every request needs ``Authorization: Bearer <token>`` (401 otherwise);
* accounting objects (``/accounting-companies``, ``-entities``, ``-cost-codes``, ``-projects``,
  ``-business-units``): ``GET ?custom_id=`` → ``{"data": [...]}``; ``POST`` creates (``name``
  a non-empty string, ``custom_id`` a non-empty string unique per object kind: 409 when taken;
  only ``custom_id``, ``name``, ``code``, ``active`` accepted: 422 otherwise); ``GET``/``PATCH``
  ``/{id}`` (404 unknown; the same field rules);
* invoices (seeded with :meth:`IngeniousSandbox.add_invoice`): ``GET /invoices/{id}`` →
  ``{"data": {id, amount, currency, status, payments}}``, ``status`` ``approved`` →
  ``partially_paid`` → ``paid`` as payments add up; ``GET /invoices/{id}/payments?custom_id=``;
  ``POST /invoices/{id}/payments`` ``{custom_id, amount (decimal string > 0), currency (the
  invoice's, optional), paid_on (ISO date)}``: 409 for a ``custom_id`` already recorded, 422 for more than
  is outstanding or a wrong currency.

Faults: :mod:`ledgerflow.transformers.writeback.faults` (``POST /_sandbox/faults``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse

from ledgerflow.transformers.writeback.faults import Faults, install_faults

__all__ = ["IngeniousSandbox"]

_KINDS = {
    "companies": "company",
    "entities": "entity",
    "cost-codes": "cost_code",
    "projects": "project",
    "business-units": "business_unit",
}
_FIELDS = frozenset({"custom_id", "name", "code", "active"})


@dataclass
class IngeniousSandbox:
    """The sandbox's state: accounting objects by kind and id, invoices, faults; :meth:`app` serves it.

    Args:
        token: the accepted bearer access token.
    """

    token: str = "ingenious-sandbox-token"  # noqa: S105 - a local sandbox's fixed credential
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {k: {} for k in _KINDS.values()})
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def add_invoice(self, invoice_id: str, amount: Decimal, currency: str, status: str = "approved") -> None:
        """Seed an invoice (as INGENIOUS would hold one a user synced to accounting)."""
        self.invoices[invoice_id] = {
            "id": invoice_id,
            "amount": str(amount),
            "currency": currency,
            "status": status,
            "payments": [],
        }

    def find(self, kind: str, custom_id: str) -> dict[str, Any] | None:
        """The stored accounting object of ``kind`` with that ``custom_id``, or None."""
        return next((o for o in self.objects[kind].values() if o.get("custom_id") == custom_id), None)

    def app(self) -> FastAPI:
        """The FastAPI app serving this state."""
        app = FastAPI(title="INGENIOUS Public API sandbox")
        install_faults(app, self.faults)

        def check(authorization: str) -> None:
            if authorization != f"Bearer {self.token}":
                raise HTTPException(401, "invalid or missing access token")

        def kind_of(plural: str) -> str:
            if plural not in _KINDS:
                raise HTTPException(404, f"no accounting object kind {plural!r}")
            return _KINDS[plural]

        def validate(body: Any, *, creating: bool) -> dict[str, Any]:
            if not isinstance(body, dict):
                raise HTTPException(422, "body must be a JSON object")
            unknown = sorted(set(body) - _FIELDS)
            if unknown:
                raise HTTPException(422, f"unknown field(s): {', '.join(unknown)}")
            for name in ("custom_id", "name"):
                if (creating or name in body) and (not isinstance(body.get(name), str) or not body[name].strip()):
                    raise HTTPException(422, f"{name} must be a non-empty string")
            if "active" in body and not isinstance(body["active"], bool):
                raise HTTPException(422, "active must be a boolean")
            if "code" in body and not isinstance(body["code"], str):
                raise HTTPException(422, "code must be a string")
            return body

        @app.get("/accounting-{plural}")
        async def list_objects(plural: str, request: Request, authorization: str = Header("")) -> Any:
            check(authorization)
            kind = kind_of(plural)
            wanted = request.query_params.get("custom_id")
            rows = [o for o in self.objects[kind].values() if wanted is None or o.get("custom_id") == wanted]
            return {"data": rows}

        @app.post("/accounting-{plural}", status_code=201)
        async def create_object(plural: str, request: Request, authorization: str = Header("")) -> Any:
            check(authorization)
            kind = kind_of(plural)
            body = validate(await request.json(), creating=True)
            if self.find(kind, body["custom_id"]) is not None:
                raise HTTPException(409, f"custom_id {body['custom_id']!r} is already used by another {kind}")
            record = {"id": f"{kind}-{next(self._ids)}", "active": True, **body}
            self.objects[kind][record["id"]] = record
            return {"data": record}

        @app.get("/accounting-{plural}/{object_id}")
        async def get_object(plural: str, object_id: str, authorization: str = Header("")) -> Any:
            check(authorization)
            found = self.objects[kind_of(plural)].get(object_id)
            if found is None:
                raise HTTPException(404, "not found")
            return {"data": found}

        @app.patch("/accounting-{plural}/{object_id}")
        async def update_object(plural: str, object_id: str, request: Request, authorization: str = Header("")) -> Any:
            check(authorization)
            kind = kind_of(plural)
            found = self.objects[kind].get(object_id)
            if found is None:
                raise HTTPException(404, "not found")
            body = validate(await request.json(), creating=False)
            other = self.find(kind, body["custom_id"]) if "custom_id" in body else None
            if other is not None and other["id"] != object_id:
                raise HTTPException(409, f"custom_id {body['custom_id']!r} is already used by another {kind}")
            found.update(body)
            return {"data": found}

        def invoice(invoice_id: str) -> dict[str, Any]:
            found = self.invoices.get(invoice_id)
            if found is None:
                raise HTTPException(404, f"no invoice {invoice_id}")
            return found

        @app.get("/invoices/{invoice_id}")
        async def get_invoice(invoice_id: str, authorization: str = Header("")) -> Any:
            check(authorization)
            return {"data": invoice(invoice_id)}

        @app.get("/invoices/{invoice_id}/payments")
        async def list_payments(invoice_id: str, request: Request, authorization: str = Header("")) -> Any:
            check(authorization)
            wanted = request.query_params.get("custom_id")
            payments = invoice(invoice_id)["payments"]
            return {"data": [p for p in payments if wanted is None or p["custom_id"] == wanted]}

        @app.post("/invoices/{invoice_id}/payments", status_code=201)
        async def add_payment(invoice_id: str, request: Request, authorization: str = Header("")) -> Any:
            check(authorization)
            doc = invoice(invoice_id)
            body = await request.json()
            if not isinstance(body, dict):
                raise HTTPException(422, "body must be a JSON object")
            unknown = sorted(set(body) - {"custom_id", "amount", "currency", "paid_on"})
            if unknown:
                raise HTTPException(422, f"unknown field(s): {', '.join(unknown)}")
            if not isinstance(body.get("custom_id"), str) or not body["custom_id"]:
                raise HTTPException(422, "custom_id must be a non-empty string")
            if any(p["custom_id"] == body["custom_id"] for p in doc["payments"]):
                raise HTTPException(409, f"payment {body['custom_id']!r} is already recorded on {invoice_id}")
            if not isinstance(body.get("amount"), str):
                raise HTTPException(422, "amount must be a decimal string")
            try:
                amount = Decimal(body["amount"])
            except InvalidOperation:
                raise HTTPException(422, "amount must be a decimal string") from None
            if not amount.is_finite() or amount <= 0:
                raise HTTPException(422, "amount must be greater than 0")
            if "currency" in body and body["currency"] != doc["currency"]:
                raise HTTPException(422, f"currency must be the invoice's ({doc['currency']})")
            if "paid_on" in body:
                try:
                    date.fromisoformat(str(body["paid_on"]))
                except ValueError:
                    raise HTTPException(422, "paid_on must be an ISO 8601 date") from None
            paid = sum((Decimal(p["amount"]) for p in doc["payments"]), Decimal(0))
            total = Decimal(doc["amount"])
            if paid + amount > total:
                raise HTTPException(422, f"payment of {amount} exceeds the {total - paid} outstanding")
            payment = {"id": f"payment-{next(self._ids)}", **body}
            doc["payments"].append(payment)
            doc["status"] = "paid" if paid + amount == total else "partially_paid"
            return JSONResponse({"data": payment}, status_code=201)

        return app
