"""A local SAP S/4HANA ``API_SUPPLIERINVOICE_PROCESS_SRV`` sandbox: CSRF handshake, EDMX validation.

What it reproduces (reference ``erp_apis.md`` §4):

* SAP Gateway CSRF: any ``GET`` under the service with ``x-csrf-token: Fetch`` answers the token
  in ``x-csrf-token`` and a session cookie (``SAP_SESSIONID``); a ``POST`` must carry both,
  otherwise ``403`` with ``x-csrf-token: Required`` and the text "CSRF token validation failed".
  ``POST /_sandbox/csrf/expire`` invalidates every issued token (what a session timeout does).
* ``POST …/A_SupplierInvoice`` deep insert: properties checked against ``A_SupplierInvoiceType``
  and the ``to_SupplierInvoiceItemGLAcct`` items against ``A_SupplierInvoiceItemGLAcctType`` from
  the EDMX (``edmx_path``; no file → no property checks), the ``to_SupplierInvoiceTax``
  entries against ``A_SupplierInvoiceTaxType``; required header properties (``CompanyCode``,
  ``InvoicingParty``, ``DocumentDate``, ``PostingDate``, ``DocumentCurrency``,
  ``InvoiceGrossAmount``) and G/L line properties (``GLAccount``, ``SupplierInvoiceItemAmount``,
  ``DebitCreditCode``) → ``400``; ``DebitCreditCode`` other than ``S``/``H`` or a negative amount
  → ``400``; an amount with more decimals than the currency has (``JPY`` none) → ``400``; the
  invoicing party must be a known supplier (``M8/152``; the seeded Business Partner suppliers
  unless ``suppliers`` widens it); the invoice must balance (``M8/534``): gross = debit items -
  credit items + tax + unplanned delivery costs, where tax is the ``to_SupplierInvoiceTax``
  amounts, or, with ``TaxIsCalculatedAutomatically``, what SAP computes per tax code from the
  items' net amounts and the company's tax rates (``tax_rates``, rounded per code); an item with
  automatic tax needs a known tax code (``FF/704``); the duplicate-invoice check rejects a second
  invoice with the same reference, supplier and company code (``M8/108``). Answers 201
  ``{"d": {…, "SupplierInvoice", "FiscalYear"}}`` and stores the invoice as booked, calculated
  tax included (``to_SupplierInvoiceTax``).
* ``GET …/A_SupplierInvoice(SupplierInvoice='…',FiscalYear='…')`` reads one invoice as booked
  (its G/L items and tax entries included, as with ``$expand``); unknown key → 404.
* ``GET …/A_SupplierInvoice?$filter=<prop> eq '<v>' and …`` (string equality terms joined by
  ``and`` / ``or``, quotes doubled inside literals), ``$select``, ``$top``;
  ``{"d": {"results": [...]}}``.
* Business Partner API (``API_BUSINESS_PARTNER``), read-only, from a seeded supplier list
  (``DEFAULT_SUPPLIERS``): ``GET …/A_Supplier`` (properties ``Supplier``, ``SupplierName``,
  ``SupplierFullName``, ``BusinessPartner``) and ``GET …/A_BusinessPartnerAddress``
  (``BusinessPartner``, ``AddressID``, ``Country``, ``CityName``), same ``$filter`` / ``$select`` /
  ``$top``; a property the entity type does not have is a ``400`` as in SAP Gateway. Every seeded
  supplier is a valid ``InvoicingParty``. ``app.state.sap.queries`` counts GETs per entity set.
* Reference entity sets for the ERP reader (:mod:`ledgerflow.connectors.sap.reference_sandbox`):
  business partners (suppliers and customers, with ``LastChangeDate`` / ``LastChangeTime``),
  G/L accounts of chart ``YCOA``, cost centers, enterprise projects and WBS elements, with
  ``$filter`` (comparisons on change dates, ``and`` / ``or``, parentheses), ``$orderby``,
  ``$top`` / ``$skip``, ``$expand=to_Text``, ``$select`` checked as SAP Gateway does; more
  business partners with ``seed_parties``; ``app.state.sap.reference.change(...)`` changes a row
  and stamps it from ``clock``.
* Auth: HTTP Basic for the configured communication users, or bearer tokens from
  ``POST /oauth2/token`` (client credentials). Errors in the OData V2 JSON shape.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from ledgerflow.connectors.sandbox_kit import DecimalJSONResponse, OAuthIssuer, Sandbox, read_json, spec_file
from ledgerflow.connectors.sap.connector import BUSINESS_PARTNER_PATH, SERVICE_PATH
from ledgerflow.connectors.sap.edmx import EntityType, load_entity_types, property_problems
from ledgerflow.connectors.sap.reference_sandbox import ENTITY_SETS, FilterError, ReferenceData
from ledgerflow.contracts.common import currency_precision
from ledgerflow.core.settings import ConnectionConfig

__all__ = [
    "DEFAULT_SUPPLIERS",
    "DEFAULT_TAX_RATES",
    "DEFAULT_USERS",
    "TOKEN_PATH",
    "create_app",
    "default_edmx_path",
    "odata_error",
    "parse_filter",
    "sandbox_connection",
]

TOKEN_PATH = "/oauth2/token"  # noqa: S105 - a URL path, not a secret
"""Token endpoint path of the sandbox's OAuth issuer (client credentials)."""

