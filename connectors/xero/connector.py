"""Xero connector (Accounting API 2.0).

Mapping (``shared/reference/erp_apis.md`` §2, developer.xero.com "Invoices", "Contacts",
"Payments", "Purchase orders", ``xero_accounting.yaml`` schemas):

=====================  ==============================================================================
canonical              Xero
=====================  ==============================================================================
bill                   ``PUT /Invoices?unitdp=4`` with ``Type: ACCPAY``, body by
                       :func:`ledgerflow.connectors.xero.mapping.invoice_body` (``LineAmountTypes``
                       from the document, ``TaxType`` per line, header tax / shipping / discount as
                       lines on configured accounts: see that module). Update:
                       ``POST /Invoices/{InvoiceID}``. Void: ``Status: VOIDED`` (``DELETED`` for drafts)
invoice                the same with ``Type: ACCREC`` (lines: ``AccountCode`` from the GL account or
                       option ``default_revenue_account``; ``ItemCode`` from the item's ERP code;
                       line discounts as ``DiscountAmount``)
vendor / customer      ``PUT /Contacts`` / ``POST /Contacts/{ContactID}``; delete → ``ContactStatus: ARCHIVED``
payment                ``PUT /Payments`` (one per applied document: ``Invoice.InvoiceID``,
                       ``Account.Code``/``AccountID`` = bank account or option ``default_bank_account``);
                       void → ``POST /Payments/{PaymentID}`` ``Status: DELETED``
purchase_order         ``PUT /PurchaseOrders`` / ``POST /PurchaseOrders/{PurchaseOrderID}``
purchase_order_change  no change-order document in Xero: ``POST /PurchaseOrders/{PurchaseOrderID}`` of the
                       order it changes, its lines kept (``LineItemID``) and the change's lines appended,
                       described ``Change order <number>: …`` (a new version replaces them, a void removes them)
=====================  ==============================================================================

Every write carries ``Idempotency-Key: <ctx.idempotency_key>`` (Xero replays the first response
for a repeated key) and ``xero-tenant-id``.

Batch writes (:meth:`XeroConnector.handle_batch`): new bills and sales invoices of one connection
go up to :attr:`XeroConnector.max_batch` (50) per ``PUT /Invoices?summarizeErrors=false&unitdp=4``.
Xero answers 200 with one element per invoice, in the order sent; each element is mapped back to
its record by position and checked by ``Type``, ``InvoiceNumber`` and ``Contact.ContactID`` (an
answer that does not line up is an ``InvalidResponse`` for the whole batch, never a guess). An
element with ``HasErrors`` / ``ValidationErrors`` (``StatusAttributeString: ERROR``) is that
record's ``PermanentError`` with Xero's messages; its neighbours are booked. Idempotency per
record: (1) the binder, written after every result of the consumer batch is acknowledged, makes a
redelivered record a ``duplicate`` that never reaches Xero; (2) the request's ``Idempotency-Key``
is :func:`~ledgerflow.connectors.base.batch_idempotency_key` of its records' own keys in order, so
the same batch repeated after a crash between Xero's answer and the binder write is replayed by
Xero, not booked again. A batch formed differently after such a crash is not covered by (2):
Xero has no per-item key and ACCPAY ``InvoiceNumber`` is not unique (README, "Batch writes").

Because ACCPAY invoice numbers are not unique in Xero, the binder (InvoiceID ↔ canonical id) is
the record of what was booked.

Vendor resolution before a bill: ``vendor.accounting_id`` (ContactID) → binder row
``<tenant>:vendor-ref:<source_id>`` → ``GET /Contacts?where=ContactNumber=="<accounting_custom_id>"`` then
``where=Name=="<name>"`` → ``PUT /Contacts`` (option ``create_vendors``, default true); the binder
row is stored after resolving. GL accounts: ``accounting_custom_id`` or ``accounting_id`` as
``AccountCode`` (an id shaped like a UUID goes to ``AccountID``); else option
``default_expense_account``; else ``PermanentError(ErrorCode.REFERENCE_UNRESOLVED)``.

Config: ``credentials`` ``client_id``, ``client_secret``, ``refresh_token``, ``tenant_id``,
optional ``token_url``; ``base_url`` ``https://api.xero.com`` (None = the local sandbox: wire it
with :func:`ledgerflow.connectors.xero.sandbox.sandbox_connection`). Options: ``rate_limit_per_minute``
(60), ``max_concurrency`` (5), ``timeout_seconds``, ``error_overrides``, ``create_vendors``,
``default_expense_account``, ``default_revenue_account``, ``default_bank_account``,
``default_tax_type``, ``tax_account``, ``shipping_account``, ``discount_account``, ``verify_read_back``
(default true).

Read-back: Xero answers every document write with the document as it stored it (``Total``,
``TotalTax``, lines); it is mapped by :func:`~ledgerflow.connectors.xero.mapping.stored_document`
and attached to the ``Booked`` result, so the runtime compares it with the source (``erp.mismatch``).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx

from ledgerflow.connectors.base import (
    BatchItem,
    Booked,
    Connector,
    ConnectorError,
    HandleContext,
    InvalidResponse,
    PermanentError,
    RetriableError,
    Unsupported,
    batch_idempotency_key,
    reference_key,
)
from ledgerflow.connectors.change_orders import change_order_tag
from ledgerflow.connectors.xero import mapping
from ledgerflow.connectors.xero.config import Credentials, Options
from ledgerflow.connectors.xero.errors import XERO_ERRORS, xero_error
from ledgerflow.contracts import (
    Action,
    Bill,
    CanonicalRecord,
    Customer,
    Document,
    Invoice,
    Operation,
    Party,
    Payment,
    PurchaseOrder,
    PurchaseOrderChange,
    Reference,
    Vendor,
    erp_identifiers,
)
from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.core.outbound.client import ErpClient, loads_json
from ledgerflow.core.outbound.oauth import RefreshTokenManager
from ledgerflow.core.reference_cache import ReferenceCache
from ledgerflow.core.settings import ConnectionConfig
from ledgerflow.core.state import StateStore

__all__ = ["XeroConnector"]

_UNSUPPORTED = {
    "budget": "Xero budgets are read-only in the Accounting API (GET /Budgets only)",
    "budget_change": "Xero budgets are read-only in the Accounting API (GET /Budgets only)",
    "sales_order": "Xero has no sales order document (quotes are not orders)",
    "item": "items are not synced to Xero by this connector",
}
_STATUS = {"draft": "DRAFT", "submitted": "SUBMITTED"}


def _quote(value: str) -> str:
    r"""Quote a value for a Xero ``where`` filter (backslash-escape ``\`` and ``"``)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _hash(model: Any) -> str:
    return hashlib.sha256(model.model_dump_json().encode()).hexdigest()


_DUPLICATE_CONTACT = "is already assigned to another contact"
"""Xero's validation message when a contact name is taken (names are unique among active contacts)."""


class XeroConnector(Connector):
    """Books canonical records into one Xero organisation (tenant). See the module docstring."""

    erp: ClassVar[str] = "xero"
    options_model = Options
    credentials_model = Credentials
    supports: ClassVar[frozenset[str]] = frozenset(
        {"bill", "invoice", "vendor", "customer", "payment", "purchase_order", "purchase_order_change"}
    )
    TOKEN_URL: ClassVar[str] = "https://identity.xero.com/connect/token"  # noqa: S105
    RATE_PER_MINUTE: ClassVar[int] = 60
    MAX_CONCURRENCY: ClassVar[int] = 5
    max_batch: ClassVar[int] = 50
    mapping_kinds: ClassVar[frozenset[str]] = frozenset(
        {
            "vendor",  # Contact.ContactID (bills, purchase orders)
            "customer",  # Contact.ContactID (sales invoices)
            "gl_account",  # LineItem.AccountCode / AccountID
            "tax_rate",  # LineItem.TaxType
            "cost_code",  # LineItem.Tracking (options.tracking_categories)
            "project",  # LineItem.Tracking
            "business_unit",  # LineItem.Tracking
            "item",  # LineItem.ItemCode (sales invoices)
            "bank_account",  # Payment.Account
        }
    )
    unused_mapping_kinds: ClassVar[Mapping[str, str]] = {
        "party": "books a payment against the paid invoice, whose Contact it keeps; a payment's party is not sent",
        "ap_account": "posts bills to the organisation's accounts payable account (Xero takes no AP account per bill)",
        "cost_type": "books as tracking only cost_code, project and business_unit (options.tracking_categories)",
    }

    def __init__(self, name: str, config: ConnectionConfig, http: httpx.AsyncClient, state: StateStore) -> None:
        super().__init__(name, config, http, state)
        self._client: ErpClient | None = None
        self._resolving: dict[str, asyncio.Lock] = {}

    # ------------------------------------------------------------------ plumbing

    @property
    def tenant_id(self) -> str:
        """The Xero tenant (organisation) id from the credentials.

        Raises:
            PermanentError: ``auth.config`` when missing.

        """
        return self.credential("tenant_id")

    def client(self) -> ErpClient:
        """The connection's :class:`ErpClient` (built on first use).

        Raises:
            PermanentError: ``config.base_url`` / ``auth.config`` when the connection is not wired.

        """
        if self._client is None:
            root = self.api_root("Xero", "ledgerflow.connectors.xero.sandbox")
            auth = RefreshTokenManager.from_config(
                self.http, self.state, self.name, self.config, erp=self.erp, default_token_url=self.TOKEN_URL
            )
            self._client = ErpClient.for_connection(
                self.http,
                erp=self.erp,
                connection=self.name,
                config=self.config,
                base_url=f"{root}/api.xro/2.0",
                default_rate_per_minute=self.RATE_PER_MINUTE,
                default_concurrency=self.MAX_CONCURRENCY,
                errors=XERO_ERRORS,
                extract=xero_error,
                auth=auth,
                default_headers={"xero-tenant-id": self.tenant_id},
            )
        return self._client

    async def _call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        key: str | None = None,
        params: dict[str, str] | None = None,
        body: Any = None,
    ) -> tuple[dict[str, Any], int]:
        headers = {"Idempotency-Key": key[:128]} if key else None
        response = await self.client().request(
            method, path, operation=operation, params=params, json_body=body, headers=headers
        )
        parsed = loads_json(response.content) if response.content else {}
        if not isinstance(parsed, dict):
            raise InvalidResponse(f"Xero {path}: unexpected response body")
        return parsed, response.status_code

    async def _write_one(
        self,
        method: str,
        plural: str,
        id_field: str,
        document: dict[str, Any],
        *,
        operation: str,
        key: str,
        record_id: str | None = None,
    ) -> tuple[dict[str, Any], int]:
        path = f"/{plural}/{record_id}" if record_id else f"/{plural}"
        params = {"unitdp": str(mapping.UNITDP)} if plural in ("Invoices", "PurchaseOrders") else None
        answer, status = await self._call(
            method, path, operation=operation, key=key, params=params, body={plural: [document]}
        )
        records = answer.get(plural) or []
        if not records or not isinstance(records[0], dict) or id_field not in records[0]:
            raise InvalidResponse(f"Xero {plural} answer carries no {id_field}")
        record = records[0]
        if record.get("HasErrors") or record.get("ValidationErrors"):
            messages = "; ".join(str(e.get("Message")) for e in record.get("ValidationErrors") or [])
            raise PermanentError(
                ErrorCode.ERP_VALIDATION, f"Xero {plural}: {messages or 'validation errors'}", http_status=status
            )
        return record, status

    async def _get_one(self, plural: str, record_id: str) -> dict[str, Any] | None:
        try:
            answer, _ = await self._call("GET", f"/{plural}/{record_id}", operation=f"{plural.lower()}.read")
        except PermanentError as exc:
            if exc.code == ErrorCode.ERP_NOT_FOUND or exc.http_status == 404:
                return None
            raise
        records = answer.get(plural) or []
        return records[0] if records and isinstance(records[0], dict) else None

    # ------------------------------------------------------------------ Connector API

    async def check(self) -> None:
        """``GET /api.xro/2.0/Organisation``: credentials, token refresh, tenant access and reachability.

        Raises:
            PermanentError: bad credentials (``auth.rejected`` / ``auth.refresh_rejected``), no tenant access.
            RetriableError: Xero unreachable, throttling or failing.

        """
        await self._call("GET", "/Organisation", operation="organisation.read")

    async def handle(self, record: CanonicalRecord, ctx: HandleContext) -> Booked:
        """Book ``record`` (see the module docstring for the mapping).

        Raises:
            Unsupported: budgets (read-only in Xero), sales orders, items.
            PermanentError: validation errors, unresolved references, rejected credentials.
            RetriableError: throttling (``retry_after`` from ``Retry-After``), 5xx, timeouts.

        """
        ctx = ctx.for_tenant(record.tenant)  # reference keys carry the record's tenant
        if isinstance(record, Bill):
            return await self._document("Invoices", "InvoiceID", record, ctx, self._bill_body)
        if isinstance(record, Invoice):
            return await self._document("Invoices", "InvoiceID", record, ctx, self._invoice_body)
        if isinstance(record, PurchaseOrder):
            return await self._document("PurchaseOrders", "PurchaseOrderID", record, ctx, self._po_body)
        if isinstance(record, PurchaseOrderChange):
            return await self._po_change(record, ctx)
        if isinstance(record, Payment):
            return await self._payment(record, ctx)
        if isinstance(record, Vendor | Customer):
            return await self._contact(record, ctx)
        reason = _UNSUPPORTED.get(record.object_type, f"Xero connector does not book {record.object_type}")
        raise Unsupported(ErrorCode.ERP_UNSUPPORTED_OBJECT, reason)

    # ------------------------------------------------------------------ batch writes

    def batch_kind(self, record: CanonicalRecord, ctx: HandleContext) -> str | None:
        """``"Invoices"`` for a new bill or sales invoice (one ``PUT /Invoices`` takes both), else None."""
        if ctx.existing is None and record.action is Action.UPSERT and isinstance(record, Bill | Invoice):
            return "Invoices"
        return None

    async def handle_batch(self, items: Sequence[BatchItem]) -> list[Booked | ConnectorError]:
        """Create the bills and invoices of ``items`` in one ``PUT /Invoices?summarizeErrors=false``.

        See the module docstring (mapping back, idempotency). Items that are not new bills or
        invoices are handled on their own; an item whose body cannot be built (unresolved
        account or vendor) fails alone, before the request.

        Raises:
            ConnectorError: the request as a whole failed (throttled, unreachable, rejected).
            InvalidResponse: Xero's answer does not line up with the invoices sent.
        """
        outcomes: list[Booked | ConnectorError | None] = [None] * len(items)

        async def body_of(item: BatchItem) -> dict[str, Any] | ConnectorError:
            ctx = item.ctx.for_tenant(item.record.tenant)
            try:
                if isinstance(item.record, Bill):
                    return await self._bill_body(item.record, ctx)
                assert isinstance(item.record, Invoice)
                return await self._invoice_body(item.record, ctx)
            except ConnectorError as exc:
                return exc

        batched = [i for i, item in enumerate(items) if self.batch_kind(item.record, item.ctx) == "Invoices"]
        alone = [i for i in range(len(items)) if i not in set(batched)]
        for i, outcome in zip(alone, await super().handle_batch([items[i] for i in alone]), strict=True):
            outcomes[i] = outcome
        bodies = await asyncio.gather(*(body_of(items[i]) for i in batched))
        sending: list[tuple[int, dict[str, Any]]] = []
        for i, body in zip(batched, bodies, strict=True):
            if isinstance(body, ConnectorError):
                outcomes[i] = body
            else:
                sending.append((i, body))
        if sending:
            key = batch_idempotency_key([items[i].ctx.idempotency_key for i, _ in sending])
            answer, status = await self._call(
                "PUT",
                "/Invoices",
                operation="invoices.create_batch",
                key=key,
                params={"unitdp": str(mapping.UNITDP), "summarizeErrors": "false"},
                body={"Invoices": [body for _, body in sending]},
            )
            elements = answer.get("Invoices")
            if not isinstance(elements, list) or len(elements) != len(sending):
                raise InvalidResponse(f"Xero Invoices answer does not carry one element per invoice ({len(sending)})")
            for (i, body), element in zip(sending, elements, strict=True):
                outcomes[i] = self._batch_outcome(items[i].record, body, element, status)
        return [outcome for outcome in outcomes if outcome is not None]

    def _batch_outcome(self, record: Any, body: dict[str, Any], element: Any, status: int) -> Booked | ConnectorError:
        """The outcome of one invoice of a ``summarizeErrors=false`` answer (checked against what was sent).

        Raises:
            InvalidResponse: the element is not the invoice sent at its position.
        """
        if not isinstance(element, dict):
            raise InvalidResponse("Xero Invoices answer element is not an object")
        sent_contact = body["Contact"]["ContactID"]
        got_contact = (element.get("Contact") or {}).get("ContactID")
        if (
            element.get("Type") != body["Type"]
            or element.get("InvoiceNumber") != body.get("InvoiceNumber")
            or (got_contact is not None and got_contact != sent_contact)
        ):
            raise InvalidResponse(
                f"Xero Invoices answer out of line: sent {body['Type']} {body.get('InvoiceNumber')!r}, "
                f"got {element.get('Type')} {element.get('InvoiceNumber')!r}"
            )
        errors = element.get("ValidationErrors") or []
        if element.get("HasErrors") or errors or element.get("StatusAttributeString") == "ERROR":
            messages = "; ".join(str(e.get("Message")) for e in errors if isinstance(e, dict))
            return PermanentError(
                ErrorCode.ERP_VALIDATION, f"Xero Invoices: {messages or 'validation errors'}", http_status=status
            )
        if "InvoiceID" not in element:
            return InvalidResponse("Xero Invoices answer element carries no InvoiceID", http_status=status)
        return Booked(
            Operation.CREATE,
            str(element["InvoiceID"]),
            element.get("UpdatedDateUTC"),
            status,
            stored=mapping.stored_document(element, source_lines=len(record.line_items)),
            counterparty_id=str(sent_contact),
        )

    # ------------------------------------------------------------------ documents

    async def _document(self, plural: str, id_field: str, record: Any, ctx: HandleContext, build: Any) -> Booked:
        kind = plural.lower()
        if record.action is not Action.UPSERT:
            return await self._void(plural, id_field, ctx)
        body: dict[str, Any] = await build(record, ctx)
        if ctx.existing is not None:
            body[id_field] = ctx.existing.erp_record_id
            stored, status = await self._write_one(
                "POST",
                plural,
                id_field,
                body,
                operation=f"{kind}.update",
                key=ctx.idempotency_key,
                record_id=ctx.existing.erp_record_id,
            )
            operation = Operation.UPDATE
        else:
            stored, status = await self._write_one(
                "PUT", plural, id_field, body, operation=f"{kind}.create", key=ctx.idempotency_key
            )
            operation = Operation.CREATE
        # Read-back: Xero answers a write with the whole document as it stored it.
        return Booked(
            operation,
            str(stored[id_field]),
            stored.get("UpdatedDateUTC"),
            status,
            stored=mapping.stored_document(stored, source_lines=len(record.line_items)),
            counterparty_id=str(body["Contact"]["ContactID"]),
        )

    async def _po_change(self, change: PurchaseOrderChange, ctx: HandleContext) -> Booked:
        """Apply (upsert) or remove (void/delete) ``change`` on the purchase order it changes.

        Raises:
            RetriableError: the order is not booked here yet, or Xero's transient errors.
            PermanentError: the order no longer exists in Xero, or Xero's validation errors.
        """
        order_id = await self.changed_order_id(change)
        current = await self._get_one("PurchaseOrders", order_id)
        if current is None:
            raise PermanentError(
                ErrorCode.ERP_NOT_FOUND, f"Xero PurchaseOrder {order_id} changed by {change.canonical_id} is gone"
            )
        applying = change.action is Action.UPSERT
        accounts = self._line_accounts(change, "default_expense_account") if applying else []
        lines = mapping.changed_order_lines(
            current.get("LineItems") or [],
            change if applying else None,
            change_order_tag(change),
            accounts=accounts,
            options=self.config.options,
            option_names=await self._tracking_option_names(change) if applying else {},
        )
        stored, status = await self._write_one(
            "POST",
            "PurchaseOrders",
            "PurchaseOrderID",
            {"PurchaseOrderID": order_id, "LineItems": lines},
            operation="purchaseorders.change",
            key=ctx.idempotency_key,
            record_id=order_id,
        )
        # The order (original plus every change) is not comparable with the change alone: no read-back.
        return Booked(Operation.UPDATE if applying else Operation.VOID, order_id, stored.get("UpdatedDateUTC"), status)

    async def _void(self, plural: str, id_field: str, ctx: HandleContext) -> Booked:
        if ctx.existing is None:
            raise Unsupported(
                ErrorCode.ERP_NOTHING_TO_VOID, f"no Xero {plural[:-1]} was booked for this record on {self.name}"
            )
        record_id = ctx.existing.erp_record_id
        current = await self._get_one(plural, record_id)
        if current is None:
            raise PermanentError(ErrorCode.ERP_NOT_FOUND, f"Xero {plural[:-1]} {record_id} no longer exists")
        status_now = current.get("Status")
        if status_now in ("VOIDED", "DELETED"):
            return Booked(Operation.VOID, record_id, current.get("UpdatedDateUTC"), 200)
        target = "DELETED" if status_now in ("DRAFT", "SUBMITTED") or plural == "PurchaseOrders" else "VOIDED"
        stored, status = await self._write_one(
            "POST",
            plural,
            id_field,
            {id_field: record_id, "Status": target},
            operation=f"{plural.lower()}.void",
            key=ctx.idempotency_key,
            record_id=record_id,
        )
        return Booked(Operation.VOID, record_id, stored.get("UpdatedDateUTC"), status)

    async def _bill_body(self, bill: Bill, ctx: HandleContext) -> dict[str, Any]:
        mapping.check_amounts(bill)
        contact_id = await self._contact_id("Vendor", bill.vendor, ctx, create=True)
        accounts = self._line_accounts(bill, "default_expense_account")
        return mapping.invoice_body(
            bill,
            contact_id=contact_id,
            accounts=accounts,
            options=self.config.options,
            option_names=await self._tracking_option_names(bill),
        )

    async def _invoice_body(self, invoice: Invoice, ctx: HandleContext) -> dict[str, Any]:
        mapping.check_amounts(invoice)
        contact_id = await self._contact_id("Customer", invoice.customer, ctx, create=True)
        accounts = self._line_accounts(invoice, "default_revenue_account")
        return mapping.invoice_body(
            invoice,
            contact_id=contact_id,
            accounts=accounts,
            options=self.config.options,
            option_names=await self._tracking_option_names(invoice),
        )

    async def _po_body(self, order: PurchaseOrder, ctx: HandleContext) -> dict[str, Any]:
        mapping.check_amounts(order)
        contact_id = await self._contact_id("Vendor", order.vendor, ctx, create=True)
        accounts = self._line_accounts(order, "default_expense_account")
        return mapping.purchase_order_body(
            order,
            contact_id=contact_id,
            accounts=accounts,
            options=self.config.options,
            option_names=await self._tracking_option_names(order),
        )

    async def _tracking_option_names(self, document: Document) -> dict[str, str]:
        """TrackingOptionID → option name, from the reference cache, for the document's mapped tracking ids.

        A tracking mapping may name a ``TrackingOptionID``; Xero books ``LineItemTracking`` by
        category and option *name*, so the id is resolved through what ``ledgerflow
        sync-reference`` cached (``TrackingOption`` rows). Empty when the document maps none.
        """
        ids = mapping.tracking_option_ids(document)
        if not ids:
            return {}
        rows = await ReferenceCache(self.state).find(self.name, ["tracking"], ids=ids)
        return {row.erp_id.lower(): row.name for row in rows if row.entity == "TrackingOption" and row.name}

    def _line_accounts(self, document: Document, default_option: str) -> list[str]:
        """The Xero account code (or AccountID) of each line: its GL account's ERP code/id, else the option.

        Raises:
            PermanentError: ``reference.unresolved`` naming the line.
        """
        accounts = []
        for line in document.line_items:
            erp_id, code, _ = erp_identifiers(line.gl_account)
            account = code or erp_id or self.config.options.get(default_option)
            if not account:
                raise PermanentError(
                    ErrorCode.REFERENCE_UNRESOLVED,
                    f"{document.object_type} {document.canonical_id} line {line.line_number}: no GL account "
                    f"(gl_account.accounting_custom_id or accounting_id) and no {default_option}",
                )
            accounts.append(str(account))
        return accounts

    # ------------------------------------------------------------------ payments

    async def _payment(self, payment: Payment, ctx: HandleContext) -> Booked:
        if payment.action is not Action.UPSERT:
            if ctx.existing is None:
                raise Unsupported(
                    ErrorCode.ERP_NOTHING_TO_VOID, f"no Xero payment was booked for {payment.canonical_id}"
                )
            last: tuple[dict[str, Any], int] | None = None
            for payment_id in ctx.existing.erp_record_id.split(","):
                last = await self._write_one(
                    "POST",
                    "Payments",
                    "PaymentID",
                    {"Status": "DELETED"},
                    operation="payments.void",
                    key=f"{ctx.idempotency_key}-{payment_id[:8]}",
                    record_id=payment_id,
                )
            return Booked(Operation.VOID, ctx.existing.erp_record_id, None, last[1] if last else None)
        if ctx.existing is not None:
            raise Unsupported(
                ErrorCode.ERP_IMMUTABLE, "Xero payments cannot be edited: void and re-create them in the source"
            )
        if not payment.applied_to:
            raise PermanentError(
                ErrorCode.REFERENCE_UNRESOLVED, f"payment {payment.canonical_id} is not applied to any document"
            )
        bank = payment.bank_account
        account: dict[str, str]
        code = (bank.accounting_custom_id or bank.accounting_id) if bank else None
        code = code or self.config.options.get("default_bank_account")
        if not code:
            raise PermanentError(
                ErrorCode.REFERENCE_UNRESOLVED,
                f"payment {payment.canonical_id}: no bank account and no default_bank_account",
            )
        account = {"AccountID": str(code)} if _is_uuid(str(code)) else {"Code": str(code)}
        documents = []
        for applied in payment.applied_to:
            invoice_id = applied.document.accounting_id
            if not invoice_id and applied.document_canonical_id:
                row = await self.state.get_binding(self.name, applied.document_canonical_id)
                invoice_id = row.erp_record_id if row else None
            if not invoice_id:
                raise RetriableError(
                    ErrorCode.REFERENCE_PENDING,
                    f"payment {payment.canonical_id}: {applied.document_canonical_id or applied.document.source_id} "
                    f"is not booked on {self.name} yet",
                    retry_after=30.0,
                )
            document: dict[str, Any] = {
                "Invoice": {"InvoiceID": invoice_id},
                "Account": account,
                "Date": payment.payment_date.isoformat(),
                "Amount": applied.amount,
            }
            if payment.reference:
                document["Reference"] = payment.reference[:255]
            documents.append(document)
        answer, status = await self._call(
            "PUT", "/Payments", operation="payments.create", key=ctx.idempotency_key, body={"Payments": documents}
        )
        stored = [p for p in answer.get("Payments") or [] if isinstance(p, dict) and "PaymentID" in p]
        ids = [str(p["PaymentID"]) for p in stored]
        if len(ids) != len(documents):
            raise InvalidResponse("Xero Payments answer does not carry every PaymentID")
        # Read-back: the answer carries each Payment as Xero stored it.
        return Booked(Operation.CREATE, ",".join(ids), None, status, stored=mapping.stored_payments(stored))

    # ------------------------------------------------------------------ contacts

    async def _find_contact(self, field: str, value: str) -> dict[str, Any] | None:
        answer, _ = await self._call(
            "GET", "/Contacts", operation="contacts.query", params={"where": f"{field}=={_quote(value)}"}
        )
        contacts = [c for c in answer.get("Contacts") or [] if c.get("ContactStatus") != "ARCHIVED"]
        return contacts[0] if contacts else None

    async def _contact_id(self, role: str, ref: Reference, ctx: HandleContext, *, create: bool) -> str:
        """Resolve a vendor/customer reference to its Xero ContactID (see the module docstring).

        Raises:
            PermanentError: ``reference.unresolved`` when nothing matches and creating is off or impossible.

        """
        if ref.accounting_id:
            return ref.accounting_id
        key = reference_key(ctx.tenant, role.lower(), ref.source_id) if ref.source_id else None
        if key and (bound := await self.reference_id(key)) is not None:
            return bound
        if key is None:
            return await self._resolve_contact(role, ref, ctx, None, create=create)
        # One resolution per contact at a time: the invoices of a batch naming one new vendor
        # look it up (and create it) once, not once each.
        async with self._resolving.setdefault(key, asyncio.Lock()):
            if (bound := await self.reference_id(key)) is not None:
                return bound
            return await self._resolve_contact(role, ref, ctx, key, create=create)

    async def _resolve_contact(
        self, role: str, ref: Reference, ctx: HandleContext, key: str | None, *, create: bool
    ) -> str:
        """Find (or create) the contact of ``ref`` in Xero and bind it under ``key``.

        Raises:
            PermanentError: ``reference.unresolved`` when nothing matches and creating is off or impossible.
        """
        found = (
            await self._find_contact("ContactNumber", ref.accounting_custom_id) if ref.accounting_custom_id else None
        )
        if found is None and ref.name:
            found = await self._find_contact("Name", ref.name)
        if found is None:
            allowed = self.config.options.get("create_vendors" if role == "Vendor" else "create_customers", True)
            if not (create and allowed and ref.name):
                raise PermanentError(
                    ErrorCode.REFERENCE_UNRESOLVED,
                    f"{role.lower()} {ref.name or ref.source_id!r} not found in Xero"
                    + ("" if ref.name else " (no name to match or create it by)"),
                )
            found = await self._create_contact(ref, ref.name, role, ctx)
        contact_id = str(found["ContactID"])
        if key:
            await self.remember_reference(key, contact_id, erp_version=None, content_hash=_hash(ref))
        return contact_id

    async def _create_contact(self, ref: Reference, name: str, role: str, ctx: HandleContext) -> dict[str, Any]:
        """``PUT /Contacts``; when a concurrent record created the same name first, use that contact.

        Xero keeps contact names unique among active contacts and answers a second create with a
        validation error ("… is already assigned to another contact").

        Raises:
            PermanentError: the create failed for another reason.
        """
        try:
            found, _ = await self._write_one(
                "PUT",
                "Contacts",
                "ContactID",
                self._contact_body(ref, name, role),
                operation="contacts.create",
                key=f"{ctx.idempotency_key}-contact",
            )
        except PermanentError as exc:
            if _DUPLICATE_CONTACT not in exc.message:
                raise
            existing = await self._find_contact("Name", name)
            if existing is None:
                raise
            return existing
        return found

    @staticmethod
    def _contact_body(ref: Reference | Party, name: str, role: str) -> dict[str, Any]:
        body: dict[str, Any] = {"Name": name[:255]}
        number = getattr(ref, "accounting_custom_id", None)
        if number:
            body["ContactNumber"] = str(number)[:50]
        email = getattr(ref, "email", None)
        if email:
            body["EmailAddress"] = email
        tax_id = getattr(ref, "tax_id", None)
        if tax_id:
            body["TaxNumber"] = tax_id[:50]
        phone = getattr(ref, "phone", None)
        if phone:
            body["Phones"] = [{"PhoneType": "DEFAULT", "PhoneNumber": phone}]
        address = getattr(ref, "address", None)
        if address is not None:
            addr = {
                "AddressType": "POBOX",
                "AddressLine1": address.line1,
                "AddressLine2": address.line2,
                "City": address.city,
                "Region": address.region,
                "PostalCode": address.postal_code,
                "Country": address.country,
            }
            body["Addresses"] = [{k: v for k, v in addr.items() if v}]
        return body

    async def _contact(self, party: Vendor | Customer, ctx: HandleContext) -> Booked:
        role = "Vendor" if isinstance(party, Vendor) else "Customer"
        key = reference_key(party.tenant, role.lower(), party.source_id)
        archive = party.action is not Action.UPSERT or not party.active
        body = {"ContactStatus": "ARCHIVED"} if archive else self._contact_body(party, party.name, role)
        contact_id = ctx.existing.erp_record_id if ctx.existing else party.accounting_id
        if contact_id is None:
            contact_id = await self.reference_id(key)
        if contact_id is None:
            found = await self._find_contact("Name", party.name)
            contact_id = str(found["ContactID"]) if found else None
        if contact_id is not None:
            stored, status = await self._write_one(
                "POST",
                "Contacts",
                "ContactID",
                {**body, "ContactID": contact_id},
                operation="contacts.update",
                key=ctx.idempotency_key,
                record_id=contact_id,
            )
            operation = Operation.VOID if archive else Operation.UPDATE
        elif archive:
            raise Unsupported(ErrorCode.ERP_NOTHING_TO_VOID, f"contact {party.name!r} does not exist in Xero")
        else:
            stored, status = await self._write_one(
                "PUT", "Contacts", "ContactID", body, operation="contacts.create", key=ctx.idempotency_key
            )
            operation = Operation.CREATE
        await self.remember_reference(key, str(stored["ContactID"]), erp_version=None, content_hash=_hash(party))
        return Booked(operation, str(stored["ContactID"]), stored.get("UpdatedDateUTC"), status)
