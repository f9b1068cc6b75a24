"""SAP S/4HANA Cloud connector: supplier invoices through ``API_SUPPLIERINVOICE_PROCESS_SRV``.

One bill becomes one deep insert ``POST …/A_SupplierInvoice`` with its G/L lines in
``to_SupplierInvoiceItemGLAcct`` (reference ``erp_apis.md`` §4.1–4.2;
:mod:`connectors.sap.mapping`).

CSRF (SAP Gateway): writes need a token fetched with ``GET <service root>`` and
``x-csrf-token: Fetch``; the answer carries the token and the session cookies, and the POST must
send both. A missing or stale token is answered ``403`` with ``x-csrf-token: Required``: the
connector fetches a new token once and repeats the POST; a second refusal is an error.

Idempotency: SAP has no idempotency header in these APIs, so ``handle()`` looks up before it
creates: ``GET A_SupplierInvoice?$filter=SupplierInvoiceIDByInvcgParty eq '…' and
InvoicingParty eq '…'`` (the supplier's invoice reference and supplier number). Found → that
invoice is the booking (a redelivery or a retry after a lost answer). The SAP record id is
``<SupplierInvoice>/<FiscalYear>`` (the entity's two-part key). Posted supplier invoices cannot be
changed through this API (only cancelled and re-posted), so an *update* of a booked bill is
:class:`Unsupported` with that reason rather than silently ignored.

Auth (``config.credentials``): communication user ``username``/``password`` (HTTP Basic) or
OAuth 2.0 client credentials (``client_id``, ``client_secret``, ``token_url``). Limits: SAP
publishes no per-tenant quota (reference §4.3); defaults 600 requests/min, 5 in flight.
"""

from __future__ import annotations

import base64
from typing import Any, ClassVar

import httpx
from pydantic import SecretStr

from connectors.base import Booked, Connector, HandleContext, PermanentError, RetriableError, Unsupported
from connectors.http import ErpClient, RequestAuth, loads_json
from connectors.oauth import ClientCredentialsManager
from connectors.sap.errors import SAP_ERRORS, extract_error
from connectors.sap.mapping import UnresolvedReferenceError, lookup_filter, supplier_invoice_body
from contracts import Action, Bill, CanonicalRecord, Operation
from ledgerflow.settings import ConnectionConfig
from ledgerflow.state import StateStore

__all__ = ["SERVICE_PATH", "BasicAuth", "SapConnector"]

SERVICE_PATH = "/sap/opu/odata/sap/API_SUPPLIERINVOICE_PROCESS_SRV"
"""Service root of the supplier invoice API below the tenant's API host."""

DEFAULT_RATE_PER_MINUTE = 600.0
DEFAULT_CONCURRENCY = 5


class BasicAuth:
    """HTTP Basic for an SAP communication user (implements :class:`connectors.http.RequestAuth`)."""

    def __init__(self, username: SecretStr, password: SecretStr) -> None:
        raw = f"{username.get_secret_value()}:{password.get_secret_value()}".encode()
        self._header = "Basic " + base64.b64encode(raw).decode()

    async def apply(self, request: httpx.Request) -> None:
        """Set ``Authorization: Basic …``."""
        request.headers["Authorization"] = self._header

    async def invalidate(self) -> None:
        """Nothing cached to forget: a rejected password stays rejected."""


