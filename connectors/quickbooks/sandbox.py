"""A local QuickBooks Online sandbox: the Accounting API v3 on its real paths, in memory.

What it reproduces (``shared/reference/erp_apis.md`` §1, Intuit "Bill" entity page, error-code list):

* ``GET /connect/oauth2`` — the consent page (appcenter.intuit.com's path), approving at once:
  checks ``client_id``, ``redirect_uri``, ``response_type=code``, scope
  ``com.intuit.quickbooks.accounting``, a PKCE ``S256`` challenge and ``state``, and redirects
  with ``code``, ``state`` and ``realmId`` (:class:`~ledgerflow.connectors.sandbox_kit.OAuthIssuer`);
* ``POST /oauth2/v1/tokens/bearer`` — OAuth 2.0 token endpoint (HTTP Basic client authentication):
  the authorization code (single use, ``code_verifier`` checked) and refresh tokens, which rotate
  on every refresh; bad client credentials → 401 ``invalid_client``, unknown refresh token or
  code → 400 ``invalid_grant``;
* ``/v3/company/{realmId}/…`` with ``Authorization: Bearer`` (401 ``AuthenticationFault`` 3200;
  another realm → 403 ``AuthorizationFault`` 3100):
  ``POST /{entity}`` (create; full update with ``Id`` + ``SyncToken``; sparse update with
  ``"sparse": true``; ``?operation=delete``) for bill, vendor, customer, billpayment, payment,
  purchaseorder, invoice, account, class, department; ``GET /{entity}/{id}``;
  ``GET /query?query=select * from X [where F = '…' | where MetaData.LastUpdatedTime >= '…'
  [and …]] [orderby F] [startposition N] [maxresults M]`` (default 100 results, like Intuit;
  booleans as ``Job = true``); ``GET /cdc?entities=A,B&changedSince=<ISO 8601>`` (change data
  capture: :meth:`_QuickBooks.cdc`); ``GET /companyinfo/{realmId}``;
* bill payments and customer payments (``POST /billpayment``, ``POST /payment``): every
  ``Line[].LinkedTxn[]`` names an existing ``Bill`` (bill payment) or ``Invoice`` (payment) of the
  payment's vendor / customer, a line pays at most the document's ``Balance`` and the lines at
  most ``TotalAmt``; the paid document's ``Balance`` goes down (back up when the payment is
  updated, voided or deleted). A bill or invoice update keeps what was paid off its ``Balance``;
* customers carry ``Job`` (false unless sent: true with ``ParentRef`` makes a sub-customer /
  project, Intuit's Customer entity page);
* ``?requestid=`` replay: the same id answers the original response, no second record;
* ``POST /batch`` (``BatchItemRequest[{bId, operation, <Entity>}]`` → ``BatchItemResponse[{bId,
  <Entity> | Fault}]``): up to :data:`MAX_BATCH` items, each executed like its own request (one
  item's fault never fails its neighbours), ``bId`` required and unique; the ``requestid`` of the
  batch request replays the whole answer;
* with ``enforce_limits`` (off by default), Intuit's published limits per company: 500 requests
  per minute, 10 in flight, 40 batch requests per minute, answered with 429 and the
  ``ThrottleExceeded`` fault (003001); ``time_scale`` shrinks the windows for benchmarks
  (:mod:`ledgerflow.connectors.sandbox_limits`);
* ``SyncToken`` optimistic concurrency: stale → 400 ``ValidationFault`` 5010 "Stale Object Error";
* Fault JSON error shapes; duplicate ``DisplayName`` → 6240; unknown reference (vendor,
  account, item, linked transaction) → 2500; unknown id → 610;
* ``TotalAmt`` computed from the lines of bills, purchase orders and invoices;
* bodies validated against the entity's complexType in ``Finance.xsd`` (``xmlschema``): element
  names known, documented required elements present, simple types (decimal, date, boolean,
  enumerations) and reference shapes right. ``Finance.xsd`` includes ``IntuitBaseTypes.xsd``
  which is not in ``specs/``: the ``IntuitEntity`` elements (``Id``, ``SyncToken``,
  ``MetaData``…) are accepted from :data:`INTUIT_ENTITY_ELEMENTS` and types it defines
  (``ReferenceType``) are checked by shape. Without the spec file validation is skipped;
* a chart of accounts with Id ``600394`` (the Mercoa sample's ``glAccountId``) and a few
  standard accounts, and one service item; tax codes and rates, classes and departments
  (:data:`SEEDED_REFERENCE`), vendors and customers with ``seed_parties`` (:data:`SEEDED_PARTIES`),
  each with ``MetaData.LastUpdatedTime`` (records booked later carry theirs) for the ERP readers.

Wiring with a connector (tests, ``ledgerflow up``)::

    async with serve(create_app()) as url:
        config = sandbox_connection(ConnectionConfig(erp="quickbooks"), url)
        connector = QuickBooksConnector("qbo", config, http, state)
"""

from __future__ import annotations

import functools
import operator
import re
import warnings
from collections.abc import Awaitable, Callable, Collection
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from ledgerflow.connectors.sandbox_kit import DecimalJSONResponse, OAuthIssuer, Sandbox, point_at, read_json, spec_file
from ledgerflow.connectors.sandbox_limits import QuotaGate, Window
from ledgerflow.core.outbound.client import loads_json
from ledgerflow.core.settings import ConnectionConfig

__all__ = [
    "AUTHORIZE_PATH",
    "DEFAULT_CREDENTIALS",
    "INTUIT_ENTITY_ELEMENTS",
    "MAX_BATCH",
    "SCOPE",
    "TOKEN_PATH",
    "FinanceSchema",
    "SandboxCredentials",
    "create_app",
    "default_spec_path",
    "sandbox_connection",
]

TOKEN_PATH = "/oauth2/v1/tokens/bearer"  # noqa: S105 - a URL path, not a secret

MAX_BATCH = 30
"""Items per batch request (Intuit: "the maximum number of payloads in a single batch request is 30")."""