_HEADER_TYPE = "A_SupplierInvoiceType"
_GL_TYPE = "A_SupplierInvoiceItemGLAcctType"
_TAX_TYPE = "A_SupplierInvoiceTaxType"
_GL_NAV = "to_SupplierInvoiceItemGLAcct"
_TAX_NAV = "to_SupplierInvoiceTax"
_HEADER_REQUIRED = (
    "CompanyCode",
    "InvoicingParty",
    "DocumentDate",
    "PostingDate",
    "DocumentCurrency",
    "InvoiceGrossAmount",
)
_ITEM_REQUIRED = ("GLAccount", "SupplierInvoiceItemAmount", "DebitCreditCode")

DEFAULT_TAX_RATES: dict[str, Decimal] = {
    "V0": Decimal(0),
    "V1": Decimal(19),
    "V2": Decimal(7),
    "V3": Decimal(16),
    "I0": Decimal(0),
    "I1": Decimal("7.25"),
}
"""Input tax codes of the sandbox company and their rates in percent (SAP's German/US demo codes)."""
_FILTER_TERM = re.compile(r"\s*(\w+)\s+eq\s+'((?:[^']|'')*)'\s*(?:(and|or)\b|$)")
_SUPPLIER_PROPERTIES = frozenset({"Supplier", "SupplierName", "SupplierFullName", "BusinessPartner"})
_ADDRESS_PROPERTIES = frozenset({"BusinessPartner", "AddressID", "Country", "CityName"})

DEFAULT_SUPPLIERS: tuple[dict[str, str], ...] = (
    {"Supplier": "1000090", "SupplierName": "Big Box Store", "Country": "US", "CityName": "Chicago"},
    {"Supplier": "17300001", "SupplierName": "Concrete GmbH", "Country": "DE", "CityName": "Walldorf"},
    {"Supplier": "1000100", "SupplierName": "Northwind Traders", "Country": "US", "CityName": "Seattle"},
    {"Supplier": "1000101", "SupplierName": "Northwind Traders", "Country": "GB", "CityName": "London"},
    {"Supplier": "1000102", "SupplierName": "Northwind Traders", "Country": "GB", "CityName": "Leeds"},
    {"Supplier": "1000120", "SupplierName": "O'Brien Lumber", "Country": "IE", "CityName": "Cork"},
)
"""Suppliers of the default sandbox: ``Supplier``, ``SupplierName``, address ``Country`` / ``CityName``.

``1000090`` is the vendor of the Mercoa sample (``samples/mercoa/invoice.created.json``); the three
"Northwind Traders" share a name (two in GB) to exercise narrowing by country and city.
"""


def parse_filter(text: str) -> list[list[tuple[str, str]]]:
    """An OData V2 ``$filter`` of string equalities → disjunction of conjunctions of ``(property, value)``.

    ``and`` binds tighter than ``or`` (no parentheses); ``''`` inside a literal is one quote.

    Raises:
        ValueError: any other syntax (the sandbox answers ``400``).

    """
    text = text.strip()
    if not text:
        return []
    groups: list[list[tuple[str, str]]] = [[]]
    position = 0
    while position < len(text):
        match = _FILTER_TERM.match(text, position)
        if match is None:
            raise ValueError(f"Unsupported $filter at: {text[position:]}")
        groups[-1].append((match.group(1), match.group(2).replace("''", "'")))
        position = match.end()
        if match.group(3) == "or":
            groups.append([])
        elif match.group(3) is None and position < len(text):
            raise ValueError(f"Unsupported $filter at: {text[position:]}")
    if not groups[-1]:
        raise ValueError("The $filter ends with an operator")
    return groups


