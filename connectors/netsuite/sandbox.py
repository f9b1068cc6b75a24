"""A local NetSuite REST record v1 sandbox on NetSuite's real paths.

What it reproduces (reference ``erp_apis.md`` §3; Oracle help sections cited there):

* ``PUT /services/rest/record/v1/<recordType>/eid:<externalId>`` — upsert: creates the record or
  updates the one with that external id; answers **204 No Content** with ``Location:
  …/<recordType>/<internal id>``. ``POST /<recordType>`` creates (204 + Location),
  ``PATCH /<recordType>/<id>`` updates, ``GET /<recordType>/<id | eid:…>`` reads (sublists such
  as ``expense`` and ``item`` only as links unless ``expandSubResources=true``, as NetSuite),
  ``GET /<recordType>`` lists (``items`` of ``{id, links}``).
* Bodies are validated against the record's schema in the NetSuite OpenAPI description when one
  is given (``spec_path``; :mod:`ledgerflow.connectors.netsuite.schema`), with unknown fields rejected;
  problems answer 400 ``INVALID_CONTENT`` with ``o:errorPath``.
* Validation uses the description's ``format`` keywords (``date`` fields such as ``tranDate``
  must be ISO dates, as NetSuite refuses ``01/15/2024``), and every reference ``{"id": …}`` must
  be a NetSuite internal id (digits).
* References must exist, as in NetSuite: ``entity`` (vendor for bills and purchase orders,
  customer for invoices, by ``id`` or ``externalId``, seeded or upserted), expense-line
  ``account``, item-line ``item`` and ``currency``; else 400 ``INVALID_KEY_OR_REF`` naming the
  path. A transaction without ``entity``, an expense line without ``account``, an item line
  without ``item``, a bill or invoice without lines → 400 ``USER_ERROR`` ("Please enter
  value(s) for: …"). The default sandbox is seeded (:data:`DEFAULT_VENDORS`,
  :data:`DEFAULT_CUSTOMERS`, :data:`DEFAULT_ACCOUNTS`, :data:`DEFAULT_ITEMS`,
  :data:`SANDBOX_CURRENCIES`); ``strict=False`` accepts any reference.
* Totals as NetSuite computes them: an item line without ``amount`` gets ``quantity × rate``;
  amounts are rounded to the transaction currency's minor unit; the stored record carries the
  read-only ``total`` (sum of expense and item lines), returned by ``GET`` (what a read-back
  compares with the source).
* Auth: OAuth 1.0a TBA (HMAC-SHA256, verified with ``oauthlib``) when ``tba`` credentials are
  given, and OAuth 2.0 bearer tokens from ``POST /services/rest/auth/oauth2/v1/token`` (client
  credentials). Anything else → 401 ``INVALID_LOGIN``.
* ``POST /services/rest/query/v1/suiteql?limit=&offset=`` with ``Prefer: transient`` and
  ``{"q": "<SuiteQL>"}`` (Oracle help section_157909186990, section_158394344595) over the stored
  records, for the ERP reader (:mod:`ledgerflow.connectors.netsuite.reader`): the subset
  ``SELECT <column | TO_CHAR(column, 'YYYY-MM-DD HH24:MI:SS') AS alias>, … FROM <table>
  [WHERE lastmodifieddate >= TO_TIMESTAMP('<YYYY-MM-DD HH24:MI:SS>', 'YYYY-MM-DD HH24:MI:SS')]
  [ORDER BY column [ASC|DESC], …]`` on the tables of :data:`SUITEQL_TABLES`; columns are the
  record's fields lower-cased (those of the OpenAPI description where it has the record), an
  unknown table or column, another syntax, a ``limit`` outside 1..1000 or an ``offset`` that is
  not a multiple of ``limit`` → 400 ``INVALID_PARAMETER``; no ``Prefer: transient`` → 400
  ``INVALID_HEADER``. Rows as SuiteQL answers them: strings, booleans ``T``/``F``, references
  as their internal id, dates without ``TO_CHAR`` in the account's ``M/D/YYYY`` format, null
  columns left out; ``{"links", "count", "hasMore", "items", "offset", "totalResults"}``.
  Every stored record carries ``lastModifiedDate`` (UTC, whole seconds, from ``clock``), set
  again by each write, so changed records come back in the next incremental read.
* Reference data: GL account names, sales tax items, departments, classes, locations and
  projects (:data:`SEEDED_REFERENCE`) always; with ``seed_parties`` also the vendors and
  customers of :data:`SEEDED_PARTIES`.
* Errors in the ``nsError`` shape; injected faults (``/_sandbox/faults``) too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import urlparse

from fastapi import FastAPI, Request
from fastapi.responses import Response
from oauthlib.oauth1.rfc5849 import signature

from ledgerflow.connectors.netsuite.connector import RECORD_PATH
from ledgerflow.connectors.netsuite.schema import RecordSchemas, load_schemas
from ledgerflow.connectors.sandbox_kit import DecimalJSONResponse, OAuthIssuer, Sandbox, point_at, read_json, spec_file
from ledgerflow.contracts.common import currency_precision
from ledgerflow.core.settings import ConnectionConfig

__all__ = [
    "DEFAULT_ACCOUNTS",
    "DEFAULT_CUSTOMERS",
    "DEFAULT_ITEMS",
    "DEFAULT_TBA",
    "DEFAULT_VENDORS",
    "SANDBOX_CURRENCIES",
    "SANDBOX_OPTIONS",
    "SEEDED_PARTIES",
    "SEEDED_REFERENCE",
    "SUITEQL_PATH",
    "SUITEQL_TABLES",
    "TOKEN_PATH",
    "create_app",
    "default_spec_path",
    "ns_error",
    "sandbox_connection",
]

TOKEN_PATH = "/services/rest/auth/oauth2/v1/token"  # noqa: S105 - a URL path, not a secret
"""NetSuite's OAuth 2.0 token endpoint path."""