_BATCH_OPERATIONS = frozenset({"create", "update", "delete"})
AUTHORIZE_PATH = "/connect/oauth2"
"""Path of Intuit's consent page (``https://appcenter.intuit.com/connect/oauth2``)."""
SCOPE = "com.intuit.quickbooks.accounting"
"""The Accounting API's OAuth scope."""
_NS = "{http://schema.intuit.com/finance/v3}"

ENTITIES: dict[str, str] = {
    "bill": "Bill",
    "vendor": "Vendor",
    "customer": "Customer",
    "billpayment": "BillPayment",
    "payment": "Payment",
    "purchaseorder": "PurchaseOrder",
    "invoice": "Invoice",
    "account": "Account",
    "item": "Item",
    "taxcode": "TaxCode",
    "taxrate": "TaxRate",
    "class": "Class",
    "department": "Department",
}
"""URL path segment → entity name (the JSON wrapper key)."""

_ENTITY_KINDS = {name: kind for kind, name in ENTITIES.items()}

_WRITABLE = {
    "bill",
    "vendor",
    "customer",
    "billpayment",
    "payment",
    "purchaseorder",
    "invoice",
    "account",
    "class",
    "department",
}
_NAMED = {"vendor", "customer"}
_LISTS = {"account", "class", "department"}
"""List entities (no currency, no transaction date); ``Active`` defaults to true."""
_TOTALLED = {"bill", "purchaseorder", "invoice"}
_PAYMENTS = {"billpayment", "payment"}

CDC_MAX_AGE = timedelta(days=30)
"""How far back ``changedSince`` of a change data capture request may go (Intuit: 30 days)."""
CDC_MAX_OBJECTS = 1000
"""Objects per entity in one change data capture answer (Intuit: 1000)."""
_REFS = {
    "VendorRef": "vendor",
    "CustomerRef": "customer",
    "AccountRef": "account",
    "APAccountRef": "account",
    "BankAccountRef": "account",
    "CCAccountRef": "account",
    "DepositToAccountRef": "account",
    "ARAccountRef": "account",
    "ItemRef": "item",
}

REQUIRED: dict[str, tuple[str, ...]] = {
    "Bill": ("VendorRef", "Line"),
    "PurchaseOrder": ("VendorRef", "Line"),
    "Invoice": ("CustomerRef", "Line"),
    "BillPayment": ("VendorRef", "TotalAmt", "PayType", "Line"),
    "Payment": ("CustomerRef", "TotalAmt"),
    "Vendor": ("DisplayName",),
    "Customer": ("DisplayName",),
    "Line": ("Amount", "DetailType"),
}
"""Elements Intuit's entity pages document as required (the XSD marks nearly all optional)."""

LINE_REQUIRED_BY_ENTITY: dict[str, tuple[str, ...]] = {
    "Payment": ("Amount", "LinkedTxn"),
    "BillPayment": ("Amount", "LinkedTxn"),
}
"""Payment and bill-payment lines carry ``Amount`` and ``LinkedTxn``; ``DetailType`` (optional in
``Finance.xsd``) is not used on them (Intuit's Payment and BillPayment entity pages)."""

INTUIT_ENTITY_ELEMENTS = frozenset(
    {"Id", "SyncToken", "MetaData", "CustomField", "AttachableRef", "domain", "status", "sparse"}
)
"""Elements of ``IntuitEntity`` (defined in ``IntuitBaseTypes.xsd``, not in specs/) accepted on every entity."""

SEEDED_ACCOUNTS: tuple[dict[str, Any], ...] = (
    {"Id": "600394", "Name": "Job Materials", "AcctNum": "6000", "AccountType": "Expense", "Active": True},
    {"Id": "7", "Name": "Advertising", "AcctNum": "6010", "AccountType": "Expense", "Active": True},
    {"Id": "33", "Name": "Accounts Payable (A/P)", "AccountType": "Accounts Payable", "Active": True},
    {"Id": "35", "Name": "Checking", "AccountType": "Bank", "Active": True},
    {"Id": "84", "Name": "Accounts Receivable (A/R)", "AccountType": "Accounts Receivable", "Active": True},
    {"Id": "79", "Name": "Sales of Product Income", "AccountType": "Income", "Active": True},
)
"""The sandbox chart of accounts (``600394`` is the Mercoa sample's ``glAccountId``)."""

SEEDED_REFERENCE: dict[str, tuple[dict[str, Any], ...]] = {
    "taxcode": (
        {"Id": "TAX", "Name": "TAX", "Description": "Taxable", "Taxable": True, "Active": True},
        {"Id": "NON", "Name": "NON", "Description": "Non-taxable", "Taxable": False, "Active": True},
        {
            "Id": "3",
            "Name": "CA Sales Tax",
            "Description": "California",
            "Taxable": True,
            "Active": True,
            "SalesTaxRateList": {"TaxRateDetail": [{"TaxRateRef": {"value": "2"}}]},
        },
    ),
    "taxrate": (
        {"Id": "1", "Name": "No tax", "RateValue": Decimal("0"), "Active": True},
        {"Id": "2", "Name": "California", "RateValue": Decimal("7.25"), "AgencyRef": {"value": "1"}, "Active": True},
    ),
    "class": (
        {
            "Id": "5000000000000123",
            "Name": "03-3000 Concrete",
            "FullyQualifiedName": "03-3000 Concrete",
            "Active": True,
        },
        {
            "Id": "5000000000000124",
            "Name": "09-9000 Finishes",
            "FullyQualifiedName": "09-9000 Finishes",
            "Active": True,
        },
    ),
    "department": (
        {"Id": "1", "Name": "Head office", "Active": True},
        {"Id": "2", "Name": "Site 12 Harbour St", "Active": True},
    ),
}
"""Tax codes and rates, classes (cost codes) and departments (locations) every sandbox starts with."""

SEEDED_PARTIES: dict[str, tuple[dict[str, Any], ...]] = {
    "vendor": (
        {"Id": "56", "DisplayName": "Bayside Concrete Supply", "Active": True},
        {"Id": "57", "DisplayName": "Northwind Electrical", "Active": True},
        {"Id": "58", "DisplayName": "Harbour Scaffolding Ltd", "Active": False},
    ),
    "customer": (
        {"Id": "61", "DisplayName": "Riverside Developments", "Active": True},
        {"Id": "62", "DisplayName": "City of Springfield", "Active": True},
        {
            "Id": "63",
            "DisplayName": "Harbour St Tower",
            "FullyQualifiedName": "Riverside Developments:Harbour St Tower",
            "Job": True,
            "ParentRef": {"value": "61"},
            "Active": True,
        },
    ),
}
"""Vendors and customers a sandbox starts with when built with ``seed_parties=True`` (customer 63 is a
project of customer 61: ``Job`` true, ``ParentRef``)."""


