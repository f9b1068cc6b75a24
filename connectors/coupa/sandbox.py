"""A local Coupa Core API sandbox on Coupa's real paths, enforcing draft-then-submit.

What it reproduces (reference ``erp_apis.md`` §5):

* ``POST /oauth2/token`` — client credentials; bearer tokens required on every ``/api`` call
  (401 otherwise); JSON only when ``Accept: application/json`` (406 otherwise, since Coupa's
  default is XML).
* ``POST /api/invoices`` creates an invoice in ``draft`` status (201 + the invoice);
  ``PUT /api/invoices/:id/submit`` moves a draft to ``pending_approval`` — submitting anything
  that is not a draft is refused (400 ``{"errors": {"status": [...]}}``), so an invoice cannot be
  submitted twice; ``PUT /api/invoices/:id`` updates a draft or a pending invoice (not an approved
  or voided one); ``GET /api/invoices?invoice-number=…&supplier[id|number|name]=…`` filters.
* Required elements per the Invoice API tables (``invoice-number``, ``invoice-date``, ``supplier``,
  ``currency``, ``invoice-lines`` with ``description``, ``price``, ``account``); the supplier must
  exist; ``invoice-number`` is unique per supplier; decimals must be decimal strings.
* ``/api/suppliers`` — list (``number``/``name`` filters), create, update; ``name`` unique.
* Errors as ``{"errors": {"<field>": ["<message>"]}}``; injected faults via ``/_sandbox/faults``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from ledgerflow.connectors.sandbox_kit import DecimalJSONResponse, OAuthIssuer, Sandbox, point_at, read_json
from ledgerflow.core.settings import ConnectionConfig

__all__ = ["DEFAULT_CLIENTS", "DEMO_SUPPLIERS", "TOKEN_PATH", "create_app", "sandbox_connection"]

TOKEN_PATH = "/oauth2/token"  # noqa: S105 - a URL path, not a secret
"""Coupa's OAuth 2.0 / OIDC token endpoint path."""

_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")
_INVOICE_REQUIRED = ("invoice-number", "invoice-date", "supplier", "currency", "invoice-lines")
_LINE_REQUIRED = ("description", "price", "account")
_EDITABLE = ("draft", "pending_approval", "pending_receipt")


def _errors(status: int, errors: Mapping[str, list[str]]) -> Response:
    return DecimalJSONResponse({"errors": dict(errors)}, status_code=status)


def _total(kind: str, record: dict[str, Any]) -> Decimal | None:
    if kind != "invoice":
        return None
    total = Decimal(0)
    for line in record.get("invoice-lines", []):
        total += Decimal(str(line.get("total") or line.get("price") or 0))
    for key in ("tax-amount", "shipping-amount"):
        if record.get(key):
            total += Decimal(str(record[key]))
    return total


