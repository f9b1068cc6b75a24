"""A local Xero sandbox: the Accounting API 2.0 on its real paths, in memory.

What it reproduces (``shared/reference/erp_apis.md`` §2, ``xero_accounting.yaml``,
developer.xero.com "Invoices", "Contacts", "Payments", "OAuth 2.0 limits"):

* ``GET /identity/connect/authorize`` — the consent page (login.xero.com's path), approving at
  once: checks ``client_id``, ``redirect_uri``, ``response_type=code``, the scopes, a PKCE
  ``S256`` challenge and ``state``, and redirects with ``code`` and ``state``
  (:class:`~ledgerflow.connectors.sandbox_kit.OAuthIssuer`);
* ``POST /connect/token`` — OAuth 2.0 token endpoint (identity.xero.com; HTTP Basic client
  authentication): the authorization code (single use, ``code_verifier`` checked; a refresh token
  only with ``offline_access``) and refresh tokens, which rotate;
* ``GET /connections`` — the tenants the token may use;
* ``/api.xro/2.0/…`` with ``Authorization: Bearer`` (401 problem JSON) and ``xero-tenant-id``
  (missing or foreign → 403): ``PUT /Invoices`` (create), ``POST /Invoices/{InvoiceID}``
  (update, ``Status`` ``VOIDED`` for authorised, ``DELETED`` for draft/submitted),
  ``GET /Invoices/{InvoiceID}``, ``GET|PUT /Contacts`` (``where=Name=="…"`` or
  ``IsSupplier==true``; ``If-Modified-Since``, ``order=UpdatedDateUTC ASC``, ``page``/``pageSize``,
  ``includeArchived``; ``IsSupplier``/``IsCustomer`` derived from the bills and sales invoices
  naming a contact), ``GET|PUT /Accounts`` (``If-Modified-Since``), ``GET /TaxRates``,
  ``GET /TrackingCategories``,
  ``POST /Contacts/{ContactID}``, ``PUT /Payments`` (``Invoice.InvoiceID`` of an AUTHORISED
  invoice, a bank ``Account``, ``Amount`` at most the ``AmountDue``: the invoice's ``AmountPaid``
  and ``AmountDue`` follow, ``Status`` ``PAID`` when nothing is due), ``POST /Payments/{PaymentID}``
  (``Status`` ``DELETED``), ``GET /Payments`` (``If-Modified-Since``, ``order``, ``page``/``pageSize``;
  each payment as Xero answers it: ``Date`` as ``/Date(ms+0000)/``, ``PaymentType``, the invoice's
  ``InvoiceID``, ``InvoiceNumber``, ``Type``, ``CurrencyCode`` and ``Contact``),
  ``PUT /PurchaseOrders``, ``POST /PurchaseOrders/{PurchaseOrderID}``, ``GET /Organisation``;
* ``Idempotency-Key`` replay (same key → the original response, no second record);
* per-tenant limits (default 60 per minute, 5 concurrent, 5,000 per day) answered with 429,
  ``Retry-After`` and ``X-Rate-Limit-Problem: minute|day|concurrent``; ``X-MinLimit-Remaining``
  and ``X-DayLimit-Remaining`` on answers (:mod:`ledgerflow.connectors.sandbox_limits`); every
  limit and a ``time_scale`` are arguments of :func:`create_app` so demos and benchmarks can
  raise them or shrink the windows;
* batch creates: ``PUT /Invoices`` (``/Contacts``, ``/Payments``, ``/PurchaseOrders``) takes up to
  :data:`MAX_BATCH` documents; with ``summarizeErrors=false`` it answers 200 with one element per
  document, in order, each ``StatusAttributeString`` ``OK`` or ``ERROR`` (then ``HasErrors`` and
  ``ValidationErrors``), and stores only the good ones; without it (Xero's default) one bad
  document fails the request with 400 and stores nothing. More than :data:`MAX_BATCH` → 400
  (Xero recommends 50 per request; the sandbox holds clients to it);
* several organisations (``tenant_ids``: more ``xero-tenant-id`` values the token may use), each
  with its own limits and idempotency keys (one sandbox for a fleet of connections);
* Xero's error shape (``ErrorNumber``, ``Type``, ``Message``, ``Elements[].ValidationErrors[]``);
* each invoice, contact, payment and purchase order validated against its schema in
  ``xero_accounting.yaml`` with ``jsonschema`` (``$ref`` resolved through ``components``),
  plus Xero's documented rules the schema does not encode: ``Type``, ``Contact`` and
  ``LineItems`` required on invoices, property names known, account codes in the chart;
  validation is skipped cleanly without the spec file;
* ``SubTotal``, ``TotalTax``, ``Total`` and ``AmountDue`` computed from the lines;
* the Xero Projects API (``GET /projects.xro/2.0/projects?page=&pageSize=&states=``, camelCase
  ``{"pagination": {...}, "items": [{"projectId", "contactId", "name", "currencyCode", "status"…}]}``,
  ``pageSize`` 1–500, ``states`` ``INPROGRESS``/``CLOSED``; shape per developer.xero.com
  "Projects", not in ``shared/specs``), seeded with one project with ``seed_parties``;
* a chart of accounts with code ``600394`` (the Mercoa sample's ``glAccountId``), tax rates and
  tracking categories (always), contacts with ``seed_parties``; accounts and contacts carry
  ``UpdatedDateUTC`` for the ERP readers.

Wiring with a connector (tests, ``ledgerflow up``)::

    async with serve(create_app()) as url:
        config = sandbox_connection(ConnectionConfig(erp="xero"), url)
        connector = XeroConnector("xero", config, http, state)
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from ledgerflow.connectors.sandbox_kit import DecimalJSONResponse, OAuthIssuer, Sandbox, point_at, read_json, spec_file
from ledgerflow.connectors.sandbox_limits import QuotaGate, Refusal, Window
from ledgerflow.contracts.common import currency_precision
from ledgerflow.core.settings import ConnectionConfig

__all__ = [
    "AUTHORIZE_PATH",
    "DEFAULT_CREDENTIALS",
    "MAX_BATCH",
    "SCOPES",
    "TOKEN_PATH",
    "SandboxCredentials",
    "XeroSchemas",
    "create_app",
    "default_spec_path",
    "sandbox_connection",
]

TOKEN_PATH = "/connect/token"  # noqa: S105 - a URL path, not a secret
AUTHORIZE_PATH = "/identity/connect/authorize"
"""Path of Xero's consent page (``https://login.xero.com/identity/connect/authorize``)."""
SCOPES = (
    "offline_access",
    "openid",
    "profile",
    "email",
    "accounting.transactions",
    "accounting.transactions.read",
    "accounting.contacts",
    "accounting.contacts.read",
    "accounting.settings",
    "accounting.settings.read",
    "accounting.reports.read",
    "accounting.attachments",
)
"""Scopes a consent may ask for (developer.xero.com "OAuth 2.0 scopes")."""
API = "/api.xro/2.0"
PROJECTS_API = "/projects.xro/2.0"
"""Base path of the Xero Projects API (``https://api.xero.com/projects.xro/2.0``)."""