@dataclass(frozen=True, slots=True)
class SandboxCredentials:
    """Credentials the sandbox accepts (and the connection config that goes with them)."""

    client_id: str = "ledgerflow-sandbox"
    client_secret: str = "sandbox-secret"  # noqa: S105 - a local sandbox's fixed demo secret
    refresh_token: str = "sandbox-refresh-token"  # noqa: S105
    realm_id: str = "9341453000000000"


DEFAULT_CREDENTIALS = SandboxCredentials()


def default_spec_path() -> Path:
    """``$LEDGERFLOW_SPECS_DIR/Finance.xsd``, else ``../shared/specs/Finance.xsd`` beside the project."""
    return spec_file("Finance.xsd")


def sandbox_connection(
    config: ConnectionConfig, base_url: str, credentials: SandboxCredentials = DEFAULT_CREDENTIALS
) -> ConnectionConfig:
    """``config`` pointed at a running sandbox: its base URL, token URL and credentials (options kept)."""
    return point_at(config, base_url, {**asdict(credentials), "token_url": base_url.rstrip("/") + TOKEN_PATH})


# --------------------------------------------------------------------------------------------
# Finance.xsd validation


class FinanceSchema:
    """Validates QuickBooks JSON entities against complexTypes of ``Finance.xsd``.

    Errors are ``(code, element, message)`` with Intuit codes: 2010 unknown property, 2020
    required element missing, 2030 invalid value for the element's type.
    """

    def __init__(self, path: Path) -> None:
        import xmlschema

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.schema = xmlschema.XMLSchema10(str(path), validation="lax")
        self._entity = ""  # the entity being validated (payment lines differ from document lines)

    def validate(self, entity: str, body: dict[str, Any]) -> list[tuple[str, str, str]]:
        """Errors of ``body`` as entity ``entity`` (e.g. ``"Bill"``); empty when valid or the type is unknown."""
        xsd_type = self.schema.maps.types.get(_NS + entity)
        errors: list[tuple[str, str, str]] = []
        if xsd_type is None:
            return errors
        self._entity = entity
        self._complex(xsd_type, entity, body, entity, errors, root=True)
        return errors

    def _complex(
        self, xsd_type: Any, name: str, value: Any, path: str, errors: list[tuple[str, str, str]], *, root: bool = False
    ) -> None:
        if not isinstance(value, dict):
            errors.append(("2030", path, f"{path} must be an object"))
            return
        children = {e.local_name: e for e in xsd_type.content.iter_elements() if getattr(e, "local_name", None)}
        for key, child_value in value.items():
            child = children.get(key)
            if child is None:
                if key in INTUIT_ENTITY_ELEMENTS and (root or key == "Id" or key == "CustomField"):
                    continue
                errors.append(("2010", f"{path}.{key}", f"Property Name:{key} specified is unsupported or invalid"))
                continue
            self._element(child, child_value, f"{path}.{key}", errors)
        required_here = REQUIRED.get(name, ())
        if name == "Line":
            required_here = LINE_REQUIRED_BY_ENTITY.get(self._entity, required_here)
        for required in required_here:
            if value.get(required) in (None, [], ""):
                errors.append(
                    ("2020", f"{path}.{required}", f"Required parameter {required} is missing in the request")
                )
        if name == "Line" and isinstance(value.get("DetailType"), str) and value["DetailType"] not in value:
            detail = value["DetailType"]
            errors.append(("2020", f"{path}.{detail}", f"Required parameter {detail} is missing for DetailType"))

    def _element(self, element: Any, value: Any, path: str, errors: list[tuple[str, str, str]]) -> None:
        many = element.max_occurs is None or element.max_occurs > 1
        if many:
            if not isinstance(value, list):
                errors.append(("2030", path, f"{path} must be an array"))
                return
            for i, item in enumerate(value):
                self._single(element, item, f"{path}[{i}]", errors)
        else:
            self._single(element, value, path, errors)

    def _single(self, element: Any, value: Any, path: str, errors: list[tuple[str, str, str]]) -> None:
        xsd_type = element.type
        name = element.local_name
        if xsd_type is None:
            return
        if xsd_type.is_simple():
            self._simple(xsd_type, value, path, errors)
            return
        type_name = xsd_type.local_name or ""
        if type_name == "anyType" or xsd_type.has_simple_content():
            # ReferenceType and friends live in IntuitBaseTypes.xsd (absent): check by shape.
            if name.endswith("Ref") and not (isinstance(value, dict) and isinstance(value.get("value"), str)):
                errors.append(("2030", path, f'{path} must be a reference object {{"value": "<id>"}}'))
            return
        self._complex(xsd_type, type_name or name, value, path, errors)

    @staticmethod
    def _simple(xsd_type: Any, value: Any, path: str, errors: list[tuple[str, str, str]]) -> None:
        if isinstance(value, dict | list):
            errors.append(("2030", path, f"{path} must be a single value"))
            return
        primitive = getattr(getattr(xsd_type, "primitive_type", None), "local_name", None)
        if primitive in ("decimal", "double", "float") and (
            isinstance(value, bool) or not isinstance(value, int | Decimal)
        ):
            errors.append(("2030", path, f"Invalid Number: {path} must be a JSON number"))
            return
        if primitive == "boolean" and not isinstance(value, bool):
            errors.append(("2030", path, f"{path} must be true or false"))
            return
        text = (
            ("true" if value else "false")
            if isinstance(value, bool)
            else (format(value, "f") if isinstance(value, Decimal) else str(value))
        )
        if not xsd_type.is_valid(text):
            errors.append(("2030", path, f"Invalid value {text!r} for {path} ({xsd_type.local_name})"))


