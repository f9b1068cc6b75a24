"""SAP S/4HANA Cloud connector: supplier invoices through ``API_SUPPLIERINVOICE_PROCESS_SRV``.

One bill becomes one deep insert ``POST …/A_SupplierInvoice`` with its G/L lines in
``to_SupplierInvoiceItemGLAcct`` (reference ``erp_apis.md`` §4.1–4.2;
:mod:`ledgerflow.connectors.sap.mapping`).

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

Supplier (``InvoicingParty``) resolution, in order: the vendor's ``accounting_custom_id`` /
``accounting_id`` (an SAP supplier number, ≤ 10 characters); the binder row
``<tenant>:vendor-ref:<source id>`` of an earlier resolution; the Business Partner API by name —
``GET /sap/opu/odata/sap/API_BUSINESS_PARTNER/A_Supplier?$filter=SupplierName eq '…'``
(``SupplierFullName`` for names over 35 characters). One match is used and stored in the binder.
Several matches are narrowed by the vendor's address, as Monite matches counterparts: country,
then city, from ``A_BusinessPartnerAddress`` (``Country``, ``CityName``; ``A_Supplier`` itself has
no address properties) of the candidates' business partners; still several (or no address) →
``PermanentError(ErrorCode.REFERENCE_AMBIGUOUS)``. No match → ``PermanentError(ErrorCode.REFERENCE_UNRESOLVED)``:
this connector does not create business partners. Reads are plain GETs (no CSRF token).

Auth (``config.credentials``): communication user ``username``/``password`` (HTTP Basic) or
OAuth 2.0 client credentials (``client_id``, ``client_secret``, ``token_url``). Limits: SAP
publishes no per-tenant quota (reference §4.3); defaults 600 requests/min, 5 in flight.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar

import httpx
from pydantic import SecretStr

from ledgerflow.connectors.amounts import UnbookableAmountsError
from ledgerflow.connectors.base import (
    Booked,
    Connector,
    HandleContext,
    InvalidResponse,
    PermanentError,
    RetriableError,
    UnresolvedReferenceError,
    Unsupported,
    reference_key,
)
from ledgerflow.connectors.sap.config import Credentials, Options
from ledgerflow.connectors.sap.errors import SAP_ERRORS, extract_error
from ledgerflow.connectors.sap.mapping import (
    DEFAULT_LINE_ASSIGNMENTS,
    lookup_filter,
    odata_string,
    stored_document,
    supplier_invoice_body,
    supplier_name_filter,
    supplier_number,
)
from ledgerflow.connectors.verify import StoredDocument
from ledgerflow.contracts import Action, Bill, CanonicalRecord, Operation, VendorRef
from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.core.outbound.client import ErpClient, RequestAuth, loads_json
from ledgerflow.core.outbound.oauth import ClientCredentialsManager
from ledgerflow.core.settings import ConnectionConfig
from ledgerflow.core.state import StateStore

__all__ = ["BUSINESS_PARTNER_PATH", "SERVICE_PATH", "BasicAuth", "SapConnector"]

SERVICE_PATH = "/sap/opu/odata/sap/API_SUPPLIERINVOICE_PROCESS_SRV"
"""Service root of the supplier invoice API below the tenant's API host."""

BUSINESS_PARTNER_PATH = "/sap/opu/odata/sap/API_BUSINESS_PARTNER"
"""Service root of the Business Partner API (``A_Supplier``, ``A_BusinessPartnerAddress``)."""

MAX_NAME_MATCHES = 50
"""``$top`` of a supplier-by-name query: more same-named suppliers than this is ambiguous anyway."""

DEFAULT_RATE_PER_MINUTE = 600.0
DEFAULT_CONCURRENCY = 5


def _partner(supplier: dict[str, Any]) -> str:
    """The business partner number of an ``A_Supplier`` row (the supplier number when not returned)."""
    return str(supplier.get("BusinessPartner") or supplier["Supplier"])


class BasicAuth:
    """HTTP Basic for an SAP communication user (implements :class:`ledgerflow.core.outbound.client.RequestAuth`)."""

    def __init__(self, username: SecretStr, password: SecretStr) -> None:
        raw = f"{username.get_secret_value()}:{password.get_secret_value()}".encode()
        self._header = "Basic " + base64.b64encode(raw).decode()

    async def apply(self, request: httpx.Request) -> None:
        """Set ``Authorization: Basic …``."""
        request.headers["Authorization"] = self._header

    async def invalidate(self) -> None:
        """Nothing cached to forget: a rejected password stays rejected."""