MAX_BATCH = 50
"""Documents per create request the sandbox takes (Xero: "batch ~50 invoices per request")."""

SEEDED_ACCOUNTS: tuple[dict[str, Any], ...] = (
    {"Code": "600394", "Name": "Job Materials", "Type": "EXPENSE"},
    {"Code": "400", "Name": "Advertising", "Type": "EXPENSE"},
    {"Code": "429", "Name": "General Expenses", "Type": "EXPENSE"},
    {"Code": "200", "Name": "Sales", "Type": "REVENUE"},
    {"Code": "800", "Name": "Accounts Payable", "Type": "CURRLIAB"},
    {"Code": "090", "Name": "Business Bank Account", "Type": "BANK", "EnablePaymentsToAccount": True},
)
"""The sandbox chart of accounts (``600394`` is the Mercoa sample's ``glAccountId``)."""

SEEDED_TAX_RATES: tuple[dict[str, Any], ...] = (
    {"Name": "Tax Exempt", "TaxType": "NONE", "EffectiveRate": Decimal("0"), "Status": "ACTIVE"},
    {"Name": "Tax on Purchases", "TaxType": "INPUT", "EffectiveRate": Decimal("8.875"), "Status": "ACTIVE"},
    {"Name": "Tax on Sales", "TaxType": "OUTPUT", "EffectiveRate": Decimal("8.875"), "Status": "ACTIVE"},
)
"""Tax rates (``GET /TaxRates``) every sandbox starts with (a US organisation's defaults)."""

SEEDED_TRACKING: tuple[dict[str, Any], ...] = (
    {"Name": "Region", "Status": "ACTIVE", "Options": ["North", "South"]},
    {"Name": "Cost Code", "Status": "ACTIVE", "Options": ["03-3000 Concrete", "09-9000 Finishes"]},
)
"""Tracking categories (Xero allows two active ones) and their options."""

SEEDED_CONTACTS: tuple[dict[str, Any], ...] = (
    {"Name": "Bayside Concrete Supply", "IsSupplier": True, "IsCustomer": False},
    {"Name": "Northwind Electrical", "IsSupplier": True, "IsCustomer": False},
    {"Name": "Harbour Scaffolding Ltd", "IsSupplier": True, "IsCustomer": False, "ContactStatus": "ARCHIVED"},
    {"Name": "Riverside Developments", "IsSupplier": False, "IsCustomer": True},
)
"""Contacts a sandbox starts with when built with ``seed_parties=True``."""

REQUIRED: dict[str, tuple[str, ...]] = {
    "Invoice": ("Type", "Contact", "LineItems"),
    "PurchaseOrder": ("Contact", "LineItems"),
    "Contact": ("Name",),
    "Payment": ("Invoice", "Account", "Amount"),
}
"""Fields Xero documents as required (the OpenAPI schemas list none)."""


@dataclass(frozen=True, slots=True)
class SandboxCredentials:
    """Credentials the sandbox accepts (and the connection config that goes with them)."""

    client_id: str = "ledgerflow-xero-sandbox"
    client_secret: str = "xero-sandbox-secret"  # noqa: S105 - a local sandbox's fixed demo secret
    refresh_token: str = "xero-sandbox-refresh-token"  # noqa: S105
    tenant_id: str = "7a2f4bde-1c8e-4c55-9c1e-5d2b6b0f6a10"


DEFAULT_CREDENTIALS = SandboxCredentials()


def default_spec_path() -> Path:
    """``$LEDGERFLOW_SPECS_DIR/xero_accounting.yaml``, else ``../shared/specs/xero_accounting.yaml``."""
    return spec_file("xero_accounting.yaml")


def sandbox_connection(
    config: ConnectionConfig, base_url: str, credentials: SandboxCredentials = DEFAULT_CREDENTIALS
) -> ConnectionConfig:
    """``config`` pointed at a running sandbox: its base URL, token URL and credentials (options kept)."""
    return point_at(config, base_url, {**asdict(credentials), "token_url": base_url.rstrip("/") + TOKEN_PATH})


# --------------------------------------------------------------------------------------------
# xero_accounting.yaml validation


