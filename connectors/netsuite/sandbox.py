"""A local NetSuite REST record v1 sandbox on NetSuite's real paths.

What it reproduces (reference ``erp_apis.md`` §3; Oracle help sections cited there):

* ``PUT /services/rest/record/v1/<recordType>/eid:<externalId>`` — upsert: creates the record or
  updates the one with that external id; answers **204 No Content** with ``Location:
  …/<recordType>/<internal id>``. ``POST /<recordType>`` creates (204 + Location),
  ``PATCH /<recordType>/<id>`` updates, ``GET /<recordType>/<id | eid:…>`` reads,
  ``GET /<recordType>`` lists (``items`` of ``{id, links}``).
* Bodies are validated against the record's schema in the NetSuite OpenAPI description when one
  is given (``spec_path``; :mod:`ledgerflow.connectors.netsuite.schema`), with unknown fields rejected;
  problems answer 400 ``INVALID_CONTENT`` with ``o:errorPath``.
* when the sandbox is seeded with vendors (customers), ``entity`` references on bills and
  purchase orders (invoices) must resolve by ``id`` or ``externalId`` to a stored or seeded
  record, and with GL accounts, expense lines must name one of them; else 400
  ``INVALID_KEY_OR_REF``.
* Auth: OAuth 1.0a TBA (HMAC-SHA256, verified with ``oauthlib``) when ``tba`` credentials are
  given, and OAuth 2.0 bearer tokens from ``POST /services/rest/auth/oauth2/v1/token`` (client
  credentials). Anything else → 401 ``INVALID_LOGIN``.
* Errors in the ``nsError`` shape; injected faults (``/_sandbox/faults``) too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
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
from ledgerflow.core.settings import ConnectionConfig

__all__ = ["DEFAULT_TBA", "TOKEN_PATH", "create_app", "default_spec_path", "ns_error", "sandbox_connection"]

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


def _total(kind: str, record: dict[str, Any]) -> Decimal | None:
    lines = [*record.get("expense", {}).get("items", []), *record.get("item", {}).get("items", [])]
    if not lines:
        return None
    return sum((Decimal(str(line.get("amount", 0))) for line in lines), Decimal(0))


class _NetSuite:
    def __init__(
        self,
        sandbox: Sandbox,
        schemas: RecordSchemas | None,
        tba: Mapping[str, str] | None,
        accounts: frozenset[str] | None,
    ) -> None:
        self.accounts = accounts
        self.strict_kinds: set[str] = set()
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

    def problems(self, record_type: str, body: Any) -> Response | None:
        if not isinstance(body, dict):
            return _error(400, "INVALID_CONTENT", "The request body must be a JSON object.")
        if self.schemas is not None:
            for problem in self.schemas.problems(record_type, body):
                return _error(400, "INVALID_CONTENT", problem.message, problem.path)
        kind = _ENTITY_KIND.get(record_type)
        entity = body.get("entity")
        if kind is not None:
            if not isinstance(entity, dict):
                return _error(400, "USER_ERROR", f"Please enter value(s) for: {kind.capitalize()}", "entity")
            key = f"eid:{entity['externalId']}" if entity.get("externalId") else str(entity.get("id", ""))
            if kind in self.strict_kinds and self.find(kind, key) is None:
                return _error(400, "INVALID_KEY_OR_REF", f"Invalid entity reference key {key}.", "entity")
        if self.accounts is not None:
            for index, line in enumerate(body.get("expense", {}).get("items", [])):
                account = line.get("account") if isinstance(line, dict) else None
                account_id = str(account.get("id")) if isinstance(account, dict) else None
                if account_id not in self.accounts:
                    path = f"expense.items[{index}].account"
                    return _error(400, "INVALID_KEY_OR_REF", f"Invalid account reference key {account_id}.", path)
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
        if found is None and (request.method == "PATCH" or not key.startswith("eid:")):
            return _error(404, "NONEXISTENT_ID", f"The record instance does not exist: {record_type} {key}.")
        if found is None:
            record_id = self.store.next_id()
            record = {**body, "externalId": key.removeprefix("eid:"), "id": record_id}
        else:
            record_id, existing = found
            record = {**existing, **body, "id": record_id}
        self.store.put(record_type, record_id, record)
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
        record_id = self.store.next_id()
        self.store.put(record_type, record_id, {**body, "id": record_id})
        return Response(status_code=204, headers={"Location": self.location(request, record_type, record_id)})

    async def read(self, request: Request, record_type: str, key: str) -> Response:
        if not self.authorised(request):
            return _error(401, "INVALID_LOGIN", "Invalid login attempt.")
        found = self.find(record_type, key)
        if found is None:
            return _error(404, "NONEXISTENT_ID", f"The record instance does not exist: {record_type} {key}.")
        return DecimalJSONResponse(found[1])

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
    """``config`` pointed at a running sandbox with the default TBA credentials (options kept)."""
    creds = {"account_id": SANDBOX_ACCOUNT_ID, **DEFAULT_TBA}
    return point_at(config, base_url, creds)


def create_app(
    spec_path: Path | None = None,
    *,
    clients: Mapping[str, str] | None = None,
    tba: Mapping[str, str] | None = DEFAULT_TBA,
    vendors: Mapping[str, str] | None = None,
    customers: Mapping[str, str] | None = None,
    external_ids: Mapping[str, str] | None = None,
    accounts: Iterable[str] | None = None,
) -> FastAPI:
    """Build the NetSuite sandbox FastAPI app.

    Args:
        spec_path: NetSuite OpenAPI JSON; bodies of record types it describes are validated
            against it. None → :func:`default_spec_path`; a missing file → no schema validation.
        clients: OAuth 2.0 client id → secret for the client-credentials token endpoint.
        tba: TBA credentials accepted (``consumer_key``, ``consumer_secret``, ``token_id``,
            ``token_secret``), or None to accept bearer tokens only.
        vendors: seeded vendors, internal id → company name. When given, ``entity`` references on
            bills and purchase orders must resolve to a vendor; None accepts any reference.
        customers: seeded customers, internal id → company name (same rule for invoices).
        external_ids: external ids of seeded vendors/customers, internal id → external id
            (default ``seed-<internal id>``).
        accounts: internal ids of the GL accounts that exist; expense lines booked to any other
            account are refused with ``INVALID_KEY_OR_REF``. None accepts every account.

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
    netsuite = _NetSuite(sandbox, schemas, tba, frozenset(accounts) if accounts is not None else None)
    for kind, seeds in (("vendor", vendors), ("customer", customers)):
        if seeds is None:
            continue
        netsuite.strict_kinds.add(kind)
        for record_id, name in seeds.items():
            eid = (external_ids or {}).get(record_id, f"seed-{record_id}")
            sandbox.store.put(kind, record_id, {"id": record_id, "companyName": name, "externalId": eid})
    app = sandbox.app
    app.add_api_route(f"{RECORD_PATH}/{{record_type}}/{{key}}", netsuite.upsert, methods=["PUT", "PATCH"])
    app.add_api_route(f"{RECORD_PATH}/{{record_type}}/{{key}}", netsuite.read, methods=["GET"])
    app.add_api_route(f"{RECORD_PATH}/{{record_type}}", netsuite.create, methods=["POST"])
    app.add_api_route(f"{RECORD_PATH}/{{record_type}}", netsuite.listing, methods=["GET"])
    return app