_DATE_MS = re.compile(r"^/Date\((-?\d+)")
_KEY_PART = re.compile(r"(\w+)='((?:[^']|'')*)'")


def odata_error(code: str, message: str) -> dict[str, Any]:
    """An OData V2 error body: ``{"error": {"code", "message": {"lang", "value"}, "innererror"}}``."""
    return {
        "error": {
            "code": code,
            "message": {"lang": "en", "value": message},
            "innererror": {"transactionid": secrets.token_hex(16).upper(), "errordetails": []},
        }
    }


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return DecimalJSONResponse(odata_error(code, message), status_code=status, headers=dict(headers or {}))


def _entity_query(request: Request, rows: Iterable[dict[str, Any]], properties: frozenset[str] | None) -> Response:
    """``$filter`` / ``$select`` / ``$top`` over ``rows`` → ``{"d": {"results": [...]}}`` (or an OData error)."""
    try:
        groups = parse_filter(request.query_params.get("$filter", ""))
    except ValueError as exc:
        return _error(400, "/IWBEP/CM_MGW_RT/022", str(exc))
    select = [s for s in request.query_params.get("$select", "").split(",") if s]
    named = {name for group in groups for name, _ in group} | set(select)
    if properties is not None and (unknown := sorted(named - properties)):
        return _error(400, "/IWBEP/CM_MGW_RT/021", f"Property {unknown[0]} not found in type")
    found = [row for row in rows if not groups or any(all(str(row.get(k)) == v for k, v in g) for g in groups)]
    top = request.query_params.get("$top")
    if top is not None:
        if not top.isdigit():
            return _error(400, "/IWBEP/CM_MGW_RT/022", f"Invalid $top: {top}")
        found = found[: int(top)]
    if select:
        found = [{k: row.get(k) for k in select} for row in found]
    return DecimalJSONResponse({"d": {"results": found}})


def _fiscal_year(posting_date: Any) -> str:
    if isinstance(posting_date, str):
        if match := _DATE_MS.match(posting_date):
            return str(datetime.fromtimestamp(int(match.group(1)) / 1000, tz=UTC).year)
        return posting_date[:4]
    return "0000"


def _decimals(currency: Any) -> int | None:
    """Minor-unit digits of an ISO currency (CLDR), None for a code SAP would not know either."""
    if not isinstance(currency, str) or len(currency) != 3:
        return None
    try:
        return currency_precision(currency)
    except (KeyError, ValueError):
        return None


def _total(kind: str, record: dict[str, Any]) -> Decimal | None:
    gross = record.get("InvoiceGrossAmount")
    return Decimal(gross) if isinstance(gross, str) else None


