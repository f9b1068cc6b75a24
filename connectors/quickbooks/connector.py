"""QuickBooks Online connector (Intuit Accounting API v3, ``minorversion=75``).

Mapping (``shared/reference/erp_apis.md`` §1, Intuit entity pages for Bill, Vendor, Customer,
BillPayment, Payment, PurchaseOrder, Invoice):

=====================  ==============================================================================
canonical              QuickBooks
=====================  ==============================================================================
bill                   ``POST /bill`` — body by :func:`ledgerflow.connectors.quickbooks.mapping.bill_body`
                       (account-based lines, header tax as ``TxnTaxDetail`` or a tax line, shipping
                       and discount lines on configured accounts: see that module)
vendor / customer      ``POST /vendor`` / ``/customer`` (``DisplayName``, e-mail, phone, address, tax id);
                       delete → ``Active: false`` (names cannot be deleted)
payment (outgoing)     ``POST /billpayment`` (``PayType: Check``, ``CheckPayment.BankAccountRef``,
                       ``Line[].LinkedTxn`` → the bills)
payment (incoming)     ``POST /payment`` (``CustomerRef``, ``DepositToAccountRef``, ``LinkedTxn`` → invoices)
purchase_order         ``POST /purchaseorder`` (:func:`~ledgerflow.connectors.quickbooks.mapping.purchase_order_body`)
purchase_order_change  QuickBooks has no change-order entity: the purchase order it changes (binder, or
                       ``purchase_order.accounting_id``) is read and updated (``SyncToken``, sparse) with
                       the change's lines appended, tagged ``Change order <number>: `` in their
                       description, so a new version of the change replaces them and a void removes them
invoice                ``POST /invoice`` (:func:`~ledgerflow.connectors.quickbooks.mapping.invoice_body`:
                       ``SalesItemLineDetail`` with ``ItemRef`` = line item or option ``default_item``,
                       ``TxnTaxDetail`` or a tax item line, a shipping item line, a ``DiscountLineDetail``)
=====================  ==============================================================================

Idempotency: every create carries ``requestid=<ctx.idempotency_key>`` (Intuit replays the first
response for a repeated id), so a redelivered record never books twice. Updates (``ctx.existing``)
read the record first and send its current ``SyncToken``; a 5010 "Stale Object Error" from a
concurrent writer is retriable (the next attempt re-reads). Void: bills and purchase orders
``?operation=delete``, invoices and payments ``?operation=void``.

Batch writes (:meth:`QuickBooksConnector.handle_batch`): new bills, sales invoices and purchase
orders of one connection go up to :attr:`QuickBooksConnector.max_batch` (30, Intuit's maximum) per
``POST /batch`` as ``BatchItemRequest[{bId, operation: create, <Entity>}]``, one item per record;
``bId`` is the record's own idempotency key, and each ``BatchItemResponse`` is mapped back by its
``bId`` (never by position: Intuit does not promise the order). An item answered with a ``Fault``
is that record's error (classified like a single request's fault: 6140 duplicate document number,
2500 unknown reference… are permanent, 5010 and 003001 retriable); its neighbours are booked.
Batch requests go through a limiter of their own: Intuit allows 40 batch requests per minute per
company (option ``batch_rate_limit_per_minute``; unset, it is 40/500 of ``rate_limit_per_minute``,
so raising the rate for a sandbox raises it too), besides the 500 requests per minute that count
them too. Idempotency per record: (1) the binder makes a redelivered record that was acknowledged
a ``duplicate`` that never reaches QuickBooks; (2) ``requestid`` applies to the batch request
as a whole (Intuit: at most 36 characters for a batch), so it is
:func:`~ledgerflow.connectors.base.batch_idempotency_key` of the records' keys in order: the same
batch repeated after a crash between the answer and the binder write is replayed by Intuit, not
booked again. A batch formed differently after such a crash is not covered by (2): QuickBooks
has no per-item key in a batch (README, "Batch writes").

Vendor resolution before a bill: ``vendor.accounting_id`` → binder row ``<tenant>:vendor-ref:<source_id>``
→ ``select * from Vendor where DisplayName = '…'`` → create (option ``create_vendors``, default
true); the binder row is stored after resolving. GL accounts: ``gl_account.accounting_id`` is the
``AccountRef``; an ``accounting_custom_id`` alone is looked up as the account number (``AcctNum``);
else option ``default_expense_account``; else ``PermanentError(ErrorCode.REFERENCE_UNRESOLVED)``.

Config: ``credentials`` ``client_id``, ``client_secret``, ``refresh_token``, ``realm_id``,
optional ``token_url``; ``base_url`` e.g. ``https://quickbooks.api.intuit.com`` (None = the local
sandbox: wire it with :func:`ledgerflow.connectors.quickbooks.sandbox.sandbox_connection`). Options:
``rate_limit_per_minute`` (500), ``max_concurrency`` (10), ``timeout_seconds``,
``error_overrides``, ``create_vendors``, ``default_expense_account``, ``default_bank_account``,
``default_item``, ``tax_code``, ``tax_account``, ``tax_item``, ``shipping_account``, ``shipping_item``,
``discount_account``, ``verify_read_back`` (default true).

Read-back: the answer to every document write is the entity as QuickBooks stored it; it is mapped
by :func:`~ledgerflow.connectors.quickbooks.mapping.stored_document` and attached to the
``Booked`` result, so the runtime compares it with the source document (``erp.mismatch``).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx
from aiolimiter import AsyncLimiter

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
from ledgerflow.connectors.quickbooks import mapping
from ledgerflow.connectors.quickbooks.config import Credentials, Options
from ledgerflow.connectors.quickbooks.errors import QUICKBOOKS_ERRORS, fault_of, quickbooks_error
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
from ledgerflow.core.settings import ConnectionConfig
from ledgerflow.core.state import StateStore

__all__ = ["QuickBooksConnector"]

_UNSUPPORTED = {
    "sales_order": "QuickBooks Online has no sales order entity",
    "budget": "QuickBooks budgets are GL budgets by account and period, not project budgets; not mapped",
    "budget_change": "QuickBooks budgets are GL budgets by account and period, not project budgets; not mapped",
    "item": "items are not synced to QuickBooks by this connector",
}
_VOID_OPERATION = {
    "bill": "delete",
    "purchaseorder": "delete",
    "invoice": "void",
    "payment": "void",
    "billpayment": "void",
}


def _escape(value: str) -> str:
    r"""Quote a value for the QuickBooks query language (backslash-escape ``\\`` and ``'``)."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _hash(model: Any) -> str:
    return hashlib.sha256(model.model_dump_json().encode()).hexdigest()


class QuickBooksConnector(Connector):
    """Books canonical records into one QuickBooks Online company (realm). See the module docstring."""

    erp: ClassVar[str] = "quickbooks"
    options_model = Options
    credentials_model = Credentials
    supports: ClassVar[frozenset[str]] = frozenset(
        {"bill", "vendor", "customer", "payment", "purchase_order", "purchase_order_change", "invoice"}
    )
    MINOR_VERSION: ClassVar[str] = "75"
    TOKEN_URL: ClassVar[str] = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"  # noqa: S105
    RATE_PER_MINUTE: ClassVar[int] = 500
    MAX_CONCURRENCY: ClassVar[int] = 10
    BATCH_RATE_PER_MINUTE: ClassVar[int] = 40
    max_batch: ClassVar[int] = 30
    mapping_kinds: ClassVar[frozenset[str]] = frozenset(
        {
            "vendor",  # VendorRef
            "customer",  # CustomerRef
            "party",  # a payment's VendorRef / CustomerRef
            "gl_account",  # AccountBasedExpenseLineDetail.AccountRef
            "ap_account",  # Bill.APAccountRef
            "bank_account",  # a payment's DepositToAccountRef / APAccountRef bank
            "cost_code",  # ClassRef
            "project",  # line CustomerRef (a Job customer)
            "business_unit",  # Bill.DepartmentRef
            "item",  # SalesItemLineDetail.ItemRef
        }
    )
    unused_mapping_kinds: ClassVar[Mapping[str, str]] = {
        "tax_rate": "books tax through the connection's options (options.tax_code for TxnTaxCodeRef, "
        "options.taxable_line_code / options.exempt_line_code for sales lines, options.tax_account / "
        "options.tax_item for a tax line), not a line's tax rate",
        "cost_type": "has no cost type field (a line's cost code books as ClassRef: map cost_code)",
    }

    def __init__(self, name: str, config: ConnectionConfig, http: httpx.AsyncClient, state: StateStore) -> None:
        super().__init__(name, config, http, state)
        self._client: ErpClient | None = None
        self._accounts_by_number: dict[str, str] = {}
        self._resolving: dict[str, asyncio.Lock] = {}
        # Unless set, batch requests keep Intuit's proportion of the request rate (40 of 500 per
        # minute), so a connection whose rate limit was raised (a sandbox) has its batch limit raised too.
        rate = float(config.options.get("rate_limit_per_minute") or self.RATE_PER_MINUTE)
        default_batch_rate = self.BATCH_RATE_PER_MINUTE * rate / self.RATE_PER_MINUTE
        batch_rate = float(config.options.get("batch_rate_limit_per_minute") or default_batch_rate)
        # Intuit counts batch requests per rolling minute: a bucket of `rate_limit_burst` (default 1)
        # refilled at the rate sends at most burst + rate in any minute.
        burst = int(config.options.get("rate_limit_burst") or 1)
        self._batch_limiter = AsyncLimiter(burst, 60.0 * burst / batch_rate)

    # ------------------------------------------------------------------ plumbing

    @property
    def realm_id(self) -> str:
        """The company (realm) id from the credentials.

        Raises:
            PermanentError: ``auth.config`` when missing.

        """
        return self.credential("realm_id")

    def client(self) -> ErpClient:
        """The connection's :class:`ErpClient` (built on first use).

        Raises:
            PermanentError: ``config.base_url`` / ``auth.config`` when the connection is not wired.

        """
        if self._client is None:
            root = self.api_root("QuickBooks", "ledgerflow.connectors.quickbooks.sandbox")
            auth = RefreshTokenManager.from_config(
                self.http, self.state, self.name, self.config, erp=self.erp, default_token_url=self.TOKEN_URL
            )
            self._client = ErpClient.for_connection(
                self.http,
                erp=self.erp,
                connection=self.name,
                config=self.config,
                base_url=f"{root}/v3/company/{self.realm_id}",
                default_rate_per_minute=self.RATE_PER_MINUTE,
                default_concurrency=self.MAX_CONCURRENCY,
                errors=QUICKBOOKS_ERRORS,
                extract=quickbooks_error,
                auth=auth,
            )
        return self._client

    async def _call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: dict[str, str] | None = None,
        body: Any = None,
    ) -> tuple[dict[str, Any], int]:
        client = self.client()
        response = await client.request(
            method,
            path,
            operation=operation,
            params={"minorversion": self.MINOR_VERSION, **(params or {})},
            json_body=body,
        )
        parsed = loads_json(response.content) if response.content else {}
        if fault_of(parsed) is not None:  # Intuit can answer 200 with a Fault
            raise client.error_for(response)
        if not isinstance(parsed, dict):
            raise InvalidResponse(f"QuickBooks {path}: unexpected response body")
        return parsed, response.status_code

    async def _query_one(self, entity: str, field: str, value: str) -> dict[str, Any] | None:
        # Entity and field are constants of this module; only the value is data, and it is escaped.
        query = f"select * from {entity} where {field} = '{_escape(value)}'"  # noqa: S608
        body, _ = await self._call("GET", "/query", operation=f"{entity.lower()}.query", params={"query": query})
        found = body.get("QueryResponse", {}).get(entity) or []
        return found[0] if found else None

    async def _read(self, entity: str, record_id: str) -> dict[str, Any] | None:
        try:
            body, _ = await self._call("GET", f"/{entity.lower()}/{record_id}", operation=f"{entity.lower()}.read")
        except PermanentError as exc:
            if exc.code == ErrorCode.ERP_NOT_FOUND:
                return None
            raise
        record = body.get(entity)
        return record if isinstance(record, dict) else None

    async def _write(
        self, entity: str, body: dict[str, Any], *, operation: str, request_id: str, extra: dict[str, str] | None = None
    ) -> tuple[dict[str, Any], int]:
        answer, status = await self._call(
            "POST",
            f"/{entity.lower()}",
            operation=operation,
            params={"requestid": request_id[:50], **(extra or {})},
            body=body,
        )
        record = answer.get(entity)
        if not isinstance(record, dict) or "Id" not in record:
            raise InvalidResponse(f"QuickBooks {entity} answer carries no Id")
        return record, status

    # ------------------------------------------------------------------ Connector API

    async def check(self) -> None:
        """``GET /v3/company/{realmId}/companyinfo/{realmId}``: credentials, token refresh and reachability.

        Raises:
            PermanentError: bad credentials (``auth.rejected`` / ``auth.refresh_rejected``) or config.
            RetriableError: QuickBooks unreachable, throttling or failing.

        """
        self.client()
        await self._call("GET", f"/companyinfo/{self.realm_id}", operation="companyinfo.read")

    async def handle(self, record: CanonicalRecord, ctx: HandleContext) -> Booked:
        """Book ``record`` (see the module docstring for the mapping).

        Raises:
            Unsupported: sales orders, budgets, items.
            PermanentError: validation faults, unresolved references, rejected credentials.
            RetriableError: throttling, 5xx, timeouts, stale ``SyncToken``, a bill a payment needs not booked yet.

        """
        ctx = ctx.for_tenant(record.tenant)  # reference keys carry the record's tenant
        if isinstance(record, Bill):
            return await self._transaction("Bill", record, ctx, await self._bill_body(record, ctx))
        if isinstance(record, PurchaseOrder):
            return await self._transaction("PurchaseOrder", record, ctx, await self._po_body(record, ctx))
        if isinstance(record, PurchaseOrderChange):
            return await self._po_change(record, ctx)
        if isinstance(record, Invoice):
            return await self._transaction("Invoice", record, ctx, await self._invoice_body(record, ctx))
        if isinstance(record, Payment):
            entity = "BillPayment" if record.direction == "outgoing" else "Payment"
            return await self._transaction(entity, record, ctx, await self._payment_body(record, ctx))
        if isinstance(record, Vendor | Customer):
            return await self._party(record, ctx)
        reason = _UNSUPPORTED.get(record.object_type, f"QuickBooks connector does not book {record.object_type}")
        raise Unsupported(ErrorCode.ERP_UNSUPPORTED_OBJECT, reason)

    # ------------------------------------------------------------------ batch writes

    def batch_kind(self, record: CanonicalRecord, ctx: HandleContext) -> str | None:
        """``"batch"`` for a new bill, sales invoice or purchase order (one ``/batch`` mixes them), else None."""
        if (
            ctx.existing is None
            and record.action is Action.UPSERT
            and isinstance(record, Bill | Invoice | PurchaseOrder)
        ):
            return "batch"
        return None

    async def handle_batch(self, items: Sequence[BatchItem]) -> list[Booked | ConnectorError]:
        """Create the documents of ``items`` in one ``POST /batch`` (see the module docstring).

        Items that are not new documents are handled on their own; an item whose body cannot be
        built (unresolved account or vendor) fails alone, before the request.

        Raises:
            ConnectorError: the batch request as a whole failed (throttled, unreachable, rejected).
            InvalidResponse: the answer does not carry every ``bId`` sent.
        """
        outcomes: list[Booked | ConnectorError | None] = [None] * len(items)

        async def body_of(item: BatchItem) -> tuple[str, dict[str, Any]] | ConnectorError:
            record, ctx = item.record, item.ctx.for_tenant(item.record.tenant)
            try:
                if isinstance(record, Bill):
                    body = await self._bill_body(record, ctx)
                    entity = "Bill"
                elif isinstance(record, Invoice):
                    body = await self._invoice_body(record, ctx)
                    entity = "Invoice"
                else:
                    assert isinstance(record, PurchaseOrder)
                    body = await self._po_body(record, ctx)
                    entity = "PurchaseOrder"
            except ConnectorError as exc:
                return exc
            assert body is not None
            return entity, body

        batched = [i for i, item in enumerate(items) if self.batch_kind(item.record, item.ctx) == "batch"]
        alone = [i for i in range(len(items)) if i not in set(batched)]
        for i, outcome in zip(alone, await super().handle_batch([items[i] for i in alone]), strict=True):
            outcomes[i] = outcome
        built = await asyncio.gather(*(body_of(items[i]) for i in batched))
        sending: dict[str, tuple[int, str, dict[str, Any]]] = {}
        for i, made in zip(batched, built, strict=True):
            if isinstance(made, ConnectorError):
                outcomes[i] = made
            else:
                sending[items[i].ctx.idempotency_key] = (i, *made)
        if sending:
            request = [{"bId": bid, "operation": "create", entity: body} for bid, (_, entity, body) in sending.items()]
            async with self._batch_limiter:
                answer, status = await self._call(
                    "POST",
                    "/batch",
                    operation="batch.create",
                    params={"requestid": batch_idempotency_key(list(sending))},
                    body={"BatchItemRequest": request},
                )
            responses = {str(r.get("bId")): r for r in answer.get("BatchItemResponse") or [] if isinstance(r, dict)}
            for bid, (i, entity, body) in sending.items():
                response = responses.get(bid)
                if response is None:
                    raise InvalidResponse(f"QuickBooks batch answer carries no BatchItemResponse for bId {bid}")
                outcomes[i] = self._batch_outcome(items[i].record, entity, body, response, status)
        return [outcome for outcome in outcomes if outcome is not None]

    def _batch_outcome(
        self, record: Any, entity: str, body: dict[str, Any], response: dict[str, Any], status: int
    ) -> Booked | ConnectorError:
        """One ``BatchItemResponse``: the booked entity, or the item's ``Fault`` as a classified error."""
        fault = fault_of(response)
        if fault is not None:
            rule = self.client().errors.classify(400, fault.vendor_code)
            message = f"quickbooks POST /batch item {response.get('bId')}: {fault.message}"
            if rule.retriable:
                return RetriableError(rule.code, message, http_status=status, vendor_code=fault.vendor_code)
            return PermanentError(rule.code, message, http_status=status, vendor_code=fault.vendor_code)
        booked = response.get(entity)
        if not isinstance(booked, dict) or "Id" not in booked:
            return InvalidResponse(f"QuickBooks batch item {response.get('bId')} carries no {entity} Id")
        stored = mapping.stored_document(booked, source_lines=len(record.line_items))
        counterparty = str((body.get("VendorRef") or body.get("CustomerRef") or {}).get("value"))
        return Booked(
            Operation.CREATE,
            str(booked["Id"]),
            str(booked.get("SyncToken")),
            status,
            stored=stored,
            counterparty_id=counterparty,
        )

    # ------------------------------------------------------------------ transactions

    async def _transaction(
        self, entity: str, record: CanonicalRecord, ctx: HandleContext, body: dict[str, Any] | None
    ) -> Booked:
        kind = entity.lower()
        if record.action is not Action.UPSERT:
            return await self._void(entity, ctx)
        assert body is not None
        current = await self._read(entity, ctx.existing.erp_record_id) if ctx.existing else None
        operation = Operation.CREATE
        if current is not None:
            body = {**body, "Id": current["Id"], "SyncToken": current["SyncToken"]}
            operation = Operation.UPDATE
        booked, status = await self._write(
            entity, body, operation=f"{kind}.{operation.value}", request_id=ctx.idempotency_key
        )
        stored = None
        counterparty = None
        if isinstance(record, Document | Payment):
            # Read-back: the write's answer is the whole entity as QuickBooks stored it.
            if isinstance(record, Document):
                stored = mapping.stored_document(booked, source_lines=len(record.line_items))
            else:
                stored = mapping.stored_payment(booked)
            counterparty = str((body.get("VendorRef") or body.get("CustomerRef") or {}).get("value"))
        return Booked(
            operation,
            str(booked["Id"]),
            str(booked.get("SyncToken")),
            status,
            stored=stored,
            counterparty_id=counterparty,
        )

    async def _po_change(self, change: PurchaseOrderChange, ctx: HandleContext) -> Booked:
        """Apply (upsert) or remove (void/delete) ``change`` on the purchase order it changes.

        Raises:
            RetriableError: the order is not booked here yet, or the ERP's transient errors.
            PermanentError: the order was deleted in QuickBooks, or the ERP's validation faults.
        """
        order_id = await self.changed_order_id(change)
        current = await self._read("PurchaseOrder", order_id)
        if current is None:
            raise PermanentError(
                ErrorCode.ERP_NOT_FOUND, f"QuickBooks PurchaseOrder {order_id} changed by {change.canonical_id} is gone"
            )
        applying = change.action is Action.UPSERT
        accounts = await self._line_accounts(change) if applying else []
        lines = mapping.changed_order_lines(
            current.get("Line") or [],
            change if applying else None,
            change_order_tag(change),
            accounts=accounts,
            options=self.config.options,
        )
        body = {"Id": current["Id"], "SyncToken": current["SyncToken"], "sparse": True, "Line": lines}
        booked, status = await self._write(
            "PurchaseOrder", body, operation="purchaseorder.change", request_id=ctx.idempotency_key
        )
        # The stored order (original plus every change) is not comparable with the change alone:
        # no read-back document; the test of the change shows the order QuickBooks holds.
        return Booked(
            Operation.UPDATE if applying else Operation.VOID, str(booked["Id"]), str(booked.get("SyncToken")), status
        )

    async def _void(self, entity: str, ctx: HandleContext) -> Booked:
        kind = entity.lower()
        if ctx.existing is None:
            raise Unsupported(
                ErrorCode.ERP_NOTHING_TO_VOID, f"no QuickBooks {entity} was booked for this record on {self.name}"
            )
        current = await self._read(entity, ctx.existing.erp_record_id)
        if current is None:  # already deleted (a redelivered void)
            return Booked(Operation.VOID, ctx.existing.erp_record_id, ctx.existing.erp_version, 200)
        action = _VOID_OPERATION[kind]
        body = {"Id": current["Id"], "SyncToken": current["SyncToken"]}
        if action == "void":
            body["sparse"] = True
        booked, status = await self._write(
            entity, body, operation=f"{kind}.{action}", request_id=ctx.idempotency_key, extra={"operation": action}
        )
        return Booked(Operation.VOID, str(booked["Id"]), booked.get("SyncToken"), status)

    async def _bill_body(self, bill: Bill, ctx: HandleContext) -> dict[str, Any] | None:
        if bill.action is not Action.UPSERT:
            return None
        mapping.check_amounts(bill)
        vendor_id = await self._party_id("Vendor", bill.vendor, ctx, create=True)
        accounts = await self._line_accounts(bill)
        return mapping.bill_body(bill, vendor_id=vendor_id, accounts=accounts, options=self.config.options)

    async def _po_body(self, order: PurchaseOrder, ctx: HandleContext) -> dict[str, Any] | None:
        if order.action is not Action.UPSERT:
            return None
        mapping.check_amounts(order)
        vendor_id = await self._party_id("Vendor", order.vendor, ctx, create=True)
        accounts = await self._line_accounts(order)
        return mapping.purchase_order_body(order, vendor_id=vendor_id, accounts=accounts, options=self.config.options)

    async def _invoice_body(self, invoice: Invoice, ctx: HandleContext) -> dict[str, Any] | None:
        if invoice.action is not Action.UPSERT:
            return None
        mapping.check_amounts(invoice)
        items = []
        for line in invoice.line_items:
            item_id, _, _ = erp_identifiers(line.item)
            item = item_id or self.config.options.get("default_item")
            if not item:
                raise PermanentError(
                    ErrorCode.REFERENCE_UNRESOLVED,
                    f"invoice {invoice.canonical_id} line {line.line_number}: no item (item.accounting_id) "
                    "and no default_item option",
                )
            items.append(mapping.LineRefs(str(item)))
        customer_id = await self._party_id("Customer", invoice.customer, ctx, create=True)
        return mapping.invoice_body(invoice, customer_id=customer_id, items=items, options=self.config.options)

    async def _line_accounts(self, document: Bill | PurchaseOrder | PurchaseOrderChange) -> list[mapping.LineRefs]:
        what = f"{document.object_type} {document.canonical_id}"
        return [
            mapping.LineRefs(await self._account_id(line.gl_account, f"{what} line {line.line_number}"))
            for line in document.line_items
        ]

    async def _payment_body(self, payment: Payment, ctx: HandleContext) -> dict[str, Any] | None:
        if payment.action is not Action.UPSERT:
            return None
        outgoing = payment.direction == "outgoing"
        entity = "Vendor" if outgoing else "Customer"
        party_id = await self._party_id(entity, payment.party, ctx, create=False)
        bank = (payment.bank_account.accounting_id if payment.bank_account else None) or self.config.options.get(
            "default_bank_account"
        )
        lines = []
        for applied in payment.applied_to:
            txn_id = await self._document_id(applied.document, applied.document_canonical_id, payment.canonical_id)
            lines.append(
                {
                    "Amount": applied.amount,
                    "LinkedTxn": [{"TxnId": txn_id, "TxnType": "Bill" if outgoing else "Invoice"}],
                }
            )
        body: dict[str, Any] = {
            f"{entity}Ref": {"value": party_id},
            "TotalAmt": payment.amount,
            "TxnDate": payment.payment_date.isoformat(),
            "CurrencyRef": {"value": payment.currency},
            "Line": lines,
        }
        if outgoing:
            if not bank:
                raise PermanentError(
                    ErrorCode.REFERENCE_UNRESOLVED,
                    f"payment {payment.canonical_id}: no bank account (bank_account.accounting_id) "
                    "and no default_bank_account option",
                )
            body["PayType"] = "Check"
            body["CheckPayment"] = {"BankAccountRef": {"value": str(bank)}}
            if payment.reference:
                body["DocNumber"] = payment.reference[:21]
        else:
            if bank:
                body["DepositToAccountRef"] = {"value": str(bank)}
            if payment.reference:
                body["PaymentRefNum"] = payment.reference[:21]
        return body

    async def _document_id(self, document: Reference, canonical: str | None, what: str) -> str:
        if document.accounting_id:
            return document.accounting_id
        if canonical:
            row = await self.state.get_binding(self.name, canonical)
            if row is not None:
                return row.erp_record_id
        raise RetriableError(
            ErrorCode.REFERENCE_PENDING,
            f"payment {what}: document {canonical or document.source_id} is not booked on {self.name} yet",
            retry_after=30.0,
        )

    async def _account_id(self, ref: Reference | None, what: str) -> str:
        if ref is not None and ref.accounting_id:
            return ref.accounting_id
        if ref is not None and ref.accounting_custom_id:
            number = ref.accounting_custom_id
            if number not in self._accounts_by_number:
                found = await self._query_one("Account", "AcctNum", number)
                if found is None:
                    raise PermanentError(
                        ErrorCode.REFERENCE_UNRESOLVED, f"{what}: GL account number {number!r} not found in QuickBooks"
                    )
                self._accounts_by_number[number] = str(found["Id"])
            return self._accounts_by_number[number]
        default = self.config.options.get("default_expense_account")
        if default:
            return str(default)
        raise PermanentError(
            ErrorCode.REFERENCE_UNRESOLVED,
            f"{what}: no GL account (gl_account.accounting_id or accounting_custom_id) and no default_expense_account",
        )

    # ------------------------------------------------------------------ vendors and customers

    async def _party_id(self, entity: str, ref: Reference, ctx: HandleContext, *, create: bool) -> str:
        """Resolve a vendor/customer reference to its QuickBooks Id (see the module docstring).

        Raises:
            PermanentError: ``reference.unresolved`` when nothing matches and creating is off or impossible.

        """
        if ref.accounting_id:
            return ref.accounting_id
        key = reference_key(ctx.tenant, entity.lower(), ref.source_id) if ref.source_id else None
        if key and (bound := await self.reference_id(key)) is not None:
            return bound
        if key is None:
            return await self._resolve_party(entity, ref, ctx, None, create=create)
        # One resolution per vendor at a time: the bills of a batch naming one new vendor look
        # it up (and create it) once, not once each.
        async with self._resolving.setdefault(key, asyncio.Lock()):
            if (bound := await self.reference_id(key)) is not None:
                return bound
            return await self._resolve_party(entity, ref, ctx, key, create=create)

    async def _resolve_party(
        self, entity: str, ref: Reference, ctx: HandleContext, key: str | None, *, create: bool
    ) -> str:
        """Find (or create) the vendor or customer of ``ref`` in QuickBooks and bind it under ``key``.

        Raises:
            PermanentError: ``reference.unresolved`` when nothing matches and creating is off or impossible.
        """
        name = ref.name or ref.accounting_custom_id
        found = await self._query_one(entity, "DisplayName", name) if name else None
        if found is None:
            allowed = self.config.options.get("create_vendors" if entity == "Vendor" else "create_customers", True)
            if not (create and allowed and name):
                raise PermanentError(
                    ErrorCode.REFERENCE_UNRESOLVED,
                    f"{entity.lower()} {name or ref.source_id!r} not found in QuickBooks"
                    + ("" if name else " (no name to match or create it by)"),
                )
            found = await self._create_party(entity, self._party_body(ref, name), f"{ctx.idempotency_key}-{entity[0]}")
        party_id = str(found["Id"])
        if key:
            await self.remember_reference(
                key, party_id, erp_version=str(found.get("SyncToken")), content_hash=_hash(ref)
            )
        return party_id

    async def _create_party(self, entity: str, body: dict[str, Any], request_id: str) -> dict[str, Any]:
        try:
            record, _ = await self._write(entity, body, operation=f"{entity.lower()}.create", request_id=request_id)
        except PermanentError as exc:
            if exc.code != ErrorCode.ERP_DUPLICATE_NAME:
                raise
            # Created meanwhile by a concurrent record: use it.
            found = await self._query_one(entity, "DisplayName", str(body["DisplayName"]))
            if found is None:
                raise
            return found
        return record

    @staticmethod
    def _party_body(ref: Reference | Party, name: str) -> dict[str, Any]:
        body: dict[str, Any] = {"DisplayName": name[:500]}
        email = getattr(ref, "email", None)
        if email:
            body["PrimaryEmailAddr"] = {"Address": email}
        phone = getattr(ref, "phone", None)
        if phone:
            body["PrimaryPhone"] = {"FreeFormNumber": phone}
        legal = getattr(ref, "legal_name", None)
        if legal:
            body["CompanyName"] = legal[:100]
        address = getattr(ref, "address", None)
        if address is not None:
            addr = {
                "Line1": address.line1,
                "Line2": address.line2,
                "City": address.city,
                "CountrySubDivisionCode": address.region,
                "PostalCode": address.postal_code,
                "Country": address.country,
            }
            body["BillAddr"] = {k: v for k, v in addr.items() if v}
        return body

    async def _party(self, party: Vendor | Customer, ctx: HandleContext) -> Booked:
        entity = "Vendor" if isinstance(party, Vendor) else "Customer"
        kind = entity.lower()
        body = self._party_body(party, party.name)
        if party.action is not Action.UPSERT or not party.active:
            body = {"Active": False}
        current: dict[str, Any] | None = None
        if ctx.existing:
            current = await self._read(entity, ctx.existing.erp_record_id)
        if current is None and party.accounting_id:
            current = await self._read(entity, party.accounting_id)
        if current is None:
            bound = await self.reference_id(reference_key(party.tenant, kind, party.source_id))
            current = await self._read(entity, bound) if bound is not None else None
        if current is None:
            current = await self._query_one(entity, "DisplayName", party.name)
        if current is not None:
            update = {**body, "Id": current["Id"], "SyncToken": current["SyncToken"], "sparse": True}
            record, status = await self._write(
                entity, update, operation=f"{kind}.update", request_id=ctx.idempotency_key
            )
            operation = Operation.UPDATE if party.action is Action.UPSERT else Operation.VOID
        elif party.action is not Action.UPSERT:
            raise Unsupported(ErrorCode.ERP_NOTHING_TO_VOID, f"{kind} {party.name!r} does not exist in QuickBooks")
        else:
            record, status = await self._write(entity, body, operation=f"{kind}.create", request_id=ctx.idempotency_key)
            operation = Operation.CREATE
        await self.remember_reference(
            reference_key(party.tenant, kind, party.source_id),
            str(record["Id"]),
            erp_version=str(record.get("SyncToken")),
            content_hash=_hash(party),
        )
        return Booked(operation, str(record["Id"]), str(record.get("SyncToken")), status)