class _Coupa:
    def __init__(self, sandbox: Sandbox, accounts: frozenset[str] | None) -> None:
        self.accounts = accounts
        self.sandbox = sandbox
        self.store = sandbox.store

    def guard(self, request: Request) -> Response | None:
        if "application/json" not in request.headers.get("accept", ""):
            return _errors(406, {"accept": ["only application/json is served by this sandbox"]})
        if not self.sandbox.issuer.verify(request.headers.get("authorization")):
            return _errors(401, {"authorization": ["invalid or expired access token"]})
        return None

    def supplier_for(self, ref: Any) -> dict[str, Any] | None:
        if not isinstance(ref, dict):
            return None
        for supplier in self.store.all("supplier"):
            if "id" in ref and str(ref["id"]) == str(supplier["id"]):
                return supplier
            if "number" in ref and ref["number"] == supplier.get("number"):
                return supplier
            if "name" in ref and "id" not in ref and "number" not in ref and ref["name"] == supplier["name"]:
                return supplier
        return None

    def invoice_problems(self, body: Any, *, invoice_id: str | None) -> dict[str, list[str]]:
        if not isinstance(body, dict):
            return {"base": ["request body must be a JSON object"]}
        problems: dict[str, list[str]] = {}
        for field in _INVOICE_REQUIRED if invoice_id is None else ():
            if not body.get(field):
                problems.setdefault(field, []).append("can't be blank")
        supplier = self.supplier_for(body.get("supplier")) if "supplier" in body else None
        if "supplier" in body and supplier is None:
            problems.setdefault("supplier", []).append("is invalid: no such supplier")
        for index, line in enumerate(body.get("invoice-lines") or []):
            for field in _LINE_REQUIRED:
                if not line.get(field):
                    problems.setdefault(f"invoice-lines[{index}].{field}", []).append("can't be blank")
            account = line.get("account")
            segment = account.get("segment-1") if isinstance(account, dict) else None
            if self.accounts is not None and segment is not None and segment not in self.accounts:
                problems.setdefault("account", []).append(f"Segment 1 - GL Account {segment} is not a valid value")
            for field in ("price", "quantity", "total"):
                if field in line and not (isinstance(line[field], str) and _DECIMAL.match(line[field])):
                    problems.setdefault(f"invoice-lines[{index}].{field}", []).append("must be a decimal string")
        if supplier is not None and body.get("invoice-number"):
            for other in self.store.find("invoice", lambda inv: inv["supplier"]["id"] == supplier["id"]):
                same = other["invoice-number"] == body["invoice-number"]
                if same and str(other["id"]) != invoice_id and other["status"] != "voided":
                    problems.setdefault("invoice-number", []).append("has already been taken")
        return problems

    async def create_invoice(self, request: Request) -> Response:
        if (refused := self.guard(request)) is not None:
            return refused
        try:
            body = await read_json(request)
        except ValueError:
            return _errors(400, {"base": ["body is not JSON"]})
        if problems := self.invoice_problems(body, invoice_id=None):
            return _errors(400, problems)
        supplier = self.supplier_for(body["supplier"])
        assert supplier is not None
        invoice_id = int(self.store.next_id())
        invoice = {**body, "id": invoice_id, "status": "draft", "supplier": {**body["supplier"], "id": supplier["id"]}}
        self.store.put("invoice", str(invoice_id), invoice)
        return DecimalJSONResponse(invoice, status_code=201)

    async def update_invoice(self, request: Request, invoice_id: str) -> Response:
        if (refused := self.guard(request)) is not None:
            return refused
        invoice = self.store.get("invoice", invoice_id)
        if invoice is None:
            return _errors(404, {"id": [f"invoice {invoice_id} not found"]})
        if invoice["status"] not in _EDITABLE:
            return _errors(400, {"status": [f"an invoice in status {invoice['status']} cannot be changed"]})
        try:
            body = await read_json(request)
        except ValueError:
            return _errors(400, {"base": ["body is not JSON"]})
        if problems := self.invoice_problems(body, invoice_id=invoice_id):
            return _errors(400, problems)
        body.pop("status", None)
        body.pop("id", None)
        if "supplier" in body:
            supplier = self.supplier_for(body["supplier"])
            assert supplier is not None
            body["supplier"] = {**body["supplier"], "id": supplier["id"]}
        invoice.update(body)
        return DecimalJSONResponse(invoice)

    async def submit_invoice(self, request: Request, invoice_id: str) -> Response:
        if (refused := self.guard(request)) is not None:
            return refused
        invoice = self.store.get("invoice", invoice_id)
        if invoice is None:
            return _errors(404, {"id": [f"invoice {invoice_id} not found"]})
        if invoice["status"] != "draft":
            return _errors(400, {"status": [f"only a draft can be submitted; this invoice is {invoice['status']}"]})
        invoice["status"] = "pending_approval"
        return DecimalJSONResponse(invoice)

    async def get_invoice(self, request: Request, invoice_id: str) -> Response:
        if (refused := self.guard(request)) is not None:
            return refused
        invoice = self.store.get("invoice", invoice_id)
        if invoice is None:
            return _errors(404, {"id": [f"invoice {invoice_id} not found"]})
        return DecimalJSONResponse(invoice)

    async def list_invoices(self, request: Request) -> Response:
        if (refused := self.guard(request)) is not None:
            return refused
        query = request.query_params
        supplier_filter = {
            key[len("supplier[") : -1]: value for key, value in query.items() if key.startswith("supplier[")
        }
        supplier = self.supplier_for(supplier_filter) if supplier_filter else None
        if supplier_filter and supplier is None:
            return DecimalJSONResponse([])
        found = [
            inv
            for inv in self.store.all("invoice")
            if ("invoice-number" not in query or inv["invoice-number"] == query["invoice-number"])
            and (supplier is None or inv["supplier"]["id"] == supplier["id"])
        ]
        limit = int(query.get("limit", "50"))
        return DecimalJSONResponse(found[: min(limit, 50)])

    async def list_suppliers(self, request: Request) -> Response:
        if (refused := self.guard(request)) is not None:
            return refused
        query = request.query_params
        found = [
            s
            for s in self.store.all("supplier")
            if all(str(s.get(key)) == value for key, value in query.items() if key in ("number", "name", "id"))
        ]
        return DecimalJSONResponse(found[:50])

    async def save_supplier(self, request: Request, supplier_id: str | None = None) -> Response:
        if (refused := self.guard(request)) is not None:
            return refused
        try:
            body = await read_json(request)
        except ValueError:
            return _errors(400, {"base": ["body is not JSON"]})
        if not isinstance(body, dict) or (supplier_id is None and not body.get("name")):
            return _errors(400, {"name": ["can't be blank"]})
        existing = self.store.get("supplier", supplier_id) if supplier_id else None
        if supplier_id is not None and existing is None:
            return _errors(404, {"id": [f"supplier {supplier_id} not found"]})
        name = body.get("name")
        if name and any(s["name"] == name and str(s["id"]) != supplier_id for s in self.store.all("supplier")):
            return _errors(400, {"name": ["has already been taken"]})
        if existing is not None:
            existing.update({k: v for k, v in body.items() if k != "id"})
            return DecimalJSONResponse(existing)
        new_id = int(self.store.next_id())
        supplier = {**body, "id": new_id}
        self.store.put("supplier", str(new_id), supplier)
        return DecimalJSONResponse(supplier, status_code=201)