_NOT_BOOKED = {
    "purchase_order_change": "SAP connector books supplier invoices only: no purchase order was booked to SAP "
    "(API_PURCHASEORDER_PROCESS_SRV is not wired), so there is none to change",
    "purchase_order": "SAP connector books supplier invoices only (API_PURCHASEORDER_PROCESS_SRV is not wired)",
    "budget": "the SAP service this connector speaks (supplier invoices, specs/sap_si.edmx) has no budget "
    "entity; project budgets (PS/WBS) are not written by this connector",
    "budget_change": "the SAP service this connector speaks (supplier invoices, specs/sap_si.edmx) has no budget "
    "entity; project budgets (PS/WBS) are not written by this connector",
}
"""Why an object the SAP connector does not book is skipped (the result's reason)."""


class SapConnector(Connector):
    """Books bills as SAP supplier invoices (G/L account lines).

    ``config.base_url`` is the tenant's API host (``https://my000000-api.s4hana.cloud.sap`` or the
    sandbox URL). Options: ``company_code`` (required), ``default_tax_code``,
    ``default_expense_account``, ``line_assignments`` (see :mod:`ledgerflow.connectors.sap.mapping`).

    Raises (from :meth:`handle`):
        Unsupported: object types other than ``bill``; void/delete; updates of posted invoices.
        PermanentError: unresolved supplier/account (``reference.unresolved``; ``erp.unknown_reference``
            when SAP rejects one), several suppliers
            of the vendor's name and place (``reference.ambiguous``), SAP validation messages,
            rejected credentials.
        RetriableError (also): a freshly fetched CSRF token refused again (``auth.csrf``).
        RetriableError: 429, 5xx, timeouts, locks.

    """

    erp: ClassVar[str] = "sap"
    options_model = Options
    credentials_model = Credentials
    supports: ClassVar[frozenset[str]] = frozenset({"bill"})
    mapping_kinds: ClassVar[frozenset[str]] = frozenset(
        {
            "vendor",  # InvoicingParty (supplier number)
            "gl_account",  # GLAccount (then options.gl_accounts)
            "tax_rate",  # TaxCode (then options.tax_codes)
        }
    )
    unused_mapping_kinds: ClassVar[Mapping[str, str]] = {
        "customer": "books supplier invoices only",
        "party": "books no payments",
        "bank_account": "books no payments",
        "item": "books G/L account lines, not material lines",
        "ap_account": "posts to the supplier's reconciliation account (no AP account per invoice)",
        "cost_type": "assigns lines only to the fields options.line_assignments names (add cost_type there)",
        "cost_code": "assigns lines only to the fields options.line_assignments names (add cost_code there)",
        "project": "assigns lines only to the fields options.line_assignments names (add project there)",
        "business_unit": "assigns lines only to the fields options.line_assignments names (add business_unit there)",
    }

    @classmethod
    def honoured_mapping_kinds(cls, options: Mapping[str, Any]) -> frozenset[str]:
        """:attr:`mapping_kinds` and the canonical fields ``options.line_assignments`` assigns.

        The default assigns business unit → CostCenter, project → WBSElement, cost code → InternalOrder.
        """
        assignments = options.get("line_assignments", DEFAULT_LINE_ASSIGNMENTS)
        return cls.mapping_kinds | frozenset(assignments if isinstance(assignments, Mapping) else ())

    def __init__(self, name: str, config: ConnectionConfig, http: httpx.AsyncClient, state: StateStore) -> None:
        super().__init__(name, config, http, state)
        if not config.base_url:
            raise PermanentError(
                ErrorCode.AUTH_CONFIG, f"connection {name!r}: SAP needs base_url (the tenant API host)"
            )
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
        self.business_partner_url = config.base_url.rstrip("/") + BUSINESS_PARTNER_PATH
        self._csrf: tuple[str, str] | None = None
        self.csrf_fetches = 0
        """How many CSRF tokens this connector fetched (diagnostics, tests)."""

    async def fetch_csrf(self) -> tuple[str, str]:
        """Fetch a CSRF token and the session cookies: ``(token, "Cookie" header value)``.

        Raises:
            PermanentError: ``auth.csrf`` when the service answers without a token.
            ConnectorError: the request itself failed (see :meth:`ErpClient.request`).

        """
        response = await self.client.request("GET", "/", operation="csrf.fetch", headers={"x-csrf-token": "Fetch"})
        token = response.headers.get("x-csrf-token")
        if not token or token.lower() in ("required", "fetch"):
            raise PermanentError(ErrorCode.AUTH_CSRF, "SAP answered the CSRF fetch without a token")
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
            reason = _NOT_BOOKED.get(record.object_type, f"SAP connector does not book {record.object_type}")
            raise Unsupported(ErrorCode.ERP_UNSUPPORTED_OBJECT, reason)
        if record.action is not Action.UPSERT:
            raise Unsupported(ErrorCode.ERP_UNSUPPORTED_ACTION, f"SAP connector does not {record.action.value} bills")
        party = await self.resolve_supplier(record.vendor, tenant=record.tenant)
        try:
            body = supplier_invoice_body(record, self.config.options, party)
            query = lookup_filter(record, party)
        except UnresolvedReferenceError as exc:
            raise PermanentError(ErrorCode.REFERENCE_UNRESOLVED, str(exc)) from exc
        except UnbookableAmountsError as exc:
            raise PermanentError(ErrorCode.ERP_UNSUPPORTED_AMOUNT, str(exc)) from exc
        found = await self._lookup(query, body, ctx.existing.erp_record_id if ctx.existing is not None else None)
        if found is not None:
            if ctx.existing is not None and ctx.existing.erp_record_id == found:
                raise Unsupported(
                    ErrorCode.ERP_UNSUPPORTED_ACTION,
                    f"SAP supplier invoice {found} is posted; changes need Cancel and a new invoice",
                )
            return Booked(Operation.CREATE, found, http_status=200, counterparty_id=party)
        response = await self._post("/A_SupplierInvoice", body)
        return Booked(
            Operation.CREATE,
            self._key(loads_json(response.content).get("d")),
            http_status=201,
            counterparty_id=party,
        )

    async def read_back(self, record: CanonicalRecord, booked: Booked) -> StoredDocument | None:
        """Read the booked supplier invoice with its G/L and tax items and map it for read-back verification.

        ``GET A_SupplierInvoice(SupplierInvoice='…',FiscalYear='…')?$expand=to_SupplierInvoiceItemGLAcct,
        to_SupplierInvoiceTax`` (the create's answer does not carry the tax SAP calculated, and a
        redelivery has no answer at all), mapped by :func:`~ledgerflow.connectors.sap.mapping.stored_document`.

        Raises:
            RetriableError, PermanentError: the read failed.
        """
        if not isinstance(record, Bill) or not booked.erp_record_id or "/" not in booked.erp_record_id:
            return None
        number, year = booked.erp_record_id.split("/", 1)
        key = f"SupplierInvoice={odata_string(number)},FiscalYear={odata_string(year)}"
        response = await self.client.request(
            "GET",
            f"/A_SupplierInvoice({key})",
            operation="bill.read_back",
            params={"$expand": "to_SupplierInvoiceItemGLAcct,to_SupplierInvoiceTax", "$format": "json"},
        )
        body = loads_json(response.content)
        entity = body.get("d") if isinstance(body, dict) else None
        if not isinstance(entity, dict):
            raise PermanentError(
                ErrorCode.ERP_PROTOCOL, f"SAP answered the read of supplier invoice {booked.erp_record_id} without d"
            )
        return stored_document(record, entity)

    async def resolve_supplier(self, vendor: VendorRef, *, tenant: str) -> str:
        """The SAP supplier number of ``tenant``'s bill's vendor (order: see the module docstring).

        Raises:
            PermanentError: ``reference.unresolved`` (no supplier of that id or name),
                ``reference.ambiguous`` (several suppliers of that name and place).
            RetriableError: the Business Partner API is unavailable (429, 5xx, timeouts).

        """
        number = supplier_number(vendor)
        if number is not None:
            return number
        key = reference_key(tenant, "vendor", vendor.source_id) if vendor.source_id else None
        if key is not None and (bound := await self.reference_id(key)) is not None:
            return bound
        if not vendor.name:
            raise PermanentError(
                ErrorCode.REFERENCE_UNRESOLVED,
                f"vendor {vendor.source_id or '?'} has no SAP supplier number and no name to find it by",
            )
        candidates = await self._suppliers_named(vendor.name)
        if not candidates:
            raise PermanentError(
                ErrorCode.REFERENCE_UNRESOLVED,
                f"vendor {vendor.name!r} has no SAP supplier number and no SAP supplier has that name"
                " (this connector does not create business partners)",
            )
        if len(candidates) > 1:
            candidates = await self._narrow_by_place(vendor, candidates)
        supplier = str(candidates[0]["Supplier"])
        if key is not None:
            digest = hashlib.sha256(vendor.model_dump_json().encode()).hexdigest()
            await self.remember_reference(key, supplier, erp_version=None, content_hash=digest)
        return supplier

    async def _odata_results(self, path: str, operation: str, params: dict[str, str]) -> list[dict[str, Any]]:
        response = await self.client.request(
            "GET", f"{self.business_partner_url}/{path}", operation=operation, params={**params, "$format": "json"}
        )
        body = loads_json(response.content)
        data = body.get("d") if isinstance(body, dict) else None
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list):
            raise InvalidResponse(f"SAP {path} answered without d.results")
        return [r for r in results if isinstance(r, dict) and r.get("Supplier", r.get("BusinessPartner"))]

    async def _suppliers_named(self, name: str) -> list[dict[str, Any]]:
        return await self._odata_results(
            "A_Supplier",
            "supplier.lookup",
            {
                "$filter": supplier_name_filter(name),
                "$select": "Supplier,SupplierName,BusinessPartner",
                "$top": str(MAX_NAME_MATCHES),
            },
        )

    async def _narrow_by_place(self, vendor: VendorRef, candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The one candidate in the vendor's country (then city), else ``reference.ambiguous``."""
        numbers = ", ".join(sorted(str(c["Supplier"]) for c in candidates))
        address = vendor.address
        country = (address.country or "").strip().casefold() if address else ""
        city = (address.city or "").strip().casefold() if address else ""
        if country or city:
            partners = {_partner(c) for c in candidates}
            addresses = await self._odata_results(
                "A_BusinessPartnerAddress",
                "supplier.address_lookup",
                {
                    "$filter": " or ".join(f"BusinessPartner eq {odata_string(p)}" for p in sorted(partners)),
                    "$select": "BusinessPartner,Country,CityName",
                },
            )
            places: dict[str, list[tuple[str, str]]] = {}
            for row in addresses:
                found = (str(row.get("Country") or "").casefold(), str(row.get("CityName") or "").casefold())
                places.setdefault(str(row.get("BusinessPartner")), []).append(found)
            remaining = candidates
            for index, wanted in ((0, country), (1, city)):
                if not wanted or len(remaining) == 1:
                    continue
                remaining = [
                    c for c in remaining if any(found[index] == wanted for found in places.get(_partner(c), []))
                ]
            if len(remaining) == 1:
                return remaining
        place = ", ".join(part for part in (address.city, address.country) if part) if address else ""
        raise PermanentError(
            ErrorCode.REFERENCE_AMBIGUOUS,
            f"vendor {vendor.name!r}: several SAP suppliers have that name ({numbers})"
            + (f" and none or several of them are in {place}" if place else " and the vendor has no address"),
        )

    async def _lookup(self, query: str, body: dict[str, Any], existing: str | None) -> str | None:
        """The key of the supplier invoice already booked under this reference and supplier, if any.

        A found invoice whose gross amount, currency or document date differ from ``body`` is not
        an earlier attempt of this bill but another document with the same supplier invoice
        number: booking nothing and reporting it as this bill would be a wrong booking. (When the
        binder already holds that invoice for this bill, ``existing``, it is this bill's own.)

        Raises:
            PermanentError: ``erp.duplicate`` for such an invoice (SAP's own duplicate check, M8 108).
        """
        fields = ("SupplierInvoice", "FiscalYear", "InvoiceGrossAmount", "DocumentCurrency", "DocumentDate")
        response = await self.client.request(
            "GET",
            "/A_SupplierInvoice",
            operation="bill.lookup",
            params={"$filter": query, "$select": ",".join(fields), "$format": "json"},
        )
        found = loads_json(response.content)
        results = found.get("d", {}).get("results", []) if isinstance(found, dict) else []
        if not results:
            return None
        entity = results[0]
        key = self._key(entity)
        mine = (Decimal(str(body["InvoiceGrossAmount"])), body["DocumentCurrency"], body["DocumentDate"])
        gross = entity.get("InvoiceGrossAmount")
        theirs = (
            Decimal(str(gross)) if gross is not None else mine[0],
            entity.get("DocumentCurrency", mine[1]),
            entity.get("DocumentDate", mine[2]),
        )
        if theirs != mine and existing != key:
            raise PermanentError(
                ErrorCode.ERP_DUPLICATE_DOCUMENT,
                f"SAP already holds supplier invoice {key} with reference {body['SupplierInvoiceIDByInvcgParty']!r} "
                f"from supplier {body['InvoicingParty']} for {theirs[0]} {theirs[1]}, not this bill's {mine[0]} "
                f"{mine[1]}: another document with the same invoice number (SAP refuses duplicates, M8 108)",
            )
        return key

    @staticmethod
    def _key(entity: Any) -> str:
        if isinstance(entity, dict) and entity.get("SupplierInvoice") and entity.get("FiscalYear"):
            return f"{entity['SupplierInvoice']}/{entity['FiscalYear']}"
        raise InvalidResponse("SAP returned no SupplierInvoice/FiscalYear key")

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
        raise RetriableError(ErrorCode.AUTH_CSRF, "SAP refused a freshly fetched CSRF token", http_status=403)