class XeroSchemas:
    """jsonschema validators for schemas of ``xero_accounting.yaml`` (``$ref`` through ``components``)."""

    def __init__(self, path: Path) -> None:
        import jsonschema
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        with path.open(encoding="utf-8") as fh:
            spec = yaml.load(fh, Loader=loader)  # noqa: S506 - a safe loader
        self.components = spec["components"]
        self._jsonschema = jsonschema
        self._validators: dict[str, Any] = {}

    def properties(self, name: str) -> set[str]:
        """Property names of schema ``name``."""
        return set(self.components["schemas"].get(name, {}).get("properties", {}))

    def validate(self, name: str, document: Any, *, partial: bool = False) -> list[str]:
        """Messages for ``document`` against schema ``name``, documented required fields and known names.

        ``partial`` (an update naming only changed fields) skips the required-field check.
        """
        required = [] if partial else list(REQUIRED.get(name, ()))
        cache_key = f"{name}:{partial}"
        validator = self._validators.get(cache_key)
        if validator is None:
            schema = {
                "allOf": [{"$ref": f"#/components/schemas/{name}"}, {"required": required}],
                "components": self.components,
            }
            validator = self._jsonschema.Draft7Validator(schema)
            self._validators[cache_key] = validator
        messages = []
        for error in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path)):
            where = ".".join(str(p) for p in error.absolute_path)
            messages.append(f"{name}{'.' + where if where else ''}: {error.message}")
        if isinstance(document, dict):
            unknown = sorted(set(document) - self.properties(name))
            messages += [f"{name}: unknown element {key!r}" for key in unknown]
            if name in ("Invoice", "PurchaseOrder"):
                known = self.properties("LineItem")
                for i, line in enumerate(document.get("LineItems") or []):
                    if isinstance(line, dict):
                        messages += [f"{name}.LineItems.{i}: unknown element {k!r}" for k in sorted(set(line) - known)]
        return messages


@functools.lru_cache(maxsize=4)
def _load_schemas(path: str) -> XeroSchemas:
    return XeroSchemas(Path(path))


# --------------------------------------------------------------------------------------------
# Shapes


def _ms_date() -> str:
    return f"/Date({int(time.time() * 1000)}+0000)/"


def _validation(messages: list[str], element: dict[str, Any] | None = None) -> Response:
    body = {
        "ErrorNumber": 10,
        "Type": "ValidationException",
        "Message": "A validation exception occurred",
        "Elements": [{**(element or {}), "ValidationErrors": [{"Message": m} for m in messages]}],
    }
    return DecimalJSONResponse(body, status_code=400)


def _not_found(what: str) -> Response:
    body = {"ErrorNumber": 404, "Type": "ObjectNotFoundException", "Message": f"{what} could not be found"}
    return DecimalJSONResponse(body, status_code=404)


def _problem(status: int, title: str, detail: str) -> Response:
    body = {"Type": None, "Title": title, "Status": status, "Detail": detail, "Instance": str(uuid.uuid4())}
    return DecimalJSONResponse(body, status_code=status)


def _fault_body(status: int) -> Any:
    if status == 429:
        return {"Title": "Too Many Requests", "Status": 429, "Detail": "Rate limit exceeded"}
    return {"ErrorNumber": 500, "Type": "InternalServerError", "Message": f"An error occurred in Xero ({status})"}


def _fault_headers(status: int) -> dict[str, str]:
    return {"X-Rate-Limit-Problem": "minute"} if status == 429 else {}


def _item_errors(document: Any, refused: Response) -> dict[str, Any]:
    """One document of a ``summarizeErrors=false`` answer that was not stored: itself plus its errors."""
    body = json.loads(bytes(refused.body))
    elements = body.get("Elements") or [{}]
    messages = elements[0].get("ValidationErrors") or [{"Message": body.get("Message", "validation error")}]
    return {
        **(document if isinstance(document, dict) else {}),
        "HasErrors": True,
        "StatusAttributeString": "ERROR",
        "ValidationErrors": messages,
    }


