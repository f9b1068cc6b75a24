"""Coupa connector: invoices created as drafts then submitted; suppliers; look-up before create.

Coupa has no idempotency header (reference ``erp_apis.md`` §5.3), so every write starts with a
look-up by its natural key and ``handle()`` is a small state machine that converges whatever an
earlier, interrupted attempt left behind:

* **bill** → ``GET /api/invoices?invoice-number=…&supplier[id|number|name]=…``;
  none → ``POST /api/invoices`` (Coupa creates it in ``draft`` status) then
  ``PUT /api/invoices/:id/submit``; found in ``draft`` (a previous attempt created it but never
  submitted) → update it with the current body and submit it; found submitted → for an update
  (binder entry present) ``PUT /api/invoices/:id``, for a redelivery nothing more is sent.
  A draft is not booked until submitted: only a submitted invoice yields a :class:`Booked`.
* **vendor** → ``GET /api/suppliers?number=…``; none → ``POST /api/suppliers``; found →
  ``PUT /api/suppliers/:id``.

Auth: OAuth 2.0 client credentials at ``<instance>/oauth2/token`` with space-separated scopes
(``core.invoice.read core.invoice.write core.supplier.read core.supplier.write`` by default);
credentials ``client_id``, ``client_secret``, optional ``scope``/``token_url``. Limits: 25 requests
per second with a burst of 20 (Compass "exception handling and error codes"): defaults
1,500/min and 10 in flight, overridable by options.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any, ClassVar

import httpx

from ledgerflow.connectors.amounts import UnbookableAmountsError
from ledgerflow.connectors.base import (
    Booked,
    Connector,
    HandleContext,
    InvalidResponse,
    PermanentError,
    UnresolvedReferenceError,
    Unsupported,
)
from ledgerflow.connectors.coupa.config import Credentials, Options
from ledgerflow.connectors.coupa.errors import COUPA_ERRORS, extract_error
from ledgerflow.connectors.coupa.mapping import (
    DEFAULT_ACCOUNT_SEGMENTS,
    invoice_body,
    invoice_lookup_params,
    stored_document,
    supplier_body,
    supplier_number,
    supplier_ref,
)
from ledgerflow.connectors.verify import StoredDocument
from ledgerflow.contracts import Action, Bill, CanonicalRecord, Operation, Vendor
from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.core.outbound.client import ErpClient, loads_json
from ledgerflow.core.outbound.oauth import ClientCredentialsManager
from ledgerflow.core.settings import ConnectionConfig
from ledgerflow.core.state import StateStore

__all__ = ["DEFAULT_SCOPES", "CoupaConnector"]

DEFAULT_SCOPES = "core.invoice.read core.invoice.write core.supplier.read core.supplier.write"
"""OAuth scopes requested when the connection names none."""

DEFAULT_RATE_PER_MINUTE = 25.0 * 60
DEFAULT_CONCURRENCY = 10


def _list(response: httpx.Response) -> list[dict[str, Any]]:
    body = loads_json(response.content)
    if not isinstance(body, list):
        raise InvalidResponse(f"Coupa answered a look-up with {type(body).__name__}, not a list")
    return [item for item in body if isinstance(item, dict)]


def _id(body: Any, what: str) -> str:
    if isinstance(body, dict) and body.get("id") is not None:
        return str(body["id"])
    raise InvalidResponse(f"Coupa returned no id for the {what}")


def _same_document(invoice: dict[str, Any], body: dict[str, Any], invoice_id: str) -> None:
    """Refuse to take a submitted invoice found by number and supplier for another document.

    Coupa has no idempotency key, so a redelivery finds its own earlier invoice by number and
    supplier; one whose date, currency or lines differ is another document with the same
    invoice number, and reporting it as this bill's booking would be wrong.

    Raises:
        PermanentError: ``erp.duplicate``.
    """

    def lines(document: dict[str, Any]) -> list[Decimal]:
        return [
            Decimal(str(line.get("total") or line.get("price") or 0)) for line in document.get("invoice-lines") or []
        ]

    mine = (body.get("invoice-date"), (body.get("currency") or {}).get("code"), lines(body))
    currency = invoice.get("currency")
    theirs = (invoice.get("invoice-date"), currency.get("code") if isinstance(currency, dict) else None, lines(invoice))
    if mine != theirs:
        raise PermanentError(
            ErrorCode.ERP_DUPLICATE_DOCUMENT,
            f"Coupa already holds invoice {invoice_id} number {body.get('invoice-number')!r} from this supplier, "
            f"dated {theirs[0]} in {theirs[1]}, which is another document than this bill ({mine[0]}, {mine[1]}): "
            "an invoice number is unique per supplier",
        )


class CoupaConnector(Connector):
    """Books bills (as submitted invoices) and vendors (suppliers) into Coupa.

    ``config.base_url`` is the instance root (``https://acme.coupahost.com`` or the sandbox URL).

    Raises (from :meth:`handle`):
        Unsupported: other object types; void/delete actions.
        PermanentError: ``reference.unresolved`` (no supplier/account id), ``erp.unknown_reference``
            (Coupa rejected one), ``erp.validation``,
            ``erp.invalid_state``, ``auth.rejected``, ``auth.config``.
        RetriableError: 429 (``Retry-After``), 5xx, timeouts.

    """

    erp: ClassVar[str] = "coupa"
    options_model = Options
    credentials_model = Credentials
    supports: ClassVar[frozenset[str]] = frozenset({"bill", "vendor"})
    mapping_kinds: ClassVar[frozenset[str]] = frozenset({"vendor"})  # supplier id / number
    """Plus the canonical fields ``options.account_segments`` books as account segments."""
    unused_mapping_kinds: ClassVar[Mapping[str, str]] = {
        "customer": "books supplier invoices only",
        "party": "books no payments",
        "bank_account": "books no payments",
        "tax_rate": "sends no tax code (tax is the invoice's tax amount)",
        "item": "books account lines, not catalogue items",
        "ap_account": "takes no AP account per invoice",
        **{
            kind: f"books as account segments only the fields options.account_segments names (add {kind} there)"
            for kind in ("gl_account", "cost_code", "cost_type", "project", "business_unit")
        },
    }

    @classmethod
    def honoured_mapping_kinds(cls, options: Mapping[str, Any]) -> frozenset[str]:
        """:attr:`mapping_kinds` and the fields ``options.account_segments`` books .

        The default segments are GL account, project and cost code.
        """
        layout = options.get("account_segments", DEFAULT_ACCOUNT_SEGMENTS)
        return cls.mapping_kinds | frozenset(layout.values() if isinstance(layout, Mapping) else ())

    def __init__(self, name: str, config: ConnectionConfig, http: httpx.AsyncClient, state: StateStore) -> None:
        super().__init__(name, config, http, state)
        if not config.base_url:
            raise PermanentError(ErrorCode.AUTH_CONFIG, f"connection {name!r}: Coupa needs base_url (the instance URL)")
        base = config.base_url.rstrip("/")
        auth = ClientCredentialsManager.from_config(
            http, state, name, config, erp=self.erp, default_token_url=f"{base}/oauth2/token", client_auth="body"
        )
        if auth.scope is None:
            auth.scope = DEFAULT_SCOPES
        self.client = ErpClient.for_connection(
            http,
            erp=self.erp,
            connection=name,
            config=config,
            base_url=base,
            default_rate_per_minute=DEFAULT_RATE_PER_MINUTE,
            default_concurrency=DEFAULT_CONCURRENCY,
            errors=COUPA_ERRORS,
            auth=auth,
            extract=extract_error,
        )

    async def check(self) -> None:
        """Read one invoice: proves reachability, the token grant and the read scope.

        Raises:
            ConnectorError: ``auth.rejected`` for bad credentials, retriable errors when unreachable.

        """
        await self.client.request("GET", "/api/invoices", operation="check", params={"limit": 1, "fields": '["id"]'})

    async def handle(self, record: CanonicalRecord, ctx: HandleContext) -> Booked:
        """Book ``record``; see the module docstring for the state machine.

        Raises:
            Unsupported, PermanentError, RetriableError: see the class docstring.

        """
        if record.action is not Action.UPSERT:
            raise Unsupported(
                ErrorCode.ERP_UNSUPPORTED_ACTION, f"Coupa connector does not {record.action.value} records"
            )
        try:
            if isinstance(record, Bill):
                booked = await self._bill(record, ctx)
                return replace(booked, counterparty_id=supplier_ref(record.vendor).get("id"))
            if isinstance(record, Vendor):
                return await self._supplier(record, ctx)
        except UnresolvedReferenceError as exc:
            raise PermanentError(ErrorCode.REFERENCE_UNRESOLVED, str(exc)) from exc
        except UnbookableAmountsError as exc:
            raise PermanentError(ErrorCode.ERP_UNSUPPORTED_AMOUNT, str(exc)) from exc
        raise Unsupported(ErrorCode.ERP_UNSUPPORTED_OBJECT, f"Coupa connector does not book {record.object_type}")

    async def _bill(self, bill: Bill, ctx: HandleContext) -> Booked:
        body = invoice_body(bill, self.config.options)
        found = _list(
            await self.client.request(
                "GET", "/api/invoices", operation="bill.lookup", params=invoice_lookup_params(bill)
            )
        )
        live = [inv for inv in found if inv.get("status") not in ("voided", "withdrawn")]
        if not live:
            created = await self.client.request("POST", "/api/invoices", operation="bill.create", json_body=body)
            invoice_id = _id(loads_json(created.content), "invoice")
            submitted = await self._submit(invoice_id)
            return Booked(Operation.CREATE, invoice_id, http_status=submitted.status_code)
        invoice = live[0]
        invoice_id = _id(invoice, "invoice")
        if ctx.existing is None and invoice.get("status") != "draft":
            _same_document(invoice, body, invoice_id)
        if invoice.get("status") == "draft":
            # An earlier attempt created the draft and stopped before submitting: finish it.
            await self.client.request("PUT", f"/api/invoices/{invoice_id}", operation="bill.update", json_body=body)
            submitted = await self._submit(invoice_id)
            operation = Operation.UPDATE if ctx.existing is not None else Operation.CREATE
            return Booked(operation, invoice_id, http_status=submitted.status_code)
        if ctx.existing is not None:
            updated = await self.client.request(
                "PUT", f"/api/invoices/{invoice_id}", operation="bill.update", json_body=body
            )
            return Booked(Operation.UPDATE, invoice_id, http_status=updated.status_code)
        # Redelivery of a create that already went through: the invoice is booked.
        return Booked(Operation.CREATE, invoice_id, http_status=200)

    async def read_back(self, record: CanonicalRecord, booked: Booked) -> StoredDocument | None:
        """Read the booked invoice (``GET /api/invoices/:id``) and map it for read-back verification.

        The submit's answer is the invoice too, but a redelivery that found the invoice already
        booked has none; one read serves every path
        (:func:`~ledgerflow.connectors.coupa.mapping.stored_document`).

        Raises:
            RetriableError, PermanentError: the read failed.
        """
        if not isinstance(record, Bill) or booked.erp_record_id is None:
            return None
        response = await self.client.request("GET", f"/api/invoices/{booked.erp_record_id}", operation="bill.read_back")
        body = loads_json(response.content)
        if not isinstance(body, dict):
            raise PermanentError(ErrorCode.ERP_PROTOCOL, "Coupa answered the read of an invoice with no invoice")
        return stored_document(record, body)

    async def _submit(self, invoice_id: str) -> httpx.Response:
        return await self.client.request("PUT", f"/api/invoices/{invoice_id}/submit", operation="bill.submit")

    async def _supplier(self, vendor: Vendor, ctx: HandleContext) -> Booked:
        body = supplier_body(vendor)
        found = _list(
            await self.client.request(
                "GET", "/api/suppliers", operation="vendor.lookup", params={"number": supplier_number(vendor)}
            )
        )
        if found:
            supplier_id = _id(found[0], "supplier")
            updated = await self.client.request(
                "PUT", f"/api/suppliers/{supplier_id}", operation="vendor.update", json_body=body
            )
            operation = Operation.UPDATE if ctx.existing is not None else Operation.CREATE
            return Booked(operation, supplier_id, http_status=updated.status_code)
        created = await self.client.request("POST", "/api/suppliers", operation="vendor.create", json_body=body)
        return Booked(Operation.CREATE, _id(loads_json(created.content), "supplier"), http_status=created.status_code)