@functools.lru_cache(maxsize=4)
def _load_schema(path: str) -> FinanceSchema:
    return FinanceSchema(Path(path))


# --------------------------------------------------------------------------------------------
# The app


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _fault(
    code: str, message: str, detail: str = "", element: str = "", *, kind: str = "ValidationFault", status: int = 400
) -> Response:
    error = {"Message": message, "Detail": detail or message, "code": code}
    if element:
        error["element"] = element
    return DecimalJSONResponse({"Fault": {"Error": [error], "type": kind}, "time": _now()}, status_code=status)


def _fault_body(status: int) -> dict[str, Any]:
    if status == 429:
        error = {
            "Message": "message=ThrottleExceeded; errorCode=003001; statusCode=429",
            "Detail": "The request limit was reached.",
            "code": "003001",
        }
        return {"Fault": {"Error": [error], "type": "SERVICE"}, "time": _now()}
    error = {
        "Message": "An application error has occurred while processing your request",
        "Detail": f"System Failure Error: injected {status}",
        "code": "10000",
    }
    return {"Fault": {"Error": [error], "type": "SystemFault"}, "time": _now()}


_CONDITION = r"[\w.]+\s*(?:>=|<=|=|>|<)\s*(?:'(?:[^'\\]|\\.)*'|true|false)"
_QUERY = re.compile(
    r"^\s*select\s+\*\s+from\s+(?P<entity>\w+)"
    rf"(?:\s+where\s+(?P<where>{_CONDITION}(?:\s+and\s+{_CONDITION})*))?"
    r"(?:\s+orderby\s+(?P<order>[\w.]+)(?:\s+(?P<direction>asc|desc))?)?"
    r"(?:\s+startposition\s+(?P<start>\d+))?"
    r"(?:\s+maxresults\s+(?P<limit>\d+))?\s*$",
    re.IGNORECASE,
)
"""The subset of Intuit's query language the sandbox answers: ``where`` conditions joined by ``and``
(``=`` on a field, ``'text'`` or ``true``/``false``, or a comparison on ``MetaData.LastUpdatedTime`` /
``MetaData.CreateTime``), ``orderby`` one field, ``startposition`` (1-based) and ``maxresults``."""

_ONE_CONDITION = re.compile(
    r"(?P<field>[\w.]+)\s*(?P<op>>=|<=|=|>|<)\s*(?:'(?P<value>(?:[^'\\]|\\.)*)'|(?P<flag>true|false))",
    re.IGNORECASE,
)

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def _field(record: dict[str, Any], path: str) -> Any:
    value: Any = record
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _comparable(path: str, value: Any) -> Any:
    if path.startswith("MetaData.") and value:
        return datetime.fromisoformat(str(value)).astimezone(UTC)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _document_total(document: dict[str, Any]) -> Decimal:
    """``TotalAmt`` as QuickBooks computes it.

    Detail lines (sales item, expense) add their ``Amount``; ``DiscountLineDetail`` lines subtract
    it; ``SubTotalLineDetail`` lines are display-only; ``TxnTaxDetail.TotalTax`` adds the tax
    (QuickBooks books sales tax in the tax detail, not in the lines).
    """
    total = Decimal(0)
    for line in document.get("Line", []):
        if not isinstance(line, dict):
            continue
        detail = line.get("DetailType")
        amount = Decimal(str(line.get("Amount", 0)))
        if detail == "SubTotalLineDetail":
            continue
        total += -amount if detail == "DiscountLineDetail" else amount
    tax = document.get("TxnTaxDetail")
    if isinstance(tax, dict) and tax.get("TotalTax") is not None:
        total += Decimal(str(tax["TotalTax"]))
    return total