DEMO_SUPPLIERS: dict[str, tuple[str, str]] = {"1": ("MY-DB-ID-90909", "Big Box Store")}
"""Seeded by default: the vendor of the Mercoa sample invoice (number = its accounting custom id)."""

DEFAULT_CLIENTS: dict[str, str] = {"ledgerflow": "sandbox-secret"}
"""OAuth clients the sandbox accepts by default (see :func:`sandbox_connection`)."""


def sandbox_connection(config: ConnectionConfig, base_url: str) -> ConnectionConfig:
    """``config`` pointed at a running sandbox with the default client credentials (options kept)."""
    client_id, client_secret = next(iter(DEFAULT_CLIENTS.items()))
    creds = {"client_id": client_id, "client_secret": client_secret, "token_url": base_url.rstrip("/") + TOKEN_PATH}
    return point_at(config, base_url, creds)


def create_app(
    *,
    clients: Mapping[str, str] | None = None,
    suppliers: Mapping[str, tuple[str, str]] | None = DEMO_SUPPLIERS,
    accounts: Iterable[str] | None = None,
) -> FastAPI:
    """Build the Coupa sandbox FastAPI app.

    Args:
        clients: OAuth client id → secret accepted at ``/oauth2/token``.
        suppliers: seeded suppliers, Coupa id → (supplier number, name).
        accounts: valid values of account ``segment-1`` (GL account); None accepts any.

    Returns:
        The FastAPI app; its :class:`~ledgerflow.connectors.sandbox_kit.Sandbox` is ``app.state.sandbox``.

    """
    sandbox = Sandbox(
        "Coupa Core API sandbox",
        issuer=OAuthIssuer(clients or DEFAULT_CLIENTS, access_ttl=86_399),
        token_path=TOKEN_PATH,
        total_of=_total,
        fault_body=lambda status: {"errors": {"base": [f"injected fault {status}"]}},
    )
    for supplier_id, (number, name) in (suppliers or {}).items():
        sandbox.store.put("supplier", supplier_id, {"id": int(supplier_id), "number": number, "name": name})
    coupa = _Coupa(sandbox, frozenset(accounts) if accounts is not None else None)
    app = sandbox.app
    app.add_api_route("/api/invoices", coupa.list_invoices, methods=["GET"])
    app.add_api_route("/api/invoices", coupa.create_invoice, methods=["POST"])
    app.add_api_route("/api/invoices/{invoice_id}", coupa.get_invoice, methods=["GET"])
    app.add_api_route("/api/invoices/{invoice_id}", coupa.update_invoice, methods=["PUT"])
    app.add_api_route("/api/invoices/{invoice_id}/submit", coupa.submit_invoice, methods=["PUT"])
    app.add_api_route("/api/suppliers", coupa.list_suppliers, methods=["GET"])
    app.add_api_route("/api/suppliers", coupa.save_supplier, methods=["POST"])
    app.add_api_route("/api/suppliers/{supplier_id}", coupa.save_supplier, methods=["PUT"])
    return app