def _money(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


def _envelope(key: str, body: Any) -> list[Any] | None:
    """``{"Invoices": [...]}`` or a bare object → the list of documents."""
    if isinstance(body, dict) and isinstance(body.get(key), list):
        return list(body[key])
    if isinstance(body, dict) and key not in body:
        return [body]
    return None


def _total(kind: str, record: dict[str, Any]) -> Decimal | None:
    value = record.get("Total", record.get("Amount"))
    return Decimal(str(value)) if value is not None else None


_WHERE = re.compile(r'^\s*(\w+)\s*==\s*(?:"((?:[^"\\]|\\.)*)"|(true|false))\s*$', re.IGNORECASE)


def _updated_ms(record: dict[str, Any]) -> int:
    match = re.match(r"^/Date\((-?\d+)", str(record.get("UpdatedDateUTC", "")))
    return int(match.group(1)) if match else 0


def _parse_since(value: str) -> int:
    """``If-Modified-Since`` (ISO 8601, UTC when no offset, or an HTTP-date) → epoch milliseconds.

    Raises:
        ValueError: neither form.
    """
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = parsedate_to_datetime(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


class _Xero:
    """Route handlers over one :class:`Sandbox`."""

    def __init__(
        self,
        sandbox: Sandbox,
        credentials: SandboxCredentials,
        schemas: XeroSchemas | None,
        *,
        minute_limit: int,
        concurrent_limit: int,
        latency: float,
        day_limit: int = 5000,
        time_scale: float = 1.0,
        seed_parties: bool = False,
        tenant_ids: Collection[str] = (),
    ) -> None:
        self.sandbox = sandbox
        self.tenants = frozenset({credentials.tenant_id, *tenant_ids})
        self.store = sandbox.store
        self.credentials = credentials
        self.schemas = schemas
        self.latency = latency
        self._paying: dict[str, Decimal] = {}
        """Invoice id → amount of the payments earlier in the create request being handled."""
        self.quota = QuotaGate(
            [Window("minute", minute_limit, 60.0), Window("day", day_limit, 86_400.0)],
            concurrent=concurrent_limit,
            time_scale=time_scale,
        )
        stamp = _ms_date()
        for account in SEEDED_ACCOUNTS:
            self.store.put(
                "account",
                account["Code"],
                {**account, "AccountID": str(uuid.uuid4()), "Status": "ACTIVE", "UpdatedDateUTC": stamp},
            )
        for rate in SEEDED_TAX_RATES:
            self.store.put("tax_rate", rate["TaxType"], dict(rate))
        for category in SEEDED_TRACKING:
            category_id = str(uuid.uuid4())
            options = [
                {"TrackingOptionID": str(uuid.uuid4()), "Name": name, "Status": "ACTIVE"}
                for name in category["Options"]
            ]
            self.store.put(
                "tracking_category",
                category_id,
                {**category, "TrackingCategoryID": category_id, "Options": options},
            )
        if seed_parties:
            for contact in SEEDED_CONTACTS:
                contact_id = str(uuid.uuid4())
                seeded = {"ContactStatus": "ACTIVE", **contact, "ContactID": contact_id, "UpdatedDateUTC": stamp}
                self.store.put("contact", contact_id, seeded)
                if contact["Name"] == "Riverside Developments":
                    project_id = str(uuid.uuid4())
                    project = {
                        "projectId": project_id,
                        "contactId": contact_id,
                        "name": "Harbour St Tower",
                        "currencyCode": "USD",
                        "minutesLogged": 0,
                        "status": "INPROGRESS",
                        "estimate": {"currency": "USD", "value": Decimal("250000.00")},
                    }
                    self.store.put("project", project_id, project)

    # ------------------------------------------------------------------ gatekeeping

    def _authorised(self, request: Request) -> Response | None:
        if not self.sandbox.issuer.verify(request.headers.get("authorization")):
            return _problem(401, "Unauthorized", "AuthenticationUnsuccessful")
        if request.headers.get("xero-tenant-id") not in self.tenants:
            return _problem(403, "Forbidden", "AuthorizationUnsuccessful")
        return None

    async def _limited(self, request: Request, handler: Callable[[], Awaitable[Response]]) -> Response:
        denied = self._authorised(request)
        if denied is not None:
            return denied
        tenant = request.headers["xero-tenant-id"]
        refused = self.quota.admit(tenant)
        if refused is not None:
            return self._throttled(refused, tenant)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            response = await handler()
        finally:
            self.quota.release(tenant)
        response.headers.update(self._remaining(tenant))
        return response

    def _remaining(self, tenant: str) -> dict[str, str]:
        return {
            "X-MinLimit-Remaining": str(self.quota.remaining(tenant, "minute")),
            "X-DayLimit-Remaining": str(self.quota.remaining(tenant, "day")),
        }

    def _throttled(self, refused: Refusal, tenant: str) -> Response:
        body = {"Title": "Too Many Requests", "Status": 429, "Detail": f"Rate limit exceeded: {refused.problem}"}
        headers = {"Retry-After": refused.header(), "X-Rate-Limit-Problem": refused.problem, **self._remaining(tenant)}
        return DecimalJSONResponse(body, status_code=429, headers=headers)

    async def _idempotent(self, request: Request, handler: Callable[[], Awaitable[Response]]) -> Response:
        key = request.headers.get("idempotency-key")
        return await self.store.idempotent(request.headers.get("xero-tenant-id", ""), key, handler)

    async def _body(self, request: Request) -> Any:
        try:
            return await read_json(request)
        except ValueError:
            return None

    # ------------------------------------------------------------------ routes

    async def connections(self, request: Request) -> Response:
        if not self.sandbox.issuer.verify(request.headers.get("authorization")):
            return _problem(401, "Unauthorized", "AuthenticationUnsuccessful")
        tenant = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, self.credentials.tenant_id)),
            "tenantId": self.credentials.tenant_id,
            "tenantType": "ORGANISATION",
            "tenantName": "ledgerflow sandbox organisation",
        }
        return DecimalJSONResponse([tenant])

    async def organisation(self, request: Request) -> Response:
        async def handler() -> Response:
            org = {"Name": "ledgerflow sandbox organisation", "BaseCurrency": "USD", "CountryCode": "US"}
            return DecimalJSONResponse({"Organisations": [org]})

        return await self._limited(request, handler)

    async def put_invoices(self, request: Request) -> Response:
        return await self._create(request, "Invoices", "Invoice", "invoice", "InvoiceID")

    async def put_purchase_orders(self, request: Request) -> Response:
        return await self._create(request, "PurchaseOrders", "PurchaseOrder", "purchase_order", "PurchaseOrderID")

    async def put_contacts(self, request: Request) -> Response:
        return await self._create(request, "Contacts", "Contact", "contact", "ContactID")

    async def put_payments(self, request: Request) -> Response:
        return await self._create(request, "Payments", "Payment", "payment", "PaymentID")

    async def _create(self, request: Request, plural: str, schema: str, kind: str, id_field: str) -> Response:
        async def handler() -> Response:
            documents = _envelope(plural, await self._body(request))
            if not documents:
                return _validation([f"The request body must carry {plural}"])
            if len(documents) > MAX_BATCH:
                return _validation([f"A request can create at most {MAX_BATCH} {plural}; it carried {len(documents)}"])
            summarize = request.query_params.get("summarizeErrors", "true").lower() != "false"
            answered: list[dict[str, Any]] = []
            self._paying = {}  # what earlier payments of this request already take off each invoice
            for document in documents:
                result = self._build(schema, kind, id_field, document, None)
                if kind == "payment" and not isinstance(result, Response):
                    invoice_id = str(result["Invoice"]["InvoiceID"])
                    self._paying[invoice_id] = self._paying.get(invoice_id, Decimal(0)) + _money(result["Amount"])
                if isinstance(result, Response):
                    if summarize:  # Xero's default: one bad document fails the request, nothing is stored
                        return result
                    answered.append(_item_errors(document, result))
                    continue
                answered.append(result)
            for record in answered:
                if record.get("HasErrors"):
                    continue
                self.store.put(kind, record[id_field], record)
                if kind == "payment":
                    self._apply_payment(record)
                if not summarize:
                    record["StatusAttributeString"] = "OK"
            return DecimalJSONResponse(self._answer(plural, answered))

        return await self._limited(request, lambda: self._idempotent(request, handler))

    async def post_invoice(self, request: Request, record_id: str) -> Response:
        return await self._update(request, record_id, "Invoices", "Invoice", "invoice", "InvoiceID")

    async def post_purchase_order(self, request: Request, record_id: str) -> Response:
        return await self._update(
            request, record_id, "PurchaseOrders", "PurchaseOrder", "purchase_order", "PurchaseOrderID"
        )

    async def post_contact(self, request: Request, record_id: str) -> Response:
        return await self._update(request, record_id, "Contacts", "Contact", "contact", "ContactID")

    async def post_payment(self, request: Request, record_id: str) -> Response:
        async def handler() -> Response:
            payment = self.store.get("payment", record_id)
            if payment is None:
                return _not_found("Payment")
            documents = _envelope("Payments", await self._body(request)) or [{}]
            if documents[0].get("Status") != "DELETED":
                return _validation(["Payments can only be deleted (Status DELETED)"])
            if payment.get("Status") != "DELETED":
                payment["Status"] = "DELETED"
                payment["UpdatedDateUTC"] = _ms_date()
                invoice = self.store.get("invoice", payment["Invoice"]["InvoiceID"])
                if invoice is not None:
                    invoice["AmountPaid"] = _money(invoice.get("AmountPaid")) - _money(payment["Amount"])
                    invoice["AmountDue"] = _money(invoice["Total"]) - invoice["AmountPaid"]
                    invoice["Status"] = "AUTHORISED"
            return DecimalJSONResponse(self._answer("Payments", [payment]))

        return await self._limited(request, lambda: self._idempotent(request, handler))

    async def _update(
        self, request: Request, record_id: str, plural: str, schema: str, kind: str, id_field: str
    ) -> Response:
        async def handler() -> Response:
            current = self.store.get(kind, record_id)
            if current is None:
                return _not_found(schema)
            documents = _envelope(plural, await self._body(request))
            if not documents:
                return _validation([f"The request body must carry {plural}"])
            result = self._build(schema, kind, id_field, documents[0], current)
            if isinstance(result, Response):
                return result
            self.store.put(kind, record_id, result)
            return DecimalJSONResponse(self._answer(plural, [result]))

        return await self._limited(request, lambda: self._idempotent(request, handler))

    async def get_one(self, request: Request, record_id: str, plural: str, kind: str, schema: str) -> Response:
        async def handler() -> Response:
            record = self.store.get(kind, record_id)
            return _not_found(schema) if record is None else DecimalJSONResponse(self._answer(plural, [record]))

        return await self._limited(request, handler)

    async def get_invoice(self, request: Request, record_id: str) -> Response:
        return await self.get_one(request, record_id, "Invoices", "invoice", "Invoice")

    async def get_purchase_order(self, request: Request, record_id: str) -> Response:
        return await self.get_one(request, record_id, "PurchaseOrders", "purchase_order", "PurchaseOrder")

    async def get_contacts(self, request: Request, where: str | None = None) -> Response:
        async def handler() -> Response:
            contacts = [self._with_roles(c) for c in self.store.all("contact")]
            if request.query_params.get("includeArchived", "").lower() != "true":
                contacts = [c for c in contacts if c.get("ContactStatus") != "ARCHIVED"]
            if where:
                match = _WHERE.match(where)
                if match is None:
                    body = {
                        "ErrorNumber": 16,
                        "Type": "QueryParseException",
                        "Message": f"Cannot parse where {where!r}",
                    }
                    return DecimalJSONResponse(body, status_code=400)
                field, raw, flag = match.groups()
                if flag is not None:
                    contacts = [c for c in contacts if bool(c.get(field)) is (flag.lower() == "true")]
                else:
                    wanted = re.sub(r"\\(.)", r"\1", raw)
                    contacts = [c for c in contacts if str(c.get(field, "")) == wanted]
            listed = self._listed(request, contacts)
            if isinstance(listed, Response):
                return listed
            return DecimalJSONResponse(self._answer("Contacts", listed))

        return await self._limited(request, handler)

    def _with_roles(self, contact: dict[str, Any]) -> dict[str, Any]:
        """``contact`` with ``IsSupplier`` / ``IsCustomer`` as Xero derives them.

        Set when sent, or when a bill or purchase order (supplier) or a sales invoice (customer) names it.
        """
        contact_id = contact.get("ContactID")

        def named(kind: str, types: tuple[str, ...]) -> bool:
            return any(
                (r.get("Contact") or {}).get("ContactID") == contact_id and (not types or r.get("Type") in types)
                for r in self.store.all(kind)
            )

        supplier = bool(contact.get("IsSupplier")) or named("invoice", ("ACCPAY",)) or named("purchase_order", ())
        customer = bool(contact.get("IsCustomer")) or named("invoice", ("ACCREC",))
        return {**contact, "IsSupplier": supplier, "IsCustomer": customer}

    @staticmethod
    def _listed(request: Request, records: list[dict[str, Any]]) -> list[dict[str, Any]] | Response:
        """``records`` as a list request asks for them.

        Filtered by ``If-Modified-Since`` (changed at or after it), ordered by ``order``
        (``UpdatedDateUTC ASC|DESC``) and cut to ``page`` (1-based) of ``pageSize`` (default 100,
        at most 1000) when ``page`` is given.
        """
        since_raw = request.headers.get("if-modified-since")
        if since_raw:
            try:
                since = _parse_since(since_raw)
            except ValueError:
                return _validation([f"If-Modified-Since {since_raw!r} is not a date"])
            records = [r for r in records if _updated_ms(r) >= since]
        order = request.query_params.get("order", "")
        if order.split(" ")[0] == "UpdatedDateUTC":
            records = sorted(records, key=_updated_ms, reverse=order.upper().endswith("DESC"))
        page = request.query_params.get("page")
        if page is not None:
            try:
                number = max(int(page), 1)
                size = min(max(int(request.query_params.get("pageSize", "100")), 1), 1000)
            except ValueError:
                return _validation(["page and pageSize must be integers"])
            records = records[(number - 1) * size : number * size]
        return records

    async def get_payments(self, request: Request) -> Response:
        """``GET /Payments``: payments as Xero lists them (``If-Modified-Since``, ``order``, ``page``)."""

        async def handler() -> Response:
            listed = self._listed(request, self.store.all("payment"))
            if isinstance(listed, Response):
                return listed
            return DecimalJSONResponse(self._answer("Payments", [self._payment_view(p) for p in listed]))

        return await self._limited(request, handler)

    def _payment_view(self, payment: dict[str, Any]) -> dict[str, Any]:
        """``payment`` as ``GET /Payments`` answers it: the invoice summary, ``PaymentType``, a JSON date."""
        invoice = self.store.get("invoice", str((payment.get("Invoice") or {}).get("InvoiceID"))) or {}
        kind = invoice.get("Type")
        summary = {
            "InvoiceID": invoice.get("InvoiceID"),
            "InvoiceNumber": invoice.get("InvoiceNumber"),
            "Type": kind,
            "CurrencyCode": invoice.get("CurrencyCode") or "USD",
            "Contact": invoice.get("Contact"),
        }
        view = {**payment, "Invoice": {k: v for k, v in summary.items() if v is not None}}
        view["PaymentType"] = "ACCPAYPAYMENT" if kind == "ACCPAY" else "ACCRECPAYMENT"
        raw_date = payment.get("Date")
        if isinstance(raw_date, str) and re.match(r"^\d{4}-\d{2}-\d{2}", raw_date):
            stamp = datetime.fromisoformat(raw_date[:10]).replace(tzinfo=UTC)
            view["Date"] = f"/Date({int(stamp.timestamp() * 1000)}+0000)/"
        return view

    async def get_projects(self, request: Request) -> Response:
        """``GET /projects.xro/2.0/projects``: the Xero Projects API list (``page``, ``pageSize`` ≤ 500, ``states``)."""

        async def handler() -> Response:
            try:
                page = int(request.query_params.get("page", "1"))
                size = int(request.query_params.get("pageSize", "50"))
            except ValueError:
                return _problem(400, "Bad Request", "page and pageSize must be integers")
            if page < 1 or not 1 <= size <= 500:
                return _problem(400, "Bad Request", "page must be at least 1 and pageSize between 1 and 500")
            projects = self.store.all("project")
            states = request.query_params.get("states")
            if states:
                wanted = {state.strip().upper() for state in states.split(",")}
                if not wanted <= {"INPROGRESS", "CLOSED"}:
                    return _problem(400, "Bad Request", f"states must be INPROGRESS and/or CLOSED, not {states!r}")
                projects = [p for p in projects if p.get("status") in wanted]
            count = len(projects)
            pagination = {"page": page, "pageSize": size, "pageCount": max(1, -(-count // size)), "itemCount": count}
            items = projects[(page - 1) * size : page * size]
            return DecimalJSONResponse({"pagination": pagination, "items": items})

        return await self._limited(request, handler)

    async def get_accounts(self, request: Request) -> Response:
        async def handler() -> Response:
            listed = self._listed(request, self.store.all("account"))
            if isinstance(listed, Response):
                return listed
            return DecimalJSONResponse(self._answer("Accounts", listed))

        return await self._limited(request, handler)

    async def put_account(self, request: Request) -> Response:
        """``PUT /Accounts``: one account (``Code``, ``Name``, ``Type``); a code in use → 400."""

        async def handler() -> Response:
            body = await self._body(request)
            if not isinstance(body, dict) or not body.get("Code") or not body.get("Name") or not body.get("Type"):
                return _validation(["An account needs Code, Name and Type"])
            if self.store.get("account", str(body["Code"])) is not None:
                return _validation([f"Please enter a unique Code. {body['Code']} is already in use."])
            account = {
                **body,
                "AccountID": str(uuid.uuid4()),
                "Status": "ACTIVE",
                "UpdatedDateUTC": _ms_date(),
            }
            self.store.put("account", str(body["Code"]), account)
            return DecimalJSONResponse(self._answer("Accounts", [account]))

        return await self._limited(request, lambda: self._idempotent(request, handler))

    async def get_tax_rates(self, request: Request) -> Response:
        async def handler() -> Response:
            return DecimalJSONResponse(self._answer("TaxRates", self.store.all("tax_rate")))

        return await self._limited(request, handler)

    async def get_tracking_categories(self, request: Request) -> Response:
        async def handler() -> Response:
            categories = self.store.all("tracking_category")
            if request.query_params.get("includeArchived", "").lower() != "true":
                categories = [c for c in categories if c.get("Status") != "ARCHIVED"]
            return DecimalJSONResponse(self._answer("TrackingCategories", categories))

        return await self._limited(request, handler)

    # ------------------------------------------------------------------ documents

    @staticmethod
    def _answer(plural: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "Id": str(uuid.uuid4()),
            "Status": "OK",
            "ProviderName": "ledgerflow",
            "DateTimeUTC": _ms_date(),
            plural: records,
        }

    def _build(
        self, schema: str, kind: str, id_field: str, document: Any, current: dict[str, Any] | None
    ) -> dict[str, Any] | Response:
        if not isinstance(document, dict):
            return _validation([f"{schema} must be an object"])
        if self.schemas is not None:
            problems = self.schemas.validate(schema, document, partial=current is not None)
            if problems:
                return _validation(problems, document)
        merged = {**(current or {}), **document}
        if current is not None and "Status" in document:
            problem = self._status_change(schema, current, str(document["Status"]))
            if problem:
                return _validation([problem], document)
        if schema in ("Invoice", "PurchaseOrder"):
            problem = self._contact_and_lines(merged)
            if problem:
                return _validation([problem], document)
        if schema == "Contact":
            clash = self.store.find(
                "contact",
                lambda c: (
                    c.get("Name") == merged.get("Name")
                    and c["ContactID"] != merged.get("ContactID")
                    and c.get("ContactStatus") != "ARCHIVED"
                ),
            )
            if clash:
                return _validation(
                    [
                        f"The contact name {merged.get('Name')} is already assigned to another contact. "
                        "The contact name must be unique across all active contacts."
                    ],
                    document,
                )
            merged.setdefault("ContactStatus", "ACTIVE")
        if schema == "Payment":
            problem = self._payment_problem(merged)
            if problem:
                return _validation([problem], document)
            merged.setdefault("Status", "AUTHORISED")
        merged[id_field] = current[id_field] if current is not None else str(uuid.uuid4())
        merged["UpdatedDateUTC"] = _ms_date()
        return merged

    @staticmethod
    def _status_change(schema: str, current: dict[str, Any], status: str) -> str | None:
        now = current.get("Status", "DRAFT")
        if status == now:
            return None
        if status == "VOIDED" and now != "AUTHORISED":
            return f"{schema} not of valid status for voiding (status {now}); delete drafts instead"
        if status == "VOIDED" and _money(current.get("AmountPaid")) > 0:
            return "Invoice has payments applied: remove them before voiding"
        if status == "DELETED" and now not in ("DRAFT", "SUBMITTED"):
            return f"{schema} not of valid status for deletion (status {now}); void authorised documents instead"
        return None

    def _contact_and_lines(self, document: dict[str, Any]) -> str | None:
        contact = document.get("Contact") or {}
        contact_id = contact.get("ContactID")
        if contact_id:
            found = self.store.get("contact", str(contact_id))
            if found is None:
                return f"Contact with ContactID {contact_id} could not be found"
            document["Contact"] = {"ContactID": found["ContactID"], "Name": found["Name"]}
        elif contact.get("Name"):
            matches = self.store.find("contact", lambda c: c.get("Name") == contact["Name"])
            if not matches:  # Xero creates a contact named on a document
                created = {"ContactID": str(uuid.uuid4()), "Name": contact["Name"], "ContactStatus": "ACTIVE"}
                self.store.put("contact", created["ContactID"], created)
                matches = [created]
            document["Contact"] = {"ContactID": matches[0]["ContactID"], "Name": matches[0]["Name"]}
        else:
            return "A Contact must be specified with either ContactID or Name"
        subtotal = Decimal(0)
        tax = Decimal(0)
        lines = []
        try:
            unit = Decimal(1).scaleb(-currency_precision(str(document.get("CurrencyCode") or "USD")))
        except (KeyError, ValueError):
            return f"Currency code '{document.get('CurrencyCode')}' is not valid"
        for line in document.get("LineItems") or []:
            code = line.get("AccountCode")
            if code is not None and self.store.get("account", str(code)) is None:
                return f"Account code '{code}' is not a valid code for this document."
            account_id = line.get("AccountID")
            known_ids = {a["AccountID"] for a in self.store.all("account")}
            if account_id is not None and account_id not in known_ids:
                return f"Account ID '{account_id}' is not valid for this document."
            if code is None and account_id is None:
                return "An Account Code must be specified for each line item"
            quantity = _money(line.get("Quantity", 1))
            discounted = line.get("DiscountAmount") is not None or line.get("DiscountRate") is not None
            if discounted and document.get("Type") != "ACCREC":
                # xero_accounting.yaml LineItem.DiscountRate: "only supported on ACCREC invoices".
                return "Discounts are only supported on sales invoices (ACCREC)"
            gross = quantity * _money(line.get("UnitAmount"))
            if line.get("DiscountRate") is not None:
                gross = gross * (100 - _money(line["DiscountRate"])) / 100
            computed = (gross - _money(line.get("DiscountAmount"))).quantize(unit, ROUND_HALF_UP)
            amount = _money(line["LineAmount"]) if line.get("LineAmount") is not None else computed
            if line.get("UnitAmount") is not None and amount != computed:
                return f"Line amount {amount} does not equal quantity × unit amount ({computed})"
            tax_amount = _money(line.get("TaxAmount"))
            lines.append({**line, "LineItemID": line.get("LineItemID") or str(uuid.uuid4()), "LineAmount": amount})
            subtotal += amount
            tax += tax_amount
        document["LineItems"] = lines
        if document.get("LineAmountTypes") == "NoTax":
            # Xero ignores line tax on a NoTax document: the tax is not booked.
            tax = Decimal(0)
        if document.get("LineAmountTypes") == "Inclusive":
            # Line amounts include their tax: the total is their sum, the subtotal what is left.
            document["SubTotal"] = subtotal - tax
            document["TotalTax"] = tax
            document["Total"] = subtotal
        else:
            document["SubTotal"] = subtotal
            document["TotalTax"] = tax
            document["Total"] = subtotal + tax
        document.setdefault("Status", "DRAFT")
        document.setdefault("LineAmountTypes", "Exclusive")
        if "Type" in document:
            document["AmountPaid"] = _money(document.get("AmountPaid"))
            document["AmountDue"] = document["Total"] - document["AmountPaid"]
        return None

    def _payment_problem(self, payment: dict[str, Any]) -> str | None:
        invoice_id = (payment.get("Invoice") or {}).get("InvoiceID")
        invoice = self.store.get("invoice", str(invoice_id)) if invoice_id else None
        if invoice is None:
            return f"Invoice {invoice_id} could not be found"
        if invoice.get("Status") not in ("AUTHORISED",):
            return "Payment can only be applied to an AUTHORISED invoice"
        account = payment.get("Account") or {}
        found = self.store.get("account", str(account.get("Code"))) if account.get("Code") else None
        if found is None and account.get("AccountID"):
            matches = self.store.find("account", lambda a: a["AccountID"] == account["AccountID"])
            found = matches[0] if matches else None
        if found is None or not found.get("EnablePaymentsToAccount"):
            return "Account is not a bank account or does not accept payments"
        amount = _money(payment.get("Amount"))
        if amount <= 0:
            return "Payment amount must be greater than zero"
        if amount > _money(invoice.get("AmountDue")) - self._paying.get(str(invoice_id), Decimal(0)):
            return "Payment amount exceeds the amount outstanding on this document"
        return None

    def _apply_payment(self, payment: dict[str, Any]) -> None:
        invoice = self.store.get("invoice", str(payment["Invoice"]["InvoiceID"]))
        if invoice is None:
            return
        invoice["AmountPaid"] = _money(invoice.get("AmountPaid")) + _money(payment["Amount"])
        invoice["AmountDue"] = _money(invoice["Total"]) - invoice["AmountPaid"]
        if invoice["AmountDue"] == 0:
            invoice["Status"] = "PAID"


def create_app(
    *,
    credentials: SandboxCredentials = DEFAULT_CREDENTIALS,
    spec_path: Path | None = None,
    minute_limit: int = 60,
    concurrent_limit: int = 5,
    day_limit: int = 5000,
    time_scale: float = 1.0,
    latency: float = 0.0,
    access_ttl: int = 1800,
    seed_parties: bool = False,
    tenant_ids: Collection[str] = (),
) -> FastAPI:
    """Build the Xero sandbox app.

    Args:
        credentials: client, refresh token and tenant the sandbox accepts.
        spec_path: ``xero_accounting.yaml``; default :func:`default_spec_path`; validation is skipped if absent.
        minute_limit: API calls per tenant per rolling minute (Xero: 60).
        concurrent_limit: API calls per tenant in flight at once (Xero: 5).
        day_limit: API calls per tenant per rolling day (Xero: 5,000).
        time_scale: quota seconds per real second: the minute and day windows last
            ``60 / time_scale`` and ``86400 / time_scale`` real seconds (benchmarks; 1 = real time).
        latency: seconds each API call takes (to make concurrency observable in tests and demos).
        access_ttl: lifetime of access tokens, seconds (Xero: 1800).
        seed_parties: also start with :data:`SEEDED_CONTACTS` (off by default: booking tests
            count the contacts they create). Accounts, tax rates and tracking categories are
            always seeded.
        tenant_ids: more organisations (``xero-tenant-id``) served beside ``credentials.tenant_id``, each
            with its own limits and idempotency keys (they share the records): one sandbox for a fleet.

    The :class:`~ledgerflow.connectors.sandbox_kit.Sandbox` is ``app.state.sandbox``; whether bodies are
    validated is ``app.state.spec_validation``. Stored invoices are records of kind ``invoice``.
    """
    issuer = OAuthIssuer(
        {credentials.client_id: credentials.client_secret},
        consent_tokens=[credentials.refresh_token],
        access_ttl=access_ttl,
        scopes=SCOPES,
        client_auth="basic",
        offline_scope="offline_access",
    )
    sandbox = Sandbox(
        "Xero sandbox",
        issuer=issuer,
        token_path=TOKEN_PATH,
        authorize_path=AUTHORIZE_PATH,
        total_of=_total,
        fault_body=_fault_body,
        fault_headers=_fault_headers,
    )
    path = spec_path or default_spec_path()
    schemas = _load_schemas(str(path)) if path.is_file() else None
    xero = _Xero(
        sandbox,
        credentials,
        schemas,
        minute_limit=minute_limit,
        concurrent_limit=concurrent_limit,
        latency=latency,
        day_limit=day_limit,
        time_scale=time_scale,
        seed_parties=seed_parties,
        tenant_ids=tenant_ids,
    )
    app = sandbox.app
    app.state.spec_validation = schemas is not None
    app.state.quota = xero.quota
    app.add_api_route("/connections", xero.connections, methods=["GET"])
    app.add_api_route(API + "/Organisation", xero.organisation, methods=["GET"])
    app.add_api_route(API + "/Invoices", xero.put_invoices, methods=["PUT"])
    app.add_api_route(API + "/Invoices/{record_id}", xero.post_invoice, methods=["POST"])
    app.add_api_route(API + "/Invoices/{record_id}", xero.get_invoice, methods=["GET"])
    app.add_api_route(API + "/PurchaseOrders", xero.put_purchase_orders, methods=["PUT"])
    app.add_api_route(API + "/PurchaseOrders/{record_id}", xero.post_purchase_order, methods=["POST"])
    app.add_api_route(API + "/PurchaseOrders/{record_id}", xero.get_purchase_order, methods=["GET"])
    app.add_api_route(API + "/Contacts", xero.put_contacts, methods=["PUT"])
    app.add_api_route(API + "/Contacts", xero.get_contacts, methods=["GET"])
    app.add_api_route(API + "/Contacts/{record_id}", xero.post_contact, methods=["POST"])
    app.add_api_route(API + "/Accounts", xero.get_accounts, methods=["GET"])
    app.add_api_route(API + "/Accounts", xero.put_account, methods=["PUT"])
    app.add_api_route(API + "/TaxRates", xero.get_tax_rates, methods=["GET"])
    app.add_api_route(API + "/TrackingCategories", xero.get_tracking_categories, methods=["GET"])
    app.add_api_route(API + "/Payments", xero.put_payments, methods=["PUT"])
    app.add_api_route(API + "/Payments", xero.get_payments, methods=["GET"])
    app.add_api_route(PROJECTS_API + "/projects", xero.get_projects, methods=["GET"])
    app.add_api_route(API + "/Payments/{record_id}", xero.post_payment, methods=["POST"])
    return app
