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
* Required elements per the Invoice API tables (reference §5.2: ``invoice-number`` string(40),
  ``invoice-date`` date only, ``supplier``, ``currency`` (a known ISO code), ``line-level-taxation``
  (boolean), ``account-type`` (a chart of accounts of the instance), ``invoice-lines`` with
  ``type`` (``InvoiceAmountLine``; ``InvoiceQuantityLine`` also needs ``quantity``),
  ``description``, ``price``, ``account`` with ``segment-1``); the supplier must exist;
  ``invoice-number`` is unique per supplier; decimals (line ``price``/``quantity``/``total``,
  ``tax-amount``, ``shipping-amount``, ``handling-amount``, ``misc-amount``) must be decimal
  strings within the currency's minor unit (prices may carry more digits).
* Totals as Coupa computes them: a quantity line's total is quantity × price, an amount line's
  its price (rounded half-up to the currency's minor unit; a ``total`` sent is replaced), and
  the invoice's ``gross-total`` is the lines plus tax, shipping, handling and misc amounts; the
  stored invoice carries both (``GET /api/invoices/:id`` answers them).
* ``/api/suppliers`` — list, create, update; ``name`` unique. ``GET /api/suppliers``,
  ``/api/accounts``, ``/api/tax_codes`` and ``/api/lookup_values`` take Coupa's query arguments
  (``updated_at[gt_or_eq]=…``, ``order_by``/``dir``, ``limit`` ≤ 50, ``offset``…) checked strictly
  (:mod:`ledgerflow.connectors.coupa.reference_sandbox`), for the ERP reader; accounts, tax codes
  and lookup values are seeded (:data:`~ledgerflow.connectors.coupa.reference_sandbox.SEEDED_REFERENCE`),
  more suppliers with ``seed_parties``; records carry ``created-at`` / ``updated-at`` from ``clock``.
* Errors as ``{"errors": {"<field>": ["<message>"]}}``; injected faults via ``/_sandbox/faults``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any

from babel.numbers import list_currencies
from fastapi import FastAPI, Request
from fastapi.responses import Response

from ledgerflow.connectors.coupa.reference_sandbox import (
    SEEDED_REFERENCE,
    SEEDED_SUPPLIERS,
    QueryError,
    coupa_time,
    select,
)
from ledgerflow.connectors.sandbox_kit import DecimalJSONResponse, OAuthIssuer, Sandbox, point_at, read_json
from ledgerflow.contracts.common import currency_precision
from ledgerflow.core.settings import ConnectionConfig

__all__ = ["DEFAULT_CHARTS", "DEFAULT_CLIENTS", "DEMO_SUPPLIERS", "TOKEN_PATH", "create_app", "sandbox_connection"]

TOKEN_PATH = "/oauth2/token"  # noqa: S105 - a URL path, not a secret
"""Coupa's OAuth 2.0 / OIDC token endpoint path."""

_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INVOICE_REQUIRED = ("invoice-number", "invoice-date", "supplier", "currency", "invoice-lines", "account-type")
_LINE_REQUIRED = ("type", "description", "price", "account")
_LINE_TYPES = ("InvoiceAmountLine", "InvoiceQuantityLine")
_HEADER_AMOUNTS = ("tax-amount", "shipping-amount", "handling-amount", "misc-amount")

DEFAULT_CHARTS: tuple[str, ...] = ("US Chart of Accounts",)
"""Charts of accounts (``account-type`` names) of the default sandbox instance."""
_EDITABLE = ("draft", "pending_approval", "pending_receipt")


@lru_cache(maxsize=1)
def _known_currencies() -> frozenset[str]:
    return frozenset(list_currencies())


def _amount_ok(value: Any, unit: Decimal) -> bool:
    """A decimal string with no more digits than the currency's minor unit."""
    if not (isinstance(value, str) and _DECIMAL.match(value)):
        return False
    number = Decimal(value)
    return number == number.quantize(unit)


def _errors(status: int, errors: Mapping[str, list[str]]) -> Response:
    return DecimalJSONResponse({"errors": dict(errors)}, status_code=status)


def _unit(record: dict[str, Any]) -> Decimal:
    currency = record.get("currency")
    code = currency.get("code") if isinstance(currency, dict) else None
    try:
        return Decimal(1).scaleb(-currency_precision(str(code)))
    except (KeyError, ValueError):
        return Decimal("0.01")


def _line_total(line: dict[str, Any], unit: Decimal) -> Decimal:
    """A line's total as Coupa computes it (quantity × price, or the price of an amount line)."""
    price = Decimal(str(line.get("price") or 0))
    if line.get("type") == "InvoiceQuantityLine":
        price *= Decimal(str(line.get("quantity") or 0))
    return price.quantize(unit, rounding=ROUND_HALF_UP)


def _total(kind: str, record: dict[str, Any]) -> Decimal | None:
    if kind != "invoice":
        return None
    return Decimal(str(record.get("gross-total", 0)))


def _booked(invoice: dict[str, Any]) -> dict[str, Any]:
    """``invoice`` with Coupa's computed line ``total`` values and ``gross-total``."""
    unit = _unit(invoice)
    total = Decimal(0)
    for line in invoice.get("invoice-lines") or []:
        line["total"] = format(_line_total(line, unit), "f")
        total += Decimal(line["total"])
    for key in _HEADER_AMOUNTS:
        if invoice.get(key):
            total += Decimal(str(invoice[key]))
    invoice["gross-total"] = format(total, "f")
    return invoice


class _Coupa:
    def __init__(
        self,
        sandbox: Sandbox,
        accounts: frozenset[str] | None,
        charts: frozenset[str],
        clock: Callable[[], datetime],
    ) -> None:
        self.clock = clock
        self.accounts = accounts
        self.charts = charts
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

        def add(field: str, message: str) -> None:
            problems.setdefault(field, []).append(message)

        for field in _INVOICE_REQUIRED if invoice_id is None else ():
            if not body.get(field):
                add(field, "can't be blank")
        if invoice_id is None and not isinstance(body.get("line-level-taxation"), bool):
            add("line-level-taxation", "can't be blank (true or false)")
        number = body.get("invoice-number")
        if number is not None and (not isinstance(number, str) or len(number) > 40):
            add("invoice-number", "is too long (maximum is 40 characters)")
        date_value = body.get("invoice-date")
        if date_value is not None and not (isinstance(date_value, str) and _DATE.match(date_value)):
            add("invoice-date", "must be a date (YYYY-MM-DD) without a time")
        currency = body.get("currency")
        if currency is not None:
            code = currency.get("code") if isinstance(currency, dict) else None
            if not isinstance(code, str) or code not in _known_currencies():
                add("currency", f"{code!r} is not a currency of this instance")
        chart = body.get("account-type")
        if chart is not None and (not isinstance(chart, dict) or chart.get("name") not in self.charts):
            add("account-type", "is invalid: no such chart of accounts")
        supplier = self.supplier_for(body.get("supplier")) if "supplier" in body else None
        if "supplier" in body and supplier is None:
            add("supplier", "is invalid: no such supplier")
        unit = _unit(body) if isinstance(currency, dict) else Decimal("0.01")
        for key in _HEADER_AMOUNTS:
            if key in body and not _amount_ok(body[key], unit):
                add(key, "must be a decimal string within the currency's minor unit")
        lines = body.get("invoice-lines")
        if lines is not None and (not isinstance(lines, list) or not lines):
            add("invoice-lines", "can't be blank")
            lines = []
        for index, line in enumerate(lines or []):
            where = f"invoice-lines[{index}]"
            if not isinstance(line, dict):
                add(where, "must be an object")
                continue
            for field in _LINE_REQUIRED:
                if not line.get(field):
                    add(f"{where}.{field}", "can't be blank")
            if line.get("type") and line["type"] not in _LINE_TYPES:
                add(f"{where}.type", f"must be one of {', '.join(_LINE_TYPES)}")
            if line.get("type") == "InvoiceQuantityLine" and not line.get("quantity"):
                add(f"{where}.quantity", "can't be blank for a quantity line")
            account = line.get("account")
            segment = account.get("segment-1") if isinstance(account, dict) else None
            if account is not None and not segment:
                add(f"{where}.account", "Segment 1 - GL Account can't be blank")
            if self.accounts is not None and segment is not None and segment not in self.accounts:
                add("account", f"Segment 1 - GL Account {segment} is not a valid value")
            for field in ("price", "quantity", "total"):
                if field in line and not (isinstance(line[field], str) and _DECIMAL.match(line[field])):
                    add(f"{where}.{field}", "must be a decimal string")
            if line.get("type") == "InvoiceAmountLine" and "price" in line and not _amount_ok(line["price"], unit):
                add(f"{where}.price", "has more decimals than the currency allows")
        if supplier is not None and body.get("invoice-number"):
            for other in self.store.find("invoice", lambda inv: inv["supplier"]["id"] == supplier["id"]):
                same = other["invoice-number"] == body["invoice-number"]
                if same and str(other["id"]) != invoice_id and other["status"] != "voided":
                    add("invoice-number", "has already been taken")
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
        self.store.put("invoice", str(invoice_id), _booked(invoice))
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
        return DecimalJSONResponse(_booked(invoice))

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
        return await self.list_reference(request, "supplier")

    async def list_reference(self, request: Request, kind: str) -> Response:
        """``GET /api/<resource>`` with Coupa's query arguments (see the reference sandbox module)."""
        if (refused := self.guard(request)) is not None:
            return refused
        try:
            found = select(kind, self.store.all(kind), request.query_params)
        except QueryError as exc:
            return _errors(400, {exc.argument: [str(exc)]})
        return DecimalJSONResponse(found)

    def new_id(self, kind: str) -> int:
        """A new Coupa id of ``kind`` (skipping the seeded ones)."""
        while True:
            candidate = self.store.next_id()
            if self.store.get(kind, candidate) is None:
                return int(candidate)

    def lister(self, kind: str) -> Callable[[Request], Any]:
        """The list handler of ``kind``."""

        async def handler(request: Request) -> Response:
            return await self.list_reference(request, kind)

        return handler

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
        now = coupa_time(self.clock())
        if existing is not None:
            existing.update({k: v for k, v in body.items() if k not in ("id", "created-at", "updated-at")})
            existing["updated-at"] = now
            return DecimalJSONResponse(existing)
        new_id = self.new_id("supplier")
        supplier = {"status": "active", **body, "id": new_id, "created-at": now, "updated-at": now}
        self.store.put("supplier", str(new_id), supplier)
        return DecimalJSONResponse(supplier, status_code=201)


DEMO_SUPPLIERS: dict[str, tuple[str, str]] = {"1": ("MY-DB-ID-90909", "Big Box Store")}
"""Seeded by default: the vendor of the Mercoa sample invoice (number = its accounting custom id)."""

DEFAULT_CLIENTS: dict[str, str] = {"ledgerflow": "sandbox-secret"}
"""OAuth clients the sandbox accepts by default (see :func:`sandbox_connection`)."""


def sandbox_connection(config: ConnectionConfig, base_url: str) -> ConnectionConfig:
    """``config`` pointed at a running sandbox with the default client credentials.

    Options: ``chart_of_accounts`` defaults to the sandbox's chart (:data:`DEFAULT_CHARTS`); the
    connection's own options are kept and win.
    """
    client_id, client_secret = next(iter(DEFAULT_CLIENTS.items()))
    creds = {"client_id": client_id, "client_secret": client_secret, "token_url": base_url.rstrip("/") + TOKEN_PATH}
    wired = point_at(config, base_url, creds)
    data = wired.model_dump()
    data["credentials"] = creds
    data["options"] = {"chart_of_accounts": DEFAULT_CHARTS[0], **data.get("options", {})}
    return ConnectionConfig.model_validate(data)


def create_app(
    *,
    clients: Mapping[str, str] | None = None,
    suppliers: Mapping[str, tuple[str, str]] | None = DEMO_SUPPLIERS,
    accounts: Iterable[str] | None = None,
    charts: Iterable[str] | None = None,
    seed_parties: bool = False,
    clock: Callable[[], datetime] | None = None,
) -> FastAPI:
    """Build the Coupa sandbox FastAPI app.

    Args:
        clients: OAuth client id → secret accepted at ``/oauth2/token``.
        suppliers: seeded suppliers, Coupa id → (supplier number, name).
        accounts: valid values of account ``segment-1`` (GL account); None accepts any.
        charts: charts of accounts (``account-type`` names); None → :data:`DEFAULT_CHARTS`.
        seed_parties: also the suppliers of
            :data:`~ledgerflow.connectors.coupa.reference_sandbox.SEEDED_SUPPLIERS` (one inactive).
        clock: the time records are stamped with (``created-at`` / ``updated-at``; UTC, default the wall clock).

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
    clock = clock or (lambda: datetime.now(UTC))
    stamp = coupa_time(clock())
    times = {"created-at": stamp, "updated-at": stamp}
    for supplier_id, (number, name) in (suppliers or {}).items():
        seed = {"id": int(supplier_id), "number": number, "name": name, "status": "active", **times}
        sandbox.store.put("supplier", supplier_id, seed)
    for supplier in SEEDED_SUPPLIERS if seed_parties else ():
        sandbox.store.put("supplier", str(supplier["id"]), {**supplier, **times})
    chart_names = list(charts if charts is not None else DEFAULT_CHARTS)
    defaults: dict[str, dict[str, Any]] = {
        "account": {"active": True, "account-type": {"id": 1, "name": chart_names[0]}},
        "tax_code": {"active": True, "country": {"code": "US"}},
        "lookup_value": {"active": True, "lookup": {"id": 1, "name": "Project / Cost Code"}, "lookup-id": 1},
    }
    for kind, records in SEEDED_REFERENCE.items():
        for record in records:
            sandbox.store.put(kind, str(record["id"]), {**defaults[kind], **record, **times})
    coupa = _Coupa(
        sandbox,
        frozenset(accounts) if accounts is not None else None,
        frozenset(chart_names),
        clock,
    )
    app = sandbox.app
    app.add_api_route("/api/invoices", coupa.list_invoices, methods=["GET"])
    app.add_api_route("/api/invoices", coupa.create_invoice, methods=["POST"])
    app.add_api_route("/api/invoices/{invoice_id}", coupa.get_invoice, methods=["GET"])
    app.add_api_route("/api/invoices/{invoice_id}", coupa.update_invoice, methods=["PUT"])
    app.add_api_route("/api/invoices/{invoice_id}/submit", coupa.submit_invoice, methods=["PUT"])
    app.add_api_route("/api/suppliers", coupa.list_suppliers, methods=["GET"])
    for kind, resource in (("account", "accounts"), ("tax_code", "tax_codes"), ("lookup_value", "lookup_values")):
        app.add_api_route(f"/api/{resource}", coupa.lister(kind), methods=["GET"])
    app.add_api_route("/api/suppliers", coupa.save_supplier, methods=["POST"])
    app.add_api_route("/api/suppliers/{supplier_id}", coupa.save_supplier, methods=["PUT"])
    return app