def _amount(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


def _total(kind: str, record: dict[str, Any]) -> Decimal | None:
    value = record.get("TotalAmt")
    return Decimal(str(value)) if value is not None else None


class _QuickBooks:
    """Route handlers over one :class:`Sandbox`."""

    def __init__(
        self,
        sandbox: Sandbox,
        credentials: SandboxCredentials,
        schema: FinanceSchema | None,
        *,
        seed_parties: bool,
        quota: QuotaGate | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.store = sandbox.store
        self.credentials = credentials
        self.realms = frozenset({credentials.realm_id})
        self.schema = schema
        self.quota = quota
        seeded = {"CreateTime": _now(), "LastUpdatedTime": _now()}
        for account in SEEDED_ACCOUNTS:
            self.store.put("account", account["Id"], {**account, "SyncToken": "0", "MetaData": dict(seeded)})
        self.store.put(
            "item", "1", {"Id": "1", "Name": "Services", "Type": "Service", "SyncToken": "0", "Active": True}
        )
        self.store.put(
            "item", "2", {"Id": "2", "Name": "Materials", "Type": "NonInventory", "SyncToken": "0", "Active": True}
        )
        reference = {**SEEDED_REFERENCE, **(SEEDED_PARTIES if seed_parties else {})}
        for kind, records in reference.items():
            for record in records:
                extra = {"Job": False} if kind == "customer" else {}
                self.store.put(kind, record["Id"], {**extra, **record, "SyncToken": "0", "MetaData": dict(seeded)})
        self.deleted: dict[str, dict[str, dict[str, Any]]] = {}
        """Deleted records by kind and Id, as change data capture answers them (``status: Deleted``)."""

    def _denied(self, request: Request, realm: str) -> Response | None:
        if not self.sandbox.issuer.verify(request.headers.get("authorization")):
            return _fault(
                "3200",
                "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                kind="AuthenticationFault",
                status=401,
            )
        if realm not in self.realms:
            return _fault(
                "3100",
                "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
                kind="AuthorizationFault",
                status=403,
            )
        return None

    async def _metered(self, realm: str, handler: Callable[[], Awaitable[Response]], *tags: str) -> Response:
        """Run ``handler`` within the company's limits, or answer 429 ``ThrottleExceeded``."""
        if self.quota is None:
            return await handler()
        refused = self.quota.admit(realm, tags)
        if refused is not None:
            return DecimalJSONResponse(_fault_body(429), status_code=429)
        try:
            return await handler()
        finally:
            self.quota.release(realm)

    async def company_info(self, request: Request, realm: str, company: str) -> Response:
        denied = self._denied(request, realm)
        if denied is not None:
            return denied
        return await self._metered(realm, self._company_info)

    async def _company_info(self) -> Response:
        info = {"Id": "1", "CompanyName": "ledgerflow sandbox company", "Country": "US", "SyncToken": "0"}
        return DecimalJSONResponse({"CompanyInfo": info, "time": _now()})

    async def read(self, request: Request, realm: str, entity: str, record_id: str) -> Response:
        denied = self._denied(request, realm)
        if denied is not None:
            return denied
        return await self._metered(realm, lambda: self._read(entity, record_id))

    async def _read(self, entity: str, record_id: str) -> Response:
        if entity not in ENTITIES:
            return _fault("4000", f"Unsupported entity {entity}", status=400)
        record = self.store.get(entity, record_id)
        if record is None:
            return _fault("610", "Object Not Found", f"Object Not Found : {ENTITIES[entity]} {record_id}")
        return DecimalJSONResponse({ENTITIES[entity]: record, "time": _now()})

    async def query(self, request: Request, realm: str, query: str = "") -> Response:
        denied = self._denied(request, realm)
        if denied is not None:
            return denied
        return await self._metered(realm, lambda: self._query(query))

    async def _query(self, query: str) -> Response:
        match = _QUERY.match(query)
        if match is None:
            return _fault("4000", "Error parsing query", f"QueryParserError: cannot parse {query!r}")
        entity_name = match["entity"]
        kind = entity_name.lower()
        if kind not in ENTITIES:
            return _fault("4001", "Invalid query", f"QueryValidationError: unknown entity {entity_name}")
        records = self.store.all(kind)
        for condition in _ONE_CONDITION.finditer(match["where"] or ""):
            field, op = condition["field"], condition["op"]
            if op != "=" and not field.startswith("MetaData."):
                return _fault("4001", "Invalid query", f"QueryValidationError: {op} is not supported on {field}")
            raw = condition["flag"].lower() if condition["flag"] else re.sub(r"\\(.)", r"\1", condition["value"])
            try:
                wanted = _comparable(field, raw)
            except ValueError:
                return _fault("4001", "Invalid query", f"QueryValidationError: {raw!r} is not a date-time")
            compare = _COMPARE[op]
            records = [r for r in records if (v := _comparable(field, _field(r, field))) != "" and compare(v, wanted)]
        if match["order"]:
            order = match["order"]
            records.sort(
                key=lambda r: (_comparable(order, _field(r, order)), str(r.get("Id"))),
                reverse=(match["direction"] or "").lower() == "desc",
            )
        start = max(int(match["start"] or 1), 1)
        limit = int(match["limit"]) if match["limit"] else 100
        records = records[start - 1 : start - 1 + limit]
        body: dict[str, Any] = {}
        if records:
            body = {ENTITIES[kind]: records, "startPosition": start, "maxResults": len(records)}
        return DecimalJSONResponse({"QueryResponse": body, "time": _now()})

    async def cdc(self, request: Request, realm: str) -> Response:
        """``GET /cdc?entities=Vendor,Customer&changedSince=<ISO 8601>``: what changed since, per entity.

        Intuit's ChangeDataCapture operation: ``entities`` (comma-separated entity names) and
        ``changedSince`` (at most :data:`CDC_MAX_AGE` ago) are required, else a 400
        ``ValidationFault``. Each entity answers the records changed at or after ``changedSince``
        (oldest first, at most :data:`CDC_MAX_OBJECTS`), deleted ones as
        ``{"Id", "status": "Deleted", "domain", "MetaData": {"LastUpdatedTime"}}``, in
        ``{"CDCResponse": [{"QueryResponse": [{"<Entity>": [...], "startPosition", "maxResults",
        "totalCount"}, ...]}], "time"}``.
        """
        denied = self._denied(request, realm)
        if denied is not None:
            return denied
        entities = request.query_params.get("entities", "")
        changed = request.query_params.get("changedSince", "")
        for name, value in (("entities", entities), ("changedSince", changed)):
            if not value.strip():
                return _fault(
                    "2020",
                    "Required param missing, need to supply the required value for the API",
                    f"Required parameter {name} is missing in the request",
                    name,
                )
        try:
            since = datetime.fromisoformat(changed)
        except ValueError:
            return _fault(
                "2030", "Invalid value", f"changedSince {changed!r} is not an ISO 8601 date-time", "changedSince"
            )
        since = since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
        if since < datetime.now(UTC) - CDC_MAX_AGE:
            return _fault(
                "2030",
                "Invalid value",
                f"changedSince {changed!r} is more than {CDC_MAX_AGE.days} days in the past",
                "changedSince",
            )
        answers: list[dict[str, Any]] = []
        for name in (part.strip() for part in entities.split(",")):
            kind = name.lower()
            if kind not in ENTITIES:
                return _fault("2030", "Invalid value", f"entities: {name!r} is not a QuickBooks entity", "entities")
            changed_records = [
                *self.store.all(kind),
                *self.deleted.get(kind, {}).values(),
            ]
            stamped = [
                (_comparable("MetaData.LastUpdatedTime", _field(r, "MetaData.LastUpdatedTime")), r)
                for r in changed_records
            ]
            found = [
                r
                for stamp, r in sorted(stamped, key=lambda p: (p[0], str(p[1]["Id"])))
                if stamp != "" and stamp >= since
            ]
            answer: dict[str, Any] = {}
            if found:
                page = found[:CDC_MAX_OBJECTS]
                answer = {ENTITIES[kind]: page, "startPosition": 1, "maxResults": len(page), "totalCount": len(page)}
            answers.append(answer)
        return DecimalJSONResponse({"CDCResponse": [{"QueryResponse": answers}], "time": _now()})

    async def write(self, request: Request, realm: str, entity: str) -> Response:
        denied = self._denied(request, realm)
        if denied is not None:
            return denied
        if entity not in _WRITABLE:
            return _fault("4000", f"Unsupported operation on {entity}", status=400)
        try:
            body = await read_json(request)
        except ValueError:
            return _fault("2010", "Request has invalid or unsupported property", "Body is not JSON")
        if not isinstance(body, dict):
            return _fault("2010", "Request has invalid or unsupported property", "Body must be a JSON object")
        operation = request.query_params.get("operation")
        request_id = request.query_params.get("requestid")

        async def handler() -> Response:
            if operation == "delete":
                return self._delete(entity, body)
            if operation == "void":
                return self._void(entity, body)
            return self._upsert(entity, body)

        return await self._metered(realm, lambda: self.store.idempotent(realm, request_id, handler))

    async def batch(self, request: Request, realm: str) -> Response:
        """``POST /batch``: each ``BatchItemRequest`` item executed on its own, answered by ``bId``."""
        denied = self._denied(request, realm)
        if denied is not None:
            return denied
        try:
            body = await read_json(request)
        except ValueError:
            return _fault("2010", "Request has invalid or unsupported property", "Body is not JSON")
        items = body.get("BatchItemRequest") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            return _fault(
                "2020",
                "Required param missing, need to supply the required value for the API",
                "Required parameter BatchItemRequest is missing in the request",
                "BatchItemRequest",
            )
        if len(items) > MAX_BATCH:
            return _fault(
                "1001",
                "Batch request too large",
                f"The batch request carries {len(items)} items: the maximum is {MAX_BATCH}",
                "BatchItemRequest",
            )
        bids = [item.get("bId") if isinstance(item, dict) else None for item in items]
        if any(not isinstance(b, str) or not b for b in bids) or len(set(bids)) != len(bids):
            return _fault(
                "2020",
                "Required param missing, need to supply the required value for the API",
                "Every BatchItemRequest needs a bId, unique within the batch",
                "bId",
            )
        request_id = request.query_params.get("requestid")
        if request_id is not None and len(request_id) > 36:
            return _fault(
                "2010",
                "Request has invalid or unsupported property",
                "requestid of a batch request is at most 36 characters",
                "requestid",
            )

        async def handler() -> Response:
            answers = [self._batch_item(item) for item in items]
            return DecimalJSONResponse({"BatchItemResponse": answers, "time": _now()})

        return await self._metered(realm, lambda: self.store.idempotent(realm, request_id, handler), "batch")

    def _batch_item(self, item: dict[str, Any]) -> dict[str, Any]:
        """One batch item executed like ``POST /{entity}``: ``{bId, <Entity>}`` or ``{bId, Fault}``."""
        bid = item["bId"]
        names = [key for key in item if key in _ENTITY_KINDS]
        operation = item.get("operation")
        if len(names) != 1 or operation not in _BATCH_OPERATIONS or not isinstance(item[names[0]], dict):
            fault = {
                "Error": [
                    {
                        "Message": "Invalid batch item",
                        "Detail": "A batch item needs an operation (create, update, delete) and one entity",
                        "code": "2010",
                    }
                ],
                "type": "ValidationFault",
            }
            return {"bId": bid, "Fault": fault}
        kind = _ENTITY_KINDS[names[0]]
        if kind not in _WRITABLE:
            return {
                "bId": bid,
                "Fault": {
                    "Error": [{"Message": f"Unsupported operation on {kind}", "code": "4000"}],
                    "type": "ValidationFault",
                },
            }
        entity_body = dict(item[names[0]])
        if operation == "delete":
            response = self._delete(kind, entity_body)
        elif item.get("optionsData") == "void":
            response = self._void(kind, entity_body)
        else:
            response = self._upsert(kind, entity_body)
        answer = loads_json(bytes(response.body))
        if "Fault" in answer:
            return {"bId": bid, "Fault": answer["Fault"]}
        return {"bId": bid, names[0]: answer[names[0]]}

    def _delete(self, kind: str, body: dict[str, Any]) -> Response:
        record_id = str(body.get("Id", ""))
        existing = self.store.get(kind, record_id)
        if existing is None:
            return _fault("610", "Object Not Found", f"Object Not Found : {ENTITIES[kind]} {record_id}")
        if str(body.get("SyncToken")) != existing["SyncToken"]:
            return _stale(kind, record_id)
        if kind in _PAYMENTS:
            self._apply_links(kind, existing, sign=1)
        del self.store.records[kind][record_id]
        now = _now()
        self.deleted.setdefault(kind, {})[record_id] = {
            "domain": "QBO",
            "status": "Deleted",
            "Id": record_id,
            "MetaData": {"LastUpdatedTime": now},
        }
        return DecimalJSONResponse(
            {ENTITIES[kind]: {"Id": record_id, "status": "Deleted", "domain": "QBO"}, "time": now}
        )

    def _void(self, kind: str, body: dict[str, Any]) -> Response:
        record_id = str(body.get("Id", ""))
        existing = self.store.get(kind, record_id)
        if existing is None or kind not in ("invoice", "payment", "billpayment"):
            return _fault("610", "Object Not Found", f"Object Not Found : {ENTITIES[kind]} {record_id}")
        if str(body.get("SyncToken")) != existing["SyncToken"]:
            return _stale(kind, record_id)
        if kind in _PAYMENTS:
            self._apply_links(kind, existing, sign=1)
        voided = {
            **existing,
            "Line": [{**line, "Amount": Decimal(0)} for line in existing.get("Line", [])],
            "TotalAmt": Decimal(0),
            "PrivateNote": "Voided",
            "SyncToken": str(int(existing["SyncToken"]) + 1),
        }
        if "Balance" in existing:
            voided["Balance"] = Decimal(0)
        voided["MetaData"] = {**existing.get("MetaData", {}), "LastUpdatedTime": _now()}
        self.store.put(kind, record_id, voided)
        return DecimalJSONResponse({ENTITIES[kind]: voided, "time": _now()})

    def _upsert(self, kind: str, body: dict[str, Any]) -> Response:
        entity = ENTITIES[kind]
        record_id = body.get("Id")
        existing = self.store.get(kind, str(record_id)) if record_id is not None else None
        if record_id is not None:
            if existing is None:
                return _fault("610", "Object Not Found", f"Object Not Found : {entity} {record_id}")
            if str(body.get("SyncToken")) != existing["SyncToken"]:
                return _stale(kind, str(record_id))
            merged = {**existing, **body} if body.get("sparse") is True else dict(body)
        else:
            merged = dict(body)
        for read_only in ("sparse", "MetaData", "domain", "Balance"):
            merged.pop(read_only, None)
        if self.schema is not None:
            errors = self.schema.validate(entity, merged)
            if errors:
                code, element, message = errors[0]
                summary = (
                    "Request has invalid or unsupported property"
                    if code == "2010"
                    else (
                        "Required param missing, need to supply the required value for the API"
                        if code == "2020"
                        else "Invalid value"
                    )
                )
                return _fault(code, summary, message, element)
        problem = self._references(merged)
        if problem is not None:
            return problem
        if kind in _PAYMENTS:
            problem = self._payment_problem(kind, merged, existing)
            if problem is not None:
                return problem
        if kind == "customer":
            merged.setdefault("Job", False)
        if kind in _NAMED:
            name = merged.get("DisplayName")
            clash = self.store.find(kind, lambda r: r.get("DisplayName") == name and r["Id"] != merged.get("Id"))
            if clash:
                return _fault(
                    "6240",
                    "Duplicate Name Exists Error",
                    f"The name supplied already exists. : Another {entity} is already using this name: "
                    f"Id={clash[0]['Id']}",
                )
            merged.setdefault("Active", True)
        if kind in _TOTALLED:
            total = _document_total(merged)
            merged["TotalAmt"] = total
            if kind != "purchaseorder":
                # What payments settled stays settled when the document is updated.
                paid = _amount(existing.get("TotalAmt")) - _amount(existing.get("Balance")) if existing else Decimal(0)
                merged["Balance"] = total - paid
        if kind in _LISTS:
            merged.setdefault("Active", True)
        if kind not in _NAMED and kind not in _LISTS:
            merged.setdefault("CurrencyRef", {"value": "USD", "name": "United States Dollar"})
        if kind in _TOTALLED or kind in ("billpayment", "payment"):
            merged.setdefault("TxnDate", date.today().isoformat())
        now = _now()
        if existing is None:
            merged["Id"] = self.store.next_id()
            merged["SyncToken"] = "0"
            merged["MetaData"] = {"CreateTime": now, "LastUpdatedTime": now}
        else:
            merged["Id"] = existing["Id"]
            merged["SyncToken"] = str(int(existing["SyncToken"]) + 1)
            merged["MetaData"] = {**existing.get("MetaData", {}), "LastUpdatedTime": now}
        merged["domain"] = "QBO"
        if kind in _PAYMENTS:
            if existing is not None:
                self._apply_links(kind, existing, sign=1)
            self._apply_links(kind, merged, sign=-1)
        self.store.put(kind, merged["Id"], merged)
        return DecimalJSONResponse({entity: merged, "time": now})

    def _links(self, payment: dict[str, Any]) -> list[tuple[str, str, Decimal]]:
        """``(txn kind, txn id, amount)`` of each ``Line[].LinkedTxn[]`` of ``payment`` (the line's ``Amount``)."""
        links: list[tuple[str, str, Decimal]] = []
        for line in payment.get("Line") or []:
            if not isinstance(line, dict):
                continue
            for linked in line.get("LinkedTxn") or []:
                if isinstance(linked, dict):
                    links.append(
                        (
                            str(linked.get("TxnType", "")).lower(),
                            str(linked.get("TxnId", "")),
                            _amount(line.get("Amount")),
                        )
                    )
        return links

    def _payment_problem(self, kind: str, payment: dict[str, Any], existing: dict[str, Any] | None) -> Response | None:
        """Why ``payment`` cannot be booked (Intuit's BillPayment / Payment entity pages), or None.

        Each line links exactly one transaction of the type the payment settles (``Bill`` for a
        bill payment, ``Invoice`` for a payment) and of the payment's own vendor / customer; the
        lines paying one document add up to at most its ``Balance`` (plus what ``existing``, the
        version being replaced, paid of it); the lines add up to at most ``TotalAmt``.
        """
        wanted, party = ("bill", "VendorRef") if kind == "billpayment" else ("invoice", "CustomerRef")
        owner = str((payment.get(party) or {}).get("value", ""))
        previously: dict[str, Decimal] = {}
        for _kind, txn_id, amount in self._links(existing) if existing else []:
            previously[txn_id] = previously.get(txn_id, Decimal(0)) + amount
        paying: dict[str, Decimal] = {}
        for line in payment.get("Line") or []:
            linked = line.get("LinkedTxn") if isinstance(line, dict) else None
            if not isinstance(linked, list) or len(linked) != 1:
                return _fault(
                    "6000",
                    "A business validation error has occurred while processing your request",
                    "Business Validation Error: each payment line links exactly one transaction",
                    "Line.LinkedTxn",
                )
        for txn_kind, txn_id, amount in self._links(payment):
            if txn_kind != wanted:
                return _fault(
                    "6000",
                    "A business validation error has occurred while processing your request",
                    f"Business Validation Error: a {ENTITIES[kind]} can only be linked to a {ENTITIES[wanted]}"
                    f" (got {txn_kind} {txn_id})",
                    "LinkedTxn.TxnType",
                )
            document = self.store.get(wanted, txn_id)
            if document is None:
                return _fault(
                    "2500", "Invalid Reference Id", f"Invalid Reference Id : {txn_kind} {txn_id} not found", "LinkedTxn"
                )
            if str((document.get(party) or {}).get("value", "")) != owner:
                return _fault(
                    "6000",
                    "A business validation error has occurred while processing your request",
                    f"Business Validation Error: {ENTITIES[wanted]} {txn_id} belongs to another "
                    f"{'vendor' if party == 'VendorRef' else 'customer'}",
                    party,
                )
            if amount <= 0:
                return _fault("2030", "Invalid value", "Line.Amount of a payment line must be positive", "Line.Amount")
            paying[txn_id] = paying.get(txn_id, Decimal(0)) + amount
            open_balance = _amount(document.get("Balance")) + previously.get(txn_id, Decimal(0))
            if paying[txn_id] > open_balance:
                return _fault(
                    "6000",
                    "A business validation error has occurred while processing your request",
                    f"Business Validation Error: the payment of {paying[txn_id]} exceeds the open balance "
                    f"{open_balance} of {ENTITIES[wanted]} {txn_id}",
                    "Line.Amount",
                )
        if sum(paying.values(), Decimal(0)) > _amount(payment.get("TotalAmt")):
            return _fault(
                "6000",
                "A business validation error has occurred while processing your request",
                "Business Validation Error: the lines pay more than TotalAmt",
                "TotalAmt",
            )
        return None

    def _apply_links(self, kind: str, payment: dict[str, Any], *, sign: int) -> None:
        """Move the ``Balance`` of the documents ``payment`` pays: ``sign`` -1 books it, +1 reverses it."""
        for txn_kind, txn_id, amount in self._links(payment):
            document = self.store.get(txn_kind, txn_id)
            if document is not None and "Balance" in document:
                document["Balance"] = _amount(document["Balance"]) + sign * amount

    def _references(self, body: Any, path: str = "") -> Response | None:
        if isinstance(body, list):
            for i, item in enumerate(body):
                found = self._references(item, f"{path}[{i}]")
                if found is not None:
                    return found
            return None
        if not isinstance(body, dict):
            return None
        for key, value in body.items():
            kind = _REFS.get(key)
            if kind is not None and isinstance(value, dict):
                ref = str(value.get("value", ""))
                target = self.store.get(kind, ref)
                if target is None or target.get("Active") is False:
                    label = "Accounts" if kind == "account" else ENTITIES[kind]
                    return _fault(
                        "2500",
                        "Invalid Reference Id",
                        f"Invalid Reference Id : {label} element id {ref} not found",
                        f"{path}.{key}".lstrip("."),
                    )
            elif key == "LinkedTxn" and isinstance(value, list):
                for linked in value:
                    txn_kind = str(linked.get("TxnType", "")).lower() if isinstance(linked, dict) else ""
                    txn_id = str(linked.get("TxnId", "")) if isinstance(linked, dict) else ""
                    if txn_kind not in ENTITIES or self.store.get(txn_kind, txn_id) is None:
                        return _fault(
                            "2500",
                            "Invalid Reference Id",
                            f"Invalid Reference Id : {txn_kind} {txn_id} not found",
                            "LinkedTxn",
                        )
            else:
                found = self._references(value, f"{path}.{key}")
                if found is not None:
                    return found
        return None


def _stale(kind: str, record_id: str) -> Response:
    return _fault(
        "5010",
        "Stale Object Error",
        f"Stale Object Error : You and root were working on this at the same time. root finished before you did, "
        f"so your work was not saved. ({ENTITIES[kind]} {record_id})",
    )


def create_app(
    *,
    credentials: SandboxCredentials = DEFAULT_CREDENTIALS,
    spec_path: Path | None = None,
    access_ttl: int = 3600,
    seed_parties: bool = False,
    enforce_limits: bool = False,
    minute_limit: int = 500,
    concurrent_limit: int = 10,
    batch_minute_limit: int = 40,
    time_scale: float = 1.0,
    realm_ids: Collection[str] = (),
) -> FastAPI:
    """Build the QuickBooks sandbox app.

    Args:
        credentials: client, refresh token and realm the sandbox accepts.
        spec_path: ``Finance.xsd``; default :func:`default_spec_path`; validation is skipped if absent.
        access_ttl: lifetime of issued access tokens, seconds (Intuit: 3600).
        realm_ids: more companies (realm ids) served beside ``credentials.realm_id`` (they share the
            records): one sandbox for a fleet of connections.
        seed_parties: also start with :data:`SEEDED_PARTIES` (vendors, customers). Off by default:
            booking tests count the vendors they create. The chart of accounts, tax codes and
            rates, classes and departments (:data:`SEEDED_REFERENCE`) are always there.
        enforce_limits: answer 429 ``ThrottleExceeded`` over Intuit's limits per company (below).
        minute_limit: requests per company per rolling minute, batch requests included (Intuit: 500).
        concurrent_limit: requests per company in flight at once (Intuit: 10).
        batch_minute_limit: batch requests per company per rolling minute (Intuit: 40).
        time_scale: quota seconds per real second (the minute lasts ``60 / time_scale`` s).

    The :class:`~ledgerflow.connectors.sandbox_kit.Sandbox` is ``app.state.sandbox``; whether bodies are
    validated against the spec is ``app.state.spec_validation``.
    """
    issuer = OAuthIssuer(
        {credentials.client_id: credentials.client_secret},
        consent_tokens=[credentials.refresh_token],
        access_ttl=access_ttl,
        scopes=[SCOPE, "com.intuit.quickbooks.payment", "openid", "profile", "email"],
        required_scopes=[SCOPE],
        callback_params={"realmId": credentials.realm_id},
        client_auth="basic",
    )
    sandbox = Sandbox(
        "QuickBooks Online sandbox",
        issuer=issuer,
        token_path=TOKEN_PATH,
        authorize_path=AUTHORIZE_PATH,
        total_of=_total,
        fault_body=_fault_body,
    )
    path = spec_path or default_spec_path()
    schema = _load_schema(str(path)) if path.is_file() else None
    quota = (
        QuotaGate(
            [Window("minute", minute_limit, 60.0), Window("batch", batch_minute_limit, 60.0, frozenset({"batch"}))],
            concurrent=concurrent_limit,
            time_scale=time_scale,
        )
        if enforce_limits
        else None
    )
    qbo = _QuickBooks(sandbox, credentials, schema, seed_parties=seed_parties, quota=quota)
    qbo.realms = frozenset({credentials.realm_id, *realm_ids})
    app = sandbox.app
    app.state.spec_validation = schema is not None
    app.state.quota = quota
    prefix = "/v3/company/{realm}"
    app.add_api_route(prefix + "/batch", qbo.batch, methods=["POST"])
    app.add_api_route(prefix + "/companyinfo/{company}", qbo.company_info, methods=["GET"])
    app.add_api_route(prefix + "/query", qbo.query, methods=["GET"])
    app.add_api_route(prefix + "/cdc", qbo.cdc, methods=["GET"])
    app.add_api_route(prefix + "/{entity}/{record_id}", qbo.read, methods=["GET"])
    app.add_api_route(prefix + "/{entity}", qbo.write, methods=["POST"])
    return app