_ENTITY_KIND = {"vendorBill": "vendor", "purchaseOrder": "vendor", "invoice": "customer"}
_STATUS_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_STATUS_CODES = {429: "CONCURRENCY_LIMIT_EXCEEDED", 500: "UNEXPECTED_ERROR"}


def ns_error(status: int, code: str, detail: str, path: str | None = None) -> dict[str, Any]:
    """An ``nsError`` body: ``{"type", "title", "status", "o:errorDetails": [{detail, o:errorCode, o:errorPath}]}``."""
    entry: dict[str, Any] = {"detail": detail, "o:errorCode": code}
    if path is not None:
        entry["o:errorPath"] = path
    return {
        "type": "https://www.rfc-editor.org/rfc/rfc9110.html#section-15",
        "title": _STATUS_TITLES.get(status, "Error"),
        "status": status,
        "o:errorDetails": [entry],
    }


def _error(status: int, code: str, detail: str, path: str | None = None) -> Response:
    return DecimalJSONResponse(ns_error(status, code, detail, path), status_code=status)


def _lines(record: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for sublist in ("expense", "item"):
        container = record.get(sublist)
        items = container.get("items") if isinstance(container, dict) else None
        out.extend(line for line in items or [] if isinstance(line, dict))
    return out


def _total(kind: str, record: dict[str, Any]) -> Decimal | None:
    lines = _lines(record)
    if not lines:
        return None
    return sum((Decimal(str(line.get("amount", 0))) for line in lines), Decimal(0))


_INTERNAL_ID = re.compile(r"^[0-9]+$")

SANDBOX_CURRENCIES: dict[str, str] = {
    code: str(index)
    for index, code in enumerate(
        ("USD", "GBP", "CAD", "EUR", "JPY", "AUD", "CHF", "KWD", "BHD", "JOD", "SEK", "NZD", "INR", "MXN", "ZAR"),
        start=1,
    )
}
"""Currencies of the default sandbox account: ISO code → internal id (USD is 1, as in a US account)."""

DEFAULT_VENDORS: dict[str, tuple[str, str]] = {
    "1001": ("Big Box Store", "MY-DB-ID-90909"),
}
"""Seeded vendors: internal id → (company name, external id). 1001 is the Mercoa sample's vendor."""

DEFAULT_CUSTOMERS: dict[str, tuple[str, str]] = {
    "2001": ("Harbour Builders", "seed-2001"),
}
"""Seeded customers: internal id → (company name, external id)."""

DEFAULT_ACCOUNTS: tuple[str, ...] = ("600394", "58", "61", "6000", "6100", "2200", "5200", "4900")
"""GL accounts of the default sandbox (internal id = account number = external id).

``600394`` is the Mercoa sample's expense account; ``2200`` tax, ``5200`` freight and ``4900``
discounts are what :data:`SANDBOX_OPTIONS` configures for header charges.
"""

DEFAULT_ITEMS: tuple[str, ...] = ("5", "10", "90", "91", "92")
"""Items of the default sandbox: ``5``/``10`` services; ``90`` tax, ``91`` shipping and ``92``
discount (Other Charge / Discount items configured by :data:`SANDBOX_OPTIONS`)."""

SANDBOX_OPTIONS: dict[str, Any] = {
    "currency_ids": SANDBOX_CURRENCIES,
    "tax_account": "2200",
    "shipping_account": "5200",
    "discount_account": "4900",
    "tax_item_id": "90",
    "shipping_item_id": "91",
    "discount_item_id": "92",
}
"""Connection options matching the default sandbox's account (the connection's own options win)."""

_CURRENCY_CODES = {internal: code for code, internal in SANDBOX_CURRENCIES.items()}


SUITEQL_PATH = "/services/rest/query/v1/suiteql"
"""NetSuite's SuiteQL endpoint (REST query service), beside the record service."""

SUITEQL_TABLES: dict[str, tuple[str, frozenset[str] | None]] = {
    "vendor": ("vendor", None),
    "customer": ("customer", None),
    "account": ("account", None),
    "salestaxitem": ("salesTaxItem", None),
    "department": (
        "department",
        frozenset({"id", "name", "fullname", "isinactive", "parent", "subsidiary", "externalid", "lastmodifieddate"}),
    ),
    "classification": (
        "classification",
        frozenset({"id", "name", "fullname", "isinactive", "parent", "subsidiary", "externalid", "lastmodifieddate"}),
    ),
    "location": (
        "location",
        frozenset({"id", "name", "fullname", "isinactive", "parent", "subsidiary", "externalid", "lastmodifieddate"}),
    ),
    "transaction": (
        "transaction",
        frozenset(
            {"id", "tranid", "trandate", "type", "entity", "currency", "foreigntotal", "externalid", "lastmodifieddate"}
        ),
    ),
    "previoustransactionlinelink": (
        "previoustransactionlinelink",
        frozenset({"previousdoc", "nextdoc", "linktype", "foreignamount", "previoustype", "nexttype"}),
    ),
    "currency": ("currency", frozenset({"id", "symbol", "name", "isinactive"})),
    "job": (
        "job",
        frozenset(
            {
                "id",
                "entityid",
                "companyname",
                "altname",
                "isinactive",
                "parent",
                "customer",
                "entitystatus",
                "startdate",
                "projectedenddate",
                "externalid",
                "lastmodifieddate",
            }
        ),
    ),
}
"""SuiteQL table → (stored record type, its columns). None: the columns are the record's fields in
the OpenAPI description (lower-cased), which the sandbox needs for those tables; without the
description any column of a stored record is accepted. The captured description has no
``lastModifiedDate`` on ``salesTaxItem``: sales tax items are read whole (snapshot)."""

SEEDED_REFERENCE: dict[str, tuple[dict[str, Any], ...]] = {
    "salesTaxItem": (
        {"id": "301", "itemId": "CA STATE", "description": "California state sales tax", "rate": "7.25%"},
        {"id": "302", "itemId": "NY STATE", "description": "New York state sales tax", "rate": "4.0%"},
        {"id": "303", "itemId": "EXEMPT", "description": "Tax exempt", "rate": "0.0%", "isInactive": False},
    ),
    "department": (
        {"id": "101", "name": "Head office", "isInactive": False},
        {"id": "102", "name": "Site operations", "isInactive": False},
    ),
    "classification": (
        {"id": "111", "name": "03-300 Concrete", "isInactive": False},
        {"id": "112", "name": "09-900 Finishes", "isInactive": True},
    ),
    "location": (
        {"id": "121", "name": "Site 12 Harbour St", "isInactive": False},
        {"id": "122", "name": "Yard", "isInactive": False, "parent": {"id": "121"}},
    ),
    "job": (
        {"id": "131", "entityId": "PRJ-17", "companyName": "Harbour St Tower", "parent": {"id": "2001"}},
        {"id": "132", "entityId": "PRJ-09", "companyName": "Riverside Car Park", "isInactive": True},
    ),
}
"""Reference records every sandbox starts with (besides :data:`DEFAULT_ACCOUNTS`, which get the
names of :data:`ACCOUNT_NAMES`), keyed by record type."""

ACCOUNT_NAMES: dict[str, str] = {
    "600394": "Job Materials",
    "58": "Subcontractors",
    "61": "Equipment Rental",
    "6000": "Construction Costs",
    "6100": "Site Overheads",
    "2200": "Sales Tax Payable",
    "5200": "Freight In",
    "4900": "Purchase Discounts",
}
"""Names (``acctName``) of the default chart of accounts."""

SEEDED_PARTIES: dict[str, tuple[dict[str, Any], ...]] = {
    "vendor": (
        {"id": "1002", "companyName": "Bayside Concrete Supply", "entityId": "V-1002", "isInactive": False},
        {"id": "1003", "companyName": "Northwind Electrical", "entityId": "V-1003", "isInactive": False},
        {"id": "1004", "companyName": "Harbour Scaffolding Ltd", "entityId": "V-1004", "isInactive": True},
    ),
    "customer": ({"id": "2002", "companyName": "Riverside Developments", "entityId": "C-2002", "isInactive": False},),
}
"""Vendors and customers added with ``seed_parties=True`` (besides :data:`DEFAULT_VENDORS` and
:data:`DEFAULT_CUSTOMERS`)."""

_SUITEQL = re.compile(
    r"^\s*SELECT\s+(?P<columns>.+?)\s+FROM\s+(?P<table>\w+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?"
    r"(?:\s+ORDER\s+BY\s+(?P<order>.+?))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_TIMESTAMP_FORMAT = "YYYY-MM-DD HH24:MI:SS"
_DATE_FORMAT = "YYYY-MM-DD"
_TO_CHAR = re.compile(
    rf"^TO_CHAR\(\s*(?P<column>\w+)\s*,\s*'(?P<format>{_TIMESTAMP_FORMAT}|{_DATE_FORMAT})'\s*\)\s+AS\s+(?P<alias>\w+)$",
    re.IGNORECASE,
)
_WHERE = re.compile(
    rf"^(?P<column>\w+)\s*>=\s*TO_TIMESTAMP\(\s*'(?P<stamp>[^']*)'\s*,\s*'{_TIMESTAMP_FORMAT}'\s*\)$", re.IGNORECASE
)
_EQUALS = re.compile(r"^(?P<column>\w+)\s*=\s*'(?P<value>[^']*)'$")
_IN = re.compile(r"^(?P<column>\w+)\s+IN\s*\((?P<values>\s*\d+(?:\s*,\s*\d+)*\s*)\)$", re.IGNORECASE)
_AND = re.compile(r"\s+AND\s+", re.IGNORECASE)
_TRANSACTION_TYPES = {"vendorBill": "VendBill", "vendorPayment": "VendPymt"}
"""Stored record type → SuiteQL ``transaction.type`` of the transactions the sandbox reads."""
_ORDER = re.compile(r"^(?P<column>\w+)(?:\s+(?P<direction>ASC|DESC))?$", re.IGNORECASE)
_MAX_SUITEQL_LIMIT = 1000


def _stamp(when: datetime) -> str:
    """``lastModifiedDate`` as the REST record service writes it: UTC, whole seconds, ``Z``."""
    return when.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_stamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _suiteql_value(value: Any) -> str | None:
    """A stored REST field as SuiteQL answers it: text, ``T``/``F``, a reference as its id."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, dict):
        return str(value["id"]) if value.get("id") is not None else None
    if isinstance(value, list):
        return None
    return str(value)


def _bad_query(detail: str) -> Response:
    return _error(
        400,
        "INVALID_PARAMETER",
        f"Invalid search query. Detailed unprocessed description follows. Search error occurred: {detail}",
    )


def _split_columns(text: str) -> list[str]:
    """Comma-separated select items (commas inside parentheses or quotes do not split)."""
    parts: list[str] = []
    depth, quoted, start = 0, False, 0
    for index, char in enumerate(text):
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            parts.append(text[start:index].strip())
            start = index + 1
    parts.append(text[start:].strip())
    return parts


class _NetSuite:
    def __init__(
        self,
        sandbox: Sandbox,
        schemas: RecordSchemas | None,
        tba: Mapping[str, str] | None,
        *,
        strict: bool,
        currencies: Mapping[str, str],
        clock: Callable[[], datetime],
    ) -> None:
        self.clock = clock
        self.strict = strict
        self.currencies = {internal: code for code, internal in currencies.items()}
        self.sandbox = sandbox
        self.store = sandbox.store
        self.schemas = schemas
        self.tba = dict(tba) if tba else None

    def authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization")
        if self.sandbox.issuer.verify(header):
            return True
        if self.tba is None or not header or not header.startswith("OAuth "):
            return False
        url = str(request.url)
        params = signature.collect_parameters(
            uri_query=urlparse(url).query, headers={"Authorization": header}, exclude_oauth_signature=False
        )
        given = dict(params)
        if (
            given.get("oauth_consumer_key") != self.tba["consumer_key"]
            or given.get("oauth_token") != self.tba["token_id"]
        ):
            return False
        if given.get("oauth_signature_method") != "HMAC-SHA256":
            return False
        # What oauthlib's verifier reads: uri, http_method, params (without the signature), signature.
        signed = SimpleNamespace(
            uri=url,
            http_method=request.method.upper(),
            params=[(k, v) for k, v in params if k != "oauth_signature"],
            signature=given.get("oauth_signature", ""),
        )
        secrets = (self.tba["consumer_secret"], self.tba["token_secret"])
        return bool(signature.verify_hmac_sha256(cast(Any, signed), *secrets))

    def location(self, request: Request, record_type: str, record_id: str) -> str:
        return str(request.base_url).rstrip("/") + f"{RECORD_PATH}/{record_type}/{record_id}"

    def find(self, record_type: str, key: str) -> tuple[str, dict[str, Any]] | None:
        if key.startswith("eid:"):
            eid = key.removeprefix("eid:")
            for record_id, record in self.store.records.get(record_type, {}).items():
                if record.get("externalId") == eid:
                    return record_id, record
            return None
        stored = self.store.get(record_type, key)
        return (key, stored) if stored is not None else None

    def resolves(self, kind: str, ref: Any) -> bool:
        """Whether reference ``ref`` (``{"id"}`` or ``{"externalId"}``) names a stored ``kind`` record."""
        if not isinstance(ref, dict):
            return False
        if ref.get("id") is not None:
            return self.find(kind, str(ref["id"])) is not None
        if ref.get("externalId"):
            return self.find(kind, f"eid:{ref['externalId']}") is not None
        return False

    def problems(self, record_type: str, body: Any) -> Response | None:
        if not isinstance(body, dict):
            return _error(400, "INVALID_CONTENT", "The request body must be a JSON object.")
        if self.schemas is not None:
            for problem in self.schemas.problems(record_type, body):
                return _error(400, "INVALID_CONTENT", problem.message, problem.path)
        if (bad := _bad_internal_id(body, "")) is not None:
            path, value = bad
            return _error(400, "INVALID_KEY_OR_REF", f"Invalid reference key {value!r}: not an internal id.", path)
        kind = _ENTITY_KIND.get(record_type)
        if kind is None:
            return None
        entity = body.get("entity")
        if not isinstance(entity, dict):
            return _error(400, "USER_ERROR", f"Please enter value(s) for: {kind.capitalize()}", "entity")
        if self.strict and not self.resolves(kind, entity):
            key = f"eid:{entity['externalId']}" if entity.get("externalId") else str(entity.get("id", ""))
            return _error(400, "INVALID_KEY_OR_REF", f"Invalid entity reference key {key}.", "entity")
        currency = body.get("currency")
        if isinstance(currency, dict) and self.strict and str(currency.get("id")) not in self.currencies:
            currency_key = currency.get("id")
            return _error(400, "INVALID_KEY_OR_REF", f"Invalid currency reference key {currency_key}.", "currency")
        if not _lines(body):
            return _error(400, "USER_ERROR", "You must enter at least one line item for this transaction.", "item")
        for sublist, field, ref_kind in (("expense", "account", "account"), ("item", "item", "item")):
            container = body.get(sublist)
            for index, line in enumerate(container.get("items", []) if isinstance(container, dict) else []):
                path = f"{sublist}.items[{index}].{field}"
                ref = line.get(field) if isinstance(line, dict) else None
                if not isinstance(ref, dict):
                    return _error(400, "USER_ERROR", f"Please enter value(s) for: {field.capitalize()}", path)
                if self.strict and not self.resolves(ref_kind, ref):
                    key = ref.get("id") or f"eid:{ref.get('externalId')}"
                    return _error(400, "INVALID_KEY_OR_REF", f"Invalid {field} reference key {key}.", path)
                if sublist == "item" and "amount" not in line and not ("quantity" in line and "rate" in line):
                    return _error(400, "USER_ERROR", "Please enter value(s) for: Amount", f"item.items[{index}].amount")
        return None

    def booked(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` as NetSuite stores it: line amounts computed and rounded, ``total`` set."""
        currency = record.get("currency")
        code = self.currencies.get(str(currency.get("id"))) if isinstance(currency, dict) else None
        unit = Decimal(1).scaleb(-currency_precision(code)) if code else Decimal("0.01")
        for line in _lines(record):
            amount = line.get("amount")
            if amount is None and "quantity" in line and "rate" in line:
                amount = Decimal(str(line["quantity"])) * Decimal(str(line["rate"]))
            if amount is not None:
                line["amount"] = Decimal(str(amount)).quantize(unit, rounding=ROUND_HALF_UP)
        if (total := _total("", record)) is not None:
            record["total"] = total
        applied = _applied(record)
        for line in applied:
            line["amount"] = Decimal(str(line["amount"])).quantize(unit, rounding=ROUND_HALF_UP)
        if applied:
            record["total"] = sum((line["amount"] for line in applied), Decimal(0))
        return record

    def payment_problems(self, body: dict[str, Any], record_id: str | None) -> Response | None:
        """The error NetSuite answers for vendor payment ``body``, or None.

        Refused: no payee, nothing applied, an unknown bill, an amount that is not positive or
        exceeds what the bill still owes after the other payments (``record_id``: the payment
        being updated, whose own amounts do not count).
        """
        entity = body.get("entity")
        if not isinstance(entity, dict):
            return _error(400, "USER_ERROR", "Please enter value(s) for: Payee", "entity")
        if self.strict and not self.resolves("vendor", entity):
            return _error(400, "INVALID_KEY_OR_REF", f"Invalid entity reference key {entity.get('id')}.", "entity")
        lines = _applied(body)
        if not lines:
            return _error(400, "USER_ERROR", "You must enter at least one line item for this transaction.", "apply")
        pending: dict[str, Decimal] = {}
        for index, line in enumerate(lines):
            path = f"apply.items[{index}]"
            bill = self.find("vendorBill", str(line["doc"].get("id", "")))
            if bill is None:
                return _error(400, "INVALID_KEY_OR_REF", f"Invalid doc reference key {line['doc'].get('id')}.", path)
            try:
                amount = Decimal(str(line.get("amount")))
            except ArithmeticError:
                return _error(400, "INVALID_CONTENT", "The amount must be a number.", f"{path}.amount")
            if not amount.is_finite() or amount <= 0:
                return _error(400, "USER_ERROR", "The payment amount must be positive.", f"{path}.amount")
            bill_id, stored = bill
            paid = sum(
                (
                    Decimal(str(other["amount"]))
                    for payment_id, payment in self.store.records.get("vendorPayment", {}).items()
                    if payment_id != record_id
                    for other in _applied(payment)
                    if str(other["doc"].get("id")) == bill_id
                ),
                Decimal(0),
            )
            due = Decimal(str(stored.get("total") or 0)) - paid - pending.get(bill_id, Decimal(0))
            pending[bill_id] = pending.get(bill_id, Decimal(0)) + amount
            if amount > due:
                return _error(
                    400, "USER_ERROR", f"The amount applied to bill {bill_id} exceeds its amount due {due}.", path
                )
        return None

    async def upsert(self, request: Request, record_type: str, key: str) -> Response:
        if not self.authorised(request):
            return _error(401, "INVALID_LOGIN", "Invalid login attempt.")
        try:
            body = await read_json(request)
        except ValueError:
            return _error(400, "INVALID_CONTENT", "The request body is not valid JSON.")
        if (problem := self.problems(record_type, body)) is not None:
            return problem
        found = self.find(record_type, key)
        if record_type == "vendorPayment":
            merged = {**(found[1] if found else {}), **body}
            if (problem := self.payment_problems(merged, found[0] if found else None)) is not None:
                return problem
        if found is None and (request.method == "PATCH" or not key.startswith("eid:")):
            return _error(404, "NONEXISTENT_ID", f"The record instance does not exist: {record_type} {key}.")
        if found is None:
            record_id = self.store.next_id()
            record = {**body, "externalId": key.removeprefix("eid:"), "id": record_id}
        else:
            record_id, existing = found
            record = {**existing, **body, "id": record_id}
        record["lastModifiedDate"] = _stamp(self.clock())
        self.store.put(record_type, record_id, self.booked(record))
        return Response(status_code=204, headers={"Location": self.location(request, record_type, record_id)})

    async def create(self, request: Request, record_type: str) -> Response:
        if not self.authorised(request):
            return _error(401, "INVALID_LOGIN", "Invalid login attempt.")
        try:
            body = await read_json(request)
        except ValueError:
            return _error(400, "INVALID_CONTENT", "The request body is not valid JSON.")
        if (problem := self.problems(record_type, body)) is not None:
            return problem
        if record_type == "vendorPayment" and (problem := self.payment_problems(body, None)) is not None:
            return problem
        record_id = self.store.next_id()
        record = {**body, "id": record_id, "lastModifiedDate": _stamp(self.clock())}
        self.store.put(record_type, record_id, self.booked(record))
        return Response(status_code=204, headers={"Location": self.location(request, record_type, record_id)})

    async def read(self, request: Request, record_type: str, key: str) -> Response:
        if not self.authorised(request):
            return _error(401, "INVALID_LOGIN", "Invalid login attempt.")
        found = self.find(record_type, key)
        if found is None:
            return _error(404, "NONEXISTENT_ID", f"The record instance does not exist: {record_type} {key}.")
        record_id, record = found
        if request.query_params.get("expandSubResources", "").lower() == "true":
            return DecimalJSONResponse(record)
        # As NetSuite: sublists are links to their own resources unless expandSubResources=true.
        base = self.location(request, record_type, record_id)
        collapsed = {
            key: {"links": [{"rel": "self", "href": f"{base}/{key}"}]} if key in ("expense", "item") else value
            for key, value in record.items()
        }
        return DecimalJSONResponse(collapsed)

    def columns(self, record_type: str, fixed: frozenset[str] | None) -> frozenset[str] | None:
        """SuiteQL columns of ``record_type``: ``fixed``, else its described fields lower-cased (None: any)."""
        if fixed is not None:
            return fixed
        described = self.schemas.fields(record_type) if self.schemas is not None else None
        return None if described is None else frozenset(name.lower() for name in described) | {"id"}

    async def suiteql(self, request: Request) -> Response:
        """``POST /services/rest/query/v1/suiteql``: the SuiteQL subset of the module docstring."""
        if not self.authorised(request):
            return _error(401, "INVALID_LOGIN", "Invalid login attempt.")
        if "transient" not in request.headers.get("prefer", "").lower():
            return _error(400, "INVALID_HEADER", "SuiteQL requests need the header Prefer: transient.")
        try:
            limit = int(request.query_params.get("limit", str(_MAX_SUITEQL_LIMIT)))
            offset = int(request.query_params.get("offset", "0"))
        except ValueError:
            return _error(400, "INVALID_PARAMETER", "The limit and offset parameters must be integers.")
        if not 1 <= limit <= _MAX_SUITEQL_LIMIT:
            return _error(400, "INVALID_PARAMETER", f"The limit parameter must be between 1 and {_MAX_SUITEQL_LIMIT}.")
        if offset < 0 or offset % limit:
            return _error(400, "INVALID_PARAMETER", "The offset parameter value must be a multiple of the limit.")
        try:
            body = await read_json(request)
        except ValueError:
            return _error(400, "INVALID_CONTENT", "The request body is not valid JSON.")
        query = body.get("q") if isinstance(body, dict) else None
        if not isinstance(query, str) or set(body) != {"q"}:
            return _error(400, "INVALID_CONTENT", 'The request body must be {"q": "<SuiteQL query>"}.')
        match = _SUITEQL.match(query)
        if match is None:
            return _bad_query(f"cannot parse {query!r}")
        table = match["table"].lower()
        if table not in SUITEQL_TABLES:
            return _bad_query(f"Record '{match['table']}' was not found.")
        record_type, fixed = SUITEQL_TABLES[table]
        known = self.columns(record_type, fixed)

        def unknown(column: str) -> Response | None:
            if known is not None and column.lower() not in known:
                return _bad_query(f"Field '{column}' for record '{table}' was not found.")
            return None

        selected: list[tuple[str, str, str | None]] = []  # (output name, column, TO_CHAR format)
        for item in _split_columns(match["columns"]):
            if (formatted := _TO_CHAR.match(item)) is not None:
                selected.append((formatted["alias"].lower(), formatted["column"].lower(), formatted["format"].upper()))
            elif re.fullmatch(r"\w+", item):
                selected.append((item.lower(), item.lower(), None))
            else:
                return _bad_query(f"unsupported select item {item!r}")
        rows = self.table_rows(table, record_type)
        for condition in _AND.split(match["where"].strip()) if match["where"] is not None else []:
            column, test = "", None
            if (stamp := _WHERE.match(condition)) is not None:
                try:
                    since = datetime.strptime(stamp["stamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
                except ValueError:
                    return _bad_query(f"{stamp['stamp']!r} does not match the format {_TIMESTAMP_FORMAT}")
                column = stamp["column"].lower()
                test = functools.partial(_at_or_after, column, since)
            elif (equals := _EQUALS.match(condition)) is not None:
                column = equals["column"].lower()
                test = functools.partial(_equals, column, equals["value"])
            elif (among := _IN.match(condition)) is not None:
                column = among["column"].lower()
                test = functools.partial(_among, column, frozenset(v.strip() for v in among["values"].split(",")))
            if test is None:
                return _bad_query(f"unsupported condition {condition!r}")
            if (problem := unknown(column)) is not None:
                return problem
            rows = [row for row in rows if test(row)]
        for _name, column, _ in selected:
            if (problem := unknown(column)) is not None:
                return problem
        if match["order"] is not None:
            keys: list[tuple[str, bool]] = []
            for part in match["order"].split(","):
                order = _ORDER.match(part.strip())
                if order is None:
                    return _bad_query(f"unsupported ORDER BY {match['order']!r}")
                if (problem := unknown(order["column"])) is not None:
                    return problem
                keys.append((order["column"].lower(), (order["direction"] or "").upper() == "DESC"))
            for column, descending in reversed(keys):
                rows.sort(key=functools.partial(_row_key, column), reverse=descending)
        page = rows[offset : offset + limit]
        items = [self.suiteql_row(row, selected) for row in page]
        url = str(request.url)
        return DecimalJSONResponse(
            {
                "links": [{"rel": "self", "href": url}],
                "count": len(items),
                "hasMore": offset + limit < len(rows),
                "items": items,
                "offset": offset,
                "totalResults": len(rows),
            }
        )

    def table_rows(self, table: str, record_type: str) -> list[dict[str, Any]]:
        """The rows of SuiteQL ``table``: stored records with lower-cased fields, or derived ones.

        ``transaction``: vendor bills (``VendBill``) and payments (``VendPymt``) with ``tranid``,
        ``trandate``, ``entity``, ``currency``, ``foreigntotal``; ``previoustransactionlinelink``:
        one ``Payment`` link per applied line of a vendor payment (``previousdoc`` the bill,
        ``nextdoc`` the payment, ``foreignamount`` what was applied).
        """
        if table == "transaction":
            return [
                {
                    "id": record["id"],
                    "tranid": record.get("tranId"),
                    "trandate": record.get("tranDate"),
                    "type": code,
                    "entity": record.get("entity"),
                    "currency": record.get("currency"),
                    "foreigntotal": record.get("total"),
                    "externalid": record.get("externalId"),
                    "lastmodifieddate": record.get("lastModifiedDate"),
                }
                for stored_type, code in _TRANSACTION_TYPES.items()
                for record in self.store.all(stored_type)
            ]
        if table == "previoustransactionlinelink":
            return [
                {
                    "previousdoc": line["doc"]["id"],
                    "nextdoc": payment["id"],
                    "linktype": "Payment",
                    "foreignamount": line.get("amount"),
                    "previoustype": "VendBill",
                    "nexttype": "VendPymt",
                }
                for payment in self.store.all("vendorPayment")
                for line in _applied(payment)
            ]
        return [{key.lower(): value for key, value in record.items()} for record in self.store.all(record_type)]

    @staticmethod
    def suiteql_row(row: dict[str, Any], selected: list[tuple[str, str, str | None]]) -> dict[str, Any]:
        """One result row: the selected columns that are not null, as SuiteQL answers them.

        Dates and timestamps without ``TO_CHAR`` come back in the account's date format
        (``M/D/YYYY``, no time), as SuiteQL answers them.
        """
        out: dict[str, Any] = {"links": []}
        for name, column, fmt in selected:
            value = row.get(column)
            when = _parse_when(value) if column in ("lastmodifieddate", "trandate") else None
            if when is not None:
                if fmt == _TIMESTAMP_FORMAT:
                    value = when.strftime("%Y-%m-%d %H:%M:%S")
                elif fmt == _DATE_FORMAT:
                    value = when.strftime("%Y-%m-%d")
                else:
                    value = f"{when.month}/{when.day}/{when.year}"
            else:
                value = _suiteql_value(value)
            if value is not None:
                out[name] = value
        return out

    async def listing(self, request: Request, record_type: str, limit: int = 1000, offset: int = 0) -> Response:
        if not self.authorised(request):
            return _error(401, "INVALID_LOGIN", "Invalid login attempt.")
        ids = list(self.store.records.get(record_type, {}))
        page = ids[offset : offset + limit]
        items = [{"id": i, "links": [{"rel": "self", "href": self.location(request, record_type, i)}]} for i in page]
        return DecimalJSONResponse(
            {
                "count": len(items),
                "hasMore": offset + limit < len(ids),
                "items": items,
                "offset": offset,
                "totalResults": len(ids),
            }
        )


DEFAULT_TBA: dict[str, str] = {
    "consumer_key": "ledgerflow-consumer",
    "consumer_secret": "sandbox-consumer-secret",
    "token_id": "ledgerflow-token",
    "token_secret": "sandbox-token-secret",
}
"""TBA credentials the sandbox accepts by default (see :func:`sandbox_connection`)."""

SANDBOX_ACCOUNT_ID = "1234567_SB1"


def default_spec_path() -> Path:
    """``$LEDGERFLOW_SPECS_DIR/netsuite-oas.json``, else ``../shared/specs/netsuite-oas.json`` beside the project."""
    return spec_file("netsuite-oas.json")


def sandbox_connection(config: ConnectionConfig, base_url: str) -> ConnectionConfig:
    """``config`` pointed at a running sandbox with the default TBA credentials.

    Options: :data:`SANDBOX_OPTIONS` (the sandbox account's currencies and charge accounts and
    items) under the connection's own options, which win.
    """
    creds = {"account_id": SANDBOX_ACCOUNT_ID, **DEFAULT_TBA}
    wired = point_at(config, base_url, creds)
    data = wired.model_dump()
    data["options"] = {**SANDBOX_OPTIONS, **data.get("options", {})}
    data["credentials"] = creds
    return ConnectionConfig.model_validate(data)


def create_app(
    spec_path: Path | None = None,
    *,
    clients: Mapping[str, str] | None = None,
    tba: Mapping[str, str] | None = DEFAULT_TBA,
    vendors: Mapping[str, str] | None = None,
    customers: Mapping[str, str] | None = None,
    external_ids: Mapping[str, str] | None = None,
    accounts: Iterable[str] | None = None,
    items: Iterable[str] | None = None,
    currencies: Mapping[str, str] | None = None,
    strict: bool = True,
    seed_parties: bool = False,
    clock: Callable[[], datetime] | None = None,
) -> FastAPI:
    """Build the NetSuite sandbox FastAPI app.

    Args:
        spec_path: NetSuite OpenAPI JSON; bodies of record types it describes are validated
            against it. None → :func:`default_spec_path`; a missing file → no schema validation.
        clients: OAuth 2.0 client id → secret for the client-credentials token endpoint.
        tba: TBA credentials accepted (``consumer_key``, ``consumer_secret``, ``token_id``,
            ``token_secret``), or None to accept bearer tokens only.
        vendors: seeded vendors, internal id → company name; None → :data:`DEFAULT_VENDORS`.
        customers: seeded customers, internal id → company name; None → :data:`DEFAULT_CUSTOMERS`.
        external_ids: external ids of seeded vendors/customers, internal id → external id
            (default ``seed-<internal id>``).
        accounts: internal ids of the GL accounts that exist (each also has itself as external
            id); None → :data:`DEFAULT_ACCOUNTS`.
        items: internal ids of the items that exist; None → :data:`DEFAULT_ITEMS`.
        currencies: ISO code → internal id of the account's currencies; None → :data:`SANDBOX_CURRENCIES`.
        strict: refuse references to records that do not exist (``INVALID_KEY_OR_REF``), as
            NetSuite does; False accepts any reference (other checks stay).
        seed_parties: also start with :data:`SEEDED_PARTIES` (more vendors and customers, one
            of each kind inactive) for the ERP reader's tests.
        clock: the time writes stamp into ``lastModifiedDate`` (UTC; default the wall clock).

    Returns:
        The FastAPI app; its :class:`~ledgerflow.connectors.sandbox_kit.Sandbox` is ``app.state.sandbox``.

    """
    sandbox = Sandbox(
        "NetSuite REST record v1 sandbox",
        issuer=OAuthIssuer(clients or {"ledgerflow": "sandbox-secret"}, access_ttl=3600),
        token_path=TOKEN_PATH,
        total_of=_total,
        fault_body=lambda status: ns_error(
            status, _STATUS_CODES.get(status, "UNEXPECTED_ERROR"), f"Injected fault {status}."
        ),
    )
    spec_path = spec_path if spec_path is not None else default_spec_path()
    schemas = load_schemas(spec_path) if spec_path.is_file() else None
    currencies = dict(currencies if currencies is not None else SANDBOX_CURRENCIES)
    clock = clock or (lambda: datetime.now(UTC))
    netsuite = _NetSuite(sandbox, schemas, tba, strict=strict, currencies=currencies, clock=clock)
    eids = dict(external_ids or {})
    for kind, given, defaults in (("vendor", vendors, DEFAULT_VENDORS), ("customer", customers, DEFAULT_CUSTOMERS)):
        seeds = {rid: (name, eids.get(rid, f"seed-{rid}")) for rid, name in given.items()} if given else defaults
        for record_id, (name, eid) in seeds.items():
            sandbox.store.put(kind, record_id, {"id": record_id, "companyName": name, "externalId": eid})
    for record_id in accounts if accounts is not None else DEFAULT_ACCOUNTS:
        sandbox.store.put("account", record_id, {"id": record_id, "acctNumber": record_id, "externalId": record_id})
    for record_id in items if items is not None else DEFAULT_ITEMS:
        sandbox.store.put("item", record_id, {"id": record_id, "externalId": f"item-{record_id}"})
    for code, record_id in currencies.items():
        sandbox.store.put("currency", record_id, {"id": record_id, "symbol": code})
    reference = {**SEEDED_REFERENCE, **(SEEDED_PARTIES if seed_parties else {})}
    for record_type, records in reference.items():
        for seed in records:
            existing = sandbox.store.get(record_type, seed["id"]) or {}
            sandbox.store.put(record_type, seed["id"], {**existing, **seed})
    seeded = _stamp(clock())
    for record_type, stored in sandbox.store.records.items():
        for record_id, record in stored.items():
            record.setdefault("lastModifiedDate", seeded)
            if record_type == "account" and record_id in ACCOUNT_NAMES:
                record.setdefault("acctName", ACCOUNT_NAMES[record_id])
    app = sandbox.app
    app.add_api_route(SUITEQL_PATH, netsuite.suiteql, methods=["POST"])
    app.add_api_route(f"{RECORD_PATH}/{{record_type}}/{{key}}", netsuite.upsert, methods=["PUT", "PATCH"])
    app.add_api_route(f"{RECORD_PATH}/{{record_type}}/{{key}}", netsuite.read, methods=["GET"])
    app.add_api_route(f"{RECORD_PATH}/{{record_type}}", netsuite.create, methods=["POST"])
    app.add_api_route(f"{RECORD_PATH}/{{record_type}}", netsuite.listing, methods=["GET"])
    return app


def _parse_when(value: Any) -> datetime | None:
    """A stored ``lastModifiedDate`` (ISO date-time) or ``tranDate`` (ISO date) as UTC, else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=UTC)
    except ValueError:
        return None


def _at_or_after(column: str, since: datetime, row: dict[str, Any]) -> bool:
    value = _parse_stamp(row.get(column))
    return value is not None and value >= since


def _equals(column: str, wanted: str, row: dict[str, Any]) -> bool:
    return _suiteql_value(row.get(column)) == wanted


def _among(column: str, wanted: frozenset[str], row: dict[str, Any]) -> bool:
    return _suiteql_value(row.get(column)) in wanted


def _applied(payment: dict[str, Any]) -> list[dict[str, Any]]:
    """The applied lines of a stored vendor payment (``apply.items`` with ``apply`` not false)."""
    container = payment.get("apply")
    items = container.get("items") if isinstance(container, dict) else None
    return [
        line
        for line in items or []
        if isinstance(line, dict) and line.get("apply") is not False and isinstance(line.get("doc"), dict)
    ]


def _row_key(column: str, row: dict[str, Any]) -> tuple[int, Any]:
    return _sort_key(row.get(column))


def _sort_key(value: Any) -> tuple[int, Any]:
    """Sort key of a stored value: timestamps in time order, digits numerically, other text as text."""
    stamp = _parse_stamp(value) if isinstance(value, str) and value[:4].isdigit() and "T" in value else None
    if stamp is not None:
        return (0, stamp.timestamp())
    text = "" if value is None else str(value.get("id") if isinstance(value, dict) else value)
    return (1, int(text)) if text.isdigit() else (2, text)


def _bad_internal_id(node: Any, path: str) -> tuple[str, str] | None:
    """The first nested reference whose ``id`` is not an internal id (digits): ``(path, value)``."""
    if isinstance(node, dict):
        for key, value in node.items():
            child = f"{path}.{key}" if path else key
            if key == "id" and path and not (isinstance(value, str | int) and _INTERNAL_ID.match(str(value))):
                return path, str(value)
            if (found := _bad_internal_id(value, child)) is not None:
                return found
    elif isinstance(node, list):
        for index, value in enumerate(node):
            if (found := _bad_internal_id(value, f"{path}[{index}]")) is not None:
                return found
    return None