class _Sap:
    def __init__(
        self,
        sandbox: Sandbox,
        types: dict[str, EntityType] | None,
        users: Mapping[str, str],
        suppliers: frozenset[str] | None,
        gl_accounts: frozenset[str] | None,
        supplier_records: Iterable[Mapping[str, str]],
    ) -> None:
        self.gl_accounts = gl_accounts
        self.supplier_rows: list[dict[str, Any]] = []
        self.address_rows: list[dict[str, Any]] = []
        for seed in supplier_records:
            number = seed["Supplier"]
            partner = seed.get("BusinessPartner", number)
            name = seed.get("SupplierName", "")
            self.supplier_rows.append(
                {
                    "Supplier": number,
                    "SupplierName": name[:35],
                    "SupplierFullName": seed.get("SupplierFullName", name),
                    "BusinessPartner": partner,
                }
            )
            if seed.get("Country") or seed.get("CityName"):
                self.address_rows.append(
                    {
                        "BusinessPartner": partner,
                        "AddressID": str(len(self.address_rows) + 1),
                        "Country": seed.get("Country", ""),
                        "CityName": seed.get("CityName", ""),
                    }
                )
        seeded = frozenset(row["Supplier"] for row in self.supplier_rows)
        suppliers = seeded if suppliers is None else (None if "*" in suppliers else suppliers | seeded)
        self.tax_rates: dict[str, Decimal] = dict(DEFAULT_TAX_RATES)
        self.reference = ReferenceData(lambda: datetime.now(UTC), seed_parties=False, suppliers=[])
        self.queries: dict[str, int] = {}
        """GET requests answered per entity set (``A_Supplier``, ``A_SupplierInvoice``, …)."""
        self.sandbox = sandbox
        self.store = sandbox.store
        self.types = types
        self.users = dict(users)
        self.suppliers = suppliers
        self.tokens: dict[str, str] = {}  # session id → csrf token
        self.sequence = 5105600000

    def authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if self.sandbox.issuer.verify(header):
            return True
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = self.users.get(user)
        return expected is not None and secrets.compare_digest(expected, password)

    def csrf_headers(self, request: Request, response: Response) -> None:
        if request.headers.get("x-csrf-token", "").lower() != "fetch":
            return
        session = request.cookies.get("SAP_SESSIONID")
        if session is None or session not in self.tokens:
            session = secrets.token_hex(12)
            self.tokens[session] = secrets.token_urlsafe(18)
        response.headers["x-csrf-token"] = self.tokens[session]
        response.set_cookie("SAP_SESSIONID", session, httponly=True, path="/")

    def csrf_ok(self, request: Request) -> bool:
        session = request.cookies.get("SAP_SESSIONID")
        token = request.headers.get("x-csrf-token")
        expected = self.tokens.get(session or "")
        return bool(token and expected and secrets.compare_digest(expected, token))

    async def service_root(self, request: Request) -> Response:
        if not self.authorised(request):
            return _error(401, "/IWFND/CM_CONSUMER/101", "Logon failed")
        response = DecimalJSONResponse({"d": {"EntitySets": ["A_SupplierInvoice", "A_SupplierInvoiceItemGLAcct"]}})
        self.csrf_headers(request, response)
        return response

    def problems(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return "The request body must be a JSON object"
        for nav in (_GL_NAV, _TAX_NAV):
            container = body.get(nav, {})
            if not isinstance(container, dict) or not isinstance(container.get("results", []), list):
                return f"{nav} must be {{'results': [...]}}"
            if any(not isinstance(entry, dict) for entry in container.get("results", [])):
                return f"{nav} entries must be objects"
        if self.types is not None:
            header_type = self.types.get(_HEADER_TYPE)
            if header_type is not None:
                for problem in property_problems(header_type, body):
                    return problem
                for nav in body:
                    if nav in header_type.navigation and nav not in (_GL_NAV, _TAX_NAV):
                        return f"Deep insert of {nav} is not supported by this sandbox"
            for nav, type_name in ((_GL_NAV, _GL_TYPE), (_TAX_NAV, _TAX_TYPE)):
                entity = self.types.get(type_name)
                if entity is None:
                    continue
                for entry in body.get(nav, {}).get("results", []):
                    for problem in property_problems(entity, entry):
                        return problem
        for name in _HEADER_REQUIRED:
            if body.get(name) in (None, ""):
                return f"Property {name} is required for a supplier invoice"
        items = body.get(_GL_NAV, {}).get("results", [])
        if not items:
            return "Enter at least one item (G/L account line)"
        precision = _decimals(body.get("DocumentCurrency"))
        amounts = [("InvoiceGrossAmount", body.get("InvoiceGrossAmount"))]
        amounts.append(("UnplannedDeliveryCost", body.get("UnplannedDeliveryCost")))
        for index, item in enumerate(items, start=1):
            for name in _ITEM_REQUIRED:
                if item.get(name) in (None, ""):
                    return f"Item {index}: property {name} is required"
            if item["DebitCreditCode"] not in ("S", "H"):
                return f"Item {index}: DebitCreditCode {item['DebitCreditCode']!r} is invalid (S = debit, H = credit)"
            if item.get("DocumentCurrency") not in (None, body.get("DocumentCurrency")):
                return f"Item {index}: currency {item.get('DocumentCurrency')} differs from the document currency"
            amounts.append((f"Item {index} SupplierInvoiceItemAmount", item.get("SupplierInvoiceItemAmount")))
        for index, entry in enumerate(body.get(_TAX_NAV, {}).get("results", []), start=1):
            if not entry.get("TaxCode"):
                return f"Tax {index}: property TaxCode is required"
            amounts.append((f"Tax {index} TaxAmount", entry.get("TaxAmount")))
        for name, value in amounts:
            if value is None:
                continue
            number = Decimal(str(value))
            if number < 0:
                return f"{name}: {value} is negative; enter amounts positive with the debit/credit indicator"
            if precision is not None and number != number.quantize(Decimal(1).scaleb(-precision)):
                return f"{name}: {value} has more decimals than currency {body.get('DocumentCurrency')} allows"
        return None

    def tax_for(self, body: dict[str, Any]) -> tuple[Decimal, list[dict[str, Any]]] | str:
        """The invoice's tax: the entries sent, or (automatic tax) SAP's calculation per tax code."""
        entries: list[dict[str, Any]] = list(body.get(_TAX_NAV, {}).get("results", []))
        if not body.get("TaxIsCalculatedAutomatically"):
            return sum((Decimal(str(e.get("TaxAmount") or 0)) for e in entries), Decimal(0)), entries
        precision = _decimals(body.get("DocumentCurrency"))
        unit = Decimal(1).scaleb(-(precision if precision is not None else 2))
        bases: dict[str, Decimal] = {}
        for index, item in enumerate(body.get(_GL_NAV, {}).get("results", []), start=1):
            code = item.get("TaxCode")
            if not code or code not in self.tax_rates:
                return f"Item {index}: tax code {code!r} is not defined for the company's country (FF/704)"
            signed = Decimal(str(item["SupplierInvoiceItemAmount"])) * (-1 if item["DebitCreditCode"] == "H" else 1)
            bases[code] = bases.get(code, Decimal(0)) + signed
        calculated = [
            {
                "SupplierInvoiceTaxCounter": str(n),
                "TaxCode": code,
                "DocumentCurrency": body.get("DocumentCurrency"),
                "TaxAmount": format((base * self.tax_rates[code] / 100).quantize(unit, ROUND_HALF_UP), "f"),
                "TaxBaseAmountInTransCrcy": format(base, "f"),
            }
            for n, (code, base) in enumerate(bases.items(), start=1)
        ]
        return sum((Decimal(str(e["TaxAmount"])) for e in calculated), Decimal(0)), calculated

    async def create(self, request: Request) -> Response:
        if not self.authorised(request):
            return _error(401, "/IWFND/CM_CONSUMER/101", "Logon failed")
        if not self.csrf_ok(request):
            return Response("CSRF token validation failed", status_code=403, headers={"x-csrf-token": "Required"})
        try:
            body = await read_json(request)
        except ValueError:
            return _error(400, "/IWBEP/CM_MGW_RT/020", "The request body is not valid JSON")
        if (problem := self.problems(body)) is not None:
            return _error(400, "/IWBEP/CM_MGW_RT/020", problem)
        party = body.get("InvoicingParty")
        if self.suppliers is not None and party not in self.suppliers:
            return _error(400, "M8/152", f"Vendor {party} does not exist in company code {body.get('CompanyCode')}")
        items = body.get(_GL_NAV, {}).get("results", [])
        for item in items:
            account = item.get("GLAccount")
            if self.gl_accounts is not None and account not in self.gl_accounts:
                company = item.get("CompanyCode")
                return _error(400, "FH/103", f"G/L account {account} is not defined in company code {company}")
        tax = self.tax_for(body)
        if isinstance(tax, str):
            return _error(400, "FF/704", tax)
        tax_amount, tax_entries = tax
        balance = sum(
            (
                Decimal(str(i["SupplierInvoiceItemAmount"])) * (-1 if i.get("DebitCreditCode") == "H" else 1)
                for i in items
            ),
            Decimal(0),
        )
        balance += tax_amount + Decimal(str(body.get("UnplannedDeliveryCost") or "0"))
        gross = Decimal(str(body.get("InvoiceGrossAmount", "0")))
        if balance != gross:
            return _error(400, "M8/534", f"Balance not zero: {gross} gross vs {balance} in items, tax and costs")
        for other in self.store.all("supplier_invoice"):
            same = all(
                other.get(k) == body.get(k) for k in ("SupplierInvoiceIDByInvcgParty", "InvoicingParty", "CompanyCode")
            )
            if same:
                return _error(
                    400, "M8/108", f"Check if invoice already entered under document {other['SupplierInvoice']}"
                )
        self.sequence += 1
        invoice = {
            **body,
            _TAX_NAV: {"results": tax_entries},
            "SupplierInvoice": str(self.sequence),
            "FiscalYear": _fiscal_year(body.get("PostingDate")),
            "SupplierInvoiceStatus": "5",
        }
        self.store.put("supplier_invoice", f"{invoice['SupplierInvoice']}/{invoice['FiscalYear']}", invoice)
        response = DecimalJSONResponse({"d": invoice}, status_code=201)
        self.csrf_headers(request, response)
        return response

    async def read(self, request: Request, key: str) -> Response:
        """``GET A_SupplierInvoice(SupplierInvoice='…',FiscalYear='…')``: one invoice with its items and tax."""
        if not self.authorised(request):
            return _error(401, "/IWFND/CM_CONSUMER/101", "Logon failed")
        parts = dict(_KEY_PART.findall(key))
        invoice = self.store.get(
            "supplier_invoice", f"{parts.get('SupplierInvoice', '')}/{parts.get('FiscalYear', '')}"
        )
        if invoice is None:
            return _error(404, "/IWBEP/CM_MGW_RT/021", f"Resource not found for segment A_SupplierInvoice({key})")
        return DecimalJSONResponse({"d": invoice})

    async def query(self, request: Request) -> Response:
        return self.entity_set(request, "A_SupplierInvoice", self.store.all("supplier_invoice"), None)

    async def suppliers_query(self, request: Request) -> Response:
        return self.entity_set(request, "A_Supplier", self.supplier_rows, _SUPPLIER_PROPERTIES)

    async def addresses_query(self, request: Request) -> Response:
        return self.entity_set(request, "A_BusinessPartnerAddress", self.address_rows, _ADDRESS_PROPERTIES)

    def reference_set(self, name: str) -> Callable[[Request], Any]:
        """The handler of reference entity set ``name`` (:mod:`~ledgerflow.connectors.sap.reference_sandbox`)."""

        async def handler(request: Request) -> Response:
            if not self.authorised(request):
                return _error(401, "/IWFND/CM_CONSUMER/101", "Logon failed")
            self.queries[name] = self.queries.get(name, 0) + 1
            try:
                rows = self.reference.query(name, request.query_params)
            except FilterError as exc:
                return _error(400, exc.code, str(exc))
            response = DecimalJSONResponse({"d": {"results": rows}})
            self.csrf_headers(request, response)
            return response

        return handler

    def entity_set(
        self, request: Request, name: str, rows: Iterable[dict[str, Any]], properties: frozenset[str] | None
    ) -> Response:
        if not self.authorised(request):
            return _error(401, "/IWFND/CM_CONSUMER/101", "Logon failed")
        self.queries[name] = self.queries.get(name, 0) + 1
        response = _entity_query(request, rows, properties)
        self.csrf_headers(request, response)
        return response


DEFAULT_USERS: dict[str, str] = {"LEDGERFLOW_COMM": "sandbox-password"}
"""Communication users the sandbox accepts by default (see :func:`sandbox_connection`)."""


def default_edmx_path() -> Path:
    """``$LEDGERFLOW_SPECS_DIR/sap_si.edmx``, else ``../shared/specs/sap_si.edmx`` beside the project."""
    return spec_file("sap_si.edmx")


def sandbox_connection(config: ConnectionConfig, base_url: str) -> ConnectionConfig:
    """``config`` pointed at a running sandbox with the default communication user.

    Options are kept; ``company_code`` defaults to ``1010`` (SAP's standard demo company code).
    """
    user, password = next(iter(DEFAULT_USERS.items()))
    data = config.model_dump()
    data.update(base_url=base_url, credentials={"username": user, "password": password})
    data["options"] = {"company_code": "1010", **data.get("options", {})}
    return ConnectionConfig.model_validate(data)


def create_app(
    edmx_path: Path | None = None,
    *,
    users: Mapping[str, str] | None = None,
    clients: Mapping[str, str] | None = None,
    suppliers: Iterable[str] | None = None,
    gl_accounts: Iterable[str] | None = None,
    supplier_records: Iterable[Mapping[str, str]] | None = None,
    tax_rates: Mapping[str, Decimal] | None = None,
    seed_parties: bool = False,
    clock: Callable[[], datetime] | None = None,
) -> FastAPI:
    """Build the SAP supplier invoice sandbox.

    Args:
        edmx_path: the service EDMX; None → :func:`default_edmx_path`; a missing file → no
            property checks.
        users: communication users accepted with HTTP Basic, user → password.
        clients: OAuth client id → secret for client-credentials tokens at ``/oauth2/token``.
        suppliers: supplier numbers that exist (``InvoicingParty`` values accepted) besides the
            seeded ones; None → only the seeded ones (as SAP: an unknown supplier is ``M8/152``);
            ``["*"]`` accepts any.
        supplier_records: the Business Partner API's suppliers (``Supplier``, ``SupplierName``,
            optional ``SupplierFullName``, ``BusinessPartner``, ``Country``, ``CityName``);
            None → :data:`DEFAULT_SUPPLIERS`.
        gl_accounts: G/L accounts that exist (``FH/103`` for others); None accepts any.
        tax_rates: the company's tax codes and rates in percent (automatic tax);
            None → :data:`DEFAULT_TAX_RATES`.
        seed_parties: also business partners beyond the suppliers (customers, a blocked and a
            changed supplier) for the ERP reader's tests.
        clock: the time reference data changes are stamped with (UTC; default the wall clock).

    Returns:
        The FastAPI app; its :class:`~ledgerflow.connectors.sandbox_kit.Sandbox` is ``app.state.sandbox``,
        the SAP state (``queries`` counters) ``app.state.sap``.

    """
    sandbox = Sandbox(
        "SAP S/4HANA supplier invoice sandbox",
        issuer=OAuthIssuer(clients or {"ledgerflow": "sandbox-secret"}),
        token_path=TOKEN_PATH,
        total_of=_total,
        fault_body=lambda status: odata_error("/IWFND/CM_BEC/026", f"Injected fault {status}"),
    )
    edmx_path = edmx_path if edmx_path is not None else default_edmx_path()
    types = load_entity_types(edmx_path) if edmx_path.is_file() else None
    sap = _Sap(
        sandbox,
        types,
        users or DEFAULT_USERS,
        frozenset(suppliers) if suppliers is not None else None,
        frozenset(gl_accounts) if gl_accounts is not None else None,
        DEFAULT_SUPPLIERS if supplier_records is None else supplier_records,
    )
    sap.tax_rates = dict(DEFAULT_TAX_RATES if tax_rates is None else tax_rates)
    sap.reference = ReferenceData(
        clock or (lambda: datetime.now(UTC)),
        seed_parties=seed_parties,
        suppliers=list(DEFAULT_SUPPLIERS if supplier_records is None else supplier_records),
        gl_accounts=sorted(sap.gl_accounts or ()),
    )

    async def expire_csrf() -> Response:
        sap.tokens.clear()
        return Response(status_code=204)

    app = sandbox.app
    app.add_api_route("/_sandbox/csrf/expire", expire_csrf, methods=["POST"])
    app.add_api_route(SERVICE_PATH + "/", sap.service_root, methods=["GET"])
    app.add_api_route(SERVICE_PATH, sap.service_root, methods=["GET"])
    app.add_api_route(SERVICE_PATH + "/A_SupplierInvoice", sap.query, methods=["GET"])
    app.add_api_route(SERVICE_PATH + "/A_SupplierInvoice({key})", sap.read, methods=["GET"])
    app.add_api_route(SERVICE_PATH + "/A_SupplierInvoice", sap.create, methods=["POST"])
    app.add_api_route(BUSINESS_PARTNER_PATH + "/A_Supplier", sap.suppliers_query, methods=["GET"])
    app.add_api_route(BUSINESS_PARTNER_PATH + "/A_BusinessPartnerAddress", sap.addresses_query, methods=["GET"])
    for name, path in ENTITY_SETS.items():
        app.add_api_route(path, sap.reference_set(name), methods=["GET"])
    app.state.sap = sap
    return app