class SapConnector(Connector):
    """Books bills as SAP supplier invoices (G/L account lines).

    ``config.base_url`` is the tenant's API host (``https://my000000-api.s4hana.cloud.sap`` or the
    sandbox URL). Options: ``company_code`` (required), ``default_tax_code``,
    ``default_gl_account``, ``line_assignments`` (see :mod:`connectors.sap.mapping`).

    Raises (from :meth:`handle`):
        Unsupported: object types other than ``bill``; void/delete; updates of posted invoices.
        PermanentError: unresolved supplier/account (``erp.unknown_reference``), SAP validation
            messages, rejected credentials.
        RetriableError (also): a freshly fetched CSRF token refused again (``sap.csrf``).
        RetriableError: 429, 5xx, timeouts, locks.

    """

    erp: ClassVar[str] = "sap"
    supports: ClassVar[frozenset[str]] = frozenset({"bill"})

    def __init__(self, name: str, config: ConnectionConfig, http: httpx.AsyncClient, state: StateStore) -> None:
        super().__init__(name, config, http, state)
        if not config.base_url:
            raise PermanentError("auth.config", f"connection {name!r}: SAP needs base_url (the tenant API host)")
        creds = config.credentials
        auth: RequestAuth
        if creds.get("username") and creds.get("password"):
            auth = BasicAuth(creds["username"], creds["password"])
        else:
            auth = ClientCredentialsManager.from_config(http, state, name, config, erp=self.erp)
        self.client = ErpClient.for_connection(
            http,
            erp=self.erp,
            connection=name,
            config=config,
            base_url=config.base_url.rstrip("/") + SERVICE_PATH,
            default_rate_per_minute=DEFAULT_RATE_PER_MINUTE,
            default_concurrency=DEFAULT_CONCURRENCY,
            errors=SAP_ERRORS,
            auth=auth,
            extract=extract_error,
        )
        self._csrf: tuple[str, str] | None = None
        self.csrf_fetches = 0
        """How many CSRF tokens this connector fetched (diagnostics, tests)."""

    async def fetch_csrf(self) -> tuple[str, str]:
        """Fetch a CSRF token and the session cookies: ``(token, "Cookie" header value)``.

        Raises:
            PermanentError: ``sap.csrf`` when the service answers without a token.
            ConnectorError: the request itself failed (see :meth:`ErpClient.request`).

        """
        response = await self.client.request("GET", "/", operation="csrf.fetch", headers={"x-csrf-token": "Fetch"})
        token = response.headers.get("x-csrf-token")
        if not token or token.lower() in ("required", "fetch"):
            raise PermanentError("sap.csrf", "SAP answered the CSRF fetch without a token")
        cookie = "; ".join(f"{name}={value}" for name, value in response.cookies.items())
        self.csrf_fetches += 1
        self._csrf = (token, cookie)
        return self._csrf

    async def check(self) -> None:
        """Fetch a CSRF token: proves reachability, credentials and the service's availability."""
        await self.fetch_csrf()

    async def handle(self, record: CanonicalRecord, ctx: HandleContext) -> Booked:
        """Book a bill as a supplier invoice (look-up before create).

        Raises:
            Unsupported, PermanentError, RetriableError: see the class docstring.

        """
        if not isinstance(record, Bill):
            raise Unsupported("erp.unsupported_object", f"SAP connector does not book {record.object_type}")
        if record.action is not Action.UPSERT:
            raise Unsupported("erp.unsupported_action", f"SAP connector does not {record.action.value} bills")
        try:
            body = supplier_invoice_body(record, self.config.options)
            query = lookup_filter(record)
        except UnresolvedReferenceError as exc:
            raise PermanentError("erp.unknown_reference", str(exc)) from exc
        found = await self._lookup(query)
        if found is not None:
            if ctx.existing is not None and ctx.existing.erp_record_id == found:
                raise Unsupported(
                    "sap.update_unsupported",
                    f"SAP supplier invoice {found} is posted; changes need Cancel and a new invoice",
                )
            return Booked(Operation.CREATE, found, http_status=200)
        response = await self._post("/A_SupplierInvoice", body)
        return Booked(Operation.CREATE, self._key(loads_json(response.content).get("d")), http_status=201)

    async def _lookup(self, query: str) -> str | None:
        response = await self.client.request(
            "GET",
            "/A_SupplierInvoice",
            operation="bill.lookup",
            params={"$filter": query, "$select": "SupplierInvoice,FiscalYear", "$format": "json"},
        )
        body = loads_json(response.content)
        results = body.get("d", {}).get("results", []) if isinstance(body, dict) else []
        return self._key(results[0]) if results else None

    @staticmethod
    def _key(entity: Any) -> str:
        if isinstance(entity, dict) and entity.get("SupplierInvoice") and entity.get("FiscalYear"):
            return f"{entity['SupplierInvoice']}/{entity['FiscalYear']}"
        raise PermanentError("erp.protocol", "SAP returned no SupplierInvoice/FiscalYear key")

    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        token, cookie = self._csrf or await self.fetch_csrf()
        for attempt in (1, 2):
            headers = {"x-csrf-token": token}
            if cookie:
                headers["Cookie"] = cookie
            response = await self.client.request(
                "POST", path, operation="bill.create", json_body=body, headers=headers, ok=(403,)
            )
            if response.status_code != 403:
                return response
            if response.headers.get("x-csrf-token", "").lower() != "required":
                raise self.client.error_for(response)
            if attempt == 2:
                break
            # Stale or missing token (session expired, server restarted): fetch once, then retry.
            self._csrf = None
            token, cookie = await self.fetch_csrf()
        self._csrf = None
        raise RetriableError("sap.csrf", "SAP refused a freshly fetched CSRF token", http_status=403)
